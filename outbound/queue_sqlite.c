/* queue_sqlite.c - the durable queue on SQLite in WAL mode with group commit
 * (the default backend; queue.c dispatches to it, queue_pg.c is the other).
 *
 * The loop thread only gathers work: puts and marks wait in two lists until
 * the commit timer fires; then one transaction holding all of them runs on the
 * libuv thread pool against the write connection, and its after-work callback
 * (back on the loop thread) calls the put callbacks in order. Only one commit
 * runs at a time, so the write connection is never used by two threads at once;
 * each reader has its own read connection, used by at most one fetch at a time.
 * Everything here is owned by the sq_t and freed by queue_close().
 */
#include "queue.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "queue_int.h"
#include "queue_log.h"
#include "slice.h"
#include "sqlite_walbuf.h"
#include "worklist.h"
#include "worklist_int.h"
#include "xmalloc.h"

/* Row states on disk. In flight is not stored: after a crash an in-flight row
 * must be pending again, which is what it already is. Delivered rows are
 * deleted in the transaction that would have marked them. A dead row is
 * ST_DEAD when the queue is the only place that holds the message (no
 * dead-letter folder, an unreadable row, rows from older versions, which may
 * have lost their file to a full disk): never pruned. ST_DEAD_LETTERED rows
 * have a durable dead-letter file beside them: pruned after dead_keep_days. */
enum { ST_PENDING = 0, ST_DEAD = 3, ST_DEAD_LETTERED = 4 };
_Static_assert(ST_DEAD == 3, "the dead review's SQL names state 3");

/* 2: msgs without AUTOINCREMENT and with an index of held rows only (see
 * MSGS_TABLE); version 1 files are rebuilt at open (migrate_v1). */
#define SCHEMA_VERSION 2

/* Row ids come from the daemon (id_next), not from SQLite: a new row must
 * get an id above every id ever used, even once the rows with the highest
 * ids are delivered and deleted, or a delivery cursor past them would skip
 * it. AUTOINCREMENT did this by writing sqlite_sequence in every commit,
 * a page per commit; meta's 'ids-below' is instead raised by ID_BLOCK at a
 * time, in the transaction of the first row past it. At open the ids go on
 * from there (a restart skips what is left of the block). */
#define ID_BLOCK 65536

/* The table of rows, and the index of held rows (dead or dead-lettered): a
 * pending row is written and deleted without touching it, and a fetch of
 * pending rows reads the table in id order from its cursor. */
#define MSGS_TABLE(name)                                                                           \
    "CREATE TABLE " name "(id INTEGER PRIMARY KEY,"                                                \
    " dest TEXT NOT NULL, control_id TEXT NOT NULL,"                                               \
    " content_type TEXT NOT NULL, payload BLOB NOT NULL, findings TEXT,"                           \
    " state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"                      \
    " last_error TEXT, created_ms INTEGER NOT NULL,"                                               \
    " updated_ms INTEGER NOT NULL, rejects INTEGER NOT NULL DEFAULT 0,"                            \
    " meta TEXT);"
#define MSGS_HELD_INDEX "CREATE INDEX msgs_held ON msgs(dest, state, id) WHERE state<>0;"

/* The schema scripts; clang-format cannot lay out strings joined by macros. */
/* clang-format off */
static const char create_schema_sql[] = "BEGIN IMMEDIATE;" MSGS_TABLE("msgs") MSGS_HELD_INDEX
                                        "PRAGMA user_version=2;"
                                        "COMMIT;";

/* The conversion of a version 1 file (migrate_v1). */
static const char convert_v1_sql[] =
    "BEGIN IMMEDIATE;"
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY NOT NULL, v);"
    "INSERT OR REPLACE INTO meta(k, v) SELECT 'ids-below',"
    " max(coalesce((SELECT seq FROM sqlite_sequence WHERE name='msgs'), 0),"
    " coalesce((SELECT max(id) FROM msgs), 0)) + 1;" MSGS_TABLE("msgs_v2")
    "INSERT INTO msgs_v2(id, dest, control_id, content_type, payload, findings,"
    " state, attempts, last_error, created_ms, updated_ms, rejects, meta)"
    " SELECT id, dest, control_id, content_type, payload, findings, state,"
    " attempts, last_error, created_ms, updated_ms, rejects, meta FROM msgs;"
    "DROP TABLE msgs;"
    "ALTER TABLE msgs_v2 RENAME TO msgs;" MSGS_HELD_INDEX "PRAGMA user_version=2;"
    "COMMIT;";
/* clang-format on */

typedef struct sq sq_t;
typedef struct sqr sqr_t;

static int step_done(sqlite3_stmt *st);

/* The puts of one queue_put_many(): its members are consecutive in the put
 * list and always go into the same transaction (commit_start never cuts a
 * group), so they are committed or refused together. */
typedef struct put_group {
    queue_put_many_cb cb;
    void *user;
    size_t n;      /* members */
    size_t ndone;  /* members whose commit has ended */
    int64_t ids[]; /* row ids in item order, filled as the members end */
} put_group_t;

typedef struct put_req {
    struct put_req *next;
    queue_put_cb cb;
    void *user;
    put_group_t *grp; /* NULL for a single put */
    bool grp_cont;    /* a member after the first: the batch may not be cut here */
    int64_t id;
    size_t dest_idx;
    int64_t created_ms;
    /* The message log (opts.message_log): a hot put is written to the log,
     * not the table, and is kept (in sq.hot) after its commit until it is
     * delivered or spilled into the table. */
    bool hot;
    bool spill;      /* hot: to be spilled by the next commit */
    bool spilling;   /* hot: the running commit spills it */
    bool gone;       /* hot: to be freed, delivered (logged) or now a row */
    uint64_t hot_ms; /* loop time it became hot */
    struct put_req *hot_next;
    queue__texts_t t; /* pointing after the request, in the same allocation */
} put_req_t;

typedef enum { MARK_DELIVERED, MARK_DEAD, MARK_DEAD_LETTERED, MARK_ATTEMPT } mark_kind_t;

typedef struct mark_req {
    struct mark_req *next;
    int64_t id;
    size_t dest_idx;
    mark_kind_t kind;
    unsigned attempts;
    unsigned rejects; /* MARK_ATTEMPT: application rejects so far */
    /* The message log: a delivery of a hot message is a log record, not a
     * DELETE (logged); hot is the message, found when the batch was chosen. */
    bool logged;
    struct put_req *hot;
    char reason[160];
} mark_req_t;

/* A group commit of queue-sync=full that is in the WAL, waiting for the
 * fdatasync that makes it durable (sync_start). */
typedef struct sync_batch {
    struct sync_batch *next;
    put_req_t *puts;
    mark_req_t *marks;
    /* The message log: messages this batch copied into the table; once the
     * sync has made their rows durable, the log may say so (spill_recs). */
    int64_t *spilled;
    size_t nspilled;
    size_t nhot;     /* its puts that went to the log (hot once synced) */
    bool ends_epoch; /* it committed log-epoch-done */
} sync_batch_t;

typedef struct {
    queue_dest_stats_t s;
    int64_t last_id; /* highest committed pending id: readers are behind while below */
    size_t unsynced; /* marks given, not yet committed */
    sqr_t *reader;
} dest_t;

struct sq {
    struct queue base; /* first: a sq_t * is an sq_t * (queue_int.h) */
    uv_loop_t *loop;
    queue_opts_t opts;
    sqlite3 *db;
    char *path;
    sqlite3_stmt *st_insert, *st_delete, *st_dead, *st_attempt;
    /* BEGIN IMMEDIATE and COMMIT of every group commit, parsed once */
    sqlite3_stmt *st_begin, *st_commit;
    sqlite3_stmt *st_wl_put, *st_wl_dead; /* worklist items (worklist.h) */
    uv_timer_t inbox_timer; /* drains the inbox (queue.h) */
    bool inbox_poked;       /* queue_inbox_poke: drain as soon as the connection is free */
    uv_timer_t fresh_timer; /* ends fetches served from memory (fetch_fresh) */
    int64_t pruned_ms;      /* when the worklist was last pruned */
    int lock_fd;
    int64_t max_id;    /* highest id committed (at open: the highest id allocated) */
    int64_t next_id;   /* the last id handed out by id_next; committed or not */
    int64_t ids_below; /* meta 'ids-below' as committed: every id handed out is under it */
    sqlite3_stmt *st_ids_below;
    int64_t instance; /* random, drawn when the database was created (table meta) */
    uv_timer_t timer;
    /* With max_delay_ms 0, a put waits for the end of the loop turn it came
     * in and for one more look at the sockets (commit_defer_cb): the senders
     * answered by the last commit send again meanwhile and ride in this one.
     * The idle handle keeps that look from blocking. */
    uv_check_t defer_check;
    uv_idle_t defer_idle;
    bool defer_armed, defer_turn_seen;
    size_t handles_closing; /* closed handles not yet called back (queue_close) */
    bool timer_armed;
    uint64_t timer_due; /* loop time the armed timer fires */

    put_req_t *puts, **puts_tail; /* waiting for the next commit */
    size_t nputs;
    mark_req_t *marks, **marks_tail;

    bool committing; /* a batch is being committed (on the loop or the pool) */
    unsigned fail_streak; /* group commits failed in a row: marks are retried with backoff */
    int wal_pages;   /* WAL size after the last commit (set by the commit thread) */
    int ck_pages;    /* WAL size when the last checkpoint started */

    /* Checkpoints run on their own connection and work item, beside the
     * commits, so that copying the WAL into the database never delays a
     * put callback (SQLite would otherwise run it inside a COMMIT). */
    sqlite3 *ckdb;
    uv_work_t ckwork;
    bool checkpointing;
    int ck_mode, ck_rc, ck_log, ck_done;
    uv_work_t work;
    put_req_t *batch_puts;
    mark_req_t *batch_marks;
    int batch_rc;
    char batch_err[200];

    /* queue-sync=full: a group commit ends without an fsync of its own (its
     * COMMIT runs with synchronous=NORMAL, on the loop thread when the lock
     * is free); one fdatasync of the WAL (on the loop or the pool, below)
     * then makes every commit before it durable. A commit's puts are
     * answered, its rows shown to readers and its marks counted only once a
     * sync that started after it has ended. The connection stays FULL for
     * everything else it runs. */
    int wal_fd; /* the WAL, opened by the first sync; -1 before */
    sqlite3_stmt *st_sync_normal, *st_sync_full;
    sync_batch_t *sync_head, **sync_tail; /* committed, not yet synced, oldest first */
    sync_batch_t *sync_last;              /* the last batch the running sync covers */
    bool syncing;
    /* An fdatasync of the WAL failed: what the commits since wrote may sit
     * behind a hole the disk lost, which SQLite's recovery would stop at.
     * Every put is refused from then on, unwritten (batch_refuse_puts), until
     * a restart; marks go on, synced by SQLite itself. */
    bool sync_failed;
    bool batch_refuse_puts;   /* sync_failed when the running batch started */
    bool sync_restore_failed; /* set by batch_end, logged by commit_done */
    int sync_errno;
    uv_work_t syncwork;
    /* The sync runs on the loop, which saves the pool's two thread switches
     * and lets the messages that come in meanwhile wait in the kernel and
     * go into the next commit together; on the pool while syncs are slow
     * (sync_note_time), so that a slow disk does not hold up every other
     * connection. */
    uint32_t sync_us;     /* how long the last sync took */
    uint32_t sync_avg_us; /* moving average, 1/8 weight to each new sync */
    /* A direct write of the log waits for the disk, as the sync after it
     * did for a buffered one: its time counts as the sync's. batch_: the
     * commit's, read in commit_done; unsynced: since the last sync began;
     * sync_write_us: given to the sync that runs. */
    uint64_t batch_write_ns, unsynced_write_ns;
    uint32_t sync_write_us;
    bool sync_on_pool, sync_pool_logged;

    /* The message log (opts.message_log; NULL when off), docs/queue-log.md.
     * Hot messages are in the log and in their reader's memory, not in the
     * table, oldest first. A batch's part in it is chosen by log_plan on the
     * loop; the commit (loop or pool) writes the records; log_batch_end
     * takes the outcome back on the loop. */
    qlog_t *log;
    put_req_t *hot, **hot_tail;
    size_t nhot;
    /* Puts in the log whose batch waits for its sync (queue-sync=full):
     * they join the hot list when it ends. A restart (or a retirement)
     * spills every hot message, so it waits until there are none of these
     * (log_settled); with syncs on the loop there never are. */
    size_t hot_unsynced;
    put_req_t **batch_spills; /* hot messages the running batch copies into the table */
    size_t nbatch_spills, cap_spills;
    bool batch_sql;          /* the running batch has table work (always, without the log) */
    bool batch_log;          /* the running batch has log records */
    bool batch_sql_done;     /* its table part committed */
    bool batch_log_failed;   /* its log write failed */
    bool batch_log_dsync;    /* its log write may be synchronized (queue-sync=full, direct) */
    bool batch_log_synced;   /* and was: no fdatasync of the log needed for it */
    bool batch_restart;      /* it writes log-epoch-done (restarting the log) */
    int64_t batch_raise;     /* the ids-below it writes; 0: none */
    bool log_restart_due;    /* the log is over LOG_RESTART_BYTES */
    bool log_epoch_done;     /* log-epoch-done is committed: restart once durable and idle */
    bool log_epoch_synced;   /* queue-sync=full: and synced */
    bool log_failed;         /* a log write, sync or restart failed: the log takes nothing */
    bool log_direct_refused; /* O_DIRECT was refused (the file system): not asked again */
    bool log_retire_tried;   /* after log_failed: a batch wrote log-epoch-done for it */
    bool log_unsynced;       /* queue-sync=full: the log was written since the last sync */
    bool wal_unsynced;       /* queue-sync=full: the table was written since the last sync */
    bool sync_log, sync_wal; /* what the running sync covers */
    int sync_log_errno;
    int log_fd; /* the log's descriptor, for the sync */
    sqlite3_stmt *st_epoch_done, *st_insert_ignore;
    /* Spilled messages whose rows are durable in the table: the next log
     * write says so (a DELIVERED record: "do not replay"), so that a replay
     * after a crash does not bring back one delivered from the table since.
     * batch_spill_recs of them ride in the running batch. */
    int64_t *spill_recs;
    size_t nspill_recs, cap_spill_recs, batch_spill_recs;

    dest_t *dests;
    size_t ndests, capdests;
    queue_stats_t st; /* totals only; per-destination figures live in dests */
    unsigned nreaders;

    bool closing, closed;
    queue_close_cb close_cb;
    void *close_user;
};

struct sqr {
    struct queue_reader base; /* first, as above */
    sq_t *q;
    size_t dest_idx; /* q->dests may move: the worker uses dest[] instead */
    char dest[QUEUE_DEST_MAX + 1];
    sqlite3 *db;
    sqlite3_stmt *st_fetch;
    int64_t cursor;
    queue_ready_cb ready_cb;
    void *user;
    bool fetching, closing;
    uv_work_t work;
    queue_fetch_cb fetch_cb;
    /* fetch in and out, touched by the worker thread only while fetching */
    size_t max;
    int64_t start_last_id;
    queue_row_t **rows;
    size_t nrows;
    int64_t *bad_ids;
    size_t nbad;
    int64_t new_cursor;
    int rc;
    char err[200];
    /* Rows committed since the reader opened, copied from their puts, so
     * that a fetch of what was just stored reads neither the file nor a
     * thread (issue 15). Loop thread only. Every pending row of the
     * destination with an id above fresh_from is here, in id order, until
     * something else adds rows (the inbox, a dead review: fresh_drop) or
     * FRESH_MAX is reached; the rows at or below it come from the file. */
    queue_row_t **fresh;
    size_t fresh_head, fresh_n;
    int64_t fresh_from;
    bool fresh_ready; /* rows/new_cursor hold a fetch served from memory */
    /* The message log: a file fetch waits while hot messages above the
     * cursor are being spilled into the table (sq_reader_fetch, then
     * spill_waiters_go starts it). */
    bool spill_wait;
};

