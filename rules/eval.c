/* eval.c - rule_evaluate(): the spine rules applied to one claim.
 *
 * Pure: reads the pack (immutable) and the claim, writes findings into the
 * caller's arena, and looks at no clock (only the claim's service date picks
 * the table). A claim with no diagnosis in a category the tables cover gets
 * no findings at all, so the gate is safe in front of a whole feed. Every
 * lookup is a hash probe or a walk over lists precomputed at load.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

#define RULE_MAX_FINDINGS 256

typedef struct {
    const rule__code_t *tc; /* the table code (a 7th-character code's base) */
    const char *suffix;     /* the sent code's characters after tc (7th char) */
    bool judged;            /* read as ICD-10-CM */
    bool spine;             /* in a category (or 7th-character owner) covered */
    bool valid;             /* a complete, valid code */
    int region;             /* region index, -1 none */
    char dotted[20];
    const char *norm;       /* normalised free text, NULL when none */
    uint32_t text_regions;
} dxi_t;

typedef struct {
    const rule_pack_t *p;
    const claim_t *c;
    const rule__table_t *t;
    arena_t *a;
    dxi_t *dx;
    rule_finding_t *f;
    size_t nf, cap;
} ev_t;

typedef const char *vars_t[V__COUNT];

/* ---------------------------------------------------------------- output */

/* Fills a message template's {placeholders}; absent values read as "". */
static char *expand(arena_t *a, const char *tmpl, const char *const *v)
{
    size_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        char *out = pass ? arena_alloc(a, n + 1) : NULL;
        size_t o = 0;
        {
            const char *const *vv = v;
            for (const char *s = tmpl; *s; s++) {
                const char *e;
                int vi;
                if (*s == '{' && (e = strchr(s, '}')) && (vi = rule__var_from(s + 1, (size_t)(e - s - 1))) >= 0) {
                    const char *val = vv[vi] ? vv[vi] : "";
                    size_t l = strlen(val);
                    if (pass)
                        memcpy(out + o, val, l);
                    o += l;
                    s = e;
                } else {
                    if (pass)
                        out[o] = *s;
                    o++;
                }
            }
        }
        if (pass) {
            out[o] = '\0';
            return out;
        }
        n = o;
    }
    return NULL;
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

/* The dotted code of tc with the sent suffix (placeholder and 7th
 * character) carried over, for suggestions: M48.50XA -> M48.54XA. */
static char *with_suffix(ev_t *e, const rule__code_t *tc, const char *suffix)
{
    char code[16];
    snprintf(code, sizeof code, "%s%s", tc->code, suffix ? suffix : "");
    char d[20];
    claim_code_dotted(code, d, sizeof d);
    return arena_strdup(e->a, d);
}

/* ---------------------------------------------------------------- codes */

static bool all_x(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != 'X')
            return false;
    return true;
}

/* base padded with X to six characters and then each 7th character. */
static char *seven_choices(ev_t *e, const rule__code_t *b, const rule__seven_t *s, char only)
{
    char out[128];
    size_t o = 0;
    out[0] = '\0';
    for (const char *ch = s->chars; *ch; ch++) {
        if (only && *ch != only)
            continue;
        char code[16], d[20];
        snprintf(code, sizeof code, "%s%.*s%c", b->code, 6 - (int)b->len, "XXX", *ch);
        claim_code_dotted(code, d, sizeof d);
        int w = snprintf(out + o, sizeof out - o, o ? ", %s" : "%s", d);
        if (w < 0 || (size_t)w >= sizeof out - o)
            break;
        o += (size_t)w;
    }
    return arena_strdup(e->a, out);
}

/* Decides whether dx i is a valid code, and reports code-invalid,
 * code-not-billable or seventh-character when it is not. */
