/* test_app.c - unit tests of app/ pieces that need no loop: the adt setting
 * (table, validation, rule policy), the code-set counters of /metrics, and
 * the code set in spinegate-check's output. Verdicts are built by hand, so
 * these tests do not depend on what the rule pack decides. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "metrics.h"
#include "report.h"
#include "wlmeta.h"
#include "xmalloc.h"

static void test_adt_default_and_values(void **state)
{
    (void)state;
    config_t c;
    config_defaults(&c);
    assert_non_null(c.adt);
    assert_string_equal(c.adt, "annotate");
    assert_true(config_key_exists("adt"));
    assert_false(config_key_is_flag("adt"));
    err_detail_t d;
    assert_int_equal(config_validate(&c, &d), ERR_OK);
    rule_policy_t p;
    config_rule_policy(&c, &p);
    assert_int_equal(p.adt, RULE_ADT_ANNOTATE);

    static const struct {
        const char *name;
        rule_adt_mode_t mode;
    } modes[] = {
        {"annotate", RULE_ADT_ANNOTATE}, {"judge", RULE_ADT_JUDGE}, {"forward", RULE_ADT_FORWARD}};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        assert_int_equal(config_set(&c, "adt", modes[i].name, 3, &d), ERR_OK);
        assert_int_equal(config_validate(&c, &d), ERR_OK);
        config_rule_policy(&c, &p);
        assert_int_equal(p.adt, modes[i].mode);
        assert_string_equal(config_adt_name(modes[i].mode), modes[i].name);
    }
    assert_int_equal(config_set(&c, "adt", "JUDGE", 3, &d), ERR_OK);
    assert_int_equal(config_validate(&c, &d), ERR_BAD_CONFIG);
    assert_non_null(strstr(d.msg, "adt"));
    /* Emptied: an error, not a NULL dereference. */
    assert_int_equal(config_set(&c, "adt", "", 3, &d), ERR_OK);
    assert_int_equal(config_validate(&c, &d), ERR_BAD_CONFIG);
    rule_adt_mode_t m = RULE_ADT_JUDGE;
    assert_false(config_adt_parse(NULL, &m));
    assert_false(config_adt_parse("reject", &m));
    assert_int_equal(m, RULE_ADT_JUDGE);
    config_free(&c);
}

static void test_adt_in_help_and_dump(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    config_print_help(f);
    fclose(f);
    assert_non_null(strstr(buf, "--adt annotate|judge|forward"));
    free(buf);
    config_t c;
    config_defaults(&c);
    assert_int_equal(config_set(&c, "adt", "forward", 0, NULL), ERR_OK);
    f = open_memstream(&buf, &len);
    config_dump(&c, f);
    fclose(f);
    assert_non_null(strstr(buf, "\nadt = forward\n"));
    free(buf);
    config_free(&c);
}

/* The TLS settings: repeatable allow patterns kept in order, and the rules
 * that tie a listener's settings together. */
