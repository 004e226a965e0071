/* queue_pg.c - the durable queue on PostgreSQL, shared by several instances.
 *
 * Every connection is driven by libpq's asynchronous API on the libuv loop:
 * PQconnectStartParams/PQconnectPoll to connect, pipeline mode to send a
 * whole transaction at once (BEGIN, the statements, COMMIT, then a sync),
 * PQconsumeInput/PQisBusy/PQgetResult to read the answers when the socket,
 * polled by a uv_poll_t, is readable. No thread and no blocking call runs on
 * the loop, except in queue_open(), which connects once, blocking, to create
 * or migrate the schema and to count what is pending (a start-up step, like
 * the SQLite backend's). (libpq resolves host names with a blocking
 * getaddrinfo while it connects: give queue-url addresses, or names the
 * local resolver answers at once, /etc/hosts.)
 *
 * PG_WRITERS write connections take the puts: those gathered during a loop
 * turn (or max_delay_ms) go into one transaction on an idle one, and their
 * callbacks run once its COMMIT has answered (ERR_OK) or failed (ERR_QUEUE:
 * a lost connection, an error, no answer within PG_BATCH_TIMEOUT_MS). More
 * than one, because a COMMIT waits for the WAL flush, and with a synchronous
 * standby for the standby's too: meanwhile the next transaction is written
 * on the other connection instead of waiting. Puts with the same order key
 * (one sender's connection) are never in two running transactions, so they
 * commit in put order (see batch_take). A put made while no write connection
 * is up is refused at once, so a sender is not kept waiting.
 * Each reader has a connection of its own, for its lease, fetches and marks
 * (see pgr_t); see docs/queue-schema.md for the tables.
 *
 * Ownership: everything is owned by the pq_t and freed by queue_close(); a
 * connection's handles are freed in their close callbacks.
 */
#include <endian.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "queue_int.h"
#include "worklist.h"
#include "xmalloc.h"

#define PG_SCHEMA_VERSION 2
#define PG_BACKOFF_MIN_MS 100
#define PG_BACKOFF_MAX_MS 5000
#define PG_CONNECT_TIMEOUT_MS 10000
/* A transaction with no answer for this long is given up (its puts refused)
 * and its connection dropped: a server that stopped answering (a partition,
 * a synchronous standby gone) must not hold senders forever. */
#define PG_BATCH_TIMEOUT_MS 15000
#define PG_LEASE_RETRY_MS 1000
#define PG_POLL_MS 1000  /* readers look for rows without a NOTIFY this often */
#define PG_COUNT_MS 5000 /* the depth is counted again this often */
#define PG_NOTIFY_CHANNEL QUEUE__PG_CHANNEL
#define PG_WRITERS 4

enum { ST_PENDING = 0, ST_DEAD = 3, ST_DEAD_LETTERED = 4 }; /* as in queue_sqlite.c */

typedef struct pq pq_t;
typedef struct pgr pgr_t;
typedef struct pgc pgc_t;
typedef struct pgw pgw_t;

/* ---------------------------------------------------------------- connection */

typedef enum { PGC_DOWN, PGC_CONNECTING, PGC_SETUP, PGC_READY, PGC_CLOSED } pgc_state_t;

/* What the owner of a connection hears. */
typedef struct {
    void (*up)(pgc_t *c);                                /* connected and set up */
    void (*result)(pgc_t *c, size_t i, PGresult *res);   /* query i of the batch */
    void (*done)(pgc_t *c, bool ok);                     /* batch over (every query fine) */
    void (*down)(pgc_t *c);                              /* lost; reconnecting */
    void (*notify)(pgc_t *c, const char *payload);       /* a NOTIFY on a LISTENed channel */
} pgc_cbs_t;

/* A socket's poll handle: libpq may change sockets while it connects (one
 * per host tried), and a handle belongs to one descriptor, so each gets
 * its own, freed in its close callback. */
typedef struct {
    uv_poll_t h;
    pgc_t *c;
    int fd;
} pgpoll_t;

struct pgc {
    pq_t *q;
    const char *name; /* for log lines: "write" or the destination */
    const pgc_cbs_t *cbs;
    void *owner;
    const char *const *setup; /* statements run once connected: "name\tSQL" prepares */
    PGconn *conn;
    pgpoll_t *poll;
    int poll_events;
    uv_timer_t timer; /* backoff while down, connect and batch timeouts */
    pgc_state_t state;
    unsigned backoff_ms;
    bool was_up;    /* for logging once per change */
    bool in_batch;  /* a batch is sent and its sync not yet read */
    size_t nq, qi;  /* queries sent in the batch, index of the one being read */
    bool batch_ok;
    bool closing;
    int handles; /* open uv handles (timer + polls) */
    void (*closed)(pgc_t *c);
};

static void pgc_connect(pgc_t *c);
static void pgc_fail(pgc_t *c, const char *why);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A write connection and the transaction it runs. */
struct pgw {
    pgc_t c;
    pq_t *q;
    struct put_req *batch; /* in the running transaction */
    size_t nbatch;
    size_t batch_first;    /* the batch's query index of its BEGIN */
    bool batch_committed;  /* its COMMIT answered COMMIT */
    bool counting;         /* the running batch is the depth count */
    uint64_t *keys;        /* the batch's order keys (not 0), sorted */
    size_t nkeys, capkeys;
};

struct pq {
    struct queue base; /* first: a queue_t * is a pq_t * (queue_int.h) */
    uv_loop_t *loop;
    queue_opts_t opts;
    char *url;
    int64_t instance, max_id;
    pgw_t wr[PG_WRITERS];
    int writers_open; /* write connections not yet closed */
    uv_timer_t commit_timer, count_timer;
    bool commit_armed;

    struct put_req *puts, **puts_tail; /* waiting for the next transaction */
    size_t nputs;

    struct dest *dests;
    size_t ndests, capdests;
    queue_stats_t st;
    unsigned nreaders;
    bool closing, closed;
    int handles;
    queue_close_cb close_cb;
    void *close_user;
};

typedef struct dest {
    queue_dest_stats_t s;
    pgr_t *reader;
} dest_t;

/* The puts of one queue_put_many() go into the same transaction. */
typedef struct put_group {
    queue_put_many_cb cb;
    void *user;
    size_t n, ndone;
    bool failed;
    int64_t ids[];
} put_group_t;

typedef struct put_req {
    struct put_req *next;
    queue_put_cb cb;
    void *user;
    put_group_t *grp;
    size_t grp_idx;
    uint64_t order_key;
    int64_t id;
    int64_t created_ms;
    size_t dest_idx;
    const char *dest, *control_id, *content_type, *findings, *meta, *worklist;
    const unsigned char *payload;
    size_t payload_len;
} put_req_t;

typedef struct mark_req {
    struct mark_req *next;
    queue__mark_t kind;
    int64_t id;
    unsigned attempts, rejects;
    char reason[160];
} mark_req_t;

/* A reader: one connection per destination. It holds the destination's
 * lease (a session advisory lock) while it is the one instance delivering
 * it; without the lease it fetches nothing and tries again every
 * PG_LEASE_RETRY_MS. Its marks go into a transaction of their own on the
 * same connection, always before its next fetch, so that a fetch never
 * sees a row this reader has already finished.
 *
 * Marks are group-committed: those given while a transaction of the
 * connection runs wait for its answer and then go together, one
 * transaction for all of them (a run of delivered marks is one DELETE),
 * with the fetch the deliverer asked for meanwhile behind it in the same
 * pipeline. The deliverer goes on sending meanwhile, up to its mark window
 * (out.c): those are the rows a crash or a failover can deliver twice.
 * Marks not committed when the connection is lost are kept and sent again
 * once it is back, before anything else; until then they are not done, and
 * a new lease holder delivers those rows again.
 *
 * Which rows to fetch: the pending rows of the destination, in id order,
 * but those handed out and not yet finished (delivered or dead). There is
 * no cursor: an instance whose transaction took lower ids but committed
 * later is not skipped over, and a new lease holder starts from what the
 * database says is pending. */
struct pgr {
    struct queue_reader base; /* first, as above */
    pq_t *q;
    size_t dest_idx;
    char dest[QUEUE_DEST_MAX + 1];
    char lease_key[24]; /* pg_try_advisory_lock's bigint, as text */
    queue_ready_cb ready_cb;
    void *user;
    pgc_t c;
    uv_timer_t timer; /* lease retries and the poll for rows */
    bool lease;       /* the advisory lock is ours (this session) */
    uint64_t lease_gen;
    bool lease_asked; /* a lease query is in the running batch */
    bool freed;       /* reader_free ran */
    bool more;        /* rows may be pending that were not handed out */
    /* the fetch asked for, and the one running */
    queue_fetch_cb fetch_cb;
    size_t fetch_max;
    bool fetch_wanted, fetching;
    size_t fetch_qi; /* the fetch's query index in the running batch */
    queue_row_t **rows;
    size_t nrows;
    /* rows handed out, not yet finished: excluded from fetches */
    int64_t *handed;
    size_t nhanded, caphanded;
    /* marks given, and those in the running transaction */
    mark_req_t *marks, **marks_tail, *batch_marks;
    size_t nmarks, nbatch_marks;
    size_t marks_commit_qi; /* the COMMIT of batch_marks: its query index */
    bool marks_committed;   /* ... and it answered COMMIT */
    bool closing;
};

