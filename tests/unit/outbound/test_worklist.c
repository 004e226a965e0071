/* test_worklist.c - unit tests of the worklist (outbound/worklist.c and its
 * half in queue.c) against a real SQLite file: an item is written in the
 * transaction of the row it describes (reject at put, dead letter at its
 * mark) or not at all; the filters; resolve, requeue and resend and the
 * states they allow; the inbox taken into the queue at open and while open,
 * in order; the prune that never touches open items. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "queue.h"
#include "queue_int.h"
#include "worklist.h"
#include "worklist_int.h"

typedef struct {
    char dir[64];
    char path[96];
    uv_loop_t loop;
} fx_t;

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_worklist.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/queue.db", f->dir);
    uv_loop_init(&f->loop);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    assert_int_equal(uv_loop_close(&f->loop), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void closed_cb(void *user)
{
    (*(int *)user)++;
}

static void close_q(fx_t *f, queue_t *q)
{
    int closed = 0;
    queue_close(q, closed_cb, &closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
}

static queue_t *open_q(fx_t *f, unsigned poll_ms)
{
    queue_t *q = NULL;
    err_detail_t d;
    queue_opts_t o = {.inbox_poll_ms = poll_ms};
    assert_int_equal(queue_open(&f->loop, f->path, &o, &q, &d), ERR_OK);
    return q;
}

typedef struct {
    int n;
    err_t st;
    int64_t id;
} put_res_t;

static void put_cb(queue_t *q, err_t status, int64_t id, void *user)
{
    (void)q;
    put_res_t *r = user;
    r->n++;
    r->st = status;
    r->id = id;
}

/* Puts one message and runs the loop until its commit has called back. */
static put_res_t put(fx_t *f, queue_t *q, const char *dest, const char *ctrl, const char *meta,
                     const char *findings, const char *kind)
{
    put_res_t r = {0};
    queue_item_t it = {dest, ctrl, "application/hl7-v2", "MSH|^~\\&|x", 10, findings, meta, kind, 0};
    assert_int_equal(queue_put(q, &it, put_cb, &r), ERR_OK);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(r.n, 1);
    return r;
}

/* Items as read back, copied. */
typedef struct {
    size_t n;
    int64_t id[16], msg_id[16], received[16];
    char kind[16][16], state[16][16], ctrl[16][32], meta[16][256], reason[16][64], link[16][32];
} got_t;

static int got_cb(const worklist_item_t *it, void *user)
{
    got_t *g = user;
    size_t i = g->n++;
    g->id[i] = it->id;
    g->msg_id[i] = it->msg_id;
    g->received[i] = it->received_ms;
    snprintf(g->kind[i], 16, "%s", it->kind);
    snprintf(g->state[i], 16, "%s", it->state);
    snprintf(g->ctrl[i], 32, "%s", it->control_id);
    snprintf(g->meta[i], 256, "%s", it->meta ? it->meta : "");
    snprintf(g->reason[i], 64, "%s", it->reason ? it->reason : "");
    snprintf(g->link[i], 32, "%s", it->link ? it->link : "");
    return 0;
}

static got_t list(fx_t *f, const worklist_filter_t *flt)
{
    worklist_t *w = NULL;
    err_detail_t d;
    assert_int_equal(worklist_open(f->path, &w, &d), ERR_OK);
    got_t g;
    memset(&g, 0, sizeof g);
    assert_int_equal(worklist_list(w, flt, got_cb, &g, &d), ERR_OK);
    worklist_close(w);
    return g;
}

static const char *META_HL7 =
    "{\"source\":\"mllp\",\"verdict\":\"reject\",\"rules\":[\"excludes1-pair\"],"
    "\"refs\":{\"mrn\":\"MRN1\"}}";
static const char *META_FHIR =
    "{\"source\":\"http\",\"verdict\":\"reject\",\"rules\":[\"seventh-character\"]}";

static void test_reject_item_with_its_row(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 0);
    put_res_t a = put(f, q, "reject-hl7", "R1", META_HL7, "excludes1-pair:reject", "reject");
    put_res_t b = put(f, q, "hl7", "A1", "{\"source\":\"mllp\"}", NULL, NULL);
    assert_int_equal(a.st, ERR_OK);
    assert_int_equal(b.st, ERR_OK);
    close_q(f, q);
    got_t g = list(f, NULL);
    assert_int_equal(g.n, 1); /* the accepted message is no item */
    assert_int_equal(g.msg_id[0], a.id);
    assert_string_equal(g.kind[0], "reject");
    assert_string_equal(g.state[0], "open");
    assert_string_equal(g.ctrl[0], "R1");
    assert_string_equal(g.meta[0], META_HL7);
    assert_true(g.received[0] > 0);
}

