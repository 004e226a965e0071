/* excludes.c - Excludes1 by meaning: the per-code index of the reviewed
 * rows (built at load, owned by the pack and freed by rule_pack_free()), the
 * region and level of a diagnosis, and the pair finder that applies the
 * rows to a claim in time linear in its diagnoses. The policy it carries
 * out is written in docs/excludes1.md. Evaluation allocates only from the
 * caller's arena.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"
#include "xmalloc.h"

/* ---------------------------------------------------------------- load */

static bool same_ref(const rule__ref_t *a, const rule__ref_t *b)
{
    return a->lolen == b->lolen && a->hilen == b->hilen && !memcmp(a->lo, b->lo, a->lolen) &&
           !memcmp(a->hi, b->hi, a->hilen) && a->fifth == b->fifth;
}

const rule__note_t *rule__excludes_note(const rule__table_t *t, const rule__ex1row_t *r)
{
    for (size_t i = 0; i < t->nnotes; i++) {
        const rule__note_t *n = &t->notes[i];
        if (n->type == NOTE_EXCLUDES1 && same_ref(&n->owner, &r->owner) &&
            !strcmp(n->text, r->note))
            return n;
    }
    return NULL;
}

static bool row_applies(const rule__ex1row_t *r, const char *code)
{
    if (!rule__ref_match(&r->owner, code))
        return false;
    if (!r->napplies)
        return true;
    for (int k = 0; k < r->napplies; k++)
        if (rule__ref_match(&r->applies[k], code))
            return true;
    return false;
}

/* Marks in has[] the notes of t that some row reviews. */
static void reviewed(const rule_pack_t *p, const rule__table_t *t, bool *has)
{
    for (int i = 0; i < p->nex1rows; i++) {
        const rule__note_t *n = rule__excludes_note(t, &p->ex1rows[i]);
        if (n)
            has[n - t->notes] = true;
    }
}

size_t rule__excludes_unreviewed(const rule_pack_t *p, size_t ti, const rule__note_t **first)
{
    const rule__table_t *t = &p->tables[ti];
    bool *has = xcalloc(t->nnotes + 1, sizeof *has);
    reviewed(p, t, has);
    size_t n = 0;
    if (first)
        *first = NULL;
    for (size_t i = 0; i < t->nnotes; i++) {
        if (t->notes[i].type != NOTE_EXCLUDES1 || has[i])
            continue;
        if (!n && first)
            *first = &t->notes[i];
        n++;
    }
    xfree(has);
    return n;
}

static int axis_region(const rule_pack_t *p, const char *code, const rule__code_t *tc);

void rule__excludes_index(rule_pack_t *p)
{
    p->ex1idx = xcalloc(p->ntables + 1, sizeof *p->ex1idx);
    for (size_t ti = 0; ti < p->ntables; ti++) {
        const rule__table_t *t = &p->tables[ti];
        rule__ex1idx_t *x = &p->ex1idx[ti];
        bool *has = xcalloc(t->nnotes + 1, sizeof *has);
        reviewed(p, t, has);
        x->off = xcalloc(t->ncodes + 1, sizeof *x->off);
        x->region = xcalloc(t->ncodes + 1, sizeof *x->region);
        for (size_t i = 0; i < t->ncodes; i++)
            x->region[i] = (int16_t)axis_region(p, t->codes[i].code, &t->codes[i]);
        size_t cap = 16, n = 0;
        x->items = xmalloc(cap * sizeof *x->items);
        for (size_t i = 0; i < t->ncodes; i++) {
            const rule__code_t *c = &t->codes[i];
            x->off[i] = (int32_t)n;
            for (int pass = 0; pass < 2; pass++) {
                int cnt = pass ? c->nex1 : p->nex1rows;
                for (int k = 0; k < cnt; k++) {
                    int32_t item;
                    if (!pass) {
                        if (!row_applies(&p->ex1rows[k], c->code))
                            continue;
                        item = k;
                    } else {
                        if (has[c->ex1[k]])
                            continue;
                        item = -c->ex1[k] - 1;
                    }
                    if (n == cap) {
                        cap *= 2;
                        x->items = xrealloc(x->items, cap * sizeof *x->items);
                    }
                    x->items[n++] = item;
                }
            }
        }
        x->off[t->ncodes] = (int32_t)n;
        xfree(has);
    }
}

