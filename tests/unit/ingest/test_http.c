/* test_http.c - the HTTP/1.1 listener on real loopback sockets (server on a
 * libuv loop, blocking clients in a pthread), and the request assembly seam
 * (http__conn_feed) without sockets. Keep-alive, pipelining in order with a
 * delayed first answer, Content-Length and chunked bodies, 413 without
 * reading the body, 431, 400, 408 for a slow client, Connection: close,
 * HTTP/1.0, 100-continue, HEAD, accessors, the error body callback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>

#include "http.h"
#include "http_int.h"
#include "testnet.h"
#include "xmalloc.h"

typedef struct {
    uv_loop_t loop;
    http_server_t *srv;
    int port;
    uv_timer_t poll;
    atomic_int closed;
    atomic_int requests;
    http_stats_t st;
    atomic_int st_ready;
    int nanswer;
    char answer_order[8];
    char err[512];
} ctx_t;

typedef struct {
    uv_timer_t t;
    http_req_t *req;
} delayed_t;

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            snprintf(x->err, sizeof x->err, "%s:%d: check failed: %s", __FILE__, __LINE__, #c);    \
            return x->err;                                                                         \
        }                                                                                          \
    } while (0)

static void delayed_closed(uv_handle_t *h)
{
    free(h);
}

static void on_delay(uv_timer_t *t)
{
    delayed_t *d = (delayed_t *)t;
    ctx_t *x = t->data;
    x->answer_order[x->nanswer++] = 's';
    http_req_respond(d->req, 200, "text/plain", "slow", 4, "X-Order: slow\r\n");
    uv_close((uv_handle_t *)t, delayed_closed);
}

static bool path_is(const http_req_t *req, const char *p)
{
    return slice_eq(http_req_path(req), p);
}

static void on_request(http_req_t *req, void *user)
{
    ctx_t *x = user;
    atomic_fetch_add(&x->requests, 1);
    if (path_is(req, "/slow")) {
        delayed_t *d = malloc(sizeof *d);
        d->req = req;
        uv_timer_init(&x->loop, &d->t);
        d->t.data = x;
        uv_timer_start(&d->t, on_delay, 200, 0);
        return;
    }
    if (x->nanswer < 8)
        x->answer_order[x->nanswer++] = 'f';
    if (path_is(req, "/echo")) {
        buf_t *b = http_req_body(req);
        char out[256];
        int n = snprintf(out, sizeof out, "%s %zu %.*s", http_req_method(req), b->len,
                         (int)(b->len > 100 ? 100 : b->len), b->data);
        http_req_respond(req, 200, "text/plain", out, (size_t)n, NULL);
        return;
    }
    slice_t rp = http_req_path(req);
    if (rp.len >= 5 && memcmp(rp.ptr, "/info", 5) == 0) {
        slice_t fmt, h = http_req_header(req, "x-test"), q = http_req_query(req);
        char path[64], f[64];
        assert_true(http_pct_decode(http_req_path(req), false, path, sizeof path, NULL));
        assert_true(http_req_query_param(req, "_format", &fmt));
        assert_true(http_pct_decode(fmt, true, f, sizeof f, NULL));
        assert_false(http_req_query_param(req, "missing", NULL));
        char out[512];
        int n = snprintf(out, sizeof out, "path=%s fmt=%s q=%.*s h=[%.*s] n=%zu v=1.%d", path, f,
                         (int)q.len, q.ptr, (int)h.len, h.ptr, http_req_header_count(req),
                         http_req_version_minor(req));
        http_req_respond(req, 200, "text/plain", out, (size_t)n, NULL);
        return;
    }
    if (path_is(req, "/buf")) {
        buf_t *b = buf_new("borrowed", 8);
        http_req_respond_buf(req, 201, "text/plain", b, NULL);
        buf_unref(b);
        return;
    }
    if (path_is(req, "/big")) {
        static buf_t *big;
        if (!big) { /* kept for the whole run: every response borrows it */
            char *tmp = malloc(262144);
            memset(tmp, 'b', 262144);
            big = buf_new(tmp, 262144);
            free(tmp);
        }
        http_req_respond_buf(req, 200, "application/octet-stream", big, NULL);
        return;
    }
    http_req_respond(req, 200, "text/plain", "ok", 2, "X-Order: fast\r\n");
}

