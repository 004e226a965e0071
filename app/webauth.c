/* webauth.c - login input parsing, session tokens, accounts file, argon2id. */
#include "webauth.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hex.h"

/* Form decoding: '+' is a space, %XX a byte; NUL bytes refused (they would
 * cut a C string short of what was checked). */
static bool form_decode(const char *p, size_t n, char *out, size_t cap)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= n)
                return false;
            int hi = hex_value(p[i + 1]), lo = hex_value(p[i + 2]);
            if (hi < 0 || lo < 0)
                return false;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0' || w + 1 >= cap)
            return false;
        out[w++] = c;
    }
    if (cap == 0)
        return false;
    out[w] = '\0';
    return true;
}

bool webauth_form_field(const char *body, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        if (eq && (size_t)(eq - p) == nl && memcmp(p, name, nl) == 0)
            return form_decode(eq + 1, (size_t)(pe - eq - 1), out, cap);
        p = pe + 1;
    }
    return false;
}

bool webauth_cookie(const char *header, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = header, *end = header + len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pe = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        if (eq && (size_t)(eq - p) == nl && memcmp(p, name, nl) == 0) {
            const char *v = eq + 1, *ve = pe;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (ve - v >= 2 && *v == '"' && ve[-1] == '"')
                v++, ve--;
            size_t vl = (size_t)(ve - v);
            if (vl >= cap || memchr(v, '\0', vl))
                return false;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return true;
        }
        p = pe + 1;
    }
    return false;
}

bool webauth_token_ok(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (i >= WEBAUTH_TOKEN_HEX ||
            !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return i == WEBAUTH_TOKEN_HEX;
}

void webauth_token_new(char *out)
{
    unsigned char raw[WEBAUTH_TOKEN_HEX / 2];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(out, WEBAUTH_TOKEN_HEX + 1, raw, sizeof raw);
    sodium_memzero(raw, sizeof raw);
}

bool webauth_token_eq(const char *a, const char *b)
{
    return sodium_memcmp(a, b, WEBAUTH_TOKEN_HEX) == 0;
}

bool webauth_name_ok(const char *name)
{
    size_t i = 0;
    for (; name[i]; i++) {
        char c = name[i];
        if (i >= WEBAUTH_NAME_MAX ||
            !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '@'))
            return false;
    }
    return i > 0;
}

bool webauth_init(void)
{
    return sodium_init() >= 0;
}

bool webauth_hash(const char *password, char *out)
{
    return crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                             crypto_pwhash_MEMLIMIT_INTERACTIVE) == 0;
}

bool webauth_verify(const char *hash, const char *password)
{
    return crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
}

/* Reads the next "NAME:HASH" line; false at the end. Lines that do not
 * parse are skipped (a hand edit gone wrong locks out one account, not all). */
static bool next_user(FILE *f, char *name, char *hash)
{
    char line[WEBAUTH_NAME_MAX + WEBAUTH_HASH_MAX + 8];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *colon = strchr(line, ':');
        if (line[0] == '#' || !colon)
            continue;
        *colon = '\0';
        if (!webauth_name_ok(line) || strlen(colon + 1) >= WEBAUTH_HASH_MAX)
            continue;
        strcpy(name, line);
        strcpy(hash, colon + 1);
        return true;
    }
    return false;
}

err_t webauth_users_find(const char *path, const char *name, char *hash, err_detail_t *d)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(d, errno == ENOENT ? ERR_NOT_FOUND : ERR_IO, 0, "%s: %s", path,
                       strerror(errno));
    char n[WEBAUTH_NAME_MAX + 8], h[WEBAUTH_HASH_MAX + 8];
    bool found = false;
    while (!found && next_user(f, n, h))
        if (strcmp(n, name) == 0) {
            memcpy(hash, h, strlen(h) + 1); /* next_user keeps it under WEBAUTH_HASH_MAX */
            found = true;
        }
    fclose(f);
    sodium_memzero(h, sizeof h);
    return found ? ERR_OK : err_set(d, ERR_NOT_FOUND, 0, "no account %s", name);
}

err_t webauth_users_set(const char *path, const char *name, const char *hash, err_detail_t *d)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return err_set(d, ERR_IO, 0, "path too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_set(d, ERR_IO, 0, "%s: %s", tmp, strerror(errno));
    FILE *out = fdopen(fd, "w");
    if (!out) {
        close(fd);
        return err_set(d, ERR_IO, 0, "%s: %s", tmp, strerror(errno));
    }
    bool found = false;
    FILE *in = fopen(path, "r");
    if (in) {
        char n[WEBAUTH_NAME_MAX + 8], h[WEBAUTH_HASH_MAX + 8];
        while (next_user(in, n, h)) {
            if (strcmp(n, name) == 0) {
                found = true;
                if (hash)
                    fprintf(out, "%s:%s\n", name, hash);
            } else {
                fprintf(out, "%s:%s\n", n, h);
            }
        }
        fclose(in);
    } else if (errno != ENOENT) {
        int e = errno;
        fclose(out);
        unlink(tmp);
        return err_set(d, ERR_IO, 0, "%s: %s", path, strerror(e));
    }
    if (hash && !found)
        fprintf(out, "%s:%s\n", name, hash);
    bool bad = fflush(out) != 0 || fsync(fileno(out)) != 0;
    bad = fclose(out) != 0 || bad;
    if (!bad && !hash && !found) {
        unlink(tmp);
        return err_set(d, ERR_NOT_FOUND, 0, "no account %s", name);
    }
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return err_set(d, ERR_IO, 0, "%s: %s", path, strerror(e));
    }
    return ERR_OK;
}
