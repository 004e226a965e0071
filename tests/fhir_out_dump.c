/* fhir_out_dump.c - writes one file per kind of FHIR writer output, in JSON
 * and XML, into the directory given as argv[1], for tests/fhir-out-check.sh
 * to validate against the official JSON schema and XSD. It also checks that
 * an annotated Claim still reads back as the same claim.
 * Usage: fhir_out_dump OUTDIR (reads $top_srcdir/tests/data/fhir).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir.h"
#include "fhir_out.h"
#include "xmalloc.h"

static const char *ext[] = {"json", "xml"};
static const char *outdir;
static int failures;

static void put(const char *name, fhir_format_t fmt, slice_t s)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.%s", outdir, name, ext[fmt]);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(s.ptr, 1, s.len, f) != s.len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static char *slurp(const char *rel, size_t *len)
{
    char path[1024];
    const char *top = getenv("top_srcdir");
    snprintf(path, sizeof path, "%s/tests/data/fhir/%s", top ? top : ".", rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = xmalloc((size_t)n);
    *len = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

static fhir_doc_t *parse(const char *buf, size_t len, fhir_format_t fmt)
{
    fhir_doc_t *doc;
    err_detail_t d;
    if (fhir_parse(buf, len, fmt, NULL, &doc, &d)) {
        fprintf(stderr, "parse: %s %s\n", d.msg, d.where);
        exit(1);
    }
    return doc;
}

/* A verdict touching every placement: two diagnoses, a line, the claim. */
static rule_verdict_t sample_verdict(void)
{
    static rule_finding_t f[4] = {
        {.rule_id = "spine-invalid-code", .severity = RULE_SEV_REJECT,
         .message = "M43.0 is not a billable ICD-10-CM code: it needs a 6th character",
         .codes = {"M43.0"}, .ncodes = 1, .location = "Claim.diagnosis[0]", .dx_index = 0,
         .line_index = -1, .suggestion = "M43.04", .code_invalid = true},
        {.rule_id = "excludes1-pair", .severity = RULE_SEV_WARN,
         .message = "M43.04 and M54.6 are an Excludes1 pair", .codes = {"M43.04", "M54.6"},
         .ncodes = 2, .location = "Claim.diagnosis[1]", .dx_index = 1, .line_index = -1,
         .reference = "ICD-10-CM tabular, M43.0 Excludes1"},
        {.rule_id = "line-dx-pointer", .severity = RULE_SEV_INFO,
         .message = "item points at a diagnosis sequence not on the claim",
         .location = "Claim.item[0]", .dx_index = -1, .line_index = 0},
        {.rule_id = "hl7-located", .severity = RULE_SEV_WARN, .message = "claim-level finding",
         .location = "DG1(2)-3", .dx_index = -1, .line_index = -1},
    };
    return (rule_verdict_t){.kind = VERDICT_REJECT, .findings = f, .nfindings = 4,
                            .code_set = "FY2027"};
}

