/* test_queue.c - unit tests of outbound/queue.c against a real SQLite file:
 * put/commit/callback order, group commit batching, reopen and crash
 * recovery (a forked child killed with SIGKILL), pruning, backpressure,
 * corrupt files and rows, and queue_put_many's all-or-nothing groups. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "queue.h"
#include "queue_int.h"
#include "xmalloc.h"

typedef struct {
    char dir[64];
    char path[96];
    uv_loop_t loop;
} fx_t;

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_queue.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/queue.db", f->dir);
    uv_loop_init(&f->loop);
    queue__spill_ms = QUEUE__SPILL_MS; /* a test that raised it may have failed */
    memset(&queue__log_faults, 0, sizeof queue__log_faults);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    assert_int_equal(uv_loop_close(&f->loop), 0); /* every handle closed */
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

static queue_t *open_q(fx_t *f, const queue_opts_t *o)
{
    queue_t *q = NULL;
    err_detail_t d;
    err_clear(&d);
    err_t e = queue_open(&f->loop, f->path, o, &q, &d);
    if (e)
        fprintf(stderr, "queue_open: %s\n", d.msg);
    assert_int_equal(e, ERR_OK);
    return q;
}

/* Put results, in callback order. */
typedef struct {
    int n;
    int idx[20000];
    int64_t id[20000];
    err_t st[20000];
} puts_t;

typedef struct {
    puts_t *p;
    int idx;
} put_ctx_t;

static put_ctx_t ctxs[20000];

static void put_cb(queue_t *q, err_t status, int64_t id, void *user)
{
    put_ctx_t *c = user;
    c->p->idx[c->p->n] = c->idx;
    c->p->id[c->p->n] = id;
    c->p->st[c->p->n] = status;
    c->p->n++;
}

static err_t put_one(queue_t *q, puts_t *p, const char *dest, int idx, size_t len)
{
    char ctrl[32], payload[8192];
    snprintf(ctrl, sizeof ctrl, "MSG%05d", idx);
    assert_true(len <= sizeof payload);
    for (size_t i = 0; i < len; i++)
        payload[i] = (char)('A' + (idx + (int)i) % 26);
    queue_item_t it = {dest, ctrl, "application/hl7-v2", payload, len, "M4304 rejected", NULL, NULL, 0};
    ctxs[idx].p = p;
    ctxs[idx].idx = idx;
    return queue_put(q, &it, put_cb, &ctxs[idx]);
}

/* Reads every pending row of dest (in order) through a reader. */
typedef struct {
    queue_row_t *rows[20000];
    size_t n;
    bool done;
    err_t st;
} fetched_t;

static void fetch_cb(queue_reader_t *r, err_t status, queue_row_t **rows, size_t n, void *user)
{
    fetched_t *f = user;
    f->st = status;
    for (size_t i = 0; i < n; i++)
        f->rows[f->n++] = rows[i];
    f->done = true;
}

static queue_reader_t *fetch_all(fx_t *f, queue_t *q, const char *dest, fetched_t *out)
{
    queue_reader_t *r = NULL;
    err_detail_t d;
    assert_int_equal(queue_reader_open(q, dest, NULL, out, &r, &d), ERR_OK);
    memset(out, 0, sizeof *out);
    while (queue_reader_has_more(r)) {
        out->done = false;
        /* the reader's user pointer was given at open; pass the same */
        assert_int_equal(queue_reader_fetch(r, 100, fetch_cb), ERR_OK);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_true(out->done);
        assert_int_equal(out->st, ERR_OK);
    }
    return r;
}

static void free_fetched(fetched_t *x)
{
    for (size_t i = 0; i < x->n; i++)
        queue_row_free(x->rows[i]);
    x->n = 0;
}

static int ctrl_index(const queue_row_t *row)
{
    return atoi(row->control_id + 3);
}

static void test_put_commit_order(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, NULL);
    static puts_t p;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < 100; i++)
        assert_int_equal(put_one(q, &p, i % 2 ? "hl7" : "fhir", i, 100 + (size_t)i), ERR_OK);
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(st.depth, 100);
    assert_int_equal(st.put, 100);
    assert_int_equal(st.committed, 0); /* nothing is durable before the loop runs */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(p.n, 100);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(p.idx[i], i);
        assert_int_equal(p.st[i], ERR_OK);
        if (i)
            assert_true(p.id[i] > p.id[i - 1]);
    }
    queue_stats(q, &st);
    assert_int_equal(st.committed, 100);
    assert_int_equal(queue_depth(q, "hl7"), 50);
    assert_int_equal(queue_depth(q, "fhir"), 50);
    assert_int_equal(queue_depth(q, "nope"), 0);

    static fetched_t x;
    queue_reader_t *r = fetch_all(f, q, "hl7", &x);
    assert_int_equal(x.n, 50);
    for (size_t i = 0; i < x.n; i++) {
        int idx = ctrl_index(x.rows[i]);
        assert_int_equal(idx, (int)(2 * i + 1));
        assert_int_equal(x.rows[i]->payload_len, 100 + (size_t)idx);
        assert_int_equal(x.rows[i]->payload[0], 'A' + idx % 26);
        assert_string_equal(x.rows[i]->findings, "M4304 rejected");
        assert_string_equal(x.rows[i]->content_type, "application/hl7-v2");
        assert_int_equal(x.rows[i]->attempts, 0);
    }
    free_fetched(&x);
    queue_reader_close(r);
    close_q(f, q);
}

static void test_group_commit_batches(void **state)
{
    fx_t *f = *state;
    queue_opts_t o = {.max_batch = 400};
    queue_t *q = open_q(f, &o);
    static puts_t p;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(put_one(q, &p, "hl7", i, 200), ERR_OK);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(p.n, 1000);
    /* 1000 puts in one loop turn with batches of 400: exactly 3 transactions. */
    assert_int_equal(st.commits, 3);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(p.idx[i], i);

    /* Puts arriving while a commit runs are batched into the next one. */
    memset(&p, 0, sizeof p);
    int i = 0;
    while (p.n < 1000) {
        if (i < 1000)
            assert_int_equal(put_one(q, &p, "hl7", i++, 200), ERR_OK);
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    uint64_t before = st.commits;
    queue_stats(q, &st);
    printf("# 1000 puts, one per loop turn: %llu transactions\n",
           (unsigned long long)(st.commits - before));
    assert_true(st.commits - before < 1000);
    close_q(f, q);
}

/* A put made in the next loop turn, before the loop polls again, joins the
 * commit of one made in this turn (the commit waits for that poll): here
 * from a timer that falls due in the next turn's timer phase. */
typedef struct {
    queue_t *q;
    puts_t *p;
} late_put_t;

static void late_put_cb(uv_timer_t *t)
{
    late_put_t *lp = t->data;
    assert_int_equal(put_one(lp->q, lp->p, "hl7", 1, 200), ERR_OK);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_commit_waits_one_poll(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, NULL);
    static puts_t p;
    memset(&p, 0, sizeof p);
    uv_timer_t t;
    late_put_t lp = {q, &p};
    uv_timer_init(&f->loop, &t);
    t.data = &lp;
    uv_update_time(&f->loop);
    assert_int_equal(put_one(q, &p, "hl7", 0, 200), ERR_OK);
    uv_timer_start(&t, late_put_cb, 0, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.st[0], ERR_OK);
    assert_int_equal(p.st[1], ERR_OK);
    assert_int_equal(st.commits, 1);
    close_q(f, q);
}

static void test_reopen_keeps_order(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, NULL);
    static puts_t p;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < 100; i++)
        put_one(q, &p, i % 2 ? "hl7" : "fhir", i, 64);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    close_q(f, q);

    q = open_q(f, NULL);
    assert_int_equal(queue_depth(q, "hl7"), 50);
    static fetched_t x;
    queue_reader_t *r = fetch_all(f, q, "hl7", &x);
    assert_int_equal(x.n, 50);
    for (size_t i = 0; i < 50; i++)
        assert_int_equal(ctrl_index(x.rows[i]), (int)(2 * i + 1));
    for (size_t i = 0; i < 10; i++)
        assert_int_equal(queue_mark_delivered(r, x.rows[i]->id), ERR_OK);
    assert_int_equal(queue_mark_attempt(r, x.rows[10]->id, 3, 2, "downstream answered AE"), ERR_OK);
    assert_int_equal(queue_mark_delivered(r, 0), ERR_BAD_VALUE);
    free_fetched(&x);
    queue_reader_close(r);
    close_q(f, q);

    q = open_q(f, NULL);
    assert_int_equal(queue_depth(q, "hl7"), 40);
    assert_int_equal(queue_depth(q, "fhir"), 50);
    r = fetch_all(f, q, "hl7", &x);
    assert_int_equal(x.n, 40);
    assert_int_equal(ctrl_index(x.rows[0]), 21);
    assert_int_equal(x.rows[0]->attempts, 3);
    assert_int_equal(x.rows[0]->rejects, 2); /* billing's refusals survive a restart */
    assert_int_equal(x.rows[1]->attempts, 0);
    assert_int_equal(x.rows[1]->rejects, 0);
    free_fetched(&x);
    queue_reader_close(r);
    close_q(f, q);
}

/* ---- crash: a child puts, reports each committed index, kills itself */

static int crash_fd;
static int crash_committed;

static void crash_put_cb(queue_t *q, err_t status, int64_t id, void *user)
{
    if (status != ERR_OK)
        _exit(3);
    int idx = (int)(intptr_t)user;
    if (write(crash_fd, &idx, sizeof idx) != sizeof idx)
        _exit(4);
    if (++crash_committed == 700)
        raise(SIGKILL); /* with later puts still uncommitted or mid-commit */
}

typedef struct {
    queue_t *q;
    int next;
} crash_feed_t;

