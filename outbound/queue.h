/* queue.h - the durable store-and-forward queue: SQLite in WAL mode (the
 * default, queue_sqlite.c) or PostgreSQL shared by several instances
 * (opts->backend, queue_pg.c; docs/queue-schema.md). Callers do not know
 * which: what is said below of SQLite's durability, the lock file and the
 * cursor file is the SQLite backend's; PostgreSQL's commit is the server's
 * (synchronous_commit, a synchronous standby), its lock is a lease per
 * destination (queue_reader_lease), and it has no file (queue_path NULL).
 *
 * A message is put once, committed durably by a group commit that runs off the
 * loop thread (uv_queue_work), and only then is the put callback called: that
 * is the moment the caller may acknowledge the sender. Deliverers (out.h) read
 * each destination's rows back in put order through a queue_reader_t and mark
 * them delivered (the row is deleted) or dead (the row is kept, state dead).
 *
 * Ownership: queue_open() produces a queue_t freed by queue_close(); items
 * given to queue_put() or queue_put_many() are copied; rows handed out by a
 * reader belong to the caller, who frees each with queue_row_free(). Every
 * function here and every callback runs on the loop thread that was given to
 * queue_open().
 *
 * Durability: with sync "full" each group commit fsyncs the WAL before any put
 * callback of that commit runs (survives power loss); with "normal" the WAL is
 * fsynced only at checkpoints (survives kill -9 and daemon crashes, not power
 * loss). Delivered/dead marks are group-committed without being waited for
 * (they wait up to 10 ms for company), so after a crash a few delivered rows
 * are pending again. The deliverer (out.c) keeps a cursor file per
 * destination that says how far it got; after kill -9 it skips those rows, and
 * only the message in flight can arrive twice. The cursor is not fsynced:
 * after a power loss the committed marks decide, and the rows a deliverer ran
 * ahead of them (at most its mark window, queue_reader_unsynced/flush) are
 * delivered again, with the same control id.
 */
#ifndef SPINEGATE_QUEUE_H
#define SPINEGATE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "err.h"

typedef struct queue queue_t;
typedef struct queue_reader queue_reader_t;

typedef enum {
    QUEUE_SYNC_FULL = 0, /* fsync on each group commit (default) */
    QUEUE_SYNC_NORMAL,   /* fsync at WAL checkpoints only */
} queue_sync_t;

/* Limits on what a row may hold; longer input is refused by queue_put. */
#define QUEUE_DEST_MAX 63        /* destination name bytes: [A-Za-z0-9_.-] */
#define QUEUE_CONTROL_ID_MAX 199 /* control id bytes (MSH-10 is at most 199) */
#define QUEUE_CTYPE_MAX 127      /* content type bytes */
#define QUEUE_FINDINGS_MAX 65535 /* findings summary bytes */

typedef enum {
    QUEUE_BACKEND_SQLITE = 0, /* a file: the path given to queue_open() (default) */
    QUEUE_BACKEND_POSTGRES,   /* a PostgreSQL database: url (queue_pg.c) */
} queue_backend_t;

typedef struct {
    queue_backend_t backend; /* where the rows live */
    const char *url;         /* QUEUE_BACKEND_POSTGRES: libpq conninfo or URI (borrowed
                                for queue_open() only) */
    queue_sync_t sync;       /* durability policy, see above (SQLite only) */
    unsigned max_batch;      /* most puts per transaction; 0 = 512 */
    unsigned max_delay_ms;   /* wait this long to gather a batch; 0 = the next loop
                                turn (SQLite: the end of the turn and one more poll,
                                see queue_put) */
    size_t max_queued;       /* pending messages (all destinations) before ERR_BUSY; 0 = 100000 */
    size_t max_payload;      /* largest payload accepted; 0 = 16 MiB */
    unsigned dead_keep_days; /* dead-lettered rows (a durable file holds them) older than
                                this are pruned at open; 0 = 30 */
    unsigned worklist_keep_days; /* worklist items not open, changed longer ago than this,
                                    are pruned at open and daily; 0 = 90 (worklist.h) */
    unsigned inbox_poll_ms;  /* how often the inbox (messages spinegate-admin requeued or
                                resent) is looked at while open; 0 = 1000 */
    bool message_log;        /* SQLite only: a message whose reader serves from memory is
                                written to the message log beside the file ("<path>-log")
                                instead of the table, and copied into the table only if it
                                waits (docs/queue-log.md); false: every message is a row */
} queue_opts_t;

