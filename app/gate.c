/* gate.c - the pure pipeline of one message. */
#include "gate.h"

#include <string.h>

#include "hl7_claim.h"

gate_format_t gate_detect(const char *buf, size_t len)
{
    size_t i = 0;
    if (len >= 3 && (unsigned char)buf[0] == 0xEF && (unsigned char)buf[1] == 0xBB &&
        (unsigned char)buf[2] == 0xBF)
        i = 3;
    while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n'))
        i++;
    if (i < len && buf[i] == '<')
        return GATE_FHIR_XML;
    if (i < len && (buf[i] == '{' || buf[i] == '['))
        return GATE_FHIR_JSON;
    return GATE_HL7;
}

static void result_init(gate_result_t *out)
{
    memset(out, 0, sizeof *out);
    out->verdict.kind = VERDICT_ACCEPT;
}

void gate_hl7(const rule_pack_t *pack, hl7_msg_t *msg, const char *buf, size_t len,
              const hl7_opts_t *opts, arena_t *a, gate_result_t *out)
{
    result_init(out);
    if (hl7_msg_parse(msg, buf, len, opts, &out->detail) != ERR_OK) {
        out->status = GATE_UNREADABLE;
        return;
    }
    slice_t id;
    if (hl7_get(msg, "MSH-10", &id) == ERR_OK && id.len)
        out->control_id = arena_slicedup(a, id);
    claim_t *claim = NULL;
    err_t rc = hl7_claim_read(msg, a, &claim, &out->detail);
    if (rc == ERR_UNSUPPORTED) {
        out->status = GATE_NOT_A_CLAIM;
        return;
    }
    if (rc != ERR_OK) {
        out->status = GATE_UNREADABLE;
        return;
    }
    out->status = GATE_JUDGED;
    out->claim = claim;
    rule_evaluate(pack, claim, a, &out->verdict);
}

void gate_fhir_claim(const rule_pack_t *pack, const fhir_doc_t *doc, size_t i, arena_t *a,
                     gate_result_t *out)
{
    result_init(out);
    claim_t *claim = NULL;
    if (fhir_doc_claim(doc, i, a, &claim, &out->detail) != ERR_OK) {
        out->status = GATE_UNREADABLE;
        return;
    }
    out->status = GATE_JUDGED;
    out->claim = claim;
    out->control_id = claim->id;
    rule_evaluate(pack, claim, a, &out->verdict);
}
