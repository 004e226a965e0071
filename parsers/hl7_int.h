/* hl7_int.h - internals shared by the HL7 v2 files of parsers/ (tokenizer,
 * writer, escape codec). No other folder includes this: everything outside
 * goes through hl7.h. The index stores 32-bit offsets from the start of the
 * input, which is why inputs are capped below 4 GiB.
 */
#ifndef SPINEGATE_HL7_INT_H
#define SPINEGATE_HL7_INT_H

#include <stdint.h>

#include "hl7.h"

typedef struct {
    uint32_t off;    /* offset of the segment id */
    uint32_t len;    /* text length, terminator excluded */
    uint32_t span;   /* bytes up to the next segment (terminator, blank lines) */
    uint32_t field0; /* index of the id in the field table */
    uint32_t nfields; /* entries in the field table, the id included */
    uint32_t id;     /* the three id bytes, packed by hl7__id() */
} hl7__seg_t;

typedef struct {
    uint32_t off, len;
} hl7__field_t;

struct hl7_msg {
    const char *base;
    size_t len;
    size_t prefix; /* blank lines before MSH (lenient mode) */
    hl7_delims_t dl;
    hl7__seg_t *segs;
    size_t nsegs, segs_cap;
    hl7__field_t *fields;
    size_t nfields, fields_cap;
};

static inline uint32_t hl7__id(const char *p)
{
    return (uint32_t)(unsigned char)p[0] | (uint32_t)(unsigned char)p[1] << 8 |
           (uint32_t)(unsigned char)p[2] << 16;
}

/* True for ids whose field 1 is the separator and field 2 the encoding
 * characters. */
static inline bool hl7__is_header(uint32_t id)
{
    return id == hl7__id("MSH") || id == hl7__id("FHS") || id == hl7__id("BHS");
}

/* Validates a delimiter set: distinct, printable, not alphanumeric. */
bool hl7__delims_ok(const hl7_delims_t *dl);

/* A growable byte buffer in an arena (the old copy is abandoned on growth),
 * for writers: segments, edited messages, ACKs. */
typedef struct {
    arena_t *a;
    char *p;
    size_t len, cap;
} hl7__buf_t;

void hl7__buf_init(hl7__buf_t *b, arena_t *a, size_t hint);
void hl7__buf_put(hl7__buf_t *b, const char *s, size_t n);
void hl7__buf_putc(hl7__buf_t *b, char c);
/* Appends s escaped for dl (see hl7_escape()). */
void hl7__buf_esc(hl7__buf_t *b, const hl7_delims_t *dl, const char *s, size_t n);
/* NUL-terminates (not counted in len) and returns the text as a slice. */
slice_t hl7__buf_done(hl7__buf_t *b);

/* A segment written straight into a buffer, value by value: what
 * hl7_seg_write() gives for a segment with the same values set, without
 * building it first (ACKs and annotation, on every message). */
typedef struct {
    hl7__buf_t *b;
    const hl7_delims_t *dl; /* borrowed until the segment is written */
    int f, r, c, s;         /* where the last value ended */
} hl7__segw_t;

/* Starts segment id (as hl7_seg_new() takes it) at the end of b. */
void hl7__segw_open(hl7__segw_t *w, hl7__buf_t *b, const hl7_delims_t *dl, const char *id);
/* Writes the n bytes at v at a position as hl7_seg_set() (escaped) or
 * hl7_seg_set_raw() (raw) takes it. Positions must be valid there, and
 * increase from call to call without one holding another (field 3, then
 * 3.1.2 is not allowed). */
void hl7__segw_put(hl7__segw_t *w, int f, int r, int c, int s, const char *v, size_t n, bool raw);

/* Inserts text written beforehand (whole segments, each but the last
 * followed by \r) before segment `before`, as hl7_edit_insert() does a
 * segment. text must outlive the edit. Errors: ERR_BAD_VALUE (before out
 * of range, text empty). */
err_t hl7__edit_insert_text(hl7_edit_t *e, size_t before, slice_t text);

/* Fills d's location fields (segment 1-based, field, where) in one call. */
void hl7__where(err_detail_t *d, int segment, int field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
