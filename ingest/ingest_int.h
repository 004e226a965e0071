/* ingest_int.h - what the MLLP and HTTP listeners share: a TCP listener on an
 * explicit loop, connections with an ordered reply queue, writes, timers,
 * backpressure and the drain on close. Included only by ingest/ and by its
 * unit tests and fuzz targets; nothing here is public API.
 *
 * Ownership: a connection's memory is reference counted: one reference per
 * open libuv handle (tcp, timer) and one per queued slot (a received message
 * awaiting its reply), so a reply that arrives after the peer went away still
 * finds valid memory and is dropped. Handles are freed only from their close
 * callbacks. A protocol struct embeds ingest__conn_t / ingest__slot_t /
 * ingest__server_t as its first member.
 */
#ifndef SPINEGATE_INGEST_INT_H
#define SPINEGATE_INGEST_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "budget.h"
#include "buf.h"
#include "err.h"
#include "tls.h"

/* ---- writes -------------------------------------------------------------- */

typedef struct ingest__wbuf {
    uv_write_t req;
    buf_t *borrow; /* optional second part written after data; one reference */
    size_t len;
    char data[];
} ingest__wbuf_t;

/* Returns an uninitialised write buffer of len bytes (len is set). */
ingest__wbuf_t *ingest__wbuf_new(size_t len);
void ingest__wbuf_free(ingest__wbuf_t *w);

/* ---- ordered reply slots -------------------------------------------------- */

typedef enum {
    INGEST__SLOT_PENDING, /* awaiting the daemon's answer */
    INGEST__SLOT_READY,   /* answered, out holds the bytes (NULL: nothing to write) */
} ingest__slot_state_t;

typedef struct ingest__slot {
    struct ingest__slot *next;
    struct ingest__conn *conn; /* holds a reference while the slot lives */
    ingest__wbuf_t *out;
    void (*free)(struct ingest__slot *s); /* frees the enclosing object */
    unsigned char state;
    bool close_after; /* close the connection once this is written */
    bool orphan;      /* the connection is gone: answering just frees */
    bool queued;
    size_t held; /* bytes of the message charged to the budget until release */
} ingest__slot_t;

/* ---- connections ---------------------------------------------------------- */

typedef struct ingest__conn {
    uv_tcp_t tcp; /* first: the handle's data points at the conn */
    uv_timer_t timer;
    uv_shutdown_t shutdown;
    struct ingest__server *srv; /* NULL once the handles are closed */
    struct ingest__conn *prev, *next;
    uint64_t id;
    uint64_t last_active; /* uv_now() of the last read or completed write */
    uint64_t bytes_in;
    char peer[64];
    unsigned refs;
    unsigned handles; /* open libuv handles (0..2) */
    ingest__slot_t *head, *tail;
    ingest_budget_t *budget;            /* the server's, or NULL */
    struct ingest__conn *bnext, *bprev; /* in the budget's paused list */
    size_t held_in;                     /* charged for the stash and an unfinished message */
    size_t held_out;                    /* charged for its slots' messages */
    char *stash; /* bytes read but not yet consumed (backpressure) */
    size_t stash_len, stash_cap;
    unsigned queued; /* slots in the queue */
    unsigned writes; /* uv_write calls in flight */
    bool reading;
    bool paused; /* reading stopped for backpressure (for stats/logs) */
    bool want_read;
    bool eof;
    bool closing;
    bool lingering;
    bool close_when_done;
    bool refused;
    bool in_data; /* inside proto->on_data: no re-entry */
    bool budget_paused; /* not read because the budget is spent */
    /* TLS: the session, when the server speaks TLS. The protocol is opened
     * (on_open) only once the handshake is done, so it sees plaintext only;
     * until then the connection's timer is the handshake timeout. */
    tls_conn_t *tls;
    bool proto_open;
} ingest__conn_t;

typedef struct {
    const char *name; /* "mllp", "http": for log lines */
    size_t conn_size;
    void (*on_open)(ingest__conn_t *c);
    /* Returns the bytes consumed: all of them, unless the protocol stopped
     * at a message boundary because ingest__conn_backlogged(c) (or c is
     * closing); the rest is kept and offered again once replies drain. */
    size_t (*on_data)(ingest__conn_t *c, const char *p, size_t n);
    void (*on_eof)(ingest__conn_t *c);
    void (*on_timer)(ingest__conn_t *c);
    /* The connection is being closed: release protocol state, log the line. */
    void (*on_close)(ingest__conn_t *c, const char *why);
    /* Bytes the protocol holds for an unfinished message (NULL: none). */
    size_t (*held)(const ingest__conn_t *c);
    /* Written in clear to a peer that sent plaintext to the TLS port, before
     * the close, so that it learns why (NULL: closed without a word). */
    const char *plaintext_reply;
} ingest__proto_t;

