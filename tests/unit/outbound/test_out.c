/* test_out.c - unit tests of outbound/out*.c with real loopback sockets: a
 * downstream MLLP listener and an HTTP server written here on the same loop,
 * scripted to answer AA, AE, nothing, or to close (201, 500, 400 for HTTP);
 * retries and backoff, order, dead-letter then the next message, downstream
 * down then up, the directory sink's file names, stop while in flight; the
 * delivery cursor: kill -9 repeats at most the message in flight, a restart
 * after a clean stop repeats nothing, a stale or damaged cursor is ignored. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sqlite3.h>
#include <unistd.h>
#include <uv.h>

#include "mllp_ack.h"
#include "out.h"
#include "out_int.h"
#include "queue.h"
#include "xmalloc.h"

/* ---------------------------------------------------------------- fixture */

typedef struct {
    char dir[64], path[96], out_dir[96], dead_dir[96];
    uv_loop_t loop;
    queue_t *q;
    unsigned reject_tries; /* for start_mllp/start_http; 0 = the default (1) */
    unsigned window;       /* for start_mllp: downstream-window; 0 = the default (1) */
    const char *dest;      /* for start_mllp: the destination; NULL = "hl7" */
    out_dest_t *live;      /* started by start_mllp/start_http, not yet stopped */
} fx_t;

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_out.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/queue.db", f->dir);
    snprintf(f->out_dir, sizeof f->out_dir, "%s/outbox", f->dir);
    snprintf(f->dead_dir, sizeof f->dead_dir, "%s/dead", f->dir);
    uv_loop_init(&f->loop);
    queue_opts_t o = {.sync = QUEUE_SYNC_NORMAL};
    if (queue_open(&f->loop, f->path, &o, &f->q, NULL) != ERR_OK)
        return -1;
    *state = f;
    return 0;
}

static void flag_cb(void *user)
{
    (*(int *)user)++;
}

static void close_any(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* After a failed assertion a test leaves its deliverer and peer running:
 * give the loop 5 s to wind down, then close whatever is left, so that a
 * failure is reported instead of hanging. */
static void teardown_deadline(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    int closed = 0, stopped = 1, late = 0;
    if (f->live) {
        stopped = 0;
        out_stop(f->live, flag_cb, &stopped);
        f->live = NULL;
    }
    queue_close(f->q, flag_cb, &closed);
    uv_timer_t deadline;
    uv_timer_init(&f->loop, &deadline);
    deadline.data = &late;
    uv_timer_start(&deadline, teardown_deadline, 5000, 0);
    while (!(closed && stopped) && !late)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_walk(&f->loop, close_any, NULL); /* nothing, unless a test failed */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    const char *mounts[] = {f->dead_dir, f->out_dir};
    for (int i = 0; i < 2; i++)
        umount2(mounts[i], MNT_DETACH);
    char qfs[128];
    snprintf(qfs, sizeof qfs, "%.100s/qfs", f->dir);
    umount2(qfs, MNT_DETACH);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* A DFT-like payload whose MSH-10 is "MSG<5 digits>". */
/* A DFT with MSH-15/16 set (accept and application acknowledgment types:
 * enhanced mode), or without them when both are NULL. */
static void put_msg_acks(fx_t *f, const char *dest, int idx, const char *msh15, const char *msh16)
{
    char ctrl[32], msg[256];
    snprintf(ctrl, sizeof ctrl, "MSG%05d", idx);
    int n = snprintf(msg, sizeof msg,
                     "MSH|^~\\&|EHR|HOSP|BILL|HOSP|20240101120000||DFT^P03|%s|P|2.5%s%s%s%s\r"
                     "EVN|P03|20240101\rDG1|1||M43.04^Fusion^I10\r",
                     ctrl, msh16 ? "|||" : "", msh16 ? msh15 : "", msh16 ? "|" : "",
                     msh16 ? msh16 : "");
    queue_item_t it = {dest, ctrl, "application/hl7-v2", msg, (size_t)n, NULL, NULL, NULL, 0};
    assert_int_equal(queue_put(f->q, &it, NULL, NULL), ERR_OK);
}

static void put_msg(fx_t *f, const char *dest, int idx)
{
    put_msg_acks(f, dest, idx, NULL, NULL);
}

typedef bool (*pred_t)(void *arg);

typedef struct {
    pred_t pred;
    void *arg;
    uint64_t deadline;
    bool met;
} wait_t;

static void wait_timer_cb(uv_timer_t *t)
{
    wait_t *w = t->data;
    if (w->pred && w->pred(w->arg)) {
        w->met = true;
        uv_stop(t->loop);
    } else if (uv_now(t->loop) >= w->deadline) {
        uv_stop(t->loop);
    }
}

/* Runs the loop until pred holds (true) or ms pass (false). pred NULL: just run ms. */
static bool run_until(fx_t *f, pred_t pred, void *arg, unsigned ms)
{
    wait_t w = {pred, arg, uv_now(&f->loop) + ms, false};
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    t.data = &w;
    uv_timer_start(&t, wait_timer_cb, 2, 2);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return w.met;
}

static void stop_out(fx_t *f, out_dest_t *d)
{
    int stopped = 0;
    if (f->live == d)
        f->live = NULL;
    out_stop(d, flag_cb, &stopped);
    while (!stopped)
        uv_run(&f->loop, UV_RUN_ONCE);
}

typedef struct {
    out_dest_t *d;
    uint64_t want;
} delivered_arg_t;

static bool delivered_pred(void *arg)
{
    delivered_arg_t *a = arg;
    out_stats_t st;
    out_stats(a->d, &st);
    return st.delivered + st.dead >= a->want;
}

static int ctrl_of(const char *p, size_t n)
{
    /* MSH-10: after the 9th '|' of the first segment. */
    int bars = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r')
            break;
        if (p[i] == '|' && ++bars == 9)
            return i + 4 < n ? atoi(p + i + 4) : -1;
    }
    return -1;
}

static bool file_has(const char *dir, const char *name, const char *needle);

/* ---------------------------------------------------------------- MLLP peer */

/* ANS_CA_AA and ANS_CA_AE answer as an enhanced-mode receiver: a commit ACK,
 * then the application ACK, as two frames. ANS_STRANGER names a control id
 * never sent; ANS_AR refuses as ANS_AE does, with AR. */
typedef enum {
    ANS_AA,
    ANS_AE,
    ANS_SILENT,
    ANS_CLOSE,
    ANS_WRONG_ID,
    ANS_CA_AA,
    ANS_CA_AE,
    ANS_STRANGER,
    ANS_AR,
} ans_t;

typedef struct srv srv_t;

typedef struct peer {
    uv_tcp_t tcp;
    srv_t *s;
    char buf[65536];
    size_t len;
    int index;   /* 1 for the first connection accepted */
    int nframes; /* frames received on this connection */
} peer_t;

struct srv {
    uv_tcp_t tcp;
    int port;
    ans_t script[64];
    int nscript, next;
    int received[512], nreceived; /* every frame, retries included */
    int acked[512], nacked;       /* answered AA */
    int connections;
    int conn_first[16]; /* the first control id each connection carried */
    /* hold > 0: ACKs are held until hold frames wait on the connection (or
     * 10 ms pass), then sent in order: the sender must have had that many
     * in flight. max_pending: the most that waited at once. */
    int hold, pend[64], npend, max_pending;
    peer_t *pend_peer;
    uv_timer_t hold_timer;
    bool http;
    int statuses[64], nstatus, nextstatus;
    char ctype[128], path[128];
    peer_t *peers[64]; /* open connections */
    /* cursor_path set: the delivery cursor's id as each frame arrived (0
     * while the file holds none) */
    const char *cursor_path;
    int64_t cursor_at[512];
};

static void peer_closed(uv_handle_t *h)
{
    peer_t *p = h->data;
    if (p->s->pend_peer == p) {
        p->s->pend_peer = NULL;
        p->s->npend = 0;
    }
    for (int i = 0; i < 64; i++)
        if (p->s->peers[i] == p)
            p->s->peers[i] = NULL;
    xfree(p);
}

static void write_done(uv_write_t *w, int status)
{
    xfree(w);
}

static void send_str(peer_t *p, const char *s, size_t n)
{
    uv_write_t *w = xmalloc(sizeof *w + n);
    memcpy(w + 1, s, n);
    uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)n);
    uv_write(w, (uv_stream_t *)&p->tcp, &b, 1, write_done);
}

static void mllp_answer(peer_t *p, int ctrl);

/* Answers every held frame, in order, until the connection closes. */
static void hold_flush(srv_t *s)
{
    uv_timer_stop(&s->hold_timer);
    peer_t *p = s->pend_peer;
    int pend[64], n = s->npend;
    memcpy(pend, s->pend, sizeof pend);
    s->npend = 0;
    for (int i = 0; p && i < n && !uv_is_closing((uv_handle_t *)&p->tcp); i++)
        mllp_answer(p, pend[i]);
}

static void hold_timer_cb(uv_timer_t *t)
{
    hold_flush(t->data);
}

static void mllp_frame(peer_t *p, const char *frame, size_t n)
{
    srv_t *s = p->s;
    int ctrl = ctrl_of(frame, n);
    if (s->cursor_path && s->nreceived < 512) {
        unsigned char rec[64];
        FILE *fp = fopen(s->cursor_path, "rb");
        size_t got = fp ? fread(rec, 1, sizeof rec, fp) : 0;
        int64_t id = 0, inst = 0;
        if (fp)
            fclose(fp);
        if (!out__cursor_decode(rec, got, &id, &inst))
            id = 0;
        s->cursor_at[s->nreceived] = id;
    }
    s->received[s->nreceived++] = ctrl;
    if (p->nframes++ == 0 && p->index <= 16)
        s->conn_first[p->index - 1] = ctrl;
    if (s->hold) {
        if (s->pend_peer != p) {
            s->pend_peer = p;
            s->npend = 0;
        }
        s->pend[s->npend++] = ctrl;
        if (s->npend > s->max_pending)
            s->max_pending = s->npend;
        if (s->npend >= s->hold)
            hold_flush(s);
        else if (!uv_is_active((uv_handle_t *)&s->hold_timer))
            uv_timer_start(&s->hold_timer, hold_timer_cb, 10, 0);
        return;
    }
    mllp_answer(p, ctrl);
}

