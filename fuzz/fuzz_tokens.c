/* fuzz_tokens.c - the http-tokens parser on arbitrary bytes: a set of
 * tokens or an error naming file:line, never a crash; a parsed set is then
 * asked about a token, as a request would. */
#include <stdint.h>
#include <string.h>

#include "auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    auth_tokens_t *t = NULL;
    err_detail_t d;
    if (auth_tokens_parse((const char *)data, size, "fuzz", &t, &d) == ERR_OK) {
        auth_creds_t c = {.authorization = slice_cstr("Bearer 0123456789abcdef0123456789abcdef")};
        auth_result_t r;
        auth_check(t, &c, AUTH_SCOPE_SUBMIT, &r);
    }
    auth_tokens_free(t);
    return 0;
}
