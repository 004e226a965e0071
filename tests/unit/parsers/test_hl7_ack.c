/* test_hl7_ack.c - ACK, AR-for-unparseable and annotation writers
 * (parsers/hl7_ack.c). Every output is parsed back with the tokenizer and
 * checked field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
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
    assert_get(ack, "ERR-3", "103^Table value not found^HL70357");
    assert_get(ack, "ERR-4", "E");
    assert_get(ack, "ERR-5", "excludes1-pair");
    assert_get(ack, "ERR-7", "suggested: M43.06");
    slice_t v8;
    assert_int_equal(hl7_get(ack, "ERR-8", &v8), ERR_OK);
    char *s;
    assert_int_equal(hl7_unescape_arena(ack, v8, &f.a, &s, NULL), ERR_OK);
    assert_string_equal(s, "M43.04 and M43.16 | excluded ^ together");
    assert_get(ack, "ERR(2)-2", "FT1^1");
    /* A warning stopped nothing, even about an invalid code. */
    assert_get(ack, "ERR(2)-3", "0^Message accepted^HL70357");
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

/* Every MSH-15 x MSH-16 value (empty, AL, NE, ER, SU, an unknown one) and
 * every outcome. In enhanced mode the accept ACK depends on MSH-15 alone and
 * the application ACK on MSH-16 alone, so each has its own table. */
static void test_ack_plan_all_modes(void **state)
{
    (void)state;
    enum { NONE = HL7_ACK_NONE, AA = HL7_ACK_AA, AE = HL7_ACK_AE, AR = HL7_ACK_AR,
           CA = HL7_ACK_CA, CE = HL7_ACK_CE, CR = HL7_ACK_CR };
    static const char *const conds[] = {"", "AL", "NE", "ER", "SU", "XX"};
    /* outcomes: accepted annotated rejected unparseable store_failed */
    static const int accept_by_msh15[6][5] = {
        {CA, CA, CA, CR, CE},           /* empty (MSH-16 valued): as AL */
        {CA, CA, CA, CR, CE},           /* AL */
        {NONE, NONE, NONE, NONE, NONE}, /* NE */
        {NONE, NONE, NONE, CR, CE},     /* ER */
        {CA, CA, CA, NONE, NONE},       /* SU */
        {CA, CA, CA, CR, CE},           /* unknown: as AL */
    };
    static const int app_by_msh16[6][5] = {
        {NONE, NONE, NONE, NONE, NONE}, /* empty: none asked for */
        {AA, AA, AE, NONE, NONE},       /* AL: after a store only */
        {NONE, NONE, NONE, NONE, NONE}, /* NE */
        {NONE, NONE, AE, NONE, NONE},   /* ER */
        {AA, AA, NONE, NONE, NONE},     /* SU */
        {AA, AA, AE, NONE, NONE},       /* unknown: as AL */
    };
    static const int original[5] = {AA, AA, AE, AR, AR};
    for (int i15 = 0; i15 < 6; i15++) {
        for (int i16 = 0; i16 < 6; i16++) {
            char lit[128];
            snprintf(lit, sizeof lit, "MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5|||%s|%s\n",
                     conds[i15], conds[i16]);
            fx_t f;
            fx_parse(&f, lit);
            bool enhanced = i15 || i16;
            for (int k = 0; k < 5; k++) {
                hl7_ack_plan_t p = hl7_ack_plan(f.m, (hl7_outcome_t)k);
                int want_accept = enhanced ? accept_by_msh15[i15][k] : NONE;
                int want_app = enhanced ? app_by_msh16[i16][k] : original[k];
                if (p.enhanced != enhanced || (int)p.accept != want_accept ||
                    (int)p.app != want_app)
                    fail_msg("MSH-15 '%s' MSH-16 '%s' outcome %d: got %s/%s", conds[i15],
                             conds[i16], k, hl7_ack_code_str(p.accept), hl7_ack_code_str(p.app));
                /* hl7_ack_code() is the first ACK of the plan. */
                assert_int_equal(hl7_ack_code(f.m, (hl7_outcome_t)k),
                                 enhanced ? p.accept : p.app);
            }
            /* The same plan when the MSH is salvaged from unreadable input. */
            char raw[160];
            snprintf(raw, sizeof raw, "%.*sBAD\x01", (int)strcspn(lit, "\n") + 1, lit);
            raw[strcspn(raw, "\n")] = '\r';
            hl7_ack_plan_t p = hl7_ack_plan_raw(raw, strlen(raw), HL7_OUTCOME_UNPARSEABLE);
            assert_int_equal(p.enhanced, enhanced);
            assert_int_equal(p.accept, enhanced ? accept_by_msh15[i15][3] : NONE);
            assert_int_equal(p.app, enhanced ? NONE : AR);
            fx_free(&f);
        }
    }
    hl7_ack_plan_t p = hl7_ack_plan(NULL, HL7_OUTCOME_UNPARSEABLE);
    assert_false(p.enhanced);
    assert_int_equal(p.app, HL7_ACK_AR);
    p = hl7_ack_plan_raw("garbage", 7, HL7_OUTCOME_UNPARSEABLE);
    assert_false(p.enhanced);
    assert_int_equal(p.app, HL7_ACK_AR);
    assert_string_equal(hl7_ack_code_str(HL7_ACK_CR), "CR");
    assert_string_equal(hl7_ack_code_str(HL7_ACK_NONE), "");
}

