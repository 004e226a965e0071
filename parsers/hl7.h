/* hl7.h - the HL7 v2 tokenizer, accessors, escape codec, batch splitter and
 * writer (the parsers/ module's public header for HL7 v2).
 *
 * Ownership and lifetimes:
 *  - hl7_parse() reads a message IN PLACE. The message never copies the bytes:
 *    every slice it hands out points into the caller's buffer, which must
 *    stay unchanged and alive until hl7_msg_free() (a buf_t reference is the
 *    usual owner). The message owns only its index (three xmalloc blocks:
 *    the handle, the segment table and the field table, grown geometrically
 *    and reused when the handle is parsed into again), so parsing costs no
 *    allocation per field and none at all once a reused handle is warm.
 *  - Slices are raw wire text: still escaped, not NUL-terminated. Decode one
 *    with hl7_unescape() into a caller buffer or hl7_unescape_arena().
 *  - Everything the writer side produces (segments under construction, edits,
 *    output text, batch slice arrays) lives in the arena_t the caller passes
 *    and dies with it; nothing there is freed on its own.
 *  - Out-params are cleared on failure; free functions accept NULL.
 *
 * Errors: every fallible function returns err_t and, given an err_detail_t,
 * says where: 1-based segment index, field number, byte offset from the start
 * of the input, and `where` such as "MSH-2" or "PID(1)-5". No detail ever
 * contains message content.
 */
#ifndef SPINEGATE_HL7_H
#define SPINEGATE_HL7_H

#include <stdbool.h>
#include <stddef.h>

#include "arena.h"
#include "err.h"
#include "slice.h"

typedef struct hl7_msg hl7_msg_t;

/* The message's delimiters, from MSH-1 and MSH-2. `truncation` is the v2.7
 * fifth encoding character (usually '#'), 0 when MSH-2 has only four. The
 * truncation character is not a delimiter: values containing it are passed
 * through untouched; the writer escapes a literal one as \P\. */
typedef struct {
    char field;        /* MSH-1, usually '|' */
    char component;    /* '^' */
    char repetition;   /* '~' */
    char escape;       /* '\\' */
    char subcomponent; /* '&' */
    char truncation;   /* '#' or 0 */
} hl7_delims_t;

/* The standard delimiters |^~\& (no truncation character). */
extern const hl7_delims_t hl7_default_delims;

#define HL7_DEFAULT_MAX_SIZE (16u * 1024 * 1024)

typedef struct {
    /* Largest accepted input in bytes; 0 means HL7_DEFAULT_MAX_SIZE. Never
     * more than 4 GiB - 2 (the index stores 32-bit offsets). */
    size_t max_size;
    /* Strict mode accepts only \r as the segment terminator (\n and \r\n
     * give ERR_BAD_TERMINATOR) and rejects empty segments other than the
     * trailing ones. Lenient mode (the default) accepts \r, \n and \r\n and
     * skips empty segments (blank lines) wherever they are. */
    bool strict;
} hl7_opts_t;

/* ---------------------------------------------------------------- parsing */

/* Returns a new empty message handle, to be filled by hl7_msg_parse(). */
hl7_msg_t *hl7_msg_new(void);

/* Frees m (its index only: the bytes belong to the caller). Accepts NULL. */
void hl7_msg_free(hl7_msg_t *m);

/* Makes m empty again, as hl7_msg_new() returns it, keeping its arrays for
 * the next parse: a reused handle must not show the last message, whose
 * bytes may be gone. */
void hl7_msg_clear(hl7_msg_t *m);

/* The bytes m's index holds (it keeps its arrays from one parse to the
 * next): what a caller that reuses m for many messages weighs against
 * freeing it. */
size_t hl7_msg_footprint(const hl7_msg_t *m);

