/* serve_http.c - the FHIR face of the daemon: routes requests under the
 * configured base (POST Claim, POST a Bundle, POST Claim/$validate or
 * $validate, GET metadata) plus /healthz and /metrics, answers in the format
 * negotiated from _format, Accept and the request (docs/fhir-api.md), and
 * for Claims that pass, stores them durably before answering. Every route
 * but health and metadata first passes the bearer-token check (auth.h).
 *
 * A job owns one request's parse tree, arena and pack reference until its
 * response is written; for a Bundle it waits for every Claim's store.
 *
 * A transaction Bundle whose Claims all pass is stored with one put of the
 * whole group (daemon_put_many): every Claim is in the queue, or none is and
 * the answer says so. A batch stores and answers each entry on its own.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth.h"
#include "daemon.h"
#include "fhir.h"
#include "fhir_out.h"
#include "gate.h"
#include "lanes.h"
#include "log.h"
#include "wlmeta.h"
#include "xmalloc.h"

/* When the CapabilityStatement last changed (its `date`). */
#define SERVE_CAPABILITY_DATE "2026-11-26T00:00:00Z"

#define CT_JSON "application/fhir+json; charset=utf-8"
#define CT_XML "application/fhir+xml; charset=utf-8"
#define CT_PLAIN_JSON "application/json; charset=utf-8"
#define CT_PLAIN_XML "application/xml; charset=utf-8"
#define CT_TEXT_XML "text/xml; charset=utf-8"

typedef enum { ROUTE_CLAIM, ROUTE_BUNDLE, ROUTE_VALIDATE } route_t;

/* The answer's format: the FHIR format, the media type named in
 * Content-Type (application/json is answered as application/json), and
 * whether _pretty asked for indentation. */
typedef struct {
    fhir_format_t fmt;
    const char *ctype;
    bool pretty;
} neg_t;

/* Prefer: return=... (RFC 7240, FHIR http.html#ops). */
typedef enum { PREFER_OUTCOME, PREFER_MINIMAL, PREFER_REPRESENTATION } prefer_t;

typedef struct {
    lane_job_t lane; /* first: the lane callbacks get the job back from it */
    daemon_t *d;
    http_req_t *req;
    buf_t *body;     /* a reference: the pool thread parses it */
    route_t route;
    fhir_format_t in_fmt, out_fmt;
    neg_t neg;            /* out_fmt is neg.fmt */
    prefer_t prefer;
    fhir_doc_t *doc;
    arena_t arena;
    daemon_pack_t *pack;
    size_t nclaims;
    gate_result_t *results;
    fhir_out_entry_t *entries; /* one per Bundle.entry */
    size_t nentries;
    const char **ids;          /* per claim: the id its Location names */
    err_t *stored;      /* per claim: store status */
    size_t pending;     /* stores not yet called back */
    bool transaction;
    err_t txn_stored;   /* a transaction's group put: its status */
    size_t txn_refused; /* the item the queue refused, when it did */
    uint64_t t0;
    /* Copied on the loop thread for the pool thread: a reload may change
     * the daemon's settings meanwhile. */
    fhir_opts_t parse_opts;
    gate_limits_t limits;
    bool annotate_accepted;
    /* What the pool thread found, for the loop thread to answer. */
    err_t parse_rc;
    err_detail_t parse_err;
    const char *refusal, *refusal_where; /* a document that does not fit its route */
    bool all_pass;
    char client[AUTH_WHO_MAX]; /* who sent it, for the log: never the token */
} http_job_t;

static neg_t neg_default(fhir_format_t f)
{
    return (neg_t){f, f == FHIR_FMT_XML ? CT_XML : CT_JSON, false};
}

static void job_free(http_job_t *j)
{
    buf_unref(j->body);
    fhir_doc_free(j->doc);
    arena_free(&j->arena);
    daemon_pack_unref(j->pack);
    xfree(j);
}

/* Writes body (an output of fhir_out_*, in neg.fmt), indented when asked. */
static void respond(http_req_t *req, int status, neg_t neg, slice_t body, const char *extra,
                    arena_t *a)
{
    if (neg.pretty && body.len)
        fhir_out_pretty(body, neg.fmt, a, &body);
    http_req_respond(req, status, neg.ctype, body.ptr, body.len, extra);
}

static void respond_error_allow(http_req_t *req, int status, neg_t fmt, err_t code,
                                const char *where, const char *msg, const char *allow)
{
    arena_t a;
    arena_init(&a, 2048);
    err_detail_t e;
    err_clear(&e);
    err_set(&e, code, 0, "%s", msg);
    if (where)
        snprintf(e.where, sizeof e.where, "%s", where);
    slice_t body;
    fhir_out_outcome_error(&e, fmt.fmt, &a, &body);
    char extra[64];
    if (allow)
        snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
    respond(req, status, fmt, body, allow ? extra : NULL, &a);
    arena_free(&a);
}

static void respond_error(http_req_t *req, int status, neg_t fmt, err_t code, const char *where,
                          const char *msg)
{
    respond_error_allow(req, status, fmt, code, where, msg, NULL);
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

/* Request body format from Content-Type (-1 when it names something else,
 * -2 when absent: then the body is sniffed); *plain set for
 * application/json or application/xml, which are answered in kind. */
static int format_of_content_type(slice_t ct, bool *plain)
{
    *plain = false;
    if (!ct.ptr || !ct.len)
        return -2;
    *plain = !slice_has(ct, "fhir+");
    if (slice_has(ct, "json"))
        return FHIR_FMT_JSON;
    if (slice_has(ct, "xml"))
        return FHIR_FMT_XML;
    return -1;
}

/* A media type (or a _format shorthand) this server writes; false for
 * anything else. Wildcards are the caller's. */
static bool media_type(const char *s, size_t n, neg_t *out)
{
    static const struct {
        const char *name;
        fhir_format_t fmt;
        const char *ctype;
    } types[] = {
        {"application/fhir+json", FHIR_FMT_JSON, CT_JSON},
        {"application/json", FHIR_FMT_JSON, CT_PLAIN_JSON},
        {"json", FHIR_FMT_JSON, CT_JSON},
        {"application/fhir+xml", FHIR_FMT_XML, CT_XML},
        {"application/xml", FHIR_FMT_XML, CT_PLAIN_XML},
        {"text/xml", FHIR_FMT_XML, CT_TEXT_XML},
        {"xml", FHIR_FMT_XML, CT_XML},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strlen(types[i].name) == n && strncasecmp(s, types[i].name, n) == 0) {
            out->fmt = types[i].fmt;
            out->ctype = types[i].ctype;
            return true;
        }
    return false;
}

static slice_t trim(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    return (slice_t){p, (size_t)(end - p)};
}

/* The q of one Accept range's parameters ("; q=0.5; x=y"): 1 when absent,
 * -1 when malformed (the range is then ignored). */
static double accept_q(const char *p, const char *end)
{
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        slice_t prm = trim(p, semi ? semi : end);
        if (prm.len > 2 && (prm.ptr[0] == 'q' || prm.ptr[0] == 'Q') && prm.ptr[1] == '=') {
            char buf[8];
            if (prm.len - 2 >= sizeof buf)
                return -1;
            memcpy(buf, prm.ptr + 2, prm.len - 2);
            buf[prm.len - 2] = '\0';
            char *e;
            double q = strtod(buf, &e);
            return *e || q < 0 || q > 1 ? -1 : q;
        }
        p = semi ? semi + 1 : end;
    }
    return 1;
}

