/* serve_http.c - the FHIR face of the daemon: routes requests under the
 * configured base (POST Claim, POST a Bundle, POST Claim/$validate, GET
 * metadata) plus /healthz and /metrics, answers in the request's format, and
 * for Claims that pass, stores them durably before answering.
 *
 * A job owns one request's parse tree, arena and pack reference until its
 * response is written; for a Bundle it waits for every Claim's store.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "daemon.h"
#include "fhir.h"
#include "fhir_out.h"
#include "gate.h"
#include "log.h"
#include "xmalloc.h"

/* When the CapabilityStatement last changed (its `date`). */
#define SERVE_CAPABILITY_DATE "2026-11-26T00:00:00Z"

#define CT_JSON "application/fhir+json; charset=utf-8"
#define CT_XML "application/fhir+xml; charset=utf-8"

typedef enum { ROUTE_CLAIM, ROUTE_BUNDLE, ROUTE_VALIDATE } route_t;

typedef struct {
    daemon_t *d;
    http_req_t *req;
    route_t route;
    fhir_format_t in_fmt, out_fmt;
    fhir_doc_t *doc;
    arena_t arena;
    daemon_pack_t *pack;
    size_t nclaims;
    gate_result_t *results;
    fhir_out_entry_t *entries;
    err_t *stored;        /* per claim: store status */
    size_t pending;       /* stores not yet called back */
    bool transaction;
    uint64_t t0;
} http_job_t;

static const char *ctype(fhir_format_t f)
{
    return f == FHIR_FMT_XML ? CT_XML : CT_JSON;
}

static void job_free(http_job_t *j)
{
    fhir_doc_free(j->doc);
    arena_free(&j->arena);
    daemon_pack_unref(j->pack);
    xfree(j);
}

static void respond(http_req_t *req, int status, fhir_format_t fmt, slice_t body, const char *extra)
{
    http_req_respond(req, status, ctype(fmt), body.ptr, body.len, extra);
}

static void respond_error(http_req_t *req, int status, fhir_format_t fmt, err_t code,
                          const char *where, const char *msg)
{
    arena_t a;
    arena_init(&a, 2048);
    err_detail_t e;
    err_clear(&e);
    err_set(&e, code, 0, "%s", msg);
    if (where)
        snprintf(e.where, sizeof e.where, "%s", where);
    slice_t body;
    fhir_out_outcome_error(&e, fmt, &a, &body);
    respond(req, status, fmt, body, status == 405 ? "Allow: POST\r\n" : NULL);
    arena_free(&a);
}

/* ---------------------------------------------------------------- formats */

static bool slice_has(slice_t s, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= s.len; i++)
        if (strncasecmp(s.ptr + i, needle, n) == 0)
            return true;
    return false;
}

/* Request body format from Content-Type; -1 when it names something else,
 * -2 when absent (then the body is sniffed). */
static int format_of_content_type(slice_t ct)
{
    if (!ct.ptr || !ct.len)
        return -2;
    if (slice_has(ct, "json"))
        return FHIR_FMT_JSON;
    if (slice_has(ct, "xml"))
        return FHIR_FMT_XML;
    return -1;
}

/* Response format: _format wins, then Accept, then the request's format. */
static fhir_format_t response_format(const http_req_t *req, fhir_format_t fallback)
{
    slice_t f;
    if (http_req_query_param(req, "_format", &f) && f.len) {
        if (slice_has(f, "xml"))
            return FHIR_FMT_XML;
        if (slice_has(f, "json"))
            return FHIR_FMT_JSON;
    }
    slice_t accept = http_req_header(req, "Accept");
    if (accept.ptr) {
        bool x = slice_has(accept, "xml"), j = slice_has(accept, "json");
        if (x && !j)
            return FHIR_FMT_XML;
        if (j && !x)
            return FHIR_FMT_JSON;
    }
    return fallback;
}

/* ---------------------------------------------------------------- answers */

static void finish(http_job_t *j, int status, slice_t body)
{
    daemon_t *d = j->d;
    respond(j->req, status, j->out_fmt, body, NULL);
    double secs = (double)(uv_hrtime() - j->t0) / 1e9;
    metrics_latency(&d->metrics, secs);
    job_free(j);
}

