/* xmalloc.h - the one allocation family. Allocation failure is fatal: the
 * process logs and aborts, so callers never check for NULL. Every byte is
 * counted, so memory use can be reported (metrics, benchmarks) and so cJSON
 * and libxml2 are pointed here too (xmalloc_hook_libraries()).
 * xfree(NULL) is a no-op.
 */
#ifndef SPINEGATE_XMALLOC_H
#define SPINEGATE_XMALLOC_H

#include <stdbool.h>
#include <stddef.h>

#include "arena.h"

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void xfree(void *p);

/* Bytes currently allocated through this family. */
size_t xmalloc_used(void);

/* Routes cJSON's and libxml2's allocations through this family. Call once at
 * start, before either library allocates. */
void xmalloc_hook_libraries(void);

/* Points cJSON's allocations on this thread at arena a (NULL: back to this
 * family) and returns the arena set before. While one is set cJSON's frees
 * do nothing: what it builds there goes with the arena, and is never given
 * to cJSON_Delete. A parse builds hundreds of nodes that all die together. */
arena_t *xmalloc_cjson_arena(arena_t *a);

/* True once xmalloc_hook_libraries() has run: only then does cJSON
 * allocate where xmalloc_cjson_arena() says. */
bool xmalloc_cjson_hooked(void);

#endif
