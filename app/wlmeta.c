/* wlmeta.c - the worklist description of a judged message, as JSON (cJSON,
 * whose allocator is the project's xmalloc). */
#include "wlmeta.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "xmalloc.h"

const char *wlmeta_verdict_name(const gate_result_t *r)
{
    if (r->status == GATE_UNREADABLE)
        return "unreadable";
    if (r->status == GATE_NOT_A_CLAIM)
        return "not-a-claim";
    switch (r->verdict.kind) {
    case VERDICT_ACCEPT: return "accept";
    case VERDICT_ANNOTATE: return "annotate";
    case VERDICT_REJECT: return "reject";
    }
    return "accept";
}

static void add_str(cJSON *o, const char *k, const char *v)
{
    if (v && *v)
        cJSON_AddStringToObject(o, k, v);
}

const char *wlmeta_json(arena_t *a, const char *source, const char *peer, const gate_result_t *r)
{
    cJSON *o = cJSON_CreateObject();
    add_str(o, "source", source);
    add_str(o, "peer", peer);
    const claim_t *c = r->status == GATE_JUDGED ? r->claim : NULL;
    if (c) {
        add_str(o, "type", c->message_type);
        cJSON *refs = cJSON_AddObjectToObject(o, "refs");
        add_str(refs, "mrn", c->ref_mrn);
        add_str(refs, "account", c->ref_account);
        add_str(refs, "visit", c->ref_visit);
    }
    cJSON_AddStringToObject(o, "verdict", wlmeta_verdict_name(r));
    cJSON *rules = cJSON_AddArrayToObject(o, "rules");
    cJSON *fs = cJSON_AddArrayToObject(o, "findings");
    const rule_verdict_t *v = &r->verdict;
    for (size_t i = 0; c && i < v->nfindings; i++) {
        const rule_finding_t *f = &v->findings[i];
        bool seen = false;
        for (size_t k = 0; k < i; k++)
            seen = seen || strcmp(v->findings[k].rule_id, f->rule_id) == 0;
        if (!seen)
            cJSON_AddItemToArray(rules, cJSON_CreateString(f->rule_id));
        cJSON *fo = cJSON_CreateObject();
        add_str(fo, "rule", f->rule_id);
        add_str(fo, "severity", rule_severity_name(f->severity));
        cJSON *codes = cJSON_AddArrayToObject(fo, "codes");
        for (int k = 0; k < f->ncodes; k++)
            if (f->codes[k])
                cJSON_AddItemToArray(codes, cJSON_CreateString(f->codes[k]));
        add_str(fo, "location", f->location);
        add_str(fo, "message", f->message);
        add_str(fo, "suggestion", f->suggestion);
        add_str(fo, "reference", f->reference);
        cJSON_AddItemToArray(fs, fo);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    const char *out = arena_strdup(a, s);
    cJSON_free(s);
    return out;
}

const char *wlmeta_kind(const char *dest, const gate_result_t *r, bool annotated)
{
    if (strncmp(dest, "reject-", 7) == 0)
        return "reject";
    if (annotated && r->status == GATE_JUDGED && r->verdict.kind == VERDICT_ANNOTATE)
        return "annotate";
    return NULL;
}

const char *wlmeta_summary(arena_t *a, const rule_verdict_t *v)
{
    if (!v->nfindings)
        return NULL;
    size_t n = 1;
    for (size_t i = 0; i < v->nfindings; i++)
        n += strlen(v->findings[i].rule_id) + 10;
    char *s = arena_alloc(a, n), *p = s;
    for (size_t i = 0; i < v->nfindings; i++)
        p += sprintf(p, "%s%s:%s", i ? " " : "", v->findings[i].rule_id,
                     rule_severity_name(v->findings[i].severity));
    return s;
}