/* ---------------------------------------------------------------- libpq on the loop */

static void pgc_timer_closed(uv_handle_t *h)
{
    pgc_t *c = h->data;
    c->handles--;
    if (c->closing && c->handles == 0 && c->closed)
        c->closed(c);
}

static void poll_closed(uv_handle_t *h)
{
    pgpoll_t *p = (pgpoll_t *)h;
    pgc_t *c = p->c;
    xfree(p);
    c->handles--;
    if (c->closing && c->handles == 0 && c->closed)
        c->closed(c);
}

static void poll_drop(pgc_t *c)
{
    if (!c->poll)
        return;
    uv_poll_stop(&c->poll->h);
    uv_close((uv_handle_t *)&c->poll->h, poll_closed);
    c->poll = NULL;
    c->poll_events = 0;
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Watches the connection's current socket for events (0: none). */
static void poll_watch(pgc_t *c, int events)
{
    int fd = c->conn ? PQsocket(c->conn) : -1;
    if (c->poll && c->poll->fd != fd)
        poll_drop(c);
    if (fd < 0)
        return;
    if (!c->poll) {
        pgpoll_t *p = xcalloc(1, sizeof *p);
        p->c = c;
        p->fd = fd;
        if (uv_poll_init(c->q->loop, &p->h, fd) != 0) {
            xfree(p);
            pgc_fail(c, "cannot poll the socket");
            return;
        }
        c->handles++;
        c->poll = p;
        c->poll_events = -1;
    }
    if (events == c->poll_events)
        return;
    c->poll_events = events;
    if (events)
        uv_poll_start(&c->poll->h, events, on_poll);
    else
        uv_poll_stop(&c->poll->h);
}

static void timer_stop(pgc_t *c)
{
    uv_timer_stop(&c->timer);
}

static void reconnect_timer_cb(uv_timer_t *t)
{
    pgc_connect(t->data);
}

static void timeout_cb(uv_timer_t *t)
{
    pgc_t *c = t->data;
    pgc_fail(c, c->state == PGC_READY ? "no answer in time" : "connect timed out");
}

/* The connection is gone (or never came): the batch fails, the owner hears
 * it, and a new attempt follows after the backoff. */
static void pgc_fail(pgc_t *c, const char *why)
{
    if (c->state == PGC_CLOSED)
        return;
    char msg[240];
    const char *pm = c->conn ? PQerrorMessage(c->conn) : "";
    snprintf(msg, sizeof msg, "%s%s%s", why, pm && *pm ? ": " : "", pm ? pm : "");
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = 0;
    for (char *s = msg; *s; s++)
        if (*s == '\n' || *s == '\t')
            *s = ' ';
    if (c->was_up || c->backoff_ms == 0)
        log_error("queue: PostgreSQL connection (%s) %s (%s): retrying with backoff",
                  c->name, c->was_up ? "lost" : "failed", msg);
    c->was_up = false;
    poll_drop(c);
    if (c->conn)
        PQfinish(c->conn);
    c->conn = NULL;
    bool had_batch = c->in_batch;
    c->in_batch = false;
    pgc_state_t was = c->state;
    c->state = PGC_DOWN;
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : PG_BACKOFF_MIN_MS;
    if (c->backoff_ms > PG_BACKOFF_MAX_MS)
        c->backoff_ms = PG_BACKOFF_MAX_MS;
    timer_stop(c);
    if (!c->closing)
        uv_timer_start(&c->timer, reconnect_timer_cb, c->backoff_ms, 0);
    if (had_batch && was == PGC_READY)
        c->cbs->done(c, false);
    c->cbs->down(c);
}

static bool pgc_send_setup(pgc_t *c);

/* libpq prints the server's notices on stderr; a ROLLBACK with nothing to
 * roll back says so, and a failure is logged by pgc_fail anyway. */
static void notice_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static void connect_step(pgc_t *c)
{
    /* libpq may close the socket and open another here (the next host):
     * the old handle stops watching before, the current one watches after. */
    if (c->poll && c->poll_events) {
        uv_poll_stop(&c->poll->h);
        c->poll_events = 0;
    }
    PostgresPollingStatusType st = PQconnectPoll(c->conn);
    switch (st) {
    case PGRES_POLLING_READING:
        poll_watch(c, UV_READABLE);
        return;
    case PGRES_POLLING_WRITING:
        poll_watch(c, UV_WRITABLE);
        return;
    case PGRES_POLLING_OK:
        break;
    default:
        pgc_fail(c, "cannot connect");
        return;
    }
    PQsetErrorVerbosity(c->conn, PQERRORS_TERSE); /* no DETAIL lines: they may quote values */
    PQsetNoticeProcessor(c->conn, notice_quiet, NULL);
    if (PQsetnonblocking(c->conn, 1) != 0 || PQenterPipelineMode(c->conn) != 1) {
        pgc_fail(c, "cannot enter pipeline mode");
        return;
    }
    c->state = PGC_SETUP;
    if (!pgc_send_setup(c))
        pgc_fail(c, "cannot send the setup");
}

static void pgc_connect(pgc_t *c)
{
    if (c->closing)
        return;
    const char *keys[] = {"dbname", "fallback_application_name", NULL};
    const char *vals[] = {c->q->url, "spinegate", NULL};
    c->conn = PQconnectStartParams(keys, vals, 1);
    if (!c->conn || PQstatus(c->conn) == CONNECTION_BAD) {
        pgc_fail(c, "cannot start a connection");
        return;
    }
    c->state = PGC_CONNECTING;
    uv_timer_start(&c->timer, timeout_cb, PG_CONNECT_TIMEOUT_MS, 0);
    poll_watch(c, UV_WRITABLE); /* PQconnectStart's first wait is for writing */
}

/* Sends what libpq holds; watches for writability while some is left. */
static bool pgc_flush(pgc_t *c)
{
    int f = PQflush(c->conn);
    if (f < 0)
        return false;
    poll_watch(c, UV_READABLE | (f ? UV_WRITABLE : 0));
    return true;
}

static void pgc_batch_begin(pgc_t *c)
{
    c->in_batch = true;
    c->nq = c->qi = 0;
    c->batch_ok = true;
    /* A batch that failed inside its BEGIN leaves the session in the failed
     * transaction (the sync does not end an explicit one). */
    if (PQtransactionStatus(c->conn) != PQTRANS_IDLE) {
        if (PQsendQueryParams(c->conn, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0))
            c->nq++;
    }
}

static bool pgc_send(pgc_t *c, const char *stmt, int n, const char *const *vals,
                     const int *lens, const int *fmts)
{
    int ok = stmt[0] == '!' ? PQsendQueryParams(c->conn, stmt + 1, n, NULL, vals, lens, fmts, 1)
                            : PQsendQueryPrepared(c->conn, stmt, n, vals, lens, fmts, 1);
    if (ok)
        c->nq++;
    return ok != 0;
}

static bool pgc_batch_end(pgc_t *c)
{
    if (!PQpipelineSync(c->conn) || !pgc_flush(c))
        return false;
    uv_timer_start(&c->timer, timeout_cb, PG_BATCH_TIMEOUT_MS, 0);
    return true;
}

static bool pgc_send_setup(pgc_t *c)
{
    pgc_batch_begin(c);
    for (const char *const *s = c->setup; *s; s++) {
        const char *tab = strchr(*s, '\t');
        int ok;
        if (tab) {
            char name[32];
            snprintf(name, sizeof name, "%.*s", (int)(tab - *s), *s);
            ok = PQsendPrepare(c->conn, name, tab + 1, 0, NULL);
        } else {
            ok = PQsendQueryParams(c->conn, *s, 0, NULL, NULL, NULL, NULL, 0);
        }
        if (!ok)
            return false;
        c->nq++;
    }
    return pgc_batch_end(c);
}

static bool result_ok(const PGresult *res)
{
    ExecStatusType s = PQresultStatus(res);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/* Reads every answer that has arrived. */
static void pgc_read(pgc_t *c)
{
    if (!PQconsumeInput(c->conn)) {
        pgc_fail(c, "read failed");
        return;
    }
    while (c->in_batch && !PQisBusy(c->conn)) {
        PGresult *res = PQgetResult(c->conn);
        if (!res) { /* the end of one query's results */
            c->qi++;
            continue;
        }
        ExecStatusType s = PQresultStatus(res);
        if (s == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            c->in_batch = false;
            timer_stop(c);
            if (c->state == PGC_SETUP) {
                if (!c->batch_ok) {
                    pgc_fail(c, "setup failed (schema not ours?)");
                    return;
                }
                c->state = PGC_READY;
                if (!c->was_up && c->backoff_ms)
                    log_info("queue: PostgreSQL connection (%s) up again", c->name);
                c->was_up = true;
                c->backoff_ms = 0;
                c->cbs->up(c);
            } else {
                c->cbs->done(c, c->batch_ok);
            }
            if (c->state != PGC_READY || !c->conn)
                return;
            continue;
        }
        if (!result_ok(res)) {
            if (c->batch_ok && s != PGRES_PIPELINE_ABORTED) {
                const char *m = PQresultErrorMessage(res);
                int len = (int)strcspn(m, "\n"); /* terse: one line, no DETAIL */
                log_error("queue: PostgreSQL (%s): %.*s", c->name, len, m);
            }
            c->batch_ok = false;
        }
        if (c->state == PGC_READY)
            c->cbs->result(c, c->qi, res);
        PQclear(res);
    }
    if (!c->conn)
        return;
    PGnotify *nt;
    while ((nt = PQnotifies(c->conn)) != NULL) {
        if (c->state == PGC_READY && c->cbs->notify)
            c->cbs->notify(c, nt->extra);
        PQfreemem(nt);
    }
    if (c->conn && PQstatus(c->conn) == CONNECTION_BAD)
        pgc_fail(c, "connection closed");
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    pgpoll_t *p = (pgpoll_t *)h;
    pgc_t *c = p->c;
    if (c->poll != p || !c->conn)
        return;
    if (c->state == PGC_CONNECTING) {
        connect_step(c);
        return;
    }
    if (status < 0) {
        /* A socket error (libuv says EBADF for POLLERR): libpq's reading
         * of it names the cause better. */
        pgc_read(c);
        if (c->conn && c->state != PGC_DOWN)
            pgc_fail(c, uv_strerror(status));
        return;
    }
    if (events & UV_WRITABLE) {
        if (!pgc_flush(c)) {
            pgc_fail(c, "write failed");
            return;
        }
    }
    if (c->conn && (events & UV_READABLE))
        pgc_read(c);
}

static void pgc_init(pq_t *q, pgc_t *c, const char *name, const pgc_cbs_t *cbs, void *owner,
                     const char *const *setup)
{
    memset(c, 0, sizeof *c);
    c->q = q;
    c->name = name;
    c->cbs = cbs;
    c->owner = owner;
    c->setup = setup;
    uv_timer_init(q->loop, &c->timer);
    c->timer.data = c;
    c->handles = 1;
    pgc_connect(c);
}

static bool pgc_idle(const pgc_t *c)
{
    return c->state == PGC_READY && !c->in_batch;
}

/* Ends the connection (a batch still running is abandoned: callers wait for
 * it first when it matters); closed(c) runs once its handles are closed. */
static void pgc_close(pgc_t *c, void (*closed)(pgc_t *c))
{
    c->closing = true;
    c->closed = closed;
    c->state = PGC_CLOSED;
    poll_drop(c);
    if (c->conn)
        PQfinish(c->conn);
    c->conn = NULL;
    c->in_batch = false;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, pgc_timer_closed);
}

/* ---------------------------------------------------------------- helpers */

static size_t dest_find(pq_t *q, const char *name, bool create)
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

static int64_t be64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return (int64_t)be64toh(v);
}

