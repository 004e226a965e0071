/* arena.c - bump allocation in growing blocks. */
#include "arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "xmalloc.h"

#define ARENA_ALIGN 16
#define ARENA_DEFAULT 4096

struct arena_block {
    arena_block_t *next;
    size_t cap;
    size_t used;
    _Alignas(ARENA_ALIGN) unsigned char data[];
};

void arena_init(arena_t *a, size_t first_block)
{
    a->head = NULL;
    a->block_size = first_block ? first_block : ARENA_DEFAULT;
    a->total = 0;
}

void *arena_alloc(arena_t *a, size_t n)
{
    size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need < n)
        need = SIZE_MAX; /* overflow: let xmalloc abort */
    arena_block_t *b = a->head;
    if (!b || b->cap - b->used < need) {
        size_t cap = a->block_size;
        while (cap < need && cap < SIZE_MAX / 2)
            cap *= 2;
        if (cap < need)
            cap = need;
        b = xmalloc(sizeof *b + cap);
        b->cap = cap;
        b->used = 0;
        b->next = a->head;
        a->head = b;
        if (a->block_size < (1u << 20))
            a->block_size *= 2;
    }
    void *p = b->data + b->used;
    b->used += need;
    a->total += need;
    return p;
}

void *arena_calloc(arena_t *a, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        count = SIZE_MAX / size + 1; /* forces the abort path below */
    size_t n = count * size;
    void *p = arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

char *arena_strndup(arena_t *a, const char *s, size_t n)
{
    char *d = arena_alloc(a, n + 1);
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *arena_strdup(arena_t *a, const char *s)
{
    return arena_strndup(a, s, strlen(s));
}

char *arena_slicedup(arena_t *a, slice_t s)
{
    return arena_strndup(a, s.ptr, s.len);
}

char *arena_printf(arena_t *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return arena_strdup(a, "");
    char *d = arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(d, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return d;
}

void arena_reset(arena_t *a)
{
    if (!a->head)
        return;
    /* Keep the largest (newest) block, drop the rest. */
    arena_block_t *keep = a->head, *b = keep->next;
    while (b) {
        arena_block_t *next = b->next;
        xfree(b);
        b = next;
    }
    keep->next = NULL;
    keep->used = 0;
    a->total = 0;
}

void arena_recycle(arena_t *a, size_t first_block)
{
    if (a->head && !a->head->next && a->head->cap <= first_block) {
        a->head->used = 0;
        a->total = 0;
        return;
    }
    arena_free(a);
    arena_init(a, first_block);
}

void arena_free(arena_t *a)
{
    if (!a)
        return;
    arena_block_t *b = a->head;
    while (b) {
        arena_block_t *next = b->next;
        xfree(b);
        b = next;
    }
    a->head = NULL;
    a->total = 0;
}