/* ---------------------------------------------------------------- sites */

static int axis_region(const rule_pack_t *p, const char *code, const rule__code_t *tc)
{
    for (int i = 0; i < p->naxes; i++) {
        const rule__axis_t *ax = &p->axes[i];
        for (int q = 0; q < ax->ncodes; q++) {
            if (!rule__ref_match(&ax->codes[q], code))
                continue;
            if (!ax->character)
                return ax->region;
            if (strnlen(code, 16) < (size_t)ax->character)
                return -1;
            char ch = code[ax->character - 1];
            int di = ch >= '0' && ch <= '9'   ? ch - '0'
                     : ch >= 'A' && ch <= 'Z' ? 10 + ch - 'A'
                                              : -1;
            return di >= 0 ? ax->digit_region[di] : -1;
        }
    }
    return tc ? tc->region : -1;
}

int rule__pair_region(const rule_pack_t *p, const rule__table_t *t, const char *code,
                      const rule__code_t *tc)
{
    if (t && tc && p->ex1idx)
        return p->ex1idx[t - p->tables].region[tc - t->codes];
    return axis_region(p, code, tc);
}

/* The bit of level letter+number in the pack's levels, or -1. */
static int level_bit(const rule__geo_t *g, char letter, int num)
{
    int base = 0;
    for (int k = 0; k < g->nlevels; k++) {
        const rule__level_t *lv = &g->levels[k];
        if (lv->letter == letter && num >= lv->from && num <= lv->to)
            return base + num - lv->from < 64 ? base + num - lv->from : -1;
        base += lv->to - lv->from + 1;
    }
    return -1;
}

static bool stop_word(const rule__geo_t *g, const char *w, size_t n)
{
    for (int i = 0; i < g->nstop; i++) {
        const char *s = g->stop_after[i] + 1; /* stored as " WORD " */
        size_t sl = strlen(s) - 1;
        if (sl == n && !memcmp(s, w, n))
            return true;
    }
    return false;
}

uint64_t rule__text_levels(const rule__geo_t *g, const char *norm)
{
    uint64_t set = 0;
    int prev = -1; /* bit of the previous level word, for "L3 L5" ranges */
    char prev_letter = 0;
    const char *p = norm;
    while (p && *p) {
        while (*p == ' ')
            p++;
        const char *w = p;
        while (*p && *p != ' ')
            p++;
        size_t n = (size_t)(p - w);
        if (!n)
            break;
        /* a word made of levels only: "L4", "L4L5", "T12" */
        uint64_t ws = 0;
        int last = -1, first = -1;
        char letter = 0;
        size_t i = 0;
        bool ok = n >= 2;
        while (ok && i < n) {
            char l = w[i++];
            int v = 0, digits = 0;
            while (i < n && isdigit((unsigned char)w[i]) && digits < 2) {
                v = v * 10 + (w[i++] - '0');
                digits++;
            }
            int b = digits ? level_bit(g, l, v) : -1;
            if (b < 0) {
                ok = false;
                break;
            }
            if (first < 0) {
                first = b;
                letter = l;
            }
            ws |= 1ull << b;
            last = b;
        }
        const char *nx = p;
        while (*nx == ' ')
            nx++;
        const char *ne = nx;
        while (*ne && *ne != ' ')
            ne++;
        if (!ok || (ne > nx && stop_word(g, nx, (size_t)(ne - nx)))) {
            prev = -1;
            continue;
        }
        /* "C5-C7" normalises to "C5 C7": the levels between belong too */
        if (prev >= 0 && letter == prev_letter && first > prev + 1 && first - prev <= 12)
            for (int b = prev + 1; b < first; b++)
                ws |= 1ull << b;
        set |= ws;
        prev = last;
        prev_letter = w[0];
        for (size_t q = n; q > 0; q--)
            if (isalpha((unsigned char)w[q - 1])) {
                prev_letter = w[q - 1];
                break;
            }
    }
    return set;
}

