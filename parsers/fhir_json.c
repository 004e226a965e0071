/* fhir_json.c - FHIR JSON: the parse step (json_tree.c, or cJSON where its
 * allocations are not ours, behind a depth pre-scan) and the tree accessors
 * the shared mapping walks (fhir__json_ops).
 *
 * The cJSON tree is owned by the fhir_doc_t: in its tree_arena, or freed by
 * fhir__json_free(). Accessors return borrowed cJSON pointers into it.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "fhir_int.h"
#include "json_tree.h"
#include "xmalloc.h"

static err_t too_deep(err_detail_t *d, int max_depth, size_t at)
{
    return err_set(d, ERR_TOO_DEEP, at, "JSON nesting deeper than %d at byte offset %zu", max_depth,
                   at);
}

/* The readers recurse once per nesting level (cJSON stops only at its
 * compile-time CJSON_NESTING_LIMIT, json_tree.c not at all), so the depth
 * is checked here first, in one pass that knows about strings and escapes:
 * a deep document is refused before either sees it. The same pass refuses NUL, raw or as \u0000: cJSON's strings are
 * C strings, so "Claim\u0000x" would silently read as "Claim".
 *
 * One step of that pass, at byte i: returns the error, or ERR_OK with
 * *resume past a byte an escape takes. Both scans below are made of it. */
static inline err_t prescan_step(const char *buf, size_t len, size_t i, int max_depth, int *depth,
                                 bool *in_str, size_t *resume, err_detail_t *d)
{
    char c = buf[i];
    if (*in_str) {
        if (c == '\\' && i + 5 < len && memcmp(buf + i + 1, "u0000", 5) == 0)
            return err_set(d, ERR_NUL_BYTE, i, "\\u0000 in a string at byte offset %zu", i);
        if (c == '\\')
            *resume = i + 2;
        else if (c == '"')
            *in_str = false;
    } else if (c == '"') {
        *in_str = true;
    } else if (c == '{' || c == '[') {
        if (++*depth > max_depth)
            return too_deep(d, max_depth, i);
    } else if ((c == '}' || c == ']') && *depth > 0) {
        --*depth;
    }
    return ERR_OK;
}

/* The pass byte by byte, up to the first NUL: the reference the block scan
 * is tested against, and the scan where SSE2 is missing. */
err_t fhir__json_prescan_bytewise(const char *buf, size_t len, int max_depth, err_detail_t *d)
{
    int depth = 0;
    bool in_str = false;
    size_t resume = 0;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\0')
            return err_set(d, ERR_NUL_BYTE, i, "NUL byte at byte offset %zu", i);
        if (i < resume)
            continue; /* the byte after a backslash in a string */
        err_t e = prescan_step(buf, len, i, max_depth, &depth, &in_str, &resume, d);
        if (e)
            return e;
    }
    return ERR_OK;
}

#if defined(__SSE2__)
/* What the pass acts on in the 64 bytes at p, a bit per byte. Everything
 * else, most of a document, is skipped 64 bytes at a time. */
typedef struct {
    uint64_t quote, bslash, open, close;
} prescan_masks_t;

static inline prescan_masks_t prescan_masks(const char *p)
{
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), ob = _mm_set1_epi8('{'),
                  cb = _mm_set1_epi8('}'), os = _mm_set1_epi8('['), cs = _mm_set1_epi8(']');
    prescan_masks_t m = {0, 0, 0, 0};
    for (int k = 0; k < 4; k++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * k));
        unsigned sh = 16 * (unsigned)k;
        m.quote |= (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v, quote)) << sh;
        m.bslash |= (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v, bslash)) << sh;
        m.open |= (uint64_t)(uint16_t)_mm_movemask_epi8(
                      _mm_or_si128(_mm_cmpeq_epi8(v, ob), _mm_cmpeq_epi8(v, os)))
                  << sh;
        m.close |= (uint64_t)(uint16_t)_mm_movemask_epi8(
                       _mm_or_si128(_mm_cmpeq_epi8(v, cb), _mm_cmpeq_epi8(v, cs)))
                   << sh;
    }
    return m;
}