/* Picks from Accept the type with the highest q (the first on a tie) among
 * those written here; a wildcard picks fallback. False when Accept names
 * nothing acceptable: then the fallback is used too (RFC 9110 12.5.1 lets a
 * server disregard Accept rather than answer 406; docs/fhir-api.md). */
static bool accept_pick(slice_t accept, neg_t fallback, neg_t *out)
{
    double best = 0;
    const char *p = accept.ptr, *end = accept.ptr + accept.len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *rend = comma ? comma : end;
        const char *semi = memchr(p, ';', (size_t)(rend - p));
        slice_t type = trim(p, semi ? semi : rend);
        double q = semi ? accept_q(semi + 1, rend) : 1;
        neg_t n = fallback;
        bool ok = media_type(type.ptr, type.len, &n) ||
                  (type.len == 3 && memcmp(type.ptr, "*/*", 3) == 0) ||
                  (type.len == 13 && strncasecmp(type.ptr, "application/*", 13) == 0);
        if (ok && q > best) {
            best = q;
            *out = n;
        }
        p = comma ? comma + 1 : end;
    }
    return best > 0;
}

/* The answer's format (FHIR http.html#mime): _format wins, then Accept, then
 * fallback (the request body's own type). _pretty=true indents. */
static neg_t negotiate(const http_req_t *req, neg_t fallback)
{
    neg_t n = fallback;
    slice_t f;
    bool fixed = false;
    if (http_req_query_param(req, "_format", &f) && f.len) {
        char buf[64];
        size_t len;
        /* A raw '+' (application/fhir+json) is common in _format; it is
         * not a space here. */
        if (http_pct_decode(f, false, buf, sizeof buf, &len))
            fixed = media_type(buf, len, &n);
    }
    slice_t accept = http_req_header(req, "Accept");
    if (!fixed && accept.ptr && accept.len)
        accept_pick(accept, fallback, &n);
    slice_t pretty;
    n.pretty = http_req_query_param(req, "_pretty", &pretty) && pretty.len == 4 &&
               memcmp(pretty.ptr, "true", 4) == 0;
    return n;
}

/* Prefer: return=minimal | representation | OperationOutcome. */
static prefer_t prefer_of(const http_req_t *req)
{
    slice_t p = http_req_header(req, "Prefer");
    if (slice_has(p, "return=minimal"))
        return PREFER_MINIMAL;
    if (slice_has(p, "return=representation"))
        return PREFER_REPRESENTATION;
    return PREFER_OUTCOME;
}

/* ---------------------------------------------------------------- answers */

static void finish_with(http_job_t *j, int status, slice_t body, const char *extra)
{
    daemon_t *d = j->d;
    respond(j->req, status, j->neg, body, extra, &j->arena);
    double secs = (double)(uv_hrtime() - j->t0) / 1e9;
    metrics_latency(&d->metrics, secs);
    job_free(j);
}

static void finish(http_job_t *j, int status, slice_t body)
{
    finish_with(j, status, body, NULL);
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
    const rule_verdict_t *v = r->status == GATE_JUDGED ? &r->verdict : NULL;
    if (j->route == ROUTE_VALIDATE)
        metrics_count_validation(&j->d->metrics, metric_fmt(j), o, v);
    else
        metrics_count(&j->d->metrics, metric_fmt(j), o, v);
    char idb[LOG_ID_BUF];
    log_info("http conn=%llu client=%s id=%s %s findings=%zu %s",
             (unsigned long long)http_req_conn_id(j->req), j->client, log_id(r->control_id, idb),
             r->status == GATE_UNREADABLE ? "unreadable" : verdict_name(r->verdict.kind),
             r->verdict.nfindings,
             j->route == ROUTE_VALIDATE ? "validate-only"
             : j->stored[i] == ERR_OK   ? "stored"
                                        : "not-stored");
}

/* The HTTP status of a store that failed: the queue refusing the item as
 * it is (an id over QUEUE_CONTROL_ID_MAX bytes, a payload over its limit) is
 * the sender's to fix, and sending it again would fail again; anything else
 * (the commit failed, the daemon is stopping) is ours and worth a resend. */
static int store_fail_status(err_t e)
{
    switch (e) {
    case ERR_BAD_VALUE:
    case ERR_EMPTY: return 400;
    case ERR_TOO_LARGE: return 413;
    case ERR_NOT_FOUND: return 500; /* the Claim would not serialise: a bug of ours */
    default: return 503;
    }
}

static const char *store_fail_text(err_t e)
{
    switch (e) {
    case ERR_BAD_VALUE: return "the Claim cannot be stored as sent (is its id over 199 bytes?)";
    case ERR_EMPTY: return "the Claim cannot be stored: it serialised to nothing";
    case ERR_TOO_LARGE: return "the Claim is too large to be stored";
    case ERR_NOT_FOUND: return "the Claim could not be serialised for storage";
    default: return "the Claim could not be stored; send it again";
    }
}

static int claim_status(const http_job_t *j, size_t i)
{
    const gate_result_t *r = &j->results[i];
    if (r->status == GATE_UNREADABLE)
        return r->detail.code == ERR_TOO_LARGE ? 413 : 400;
    if (j->stored[i] != ERR_OK)
        return store_fail_status(j->stored[i]);
    return r->verdict.kind == VERDICT_REJECT ? 422 : 201;
}

