/* http.c - the HTTP/1.1 listener: the request assembly of http_parse.c over
 * the shared transport (conn.c), plus what needs a clock or a socket: the
 * header, body and keep-alive timeouts, 100 Continue, the responses the
 * server generates itself, and response serialisation.
 * Ownership: requests belong to ingest until answered; a response body is
 * copied (http_req_respond) or borrowed by reference (http_req_respond_buf).
 */
#include "http.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "http_int.h"
#include "log.h"
#include "xmalloc.h"

struct http_server {
    ingest__server_t base; /* first */
    http_opts_t opts;
    http_callbacks_t cb;
    void *user;
    http_server_close_cb close_cb;
    void *close_user;
    time_t date_at;
    char date[40];
    uint64_t requests, responses, s400, s408, s413, s431, continues;
};

enum { PH_IDLE, PH_HEADERS, PH_BODY };

typedef struct {
    ingest__conn_t base; /* first */
    http__parse_t parse;
    int phase;
} http_conn_t;

typedef struct {
    ingest__slot_t slot; /* first: a server-generated response */
} http_plain_slot_t;

static http_server_t *srv_of(ingest__conn_t *c)
{
    return (http_server_t *)c->srv;
}

void http_opts_default(http_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->max_body = 10 * 1024 * 1024;
    o->max_header = 16 * 1024;
    o->max_headers = 100;
    o->header_timeout_ms = 10000;
    o->body_timeout_ms = 60000;
    o->idle_timeout_ms = 60000;
    o->max_connections = 256;
    o->max_pending = 16;
    o->drain_timeout_ms = 10000;
    o->linger_ms = 1000;
    o->backlog = 128;
}

/* ---- serialisation -------------------------------------------------------- */

static const char *http_date(http_server_t *s)
{
    time_t now = time(NULL);
    if (now != s->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        s->date_at = now;
    }
    return s->date;
}

static const char *reason(int status)
{
    const char *r = http_status_str((enum http_status)status);
    return (r && r[0] != '<') ? r : "Status";
}

/* A response head written into a buffer sized for it (see build()); a
 * part that would not fit is cut, never written past the end. Every
 * response has one, so it is copied piece by piece rather than printed. */
typedef struct {
    char *p;
    size_t len, cap;
} head_t;

static void head_putn(head_t *h, const char *s, size_t n)
{
    if (n > h->cap - h->len)
        n = h->cap - h->len;
    memcpy(h->p + h->len, s, n);
    h->len += n;
}

static void head_put(head_t *h, const char *s)
{
    head_putn(h, s, strlen(s));
}

static void head_num(head_t *h, size_t v)
{
    char num[20];
    head_putn(h, num, str_udec(num, v));
}

