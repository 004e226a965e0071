/* conn.c - the transport under both listeners: accept, read into one shared
 * buffer per server, per-connection ordered reply queue, uv_write with the
 * buffer borrowed until the write callback, backpressure, graceful close and
 * the server drain. Protocol code (mllp.c, http.c) sees bytes and slots only.
 *
 * Ownership: the server owns its connections; a connection is freed when its
 * last handle has closed and its last slot has been answered (refs == 0).
 */
#include "ingest_int.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "uv_trywrite.h"
#include "xmalloc.h"

/* ---- write buffers ------------------------------------------------------- */

ingest__wbuf_t *ingest__wbuf_new(size_t len)
{
    ingest__wbuf_t *w = xmalloc(sizeof *w + len);
    w->borrow = NULL;
    w->len = len;
    return w;
}

void ingest__wbuf_free(ingest__wbuf_t *w)
{
    if (!w)
        return;
    buf_unref(w->borrow);
    xfree(w);
}

/* ---- the memory budget ------------------------------------------------------
 * Charged with what connections hold (conn->held_in: the stash and the
 * protocol's unfinished message; conn->held_out: messages handed to the
 * daemon and not yet released). A connection that holds something is not
 * read while the budget is spent; it waits in the paused list and is looked
 * at again when the total falls below the limit. A connection that holds
 * nothing is always read, so the overshoot is at most one read buffer per
 * connection. */

struct ingest_budget {
    size_t limit, used, peak;
    uint64_t pauses, npaused;
    ingest__conn_t *paused;
    size_t out; /* of used: messages handed on and not yet released */
    /* One connection finishing a message may go on past the limit, so that
     * the budget cannot be held for good by connections that all wait for
     * each other (many large frames at once, or peers that left with their
     * FIN behind data we no longer read). The overshoot is one message. */
    ingest__conn_t *exempt;
};

ingest_budget_t *ingest_budget_new(size_t limit)
{
    ingest_budget_t *b = xcalloc(1, sizeof *b);
    b->limit = limit;
    return b;
}

void ingest_budget_free(ingest_budget_t *b)
{
    xfree(b);
}

void ingest_budget_stats(const ingest_budget_t *b, ingest_budget_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!b)
        return;
    out->limit = b->limit;
    out->used = b->used;
    out->peak = b->peak;
    out->pauses = b->pauses;
    out->paused = b->npaused;
}

static void budget_charge(ingest_budget_t *b, size_t n)
{
    if (!b || !n)
        return;
    b->used += n;
    if (b->used > b->peak)
        b->peak = b->used;
}

static void budget_unlist(ingest__conn_t *c)
{
    ingest_budget_t *b = c->budget;
    if (!c->budget_paused)
        return;
    if (c->bprev)
        c->bprev->bnext = c->bnext;
    else
        b->paused = c->bnext;
    if (c->bnext)
        c->bnext->bprev = c->bprev;
    c->bnext = c->bprev = NULL;
    c->budget_paused = false;
    b->npaused--;
}

static void budget_release(ingest_budget_t *b, size_t n)
{
    if (!b || !n)
        return;
    b->used = n > b->used ? 0 : b->used - n;
    if (!b->paused || (b->limit && b->used >= b->limit))
        return;
    /* Below the limit again: every paused connection is looked at once (it
     * goes back on the list if it must still wait). */
    ingest__conn_t *list = b->paused;
    while (list) {
        ingest__conn_t *c = list;
        list = c->bnext;
        budget_unlist(c);
        ingest__conn_update_read(c);
    }
}

/* May c be the exempt connection: it is finishing a message, and no message
 * anywhere waits for an answer (whose release would let the others go on:
 * only when all that is held is unfinished input can they wait forever). */
static bool exempt_eligible(const ingest__conn_t *c)
{
    return !c->closing && c->held_in > 0 && c->held_out == 0 && c->budget->out == 0;
}

/* Drops the exemption of c if it has one (c closes, its message is done),
 * and hands it to a paused connection that can use it. */
static void budget_exempt_drop(ingest__conn_t *c)
{
    ingest_budget_t *b = c->budget;
    if (!b || b->exempt != c)
        return;
    b->exempt = NULL;
    for (ingest__conn_t *p = b->paused; p; p = p->bnext)
        if (p != c && exempt_eligible(p)) {
            b->exempt = p;
            budget_unlist(p);
            ingest__conn_update_read(p);
            return;
        }
}

static bool conn_over_budget(ingest__conn_t *c)
{
    ingest_budget_t *b = c->budget;
    if (!b || !b->limit || b->used < b->limit || c->held_in + c->held_out == 0)
        return false;
    if (b->exempt == c)
        return false;
    if (!b->exempt && exempt_eligible(c)) {
        b->exempt = c;
        return false;
    }
    return true;
}

