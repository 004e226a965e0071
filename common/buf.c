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

void buf_reserve(buf_t **b, size_t *cap, size_t need)
{
    if (*b == NULL) {
        size_t c = need < 256 ? 256 : need;
        *b = xmalloc(sizeof(buf_t) + c + 1);
        (*b)->refs = 1;
        (*b)->len = 0;
        *cap = c;
        return;
    }
    if (need <= *cap)
        return;
    size_t c = *cap * 2;
    if (c < need)
        c = need;
    *b = xrealloc(*b, sizeof(buf_t) + c + 1);
    *cap = c;
}

void buf_append(buf_t **b, size_t *cap, const void *p, size_t n)
{
    size_t have = *b ? (*b)->len : 0;
    buf_reserve(b, cap, have + n);
    if (n)
        memcpy((*b)->data + have, p, n);
    (*b)->len = have + n;
    (*b)->data[(*b)->len] = '\0';
}
