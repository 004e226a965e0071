/* mllp.c - the MLLP listener: a framer per connection over the shared
 * transport (conn.c). Each frame becomes an mllp_req_t queued on its
 * connection; replies are framed, copied and written in arrival order.
 * Ownership: ingest owns reqs until the daemon answers them; the framer's
 * buf_t is the daemon's to buf_ref during the callback.
 */
#include "mllp.h"

#include <string.h>

#include "ingest_int.h"
#include "log.h"
#include "xmalloc.h"

struct mllp_server {
    ingest__server_t base; /* first */
    mllp_opts_t opts;
    mllp_callbacks_t cb;
    void *user;
    mllp_server_close_cb close_cb;
    void *close_user;
    uint64_t frames, oversized, empty_frames, dropped, replies, no_replies, idle_closes;
};

typedef struct {
    ingest__conn_t base; /* first */
    mllp_framer_t framer;
    uint64_t frames;
} mllp_conn_t;

struct mllp_req {
    ingest__slot_t slot; /* first */
};

static mllp_server_t *srv_of(ingest__conn_t *c)
{
    return (mllp_server_t *)c->srv;
}

void mllp_opts_default(mllp_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->max_message = 1024 * 1024;
    o->keep_head = 1024;
    o->max_connections = 256;
    o->max_pending = 64;
    o->idle_timeout_ms = 300000;
    o->drain_timeout_ms = 10000;
    o->linger_ms = 1000;
    o->backlog = 128;
}

static void req_free(ingest__slot_t *s)
{
    xfree(s);
}

static bool on_frame(void *user, const mllp_frame_t *f)
{
    ingest__conn_t *c = user;
    mllp_conn_t *mc = user;
    mllp_server_t *s = srv_of(c);
    if (!f->oversized && f->frame->len == 0) {
        s->empty_frames++;
        return true;
    }
    mllp_req_t *req = xcalloc(1, sizeof *req);
    req->slot.free = req_free;
    ingest__slot_push(c, &req->slot);
    ingest__slot_hold(&req->slot, f->frame->len);
    mc->frames++;
    if (f->oversized) {
        s->oversized++;
        log_warn("mllp conn #%llu from %s: frame of %zu bytes exceeds max_message %zu",
                 (unsigned long long)c->id, c->peer, f->total, s->opts.max_message);
        if (s->cb.oversized)
            s->cb.oversized(req, f->frame, f->total, s->user);
        else
            mllp_req_reply_none(req);
    } else {
        s->frames++;
        s->cb.frame(req, f->frame, s->user);
    }
    return !c->closing && !ingest__conn_backlogged(c);
}

static void on_open(ingest__conn_t *c)
{
    mllp_conn_t *mc = (mllp_conn_t *)c;
    mllp_server_t *s = srv_of(c);
    mllp_framer_init(&mc->framer, s->opts.max_message, s->opts.keep_head);
    log_info("mllp conn #%llu from %s opened", (unsigned long long)c->id, c->peer);
    if (s->opts.idle_timeout_ms)
        ingest__conn_timer(c, s->opts.idle_timeout_ms);
}

static size_t on_data(ingest__conn_t *c, const char *p, size_t n)
{
    mllp_conn_t *mc = (mllp_conn_t *)c;
    mllp_server_t *s = srv_of(c);
    uint64_t before = mc->framer.dropped;
    size_t used = mllp_framer_feed(&mc->framer, p, n, on_frame, c);
    s->dropped += mc->framer.dropped - before;
    return used;
}

static size_t held(const ingest__conn_t *c)
{
    const mllp_conn_t *mc = (const mllp_conn_t *)c;
    /* The bytes received, not the capacity: what is not written yet is not
     * resident (large blocks are mapped on demand). */
    return mc->framer.acc ? mc->framer.acc->len : 0;
}

static void on_eof(ingest__conn_t *c)
{
    /* Replies still owed are written. A partial frame can never end now: it
     * is dropped at once (its memory is given back) and logged. */
    mllp_conn_t *mc = (mllp_conn_t *)c;
    mllp_server_t *s = srv_of(c);
    size_t partial = mllp_framer_partial(&mc->framer);
    if (!partial || c->stash_len) /* bytes kept aside may still continue it */
        return;
    uint64_t before = mc->framer.dropped;
    mllp_framer_free(&mc->framer);
    s->dropped += mc->framer.dropped - before;
    log_info("mllp conn #%llu from %s: peer closed in the middle of a frame: %zu bytes dropped",
             (unsigned long long)c->id, c->peer, partial);
}

static void on_timer(ingest__conn_t *c)
{
    mllp_server_t *s = srv_of(c);
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
    s->idle_closes++;
    if (c->writes) {
        /* Replies have waited a whole idle period for the peer to read them. */
        log_warn("mllp conn #%llu from %s: peer not reading replies for %llu ms, closing",
                 (unsigned long long)c->id, c->peer, (unsigned long long)idle);
        ingest__conn_close(c, "peer not reading");
        return;
    }
    log_info("mllp conn #%llu from %s: idle for %llu ms, closing", (unsigned long long)c->id,
             c->peer, (unsigned long long)idle);
    ingest__conn_finish(c);
}

