/* test_queue_pg.c - unit tests of outbound/queue_pg.c against a real
 * PostgreSQL 15 server, started by test_queue_pg.sh (tests/integration/
 * pgserver.py), which passes its URL in SG_PG_URL and its folder in
 * SG_PG_DIR: put and group commit, put_many, the reader's order and marks,
 * the lease between two queues on one database, marks group-committed (a
 * server-side log of the transactions that deleted rows), a lease holder
 * killed with marks not committed (its rows pending for the next holder),
 * a transaction the server refuses, a stopped server (puts refused with
 * ERR_QUEUE) and the reconnection once it is back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "out.h"
#include "pg_db.h"
#include "queue.h"
#include "queue_int.h"

typedef struct {
    uv_loop_t loop;
    uv_timer_t tick; /* wakes uv_run(UV_RUN_ONCE) up while waiting */
    const char *url;
} fx_t;

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    f->url = getenv("SG_PG_URL");
    if (!f->url || !getenv("SG_PG_DIR")) {
        fprintf(stderr, "SG_PG_URL and SG_PG_DIR not set: run through test_queue_pg.sh\n");
        return -1;
    }
    /* Every test starts on an empty database: the daemon makes the schema. */
    db_exec(f->url, "DROP TABLE IF EXISTS spinegate_msgs, spinegate_worklist, spinegate_meta,"
                    " spinegate_schema");
    uv_loop_init(&f->loop);
    uv_timer_init(&f->loop, &f->tick);
    uv_timer_start(&f->tick, tick_cb, 10, 10);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    uv_close((uv_handle_t *)&f->tick, NULL);
    /* Bounded: a failed test may leave a queue open, and must not hang. */
    for (int i = 0; i < 200 && uv_loop_alive(&f->loop); i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* every handle closed */
    free(f);
    return 0;
}

/* Runs the loop until *flag is true or timeout_ms passes. */
static bool run_until(fx_t *f, const bool *flag, uint64_t timeout_ms)
{
    uint64_t end = uv_now(&f->loop) + timeout_ms;
    while (!*flag && uv_now(&f->loop) < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    return *flag;
}

static void run_for(fx_t *f, uint64_t ms)
{
    bool never = false;
    run_until(f, &never, ms);
}

static void closed_cb(void *user)
{
    *(bool *)user = true;
}

static void close_q(fx_t *f, queue_t *q)
{
    bool closed = false;
    queue_close(q, closed_cb, &closed);
    assert_true(run_until(f, &closed, 20000));
}

static queue_t *open_q(fx_t *f, unsigned max_batch)
{
    queue_opts_t o = {.backend = QUEUE_BACKEND_POSTGRES, .url = f->url, .max_batch = max_batch};
    queue_t *q = NULL;
    err_detail_t d;
    err_clear(&d);
    err_t e = queue_open(&f->loop, NULL, &o, &q, &d);
    if (e)
        fprintf(stderr, "queue_open: %s\n", d.msg);
    assert_int_equal(e, ERR_OK);
    return q;
}

/* Put results in callback order. */
#define NPUT 3000
typedef struct {
    int n;
    int idx[NPUT];
    int64_t id[NPUT];
    err_t st[NPUT];
    bool all;
    int want;
} puts_t;

typedef struct {
    puts_t *p;
    int idx;
} put_ctx_t;

static put_ctx_t ctxs[NPUT];

static void put_cb(queue_t *q, err_t status, int64_t id, void *user)
{
    (void)q;
    put_ctx_t *c = user;
    c->p->idx[c->p->n] = c->idx;
    c->p->id[c->p->n] = id;
    c->p->st[c->p->n] = status;
    c->p->n++;
    c->p->all = c->p->n >= c->p->want;
}

/* Puts it as put idx of p (its callback records it there). */
static err_t put_as(queue_t *q, puts_t *p, int idx, const queue_item_t *it)
{
    ctxs[idx].p = p;
    ctxs[idx].idx = idx;
    return queue_put(q, it, put_cb, &ctxs[idx]);
}

static err_t put_one(queue_t *q, puts_t *p, const char *dest, int idx)
{
    char ctrl[32], payload[300];
    snprintf(ctrl, sizeof ctrl, "MSG%05d", idx);
    size_t len = 50 + (size_t)idx % 200;
    for (size_t i = 0; i < len; i++)
        payload[i] = (char)('A' + (idx + (int)i) % 26);
    payload[3] = 0; /* payloads are bytes: a NUL must survive */
    /* One sender (order key 1): its puts are owed put order. */
    queue_item_t it = {dest, ctrl, "application/hl7-v2", payload, len, "M4304 rejected", NULL,
                       NULL, 1};
    return put_as(q, p, idx, &it);
}

static void test_put_group_commit(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 400);
    static puts_t p;
    memset(&p, 0, sizeof p);
    p.want = 1000;
    /* All in one loop turn: 1000 puts make 3 transactions of at most 400. */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(put_one(q, &p, i % 2 ? "hl7" : "fhir", i), ERR_OK);
    assert_true(run_until(f, &p.all, 20000));
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(p.st[i], ERR_OK);
        assert_int_equal(p.idx[i], i); /* callbacks in put order */
        if (i)
            assert_true(p.id[i] > p.id[i - 1]); /* ids in put order */
    }
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(st.committed, 1000);
    assert_int_equal(st.commits, 3);
    assert_int_equal(st.depth, 1000);
    assert_int_equal(queue_depth(q, "hl7"), 500);
    assert_true(queue_max_id(q) == p.id[999]);
    assert_true(queue_path(q) == NULL); /* no file: out.c keeps no cursor */
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM spinegate_msgs WHERE state=0"), 1000);
    assert_int_equal(db_count(f->url, "SELECT max(version) FROM spinegate_schema"), 2);
    int64_t inst = queue_instance(q);
    assert_true(inst != 0);
    close_q(f, q);

    /* A version 1 database (made by the previous release) is migrated. */
    static const char *const toast_8160 =
        "SELECT count(*) FROM pg_class WHERE relname='spinegate_msgs'"
        " AND 'toast_tuple_target=8160' = ANY(reloptions)";
    assert_int_equal(db_count(f->url, toast_8160), 1);
    db_exec(f->url, "ALTER TABLE spinegate_msgs RESET (toast_tuple_target)");
    db_exec(f->url, "DELETE FROM spinegate_schema WHERE version = 2");
    assert_int_equal(db_count(f->url, toast_8160), 0);

    /* Opened again: the same database, the same identity, the depth counted. */
    q = open_q(f, 0);
    assert_int_equal(db_count(f->url, "SELECT max(version) FROM spinegate_schema"), 2);
    assert_int_equal(db_count(f->url, toast_8160), 1);
    assert_true(queue_instance(q) == inst);
    queue_stats(q, &st);
    assert_int_equal(st.depth, 1000);
    assert_int_equal(queue_depth(q, "fhir"), 500);
    close_q(f, q);
}

