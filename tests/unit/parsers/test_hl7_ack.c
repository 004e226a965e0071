/* test_hl7_ack.c - ACK, AR-for-unparseable and annotation writers
 * (parsers/hl7_ack.c). Every output is parsed back with the tokenizer and
 * checked field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "hl7.h"
#include "hl7_ack.h"
#include "hl7_testutil.h"

static const char *MSG25 =
    "MSH|^~\\&|CHG^1.2.3^ISO|SPINECTR|GATE|BILLING|20240312143015||DFT^P03^DFT_P03|CTRL-42|P|2.5|||"
    "|||8859/1\n"
    "PID|1||123^^^H^MR||SECRETNAME^PAT\n"
    "PV1|1|I\n"
    "FT1|1|||20240309||CG||||1|||||||||M43.16\n"
    "DG1|1|I10|M43.16^Spondylolisthesis^I10\n"
    "DG1|2|I10|M43.04^Spondylolisthesis^I10\n"
    "ZPI|1|x\n";

typedef struct {
    arena_t a;
    hl7_msg_t *m;
    char *buf;
} fx_t;

static void fx_parse(fx_t *f, const char *lit)
{
    size_t n;
    arena_init(&f->a, 0);
    f->buf = tu_cr(lit, &n);
    err_detail_t d;
    if (hl7_parse(f->buf, n, NULL, &f->m, &d) != ERR_OK)
        fail_msg("parse: %s", d.msg);
}

static void fx_free(fx_t *f)
{
    hl7_msg_free(f->m);
    xfree(f->buf);
    arena_free(&f->a);
}

static hl7_msg_t *reparse(slice_t out)
{
    hl7_msg_t *m;
    err_detail_t d;
    assert_true(out.len > 0 && out.ptr[out.len - 1] == '\r');
    if (hl7_parse(out.ptr, out.len, NULL, &m, &d) != ERR_OK)
        fail_msg("output does not parse: %s", d.msg);
    return m;
}

static void assert_get(const hl7_msg_t *m, const char *path, const char *want)
{
    slice_t v;
    if (hl7_get(m, path, &v) != ERR_OK)
        fail_msg("%s: not found", path);
    if (v.len != strlen(want) || memcmp(v.ptr, want, v.len) != 0)
        fail_msg("%s: got '%.*s', want '%s'", path, (int)v.len, v.ptr, want);
}

static rule_finding_t finding(const char *rule, rule_severity_t sev, const char *msg,
                              const char *loc, const char *code, const char *sugg, bool invalid)
{
    rule_finding_t f;
    memset(&f, 0, sizeof f);
    f.rule_id = rule;
    f.severity = sev;
    f.message = msg;
    f.location = loc;
    f.codes[0] = code;
    f.ncodes = code ? 1 : 0;
    f.suggestion = sugg;
    f.code_invalid = invalid;
    f.dx_index = -1;
    f.line_index = -1;
    return f;
}

static void test_ack_routing(void **state)
{
    (void)state;
    fx_t f;
    fx_parse(&f, MSG25);
    hl7_ack_opts_t o = {.timestamp = "20240312143016+0100", .control_id = "SG-1",
                        .code = hl7_ack_code(f.m, HL7_OUTCOME_ACCEPTED)};
    assert_int_equal(o.code, HL7_ACK_AA);
    slice_t out;
    assert_int_equal(hl7_ack_build(f.m, &o, &f.a, &out), ERR_OK);
    hl7_msg_t *ack = reparse(out);
    assert_int_equal(hl7_seg_count(ack), 2);
    assert_get(ack, "MSH-3", "GATE");
    assert_get(ack, "MSH-4", "BILLING");
    assert_get(ack, "MSH-5", "CHG^1.2.3^ISO");
    assert_get(ack, "MSH-6", "SPINECTR");
    assert_get(ack, "MSH-7", "20240312143016+0100");
    assert_get(ack, "MSH-9", "ACK^P03^ACK");
    assert_get(ack, "MSH-10", "SG-1");
    assert_get(ack, "MSH-11", "P");
    assert_get(ack, "MSH-12", "2.5");
    assert_get(ack, "MSH-18", "8859/1");
    assert_get(ack, "MSA-1", "AA");
    assert_get(ack, "MSA-2", "CTRL-42");
    /* Nothing of the patient leaks into an ACK. */
    assert_null(memmem(out.ptr, out.len, "SECRETNAME", 10));
    hl7_msg_free(ack);
    /* Missing caller values are refused. */
    o.timestamp = NULL;
    assert_int_equal(hl7_ack_build(f.m, &o, &f.a, &out), ERR_BAD_VALUE);
    o.timestamp = "20240312";
    o.code = HL7_ACK_NONE;
    assert_int_equal(hl7_ack_build(f.m, &o, &f.a, &out), ERR_BAD_VALUE);
    fx_free(&f);
}