/* Charges what c holds now for input: its stash and its unfinished message. */
static void conn_account(ingest__conn_t *c)
{
    if (c->closing)
        return;
    const ingest__proto_t *p = c->srv->proto;
    size_t now = c->stash_cap + (p->held && c->proto_open ? p->held(c) : 0);
    if (now > c->held_in)
        budget_charge(c->budget, now - c->held_in);
    else
        budget_release(c->budget, c->held_in - now);
    c->held_in = now;
    if (c->budget && c->budget->exempt == c && !exempt_eligible(c))
        budget_exempt_drop(c);
}

void ingest__slot_hold(ingest__slot_t *s, size_t n)
{
    s->held += n;
    s->conn->held_out += n;
    if (s->conn->budget)
        s->conn->budget->out += n;
    budget_charge(s->conn->budget, n);
}

/* ---- connection lifetime -------------------------------------------------- */

static void conn_unref(ingest__conn_t *c)
{
    if (--c->refs == 0) {
        tls_conn_free(c->tls);
        xfree(c->stash);
        xfree(c);
    }
}

static void server_check_done(ingest__server_t *s);
static void on_timer(uv_timer_t *t);

static void on_handle_closed(uv_handle_t *h)
{
    ingest__conn_t *c = h->data;
    if (--c->handles == 0) {
        ingest__server_t *s = c->srv;
        c->srv = NULL;
        s->live--;
        conn_unref(c);
        server_check_done(s);
        return;
    }
    conn_unref(c);
}

static void slot_release(ingest__slot_t *s)
{
    ingest__conn_t *c = s->conn;
    if (s->held) {
        c->held_out -= s->held;
        if (c->budget)
            c->budget->out -= s->held;
        budget_release(c->budget, s->held);
        s->held = 0;
    }
    ingest__wbuf_free(s->out);
    s->out = NULL;
    s->free(s);
    conn_unref(c);
}

/* Empties c's queue: answered slots are freed now, pending ones become
 * orphans that the daemon's late answer frees. */
static void conn_drop_queue(ingest__conn_t *c)
{
    ingest__server_t *s = c->srv;
    ingest__slot_t *q = c->head;
    c->head = c->tail = NULL;
    while (q) {
        ingest__slot_t *next = q->next;
        q->next = NULL;
        q->queued = false;
        s->st.pending--;
        if (q->state == INGEST__SLOT_PENDING) {
            q->orphan = true;
            s->st.orphaned++;
        } else {
            slot_release(q);
        }
        q = next;
    }
    c->queued = 0;
}

void ingest__conn_close(ingest__conn_t *c, const char *why)
{
    if (c->closing)
        return;
    ingest__server_t *s = c->srv;
    c->closing = true;
    c->reading = false;
    if (!c->refused) {
        if (c->proto_open)
            s->proto->on_close(c, why);
        else
            log_debug("%s conn #%llu from %s closed before its TLS handshake completed: %s",
                      s->proto->name, (unsigned long long)c->id, c->peer, why);
        s->st.conns_open--;
    }
    /* Input is gone with the connection: its charge too (the slots' charges
     * go when the daemon answers them). */
    budget_unlist(c);
    budget_exempt_drop(c);
    xfree(c->stash);
    c->stash = NULL;
    c->stash_len = c->stash_cap = 0;
    size_t held = c->held_in;
    c->held_in = 0;
    /* Unlink from the server's list of open connections. */
    if (c->prev)
        c->prev->next = c->next;
    else if (s->conns == c)
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;

    conn_drop_queue(c);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    budget_release(c->budget, held);
}

