/* tables.c - the code tables: parsing a table file (tools/gen-tables.py
 * writes it; format in docs/rule-pack.md) into sorted arrays and hash maps,
 * and the lookups the rules use. Everything a rule needs per code (notes
 * that apply, 7th-character owner, DRG attributes) is
 * precomputed here at load so that evaluation never walks the hierarchy.
 * A rule__table_t owns all its arrays; rule__table_free() releases them.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"
#include "xmalloc.h"

/* ---------------------------------------------------------------- map */

uint64_t rule__keyn(const char *code, size_t n)
{
    if (n == 0 || n > 7)
        return 0;
    uint64_t k = 0;
    for (size_t i = 0; i < n; i++)
        k |= (uint64_t)(unsigned char)code[i] << (8 * i);
    return k;
}

uint64_t rule__key(const char *code)
{
    return rule__keyn(code, strnlen(code, 8));
}

static size_t slot_of(uint64_t key, size_t cap)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
}

static void map_grow(rule__map_t *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 64;
    uint64_t *ok = m->keys;
    int32_t *ov = m->vals;
    size_t ocap = m->cap;
    m->keys = xcalloc(ncap, sizeof *m->keys);
    m->vals = xcalloc(ncap, sizeof *m->vals);
    m->cap = ncap;
    m->n = 0;
    for (size_t i = 0; i < ocap; i++)
        if (ok[i])
            rule__map_put(m, ok[i], ov[i]);
    xfree(ok);
    xfree(ov);
}