static size_t on_error(const http_req_t *req, int status, const char *why, char *out, size_t cap,
                       const char **ctype, void *user)
{
    (void)user;
    (void)why;
    *ctype = "application/fhir+json";
    return (size_t)snprintf(out, cap,
                            "{\"resourceType\":\"OperationOutcome\",\"status\":%d,\"req\":%d}",
                            status, req != NULL);
}

static void on_server_closed(http_server_t *s, void *user)
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
        http_server_stats(x->srv, &x->st);
        atomic_store(&x->st_ready, 1);
    }
}

static void done(void *arg)
{
    ctx_t *x = arg;
    uv_close((uv_handle_t *)&x->poll, NULL);
    if (x->srv)
        http_server_close(x->srv, on_server_closed, x);
}

static void start(ctx_t *x, const http_opts_t *opts)
{
    memset(x, 0, sizeof *x);
    uv_loop_init(&x->loop);
    http_callbacks_t cb = {.request = on_request, .error = on_error};
    err_detail_t d;
    assert_int_equal(http_server_listen(&x->loop, "127.0.0.1", 0, opts, &cb, x, &x->srv, &d),
                     ERR_OK);
    x->port = http_server_port(x->srv);
    uv_timer_init(&x->loop, &x->poll);
    x->poll.data = x;
    uv_timer_start(&x->poll, on_poll, 5, 5);
}

static void finish(ctx_t *x, void *(*client)(void *))
{
    char *err = tn_run(&x->loop, client, done, x);
    assert_int_equal(uv_loop_close(&x->loop), 0);
    assert_true(atomic_load(&x->closed));
    if (err)
        fail_msg("%s", err);
}

static void stats_wait(ctx_t *x, http_stats_t *out)
{
    atomic_store(&x->st_ready, 0);
    for (int i = 0; i < 200 && !atomic_load(&x->st_ready); i++)
        tn_sleep_ms(5);
    *out = x->st;
}

static void run(const http_opts_t *o, void *(*client)(void *))
{
    ctx_t x;
    start(&x, o);
    finish(&x, client);
}

static http_opts_t small_opts(void)
{
    http_opts_t o;
    http_opts_default(&o);
    o.max_body = 1000;
    o.max_header = 1024;
    o.header_timeout_ms = 300;
    o.body_timeout_ms = 300;
    o.linger_ms = 200;
    return o;
}

#define RD(fd) tn_read_http(fd, head, sizeof head, body, sizeof body, 2000)

/* ---- keep-alive, bodies ------------------------------------------------------ */

