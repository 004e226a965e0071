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

#endif