static void test_failed_item_fails_the_put(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 0);
    /* A worklist that cannot take the item (its table gone): the row it
     * would describe must not be stored either (one transaction), and the
     * put fails. (Triggers are off on the queue's connection.) */
    assert_int_equal(sqlite3_exec(queue__db(q), "DROP TABLE worklist", NULL, NULL, NULL),
                     SQLITE_OK);
    put_res_t a = put(f, q, "reject-hl7", "R1", META_HL7, NULL, "reject");
    assert_int_equal(a.st, ERR_QUEUE);
    put_res_t b = put(f, q, "hl7", "A1", NULL, NULL, NULL); /* no item: stored */
    assert_int_equal(b.st, ERR_OK);
    close_q(f, q);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    /* Nothing of the refused put: one row, the accepted message. */
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*), min(control_id) FROM msgs", -1,
                                        &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    assert_string_equal((const char *)sqlite3_column_text(st, 1), "A1");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* Reads every pending row of dest and returns the reader (to mark with). */
typedef struct {
    queue_row_t *rows[16];
    size_t n;
    bool ready;
} fetched_t;

static void fetch_cb(queue_reader_t *r, err_t status, queue_row_t **rows, size_t n, void *user)
{
    (void)r;
    fetched_t *x = user;
    assert_int_equal(status, ERR_OK);
    for (size_t i = 0; i < n; i++)
        x->rows[x->n++] = rows[i];
}

static void ready_cb(queue_reader_t *r, void *user)
{
    (void)r;
    ((fetched_t *)user)->ready = true;
}

static void fetch_all(fx_t *f, queue_reader_t *r)
{
    while (queue_reader_has_more(r)) {
        assert_int_equal(queue_reader_fetch(r, 16, fetch_cb), ERR_OK);
        uv_run(&f->loop, UV_RUN_DEFAULT);
    }
}

static void free_fetched(fetched_t *x)
{
    for (size_t i = 0; i < x->n; i++)
        queue_row_free(x->rows[i]);
    x->n = 0;
}

/* Marks the first pending hl7 row dead-lettered (twice: a mark given again
 * must not write a second item). */
static void dead_letter_first(fx_t *f, queue_t *q)
{
    fetched_t x = {0};
    queue_reader_t *r = NULL;
    err_detail_t d;
    assert_int_equal(queue_reader_open(q, "hl7", ready_cb, &x, &r, &d), ERR_OK);
    fetch_all(f, r);
    assert_true(x.n >= 1);
    assert_int_equal(queue_mark_dead_lettered(r, x.rows[0]->id, 1, "downstream answered AE"),
                     ERR_OK);
    queue_reader_flush(r);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(queue_mark_dead_lettered(r, x.rows[0]->id, 1, "downstream answered AE"),
                     ERR_OK);
    queue_reader_flush(r);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    free_fetched(&x);
    queue_reader_close(r);
}

static void test_dead_letter_item(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 0);
    put_res_t a = put(f, q, "hl7", "D1", "{\"source\":\"mllp\",\"verdict\":\"accept\"}", NULL, NULL);
    put(f, q, "hl7", "D2", NULL, NULL, NULL);
    dead_letter_first(f, q);
    close_q(f, q);
    got_t g = list(f, NULL);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.kind[0], "dead");
    assert_string_equal(g.state[0], "open");
    assert_string_equal(g.ctrl[0], "D1");
    assert_int_equal(g.msg_id[0], a.id);
    assert_string_equal(g.reason[0], "downstream answered AE");
    assert_non_null(strstr(g.meta[0], "\"verdict\":\"accept\"")); /* kept with the row */
}

static void test_filters(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 0);
    put(f, q, "reject-hl7", "R1", META_HL7, "excludes1-pair:reject", "reject");
    put(f, q, "reject-fhir", "F1", META_FHIR, NULL, "reject");
    put(f, q, "reject-hl7", "R2", NULL, "seventh-character:reject other:warn", "reject");
    close_q(f, q);
    worklist_filter_t flt = {.source = "http"};
    got_t g = list(f, &flt);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.ctrl[0], "F1");
    flt = (worklist_filter_t){.source = "mllp"}; /* R2 has no meta: its destination says */
    assert_int_equal(list(f, &flt).n, 2);
    flt = (worklist_filter_t){.rule = "seventh-character"}; /* meta's list or the summary */
    g = list(f, &flt);
    assert_int_equal(g.n, 2);
    assert_string_equal(g.ctrl[0], "F1");
    assert_string_equal(g.ctrl[1], "R2");
    flt = (worklist_filter_t){.rule = "seventh"}; /* a whole rule id, not a prefix */
    assert_int_equal(list(f, &flt).n, 0);
    flt = (worklist_filter_t){.state = "resolved"};
    assert_int_equal(list(f, &flt).n, 0);
    flt = (worklist_filter_t){.kind = "reject", .state = "open"};
    assert_int_equal(list(f, &flt).n, 3);
    g = list(f, NULL);
    flt = (worklist_filter_t){.since_ms = g.received[0], .until_ms = g.received[2] + 1};
    assert_int_equal(list(f, &flt).n, 3);
    flt = (worklist_filter_t){.until_ms = g.received[0]}; /* exclusive */
    assert_int_equal(list(f, &flt).n, 0);
    flt = (worklist_filter_t){.since_ms = g.received[2] + 1};
    assert_int_equal(list(f, &flt).n, 0);
}