static void resolve(ev_t *e, int i)
{
    const claim_dx_t *d = &e->c->dx[i];
    dxi_t *x = &e->dx[i];
    const rule__table_t *t = e->t;
    const char *code = d->code;
    size_t n = strlen(code);
    vars_t v = {0};
    v[V_CODE] = x->dotted;
    v[V_FY] = t->fy;
    char cat[8];
    snprintf(cat, sizeof cat, "%.3s", code);
    v[V_CATEGORY] = cat;

    if (rule__map_get(&t->category_map, rule__keyn(code, 3)) < 0) {
        /* Categories outside the code rows whose 7th characters the notes
         * define (M80, M84.3-): only the 7th character is judged. */
        const rule__seven_t *s = rule__table_seven_for(t, code);
        if (!s || s->in_codes || n > 7)
            return;
        x->spine = true;
        v[V_OWNER] = s->dotted;
        v[V_CHARS] = s->list;
        if (n < 7) {
            rule_finding_t *f = add(e, RID_SEVENTH, MK_MISSING, v, i, -1, NULL);
            if (f)
                f->code_invalid = true;
        } else if (!strchr(s->chars, code[6])) {
            char ch[2] = {code[6], 0};
            v[V_CHAR] = ch;
            rule_finding_t *f = add(e, RID_SEVENTH, MK_UNDEFINED, v, i, -1, NULL);
            if (f)
                f->code_invalid = true;
        } else {
            x->valid = true;
        }
        return;
    }
    x->spine = true;
    const rule__code_t *tc = rule__table_find(t, code);
    rule_finding_t *f = NULL;
    if (tc) {
        v[V_DESCRIPTION] = tc->desc;
        if (tc->billable) {
            x->tc = tc;
            x->suffix = "";
            x->valid = true;
            x->region = tc->region;
            return;
        }
        if (tc->leaf && tc->seven >= 0) {
            const rule__seven_t *s = &t->seven[tc->seven];
            v[V_OWNER] = s->dotted;
            v[V_CHARS] = s->list;
            f = add(e, RID_SEVENTH, MK_MISSING, v, i, -1, seven_choices(e, tc, s, 0));
        } else {
            f = add(e, RID_CODE_NOT_BILLABLE, MK_DEFAULT, v, i, -1, tc->children);
        }
        if (f)
            f->code_invalid = true;
        return;
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
            f = add(e, RID_SEVENTH, MK_PLACEHOLDER, v, i, -1,
                    seven_choices(e, b, s, strchr(s->chars, code[6]) ? code[6] : 0));
        } else if (!strchr(s->chars, code[6])) {
            char ch[2] = {code[6], 0};
            v[V_CHAR] = ch;
            f = add(e, RID_SEVENTH, MK_UNDEFINED, v, i, -1, seven_choices(e, b, s, 0));
        } else {
            x->tc = b;
            x->suffix = code + b->len;
            x->valid = true;
            x->region = b->region;
            return;
        }
    } else if (b && b->leaf && s && n < 7) {
        char last = code[n - 1];
        if (strchr(s->chars, last) && all_x(code + b->len, n - 1 - b->len))
            f = add(e, RID_SEVENTH, MK_PLACEHOLDER, v, i, -1, seven_choices(e, b, s, last));
        else
            f = add(e, RID_SEVENTH, MK_MISSING, v, i, -1, seven_choices(e, b, s, 0));
    } else if (b && b->billable && !s && n <= 7 && n - b->len <= 4 &&
               all_x(code + b->len, n - b->len - 1) &&
               (code[n - 1] == 'X' || (code[n - 1] >= 'A' && code[n - 1] <= 'Z'))) {
        /* A complete code plus an extension: M43.04XA, M43.04A. */
        f = add(e, RID_SEVENTH, MK_NOT_APPLICABLE, v, i, -1, b->dotted);
    } else {
        const char *sug = b ? (b->children ? b->children : b->dotted) : NULL;
        f = add(e, RID_CODE_INVALID, MK_DEFAULT, v, i, -1, sug);
    }
    if (f)
        f->code_invalid = true;
}

/* ---------------------------------------------------------------- pairs */

static const rule__note_t *pair_note(const ev_t *e, const dxi_t *a, const claim_dx_t *bd,
                                     const int32_t *notes, int nnotes)
{
    (void)a;
    for (int k = 0; k < nnotes; k++) {
        const rule__note_t *n = &e->t->notes[notes[k]];
        for (int r = 0; r < n->nrefs; r++)
            if (rule__ref_match(&n->refs[r], bd->code))
                return n;
    }
    return NULL;
}

static int region_at(const rule__region_pair_t *rp, const char *code)
{
    size_t n = strlen(code);
    if ((size_t)rp->position > n)
        return -1;
    char ch = code[rp->position - 1];
    int di = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'A' && ch <= 'Z' ? 10 + ch - 'A' : -1;
    return di >= 0 ? rp->digit_region[di] : -1;
}