static void test_tls_settings(void **state)
{
    (void)state;
    config_t c;
    err_detail_t d;
    config_defaults(&c);
    assert_string_equal(c.tls_min_version, "1.2");
    assert_int_equal(c.tls_handshake_timeout_ms, 10000);
    assert_int_equal(config_set(&c, "mllp-tls-allow", "CN=a,O=b", 1, &d), ERR_OK);
    assert_int_equal(config_validate(&c, &d), ERR_BAD_CONFIG); /* allow needs a client CA */
    assert_non_null(strstr(d.msg, "mllp-tls-allow needs mllp-tls-client-ca"));
    assert_int_equal(config_set(&c, "mllp-tls-client-ca", "/ca.pem", 2, &d), ERR_OK);
    assert_int_equal(config_validate(&c, &d), ERR_BAD_CONFIG); /* the CA needs a certificate */
    assert_int_equal(config_set(&c, "mllp-tls-cert", "/c.pem", 3, &d), ERR_OK);
    assert_int_equal(config_validate(&c, &d), ERR_BAD_CONFIG); /* and the certificate its key */
    assert_int_equal(config_set(&c, "mllp-tls-key", "/k.pem", 4, &d), ERR_OK);
    assert_int_equal(config_set(&c, "mllp-tls-allow", "*.example.org", 5, &d), ERR_OK);
    assert_int_equal(config_validate(&c, &d), ERR_OK);
    assert_string_equal(c.mllp_tls_allow, "CN=a,O=b\n*.example.org");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    config_dump(&c, f);
    fclose(f);
    assert_non_null(strstr(buf, "\nmllp-tls-allow = CN=a,O=b\nmllp-tls-allow = *.example.org\n"));
    assert_non_null(strstr(buf, "\n# http-tls-allow =\n"));
    free(buf);
    assert_int_equal(config_set(&c, "tls-min-version", "1.1", 6, &d), ERR_OK);
    assert_int_equal(config_validate(&c, &d), ERR_BAD_CONFIG);
    assert_int_equal(config_set(&c, "tls-min-version", "1.3", 6, &d), ERR_OK);
    assert_int_equal(config_set(&c, "downstream-tls-key", "/k.pem", 7, &d), ERR_OK);
    assert_int_equal(config_validate(&c, &d), ERR_BAD_CONFIG); /* a key without its cert */
    config_free(&c);
    assert_null(c.mllp_tls_allow);
}

static rule_verdict_t verdict(const char *code_set, rule_codeset_fit_t fit)
{
    rule_verdict_t v;
    memset(&v, 0, sizeof v);
    v.kind = VERDICT_ACCEPT;
    v.code_set = code_set;
    v.code_set_fit = fit;
    return v;
}

static long sample(const char *text, const char *line_start)
{
    const char *p = strstr(text, line_start);
    if (!p)
        return -1;
    return strtol(p + strlen(line_start), NULL, 10);
}

static void test_metrics_code_sets(void **state)
{
    (void)state;
    metrics_t *m = xcalloc(1, sizeof *m);
    metrics_init(m);
    size_t len;
    char *text = metrics_render(m, NULL, &len);
    /* Before any message: both fallback series at zero, no code set yet. */
    assert_non_null(strstr(text, "# HELP spinegate_code_set_total "));
    assert_non_null(strstr(text, "# TYPE spinegate_code_set_total counter\n"));
    assert_non_null(strstr(text, "# TYPE spinegate_code_set_fallback_total counter\n"));
    assert_int_equal(sample(text, "spinegate_code_set_fallback_total{fit=\"newer\"} "), 0);
    assert_int_equal(sample(text, "spinegate_code_set_fallback_total{fit=\"older\"} "), 0);
    assert_null(strstr(text, "spinegate_code_set_total{"));
    xfree(text);

    rule_verdict_t v27 = verdict("FY2027", RULE_CODESET_IN_RANGE),
                   v26 = verdict("FY2026", RULE_CODESET_IN_RANGE),
                   newer = verdict("FY2027", RULE_CODESET_NEWER),
                   older = verdict(NULL, RULE_CODESET_OLDER),
                   none = verdict(NULL, RULE_CODESET_IN_RANGE),
                   odd = verdict("FY\"2\n", RULE_CODESET_IN_RANGE);
    metrics_count(m, METRIC_FMT_HL7, METRIC_ACCEPT, &v27);
    metrics_count(m, METRIC_FMT_FHIR_JSON, METRIC_REJECT, &v27);
    metrics_count(m, METRIC_FMT_HL7, METRIC_ACCEPT, &v26);
    metrics_count(m, METRIC_FMT_HL7, METRIC_ANNOTATE, &newer);
    metrics_count(m, METRIC_FMT_HL7, METRIC_ANNOTATE, &older);
    metrics_count(m, METRIC_FMT_HL7, METRIC_ACCEPT, &none);
    metrics_count(m, METRIC_FMT_HL7, METRIC_UNREADABLE, NULL);
    metrics_count(m, METRIC_FMT_HL7, METRIC_ACCEPT, &odd);
    text = metrics_render(m, NULL, &len);
    assert_int_equal(sample(text, "spinegate_code_set_total{code_set=\"FY2027\"} "), 3);
    assert_int_equal(sample(text, "spinegate_code_set_total{code_set=\"FY2026\"} "), 1);
    assert_int_equal(sample(text, "spinegate_code_set_fallback_total{fit=\"newer\"} "), 1);
    assert_int_equal(sample(text, "spinegate_code_set_fallback_total{fit=\"older\"} "), 1);
    /* A name from a site's table never breaks the text format. */
    assert_int_equal(sample(text, "spinegate_code_set_total{code_set=\"FY_2_\"} "), 1);
    xfree(text);
    xfree(m);
}

