/* wlview.c - worklist items as JSON, and the judging of a resent message. */
#include "wlview.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "dest.h"
#include "fhir.h"
#include "fhir_out.h"
#include "hl7.h"
#include "hl7_ack.h"

/* RFC 3339 or a date, to ms since the epoch; no offset is UTC. */
bool wlview_parse_time(const char *s, int64_t *out)
{
    struct tm tm = {0};
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
        return false;
    const char *p = s + n;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        int m = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &h, &mi, &m) != 2 || m != 5)
            return false;
        p += 1 + m;
        if (*p == ':') {
            if (sscanf(p + 1, "%2d%n", &sec, &m) != 1 || m != 2)
                return false;
            p += 3;
            if (*p == '.')
                for (p++; *p >= '0' && *p <= '9'; p++)
                    ;
        }
    }
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, m = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &m) != 2 || m != 5)
            return false;
        off = (*p == '-' ? -1 : 1) * (oh * 3600L + om * 60L);
        p += 1 + m;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return false;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *out = ((int64_t)timegm(&tm) - off) * 1000;
    return true;
}

const char *wlview_rfc3339(int64_t ms, char *buf, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* The item's meta object (NULL when it has none or it does not parse). */
cJSON *wlview_meta(const worklist_item_t *it)
{
    return it->meta ? cJSON_Parse(it->meta) : NULL;
}

const char *wlview_jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The source of an item: meta's, else the destination's format. */
const char *wlview_source(const worklist_item_t *it, const cJSON *m)
{
    const char *s = wlview_jstr(m, "source");
    int dest = dest_from_name(it->dest);
    return s ? s : dest >= 0 && dest_is_fhir((dest_t)dest) ? "http" : "mllp";
}

/* Rule ids: meta's list, else the findings summary's "rule:severity" words. */
cJSON *wlview_rules(const worklist_item_t *it, const cJSON *m)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(m, "rules");
    if (cJSON_IsArray(r))
        return cJSON_Duplicate(r, true);
    cJSON *out = cJSON_CreateArray();
    for (const char *p = it->findings; p && *p;) {
        const char *sp = strchr(p, ' '), *end = sp ? sp : p + strlen(p);
        const char *colon = memchr(p, ':', (size_t)(end - p));
        char id[128];
        size_t n = (size_t)((colon ? colon : end) - p);
        if (n && n < sizeof id) {
            memcpy(id, p, n);
            id[n] = 0;
            cJSON_AddItemToArray(out, cJSON_CreateString(id));
        }
        p = sp ? sp + 1 : end;
    }
    return out;
}

cJSON *wlview_item_json(const worklist_item_t *it)
{
    char t[40];
    cJSON *m = wlview_meta(it);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)it->id);
    cJSON_AddStringToObject(o, "state", it->state ? it->state : "");
    cJSON_AddStringToObject(o, "kind", it->kind ? it->kind : "");
    const char *verdict = wlview_jstr(m, "verdict");
    cJSON_AddStringToObject(o, "verdict",
                            verdict                                 ? verdict
                            : it->kind && !strcmp(it->kind, "dead") ? "dead-letter"
                                                                    : "reject");
    cJSON_AddStringToObject(o, "source", wlview_source(it, m));
    if (wlview_jstr(m, "peer"))
        cJSON_AddStringToObject(o, "peer", wlview_jstr(m, "peer"));
    cJSON_AddStringToObject(o, "control_id", it->control_id ? it->control_id : "");
    if (wlview_jstr(m, "type"))
        cJSON_AddStringToObject(o, "type", wlview_jstr(m, "type"));
    cJSON_AddItemToObject(o, "rules", wlview_rules(it, m));
    cJSON_AddStringToObject(o, "received", wlview_rfc3339(it->received_ms, t, sizeof t));
    cJSON_AddStringToObject(o, "dest", it->dest ? it->dest : "");
    const cJSON *refs = cJSON_GetObjectItemCaseSensitive(m, "refs");
    if (cJSON_IsObject(refs))
        cJSON_AddItemToObject(o, "refs", cJSON_Duplicate(refs, true));
    if (it->reason)
        cJSON_AddStringToObject(o, "reason", it->reason);
    if (it->changed_ms) {
        cJSON_AddStringToObject(o, "changed", wlview_rfc3339(it->changed_ms, t, sizeof t));
        cJSON_AddStringToObject(o, "changed_by", it->changed_by ? it->changed_by : "");
    }
    if (it->note)
        cJSON_AddStringToObject(o, "note", it->note);
    if (it->link)
        cJSON_AddStringToObject(o, "link", it->link);
    cJSON_Delete(m);
    return o;
}

