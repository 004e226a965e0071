/* hl7_write.c - the HL7 v2 writer: segments built (or copied from a parsed
 * message and changed) as sorted lists of positioned values, and edits of a
 * parsed message written out with every untouched segment byte-identical.
 * The ACK and annotation writers, which run on every message, skip the
 * sorted list and write their values in order (hl7__segw_*).
 * Everything here lives in the caller's arena; values set with
 * hl7_seg_set*() are copied there, values taken by hl7_seg_from() borrow the
 * message's buffer, which must outlive the write.
 */
#include "hl7_int.h"

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ---------------------------------------------------------------- buffer */

void hl7__buf_init(hl7__buf_t *b, arena_t *a, size_t hint)
{
    b->a = a;
    b->cap = hint < 64 ? 64 : hint;
    b->p = arena_alloc(a, b->cap);
    b->len = 0;
}

static void buf_grow(hl7__buf_t *b, size_t n)
{
    size_t cap = b->cap * 2;
    while (cap - b->len <= n)
        cap *= 2;
    char *np = arena_alloc(b->a, cap);
    memcpy(np, b->p, b->len);
    b->p = np;
    b->cap = cap;
}

/* Makes room for more than n bytes: the check is inline, growing is not. */
static inline void buf_reserve(hl7__buf_t *b, size_t n)
{
    if (b->cap - b->len <= n)
        buf_grow(b, n);
}

void hl7__buf_put(hl7__buf_t *b, const char *s, size_t n)
{
    if (!n)
        return;
    buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

void hl7__buf_putc(hl7__buf_t *b, char c)
{
    buf_reserve(b, 1);
    b->p[b->len++] = c;
}

/* Bytes that plain_prefix() may read past the end of its input. */
#define PLAIN_SLACK 16

/* The length of the leading part of s (n bytes) that hl7_escape() copies as
 * it is: up to the first delimiter, escape character or line break. s must
 * be followed by PLAIN_SLACK readable bytes: it is read 16 bytes at a time. */
static size_t plain_prefix(const hl7_delims_t *dl, const char *s, size_t n)
{
    /* Without a truncation character the escape character stands in for it:
     * one more comparison that matches nothing new. */
    char trunc = dl->truncation ? dl->truncation : dl->escape;
#if defined(__SSE2__)
    const __m128i fs = _mm_set1_epi8(dl->field), cs = _mm_set1_epi8(dl->component),
                  rs = _mm_set1_epi8(dl->repetition), es = _mm_set1_epi8(dl->escape),
                  ss = _mm_set1_epi8(dl->subcomponent), ts = _mm_set1_epi8(trunc),
                  cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    for (size_t i = 0; i < n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m128i hit =
            _mm_or_si128(_mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, fs), _mm_cmpeq_epi8(v, cs)),
                                      _mm_or_si128(_mm_cmpeq_epi8(v, rs), _mm_cmpeq_epi8(v, es))),
                         _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, ss), _mm_cmpeq_epi8(v, ts)),
                                      _mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf))));
        unsigned m = (unsigned)_mm_movemask_epi8(hit);
        if (n - i < 16)
            m &= (1u << (n - i)) - 1; /* the slack after the end */
        if (m)
            return i + (size_t)__builtin_ctz(m);
    }
    return n;
#else
    size_t i = 0;
    for (; i < n; i++) {
        char c = s[i];
        if (c == dl->field || c == dl->component || c == dl->repetition || c == dl->escape ||
            c == dl->subcomponent || c == trunc || c == '\r' || c == '\n')
            break;
    }
    return i;
#endif
}

void hl7__buf_esc(hl7__buf_t *b, const hl7_delims_t *dl, const char *s, size_t n)
{
    /* Most values need no escaping: the value is copied first and checked
     * in place (zeroed slack after it), and only from the first byte that
     * needs it does it go through the codec, escaping being byte by byte. */
    buf_reserve(b, n + PLAIN_SLACK);
    char *out = b->p + b->len;
    if (n)
        memcpy(out, s, n);
    memset(out + n, 0, PLAIN_SLACK);
    size_t plain = plain_prefix(dl, out, n);
    b->len += plain;
    if (plain == n)
        return;
    s += plain;
    n -= plain;
    size_t need = hl7_escape(dl, s, n, NULL, 0);
    buf_reserve(b, need);
    hl7_escape(dl, s, n, b->p + b->len, need);
    b->len += need;
}