static void crash_timer_cb(uv_timer_t *t)
{
    crash_feed_t *c = t->data;
    char payload[512];
    memset(payload, 'x', sizeof payload);
    for (int k = 0; k < 50 && c->next < 3000; k++, c->next++) {
        char ctrl[32];
        snprintf(ctrl, sizeof ctrl, "MSG%05d", c->next);
        queue_item_t it = {"hl7", ctrl, "application/hl7-v2", payload, sizeof payload, NULL, NULL, NULL, 0};
        if (queue_put(c->q, &it, crash_put_cb, (void *)(intptr_t)c->next) != ERR_OK)
            _exit(5);
    }
}

static void crash_child(const char *path, int fd, queue_sync_t sync)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    queue_opts_t o = {.sync = sync, .max_batch = 64};
    queue_t *q;
    if (queue_open(&loop, path, &o, &q, NULL) != ERR_OK)
        _exit(2);
    crash_fd = fd;
    crash_feed_t c = {q, 0};
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &c;
    uv_timer_start(&t, crash_timer_cb, 0, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    _exit(6); /* never reached: SIGKILL comes first */
}

static void crash_once(fx_t *f, queue_sync_t sync)
{
    unlink(f->path);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        crash_child(f->path, pfd[1], sync);
    }
    close(pfd[1]);
    static char seen[3000];
    memset(seen, 0, sizeof seen);
    int idx, ncommitted = 0;
    while (read(pfd[0], &idx, sizeof idx) == sizeof idx) {
        assert_true(idx >= 0 && idx < 3000);
        seen[idx] = 1;
        ncommitted++;
    }
    close(pfd[0]);
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFSIGNALED(ws));
    assert_int_equal(WTERMSIG(ws), SIGKILL);
    assert_int_equal(ncommitted, 700);

    /* The lock died with the child: the queue opens, every acknowledged
     * message is there, in order; at most the commit in flight adds more. */
    queue_t *q = open_q(f, NULL);
    static fetched_t x;
    queue_reader_t *r = fetch_all(f, q, "hl7", &x);
    assert_true(x.n >= 700);
    int found = 0, prev = -1;
    for (size_t i = 0; i < x.n; i++) {
        int k = ctrl_index(x.rows[i]);
        assert_true(k > prev);
        assert_int_equal(k, (int)i); /* no gap: puts commit in order */
        prev = k;
        found += seen[k];
        assert_int_equal(x.rows[i]->payload_len, 512);
    }
    assert_int_equal(found, 700);
    printf("# crash (sync=%s): 700 acknowledged, %zu found after reopen\n",
           sync == QUEUE_SYNC_FULL ? "full" : "normal", x.n);
    free_fetched(&x);
    queue_reader_close(r);
    close_q(f, q);
}

static void test_crash_recovery(void **state)
{
    fx_t *f = *state;
    crash_once(f, QUEUE_SYNC_FULL);
    crash_once(f, QUEUE_SYNC_NORMAL);
}

static off_t file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? st.st_size : -1;
}

/* The one integer that sql answers on the queue's write connection. */
static int64_t db_int(queue_t *q, const char *sql)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(queue__db(q), sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The database's size in bytes as its connection sees it, WAL included: the
 * file alone lags behind until a checkpoint has copied the WAL into it. */
static off_t db_size(queue_t *q)
{
    return (off_t)(db_int(q, "PRAGMA page_count") * db_int(q, "PRAGMA page_size"));
}

static void test_delivered_pruned(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, NULL);
    static puts_t p;
    static fetched_t x;
    off_t after_first = 0;
    for (int round = 0; round < 6; round++) {
        memset(&p, 0, sizeof p);
        for (int i = 0; i < 500; i++)
            put_one(q, &p, "hl7", i, 4000);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        queue_reader_t *r = fetch_all(f, q, "hl7", &x);
        assert_int_equal(x.n, 500);
        for (size_t i = 0; i < x.n; i++)
            queue_mark_delivered(r, x.rows[i]->id);
        free_fetched(&x);
        queue_reader_close(r);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        if (round == 0)
            after_first = db_size(q);
    }
    assert_int_equal(queue_depth(q, "hl7"), 0);
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(st.delivered, 3000);
    /* Deleting a delivered row does not zero and rewrite its freed page (a
     * page more to the WAL and the checkpoint per message): "fast" (2), not
     * the "on" that Debian's SQLite starts with. */
    assert_int_equal(db_int(q, "PRAGMA secure_delete"), 2);
    off_t end = db_size(q);
    close_q(f, q);

    /* No row left, and the file reuses its free pages instead of growing. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM msgs", -1, &s, NULL), 0);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    printf("# database after 500 x 4 kB: %lld bytes; after 3000: %lld bytes\n",
           (long long)after_first, (long long)end);
    assert_true(end <= 2 * after_first + 65536);
}

/* With queue-sync=full a put is answered only after an fdatasync of the WAL
 * that began after its commit. When that sync cannot be made (here the WAL
 * cannot even be opened: its name was unlinked under the open connections)
 * the puts are refused, never acknowledged; so is every later put, and it
 * is not even written (what follows a failed sync in the WAL may be lost
 * with it). */
/* Puts messages from..to-1 and runs the loop: each is answered, refused. */
static void put_refused(fx_t *f, queue_t *q, puts_t *p, int from, int to)
{
    for (int i = from; i < to; i++)
        assert_int_equal(put_one(q, p, "hl7", i, 100), ERR_OK);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(p->n, to);
    for (int i = from; i < to; i++)
        assert_int_equal(p->st[i], ERR_QUEUE);
}

static void test_full_sync_failure_refuses(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, NULL);
    char wal[128];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    assert_int_equal(unlink(wal), 0);
    static puts_t p;
    memset(&p, 0, sizeof p);
    put_refused(f, q, &p, 0, 3); /* the sync fails */
    put_refused(f, q, &p, 3, 5); /* after it */
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(st.failed, 5);
    assert_true(st.commit_failures >= 1);
    assert_int_equal(db_int(q, "SELECT count(*) FROM msgs"), 3); /* the later ones unwritten */
    close_q(f, q);
}

/* Where queue-sync=full runs its syncs: on the loop while they are fast;
 * one late sync among fast ones (10-40 ms were seen on a virtual disk)
 * leaves them there; a disk that stays slow, or hangs once for long, moves
 * them to the pool, and they come back once it is fast again. */
static uint32_t syncs(uint32_t *avg, bool *pool, uint32_t took_us, int n, bool until)
{
    uint32_t count = 0;
    while (count < (uint32_t)n) {
        *pool = queue__sync_on_pool(avg, took_us, *pool);
        count++;
        if (*pool == until)
            break;
    }
    return count;
}

static void test_sync_place(void **state)
{
    (void)state;
    uint32_t avg = 0;
    bool pool = false;
    syncs(&avg, &pool, 150, 100, true); /* a fast disk */
    assert_false(pool);
    syncs(&avg, &pool, 40000, 1, true); /* one late sync */
    assert_false(pool);
    syncs(&avg, &pool, 150, 20, true);
    assert_false(pool);
    uint32_t n = syncs(&avg, &pool, 15000, 100, true); /* the disk turns slow */
    assert_true(pool);
    assert_true(n > 1 && n < 20);
    syncs(&avg, &pool, 9000, 100, false); /* slow, if less so: stays */
    assert_true(pool);
    n = syncs(&avg, &pool, 150, 100, false); /* fast again */
    assert_false(pool);
    assert_true(n > 1 && n < 30);
    syncs(&avg, &pool, 3000000, 1, true); /* a 3 s hang */
    assert_true(pool);
}

static void test_full_is_busy(void **state)
{
    fx_t *f = *state;
    queue_opts_t o = {.max_queued = 10, .max_payload = 1000};
    queue_t *q = open_q(f, &o);
    static puts_t p;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < 10; i++)
        assert_int_equal(put_one(q, &p, "hl7", i, 10), ERR_OK);
    assert_int_equal(put_one(q, &p, "hl7", 10, 10), ERR_BUSY);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(put_one(q, &p, "fhir", 10, 10), ERR_BUSY); /* the bound is global */
    static fetched_t x;
    queue_reader_t *r = fetch_all(f, q, "hl7", &x);
    assert_int_equal(queue_mark_dead(r, x.rows[0]->id, 10, "downstream answered AR"), ERR_OK);
    assert_int_equal(put_one(q, &p, "hl7", 11, 10), ERR_OK);
    free_fetched(&x);

    /* Malformed items are refused without a callback. */
    queue_item_t it = {"h l7", "c", "text/plain", "x", 1, NULL, NULL, NULL, 0};
    assert_int_equal(queue_put(q, &it, NULL, NULL), ERR_BAD_VALUE);
    it.dest = "";
    assert_int_equal(queue_put(q, &it, NULL, NULL), ERR_BAD_VALUE);
    it.dest = "hl7";
    it.content_type = "";
    assert_int_equal(queue_put(q, &it, NULL, NULL), ERR_BAD_VALUE);
    it.content_type = "text/plain";
    it.payload_len = 0;
    assert_int_equal(queue_put(q, &it, NULL, NULL), ERR_EMPTY);
    static char big[1001];
    it.payload = big;
    it.payload_len = sizeof big;
    assert_int_equal(queue_put(q, &it, NULL, NULL), ERR_TOO_LARGE);
    queue_reader_close(r);

    /* A second opener of the same file is refused while we hold it. */
    queue_t *q2 = NULL;
    err_detail_t d;
    assert_int_equal(queue_open(&f->loop, f->path, NULL, &q2, &d), ERR_BUSY);
    assert_null(q2);

    int closed = 0;
    queue_close(q, closed_cb, &closed);
    assert_int_equal(put_one(q, &p, "hl7", 12, 10), ERR_CLOSED);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    assert_int_equal(p.n, 11); /* the last put was committed by the close */
}

/* One queue_put_many callback. */
typedef struct {
    int calls;
    err_t st;
    size_t n;
    int64_t ids[8];
    int order; /* position among all put callbacks (puts_t.n when it ran) */
    puts_t *p;
} many_t;