/* A FHIR id ([A-Za-z0-9\-\.]{1,64}): only such an id is put in a
 * Location, so a header never carries what the sender wrote verbatim. */
static bool fhir_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)id[i]) || id[i] == '-' || id[i] == '.'))
            return false;
    return true;
}

/* The id a created Claim's Location names: its own id when that is a FHIR
 * id, else one made here ("sg-" + time + index; docs/fhir-api.md). */
static const char *location_id(http_job_t *j, size_t i)
{
    const char *id = j->results[i].control_id;
    if (fhir_id_ok(id))
        return id;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return arena_printf(&j->arena, "sg-%llx-%09ld-%zu", (unsigned long long)ts.tv_sec, ts.tv_nsec,
                        i);
}

static void answer_claim(http_job_t *j)
{
    count_claim(j, 0);
    slice_t body = {"", 0};
    const gate_result_t *r = &j->results[0];
    int status = claim_status(j, 0);
    const char *extra = NULL;
    if (r->status == GATE_UNREADABLE)
        fhir_out_outcome_error(&r->detail, j->out_fmt, &j->arena, &body);
    else if (j->stored[0] != ERR_OK) {
        err_detail_t e;
        err_clear(&e);
        err_set(&e, j->stored[0], 0, "%s", store_fail_text(j->stored[0]));
        fhir_out_outcome_error(&e, j->out_fmt, &j->arena, &body);
    } else if (status != 201 || j->prefer == PREFER_OUTCOME)
        fhir_out_outcome_verdict(&r->verdict, j->out_fmt, &j->arena, &body);
    else if (j->prefer == PREFER_REPRESENTATION) {
        /* The Claim as stored and forwarded, annotations included. It can
         * only be written in its own format: the media type says which. */
        fhir_out_claim(j->doc, 0, &j->arena, &body);
        if (j->neg.fmt != j->in_fmt) {
            j->neg.fmt = j->in_fmt;
            j->neg.ctype = j->in_fmt == FHIR_FMT_XML ? CT_XML : CT_JSON;
        }
    }
    if (status == 201) {
        const char *base = j->d->cfg.fhir_base;
        size_t blen = strlen(base);
        while (blen && base[blen - 1] == '/')
            blen--;
        extra = arena_printf(&j->arena, "Location: %.*s/Claim/%s/_history/1\r\nETag: W/\"1\"\r\n",
                             (int)blen, base, j->ids[0]);
    }
    finish_with(j, status, body, extra);
}

/* A transaction whose Claims all passed but whose group put failed: none of
 * them is stored, so none will be forwarded, and the answer is one
 * OperationOutcome that says so (FHIR: a failed transaction answers with one
 * error status and an OperationOutcome, never a transaction-response). 503
 * when the failure is ours (the commit failed, the daemon is stopping): the
 * whole Bundle may be sent again and cannot bill anything twice. 400 or 413
 * when the queue refused one Claim as sent, naming its entry. */
static void answer_transaction_unstored(http_job_t *j)
{
    err_t st = j->txn_stored;
    int status = store_fail_status(st);
    err_detail_t e;
    err_clear(&e);
    if (status == 503) {
        err_set(&e, ERR_QUEUE, 0,
                "the transaction could not be stored: none of its %zu Claims was stored or "
                "forwarded; send the whole Bundle again",
                j->nclaims);
    } else {
        err_set(&e, st, 0, "%s; none of the transaction's %zu Claims was stored or forwarded",
                store_fail_text(st), j->nclaims);
        if (status < 500 && j->txn_refused < j->nclaims)
            snprintf(e.where, sizeof e.where, "Bundle.entry[%zu].resource",
                     fhir_doc_claim_entry(j->doc, j->txn_refused));
    }
    slice_t body;
    fhir_out_outcome_error(&e, j->out_fmt, &j->arena, &body);
    finish(j, status, body);
}

/* Fills the response entry of every Bundle.entry, in request order: a
 * Claim's own answer, a resource-less entry a 400, and any other resource
 * 200 with a note that it only served references (docs/fhir-api.md). */
static bool bundle_entries(http_job_t *j)
{
    bool any_bad = false;
    j->nentries = fhir_doc_entry_count(j->doc);
    j->entries = arena_calloc(&j->arena, j->nentries ? j->nentries : 1, sizeof *j->entries);
    for (size_t n = 0; n < j->nentries; n++) {
        const char *type = fhir_doc_entry_type(j->doc, n);
        fhir_out_entry_t *en = &j->entries[n];
        if (!type) {
            err_detail_t *e = arena_calloc(&j->arena, 1, sizeof *e);
            err_set(e, ERR_UNSUPPORTED, 0,
                    "an entry without a resource: this server takes POSTed Claims only");
            snprintf(e->where, sizeof e->where, "Bundle.entry[%zu]", n);
            en->status = 400;
            en->error = e;
            any_bad = true;
        } else if (strcmp(type, "Claim") != 0) {
            en->status = 200;
            en->note = arena_printf(&j->arena,
                                    "%s not stored or forwarded: it only serves the Claims' "
                                    "references",
                                    type);
        }
    }
    for (size_t i = 0; i < j->nclaims; i++) {
        fhir_out_entry_t *en = &j->entries[fhir_doc_claim_entry(j->doc, i)];
        count_claim(j, i);
        int st = claim_status(j, i);
        any_bad |= st >= 400;
        en->status = st;
        en->verdict = j->results[i].status == GATE_JUDGED ? &j->results[i].verdict : NULL;
        en->error = j->results[i].status == GATE_UNREADABLE ? &j->results[i].detail : NULL;
        if (st == 201)
            en->location = arena_printf(&j->arena, "Claim/%s/_history/1", j->ids[i]);
        if (st < 300 && j->prefer == PREFER_MINIMAL)
            en->verdict = NULL;
        if (j->results[i].status == GATE_JUDGED && j->stored[i] != ERR_OK) {
            /* A batch entry that could not be stored says why in its outcome. */
            err_detail_t *e = arena_calloc(&j->arena, 1, sizeof *e);
            err_set(e, j->stored[i], 0, "%s", store_fail_text(j->stored[i]));
            en->error = e;
        }
    }
    return any_bad;
}

