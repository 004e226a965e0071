/* daemon.h - the spinegate server: one libuv loop holding the listeners, the
 * durable queue, the deliverers, the loaded rule pack and the metrics. main()
 * only parses the command line and calls daemon_run().
 *
 * Ownership: the daemon owns everything it starts; the config is copied in.
 * The rule pack is reference-counted (daemon_pack_t) because a reload can
 * swap it while messages judged by the old one still wait for their commit
 * and their findings point into it.
 */
#ifndef SPINEGATE_DAEMON_H
#define SPINEGATE_DAEMON_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <uv.h>

#include "auth.h"
#include "config.h"
#include "dest.h"
#include "gate.h"
#include "hl7.h"
#include "lanes.h"
#include "http.h"
#include "metrics.h"
#include "mllp.h"
#include "notify.h"
#include "out.h"
#include "queue.h"
#include "rules.h"
#include "tls.h"
#include "worklist.h"

typedef struct {
    rule_pack_t *pack;
    unsigned refs;
} daemon_pack_t;

typedef struct daemon_job daemon_job_t;
typedef struct web web_t;
typedef struct adminsock adminsock_t;

/* The TLS contexts the daemon may hold, one per use. */
typedef enum {
    DAEMON_TLS_MLLP,
    DAEMON_TLS_HTTP,
    DAEMON_TLS_DOWNSTREAM, /* downstream-mllp and reject-mllp */
    DAEMON_TLS_ADMIN,      /* listen-admin, the worklist web page */
    DAEMON_TLS__COUNT
} daemon_tls_use_t;

/* Messages up to this size are judged on the loop thread when nothing of
 * their connection is in flight: at a few hundred diagnoses at most, judging
 * takes about a millisecond, less than the round trip to the pool costs an
 * ordinary message in throughput. Larger ones go to the pool. */
#define DAEMON_JUDGE_INLINE_MAX (16 * 1024)

/* Lane keys: a connection id with its listener in the top bits. */
#define DAEMON_LANE_MLLP ((uint64_t)1 << 62)
#define DAEMON_LANE_HTTP ((uint64_t)2 << 62)

typedef struct daemon {
    uv_loop_t *loop;
    config_t cfg;
    int argc;                /* the command line, read again on SIGHUP */
    char *const *argv;
    daemon_pack_t *pack;
    auth_tokens_t *tokens;   /* http-tokens; NULL without the setting (swapped on SIGHUP) */
    queue_t *queue;
    mllp_server_t *mllp;
    http_server_t *http;
    http_server_t *admin;    /* listen-admin: the worklist web page; NULL when off */
    struct web *web;         /* its sessions and worklist connection */
    adminsock_t *adminsock;  /* spinegate-admin's socket; NULL when there is none */
    out_dest_t *out[DEST_COUNT]; /* by dest_t */
    metrics_t metrics;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t retry_timer;  /* retries puts refused while the queue was full */
    daemon_job_t *waiting_head, *waiting_tail;
    hl7_opts_t hl7_opts;
    gate_limits_t gate_limits; /* max-diagnoses, the longest id the queue stores */
    ingest_budget_t *budget;   /* max-buffered-bytes, shared by both listeners */
    lanes_t *lanes;            /* judging on the thread pool, a lane per connection */
    bool stop_after_lanes;     /* listeners closed: stop once the lanes are idle */
    notify_t *notify;          /* systemd watchdog while running; NULL without one */
    tls_ctx_t *tls[DAEMON_TLS__COUNT]; /* NULL: that use is plaintext */
    uv_timer_t tls_timer;              /* the daily certificate expiry check */
    uint64_t tls_reloads_ok, tls_reloads_failed;
    uint64_t ack_seq;        /* for the control ids of our ACKs */
    struct mllp_job *mllp_spares; /* freed MLLP jobs kept for reuse (serve_mllp.c) */
    unsigned mllp_nspares;
    uint64_t start_ms;
    int stopping;
    unsigned listeners_open, outs_running; /* stages of the shutdown still running */
    int exit_code;
    char outbox_dir[4096], reject_dir[4096], dead_dir[4096], queue_path[4096];
} daemon_t;

/* Runs the daemon with cfg (read from argc/argv, which SIGHUP reads again)
 * until SIGTERM/SIGINT. Takes over cfg's strings. Returns the exit status. */
int daemon_run(const config_t *cfg, int argc, char *const *argv);

/* Takes / drops a reference to the current pack. */
daemon_pack_t *daemon_pack_ref(daemon_t *d);
void daemon_pack_unref(daemon_pack_t *p);