void ingest__conn_timer(ingest__conn_t *c, uint64_t ms)
{
    if (c->closing)
        return;
    if (ms == 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    /* One read buffer per server: libuv calls read_cb right after alloc_cb
     * and the protocol consumes the bytes before returning, so it is reused. */
    ingest__conn_t *c = h->data;
    out->base = c->srv->rbuf;
    out->len = c->srv->rbuf_size;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);

/* ---- connections not read whose peer reset them ----------------------------
 * A connection that is not read (backpressure, the budget, or after EOF
 * while its replies wait on a full queue) is not told by libuv that its peer
 * reset it, so a sender that gave up would keep its messages held until the
 * queue drains. The server's drain timer, idle until the server closes,
 * looks at such connections twice a second and closes those that were reset
 * (TCP state CLOSE): their replies can never be delivered and were never
 * acknowledged, so closing loses nothing that was promised. A FIN alone is
 * not enough: a sender may half-close and still read its ACKs. */
#define INGEST__WATCH_MS 500

/* The TCP state of c's socket (TCP_ESTABLISHED, TCP_CLOSE_WAIT after the
 * peer's FIN, TCP_CLOSE after its reset), or -1 when it cannot be read. */
static int tcp_state(ingest__conn_t *c)
{
#ifdef TCP_INFO
    uv_os_fd_t fd;
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 ||
        getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return -1;
    return ti.tcpi_state;
#else
    (void)c;
    return -1;
#endif
}

static void on_watch(uv_timer_t *t)
{
    ingest__server_t *s = t->data;
    if (s->closing)
        return;
    bool any = false;
    ingest__conn_t *c = s->conns;
    while (c) {
        ingest__conn_t *next = c->next; /* closing unlinks c */
        if (!c->reading && !c->lingering) {
            if (tcp_state(c) == TCP_CLOSE) {
                log_info("%s conn #%llu from %s: reset by the peer while not read (%u replies "
                         "owed, never acknowledged), closing",
                         s->proto->name, (unsigned long long)c->id, c->peer, c->queued);
                ingest__conn_close(c, "reset while not read");
            } else {
                any = true;
            }
        }
        c = next;
    }
    if (!any)
        uv_timer_stop(t);
}

static void watch_start(ingest__server_t *s)
{
    if (!s->closing && !uv_is_active((uv_handle_t *)&s->drain_timer))
        uv_timer_start(&s->drain_timer, on_watch, INGEST__WATCH_MS, INGEST__WATCH_MS);
}

void ingest__conn_update_read(ingest__conn_t *c)
{
    if (c->closing)
        return;
    ingest__server_t *s = c->srv;
    /* Written-but-unsent replies count too: a peer that pipelines and never
     * reads must not grow libuv's write queue without bound. */
    bool backlog = ingest__conn_backlogged(c);
    bool over = conn_over_budget(c);
    bool should = c->lingering || (c->want_read && !c->eof && !s->closing && !c->close_when_done &&
                                   !backlog && !over);
    if (should && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = true;
        if (c->paused) {
            c->paused = false;
            log_debug("%s conn #%llu: reading resumed", s->proto->name, (unsigned long long)c->id);
        }
    } else if (!should && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
        if (backlog && c->want_read && !c->lingering && !c->paused) {
            c->paused = true;
            s->st.pauses++;
            log_debug("%s conn #%llu: %u replies pending, %u writes in flight, reading paused",
                      s->proto->name, (unsigned long long)c->id, c->queued, c->writes);
        }
    }
    if (!c->reading && !c->lingering)
        watch_start(s);
    ingest_budget_t *b = c->budget;
    if (!c->reading && over && !c->budget_paused) {
        c->budget_paused = true;
        c->bprev = NULL;
        c->bnext = b->paused;
        if (b->paused)
            b->paused->bprev = c;
        b->paused = c;
        b->npaused++;
        b->pauses++;
        log_debug("%s conn #%llu: %zu bytes held, buffer budget spent (%zu of %zu), reading paused",
                  s->proto->name, (unsigned long long)c->id, c->held_in + c->held_out, b->used,
                  b->limit);
    } else if (c->budget_paused && (c->reading || !over)) {
        budget_unlist(c);
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    ingest__conn_t *c = req->data;
    if (status < 0 && !c->closing)
        ingest__conn_close(c, "shutdown failed");
    conn_unref(c);
}

/* How long a finishing connection discards input after our FIN. While the
 * server drains for a stop the wait is short: a stop is honoured within a
 * second, and the last replies are already written by then. */
#define INGEST__STOP_LINGER_MS 200

static uint64_t conn_linger_ms(const ingest__conn_t *c)
{
    uint64_t ms = c->srv->linger_ms ? c->srv->linger_ms : 1;
    return c->srv->closing && ms > INGEST__STOP_LINGER_MS ? INGEST__STOP_LINGER_MS : ms;
}

static void conn_send_cipher(ingest__conn_t *c);
static void conn_write_raw(ingest__conn_t *c, ingest__wbuf_t *w);

/* Closes c if it was asked to finish and nothing is left to write. */
static void conn_maybe_finish(ingest__conn_t *c)
{
    if (c->closing || !c->close_when_done || c->queued || c->writes || c->lingering)
        return;
    if (c->stash_len && c->want_read)
        return; /* complete messages read before EOF are still to be served */
    if (c->eof) {
        ingest__conn_close(c, "peer closed");
        return;
    }
    if (c->tls && tls_conn_established(c->tls)) {
        /* The orderly end of the TLS stream before our FIN, so the peer can
         * tell it from a truncation. */
        tls_conn_close_notify(c->tls);
        conn_send_cipher(c);
        if (c->closing)
            return;
    }
    c->lingering = true;
    c->shutdown.data = c;
    c->refs++;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        c->refs--;
        ingest__conn_close(c, "shutdown failed");
        return;
    }
    uv_timer_start(&c->timer, on_timer, conn_linger_ms(c), 0);
    ingest__conn_update_read(c);
}

void ingest__conn_finish(ingest__conn_t *c)
{
    if (c->closing)
        return;
    c->want_read = false;
    c->close_when_done = true;
    ingest__conn_update_read(c);
    conn_maybe_finish(c);
}

/* ---- input offered to the protocol ---------------------------------------- */

static bool conn_accepting_input(const ingest__conn_t *c)
{
    return !c->closing && c->want_read && !c->lingering;
}

/* Offers p[0..n) until the protocol consumed it all or stops; returns the
 * bytes consumed. */
static size_t conn_offer(ingest__conn_t *c, const char *p, size_t n)
{
    size_t off = 0;
    while (off < n && conn_accepting_input(c) && !ingest__conn_backlogged(c)) {
        size_t u = c->srv->proto->on_data(c, p + off, n - off);
        if (u == 0)
            break;
        off += u;
    }
    return off;
}

static void stash_put(ingest__conn_t *c, const char *p, size_t n)
{
    if (c->stash_len + n > c->stash_cap) {
        size_t cap = c->stash_cap ? c->stash_cap : 4096;
        while (cap < c->stash_len + n)
            cap *= 2;
        c->stash = xrealloc(c->stash, cap);
        c->stash_cap = cap;
    }
    memcpy(c->stash + c->stash_len, p, n);
    c->stash_len += n;
}

static void stash_consume(ingest__conn_t *c, size_t u)
{
    if (!conn_accepting_input(c)) {
        c->stash_len = 0; /* nobody will read it any more */
        xfree(c->stash);
        c->stash = NULL;
        c->stash_cap = 0;
        return;
    }
    memmove(c->stash, c->stash + u, c->stash_len - u);
    c->stash_len -= u;
    if (c->stash_len == 0) { /* drained: give the memory back */
        xfree(c->stash);
        c->stash = NULL;
        c->stash_cap = 0;
    }
}

/* Input arrived: offered straight from the read buffer; only what the
 * protocol did not take (it stopped for backpressure) is copied aside. */
static void conn_input(ingest__conn_t *c, const char *p, size_t n)
{
    c->in_data = true;
    if (c->stash_len) {
        stash_put(c, p, n);
        stash_consume(c, conn_offer(c, c->stash, c->stash_len));
    } else {
        size_t u = conn_offer(c, p, n);
        if (u < n && conn_accepting_input(c))
            stash_put(c, p + u, n - u);
    }
    c->in_data = false;
    conn_account(c);
}

/* Replies drained: serve messages read earlier and kept aside. */
static void conn_offer_stash(ingest__conn_t *c)
{
    if (c->in_data || !c->stash_len || c->closing || ingest__conn_backlogged(c))
        return;
    c->refs++;
    c->in_data = true;
    stash_consume(c, conn_offer(c, c->stash, c->stash_len));
    c->in_data = false;
    conn_account(c);
    if (!c->closing) {
        ingest__conn_update_read(c);
        conn_maybe_finish(c);
    }
    conn_unref(c);
}

/* ---- TLS -------------------------------------------------------------------
 * Ciphertext read from the socket is fed to the session and the plaintext
 * it yields goes to conn_input at once, so the session holds at most one
 * read's worth (plus a partial record) and the stash and the budget bound
 * the rest as for plaintext. Failures are logged without content and
 * counted; the connection alone is closed. */

#define INGEST__TLS_PLAIN_SIZE (64 * 1024)

static void conn_tls_failed(ingest__conn_t *c)
{
    ingest__server_t *s = c->srv;
    bool refused = tls_conn_not_allowed(c->tls);
    if (refused)
        s->tls_st.refused++;
    else if (!c->proto_open)
        s->tls_st.failed++;
    if (refused)
        log_warn("%s conn #%llu from %s: client certificate \"%s\" not on the allow-list, closing",
                 s->proto->name, (unsigned long long)c->id, c->peer, tls_conn_peer_subject(c->tls));
    else
        log_warn("%s conn #%llu from %s: TLS %s failed: %s", s->proto->name,
                 (unsigned long long)c->id, c->peer, c->proto_open ? "session" : "handshake",
                 tls_conn_error(c->tls));
    /* The alert OpenSSL queued goes out before the FIN; input is discarded. */
    if (c->proto_open) {
        ingest__conn_close(c, "TLS failure");
        return;
    }
    ingest__conn_finish(c);
}

static void conn_tls_open(ingest__conn_t *c)
{
    ingest__server_t *s = c->srv;
    s->tls_st.handshakes++;
    const char *subject = tls_conn_peer_subject(c->tls);
    log_info("%s conn #%llu from %s: %s%s%s", s->proto->name, (unsigned long long)c->id, c->peer,
             tls_conn_version(c->tls), subject[0] ? ", client " : "", subject);
    c->proto_open = true;
    ingest__conn_timer(c, 0);
    s->proto->on_open(c);
}

static void conn_tls_input(ingest__conn_t *c, const char *p, size_t n)
{
    ingest__server_t *s = c->srv;
    if (!c->proto_open && c->bytes_in == n && tls_looks_like_plaintext((unsigned char)p[0])) {
        s->tls_st.plaintext++;
        log_warn("%s conn #%llu from %s: plaintext sent to the TLS port, closing", s->proto->name,
                 (unsigned long long)c->id, c->peer);
        const char *reply = s->proto->plaintext_reply;
        if (!reply) {
            ingest__conn_close(c, "plaintext on the TLS port");
            return;
        }
        size_t len = strlen(reply);
        ingest__wbuf_t *w = ingest__wbuf_new(len);
        memcpy(w->data, reply, len);
        conn_write_raw(c, w);
        ingest__conn_finish(c); /* the reply, our FIN, then input discarded */
        return;
    }
    tls_conn_feed(c->tls, p, n);
    for (;;) {
        long got = tls_conn_read(c->tls, s->tls_plain, INGEST__TLS_PLAIN_SIZE);
        conn_send_cipher(c);
        if (c->closing)
            return;
        if (got < 0) {
            conn_tls_failed(c);
            return;
        }
        if (!c->proto_open) {
            if (!tls_conn_established(c->tls))
                return; /* the handshake needs more from the peer */
            conn_tls_open(c);
            if (c->closing)
                return;
        }
        if (got == 0)
            return;
        if (!conn_accepting_input(c))
            continue; /* finishing: plaintext is read and dropped */
        conn_input(c, s->tls_plain, (size_t)got);
        if (c->closing)
            return;
    }
}

void ingest__server_set_tls(ingest__server_t *s, tls_ctx_t *ctx, unsigned handshake_timeout_ms)
{
    tls_ctx_ref(ctx);
    tls_ctx_unref(s->tls); /* open connections hold their own references */
    s->tls = ctx;
    if (handshake_timeout_ms)
        s->tls_handshake_timeout_ms = handshake_timeout_ms;
    if (!s->tls_handshake_timeout_ms)
        s->tls_handshake_timeout_ms = 10000;
    if (!s->tls_plain)
        s->tls_plain = xmalloc(INGEST__TLS_PLAIN_SIZE);
}

/* ---- writes and the ordered queue ---------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    ingest__wbuf_t *w = (ingest__wbuf_t *)req;
    ingest__conn_t *c = req->data;
    ingest__wbuf_free(w);
    c->writes--;
    if (!c->closing) {
        if (status < 0) {
            ingest__conn_close(c, uv_strerror(status));
        } else {
            c->last_active = uv_now(c->srv->loop);
            ingest__conn_update_read(c);
            conn_maybe_finish(c);
            conn_offer_stash(c);
        }
    }
    conn_unref(c);
}

static void conn_write_raw(ingest__conn_t *c, ingest__wbuf_t *w)
{
    uv_buf_t iov[2];
    unsigned n = 0;
    if (w->len)
        iov[n++] = uv_buf_init(w->data, (unsigned)w->len);
    if (w->borrow && w->borrow->len)
        iov[n++] = uv_buf_init(w->borrow->data, (unsigned)w->borrow->len);
    if (n == 0) {
        ingest__wbuf_free(w);
        return;
    }
    c->srv->st.bytes_out += w->len + (w->borrow ? w->borrow->len : 0);
    if (uv_trywrite_all((uv_stream_t *)&c->tcp, iov, &n)) {
        /* All sent now: nothing for on_write to do that the callers (the
         * flush, the TLS pump) do not do after writing anyway. */
        c->last_active = uv_now(c->srv->loop);
        ingest__wbuf_free(w);
        return;
    }
    w->req.data = c;
    c->refs++;
    c->writes++;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, iov, n, on_write);
    if (rc != 0) {
        c->writes--;
        c->refs--;
        ingest__wbuf_free(w);
        ingest__conn_close(c, uv_strerror(rc));
    }
}