static void *client_keepalive(void *arg)
{
    ctx_t *x = arg;
    char head[4096], body[4096];
    int fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "GET / HTTP/1.1\r\nHost: a\r\n\r\n") == 0);
    CHECK(RD(fd) == 200 && strcmp(body, "ok") == 0);
    CHECK(strstr(head, "Connection: keep-alive\r\n") && strstr(head, "Date: "));
    CHECK(strstr(head, "Content-Type: text/plain\r\n") && strstr(head, "X-Order: fast\r\n"));
    CHECK(tn_sends(fd, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel") == 0);
    tn_sleep_ms(20);
    CHECK(tn_sends(fd, "lo") == 0);
    CHECK(RD(fd) == 200 && strcmp(body, "POST 5 hello") == 0);
    CHECK(tn_sends(fd, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n") == 0);
    CHECK(RD(fd) == 200 && strcmp(body, "POST 7 abcdefg") == 0);
    CHECK(tn_sends(fd, "GET /info/a%20b?x=1&_format=application%2Ffhir%2Bjson HTTP/1.1\r\n"
                       "Host: a\r\nX-Test:   spaced value  \r\n\r\n") == 0);
    CHECK(RD(fd) == 200);
    CHECK(strcmp(body, "path=/info/a b fmt=application/fhir+json "
                       "q=x=1&_format=application%2Ffhir%2Bjson h=[spaced value] n=2 v=1.1") == 0);
    CHECK(tn_sends(fd, "GET /buf HTTP/1.1\r\n\r\n") == 0);
    CHECK(RD(fd) == 201 && strcmp(body, "borrowed") == 0);
    /* HEAD: Content-Length but no body */
    CHECK(tn_sends(fd, "HEAD / HTTP/1.1\r\n\r\n") == 0);
    char c;
    size_t n = 0;
    while (n < sizeof head - 1 && tn_getc(fd, &c, 2000) == 1) {
        head[n++] = c;
        if (n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    head[n] = '\0';
    CHECK(strstr(head, "HTTP/1.1 200 OK\r\n") && strstr(head, "Content-Length: 2\r\n"));
    CHECK(tn_getc(fd, &c, 100) == -1);
    CHECK(tn_sends(fd, "GET / HTTP/1.1\r\n\r\n") == 0);
    CHECK(RD(fd) == 200);
    close(fd);
    return NULL;
}

static void test_keepalive_and_bodies(void **state)
{
    (void)state;
    http_opts_t o = small_opts();
    run(&o, client_keepalive);
}

/* ---- pipelining: a slow first answer holds back a ready second one ------------ */

static void *client_pipeline(void *arg)
{
    ctx_t *x = arg;
    char head[4096], body[4096];
    int fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "GET /slow HTTP/1.1\r\n\r\nGET /fast HTTP/1.1\r\n\r\n"
                       "POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi") == 0);
    CHECK(RD(fd) == 200 && strcmp(body, "slow") == 0);
    CHECK(RD(fd) == 200 && strcmp(body, "ok") == 0);
    CHECK(RD(fd) == 200 && strcmp(body, "POST 2 hi") == 0);
    close(fd);
    return NULL;
}

static void test_pipelining_in_order(void **state)
{
    (void)state;
    ctx_t x;
    start(&x, NULL);
    finish(&x, client_pipeline);
    assert_int_equal(x.nanswer, 3);
    assert_memory_equal(x.answer_order, "ffs", 3);
}

/* ---- 413 without reading the body; chunked over the limit --------------------- */

static void *client_413(void *arg)
{
    ctx_t *x = arg;
    char head[4096], body[4096];
    int fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "POST /echo HTTP/1.1\r\nContent-Length: 52428800\r\n\r\n") == 0);
    CHECK(RD(fd) == 413);
    CHECK(strstr(head, "Connection: close\r\n"));
    CHECK(strstr(head, "Content-Type: application/fhir+json\r\n"));
    CHECK(strstr(body, "\"status\":413,\"req\":1"));
    CHECK(tn_wait_eof(fd, 2000) == 0);
    close(fd);

    fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") == 0);
    char chunk[600];
    memset(chunk, 'z', sizeof chunk);
    CHECK(tn_sends(fd, "258\r\n") == 0 && tn_send(fd, chunk, 600) == 0 &&
          tn_sends(fd, "\r\n") == 0);
    CHECK(tn_sends(fd, "258\r\n") == 0 && tn_send(fd, chunk, 600) == 0);
    CHECK(RD(fd) == 413);
    CHECK(tn_wait_eof(fd, 2000) == 0);
    close(fd);
    http_stats_t st;
    stats_wait(x, &st);
    CHECK(st.status_413 == 2);
    CHECK(st.bytes_in < 4096);
    return NULL;
}

static void test_413(void **state)
{
    (void)state;
    http_opts_t o = small_opts();
    run(&o, client_413);
}

/* ---- 431, 400 ------------------------------------------------------------------ */

static void *client_431_400(void *arg)
{
    ctx_t *x = arg;
    char head[4096], body[4096];
    int fd = tn_connect(x->port);
    CHECK(fd >= 0);
    char big[3000];
    memset(big, 'h', sizeof big);
    CHECK(tn_sends(fd, "GET / HTTP/1.1\r\nX-Big: ") == 0 && tn_send(fd, big, sizeof big) == 0 &&
          tn_sends(fd, "\r\n\r\n") == 0);
    CHECK(RD(fd) == 431);
    CHECK(strstr(body, "\"req\":0"));
    CHECK(tn_wait_eof(fd, 2000) == 0);
    close(fd);

    fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "GET / HTTP/1.1\r\n\r\nBLAH BLAH\r\n\r\n") == 0);
    CHECK(RD(fd) == 200);
    CHECK(RD(fd) == 400);
    CHECK(tn_wait_eof(fd, 2000) == 0);
    close(fd);

    fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "\x01\x02\x03garbage\r\n\r\n") == 0);
    CHECK(RD(fd) == 400);
    CHECK(tn_wait_eof(fd, 2000) == 0);
    close(fd);

    /* Content-Length and chunked together: refused (request smuggling). */
    fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n") == 0);
    CHECK(RD(fd) == 400);
    close(fd);
    http_stats_t st;
    stats_wait(x, &st);
    CHECK(st.status_431 == 1 && st.status_400 == 3);
    return NULL;
}

