/* test_fhir.c - unit tests of the FHIR reader (parsers/fhir*.c).
 *
 * Data-driven: every tests/data/fhir/json/<name>.json is parsed with its
 * generated tests/data/fhir/xml/<name>.xml; both must map to equal claims
 * (claim_diff) and to the golden dump tests/data/fhir/expected/<name>.txt
 * (FHIR_UPDATE_GOLDEN=1 rewrites the goldens; review the diff by hand).
 * tests/data/fhir/bad/EXPECTED lists the hostile inputs and their errors.
 * A few examples are also checked field by field against their JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "claim.h"
#include "fhir.h"
#include "fhir_int.h"
#include "json_tree.h"
#include "fhir_out.h"
#include "xmalloc.h"

static const char *srcdir(void)
{
    const char *s = getenv("top_srcdir");
    return s ? s : ".";
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = xmalloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = '\0';
    *len = got;
    return buf;
}

static char *data_file(const char *rel, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/fhir/%s", srcdir(), rel);
    char *buf = read_file(path, len);
    if (!buf)
        fail_msg("cannot read %s", path);
    return buf;
}

static fhir_doc_t *parse_file(const char *rel, fhir_format_t fmt)
{
    size_t len;
    char *buf = data_file(rel, &len);
    fhir_doc_t *doc = NULL;
    err_detail_t d;
    err_t e = fhir_parse(buf, len, fmt, NULL, &doc, &d);
    xfree(buf);
    if (e)
        fail_msg("%s: %s: %s (%s)", rel, err_name(e), d.msg, d.where);
    return doc;
}

static void date_str(char *out, size_t cap, claim_date_t d)
{
    if (!d.year)
        snprintf(out, cap, "-");
    else
        snprintf(out, cap, "%04d-%02d-%02d", d.year, d.month, d.day);
}

static const char *poa_name(claim_poa_t p)
{
    static const char *const n[] = {"-", "Y", "N", "U", "W", "exempt"};
    return (unsigned)p < 6 ? n[p] : "?";
}

static const char *ns(const char *s)
{
    return s ? s : "-";
}

/* One text line per claim, diagnosis and line: the golden format. */
static void dump_claim(FILE *f, const claim_t *c)
{
    char b1[16], b2[16], b3[16];
    date_str(b1, sizeof b1, c->birth_date);
    date_str(b2, sizeof b2, c->service_from);
    date_str(b3, sizeof b3, c->service_to);
    fprintf(f, "claim id=%s type=%s sex=%c birth=%s service=%s..%s who=%d\n", ns(c->id),
            ns(c->message_type), c->sex ? c->sex : '-', b1, b2, b3, c->has_who_icd10);
    date_str(b1, sizeof b1, c->discharge);
    fprintf(f, "  kind=%s setting=%s tob=%s discharge=%s\n", claim_kind_name(c->kind),
            claim_setting_name(c->setting), ns(c->type_of_bill), b1);
    for (size_t i = 0; i < c->ndx; i++) {
        const claim_dx_t *x = &c->dx[i];
        fprintf(f, "  dx seq=%d code=%s sent=%s sys=%s sys_sent=%s type=%s poa=%s text=%s at=%s\n",
                x->sequence, x->code[0] ? x->code : "-", ns(x->code_sent),
                claim_codesys_name(x->system), ns(x->system_sent), claim_dx_type_name(x->type),
                poa_name(x->poa), ns(x->text), ns(x->location));
    }
    for (size_t i = 0; i < c->nlines; i++) {
        const claim_line_t *l = &c->lines[i];
        date_str(b1, sizeof b1, l->date_from);
        date_str(b2, sizeof b2, l->date_to);
        fprintf(f, "  line seq=%d code=%s sys=%d sys_sent=%s units=%g dates=%s..%s mods=", l->sequence,
                ns(l->code), (int)l->system, ns(l->system_sent), l->units, b1, b2);
        for (int m = 0; m < l->nmodifiers; m++)
            fprintf(f, "%s%s", m ? "," : "", l->modifiers[m]);
        fprintf(f, " ptrs=");
        for (int p = 0; p < l->ndx_pointers; p++)
            fprintf(f, "%s%d", p ? "," : "", l->dx_pointers[p]);
        fprintf(f, " at=%s\n", ns(l->location));
    }
}

static int filter_json(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return n > 5 && strcmp(e->d_name + n - 5, ".json") == 0;
}

/* Every JSON example and its XML form: same claims, equal to the golden. */
static void test_examples_json_xml_golden(void **state)
{
    (void)state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/data/fhir/json", srcdir());
    struct dirent **names;
    int n = scandir(dir, &names, filter_json, alphasort);
    assert_true(n >= 20);
    bool update = getenv("FHIR_UPDATE_GOLDEN") != NULL;
    size_t total_claims = 0;
    for (int k = 0; k < n; k++) {
        char base[256], rel[512];
        snprintf(base, sizeof base, "%.*s", (int)(strlen(names[k]->d_name) - 5), names[k]->d_name);
        free(names[k]);
        snprintf(rel, sizeof rel, "json/%s.json", base);
        fhir_doc_t *dj = parse_file(rel, FHIR_FMT_JSON);
        snprintf(rel, sizeof rel, "xml/%s.xml", base);
        fhir_doc_t *dx = parse_file(rel, FHIR_FMT_XML);
        assert_string_equal(fhir_doc_resource_type(dj), fhir_doc_resource_type(dx));
        assert_int_equal(fhir_doc_claim_count(dj), fhir_doc_claim_count(dx));

        char *dump = NULL;
        size_t dump_len = 0;
        FILE *mem = open_memstream(&dump, &dump_len);
        fprintf(mem, "%s %zu claims\n", fhir_doc_resource_type(dj), fhir_doc_claim_count(dj));
        arena_t a;
        arena_init(&a, 0);
        for (size_t i = 0; i < fhir_doc_claim_count(dj); i++) {
            claim_t *cj, *cx;
            err_detail_t d;
            err_t e = fhir_doc_claim(dj, i, &a, &cj, &d);
            if (e)
                fail_msg("%s.json claim %zu: %s %s", base, i, err_name(e), d.msg);
            e = fhir_doc_claim(dx, i, &a, &cx, &d);
            if (e)
                fail_msg("%s.xml claim %zu: %s %s", base, i, err_name(e), d.msg);
            assert_int_equal(cj->source, CLAIM_SRC_FHIR_JSON);
            assert_int_equal(cx->source, CLAIM_SRC_FHIR_XML);
            const char *diff = claim_diff(cj, cx);
            if (diff)
                fail_msg("%s: JSON and XML differ in %s", base, diff);
            dump_claim(mem, cj);
            total_claims++;
        }
        fclose(mem);
        arena_free(&a);
        fhir_doc_free(dj);
        fhir_doc_free(dx);

        char gpath[1024];
        snprintf(gpath, sizeof gpath, "%s/tests/data/fhir/expected/%s.txt", srcdir(), base);
        if (update) {
            FILE *g = fopen(gpath, "w");
            assert_non_null(g);
            fwrite(dump, 1, dump_len, g);
            fclose(g);
        } else {
            size_t glen;
            char *golden = read_file(gpath, &glen);
            if (!golden)
                fail_msg("no golden %s (run with FHIR_UPDATE_GOLDEN=1 and review)", gpath);
            if (glen != dump_len || memcmp(golden, dump, glen) != 0)
                fail_msg("%s: claim dump differs from %s:\n%s", base, gpath, dump);
            xfree(golden);
        }
        free(dump);
    }
    free(names);
    print_message("%zu claims mapped from JSON and XML, all equal\n", total_claims);
}

