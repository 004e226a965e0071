/* test_worklist_pg.c - unit tests of outbound/worklist_pg.c against a real
 * PostgreSQL 15 server, started by test_worklist_pg.sh (pgserver.py), which
 * passes its URL in SG_PG_URL: items written by the real queue (queue_pg.c)
 * read back byte for byte; the filters; resolve, requeue and resend with
 * the states they allow, the rows they queue and the NOTIFY that wakes the
 * deliverer; two coders resending one item at once on two connections (one
 * wins); the prune that never touches open items; a database without the
 * schema, or with a newer one, refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "pg_db.h"
#include "queue.h"
#include "queue_int.h"
#include "worklist.h"

typedef struct {
    uv_loop_t loop;
    const char *url;
} fx_t;

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    f->url = getenv("SG_PG_URL");
    if (!f->url) {
        fprintf(stderr, "SG_PG_URL not set: run through test_worklist_pg.sh\n");
        return -1;
    }
    db_exec(f->url, "DROP TABLE IF EXISTS spinegate_msgs, spinegate_worklist, spinegate_meta,"
                    " spinegate_schema");
    uv_loop_init(&f->loop);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    for (int i = 0; i < 200 && uv_loop_alive(&f->loop); i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

static void flag_cb(void *user)
{
    *(bool *)user = true;
}

static void put_cb(queue_t *q, err_t status, int64_t id, void *user)
{
    (void)q;
    assert_int_equal(status, ERR_OK);
    *(int64_t *)user = id;
}

/* Stores items through the real PostgreSQL queue (which makes the schema
 * and writes each worklist item with its row); ids[i] is item i's row. */
