/* hl7_claim.c - HL7 v2 DFT/BAR/ADT -> claim model (what is read from which
 * field, per version, is in hl7_claim.h). Reads the message through the
 * public hl7.h accessors only; every string it keeps is unescaped into the
 * caller's arena, so the claim outlives the message.
 *
 * This runs for every message (issue 15), so values are found by accessors
 * that scan only their own bytes (hl7_value()'s equivalents for the parts
 * read here), strings are copied into a bump pool in the arena, and
 * locations are formatted only when they are kept or named in an error.
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

/* A normalised code fits claim_dx_t.code; a key is a tag and such a code.
 * The code is normalised straight behind the tag, so that the usual key
 * costs no copy. */
#define CODE_CAP sizeof(((claim_dx_t *)NULL)->code)
#define KEY_MAX (CODE_CAP + 4)

/* A code normalised lately (see normalise_key()); code lives in the arena. */
typedef struct {
    const char *code; /* NULL: empty entry */
    bool ok;
    char key[KEY_MAX];
} norm_memo_t;

#define NORM_MEMO 16

typedef struct {
    const hl7_msg_t *m;
    const hl7_delims_t *dl;
    arena_t *a;
    err_detail_t *d;
    dx_index_t idx;
    arena_pool_t pool;        /* the claim's strings, see pool_alloc() */
    unsigned char delim[256]; /* DELIM_* bits of the message's delimiters */
    bool escapes;             /* the escape character occurs after MSH-2 */
    norm_memo_t memo[NORM_MEMO];
} ctx_t;

enum { DELIM_REP = 1, DELIM_COMP = 2, DELIM_SUB = 4 };

/* The claim's strings are short (codes, systems, texts, locations): they
 * are cut from chunks of the arena rather than each being an arena
 * allocation of its own. */
#define POOL_CHUNK 512

static inline char *pool_alloc(ctx_t *c, size_t n)
{
    return arena_pool_alloc(&c->pool, n);
}