/* ERR-3 for every kind of finding and error: no rule finding reads as a
 * failure of the gate; 207 is left to the gate's own failures. */
static void test_ack_0357_choices(void **state)
{
    (void)state;
    static const struct {
        const char *rule;
        rule_severity_t sev;
        bool invalid;
        const char *code, *text;
    } fcase[] = {
        {"site-unspecified", RULE_SEV_WARN, false, "0", "Message accepted"},
        {"drg-tier", RULE_SEV_INFO, false, "0", "Message accepted"},
        {"code-invalid", RULE_SEV_WARN, true, "0", "Message accepted"},
        {"code-invalid", RULE_SEV_REJECT, true, "103", "Table value not found"},
        {"code-not-billable", RULE_SEV_REJECT, true, "103", "Table value not found"},
        {"seventh-character", RULE_SEV_REJECT, true, "103", "Table value not found"},
        {"excludes1-pair", RULE_SEV_REJECT, false, "103", "Table value not found"},
        {"manifestation-first", RULE_SEV_REJECT, false, "103", "Table value not found"},
    };
    for (size_t i = 0; i < sizeof fcase / sizeof fcase[0]; i++) {
        rule_finding_t f = finding(fcase[i].rule, fcase[i].sev, "m", NULL, NULL, NULL,
                                   fcase[i].invalid);
        hl7_0357_t c = hl7_ack_finding_0357(&f);
        if (strcmp(c.code, fcase[i].code) || strcmp(c.text, fcase[i].text))
            fail_msg("%s: got %s %s", fcase[i].rule, c.code, c.text);
    }
    static const struct {
        err_t e;
        int version;
        const char *code;
    } ecase[] = {
        {ERR_NO_MSH, 25, "100"},       {ERR_EMPTY, 25, "100"},       {ERR_BAD_SEGMENT, 25, "100"},
        {ERR_BAD_BATCH, 25, "100"},    {ERR_BAD_DELIMS, 25, "102"},  {ERR_BAD_ESCAPE, 25, "102"},
        {ERR_NUL_BYTE, 25, "102"},     {ERR_TRUNCATED, 25, "102"},   {ERR_BAD_VALUE, 25, "102"},
        {ERR_BAD_TERMINATOR, 25, "102"}, {ERR_TOO_LARGE, 25, "102"}, {ERR_TOO_LARGE, 27, "104"},
        {ERR_UNSUPPORTED, 25, "200"},  {ERR_QUEUE, 25, "207"},       {ERR_IO, 25, "207"},
    };
    for (size_t i = 0; i < sizeof ecase / sizeof ecase[0]; i++) {
        hl7_0357_t c = hl7_ack_error_0357(ecase[i].e, ecase[i].version);
        if (strcmp(c.code, ecase[i].code))
            fail_msg("%s v%d: got %s", err_name(ecase[i].e), ecase[i].version, c.code);
    }
    /* And on the wire: an annotated message's AA carries its warning as 0/W. */
    fx_t fx;
    fx_parse(&fx, MSG25);
    rule_finding_t fs[1] = {finding("site-unspecified", RULE_SEV_WARN, "site?", "DG1(1)-3",
                                    "M43.16", NULL, false)};
    rule_verdict_t v = {.kind = VERDICT_ANNOTATE, .findings = fs, .nfindings = 1};
    hl7_ack_opts_t o = {.timestamp = "2024", .control_id = "K", .code = HL7_ACK_AA,
                        .verdict = &v};
    slice_t out;
    assert_int_equal(hl7_ack_build(fx.m, &o, &fx.a, &out), ERR_OK);
    hl7_msg_t *ack = reparse(out);
    assert_get(ack, "MSA-1", "AA");
    assert_get(ack, "ERR-3", "0^Message accepted^HL70357");
    assert_get(ack, "ERR-4", "W");
    assert_get(ack, "ERR-5", "site-unspecified");
    assert_get(ack, "ERR-8", "site?");
    hl7_msg_free(ack);
    /* A storage failure is the gate's own: 207. */
    err_detail_t e;
    err_set(&e, ERR_QUEUE, 0, "message could not be stored; send it again");
    o = (hl7_ack_opts_t){.timestamp = "2024", .control_id = "K", .code = HL7_ACK_CE,
                         .error = &e};
    assert_int_equal(hl7_ack_build(fx.m, &o, &fx.a, &out), ERR_OK);
    ack = reparse(out);
    assert_get(ack, "MSA-1", "CE");
    assert_get(ack, "ERR-3", "207^Application internal error^HL70357");
    assert_get(ack, "ERR-5", "QUEUE");
    hl7_msg_free(ack);
    fx_free(&fx);
}

