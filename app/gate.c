/* gate.c - the pure pipeline of one message. */
#include "gate.h"

#include <stdio.h>
#include <string.h>

#include "hl7_ack.h"
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

/* True (and out set to a refusal) when the id is longer than lim allows. */
static bool id_too_long(const char *id, const char *where, const gate_limits_t *lim,
                        gate_result_t *out)
{
    size_t n = id ? strlen(id) : 0;
    if (!lim || !lim->max_id || n <= lim->max_id)
        return false;
    out->status = GATE_UNREADABLE;
    err_set(&out->detail, ERR_BAD_VALUE, 0, "%s of %zu bytes is over the limit of %zu bytes", where,
            n, lim->max_id);
    snprintf(out->detail.where, sizeof out->detail.where, "%s", where);
    return true;
}

/* True (and out set to a refusal) when the claim has more diagnoses than lim
 * allows: judging is linear in them, but a bound keeps every answer short. */
static bool too_many_dx(const claim_t *claim, const char *where, const gate_limits_t *lim,
                        gate_result_t *out)
{
    if (!lim || !lim->max_diagnoses || claim->ndx <= lim->max_diagnoses)
        return false;
    out->status = GATE_UNREADABLE;
    err_set(&out->detail, ERR_TOO_LARGE, 0,
            "claim has %zu diagnoses, over the limit of %zu (max-diagnoses)", claim->ndx,
            lim->max_diagnoses);
    snprintf(out->detail.where, sizeof out->detail.where, "%s", where);
    return true;
}

/* gate_hl7() from the parse on: msg holds the message. */
static void judge_parsed(const rule_pack_t *pack, hl7_msg_t *msg, const gate_limits_t *lim,
                         arena_t *a, gate_result_t *out)
{
    slice_t id;
    if (hl7_get(msg, "MSH-10", &id) == ERR_OK && id.len)
        out->control_id = arena_slicedup(a, id);
    if (id_too_long(out->control_id, "MSH-10", lim, out))
        return;
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
    if (too_many_dx(claim, "DG1", lim, out))
        return;
    out->status = GATE_JUDGED;
    out->claim = claim;
    rule_evaluate(pack, claim, a, &out->verdict);
}

void gate_hl7(const rule_pack_t *pack, hl7_msg_t *msg, const char *buf, size_t len,
              const hl7_opts_t *opts, const gate_limits_t *lim, arena_t *a, gate_result_t *out)
{
    result_init(out);
    if (hl7_msg_parse(msg, buf, len, opts, &out->detail) != ERR_OK) {
        out->status = GATE_UNREADABLE;
        return;
    }
    judge_parsed(pack, msg, lim, a, out);
}

void gate_hl7_unannotated(const rule_pack_t *pack, hl7_msg_t *msg, const char *buf, size_t len,
                          const hl7_opts_t *opts, const gate_limits_t *lim, arena_t *a,
                          slice_t *input, gate_result_t *out)
{
    *input = slice_make(buf, len);
    result_init(out);
    if (hl7_msg_parse(msg, buf, len, opts, &out->detail) != ERR_OK) {
        out->status = GATE_UNREADABLE;
        return;
    }
    slice_t stripped;
    if (hl7_annotation_strip_parsed(msg, a, &stripped) > 0) {
        *input = stripped;
        gate_hl7(pack, msg, stripped.ptr, stripped.len, opts, lim, a, out);
        return;
    }
    judge_parsed(pack, msg, lim, a, out);
}

void gate_fhir_claim(const rule_pack_t *pack, const fhir_doc_t *doc, size_t i,
                     const gate_limits_t *lim, arena_t *a, gate_result_t *out)
{
    result_init(out);
    claim_t *claim = NULL;
    if (fhir_doc_claim(doc, i, a, &claim, &out->detail) != ERR_OK) {
        out->status = GATE_UNREADABLE;
        return;
    }
    out->control_id = claim->id;
    if (id_too_long(claim->id, "Claim.id", lim, out) ||
        too_many_dx(claim, "Claim.diagnosis", lim, out))
        return;
    out->status = GATE_JUDGED;
    out->claim = claim;
    rule_evaluate(pack, claim, a, &out->verdict);
}