/* Builds status line, headers and (copied) body; borrow, if any, follows. */
static ingest__wbuf_t *build(http_server_t *s, int status, const char *ctype, const void *body,
                             size_t len, buf_t *borrow, const char *extra, bool keep_alive,
                             bool head)
{
    size_t blen = borrow ? borrow->len : len;
    bool no_body = status < 200 || status == 204 || status == 304;
    bool send_body = !no_body && !head;
    size_t cap = 256 + (ctype ? strlen(ctype) : 0) + (extra ? strlen(extra) : 0);
    ingest__wbuf_t *w = ingest__wbuf_new(cap + (send_body && !borrow ? len : 0));
    head_t h = {w->data, 0, cap};
    head_put(&h, "HTTP/1.1 ");
    head_num(&h, (size_t)status);
    head_put(&h, " ");
    head_put(&h, reason(status));
    head_put(&h, "\r\nDate: ");
    head_put(&h, http_date(s));
    head_put(&h, "\r\n");
    if (!no_body) {
        if (ctype && blen) {
            head_put(&h, "Content-Type: ");
            head_put(&h, ctype);
            head_put(&h, "\r\n");
        }
        head_put(&h, "Content-Length: ");
        head_num(&h, blen);
        head_put(&h, "\r\n");
    }
    head_put(&h, keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
    head_put(&h, extra ? extra : "");
    head_put(&h, "\r\n");
    size_t o = h.len;
    if (send_body && !borrow && len) {
        memcpy(w->data + o, body, len);
        o += len;
    }
    if (send_body && borrow)
        w->borrow = buf_ref(borrow);
    w->len = o;
    return w;
}

/* ---- server-generated responses ------------------------------------------ */

static void plain_free(ingest__slot_t *s)
{
    xfree(s);
}

/* Queues status (after whatever is owed before it) and closes afterwards. */
static void send_error(http_conn_t *hc, int status, const char *why)
{
    ingest__conn_t *c = &hc->base;
    http_server_t *s = srv_of(c);
    const http_req_t *req = hc->parse.cur && hc->parse.cur->headers_done ? hc->parse.cur : NULL;
    char body[4096];
    const char *ctype = NULL;
    size_t len = 0;
    if (s->cb.error)
        len = s->cb.error(req, status, why, body, sizeof body, &ctype, s->user);
    if (len == 0 || len > sizeof body || !ctype) {
        len = (size_t)snprintf(body, sizeof body, "%d %s: %s\n", status, reason(status), why);
        if (len >= sizeof body)
            len = sizeof body - 1;
        ctype = "text/plain; charset=utf-8";
    }
    switch (status) {
    case 400: s->s400++; break;
    case 408: s->s408++; break;
    case 413: s->s413++; break;
    case 431: s->s431++; break;
    default: break;
    }
    log_info("http conn #%llu from %s: %d (%s), closing", (unsigned long long)c->id, c->peer,
             status, why);
    http__parse_free(&hc->parse);
    http_plain_slot_t *ps = xcalloc(1, sizeof *ps);
    ps->slot.free = plain_free;
    ingest__slot_push(c, &ps->slot);
    ps->slot.close_after = true;
    ingest__slot_answer(&ps->slot, build(s, status, ctype, body, len, NULL, NULL, false, false));
    ingest__conn_finish(c);
}

/* ---- parse hooks ------------------------------------------------------------ */

static void hook_begin(http__parse_t *p)
{
    http_conn_t *hc = p->owner;
    hc->phase = PH_HEADERS;
    ingest__conn_timer(&hc->base, srv_of(&hc->base)->opts.header_timeout_ms);
}

static void hook_headers(http__parse_t *p, http_req_t *req, bool body_expected)
{
    http_conn_t *hc = p->owner;
    ingest__conn_t *c = &hc->base;
    http_server_t *s = srv_of(c);
    if (!body_expected)
        return;
    hc->phase = PH_BODY;
    ingest__conn_timer(c, s->opts.body_timeout_ms);
    /* 100 Continue only when nothing is owed ahead of it: an interim response
     * must not overtake the final response to an earlier pipelined request.
     * Otherwise the client sends the body after its own short wait. */
    if (req->expect_continue && c->queued == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        http_plain_slot_t *ps = xcalloc(1, sizeof *ps);
        ps->slot.free = plain_free;
        ingest__slot_push(c, &ps->slot);
        ingest__wbuf_t *w = ingest__wbuf_new(sizeof cont - 1);
        memcpy(w->data, cont, sizeof cont - 1);
        s->continues++;
        ingest__slot_answer(&ps->slot, w);
    }
}

/* Bytes a request holds: its head (target, headers) and the body received
 * (the body's block is reserved from Content-Length, but pages not yet
 * written are not resident). */
static size_t req_held(const http_req_t *r)
{
    return r->raw_cap + r->hdr_cap * sizeof *r->hdrs + (r->body ? r->body->len : 0);
}

static bool hook_request(http__parse_t *p, http_req_t *req)
{
    http_conn_t *hc = p->owner;
    ingest__conn_t *c = &hc->base;
    http_server_t *s = srv_of(c);
    hc->phase = PH_IDLE;
    if (s->opts.idle_timeout_ms)
        ingest__conn_timer(c, s->opts.idle_timeout_ms);
    else
        ingest__conn_timer(c, 0);
    ingest__slot_push(c, &req->slot);
    ingest__slot_hold(&req->slot, req_held(req));
    req->slot.close_after = !req->keep_alive;
    s->requests++;
    s->cb.request(req, s->user);
    if (c->closing)
        p->stop = true;
    return !c->closing && !ingest__conn_backlogged(c);
}

/* ---- transport hooks -------------------------------------------------------- */

static void on_open(ingest__conn_t *c)
{
    http_conn_t *hc = (http_conn_t *)c;
    http_server_t *s = srv_of(c);
    http__parse_init(&hc->parse, &s->opts, hc);
    hc->parse.on_begin = hook_begin;
    hc->parse.on_headers = hook_headers;
    hc->parse.on_request = hook_request;
    hc->phase = PH_IDLE;
    log_debug("http conn #%llu from %s opened", (unsigned long long)c->id, c->peer);
    if (s->opts.idle_timeout_ms)
        ingest__conn_timer(c, s->opts.idle_timeout_ms);
}

static size_t on_data(ingest__conn_t *c, const char *p, size_t n)
{
    http_conn_t *hc = (http_conn_t *)c;
    size_t used = http__conn_feed(&hc->parse, p, n);
    if (c->closing)
        return n;
    if (hc->parse.error) {
        send_error(hc, hc->parse.error, hc->parse.why);
        return n;
    }
    if (hc->parse.stop) {
        c->want_read = false; /* the last request's response closes the connection */
        return n;
    }
    return used; /* fewer than n: paused for backpressure at a request boundary */
}

static size_t held(const ingest__conn_t *c)
{
    const http_conn_t *hc = (const http_conn_t *)c;
    return hc->parse.cur ? req_held(hc->parse.cur) : 0;
}

static void on_eof(ingest__conn_t *c)
{
    http_conn_t *hc = (http_conn_t *)c;
    /* Complete requests read before EOF are still answered; a partial one
     * never completes and is dropped when the connection closes. */
    if (http__parse_in_message(&hc->parse))
        log_info("http conn #%llu from %s: closed mid-request", (unsigned long long)c->id, c->peer);
}

static void on_timer(ingest__conn_t *c)
{
    http_conn_t *hc = (http_conn_t *)c;
    http_server_t *s = srv_of(c);
    if (http__parse_in_message(&hc->parse) && !hc->parse.error && !hc->parse.stop) {
        send_error(hc, 408,
                   hc->phase == PH_BODY ? "request body timeout" : "request header timeout");
        return;
    }
    uint64_t idle = s->opts.idle_timeout_ms;
    if (!idle)
        return;
    if (c->queued && !c->writes) {
        ingest__conn_timer(c, idle); /* waiting on the daemon, not on the peer */
        return;
    }
    uint64_t now = uv_now(s->base.loop);
    if (now - c->last_active < idle) {
        ingest__conn_timer(c, idle - (now - c->last_active));
        return;
    }
    if (c->writes) {
        log_warn("http conn #%llu from %s: peer not reading responses for %llu ms, closing",
                 (unsigned long long)c->id, c->peer, (unsigned long long)idle);
        ingest__conn_close(c, "peer not reading");
        return;
    }
    log_debug("http conn #%llu from %s: idle, closing", (unsigned long long)c->id, c->peer);
    ingest__conn_finish(c);
}

static void on_close(ingest__conn_t *c, const char *why)
{
    http_conn_t *hc = (http_conn_t *)c;
    log_debug("http conn #%llu from %s closed (%s): %llu requests, %u responses owed",
              (unsigned long long)c->id, c->peer, why, (unsigned long long)hc->parse.requests,
              c->queued);
    http__parse_free(&hc->parse);
}

static const ingest__proto_t http_proto = {
    .name = "http",
    .conn_size = sizeof(http_conn_t),
    .on_open = on_open,
    .on_data = on_data,
    .on_eof = on_eof,
    .on_timer = on_timer,
    .on_close = on_close,
    .held = held,
    /* What a browser or curl shows for http:// sent to an https:// port. */
    .plaintext_reply = "HTTP/1.1 400 Bad Request\r\n"
                       "Content-Type: text/plain\r\n"
                       "Content-Length: 38\r\n"
                       "Connection: close\r\n"
                       "\r\n"
                       "This port speaks HTTPS: use https://\r\n",
};

/* ---- server ----------------------------------------------------------------- */

static void server_done(ingest__server_t *base)
{
    http_server_t *s = (http_server_t *)base;
    if (s->close_cb)
        s->close_cb(s, s->close_user);
    xfree(s);
}

err_t http_server_listen(uv_loop_t *loop, const char *host, int port, const http_opts_t *opts,
                         const http_callbacks_t *callbacks, void *user, http_server_t **server,
                         err_detail_t *detail)
{
    *server = NULL;
    if (!loop || !callbacks || !callbacks->request)
        return err_set(detail, ERR_BAD_CONFIG, 0, "http: loop and request callback are required");
    http_server_t *s = xcalloc(1, sizeof *s);
    http_opts_t def;
    http_opts_default(&def);
    s->opts = opts ? *opts : def;
    if (!s->opts.max_header)
        s->opts.max_header = def.max_header;
    if (!s->opts.max_headers)
        s->opts.max_headers = def.max_headers;
    if (!s->opts.max_connections)
        s->opts.max_connections = def.max_connections;
    if (!s->opts.max_pending)
        s->opts.max_pending = def.max_pending;
    if (!s->opts.header_timeout_ms)
        s->opts.header_timeout_ms = def.header_timeout_ms;
    if (!s->opts.body_timeout_ms)
        s->opts.body_timeout_ms = def.body_timeout_ms;
    s->cb = *callbacks;
    s->user = user;
    s->base.budget = s->opts.budget;
    if (s->opts.tls)
        ingest__server_set_tls(&s->base, s->opts.tls, s->opts.tls_handshake_timeout_ms);
    s->opts.tls = NULL; /* the server holds its context, not the options */
    err_t e = ingest__server_start(&s->base, &http_proto, loop, host, port, s->opts.max_connections,
                                   s->opts.max_pending, s->opts.linger_ms,
                                   s->opts.drain_timeout_ms, s->opts.backlog, server_done, detail);
    if (e != ERR_OK)
        return e;
    *server = s;
    return ERR_OK;
}

int http_server_port(const http_server_t *s)
{
    return s->base.port;
}

void http_server_close(http_server_t *s, http_server_close_cb cb, void *user)
{
    if (!s || s->base.closing)
        return;
    s->close_cb = cb;
    s->close_user = user;
    ingest__server_begin_close(&s->base, server_done);
}

void http_server_stats(const http_server_t *s, http_stats_t *o)
{
    memset(o, 0, sizeof *o);
    o->conns_open = s->base.st.conns_open;
    o->conns_total = s->base.st.conns_total;
    o->conns_refused = s->base.st.conns_refused;
    o->requests = s->requests;
    o->responses = s->responses;
    o->pending = s->base.st.pending;
    o->status_400 = s->s400;
    o->status_408 = s->s408;
    o->status_413 = s->s413;
    o->status_431 = s->s431;
    o->continues = s->continues;
    o->bytes_in = s->base.st.bytes_in;
    o->bytes_out = s->base.st.bytes_out;
    o->pauses = s->base.st.pauses;
    o->orphaned = s->base.st.orphaned;
    o->tls_on = s->base.tls != NULL;
    o->tls = s->base.tls_st;
}

void http_server_set_tls(http_server_t *s, tls_ctx_t *ctx)
{
    if (s->base.tls && ctx)
        ingest__server_set_tls(&s->base, ctx, 0);
}

/* ---- responding ----------------------------------------------------------------- */

static void respond(http_req_t *req, int status, const char *ctype, const void *body, size_t len,
                    buf_t *borrow, const char *extra)
{
    ingest__slot_t *slot = &req->slot;
    if (!slot->conn) { /* never queued (not from a socket) */
        http__req_free(req);
        return;
    }
    if (slot->orphan || !slot->queued) {
        ingest__slot_answer(slot, NULL);
        return;
    }
    http_server_t *s = srv_of(slot->conn);
    bool keep = req->keep_alive && !s->base.closing;
    slot->close_after = !keep;
    s->responses++;
    ingest__slot_answer(slot, build(s, status, ctype, body, len, borrow, extra, keep, req->head));
}

void http_req_respond(http_req_t *req, int status, const char *content_type, const void *body,
                      size_t len, const char *extra_headers)
{
    respond(req, status, content_type, body, len, NULL, extra_headers);
}

void http_req_respond_buf(http_req_t *req, int status, const char *content_type, buf_t *body,
                          const char *extra_headers)
{
    if (!body) {
        respond(req, status, content_type, NULL, 0, NULL, extra_headers);
        return;
    }
    respond(req, status, content_type, NULL, 0, body, extra_headers);
}

uint64_t http_req_conn_id(const http_req_t *req)
{
    return req->slot.conn ? req->slot.conn->id : 0;
}

const char *http_req_peer(const http_req_t *req)
{
    return req->slot.conn ? req->slot.conn->peer : "";
}

const char *http_req_client_subject(const http_req_t *req)
{
    const ingest__conn_t *c = req->slot.conn;
    if (!c || !c->tls)
        return NULL;
    const char *subject = tls_conn_peer_subject(c->tls);
    return subject[0] ? subject : NULL;
}