typedef struct {
    int calls;
    err_t st;
    int64_t ids[8];
    size_t n;
    bool done;
} many_t;

static void many_cb(queue_t *q, err_t status, const int64_t *ids, size_t n, void *user)
{
    (void)q;
    many_t *m = user;
    m->calls++;
    m->st = status;
    m->n = n;
    for (size_t i = 0; ids && i < n && i < 8; i++)
        m->ids[i] = ids[i];
    m->done = true;
}

static void test_put_many(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 2); /* a group is never cut, even past max_batch */
    queue_item_t items[5];
    char ctrl[5][16];
    for (int i = 0; i < 5; i++) {
        snprintf(ctrl[i], sizeof ctrl[i], "G%d", i);
        items[i] = (queue_item_t){"hl7", ctrl[i], "application/hl7-v2", "MSH|x", 5, NULL,
                                  "{\"source\":\"test\"}", i == 2 ? "reject" : NULL, 0};
    }
    many_t m = {0};
    size_t refused = 99;
    assert_int_equal(queue_put_many(q, items, 5, many_cb, &m, &refused), ERR_OK);
    assert_true(run_until(f, &m.done, 20000));
    assert_int_equal(m.calls, 1);
    assert_int_equal(m.st, ERR_OK);
    assert_int_equal(m.n, 5);
    for (int i = 1; i < 5; i++)
        assert_true(m.ids[i] == m.ids[i - 1] + 1);
    /* The worklist item went in with its row. */
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM spinegate_worklist WHERE kind='reject' AND msg_id=%lld",
             (long long)m.ids[2]);
    assert_int_equal(db_count(f->url, sql), 1);

    /* A bad item refuses the whole group, and says which. */
    items[3].dest = "bad dest";
    assert_int_equal(queue_put_many(q, items, 5, many_cb, &m, &refused), ERR_BAD_VALUE);
    assert_int_equal(refused, 3);
    close_q(f, q);
}

/* A reader's rows, as fetched. */
typedef struct {
    queue_row_t *rows[NPUT];
    size_t n;
    bool done, ready;
    err_t st;
} fetched_t;

static void fetch_cb(queue_reader_t *r, err_t status, queue_row_t **rows, size_t n, void *user)
{
    (void)r;
    fetched_t *f = user;
    f->st = status;
    for (size_t i = 0; i < n; i++)
        f->rows[f->n++] = rows[i];
    f->done = true;
}

