/* test_mllp.c - the MLLP listener on real loopback sockets: a server on a
 * libuv loop in the test thread, blocking clients in a pthread. Echo replies,
 * in-order replies when answered out of order, 100 connections, idle timeout,
 * backpressure, oversized frames, max connections (the oldest idle one makes
 * way), the memory budget, late replies to closed
 * connections, drain on close. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>

#include "mllp.h"
#include "testnet.h"
#include "xmalloc.h"

typedef struct {
    uv_loop_t loop;
    mllp_server_t *srv;
    int port;
    uv_timer_t poll;
    uv_timer_t delay;
    mllp_req_t *delayed;
    buf_t *delayed_frame;
    mllp_req_t *held[64];
    atomic_int nheld;
    atomic_int frames;
    atomic_int release;      /* client -> loop: answer held reqs */
    atomic_int close_server; /* client -> loop: start mllp_server_close */
    atomic_int closed;
    int answer_order[16];
    int nanswer;
    mllp_stats_t st; /* snapshot taken by the loop each poll tick */
    ingest_budget_t *budget;
    ingest_budget_stats_t bst; /* likewise */
    atomic_int st_ready;
    char err[256];
} ctx_t;

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            snprintf(x->err, sizeof x->err, "%s:%d: check failed: %s", __FILE__, __LINE__, #c);    \
            return x->err;                                                                         \
        }                                                                                          \
    } while (0)

static void echo(mllp_req_t *req, const buf_t *frame)
{
    char out[512];
    int n = snprintf(out, sizeof out, "ACK|%.*s", (int)frame->len, frame->data);
    if (n >= (int)sizeof out)
        n = (int)sizeof out - 1; /* a large frame is echoed cut */
    mllp_req_reply(req, out, (size_t)n);
}

static void on_delay(uv_timer_t *t)
{
    ctx_t *x = t->data;
    x->answer_order[x->nanswer++] = 1;
    echo(x->delayed, x->delayed_frame);
    buf_unref(x->delayed_frame);
    x->delayed = NULL;
    uv_close((uv_handle_t *)t, NULL);
}

static void on_frame(mllp_req_t *req, buf_t *frame, void *user)
{
    ctx_t *x = user;
    atomic_fetch_add(&x->frames, 1);
    assert_true(mllp_req_conn_id(req) > 0);
    assert_non_null(strstr(mllp_req_peer(req), "127.0.0.1:"));
    if (frame->len >= 4 && memcmp(frame->data, "SLOW", 4) == 0) {
        x->delayed = req;
        x->delayed_frame = buf_ref(frame);
        uv_timer_init(&x->loop, &x->delay);
        x->delay.data = x;
        uv_timer_start(&x->delay, on_delay, 200, 0);
        return;
    }
    if (frame->len >= 4 && memcmp(frame->data, "HOLD", 4) == 0 && !atomic_load(&x->release)) {
        int i = atomic_load(&x->nheld);
        assert_true(i < 64);
        x->held[i] = req;
        atomic_store(&x->nheld, i + 1);
        return;
    }
    if (frame->len >= 4 && memcmp(frame->data, "NONE", 4) == 0) {
        mllp_req_reply_none(req);
        return;
    }
    if (frame->len >= 3 && memcmp(frame->data, "TWO", 3) == 0) {
        /* An accept ACK and an application ACK for one request. */
        char first[128], second[128];
        int n1 = snprintf(first, sizeof first, "CA|%.*s", (int)frame->len, frame->data);
        int n2 = snprintf(second, sizeof second, "AA|%.*s", (int)frame->len, frame->data);
        mllp_req_reply2(req, first, (size_t)n1, second, (size_t)n2);
        return;
    }
    if (x->nanswer < 16)
        x->answer_order[x->nanswer++] = 2;
    echo(req, frame);
}