/* Parses the len bytes at data (one message: MSH first, no batch segments)
 * into m, replacing what m held. opts may be NULL (defaults). Rules:
 *  - MSH-1 is the field separator itself and MSH-2 the encoding characters
 *    (4, or 5 with the v2.7 truncation character), so MSH-3 is the first
 *    field after them; any distinct printable non-alphanumeric characters are
 *    accepted as delimiters.
 *  - segment ids are three characters [A-Z][A-Z0-9][A-Z0-9].
 *  - empty segments at the end (and, in lenient mode, anywhere) are ignored.
 * Errors (m is left empty): ERR_EMPTY (no bytes, or only blank lines),
 * ERR_TOO_LARGE, ERR_NUL_BYTE, ERR_NO_MSH, ERR_TRUNCATED (input ends inside
 * MSH-1/MSH-2), ERR_BAD_DELIMS, ERR_BAD_TERMINATOR (strict mode),
 * ERR_BAD_SEGMENT (bad segment id; an MSH, FHS, BHS, BTS or FTS after the
 * first segment, meaning a batch or several messages: split them first). */
err_t hl7_msg_parse(hl7_msg_t *m, const char *data, size_t len, const hl7_opts_t *opts,
                    err_detail_t *d);

/* hl7_msg_new() + hl7_msg_parse(). On failure *out is NULL. */
err_t hl7_parse(const char *data, size_t len, const hl7_opts_t *opts, hl7_msg_t **out,
                err_detail_t *d);

/* The delimiters of a parsed message. */
const hl7_delims_t *hl7_msg_delims(const hl7_msg_t *m);

/* The whole input the message was parsed from (as given to hl7_msg_parse). */
slice_t hl7_msg_bytes(const hl7_msg_t *m);

/* ---------------------------------------------------------------- iteration */

/* Number of (non-empty) segments. */
size_t hl7_seg_count(const hl7_msg_t *m);

/* Segment i's id ("PID"); i is 0-based. SLICE_NULL when out of range. */
slice_t hl7_seg_id(const hl7_msg_t *m, size_t i);

/* Segment i's text without its terminator. SLICE_NULL when out of range. */
slice_t hl7_seg_text(const hl7_msg_t *m, size_t i);

/* Byte offset of segment i from the start of the input. */
size_t hl7_seg_offset(const hl7_msg_t *m, size_t i);

/* Index of the occ-th (1-based) segment named id, or -1 when there is none. */
long hl7_seg_find(const hl7_msg_t *m, const char *id, int occ);

/* Highest field number present in segment i (MSH counts MSH-1 and MSH-2),
 * 0 for a segment with only its id. */
int hl7_field_count(const hl7_msg_t *m, size_t i);

/* Field n (1-based, HL7 numbering) of segment i: raw, with all repetitions.
 * A field beyond the last present one is an empty slice with a non-NULL ptr.
 * For MSH, field 1 is the one-byte field separator and field 2 MSH-2. */
slice_t hl7_field(const hl7_msg_t *m, size_t i, int n);

/* Splitting a raw value at one delimiter: the n-th piece (1-based) of s,
 * empty when s has fewer pieces, and the number of pieces (an empty s has 1). */
slice_t hl7_piece(slice_t s, char sep, int n);
int hl7_piece_count(slice_t s, char sep);

/* An iterator over the pieces of a value (repetitions of a field, components
 * of a repetition, subcomponents of a component):
 *   hl7_iter_t it; hl7_iter_init(&it, field, dl->repetition);
 *   slice_t rep; while (hl7_iter_next(&it, &rep)) ...                      */
typedef struct {
    const char *p, *end;
    char sep;
    bool done;
} hl7_iter_t;
void hl7_iter_init(hl7_iter_t *it, slice_t s, char sep);
bool hl7_iter_next(hl7_iter_t *it, slice_t *piece);

/* ---------------------------------------------------------------- paths */

/* A parsed path: SEG[(occ)][-field[(rep)][.comp[.sub]]], e.g. "DG1(2)-3.1",
 * "FT1-19(2).1", "MSH-9.2", "PID-5.1.2". Numbers are 1-based; 0 means "not
 * given". Without a repetition, a path naming a component means the first
 * repetition, and a path naming only a field means the whole field with all
 * its repetitions. */
typedef struct {
    char seg[4];
    int occ; /* >= 1 */
    int field, rep, comp, sub;
} hl7_path_t;

#define HL7_PATH_MAX_NUM 9999