static char *report_json(const rule_verdict_t *v)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    report_verdict_json(f, "x.hl7", 1, "ID1", v);
    fclose(f);
    return buf;
}

static char *report_text(const rule_verdict_t *v)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    report_verdict_text(f, "x.hl7", 1, "ID1", v);
    fclose(f);
    return buf;
}

static void test_report_code_set(void **state)
{
    (void)state;
    static const struct {
        const char *code_set;
        rule_codeset_fit_t fit;
        const char *json, *text;
    } cases[] = {
        {"FY2027", RULE_CODESET_IN_RANGE, "\"code_set\":\"FY2027\",\"code_set_fit\":\"in-range\"",
         "x.hl7 #1 ID1: accept\n  code set: ICD-10-CM FY2027\n"},
        {"FY2027", RULE_CODESET_NEWER, "\"code_set\":\"FY2027\",\"code_set_fit\":\"newer\"",
         "  code set: ICD-10-CM FY2027, the newest loaded (the claim's date is after it)\n"},
        {"FY2026", RULE_CODESET_OLDER, "\"code_set\":\"FY2026\",\"code_set_fit\":\"older\"",
         "  code set: ICD-10-CM FY2026, the oldest loaded"},
        {NULL, RULE_CODESET_OLDER, "\"code_set\":null,\"code_set_fit\":\"older\"",
         "  code set: none (the claim's date is before the oldest table"},
        {NULL, RULE_CODESET_IN_RANGE, "\"code_set\":null,\"code_set_fit\":\"in-range\"", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rule_verdict_t v = verdict(cases[i].code_set, cases[i].fit);
        char *j = report_json(&v), *t = report_text(&v);
        assert_non_null(strstr(j, cases[i].json));
        if (cases[i].text)
            assert_non_null(strstr(t, cases[i].text));
        else
            assert_null(strstr(t, "code set"));
        free(j);
        free(t);
    }
    /* Dated lines on both sides of 1 October: both tables are named. */
    rule_verdict_t two = verdict("FY2026", RULE_CODESET_IN_RANGE);
    two.code_sets[0] = "FY2026";
    two.code_sets[1] = "FY2027";
    two.ncode_sets = 2;
    char *tj = report_json(&two), *tt = report_text(&two);
    assert_non_null(strstr(tj, "\"code_sets\":[\"FY2026\",\"FY2027\"]"));
    assert_non_null(strstr(tt, "code sets: ICD-10-CM FY2026 and FY2027"));
    free(tj);
    free(tt);
    err_detail_t d;
    err_clear(&d);
    err_set(&d, ERR_NO_MSH, 0, "not HL7");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    report_error_json(f, "x.hl7", 1, &d);
    fclose(f);
    assert_non_null(strstr(buf, "\"code_set\":null,\"code_set_fit\":null"));
    free(buf);
}

/* The HTTP access policy of config_validate: http-auth = none only on
 * loopback unless insecure, never together with http-tokens. */
static void test_http_access_policy(void **state)
{
    (void)state;
    static const char *const loop[] = {"127.0.0.1", "127.1.2.3", "::1", "localhost", "LocalHost"};
    static const char *const wide[] = {"0.0.0.0", "::", "10.0.0.1", "192.0.2.1", "::ffff:127.0.0.1",
                                       "example.org", "128.0.0.1"};
    for (size_t i = 0; i < sizeof loop / sizeof loop[0]; i++)
        assert_true(config_host_is_loopback(loop[i]));
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++)
        assert_false(config_host_is_loopback(wide[i]));

    static const struct {
        const char *listen, *auth, *tokens;
        bool insecure;
        err_t want;
        size_t warnings;
    } cases[] = {
        {"127.0.0.1:8080", "none", NULL, false, ERR_OK, 0},
        {"[::1]:8080", "none", NULL, false, ERR_OK, 0},
        {"0.0.0.0:8080", "none", NULL, false, ERR_BAD_CONFIG, 0},
        {"10.1.1.1:8080", "none", NULL, false, ERR_BAD_CONFIG, 0},
        {"10.1.1.1:8080", "none", NULL, true, ERR_OK, 1},       /* insecure: warned */
        {"10.1.1.1:8080", "token", "/t", false, ERR_OK, 1},     /* tokens in clear: warned */
        {"127.0.0.1:8080", "token", "/t", false, ERR_OK, 0},
        {"127.0.0.1:8080", "token", NULL, false, ERR_OK, 1},    /* nobody can get in: warned */
        {"127.0.0.1:8080", "none", "/t", false, ERR_BAD_CONFIG, 0},
        {"127.0.0.1:8080", "basic", NULL, false, ERR_BAD_CONFIG, 0},
        {"off", "none", NULL, false, ERR_OK, 0},                /* no HTTP: nothing to check */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        config_t c;
        err_detail_t d;
        config_defaults(&c);
        assert_string_equal(c.http_auth, "token");
        assert_false(c.insecure);
        assert_int_equal(config_set(&c, "listen-http", cases[i].listen, 0, &d), ERR_OK);
        assert_int_equal(config_set(&c, "http-auth", cases[i].auth, 0, &d), ERR_OK);
        if (cases[i].tokens)
            assert_int_equal(config_set(&c, "http-tokens", cases[i].tokens, 0, &d), ERR_OK);
        c.insecure = cases[i].insecure;
        err_t rc = config_validate(&c, &d);
        if (rc != cases[i].want)
            fail_msg("case %zu (%s, %s): %s", i, cases[i].listen, cases[i].auth, d.msg);
        if (rc == ERR_OK) {
            const char *w[2];
            assert_int_equal(config_http_warnings(&c, w, 2), cases[i].warnings);
        }
        config_free(&c);
    }
}


