/* hl7.c - the HL7 v2 tokenizer: one pass over the caller's bytes building
 * an index of segments and fields (offsets, not copies), plus the accessors,
 * paths and the batch splitter that read through that index. The message
 * handle owns the index; the bytes stay the caller's (see hl7.h).
 */
#include "hl7_int.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "xmalloc.h"

const hl7_delims_t hl7_default_delims = {'|', '^', '~', '\\', '&', 0};

void hl7__where(err_detail_t *d, int segment, int field, const char *fmt, ...)
{
    if (!d)
        return;
    d->segment = segment;
    d->field = field;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->where, sizeof d->where, fmt, ap);
    va_end(ap);
}

/* A delimiter must be printable ASCII, not a letter, digit or space: those
 * are data, and control characters are terminators or garbage. */
static bool delim_char_ok(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !(c >= '0' && c <= '9') && !(c >= 'A' && c <= 'Z') &&
           !(c >= 'a' && c <= 'z');
}

bool hl7__delims_ok(const hl7_delims_t *dl)
{
    char c[6] = {dl->field, dl->component, dl->repetition, dl->escape, dl->subcomponent,
                 dl->truncation};
    int n = dl->truncation ? 6 : 5;
    for (int i = 0; i < n; i++) {
        if (!delim_char_ok((unsigned char)c[i]))
            return false;
        for (int j = 0; j < i; j++)
            if (c[i] == c[j])
                return false;
    }
    return true;
}

hl7_msg_t *hl7_msg_new(void)
{
    return xcalloc(1, sizeof(hl7_msg_t));
}

void hl7_msg_free(hl7_msg_t *m)
{
    if (!m)
        return;
    xfree(m->segs);
    xfree(m->fields);
    xfree(m);
}

void hl7_msg_clear(hl7_msg_t *m)
{
    m->base = NULL;
    m->len = m->prefix = 0;
    m->nsegs = m->nfields = 0;
    memset(&m->dl, 0, sizeof m->dl);
}

size_t hl7_msg_footprint(const hl7_msg_t *m)
{
    return sizeof *m + m->segs_cap * sizeof *m->segs + m->fields_cap * sizeof *m->fields;
}

static void grow_fields(hl7_msg_t *m)
{
    size_t cap = m->fields_cap ? m->fields_cap * 2 : 64;
    m->fields = xrealloc(m->fields, cap * sizeof *m->fields);
    m->fields_cap = cap;
}

static void grow_segs(hl7_msg_t *m)
{
    size_t cap = m->segs_cap ? m->segs_cap * 2 : 16;
    m->segs = xrealloc(m->segs, cap * sizeof *m->segs);
    m->segs_cap = cap;
}

static inline void push_field(hl7_msg_t *m, size_t off, size_t len)
{
    if (m->nfields == m->fields_cap)
        grow_fields(m);
    m->fields[m->nfields].off = (uint32_t)off;
    m->fields[m->nfields].len = (uint32_t)len;
    m->nfields++;
}

static inline hl7__seg_t *open_seg(hl7_msg_t *m, size_t off)
{
    if (m->nsegs == m->segs_cap)
        grow_segs(m);
    hl7__seg_t *s = &m->segs[m->nsegs++];
    s->off = (uint32_t)off;
    s->field0 = (uint32_t)m->nfields;
    s->id = hl7__id(m->base + off);
    return s;
}

static inline void close_seg(hl7_msg_t *m, size_t end, size_t next)
{
    hl7__seg_t *s = &m->segs[m->nsegs - 1];
    s->len = (uint32_t)(end - s->off);
    s->span = (uint32_t)(next - s->off);
    s->nfields = (uint32_t)(m->nfields - s->field0);
}

static err_t fail(hl7_msg_t *m, err_t e)
{
    m->nsegs = 0;
    m->nfields = 0;
    return e;
}