static void test_ack_err_v25(void **state)
{
    (void)state;
    fx_t f;
    fx_parse(&f, MSG25);
    rule_finding_t fs[2] = {
        finding("excludes1-pair", RULE_SEV_REJECT, "M43.04 and M43.16 | excluded ^ together",
                "DG1(2)-3", "M43.04", "M43.06", false),
        finding("invalid-code", RULE_SEV_WARN, "not a valid code", "FT1(1)", NULL, NULL, true),
    };
    rule_verdict_t v = {.kind = VERDICT_REJECT, .findings = fs, .nfindings = 2};
    hl7_ack_opts_t o = {.timestamp = "20240312143016", .control_id = "SG-2",
                        .code = hl7_ack_code(f.m, HL7_OUTCOME_REJECTED), .verdict = &v};
    assert_int_equal(o.code, HL7_ACK_AE);
    slice_t out;
    assert_int_equal(hl7_ack_build(f.m, &o, &f.a, &out), ERR_OK);
    hl7_msg_t *ack = reparse(out);
    assert_int_equal(hl7_seg_count(ack), 4);
    assert_get(ack, "MSA-1", "AE");
    assert_get(ack, "ERR-1", "");
    assert_get(ack, "ERR-2", "DG1^2^3");
    assert_get(ack, "ERR-3", "207^Application internal error^HL70357");
    assert_get(ack, "ERR-4", "E");
    assert_get(ack, "ERR-5", "excludes1-pair");
    assert_get(ack, "ERR-7", "suggested: M43.06");
    slice_t v8;
    assert_int_equal(hl7_get(ack, "ERR-8", &v8), ERR_OK);
    char *s;
    assert_int_equal(hl7_unescape_arena(ack, v8, &f.a, &s, NULL), ERR_OK);
    assert_string_equal(s, "M43.04 and M43.16 | excluded ^ together");
    assert_get(ack, "ERR(2)-2", "FT1^1");
    assert_get(ack, "ERR(2)-3.1", "103");
    assert_get(ack, "ERR(2)-4", "W");
    hl7_msg_free(ack);
    fx_free(&f);
}

static void test_ack_pre25_shapes(void **state)
{
    (void)state;
    fx_t f;
    fx_parse(&f, "MSH|^~\\&|A|B|C|D|2024||DFT^P03|X1|T|2.3\nDG1|1||M43.04\nDG1|2||M43.16\n");
    rule_finding_t fs[1] = {finding("excludes1-pair", RULE_SEV_REJECT, "excluded together",
                                    "DG1(2)-3", "M43.04", NULL, true)};
    rule_verdict_t v = {.kind = VERDICT_REJECT, .findings = fs, .nfindings = 1};
    hl7_ack_opts_t o = {.timestamp = "2024", .control_id = "K", .code = HL7_ACK_AE,
                        .verdict = &v};
    slice_t out;
    assert_int_equal(hl7_ack_build(f.m, &o, &f.a, &out), ERR_OK);
    hl7_msg_t *ack = reparse(out);
    assert_get(ack, "MSH-9", "ACK^P03");
    assert_get(ack, "MSH-11", "T");
    assert_get(ack, "MSH-12", "2.3");
    assert_get(ack, "MSA-3", "excluded together");
    assert_get(ack, "ERR-1", "DG1^2^3^103&Table value not found&HL70357");
    assert_int_equal(hl7_field_count(ack, 2), 1);
    hl7_msg_free(ack);
    fx_free(&f);
    /* 2.4: the three-part MSH-9; no trigger: just ACK. */
    fx_parse(&f, "MSH|^~\\&|A|B|C|D|2024||BAR^P01|X1|P|2.4\n");
    assert_int_equal(hl7_ack_build(f.m, &o, &f.a, &out), ERR_OK);
    ack = reparse(out);
    assert_get(ack, "MSH-9", "ACK^P01^ACK");
    hl7_msg_free(ack);
    fx_free(&f);
    fx_parse(&f, "MSH|^~\\&|A|B|C|D|2024||ACK|X1|P|2.5\n");
    assert_int_equal(hl7_ack_build(f.m, &o, &f.a, &out), ERR_OK);
    ack = reparse(out);
    assert_get(ack, "MSH-9", "ACK");
    hl7_msg_free(ack);
    fx_free(&f);
}

