/* out.h - delivery: one deliverer per destination drains that destination's
 * rows from the queue, in order, one message in flight, through a transport:
 * an MLLP client that waits for the downstream ACK, an HTTP client (libcurl
 * multi on the libuv loop) that POSTs FHIR resources, or a directory sink.
 *
 * A message is marked delivered only after the downstream accepted it (MSA-1
 * AA/CA, HTTP 2xx, file renamed into place and fsynced). What happens on a
 * failure depends on whose it is (the billing-outage policy):
 *  - a transport failure (refused, reset, timeout, HTTP 5xx/408/429) is
 *    retried with capped exponential backoff, forever unless max_tries is set;
 *  - an application reject (HL7 AE/AR/CE/CR, HTTP 4xx but 408/429) is the
 *    message's own: after reject_tries it is dead-lettered with the
 *    downstream's own error text and the next message goes on;
 *  - a local storage failure (the outbox folder, the dead-letter folder:
 *    ENOSPC, EIO) is retried with backoff however long it lasts and never
 *    dead-letters anything: when space returns delivery goes on, in order.
 * Dead-lettering writes the payload and a ".reason" note to dead_dir, each
 * fsynced with the folder; only then is the row marked dead, and the cursor
 * passes it only once that mark is committed. Log lines carry destination,
 * control id, attempt and reason; never payload content nor the
 * downstream's error text (it may quote the message).
 *
 * Delivery cursor: rows go out strictly in id order, up to the window at a
 * time, and the id of the last one accepted (or dead-lettered) is written
 * to the file "<queue path>.<dest>.cursor" before the next row is handed
 * to the transport, or at the end of the loop turn: once for all the ACKs
 * read together. A dead-lettered row's id is written only once its dead
 * mark is committed. The write is a pwrite() without fsync: it
 * survives kill -9 (the page cache), not a power loss. At start, pending rows
 * at or below the cursor are marked delivered and not sent again. So after
 * kill -9 only the messages in flight (sent, not yet confirmed) can arrive
 * twice; after a power loss the committed marks decide, and at most the mark
 * window more (with queue-sync=full; normal may lose the puts themselves).
 *
 * Ownership: out_start() produces an out_dest_t that out_stop() frees (after
 * its handles are closed); strings in out_dest_opts_t are copied. Everything
 * runs on the given loop's thread, as do the callbacks.
 *
 * Shutdown (SIGTERM): stop accepting input, out_stop() every deliverer, and
 * when all their callbacks have run, queue_close(); rows not yet delivered
 * stay in the queue for the next start.
 */
#ifndef SPINEGATE_OUT_H
#define SPINEGATE_OUT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "err.h"
#include "queue.h"
#include "tls.h"

typedef struct out_dest out_dest_t;

typedef enum {
    OUT_DIR = 0, /* write each message as a file into dir */
    OUT_MLLP,    /* MLLP client to host:port */
    OUT_HTTP,    /* HTTP POST to url */
} out_kind_t;

#define OUT_WINDOW_MAX 64 /* the largest downstream window */
/* The mark window on PostgreSQL: each group commit of marks waits for the
 * synchronous standby (1-3 ms on a LAN), and 64 marks per commit keep the
 * deliverer from waiting on it below some 20000 messages/s, while a crash
 * or a failover delivers at most 64 (one fetch) messages again, plus those
 * in flight. */
#define OUT_PG_MARK_WINDOW 64

