/* eval.c - rule_evaluate(): the spine rules applied to one claim.
 *
 * Pure: reads the pack (immutable) and the claim, writes findings into the
 * caller's arena, and looks at no clock (only the claim's own dates pick the
 * code set). A claim with no diagnosis in a category the tables cover gets
 * no findings at all, so the gate is safe in front of a whole feed. Every
 * lookup is a hash probe or a walk over lists precomputed at load, and the
 * claim's diagnoses and lines are indexed once, so the cost is linear in
 * the size of the claim.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rules_int.h"

#define RULE_MAX_FINDINGS 256
#define MAX_SUGGESTIONS 12

typedef struct {
    const rule__table_t *t; /* the code set this diagnosis is judged by */
    const rule__code_t *tc; /* the table code (a 7th-character code's base) */
    const char *suffix;     /* the sent code's characters after tc (7th char) */
    bool judged;            /* read as ICD-10-CM */
    bool spine;             /* in a category (or 7th-character owner) covered */
    bool valid;             /* a complete, valid code */
    bool first;             /* the first diagnosis with this code: only it pairs */
    bool lenient;           /* its date is after its table: unknown codes only warn */
    int region;             /* region index, -1 none */
    char dotted[20];
    const char *norm;       /* normalised free text, NULL when none */
    uint32_t text_regions;
} dxi_t;

/* A small open-addressing map in the arena, for the claim's own indexes
 * (code -> first diagnosis, sequence -> diagnosis). Keys are never 0. */
typedef struct {
    uint64_t *k;
    int32_t *v;
    size_t cap;
} amap_t;

typedef struct {
    const rule_pack_t *p;
    const claim_t *c;
    const rule__table_t *t;      /* the claim's code set (NULL: older than all) */
    rule_codeset_fit_t fit;
    arena_t *a;
    dxi_t *dx;
    const rule__table_t **line_t; /* per line: its own code set, or NULL */
    bool *line_newer;
    uint32_t *dx_mask, *dx_newer;  /* per diagnosis: code sets of its dated lines */
    uint32_t span_mask, span_newer; /* code sets of all the dated lines */
    amap_t by_code, by_seq;
    rule_finding_t *f;
    size_t nf, cap;
    int depth;                   /* 1 inside a suggestion check */
    int *verify_budget;          /* re-evaluations left for suggestion checks */
    bool stages_mixed;           /* pairing diagnoses sent as working and as final */
    bool undated;                /* the claim states no date at all */
    const rule__table_t *deleted_from; /* resolve: the code was valid in this older table */
    bool probing;                      /* resolve only asks: its findings are dropped, so
                                          their suggestions are not checked */
} ev_t;

typedef const char *vars_t[V__COUNT];

static void evaluate(const rule_pack_t *pack, const claim_t *claim, arena_t *a, rule_verdict_t *out,
                     int depth, int *budget);

/* ---------------------------------------------------------------- output */

/* Fills a message template's {placeholders}; absent values read as "".
 * The loader checked the template (check_template): each '{' opens a known
 * placeholder and there are at most RULE__TEMPLATE_MAX_VARS of them, so the
 * pieces are listed once on the stack, then copied whole. A '{' that opens
 * no placeholder is copied as it stands. */
static char *expand(arena_t *a, const char *tmpl, const char *const *v)
{
    struct {
        const char *p;
        size_t n;
    } piece[2 * RULE__TEMPLATE_MAX_VARS + 2];
    size_t np = 0, total = 0;
    const char *s = tmpl;
    for (;;) {
        const char *open = np + 3 <= sizeof piece / sizeof piece[0] ? strchr(s, '{') : NULL;
        size_t lit = open ? (size_t)(open - s) : strlen(s);
        piece[np].p = s;
        piece[np++].n = lit;
        total += lit;
        if (!open)
            break;
        const char *close = strchr(open, '}');
        int vi = close ? rule__var_from(open + 1, (size_t)(close - open - 1)) : -1;
        if (vi < 0) {
            piece[np].p = open;
            piece[np++].n = 1;
            total++;
            s = open + 1;
            continue;
        }
        piece[np].p = v[vi] ? v[vi] : "";
        piece[np].n = strlen(piece[np].p);
        total += piece[np++].n;
        s = close + 1;
    }
    char *out = arena_alloc(a, total + 1), *o = out;
    for (size_t k = 0; k < np; k++) {
        memcpy(o, piece[k].p, piece[k].n);
        o += piece[k].n;
    }
    *o = '\0';
    return out;
}

static rule_finding_t *add(ev_t *e, rule__id_t id, rule__msgkey_t mk, const char *const *v,
                           int dx, int line, const char *suggestion)
{
    const rule__rule_t *r = &e->p->rules[id];
    if (!r->enabled || !r->msg[mk] || e->nf >= RULE_MAX_FINDINGS)
        return NULL;
    if (e->nf == e->cap) {
        size_t ncap = e->cap ? e->cap * 2 : 8;
        rule_finding_t *nf = arena_calloc(e->a, ncap, sizeof *nf);
        if (e->nf)
            memcpy(nf, e->f, e->nf * sizeof *nf);
        e->f = nf;
        e->cap = ncap;
    }
    rule_finding_t *f = &e->f[e->nf++];
    memset(f, 0, sizeof *f);
    f->rule_id = rule__id_name(id);
    f->severity = r->severity;
    f->message = expand(e->a, r->msg[mk], v);
    f->reference = r->reference ? expand(e->a, r->reference, v) : NULL;
    f->dx_index = dx;
    f->line_index = line;
    if (dx >= 0) {
        f->location = e->c->dx[dx].location;
        f->codes[f->ncodes++] = arena_strdup(e->a, e->dx[dx].dotted);
    } else if (line >= 0) {
        f->location = e->c->lines[line].location;
    }
    f->suggestion = suggestion ? arena_strdup(e->a, suggestion) : NULL;
    return f;
}

static void add_code(ev_t *e, rule_finding_t *f, const char *dotted)
{
    if (f && f->ncodes < RULE_MAX_CODES)
        f->codes[f->ncodes++] = arena_strdup(e->a, dotted);
}

static const char *region_label(const ev_t *e, int r)
{
    return r >= 0 && r < e->p->geo.nregions ? e->p->geo.regions[r].label : "none";
}


/* Caps a finding's severity: f may be NULL (rule off, or the cap reached). */
static void cap_severity(rule_finding_t *f, rule_severity_t max)
{
    if (f && f->severity > max)
        f->severity = max;
}

/* ---------------------------------------------------------------- maps */

static void amap_init(amap_t *m, arena_t *a, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n + 2)
        cap *= 2;
    m->k = arena_calloc(a, cap, sizeof *m->k);
    m->v = arena_calloc(a, cap, sizeof *m->v);
    m->cap = cap;
}

static size_t amap_slot(const amap_t *m, uint64_t key)
{
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & (m->cap - 1);
    while (m->k[i] && m->k[i] != key)
        i = (i + 1) & (m->cap - 1);
    return i;
}

/* Returns the value stored for key, or -1; stores val when key is new. */
static int32_t amap_get_or_put(amap_t *m, uint64_t key, int32_t val)
{
    if (!key || !m->cap)
        return -1;
    size_t i = amap_slot(m, key);
    if (m->k[i])
        return m->v[i];
    m->k[i] = key;
    m->v[i] = val;
    return -1;
}

static void amap_set(amap_t *m, uint64_t key, int32_t val)
{
    if (!key || !m->cap)
        return;
    size_t i = amap_slot(m, key);
    m->k[i] = key;
    m->v[i] = val;
}

static int32_t amap_get(const amap_t *m, uint64_t key)
{
    if (!key || !m->cap)
        return -1;
    size_t i = amap_slot(m, key);
    return m->k[i] ? m->v[i] : -1;
}

static uint64_t seq_key(int seq)
{
    return seq > 0 ? (uint64_t)(unsigned)seq | (1ull << 62) : 0;
}

/* The diagnosis with this sequence (the first one), or -1. */
static int dx_by_seq(const ev_t *e, int seq)
{
    return amap_get(&e->by_seq, seq_key(seq));
}

/* The first diagnosis with this normalised code, or -1. */
static int dx_by_code(const ev_t *e, const char *code)
{
    return code && *code ? amap_get(&e->by_code, rule__key(code)) : -1;
}

/* ---------------------------------------------------------------- suggestions */

static bool reportable(const rule__code_t *c)
{
    return c->billable || (c->leaf && c->seven >= 0);
}

/* The 7th character to give codes under owner s: the one sent when the
 * owner defines it, else A (initial encounter) when defined, else the first. */
static char seventh_for(const rule__seven_t *s, char sent)
{
    if (sent && strchr(s->chars, sent))
        return sent;
    return strchr(s->chars, 'A') ? 'A' : s->chars[0];
}

/* The complete reportable form of a reportable table code: itself, or its
 * base padded with the placeholder X and a 7th character. */
static void full_code(const rule__table_t *t, const rule__code_t *c, char sent7, char *out, size_t cap)
{
    if (c->seven >= 0 && !c->billable) {
        char code[16];
        snprintf(code, sizeof code, "%s%.*s%c", c->code, 6 - (int)c->len, "XXX",
                 seventh_for(&t->seven[c->seven], sent7));
        claim_code_dotted(code, out, cap);
    } else {
        snprintf(out, cap, "%s", c->dotted);
    }
}