/* Checks the id of the segment starting at pos (not the first). */
static err_t check_id(hl7_msg_t *m, const unsigned char *p, size_t pos, size_t len, char fs,
                      err_detail_t *d)
{
    int segno = (int)m->nsegs + 1;
    size_t n = len - pos < 3 ? len - pos : 3;
    for (size_t i = 0; i < n; i++)
        if (p[pos + i] == 0) {
            err_set(d, ERR_NUL_BYTE, pos + i, "NUL byte in the id of segment %d", segno);
            hl7__where(d, segno, 0, "segment %d", segno);
            return ERR_NUL_BYTE;
        }
    bool ok = n == 3 && p[pos] >= 'A' && p[pos] <= 'Z';
    for (size_t i = 1; ok && i < 3; i++)
        ok = (p[pos + i] >= 'A' && p[pos + i] <= 'Z') || (p[pos + i] >= '0' && p[pos + i] <= '9');
    if (ok && pos + 3 < len) {
        unsigned char c = p[pos + 3];
        ok = c == (unsigned char)fs || c == '\r' || c == '\n';
    }
    if (!ok) {
        err_set(d, ERR_BAD_SEGMENT, pos,
                "segment %d does not start with a segment id (three characters A-Z, 0-9)",
                segno);
        hl7__where(d, segno, 0, "segment %d", segno);
        return ERR_BAD_SEGMENT;
    }
    uint32_t id = hl7__id((const char *)p + pos);
    if (id == hl7__id("MSH") || id == hl7__id("FHS") || id == hl7__id("BHS") ||
        id == hl7__id("BTS") || id == hl7__id("FTS")) {
        err_set(d, ERR_BAD_SEGMENT, pos,
                "%.3s as segment %d: a batch or several messages, split them first",
                (const char *)p + pos, segno);
        hl7__where(d, segno, 0, "%.3s", (const char *)p + pos);
        return ERR_BAD_SEGMENT;
    }
    return ERR_OK;
}

/* The field scan looks for the next byte that ends a field (the field
 * separator, CR, LF, or NUL, which is an error) 64 bytes at a time: the
 * bits of those bytes, and of the separators alone, are made once per block
 * (SSE2 where the compiler targets it, a table lookup elsewhere) and the
 * scan takes its set bits one by one, in registers, so the cost is per block
 * and per field rather than per byte. Blocks start at multiples of 64 from
 * the start of the message. */
typedef struct {
    uint64_t ends; /* bit i: byte blk + i ends a field */
    uint64_t seps; /* bit i: byte blk + i is the field separator */
} block_bits_t;

#if defined(__SSE2__)
static inline block_bits_t block_bits64(const unsigned char *b, unsigned char fs)
{
    block_bits_t r = {0, 0};
    const __m128i vfs = _mm_set1_epi8((char)fs), cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n'),
                  nul = _mm_setzero_si128();
    for (int k = 0; k < 4; k++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + 16 * k));
        __m128i sep = _mm_cmpeq_epi8(v, vfs);
        __m128i end = _mm_or_si128(_mm_or_si128(sep, _mm_cmpeq_epi8(v, cr)),
                                   _mm_or_si128(_mm_cmpeq_epi8(v, lf), _mm_cmpeq_epi8(v, nul)));
        r.seps |= (uint64_t)(uint16_t)_mm_movemask_epi8(sep) << (16 * k);
        r.ends |= (uint64_t)(uint16_t)_mm_movemask_epi8(end) << (16 * k);
    }
    return r;
}

/* The last block, short of 64 bytes: padded with a byte that ends no field
 * (the separator is printable ASCII), which costs less than a byte loop.
 * Apart, so that the scan's loop stays small. */
static __attribute__((noinline)) block_bits_t block_bits_tail(const unsigned char *b, size_t n,
                                                              unsigned char fs)
{
    unsigned char tail[64];
    memcpy(tail, b, n);
    memset(tail + n, 0xff, sizeof tail - n);
    return block_bits64(tail, fs);
}
#endif

static inline block_bits_t block_bits(const unsigned char *p, size_t len, size_t blk,
                                      unsigned char fs, const unsigned char *cls)
{
    const unsigned char *b = p + blk;
    size_t n = len - blk;
#if defined(__SSE2__)
    (void)cls;
    return n >= 64 ? block_bits64(b, fs) : block_bits_tail(b, n, fs);
#else
    (void)fs;
    block_bits_t r = {0, 0};
    if (n > 64)
        n = 64;
    for (size_t i = 0; i < n; i++) {
        r.ends |= (uint64_t)(cls[b[i]] != 0) << i;
        r.seps |= (uint64_t)(cls[b[i]] == 1) << i;
    }
    return r;
#endif
}

/* Room for FIELDS_PER_BLOCK more fields: one per bit of a block, and the
 * last field of the message, which ends at its end rather than at a bit. */
