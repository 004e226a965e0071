/* hl7_write.c - the HL7 v2 writer: segments built (or copied from a parsed
 * message and changed) as sorted lists of positioned values, and edits of a
 * parsed message written out with every untouched segment byte-identical.
 * Everything here lives in the caller's arena; values set with
 * hl7_seg_set*() are copied there, values taken by hl7_seg_from() borrow the
 * message's buffer, which must outlive the write.
 */
#include "hl7_int.h"

#include <string.h>

/* ---------------------------------------------------------------- buffer */

void hl7__buf_init(hl7__buf_t *b, arena_t *a, size_t hint)
{
    b->a = a;
    b->cap = hint < 64 ? 64 : hint;
    b->p = arena_alloc(a, b->cap);
    b->len = 0;
}

static void buf_reserve(hl7__buf_t *b, size_t n)
{
    if (b->cap - b->len > n)
        return;
    size_t cap = b->cap * 2;
    while (cap - b->len <= n)
        cap *= 2;
    char *np = arena_alloc(b->a, cap);
    memcpy(np, b->p, b->len);
    b->p = np;
    b->cap = cap;
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

void hl7__buf_esc(hl7__buf_t *b, const hl7_delims_t *dl, const char *s, size_t n)
{
    size_t need = hl7_escape(dl, s, n, NULL, 0);
    buf_reserve(b, need);
    if (need == n) /* every escape is longer than its character: none here */
        memcpy(b->p + b->len, s, n);
    else
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

static void repeat(hl7__buf_t *b, char c, int n)
{
    while (n-- > 0)
        hl7__buf_putc(b, c);
}

static void seg_write(hl7_seg_t *g, hl7__buf_t *b)
{
    hl7__buf_put(b, g->id, 3);
    int cf = 0, cr = 1, cc = 1, cs = 1;
    if (g->header) {
        char enc[6] = {g->dl.field, g->dl.component, g->dl.repetition, g->dl.escape,
                       g->dl.subcomponent, g->dl.truncation};
        hl7__buf_put(b, enc, g->dl.truncation ? 6 : 5);
        cf = 2;
    }
    for (size_t i = 0; i < g->n; i++) {
        const leaf_t *l = &g->leaves[i];
        int r = l->r ? l->r : 1, c = l->c ? l->c : 1, s = l->s ? l->s : 1;
        if (l->f > cf) {
            repeat(b, g->dl.field, l->f - cf);
            cf = l->f;
            cr = cc = cs = 1;
        }
        if (r > cr) {
            repeat(b, g->dl.repetition, r - cr);
            cr = r;
            cc = cs = 1;
        }
        if (c > cc) {
            repeat(b, g->dl.component, c - cc);
            cc = c;
            cs = 1;
        }
        if (s > cs) {
            repeat(b, g->dl.subcomponent, s - cs);
            cs = s;
        }
        if (l->raw)
            hl7__buf_put(b, l->v, l->n);
        else
            hl7__buf_esc(b, &g->dl, l->v, l->n);
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
    hl7_seg_t *seg;
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

err_t hl7_edit_insert(hl7_edit_t *e, size_t before, hl7_seg_t *seg)
{
    if (before > e->m->nsegs || !seg)
        return ERR_BAD_VALUE;
    ins_t *x = arena_calloc(e->a, 1, sizeof *x);
    x->before = before;
    x->seg = seg;
    if (e->tail)
        e->tail->next = x;
    else
        e->ins = x;
    e->tail = x;
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

static void write_inserts(hl7_edit_t *e, size_t before, hl7__buf_t *b, bool *need_term)
{
    for (ins_t *x = e->ins; x; x = x->next) {
        if (x->before != before)
            continue;
        if (*need_term)
            hl7__buf_putc(b, '\r');
        seg_write(x->seg, b);
        hl7__buf_putc(b, '\r');
        *need_term = false;
    }
}

slice_t hl7_edit_write(hl7_edit_t *e)
{
    const hl7_msg_t *m = e->m;
    hl7__buf_t b;
    hl7__buf_init(&b, e->a, m->len + 256);
    hl7__buf_put(&b, m->base, m->prefix);
    bool need_term = false;
    const char *tail = NULL; /* blank lines after the previous segment */
    size_t tail_n = 0;
    for (size_t i = 0; i <= m->nsegs; i++) {
        /* Blank lines stay with the segment before them and inserts go right
         * before segment i: an inserted segment's \r is never followed by an
         * original \n, which would read back as one \r\n terminator. */
        hl7__buf_put(&b, tail, tail_n);
        tail_n = 0;
        write_inserts(e, i, &b, &need_term);
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
        if (need_term)
            hl7__buf_putc(&b, '\r');
        if (e->repl[i])
            seg_write(e->repl[i], &b);
        else
            hl7__buf_put(&b, m->base + s->off, s->len);
        const char *t = m->base + s->off + s->len;
        size_t tn = term_len(t, s->span - s->len);
        hl7__buf_put(&b, t, tn);
        need_term = tn == 0;
        tail = t + tn;
        tail_n = s->span - s->len - tn;
    }
    return hl7__buf_done(&b);
}
