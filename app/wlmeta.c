/* wlmeta.c - the worklist description of a judged message, as JSON. */
#include "wlmeta.h"

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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
 * storing it (issue 15). The output is what cJSON_PrintUnformatted gives.
 * It is built on the stack and moves to the heap only when it outgrows it. */
typedef struct {
    char *p;
    size_t len, cap;
    char local[1024];
} jbuf_t;

static void jb_init(jbuf_t *b)
{
    b->p = b->local;
    b->len = 0;
    b->cap = sizeof b->local;
}

static void jb_grow(jbuf_t *b, size_t n)
{
    size_t cap = b->cap;
    while (b->len + n + 1 > cap)
        cap *= 2;
    if (b->p == b->local) {
        b->p = xmalloc(cap);
        memcpy(b->p, b->local, b->len);
    } else {
        b->p = xrealloc(b->p, cap);
    }
    b->cap = cap;
}

/* Makes room for n more bytes and the final NUL. */
static inline void jb_reserve(jbuf_t *b, size_t n)
{
    if (b->len + n + 1 > b->cap)
        jb_grow(b, n);
}

/* Inline so that the many short literals are copied without a call. */
static inline void jb_put(jbuf_t *b, const char *s, size_t n)
{
    jb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

#define JB_LIT(b, lit) jb_put((b), (lit), sizeof(lit) - 1)

/* Bytes that json_plain() may read past the end of its input. */
#define JSON_SLACK 16

static bool json_needs_escape(unsigned char ch)
{
    return ch < 0x20 || ch == '"' || ch == '\\';
}

/* How many bytes from s (n of them) go out as they are. s must be followed
 * by JSON_SLACK readable bytes: it is read 16 bytes at a time. */
static size_t json_plain(const char *s, size_t n)
{
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'),
                  ctl_max = _mm_set1_epi8(0x1f);
    for (size_t i = 0; i < n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        /* v <= 0x1f unsigned: min(v, 0x1f) == v */
        __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, ctl_max), v);
        __m128i hit =
            _mm_or_si128(ctl, _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)));
        unsigned m = (unsigned)_mm_movemask_epi8(hit);
        if (n - i < 16)
            m &= (1u << (n - i)) - 1; /* the slack after the end */
        if (m)
            return i + (size_t)__builtin_ctz(m);
    }
    return n;
#else
    size_t i = 0;
    while (i < n && !json_needs_escape((unsigned char)s[i]))
        i++;
    return i;
#endif
}

/* A JSON string escaped as cJSON does: the two-character escapes, other
 * control characters as \u00xx, everything else as it is. */
static void jb_str(jbuf_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(s);
    JB_LIT(b, "\"");
    /* Most strings hold nothing to escape: the string is copied whole and
     * checked in place (zeroed slack after it)... */
    jb_reserve(b, n + JSON_SLACK);
    char *out = b->p + b->len;
    memcpy(out, s, n);
    memset(out + n, 0, JSON_SLACK);
    size_t i = json_plain(out, n);
    b->len += i;
    /* ...and from the first byte to escape on, it goes byte by byte. */
    const char *run = s + i;
    for (; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!json_needs_escape(ch))
            continue;
        jb_put(b, run, (size_t)(s + i - run));
        switch (ch) {
        case '"': JB_LIT(b, "\\\""); break;
        case '\\': JB_LIT(b, "\\\\"); break;
        case '\b': JB_LIT(b, "\\b"); break;
        case '\f': JB_LIT(b, "\\f"); break;
        case '\n': JB_LIT(b, "\\n"); break;
        case '\r': JB_LIT(b, "\\r"); break;
        case '\t': JB_LIT(b, "\\t"); break;
        default: {
            char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
            jb_put(b, esc, sizeof esc);
        }
        }
        run = s + i + 1;
    }
    jb_put(b, run, (size_t)(s + n - run));
    JB_LIT(b, "\"");
}

/* ,"k":"v" when v is present; *first says no member was written yet. key
 * is the member's name quoted and followed by its colon: the names are
 * literals of this file, which need no escaping. */
static void jb_member(jbuf_t *b, bool *first, const char *key, size_t key_len, const char *v)
{
    if (!v || !*v)
        return;
    if (!*first)
        JB_LIT(b, ",");
    *first = false;
    jb_put(b, key, key_len);
    jb_str(b, v);
}

#define JB_MEMBER(b, first, name, v)                                                               \
    jb_member((b), (first), "\"" name "\":", sizeof("\"" name "\":") - 1, (v))

const char *wlmeta_json(arena_t *a, const char *source, const char *peer, const gate_result_t *r)
{
    jbuf_t b;
    jb_init(&b);
    bool first = true;
    JB_LIT(&b, "{");
    JB_MEMBER(&b, &first, "source", source);
    JB_MEMBER(&b, &first, "peer", peer);
    const claim_t *c = r->status == GATE_JUDGED ? r->claim : NULL;
    if (c) {
        JB_MEMBER(&b, &first, "type", c->message_type);
        if (!first)
            JB_LIT(&b, ",");
        first = false;
        JB_LIT(&b, "\"refs\":{");
        bool rf = true;
        JB_MEMBER(&b, &rf, "mrn", c->ref_mrn);
        JB_MEMBER(&b, &rf, "account", c->ref_account);
        JB_MEMBER(&b, &rf, "visit", c->ref_visit);
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
        JB_MEMBER(&b, &ff, "rule", f->rule_id);
        JB_MEMBER(&b, &ff, "severity", rule_severity_name(f->severity));
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
        JB_MEMBER(&b, &ff, "location", f->location);
        JB_MEMBER(&b, &ff, "message", f->message);
        JB_MEMBER(&b, &ff, "suggestion", f->suggestion);
        JB_MEMBER(&b, &ff, "reference", f->reference);
        JB_LIT(&b, "}");
    }
    JB_LIT(&b, "]}");
    const char *out = arena_strndup(a, b.p, b.len);
    if (b.p != b.local)
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
    /* Joined by hand: a sprintf per finding cost a third of the JSON. */
    char *s = arena_alloc(a, n), *p = s;
    for (size_t i = 0; i < v->nfindings; i++) {
        const char *id = v->findings[i].rule_id, *sev = rule_severity_name(v->findings[i].severity);
        size_t id_len = strlen(id), sev_len = strlen(sev);
        if (i)
            *p++ = ' ';
        memcpy(p, id, id_len);
        p += id_len;
        *p++ = ':';
        memcpy(p, sev, sev_len);
        p += sev_len;
    }
    *p = '\0';
    return s;
}
