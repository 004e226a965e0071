/* json_tree.c - JSON text to a cJSON tree in an arena (see json_tree.h). */
#include "json_tree.h"

#include <limits.h>
#include <locale.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Nodes and strings are cut from chunks of the arena, so that a document
 * of some hundred values costs a few arena calls, not one per value. */
#define POOL_CHUNK 4096

typedef struct {
    const unsigned char *start, *p, *end;
    arena_pool_t pool;
    size_t depth; /* arrays and objects open around the cursor */
    bool dup;     /* an object named a key twice */
} reader_t;

static inline void *take(reader_t *r, size_t n)
{
    return arena_pool_alloc(&r->pool, n);
}

static inline cJSON *new_node(reader_t *r)
{
    cJSON *n = take(r, sizeof *n);
    memset(n, 0, sizeof *n);
    return n;
}

/* White space (every byte up to 32, as cJSON has it) comes in the runs of
 * indentation of a pretty-printed document: 16 bytes at a time. */
static void skip_space_run(reader_t *r)
{
    const unsigned char *p = r->p, *end = r->end;
#if defined(__SSE2__)
    const __m128i space = _mm_set1_epi8(32);
    for (; end - p >= 16; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        /* max(v, 32) == 32 exactly where v <= 32 */
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(v, space), space));
        if (m != 0xFFFF) {
            r->p = p + __builtin_ctz(~m);
            return;
        }
    }
#endif
    while (p < end && *p <= 32)
        p++;
    r->p = p;
}

static inline void skip_space(reader_t *r)
{
    if (r->p < r->end && *r->p <= 32)
        skip_space_run(r);
}

/* The first '"' or '\\' from p, or end. Strings in a Claim are short, but
 * narrative text and attachments are not. */
static const unsigned char *quote_or_escape(const unsigned char *p, const unsigned char *end)
{
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
    for (; end - p >= 16; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)));
        if (m)
            return p + __builtin_ctz(m);
    }
#endif
    for (; p < end; p++)
        if (*p == '"' || *p == '\\')
            return p;
    return end;
}