/* Loads a rule pack with the settings of cfg. Errors as rule_pack_load(). */
err_t daemon_pack_load(const config_t *cfg, rule_pack_t **out, err_detail_t *e);

/* TLS (daemon_tls.c). daemon_tls_start builds the contexts the settings ask
 * for (ERR_BAD_CONFIG, logged, when a file is broken) and starts the daily
 * expiry check; daemon_tls_reload rebuilds them from fresh on SIGHUP and
 * hands them to the listeners and deliverers, keeping the running ones when
 * a file is broken; daemon_tls_stop closes the timer, daemon_tls_free drops
 * the contexts after the loop has ended. daemon_tls_metrics appends the TLS
 * series of /metrics; daemon_tls_expiring counts certificates that expire
 * within 30 days. */
err_t daemon_tls_start(daemon_t *d);
void daemon_tls_reload(daemon_t *d, const config_t *fresh);
void daemon_tls_stop(daemon_t *d);
void daemon_tls_free(daemon_t *d);
void daemon_tls_metrics(daemon_t *d, char *buf, size_t cap, size_t *off);
int daemon_tls_expiring(const daemon_t *d);

/* Writes an ACK/HL7 timestamp (YYYYMMDDHHMMSS+0000) of now into out (>= 20 bytes). */
void daemon_hl7_timestamp(char *out, size_t cap);

/* The MLLP and HTTP sides (serve_mllp.c, serve_http.c). */
void serve_mllp_frame(mllp_req_t *req, buf_t *frame, void *user);
void serve_mllp_oversized(mllp_req_t *req, buf_t *head, size_t total, void *user);
void serve_mllp_free_spares(daemon_t *d); /* once the loop has ended */
void serve_http_request(http_req_t *req, void *user);
size_t serve_http_error(const http_req_t *req, int status, const char *why, char *out, size_t cap,
                        const char **content_type, void *user);

/* Adds each destination's {"state", "since", "failing_s", "oldest_age_s",
 * "depth", "last_error"} to dl (serve_http.c); false when one has failed
 * longer than unready-after. */
bool daemon_destinations_json(daemon_t *d, cJSON *dl);

/* Opens a connection of its own to the worklist of the daemon's queue: the
 * SQLite file of the data folder, or with queue = postgres the database of
 * queue-url, shared by every instance (worklist.h). Blocks (a start-up
 * step, like queue_open); the worklist's calls are made off the loop. */
err_t daemon_worklist_open(const daemon_t *d, worklist_t **out, err_detail_t *e);

/* The worklist web page (web.c, listen-admin): web_listen starts it on the
 * daemon's loop; web_close drains it, then done runs; web_free after the loop. */
err_t web_listen(daemon_t *d);
void web_close(daemon_t *d, http_server_close_cb done);
void web_free(daemon_t *d);

/* Ends the lockout of account name (spinegate-admin user unlock, through
 * the admin socket; who asked is audited): 1 it was locked, 0 it was not,
 * -1 the web page is off. */
int web_unlock(daemon_t *d, const char *name, const char *who);

/* The admin socket DATA-DIR/admin.sock (adminsock.c): spinegate-admin's
 * commands run by the daemon. adminsock_listen replaces a socket left by a
 * daemon that died and refuses to start beside one that answers;
 * adminsock_close stops listening and removes the socket (commands already
 * running finish); adminsock_free after the loop. */
err_t adminsock_listen(daemon_t *d);
void adminsock_close(daemon_t *d);
void adminsock_free(daemon_t *d);

/* Puts that the queue refused as full wait here, in arrival order, and are
 * retried by a timer; the connection they came from is not read meanwhile
 * (its replies are pending), which is the backpressure. */
typedef void (*daemon_put_done_cb)(daemon_t *d, void *job, err_t status);
/* True when nobody waits for job's answer any more (the sender left): a put
 * still waiting for queue space is then dropped, done with ERR_CLOSED, so
 * that what it holds is freed (it was never acknowledged). May be NULL. */
typedef bool (*daemon_put_gone_cb)(void *job);
void daemon_put(daemon_t *d, const queue_item_t *item, daemon_put_done_cb cb,
                daemon_put_gone_cb gone, void *job);

/* The same for a group stored all or none (queue_put_many): cb runs once
 * with one status for all n. items and what they point to are borrowed until
 * cb runs (a group waiting for queue space keeps them). When an item is
 * refused (ERR_BAD_VALUE, ERR_EMPTY, ERR_TOO_LARGE), *refused (when not
 * NULL) is its index by the time cb runs. */
void daemon_put_many(daemon_t *d, const queue_item_t *items, size_t n, size_t *refused,
                     daemon_put_done_cb cb, void *job);

#endif