/* Bit k: the XOR of bits 0..k. Over the quotes of a block without
 * backslashes it is "inside a string" at every byte. */
static inline uint64_t prefix_xor(uint64_t x)
{
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    return x;
}
#endif

/* The same pass, answering exactly as the bytewise one, up to the first
 * NUL (then the NUL, if any, is the error). A block without a backslash,
 * nearly every block of a document, has its strings found from its quotes
 * at once, and only its brackets outside them are counted one by one; a
 * block with one takes the marked bytes through prescan_step() in order. */
err_t fhir__json_prescan(const char *buf, size_t len, int max_depth, err_detail_t *d)
{
#if defined(__SSE2__)
    const char *nul = memchr(buf, '\0', len);
    size_t limit = nul ? (size_t)(nul - buf) : len;
    int depth = 0;
    bool in_str = false;
    size_t resume = 0;
    for (size_t blk = 0; blk < limit; blk += 64) {
        prescan_masks_t m;
        if (len - blk >= 64) {
            m = prescan_masks(buf + blk);
        } else {
            char tail[64] = {0}; /* zero marks nothing */
            memcpy(tail, buf + blk, len - blk);
            m = prescan_masks(tail);
        }
        uint64_t live = limit - blk < 64 ? ((uint64_t)1 << (limit - blk)) - 1 : ~(uint64_t)0;
        if (!(m.bslash & live) && resume <= blk) {
            uint64_t inside = prefix_xor(m.quote & live) ^ (in_str ? ~(uint64_t)0 : 0);
            uint64_t brackets = (m.open | m.close) & ~inside & live;
            while (brackets) {
                unsigned bit = (unsigned)__builtin_ctzll(brackets);
                brackets &= brackets - 1;
                if (m.open >> bit & 1) {
                    if (++depth > max_depth)
                        return too_deep(d, max_depth, blk + bit);
                } else if (depth > 0) {
                    depth--;
                }
            }
            in_str = inside >> 63 & 1;
            continue;
        }
        uint64_t marks = (m.quote | m.bslash | m.open | m.close) & live;
        while (marks) {
            size_t i = blk + (size_t)__builtin_ctzll(marks);
            marks &= marks - 1;
            if (i < resume)
                continue;
            err_t e = prescan_step(buf, len, i, max_depth, &depth, &in_str, &resume, d);
            if (e)
                return e;
        }
    }
    if (nul)
        return err_set(d, ERR_NUL_BYTE, limit, "NUL byte at byte offset %zu", limit);
    return ERR_OK;
#else
    return fhir__json_prescan_bytewise(buf, len, max_depth, d);
#endif
}

/* Line and column (1-based) of byte offset off. */
static void line_col(const char *buf, size_t off, int *line, int *col)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < off; i++) {
        if (buf[i] == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
    }
    *line = l;
    *col = c;
}

static err_t bad_json(const char *buf, size_t len, size_t off, const char *what, err_detail_t *d)
{
    int line, col;
    if (off > len)
        off = len;
    line_col(buf, off, &line, &col);
    err_set(d, ERR_BAD_JSON, off, "%s at line %d, column %d (byte offset %zu)", what, line, col,
            off);
    if (d)
        d->segment = line;
    return ERR_BAD_JSON;
}