static void on_oversized(mllp_req_t *req, buf_t *head, size_t total, void *user)
{
    (void)user;
    char out[256];
    int n = snprintf(out, sizeof out, "AR|%zu|%.*s", total, (int)head->len, head->data);
    mllp_req_reply(req, out, (size_t)n);
}

static void on_server_closed(mllp_server_t *s, void *user)
{
    ctx_t *x = user;
    (void)s;
    x->srv = NULL;
    atomic_store(&x->closed, 1);
}

static void on_poll(uv_timer_t *t)
{
    ctx_t *x = t->data;
    if (x->srv) {
        mllp_server_stats(x->srv, &x->st);
        ingest_budget_stats(x->budget, &x->bst);
        atomic_store(&x->st_ready, 1);
    }
    if (atomic_load(&x->release)) {
        int n = atomic_exchange(&x->nheld, 0);
        for (int i = 0; i < n; i++) {
            char ack[32];
            int len = snprintf(ack, sizeof ack, "ACK|held%d%s", i,
                               mllp_req_orphaned(x->held[i]) ? "-orphan" : "");
            mllp_req_reply(x->held[i], ack, (size_t)len);
        }
    }
    if (atomic_load(&x->close_server) == 1 && x->srv) {
        atomic_store(&x->close_server, 2);
        mllp_server_close(x->srv, on_server_closed, x);
    }
}

static void done(void *arg)
{
    ctx_t *x = arg;
    uv_close((uv_handle_t *)&x->poll, NULL);
    if (x->srv)
        mllp_server_close(x->srv, on_server_closed, x);
}

static void start(ctx_t *x, const mllp_opts_t *opts)
{
    memset(x, 0, sizeof *x);
    x->budget = opts ? opts->budget : NULL;
    uv_loop_init(&x->loop);
    mllp_callbacks_t cb = {.frame = on_frame, .oversized = on_oversized};
    err_detail_t d;
    assert_int_equal(mllp_server_listen(&x->loop, "127.0.0.1", 0, opts, &cb, x, &x->srv, &d),
                     ERR_OK);
    x->port = mllp_server_port(x->srv);
    assert_true(x->port > 0);
    uv_timer_init(&x->loop, &x->poll);
    x->poll.data = x;
    uv_timer_start(&x->poll, on_poll, 5, 5);
}

static void finish(ctx_t *x, void *(*client)(void *))
{
    size_t before = xmalloc_used();
    (void)before;
    char *err = tn_run(&x->loop, client, done, x);
    assert_int_equal(uv_loop_close(&x->loop), 0);
    assert_true(atomic_load(&x->closed));
    if (err)
        fail_msg("%s", err);
}

static int stats_wait(ctx_t *x, mllp_stats_t *out)
{
    atomic_store(&x->st_ready, 0);
    for (int i = 0; i < 200 && !atomic_load(&x->st_ready); i++)
        tn_sleep_ms(5);
    *out = x->st;
    return 0;
}

/* ---- echo, several frames per read, a frame split across reads ----------- */

static void *client_echo(void *arg)
{
    ctx_t *x = arg;
    char buf[1024];
    int fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "\x0bMSG1\x1c\x0d\x0bMSG2\x1c\x0d\x0bMSG3\x1c\x0d") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|MSG1") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|MSG2") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|MSG3") == 0);
    /* split across writes, including between 0x1C and 0x0D */
    CHECK(tn_sends(fd, "noise\x0bMS") == 0);
    tn_sleep_ms(20);
    CHECK(tn_sends(fd, "G4\x1c") == 0);
    tn_sleep_ms(20);
    CHECK(tn_sends(fd, "\x0d") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|MSG4") == 0);
    /* no-reply frame does not hold back the next */
    CHECK(tn_sends(fd, "\x0bNONE\x1c\x0d\x0bMSG5\x1c\x0d") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|MSG5") == 0);
    mllp_stats_t st;
    stats_wait(x, &st);
    CHECK(st.frames == 6);
    CHECK(st.no_replies == 1);
    CHECK(st.bytes_dropped == 5);
    close(fd);
    return NULL;
}

static void test_echo(void **state)
{
    (void)state;
    ctx_t x;
    start(&x, NULL);
    finish(&x, client_echo);
}

/* ---- replies in arrival order when answered out of order ----------------- */

static void *client_order(void *arg)
{
    ctx_t *x = arg;
    char buf[1024];
    int fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "\x0bSLOW1\x1c\x0d\x0b"
                       "FAST2\x1c\x0d\x0b"
                       "FAST3\x1c\x0d") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|SLOW1") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|FAST2") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|FAST3") == 0);
    close(fd);
    return NULL;
}