/* Rows kept in memory per reader at most: a deliverer further behind
 * reads the file until it catches up. */
#define FRESH_MAX 512

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The one place SQLite status becomes err_t. */
static err_t sql_err(sqlite3 *db, int rc, err_detail_t *d, const char *what)
{
    const char *m = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT)
        return err_set(d, ERR_QUEUE, 0, "%s: queue file is corrupt or not a database (%s)", what,
                       m);
    return err_set(d, ERR_QUEUE, 0, "%s: %s (sqlite %d)", what, m, rc);
}

/* The file is input like any other: a damaged or planted database must not
 * run triggers or views on our connections, nor be written around SQLite's
 * own checks. */
static void harden(sqlite3 *db)
{
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, (int *)NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_VIEW, 0, (int *)NULL);
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* Runs a script that is one transaction (BEGIN ... COMMIT); on failure the
 * error names what, and the transaction is rolled back. */
static err_t exec_txn(sqlite3 *db, const char *sql, err_detail_t *d, const char *what)
{
    int rc = exec(db, sql);
    if (rc == SQLITE_OK)
        return ERR_OK;
    err_t e = sql_err(db, rc, d, what);
    exec(db, "ROLLBACK");
    return e;
}

static size_t dest_find(sq_t *q, const char *name, bool create)
{
    for (size_t i = 0; i < q->ndests; i++)
        if (strcmp(q->dests[i].s.name, name) == 0)
            return i;
    if (!create)
        return SIZE_MAX;
    if (q->ndests == q->capdests) {
        q->capdests = q->capdests ? q->capdests * 2 : 8;
        q->dests = xrealloc(q->dests, q->capdests * sizeof *q->dests);
    }
    dest_t *e = &q->dests[q->ndests];
    memset(e, 0, sizeof *e);
    snprintf(e->s.name, sizeof e->s.name, "%s", name);
    return q->ndests++;
}

/* ---------------------------------------------------------------- open */

/* The billing-reject count of a row (queue_mark_attempt) came after the
 * first release: a file made before has no such column and gets it here. The
 * schema version stays 1 on purpose: older builds name their columns and
 * never read this one, so they still open the file. */
static err_t add_column(sqlite3 *db, const char *col, const char *decl, err_detail_t *d)
{
    sqlite3_stmt *st = NULL;
    bool have = false, any = false;
    int rc = sqlite3_prepare_v2(db, "SELECT name FROM pragma_table_info('msgs')", -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        any = true;
        if (name && strcmp(name, col) == 0)
            have = true;
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_OK)
        return sql_err(db, rc, d, "read the queue's columns");
    if (have || !any) /* no msgs table: not ours, the statements will say so */
        return ERR_OK;
    char sql[160];
    snprintf(sql, sizeof sql, "ALTER TABLE msgs ADD COLUMN %s %s", col, decl);
    rc = exec(db, sql);
    if (rc != SQLITE_OK)
        return sql_err(db, rc, d, "add a column");
    log_info("queue: added column %s to an older queue file", col);
    return ERR_OK;
}

/* A version 1 file (AUTOINCREMENT, an index of every row) becomes version 2
 * in one transaction: the rows are copied with their ids into the new table,
 * and the highest id the old one ever gave (its sqlite_sequence) is where
 * the new ids start. A file that is not ours fails here, unchanged. */
static err_t migrate_v1(sqlite3 *db, err_detail_t *d)
{
    err_t e = exec_txn(db, convert_v1_sql, d, "convert a version 1 queue file");
    if (e)
        return e;
    log_info("queue: converted the queue file from schema version 1 to 2");
    return ERR_OK;
}

static err_t open_schema(sq_t *q, err_detail_t *d)
{
    sqlite3 *db = q->db;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        return sql_err(db, rc, d, "set WAL mode");
    }
    const char *mode = (const char *)sqlite3_column_text(st, 0);
    bool wal = mode && strcmp(mode, "wal") == 0;
    sqlite3_finalize(st);
    if (!wal)
        return err_set(d, ERR_QUEUE, 0, "queue file cannot use WAL mode");
    rc = exec(db, q->opts.sync == QUEUE_SYNC_FULL ? "PRAGMA synchronous=FULL"
                                                  : "PRAGMA synchronous=NORMAL");
    if (rc == SQLITE_OK)
        rc = exec(db, "PRAGMA journal_size_limit=67108864");
    /* Debian builds SQLite with secure_delete on: every delivered row's
     * page was zeroed and written to the WAL once more, and copied by the
     * next checkpoint (about 4 kB of writes a message, a tenth of the
     * daemon's CPU). FAST still zeroes deleted bytes on pages that are
     * written anyway; a freed page keeps its bytes until reused, as the WAL
     * keeps every frame until it is overwritten: the queue's files are the
     * daemon's own (mode 0600 in a 0700 folder) either way. */
    if (rc == SQLITE_OK)
        rc = exec(db, "PRAGMA secure_delete=FAST");
    if (rc != SQLITE_OK)
        return sql_err(db, rc, d, "set pragmas");

    int version = -1;
    rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version < 0)
        return sql_err(db, sqlite3_errcode(db), d, "read schema version");
    err_t e = ERR_OK;
    if (version == 0) {
        e = exec_txn(db, create_schema_sql, d, "create schema");
    } else if (version != 1 && version != SCHEMA_VERSION) {
        return err_set(d, ERR_QUEUE, 0, "queue schema version %d is not %d", version,
                       SCHEMA_VERSION);
    }
    if (!e)
        e = add_column(db, "rejects", "INTEGER NOT NULL DEFAULT 0", d);
    if (!e)
        e = add_column(db, "meta", "TEXT", d);
    if (!e && version == 1)
        e = migrate_v1(db, d);
    if (!e && (rc = exec(db, "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY NOT NULL, v)")) !=
                  SQLITE_OK)
        e = sql_err(db, rc, d, "create the meta table");
    if (!e && (rc = worklist__schema(db)) != SQLITE_OK)
        e = sql_err(db, rc, d, "create the worklist");
    return e;
}