static void test_ack_escaping_custom_delims(void **state)
{
    (void)state;
    fx_t f;
    /* Delimiters #!*$% (field #, component !, repetition *, escape $, sub %). */
    fx_parse(&f, "MSH#!*$%#SND!X#FAC#RCV#RF#2024##DFT!P03#ID$F$1#P#2.6\nDG1#1##M43.16\n");
    rule_finding_t fs[1] = {finding("r|1", RULE_SEV_INFO, "a|b^c&d~e\\f #!*$% end", "DG1-3",
                                    "M43.16", NULL, false)};
    rule_verdict_t v = {.kind = VERDICT_ANNOTATE, .findings = fs, .nfindings = 1};
    hl7_ack_opts_t o = {.timestamp = "2024", .control_id = "C#1", .code = HL7_ACK_AA,
                        .verdict = &v};
    slice_t out;
    assert_int_equal(hl7_ack_build(f.m, &o, &f.a, &out), ERR_OK);
    const char *msh = "MSH#!*$%#RCV#RF#SND!X#FAC#2024##ACK!P03!ACK#C$F$1#P#2.6\r";
    assert_memory_equal(out.ptr, msh, strlen(msh));
    hl7_msg_t *ack = reparse(out);
    assert_get(ack, "MSA-2", "ID$F$1");
    assert_get(ack, "ERR-2", "DG1!!3");
    assert_get(ack, "ERR-4", "I");
    slice_t v8;
    char *s;
    assert_int_equal(hl7_get(ack, "ERR-8", &v8), ERR_OK);
    assert_int_equal(hl7_unescape_arena(ack, v8, &f.a, &s, NULL), ERR_OK);
    assert_string_equal(s, fs[0].message);
    assert_int_equal(hl7_get(ack, "ERR-5", &v8), ERR_OK);
    assert_int_equal(hl7_unescape_arena(ack, v8, &f.a, &s, NULL), ERR_OK);
    assert_string_equal(s, "r|1");
    hl7_msg_free(ack);
    fx_free(&f);
}

static void test_ack_codes(void **state)
{
    (void)state;
    static const struct {
        const char *msh15, *msh16;
        hl7_ack_code_t want[5]; /* accepted annotated rejected unparseable store_failed */
    } t[] = {
        {"", "", {HL7_ACK_AA, HL7_ACK_AA, HL7_ACK_AE, HL7_ACK_AR, HL7_ACK_AR}},
        {"AL", "", {HL7_ACK_CA, HL7_ACK_CA, HL7_ACK_CE, HL7_ACK_CR, HL7_ACK_CE}},
        {"", "AL", {HL7_ACK_CA, HL7_ACK_CA, HL7_ACK_CE, HL7_ACK_CR, HL7_ACK_CE}},
        {"NE", "AL", {HL7_ACK_NONE, HL7_ACK_NONE, HL7_ACK_NONE, HL7_ACK_NONE, HL7_ACK_NONE}},
        {"ER", "NE", {HL7_ACK_NONE, HL7_ACK_NONE, HL7_ACK_CE, HL7_ACK_CR, HL7_ACK_CE}},
        {"SU", "", {HL7_ACK_CA, HL7_ACK_CA, HL7_ACK_NONE, HL7_ACK_NONE, HL7_ACK_NONE}},
        {"XX", "", {HL7_ACK_CA, HL7_ACK_CA, HL7_ACK_CE, HL7_ACK_CR, HL7_ACK_CE}},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char lit[128];
        snprintf(lit, sizeof lit, "MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5|||%s|%s\n", t[i].msh15,
                 t[i].msh16);
        fx_t f;
        fx_parse(&f, lit);
        for (int k = 0; k < 5; k++)
            if (hl7_ack_code(f.m, (hl7_outcome_t)k) != t[i].want[k])
                fail_msg("MSH-15 '%s' MSH-16 '%s' outcome %d: got %s", t[i].msh15, t[i].msh16, k,
                         hl7_ack_code_str(hl7_ack_code(f.m, (hl7_outcome_t)k)));
        fx_free(&f);
    }
    assert_int_equal(hl7_ack_code(NULL, HL7_OUTCOME_UNPARSEABLE), HL7_ACK_AR);
    assert_string_equal(hl7_ack_code_str(HL7_ACK_CR), "CR");
    assert_string_equal(hl7_ack_code_str(HL7_ACK_NONE), "");
}

