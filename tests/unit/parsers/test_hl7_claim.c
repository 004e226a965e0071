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
    fprintf(f, "kind %s setting %s tob %s discharge ", claim_kind_name(c->kind),
            claim_setting_name(c->setting), S(c->type_of_bill));
    put_date(f, c->discharge);
    fprintf(f, "\n");
    for (size_t i = 0; i < c->ndx; i++) {
        const claim_dx_t *d = &c->dx[i];
        fprintf(f, "dx %d %s sent=%s system=%s(%s) type=%s stage=%s poa=%s at=%s line=%d text=%s\n",
                d->sequence, d->code[0] ? d->code : "-", S(d->code_sent),
                claim_codesys_name(d->system), S(d->system_sent), claim_dx_type_name(d->type),
                claim_dx_stage_name(d->stage), poa_name(d->poa), S(d->location), d->line,
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
    assert_int_equal(c->kind, CLAIM_KIND_BILL);
    assert_int_equal(c->setting, CLAIM_SETTING_INPATIENT);
    assert_int_equal(c->discharge.day, 12);
    assert_int_equal(c->ndx, 5);
    /* Z99.89 in FT1(2)-19(2) has no DG1: a diagnosis of its own. */
    assert_string_equal(c->dx[4].code, "Z9989");
    assert_string_equal(c->dx[4].location, "FT1(2)-19(2)");
    assert_int_equal(c->dx[4].line, 1);
    assert_int_equal(c->dx[4].type, DX_TYPE_SECONDARY);
    assert_int_equal(c->dx[0].line, -1);
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
    /* P11: financial groups give the lines their diagnoses. A group's DG1
     * that repeats a code of the claim (DG1 4, M54.50, as DG1 1) links its
     * charge to that diagnosis and is not a diagnosis twice. */
    c = map_file("tests/data/hl7/cases/dft_p11_v25.hl7", &a, &buf, &m);
    assert_int_equal(c->ndx, 3);
    assert_string_equal(c->dx[2].location, "DG1(3)-3");
    assert_int_equal(c->lines[0].ndx_pointers, 1);
    assert_int_equal(c->lines[0].dx_pointers[0], 2);
    assert_int_equal(c->lines[1].ndx_pointers, 2);
    assert_int_equal(c->lines[1].dx_pointers[0], 3);
    assert_int_equal(c->lines[1].dx_pointers[1], 1);
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

/* Maps an inline message (segments one per line); fails the test when it
 * does not parse or map. The message is freed; the claim lives in a. */
static claim_t *map_text(const char *text, arena_t *a)
{
    size_t len;
    char *in = tu_cr(text, &len);
    hl7_msg_t *m;
    err_detail_t d;
    assert_int_equal(hl7_parse(in, len, NULL, &m, &d), ERR_OK);
    claim_t *c = NULL;
    if (hl7_claim_read(m, a, &c, &d) != ERR_OK)
        fail_msg("does not map: %s", d.msg);
    hl7_msg_free(m);
    xfree(in);
    return c;
}

/* A DFT whose only diagnoses are in FT1-19: three FT1s, a code repeated in
 * other forms, a malformed code (kept, code ""), an ICD-9 code. */
static void test_ft1_only_diagnoses(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    char *buf;
    hl7_msg_t *m;
    claim_t *c = map_file("tests/data/hl7/cases/dft_p03_ft1_only.hl7", &a, &buf, &m);
    assert_int_equal(c->ndx, 4);
    assert_int_equal(c->setting, CLAIM_SETTING_OUTPATIENT);
    /* M43.16 on all three lines, as "M43.16", "m4316", "M43.16 ": one
     * diagnosis, the first line's. */
    assert_string_equal(c->dx[0].code, "M4316");
    assert_string_equal(c->dx[0].code_sent, "M43.16");
    assert_string_equal(c->dx[0].location, "FT1(1)-19(1)");
    assert_int_equal(c->dx[0].line, 0);
    assert_int_equal(c->dx[0].system, CODESYS_ICD10CM);
    assert_int_equal(c->dx[0].sequence, 0);
    assert_string_equal(c->dx[0].text, "Spondylolisthesis, lumbar");
    assert_int_equal(c->dx[1].system, CODESYS_UNKNOWN);
    assert_string_equal(c->dx[1].location, "FT1(1)-19(2)");
    /* The malformed code: kept with its form, once though sent twice. */
    assert_string_equal(c->dx[2].code, "");
    assert_string_equal(c->dx[2].code_sent, "M51.36-");
    assert_string_equal(c->dx[2].location, "FT1(2)-19(2)");
    assert_int_equal(c->dx[2].line, 1);
    assert_int_equal(c->dx[3].system, CODESYS_ICD9CM);
    assert_string_equal(c->dx[3].location, "FT1(3)-19(2)");
    assert_int_equal(c->dx[3].line, 2);
    /* Every line keeps its links to the codes it carries. */
    for (int i = 0; i < 3; i++) {
        assert_string_equal(c->lines[i].dx_codes[0], "M4316");
        assert_int_equal(c->lines[i].ndx_pointers, 0);
    }
    assert_int_equal(c->lines[0].ndx_codes, 2);
    assert_int_equal(c->lines[1].ndx_codes, 1);
    assert_string_equal(c->lines[2].dx_codes[1], "7242");
    hl7_msg_free(m);
    xfree(buf);

    /* A DG1 later in the message still wins over FT1-19 (DG1s are read
     * first), and a malformed DG1 code absorbs the same form in FT1-19. */
    c = map_text("MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\n"
                 "FT1|1|||20240101||CG||||1|||||||||M43.04~M43-04||||||72148^^C4\n"
                 "DG1|7||M43.04^^I10\nDG1|8||M43-04^^I10\n",
                 &a);
    assert_int_equal(c->ndx, 2);
    /* ... and the line points at both: the malformed one by its sequence,
     * since it has no normalised code to carry in dx_codes. */
    assert_int_equal(c->lines[0].ndx_pointers, 2);
    assert_int_equal(c->lines[0].dx_pointers[0], 7);
    assert_int_equal(c->lines[0].dx_pointers[1], 8);
    assert_string_equal(c->dx[1].location, "DG1(2)-3");

    /* A bad escape in an FT1-19 code names the repetition. */
    size_t len;
    char *in = tu_cr("MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\n"
                     "FT1|1|||20240101||CG||||1|||||||||M43.04~M43\\Q\\04||||||72148^^C4\n",
                     &len);
    assert_int_equal(hl7_parse(in, len, NULL, &m, NULL), ERR_OK);
    err_detail_t d;
    assert_int_equal(hl7_claim_read(m, &a, &c, &d), ERR_BAD_ESCAPE);
    assert_string_equal(d.where, "FT1(1)-19(2)");
    hl7_msg_free(m);
    xfree(in);
    arena_free(&a);
}

/* CWE: the ICD-10-CM triplet wins wherever it is; the location stays DG1-3. */
static void test_cwe_alternates(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    char *buf;
    hl7_msg_t *m;
    claim_t *c = map_file("tests/data/hl7/cases/dft_p03_cwe_alternates.hl7", &a, &buf, &m);
    assert_int_equal(c->ndx, 8);
    assert_string_equal(c->dx[0].code, "M5450");
    assert_string_equal(c->dx[0].system_sent, "I10C");
    assert_string_equal(c->dx[0].text, "Low back pain, unspecified");
    assert_string_equal(c->dx[0].location, "DG1(1)-3");
    assert_string_equal(c->dx[1].code, "M4316"); /* the CM primary stays */
    assert_string_equal(c->dx[2].code, "M549");  /* second alternate */
    assert_int_equal(c->dx[2].system, CODESYS_ICD10CM);
    assert_string_equal(c->dx[3].code, "S32001A"); /* the only coded triplet */
    assert_int_equal(c->dx[3].system, CODESYS_OTHER);
    assert_int_equal(c->dx[4].system, CODESYS_ICD10CM);
    assert_int_equal(c->dx[5].system, CODESYS_ICD10_WHO);
    assert_int_equal(c->dx[6].system, CODESYS_ICD9CM);
    assert_int_equal(c->dx[7].system, CODESYS_ICD9CM);
    /* FT1-19: the CM alternates link the line to DG1 1 and DG1 3. */
    assert_int_equal(c->lines[0].ndx_pointers, 2);
    assert_int_equal(c->lines[0].dx_pointers[0], 1);
    assert_int_equal(c->lines[0].dx_pointers[1], 3);
    hl7_msg_free(m);
    xfree(buf);

    /* An empty primary system takes DG1-2 before it is judged: I10 in DG1-2
     * keeps the primary over a CM alternate. */
    c = map_text("MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.3\n"
                 "DG1|1|I10|M43.04^x^^M43.05^y^I10\nDG1|2|I9|724.2^x^^M54.50^y^I10\n",
                 &a);
    assert_string_equal(c->dx[0].code, "M4304");
    assert_string_equal(c->dx[0].system_sent, "I10");
    assert_string_equal(c->dx[1].code, "M5450");
    /* DFT^P11: a financial group's DG1 links its line by the chosen triplet. */
    c = map_text("MSH|^~\\&|A|B|C|D|2024||DFT^P11|X|P|2.5\n"
                 "FT1|1|||20240101||CG||||1|||||||||||||||72148^^C4\n"
                 "DG1|4||724.2^x^I9C^M54.50^y^I10C\n",
                 &a);
    assert_int_equal(c->lines[0].ndx_codes, 1);
    assert_string_equal(c->lines[0].dx_codes[0], "M5450");
    assert_int_equal(c->lines[0].dx_pointers[0], 4);
    arena_free(&a);
}

/* Kind and care setting: ADT, PV1-2 classes, GP1-1 type of bill, PV1-45. */
static void test_kind_and_setting(void **state)
{
    (void)state;
    static const struct {
        const char *cls;
        claim_setting_t want;
    } classes[] = {
        {"I", CLAIM_SETTING_INPATIENT},  {"O", CLAIM_SETTING_OUTPATIENT},
        {"E", CLAIM_SETTING_OUTPATIENT}, {"R", CLAIM_SETTING_OUTPATIENT},
        {"P", CLAIM_SETTING_OUTPATIENT}, {"B", CLAIM_SETTING_OUTPATIENT},
        {"", CLAIM_SETTING_UNKNOWN},     {"N", CLAIM_SETTING_UNKNOWN},
        {"U", CLAIM_SETTING_UNKNOWN},    {"II", CLAIM_SETTING_UNKNOWN},
        {"I^Inpatient^HL70004", CLAIM_SETTING_INPATIENT}, /* CWE, v2.7 */
    };
    arena_t a;
    arena_init(&a, 0);
    char text[512];
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
        snprintf(text, sizeof text,
                 "MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\nPV1|1|%s\nDG1|1||M43.04^^I10\n",
                 classes[i].cls);
        claim_t *c = map_text(text, &a);
        if (c->setting != classes[i].want)
            fail_msg("PV1-2 '%s': setting %s", classes[i].cls, claim_setting_name(c->setting));
        assert_int_equal(c->kind, CLAIM_KIND_BILL);
        assert_null(c->type_of_bill);
        assert_int_equal(c->discharge.year, 0);
    }
    /* No PV1 at all. */
    claim_t *c = map_text("MSH|^~\\&|A|B|C|D|2024||BAR^P01|X|P|2.5\nDG1|1||M43.04^^I10\n", &a);
    assert_int_equal(c->setting, CLAIM_SETTING_UNKNOWN);
    /* ADT: kind ADT, whatever the trigger. */
    c = map_text("MSH|^~\\&|A|B|C|D|2024||ADT^A08^ADT_A01|X|P|2.5\nPV1|1|I\n"
                 "DG1|1||M43.04^^I10|||W\n",
                 &a);
    assert_int_equal(c->kind, CLAIM_KIND_ADT);
    assert_int_equal(c->setting, CLAIM_SETTING_INPATIENT);
    /* The type of bill in GP1-1 decides where it is a valid code. */
    static const struct {
        const char *pv1, *gp1;
        claim_setting_t want;
    } tobs[] = {
        {"O", "0111", CLAIM_SETTING_INPATIENT},  {"O", "121", CLAIM_SETTING_INPATIENT},
        {"I", "0131", CLAIM_SETTING_OUTPATIENT}, {"", "831", CLAIM_SETTING_OUTPATIENT},
        {"", "0211", CLAIM_SETTING_OUTPATIENT},  {"I", "011", CLAIM_SETTING_INPATIENT},
        {"O", "0911", CLAIM_SETTING_OUTPATIENT}, {"", "11x", CLAIM_SETTING_UNKNOWN},
        {"", "0111^Hospital inpatient^NUBC", CLAIM_SETTING_INPATIENT},
    };
    for (size_t i = 0; i < sizeof tobs / sizeof tobs[0]; i++) {
        snprintf(text, sizeof text,
                 "MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\nPV1|1|%s\nGP1|%s\n"
                 "DG1|1||M43.04^^I10\n",
                 tobs[i].pv1, tobs[i].gp1);
        c = map_text(text, &a);
        if (c->setting != tobs[i].want)
            fail_msg("PV1-2 '%s' GP1-1 '%s': setting %s", tobs[i].pv1, tobs[i].gp1,
                     claim_setting_name(c->setting));
        assert_non_null(c->type_of_bill);
    }
    /* PV1-45 is the discharge date, whatever the setting. */
    c = map_text("MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\n"
                 "PV1|1|O||||||||||||||||||||||||||||||||||||||||||20261001|202610030815\n"
                 "DG1|1||M43.04^^I10\n",
                 &a);
    assert_int_equal(c->discharge.year, 2026);
    assert_int_equal(c->discharge.month, 10);
    assert_int_equal(c->discharge.day, 3);
    assert_int_equal(c->service_from.day, 1);
    arena_free(&a);
}

/* 20,000 FT1s with distinct codes and 20,000 with one repeated code map in
 * linear time (the diagnosis index), one diagnosis per distinct code. */
static void test_many_ft1(void **state)
{
    (void)state;
    enum { N = 20000 };
    size_t cap = (size_t)N * 80 + 256, n = 0;
    char *msg = xmalloc(cap);
    n += (size_t)snprintf(msg + n, cap - n, "MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\r");
    for (int i = 0; i < N; i++)
        n += (size_t)snprintf(msg + n, cap - n,
                              "FT1|%d|||20240101||CG||||1|||||||||Z%02d.%03d~M43.16||||||72148^^C4\r",
                              i + 1, i / 1000, i % 1000);
    hl7_msg_t *m;
    assert_int_equal(hl7_parse(msg, n, NULL, &m, NULL), ERR_OK);
    arena_t a;
    arena_init(&a, 0);
    claim_t *c;
    err_detail_t d;
    assert_int_equal(hl7_claim_read(m, &a, &c, &d), ERR_OK);
    assert_int_equal(c->ndx, N + 1);
    assert_int_equal(c->nlines, N);
    assert_string_equal(c->dx[1].code, "M4316");
    assert_string_equal(c->dx[N].location, "FT1(20000)-19(1)");
    assert_int_equal(c->dx[N].line, N - 1);
    hl7_msg_free(m);
    arena_free(&a);
    xfree(msg);
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

/* Values are copied as sent when they hold no escape character and
 * decoded otherwise: the same text sent both ways reads the same, down to
 * the code system and procedure system it names. */
static void test_escaped_values_read_as_plain(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    claim_t *c = map_text(
        "MSH|^~\\&|A|B|C|D|2024||DFT^P03|X\\X31\\|P|2.5\n"
        "PID|1||MRN1||N||19580417|M||||||||||AC\\T\\1\n"
        "DG1|1||M43.16^Low back pain^I10|||F\n"
        "DG1|2||M43\\X2E\\16^Low\\X20\\back pain^I\\X31\\0|||F\n"
        "FT1|1|||20240101||CG||||1|||||||||||||||72148^^C4|59~LT\n"
        "FT1|2|||20240101||CG||||1|||||||||||||||7214\\X38\\^^C\\X34\\|\\X35\\9~L\\X54\\\n",
        &a);
    assert_string_equal(c->id, "X1");
    assert_string_equal(c->ref_mrn, "MRN1");
    assert_string_equal(c->ref_account, "AC&1");
    assert_int_equal(c->ndx, 2);
    for (int i = 0; i < 2; i++) {
        const claim_dx_t *x = &c->dx[i];
        assert_string_equal(x->code_sent, "M43.16");
        assert_string_equal(x->code, "M4316");
        assert_string_equal(x->system_sent, "I10");
        assert_int_equal(x->system, CODESYS_ICD10CM);
        assert_string_equal(x->text, "Low back pain");
    }
    assert_int_equal(c->nlines, 2);
    for (int i = 0; i < 2; i++) {
        const claim_line_t *l = &c->lines[i];
        assert_string_equal(l->code, "72148");
        assert_string_equal(l->system_sent, "C4");
        assert_int_equal(l->system, PROCSYS_CPT);
        assert_int_equal(l->nmodifiers, 2);
        assert_string_equal(l->modifiers[0], "59");
        assert_string_equal(l->modifiers[1], "LT");
    }
    arena_free(&a);
}

/* The common code system names and every other spelling of the same
 * system map alike. */
static void test_system_names(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    claim_t *c = map_text("MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\n"
                          "DG1|1||M43.16^^I10\nDG1|2||M43.17^^i10\nDG1|3||M43.18^^ I10 \n"
                          "DG1|4||M43.19^^ICD10CM\nDG1|5||M43.10^^I1\nDG1|6||M43.11^^I100\n"
                          "FT1|1|||20240101||CG||||1|||||||||||||||72148^^C4\n"
                          "FT1|2|||20240101||CG||||1|||||||||||||||72148^^c4\n"
                          "FT1|3|||20240101||CG||||1|||||||||||||||72148^^CPT\n"
                          "FT1|4|||20240101||CG||||1|||||||||||||||72148^^C41\n",
                          &a);
    assert_int_equal(c->ndx, 6);
    for (int i = 0; i < 4; i++)
        assert_int_equal(c->dx[i].system, CODESYS_ICD10CM);
    assert_int_equal(c->dx[4].system, CODESYS_OTHER);
    assert_int_equal(c->dx[5].system, CODESYS_OTHER);
    for (int i = 0; i < 3; i++)
        assert_int_equal(c->lines[i].system, PROCSYS_CPT);
    assert_int_equal(c->lines[3].system, PROCSYS_OTHER);
    arena_free(&a);
}

/* FT1-10 quantities: plain digits and anything strtod() reads, in [0, 1e9). */
static void test_units(void **state)
{
    (void)state;
    static const struct {
        const char *sent;
        double units;
    } cases[] = {
        {"1", 1},          {"007", 7},   {"999999999", 999999999},
        {"1000000000", 0}, {"2.5", 2.5}, {" 3", 3},
        {"3 ", 3},         {"-1", 0},    {"1e3", 1000},
        {"0", 0},          {"\"\"", 0},  {"x", 0},
        {"12^EA", 12},     {"4~5", 4},   {"0000000001", 1},
        {"", 0},
    };
    arena_t a;
    arena_init(&a, 0);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[256];
        snprintf(text, sizeof text,
                 "MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\n"
                 "FT1|1|||20240101||CG||||%s|||||||||||||||72148^^C4\n",
                 cases[i].sent);
        claim_t *c = map_text(text, &a);
        if (c->lines[0].units != cases[i].units)
            fail_msg("FT1-10 \"%s\": units %g, expected %g", cases[i].sent, c->lines[0].units,
                     cases[i].units);
    }
    arena_free(&a);
}

/* Leaves bytes other than 0 where the next calls' stack frames will be. */
static void dirty_stack(void)
{
    volatile unsigned char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = 0x5a;
}

/* A malformed escape's detail names the field; it carries no segment or
 * field number (nothing left over from the stack). */
static void test_bad_escape_detail(void **state)
{
    (void)state;
    size_t len;
    char *in = tu_cr("MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\n"
                     "FT1|1|||20240101||CG||||1|||||||||||||||72148^^C4|5\\Q\\9\n",
                     &len);
    hl7_msg_t *m;
    assert_int_equal(hl7_parse(in, len, NULL, &m, NULL), ERR_OK);
    arena_t a;
    arena_init(&a, 0);
    claim_t *c;
    err_detail_t d;
    dirty_stack();
    assert_int_equal(hl7_claim_read(m, &a, &c, &d), ERR_BAD_ESCAPE);
    assert_null(c);
    assert_string_equal(d.where, "FT1(1)-26");
    assert_int_equal(d.offset, (size_t)(strstr(in, "\\Q") - in));
    assert_int_equal(d.segment, 0);
    assert_int_equal(d.field, 0);
    hl7_msg_free(m);
    arena_free(&a);
    xfree(in);
}

/* Codes alike in length and ends but not the same are told apart (the
 * reader keeps the codes it normalised lately by those), and a code sent
 * again in another form still finds its diagnosis. */
static void test_codes_alike_at_the_ends(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    claim_t *c = map_text("MSH|^~\\&|A|B|C|D|2024||DFT^P03|X|P|2.5\n"
                          "DG1|1||M43.16^^I10\nDG1|2||M44.16^^I10\nDG1|3||M4-.16^^I10\n"
                          "FT1|1|||20240101||CG||||1|||||||||M45.16~M44.16~m4316~M4-.16~M46.-6||"
                          "||||72148^^C4\n",
                          &a);
    assert_int_equal(c->ndx, 5);
    assert_string_equal(c->dx[0].code, "M4316");
    assert_string_equal(c->dx[1].code, "M4416");
    assert_string_equal(c->dx[2].code, "");
    assert_string_equal(c->dx[3].code, "M4516");
    assert_string_equal(c->dx[3].location, "FT1(1)-19(1)");
    assert_string_equal(c->dx[4].code, "");
    assert_string_equal(c->dx[4].code_sent, "M46.-6");
    const claim_line_t *l = &c->lines[0];
    assert_int_equal(l->ndx_codes, 3);
    assert_string_equal(l->dx_codes[0], "M4516");
    assert_string_equal(l->dx_codes[1], "M4416");
    assert_string_equal(l->dx_codes[2], "M4316");
    assert_int_equal(l->ndx_pointers, 3);
    assert_int_equal(l->dx_pointers[0], 2);
    assert_int_equal(l->dx_pointers[1], 1);
    assert_int_equal(l->dx_pointers[2], 3);
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_spine_codes),
        cmocka_unit_test(test_bad_escape_in_code),
        cmocka_unit_test(test_ft1_only_diagnoses),
        cmocka_unit_test(test_cwe_alternates),
        cmocka_unit_test(test_kind_and_setting),
        cmocka_unit_test(test_many_ft1),
        cmocka_unit_test(test_corpus_messages),
        cmocka_unit_test(test_escaped_values_read_as_plain),
        cmocka_unit_test(test_system_names),
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_bad_escape_detail),
        cmocka_unit_test(test_codes_alike_at_the_ends),
    };
    return cmocka_run_group_tests_name("hl7_claim", tests, NULL, NULL);
}
