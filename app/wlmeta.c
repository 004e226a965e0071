/* wlmeta.c - the worklist description of a judged message, as JSON. */
#include "wlmeta.h"

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

/* Written by hand rather than through cJSON: it is built for every stored
 * message, and the tree of small allocations cost more than the rest of
 * storing it (issue 15). The output is what cJSON_PrintUnformatted gives. */
typedef struct {
    char *p;
    size_t len, cap;
} jbuf_t;

static void jb_put(jbuf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 512;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

#define JB_LIT(b, lit) jb_put((b), (lit), sizeof(lit) - 1)

/* A JSON string escaped as cJSON does: the two-character escapes, other
 * control characters as \u00XX, everything else as it is. */
static void jb_str(jbuf_t *b, const char *s)
{
    JB_LIT(b, "\"");
    const char *run = s;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 32 && ch != '"' && ch != '\\')
            continue;
        jb_put(b, run, (size_t)(s - run));
        char esc[8];
        switch (ch) {
        case '"': JB_LIT(b, "\\\""); break;
        case '\\': JB_LIT(b, "\\\\"); break;
        case '\b': JB_LIT(b, "\\b"); break;
        case '\f': JB_LIT(b, "\\f"); break;
        case '\n': JB_LIT(b, "\\n"); break;
        case '\r': JB_LIT(b, "\\r"); break;
        case '\t': JB_LIT(b, "\\t"); break;
        default: snprintf(esc, sizeof esc, "\\u%04x", ch); jb_put(b, esc, 6);
        }
        run = s + 1;
    }
    jb_put(b, run, (size_t)(s - run));
    JB_LIT(b, "\"");
}

/* ,"k":"v" when v is present; *first says no member was written yet. */
static void jb_member(jbuf_t *b, bool *first, const char *k, const char *v)
{
    if (!v || !*v)
        return;
    if (!*first)
        JB_LIT(b, ",");
    *first = false;
    jb_str(b, k);
    JB_LIT(b, ":");
    jb_str(b, v);
}

const char *wlmeta_json(arena_t *a, const char *source, const char *peer, const gate_result_t *r)
{
    jbuf_t b = {0};
    bool first = true;
    JB_LIT(&b, "{");
    jb_member(&b, &first, "source", source);
    jb_member(&b, &first, "peer", peer);
    const claim_t *c = r->status == GATE_JUDGED ? r->claim : NULL;
    if (c) {
        jb_member(&b, &first, "type", c->message_type);
        if (!first)
            JB_LIT(&b, ",");
        first = false;
        JB_LIT(&b, "\"refs\":{");
        bool rf = true;
        jb_member(&b, &rf, "mrn", c->ref_mrn);
        jb_member(&b, &rf, "account", c->ref_account);
        jb_member(&b, &rf, "visit", c->ref_visit);
        JB_LIT(&b, "}");
    }
    if (!first)
        JB_LIT(&b, ",");
    first = false;
    JB_LIT(&b, "\"verdict\":");
    jb_str(&b, wlmeta_verdict_name(r));
    const rule_verdict_t *v = &r->verdict;
    JB_LIT(&b, ",\"rules\":[");
    bool rfirst = true;
    for (size_t i = 0; c && i < v->nfindings; i++) {
        bool seen = false;
        for (size_t k = 0; k < i; k++)
            seen = seen || strcmp(v->findings[k].rule_id, v->findings[i].rule_id) == 0;
        if (seen)
            continue;
        if (!rfirst)
            JB_LIT(&b, ",");
        rfirst = false;
        jb_str(&b, v->findings[i].rule_id ? v->findings[i].rule_id : "");
    }
    JB_LIT(&b, "],\"findings\":[");
    for (size_t i = 0; c && i < v->nfindings; i++) {
        const rule_finding_t *f = &v->findings[i];
        if (i)
            JB_LIT(&b, ",");
        JB_LIT(&b, "{");
        bool ff = true;
        jb_member(&b, &ff, "rule", f->rule_id);
        jb_member(&b, &ff, "severity", rule_severity_name(f->severity));
        if (!ff)
            JB_LIT(&b, ",");
        ff = false;
        JB_LIT(&b, "\"codes\":[");
        bool cf = true;
        for (int k = 0; k < f->ncodes; k++)
            if (f->codes[k]) {
                if (!cf)
                    JB_LIT(&b, ",");
                cf = false;
                jb_str(&b, f->codes[k]);
            }
        JB_LIT(&b, "]");
        jb_member(&b, &ff, "location", f->location);
        jb_member(&b, &ff, "message", f->message);
        jb_member(&b, &ff, "suggestion", f->suggestion);
        jb_member(&b, &ff, "reference", f->reference);
        JB_LIT(&b, "}");
    }
    JB_LIT(&b, "]}");
    b.p[b.len] = '\0';
    const char *out = arena_strdup(a, b.p);
    xfree(b.p);
    return out;
}

const char *wlmeta_kind(dest_t dest, const gate_result_t *r, bool annotated)
{
    if (dest_is_reject(dest))
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