static int32_t be32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return (int32_t)be32toh(v);
}

/* The one place a libpq failure at open becomes err_t. */
static err_t pg_err(PGconn *conn, err_detail_t *d, const char *what)
{
    char m[200];
    snprintf(m, sizeof m, "%s", conn ? PQerrorMessage(conn) : "out of memory");
    size_t n = strlen(m);
    while (n && m[n - 1] == '\n')
        m[--n] = 0;
    return err_set(d, ERR_QUEUE, 0, "%s: %s", what, m);
}

/* ---------------------------------------------------------------- open */

/* The schema, version 1. Free text a sender controls (the control id) and
 * everything derived from messages is bytea: the database's encoding must
 * not be able to refuse a row and with it a whole group commit. */
static const char *const schema_v1[] = {
    "CREATE TABLE spinegate_msgs("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " dest text NOT NULL, control_id bytea NOT NULL, content_type bytea NOT NULL,"
    " payload bytea NOT NULL, findings bytea, state smallint NOT NULL DEFAULT 0,"
    " attempts integer NOT NULL DEFAULT 0, rejects integer NOT NULL DEFAULT 0,"
    " last_error bytea, created_ms bigint NOT NULL, updated_ms bigint NOT NULL, meta bytea)",
    "CREATE INDEX spinegate_msgs_pending ON spinegate_msgs(dest, id) WHERE state = 0",
    "CREATE TABLE spinegate_worklist("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, kind text NOT NULL,"
    " state text NOT NULL DEFAULT 'open', msg_id bigint, dest text NOT NULL,"
    " control_id bytea NOT NULL, content_type bytea NOT NULL, payload bytea NOT NULL,"
    " findings bytea, meta bytea, reason bytea, received_ms bigint NOT NULL,"
    " changed_by text, changed_ms bigint, note text, link text)",
    "CREATE INDEX spinegate_worklist_received ON spinegate_worklist(received_ms)",
    "CREATE INDEX spinegate_worklist_msg ON spinegate_worklist(msg_id)",
    "CREATE TABLE spinegate_meta(k text PRIMARY KEY, v bigint NOT NULL)",
    "INSERT INTO spinegate_meta(k, v) VALUES ('instance',"
    " (random() * 9.2e18)::bigint # (extract(epoch from clock_timestamp()) * 1e6)::bigint)",
    NULL,
};

static err_t run(PGconn *conn, const char *sql, PGresult **out, err_detail_t *d,
                 const char *what)
{
    PGresult *res = PQexec(conn, sql);
    if (!res || !result_ok(res)) {
        char m[200];
        snprintf(m, sizeof m, "%s", res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        size_t n = strlen(m);
        while (n && m[n - 1] == '\n')
            m[--n] = 0;
        PQclear(res);
        return err_set(d, ERR_QUEUE, 0, "%s: %s", what, m);
    }
    if (out)
        *out = res;
    else
        PQclear(res);
    return ERR_OK;
}

/* Creates or migrates the schema in one transaction. Two instances starting
 * together take turns on a transaction advisory lock. */
static err_t open_schema(PGconn *conn, err_detail_t *d)
{
    err_t e = run(conn, "BEGIN", NULL, d, "begin");
    if (!e)
        e = run(conn, "SELECT pg_advisory_xact_lock(6003463893063430144)", NULL, d,
                "schema lock");
    if (!e)
        e = run(conn, "CREATE TABLE IF NOT EXISTS spinegate_schema(version integer NOT NULL)",
                NULL, d, "schema version table");
    PGresult *res = NULL;
    if (!e)
        e = run(conn, "SELECT max(version) FROM spinegate_schema", &res, d, "schema version");
    int version = 0;
    if (!e && !PQgetisnull(res, 0, 0))
        version = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (!e && version > PG_SCHEMA_VERSION)
        e = err_set(d, ERR_QUEUE, 0,
                    "queue schema version %d is newer than this spinegate's (%d)", version,
                    PG_SCHEMA_VERSION);
    if (!e && version < 1) {
        for (const char *const *s = schema_v1; !e && *s; s++)
            e = run(conn, *s, NULL, d, "create schema");
        if (!e)
            e = run(conn, "INSERT INTO spinegate_schema(version) VALUES (1)", NULL, d,
                    "schema version");
        if (!e)
            log_info("queue: created the PostgreSQL schema (version %d)", PG_SCHEMA_VERSION);
    }
    /* Version 2: a row is kept whole in its page up to nearly the page's
     * size. By default PostgreSQL compresses any row over 2 kB and moves
     * what still does not fit under that into the TOAST table: for the
     * few-kB messages of a queue, work at every put and again at every
     * delete, for rows that live seconds. */
    if (!e && version < 2) {
        e = run(conn, "ALTER TABLE spinegate_msgs SET (toast_tuple_target = 8160)", NULL, d,
                "migrate schema to version 2");
        if (!e)
            e = run(conn, "INSERT INTO spinegate_schema(version) VALUES (2)", NULL, d,
                    "schema version");
        if (!e && version == 1)
            log_info("queue: migrated the PostgreSQL schema to version 2");
    }
    /* (Later versions add their steps here, each raising the version.) */
    if (!e)
        e = run(conn, "COMMIT", NULL, d, "commit schema");
    if (e)
        PQclear(PQexec(conn, "ROLLBACK"));
    return e;
}

static err_t load_state(pq_t *q, PGconn *conn, err_detail_t *d)
{
    PGresult *res = NULL;
    err_t e = run(conn, "SELECT v FROM spinegate_meta WHERE k='instance'", &res, d,
                  "queue identity");
    if (e)
        return e;
    if (PQntuples(res) == 1)
        q->instance = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);

    char sql[200];
    snprintf(sql, sizeof sql,
             "DELETE FROM spinegate_msgs WHERE state=%d AND updated_ms<%" PRId64,
             ST_DEAD_LETTERED, now_ms() - (int64_t)q->opts.dead_keep_days * 86400000);
    if ((e = run(conn, sql, NULL, d, "prune dead rows")) != ERR_OK)
        return e;
    /* Open items are work not done: age never removes them. */
    snprintf(sql, sizeof sql,
             "DELETE FROM spinegate_worklist WHERE state<>'open'"
             " AND coalesce(changed_ms, received_ms)<%" PRId64,
             now_ms() - (int64_t)q->opts.worklist_keep_days * 86400000);
    if ((e = run(conn, sql, NULL, d, "prune the worklist")) != ERR_OK)
        return e;

    e = run(conn,
            "SELECT dest, count(*) FROM spinegate_msgs WHERE state=0 GROUP BY dest ORDER BY dest",
            &res, d, "count pending rows");
    if (e)
        return e;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *name = PQgetvalue(res, i, 0);
        if (!queue__valid_dest(name))
            continue;
        size_t idx = dest_find(q, name, true);
        q->dests[idx].s.depth = strtoull(PQgetvalue(res, i, 1), NULL, 10);
        q->st.depth += q->dests[idx].s.depth;
    }
    PQclear(res);
    e = run(conn, "SELECT coalesce(max(id), 0) FROM spinegate_msgs", &res, d, "highest id");
    if (e)
        return e;
    q->max_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return ERR_OK;
}

