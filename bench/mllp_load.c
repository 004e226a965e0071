/* mllp_load.c - an MLLP load generator and sink for the benchmarks.
 *
 *   mllp_load send HOST PORT CONNS SECONDS FILE   one message in flight per
 *       connection (as an interface engine sends), FILE's message with a
 *       fresh MSH-10 each time; prints messages/s and latency percentiles.
 *   mllp_load sink PORT                          answers every frame with a
 *       minimal AA (a fast downstream, so the daemon's figures are its own).
 *
 * With MLLP_LOAD_TLS_CA=FILE in the environment, send speaks TLS (the
 * daemon's own engine, common/tls.h), verifying the server against FILE
 * and the name "localhost".
 *
 * Built on libuv like the daemon; one thread, so it costs one core at most.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "tls.h"

typedef struct {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    char *out;
    size_t out_len;
    char in[65536];
    size_t in_len;
    uint64_t sent_at;
    unsigned long seq;
    int id;
    tls_conn_t *tls;    /* NULL: plaintext */
    char cipher[65536]; /* TLS: what the socket read */
} conn_t;

typedef struct {
    uv_write_t req;
    char data[];
} cipher_write_t;

static struct {
    uv_loop_t *loop;
    const char *msg;
    size_t msg_len;
    size_t cid_off, cid_len; /* where MSH-10 is in msg */
    uint64_t deadline;
    double *lat;
    size_t nlat, cap;
    unsigned long errors, acks_ok;
    int open;
    tls_ctx_t *tls;
} g;

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    conn_t *c = h->data;
    if (c->tls) {
        buf->base = c->cipher;
        buf->len = sizeof c->cipher;
        return;
    }
    buf->base = c->in + c->in_len;
    buf->len = sizeof c->in - c->in_len;
}

static void on_cipher_written(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

static void cipher_flush(conn_t *c)
{
    size_t n = tls_conn_out_pending(c->tls);
    if (!n)
        return;
    cipher_write_t *w = malloc(sizeof *w + n);
    n = tls_conn_out_take(c->tls, w->data, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_cipher_written);
}

static void acks_read(conn_t *c);

static void send_next(conn_t *c);

static void on_written(uv_write_t *w, int status)
{
    (void)w;
    (void)status;
}

static void record(double ms)
{
    if (g.nlat == g.cap) {
        g.cap = g.cap ? g.cap * 2 : 1 << 16;
        g.lat = realloc(g.lat, g.cap * sizeof *g.lat);
    }
    g.lat[g.nlat++] = ms;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    conn_t *c = s->data;
    if (n < 0) {
        g.errors++;
        uv_close((uv_handle_t *)s, NULL);
        g.open--;
        return;
    }
    if (!c->tls) {
        c->in_len += (size_t)n;
        acks_read(c);
        return;
    }
    bool was_established = tls_conn_established(c->tls);
    tls_conn_feed(c->tls, c->cipher, (size_t)n);
    for (;;) {
        long got = tls_conn_read(c->tls, c->in + c->in_len, sizeof c->in - c->in_len);
        cipher_flush(c);
        if (got < 0) {
            fprintf(stderr, "mllp_load: TLS: %s\n", tls_conn_error(c->tls));
            exit(1);
        }
        if (!was_established && tls_conn_established(c->tls)) {
            was_established = true;
            send_next(c);
        }
        if (got == 0)
            return;
        c->in_len += (size_t)got;
        acks_read(c);
        if (uv_is_closing((uv_handle_t *)&c->tcp))
            return;
    }
}

static void acks_read(conn_t *c)
{
    for (;;) {
        char *end = memchr(c->in, 0x1c, c->in_len);
        if (!end || (size_t)(end - c->in) + 1 >= c->in_len)
            return;
        size_t used = (size_t)(end - c->in) + 2;
        if (memmem(c->in, used, "MSA|AA", 6) || memmem(c->in, used, "MSA|CA", 6))
            g.acks_ok++;
        else
            g.errors++;
        record((double)(uv_hrtime() - c->sent_at) / 1e6);
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        send_next(c);
    }
}

static void send_next(conn_t *c)
{
    if (uv_hrtime() >= g.deadline) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        uv_close((uv_handle_t *)&c->tcp, NULL);
        g.open--;
        return;
    }
    /* A fresh, fixed-width control id in place of the template's MSH-10. */
    char id[32];
    snprintf(id, sizeof id, "L%02d%0*lu", c->id % 100, (int)(g.cid_len > 3 ? g.cid_len - 3 : 1),
             c->seq++);
    memcpy(c->out + 1 + g.cid_off, id, g.cid_len);
    c->sent_at = uv_hrtime();
    if (c->tls) {
        tls_conn_write(c->tls, c->out, c->out_len);
        cipher_flush(c);
        return;
    }
    uv_buf_t b = uv_buf_init(c->out, (unsigned)c->out_len);
    uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_written);
}