static void test_in_order_replies(void **state)
{
    (void)state;
    ctx_t x;
    start(&x, NULL);
    finish(&x, client_order);
    /* The daemon answered 2 and 3 before 1; the wire still carried 1, 2, 3. */
    assert_int_equal(x.nanswer, 3);
    assert_int_equal(x.answer_order[0], 2);
    assert_int_equal(x.answer_order[1], 2);
    assert_int_equal(x.answer_order[2], 1);
}

/* ---- two frames for one request, still in arrival order ----------------- */

static void *client_two(void *arg)
{
    ctx_t *x = arg;
    char buf[1024];
    int fd = tn_connect(x->port);
    CHECK(fd >= 0);
    /* TWO2 is answered before SLOW1; both of its frames wait for SLOW1's. */
    CHECK(tn_sends(fd, "\x0bSLOW1\x1c\x0d\x0bTWO2\x1c\x0d\x0b"
                       "FAST3\x1c\x0d") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|SLOW1") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "CA|TWO2") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "AA|TWO2") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|FAST3") == 0);
    mllp_stats_t st;
    stats_wait(x, &st);
    CHECK(st.frames == 3);
    CHECK(st.replies == 4);
    close(fd);
    return NULL;
}

static void test_two_frame_reply(void **state)
{
    (void)state;
    ctx_t x;
    start(&x, NULL);
    finish(&x, client_two);
}

/* ---- 100 connections at once ----------------------------------------------- */

static void *client_many(void *arg)
{
    ctx_t *x = arg;
    int fds[100];
    char buf[256], msg[64];
    for (int i = 0; i < 100; i++) {
        fds[i] = tn_connect(x->port);
        CHECK(fds[i] >= 0);
    }
    for (int i = 0; i < 100; i++) {
        snprintf(msg, sizeof msg, "\x0bM%d\x1c\x0d", i);
        CHECK(tn_sends(fds[i], msg) == 0);
    }
    for (int i = 99; i >= 0; i--) {
        snprintf(msg, sizeof msg, "ACK|M%d", i);
        CHECK(tn_read_mllp(fds[i], buf, sizeof buf, 5000) >= 0 && strcmp(buf, msg) == 0);
    }
    mllp_stats_t st;
    stats_wait(x, &st);
    CHECK(st.conns_open == 100);
    CHECK(st.conns_total == 100);
    for (int i = 0; i < 100; i++)
        close(fds[i]);
    return NULL;
}

static void test_100_connections(void **state)
{
    (void)state;
    ctx_t x;
    start(&x, NULL);
    finish(&x, client_many);
    assert_int_equal(atomic_load(&x.frames), 100);
}

/* ---- idle timeout ------------------------------------------------------------ */

static void *client_idle(void *arg)
{
    ctx_t *x = arg;
    char buf[64];
    int fd = tn_connect(x->port);
    CHECK(fd >= 0);
    uint64_t t0 = tn_now_ms();
    CHECK(tn_sends(fd, "\x0bHI\x1c\x0d") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0);
    CHECK(tn_wait_eof(fd, 3000) == 0);
    uint64_t dt = tn_now_ms() - t0;
    CHECK(dt >= 150 && dt < 2500);
    mllp_stats_t st;
    stats_wait(x, &st);
    CHECK(st.idle_closes == 1);
    close(fd);
    /* A connection waiting on us (reply pending) is not idle. */
    fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "\x0bHOLD\x1c\x0d") == 0);
    tn_sleep_ms(500);
    atomic_store(&x->release, 1);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|held0") == 0);
    CHECK(tn_wait_eof(fd, 3000) == 0);
    close(fd);
    return NULL;
}

