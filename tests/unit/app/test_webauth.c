/* test_webauth.c - unit tests of app/webauth.c: form fields (escapes, '+',
 * refusals: bad escape, encoded NUL, too long), the Cookie header, session
 * tokens, account names, argon2id hash and verify, and the accounts file
 * (add, change, remove, a line that does not parse). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "webauth.h"

static bool field(const char *body, const char *name, char *out, size_t cap)
{
    return webauth_form_field(body, strlen(body), name, out, cap);
}

static void test_form_fields(void **state)
{
    (void)state;
    char v[32];
    assert_true(field("user=coder1&password=a+b%26c%3D", "password", v, sizeof v));
    assert_string_equal(v, "a b&c=");
    assert_true(field("user=coder1&password=x", "user", v, sizeof v));
    assert_string_equal(v, "coder1");
    assert_true(field("users=no&user=yes", "user", v, sizeof v)); /* whole names only */
    assert_string_equal(v, "yes");
    assert_true(field("a=1&user=", "user", v, sizeof v));
    assert_string_equal(v, "");
    assert_false(field("user=coder1", "password", v, sizeof v));
    assert_false(field("password", "password", v, sizeof v)); /* no '=' */
    assert_false(field("password=%zz", "password", v, sizeof v));
    assert_false(field("password=%4", "password", v, sizeof v));
    assert_false(field("password=a%00b", "password", v, sizeof v));
    assert_false(field("password=0123456789", "password", v, 10)); /* refused, not cut */
    assert_true(field("password=012345678", "password", v, 10));
    /* A value that runs to the end of the buffer, not to a NUL. */
    assert_true(webauth_form_field("csrf=abcdef", 8, "csrf", v, sizeof v));
    assert_string_equal(v, "abc");
}

static void test_cookie(void **state)
{
    (void)state;
    char v[WEBAUTH_TOKEN_HEX + 1];
    const char *h = "theme=dark; sg_session=abc123 ;x=\"q\"";
    assert_true(webauth_cookie(h, strlen(h), "sg_session", v, sizeof v));
    assert_string_equal(v, "abc123");
    assert_true(webauth_cookie(h, strlen(h), "x", v, sizeof v));
    assert_string_equal(v, "q");
    assert_false(webauth_cookie(h, strlen(h), "session", v, sizeof v));
    assert_false(webauth_cookie(h, strlen(h), "theme", v, 4)); /* too long */
    assert_false(webauth_cookie("", 0, "sg_session", v, sizeof v));
}

static void test_tokens(void **state)
{
    (void)state;
    char a[WEBAUTH_TOKEN_HEX + 1], b[WEBAUTH_TOKEN_HEX + 1];
    webauth_token_new(a);
    webauth_token_new(b);
    assert_true(webauth_token_ok(a));
    assert_string_not_equal(a, b);
    assert_true(webauth_token_eq(a, a));
    assert_false(webauth_token_eq(a, b));
    char shorter[WEBAUTH_TOKEN_HEX + 1];
    memcpy(shorter, a, WEBAUTH_TOKEN_HEX - 1);
    shorter[WEBAUTH_TOKEN_HEX - 1] = '\0';
    assert_false(webauth_token_ok(shorter));
    a[5] = 'G';
    assert_false(webauth_token_ok(a));
    assert_false(webauth_token_ok(""));
    assert_true(webauth_name_ok("j.doe@billing-1"));
    assert_false(webauth_name_ok(""));
    assert_false(webauth_name_ok("a:b"));
    assert_false(webauth_name_ok("a b"));
}

static void test_hash_and_accounts(void **state)
{
    (void)state;
    char dir[] = "/tmp/sg-webauth-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/admin-users", dir);
    char h1[WEBAUTH_HASH_MAX], h2[WEBAUTH_HASH_MAX], got[WEBAUTH_HASH_MAX];
    assert_true(webauth_hash("first password", h1));
    assert_true(webauth_hash("second password", h2));
    assert_int_equal(strncmp(h1, "$argon2id$", 10), 0);
    assert_true(webauth_verify(h1, "first password"));
    assert_false(webauth_verify(h1, "first passwore"));
    err_detail_t d;
    assert_int_equal(webauth_users_find(path, "ann", got, &d), ERR_NOT_FOUND);
    assert_int_equal(webauth_users_set(path, "ann", h1, &d), ERR_OK);
    assert_int_equal(webauth_users_set(path, "bob", h2, &d), ERR_OK);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(webauth_users_find(path, "bob", got, &d), ERR_OK);
    assert_string_equal(got, h2);
    assert_int_equal(webauth_users_set(path, "ann", h2, &d), ERR_OK); /* passwd */
    assert_int_equal(webauth_users_find(path, "ann", got, &d), ERR_OK);
    assert_string_equal(got, h2);
    assert_int_equal(webauth_users_set(path, "ann", NULL, &d), ERR_OK);
    assert_int_equal(webauth_users_find(path, "ann", got, &d), ERR_NOT_FOUND);
    assert_int_equal(webauth_users_set(path, "ann", NULL, &d), ERR_NOT_FOUND);
    /* A broken line costs its own account only. */
    FILE *f = fopen(path, "a");
    fputs("not a line\nbad name:x\n", f);
    fclose(f);
    assert_int_equal(webauth_users_find(path, "bob", got, &d), ERR_OK);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    if (!webauth_init())
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_fields),
        cmocka_unit_test(test_cookie),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_hash_and_accounts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