slice_t hl7__buf_done(hl7__buf_t *b)
{
    buf_reserve(b, 1);
    b->p[b->len] = '\0';
    return slice_make(b->p, b->len);
}

/* ---------------------------------------------------------------- segments */

/* One value at a position; 0 in r/c/s means "the whole field/rep/comp". The
 * leaves of a segment never overlap and are kept sorted by (f, r, c, s). */
typedef struct {
    int f, r, c, s;
    const char *v;
    size_t n;
    bool raw;
} leaf_t;

struct hl7_seg {
    arena_t *a;
    hl7_delims_t dl;
    char id[4];
    bool header;
    leaf_t *leaves;
    size_t n, cap;
};

static int key_cmp(const leaf_t *x, int f, int r, int c, int s)
{
    if (x->f != f)
        return x->f < f ? -1 : 1;
    if (x->r != r)
        return x->r < r ? -1 : 1;
    if (x->c != c)
        return x->c < c ? -1 : 1;
    if (x->s != s)
        return x->s < s ? -1 : 1;
    return 0;
}

static void leaf_insert(hl7_seg_t *g, leaf_t l)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        leaf_t *nv = arena_alloc(g->a, cap * sizeof *nv);
        if (g->n)
            memcpy(nv, g->leaves, g->n * sizeof *nv);
        g->leaves = nv;
        g->cap = cap;
    }
    size_t i = g->n;
    while (i > 0 && key_cmp(&g->leaves[i - 1], l.f, l.r, l.c, l.s) > 0)
        i--;
    memmove(g->leaves + i + 1, g->leaves + i, (g->n - i) * sizeof *g->leaves);
    g->leaves[i] = l;
    g->n++;
}

static long leaf_find(const hl7_seg_t *g, int f, int r, int c, int s)
{
    for (size_t i = 0; i < g->n; i++)
        if (key_cmp(&g->leaves[i], f, r, c, s) == 0)
            return (long)i;
    return -1;
}

static void leaf_remove(hl7_seg_t *g, size_t i)
{
    memmove(g->leaves + i, g->leaves + i + 1, (g->n - i - 1) * sizeof *g->leaves);
    g->n--;
}

hl7_seg_t *hl7_seg_new(arena_t *a, const hl7_delims_t *dl, const char *id)
{
    hl7_seg_t *g = arena_calloc(a, 1, sizeof *g);
    g->a = a;
    g->dl = dl ? *dl : hl7_default_delims;
    size_t n = strlen(id);
    memcpy(g->id, id, n < 3 ? n : 3);
    g->header = n >= 3 && hl7__is_header(hl7__id(id));
    return g;
}

hl7_seg_t *hl7_seg_from(arena_t *a, const hl7_msg_t *m, size_t i)
{
    if (i >= m->nsegs)
        return NULL;
    const hl7__seg_t *s = &m->segs[i];
    char id[4] = {0};
    memcpy(id, m->base + s->off, 3);
    hl7_seg_t *g = hl7_seg_new(a, &m->dl, id);
    for (uint32_t k = g->header ? 3 : 1; k < s->nfields; k++) {
        const hl7__field_t *f = &m->fields[s->field0 + k];
        leaf_insert(g, (leaf_t){(int)k, 0, 0, 0, m->base + f->off, f->len, true});
    }
    return g;
}