/* Writes whatever ciphertext the TLS session has ready (handshake
 * messages, records, alerts) as one write. */
static void conn_send_cipher(ingest__conn_t *c)
{
    size_t n = tls_conn_out_pending(c->tls);
    if (n == 0 || c->closing)
        return;
    ingest__wbuf_t *w = ingest__wbuf_new(n);
    w->len = tls_conn_out_take(c->tls, w->data, n);
    conn_write_raw(c, w);
}

/* Writes w (consumed): as it is, or encrypted into one ciphertext write, so
 * that on_write and the write count work the same for both. */
static void conn_write(ingest__conn_t *c, ingest__wbuf_t *w)
{
    if (!c->tls) {
        conn_write_raw(c, w);
        return;
    }
    int rc = tls_conn_write(c->tls, w->data, w->len);
    if (rc == 0 && w->borrow && w->borrow->len)
        rc = tls_conn_write(c->tls, w->borrow->data, w->borrow->len);
    ingest__wbuf_free(w);
    if (rc != 0) {
        log_warn("%s conn #%llu from %s: TLS write failed: %s", c->srv->proto->name,
                 (unsigned long long)c->id, c->peer, tls_conn_error(c->tls));
        ingest__conn_close(c, "TLS write failed");
        return;
    }
    conn_send_cipher(c);
}

