/* xmalloc.c - counted allocation that aborts on failure.
 *
 * Each block carries a small header with its size so that xfree and xrealloc
 * can keep the count exact; the header is 16 bytes to keep max_align_t
 * alignment for what follows it.
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

static atomic_size_t used_bytes;

static void oom(size_t n)
{
    fprintf(stderr, "spinegate: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    if (n > SIZE_MAX - HDR)
        oom(n);
    unsigned char *p = malloc(n + HDR);
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
    unsigned char *nb = realloc(base, n + HDR);
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

void xmalloc_hook_libraries(void)
{
    cJSON_Hooks hooks = {.malloc_fn = xmalloc, .free_fn = xfree};
    cJSON_InitHooks(&hooks);
    xmlMemSetup(xfree, xmalloc, xrealloc, xml_strdup);
    /* Before any worker thread parses: libxml2 wants its first
     * initialisation done once, on one thread. */
    xmlInitParser();
}