/* ---------------------------------------------------------------- puts */

static const char *const write_setup[] = {
    "put\tWITH m AS (INSERT INTO spinegate_msgs(dest, control_id, content_type, payload,"
    " findings, created_ms, updated_ms, meta) VALUES ($1, $2, $3, $4, $5, $6, $6, $7)"
    " RETURNING id),"
    " w AS (INSERT INTO spinegate_worklist(kind, msg_id, dest, control_id, content_type,"
    " payload, findings, meta, received_ms) SELECT $8::text, id, $1, $2, $3, $4, $5, $7, $6"
    " FROM m WHERE $8::text IS NOT NULL)"
    " SELECT id FROM m",
    "notify\tSELECT pg_notify('" PG_NOTIFY_CHANNEL "', $1)",
    "count\tSELECT dest, count(*) FROM spinegate_msgs WHERE state=0 GROUP BY dest",
    NULL,
};

static void commit_schedule(pq_t *q);
static void maybe_finish_close(pq_t *q);
static void reader_wake(pgr_t *r);

static void put_finish(pq_t *q, put_req_t *p, bool ok)
{
    dest_t *e = &q->dests[p->dest_idx];
    if (ok) {
        q->st.committed++;
        if (p->id > q->max_id)
            q->max_id = p->id;
    } else {
        q->st.failed++;
        if (e->s.depth)
            e->s.depth--;
        if (q->st.depth)
            q->st.depth--;
    }
    if (p->grp) {
        put_group_t *g = p->grp;
        if (ok)
            g->ids[p->grp_idx] = p->id;
        else
            g->failed = true;
        if (++g->ndone == g->n) {
            if (g->cb)
                g->cb(&q->base, g->failed ? ERR_QUEUE : ERR_OK, g->failed ? NULL : g->ids,
                      g->n, g->user);
            xfree(g);
        }
    } else if (p->cb) {
        p->cb(&q->base, ok ? ERR_OK : ERR_QUEUE, ok ? p->id : 0, p->user);
    }
}

/* Calls back a list of puts in order and frees them. */
static void puts_finish(pq_t *q, put_req_t *list, bool ok)
{
    while (list) {
        put_req_t *next = list->next;
        put_finish(q, list, ok);
        xfree(list);
        list = next;
    }
}

static void puts_refuse_waiting(pq_t *q)
{
    put_req_t *list = q->puts;
    q->puts = NULL;
    q->puts_tail = &q->puts;
    q->nputs = 0;
    puts_finish(q, list, false);
}

static bool send_put(pgc_t *c, const put_req_t *p)
{
    char created[24];
    snprintf(created, sizeof created, "%" PRId64, p->created_ms);
    const char *vals[8] = {p->dest,     p->control_id, p->content_type, (const char *)p->payload,
                           p->findings, created,       p->meta,         p->worklist};
    int lens[8] = {0,
                   (int)strlen(p->control_id),
                   (int)strlen(p->content_type),
                   (int)p->payload_len,
                   p->findings ? (int)strlen(p->findings) : 0,
                   0,
                   p->meta ? (int)strlen(p->meta) : 0,
                   0};
    int fmts[8] = {0, 1, 1, 1, 1, 0, 1, 0};
    return pgc_send(c, "put", 8, vals, lens, fmts);
}

static int key_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Whether a transaction running on a write connection other than self has
 * a put of key. */
static bool key_running(const pq_t *q, const pgw_t *self, uint64_t key)
{
    if (!key)
        return false;
    for (size_t i = 0; i < PG_WRITERS; i++) {
        const pgw_t *w = &q->wr[i];
        if (w != self && w->batch && w->nkeys &&
            bsearch(&key, w->keys, w->nkeys, sizeof key, key_cmp))
            return true;
    }
    return false;
}

/* Moves the waiting puts w may run now into w's batch: in put order, up to
 * max_batch (a queue_put_many group whole, never cut), leaving in place
 * those whose order key is in a transaction running elsewhere. Those wait
 * for it, so that one key's puts commit in put order: a transaction that
 * started later may commit earlier. Returns how many were taken. */
static size_t batch_take(pq_t *q, pgw_t *w)
{
    put_req_t *taken = NULL, **tt = &taken, *kept = NULL, **kt = &kept;
    put_req_t *p = q->puts;
    size_t n = 0;
    bool take = false;
    w->nkeys = 0;
    while (p) {
        bool in_group = p->grp && p->grp_idx > 0; /* decided with its first */
        if (!in_group && n >= q->opts.max_batch)
            break;
        if (!in_group)
            take = !key_running(q, w, p->order_key);
        put_req_t *next = p->next;
        if (take) {
            *tt = p;
            tt = &p->next;
            n++;
            if (p->order_key) {
                if (w->nkeys == w->capkeys) {
                    w->capkeys = w->capkeys ? w->capkeys * 2 : 64;
                    w->keys = xrealloc(w->keys, w->capkeys * sizeof *w->keys);
                }
                w->keys[w->nkeys++] = p->order_key;
            }
        } else {
            *kt = p;
            kt = &p->next;
        }
        p = next;
    }
    *tt = NULL;
    *kt = p;
    if (!p)
        q->puts_tail = kept ? kt : &q->puts;
    q->puts = kept;
    q->nputs -= n;
    w->batch = taken;
    w->nbatch = n;
    if (w->nkeys > 1)
        qsort(w->keys, w->nkeys, sizeof *w->keys, key_cmp);
    return n;
}

/* Starts one transaction on w with the waiting puts it may take and a
 * NOTIFY per destination in it. */
static void commit_start_on(pq_t *q, pgw_t *w)
{
    pgc_t *c = &w->c;
    if (!q->puts || !pgc_idle(c) || !batch_take(q, w))
        return;

    pgc_batch_begin(c);
    w->batch_first = c->nq; /* after a ROLLBACK of an earlier failed batch, if any */
    bool ok = pgc_send(c, "!BEGIN", 0, NULL, NULL, NULL);
    for (put_req_t *r = w->batch; ok && r; r = r->next)
        ok = send_put(c, r);
    if (ok)
        ok = pgc_send(c, "!COMMIT", 0, NULL, NULL, NULL);
    /* One NOTIFY per destination, in the same round trip but after the
     * COMMIT, in a transaction of its own: the lease holder of each, in
     * whatever instance, wakes up once the rows are there. Not inside the
     * put transaction: PostgreSQL holds one database-wide lock from a
     * notifying transaction's commit until its end, which includes the wait
     * for a synchronous standby, and that would make every instance's
     * commits queue behind each other. A notification lost with the
     * connection is made up for by the readers' poll (PG_POLL_MS). */
    for (size_t i = 0; ok && i < q->ndests; i++) {
        bool in = false;
        for (put_req_t *r = w->batch; r && !in; r = r->next)
            in = r->dest_idx == i;
        if (in) {
            const char *v[1] = {q->dests[i].s.name};
            ok = pgc_send(c, "notify", 1, v, NULL, NULL);
        }
    }
    if (!ok || !pgc_batch_end(c))
        pgc_fail(c, "cannot send the transaction");
}

/* Starts a transaction on every idle write connection that has puts to take. */
static void commit_start(pq_t *q)
{
    for (size_t i = 0; i < PG_WRITERS && q->puts; i++)
        commit_start_on(q, &q->wr[i]);
}

static bool writer_up(const pq_t *q)
{
    for (size_t i = 0; i < PG_WRITERS; i++)
        if (q->wr[i].c.state == PGC_READY)
            return true;
    return false;
}

/* Whether a write connection is still connecting, so may soon be up. */
static bool writer_connecting(const pq_t *q)
{
    for (size_t i = 0; i < PG_WRITERS; i++)
        if (q->wr[i].c.state == PGC_CONNECTING || q->wr[i].c.state == PGC_SETUP)
            return true;
    return false;
}

static void commit_timer_cb(uv_timer_t *t)
{
    pq_t *q = t->data;
    q->commit_armed = false;
    if (!writer_up(q) && !writer_connecting(q)) {
        /* Refused at once: a sender waits for no reconnection. */
        puts_refuse_waiting(q);
        maybe_finish_close(q);
        return;
    }
    commit_start(q);
}

static void commit_schedule(pq_t *q)
{
    if (q->commit_armed || !q->puts)
        return;
    q->commit_armed = true;
    uv_timer_start(&q->commit_timer, commit_timer_cb, q->opts.max_delay_ms, 0);
}

