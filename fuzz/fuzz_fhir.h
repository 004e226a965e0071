/* fuzz_fhir.h - the body shared by the FHIR JSON and XML fuzz targets:
 * parse the input in one format, map every Claim it holds, annotate each with
 * findings on its first diagnosis, first item and itself, and serialise it,
 * as the HTTP ingest and forwarding paths do; errors become an
 * OperationOutcome. Everything is freed per input, so leaks show up too. */
#ifndef SPINEGATE_FUZZ_FHIR_H
#define SPINEGATE_FUZZ_FHIR_H

#include <stdint.h>

#include "fhir.h"
#include "fhir_out.h"
#include "xmalloc.h"

static int fuzz_fhir_one(const uint8_t *data, size_t size, fhir_format_t fmt)
{
    static int hooked;
    if (!hooked) {
        xmalloc_hook_libraries();
        hooked = 1;
    }
    fhir_doc_t *doc;
    err_detail_t d;
    fhir_opts_t o = {.max_size = 1 << 20};
    arena_t a;
    arena_init(&a, 0);
    slice_t out;
    if (fhir_parse((const char *)data, size, fmt, &o, &doc, &d)) {
        fhir_out_outcome_error(&d, fmt, &a, &out);
        arena_free(&a);
        return 0;
    }
    rule_finding_t f[3] = {
        {.rule_id = "r", .message = "m", .location = "Claim.diagnosis[0]", .dx_index = 0,
         .line_index = -1, .suggestion = "M43.04", .codes = {"M43.0"}, .ncodes = 1},
        {.rule_id = "r", .message = "m", .location = "Claim.item[0]", .dx_index = -1,
         .line_index = 0},
        {.rule_id = "r", .message = "m", .location = "DG1(1)-3", .dx_index = -1, .line_index = -1},
    };
    rule_verdict_t v = {.kind = VERDICT_REJECT, .findings = f, .nfindings = 3, .code_set = "FY2027"};
    (void)fhir_doc_validate_mode(doc);
    for (size_t n = 0; n < fhir_doc_entry_count(doc); n++)
        (void)fhir_doc_entry_type(doc, n);
    for (size_t i = 0; i < fhir_doc_claim_count(doc); i++) {
        claim_t *c;
        if (fhir_doc_claim(doc, i, &a, &c, &d) == ERR_OK) {
            /* Twice, as a re-sent Claim is: the second pass strips the first. */
            fhir_out_annotate(doc, i, &v);
            fhir_out_annotate_pack(doc, i, &v, "spine rules v1");
            fhir_out_claim(doc, i, &a, &out);
            fhir_out_pretty(out, fmt, &a, &out);
        } else {
            fhir_out_outcome_error(&d, fmt, &a, &out);
        }
        arena_reset(&a);
    }
    fhir_out_doc(doc, &a, &out);
    arena_free(&a);
    fhir_doc_free(doc);
    return 0;
}

#endif