/* A list of candidate codes (dotted, complete) built for a suggestion. */
typedef struct {
    char code[MAX_SUGGESTIONS][20];
    int n;
    int more; /* reportable codes beyond the ones listed */
} cands_t;

static void cands_add(cands_t *cs, const char *dotted)
{
    for (int i = 0; i < cs->n; i++)
        if (!strcmp(cs->code[i], dotted))
            return;
    if (cs->n < MAX_SUGGESTIONS)
        snprintf(cs->code[cs->n++], sizeof cs->code[0], "%s", dotted);
    else
        cs->more++;
}

/* Adds the reportable codes at or under table code b (b itself when it is
 * reportable), at full depth; region >= 0 keeps those of that region. */
static void cands_under(cands_t *cs, const rule__table_t *t, const rule__code_t *b, char sent7, int region)
{
    size_t from = (size_t)(b - t->codes);
    for (size_t j = from; j < (size_t)b->end; j++) {
        const rule__code_t *c = &t->codes[j];
        if (!reportable(c) || (region >= 0 && c->region != region))
            continue;
        char d[20];
        full_code(t, c, sent7, d, sizeof d);
        cands_add(cs, d);
    }
}

/* The code of region `region` nearest to tc in the hierarchy: first among
 * tc's siblings, then under its ancestors up to the subcategory (a category
 * mixes conditions: M43.0 spondylolysis, M43.1 spondylolisthesis). Prefers
 * a code of tc's own depth. Returns a table index or -1. */
static int32_t region_relative(const rule__table_t *t, const rule__code_t *tc, int region)
{
    int32_t anc = tc->parent;
    while (anc >= 0) {
        const rule__code_t *a = &t->codes[anc];
        int32_t best = -1;
        for (int32_t j = anc + 1; j < a->end; j++) {
            const rule__code_t *c = &t->codes[j];
            if (c->region != region || (strncmp(tc->code, c->code, c->len) == 0))
                continue; /* another region, or tc's own ancestor */
            /* the highest code of that region: its children share it */
            if (c->parent >= 0 && t->codes[c->parent].region == region && c->parent != anc)
                continue;
            if (best < 0 || abs(c->len - tc->len) < abs(t->codes[best].len - tc->len))
                best = j;
        }
        if (best >= 0)
            return best;
        if (a->len <= 4)
            break;
        anc = a->parent;
    }
    return -1;
}

static bool suggestion_ok(ev_t *e, int dx, const char *dotted);

/* Keeps the candidates that pass the rules when put in place of dx (none
 * may lead to a reject) and returns them as a comma list, or NULL. */
static const char *cands_verified(ev_t *e, int dx, const cands_t *cs)
{
    char out[MAX_SUGGESTIONS * 24];
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < cs->n; i++) {
        if (dx >= 0 && !suggestion_ok(e, dx, cs->code[i]))
            continue;
        int w = snprintf(out + o, sizeof out - o, o ? ", %s" : "%s", cs->code[i]);
        if (w < 0 || (size_t)w >= sizeof out - o)
            break;
        o += (size_t)w;
    }
    return o ? arena_strdup(e->a, out) : NULL;
}

/* ---------------------------------------------------------------- codes */

static bool all_x(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != 'X')
            return false;
    return true;
}

/* The 7th-character choices for base b: the one character `only`, or all. */
static void cands_seven(cands_t *cs, const rule__code_t *b, const rule__seven_t *s, char only)
{
    for (const char *ch = s->chars; *ch; ch++) {
        if (only && *ch != only)
            continue;
        char code[16], d[20];
        snprintf(code, sizeof code, "%s%.*s%c", b->code, 6 - (int)b->len, "XXX", *ch);
        claim_code_dotted(code, d, sizeof d);
        cands_add(cs, d);
    }
}

static rule_finding_t *add_invalid(ev_t *e, rule__id_t id, rule__msgkey_t mk, const char *const *v, int i,
                                   const cands_t *cs)
{
    const char *sug = cs && cs->n && !e->probing ? cands_verified(e, i, cs) : NULL;
    vars_t vv;
    memcpy(vv, v, sizeof vv);
    /* A message that names the suggestion still reads when none passed. */
    vv[V_SUGGESTION] = sug ? sug : "the complete code";
    rule_finding_t *f = add(e, id, mk, vv, i, -1, sug);
    if (f)
        f->code_invalid = true;
    return f;
}

static void fmt_date(char *out, size_t cap, claim_date_t d);

/* Decides whether dx i is a valid code of table t, and reports code-invalid,
 * code-not-billable or seventh-character when it is not. Returns false when
 * it reported the code. */
static bool resolve(ev_t *e, int i, const rule__table_t *t, bool lenient)
{
    const claim_dx_t *d = &e->c->dx[i];
    dxi_t *x = &e->dx[i];
    const char *code = d->code;
    size_t n = strlen(code);
    vars_t v = {0};
    v[V_CODE] = x->dotted;
    v[V_FY] = t->fy;
    char cat[8];
    snprintf(cat, sizeof cat, "%.3s", code);
    v[V_CATEGORY] = cat;
    x->tc = NULL;
    x->valid = false;
    x->region = -1;
    cands_t cs = {0};

    if (rule__map_get(&t->category_map, rule__keyn(code, 3)) < 0) {
        /* Categories outside the code rows whose 7th characters the notes
         * define (M80, M84.3-): only the 7th character is judged. */
        const rule__seven_t *s = rule__table_seven_for(t, code);
        if (!s || s->in_codes || n > 7) {
            x->spine = false;
            return true;
        }
        x->spine = true;
        v[V_OWNER] = s->dotted;
        v[V_CHARS] = s->list;
        if (n < 7) {
            add_invalid(e, RID_SEVENTH, MK_MISSING, v, i, NULL);
            return false;
        }
        if (!strchr(s->chars, code[6])) {
            char ch[2] = {code[6], 0};
            v[V_CHAR] = ch;
            add_invalid(e, RID_SEVENTH, MK_UNDEFINED, v, i, NULL);
            return false;
        }
        x->valid = true;
        return true;
    }
    x->spine = true;
    const rule__code_t *tc = rule__table_find(t, code);
    if (tc) {
        v[V_DESCRIPTION] = tc->desc;
        if (tc->billable) {
            x->tc = tc;
            x->suffix = "";
            x->valid = true;
            x->region = tc->region;
            return true;
        }
        if (tc->leaf && tc->seven >= 0) {
            const rule__seven_t *s = &t->seven[tc->seven];
            v[V_OWNER] = s->dotted;
            v[V_CHARS] = s->list;
            cands_seven(&cs, tc, s, 0);
            add_invalid(e, RID_SEVENTH, MK_MISSING, v, i, &cs);
        } else {
            cands_under(&cs, t, tc, 0, -1);
            add_invalid(e, RID_CODE_NOT_BILLABLE, MK_DEFAULT, v, i, &cs);
        }
        return false;
    }

    /* Not in the table: find the longest table code it starts with. */
    const rule__code_t *b = NULL;
    for (size_t l = n > 7 ? 7 : n - 1; l >= 3 && !b; l--) {
        int32_t bi = rule__map_get(&t->code_map, rule__keyn(code, l));
        if (bi >= 0)
            b = &t->codes[bi];
    }
    const rule__seven_t *s = b && b->seven >= 0 ? &t->seven[b->seven] : NULL;
    if (b) {
        v[V_BASE] = b->dotted;
        v[V_DESCRIPTION] = b->desc;
    }
    if (s) {
        v[V_OWNER] = s->dotted;
        v[V_CHARS] = s->list;
    }
    if (b && b->leaf && s && n == 7) {
        if (!all_x(code + b->len, 6 - b->len)) {
            cands_seven(&cs, b, s, strchr(s->chars, code[6]) ? code[6] : 0);
            add_invalid(e, RID_SEVENTH, MK_PLACEHOLDER, v, i, &cs);
        } else if (!strchr(s->chars, code[6])) {
            char ch[2] = {code[6], 0};
            v[V_CHAR] = ch;
            cands_seven(&cs, b, s, 0);
            add_invalid(e, RID_SEVENTH, MK_UNDEFINED, v, i, &cs);
        } else {
            x->tc = b;
            x->suffix = code + b->len;
            x->valid = true;
            x->region = b->region;
            return true;
        }
    } else if (b && b->leaf && s && n < 7) {
        char last = code[n - 1];
        if (strchr(s->chars, last) && all_x(code + b->len, n - 1 - b->len)) {
            cands_seven(&cs, b, s, last);
            add_invalid(e, RID_SEVENTH, MK_PLACEHOLDER, v, i, &cs);
        } else {
            cands_seven(&cs, b, s, 0);
            add_invalid(e, RID_SEVENTH, MK_MISSING, v, i, &cs);
        }
    } else if (b && b->billable && !s && n <= 7 && n - b->len <= 4 &&
               all_x(code + b->len, n - b->len - 1) &&
               (code[n - 1] == 'X' || (code[n - 1] >= 'A' && code[n - 1] <= 'Z'))) {
        /* A complete code plus an extension: M43.04XA, M43.04A. */
        cands_add(&cs, b->dotted);
        add_invalid(e, RID_SEVENTH, MK_NOT_APPLICABLE, v, i, &cs);
    } else {
        /* A 7th character sent with a code under a header: carry it. */
        if (b)
            cands_under(&cs, t, b, n == 7 ? code[6] : 0, -1);
        rule__msgkey_t mk = lenient ? MK_NEWER_UNKNOWN : e->deleted_from ? MK_DELETED : MK_DEFAULT;
        char from[16];
        if (mk == MK_DELETED) {
            /* The first table after the one that had it: where it left. */
            const rule__table_t *next = e->deleted_from + 1;
            fmt_date(from, sizeof from, next->from);
            v[V_TABLES] = e->deleted_from->fy;
            v[V_OTHER] = next->fy;
            v[V_BOUNDARY] = from;
        }
        rule_finding_t *f = add_invalid(e, RID_CODE_INVALID, mk, v, i, &cs);
        /* A date after the newest table: the code may be new, never reject. */
        if (lenient)
            cap_severity(f, RULE_SEV_WARN);
    }
    return false;
}