static void answer_bundle(http_job_t *j)
{
    bool any_bad = bundle_entries(j);
    if (j->transaction && j->txn_stored != ERR_OK) {
        answer_transaction_unstored(j);
        return;
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
                /* The Claim's own error, placed in the Bundle, and said to
                 * have stopped the whole transaction. */
                err_detail_t e = j->results[i].detail;
                char buf[sizeof e.msg + sizeof e.where + 96];
                if (strncmp(e.where, "Claim", 5) == 0) {
                    snprintf(buf, sizeof buf, "Bundle.entry[%zu].resource%s",
                             fhir_doc_claim_entry(j->doc, i), j->results[i].detail.where + 5);
                    snprintf(e.where, sizeof e.where, "%.*s", (int)sizeof e.where - 1, buf);
                }
                snprintf(buf, sizeof buf, "%s; none of the transaction's %zu Claims was stored or forwarded",
                         j->results[i].detail.msg, j->nclaims);
                snprintf(e.msg, sizeof e.msg, "%.*s", (int)sizeof e.msg - 1, buf);
                fhir_out_outcome_error(&e, j->out_fmt, &j->arena, &body);
                finish(j, claim_status(j, i), body);
                return;
            }
        fhir_out_outcome_verdict(&all, j->out_fmt, &j->arena, &body);
        finish(j, 422, body);
        return;
    }
    fhir_out_batch_response(j->transaction, j->entries, j->nentries, j->out_fmt, &j->arena, &body);
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

/* The queue item of Claim i (payload in the job's arena). */
static err_t claim_item(http_job_t *j, size_t i, dest_t dest, queue_item_t *item)
{
    slice_t payload;
    if (fhir_out_claim(j->doc, i, &j->arena, &payload) != ERR_OK)
        return ERR_NOT_FOUND;
    const gate_result_t *r = &j->results[i];
    *item = (queue_item_t){
        .dest = dest_name(dest),
        .control_id = r->control_id ? r->control_id : "",
        .content_type =
            j->in_fmt == FHIR_FMT_XML ? "application/fhir+xml" : "application/fhir+json",
        .payload = payload.ptr,
        .payload_len = payload.len,
        .findings = wlmeta_summary(&j->arena, &r->verdict),
        .meta = wlmeta_json(&j->arena, "http", http_req_peer(j->req), r),
        .worklist = wlmeta_kind(dest, r, j->d->cfg.worklist_annotated),
        .order_key = DAEMON_LANE_HTTP | http_req_conn_id(j->req),
    };
    return ERR_OK;
}