static void test_ack_unparseable(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    size_t n;
    /* MSH salvageable, a later segment broken. */
    char *in = tu_cr("MSH|^~\\&|SND|SF|RCV|RF|2024||DFT^P11|CTL9|P|2.3.1\nPID|1||SECRET\n"
                     "bad segment\n",
                     &n);
    hl7_msg_t *m;
    err_detail_t d;
    assert_int_equal(hl7_parse(in, n, NULL, &m, &d), ERR_BAD_SEGMENT);
    hl7_ack_opts_t o = {.timestamp = "2024", .control_id = "SG-9",
                        .code = hl7_ack_code(NULL, HL7_OUTCOME_UNPARSEABLE)};
    slice_t out;
    assert_int_equal(hl7_ack_build_raw(in, n, &d, &o, &a, &out), ERR_OK);
    assert_null(memmem(out.ptr, out.len, "SECRET", 6));
    hl7_msg_t *ack = reparse(out);
    assert_get(ack, "MSH-3", "RCV");
    assert_get(ack, "MSH-5", "SND");
    assert_get(ack, "MSH-9", "ACK^P11");
    assert_get(ack, "MSH-12", "2.3.1");
    assert_get(ack, "MSA-1", "AR");
    assert_get(ack, "MSA-2", "CTL9");
    assert_get(ack, "ERR-1", "^^^100&Segment sequence error&HL70357");
    hl7_msg_free(ack);
    xfree(in);
    /* Nothing salvageable: a default MSH, v2.5 ERR with the parse detail. */
    const char *junk = "MSH|^^^^|garbage SECRET\r";
    assert_int_equal(hl7_parse(junk, strlen(junk), NULL, &m, &d), ERR_BAD_DELIMS);
    assert_int_equal(hl7_ack_build_raw(junk, strlen(junk), &d, &o, &a, &out), ERR_OK);
    assert_null(memmem(out.ptr, out.len, "SECRET", 6));
    ack = reparse(out);
    assert_get(ack, "MSH-2", "^~\\&");
    assert_get(ack, "MSH-9", "ACK");
    assert_get(ack, "MSH-12", "2.5");
    assert_get(ack, "MSA-1", "AR");
    assert_get(ack, "MSA-2", "");
    assert_get(ack, "ERR-2", "MSH^^2");
    assert_get(ack, "ERR-3", "102^Data type error^HL70357");
    assert_get(ack, "ERR-4", "E");
    assert_get(ack, "ERR-5", "BAD_DELIMS");
    assert_get(ack, "ERR-7", "segment 1, byte offset 4");
    slice_t v;
    char *s;
    assert_int_equal(hl7_get(ack, "ERR-8", &v), ERR_OK);
    assert_int_equal(hl7_unescape_arena(ack, v, &a, &s, NULL), ERR_OK);
    assert_string_equal(s, d.msg);
    hl7_msg_free(ack);
    /* Empty input and a NUL inside MSH: still an AR. */
    assert_int_equal(hl7_ack_build_raw(NULL, 0, &d, &o, &a, &out), ERR_OK);
    ack = reparse(out);
    assert_get(ack, "MSA-1", "AR");
    hl7_msg_free(ack);
    assert_int_equal(hl7_ack_build_raw("MSH|^~\\&|A\0B|C", 14, &d, &o, &a, &out), ERR_OK);
    ack = reparse(out);
    assert_get(ack, "MSH-5", "A"); /* salvaged up to the NUL */
    hl7_msg_free(ack);
    arena_free(&a);
}