static claim_t *claim_of(const char *rel, fhir_format_t fmt, size_t i, arena_t *a)
{
    fhir_doc_t *doc = parse_file(rel, fmt);
    claim_t *c;
    err_detail_t d;
    if (fhir_doc_claim(doc, i, a, &c, &d))
        fail_msg("%s: %s", rel, d.msg);
    fhir_doc_free(doc);
    return c;
}

/* Field checks written from reading the JSON by hand. */
static void test_examples_by_hand(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    /* Claim-100150: one diagnosis {sequence 1, code 123456, no system}, one
     * item 1200 on 2014-08-16, patient Patient/1 not in the document. */
    claim_t *c = claim_of("json/Claim-100150.json", FHIR_FMT_JSON, 0, &a);
    assert_string_equal(c->id, "100150");
    assert_int_equal(c->ndx, 1);
    assert_int_equal(c->dx[0].sequence, 1);
    assert_string_equal(c->dx[0].code_sent, "123456");
    assert_int_equal(c->dx[0].system, CODESYS_UNKNOWN);
    assert_null(c->dx[0].system_sent);
    assert_int_equal(c->sex, 0);
    assert_int_equal(c->nlines, 1);
    assert_string_equal(c->lines[0].code, "1200");
    assert_int_equal(c->lines[0].date_from.year, 2014);
    assert_int_equal(c->lines[0].date_from.day, 16);

    /* Claim-MED-00050: four WHO icd-10 diagnoses, CPT 62264 pointing at 2 and
     * 4; patient contained as #patient-1 (male, 1966-03-14 per the JSON). */
    c = claim_of("xml/Claim-MED-00050.xml", FHIR_FMT_XML, 0, &a);
    assert_int_equal(c->ndx, 4);
    assert_true(c->has_who_icd10);
    assert_string_equal(c->dx[0].code_sent, "M96.1");
    assert_string_equal(c->dx[0].code, "M961");
    assert_int_equal(c->dx[0].system, CODESYS_ICD10_WHO);
    assert_string_equal(c->dx[3].code, "M47816");
    assert_string_equal(c->dx[3].location, "Claim.diagnosis[3]");
    assert_string_equal(c->dx[1].text, "Chronic pain syndrome");
    assert_string_equal(c->lines[0].code, "62264");
    assert_int_equal(c->lines[0].system, PROCSYS_CPT);
    assert_int_equal(c->lines[0].ndx_pointers, 2);
    assert_int_equal(c->lines[0].dx_pointers[0], 2);
    assert_int_equal(c->lines[0].dx_pointers[1], 4);

    /* Claim-960151: billablePeriod 2014-08-15..16, admitting diagnosis. */
    c = claim_of("json/Claim-960151.json", FHIR_FMT_JSON, 0, &a);
    assert_int_equal(c->service_from.day, 15);
    assert_int_equal(c->service_to.day, 16);
    assert_int_equal(c->dx[0].type, DX_TYPE_ADMITTING);

    /* The spine claim: M43.04 principal, POA y, 72146 -> 1,2, modifier 26;
     * the second diagnosis prefers its ICD-10-CM coding over SNOMED. */
    c = claim_of("json/spine-m4304-mri.json", FHIR_FMT_JSON, 0, &a);
    assert_int_equal(c->sex, 'F');
    assert_int_equal(c->birth_date.year, 1958);
    assert_string_equal(c->dx[0].code, "M4304");
    assert_int_equal(c->dx[0].system, CODESYS_ICD10CM);
    assert_int_equal(c->dx[0].type, DX_TYPE_PRINCIPAL);
    assert_int_equal(c->dx[0].poa, POA_Y);
    assert_string_equal(c->dx[1].code, "M546");
    assert_string_equal(c->dx[1].text, "Pain in thoracic spine");
    assert_false(c->has_who_icd10);
    assert_string_equal(c->lines[0].code, "72146");
    assert_string_equal(c->lines[0].modifiers[0], "26");
    assert_true(c->lines[0].units == 1.0);

    /* diagnosisReference: a contained Condition (CM coding preferred over
     * WHO, so no flag) and one outside the document (no code, its display). */
    c = claim_of("xml/spine-condition-ref.xml", FHIR_FMT_XML, 0, &a);
    assert_string_equal(c->dx[0].code, "M4306");
    assert_int_equal(c->dx[0].system, CODESYS_ICD10CM);
    assert_null(c->dx[1].code_sent);
    assert_string_equal(c->dx[1].code, "");
    assert_string_equal(c->dx[1].text, "on the server");
    assert_false(c->has_who_icd10);
    assert_int_equal(c->sex, 'U');
    assert_int_equal(c->lines[0].system, PROCSYS_HCPCS);
    assert_true(c->lines[0].units == 1.5);

    c = claim_of("json/spine-who-icd10.json", FHIR_FMT_JSON, 0, &a);
    assert_true(c->has_who_icd10);
    assert_int_equal(c->dx[0].system, CODESYS_ICD10_WHO);

    /* The Bundle: patient by fullUrl (urn:uuid) and by Patient/p1. */
    fhir_doc_t *doc = parse_file("xml/spine-bundle-two.xml", FHIR_FMT_XML);
    assert_string_equal(fhir_doc_resource_type(doc), "Bundle");
    assert_int_equal(fhir_doc_claim_count(doc), 2);
    assert_int_equal(fhir_doc_claim_entry(doc, 0), 1);
    assert_int_equal(fhir_doc_claim_entry(doc, 1), 2);
    for (size_t i = 0; i < 2; i++) {
        err_detail_t d;
        assert_int_equal(fhir_doc_claim(doc, i, &a, &c, &d), ERR_OK);
        assert_int_equal(c->sex, 'M');
        assert_int_equal(c->birth_date.year, 1971);
    }
    assert_string_equal(c->id, "spine-b2");
    assert_int_equal(c->service_from.day, 28);
    assert_int_equal(c->dx[1].poa, POA_W);
    assert_int_equal(c->dx[1].type, DX_TYPE_SECONDARY);
    err_detail_t d;
    assert_int_equal(fhir_doc_claim(doc, 2, &a, &c, &d), ERR_NOT_FOUND);
    assert_null(c);
    fhir_doc_free(doc);
    arena_free(&a);
}

/* Maps the one Claim of an inline JSON document. */
static claim_t *claim_json(const char *json, arena_t *a)
{
    fhir_doc_t *doc;
    err_detail_t d;
    if (fhir_parse(json, strlen(json), FHIR_FMT_JSON, NULL, &doc, &d))
        fail_msg("does not parse: %s", d.msg);
    claim_t *c;
    if (fhir_doc_claim(doc, 0, a, &c, &d))
        fail_msg("does not map: %s at %s", d.msg, d.where);
    fhir_doc_free(doc);
    return c;
}

/* Several codings: ICD-10-CM wherever it is, else WHO, else the first; a
 * malformed code is kept. Then each path to a care setting. */
