/* test_hl7_claim.c - HL7 v2 -> claim mapping (parsers/hl7_claim.c).
 * Data-driven: each tests/data/hl7/cases/NAME.hl7 is mapped and its claim,
 * dumped as text, must equal NAME.claim; or the error must equal NAME.err
 * ("ERRNAME where"). Adding a case needs no C; run with HL7_CLAIM_WRITE=1
 * to write missing .claim files (then read them before committing).
 * Also maps every DFT/BAR/ADT message of the corpus, and checks the spine
 * codes field by field. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hl7.h"
#include "hl7_claim.h"
#include "hl7_testutil.h"

static const char *poa_name(claim_poa_t p)
{
    static const char *const n[] = {"-", "Y", "N", "U", "W", "exempt"};
    return (unsigned)p < 6 ? n[p] : "?";
}

static const char *procsys_name(claim_procsys_t s)
{
    static const char *const n[] = {"unknown", "cpt", "hcpcs", "icd-10-pcs", "other"};
    return (unsigned)s < 5 ? n[s] : "?";
}

static void put_date(FILE *f, claim_date_t d)
{
    if (d.year)
        fprintf(f, "%04d-%02d-%02d", d.year, d.month, d.day);
    else
        fprintf(f, "-");
}

#define S(x) ((x) ? (x) : "-")

/* A canonical text form of a claim, one line per item. */
static char *dump(const claim_t *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fprintf(f, "type %s\nid %s\nsex %c\nbirth ", S(c->message_type), S(c->id),
            c->sex ? c->sex : '-');
    put_date(f, c->birth_date);
    fprintf(f, "\nservice ");
    put_date(f, c->service_from);
    fprintf(f, " ");
    put_date(f, c->service_to);
    fprintf(f, "\ndischarged_alive %d\n", c->discharged_alive);
    for (size_t i = 0; i < c->ndx; i++) {
        const claim_dx_t *d = &c->dx[i];
        fprintf(f, "dx %d %s sent=%s system=%s(%s) type=%s poa=%s at=%s text=%s\n", d->sequence,
                d->code[0] ? d->code : "-", S(d->code_sent), claim_codesys_name(d->system),
                S(d->system_sent), claim_dx_type_name(d->type), poa_name(d->poa), S(d->location),
                S(d->text));
    }
    for (size_t i = 0; i < c->nlines; i++) {
        const claim_line_t *l = &c->lines[i];
        fprintf(f, "line %d %s system=%s(%s) units=%g dates=", l->sequence, S(l->code),
                procsys_name(l->system), S(l->system_sent), l->units);
        put_date(f, l->date_from);
        fprintf(f, "..");
        put_date(f, l->date_to);
        fprintf(f, " mods=");
        for (int k = 0; k < l->nmodifiers; k++)
            fprintf(f, "%s%s", k ? "," : "", l->modifiers[k]);
        fprintf(f, " dx_codes=");
        for (int k = 0; k < l->ndx_codes; k++)
            fprintf(f, "%s%s", k ? "," : "", l->dx_codes[k]);
        fprintf(f, " dx_pointers=");
        for (int k = 0; k < l->ndx_pointers; k++)
            fprintf(f, "%s%d", k ? "," : "", l->dx_pointers[k]);
        fprintf(f, " at=%s\n", S(l->location));
    }
    fclose(f);
    return buf;
}