/* One message to store. Every pointer is borrowed for the call only. */
typedef struct {
    const char *dest;         /* destination name, e.g. "hl7", "fhir", "reject" */
    const char *control_id;   /* MSH-10 or Claim.id; may be "" */
    const char *content_type; /* e.g. "application/hl7-v2", "application/fhir+json" */
    const void *payload;
    size_t payload_len;   /* >= 1 */
    const char *findings; /* optional one-line summary of the findings; NULL = none */
    /* Optional worklist description (a JSON object written by app/: source,
     * peer, message type, lookup references, verdict, findings). Kept with the
     * row, so that a dead letter's worklist item has it too. NULL = none. */
    const char *meta;
    /* When not NULL ("reject", "annotate"), a worklist item of that kind is
     * written in the same transaction as the row (worklist.h). */
    const char *worklist;
    /* Puts with the same order key (not 0: the sender's connection) are
     * stored in put order, which a backend running several transactions at
     * once (PostgreSQL) must otherwise not promise; 0 = no order with
     * other puts is owed. */
    uint64_t order_key;
} queue_item_t;

/* A stored message as read back by a reader. One allocation: free it with
 * queue_row_free(). The strings are NUL-terminated; payload is followed by a
 * NUL that payload_len does not count. */
typedef struct {
    int64_t id; /* ascending in put order; never reused */
    const char *dest;
    const char *control_id;
    const char *content_type;
    const char *findings; /* NULL when none */
    const unsigned char *payload;
    size_t payload_len;
    unsigned attempts;  /* delivery attempts already made (persisted) */
    unsigned rejects;   /* of those, application rejects from downstream (persisted) */
    int64_t created_ms; /* wall clock of the put, ms since the epoch */
} queue_row_t;

typedef struct {
    char name[QUEUE_DEST_MAX + 1];
    uint64_t depth;     /* pending messages (committed or being committed) */
    uint64_t put;       /* accepted by queue_put since open */
    uint64_t delivered; /* marked delivered since open */
    uint64_t retries;   /* failed attempts recorded since open */
    uint64_t dead;      /* dead-lettered since open */
} queue_dest_stats_t;

#define QUEUE_STATS_DESTS 16

typedef struct {
    uint64_t depth;     /* pending messages, all destinations */
    uint64_t put;       /* accepted by queue_put */
    uint64_t committed; /* puts durably committed (callback with ERR_OK) */
    uint64_t failed;    /* puts whose commit failed (callback with ERR_QUEUE) */
    uint64_t commits;   /* write transactions committed (group commits) */
    uint64_t delivered, retries, dead;
    uint64_t corrupt; /* unreadable rows found by readers and marked dead */
    uint64_t commit_failures; /* group commits that failed (a full disk, EIO): their
                                 puts refused, their marks kept and retried */
    uint64_t syncs;   /* fdatasync calls begun (SQLite, queue-sync=full): of the WAL and of the
                         message log; a synchronized write of the log needs none */
    bool unavailable; /* puts are refused now (PostgreSQL: its connection is down or
                         not yet up); always false with SQLite */
    size_t ndest;     /* entries filled in dest[] (at most QUEUE_STATS_DESTS) */
    queue_dest_stats_t dest[QUEUE_STATS_DESTS];
} queue_stats_t;

/* Called once per accepted put, on the loop thread, in put order. status is
 * ERR_OK when the message is durably stored (id is its row id) or ERR_QUEUE
 * when the transaction failed (id is 0; the message is not stored and must
 * not be acknowledged). */
typedef void (*queue_put_cb)(queue_t *q, err_t status, int64_t id, void *user);

/* Called by queue_close() when every handle is closed and q is freed. */
typedef void (*queue_close_cb)(void *user);

/* Opens (creating if absent) the queue database at path and prepares it:
 * WAL mode, schema, an exclusive lock file "<path>.lock" so that a second
 * daemon cannot deliver the same rows, dead rows pruned. opts may be NULL.
 * Rows left pending by a crash are pending again, in their original order.
 * Errors: ERR_BAD_CONFIG (bad opts), ERR_BUSY (another process holds the lock),
 * ERR_IO (lock file), ERR_QUEUE (SQLite could not open it, the file is not a
 * database or is corrupt, or its schema is not ours). *out is NULL on error. */
err_t queue_open(uv_loop_t *loop, const char *path, const queue_opts_t *opts, queue_t **out,
                 err_detail_t *d);

/* Stores a copy of item. On ERR_OK, cb will be called exactly once (see
 * queue_put_cb); on any other return it is never called. Puts made during
 * one loop turn (or max_delay_ms) go into one transaction; SQLite also waits
 * for the next poll of the loop, so that senders answered meanwhile join the
 * batch. A put made while a commit runs goes into the next. cb may be NULL.
 * Errors: ERR_BAD_VALUE (missing or malformed dest, control id, content type),
 * ERR_EMPTY (no payload), ERR_TOO_LARGE (payload or findings over the limit),
 * ERR_BUSY (max_queued messages pending: stop reading that sender),
 * ERR_CLOSED (queue_close was called). */