/* Parses a path. Errors: ERR_BAD_PATH (d->offset is the offending
 * character's index in s). */
err_t hl7_path_parse(const char *s, size_t len, hl7_path_t *p, err_detail_t *d);

/* Writes a path back in its canonical form ("DG1(2)-3.1"; occurrence 1 and
 * unset parts omitted) into out (cap bytes, NUL-terminated, truncated). */
void hl7_path_format(const hl7_path_t *p, char *out, size_t cap);

/* The raw value at p: a segment (p->field == 0: its text), a field, a
 * repetition, a component or a subcomponent. A position inside an existing
 * segment but beyond what was sent is an empty slice (ERR_OK): HL7 does not
 * tell "not sent" from "sent empty". Use hl7_value_kind() to tell empty from
 * the explicit null "". MSH-1 and MSH-2 are never split.
 * Errors: ERR_NOT_FOUND (no such segment occurrence). */
err_t hl7_get_path(const hl7_msg_t *m, const hl7_path_t *p, slice_t *out);

/* hl7_path_parse() + hl7_get_path(). Errors: ERR_BAD_PATH, ERR_NOT_FOUND. */
err_t hl7_get(const hl7_msg_t *m, const char *path, slice_t *out);

/* The value at (field, rep, comp, sub) of segment i; 0 for rep/comp/sub
 * means "whole" as in hl7_get_path(). */
slice_t hl7_value(const hl7_msg_t *m, size_t i, int field, int rep, int comp, int sub);

typedef enum {
    HL7_EMPTY,   /* nothing sent: "" on the wire is not this, see HL7_NULL */
    HL7_NULL,    /* exactly two double quotes: an explicit null ("delete") */
    HL7_PRESENT, /* anything else */
} hl7_kind_t;

/* Tells an empty value from the explicit null "" and from a real value. */
hl7_kind_t hl7_value_kind(slice_t v);

/* ---------------------------------------------------------------- escapes */

/* Decodes the escape sequences of a raw value into out (cap bytes; no NUL is
 * added) and sets *outlen. With the message's escape character E:
 *   EFE EST ERE ETE EEE EPE  -> the field, component, repetition,
 *                               subcomponent, escape, truncation character
 *   EXhh..E                  -> the bytes given in hex (pairs, at least one)
 *   E.brE  E.sp[n]E          -> "\n" (one line break; .sp's count ignored)
 *   EHE ENE, other E.xxE formatting commands (.in .ti .sk .ce .fi .nf),
 *   ECxxyyE EMxxyyzzE (character set switches)
 *                            -> nothing (display hints and charset switches
 *                               that a plain-text value cannot carry)
 *   EZ...E (locally defined) -> kept verbatim, escape characters included
 * anything else (an unknown letter, an empty sequence, no closing E, odd or
 * non-hex digits) is ERR_BAD_ESCAPE. dl may be NULL (defaults).
 * Errors: ERR_NO_SPACE (out too small; *outlen is then the size needed, or
 * at least cap + 1), ERR_BAD_ESCAPE (d->offset = offset of the sequence's
 * opening escape character within in). */
err_t hl7_unescape(const hl7_delims_t *dl, slice_t in, char *out, size_t cap, size_t *outlen,
                   err_detail_t *d);

/* Decodes in into a NUL-terminated string in a. If in lies inside m's input,
 * d->offset is made an offset from the start of the input. Errors:
 * ERR_BAD_ESCAPE (*out is NULL). */
err_t hl7_unescape_arena(const hl7_msg_t *m, slice_t in, arena_t *a, char **out,
                         err_detail_t *d);

/* Encodes a plain value for the wire: the five delimiters and the truncation
 * character become EFE ESE ETE ERE EEE EPE; \r and \n become EX0DE EX0AE (a
 * raw one would end the segment). Writes at most cap bytes into out and
 * returns the length the encoding needs (call with cap 0 to measure). */
size_t hl7_escape(const hl7_delims_t *dl, const char *in, size_t len, char *out, size_t cap);

/* ---------------------------------------------------------------- batches */