/* Splits the leaf at index i into its pieces one level down. */
static void explode(hl7_seg_t *g, size_t i, int level)
{
    leaf_t l = g->leaves[i];
    leaf_remove(g, i);
    char sep = level == 0 ? g->dl.repetition : level == 1 ? g->dl.component : g->dl.subcomponent;
    hl7_iter_t it;
    hl7_iter_init(&it, slice_make(l.v ? l.v : "", l.n), l.raw ? sep : '\0');
    slice_t piece;
    int k = 0;
    while (hl7_iter_next(&it, &piece)) {
        leaf_t c = l;
        c.v = piece.ptr;
        c.n = piece.len;
        k++;
        if (level == 0)
            c.r = k;
        else if (level == 1)
            c.c = k;
        else
            c.s = k;
        leaf_insert(g, c);
        if (!l.raw)
            break; /* a plain value has no structure: it is all piece 1 */
    }
}

static err_t seg_set(hl7_seg_t *g, int f, int r, int c, int s, const char *v, size_t n, bool raw)
{
    if (s && !c)
        c = 1;
    if (c && !r)
        r = 1;
    if (f < 1 || f > HL7_PATH_MAX_NUM || r < 0 || r > HL7_PATH_MAX_NUM || c < 0 ||
        c > HL7_PATH_MAX_NUM || s < 0 || s > HL7_PATH_MAX_NUM || (g->header && f <= 2))
        return ERR_BAD_PATH;
    /* Coarser values covering the target are split first... */
    long i;
    if (r && (i = leaf_find(g, f, 0, 0, 0)) >= 0)
        explode(g, (size_t)i, 0);
    if (c && (i = leaf_find(g, f, r, 0, 0)) >= 0)
        explode(g, (size_t)i, 1);
    if (s && (i = leaf_find(g, f, r, c, 0)) >= 0)
        explode(g, (size_t)i, 2);
    /* ...and finer values inside it are dropped. */
    for (size_t k = g->n; k-- > 0;) {
        const leaf_t *x = &g->leaves[k];
        if (x->f == f && (!r || x->r == r) && (!c || x->c == c) && (!s || x->s == s))
            leaf_remove(g, k);
    }
    char *copy = arena_strndup(g->a, v ? v : "", v ? n : 0);
    leaf_insert(g, (leaf_t){f, r, c, s, copy, v ? n : 0, raw});
    return ERR_OK;
}

err_t hl7_seg_set(hl7_seg_t *s, int field, int rep, int comp, int sub, const char *v, size_t n)
{
    return seg_set(s, field, rep, comp, sub, v, n, false);
}

err_t hl7_seg_set_raw(hl7_seg_t *s, int field, int rep, int comp, int sub, const char *v,
                      size_t n)
{
    return seg_set(s, field, rep, comp, sub, v, n, true);
}

static inline void repeat(hl7__buf_t *b, char c, int n)
{
    if (n <= 0)
        return;
    buf_reserve(b, (size_t)n);
    while (n-- > 0) /* mostly one or two */
        b->p[b->len++] = c;
}

static void segw_start(hl7__segw_t *w, hl7__buf_t *b, const hl7_delims_t *dl, const char *id,
                       bool header)
{
    w->b = b;
    w->dl = dl;
    hl7__buf_put(b, id, 3);
    w->f = 0;
    w->r = w->c = w->s = 1;
    if (header) {
        char enc[6] = {dl->field,  dl->component,    dl->repetition,
                       dl->escape, dl->subcomponent, dl->truncation};
        hl7__buf_put(b, enc, dl->truncation ? 6 : 5);
        w->f = 2;
    }
}

void hl7__segw_open(hl7__segw_t *w, hl7__buf_t *b, const hl7_delims_t *dl, const char *id)
{
    /* As hl7_seg_new() takes it: up to three bytes, padded with NULs. */
    char id3[4] = {0};
    size_t n = 0;
    for (; n < 3 && id[n]; n++)
        id3[n] = id[n];
    segw_start(w, b, dl, id3, n == 3 && hl7__is_header(hl7__id(id3)));
}