static void many_cb(queue_t *q, err_t status, const int64_t *ids, size_t n, void *user)
{
    many_t *m = user;
    m->calls++;
    m->st = status;
    m->n = n;
    m->order = m->p->n;
    if (ids)
        memcpy(m->ids, ids, n * sizeof *ids);
    else
        memset(m->ids, 0, sizeof m->ids);
}

/* n items for dest, control ids GRP<tag><i>, payloads of len[i] bytes. */
static void many_items(queue_item_t *it, size_t n, const char *dest, char ctrl[][32], char *payload,
                       const size_t *len, int tag)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(ctrl[i], 32, "GRP%d%zu", tag, i);
        it[i] = (queue_item_t){dest, ctrl[i], "application/fhir+json", payload, len[i], NULL, NULL, NULL, 0};
    }
}

static void test_put_many_atomic(void **state)
{
    fx_t *f = *state;
    queue_opts_t o = {.max_batch = 2};
    queue_t *q = open_q(f, &o);
    static puts_t p;
    memset(&p, 0, sizeof p);
    static char payload[8192];
    memset(payload, 'x', sizeof payload);
    queue_item_t it[3];
    char ctrl[3][32];
    size_t len[3] = {100, 200, 300};

    /* All stored: one callback, consecutive ids in item order, in put order
     * with the single puts around it; a batch of 2 is not cut inside it. */
    many_t m = {.p = &p};
    assert_int_equal(put_one(q, &p, "fhir", 0, 10), ERR_OK);
    many_items(it, 3, "fhir", ctrl, payload, len, 1);
    size_t refused = 99;
    assert_int_equal(queue_put_many(q, it, 3, many_cb, &m, &refused), ERR_OK);
    assert_int_equal(refused, 0);
    assert_int_equal(put_one(q, &p, "fhir", 1, 10), ERR_OK);
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(st.depth, 5);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(m.calls, 1);
    assert_int_equal(m.st, ERR_OK);
    assert_int_equal(m.n, 3);
    assert_int_equal(m.order, 1); /* after put 0, before put 1 */
    assert_int_equal(p.n, 2);
    assert_true(m.ids[0] > p.id[0]);
    assert_int_equal(m.ids[1], m.ids[0] + 1);
    assert_int_equal(m.ids[2], m.ids[0] + 2);
    assert_true(p.id[1] > m.ids[2]);
    queue_stats(q, &st);
    assert_int_equal(st.commits, 2); /* {put 0, the group}, {put 1} */
    assert_int_equal(st.committed, 5);
    assert_int_equal(queue_depth(q, "fhir"), 5);

    /* A refused item refuses the group: nothing taken, no callback. */
    memset(&m, 0, sizeof m);
    m.p = &p;
    many_items(it, 3, "fhir", ctrl, payload, len, 2);
    static char long_id[QUEUE_CONTROL_ID_MAX + 2];
    memset(long_id, 'L', sizeof long_id - 1);
    it[1].control_id = long_id;
    assert_int_equal(queue_put_many(q, it, 3, many_cb, &m, &refused), ERR_BAD_VALUE);
    assert_int_equal(refused, 1);
    it[1].control_id = ctrl[1];
    it[2].payload_len = 0;
    assert_int_equal(queue_put_many(q, it, 3, many_cb, &m, &refused), ERR_EMPTY);
    assert_int_equal(refused, 2);
    assert_int_equal(queue_put_many(q, it, 0, many_cb, &m, &refused), ERR_BAD_VALUE);
    queue_stats(q, &st);
    assert_int_equal(st.depth, 5);
    assert_int_equal(st.put, 5);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(m.calls, 0);

    /* A storage error on the third insert of the transaction rolls back the
     * first two: one ERR_QUEUE callback, no row stored. The seam: SQLite's
     * length limit lowered on the write connection, so that the third
     * payload's bind is refused (SQLITE_TOOBIG) and its insert then fails on
     * the schema's NOT NULL payload, inside the group commit. */
    sqlite3_limit(queue__db(q), SQLITE_LIMIT_LENGTH, 4096);
    size_t len_bad[3] = {100, 200, 5000};
    many_items(it, 3, "fhir", ctrl, payload, len_bad, 3);
    assert_int_equal(queue_put_many(q, it, 3, many_cb, &m, NULL), ERR_OK);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(m.calls, 1);
    assert_int_equal(m.st, ERR_QUEUE);
    assert_int_equal(m.n, 3);
    assert_int_equal(m.ids[0], 0);
    queue_stats(q, &st);
    assert_int_equal(st.failed, 3);
    assert_int_equal(st.depth, 5);
    assert_int_equal(queue_depth(q, "fhir"), 5);
    int64_t max_before = queue_max_id(q);

    /* The same group once the fault is gone: all three stored. */
    sqlite3_limit(queue__db(q), SQLITE_LIMIT_LENGTH, 1000000000);
    memset(&m, 0, sizeof m);
    m.p = &p;
    assert_int_equal(queue_put_many(q, it, 3, many_cb, &m, NULL), ERR_OK);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(m.calls, 1);
    assert_int_equal(m.st, ERR_OK);
    assert_true(m.ids[0] > max_before);

    /* What a reader sees: the first group, put 1, the last group; nothing of
     * the failed one. */
    static fetched_t x;
    queue_reader_t *r = fetch_all(f, q, "fhir", &x);
    assert_int_equal(x.n, 8);
    const char *want[8] = {"MSG00000", "GRP10", "GRP11", "GRP12",
                           "MSG00001", "GRP30", "GRP31", "GRP32"};
    for (size_t i = 0; i < x.n; i++)
        assert_string_equal(x.rows[i]->control_id, want[i]);
    assert_int_equal(x.rows[7]->payload_len, 5000);
    free_fetched(&x);
    queue_reader_close(r);

    /* A group given before the close is committed by it; after, refused. */
    memset(&m, 0, sizeof m);
    m.p = &p;
    assert_int_equal(queue_put_many(q, it, 3, many_cb, &m, NULL), ERR_OK);
    int closed = 0;
    queue_close(q, closed_cb, &closed);
    assert_int_equal(queue_put_many(q, it, 3, many_cb, &m, NULL), ERR_CLOSED);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    assert_int_equal(m.calls, 1);
    assert_int_equal(m.st, ERR_OK);
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    fclose(fp);
}

static void test_corrupt_file(void **state)
{
    fx_t *f = *state;
    queue_t *q = NULL;
    err_detail_t d;
    char garbage[8192];
    for (size_t i = 0; i < sizeof garbage; i++)
        garbage[i] = (char)(i * 7 + 3);
    write_file(f->path, garbage, sizeof garbage);
    assert_int_equal(queue_open(&f->loop, f->path, NULL, &q, &d), ERR_QUEUE);
    assert_null(q);
    printf("# garbage file: %s\n", d.msg);

    /* A real SQLite file that is not ours. */
    unlink(f->path);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(x); PRAGMA user_version=1", 0, 0, 0), 0);
    sqlite3_close(db);
    assert_int_equal(queue_open(&f->loop, f->path, NULL, &q, &d), ERR_QUEUE);
    printf("# foreign database: %s\n", d.msg);
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=7", 0, 0, 0), 0);
    sqlite3_close(db);
    assert_int_equal(queue_open(&f->loop, f->path, NULL, &q, &d), ERR_QUEUE);

    /* Our database cut in half. */
    unlink(f->path);
    q = open_q(f, NULL);
    static puts_t p;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < 200; i++)
        put_one(q, &p, "hl7", i, 4000);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    close_q(f, q);
    off_t sz = file_size(f->path);
    assert_int_equal(truncate(f->path, sz / 2), 0);
    q = NULL;
    err_t e = queue_open(&f->loop, f->path, NULL, &q, &d);
    if (e == ERR_OK) {
        /* SQLite may open it; reading must then fail cleanly, not crash. */
        static fetched_t x;
        queue_reader_t *r = NULL;
        assert_int_equal(queue_reader_open(q, "hl7", NULL, &x, &r, &d), ERR_OK);
        memset(&x, 0, sizeof x);
        queue_reader_fetch(r, 1000, fetch_cb);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        free_fetched(&x);
        queue_reader_close(r);
        close_q(f, q);
    } else {
        assert_int_equal(e, ERR_QUEUE);
    }
}

static void test_corrupt_row_marked_dead(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, NULL);
    static puts_t p;
    memset(&p, 0, sizeof p);
    put_one(q, &p, "hl7", 0, 10);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    close_q(f, q);

    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "INSERT INTO msgs(dest, control_id, content_type, payload, created_ms,"
                     " updated_ms) VALUES('hl7', x'410042', 'text/plain', x'00', 0, 0);"
                     "INSERT INTO msgs(dest, control_id, content_type, payload, attempts,"
                     " created_ms, updated_ms) VALUES('hl7', 'MSG00002', 'a/b', 'p', -1, 0, 0);"
                     "INSERT INTO msgs(dest, control_id, content_type, payload, created_ms,"
                     " updated_ms) VALUES('hl7', 'MSG00003', 'a/b', 'pay', 0, 0);",
                     0, 0, 0),
        0);
    sqlite3_close(db);

    q = open_q(f, NULL);
    assert_int_equal(queue_depth(q, "hl7"), 4);
    static fetched_t x;
    queue_reader_t *r = fetch_all(f, q, "hl7", &x);
    assert_int_equal(x.n, 2);
    assert_int_equal(ctrl_index(x.rows[0]), 0);
    assert_int_equal(ctrl_index(x.rows[1]), 3);
    assert_int_equal(x.rows[1]->payload_len, 3); /* TEXT payload read as bytes */
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(st.corrupt, 2);
    assert_int_equal(queue_depth(q, "hl7"), 2);
    free_fetched(&x);
    queue_reader_close(r);
    close_q(f, q);

    q = open_q(f, NULL);
    assert_int_equal(queue_depth(q, "hl7"), 2); /* the bad rows stay dead */
    close_q(f, q);
}