static void test_codings_and_settings(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    for (int f = 0; f < 2; f++) {
        claim_t *c = claim_of(f ? "xml/spine-setting-tob-inpatient.xml"
                                : "json/spine-setting-tob-inpatient.json",
                              f ? FHIR_FMT_XML : FHIR_FMT_JSON, 0, &a);
        assert_string_equal(c->dx[0].code, "M4316"); /* third coding, CM */
        assert_int_equal(c->dx[0].system, CODESYS_ICD10CM);
        assert_string_equal(c->dx[0].text, "Spondylolisthesis, lumbar region");
        assert_string_equal(c->dx[1].code, "M545"); /* WHO over SNOMED */
        assert_int_equal(c->dx[1].system, CODESYS_ICD10_WHO);
        assert_true(c->has_who_icd10);
        assert_string_equal(c->dx[2].code_sent, "202708005"); /* the first */
        assert_int_equal(c->dx[2].system, CODESYS_OTHER);
        assert_string_equal(c->dx[3].code, "");
        assert_string_equal(c->dx[3].code_sent, "M51.36-");
        assert_int_equal(c->dx[3].system, CODESYS_ICD10CM);
        assert_int_equal(c->dx[3].line, -1);
        assert_int_equal(c->setting, CLAIM_SETTING_INPATIENT);
        assert_string_equal(c->type_of_bill, "0111");
        assert_int_equal(c->discharge.day, 2); /* billablePeriod.end */
        assert_int_equal(c->kind, CLAIM_KIND_BILL);
    }
    claim_t *c = claim_of("json/spine-setting-admission.json", FHIR_FMT_JSON, 0, &a);
    assert_int_equal(c->setting, CLAIM_SETTING_INPATIENT);
    assert_null(c->type_of_bill);
    assert_int_equal(c->discharge.day, 25); /* the admission period's end */
    c = claim_of("xml/spine-setting-tob-outpatient.xml", FHIR_FMT_XML, 0, &a);
    assert_int_equal(c->setting, CLAIM_SETTING_OUTPATIENT);
    assert_string_equal(c->type_of_bill, "131");
    assert_int_equal(c->discharge.year, 0);
    /* The Bundle: Encounter in the Bundle, the same for a professional
     * claim, a contained NONAC Encounter; a Condition with WHO then CM. */
    c = claim_of("json/spine-setting-encounter.json", FHIR_FMT_JSON, 0, &a);
    assert_int_equal(c->setting, CLAIM_SETTING_INPATIENT);
    assert_int_equal(c->discharge.month, 10);
    assert_int_equal(c->discharge.day, 3);
    assert_string_equal(c->dx[0].code, "M48061");
    assert_int_equal(c->dx[0].system, CODESYS_ICD10CM);
    c = claim_of("xml/spine-setting-encounter.xml", FHIR_FMT_XML, 1, &a);
    assert_int_equal(c->setting, CLAIM_SETTING_OUTPATIENT);
    assert_int_equal(c->discharge.year, 0);
    c = claim_of("json/spine-setting-encounter.json", FHIR_FMT_JSON, 2, &a);
    assert_int_equal(c->setting, CLAIM_SETTING_INPATIENT);
    assert_int_equal(c->discharge.day, 9);
    /* The R4 examples: professional, oral, vision, pharmacy are outpatient;
     * the institutional example with an Encounter outside the document says
     * nothing; the rich one has a "hospitalized" period. */
    static const struct {
        const char *file;
        claim_setting_t want;
    } ex[] = {
        {"json/Claim-860150.json", CLAIM_SETTING_OUTPATIENT},
        {"json/Claim-100150.json", CLAIM_SETTING_OUTPATIENT},
        {"json/Claim-660150.json", CLAIM_SETTING_OUTPATIENT},
        {"json/Claim-760150.json", CLAIM_SETTING_OUTPATIENT},
        {"json/Claim-960150.json", CLAIM_SETTING_UNKNOWN},
        {"json/Claim-960151.json", CLAIM_SETTING_INPATIENT},
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        c = claim_of(ex[i].file, FHIR_FMT_JSON, 0, &a);
        if (c->setting != ex[i].want)
            fail_msg("%s: %s", ex[i].file, claim_setting_name(c->setting));
    }

#define CLAIM_HEAD                                                                           \
    "{\"resourceType\":\"Claim\",\"id\":\"x\",\"status\":\"active\",\"use\":\"claim\","      \
    "\"patient\":{\"reference\":\"#p\"},\"created\":\"2026-01-01\","                         \
    "\"billablePeriod\":{\"start\":\"2026-01-02\",\"end\":\"2026-01-05\"},"
#define INST                                                                                 \
    "\"type\":{\"coding\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/claim-type\"," \
    "\"code\":\"institutional\"}]},"
    /* No type at all: unknown. */
    c = claim_json(CLAIM_HEAD "\"diagnosis\":[]}", &a);
    assert_int_equal(c->setting, CLAIM_SETTING_UNKNOWN);
    assert_int_equal(c->discharge.year, 0);
    /* No type, but a type of bill: the bill says what it is. */
    c = claim_json(CLAIM_HEAD "\"supportingInfo\":[{\"sequence\":1,\"category\":{\"coding\":"
                              "[{\"code\":\"typeofbill\"}]},\"code\":{\"coding\":[{\"code\":\"121\"}]}}]}",
                   &a);
    assert_int_equal(c->setting, CLAIM_SETTING_INPATIENT);
    assert_int_equal(c->discharge.day, 5);
    /* A type of another system is no type. */
    c = claim_json(CLAIM_HEAD "\"type\":{\"coding\":[{\"system\":\"http://example.org\","
                              "\"code\":\"professional\"}]}}",
                   &a);
    assert_int_equal(c->setting, CLAIM_SETTING_UNKNOWN);
    /* A type of bill that is no code (0911, 11): the admission period decides. */
    c = claim_json(CLAIM_HEAD INST "\"supportingInfo\":[{\"sequence\":1,\"category\":{\"coding\":"
                   "[{\"code\":\"typeofbill\"}]},\"code\":{\"coding\":[{\"code\":\"0911\"}]}},"
                   "{\"sequence\":2,\"category\":{\"coding\":[{\"code\":\"hospitalized\"}]},"
                   "\"timingPeriod\":{\"start\":\"2026-01-02\"}}]}",
                   &a);
    assert_int_equal(c->setting, CLAIM_SETTING_INPATIENT);
    assert_string_equal(c->type_of_bill, "0911");
    assert_int_equal(c->discharge.day, 5); /* no period end: billablePeriod.end */
    /* A Bundle that holds this one Claim: its Encounter is the Claim's, even
     * unreferenced; R5's class as a CodeableConcept is read too. */
    c = claim_json("{\"resourceType\":\"Bundle\",\"type\":\"batch\",\"entry\":["
                   "{\"resource\":{\"resourceType\":\"Encounter\",\"id\":\"e\",\"class\":"
                   "[{\"coding\":[{\"code\":\"ACUTE\"}]}],\"period\":{\"end\":\"2026-01-04\"}}},"
                   "{\"resource\":" CLAIM_HEAD INST "\"diagnosis\":[]}}]}",
                   &a);
    assert_int_equal(c->setting, CLAIM_SETTING_INPATIENT);
    assert_int_equal(c->discharge.day, 4);
    /* An Encounter of another class, or a malformed one, says nothing. */
    c = claim_json("{\"resourceType\":\"Bundle\",\"type\":\"batch\",\"entry\":["
                   "{\"resource\":{\"resourceType\":\"Encounter\",\"id\":\"e\",\"class\":"
                   "{\"code\":\"AMB\"}}},"
                   "{\"resource\":{\"resourceType\":\"Encounter\",\"id\":\"f\",\"class\":7,"
                   "\"period\":[1]}},"
                   "{\"resource\":" CLAIM_HEAD INST "\"item\":[{\"sequence\":1,\"encounter\":"
                   "[{\"reference\":\"Encounter/f\"},{\"reference\":\"Patient/zz\"},7]}]}}]}",
                   &a);
    assert_int_equal(c->setting, CLAIM_SETTING_UNKNOWN);
    /* A supportingInfo of the wrong shape is an error, like any Claim field. */
    const char *badsi = CLAIM_HEAD "\"supportingInfo\":{\"sequence\":1}}";
    fhir_doc_t *doc;
    err_detail_t d;
    assert_int_equal(fhir_parse(badsi, strlen(badsi), FHIR_FMT_JSON, NULL, &doc, &d), ERR_OK);
    assert_int_equal(fhir_doc_claim(doc, 0, &a, &c, &d), ERR_BAD_VALUE);
    assert_string_equal(d.where, "Claim.supportingInfo");
    fhir_doc_free(doc);
#undef CLAIM_HEAD
#undef INST
    arena_free(&a);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    size_t len;
    char *manifest = data_file("bad/EXPECTED", &len);
    int cases = 0;
    char *save = NULL;
    for (char *line = strtok_r(manifest, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char file[128], code[32], where[96];
        if (line[0] == '#' || sscanf(line, "%127s %31s %95s", file, code, where) != 3)
            continue;
        char rel[256];
        snprintf(rel, sizeof rel, "bad/%s", file);
        size_t n;
        char *buf = data_file(rel, &n);
        fhir_format_t fmt = strstr(file, ".xml") ? FHIR_FMT_XML : FHIR_FMT_JSON;
        if (n)
            assert_int_equal(fhir_detect_format(buf, n), fmt);
        fhir_doc_t *doc = NULL;
        err_detail_t d;
        err_t e = fhir_parse(buf, n, fmt, NULL, &doc, &d);
        arena_t a;
        arena_init(&a, 0);
        for (size_t i = 0; !e && i < fhir_doc_claim_count(doc); i++) {
            claim_t *c;
            e = fhir_doc_claim(doc, i, &a, &c, &d);
        }
        arena_free(&a);
        fhir_doc_free(doc);
        xfree(buf);
        if (strcmp(err_name(e), code) != 0)
            fail_msg("%s: expected %s, got %s (%s)", file, code, err_name(e), d.msg);
        assert_int_equal(d.code, e);
        assert_true(d.msg[0] != '\0');
        if (strcmp(where, "-") != 0 && strcmp(d.where, where) != 0)
            fail_msg("%s: expected location %s, got %s", file, where, d.where);
        if (e == ERR_BAD_JSON || e == ERR_BAD_XML || e == ERR_TOO_DEEP)
            if (d.segment <= 0 && d.offset == 0)
                fail_msg("%s: %s without a line or offset", file, code);
        cases++;
    }
    xfree(manifest);
    assert_true(cases >= 20);
    print_message("%d hostile inputs rejected as expected\n", cases);
}

static void test_limits_and_detect(void **state)
{
    (void)state;
    assert_int_equal(fhir_detect_format("\xEF\xBB\xBF  <Claim/>", 12), FHIR_FMT_XML);
    assert_int_equal(fhir_detect_format(" \n{", 3), FHIR_FMT_JSON);
    assert_int_equal(fhir_detect_format("", 0), FHIR_FMT_JSON);

    size_t len;
    char *buf = data_file("json/spine-bundle-two.json", &len);
    fhir_doc_t *doc;
    err_detail_t d;
    fhir_opts_t o = {.max_claims = 1};
    assert_int_equal(fhir_parse(buf, len, FHIR_FMT_JSON, &o, &doc, &d), ERR_TOO_LARGE);
    assert_null(doc);
    assert_string_equal(d.where, "Bundle.entry[2]");
    o = (fhir_opts_t){.max_size = 100};
    assert_int_equal(fhir_parse(buf, len, FHIR_FMT_JSON, &o, &doc, &d), ERR_TOO_LARGE);
    o = (fhir_opts_t){.max_depth = 4};
    assert_int_equal(fhir_parse(buf, len, FHIR_FMT_JSON, &o, &doc, &d), ERR_TOO_DEEP);
    /* Every prefix of a valid document fails cleanly. */
    for (size_t n = 0; n < len; n += 7) {
        err_t e = fhir_parse(buf, n, FHIR_FMT_JSON, NULL, &doc, &d);
        assert_int_not_equal(e, ERR_OK);
        assert_null(doc);
    }
    xfree(buf);
    buf = data_file("xml/spine-bundle-two.xml", &len);
    o = (fhir_opts_t){.max_depth = 4};
    assert_int_equal(fhir_parse(buf, len, FHIR_FMT_XML, &o, &doc, &d), ERR_TOO_DEEP);
    for (size_t n = 0; n < len; n += 13) {
        err_t e = fhir_parse(buf, n, FHIR_FMT_XML, NULL, &doc, &d);
        assert_int_not_equal(e, ERR_OK);
        assert_null(doc);
    }
    xfree(buf);
}

/* Findings land on the diagnosis / item / Claim they concern, in both
 * formats; the outcome has one issue per finding. (Schema validity of every
 * writer output is checked by tests/fhir-out-check.sh.) */
static void test_writers_placement(void **state)
{
    (void)state;
    rule_finding_t f[2] = {
        {.rule_id = "r-dx", .severity = RULE_SEV_REJECT, .message = "m1",
         .location = "Claim.diagnosis[1]", .dx_index = 1, .line_index = -1},
        {.rule_id = "r-line", .severity = RULE_SEV_WARN, .message = "m2",
         .location = "Claim.item[0]", .dx_index = -1, .line_index = 0},
    };
    rule_verdict_t v = {.kind = VERDICT_REJECT, .findings = f, .nfindings = 2};
    arena_t a;
    arena_init(&a, 0);
    slice_t s;
    fhir_doc_t *doc = parse_file("json/spine-m4304-mri.json", FHIR_FMT_JSON);
    assert_int_equal(fhir_out_annotate(doc, 0, &v), ERR_OK);
    assert_int_equal(fhir_out_annotate(doc, 1, &v), ERR_NOT_FOUND);
    assert_int_equal(fhir_out_claim(doc, 0, &a, &s), ERR_OK);
    assert_int_equal(s.len, strlen(s.ptr));
    const char *dx1 = strstr(s.ptr, "\"sequence\":2");
    assert_non_null(dx1);
    const char *item = strstr(s.ptr, "\"item\":[");
    assert_non_null(item);
    assert_non_null(strstr(item, "\"extension\":[{\"url\":\"" FHIR_OUT_EXT_FINDING
                                 "\",\"extension\":[{\"url\":\"rule\",\"valueCode\":\"r-line\"}"));
    assert_non_null(strstr(dx1, "\"valueCode\":\"r-dx\""));
    assert_true(strstr(dx1, "\"valueCode\":\"r-dx\"") < item);
    assert_non_null(strstr(s.ptr, "\"url\":\"" FHIR_OUT_EXT_VERDICT "\",\"valueCode\":\"reject\""));
    fhir_doc_free(doc);

    doc = parse_file("xml/spine-m4304-mri.xml", FHIR_FMT_XML);
    assert_int_equal(fhir_out_annotate(doc, 0, &v), ERR_OK);
    assert_int_equal(fhir_out_claim(doc, 0, &a, &s), ERR_OK);
    /* The second <diagnosis> starts with the finding extension. */
    const char *d2 = strstr(strstr(s.ptr, "<diagnosis>") + 1, "<diagnosis>");
    assert_non_null(d2);
    d2 += strlen("<diagnosis>");
    d2 += strspn(d2, " \n");
    assert_memory_equal(d2, "<extension url=\"" FHIR_OUT_EXT_FINDING "\">",
                        strlen("<extension url=\"" FHIR_OUT_EXT_FINDING "\">"));
    fhir_doc_free(doc);

    fhir_out_outcome_verdict(&v, FHIR_FMT_XML, &a, &s);
    assert_non_null(strstr(s.ptr, "<severity value=\"error\"/><code value=\"business-rule\"/>"));
    assert_non_null(strstr(s.ptr, "<expression value=\"Claim.item[0]\"/>"));
    err_detail_t d = {.code = ERR_TOO_DEEP, .msg = "deep", .where = ""};
    fhir_out_outcome_error(&d, FHIR_FMT_JSON, &a, &s);
    assert_non_null(strstr(s.ptr, "\"code\":\"too-costly\""));
    arena_free(&a);
}

/* Wraps the example Claim in a $validate Parameters (mode first, then
 * resource) in fmt; the caller frees. */
static char *wrap_parameters(fhir_format_t fmt, const char *mode, size_t *len)
{
    size_t n;
    char *claim = data_file(fmt == FHIR_FMT_XML ? "xml/spine-m4304-mri.xml"
                                                : "json/spine-m4304-mri.json", &n);
    const char *body = claim;
    if (fmt == FHIR_FMT_XML && strncmp(body, "<?xml", 5) == 0)
        body = strstr(body, "?>") + 2;
    size_t cap = n + 512;
    char *out = xmalloc(cap);
    if (fmt == FHIR_FMT_XML)
        snprintf(out, cap,
                 "<Parameters xmlns=\"http://hl7.org/fhir\">%s%s%s"
                 "<parameter><name value=\"resource\"/><resource>%s</resource></parameter>"
                 "</Parameters>",
                 mode ? "<parameter><name value=\"mode\"/><valueCode value=\"" : "",
                 mode ? mode : "", mode ? "\"/></parameter>" : "", body);
    else
        snprintf(out, cap,
                 "{\"resourceType\":\"Parameters\",\"parameter\":[%s%s%s"
                 "{\"name\":\"resource\",\"resource\":%s}]}",
                 mode ? "{\"name\":\"mode\",\"valueCode\":\"" : "", mode ? mode : "",
                 mode ? "\"}," : "", claim);
    xfree(claim);
    *len = strlen(out);
    return out;
}

/* The $validate Parameters form: its resource parameter is the document's
 * one Claim, mapped exactly as the Claim alone, in both formats; mode is
 * read; every malformed Parameters is refused with a FHIRPath. */
static void test_parameters(void **state)
{
    (void)state;
    for (int f = 0; f < 2; f++) {
        fhir_format_t fmt = f ? FHIR_FMT_XML : FHIR_FMT_JSON;
        arena_t a;
        arena_init(&a, 0);
        fhir_doc_t *plain = parse_file(f ? "xml/spine-m4304-mri.xml" : "json/spine-m4304-mri.json",
                                       fmt);
        size_t len;
        char *buf = wrap_parameters(fmt, "update", &len);
        fhir_doc_t *doc = NULL;
        err_detail_t d;
        assert_int_equal(fhir_parse(buf, len, fmt, NULL, &doc, &d), ERR_OK);
        xfree(buf);
        assert_string_equal(fhir_doc_resource_type(doc), "Parameters");
        assert_string_equal(fhir_doc_validate_mode(doc), "update");
        assert_int_equal(fhir_doc_claim_count(doc), 1);
        assert_int_equal(fhir_doc_entry_count(doc), 0);
        claim_t *c1, *c2;
        assert_int_equal(fhir_doc_claim(plain, 0, &a, &c1, &d), ERR_OK);
        assert_int_equal(fhir_doc_claim(doc, 0, &a, &c2, &d), ERR_OK);
        assert_string_equal(c2->id, "spine-m4304-mri");
        const char *diff = claim_diff(c1, c2);
        assert_null(diff);
        fhir_doc_free(doc);
        fhir_doc_free(plain);

        buf = wrap_parameters(fmt, NULL, &len);
        assert_int_equal(fhir_parse(buf, len, fmt, NULL, &doc, &d), ERR_OK);
        xfree(buf);
        assert_string_equal(fhir_doc_validate_mode(doc), "");
        fhir_doc_free(doc);

        buf = wrap_parameters(fmt, "fix", &len);
        assert_int_equal(fhir_parse(buf, len, fmt, NULL, &doc, &d), ERR_BAD_VALUE);
        assert_null(doc);
        assert_string_equal(d.where, "Parameters.parameter[0].valueCode");
        xfree(buf);
        arena_free(&a);
    }
    static const struct {
        fhir_format_t fmt;
        const char *text;
        err_t code;
        const char *where;
    } bad[] = {
        {FHIR_FMT_JSON, "{\"resourceType\":\"Parameters\"}", ERR_EMPTY, "Parameters.parameter"},
        {FHIR_FMT_JSON, "{\"resourceType\":\"Parameters\",\"parameter\":[{\"name\":\"mode\","
                        "\"valueCode\":\"create\"}]}", ERR_EMPTY, "Parameters.parameter"},
        {FHIR_FMT_JSON, "{\"resourceType\":\"Parameters\",\"parameter\":{\"name\":\"resource\"}}",
         ERR_BAD_VALUE, "Parameters.parameter"},
        {FHIR_FMT_JSON, "{\"resourceType\":\"Parameters\",\"parameter\":[{\"name\":\"resource\","
                        "\"resource\":{\"resourceType\":\"Patient\"}}]}",
         ERR_UNSUPPORTED, "Parameters.parameter[0].resource"},
        {FHIR_FMT_JSON, "{\"resourceType\":\"Parameters\",\"parameter\":[{\"name\":\"resource\"}]}",
         ERR_EMPTY, "Parameters.parameter[0].resource"},
        {FHIR_FMT_JSON, "{\"resourceType\":\"Parameters\",\"parameter\":[{\"valueCode\":\"x\"}]}",
         ERR_BAD_VALUE, "Parameters.parameter[0].name"},
        {FHIR_FMT_JSON, "{\"resourceType\":\"Parameters\",\"parameter\":[{\"name\":\"profile\","
                        "\"valueUri\":\"http://x\"}]}",
         ERR_UNSUPPORTED, "Parameters.parameter[0].name"},
        {FHIR_FMT_JSON, "{\"resourceType\":\"Parameters\",\"parameter\":["
                        "{\"name\":\"resource\",\"resource\":{\"resourceType\":\"Claim\"}},"
                        "{\"name\":\"resource\",\"resource\":{\"resourceType\":\"Claim\"}}]}",
         ERR_BAD_VALUE, "Parameters.parameter[1]"},
        {FHIR_FMT_XML, "<Parameters xmlns=\"http://hl7.org/fhir\"><parameter><name "
                       "value=\"resource\"/><resource><Patient/></resource></parameter></Parameters>",
         ERR_UNSUPPORTED, "Parameters.parameter[0].resource"},
        {FHIR_FMT_XML, "<Parameters xmlns=\"http://hl7.org/fhir\"><parameter><name "
                       "value=\"resource\"/><resource><Claim/><Claim/></resource></parameter>"
                       "</Parameters>",
         ERR_BAD_VALUE, "Parameters.parameter[0].resource"},
        {FHIR_FMT_XML, "<Parameters xmlns=\"http://hl7.org/fhir\"/>", ERR_EMPTY,
         "Parameters.parameter"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        fhir_doc_t *doc = (fhir_doc_t *)1;
        err_detail_t d;
        err_t e = fhir_parse(bad[k].text, strlen(bad[k].text), bad[k].fmt, NULL, &doc, &d);
        if (e != bad[k].code || strcmp(d.where, bad[k].where) != 0)
            fail_msg("bad[%zu]: %s at '%s' (%s), want %s at '%s'", k, err_name(e), d.where, d.msg,
                     err_name(bad[k].code), bad[k].where);
        assert_null(doc);
    }
}

/* A JSON property given twice in one object is refused, with the way to
 * it: cJSON would read the first, a server behind the gate may read the
 * last. Small objects and large ones (over 16 members, checked sorted). */
static void test_json_duplicate_property(void **state)
{
    (void)state;
    static const struct {
        const char *json, *where;
    } cases[] = {
        {"{\"resourceType\":\"Claim\",\"id\":\"a\",\"id\":\"b\"}", "Claim.id"},
        {"{\"resourceType\":\"Claim\",\"diagnosis\":[{\"sequence\":1},{\"sequence\":2,"
         "\"diagnosisCodeableConcept\":{\"coding\":[{\"system\":\"s\",\"code\":\"M43.04\","
         "\"code\":\"M43.06\"}]}}]}",
         "Claim.diagnosis[1].diagnosisCodeableConcept.coding[0].code"},
        {"{\"resourceType\":\"Claim\",\"extension\":[{\"k01\":1,\"k02\":1,\"k03\":1,"
         "\"k04\":1,\"k05\":1,\"k06\":1,\"k07\":1,\"k08\":1,\"k09\":1,\"k10\":1,\"k11\":1,"
         "\"k12\":1,\"k13\":1,\"k14\":1,\"k15\":1,\"k16\":1,\"k17\":1,\"k05\":2}]}",
         "Claim.extension[0].k05"},
        {"{\"resourceType\":\"Claim\",\"x\":{\"a b\":1,\"a b\":2}}", "Claim.x.?"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fhir_doc_t *doc = NULL;
        err_detail_t d;
        assert_int_equal(fhir_parse(cases[i].json, strlen(cases[i].json), FHIR_FMT_JSON, NULL,
                                    &doc, &d),
                         ERR_BAD_VALUE);
        assert_null(doc);
        assert_string_equal(d.where, cases[i].where);
        assert_non_null(strstr(d.msg, "given twice"));
    }
    /* The same large object without the repeat is taken. */
    static const char ok[] =
        "{\"resourceType\":\"Claim\",\"extension\":[{\"k01\":1,\"k02\":1,\"k03\":1,"
        "\"k04\":1,\"k05\":1,\"k06\":1,\"k07\":1,\"k08\":1,\"k09\":1,\"k10\":1,\"k11\":1,"
        "\"k12\":1,\"k13\":1,\"k14\":1,\"k15\":1,\"k16\":1,\"k17\":1,\"k18\":2}]}";
    fhir_doc_t *doc = NULL;
    err_detail_t d;
    assert_int_equal(fhir_parse(ok, strlen(ok), FHIR_FMT_JSON, NULL, &doc, &d), ERR_OK);
    fhir_doc_free(doc);
}

/* Annotating twice (the second time the Claim as the first pass forwarded
 * it) leaves exactly one pass: byte for byte the first pass's output;
 * foreign extensions stay; fhir_out_strip takes ours away again. */
static void test_annotation_idempotent(void **state)
{
    (void)state;
    rule_finding_t f[2] = {
        {.rule_id = "r-dx", .severity = RULE_SEV_WARN, .message = "m1",
         .location = "Claim.diagnosis[0]", .dx_index = 0, .line_index = -1},
        {.rule_id = "r-claim", .severity = RULE_SEV_INFO, .message = "m2",
         .dx_index = -1, .line_index = -1},
    };
    rule_verdict_t v = {.kind = VERDICT_ANNOTATE, .findings = f, .nfindings = 2,
                        .code_set = "FY2027"};
    rule_verdict_t v2 = {.kind = VERDICT_ANNOTATE, .findings = f, .nfindings = 1,
                         .code_set = "FY2026"};
    static const char *const files[] = {"json/spine-m4304-mri.json", "xml/spine-m4304-mri.xml"};
    for (int k = 0; k < 2; k++) {
        fhir_format_t fmt = k ? FHIR_FMT_XML : FHIR_FMT_JSON;
        arena_t a;
        arena_init(&a, 0);
        slice_t orig, once, twice, other, stripped;
        fhir_doc_t *doc = parse_file(files[k], fmt);
        assert_int_equal(fhir_out_claim(doc, 0, &a, &orig), ERR_OK);
        assert_int_equal(fhir_out_annotate_pack(doc, 0, &v, "spine rules v1"), ERR_OK);
        assert_int_equal(fhir_out_claim(doc, 0, &a, &once), ERR_OK);
        fhir_doc_free(doc);
        assert_non_null(strstr(once.ptr, FHIR_OUT_EXT_ANNOTATION));
        assert_non_null(strstr(once.ptr, "spine rules v1"));
        assert_non_null(strstr(once.ptr, "FY2027"));
        {
            /* Dated lines in two years: one codeSet for each table. */
            rule_verdict_t two = v;
            two.code_sets[0] = "FY2026";
            two.code_sets[1] = "FY2027";
            two.ncode_sets = 2;
            slice_t both;
            fhir_doc_t *d2 = parse_file(files[k], fmt);
            assert_int_equal(fhir_out_annotate_pack(d2, 0, &two, "spine rules v1"), ERR_OK);
            assert_int_equal(fhir_out_claim(d2, 0, &a, &both), ERR_OK);
            fhir_doc_free(d2);
            const char *first = strstr(both.ptr, "FY2026");
            assert_non_null(first);
            assert_non_null(strstr(first, "FY2027"));
        }

        doc = NULL;
        err_detail_t d;
        assert_int_equal(fhir_parse(once.ptr, once.len, fmt, NULL, &doc, &d), ERR_OK);
        assert_int_equal(fhir_out_annotate_pack(doc, 0, &v, "spine rules v1"), ERR_OK);
        assert_int_equal(fhir_out_claim(doc, 0, &a, &twice), ERR_OK);
        assert_int_equal(twice.len, once.len);
        assert_memory_equal(twice.ptr, once.ptr, once.len);
        /* A different verdict replaces, it does not add. */
        assert_int_equal(fhir_out_annotate_pack(doc, 0, &v2, "spine rules v2"), ERR_OK);
        assert_int_equal(fhir_out_claim(doc, 0, &a, &other), ERR_OK);
        assert_null(strstr(other.ptr, "FY2027"));
        assert_null(strstr(other.ptr, "r-claim"));
        assert_null(strstr(other.ptr, "spine rules v1"));
        const char *h = strstr(other.ptr, FHIR_OUT_EXT_ANNOTATION);
        assert_non_null(h);
        assert_null(strstr(h + 1, FHIR_OUT_EXT_ANNOTATION));
        assert_int_equal(fhir_out_strip(doc, 0), ERR_OK);
        assert_int_equal(fhir_out_strip(doc, 1), ERR_NOT_FOUND);
        assert_int_equal(fhir_out_claim(doc, 0, &a, &stripped), ERR_OK);
        assert_int_equal(stripped.len, orig.len);
        assert_memory_equal(stripped.ptr, orig.ptr, orig.len);
        fhir_doc_free(doc);
        arena_free(&a);
    }
    /* Someone else's extension on the Claim is kept, ours is replaced. */
    const char *json = "{\"resourceType\":\"Claim\",\"id\":\"x\",\"extension\":["
                       "{\"url\":\"http://other.example/ext\",\"valueString\":\"keep\"},"
                       "{\"url\":\"" FHIR_OUT_EXT_VERDICT "\",\"valueCode\":\"reject\"}]}";
    fhir_doc_t *doc = NULL;
    err_detail_t d;
    assert_int_equal(fhir_parse(json, strlen(json), FHIR_FMT_JSON, NULL, &doc, &d), ERR_OK);
    rule_verdict_t acc = {.kind = VERDICT_ACCEPT};
    assert_int_equal(fhir_out_annotate(doc, 0, &acc), ERR_OK);
    arena_t a;
    arena_init(&a, 0);
    slice_t s;
    fhir_out_claim(doc, 0, &a, &s);
    assert_non_null(strstr(s.ptr, "\"valueString\":\"keep\""));
    assert_null(strstr(s.ptr, "\"reject\""));
    assert_non_null(strstr(s.ptr, "\"url\":\"findings\",\"valueUnsignedInt\":0"));
    fhir_doc_free(doc);
    arena_free(&a);
}

/* The JSON pre-pass, 64 bytes at a time, must answer exactly as the byte
 * loop: same error, same offset. Random documents are drawn from the bytes
 * the pass acts on (and NUL), at lengths across block edges; 'u' and '0'
 * make \u0000 likely. */
static void prescan_compare(const char *buf, size_t len, int max_depth)
{
    err_detail_t fast = {0}, slow = {0};
    err_t a = fhir__json_prescan(buf, len, max_depth, &fast);
    err_t b = fhir__json_prescan_bytewise(buf, len, max_depth, &slow);
    if (a != b || (a && fast.offset != slow.offset)) {
        fprintf(stderr, "prescan differs at len %zu depth %d: %d@%zu vs %d@%zu\n", len, max_depth,
                a, fast.offset, b, slow.offset);
        fail();
    }
}

static void test_json_prescan_matches_bytewise(void **state)
{
    (void)state;
    static const char alphabet[] = "{}[]\"\\u0a \0";
    char buf[700];
    unsigned seed = 12345;
    size_t errors = 0;
    for (int round = 0; round < 40000; round++) {
        size_t len = (size_t)(rand_r(&seed) % sizeof buf);
        for (size_t i = 0; i < len; i++) {
            /* Mostly plain text, so that blocks hold few marks, as in a document. */
            unsigned r = (unsigned)rand_r(&seed);
            buf[i] = r % 4 ? 'a' : alphabet[(r / 4) % (sizeof alphabet - 1)];
            /* Every other document without backslashes: the blocks the
             * scan reads from their quotes alone. */
            if (round % 2 && buf[i] == '\\')
                buf[i] = '"';
        }
        int max_depth = 1 + rand_r(&seed) % 8;
        prescan_compare(buf, len, max_depth);
        err_detail_t d = {0};
        errors += fhir__json_prescan_bytewise(buf, len, max_depth, &d) != ERR_OK;
    }
    /* Both answers were seen many times: the comparison tested something. */
    assert_true(errors > 1000 && errors < 39000);

    /* A real document passes; one byte changed at every offset in turn gives
     * the same answer from both. */
    size_t n = 0;
    char *doc = data_file("json/spine-m4304-mri.json", &n);
    assert_true(n > 0);
    err_detail_t d = {0};
    assert_int_equal(fhir__json_prescan(doc, n, 64, &d), ERR_OK);
    static const char swaps[4] = {'"', '\\', '{', '\0'};
    for (size_t i = 0; i < n; i++) {
        char keep = doc[i];
        for (size_t k = 0; k < sizeof swaps; k++) {
            doc[i] = swaps[k];
            prescan_compare(doc, n, 6);
        }
        doc[i] = keep;
    }
    xfree(doc);
}

/* A JSON document's tree lives in its own arena: annotating it twice and
 * stripping it adds and removes nodes there, and freeing the document frees
 * them all (ASan and LeakSanitizer check the builds that run this). */
static void test_json_tree_arena_edits(void **state)
{
    (void)state;
    size_t n = 0;
    char *body = data_file("json/spine-m4304-mri.json", &n);
    fhir_doc_t *doc = NULL;
    err_detail_t d = {0};
    assert_int_equal(fhir_parse(body, n, FHIR_FMT_JSON, NULL, &doc, &d), ERR_OK);
    assert_true(doc->tree_in_arena);
    arena_t a;
    arena_init(&a, 0);
    claim_t *cl = NULL;
    assert_int_equal(fhir_doc_claim(doc, 0, &a, &cl, &d), ERR_OK);
    rule_verdict_t v = {0};
    v.kind = VERDICT_ANNOTATE;
    for (int pass = 0; pass < 2; pass++)
        assert_int_equal(fhir_out_annotate(doc, 0, &v), ERR_OK);
    slice_t out;
    fhir_out_doc(doc, &a, &out);
    assert_non_null(strstr(out.ptr, FHIR_OUT_EXT_VERDICT));
    assert_int_equal(fhir_out_strip(doc, 0), ERR_OK);
    fhir_out_doc(doc, &a, &out);
    assert_null(strstr(out.ptr, FHIR_OUT_EXT_VERDICT));
    fhir_doc_free(doc);
    arena_free(&a);
    xfree(body);
}

/* json_tree.c builds the tree cJSON's own parse would: same types, values,
 * keys, order and links (head->prev is the last node, as cJSON's append
 * needs). Compared on every JSON document of the corpus and on random
 * edits of them. */
static void tree_compare(const cJSON *x, const cJSON *y, const char *what)
{
    if (!x || !y) {
        if (x != y)
            fail_msg("%s: one tree ends early", what);
        return;
    }
    if (x->type != y->type || x->valueint != y->valueint ||
        memcmp(&x->valuedouble, &y->valuedouble, sizeof x->valuedouble) != 0)
        fail_msg("%s: node differs (type %d/%d)", what, x->type, y->type);
    if ((x->string == NULL) != (y->string == NULL) ||
        (x->string && strcmp(x->string, y->string) != 0))
        fail_msg("%s: key differs", what);
    if ((x->valuestring == NULL) != (y->valuestring == NULL) ||
        (x->valuestring && strcmp(x->valuestring, y->valuestring) != 0))
        fail_msg("%s: string differs", what);
    const cJSON *a = x->child, *b = y->child;
    if (a && (!a->prev || a->prev->next != NULL))
        fail_msg("%s: head->prev is not the last child", what);
    for (const cJSON *prev = NULL; a || b; prev = a, a = a->next, b = b->next) {
        tree_compare(a, b, what);
        if (!a || !b)
            break;
        if (prev && a->prev != prev)
            fail_msg("%s: prev link broken", what);
    }
}

/* A \u escape with other than four hex digits: the one input cJSON takes
 * (as U+0000) and json_tree.c refuses. */
static bool has_bad_u_escape(const char *s, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\')
            continue;
        if (s[i + 1] == 'u') {
            for (size_t k = 2; k < 6; k++)
                if (i + k >= n || !strchr("0123456789abcdefABCDEF", s[i + k]) || !s[i + k])
                    return true;
        }
        i++;
    }
    return false;
}

/* Whether an object under x names a key twice, the slow way. */
static bool has_dup_key(const cJSON *x)
{
    for (const cJSON *c = x->child; c; c = c->next) {
        if (cJSON_IsObject(x))
            for (const cJSON *k = c->next; k; k = k->next)
                if (strcmp(c->string, k->string) == 0)
                    return true;
        if (has_dup_key(c))
            return true;
    }
    return false;
}

static size_t tree_trial(const char *buf, size_t n, const char *what)
{
    arena_t a;
    arena_init(&a, 0);
    size_t end_at = 0, fail_at = 0;
    bool dup = false;
    cJSON *mine = json_tree_parse(buf, n, &a, &end_at, &fail_at, &dup);
    const char *end = NULL;
    cJSON *theirs = cJSON_ParseWithLengthOpts(buf, n, &end, 0);
    if (!mine && theirs && has_bad_u_escape(buf, n)) {
        cJSON_Delete(theirs);
        arena_free(&a);
        return 0;
    }
    if ((mine == NULL) != (theirs == NULL))
        fail_msg("%s (%zu bytes): json_tree %s, cJSON %s", what, n, mine ? "takes it" : "refuses",
                 theirs ? "takes it" : "refuses");
    if (mine) {
        if (end_at != (size_t)(end - buf))
            fail_msg("%s: value ends at %zu, cJSON says %zu", what, end_at, (size_t)(end - buf));
        tree_compare(mine, theirs, what);
        if (dup != has_dup_key(theirs))
            fail_msg("%s: a key given twice %s", what, dup ? "seen, not there" : "missed");
    } else if (fail_at >= n && n) {
        fail_msg("%s: failure offset %zu outside the input", what, fail_at);
    }
    cJSON_Delete(theirs);
    arena_free(&a);
    return mine != NULL;
}

static void test_json_tree_matches_cjson(void **state)
{
    (void)state;
    static const char *const hand[] = {
        "{\"a\":[1,-0,2.5e3,-1.25E-2,007,12345678901234567890,1e999,\"x\"]}",
        "[\"\\u00e9\\u20ac\\uD83D\\uDE00\\n\\t\\\"\\\\\\/\\b\\f\\r\"]",
        "\xEF\xBB\xBF {\"bom\": true}",
        "\x01\x1f[null,false,true]\x7f",
        "{\"k\":\"v\"} trailing",
        "[1,]",
        "{\"a\":}",
        "{\"a\" 1}",
        "[tru]",
        "[nul]",
        "[\"\\x\"]",
        "[\"\\uD800\"]",
        "[\"\\uDC00\"]",
        "[\"\\uD800\\u0041\"]",
        "[-]",
        "[+1]",
        "[.5]",
        "[1.5.3]",
        "[1e]",
        "[\"unterminated",
        "{\"a\":1,\"a\":2}",
        "[]",
        "{}",
        "  ",
        "[[[[[]]]]]",
        "[1 2]",
        "{\"\":\"\"}",
        "[0x10]",
        "[-01.0e+2]",
        "\"top string\"",
        "42",
        "{\"ab\":1,\"ac\":2,\"a\":3}",
        "{\"x\":{\"k\":1,\"j\":[{\"k\":2,\"k\":3}]}}",
        "{\"a\\u0062\":1,\"ab\":2}",
        "{\"\":1,\"\":2}",
        "{\"a\\u0000b\":1,\"a\":2}",
        "{\"provider\":1,\"priority\":2,\"procedure\":3}",
    };
    size_t taken = 0;
    for (size_t i = 0; i < sizeof hand / sizeof *hand; i++)
        taken += tree_trial(hand[i], strlen(hand[i]), hand[i]);
    assert_true(taken > 10);

    /* Nesting: both take CJSON_NESTING_LIMIT levels and refuse one more. */
    for (size_t levels = CJSON_NESTING_LIMIT; levels <= CJSON_NESTING_LIMIT + 1; levels++) {
        char *deep = xmalloc(2 * levels);
        memset(deep, '[', levels);
        memset(deep + levels, ']', levels);
        assert_int_equal(tree_trial(deep, 2 * levels, "deep"), levels == CJSON_NESTING_LIMIT);
        xfree(deep);
    }

    char dirpath[1024];
    snprintf(dirpath, sizeof dirpath, "%s/tests/data/fhir/json", srcdir());
    DIR *dir = opendir(dirpath);
    assert_non_null(dir);
    static const char edits[] = "{}[]\":,\\u0aeE.-+ 9tfn";
    unsigned seed = 777;
    size_t docs = 0, trials = 0;
    taken = 0;
    for (struct dirent *de; (de = readdir(dir));) {
        if (!strstr(de->d_name, ".json"))
            continue;
        char rel[300];
        snprintf(rel, sizeof rel, "json/%s", de->d_name);
        size_t n;
        char *doc = data_file(rel, &n);
        taken += tree_trial(doc, n, de->d_name);
        docs++;
        char *copy = xmalloc(n + 8);
        for (int t = 0; t < 300; t++) {
            memcpy(copy, doc, n);
            size_t m = n;
            int nedits = 1 + rand_r(&seed) % 3;
            for (int k = 0; k < nedits && m; k++) {
                size_t at = (size_t)rand_r(&seed) % m;
                char c = edits[(size_t)rand_r(&seed) % (sizeof edits - 1)];
                switch (rand_r(&seed) % 3) {
                case 0: copy[at] = c; break;
                case 1: memmove(copy + at, copy + at + 1, m - at - 1), m--; break;
                default: m = at; break;
                }
            }
            taken += tree_trial(copy, m, de->d_name);
            trials++;
        }
        xfree(copy);
        xfree(doc);
    }
    closedir(dir);
    /* Some edits leave valid JSON and most do not: both sides were seen. */
    assert_true(docs >= 20);
    assert_true(taken > docs + trials / 20 && taken < docs + trials / 2);
    print_message("%zu documents and %zu edits of them: %zu read alike by both\n", docs, trials,
                  taken);
}

int main(void)
{
    xmalloc_hook_libraries();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples_json_xml_golden),
        cmocka_unit_test(test_examples_by_hand),
        cmocka_unit_test(test_codings_and_settings),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_limits_and_detect),
        cmocka_unit_test(test_writers_placement),
        cmocka_unit_test(test_parameters),
        cmocka_unit_test(test_annotation_idempotent),
        cmocka_unit_test(test_json_duplicate_property),
        cmocka_unit_test(test_json_prescan_matches_bytewise),
        cmocka_unit_test(test_json_tree_arena_edits),
        cmocka_unit_test(test_json_tree_matches_cjson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