static void test_431_and_400(void **state)
{
    (void)state;
    http_opts_t o = small_opts();
    run(&o, client_431_400);
}

/* ---- 408 for a slow client; others unaffected -------------------------------- */

static void *client_slowloris(void *arg)
{
    ctx_t *x = arg;
    char head[4096], body[4096];
    int slow = tn_connect(x->port), other = tn_connect(x->port);
    CHECK(slow >= 0 && other >= 0);
    uint64_t t0 = tn_now_ms();
    const char *req = "GET / HTTP/1.1\r\nHost: slow\r\nX-A: bbbbbbbbbbbbbbbbbbbbbb\r\n\r\n";
    int status = -1;
    for (size_t i = 0; req[i]; i++) {
        if (tn_send(slow, req + i, 1) != 0)
            break;
        /* meanwhile the other connection is served */
        if (i % 3 == 0) {
            CHECK(tn_sends(other, "GET / HTTP/1.1\r\n\r\n") == 0);
            CHECK(RD(other) == 200);
        }
        char c;
        if (tn_getc(slow, &c, 50) == 1) {
            status = 0;
            break;
        }
    }
    CHECK(status == 0); /* the 408 arrived before the request was complete */
    uint64_t dt = tn_now_ms() - t0;
    CHECK(dt >= 250 && dt < 2000);
    /* Rest of the 408 response (first byte 'H' was consumed above). */
    char c;
    size_t n = 0;
    while (n < sizeof head - 1 && tn_getc(slow, &c, 1000) == 1)
        head[n++] = c;
    head[n] = '\0';
    CHECK(strncmp(head, "TTP/1.1 408 ", 12) == 0);
    CHECK(strstr(head, "Connection: close"));
    close(slow);

    /* slow body */
    int fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc") == 0);
    CHECK(RD(fd) == 408);
    CHECK(tn_wait_eof(fd, 2000) == 0);
    close(fd);
    CHECK(tn_sends(other, "GET / HTTP/1.1\r\n\r\n") == 0);
    CHECK(RD(other) == 200);
    close(other);
    http_stats_t st;
    stats_wait(x, &st);
    CHECK(st.status_408 == 2);
    return NULL;
}

static void test_408_slow_client(void **state)
{
    (void)state;
    http_opts_t o = small_opts();
    run(&o, client_slowloris);
}

/* ---- Connection: close, HTTP/1.0, 100-continue, idle ------------------------- */

static void *client_close(void *arg)
{
    ctx_t *x = arg;
    char head[4096], body[4096];
    int fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n") ==
          0);
    CHECK(RD(fd) == 200);
    CHECK(strstr(head, "Connection: close\r\n"));
    CHECK(tn_wait_eof(fd, 2000) == 0);
    close(fd);

    fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "GET / HTTP/1.0\r\n\r\n") == 0);
    CHECK(RD(fd) == 200 && strstr(head, "Connection: close\r\n"));
    CHECK(tn_wait_eof(fd, 2000) == 0);
    close(fd);

    fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(fd, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") == 0);
    CHECK(RD(fd) == 200 && strstr(head, "Connection: keep-alive\r\n"));
    CHECK(tn_sends(fd, "GET / HTTP/1.0\r\n\r\n") == 0);
    CHECK(RD(fd) == 200 && strstr(head, "Connection: close\r\n"));
    close(fd);

    fd = tn_connect(x->port);
    CHECK(fd >= 0);
    CHECK(tn_sends(
              fd, "POST /echo HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n") == 0);
    CHECK(tn_read_http(fd, head, sizeof head, body, sizeof body, 2000) == 100);
    CHECK(tn_sends(fd, "data") == 0);
    CHECK(RD(fd) == 200 && strcmp(body, "POST 4 data") == 0);
    /* idle keep-alive connection is closed after idle_timeout_ms */
    CHECK(tn_wait_eof(fd, 3000) == 0);
    close(fd);
    return NULL;
}