static void wr_up(pgc_t *c)
{
    pgw_t *w = c->owner;
    commit_schedule(w->q);
    maybe_finish_close(w->q); /* a close may have waited for this setup */
}

static void wr_result(pgc_t *c, size_t i, PGresult *res)
{
    pgw_t *w = c->owner;
    pq_t *q = w->q;
    if (w->counting) {
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            return;
        uint64_t total = 0;
        for (size_t k = 0; k < q->ndests; k++)
            q->dests[k].s.depth = 0;
        for (int k = 0; k < PQntuples(res); k++) {
            char name[QUEUE_DEST_MAX + 1];
            int len = PQgetlength(res, k, 0);
            if (len <= 0 || len > QUEUE_DEST_MAX || PQgetlength(res, k, 1) != 8)
                continue;
            memcpy(name, PQgetvalue(res, k, 0), (size_t)len);
            name[len] = 0;
            if (!queue__valid_dest(name))
                continue;
            size_t idx = dest_find(q, name, true);
            int64_t cnt = be64(PQgetvalue(res, k, 1));
            q->dests[idx].s.depth = cnt > 0 ? (uint64_t)cnt : 0;
            total += q->dests[idx].s.depth;
        }
        /* Puts gathered meanwhile are pending too. */
        for (put_req_t *p = q->puts; p; p = p->next) {
            q->dests[p->dest_idx].s.depth++;
            total++;
        }
        q->st.depth = total;
        return;
    }
    /* Query 0 (after a ROLLBACK, if any) is BEGIN; then one per put; then
     * COMMIT, whose answer alone says whether they are stored (the NOTIFYs
     * after it do not count). */
    if (i == w->batch_first + w->nbatch + 1) {
        w->batch_committed = PQresultStatus(res) == PGRES_COMMAND_OK &&
                             strcmp(PQcmdStatus(res), "COMMIT") == 0;
        return;
    }
    if (i < w->batch_first + 1 || i > w->batch_first + w->nbatch)
        return;
    size_t k = i - w->batch_first - 1;
    put_req_t *p = w->batch;
    while (p && k--)
        p = p->next;
    if (p && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        PQgetlength(res, 0, 0) == 8)
        p->id = be64(PQgetvalue(res, 0, 0));
}

static void wr_done(pgc_t *c, bool ok)
{
    pgw_t *w = c->owner;
    pq_t *q = w->q;
    if (w->counting) {
        w->counting = false;
    } else if (w->batch) {
        put_req_t *list = w->batch;
        w->batch = NULL;
        w->nkeys = 0;
        /* Stored when the COMMIT said so (a NOTIFY failing after it does not
         * unstore them: ok is not the judge) and every put has its id. */
        ok = w->batch_committed;
        w->batch_committed = false;
        for (put_req_t *p = list; ok && p; p = p->next)
            ok = p->id > 0;
        if (ok) {
            q->st.commits++;
        } else {
            q->st.commit_failures++;
            for (put_req_t *p = list; p; p = p->next)
                p->id = 0;
        }
        bool *woke = xcalloc(q->ndests ? q->ndests : 1, sizeof *woke);
        for (put_req_t *p = list; ok && p; p = p->next)
            woke[p->dest_idx] = true;
        puts_finish(q, list, ok);
        /* This instance's own readers need no NOTIFY round trip. */
        for (size_t i = 0; i < q->ndests; i++)
            if (woke[i] && q->dests[i].reader)
                reader_wake(q->dests[i].reader);
        xfree(woke);
    }
    /* Puts held back for a key of this batch may go now, on any connection. */
    if (writer_up(q))
        commit_schedule(q);
    maybe_finish_close(q);
}

static void wr_down(pgc_t *c)
{
    pgw_t *w = c->owner;
    pq_t *q = w->q;
    w->counting = false;
    if (w->batch) { /* pgc_fail reported it through wr_done already */
        put_req_t *list = w->batch;
        w->batch = NULL;
        w->nkeys = 0;
        puts_finish(q, list, false);
    }
    if (!writer_up(q))
        puts_refuse_waiting(q);
    else
        commit_schedule(q);
    maybe_finish_close(q);
}

static const pgc_cbs_t write_cbs = {
    .up = wr_up, .result = wr_result, .done = wr_done, .down = wr_down, .notify = NULL,
};

static void count_timer_cb(uv_timer_t *t)
{
    pq_t *q = t->data;
    pgw_t *w = &q->wr[0];
    pgc_t *c = &w->c;
    if (!pgc_idle(c) || q->puts || q->closing)
        return; /* the next tick */
    w->counting = true;
    pgc_batch_begin(c);
    if (!pgc_send(c, "count", 0, NULL, NULL, NULL) || !pgc_batch_end(c))
        pgc_fail(c, "cannot send the count");
}

static put_req_t *put_append(pq_t *q, const queue_item_t *item, queue_put_cb cb, void *user)
{
    queue__texts_t t;
    put_req_t *p = queue__item_copy(item, sizeof *p, &t);
    p->cb = cb;
    p->user = user;
    p->created_ms = now_ms();
    p->dest = t.dest;
    p->control_id = t.control_id;
    p->content_type = t.content_type;
    p->findings = t.findings;
    p->meta = t.meta;
    p->worklist = t.worklist;
    p->payload = t.payload;
    p->payload_len = t.payload_len;
    p->order_key = item->order_key;
    p->dest_idx = dest_find(q, item->dest, true);
    dest_t *e = &q->dests[p->dest_idx];
    e->s.put++;
    e->s.depth++;
    q->st.put++;
    q->st.depth++;
    *q->puts_tail = p;
    q->puts_tail = &p->next;
    q->nputs++;
    return p;
}

static err_t pq_put(queue_t *qb, const queue_item_t *item, queue_put_cb cb, void *user)
{
    pq_t *q = (pq_t *)qb;
    if (q->closing)
        return ERR_CLOSED;
    err_t e = queue__item_check(item, q->opts.max_payload);
    if (e)
        return e;
    if (q->st.depth >= q->opts.max_queued)
        return ERR_BUSY;
    put_append(q, item, cb, user);
    commit_schedule(q);
    return ERR_OK;
}

static err_t pq_put_many(queue_t *qb, const queue_item_t *items, size_t n, queue_put_many_cb cb,
                         void *user, size_t *refused)
{
    pq_t *q = (pq_t *)qb;
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
    put_group_t *g = xcalloc(1, sizeof *g + n * sizeof g->ids[0]);
    g->cb = cb;
    g->user = user;
    g->n = n;
    for (size_t i = 0; i < n; i++) {
        put_req_t *p = put_append(q, &items[i], NULL, NULL);
        p->grp = g;
        p->grp_idx = i;
    }
    commit_schedule(q);
    return ERR_OK;
}

/* ---------------------------------------------------------------- readers */

static const char *const reader_setup[] = {
    "LISTEN " PG_NOTIFY_CHANNEL,
    /* Every statement below goes by an index, whatever the table's size
     * when it was planned. The queue table is empty when they are first run,
     * and a plan cached from then is a sequential scan: kept once the table
     * holds thousands of rows and dead tuples, it made every mark read the
     * whole heap. A bitmap scan of the pending index visits the entries of
     * every row deleted since the last vacuum, at each fetch; an index scan
     * in id order marks them dead in the index as it passes. */
    "SET enable_seqscan = off",
    "SET enable_bitmapscan = off",
    "lease\tSELECT pg_try_advisory_lock($1::bigint)",
    "fetch\tSELECT id, dest, control_id, content_type, payload, findings, attempts,"
    " created_ms, rejects FROM spinegate_msgs WHERE dest=$1 AND state=0"
    " AND id <> ALL($2::bigint[]) ORDER BY id LIMIT $3",
    "delivered\tDELETE FROM spinegate_msgs WHERE id = ANY($1::bigint[])",
    "attempt\tUPDATE spinegate_msgs SET attempts=$2, last_error=$3, updated_ms=$4, rejects=$5"
    " WHERE id=$1",
    /* A dead letter is a worklist item, written with its mark (once: a mark
     * given again finds it). */
    "dead\tWITH u AS (UPDATE spinegate_msgs SET state=$5, attempts=$2, last_error=$3,"
    " updated_ms=$4 WHERE id=$1 RETURNING *)"
    " INSERT INTO spinegate_worklist(kind, msg_id, dest, control_id, content_type, payload,"
    " findings, meta, reason, received_ms) SELECT 'dead', id, dest, control_id, content_type,"
    " payload, findings, meta, $3, created_ms FROM u WHERE NOT EXISTS(SELECT 1 FROM"
    " spinegate_worklist w WHERE w.msg_id=$1 AND w.kind='dead')",
    NULL,
};

static void reader_kick(pgr_t *r);
static void mark_append(pgr_t *r, queue__mark_t kind, int64_t id, unsigned attempts,
                        unsigned rejects, const char *reason);
static void reader_free(pgr_t *r);

static void reader_wake(pgr_t *r)
{
    if (r->closing)
        return;
    r->more = true;
    if (r->lease && r->ready_cb)
        r->ready_cb(&r->base, r->user);
}