static void test_resolve_states(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 0);
    put(f, q, "reject-hl7", "R1", META_HL7, NULL, "reject");
    close_q(f, q);
    got_t g = list(f, NULL);
    worklist_t *w = NULL;
    err_detail_t d;
    assert_int_equal(worklist_open(f->path, &w, &d), ERR_OK);
    assert_int_equal(worklist_resolve(w, g.id[0], "coder1", "fixed at source", &d), ERR_OK);
    assert_int_equal(worklist_resolve(w, g.id[0], "coder1", "again", &d), ERR_BAD_VALUE);
    assert_int_equal(worklist_resolve(w, 999, "coder1", "x", &d), ERR_NOT_FOUND);
    /* Not a dead letter: cannot be requeued; resolved: cannot be resent. */
    assert_int_equal(worklist_requeue(w, g.id[0], "coder1", &d), ERR_BAD_VALUE);
    worklist_msg_t m = {"hl7", "R1", "application/hl7-v2", NULL, NULL, "MSH|", 4};
    assert_int_equal(worklist_resend(w, g.id[0], &m, "coder1", NULL, &d), ERR_BAD_VALUE);
    worklist_close(w);
    g = list(f, NULL);
    assert_string_equal(g.state[0], "resolved");
}

static void test_open_missing_file(void **state)
{
    fx_t *f = *state;
    worklist_t *w = NULL;
    err_detail_t d;
    assert_int_equal(worklist_open(f->path, &w, &d), ERR_NOT_FOUND);
    assert_null(w);
}

static void figures_cb(const char *dest, int64_t pending, int64_t dead, void *user);

/* Requeue while stopped: the inbox is taken at open, behind the pending
 * rows, in requeue order, and the items link to their new rows. */
static void test_requeue_taken_at_open(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 0);
    put(f, q, "hl7", "D1", NULL, NULL, NULL);
    dead_letter_first(f, q);
    put(f, q, "hl7", "D2", NULL, NULL, NULL);
    dead_letter_first(f, q);
    put(f, q, "hl7", "P1", NULL, NULL, NULL); /* pending: stays first */
    close_q(f, q);

    got_t g = list(f, NULL);
    assert_int_equal(g.n, 2);
    worklist_t *w = NULL;
    err_detail_t d;
    assert_int_equal(worklist_open(f->path, &w, &d), ERR_OK);
    assert_int_equal(worklist_requeue(w, g.id[0], "coder1", &d), ERR_OK);
    assert_int_equal(worklist_requeue(w, g.id[1], "coder1", &d), ERR_OK);
    assert_int_equal(worklist_requeue(w, g.id[0], "coder1", &d), ERR_BAD_VALUE);
    int64_t inbox = -1;
    assert_int_equal(worklist_queue_figures(w, figures_cb, NULL, &inbox, &d), ERR_OK);
    assert_int_equal(inbox, 2);
    worklist_close(w);

    q = open_q(f, 0);
    fetched_t x = {0};
    queue_reader_t *r = NULL;
    assert_int_equal(queue_reader_open(q, "hl7", NULL, &x, &r, &d), ERR_OK);
    assert_int_equal(queue_depth(q, "hl7"), 3);
    fetch_all(f, r);
    assert_int_equal(x.n, 3);
    assert_string_equal(x.rows[0]->control_id, "P1");
    assert_string_equal(x.rows[1]->control_id, "D1");
    assert_string_equal(x.rows[2]->control_id, "D2");
    char want[32];
    g = list(f, NULL);
    snprintf(want, sizeof want, "queue:%lld", (long long)x.rows[1]->id);
    assert_string_equal(g.link[0], want);
    assert_string_equal(g.state[0], "requeued");
    snprintf(want, sizeof want, "queue:%lld", (long long)x.rows[2]->id);
    assert_string_equal(g.link[1], want);
    free_fetched(&x);
    queue_reader_close(r);
    close_q(f, q);
}