static void conn_flush(ingest__conn_t *c)
{
    while (!c->closing && c->head && c->head->state != INGEST__SLOT_PENDING) {
        ingest__slot_t *s = c->head;
        c->head = s->next;
        if (!c->head)
            c->tail = NULL;
        s->next = NULL;
        s->queued = false;
        c->queued--;
        c->srv->st.pending--;
        bool close_after = s->close_after;
        ingest__wbuf_t *w = s->out;
        s->out = NULL;
        if (w)
            conn_write(c, w);
        slot_release(s); /* conn still has its handle references */
        if (close_after && !c->closing) {
            /* Nothing after a closing reply is ever written. */
            conn_drop_queue(c);
            ingest__conn_finish(c);
            break;
        }
    }
    ingest__conn_update_read(c);
    conn_maybe_finish(c);
    conn_offer_stash(c);
}

void ingest__slot_push(ingest__conn_t *c, ingest__slot_t *s)
{
    s->conn = c;
    s->next = NULL;
    s->out = NULL;
    s->state = INGEST__SLOT_PENDING;
    s->orphan = c->closing;
    s->queued = !c->closing;
    c->refs++;
    if (c->closing)
        return;
    if (c->tail)
        c->tail->next = s;
    else
        c->head = s;
    c->tail = s;
    c->queued++;
    c->srv->st.pending++;
}