static void store(fx_t *f, const queue_item_t *items, size_t n, int64_t *ids)
{
    queue_opts_t o = {.backend = QUEUE_BACKEND_POSTGRES, .url = f->url};
    queue_t *q = NULL;
    err_detail_t d;
    err_clear(&d);
    assert_int_equal(queue_open(&f->loop, NULL, &o, &q, &d), ERR_OK);
    for (size_t i = 0; i < n; i++) {
        ids[i] = 0;
        assert_int_equal(queue_put(q, &items[i], put_cb, &ids[i]), ERR_OK);
        while (!ids[i])
            uv_run(&f->loop, UV_RUN_ONCE);
    }
    bool closed = false;
    queue_close(q, flag_cb, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
}

static worklist_t *open_wl(fx_t *f)
{
    worklist_t *w = NULL;
    err_detail_t d;
    err_clear(&d);
    err_t e = worklist_open_pg(f->url, &w, &d);
    if (e)
        fail_msg("worklist_open_pg: %s", d.msg);
    return w;
}

/* What a walk saw. */
typedef struct {
    int n, stop_after;
    int64_t ids[16];
    char state[16][16], link[16][40], note[16][64], by[16][32];
    unsigned char payload[16][64];
    size_t payload_len[16];
    char control_id[16][32];
    int64_t msg_id[16];
} seen_t;

static int see(const worklist_item_t *it, void *user)
{
    seen_t *s = user;
    if (s->n >= 16)
        fail_msg("more items than a seen_t keeps");
    int i = s->n++;
    s->ids[i] = it->id;
    s->msg_id[i] = it->msg_id;
    snprintf(s->state[i], sizeof s->state[i], "%s", it->state);
    snprintf(s->link[i], sizeof s->link[i], "%s", it->link ? it->link : "");
    snprintf(s->note[i], sizeof s->note[i], "%s", it->note ? it->note : "");
    snprintf(s->by[i], sizeof s->by[i], "%s", it->changed_by ? it->changed_by : "");
    snprintf(s->control_id[i], sizeof s->control_id[i], "%s", it->control_id);
    s->payload_len[i] = it->payload_len;
    memcpy(s->payload[i], it->payload, it->payload_len < 64 ? it->payload_len : 64);
    return s->stop_after && s->n >= s->stop_after;
}

static seen_t list(worklist_t *w, worklist_filter_t f)
{
    seen_t s = {0};
    err_detail_t d;
    err_clear(&d);
    assert_int_equal(worklist_list(w, &f, see, &s, &d), ERR_OK);
    return s;
}

static seen_t get(worklist_t *w, int64_t id)
{
    seen_t s = {0};
    err_detail_t d;
    err_clear(&d);
    assert_int_equal(worklist_get(w, id, see, &s, &d), ERR_OK);
    return s;
}

static const char PAYLOAD1[] = "MSH|^~\\&|A\0B|x"; /* a NUL inside: bytes, not text */
#define PAYLOAD1_LEN (sizeof PAYLOAD1 - 1)

/* Three items: a reject from MLLP (meta names its rules and source, the
 * control id is not UTF-8), a FHIR reject with no meta (its rules only in
 * the findings summary), an annotated HL7 message. */
static void store_three(fx_t *f, int64_t *rows)
{
    queue_item_t items[3] = {
        {"reject-hl7",
         "C\xff"
         "1",
         "application/hl7-v2", PAYLOAD1, PAYLOAD1_LEN, "excludes1-pair:reject",
         "{\"source\":\"mllp\",\"rules\":[\"excludes1-pair\"]}", "reject", 0},
        {"reject-fhir", "claim-2", "application/fhir+json", "{}", 2,
         "site-unspecified:warn other-rule:reject", NULL, "reject", 0},
        {"hl7", "C3", "application/hl7-v2", "MSH|3", 5, "lat:warn", "{\"rules\":[\"lat\"]}",
         "annotate", 0},
    };
    store(f, items, 3, rows);
}

static void test_open_refused(void **state)
{
    fx_t *f = *state;
    worklist_t *w = NULL;
    err_detail_t d;
    err_clear(&d);
    /* No schema yet: the daemon makes it; the worklist does not. */
    assert_int_equal(worklist_open_pg(f->url, &w, &d), ERR_QUEUE);
    assert_null(w);
    assert_non_null(strstr(d.msg, "no spinegate queue"));
    assert_int_equal(worklist_open_pg("postgresql://127.0.0.1:1/x?connect_timeout=2", &w, &d),
                     ERR_QUEUE);
    assert_null(w);
    int64_t rows[3];
    store_three(f, rows);
    w = open_wl(f);
    worklist_close(w);
    db_exec(f->url, "INSERT INTO spinegate_schema(version) VALUES (3)");
    assert_int_equal(worklist_open_pg(f->url, &w, &d), ERR_QUEUE);
    assert_non_null(strstr(d.msg, "newer"));
    worklist_close(NULL);
}

static void test_list_and_filters(void **state)
{
    fx_t *f = *state;
    int64_t rows[3];
    store_three(f, rows);
    worklist_t *w = open_wl(f);
    seen_t s = list(w, (worklist_filter_t){0});
    assert_int_equal(s.n, 3);
    assert_true(s.ids[0] < s.ids[1] && s.ids[1] < s.ids[2]); /* oldest first */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(s.msg_id[i], rows[i]);
        assert_string_equal(s.state[i], "open");
    }
    assert_int_equal(s.payload_len[0], PAYLOAD1_LEN);
    assert_memory_equal(s.payload[0], PAYLOAD1, PAYLOAD1_LEN);
    assert_string_equal(s.control_id[0], "C\xff"
                                         "1");

    s = list(w, (worklist_filter_t){.rule = "excludes1-pair"});
    assert_int_equal(s.n, 1);
    assert_int_equal(s.msg_id[0], rows[0]);
    s = list(w, (worklist_filter_t){.rule = "other-rule"}); /* from the summary */
    assert_int_equal(s.n, 1);
    assert_int_equal(s.msg_id[0], rows[1]);
    s = list(w, (worklist_filter_t){.rule = "site"}); /* a rule id, not a prefix of one */
    assert_int_equal(s.n, 0);
    s = list(w, (worklist_filter_t){.source = "http"}); /* by its destination */
    assert_int_equal(s.n, 1);
    assert_int_equal(s.msg_id[0], rows[1]);
    s = list(w, (worklist_filter_t){.source = "mllp"});
    assert_int_equal(s.n, 2);
    s = list(w, (worklist_filter_t){.kind = "annotate", .state = "open"});
    assert_int_equal(s.n, 1);
    assert_int_equal(s.msg_id[0], rows[2]);
    s = list(w, (worklist_filter_t){.since_ms = 32503680000000LL}); /* year 3000 */
    assert_int_equal(s.n, 0);
    s = list(w, (worklist_filter_t){.until_ms = 1000});
    assert_int_equal(s.n, 0);

    /* Stopped after one: the rest is drained, the connection serves on. */
    s = (seen_t){.stop_after = 1};
    err_detail_t d;
    err_clear(&d);
    assert_int_equal(worklist_list(w, NULL, see, &s, &d), ERR_OK);
    assert_int_equal(s.n, 1);
    s = get(w, s.ids[0]);
    assert_int_equal(s.n, 1);
    assert_int_equal(worklist_get(w, 999999, see, &s, &d), ERR_NOT_FOUND);
    worklist_close(w);
}

/* stats' queue figures, as worklist_queue_figures hands them. */
typedef struct {
    int64_t hl7_pending, hl7_dead, rejects;
} fig_t;