/* wlmeta_json is written by hand: its output must be what cJSON prints for
 * the same object (the worklist and spinegate-admin read it with SQLite's
 * JSON functions), escapes included. */
static void test_wlmeta_json_is_cjson_output(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 1024);
    claim_t c;
    memset(&c, 0, sizeof c);
    c.message_type = "DFT^P03";
    c.ref_mrn = "MRN\"1\\2";
    c.ref_visit = "V\x01\x1f\x7f\tx";
    rule_finding_t f[3];
    memset(f, 0, sizeof f);
    f[0].rule_id = "excludes1-pair";
    f[0].severity = RULE_SEV_REJECT;
    f[0].codes[0] = "M43.04";
    f[0].codes[1] = "M48.06";
    f[0].ncodes = 2;
    f[0].location = "DG1(2)-3";
    f[0].message = "line\nbreak \b\f\r \"quoted\" caf\xc3\xa9 </script>";
    f[1].rule_id = "excludes1-pair"; /* listed once in "rules" */
    f[1].severity = RULE_SEV_WARN;
    f[1].suggestion = "M48.061";
    f[1].reference = "ICD-10-CM Guidelines I.A.12.a";
    f[2].rule_id = "drg-tier";
    f[2].severity = RULE_SEV_INFO;
    gate_result_t r;
    memset(&r, 0, sizeof r);
    r.status = GATE_JUDGED;
    r.claim = &c;
    r.verdict.kind = VERDICT_REJECT;
    r.verdict.findings = f;
    r.verdict.nfindings = 3;
    const gate_result_t none = {.status = GATE_UNREADABLE};
    const char *outs[] = {
        wlmeta_json(&a, "mllp", "127.0.0.1:5000", &r),
        wlmeta_json(&a, "http", NULL, &none),
    };
    for (size_t i = 0; i < 2; i++) {
        cJSON *o = cJSON_Parse(outs[i]);
        assert_non_null(o);
        char *again = cJSON_PrintUnformatted(o);
        assert_string_equal(outs[i], again);
        cJSON_free(again);
        cJSON_Delete(o);
    }
    assert_non_null(strstr(outs[0], "\"rules\":[\"excludes1-pair\",\"drg-tier\"]"));
    assert_non_null(strstr(outs[0], "\"reference\":\"ICD-10-CM Guidelines I.A.12.a\""));
    assert_non_null(strstr(outs[0], "\"visit\":\"V\\u0001\\u001f\x7f\\tx\""));
    assert_string_equal(outs[1], "{\"source\":\"http\",\"verdict\":\"unreadable\",\"rules\":[],"
                                 "\"findings\":[]}");
    assert_string_equal(wlmeta_summary(&a, &r.verdict),
                        "excludes1-pair:reject excludes1-pair:warn drg-tier:info");
    assert_null(wlmeta_summary(&a, &none.verdict));
    arena_free(&a);
}