/* The 30-day prune removes a dead row only when a dead-letter file holds its
 * message (queue_mark_dead_lettered); a dead row that is the only copy
 * (queue_mark_dead: no folder, an unreadable row, or a row from a version
 * that could lose its file to a full disk) is kept however old. */
static void test_prune_keeps_only_copies(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, NULL);
    static puts_t p;
    static fetched_t x;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < 3; i++)
        put_one(q, &p, "hl7", i, 100);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    queue_reader_t *r = fetch_all(f, q, "hl7", &x);
    assert_int_equal(x.n, 3);
    assert_int_equal(queue_mark_dead(r, x.rows[0]->id, 1, "only here"), ERR_OK);
    assert_int_equal(queue_mark_dead_lettered(r, x.rows[1]->id, 1, "filed"), ERR_OK);
    free_fetched(&x);
    queue_reader_close(r);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    close_q(f, q);

    /* Forty days pass. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "UPDATE msgs SET updated_ms=updated_ms-40*86400000", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);

    q = open_q(f, NULL);
    assert_int_equal(queue_depth(q, "hl7"), 1); /* the pending one */
    close_q(f, q);
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT id, state FROM msgs ORDER BY id", -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), 1); /* dead, the only copy: kept */
    assert_int_equal(sqlite3_column_int(s, 1), 3);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), 3); /* pending: kept */
    assert_int_equal(sqlite3_column_int(s, 1), 0);
    assert_int_equal(sqlite3_step(s), SQLITE_DONE); /* row 2, dead-lettered: pruned */
    sqlite3_finalize(s);
    sqlite3_close(db);
}

/* The queue file as versions before the billing-reject count made it (schema
 * 1 without the rejects column), with one pending row and one attempt. */
static void make_old_queue(const char *path)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL;"
                     "CREATE TABLE msgs(id INTEGER PRIMARY KEY AUTOINCREMENT,"
                     " dest TEXT NOT NULL, control_id TEXT NOT NULL,"
                     " content_type TEXT NOT NULL, payload BLOB NOT NULL, findings TEXT,"
                     " state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
                     " last_error TEXT, created_ms INTEGER NOT NULL,"
                     " updated_ms INTEGER NOT NULL);"
                     "CREATE INDEX msgs_dest ON msgs(dest, state, id);"
                     "PRAGMA user_version=1;"
                     "INSERT INTO msgs(dest, control_id, content_type, payload, attempts,"
                     " created_ms, updated_ms) VALUES('hl7', 'MSG00001', 'a/b', x'41', 2, 1, 1);",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
}

/* An older queue file gets the rejects column at open (its rows count 0),
 * and the count given with an attempt is read back after a restart. */
static void test_rejects_persisted_old_file(void **state)
{
    fx_t *f = *state;
    make_old_queue(f->path);
    queue_t *q = open_q(f, NULL);
    static fetched_t x;
    queue_reader_t *r = fetch_all(f, q, "hl7", &x);
    assert_int_equal(x.n, 1);
    assert_int_equal(x.rows[0]->attempts, 2);
    assert_int_equal(x.rows[0]->rejects, 0);
    assert_int_equal(queue_mark_attempt(r, x.rows[0]->id, 3, 1, "downstream answered AR"), ERR_OK);
    free_fetched(&x);
    queue_reader_close(r);
    close_q(f, q);

    q = open_q(f, NULL); /* the column is there now: opened as is */
    r = fetch_all(f, q, "hl7", &x);
    assert_int_equal(x.n, 1);
    assert_int_equal(x.rows[0]->attempts, 3);
    assert_int_equal(x.rows[0]->rejects, 1);
    free_fetched(&x);
    queue_reader_close(r);
    close_q(f, q);

    /* A build from before the column still reads and writes the file: its
     * statements name their columns. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "INSERT INTO msgs(dest, control_id, content_type, payload,"
                                  " created_ms, updated_ms) VALUES('hl7', 'MSG00002', 'a/b',"
                                  " x'42', 1, 1);"
                                  "UPDATE msgs SET attempts=4 WHERE control_id='MSG00001'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    q = open_q(f, NULL);
    r = fetch_all(f, q, "hl7", &x);
    assert_int_equal(x.n, 2);
    assert_int_equal(x.rows[0]->rejects, 1);
    assert_int_equal(x.rows[1]->rejects, 0);
    free_fetched(&x);
    queue_reader_close(r);
    close_q(f, q);
}

/* queue_dead_review: asks about the rows marked the queue's only copy and
 * nothing else, does what each answer says in one transaction, and keeps
 * the pending figures right. */
typedef struct {
    int asked;
    char seen[8][16];
} review_t;

/* Runs sql on the file with a connection of its own (the queue closed). */
static void file_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
    sqlite3_free(err);
    assert_int_equal(rc, SQLITE_OK);
    sqlite3_close(db);
}

/* Puts count rows to hl7 and returns the id the first was given. */
static int64_t put_rows(fx_t *f, queue_t *q, int from, int count)
{
    static puts_t p;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < count; i++)
        assert_int_equal(put_one(q, &p, "hl7", from + i, 100), ERR_OK);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(p.n, count);
    for (int i = 0; i < count; i++) {
        assert_int_equal(p.st[i], ERR_OK);
        assert_true(i == 0 || p.id[i] == p.id[i - 1] + 1);
    }
    return p.id[0];
}

/* Delivers (deletes) every pending row of hl7. */
static void deliver_all(fx_t *f, queue_t *q)
{
    static fetched_t x;
    queue_reader_t *r = fetch_all(f, q, "hl7", &x);
    for (size_t i = 0; i < x.n; i++)
        queue_mark_delivered(r, x.rows[i]->id);
    free_fetched(&x);
    queue_reader_close(r);
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

/* Ids are never used twice, though the table no longer counts them
 * (schema 2, no AUTOINCREMENT): after every row was delivered and deleted,
 * across a clean restart they go on from the last one; after a crash
 * (the reserved block not given back) from the end of the block. */
static void test_ids_never_reused(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, NULL);
    assert_true(put_rows(f, q, 0, 5) == 1);
    deliver_all(f, q);
    assert_int_equal(db_int(q, "SELECT count(*) FROM msgs"), 0);
    close_q(f, q);

    q = open_q(f, NULL);
    assert_true(queue_max_id(q) == 5);
    assert_true(put_rows(f, q, 5, 3) == 6);
    deliver_all(f, q);
    /* One write of the floor for the whole block, not one a commit. */
    int64_t below = db_int(q, "SELECT v FROM meta WHERE k='ids-below'");
    assert_true(below > 8 && below <= 8 + 65536 + 1);
    close_q(f, q);

    /* As a crash leaves it: the block reserved up to 70000, not given back. */
    file_exec(f->path, "UPDATE meta SET v=70000 WHERE k='ids-below'");
    q = open_q(f, NULL);
    assert_true(queue_max_id(q) == 69999);
    assert_true(put_rows(f, q, 8, 2) == 70000);
    close_q(f, q);

    /* A damaged floor: the rows still there bound the ids from below. */
    file_exec(f->path, "DELETE FROM meta WHERE k='ids-below'");
    q = open_q(f, NULL);
    assert_true(queue_max_id(q) == 70001);
    assert_true(put_rows(f, q, 10, 1) == 70002);
    close_q(f, q);
}

/* A version 1 file (AUTOINCREMENT, sqlite_sequence ahead of the rows left)
 * is converted at open: its rows keep their ids and content, new ids start
 * above the old sequence, and the table has neither AUTOINCREMENT nor the
 * index of every row any more. */
static void test_v1_file_converted(void **state)
{
    fx_t *f = *state;
    make_old_queue(f->path);
    file_exec(f->path,
              "INSERT INTO msgs(dest, control_id, content_type, payload, created_ms, updated_ms)"
              " VALUES('hl7', 'MSG00002', 'a/b', x'42', 2, 2);"
              "INSERT INTO msgs(dest, control_id, content_type, payload, created_ms, updated_ms)"
              " VALUES('hl7', 'MSG00003', 'a/b', x'43', 3, 3);"
              "DELETE FROM msgs WHERE id=3;" /* sqlite_sequence stays at 3 */);
    queue_t *q = open_q(f, NULL);
    assert_int_equal(db_int(q, "PRAGMA user_version"), 2);
    assert_int_equal(db_int(q, "SELECT count(*) FROM sqlite_master WHERE name='msgs_dest'"), 0);
    assert_int_equal(db_int(q, "SELECT count(*) FROM sqlite_master WHERE name='msgs_held'"), 1);
    assert_int_equal(db_int(q, "SELECT instr(sql, 'AUTOINCREMENT') FROM sqlite_master"
                               " WHERE name='msgs'"),
                     0);
    assert_true(queue_max_id(q) == 3);
    static fetched_t x;
    queue_reader_t *r = fetch_all(f, q, "hl7", &x);
    assert_int_equal(x.n, 2);
    assert_true(x.rows[0]->id == 1 && x.rows[1]->id == 2);
    assert_string_equal(x.rows[0]->control_id, "MSG00001");
    assert_int_equal(x.rows[0]->attempts, 2);
    assert_int_equal(x.rows[1]->payload_len, 1);
    assert_int_equal(x.rows[1]->payload[0], 'B');
    free_fetched(&x);
    queue_reader_close(r);
    assert_true(put_rows(f, q, 4, 1) == 4);
    close_q(f, q);
    q = open_q(f, NULL); /* converted once: opened as it is now */
    assert_int_equal(queue_depth(q, "hl7"), 3);
    close_q(f, q);
}

static queue_dead_fate_t review_fate(const queue_row_t *row, void *user)
{
    review_t *rv = user;
    snprintf(rv->seen[rv->asked++ % 8], 16, "%s", row->control_id);
    int i = ctrl_index(row);
    return i == 1 ? QUEUE_DEAD_FILED : i == 2 ? QUEUE_DEAD_KEEP : QUEUE_DEAD_REQUEUE;
}

