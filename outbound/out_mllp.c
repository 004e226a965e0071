/* out_mllp.c - the MLLP client transport. One connection, kept open between
 * messages; a message is framed 0x0B <payload> 0x1C 0x0D and is delivered when
 * the downstream's ACK says AA or CA in MSA-1. Anything else (AE/AR/CE/CR, an
 * ACK for another control id, a timeout, a refused or broken connection)
 * closes the connection and asks the deliverer to retry, so that a late ACK
 * can never be taken for the next message's. AE/AR/CE/CR is billing refusing
 * the message itself: answered as a reject with MSA-3 and the ERR segments
 * (the connection, in step, is kept).
 *
 * Enhanced mode (HL7 v2.5 ch. 2): a forwarded message keeps its sender's
 * MSH-15/16, so billing may answer a commit ACK (CA) and then an application
 * ACK on the same connection. With MSH-16 = AL the application ACK is the
 * answer that counts and is waited for after the CA; with ER or SU it may or
 * may not come, so the CA ends the send and a later ACK naming the message
 * just delivered is read and set aside instead of taken as out of step.
 * Window (downstream-window N): up to N messages are written back to back
 * and their ACKs awaited in order; each ACK must name the oldest in flight
 * by MSA-2. One that names a later message in flight (out of order) or none
 * in flight is taken as the stream being out of step, like an ACK for
 * another control id with one message: the connection is dropped and the
 * deliverer sends everything unacknowledged again, from the oldest. A
 * refusal (AE/AR) of the oldest with others in flight drops the connection
 * too, so that their ACKs cannot arrive while the deliverer is settling the
 * refused one; they are sent again after it. The ACK timeout runs for the
 * oldest in flight. The commit-then-application ACK of enhanced mode is
 * followed per message; with a window, a receiver answering CA for several
 * messages before their application ACKs is out of order.
 * Each connection is its own allocation, freed in its close callback; the
 * payloads are borrowed from the deliverer's rows until out__send_done().
 *
 * TLS (downstream-mllp-tls): the session sits between the socket and the
 * ACK reader (common/tls.h, memory BIOs); the connection counts as connected
 * only once the handshake is done and the server's certificate verified, and
 * the connect timeout covers the handshake. A failed handshake is a
 * transport failure like a refused connection: retried, logged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mllp_ack.h"
#include "mllp_frame.h"
#include "out_int.h"
#include "slice.h"
#include "uv_trywrite.h"
#include "xmalloc.h"

#define ACK_MAX (64u * 1024) /* an ACK larger than this is not an ACK */

typedef struct mllp_state mllp_state_t;

typedef struct {
    uv_tcp_t tcp;
    uv_connect_t creq;
    mllp_state_t *m;
    bool dead;          /* closing: ignore its callbacks */
    char *rbuf;         /* plaintext read, before framing */
    mllp_framer_t acks; /* the ACK frames */
    tls_conn_t *tls;    /* NULL: plaintext */
    char *cbuf;         /* ciphertext read from the socket */
} conn_t;

/* A frame's write, freed in its callback (several may be pending). */
typedef struct {
    uv_write_t req;
    conn_t *c;
} frame_write_t;

/* A message in flight: given by the deliverer, not yet answered. */
typedef struct {
    const queue_row_t *row;
    bool app_ack; /* its MSH-16 is AL: a CA is not the end */
} flight_t;

/* A ciphertext write, freed in its callback. */
typedef struct {
    uv_write_t req;
    conn_t *c;
    char data[];
} tls_write_t;

struct mllp_state {
    out_dest_t *d;
    conn_t *c; /* NULL when not connected */
    bool connected;
    uv_timer_t timer;     /* connect or ACK timeout */
    uv_getaddrinfo_t gai; /* for a host that is not an address */
    bool resolving;
    /* In flight, oldest first: flight[0] is the one whose ACK is awaited;
     * the first `written` of them are written to the connection. */
    flight_t flight[OUT_WINDOW_MAX];
    size_t nflight, written;
    char last_id[QUEUE_CONTROL_ID_MAX + 1]; /* the message delivered last */
    unsigned open_conns;                    /* connections not yet closed */
    bool closing;
};