static void handed_remove(pgr_t *r, int64_t id)
{
    for (size_t i = 0; i < r->nhanded; i++)
        if (r->handed[i] == id) {
            memmove(&r->handed[i], &r->handed[i + 1], (r->nhanded - i - 1) * sizeof *r->handed);
            r->nhanded--;
            return;
        }
}

static void handed_add(pgr_t *r, int64_t id)
{
    if (r->nhanded == r->caphanded) {
        r->caphanded = r->caphanded ? r->caphanded * 2 : 64;
        r->handed = xrealloc(r->handed, r->caphanded * sizeof *r->handed);
    }
    r->handed[r->nhanded++] = id;
}

static bool send_lease(pgr_t *r)
{
    const char *v[1] = {r->lease_key};
    return pgc_send(&r->c, "lease", 1, v, NULL, NULL);
}

/* Sends a run of delivered marks, from m on, as one DELETE; *next is the
 * first mark after the run. */
static bool send_delivered_run(pgr_t *r, const mark_req_t *m, const mark_req_t **next)
{
    size_t n = 0;
    for (const mark_req_t *k = m; k && k->kind == QUEUE__MARK_DELIVERED; k = k->next)
        n++;
    size_t cap = 3 + n * 21;
    char *arr = xmalloc(cap), *s = arr;
    *s++ = '{';
    for (size_t i = 0; i < n; i++, m = m->next)
        s += snprintf(s, cap - (size_t)(s - arr), "%s%" PRId64, i ? "," : "", m->id);
    *s++ = '}';
    *s = 0;
    *next = m;
    const char *vals[1] = {arr};
    bool ok = pgc_send(&r->c, "delivered", 1, vals, NULL, NULL);
    xfree(arr);
    return ok;
}

static bool send_mark(pgr_t *r, const mark_req_t *m)
{
    char id[24], att[16], now[24], rej[16], st[8];
    snprintf(id, sizeof id, "%" PRId64, m->id);
    snprintf(att, sizeof att, "%u", m->attempts);
    snprintf(now, sizeof now, "%" PRId64, now_ms());
    snprintf(rej, sizeof rej, "%u", m->rejects);
    snprintf(st, sizeof st, "%d", m->kind == QUEUE__MARK_DEAD ? ST_DEAD : ST_DEAD_LETTERED);
    const char *vals[5] = {id, att, m->reason, now, m->kind == QUEUE__MARK_ATTEMPT ? rej : st};
    int lens[5] = {0, 0, (int)strlen(m->reason), 0, 0};
    int fmts[5] = {0, 0, 1, 0, 0};
    switch (m->kind) {
    case QUEUE__MARK_ATTEMPT:
        return pgc_send(&r->c, "attempt", 5, vals, lens, fmts);
    default:
        return pgc_send(&r->c, "dead", 5, vals, lens, fmts);
    }
}

static bool send_fetch(pgr_t *r)
{
    /* The ids handed out and not finished, as an array literal. */
    size_t cap = 3 + r->nhanded * 21;
    char *arr = xmalloc(cap), *s = arr;
    *s++ = '{';
    for (size_t i = 0; i < r->nhanded; i++)
        s += snprintf(s, cap - (size_t)(s - arr), "%s%" PRId64, i ? "," : "", r->handed[i]);
    *s++ = '}';
    *s = 0;
    char lim[24];
    snprintf(lim, sizeof lim, "%zu", r->fetch_max);
    const char *vals[3] = {r->dest, arr, lim};
    bool ok = pgc_send(&r->c, "fetch", 3, vals, NULL, NULL);
    xfree(arr);
    return ok;
}

/* Decodes one fetched row (binary columns) into one allocation, checking
 * every length: the database is input like any other. */
static queue_row_t *row_decode(const PGresult *res, int i, size_t max_payload)
{
    static const int fixed[9] = {8, -1, -1, -1, -1, -1, 4, 8, 4};
    int len[9];
    for (int k = 0; k < 9; k++) {
        len[k] = PQgetisnull(res, i, k) ? -1 : PQgetlength(res, i, k);
        if (len[k] < 0 && k != 5)
            return NULL;
        if (fixed[k] > 0 && len[k] != fixed[k])
            return NULL;
    }
    if (len[1] < 1 || len[1] > QUEUE_DEST_MAX || len[2] > QUEUE_CONTROL_ID_MAX ||
        len[3] < 1 || len[3] > QUEUE_CTYPE_MAX || len[4] < 1 || (size_t)len[4] > max_payload ||
        len[5] > QUEUE_FINDINGS_MAX)
        return NULL;
    for (int k = 1; k <= 5; k++)
        if (len[k] > 0 && k != 4 && memchr(PQgetvalue(res, i, k), 0, (size_t)len[k]))
            return NULL; /* strings come back as C strings */
    size_t total = sizeof(queue_row_t) + (size_t)len[1] + (size_t)len[2] + (size_t)len[3] +
                   (size_t)len[4] + (len[5] >= 0 ? (size_t)len[5] : 0) + 5;
    queue_row_t *row = xcalloc(1, total);
    char *s = (char *)(row + 1);
    const int strcols[4] = {1, 2, 3, 5};
    const char **dst[4] = {&row->dest, &row->control_id, &row->content_type, &row->findings};
    for (int k = 0; k < 4; k++) {
        int col = strcols[k];
        if (len[col] < 0)
            continue;
        memcpy(s, PQgetvalue(res, i, col), (size_t)len[col]);
        s[len[col]] = 0;
        *dst[k] = s;
        s += len[col] + 1;
    }
    row->id = be64(PQgetvalue(res, i, 0));
    int32_t att = be32(PQgetvalue(res, i, 6)), rej = be32(PQgetvalue(res, i, 8));
    row->attempts = att > 0 ? (unsigned)att : 0;
    row->rejects = rej > 0 ? (unsigned)rej : 0;
    row->created_ms = be64(PQgetvalue(res, i, 7));
    memcpy(s, PQgetvalue(res, i, 4), (size_t)len[4]);
    s[len[4]] = 0;
    row->payload = (const unsigned char *)s;
    row->payload_len = (size_t)len[4];
    return row;
}

static void lease_timer_cb(uv_timer_t *t)
{
    pgr_t *r = t->data;
    if (r->lease) {
        /* The poll: rows another instance committed without our NOTIFY
         * (a LISTEN made after them, a lost notification). */
        reader_wake(r);
        uv_timer_start(&r->timer, lease_timer_cb, PG_POLL_MS, 0);
        return;
    }
    reader_kick(r);
}

/* Starts the next transaction of the reader's connection. The marks given
 * go first, in a transaction of their own, and the fetch asked for (when
 * the lease is ours) follows them in the same pipeline: it sees them, and
 * costs no round trip of its own. Without marks or fetch: a lease attempt. */
static void reader_kick(pgr_t *r)
{
    pgc_t *c = &r->c;
    if (!pgc_idle(c))
        return;
    bool fetch = r->fetch_wanted && r->lease && !r->closing;
    if (!r->marks && !fetch) {
        if (r->closing || r->lease || uv_is_active((uv_handle_t *)&r->timer))
            return;
        r->lease_asked = true;
        pgc_batch_begin(c);
        if (!send_lease(r) || !pgc_batch_end(c))
            pgc_fail(c, "cannot ask for the lease");
        return;
    }
    pgc_batch_begin(c);
    bool ok = true;
    if (r->marks) {
        r->batch_marks = r->marks;
        r->nbatch_marks = r->nmarks;
        r->marks = NULL;
        r->marks_tail = &r->marks;
        r->nmarks = 0;
        r->marks_committed = false;
        ok = pgc_send(c, "!BEGIN", 0, NULL, NULL, NULL);
        for (const mark_req_t *m = r->batch_marks; ok && m;) {
            if (m->kind == QUEUE__MARK_DELIVERED) {
                ok = send_delivered_run(r, m, &m);
            } else {
                ok = send_mark(r, m);
                m = m->next;
            }
        }
        r->marks_commit_qi = c->nq;
        if (ok)
            ok = pgc_send(c, "!COMMIT", 0, NULL, NULL, NULL);
    }
    if (ok && fetch) {
        r->fetch_wanted = false;
        r->fetching = true;
        r->fetch_qi = c->nq;
        ok = send_fetch(r);
    }
    if (!ok || !pgc_batch_end(c))
        pgc_fail(c, "cannot send the marks or the fetch");
}

static void rd_up(pgc_t *c)
{
    reader_kick(c->owner);
}

/* A fetched row that is not a message this daemon can send (its lengths or
 * bytes are wrong, or its payload is over a max-message-size lowered since
 * it was stored): marked dead, as the SQLite queue does, so that it becomes
 * a worklist item instead of coming back with every fetch. The row stays in
 * the table (state dead, never pruned). */
