/* hl7_claim.c - HL7 v2 DFT/BAR/ADT -> claim model (what is read from which
 * field, per version, is in hl7_claim.h). Reads the message through the
 * public hl7.h accessors only; every string it keeps is unescaped into the
 * caller's arena, so the claim outlives the message.
 */
#include "hl7_claim.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An index of the diagnoses read so far, by code, so that an FT1-19 code
 * finds its DG1 (or the FT1 that brought it first) in constant time: a
 * hostile message with 100,000 FT1s must not cost a quadratic scan. Keys
 * are tagged: '=' + normalised code, or '~' + the code as sent when it does
 * not normalise (a malformed code is matched only by its exact form). */
typedef struct {
    const char *key; /* NULL: free slot */
    size_t dx;       /* index into claim->dx */
} dx_slot_t;

typedef struct {
    dx_slot_t *slots;
    size_t cap, n; /* cap is 0 or a power of two, n <= cap / 2 */
    uint64_t seed; /* see index_seed() */
} dx_index_t;

typedef struct {
    const hl7_msg_t *m;
    arena_t *a;
    err_detail_t *d;
    dx_index_t idx;
} ctx_t;

/* The keys are the sender's: with a fixed hash, codes could be chosen to
 * collide and make every lookup a long probe. The seed comes from where
 * the message's arena and this call's stack sit, which ASLR makes unknown
 * to a sender (no global state, no system call); the table's layout may
 * differ from run to run, what it answers never does. */
static uint64_t index_seed(const arena_t *a, const void *stack)
{
    return (uint64_t)(uintptr_t)a * 0x9E3779B97F4A7C15u ^ (uint64_t)(uintptr_t)stack;
}

/* FNV-1a from the seed, then the MurmurHash3 finaliser, so that the bits
 * the table masks depend on the whole state, not on the low bits alone. */
static uint64_t key_hash(uint64_t seed, const char *k)
{
    uint64_t h = 1469598103934665603u ^ seed;
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211u;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdu;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53u;
    h ^= h >> 33;
    return h;
}