static void run_case(const char *name)
{
    char rel[512];
    size_t len = 0, elen = 0;
    snprintf(rel, sizeof rel, "tests/data/hl7/cases/%s.hl7", name);
    char *in = tu_read(rel, &len);
    assert_non_null(in);
    hl7_msg_t *m;
    err_detail_t d;
    if (hl7_parse(in, len, NULL, &m, &d) != ERR_OK)
        fail_msg("%s: does not parse: %s", name, d.msg);
    arena_t a;
    arena_init(&a, 0);
    claim_t *c;
    err_t rc = hl7_claim_read(m, &a, &c, &d);
    snprintf(rel, sizeof rel, "tests/data/hl7/cases/%s.err", name);
    char *exp = tu_read(rel, &elen);
    if (exp) {
        char got[128];
        snprintf(got, sizeof got, "%s %s\n", err_name(rc), d.where);
        if (elen != strlen(got) || memcmp(exp, got, elen) != 0)
            fail_msg("%s: expected error %.*s got %s (%s)", name, (int)elen, exp, got, d.msg);
        assert_null(c);
        xfree(exp);
    } else {
        if (rc != ERR_OK)
            fail_msg("%s: %s at %s: %s", name, err_name(rc), d.where, d.msg);
        char *text = dump(c);
        snprintf(rel, sizeof rel, "tests/data/hl7/cases/%s.claim", name);
        exp = tu_read(rel, &elen);
        if (!exp && getenv("HL7_CLAIM_WRITE")) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", tu_srcdir(), rel);
            FILE *f = fopen(path, "w");
            assert_non_null(f);
            fputs(text, f);
            fclose(f);
            print_message("wrote %s\n", path);
        } else if (!exp) {
            fail_msg("%s: no %s (HL7_CLAIM_WRITE=1 writes it)", name, rel);
        } else if (elen != strlen(text) || memcmp(exp, text, elen) != 0) {
            fail_msg("%s: claim differs from %s:\n--- got\n%s--- expected\n%.*s", name, rel, text,
                     (int)elen, exp);
        }
        free(text);
        xfree(exp);
    }
    arena_free(&a);
    hl7_msg_free(m);
    xfree(in);
}

static void test_cases(void **state)
{
    (void)state;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/data/hl7/cases", tu_srcdir());
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(dp)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".hl7") != 0)
            continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(l - 4), e->d_name);
        run_case(name);
        n++;
    }
    closedir(dp);
    print_message("%d cases mapped\n", n);
    assert_true(n >= 10);
}

static claim_t *map_file(const char *rel, arena_t *a, char **buf, hl7_msg_t **m)
{
    size_t len = 0;
    *buf = tu_read(rel, &len);
    assert_non_null(*buf);
    err_detail_t d;
    assert_int_equal(hl7_parse(*buf, len, NULL, m, &d), ERR_OK);
    claim_t *c;
    if (hl7_claim_read(*m, a, &c, &d) != ERR_OK)
        fail_msg("%s: %s", rel, d.msg);
    return c;
}

