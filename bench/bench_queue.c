/* bench_queue.c - figures for the durable queue and the MLLP deliverer:
 *   1. 16 closed-loop senders (each puts its next message when the previous
 *      one's commit callback runs, as an MLLP sender waiting for its ACK):
 *      throughput, put-to-durable latency p50/p99/max, average batch;
 *   2. a burst of puts (many per loop turn): throughput and latency;
 *   3. delivery of a backlog to a local MLLP sink answering AA (other thread);
 *   4. 1 and 2 together: 16 senders while the deliverer drains to the sink.
 * Each for sync=full and sync=normal. Prints figures; asserts nothing.
 * Usage: bench_queue DIR [N]  (DIR: scratch folder; N messages per run) */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "log.h"
#include "out.h"
#include "queue.h"

#define SENDERS 16
#define PAYLOAD 1024

static char payload[PAYLOAD + 64];
static uint64_t *lat_ns;
static size_t nlat;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void print_lat(const char *what, double secs, size_t n, const queue_t *q)
{
    qsort(lat_ns, nlat, sizeof *lat_ns, cmp_u64);
    queue_stats_t st;
    queue_stats(q, &st);
    printf("  %-34s %8.0f msgs/s  latency p50 %6.3f ms  p99 %6.3f ms  max %6.3f ms  "
           "batch %.1f\n",
           what, n / secs, lat_ns[nlat / 2] / 1e6, lat_ns[nlat * 99 / 100] / 1e6,
           lat_ns[nlat - 1] / 1e6, st.commits ? (double)st.committed / st.commits : 0.0);
}

/* Payload is an HL7 message whose MSH-10 is the control id. */
static size_t make_msg(char *buf, int idx)
{
    int n = snprintf(buf, 128, "MSH|^~\\&|EHR|HOSP|BILL|HOSP|20240101||DFT^P03|M%09d|P|2.5\r", idx);
    memset(buf + n, 'x', PAYLOAD - (size_t)n - 1);
    buf[PAYLOAD - 1] = '\r';
    return PAYLOAD;
}

/* ---------------------------------------------------------------- senders */

typedef struct {
    queue_t *q;
    int next, total, done;
    uint64_t start_ns[SENDERS];
} senders_t;

static senders_t S;

static void sender_put(int who);

static void sender_cb(queue_t *q, err_t status, int64_t id, void *user)
{
    int who = (int)(intptr_t)user;
    lat_ns[nlat++] = uv_hrtime() - S.start_ns[who];
    S.done++;
    sender_put(who);
}

static void sender_put(int who)
{
    if (S.next >= S.total)
        return;
    int idx = S.next++;
    char ctrl[16];
    snprintf(ctrl, sizeof ctrl, "M%09d", idx);
    make_msg(payload, idx);
    queue_item_t it = {.dest = "hl7",
                       .control_id = ctrl,
                       .content_type = "application/hl7-v2",
                       .payload = payload,
                       .payload_len = PAYLOAD};
    S.start_ns[who] = uv_hrtime();
    err_t e = queue_put(S.q, &it, sender_cb, (void *)(intptr_t)who);
    if (e == ERR_BUSY) {
        S.next--; /* backpressure: a real sender would wait; here, give up this turn */
        return;
    }
    if (e) {
        fprintf(stderr, "put: %s\n", err_str(e));
        exit(1);
    }
}

/* ---------------------------------------------------------------- burst */

typedef struct {
    queue_t *q;
    int next, total;
    uint64_t *t0;
} burst_t;

static burst_t B;

static void burst_cb(queue_t *q, err_t status, int64_t id, void *user)
{
    int idx = (int)(intptr_t)user;
    lat_ns[nlat++] = uv_hrtime() - B.t0[idx];
}

static void burst_timer(uv_timer_t *t)
{
    char ctrl[16];
    for (int k = 0; k < 256 && B.next < B.total; k++, B.next++) {
        snprintf(ctrl, sizeof ctrl, "M%09d", B.next);
        make_msg(payload, B.next);
        queue_item_t it = {.dest = "hl7",
                           .control_id = ctrl,
                           .content_type = "application/hl7-v2",
                           .payload = payload,
                           .payload_len = PAYLOAD};
        B.t0[B.next] = uv_hrtime();
        if (queue_put(B.q, &it, burst_cb, (void *)(intptr_t)B.next) != ERR_OK) {
            fprintf(stderr, "burst put refused\n");
            exit(1);
        }
    }
    if (B.next >= B.total)
        uv_timer_stop(t);
}