#define FIELDS_PER_BLOCK 65

static void reserve_fields(hl7_msg_t *m, size_t nfields)
{
    m->nfields = nfields;
    while (m->fields_cap - nfields < FIELDS_PER_BLOCK)
        grow_fields(m);
}

err_t hl7_msg_parse(hl7_msg_t *m, const char *data, size_t len, const hl7_opts_t *opts,
                    err_detail_t *d)
{
    hl7_opts_t o = opts ? *opts : (hl7_opts_t){0};
    size_t max = o.max_size ? o.max_size : HL7_DEFAULT_MAX_SIZE;
    if (max > UINT32_MAX - 1)
        max = UINT32_MAX - 1;
    err_clear(d);
    m->base = data;
    m->len = len;
    m->prefix = 0;
    m->nsegs = m->nfields = 0;
    m->dl = hl7_default_delims;
    if (!data || len == 0)
        return fail(m, err_set(d, ERR_EMPTY, 0, "empty message"));
    if (len > max)
        return fail(m, err_set(d, ERR_TOO_LARGE, max,
                               "message of %zu bytes exceeds the limit of %zu bytes", len, max));

    const unsigned char *p = (const unsigned char *)data;
    size_t pos = 0;
    while (pos < len && (p[pos] == '\r' || p[pos] == '\n'))
        pos++;
    if (pos == len)
        return fail(m, err_set(d, ERR_EMPTY, 0, "message holds only segment terminators"));
    if (o.strict && pos > 0) {
        err_set(d, p[0] == '\n' ? ERR_BAD_TERMINATOR : ERR_BAD_SEGMENT, 0,
                "empty lines before MSH (strict mode)");
        hl7__where(d, 1, 0, "MSH");
        return fail(m, d ? d->code : ERR_BAD_SEGMENT);
    }
    m->prefix = pos;

    /* MSH, MSH-1, MSH-2: the one place where delimiters are not yet known. */
    size_t avail = len - pos;
    if (avail < 4) {
        size_t n = avail < 3 ? avail : 3;
        if (memcmp(p + pos, "MSH", n) == 0) {
            err_set(d, ERR_TRUNCATED, len, "input ends before MSH-1");
            hl7__where(d, 1, 1, "MSH-1");
            return fail(m, ERR_TRUNCATED);
        }
    }
    if (avail < 3 || memcmp(p + pos, "MSH", 3) != 0) {
        if (memchr(p + pos, 0, avail < 3 ? avail : 3))
            return fail(m, err_set(d, ERR_NUL_BYTE, pos, "NUL byte where MSH was expected"));
        err_set(d, ERR_NO_MSH, pos, "the first segment is not MSH");
        hl7__where(d, 1, 0, "segment 1");
        return fail(m, ERR_NO_MSH);
    }
    unsigned char fs = p[pos + 3];
    if (!delim_char_ok(fs)) {
        err_set(d, fs ? ERR_BAD_DELIMS : ERR_NUL_BYTE, pos + 3,
                "MSH-1 (field separator) is not a printable non-alphanumeric character");
        hl7__where(d, 1, 1, "MSH-1");
        return fail(m, d ? d->code : ERR_BAD_DELIMS);
    }
    size_t enc = pos + 4, e = enc;
    while (e < len && e - enc < 6 && p[e] != fs && p[e] != '\r' && p[e] != '\n' && p[e] != 0)
        e++;
    size_t nenc = e - enc;
    if (e == len && nenc < 4) {
        err_set(d, ERR_TRUNCATED, len, "input ends inside MSH-2 (encoding characters)");
        hl7__where(d, 1, 2, "MSH-2");
        return fail(m, ERR_TRUNCATED);
    }
    if (e < len && p[e] == 0 && nenc < 6) {
        err_set(d, ERR_NUL_BYTE, e, "NUL byte in MSH-2");
        hl7__where(d, 1, 2, "MSH-2");
        return fail(m, ERR_NUL_BYTE);
    }
    m->dl.field = (char)fs;
    if (nenc >= 4) {
        m->dl.component = (char)p[enc];
        m->dl.repetition = (char)p[enc + 1];
        m->dl.escape = (char)p[enc + 2];
        m->dl.subcomponent = (char)p[enc + 3];
        m->dl.truncation = nenc == 5 ? (char)p[enc + 4] : 0;
    }
    if (nenc < 4 || nenc > 5 || !hl7__delims_ok(&m->dl)) {
        err_set(d, ERR_BAD_DELIMS, enc,
                "MSH-2 must hold 4 or 5 distinct printable non-alphanumeric encoding "
                "characters, different from MSH-1");
        hl7__where(d, 1, 2, "MSH-2");
        m->dl = hl7_default_delims;
        return fail(m, ERR_BAD_DELIMS);
    }

    if (!m->fields_cap || m->fields_cap < len / 16) {
        size_t want = len / 8 + 64;
        m->fields = xrealloc(m->fields, want * sizeof *m->fields);
        m->fields_cap = want;
    }
    open_seg(m, pos);
    push_field(m, pos, 3);
    push_field(m, pos + 3, 1);
    push_field(m, enc, nenc);
    pos = e;

#if defined(__SSE2__)
    const unsigned char *cls = NULL; /* the SSE2 scan compares the bytes itself */
#else
    unsigned char cls[256]; /* nonzero for the bytes that end a field; 1: the separator */
    memset(cls, 0, sizeof cls);
    cls[fs] = 1;
    cls['\r'] = 2;
    cls['\n'] = 2;
    cls[0] = 3;
#endif
    /* The scan's state: the block at blk (SIZE_MAX before the first), its
     * bits, and those of its bits not taken yet. */
    size_t blk = SIZE_MAX;
    block_bits_t bits = {0, 0};
    uint64_t rest = 0;
    size_t fstart;
    if (pos < len && p[pos] == fs) {
        pos++;
        fstart = pos;
    } else {
        fstart = SIZE_MAX; /* MSH ends right after MSH-2 */
    }

    for (;;) {
        if (fstart != SIZE_MAX) {
            /* The fields of one segment, from pos, with the array, its count
             * and the scan in locals: through m, every field stored made the
             * compiler load them again (m->fields could alias m). Every
             * block loaded comes with room for all the fields it can end
             * (FIELDS_PER_BLOCK), so that storing one needs no check. */
            if (m->fields_cap - m->nfields < FIELDS_PER_BLOCK)
                reserve_fields(m, m->nfields);
            if (pos >= len) {
                blk = (len + 63) & ~(size_t)63; /* past the end: no bits */
                rest = 0;
            } else {
                if ((pos & ~(size_t)63) != blk) {
                    blk = pos & ~(size_t)63;
                    bits = block_bits(p, len, blk, fs, cls);
                }
                rest = bits.ends & (~(uint64_t)0 << (pos - blk));
            }
            hl7__field_t *fields = m->fields;
            size_t nfields = m->nfields;
            for (;;) {
                while (!rest && blk + 64 < len) {
                    blk += 64;
                    bits = block_bits(p, len, blk, fs, cls);
                    rest = bits.ends;
                    if (m->fields_cap - nfields < FIELDS_PER_BLOCK) {
                        reserve_fields(m, nfields);
                        fields = m->fields;
                    }
                }
                bool sep = false;
                if (rest) {
                    unsigned bit = (unsigned)__builtin_ctzll(rest);
                    rest &= rest - 1;
                    pos = blk + bit;
                    sep = (bits.seps >> bit) & 1;
                } else {
                    pos = len;
                }
                fields[nfields].off = (uint32_t)fstart;
                fields[nfields].len = (uint32_t)(pos - fstart);
                nfields++;
                if (!sep)
                    break;
                fstart = pos + 1;
            }
            m->nfields = nfields;
            if (pos == len) {
                close_seg(m, len, len);
                break;
            }
            if (p[pos] == 0) {
                hl7__seg_t *s = &m->segs[m->nsegs - 1];
                int fno = (int)(m->nfields - s->field0 - 1);
                err_set(d, ERR_NUL_BYTE, pos, "NUL byte in segment %zu", m->nsegs);
                hl7__where(d, (int)m->nsegs, fno, "%.3s-%d", data + s->off, fno);
                return fail(m, ERR_NUL_BYTE);
            }
        }
        fstart = 0;
        /* pos is at a terminator, or at the end. */
        size_t seg_end = pos;
        if (pos < len) {
            if (p[pos] == '\n' || (p[pos] == '\r' && pos + 1 < len && p[pos + 1] == '\n')) {
                if (o.strict) {
                    err_set(d, ERR_BAD_TERMINATOR, pos,
                            "segment %zu ends with a line feed; strict mode accepts only CR",
                            m->nsegs);
                    hl7__where(d, (int)m->nsegs, 0, "%.3s", data + m->segs[m->nsegs - 1].off);
                    return fail(m, ERR_BAD_TERMINATOR);
                }
                pos += p[pos] == '\r' ? 2 : 1;
            } else if (p[pos] == '\r') {
                pos++;
            } else if (p[pos] == 0) {
                err_set(d, ERR_NUL_BYTE, pos, "NUL byte in MSH-2");
                hl7__where(d, 1, 2, "MSH-2");
                return fail(m, ERR_NUL_BYTE);
            }
        }
        size_t after = pos;
        while (pos < len && (p[pos] == '\r' || p[pos] == '\n')) {
            if (o.strict && p[pos] == '\n') {
                err_set(d, ERR_BAD_TERMINATOR, pos,
                        "line feed after segment %zu; strict mode accepts only CR", m->nsegs);
                hl7__where(d, (int)m->nsegs, 0, "%.3s", data + m->segs[m->nsegs - 1].off);
                return fail(m, ERR_BAD_TERMINATOR);
            }
            pos++;
        }
        if (pos >= len) {
            close_seg(m, seg_end, len);
            break;
        }
        if (o.strict && pos > after) {
            err_set(d, ERR_BAD_SEGMENT, after, "empty segment after segment %zu (strict mode)",
                    m->nsegs);
            hl7__where(d, (int)m->nsegs + 1, 0, "segment %zu", m->nsegs + 1);
            return fail(m, ERR_BAD_SEGMENT);
        }
        close_seg(m, seg_end, pos);
        err_t rc = check_id(m, p, pos, len, (char)fs, d);
        if (rc != ERR_OK)
            return fail(m, rc);
        open_seg(m, pos);
        /* The id is field 0; the scan above handles it like any field. */
        fstart = pos;
    }
    return ERR_OK;
}

