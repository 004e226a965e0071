/* test_admincmd.c - unit tests of app/admincmd.c's requests: the command
 * line parsed (and refused: unknown command, options a command does not
 * take, bad ids, requeue without a target), carried as JSON and read back
 * unchanged, and JSON that spinegate-admin would not send refused with a
 * reason (the admin socket's input). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "admincmd.h"
#include "xmalloc.h"

static FILE *devnull;

static int parse(admin_req_t *r, int argc, char **argv)
{
    memset(r, 0, sizeof *r);
    return admin_req_parse(argc, argv, r, devnull);
}

#define ARGV(...)                                                                                  \
    (char *[])                                                                                     \
    {                                                                                              \
        __VA_ARGS__, NULL                                                                          \
    }
#define ARGC(...) ((int)(sizeof((char *[]){__VA_ARGS__}) / sizeof(char *)))
#define PARSE(r, ...) parse(r, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

static void round_trip(const admin_req_t *r, admin_req_t *back)
{
    cJSON *o = admin_req_json(r);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    cJSON *again = cJSON_Parse(s);
    cJSON_free(s);
    char why[128];
    assert_true(admin_req_from_json(again, back, why, sizeof why));
    cJSON_Delete(again);
}

static void test_parse_and_round_trip(void **state)
{
    (void)state;
    admin_req_t r, b;
    assert_int_equal(PARSE(&r, "list", "--state", "open", "--rule", "excludes1-pair", "--source",
                           "mllp", "--since", "2026-12-01", "--ref", "MRN1", "--json"),
                     0);
    assert_int_equal(r.op, ADMIN_LIST);
    assert_true(r.json);
    r.who = xstrdup("jdoe");
    round_trip(&r, &b);
    assert_int_equal(b.op, ADMIN_LIST);
    assert_string_equal(b.state, "open");
    assert_string_equal(b.rule, "excludes1-pair");
    assert_string_equal(b.source, "mllp");
    assert_string_equal(b.ref, "MRN1");
    assert_string_equal(b.who, "jdoe");
    assert_int_equal(b.since_ms, r.since_ms);
    assert_true(b.since_ms > 0);
    assert_true(b.json);
    admin_req_free(&r);
    admin_req_free(&b);

    assert_int_equal(PARSE(&r, "requeue", "3", "5", "8"), 0);
    round_trip(&r, &b);
    assert_int_equal(b.nids, 3);
    assert_int_equal(b.ids[2], 8);
    admin_req_free(&r);
    admin_req_free(&b);

    assert_int_equal(PARSE(&r, "resend", "42", "fix.hl7", "--note", "Q76.2 dropped"), 0);
    assert_string_equal(r.input_path, "fix.hl7");
    r.has_input = true;
    round_trip(&r, &b);
    assert_int_equal(b.op, ADMIN_RESEND);
    assert_int_equal(b.ids[0], 42);
    assert_string_equal(b.note, "Q76.2 dropped");
    assert_true(b.has_input);
    assert_null(b.input_path); /* the program's file name stays there */
    admin_req_free(&r);
    admin_req_free(&b);
}

static void test_parse_refusals(void **state)
{
    (void)state;
    admin_req_t r;
    assert_int_equal(PARSE(&r, "frobnicate"), 2);
    admin_req_free(&r);
    assert_int_equal(PARSE(&r, "list", "--all"), 2);
    admin_req_free(&r);
    assert_int_equal(PARSE(&r, "list", "--source", "ftp"), 2);
    admin_req_free(&r);
    assert_int_equal(PARSE(&r, "list", "--since", "yesterday"), 2);
    admin_req_free(&r);
    assert_int_equal(PARSE(&r, "show", "0"), 2);
    admin_req_free(&r);
    assert_int_equal(PARSE(&r, "show", "12x"), 2);
    admin_req_free(&r);
    assert_int_equal(PARSE(&r, "resolve", "4"), 2); /* no note */
    admin_req_free(&r);
    assert_int_equal(PARSE(&r, "requeue"), 2);
    admin_req_free(&r);
    assert_int_equal(PARSE(&r, "requeue", "--all", "7"), 2);
    admin_req_free(&r);
    assert_int_equal(PARSE(&r, "requeue", "--json", "--all"), 2);
    admin_req_free(&r);
    assert_int_equal(PARSE(&r, "stats", "extra"), 2);
    admin_req_free(&r);
    assert_int_equal(PARSE(&r, "requeue", "--all"), 0);
    admin_req_free(&r);
}

static bool from(const char *json)
{
    cJSON *o = cJSON_Parse(json);
    admin_req_t r;
    char why[128] = "";
    bool ok = admin_req_from_json(o, &r, why, sizeof why);
    if (ok)
        admin_req_free(&r);
    else
        assert_true(why[0]); /* refused with a reason */
    cJSON_Delete(o);
    return ok;
}

static void test_hostile_json(void **state)
{
    (void)state;
    assert_true(from("{\"op\":\"list\"}"));
    assert_true(from("{\"op\":\"unlock\",\"name\":\"ann\"}"));
    assert_false(from("[]"));
    assert_false(from("{}"));
    assert_false(from("{\"op\":\"drop table\"}"));
    assert_false(from("{\"op\":7}"));
    assert_false(from("{\"op\":\"list\",\"json\":\"yes\"}"));
    assert_false(from("{\"op\":\"list\",\"source\":\"ftp\"}"));
    assert_false(from("{\"op\":\"list\",\"since_ms\":-1}"));
    assert_false(from("{\"op\":\"list\",\"since_ms\":1.5}"));
    assert_false(from("{\"op\":\"list\",\"since_ms\":1e300}"));
    assert_false(from("{\"op\":\"show\",\"ids\":[]}"));
    assert_false(from("{\"op\":\"show\",\"ids\":[1,2]}"));
    assert_false(from("{\"op\":\"show\",\"ids\":[0]}"));
    assert_false(from("{\"op\":\"show\",\"ids\":[\"1\"]}"));
    assert_false(from("{\"op\":\"show\",\"ids\":{\"a\":1}}"));
    assert_false(from("{\"op\":\"resolve\",\"ids\":[1]}"));
    assert_false(from("{\"op\":\"resolve\",\"ids\":[1],\"note\":\"\"}"));
    assert_false(from("{\"op\":\"requeue\"}"));
    assert_false(from("{\"op\":\"unlock\"}"));
    assert_false(from("{\"op\":\"list\",\"has_input\":true}"));
    char big[6000];
    int n = snprintf(big, sizeof big, "{\"op\":\"resolve\",\"ids\":[1],\"note\":\"");
    memset(big + n, 'x', 5000);
    snprintf(big + n + 5000, sizeof big - (size_t)n - 5000, "\"}");
    assert_false(from(big)); /* a note past 4096 */
}

int main(void)
{
    devnull = fopen("/dev/null", "w");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_round_trip),
        cmocka_unit_test(test_parse_refusals),
        cmocka_unit_test(test_hostile_json),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    fclose(devnull);
    return rc;
}