static void mllp_answer(peer_t *p, int ctrl)
{
    srv_t *s = p->s;
    ans_t a = s->next < s->nscript ? s->script[s->next++] : ANS_AA;
    if (a == ANS_SILENT)
        return;
    if (a == ANS_CLOSE) {
        if (!uv_is_closing((uv_handle_t *)&p->tcp))
            uv_close((uv_handle_t *)&p->tcp, peer_closed);
        return;
    }
    char ack[512];
    int len = 0;
    if (a == ANS_CA_AA || a == ANS_CA_AE) {
        len = snprintf(ack, sizeof ack,
                       "\x0bMSH|^~\\&|BILL|HOSP|EHR|HOSP|20240101||ACK^P03|C%d|P|2.5\r"
                       "MSA|CA|MSG%05d\r\x1c\x0d",
                       ctrl, ctrl);
        a = a == ANS_CA_AA ? ANS_AA : ANS_AE;
    }
    len += snprintf(ack + len, sizeof ack - (size_t)len,
                       "\x0bMSH|^~\\&|BILL|HOSP|EHR|HOSP|20240101||ACK^P03|A%d|P|2.5\r"
                       "MSA|%s|MSG%05d%s\r\x1c\x0d",
                       ctrl, a == ANS_AE ? "AE" : a == ANS_AR ? "AR" : "AA",
                       a == ANS_WRONG_ID ? ctrl + 1 : a == ANS_STRANGER ? 99999 : ctrl,
                       a == ANS_AE || a == ANS_AR
                           ? "|Account closed\rERR|||207^Application internal "
                             "error^HL70357|E||||Guarantor account 4711 is closed"
                           : "");
    if (a == ANS_AA)
        s->acked[s->nacked++] = ctrl;
    send_str(p, ack, (size_t)len);
}

static void http_request(peer_t *p)
{
    srv_t *s = p->s;
    for (;;) {
        char *end = memmem(p->buf, p->len, "\r\n\r\n", 4);
        if (!end)
            return;
        size_t hlen = (size_t)(end - p->buf) + 4;
        char *cl = memmem(p->buf, hlen, "Content-Length: ", 16);
        size_t blen = cl ? (size_t)atol(cl + 16) : 0;
        if (p->len < hlen + blen)
            return;
        sscanf(p->buf, "POST %127s", s->path);
        char *ct = memmem(p->buf, hlen, "Content-Type: ", 14);
        if (ct)
            sscanf(ct + 14, "%127[^\r]", s->ctype);
        int ctrl = ctrl_of(p->buf + hlen, blen);
        s->received[s->nreceived++] = ctrl;
        int code = s->nextstatus < s->nstatus ? s->statuses[s->nextstatus++] : 201;
        if (code == 201)
            s->acked[s->nacked++] = ctrl;
        /* A refusal carries its OperationOutcome, as a FHIR server's does. */
        const char *oo = code >= 400 ? "{\"resourceType\":\"OperationOutcome\",\"issue\":[{"
                                       "\"severity\":\"error\",\"code\":\"business-rule\","
                                       "\"diagnostics\":\"Coverage not active\"}]}"
                                     : "{}";
        char resp[512];
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 %d X\r\nContent-Type: application/fhir+json\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         code, strlen(oo), oo);
        send_str(p, resp, (size_t)n);
        memmove(p->buf, p->buf + hlen + blen, p->len - hlen - blen);
        p->len -= hlen + blen;
    }
}

static void peer_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    peer_t *p = h->data;
    *b = uv_buf_init(p->buf + p->len, (unsigned)(sizeof p->buf - p->len));
}

static void peer_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    peer_t *p = st->data;
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)st))
            uv_close((uv_handle_t *)st, peer_closed);
        return;
    }
    p->len += (size_t)n;
    if (p->s->http) {
        http_request(p);
        return;
    }
    for (;;) {
        char *sb = memchr(p->buf, 0x0B, p->len);
        char *eb = sb ? memmem(sb, p->len - (size_t)(sb - p->buf), "\x1c\x0d", 2) : NULL;
        if (!eb)
            return;
        mllp_frame(p, sb + 1, (size_t)(eb - sb - 1));
        if (uv_is_closing((uv_handle_t *)st))
            return;
        size_t used = (size_t)(eb + 2 - p->buf);
        memmove(p->buf, p->buf + used, p->len - used);
        p->len -= used;
    }
}

static void on_conn(uv_stream_t *server, int status)
{
    srv_t *s = server->data;
    peer_t *p = xcalloc(1, sizeof *p);
    p->s = s;
    uv_tcp_init(server->loop, &p->tcp);
    p->tcp.data = p;
    for (int i = 0; i < 64; i++)
        if (!s->peers[i]) {
            s->peers[i] = p;
            break;
        }
    if (uv_accept(server, (uv_stream_t *)&p->tcp) == 0) {
        p->index = ++s->connections;
        uv_read_start((uv_stream_t *)&p->tcp, peer_alloc, peer_read);
    } else {
        uv_close((uv_handle_t *)&p->tcp, peer_closed);
    }
}

static void srv_start(fx_t *f, srv_t *s, int port)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    uv_tcp_init(&f->loop, &s->tcp);
    s->tcp.data = s;
    uv_timer_init(&f->loop, &s->hold_timer);
    s->hold_timer.data = s;
    assert_int_equal(uv_tcp_bind(&s->tcp, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->tcp, 16, on_conn), 0);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&ss, &len);
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void srv_stop(fx_t *f, srv_t *s)
{
    uv_close((uv_handle_t *)&s->tcp, NULL);
    uv_close((uv_handle_t *)&s->hold_timer, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* Closes the listener and every peer connection it accepted. */
static void srv_close(fx_t *f, srv_t *s)
{
    for (int i = 0; i < 64; i++)
        if (s->peers[i] && !uv_is_closing((uv_handle_t *)&s->peers[i]->tcp))
            uv_close((uv_handle_t *)&s->peers[i]->tcp, peer_closed);
    srv_stop(f, s);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static out_dest_t *start_mllp(fx_t *f, srv_t *s, unsigned max_tries, unsigned ack_ms)
{
    out_dest_opts_t o = {
        .dest = f->dest ? f->dest : "hl7",
        .kind = OUT_MLLP,
        .host = "127.0.0.1",
        .port = (unsigned)s->port,
        .dead_dir = f->dead_dir,
        .no_fsync = true,
        .max_tries = max_tries,
        .reject_tries = f->reject_tries,
        .backoff_base_ms = 10,
        .backoff_max_ms = 40,
        .jitter = true,
        .connect_timeout_ms = 500,
        .ack_timeout_ms = ack_ms,
        .window = f->window,
    };
    out_dest_t *d = NULL;
    err_detail_t e;
    err_t rc = out_start(&f->loop, f->q, &o, &d, &e);
    if (rc)
        fprintf(stderr, "out_start: %s\n", e.msg);
    assert_int_equal(rc, ERR_OK);
    f->live = d;
    return d;
}

static bool file_exists(const char *dir, const char *name)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static int count_files(const char *dir, const char *prefix)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            n++;
    closedir(dp);
    return n;
}

/* ---------------------------------------------------------------- MLLP tests */

static void test_mllp_in_order(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    srv_start(f, &s, 0);
    for (int i = 0; i < 200; i++)
        put_msg(f, "hl7", i);
    out_dest_t *d = start_mllp(f, &s, 3, 1000);
    delivered_arg_t a = {d, 200};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    assert_int_equal(s.nacked, 200);
    for (int i = 0; i < 200; i++)
        assert_int_equal(s.acked[i], i);
    assert_int_equal(s.connections, 1); /* kept open between messages */
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.retries, 0);
    assert_true(st.connected);
    assert_true(st.last_ok_ms > 0);
    assert_int_equal(queue_depth(f->q, "hl7"), 0);

    /* Messages put while it runs go out too, after the others. */
    put_msg(f, "hl7", 200);
    a.want = 201;
    assert_true(run_until(f, delivered_pred, &a, 5000));
    assert_int_equal(s.acked[200], 200);
    stop_out(f, d);
    srv_close(f, &s);
}

static void test_mllp_retries_keep_order(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    /* msg0: AE, AE, then AA; msg1: closed, then an ACK for the wrong id,
     * then AA; msg2: no answer (timeout), then AA. */
    ans_t script[] = {ANS_AE, ANS_AE, ANS_AA, ANS_CLOSE, ANS_WRONG_ID, ANS_AA, ANS_SILENT, ANS_AA};
    memcpy(s.script, script, sizeof script);
    f->reject_tries = 3; /* an AE is retried twice here */
    s.nscript = (int)(sizeof script / sizeof script[0]);
    srv_start(f, &s, 0);
    for (int i = 0; i < 4; i++)
        put_msg(f, "hl7", i);
    out_dest_t *d = start_mllp(f, &s, 5, 150);
    delivered_arg_t a = {d, 4};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    int want_received[] = {0, 0, 0, 1, 1, 1, 2, 2, 3};
    assert_int_equal(s.nreceived, 9);
    for (int i = 0; i < 9; i++)
        assert_int_equal(s.received[i], want_received[i]);
    for (int i = 0; i < 4; i++)
        assert_int_equal(s.acked[i], i);
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.delivered, 4);
    assert_int_equal(st.retries, 5);
    assert_int_equal(st.dead, 0);
    assert_true(s.connections >= 3); /* reconnected after close, wrong id and timeout */
    queue_stats_t qs;
    queue_stats(f->q, &qs);
    assert_int_equal(qs.retries, 5);
    stop_out(f, d);
    srv_close(f, &s);
}

static void test_mllp_dead_letter_then_next(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    ans_t script[] = {ANS_AE, ANS_AE, ANS_AE};
    memcpy(s.script, script, sizeof script);
    s.nscript = 3;
    f->reject_tries = 3; /* downstream-reject-retries = 3 */
    srv_start(f, &s, 0);
    for (int i = 0; i < 3; i++)
        put_msg(f, "hl7", i);
    out_dest_t *d = start_mllp(f, &s, 3, 1000);
    delivered_arg_t a = {d, 3};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.dead, 1);
    assert_int_equal(st.delivered, 2);
    assert_string_equal(st.last_error, "downstream answered AE");
    assert_int_equal(s.nacked, 2);
    assert_int_equal(s.acked[0], 1);
    assert_int_equal(s.acked[1], 2);
    assert_true(file_exists(f->dead_dir, "000000000001-MSG00000.hl7"));
    assert_true(file_exists(f->dead_dir, "000000000001-MSG00000.hl7.reason"));
    assert_int_equal(count_files(f->dead_dir, ".tmp"), 0);
    queue_stats_t qs;
    queue_stats(f->q, &qs);
    assert_int_equal(qs.dead, 1);
    assert_int_equal(qs.delivered, 2);
    assert_int_equal(qs.depth, 0);
    stop_out(f, d);
    srv_close(f, &s);
}

