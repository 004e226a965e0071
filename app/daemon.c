/* daemon.c - start, run and stop the server: data folders, the queue, the
 * deliverers, the listeners, signals (SIGTERM drains, SIGHUP reloads the
 * rule pack and the http-tokens) and the put-retry list that turns a full
 * queue into backpressure on the senders. */
#include "daemon.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "log.h"
#include "xmalloc.h"

/* ---------------------------------------------------------------- rule pack */

err_t daemon_pack_load(const config_t *cfg, rule_pack_t **out, err_detail_t *e)
{
    rule_policy_t policy;
    config_rule_policy(cfg, &policy);
    return rule_pack_load(cfg->rules_path, cfg->tables_path, &policy, out, e);
}

daemon_pack_t *daemon_pack_ref(daemon_t *d)
{
    d->pack->refs++;
    return d->pack;
}

void daemon_pack_unref(daemon_pack_t *p)
{
    if (p && --p->refs == 0) {
        rule_pack_free(p->pack);
        xfree(p);
    }
}

static void pack_install(daemon_t *d, rule_pack_t *pack)
{
    daemon_pack_t *p = xcalloc(1, sizeof *p);
    p->pack = pack;
    p->refs = 1;
    daemon_pack_unref(d->pack);
    d->pack = p;
}

/* SIGHUP: read the command line and its config file again, build a new pack
 * from the rule settings (rules, tables, advisory, severity, adt), and swap it in
 * only if everything loaded. Other settings need a restart; connections are
 * not touched. */
static void reload(daemon_t *d)
{
    config_t fresh;
    args_t a;
    err_detail_t e;
    rule_pack_t *pack = NULL;
    if (args_parse(d->argc, d->argv, &fresh, &a, &e) != 0 ||
        config_validate(&fresh, &e) != ERR_OK) {
        log_error("reload failed, keeping the running rule pack and certificates: %s", e.msg);
    } else if (daemon_tls_reload(d, &fresh), daemon_pack_load(&fresh, &pack, &e) != ERR_OK) {
        log_error("reload failed, keeping the running rule pack: %s%s%s", e.where,
                  e.where[0] ? ": " : "", e.msg);
    } else {
        /* Adopt the rule settings; the old strings go with `fresh`. */
        char *swap;
        swap = d->cfg.rules_path, d->cfg.rules_path = fresh.rules_path, fresh.rules_path = swap;
        swap = d->cfg.tables_path, d->cfg.tables_path = fresh.tables_path, fresh.tables_path = swap;
        swap = d->cfg.adt, d->cfg.adt = fresh.adt, fresh.adt = swap;
        d->cfg.advisory = fresh.advisory;
        for (int i = 0; i <= CONFIG_MAX_OVERRIDES; i++) {
            swap = d->cfg.severity[i], d->cfg.severity[i] = fresh.severity[i];
            fresh.severity[i] = swap;
        }
        int n = d->cfg.nseverity;
        d->cfg.nseverity = fresh.nseverity;
        fresh.nseverity = n;
        pack_install(d, pack);
        d->metrics.reloads_ok++;
        log_info("reloaded: %s%s, adt=%s", rule_pack_describe(pack),
                 d->cfg.advisory ? " (advisory)" : "", d->cfg.adt);
        config_free(&fresh);
        return;
    }
    d->metrics.reloads_failed++;
    config_free(&fresh);
}

/* SIGHUP: the tokens file is read again on its own, so that a broken rule
 * pack does not hold back a revoked token, nor a broken tokens file a new
 * pack. The file named at start is read; a broken one keeps the running set. */
static void reload_tokens(daemon_t *d)
{
    if (!d->cfg.http_tokens)
        return;
    auth_tokens_t *t;
    err_detail_t e;
    if (auth_tokens_load(d->cfg.http_tokens, &t, &e) != ERR_OK) {
        log_error("reload of http-tokens failed, keeping the %zu running tokens: %s",
                  auth_tokens_count(d->tokens), e.msg);
        d->metrics.token_reloads_failed++;
        return;
    }
    auth_tokens_free(d->tokens);
    d->tokens = t;
    d->metrics.token_reloads_ok++;
    log_info("reloaded http-tokens: %zu tokens from %s", auth_tokens_count(t), d->cfg.http_tokens);
}

/* ---------------------------------------------------------------- put retry */