static metric_format_t metric_fmt(const http_job_t *j)
{
    return j->in_fmt == FHIR_FMT_XML ? METRIC_FMT_FHIR_XML : METRIC_FMT_FHIR_JSON;
}

static void count_claim(http_job_t *j, size_t i)
{
    const gate_result_t *r = &j->results[i];
    metric_outcome_t o = r->status == GATE_UNREADABLE  ? METRIC_UNREADABLE
                         : j->stored[i] != ERR_OK      ? METRIC_STORE_FAILED
                                                       : metrics_outcome(r->verdict.kind);
    metrics_count(&j->d->metrics, metric_fmt(j), o, r->status == GATE_JUDGED ? &r->verdict : NULL);
    char idb[LOG_ID_BUF];
    log_info("http conn=%llu id=%s %s findings=%zu %s",
             (unsigned long long)http_req_conn_id(j->req), log_id(r->control_id, idb),
             r->status == GATE_UNREADABLE ? "unreadable" : verdict_name(r->verdict.kind),
             r->verdict.nfindings,
             j->route == ROUTE_VALIDATE ? "validate-only"
             : j->stored[i] == ERR_OK   ? "stored"
                                        : "not-stored");
}

static int claim_status(const http_job_t *j, size_t i)
{
    const gate_result_t *r = &j->results[i];
    if (r->status == GATE_UNREADABLE)
        return r->detail.code == ERR_TOO_LARGE ? 413 : 400;
    if (j->stored[i] != ERR_OK)
        return 503;
    return r->verdict.kind == VERDICT_REJECT ? 422 : 201;
}

static void answer_claim(http_job_t *j)
{
    count_claim(j, 0);
    slice_t body;
    const gate_result_t *r = &j->results[0];
    int status = claim_status(j, 0);
    if (r->status == GATE_UNREADABLE)
        fhir_out_outcome_error(&r->detail, j->out_fmt, &j->arena, &body);
    else if (status == 503) {
        err_detail_t e;
        err_clear(&e);
        err_set(&e, ERR_QUEUE, 0, "the Claim could not be stored; send it again");
        fhir_out_outcome_error(&e, j->out_fmt, &j->arena, &body);
    } else
        fhir_out_outcome_verdict(&r->verdict, j->out_fmt, &j->arena, &body);
    finish(j, status, body);
}

static void answer_bundle(http_job_t *j)
{
    bool any_bad = false;
    for (size_t i = 0; i < j->nclaims; i++) {
        count_claim(j, i);
        int st = claim_status(j, i);
        any_bad |= st >= 400;
        j->entries[i].status = st;
        j->entries[i].verdict = j->results[i].status == GATE_JUDGED ? &j->results[i].verdict : NULL;
        j->entries[i].error = j->results[i].status == GATE_UNREADABLE ? &j->results[i].detail : NULL;
    }
    slice_t body;
    if (j->transaction && any_bad) {
        /* A transaction is all or nothing: nothing was forwarded, and the
         * answer is one OperationOutcome with every Claim's findings. */
        rule_verdict_t all = {.kind = VERDICT_REJECT};
        size_t n = 0;
        for (size_t i = 0; i < j->nclaims; i++)
            n += j->results[i].verdict.nfindings;
        all.findings = arena_calloc(&j->arena, n ? n : 1, sizeof *all.findings);
        for (size_t i = 0; i < j->nclaims; i++)
            for (size_t k = 0; k < j->results[i].verdict.nfindings; k++) {
                rule_finding_t f = j->results[i].verdict.findings[k];
                if (f.location && strncmp(f.location, "Claim", 5) == 0)
                    f.location = arena_printf(&j->arena, "Bundle.entry[%zu].resource%s",
                                              fhir_doc_claim_entry(j->doc, i), f.location + 5);
                all.findings[all.nfindings++] = f;
            }
        for (size_t i = 0; i < j->nclaims; i++)
            if (j->results[i].status == GATE_UNREADABLE) {
                fhir_out_outcome_error(&j->results[i].detail, j->out_fmt, &j->arena, &body);
                finish(j, claim_status(j, i), body);
                return;
            }
        fhir_out_outcome_verdict(&all, j->out_fmt, &j->arena, &body);
        finish(j, 422, body);
        return;
    }
    fhir_out_batch_response(j->transaction, j->entries, j->nclaims, j->out_fmt, &j->arena, &body);
    finish(j, 200, body);
}