/* The n bytes at s, NUL-terminated, in the pool. */
static inline char *pool_strndup(ctx_t *c, const char *s, size_t n)
{
    char *d = pool_alloc(c, n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

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

/* The slot holding key, or the free slot where it would go; NULL while the
 * table has none. */
static dx_slot_t *index_find(const dx_index_t *x, const char *key)
{
    return x->cap ? index_slot(x, x->slots, x->cap, key) : NULL;
}

/* Stores dx under key, which index_find() has just not found (s is what it
 * returned). The key is copied; the table grows in the arena (the old one
 * is abandoned there, like the claim's arrays). */
static void index_insert(ctx_t *c, dx_slot_t *s, const char *key, size_t dx)
{
    dx_index_t *x = &c->idx;
    if ((x->n + 1) * 2 > x->cap) {
        size_t ncap = x->cap ? x->cap * 2 : 16;
        dx_slot_t *ns = arena_calloc(c->a, ncap, sizeof *ns);
        for (size_t i = 0; i < x->cap; i++)
            if (x->slots[i].key)
                *index_slot(x, ns, ncap, x->slots[i].key) = x->slots[i];
        x->slots = ns;
        x->cap = ncap;
        s = index_slot(x, x->slots, x->cap, key);
    }
    s->key = pool_strndup(c, key, strlen(key));
    s->dx = dx;
    x->n++;
}

/* Normalises code into key + 1 (KEY_MAX bytes, zeroed first) behind the
 * tag '='; whether it normalises, as claim_code_normalise() says. FT1-19
 * repeats the DG1 codes, mostly as they were sent there: a code seen
 * recently (by a hash of its length and ends) is not normalised again. */
static bool normalise_key(ctx_t *c, char *key, const char *code)
{
    size_t n = strlen(code);
    norm_memo_t *e =
        &c->memo[(n * 31 + (unsigned char)code[0] * 7 + (unsigned char)code[n ? n - 1 : 0]) %
                 NORM_MEMO];
    if (e->code && strcmp(e->code, code) == 0) {
        memcpy(key, e->key, KEY_MAX);
        return e->ok;
    }
    memset(key, 0, KEY_MAX);
    key[0] = '=';
    bool ok = claim_code_normalise(code, n, key + 1, CODE_CAP);
    e->code = code;
    e->ok = ok;
    memcpy(e->key, key, KEY_MAX);
    return ok;
}

/* The key of a code that does not normalise: '~' + the code as sent (any
 * length: in the pool). */
static const char *sent_key(ctx_t *c, const char *sent)
{
    size_t n = strlen(sent);
    char *k = pool_alloc(c, n + 2);
    k[0] = '~';
    memcpy(k + 1, sent, n + 1);
    return k;
}

/* Where a value is read from: PRE, occ, MID[, r, ")"] ("DG1(2)-3",
 * "FT1(1)-19(2)"), or PRE alone when occ < 0 ("MSH-10"). It is formatted
 * only when kept as a location or named in an error, by plain
 * concatenation: printf cost more than the rest of the claim reading. */
typedef struct {
    const char *pre;
    int occ;
    const char *mid;
    int r; /* < 0: none */
} where_t;

static char *put_int(char *p, int v)
{
    if (v < 0)
        *p++ = '-';
    return p + str_udec(p, v < 0 ? 0u - (unsigned)v : (unsigned)v);
}

/* Writes w into buf (at least 40 bytes; pre and mid are short literals)
 * and returns its length. */
static size_t loc(char *buf, const where_t *w)
{
    char *p = buf;
    for (const char *s = w->pre; *s;)
        *p++ = *s++;
    if (w->occ >= 0) {
        p = put_int(p, w->occ);
        for (const char *s = w->mid; *s;)
            *p++ = *s++;
        if (w->r >= 0) {
            p = put_int(p, w->r);
            *p++ = ')';
        }
    }
    *p = '\0';
    return (size_t)(p - buf);
}

/* w formatted into the pool, for a location the claim keeps. */
static const char *loc_dup(ctx_t *c, const where_t *w)
{
    char buf[40];
    return pool_strndup(c, buf, loc(buf, w));
}

/* A segment id (from hl7_seg_id()) is want (three characters). */
static bool id_is(slice_t id, const char *want)
{
    return id.ptr[0] == want[0] && id.ptr[1] == want[1] && id.ptr[2] == want[2];
}

static bool seg_is(const hl7_msg_t *m, size_t i, const char *id)
{
    return id_is(hl7_seg_id(m, i), id);
}

/* The segments of one kind: how many, and the indexes they lie within. */
typedef struct {
    size_t n, first, end;
} seg_span_t;

static void span_add(seg_span_t *s, size_t i)
{
    if (!s->n++)
        s->first = i;
    s->end = i + 1;
}

/* hl7_value_kind(v) == HL7_PRESENT, inline: it is asked of every value. */
static inline bool present(slice_t v)
{
    return v.len && !(v.len == 2 && v.ptr[0] == '"' && v.ptr[1] == '"');
}

/* The accessors below give what hl7_value(m, seg, field, rep, comp, sub)
 * gives for the parts read here (never of MSH-1 or MSH-2), each scanning
 * only the bytes of its part: the values read are short, and most are the
 * first component of the first repetition. */

/* v up to its first byte that is a delimiter of mask (DELIM_* bits). */
static inline slice_t head(const ctx_t *c, slice_t v, unsigned mask)
{
    const char *p = v.ptr, *end = v.ptr + v.len;
    while (p < end && !(c->delim[(unsigned char)*p] & mask))
        p++;
    return slice_make(v.ptr, (size_t)(p - v.ptr));
}

/* hl7_value(m, seg, n, 1, 1, 0): component 1 of repetition 1. */
static slice_t first_comp(const ctx_t *c, size_t seg, int n)
{
    return head(c, hl7_field(c->m, seg, n), DELIM_REP | DELIM_COMP);
}

/* hl7_value(m, seg, n, 1, 1, 1): subcomponent 1 of that (a date). */
static slice_t first_sub(const ctx_t *c, size_t seg, int n)
{
    return head(c, hl7_field(c->m, seg, n), DELIM_REP | DELIM_COMP | DELIM_SUB);
}

/* hl7_value(m, seg, n, 1, 0, 0): repetition 1, a coded value with its
 * texts, long enough for memchr to be cheaper than a byte loop. */
static slice_t first_rep(const ctx_t *c, size_t seg, int n)
{
    slice_t f = hl7_field(c->m, seg, n);
    const char *q = f.ptr ? memchr(f.ptr, c->dl->repetition, f.len) : NULL;
    return q ? slice_make(f.ptr, (size_t)(q - f.ptr)) : f;
}

/* The pieces of a value one by one (like hl7_iter_t, inline): p is NULL
 * once the last piece has been taken, after which pieces are empty. */
typedef struct {
    const char *p, *end;
} pieces_t;

static inline pieces_t pieces_of(slice_t s)
{
    return (pieces_t){s.ptr, s.ptr ? s.ptr + s.len : NULL};
}

static inline slice_t next_piece(pieces_t *it, char sep)
{
    if (!it->p)
        return slice_make(it->end, 0);
    const char *q = memchr(it->p, sep, (size_t)(it->end - it->p));
    slice_t s = slice_make(it->p, (size_t)((q ? q : it->end) - it->p));
    it->p = q ? q + 1 : NULL;
    return s;
}

/* hl7_value(m, seg, n, 1, k, 0) for k = 1..ncomp, into comp[k - 1]. */
static void comps_of(const ctx_t *c, size_t seg, int n, slice_t *comp, int ncomp)
{
    pieces_t it = pieces_of(first_rep(c, seg, n));
    for (int k = 0; k < ncomp; k++)
        comp[k] = next_piece(&it, c->dl->component);
}

/* claim_codesys_from() and claim_procsys_from(), answering "I10" and "C4"
 * (what nearly every feed sends in DG1-3.3 and FT1-25.3) without walking
 * their tables of names; the answers are those the tables give. */
static claim_codesys_t codesys_of(const char *s, size_t len)
{
    if (len == 3 && s[0] == 'I' && s[1] == '1' && s[2] == '0')
        return CODESYS_ICD10CM;
    return claim_codesys_from(s, len);
}

static claim_procsys_t procsys_of(const char *s, size_t len)
{
    if (len == 2 && s[0] == 'C' && s[1] == '4')
        return PROCSYS_CPT;
    return claim_procsys_from(s, len);
}

/* str_of() for a value holding the escape character, apart: it is rare,
 * and the usual path stays small enough to inline. */
static err_t str_of_escaped(ctx_t *c, slice_t v, bool strict, const where_t *where,
                            const char **out)
{
    char *dec;
    err_detail_t tmp;
    err_clear(&tmp); /* hl7_unescape_arena() sets no segment or field */
    err_t rc = hl7_unescape_arena(c->m, v, c->a, &dec, &tmp);
    if (rc != ERR_OK) {
        if (!strict) {
            *out = arena_slicedup(c->a, v);
            return ERR_OK;
        }
        if (c->d) {
            char name[40];
            loc(name, where);
            *c->d = tmp;
            snprintf(c->d->where, sizeof c->d->where, "%s", name);
            snprintf(c->d->msg, sizeof c->d->msg, "malformed escape sequence in %s", name);
        }
        return rc;
    }
    *out = dec[0] ? dec : NULL;
    return ERR_OK;
}

/* Decodes a value into the arena; NULL when empty or the explicit null "".
 * A code (strict) with a malformed escape is an error; a text is kept raw. */
static inline err_t str_of(ctx_t *c, slice_t v, bool strict, const where_t *where, const char **out)
{
    *out = NULL;
    if (!present(v))
        return ERR_OK;
    if (c->escapes && memchr(v.ptr, c->dl->escape, v.len))
        return str_of_escaped(c, v, strict, where, out);
    const char *s = pool_strndup(c, v.ptr, v.len); /* nothing to decode: the usual case */
    *out = s[0] ? s : NULL;
    return ERR_OK;
}

/* Dates: the first subcomponent of a TS/DTM/DT (the precision may follow). */
static claim_date_t date_of(slice_t v)
{
    claim_date_t dt = {0, 0, 0};
    if (present(v))
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

/* A number as sent (a quantity, FT1-10) into *out; false when there is
 * none. Plain digits, nearly always sent, are read without strtod(), which
 * gives the same value for them. */
static bool number_of(slice_t q, double *out)
{
    if (!present(q) || q.len >= 32)
        return false;
    if (q.len <= 9) {
        long n = 0;
        size_t i = 0;
        for (; i < q.len && q.ptr[i] >= '0' && q.ptr[i] <= '9'; i++)
            n = n * 10 + (q.ptr[i] - '0');
        if (i == q.len) {
            *out = (double)n;
            return true;
        }
    }
    char num[32];
    memcpy(num, q.ptr, q.len);
    num[q.len] = '\0';
    char *end;
    *out = strtod(num, &end);
    return end != num;
}

/* A quantity (FT1-10): its value when it is a number in [0, 1e9), else 0. */
static double units_of(slice_t q)
{
    double u;
    return number_of(q, &u) && u >= 0 && u < 1e9 ? u : 0;
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
 * method) before it is judged. The code is empty when no triplet has one.
 * Components are split only as far as a triplet is looked at: the primary
 * is usually an ICD-10-CM code, and the search ends there. */
static triplet_t pick_triplet(slice_t rep, char compsep, slice_t primary_sys)
{
    triplet_t first = {SLICE_NULL, SLICE_NULL, SLICE_NULL};
    bool coded = false;
    pieces_t it = pieces_of(rep);
    /* Once no component is left, no triplet has a code. */
    for (int k = 0; k < 3 && it.p; k++) {
        /* Components 7-9 come before the second alternate. */
        if (k == 2)
            for (int skip = 0; skip < 3; skip++)
                (void)next_piece(&it, compsep);
        triplet_t t;
        t.code = next_piece(&it, compsep);
        t.text = next_piece(&it, compsep);
        t.sys = next_piece(&it, compsep);
        if (k == 0 && !present(t.sys))
            t.sys = primary_sys;
        if (!present(t.code))
            continue;
        if (present(t.sys) && codesys_of(t.sys.ptr, t.sys.len) == CODESYS_ICD10CM)
            return t;
        if (!coded) {
            first = t;
            coded = true;
        }
    }
    return first;
}

/* DG1-21, the diagnosis action code (HL7 table 0206, from 2.5): "D" says
 * the message removes this diagnosis from the account, as a BAR^P12 does. */
static bool dg1_deleted(const ctx_t *c, size_t i)
{
    slice_t action = first_comp(c, i, 21);
    return action.len == 1 && (action.ptr[0] == 'D' || action.ptr[0] == 'd');
}

static err_t read_dg1(ctx_t *c, claim_t *cl, size_t i, int occ)
{
    const where_t where = {"DG1(", occ, ")-3", -1};
    if (dg1_deleted(c, i))
        return ERR_OK; /* not billed: judging it could only raise false pairs */
    /* DG1-3 does not repeat: its first repetition is the value. */
    triplet_t tr = pick_triplet(first_rep(c, i, 3), c->dl->component,
                                first_comp(c, i, 2) /* DG1-2 coding method */);
    const char *code_s, *sys_s, *text;
    err_t rc = str_of(c, tr.code, true, &where, &code_s);
    if (rc != ERR_OK)
        return rc;
    if (!code_s)
        return ERR_OK; /* a DG1 without a code carries nothing to check */
    rc = str_of(c, tr.sys, true, &where, &sys_s);
    if (rc != ERR_OK)
        return rc;
    slice_t t = hl7_field(c->m, i, 4);
    if (!present(t))
        t = tr.text;
    (void)str_of(c, t, false, &where, &text);

    claim_dx_t *dx = claim_add_dx(cl, c->a);
    dx->sequence = int_of(hl7_field(c->m, i, 1));
    dx->code_sent = code_s;
    char key[KEY_MAX];
    (void)normalise_key(c, key, code_s);
    memcpy(dx->code, key + 1, sizeof dx->code);
    dx->system_sent = sys_s;
    dx->system = sys_s ? codesys_of(sys_s, strlen(sys_s)) : CODESYS_UNKNOWN;
    dx->text = text;
    dx->location = loc_dup(c, &where);
    slice_t prio = hl7_field(c->m, i, 15);
    slice_t type = first_comp(c, i, 6);
    if (int_of(prio) == 1)
        dx->type = DX_TYPE_PRINCIPAL;
    else if (slice_eq(type, "A"))
        dx->type = DX_TYPE_ADMITTING;
    else if (present(type) || int_of(prio) > 1)
        dx->type = DX_TYPE_SECONDARY;
    if (slice_eq(type, "W"))
        dx->stage = DX_STAGE_WORKING;
    else if (slice_eq(type, "F"))
        dx->stage = DX_STAGE_FINAL;
    dx->poa = poa_of(first_comp(c, i, 26));
    /* Index it so FT1-19 finds it; of several DG1s with one code, the
     * first with a sequence is the one lines point to. */
    const char *index_key = dx->code[0] ? key : sent_key(c, code_s);
    dx_slot_t *s = index_find(&c->idx, index_key);
    if (!s || !s->key)
        index_insert(c, s, index_key, cl->ndx - 1);
    else if (cl->dx[s->dx].sequence <= 0 && dx->sequence > 0)
        s->dx = cl->ndx - 1;
    return ERR_OK;
}

/* The DG1-1 sequence of the diagnosis indexed under '=' + norm, or 0. */
static int dx_seq_of(ctx_t *c, const claim_t *cl, const char *norm)
{
    char key[KEY_MAX] = "=";
    memcpy(key + 1, norm, strlen(norm) + 1); /* a normalised code: under CODE_CAP */
    const dx_slot_t *s = index_find(&c->idx, key);
    return s && s->key ? cl->dx[s->dx].sequence : 0;
}

/* Adds a code (already normalised) to a line, with the pointer to the DG1
 * carrying it, seq (none when <= 0). kept is norm in the arena already, or
 * NULL. */
static void line_add_dx(ctx_t *c, claim_line_t *l, const char *norm, const char *kept, int seq)
{
    for (int k = 0; k < l->ndx_codes; k++)
        if (strcmp(l->dx_codes[k], norm) == 0)
            return;
    if (l->ndx_codes < CLAIM_MAX_DX_POINTERS)
        l->dx_codes[l->ndx_codes++] = kept ? kept : pool_strndup(c, norm, strlen(norm));
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
    const where_t where = {"FT1(", occ, ")-19(", r};
    triplet_t tr = pick_triplet(rep, c->dl->component, SLICE_NULL);
    const char *code_s, *sys_s, *text;
    err_t rc = str_of(c, tr.code, true, &where, &code_s);
    if (rc != ERR_OK || !code_s)
        return rc;
    rc = str_of(c, tr.sys, true, &where, &sys_s);
    if (rc != ERR_OK)
        return rc;
    char buf[KEY_MAX];
    bool ok = normalise_key(c, buf, code_s);
    const char *norm = buf + 1;
    /* One lookup serves both the line's pointer and the question whether
     * the code is a diagnosis already. */
    const char *key = ok ? buf : sent_key(c, code_s);
    dx_slot_t *s = index_find(&c->idx, key);
    long have = s && s->key ? (long)s->dx : -1;
    if (ok) {
        /* An indexed code's key is '=' + norm: its text serves. */
        line_add_dx(c, &cl->lines[line], norm, have >= 0 ? s->key + 1 : NULL,
                    have >= 0 ? cl->dx[have].sequence : 0);
    }
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
    (void)str_of(c, tr.text, false, &where, &text);
    claim_dx_t *dx = claim_add_dx(cl, c->a);
    dx->code_sent = code_s;
    if (ok)
        memcpy(dx->code, norm, sizeof dx->code);
    dx->system_sent = sys_s;
    dx->system = sys_s ? codesys_of(sys_s, strlen(sys_s)) : CODESYS_UNKNOWN;
    dx->type = DX_TYPE_SECONDARY;
    dx->text = text;
    dx->location = loc_dup(c, &where);
    dx->line = (int)line;
    index_insert(c, s, key, cl->ndx - 1);
    return ERR_OK;
}

/* Whether DG1 i's code (normalised) is a diagnosis of the claim already. */
static bool group_dg1_known(ctx_t *c, size_t i)
{
    triplet_t tr = pick_triplet(first_rep(c, i, 3), c->dl->component, first_comp(c, i, 2));
    const char *cs;
    char key[KEY_MAX];
    if (str_of(c, tr.code, false, &(where_t){"DG1-3", -1, "", -1}, &cs) != ERR_OK || !cs ||
        !normalise_key(c, key, cs))
        return false;
    const dx_slot_t *s = index_find(&c->idx, key);
    return s && s->key;
}

/* An FT1 that takes a charge back: transaction type CD (credit, HL7 table
 * 0017) or a negative quantity (FT1-10), as reversals are sent. It bills
 * nothing, so it is no line of the claim and its codes are not judged:
 * a reversal must pass the gate even when the charge it removes was
 * coded wrong. */
static bool ft1_reversal(const ctx_t *c, size_t i)
{
    if (slice_eq(first_comp(c, i, 6), "CD"))
        return true;
    double q;
    return number_of(first_comp(c, i, 10), &q) && q < 0;
}

static err_t read_ft1(ctx_t *c, claim_t *cl, size_t i, int occ, bool p11, size_t group_end)
{
    if (ft1_reversal(c, i))
        return ERR_OK;
    const hl7_delims_t *dl = c->dl;
    claim_line_t *l = claim_add_line(cl, c->a);
    l->sequence = int_of(hl7_field(c->m, i, 1));
    l->location = loc_dup(c, &(where_t){"FT1(", occ, ")", -1});
    const where_t where25 = {"FT1(", occ, ")-25", -1}, where26 = {"FT1(", occ, ")-26", -1};
    const char *s;
    slice_t proc[3]; /* FT1-25: code, text, system */
    comps_of(c, i, 25, proc, 3);
    err_t rc = str_of(c, proc[0], true, &where25, &l->code);
    if (rc != ERR_OK)
        return rc;
    rc = str_of(c, proc[2], true, &where25, &l->system_sent);
    if (rc != ERR_OK)
        return rc;
    l->system =
        l->system_sent ? procsys_of(l->system_sent, strlen(l->system_sent)) : PROCSYS_UNKNOWN;
    pieces_t reps = pieces_of(hl7_field(c->m, i, 26));
    while (reps.p && l->nmodifiers < CLAIM_MAX_MODIFIERS) {
        slice_t rep = next_piece(&reps, dl->repetition);
        rc = str_of(c, head(c, rep, DELIM_COMP), true, &where26, &s);
        if (rc != ERR_OK)
            return rc;
        if (s)
            l->modifiers[l->nmodifiers++] = s;
    }
    l->units = units_of(first_comp(c, i, 10));
    slice_t dates[2]; /* FT1-4: a TS, or a DR from v2.5 (start, end) */
    comps_of(c, i, 4, dates, 2);
    l->date_from = date_of(head(c, dates[0], DELIM_SUB));
    l->date_to = date_of(head(c, dates[1], DELIM_SUB));
    if (!l->date_to.year)
        l->date_to = l->date_from;
    /* FT1-19: codes, resolved to DG1 sequences, or diagnoses of their own. */
    reps = pieces_of(hl7_field(c->m, i, 19));
    for (int r = 1; reps.p; r++)
        if ((rc = read_ft1_dx(c, cl, cl->nlines - 1, next_piece(&reps, dl->repetition), occ, r)) !=
            ERR_OK)
            return rc;
    /* DFT^P11: the financial group's own DG1s when FT1-19 says nothing. */
    if (p11 && l->ndx_codes == 0) {
        for (size_t k = i + 1; k < group_end; k++) {
            if (!seg_is(c->m, k, "DG1") || dg1_deleted(c, k))
                continue;
            char norm[16];
            triplet_t tr = pick_triplet(first_rep(c, k, 3), dl->component, first_comp(c, k, 2));
            const char *cs;
            if (str_of(c, tr.code, false, &(where_t){"DG1-3", -1, "", -1}, &cs) == ERR_OK && cs &&
                claim_code_normalise(cs, strlen(cs), norm, sizeof norm)) {
                /* The diagnosis that carries the code: this DG1, or the
                 * first with its code when this one repeats it (not read). */
                line_add_dx(c, l, norm, NULL, dx_seq_of(c, cl, norm));
            }
        }
    }
    return ERR_OK;
}

err_t hl7_claim_read(const hl7_msg_t *msg, arena_t *a, claim_t **out, err_detail_t *d)
{
    *out = NULL;
    err_clear(d);
    ctx_t c = {.m = msg,
               .dl = hl7_msg_delims(msg),
               .a = a,
               .d = d,
               .escapes = true,
               .pool = ARENA_POOL(a, POOL_CHUNK, 1)};
    c.delim[(unsigned char)c.dl->repetition] = DELIM_REP;
    c.delim[(unsigned char)c.dl->component] = DELIM_COMP;
    c.delim[(unsigned char)c.dl->subcomponent] = DELIM_SUB;
    c.idx.seed = index_seed(a, &c);
    /* Most messages escape nothing: one look at the whole message spares
     * every value its own. */
    slice_t bytes = hl7_msg_bytes(msg), enc = hl7_field(msg, 0, 2);
    if (enc.ptr) {
        const char *from = enc.ptr + enc.len;
        c.escapes = memchr(from, c.dl->escape, (size_t)(bytes.ptr + bytes.len - from)) != NULL;
    }
    size_t nseg = hl7_seg_count(msg);
    /* One pass for the segments read once (the first of each) and where
     * the DG1s and FT1s are; their numbers size the claim's arrays. */
    long pid = -1, pv1 = -1, gp1 = -1;
    seg_span_t dg1 = {0, 0, 0}, ft1 = {0, 0, 0};
    for (size_t i = 0; i < nseg; i++) {
        slice_t id = hl7_seg_id(msg, i);
        if (id_is(id, "DG1"))
            span_add(&dg1, i);
        else if (id_is(id, "FT1"))
            span_add(&ft1, i);
        else if (pid < 0 && id_is(id, "PID"))
            pid = (long)i;
        else if (pv1 < 0 && id_is(id, "PV1"))
            pv1 = (long)i;
        else if (gp1 < 0 && id_is(id, "GP1"))
            gp1 = (long)i;
    }
    slice_t msg_type[2]; /* MSH-9: type, trigger */
    comps_of(&c, 0, 9, msg_type, 2);
    slice_t type = msg_type[0], trig = msg_type[1];
    if (!is_supported(type, trig, dg1.n > 0)) {
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
    /* Sized up front (claim_add_* grow them only past the capacity): a
     * line per FT1, a diagnosis per DG1 (FT1-19 codes may add more). */
    claim_reserve(cl, a, dg1.n, ft1.n);
    cl->kind = slice_eq(type, "ADT") ? CLAIM_KIND_ADT : CLAIM_KIND_BILL;
    char *mt = arena_alloc(a, type.len + trig.len + 2);
    if (type.len)
        memcpy(mt, type.ptr, type.len);
    mt[type.len] = '^';
    if (trig.len)
        memcpy(mt + type.len + 1, trig.ptr, trig.len);
    mt[type.len + 1 + trig.len] = '\0';
    cl->message_type = mt;
    err_t rc = str_of(&c, hl7_field(msg, 0, 10), true, &(where_t){"MSH-10", -1, "", -1}, &cl->id);
    if (rc != ERR_OK)
        goto fail;
    if (pid >= 0) {
        size_t i = (size_t)pid;
        cl->birth_date = date_of(first_sub(&c, i, 7));
        slice_t sex = first_comp(&c, i, 8);
        if (slice_eq(sex, "F") || slice_eq(sex, "M"))
            cl->sex = sex.ptr[0];
        else if (present(sex))
            cl->sex = 'U';
        /* Lookup references only: a bad escape keeps the raw text. */
        (void)str_of(&c, first_comp(&c, i, 3), false, &(where_t){"PID-3", -1, "", -1},
                     &cl->ref_mrn);
        (void)str_of(&c, first_comp(&c, i, 18), false, &(where_t){"PID-18", -1, "", -1},
                     &cl->ref_account);
    }
    claim_date_t admit = {0, 0, 0}, disch = {0, 0, 0};
    if (pv1 >= 0) {
        size_t i = (size_t)pv1;
        (void)str_of(&c, first_comp(&c, i, 19), false, &(where_t){"PV1-19", -1, "", -1},
                     &cl->ref_visit);
        slice_t dispo = first_comp(&c, i, 36);
        if (present(dispo))
            cl->discharged_alive = slice_eq(dispo, "20") || slice_eq(dispo, "40") ||
                                           slice_eq(dispo, "41") || slice_eq(dispo, "42")
                                       ? 0
                                       : 1;
        admit = date_of(first_sub(&c, i, 44));
        disch = date_of(first_sub(&c, i, 45));
        cl->setting = class_setting(first_comp(&c, i, 2));
    }
    cl->discharge = disch;
    /* GP1-1 is v2's one standard home of the UB-04 type of bill (IS to
     * v2.6, CWE from v2.7: component 1 either way). Where it is a valid
     * code it states what the bill is, so it decides over PV1-2. */
    if (gp1 >= 0) {
        (void)str_of(&c, first_comp(&c, (size_t)gp1, 1), false, &(where_t){"GP1-1", -1, "", -1},
                     &cl->type_of_bill);
        claim_setting_t tob = claim_tob_setting(cl->type_of_bill);
        if (tob != CLAIM_SETTING_UNKNOWN)
            cl->setting = tob;
    }
    /* Diagnoses first, so that lines can point at them. In a DFT^P11 the
     * DG1s of a reversal's financial group are the charge it takes back:
     * not billed, so not read. */
    bool p11 = slice_eq(type, "DFT") && slice_eq(trig, "P11");
    int occ = 0;
    bool in_group = false, in_reversal = false;
    size_t from = p11 && ft1.n && ft1.first < dg1.first ? ft1.first : dg1.first;
    for (size_t i = from; i < dg1.end; i++) {
        if (p11 && seg_is(msg, i, "FT1")) {
            in_group = true;
            in_reversal = ft1_reversal(&c, i);
        }
        if (!seg_is(msg, i, "DG1"))
            continue;
        ++occ;
        /* A group's DG1 with a code the claim has already links its charge
         * to that diagnosis (read_ft1); it is not the code reported twice. */
        if (in_reversal || (in_group && group_dg1_known(&c, i)))
            continue;
        if ((rc = read_dg1(&c, cl, i, occ)) != ERR_OK)
            goto fail;
    }
    occ = 0;
    for (size_t i = ft1.first; i < ft1.end; i++) {
        if (!seg_is(msg, i, "FT1"))
            continue;
        /* P11 only: the financial group runs to the next FT1. */
        size_t end = i + 1;
        while (p11 && end < nseg && !seg_is(msg, end, "FT1"))
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