static void ready_cb(queue_reader_t *r, void *user)
{
    (void)r;
    ((fetched_t *)user)->ready = true;
}

static queue_reader_t *reader_open(queue_t *q, const char *dest, fetched_t *fx)
{
    queue_reader_t *r = NULL;
    err_detail_t d;
    assert_int_equal(queue_reader_open(q, dest, ready_cb, fx, &r, &d), ERR_OK);
    return r;
}

static bool wait_lease(fx_t *f, queue_reader_t *r, uint64_t ms)
{
    uint64_t end = uv_now(&f->loop) + ms;
    while (queue_reader_lease(r) == 0 && uv_now(&f->loop) < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    return queue_reader_lease(r) != 0;
}

/* Fetches until has_more says there is nothing left. */
static void fetch_all(fx_t *f, queue_reader_t *r, fetched_t *out, size_t max)
{
    while (queue_reader_has_more(r)) {
        out->done = false;
        assert_int_equal(queue_reader_fetch(r, max, fetch_cb), ERR_OK);
        assert_true(run_until(f, &out->done, 10000));
        assert_int_equal(out->st, ERR_OK);
    }
}

static void rows_free(fetched_t *x)
{
    for (size_t i = 0; i < x->n; i++)
        queue_row_free(x->rows[i]);
    x->n = 0;
}

static void wait_synced(fx_t *f, queue_reader_t *r)
{
    queue_reader_flush(r);
    uint64_t end = uv_now(&f->loop) + 10000;
    while (queue_reader_unsynced(r) && uv_now(&f->loop) < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(queue_reader_unsynced(r), 0);
}

static void test_reader_order_and_marks(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 0);
    static puts_t p;
    memset(&p, 0, sizeof p);
    p.want = 100;
    for (int i = 0; i < 100; i++)
        assert_int_equal(put_one(q, &p, i < 90 ? "hl7" : "other", i), ERR_OK);
    assert_true(run_until(f, &p.all, 20000));

    static fetched_t x;
    memset(&x, 0, sizeof x);
    queue_reader_t *r = reader_open(q, "hl7", &x);
    queue_reader_t *r2 = NULL;
    err_detail_t d;
    assert_int_equal(queue_reader_open(q, "hl7", NULL, NULL, &r2, &d), ERR_BUSY);
    assert_true(wait_lease(f, r, 10000));
    fetch_all(f, r, &x, 16);
    assert_int_equal(x.n, 90);
    for (size_t i = 0; i < x.n; i++) {
        assert_true(x.rows[i]->id == p.id[i]); /* in put order */
        assert_string_equal(x.rows[i]->dest, "hl7");
        char ctrl[32];
        snprintf(ctrl, sizeof ctrl, "MSG%05zu", i);
        assert_string_equal(x.rows[i]->control_id, ctrl);
        assert_int_equal(x.rows[i]->payload_len, 50 + i % 200);
        assert_int_equal(x.rows[i]->payload[3], 0);
        assert_int_equal(x.rows[i]->payload[4], 'A' + (int)(i + 4) % 26);
        assert_string_equal(x.rows[i]->findings, "M4304 rejected");
    }
    /* Rows handed out are not handed out again while unfinished. */
    assert_false(queue_reader_has_more(r));

    for (size_t i = 0; i < 50; i++)
        assert_int_equal(queue_mark_delivered(r, x.rows[i]->id), ERR_OK);
    for (size_t i = 50; i < 55; i++)
        assert_int_equal(queue_mark_dead_lettered(r, x.rows[i]->id, 3, "refused"), ERR_OK);
    assert_int_equal(queue_mark_dead(r, x.rows[55]->id, 2, "no folder"), ERR_OK);
    assert_int_equal(queue_mark_dead(r, x.rows[55]->id, 2, "no folder"), ERR_OK); /* again */
    assert_int_equal(queue_mark_attempt(r, x.rows[56]->id, 4, 2, "AE"), ERR_OK);
    assert_int_equal(queue_mark_delivered(r, 0), ERR_BAD_VALUE);
    assert_true(queue_reader_unsynced(r) > 0);
    wait_synced(f, r);
    assert_int_equal(
        db_count(f->url, "SELECT count(*) FROM spinegate_msgs WHERE dest='hl7' AND state=0"), 34);
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM spinegate_msgs WHERE state=4"), 5);
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM spinegate_msgs WHERE state=3"), 1);
    /* One dead item per dead row, however often it was marked. */
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM spinegate_worklist WHERE kind='dead'"),
                     6);
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(st.delivered, 50);
    assert_int_equal(st.dead, 7);
    assert_int_equal(queue_depth(q, "hl7"), 90 - 57);
    int64_t attempted = x.rows[56]->id;
    rows_free(&x);
    queue_reader_close(r);
    run_for(f, 50);

    /* Another reader (a restart, another instance): the pending rows, in
     * order, with the attempt read back. */
    memset(&x, 0, sizeof x);
    r = reader_open(q, "hl7", &x);
    assert_true(wait_lease(f, r, 10000));
    fetch_all(f, r, &x, 5);
    assert_int_equal(x.n, 34);
    assert_true(x.rows[0]->id == attempted);
    assert_int_equal(x.rows[0]->attempts, 4);
    assert_int_equal(x.rows[0]->rejects, 2);
    for (size_t i = 1; i < x.n; i++)
        assert_true(x.rows[i]->id > x.rows[i - 1]->id);
    rows_free(&x);
    queue_reader_close(r);
    close_q(f, q);
}