struct daemon_job {
    daemon_job_t *next;
    daemon_t *d;
    queue_item_t item;         /* a single put */
    const queue_item_t *items; /* a group (borrowed until cb); NULL for a single put */
    size_t nitems;
    size_t *refused;
    daemon_put_done_cb cb;
    daemon_put_gone_cb gone;
    void *job;
};

static void retry_puts(uv_timer_t *t);

static void put_cb(queue_t *q, err_t status, int64_t id, void *user)
{
    (void)q;
    (void)id;
    daemon_job_t *w = user;
    w->cb(w->d, w->job, status);
    xfree(w);
}

static void put_many_cb(queue_t *q, err_t status, const int64_t *ids, size_t n, void *user)
{
    (void)ids;
    (void)n;
    put_cb(q, status, 0, user);
}

static err_t job_put(daemon_t *d, daemon_job_t *w)
{
    if (w->items)
        return queue_put_many(d->queue, w->items, w->nitems, put_many_cb, w, w->refused);
    return queue_put(d->queue, &w->item, put_cb, w);
}

static void job_submit(daemon_t *d, daemon_job_t *w)
{
    if (d->waiting_head) { /* keep arrival order behind those already waiting */
        d->waiting_tail->next = w;
        d->waiting_tail = w;
        return;
    }
    err_t rc = job_put(d, w);
    if (rc == ERR_OK)
        return;
    if (rc == ERR_BUSY) {
        d->waiting_head = d->waiting_tail = w;
        if (!uv_is_active((uv_handle_t *)&d->retry_timer))
            uv_timer_start(&d->retry_timer, retry_puts, 5, 5);
        return;
    }
    daemon_put_done_cb cb = w->cb;
    void *job = w->job;
    xfree(w);
    cb(d, job, rc);
}

void daemon_put(daemon_t *d, const queue_item_t *item, daemon_put_done_cb cb,
                daemon_put_gone_cb gone, void *job)
{
    daemon_job_t *w = xcalloc(1, sizeof *w);
    w->d = d;
    w->item = *item;
    w->cb = cb;
    w->gone = gone;
    w->job = job;
    job_submit(d, w);
}

void daemon_put_many(daemon_t *d, const queue_item_t *items, size_t n, size_t *refused,
                     daemon_put_done_cb cb, void *job)
{
    daemon_job_t *w = xcalloc(1, sizeof *w);
    w->d = d;
    w->items = items;
    w->nitems = n;
    w->refused = refused;
    w->cb = cb;
    w->job = job;
    job_submit(d, w);
}

/* Drops the waiting puts whose sender has left: nothing was promised to
 * them, and each holds a whole message. */
static void drop_gone_puts(daemon_t *d)
{
    daemon_job_t **pp = &d->waiting_head, *prev = NULL;
    while (*pp) {
        daemon_job_t *w = *pp;
        if (!w->gone || !w->gone(w->job)) {
            prev = w;
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        if (d->waiting_tail == w)
            d->waiting_tail = prev;
        w->cb(d, w->job, ERR_CLOSED);
        xfree(w);
    }
}

static void retry_puts(uv_timer_t *t)
{
    daemon_t *d = t->data;
    drop_gone_puts(d);
    while (d->waiting_head) {
        daemon_job_t *w = d->waiting_head;
        err_t rc = job_put(d, w);
        if (rc == ERR_BUSY)
            return;
        d->waiting_head = w->next;
        if (!d->waiting_head)
            d->waiting_tail = NULL;
        w->next = NULL;
        if (rc != ERR_OK) {
            w->cb(d, w->job, rc);
            xfree(w);
        }
    }
    uv_timer_stop(t);
}

/* ---------------------------------------------------------------- helpers */

void daemon_hl7_timestamp(char *out, size_t cap)
{
    /* Every ACK has one: gmtime_r and strftime once a second a thread. */
    static _Thread_local time_t last = (time_t)-1;
    static _Thread_local char text[32];
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(text, sizeof text, "%Y%m%d%H%M%S+0000", &tm);
        last = now;
    }
    size_t n = strlen(text);
    if (!cap)
        return;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, text, n);
    out[n] = '\0';
}

/* Creates path and its missing parents. Parents are made 0755 (they may be
 * shared, such as /var/lib); the folder itself 0700. */