/* One store of one Claim of a job. */
typedef struct {
    http_job_t *j;
    size_t i;
} store_ctx_t;

static void stored(daemon_t *d, void *job, err_t status);

/* Answers once the last store has called back. */
static void store_done(http_job_t *j)
{
    if (--j->pending)
        return;
    if (j->route == ROUTE_CLAIM)
        answer_claim(j);
    else
        answer_bundle(j);
}

static void store_claim(http_job_t *j, size_t i, const char *dest)
{
    slice_t payload;
    if (fhir_out_claim(j->doc, i, &j->arena, &payload) != ERR_OK) {
        j->stored[i] = ERR_NOT_FOUND;
        return;
    }
    const gate_result_t *r = &j->results[i];
    queue_item_t item = {
        .dest = dest,
        .control_id = r->control_id ? r->control_id : "",
        .content_type = j->in_fmt == FHIR_FMT_XML ? "application/fhir+xml" : "application/fhir+json",
        .payload = payload.ptr,
        .payload_len = payload.len,
    };
    j->pending++;
    store_ctx_t *ctx = arena_alloc(&j->arena, sizeof *ctx);
    ctx->j = j;
    ctx->i = i;
    daemon_put(j->d, &item, stored, NULL, ctx); /* a Bundle's puts share one job */
}

static void stored(daemon_t *d, void *job, err_t status)
{
    (void)d;
    store_ctx_t *ctx = job;
    http_job_t *j = ctx->j;
    if (status != ERR_OK) {
        char idb[LOG_ID_BUF];
        log_error("http id=%s: queue put failed (%s)", log_id(j->results[ctx->i].control_id, idb),
                  err_str(status));
        /* Only a Claim meant for delivery fails its answer; a lost reject
         * copy is logged but the sender still hears the verdict. */
        if (j->results[ctx->i].verdict.kind != VERDICT_REJECT)
            j->stored[ctx->i] = status;
    }
    store_done(j);
}

/* Judges every Claim, then stores: Claims that pass go to "fhir" (unless the
 * transaction fails as a whole), rejected ones to the reject sink. */
static void judge_and_store(http_job_t *j)
{
    j->nclaims = fhir_doc_claim_count(j->doc);
    size_t n = j->nclaims ? j->nclaims : 1;
    j->results = arena_calloc(&j->arena, n, sizeof *j->results);
    j->entries = arena_calloc(&j->arena, n, sizeof *j->entries);
    j->stored = arena_calloc(&j->arena, n, sizeof *j->stored);
    bool all_pass = true;
    for (size_t i = 0; i < j->nclaims; i++) {
        gate_fhir_claim(j->pack->pack, j->doc, i, &j->d->gate_limits, &j->arena, &j->results[i]);
        if (j->results[i].status != GATE_JUDGED || j->results[i].verdict.kind == VERDICT_REJECT)
            all_pass = false;
    }
    if (j->route == ROUTE_VALIDATE) {
        count_claim(j, 0);
        slice_t body;
        if (j->results[0].status == GATE_UNREADABLE) {
            fhir_out_outcome_error(&j->results[0].detail, j->out_fmt, &j->arena, &body);
            finish(j, claim_status(j, 0), body);
        } else {
            fhir_out_outcome_verdict(&j->results[0].verdict, j->out_fmt, &j->arena, &body);
            finish(j, 200, body);
        }
        return;
    }
    j->pending = 1; /* held until every store is issued */
    for (size_t i = 0; i < j->nclaims; i++) {
        gate_result_t *r = &j->results[i];
        if (r->status != GATE_JUDGED)
            continue;
        if (r->verdict.nfindings)
            fhir_out_annotate(j->doc, i, &r->verdict);
        if (r->verdict.kind == VERDICT_REJECT)
            store_claim(j, i, "reject-fhir");
        else if (!j->transaction || all_pass)
            store_claim(j, i, "fhir");
    }
    store_done(j);
}

/* ---------------------------------------------------------------- status pages */