/* The application ACK of enhanced mode asks for no ACK back; the others
 * leave MSH-15/16 empty. */
static void test_ack_no_ack_back(void **state)
{
    (void)state;
    fx_t f;
    fx_parse(&f, "MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5|||AL|AL\nDG1|1||M43.16\n");
    hl7_ack_opts_t o = {.timestamp = "2024", .control_id = "K1", .code = HL7_ACK_CA};
    slice_t out;
    assert_int_equal(hl7_ack_build(f.m, &o, &f.a, &out), ERR_OK);
    hl7_msg_t *ack = reparse(out);
    assert_get(ack, "MSH-15", "");
    assert_get(ack, "MSH-16", "");
    hl7_msg_free(ack);
    o.code = HL7_ACK_AA;
    o.control_id = "K2";
    o.no_ack_back = true;
    assert_int_equal(hl7_ack_build(f.m, &o, &f.a, &out), ERR_OK);
    ack = reparse(out);
    assert_get(ack, "MSA-1", "AA");
    assert_get(ack, "MSA-2", "X");
    assert_get(ack, "MSH-15", "NE");
    assert_get(ack, "MSH-16", "NE");
    hl7_msg_free(ack);
    fx_free(&f);
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

static void assert_seg(const hl7_msg_t *m, size_t i, const char *want)
{
    slice_t t = hl7_seg_text(m, i);
    if (t.len != strlen(want) || memcmp(t.ptr, want, t.len) != 0)
        fail_msg("segment %zu: got '%.*s', want '%s'", i, (int)t.len, t.ptr, want);
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
    rule_verdict_t v = {.kind = VERDICT_ANNOTATE, .findings = fs, .nfindings = 2,
                        .code_set = "FY2027", .code_set_fit = RULE_CODESET_NEWER};
    hl7_annotate_opts_t ao = {.style = HL7_ANNOTATE_ZSG, .pack_name = "spine-rules",
                              .pack_version = 2};
    slice_t out = hl7_annotate(f.m, &v, &ao, &f.a);
    hl7_msg_t *m2 = reparse(out);
    assert_int_equal(hl7_seg_count(m2), hl7_seg_count(f.m) + 3);
    /* After the last DG1 (segment 6), before ZPI: the header, then the findings. */
    assert_seg(m2, 6, "ZSH|1|spinegate|annotate|spine-rules|2|FY2027|newer|2");
    {
        /* Dated lines in two years: ZSH-6 repeats, oldest first. */
        rule_verdict_t two = v;
        two.code_set = "FY2026";
        two.code_set_fit = RULE_CODESET_IN_RANGE;
        two.code_sets[0] = "FY2026";
        two.code_sets[1] = "FY2027";
        two.ncode_sets = 2;
        hl7_msg_t *m3 = reparse(hl7_annotate(f.m, &two, &ao, &f.a));
        assert_seg(m3, 6, "ZSH|1|spinegate|annotate|spine-rules|2|FY2026~FY2027|in-range|2");
        hl7_msg_free(m3);
    }
    assert_seg(m2, 7, "ZSG|1|excludes1-pair|W|M43.04~M43.16|DG1(2)-3|M43.06|"
                      "M43.04 with M43.16: check \\S\\ codes");
    assert_seg(m2, 8, "ZSG|2|seventh-char|I|M43.16|DG1(1)-3||info");
    assert_seg(m2, 9, "ZPI|1|x");
    /* Every original segment is byte-identical, terminator included. */
    slice_t orig = hl7_msg_bytes(f.m);
    size_t cut = hl7_seg_offset(f.m, 6);
    assert_memory_equal(out.ptr, orig.ptr, cut);
    size_t tail = orig.len - cut;
    assert_memory_equal(out.ptr + out.len - tail, orig.ptr + cut, tail);
    for (size_t i = 6; i < 9; i++)
        assert_true(hl7_annotation_is_ours(m2, i));
    for (size_t i = 0; i < 6; i++)
        assert_false(hl7_annotation_is_ours(m2, i));
    assert_false(hl7_annotation_is_ours(m2, 9));
    hl7_msg_free(m2);
    /* NTE style: the header as NTE text without a set id, findings 1..n. */
    ao.style = HL7_ANNOTATE_NTE;
    out = hl7_annotate(f.m, &v, &ao, &f.a);
    m2 = reparse(out);
    assert_int_equal(hl7_seg_find(m2, "NTE", 1), 6);
    assert_seg(m2, 6, "NTE||O|[spinegate 1] verdict=annotate pack=spine-rules v2 "
                      "code-set=FY2027 (newer) findings=2");
    assert_get(m2, "NTE(2)-1", "1");
    assert_get(m2, "NTE(2)-2", "O");
    slice_t c;
    char *s;
    assert_int_equal(hl7_get(m2, "NTE(2)-3", &c), ERR_OK);
    assert_int_equal(hl7_unescape_arena(m2, c, &f.a, &s, NULL), ERR_OK);
    assert_string_equal(s, "[W] excludes1-pair DG1(2)-3 M43.04 with M43.16: check ^ codes "
                           "(codes: M43.04, M43.16) (suggested: M43.06)");
    for (size_t i = 6; i < 9; i++)
        assert_true(hl7_annotation_is_ours(m2, i));
    hl7_msg_free(m2);
    /* No findings: the message as received, unless the header is asked for. */
    rule_verdict_t none = {.kind = VERDICT_ACCEPT, .code_set = "FY2026"};
    out = hl7_annotate(f.m, &none, NULL, &f.a);
    assert_true(slice_eq_slice(out, hl7_msg_bytes(f.m)));
    ao = (hl7_annotate_opts_t){.style = HL7_ANNOTATE_ZSG, .pack_name = "spine-rules",
                               .pack_version = 2, .header_when_accepted = true};
    out = hl7_annotate(f.m, &none, &ao, &f.a);
    m2 = reparse(out);
    assert_int_equal(hl7_seg_count(m2), hl7_seg_count(f.m) + 1);
    assert_seg(m2, 6, "ZSH|1|spinegate|accept|spine-rules|2|FY2026|in-range|0");
    hl7_msg_free(m2);
    fx_free(&f);
    /* No DG1: at the end, after a last segment without terminator. */
    const char *nodg = "MSH|^~\\&|A|B|C|D|2024||BAR^P01|X|P|2.5\rPID|1";
    arena_t a;
    arena_init(&a, 0);
    hl7_msg_t *m;
    assert_int_equal(hl7_parse(nodg, strlen(nodg), NULL, &m, NULL), ERR_OK);
    out = hl7_annotate(m, &v, NULL, &a);
    const char *head = "MSH|^~\\&|A|B|C|D|2024||BAR^P01|X|P|2.5\rPID|1\rZSH|1|spinegate|annotate||"
                       "|FY2027|newer|2\rZSG|1|";
    assert_true(out.len > strlen(head));
    assert_memory_equal(out.ptr, head, strlen(head));
    hl7_msg_free(m);
    arena_free(&a);
}

/* Judged twice, a message carries one pass: stripping gives back the
 * message byte for byte, whatever the terminators, and leaves alone what
 * only looks like annotation. */
static void test_annotation_strip(void **state)
{
    (void)state;
    static const char *const inputs[] = {
        /* \r, \n and \r\n terminators, blank lines, a sender's own NTE and
         * Z-segments that spinegate did not write. */
        "MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\rPID|1\rDG1|1||M43.16\rNTE|1|P|[W] is a "
        "physician note\rZSG|1|site-data\rZSH|1|other\rNTE|2|O|coder note\rZPI|1\r",
        "MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\nPID|1\nDG1|1||M43.16\n\nDG1|2||M43.04\n\nFT1|1\n",
        "MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\r\nDG1|1||M43.16\r\n",
        "MSH|^~\\&|A|B|C|D|2024||BAR^P01|X|P|2.5\rPID|1\r",
    };
    rule_finding_t fs[2] = {
        finding("excludes1-pair", RULE_SEV_REJECT, "a|b", "DG1(1)-3", "M43.16", NULL, false),
        finding("site-unspecified", RULE_SEV_WARN, "c", "DG1(1)-3", "M43.16", NULL, false),
    };
    rule_verdict_t v = {.kind = VERDICT_REJECT, .findings = fs, .nfindings = 2,
                        .code_set = "FY2026"};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        for (int style = 0; style < 2; style++) {
            arena_t a;
            arena_init(&a, 0);
            const char *in = inputs[i];
            size_t n = strlen(in);
            slice_t same;
            assert_int_equal(hl7_annotation_strip(in, n, NULL, &a, &same), 0);
            assert_ptr_equal(same.ptr, in);
            assert_int_equal(same.len, n);
            hl7_msg_t *m;
            assert_int_equal(hl7_parse(in, n, NULL, &m, NULL), ERR_OK);
            hl7_annotate_opts_t ao = {.style = (hl7_annotate_style_t)style, .pack_name = "p",
                                      .pack_version = 1};
            slice_t once = hl7_annotate(m, &v, &ao, &a);
            hl7_msg_free(m);
            slice_t back;
            assert_int_equal(hl7_annotation_strip(once.ptr, once.len, NULL, &a, &back), 3);
            if (back.len != n || memcmp(back.ptr, in, n) != 0)
                fail_msg("input %zu style %d: stripped output differs", i, style);
            /* An earlier pass and a new one: only the new one remains. */
            assert_int_equal(hl7_parse(once.ptr, once.len, NULL, &m, NULL), ERR_OK);
            rule_verdict_t v2 = {.kind = VERDICT_ANNOTATE, .findings = fs + 1, .nfindings = 1};
            slice_t twice = hl7_annotate(m, &v2, &ao, &a);
            hl7_msg_free(m);
            assert_int_equal(hl7_annotation_strip(twice.ptr, twice.len, NULL, &a, &back), 5);
            assert_int_equal(back.len, n);
            assert_memory_equal(back.ptr, in, n);
            /* The same from a parse of the message, and nothing from the plain one. */
            assert_int_equal(hl7_parse(twice.ptr, twice.len, NULL, &m, NULL), ERR_OK);
            assert_int_equal(hl7_annotation_strip_parsed(m, &a, &back), 5);
            assert_int_equal(back.len, n);
            assert_memory_equal(back.ptr, in, n);
            assert_int_equal(hl7_msg_parse(m, in, n, NULL, NULL), ERR_OK);
            assert_int_equal(hl7_annotation_strip_parsed(m, &a, &back), 0);
            assert_ptr_equal(back.ptr, in);
            assert_int_equal(back.len, n);
            hl7_msg_free(m);
            arena_free(&a);
        }
    }
    /* A pass from before the header existed (ZSG alone) goes too; MSH never. */
    const char *legacy = "MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\rDG1|1||M43.16\r"
                         "ZSG|1|excludes1-pair|W|M43.16|DG1(1)-3||old\rZPI|1\r";
    arena_t a;
    arena_init(&a, 0);
    slice_t out;
    assert_int_equal(hl7_annotation_strip(legacy, strlen(legacy), NULL, &a, &out), 1);
    const char *want = "MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\rDG1|1||M43.16\rZPI|1\r";
    assert_int_equal(out.len, strlen(want));
    assert_memory_equal(out.ptr, want, out.len);
    /* Unparseable input is left as it is, for the parser to report. */
    const char *bad = "PID|1\rZSG|1|r|W\r";
    assert_int_equal(hl7_annotation_strip(bad, strlen(bad), NULL, &a, &out), 0);
    assert_ptr_equal(out.ptr, bad);
    arena_free(&a);
}