/* Reads a code that did not normalise (a dash, a comma, a dot out of
 * place): its letters and digits into loose, and a description of the first
 * thing wrong with it into form. Returns false when nothing code-like is left. */
static bool malformed_form(const char *sent, char *loose, size_t cap, char *form, size_t fcap)
{
    size_t n = 0, len = strlen(sent);
    form[0] = '\0';
    bool dot = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)sent[i];
        if (ch == ' ' || ch == '\t')
            continue;
        if (((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))) {
            if (n + 1 < cap)
                loose[n++] = (char)(ch >= 'a' ? ch - 32 : ch);
            continue;
        }
        if (ch == '.' && !dot && n == 3) {
            dot = true;
            continue;
        }
        if (form[0])
            continue;
        size_t rest = i + 1;
        while (rest < len && strchr(" \t-.", sent[rest]))
            rest++;
        bool at_end = rest == len;
        if (ch == '-' && at_end)
            snprintf(form, fcap, "it ends in a dash, which in the index stands for characters still to be chosen");
        else if (ch == '-')
            snprintf(form, fcap, "it holds a dash after character %zu", n);
        else if (ch == ',')
            snprintf(form, fcap, "it holds a comma after character %zu", n);
        else if (ch == '.')
            snprintf(form, fcap, "it has a dot after character %zu (the dot follows the third character)", n);
        else if (ch >= 0x21 && ch < 0x7f)
            snprintf(form, fcap, "it holds the character '%c' after character %zu", ch, n);
        else
            snprintf(form, fcap, "it holds a character that is not a letter or a digit after character %zu", n);
    }
    loose[n] = '\0';
    return n >= 3 && form[0];
}
/* ---------------------------------------------------------------- pairs */

/* The pairs themselves are found by rules/excludes.c (reviewed Excludes1
 * rows, regions and levels, a category index); this turns each into a
 * finding. */

static const char *site_label(const ev_t *e, int r)
{
    return r >= 0 && r < e->p->geo.nregions ? e->p->geo.regions[r].label : "site not stated";
}

static bool line_links(const ev_t *e, size_t li, int i);
static long date_key(claim_date_t d);
static claim_date_t line_date(const claim_line_t *l);

typedef struct {
    long from, to;     /* date_key of a line's first and last day */
    claim_date_t date; /* the first day as sent, for the message */
} span_t;

static int span_cmp(const void *a, const void *b)
{
    long x = ((const span_t *)a)->from, y = ((const span_t *)b)->from;
    return (x > y) - (x < y);
}

/* Sorts spans and merges those that overlap; returns how many are left. */
static size_t spans_merge(span_t *s, size_t n)
{
    if (!n)
        return 0;
    qsort(s, n, sizeof *s, span_cmp);
    size_t k = 0;
    for (size_t i = 1; i < n; i++) {
        if (s[i].from <= s[k].to) {
            if (s[i].to > s[k].to)
                s[k].to = s[i].to;
        } else {
            s[++k] = s[i];
        }
    }
    return k + 1;
}

/* Whether line l points at any copy of code (the diagnoses in copies). */
static bool line_links_code(const ev_t *e, size_t l, const int *copies, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (line_links(e, l, copies[k]))
            return true;
    return false;
}

/* The diagnoses that carry dx i's code. */
static int *code_copies(ev_t *e, int i, size_t *n)
{
    const claim_t *c = e->c;
    int *out = arena_alloc(e->a, c->ndx * sizeof *out);
    *n = 0;
    for (size_t k = 0; k < c->ndx; k++)
        if ((int)k == i || (c->dx[i].code[0] && strcmp(c->dx[k].code, c->dx[i].code) == 0))
            out[(*n)++] = (int)k;
    return out;
}

/* On a claim that is not one inpatient stay, the codes of dx a and dx b
 * belong to separate encounters when dated service lines point at each, no
 * line at both, and no line of one shares a day with a line of the other.
 * Their first days go to detail. */
static bool encounters_apart(ev_t *e, int a, int b, const char **detail)
{
    const claim_t *c = e->c;
    if (c->setting == CLAIM_SETTING_INPATIENT || !c->nlines)
        return false;
    size_t nca, ncb;
    int *ca = code_copies(e, a, &nca), *cb = code_copies(e, b, &ncb);
    span_t *sa = arena_alloc(e->a, c->nlines * sizeof *sa);
    span_t *sb = arena_alloc(e->a, c->nlines * sizeof *sb);
    size_t na = 0, nb = 0;
    for (size_t l = 0; l < c->nlines; l++) {
        bool la = line_links_code(e, l, ca, nca), lb = line_links_code(e, l, cb, ncb);
        if (!la && !lb)
            continue;
        claim_date_t d = line_date(&c->lines[l]);
        if ((la && lb) || !d.year)
            return false;
        claim_date_t last = c->lines[l].date_to.year ? c->lines[l].date_to : d;
        span_t sp = {date_key(d), date_key(last), d};
        /* A date without a day (or a month) spans all of them. */
        if (!last.month)
            sp.to += 1130;
        else if (!last.day)
            sp.to += 30;
        if (sp.to < sp.from)
            sp.to = sp.from;
        if (la)
            sa[na++] = sp;
        else
            sb[nb++] = sp;
    }
    na = spans_merge(sa, na);
    nb = spans_merge(sb, nb);
    if (!na || !nb)
        return false;
    for (size_t i = 0, j = 0; i < na && j < nb;) {
        if (sa[i].to < sb[j].from)
            i++;
        else if (sb[j].to < sa[i].from)
            j++;
        else
            return false;
    }
    char da[16], db[16];
    fmt_date(da, sizeof da, sa[0].date);
    fmt_date(db, sizeof db, sb[0].date);
    *detail = arena_printf(e->a, "%s, %s", da, db);
    return true;
}

static bool emit_pair(void *ctx, const rule__pair_t *pr)
{
    ev_t *e = ctx;
    if (e->nf >= RULE_MAX_FINDINGS)
        return false;
    vars_t v = {0};
    v[V_CODE] = e->dx[pr->owner].dotted;
    v[V_OTHER] = e->dx[pr->other].dotted;
    v[V_OWNER] = pr->row ? pr->row->owner_dotted : pr->note->owner_dotted;
    v[V_NOTE] = pr->row ? pr->row->note : pr->note->text;
    v[V_REGION] = site_label(e, pr->region_owner);
    v[V_OTHER_REGION] = site_label(e, pr->region_other);
    v[V_DETAIL] = pr->levels[0] ? pr->levels : NULL;
    /* A bill that sends both working and final diagnoses may still carry a
     * working code that a final one replaced: a pair with a working code
     * there is a question for the coder, never a reject. */
    rule__msgkey_t mk = pr->mk;
    rule_severity_t sev = pr->severity;
    bool wo = e->c->dx[pr->owner].stage == DX_STAGE_WORKING;
    bool wx = e->c->dx[pr->other].stage == DX_STAGE_WORKING;
    if (!pr->excludes2 && e->stages_mixed && sev > RULE_SEV_WARN && (wo || wx)) {
        mk = MK_WORKING;
        sev = RULE_SEV_WARN;
        v[V_DETAIL] = wo && wx ? arena_printf(e->a, "%s, %s", v[V_CODE], v[V_OTHER])
                      : wo     ? v[V_CODE]
                               : v[V_OTHER];
    } else if (!pr->excludes2 && sev > RULE_SEV_WARN &&
               encounters_apart(e, pr->owner, pr->other, &v[V_DETAIL])) {
        /* Excludes1 codes are never used at the same time (I.A.12.a);
         * lines on other days of one outpatient claim are other encounters. */
        mk = MK_DATES_DIFFER;
        sev = RULE_SEV_WARN;
    }
    rule_finding_t *f =
        add(e, pr->excludes2 ? RID_EXCLUDES2 : RID_EXCLUDES1, mk, v, pr->owner, -1, NULL);
    if (f && !pr->excludes2)
        cap_severity(f, sev);
    add_code(e, f, e->dx[pr->other].dotted);
    return e->nf < RULE_MAX_FINDINGS;
}