static void unreadable_row(pgr_t *r, const PGresult *res, int k)
{
    r->q->st.corrupt++;
    if (PQgetisnull(res, k, 0) || PQgetlength(res, k, 0) != 8) {
        log_error("queue: destination %s: a row without a readable id skipped", r->dest);
        return;
    }
    int64_t id = be64(PQgetvalue(res, k, 0));
    log_error("queue: destination %s: row %" PRId64 " is unreadable: marked dead", r->dest, id);
    mark_append(r, QUEUE__MARK_DEAD, id, 0, 0, "unreadable row (sizes or bytes out of bounds)");
    handed_add(r, id); /* not fetched again before its mark is committed */
}

static void rd_result(pgc_t *c, size_t i, PGresult *res)
{
    pgr_t *r = c->owner;
    if (r->lease_asked) {
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
            PQgetlength(res, 0, 0) == 1 && PQgetvalue(res, 0, 0)[0] == 1) {
            r->lease = true;
            r->lease_gen++;
            r->nhanded = 0; /* a new holder starts from what is pending */
            log_info("queue: lease of destination %s taken: delivering it", r->dest);
        }
        return;
    }
    if (r->batch_marks && i == r->marks_commit_qi) {
        /* The marks are done when their COMMIT says so, whatever becomes of
         * the fetch behind it. */
        r->marks_committed =
            PQresultStatus(res) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(res), "COMMIT") == 0;
        return;
    }
    if (r->fetching && i == r->fetch_qi && !r->rows) {
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            return;
        int n = PQntuples(res);
        r->rows = xcalloc((size_t)n + 1, sizeof *r->rows);
        r->nrows = 0;
        for (int k = 0; k < n; k++) {
            queue_row_t *row = row_decode(res, k, r->q->opts.max_payload);
            if (!row) {
                unreadable_row(r, res, k);
                continue;
            }
            r->rows[r->nrows++] = row;
        }
        r->more = (size_t)n >= r->fetch_max;
    }
}

static void marks_free(mark_req_t *m)
{
    while (m) {
        mark_req_t *next = m->next;
        xfree(m);
        m = next;
    }
}

/* Puts a list of marks that were not committed back in front of the newer
 * ones, to be sent again. */
static void marks_restore(pgr_t *r, mark_req_t *list, size_t n)
{
    mark_req_t **tail = &list;
    while (*tail)
        tail = &(*tail)->next;
    *tail = r->marks;
    if (!r->marks)
        r->marks_tail = tail;
    r->marks = list;
    r->nmarks += n;
}

static void rd_done(pgc_t *c, bool ok)
{
    pgr_t *r = c->owner;
    if (r->lease_asked) {
        r->lease_asked = false;
        if (r->lease) {
            uv_timer_start(&r->timer, lease_timer_cb, PG_POLL_MS, 0);
            reader_wake(r);
        } else if (!r->closing) {
            uv_timer_start(&r->timer, lease_timer_cb, PG_LEASE_RETRY_MS, 0);
        }
    } else {
        bool had_marks = r->batch_marks != NULL, marks_ok = r->marks_committed;
        if (had_marks) {
            mark_req_t *list = r->batch_marks;
            size_t n = r->nbatch_marks;
            r->batch_marks = NULL;
            r->nbatch_marks = 0;
            r->marks_committed = false;
            if (marks_ok) {
                marks_free(list);
            } else {
                /* Kept, in front of newer marks, and sent again. */
                r->q->st.commit_failures++;
                marks_restore(r, list, n);
            }
        }
        bool had_fetch = r->fetching;
        queue_row_t **rows = r->rows;
        size_t n = r->nrows;
        r->fetching = false;
        r->rows = NULL;
        r->nrows = 0;
        if (!ok) { /* marks refused abort the fetch behind them too */
            for (size_t k = 0; k < n; k++)
                queue_row_free(rows[k]);
            n = 0;
        }
        for (size_t k = 0; k < n; k++)
            handed_add(r, rows[k]->id);
        if (had_marks && !marks_ok && c->state == PGC_READY) {
            /* Refused with the connection up: start again after the
             * backoff rather than send the same marks in a tight loop. */
            pgc_fail(c, "marks not committed");
        }
        if (had_fetch) {
            if (r->closing) {
                for (size_t k = 0; k < n; k++)
                    queue_row_free(rows[k]);
            } else if (r->fetch_cb) {
                r->fetch_cb(&r->base, ok ? ERR_OK : ERR_QUEUE, rows, n, r->user);
            }
        }
        xfree(rows);
        if (marks_ok && r->ready_cb && !r->closing)
            r->ready_cb(&r->base, r->user);
    }
    if (c->state != PGC_READY || r->freed)
        return; /* lost: rd_down follows (or came) */
    if (r->closing && !r->marks && !r->batch_marks && !r->fetching && !c->in_batch) {
        reader_free(r);
        return;
    }
    reader_kick(r);
}

static void rd_down(pgc_t *c)
{
    pgr_t *r = c->owner;
    if (r->lease)
        log_warn("queue: lease of destination %s lost with its connection", r->dest);
    r->lease = false;
    r->lease_asked = false;
    uv_timer_stop(&r->timer);
    if (r->fetching) { /* rd_done told the fetch */
        r->fetching = false;
    }
    if (r->batch_marks) { /* not known to be committed: sent again once back */
        marks_restore(r, r->batch_marks, r->nbatch_marks);
        r->batch_marks = NULL;
        r->nbatch_marks = 0;
    }
    if (r->closing && !r->freed) {
        /* Nobody will commit them now: a restart delivers those rows again. */
        reader_free(r);
    }
}

static void rd_notify(pgc_t *c, const char *payload)
{
    pgr_t *r = c->owner;
    if (payload && strcmp(payload, r->dest) == 0)
        reader_wake(r);
}

static const pgc_cbs_t reader_cbs = {
    .up = rd_up, .result = rd_result, .done = rd_done, .down = rd_down, .notify = rd_notify,
};

/* FNV-1a over "spinegate:" and the destination name: the lease's lock key,
 * the same in every instance. */
