/* xmalloc.c - counted allocation that aborts on failure.
 *
 * Each block carries a small header with its size so that xfree and xrealloc
 * can keep the count exact; the header is 16 bytes to keep max_align_t
 * alignment for what follows it.
 *
 * Small blocks freed are kept, per thread, for the next xmalloc of their
 * size class. A parsed JSON claim is some hundreds of small cJSON nodes and
 * strings, all freed together: glibc's own per-thread cache holds 7 per
 * size and sends the rest through its slower bins (and a consolidation of
 * them at the next large free), once per message. Bounded per thread by
 * SMALL_CACHE_BYTES; off under AddressSanitizer, whose quarantine must see
 * every free to catch a use after it.
 */
#include "xmalloc.h"

#include <cjson/cJSON.h>
#include <libxml/xmlmemory.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HDR 16

#if defined(__SANITIZE_ADDRESS__)
#define SMALL_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SMALL_CACHE 0
#endif
#endif
#ifndef SMALL_CACHE
#define SMALL_CACHE 1
#endif
#define SMALL_MAX 256                  /* bytes: blocks up to this are cached */
#define SMALL_CLASSES (SMALL_MAX / 16) /* 16-byte size classes */
#define SMALL_CACHE_BYTES (256u << 10) /* most held per thread */

static atomic_size_t used_bytes;

static size_t small_class(size_t n)
{
    return n ? (n - 1) / 16 : 0; /* 0..16 -> 0, ..., 241..256 -> 15 */
}

/* Small blocks are allocated at their class's size, so that any block of a
 * class fits any request of it. */
static size_t block_size(size_t n)
{
    return n <= SMALL_MAX ? (small_class(n) + 1) * 16 : n;
}

#if SMALL_CACHE
typedef struct small_free {
    struct small_free *next;
} small_free_t;

static _Thread_local struct {
    small_free_t *head[SMALL_CLASSES];
    size_t bytes;
} small;
#endif

static void oom(size_t n)
{
    fprintf(stderr, "spinegate: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    if (n > SIZE_MAX - HDR)
        oom(n);
    unsigned char *p = NULL;
#if SMALL_CACHE
    if (n <= SMALL_MAX) {
        size_t c = small_class(n);
        small_free_t *f = small.head[c];
        if (f) {
            small.head[c] = f->next;
            small.bytes -= block_size(n);
            p = (unsigned char *)f;
        }
    }
#endif
    if (!p)
        p = malloc(block_size(n) + HDR);
    if (!p)
        oom(n);
    memcpy(p, &n, sizeof n);
    atomic_fetch_add(&used_bytes, n);
    return p + HDR;
}

void *xcalloc(size_t count, size_t size)
{
    if (size && count > (SIZE_MAX - HDR) / size)
        oom(SIZE_MAX);
    void *p = xmalloc(count * size);
    memset(p, 0, count * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    if (!p)
        return xmalloc(n);
    if (n > SIZE_MAX - HDR)
        oom(n);
    unsigned char *base = (unsigned char *)p - HDR;
    size_t old;
    memcpy(&old, base, sizeof old);
    unsigned char *nb = realloc(base, block_size(n) + HDR);
    if (!nb)
        oom(n);
    memcpy(nb, &n, sizeof n);
    atomic_fetch_sub(&used_bytes, old);
    atomic_fetch_add(&used_bytes, n);
    return nb + HDR;
}

void xfree(void *p)
{
    if (!p)
        return;
    unsigned char *base = (unsigned char *)p - HDR;
    size_t old;
    memcpy(&old, base, sizeof old);
    atomic_fetch_sub(&used_bytes, old);
#if SMALL_CACHE
    if (old <= SMALL_MAX && small.bytes + block_size(old) <= SMALL_CACHE_BYTES) {
        size_t c = small_class(old);
        small_free_t *f = (small_free_t *)base;
        f->next = small.head[c];
        small.head[c] = f;
        small.bytes += block_size(old);
        return;
    }
#endif
    free(base);
}

char *xstrndup(const char *s, size_t n)
{
    char *d = xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

size_t xmalloc_used(void)
{
    return atomic_load(&used_bytes);
}

static char *xml_strdup(const char *s)
{
    return xstrdup(s);
}

static _Thread_local arena_t *cjson_arena;
static atomic_bool cjson_hooked;

bool xmalloc_cjson_hooked(void)
{
    return atomic_load_explicit(&cjson_hooked, memory_order_relaxed);
}

arena_t *xmalloc_cjson_arena(arena_t *a)
{
    arena_t *before = cjson_arena;
    cjson_arena = a;
    return before;
}

static void *cjson_alloc(size_t n)
{
    return cjson_arena ? arena_alloc(cjson_arena, n) : xmalloc(n);
}

static void cjson_free(void *p)
{
    if (!cjson_arena)
        xfree(p);
}

void xmalloc_hook_libraries(void)
{
    cJSON_Hooks hooks = {.malloc_fn = cjson_alloc, .free_fn = cjson_free};
    cJSON_InitHooks(&hooks);
    atomic_store(&cjson_hooked, true);
    xmlMemSetup(xfree, xmalloc, xrealloc, xml_strdup);
    /* Before any worker thread parses: libxml2 wants its first
     * initialisation done once, on one thread. */
    xmlInitParser();
}
