/* queue_int.h - queue internals shared with outbound/ files, the fuzz target
 * and the unit tests: the backend interface (queue.c dispatches every public
 * call through it to queue_sqlite.c or queue_pg.c), the row decoder, the
 * destination-name check and the write connection. Not for other modules. */
#ifndef SPINEGATE_QUEUE_INT_H
#define SPINEGATE_QUEUE_INT_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue.h"

/* The PostgreSQL channel a destination's name is NOTIFYed on when rows are
 * added for it (queue_pg.c's readers LISTEN; worklist_pg.c notifies). */
#define QUEUE__PG_CHANNEL "spinegate"

/* The four marks of queue.h, as one backend entry. */
typedef enum {
    QUEUE__MARK_DELIVERED,
    QUEUE__MARK_DEAD,
    QUEUE__MARK_DEAD_LETTERED,
    QUEUE__MARK_ATTEMPT,
} queue__mark_t;

/* What a backend implements: queue.h's functions one for one (see there for
 * what each does and may return), minus the checks queue.c makes for all. */
typedef struct {
    err_t (*put)(queue_t *q, const queue_item_t *item, queue_put_cb cb, void *user);
    err_t (*put_many)(queue_t *q, const queue_item_t *items, size_t n, queue_put_many_cb cb,
                      void *user, size_t *refused);
    void (*stats)(const queue_t *q, queue_stats_t *st);
    uint64_t (*depth)(const queue_t *q, const char *dest);
    const char *(*path)(const queue_t *q);
    int64_t (*max_id)(const queue_t *q);
    int64_t (*instance)(const queue_t *q);
    void (*close)(queue_t *q, queue_close_cb cb, void *user);
    err_t (*dead_review)(queue_t *q, const char *dest, queue_dead_fn fate, void *user,
                         size_t *requeued, size_t *filed, err_detail_t *d);
    void (*inbox_poke)(queue_t *q); /* NULL: the backend has no inbox */
    err_t (*reader_open)(queue_t *q, const char *dest, queue_ready_cb ready_cb, void *user,
                         queue_reader_t **out, err_detail_t *d);
    err_t (*reader_fetch)(queue_reader_t *r, size_t max, queue_fetch_cb cb);
    bool (*reader_has_more)(const queue_reader_t *r);
    size_t (*reader_unsynced)(const queue_reader_t *r);
    void (*reader_flush)(queue_reader_t *r);
    void (*reader_close)(queue_reader_t *r);
    uint64_t (*reader_lease)(const queue_reader_t *r);
    err_t (*mark)(queue_reader_t *r, queue__mark_t kind, int64_t id, unsigned attempts,
                  unsigned rejects, const char *reason);
} queue__ops_t;

/* A put's own copy of its item's texts and payload, stored after the
 * request that holds it, in the same allocation (queue__item_copy). */
typedef struct {
    const char *dest, *control_id, *content_type;
    const char *findings, *meta, *worklist; /* NULL when the item had none */
    const unsigned char *payload;           /* followed by a NUL it does not count */
    size_t payload_len;
} queue__texts_t;

/* The checks queue_put makes of one item, in its order of errors:
 * ERR_BAD_VALUE, ERR_EMPTY, ERR_TOO_LARGE (payload over max_payload). */
err_t queue__item_check(const queue_item_t *item, size_t max_payload);

/* queue__item_check of each of n items, for queue_put_many: ERR_BAD_VALUE
 * when there are none; on a refused item *refused (when not NULL) is its
 * index, else 0. */
err_t queue__items_check(const queue_item_t *items, size_t n, size_t max_payload,
                         size_t *refused);

/* Allocates head zeroed bytes (a backend's put request) followed by copies
 * of a checked item's texts and payload, which *t is set to point at.
 * Free the result with xfree(). */
void *queue__item_copy(const queue_item_t *item, size_t head, queue__texts_t *t);

/* Where queue-sync=full runs the WAL's fdatasync (SQLite queue): on the loop
 * while syncs are fast, on the thread pool while they are slow. Takes one
 * sync's duration into the moving average *avg_us and returns whether the
 * next sync runs on the pool (on_pool: whether this one did). */
bool queue__sync_on_pool(uint32_t *avg_us, uint32_t took_us, bool on_pool);

/* The head of every backend's queue and reader: each backend's own struct
 * begins with one of these, so that the pointers convert both ways. */
struct queue {
    const queue__ops_t *ops;
};

struct queue_reader {
    queue_t *q; /* the queue it reads, for its ops */
};

/* The backends' open functions (queue_open picks one by opts->backend). */
err_t queue__sqlite_open(uv_loop_t *loop, const char *path, const queue_opts_t *opts,
                         queue_t **out, err_detail_t *d);
err_t queue__pg_open(uv_loop_t *loop, const queue_opts_t *opts, queue_t **out,
                     err_detail_t *d);

/* Decodes the current row of a fetch statement (columns id, dest, control_id,
 * content_type, payload, findings, attempts, created_ms, rejects) into one
 * allocation,
 * checking every type and length. Returns NULL with a reason in why when the
 * row is damaged. */
queue_row_t *queue__row_decode(sqlite3_stmt *st, size_t max_payload, char *why, size_t whylen);

/* True for 1..QUEUE_DEST_MAX bytes of [A-Za-z0-9_.-]. */
bool queue__valid_dest(const char *s);

/* The write connection, for the unit tests' fault injection (e.g. a lowered
 * sqlite3_limit that makes one insert of a group commit fail). Touch it only
 * on the loop thread while no commit runs. */
sqlite3 *queue__db(queue_t *q);

/* Faults injected into the SQLite queue's message log, for the unit tests
 * only (nothing else sets them): while one is nonzero, every log write
 * (qlog_write, the buffer dropped) or fdatasync of the log fails with that
 * errno instead of running; while write_delay_us is, every log write takes
 * that much longer, and while sync_delay_us is, every sync of the queue
 * with queue-sync=full (a slow disk). Set them on the loop thread while no
 * commit or sync runs. */
typedef struct {
    int write_errno;
    int sync_errno;
    unsigned write_delay_us;
    unsigned sync_delay_us;
} queue__log_faults_t;
extern queue__log_faults_t queue__log_faults;

/* Whether the SQLite queue's message log writes with O_DIRECT now. */
bool queue__log_direct(queue_t *q);

/* How long a hot message waits before it is spilled into the table (ms,
 * QUEUE__SPILL_MS). The unit tests raise it to tell a spill for a cause (a
 * failure, a reader falling behind) from one by age without timing it. */
#define QUEUE__SPILL_MS 500
extern uint64_t queue__spill_ms;

/* Crash points, for the kill -9 tests only. In a build with
 * -DSPINEGATE_CRASH_POINTS (the test daemon tests/integration/spinegate-crash,
 * never the installed one), QUEUE_CRASH_POINT("name") kills the process with
 * SIGKILL when the environment says SPINEGATE_TEST_CRASH_AT=name or name:N
 * (the Nth time that point is reached; N = 1 when absent), after one line on
 * stderr naming the point. Elsewhere it compiles to nothing. The points are
 * listed in tests/integration/test_crash.py. */
#ifdef SPINEGATE_CRASH_POINTS
void queue__crash_point(const char *name);
#define QUEUE_CRASH_POINT(name) queue__crash_point(name)
#else
#define QUEUE_CRASH_POINT(name) ((void)0)
#endif

#endif