static void serve_healthz(daemon_t *d, http_req_t *req)
{
    queue_stats_t qs;
    queue_stats(d->queue, &qs);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", d->stopping ? "stopping" : "ok");
    cJSON_AddStringToObject(o, "version", PACKAGE_VERSION);
    cJSON_AddStringToObject(o, "rules", rule_pack_describe(d->pack->pack));
    cJSON_AddStringToObject(o, "adt", d->cfg.adt);
    cJSON_AddNumberToObject(o, "uptime_s", (double)(uv_now(d->loop) - d->start_ms) / 1000.0);
    cJSON *q = cJSON_AddObjectToObject(o, "queue");
    cJSON_AddNumberToObject(q, "depth", (double)qs.depth);
    cJSON_AddNumberToObject(q, "committed", (double)qs.committed);
    cJSON_AddNumberToObject(q, "delivered", (double)qs.delivered);
    cJSON_AddNumberToObject(q, "dead", (double)qs.dead);
    ingest_budget_stats_t bs;
    ingest_budget_stats(d->budget, &bs);
    cJSON *bb = cJSON_AddObjectToObject(o, "buffered");
    cJSON_AddNumberToObject(bb, "bytes", (double)bs.used);
    cJSON_AddNumberToObject(bb, "peak", (double)bs.peak);
    cJSON_AddNumberToObject(bb, "limit", (double)bs.limit);
    cJSON_AddNumberToObject(bb, "paused", (double)bs.paused);
    cJSON_AddNumberToObject(bb, "pauses", (double)bs.pauses);
    cJSON *dl = cJSON_AddObjectToObject(o, "delivery");
    struct {
        const char *name;
        out_dest_t *o;
    } outs[] = {{"hl7", d->out_hl7}, {"fhir", d->out_fhir},
                {"reject-hl7", d->out_reject_hl7}, {"reject-fhir", d->out_reject_fhir}};
    for (size_t i = 0; i < 4; i++) {
        if (!outs[i].o)
            continue;
        out_stats_t st;
        out_stats(outs[i].o, &st);
        cJSON *x = cJSON_AddObjectToObject(dl, outs[i].name);
        cJSON_AddNumberToObject(x, "depth", (double)queue_depth(d->queue, outs[i].name));
        cJSON_AddNumberToObject(x, "delivered", (double)st.delivered);
        cJSON_AddNumberToObject(x, "retries", (double)st.retries);
        cJSON_AddNumberToObject(x, "dead", (double)st.dead);
        cJSON_AddStringToObject(x, "last_error", st.last_error);
    }
    char *s = cJSON_PrintUnformatted(o);
    http_req_respond(req, d->stopping ? 503 : 200, "application/json", s, strlen(s), NULL);
    cJSON_free(s);
    cJSON_Delete(o);
}

static void serve_metrics(daemon_t *d, http_req_t *req)
{
    char extra[8192];
    size_t off = 0;
    queue_stats_t qs;
    queue_stats(d->queue, &qs);
    off += (size_t)snprintf(extra + off, sizeof extra - off,
                            "# HELP spinegate_queue_depth Messages waiting for delivery.\n"
                            "# TYPE spinegate_queue_depth gauge\n");
    for (size_t i = 0; i < qs.ndest && off < sizeof extra - 256; i++)
        off += (size_t)snprintf(extra + off, sizeof extra - off,
                                "spinegate_queue_depth{destination=\"%s\"} %llu\n",
                                qs.dest[i].name, (unsigned long long)qs.dest[i].depth);
    off += (size_t)snprintf(extra + off, sizeof extra - off,
                            "# HELP spinegate_delivery_total Delivery results by destination.\n"
                            "# TYPE spinegate_delivery_total counter\n");
    for (size_t i = 0; i < qs.ndest && off < sizeof extra - 512; i++)
        off += (size_t)snprintf(
            extra + off, sizeof extra - off,
            "spinegate_delivery_total{destination=\"%s\",result=\"delivered\"} %llu\n"
            "spinegate_delivery_total{destination=\"%s\",result=\"retry\"} %llu\n"
            "spinegate_delivery_total{destination=\"%s\",result=\"dead_letter\"} %llu\n",
            qs.dest[i].name, (unsigned long long)qs.dest[i].delivered, qs.dest[i].name,
            (unsigned long long)qs.dest[i].retries, qs.dest[i].name,
            (unsigned long long)qs.dest[i].dead);
    off += (size_t)snprintf(extra + off, sizeof extra - off,
                            "# HELP spinegate_queue_commits_total Group commits of the queue.\n"
                            "# TYPE spinegate_queue_commits_total counter\n"
                            "spinegate_queue_commits_total %llu\n",
                            (unsigned long long)qs.commits);
    if (d->mllp) {
        mllp_stats_t ms;
        mllp_server_stats(d->mllp, &ms);
        off += (size_t)snprintf(extra + off, sizeof extra - off,
                                "# HELP spinegate_mllp_connections Open MLLP connections.\n"
                                "# TYPE spinegate_mllp_connections gauge\n"
                                "spinegate_mllp_connections %llu\n"
                                "# HELP spinegate_mllp_evicted_total Idle MLLP connections closed "
                                "to admit one at max-connections.\n"
                                "# TYPE spinegate_mllp_evicted_total counter\n"
                                "spinegate_mllp_evicted_total %llu\n",
                                (unsigned long long)ms.conns_open, (unsigned long long)ms.evicted);
    }
    ingest_budget_stats_t bs;
    ingest_budget_stats(d->budget, &bs);
    off += (size_t)snprintf(extra + off, sizeof extra - off,
                            "# HELP spinegate_buffered_bytes Bytes held for unfinished and "
                            "waiting messages (max-buffered-bytes).\n"
                            "# TYPE spinegate_buffered_bytes gauge\n"
                            "spinegate_buffered_bytes %zu\n"
                            "# HELP spinegate_buffered_pauses_total Times a connection stopped "
                            "being read for the buffer budget.\n"
                            "# TYPE spinegate_buffered_pauses_total counter\n"
                            "spinegate_buffered_pauses_total %llu\n",
                            bs.used, (unsigned long long)bs.pauses);
    size_t len;
    char *text = metrics_render(&d->metrics, extra, &len);
    http_req_respond(req, 200, "text/plain; version=0.0.4", text, len, NULL);
    xfree(text);
}