/* A row over a max_payload lowered since it was stored is not handed out
 * again and again: it is marked dead (kept, a worklist item), and the rows
 * behind it are delivered. */
static void test_unreadable_row_dead(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 0);
    static char big[2000];
    memset(big, 'B', sizeof big);
    static puts_t p;
    memset(&p, 0, sizeof p);
    p.want = 2;
    queue_item_t it = {"hl7", "BIG1", "application/hl7-v2", big, sizeof big, NULL, NULL, NULL, 0};
    assert_int_equal(put_as(q, &p, 0, &it), ERR_OK);
    assert_int_equal(put_one(q, &p, "hl7", 1), ERR_OK);
    assert_true(run_until(f, &p.all, 20000));
    close_q(f, q);

    queue_opts_t o = {.backend = QUEUE_BACKEND_POSTGRES, .url = f->url, .max_payload = 1000};
    err_detail_t d;
    assert_int_equal(queue_open(&f->loop, NULL, &o, &q, &d), ERR_OK);
    static fetched_t x;
    memset(&x, 0, sizeof x);
    queue_reader_t *r = reader_open(q, "hl7", &x);
    assert_true(wait_lease(f, r, 10000));
    fetch_all(f, r, &x, 16);
    assert_int_equal(x.n, 1);
    assert_string_equal(x.rows[0]->control_id, "MSG00001");
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(st.corrupt, 1);
    assert_int_equal(st.dead, 1);
    wait_synced(f, r);
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM spinegate_msgs WHERE state=3"), 1);
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM spinegate_worklist WHERE kind='dead'"),
                     1);
    /* Not fetched again: the next fetch finds nothing new. */
    x.done = false;
    assert_int_equal(queue_reader_fetch(r, 16, fetch_cb), ERR_OK);
    assert_true(run_until(f, &x.done, 10000));
    assert_int_equal(x.n, 1);
    queue_stats(q, &st);
    assert_int_equal(st.corrupt, 1);
    rows_free(&x);
    queue_reader_close(r);
    close_q(f, q);
}

static void test_lease_one_holder(void **state)
{
    fx_t *f = *state;
    queue_t *qa = open_q(f, 0), *qb = open_q(f, 0);
    static fetched_t xa, xb;
    memset(&xa, 0, sizeof xa);
    memset(&xb, 0, sizeof xb);
    queue_reader_t *ra = reader_open(qa, "billing", &xa);
    assert_true(wait_lease(f, ra, 10000));
    queue_reader_t *rb = reader_open(qb, "billing", &xb);
    run_for(f, 2500); /* two lease attempts of rb's */
    assert_true(queue_reader_lease(ra) != 0);
    assert_int_equal(queue_reader_lease(rb), 0);
    assert_false(queue_reader_has_more(rb));

    /* A put from the other instance wakes the lease holder (NOTIFY). */
    static puts_t p;
    memset(&p, 0, sizeof p);
    p.want = 3;
    for (int i = 0; i < 3; i++)
        assert_int_equal(put_one(qb, &p, "billing", i), ERR_OK);
    assert_true(run_until(f, &p.all, 10000));
    assert_int_equal(p.st[2], ERR_OK);
    xa.ready = false;
    assert_true(run_until(f, &xa.ready, 5000));
    fetch_all(f, ra, &xa, 10);
    assert_int_equal(xa.n, 3);
    assert_int_equal(queue_mark_delivered(ra, xa.rows[0]->id), ERR_OK);
    wait_synced(f, ra);

    /* The holder goes (its session ends): the other takes over and starts
     * from what is pending, the undelivered two. */
    queue_reader_close(ra);
    assert_true(wait_lease(f, rb, 5000));
    fetch_all(f, rb, &xb, 10);
    assert_int_equal(xb.n, 2);
    assert_true(xb.rows[0]->id == xa.rows[1]->id);
    assert_true(xb.rows[1]->id == xa.rows[2]->id);
    rows_free(&xa);
    rows_free(&xb);
    queue_reader_close(rb);
    close_q(f, qa);
    close_q(f, qb);
}