typedef struct {
    uint64_t conns_open, conns_total, conns_refused;
    uint64_t bytes_in, bytes_out;
    uint64_t pending;  /* slots awaiting an answer or their write, now */
    uint64_t pauses;   /* times a connection was paused for backpressure */
    uint64_t orphaned; /* slots whose connection closed before their reply */
    uint64_t evicted;  /* idle connections closed to admit one at max_conns */
} ingest__stats_t;

typedef struct ingest__server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t drain_timer;
    const ingest__proto_t *proto;
    ingest__conn_t *conns; /* open (not closing) connections */
    unsigned live;         /* connections whose handles are not all closed */
    unsigned max_conns, max_pending;
    ingest_budget_t *budget; /* shared by the daemon's listeners; NULL = none */
    unsigned linger_ms, drain_timeout_ms;
    uint64_t next_id;
    int port;
    ingest__stats_t st;
    char *rbuf;
    size_t rbuf_size;
    /* TLS (NULL: plaintext). New connections take the current context; a
     * reload swaps it and open connections keep theirs. */
    tls_ctx_t *tls;
    unsigned tls_handshake_timeout_ms;
    char *tls_plain; /* decrypted bytes, offered to the protocol at once */
    tls_stats_t tls_st;
    bool closing, listener_closed, drain_timer_closed, done_called;
    void (*done)(struct ingest__server *s);
} ingest__server_t;

/* Binds and listens; s must be zeroed apart from proto, max_conns,
 * max_pending, linger_ms, drain_timeout_ms (and optionally rbuf_size). Returns
 * ERR_BAD_CONFIG for a host that is not a numeric address (or "localhost") or
 * a bad port, ERR_IO when bind/listen fail (detail names the libuv error).
 * Even on failure the listener handle exists: the caller releases it with
 * ingest__server_close() and frees s from the done callback. */
err_t ingest__listen(ingest__server_t *s, uv_loop_t *loop, const char *host, int port, int backlog,
                     err_detail_t *detail);

/* What both listeners set up the same way: the shared limits, the listen
 * itself and its log line. On failure the half-made listener is released
 * through done (which frees the server) and the error returned. */
err_t ingest__server_start(ingest__server_t *s, const ingest__proto_t *proto, uv_loop_t *loop,
                           const char *host, int port, unsigned max_conns, unsigned max_pending,
                           unsigned linger_ms, unsigned drain_timeout_ms, int backlog,
                           void (*done)(ingest__server_t *s), err_detail_t *detail);

/* Makes s speak TLS with ctx (a reference is taken; the previous context,
 * if any, is released once its connections are gone); handshake_timeout_ms
 * bounds a handshake (0: 10 s). Before ingest__server_start, or later to
 * swap certificates on a server that was started with TLS. */
void ingest__server_set_tls(ingest__server_t *s, tls_ctx_t *ctx, unsigned handshake_timeout_ms);

/* Logs the drain and starts ingest__server_close(); false (nothing done)
 * when the server is already closing. */
bool ingest__server_begin_close(ingest__server_t *s, void (*done)(ingest__server_t *s));

/* Stops accepting, lets every queued reply be written, closes connections as
 * they drain, hard-closes the rest after drain_timeout_ms, then calls done(s)
 * once every handle is closed. done may free s. */
void ingest__server_close(ingest__server_t *s, void (*done)(ingest__server_t *s));

/* Appends a PENDING slot to c's queue (takes a conn reference). */
void ingest__slot_push(ingest__conn_t *c, ingest__slot_t *s);

/* Charges n bytes of s's message (the frame or request it carries) to the
 * budget until s is released. */
void ingest__slot_hold(ingest__slot_t *s, size_t n);

/* Answers s: out (consumed, may be NULL for "write nothing") goes out when
 * every earlier slot of the connection has gone out. On an orphan slot out
 * is freed and the slot freed at once. */
void ingest__slot_answer(ingest__slot_t *s, ingest__wbuf_t *out);

/* Closes c now (read error, protocol failure); queued slots become orphans. */
void ingest__conn_close(ingest__conn_t *c, const char *why);

/* Stops reading for the protocol and closes c once its queue and writes have
 * drained: FIN first, then input is discarded up to linger_ms so the peer
 * reads the last reply rather than a reset. */
void ingest__conn_finish(ingest__conn_t *c);

/* Recomputes whether c should be reading (backpressure, finish, drain). */
void ingest__conn_update_read(ingest__conn_t *c);

/* (Re)arms c's one timer for ms milliseconds; 0 stops it. */
void ingest__conn_timer(ingest__conn_t *c, uint64_t ms);

/* True when c has as many messages awaiting replies or their writes as it
 * may: the protocol stops consuming input at the next message boundary. */
static inline bool ingest__conn_backlogged(const ingest__conn_t *c)
{
    return c->queued + c->writes >= c->srv->max_pending;
}

/* True when c can still take writes (not closing). */
static inline bool ingest__conn_alive(const ingest__conn_t *c)
{
    return c && !c->closing;
}

#endif