static int cmp_name(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static bool plain_name(const char *s)
{
    if (!*s || strlen(s) > 40)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return true;
}

/* The way from the root to a node, on the stack of the scan; rendered as a
 * path only for the error message. */
typedef struct scan_step {
    const struct scan_step *up;
    const cJSON *node; /* the member or element entered */
    size_t index;      /* its index, when in an array */
    bool in_array;
} scan_step_t;

static void path_append(const scan_step_t *s, char *path, size_t cap)
{
    if (!s)
        return;
    path_append(s->up, path, cap);
    size_t n = strlen(path);
    if (s->in_array)
        snprintf(path + n, cap - n, "[%zu]", s->index);
    else
        snprintf(path + n, cap - n, ".%s", plain_name(s->node->string) ? s->node->string : "?");
}

/* Names in one object mostly differ in their first byte: that is compared
 * before strcmp is called. */
static inline bool same_name(const char *a, const char *b)
{
    a = a ? a : "";
    b = b ? b : "";
    return a[0] == b[0] && strcmp(a, b) == 0;
}

/* A name given twice among an object's n members, or NULL. Small objects
 * (nearly all of a FHIR resource) are compared pair by pair; larger ones
 * sorted first, so that a hostile object with many keys stays O(n log n). */
static const char *dup_name(const cJSON *node, size_t n)
{
    if (n <= 16) {
        for (const cJSON *a = node->child; a; a = a->next)
            for (const cJSON *b = a->next; b; b = b->next)
                if (same_name(a->string, b->string))
                    return b->string ? b->string : "";
        return NULL;
    }
    const char **names = xmalloc(n * sizeof *names);
    size_t k = 0;
    for (const cJSON *c = node->child; c; c = c->next)
        names[k++] = c->string ? c->string : "";
    qsort(names, n, sizeof *names, cmp_name);
    const char *dup = NULL;
    for (k = 1; k < n && !dup; k++)
        if (strcmp(names[k - 1], names[k]) == 0)
            dup = names[k];
    xfree(names);
    return dup;
}

/* Refuses an object with the same property twice. cJSON keeps both and
 * answers lookups with the first, while the server behind the gate may take
 * the last: the gate would then judge other diagnoses than billing sees.
 * Recursion depth is bounded by the depth pre-scan; path holds the root's
 * name, and the way to the duplicate is appended to it only when found. */
static err_t dup_scan(const cJSON *node, const scan_step_t *at, char *path, size_t cap,
                      err_detail_t *d)
{
    size_t n = 0;
    for (const cJSON *c = node->child; c; c = c->next)
        n++;
    const char *dup = cJSON_IsObject(node) && n > 1 ? dup_name(node, n) : NULL;
    if (dup) {
        path_append(at, path, cap);
        size_t len = strlen(path);
        snprintf(path + len, cap - len, ".%s", plain_name(dup) ? dup : "?");
        err_set(d, ERR_BAD_VALUE, 0, "%s: property given twice in one object", path);
        fhir__where(d, path);
        return ERR_BAD_VALUE;
    }
    scan_step_t step = {.up = at, .in_array = cJSON_IsArray(node)};
    for (const cJSON *c = node->child; c; c = c->next, step.index++) {
        if (!c->child)
            continue;
        step.node = c;
        err_t e = dup_scan(c, &step, path, cap, d);
        if (e)
            return e;
    }
    return ERR_OK;
}

/* obj's first member called name, as cJSON_GetObjectItemCaseSensitive finds
 * it, with the first bytes compared before strcmp is called: the mapping
 * looks up some hundred names a Claim. */
static const cJSON *member(const cJSON *obj, const char *name)
{
    for (const cJSON *c = obj ? obj->child : NULL; c; c = c->next)
        if (c->string && c->string[0] == name[0] && strcmp(c->string, name) == 0)
            return c;
    return NULL;
}

/* A tree refused before it is handed to the document: one in the arena
 * goes with the document (fhir_doc_free()). */
static void drop_tree(const fhir_doc_t *doc, cJSON *root)
{
    if (!doc->tree_in_arena)
        cJSON_Delete(root);
}

err_t fhir__json_parse(const char *buf, size_t len, const fhir_opts_t *o, fhir_doc_t *doc,
                       err_detail_t *d)
{
    err_t e = fhir__json_prescan(buf, len, o->max_depth, d);
    if (e)
        return e;
    /* The tree is read into the document's arena (json_tree.c) when cJSON
     * allocates through xmalloc (xmalloc_hook_libraries()), so that the
     * edits fhir_out.c makes to it can be pointed there too; otherwise
     * cJSON reads it. A node and its strings take some 4-6 times the bytes
     * they came from. */
    doc->tree_in_arena = xmalloc_cjson_hooked();
    const char *end = NULL;
    cJSON *root;
    bool dup = true; /* unknown: cJSON does not say */
    if (doc->tree_in_arena) {
        size_t hint = len < 1024 ? 4096 : len < (128u << 10) ? len * 4 : (1u << 20);
        arena_init(&doc->tree_arena, hint);
        size_t end_at = 0, fail_at = 0;
        root = json_tree_parse(buf, len, &doc->tree_arena, &end_at, &fail_at, &dup);
        end = buf + (root ? end_at : fail_at);
    } else {
        root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    }
    if (!root) {
        size_t off = end && end >= buf ? (size_t)(end - buf) : 0;
        return bad_json(buf, len, off, "malformed JSON", d);
    }
    size_t off = (size_t)(end - buf);
    while (off < len && strchr(" \t\r\n", buf[off]) && buf[off])
        off++;
    if (off < len) {
        drop_tree(doc, root);
        return bad_json(buf, len, off, "data after the JSON value", d);
    }
    if (!cJSON_IsObject(root)) {
        drop_tree(doc, root);
        return bad_json(buf, len, 0, "top-level JSON value is not an object", d);
    }
    const cJSON *rt = member(root, "resourceType");
    char path[256];
    snprintf(path, sizeof path, "%s",
             cJSON_IsString(rt) && plain_name(rt->valuestring) ? rt->valuestring : "$");
    e = dup ? dup_scan(root, NULL, path, sizeof path, d) : ERR_OK;
    if (e) {
        drop_tree(doc, root);
        return e;
    }
    doc->tree = root;
    doc->root = root;
    doc->ops = &fhir__json_ops;
    return ERR_OK;
}

void fhir__json_free(void *tree)
{
    cJSON_Delete(tree);
}

static fhir__node_t j_get(fhir__node_t obj, const char *name, bool *bad)
{
    const cJSON *v = member(obj, name);
    if (v && (cJSON_IsArray(v) || cJSON_IsNull(v))) {
        *bad = true;
        return NULL;
    }
    return v;
}

static fhir__node_t j_first(fhir__node_t obj, const char *name, bool *bad)
{
    const cJSON *v = member(obj, name);
    if (!v)
        return NULL;
    if (!cJSON_IsArray(v)) {
        *bad = true;
        return NULL;
    }
    return v->child;
}

static fhir__node_t j_next(fhir__node_t item)
{
    return ((const cJSON *)item)->next;
}

static bool j_is_object(fhir__node_t n)
{
    return cJSON_IsObject((const cJSON *)n);
}

static int j_str(fhir__node_t n, const char **out)
{
    const cJSON *v = n;
    if (!cJSON_IsString(v) || !v->valuestring)
        return FHIR__BADTYPE;
    *out = v->valuestring;
    return FHIR__OK;
}

static int j_num(fhir__node_t n, double *out)
{
    const cJSON *v = n;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return FHIR__BADTYPE;
    *out = v->valuedouble;
    return FHIR__OK;
}

static const char *j_resource_type(fhir__node_t res)
{
    const cJSON *t = member(res, "resourceType");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static fhir__node_t j_resource(fhir__node_t container, bool *bad)
{
    if (!cJSON_IsObject((const cJSON *)container)) {
        *bad = true;
        return NULL;
    }
    return container;
}

const fhir__ops_t fhir__json_ops = {
    .get = j_get,
    .first = j_first,
    .next = j_next,
    .is_object = j_is_object,
    .str = j_str,
    .num = j_num,
    .resource_type = j_resource_type,
    .resource = j_resource,
};