static void test_mllp_down_then_up(void **state)
{
    fx_t *f = *state;
    /* Find a free port, then leave nothing listening on it. */
    static srv_t s;
    memset(&s, 0, sizeof s);
    srv_start(f, &s, 0);
    int port = s.port;
    srv_stop(f, &s);
    uv_run(&f->loop, UV_RUN_NOWAIT);

    for (int i = 0; i < 30; i++)
        put_msg(f, "hl7", i);
    out_dest_t *d = start_mllp(f, &s, 1000, 1000);
    run_until(f, NULL, NULL, 300);
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.delivered, 0);
    assert_true(st.retries >= 3);
    assert_false(st.connected);
    assert_non_null(strstr(st.last_error, "ECONNREFUSED"));

    memset(&s, 0, sizeof s);
    srv_start(f, &s, port);
    delivered_arg_t a = {d, 30};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    assert_int_equal(s.nreceived, 30); /* each once: nothing got through while down */
    for (int i = 0; i < 30; i++)
        assert_int_equal(s.acked[i], i);
    stop_out(f, d);
    srv_close(f, &s);
}

static bool inflight_pred(void *arg)
{
    return ((srv_t *)arg)->nreceived > 0;
}

static void test_stop_in_flight_then_restart(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    ans_t script[] = {ANS_SILENT};
    memcpy(s.script, script, sizeof script);
    s.nscript = 1;
    srv_start(f, &s, 0);
    for (int i = 0; i < 5; i++)
        put_msg(f, "hl7", i);
    out_dest_t *d = start_mllp(f, &s, 10, 200);
    assert_true(run_until(f, inflight_pred, &s, 5000));
    /* Stop while msg0 waits for its ACK: the stop waits for the timeout. */
    uint64_t t0 = uv_now(&f->loop);
    stop_out(f, d);
    uint64_t waited = uv_now(&f->loop) - t0;
    assert_true(waited >= 150 && waited < 2000);
    assert_int_equal(queue_depth(f->q, "hl7"), 5);

    /* A new deliverer picks up where the old one stopped, in order. */
    d = start_mllp(f, &s, 10, 1000);
    delivered_arg_t a = {d, 5};
    assert_true(run_until(f, delivered_pred, &a, 5000));
    for (int i = 0; i < 5; i++)
        assert_int_equal(s.acked[i], i);
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.delivered, 5);
    stop_out(f, d);
    srv_close(f, &s);
}

static void test_ack_parse(void **state)
{
    char r[96];
    const char *aa = "MSH|^~\\&|A|B\rMSA|AA|X1\r";
    assert_int_equal(out__mllp_ack_parse(aa, strlen(aa), "X1", r, sizeof r), OUT_RES_OK);
    assert_int_equal(out__mllp_ack_parse(aa, strlen(aa), "", r, sizeof r), OUT_RES_OK);
    assert_int_equal(out__mllp_ack_parse(aa, strlen(aa), "X2", r, sizeof r), OUT_RES_RETRY);
    assert_string_equal(r, "ACK for another control id");
    const char *ca = "MSH|^~\\&\nMSA|CA";
    assert_int_equal(out__mllp_ack_parse(ca, strlen(ca), "X", r, sizeof r), OUT_RES_OK);
    const char *cr = "MSH|^~\\&\rMSA|CR|X\r";
    assert_int_equal(out__mllp_ack_parse(cr, strlen(cr), "X", r, sizeof r), OUT_RES_REJECT);
    assert_string_equal(r, "downstream answered CR");
    /* An application reject, and billing's own words for the dead-letter note. */
    const char *ae = "MSH|^~\\&|B\rMSA|AE|X|Guarantor closed|x\rERR|||207^Err^HL70357|E\x01\r";
    assert_int_equal(out__mllp_ack_parse(ae, strlen(ae), "X", r, sizeof r), OUT_RES_REJECT);
    assert_string_equal(r, "downstream answered AE");
    char text[128];
    mllp_ack_text(ae, strlen(ae), text, sizeof text);
    assert_string_equal(text, "MSA-3: Guarantor closed\nERR|||207^Err^HL70357|E \n");
    mllp_ack_text(ae, strlen(ae), text, 10);
    assert_int_equal(strlen(text), 9);
    mllp_ack_text(aa, strlen(aa), text, sizeof text);
    assert_string_equal(text, "");
    const char *nomsa = "MSH|^~\\&\rXMSA|AA|X\r";
    assert_int_equal(out__mllp_ack_parse(nomsa, strlen(nomsa), "X", r, sizeof r), OUT_RES_RETRY);
    assert_int_equal(out__mllp_ack_parse("MSA", 3, "X", r, sizeof r), OUT_RES_RETRY);
    assert_int_equal(out__mllp_ack_parse("MSA|A", 5, "X", r, sizeof r), OUT_RES_RETRY);
    assert_int_equal(out__mllp_ack_parse("MSA|AAA", 7, "", r, sizeof r), OUT_RES_RETRY);
}

/* ---------------------------------------------------------------- HTTP tests */

static out_dest_t *start_http(fx_t *f, srv_t *s, unsigned max_tries)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/fhir/", s->port);
    out_dest_opts_t o = {
        .dest = "fhir",
        .kind = OUT_HTTP,
        .url = url,
        .dead_dir = f->dead_dir,
        .no_fsync = true,
        .max_tries = max_tries,
        .reject_tries = f->reject_tries,
        .backoff_base_ms = 10,
        .backoff_max_ms = 40,
        .ack_timeout_ms = 2000,
    };
    out_dest_t *d = NULL;
    err_detail_t e;
    err_t rc = out_start(&f->loop, f->q, &o, &d, &e);
    if (rc)
        fprintf(stderr, "out_start: %s\n", e.msg);
    assert_int_equal(rc, ERR_OK);
    f->live = d;
    return d;
}

static void put_claim(fx_t *f, int idx)
{
    /* The HTTP peer reads the id the same way as MSH-10: 9 bars, then 3 chars. */
    char body[128], ctrl[32];
    snprintf(ctrl, sizeof ctrl, "MSG%05d", idx);
    int n = snprintf(body, sizeof body, "|||||||||MSG%05d{\"resourceType\":\"Claim\"}", idx);
    queue_item_t it = {"fhir", ctrl, "application/fhir+json", body, (size_t)n, NULL, NULL, NULL, 0};
    assert_int_equal(queue_put(f->q, &it, NULL, NULL), ERR_OK);
}

static void test_http_statuses(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    s.http = true;
    /* claim0: 201; claim1: 500, 429, 201; claim2: 400 (permanent); claim3: 201 */
    int statuses[] = {201, 500, 429, 201, 400, 201};
    memcpy(s.statuses, statuses, sizeof statuses);
    s.nstatus = 6;
    srv_start(f, &s, 0);
    for (int i = 0; i < 4; i++)
        put_claim(f, i);
    out_dest_t *d = start_http(f, &s, 5);
    delivered_arg_t a = {d, 4};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    int want[] = {0, 1, 1, 1, 2, 3};
    assert_int_equal(s.nreceived, 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(s.received[i], want[i]);
    assert_string_equal(s.path, "/fhir/Claim");
    assert_string_equal(s.ctype, "application/fhir+json");
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.delivered, 3);
    assert_int_equal(st.retries, 2);
    assert_int_equal(st.dead, 1);
    assert_true(file_exists(f->dead_dir, "000000000003-MSG00002.json"));
    assert_true(
        file_has(f->dead_dir, "000000000003-MSG00002.json.reason", "reason: HTTP status 400"));
    assert_true(file_has(f->dead_dir, "000000000003-MSG00002.json.reason",
                         "\"diagnostics\":\"Coverage not active\""));
    assert_int_equal(st.rejects, 1);
    assert_int_equal(queue_depth(f->q, "fhir"), 0);
    stop_out(f, d);
    srv_close(f, &s);
}

static void test_http_server_down(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    s.http = true;
    srv_start(f, &s, 0);
    int port = s.port;
    srv_stop(f, &s);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    for (int i = 0; i < 10; i++)
        put_claim(f, i);
    out_dest_t *d = start_http(f, &s, 1000);
    run_until(f, NULL, NULL, 200);
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.delivered, 0);
    assert_true(st.retries >= 2);
    memset(&s, 0, sizeof s);
    s.http = true;
    srv_start(f, &s, port);
    delivered_arg_t a = {d, 10};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    for (int i = 0; i < 10; i++)
        assert_int_equal(s.acked[i], i);
    stop_out(f, d);
    srv_close(f, &s);
}

/* ---------------------------------------------------------------- kill -9 */

/* A child daemon puts 300 messages, delivers them to our peer, and is killed
 * with SIGKILL after about 100 are acknowledged; a new deliverer on the same
 * file delivers the rest. Every message must arrive, in order; rows whose
 * delivered mark was not committed at the kill are skipped thanks to the
 * cursor file, so the only possible repeat is the message in flight. */
static int child_delivered_pred_n;

static void child_watch(uv_timer_t *t)
{
    out_dest_t *d = t->data;
    out_stats_t st;
    out_stats(d, &st);
    if (st.delivered >= (uint64_t)child_delivered_pred_n)
        raise(SIGKILL);
}

