/* buf.c - reference-counted message buffers. */
#include "buf.h"

#include <string.h>

#include "xmalloc.h"

buf_t *buf_new(const void *p, size_t n)
{
    buf_t *b = xmalloc(sizeof *b + n + 1);
    b->refs = 1;
    b->len = n;
    if (n)
        memcpy(b->data, p, n);
    b->data[n] = '\0';
    return b;
}

buf_t *buf_ref(buf_t *b)
{
    b->refs++;
    return b;
}

void buf_unref(buf_t *b)
{
    if (b && --b->refs == 0)
        xfree(b);
}