static void test_annotate(void **state)
{
    (void)state;
    fx_t f;
    fx_parse(&f, MSG25);
    rule_finding_t fs[2] = {
        finding("excludes1-pair", RULE_SEV_WARN, "M43.04 with M43.16: check ^ codes", "DG1(2)-3",
                "M43.04", "M43.06", false),
        finding("seventh-char", RULE_SEV_INFO, "info", "DG1(1)-3", "M43.16", NULL, false),
    };
    fs[0].codes[1] = "M43.16";
    fs[0].ncodes = 2;
    rule_verdict_t v = {.kind = VERDICT_ANNOTATE, .findings = fs, .nfindings = 2};
    slice_t out = hl7_annotate(f.m, &v, HL7_ANNOTATE_ZSG, &f.a);
    hl7_msg_t *m2 = reparse(out);
    assert_int_equal(hl7_seg_count(m2), hl7_seg_count(f.m) + 2);
    /* After the last DG1 (segment 6), before ZPI. */
    slice_t id = hl7_seg_id(m2, 6);
    assert_memory_equal(id.ptr, "ZSG", 3);
    slice_t t = hl7_seg_text(m2, 6);
    const char *want = "ZSG|1|excludes1-pair|W|M43.04~M43.16|DG1(2)-3|M43.06|"
                       "M43.04 with M43.16: check \\S\\ codes";
    assert_int_equal(t.len, strlen(want));
    assert_memory_equal(t.ptr, want, t.len);
    t = hl7_seg_text(m2, 7);
    want = "ZSG|2|seventh-char|I|M43.16|DG1(1)-3||info";
    assert_int_equal(t.len, strlen(want));
    assert_memory_equal(t.ptr, want, t.len);
    /* Every original segment is byte-identical, terminator included. */
    slice_t orig = hl7_msg_bytes(f.m);
    size_t cut = hl7_seg_offset(f.m, 6);
    assert_memory_equal(out.ptr, orig.ptr, cut);
    size_t tail = orig.len - cut;
    assert_memory_equal(out.ptr + out.len - tail, orig.ptr + cut, tail);
    hl7_msg_free(m2);
    /* NTE style. */
    out = hl7_annotate(f.m, &v, HL7_ANNOTATE_NTE, &f.a);
    m2 = reparse(out);
    assert_get(m2, "NTE-1", "1");
    assert_get(m2, "NTE-2", "O");
    slice_t c;
    char *s;
    assert_int_equal(hl7_get(m2, "NTE-3", &c), ERR_OK);
    assert_int_equal(hl7_unescape_arena(m2, c, &f.a, &s, NULL), ERR_OK);
    assert_string_equal(s, "[W] excludes1-pair DG1(2)-3 M43.04 with M43.16: check ^ codes "
                           "(codes: M43.04, M43.16) (suggested: M43.06)");
    assert_int_equal(hl7_seg_find(m2, "NTE", 1), 6);
    hl7_msg_free(m2);
    /* No findings: the message as received. */
    rule_verdict_t none = {.kind = VERDICT_ACCEPT};
    out = hl7_annotate(f.m, &none, HL7_ANNOTATE_ZSG, &f.a);
    assert_true(slice_eq_slice(out, hl7_msg_bytes(f.m)));
    fx_free(&f);
    /* No DG1: at the end, after a last segment without terminator. */
    const char *nodg = "MSH|^~\\&|A|B|C|D|2024||BAR^P01|X|P|2.5\rPID|1";
    arena_t a;
    arena_init(&a, 0);
    hl7_msg_t *m;
    assert_int_equal(hl7_parse(nodg, strlen(nodg), NULL, &m, NULL), ERR_OK);
    out = hl7_annotate(m, &v, HL7_ANNOTATE_ZSG, &a);
    assert_true(out.len > strlen(nodg) + 1);
    assert_memory_equal(out.ptr, "MSH|^~\\&|A|B|C|D|2024||BAR^P01|X|P|2.5\rPID|1\rZSG|1|", 50);
    hl7_msg_free(m);
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ack_routing),
        cmocka_unit_test(test_ack_err_v25),
        cmocka_unit_test(test_ack_pre25_shapes),
        cmocka_unit_test(test_ack_escaping_custom_delims),
        cmocka_unit_test(test_ack_codes),
        cmocka_unit_test(test_ack_unparseable),
        cmocka_unit_test(test_annotate),
    };
    return cmocka_run_group_tests_name("hl7_ack", tests, NULL, NULL);
}