/* "L3" / "L4, L5" for a message. */
static void levels_text(const rule__geo_t *g, uint64_t set, char *out, size_t cap)
{
    size_t o = 0;
    int base = 0;
    out[0] = '\0';
    for (int k = 0; k < g->nlevels; k++) {
        const rule__level_t *lv = &g->levels[k];
        for (int v = lv->from; v <= lv->to; v++) {
            int b = base + v - lv->from;
            if (b >= 64 || !(set & (1ull << b)))
                continue;
            int w = snprintf(out + o, cap - o, o ? ", %c%d" : "%c%d", lv->letter, v);
            if (w < 0 || (size_t)w >= cap - o)
                return;
            o += (size_t)w;
        }
        base += lv->to - lv->from + 1;
    }
}

/* ---------------------------------------------------------------- pairs */

/* Scratch state of one claim's pair search, all in the arena. */
typedef struct {
    const rule_pack_t *p;
    const rule__pairdx_t *dx;
    size_t n;
    arena_t *a;
    int *region;      /* per diagnosis, -2 not computed yet */
    uint64_t *levels; /* per diagnosis, ~0 not computed yet */
    /* the first diagnosis of each distinct code, sorted by code: every
     * reference (a category, a prefix, a range even across categories) is
     * one contiguous run of it, found by binary search */
    const char **scode;
    int32_t *sidx;
    size_t ns;
    uint32_t *cats; /* the distinct 3-character categories, sorted */
    size_t ncats;
    /* pairs already judged: key (lo << 32 | hi) + 1 */
    uint64_t *done;
    size_t dcap, dn;
} pf_t;