static void check_pair(ev_t *e, int i, int j)
{
    const claim_dx_t *di = &e->c->dx[i], *dj = &e->c->dx[j];
    dxi_t *xi = &e->dx[i], *xj = &e->dx[j];
    /* A code already reported as invalid takes part in no pair: the coder
     * fixes it first, and its pairs are judged on the corrected claim. */
    if (strcmp(di->code, dj->code) == 0 || (xi->spine && !xi->valid) || (xj->spine && !xj->valid))
        return;
    for (int pass = 0; pass < 2; pass++) {
        bool ex1 = pass == 0;
        const rule__note_t *n = NULL;
        int owner = i, other = j;
        if (xi->valid && xi->tc)
            n = pair_note(e, xi, dj, ex1 ? xi->tc->ex1 : xi->tc->ex2, ex1 ? xi->tc->nex1 : xi->tc->nex2);
        if (!n && xj->valid && xj->tc) {
            n = pair_note(e, xj, di, ex1 ? xj->tc->ex1 : xj->tc->ex2, ex1 ? xj->tc->nex1 : xj->tc->nex2);
            owner = j;
            other = i;
        }
        if (!n)
            continue;
        vars_t v = {0};
        v[V_CODE] = e->dx[owner].dotted;
        v[V_OTHER] = e->dx[other].dotted;
        v[V_OWNER] = n->owner_dotted;
        v[V_NOTE] = n->text;
        rule__msgkey_t mk = MK_DEFAULT;
        if (ex1) {
            const char *co = e->c->dx[owner].code, *ct = e->c->dx[other].code;
            for (int k = 0; k < e->p->nrpairs; k++) {
                const rule__region_pair_t *rp = &e->p->rpairs[k];
                if (!((rule__ref_match(&rp->a, co) && rule__ref_match(&rp->b, ct)) ||
                      (rule__ref_match(&rp->b, co) && rule__ref_match(&rp->a, ct))))
                    continue;
                int ro = region_at(rp, co), rt = region_at(rp, ct);
                bool so = ro >= 0 && e->p->geo.regions[ro].kind == REGION_SPECIFIC;
                bool st = rt >= 0 && e->p->geo.regions[rt].kind == REGION_SPECIFIC;
                if (so && st && ro != rt)
                    return; /* different levels: coded separately, allowed */
                if (so && st) {
                    mk = MK_SAME_REGION;
                    v[V_REGION] = region_label(e, ro);
                } else {
                    if (!e->p->unstated_region_conflicts)
                        return;
                    mk = MK_REGION_UNSTATED;
                    v[V_REGION] = region_label(e, so ? rt : ro);
                }
                break;
            }
        }
        rule_finding_t *f = add(e, ex1 ? RID_EXCLUDES1 : RID_EXCLUDES2, mk, v, owner, -1, NULL);
        add_code(e, f, e->dx[other].dotted);
        return;
    }
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

/* True when line l points at dx i (by sequence or by code). */
static bool line_links(const ev_t *e, const claim_line_t *l, int i)
{
    const claim_dx_t *d = &e->c->dx[i];
    for (int k = 0; k < l->ndx_pointers && k < CLAIM_MAX_DX_POINTERS; k++)
        if (d->sequence && l->dx_pointers[k] == d->sequence)
            return true;
    for (int k = 0; k < l->ndx_codes && k < CLAIM_MAX_DX_POINTERS; k++)
        if (l->dx_codes[k] && d->code[0] && strcmp(l->dx_codes[k], d->code) == 0)
            return true;
    return false;
}

static void site_unspecified(ev_t *e, int i)
{
    const dxi_t *x = &e->dx[i];
    const rule_pack_t *p = e->p;
    int nreg = p->geo.nregions;
    const char *src[32] = {0};
    if (p->site_use_text && x->norm)
        for (int r = 0; r < nreg && r < 32; r++)
            if (x->text_regions & (1u << r))
                src[r] = "diagnosis text";
    if (p->site_use_procedures)
        for (size_t l = 0; l < e->c->nlines; l++) {
            const claim_line_t *ln = &e->c->lines[l];
            const rule__proc_t *pr = rule__proc_find(p, ln);
            if (!pr || pr->region < 0 || pr->region >= 32 || src[pr->region] || !line_links(e, ln, i))
                continue;
            src[pr->region] = arena_printf(e->a, "line %zu, %s", l + 1, pr->label);
        }
    if (p->site_use_codes)
        for (size_t k = 0; k < e->c->ndx; k++) {
            const dxi_t *o = &e->dx[k];
            if ((int)k == i || !o->valid || o->region < 0 || o->region >= 32 || src[o->region] ||
                p->geo.regions[o->region].kind != REGION_SPECIFIC)
                continue;
            src[o->region] = o->dotted;
        }
    char regions[128] = "", sources[192] = "", sugg[128] = "";
    size_t lr = 0, ls = 0, lg = 0;
    for (int r = 0; r < nreg && r < 32; r++) {
        if (!src[r] || p->geo.regions[r].kind != REGION_SPECIFIC || x->tc->sibling[r] < 0)
            continue;
        const rule__code_t *sib = &e->t->codes[x->tc->sibling[r]];
        const char *sc = with_suffix(e, sib, x->suffix);
        int w1 = snprintf(regions + lr, sizeof regions - lr, lr ? " or %s" : "%s", p->geo.regions[r].label);
        int w2 = snprintf(sources + ls, sizeof sources - ls, ls ? "; %s" : "%s", src[r]);
        int w3 = snprintf(sugg + lg, sizeof sugg - lg, lg ? ", %s" : "%s", sc);
        if (w1 < 0 || w2 < 0 || w3 < 0 || (size_t)w1 >= sizeof regions - lr ||
            (size_t)w2 >= sizeof sources - ls || (size_t)w3 >= sizeof sugg - lg)
            break;
        lr += (size_t)w1;
        ls += (size_t)w2;
        lg += (size_t)w3;
    }
    if (!lg)
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
        if (!(j->from & (1u << x->region)) || j->junction >= 32 ||
            !(x->text_regions & (1u << j->junction)) || x->tc->sibling[j->junction] < 0)
            continue;
        const char *sc = with_suffix(e, &e->t->codes[x->tc->sibling[j->junction]], x->suffix);
        vars_t v = {0};
        v[V_CODE] = x->dotted;
        v[V_REGION] = region_label(e, x->region);
        v[V_OTHER_REGION] = region_label(e, j->junction);
        v[V_SUGGESTION] = sc;
        add(e, RID_JUNCTION, MK_DEFAULT, v, i, -1, sc);
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
    if (!said)
        return;
    const char *code = e->c->dx[i].code;
    for (int k = 0; k < p->ncongenital; k++)
        for (int a = 0; a < p->congenital[k].nacquired; a++)
            if (rule__ref_match(&p->congenital[k].acquired[a], code)) {
                vars_t v = {0};
                v[V_CODE] = x->dotted;
                v[V_SUGGESTION] = p->congenital[k].congenital;
                add(e, RID_CONGENITAL, MK_DEFAULT, v, i, -1, p->congenital[k].congenital);
                return;
            }
}

/* ---------------------------------------------------------------- lines */

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
        if (strlen(pr->lo) != n || (l->system != PROCSYS_UNKNOWN && l->system != pr->system))
            continue;
        if (strcmp(code, pr->lo) >= 0 && strcmp(code, pr->hi) <= 0)
            return pr;
    }
    return NULL;
}

