/* daemon_tls.c - the daemon's TLS contexts: built from the settings at start
 * (a broken file stops the start), rebuilt on SIGHUP (a broken one keeps the
 * running context and says why), checked daily for a certificate that
 * expires within 30 days, and shown in /metrics.
 *
 * Ownership: the daemon holds one reference per context in d->tls[]; each
 * listener and deliverer holds its own, so a reload never drops a connection.
 */
#include "daemon.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define EXPIRY_WARN_S (30 * 86400)
#define EXPIRY_CHECK_MS (86400 * 1000ULL)

static const char *const use_names[DAEMON_TLS__COUNT] = {"mllp", "http", "downstream",
                                                                 "admin"};

/* Whether c asks for a context for use, and its settings. */
static bool tls_wanted(const config_t *c, daemon_tls_use_t use, tls_settings_t *s)
{
    memset(s, 0, sizeof *s);
    s->min_version = c->tls_min == 13 ? 13 : 12;
    switch (use) {
    case DAEMON_TLS_MLLP:
        s->cert_file = c->mllp_tls_cert;
        s->key_file = c->mllp_tls_key;
        s->ca_file = c->mllp_tls_client_ca;
        s->allow = c->mllp_tls_allow;
        return c->listen_mllp.port && c->mllp_tls_cert;
    case DAEMON_TLS_HTTP:
        s->cert_file = c->http_tls_cert;
        s->key_file = c->http_tls_key;
        s->ca_file = c->http_tls_client_ca;
        s->allow = c->http_tls_allow;
        return c->listen_http.port && c->http_tls_cert;
    case DAEMON_TLS_DOWNSTREAM:
        s->cert_file = c->downstream_tls_cert;
        s->key_file = c->downstream_tls_key;
        s->ca_file = c->downstream_tls_ca;
        return c->downstream_mllp_tls && (c->downstream_mllp.port || c->reject_mllp.port);
    case DAEMON_TLS_ADMIN:
        s->cert_file = c->admin_tls_cert;
        s->key_file = c->admin_tls_key;
        return c->listen_admin.port && c->admin_tls_cert;
    case DAEMON_TLS__COUNT: break;
    }
    return false;
}

static err_t tls_build(const config_t *c, daemon_tls_use_t use, tls_ctx_t **out, err_detail_t *e)
{
    tls_settings_t s;
    *out = NULL;
    if (!tls_wanted(c, use, &s))
        return ERR_OK;
    return tls_ctx_new(use == DAEMON_TLS_DOWNSTREAM ? TLS_CLIENT : TLS_SERVER, &s, out, e);
}

/* Logs each certificate that expires within 30 days (or has expired). */
static void check_expiry(daemon_t *d)
{
    int64_t now = (int64_t)time(NULL);
    for (int i = 0; i < DAEMON_TLS__COUNT; i++) {
        int64_t until = tls_ctx_not_after(d->tls[i]);
        if (!until || until - now > EXPIRY_WARN_S)
            continue;
        if (until <= now)
            log_error("TLS certificate of %s expired %lld days ago", use_names[i],
                      (long long)((now - until) / 86400));
        else
            log_warn("TLS certificate of %s expires in %lld days", use_names[i],
                     (long long)((until - now) / 86400));
    }
}

static void on_expiry_timer(uv_timer_t *t)
{
    check_expiry(t->data);
}

err_t daemon_tls_start(daemon_t *d)
{
    for (int i = 0; i < DAEMON_TLS__COUNT; i++) {
        err_detail_t e;
        err_clear(&e);
        if (tls_build(&d->cfg, (daemon_tls_use_t)i, &d->tls[i], &e) != ERR_OK) {
            log_error("%s: %s", use_names[i], e.msg);
            return ERR_BAD_CONFIG;
        }
        if (d->tls[i])
            log_info("%s: TLS%s, minimum version %s", use_names[i],
                     tls_ctx_mutual(d->tls[i]) ? " with client certificates" : "",
                     d->cfg.tls_min_version);
    }
    /* Settings that would do nothing: said once, so that nobody believes a
     * socket is protected when it is not there. */
    const config_t *c = &d->cfg;
    if (c->downstream_mllp_tls && !c->downstream_mllp.port && !c->reject_mllp.port)
        log_warn("downstream-mllp-tls is set but no MLLP destination is (downstream-mllp, "
                 "reject-mllp): it has no effect");
    if (c->mllp_tls_cert && !c->listen_mllp.port)
        log_warn("mllp-tls-cert is set but the MLLP listener is off: it has no effect");
    if (c->http_tls_cert && !c->listen_http.port)
        log_warn("http-tls-cert is set but the HTTP listener is off: it has no effect");
    if (c->admin_tls_cert && !c->listen_admin.port)
        log_warn("admin-tls-cert is set but the web page is off (listen-admin): it has no "
                 "effect");
    check_expiry(d);
    uv_timer_start(&d->tls_timer, on_expiry_timer, EXPIRY_CHECK_MS, EXPIRY_CHECK_MS);
    uv_unref((uv_handle_t *)&d->tls_timer); /* never what keeps the loop alive */
    return ERR_OK;
}