/* ---------------------------------------------------------------- routing */

size_t serve_http_error(const http_req_t *req, int status, const char *why, char *out, size_t cap,
                        const char **content_type, void *user)
{
    (void)user;
    (void)status;
    fhir_format_t fmt = req ? response_format(req, FHIR_FMT_JSON) : FHIR_FMT_JSON;
    arena_t a;
    arena_init(&a, 2048);
    err_detail_t e;
    err_clear(&e);
    err_set(&e, status == 413 ? ERR_TOO_LARGE : status == 408 ? ERR_TIMEOUT : ERR_PROTOCOL, 0,
            "%s", why);
    slice_t body;
    fhir_out_outcome_error(&e, fmt, &a, &body);
    size_t n = body.len < cap ? body.len : 0;
    if (n)
        memcpy(out, body.ptr, n);
    *content_type = fmt == FHIR_FMT_XML ? CT_XML : CT_JSON;
    arena_free(&a);
    return n;
}

void serve_http_request(http_req_t *req, void *user)
{
    daemon_t *d = user;
    char path[1024];
    size_t plen;
    if (!http_pct_decode(http_req_path(req), false, path, sizeof path, &plen)) {
        respond_error(req, 400, FHIR_FMT_JSON, ERR_PROTOCOL, NULL, "malformed request path");
        return;
    }
    while (plen > 1 && path[plen - 1] == '/')
        path[--plen] = '\0';
    const char *method = http_req_method(req);
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    fhir_format_t fallback = response_format(req, FHIR_FMT_JSON);

    if (strcmp(path, "/healthz") == 0 && get) {
        serve_healthz(d, req);
        return;
    }
    if (strcmp(path, "/metrics") == 0 && get) {
        serve_metrics(d, req);
        return;
    }
    const char *base = d->cfg.fhir_base;
    size_t blen = strlen(base);
    while (blen > 1 && base[blen - 1] == '/')
        blen--;
    const char *rest = NULL;
    if (blen == 1)
        rest = path[0] == '/' ? path + (path[1] ? 0 : 1) : NULL;
    else if (strncmp(path, base, blen) == 0 && (path[blen] == '\0' || path[blen] == '/'))
        rest = path + blen;
    if (!rest) {
        respond_error(req, 404, fallback, ERR_NOT_FOUND, NULL, "no such endpoint");
        return;
    }
    if (strcmp(rest, "/metadata") == 0) {
        if (!get) {
            respond_error(req, 405, fallback, ERR_PROTOCOL, NULL, "use GET for metadata");
            return;
        }
        arena_t a;
        arena_init(&a, 8192);
        fhir_out_capability_t cap = {.software_name = "spinegate",
                                     .software_version = PACKAGE_VERSION,
                                     .date = SERVE_CAPABILITY_DATE};
        slice_t body;
        fhir_out_capability(&cap, fallback, &a, &body);
        respond(req, 200, fallback, body, NULL);
        arena_free(&a);
        return;
    }
    route_t route;
    if (strcmp(rest, "/Claim") == 0)
        route = ROUTE_CLAIM;
    else if (strcmp(rest, "/Claim/$validate") == 0)
        route = ROUTE_VALIDATE;
    else if (rest[0] == '\0')
        route = ROUTE_BUNDLE;
    else {
        respond_error(req, 404, fallback, ERR_NOT_FOUND, NULL,
                      "no such endpoint: this server takes Claim, Claim/$validate, a Bundle at the "
                      "base, and metadata");
        return;
    }
    if (!post) {
        respond_error(req, 405, fallback, ERR_PROTOCOL, NULL, "use POST");
        return;
    }

    buf_t *body = http_req_body(req);
    int ct = format_of_content_type(http_req_header(req, "Content-Type"));
    if (ct == -1) {
        respond_error(req, 415, fallback, ERR_UNSUPPORTED, NULL,
                      "send application/fhir+json or application/fhir+xml");
        return;
    }
    fhir_format_t in_fmt = ct == -2 ? (gate_detect(body->data, body->len) == GATE_FHIR_XML
                                           ? FHIR_FMT_XML
                                           : FHIR_FMT_JSON)
                                    : (fhir_format_t)ct;

    http_job_t *j = xcalloc(1, sizeof *j);
    j->d = d;
    j->req = req;
    j->route = route;
    j->t0 = uv_hrtime();
    j->in_fmt = in_fmt;
    j->out_fmt = response_format(req, in_fmt);
    arena_init(&j->arena, 16384);
    j->pack = daemon_pack_ref(d);
    log_phi("http body", body->data, body->len);

    err_detail_t e;
    err_clear(&e);
    fhir_opts_t fo = {.max_size = (size_t)d->cfg.max_body_size + 1};
    if (fhir_parse(body->data, body->len, in_fmt, &fo, &j->doc, &e) != ERR_OK) {
        metrics_count(&d->metrics, metric_fmt(j), METRIC_UNREADABLE, NULL);
        log_warn("http conn=%llu unreadable %s body (%s%s%s)",
                 (unsigned long long)http_req_conn_id(req), in_fmt == FHIR_FMT_XML ? "XML" : "JSON",
                 err_name(e.code), e.where[0] ? " at " : "", e.where);
        slice_t out;
        fhir_out_outcome_error(&e, j->out_fmt, &j->arena, &out);
        finish(j, 400, out);
        return;
    }
    const char *type = fhir_doc_resource_type(j->doc);
    bool is_bundle = strcmp(type, "Bundle") == 0;
    if ((route != ROUTE_BUNDLE) == is_bundle || fhir_doc_claim_count(j->doc) == 0) {
        slice_t out;
        err_set(&e, ERR_UNSUPPORTED, 0, "%s",
                is_bundle ? (route == ROUTE_BUNDLE ? "the Bundle holds no Claim"
                                                   : "POST a Bundle to the base URL, not to Claim")
                          : "POST a Claim to [base]/Claim; the base takes a batch or transaction Bundle");
        fhir_out_outcome_error(&e, j->out_fmt, &j->arena, &out);
        finish(j, 400, out);
        return;
    }
    if (is_bundle) {
        /* Only batch and transaction Bundles are requests; the type decides
         * whether one bad Claim fails them all. */
        const char *bt = fhir_doc_bundle_type(j->doc);
        if (strcmp(bt, "batch") != 0 && strcmp(bt, "transaction") != 0) {
            slice_t out;
            err_set(&e, ERR_UNSUPPORTED, 0, "POST a Bundle of type batch or transaction");
            snprintf(e.where, sizeof e.where, "Bundle.type");
            fhir_out_outcome_error(&e, j->out_fmt, &j->arena, &out);
            finish(j, 400, out);
            return;
        }
        j->transaction = strcmp(fhir_doc_bundle_type(j->doc), "transaction") == 0;
    }
    judge_and_store(j);
}