/* Logs, in the server, the transaction that deleted each row: the marks'
 * transactions, counted where they happen. */
static void mark_log_install(const char *url)
{
    db_exec(url, "DROP TABLE IF EXISTS test_mark_log");
    db_exec(url, "CREATE TABLE test_mark_log(xid bigint NOT NULL, id bigint NOT NULL)");
    db_exec(url, "CREATE OR REPLACE FUNCTION test_mark_logged() RETURNS trigger AS"
                 " $$ BEGIN INSERT INTO test_mark_log VALUES (txid_current(), OLD.id);"
                 " RETURN OLD; END $$ LANGUAGE plpgsql");
    db_exec(url, "DROP TRIGGER IF EXISTS test_mark_log ON spinegate_msgs");
    db_exec(url, "CREATE TRIGGER test_mark_log AFTER DELETE ON spinegate_msgs"
                 " FOR EACH ROW EXECUTE FUNCTION test_mark_logged()");
}

/* Marks given while the reader's connection is busy wait and go together:
 * a deliverer that goes on sending pays one commit per batch, not one per
 * message. The first mark goes at once (the connection is idle); the 199
 * given in the same loop turn, while it commits, go in one more
 * transaction, the fetch asked for meanwhile behind them. */
static void test_marks_batched(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 0);
    static puts_t p;
    memset(&p, 0, sizeof p);
    p.want = 260;
    for (int i = 0; i < 260; i++)
        assert_int_equal(put_one(q, &p, "billing", i), ERR_OK);
    assert_true(run_until(f, &p.all, 20000));
    mark_log_install(f->url);

    static fetched_t x;
    memset(&x, 0, sizeof x);
    queue_reader_t *r = reader_open(q, "billing", &x);
    assert_true(wait_lease(f, r, 10000));
    x.done = false;
    assert_int_equal(queue_reader_fetch(r, 200, fetch_cb), ERR_OK);
    assert_true(run_until(f, &x.done, 10000));
    assert_int_equal(x.n, 200);
    assert_true(queue_reader_has_more(r));

    /* 200 marks in one loop turn, one of them a failed attempt (the run
     * of delivered marks around it is cut there, order kept). */
    for (size_t i = 0; i < 200; i++) {
        if (i == 120)
            assert_int_equal(queue_mark_attempt(r, x.rows[i]->id, 1, 0, "timeout"), ERR_OK);
        else
            assert_int_equal(queue_mark_delivered(r, x.rows[i]->id), ERR_OK);
    }
    assert_int_equal(queue_reader_unsynced(r), 200); /* none committed yet */
    x.done = false;
    assert_int_equal(queue_reader_fetch(r, 100, fetch_cb), ERR_OK);
    assert_true(run_until(f, &x.done, 10000));
    assert_int_equal(queue_reader_unsynced(r), 0); /* committed before the fetch ran */
    assert_int_equal(x.n, 260);
    /* The rest, and the attempted row only once (still handed out). */
    for (size_t i = 200; i < 260; i++)
        assert_true(x.rows[i]->id == p.id[i]);
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM test_mark_log"), 199);
    assert_int_equal(db_count(f->url, "SELECT count(DISTINCT xid) FROM test_mark_log"), 2);
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM spinegate_msgs"), 61);
    char sql[120];
    snprintf(sql, sizeof sql, "SELECT attempts FROM spinegate_msgs WHERE id=%lld",
             (long long)x.rows[120]->id);
    assert_int_equal(db_count(f->url, sql), 1);
    rows_free(&x);
    queue_reader_close(r);
    close_q(f, q);
    db_exec(f->url, "DROP TABLE test_mark_log");
}

static void stopped_cb(void *user)
{
    *(bool *)user = true;
}

/* Delivers nrows rows of "billing" to a folder through out.c with the
 * given mark window; returns the transactions that deleted them. */