static int mkdir_p(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Everything under the data folder is PHI: folders 0700, files 0600. What a
 * looser umask or an older version left is tightened here, with a warning
 * naming the first thing found (the operator should know the data was open). */
static void tighten(const char *path, bool *warned)
{
    struct stat st;
    if (lstat(path, &st) != 0 || !(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)))
        return; /* symlinks and others are not followed nor changed */
    mode_t want = S_ISDIR(st.st_mode) ? 0700 : 0600;
    if ((st.st_mode & 0777 & ~want) == 0)
        return;
    if (!*warned) {
        log_warn("data folder: %s was mode %04o, readable by others: made %04o (and so is every "
                 "file in the folder)",
                 path, (unsigned)(st.st_mode & 07777), (unsigned)want);
        *warned = true;
    }
    if (chmod(path, want) != 0)
        log_warn("cannot change the mode of %s: %s", path, strerror(errno));
}

/* Tightens dir and each entry in it (one level; the data folder's folders
 * hold files only). */
static void tighten_dir(const char *dir, bool *warned)
{
    tighten(dir, warned);
    DIR *dp = opendir(dir);
    if (!dp)
        return;
    struct dirent *e;
    char p[4096 + 256];
    while ((e = readdir(dp)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        tighten(p, warned);
    }
    closedir(dp);
}

static int prepare_dirs(daemon_t *d)
{
    const char *base = d->cfg.data_dir;
    snprintf(d->outbox_dir, sizeof d->outbox_dir, "%s/outbox", base);
    snprintf(d->reject_dir, sizeof d->reject_dir, "%s/reject", base);
    snprintf(d->dead_dir, sizeof d->dead_dir, "%s/deadletter", base);
    snprintf(d->queue_path, sizeof d->queue_path, "%s/queue.db", base);
    const char *dirs[] = {base, d->outbox_dir, d->reject_dir, d->dead_dir};
    bool warned = false;
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        if (mkdir_p(dirs[i]) != 0) {
            log_error("cannot create %s: %s", dirs[i], strerror(errno));
            return -1;
        }
        tighten_dir(dirs[i], &warned);
    }
    return 0;
}

static err_t start_out(daemon_t *d, dest_t dest, out_kind_t kind, const config_addr_t *addr,
                       const char *url, const char *dir)
{
    out_dest_opts_t o = {
        .dest = dest_name(dest),
        .kind = kind,
        .host = addr ? addr->host : NULL,
        .port = addr ? (unsigned)addr->port : 0,
        .url = url,
        .dir = dir,
        .no_fsync = d->cfg.sync == CONFIG_SYNC_NORMAL,
        .dead_dir = d->dead_dir,
        .max_tries = (unsigned)d->cfg.retry_max,
        .reject_tries = (unsigned)d->cfg.reject_retries,
        .backoff_base_ms = (unsigned)d->cfg.retry_base_ms,
        .backoff_max_ms = (unsigned)d->cfg.retry_max_delay_ms,
        .jitter = true,
        .ack_timeout_ms = (unsigned)d->cfg.ack_timeout_ms,
        .window = kind == OUT_MLLP ? (unsigned)d->cfg.downstream_window : 1,
        .tls = kind == OUT_MLLP ? d->tls[DAEMON_TLS_DOWNSTREAM] : NULL,
        .tls_server_name = d->cfg.downstream_tls_server_name,
        .tls_ca = d->cfg.downstream_tls_ca,
        .tls_cert = d->cfg.downstream_tls_cert,
        .tls_key = d->cfg.downstream_tls_key,
        .tls_min_version = d->cfg.tls_min,
    };
    err_detail_t e;
    err_clear(&e);
    err_t rc = out_start(d->loop, d->queue, &o, &d->out[dest], &e);
    char target[512];
    if (kind == OUT_MLLP)
        snprintf(target, sizeof target, "MLLP%s %s:%d", o.tls ? " over TLS" : "", addr->host,
                 addr->port);
    else
        snprintf(target, sizeof target, "%s", kind == OUT_HTTP ? url : dir);
    if (rc != ERR_OK)
        log_error("delivery %s -> %s cannot start: %s", o.dest, target, e.msg[0] ? e.msg : err_str(rc));
    return rc;
}