static void linkage(ev_t *e, size_t li)
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
    if (np <= 0 && nc <= 0) {
        add(e, RID_LINKAGE, MK_UNLINKED, v, -1, (int)li, NULL);
        return;
    }
    int linked[2 * CLAIM_MAX_DX_POINTERS], nl = 0;
    for (int k = 0; k < np; k++) {
        const claim_dx_t *d = claim_find_dx(e->c, l->dx_pointers[k]);
        if (!d) {
            char ptr[16];
            snprintf(ptr, sizeof ptr, "%d", l->dx_pointers[k]);
            v[V_POINTER] = ptr;
            add(e, RID_LINKAGE, MK_DANGLING, v, -1, (int)li, NULL);
            continue;
        }
        linked[nl++] = (int)(d - e->c->dx);
    }
    for (int k = 0; k < nc; k++) {
        const char *code = l->dx_codes[k];
        int found = -1;
        for (size_t q = 0; code && q < e->c->ndx && found < 0; q++)
            if (strcmp(e->c->dx[q].code, code) == 0)
                found = (int)q;
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
    int pi = -1;
    bool stated = true;
    for (size_t i = 0; i < c->ndx && pi < 0; i++)
        if (c->dx[i].type == DX_TYPE_PRINCIPAL && e->dx[i].judged)
            pi = (int)i;
    if (pi < 0) {
        if (!e->p->drg_first_when_unstated)
            return;
        /* Principal not stated: the lowest sequence (else the first sent),
         * and the message says it is an assumption. */
        stated = false;
        for (size_t i = 0; i < c->ndx; i++) {
            if (c->dx[i].type == DX_TYPE_ADMITTING)
                continue;
            if (pi < 0 || (c->dx[i].sequence > 0 &&
                           (c->dx[pi].sequence <= 0 || c->dx[i].sequence < c->dx[pi].sequence)))
                pi = (int)i;
        }
        if (pi < 0 || !e->dx[pi].judged)
            return;
    }
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
}