static void assert_bytes(slice_t got, const char *want)
{
    if (got.len != strlen(want) || memcmp(got.ptr, want, got.len) != 0)
        fail_msg("got\n%.*s\nwant\n%s", (int)got.len, got.ptr, want);
}

/* Whole outputs pinned byte for byte: escapes of every delimiter in every
 * kind of value, numbers of two digits and more (set ids, ERR locations),
 * negative and extreme pack versions, original and pre-2.5 shapes. */
static void test_outputs_byte_for_byte(void **state)
{
    (void)state;
    fx_t f;
    fx_parse(&f, MSG25);
    rule_finding_t fs[11];
    for (int i = 0; i < 11; i++)
        fs[i] = finding("seventh-char", RULE_SEV_INFO, "info", NULL, NULL, NULL, false);
    fs[0] = finding("excludes1|pair", RULE_SEV_REJECT,
                    "M43.04 with M43.16 & more: see ~notes\\\rnext line", "DG1(12)-3(4).5.6",
                    "M43.04", "M43.06", false);
    fs[0].codes[1] = "M43^16";
    fs[0].ncodes = 2;
    fs[1].severity = RULE_SEV_WARN;
    fs[1].location = "FT1-19(2).1";
    rule_verdict_t v = {.kind = VERDICT_REJECT,
                        .findings = fs,
                        .nfindings = 2,
                        .code_set = "FY2027",
                        .code_set_fit = RULE_CODESET_NEWER};
    hl7_ack_opts_t o = {.timestamp = "20240312143016",
                        .control_id = "SG18c-000042",
                        .code = HL7_ACK_AE,
                        .verdict = &v};
    slice_t out;
    assert_int_equal(hl7_ack_build(f.m, &o, &f.a, &out), ERR_OK);
    assert_bytes(
        out,
        "MSH|^~\\&|GATE|BILLING|CHG^1.2.3^ISO|SPINECTR|20240312143016||ACK^P03^ACK|SG18c-000042|P|"
        "2.5||||||8859/1\r"
        "MSA|AE|CTRL-42\r"
        "ERR||DG1^12^3^4^5^6|103^Table value not found^HL70357|E|excludes1\\F\\pair||suggested: "
        "M43.06|M43.04 with M43.16 \\T\\ more: see \\R\\notes\\E\\\\X0D\\next line\r"
        "ERR||FT1^^19^2^1|0^Message accepted^HL70357|W|seventh-char|||info\r");
    err_detail_t e = {.code = ERR_BAD_ESCAPE,
                      .offset = 1234,
                      .segment = 4,
                      .where = "PID(1)-5.1.2",
                      .msg = "bad escape | here"};
    o = (hl7_ack_opts_t){.timestamp = "20240312143016",
                         .control_id = "SG1",
                         .code = HL7_ACK_CR,
                         .error = &e,
                         .no_ack_back = true};
    assert_int_equal(hl7_ack_build(f.m, &o, &f.a, &out), ERR_OK);
    assert_bytes(out, "MSH|^~\\&|GATE|BILLING|CHG^1.2.3^ISO|SPINECTR|20240312143016||ACK^P03^ACK|"
                      "SG1|P|2.5|||NE|NE||8859/1\r"
                      "MSA|CR|CTRL-42\r"
                      "ERR||PID^1^5^^1^2|102^Data type error^HL70357|E|BAD_ESCAPE||segment 4, byte "
                      "offset 1234|bad escape \\F\\ here\r");
    const char *msg23 = "MSH|^~\\&|A|B|C|D|2024||BAR^P01|X9|P|2.3\rPID|1\rDG1|1\r";
    hl7_msg_t *m23;
    assert_int_equal(hl7_parse(msg23, strlen(msg23), NULL, &m23, NULL), ERR_OK);
    o = (hl7_ack_opts_t){
        .timestamp = "20240312143016", .control_id = "SG2", .code = HL7_ACK_AE, .verdict = &v};
    assert_int_equal(hl7_ack_build(m23, &o, &f.a, &out), ERR_OK);
    assert_bytes(out,
                 "MSH|^~\\&|C|D|A|B|20240312143016||ACK^P01|SG2|P|2.3\r"
                 "MSA|AE|X9|M43.04 with M43.16 \\T\\ more: see \\R\\notes\\E\\\\X0D\\next line\r"
                 "ERR|DG1^12^3^103&Table value not found&HL70357\r"
                 "ERR|FT1^^19^0&Message accepted&HL70357\r");
    o = (hl7_ack_opts_t){
        .timestamp = "20240312143016", .control_id = "SG3", .code = HL7_ACK_AR, .error = &e};
    assert_int_equal(hl7_ack_build(m23, &o, &f.a, &out), ERR_OK);
    assert_bytes(out, "MSH|^~\\&|C|D|A|B|20240312143016||ACK^P01|SG3|P|2.3\r"
                      "MSA|AR|X9|bad escape \\F\\ here\r"
                      "ERR|PID^1^5^102&Data type error&HL70357\r");
    v.nfindings = 11;
    hl7_annotate_opts_t ao = {
        .style = HL7_ANNOTATE_ZSG, .pack_name = "spine^rules", .pack_version = -7};
    assert_bytes(hl7_annotate(m23, &v, &ao, &f.a),
                 "MSH|^~\\&|A|B|C|D|2024||BAR^P01|X9|P|2.3\r"
                 "PID|1\r"
                 "DG1|1\r"
                 "ZSH|1|spinegate|reject|spine\\S\\rules|-7|FY2027|newer|11\r"
                 "ZSG|1|excludes1\\F\\pair|E|M43.04~M43\\S\\16|DG1(12)-3(4).5.6|M43.06|M43.04 with "
                 "M43.16 \\T\\ more: see \\R\\notes\\E\\\\X0D\\next line\r"
                 "ZSG|2|seventh-char|W||FT1-19(2).1||info\r"
                 "ZSG|3|seventh-char|I||||info\r"
                 "ZSG|4|seventh-char|I||||info\r"
                 "ZSG|5|seventh-char|I||||info\r"
                 "ZSG|6|seventh-char|I||||info\r"
                 "ZSG|7|seventh-char|I||||info\r"
                 "ZSG|8|seventh-char|I||||info\r"
                 "ZSG|9|seventh-char|I||||info\r"
                 "ZSG|10|seventh-char|I||||info\r"
                 "ZSG|11|seventh-char|I||||info\r");
    ao.pack_version = INT_MIN;
    v.nfindings = 1;
    assert_bytes(hl7_annotate(m23, &v, &ao, &f.a),
                 "MSH|^~\\&|A|B|C|D|2024||BAR^P01|X9|P|2.3\r"
                 "PID|1\r"
                 "DG1|1\r"
                 "ZSH|1|spinegate|reject|spine\\S\\rules|-2147483648|FY2027|newer|1\r"
                 "ZSG|1|excludes1\\F\\pair|E|M43.04~M43\\S\\16|DG1(12)-3(4).5.6|M43.06|M43.04 with "
                 "M43.16 \\T\\ more: see \\R\\notes\\E\\\\X0D\\next line\r");
    ao.pack_version = INT_MAX;
    ao.style = HL7_ANNOTATE_NTE;
    v.nfindings = 11;
    assert_bytes(
        hl7_annotate(m23, &v, &ao, &f.a),
        "MSH|^~\\&|A|B|C|D|2024||BAR^P01|X9|P|2.3\r"
        "PID|1\r"
        "DG1|1\r"
        "NTE||O|[spinegate 1] verdict=reject pack=spine\\S\\rules v2147483647 code-set=FY2027 "
        "(newer) findings=11\r"
        "NTE|1|O|[E] excludes1\\F\\pair DG1(12)-3(4).5.6 M43.04 with M43.16 \\T\\ more: see "
        "\\R\\notes\\E\\\\X0D\\next line (codes: M43.04, M43\\S\\16) (suggested: M43.06)\r"
        "NTE|2|O|[W] seventh-char FT1-19(2).1 info\r"
        "NTE|3|O|[I] seventh-char info\r"
        "NTE|4|O|[I] seventh-char info\r"
        "NTE|5|O|[I] seventh-char info\r"
        "NTE|6|O|[I] seventh-char info\r"
        "NTE|7|O|[I] seventh-char info\r"
        "NTE|8|O|[I] seventh-char info\r"
        "NTE|9|O|[I] seventh-char info\r"
        "NTE|10|O|[I] seventh-char info\r"
        "NTE|11|O|[I] seventh-char info\r");
    hl7_msg_free(m23);
    fx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ack_routing),
        cmocka_unit_test(test_ack_err_v25),
        cmocka_unit_test(test_ack_pre25_shapes),
        cmocka_unit_test(test_ack_escaping_custom_delims),
        cmocka_unit_test(test_ack_plan_all_modes),
        cmocka_unit_test(test_ack_0357_choices),
        cmocka_unit_test(test_ack_no_ack_back),
        cmocka_unit_test(test_ack_unparseable),
        cmocka_unit_test(test_annotate),
        cmocka_unit_test(test_annotation_strip),
        cmocka_unit_test(test_outputs_byte_for_byte),
    };
    return cmocka_run_group_tests_name("hl7_ack", tests, NULL, NULL);
}