static void pairs(ev_t *e)
{
    size_t n = e->c->ndx;
    rule__pairdx_t *pd = arena_calloc(e->a, n ? n : 1, sizeof *pd);
    amap_t pairing; /* code -> the one diagnosis of that code that pairs */
    amap_init(&pairing, e->a, n);
    bool seen_working = false, seen_final = false;
    for (size_t i = 0; i < n; i++) {
        const dxi_t *x = &e->dx[i];
        const char *code = e->c->dx[i].code;
        pd[i].code = code;
        pd[i].t = x->t;
        /* Only the first of identical codes pairs, and a code already
         * reported as invalid takes part in no pair: the coder fixes it
         * first, and its pairs are judged on the corrected claim. The
         * admitting diagnosis pairs with nothing: it is its own field on a
         * bill, the condition as first seen (often a symptom the principal
         * later explains), not reported beside the others. */
        bool usable =
            x->judged && e->c->dx[i].type != DX_TYPE_ADMITTING && !(x->spine && !x->valid);
        if (usable && *code) {
            /* Of copies sent as working and as final, a final one pairs. */
            int prev = amap_get_or_put(&pairing, rule__key(code), (int)i);
            if (prev >= 0 && e->c->dx[prev].stage == DX_STAGE_WORKING &&
                e->c->dx[i].stage != DX_STAGE_WORKING) {
                pd[prev].usable = false;
                amap_set(&pairing, rule__key(code), (int)i);
            } else {
                usable = prev < 0;
            }
        }
        pd[i].usable = usable;
        if (usable) {
            seen_working |= e->c->dx[i].stage == DX_STAGE_WORKING;
            seen_final |= e->c->dx[i].stage == DX_STAGE_FINAL;
        }
        pd[i].tc = x->valid ? x->tc : NULL;
        pd[i].norm = x->norm;
    }
    e->stages_mixed = seen_working && seen_final;
    rule__pairs_find(e->p, pd, n, e->a, emit_pair, e);
}

/* ---------------------------------------------------------------- text */

static void read_text(ev_t *e, int i)
{
    const claim_dx_t *d = &e->c->dx[i];
    dxi_t *x = &e->dx[i];
    if (!d->text || !*d->text)
        return;
    char buf[RULE_TEXT_MAX];
    rule__text_norm(d->text, buf, sizeof buf);
    x->norm = arena_strdup(e->a, buf);
    x->text_regions = rule__text_regions(&e->p->geo, buf, false);
}

/* True when line l points at dx i (by sequence, by code, or carried it). */
static bool line_links(const ev_t *e, size_t li, int i)
{
    const claim_line_t *l = &e->c->lines[li];
    const claim_dx_t *d = &e->c->dx[i];
    if (d->line >= 0 && (size_t)d->line == li)
        return true;
    for (int k = 0; k < l->ndx_pointers && k < CLAIM_MAX_DX_POINTERS; k++)
        if (d->sequence && l->dx_pointers[k] == d->sequence)
            return true;
    for (int k = 0; k < l->ndx_codes && k < CLAIM_MAX_DX_POINTERS; k++)
        if (l->dx_codes[k] && d->code[0] && strcmp(l->dx_codes[k], d->code) == 0)
            return true;
    return false;
}

/* Candidates for dx x at region r: the nearest code of that region, at full
 * depth (a header expands to its reportable codes), with x's 7th character. */
static void cands_region(ev_t *e, const dxi_t *x, int r, cands_t *cs)
{
    int32_t j = region_relative(x->t, x->tc, r);
    if (j < 0)
        return;
    char sent7 = x->suffix && *x->suffix ? x->suffix[strlen(x->suffix) - 1] : 0;
    cands_under(cs, x->t, &x->t->codes[j], sent7, -1);
}

static void site_unspecified(ev_t *e, int i)
{
    const dxi_t *x = &e->dx[i];
    const rule_pack_t *p = e->p;
    int nreg = p->geo.nregions;
    const char *src[32] = {0};
    int from_text = 0;
    if (p->site_use_text && x->norm)
        for (int r = 0; r < nreg && r < 32; r++)
            if ((x->text_regions & (1u << r)) && p->geo.regions[r].kind == REGION_SPECIFIC) {
                src[r] = "diagnosis text";
                from_text++;
            }
    if (p->site_use_procedures)
        for (size_t l = 0; l < e->c->nlines; l++) {
            const claim_line_t *ln = &e->c->lines[l];
            const rule__proc_t *pr = rule__proc_find(p, ln);
            if (!pr || pr->region < 0 || pr->region >= 32 || src[pr->region] || !line_links(e, l, i))
                continue;
            src[pr->region] = arena_printf(e->a, "line %zu, %s", l + 1, pr->label);
        }
    /* The admitting diagnosis is the condition as first seen: a site the
     * stay found later (another code) does not make it under-coded. */
    if (p->site_use_codes && e->c->dx[i].type != DX_TYPE_ADMITTING)
        for (size_t k = 0; k < e->c->ndx; k++) {
            const dxi_t *o = &e->dx[k];
            if ((int)k == i || !o->valid || o->region < 0 || o->region >= 32 || src[o->region] ||
                p->geo.regions[o->region].kind != REGION_SPECIFIC)
                continue;
            src[o->region] = o->dotted;
        }
    char regions[160] = "", sources[192] = "";
    size_t lr = 0, ls = 0;
    cands_t cs = {0};
    /* Two regions named in the diagnosis's own text: the multiple-sites
     * code, where the subcategory has one. */
    int multi = -1;
    if (from_text >= 2)
        for (int r = 0; r < nreg && r < 32 && multi < 0; r++)
            if (p->geo.regions[r].kind == REGION_MULTIPLE && region_relative(x->t, x->tc, r) >= 0)
                multi = r;
    if (multi >= 0) {
        cands_region(e, x, multi, &cs);
        snprintf(regions, sizeof regions, "%s", region_label(e, multi));
        snprintf(sources, sizeof sources, "diagnosis text");
    } else {
        for (int r = 0; r < nreg && r < 32; r++) {
            if (!src[r] || p->geo.regions[r].kind != REGION_SPECIFIC)
                continue;
            int before = cs.n;
            cands_region(e, x, r, &cs);
            if (cs.n == before)
                continue;
            int w1 = snprintf(regions + lr, sizeof regions - lr, lr ? " or %s" : "%s", p->geo.regions[r].label);
            int w2 = snprintf(sources + ls, sizeof sources - ls, ls ? "; %s" : "%s", src[r]);
            if (w1 < 0 || w2 < 0 || (size_t)w1 >= sizeof regions - lr || (size_t)w2 >= sizeof sources - ls)
                break;
            lr += (size_t)w1;
            ls += (size_t)w2;
        }
    }
    const char *sugg = cands_verified(e, i, &cs);
    if (!sugg)
        return;
    vars_t v = {0};
    v[V_CODE] = x->dotted;
    v[V_REGION] = regions;
    v[V_SOURCE] = sources;
    v[V_SUGGESTION] = sugg;
    add(e, RID_SITE_UNSPECIFIED, MK_DEFAULT, v, i, -1, sugg);
}

static void junction(ev_t *e, int i)
{
    const dxi_t *x = &e->dx[i];
    if (!x->norm || x->region < 0 || x->region >= 32)
        return;
    for (int k = 0; k < e->p->njunctions; k++) {
        const rule__junction_t *j = &e->p->junctions[k];
        if (!(j->from & (1u << x->region)) || j->junction >= 32 || !(x->text_regions & (1u << j->junction)))
            continue;
        cands_t cs = {0};
        cands_region(e, x, j->junction, &cs);
        const char *sc = cands_verified(e, i, &cs);
        if (!sc)
            continue;
        vars_t v = {0};
        v[V_CODE] = x->dotted;
        v[V_REGION] = region_label(e, x->region);
        v[V_OTHER_REGION] = region_label(e, j->junction);
        v[V_SUGGESTION] = sc;
        add(e, RID_JUNCTION, MK_DEFAULT, v, i, -1, sc);
        return;
    }
}

/* Reads the next code of a map entry's congenital side ("Q76.41", or a
 * list "Q67.5, Q76.3") into norm, normalised; false at the end. A piece
 * that is no code is skipped. */
static bool next_congenital(const char **list, char *norm, size_t cap)
{
    for (const char *s = *list;;) {
        s += strspn(s, ", ");
        if (!*s) {
            *list = s;
            return false;
        }
        size_t n = strcspn(s, ", ");
        const char *tok = s;
        s += n;
        if (claim_code_normalise(tok, n, norm, cap)) {
            *list = s;
            return true;
        }
    }
}

/* The congenital counterpart(s) of a map entry ("Q76.41", "Q76.3"): a header
 * expands to its codes, those of the acquired code's region first. */
static void cands_congenital(ev_t *e, const dxi_t *x, const char *list, cands_t *cs)
{
    char norm[16];
    for (const char *l = list; next_congenital(&l, norm, sizeof norm);) {
        const rule__code_t *c = rule__table_find(x->t, norm);
        if (!c) {
            char dotted[16];
            claim_code_dotted(norm, dotted, sizeof dotted);
            cands_add(cs, dotted); /* outside the tables (Q67.5) */
            continue;
        }
        int before = cs->n;
        if (x->region >= 0 && !reportable(c))
            cands_under(cs, x->t, c, 0, x->region);
        if (cs->n == before)
            cands_under(cs, x->t, c, 0, -1);
    }
}

/* Whether code lies under one of the codes of a map entry's congenital
 * side. */
static bool under_congenital(const char *list, const char *code)
{
    char norm[16];
    for (const char *l = list; next_congenital(&l, norm, sizeof norm);)
        if (!strncmp(code, norm, strlen(norm)))
            return true;
    return false;
}

/* The other way round: a congenital code whose text says acquired. Its
 * acquired categories are named, not suggested: which of them, and which
 * region, the text alone does not tell. */