static err_t prepare(sq_t *q, const char *sql, sqlite3_stmt **st, err_detail_t *d)
{
    int rc = sqlite3_prepare_v3(q->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    if (rc != SQLITE_OK)
        return sql_err(q->db, rc, d, "prepare statement (schema not ours?)");
    return ERR_OK;
}

static err_t load_state(sq_t *q, err_detail_t *d)
{
    /* The database's identity: deliverers' cursor files carry it, so that a
     * cursor left beside a deleted and recreated database is not believed.
     * Added here rather than at creation so that files made before it get
     * one too (older builds ignore the table). */
    err_t err = exec_txn(q->db,
                         "BEGIN IMMEDIATE;"
                         "INSERT OR IGNORE INTO meta(k, v) VALUES('instance', random());"
                         "COMMIT;",
                         d, "queue identity");
    if (err)
        return err;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(q->db, "SELECT v FROM meta WHERE k='instance'", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        q->instance = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return sql_err(q->db, rc, d, "queue identity");

    char sql[160];
    snprintf(sql, sizeof sql,
             "DELETE FROM msgs WHERE state=%d AND state<>0 AND updated_ms<%" PRId64,
             ST_DEAD_LETTERED, now_ms() - (int64_t)q->opts.dead_keep_days * 86400000);
    rc = exec(q->db, sql);
    if (rc != SQLITE_OK)
        return sql_err(q->db, rc, d, "prune dead rows");

    rc = sqlite3_prepare_v2(q->db,
                            "SELECT dest, count(*), max(id) FROM msgs WHERE state=0 GROUP BY dest",
                            -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sql_err(q->db, rc, d, "count pending rows");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (!name || !queue__valid_dest(name)) {
            /* Rows nobody can read: the destination name itself is damaged. */
            log_warn("queue: %lld pending rows with an invalid destination name ignored",
                     (long long)sqlite3_column_int64(st, 1));
            continue;
        }
        size_t idx = dest_find(q, name, true); /* may move q->dests */
        dest_t *e = &q->dests[idx];
        int64_t n = sqlite3_column_int64(st, 1);
        e->s.depth = n > 0 ? (uint64_t)n : 0;
        e->last_id = sqlite3_column_int64(st, 2);
        q->st.depth += e->s.depth;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_err(q->db, rc, d, "count pending rows");

    /* Nothing runs yet: every id handed out so far (by ids_load's floor,
     * or since by the inbox) is committed. Deliverers compare their cursor
     * files with it. */
    q->max_id = q->next_id;
    return ERR_OK;
}

/* Where the ids go on (see ID_BLOCK): above the reserved block, and above
 * every row, should 'ids-below' be missing or damaged. */
static err_t ids_load(sq_t *q, err_detail_t *d)
{
    sqlite3_stmt *st = NULL;
    int rc =
        sqlite3_prepare_v2(q->db,
                           "SELECT coalesce((SELECT CAST(v AS INTEGER) FROM meta"
                           " WHERE k='ids-below'), 0), coalesce((SELECT max(id) FROM msgs), 0)",
                           -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int64_t below = sqlite3_column_int64(st, 0), top = sqlite3_column_int64(st, 1);
        q->ids_below = below > 0 ? below : 0;
        q->next_id = q->ids_below > top ? q->ids_below - 1 : top;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return sql_err(q->db, rc, d, "read the id floor");
    return ERR_OK;
}

/* The id of a new row, in a write transaction of the write connection;
 * raises 'ids-below' in that transaction when the id reaches it. A caller
 * whose transaction rolls back puts ids_below back as it was before. */
static int id_next(sq_t *q, int64_t *id)
{
    if (q->next_id + 1 >= q->ids_below) {
        int64_t below = q->next_id + 1 + ID_BLOCK;
        sqlite3_bind_int64(q->st_ids_below, 1, below);
        int rc = step_done(q->st_ids_below);
        if (rc != SQLITE_OK)
            return rc;
        q->ids_below = below;
    }
    *id = ++q->next_id;
    return SQLITE_OK;
}

/* ---------------------------------------------------------------- inbox */

/* Moves the inbox's messages (spinegate-admin's requeues and resends, see
 * queue.h) to the end of their destinations' pending rows, in their inbox
 * order, and links their worklist items to the new rows: one transaction on
 * the write connection, on the loop thread while no commit runs (as
 * queue_dead_review). Before load_state (at open) the counters are left to
 * it; afterwards they are raised here and the readers woken. Returns an
 * SQLite code; on failure nothing moved and the next poll tries again. */
static void fresh_drop(sq_t *q);

static int inbox_drain(sq_t *q, bool opened, size_t *moved)
{
    *moved = 0;
    sqlite3 *db = q->db;
    sqlite3_stmt *sel = NULL, *ins = NULL, *lnk = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT 1 FROM inbox LIMIT 1", -1, &sel, NULL);
    bool any = rc == SQLITE_OK && sqlite3_step(sel) == SQLITE_ROW;
    sqlite3_finalize(sel);
    sel = NULL;
    if (rc != SQLITE_OK || !any)
        return rc;
    typedef struct {
        char dest[QUEUE_DEST_MAX + 1];
        int64_t id;
    } moved_t;
    moved_t *mv = NULL;
    size_t n = 0, cap = 0;
    int64_t now = now_ms(), ids_below = q->ids_below;
    rc = exec(db, "BEGIN IMMEDIATE");
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "SELECT id, dest FROM inbox ORDER BY id", -1, &sel, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db,
                                "INSERT INTO msgs(id, dest, control_id, content_type, payload,"
                                " findings, meta, created_ms, updated_ms, last_error)"
                                " SELECT ?3, dest, control_id, content_type, payload, findings,"
                                " meta, ?2, ?2, 'from the inbox' FROM inbox WHERE id=?1",
                                -1, &ins, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db,
                                "UPDATE worklist SET link='queue:' || ?2"
                                " WHERE link='inbox:' || ?1",
                                -1, &lnk, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(sel)) == SQLITE_ROW) {
        int64_t in_id = sqlite3_column_int64(sel, 0);
        const char *dest = (const char *)sqlite3_column_text(sel, 1);
        rc = SQLITE_OK;
        if (!dest || !queue__valid_dest(dest)) {
            log_warn("queue: inbox message %" PRId64 " has no valid destination: dropped",
                     in_id);
            continue;
        }
        int64_t id;
        if ((rc = id_next(q, &id)) != SQLITE_OK)
            break;
        sqlite3_bind_int64(ins, 1, in_id);
        sqlite3_bind_int64(ins, 2, now);
        sqlite3_bind_int64(ins, 3, id);
        rc = sqlite3_step(ins);
        sqlite3_reset(ins);
        if (rc != SQLITE_DONE)
            break;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            mv = xrealloc(mv, cap * sizeof *mv);
        }
        snprintf(mv[n].dest, sizeof mv[n].dest, "%s", dest);
        mv[n].id = id;
        sqlite3_bind_int64(lnk, 1, in_id);
        sqlite3_bind_int64(lnk, 2, mv[n].id);
        n++;
        rc = sqlite3_step(lnk);
        sqlite3_reset(lnk);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    sqlite3_finalize(sel);
    sqlite3_finalize(ins);
    sqlite3_finalize(lnk);
    if (rc == SQLITE_OK)
        rc = exec(db, "DELETE FROM inbox");
    if (rc == SQLITE_OK)
        rc = exec(db, "COMMIT");
    if (rc != SQLITE_OK) {
        if (!sqlite3_get_autocommit(db))
            exec(db, "ROLLBACK");
        q->ids_below = ids_below;
        xfree(mv);
        return rc;
    }
    *moved = n;
    if (opened) {
        /* Open already: count the rows in and wake their readers. */
        for (size_t i = 0; i < n; i++) {
            dest_t *e = &q->dests[dest_find(q, mv[i].dest, true)];
            e->s.depth++;
            q->st.depth++;
            if (mv[i].id > e->last_id)
                e->last_id = mv[i].id;
            if (mv[i].id > q->max_id)
                q->max_id = mv[i].id;
        }
        if (n)
            fresh_drop(q); /* these rows are read from the file */
        for (size_t i = 0; i < n; i++) {
            dest_t *e = &q->dests[dest_find(q, mv[i].dest, false)];
            sqr_t *r = e->reader;
            if (r && !r->closing && r->ready_cb)
                r->ready_cb(&r->base, r->user);
        }
    }
    xfree(mv);
    return SQLITE_OK;
}

/* Prunes the worklist at open and then at most once a day. */
static void worklist_prune_maybe(sq_t *q)
{
    int64_t now = now_ms();
    if (q->pruned_ms && now - q->pruned_ms < 86400000)
        return;
    q->pruned_ms = now;
    size_t n = 0;
    int rc = worklist__prune(q->db, q->opts.worklist_keep_days, now, &n);
    if (rc != SQLITE_OK)
        log_warn("queue: worklist prune failed: %s", sqlite3_errmsg(q->db));
    else if (n)
        log_info("queue: %zu worklist items older than %u days pruned", n,
                 q->opts.worklist_keep_days);
}

static void inbox_timer_cb(uv_timer_t *t)
{
    sq_t *q = t->data;
    /* The write connection is busy, or a checkpoint that may hold SQLite's
     * write lock runs (the loop thread must not wait on it): the next tick. */
    if (q->committing || q->closing || q->checkpointing) {
        if (q->inbox_poked && !q->closing) /* asked for now: soon, not at the next poll */
            uv_timer_start(t, inbox_timer_cb, 5, q->opts.inbox_poll_ms);
        return;
    }
    q->inbox_poked = false;
    size_t moved = 0;
    int rc = inbox_drain(q, true, &moved);
    if (rc != SQLITE_OK)
        log_warn("queue: inbox not taken (tried again): %s", sqlite3_errmsg(q->db));
    else if (moved)
        log_info("queue: %zu messages handed back by spinegate-admin queued", moved);
    worklist_prune_maybe(q);
}

static void sq_inbox_poke(sq_t *q)
{
    if (q->closing)
        return;
    q->inbox_poked = true;
    uv_timer_start(&q->inbox_timer, inbox_timer_cb, 0, q->opts.inbox_poll_ms);
}

/* A checkpoint copies each page written since the last one once; a queue
 * writes and frees the same few pages over and over, so one every 4,096 WAL
 * pages copies hardly more than one every 1,000, four times less often
 * (and commits run on the pool while one runs). A/B at 8 connections,
 * normal: 40-50 -> 38-40 us a message, p99 0.85-1.46 -> 0.69-0.73 ms. */
#define CKPT_PAGES 4096        /* start a passive checkpoint past this WAL size */
#define CKPT_FORCE_PAGES 16384 /* past this, one that waits for and resets the WAL */

static int wal_hook(void *user, sqlite3 *db, const char *name, int pages)
{
    ((sq_t *)user)->wal_pages = pages;
    return SQLITE_OK;
}

static void free_handles(sq_t *q)
{
    if (q->ckdb)
        sqlite3_close_v2(q->ckdb);
    sqlite3_finalize(q->st_begin);
    sqlite3_finalize(q->st_commit);
    sqlite3_finalize(q->st_insert);
    sqlite3_finalize(q->st_delete);
    sqlite3_finalize(q->st_dead);
    sqlite3_finalize(q->st_attempt);
    sqlite3_finalize(q->st_wl_put);
    sqlite3_finalize(q->st_wl_dead);
    sqlite3_finalize(q->st_sync_normal);
    sqlite3_finalize(q->st_sync_full);
    sqlite3_finalize(q->st_ids_below);
    sqlite3_finalize(q->st_epoch_done);
    sqlite3_finalize(q->st_insert_ignore);
    while (q->hot) {
        put_req_t *p = q->hot;
        q->hot = p->hot_next;
        xfree(p);
    }
    xfree(q->batch_spills);
    xfree(q->spill_recs);
    qlog_close(q->log);
    if (q->wal_fd >= 0)
        close(q->wal_fd);
    if (q->db)
        sqlite3_close_v2(q->db);
    /* Closed after SQLite's own descriptors: the lock is what keeps a second
     * daemon away from rows this one may still be delivering. */
    if (q->lock_fd >= 0)
        close(q->lock_fd);
    xfree(q->dests);
    xfree(q->path);
    xfree(q);
}

static void commit_timer_cb(uv_timer_t *t);

static int insert_row(sqlite3_stmt *st, const put_req_t *p);

/* ---------------------------------------------------------------- log at open */

typedef struct {
    sq_t *q;
    put_req_t **puts; /* copies of the PUT records, in file order */
    size_t nputs, cap;
    int64_t *delivered; /* ids of the DELIVERED records */
    size_t ndelivered, capd;
} replay_t;

static err_t replay_record(const qlog_record_t *rec, void *user)
{
    replay_t *rp = user;
    if (rec->type == QLOG_DELIVERED) {
        if (rp->ndelivered == rp->capd) {
            rp->capd = rp->capd ? 2 * rp->capd : 256;
            rp->delivered = xrealloc(rp->delivered, rp->capd * sizeof *rp->delivered);
        }
        rp->delivered[rp->ndelivered++] = rec->id;
        return ERR_OK;
    }
    const qlog_put_t *r = &rec->put;
    queue_item_t item = {.dest = r->dest,
                         .control_id = r->control_id,
                         .content_type = r->content_type,
                         .payload = r->payload,
                         .payload_len = r->payload_len,
                         .findings = r->findings,
                         .meta = r->meta};
    /* No payload limit: a lower max-message-size since does not drop what
     * was acknowledged. Its CRC matched, so this takes a bug or a forgery. */
    if (queue__item_check(&item, SIZE_MAX) != ERR_OK) {
        log_error("queue: message log: record of message %" PRId64 " is not a valid message: "
                  "skipped",
                  r->id);
        return ERR_OK;
    }
    queue__texts_t t;
    put_req_t *p = queue__item_copy(&item, sizeof *p, &t);
    p->t = t;
    p->id = r->id;
    p->created_ms = r->created_ms;
    if (rp->nputs == rp->cap) {
        rp->cap = rp->cap ? 2 * rp->cap : 256;
        rp->puts = xrealloc(rp->puts, rp->cap * sizeof *rp->puts);
    }
    rp->puts[rp->nputs++] = p;
    return ERR_OK;
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t meta_int(sq_t *q, const char *key, int64_t dflt)
{
    sqlite3_stmt *st = NULL;
    int64_t v = dflt;
    if (sqlite3_prepare_v2(q->db, "SELECT CAST(v AS INTEGER) FROM meta WHERE k=?1", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return v;
}

static char *log_path(const sq_t *q)
{
    size_t n = strlen(q->path) + 5;
    char *path = xmalloc(n);
    snprintf(path, n, "%s-log", q->path);
    return path;
}

static bool log_file_exists(const sq_t *q)
{
    char *path = log_path(q);
    bool yes = access(path, F_OK) == 0;
    xfree(path);
    return yes;
}

static void log_path_unlink(const sq_t *q)
{
    char *path = log_path(q);
    if (unlink(path) != 0 && errno != ENOENT)
        log_warn("queue: cannot remove the message log %s: %s", path, strerror(errno));
    xfree(path);
}

/* Opens the message log beside the file and puts back into the table what
 * it holds that the table does not (docs/queue-log.md, rule 8): the PUT
 * records of the epoch not yet done, less those a DELIVERED record
 * follows, in one transaction with log-epoch-done; then a new epoch. */
static err_t log_open(sq_t *q, err_detail_t *d)
{
    char *path = log_path(q);
    err_t e = qlog_open(path, q->opts.max_payload + ((size_t)64 << 10), &q->log, d);
    if (e) {
        xfree(path);
        return e;
    }
    int64_t done = meta_int(q, "log-epoch-done", 0);
    qlog_header_t h = qlog_header(q->log);
    replay_t rp = {.q = q};
    qlog_scan_stats_t st;
    bool replay = h == QLOG_HEADER_OK && qlog_epoch(q->log) > (uint64_t)done;
    if (h == QLOG_HEADER_SHORT || h == QLOG_HEADER_BAD)
        log_error("queue: the message log %s has no valid header: read as empty", path);
    if (replay) {
        e = qlog_scan(q->log, replay_record, &rp, &st, d);
        /* Zeros: the end of a direct write's last block (or blocks never
         * written), not worth a line. */
        if (!e && st.stop != QLOG_STOP_END && st.stop != QLOG_STOP_ZEROS)
            log_info("queue: message log %s ends in a %s at byte %" PRIu64
                     " (a write cut short by a crash: never acknowledged)",
                     path, qlog_stop_str(st.stop), st.end);
    }
    xfree(path);
    size_t kept = 0;
    if (!e) {
        if (rp.ndelivered) /* (qsort and bsearch take no NULL, even for none) */
            qsort(rp.delivered, rp.ndelivered, sizeof *rp.delivered, cmp_id);
        int rc = exec(q->db, "BEGIN IMMEDIATE");
        for (size_t i = 0; rc == SQLITE_OK && i < rp.nputs; i++) {
            put_req_t *p = rp.puts[i];
            if (rp.ndelivered &&
                bsearch(&p->id, rp.delivered, rp.ndelivered, sizeof *rp.delivered, cmp_id))
                continue;
            rc = insert_row(q->st_insert_ignore, p);
            kept += sqlite3_changes(q->db) > 0;
        }
        /* Done: this epoch, replayed or older than what was done (a log
         * put back from a copy), so that the next one is above it; a log
         * with no valid header starts the count again from 0. */
        if (rc == SQLITE_OK) {
            sqlite3_bind_int64(q->st_epoch_done, 1,
                               h == QLOG_HEADER_OK ? (int64_t)qlog_epoch(q->log) : 0);
            rc = step_done(q->st_epoch_done);
        }
        if (rc == SQLITE_OK)
            rc = exec(q->db, "COMMIT");
        if (rc != SQLITE_OK) {
            e = sql_err(q->db, rc, d, "replay the message log");
            exec(q->db, "ROLLBACK");
        }
    }
    for (size_t i = 0; i < rp.nputs; i++)
        xfree(rp.puts[i]);
    xfree(rp.puts);
    xfree(rp.delivered);
    if (e)
        return e;
    if (kept)
        log_info("queue: %zu messages put back from the message log", kept);
    int rc = qlog_restart(q->log, QLOG_HEADER_SIZE, true);
    if (rc != 0)
        return err_set(d, ERR_IO, 0, "queue: message log: restart: %s", strerror(-rc));
    return ERR_OK;
}

static err_t sq_open(uv_loop_t *loop, const char *path, const queue_opts_t *opts, sq_t **out,
                 err_detail_t *d)
{
    *out = NULL;
    if (!loop || !path || !*path)
        return err_set(d, ERR_BAD_CONFIG, 0, "queue: no loop or path");
    sq_t *q = xcalloc(1, sizeof *q);
    q->loop = loop;
    q->lock_fd = -1;
    q->wal_fd = -1;
    q->sync_tail = &q->sync_head;
    if (opts)
        q->opts = *opts;
    if (q->opts.sync != QUEUE_SYNC_FULL && q->opts.sync != QUEUE_SYNC_NORMAL) {
        xfree(q);
        return err_set(d, ERR_BAD_CONFIG, 0, "queue: unknown sync policy");
    }
    if (!q->opts.max_batch)
        q->opts.max_batch = 512;
    if (!q->opts.max_queued)
        q->opts.max_queued = 100000;
    if (!q->opts.max_payload)
        q->opts.max_payload = 16u << 20;
    if (!q->opts.dead_keep_days)
        q->opts.dead_keep_days = 30;
    if (!q->opts.worklist_keep_days)
        q->opts.worklist_keep_days = WORKLIST_KEEP_DAYS;
    if (!q->opts.inbox_poll_ms)
        q->opts.inbox_poll_ms = 1000;
    q->path = xstrdup(path);
    q->puts_tail = &q->puts;
    q->marks_tail = &q->marks;
    q->hot_tail = &q->hot;

    size_t n = strlen(path) + 6;
    char *lock = xmalloc(n);
    snprintf(lock, n, "%s.lock", path);
    q->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (q->lock_fd < 0) {
        err_set(d, ERR_IO, 0, "queue lock file %s: %s", lock, strerror(errno));
        xfree(lock);
        free_handles(q);
        return ERR_IO;
    }
    if (flock(q->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        err_t e = errno == EWOULDBLOCK
                      ? err_set(d, ERR_BUSY, 0, "queue %s is in use by another process", path)
                      : err_set(d, ERR_IO, 0, "queue lock file %s: %s", lock, strerror(errno));
        xfree(lock);
        free_handles(q);
        return e;
    }
    xfree(lock);

    /* The write connection's commits reach the WAL as one write each. */
    int rc = sqlite3_open_v2(path, &q->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             sqlite_walbuf_vfs());
    err_t e = ERR_OK;
    if (rc != SQLITE_OK)
        e = sql_err(q->db, rc, d, "open queue");
    if (!e) {
        harden(q->db);
        sqlite3_busy_timeout(q->db, 5000);
        sqlite3_extended_result_codes(q->db, 0);
        e = open_schema(q, d);
    }
    if (!e)
        e = prepare(q,
                    "INSERT INTO msgs(id, dest, control_id, content_type, payload, findings,"
                    " created_ms, updated_ms, meta) VALUES(?8, ?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
                    &q->st_insert, d);
    if (!e)
        e = prepare(q,
                    "INSERT INTO worklist(kind, msg_id, dest, control_id, content_type, payload,"
                    " findings, meta, received_ms) VALUES(?9, ?8, ?1, ?2, ?3, ?4, ?5, ?7, ?6)",
                    &q->st_wl_put, d);
    if (!e)
        e = prepare(q,
                    "INSERT INTO worklist(kind, msg_id, dest, control_id, content_type, payload,"
                    " findings, meta, reason, received_ms) SELECT 'dead', id, dest, control_id,"
                    " content_type, payload, findings, meta, ?2, created_ms FROM msgs"
                    " WHERE id=?1 AND NOT EXISTS(SELECT 1 FROM worklist WHERE msg_id=?1"
                    " AND kind='dead')",
                    &q->st_wl_dead, d);
    if (!e)
        e = prepare(q, "DELETE FROM msgs WHERE id=?1", &q->st_delete, d);
    if (!e)
        e = prepare(q, "INSERT OR REPLACE INTO meta(k, v) VALUES('ids-below', ?1)",
                    &q->st_ids_below, d);
    if (!e)
        e = ids_load(q, d);
    /* A log left by a run with the log on is read even with it off now:
     * it may hold acknowledged messages. */
    bool log_file = q->opts.message_log || log_file_exists(q);
    if (!e && log_file)
        e = prepare(q,
                    "INSERT OR IGNORE INTO msgs(id, dest, control_id, content_type, payload,"
                    " findings, created_ms, updated_ms, meta)"
                    " VALUES(?8, ?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
                    &q->st_insert_ignore, d);
    if (!e && log_file)
        e = prepare(q, "INSERT OR REPLACE INTO meta(k, v) VALUES('log-epoch-done', ?1)",
                    &q->st_epoch_done, d);
    if (!e && log_file)
        e = log_open(q, d);
    if (!e && q->log && !q->opts.message_log) {
        /* Read back and empty: no longer used. */
        qlog_close(q->log);
        q->log = NULL;
        log_path_unlink(q);
    }
    if (!e)
        e = prepare(q, "BEGIN IMMEDIATE", &q->st_begin, d);
    if (!e)
        e = prepare(q, "COMMIT", &q->st_commit, d);
    if (!e && q->opts.sync == QUEUE_SYNC_FULL)
        e = prepare(q, "PRAGMA synchronous=NORMAL", &q->st_sync_normal, d);
    if (!e && q->opts.sync == QUEUE_SYNC_FULL)
        e = prepare(q, "PRAGMA synchronous=FULL", &q->st_sync_full, d);
    if (!e)
        e = prepare(q,
                    "UPDATE msgs SET state=?5, attempts=?2, last_error=?3, updated_ms=?4"
                    " WHERE id=?1",
                    &q->st_dead, d);
    if (!e)
        e = prepare(q,
                    "UPDATE msgs SET attempts=?2, last_error=?3, updated_ms=?4, rejects=?5"
                    " WHERE id=?1",
                    &q->st_attempt, d);
    size_t moved = 0;
    if (!e && (rc = inbox_drain(q, false, &moved)) != SQLITE_OK)
        e = sql_err(q->db, rc, d, "take the inbox");
    if (!e && moved)
        log_info("queue: %zu messages handed back by spinegate-admin queued", moved);
    if (!e)
        e = load_state(q, d);
    if (!e)
        worklist_prune_maybe(q);
    if (!e) {
        sqlite3_wal_hook(q->db, wal_hook, q); /* replaces the automatic checkpoint */
        rc = sqlite3_open_v2(path, &q->ckdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc == SQLITE_OK) {
            harden(q->ckdb);
            sqlite3_busy_timeout(q->ckdb, 5000);
            rc = exec(q->ckdb, q->opts.sync == QUEUE_SYNC_FULL ? "PRAGMA synchronous=FULL"
                                                               : "PRAGMA synchronous=NORMAL");
        }
        if (rc != SQLITE_OK)
            e = sql_err(q->ckdb, rc, d, "open checkpoint connection");
    }
    if (e) {
        free_handles(q);
        return e;
    }
    uv_timer_init(loop, &q->timer);
    q->timer.data = q;
    uv_check_init(loop, &q->defer_check);
    q->defer_check.data = q;
    uv_idle_init(loop, &q->defer_idle);
    q->defer_idle.data = q;
    /* Unreferenced: the inbox poll alone does not keep a loop running. */
    uv_timer_init(loop, &q->inbox_timer);
    q->inbox_timer.data = q;
    uv_timer_init(loop, &q->fresh_timer);
    q->fresh_timer.data = q;
    uv_timer_start(&q->inbox_timer, inbox_timer_cb, q->opts.inbox_poll_ms, q->opts.inbox_poll_ms);
    uv_unref((uv_handle_t *)&q->inbox_timer);
    log_info("queue: opened %s (sync=%s, %" PRIu64 " pending)", path,
             q->opts.sync == QUEUE_SYNC_FULL ? "full" : "normal", q->st.depth);
    *out = q;
    return ERR_OK;
}

/* ---------------------------------------------------------------- fresh rows */

static void fresh_clear(sqr_t *r)
{
    while (r->fresh_n) {
        queue_row_free(r->fresh[r->fresh_head]);
        r->fresh_head = (r->fresh_head + 1) % FRESH_MAX;
        r->fresh_n--;
    }
    r->fresh_head = 0;
}

/* Rows were added that commit_done did not see (the inbox, a dead review):
 * the readers read everything up to the highest id so far from the file. */
static void fresh_drop(sq_t *q)
{
    for (size_t i = 0; i < q->ndests; i++) {
        sqr_t *r = q->dests[i].reader;
        if (r) {
            fresh_clear(r);
            r->fresh_from = q->max_id;
        }
    }
}

/* Keeps the row p just committed as a fetch would read it back. */
static void fresh_add(sqr_t *r, const put_req_t *p)
{
    if (p->id <= r->fresh_from)
        return;
    if (r->fresh_n == FRESH_MAX || r->cursor < r->fresh_from) {
        /* The deliverer is behind (a backlog, a slow destination): it
         * reads the file, and nothing is copied for it until it has read
         * past this row. */
        fresh_clear(r);
        r->fresh_from = p->id;
        return;
    }
    if (!r->fresh)
        r->fresh = xmalloc(FRESH_MAX * sizeof *r->fresh);
    size_t ld = strlen(p->t.dest) + 1, lc = strlen(p->t.control_id) + 1,
           lt = strlen(p->t.content_type) + 1, lf = p->t.findings ? strlen(p->t.findings) + 1 : 0;
    queue_row_t *row = xmalloc(sizeof *row + ld + lc + lt + lf + p->t.payload_len + 1);
    char *s = (char *)(row + 1);
    row->id = p->id;
    row->attempts = 0;
    row->rejects = 0;
    row->created_ms = p->created_ms;
    row->dest = memcpy(s, p->t.dest, ld);
    s += ld;
    row->control_id = memcpy(s, p->t.control_id, lc);
    s += lc;
    row->content_type = memcpy(s, p->t.content_type, lt);
    s += lt;
    row->findings = lf ? memcpy(s, p->t.findings, lf) : NULL;
    s += lf;
    memcpy(s, p->t.payload, p->t.payload_len);
    s[p->t.payload_len] = 0;
    row->payload = (const unsigned char *)s;
    row->payload_len = p->t.payload_len;
    r->fresh[(r->fresh_head + r->fresh_n) % FRESH_MAX] = row;
    r->fresh_n++;
}

/* ---------------------------------------------------------------- message log */

/* The log starts a new epoch (from its header again) past this size: some
 * 1,300 messages of 3 kB. */
#define LOG_RESTART_BYTES ((size_t)4 << 20)
/* A hot message not delivered for this long is copied into the table, where
 * spinegate-admin and a restart's readers find it like any other row
 * (QUEUE__SPILL_MS; a variable only so that the unit tests can raise it). */
uint64_t queue__spill_ms = QUEUE__SPILL_MS;
/* What the log keeps of its file when it starts over during a run. */
#define LOG_KEEP_BYTES (LOG_RESTART_BYTES + ((size_t)1 << 20))

static void hot_append(sq_t *q, put_req_t *p)
{
    p->hot_next = NULL;
    p->hot_ms = uv_now(q->loop);
    p->spill = p->spilling = p->gone = false;
    *q->hot_tail = p;
    q->hot_tail = &p->hot_next;
    q->nhot++;
}

/* Oldest first, and deliveries come in order: the head is the usual hit. */
static put_req_t *hot_find(const sq_t *q, int64_t id)
{
    for (put_req_t *p = q->hot; p; p = p->hot_next)
        if (p->id == id)
            return p;
    return NULL;
}

/* Frees the hot messages marked gone (delivered, or now rows). */
static void hot_sweep(sq_t *q)
{
    put_req_t **pp = &q->hot;
    while (*pp) {
        put_req_t *p = *pp;
        if (p->gone) {
            *pp = p->hot_next;
            q->nhot--;
            xfree(p);
        } else {
            pp = &p->hot_next;
        }
    }
    q->hot_tail = pp;
}

/* True when dest has a hot message above cursor: its reader must not read
 * the file until that message is a row (docs/queue-log.md, rule 10). Flags
 * those messages for the next commit. */
static bool hot_above(sq_t *q, size_t dest_idx, int64_t cursor)
{
    bool any = false;
    for (put_req_t *p = q->hot; p; p = p->hot_next) {
        if (p->dest_idx == dest_idx && p->id > cursor && !p->gone) {
            p->spill = true;
            any = true;
        }
    }
    return any;
}

static void spill_rec_add(sq_t *q, int64_t id)
{
    if (q->nspill_recs == q->cap_spill_recs) {
        q->cap_spill_recs = q->cap_spill_recs ? 2 * q->cap_spill_recs : 64;
        q->spill_recs = xrealloc(q->spill_recs, q->cap_spill_recs * sizeof *q->spill_recs);
    }
    q->spill_recs[q->nspill_recs++] = id;
}

/* Whether p, a put of the batch being chosen, goes to the log: a single
 * put without a worklist item (those commit with their rows), to a
 * destination whose reader serves from memory, while the log works and
 * no restart is under way. */
static bool log_takes(const sq_t *q, const put_req_t *p, bool restart)
{
    if (restart || q->log_failed || q->log_epoch_done || q->log_restart_due || q->sync_failed ||
        q->closing)
        return false;
    if (p->t.worklist || p->grp)
        return false;
    const sqr_t *r = q->dests[p->dest_idx].reader;
    return r && !r->closing && r->cursor >= r->fresh_from;
}

static void spill_push(sq_t *q, put_req_t *h)
{
    if (q->nbatch_spills == q->cap_spills) {
        q->cap_spills = q->cap_spills ? 2 * q->cap_spills : 16;
        q->batch_spills = xrealloc(q->batch_spills, q->cap_spills * sizeof *q->batch_spills);
    }
    h->spilling = true;
    q->batch_spills[q->nbatch_spills++] = h;
}

/* Every put the log took is hot (none waits for its sync): a batch that
 * ends the log's epoch can spill them all. */
static bool log_settled(const sq_t *q)
{
    return q->hot_unsynced == 0;
}

/* After a failure the log's epoch is retired once (log_plan). */
static bool log_retire_ready(const sq_t *q)
{
    return q->log_failed && !q->log_retire_tried && !q->log_epoch_done && log_settled(q);
}

/* The next batch restarts the log: it is due (size, or a stop) and can be
 * done now. */
static bool log_restart_ready(const sq_t *q)
{
    return (q->log_restart_due || q->closing) && !q->log_epoch_done && !q->log_failed &&
           log_settled(q);
}

/* Chooses the batch's part in the log, on the loop before the commit runs:
 * ids for every put (a hot-only batch has no transaction for id_next), the
 * puts that go hot, the deliveries logged instead of deleted, and the hot
 * messages spilled into the table; the log's records are buffered here, so
 * that the commit (maybe on the pool) only writes them. Without the log
 * the batch is table work only, as ever. */
static void log_plan(sq_t *q)
{
    q->batch_sql = true;
    q->batch_log = q->batch_restart = q->batch_log_dsync = false;
    q->batch_raise = 0;
    q->nbatch_spills = 0;
    q->batch_spill_recs = 0;
    if (!q->log)
        return;
    q->batch_sql = false;
    /* Direct writes while the loop waits for each sync anyway (full, syncs
     * on the loop): they halve the kernel's CPU for a write and its sync
     * (queue_log.h). Switched here, before the batch is planned, when no
     * commit or restart can be using the log on the pool. */
    bool direct = q->opts.sync == QUEUE_SYNC_FULL && !q->sync_on_pool && !q->log_failed &&
                  !q->log_direct_refused;
    if (direct != qlog_is_direct(q->log) && qlog_direct(q->log, direct) != direct && direct) {
        q->log_direct_refused = true;
        log_debug("queue: the message log cannot be written with O_DIRECT here: "
                  "buffered writes");
    }
    /* A direct write waits for the device anyway: synchronized (RWF_DSYNC),
     * it also flushes the disk's cache, one syscall and one wait instead of
     * a write and an fdatasync. Not while the tests inject failed syncs of
     * the log, which must then run. */
    q->batch_log_dsync = qlog_is_direct(q->log) && !queue__log_faults.sync_errno;
    /* After a failure the log's epoch is retired as at a restart, once:
     * everything hot spilled and log-epoch-done written, so that the next
     * open does not replay messages delivered from the table meanwhile (no
     * "the table holds it" record reaches a failed log). */
    bool retire = log_retire_ready(q);
    bool restart = log_restart_ready(q) || retire;
    if (retire)
        q->log_retire_tried = true; /* once: a table that refuses it does not loop */
    int64_t below = q->ids_below;
    for (put_req_t *p = q->batch_refuse_puts ? NULL : q->batch_puts; p; p = p->next) {
        if (q->next_id + 1 >= below) {
            below = q->next_id + 1 + ID_BLOCK;
            q->batch_raise = below;
        }
        p->id = ++q->next_id;
        p->hot = false;
        if (log_takes(q, p, restart)) {
            qlog_put_t rec = {.id = p->id,
                              .created_ms = p->created_ms,
                              .dest = p->t.dest,
                              .control_id = p->t.control_id,
                              .content_type = p->t.content_type,
                              .findings = p->t.findings,
                              .meta = p->t.meta,
                              .payload = p->t.payload,
                              .payload_len = p->t.payload_len};
            p->hot = qlog_add_put(q->log, &rec) == ERR_OK;
        }
        if (p->hot)
            q->batch_log = true;
        else
            q->batch_sql = true;
    }
    if (q->batch_raise)
        q->batch_sql = true;
    for (mark_req_t *m = q->batch_marks; m; m = m->next) {
        m->hot = hot_find(q, m->id);
        m->logged =
            m->hot && m->kind == MARK_DELIVERED && !restart && !q->log_failed && !m->hot->spill;
        if (m->logged) {
            qlog_add_delivered(q->log, m->id);
            m->hot->gone = true; /* provisionally: log_batch_end undoes it on failure */
            q->batch_log = true;
        } else {
            if (m->hot)
                m->hot->spill = true; /* the mark applies to its row, so the row first */
            q->batch_sql = true;
        }
    }
    uint64_t now = uv_now(q->loop);
    for (put_req_t *h = q->hot; h; h = h->hot_next) {
        if (h->gone)
            continue;
        if (h->spill || restart || q->log_failed || now - h->hot_ms >= queue__spill_ms) {
            spill_push(q, h);
            q->batch_sql = true;
        }
    }
    if (!restart && !q->log_failed) {
        for (size_t i = 0; i < q->nspill_recs; i++)
            qlog_add_delivered(q->log, q->spill_recs[i]);
        q->batch_spill_recs = q->nspill_recs;
        if (q->nspill_recs)
            q->batch_log = true;
    }
    if (restart) {
        q->batch_restart = true;
        q->batch_sql = true;
    }
}

/* The outcome of the batch's part in the log, on the loop (commit_done):
 * batch_sql_done says whether its table part committed, ok whether the
 * whole batch (the log write too) did. With queue-sync=full, *spilled
 * gets the ids it made rows (xfree), to be recorded once they are synced. */
static void log_batch_end(sq_t *q, bool ok, mark_req_t *marks, int64_t **spilled, size_t *nspilled)
{
    *spilled = NULL;
    *nspilled = 0;
    if (!q->log)
        return;
    for (mark_req_t *m = marks; m; m = m->next)
        if (m->logged && !ok && m->hot)
            m->hot->gone = false; /* not recorded: the mark is retried */
    for (size_t i = 0; i < q->nbatch_spills; i++) {
        put_req_t *h = q->batch_spills[i];
        h->spilling = false;
        if (q->batch_sql_done) {
            h->gone = true;
            if (q->batch_restart)
                continue; /* that epoch is never read again */
            if (q->opts.sync != QUEUE_SYNC_FULL) {
                spill_rec_add(q, h->id);
            } else {
                if (!*spilled)
                    *spilled = xmalloc(q->nbatch_spills * sizeof **spilled);
                (*spilled)[(*nspilled)++] = h->id;
            }
        } else if (q->closing) {
            /* The table refuses it even now: the log still holds it, and
             * the next open replays it. */
            h->gone = true;
        }
    }
    if (ok && q->batch_spill_recs) {
        memmove(q->spill_recs, q->spill_recs + q->batch_spill_recs,
                (q->nspill_recs - q->batch_spill_recs) * sizeof *q->spill_recs);
        q->nspill_recs -= q->batch_spill_recs;
    }
    hot_sweep(q);
    if (q->batch_sql_done)
        q->wal_unsynced = true;
    if (q->batch_log_failed && !q->log_failed) {
        q->log_failed = true;
        log_error("queue: message log write failed: every message goes to the table until a "
                  "restart of the daemon (the log is read back then)");
    }
    if (q->closing && q->batch_restart && !q->batch_sql_done)
        q->log_failed = true; /* give up at close: the next open replays the log */
    if (q->batch_restart && q->batch_sql_done) {
        q->log_epoch_done = true;
        q->log_restart_due = false;
        q->nspill_recs = 0; /* that epoch is never read again */
    }
    if (ok && q->batch_log) {
        if (!q->batch_log_synced)
            q->log_unsynced = true;
        if (qlog_size(q->log) > LOG_RESTART_BYTES)
            q->log_restart_due = true;
    }
}

/* Starts the log's next epoch once the table holds everything of this one
 * durably (log-epoch-done committed, and synced with full) and nothing
 * runs that could write to the log meanwhile. */
static void log_restart_maybe(sq_t *q)
{
    /* Only the sync of the batch that ended the epoch is waited for: the
     * batches after it write nothing to the log (log_takes), so the syncs
     * that run for them do not touch it, and under steady load on a slow
     * disk (syncs on the pool) one always runs. */
    if (!q->log || !q->log_epoch_done || q->committing)
        return;
    if (q->opts.sync == QUEUE_SYNC_FULL && !q->log_epoch_synced)
        return; /* (never, after a failed sync: the log keeps that epoch) */
    q->log_epoch_done = q->log_epoch_synced = false;
    if (q->log_failed)
        return; /* retired, not restarted: nothing more is written to a failed log */
    /* The file keeps its blocks (at a stop it is cut to its header): an
     * fdatasync of writes over written blocks need not commit the file
     * system's journal, about half the time of one that grows the file
     * (queue-sync=full). The new header is not synced here: with full the
     * sync of the first batch that writes the log covers it before any
     * sender hears of that batch, and a power loss before it leaves the old
     * header, which the new records fail (queue_log.h); the sync cost the
     * loop 7-9 ms per epoch, a few dozen times a second. */
    int rc = qlog_restart(q->log, q->closing ? QLOG_HEADER_SIZE : LOG_KEEP_BYTES, q->closing);
    if (rc != 0) {
        q->log_failed = true;
        log_error("queue: message log restart failed (%s): every message goes to the table "
                  "until a restart of the daemon",
                  strerror(-rc));
    }
}

/* The readers whose file fetch waited for spills: those now free to read
 * start it. */
static void fetch_work(uv_work_t *w);
static void fetch_done(uv_work_t *w, int status);

/* Whether the log needs a group commit with no put or mark in it: hot
 * messages to spill (flagged, old enough, or all of them at close, at a
 * restart, after a log failure). */
static bool log_wants_commit(const sq_t *q)
{
    /* Only what log_plan then does: a batch that does nothing would end
     * in asking for another at once (commit_done). */
    if (!q->log)
        return false;
    if (log_retire_ready(q))
        return true;
    /* A clean stop leaves the table holding everything: one restart batch. */
    if (q->closing && log_restart_ready(q) && qlog_size(q->log) > QLOG_HEADER_SIZE)
        return true;
    if (!q->nhot)
        return false;
    if (q->log_failed || log_restart_ready(q))
        return true;
    if (uv_now(q->loop) - q->hot->hot_ms >= queue__spill_ms)
        return true;
    for (const put_req_t *p = q->hot; p; p = p->hot_next)
        if (p->spill && !p->gone)
            return true;
    return false;
}

static void commit_timer_cb(uv_timer_t *t);

/* Marks wait this long for company: nobody waits for them, and a put commit
 * that comes along meanwhile takes them too. */
#define MARK_DELAY_MS 10

/* After failed commits (a full disk?), work that no sender waits for
 * (marks, spills) is tried again this much later: 10 ms doubled per
 * failure up to 2 s, not in a loop. */
static uint64_t fail_backoff_ms(const sq_t *q)
{
    if (!q->fail_streak)
        return 0;
    unsigned sh = q->fail_streak < 8 ? q->fail_streak : 8;
    uint64_t back = (uint64_t)MARK_DELAY_MS << sh;
    return back > 2000 ? 2000 : back;
}

/* Arms the commit timer for the oldest hot message's spill, when nothing
 * else will start a commit before it is due. */
static void spill_schedule(sq_t *q)
{
    if (!q->nhot || q->committing)
        return;
    uint64_t now = uv_now(q->loop), due = q->hot->hot_ms + queue__spill_ms;
    if (due < now + fail_backoff_ms(q))
        due = now + fail_backoff_ms(q);
    if (q->timer_armed && q->timer_due <= due)
        return;
    q->timer_armed = true;
    q->timer_due = due;
    uv_timer_start(&q->timer, commit_timer_cb, due > now ? due - now : 0, 0);
}

static void spill_waiters_go(sq_t *q)
{
    for (size_t i = 0; i < q->ndests; i++) {
        sqr_t *r = q->dests[i].reader;
        if (!r || !r->spill_wait || hot_above(q, i, r->cursor))
            continue;
        r->spill_wait = false;
        r->start_last_id = q->dests[i].last_id;
        r->work.data = r;
        uv_queue_work(q->loop, &r->work, fetch_work, fetch_done);
    }
}

/* ---------------------------------------------------------------- commit */

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* Steps a statement that returns no row, as exec() would run its SQL. */
static int step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

queue__log_faults_t queue__log_faults;

/* qlog_write (qlog_write_dsync when dsync), or the unit tests' injected
 * failure of it: nothing written, the buffer dropped, as when a pwrite fails
 * before writing anything. */
static int log_write(qlog_t *log, bool dsync, bool *synced)
{
    *synced = false;
    if (queue__log_faults.write_errno) {
        qlog_discard(log);
        return -queue__log_faults.write_errno;
    }
    if (queue__log_faults.write_delay_us)
        usleep(queue__log_faults.write_delay_us);
    return dsync ? qlog_write_dsync(log, synced) : qlog_write(log);
}

/* fdatasync of the log, or the unit tests' injected failure of it. */
static int log_fdatasync(int fd)
{
    if (queue__log_faults.sync_errno) {
        errno = queue__log_faults.sync_errno;
        return -1;
    }
    return fdatasync(fd);
}

/* BEGIN of a group commit; with queue-sync=full the connection commits it
 * without an fsync (SQLite refuses the change inside a transaction). */
static int batch_begin(sq_t *q)
{
    if (!q->batch_sql)
        return SQLITE_OK; /* log records only: no transaction */
    if (q->st_sync_normal && !q->batch_refuse_puts) {
        int rc = step_done(q->st_sync_normal);
        if (rc != SQLITE_OK)
            return rc;
    }
    return step_done(q->st_begin);
}

/* After the group commit's COMMIT or ROLLBACK (or a failed BEGIN): the
 * connection's other transactions sync as before. Any thread. */
static void batch_end(sq_t *q)
{
    if (!q->batch_sql)
        return;
    if (q->st_sync_full && !q->batch_refuse_puts && step_done(q->st_sync_full) != SQLITE_OK)
        q->sync_restore_failed = true; /* logged on the loop (commit_done) */
}

/* One row of the table from a put (a new one, or a hot message spilled);
 * also the worklist item of a put (st_wl_put numbers its parameters the
 * same way, and takes the kind as ?9). */
static int insert_row(sqlite3_stmt *st, const put_req_t *p)
{
    sqlite3_bind_int64(st, 8, p->id);
    sqlite3_bind_text(st, 1, p->t.dest, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, p->t.control_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, p->t.content_type, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(st, 4, p->t.payload, p->t.payload_len, SQLITE_STATIC);
    bind_text_or_null(st, 5, p->t.findings);
    sqlite3_bind_int64(st, 6, p->created_ms);
    bind_text_or_null(st, 7, p->t.meta);
    return step_done(st);
}

/* The batch's statements and the commit, once BEGIN gave rc; then the
 * batch's log records (docs/queue-log.md: after the COMMIT, so that a
 * record saying a spilled message is a row never precedes that row). */
static void commit_body(sq_t *q, int rc)
{
    sqlite3 *db = q->db;
    const char *what = "begin";
    int64_t now = now_ms(), ids_below = q->ids_below;
    q->batch_sql_done = false;
    q->batch_err[0] = 0;
    if (q->batch_sql) {
        if (rc == SQLITE_OK && q->batch_raise) {
            sqlite3_bind_int64(q->st_ids_below, 1, q->batch_raise);
            rc = step_done(q->st_ids_below);
            what = "id";
        }
        for (size_t i = 0; rc == SQLITE_OK && i < q->nbatch_spills; i++) {
            rc = insert_row(q->st_insert, q->batch_spills[i]);
            what = "spill";
        }
        for (put_req_t *p = q->batch_refuse_puts ? NULL : q->batch_puts; rc == SQLITE_OK && p;
             p = p->next) {
            if (p->hot)
                continue;
            if (!p->id) {
                rc = id_next(q, &p->id);
                what = "id";
                if (rc != SQLITE_OK)
                    break;
            }
            rc = insert_row(q->st_insert, p);
            what = "insert";
            if (rc == SQLITE_OK && p->t.worklist) {
                /* The item and the row it describes commit together or not at all. */
                sqlite3_bind_text(q->st_wl_put, 9, p->t.worklist, -1, SQLITE_STATIC);
                rc = insert_row(q->st_wl_put, p);
                what = "worklist";
            }
        }
        for (mark_req_t *m = q->batch_marks; rc == SQLITE_OK && m; m = m->next) {
            if (m->logged)
                continue;
            bool dead = m->kind == MARK_DEAD || m->kind == MARK_DEAD_LETTERED;
            sqlite3_stmt *st = m->kind == MARK_DELIVERED ? q->st_delete
                               : dead                    ? q->st_dead
                                                         : q->st_attempt;
            sqlite3_bind_int64(st, 1, m->id);
            if (m->kind != MARK_DELIVERED) {
                sqlite3_bind_int64(st, 2, m->attempts);
                sqlite3_bind_text(st, 3, m->reason, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 4, now);
            }
            if (dead)
                sqlite3_bind_int(st, 5, m->kind == MARK_DEAD ? ST_DEAD : ST_DEAD_LETTERED);
            else if (m->kind == MARK_ATTEMPT)
                sqlite3_bind_int64(st, 5, m->rejects);
            rc = step_done(st);
            what = "mark";
            if (rc == SQLITE_OK && dead) {
                /* A dead letter is a worklist item, written with its mark (once:
                 * a mark given again finds it, see st_wl_dead). */
                st = q->st_wl_dead;
                sqlite3_bind_int64(st, 1, m->id);
                sqlite3_bind_text(st, 2, m->reason, -1, SQLITE_STATIC);
                rc = step_done(st);
                what = "worklist";
            }
        }
        if (rc == SQLITE_OK && q->batch_restart) {
            sqlite3_bind_int64(q->st_epoch_done, 1, (int64_t)qlog_epoch(q->log));
            rc = step_done(q->st_epoch_done);
            what = "log epoch";
        }
        if (rc == SQLITE_OK) {
            rc = step_done(q->st_commit);
            what = "commit";
        }
        if (rc != SQLITE_OK) {
            snprintf(q->batch_err, sizeof q->batch_err, "%s: %s (sqlite %d)", what,
                     sqlite3_errmsg(db), rc);
            if (!sqlite3_get_autocommit(db))
                exec(db, "ROLLBACK");
            q->ids_below = ids_below; /* its raise, if any, was rolled back */
        } else {
            q->batch_sql_done = true;
            if (q->batch_raise)
                q->ids_below = q->batch_raise;
        }
    }
    q->batch_log_failed = q->batch_log_synced = false;
    q->batch_write_ns = 0;
    if (rc == SQLITE_OK && q->batch_log) {
        bool direct = qlog_is_direct(q->log);
        uint64_t t0 = direct ? uv_hrtime() : 0;
        int e = log_write(q->log, q->batch_log_dsync, &q->batch_log_synced);
        if (direct)
            q->batch_write_ns = uv_hrtime() - t0;
        if (e != 0) {
            rc = SQLITE_IOERR;
            q->batch_log_failed = true;
            snprintf(q->batch_err, sizeof q->batch_err, "message log: %s", strerror(-e));
        }
    } else if (q->log && q->batch_log) {
        qlog_discard(q->log); /* what log_plan buffered is not written */
    }
    q->batch_rc = rc;
    batch_end(q);
}

/* Runs on the thread pool: one transaction for the whole batch. */
static void commit_work(uv_work_t *w)
{
    sq_t *q = w->data;
    commit_body(q, batch_begin(q));
}

/* A batch of at most this many puts may commit on the loop thread. */
#define COMMIT_HERE_MAX 64

/* A group commit only copies pages into the OS cache (with queue-sync=full
 * the fsync comes after it, on the pool: sync_start), which costs less than
 * the pool's hop (a futex wake and two thread switches per
 * commit, most of the daemon's context switches). Done on the loop thread
 * only when the write lock is free at once: the loop never waits for another
 * writer (the worklist, an admin command, a checkpoint that resets the WAL).
 * The statements, their order and the callbacks after the commit are those
 * of the pool path. */
static bool commit_here(sq_t *q, size_t nputs)
{
    if (q->batch_sql && (q->checkpointing || nputs > COMMIT_HERE_MAX))
        return false;
    sqlite3_busy_timeout(q->db, 0);
    int rc = batch_begin(q);
    sqlite3_busy_timeout(q->db, 5000); /* as queue_open set it */
    if (rc != SQLITE_OK) {
        batch_end(q);
        return false; /* busy (or failing): the pool waits for it and reports */
    }
    commit_body(q, rc);
    return true;
}

static void commit_start(sq_t *q, bool may_run_here);
static void commit_schedule(sq_t *q, bool urgent);
static void maybe_finish_close(sq_t *q);

static void checkpoint_work(uv_work_t *w)
{
    sq_t *q = w->data;
    q->ck_log = q->ck_done = 0;
    q->ck_rc = sqlite3_wal_checkpoint_v2(q->ckdb, NULL, q->ck_mode, &q->ck_log, &q->ck_done);
}

static void checkpoint_done(uv_work_t *w, int status)
{
    sq_t *q = w->data;
    q->checkpointing = false;
    if (status == 0 && q->ck_rc != SQLITE_OK && q->ck_rc != SQLITE_BUSY)
        log_warn("queue: checkpoint: %s (sqlite %d)", sqlite3_errstr(q->ck_rc), q->ck_rc);
    maybe_finish_close(q);
}

static void checkpoint_maybe(sq_t *q)
{
    if (q->checkpointing || q->closed || q->wal_pages < CKPT_PAGES)
        return;
    /* Commits go on while a checkpoint runs, so the WAL seldom restarts
     * before the forced one: past CKPT_PAGES, start one per CKPT_PAGES new
     * pages, not one per commit (each syncs the WAL: most of the fsyncs of
     * queue-sync=normal were these). */
    if (q->wal_pages < q->ck_pages)
        q->ck_pages = 0; /* the WAL restarted */
    if (q->wal_pages < CKPT_FORCE_PAGES && q->wal_pages - q->ck_pages < CKPT_PAGES)
        return;
    q->ck_pages = q->wal_pages;
    /* Passive: copies what it can without blocking the writer. If the WAL
     * still grew (the writer never let it restart), the next one waits. */
    q->ck_mode =
        q->wal_pages >= CKPT_FORCE_PAGES ? SQLITE_CHECKPOINT_RESTART : SQLITE_CHECKPOINT_PASSIVE;
    q->checkpointing = true;
    q->ckwork.data = q;
    uv_queue_work(q->loop, &q->ckwork, checkpoint_work, checkpoint_done);
}

/* Puts marks whose commit or sync failed back in front of the newer ones,
 * to be retried (marks are idempotent; their order is kept). */
static void marks_requeue(sq_t *q, mark_req_t *marks)
{
    mark_req_t *last = marks;
    while (last->next)
        last = last->next;
    last->next = q->marks;
    if (!q->marks)
        q->marks_tail = &last->next;
    q->marks = marks;
}

/* The end of a batch, durable (ok) or refused: its rows are shown to the
 * readers, its marks stop being waited for, its puts are answered. */
static void commit_finish(sq_t *q, put_req_t *puts, mark_req_t *marks, bool ok)
{
    /* Readers learn of new rows before the callbacks run, so that a callback
     * that inspects the queue sees a consistent state. */
    size_t ntouched = q->ndests; /* a callback may add destinations */
    bool *touched = ntouched ? xcalloc(ntouched, sizeof *touched) : NULL;
    for (put_req_t *p = puts; p; p = p->next) {
        dest_t *e = &q->dests[p->dest_idx];
        if (ok) {
            if (p->id > e->last_id)
                e->last_id = p->id;
            if (p->id > q->max_id)
                q->max_id = p->id;
            touched[p->dest_idx] = true;
            if (e->reader && !e->reader->closing)
                fresh_add(e->reader, p);
        } else {
            e->s.depth--;
            q->st.depth--;
        }
    }
    while (marks) {
        /* Failed or not, these marks are no longer waited for. */
        mark_req_t *m = marks;
        marks = m->next;
        q->dests[m->dest_idx].unsynced--;
        touched[m->dest_idx] = true;
        xfree(m);
    }
    while (puts) {
        put_req_t *p = puts;
        puts = p->next;
        if (ok)
            q->st.committed++;
        else
            q->st.failed++;
        if (p->grp) {
            put_group_t *g = p->grp;
            g->ids[g->ndone++] = ok ? p->id : 0;
            if (g->ndone == g->n) {
                /* Every member was in this batch: one status for all. */
                if (g->cb)
                    g->cb(&q->base, ok ? ERR_OK : ERR_QUEUE, ok ? g->ids : NULL, g->n, g->user);
                xfree(g);
            }
        } else if (p->cb) {
            p->cb(&q->base, ok ? ERR_OK : ERR_QUEUE, ok ? p->id : 0, p->user);
        }
        if (ok && p->hot)
            hot_append(q, p); /* kept until delivered or spilled */
        else
            xfree(p);
    }
    for (size_t i = 0; i < ntouched; i++) {
        sqr_t *r = q->dests[i].reader;
        if (touched[i] && r && !r->closing && r->ready_cb)
            r->ready_cb(&r->base, r->user);
    }
    xfree(touched);
}

static void sync_start(sq_t *q);

/* Runs on the thread pool: one fdatasync for every commit before it. */
static void sync_work(uv_work_t *w)
{
    sq_t *q = w->data;
    uint64_t t0 = uv_hrtime();
    if (queue__log_faults.sync_delay_us)
        usleep(queue__log_faults.sync_delay_us);
    if (q->sync_wal && q->wal_fd >= 0)
        q->sync_errno = fdatasync(q->wal_fd) == 0 ? 0 : errno;
    q->sync_log_errno = 0;
    if (q->sync_log && !q->sync_errno) {
        /* The descriptor, not qlog_sync: the next commit may write the
         * log on the loop meanwhile; a failure turns the log off instead
         * (sync_done). */
        if (log_fdatasync(q->log_fd) != 0)
            q->sync_log_errno = q->sync_errno = errno;
    }
    uint64_t us = (uv_hrtime() - t0) / 1000 + q->sync_write_us;
    q->sync_us = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

/* Syncs move to the pool when they take over SYNC_POOL_ABOVE_US on average
 * and back to the loop under SYNC_LOOP_BELOW_US: a disk that is slow for a
 * while no longer stalls the loop, and one late sync among fast ones (seen
 * at 10-40 ms on a virtual disk) does not move them. */
#define SYNC_POOL_ABOVE_US 10000
#define SYNC_LOOP_BELOW_US 2000

bool queue__sync_on_pool(uint32_t *avg_us, uint32_t took_us, bool on_pool)
{
    *avg_us = *avg_us - *avg_us / 8 + took_us / 8;
    if (*avg_us > SYNC_POOL_ABOVE_US)
        return true;
    return on_pool && *avg_us >= SYNC_LOOP_BELOW_US;
}

static void sync_note_time(sq_t *q)
{
    bool was = q->sync_on_pool;
    q->sync_on_pool = queue__sync_on_pool(&q->sync_avg_us, q->sync_us, was);
    if (!was && q->sync_on_pool) {
        /* At info the first time only: a slow disk may come and go. */
        log_msg(q->sync_pool_logged ? LOG_LVL_DEBUG : LOG_LVL_INFO,
                "queue: fdatasync of the WAL takes %u ms on average: syncs run on a worker "
                "thread, off the event loop, until they are fast again",
                (unsigned)(q->sync_avg_us / 1000));
        q->sync_pool_logged = true;
    } else if (was && !q->sync_on_pool) {
        log_debug("queue: fdatasync of the WAL is fast again: syncs run on the event loop");
    }
}

static void sync_done(uv_work_t *w, int status)
{
    sq_t *q = w->data;
    sync_note_time(q);
    bool ok = !q->sync_failed && status == 0 && q->sync_errno == 0;
    sync_batch_t *last = q->sync_last;
    q->syncing = false;
    q->sync_last = NULL;
    if (!ok)
        last = NULL; /* every batch */
    bool wal_ok = status == 0 && (q->sync_errno == 0 || q->sync_log_errno != 0);
    if (q->sync_log_errno && !q->log_failed) {
        /* Refused like a failed sync of the WAL (below), but only what it
         * covered: later messages go to the table, whose syncs still work. */
        q->log_failed = true;
        log_error("queue: fdatasync of the message log failed (%s): the messages not yet "
                  "answered are refused, though stored, and every message goes to the table "
                  "until a restart of the daemon",
                  strerror(q->sync_log_errno));
        commit_schedule(q, false); /* the spill and retire (log_plan), without waiting */
    }
    if (!ok && !wal_ok && !q->sync_failed) {
        /* The rows are in the file but perhaps not on the disk: refused, so
         * that their senders keep them (a row that did reach the disk is
         * then delivered twice, never lost). So are those committed after
         * this sync began (their frames follow the ones that failed), and
         * every put from now on (sync_failed); marks are committed again. */
        q->fail_streak++;
        q->sync_failed = true;
        log_error("queue: fdatasync of the WAL failed (%s): the messages not yet answered are "
                  "refused, though stored, and every message from now on is refused until "
                  "the daemon is restarted; marks are kept and retried",
                  status ? uv_strerror(status) : strerror(q->sync_errno));
    }
    /* The marks of failed batches, oldest first, go back as one list. */
    mark_req_t *retry = NULL, **retry_tail = &retry;
    for (bool more = q->sync_head != NULL; more;) {
        sync_batch_t *b = q->sync_head;
        more = b != last && b->next;
        q->sync_head = b->next;
        if (!q->sync_head)
            q->sync_tail = &q->sync_head;
        q->hot_unsynced -= b->nhot;
        if (ok && b->ends_epoch)
            q->log_epoch_synced = true;
        if (!ok) {
            q->st.commit_failures++;
            if (b->marks && !q->closing) {
                *retry_tail = b->marks;
                while (*retry_tail)
                    retry_tail = &(*retry_tail)->next;
                b->marks = NULL;
            }
        }
        for (size_t i = 0; ok && i < b->nspilled; i++)
            spill_rec_add(q, b->spilled[i]); /* their rows are durable now */
        xfree(b->spilled);
        commit_finish(q, b->puts, b->marks, ok);
        xfree(b);
    }
    if (retry) {
        marks_requeue(q, retry);
        commit_schedule(q, false);
    }
    if (log_wants_commit(q))
        commit_schedule(q, false); /* a restart waited for this sync */
    sync_start(q);
    if (q->log) {
        log_restart_maybe(q);
        spill_schedule(q);
    }
    maybe_finish_close(q);
}

/* Starts the fdatasync that covers every batch committed so far, unless one
 * runs (its end starts the next). */
static void sync_start(sq_t *q)
{
    if (q->syncing || !q->sync_head)
        return;
    q->sync_errno = 0;
    if (q->wal_fd < 0) {
        /* SQLite keeps the WAL file (same inode) while its connections are
         * open; an fsync through any descriptor of it syncs its data. */
        size_t n = strlen(q->path) + 5;
        char *wal = xmalloc(n);
        snprintf(wal, n, "%s-wal", q->path);
        q->wal_fd = open(wal, O_RDONLY | O_CLOEXEC);
        if (q->wal_fd < 0)
            q->sync_errno = errno; /* the work reports it */
        xfree(wal);
    }
    sync_batch_t *last = q->sync_head;
    while (last->next)
        last = last->next;
    q->sync_last = last;
    /* Without the log every batch wrote the table; with it, only what was
     * written since the last sync needs one. */
    q->sync_wal = !q->log || q->wal_unsynced;
    q->sync_log = q->log && q->log_unsynced;
    if (q->sync_log)
        q->log_fd = qlog_fd(q->log);
    q->wal_unsynced = q->log_unsynced = false;
    q->st.syncs += (uint64_t)q->sync_wal + q->sync_log;
    uint64_t wus = q->unsynced_write_ns / 1000;
    q->sync_write_us = wus > UINT32_MAX ? UINT32_MAX : (uint32_t)wus;
    q->unsynced_write_ns = 0;
    q->syncing = true;
    q->syncwork.data = q;
    /* Here only from commit_done and sync_done, callbacks of the loop (never
     * inside a queue call): their callbacks cannot start a commit that ends
     * at once, so no batch can join while sync_done runs from here. */
    if (q->sync_on_pool) {
        uv_queue_work(q->loop, &q->syncwork, sync_work, sync_done);
    } else {
        sync_work(&q->syncwork);
        sync_done(&q->syncwork, 0);
    }
}

/* A batch committed with queue-sync=full waits for the next sync. */
static void sync_enqueue(sq_t *q, put_req_t *puts, mark_req_t *marks, int64_t *spilled,
                         size_t nspilled)
{
    sync_batch_t *b = xmalloc(sizeof *b);
    *b = (sync_batch_t){.puts = puts, .marks = marks, .spilled = spilled, .nspilled = nspilled};
    for (const put_req_t *p = puts; p; p = p->next)
        b->nhot += p->hot;
    q->hot_unsynced += b->nhot;
    b->ends_epoch = q->batch_restart && q->batch_sql_done;
    *q->sync_tail = b;
    q->sync_tail = &b->next;
    sync_start(q);
}

static void commit_done(uv_work_t *w, int status)
{
    sq_t *q = w->data;
    put_req_t *puts = q->batch_puts;
    mark_req_t *marks = q->batch_marks;
    q->batch_puts = NULL;
    q->batch_marks = NULL;
    q->committing = false;
    q->unsynced_write_ns += q->batch_write_ns;
    bool ok = status == 0 && q->batch_rc == SQLITE_OK;
    if (q->sync_restore_failed) {
        q->sync_restore_failed = false;
        log_error("queue: synchronous=FULL not restored after a group commit: %s",
                  sqlite3_errmsg(q->db));
    }
    int64_t *spilled;
    size_t nspilled;
    log_batch_end(q, ok, marks, &spilled, &nspilled);
    if (ok && puts)
        QUEUE_CRASH_POINT("put-committed"); /* stored, the sender not yet answered */
    if (ok && marks)
        QUEUE_CRASH_POINT("marks-committed"); /* marks committed (full: not yet synced) */
    if (ok) {
        q->st.commits++;
        if (q->fail_streak && !q->sync_failed)
            log_info("queue: group commits succeed again");
        q->fail_streak = 0;
    } else {
        q->st.commit_failures++;
        q->fail_streak++;
        log_error("queue: group commit failed: %s; its puts are refused, its marks %s",
                  status ? uv_strerror(status) : q->batch_err,
                  q->closing ? "lost (closing: a restart sends those rows again)"
                             : "kept and retried");
        if (!q->closing && marks) {
            /* A mark is the only record that a row was delivered or
             * dead-lettered once the cursor passes it: put the whole batch
             * back in front of newer marks (marks are idempotent, their order
             * kept) and retry it with backoff. The deliverer waits on them
             * (queue_reader_unsynced) before its cursor passes a dead row. */
            marks_requeue(q, marks);
            marks = NULL;
        }
    }

    if (ok && (q->batch_refuse_puts || q->sync_failed))
        commit_finish(q, puts, marks, false); /* marks committed, puts refused */
    else if (ok && q->st_sync_normal) {
        sync_enqueue(q, puts, marks, spilled, nspilled);
        spilled = NULL; /* the sync's now */
    } else
        commit_finish(q, puts, marks, ok);
    xfree(spilled);

    checkpoint_maybe(q);
    if (q->log) {
        spill_waiters_go(q);
        log_restart_maybe(q);
    }
    /* Puts that arrived during this commit have already waited one commit.
     * The log's own work after a failure waits (commit_schedule's backoff):
     * a table that refuses a spill must not be retried in a loop. */
    bool log_work = log_wants_commit(q);
    if (q->puts || (q->marks && q->closing) || (log_work && ok))
        commit_start(q, true);
    else if (q->marks || log_work)
        commit_schedule(q, false);
    else
        maybe_finish_close(q);
    if (q->log)
        spill_schedule(q);
}

static void defer_stop(sq_t *q)
{
    if (!q->defer_armed)
        return;
    q->defer_armed = false;
    uv_check_stop(&q->defer_check);
    uv_idle_stop(&q->defer_idle);
}

/* may_run_here: called from a libuv callback, not from inside a queue call
 * (callbacks never run inside the call that caused them). */
static void commit_start(sq_t *q, bool may_run_here)
{
    if (q->committing || (!q->puts && !q->marks && !log_wants_commit(q)))
        return;
    defer_stop(q);
    if (q->timer_armed) {
        uv_timer_stop(&q->timer);
        q->timer_armed = false;
    }
    /* Take at most max_batch puts, but never part of a group (the batch then
     * grows by the rest of that group); all pending marks (they are small). */
    put_req_t **tail = &q->puts;
    size_t n = 0;
    while (*tail && (n < q->opts.max_batch || (*tail)->grp_cont)) {
        tail = &(*tail)->next;
        n++;
    }
    q->batch_puts = q->puts;
    q->puts = *tail;
    *tail = NULL;
    q->nputs -= n;
    if (!q->puts)
        q->puts_tail = &q->puts;
    q->batch_marks = q->marks;
    q->marks = NULL;
    q->marks_tail = &q->marks;
    q->batch_refuse_puts = q->sync_failed;
    log_plan(q);
    q->committing = true;
    q->work.data = q;
    if (may_run_here && commit_here(q, n)) {
        commit_done(&q->work, 0);
        return;
    }
    uv_queue_work(q->loop, &q->work, commit_work, commit_done);
}

static void defer_idle_cb(uv_idle_t *h)
{
    (void)h; /* only there to make the next poll return at once */
}

static void commit_defer_cb(uv_check_t *h)
{
    sq_t *q = h->data;
    if (!q->defer_turn_seen) {
        q->defer_turn_seen = true; /* the turn of the put: one more poll first */
        return;
    }
    /* Stopped here whatever commit_start finds: a commit already running
     * takes the waiting puts when it ends (commit_done). */
    defer_stop(q);
    commit_start(q, true);
}

static void commit_timer_cb(uv_timer_t *t)
{
    sq_t *q = t->data;
    q->timer_armed = false;
    commit_start(q, true);
}

/* Arms the commit timer unless a commit runs (its end starts the next one).
 * urgent: a put is waiting (its sender waits for the ACK). */
static void commit_schedule(sq_t *q, bool urgent)
{
    if (q->committing)
        return;
    if (q->nputs >= q->opts.max_batch) {
        commit_start(q, false);
        return;
    }
    uint64_t delay = q->opts.max_delay_ms;
    if (urgent && delay == 0) {
        if (!q->defer_armed) {
            q->defer_armed = true;
            q->defer_turn_seen = false;
            uv_check_start(&q->defer_check, commit_defer_cb);
            uv_idle_start(&q->defer_idle, defer_idle_cb);
        }
        return;
    }
    if (!urgent && delay < MARK_DELAY_MS)
        delay = MARK_DELAY_MS;
    if (!q->puts && delay < fail_backoff_ms(q))
        delay = fail_backoff_ms(q);
    uint64_t due = uv_now(q->loop) + delay;
    if (q->timer_armed && q->timer_due <= due)
        return;
    q->timer_armed = true;
    q->timer_due = due;
    uv_timer_start(&q->timer, commit_timer_cb, delay, 0);
}

/* ---------------------------------------------------------------- put */

/* Copies a checked item into a put request at the end of the put list. */
static put_req_t *put_append(sq_t *q, const queue_item_t *item, queue_put_cb cb, void *user)
{
    queue__texts_t t;
    put_req_t *p = queue__item_copy(item, sizeof *p, &t);
    p->t = t;
    p->cb = cb;
    p->user = user;
    p->created_ms = now_ms();
    p->dest_idx = dest_find(q, item->dest, true);

    dest_t *e = &q->dests[p->dest_idx];
    e->s.depth++;
    e->s.put++;
    q->st.depth++;
    q->st.put++;
    *q->puts_tail = p;
    q->puts_tail = &p->next;
    q->nputs++;
    return p;
}

static err_t sq_put(sq_t *q, const queue_item_t *item, queue_put_cb cb, void *user)
{
    if (q->closing)
        return ERR_CLOSED;
    err_t e = queue__item_check(item, q->opts.max_payload);
    if (e)
        return e;
    if (q->st.depth >= q->opts.max_queued)
        return ERR_BUSY;
    put_append(q, item, cb, user);
    commit_schedule(q, true);
    return ERR_OK;
}

static err_t sq_put_many(sq_t *q, const queue_item_t *items, size_t n, queue_put_many_cb cb,
                     void *user, size_t *refused)
{
    if (q->closing) {
        if (refused)
            *refused = 0;
        return ERR_CLOSED;
    }
    /* Every item is checked before any is taken: a refusal stores none. */
    err_t e = queue__items_check(items, n, q->opts.max_payload, refused);
    if (e)
        return e;
    if (q->st.depth >= q->opts.max_queued)
        return ERR_BUSY;
    put_group_t *g = xmalloc(sizeof *g + n * sizeof g->ids[0]);
    g->cb = cb;
    g->user = user;
    g->n = n;
    g->ndone = 0;
    for (size_t i = 0; i < n; i++) {
        put_req_t *p = put_append(q, &items[i], NULL, NULL);
        p->grp = g;
        p->grp_cont = i > 0;
    }
    commit_schedule(q, true);
    return ERR_OK;
}

/* ---------------------------------------------------------------- dead rows */

static err_t sq_dead_review(sq_t *q, const char *dest, queue_dead_fn fate, void *user,
                        size_t *requeued, size_t *filed, err_detail_t *d)
{
    if (requeued)
        *requeued = 0;
    if (filed)
        *filed = 0;
    if (q->closing)
        return err_set(d, ERR_CLOSED, 0, "queue is closing");
    if (!queue__valid_dest(dest))
        return err_set(d, ERR_BAD_VALUE, 0, "invalid destination name");
    if (q->committing)
        return err_set(d, ERR_BUSY, 0, "a commit is running");
    sqlite3 *db = q->db;
    sqlite3_stmt *sel = NULL, *ins = NULL, *del = NULL, *upd = NULL;
    int64_t *ids = NULL;
    unsigned char *fates = NULL;
    size_t n = 0, cap = 0, nreq = 0, nfiled = 0;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT id, dest, control_id, content_type, payload, findings,"
                                " attempts, created_ms, rejects FROM msgs"
                                /* ST_DEAD; "state<>0" lets SQLite use msgs_held */
                                " WHERE dest=?1 AND state=3 AND state<>0 ORDER BY id",
                                -1, &sel, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(sel, 1, dest, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
            char why[96];
            queue_row_t *row = queue__row_decode(sel, q->opts.max_payload, why, sizeof why);
            if (!row)
                continue; /* unreadable: it stays as it is */
            queue_dead_fate_t f = fate(row, user);
            if (f != QUEUE_DEAD_KEEP) {
                if (n == cap) {
                    cap = cap ? cap * 2 : 16;
                    ids = xrealloc(ids, cap * sizeof *ids);
                    fates = xrealloc(fates, cap);
                }
                ids[n] = row->id;
                fates[n++] = (unsigned char)f;
            }
            queue_row_free(row);
        }
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(sel);
    if (rc == SQLITE_OK && n)
        rc = exec(db, "BEGIN IMMEDIATE");
    if (rc == SQLITE_OK && n)
        rc = sqlite3_prepare_v2(db,
                                "INSERT INTO msgs(id, dest, control_id, content_type, payload,"
                                " findings, created_ms, updated_ms, last_error) SELECT ?3, dest,"
                                " control_id, content_type, payload, findings, created_ms, ?2,"
                                " 'requeued dead row ' || id FROM msgs WHERE id=?1",
                                -1, &ins, NULL);
    if (rc == SQLITE_OK && n)
        rc = sqlite3_prepare_v2(db, "DELETE FROM msgs WHERE id=?1", -1, &del, NULL);
    if (rc == SQLITE_OK && n)
        rc = sqlite3_prepare_v2(db, "UPDATE msgs SET state=?2 WHERE id=?1", -1, &upd, NULL);
    int64_t first = 0, last = 0, now = now_ms(), ids_below = q->ids_below;
    for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
        if (fates[i] == QUEUE_DEAD_FILED) {
            sqlite3_bind_int64(upd, 1, ids[i]);
            sqlite3_bind_int(upd, 2, ST_DEAD_LETTERED);
            rc = sqlite3_step(upd);
            sqlite3_reset(upd);
            nfiled++;
        } else {
            /* A new id puts it behind every pending row: the delivery
             * cursor (out.h) is past its old one and would skip it. */
            int64_t id;
            if ((rc = id_next(q, &id)) != SQLITE_OK)
                break;
            sqlite3_bind_int64(ins, 1, ids[i]);
            sqlite3_bind_int64(ins, 2, now);
            sqlite3_bind_int64(ins, 3, id);
            rc = sqlite3_step(ins);
            sqlite3_reset(ins);
            if (rc == SQLITE_DONE) {
                last = id;
                if (!first)
                    first = last;
                sqlite3_bind_int64(del, 1, ids[i]);
                rc = sqlite3_step(del);
                sqlite3_reset(del);
            }
            nreq++;
        }
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(ins);
    sqlite3_finalize(del);
    sqlite3_finalize(upd);
    if (rc == SQLITE_OK && n)
        rc = exec(db, "COMMIT");
    xfree(ids);
    xfree(fates);
    if (rc != SQLITE_OK) {
        err_t e = sql_err(db, rc, d, "review dead rows");
        if (!sqlite3_get_autocommit(db))
            exec(db, "ROLLBACK");
        q->ids_below = ids_below;
        return e;
    }
    if (nreq) {
        dest_t *e = &q->dests[dest_find(q, dest, true)];
        e->s.depth += nreq;
        q->st.depth += nreq;
        if (last > e->last_id)
            e->last_id = last;
        if (last > q->max_id)
            q->max_id = last;
        fresh_drop(q); /* these rows are read from the file */
        log_warn("queue: %zu dead messages of %s that no dead-letter file holds (left so by an "
                 "older version, e.g. on a full disk) are pending again, in their order, as "
                 "rows %" PRId64 "-%" PRId64,
                 nreq, dest, first, last);
    }
    if (nfiled)
        log_info("queue: %zu dead messages of %s have their dead-letter file: marked "
                 "dead-lettered",
                 nfiled, dest);
    if (requeued)
        *requeued = nreq;
    if (filed)
        *filed = nfiled;
    return ERR_OK;
}

/* ---------------------------------------------------------------- stats */

static void sq_stats(const sq_t *q, queue_stats_t *st)
{
    *st = q->st;
    st->ndest = 0;
    for (size_t i = 0; i < q->ndests && st->ndest < QUEUE_STATS_DESTS; i++)
        st->dest[st->ndest++] = q->dests[i].s;
}

static const char *sq_path(const sq_t *q)
{
    return q->path;
}

static int64_t sq_max_id(const sq_t *q)
{
    return q->max_id;
}

#ifdef SPINEGATE_CRASH_POINTS
#include <signal.h>
#include <stdatomic.h>

void queue__crash_point(const char *name)
{
    static atomic_uint hits;
    const char *at = getenv("SPINEGATE_TEST_CRASH_AT");
    size_t n = strlen(name);
    if (!at || strncmp(at, name, n) != 0 || (at[n] != 0 && at[n] != ':'))
        return;
    unsigned want = at[n] == ':' ? (unsigned)strtoul(at + n + 1, NULL, 10) : 1;
    if (atomic_fetch_add(&hits, 1) + 1 != want)
        return;
    /* write(2), not the logger: nothing buffered may be lost or flushed late. */
    char line[160];
    int len = snprintf(line, sizeof line, "crash point %s (hit %u): SIGKILL\n", name, want);
    if (len > 0 && write(STDERR_FILENO, line, (size_t)len) < 0)
        line[0] = 0;
    raise(SIGKILL);
}
#endif

static int64_t sq_instance(const sq_t *q)
{
    return q->instance;
}

static uint64_t sq_depth(const sq_t *q, const char *dest)
{
    for (size_t i = 0; i < q->ndests; i++)
        if (strcmp(q->dests[i].s.name, dest) == 0)
            return q->dests[i].s.depth;
    return 0;
}

/* ---------------------------------------------------------------- close */

/* q holds the handles: it is freed once the last of them has left libuv's
 * closing list. */
static void handle_closed_cb(uv_handle_t *h)
{
    sq_t *q = h->data;
    if (--q->handles_closing)
        return;
    queue_close_cb cb = q->close_cb;
    void *user = q->close_user;
    log_info("queue: closed %s (%" PRIu64 " pending)", q->path, q->st.depth);
    free_handles(q);
    if (cb)
        cb(user);
}

static void maybe_finish_close(sq_t *q)
{
    if (!q->closing || q->closed || q->committing || q->checkpointing || q->syncing ||
        q->sync_head || q->nreaders)
        return;
    if (q->puts || q->marks || log_wants_commit(q)) {
        commit_start(q, false);
        return;
    }
    if (q->log_epoch_done)
        log_restart_maybe(q); /* idle: nothing can write to the log meanwhile */
    /* Nothing runs: the next start goes on from the last id used rather
     * than from the end of the reserved block. If this write fails, it
     * starts past the block, as after a crash. */
    if (!q->sync_failed && q->ids_below > q->next_id + 1) {
        sqlite3_bind_int64(q->st_ids_below, 1, q->next_id + 1);
        if (step_done(q->st_ids_below) == SQLITE_OK)
            q->ids_below = q->next_id + 1;
    }
    q->closed = true;
    uv_handle_t *handles[] = {(uv_handle_t *)&q->inbox_timer, (uv_handle_t *)&q->fresh_timer,
                              (uv_handle_t *)&q->defer_check, (uv_handle_t *)&q->defer_idle,
                              (uv_handle_t *)&q->timer};
    q->handles_closing = sizeof handles / sizeof handles[0];
    for (size_t i = 0; i < q->handles_closing; i++)
        uv_close(handles[i], handle_closed_cb);
}

static void sq_close(sq_t *q, queue_close_cb cb, void *user)
{
    if (!q) {
        if (cb)
            cb(user);
        return;
    }
    if (q->closing)
        return;
    q->closing = true;
    q->close_cb = cb;
    q->close_user = user;
    maybe_finish_close(q);
}

/* ---------------------------------------------------------------- readers */

static err_t sq_reader_open(sq_t *q, const char *dest, queue_ready_cb ready_cb, void *user,
                        sqr_t **out, err_detail_t *d)
{
    *out = NULL;
    if (q->closing)
        return err_set(d, ERR_CLOSED, 0, "queue is closing");
    if (!queue__valid_dest(dest))
        return err_set(d, ERR_BAD_VALUE, 0, "invalid destination name");
    size_t idx = dest_find(q, dest, true);
    /* A reader still closing (its fetch running) may be replaced. */
    if (q->dests[idx].reader && !q->dests[idx].reader->closing)
        return err_set(d, ERR_BUSY, 0, "destination %s already has a reader", dest);
    sqr_t *r = xcalloc(1, sizeof *r);
    r->q = q;
    r->base.q = &q->base;
    r->dest_idx = idx;
    snprintf(r->dest, sizeof r->dest, "%s", dest);
    r->ready_cb = ready_cb;
    r->user = user;
    int rc = sqlite3_open_v2(q->path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        harden(r->db);
        sqlite3_busy_timeout(r->db, 5000);
        rc = sqlite3_prepare_v3(r->db,
                                "SELECT id, dest, control_id, content_type, payload, findings,"
                                " attempts, created_ms, rejects FROM msgs"
                                " WHERE dest=?1 AND state=0 AND id>?2 ORDER BY id LIMIT ?3",
                                -1, SQLITE_PREPARE_PERSISTENT, &r->st_fetch, NULL);
    }
    if (rc != SQLITE_OK) {
        err_t e = sql_err(r->db, rc, d, "open queue reader");
        sqlite3_close_v2(r->db);
        xfree(r);
        return e;
    }
    /* Rows of commits still running get higher ids: commit_done keeps them. */
    r->fresh_from = q->max_id;
    q->dests[idx].reader = r;
    q->nreaders++;
    *out = r;
    return ERR_OK;
}

#define QCOLS 9 /* columns of a fetch, see queue_int.h */

queue_row_t *queue__row_decode(sqlite3_stmt *st, size_t max_payload, char *why, size_t whylen)
{
    /* Columns: id, dest, control_id, content_type, payload, findings, attempts,
     * created_ms, rejects. Every type and length is checked: the file may be
     * damaged. */
    static const int want[QCOLS] = {SQLITE_INTEGER, SQLITE_TEXT,    SQLITE_TEXT,
                                    SQLITE_TEXT,    SQLITE_BLOB,    SQLITE_TEXT,
                                    SQLITE_INTEGER, SQLITE_INTEGER, SQLITE_INTEGER};
    static const size_t maxlen[QCOLS] = {
        0, QUEUE_DEST_MAX, QUEUE_CONTROL_ID_MAX, QUEUE_CTYPE_MAX, 0, QUEUE_FINDINGS_MAX, 0, 0, 0};
    if (sqlite3_column_count(st) != QCOLS) {
        snprintf(why, whylen, "wrong column count");
        return NULL;
    }
    size_t len[QCOLS] = {0};
    for (int i = 0; i < QCOLS; i++) {
        int t = sqlite3_column_type(st, i);
        if (i == 5 && t == SQLITE_NULL)
            continue;
        if (i == 4 && t == SQLITE_TEXT) /* an older writer or a hand edit: bytes all the same */
            t = SQLITE_BLOB;
        if (t != want[i]) {
            snprintf(why, whylen, "column %d has type %d", i, sqlite3_column_type(st, i));
            return NULL;
        }
        if (want[i] == SQLITE_TEXT || want[i] == SQLITE_BLOB) {
            const void *p = want[i] == SQLITE_TEXT ? (const void *)sqlite3_column_text(st, i)
                                                   : sqlite3_column_blob(st, i);
            int n = sqlite3_column_bytes(st, i);
            if (n < 0 || (!p && n > 0)) {
                snprintf(why, whylen, "column %d unreadable", i);
                return NULL;
            }
            len[i] = (size_t)n;
            if (want[i] == SQLITE_TEXT && memchr(p, 0, len[i])) {
                snprintf(why, whylen, "column %d holds a NUL byte", i);
                return NULL;
            }
            if ((maxlen[i] && len[i] > maxlen[i]) || (i == 4 && len[i] > max_payload)) {
                snprintf(why, whylen, "column %d too long (%zu bytes)", i, len[i]);
                return NULL;
            }
        }
    }
    int64_t id = sqlite3_column_int64(st, 0), attempts = sqlite3_column_int64(st, 6),
            rejects = sqlite3_column_int64(st, 8);
    const char *dest = (const char *)sqlite3_column_text(st, 1);
    if (id <= 0 || attempts < 0 || attempts > 1000000 || rejects < 0 || rejects > 1000000 ||
        len[4] == 0 || len[3] == 0 || !queue__valid_dest(dest)) {
        snprintf(why, whylen, "bad id, attempts, destination, content type or empty payload");
        return NULL;
    }
    bool has_f = sqlite3_column_type(st, 5) != SQLITE_NULL;
    size_t total =
        sizeof(queue_row_t) + len[1] + len[2] + len[3] + (has_f ? len[5] + 1 : 0) + len[4] + 4;
    queue_row_t *row = xmalloc(total);
    char *s = (char *)(row + 1);
    row->id = id;
    row->attempts = (unsigned)attempts;
    row->rejects = (unsigned)rejects;
    row->created_ms = sqlite3_column_int64(st, 7);
    const char **dst[4] = {&row->dest, &row->control_id, &row->content_type, &row->findings};
    static const int col[4] = {1, 2, 3, 5};
    for (int k = 0; k < 4; k++) {
        if (k == 3 && !has_f) {
            row->findings = NULL;
            continue;
        }
        size_t n = len[col[k]];
        if (n)
            memcpy(s, sqlite3_column_text(st, col[k]), n);
        s[n] = 0;
        *dst[k] = s;
        s += n + 1;
    }
    memcpy(s, sqlite3_column_blob(st, 4), len[4]);
    s[len[4]] = 0;
    row->payload = (const unsigned char *)s;
    row->payload_len = len[4];
    return row;
}


static void fetch_work(uv_work_t *w)
{
    sqr_t *r = w->data;
    sqlite3_stmt *st = r->st_fetch;
    r->rows = xcalloc(r->max, sizeof *r->rows);
    r->bad_ids = NULL;
    r->nrows = r->nbad = 0;
    r->new_cursor = r->cursor;
    sqlite3_bind_text(st, 1, r->dest, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, r->cursor);
    sqlite3_bind_int64(st, 3, (int64_t)r->max);
    int rc;
    size_t seen = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        seen++;
        int64_t id = sqlite3_column_int64(st, 0);
        char why[96];
        queue_row_t *row = queue__row_decode(st, r->q->opts.max_payload, why, sizeof why);
        if (id > r->new_cursor)
            r->new_cursor = id;
        if (row) {
            r->rows[r->nrows++] = row;
        } else if (id > 0) {
            r->bad_ids = xrealloc(r->bad_ids, (r->nbad + 1) * sizeof *r->bad_ids);
            r->bad_ids[r->nbad++] = id;
            snprintf(r->err, sizeof r->err, "%s", why);
        }
    }
    r->rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    if (r->rc != SQLITE_OK)
        snprintf(r->err, sizeof r->err, "fetch: %s (sqlite %d)", sqlite3_errmsg(r->db), rc);
    else if (seen < r->max && r->start_last_id > r->new_cursor)
        r->new_cursor = r->start_last_id; /* everything committed before the fetch was seen */
    sqlite3_reset(st);
    /* End the read transaction so checkpoints can reset the WAL. */
    sqlite3_clear_bindings(st);
}

static void reader_free(sqr_t *r)
{
    sq_t *q = r->q;
    sqlite3_finalize(r->st_fetch);
    sqlite3_close_v2(r->db);
    fresh_clear(r);
    xfree(r->fresh);
    if (q->dests[r->dest_idx].reader == r)
        q->dests[r->dest_idx].reader = NULL;
    q->nreaders--;
    xfree(r);
    maybe_finish_close(q);
}

static void mark_add(sq_t *q, size_t dest_idx, int64_t id, mark_kind_t kind, unsigned attempts,
                     unsigned rejects, const char *reason)
{
    mark_req_t *m = xmalloc(sizeof *m);
    m->next = NULL;
    m->id = id;
    m->dest_idx = dest_idx;
    q->dests[dest_idx].unsynced++;
    m->kind = kind;
    m->attempts = attempts;
    m->rejects = rejects;
    m->logged = false;
    m->hot = NULL;
    str_copy(m->reason, sizeof m->reason, reason ? reason : "");
    *q->marks_tail = m;
    q->marks_tail = &m->next;
    commit_schedule(q, false);
}

static void fetch_done(uv_work_t *w, int status)
{
    sqr_t *r = w->data;
    sq_t *q = r->q;
    r->fetching = false;
    dest_t *e = &q->dests[r->dest_idx];
    if (status == 0 && r->rc == SQLITE_OK)
        r->cursor = r->new_cursor;
    for (size_t i = 0; i < r->nbad; i++) {
        log_error("queue: %s row %lld is unreadable (%s): marked dead", e->s.name,
                  (long long)r->bad_ids[i], r->err);
        mark_add(q, r->dest_idx, r->bad_ids[i], MARK_DEAD, 0, 0, "unreadable row");
        q->st.corrupt++;
        q->st.dead++;
        e->s.dead++;
        if (e->s.depth) {
            e->s.depth--;
            q->st.depth--;
        }
    }
    xfree(r->bad_ids);
    r->bad_ids = NULL;
    queue_row_t **rows = r->rows;
    size_t n = r->nrows;
    r->rows = NULL;
    if (r->closing) {
        for (size_t i = 0; i < n; i++)
            queue_row_free(rows[i]);
        xfree(rows);
        reader_free(r);
        return;
    }
    if (status != 0 || r->rc != SQLITE_OK) {
        log_error("queue: %s: %s", e->s.name, status ? uv_strerror(status) : r->err);
        for (size_t i = 0; i < n; i++)
            queue_row_free(rows[i]);
        n = 0;
        r->fetch_cb(&r->base, ERR_QUEUE, rows, 0, r->user);
    } else {
        r->fetch_cb(&r->base, ERR_OK, rows, n, r->user);
    }
    xfree(rows);
}

/* A fetch served from the rows kept in memory: everything pending after
 * the cursor is there. Its callback runs from fresh_timer, as a fetch from
 * the file would from its after-work callback: never inside the call. */
static void fetch_done(uv_work_t *w, int status);

static void fresh_timer_cb(uv_timer_t *t)
{
    sq_t *q = t->data;
    /* q->dests may move in a callback: indexed, not a pointer. A fetch
     * started by a callback starts the timer again. */
    for (size_t i = 0; i < q->ndests; i++) {
        sqr_t *r = q->dests[i].reader;
        if (r && r->fresh_ready) {
            r->fresh_ready = false;
            fetch_done(&r->work, 0);
        }
    }
}

static void fetch_fresh(sqr_t *r)
{
    sq_t *q = r->q;
    r->rows = xcalloc(r->max, sizeof *r->rows);
    r->bad_ids = NULL;
    r->nrows = r->nbad = 0;
    r->rc = SQLITE_OK;
    r->new_cursor = r->cursor;
    while (r->fresh_n && r->nrows < r->max) {
        queue_row_t *row = r->fresh[r->fresh_head];
        r->fresh_head = (r->fresh_head + 1) % FRESH_MAX;
        r->fresh_n--;
        if (row->id <= r->new_cursor) { /* read from the file already */
            queue_row_free(row);
            continue;
        }
        r->rows[r->nrows++] = row;
        r->new_cursor = row->id;
    }
    if (!r->fresh_n && r->start_last_id > r->new_cursor)
        r->new_cursor = r->start_last_id; /* nothing else is pending up to there */
    r->fresh_ready = true;
    if (!uv_is_active((uv_handle_t *)&q->fresh_timer))
        uv_timer_start(&q->fresh_timer, fresh_timer_cb, 0, 0);
}

static err_t sq_reader_fetch(sqr_t *r, size_t max, queue_fetch_cb cb)
{
    if (r->closing)
        return ERR_CLOSED;
    if (r->fetching)
        return ERR_BUSY;
    r->fetching = true;
    r->fetch_cb = cb;
    r->max = max ? max : 1;
    r->start_last_id = r->q->dests[r->dest_idx].last_id;
    r->work.data = r;
    if (r->cursor >= r->fresh_from) {
        fetch_fresh(r);
        return ERR_OK;
    }
    if (r->q->log && hot_above(r->q, r->dest_idx, r->cursor)) {
        /* The file lacks messages of this destination above the cursor:
         * they go into the table first (spill_waiters_go starts the read). */
        r->spill_wait = true;
        commit_schedule(r->q, true);
        return ERR_OK;
    }
    uv_queue_work(r->q->loop, &r->work, fetch_work, fetch_done);
    return ERR_OK;
}

static bool sq_reader_has_more(const sqr_t *r)
{
    return r->cursor < r->q->dests[r->dest_idx].last_id;
}

static size_t sq_reader_unsynced(const sqr_t *r)
{
    return r->q->dests[r->dest_idx].unsynced;
}

static void sq_reader_flush(sqr_t *r)
{
    if (r->q->dests[r->dest_idx].unsynced && !r->q->closed)
        commit_schedule(r->q, true);
}

static void sq_reader_close(sqr_t *r)
{
    if (!r || r->closing)
        return;
    r->closing = true;
    if (r->spill_wait) {
        r->spill_wait = false; /* its read never started: nothing to wait for */
        r->fetching = false;
    }
    if (!r->fetching)
        reader_free(r);
}

static err_t mark_check(sqr_t *r, int64_t id)
{
    if (id <= 0)
        return ERR_BAD_VALUE;
    if (r->q->closed)
        return ERR_CLOSED;
    return ERR_OK;
}

static void depth_down(sq_t *q, dest_t *e)
{
    if (e->s.depth)
        e->s.depth--;
    if (q->st.depth)
        q->st.depth--;
}

static err_t sq_mark_delivered(sqr_t *r, int64_t id)
{
    err_t e = mark_check(r, id);
    if (e)
        return e;
    dest_t *de = &r->q->dests[r->dest_idx];
    de->s.delivered++;
    r->q->st.delivered++;
    depth_down(r->q, de);
    mark_add(r->q, r->dest_idx, id, MARK_DELIVERED, 0, 0, NULL);
    return ERR_OK;
}

/* A row leaves the pending set as dead: kind says whether a dead-letter
 * file also holds it (only those rows may be pruned). */
static err_t mark_dead_as(sqr_t *r, int64_t id, unsigned attempts, const char *reason,
                          mark_kind_t kind)
{
    err_t e = mark_check(r, id);
    if (e)
        return e;
    dest_t *de = &r->q->dests[r->dest_idx];
    de->s.dead++;
    r->q->st.dead++;
    depth_down(r->q, de);
    mark_add(r->q, r->dest_idx, id, kind, attempts, 0, reason);
    return ERR_OK;
}

static err_t sq_mark_dead(sqr_t *r, int64_t id, unsigned attempts, const char *reason)
{
    return mark_dead_as(r, id, attempts, reason, MARK_DEAD);
}

static err_t sq_mark_dead_lettered(sqr_t *r, int64_t id, unsigned attempts, const char *reason)
{
    return mark_dead_as(r, id, attempts, reason, MARK_DEAD_LETTERED);
}

static err_t sq_mark_attempt(sqr_t *r, int64_t id, unsigned attempts, unsigned rejects,
                         const char *reason)
{
    err_t e = mark_check(r, id);
    if (e)
        return e;
    r->q->dests[r->dest_idx].s.retries++;
    r->q->st.retries++;
    mark_add(r->q, r->dest_idx, id, MARK_ATTEMPT, attempts, rejects, reason);
    return ERR_OK;
}

/* ---------------------------------------------------------------- dispatch */

/* queue_t and queue_reader_t are the first members of sq_t and sqr_t. */
static sq_t *SQ(queue_t *q) { return (sq_t *)q; }
static const sq_t *CSQ(const queue_t *q) { return (const sq_t *)q; }
static sqr_t *SQR(queue_reader_t *r) { return (sqr_t *)r; }
static const sqr_t *CSQR(const queue_reader_t *r) { return (const sqr_t *)r; }

sqlite3 *queue__db(queue_t *q)
{
    return SQ(q)->db;
}

bool queue__log_direct(queue_t *q)
{
    return SQ(q)->log && qlog_is_direct(SQ(q)->log);
}

static err_t op_put(queue_t *q, const queue_item_t *item, queue_put_cb cb, void *user)
{
    return sq_put(SQ(q), item, cb, user);
}

static err_t op_put_many(queue_t *q, const queue_item_t *items, size_t n, queue_put_many_cb cb,
                         void *user, size_t *refused)
{
    return sq_put_many(SQ(q), items, n, cb, user, refused);
}

static void op_stats(const queue_t *q, queue_stats_t *st)
{
    sq_stats(CSQ(q), st);
}

static uint64_t op_depth(const queue_t *q, const char *dest)
{
    return sq_depth(CSQ(q), dest);
}

static const char *op_path(const queue_t *q)
{
    return sq_path(CSQ(q));
}

static int64_t op_max_id(const queue_t *q)
{
    return sq_max_id(CSQ(q));
}

static int64_t op_instance(const queue_t *q)
{
    return sq_instance(CSQ(q));
}

static void op_close(queue_t *q, queue_close_cb cb, void *user)
{
    sq_close(SQ(q), cb, user);
}

static void op_inbox_poke(queue_t *q)
{
    sq_inbox_poke(SQ(q));
}

static err_t op_dead_review(queue_t *q, const char *dest, queue_dead_fn fate, void *user,
                            size_t *requeued, size_t *filed, err_detail_t *d)
{
    return sq_dead_review(SQ(q), dest, fate, user, requeued, filed, d);
}

static err_t op_reader_open(queue_t *q, const char *dest, queue_ready_cb ready_cb, void *user,
                            queue_reader_t **out, err_detail_t *d)
{
    sqr_t *r = NULL;
    err_t e = sq_reader_open(SQ(q), dest, ready_cb, user, &r, d);
    *out = r ? &r->base : NULL;
    return e;
}

static err_t op_reader_fetch(queue_reader_t *r, size_t max, queue_fetch_cb cb)
{
    return sq_reader_fetch(SQR(r), max, cb);
}

static bool op_reader_has_more(const queue_reader_t *r)
{
    return sq_reader_has_more(CSQR(r));
}

static size_t op_reader_unsynced(const queue_reader_t *r)
{
    return sq_reader_unsynced(CSQR(r));
}

static void op_reader_flush(queue_reader_t *r)
{
    sq_reader_flush(SQR(r));
}

static void op_reader_close(queue_reader_t *r)
{
    sq_reader_close(SQR(r));
}

/* One process holds the file (its lock file): the lease never changes. */
static uint64_t op_reader_lease(const queue_reader_t *r)
{
    (void)r;
    return 1;
}

static err_t op_mark(queue_reader_t *rb, queue__mark_t kind, int64_t id, unsigned attempts,
                     unsigned rejects, const char *reason)
{
    sqr_t *r = SQR(rb);
    switch (kind) {
    case QUEUE__MARK_DELIVERED:
        return sq_mark_delivered(r, id);
    case QUEUE__MARK_DEAD:
        return sq_mark_dead(r, id, attempts, reason);
    case QUEUE__MARK_DEAD_LETTERED:
        return sq_mark_dead_lettered(r, id, attempts, reason);
    case QUEUE__MARK_ATTEMPT:
        break;
    }
    return sq_mark_attempt(r, id, attempts, rejects, reason);
}

static const queue__ops_t sqlite_ops = {
    .put = op_put,
    .put_many = op_put_many,
    .stats = op_stats,
    .depth = op_depth,
    .path = op_path,
    .max_id = op_max_id,
    .instance = op_instance,
    .close = op_close,
    .dead_review = op_dead_review,
    .inbox_poke = op_inbox_poke,
    .reader_open = op_reader_open,
    .reader_fetch = op_reader_fetch,
    .reader_has_more = op_reader_has_more,
    .reader_unsynced = op_reader_unsynced,
    .reader_flush = op_reader_flush,
    .reader_close = op_reader_close,
    .reader_lease = op_reader_lease,
    .mark = op_mark,
};

err_t queue__sqlite_open(uv_loop_t *loop, const char *path, const queue_opts_t *opts,
                         queue_t **out, err_detail_t *d)
{
    sq_t *q = NULL;
    err_t e = sq_open(loop, path, opts, &q, d);
    if (q)
        q->base.ops = &sqlite_ops;
    *out = q ? &q->base : NULL;
    return e;
}