static void annotated(const char *name, const char *rel_base, size_t claim, fhir_format_t fmt,
                      arena_t *a)
{
    char rel[256];
    size_t len;
    snprintf(rel, sizeof rel, "%s/%s.%s", ext[fmt], rel_base, ext[fmt]);
    char *buf = slurp(rel, &len);
    fhir_doc_t *doc = parse(buf, len, fmt);
    rule_verdict_t v = sample_verdict();
    claim_t *before, *after;
    err_detail_t d;
    /* Twice: the second pass replaces the first (the header included). */
    if (fhir_doc_claim(doc, claim, a, &before, &d) ||
        fhir_out_annotate_pack(doc, claim, &v, "spine rules v1") ||
        fhir_out_annotate_pack(doc, claim, &v, "spine rules v1")) {
        fprintf(stderr, "%s: cannot annotate\n", name);
        exit(1);
    }
    slice_t s;
    fhir_out_claim(doc, claim, a, &s);
    put(name, fmt, s);
    bool bundle = strcmp(fhir_doc_resource_type(doc), "Bundle") == 0;
    if (bundle) {
        char whole[128];
        snprintf(whole, sizeof whole, "%s-bundle", name);
        fhir_out_doc(doc, a, &s);
        put(whole, fmt, s);
    }
    /* The annotated document must read back as the same claim (a Claim
     * taken out of its Bundle loses the Bundle's Patient, so the whole
     * Bundle is read back in that case). */
    fhir_doc_t *back = parse(s.ptr, s.len, fmt);
    if (fhir_doc_claim(back, bundle ? claim : 0, a, &after, &d) || claim_diff(before, after)) {
        fprintf(stderr, "%s.%s: annotated claim reads back differently\n", name, ext[fmt]);
        failures++;
    }
    fhir_doc_free(back);
    fhir_doc_free(doc);
    xfree(buf);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    outdir = argv[1];
    xmalloc_hook_libraries();
    arena_t a;
    arena_init(&a, 0);
    for (int f = FHIR_FMT_JSON; f <= FHIR_FMT_XML; f++) {
        fhir_format_t fmt = (fhir_format_t)f;
        slice_t s;
        rule_verdict_t v = sample_verdict(), empty = {.kind = VERDICT_ACCEPT};
        fhir_out_outcome_verdict(&v, fmt, &a, &s);
        put("outcome-verdict", fmt, s);
        fhir_out_outcome_verdict(&empty, fmt, &a, &s);
        put("outcome-allok", fmt, s);

        /* Errors as the reader makes them. */
        static const char *bad[] = {"broken.json", "seq-string.json", "deep.xml",
                                    "operationoutcome.xml", "empty.json"};
        err_detail_t errs[5];
        for (size_t k = 0; k < 5; k++) {
            size_t len;
            char rel[64];
            snprintf(rel, sizeof rel, "bad/%s", bad[k]);
            char *buf = slurp(rel, &len);
            fhir_doc_t *doc = NULL;
            if (!fhir_parse(buf, len, fhir_detect_format(buf, len), NULL, &doc, &errs[k])) {
                claim_t *c;
                fhir_doc_claim(doc, 0, &a, &c, &errs[k]);
                fhir_doc_free(doc);
            }
            xfree(buf);
            char name[64];
            snprintf(name, sizeof name, "outcome-error-%zu", k);
            fhir_out_outcome_error(&errs[k], fmt, &a, &s);
            put(name, fmt, s);
        }
        /* The HTTP listener's refusals (401, 403). */
        static const err_t auth_codes[] = {ERR_UNAUTHORIZED, ERR_FORBIDDEN};
        for (size_t k = 0; k < 2; k++) {
            err_detail_t e;
            err_clear(&e);
            err_set(&e, auth_codes[k], 0, "refused");
            fhir_out_outcome_error(&e, fmt, &a, &s);
            put(k ? "outcome-forbidden" : "outcome-login", fmt, s);
        }

        fhir_out_entry_t entries[4] = {
            {.status = 201, .location = "Claim/spine-b1/_history/1", .verdict = &empty},
            {.status = 422, .verdict = &v},
            {.status = 400, .error = &errs[1]},
            {.status = 200, .note = "Patient not stored or forwarded: it only serves references"},
        };
        fhir_out_batch_response(false, entries, 4, fmt, &a, &s);
        put("batch-response", fmt, s);
        fhir_out_pretty(s, fmt, &a, &s);
        put("batch-response-pretty", fmt, s);
        fhir_out_batch_response(true, entries, 2, fmt, &a, &s);
        put("transaction-response", fmt, s);

        fhir_out_capability_t cap = {.software_name = "spinegate", .software_version = "0.1.0",
                                     .date = "2025-11-04", .base_url = "https://gate.example/fhir"};
        fhir_out_capability(&cap, fmt, &a, &s);
        put("capability", fmt, s);

        annotated("annotated-spine", "spine-m4304-mri", 0, fmt, &a);
        annotated("annotated-contained", "Claim-100152", 0, fmt, &a);
        annotated("annotated-in-bundle", "spine-bundle-two", 1, fmt, &a);
        arena_reset(&a);
    }
    arena_free(&a);
    return failures ? 1 : 0;
}