/* MSH-16 (application acknowledgment type) of a message: the 15th field
 * separator after "MSH" opens it. Empty when the message has none. */
static slice_t msh16(const char *p, size_t n)
{
    if (n < 4 || memcmp(p, "MSH", 3) != 0 || p[3] == '\r' || p[3] == '\n')
        return slice_make(p, 0);
    char sep = p[3];
    /* Within the MSH, which ends at its first CR or LF; by memchr, as the
     * fields before MSH-16 make a byte loop cost more. */
    const char *end = memchr(p, '\r', n);
    if (!end)
        end = p + n;
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    if (lf)
        end = lf;
    /* MSH-1 is the first separator; the fifteenth starts MSH-16. */
    const char *q = p + 3;
    for (int seen = 1; seen < 15; seen++) {
        q = memchr(q + 1, sep, (size_t)(end - (q + 1)));
        if (!q)
            return slice_make(p, 0);
    }
    const char *from = q + 1, *to = memchr(from, sep, (size_t)(end - from));
    return slice_make(from, (size_t)((to ? to : end) - from));
}

static out__res_t res_of(mllp_ack_t kind)
{
    switch (kind) {
    case MLLP_ACK_ACCEPTED: return OUT_RES_OK;
    case MLLP_ACK_REFUSED: return OUT_RES_REJECT;
    default: return OUT_RES_RETRY;
    }
}

out__res_t out__mllp_ack_parse(const char *p, size_t n, const char *ctrl, char *reason, size_t rl)
{
    return res_of(mllp_ack_read(p, n, ctrl, reason, rl));
}

/* Whether id names a message in flight. */
static bool in_flight(const mllp_state_t *m, slice_t id)
{
    for (size_t i = 0; i < m->nflight; i++)
        if (slice_eq(id, m->flight[i].row->control_id))
            return true;
    return false;
}

static void maybe_closed(mllp_state_t *m);
static void timer_cb(uv_timer_t *t);

static void conn_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    mllp_state_t *m = c->m;
    tls_conn_free(c->tls);
    mllp_framer_free(&c->acks);
    xfree(c->cbuf);
    xfree(c->rbuf);
    xfree(c);
    m->open_conns--;
    maybe_closed(m);
}

static void conn_drop(mllp_state_t *m)
{
    conn_t *c = m->c;
    if (!c)
        return;
    m->c = NULL;
    m->connected = false;
    m->d->connected = false;
    c->dead = true;
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

/* Ends the oldest send in flight with res. The connection stays when it
 * went well, or when the downstream refused the message in step (a reject)
 * and nothing was sent after it; otherwise it is dropped and every message
 * in flight is forgotten (the deliverer sends them again, in order, after
 * this one). detail: the ACK's text. */
static void finish_detail(mllp_state_t *m, out__res_t res, const char *reason, const char *detail)
{
    uv_timer_stop(&m->timer);
    bool keep = res == OUT_RES_OK || (res == OUT_RES_REJECT && m->nflight <= 1);
    if (!keep)
        conn_drop(m);
    if (!m->nflight)
        return;
    if (keep) {
        str_copy(m->last_id, sizeof m->last_id, m->flight[0].row->control_id);
        memmove(m->flight, m->flight + 1, --m->nflight * sizeof m->flight[0]);
        if (m->written)
            m->written--;
    } else {
        m->last_id[0] = '\0'; /* a new connection: nothing late can come */
        m->nflight = m->written = 0;
    }
    out__send_done_detail(m->d, res, reason, detail);
    /* The next one in flight has its own ACK timeout from now. */
    if (m->nflight && m->written && m->connected)
        uv_timer_start(&m->timer, timer_cb, m->d->o.ack_timeout_ms, 0);
}

static void finish(mllp_state_t *m, out__res_t res, const char *reason)
{
    finish_detail(m, res, reason, NULL);
}

static void timer_cb(uv_timer_t *t)
{
    mllp_state_t *m = t->data;
    finish(m, OUT_RES_RETRY,
           m->connected        ? "ACK timeout"
           : m->c && m->c->tls ? "TLS handshake timeout (is downstream speaking TLS?)"
                               : "connect timeout");
}

#define CIPHER_READ_MAX (64u * 1024)
#define READ_MAX (64u * 1024)

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    conn_t *c = h->data;
    (void)hint;
    if (c->tls) {
        if (!c->cbuf)
            c->cbuf = xmalloc(CIPHER_READ_MAX);
        *buf = uv_buf_init(c->cbuf, CIPHER_READ_MAX);
        return;
    }
    if (!c->rbuf)
        c->rbuf = xmalloc(READ_MAX);
    *buf = uv_buf_init(c->rbuf, READ_MAX);
}