/* ---------------------------------------------------------------- MLLP sink */

typedef struct {
    uv_loop_t loop;
    uv_tcp_t srv;
    uv_async_t stop;
    int port;
    uint64_t frames;
} sink_t;

typedef struct {
    uv_tcp_t tcp;
    sink_t *s;
    char buf[1 << 16];
    size_t len;
} sink_conn_t;

static void sink_closed(uv_handle_t *h)
{
    free(h->data);
}

static void sink_wrote(uv_write_t *w, int status)
{
    free(w);
}

static void sink_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    sink_conn_t *c = h->data;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - c->len));
}

static void sink_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    sink_conn_t *c = st->data;
    if (n < 0) {
        uv_close((uv_handle_t *)st, sink_closed);
        return;
    }
    c->len += (size_t)n;
    for (;;) {
        char *sb = memchr(c->buf, 0x0B, c->len);
        char *eb = sb ? memmem(sb, c->len - (size_t)(sb - c->buf), "\x1c\x0d", 2) : NULL;
        if (!eb)
            break;
        /* MSH-10 sits at a fixed place in make_msg()'s messages. */
        const char *ctrl = memmem(sb, (size_t)(eb - sb), "|M", 2);
        char ctl[16] = "";
        if (ctrl)
            memcpy(ctl, ctrl + 1, 10);
        uv_write_t *w = malloc(sizeof *w + 160);
        char *a = (char *)(w + 1);
        int len = snprintf(a, 160,
                           "\x0bMSH|^~\\&|B|B|E|E|20240101||ACK|A|P|2.5\rMSA|AA|%s\r\x1c\x0d", ctl);
        uv_buf_t ob = uv_buf_init(a, (unsigned)len);
        uv_write(w, st, &ob, 1, sink_wrote);
        c->s->frames++;
        size_t used = (size_t)(eb + 2 - c->buf);
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
    }
}

static void sink_conn(uv_stream_t *srv, int status)
{
    sink_conn_t *c = calloc(1, sizeof *c);
    c->s = srv->data;
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    uv_accept(srv, (uv_stream_t *)&c->tcp);
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, sink_alloc, sink_read);
}

static void sink_walk_close(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, h->type == UV_TCP && h->data != arg ? sink_closed : NULL);
}

static void sink_stop_cb(uv_async_t *a)
{
    sink_t *s = a->data;
    uv_walk(&s->loop, sink_walk_close, s);
}

static void *sink_thread(void *arg)
{
    sink_t *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void sink_start(sink_t *s, pthread_t *th)
{
    memset(s, 0, sizeof *s);
    uv_loop_init(&s->loop);
    uv_tcp_init(&s->loop, &s->srv);
    s->srv.data = s;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_bind(&s->srv, (const struct sockaddr *)&a, 0);
    uv_listen((uv_stream_t *)&s->srv, 16, sink_conn);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&s->srv, (struct sockaddr *)&ss, &len);
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_async_init(&s->loop, &s->stop, sink_stop_cb);
    s->stop.data = s;
    pthread_create(th, NULL, sink_thread, s);
}

static void sink_join(sink_t *s, pthread_t th)
{
    uv_async_send(&s->stop);
    pthread_join(th, NULL);
    uv_loop_close(&s->loop);
}

/* ---------------------------------------------------------------- runs */

static void closed_cb(void *u)
{
}

static queue_t *open_q(uv_loop_t *loop, const char *dir, queue_sync_t sync)
{
    char path[512];
    snprintf(path, sizeof path, "%s/bench.db", dir);
    static const char *const sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
    queue_opts_t o = {.sync = sync, .max_queued = 1000000};
    queue_t *q;
    err_detail_t d;
    if (queue_open(loop, path, &o, &q, &d) != ERR_OK) {
        fprintf(stderr, "queue_open: %s\n", d.msg);
        exit(1);
    }
    return q;
}

