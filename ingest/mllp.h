/* mllp.h - the MLLP side of ingest: a pure framer for 0x0B <message> 0x1C 0x0D
 * and a listener on an explicit libuv loop that hands each complete frame to
 * the daemon and writes the daemon's reply back, in arrival order.
 *
 * Ownership: the server and its connections belong to ingest; the daemon gets
 * an mllp_req_t per frame and must answer it exactly once (mllp_req_reply,
 * mllp_req_reply2 or mllp_req_reply_none), after which the req is gone. A frame's buf_t is valid
 * during the callback; buf_ref() it to keep it longer. Everything runs on the
 * loop thread; no function here is thread-safe. Listening sets SIGPIPE to
 * ignored if it still has its default action (a reset peer must not kill the
 * process).
 */
#ifndef SPINEGATE_MLLP_H
#define SPINEGATE_MLLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "budget.h"
#include "buf.h"
#include "err.h"
#include "mllp_frame.h"
#include "tls.h"

/* ---- listener ------------------------------------------------------------ */

typedef struct mllp_server mllp_server_t;
typedef struct mllp_req mllp_req_t;

typedef struct {
    size_t max_message;        /* content bytes; default 1 MiB */
    size_t keep_head;          /* bytes of an oversized frame kept; default 1 KiB */
    unsigned max_connections;  /* at it, the oldest idle connection is closed to admit a new
                                  one; with none idle the new one is closed; default 256 */
    unsigned max_pending;      /* per connection: at this many frames awaiting replies,
                                  reading stops until they drain; default 64 */
    unsigned idle_timeout_ms;  /* close a connection with no traffic and nothing
                                  pending; 0 = never; default 300000 */
    unsigned drain_timeout_ms; /* mllp_server_close: hard-close after this; default 10000 */
    unsigned linger_ms;        /* after our FIN, discard input this long; default 1000 */
    int backlog;               /* listen(2) backlog; default 128 */
    ingest_budget_t *budget;   /* memory budget shared with other listeners (borrowed);
                                  NULL = none */
    tls_ctx_t *tls;            /* TLS server context (the listener takes a reference);
                                  NULL = plaintext */
    unsigned tls_handshake_timeout_ms; /* a handshake not done by then closes; default 10000 */
} mllp_opts_t;

/* Fills o with the defaults above. */
void mllp_opts_default(mllp_opts_t *o);

/* A complete frame arrived. frame is valid during the call (buf_ref to keep).
 * The daemon answers req later, exactly once. */
typedef void (*mllp_frame_cb)(mllp_req_t *req, buf_t *frame, void *user);

/* An oversized frame arrived: head holds its first keep_head bytes (valid
 * during the call), total its full size. The connection stays open; the
 * daemon answers req (typically an AR built from the MSH in head). */
typedef void (*mllp_oversized_cb)(mllp_req_t *req, buf_t *head, size_t total, void *user);

typedef struct {
    mllp_frame_cb frame;         /* required */
    mllp_oversized_cb oversized; /* NULL: the frame is answered with no reply */
} mllp_callbacks_t;

/* Listens on host:port (host numeric IPv4/IPv6, "localhost", or NULL/"*" for
 * all IPv4; port 0 picks a free port: see mllp_server_port). opts may be NULL
 * for defaults; callbacks is copied. Empty frames (0x0B 0x1C 0x0D) are counted
 * and ignored. On success *server is set. Errors: ERR_BAD_CONFIG (bad host,
 * port or missing frame callback), ERR_IO (bind/listen failed: detail names
 * why, e.g. address in use). On failure *server is NULL and the half-made
 * listener is released as the loop runs. */
err_t mllp_server_listen(uv_loop_t *loop, const char *host, int port, const mllp_opts_t *opts,
                         const mllp_callbacks_t *callbacks, void *user, mllp_server_t **server,
                         err_detail_t *detail);

/* The bound port (useful with port 0). */
int mllp_server_port(const mllp_server_t *s);

typedef void (*mllp_server_close_cb)(mllp_server_t *s, void *user);

/* Drain and close: stops accepting and reading, lets every reply still owed
 * be answered and written, closes each connection once it has drained (any
 * still open after drain_timeout_ms are closed hard, their reqs orphaned),
 * then calls cb (may be NULL) and frees s. s must not be used after cb. Reqs
 * still unanswered then stay valid until answered. */
void mllp_server_close(mllp_server_t *s, mllp_server_close_cb cb, void *user);

typedef struct {
    uint64_t conns_open, conns_total, conns_refused;
    uint64_t frames, oversized, empty_frames;
    uint64_t bytes_in, bytes_out, bytes_dropped; /* dropped: outside frames */
    uint64_t replies, no_replies, pending;       /* replies: frames sent (an enhanced-mode
                                                    answer can be two); pending: frames
                                                    awaiting reply/write now */
    uint64_t pauses, idle_closes, orphaned;
    uint64_t evicted; /* idle connections closed to admit one at max_connections */
    bool tls_on;      /* the listener speaks TLS: tls holds its counters */
    tls_stats_t tls;
} mllp_stats_t;

/* Swaps the certificates of a listener started with TLS (a reload): new
 * connections use ctx (a reference is taken), open ones keep theirs. */
void mllp_server_set_tls(mllp_server_t *s, tls_ctx_t *ctx);

/* Copies the counters for metrics. */
void mllp_server_stats(const mllp_server_t *s, mllp_stats_t *out);

/* Frames reply (0x0B reply 0x1C 0x0D, bytes are copied) and sends it once
 * every earlier frame of the same connection has been answered. If the
 * connection is gone the reply is dropped. Either way req is freed. */
void mllp_req_reply(mllp_req_t *req, const void *bytes, size_t len);

/* Like mllp_req_reply, with a second frame right after the first (an
 * enhanced-mode accept ACK followed by the application ACK): both are sent
 * as one write, in order, before any later reply of the connection. second
 * NULL sends the first alone. Either way req is freed. */
void mllp_req_reply2(mllp_req_t *req, const void *first, size_t first_len, const void *second,
                     size_t second_len);

/* Answers req with nothing on the wire (enhanced-mode NE, or a frame the
 * daemon chooses not to acknowledge); later replies are not held back. */
void mllp_req_reply_none(mllp_req_t *req);

/* The connection's id (unique per server, from 1) and peer "ip:port", for
 * log lines; valid until req is answered, even if the connection closed. */
uint64_t mllp_req_conn_id(const mllp_req_t *req);
const char *mllp_req_peer(const mllp_req_t *req);

/* True once the connection has gone: a reply would be dropped. */
bool mllp_req_orphaned(const mllp_req_t *req);

#endif
