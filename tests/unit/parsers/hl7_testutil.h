/* hl7_testutil.h - helpers shared by the parsers/ unit tests: reading data
 * files under $top_srcdir/tests/data. Files are returned in xmalloc'd
 * buffers the test frees with xfree(). */
#ifndef SPINEGATE_HL7_TESTUTIL_H
#define SPINEGATE_HL7_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"

static inline const char *tu_srcdir(void)
{
    const char *s = getenv("top_srcdir");
    return s && *s ? s : ".";
}

/* Reads $top_srcdir/rel; returns NULL when it cannot be read. */
static inline char *tu_read(const char *rel, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", tu_srcdir(), rel);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0, got;
    char *buf = xmalloc(cap);
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap)
            buf = xrealloc(buf, cap *= 2);
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Turns "\n" into "\r" in a string literal copy, so tests can be written
 * one segment per line. Returns an xmalloc'd copy. */
static inline char *tu_cr(const char *s, size_t *len)
{
    size_t n = strlen(s);
    char *c = xmalloc(n + 1);
    for (size_t i = 0; i <= n; i++)
        c[i] = s[i] == '\n' ? '\r' : s[i];
    *len = n;
    return c;
}

#endif