void ingest__slot_answer(ingest__slot_t *s, ingest__wbuf_t *out)
{
    if (s->orphan || !s->queued) {
        ingest__wbuf_free(out);
        slot_release(s);
        return;
    }
    s->out = out;
    s->state = INGEST__SLOT_READY;
    ingest__conn_t *c = s->conn;
    if (c->head == s)
        conn_flush(c);
}

/* ---- reading ------------------------------------------------------------- */

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    ingest__conn_t *c = st->data;
    if (c->closing)
        return;
    ingest__server_t *s = c->srv;
    if (nread > 0) {
        c->bytes_in += (size_t)nread;
        s->st.bytes_in += (size_t)nread;
        c->last_active = uv_now(s->loop);
        if (c->lingering || !c->want_read || c->close_when_done)
            return; /* discarded: the connection is finishing */
        c->refs++;  /* the protocol may close c from a callback */
        if (c->tls)
            conn_tls_input(c, b->base, (size_t)nread);
        else
            conn_input(c, b->base, (size_t)nread);
        ingest__conn_update_read(c);
        conn_unref(c);
        return;
    }
    if (nread == 0)
        return; /* EAGAIN */
    if (nread == UV_EOF) {
        if (c->lingering) {
            ingest__conn_close(c, "closed after reply");
            return;
        }
        if (!c->proto_open) {
            /* A peer that sent nothing is a TCP probe (a load balancer's
             * health check), not a failed handshake: not worth a warning. */
            if (c->bytes_in) {
                s->tls_st.failed++;
                log_warn("%s conn #%llu from %s: TLS handshake failed: closed by the peer",
                         s->proto->name, (unsigned long long)c->id, c->peer);
            }
            ingest__conn_close(c, "closed during the TLS handshake");
            return;
        }
        c->eof = true;
        c->refs++;
        s->proto->on_eof(c);
        if (!c->closing) {
            conn_account(c); /* the protocol may have dropped an unfinished message */
            c->close_when_done = true;
            ingest__conn_update_read(c);
            conn_maybe_finish(c);
        }
        conn_unref(c);
        return;
    }
    ingest__conn_close(c, uv_strerror((int)nread));
}

