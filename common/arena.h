/* arena.h - a per-message bump allocator (h2o's pools). Parse results,
 * findings and annotated output for one message are allocated here and freed
 * together by arena_free(). The arena itself is a small value owned by its
 * caller; memory comes from xmalloc, so exhaustion is fatal, never NULL.
 */
#ifndef SPINEGATE_ARENA_H
#define SPINEGATE_ARENA_H

#include <stddef.h>

#include "slice.h"

typedef struct arena_block arena_block_t;

typedef struct {
    arena_block_t *head;
    size_t block_size; /* size of the next block to allocate */
    size_t total;      /* bytes handed out, for metrics */
} arena_t;

/* Prepares a; first_block is a hint (0 picks a default). No allocation yet. */
void arena_init(arena_t *a, size_t first_block);

/* Returns n bytes aligned for any type, valid until arena_free/arena_reset. */
void *arena_alloc(arena_t *a, size_t n);

/* Like arena_alloc but zeroed. */
void *arena_calloc(arena_t *a, size_t count, size_t size);

/* Copies s (n bytes) and appends a NUL. */
char *arena_strndup(arena_t *a, const char *s, size_t n);
char *arena_strdup(arena_t *a, const char *s);
char *arena_slicedup(arena_t *a, slice_t s);

/* printf into the arena. */
char *arena_printf(arena_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Small pieces cut from chunks of an arena: one arena call per chunk, not
 * one per value, for readers that keep many short strings and nodes. Every
 * size is rounded up to align (a power of two: 1 for strings, 8 for
 * structs of pointers and doubles; a chunk starts aligned for anything); a
 * piece over a quarter chunk is an arena allocation of its own. Set up
 * with ARENA_POOL(arena, chunk, align). */
typedef struct {
    arena_t *a;
    size_t chunk, align;
    unsigned char *p;
    size_t left;
} arena_pool_t;

#define ARENA_POOL(arena, chunk_size, alignment)                                                   \
    ((arena_pool_t){.a = (arena), .chunk = (chunk_size), .align = (alignment)})

static inline void *arena_pool_alloc(arena_pool_t *pool, size_t n)
{
    n = (n + pool->align - 1) & ~(pool->align - 1);
    if (pool->left < n) {
        if (n > pool->chunk / 4)
            return arena_alloc(pool->a, n);
        pool->p = arena_alloc(pool->a, pool->chunk);
        pool->left = pool->chunk;
    }
    void *piece = pool->p;
    pool->p += n;
    pool->left -= n;
    return piece;
}

/* Frees all but the first block and makes it empty again, for reuse. */
void arena_reset(arena_t *a);

/* Makes a empty for another message like the last: its block is kept when
 * it is the only one and no larger than first_block; otherwise everything
 * is freed and the next block will be first_block bytes (as after
 * arena_init), so that one large message leaves nothing large behind. */
void arena_recycle(arena_t *a, size_t first_block);

/* Frees everything; a may be reused after arena_init. Accepts NULL. */
void arena_free(arena_t *a);

#endif
