/* test_auth.c - unit tests of app/auth.c: the http-tokens file parser (what
 * it takes, and each refusal with its file:line) and auth_check (missing,
 * malformed, short, unknown and listed tokens, scopes, and the client
 * certificate hook). The digests are sha256sum's, written out, so that a
 * wrong hash in the code cannot agree with itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"

/* printf %s 0123456789abcdef0123456789abcdef | sha256sum */
#define TOK_A "0123456789abcdef0123456789abcdef"
#define SHA_A "3eb1bd439947eb762998e566ccc2e099c791118b2f40579cc4f7da2b5061b7f9"
/* printf %s bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb | sha256sum (40 b) */
#define TOK_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define SHA_B "e26d2da3ab585c9840b157a4a9b5639fda905c2ad33d04d2c598be8883b51236"

static auth_tokens_t *parse_ok(const char *text)
{
    auth_tokens_t *t = NULL;
    err_detail_t d;
    err_t rc = auth_tokens_parse(text, strlen(text), "tokens", &t, &d);
    if (rc != ERR_OK)
        fail_msg("refused: %s", d.msg);
    assert_non_null(t);
    return t;
}

/* Expects text refused with msg beginning with "tokens:LINE: " and holding
 * needle. */
static void parse_bad(const char *text, int line, const char *needle)
{
    auth_tokens_t *t = (auth_tokens_t *)1;
    err_detail_t d;
    assert_int_equal(auth_tokens_parse(text, strlen(text), "tokens", &t, &d), ERR_BAD_CONFIG);
    assert_null(t);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "tokens:%d: ", line);
    if (strncmp(d.msg, prefix, strlen(prefix)) != 0 || !strstr(d.msg, needle))
        fail_msg("for %s expected '%s...%s', got '%s'", text, prefix, needle, d.msg);
    assert_int_equal(d.segment, line);
}

static auth_status_t check(const auth_tokens_t *t, const char *header, unsigned scope,
                           auth_result_t *r)
{
    auth_creds_t c = {.authorization = header ? slice_cstr(header) : SLICE_NULL};
    return auth_check(t, &c, scope, r);
}

static void test_parse_good_file(void **state)
{
    (void)state;
    char text[1024];
    snprintf(text, sizeof text,
             "# tokens of the interface engine\n"
             "\n"
             "mirth-prod submit,validate sha256:" SHA_A "   # the engine\n"
             "  prometheus\tmetrics  sha256:" SHA_B "\r\n"
             "ops-1 admin,metrics,validate,submit sha256:%s",
             "00000000000000000000000000000000000000000000000000000000000000AF");
    auth_tokens_t *t = parse_ok(text);
    assert_int_equal(auth_tokens_count(t), 3);
    auth_tokens_free(t);
    t = parse_ok("");
    assert_int_equal(auth_tokens_count(t), 0);
    auth_tokens_free(t);
    t = parse_ok("# only a comment\n\n   \n");
    assert_int_equal(auth_tokens_count(t), 0);
    auth_tokens_free(t);
    auth_tokens_free(NULL);
}

static void test_parse_refusals(void **state)
{
    (void)state;
    parse_bad("a submit\n", 1, "expected NAME SCOPES sha256:HEX");
    parse_bad("# c\na submit sha256:" SHA_A " extra\n", 2, "expected NAME SCOPES");
    parse_bad("a submit,bogus sha256:" SHA_A "\n", 1, "unknown scope 'bogus'");
    parse_bad("a submit, sha256:" SHA_A "\n", 1, "unknown scope ''"); /* no spaces in SCOPES */
    parse_bad("a submit,,metrics sha256:" SHA_A "\n", 1, "unknown scope ''");
    parse_bad("a submit,submit sha256:" SHA_A "\n", 1, "scope submit listed twice");
    parse_bad("a Submit sha256:" SHA_A "\n", 1, "unknown scope 'Submit'");
    parse_bad("a submit " SHA_A "\n", 1, "expected sha256:");
    parse_bad("a submit sha1:" SHA_A "\n", 1, "expected sha256:");
    parse_bad("a submit sha256:" SHA_A "0\n", 1, "expected sha256:");
    parse_bad("a submit sha256:3eb1\n", 1, "expected sha256:");
    parse_bad("a submit sha256:zeb1bd439947eb762998e566ccc2e099c791118b2f40579cc4f7da2b5061b7f9\n",
              1, "not hexadecimal");
    parse_bad("na/me submit sha256:" SHA_A "\n", 1, "a token name is");
    parse_bad(
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa submit sha256:" SHA_A
        "\n",
        1, "a token name is");
    parse_bad("a submit sha256:" SHA_A "\n\na metrics sha256:"
              "00000000000000000000000000000000000000000000000000000000000000AF\n",
              3, "token name 'a' listed twice");
    parse_bad("a submit sha256:" SHA_A "\nb metrics sha256:" SHA_A "\n", 2,
              "the same digest as token 'a'");
    parse_bad("a submit\rsha256:" SHA_A "\n", 1, "carriage return");
    const char nul[] = "a submit sha256:" SHA_A "\n\0\n";
    auth_tokens_t *t;
    err_detail_t d;
    assert_int_equal(auth_tokens_parse(nul, sizeof nul - 1, "tokens", &t, &d), ERR_BAD_CONFIG);
    assert_string_equal(d.msg, "tokens:2: a NUL byte or a stray carriage return");
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/sg-auth-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "x submit sha256:" SHA_A "\ny nope sha256:" SHA_A "\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    auth_tokens_t *t;
    err_detail_t d;
    assert_int_equal(auth_tokens_load(path, &t, &d), ERR_BAD_CONFIG);
    char want[128];
    snprintf(want, sizeof want, "%s:2: unknown scope 'nope'", path);
    assert_non_null(strstr(d.msg, want));
    unlink(path);
    assert_int_equal(auth_tokens_load(path, &t, &d), ERR_IO);
    assert_null(t);
    assert_non_null(strstr(d.msg, "cannot open"));
}