static void test_idle_timeout(void **state)
{
    (void)state;
    mllp_opts_t o;
    mllp_opts_default(&o);
    o.idle_timeout_ms = 200;
    o.linger_ms = 100;
    ctx_t x;
    start(&x, &o);
    finish(&x, client_idle);
}

/* ---- backpressure ----------------------------------------------------------- */

static void *client_backpressure(void *arg)
{
    ctx_t *x = arg;
    char buf[256];
    int a = tn_connect(x->port), b = tn_connect(x->port);
    CHECK(a >= 0 && b >= 0);
    for (int i = 0; i < 4; i++)
        CHECK(tn_sends(a, "\x0bHOLD\x1c\x0d") == 0);
    tn_sleep_ms(150);
    CHECK(atomic_load(&x->nheld) == 4);
    /* A is paused now: these are not read while its replies are owed. */
    for (int i = 0; i < 4; i++)
        CHECK(tn_sends(a, "\x0bHOLD\x1c\x0d") == 0);
    tn_sleep_ms(150);
    CHECK(atomic_load(&x->nheld) == 4);
    /* B goes on. */
    CHECK(tn_sends(b, "\x0b"
                      "B1\x1c\x0d") == 0);
    CHECK(tn_read_mllp(b, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|B1") == 0);
    mllp_stats_t st;
    stats_wait(x, &st);
    CHECK(st.pauses >= 1);
    CHECK(st.pending == 4);
    atomic_store(&x->release, 1);
    for (int i = 0; i < 4; i++) {
        char want[32];
        snprintf(want, sizeof want, "ACK|held%d", i);
        CHECK(tn_read_mllp(a, buf, sizeof buf, 2000) >= 0 && strcmp(buf, want) == 0);
    }
    for (int i = 0; i < 4; i++)
        CHECK(tn_read_mllp(a, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|HOLD") == 0);
    close(a);
    close(b);
    return NULL;
}

static void test_backpressure(void **state)
{
    (void)state;
    mllp_opts_t o;
    mllp_opts_default(&o);
    o.max_pending = 4;
    ctx_t x;
    start(&x, &o);
    finish(&x, client_backpressure);
}

/* ---- oversized frame: callback, connection still usable -------------------- */

static void *client_oversized(void *arg)
{
    ctx_t *x = arg;
    char buf[512];
    int fd = tn_connect(x->port);
    CHECK(fd >= 0);
    char big[600];
    big[0] = 0x0b;
    memcpy(big + 1, "MSH|^~\\&|CTRL42|", 16);
    memset(big + 17, 'x', 483);
    big[500] = 0x1c;
    big[501] = 0x0d;
    CHECK(tn_send(fd, big, 250) == 0);
    tn_sleep_ms(20);
    CHECK(tn_send(fd, big + 250, 252) == 0);
    CHECK(tn_sends(fd, "\x0bSMALL\x1c\x0d") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0);
    CHECK(strcmp(buf, "AR|499|MSH|^~\\&|CTRL42|xxxx") == 0);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|SMALL") == 0);
    mllp_stats_t st;
    stats_wait(x, &st);
    CHECK(st.oversized == 1 && st.frames == 1);
    close(fd);
    return NULL;
}

static void test_oversized(void **state)
{
    (void)state;
    mllp_opts_t o;
    mllp_opts_default(&o);
    o.max_message = 100;
    o.keep_head = 20;
    ctx_t x;
    start(&x, &o);
    finish(&x, client_oversized);
}

/* ---- max connections ---------------------------------------------------------- */

static void *client_maxconn(void *arg)
{
    ctx_t *x = arg;
    char buf[64];
    int a = tn_connect(x->port), b = tn_connect(x->port);
    CHECK(a >= 0 && b >= 0);
    CHECK(tn_sends(a, "\x0b"
                      "A\x1c\x0d") == 0 &&
          tn_read_mllp(a, buf, sizeof buf, 2000) >= 0);
    CHECK(tn_sends(b, "\x0b"
                      "B\x1c\x0d") == 0 &&
          tn_read_mllp(b, buf, sizeof buf, 2000) >= 0);
    /* At the limit the oldest idle connection (a) makes way for the new one. */
    int c = tn_connect(x->port);
    CHECK(c >= 0);
    CHECK(tn_wait_eof(a, 2000) == 0);
    CHECK(tn_sends(c, "\x0b"
                      "C\x1c\x0d") == 0 &&
          tn_read_mllp(c, buf, sizeof buf, 2000) >= 0);
    mllp_stats_t st;
    stats_wait(x, &st);
    CHECK(st.conns_refused == 0 && st.conns_open == 2 && st.evicted == 1);
    /* Connections in the middle of a frame are not idle: a new one is refused. */
    CHECK(tn_sends(b, "\x0b"
                      "partial") == 0 &&
          tn_sends(c, "\x0b"
                      "partial") == 0);
    usleep(200 * 1000);
    int d = tn_connect(x->port);
    CHECK(d >= 0);
    CHECK(tn_wait_eof(d, 2000) == 0);
    stats_wait(x, &st);
    CHECK(st.conns_refused == 1 && st.conns_open == 2 && st.evicted == 1);
    close(a);
    close(b);
    close(c);
    close(d);
    return NULL;
}

static void test_max_connections(void **state)
{
    (void)state;
    mllp_opts_t o;
    mllp_opts_default(&o);
    o.max_connections = 2;
    ctx_t x;
    start(&x, &o);
    finish(&x, client_maxconn);
}

/* ---- the memory budget ------------------------------------------------------------ */

#define BUDGET_LIMIT (64 * 1024)
#define BUDGET_PART (200 * 1024)

static void *client_budget(void *arg)
{
    ctx_t *x = arg;
    char buf[1024];
    static char part[BUDGET_PART];
    memset(part, 'P', sizeof part);
    part[0] = 0x0b;
    int a = tn_connect(x->port), b = tn_connect(x->port);
    CHECK(a >= 0 && b >= 0);
    /* Two unfinished frames, each over the whole budget: the first may finish
     * its message past the limit, the second is not read any further. */
    CHECK(tn_send(a, part, sizeof part) == 0);
    tn_sleep_ms(100);
    CHECK(tn_send(b, part, sizeof part) == 0);
    tn_sleep_ms(200);
    mllp_stats_t st;
    stats_wait(x, &st);
    ingest_budget_stats_t bs = x->bst;
    CHECK(bs.limit == BUDGET_LIMIT);
    CHECK(bs.used >= BUDGET_LIMIT && bs.paused == 1 && bs.pauses >= 1);
    CHECK(bs.peak <= BUDGET_LIMIT + BUDGET_PART + 2 * 65536);
    /* A connection that holds nothing is still read and answered. */
    int c = tn_connect(x->port);
    CHECK(c >= 0);
    CHECK(tn_sends(c, "\x0bHELLO\x1c\x0d") == 0 &&
          tn_read_mllp(c, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|HELLO") == 0);
    /* The first frame ends and is answered; the second then goes on. */
    CHECK(tn_sends(a, "\x1c\x0d") == 0 && tn_read_mllp(a, buf, sizeof buf, 2000) >= 0);
    CHECK(tn_sends(b, "\x1c\x0d") == 0 && tn_read_mllp(b, buf, sizeof buf, 2000) >= 0);
    CHECK(strncmp(buf, "ACK|PPP", 7) == 0);
    tn_sleep_ms(50);
    stats_wait(x, &st);
    CHECK(x->bst.used == 0 && x->bst.paused == 0);
    close(a);
    close(b);
    close(c);
    return NULL;
}

static void test_budget(void **state)
{
    (void)state;
    mllp_opts_t o;
    mllp_opts_default(&o);
    o.max_message = 1024 * 1024;
    o.budget = ingest_budget_new(BUDGET_LIMIT);
    ctx_t x;
    start(&x, &o);
    finish(&x, client_budget);
    ingest_budget_free(o.budget);
}

/* ---- a reply for a connection that has gone ------------------------------------ */

static void *client_gone(void *arg)
{
    ctx_t *x = arg;
    int fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "\x0bHOLD\x1c\x0d\x0bHOLD\x1c\x0d\x0bpartial") == 0);
    for (int i = 0; i < 100 && atomic_load(&x->nheld) < 2; i++)
        tn_sleep_ms(5);
    CHECK(atomic_load(&x->nheld) == 2);
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg); /* reset */
    close(fd);
    tn_sleep_ms(100);
    mllp_stats_t st;
    stats_wait(x, &st);
    CHECK(st.conns_open == 0);
    CHECK(st.orphaned == 2);
    atomic_store(&x->release, 1);
    tn_sleep_ms(50);
    stats_wait(x, &st);
    CHECK(st.pending == 0);
    return NULL;
}

static void test_reply_after_disconnect(void **state)
{
    (void)state;
    ctx_t x;
    start(&x, NULL);
    finish(&x, client_gone);
}

/* ---- drain on close ----------------------------------------------------------- */

static void *client_drain(void *arg)
{
    ctx_t *x = arg;
    char buf[64];
    int fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "\x0bHOLD\x1c\x0d") == 0);
    for (int i = 0; i < 100 && atomic_load(&x->nheld) < 1; i++)
        tn_sleep_ms(5);
    atomic_store(&x->close_server, 1);
    tn_sleep_ms(100);
    CHECK(tn_connect(x->port) < 0); /* no longer accepting */
    CHECK(!atomic_load(&x->closed));
    atomic_store(&x->release, 1);
    CHECK(tn_read_mllp(fd, buf, sizeof buf, 2000) >= 0 && strcmp(buf, "ACK|held0") == 0);
    CHECK(tn_wait_eof(fd, 2000) == 0);
    close(fd);
    for (int i = 0; i < 200 && !atomic_load(&x->closed); i++)
        tn_sleep_ms(5);
    CHECK(atomic_load(&x->closed));
    return NULL;
}

static void test_drain_on_close(void **state)
{
    (void)state;
    ctx_t x;
    start(&x, NULL);
    finish(&x, client_drain);
}

static void test_listen_errors(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    mllp_callbacks_t cb = {.frame = on_frame};
    mllp_server_t *s = (mllp_server_t *)1;
    err_detail_t d;
    assert_int_equal(mllp_server_listen(&loop, "not-an-ip", 0, NULL, &cb, NULL, &s, &d),
                     ERR_BAD_CONFIG);
    assert_null(s);
    assert_int_equal(mllp_server_listen(&loop, "127.0.0.1", 70000, NULL, &cb, NULL, &s, &d),
                     ERR_BAD_CONFIG);
    mllp_server_t *a;
    assert_int_equal(mllp_server_listen(&loop, "127.0.0.1", 0, NULL, &cb, NULL, &a, &d), ERR_OK);
    assert_int_equal(
        mllp_server_listen(&loop, "127.0.0.1", mllp_server_port(a), NULL, &cb, NULL, &s, &d),
        ERR_IO);
    assert_non_null(strstr(d.msg, "address already in use"));
    mllp_server_close(a, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    alarm(120);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo),
        cmocka_unit_test(test_in_order_replies),
        cmocka_unit_test(test_two_frame_reply),
        cmocka_unit_test(test_100_connections),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_reply_after_disconnect),
        cmocka_unit_test(test_drain_on_close),
        cmocka_unit_test(test_listen_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