static err_t start_delivery(daemon_t *d)
{
    const config_t *c = &d->cfg;
    err_t rc;
    if (c->downstream_mllp.port)
        rc = start_out(d, DEST_HL7, OUT_MLLP, &c->downstream_mllp, NULL, NULL);
    else
        rc = start_out(d, DEST_HL7, OUT_DIR, NULL, NULL, d->outbox_dir);
    if (rc != ERR_OK)
        return rc;
    if (c->downstream_fhir)
        rc = start_out(d, DEST_FHIR, OUT_HTTP, NULL, c->downstream_fhir, NULL);
    else
        rc = start_out(d, DEST_FHIR, OUT_DIR, NULL, NULL, d->outbox_dir);
    if (rc != ERR_OK)
        return rc;
    if (c->reject_mllp.port)
        rc = start_out(d, DEST_REJECT_HL7, OUT_MLLP, &c->reject_mllp, NULL, NULL);
    else
        rc = start_out(d, DEST_REJECT_HL7, OUT_DIR, NULL, NULL, d->reject_dir);
    if (rc != ERR_OK)
        return rc;
    return start_out(d, DEST_REJECT_FHIR, OUT_DIR, NULL, NULL, d->reject_dir);
}

static err_t start_listeners(daemon_t *d)
{
    const config_t *c = &d->cfg;
    err_detail_t e;
    err_clear(&e);
    if (adminsock_listen(d) != ERR_OK)
        return ERR_IO;
    if (c->listen_mllp.port) {
        mllp_opts_t o;
        mllp_opts_default(&o);
        o.max_message = (size_t)c->max_message_size;
        o.max_connections = (unsigned)c->max_connections;
        o.idle_timeout_ms = (unsigned)c->idle_timeout_ms;
        o.budget = d->budget;
        o.tls = d->tls[DAEMON_TLS_MLLP];
        o.tls_handshake_timeout_ms = (unsigned)c->tls_handshake_timeout_ms;
        mllp_callbacks_t cb = {.frame = serve_mllp_frame, .oversized = serve_mllp_oversized};
        if (mllp_server_listen(d->loop, c->listen_mllp.host, c->listen_mllp.port, &o, &cb, d,
                               &d->mllp, &e) != ERR_OK) {
            log_error("MLLP listener %s:%d: %s", c->listen_mllp.host, c->listen_mllp.port, e.msg);
            return ERR_IO;
        }
    }
    if (c->listen_http.port) {
        http_opts_t o;
        http_opts_default(&o);
        o.max_body = (size_t)c->max_body_size;
        o.max_connections = (unsigned)c->max_connections;
        o.idle_timeout_ms = (unsigned)c->idle_timeout_ms;
        o.header_timeout_ms = (unsigned)c->header_timeout_ms;
        o.body_timeout_ms = (unsigned)c->body_timeout_ms;
        o.budget = d->budget;
        o.tls = d->tls[DAEMON_TLS_HTTP];
        o.tls_handshake_timeout_ms = (unsigned)c->tls_handshake_timeout_ms;
        http_callbacks_t cb = {.request = serve_http_request, .error = serve_http_error};
        if (http_server_listen(d->loop, c->listen_http.host, c->listen_http.port, &o, &cb, d,
                               &d->http, &e) != ERR_OK) {
            log_error("HTTP listener %s:%d: %s", c->listen_http.host, c->listen_http.port, e.msg);
            return ERR_IO;
        }
    }
    if (c->listen_admin.port && web_listen(d) != ERR_OK)
        return ERR_IO;
    return ERR_OK;
}

/* ---------------------------------------------------------------- queue marker */

/* A used data folder keeps "queue.instance": the identity (queue_instance) of
 * the queue database it holds, written once that database is open. A queue
 * file that is missing or empty, or another database, beside that marker
 * means acknowledged messages waiting in it are gone (deleted, truncated,
 * replaced while stopped): the daemon refuses to start rather than carry on
 * silently empty, unless accept-empty-queue says the operator knows. */
static void marker_path(const daemon_t *d, char *buf, size_t n)
{
    snprintf(buf, n, "%s/queue.instance", d->cfg.data_dir);
}

