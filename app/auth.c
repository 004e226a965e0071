/* auth.c - the http-tokens file and the per-request check. Only SHA-256
 * digests of the tokens are kept (OpenSSL's libcrypto computes them); a
 * request's token is hashed and compared with CRYPTO_memcmp against every
 * listed digest, so the time taken says nothing about which bytes or which
 * entry matched.
 */
#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "hex.h"
#include "xmalloc.h"

#define DIGEST_LEN 32
#define FILE_MAX (1024 * 1024)

typedef struct {
    char name[AUTH_NAME_MAX + 1];
    unsigned scopes;
    unsigned char digest[DIGEST_LEN];
} token_t;

struct auth_tokens {
    token_t *v;
    size_t n, cap;
};

static const char *const scope_names[] = {"submit", "validate", "metrics", "admin"};
#define NSCOPES (sizeof scope_names / sizeof scope_names[0])

unsigned auth_scope_parse(const char *s, size_t n)
{
    for (size_t i = 0; i < NSCOPES; i++)
        if (strlen(scope_names[i]) == n && memcmp(s, scope_names[i], n) == 0)
            return 1u << i;
    return 0;
}

const char *auth_scope_name(unsigned scope)
{
    for (size_t i = 0; i < NSCOPES; i++)
        if (scope == 1u << i)
            return scope_names[i];
    return "?";
}

size_t auth_tokens_count(const auth_tokens_t *t)
{
    return t ? t->n : 0;
}

void auth_tokens_free(auth_tokens_t *t)
{
    if (!t)
        return;
    xfree(t->v);
    xfree(t);
}