static long long deliver_all(fx_t *f, unsigned mark_window, int nrows)
{
    queue_t *q = open_q(f, 0);
    static puts_t p;
    memset(&p, 0, sizeof p);
    p.want = nrows;
    for (int i = 0; i < nrows; i++)
        assert_int_equal(put_one(q, &p, "billing", i), ERR_OK);
    assert_true(run_until(f, &p.all, 20000));
    mark_log_install(f->url);
    /* Each mark transaction takes 5 ms more, as a synchronous standby
     * farther away would make it (and the count depends less on how fast
     * this machine is at the moment). */
    db_exec(f->url, "CREATE OR REPLACE FUNCTION test_mark_slow() RETURNS trigger AS"
                    " $$ BEGIN PERFORM pg_sleep(0.005); RETURN NULL; END $$ LANGUAGE plpgsql");
    db_exec(f->url, "CREATE TRIGGER test_mark_slow AFTER DELETE ON spinegate_msgs"
                    " FOR EACH STATEMENT EXECUTE FUNCTION test_mark_slow()");
    char dir[] = "/tmp/sg-pgout.XXXXXX";
    assert_non_null(mkdtemp(dir));
    out_dest_opts_t o = {.dest = "billing",
                         .kind = OUT_DIR,
                         .dir = dir,
                         .no_fsync = true,
                         .mark_window = mark_window};
    out_dest_t *d = NULL;
    err_detail_t e;
    assert_int_equal(out_start(&f->loop, q, &o, &d, &e), ERR_OK);
    out_stats_t st = {0};
    uint64_t end = uv_now(&f->loop) + 30000;
    while (st.delivered < (uint64_t)nrows && uv_now(&f->loop) < end) {
        uv_run(&f->loop, UV_RUN_ONCE);
        out_stats(d, &st);
    }
    assert_int_equal(st.delivered, nrows);
    bool stopped = false;
    out_stop(d, stopped_cb, &stopped); /* its reader commits its marks first */
    assert_true(run_until(f, &stopped, 10000));
    close_q(f, q);
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM spinegate_msgs"), 0);
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM test_mark_log"), nrows);
    long long xacts = db_count(f->url, "SELECT count(DISTINCT xid) FROM test_mark_log");
    char cmd[80];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    db_exec(f->url, "DROP TABLE test_mark_log");
    db_exec(f->url, "DROP TRIGGER test_mark_slow ON spinegate_msgs");
    return xacts;
}

/* The deliverer on PostgreSQL goes on sending while its marks commit, up
 * to its mark window (OUT_PG_MARK_WINDOW by default): many messages per
 * mark transaction. With a window of 1 (each mark committed before the
 * next send, as before) it is one transaction per message. */
static void test_deliverer_marks_batched(void **state)
{
    fx_t *f = *state;
    long long one_by_one = deliver_all(f, 1, 300);
    assert_int_equal(one_by_one, 300);
    long long batched = deliver_all(f, 0, 300);
    printf("# 300 messages delivered: %lld mark transactions with a window of 1, %lld with "
           "the default window (%d)\n",
           one_by_one, batched, OUT_PG_MARK_WINDOW);
    assert_true(batched >= 300 / OUT_PG_MARK_WINDOW);
    assert_true(batched <= 60); /* five or more marks per commit on average */
}

/* The child of test_killed_holder: takes the lease, fetches every row,
 * marks the first nmark delivered while its connection is busy with a
 * fetch (so none of them is sent), says so on fd and waits to be killed.
 * Exit codes say what went wrong (cmocka's asserts belong to the parent). */
static void killed_holder_child(const char *url, int fd, size_t nrows, size_t nmark)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    queue_opts_t o = {.backend = QUEUE_BACKEND_POSTGRES, .url = url};
    queue_t *q = NULL;
    err_detail_t d;
    if (queue_open(&loop, NULL, &o, &q, &d) != ERR_OK)
        _exit(10);
    static fetched_t x;
    queue_reader_t *r = NULL;
    if (queue_reader_open(q, "billing", ready_cb, &x, &r, &d) != ERR_OK)
        _exit(11);
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, tick_cb, 10, 10);
    for (int i = 0; i < 1000 && !queue_reader_lease(r); i++)
        uv_run(&loop, UV_RUN_ONCE);
    if (!queue_reader_lease(r))
        _exit(12);
    while (queue_reader_has_more(r)) {
        x.done = false;
        if (queue_reader_fetch(r, nrows, fetch_cb) != ERR_OK)
            _exit(13);
        for (int i = 0; i < 1000 && !x.done; i++)
            uv_run(&loop, UV_RUN_ONCE);
        if (!x.done || x.st != ERR_OK)
            _exit(14);
    }
    if (x.n != nrows)
        _exit(15);
    x.done = false;
    if (queue_reader_fetch(r, nrows, fetch_cb) != ERR_OK) /* sent now: the connection is busy */
        _exit(16);
    for (size_t i = 0; i < nmark; i++)
        if (queue_mark_delivered(r, x.rows[i]->id) != ERR_OK)
            _exit(17);
    if (queue_reader_unsynced(r) != nmark)
        _exit(18);
    char c = 'm';
    if (write(fd, &c, 1) != 1)
        _exit(19);
    for (;;)
        pause(); /* the loop never runs again: the marks are never sent */
}

