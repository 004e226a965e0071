/* test_common.c - unit tests of common/: arena, claim helpers, err, xmalloc. */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "claim.h"
#include "err.h"
#include "log.h"
#include "mllp_ack.h"
#include "slice.h"
#include "xmalloc.h"

/* arena_recycle keeps the one block of an arena that never outgrew it (the
 * next allocation lands where the first did) and drops what a large message
 * made: after it, the arena is empty and usable either way. */
static void test_arena_recycle(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 256);
    char *first = arena_alloc(&a, 100);
    memset(first, 'x', 100);
    arena_recycle(&a, 256);
    assert_int_equal(a.total, 0);
    assert_ptr_equal(arena_alloc(&a, 100), first);
    /* a second block: everything goes, and the next block is a fresh one */
    (void)arena_alloc(&a, 200);
    assert_non_null(arena_alloc(&a, 4096));
    arena_recycle(&a, 256);
    assert_null(a.head);
    assert_int_equal(a.total, 0);
    assert_int_equal(a.block_size, 256);
    assert_string_equal(arena_strdup(&a, "DG1"), "DG1");
    /* one block, but larger than the size asked for: dropped as well */
    arena_free(&a);
    arena_init(&a, 256);
    (void)arena_alloc(&a, 10000);
    arena_recycle(&a, 256);
    assert_null(a.head);
    arena_free(&a);
}

static void test_arena_alignment_and_growth(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 64);
    for (int i = 1; i < 200; i++) {
        unsigned char *p = arena_alloc(&a, (size_t)i);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xAB, (size_t)i);
    }
    char *s = arena_printf(&a, "%s-%d", "DG1", 2);
    assert_string_equal(s, "DG1-2");
    arena_reset(&a);
    assert_int_equal(a.total, 0);
    assert_string_equal(arena_strdup(&a, "x"), "x");
    arena_free(&a);
    arena_free(NULL);
}

static void test_xmalloc_counts(void **state)
{
    (void)state;
    size_t before = xmalloc_used();
    char *p = xmalloc(100);
    assert_int_equal(xmalloc_used(), before + 100);
    p = xrealloc(p, 300);
    assert_int_equal(xmalloc_used(), before + 300);
    xfree(p);
    assert_int_equal(xmalloc_used(), before);
    xfree(NULL);
}

/* Small blocks freed are reused for later requests of their size class:
 * every block must still hold its whole request, and live blocks never
 * share bytes, whatever sizes are freed and asked for, through xrealloc
 * too (sizes 0 to past the cached range). */
static void test_xmalloc_small_reuse(void **state)
{
    (void)state;
    enum { N = 300 };
    static unsigned char *blk[N];
    size_t before = xmalloc_used();
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < N; i++) {
            size_t n = (i * 7 + (size_t)round * 13) % (N + 1);
            blk[i] = i % 5 == 4 ? xrealloc(xmalloc(N - n), n) : xmalloc(n);
            memset(blk[i], (int)(i & 0xff), n);
        }
        for (size_t i = 0; i < N; i++) {
            size_t n = (i * 7 + (size_t)round * 13) % (N + 1);
            for (size_t k = 0; k < n; k++)
                assert_int_equal(blk[i][k], (unsigned char)(i & 0xff));
        }
        /* Freed out of order, so that classes mix in the next round. */
        for (size_t i = 0; i < N; i += 2)
            xfree(blk[i]);
        for (size_t i = 1; i < N; i += 2)
            xfree(blk[i]);
        assert_int_equal(xmalloc_used(), before);
    }
}