static void on_timer(uv_timer_t *t)
{
    ingest__conn_t *c = t->data;
    if (c->closing)
        return;
    if (c->lingering) {
        ingest__conn_close(c, "linger over");
        return;
    }
    if (!c->proto_open) {
        /* Also the bound on a failed handshake whose alert is still being
         * written (close_when_done): that one was logged already. */
        ingest__server_t *s = c->srv;
        if (!c->close_when_done) {
            s->tls_st.timeouts++;
            log_warn("%s conn #%llu from %s: TLS handshake not done after %u ms, closing",
                     s->proto->name, (unsigned long long)c->id, c->peer,
                     s->tls_handshake_timeout_ms);
        }
        ingest__conn_close(c, c->close_when_done ? "TLS failure" : "TLS handshake timeout");
        return;
    }
    c->refs++;
    c->srv->proto->on_timer(c);
    conn_unref(c);
}

/* ---- accepting ------------------------------------------------------------ */

static void peer_name(uv_tcp_t *t, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(t, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, ip, sizeof ip);
            port = ntohs(a->sin_port);
            snprintf(out, cap, "%s:%d", ip, port);
            return;
        }
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, ip, sizeof ip);
            port = ntohs(a->sin6_port);
            snprintf(out, cap, "[%s]:%d", ip, port);
            return;
        }
    }
    snprintf(out, cap, "unknown");
}

/* At max_conns, the connection idle the longest (nothing owed, nothing
 * being written, no unfinished message) is closed to admit a new one, so
 * that idle connections cannot lock a sender out for a whole idle-timeout. */
static void evict_oldest_idle(ingest__server_t *s)
{
    ingest__conn_t *oldest = NULL;
    for (ingest__conn_t *c = s->conns; c; c = c->next) {
        if (c->closing || c->lingering || c->close_when_done || c->queued || c->writes ||
            c->held_in || c->held_out)
            continue;
        if (!oldest || c->last_active < oldest->last_active ||
            (c->last_active == oldest->last_active && c->id < oldest->id))
            oldest = c;
    }
    if (!oldest)
        return;
    s->st.evicted++;
    log_info("%s conn #%llu from %s: idle for %llu ms, closed to admit a new connection "
             "(max_connections %u)",
             s->proto->name, (unsigned long long)oldest->id, oldest->peer,
             (unsigned long long)(uv_now(s->loop) - oldest->last_active), s->max_conns);
    ingest__conn_close(oldest, "evicted for a new connection");
}

static void on_connection(uv_stream_t *l, int status)
{
    ingest__server_t *s = l->data;
    if (status < 0) {
        log_warn("%s listener: accept failed: %s", s->proto->name, uv_strerror(status));
        return;
    }
    if (s->closing)
        return;
    ingest__conn_t *c = xcalloc(1, s->proto->conn_size);
    c->srv = s;
    c->budget = s->budget;
    c->refs = 2;
    c->handles = 2;
    c->want_read = true;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    s->live++;
    c->id = ++s->next_id;
    c->last_active = uv_now(s->loop);
    int rc = uv_accept(l, (uv_stream_t *)&c->tcp);
    if (rc != 0) {
        log_warn("%s listener: accept failed: %s", s->proto->name, uv_strerror(rc));
        c->refused = true;
        ingest__conn_close(c, "accept failed");
        return;
    }
    peer_name(&c->tcp, c->peer, sizeof c->peer);
    if (s->st.conns_open >= s->max_conns)
        evict_oldest_idle(s);
    if (s->st.conns_open >= s->max_conns) {
        s->st.conns_refused++;
        log_warn("%s conn #%llu from %s refused: max_connections %u reached", s->proto->name,
                 (unsigned long long)c->id, c->peer, s->max_conns);
        c->refused = true;
        ingest__conn_close(c, "refused");
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);       /* replies are small and latency-bound */
    uv_tcp_keepalive(&c->tcp, 1, 60); /* finds peers that vanished without a FIN */
    s->st.conns_open++;
    s->st.conns_total++;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    if (s->tls) {
        /* The protocol opens once the handshake is done; until then only
         * the handshake timeout runs. */
        c->tls = tls_conn_new(s->tls, NULL);
        ingest__conn_timer(c, s->tls_handshake_timeout_ms);
    } else {
        c->proto_open = true;
        s->proto->on_open(c);
    }
    ingest__conn_update_read(c);
}

static int parse_host(const char *host, int port, struct sockaddr_storage *ss)
{
    if (!host || !*host || strcmp(host, "*") == 0)
        host = "0.0.0.0";
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return -1;
}

static void on_listener_closed(uv_handle_t *h)
{
    ingest__server_t *s = h->data;
    s->listener_closed = true;
    server_check_done(s);
}

static void on_drain_closed(uv_handle_t *h)
{
    ingest__server_t *s = h->data;
    s->drain_timer_closed = true;
    server_check_done(s);
}