static void on_connect(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    if (status < 0) {
        fprintf(stderr, "connect: %s\n", uv_strerror(status));
        exit(1);
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (g.tls) {
        c->tls = tls_conn_new(g.tls, "localhost");
        tls_conn_read(c->tls, c->in, 0); /* the ClientHello */
        cipher_flush(c);
        return;
    }
    send_next(c);
}

static void on_guard(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "mllp_load: %d connection(s) still waiting for an ACK 10 s after the end\n",
            g.open);
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (fread(p, 1, (size_t)n, f) != (size_t)n)
        exit(1);
    fclose(f);
    while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r'))
        n--;
    p[n++] = '\r';
    *len = (size_t)n;
    return p;
}

/* Finds MSH-10 (the 9th separator after "MSH"). */
static void find_control_id(void)
{
    char sep = g.msg[3];
    size_t i = 3;
    int field = 1;
    while (i < g.msg_len && field < 9) { /* field k: at the separator before MSH-(k+1) */
        i++;
        if (g.msg[i] == sep)
            field++;
    }
    g.cid_off = i + 1;
    size_t j = g.cid_off;
    while (j < g.msg_len && g.msg[j] != sep)
        j++;
    g.cid_len = j - g.cid_off;
    if (g.cid_len < 8) {
        fprintf(stderr, "template MSH-10 must be at least 8 characters\n");
        exit(1);
    }
}

static int run_send(const char *host, int port, int conns, double secs, const char *file)
{
    g.msg = read_file(file, &g.msg_len);
    find_control_id();
    struct sockaddr_in addr;
    uv_ip4_addr(host, port, &addr);
    conn_t *cs = calloc((size_t)conns, sizeof *cs);
    g.deadline = uv_hrtime() + (uint64_t)(secs * 1e9);
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < conns; i++) {
        conn_t *c = &cs[i];
        c->id = i;
        c->out_len = g.msg_len + 3;
        c->out = malloc(c->out_len);
        c->out[0] = 0x0b;
        memcpy(c->out + 1, g.msg, g.msg_len);
        c->out[g.msg_len + 1] = 0x1c;
        c->out[g.msg_len + 2] = 0x0d;
        uv_tcp_init(g.loop, &c->tcp);
        uv_tcp_nodelay(&c->tcp, 1);
        c->tcp.data = c;
        c->connect.data = c;
        uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&addr, on_connect);
        g.open++;
    }
    uv_timer_t guard;
    uv_timer_init(g.loop, &guard);
    uv_timer_start(&guard, on_guard, (uint64_t)(secs * 1000) + 10000, 0);
    uv_unref((uv_handle_t *)&guard);
    uv_run(g.loop, UV_RUN_DEFAULT);
    double elapsed = (double)(uv_hrtime() - t0) / 1e9;
    qsort(g.lat, g.nlat, sizeof *g.lat, cmp_double);
    double p50 = g.nlat ? g.lat[g.nlat / 2] : 0, p99 = g.nlat ? g.lat[g.nlat * 99 / 100] : 0;
    double max = g.nlat ? g.lat[g.nlat - 1] : 0;
    printf("conns=%d messages=%zu errors=%lu msgs_per_s=%.0f MB_per_s=%.1f p50_ms=%.3f p99_ms=%.3f "
           "max_ms=%.3f\n",
           conns, g.nlat, g.errors, (double)g.nlat / elapsed,
           (double)g.nlat * (double)g.msg_len / elapsed / 1e6, p50, p99, max);
    return g.errors ? 1 : 0;
}