static void test_spine_codes(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    char *buf;
    hl7_msg_t *m;
    claim_t *c = map_file("tests/data/hl7/cases/dft_p03_v25.hl7", &a, &buf, &m);
    /* The claim outlives the message: everything was copied to the arena. */
    hl7_msg_free(m);
    memset(buf, 'x', 16);
    xfree(buf);
    assert_string_equal(c->message_type, "DFT^P03");
    assert_string_equal(c->id, "DFT25-0001");
    assert_int_equal(c->ndx, 4);
    assert_string_equal(c->dx[0].code, "M4316");
    assert_string_equal(c->dx[0].code_sent, "M43.16");
    assert_string_equal(c->dx[0].text, "Spondylolisthesis&lumbar region"); /* unescaped */
    assert_int_equal(c->dx[0].type, DX_TYPE_PRINCIPAL);
    assert_int_equal(c->dx[0].poa, POA_Y);
    assert_string_equal(c->dx[0].location, "DG1(1)-3");
    assert_string_equal(c->dx[2].code, "S32001A");
    assert_string_equal(c->dx[2].code_sent, "S32001A");
    assert_string_equal(c->dx[3].code, "M48062");
    assert_int_equal(c->dx[3].system, CODESYS_ICD10CM);
    assert_int_equal(c->dx[3].poa, POA_EXEMPT);
    assert_string_equal(c->dx[3].location, "DG1(4)-3");
    assert_int_equal(c->nlines, 3);
    const claim_line_t *l = &c->lines[0];
    assert_string_equal(l->code, "22612");
    assert_int_equal(l->system, PROCSYS_CPT);
    assert_int_equal(l->nmodifiers, 2);
    assert_string_equal(l->modifiers[1], "LT");
    assert_int_equal(l->ndx_codes, 2);
    assert_string_equal(l->dx_codes[0], "M4316");
    assert_string_equal(l->dx_codes[1], "M5450");
    assert_int_equal(l->ndx_pointers, 2);
    assert_int_equal(l->dx_pointers[0], 1);
    assert_int_equal(l->dx_pointers[1], 2);
    assert_string_equal(l->location, "FT1(1)");
    /* S32.001A sent dotted on the line, undotted in DG1: they still match;
     * Z99.89 has no DG1: a code without a pointer. */
    l = &c->lines[1];
    assert_int_equal(l->ndx_codes, 2);
    assert_string_equal(l->dx_codes[1], "Z9989");
    assert_int_equal(l->ndx_pointers, 1);
    assert_int_equal(l->dx_pointers[0], 3);
    assert_true(l->units == 2.0);
    assert_int_equal(c->lines[2].system, PROCSYS_HCPCS);
    assert_int_equal(c->lines[2].ndx_codes, 0); /* "" is no code */
    assert_int_equal(c->service_from.day, 9);
    assert_int_equal(c->service_to.day, 11);
    /* v2.3, codes without dots, system from DG1-2. */
    c = map_file("tests/data/hl7/cases/dft_p03_v23.hl7", &a, &buf, &m);
    assert_string_equal(c->dx[0].code, "M4304");
    assert_string_equal(c->dx[0].system_sent, "I10");
    assert_int_equal(c->dx[0].system, CODESYS_ICD10CM);
    assert_int_equal(c->dx[0].type, DX_TYPE_ADMITTING);
    assert_int_equal(c->dx[0].poa, POA_ABSENT);
    assert_string_equal(c->dx[1].code, "Q762");
    assert_string_equal(c->dx[1].text, "Congenital spondylolisthesis");
    assert_int_equal(c->lines[0].dx_pointers[0], 1);
    assert_int_equal(c->discharged_alive, 1);
    hl7_msg_free(m);
    xfree(buf);
    /* v2.8: CWE alternate coding, expired patient. */
    c = map_file("tests/data/hl7/cases/dft_p03_v28.hl7", &a, &buf, &m);
    assert_string_equal(c->dx[0].code, "M5450");
    assert_string_equal(c->dx[0].system_sent, "I10C");
    assert_string_equal(c->dx[1].code, "Q762");
    assert_int_equal(c->discharged_alive, 0);
    assert_int_equal(c->sex, 'U');
    assert_int_equal(c->lines[0].dx_pointers[0], 1);
    hl7_msg_free(m);
    xfree(buf);
    /* P11: financial groups give the lines their diagnoses. */
    c = map_file("tests/data/hl7/cases/dft_p11_v25.hl7", &a, &buf, &m);
    assert_int_equal(c->ndx, 4);
    assert_string_equal(c->dx[2].location, "DG1(3)-3");
    assert_int_equal(c->lines[0].ndx_pointers, 1);
    assert_int_equal(c->lines[0].dx_pointers[0], 2);
    assert_int_equal(c->lines[1].ndx_pointers, 2);
    assert_int_equal(c->lines[1].dx_pointers[0], 3);
    assert_int_equal(c->lines[1].dx_pointers[1], 4); /* the group's own DG1, not DG1-1 = 1 */
    assert_int_equal(c->lines[2].dx_pointers[0], 3);
    hl7_msg_free(m);
    xfree(buf);
    arena_free(&a);
}

