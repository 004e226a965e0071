/* auth.h - who may use the HTTP endpoints: the bearer tokens of the
 * http-tokens file (each a name, its scopes and the SHA-256 of the secret;
 * the secret itself is never stored) and the check each request passes.
 *
 * Ownership: auth_tokens_load/parse produce an auth_tokens_t that the caller
 * frees with auth_tokens_free (NULL accepted); it is never changed after
 * loading, so a reload builds a new set and swaps the pointer. auth_check
 * copies the name it reports, so a result outlives the set it came from.
 */
#ifndef SPINEGATE_AUTH_H
#define SPINEGATE_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"
#include "slice.h"

/* Scopes, as a bit set. A token lists the ones it has. */
typedef enum {
    AUTH_SCOPE_SUBMIT = 1 << 0,   /* POST Claim, POST a Bundle */
    AUTH_SCOPE_VALIDATE = 1 << 1, /* $validate */
    AUTH_SCOPE_METRICS = 1 << 2,  /* GET /metrics */
    AUTH_SCOPE_ADMIN = 1 << 3,    /* admin endpoints */
} auth_scope_t;

/* What a verified client certificate may do: everything but admin, which
 * needs a named token so that an admin action names who did it. */
#define AUTH_CERT_SCOPES (AUTH_SCOPE_SUBMIT | AUTH_SCOPE_VALIDATE | AUTH_SCOPE_METRICS)

/* A token shorter than this is refused even if its hash is listed: the file
 * holds only hashes, so the length of the secret is checked where it is
 * shown (32 random bytes are 44 base64 or 64 hex characters). */
#define AUTH_TOKEN_MIN_LEN 32
#define AUTH_NAME_MAX 64
#define AUTH_MAX_TOKENS 4096
#define AUTH_WHO_MAX (AUTH_NAME_MAX + 8) /* "cert:" + a name, NUL */

typedef struct auth_tokens auth_tokens_t;

/* Parses the text of a tokens file: one "NAME SCOPES sha256:HEX" a line,
 * '#' to the end of a line is a comment, blank lines are ignored. NAME is
 * 1-64 of [A-Za-z0-9._-] and unique; SCOPES a comma list of submit,
 * validate, metrics, admin; HEX 64 hex digits, unique in the file. path
 * names the file in messages. Errors: ERR_BAD_CONFIG with "path:line: why"
 * in d->msg and the line in d->segment; *out is NULL then. */
err_t auth_tokens_parse(const char *text, size_t len, const char *path, auth_tokens_t **out,
                        err_detail_t *d);

/* Reads and parses the file at path. Errors: ERR_IO (cannot read it),
 * ERR_TOO_LARGE (over 1 MiB), or those of auth_tokens_parse. */
err_t auth_tokens_load(const char *path, auth_tokens_t **out, err_detail_t *d);

size_t auth_tokens_count(const auth_tokens_t *t);
void auth_tokens_free(auth_tokens_t *t);

/* The scope named by s ("submit"...), or 0. */
unsigned auth_scope_parse(const char *s, size_t n);
const char *auth_scope_name(unsigned scope);

/* What a request shows. The connection fills cert_verified when its TLS
 * layer verified a client certificate against the listener's CA and
 * allow-list (mTLS); cert_name is then what the log names it by. */
typedef struct {
    slice_t authorization; /* the Authorization header; SLICE_NULL when absent */
    bool cert_verified;
    const char *cert_name; /* may be NULL */
} auth_creds_t;

typedef enum {
    AUTH_OK,        /* allowed */
    AUTH_MISSING,   /* no credentials: 401 */
    AUTH_INVALID,   /* a token that is malformed, too short or not listed: 401 */
    AUTH_FORBIDDEN, /* authenticated, but without the scope: 403 */
} auth_status_t;

typedef struct {
    auth_status_t status;
    char name[AUTH_WHO_MAX]; /* token name, "cert:NAME", "cert", or "-" */
} auth_result_t;

/* Decides whether creds may use an endpoint that needs scope. tokens may be
 * NULL (no file: only a certificate can authenticate). A token, when shown,
 * decides (a bad one is refused even over a certificate); else a verified
 * certificate counts with AUTH_CERT_SCOPES. Compares digests in constant
 * time against every listed token. Fills out (name "-" when nobody was
 * identified) and returns out->status. */
auth_status_t auth_check(const auth_tokens_t *tokens, const auth_creds_t *creds, unsigned scope,
                         auth_result_t *out);

#endif