__attribute__((format(printf, 4, 5))) static err_t line_error(err_detail_t *d, const char *path,
                                                              int line, const char *fmt, ...)
{
    char why[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    err_set(d, ERR_BAD_CONFIG, 0, "%.100s:%d: %s", path, line, why);
    if (d) {
        d->segment = line;
        snprintf(d->where, sizeof d->where, "%.40s:%d", path, line);
    }
    return ERR_BAD_CONFIG;
}

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n > AUTH_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

/* Splits the next whitespace-separated field off [*p, end). */
static slice_t next_field(const char **p, const char *end)
{
    const char *s = *p;
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    const char *e = s;
    while (e < end && *e != ' ' && *e != '\t')
        e++;
    *p = e;
    return (slice_t){s, (size_t)(e - s)};
}

/* Parses one line (comment already cut off) into t; false with d set. A
 * blank line gives t->name[0] == '\0'. */
static bool parse_line(const char *s, const char *end, const char *path, int line, token_t *t,
                       err_detail_t *d)
{
    memset(t, 0, sizeof *t);
    const char *p = s;
    slice_t name = next_field(&p, end), scopes = next_field(&p, end), hash = next_field(&p, end),
            more = next_field(&p, end);
    if (!name.len)
        return true;
    if (!scopes.len || !hash.len || more.len) {
        line_error(d, path, line, "expected NAME SCOPES sha256:HEX");
        return false;
    }
    if (!name_ok(name.ptr, name.len)) {
        line_error(d, path, line, "a token name is 1-64 letters, digits, '.', '_' or '-'");
        return false;
    }
    memcpy(t->name, name.ptr, name.len);
    for (const char *q = scopes.ptr, *qe = scopes.ptr + scopes.len; q <= qe;) {
        const char *comma = memchr(q, ',', (size_t)(qe - q));
        const char *ie = comma ? comma : qe;
        unsigned sc = auth_scope_parse(q, (size_t)(ie - q));
        if (!sc) {
            char bad[40];
            snprintf(bad, sizeof bad, "%.*s", (int)(ie - q < 32 ? ie - q : 32), q);
            line_error(d, path, line, "unknown scope '%s' (submit, validate, metrics, admin)", bad);
            return false;
        }
        if (t->scopes & sc) {
            line_error(d, path, line, "scope %s listed twice", auth_scope_name(sc));
            return false;
        }
        t->scopes |= sc;
        q = ie + 1;
    }
    if (hash.len != 7 + 2 * DIGEST_LEN || strncmp(hash.ptr, "sha256:", 7) != 0) {
        line_error(d, path, line, "expected sha256: and the 64 hex digits of the token's SHA-256");
        return false;
    }
    for (size_t i = 0; i < DIGEST_LEN; i++) {
        int hi = hex_value(hash.ptr[7 + 2 * i]), lo = hex_value(hash.ptr[8 + 2 * i]);
        if (hi < 0 || lo < 0) {
            line_error(d, path, line, "the digest after sha256: is not hexadecimal");
            return false;
        }
        t->digest[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

err_t auth_tokens_parse(const char *text, size_t len, const char *path, auth_tokens_t **out,
                        err_detail_t *d)
{
    *out = NULL;
    err_clear(d);
    auth_tokens_t *set = xcalloc(1, sizeof *set);
    const char *p = text, *end = text + len;
    int line = 0;
    while (p < end) {
        line++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *hash = memchr(p, '#', (size_t)(le - p));
        const char *ce = hash ? hash : le;
        if (ce > p && ce[-1] == '\r')
            ce--;
        if (memchr(p, '\0', (size_t)(le - p)) || memchr(p, '\r', (size_t)(ce - p))) {
            line_error(d, path, line, "a NUL byte or a stray carriage return");
            goto fail;
        }
        token_t t;
        if (!parse_line(p, ce, path, line, &t, d))
            goto fail;
        p = nl ? nl + 1 : end;
        if (!t.name[0])
            continue;
        for (size_t i = 0; i < set->n; i++) {
            if (strcmp(set->v[i].name, t.name) == 0) {
                line_error(d, path, line, "token name '%s' listed twice", t.name);
                goto fail;
            }
            if (memcmp(set->v[i].digest, t.digest, DIGEST_LEN) == 0) {
                line_error(d, path, line, "the same digest as token '%s'", set->v[i].name);
                goto fail;
            }
        }
        if (set->n == AUTH_MAX_TOKENS) {
            line_error(d, path, line, "more than %d tokens", AUTH_MAX_TOKENS);
            goto fail;
        }
        if (set->n == set->cap) {
            set->cap = set->cap ? set->cap * 2 : 8;
            set->v = xrealloc(set->v, set->cap * sizeof *set->v);
        }
        set->v[set->n++] = t;
    }
    *out = set;
    return ERR_OK;
fail:
    auth_tokens_free(set);
    return ERR_BAD_CONFIG;
}

err_t auth_tokens_load(const char *path, auth_tokens_t **out, err_detail_t *d)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(d, ERR_IO, 0, "cannot open %.150s: %s", path, strerror(errno));
    char *text = xmalloc(FILE_MAX + 1);
    size_t n = fread(text, 1, FILE_MAX + 1, f);
    bool failed = ferror(f);
    fclose(f);
    err_t rc;
    if (failed)
        rc = err_set(d, ERR_IO, 0, "cannot read %.150s", path);
    else if (n > FILE_MAX)
        rc = err_set(d, ERR_TOO_LARGE, 0, "%.150s: larger than 1 MiB", path);
    else
        rc = auth_tokens_parse(text, n, path, out, d);
    xfree(text);
    return rc;
}

/* The token of "Bearer TOKEN" (scheme case-insensitive, RFC 7235), or
 * false when the header is another scheme or the token is not a b64token
 * (RFC 6750 2.1). */
static bool bearer_token(slice_t h, slice_t *tok)
{
    if (h.len < 7 || strncasecmp(h.ptr, "Bearer", 6) != 0 || (h.ptr[6] != ' ' && h.ptr[6] != '\t'))
        return false;
    const char *p = h.ptr + 7, *end = h.ptr + h.len;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    size_t n = (size_t)(end - p);
    size_t i = 0;
    while (i < n && (isalnum((unsigned char)p[i]) || strchr("-._~+/", p[i])))
        i++;
    while (i < n && p[i] == '=')
        i++;
    if (i == 0 || i != n)
        return false;
    *tok = (slice_t){p, n};
    return true;
}

auth_status_t auth_check(const auth_tokens_t *tokens, const auth_creds_t *creds, unsigned scope,
                         auth_result_t *out)
{
    snprintf(out->name, sizeof out->name, "-");
    if (!creds->authorization.ptr) {
        if (!creds->cert_verified)
            return out->status = AUTH_MISSING;
        if (creds->cert_name && creds->cert_name[0])
            snprintf(out->name, sizeof out->name, "cert:%.*s", AUTH_NAME_MAX, creds->cert_name);
        else
            snprintf(out->name, sizeof out->name, "cert");
        return out->status = (AUTH_CERT_SCOPES & scope) == scope ? AUTH_OK : AUTH_FORBIDDEN;
    }
    slice_t tok;
    if (!bearer_token(creds->authorization, &tok) || tok.len < AUTH_TOKEN_MIN_LEN)
        return out->status = AUTH_INVALID;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(tok.ptr, tok.len, md, &mdlen, EVP_sha256(), NULL) || mdlen != DIGEST_LEN)
        return out->status = AUTH_INVALID;
    /* Every entry is compared, without stopping at a match. */
    const token_t *hit = NULL;
    for (size_t i = 0; tokens && i < tokens->n; i++)
        if (CRYPTO_memcmp(md, tokens->v[i].digest, DIGEST_LEN) == 0)
            hit = &tokens->v[i];
    OPENSSL_cleanse(md, sizeof md);
    if (!hit)
        return out->status = AUTH_INVALID;
    snprintf(out->name, sizeof out->name, "%s", hit->name);
    return out->status = (hit->scopes & scope) == scope ? AUTH_OK : AUTH_FORBIDDEN;
}