static void test_connection_close_http10_continue(void **state)
{
    (void)state;
    http_opts_t o = small_opts();
    o.idle_timeout_ms = 300;
    ctx_t x;
    start(&x, &o);
    finish(&x, client_close);
    assert_int_equal(atomic_load(&x.requests), 5); /* /never was not read */
}

/* ---- a client that pipelines and never reads is paused, then closed ------- */

static void *client_nonreader(void *arg)
{
    ctx_t *x = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)x->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    for (int i = 0; i < 200; i++)
        CHECK(tn_sends(fd, "GET /big HTTP/1.1\r\n\r\n") == 0);
    tn_sleep_ms(150);
    http_stats_t st;
    stats_wait(x, &st);
    CHECK(st.pauses >= 1);
    CHECK(st.requests < 200);
    for (int i = 0; i < 300 && st.conns_open; i++) {
        tn_sleep_ms(10);
        stats_wait(x, &st);
    }
    CHECK(st.conns_open == 0);
    close(fd);
    return NULL;
}

static void test_nonreading_client(void **state)
{
    (void)state;
    http_opts_t o = small_opts();
    o.idle_timeout_ms = 300;
    o.max_pending = 4;
    run(&o, client_nonreader);
}

/* ---- the assembly seam, without sockets -------------------------------------- */

static int seam_count;
static bool seam_request(http__parse_t *p, http_req_t *req)
{
    (void)p;
    seam_count++;
    assert_string_equal(http_req_method(req), "POST");
    assert_int_equal(http_req_body(req)->len, 5);
    assert_int_equal(http_req_conn_id(req), 0);
    http__req_free(req);
    return true;
}

static void test_seam_every_split(void **state)
{
    (void)state;
    static const char in[] = "POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                             "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n";
    http_opts_t o;
    http_opts_default(&o);
    size_t before = xmalloc_used();
    for (size_t split = 0; split <= sizeof in - 1; split++) {
        http__parse_t p;
        http__parse_init(&p, &o, NULL);
        p.on_request = seam_request;
        seam_count = 0;
        assert_int_equal(http__conn_feed(&p, in, split), split);
        assert_int_equal(http__conn_feed(&p, in + split, sizeof in - 1 - split),
                         sizeof in - 1 - split);
        assert_int_equal(p.error, 0);
        assert_int_equal(seam_count, 2);
        http__parse_free(&p);
    }
    assert_int_equal(xmalloc_used(), before);
}

static void test_pct_decode(void **state)
{
    (void)state;
    char out[8];
    size_t n;
    assert_true(http_pct_decode(slice_cstr("a%2Fb+c"), true, out, sizeof out, &n));
    assert_string_equal(out, "a/b c");
    assert_int_equal(n, 5);
    assert_false(http_pct_decode(slice_cstr("a%2"), false, out, sizeof out, NULL));
    assert_false(http_pct_decode(slice_cstr("a%zz"), false, out, sizeof out, NULL));
    assert_false(http_pct_decode(slice_cstr("a%00"), false, out, sizeof out, NULL));
    assert_false(http_pct_decode(slice_cstr("123456789"), false, out, sizeof out, NULL));
    assert_true(http_pct_decode(slice_cstr("1234567"), false, out, sizeof out, NULL));
}

int main(void)
{
    alarm(120);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keepalive_and_bodies),
        cmocka_unit_test(test_pipelining_in_order),
        cmocka_unit_test(test_413),
        cmocka_unit_test(test_431_and_400),
        cmocka_unit_test(test_408_slow_client),
        cmocka_unit_test(test_connection_close_http10_continue),
        cmocka_unit_test(test_nonreading_client),
        cmocka_unit_test(test_seam_every_split),
        cmocka_unit_test(test_pct_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