static void test_bad_escape_in_code(void **state)
{
    (void)state;
    size_t len;
    char *in = tu_cr("MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\nPID|1\n"
                     "DG1|1||M43\\Q\\16^x^I10\nDG1|2||M43.16^bad \\Q\\ text^I10\n",
                     &len);
    hl7_msg_t *m;
    assert_int_equal(hl7_parse(in, len, NULL, &m, NULL), ERR_OK);
    arena_t a;
    arena_init(&a, 0);
    claim_t *c;
    err_detail_t d;
    assert_int_equal(hl7_claim_read(m, &a, &c, &d), ERR_BAD_ESCAPE);
    assert_null(c);
    assert_string_equal(d.where, "DG1(1)-3");
    assert_int_equal(d.offset, (size_t)(strstr(in, "\\Q") - in));
    hl7_msg_free(m);
    xfree(in);
    /* In a text, a bad escape is kept raw. */
    in = tu_cr("MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\nDG1|1||M43.16^bad \\Q\\ text^I10\n",
               &len);
    assert_int_equal(hl7_parse(in, len, NULL, &m, NULL), ERR_OK);
    assert_int_equal(hl7_claim_read(m, &a, &c, &d), ERR_OK);
    assert_string_equal(c->dx[0].text, "bad \\Q\\ text");
    hl7_msg_free(m);
    xfree(in);
    arena_free(&a);
}

/* Every DFT/BAR/ADT message of the corpus maps (an ADT without DG1 is
 * ERR_UNSUPPORTED), and every diagnosis carries its location. */
static void test_corpus_messages(void **state)
{
    (void)state;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/data/hl7/corpus", tu_srcdir());
    const char *subdirs[] = {"", "/fixed"};
    int mapped = 0, dx = 0, lines = 0, unsupported = 0;
    for (int s = 0; s < 2; s++) {
        char path[4200];
        snprintf(path, sizeof path, "%s%s", dir, subdirs[s]);
        DIR *dp = opendir(path);
        assert_non_null(dp);
        struct dirent *e;
        while ((e = readdir(dp)) != NULL) {
            if (!strstr(e->d_name, ".hl7"))
                continue;
            char rel[600];
            snprintf(rel, sizeof rel, "tests/data/hl7/corpus%s/%s", subdirs[s], e->d_name);
            size_t len = 0;
            char *buf = tu_read(rel, &len);
            arena_t a;
            arena_init(&a, 0);
            slice_t *msgs;
            size_t n;
            if (hl7_batch_split(buf, len, NULL, &a, &msgs, &n, NULL) != ERR_OK)
                n = 0;
            for (size_t i = 0; i < n; i++) {
                hl7_msg_t *m;
                if (hl7_parse(msgs[i].ptr, msgs[i].len, NULL, &m, NULL) != ERR_OK)
                    continue;
                slice_t t = hl7_value(m, 0, 9, 1, 1, 0);
                claim_t *c;
                err_detail_t d;
                err_t rc = hl7_claim_read(m, &a, &c, &d);
                if (slice_eq(t, "DFT") || slice_eq(t, "BAR") ||
                    (slice_eq(t, "ADT") && hl7_seg_find(m, "DG1", 1) >= 0)) {
                    if (rc != ERR_OK)
                        fail_msg("%s message %zu: %s", rel, i + 1, d.msg);
                    mapped++;
                    for (size_t k = 0; k < c->ndx; k++) {
                        assert_non_null(c->dx[k].location);
                        assert_non_null(c->dx[k].code_sent);
                    }
                    dx += (int)c->ndx;
                    lines += (int)c->nlines;
                } else {
                    if (rc != ERR_UNSUPPORTED)
                        fail_msg("%s message %zu: expected ERR_UNSUPPORTED", rel, i + 1);
                    assert_string_equal(d.where, "MSH-9");
                    unsupported++;
                }
                hl7_msg_free(m);
            }
            arena_free(&a);
            xfree(buf);
        }
        closedir(dp);
    }
    print_message("corpus: %d messages mapped (%d diagnoses, %d lines), %d unsupported\n",
                  mapped, dx, lines, unsupported);
    assert_true(mapped >= 12);
    assert_true(dx >= 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_spine_codes),
        cmocka_unit_test(test_bad_escape_in_code),
        cmocka_unit_test(test_corpus_messages),
    };
    return cmocka_run_group_tests_name("hl7_claim", tests, NULL, NULL);
}