static void acquired(ev_t *e, int i)
{
    const dxi_t *x = &e->dx[i];
    const rule_pack_t *p = e->p;
    bool said = false;
    for (int w = 0; w < p->nacquired_words && !said; w++)
        said = rule__text_has_word(x->norm, p->acquired_words[w], p->negations, p->nnegations);
    if (!said)
        return;
    const char *code = e->c->dx[i].code;
    for (int k = 0; k < p->ncongenital; k++) {
        if (!under_congenital(p->congenital[k].congenital, code))
            continue;
        const char *names = NULL;
        for (int a = 0; a < p->congenital[k].nacquired; a++) {
            char dotted[16];
            claim_code_dotted(p->congenital[k].acquired[a].lo, dotted, sizeof dotted);
            names = names ? arena_printf(e->a, "%s, %s-", names, dotted)
                          : arena_printf(e->a, "%s-", dotted);
        }
        vars_t v = {0};
        v[V_CODE] = x->dotted;
        v[V_OTHER] = names;
        add(e, RID_CONGENITAL, MK_ACQUIRED, v, i, -1, NULL);
        return;
    }
}

static void congenital(ev_t *e, int i)
{
    const dxi_t *x = &e->dx[i];
    if (!x->norm)
        return;
    const rule_pack_t *p = e->p;
    bool said = false;
    for (int w = 0; w < p->ncongenital_words && !said; w++)
        said = rule__text_has_word(x->norm, p->congenital_words[w], p->negations, p->nnegations);
    if (!said) {
        acquired(e, i);
        return;
    }
    const char *code = e->c->dx[i].code;
    for (int k = 0; k < p->ncongenital; k++)
        for (int a = 0; a < p->congenital[k].nacquired; a++)
            if (rule__ref_match(&p->congenital[k].acquired[a], code)) {
                cands_t cs = {0};
                cands_congenital(e, x, p->congenital[k].congenital, &cs);
                const char *sc = cands_verified(e, i, &cs);
                if (!sc)
                    return;
                vars_t v = {0};
                v[V_CODE] = x->dotted;
                v[V_SUGGESTION] = sc;
                add(e, RID_CONGENITAL, MK_DEFAULT, v, i, -1, sc);
                return;
            }
}

/* True when tc or an ancestor is titled "... in diseases classified
 * elsewhere": a manifestation code (I.A.13). */
static bool manifestation_code(const rule__table_t *t, const rule__code_t *tc)
{
    for (const rule__code_t *c = tc; c; c = c->parent >= 0 ? &t->codes[c->parent] : NULL)
        if (c->desc && strcasestr(c->desc, "in diseases classified elsewhere"))
            return true;
    return false;
}

/* The diagnosis sequenced first: the stated principal, else the lowest
 * sequence (else the first sent) among those that are not admitting. */
static int first_listed(const claim_t *c, bool *stated)
{
    int pi = -1;
    *stated = false;
    for (size_t i = 0; i < c->ndx; i++)
        if (c->dx[i].type == DX_TYPE_PRINCIPAL) {
            *stated = true;
            return (int)i;
        }
    for (size_t i = 0; i < c->ndx; i++) {
        if (c->dx[i].type == DX_TYPE_ADMITTING)
            continue;
        if (pi < 0 || (c->dx[i].sequence > 0 &&
                       (c->dx[pi].sequence <= 0 || c->dx[i].sequence < c->dx[pi].sequence)))
            pi = (int)i;
    }
    return pi;
}

static void manifestation(ev_t *e)
{
    bool stated;
    int i = first_listed(e->c, &stated);
    if (i < 0 || !e->dx[i].valid || !e->dx[i].tc || !manifestation_code(e->dx[i].t, e->dx[i].tc))
        return;
    vars_t v = {0};
    char owner[8];
    snprintf(owner, sizeof owner, "%.3s", e->dx[i].dotted);
    v[V_CODE] = e->dx[i].dotted;
    v[V_DESCRIPTION] = e->dx[i].tc->desc;
    v[V_OWNER] = owner;
    rule_finding_t *f = add(e, RID_MANIFESTATION, stated ? MK_PRINCIPAL : MK_FIRST_LISTED, v, i, -1, NULL);
    /* First by sequence is only a guess at the coder's order: never reject. */
    if (!stated)
        cap_severity(f, RULE_SEV_WARN);
}

/* I.B.12: each code once per encounter. The admitting diagnosis is its own
 * field on a bill and may repeat the principal, so it is left out. */
static void mark_firsts(ev_t *e)
{
    const claim_t *c = e->c;
    for (size_t i = 0; i < c->ndx; i++) {
        int prev = e->dx[i].judged ? dx_by_code(e, c->dx[i].code) : -1;
        e->dx[i].first = prev < 0 || (size_t)prev == i || !e->dx[prev].judged;
    }
}

/* One finding per repeated code, at its second occurrence. */
static void duplicates(ev_t *e)
{
    const claim_t *c = e->c;
    amap_t told;
    amap_init(&told, e->a, c->ndx);
    for (size_t i = 0; i < c->ndx; i++) {
        const dxi_t *x = &e->dx[i];
        if (x->first || !x->judged || c->dx[i].type == DX_TYPE_ADMITTING)
            continue;
        int prev = dx_by_code(e, c->dx[i].code);
        if (prev < 0 || c->dx[prev].type == DX_TYPE_ADMITTING ||
            amap_get_or_put(&told, rule__key(c->dx[i].code), 1) >= 0)
            continue;
        vars_t v = {0};
        v[V_CODE] = x->dotted;
        v[V_LOCATION] = c->dx[prev].location ? c->dx[prev].location : "an earlier diagnosis";
        add(e, RID_DUPLICATE, MK_DEFAULT, v, (int)i, -1, NULL);
    }
}

/* ---------------------------------------------------------------- lines */

/* Whether a line sent under `sent` may be a row of `row`'s system. HCPCS
 * Level I is CPT, and feeds (X12's HC, HL7's HCPCS) send CPT codes under it;
 * the two never collide, as every Level II code starts with a letter and no
 * CPT code does. A line that names no system fits either. */
static bool proc_system_fits(claim_procsys_t sent, claim_procsys_t row)
{
    return sent == PROCSYS_UNKNOWN || sent == row || (sent == PROCSYS_HCPCS && row == PROCSYS_CPT);
}

const rule__proc_t *rule__proc_find(const rule_pack_t *p, const claim_line_t *l)
{
    if (!l->code || (l->system != PROCSYS_CPT && l->system != PROCSYS_HCPCS &&
                     l->system != PROCSYS_UNKNOWN))
        return NULL;
    char code[8];
    size_t n = strlen(l->code);
    if (n < 4 || n > 7)
        return NULL;
    for (size_t i = 0; i < n; i++)
        code[i] = (char)(l->code[i] >= 'a' && l->code[i] <= 'z' ? l->code[i] - 32 : l->code[i]);
    code[n] = '\0';
    for (size_t i = 0; i < p->nprocs; i++) {
        const rule__proc_t *pr = &p->procs[i];
        if (strlen(pr->lo) != n || !proc_system_fits(l->system, pr->system))
            continue;
        if (strcmp(code, pr->lo) >= 0 && strcmp(code, pr->hi) <= 0)
            return pr;
    }
    return NULL;
}

/* carried[li]: the first diagnosis that line li carried itself (FT1-19
 * with no DG1), and next_carried[i] the one after i on the same line. */
static void carried_index(ev_t *e, int **carried, int **next)
{
    const claim_t *c = e->c;
    *carried = arena_alloc(e->a, (c->nlines ? c->nlines : 1) * sizeof **carried);
    *next = arena_alloc(e->a, (c->ndx ? c->ndx : 1) * sizeof **next);
    for (size_t l = 0; l < c->nlines; l++)
        (*carried)[l] = -1;
    for (size_t i = c->ndx; i-- > 0;) {
        int l = c->dx[i].line;
        (*next)[i] = -1;
        if (l >= 0 && (size_t)l < c->nlines) {
            (*next)[i] = (*carried)[l];
            (*carried)[l] = (int)i;
        }
    }
}