err_t hl7_parse(const char *data, size_t len, const hl7_opts_t *opts, hl7_msg_t **out,
                err_detail_t *d)
{
    hl7_msg_t *m = hl7_msg_new();
    err_t rc = hl7_msg_parse(m, data, len, opts, d);
    if (rc != ERR_OK) {
        hl7_msg_free(m);
        m = NULL;
    }
    *out = m;
    return rc;
}

const hl7_delims_t *hl7_msg_delims(const hl7_msg_t *m)
{
    return &m->dl;
}

slice_t hl7_msg_bytes(const hl7_msg_t *m)
{
    return slice_make(m->base, m->len);
}

/* ---------------------------------------------------------------- access */

size_t hl7_seg_count(const hl7_msg_t *m)
{
    return m->nsegs;
}

slice_t hl7_seg_id(const hl7_msg_t *m, size_t i)
{
    if (i >= m->nsegs)
        return SLICE_NULL;
    return slice_make(m->base + m->segs[i].off, 3);
}

slice_t hl7_seg_text(const hl7_msg_t *m, size_t i)
{
    if (i >= m->nsegs)
        return SLICE_NULL;
    return slice_make(m->base + m->segs[i].off, m->segs[i].len);
}

size_t hl7_seg_offset(const hl7_msg_t *m, size_t i)
{
    return i < m->nsegs ? m->segs[i].off : m->len;
}