static dx_slot_t *index_slot(const dx_index_t *x, dx_slot_t *slots, size_t cap, const char *key)
{
    size_t i = (size_t)key_hash(x->seed, key) & (cap - 1);
    while (slots[i].key && strcmp(slots[i].key, key) != 0)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

/* The diagnosis index stored under key, or -1. */
static long index_get(const dx_index_t *x, const char *key)
{
    if (!x->cap)
        return -1;
    const dx_slot_t *s = index_slot(x, x->slots, x->cap, key);
    return s->key ? (long)s->dx : -1;
}

/* Stores dx under key unless the key is there already; the table grows in
 * the arena (the old one is abandoned there, like the claim's arrays). */
static void index_put(ctx_t *c, const char *key, size_t dx)
{
    dx_index_t *x = &c->idx;
    if ((x->n + 1) * 2 > x->cap) {
        size_t ncap = x->cap ? x->cap * 2 : 64;
        dx_slot_t *ns = arena_calloc(c->a, ncap, sizeof *ns);
        for (size_t i = 0; i < x->cap; i++)
            if (x->slots[i].key)
                *index_slot(x, ns, ncap, x->slots[i].key) = x->slots[i];
        x->slots = ns;
        x->cap = ncap;
    }
    dx_slot_t *s = index_slot(x, x->slots, x->cap, key);
    if (s->key)
        return;
    s->key = key;
    s->dx = dx;
    x->n++;
}

/* The locations and index keys below are built for every code of every
 * message: plain concatenation, not printf, which cost more than the rest
 * of the claim reading (issue 15). loc() writes PRE, occ, MID[, r, ")"]. */
static char *put_int(char *p, int v)
{
    char tmp[12];
    int n = 0;
    if (v < 0)
        *p++ = '-';
    unsigned u = v < 0 ? 0u - (unsigned)v : (unsigned)v;
    do
        tmp[n++] = (char)('0' + u % 10);
    while ((u /= 10) && n < (int)sizeof tmp);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* buf holds at least 40 bytes; pre and mid are short literals. r < 0: none. */
static const char *loc(char *buf, const char *pre, int occ, const char *mid, int r)
{
    char *p = buf;
    size_t n = strlen(pre);
    memcpy(p, pre, n);
    p = put_int(p + n, occ);
    n = strlen(mid);
    memcpy(p, mid, n);
    p += n;
    if (r >= 0) {
        p = put_int(p, r);
        *p++ = ')';
    }
    *p = '\0';
    return buf;
}

/* prefix followed by s, in the arena. */
static const char *key_of(arena_t *a, char prefix, const char *s)
{
    size_t n = strlen(s);
    char *k = arena_alloc(a, n + 2);
    k[0] = prefix;
    memcpy(k + 1, s, n + 1);
    return k;
}

/* The index key of a diagnosis: its normalised code, else its code as sent. */
static const char *dx_key(ctx_t *c, const claim_dx_t *dx)
{
    if (dx->code[0])
        return key_of(c->a, '=', dx->code);
    return dx->code_sent ? key_of(c->a, '~', dx->code_sent) : NULL;
}

/* Decodes a value into the arena; NULL when empty or the explicit null "".
 * A code (strict) with a malformed escape is an error; a text is kept raw. */
static err_t str_of(ctx_t *c, slice_t v, bool strict, const char *where, const char **out)
{
    *out = NULL;
    if (hl7_value_kind(v) != HL7_PRESENT)
        return ERR_OK;
    char *s;
    err_detail_t tmp;
    err_clear(&tmp); /* hl7_unescape_arena() sets no segment or field */
    err_t rc = hl7_unescape_arena(c->m, v, c->a, &s, &tmp);
    if (rc != ERR_OK) {
        if (!strict) {
            *out = arena_slicedup(c->a, v);
            return ERR_OK;
        }
        if (c->d) {
            *c->d = tmp;
            snprintf(c->d->where, sizeof c->d->where, "%s", where);
            snprintf(c->d->msg, sizeof c->d->msg, "malformed escape sequence in %s", where);
        }
        return rc;
    }
    *out = s[0] ? s : NULL;
    return ERR_OK;
}

/* Dates: the first subcomponent of a TS/DTM/DT (the precision may follow). */
static claim_date_t date_of(slice_t v, char subsep)
{
    claim_date_t dt = {0, 0, 0};
    v = hl7_piece(v, subsep, 1);
    if (hl7_value_kind(v) == HL7_PRESENT)
        (void)claim_date_parse(v.ptr, v.len, &dt);
    return dt;
}

static int int_of(slice_t v)
{
    int n = 0;
    size_t i = 0;
    while (i < v.len && v.ptr[i] == ' ')
        i++;
    if (i == v.len)
        return 0;
    for (; i < v.len && v.ptr[i] >= '0' && v.ptr[i] <= '9'; i++) {
        n = n * 10 + (v.ptr[i] - '0');
        if (n > 1000000)
            return 0;
    }
    return n;
}

static bool date_lt(claim_date_t a, claim_date_t b)
{
    if (a.year != b.year)
        return a.year < b.year;
    if (a.month != b.month)
        return a.month < b.month;
    return a.day < b.day;
}

static bool is_supported(slice_t type, slice_t trig, bool has_dg1)
{
    if (slice_eq(type, "DFT"))
        return slice_eq(trig, "P03") || slice_eq(trig, "P11");
    if (slice_eq(type, "BAR"))
        return slice_eq(trig, "P01") || slice_eq(trig, "P05") || slice_eq(trig, "P12");
    if (slice_eq(type, "ADT"))
        return has_dg1;
    return false;
}

/* PV1-2 patient class (HL7 table 0004; IS to v2.6, CWE from v2.7). */
static claim_setting_t class_setting(slice_t v)
{
    if (v.len != 1)
        return CLAIM_SETTING_UNKNOWN;
    switch (v.ptr[0]) {
    case 'I': case 'i':
        return CLAIM_SETTING_INPATIENT;
    case 'O': case 'o': /* outpatient */
    case 'E': case 'e': /* emergency */
    case 'R': case 'r': /* recurring patient */
    case 'P': case 'p': /* preadmit */
    case 'B': case 'b': /* obstetrics */
        return CLAIM_SETTING_OUTPATIENT;
    default:
        return CLAIM_SETTING_UNKNOWN;
    }
}

static claim_poa_t poa_of(slice_t v)
{
    if (v.len != 1)
        return POA_ABSENT;
    switch (v.ptr[0]) {
    case 'Y': case 'y': return POA_Y;
    case 'N': case 'n': return POA_N;
    case 'U': case 'u': return POA_U;
    case 'W': case 'w': return POA_W;
    case '1': case 'E': case 'e': return POA_EXEMPT;
    default: return POA_ABSENT;
    }
}

/* One coded triplet of a CE/CWE: identifier, text, name of coding system. */
typedef struct {
    slice_t code, text, sys;
} triplet_t;

/* Picks the triplet of one CE/CWE repetition that carries the diagnosis:
 * the primary (components 1-3), the alternate (4-6) or, from v2.7, the
 * second alternate (10-12). The first ICD-10-CM triplet with a code wins;
 * when none is ICD-10-CM, the first with a code (the primary when it has
 * one). An empty primary system takes primary_sys (DG1-2, the coding
 * method) before it is judged. The code is empty when no triplet has one. */
static triplet_t pick_triplet(slice_t rep, char compsep, slice_t primary_sys)
{
    static const int start[] = {1, 4, 10};
    triplet_t t[3], none = {SLICE_NULL, SLICE_NULL, SLICE_NULL};
    /* Components 1-12, in one pass (as hl7_piece gives each of them). */
    slice_t comp[12];
    int ncomp = 0;
    const char *end = rep.ptr ? rep.ptr + rep.len : NULL;
    for (const char *p = rep.ptr; p && ncomp < 12;) {
        const char *q = memchr(p, compsep, (size_t)(end - p));
        comp[ncomp++] = slice_make(p, (size_t)((q ? q : end) - p));
        p = q ? q + 1 : NULL;
    }
    while (ncomp < 12)
        comp[ncomp++] = slice_make(end, 0);
    int first_coded = -1;
    for (int k = 0; k < 3; k++) {
        t[k].code = comp[start[k] - 1];
        t[k].text = comp[start[k]];
        t[k].sys = comp[start[k] + 1];
        if (k == 0 && hl7_value_kind(t[k].sys) != HL7_PRESENT)
            t[k].sys = primary_sys;
        if (hl7_value_kind(t[k].code) != HL7_PRESENT)
            continue;
        if (first_coded < 0)
            first_coded = k;
        if (hl7_value_kind(t[k].sys) == HL7_PRESENT &&
            claim_codesys_from(t[k].sys.ptr, t[k].sys.len) == CODESYS_ICD10CM)
            return t[k];
    }
    return first_coded >= 0 ? t[first_coded] : none;
}

static err_t read_dg1(ctx_t *c, claim_t *cl, size_t i, int occ)
{
    const hl7_msg_t *m = c->m;
    const hl7_delims_t *dl = hl7_msg_delims(m);
    char where[40];
    loc(where, "DG1(", occ, ")-3", -1);
    /* DG1-3 does not repeat: its first repetition is the value. */
    triplet_t tr = pick_triplet(hl7_value(m, i, 3, 1, 0, 0), dl->component,
                                hl7_value(m, i, 2, 1, 1, 0) /* DG1-2 coding method */);
    const char *code_s, *sys_s, *text;
    err_t rc = str_of(c, tr.code, true, where, &code_s);
    if (rc != ERR_OK)
        return rc;
    if (!code_s)
        return ERR_OK; /* a DG1 without a code carries nothing to check */
    rc = str_of(c, tr.sys, true, where, &sys_s);
    if (rc != ERR_OK)
        return rc;
    slice_t t = hl7_value(m, i, 4, 0, 0, 0);
    if (hl7_value_kind(t) != HL7_PRESENT)
        t = tr.text;
    (void)str_of(c, t, false, where, &text);

    claim_dx_t *dx = claim_add_dx(cl, c->a);
    dx->sequence = int_of(hl7_value(m, i, 1, 0, 0, 0));
    dx->code_sent = code_s;
    (void)claim_code_normalise(code_s, strlen(code_s), dx->code, sizeof dx->code);
    dx->system_sent = sys_s;
    dx->system = sys_s ? claim_codesys_from(sys_s, strlen(sys_s)) : CODESYS_UNKNOWN;
    dx->text = text;
    dx->location = arena_strdup(c->a, where);
    slice_t prio = hl7_value(m, i, 15, 0, 0, 0);
    slice_t type = hl7_value(m, i, 6, 1, 1, 0);
    if (int_of(prio) == 1)
        dx->type = DX_TYPE_PRINCIPAL;
    else if (slice_eq(type, "A"))
        dx->type = DX_TYPE_ADMITTING;
    else if (hl7_value_kind(type) == HL7_PRESENT || int_of(prio) > 1)
        dx->type = DX_TYPE_SECONDARY;
    dx->poa = poa_of(hl7_value(m, i, 26, 1, 1, 0));
    /* Index it so FT1-19 finds it; of several DG1s with one code, the
     * first with a sequence is the one lines point to. */
    const char *key = dx_key(c, dx);
    long have = key ? index_get(&c->idx, key) : -1;
    if (key && have < 0)
        index_put(c, key, cl->ndx - 1);
    else if (have >= 0 && cl->dx[have].sequence <= 0 && dx->sequence > 0)
        index_slot(&c->idx, c->idx.slots, c->idx.cap, key)->dx = cl->ndx - 1;
    return ERR_OK;
}

/* Adds a code (already normalised) to a line, with the pointer to the DG1
 * carrying it: seq when the caller knows it (a P11 group's own DG1), else
 * the first DG1 with that code. */
static void line_add_dx(ctx_t *c, const claim_t *cl, claim_line_t *l, const char *norm, int seq)
{
    for (int k = 0; k < l->ndx_codes; k++)
        if (strcmp(l->dx_codes[k], norm) == 0)
            return;
    if (l->ndx_codes < CLAIM_MAX_DX_POINTERS)
        l->dx_codes[l->ndx_codes++] = arena_strdup(c->a, norm);
    if (seq <= 0) {
        char key[20];
        size_t n = strlen(norm); /* normalised: under 16 */
        if (n > sizeof key - 2)
            n = sizeof key - 2;
        key[0] = '=';
        memcpy(key + 1, norm, n);
        key[n + 1] = '\0';
        long k = index_get(&c->idx, key);
        if (k >= 0)
            seq = cl->dx[k].sequence;
    }
    if (seq <= 0)
        return;
    for (int p = 0; p < l->ndx_pointers; p++)
        if (l->dx_pointers[p] == seq)
            return;
    if (l->ndx_pointers < CLAIM_MAX_DX_POINTERS)
        l->dx_pointers[l->ndx_pointers++] = seq;
}

/* One FT1-19 repetition: links the code to the line and, when no DG1 and
 * no earlier FT1 brought the same code, adds it as a diagnosis of its own
 * (judged like a DG1 code; a malformed one is kept with code ""). */
static err_t read_ft1_dx(ctx_t *c, claim_t *cl, size_t line, slice_t rep, int occ, int r)
{
    const hl7_delims_t *dl = hl7_msg_delims(c->m);
    char where[40];
    loc(where, "FT1(", occ, ")-19(", r);
    triplet_t tr = pick_triplet(rep, dl->component, SLICE_NULL);
    const char *code_s, *sys_s, *text;
    err_t rc = str_of(c, tr.code, true, where, &code_s);
    if (rc != ERR_OK || !code_s)
        return rc;
    rc = str_of(c, tr.sys, true, where, &sys_s);
    if (rc != ERR_OK)
        return rc;
    char norm[16];
    bool ok = claim_code_normalise(code_s, strlen(code_s), norm, sizeof norm);
    if (ok)
        line_add_dx(c, cl, &cl->lines[line], norm, 0);
    const char *key = ok ? key_of(c->a, '=', norm) : key_of(c->a, '~', code_s);
    long have = index_get(&c->idx, key);
    if (have >= 0) {
        /* A malformed code has no normalised form for dx_codes: the line
         * points at the diagnosis that carries the same form instead. */
        claim_line_t *l = &cl->lines[line];
        int seq = cl->dx[have].sequence;
        bool linked = false;
        for (int p = 0; p < l->ndx_pointers; p++)
            linked |= l->dx_pointers[p] == seq;
        if (!ok && seq > 0 && !linked && l->ndx_pointers < CLAIM_MAX_DX_POINTERS)
            l->dx_pointers[l->ndx_pointers++] = seq;
        return ERR_OK;
    }
    (void)str_of(c, tr.text, false, where, &text);
    claim_dx_t *dx = claim_add_dx(cl, c->a);
    dx->code_sent = code_s;
    if (ok)
        memcpy(dx->code, norm, sizeof dx->code);
    dx->system_sent = sys_s;
    dx->system = sys_s ? claim_codesys_from(sys_s, strlen(sys_s)) : CODESYS_UNKNOWN;
    dx->type = DX_TYPE_SECONDARY;
    dx->text = text;
    dx->location = arena_strdup(c->a, where);
    dx->line = (int)line;
    index_put(c, key, cl->ndx - 1);
    return ERR_OK;
}

static err_t read_ft1(ctx_t *c, claim_t *cl, size_t i, int occ, bool p11, size_t group_end)
{
    const hl7_msg_t *m = c->m;
    const hl7_delims_t *dl = hl7_msg_delims(m);
    char where[40];
    claim_line_t *l = claim_add_line(cl, c->a);
    l->sequence = int_of(hl7_value(m, i, 1, 0, 0, 0));
    l->location = arena_strdup(c->a, loc(where, "FT1(", occ, ")", -1));
    loc(where, "FT1(", occ, ")-25", -1);
    const char *s;
    err_t rc = str_of(c, hl7_value(m, i, 25, 1, 1, 0), true, where, &l->code);
    if (rc != ERR_OK)
        return rc;
    rc = str_of(c, hl7_value(m, i, 25, 1, 3, 0), true, where, &l->system_sent);
    if (rc != ERR_OK)
        return rc;
    l->system = l->system_sent ? claim_procsys_from(l->system_sent, strlen(l->system_sent))
                               : PROCSYS_UNKNOWN;
    loc(where, "FT1(", occ, ")-26", -1);
    hl7_iter_t it;
    slice_t rep;
    hl7_iter_init(&it, hl7_field(m, i, 26), dl->repetition);
    while (hl7_iter_next(&it, &rep) && l->nmodifiers < CLAIM_MAX_MODIFIERS) {
        rc = str_of(c, hl7_piece(rep, dl->component, 1), true, where, &s);
        if (rc != ERR_OK)
            return rc;
        if (s)
            l->modifiers[l->nmodifiers++] = s;
    }
    slice_t q = hl7_value(m, i, 10, 1, 1, 0);
    if (hl7_value_kind(q) == HL7_PRESENT && q.len < 32) {
        char num[32];
        memcpy(num, q.ptr, q.len);
        num[q.len] = '\0';
        char *end;
        double u = strtod(num, &end);
        if (end != num && u >= 0 && u < 1e9)
            l->units = u;
    }
    l->date_from = date_of(hl7_value(m, i, 4, 1, 1, 0), dl->subcomponent);
    l->date_to = date_of(hl7_value(m, i, 4, 1, 2, 0), dl->subcomponent);
    if (!l->date_to.year)
        l->date_to = l->date_from;
    /* FT1-19: codes, resolved to DG1 sequences, or diagnoses of their own. */
    hl7_iter_init(&it, hl7_field(m, i, 19), dl->repetition);
    for (int r = 1; hl7_iter_next(&it, &rep); r++)
        if ((rc = read_ft1_dx(c, cl, cl->nlines - 1, rep, occ, r)) != ERR_OK)
            return rc;
    /* DFT^P11: the financial group's own DG1s when FT1-19 says nothing. */
    if (p11 && l->ndx_codes == 0) {
        for (size_t k = i + 1; k < group_end; k++) {
            if (!slice_eq(hl7_seg_id(m, k), "DG1"))
                continue;
            char norm[16];
            triplet_t tr = pick_triplet(hl7_value(m, k, 3, 1, 0, 0), dl->component,
                                        hl7_value(m, k, 2, 1, 1, 0));
            const char *cs;
            if (str_of(c, tr.code, false, "DG1-3", &cs) == ERR_OK && cs &&
                claim_code_normalise(cs, strlen(cs), norm, sizeof norm))
                line_add_dx(c, cl, l, norm, int_of(hl7_value(m, k, 1, 0, 0, 0)));
        }
    }
    return ERR_OK;
}

err_t hl7_claim_read(const hl7_msg_t *msg, arena_t *a, claim_t **out, err_detail_t *d)
{
    *out = NULL;
    err_clear(d);
    ctx_t c = {.m = msg, .a = a, .d = d};
    c.idx.seed = index_seed(a, &c);
    size_t nseg = hl7_seg_count(msg);
    slice_t type = hl7_value(msg, 0, 9, 1, 1, 0), trig = hl7_value(msg, 0, 9, 1, 2, 0);
    bool has_dg1 = hl7_seg_find(msg, "DG1", 1) >= 0;
    if (!is_supported(type, trig, has_dg1)) {
        /* The type is an identifier, not content: it may be named. */
        char t[8] = "", g[8] = "";
        for (size_t k = 0; k < type.len && k < 7; k++)
            t[k] = (type.ptr[k] >= 'A' && type.ptr[k] <= 'Z') ||
                           (type.ptr[k] >= '0' && type.ptr[k] <= '9')
                       ? type.ptr[k]
                       : '?';
        for (size_t k = 0; k < trig.len && k < 7; k++)
            g[k] = (trig.ptr[k] >= 'A' && trig.ptr[k] <= 'Z') ||
                           (trig.ptr[k] >= '0' && trig.ptr[k] <= '9')
                       ? trig.ptr[k]
                       : '?';
        if (slice_eq(type, "ADT"))
            err_set(d, ERR_UNSUPPORTED, hl7_seg_offset(msg, 0),
                    "MSH-9 is ADT^%s without DG1: no diagnoses to check", g);
        else
            err_set(d, ERR_UNSUPPORTED, hl7_seg_offset(msg, 0),
                    "MSH-9 is %s^%s; supported: DFT^P03, DFT^P11, BAR^P01/P05/P12, "
                    "ADT with DG1",
                    t[0] ? t : "(empty)", g);
        if (d) {
            d->segment = 1;
            d->field = 9;
            snprintf(d->where, sizeof d->where, "MSH-9");
        }
        return ERR_UNSUPPORTED;
    }
    claim_t *cl = claim_new(a, CLAIM_SRC_HL7V2);
    cl->kind = slice_eq(type, "ADT") ? CLAIM_KIND_ADT : CLAIM_KIND_BILL;
    char *mt = arena_alloc(a, type.len + trig.len + 2);
    if (type.len)
        memcpy(mt, type.ptr, type.len);
    mt[type.len] = '^';
    if (trig.len)
        memcpy(mt + type.len + 1, trig.ptr, trig.len);
    mt[type.len + 1 + trig.len] = '\0';
    cl->message_type = mt;
    err_t rc = str_of(&c, hl7_value(msg, 0, 10, 0, 0, 0), true, "MSH-10", &cl->id);
    if (rc != ERR_OK)
        goto fail;
    const hl7_delims_t *dl = hl7_msg_delims(msg);
    long pid = hl7_seg_find(msg, "PID", 1);
    if (pid >= 0) {
        cl->birth_date = date_of(hl7_value(msg, (size_t)pid, 7, 1, 1, 0), dl->subcomponent);
        slice_t sex = hl7_value(msg, (size_t)pid, 8, 1, 1, 0);
        if (slice_eq(sex, "F") || slice_eq(sex, "M"))
            cl->sex = sex.ptr[0];
        else if (hl7_value_kind(sex) == HL7_PRESENT)
            cl->sex = 'U';
        /* Lookup references only: a bad escape keeps the raw text. */
        (void)str_of(&c, hl7_value(msg, (size_t)pid, 3, 1, 1, 0), false, "PID-3", &cl->ref_mrn);
        (void)str_of(&c, hl7_value(msg, (size_t)pid, 18, 1, 1, 0), false, "PID-18",
                     &cl->ref_account);
    }
    claim_date_t admit = {0, 0, 0}, disch = {0, 0, 0};
    long pv1 = hl7_seg_find(msg, "PV1", 1);
    if (pv1 >= 0) {
        (void)str_of(&c, hl7_value(msg, (size_t)pv1, 19, 1, 1, 0), false, "PV1-19",
                     &cl->ref_visit);
        slice_t dispo = hl7_value(msg, (size_t)pv1, 36, 1, 1, 0);
        if (hl7_value_kind(dispo) == HL7_PRESENT)
            cl->discharged_alive = slice_eq(dispo, "20") || slice_eq(dispo, "40") ||
                                           slice_eq(dispo, "41") || slice_eq(dispo, "42")
                                       ? 0
                                       : 1;
        admit = date_of(hl7_value(msg, (size_t)pv1, 44, 1, 1, 0), dl->subcomponent);
        disch = date_of(hl7_value(msg, (size_t)pv1, 45, 1, 1, 0), dl->subcomponent);
        cl->setting = class_setting(hl7_value(msg, (size_t)pv1, 2, 1, 1, 0));
    }
    cl->discharge = disch;
    /* GP1-1 is v2's one standard home of the UB-04 type of bill (IS to
     * v2.6, CWE from v2.7: component 1 either way). Where it is a valid
     * code it states what the bill is, so it decides over PV1-2. */
    long gp1 = hl7_seg_find(msg, "GP1", 1);
    if (gp1 >= 0) {
        (void)str_of(&c, hl7_value(msg, (size_t)gp1, 1, 1, 1, 0), false, "GP1-1",
                     &cl->type_of_bill);
        claim_setting_t tob = claim_tob_setting(cl->type_of_bill);
        if (tob != CLAIM_SETTING_UNKNOWN)
            cl->setting = tob;
    }
    /* Diagnoses first, so that lines can point at them. */
    int occ = 0;
    for (size_t i = 0; i < nseg; i++) {
        if (!slice_eq(hl7_seg_id(msg, i), "DG1"))
            continue;
        if ((rc = read_dg1(&c, cl, i, ++occ)) != ERR_OK)
            goto fail;
    }
    bool p11 = slice_eq(type, "DFT") && slice_eq(trig, "P11");
    occ = 0;
    for (size_t i = 0; i < nseg; i++) {
        if (!slice_eq(hl7_seg_id(msg, i), "FT1"))
            continue;
        size_t end = i + 1;
        while (end < nseg && !slice_eq(hl7_seg_id(msg, end), "FT1"))
            end++;
        if ((rc = read_ft1(&c, cl, i, ++occ, p11, end)) != ERR_OK)
            goto fail;
    }
    for (size_t k = 0; k < cl->nlines; k++) {
        const claim_line_t *l = &cl->lines[k];
        if (l->date_from.year && (!cl->service_from.year || date_lt(l->date_from, cl->service_from)))
            cl->service_from = l->date_from;
        if (l->date_to.year && (!cl->service_to.year || date_lt(cl->service_to, l->date_to)))
            cl->service_to = l->date_to;
    }
    if (!cl->service_from.year) {
        cl->service_from = admit;
        cl->service_to = disch.year ? disch : admit;
    }
    *out = cl;
    return ERR_OK;
fail:
    return rc;
}