static void linkage(ev_t *e, size_t li, const int *carried, const int *next_carried)
{
    const claim_line_t *l = &e->c->lines[li];
    const rule__proc_t *pr = rule__proc_find(e->p, l);
    if (!pr)
        return;
    char line[16];
    snprintf(line, sizeof line, "%d", l->sequence ? l->sequence : (int)li + 1);
    vars_t v = {0};
    v[V_LINE] = line;
    v[V_PROC] = l->code;
    v[V_KIND] = pr->kind;
    v[V_LABEL] = pr->label;
    int np = l->ndx_pointers > CLAIM_MAX_DX_POINTERS ? CLAIM_MAX_DX_POINTERS : l->ndx_pointers;
    int nc = l->ndx_codes > CLAIM_MAX_DX_POINTERS ? CLAIM_MAX_DX_POINTERS : l->ndx_codes;
    if (np <= 0 && nc <= 0 && carried[li] < 0) {
        add(e, RID_LINKAGE, MK_UNLINKED, v, -1, (int)li, NULL);
        return;
    }
    int linked[3 * CLAIM_MAX_DX_POINTERS], nl = 0;
    for (int i = carried[li]; i >= 0 && nl < CLAIM_MAX_DX_POINTERS; i = next_carried[i])
        linked[nl++] = i;
    for (int k = 0; k < np; k++) {
        int di = dx_by_seq(e, l->dx_pointers[k]);
        if (di < 0) {
            char ptr[16];
            snprintf(ptr, sizeof ptr, "%d", l->dx_pointers[k]);
            v[V_POINTER] = ptr;
            add(e, RID_LINKAGE, MK_DANGLING, v, -1, (int)li, NULL);
            continue;
        }
        linked[nl++] = di;
    }
    for (int k = 0; k < nc; k++) {
        const char *code = l->dx_codes[k];
        int found = dx_by_code(e, code);
        if (found < 0) {
            char d[20];
            claim_code_dotted(code ? code : "", d, sizeof d);
            v[V_POINTER] = arena_strdup(e->a, d);
            rule_finding_t *f = add(e, RID_LINKAGE, MK_DANGLING, v, -1, (int)li, NULL);
            add_code(e, f, d);
            continue;
        }
        linked[nl++] = found;
    }
    if (!nl || pr->region < 0)
        return;
    unsigned seg = e->p->geo.regions[pr->region].segments;
    int first = -1;
    for (int k = 0; k < nl; k++) {
        const dxi_t *x = &e->dx[linked[k]];
        if (!x->valid || x->region < 0 || e->p->geo.regions[x->region].kind != REGION_SPECIFIC ||
            (e->p->geo.regions[x->region].segments & seg))
            return; /* one linked diagnosis fits (or cannot be judged) */
        if (first < 0)
            first = linked[k];
    }
    v[V_CODE] = e->dx[first].dotted;
    v[V_REGION] = region_label(e, e->dx[first].region);
    v[V_OTHER_REGION] = region_label(e, pr->region);
    rule_finding_t *f = add(e, RID_LINKAGE, MK_OTHER_REGION, v, -1, (int)li, NULL);
    add_code(e, f, e->dx[first].dotted);
}

/* ---------------------------------------------------------------- DRG */

static bool excluded(const rule__table_t *t, int32_t pi, uint64_t mcc)
{
    const uint64_t *lo = t->excl + t->pdx[pi].off;
    size_t n = (size_t)t->pdx[pi].n;
    while (n) {
        size_t h = n / 2;
        if (lo[h] == mcc)
            return true;
        if (lo[h] < mcc) {
            lo += h + 1;
            n -= h + 1;
        } else {
            n = h;
        }
    }
    return false;
}

static void drg(ev_t *e)
{
    const claim_t *c = e->c;
    bool stated;
    /* MS-DRG prices an inpatient stay; outpatient and professional claims
     * and ADT messages have none. */
    if (c->setting != CLAIM_SETTING_INPATIENT || c->kind != CLAIM_KIND_BILL)
        return;
    /* Principal not stated: the first listed is taken, and the message
     * says it is an assumption. */
    int pi = first_listed(c, &stated);
    if ((!stated && !e->p->drg_first_when_unstated) || pi < 0 || !e->dx[pi].judged)
        return;
    const rule__table_t *t = e->t;
    int32_t px = rule__map_get(&t->pdx_map, rule__key(c->dx[pi].code));
    /* A principal outside the code rows (M99.10) is judged by its presence
     * in the DRG list alone; one inside must also be a valid code. */
    if (px < 0 || (e->dx[pi].spine && !e->dx[pi].valid))
        return;
    int mcc = -1, alive_mcc = -1, excl_mcc = -1;
    for (size_t i = 0; i < c->ndx; i++) {
        if ((int)i == pi || !e->dx[i].judged)
            continue;
        uint64_t k = rule__key(c->dx[i].code);
        int32_t alive = rule__map_get(&t->mcc_map, k);
        if (alive < 0)
            continue;
        if (excluded(t, px, k)) {
            if (excl_mcc < 0)
                excl_mcc = (int)i;
            continue;
        }
        if (alive == 0 || c->discharged_alive == 1) {
            mcc = (int)i;
            break;
        }
        if (alive_mcc < 0)
            alive_mcc = (int)i;
    }
    vars_t v = {0};
    v[V_CODE] = e->dx[pi].dotted;
    rule__msgkey_t mk;
    int other = -1;
    if (mcc >= 0) {
        mk = MK_MCC;
        other = mcc;
        v[V_DRG] = "551";
    } else if (alive_mcc >= 0 && c->discharged_alive < 0) {
        mk = MK_ALIVE_UNKNOWN;
        other = alive_mcc;
        v[V_DRG] = "551 (if discharged alive) or 552";
    } else {
        mk = MK_NO_MCC;
        v[V_DRG] = "552";
        if (alive_mcc >= 0) {
            other = alive_mcc;
            v[V_DETAIL] = arena_printf(e->a, "%s counts as an MCC only when the patient is "
                                             "discharged alive, and the patient expired",
                                       e->dx[alive_mcc].dotted);
        } else if (excl_mcc >= 0) {
            other = excl_mcc;
            v[V_DETAIL] = arena_printf(e->a, "%s is an MCC, but the principal %s excludes it",
                                       e->dx[excl_mcc].dotted, e->dx[pi].dotted);
        } else {
            v[V_DETAIL] = "no secondary diagnosis is an MCC";
        }
    }
    if (other >= 0)
        v[V_MCC] = e->dx[other].dotted;
    if (!stated)
        mk = MK_NOT_STATED;
    v[V_GROUPER] = e->t->drg_version[0] ? e->t->drg_version : "43";
    rule_finding_t *f = add(e, RID_DRG, mk, v, pi, -1, NULL);
    if (!f)
        return;
    if (other >= 0)
        add_code(e, f, e->dx[other].dotted);
    for (size_t l = 0; l < c->nlines; l++) {
        const rule__proc_t *pr = rule__proc_find(e->p, &c->lines[l]);
        if (!pr || strcmp(pr->kind, "surgery") != 0)
            continue;
        vars_t tv = {0};
        char line[16];
        snprintf(line, sizeof line, "%d", c->lines[l].sequence ? c->lines[l].sequence : (int)l + 1);
        tv[V_LINE] = line;
        tv[V_PROC] = c->lines[l].code;
        tv[V_LABEL] = pr->label;
        f->message = arena_printf(e->a, "%s%s", f->message,
                                  expand(e->a, e->p->rules[RID_DRG].msg[MK_SURGERY], tv));
        break;
    }
    /* The tier counts an MCC; one not present on admission may be a
     * hospital-acquired condition, which the tier does not model. */
    if (mcc >= 0 && c->dx[mcc].poa == POA_N)
        f->message = arena_printf(e->a, "%s%s", f->message,
                                  expand(e->a, e->p->rules[RID_DRG].msg[MK_POA_N], v));
    if (e->t->drg_for_year[0] && strcmp(e->t->drg_for_year, e->t->drg_version) != 0) {
        vars_t gv = {0};
        gv[V_GROUPER] = v[V_GROUPER];
        gv[V_DETAIL] = e->t->drg_for_year;
        gv[V_FY] = e->t->fy;
        f->message = arena_printf(e->a, "%s%s", f->message,
                                  expand(e->a, e->p->rules[RID_DRG].msg[MK_GROUPER], gv));
    }
}

/* ---------------------------------------------------------------- dates */

static long date_key(claim_date_t d)
{
    /* A date without a day (YYYY-MM) compares as the first of the month. */
    return d.year * 10000L + (d.month ? d.month : 1) * 100 + (d.day ? d.day : 1);
}

static claim_date_t line_date(const claim_line_t *l)
{
    return l->date_from.year ? l->date_from : l->date_to;
}

/* The date that picks the claim's code set: the discharge (through) date of
 * an inpatient stay, the service date otherwise (CMS). */
static claim_date_t claim_date(const claim_t *c)
{
    claim_date_t best = {0};
    if (c->setting == CLAIM_SETTING_INPATIENT) {
        if (c->discharge.year)
            return c->discharge;
        if (c->service_to.year)
            return c->service_to;
        if (c->service_from.year)
            return c->service_from;
        for (size_t i = 0; i < c->nlines; i++) {
            claim_date_t d = line_date(&c->lines[i]);
            if (d.year && (!best.year || date_key(d) > date_key(best)))
                best = d;
        }
        return best;
    }
    if (c->service_from.year)
        return c->service_from;
    if (c->service_to.year)
        return c->service_to;
    for (size_t i = 0; i < c->nlines; i++) {
        claim_date_t d = line_date(&c->lines[i]);
        if (d.year && (!best.year || date_key(d) < date_key(best)))
            best = d;
    }
    return best;
}

/* The table for date d and how d fits: in a table's validity; after the
 * newest (the newest applies); in a gap (the one before it applies, as
 * newer); before the oldest (NULL). No date: the newest, in range. */
static const rule__table_t *table_for(const rule_pack_t *p, claim_date_t d, rule_codeset_fit_t *fit)
{
    *fit = RULE_CODESET_IN_RANGE;
    const rule__table_t *newest = &p->tables[p->ntables - 1];
    if (!d.year)
        return newest;
    const rule__table_t *t = rule__table_for_date(p, d);
    if (t)
        return t;
    long k = date_key(d);
    if (k < date_key(p->tables[0].from)) {
        *fit = RULE_CODESET_OLDER;
        return NULL;
    }
    *fit = RULE_CODESET_NEWER;
    for (size_t i = p->ntables; i-- > 0;)
        if (date_key(p->tables[i].from) <= k)
            return &p->tables[i];
    return newest;
}

/* YYYY-MM-DD, a missing month or day read as 1. Written by hand: a finding
 * about dates formats one for most messages, and snprintf costs more than
 * the rest of the finding. */