static void kill_child(const char *path, int port)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    queue_opts_t qo = {.sync = QUEUE_SYNC_NORMAL};
    queue_t *q;
    if (queue_open(&loop, path, &qo, &q, NULL) != ERR_OK)
        _exit(2);
    for (int i = 0; i < 300; i++) {
        char ctrl[32], msg[128];
        snprintf(ctrl, sizeof ctrl, "MSG%05d", i);
        int n = snprintf(msg, sizeof msg, "MSH|^~\\&|E|H|B|H|2024||DFT^P03|%s|P|2.5\r", ctrl);
        queue_item_t it = {"hl7", ctrl, "application/hl7-v2", msg, (size_t)n, NULL, NULL, NULL, 0};
        if (queue_put(q, &it, NULL, NULL) != ERR_OK)
            _exit(3);
    }
    out_dest_opts_t o = {.dest = "hl7",
                         .kind = OUT_MLLP,
                         .host = "127.0.0.1",
                         .port = (unsigned)port,
                         .backoff_base_ms = 10};
    out_dest_t *d;
    if (out_start(&loop, q, &o, &d, NULL) != ERR_OK)
        _exit(4);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = d;
    child_delivered_pred_n = 100;
    uv_timer_start(&t, child_watch, 1, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    _exit(5);
}

static pid_t kill_pid;

static bool child_dead_pred(void *arg)
{
    int ws;
    if (waitpid(kill_pid, &ws, WNOHANG) != kill_pid)
        return false;
    *(int *)arg = ws;
    return true;
}

typedef struct {
    queue_t *q;
} depth_arg_t;

static bool depth_zero_pred(void *arg)
{
    return queue_depth(((depth_arg_t *)arg)->q, "hl7") == 0;
}

static void test_kill9_during_delivery(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    srv_start(f, &s, 0);
    char path[128];
    snprintf(path, sizeof path, "%s/crash.db", f->dir);
    kill_pid = fork();
    assert_true(kill_pid >= 0);
    if (kill_pid == 0)
        kill_child(path, s.port);
    int ws = 0;
    assert_true(run_until(f, child_dead_pred, &ws, 20000));
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    int before = s.nacked;
    assert_true(before >= 100 && before < 300);

    queue_opts_t qo = {.sync = QUEUE_SYNC_NORMAL};
    queue_t *q2;
    assert_int_equal(queue_open(&f->loop, path, &qo, &q2, NULL), ERR_OK);
    uint64_t left = queue_depth(q2, "hl7");
    out_dest_opts_t o = {.dest = "hl7",
                         .kind = OUT_MLLP,
                         .host = "127.0.0.1",
                         .port = (unsigned)s.port,
                         .backoff_base_ms = 10};
    out_dest_t *d;
    assert_int_equal(out_start(&f->loop, q2, &o, &d, NULL), ERR_OK);
    depth_arg_t da = {q2};
    assert_true(run_until(f, depth_zero_pred, &da, 20000));
    out_stats_t st;
    out_stats(d, &st);
    stop_out(f, d);
    int closed = 0;
    queue_close(q2, flag_cb, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);

    /* First arrivals are 0..299 in order; repeats only re-send a tail. */
    static char seen[300];
    memset(seen, 0, sizeof seen);
    int next = 0, repeats = 0;
    for (int i = 0; i < s.nacked; i++) {
        int k = s.acked[i];
        assert_true(k >= 0 && k < 300);
        if (seen[k]) {
            repeats++;
            continue;
        }
        assert_int_equal(k, next);
        seen[k] = 1;
        next++;
    }
    assert_int_equal(next, 300);
    printf("# kill -9 after %d acknowledged: %llu left pending, %llu skipped by the cursor, "
           "%d delivered twice\n",
           before, (unsigned long long)left, (unsigned long long)st.skipped, repeats);
    /* What was pending is what the cursor skipped plus what was sent again. */
    assert_int_equal((uint64_t)(300 - before + repeats) + st.skipped, left);
    assert_int_equal(st.delivered, (uint64_t)(300 - before + repeats));
    assert_true(repeats <= 1); /* only the one in flight */
    if (repeats == 1) /* and it is the last one acknowledged before the kill */
        assert_int_equal(s.acked[before], s.acked[before - 1]);
    srv_close(f, &s);
}

/* ---------------------------------------------------------------- cursor file */

static void cursor_file(const fx_t *f, const char *dest, char *buf, size_t n)
{
    snprintf(buf, n, "%s.%s.cursor", f->path, dest);
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    fclose(fp);
}

static int64_t read_cursor(const fx_t *f, const char *dest)
{
    char path[160];
    cursor_file(f, dest, path, sizeof path);
    unsigned char rec[64];
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    size_t n = fread(rec, 1, sizeof rec, fp);
    fclose(fp);
    int64_t id = -1, inst = 0;
    assert_true(out__cursor_decode(rec, n, &id, &inst));
    assert_true(inst == queue_instance(f->q));
    return id;
}

static void test_cursor_record(void **state)
{
    (void)state;
    unsigned char rec[OUT_CURSOR_LEN];
    int64_t ids[] = {0, 1, 255, 256, 123456789012345, INT64_MAX};
    int64_t insts[] = {0, -1, 42, INT64_MIN, 7};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        int64_t got = -1, inst = 0, want_inst = insts[i % 5];
        out__cursor_encode(rec, ids[i], want_inst);
        assert_true(out__cursor_decode(rec, sizeof rec, &got, &inst));
        assert_true(got == ids[i]);
        assert_true(inst == want_inst);
        /* Any flipped bit, a short or long record, zeros: refused. */
        for (size_t b = 0; b < sizeof rec * 8; b++) {
            rec[b / 8] ^= (unsigned char)(1u << (b % 8));
            assert_false(out__cursor_decode(rec, sizeof rec, &got, &inst));
            rec[b / 8] ^= (unsigned char)(1u << (b % 8));
        }
        assert_false(out__cursor_decode(rec, sizeof rec - 1, &got, &inst));
    }
    unsigned char zero[OUT_CURSOR_LEN] = {0}, big[OUT_CURSOR_LEN + 1] = {0};
    int64_t got, inst;
    assert_false(out__cursor_decode(zero, sizeof zero, &got, &inst));
    out__cursor_encode(big, 7, 1);
    assert_false(out__cursor_decode(big, sizeof big, &got, &inst));
}

/* A valid cursor at id 3 with rows 1..5 pending: 1..3 are skipped (marked
 * delivered, not sent), 4 and 5 go out; the cursor ends at 5. */
static void test_cursor_skips_delivered(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    srv_start(f, &s, 0);
    for (int i = 0; i < 5; i++)
        put_msg(f, "hl7", i);
    run_until(f, NULL, NULL, 50); /* committed: ids 1..5 allocated */
    assert_true(queue_max_id(f->q) == 5);
    char path[160];
    cursor_file(f, "hl7", path, sizeof path);
    unsigned char rec[OUT_CURSOR_LEN];
    out__cursor_encode(rec, 3, queue_instance(f->q));
    write_file(path, rec, sizeof rec);

    out_dest_t *d = start_mllp(f, &s, 3, 1000);
    depth_arg_t da = {f->q};
    assert_true(run_until(f, depth_zero_pred, &da, 5000));
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.skipped, 3);
    assert_int_equal(st.delivered, 2);
    assert_int_equal(s.nreceived, 2);
    assert_int_equal(s.acked[0], 3);
    assert_int_equal(s.acked[1], 4);
    stop_out(f, d);
    assert_true(read_cursor(f, "hl7") == 5);
    srv_close(f, &s);
}

/* A cursor of another database (the queue was deleted and created again, and
 * has rows up to and past the old cursor), or one ahead of every id the queue
 * ever allocated (the same database, restored): ignored and reset, every row
 * is sent. */
static void test_cursor_stale_ignored(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    srv_start(f, &s, 0);
    char path[160];
    cursor_file(f, "hl7", path, sizeof path);
    unsigned char rec[OUT_CURSOR_LEN];
    int sent = 0;
    for (int k = 0; k < 2; k++) {
        if (k == 0)
            out__cursor_encode(rec, 3, queue_instance(f->q) ^ 1);
        else
            out__cursor_encode(rec, 1000000, queue_instance(f->q));
        write_file(path, rec, sizeof rec);
        for (int i = 0; i < 5; i++)
            put_msg(f, "hl7", sent + i);
        run_until(f, NULL, NULL, 50);

        out_dest_t *d = start_mllp(f, &s, 3, 1000);
        delivered_arg_t a = {d, 5};
        assert_true(run_until(f, delivered_pred, &a, 5000));
        out_stats_t st;
        out_stats(d, &st);
        assert_int_equal(st.skipped, 0);
        stop_out(f, d);
        sent += 5;
        assert_int_equal(s.nacked, sent);
        assert_true(read_cursor(f, "hl7") == sent);
    }
    for (int i = 0; i < sent; i++)
        assert_int_equal(s.acked[i], i);
    srv_close(f, &s);
}

/* Garbage, a torn record and an empty file: ignored, every row is sent. */
static void test_cursor_garbage_ignored(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    srv_start(f, &s, 0);
    char path[160];
    cursor_file(f, "hl7", path, sizeof path);
    unsigned char torn[OUT_CURSOR_LEN];
    out__cursor_encode(torn, 2, queue_instance(f->q));
    const struct {
        const void *p;
        size_t n;
    } files[] = {
        {"garbage garbage garbage!", 24},
        {"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 24},
        {torn, 9},
        {"", 0},
    };
    int sent = 0;
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
        for (int i = 0; i < 3; i++)
            put_msg(f, "hl7", sent + i);
        run_until(f, NULL, NULL, 30);
        write_file(path, files[k].p, files[k].n);
        out_dest_t *d = start_mllp(f, &s, 3, 1000);
        delivered_arg_t a = {d, 3};
        assert_true(run_until(f, delivered_pred, &a, 5000));
        out_stats_t st;
        out_stats(d, &st);
        assert_int_equal(st.skipped, 0);
        stop_out(f, d);
        sent += 3;
        assert_int_equal(s.nacked, sent);
        assert_true(read_cursor(f, "hl7") == sent);
    }
    for (int i = 0; i < sent; i++)
        assert_int_equal(s.acked[i], i);
    srv_close(f, &s);
}

/* After a clean stop (deliverer and queue closed), a new start sends nothing
 * again; a later message goes out once. A dead-lettered row is passed by the
 * cursor only once its dead mark is committed, and stays dead. */