/* ---------------------------------------------------------------- main */

static claim_date_t service_date(const claim_t *c)
{
    if (c->service_from.year)
        return c->service_from;
    if (c->service_to.year)
        return c->service_to;
    for (size_t i = 0; i < c->nlines; i++)
        if (c->lines[i].date_from.year)
            return c->lines[i].date_from;
    return (claim_date_t){0};
}

static bool judged_system(claim_codesys_t s)
{
    return s == CODESYS_ICD10CM || s == CODESYS_UNKNOWN || s == CODESYS_ICD10_WHO;
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

void rule_evaluate(const rule_pack_t *pack, const claim_t *claim, arena_t *a, rule_verdict_t *out)
{
    memset(out, 0, sizeof *out);
    out->kind = VERDICT_ACCEPT;
    if (!pack || !claim || !claim->ndx || !pack->ntables)
        return;
    claim_date_t date = service_date(claim);
    const rule__table_t *t = rule__table_for_date(pack, date);
    const rule__table_t *gate = t ? t : &pack->tables[pack->ntables - 1];

    /* The gate: nothing to say about a claim without spine codes. */
    bool any = false;
    for (size_t i = 0; i < claim->ndx && !any; i++)
        any = judged_system(claim->dx[i].system) && covered(gate, claim->dx[i].code);
    if (!any)
        return;

    ev_t e = {pack, claim, t, a, NULL, NULL, 0, 0};
    if (!t) {
        vars_t v = {0};
        char d[16], tabs[128];
        snprintf(d, sizeof d, "%04d-%02d-%02d", date.year, date.month, date.day);
        size_t o = 0;
        tabs[0] = '\0';
        for (size_t i = 0; i < pack->ntables && o < sizeof tabs; i++) {
            const rule__table_t *x = &pack->tables[i];
            int w = snprintf(tabs + o, sizeof tabs - o, "%s%s %04d-%02d-%02d..%04d-%02d-%02d",
                             i ? ", " : "", x->fy, x->from.year, x->from.month, x->from.day,
                             x->to.year, x->to.month, x->to.day);
            if (w < 0)
                break;
            o += (size_t)w;
        }
        v[V_DATE] = d;
        v[V_TABLES] = tabs;
        add(&e, RID_TABLE_COVERAGE, MK_DEFAULT, v, -1, -1, NULL);
    } else {
        e.dx = arena_calloc(a, claim->ndx, sizeof *e.dx);
        for (size_t i = 0; i < claim->ndx; i++) {
            dxi_t *x = &e.dx[i];
            x->region = -1;
            claim_code_dotted(claim->dx[i].code, x->dotted, sizeof x->dotted);
            x->judged = judged_system(claim->dx[i].system) && claim->dx[i].code[0];
            if (!x->judged)
                continue;
            resolve(&e, (int)i);
            if (x->spine && claim->dx[i].system == CODESYS_ICD10_WHO) {
                vars_t v = {0};
                v[V_CODE] = x->dotted;
                add(&e, RID_CODE_SYSTEM, MK_DEFAULT, v, (int)i, -1, NULL);
            }
            if (x->valid && x->tc)
                read_text(&e, (int)i);
        }
        for (size_t i = 0; i < claim->ndx; i++)
            for (size_t j = i + 1; j < claim->ndx; j++)
                if (e.dx[i].judged && e.dx[j].judged && (e.dx[i].tc || e.dx[j].tc))
                    check_pair(&e, (int)i, (int)j);
        for (size_t i = 0; i < claim->ndx; i++) {
            const dxi_t *x = &e.dx[i];
            if (!x->valid || !x->tc)
                continue;
            if (x->region >= 0 && pack->geo.regions[x->region].kind == REGION_UNSPECIFIED)
                site_unspecified(&e, (int)i);
            junction(&e, (int)i);
            congenital(&e, (int)i);
        }
        for (size_t l = 0; l < claim->nlines; l++)
            linkage(&e, l);
        drg(&e);
    }

    out->findings = e.f;
    out->nfindings = e.nf;
    for (size_t i = 0; i < e.nf; i++) {
        if (e.f[i].severity == RULE_SEV_REJECT)
            out->kind = VERDICT_REJECT;
        else if (out->kind != VERDICT_REJECT)
            out->kind = VERDICT_ANNOTATE;
    }
}