static void fmt_date(char *out, size_t cap, claim_date_t d)
{
    int month = d.month ? d.month : 1, day = d.day ? d.day : 1;
    if (cap < 11 || d.year < 0 || d.year > 9999 || month < 0 || month > 99 || day < 0 || day > 99) {
        snprintf(out, cap, "%04d-%02d-%02d", d.year, month, day);
        return;
    }
    const int digits[8] = {d.year / 1000, d.year / 100 % 10, d.year / 10 % 10, d.year % 10,
                           month / 10,    month % 10,        day / 10,         day % 10};
    static const int at[8] = {0, 1, 2, 3, 5, 6, 8, 9};
    for (int i = 0; i < 8; i++)
        out[at[i]] = (char)('0' + digits[i]);
    out[4] = out[7] = '-';
    out[10] = '\0';
}

/* True when code falls under a category or 7th-character owner of t. */
static bool covered(const rule__table_t *t, const char *code)
{
    if (strlen(code) < 3)
        return false;
    if (rule__map_get(&t->category_map, rule__keyn(code, 3)) >= 0)
        return true;
    const rule__seven_t *s = rule__table_seven_for(t, code);
    return s && !s->in_codes;
}

static bool cm_system(claim_codesys_t s)
{
    return s == CODESYS_ICD10CM || s == CODESYS_UNKNOWN;
}

/* The code the gate looks at: the normalised one, else the letters and
 * digits of a malformed one. */
static const char *gate_code(const claim_dx_t *d, char *buf, size_t cap)
{
    if (d->code[0])
        return d->code;
    char form[160];
    if (d->code_sent && malformed_form(d->code_sent, buf, cap, form, sizeof form))
        return buf;
    return "";
}

static void mark_line(ev_t *e, int dx, size_t l)
{
    unsigned bit = (unsigned)(e->line_t[l] - e->p->tables);
    if (dx < 0 || bit >= 32)
        return;
    e->dx_mask[dx] |= 1u << bit;
    if (e->line_newer[l])
        e->dx_newer[dx] |= 1u << bit;
}

/* Per-line code sets of an outpatient claim whose lines have dates: which
 * code sets each diagnosis is pointed at from, found through the claim's
 * indexes (linear); says when the lines span two code sets. */
static void line_tables(ev_t *e)
{
    const claim_t *c = e->c;
    if (c->setting == CLAIM_SETTING_INPATIENT || !c->nlines)
        return;
    e->line_t = arena_calloc(e->a, c->nlines, sizeof *e->line_t);
    e->line_newer = arena_calloc(e->a, c->nlines, sizeof *e->line_newer);
    e->dx_mask = arena_calloc(e->a, c->ndx, sizeof *e->dx_mask);
    e->dx_newer = arena_calloc(e->a, c->ndx, sizeof *e->dx_newer);
    const rule__table_t *lo = NULL, *hi = NULL;
    for (size_t l = 0; l < c->nlines; l++) {
        const claim_line_t *ln = &c->lines[l];
        claim_date_t d = line_date(ln);
        if (!d.year)
            continue;
        rule_codeset_fit_t fit;
        const rule__table_t *t = table_for(e->p, d, &fit);
        e->line_t[l] = t;
        e->line_newer[l] = fit == RULE_CODESET_NEWER;
        if (!t)
            continue;
        unsigned bit = (unsigned)(t - e->p->tables);
        if (bit < 32) {
            e->span_mask |= 1u << bit;
            if (e->line_newer[l])
                e->span_newer |= 1u << bit;
        }
        if (!lo || t < lo)
            lo = t;
        if (!hi || t > hi)
            hi = t;
        for (int k = 0; k < ln->ndx_pointers && k < CLAIM_MAX_DX_POINTERS; k++)
            mark_line(e, dx_by_seq(e, ln->dx_pointers[k]), l);
        for (int k = 0; k < ln->ndx_codes && k < CLAIM_MAX_DX_POINTERS; k++)
            mark_line(e, dx_by_code(e, ln->dx_codes[k]), l);
    }
    for (size_t i = 0; i < c->ndx; i++)
        if (c->dx[i].line >= 0 && (size_t)c->dx[i].line < c->nlines && e->line_t[c->dx[i].line])
            mark_line(e, (int)i, (size_t)c->dx[i].line);
    /* Every occurrence of a code follows its first occurrence's lines. */
    for (size_t i = 0; i < c->ndx; i++) {
        int f = dx_by_code(e, c->dx[i].code);
        if (f >= 0 && (size_t)f != i) {
            e->dx_mask[i] |= e->dx_mask[f];
            e->dx_newer[i] |= e->dx_newer[f];
        }
    }
    if (lo && hi && lo != hi) {
        vars_t v = {0};
        char b[16];
        fmt_date(b, sizeof b, hi->from);
        v[V_TABLES] = arena_printf(e->a, "%s and %s", lo->fy, hi->fy);
        v[V_BOUNDARY] = b;
        v[V_FY] = hi->fy;
        add(e, RID_TABLE_COVERAGE, MK_SPAN, v, -1, -1, NULL);
    }
}

/* Whether dx i is a code of table t, asked without findings: x is left as
 * t judged it. */
static bool probe(ev_t *e, int i, const rule__table_t *t, bool lenient)
{
    size_t before = e->nf;
    e->probing = true;
    bool valid = resolve(e, i, t, lenient);
    e->probing = false;
    e->nf = before;
    return valid;
}

/* Judges dx i against table t and reports what is wrong once, with what the
 * older tables say: a code t lacks may be one an older table had (deleted
 * since), which without any date is only a warning. */
static bool judge_in(ev_t *e, int i, const rule__table_t *t, bool lenient)
{
    dxi_t *x = &e->dx[i];
    x->t = t;
    x->lenient = lenient;
    if (lenient)
        return resolve(e, i, t, true);
    if (probe(e, i, t, false))
        return true;
    const rule__table_t *older = NULL;
    for (size_t b = (size_t)(t - e->p->tables); b-- > 0 && !older;)
        if (probe(e, i, &e->p->tables[b], false))
            older = &e->p->tables[b];
    if (older && e->undated) {
        /* x stays as the older table judged it. */
        x->t = older;
        vars_t v = {0};
        v[V_CODE] = x->dotted;
        v[V_FY] = t->fy;
        v[V_TABLES] = older->fy;
        cap_severity(add(e, RID_CODE_INVALID, MK_UNDATED, v, i, -1, NULL), RULE_SEV_WARN);
        return false;
    }
    e->deleted_from = older;
    resolve(e, i, t, false);
    e->deleted_from = NULL;
    return false;
}

/* The fiscal years of the tables in mask, oldest first: "FY2026 and FY2027". */
static const char *fy_list(ev_t *e, uint32_t mask)
{
    const char *out = NULL;
    for (unsigned b = 0; b < 32 && b < e->p->ntables; b++)
        if (mask & (1u << b))
            out =
                out ? arena_printf(e->a, "%s and %s", out, e->p->tables[b].fy) : e->p->tables[b].fy;
    return out ? out : "";
}

/* A diagnosis no dated line points at, on a claim whose dates fall in more
 * than one code set (span: its lines' and its own): which year applies
 * cannot be told. A code of some of those years only is a warning; of none,
 * it is judged by the claim's own table as usual (returns false). */
static bool judge_unlinked(ev_t *e, int i, uint32_t span, uint32_t span_newer, unsigned own)
{
    uint32_t valid = 0;
    for (unsigned b = 0; b < 32 && b < e->p->ntables; b++)
        if ((span & (1u << b)) && probe(e, i, &e->p->tables[b], (span_newer >> b) & 1u))
            valid |= 1u << b;
    if (!valid)
        return false;
    dxi_t *x = &e->dx[i];
    /* x as the claim's own table judges it, else the newest that has it. */
    unsigned vb = (valid >> own) & 1u ? own : 31;
    while (!(valid & (1u << vb)))
        vb--;
    x->t = &e->p->tables[vb];
    x->lenient = (span_newer >> vb) & 1u;
    probe(e, i, x->t, x->lenient);
    if (valid != span) {
        vars_t v = {0};
        v[V_CODE] = x->dotted;
        v[V_TABLES] = fy_list(e, valid);
        v[V_FY] = fy_list(e, span & ~valid);
        cap_severity(add(e, RID_CODE_INVALID, MK_UNLINKED, v, i, -1, NULL), RULE_SEV_WARN);
    }
    return true;
}

/* Judges dx i against the code set of every dated line that points at it
 * (an outpatient line's diagnoses follow the line's date), else the claim's. */
static void judge_code(ev_t *e, int i)
{
    const rule__table_t *own = e->t;
    bool own_lenient = e->fit == RULE_CODESET_NEWER;
    uint32_t mask = e->dx_mask ? e->dx_mask[i] : 0, newer = e->dx_newer ? e->dx_newer[i] : 0;
    if (mask) {
        /* Its own table: the claim's when a line of that year points at
         * it, else the newest of its lines'. */
        unsigned ob = (unsigned)(own - e->p->tables);
        if (!(ob < 32 && (mask & (1u << ob)))) {
            for (unsigned b = 31; b < 32; b--)
                if (mask & (1u << b)) {
                    ob = b;
                    break;
                }
            own = &e->p->tables[ob];
        }
        own_lenient = (newer >> ob) & 1u;
        for (unsigned b = 0; b < 32 && b < e->p->ntables; b++)
            if ((mask & (1u << b)) && b != ob &&
                !judge_in(e, i, &e->p->tables[b], (newer >> b) & 1u))
                return;
    } else {
        /* The years it may belong to: its lines' and the claim's own. */
        unsigned ob = (unsigned)(own - e->p->tables);
        uint32_t span = e->span_mask, span_newer = e->span_newer;
        if (ob < 32) {
            span |= 1u << ob;
            span_newer |= (uint32_t)own_lenient << ob;
            if ((span & (span - 1)) && judge_unlinked(e, i, span, span_newer, ob))
                return;
        }
    }
    judge_in(e, i, own, own_lenient);
}