static void test_cursor_clean_restart(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    ans_t script[] = {ANS_AA, ANS_AE};
    memcpy(s.script, script, sizeof script);
    s.nscript = 2;
    srv_start(f, &s, 0);
    for (int i = 0; i < 10; i++)
        put_msg(f, "hl7", i);
    out_dest_t *d = start_mllp(f, &s, 1, 1000); /* msg1 is dead-lettered at once */
    delivered_arg_t a = {d, 10};
    assert_true(run_until(f, delivered_pred, &a, 5000));
    stop_out(f, d);
    assert_int_equal(s.nacked, 9);
    assert_true(read_cursor(f, "hl7") == 10);

    int64_t inst = queue_instance(f->q);
    int closed = 0;
    queue_close(f->q, flag_cb, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    queue_opts_t qo = {.sync = QUEUE_SYNC_NORMAL};
    assert_int_equal(queue_open(&f->loop, f->path, &qo, &f->q, NULL), ERR_OK);
    assert_true(queue_max_id(f->q) == 10);
    assert_true(queue_instance(f->q) == inst); /* the same file, the same identity */
    queue_stats_t qs;
    queue_stats(f->q, &qs);
    assert_int_equal(qs.depth, 0);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT id, state FROM msgs", -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(q, 0), 2); /* msg1, dead-lettered (file written) */
    assert_int_equal(sqlite3_column_int(q, 1), 4);
    assert_int_equal(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
    sqlite3_close(db);

    d = start_mllp(f, &s, 3, 1000);
    run_until(f, NULL, NULL, 100);
    put_msg(f, "hl7", 10);
    a = (delivered_arg_t){d, 1};
    assert_true(run_until(f, delivered_pred, &a, 5000));
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.skipped, 0);
    assert_int_equal(st.delivered, 1);
    stop_out(f, d);
    assert_int_equal(s.nacked, 10);
    assert_int_equal(s.acked[9], 10);
    assert_int_equal(s.nreceived, 11); /* 10 first tries, one of them AE, and msg10 */
    assert_true(read_cursor(f, "hl7") == 11);
    srv_close(f, &s);
}

static bool rejects_pred(void *arg)
{
    out_stats_t st;
    out_stats(arg, &st);
    return st.rejects >= 2;
}

/* downstream-reject-retries = 3: billing refuses msg0 twice, the daemon
 * restarts (queue closed and opened again), and the third refusal
 * dead-letters it. Were the count held only in memory, the restart would
 * give it three more tries and the fourth (AA here) would deliver it. */
static void test_reject_count_survives_restart(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    ans_t script[] = {ANS_AE, ANS_AE, ANS_AE};
    memcpy(s.script, script, sizeof script);
    s.nscript = 3;
    srv_start(f, &s, 0);
    put_msg(f, "hl7", 0);
    put_msg(f, "hl7", 1);
    out_dest_opts_t o = {
        .dest = "hl7",
        .kind = OUT_MLLP,
        .host = "127.0.0.1",
        .port = (unsigned)s.port,
        .dead_dir = f->dead_dir,
        .no_fsync = true,
        .reject_tries = 3,
        .backoff_base_ms = 10,
        .backoff_max_ms = 10,
        .ack_timeout_ms = 1000,
    };
    out_dest_t *d = NULL;
    assert_int_equal(out_start(&f->loop, f->q, &o, &d, NULL), ERR_OK);
    assert_true(run_until(f, rejects_pred, d, 5000));
    /* The third try waits out a backoff that the stop cuts short. */
    d->o.backoff_base_ms = d->o.backoff_max_ms = 600000;
    stop_out(f, d);
    assert_int_equal(s.nreceived, 2);

    int closed = 0;
    queue_close(f->q, flag_cb, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    queue_opts_t qo = {.sync = QUEUE_SYNC_NORMAL};
    assert_int_equal(queue_open(&f->loop, f->path, &qo, &f->q, NULL), ERR_OK);

    assert_int_equal(out_start(&f->loop, f->q, &o, &d, NULL), ERR_OK);
    f->live = d;
    delivered_arg_t a = {d, 2};
    assert_true(run_until(f, delivered_pred, &a, 5000));
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.dead, 1);
    assert_int_equal(st.delivered, 1);
    stop_out(f, d);
    assert_int_equal(s.nreceived, 4); /* AE, AE, restart, AE; then msg1 */
    assert_int_equal(s.nacked, 1);
    assert_int_equal(s.acked[0], 1);
    assert_true(file_exists(f->dead_dir, "000000000001-MSG00000.hl7"));
    assert_true(file_has(f->dead_dir, "000000000001-MSG00000.hl7.reason", "attempts: 3"));
    srv_close(f, &s);
}

/* A queue file as versions before the dead-lettered state left it after a
 * full disk: schema 1 without the rejects column, and every dead row state 3
 * whether its dead-letter file was written or not. */
static void make_old_dead_queue(fx_t *f)
{
    int closed = 0;
    queue_close(f->q, flag_cb, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    f->q = NULL;
    char p[160];
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", f->path, sfx[i]);
        unlink(p);
    }
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    const char *sql =
        "PRAGMA journal_mode=WAL;"
        "CREATE TABLE msgs(id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " dest TEXT NOT NULL, control_id TEXT NOT NULL,"
        " content_type TEXT NOT NULL, payload BLOB NOT NULL, findings TEXT,"
        " state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
        " last_error TEXT, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
        "CREATE INDEX msgs_dest ON msgs(dest, state, id);"
        "PRAGMA user_version=1;"
        /* 1: dead-lettered, its file written; 2 and 4: stranded, no file;
         * 3: pending; 5: dead and unreadable (no content type). */
        "INSERT INTO msgs VALUES(1, 'hl7', 'MSG00000', 'application/hl7-v2', 'p0', NULL, 3,"
        " 3, 'downstream answered AE', 10, 10);"
        "INSERT INTO msgs VALUES(2, 'hl7', 'MSG00001', 'application/hl7-v2', 'p1', NULL, 3,"
        " 10, 'connect: ECONNREFUSED', 11, 11);"
        "INSERT INTO msgs VALUES(3, 'hl7', 'MSG00002', 'application/hl7-v2', 'p2', NULL, 0,"
        " 0, NULL, 12, 12);"
        "INSERT INTO msgs VALUES(4, 'hl7', 'MSG00003', 'application/hl7-v2', 'p3', NULL, 3,"
        " 10, 'outbox: No space left on device', 13, 13);"
        "INSERT INTO msgs VALUES(5, 'hl7', 'MSG00004', '', 'p4', NULL, 3, 0, 'x', 14, 14);"
        "INSERT INTO msgs VALUES(6, 'fhir', 'C1', 'application/fhir+json', '{}', NULL, 3, 1,"
        " 'x', 15, 15);";
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(out__mkdirs(f->dead_dir), 0);
    snprintf(p, sizeof p, "%s/000000000001-MSG00000.hl7", f->dead_dir);
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fputs("p0", fp);
    fclose(fp);
    queue_opts_t qo = {.sync = QUEUE_SYNC_NORMAL};
    assert_int_equal(queue_open(&f->loop, f->path, &qo, &f->q, NULL), ERR_OK);
}

/* Dead rows with no dead-letter file anywhere go back to pending at start,
 * behind the pending ones, in their order; a dead row whose file exists
 * becomes dead-lettered; an unreadable one and another destination's stay. */
static void test_stranded_dead_rows_requeued(void **state)
{
    fx_t *f = *state;
    make_old_dead_queue(f);
    assert_int_equal(queue_depth(f->q, "hl7"), 1);
    out_dest_opts_t o = {.dest = "hl7",
                         .kind = OUT_DIR,
                         .dir = f->out_dir,
                         .dead_dir = f->dead_dir,
                         .no_fsync = true};
    out_dest_t *d = NULL;
    assert_int_equal(out_start(&f->loop, f->q, &o, &d, NULL), ERR_OK);
    f->live = d;
    assert_int_equal(queue_depth(f->q, "hl7"), 3);
    delivered_arg_t a = {d, 3};
    assert_true(run_until(f, delivered_pred, &a, 5000));
    stop_out(f, d);
    /* The pending one first, then the two requeued in their order (ids 7, 8). */
    assert_int_equal(count_files(f->out_dir, "0"), 3);
    assert_true(file_exists(f->out_dir, "000000000003-MSG00002.hl7"));
    assert_true(file_exists(f->out_dir, "000000000007-MSG00001.hl7"));
    assert_true(file_exists(f->out_dir, "000000000008-MSG00003.hl7"));
    assert_true(file_has(f->out_dir, "000000000008-MSG00003.hl7", "p3"));
    assert_int_equal(count_files(f->dead_dir, "0"), 1); /* untouched */

    int closed = 0; /* the delivered marks committed */
    queue_close(f->q, flag_cb, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    queue_opts_t qo = {.sync = QUEUE_SYNC_NORMAL};
    assert_int_equal(queue_open(&f->loop, f->path, &qo, &f->q, NULL), ERR_OK);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT id, state FROM msgs ORDER BY id", -1, &st, NULL), SQLITE_OK);
    /* Row 1, dead-lettered now, was pruned at the reopen (its file is decades
     * old); a row still marked the only copy would have been kept. */
    int64_t want[][2] = {{5, 3}, {6, 3}};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int64(st, 0), want[i][0]);
        assert_int_equal(sqlite3_column_int64(st, 1), want[i][1]);
    }
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);

    /* A second start finds nothing more to requeue. */
    assert_int_equal(out_start(&f->loop, f->q, &o, &d, NULL), ERR_OK);
    f->live = d;
    assert_int_equal(queue_depth(f->q, "hl7"), 0);
    stop_out(f, d);
    assert_int_equal(count_files(f->out_dir, "0"), 3);
}

/* Without a dead-letter folder a dead row is dead on purpose: left alone. */
static void test_dead_rows_kept_without_folder(void **state)
{
    fx_t *f = *state;
    make_old_dead_queue(f);
    out_dest_opts_t o = {.dest = "hl7", .kind = OUT_DIR, .dir = f->out_dir, .no_fsync = true};
    out_dest_t *d = NULL;
    assert_int_equal(out_start(&f->loop, f->q, &o, &d, NULL), ERR_OK);
    f->live = d;
    assert_int_equal(queue_depth(f->q, "hl7"), 1);
    delivered_arg_t a = {d, 1};
    assert_true(run_until(f, delivered_pred, &a, 5000));
    stop_out(f, d);
    assert_int_equal(count_files(f->out_dir, "0"), 1);
}

/* ---------------------------------------------------------------- directory sink */

