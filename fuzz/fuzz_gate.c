/* fuzz_gate.c - the whole pure pipeline on arbitrary bytes: format
 * detection, the HL7 or FHIR reader, the claim mapping and every rule of
 * the built-in pack, then the writers that carry the findings back (ACK,
 * annotation, OperationOutcome). Whatever the claim holds, evaluation and
 * writing must not crash. */
#include <stdint.h>
#include <stdlib.h>

#include "fhir_out.h"
#include "gate.h"
#include "hl7_ack.h"
#include "xmalloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static rule_pack_t *pack;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!pack) {
        xmalloc_hook_libraries();
        err_detail_t d;
        if (rule_pack_load(NULL, NULL, NULL, &pack, &d) != ERR_OK)
            abort();
    }
    const char *buf = (const char *)data;
    arena_t a;
    arena_init(&a, 4096);
    gate_result_t r;
    const gate_limits_t lim = {.max_diagnoses = 1000, .max_id = 199};
    if (gate_detect(buf, size) == GATE_HL7) {
        hl7_msg_t *msg = hl7_msg_new();
        gate_hl7(pack, msg, buf, size, NULL, &lim, &a, &r);
        if (r.status == GATE_JUDGED) {
            hl7_annotate(msg, &r.verdict, NULL, &a);
            hl7_ack_opts_t o = {.timestamp = "20260101000000", .control_id = "FUZZ1",
                                .code = HL7_ACK_AE, .verdict = &r.verdict};
            slice_t ack;
            hl7_ack_build(msg, &o, &a, &ack);
        }
        hl7_msg_free(msg);
    } else {
        fhir_doc_t *doc = NULL;
        err_detail_t d;
        fhir_format_t fmt = gate_detect(buf, size) == GATE_FHIR_XML ? FHIR_FMT_XML : FHIR_FMT_JSON;
        if (fhir_parse(buf, size, fmt, NULL, &doc, &d) == ERR_OK) {
            for (size_t i = 0; i < fhir_doc_claim_count(doc) && i < 8; i++) {
                gate_fhir_claim(pack, doc, i, &lim, &a, &r);
                if (r.status != GATE_JUDGED)
                    continue;
                slice_t out;
                fhir_out_outcome_verdict(&r.verdict, fmt, &a, &out);
                fhir_out_annotate(doc, i, &r.verdict);
                fhir_out_claim(doc, i, &a, &out);
            }
            fhir_doc_free(doc);
        }
    }
    arena_free(&a);
    return 0;
}