/* Four hex digits, or -1. */
static long hex4(const unsigned char *s)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static unsigned char *put_utf8(unsigned char *o, unsigned long cp)
{
    if (cp < 0x80) {
        *o++ = (unsigned char)cp;
    } else if (cp < 0x800) {
        *o++ = (unsigned char)(0xC0 | (cp >> 6));
        *o++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (unsigned char)(0xE0 | (cp >> 12));
        *o++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (unsigned char)(0xF0 | (cp >> 18));
        *o++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (unsigned char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* Decodes the escapes of in[0..n) into out, which has n bytes or more (no
 * escape is shorter than what it stands for). Returns the end of the
 * output, or NULL with *bad at the escape that is not JSON. */
static unsigned char *unescape(const unsigned char *in, size_t n, unsigned char *out,
                               const unsigned char **bad)
{
    const unsigned char *end = in + n;
    while (in < end) {
        if (*in != '\\') {
            *out++ = *in++;
            continue;
        }
        /* Where the string ends was found escape by escape: in[1] is there. */
        *bad = in;
        switch (in[1]) {
        case 'b': *out++ = '\b'; break;
        case 'f': *out++ = '\f'; break;
        case 'n': *out++ = '\n'; break;
        case 'r': *out++ = '\r'; break;
        case 't': *out++ = '\t'; break;
        case '"':
        case '\\':
        case '/': *out++ = in[1]; break;
        case 'u': {
            long hi = end - in >= 6 ? hex4(in + 2) : -1;
            if (hi < 0 || (hi >= 0xDC00 && hi <= 0xDFFF))
                return NULL;
            if (hi >= 0xD800 && hi <= 0xDBFF) {
                /* A high surrogate needs its low half straight after it. */
                long lo = end - in >= 12 && in[6] == '\\' && in[7] == 'u' ? hex4(in + 8) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return NULL;
                out = put_utf8(out, 0x10000 + (((unsigned long)hi & 0x3FF) << 10 |
                                               ((unsigned long)lo & 0x3FF)));
                in += 12;
            } else {
                out = put_utf8(out, (unsigned long)hi);
                in += 6;
            }
            continue;
        }
        default: return NULL;
        }
        in += 2;
    }
    return out;
}

/* The string at r->p (a '"'), unescaped and NUL-terminated, into *out. */
static bool read_string(reader_t *r, char **out)
{
    const unsigned char *s = r->p + 1, *q = quote_or_escape(s, r->end);
    if (q < r->end && *q == '"') {
        size_t n = (size_t)(q - s);
        char *o = take(r, n + 1);
        memcpy(o, s, n);
        o[n] = '\0';
        *out = o;
        r->p = q + 1;
        return true;
    }
    /* Escapes: the end is the first quote that no backslash takes. */
    const unsigned char *e = q;
    while (e < r->end && *e != '"') {
        if (*e == '\\' && ++e == r->end)
            break;
        e++;
    }
    if (e >= r->end) {
        r->p = r->end;
        return false;
    }
    size_t n = (size_t)(e - s);
    unsigned char *o = take(r, n + 1);
    const unsigned char *bad = s;
    unsigned char *oe = unescape(s, n, o, &bad);
    if (!oe) {
        r->p = bad;
        return false;
    }
    *oe = '\0';
    *out = (char *)o;
    r->p = e + 1;
    return true;
}

static bool number_byte(unsigned char c)
{
    return (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E';
}

/* A number, as cJSON reads one: the run of number bytes (63 at most) goes
 * to strtod, and the value ends where strtod stopped. Plain integers of up
 * to 15 digits, most numbers in a Claim, are exact in a double and are
 * converted here. */
static bool read_number(reader_t *r, cJSON *item)
{
    const unsigned char *p = r->p;
    size_t run = 0;
    while (run < 63 && p + run < r->end && number_byte(p[run]))
        run++;
    size_t i = p[0] == '-';
    uint64_t u = 0;
    size_t digits = 0;
    for (; i < run && p[i] >= '0' && p[i] <= '9' && digits < 15; i++, digits++)
        u = u * 10 + (uint64_t)(p[i] - '0');
    double v;
    size_t used;
    if (digits && i == run) {
        v = p[0] == '-' ? -(double)u : (double)u;
        used = run;
    } else {
        char tmp[64];
        char point = *localeconv()->decimal_point;
        for (size_t k = 0; k < run; k++)
            tmp[k] = p[k] == '.' ? point : (char)p[k];
        tmp[run] = '\0';
        char *after = tmp;
        v = strtod(tmp, &after);
        if (after == tmp)
            return false;
        used = (size_t)(after - tmp);
    }
    item->type = cJSON_Number;
    item->valuedouble = v;
    item->valueint = v >= INT_MAX ? INT_MAX : v <= (double)INT_MIN ? INT_MIN : (int)v;
    r->p = p + used;
    return true;
}

static bool read_value(reader_t *r, cJSON *item);

/* Appends a new node to the list whose first and last nodes are *head and
 * *last (cJSON's links: next, prev, and head->prev set at the end). */
static cJSON *append(reader_t *r, cJSON **head, cJSON **last)
{
    cJSON *n = new_node(r);
    if (!*head) {
        *head = n;
    } else {
        (*last)->next = n;
        n->prev = *last;
    }
    *last = n;
    return n;
}

/* At the opening byte of an array or object: skips it and the space after
 * it, and the closing byte too when the list is empty (then true). */
static bool list_empty(reader_t *r, unsigned char close)
{
    r->depth++;
    r->p++;
    skip_space(r);
    if (r->p < r->end && *r->p == close) {
        r->p++;
        return true;
    }
    return false;
}

/* After a value of a list: 1 when a ',' follows (skipped with the space
 * after it), 0 when the closing byte does (skipped), -1 otherwise. */
static int list_next(reader_t *r, unsigned char close)
{
    skip_space(r);
    if (r->p < r->end && *r->p == ',') {
        r->p++;
        skip_space(r);
        return 1;
    }
    if (r->p < r->end && *r->p == close) {
        r->p++;
        return 0;
    }
    return -1;
}

/* A member's key and value, into n. Keys seen so far in the object are a
 * bit each in *seen (by their first two bytes): a key whose bit is set is
 * compared with the keys before it, as C strings (as cJSON's lookups
 * compare them). FHIR forbids a key twice; the caller says where, walking
 * the tree only when one is. */
static bool read_member(reader_t *r, const cJSON *head, cJSON *n, uint64_t *seen)
{
    if (r->p >= r->end || *r->p != '"' || !read_string(r, &n->string))
        return false;
    const unsigned char *key = (const unsigned char *)n->string;
    uint64_t bit = (uint64_t)1 << ((key[0] * 31u + (key[0] ? key[1] : 0)) & 63);
    if (*seen & bit)
        for (const cJSON *k = head; k != n && !r->dup; k = k->next)
            r->dup = k->string[0] == n->string[0] && strcmp(k->string, n->string) == 0;
    *seen |= bit;
    skip_space(r);
    if (r->p >= r->end || *r->p != ':')
        return false;
    r->p++;
    skip_space(r);
    return read_value(r, n);
}

/* An array's or an object's items, from its opening bracket. */
static bool read_list(reader_t *r, cJSON *item, bool object)
{
    char close = object ? '}' : ']';
    cJSON *head = NULL, *last = NULL;
    uint64_t seen = 0;
    if (!list_empty(r, close)) {
        int more;
        do {
            cJSON *n = append(r, &head, &last);
            if (!(object ? read_member(r, head, n, &seen) : read_value(r, n)))
                return false;
        } while ((more = list_next(r, close)) > 0);
        if (more < 0)
            return false;
        head->prev = last;
    }
    r->depth--;
    item->type = object ? cJSON_Object : cJSON_Array;
    item->child = head;
    return true;
}

static bool literal(reader_t *r, const char *word, size_t n)
{
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
        return false;
    r->p += n;
    return true;
}

static bool read_value(reader_t *r, cJSON *item)
{
    if (r->p >= r->end)
        return false;
    switch (*r->p) {
    case '"': item->type = cJSON_String; return read_string(r, &item->valuestring);
    case '{':
    case '[':
        /* The reader recurses once a level: it stops where cJSON stops,
         * whatever the caller checked before. */
        if (r->depth >= CJSON_NESTING_LIMIT)
            return false;
        return read_list(r, item, *r->p == '{');
    case 'n': item->type = cJSON_NULL; return literal(r, "null", 4);
    case 'f': item->type = cJSON_False; return literal(r, "false", 5);
    case 't':
        item->type = cJSON_True;
        item->valueint = 1;
        return literal(r, "true", 4);
    default:
        if (*r->p == '-' || (*r->p >= '0' && *r->p <= '9'))
            return read_number(r, item);
        return false;
    }
}

cJSON *json_tree_parse(const char *buf, size_t len, arena_t *a, size_t *end_at, size_t *fail_at,
                       bool *dup)
{
    reader_t r = {.start = (const unsigned char *)buf,
                  .p = (const unsigned char *)buf,
                  .end = (const unsigned char *)buf + len,
                  .pool = ARENA_POOL(a, POOL_CHUNK, _Alignof(cJSON))};
    if (len >= 5 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
        r.p += 3;
    skip_space(&r);
    cJSON *root = new_node(&r);
    if (!read_value(&r, root)) {
        size_t at = (size_t)(r.p - r.start);
        *fail_at = at < len ? at : len ? len - 1 : 0;
        return NULL;
    }
    *end_at = (size_t)(r.p - r.start);
    *dup = r.dup;
    return root;
}