err_t queue_put(queue_t *q, const queue_item_t *item, queue_put_cb cb, void *user);

/* Called once per accepted queue_put_many, on the loop thread, in put order
 * with the other put callbacks. status is ERR_OK when all n messages are
 * durably stored (ids[i] is items[i]'s row id; ids is valid during the call
 * only) or ERR_QUEUE when their transaction failed (ids is NULL; none of
 * them is stored and none may be acknowledged). */
typedef void (*queue_put_many_cb)(queue_t *q, err_t status, const int64_t *ids, size_t n,
                                  void *user);

/* Stores copies of n items atomically: they go into one transaction (the
 * group commit that takes them takes all of them, even past max_batch), so
 * either every one is stored, consecutive and in item order, or none is. On
 * ERR_OK, cb will be called exactly once with one status for all (see
 * queue_put_many_cb); on any other return it is never called and nothing
 * was taken. Every item is checked as by queue_put before any is taken; on a
 * refused item *refused (when not NULL) is its index, else 0. The queue
 * limit is checked once for the group (it may overshoot max_queued by n-1).
 * cb may be NULL.
 * Errors: ERR_BAD_VALUE (n is 0, or an item's dest, control id or content
 * type is missing or malformed), ERR_EMPTY, ERR_TOO_LARGE (an item as in
 * queue_put), ERR_BUSY (max_queued messages pending), ERR_CLOSED. */
err_t queue_put_many(queue_t *q, const queue_item_t *items, size_t n, queue_put_many_cb cb,
                     void *user, size_t *refused);

/* Fills *st with the counters and the per-destination figures. */
void queue_stats(const queue_t *q, queue_stats_t *st);

/* Pending messages for dest (0 when unknown). */
uint64_t queue_depth(const queue_t *q, const char *dest);

/* The database path given to queue_open() (deliverers keep their cursor
 * files beside it). Valid until queue_close(). NULL for PostgreSQL: no file,
 * and deliverers keep no cursor (the committed marks decide; a deliverer runs
 * at most its mark window ahead of them, out.h OUT_PG_MARK_WINDOW). */
const char *queue_path(const queue_t *q);

/* The highest row id the database has ever allocated (AUTOINCREMENT never
 * reuses one): at open, from sqlite_sequence, then raised by each committed
 * put. 0 for a new database. A delivery cursor above it belongs to another
 * (deleted) database. */
int64_t queue_max_id(const queue_t *q);

/* A random number drawn once per database file, when it is first opened by
 * this version (kept in its table meta): a database deleted and created again
 * has another. Deliverers store it in their cursor files. */
int64_t queue_instance(const queue_t *q);

/* Closes q once its running commit and every queued put and mark are
 * committed (their callbacks run first), then calls cb and frees q. New puts
 * get ERR_CLOSED from now on. Readers must be closed before (the close waits
 * for them). q may be NULL (cb is still called). */
void queue_close(queue_t *q, queue_close_cb cb, void *user);

/* ---- reading back: used by out.h's deliverers, one reader per destination */

/* Called when rows or marks for the reader's destination were committed (a
 * hint to fetch or to go on; may be spurious). */
typedef void (*queue_ready_cb)(queue_reader_t *r, void *user);

/* Answers queue_reader_fetch(): status ERR_OK with n rows (n may be 0 when
 * nothing is pending past the cursor) or ERR_QUEUE (read failed; try later).
 * rows[] itself is freed by the queue after cb returns; each rows[i] belongs
 * to cb, which frees it with queue_row_free() (or keeps it). */
typedef void (*queue_fetch_cb)(queue_reader_t *r, err_t status, queue_row_t **rows, size_t n,
                               void *user);

/* Opens a reader of dest's pending rows from the start (in id order) on its
 * own read connection. ready_cb may be NULL.
 * Errors: ERR_BAD_VALUE (bad dest name), ERR_BUSY (a reader of dest is
 * already open), ERR_CLOSED (queue closing), ERR_QUEUE (SQLite). */
err_t queue_reader_open(queue_t *q, const char *dest, queue_ready_cb ready_cb, void *user,
                        queue_reader_t **out, err_detail_t *d);

/* Reads up to max pending rows after the reader's cursor, off the loop
 * thread, and advances the cursor past them. Rows that cannot be decoded
 * (a corrupt database) are not returned: they are marked dead and counted.
 * Errors: ERR_BUSY (a fetch is already running), ERR_CLOSED (reader closing). */