int wlview_judge(const config_t *cfg, const rule_pack_t *pack, const char *buf, size_t len,
                 arena_t *ar, worklist_msg_t *m, wlview_verdict_fn seen, void *user)
{
    gate_limits_t lim = {.max_diagnoses = (size_t)cfg->max_diagnoses,
                         .max_id = 199 /* QUEUE_CONTROL_ID_MAX */};
    gate_result_t r;
    gate_format_t fmt = gate_detect(buf, len);
    hl7_msg_t *msg = NULL;
    fhir_doc_t *doc = NULL;
    int status = 0;
    if (fmt == GATE_HL7) {
        hl7_opts_t ho = {.max_size = len + 1};
        slice_t input;
        msg = hl7_msg_new();
        gate_hl7_unannotated(pack, msg, buf, len, &ho, &lim, ar, &input, &r);
        m->dest = dest_name(DEST_HL7);
        m->content_type = "application/hl7-v2";
        m->payload = input.ptr;
        m->payload_len = input.len;
    } else {
        err_detail_t d;
        err_clear(&d);
        fhir_opts_t fo = {.max_size = len + 1};
        fhir_format_t ff = fmt == GATE_FHIR_XML ? FHIR_FMT_XML : FHIR_FMT_JSON;
        if (fhir_parse(buf, len, ff, &fo, &doc, &d) != ERR_OK) {
            r = (gate_result_t){.status = GATE_UNREADABLE, .detail = d};
        } else if (fhir_doc_claim_count(doc) != 1) {
            r = (gate_result_t){.status = GATE_UNREADABLE};
            err_set(&r.detail, ERR_UNSUPPORTED, 0, "a resend is one Claim, not %zu",
                    fhir_doc_claim_count(doc));
        } else {
            fhir_out_strip(doc, 0);
            gate_fhir_claim(pack, doc, 0, &lim, ar, &r);
        }
        m->dest = dest_name(DEST_FHIR);
        m->content_type = ff == FHIR_FMT_XML ? "application/fhir+xml" : "application/fhir+json";
    }
    if (seen)
        seen(&r, user);
    if (r.status != GATE_JUDGED || r.verdict.kind == VERDICT_REJECT)
        status = 1;
    if (!status) {
        const rule_verdict_t *v = &r.verdict;
        bool annotate = v->kind != VERDICT_ACCEPT || cfg->annotate_accepted;
        m->control_id = r.control_id ? r.control_id : "";
        m->findings = NULL;
        if (msg && annotate) {
            hl7_annotate_opts_t ao = {
                .style = cfg->annotation_style == CONFIG_ANNOTATION_NTE ? HL7_ANNOTATE_NTE
                                                                        : HL7_ANNOTATE_ZSG,
                .pack_name = rule_pack_name(pack),
                .pack_version = rule_pack_version(pack),
                .header_when_accepted = cfg->annotate_accepted,
            };
            slice_t out = hl7_annotate(msg, v, &ao, ar);
            m->payload = out.ptr;
            m->payload_len = out.len;
        }
        if (doc) {
            if (annotate)
                fhir_out_annotate_pack(
                    doc, 0, v,
                    arena_printf(ar, "%s v%d", rule_pack_name(pack), rule_pack_version(pack)));
            slice_t out;
            if (fhir_out_claim(doc, 0, ar, &out) != ERR_OK) {
                status = 2;
            } else {
                m->payload = out.ptr;
                m->payload_len = out.len;
            }
        }
    }
    hl7_msg_free(msg);
    fhir_doc_free(doc);
    return status;
}