/* A lease holder killed (kill -9) with delivered marks not committed: its
 * session ends, the lease goes to the other instance, and the marked rows
 * are pending for it, in order: not assumed done. They are what a crash
 * can deliver twice (the mark window, out.c). */
static void test_killed_holder(void **state)
{
    fx_t *f = *state;
    enum { NROWS = 20, NMARK = 12 };
    queue_t *q = open_q(f, 0);
    static puts_t p;
    memset(&p, 0, sizeof p);
    p.want = NROWS;
    for (int i = 0; i < NROWS; i++)
        assert_int_equal(put_one(q, &p, "billing", i), ERR_OK);
    assert_true(run_until(f, &p.all, 20000));
    close_q(f, q);

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        killed_holder_child(f->url, fds[1], NROWS, NMARK);
    }
    close(fds[1]);
    char c = 0;
    ssize_t got = read(fds[0], &c, 1);
    close(fds[0]);
    if (got != 1) {
        int st = 0;
        waitpid(pid, &st, 0);
        fail_msg("the holder stopped before its marks (exit %d)",
                 WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }

    q = open_q(f, 0);
    static fetched_t x;
    memset(&x, 0, sizeof x);
    queue_reader_t *r = reader_open(q, "billing", &x);
    run_for(f, 1500);
    assert_int_equal(queue_reader_lease(r), 0); /* the child holds it */
    assert_int_equal(kill(pid, SIGKILL), 0);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    assert_true(wait_lease(f, r, 5000));
    fetch_all(f, r, &x, 8);
    assert_int_equal(x.n, NROWS); /* the marked ones too: pending, not lost */
    for (size_t i = 0; i < x.n; i++)
        assert_true(x.rows[i]->id == p.id[i]);
    for (size_t i = 0; i < x.n; i++)
        assert_int_equal(queue_mark_delivered(r, x.rows[i]->id), ERR_OK);
    wait_synced(f, r);
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM spinegate_msgs"), 0);
    rows_free(&x);
    queue_reader_close(r);
    close_q(f, q);
}

/* A transaction the server refuses (here a constraint the test adds) fails
 * as a whole: every put of it gets ERR_QUEUE, none is stored, and the next
 * transaction on the same connection (after its ROLLBACK) is stored. */
static void test_commit_refused(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 0);
    db_exec(f->url, "ALTER TABLE spinegate_msgs ADD CONSTRAINT test_poison"
                    " CHECK (dest <> 'poison')");
    static puts_t p;
    memset(&p, 0, sizeof p);
    p.want = 3;
    assert_int_equal(put_one(q, &p, "hl7", 0), ERR_OK);
    assert_int_equal(put_one(q, &p, "poison", 1), ERR_OK);
    assert_int_equal(put_one(q, &p, "hl7", 2), ERR_OK); /* the same transaction */
    assert_true(run_until(f, &p.all, 20000));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(p.st[i], ERR_QUEUE);
        assert_true(p.id[i] == 0);
    }
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM spinegate_msgs"), 0);
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(st.failed, 3);
    assert_int_equal(st.commit_failures, 1);
    assert_int_equal(st.depth, 0);

    p.want = 4;
    p.all = false;
    assert_int_equal(put_one(q, &p, "hl7", 3), ERR_OK);
    assert_true(run_until(f, &p.all, 20000));
    assert_int_equal(p.st[3], ERR_OK);
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM spinegate_msgs"), 1);
    close_q(f, q);
}

static err_t put_keyed(queue_t *q, puts_t *p, int idx, const char *ctrl, uint64_t key)
{
    queue_item_t it = {"hl7", ctrl, "application/hl7-v2", "MSH|x", 5, NULL, NULL, NULL, key};
    return put_as(q, p, idx, &it);
}

/* The write connections run transactions side by side: a put made while a
 * slow transaction runs goes on another connection, unless its order key
 * (its sender) has a put in the slow one; then it waits for it, so that one
 * sender's puts commit in put order. (The slowness: a trigger the test adds
 * that sleeps on one control id.) */