err_t queue_reader_fetch(queue_reader_t *r, size_t max, queue_fetch_cb cb);

/* True when rows of the destination were committed past the cursor (a fetch
 * would return something). */
bool queue_reader_has_more(const queue_reader_t *r);

/* Marks of this reader's destination given but not yet committed. */
size_t queue_reader_unsynced(const queue_reader_t *r);

/* Asks for the pending marks to be committed at the next loop turn instead
 * of waiting for company; ready_cb runs when they are. */
void queue_reader_flush(queue_reader_t *r);

/* The reader's lease on its destination: 0 while another instance delivers
 * it (PostgreSQL: another session holds the destination's advisory lock),
 * else a number that changes each time the lease is taken again. A
 * deliverer sends nothing while it is 0, and when it changes drops the rows
 * it fetched before (another instance may have delivered them meanwhile)
 * and fetches again. Always 1 with SQLite. */
uint64_t queue_reader_lease(const queue_reader_t *r);

/* Closes r after any running fetch (whose cb is then not called) and frees it.
 * Accepts NULL. */
void queue_reader_close(queue_reader_t *r);

/* Marks a row: delivered (deleted) or dead (kept with state dead and reason),
 * or records a failed attempt (attempts, the application rejects among them
 * and reason persisted: a restart reads them back in queue_row_t, so a
 * message billing refused is not given extra tries by a restart). Marks are
 * committed with the next group commit; nobody waits for them. A commit that
 * fails keeps its marks and retries them, with backoff, until one succeeds
 * (or the queue closes): queue_reader_unsynced() counts them meanwhile.
 * queue_mark_dead() keeps the row as the only copy of the message: it is
 * never pruned. queue_mark_dead_lettered() says a dead-letter file holds it
 * durably: such rows are pruned after dead_keep_days.
 * Errors: ERR_BAD_VALUE (id <= 0), ERR_CLOSED (queue closed). */
err_t queue_mark_delivered(queue_reader_t *r, int64_t id);
err_t queue_mark_dead(queue_reader_t *r, int64_t id, unsigned attempts, const char *reason);
err_t queue_mark_dead_lettered(queue_reader_t *r, int64_t id, unsigned attempts,
                               const char *reason);
err_t queue_mark_attempt(queue_reader_t *r, int64_t id, unsigned attempts, unsigned rejects,
                         const char *reason);

/* What becomes of a dead row that only the queue is known to hold. */
typedef enum {
    QUEUE_DEAD_KEEP = 0, /* stays dead, the only copy (never pruned) */
    QUEUE_DEAD_FILED,    /* a dead-letter file holds it: dead-lettered (pruned later) */
    QUEUE_DEAD_REQUEUE,  /* nothing else holds it: pending again */
} queue_dead_fate_t;

/* Asked once per such row; row is borrowed for the call. */
typedef queue_dead_fate_t (*queue_dead_fn)(const queue_row_t *row, void *user);

/* Looks at dest's dead rows that were marked with queue_mark_dead() (the
 * queue the only copy) - which is every dead row written by versions before
 * queue_mark_dead_lettered(), file or no file: those versions also left
 * messages dead with no file anywhere when the dead-letter folder was full.
 * fate() says for each what it is: rows to requeue are put back as pending
 * at the end of dest's queue (new ids, their order kept, their attempt and
 * reject counts reset, their queue time kept), rows a file holds become
 * dead-lettered, the rest stay. Rows that cannot be decoded stay dead
 * unasked. One transaction, run at once on the loop thread (a start-up
 * step: call it before dest's reader fetches). *requeued and *filed (each
 * may be NULL) count what was done.
 * Errors: ERR_BAD_VALUE (bad dest name), ERR_BUSY (a commit is running),
 * ERR_CLOSED, ERR_QUEUE (SQLite: nothing changed). */
err_t queue_dead_review(queue_t *q, const char *dest, queue_dead_fn fate, void *user,
                        size_t *requeued, size_t *filed, err_detail_t *d);

/* The worklist (worklist.h) lives in the queue's database: an item is
 * written in the transaction that stores the row it describes (a put with
 * item->worklist set) or dead-letters it (queue_mark_dead and
 * queue_mark_dead_lettered write a "dead" item). spinegate-admin, another
 * process, hands messages back for delivery through the table inbox; the
 * queue moves them to the end of their destination's pending rows at open
 * and every inbox_poll_ms, in one transaction each time, and wakes the
 * readers. */

/* Takes the inbox now rather than at the next poll (the daemon calls it
 * when spinegate-admin's socket has just handed a message back). */
void queue_inbox_poke(queue_t *q);

/* Frees a row from a fetch. Accepts NULL. */
void queue_row_free(queue_row_t *row);

#endif