static void test_code_normalise(void **state)
{
    (void)state;
    char out[16];
    assert_true(claim_code_normalise("M43.04", 6, out, sizeof out));
    assert_string_equal(out, "M4304");
    assert_true(claim_code_normalise(" m43.04 ", 8, out, sizeof out));
    assert_string_equal(out, "M4304");
    assert_false(claim_code_normalise("M43-04", 6, out, sizeof out));
    assert_string_equal(out, "");
    assert_false(claim_code_normalise("", 0, out, sizeof out));
    assert_false(claim_code_normalise("ABCDEFGHIJKLMNOPQRSTU", 21, out, sizeof out));
    claim_code_dotted("M4304", out, sizeof out);
    assert_string_equal(out, "M43.04");
    claim_code_dotted("M43", out, sizeof out);
    assert_string_equal(out, "M43");
    /* Cut as snprintf cuts: what fits, then the NUL. */
    const char *code = "S32009A";
    for (size_t cap = 1; cap <= 9; cap++) {
        char want[16], got[16];
        snprintf(want, cap, "%.3s.%s", code, code + 3);
        memset(got, 'x', sizeof got);
        claim_code_dotted(code, got, cap);
        assert_string_equal(got, want);
        assert_int_equal(got[cap], 'x'); /* nothing past cap */
    }
}

static void test_date_parse(void **state)
{
    (void)state;
    claim_date_t d;
    assert_true(claim_date_parse("2025-10-01", 10, &d));
    assert_int_equal(d.year, 2025);
    assert_int_equal(d.month, 10);
    assert_int_equal(d.day, 1);
    assert_true(claim_date_parse("20260115083000", 14, &d));
    assert_int_equal(d.month, 1);
    assert_int_equal(d.day, 15);
    assert_true(claim_date_parse("2026", 4, &d));
    assert_int_equal(d.month, 0);
    assert_false(claim_date_parse("20x6", 4, &d));
    assert_false(claim_date_parse("2026-13-01", 10, &d));
    assert_int_equal(d.year, 0);
}

