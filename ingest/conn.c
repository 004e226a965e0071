/* conn.c - the transport under both listeners: accept, read into one shared
 * buffer per server, per-connection ordered reply queue, uv_write with the
 * buffer borrowed until the write callback, backpressure, graceful close and
 * the server drain. Protocol code (mllp.c, http.c) sees bytes and slots only.
 *
 * Ownership: the server owns its connections; a connection is freed when its
 * last handle has closed and its last slot has been answered (refs == 0).
 */
#include "ingest_int.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "xmalloc.h"

/* ---- buf builder ---------------------------------------------------------- */

void ingest__buf_reserve(buf_t **b, size_t *cap, size_t need)
{
    if (*b == NULL) {
        size_t c = need < 256 ? 256 : need;
        *b = xmalloc(sizeof(buf_t) + c + 1);
        (*b)->refs = 1;
        (*b)->len = 0;
        *cap = c;
        return;
    }
    if (need <= *cap)
        return;
    size_t c = *cap * 2;
    if (c < need)
        c = need;
    *b = xrealloc(*b, sizeof(buf_t) + c + 1);
    *cap = c;
}

void ingest__buf_append(buf_t **b, size_t *cap, const void *p, size_t n)
{
    size_t have = *b ? (*b)->len : 0;
    ingest__buf_reserve(b, cap, have + n);
    if (n)
        memcpy((*b)->data + have, p, n);
    (*b)->len = have + n;
    (*b)->data[(*b)->len] = '\0';
}

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

/* ---- connection lifetime -------------------------------------------------- */

static void conn_unref(ingest__conn_t *c)
{
    if (--c->refs == 0) {
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
        s->proto->on_close(c, why);
        s->st.conns_open--;
    }
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

void ingest__conn_update_read(ingest__conn_t *c)
{
    if (c->closing)
        return;
    ingest__server_t *s = c->srv;
    /* Written-but-unsent replies count too: a peer that pipelines and never
     * reads must not grow libuv's write queue without bound. */
    bool backlog = ingest__conn_backlogged(c);
    bool should =
        c->lingering || (c->want_read && !c->eof && !s->closing && !c->close_when_done && !backlog);
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
        return;
    }
    memmove(c->stash, c->stash + u, c->stash_len - u);
    c->stash_len -= u;
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
    if (!c->closing) {
        ingest__conn_update_read(c);
        conn_maybe_finish(c);
    }
    conn_unref(c);
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

static void conn_write(ingest__conn_t *c, ingest__wbuf_t *w)
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
        c->eof = true;
        c->refs++;
        s->proto->on_eof(c);
        if (!c->closing) {
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
    s->proto->on_open(c);
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