/* Reports what keeps dx i from being judged as ICD-10-CM: a malformed code,
 * a WHO ICD-10 code, an unknown system on a spine-shaped code. Returns true
 * when the code goes on to be judged. */
static bool read_code(ev_t *e, int i)
{
    const claim_dx_t *d = &e->c->dx[i];
    dxi_t *x = &e->dx[i];
    const rule__table_t *t = e->t;
    char loose[16], form[160];
    const char *code = gate_code(d, loose, sizeof loose);
    claim_code_dotted(code, x->dotted, sizeof x->dotted);
    if (!covered(t, code))
        return d->code[0] && cm_system(d->system);
    vars_t v = {0};
    v[V_CODE] = x->dotted;
    if (d->system == CODESYS_ICD10_WHO) {
        add(e, RID_CODE_SYSTEM, MK_WHO, v, i, -1, NULL);
        return false;
    }
    if (d->system == CODESYS_OTHER) {
        v[V_SYSTEM] = d->system_sent ? arena_strndup(e->a, d->system_sent, strnlen(d->system_sent, 64)) : "(none)";
        add(e, RID_CODE_SYSTEM, MK_UNKNOWN_SYSTEM, v, i, -1, NULL);
        return false;
    }
    if (d->system == CODESYS_ICD9CM)
        return false;
    if (d->code[0])
        return true;
    /* Malformed: name what is wrong, suggest what its letters and digits
     * would be, and keep it out of every other rule. */
    malformed_form(d->code_sent, loose, sizeof loose, form, sizeof form);
    x->spine = true;
    x->t = t;
    snprintf(x->dotted, sizeof x->dotted, "%.16s", d->code_sent);
    v[V_CODE] = x->dotted;
    v[V_SENT] = x->dotted;
    v[V_FORM] = form;
    v[V_FY] = t->fy;
    cands_t cs = {0};
    const rule__code_t *tc = rule__table_find(t, loose);
    if (tc)
        cands_under(&cs, t, tc, 0, -1);
    add_invalid(e, RID_CODE_INVALID, MK_MALFORMED, v, i, &cs);
    return false;
}

/* ---------------------------------------------------------------- suggestions */

/* True when the claim with `dotted` in place of dx's code has no reject on
 * that diagnosis or naming that code. Each check re-judges the claim (at
 * depth 1, where suggestions are not checked again); a claim gets a bounded
 * number of checks, and a suggestion that cannot be checked is not made. */
static bool suggestion_ok(ev_t *e, int dx, const char *dotted)
{
    if (e->depth > 0)
        return true;
    if (*e->verify_budget <= 0)
        return false;
    (*e->verify_budget)--;
    arena_t scratch;
    arena_init(&scratch, 0);
    claim_t c = *e->c;
    c.dx = arena_calloc(&scratch, e->c->ndx, sizeof *c.dx);
    memcpy(c.dx, e->c->dx, e->c->ndx * sizeof *c.dx);
    claim_dx_t *d = &c.dx[dx];
    d->code_sent = dotted;
    d->system = CODESYS_ICD10CM;
    bool ok = claim_code_normalise(dotted, strlen(dotted), d->code, sizeof d->code);
    rule_verdict_t v;
    if (ok)
        evaluate(e->p, &c, &scratch, &v, 1, e->verify_budget);
    for (size_t i = 0; ok && i < v.nfindings; i++) {
        const rule_finding_t *f = &v.findings[i];
        if (f->severity != RULE_SEV_REJECT)
            continue;
        if (f->dx_index == dx)
            ok = false;
        for (int k = 0; k < f->ncodes && ok; k++)
            if (!strcmp(f->codes[k], dotted))
                ok = false;
    }
    arena_free(&scratch);
    return ok;
}

/* Lists the tables the claim was judged with, oldest first: the claim's own
 * and its dated lines' (the pack keeps its tables in date order). */
static void code_sets_used(const ev_t *e, rule_verdict_t *out)
{
    for (size_t k = 0; k < e->p->ntables && out->ncode_sets < RULE_MAX_CODE_SETS; k++) {
        const rule__table_t *t = &e->p->tables[k];
        bool used = t == e->t;
        for (size_t l = 0; !used && e->line_t && l < e->c->nlines; l++)
            used = e->line_t[l] == t;
        if (used)
            out->code_sets[out->ncode_sets++] = t->fy;
    }
}

/* ---------------------------------------------------------------- main */

static void evaluate(const rule_pack_t *pack, const claim_t *claim, arena_t *a, rule_verdict_t *out,
                     int depth, int *budget)
{
    memset(out, 0, sizeof *out);
    out->kind = VERDICT_ACCEPT;
    if (claim->kind == CLAIM_KIND_ADT && pack->adt == RULE_ADT_FORWARD)
        return;
    ev_t e = {0};
    e.p = pack;
    e.c = claim;
    e.a = a;
    e.depth = depth;
    e.verify_budget = budget;
    claim_date_t date = claim_date(claim);
    e.t = table_for(pack, date, &e.fit);
    e.undated = !date.year;
    const rule__table_t *gate = e.t ? e.t : &pack->tables[0];

    /* The gate: nothing to say about a claim without spine codes. */
    bool any = false;
    for (size_t i = 0; i < claim->ndx && !any; i++) {
        char loose[16];
        any = claim->dx[i].system != CODESYS_ICD9CM && covered(gate, gate_code(&claim->dx[i], loose, sizeof loose));
    }
    if (!any)
        return;

    out->code_set_fit = e.fit;
    if (e.fit != RULE_CODESET_IN_RANGE) {
        vars_t v = {0};
        char d[16];
        fmt_date(d, sizeof d, date);
        v[V_DATE] = d;
        v[V_TABLES] = pack->tables_span;
        v[V_FY] = e.t ? e.t->fy : pack->tables[0].fy;
        add(&e, RID_TABLE_COVERAGE, e.fit == RULE_CODESET_NEWER ? MK_NEWER : MK_OLDER, v, -1, -1, NULL);
    }
    if (e.t) {
        out->code_set = e.t->fy;
        e.dx = arena_calloc(a, claim->ndx, sizeof *e.dx);
        amap_init(&e.by_code, a, claim->ndx);
        amap_init(&e.by_seq, a, claim->ndx);
        for (size_t i = 0; i < claim->ndx; i++) {
            e.dx[i].region = -1;
            e.dx[i].t = e.t;
            amap_get_or_put(&e.by_seq, seq_key(claim->dx[i].sequence), (int32_t)i);
            if (claim->dx[i].code[0])
                amap_get_or_put(&e.by_code, rule__key(claim->dx[i].code), (int32_t)i);
        }
        line_tables(&e);
        code_sets_used(&e, out);
        for (size_t i = 0; i < claim->ndx; i++) {
            dxi_t *x = &e.dx[i];
            x->judged = read_code(&e, (int)i);
            if (!x->judged)
                continue;
            judge_code(&e, (int)i);
            if (x->valid && x->tc)
                read_text(&e, (int)i);
        }
        mark_firsts(&e);
        pairs(&e);
        for (size_t i = 0; i < claim->ndx; i++) {
            const dxi_t *x = &e.dx[i];
            if (!x->valid || !x->tc || !x->first)
                continue;
            if (x->region >= 0 && pack->geo.regions[x->region].kind == REGION_UNSPECIFIED)
                site_unspecified(&e, (int)i);
            junction(&e, (int)i);
            congenital(&e, (int)i);
        }
        manifestation(&e);
        int *carried, *next_carried;
        carried_index(&e, &carried, &next_carried);
        for (size_t l = 0; l < claim->nlines; l++)
            linkage(&e, l, carried, next_carried);
        duplicates(&e);
        drg(&e);
    }

    /* ADT carries working diagnoses, not a bill: by default it is
     * annotated, never rejected. */
    if (claim->kind == CLAIM_KIND_ADT && pack->adt == RULE_ADT_ANNOTATE)
        for (size_t i = 0; i < e.nf; i++)
            cap_severity(&e.f[i], RULE_SEV_WARN);
    out->findings = e.f;
    out->nfindings = e.nf;
    for (size_t i = 0; i < e.nf; i++) {
        if (e.f[i].severity == RULE_SEV_REJECT)
            out->kind = VERDICT_REJECT;
        else if (out->kind != VERDICT_REJECT)
            out->kind = VERDICT_ANNOTATE;
    }
}

void rule_evaluate(const rule_pack_t *pack, const claim_t *claim, arena_t *a, rule_verdict_t *out)
{
    memset(out, 0, sizeof *out);
    out->kind = VERDICT_ACCEPT;
    if (!pack || !claim || !claim->ndx || !pack->ntables)
        return;
    /* Suggestion checks re-judge the claim: bounded so that the whole stays
     * linear in the claim's size. */
    int budget = claim->ndx <= 64 ? 96 : (int)(65536 / claim->ndx) + 4;
    evaluate(pack, claim, a, out, 0, &budget);
}