long hl7_seg_find(const hl7_msg_t *m, const char *id, int occ)
{
    if (!id || strlen(id) != 3 || occ < 1)
        return -1;
    uint32_t want = hl7__id(id);
    for (size_t i = 0; i < m->nsegs; i++)
        if (m->segs[i].id == want && --occ == 0)
            return (long)i;
    return -1;
}

int hl7_field_count(const hl7_msg_t *m, size_t i)
{
    if (i >= m->nsegs)
        return 0;
    return (int)m->segs[i].nfields - 1;
}

slice_t hl7_field(const hl7_msg_t *m, size_t i, int n)
{
    if (i >= m->nsegs)
        return SLICE_NULL;
    const hl7__seg_t *s = &m->segs[i];
    if (n < 0 || (uint32_t)n >= s->nfields)
        return slice_make(m->base + s->off + s->len, 0);
    const hl7__field_t *f = &m->fields[s->field0 + (uint32_t)n];
    return slice_make(m->base + f->off, f->len);
}

slice_t hl7_piece(slice_t s, char sep, int n)
{
    const char *p = s.ptr, *end = s.ptr + s.len;
    if (!p || n < 1)
        return slice_make(end, 0);
    while (--n > 0) {
        const char *q = memchr(p, sep, (size_t)(end - p));
        if (!q)
            return slice_make(end, 0);
        p = q + 1;
    }
    const char *q = memchr(p, sep, (size_t)(end - p));
    return slice_make(p, (size_t)((q ? q : end) - p));
}