static void figures_cb(const char *dest, int64_t pending, int64_t dead, void *user)
{
    (void)dest;
    (void)pending;
    (void)dead;
    (void)user;
}

/* Runs the loop until the reader's ready_cb fired (a bounded number of
 * turns of a 5 ms timer: no time is asserted, only that it happens). */
typedef struct {
    fetched_t *x;
    int turns;
} waiter_t;

static void wait_tick(uv_timer_t *t)
{
    waiter_t *w = t->data;
    if (w->x->ready || ++w->turns > 2000)
        uv_timer_stop(t);
}

static void wait_ready(fx_t *f, fetched_t *x)
{
    uv_timer_t t;
    waiter_t w = {x, 0};
    uv_timer_init(&f->loop, &t);
    t.data = &w;
    uv_timer_start(&t, wait_tick, 5, 5);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(x->ready);
}

/* Resend while the queue is open (a running daemon): the inbox poll takes
 * the message, counts it and wakes the destination's reader. */
static void test_resend_taken_while_open(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 5);
    put(f, q, "reject-hl7", "R1", META_HL7, NULL, "reject");
    fetched_t x = {0};
    queue_reader_t *r = NULL;
    err_detail_t d;
    assert_int_equal(queue_reader_open(q, "hl7", ready_cb, &x, &r, &d), ERR_OK);
    assert_false(queue_reader_has_more(r));

    got_t g = list(f, NULL);
    worklist_t *w = NULL;
    assert_int_equal(worklist_open(f->path, &w, &d), ERR_OK);
    worklist_msg_t m = {"hl7", "R1", "application/hl7-v2", NULL, "{\"source\":\"mllp\"}",
                        "MSH|fixed", 9};
    worklist_msg_t bad = {"no such/dest", "R1", "application/hl7-v2", NULL, NULL, "MSH|", 4};
    assert_int_equal(worklist_resend(w, g.id[0], &bad, "coder1", NULL, &d), ERR_BAD_VALUE);
    assert_int_equal(worklist_resend(w, g.id[0], &m, "coder1", "dropped Q76.2", &d), ERR_OK);
    worklist_close(w);

    wait_ready(f, &x);
    assert_true(queue_reader_has_more(r));
    assert_int_equal(queue_depth(q, "hl7"), 1);
    fetch_all(f, r);
    assert_int_equal(x.n, 1);
    assert_int_equal(x.rows[0]->payload_len, 9);
    assert_memory_equal(x.rows[0]->payload, "MSH|fixed", 9);
    g = list(f, NULL);
    assert_string_equal(g.state[0], "resent");
    char want[32];
    snprintf(want, sizeof want, "queue:%lld", (long long)x.rows[0]->id);
    assert_string_equal(g.link[0], want);
    free_fetched(&x);
    queue_reader_close(r);
    close_q(f, q);
}

/* Items not open are pruned by age (of their last change); open ones never. */
static void test_prune_spares_open(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, 0);
    put(f, q, "reject-hl7", "OPEN", META_HL7, NULL, "reject");
    put(f, q, "reject-hl7", "DONE", META_HL7, NULL, "reject");
    put(f, q, "reject-hl7", "RECENT", META_HL7, NULL, "reject");
    close_q(f, q);
    got_t g = list(f, NULL);
    worklist_t *w = NULL;
    err_detail_t d;
    assert_int_equal(worklist_open(f->path, &w, &d), ERR_OK);
    assert_int_equal(worklist_resolve(w, g.id[1], "coder1", "done", &d), ERR_OK);
    assert_int_equal(worklist_resolve(w, g.id[2], "coder1", "done", &d), ERR_OK);
    worklist_close(w);

    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    /* Age the first two by 100 days; RECENT was changed just now. */
    char sql[160];
    snprintf(sql, sizeof sql,
             "UPDATE worklist SET received_ms=received_ms-8640000000,"
             " changed_ms=changed_ms-8640000000 WHERE id IN (%lld, %lld)",
             (long long)g.id[0], (long long)g.id[1]);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000;
    size_t n = 9;
    assert_int_equal(worklist__prune(db, 90, now, &n), SQLITE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(worklist__prune(db, 90, now, &n), SQLITE_OK);
    assert_int_equal(n, 0);
    sqlite3_close(db);
    g = list(f, NULL);
    assert_int_equal(g.n, 2);
    assert_string_equal(g.ctrl[0], "OPEN");
    assert_string_equal(g.ctrl[1], "RECENT");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reject_item_with_its_row, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_failed_item_fails_the_put, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_item, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_filters, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_resolve_states, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_open_missing_file, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_requeue_taken_at_open, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_resend_taken_while_open, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_prune_spares_open, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