static void test_dead_review(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, NULL);
    static puts_t p;
    static fetched_t x;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < 6; i++)
        put_one(q, &p, "hl7", i, 50);
    put_one(q, &p, "fhir", 6, 50);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    queue_reader_t *r = fetch_all(f, q, "hl7", &x);
    assert_int_equal(x.n, 6);
    int64_t created0 = x.rows[0]->created_ms;
    /* 0, 1, 2, 3: only copies; 4: dead-lettered; 5: pending. */
    for (int i = 0; i < 4; i++)
        assert_int_equal(queue_mark_dead(r, x.rows[i]->id, 2, "only here"), ERR_OK);
    assert_int_equal(queue_mark_dead_lettered(r, x.rows[4]->id, 1, "filed"), ERR_OK);
    free_fetched(&x);
    queue_reader_close(r);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(queue_depth(q, "hl7"), 1);

    review_t rv = {0};
    size_t req = 9, filed = 9;
    err_detail_t d;
    assert_int_equal(queue_dead_review(q, "a b", review_fate, &rv, &req, &filed, &d),
                     ERR_BAD_VALUE);
    assert_int_equal(req, 0);
    assert_int_equal(queue_dead_review(q, "hl7", review_fate, &rv, &req, &filed, &d), ERR_OK);
    assert_int_equal(rv.asked, 4); /* not the dead-lettered, pending or fhir row */
    assert_string_equal(rv.seen[0], "MSG00000");
    assert_string_equal(rv.seen[3], "MSG00003");
    assert_int_equal(req, 2);
    assert_int_equal(filed, 1);
    assert_int_equal(queue_depth(q, "hl7"), 3);
    assert_true(queue_max_id(q) == 9);

    /* Pending again behind the pending one, in their order, tries reset. */
    r = fetch_all(f, q, "hl7", &x);
    assert_int_equal(x.n, 3);
    assert_int_equal(ctrl_index(x.rows[0]), 5);
    assert_int_equal(ctrl_index(x.rows[1]), 0);
    assert_int_equal(ctrl_index(x.rows[2]), 3);
    assert_true(x.rows[1]->id == 8 && x.rows[2]->id == 9);
    assert_int_equal(x.rows[1]->attempts, 0);
    assert_true(x.rows[1]->created_ms == created0); /* its first queue time */
    free_fetched(&x);
    queue_reader_close(r);

    /* The kept one is asked again next time; the others are gone from the review. */
    memset(&rv, 0, sizeof rv);
    assert_int_equal(queue_dead_review(q, "hl7", review_fate, &rv, &req, &filed, &d), ERR_OK);
    assert_int_equal(rv.asked, 1);
    assert_string_equal(rv.seen[0], "MSG00002");
    assert_int_equal(req, 0);
    assert_int_equal(filed, 0);
    close_q(f, q);
}

/* Another writer (the worklist, an admin command) holds the write lock when
 * a put commits: the loop goes on meanwhile (a timer of the loop is what
 * lets the lock go), and the put is stored once it is free. */
typedef struct {
    sqlite3 *other;
    puts_t *p;
    bool released;
    int puts_done_at_release;
} lock_holder_t;