static void on_close(ingest__conn_t *c, const char *why)
{
    mllp_conn_t *mc = (mllp_conn_t *)c;
    mllp_server_t *s = srv_of(c);
    size_t partial = mllp_framer_partial(&mc->framer);
    uint64_t before = mc->framer.dropped;
    mllp_framer_free(&mc->framer);
    s->dropped += mc->framer.dropped - before;
    log_info("mllp conn #%llu from %s closed (%s): %llu frames, %llu oversized, %llu bytes "
             "dropped, %zu-byte partial frame, %u replies owed",
             (unsigned long long)c->id, c->peer, why, (unsigned long long)mc->frames,
             (unsigned long long)mc->framer.oversized_frames,
             (unsigned long long)mc->framer.dropped, partial, c->queued);
}

static const ingest__proto_t mllp_proto = {
    .name = "mllp",
    .conn_size = sizeof(mllp_conn_t),
    .on_open = on_open,
    .on_data = on_data,
    .on_eof = on_eof,
    .on_timer = on_timer,
    .on_close = on_close,
    .held = held,
};

static void server_done(ingest__server_t *base)
{
    mllp_server_t *s = (mllp_server_t *)base;
    if (s->close_cb)
        s->close_cb(s, s->close_user);
    xfree(s);
}

err_t mllp_server_listen(uv_loop_t *loop, const char *host, int port, const mllp_opts_t *opts,
                         const mllp_callbacks_t *callbacks, void *user, mllp_server_t **server,
                         err_detail_t *detail)
{
    *server = NULL;
    if (!loop || !callbacks || !callbacks->frame)
        return err_set(detail, ERR_BAD_CONFIG, 0, "mllp: loop and frame callback are required");
    mllp_server_t *s = xcalloc(1, sizeof *s);
    if (opts)
        s->opts = *opts;
    else
        mllp_opts_default(&s->opts);
    mllp_opts_t def;
    mllp_opts_default(&def);
    if (!s->opts.max_message)
        s->opts.max_message = def.max_message;
    if (!s->opts.keep_head)
        s->opts.keep_head = def.keep_head;
    if (!s->opts.max_connections)
        s->opts.max_connections = def.max_connections;
    if (!s->opts.max_pending)
        s->opts.max_pending = def.max_pending;
    s->cb = *callbacks;
    s->user = user;
    s->base.budget = s->opts.budget;
    if (s->opts.tls)
        ingest__server_set_tls(&s->base, s->opts.tls, s->opts.tls_handshake_timeout_ms);
    s->opts.tls = NULL; /* the server holds its context, not the options */
    err_t e = ingest__server_start(&s->base, &mllp_proto, loop, host, port, s->opts.max_connections,
                                   s->opts.max_pending, s->opts.linger_ms,
                                   s->opts.drain_timeout_ms, s->opts.backlog, server_done, detail);
    if (e != ERR_OK)
        return e;
    *server = s;
    return ERR_OK;
}

int mllp_server_port(const mllp_server_t *s)
{
    return s->base.port;
}

void mllp_server_close(mllp_server_t *s, mllp_server_close_cb cb, void *user)
{
    if (!s || s->base.closing)
        return;
    s->close_cb = cb;
    s->close_user = user;
    ingest__server_begin_close(&s->base, server_done);
}

void mllp_server_stats(const mllp_server_t *s, mllp_stats_t *o)
{
    memset(o, 0, sizeof *o);
    o->conns_open = s->base.st.conns_open;
    o->conns_total = s->base.st.conns_total;
    o->conns_refused = s->base.st.conns_refused;
    o->frames = s->frames;
    o->oversized = s->oversized;
    o->empty_frames = s->empty_frames;
    o->bytes_in = s->base.st.bytes_in;
    o->bytes_out = s->base.st.bytes_out;
    o->bytes_dropped = s->dropped;
    o->replies = s->replies;
    o->no_replies = s->no_replies;
    o->pending = s->base.st.pending;
    o->pauses = s->base.st.pauses;
    o->idle_closes = s->idle_closes;
    o->orphaned = s->base.st.orphaned;
    o->evicted = s->base.st.evicted;
    o->tls_on = s->base.tls != NULL;
    o->tls = s->base.tls_st;
}

void mllp_server_set_tls(mllp_server_t *s, tls_ctx_t *ctx)
{
    if (s->base.tls && ctx)
        ingest__server_set_tls(&s->base, ctx, 0);
}

void mllp_req_reply2(mllp_req_t *req, const void *first, size_t first_len, const void *second,
                     size_t second_len)
{
    ingest__slot_t *slot = &req->slot;
    if (slot->orphan) {
        ingest__slot_answer(slot, NULL);
        return;
    }
    bool two = second != NULL;
    srv_of(slot->conn)->replies += two ? 2 : 1;
    /* One write buffer for both frames: they leave together, in this order,
     * and nothing of a later request can come between them. */
    ingest__wbuf_t *w =
        ingest__wbuf_new(first_len + MLLP_OVERHEAD + (two ? second_len + MLLP_OVERHEAD : 0));
    char *p = mllp_frame_put(w->data, first, first_len);
    if (two)
        (void)mllp_frame_put(p, second, second_len);
    ingest__slot_answer(slot, w);
}

void mllp_req_reply(mllp_req_t *req, const void *bytes, size_t len)
{
    mllp_req_reply2(req, bytes, len, NULL, 0);
}

void mllp_req_reply_none(mllp_req_t *req)
{
    if (!req->slot.orphan)
        srv_of(req->slot.conn)->no_replies++;
    ingest__slot_answer(&req->slot, NULL);
}

uint64_t mllp_req_conn_id(const mllp_req_t *req)
{
    return req->slot.conn->id;
}

const char *mllp_req_peer(const mllp_req_t *req)
{
    return req->slot.conn->peer;
}

bool mllp_req_orphaned(const mllp_req_t *req)
{
    return req->slot.orphan;
}