void hl7__segw_put(hl7__segw_t *w, int f, int r, int c, int s, const char *v, size_t n, bool raw)
{
    r = r ? r : 1;
    c = c ? c : 1;
    s = s ? s : 1;
    if (f > w->f) {
        repeat(w->b, w->dl->field, f - w->f);
        w->f = f;
        w->r = w->c = w->s = 1;
    }
    if (r > w->r) {
        repeat(w->b, w->dl->repetition, r - w->r);
        w->r = r;
        w->c = w->s = 1;
    }
    if (c > w->c) {
        repeat(w->b, w->dl->component, c - w->c);
        w->c = c;
        w->s = 1;
    }
    if (s > w->s) {
        repeat(w->b, w->dl->subcomponent, s - w->s);
        w->s = s;
    }
    if (raw)
        hl7__buf_put(w->b, v, n);
    else
        hl7__buf_esc(w->b, w->dl, v, n);
}

/* The leaves are sorted and never overlap: written in order, the cursor
 * only moves forward. */
static void seg_write(hl7_seg_t *g, hl7__buf_t *b)
{
    hl7__segw_t w;
    segw_start(&w, b, &g->dl, g->id, g->header);
    for (size_t i = 0; i < g->n; i++) {
        const leaf_t *l = &g->leaves[i];
        hl7__segw_put(&w, l->f, l->r, l->c, l->s, l->v, l->n, l->raw);
    }
}

slice_t hl7_seg_write(hl7_seg_t *s)
{
    hl7__buf_t b;
    hl7__buf_init(&b, s->a, 128);
    seg_write(s, &b);
    return hl7__buf_done(&b);
}

/* ---------------------------------------------------------------- edits */

typedef struct ins {
    size_t before;
    hl7_seg_t *seg; /* NULL for text written beforehand */
    slice_t text;
    struct ins *next;
} ins_t;

struct hl7_edit {
    const hl7_msg_t *m;
    arena_t *a;
    hl7_seg_t **repl; /* per original segment, NULL when untouched */
    bool *drop;       /* per original segment, true when deleted */
    ins_t *ins, *tail;
};

hl7_edit_t *hl7_edit_new(const hl7_msg_t *m, arena_t *a)
{
    hl7_edit_t *e = arena_calloc(a, 1, sizeof *e);
    e->m = m;
    e->a = a;
    e->repl = arena_calloc(a, m->nsegs ? m->nsegs : 1, sizeof *e->repl);
    e->drop = arena_calloc(a, m->nsegs ? m->nsegs : 1, sizeof *e->drop);
    return e;
}

err_t hl7_edit_set(hl7_edit_t *e, const char *path, const char *v, size_t n, err_detail_t *d)
{
    hl7_path_t p;
    err_t rc = hl7_path_parse(path, path ? strlen(path) : 0, &p, d);
    if (rc != ERR_OK)
        return rc;
    long i = hl7_seg_find(e->m, p.seg, p.occ);
    if (i < 0)
        return err_set(d, ERR_NOT_FOUND, 0, "no segment %s", path);
    if (!e->repl[i])
        e->repl[i] = hl7_seg_from(e->a, e->m, (size_t)i);
    rc = hl7_seg_set(e->repl[i], p.field, p.rep, p.comp, p.sub, v, n);
    if (rc != ERR_OK)
        return err_set(d, rc, 0, "path %s cannot be set", path);
    return ERR_OK;
}

static void insert(hl7_edit_t *e, size_t before, hl7_seg_t *seg, slice_t text)
{
    ins_t *x = arena_calloc(e->a, 1, sizeof *x);
    x->before = before;
    x->seg = seg;
    x->text = text;
    if (e->tail)
        e->tail->next = x;
    else
        e->ins = x;
    e->tail = x;
}

err_t hl7_edit_insert(hl7_edit_t *e, size_t before, hl7_seg_t *seg)
{
    if (before > e->m->nsegs || !seg)
        return ERR_BAD_VALUE;
    insert(e, before, seg, SLICE_NULL);
    return ERR_OK;
}

err_t hl7__edit_insert_text(hl7_edit_t *e, size_t before, slice_t text)
{
    if (before > e->m->nsegs || !text.len)
        return ERR_BAD_VALUE;
    insert(e, before, NULL, text);
    return ERR_OK;
}

