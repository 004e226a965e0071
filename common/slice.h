/* slice.h - a borrowed byte range {ptr, len}. A slice never owns its bytes;
 * whoever produced it says how long they live (for the HL7 parser: as long as
 * the message buffer). Slices are not NUL-terminated.
 */
#ifndef SPINEGATE_SLICE_H
#define SPINEGATE_SLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

typedef struct {
    const char *ptr;
    size_t len;
} slice_t;

#define SLICE_NULL ((slice_t){NULL, 0})

static inline slice_t slice_make(const char *p, size_t n)
{
    return (slice_t){p, n};
}

static inline slice_t slice_cstr(const char *s)
{
    return (slice_t){s, s ? strlen(s) : 0};
}

static inline bool slice_eq(slice_t a, const char *s)
{
    size_t n = strlen(s);
    return a.len == n && (n == 0 || memcmp(a.ptr, s, n) == 0);
}

static inline bool slice_eq_slice(slice_t a, slice_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* v in decimal at out, which has room for 20 bytes; returns the length
 * (no NUL). What "%llu" prints, for the numbers written on every message
 * (locations, counts, lengths) without the format work. */
static inline size_t str_udec(char *out, unsigned long long v)
{
    char rev[20];
    size_t n = 0;
    do
        rev[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = rev[n - 1 - i];
    return n;
}

/* Copies the C string src into dst of cap bytes (cap > 0), cut to fit and
 * always terminated: snprintf(dst, cap, "%s", src) without the format work,
 * for the copies made once a message. */
static inline void str_copy(char *dst, size_t cap, const char *src)
{
    if (!memccpy(dst, src, '\0', cap))
        dst[cap - 1] = '\0';
}

#endif