static void acks_read(conn_t *c, const char *p, size_t n);
static void write_pending(mllp_state_t *m);

/* A write to the downstream failed: the message in flight is retried, an
 * idle connection just goes. */
static void tls_write_failed(conn_t *c, int status)
{
    char reason[96];
    snprintf(reason, sizeof reason, "write failed (%s)", uv_err_name(status));
    if (c->m->nflight)
        finish(c->m, OUT_RES_RETRY, reason);
    else
        conn_drop(c->m);
}

static void tls_write_cb(uv_write_t *req, int status)
{
    tls_write_t *w = (tls_write_t *)req;
    conn_t *c = w->c;
    xfree(w);
    if (c->dead || status == 0)
        return;
    tls_write_failed(c, status);
}

/* Sends the ciphertext the session has ready. False when the write could
 * not be started (the send is then finished or the connection dropped). */
static bool tls_send(conn_t *c)
{
    size_t n = tls_conn_out_pending(c->tls);
    if (n == 0)
        return true;
    tls_write_t *w = xmalloc(sizeof *w + n);
    w->c = c;
    n = tls_conn_out_take(c->tls, w->data, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, tls_write_cb);
    if (rc) {
        xfree(w);
        tls_write_failed(c, rc);
        return false;
    }
    return true;
}

/* Ciphertext arrived: drive the handshake, then hand plaintext to the ACK
 * reader (at most ACK_MAX of a frame held, as without TLS). */
static void tls_input(conn_t *c, const char *p, size_t n)
{
    mllp_state_t *m = c->m;
    tls_conn_feed(c->tls, p, n);
    for (;;) {
        if (!c->rbuf)
            c->rbuf = xmalloc(READ_MAX);
        long got = tls_conn_read(c->tls, c->rbuf, READ_MAX);
        if (!tls_send(c) || c->dead)
            return;
        if (got < 0) {
            char reason[200];
            snprintf(reason, sizeof reason, "TLS with %s:%u failed: %s", m->d->o.host, m->d->o.port,
                     tls_conn_error(c->tls));
            if (m->nflight)
                finish(m, OUT_RES_RETRY, reason);
            else {
                log_warn("out %s: %s", m->d->o.dest, reason);
                conn_drop(m);
            }
            return;
        }
        if (!m->connected && tls_conn_established(c->tls)) {
            m->connected = true;
            m->d->connected = true;
            uv_timer_stop(&m->timer);
            log_info("out %s: %s with %s:%u", m->d->o.dest, tls_conn_version(c->tls), m->d->o.host,
                     m->d->o.port);
            write_pending(m);
            if (c->dead)
                return;
        }
        if (got == 0)
            return;
        acks_read(c, c->rbuf, (size_t)got);
        if (c->dead || m->c != c)
            return;
    }
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    mllp_state_t *m = c->m;
    if (c->dead || nread == 0)
        return;
    if (nread < 0) {
        char reason[96];
        snprintf(reason, sizeof reason, "connection closed by downstream (%s)",
                 uv_err_name((int)nread));
        if (c->tls && !m->connected && m->nflight)
            snprintf(reason, sizeof reason,
                     "connection closed by downstream during the TLS handshake (%s)",
                     uv_err_name((int)nread));
        if (m->nflight)
            finish(m, OUT_RES_RETRY, reason);
        else
            conn_drop(m); /* idle close: reconnect on the next message */
        return;
    }
    if (c->tls) {
        tls_input(c, buf->base, (size_t)nread);
        return;
    }
    acks_read(c, buf->base, (size_t)nread);
}