static int64_t lease_key(const char *dest)
{
    uint64_t h = 1469598103934665603ULL;
    const char *pre = "spinegate:";
    for (const char *s = pre; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    for (const char *s = dest; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (int64_t)h;
}

static err_t pq_reader_open(queue_t *qb, const char *dest, queue_ready_cb ready_cb, void *user,
                            queue_reader_t **out, err_detail_t *d)
{
    pq_t *q = (pq_t *)qb;
    *out = NULL;
    if (q->closing)
        return err_set(d, ERR_CLOSED, 0, "queue is closing");
    if (!queue__valid_dest(dest))
        return err_set(d, ERR_BAD_VALUE, 0, "invalid destination name");
    size_t idx = dest_find(q, dest, true);
    if (q->dests[idx].reader)
        return err_set(d, ERR_BUSY, 0, "destination %s already has a reader", dest);
    pgr_t *r = xcalloc(1, sizeof *r);
    r->base.q = &q->base;
    r->q = q;
    r->dest_idx = idx;
    snprintf(r->dest, sizeof r->dest, "%s", dest);
    snprintf(r->lease_key, sizeof r->lease_key, "%" PRId64, lease_key(dest));
    r->ready_cb = ready_cb;
    r->user = user;
    r->marks_tail = &r->marks;
    uv_timer_init(q->loop, &r->timer);
    r->timer.data = r;
    q->dests[idx].reader = r;
    q->nreaders++;
    pgc_init(q, &r->c, r->dest, &reader_cbs, r, reader_setup);
    *out = &r->base;
    return ERR_OK;
}

static err_t pq_reader_fetch(queue_reader_t *rb, size_t max, queue_fetch_cb cb)
{
    pgr_t *r = (pgr_t *)rb;
    if (r->closing)
        return ERR_CLOSED;
    if (r->fetching || r->fetch_wanted)
        return ERR_BUSY;
    r->fetch_cb = cb;
    r->fetch_max = max ? max : 1;
    if (!r->lease)
        return ERR_BUSY; /* not ours to deliver now (has_more says so too) */
    r->fetch_wanted = true;
    reader_kick(r);
    return ERR_OK;
}

static bool pq_reader_has_more(const queue_reader_t *rb)
{
    const pgr_t *r = (const pgr_t *)rb;
    return r->lease && r->more;
}

static size_t pq_reader_unsynced(const queue_reader_t *rb)
{
    const pgr_t *r = (const pgr_t *)rb;
    return r->nmarks + r->nbatch_marks;
}

static void pq_reader_flush(queue_reader_t *rb)
{
    reader_kick((pgr_t *)rb);
}

static uint64_t pq_reader_lease(const queue_reader_t *rb)
{
    const pgr_t *r = (const pgr_t *)rb;
    return r->lease ? r->lease_gen : 0;
}

static void reader_conn_closed(pgc_t *c)
{
    pgr_t *r = c->owner;
    pq_t *q = r->q;
    xfree(r->handed);
    xfree(r);
    q->nreaders--;
    maybe_finish_close(q);
}

static void reader_timer_closed(uv_handle_t *h)
{
    pgr_t *r = h->data;
    pgc_close(&r->c, reader_conn_closed);
}

static void reader_free(pgr_t *r)
{
    if (r->freed)
        return;
    r->freed = true;
    r->c.closing = true; /* no reconnection from now on */
    if (r->q->dests[r->dest_idx].reader == r)
        r->q->dests[r->dest_idx].reader = NULL;
    marks_free(r->marks);
    marks_free(r->batch_marks);
    r->marks = r->batch_marks = NULL;
    r->nmarks = r->nbatch_marks = 0;
    for (size_t k = 0; k < r->nrows; k++)
        queue_row_free(r->rows[k]);
    xfree(r->rows);
    r->rows = NULL;
    r->nrows = 0;
    uv_close((uv_handle_t *)&r->timer, reader_timer_closed);
}

/* Closes once its marks are committed (or its connection is lost): a mark
 * left behind would make a restart deliver the row again. */
static void pq_reader_close(queue_reader_t *rb)
{
    pgr_t *r = (pgr_t *)rb;
    if (r->closing)
        return;
    r->closing = true;
    r->fetch_wanted = false;
    uv_timer_stop(&r->timer);
    if (r->c.state == PGC_READY && (r->marks || r->c.in_batch)) {
        reader_kick(r);
        return;
    }
    reader_free(r);
}

/* Queues a mark for the reader's next transaction (pq_mark's work, without
 * the kick: rd_result gives marks while the reader's connection reads). */
static void mark_append(pgr_t *r, queue__mark_t kind, int64_t id, unsigned attempts,
                        unsigned rejects, const char *reason)
{
    pq_t *q = r->q;
    dest_t *e = &q->dests[r->dest_idx];
    if (kind == QUEUE__MARK_ATTEMPT) {
        e->s.retries++;
        q->st.retries++;
    } else {
        if (kind == QUEUE__MARK_DELIVERED) {
            e->s.delivered++;
            q->st.delivered++;
        } else {
            e->s.dead++;
            q->st.dead++;
        }
        if (e->s.depth)
            e->s.depth--;
        if (q->st.depth)
            q->st.depth--;
        /* Finished: the next fetch may see it only if the mark failed,
         * and it is committed before that fetch runs. */
        handed_remove(r, id);
    }
    mark_req_t *m = xcalloc(1, sizeof *m);
    m->kind = kind;
    m->id = id;
    m->attempts = attempts;
    m->rejects = rejects;
    snprintf(m->reason, sizeof m->reason, "%s", reason ? reason : "");
    *r->marks_tail = m;
    r->marks_tail = &m->next;
    r->nmarks++;
}

static err_t pq_mark(queue_reader_t *rb, queue__mark_t kind, int64_t id, unsigned attempts,
                     unsigned rejects, const char *reason)
{
    pgr_t *r = (pgr_t *)rb;
    if (id <= 0)
        return ERR_BAD_VALUE;
    if (r->q->closed || r->closing)
        return ERR_CLOSED;
    mark_append(r, kind, id, attempts, rejects, reason);
    reader_kick(r);
    return ERR_OK;
}

/* ---------------------------------------------------------------- the rest */

static err_t pq_dead_review(queue_t *qb, const char *dest, queue_dead_fn fate, void *user,
                            size_t *requeued, size_t *filed, err_detail_t *d)
{
    /* Dead rows marked "the queue's only copy" by older versions are what
     * the review is for; no older version wrote to PostgreSQL, and rows
     * marked so here (a dead-letter folder that failed) stay dead, kept. */
    (void)qb;
    (void)fate;
    (void)user;
    (void)d;
    if (requeued)
        *requeued = 0;
    if (filed)
        *filed = 0;
    return queue__valid_dest(dest) ? ERR_OK : ERR_BAD_VALUE;
}

static void pq_stats(const queue_t *qb, queue_stats_t *st)
{
    const pq_t *q = (const pq_t *)qb;
    *st = q->st;
    st->unavailable = !writer_up(q);
    st->ndest = 0;
    for (size_t i = 0; i < q->ndests && st->ndest < QUEUE_STATS_DESTS; i++)
        st->dest[st->ndest++] = q->dests[i].s;
}

static uint64_t pq_depth(const queue_t *qb, const char *dest)
{
    const pq_t *q = (const pq_t *)qb;
    for (size_t i = 0; i < q->ndests; i++)
        if (strcmp(q->dests[i].s.name, dest) == 0)
            return q->dests[i].s.depth;
    return 0;
}

static const char *pq_path(const queue_t *qb)
{
    (void)qb;
    return NULL; /* no file: deliverers keep no cursor file (out.c) */
}

static int64_t pq_max_id(const queue_t *qb)
{
    return ((const pq_t *)qb)->max_id;
}

static int64_t pq_instance(const queue_t *qb)
{
    return ((const pq_t *)qb)->instance;
}

static void queue_free(pq_t *q)
{
    queue_close_cb cb = q->close_cb;
    void *user = q->close_user;
    log_info("queue: PostgreSQL queue closed (%" PRIu64 " pending)", q->st.depth);
    for (size_t i = 0; i < PG_WRITERS; i++)
        xfree(q->wr[i].keys);
    xfree(q->dests);
    xfree(q->url);
    xfree(q);
    if (cb)
        cb(user);
}

static void handle_closed(uv_handle_t *h)
{
    pq_t *q = h->data;
    if (--q->handles == 0)
        queue_free(q);
}

static void write_conn_closed(pgc_t *c)
{
    pq_t *q = ((pgw_t *)c->owner)->q;
    if (--q->writers_open > 0)
        return;
    q->handles = 2;
    uv_close((uv_handle_t *)&q->commit_timer, handle_closed);
    uv_close((uv_handle_t *)&q->count_timer, handle_closed);
}

static void maybe_finish_close(pq_t *q)
{
    if (!q->closing || q->closed || q->nreaders)
        return;
    for (size_t i = 0; i < PG_WRITERS; i++)
        if (q->wr[i].c.in_batch)
            return;
    if (q->puts) {
        if (writer_up(q)) {
            commit_start(q);
            return;
        }
        if (writer_connecting(q))
            return; /* its outcome decides */
        puts_refuse_waiting(q);
    }
    q->closed = true;
    uv_timer_stop(&q->commit_timer);
    uv_timer_stop(&q->count_timer);
    q->writers_open = PG_WRITERS;
    for (size_t i = 0; i < PG_WRITERS; i++)
        pgc_close(&q->wr[i].c, write_conn_closed);
}

static void pq_close(queue_t *qb, queue_close_cb cb, void *user)
{
    pq_t *q = (pq_t *)qb;
    if (q->closing)
        return;
    q->closing = true;
    q->close_cb = cb;
    q->close_user = user;
    maybe_finish_close(q);
}

static const queue__ops_t pg_ops = {
    .put = pq_put,
    .put_many = pq_put_many,
    .stats = pq_stats,
    .depth = pq_depth,
    .path = pq_path,
    .max_id = pq_max_id,
    .instance = pq_instance,
    .close = pq_close,
    .dead_review = pq_dead_review,
    .reader_open = pq_reader_open,
    .reader_fetch = pq_reader_fetch,
    .reader_has_more = pq_reader_has_more,
    .reader_unsynced = pq_reader_unsynced,
    .reader_flush = pq_reader_flush,
    .reader_close = pq_reader_close,
    .reader_lease = pq_reader_lease,
    .mark = pq_mark,
};

err_t queue__pg_open(uv_loop_t *loop, const queue_opts_t *opts, queue_t **out, err_detail_t *d)
{
    *out = NULL;
    if (!loop || !opts || !opts->url || !*opts->url)
        return err_set(d, ERR_BAD_CONFIG, 0, "queue: postgres needs a connection URL");
    pq_t *q = xcalloc(1, sizeof *q);
    q->base.ops = &pg_ops;
    q->loop = loop;
    q->opts = *opts;
    q->url = xstrdup(opts->url);
    q->opts.url = NULL;
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
    q->puts_tail = &q->puts;

    /* Blocking, once, at start: the schema and the counts. */
    const char *keys[] = {"dbname", "fallback_application_name", NULL};
    const char *vals[] = {q->url, "spinegate", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    err_t e = ERR_OK;
    if (!conn || PQstatus(conn) != CONNECTION_OK)
        e = pg_err(conn, d, "queue: cannot connect to PostgreSQL");
    if (!e) {
        PQsetErrorVerbosity(conn, PQERRORS_TERSE);
        PQclear(PQexec(conn, "SET client_min_messages = warning"));
        e = open_schema(conn, d);
    }
    if (!e)
        e = load_state(q, conn, d);
    PQfinish(conn);
    if (e) {
        xfree(q->dests);
        xfree(q->url);
        xfree(q);
        return e;
    }
    uv_timer_init(loop, &q->commit_timer);
    uv_timer_init(loop, &q->count_timer);
    q->commit_timer.data = q->count_timer.data = q;
    uv_timer_start(&q->count_timer, count_timer_cb, PG_COUNT_MS, PG_COUNT_MS);
    static const char *const writer_names[PG_WRITERS] = {"write", "write 2", "write 3", "write 4"};
    for (size_t i = 0; i < PG_WRITERS; i++) {
        q->wr[i].q = q;
        pgc_init(q, &q->wr[i].c, writer_names[i], &write_cbs, &q->wr[i], write_setup);
    }
    log_info("queue: PostgreSQL (%" PRIu64 " pending)", q->st.depth);
    *out = &q->base;
    return ERR_OK;
}