err_t hl7_edit_replace(hl7_edit_t *e, size_t i, hl7_seg_t *seg)
{
    if (i >= e->m->nsegs || !seg)
        return ERR_BAD_VALUE;
    e->repl[i] = seg;
    return ERR_OK;
}

err_t hl7_edit_delete(hl7_edit_t *e, size_t i)
{
    if (i >= e->m->nsegs)
        return ERR_BAD_VALUE;
    e->drop[i] = true;
    return ERR_OK;
}

/* Length of the segment terminator at p (\r, \n or \r\n), 0 if none. */
static size_t term_len(const char *p, size_t n)
{
    if (n == 0)
        return 0;
    if (p[0] == '\r')
        return n > 1 && p[1] == '\n' ? 2 : 1;
    return p[0] == '\n' ? 1 : 0;
}

/* Bytes of the original message waiting to be written: consecutive pieces
 * of it (a segment, its terminator, the blank lines after it, the next
 * segment...) go out in one copy. */
typedef struct {
    const char *p;
    size_t n;
} pending_t;

static void pending_flush(pending_t *q, hl7__buf_t *b)
{
    hl7__buf_put(b, q->p, q->n);
    q->n = 0;
}

static void pending_add(pending_t *q, hl7__buf_t *b, const char *p, size_t n)
{
    if (!n)
        return;
    if (q->n && q->p + q->n == p) {
        q->n += n;
        return;
    }
    pending_flush(q, b);
    q->p = p;
    q->n = n;
}

static void write_inserts(hl7_edit_t *e, size_t before, hl7__buf_t *b, pending_t *q,
                          bool *need_term)
{
    for (ins_t *x = e->ins; x; x = x->next) {
        if (x->before != before)
            continue;
        pending_flush(q, b);
        if (*need_term)
            hl7__buf_putc(b, '\r');
        if (x->seg)
            seg_write(x->seg, b);
        else
            hl7__buf_put(b, x->text.ptr, x->text.len);
        hl7__buf_putc(b, '\r');
        *need_term = false;
    }
}

slice_t hl7_edit_write(hl7_edit_t *e)
{
    const hl7_msg_t *m = e->m;
    hl7__buf_t b;
    hl7__buf_init(&b, e->a, m->len + 256);
    pending_t q = {m->base, 0};
    pending_add(&q, &b, m->base, m->prefix);
    bool need_term = false;
    const char *tail = NULL; /* blank lines after the previous segment */
    size_t tail_n = 0;
    for (size_t i = 0; i <= m->nsegs; i++) {
        /* Blank lines stay with the segment before them and inserts go right
         * before segment i: an inserted segment's \r is never followed by an
         * original \n, which would read back as one \r\n terminator. */
        pending_add(&q, &b, tail, tail_n);
        tail_n = 0;
        write_inserts(e, i, &b, &q, &need_term);
        if (i == m->nsegs)
            break;
        const hl7__seg_t *s = &m->segs[i];
        if (e->drop[i]) {
            /* Gone with its terminator; blank lines after it stay. */
            const char *t = m->base + s->off + s->len;
            size_t tn = term_len(t, s->span - s->len);
            tail = t + tn;
            tail_n = s->span - s->len - tn;
            continue;
        }
        if (need_term) {
            pending_flush(&q, &b);
            hl7__buf_putc(&b, '\r');
        }
        if (e->repl[i]) {
            pending_flush(&q, &b);
            seg_write(e->repl[i], &b);
        } else {
            pending_add(&q, &b, m->base + s->off, s->len);
        }
        const char *t = m->base + s->off + s->len;
        size_t tn = term_len(t, s->span - s->len);
        pending_add(&q, &b, t, tn);
        need_term = tn == 0;
        tail = t + tn;
        tail_n = s->span - s->len - tn;
    }
    pending_flush(&q, &b);
    return hl7__buf_done(&b);
}