/* One ACK frame from the downstream. False when the connection went. */
static bool on_ack(void *user, const mllp_frame_t *f)
{
    conn_t *c = user;
    mllp_state_t *m = c->m;
    if (f->oversized) {
        if (m->nflight)
            finish(m, OUT_RES_RETRY, "ACK frame too large");
        else
            conn_drop(m);
        return false;
    }
    const char *ack = f->frame->data;
    size_t ack_len = f->frame->len;
    slice_t code = SLICE_NULL, id = SLICE_NULL;
    bool has_msa = mllp_ack_msa(ack, ack_len, &code, &id);
    bool late = has_msa && m->last_id[0] && slice_eq(id, m->last_id) && !in_flight(m, id);
    if (late) {
        /* The application ACK of an enhanced-mode message whose CA ended
         * its send: billing has the message; what it says now is
         * billing's to act on. */
        if (!slice_eq(code, "AA")) {
            char idb[LOG_ID_BUF];
            log_warn("out %s: control id %s: application ACK %.*s after billing committed "
                     "the message (CA): billing holds it, see its own work queue",
                     m->d->o.dest, log_id(m->last_id, idb), (int)(code.len > 2 ? 2 : code.len),
                     code.ptr);
        }
        return true;
    }
    if (!m->nflight || !m->written) {
        /* An ACK nobody waits for: the stream is out of step. */
        log_warn("out %s: unexpected frame from downstream; reconnecting", m->d->o.dest);
        conn_drop(m);
        return false;
    }
    char reason[96], text[2048];
    text[0] = '\0'; /* filled for a refusal only */
    flight_t *head = &m->flight[0];
    mllp_ack_t kind =
        mllp_ack_judge(has_msa, code, id, head->row->control_id, reason, sizeof reason);
    if (kind == MLLP_ACK_OTHER_ID && in_flight(m, id))
        /* The downstream answers in the order it was sent (docs: the
         * window): an ACK that overtakes the oldest is out of step. */
        snprintf(reason, sizeof reason, "ACK out of order (for a later message in flight)");
    out__res_t res = res_of(kind);
    if (res == OUT_RES_OK && head->app_ack && slice_eq(code, "CA")) {
        /* MSH-16 = AL: the application ACK follows; it gets its own ACK
         * timeout. */
        head->app_ack = false;
        uv_timer_start(&m->timer, timer_cb, m->d->o.ack_timeout_ms, 0);
        return true;
    }
    if (res == OUT_RES_REJECT)
        mllp_ack_text(ack, ack_len, text, sizeof text);
    finish_detail(m, res, res == OUT_RES_OK ? NULL : reason, text);
    return m->c == c;
}

/* Frames what the downstream sent and takes each ACK; a frame growing past
 * ACK_MAX is not an ACK and is refused before it ends. */
static void acks_read(conn_t *c, const char *p, size_t n)
{
    mllp_state_t *m = c->m;
    mllp_framer_feed(&c->acks, p, n, on_ack, c);
    if (m->c == c && !c->dead && mllp_framer_partial(&c->acks) >= ACK_MAX) {
        if (m->nflight)
            finish(m, OUT_RES_RETRY, "ACK frame too large");
        else
            conn_drop(m);
    }
}

static void write_cb(uv_write_t *req, int status)
{
    frame_write_t *w = (frame_write_t *)req;
    conn_t *c = w->c;
    xfree(w);
    if (c->dead || status == 0)
        return;
    char reason[96];
    snprintf(reason, sizeof reason, "write failed (%s)", uv_err_name(status));
    finish(c->m, OUT_RES_RETRY, reason);
}