int hl7_piece_count(slice_t s, char sep)
{
    int n = 1;
    const char *p = s.ptr, *end = s.ptr + s.len;
    while (p && p < end) {
        const char *q = memchr(p, sep, (size_t)(end - p));
        if (!q)
            break;
        n++;
        p = q + 1;
    }
    return n;
}

void hl7_iter_init(hl7_iter_t *it, slice_t s, char sep)
{
    it->p = s.ptr;
    it->end = s.ptr + s.len;
    it->sep = sep;
    it->done = s.ptr == NULL;
}

bool hl7_iter_next(hl7_iter_t *it, slice_t *piece)
{
    if (it->done)
        return false;
    const char *q = memchr(it->p, it->sep, (size_t)(it->end - it->p));
    if (!q) {
        *piece = slice_make(it->p, (size_t)(it->end - it->p));
        it->done = true;
        return true;
    }
    *piece = slice_make(it->p, (size_t)(q - it->p));
    it->p = q + 1;
    return true;
}

slice_t hl7_value(const hl7_msg_t *m, size_t i, int field, int rep, int comp, int sub)
{
    slice_t v = hl7_field(m, i, field);
    if (!v.ptr || field == 0)
        return v;
    if (field <= 2 && hl7__is_header(m->segs[i].id)) {
        if (rep > 1 || comp > 1 || sub > 1)
            return slice_make(v.ptr + v.len, 0);
        return v;
    }
    if (sub && !comp)
        comp = 1;
    if (comp && !rep)
        rep = 1;
    if (rep)
        v = hl7_piece(v, m->dl.repetition, rep);
    if (comp)
        v = hl7_piece(v, m->dl.component, comp);
    if (sub)
        v = hl7_piece(v, m->dl.subcomponent, sub);
    return v;
}

hl7_kind_t hl7_value_kind(slice_t v)
{
    if (v.len == 0)
        return HL7_EMPTY;
    if (v.len == 2 && v.ptr[0] == '"' && v.ptr[1] == '"')
        return HL7_NULL;
    return HL7_PRESENT;
}

/* ---------------------------------------------------------------- paths */