/* The same object as cJSON prints it, for a source string of n bytes. */
static void assert_source_as_cjson(arena_t *a, const char *src)
{
    const gate_result_t none = {.status = GATE_UNREADABLE};
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "source", src);
    cJSON_AddStringToObject(o, "verdict", "unreadable");
    cJSON_AddItemToObject(o, "rules", cJSON_CreateArray());
    cJSON_AddItemToObject(o, "findings", cJSON_CreateArray());
    char *want = cJSON_PrintUnformatted(o);
    const char *got = wlmeta_json(a, src, NULL, &none);
    if (strcmp(got, want) != 0)
        fail_msg("source of %zu bytes: got %s, want %s", strlen(src), got, want);
    cJSON_free(want);
    cJSON_Delete(o);
}

/* Strings are copied a run at a time: every byte value at every position of
 * a string longer than two 16-byte blocks, and at its end, is escaped as
 * cJSON escapes it; so is a document that outgrows the first buffer. */
static void test_wlmeta_json_escapes_byte_for_byte(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 1024);
    const gate_result_t none = {.status = GATE_UNREADABLE};
    assert_string_equal(wlmeta_json(&a,
                                    "0123456789abcde\"0123456789abcdef\\\x01\x1f\x7f\xc3\xa9\b\f"
                                    "\n\r\t/",
                                    "", &none),
                        "{\"source\":\"0123456789abcde\\\"0123456789abcdef\\\\\\u0001\\u001f\x7f"
                        "\xc3\xa9\\b\\f\\n\\r\\t/\",\"verdict\":\"unreadable\",\"rules\":[],"
                        "\"findings\":[]}");
    char s[41];
    for (int ch = 1; ch < 256; ch++)
        for (size_t at = 0; at < 40; at++) {
            memset(s, 'x', 40);
            s[at] = (char)ch;
            s[40] = '\0';
            assert_source_as_cjson(&a, s);
            s[at + 1] = '\0';
            assert_source_as_cjson(&a, s);
        }
    char *big = xmalloc(5001);
    for (size_t i = 0; i < 5000; i++)
        big[i] = "ab\"\\\x01 cd"[i % 8];
    big[5000] = '\0';
    assert_source_as_cjson(&a, big);
    xfree(big);
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adt_default_and_values),
        cmocka_unit_test(test_adt_in_help_and_dump),
        cmocka_unit_test(test_tls_settings),
        cmocka_unit_test(test_metrics_code_sets),
        cmocka_unit_test(test_report_code_set),
        cmocka_unit_test(test_http_access_policy),
        cmocka_unit_test(test_wlmeta_json_is_cjson_output),
        cmocka_unit_test(test_wlmeta_json_escapes_byte_for_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