static void test_dir_sink(void **state)
{
    fx_t *f = *state;
    for (int i = 0; i < 20; i++)
        put_msg(f, "hl7", i);
    const char *odd = "../evil id/\x01";
    queue_item_t it = {"hl7", odd, "application/hl7-v2", "MSH|x", 5, NULL, NULL, NULL, 0};
    assert_int_equal(queue_put(f->q, &it, NULL, NULL), ERR_OK);
    it.control_id = "";
    assert_int_equal(queue_put(f->q, &it, NULL, NULL), ERR_OK);

    out_dest_opts_t o = {.dest = "hl7", .kind = OUT_DIR, .dir = f->out_dir};
    out_dest_t *d = NULL;
    err_detail_t e;
    assert_int_equal(out_start(&f->loop, f->q, &o, &d, &e), ERR_OK);
    delivered_arg_t a = {d, 22};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    for (int i = 0; i < 20; i++) {
        char name[64];
        snprintf(name, sizeof name, "%012d-MSG%05d.hl7", i + 1, i);
        assert_true(file_exists(f->out_dir, name));
    }
    assert_true(file_exists(f->out_dir, "000000000021-_._evil_id__.hl7"));
    assert_true(file_exists(f->out_dir, "000000000022-noid.hl7"));
    assert_int_equal(count_files(f->out_dir, ".tmp"), 0);
    assert_int_equal(count_files(f->out_dir, "0000"), 22);

    char p[256];
    snprintf(p, sizeof p, "%s/000000000003-MSG00002.hl7", f->out_dir);
    FILE *fp = fopen(p, "rb");
    assert_non_null(fp);
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    assert_int_equal(ctrl_of(buf, n), 2);
    assert_int_equal(queue_depth(f->q, "hl7"), 0);
    stop_out(f, d);

    /* Bad options are refused with a reason. */
    out_dest_opts_t bad = {.dest = "hl7", .kind = OUT_MLLP, .host = "127.0.0.1"};
    assert_int_equal(out_start(&f->loop, f->q, &bad, &d, &e), ERR_BAD_CONFIG);
    assert_null(d);
    bad = (out_dest_opts_t){.dest = "fhir", .kind = OUT_HTTP, .url = "ftp://x"};
    assert_int_equal(out_start(&f->loop, f->q, &bad, &d, &e), ERR_BAD_CONFIG);
    bad = (out_dest_opts_t){.dest = "a b", .kind = OUT_DIR, .dir = f->out_dir};
    assert_int_equal(out_start(&f->loop, f->q, &bad, &d, &e), ERR_BAD_CONFIG);
    /* A cursor file that cannot be opened: refused, and nothing is left open
     * (the same destination starts once the obstacle is gone). */
    char cpath[160];
    cursor_file(f, "hl7", cpath, sizeof cpath);
    unlink(cpath);
    assert_int_equal(mkdir(cpath, 0700), 0);
    assert_int_equal(out_start(&f->loop, f->q, &o, &d, &e), ERR_IO);
    assert_null(d);
    printf("# %s\n", e.msg);
    assert_int_equal(rmdir(cpath), 0);
    out_dest_t *d1 = NULL;
    assert_int_equal(out_start(&f->loop, f->q, &o, &d1, &e), ERR_OK);
    assert_int_equal(out_start(&f->loop, f->q, &o, &d, &e), ERR_BUSY); /* one per destination */
    uv_run(&f->loop, UV_RUN_NOWAIT);
    stop_out(f, d1);
}

/* ---------------------------------------------------------------- outage policy and storage faults
 */

/* The cursor's id, 0 for a cursor file never written. */
static int64_t cursor_or_0(const fx_t *f, const char *dest)
{
    char path[160];
    struct stat st;
    cursor_file(f, dest, path, sizeof path);
    if (stat(path, &st) == 0 && st.st_size == 0)
        return 0;
    return read_cursor(f, dest);
}

static bool file_has(const char *dir, const char *name, const char *needle)
{
    char p[256], buf[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *fp = fopen(p, "rb");
    if (!fp)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

/* An AE from billing is the message's own fault: with the defaults it is
 * dead-lettered at once, with billing's text, and the next message goes on. */
static void test_mllp_reject_then_next(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    ans_t script[] = {ANS_AE};
    memcpy(s.script, script, sizeof script);
    s.nscript = 1;
    srv_start(f, &s, 0);
    for (int i = 0; i < 3; i++)
        put_msg(f, "hl7", i);
    out_dest_t *d = start_mllp(f, &s, 0, 1000);
    delivered_arg_t a = {d, 3};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.dead, 1);
    assert_int_equal(st.delivered, 2);
    assert_int_equal(st.rejects, 1);
    assert_int_equal(st.retries, 0);
    assert_int_equal(s.nreceived, 3); /* sent once, not retried for minutes */
    assert_int_equal(s.acked[0], 1);
    assert_int_equal(s.acked[1], 2);
    const char *note = "000000000001-MSG00000.hl7.reason";
    assert_true(file_has(f->dead_dir, note, "reason: downstream answered AE"));
    assert_true(file_has(f->dead_dir, note, "MSA-3: Account closed"));
    assert_true(file_has(f->dead_dir, note, "Guarantor account 4711 is closed"));
    assert_int_equal(st.failing_since_ms, 0);
    stop_out(f, d);
    srv_close(f, &s);
}

/* ---------------------------------------------------------------- MLLP window */

/* downstream-window 1 (the default): the next message goes only once the
 * last is acknowledged, even when the receiver is slow to answer. */
static void test_mllp_window_1_one_at_a_time(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    s.hold = 8; /* would answer 8 at once; waits 10 ms with fewer */
    srv_start(f, &s, 0);
    for (int i = 0; i < 12; i++)
        put_msg(f, "hl7", i);
    out_dest_t *d = start_mllp(f, &s, 3, 1000);
    delivered_arg_t a = {d, 12};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    assert_int_equal(s.max_pending, 1);
    assert_int_equal(s.nreceived, 12);
    for (int i = 0; i < 12; i++)
        assert_int_equal(s.acked[i], i);
    stop_out(f, d);
    srv_close(f, &s);
}

/* Puts n messages and delivers them all with window 8 to a receiver s
 * (zeroed by the caller) that answers only once 8 frames wait. */
static out_dest_t *deliver_held_by_8(fx_t *f, srv_t *s, int n)
{
    s->hold = 8;
    srv_start(f, s, 0);
    for (int i = 0; i < n; i++)
        put_msg(f, "hl7", i);
    f->window = 8;
    out_dest_t *d = start_mllp(f, s, 3, 1000);
    delivered_arg_t a = {d, (uint64_t)n};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    return d;
}

/* Window 8 against a receiver that answers only once 8 frames wait: every
 * ACK comes back in order, 8 at a time, on one connection. */
static void test_mllp_window_8_in_order(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    out_dest_t *d = deliver_held_by_8(f, &s, 200);
    assert_int_equal(s.max_pending, 8);
    assert_int_equal(s.nreceived, 200); /* each once */
    assert_int_equal(s.nacked, 200);
    for (int i = 0; i < 200; i++) {
        assert_int_equal(s.received[i], i);
        assert_int_equal(s.acked[i], i);
    }
    assert_int_equal(s.connections, 1);
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.delivered, 200);
    assert_int_equal(st.retries, 0);
    assert_int_equal(st.inflight, 0);
    queue_stats_t qs;
    queue_stats(f->q, &qs);
    assert_int_equal(qs.delivered, 200);
    assert_int_equal(qs.depth, 0);
    stop_out(f, d);
    srv_close(f, &s);
}

/* With a window the cursor moves once for the ACKs read together, but
 * before the next frame leaves: when a frame arrives, at most the window
 * (that frame included) lies past the cursor, so a kill -9 sends again
 * only what was in flight. */
static void test_mllp_window_cursor_before_next_frame(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    char path[160];
    cursor_file(f, "hl7", path, sizeof path);
    s.cursor_path = path;
    out_dest_t *d = deliver_held_by_8(f, &s, 64);
    stop_out(f, d);
    srv_close(f, &s);
    assert_int_equal(s.nreceived, 64);
    int64_t first_id = read_cursor(f, "hl7") - 63; /* the rows' ids follow each other */
    for (int k = 0; k < 64; k++) {
        assert_int_equal(s.received[k], k);
        assert_true(first_id + k - s.cursor_at[k] <= 8);
    }
    assert_true(s.cursor_at[63] >= first_id + 55); /* it moved by batches, not at the end */
}

/* An ACK naming a message not in flight, and one that overtakes the oldest
 * in flight, are protocol errors: the connection is dropped and everything
 * not acknowledged is sent again from the oldest; nothing is lost and the
 * deliverer counts each message delivered once. */
static void test_mllp_window_ack_not_in_flight(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    s.hold = 4;
    /* Connection 1: msg0 AA, msg1 AA, msg2 answered for MSG99999. Then the
     * ACKs of msg3.. are for a connection already dropped. Connection 2
     * (from msg2): msg2 AA, then msg3's ACK names msg4 (in flight, out of
     * order). Connection 3 (from msg3): all AA. */
    ans_t script[] = {ANS_AA, ANS_AA, ANS_STRANGER, ANS_CLOSE, ANS_AA, ANS_WRONG_ID, ANS_CLOSE};
    memcpy(s.script, script, sizeof script);
    s.nscript = (int)(sizeof script / sizeof script[0]);
    srv_start(f, &s, 0);
    for (int i = 0; i < 16; i++)
        put_msg(f, "hl7", i);
    f->window = 4;
    out_dest_t *d = start_mllp(f, &s, 0, 1000);
    delivered_arg_t a = {d, 16};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    assert_int_equal(s.connections, 3);
    assert_int_equal(s.conn_first[0], 0);
    assert_int_equal(s.conn_first[1], 2); /* the oldest not acknowledged */
    assert_int_equal(s.conn_first[2], 3);
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.delivered, 16);
    assert_int_equal(st.dead, 0);
    assert_int_equal(st.retries, 2);
    /* What billing accepted, in order: 0, 1, 2 and 3..15 once each. */
    int want[16];
    for (int i = 0; i < 16; i++)
        want[i] = i;
    assert_int_equal(s.nacked, 16);
    assert_memory_equal(s.acked, want, sizeof want);
    queue_stats_t qs;
    queue_stats(f->q, &qs);
    assert_int_equal(qs.delivered, 16);
    assert_int_equal(qs.depth, 0);
    stop_out(f, d);
    srv_close(f, &s);
}