static bool is_upper(char c)
{
    return c >= 'A' && c <= 'Z';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool path_num(const char *s, size_t len, size_t *i, int *out)
{
    long v = 0;
    size_t start = *i;
    while (*i < len && is_digit(s[*i])) {
        v = v * 10 + (s[*i] - '0');
        if (v > HL7_PATH_MAX_NUM)
            return false;
        (*i)++;
    }
    if (*i == start || v < 1)
        return false;
    *out = (int)v;
    return true;
}

err_t hl7_path_parse(const char *s, size_t len, hl7_path_t *p, err_detail_t *d)
{
    memset(p, 0, sizeof *p);
    p->occ = 1;
    size_t i = 0;
    if (!s || len < 3 || !is_upper(s[0]) || !(is_upper(s[1]) || is_digit(s[1])) ||
        !(is_upper(s[2]) || is_digit(s[2])))
        goto bad;
    memcpy(p->seg, s, 3);
    i = 3;
    if (i < len && s[i] == '(') {
        i++;
        if (!path_num(s, len, &i, &p->occ) || i >= len || s[i] != ')')
            goto bad;
        i++;
    }
    if (i == len)
        return ERR_OK;
    if (s[i] != '-')
        goto bad;
    i++;
    if (!path_num(s, len, &i, &p->field))
        goto bad;
    if (i < len && s[i] == '(') {
        i++;
        if (!path_num(s, len, &i, &p->rep) || i >= len || s[i] != ')')
            goto bad;
        i++;
    }
    if (i < len && s[i] == '.') {
        i++;
        if (!path_num(s, len, &i, &p->comp))
            goto bad;
        if (i < len && s[i] == '.') {
            i++;
            if (!path_num(s, len, &i, &p->sub))
                goto bad;
        }
    }
    if (i == len)
        return ERR_OK;
bad:
    memset(p, 0, sizeof *p);
    err_set(d, ERR_BAD_PATH, i,
            "malformed path at character %zu: expected SEG[(n)][-field[(rep)][.comp[.sub]]]", i);
    return ERR_BAD_PATH;
}

void hl7_path_format(const hl7_path_t *p, char *out, size_t cap)
{
    if (!cap)
        return;
    int n = snprintf(out, cap, "%.3s", p->seg);
#define PF(...)                                                                                   \
    do {                                                                                          \
        if (n >= 0 && (size_t)n < cap)                                                            \
            n += snprintf(out + n, cap - (size_t)n, __VA_ARGS__);                                 \
    } while (0)
    if (p->occ > 1)
        PF("(%d)", p->occ);
    if (p->field) {
        PF("-%d", p->field);
        if (p->rep)
            PF("(%d)", p->rep);
        if (p->comp) {
            PF(".%d", p->comp);
            if (p->sub)
                PF(".%d", p->sub);
        }
    }
#undef PF
}

err_t hl7_get_path(const hl7_msg_t *m, const hl7_path_t *p, slice_t *out)
{
    *out = SLICE_NULL;
    long i = hl7_seg_find(m, p->seg, p->occ);
    if (i < 0)
        return ERR_NOT_FOUND;
    if (p->field == 0)
        *out = hl7_seg_text(m, (size_t)i);
    else
        *out = hl7_value(m, (size_t)i, p->field, p->rep, p->comp, p->sub);
    return ERR_OK;
}

err_t hl7_get(const hl7_msg_t *m, const char *path, slice_t *out)
{
    hl7_path_t p;
    *out = SLICE_NULL;
    err_t rc = hl7_path_parse(path, path ? strlen(path) : 0, &p, NULL);
    if (rc != ERR_OK)
        return rc;
    return hl7_get_path(m, &p, out);
}

/* ---------------------------------------------------------------- batches */

static bool seg_is(const unsigned char *p, size_t n, const char *id)
{
    return n >= 3 && memcmp(p, id, 3) == 0 &&
           (n == 3 || !(is_upper((char)p[3]) || is_digit((char)p[3]) ||
                        (p[3] >= 'a' && p[3] <= 'z')));
}

/* Field 1 of a BTS/FTS as a count: -1 when empty or not a plain number. */
static long trailer_count(const unsigned char *p, size_t n)
{
    if (n < 5)
        return -1;
    unsigned char sep = p[3];
    long v = 0;
    size_t i = 4;
    for (; i < n && p[i] != sep; i++) {
        if (!is_digit((char)p[i]) || v > 100000000)
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return i == 4 ? -1 : v;
}

typedef struct {
    slice_t *v;
    size_t n, cap;
    arena_t *a;
} msg_list_t;

static void list_push(msg_list_t *l, const char *p, size_t n)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        slice_t *nv = arena_alloc(l->a, cap * sizeof *nv);
        if (l->n)
            memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = slice_make(p, n);
}

static err_t batch_err(err_detail_t *d, size_t off, int segno, const unsigned char *seg,
                       size_t seg_n, const char *fmt, const char *what)
{
    err_set(d, ERR_BAD_BATCH, off, fmt, what, segno);
    /* Name the segment by its id only when it is one: never echo content. */
    if (seg_n >= 3 && is_upper((char)seg[0]) && (is_upper((char)seg[1]) || is_digit((char)seg[1])) &&
        (is_upper((char)seg[2]) || is_digit((char)seg[2])))
        hl7__where(d, segno, 0, "%.3s", (const char *)seg);
    else
        hl7__where(d, segno, 0, "segment %d", segno);
    return ERR_BAD_BATCH;
}

err_t hl7_batch_split(const char *data, size_t len, const hl7_opts_t *opts, arena_t *a,
                      slice_t **msgs, size_t *nmsgs, err_detail_t *d)
{
    hl7_opts_t o = opts ? *opts : (hl7_opts_t){0};
    size_t max = o.max_size ? o.max_size : HL7_DEFAULT_MAX_SIZE;
    *msgs = NULL;
    *nmsgs = 0;
    err_clear(d);
    if (!data || !len)
        return err_set(d, ERR_EMPTY, 0, "empty input");
    if (len > max)
        return err_set(d, ERR_TOO_LARGE, max, "input of %zu bytes exceeds the limit of %zu bytes",
                       len, max);
    const unsigned char *p = (const unsigned char *)data;
    msg_list_t list = {NULL, 0, 0, a};
    bool in_msg = false, in_batch = false, batch_explicit = false, file_closed = false;
    bool seen_segment = false;
    size_t msg_start = 0, msg_end = 0, batch_msgs = 0, nbatches = 0;
    int segno = 0;
    size_t pos = 0;
    while (pos < len) {
        size_t start = pos;
        while (pos < len && p[pos] != '\r' && p[pos] != '\n')
            pos++;
        size_t n = pos - start;
        if (pos < len)
            pos += (p[pos] == '\r' && pos + 1 < len && p[pos + 1] == '\n') ? 2 : 1;
        if (n == 0)
            continue;
        segno++;
        const unsigned char *s = p + start;
        if (file_closed)
            return batch_err(d, start, segno, s, n, "%s: segment %d comes after FTS", "segment");
        bool is_msh = seg_is(s, n, "MSH"), is_fhs = seg_is(s, n, "FHS");
        bool is_bhs = seg_is(s, n, "BHS"), is_bts = seg_is(s, n, "BTS");
        bool is_fts = seg_is(s, n, "FTS");
        if (is_msh || is_fhs || is_bhs || is_bts || is_fts) {
            if (in_msg) {
                list_push(&list, data + msg_start, msg_end - msg_start);
                batch_msgs++;
                in_msg = false;
            }
        } else {
            if (!in_msg)
                return batch_err(d, start, segno, s, n,
                                 "%s: segment %d is outside any message (no MSH before it)",
                                 "envelope");
            msg_end = pos;
            continue;
        }
        if (is_fhs) {
            if (seen_segment)
                return batch_err(d, start, segno, s, n, "%s: segment %d, FHS must come first",
                                 "FHS");
        } else if (is_bhs) {
            if (in_batch && batch_explicit)
                return batch_err(d, start, segno, s, n,
                                 "%s at segment %d while a batch is open (BTS missing)", "BHS");
            if (in_batch && !batch_explicit && batch_msgs)
                return batch_err(d, start, segno, s, n,
                                 "%s at segment %d after messages outside a batch", "BHS");
            in_batch = batch_explicit = true;
            batch_msgs = 0;
            nbatches++;
        } else if (is_msh) {
            if (!in_batch) {
                in_batch = true;
                batch_explicit = false;
                batch_msgs = 0;
                nbatches++;
            }
            in_msg = true;
            msg_start = start;
            msg_end = pos;
        } else if (is_bts) {
            if (!in_batch)
                return batch_err(d, start, segno, s, n, "%s at segment %d closes no batch", "BTS");
            long want = trailer_count(s, n);
            if (want >= 0 && (size_t)want != batch_msgs) {
                err_set(d, ERR_BAD_BATCH, start,
                        "BTS-1 says %ld messages but the batch holds %zu", want, batch_msgs);
                hl7__where(d, segno, 1, "BTS-1");
                return ERR_BAD_BATCH;
            }
            in_batch = false;
        } else { /* FTS */
            long want = trailer_count(s, n);
            if (want >= 0 && (size_t)want != nbatches) {
                err_set(d, ERR_BAD_BATCH, start, "FTS-1 says %ld batches but the file holds %zu",
                        want, nbatches);
                hl7__where(d, segno, 1, "FTS-1");
                return ERR_BAD_BATCH;
            }
            in_batch = false;
            file_closed = true;
        }
        seen_segment = true;
    }
    if (in_msg)
        list_push(&list, data + msg_start, msg_end - msg_start);
    if (list.n == 0) {
        if (segno == 0)
            return err_set(d, ERR_EMPTY, 0, "input holds only segment terminators");
        err_set(d, ERR_BAD_BATCH, 0, "no message (MSH) in the input");
        hl7__where(d, 0, 0, "MSH");
        return ERR_BAD_BATCH;
    }
    *msgs = list.v;
    *nmsgs = list.n;
    return ERR_OK;
}