static void test_check_tokens_and_scopes(void **state)
{
    (void)state;
    char text[512];
    snprintf(text, sizeof text, "%s",
             "engine submit,validate sha256:" SHA_A "\nprom metrics sha256:" SHA_B "\n");
    auth_tokens_t *t = parse_ok(text);
    auth_result_t r;

    assert_int_equal(check(t, NULL, AUTH_SCOPE_SUBMIT, &r), AUTH_MISSING);
    assert_string_equal(r.name, "-");
    assert_int_equal(check(t, "Bearer " TOK_A, AUTH_SCOPE_SUBMIT, &r), AUTH_OK);
    assert_string_equal(r.name, "engine");
    assert_int_equal(check(t, "bearer  " TOK_A, AUTH_SCOPE_VALIDATE, &r), AUTH_OK);
    assert_int_equal(check(t, "Bearer " TOK_A, AUTH_SCOPE_METRICS, &r), AUTH_FORBIDDEN);
    assert_string_equal(r.name, "engine");
    assert_int_equal(check(t, "Bearer " TOK_A, AUTH_SCOPE_ADMIN, &r), AUTH_FORBIDDEN);
    assert_int_equal(check(t, "Bearer " TOK_B, AUTH_SCOPE_METRICS, &r), AUTH_OK);
    assert_string_equal(r.name, "prom");
    assert_int_equal(check(t, "Bearer " TOK_B, AUTH_SCOPE_SUBMIT, &r), AUTH_FORBIDDEN);

    /* Anything but the exact listed token is invalid, and names nobody. */
    static const char *const bad[] = {
        "Bearer " TOK_A "x",
        "Bearer " TOK_A " ",
        "Bearer 1123456789abcdef0123456789abcdef",
        "Basic " TOK_A,
        "Bearer",
        "Bearer ",
        "",
        "Bearer " TOK_A "\x01",
        "Bearer " TOK_A "=x",
        "Bearer short-but-listed?",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(check(t, bad[i], AUTH_SCOPE_SUBMIT, &r), AUTH_INVALID);
        assert_string_equal(r.name, "-");
    }
    auth_tokens_free(t);
    /* No tokens file: a token cannot be valid. */
    assert_int_equal(check(NULL, "Bearer " TOK_A, AUTH_SCOPE_SUBMIT, &r), AUTH_INVALID);
}

static void test_short_token_refused_even_if_listed(void **state)
{
    (void)state;
    /* printf %s abc | sha256sum */
    auth_tokens_t *t = parse_ok(
        "weak submit sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n");
    auth_result_t r;
    assert_int_equal(check(t, "Bearer abc", AUTH_SCOPE_SUBMIT, &r), AUTH_INVALID);
    auth_tokens_free(t);
}

static void test_client_certificate_hook(void **state)
{
    (void)state;
    auth_tokens_t *t = parse_ok("engine submit sha256:" SHA_A "\n");
    auth_result_t r;
    auth_creds_t c = {.authorization = SLICE_NULL, .cert_verified = true, .cert_name = "CN=mirth"};
    assert_int_equal(auth_check(t, &c, AUTH_SCOPE_METRICS, &r), AUTH_OK);
    assert_string_equal(r.name, "cert:CN=mirth");
    assert_int_equal(auth_check(t, &c, AUTH_SCOPE_ADMIN, &r), AUTH_FORBIDDEN);
    c.cert_name = NULL;
    assert_int_equal(auth_check(NULL, &c, AUTH_SCOPE_SUBMIT, &r), AUTH_OK);
    assert_string_equal(r.name, "cert");
    /* A token shown over a certificate decides, a bad one included. */
    c.authorization = slice_cstr("Bearer " TOK_B);
    assert_int_equal(auth_check(t, &c, AUTH_SCOPE_SUBMIT, &r), AUTH_INVALID);
    c.authorization = slice_cstr("Bearer " TOK_A);
    assert_int_equal(auth_check(t, &c, AUTH_SCOPE_SUBMIT, &r), AUTH_OK);
    assert_string_equal(r.name, "engine");
    auth_tokens_free(t);
}

static void test_scope_names(void **state)
{
    (void)state;
    assert_int_equal(auth_scope_parse("submit", 6), AUTH_SCOPE_SUBMIT);
    assert_int_equal(auth_scope_parse("validate", 8), AUTH_SCOPE_VALIDATE);
    assert_int_equal(auth_scope_parse("metrics", 7), AUTH_SCOPE_METRICS);
    assert_int_equal(auth_scope_parse("admin", 5), AUTH_SCOPE_ADMIN);
    assert_int_equal(auth_scope_parse("submitx", 6), AUTH_SCOPE_SUBMIT);
    assert_int_equal(auth_scope_parse("admi", 4), 0);
    assert_string_equal(auth_scope_name(AUTH_SCOPE_METRICS), "metrics");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good_file),
        cmocka_unit_test(test_parse_refusals),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_check_tokens_and_scopes),
        cmocka_unit_test(test_short_token_refused_even_if_listed),
        cmocka_unit_test(test_client_certificate_hook),
        cmocka_unit_test(test_scope_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