void rule__map_put(rule__map_t *m, uint64_t key, int32_t val)
{
    if (!key)
        return;
    if ((m->n + 1) * 2 > m->cap)
        map_grow(m);
    size_t i = slot_of(key, m->cap);
    while (m->keys[i] && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    if (!m->keys[i])
        m->n++;
    m->keys[i] = key;
    m->vals[i] = val;
}

int32_t rule__map_get(const rule__map_t *m, uint64_t key)
{
    if (!key || !m->cap)
        return -1;
    size_t i = slot_of(key, m->cap);
    while (m->keys[i]) {
        if (m->keys[i] == key)
            return m->vals[i];
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

void rule__map_free(rule__map_t *m)
{
    xfree(m->keys);
    xfree(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- refs */

static bool code_chars(const char *s, size_t n)
{
    if (n < 3 || n > 7 || !isupper((unsigned char)s[0]))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!isupper((unsigned char)s[i]) && !isdigit((unsigned char)s[i]))
            return false;
    return true;
}

/* tok: CODE, LO-HI, either optionally followed by /5=C. */
bool rule__ref_parse(const char *tok, size_t n, rule__ref_t *r)
{
    memset(r, 0, sizeof *r);
    const char *slash = memchr(tok, '/', n);
    if (slash) {
        size_t rest = n - (size_t)(slash - tok);
        if (rest != 4 || slash[1] != '5' || slash[2] != '=' || !isalnum((unsigned char)slash[3]))
            return false;
        r->fifth = (char)toupper((unsigned char)slash[3]);
        n = (size_t)(slash - tok);
    }
    const char *dash = memchr(tok, '-', n);
    size_t lolen = dash ? (size_t)(dash - tok) : n;
    const char *hi = dash ? dash + 1 : tok;
    size_t hilen = dash ? n - lolen - 1 : n;
    if (!code_chars(tok, lolen) || !code_chars(hi, hilen))
        return false;
    memcpy(r->lo, tok, lolen);
    memcpy(r->hi, hi, hilen);
    r->lolen = (uint8_t)lolen;
    r->hilen = (uint8_t)hilen;
    return memcmp(r->lo, r->hi, lolen < hilen ? lolen : hilen) <= 0;
}

bool rule__ref_match(const rule__ref_t *r, const char *code)
{
    size_t n = strnlen(code, 16);
    if (n < r->lolen || n < 3)
        return false;
    if (memcmp(code, r->lo, r->lolen) < 0)
        return false;
    /* Compare the code cut to hi's length: "M43.4" <= "M43.5X9" by its
     * first characters, and anything starting with hi is inside. */
    size_t m = n < r->hilen ? n : r->hilen;
    int c = memcmp(code, r->hi, m);
    if (c > 0)
        return false;
    if (r->fifth && (n < 5 || code[4] != r->fifth))
        return false;
    return true;
}

/* ---------------------------------------------------------------- parse */

typedef struct {
    const char *name;
    const char *p, *end;
    int line;
    err_detail_t *d;
} reader_t;

static err_t bad(reader_t *r, const char *fmt, const char *arg)
{
    err_t e = err_set(r->d, ERR_BAD_TABLE, 0, fmt, arg ? arg : "");
    if (r->d) {
        r->d->segment = r->line;
        snprintf(r->d->where, sizeof r->d->where, "%.48s:%d", r->name, r->line);
    }
    return e;
}

#define MAXCOLS 6
/* Splits the next line into columns (pointers into a copy). Returns the
 * number of columns, 0 at the end. */
static int next_line(reader_t *r, char *buf, size_t cap, char **cols, bool *toolong)
{
    *toolong = false;
    if (r->p >= r->end)
        return 0;
    const char *nl = memchr(r->p, '\n', (size_t)(r->end - r->p));
    const char *e = nl ? nl : r->end;
    size_t n = (size_t)(e - r->p);
    r->line++;
    if (n >= cap) {
        *toolong = true;
        r->p = nl ? nl + 1 : r->end;
        return -1;
    }
    memcpy(buf, r->p, n);
    buf[n] = '\0';
    if (n && buf[n - 1] == '\r')
        buf[--n] = '\0';
    r->p = nl ? nl + 1 : r->end;
    int nc = 0;
    char *s = buf;
    cols[nc++] = s;
    for (; *s; s++) {
        if (*s == '\t') {
            *s = '\0';
            if (nc == MAXCOLS)
                return MAXCOLS + 1;
            cols[nc++] = s + 1;
        }
    }
    return nc;
}

static uint64_t fnv1a64(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static bool parse_date(const char *s, claim_date_t *d)
{
    return strlen(s) == 10 && claim_date_parse(s, 10, d) && d->day != 0;
}

static int note_type_from(const char *s)
{
    static const char *const names[] = {"includes", "inclusionTerm", "excludes1", "excludes2",
                                        "codeFirst", "useAdditionalCode", "codeAlso",
                                        "sevenChrNote", "sevenChrDef", "notes"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0)
            return (int)i;
    return -1;
}

static int cmp_code(const void *a, const void *b)
{
    return strcmp(((const rule__code_t *)a)->code, ((const rule__code_t *)b)->code);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void dotted(const char *code, char *out, size_t cap)
{
    claim_code_dotted(code, out, cap);
}

/* Parses the owner column: a code or a section "M50-M54". */
static bool parse_owner(const char *s, rule__note_t *n)
{
    size_t len = strlen(s);
    if (!rule__ref_parse(s, len, &n->owner) || n->owner.fifth)
        return false;
    if (strchr(s, '-'))
        snprintf(n->owner_dotted, sizeof n->owner_dotted, "%s", s);
    else
        dotted(s, n->owner_dotted, sizeof n->owner_dotted);
    return true;
}

static bool parse_refs(const char *s, rule__note_t *n)
{
    n->nrefs = 0;
    n->refs = NULL;
    if (!*s)
        return true;
    int cap = 1;
    for (const char *q = s; *q; q++)
        cap += *q == ' ';
    if (cap > 64)
        return false;
    n->refs = xcalloc((size_t)cap, sizeof *n->refs);
    const char *q = s;
    while (*q) {
        const char *sp = strchr(q, ' ');
        size_t len = sp ? (size_t)(sp - q) : strlen(q);
        if (!rule__ref_parse(q, len, &n->refs[n->nrefs]))
            return false;
        n->nrefs++;
        if (!sp)
            break;
        q = sp + 1;
    }
    return true;
}

typedef struct {
    char code[8];
    char *list;
} excl_row_t;

static void free_note(rule__note_t *n)
{
    xfree(n->text);
    xfree(n->refs);
}

static bool owner_applies(const rule__note_t *n, const char *code)
{
    return rule__ref_match(&n->owner, code);
}

static err_t table_parse(const char *name, const char *text, size_t len, rule__table_t *t,
                         err_detail_t *d);

/* Parses into t; on failure whatever was built so far is freed and t is
 * left empty, so callers never clean up after an error. */
err_t rule__table_parse(const char *name, const char *text, size_t len, rule__table_t *t,
                        err_detail_t *d)
{
    err_t rc = table_parse(name, text, len, t, d);
    if (rc != ERR_OK)
        rule__table_free(t); /* it also clears t */
    return rc;
}

static err_t table_parse(const char *name, const char *text, size_t len, rule__table_t *t,
                         err_detail_t *d)
{
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    reader_t r = {name, text, text + len, 0, d};
    char buf[4096];
    char *cols[MAXCOLS + 1];
    bool toolong;
    if (memchr(text, '\0', len))
        return bad(&r, "NUL byte in table file%s", NULL);

    /* Header: "#key<TAB>value" lines; the body's checksum covers every byte
     * after them, so a truncated or hand-edited file is refused. */
    int version = 0, body_lines = -1;
    bool have_sum = false, have_from = false, have_to = false;
    uint64_t sum = 0;
    const char *body = NULL;
    for (;;) {
        const char *line_start = r.p;
        if (r.p >= r.end || *r.p != '#') {
            body = line_start;
            break;
        }
        int nc = next_line(&r, buf, sizeof buf, cols, &toolong);
        if (nc < 0 || toolong)
            return bad(&r, "header line too long%s", NULL);
        if (nc != 2)
            return bad(&r, "header line needs '#key<TAB>value'%s", NULL);
        const char *k = cols[0] + 1, *v = cols[1];
        if (strcmp(k, "spinegate-tables") == 0) {
            version = atoi(v);
        } else if (strcmp(k, "fiscal_year") == 0) {
            if (strlen(v) >= sizeof t->fy || !*v)
                return bad(&r, "bad fiscal_year '%.32s'", v);
            snprintf(t->fy, sizeof t->fy, "%s", v);
        } else if (strcmp(k, "valid_from") == 0) {
            if (!parse_date(v, &t->from))
                return bad(&r, "bad valid_from date '%.32s'", v);
            have_from = true;
        } else if (strcmp(k, "valid_to") == 0) {
            if (!parse_date(v, &t->to))
                return bad(&r, "bad valid_to date '%.32s'", v);
            have_to = true;
        } else if (strcmp(k, "icd10cm") == 0) {
            xfree(t->icd_source);
            t->icd_source = xstrdup(v);
        } else if (strcmp(k, "msdrg") == 0) {
            xfree(t->drg_source);
            t->drg_source = xstrdup(v);
        } else if (strcmp(k, "msdrg_version") == 0 || strcmp(k, "msdrg_version_for_year") == 0) {
            char *dst = k[13] ? t->drg_for_year : t->drg_version;
            if (!*v || strlen(v) >= sizeof t->drg_version || strspn(v, "0123456789") != strlen(v))
                return bad(&r, "bad MS-DRG version '%.32s'", v);
            memcpy(dst, v, strlen(v) + 1);
        } else if (strcmp(k, "body_lines") == 0) {
            body_lines = atoi(v);
        } else if (strcmp(k, "body_fnv1a64") == 0) {
            char *e;
            sum = strtoull(v, &e, 16);
            if (*e || strlen(v) != 16)
                return bad(&r, "bad body_fnv1a64 '%.32s'", v);
            have_sum = true;
        }
        /* other keys are informational */
    }
    if (version != 1)
        return bad(&r, "not a spinegate table file (version 1 header missing)%s", NULL);
    if (!t->fy[0] || !have_from || !have_to || !have_sum || body_lines < 0)
        return bad(&r, "header lacks fiscal_year, valid_from, valid_to, body_lines or body_fnv1a64%s",
                   NULL);
    if (fnv1a64(body, (size_t)(r.end - body)) != sum)
        return bad(&r, "body checksum does not match the header: the file was changed or "
                       "truncated; regenerate it with tools/gen-tables.py%s", NULL);

    /* Count rows to size arrays. */
    size_t ncodes = 0, nnotes = 0, nexrows = 0, nprows = 0, nlines = 0;
    for (const char *q = body; q < r.end; q++) {
        if (q == body || q[-1] == '\n') {
            nlines++;
            if (*q == 'C') ncodes++;
            else if (*q == 'N') nnotes++;
            else if (*q == 'X') nexrows++;
            else if (*q == 'P') nprows++;
        }
    }
    if (nlines != (size_t)body_lines)
        return bad(&r, "body has a different number of lines than the header says%s", NULL);
    t->codes = xcalloc(ncodes ? ncodes : 1, sizeof *t->codes);
    t->notes = xcalloc(nnotes ? nnotes : 1, sizeof *t->notes);
    excl_row_t *ex = xcalloc(nexrows ? nexrows : 1, sizeof *ex);
    size_t nex = 0;
    err_t rc = ERR_OK;
    t->pdx = xcalloc(nprows + 1, sizeof *t->pdx);

    for (;;) {
        int nc = next_line(&r, buf, sizeof buf, cols, &toolong);
        if (nc == 0)
            break;
        if (nc < 0) {
            rc = bad(&r, "line too long%s", NULL);
            goto out;
        }
        const char *kind = cols[0];
        if (strcmp(kind, "C") == 0) {
            if (nc != 4 || !code_chars(cols[1], strlen(cols[1])) ||
                (strcmp(cols[2], "0") && strcmp(cols[2], "1"))) {
                rc = bad(&r, "code row needs C<TAB>code<TAB>0|1<TAB>description%s", NULL);
                goto out;
            }
            rule__code_t *c = &t->codes[t->ncodes++];
            snprintf(c->code, sizeof c->code, "%s", cols[1]);
            dotted(c->code, c->dotted, sizeof c->dotted);
            c->len = (uint8_t)strlen(c->code);
            c->billable = cols[2][0] == '1';
            c->desc = xstrdup(cols[3]);
            c->seven = -1;
            c->region = -1;
        } else if (strcmp(kind, "N") == 0) {
            rule__note_t *n = &t->notes[t->nnotes];
            int ty = nc == 5 ? note_type_from(cols[2]) : -1;
            if (ty < 0) {
                rc = bad(&r, "note row needs N<TAB>owner<TAB>type<TAB>refs<TAB>text "
                             "with a known type%s", NULL);
                goto out;
            }
            if (!parse_owner(cols[1], n)) {
                rc = bad(&r, "bad note owner '%.32s'", cols[1]);
                goto out;
            }
            n->type = (rule__note_type_t)ty;
            n->text = xstrdup(cols[4]);
            t->nnotes++;
            if (!parse_refs(cols[3], n)) {
                rc = bad(&r, "bad code reference in '%.40s'", cols[3]);
                goto out;
            }
        } else if (strcmp(kind, "P") == 0) {
            uint64_t k = nc == 2 ? rule__key(cols[1]) : 0;
            if (!k || !code_chars(cols[1], strlen(cols[1]))) {
                rc = bad(&r, "PDX row needs P<TAB>code%s", NULL);
                goto out;
            }
            if (rule__map_get(&t->pdx_map, k) < 0) {
                rule__map_put(&t->pdx_map, k, (int32_t)t->npdx);
                t->npdx++;
            }
        } else if (strcmp(kind, "M") == 0) {
            uint64_t k = nc == 3 ? rule__key(cols[1]) : 0;
            if (!k || !code_chars(cols[1], strlen(cols[1])) ||
                (strcmp(cols[2], "0") && strcmp(cols[2], "1"))) {
                rc = bad(&r, "MCC row needs M<TAB>code<TAB>0|1%s", NULL);
                goto out;
            }
            rule__map_put(&t->mcc_map, k, cols[2][0] == '1');
            t->nmcc++;
        } else if (strcmp(kind, "X") == 0) {
            if (nc != 3 || !code_chars(cols[1], strlen(cols[1])) || !*cols[2]) {
                rc = bad(&r, "exclusion row needs X<TAB>principal<TAB>mcc,mcc,...%s", NULL);
                goto out;
            }
            snprintf(ex[nex].code, sizeof ex[nex].code, "%s", cols[1]);
            ex[nex].list = xstrdup(cols[2]);
            nex++;
        } else {
            rc = bad(&r, "unknown row kind '%.8s' (expected C, N, P, M or X)", kind);
            goto out;
        }
    }
    if (!t->ncodes) {
        rc = bad(&r, "table has no codes%s", NULL);
        goto out;
    }

    /* Codes: sort, reject duplicates, and find parents and extents. A code's
     * descendants are exactly the codes after it that start with it. */
    qsort(t->codes, t->ncodes, sizeof *t->codes, cmp_code);
    for (size_t i = 0; i < t->ncodes; i++) {
        rule__code_t *c = &t->codes[i];
        if (i && strcmp(t->codes[i - 1].code, c->code) == 0) {
            r.line = 0;
            rc = bad(&r, "duplicate code %s", c->code);
            goto out;
        }
        rule__map_put(&t->code_map, rule__key(c->code), (int32_t)i);
        if (c->len == 3)
            rule__map_put(&t->category_map, rule__key(c->code), (int32_t)i);
        c->parent = -1;
        for (size_t n = c->len - 1; n >= 3; n--) {
            int32_t p = rule__map_get(&t->code_map, rule__keyn(c->code, n));
            if (p >= 0) {
                c->parent = p;
                break;
            }
        }
        size_t j = i + 1;
        while (j < t->ncodes && strncmp(t->codes[j].code, c->code, c->len) == 0)
            j++;
        c->end = (int32_t)j;
        c->leaf = j == i + 1;
    }

    /* 7th-character owners from sevenChrDef notes. */
    size_t nseven = 0;
    for (size_t i = 0; i < t->nnotes; i++)
        nseven += t->notes[i].type == NOTE_SEVEN_DEF;
    t->seven = xcalloc(nseven ? nseven : 1, sizeof *t->seven);
    for (size_t i = 0; i < t->nnotes; i++) {
        const rule__note_t *n = &t->notes[i];
        if (n->type != NOTE_SEVEN_DEF)
            continue;
        if (strlen(n->text) < 3 || n->text[1] != '=' || !isupper((unsigned char)n->text[0]) ||
            n->owner.lolen != n->owner.hilen || memcmp(n->owner.lo, n->owner.hi, n->owner.lolen)) {
            r.line = 0;
            rc = bad(&r, "bad sevenChrDef note '%.40s'", n->text);
            goto out;
        }
        rule__seven_t *s = NULL;
        for (size_t k = 0; k < t->nseven; k++)
            if (strcmp(t->seven[k].prefix, n->owner.lo) == 0)
                s = &t->seven[k];
        if (!s) {
            s = &t->seven[t->nseven++];
            memcpy(s->prefix, n->owner.lo, n->owner.lolen);
            snprintf(s->dotted, sizeof s->dotted, "%s", n->owner_dotted);
            s->in_codes = rule__map_get(&t->category_map, rule__keyn(s->prefix, 3)) >= 0;
        }
        size_t cl = strlen(s->chars);
        if (cl + 1 >= sizeof s->chars || strchr(s->chars, n->text[0])) {
            r.line = 0;
            rc = bad(&r, "too many or repeated 7th characters under %s", s->dotted);
            goto out;
        }
        s->chars[cl] = n->text[0];
    }
    for (size_t k = 0; k < t->nseven; k++) {
        rule__seven_t *s = &t->seven[k];
        rule__map_put(&t->seven_map, rule__key(s->prefix), (int32_t)k);
        char lb[64];
        size_t ll = 0;
        for (size_t q = 0; s->chars[q]; q++)
            ll += (size_t)snprintf(lb + ll, sizeof lb - ll, q ? ", %c" : "%c", s->chars[q]);
        s->list = xstrdup(lb);
    }
    for (size_t i = 0; i < t->ncodes; i++) {
        const rule__seven_t *s = rule__table_seven_for(t, t->codes[i].code);
        t->codes[i].seven = s ? (int16_t)(s - t->seven) : -1;
    }

    /* Notes that apply to each code: the code's own, its ancestors' and its
     * section's. Counted first, then filled. */
    for (size_t i = 0; i < t->ncodes; i++) {
        rule__code_t *c = &t->codes[i];
        for (int pass = 0; pass < 2; pass++) {
            int n1 = 0, n2 = 0;
            for (size_t k = 0; k < t->nnotes; k++) {
                const rule__note_t *n = &t->notes[k];
                if ((n->type != NOTE_EXCLUDES1 && n->type != NOTE_EXCLUDES2) || !n->nrefs ||
                    !owner_applies(n, c->code))
                    continue;
                if (n->type == NOTE_EXCLUDES1) {
                    if (pass)
                        c->ex1[n1] = (int32_t)k;
                    n1++;
                } else {
                    if (pass)
                        c->ex2[n2] = (int32_t)k;
                    n2++;
                }
            }
            if (!pass) {
                c->ex1 = n1 ? xcalloc((size_t)n1, sizeof *c->ex1) : NULL;
                c->ex2 = n2 ? xcalloc((size_t)n2, sizeof *c->ex2) : NULL;
                c->nex1 = n1;
                c->nex2 = n2;
            }
        }
    }

    /* PDX -> excluded MCCs, sorted per principal for binary search. */
    size_t total = 0;
    for (size_t i = 0; i < nex; i++) {
        total++;
        for (const char *q = ex[i].list; *q; q++)
            total += *q == ',';
    }
    t->excl = xcalloc(total ? total : 1, sizeof *t->excl);
    for (size_t i = 0; i < nex; i++) {
        int32_t pi = rule__map_get(&t->pdx_map, rule__key(ex[i].code));
        if (pi < 0) {
            r.line = 0;
            rc = bad(&r, "exclusions given for %s, which is not a DRG 551/552 principal", ex[i].code);
            goto out;
        }
        size_t off = t->nexcl;
        for (char *q = ex[i].list; *q;) {
            char *comma = strchr(q, ',');
            size_t l = comma ? (size_t)(comma - q) : strlen(q);
            uint64_t k = code_chars(q, l) ? rule__keyn(q, l) : 0;
            if (!k) {
                r.line = 0;
                rc = bad(&r, "bad MCC in the exclusions of %s", ex[i].code);
                goto out;
            }
            t->excl[t->nexcl++] = k;
            if (!comma)
                break;
            q = comma + 1;
        }
        qsort(t->excl + off, t->nexcl - off, sizeof *t->excl, cmp_u64);
        t->pdx[pi].off = (int32_t)off;
        t->pdx[pi].n = (int32_t)(t->nexcl - off);
    }
out:
    for (size_t i = 0; i < nex; i++)
        xfree(ex[i].list);
    xfree(ex);
    if (rc != ERR_OK)
        rule__table_free(t);
    return rc;
}

void rule__table_free(rule__table_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->ncodes; i++) {
        rule__code_t *c = &t->codes[i];
        xfree(c->desc);
        xfree(c->ex1);
        xfree(c->ex2);
    }
    xfree(t->codes);
    for (size_t i = 0; i < t->nnotes; i++)
        free_note(&t->notes[i]);
    xfree(t->notes);
    for (size_t i = 0; i < t->nseven; i++)
        xfree(t->seven[i].list);
    xfree(t->seven);
    xfree(t->excl);
    xfree(t->pdx);
    rule__map_free(&t->pdx_map);
    xfree(t->icd_source);
    xfree(t->drg_source);
    rule__map_free(&t->code_map);
    rule__map_free(&t->category_map);
    rule__map_free(&t->mcc_map);
    rule__map_free(&t->seven_map);
    memset(t, 0, sizeof *t);
}

const rule__code_t *rule__table_find(const rule__table_t *t, const char *code)
{
    int32_t i = rule__map_get(&t->code_map, rule__key(code));
    return i >= 0 ? &t->codes[i] : NULL;
}

const rule__seven_t *rule__table_seven_for(const rule__table_t *t, const char *code)
{
    /* Longest owner prefix first: at most five hash probes. */
    size_t n = strnlen(code, 8);
    for (size_t l = n > 7 ? 7 : n; l >= 3; l--) {
        int32_t k = rule__map_get(&t->seven_map, rule__keyn(code, l));
        if (k >= 0)
            return &t->seven[k];
    }
    return NULL;
}