/* ---- sink */

/* Answers AA with MSA-2 = the message's MSH-10, as a real downstream does
 * (spinegate checks that the ACK is for the message it sent). */
static void sink_ack(uv_stream_t *s, const char *msg, size_t len)
{
    char sep = len > 3 ? msg[3] : '|';
    const char *p = msg, *end = msg + len, *cid = "", *cid_end = "";
    for (int field = 0; p < end && field < 9; p++)
        if (*p == sep && ++field == 9)
            cid = p + 1;
    for (cid_end = cid; cid_end < end && *cid_end != sep && *cid_end != '\r'; cid_end++)
        ;
    char *ack = malloc(256 + (size_t)(cid_end - cid));
    int n = sprintf(ack, "\x0bMSH|^~\\&|SINK|BENCH|||20260101000000||ACK|S%.*s|P|2.5\rMSA|AA|%.*s\r\x1c\r",
                    (int)(cid_end - cid), cid, (int)(cid_end - cid), cid);
    uv_buf_t b = uv_buf_init(ack, (unsigned)n);
    uv_try_write(s, &b, 1);
    free(ack);
}

static void sink_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    conn_t *c = s->data;
    if (n < 0) {
        uv_close((uv_handle_t *)s, (uv_close_cb)free);
        return;
    }
    c->in_len += (size_t)n;
    for (;;) {
        char *end = memchr(c->in, 0x1c, c->in_len);
        if (!end || (size_t)(end - c->in) + 1 >= c->in_len) {
            if (c->in_len == sizeof c->in) /* a message bigger than the buffer: skip it */
                c->in_len = 0;
            return;
        }
        size_t used = (size_t)(end - c->in) + 2;
        char *start = memchr(c->in, 0x0b, used);
        if (start)
            sink_ack(s, start + 1, (size_t)(end - start - 1));
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
    }
}

static void sink_accept(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    conn_t *c = calloc(1, sizeof *c);
    uv_tcp_init(g.loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) == 0)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, sink_read);
}

static int run_sink(int port)
{
    uv_tcp_t server;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    uv_tcp_init(g.loop, &server);
    if (uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0) ||
        uv_listen((uv_stream_t *)&server, 128, sink_accept)) {
        fprintf(stderr, "sink: cannot listen on %d\n", port);
        return 1;
    }
    return uv_run(g.loop, UV_RUN_DEFAULT);
}

int main(int argc, char **argv)
{
    g.loop = uv_default_loop();
    const char *ca = getenv("MLLP_LOAD_TLS_CA");
    if (ca && *ca) {
        tls_settings_t s = {.ca_file = ca};
        err_detail_t e;
        if (tls_ctx_new(TLS_CLIENT, &s, &g.tls, &e) != ERR_OK) {
            fprintf(stderr, "mllp_load: %s\n", e.msg);
            return 2;
        }
    }
    if (argc == 7 && strcmp(argv[1], "send") == 0)
        return run_send(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]), argv[6]);
    if (argc == 3 && strcmp(argv[1], "sink") == 0)
        return run_sink(atoi(argv[2]));
    fprintf(stderr, "usage: mllp_load send HOST PORT CONNS SECONDS FILE | mllp_load sink PORT\n");
    return 2;
}