/* Splits an input holding several messages into one slice per message (from
 * its MSH to its last segment's terminator; blank lines between messages are
 * left out). Accepted shapes: [FHS] {[BHS] {MSH...} [BTS]} [FTS], plain
 * concatenated messages, and messages separated by blank lines. A missing
 * header or trailer is tolerated (HL7 makes both optional). The slices point
 * into data; the array lives in a.
 * Errors: ERR_EMPTY, ERR_TOO_LARGE, ERR_BAD_BATCH (d->segment/offset/where
 * name the segment): a segment outside any message, FHS not first, BHS
 * inside an open batch, anything after FTS, a BTS-1 message count or FTS-1
 * batch count that differs from what was found, no message at all. */
err_t hl7_batch_split(const char *data, size_t len, const hl7_opts_t *opts, arena_t *a,
                      slice_t **msgs, size_t *nmsgs, err_detail_t *d);

/* ---------------------------------------------------------------- writing */

/* A segment under construction, kept as a sorted list of values by position
 * so that fields can be set in any order. Lives in the arena it was made in. */
typedef struct hl7_seg hl7_seg_t;

/* Starts a segment with id (three characters) written with dl's delimiters.
 * For MSH/FHS/BHS, fields 1 and 2 are written from dl and cannot be set. */
hl7_seg_t *hl7_seg_new(arena_t *a, const hl7_delims_t *dl, const char *id);

/* Starts from a copy of segment i of m (its raw fields), to be changed. */
hl7_seg_t *hl7_seg_from(arena_t *a, const hl7_msg_t *m, size_t i);

/* Sets the value at (field, rep, comp, sub) to the plain value v (len n),
 * escaped when written. field >= 1; rep/comp/sub 0 means "the whole field /
 * repetition / component" (a whole field may hold several repetitions only
 * through hl7_seg_set_raw). Setting replaces whatever was there, including
 * finer parts. Errors: ERR_BAD_PATH (a number < 0 or > HL7_PATH_MAX_NUM,
 * field 0, or MSH-1/MSH-2). */
err_t hl7_seg_set(hl7_seg_t *s, int field, int rep, int comp, int sub, const char *v, size_t n);

/* Like hl7_seg_set but v is wire text already escaped for these delimiters
 * (it may contain delimiters on purpose, e.g. a whole CX copied from
 * another message with the same delimiters). */
err_t hl7_seg_set_raw(hl7_seg_t *s, int field, int rep, int comp, int sub, const char *v,
                      size_t n);

/* The segment's wire text, without terminator; valid until the next set. */
slice_t hl7_seg_write(hl7_seg_t *s);

/* An edit of a parsed message: segments replaced, inserted or fields set,
 * written out with every untouched segment byte-identical. */
typedef struct hl7_edit hl7_edit_t;

hl7_edit_t *hl7_edit_new(const hl7_msg_t *m, arena_t *a);

/* Sets the value at path (e.g. "PID-5.1", "ZSG(2)-3") in an existing segment
 * to the plain value v, escaped with the message's delimiters.
 * Errors: ERR_BAD_PATH, ERR_NOT_FOUND (no such segment). */
err_t hl7_edit_set(hl7_edit_t *e, const char *path, const char *v, size_t n, err_detail_t *d);

/* Inserts seg before original segment `before` (0-based; hl7_seg_count()
 * appends), after any blank lines that end the segment before it. Several
 * inserts at one place keep their order. Errors:
 * ERR_BAD_VALUE (before out of range). */
err_t hl7_edit_insert(hl7_edit_t *e, size_t before, hl7_seg_t *seg);

/* Replaces original segment i by seg. Errors: ERR_BAD_VALUE (out of range). */
err_t hl7_edit_replace(hl7_edit_t *e, size_t i, hl7_seg_t *seg);

/* Deletes original segment i (with its terminator) from the output; inserts
 * before it still go where it was. Errors: ERR_BAD_VALUE (out of range). */
err_t hl7_edit_delete(hl7_edit_t *e, size_t i);

/* Writes the edited message into a: untouched segments exactly as received
 * (terminator and blank lines included), replaced segments with the
 * original terminator, inserted segments ended by \r. Never fails. */
slice_t hl7_edit_write(hl7_edit_t *e);

#endif