/* Writes the frames of flight[written..nflight) to the connection: without
 * TLS in one system call when the socket takes them all, so that a window's
 * worth of rows read together wakes the receiver once, not once a frame.
 * False when the write failed (the sends in flight are then finished and
 * the connection dropped). */
static bool write_frames(mllp_state_t *m)
{
    static char sb = MLLP_SB, eb[2] = {MLLP_EB, MLLP_CR};
    uv_buf_t bufs[3 * OUT_WINDOW_MAX];
    unsigned nbufs = 0;
    conn_t *c = m->c;
    for (; m->written < m->nflight; m->written++) {
        flight_t *f = &m->flight[m->written];
        const char *p = (const char *)f->row->payload;
        f->app_ack = slice_eq(msh16(p, f->row->payload_len), "AL");
        uv_buf_t frame[3] = {
            uv_buf_init(&sb, 1),
            uv_buf_init((char *)p, (unsigned)f->row->payload_len),
            uv_buf_init(eb, 2),
        };
        if (!c->tls) {
            memcpy(bufs + nbufs, frame, sizeof frame);
            nbufs += 3;
            continue;
        }
        for (int k = 0; k < 3; k++)
            if (tls_conn_write(c->tls, frame[k].base, frame[k].len) != 0) {
                char reason[200];
                snprintf(reason, sizeof reason, "TLS write failed: %s", tls_conn_error(c->tls));
                finish(m, OUT_RES_RETRY, reason);
                return false;
            }
    }
    if (c->tls)
        return tls_send(c);
    if (!nbufs || uv_trywrite_all((uv_stream_t *)&c->tcp, bufs, &nbufs))
        return true;
    frame_write_t *w = xmalloc(sizeof *w);
    w->c = c;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, nbufs, write_cb);
    if (rc) {
        xfree(w);
        char reason[96];
        snprintf(reason, sizeof reason, "write failed (%s)", uv_err_name(rc));
        finish(m, OUT_RES_RETRY, reason);
        return false;
    }
    return true;
}

/* Connected: writes what waited for the connection; the oldest's ACK
 * timeout starts. */
static void write_pending(mllp_state_t *m)
{
    if (!write_frames(m))
        return;
    if (m->nflight)
        uv_timer_start(&m->timer, timer_cb, m->d->o.ack_timeout_ms, 0);
}

static void connect_cb(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    mllp_state_t *m = c->m;
    if (c->dead)
        return;
    if (status) {
        char reason[96];
        snprintf(reason, sizeof reason, "connect to %s:%u failed (%s)", m->d->o.host, m->d->o.port,
                 uv_err_name(status));
        finish(m, OUT_RES_RETRY, reason);
        return;
    }
    if (m->d->o.tls) {
        /* Connected once the handshake is done; the connect timer, still
         * running, bounds it. The first read sends the ClientHello. */
        c->tls = tls_conn_new(m->d->o.tls,
                              m->d->o.tls_server_name ? m->d->o.tls_server_name : m->d->o.host);
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb)) {
            finish(m, OUT_RES_RETRY, "read start failed");
            return;
        }
        uv_tcp_nodelay(&c->tcp, 1);
        tls_input(c, NULL, 0);
        return;
    }
    m->connected = true;
    m->d->connected = true;
    uv_timer_stop(&m->timer);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    if (rc) {
        finish(m, OUT_RES_RETRY, "read start failed");
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    write_pending(m);
}