static void release_lock_cb(uv_timer_t *t)
{
    lock_holder_t *h = t->data;
    h->puts_done_at_release = h->p->n;
    assert_int_equal(sqlite3_exec(h->other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    h->released = true;
    uv_close((uv_handle_t *)t, NULL);
}

static void test_commit_waits_for_another_writer_off_the_loop(void **state)
{
    fx_t *f = *state;
    queue_opts_t o = {.sync = QUEUE_SYNC_NORMAL};
    queue_t *q = open_q(f, &o);
    static puts_t p;
    memset(&p, 0, sizeof p);
    lock_holder_t h = {.p = &p};
    assert_int_equal(sqlite3_open(f->path, &h.other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(h.other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(put_one(q, &p, "hl7", 0, 300), ERR_OK);
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    t.data = &h;
    uv_timer_start(&t, release_lock_cb, 50, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(h.released);
    assert_int_equal(h.puts_done_at_release, 0); /* not stored while the lock was held */
    assert_int_equal(p.n, 1);
    assert_int_equal(p.st[0], ERR_OK);
    assert_int_equal(queue_depth(q, "hl7"), 1);
    sqlite3_close(h.other);
    close_q(f, q);
}

/* ---------------------------------------------------------------- the message log */

static const queue_opts_t log_opts = {.message_log = true, .sync = QUEUE_SYNC_NORMAL};
static const queue_opts_t log_opts_full = {.message_log = true, .sync = QUEUE_SYNC_FULL};

/* Runs the loop without blocking until *n reaches want (at most ~5 s). */
static void run_until_n(fx_t *f, const int *n, int want)
{
    for (int i = 0; i < 5000 && *n < want; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if (*n < want)
            usleep(1000);
    }
    assert_int_equal(*n, want);
}

/* Runs the loop until cond holds, for at most ~5 s (the caller then
 * asserts cond): what the tests wait for, not how long it takes. */
#define RUN_UNTIL(f, cond)                                                                         \
    for (int run_ = 0; run_ < 5000 && !(cond); run_++) {                                           \
        uv_run(&(f)->loop, UV_RUN_NOWAIT);                                                         \
        usleep(1000);                                                                              \
    }

/* Runs the loop for about ms milliseconds. */
static void run_for(fx_t *f, int ms)
{
    for (int i = 0; i < ms; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

/* The queue with the message log as o says, and a reader of hl7 caught up
 * (so that puts to hl7 go to the log). */
static queue_t *open_with_reader(fx_t *f, const queue_opts_t *o, fetched_t *x, queue_reader_t **r)
{
    queue_t *q = open_q(f, o);
    memset(x, 0, sizeof *x);
    assert_int_equal(queue_reader_open(q, "hl7", NULL, x, r, NULL), ERR_OK);
    return q;
}

/* Puts count messages of len bytes to hl7 and waits for every callback. */
static void put_n(fx_t *f, queue_t *q, puts_t *p, int count, size_t len)
{
    memset(p, 0, sizeof *p);
    for (int i = 0; i < count; i++)
        assert_int_equal(put_one(q, p, "hl7", i, len), ERR_OK);
    run_until_n(f, &p->n, count);
}

/* One fetch of at most max rows, added to x, waited for. */
static void fetch_once(fx_t *f, queue_reader_t *r, fetched_t *x, size_t max)
{
    x->done = false;
    assert_int_equal(queue_reader_fetch(r, max, fetch_cb), ERR_OK);
    for (int i = 0; i < 1000 && !x->done; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_true(x->done);
}

/* What a kill -9 would leave: the queue's files as they are now (the
 * page cache is what the next process reads), copied to the folder sub of
 * the test's directory (replaced); path gets the copy's queue.db. */
static void crash_image(fx_t *f, const char *sub, char *path, size_t len)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "rm -rf '%s/%s' && mkdir '%s/%s' && cp '%s' '%s-wal' '%s-log' '%s/%s/'", f->dir, sub,
             f->dir, sub, f->path, f->path, f->path, f->dir, sub);
    assert_int_equal(system(cmd), 0);
    snprintf(path, len, "%s/%s/queue.db", f->dir, sub);
}

static queue_t *open_at(fx_t *f, const char *path, const queue_opts_t *o)
{
    queue_t *q = NULL;
    err_detail_t d;
    err_clear(&d);
    err_t e = queue_open(&f->loop, path, o, &q, &d);
    if (e)
        fprintf(stderr, "queue_open: %s\n", d.msg);
    assert_int_equal(e, ERR_OK);
    return q;
}

static int64_t rows_in_table(queue_t *q)
{
    return db_int(q, "SELECT count(*) FROM msgs");
}

/* Pending rows of a reopened queue, in order: their control ids' indexes. */
static size_t pending_indexes(fx_t *f, queue_t *q, int *idx, size_t max)
{
    static fetched_t x;
    queue_reader_t *r = fetch_all(f, q, "hl7", &x);
    size_t n = x.n < max ? x.n : max;
    for (size_t i = 0; i < n; i++)
        idx[i] = ctrl_index(x.rows[i]);
    n = x.n;
    free_fetched(&x);
    queue_reader_close(r);
    return n;
}

/* Messages a caught-up reader will take are acknowledged from the log,
 * not the table; a crash then loses none of them: the next open puts them
 * in the table, in order, with their ids and contents. With full, the log
 * is written with O_DIRECT (queue_log.h). */
static void hot_puts_survive_a_crash(fx_t *f, const queue_opts_t *opts)
{
    queue_t *q = open_q(f, opts);
    queue_reader_t *r = NULL;
    static fetched_t x;
    memset(&x, 0, sizeof x);
    assert_int_equal(queue_reader_open(q, "hl7", NULL, &x, &r, NULL), ERR_OK);
    static puts_t p;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < 10; i++)
        assert_int_equal(put_one(q, &p, "hl7", i, 300 + (size_t)i), ERR_OK);
    run_until_n(f, &p.n, 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(p.st[i], ERR_OK);
    assert_int_equal(rows_in_table(q), 0); /* hot: in the log only */
    assert_int_equal(queue_depth(q, "hl7"), 10);

    char path[300];
    crash_image(f, "crash", path, sizeof path);
    queue_reader_close(r);
    close_q(f, q);

    q = open_at(f, path, opts);
    assert_int_equal(queue_depth(q, "hl7"), 10);
    r = fetch_all(f, q, "hl7", &x);
    assert_int_equal(x.n, 10);
    for (size_t i = 0; i < x.n; i++) {
        assert_int_equal(ctrl_index(x.rows[i]), (int)i);
        assert_int_equal(x.rows[i]->id, p.id[i]);
        assert_int_equal(x.rows[i]->payload_len, 300 + i);
        assert_int_equal(x.rows[i]->payload[0], 'A' + (int)i % 26);
        assert_string_equal(x.rows[i]->findings, "M4304 rejected");
    }
    free_fetched(&x);
    queue_reader_close(r);
    close_q(f, q);
}

static void test_log_hot_puts_survive_a_crash(void **state)
{
    hot_puts_survive_a_crash(*state, &log_opts);
}

static void test_log_hot_puts_survive_a_crash_full(void **state)
{
    hot_puts_survive_a_crash(*state, &log_opts_full);
}

/* Delivered hot messages are not brought back by a crash; the ones not
 * delivered are, once each. */
static void test_log_delivered_not_replayed(void **state)
{
    fx_t *f = *state;
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_with_reader(f, &log_opts, &x, &r);
    static puts_t p;
    put_n(f, q, &p, 8, 200);
    x.done = false;
    assert_int_equal(queue_reader_fetch(r, 100, fetch_cb), ERR_OK);
    int done = 0;
    while (!x.done && done++ < 1000)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(x.n, 8);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(queue_mark_delivered(r, x.rows[i]->id), ERR_OK);
    free_fetched(&x);
    RUN_UNTIL(f, queue_reader_unsynced(r) == 0); /* marks wait 10 ms for company */
    assert_int_equal(queue_reader_unsynced(r), 0);
    assert_int_equal(rows_in_table(q), 0); /* no row was ever written or deleted */

    char path[300];
    crash_image(f, "crash", path, sizeof path);
    queue_reader_close(r);
    close_q(f, q);
    q = open_at(f, path, &log_opts);
    int idx[16];
    assert_int_equal(pending_indexes(f, q, idx, 16), 3);
    assert_int_equal(idx[0], 5);
    assert_int_equal(idx[2], 7);
    close_q(f, q);
}

/* A hot message not delivered within half a second becomes a row (where
 * spinegate-admin sees it); delivered afterwards, a crash does not bring it
 * back (the log says the table has it). */
static void spill_by_age(fx_t *f, const queue_opts_t *o)
{
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_with_reader(f, o, &x, &r);
    static puts_t p;
    put_n(f, q, &p, 4, 100);
    assert_int_equal(rows_in_table(q), 0);
    RUN_UNTIL(f, rows_in_table(q) == 4);   /* after 500 ms */
    assert_int_equal(rows_in_table(q), 4); /* spilled */

    char path[300];
    crash_image(f, "crash", path, sizeof path);
    fetch_once(f, r, &x, 100);
    assert_int_equal(x.n, 4);
    for (size_t i = 0; i < x.n; i++)
        assert_int_equal(queue_mark_delivered(r, x.rows[i]->id), ERR_OK);
    free_fetched(&x);
    RUN_UNTIL(f, rows_in_table(q) == 0);
    assert_int_equal(rows_in_table(q), 0);
    run_for(f, 60); /* (the log's records of them ride with that commit) */
    char path2[300];
    crash_image(f, "crash2", path2, sizeof path2);
    queue_reader_close(r);
    close_q(f, q);

    /* Crashed while the rows waited: each once. */
    q = open_at(f, path, o);
    int idx[16];
    assert_int_equal(pending_indexes(f, q, idx, 16), 4);
    assert_int_equal(idx[3], 3);
    close_q(f, q);
    /* Crashed after they were delivered from the table: none. */
    q = open_at(f, path2, o);
    assert_int_equal(pending_indexes(f, q, idx, 16), 0);
    close_q(f, q);
}

static void test_log_spill_by_age(void **state)
{
    spill_by_age(*state, &log_opts);
}

/* With queue-sync=full the "the table holds it" records wait for the sync
 * of the rows they speak of. */
static void test_log_spill_by_age_full(void **state)
{
    spill_by_age(*state, &log_opts_full);
}

/* A clean stop leaves every pending message a row and the log empty, so a
 * run with the log off (or spinegate-admin) finds them all. */
static void test_log_close_leaves_rows(void **state)
{
    fx_t *f = *state;
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_with_reader(f, &log_opts_full, &x, &r);
    static puts_t p;
    put_n(f, q, &p, 6, 100);
    assert_int_equal(rows_in_table(q), 0);
    queue_reader_close(r);
    close_q(f, q);
    char logp[300];
    snprintf(logp, sizeof logp, "%s-log", f->path);
    assert_int_equal(file_size(logp), 64); /* the header alone */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK); /* as spinegate-admin reads it */
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM msgs", -1, &st, NULL), 0);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 6);
    sqlite3_finalize(st);
    sqlite3_close(db);

    q = open_q(f, NULL); /* the log off */
    assert_int_equal(rows_in_table(q), 6);
    int idx[16];
    assert_int_equal(pending_indexes(f, q, idx, 16), 6);
    close_q(f, q);
    assert_int_equal(file_size(logp), -1); /* read and removed by a run without it */
}

/* A crash image opened by a run with the log off still gets its messages. */
static void test_log_read_with_log_off(void **state)
{
    fx_t *f = *state;
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_with_reader(f, &log_opts, &x, &r);
    static puts_t p;
    put_n(f, q, &p, 3, 100);
    char path[300];
    crash_image(f, "crash", path, sizeof path);
    queue_reader_close(r);
    close_q(f, q);
    q = open_at(f, path, NULL);
    int idx[16];
    assert_int_equal(pending_indexes(f, q, idx, 16), 3);
    close_q(f, q);
}

/* Without a reader (or with worklist items) messages are rows as before. */
static void test_log_cold_without_reader(void **state)
{
    fx_t *f = *state;
    queue_t *q = open_q(f, &log_opts);
    static puts_t p;
    put_n(f, q, &p, 5, 100);
    assert_int_equal(rows_in_table(q), 5);
    close_q(f, q);
}

/* A retried hot message becomes a row carrying its attempts. */
static void test_log_attempt_spills(void **state)
{
    fx_t *f = *state;
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_with_reader(f, &log_opts, &x, &r);
    static puts_t p;
    memset(&p, 0, sizeof p);
    assert_int_equal(put_one(q, &p, "hl7", 0, 100), ERR_OK);
    run_until_n(f, &p.n, 1);
    fetch_once(f, r, &x, 10);
    assert_int_equal(x.n, 1);
    assert_int_equal(queue_mark_attempt(r, x.rows[0]->id, 1, 1, "AE from billing"), ERR_OK);
    free_fetched(&x);
    RUN_UNTIL(f, rows_in_table(q) == 1);
    assert_int_equal(db_int(q, "SELECT attempts FROM msgs"), 1);
    assert_int_equal(db_int(q, "SELECT rejects FROM msgs"), 1);
    queue_reader_close(r);
    close_q(f, q);
}

/* The epoch in a message log's header (little-endian, at byte 16). */
static uint64_t log_epoch_of(const char *path)
{
    unsigned char h[24];
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(h, 1, sizeof h, fp), sizeof h);
    fclose(fp);
    uint64_t e = 0;
    for (int i = 7; i >= 0; i--)
        e = e << 8 | h[16 + i];
    return e;
}

/* Past 4 MiB the log starts over (the table took what was hot), and a
 * crash after that still loses nothing and brings back nothing delivered. */
static void log_restarts(fx_t *f, const queue_opts_t *opts)
{
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_with_reader(f, opts, &x, &r);
    static puts_t p;
    memset(&p, 0, sizeof p);
    char logp[300];
    snprintf(logp, sizeof logp, "%s-log", f->path);
    off_t peak = 0;
    int sent = 0;
    for (int round = 0; round < 12; round++) {
        for (int i = 0; i < 50; i++, sent++)
            assert_int_equal(put_one(q, &p, "hl7", sent, 8000), ERR_OK);
        run_until_n(f, &p.n, sent);
        x.n = 0;
        fetch_once(f, r, &x, 100);
        assert_int_equal(x.n, 50);
        for (size_t i = 0; i < x.n; i++)
            assert_int_equal(queue_mark_delivered(r, x.rows[i]->id), ERR_OK);
        free_fetched(&x);
        run_for(f, 30);
        off_t sz = file_size(logp);
        if (sz > peak)
            peak = sz;
    }
    assert_true(peak > (off_t)(4 << 20) - 2 * 8200 * 50);
    assert_true(log_epoch_of(logp) > 1); /* started over (1: the epoch the open began) */
    assert_true(file_size(logp) <= (off_t)(5 << 20)); /* its blocks kept, not grown */
    for (int i = 0; i < 3; i++, sent++)
        assert_int_equal(put_one(q, &p, "hl7", sent, 100), ERR_OK);
    run_until_n(f, &p.n, sent);
    char path[300];
    crash_image(f, "crash", path, sizeof path);
    queue_reader_close(r);
    close_q(f, q);
    q = open_at(f, path, opts);
    int idx[16];
    assert_int_equal(pending_indexes(f, q, idx, 16), 3);
    assert_int_equal(idx[0], 600);
    close_q(f, q);
}

static void test_log_restarts(void **state)
{
    log_restarts(*state, &log_opts);
}

/* Restarts with direct writes: the header goes through its block. */
static void test_log_restarts_full(void **state)
{
    log_restarts(*state, &log_opts_full);
}

/* A crash in the middle of a log write: the torn record is not read, the
 * messages before it are. */
static void test_log_torn_tail(void **state)
{
    fx_t *f = *state;
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_with_reader(f, &log_opts, &x, &r);
    static puts_t p;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(put_one(q, &p, "hl7", i, 500), ERR_OK);
        run_until_n(f, &p.n, i + 1); /* one record a write */
    }
    char path[300];
    crash_image(f, "crash", path, sizeof path);
    queue_reader_close(r);
    close_q(f, q);
    char logp[320];
    snprintf(logp, sizeof logp, "%s-log", path);
    off_t sz = file_size(logp);
    assert_int_equal(truncate(logp, sz - 100), 0); /* the last record cut short */
    q = open_at(f, path, &log_opts);
    int idx[16];
    assert_int_equal(pending_indexes(f, q, idx, 16), 3);
    assert_int_equal(idx[2], 2);
    close_q(f, q);
}

/* A reader that falls behind its memory (more than its ring holds) reads
 * the file, and the file must then hold the hot messages: they are spilled
 * first, and every message comes out once, in order. */
static void test_log_reader_behind_reads_spilled(void **state)
{
    fx_t *f = *state;
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_with_reader(f, &log_opts, &x, &r);
    static puts_t p;
    put_n(f, q, &p, 700, 100);
    assert_true(rows_in_table(q) < 700); /* some went hot */
    size_t got = 0;
    while (queue_reader_has_more(r)) {
        x.done = false;
        assert_int_equal(queue_reader_fetch(r, 100, fetch_cb), ERR_OK);
        for (int i = 0; i < 3000 && !x.done; i++) {
            uv_run(&f->loop, UV_RUN_NOWAIT);
            if (!x.done)
                usleep(200);
        }
        assert_true(x.done);
        assert_int_equal(x.st, ERR_OK);
        for (; got < x.n; got++)
            assert_int_equal(ctrl_index(x.rows[got]), (int)got);
    }
    assert_int_equal(got, 700);
    for (size_t i = 0; i < x.n; i++)
        assert_int_equal(queue_mark_delivered(r, x.rows[i]->id), ERR_OK);
    free_fetched(&x);
    RUN_UNTIL(f, rows_in_table(q) == 0);
    assert_int_equal(rows_in_table(q), 0);
    queue_reader_close(r);
    close_q(f, q);
}

/* The message log's size: unchanged when nothing more was written to it. */
static off_t log_file_size(fx_t *f)
{
    char logp[300];
    snprintf(logp, sizeof logp, "%s-log", f->path);
    return file_size(logp);
}

/* Puts messages 3 and 4 in one loop turn (one batch, both hot) while the
 * log fault *fault is EIO, and checks that both are refused. */
static void puts_3_4_refused_under(fx_t *f, queue_t *q, puts_t *p, int *fault)
{
    *fault = EIO;
    for (int i = 3; i < 5; i++)
        assert_int_equal(put_one(q, p, "hl7", i, 100), ERR_OK);
    run_until_n(f, &p->n, 5);
    *fault = 0;
    assert_int_equal(p->st[3], ERR_QUEUE);
    assert_int_equal(p->st[4], ERR_QUEUE);
}

/* No spill by age for the rest of the test: a spill seen is one for a
 * cause, and the test need not time it. */
static void no_spill_by_age(void)
{
    queue__spill_ms = (uint64_t)3600 * 1000;
}

/* The start of the log failure tests: a queue with a reader, spill by age
 * off. */
static queue_t *open_log_test(fx_t *f, const queue_opts_t *o, fetched_t *x, queue_reader_t **r)
{
    queue_t *q = open_with_reader(f, o, x, r);
    no_spill_by_age();
    return q;
}

/* One fetch, which must give the puts of want (indexes), in that order. */
static void fetch_expect(fx_t *f, queue_reader_t *r, fetched_t *x, const int *want, size_t n)
{
    fetch_once(f, r, x, 100);
    assert_int_equal(x->n, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ctrl_index(x->rows[i]), want[i]);
}

/* A failed log write refuses its batch's hot puts (they are nowhere) and
 * turns the log off until a restart: the hot messages acknowledged before
 * are spilled with the next commit, not at their age, and later puts and
 * marks go to the table without another log write. After a clean stop the
 * messages delivered from the table do not come back from the log (its
 * epoch was retired: no "the table holds it" record reaches a failed log). */
static void test_log_write_failure_turns_log_off(void **state)
{
    fx_t *f = *state;
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_log_test(f, &log_opts, &x, &r);
    static puts_t p;
    put_n(f, q, &p, 3, 100);
    assert_int_equal(rows_in_table(q), 0); /* hot */
    off_t log_size = log_file_size(f);

    puts_3_4_refused_under(f, q, &p, &queue__log_faults.write_errno);
    RUN_UNTIL(f, rows_in_table(q) == 3);
    assert_int_equal(rows_in_table(q), 3); /* the hot ones spilled, for the failure */

    for (int i = 5; i < 7; i++)
        assert_int_equal(put_one(q, &p, "hl7", i, 100), ERR_OK);
    run_until_n(f, &p.n, 7);
    assert_int_equal(p.st[5], ERR_OK);
    assert_int_equal(p.st[6], ERR_OK);
    assert_int_equal(rows_in_table(q), 5); /* cold */
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(st.failed, 2);

    /* The reader gets every acknowledged message once, and none refused. */
    const int want[] = {0, 1, 2, 5, 6};
    fetch_expect(f, r, &x, want, 5);
    for (size_t i = 0; i < x.n; i++)
        assert_int_equal(queue_mark_delivered(r, x.rows[i]->id), ERR_OK);
    free_fetched(&x);
    RUN_UNTIL(f, rows_in_table(q) == 0);
    assert_int_equal(rows_in_table(q), 0); /* deleted, not logged */
    assert_int_equal(log_file_size(f), log_size);
    queue_reader_close(r);
    close_q(f, q);

    q = open_q(f, &log_opts);
    assert_int_equal(rows_in_table(q), 0);
    close_q(f, q);
}

/* Puts index i, i + 1, ... one commit each, while the log's direct writes
 * are (or are not: direct false) on, up to index limit; returns the next
 * index. */
static int put_while_direct(fx_t *f, queue_t *q, puts_t *p, int i, int limit, bool direct)
{
    for (; i < limit && queue__log_direct(q) == direct; i++) {
        assert_int_equal(put_one(q, p, "hl7", i, 100), ERR_OK);
        run_until_n(f, &p->n, i + 1);
    }
    return i;
}

/* With queue-sync=full the log is written with O_DIRECT while its syncs
 * run on the loop. A direct write waits for the disk, so its time counts
 * as the sync's: writes slow enough (a slow disk, simulated) move the
 * syncs to the pool and the log back to buffered writes, and fast ones
 * bring both back. Every put is acknowledged throughout. */
static void test_log_direct_follows_sync_place(void **state)
{
    fx_t *f = *state;
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_log_test(f, &log_opts_full, &x, &r);
    static puts_t p;
    put_n(f, q, &p, 3, 100);
    assert_true(queue__log_direct(q));
    queue__log_faults.write_delay_us = 15000; /* each write 15 ms: over the 10 ms average */
    int i = put_while_direct(f, q, &p, 3, 60, true);
    assert_false(queue__log_direct(q));
    assert_true(i > 6); /* one slow write alone does not move them */
    queue__log_faults.write_delay_us = 0;
    i = put_while_direct(f, q, &p, i, i + 200, false);
    assert_true(queue__log_direct(q));
    for (int k = 0; k < i; k++)
        assert_int_equal(p.st[k], ERR_OK);
    queue_reader_close(r);
    close_q(f, q);
}

/* With queue-sync=full and direct writes, the log's write is synchronized
 * and no fdatasync follows it: batch after batch of hot puts and logged
 * marks, acknowledged, and not one sync; buffered (syncs on the pool) each
 * batch needs one again. */
static void test_log_direct_writes_sync_themselves(void **state)
{
    fx_t *f = *state;
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_log_test(f, &log_opts_full, &x, &r);
    static puts_t p;
    put_n(f, q, &p, 1, 100);
    assert_true(queue__log_direct(q));
    queue_stats_t st0, st;
    queue_stats(q, &st0);
    for (int i = 1; i < 21; i++) {
        assert_int_equal(put_one(q, &p, "hl7", i, 3000), ERR_OK);
        run_until_n(f, &p.n, i + 1);
        assert_int_equal(p.st[i], ERR_OK);
    }
    fetch_once(f, r, &x, 100);
    assert_int_equal(x.n, 21);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(queue_mark_delivered(r, x.rows[i]->id), ERR_OK);
    free_fetched(&x);
    RUN_UNTIL(f, queue_reader_unsynced(r) == 0);
    queue_stats(q, &st);
    assert_true(st.commits >= st0.commits + 21); /* each put, then the marks */
    assert_int_equal(st.syncs, st0.syncs);
    assert_int_equal(rows_in_table(q), 0);

    queue__log_faults.sync_delay_us = 15000; /* a slow disk: syncs to the pool */
    int i = put_while_direct(f, q, &p, 21, 80, true);
    assert_false(queue__log_direct(q));
    queue_stats(q, &st0);
    assert_int_equal(put_one(q, &p, "hl7", i, 100), ERR_OK);
    run_until_n(f, &p.n, i + 1);
    queue_stats(q, &st);
    assert_int_equal(st.syncs, st0.syncs + 1); /* the log's */
    queue__log_faults.sync_delay_us = 0;
    for (int k = 0; k <= i; k++)
        assert_int_equal(p.st[k], ERR_OK);
    queue_reader_close(r);
    close_q(f, q);
}

/* Puts that arrive at a steady pace, whatever the acknowledgements do (a
 * timer puts a few each millisecond until total are put), and a reader
 * that takes what it can each tick and marks it delivered. */
typedef struct {
    queue_t *q;
    queue_reader_t *r;
    puts_t *p;
    fetched_t *x;
    bool consume, fetching;
    int sent, total;
    int ndelivered;
    int delivered[20000]; /* indexes, in delivery order */
} pacer_t;

static void pacer_cb(uv_timer_t *t)
{
    pacer_t *pc = t->data;
    for (int k = 0; k < 4 && pc->sent < pc->total; k++, pc->sent++)
        assert_int_equal(put_one(pc->q, pc->p, "hl7", pc->sent, 8000), ERR_OK);
    if (pc->fetching && pc->x->done) {
        for (size_t i = 0; i < pc->x->n; i++) {
            assert_int_equal(queue_mark_delivered(pc->r, pc->x->rows[i]->id), ERR_OK);
            pc->delivered[pc->ndelivered++] = ctrl_index(pc->x->rows[i]);
        }
        free_fetched(pc->x);
        pc->fetching = false;
    }
    if (pc->consume && !pc->fetching && pc->ndelivered < pc->total) {
        pc->x->done = false;
        assert_int_equal(queue_reader_fetch(pc->r, 100, fetch_cb), ERR_OK);
        pc->fetching = true;
    }
}

/* The messages a crash image of the queue holds for hl7, beside those
 * delivered: at least every one not delivered, at most all, in order
 * (a crash may send again what was delivered since the last sync). */
static void crash_keeps_undelivered(fx_t *f, int total, int ndelivered)
{
    char path[300];
    crash_image(f, "crash", path, sizeof path);
    static fx_t g; /* its own loop: f's runs the queue under test */
    memcpy(g.dir, f->dir, sizeof g.dir);
    assert_int_equal(uv_loop_init(&g.loop), 0);
    queue_t *q = open_at(&g, path, &log_opts_full);
    static int idx[20000];
    size_t n = pending_indexes(&g, q, idx, 20000);
    assert_true(n >= (size_t)(total - ndelivered));
    assert_true(n <= (size_t)total);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(idx[i], total - (int)n + (int)i);
    close_q(&g, q);
    assert_int_equal(uv_loop_close(&g.loop), 0);
}

/* Runs the loop until total puts are acknowledged and, while the reader
 * consumes, until it delivered at least `delivered`. */
static void pace_until(fx_t *f, pacer_t *pc, int total, int delivered)
{
    pc->total = total;
    for (int i = 0; i < 20000 && (pc->p->n < total || pc->ndelivered < delivered); i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(500);
    }
    assert_int_equal(pc->p->n, total);
    for (int i = 0; i < total; i++)
        assert_int_equal(pc->p->st[i], ERR_OK);
    for (int i = 0; i < pc->ndelivered; i++)
        assert_int_equal(pc->delivered[i], i);
}

/* A slow disk moves the syncs of queue-sync=full to the pool, so commits
 * go on while a sync runs. The log still starts over (4 MiB) with every
 * message it took in the table first, those whose sync had not ended when
 * the restart was due included: with no reader taking any, then with one
 * taking them all, a crash loses none of those not delivered, every one is
 * delivered once and in order, and a clean stop keeps the rest. */
static void test_log_restarts_with_syncs_on_pool(void **state)
{
    fx_t *f = *state;
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_log_test(f, &log_opts_full, &x, &r);
    static puts_t p;
    memset(&p, 0, sizeof p);
    queue__log_faults.sync_delay_us = 15000; /* over the 10 ms average */
    static pacer_t pc;
    pc = (pacer_t){.q = q, .r = r, .p = &p, .x = &x};
    uv_timer_t timer;
    uv_timer_init(&f->loop, &timer);
    timer.data = &pc;
    uv_timer_start(&timer, pacer_cb, 1, 1);
    char logp[300];
    snprintf(logp, sizeof logp, "%s-log", f->path);

    pace_until(f, &pc, 700, 0); /* 5.6 MB: one restart, all hot until then */
    assert_false(queue__log_direct(q)); /* the syncs run on the pool */
    assert_true(log_epoch_of(logp) > 1);
    crash_keeps_undelivered(f, 700, 0);

    pc.consume = true;
    enum { total = 2400 }; /* 13.6 MB more: the reader catches up, the log restarts */
    uint64_t epoch = log_epoch_of(logp);
    pace_until(f, &pc, total, total * 3 / 4);
    assert_false(queue__log_direct(q));
    assert_true(log_epoch_of(logp) > epoch);
    crash_keeps_undelivered(f, total, pc.ndelivered);

    uv_timer_stop(&timer);
    queue__log_faults.sync_delay_us = 0;
    RUN_UNTIL(f, x.done);
    free_fetched(&x);
    uv_close((uv_handle_t *)&timer, NULL);
    queue_reader_close(r);
    close_q(f, q);
    q = open_q(f, &log_opts_full);
    static int idx[total + 1];
    assert_int_equal(pending_indexes(f, q, idx, total + 1), total - pc.ndelivered);
    for (int i = 0; i < total - pc.ndelivered; i++)
        assert_int_equal(idx[i], pc.ndelivered + i);
    close_q(f, q);
}

/* A table that refuses the spill of hot messages (a full disk, here a row
 * over SQLite's length limit) is tried again with a backoff, not in a loop
 * on the event loop, and takes them once it accepts rows again. */
static void test_log_spill_refused_backs_off(void **state)
{
    fx_t *f = *state;
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_log_test(f, &log_opts, &x, &r);
    static puts_t p;
    put_n(f, q, &p, 3, 8000);
    assert_int_equal(rows_in_table(q), 0); /* hot */
    sqlite3_limit(queue__db(q), SQLITE_LIMIT_LENGTH, 4096);
    queue__spill_ms = 1; /* every hot message is due: the next commit spills them */
    assert_int_equal(put_one(q, &p, "hl7", 3, 100), ERR_OK);
    run_until_n(f, &p.n, 4); /* refused with its batch, the spill's */
    run_for(f, 300);
    queue_stats_t st;
    queue_stats(q, &st);
    assert_true(st.commit_failures >= 2); /* tried, and again */
    assert_true(st.commit_failures < 40); /* 10 ms doubled each time: about 6 in 300 ms */
    assert_int_equal(rows_in_table(q), 0);
    sqlite3_limit(queue__db(q), SQLITE_LIMIT_LENGTH, 1000000000);
    RUN_UNTIL(f, rows_in_table(q) == 3);
    assert_int_equal(rows_in_table(q), 3);
    const int want[] = {0, 1, 2};
    fetch_expect(f, r, &x, want, 3);
    free_fetched(&x);
    queue_reader_close(r);
    close_q(f, q);
}

/* With queue-sync=full, a failed fdatasync of the log refuses the puts of
 * the batches it covered (in the log, not durable), and only those: the
 * table's syncs still work, so later puts are rows. The log is off from
 * then on: the hot messages acknowledged before are spilled and delivered
 * from the table, marks are no longer logged, and after a clean stop none
 * delivered comes back from the log. */
static void test_log_sync_failure_full(void **state)
{
    fx_t *f = *state;
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_log_test(f, &log_opts_full, &x, &r);
    static puts_t p;
    put_n(f, q, &p, 3, 100);
    assert_int_equal(rows_in_table(q), 0); /* hot */

    puts_3_4_refused_under(f, q, &p, &queue__log_faults.sync_errno);
    off_t log_size = log_file_size(f); /* their records were written, not synced */

    assert_int_equal(put_one(q, &p, "hl7", 5, 100), ERR_OK);
    run_until_n(f, &p.n, 6);
    assert_int_equal(p.st[5], ERR_OK); /* a row */
    queue_stats_t st;
    queue_stats(q, &st);
    assert_int_equal(st.failed, 2);

    const int want[] = {0, 1, 2, 5}; /* the acknowledged ones */
    fetch_expect(f, r, &x, want, 4);
    assert_int_equal(queue_mark_delivered(r, x.rows[0]->id), ERR_OK);
    free_fetched(&x);
    RUN_UNTIL(f, rows_in_table(q) == 3 && queue_reader_unsynced(r) == 0);
    assert_int_equal(rows_in_table(q), 3); /* spilled; the delivered one deleted */
    assert_int_equal(queue_reader_unsynced(r), 0);
    assert_int_equal(log_file_size(f), log_size);
    queue_reader_close(r);
    close_q(f, q);

    q = open_q(f, &log_opts_full);
    assert_int_equal(rows_in_table(q), 3); /* 1, 2 and 5: 0 does not come back */
    close_q(f, q);
}

/* A reader closed while its file fetch waits for the spill of hot messages
 * (it fell behind its ring) is freed without its callback; the spill still
 * happens and the queue closes (the ASan build checks for leaks and use
 * after free). */
static void test_log_reader_closed_in_spill_wait(void **state)
{
    fx_t *f = *state;
    static fetched_t x;
    queue_reader_t *r = NULL;
    queue_t *q = open_log_test(f, &log_opts, &x, &r);
    static puts_t p;
    put_n(f, q, &p, 600, 100);           /* more than the reader's ring holds: it is behind */
    assert_true(rows_in_table(q) < 600); /* some are hot */
    x.done = false;
    assert_int_equal(queue_reader_fetch(r, 100, fetch_cb), ERR_OK);
    queue_reader_close(r);
    RUN_UNTIL(f, rows_in_table(q) == 600);
    assert_int_equal(rows_in_table(q), 600); /* spilled for that fetch */
    close_q(f, q);
    assert_false(x.done); /* its callback never ran, not even at the close */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_commit_order, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_batches, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_order, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_recovery, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_delivered_pruned, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_full_sync_failure_refuses, fx_setup, fx_teardown),
        cmocka_unit_test(test_sync_place),
        cmocka_unit_test_setup_teardown(test_full_is_busy, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_put_many_atomic, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_file, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_row_marked_dead, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_prune_keeps_only_copies, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_rejects_persisted_old_file, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_dead_review, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_ids_never_reused, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_commit_waits_one_poll, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_v1_file_converted, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_commit_waits_for_another_writer_off_the_loop, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_hot_puts_survive_a_crash, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_hot_puts_survive_a_crash_full, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_delivered_not_replayed, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_spill_by_age, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_spill_by_age_full, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_close_leaves_rows, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_read_with_log_off, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_cold_without_reader, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_attempt_spills, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_restarts, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_restarts_full, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_torn_tail, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_reader_behind_reads_spilled, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_write_failure_turns_log_off, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_sync_failure_full, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_direct_follows_sync_place, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_direct_writes_sync_themselves, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_restarts_with_syncs_on_pool, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_spill_refused_backs_off, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_log_reader_closed_in_spill_wait, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