/* Reads the marker: 1 with *inst, 0 when there is none, -1 when unreadable. */
static int marker_read(const daemon_t *d, int64_t *inst)
{
    char path[4200], buf[64];
    marker_path(d, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? 0 : -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (end == buf || errno || (*end && *end != '\n'))
        return -1;
    *inst = (int64_t)v;
    return 1;
}

/* Writes the marker through a temp file, fsync, rename, folder fsync. */
static int marker_write(const daemon_t *d, int64_t inst)
{
    char path[4200], tmp[4300], buf[32];
    marker_path(d, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int n = snprintf(buf, sizeof buf, "%" PRId64 "\n", inst);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno;
    int en = 0;
    if (write(fd, buf, (size_t)n) != n)
        en = errno ? errno : EIO;
    if (!en && fsync(fd) != 0)
        en = errno;
    if (close(fd) != 0 && !en)
        en = errno;
    if (!en && rename(tmp, path) != 0)
        en = errno;
    if (en) {
        unlink(tmp);
        return en;
    }
    int dfd = open(d->cfg.data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) != 0)
            en = errno;
        close(dfd);
    }
    return en;
}

static bool daemon_queue_is_pg(const daemon_t *d)
{
    return strcmp(d->cfg.queue_backend, "postgres") == 0;
}

err_t daemon_worklist_open(const daemon_t *d, worklist_t **out, err_detail_t *e)
{
    if (daemon_queue_is_pg(d))
        return worklist_open_pg(d->cfg.queue_url, out, e);
    return worklist_open(d->queue_path, out, e);
}

/* Before queue_open: a marker with no queue file, or an empty one. */
static int queue_guard_before(daemon_t *d)
{
    if (daemon_queue_is_pg(d))
        return 0; /* the database is the server's to keep, not a file here */
    int64_t inst;
    int m = marker_read(d, &inst);
    if (m < 0) {
        log_error("queue marker %s/queue.instance is unreadable: %s", d->cfg.data_dir,
                  strerror(errno));
        return -1;
    }
    if (m == 0)
        return 0;
    struct stat st;
    const char *what = stat(d->queue_path, &st) != 0 ? "missing" : st.st_size == 0 ? "empty" : NULL;
    if (!what)
        return 0;
    if (!d->cfg.accept_empty_queue) {
        log_error("queue %s is %s, but this data folder had a queue (queue.instance): the "
                  "messages waiting in it are gone. Restore it from a backup, or start with "
                  "--accept-empty-queue to begin with an empty queue",
                  d->queue_path, what);
        return -1;
    }
    log_warn("queue %s is %s in a used data folder: starting empty (accept-empty-queue)",
             d->queue_path, what);
    return 0;
}

/* After queue_open: the database must be the one the marker names; then the
 * marker is (re)written. */
