/* fuzz_webauth.c - the web page's login form and Cookie header parsers on
 * arbitrary bytes: the same input read as a form body and as a Cookie
 * header; a value is either decoded within its buffer or refused. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "webauth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    static const char *const fields[] = {"user", "password", "csrf", "note", ""};
    char out[256];
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (webauth_form_field(p, size, fields[i], out, sizeof out)) {
            assert(strlen(out) < sizeof out);
            (void)webauth_name_ok(out);
        }
    char tok[WEBAUTH_TOKEN_HEX + 1];
    if (webauth_cookie(p, size, "sg_session", tok, sizeof tok) && webauth_token_ok(tok))
        assert(strlen(tok) == WEBAUTH_TOKEN_HEX);
    (void)webauth_form_field(p, size, "password", out, 1);
    return 0;
}