static size_t hash64(uint64_t k, size_t cap)
{
    return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

/* The first sorted position whose code, cut to klen characters, is at
 * or after key (after: strictly after). Cutting to a prefix keeps the
 * order, so this is a plain binary search. */
static size_t bound(const pf_t *f, const char *key, size_t klen, bool after)
{
    size_t lo = 0, hi = f->ns;
    while (lo < hi) {
        size_t m = lo + (hi - lo) / 2;
        int c = strncmp(f->scode[m], key, klen);
        if (after ? c <= 0 : c < 0)
            lo = m + 1;
        else
            hi = m;
    }
    return lo;
}

/* True the first time the unordered pair (i, j) is seen. */
static bool pair_first(pf_t *f, int i, int j)
{
    uint64_t lo = (uint64_t)(i < j ? i : j), hi = (uint64_t)(i < j ? j : i);
    uint64_t key = (lo << 32 | hi) + 1;
    if ((f->dn + 1) * 2 > f->dcap) {
        size_t ncap = f->dcap ? f->dcap * 2 : 64;
        uint64_t *nd = arena_calloc(f->a, ncap, sizeof *nd);
        for (size_t k = 0; k < f->dcap; k++) {
            if (!f->done[k])
                continue;
            size_t s = hash64(f->done[k], ncap);
            while (nd[s])
                s = (s + 1) & (ncap - 1);
            nd[s] = f->done[k];
        }
        f->done = nd;
        f->dcap = ncap;
    }
    size_t s = hash64(key, f->dcap);
    while (f->done[s]) {
        if (f->done[s] == key)
            return false;
        s = (s + 1) & (f->dcap - 1);
    }
    f->done[s] = key;
    f->dn++;
    return true;
}

static int region_of(pf_t *f, int i)
{
    if (f->region[i] == -2)
        f->region[i] = rule__pair_region(f->p, f->dx[i].t, f->dx[i].code, f->dx[i].tc);
    return f->region[i];
}

static uint64_t levels_of(pf_t *f, int i)
{
    if (f->levels[i] == ~0ull)
        f->levels[i] = f->dx[i].norm ? rule__text_levels(&f->p->geo, f->dx[i].norm) : 0;
    return f->levels[i];
}

static bool specific(const pf_t *f, int r)
{
    return r >= 0 && r < f->p->geo.nregions && f->p->geo.regions[r].kind == REGION_SPECIFIC;
}

/* The levels of a specific region (its segments'), or 0. */
static uint64_t region_levels(const pf_t *f, int r)
{
    const rule__geo_t *g = &f->p->geo;
    if (!specific(f, r))
        return 0;
    uint64_t set = 0;
    int base = 0;
    for (int k = 0; k < g->nlevels; k++) {
        const rule__level_t *lv = &g->levels[k];
        if (g->regions[r].segments & lv->segment)
            for (int n = 0; n <= lv->to - lv->from && base + n < 64; n++)
                set |= 1ull << (base + n);
        base += lv->to - lv->from + 1;
    }
    return set;
}

/* When o and t are at levels that share none (a defect "L3", a slip
 * "L4-L5"; at least one side named in its free text), the conditions are
 * at different levels, coded separately: a warning that names them.
 * by_region: a side whose text names no level is at its code's region's
 * (for two codes of one region that adds nothing but a text that
 * contradicts its own code, so same-region rows leave it out). */
static bool levels_apart(pf_t *f, int o, int t, bool by_region, rule__pair_t *out)
{
    uint64_t lo = levels_of(f, o), lt = levels_of(f, t);
    if (!lo && !lt)
        return false;
    /* A side whose text names no level is at the levels of its code's
     * region (M43.04: T1-T12), when the code names one. */
    char a[32], b[32];
    if (lo)
        levels_text(&f->p->geo, lo, a, sizeof a);
    else if (by_region && (lo = region_levels(f, region_of(f, o))))
        snprintf(a, sizeof a, "%s", f->p->geo.regions[region_of(f, o)].label);
    if (lt)
        levels_text(&f->p->geo, lt, b, sizeof b);
    else if (by_region && (lt = region_levels(f, region_of(f, t))))
        snprintf(b, sizeof b, "%s", f->p->geo.regions[region_of(f, t)].label);
    if (!lo || !lt || (lo & lt))
        return false;
    snprintf(out->levels, sizeof out->levels, "%s / %s", a, b);
    out->severity = RULE_SEV_WARN;
    out->mk = MK_LEVELS_DIFFER;
    return true;
}

/* Judges owner o and other t under one row (or a raw note when row is
 * NULL). Returns false when the pair is no finding under it. */
static bool judge(pf_t *f, const rule__ex1row_t *row, int o, int t, rule__pair_t *out)
{
    memset(out, 0, sizeof *out);
    out->owner = o;
    out->other = t;
    out->row = row;
    out->region_owner = region_of(f, o);
    out->region_other = region_of(f, t);
    if (!row) {
        out->severity = RULE_SEV_WARN;
        out->mk = MK_UNREVIEWED;
        return true;
    }
    out->severity = row->severity;
    if (!row->same_region) {
        if (row->severity == RULE_SEV_REJECT && levels_apart(f, o, t, true, out))
            return true;
        out->mk = row->severity == RULE_SEV_REJECT ? MK_SAME_CONDITION : MK_QUERY;
        return true;
    }
    int ro = out->region_owner, rt = out->region_other;
    if (!specific(f, ro) || !specific(f, rt)) {
        out->severity = RULE_SEV_WARN;
        out->mk = MK_REGION_UNSTATED;
        return true;
    }
    if (ro == rt) {
        if (row->severity == RULE_SEV_REJECT && levels_apart(f, o, t, false, out))
            return true;
        out->mk = row->severity == RULE_SEV_REJECT ? MK_SAME_REGION : MK_QUERY;
        return true;
    }
    out->severity = RULE_SEV_WARN;
    if (f->p->geo.regions[ro].segments & f->p->geo.regions[rt].segments) {
        out->mk = MK_REGION_OVERLAP;
        return true;
    }
    if (row->other_region_none)
        return false;
    out->mk = MK_OTHER_REGION;
    return true;
}

/* The rows and unreviewed notes that apply to diagnosis i (which has a
 * table code), from the index of its own code set. */
static const int32_t *items_of(const pf_t *f, int i, int *n)
{
    const rule__table_t *t = f->dx[i].t;
    const rule__ex1idx_t *ix = &f->p->ex1idx[t - f->p->tables];
    size_t ci = (size_t)(f->dx[i].tc - t->codes);
    *n = ix->off[ci + 1] - ix->off[ci];
    return ix->items + ix->off[ci];
}

static const rule__ref_t *item_refs(const pf_t *f, int i, int32_t item, int *n)
{
    if (item >= 0) {
        *n = f->p->ex1rows[item].nexcl;
        return f->p->ex1rows[item].excl;
    }
    const rule__note_t *note = &f->dx[i].t->notes[-item - 1];
    *n = note->nrefs;
    return note->refs;
}

static bool refs_match(const rule__ref_t *r, int n, const char *code)
{
    for (int k = 0; k < n; k++)
        if (rule__ref_match(&r[k], code))
            return true;
    return false;
}

/* The strongest judgement of the pair over every row of either side that
 * names the other. Returns false when none makes a finding. */
static bool best_excludes1(pf_t *f, int i, int j, rule__pair_t *best)
{
    bool have = false;
    for (int side = 0; side < 2; side++) {
        int o = side ? j : i, t = side ? i : j;
        if (!f->dx[o].tc || !f->dx[o].t)
            continue;
        int n;
        const int32_t *it = items_of(f, o, &n);
        for (int k = 0; k < n; k++) {
            int nr;
            const rule__ref_t *refs = item_refs(f, o, it[k], &nr);
            if (!refs_match(refs, nr, f->dx[t].code))
                continue;
            rule__pair_t cur;
            if (!judge(f, it[k] >= 0 ? &f->p->ex1rows[it[k]] : NULL, o, t, &cur))
                continue;
            if (it[k] < 0)
                cur.note = &f->dx[o].t->notes[-it[k] - 1];
            if (!have || cur.severity > best->severity) {
                *best = cur;
                have = true;
            }
        }
    }
    return have;
}

/* Calls fn(f, j, ctx) for every diagnosis j whose code ref may match:
 * the run of sorted codes between ref's bounds. */
static uint32_t cat_key(const char *c)
{
    return (uint32_t)(unsigned char)c[0] << 16 | (uint32_t)(unsigned char)c[1] << 8 |
           (unsigned char)c[2];
}

static bool has_cat(const pf_t *f, uint32_t key)
{
    size_t lo = 0, hi = f->ncats;
    while (lo < hi) {
        size_t m = lo + (hi - lo) / 2;
        if (f->cats[m] == key)
            return true;
        if (f->cats[m] < key)
            lo = m + 1;
        else
            hi = m;
    }
    return false;
}

_Thread_local unsigned long rule__partners_visited;

static bool each_partner(pf_t *f, const rule__ref_t *r, bool (*fn)(pf_t *, int, void *), void *ctx)
{
    /* Most references name a category the claim does not have: an integer
     * search over its few categories answers that before any string does. */
    uint32_t clo = cat_key(r->lo);
    if (clo == cat_key(r->hi) && !has_cat(f, clo))
        return true;
    size_t from = bound(f, r->lo, r->lolen, false), to = bound(f, r->hi, r->hilen, true);
    if (to > from)
        rule__partners_visited += to - from;
    for (size_t k = from; k < to; k++)
        if (!fn(f, f->sidx[k], ctx))
            return false;
    return true;
}

typedef struct {
    int owner;
    const rule__ref_t *ref;
    bool excludes2;
    const rule__note_t *note; /* Excludes2 note */
    bool (*emit)(void *, const rule__pair_t *);
    void *ctx;
} partner_ctx_t;

static bool on_partner(pf_t *f, int j, void *vctx)
{
    partner_ctx_t *pc = vctx;
    int i = pc->owner;
    if (j == i || !rule__ref_match(pc->ref, f->dx[j].code) || !pair_first(f, i, j))
        return true;
    rule__pair_t pr;
    if (pc->excludes2) {
        memset(&pr, 0, sizeof pr);
        pr.owner = i;
        pr.other = j;
        pr.excludes2 = true;
        pr.note = pc->note;
        pr.mk = MK_DEFAULT;
        pr.severity = f->p->rules[RID_EXCLUDES2].severity;
        pr.region_owner = pr.region_other = -1;
        return pc->emit(pc->ctx, &pr);
    }
    if (!best_excludes1(f, i, j, &pr))
        return true;
    rule_severity_t ceiling = f->p->rules[RID_EXCLUDES1].severity;
    if (pr.severity > ceiling)
        pr.severity = ceiling;
    return pc->emit(pc->ctx, &pr);
}

typedef struct {
    const char *code;
    int32_t i;
} sortee_t;

static int cmp_sortee(const void *a, const void *b)
{
    const sortee_t *x = a, *y = b;
    int c = strcmp(x->code, y->code);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

void rule__pairs_find(const rule_pack_t *p, const rule__pairdx_t *dx, size_t n, arena_t *a,
                      bool (*emit)(void *ctx, const rule__pair_t *pr), void *ctx)
{
    if (!n || !p->ex1idx)
        return;
    pf_t f = {0};
    f.p = p;
    f.dx = dx;
    f.n = n;
    f.a = a;
    f.region = arena_alloc(a, n * sizeof *f.region);
    f.levels = arena_alloc(a, n * sizeof *f.levels);
    for (size_t i = 0; i < n; i++) {
        f.region[i] = -2;
        f.levels[i] = ~0ull;
    }
    /* Sort the usable diagnoses by code (then by position); of identical
     * codes only the first takes part. */
    sortee_t *so = arena_alloc(a, n * sizeof *so);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (dx[i].usable && strnlen(dx[i].code, 3) == 3)
            so[m++] = (sortee_t){dx[i].code, (int32_t)i};
    qsort(so, m, sizeof *so, cmp_sortee);
    bool *first = arena_calloc(a, n, sizeof *first);
    f.scode = arena_alloc(a, (m ? m : 1) * sizeof *f.scode);
    f.sidx = arena_alloc(a, (m ? m : 1) * sizeof *f.sidx);
    for (size_t k = 0; k < m; k++) {
        if (f.ns && !strcmp(f.scode[f.ns - 1], so[k].code))
            continue;
        f.scode[f.ns] = so[k].code;
        f.sidx[f.ns++] = so[k].i;
        first[so[k].i] = true;
    }
    f.cats = arena_alloc(a, (f.ns ? f.ns : 1) * sizeof *f.cats);
    for (size_t k = 0; k < f.ns; k++) {
        uint32_t c = cat_key(f.scode[k]);
        if (!f.ncats || f.cats[f.ncats - 1] != c)
            f.cats[f.ncats++] = c;
    }
    /* Excludes1 first; a pair judged there is not an Excludes2 pair. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            if (!first[i] || !dx[i].tc || !dx[i].t)
                continue;
            partner_ctx_t pc = {(int)i, NULL, pass == 1, NULL, emit, ctx};
            if (!pass) {
                int ni;
                const int32_t *it = items_of(&f, (int)i, &ni);
                for (int k = 0; k < ni; k++) {
                    int nr;
                    const rule__ref_t *refs = item_refs(&f, (int)i, it[k], &nr);
                    for (int r = 0; r < nr; r++) {
                        pc.ref = &refs[r];
                        if (!each_partner(&f, &refs[r], on_partner, &pc))
                            return;
                    }
                }
            } else {
                const rule__code_t *tc = dx[i].tc;
                for (int k = 0; k < tc->nex2; k++) {
                    const rule__note_t *note = &dx[i].t->notes[tc->ex2[k]];
                    pc.note = note;
                    for (int r = 0; r < note->nrefs; r++) {
                        pc.ref = &note->refs[r];
                        if (!each_partner(&f, &note->refs[r], on_partner, &pc))
                            return;
                    }
                }
            }
        }
    }
}