static void dest_fn(const char *dest, int64_t pending, int64_t dead, void *user)
{
    fig_t *fig = user;
    if (strcmp(dest, "hl7") == 0) {
        fig->hl7_pending = pending;
        fig->hl7_dead = dead;
    } else {
        fig->rejects += pending;
    }
}

static void test_changes(void **state)
{
    fx_t *f = *state;
    int64_t rows[3];
    store_three(f, rows);
    worklist_t *w = open_wl(f);
    seen_t all = list(w, (worklist_filter_t){0});
    int64_t reject1 = all.ids[0], reject2 = all.ids[1], annotated = all.ids[2];
    err_detail_t d;
    err_clear(&d);

    assert_int_equal(worklist_resolve(w, reject2, "jdoe", "payer accepts", &d), ERR_OK);
    seen_t s = get(w, reject2);
    assert_string_equal(s.state[0], "resolved");
    assert_string_equal(s.note[0], "payer accepts");
    assert_string_equal(s.by[0], "jdoe");
    assert_int_equal(worklist_resolve(w, reject2, "jdoe", "again", &d), ERR_BAD_VALUE);
    assert_int_equal(worklist_resolve(w, 999999, "jdoe", "x", &d), ERR_NOT_FOUND);
    assert_int_equal(worklist_requeue(w, reject1, "jdoe", &d), ERR_BAD_VALUE); /* not dead */

    /* The annotated message made a dead letter, as the deliverer's mark does. */
    char sql[256];
    snprintf(sql, sizeof sql,
             "UPDATE spinegate_msgs SET state=3 WHERE id=%" PRId64 ";"
             "UPDATE spinegate_worklist SET kind='dead', reason='AR' WHERE id=%" PRId64,
             rows[2], annotated);
    db_exec(f->url, sql);

    /* The deliverer hears of a requeue by its NOTIFY. */
    PGconn *listener = db_conn(f->url);
    PQclear(PQexec(listener, "LISTEN " QUEUE__PG_CHANNEL));
    assert_int_equal(worklist_requeue(w, annotated, "jdoe", &d), ERR_OK);
    s = get(w, annotated);
    assert_string_equal(s.state[0], "requeued");
    int64_t requeued_row = 0;
    assert_int_equal(sscanf(s.link[0], "queue:%" SCNd64, &requeued_row), 1);
    assert_true(requeued_row > rows[2]); /* at the end of its destination */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM spinegate_msgs a, spinegate_msgs b WHERE a.id=%" PRId64
             " AND b.id=%" PRId64 " AND a.state=0 AND a.dest='hl7' AND a.payload=b.payload"
             " AND a.control_id=b.control_id AND b.state=4",
             requeued_row, rows[2]);
    assert_int_equal(db_count(f->url, sql), 1); /* pending copy; the dead row dead-lettered */
    bool heard = false;
    for (int i = 0; i < 50 && !heard; i++) {
        PQconsumeInput(listener);
        PGnotify *n;
        while ((n = PQnotifies(listener)) != NULL) {
            heard = heard || strcmp(n->extra, "hl7") == 0;
            PQfreemem(n);
        }
        if (!heard)
            uv_sleep(20);
    }
    assert_true(heard);
    PQfinish(listener);
    assert_int_equal(worklist_requeue(w, annotated, "jdoe", &d), ERR_BAD_VALUE);

    /* A corrected message: a pending row of its destination, byte for byte. */
    static const char fixed[] = "MSH|fixed\0bytes";
    worklist_msg_t bad = {"no such/dest", "C1",  "application/hl7-v2", NULL,
                          NULL,           fixed, sizeof fixed - 1};
    assert_int_equal(worklist_resend(w, reject1, &bad, "jdoe", NULL, &d), ERR_BAD_VALUE);
    assert_string_equal(get(w, reject1).state[0], "open");
    worklist_msg_t m = {"hl7",
                        "C\xff"
                        "1",
                        "application/hl7-v2",
                        "ok",
                        "{}",
                        fixed,
                        sizeof fixed - 1};
    assert_int_equal(worklist_resend(w, reject1, &m, "jdoe", "Q76.2 dropped", &d), ERR_OK);
    s = get(w, reject1);
    assert_string_equal(s.state[0], "resent");
    assert_string_equal(s.note[0], "Q76.2 dropped");
    int64_t resent_row = 0;
    assert_int_equal(sscanf(s.link[0], "queue:%" SCNd64, &resent_row), 1);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM spinegate_msgs WHERE id=%" PRId64 " AND state=0"
             " AND dest='hl7' AND payload='\\x4d53487c6669786564006279746573'::bytea"
             " AND control_id='\\x43ff31'::bytea AND meta=convert_to('{}', 'UTF8')",
             resent_row);
    assert_int_equal(db_count(f->url, sql), 1);
    assert_int_equal(worklist_resend(w, reject1, &m, "jdoe", NULL, &d), ERR_BAD_VALUE);

    /* stats: per destination, pending and not. */
    fig_t fig = {0};
    int64_t inbox = -1;
    assert_int_equal(worklist_queue_figures(w, dest_fn, &fig, &inbox, &d), ERR_OK);
    assert_int_equal(inbox, 0);
    assert_int_equal(fig.hl7_pending, 2); /* requeued and resent */
    assert_int_equal(fig.hl7_dead, 1);
    assert_int_equal(fig.rejects, 2);
    worklist_close(w);
}