/* libuv writes with write(2), so a peer that resets the connection raises
 * SIGPIPE, whose default action kills the process: one bad client would take
 * every connection down. If nobody has chosen a SIGPIPE disposition, ignore
 * it (the write then fails with EPIPE and only that connection closes). */
static void ignore_sigpipe(void)
{
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && !(old.sa_flags & SA_SIGINFO) &&
        old.sa_handler == SIG_DFL) {
        struct sigaction ign;
        memset(&ign, 0, sizeof ign);
        ign.sa_handler = SIG_IGN;
        sigemptyset(&ign.sa_mask);
        sigaction(SIGPIPE, &ign, NULL);
    }
}

err_t ingest__listen(ingest__server_t *s, uv_loop_t *loop, const char *host, int port, int backlog,
                     err_detail_t *detail)
{
    struct sockaddr_storage ss;
    ignore_sigpipe();
    s->loop = loop;
    if (s->rbuf_size == 0)
        s->rbuf_size = 64 * 1024;
    s->rbuf = xmalloc(s->rbuf_size);
    /* Handles first, so that a failed listen is released by closing them. */
    uv_tcp_init(loop, &s->listener);
    uv_timer_init(loop, &s->drain_timer);
    s->listener.data = s;
    s->drain_timer.data = s;
    if (port < 0 || port > 65535)
        return err_set(detail, ERR_BAD_CONFIG, 0, "%s port %d out of range", s->proto->name, port);
    if (parse_host(host, port, &ss) != 0)
        return err_set(detail, ERR_BAD_CONFIG, 0,
                       "%s host must be a numeric IPv4/IPv6 address or localhost", s->proto->name);
    int rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, backlog > 0 ? backlog : 128, on_connection);
    if (rc != 0)
        return err_set(detail, ERR_IO, 0, "%s listen on %s:%d: %s", s->proto->name,
                       host ? host : "*", port, uv_strerror(rc));
    struct sockaddr_storage bound;
    int len = sizeof bound;
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len) == 0)
        s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    return ERR_OK;
}

static void server_check_done(ingest__server_t *s)
{
    if (!s->closing || s->done_called || !s->listener_closed || s->live)
        return;
    if (!s->drain_timer_closed) {
        if (!uv_is_closing((uv_handle_t *)&s->drain_timer))
            uv_close((uv_handle_t *)&s->drain_timer, on_drain_closed);
        return;
    }
    s->done_called = true;
    xfree(s->rbuf);
    s->rbuf = NULL;
    xfree(s->tls_plain);
    s->tls_plain = NULL;
    tls_ctx_unref(s->tls);
    s->tls = NULL;
    if (s->done)
        s->done(s);
}

static void on_drain_timeout(uv_timer_t *t)
{
    ingest__server_t *s = t->data;
    while (s->conns)
        ingest__conn_close(s->conns, "drain timeout");
}

void ingest__server_close(ingest__server_t *s, void (*done)(ingest__server_t *s))
{
    if (s->closing)
        return;
    s->closing = true;
    s->done = done;
    uv_timer_stop(&s->drain_timer); /* it was the watch of paused connections */
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    if (s->drain_timeout_ms)
        uv_timer_start(&s->drain_timer, on_drain_timeout, s->drain_timeout_ms, 0);
    ingest__conn_t *c = s->conns;
    while (c) {
        ingest__conn_t *next = c->next; /* finish may close and unlink c */
        if (c->lingering)
            uv_timer_start(&c->timer, on_timer, conn_linger_ms(c), 0);
        ingest__conn_finish(c);
        c = next;
    }
    server_check_done(s);
}

err_t ingest__server_start(ingest__server_t *s, const ingest__proto_t *proto, uv_loop_t *loop,
                           const char *host, int port, unsigned max_conns, unsigned max_pending,
                           unsigned linger_ms, unsigned drain_timeout_ms, int backlog,
                           void (*done)(ingest__server_t *s), err_detail_t *detail)
{
    s->proto = proto;
    s->max_conns = max_conns;
    s->max_pending = max_pending;
    s->linger_ms = linger_ms;
    s->drain_timeout_ms = drain_timeout_ms;
    err_t e = ingest__listen(s, loop, host, port, backlog, detail);
    if (e != ERR_OK) {
        ingest__server_close(s, done);
        return e;
    }
    log_info("%s listening on %s:%d", proto->name, host ? host : "*", s->port);
    return ERR_OK;
}

bool ingest__server_begin_close(ingest__server_t *s, void (*done)(ingest__server_t *s))
{
    if (s->closing)
        return false;
    log_info("%s listener closing: %llu connections to drain", s->proto->name,
             (unsigned long long)s->st.conns_open);
    ingest__server_close(s, done);
    return true;
}