/* The connection drops with 5 messages in flight, none acknowledged: all 5
 * are sent again, from the oldest, and billing gets every message once, in
 * order. */
static void test_mllp_window_drop_with_5_in_flight(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    s.hold = 5;
    ans_t script[] = {ANS_AA, ANS_AA, ANS_AA, ANS_AA, ANS_AA, ANS_CLOSE};
    memcpy(s.script, script, sizeof script);
    s.nscript = (int)(sizeof script / sizeof script[0]);
    srv_start(f, &s, 0);
    for (int i = 0; i < 20; i++)
        put_msg(f, "hl7", i);
    f->window = 5;
    out_dest_t *d = start_mllp(f, &s, 0, 1000);
    delivered_arg_t a = {d, 20};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    assert_int_equal(s.max_pending, 5);
    assert_int_equal(s.connections, 2);
    assert_int_equal(s.conn_first[1], 5);
    /* Received: 0..9 on the first connection, 5..19 on the second. */
    assert_int_equal(s.nreceived, 25);
    for (int i = 0; i < 10; i++)
        assert_int_equal(s.received[i], i);
    for (int i = 10; i < 25; i++)
        assert_int_equal(s.received[i], i - 5);
    assert_int_equal(s.nacked, 20);
    for (int i = 0; i < 20; i++)
        assert_int_equal(s.acked[i], i);
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.delivered, 20);
    assert_int_equal(st.retries, 1);
    assert_int_equal(queue_depth(f->q, "hl7"), 0);
    stop_out(f, d);
    srv_close(f, &s);
}

/* An AR for a message in the middle of the window: counted as billing's
 * refusal, retried (downstream-reject-retries = 2), then accepted; the
 * messages sent after it go again after it, in order. With 1 reject try it
 * is dead-lettered and the rest follow, in order. */
static void test_mllp_window_ar_in_the_middle(void **state)
{
    fx_t *f = *state;
    for (unsigned tries = 2; tries >= 1; tries--) {
        static srv_t s;
        memset(&s, 0, sizeof s);
        s.hold = 4;
        /* msg0 AA, msg1 AA, msg2 AR, msg3 (sent after msg2, on a
         * connection dropped by then) AA. */
        ans_t script[] = {ANS_AA, ANS_AA, ANS_AR, ANS_AA};
        memcpy(s.script, script, sizeof script);
        s.nscript = 4;
        f->reject_tries = tries;
        f->window = 4;
        srv_start(f, &s, 0);
        for (int i = 0; i < 12; i++)
            put_msg(f, tries == 2 ? "hl7" : "hl7b", i);
        f->dest = tries == 2 ? "hl7" : "hl7b";
        out_dest_t *d = start_mllp(f, &s, 0, 1000);
        delivered_arg_t a = {d, 12};
        assert_true(run_until(f, delivered_pred, &a, 10000));
        out_stats_t st;
        out_stats(d, &st);
        assert_int_equal(st.rejects, 1);
        assert_int_equal(s.connections, 2);
        int first = tries == 2 ? 2 : 3; /* msg2 again, or the one after it */
        assert_int_equal(s.conn_first[1], first);
        if (tries == 2) {
            assert_int_equal(st.delivered, 12);
            assert_int_equal(st.dead, 0);
        } else {
            assert_int_equal(st.delivered, 11);
            assert_int_equal(st.dead, 1);
            assert_true(file_has(f->dead_dir, "000000000015-MSG00002.hl7.reason",
                                 "reason: downstream answered AR"));
        }
        /* The second connection carries every message from its first on,
         * each once, in order. */
        int k = s.nreceived - (12 - first);
        for (int i = first; i < 12; i++, k++)
            assert_int_equal(s.received[k], i);
        assert_int_equal(queue_depth(f->q, f->dest), 0);
        stop_out(f, d);
        srv_close(f, &s);
    }
}

/* Billing in enhanced mode answers CA, then the application ACK. With
 * MSH-16 = AL the application ACK decides (msg1's AE dead-letters it); with
 * ER the CA ends the send and a late ACK for that message is set aside. No
 * frame is taken for the next message's ACK, and the connection is kept. */
static void test_mllp_enhanced_mode_downstream(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    ans_t script[] = {ANS_CA_AA, ANS_CA_AE, ANS_CA_AE, ANS_CA_AA, ANS_AA};
    memcpy(s.script, script, sizeof script);
    s.nscript = 5;
    srv_start(f, &s, 0);
    put_msg_acks(f, "hl7", 0, "AL", "AL");
    put_msg_acks(f, "hl7", 1, "AL", "AL");
    put_msg_acks(f, "hl7", 2, "AL", "ER"); /* AE after the CA: billing's now */
    put_msg_acks(f, "hl7", 3, "AL", "ER");
    put_msg(f, "hl7", 4);
    out_dest_t *d = start_mllp(f, &s, 0, 1000);
    delivered_arg_t a = {d, 5};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.delivered, 4);
    assert_int_equal(st.dead, 1);
    assert_int_equal(st.retries, 0);
    assert_int_equal(s.nreceived, 5); /* each sent once */
    assert_int_equal(s.connections, 1);
    const char *note = "000000000002-MSG00001.hl7.reason";
    assert_true(file_has(f->dead_dir, note, "reason: downstream answered AE"));
    stop_out(f, d);
    srv_close(f, &s);
}

/* A billing system down for ten minutes, in time scaled down 300 times: the
 * daemon's default backoff (500 ms doubling to 5 min) becomes 2 ms to 1 s,
 * and the outage 2 s. Every message waits, none is dead-lettered, and all go
 * out in order once billing is back, within one capped delay. */
static void test_mllp_ten_minute_outage_scaled(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    srv_start(f, &s, 0);
    int port = s.port;
    srv_stop(f, &s);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    for (int i = 0; i < 50; i++)
        put_msg(f, "hl7", i);
    out_dest_opts_t o = {
        .dest = "hl7",
        .kind = OUT_MLLP,
        .host = "127.0.0.1",
        .port = (unsigned)port,
        .dead_dir = f->dead_dir,
        .no_fsync = true,
        .max_tries = 0, /* the default: transport failures retry forever */
        .reject_tries = f->reject_tries,
        .backoff_base_ms = 2,
        .backoff_max_ms = 1000,
        .jitter = true,
        .connect_timeout_ms = 500,
        .ack_timeout_ms = 1000,
    };
    out_dest_t *d = NULL;
    err_detail_t e;
    assert_int_equal(out_start(&f->loop, f->q, &o, &d, &e), ERR_OK);
    f->live = d;
    run_until(f, NULL, NULL, 2000);
    out_stats_t st;
    out_stats(d, &st);
    printf("# ten scaled minutes down: %llu attempts, %llu dead-lettered\n",
           (unsigned long long)st.retries, (unsigned long long)st.dead);
    assert_true(st.retries >= 5);
    assert_int_equal(st.dead, 0);
    assert_int_equal(st.delivered, 0);
    memset(&s, 0, sizeof s);
    srv_start(f, &s, port);
    delivered_arg_t a = {d, 50};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    out_stats(d, &st);
    assert_int_equal(st.dead, 0);
    assert_int_equal(s.nacked, 50);
    for (int i = 0; i < 50; i++)
        assert_int_equal(s.acked[i], i);
    assert_int_equal(count_files(f->dead_dir, "0"), 0);
    stop_out(f, d);
    srv_close(f, &s);
}

/* Refused connections for longer than the old retry budget (10 tries):
 * with max_tries 0 nothing is dead-lettered and the order is kept. */
static void test_mllp_outage_retries_forever(void **state)
{
    fx_t *f = *state;
    static srv_t s;
    memset(&s, 0, sizeof s);
    srv_start(f, &s, 0);
    int port = s.port;
    srv_stop(f, &s);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    for (int i = 0; i < 20; i++)
        put_msg(f, "hl7", i);
    out_dest_t *d = start_mllp(f, &s, 0, 1000);
    run_until(f, NULL, NULL, 2000);
    out_stats_t st;
    out_stats(d, &st);
    printf("# %llu refused attempts during the outage\n", (unsigned long long)st.retries);
    assert_true(st.retries >= 30);
    assert_int_equal(st.dead, 0);
    assert_int_equal(st.delivered, 0);
    assert_true(st.failing_since_ms > 0);
    assert_true(st.oldest_ms > 0);
    memset(&s, 0, sizeof s);
    srv_start(f, &s, port);
    delivered_arg_t a = {d, 20};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    out_stats(d, &st);
    assert_int_equal(st.dead, 0);
    assert_int_equal(st.failing_since_ms, 0);
    assert_int_equal(s.nacked, 20);
    for (int i = 0; i < 20; i++)
        assert_int_equal(s.acked[i], i);
    assert_int_equal(count_files(f->dead_dir, "0"), 0);
    stop_out(f, d);
    srv_close(f, &s);
}

/* A small tmpfs on dir (root only), and a file that fills it. */
static bool tmpfs_mount(const char *dir, const char *size)
{
    if (geteuid() != 0) {
        printf("# skipped: not root, cannot mount a tmpfs to make ENOSPC real\n");
        return false;
    }
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s,mode=0700", size);
    mkdir(dir, 0700);
    if (mount("tmpfs", dir, "tmpfs", 0, opts) != 0) {
        printf("# skipped: mount tmpfs on %s: %s\n", dir, strerror(errno));
        return false;
    }
    return true;
}

static void tmpfs_fill(const char *dir)
{
    char p[256], block[4096];
    memset(block, 'x', sizeof block);
    snprintf(p, sizeof p, "%s/filler", dir);
    FILE *fp = fopen(p, "ab");
    assert_non_null(fp);
    setvbuf(fp, NULL, _IONBF, 0);
    while (fwrite(block, 1, sizeof block, fp) == sizeof block)
        ;
    fclose(fp);
}

static void tmpfs_unfill(const char *dir)
{
    char p[256];
    snprintf(p, sizeof p, "%s/filler", dir);
    assert_int_equal(unlink(p), 0);
}