static void test_code_systems(void **state)
{
    (void)state;
    assert_int_equal(claim_codesys_from("I10", 3), CODESYS_ICD10CM);
    const char *cm = "http://hl7.org/fhir/sid/icd-10-cm";
    assert_int_equal(claim_codesys_from(cm, strlen(cm)), CODESYS_ICD10CM);
    const char *who = "http://hl7.org/fhir/sid/icd-10";
    assert_int_equal(claim_codesys_from(who, strlen(who)), CODESYS_ICD10_WHO);
    assert_int_equal(claim_codesys_from("I9", 2), CODESYS_ICD9CM);
    assert_int_equal(claim_codesys_from("SNM", 3), CODESYS_OTHER);
    assert_int_equal(claim_codesys_from(NULL, 0), CODESYS_UNKNOWN);
    assert_int_equal(claim_procsys_from("C4", 2), PROCSYS_CPT);
    assert_int_equal(claim_procsys_from("HCPCS", 5), PROCSYS_HCPCS);
    assert_int_equal(claim_procsys_from("HPC", 3), PROCSYS_HCPCS);
    /* HL7 table 0396's HCPT is the provider taxonomy, not a procedure code. */
    assert_int_equal(claim_procsys_from("HCPT", 4), PROCSYS_OTHER);
    /* Every name, in the case written and in other cases. */
    static const struct {
        const char *name;
        claim_codesys_t want;
    } names[] = {
        {"I10", CODESYS_ICD10CM},
        {"I10C", CODESYS_ICD10CM},
        {"ICD10CM", CODESYS_ICD10CM},
        {"ICD-10-CM", CODESYS_ICD10CM},
        {"ICD10", CODESYS_ICD10CM},
        {"2.16.840.1.113883.6.90", CODESYS_ICD10CM},
        {"urn:oid:2.16.840.1.113883.6.90", CODESYS_ICD10CM},
        {"http://hl7.org/fhir/sid/icd-10-cm", CODESYS_ICD10CM},
        {"I9", CODESYS_ICD9CM},
        {"I9C", CODESYS_ICD9CM},
        {"ICD9CM", CODESYS_ICD9CM},
        {"ICD-9-CM", CODESYS_ICD9CM},
        {"2.16.840.1.113883.6.103", CODESYS_ICD9CM},
        {"urn:oid:2.16.840.1.113883.6.103", CODESYS_ICD9CM},
        {"2.16.840.1.113883.6.2", CODESYS_ICD9CM},
        {"urn:oid:2.16.840.1.113883.6.2", CODESYS_ICD9CM},
        {"http://hl7.org/fhir/sid/icd-9-cm", CODESYS_ICD9CM},
        {"2.16.840.1.113883.6.3", CODESYS_ICD10_WHO},
        {"urn:oid:2.16.840.1.113883.6.3", CODESYS_ICD10_WHO},
        {"http://hl7.org/fhir/sid/icd-10", CODESYS_ICD10_WHO},
        {"SCT", CODESYS_OTHER},
        {"99LOCAL", CODESYS_OTHER},
        {"2.16.840.1.113883.6.9", CODESYS_OTHER},   /* a prefix of 6.90 is not it */
        {"2.16.840.1.113883.6.900", CODESYS_OTHER}, /* nor a longer OID */
        {"ICD-10", CODESYS_OTHER},
        {"http://hl7.org/fhir/sid/icd-10-cm/", CODESYS_OTHER},
        {"I10P", CODESYS_OTHER}, /* ICD-10-PCS: procedures */
        {"", CODESYS_UNKNOWN},
        {"  ", CODESYS_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *n = names[i].name;
        char v[64];
        if (claim_codesys_from(n, strlen(n)) != names[i].want)
            fail_msg("'%s' is %s", n, claim_codesys_name(claim_codesys_from(n, strlen(n))));
        /* Lower case, and blanks around it. */
        snprintf(v, sizeof v, " %s\t", n);
        for (char *p = v; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        if (claim_codesys_from(v, strlen(v)) != names[i].want)
            fail_msg("'%s' is %s", v, claim_codesys_name(claim_codesys_from(v, strlen(v))));
    }
    /* Only len bytes are read. */
    assert_int_equal(claim_codesys_from("I10C", 3), CODESYS_ICD10CM);
    assert_int_equal(claim_codesys_from("I9X", 2), CODESYS_ICD9CM);
}

static void test_type_of_bill(void **state)
{
    (void)state;
    static const struct {
        const char *tob;
        claim_setting_t want;
    } tobs[] = {
        {"0111", CLAIM_SETTING_INPATIENT},  {"111", CLAIM_SETTING_INPATIENT},
        {"0117", CLAIM_SETTING_INPATIENT},  {"121", CLAIM_SETTING_INPATIENT},
        {" 0112 ", CLAIM_SETTING_INPATIENT}, {"0131", CLAIM_SETTING_OUTPATIENT},
        {"141", CLAIM_SETTING_OUTPATIENT},  {"0211", CLAIM_SETTING_OUTPATIENT},
        {"831", CLAIM_SETTING_OUTPATIENT},  {"0851", CLAIM_SETTING_OUTPATIENT},
        {"0911", CLAIM_SETTING_UNKNOWN},    {"011", CLAIM_SETTING_UNKNOWN},
        {"11", CLAIM_SETTING_UNKNOWN},      {"1111", CLAIM_SETTING_UNKNOWN},
        {"11x", CLAIM_SETTING_UNKNOWN},     {"", CLAIM_SETTING_UNKNOWN},
        {"00111", CLAIM_SETTING_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof tobs / sizeof tobs[0]; i++)
        if (claim_tob_setting(tobs[i].tob) != tobs[i].want)
            fail_msg("type of bill '%s': %s", tobs[i].tob,
                     claim_setting_name(claim_tob_setting(tobs[i].tob)));
    assert_int_equal(claim_tob_setting(NULL), CLAIM_SETTING_UNKNOWN);
    assert_string_equal(claim_setting_name(CLAIM_SETTING_INPATIENT), "inpatient");
    assert_string_equal(claim_kind_name(CLAIM_KIND_ADT), "adt");
}

/* A reserve keeps what was added and makes the adds up to it allocate
 * nothing: the arrays stay where they are. */
static void test_claim_reserve(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    claim_t *c = claim_new(&a, CLAIM_SRC_HL7V2);
    claim_add_dx(c, &a)->sequence = 7;
    claim_reserve(c, &a, 40, 30);
    const claim_dx_t *dx = c->dx;
    const claim_line_t *lines = c->lines;
    assert_int_equal(dx[0].sequence, 7);
    for (int i = 1; i < 40; i++)
        claim_add_dx(c, &a)->sequence = i;
    for (int i = 0; i < 30; i++)
        claim_add_line(c, &a)->sequence = i;
    assert_ptr_equal(c->dx, dx);
    assert_ptr_equal(c->lines, lines);
    assert_int_equal(c->dx[0].sequence, 7);
    assert_int_equal(c->dx[39].line, -1);
    claim_add_dx(c, &a); /* past it, the array grows as before */
    assert_ptr_not_equal(c->dx, dx);
    assert_int_equal(c->dx[0].sequence, 7);
    claim_reserve(c, &a, 5, 5); /* smaller than held: nothing moves */
    assert_int_equal(c->ndx, 41);
    arena_free(&a);
}

static void test_claim_growth_and_diff(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    claim_t *x = claim_new(&a, CLAIM_SRC_FHIR_JSON);
    claim_t *y = claim_new(&a, CLAIM_SRC_FHIR_XML);
    for (int i = 1; i <= 20; i++) {
        claim_add_dx(x, &a)->sequence = i;
        claim_add_dx(y, &a)->sequence = i;
    }
    assert_int_equal(x->ndx, 20);
    assert_non_null(claim_find_dx(x, 17));
    assert_null(claim_find_dx(x, 21));
    assert_null(claim_diff(x, y));
    y->dx[3].type = DX_TYPE_PRINCIPAL;
    assert_string_equal(claim_diff(x, y), "diagnosis.type");
    y->dx[3].type = x->dx[3].type;
    y->dx[5].line = 2;
    assert_string_equal(claim_diff(x, y), "diagnosis.line");
    y->dx[5].line = -1;
    /* The claim-level fields added for the care setting. */
    y->setting = CLAIM_SETTING_INPATIENT;
    assert_string_equal(claim_diff(x, y), "setting");
    y->setting = CLAIM_SETTING_UNKNOWN;
    y->kind = CLAIM_KIND_ADT;
    assert_string_equal(claim_diff(x, y), "kind");
    y->kind = CLAIM_KIND_BILL;
    x->type_of_bill = "0111";
    assert_string_equal(claim_diff(x, y), "type_of_bill");
    y->type_of_bill = "0111";
    y->discharge.year = 2026;
    assert_string_equal(claim_diff(x, y), "discharge");
    y->discharge.year = 0;
    claim_add_line(x, &a)->dx_codes[0] = "M4304";
    claim_add_line(y, &a)->dx_codes[0] = "M4305";
    x->lines[0].ndx_codes = y->lines[0].ndx_codes = 1;
    assert_string_equal(claim_diff(x, y), "line.dx_codes");
    y->lines[0].dx_codes[0] = "M4304";
    assert_null(claim_diff(x, y));
    arena_free(&a);
}

/* Ids from messages are escaped by the one helper every log line uses. */
static void test_log_id(void **state)
{
    (void)state;
    char buf[LOG_ID_BUF];
    assert_string_equal(log_id(NULL, buf), "-");
    assert_string_equal(log_id("", buf), "-");
    assert_string_equal(log_id("MSG00001", buf), "MSG00001");
    assert_string_equal(log_id("A\nB\r\x1b[31m C\t\x7f\xc3\xa9", buf), "A?B??[31m?C????");
    char long_id[300];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    const char *s = log_id(long_id, buf);
    assert_int_equal(strlen(s), LOG_ID_MAX + 1);
    assert_int_equal(s[LOG_ID_MAX], '~');
}

static void test_err(void **state)
{
    (void)state;
    err_detail_t d;
    err_clear(&d);
    assert_int_equal(err_set(&d, ERR_BAD_ESCAPE, 42, "at %s", "PID-5"), ERR_BAD_ESCAPE);
    assert_int_equal(d.offset, 42);
    assert_string_equal(d.msg, "at PID-5");
    assert_string_equal(err_name(ERR_BAD_ESCAPE), "BAD_ESCAPE");
    assert_string_equal(err_str(ERR_OK), "success");
    assert_string_equal(err_str((err_t)9999), "unknown error");
    assert_int_equal(err_set(NULL, ERR_IO, 0, NULL), ERR_IO);
}

static void test_str_copy(void **state)
{
    (void)state;
    char b[6];
    memset(b, 'z', sizeof b);
    str_copy(b, sizeof b, "abc");
    assert_string_equal(b, "abc");
    str_copy(b, sizeof b, "abcde"); /* exactly fits */
    assert_string_equal(b, "abcde");
    str_copy(b, sizeof b, "abcdefgh"); /* cut, terminated */
    assert_string_equal(b, "abcde");
    str_copy(b, sizeof b, "");
    assert_string_equal(b, "");
    str_copy(b, 1, "abc");
    assert_string_equal(b, "");
}

static void test_mllp_ack(void **state)
{
    (void)state;
    slice_t code, id;
    const char *a = "MSH|^~\\&|B|B|S|S|20260101||ACK|9|P|2.5\rMSA|AA|C1\r";
    assert_true(mllp_ack_msa(a, strlen(a), &code, &id));
    assert_true(slice_eq(code, "AA") && slice_eq(id, "C1"));
    /* LF and CR LF end segments too; MSA first; MSA-2 up to the segment end */
    const char *lf = "MSH|^~\\&|x\r\nMSA|AE|C2\nERR|x";
    assert_true(mllp_ack_msa(lf, strlen(lf), &code, &id));
    assert_true(slice_eq(code, "AE") && slice_eq(id, "C2"));
    assert_true(mllp_ack_msa("MSA|CA", 6, &code, &id));
    assert_true(slice_eq(code, "CA") && id.len == 0);
    /* "MSA" inside a segment, or with no separator after it, is no MSA */
    const char *inside = "MSH|MSA|AA|C1\rZZZ|x";
    assert_false(mllp_ack_msa(inside, strlen(inside), &code, &id));
    assert_false(mllp_ack_msa("MSH|x\rMSA\rMSA", 14, &code, &id));
    assert_false(mllp_ack_msa("MSA", 3, &code, &id));
    assert_false(mllp_ack_msa("", 0, &code, &id));

    char reason[96];
    assert_int_equal(mllp_ack_read(a, strlen(a), "C1", reason, sizeof reason), MLLP_ACK_ACCEPTED);
    assert_int_equal(mllp_ack_read(a, strlen(a), "C9", reason, sizeof reason), MLLP_ACK_OTHER_ID);
    assert_string_equal(reason, "ACK for another control id");
    assert_int_equal(mllp_ack_read(lf, strlen(lf), "C2", reason, sizeof reason), MLLP_ACK_REFUSED);
    assert_string_equal(reason, "downstream answered AE");
    assert_int_equal(mllp_ack_read(inside, strlen(inside), "C1", reason, sizeof reason),
                     MLLP_ACK_INVALID);
    assert_string_equal(reason, "no MSA segment in the ACK");
    const char *odd = "MSA|ZZ|C1\r";
    assert_int_equal(mllp_ack_read(odd, strlen(odd), "C1", reason, sizeof reason),
                     MLLP_ACK_INVALID);
    /* an ACK with no MSA-2 is taken for the message in flight */
    assert_int_equal(mllp_ack_read("MSA|CA", 6, "C1", reason, sizeof reason), MLLP_ACK_ACCEPTED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_alignment_and_growth),
        cmocka_unit_test(test_arena_recycle),
        cmocka_unit_test(test_xmalloc_counts),
        cmocka_unit_test(test_xmalloc_small_reuse),
        cmocka_unit_test(test_code_normalise),
        cmocka_unit_test(test_date_parse),
        cmocka_unit_test(test_code_systems),
        cmocka_unit_test(test_type_of_bill),
        cmocka_unit_test(test_claim_reserve),
        cmocka_unit_test(test_claim_growth_and_diff),
        cmocka_unit_test(test_log_id),
        cmocka_unit_test(test_err),
        cmocka_unit_test(test_str_copy),
        cmocka_unit_test(test_mllp_ack),
    };
    return cmocka_run_group_tests_name("common", tests, NULL, NULL);
}