void daemon_tls_reload(daemon_t *d, const config_t *fresh)
{
    for (int i = 0; i < DAEMON_TLS__COUNT; i++) {
        if (!d->tls[i])
            continue; /* turning TLS on or off needs a restart */
        tls_ctx_t *ctx = NULL;
        err_detail_t e;
        err_clear(&e);
        if (tls_build(fresh, (daemon_tls_use_t)i, &ctx, &e) != ERR_OK || !ctx) {
            log_error("%s: TLS reload failed, keeping the running certificates: %s", use_names[i],
                      ctx        ? ""
                      : e.msg[0] ? e.msg
                                 : "TLS is no longer configured");
            d->tls_reloads_failed++;
            continue;
        }
        if (i == DAEMON_TLS_MLLP && d->mllp)
            mllp_server_set_tls(d->mllp, ctx);
        else if (i == DAEMON_TLS_HTTP && d->http)
            http_server_set_tls(d->http, ctx);
        else if (i == DAEMON_TLS_ADMIN && d->admin)
            http_server_set_tls(d->admin, ctx);
        else if (i == DAEMON_TLS_DOWNSTREAM) {
            out_dest_t *outs[] = {d->out[DEST_HL7], d->out[DEST_REJECT_HL7]};
            for (size_t k = 0; k < 2; k++)
                if (outs[k])
                    out_set_tls(outs[k], ctx);
        }
        tls_ctx_unref(d->tls[i]);
        d->tls[i] = ctx;
        d->tls_reloads_ok++;
        log_info("%s: TLS certificates reloaded", use_names[i]);
    }
    check_expiry(d);
}

void daemon_tls_stop(daemon_t *d)
{
    uv_close((uv_handle_t *)&d->tls_timer, NULL);
}

void daemon_tls_free(daemon_t *d)
{
    for (int i = 0; i < DAEMON_TLS__COUNT; i++) {
        tls_ctx_unref(d->tls[i]);
        d->tls[i] = NULL;
    }
}

static void tls_counters(char *buf, size_t cap, size_t *off, const char *listener,
                         const tls_stats_t *s)
{
    size_t o = *off;
    int w = snprintf(buf + o, cap - o,
                     "spinegate_tls_handshakes_total{listener=\"%s\",result=\"ok\"} %llu\n"
                     "spinegate_tls_handshakes_total{listener=\"%s\",result=\"failed\"} %llu\n"
                     "spinegate_tls_handshakes_total{listener=\"%s\",result=\"plaintext\"} %llu\n"
                     "spinegate_tls_handshakes_total{listener=\"%s\",result=\"timeout\"} %llu\n"
                     "spinegate_tls_handshakes_total{listener=\"%s\",result=\"not_allowed\"} "
                     "%llu\n",
                     listener, (unsigned long long)s->handshakes, listener,
                     (unsigned long long)s->failed, listener, (unsigned long long)s->plaintext,
                     listener, (unsigned long long)s->timeouts, listener,
                     (unsigned long long)s->refused);
    if (w > 0 && o + (size_t)w < cap)
        *off = o + (size_t)w;
}

void daemon_tls_metrics(daemon_t *d, char *buf, size_t cap, size_t *off)
{
    bool any = false;
    for (int i = 0; i < DAEMON_TLS__COUNT; i++)
        any = any || d->tls[i];
    if (!any || *off >= cap)
        return;
    int64_t now = (int64_t)time(NULL);
    int w = snprintf(buf + *off, cap - *off,
                     "# HELP spinegate_tls_cert_expiry_seconds Seconds until the certificate "
                     "in use expires (negative: expired).\n"
                     "# TYPE spinegate_tls_cert_expiry_seconds gauge\n");
    if (w > 0 && *off + (size_t)w < cap)
        *off += (size_t)w;
    for (int i = 0; i < DAEMON_TLS__COUNT; i++) {
        int64_t until = tls_ctx_not_after(d->tls[i]);
        if (!until)
            continue;
        w = snprintf(buf + *off, cap - *off, "spinegate_tls_cert_expiry_seconds{use=\"%s\"} %lld\n",
                     use_names[i], (long long)(until - now));
        if (w > 0 && *off + (size_t)w < cap)
            *off += (size_t)w;
    }
    w = snprintf(buf + *off, cap - *off,
                 "# HELP spinegate_tls_cert_expiring Certificates in use that expire within 30 "
                 "days.\n# TYPE spinegate_tls_cert_expiring gauge\n"
                 "spinegate_tls_cert_expiring %d\n"
                 "# HELP spinegate_tls_reloads_total Certificate reloads on SIGHUP, by result.\n"
                 "# TYPE spinegate_tls_reloads_total counter\n"
                 "spinegate_tls_reloads_total{result=\"ok\"} %llu\n"
                 "spinegate_tls_reloads_total{result=\"failed\"} %llu\n"
                 "# HELP spinegate_tls_handshakes_total TLS handshakes on the listeners, by "
                 "result.\n# TYPE spinegate_tls_handshakes_total counter\n",
                 daemon_tls_expiring(d), (unsigned long long)d->tls_reloads_ok,
                 (unsigned long long)d->tls_reloads_failed);
    if (w > 0 && *off + (size_t)w < cap)
        *off += (size_t)w;
    if (d->mllp) {
        mllp_stats_t ms;
        mllp_server_stats(d->mllp, &ms);
        if (ms.tls_on)
            tls_counters(buf, cap, off, "mllp", &ms.tls);
    }
    http_server_t *https[] = {d->http, d->admin};
    const char *names[] = {"http", "admin"};
    for (size_t k = 0; k < 2; k++) {
        if (!https[k])
            continue;
        http_stats_t hs;
        http_server_stats(https[k], &hs);
        if (hs.tls_on)
            tls_counters(buf, cap, off, names[k], &hs.tls);
    }
}

int daemon_tls_expiring(const daemon_t *d)
{
    int64_t now = (int64_t)time(NULL);
    int n = 0;
    for (int i = 0; i < DAEMON_TLS__COUNT; i++) {
        int64_t until = tls_ctx_not_after(d->tls[i]);
        n += until && until - now <= EXPIRY_WARN_S;
    }
    return n;
}
