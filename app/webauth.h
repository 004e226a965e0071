/* webauth.h - the pieces of the worklist web page's login that read
 * untrusted input or touch secrets: form and cookie parsing, session token
 * checks, the accounts file (NAME:HASH lines) and argon2id password hashes
 * (libsodium). No I/O on the loop here but the accounts file; the daemon
 * hashes and verifies on the thread pool (argon2id is slow on purpose).
 */
#ifndef SPINEGATE_WEBAUTH_H
#define SPINEGATE_WEBAUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

/* A session id or CSRF token: 32 random bytes as 64 hex digits. */
#define WEBAUTH_TOKEN_HEX 64
#define WEBAUTH_NAME_MAX 64
#define WEBAUTH_HASH_MAX 128 /* crypto_pwhash_STRBYTES */

/* Decodes the value of field name in an application/x-www-form-urlencoded
 * body (first occurrence) into out (cap bytes, NUL-terminated). False when
 * absent, badly escaped, holding a NUL, or longer than cap - 1. */
bool webauth_form_field(const char *body, size_t len, const char *name, char *out, size_t cap);

/* The value of cookie name in a Cookie header (len bytes, not
 * NUL-terminated) into out (cap bytes). False when absent or too long. */
bool webauth_cookie(const char *header, size_t len, const char *name, char *out, size_t cap);

/* True when s is exactly WEBAUTH_TOKEN_HEX lowercase hex digits. */
bool webauth_token_ok(const char *s);

/* Fills out (WEBAUTH_TOKEN_HEX + 1 bytes) with a fresh random token. */
void webauth_token_new(char *out);

/* Constant-time equality of two tokens that passed webauth_token_ok. */
bool webauth_token_eq(const char *a, const char *b);

/* Account names: 1 to WEBAUTH_NAME_MAX of [A-Za-z0-9._@-]. */
bool webauth_name_ok(const char *name);

/* Initializes libsodium; false when it cannot (no entropy source). */
bool webauth_init(void);

/* Hashes password with argon2id (interactive limits) into out
 * (WEBAUTH_HASH_MAX bytes). False when out of memory. */
bool webauth_hash(const char *password, char *out);

/* True when password matches hash. */
bool webauth_verify(const char *hash, const char *password);

/* Looks name up in the accounts file path; copies its hash into hash
 * (WEBAUTH_HASH_MAX bytes). Errors: ERR_NOT_FOUND (no such account),
 * ERR_IO (file unreadable). */
err_t webauth_users_find(const char *path, const char *name, char *hash, err_detail_t *d);

/* Sets name's hash (hash NULL: removes the account) in path, rewriting the
 * file through a temporary one (mode 0600). Errors: ERR_NOT_FOUND (removing
 * an account that is not there), ERR_IO. */
err_t webauth_users_set(const char *path, const char *name, const char *hash, err_detail_t *d);

#endif