static int sql_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *q;
    int v = -1;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
    if (sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

/* The dead-letter folder is full while billing rejects a message: no file,
 * no mark, the cursor does not move, nothing behind it goes out; when space
 * returns it is dead-lettered by itself and the feed goes on, in order. */
static void test_dead_letter_enospc(void **state)
{
    fx_t *f = *state;
    if (!tmpfs_mount(f->dead_dir, "64k"))
        return;
    tmpfs_fill(f->dead_dir);
    static srv_t s;
    memset(&s, 0, sizeof s);
    ans_t script[] = {ANS_AE};
    memcpy(s.script, script, sizeof script);
    s.nscript = 1;
    srv_start(f, &s, 0);
    for (int i = 0; i < 5; i++)
        put_msg(f, "hl7", i);
    out_dest_t *d = start_mllp(f, &s, 0, 1000);
    run_until(f, NULL, NULL, 600);
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.dead, 0);
    assert_int_equal(st.delivered, 0);
    assert_true(st.storage_errors >= 2); /* retried with backoff */
    assert_true(st.storage_failing);
    assert_int_equal(s.nreceived, 1); /* the next message waits */
    assert_int_equal(queue_depth(f->q, "hl7"), 5);
    assert_false(file_exists(f->dead_dir, "000000000001-MSG00000.hl7"));
    assert_true(cursor_or_0(f, "hl7") == 0);
    printf("# %llu dead-letter writes failed with ENOSPC\n", (unsigned long long)st.storage_errors);

    tmpfs_unfill(f->dead_dir);
    delivered_arg_t a = {d, 5};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    out_stats(d, &st);
    assert_int_equal(st.dead, 1);
    assert_int_equal(st.delivered, 4);
    assert_false(st.storage_failing);
    assert_true(file_exists(f->dead_dir, "000000000001-MSG00000.hl7"));
    assert_true(file_has(f->dead_dir, "000000000001-MSG00000.hl7.reason", "Account closed"));
    for (int i = 0; i < 4; i++)
        assert_int_equal(s.acked[i], i + 1);
    stop_out(f, d);
    srv_close(f, &s);
    run_until(f, NULL, NULL, 50); /* the marks commit */
    assert_int_equal(sql_int(f->path, "SELECT state FROM msgs WHERE id=1"), 4);
    assert_int_equal(umount(f->dead_dir), 0);
}

/* The outbox folder is full: with max_tries 3, the old code dead-lettered
 * every message. A local fault is not the message's: retried until space
 * returns, then delivered, in order, nothing dead. */
static void test_outbox_enospc(void **state)
{
    fx_t *f = *state;
    if (!tmpfs_mount(f->out_dir, "256k"))
        return;
    tmpfs_fill(f->out_dir);
    for (int i = 0; i < 20; i++)
        put_msg(f, "hl7", i);
    out_dest_opts_t o = {.dest = "hl7",
                         .kind = OUT_DIR,
                         .dir = f->out_dir,
                         .dead_dir = f->dead_dir,
                         .max_tries = 3,
                         .backoff_base_ms = 10,
                         .backoff_max_ms = 40};
    out_dest_t *d = NULL;
    err_detail_t e;
    assert_int_equal(out_start(&f->loop, f->q, &o, &d, &e), ERR_OK);
    f->live = d;
    run_until(f, NULL, NULL, 500);
    out_stats_t st;
    out_stats(d, &st);
    assert_int_equal(st.delivered, 0);
    assert_int_equal(st.dead, 0);
    assert_true(st.storage_errors >= 3);
    assert_true(st.storage_failing);
    assert_non_null(strstr(st.last_error, "No space left"));
    assert_int_equal(queue_depth(f->q, "hl7"), 20);
    printf("# %llu outbox writes failed with ENOSPC\n", (unsigned long long)st.storage_errors);
    tmpfs_unfill(f->out_dir);
    delivered_arg_t a = {d, 20};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    out_stats(d, &st);
    assert_int_equal(st.dead, 0);
    assert_int_equal(st.delivered, 20);
    for (int i = 0; i < 20; i++) {
        char name[64];
        snprintf(name, sizeof name, "%012d-MSG%05d.hl7", i + 1, i);
        assert_true(file_exists(f->out_dir, name));
    }
    assert_int_equal(count_files(f->out_dir, ".tmp"), 0);
    assert_int_equal(count_files(f->dead_dir, "0"), 0);
    stop_out(f, d);
    assert_int_equal(umount(f->out_dir), 0);
}

/* The queue's own disk is full when a dead mark is given: the commit fails,
 * the mark is kept and retried, and the cursor does not pass the dead row
 * (the old code dropped the mark, moved the cursor, and a restart deleted the
 * row as delivered). When space returns the mark commits and the feed goes on. */
static void test_dead_mark_commit_enospc(void **state)
{
    fx_t *f = *state;
    char qdir[72];
    snprintf(qdir, sizeof qdir, "%.60s/qfs", f->dir);
    if (!tmpfs_mount(qdir, "1m"))
        return;
    int closed = 0;
    queue_close(f->q, flag_cb, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    snprintf(f->path, sizeof f->path, "%.72s/queue.db", qdir);
    queue_opts_t qo = {.sync = QUEUE_SYNC_NORMAL};
    assert_int_equal(queue_open(&f->loop, f->path, &qo, &f->q, NULL), ERR_OK);
    static srv_t s;
    memset(&s, 0, sizeof s);
    ans_t script[] = {ANS_AE};
    memcpy(s.script, script, sizeof script);
    s.nscript = 1;
    srv_start(f, &s, 0);
    for (int i = 0; i < 3; i++)
        put_msg(f, "hl7", i);
    run_until(f, NULL, NULL, 50); /* the puts commit */
    tmpfs_fill(qdir);
    out_dest_t *d = start_mllp(f, &s, 0, 1000);
    run_until(f, NULL, NULL, 600);
    queue_stats_t qs;
    queue_stats(f->q, &qs);
    printf("# %llu group commits failed with a full disk\n",
           (unsigned long long)qs.commit_failures);
    assert_true(qs.commit_failures >= 1);
    assert_int_equal(s.nreceived, 1); /* msg1 waits for msg0's dead mark */
    assert_true(cursor_or_0(f, "hl7") == 0);
    assert_true(file_exists(f->dead_dir, "000000000001-MSG00000.hl7"));
    tmpfs_unfill(qdir);
    delivered_arg_t a = {d, 3};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    assert_int_equal(s.nacked, 2);
    stop_out(f, d);
    srv_close(f, &s);
    closed = 0;
    queue_close(f->q, flag_cb, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM msgs WHERE id=1 AND state=4"), 1);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM msgs"), 1);
    /* The fixture's teardown closes a queue: give it one off the tmpfs. */
    snprintf(f->path, sizeof f->path, "%s/queue2.db", f->dir);
    assert_int_equal(queue_open(&f->loop, f->path, &qo, &f->q, NULL), ERR_OK);
    assert_int_equal(umount(qdir), 0);
}

/* The cursor file cannot be written (its disk is full, as is the queue's):
 * the deliverer does not run ahead of what a restart would know. It waits
 * for the cursor or the marks before the next message, retrying both; when
 * space returns every message goes out once, in order, and the cursor is
 * right. (The old code went on, and a restart sent them all again.) */
static void test_cursor_enospc(void **state)
{
    fx_t *f = *state;
    char qdir[72];
    snprintf(qdir, sizeof qdir, "%.60s/qfs", f->dir);
    if (!tmpfs_mount(qdir, "1m"))
        return;
    int closed = 0;
    queue_close(f->q, flag_cb, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    snprintf(f->path, sizeof f->path, "%.72s/queue.db", qdir);
    queue_opts_t qo = {.sync = QUEUE_SYNC_NORMAL};
    assert_int_equal(queue_open(&f->loop, f->path, &qo, &f->q, NULL), ERR_OK);
    static srv_t s;
    memset(&s, 0, sizeof s);
    srv_start(f, &s, 0);
    for (int i = 0; i < 5; i++)
        put_msg(f, "hl7", i);
    run_until(f, NULL, NULL, 50); /* the puts commit */
    tmpfs_fill(qdir);             /* the cursor file, still empty, cannot get a block */
    out_dest_t *d = start_mllp(f, &s, 0, 1000);
    run_until(f, NULL, NULL, 600);
    out_stats_t st;
    out_stats(d, &st);
    assert_true(st.storage_errors >= 2); /* the cursor, tried again */
    assert_int_equal(s.nreceived, 1);    /* nothing more goes out meanwhile */
    tmpfs_unfill(qdir);
    delivered_arg_t a = {d, 5};
    assert_true(run_until(f, delivered_pred, &a, 10000));
    stop_out(f, d);
    srv_close(f, &s);
    assert_int_equal(s.nreceived, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(s.acked[i], i);
    assert_true(read_cursor(f, "hl7") == 5);
    closed = 0;
    queue_close(f->q, flag_cb, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    snprintf(f->path, sizeof f->path, "%s/queue2.db", f->dir);
    assert_int_equal(queue_open(&f->loop, f->path, &qo, &f->q, NULL), ERR_OK);
    assert_int_equal(umount(qdir), 0);
}

int main(void)
{
    /* As the daemon does: a write to a connection the other side closed is
     * an error to handle (EPIPE), not a signal. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ack_parse),
        cmocka_unit_test_setup_teardown(test_mllp_in_order, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_mllp_retries_keep_order, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_mllp_dead_letter_then_next, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_mllp_down_then_up, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_stop_in_flight_then_restart, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_http_statuses, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_http_server_down, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_dir_sink, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_kill9_during_delivery, fx_setup, fx_teardown),
        cmocka_unit_test(test_cursor_record),
        cmocka_unit_test_setup_teardown(test_cursor_skips_delivered, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cursor_stale_ignored, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cursor_garbage_ignored, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cursor_clean_restart, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_mllp_reject_then_next, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_mllp_window_1_one_at_a_time, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_mllp_window_8_in_order, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_mllp_window_cursor_before_next_frame, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_mllp_window_ack_not_in_flight, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_mllp_window_drop_with_5_in_flight, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_mllp_window_ar_in_the_middle, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_mllp_enhanced_mode_downstream, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_mllp_ten_minute_outage_scaled, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_mllp_outage_retries_forever, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_enospc, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_outbox_enospc, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_dead_mark_commit_enospc, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_cursor_enospc, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_reject_count_survives_restart, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_stranded_dead_rows_requeued, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_dead_rows_kept_without_folder, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