static void store_claim(http_job_t *j, size_t i, dest_t dest)
{
    queue_item_t item;
    if (claim_item(j, i, dest, &item) != ERR_OK) {
        j->stored[i] = ERR_NOT_FOUND;
        return;
    }
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

static void transaction_failed(http_job_t *j, err_t status)
{
    log_error("http conn=%llu transaction of %zu Claims not stored (%s): none stored or "
              "forwarded",
              (unsigned long long)http_req_conn_id(j->req), j->nclaims, err_str(status));
    j->txn_stored = status;
    for (size_t i = 0; i < j->nclaims; i++)
        j->stored[i] = status;
}

static void stored_transaction(daemon_t *d, void *job, err_t status)
{
    (void)d;
    http_job_t *j = job;
    if (status != ERR_OK)
        transaction_failed(j, status);
    store_done(j);
}

/* Stores every Claim of a transaction that passed as one group: all of them
 * in one queue transaction, consecutive and in entry order, or none. */
static void store_transaction(http_job_t *j)
{
    queue_item_t *items = arena_calloc(&j->arena, j->nclaims, sizeof *items);
    for (size_t i = 0; i < j->nclaims; i++)
        if (claim_item(j, i, DEST_FHIR, &items[i]) != ERR_OK) {
            transaction_failed(j, ERR_NOT_FOUND);
            return;
        }
    j->pending++;
    daemon_put_many(j->d, items, j->nclaims, &j->txn_refused, stored_transaction, j);
}

/* The rule pack's name and version ("spine rules v1") for the header
 * annotation, as the HL7 header gives them. */
static const char *pack_name(http_job_t *j)
{
    const rule_pack_t *p = j->pack->pack;
    return arena_printf(&j->arena, "%s v%d", rule_pack_name(p), rule_pack_version(p));
}

/* Annotates Claim i for forwarding: one pass of findings replacing any
 * earlier spinegate pass; an accepted Claim only has earlier passes taken
 * away unless annotate-accepted asks for the header on it too. */
static void annotate(http_job_t *j, size_t i, const char *pack)
{
    const rule_verdict_t *v = &j->results[i].verdict;
    if (v->nfindings || v->kind != VERDICT_ACCEPT || j->annotate_accepted)
        fhir_out_annotate_pack(j->doc, i, v, pack);
    else
        fhir_out_strip(j->doc, i);
}

/* $validate: judged, never stored. A Claim whose content cannot be read is
 * a verdict too, so every answer here is 200 with its OperationOutcome
 * (only a body that is not a FHIR document at all got a 4xx earlier). */
static void answer_validate(http_job_t *j)
{
    count_claim(j, 0);
    slice_t body;
    if (j->results[0].status == GATE_UNREADABLE)
        fhir_out_outcome_error(&j->results[0].detail, j->out_fmt, &j->arena, &body);
    else
        fhir_out_outcome_verdict(&j->results[0].verdict, j->out_fmt, &j->arena, &body);
    finish(j, 200, body);
}

/* On the pool thread: judges every Claim and, unless this is a dry run,
 * annotates the ones that were judged for forwarding. */
static void judge_all(http_job_t *j)
{
    j->nclaims = fhir_doc_claim_count(j->doc);
    size_t n = j->nclaims ? j->nclaims : 1;
    j->results = arena_calloc(&j->arena, n, sizeof *j->results);
    j->stored = arena_calloc(&j->arena, n, sizeof *j->stored);
    j->ids = arena_calloc(&j->arena, n, sizeof *j->ids);
    j->all_pass = true;
    for (size_t i = 0; i < j->nclaims; i++) {
        gate_fhir_claim(j->pack->pack, j->doc, i, &j->limits, &j->arena, &j->results[i]);
        if (j->results[i].status != GATE_JUDGED || j->results[i].verdict.kind == VERDICT_REJECT)
            j->all_pass = false;
    }
    if (j->route == ROUTE_VALIDATE)
        return;
    const char *pack = pack_name(j);
    for (size_t i = 0; i < j->nclaims; i++) {
        j->ids[i] = location_id(j, i);
        if (j->results[i].status == GATE_JUDGED)
            annotate(j, i, pack);
    }
}

/* On the loop thread: stores what was judged. Claims that pass go to "fhir"
 * (unless the transaction fails as a whole), rejected ones to the reject
 * sink. */
static void store_judged(http_job_t *j)
{
    if (j->route == ROUTE_VALIDATE) {
        answer_validate(j);
        return;
    }
    j->pending = 1; /* held until every store is issued */
    if (j->transaction && j->all_pass) {
        store_transaction(j);
        store_done(j);
        return;
    }
    for (size_t i = 0; i < j->nclaims; i++) {
        gate_result_t *r = &j->results[i];
        if (r->status != GATE_JUDGED)
            continue;
        if (r->verdict.kind == VERDICT_REJECT)
            store_claim(j, i, DEST_REJECT_FHIR);
        else if (!j->transaction || j->all_pass)
            store_claim(j, i, DEST_FHIR);
    }
    store_done(j);
}

/* ---------------------------------------------------------------- status pages */

/* ---- readiness: each destination's state and the queue's fill */

typedef struct {
    const char *name;
    out_dest_t *o;
} dest_ref_t;

static size_t dest_refs(daemon_t *d, dest_ref_t refs[DEST_COUNT])
{
    size_t n = 0;
    for (dest_t i = 0; i < DEST_COUNT; i++)
        if (d->out[i])
            refs[n++] = (dest_ref_t){dest_name(i), d->out[i]};
    return n;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "ok": nothing failing; "retrying": the head message failed and is retried
 * (downstream down or refusing); "blocked": it waits on a local storage
 * fault (outbox, dead-letter folder, queue disk full or failing). */
static const char *dest_state(const out_stats_t *st)
{
    if (!st->failing_since_ms)
        return "ok";
    return st->storage_failing ? "blocked" : "retrying";
}

static uint64_t high_water(const daemon_t *d)
{
    if (d->cfg.queue_high_water > 0)
        return (uint64_t)d->cfg.queue_high_water;
    return (uint64_t)d->cfg.queue_max * 9 / 10;
}

static void iso_time(int64_t ms, char *buf, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Adds {"state", "since", "failing_s", "last_error", "oldest_age_s"} for one
 * destination to x; returns true when it has failed longer than unready-after. */
static bool dest_json(const daemon_t *d, const out_stats_t *st, int64_t now, cJSON *x)
{
    cJSON_AddStringToObject(x, "state", dest_state(st));
    bool late = false;
    if (st->failing_since_ms) {
        char since[32];
        iso_time(st->failing_since_ms, since, sizeof since);
        cJSON_AddStringToObject(x, "since", since);
        int64_t failing = now - st->failing_since_ms;
        cJSON_AddNumberToObject(x, "failing_s", (double)failing / 1000.0);
        late = failing >= d->cfg.unready_after_ms;
    }
    cJSON_AddNumberToObject(x, "oldest_age_s",
                            st->oldest_ms ? (double)(now - st->oldest_ms) / 1000.0 : 0);
    return late;
}

bool daemon_destinations_json(daemon_t *d, cJSON *dl)
{
    int64_t now = wall_ms();
    bool ready = true;
    dest_ref_t refs[4];
    size_t n = dest_refs(d, refs);
    for (size_t i = 0; i < n; i++) {
        out_stats_t st;
        out_stats(refs[i].o, &st);
        cJSON *x = cJSON_AddObjectToObject(dl, refs[i].name);
        if (dest_json(d, &st, now, x))
            ready = false;
        cJSON_AddNumberToObject(x, "depth", (double)queue_depth(d->queue, refs[i].name));
        cJSON_AddStringToObject(x, "last_error", st.failing_since_ms ? st.last_error : "");
    }
    return ready;
}

/* GET /readyz: 200 when every destination moves and the queue is below its
 * high-water mark, 503 otherwise (a load balancer or an operator's monitor
 * stops sending here; /healthz stays liveness). */
static void serve_readyz(daemon_t *d, http_req_t *req)
{
    queue_stats_t qs;
    queue_stats(d->queue, &qs);
    cJSON *o = cJSON_CreateObject();
    bool ready = !d->stopping;
    if (!daemon_destinations_json(d, cJSON_AddObjectToObject(o, "destinations")))
        ready = false;
    uint64_t hw = high_water(d);
    cJSON *q = cJSON_AddObjectToObject(o, "queue");
    cJSON_AddNumberToObject(q, "depth", (double)qs.depth);
    cJSON_AddNumberToObject(q, "high_water", (double)hw);
    if (qs.depth > hw)
        ready = false;
    /* A queue that cannot store now (its database unreachable) refuses every
     * message: a load balancer should send them to another instance. */
    cJSON_AddBoolToObject(q, "storing", !qs.unavailable);
    if (qs.unavailable)
        ready = false;
    cJSON_AddStringToObject(o, "status", d->stopping ? "stopping" : ready ? "ready" : "unready");
    char *s = cJSON_PrintUnformatted(o);
    http_req_respond(req, ready ? 200 : 503, "application/json", s, strlen(s), NULL);
    cJSON_free(s);
    cJSON_Delete(o);
}

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
    bool ready = !d->stopping;
    dest_ref_t outs[DEST_COUNT];
    size_t nouts = dest_refs(d, outs);
    for (size_t i = 0; i < nouts; i++) {
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
        if (dest_json(d, &st, wall_ms(), x))
            ready = false;
    }
    cJSON_AddBoolToObject(o, "ready", ready && qs.depth <= high_water(d));
    char *s = cJSON_PrintUnformatted(o);
    http_req_respond(req, d->stopping ? 503 : 200, "application/json", s, strlen(s), NULL);
    cJSON_free(s);
    cJSON_Delete(o);
}

/* Appends to buf[0..cap) at *off, truncating (never past cap) when full. */
static void appendf(char *buf, size_t cap, size_t *off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void appendf(char *buf, size_t cap, size_t *off, const char *fmt, ...)
{
    if (*off + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *off, cap - *off, fmt, ap);
    va_end(ap);
    if (w > 0)
        *off = *off + (size_t)w < cap ? *off + (size_t)w : cap - 1;
}

/* One counter without labels: its HELP and TYPE lines, then its value. */
static void append_counter(char *buf, size_t cap, size_t *off, const char *name, const char *help,
                           uint64_t value)
{
    appendf(buf, cap, off, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
            (unsigned long long)value);
}

static void serve_metrics(daemon_t *d, http_req_t *req)
{
    char extra[8192];
    size_t off = 0;
    queue_stats_t qs;
    queue_stats(d->queue, &qs);
    appendf(extra, sizeof extra, &off,
            "# HELP spinegate_queue_depth Messages waiting for delivery.\n"
            "# TYPE spinegate_queue_depth gauge\n");
    for (size_t i = 0; i < qs.ndest && off < sizeof extra - 256; i++)
        appendf(extra, sizeof extra, &off, "spinegate_queue_depth{destination=\"%s\"} %llu\n",
                qs.dest[i].name, (unsigned long long)qs.dest[i].depth);
    appendf(extra, sizeof extra, &off,
            "# HELP spinegate_delivery_total Delivery results by destination.\n"
            "# TYPE spinegate_delivery_total counter\n");
    for (size_t i = 0; i < qs.ndest && off < sizeof extra - 512; i++)
        appendf(extra, sizeof extra, &off,
                "spinegate_delivery_total{destination=\"%s\",result=\"delivered\"} %llu\n"
                "spinegate_delivery_total{destination=\"%s\",result=\"retry\"} %llu\n"
                "spinegate_delivery_total{destination=\"%s\",result=\"dead_letter\"} %llu\n",
                qs.dest[i].name, (unsigned long long)qs.dest[i].delivered, qs.dest[i].name,
                (unsigned long long)qs.dest[i].retries, qs.dest[i].name,
                (unsigned long long)qs.dest[i].dead);
    append_counter(extra, sizeof extra, &off, "spinegate_queue_commits_total",
                   "Group commits of the queue.", qs.commits);
    append_counter(extra, sizeof extra, &off, "spinegate_queue_commit_failures_total",
                   "Group commits that failed (full disk, I/O error); their marks are retried.",
                   qs.commit_failures);
    append_counter(extra, sizeof extra, &off, "spinegate_queue_syncs_total",
                   "fdatasync calls of the queue's WAL and message log (queue-sync=full).",
                   qs.syncs);
    dest_ref_t refs[4];
    size_t nref = dest_refs(d, refs);
    int64_t now = wall_ms();
    static const char *const heads[] = {
        "# HELP spinegate_delivery_oldest_age_seconds Age of the oldest message waiting, by "
        "destination.\n# TYPE spinegate_delivery_oldest_age_seconds gauge\n",
        "# HELP spinegate_delivery_failing_seconds How long the message at the head has been "
        "failing (0: not failing).\n# TYPE spinegate_delivery_failing_seconds gauge\n",
        "# HELP spinegate_delivery_storage_errors_total Local writes that failed (outbox, "
        "dead-letter, cursor): the message stays pending.\n"
        "# TYPE spinegate_delivery_storage_errors_total counter\n",
        "# HELP spinegate_delivery_rejects_total Application rejects from downstream (AE/AR, "
        "HTTP 4xx).\n# TYPE spinegate_delivery_rejects_total counter\n",
    };
    for (size_t k = 0; k < 4; k++) {
        appendf(extra, sizeof extra, &off, "%s", heads[k]);
        for (size_t i = 0; i < nref && off < sizeof extra - 256; i++) {
            out_stats_t st;
            out_stats(refs[i].o, &st);
            double v =
                k == 0   ? (st.oldest_ms ? (double)(now - st.oldest_ms) / 1000.0 : 0)
                : k == 1 ? (st.failing_since_ms ? (double)(now - st.failing_since_ms) / 1000.0 : 0)
                : k == 2 ? (double)st.storage_errors
                         : (double)st.rejects;
            appendf(extra, sizeof extra, &off,
                    k < 2 ? "%s{destination=\"%s\"} %.3f\n" : "%s{destination=\"%s\"} %.0f\n",
                    k == 0   ? "spinegate_delivery_oldest_age_seconds"
                    : k == 1 ? "spinegate_delivery_failing_seconds"
                    : k == 2 ? "spinegate_delivery_storage_errors_total"
                             : "spinegate_delivery_rejects_total",
                    refs[i].name, v);
        }
    }
    if (d->mllp) {
        mllp_stats_t ms;
        mllp_server_stats(d->mllp, &ms);
        appendf(extra, sizeof extra, &off,
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
    appendf(extra, sizeof extra, &off,
            "# HELP spinegate_buffered_bytes Bytes held for unfinished and "
            "waiting messages (max-buffered-bytes).\n"
            "# TYPE spinegate_buffered_bytes gauge\n"
            "spinegate_buffered_bytes %zu\n"
            "# HELP spinegate_buffered_pauses_total Times a connection stopped "
            "being read for the buffer budget.\n"
            "# TYPE spinegate_buffered_pauses_total counter\n"
            "spinegate_buffered_pauses_total %llu\n",
            bs.used, (unsigned long long)bs.pauses);
    daemon_tls_metrics(d, extra, sizeof extra, &off);
    size_t len;
    char *text = metrics_render(&d->metrics, extra, &len);
    http_req_respond(req, 200, "text/plain; version=0.0.4", text, len, NULL);
    xfree(text);
}

/* ---------------------------------------------------------------- access */

/* What the request shows to authenticate itself. A listener that verifies
 * client certificates (mTLS) sets cert_verified and cert_name here from the
 * request's connection; a plain listener has only the Authorization header. */
static auth_creds_t creds_of(const http_req_t *req)
{
    /* Only a connection whose client certificate was verified against
     * http-tls-client-ca and the allow-list has a subject. */
    const char *subject = http_req_client_subject(req);
    return (auth_creds_t){.authorization = http_req_header(req, "Authorization"),
                          .cert_verified = subject != NULL,
                          .cert_name = subject};
}

/* Lets req through to an endpoint that needs scope, with who set to the
 * name it authenticated as ("-" for nobody); otherwise answers 401 (with
 * WWW-Authenticate, RFC 6750 section 3) or 403, counts and logs the refusal,
 * and returns false. http-auth = none lets everything through. */
static bool authorize(daemon_t *d, http_req_t *req, unsigned scope, neg_t neg, char *who,
                      size_t cap)
{
    snprintf(who, cap, "-");
    if (d->cfg.auth == CONFIG_AUTH_NONE)
        return true;
    auth_creds_t creds = creds_of(req);
    auth_result_t r;
    if (auth_check(d->tokens, &creds, scope, &r) == AUTH_OK) {
        snprintf(who, cap, "%s", r.name);
        return true;
    }
    const char *why, *challenge;
    char extra[160];
    int status = 401;
    err_t code = ERR_UNAUTHORIZED;
    if (r.status == AUTH_MISSING) {
        d->metrics.auth_refused[METRIC_AUTH_MISSING]++;
        why = "this endpoint needs a bearer token (Authorization: Bearer TOKEN)";
        challenge = "Bearer realm=\"spinegate\"";
    } else if (r.status == AUTH_INVALID) {
        d->metrics.auth_refused[METRIC_AUTH_INVALID]++;
        why = "the bearer token is not valid";
        challenge = "Bearer realm=\"spinegate\", error=\"invalid_token\"";
    } else {
        d->metrics.auth_refused[METRIC_AUTH_FORBIDDEN]++;
        status = 403;
        code = ERR_FORBIDDEN;
        why = scope == AUTH_SCOPE_SUBMIT     ? "this token may not submit claims (scope submit)"
              : scope == AUTH_SCOPE_VALIDATE ? "this token may not use $validate (scope validate)"
              : scope == AUTH_SCOPE_METRICS  ? "this token may not read metrics (scope metrics)"
                                             : "this token lacks the scope this endpoint needs";
        challenge = NULL;
    }
    if (challenge)
        snprintf(extra, sizeof extra, "WWW-Authenticate: %s\r\n", challenge);
    else
        snprintf(extra, sizeof extra,
                 "WWW-Authenticate: Bearer realm=\"spinegate\", error=\"insufficient_scope\", "
                 "scope=\"%s\"\r\n",
                 auth_scope_name(scope));
    slice_t path = http_req_path(req);
    log_warn("http conn=%llu from %s: %d %s %.*s, client=%s",
             (unsigned long long)http_req_conn_id(req), http_req_peer(req), status,
             http_req_method(req), (int)(path.len > 200 ? 200 : path.len), path.ptr, r.name);
    arena_t a;
    arena_init(&a, 2048);
    err_detail_t e;
    err_clear(&e);
    err_set(&e, code, 0, "%s", why);
    slice_t body;
    fhir_out_outcome_error(&e, neg.fmt, &a, &body);
    respond(req, status, neg, body, extra, &a);
    arena_free(&a);
    return false;
}

/* ---------------------------------------------------------------- routing */

size_t serve_http_error(const http_req_t *req, int status, const char *why, char *out, size_t cap,
                        const char **content_type, void *user)
{
    (void)user;
    (void)status;
    neg_t neg = neg_default(FHIR_FMT_JSON);
    if (req)
        neg = negotiate(req, neg);
    arena_t a;
    arena_init(&a, 2048);
    err_detail_t e;
    err_clear(&e);
    err_set(&e, status == 413 ? ERR_TOO_LARGE : status == 408 ? ERR_TIMEOUT : ERR_PROTOCOL, 0,
            "%s", why);
    slice_t body;
    fhir_out_outcome_error(&e, neg.fmt, &a, &body);
    size_t n = body.len < cap ? body.len : 0;
    if (n)
        memcpy(out, body.ptr, n);
    *content_type = neg.ctype;
    arena_free(&a);
    return n;
}

static void serve_metadata(daemon_t *d, http_req_t *req, neg_t neg)
{
    arena_t a;
    arena_init(&a, 8192);
    /* How to authenticate is part of what the server implements. */
    const char *security =
        d->cfg.auth == CONFIG_AUTH_TOKEN
            ? "Bearer tokens (RFC 6750, Authorization: Bearer): scope submit for Claim and "
              "Bundles, validate for $validate; metadata is open. A 401 names the Bearer scheme."
            : NULL;
    fhir_out_capability_t cap = {.software_name = "spinegate",
                                 .software_version = PACKAGE_VERSION,
                                 .date = SERVE_CAPABILITY_DATE,
                                 .security = security};
    slice_t body;
    fhir_out_capability(&cap, neg.fmt, &a, &body);
    respond(req, 200, neg, body, NULL, &a);
    arena_free(&a);
}

/* Whether a parsed document fits its route: when it does not, sets
 * j->refusal (and j->refusal_where). Pure: runs on the pool thread. */
static void check_document(http_job_t *j)
{
    const char *type = fhir_doc_resource_type(j->doc);
    const char *why = NULL, *where = NULL;
    bool bundle = strcmp(type, "Bundle") == 0, params = strcmp(type, "Parameters") == 0;
    if (j->route == ROUTE_VALIDATE) {
        if (bundle)
            why = "$validate checks one Claim: send the Claim, or Parameters with it as resource";
        else if (strcmp(fhir_doc_validate_mode(j->doc), "delete") == 0) {
            why = "$validate mode delete is not supported: Claims are never deleted here";
            where = "Parameters.parameter";
        }
    } else if (j->route == ROUTE_CLAIM) {
        if (bundle)
            why = "POST a Bundle to the base URL, not to Claim";
        else if (params)
            why = "Parameters go to Claim/$validate or $validate; POST the Claim itself here";
    } else if (!bundle) {
        why = "POST a Claim to [base]/Claim; the base takes a batch or transaction Bundle";
    } else if (fhir_doc_claim_count(j->doc) == 0) {
        why = "the Bundle holds no Claim";
    } else {
        /* Only batch and transaction Bundles are requests; the type decides
         * whether one bad Claim fails them all. */
        const char *bt = fhir_doc_bundle_type(j->doc);
        if (strcmp(bt, "batch") != 0 && strcmp(bt, "transaction") != 0) {
            why = "POST a Bundle of type batch or transaction";
            where = "Bundle.type";
        } else if (strcmp(bt, "transaction") == 0) {
            /* All or nothing: an entry that cannot be carried out fails the
             * transaction before anything is judged or stored. */
            for (size_t n = 0; n < fhir_doc_entry_count(j->doc) && !why; n++)
                if (!fhir_doc_entry_type(j->doc, n)) {
                    why = "an entry without a resource: this server takes POSTed Claims only; "
                          "nothing of the transaction was stored";
                    where = arena_printf(&j->arena, "Bundle.entry[%zu]", n);
                }
        }
    }
    j->refusal = why;
    j->refusal_where = where;
}

/* Answers a document that did not fit its route. */
static void refuse_document(http_job_t *j)
{
    err_detail_t e;
    err_clear(&e);
    err_set(&e, ERR_UNSUPPORTED, 0, "%s", j->refusal);
    if (j->refusal_where)
        snprintf(e.where, sizeof e.where, "%s", j->refusal_where);
    if (j->route == ROUTE_VALIDATE)
        metrics_count_validation(&j->d->metrics, metric_fmt(j), METRIC_UNREADABLE, NULL);
    slice_t out;
    fhir_out_outcome_error(&e, j->out_fmt, &j->arena, &out);
    finish(j, 400, out);
}

/* On a pool thread: parse the body, check it fits the route, judge. */
static void parse_and_judge(lane_job_t *lane)
{
    http_job_t *j = (http_job_t *)lane;
    err_clear(&j->parse_err);
    j->parse_rc = fhir_parse(j->body->data, j->body->len, j->in_fmt, &j->parse_opts, &j->doc,
                             &j->parse_err);
    if (j->parse_rc != ERR_OK)
        return;
    check_document(j);
    if (j->refusal)
        return;
    j->transaction = strcmp(fhir_doc_bundle_type(j->doc), "transaction") == 0;
    judge_all(j);
}

/* Back on the loop thread: answer an unreadable or misplaced document, or
 * store what was judged. */
static void after_judging(lane_job_t *lane)
{
    http_job_t *j = (http_job_t *)lane;
    daemon_t *d = j->d;
    if (j->parse_rc != ERR_OK) {
        err_detail_t *e = &j->parse_err;
        if (j->route == ROUTE_VALIDATE)
            metrics_count_validation(&d->metrics, metric_fmt(j), METRIC_UNREADABLE, NULL);
        else
            metrics_count(&d->metrics, metric_fmt(j), METRIC_UNREADABLE, NULL);
        log_warn("http conn=%llu client=%s unreadable %s body (%s%s%s)",
                 (unsigned long long)http_req_conn_id(j->req), j->client,
                 j->in_fmt == FHIR_FMT_XML ? "XML" : "JSON", err_name(e->code),
                 e->where[0] ? " at " : "", e->where);
        slice_t out;
        fhir_out_outcome_error(e, j->out_fmt, &j->arena, &out);
        finish(j, 400, out);
        return;
    }
    if (j->refusal) {
        refuse_document(j);
        return;
    }
    store_judged(j);
}

void serve_http_request(http_req_t *req, void *user)
{
    daemon_t *d = user;
    char path[1024];
    size_t plen;
    neg_t fallback = negotiate(req, neg_default(FHIR_FMT_JSON));
    if (!http_pct_decode(http_req_path(req), false, path, sizeof path, &plen)) {
        respond_error(req, 400, fallback, ERR_PROTOCOL, NULL, "malformed request path");
        return;
    }
    while (plen > 1 && path[plen - 1] == '/')
        path[--plen] = '\0';
    const char *method = http_req_method(req);
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;

    if (strcmp(path, "/healthz") == 0 && get) {
        serve_healthz(d, req);
        return;
    }
    if (strcmp(path, "/readyz") == 0 && get) {
        serve_readyz(d, req);
        return;
    }
    char who[AUTH_WHO_MAX];
    if (strcmp(path, "/metrics") == 0 && get) {
        if (authorize(d, req, AUTH_SCOPE_METRICS, fallback, who, sizeof who)) {
            log_debug("http conn=%llu client=%s metrics", (unsigned long long)http_req_conn_id(req),
                      who);
            serve_metrics(d, req);
        }
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
        if (!get)
            respond_error_allow(req, 405, fallback, ERR_PROTOCOL, NULL, "use GET for metadata",
                                "GET, HEAD");
        else
            serve_metadata(d, req, fallback);
        return;
    }
    route_t route;
    if (strcmp(rest, "/Claim") == 0)
        route = ROUTE_CLAIM;
    else if (strcmp(rest, "/Claim/$validate") == 0 || strcmp(rest, "/$validate") == 0)
        route = ROUTE_VALIDATE;
    else if (rest[0] == '\0')
        route = ROUTE_BUNDLE;
    else {
        respond_error(req, 404, fallback, ERR_NOT_FOUND, NULL,
                      "no such endpoint: this server takes Claim, Claim/$validate, $validate, a "
                      "Bundle at the base, and metadata");
        return;
    }
    if (!authorize(d, req, route == ROUTE_VALIDATE ? AUTH_SCOPE_VALIDATE : AUTH_SCOPE_SUBMIT,
                   fallback, who, sizeof who))
        return;
    if (!post) {
        respond_error_allow(req, 405, fallback, ERR_PROTOCOL, NULL, "use POST", "POST");
        return;
    }

    buf_t *body = http_req_body(req);
    bool plain;
    int ct = format_of_content_type(http_req_header(req, "Content-Type"), &plain);
    if (ct == -1) {
        respond_error(req, 415, fallback, ERR_UNSUPPORTED, NULL,
                      "send application/fhir+json or application/fhir+xml");
        return;
    }
    fhir_format_t in_fmt = ct == -2 ? (gate_detect(body->data, body->len) == GATE_FHIR_XML
                                           ? FHIR_FMT_XML
                                           : FHIR_FMT_JSON)
                                    : (fhir_format_t)ct;
    /* Without _format or Accept the answer is in the request's own media
     * type: application/json is answered as application/json. */
    neg_t own = neg_default(in_fmt);
    if (plain)
        own.ctype = in_fmt == FHIR_FMT_XML ? CT_PLAIN_XML : CT_PLAIN_JSON;

    http_job_t *j = xcalloc(1, sizeof *j);
    j->d = d;
    j->req = req;
    j->route = route;
    snprintf(j->client, sizeof j->client, "%s", who);
    j->t0 = uv_hrtime();
    j->in_fmt = in_fmt;
    j->neg = negotiate(req, own);
    j->out_fmt = j->neg.fmt;
    j->prefer = prefer_of(req);
    arena_init(&j->arena, 16384);
    j->pack = daemon_pack_ref(d);
    log_phi("http body", body->data, body->len);

    j->body = buf_ref(body);
    j->parse_opts = (fhir_opts_t){.max_size = (size_t)d->cfg.max_body_size + 1};
    j->limits = d->gate_limits;
    j->annotate_accepted = d->cfg.annotate_accepted;
    j->lane.run = parse_and_judge;
    j->lane.done = after_judging;
    /* One lane per connection: a connection's Claims are stored in the
     * order its requests came. */
    lanes_submit(d->lanes, DAEMON_LANE_HTTP | http_req_conn_id(req), &j->lane,
                 body->len <= DAEMON_JUDGE_INLINE_MAX);
}