static void test_order_keys(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 0);
    db_exec(f->url, "CREATE OR REPLACE FUNCTION test_slow() RETURNS trigger LANGUAGE plpgsql"
                    " AS $$BEGIN IF NEW.control_id = 'SLOW'::bytea THEN PERFORM pg_sleep(1);"
                    " END IF; RETURN NEW; END$$");
    db_exec(f->url, "CREATE TRIGGER test_slow BEFORE INSERT ON spinegate_msgs FOR EACH ROW"
                    " EXECUTE FUNCTION test_slow()");
    run_for(f, 300); /* every write connection up */
    static puts_t p;
    memset(&p, 0, sizeof p);
    p.want = 3;
    assert_int_equal(put_keyed(q, &p, 0, "SLOW", 7), ERR_OK);
    run_for(f, 300); /* its transaction is running, asleep */
    assert_int_equal(put_keyed(q, &p, 1, "SAME", 7), ERR_OK);
    assert_int_equal(put_keyed(q, &p, 2, "OTHER", 8), ERR_OK);
    assert_true(run_until(f, &p.all, 20000));
    for (int i = 0; i < 3; i++)
        assert_int_equal(p.st[i], ERR_OK);
    /* Stored in this order: the other sender's put did not wait. */
    assert_int_equal(p.idx[0], 2);
    assert_int_equal(p.idx[1], 0);
    assert_int_equal(p.idx[2], 1);
    assert_true(p.id[2] > p.id[1]); /* the same sender's, in put order */
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(st.commits, 3);
    close_q(f, q);
}

static void pgserver(const char *cmd)
{
    char line[1024];
    snprintf(line, sizeof line, "%s %s/pgserver.py %s %s >/dev/null",
             getenv("PYTHON3") ? getenv("PYTHON3") : "/usr/bin/python3",
             getenv("SG_PGSERVER_DIR"), cmd, getenv("SG_PG_DIR"));
    assert_int_equal(system(line), 0);
}

static void test_server_stopped(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 0);
    static fetched_t x;
    memset(&x, 0, sizeof x);
    queue_reader_t *r = reader_open(q, "hl7", &x);
    assert_true(wait_lease(f, r, 10000));
    static puts_t p;
    memset(&p, 0, sizeof p);
    p.want = 1;
    assert_int_equal(put_one(q, &p, "hl7", 0), ERR_OK);
    assert_true(run_until(f, &p.all, 10000));
    assert_int_equal(p.st[0], ERR_OK);
    fetch_all(f, r, &x, 10);
    assert_int_equal(x.n, 1);

    pgserver("pause");
    /* Puts while the server is gone: each refused, none stored. */
    int refused = 0;
    for (int i = 1; i <= 5; i++) {
        p.want = p.n + 1;
        p.all = false;
        assert_int_equal(put_one(q, &p, "hl7", i), ERR_OK);
        assert_true(run_until(f, &p.all, 20000));
        assert_int_equal(p.st[p.n - 1], ERR_QUEUE);
        assert_true(p.id[p.n - 1] == 0);
        refused++;
        run_for(f, 100);
    }
    assert_int_equal(queue_reader_lease(r), 0); /* its session is gone too */
    /* A mark given meanwhile waits for the server. */
    assert_int_equal(queue_mark_delivered(r, x.rows[0]->id), ERR_OK);
    assert_int_equal(queue_reader_unsynced(r), 1);
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(st.failed, (uint64_t)refused);

    pgserver("resume");
    /* Back within the backoff (at most 5 s): puts are stored again. */
    bool stored = false;
    for (int i = 6; i < 200 && !stored; i++) {
        p.want = p.n + 1;
        p.all = false;
        assert_int_equal(put_one(q, &p, "hl7", i), ERR_OK);
        assert_true(run_until(f, &p.all, 20000));
        stored = p.st[p.n - 1] == ERR_OK;
        if (!stored)
            run_for(f, 200);
    }
    assert_true(stored);
    /* The reader came back, took its lease again, committed its mark. */
    assert_true(wait_lease(f, r, 10000));
    wait_synced(f, r);
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM spinegate_msgs"), 1);
    rows_free(&x);
    memset(&x, 0, sizeof x);
    x.ready = false;
    fetch_all(f, r, &x, 10);
    assert_int_equal(x.n, 1);
    assert_true(x.rows[0]->id == p.id[p.n - 1]);
    rows_free(&x);
    queue_reader_close(r);
    close_q(f, q);
}

static void test_open_fails_cleanly(void **state)
{
    fx_t *f = *state;
    queue_opts_t o = {.backend = QUEUE_BACKEND_POSTGRES,
                      .url = "postgresql://postgres@127.0.0.1:1/spinegate?connect_timeout=2"};
    queue_t *q = (queue_t *)&o;
    err_detail_t d;
    err_clear(&d);
    assert_int_equal(queue_open(&f->loop, NULL, &o, &q, &d), ERR_QUEUE);
    assert_null(q);
    assert_non_null(strstr(d.msg, "PostgreSQL"));
    o.url = NULL;
    assert_int_equal(queue_open(&f->loop, NULL, &o, &q, &d), ERR_BAD_CONFIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_group_commit, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_put_many, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_reader_order_and_marks, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_row_dead, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lease_one_holder, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_marks_batched, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_killed_holder, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_deliverer_marks_batched, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_commit_refused, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_order_keys, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_server_stopped, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_open_fails_cleanly, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
