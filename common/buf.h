/* buf.h - a reference-counted byte buffer. A complete inbound message is
 * copied once into a buf_t; parsers hand out slices into it, and it can
 * outlive the connection it came from (a reply written later, a queue
 * commit in progress). Whoever holds a reference calls buf_unref() once;
 * the last unref frees it. Not thread-safe: take and drop references on the
 * loop thread only.
 */
#ifndef SPINEGATE_BUF_H
#define SPINEGATE_BUF_H

#include <stddef.h>

typedef struct {
    unsigned refs;
    size_t len;
    char data[]; /* len bytes, followed by a NUL not counted in len */
} buf_t;

/* Returns a new buffer with one reference holding a copy of n bytes of p. */
buf_t *buf_new(const void *p, size_t n);

/* Takes another reference; returns b. */
buf_t *buf_ref(buf_t *b);

/* Drops a reference; frees on the last. Accepts NULL. */
void buf_unref(buf_t *b);

/* Growing a buf_t: a frame or a body is copied once, straight into the
 * buf_t handed on, even when it arrives over several reads. buf_t has no
 * capacity field, so the builder keeps it in *cap. buf_new() allocates with
 * xmalloc and buf_unref() frees with xfree, so a block grown with xrealloc
 * is freed correctly. */

/* Makes room for need bytes of data (plus the NUL) in *b, allocating it with
 * one reference and len 0 when *b is NULL. *cap holds the data capacity. */
void buf_reserve(buf_t **b, size_t *cap, size_t need);

/* Appends n bytes to *b, growing it geometrically. */
void buf_append(buf_t **b, size_t *cap, const void *p, size_t n);

#endif