static void close_q(uv_loop_t *loop, queue_t *q)
{
    queue_close(q, closed_cb, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
}

static double now_s(void)
{
    return uv_hrtime() / 1e9;
}

typedef struct {
    out_dest_t *d;
    uint64_t want;
    uv_timer_t t;
} drain_t;

static void drain_check(uv_timer_t *t)
{
    drain_t *x = t->data;
    out_stats_t st;
    out_stats(x->d, &st);
    if (st.delivered >= x->want && S.done >= S.total) {
        uv_timer_stop(t);
        uv_stop(t->loop); /* the deliverer's connection stays open */
    }
}

static void stopped_cb(void *u)
{
    *(int *)u = 1;
}

static out_dest_t *start_out(uv_loop_t *loop, queue_t *q, int port)
{
    out_dest_opts_t o = {.dest = "hl7",
                         .kind = OUT_MLLP,
                         .host = "127.0.0.1",
                         .port = (unsigned)port,
                         .fetch_batch = 256,
                         .backoff_base_ms = 10};
    out_dest_t *d;
    err_detail_t e;
    if (out_start(loop, q, &o, &d, &e) != ERR_OK) {
        fprintf(stderr, "out_start: %s\n", e.msg);
        exit(1);
    }
    return d;
}

static void run(const char *dir, queue_sync_t sync, int n)
{
    const char *name = sync == QUEUE_SYNC_FULL ? "full" : "normal";
    printf("sync=%s, %d messages of %d bytes\n", name, n, PAYLOAD);
    uv_loop_t loop;
    uv_loop_init(&loop);

    /* 1. closed-loop senders */
    queue_t *q = open_q(&loop, dir, sync);
    memset(&S, 0, sizeof S);
    S.q = q;
    S.total = n;
    nlat = 0;
    double t0 = now_s();
    for (int i = 0; i < SENDERS; i++)
        sender_put(i);
    uv_run(&loop, UV_RUN_DEFAULT);
    print_lat("16 senders, put->durable", now_s() - t0, (size_t)n, q);
    close_q(&loop, q);

    /* 2. burst */
    q = open_q(&loop, dir, sync);
    memset(&B, 0, sizeof B);
    B.q = q;
    B.total = n;
    B.t0 = calloc((size_t)n, sizeof *B.t0);
    nlat = 0;
    uv_timer_t bt;
    uv_timer_init(&loop, &bt);
    t0 = now_s();
    uv_timer_start(&bt, burst_timer, 0, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    print_lat("burst, 256 puts per loop turn", now_s() - t0, (size_t)n, q);
    uv_close((uv_handle_t *)&bt, NULL);
    free(B.t0);

    /* 3. drain that backlog to an MLLP sink */
    sink_t sink;
    pthread_t th;
    sink_start(&sink, &th);
    out_dest_t *d = start_out(&loop, q, sink.port);
    drain_t x = {d, (uint64_t)n, {0}};
    memset(&S, 0, sizeof S); /* no senders: S.done >= S.total */
    uv_timer_init(&loop, &x.t);
    x.t.data = &x;
    t0 = now_s();
    uv_timer_start(&x.t, drain_check, 1, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    double secs = now_s() - t0;
    printf("  %-34s %8.0f msgs/s  (%d delivered in %.2f s)\n", "MLLP delivery of the backlog",
           n / secs, n, secs);
    int stopped = 0;
    out_stop(d, stopped_cb, &stopped);
    uv_run(&loop, UV_RUN_DEFAULT);
    close_q(&loop, q);

    /* 4. senders and delivery together */
    q = open_q(&loop, dir, sync);
    d = start_out(&loop, q, sink.port);
    memset(&S, 0, sizeof S);
    S.q = q;
    S.total = n;
    nlat = 0;
    x.d = d;
    t0 = now_s();
    for (int i = 0; i < SENDERS; i++)
        sender_put(i);
    uv_timer_start(&x.t, drain_check, 1, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    secs = now_s() - t0;
    print_lat("16 senders + MLLP delivery", secs, (size_t)n, q);
    stopped = 0;
    out_stop(d, stopped_cb, &stopped);
    uv_close((uv_handle_t *)&x.t, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    close_q(&loop, q);
    sink_join(&sink, th);
    uv_loop_close(&loop);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [N]\n", argv[0]);
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 40000;
    if (n < 100)
        n = 100;
    log_set_level(LOG_LVL_WARN);
    lat_ns = calloc((size_t)n, sizeof *lat_ns);
    run(argv[1], QUEUE_SYNC_FULL, n);
    run(argv[1], QUEUE_SYNC_NORMAL, n);
    free(lat_ns);
    return 0;
}