static void connect_to(mllp_state_t *m, const struct sockaddr *sa)
{
    conn_t *c = xcalloc(1, sizeof *c);
    c->m = m;
    mllp_framer_init(&c->acks, ACK_MAX, 64);
    c->tcp.data = c;
    c->creq.data = c;
    uv_tcp_init(m->d->loop, &c->tcp);
    m->open_conns++;
    m->c = c;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, sa, connect_cb);
    if (rc) {
        char reason[96];
        snprintf(reason, sizeof reason, "connect to %s:%u failed (%s)", m->d->o.host, m->d->o.port,
                 uv_err_name(rc));
        finish(m, OUT_RES_RETRY, reason);
        return;
    }
    uv_timer_start(&m->timer, timer_cb, m->d->o.connect_timeout_ms, 0);
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    mllp_state_t *m = req->data;
    m->resolving = false;
    if (m->closing || !m->nflight) {
        uv_freeaddrinfo(res);
        maybe_closed(m);
        return;
    }
    if (status || !res) {
        char reason[96];
        snprintf(reason, sizeof reason, "cannot resolve %s (%s)", m->d->o.host,
                 uv_err_name(status));
        uv_freeaddrinfo(res);
        finish(m, OUT_RES_RETRY, reason);
        return;
    }
    connect_to(m, res->ai_addr);
    uv_freeaddrinfo(res);
}

static void mllp_send(out_dest_t *d, const queue_row_t *row)
{
    mllp_state_t *m = d->tp_state;
    m->flight[m->nflight++] = (flight_t){.row = row};
    if (m->connected)
        return; /* written by mllp_flush, with the rows sent beside it */
    if (m->nflight > 1)
        return; /* connecting for the first: written once connected */
    if (m->resolving) {
        /* An earlier lookup outlived its timeout: its answer serves this row. */
        uv_timer_start(&m->timer, timer_cb, d->o.connect_timeout_ms, 0);
        return;
    }
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } addr;
    if (uv_ip4_addr(d->o.host, (int)d->o.port, &addr.in4) == 0 ||
        uv_ip6_addr(d->o.host, (int)d->o.port, &addr.in6) == 0) {
        connect_to(m, &addr.sa);
        return;
    }
    char port[16];
    snprintf(port, sizeof port, "%u", d->o.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    m->gai.data = m;
    int rc = uv_getaddrinfo(d->loop, &m->gai, gai_cb, d->o.host, port, &hints);
    if (rc) {
        /* Not from inside send(): answer on the next timer tick. */
        uv_timer_start(&m->timer, timer_cb, 0, 0);
        return;
    }
    m->resolving = true;
    uv_timer_start(&m->timer, timer_cb, d->o.connect_timeout_ms, 0);
}

static void mllp_flush(out_dest_t *d)
{
    mllp_state_t *m = d->tp_state;
    if (m->connected && m->written < m->nflight && write_frames(m) &&
        !uv_is_active((uv_handle_t *)&m->timer))
        uv_timer_start(&m->timer, timer_cb, d->o.ack_timeout_ms, 0);
}

static err_t mllp_init(out_dest_t *d, err_detail_t *e)
{
    if (!d->o.host || !*d->o.host || d->o.port == 0 || d->o.port > 65535)
        return err_set(e, ERR_BAD_CONFIG, 0, "out %s: MLLP needs a host and a port 1-65535",
                       d->o.dest);
    mllp_state_t *m = xcalloc(1, sizeof *m);
    m->d = d;
    uv_timer_init(d->loop, &m->timer);
    m->timer.data = m;
    d->tp_state = m;
    return ERR_OK;
}

static void timer_closed(uv_handle_t *h)
{
    mllp_state_t *m = h->data;
    out_dest_t *d = m->d;
    xfree(m);
    d->tp_state = NULL;
    out__transport_closed(d);
}

static void maybe_closed(mllp_state_t *m)
{
    if (m->closing && !m->open_conns && !m->resolving)
        uv_close((uv_handle_t *)&m->timer, timer_closed);
}

static void mllp_close(out_dest_t *d)
{
    mllp_state_t *m = d->tp_state;
    m->closing = true;
    m->nflight = m->written = 0;
    uv_timer_stop(&m->timer);
    if (m->resolving)
        uv_cancel((uv_req_t *)&m->gai);
    conn_drop(m);
    maybe_closed(m);
}

const out__transport_t out__mllp = {"MLLP", mllp_init, mllp_send, mllp_close, true, mllp_flush};