typedef struct {
    const char *dest; /* queue destination drained, e.g. "hl7", "fhir", "reject" */
    out_kind_t kind;
    const char *host;         /* OUT_MLLP: name or address */
    unsigned port;            /* OUT_MLLP */
    const char *url;          /* OUT_HTTP: base URL; each message is POSTed to <url>/<resource> */
    const char *resource;     /* OUT_HTTP: NULL = "Claim" */
    const char *dir;          /* OUT_DIR: target folder, created if absent */
    const char *ext;          /* OUT_DIR: file extension; NULL = from the content type */
    bool no_fsync;            /* OUT_DIR and dead letters: skip fsync (tests, sync=normal) */
    const char *dead_dir;     /* dead-letter folder (created); NULL = dead rows only in the queue */
    unsigned max_tries;       /* transport failures before dead-letter; 0 = retry forever */
    unsigned reject_tries;    /* application rejects before dead-letter; 0 = 1 */
    unsigned backoff_base_ms; /* first retry delay, doubled each try; 0 = 500 */
    unsigned backoff_max_ms;  /* longest retry delay; 0 = 300000 */
    bool jitter;              /* draw each delay uniformly from [delay/2, delay] */
    unsigned connect_timeout_ms; /* 0 = 5000 */
    unsigned ack_timeout_ms;     /* MLLP ACK or whole HTTP exchange; 0 = 10000 */
    unsigned fetch_batch;        /* rows read from the queue at a time; 0 = 64 */
    unsigned window;             /* OUT_MLLP: messages in flight at once (sent, ACK
                                    awaited), 1 to OUT_WINDOW_MAX; 0 = 1. The others
                                    send one at a time. */
    unsigned mark_window;        /* at most this many delivered messages whose mark is not
                                    yet committed: what a power loss can deliver twice
                                    (besides the one in flight; kill -9 is covered by
                                    the cursor file); 0 = 32; 1 = none. With
                                    PostgreSQL (no cursor file) it bounds what a
                                    crash or a failover delivers twice; 0 =
                                    OUT_PG_MARK_WINDOW */
    tls_ctx_t *tls;              /* OUT_MLLP: speak TLS with this client context (a
                                    reference is taken); NULL = plaintext */
    const char *tls_server_name; /* OUT_MLLP: name the server's certificate must carry;
                                    NULL = host */
    const char *tls_ca;          /* OUT_HTTP https: CA bundle; NULL = the system's */
    const char *tls_cert;        /* OUT_HTTP https: client certificate and its key */
    const char *tls_key;
    int tls_min_version;         /* OUT_HTTP https: 12 or 13; 0 = 12 */
} out_dest_opts_t;

typedef struct {
    uint64_t delivered;   /* accepted downstream since start */
    uint64_t retries;     /* failed attempts that were retried */
    uint64_t dead;        /* dead-lettered */
    uint64_t skipped;     /* pending at start but at or below the cursor: delivered
                             before a crash, marked delivered, not sent again */
    unsigned inflight;    /* messages being sent (up to the window) or waiting for a retry */
    unsigned attempts;    /* attempts made for the current message */
    bool connected;       /* MLLP: a connection is open */
    int64_t last_ok_ms;   /* wall clock of the last delivery; 0 = none */
    char last_error[128]; /* reason of the last failure; "" = none */
    int64_t failing_since_ms; /* wall clock of the first failure of the message now
                                 at the head; 0 = not failing */
    int64_t oldest_ms;        /* created_ms of the oldest message held (being sent or
                                 fetched); 0 = none */
    uint64_t rejects;         /* application rejects received from downstream */
    uint64_t storage_errors;  /* local writes that failed (outbox, dead letter, cursor) */
    bool storage_failing;     /* the head message waits on a local storage fault */
} out_stats_t;

/* Called by out_stop() once the deliverer is stopped and freed. */
typedef void (*out_stop_cb)(void *user);

/* Starts the deliverer of opts->dest: opens a queue reader for it and begins
 * sending what is pending. The queue must outlive it (stop it first).
 * Errors: ERR_BAD_CONFIG (missing host/port/url/dir, bad name, unknown kind,
 * a folder that cannot be created, a libcurl init failure), ERR_IO (the
 * cursor file cannot be opened or read), ERR_BUSY (a deliverer for dest
 * already runs), ERR_CLOSED or ERR_QUEUE (from the queue).
 * With a dead-letter folder, dest's dead rows that only the queue holds are
 * reviewed first (queue_dead_review): those whose dead-letter file is absent
 * (left so by older versions on a full disk) are pending again, behind the
 * pending ones; those whose file exists become dead-lettered.
 * A cursor file that fails its check, that was written for another database
 * (queue_instance: the queue was deleted and created again) or that is ahead
 * of every id the queue ever allocated (a restored or rolled-back database) is
 * ignored and reset, with a warning.
 * *out is NULL on error. */
err_t out_start(uv_loop_t *loop, queue_t *q, const out_dest_opts_t *opts, out_dest_t **out,
                err_detail_t *d);

/* Fills *st with the deliverer's figures. */
void out_stats(const out_dest_t *d, out_stats_t *st);

/* Stops taking new rows. A message being sent is allowed to finish (bounded by
 * ack_timeout_ms) and its outcome recorded; one waiting for a retry is left
 * pending in the queue. Then the handles close, cb runs and d is freed.
 * Accepts NULL (cb is still called). */
void out_stop(out_dest_t *d, out_stop_cb cb, void *user);

/* New certificates for an MLLP deliverer started with TLS (a reload): the
 * next connection uses ctx (a reference is taken); one open now keeps its
 * session. */
void out_set_tls(out_dest_t *d, tls_ctx_t *ctx);

#endif