/* Two coders resend one item at the same moment, each through its own
 * instance's connection: one wins, the other is told it is not open. */
typedef struct {
    worklist_t *w;
    int64_t id;
    pthread_barrier_t *go;
    err_t rc;
} racer_t;

static void *race(void *arg)
{
    racer_t *r = arg;
    worklist_msg_t m = {"hl7", "R", "application/hl7-v2", NULL, NULL, "MSH|r", 5};
    err_detail_t d;
    err_clear(&d);
    pthread_barrier_wait(r->go);
    r->rc = worklist_resend(r->w, r->id, &m, "racer", NULL, &d);
    return NULL;
}

static void test_two_coders_one_item(void **state)
{
    fx_t *f = *state;
    enum { ROUNDS = 16 }; /* what a seen_t keeps */
    queue_item_t items[ROUNDS];
    int64_t rows[ROUNDS];
    for (int i = 0; i < ROUNDS; i++)
        items[i] = (queue_item_t){"reject-hl7", "R",     "application/hl7-v2", "MSH|x", 5, NULL,
                                  NULL,         "reject",   0};
    store(f, items, ROUNDS, rows);
    worklist_t *w1 = open_wl(f), *w2 = open_wl(f);
    seen_t all = list(w1, (worklist_filter_t){0});
    assert_int_equal(all.n, ROUNDS);
    pthread_barrier_t go;
    for (int i = 0; i < ROUNDS; i++) {
        pthread_barrier_init(&go, NULL, 2);
        racer_t a = {w1, all.ids[i], &go, ERR_IO}, b = {w2, all.ids[i], &go, ERR_IO};
        pthread_t ta, tb;
        pthread_create(&ta, NULL, race, &a);
        pthread_create(&tb, NULL, race, &b);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        pthread_barrier_destroy(&go);
        assert_true((a.rc == ERR_OK && b.rc == ERR_BAD_VALUE) ||
                    (a.rc == ERR_BAD_VALUE && b.rc == ERR_OK));
    }
    assert_int_equal(db_count(f->url, "SELECT count(*) FROM spinegate_msgs WHERE dest='hl7'"),
                     ROUNDS); /* one row per item, never two */
    worklist_close(w1);
    worklist_close(w2);
}

static void test_prune_keeps_open(void **state)
{
    fx_t *f = *state;
    int64_t rows[3];
    store_three(f, rows);
    worklist_t *w = open_wl(f);
    seen_t all = list(w, (worklist_filter_t){0});
    err_detail_t d;
    err_clear(&d);
    assert_int_equal(worklist_resolve(w, all.ids[0], "jdoe", "done", &d), ERR_OK);
    assert_int_equal(worklist_resolve(w, all.ids[1], "jdoe", "done", &d), ERR_OK);
    size_t n = 99;
    assert_int_equal(worklist_prune(w, 90, &n, &d), ERR_OK);
    assert_int_equal(n, 0); /* changed today */
    /* All a year old; one resolved item changed today. */
    char sql[200];
    snprintf(sql, sizeof sql,
             "UPDATE spinegate_worklist SET received_ms=1, changed_ms=CASE WHEN id=%" PRId64
             " THEN changed_ms ELSE 1 END",
             all.ids[1]);
    db_exec(f->url, sql);
    assert_int_equal(worklist_prune(w, 90, &n, &d), ERR_OK);
    assert_int_equal(n, 1);
    seen_t left = list(w, (worklist_filter_t){0});
    assert_int_equal(left.n, 2);
    assert_int_equal(left.ids[0], all.ids[1]);
    assert_int_equal(left.ids[1], all.ids[2]);
    assert_string_equal(left.state[1], "open"); /* a year old, open: kept */
    worklist_close(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_refused, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_list_and_filters, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_changes, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_two_coders_one_item, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_prune_keeps_open, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