static int queue_guard_after(daemon_t *d)
{
    if (daemon_queue_is_pg(d))
        return 0;
    int64_t inst = 0, now = queue_instance(d->queue);
    int m = marker_read(d, &inst);
    if (m == 1 && inst == now)
        return 0;
    if (m == 1 && !d->cfg.accept_empty_queue) {
        log_error("queue %s is not the database this data folder had (queue.instance differs): "
                  "the messages waiting in it are gone. Restore it from a backup, or start with "
                  "--accept-empty-queue to go on with this one",
                  d->queue_path);
        return -1;
    }
    int en = marker_write(d, now);
    if (en) {
        log_error("cannot write the queue marker %s/queue.instance: %s", d->cfg.data_dir,
                  strerror(en));
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- shutdown */

/* Shutdown runs in stages so that nothing acknowledged is lost: listeners
 * drain (every owed answer is written, which waits for the commits behind
 * it), then the deliverers stop, then the queue closes after its last
 * commit, then the loop runs out of handles. */
static void close_queue_done(void *user)
{
    daemon_t *d = user;
    d->queue = NULL;
    uv_close((uv_handle_t *)&d->retry_timer, NULL);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    daemon_tls_stop(d);
    log_info("stopped");
}

static void out_stopped(void *user)
{
    daemon_t *d = user;
    if (--d->outs_running == 0)
        queue_close(d->queue, close_queue_done, d);
}

static void stop_delivery(daemon_t *d)
{
    d->outs_running = 1; /* held until every stop is issued */
    for (size_t i = 0; i < DEST_COUNT; i++)
        if (d->out[i]) {
            d->outs_running++;
            out_stop(d->out[i], out_stopped, d);
            d->out[i] = NULL;
        }
    out_stopped(d);
}

/* Every listener has closed and no message is still being judged. */
static void listeners_done(daemon_t *d)
{
    /* Puts still waiting for queue space would never be answered now that
     * senders are gone; they were never acknowledged, so dropping them loses
     * nothing that was promised. */
    while (d->waiting_head) {
        daemon_job_t *w = d->waiting_head;
        d->waiting_head = w->next;
        w->cb(d, w->job, ERR_CLOSED);
        xfree(w);
    }
    d->waiting_tail = NULL;
    stop_delivery(d);
}

static void listener_closed(daemon_t *d)
{
    if (--d->listeners_open)
        return;
    /* A message still on the pool is owed an answer: its store must reach
     * the queue before the queue closes. */
    if (lanes_busy(d->lanes))
        d->stop_after_lanes = true;
    else
        listeners_done(d);
}

static void lanes_idle(lanes_t *ls, void *user)
{
    (void)ls;
    daemon_t *d = user;
    if (d->stop_after_lanes) {
        d->stop_after_lanes = false;
        listeners_done(d);
    }
}

static void mllp_closed(mllp_server_t *s, void *user)
{
    (void)s;
    daemon_t *d = user;
    d->mllp = NULL;
    listener_closed(d);
}

static void http_closed(http_server_t *s, void *user)
{
    (void)s;
    daemon_t *d = user;
    d->http = NULL;
    listener_closed(d);
}

static void admin_closed(http_server_t *s, void *user)
{
    (void)s;
    daemon_t *d = user;
    d->admin = NULL;
    listener_closed(d);
}

static void begin_stop(daemon_t *d, const char *why)
{
    if (d->stopping++)
        return;
    log_info("%s: draining and stopping", why);
    notify_stopping(d->notify);
    d->notify = NULL;
    uv_signal_stop(&d->sig_hup);
    adminsock_close(d);
    d->listeners_open = 1; /* held until every close is issued */
    if (d->mllp) {
        d->listeners_open++;
        mllp_server_close(d->mllp, mllp_closed, d);
    }
    if (d->http) {
        d->listeners_open++;
        http_server_close(d->http, http_closed, d);
    }
    if (d->admin) {
        d->listeners_open++;
        web_close(d, admin_closed);
    }
    listener_closed(d);
}

static void on_signal(uv_signal_t *h, int signum)
{
    daemon_t *d = h->data;
    if (signum == SIGHUP) {
        reload(d);
        reload_tokens(d);
    } else {
        begin_stop(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
    }
}

/* ---------------------------------------------------------------- run */

static void write_pid_file(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        log_warn("cannot write pid file %s: %s", path, strerror(errno));
        return;
    }
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
}

int daemon_run(const config_t *cfg, int argc, char *const *argv)
{
    /* The tokens first: a broken file stops the start before anything
     * else is made. */
    auth_tokens_t *tokens = NULL;
    if (cfg->http_tokens) {
        err_detail_t te;
        if (auth_tokens_load(cfg->http_tokens, &tokens, &te) != ERR_OK) {
            log_error("http-tokens: %s", te.msg);
            config_t owned = *cfg;
            config_free(&owned);
            return 1;
        }
    }
    daemon_t *d = xcalloc(1, sizeof *d);
    d->tokens = tokens;
    d->cfg = *cfg; /* takes over cfg's strings */
    d->argc = argc;
    d->argv = argv;
    d->exit_code = 0;
    lanes_size_pool(0);
    d->loop = xmalloc(sizeof *d->loop);
    uv_loop_init(d->loop);
    d->lanes = lanes_new(d->loop, 0, lanes_idle, d);
    metrics_init(&d->metrics);
    d->hl7_opts.max_size = (size_t)cfg->max_message_size;
    d->gate_limits.max_diagnoses = (size_t)cfg->max_diagnoses;
    d->gate_limits.max_id = QUEUE_CONTROL_ID_MAX;
    d->start_ms = uv_now(d->loop);
    signal(SIGPIPE, SIG_IGN);
    /* SIGUSR1 and SIGUSR2 mean nothing here: ignored, so that a stray one
     * (a log rotator's habit) does not kill the daemon. */
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
    /* Messages are PHI: whatever the caller's umask, every file the daemon
     * or SQLite creates (queue, WAL, shared memory, outbox, reject, dead
     * letters, cursors, pid file) is the owner's only. */
    umask(077);
#ifdef __GLIBC__
    /* Frames and bodies of megabytes come and go: a fixed mmap threshold
     * keeps glibc from raising it after the first free (up to 32 MB), so
     * such buffers are mapped and unmapped, and the memory goes back to the
     * system when the senders leave rather than staying in the heap. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif
    d->budget = ingest_budget_new((size_t)cfg->max_buffered_bytes);

    rule_pack_t *pack = NULL;
    err_detail_t e;
    err_clear(&e);
    if (daemon_pack_load(&d->cfg, &pack, &e) != ERR_OK) {
        log_error("rule pack: %s%s%s", e.where, e.where[0] ? ": " : "", e.msg);
        return 1;
    }
    pack_install(d, pack);
    log_info("spinegate %s starting: %s, adt=%s", PACKAGE_VERSION, rule_pack_describe(pack),
             d->cfg.adt);
    if (d->tokens)
        log_info("http-tokens: %zu tokens from %s", auth_tokens_count(d->tokens),
                 d->cfg.http_tokens);
    const char *warn[2];
    for (size_t i = 0, n = config_http_warnings(&d->cfg, warn, 2); i < n; i++)
        log_warn("%s", warn[i]);
    for (size_t i = 0, n = config_admin_warnings(&d->cfg, warn, 2); i < n; i++)
        log_warn("%s", warn[i]);
    if (prepare_dirs(d) != 0 || queue_guard_before(d) != 0)
        return 1;

    queue_opts_t qo = {
        .sync = cfg->sync == CONFIG_SYNC_NORMAL ? QUEUE_SYNC_NORMAL : QUEUE_SYNC_FULL,
        .max_queued = (size_t)cfg->queue_max,
        .max_payload = (size_t)(cfg->max_message_size > cfg->max_body_size
                                    ? cfg->max_message_size
                                    : cfg->max_body_size) * 2 + 65536,
        .worklist_keep_days = (unsigned)cfg->worklist_retention,
        .inbox_poll_ms = (unsigned)cfg->inbox_poll_ms,
        .message_log = cfg->queue_log,
    };
    if (daemon_queue_is_pg(d)) {
        qo.backend = QUEUE_BACKEND_POSTGRES;
        qo.url = cfg->queue_url;
    }
    if (queue_open(d->loop, d->queue_path, &qo, &d->queue, &e) != ERR_OK) {
        /* (queue-url is not logged: it may hold a password) */
        log_error("queue %s: %s", daemon_queue_is_pg(d) ? "(postgres)" : d->queue_path, e.msg);
        return 1;
    }

    uv_timer_init(d->loop, &d->retry_timer);
    d->retry_timer.data = d;
    uv_timer_init(d->loop, &d->tls_timer);
    d->tls_timer.data = d;
    uv_signal_init(d->loop, &d->sig_term);
    uv_signal_init(d->loop, &d->sig_int);
    uv_signal_init(d->loop, &d->sig_hup);
    d->sig_term.data = d->sig_int.data = d->sig_hup.data = d;
    uv_signal_start(&d->sig_term, on_signal, SIGTERM);
    uv_signal_start(&d->sig_int, on_signal, SIGINT);
    uv_signal_start(&d->sig_hup, on_signal, SIGHUP);

    if (queue_guard_after(d) != 0 || daemon_tls_start(d) != ERR_OK || start_delivery(d) != ERR_OK ||
        start_listeners(d) != ERR_OK) {
        d->exit_code = 1;
        begin_stop(d, "startup failed");
    } else {
        if (cfg->pid_file)
            write_pid_file(cfg->pid_file);
        d->notify = notify_ready(d->loop); /* queue open, listeners bound */
    }
    uv_run(d->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(d->loop) != 0)
        log_warn("loop closed with handles still open");
    if (cfg->pid_file && d->exit_code == 0)
        unlink(cfg->pid_file);
    int code = d->exit_code;
    web_free(d);
    adminsock_free(d);
    daemon_pack_unref(d->pack);
    daemon_tls_free(d);
    auth_tokens_free(d->tokens);
    ingest_budget_free(d->budget);
    lanes_free(d->lanes);
    serve_mllp_free_spares(d);
    config_free(&d->cfg);
    xfree(d->loop);
    xfree(d);
    return code;
}
