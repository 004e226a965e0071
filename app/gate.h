/* gate.h - one message through the pipeline's pure part: bytes -> parser ->
 * claim -> rules -> verdict. Shared by the daemon and spinegate-check, so
 * both judge a message the same way. No I/O: callers own sockets and files.
 * Results live in the arena the caller passes.
 */
#ifndef SPINEGATE_GATE_H
#define SPINEGATE_GATE_H

#include <stddef.h>

#include "arena.h"
#include "claim.h"
#include "err.h"
#include "fhir.h"
#include "hl7.h"
#include "rules.h"

typedef enum { GATE_HL7, GATE_FHIR_JSON, GATE_FHIR_XML } gate_format_t;

/* Looks at the first bytes (after a BOM and white space): '<' is FHIR XML,
 * '{' FHIR JSON, anything else HL7 v2. */
gate_format_t gate_detect(const char *buf, size_t len);

typedef enum {
    GATE_JUDGED,      /* claim read and evaluated: see verdict */
    GATE_NOT_A_CLAIM, /* a readable message of a type that carries no claim */
    GATE_UNREADABLE,  /* could not be parsed or mapped: see detail */
} gate_status_t;

typedef struct {
    gate_status_t status;
    err_detail_t detail;    /* for GATE_UNREADABLE and GATE_NOT_A_CLAIM */
    const claim_t *claim;   /* GATE_JUDGED only */
    rule_verdict_t verdict; /* GATE_JUDGED only; empty otherwise */
    const char *control_id; /* MSH-10 / Claim.id when it could be read */
} gate_result_t;

/* What a message may carry before it is refused as the sender's error: the
 * status is GATE_UNREADABLE, nothing is judged, and the detail is
 * ERR_TOO_LARGE for too many diagnoses (HTTP 413), ERR_BAD_VALUE for an id
 * too long (400). A zero field is no limit. */
typedef struct {
    size_t max_diagnoses; /* diagnoses in one claim (max-diagnoses) */
    size_t max_id;        /* bytes of MSH-10 / Claim.id (what the queue stores) */
} gate_limits_t;

/* Parses one HL7 v2 message (len bytes at buf, which must outlive msg's use)
 * into msg (reused between calls), maps and judges it. lim may be NULL (no
 * limits): a claim over lim is refused before the rules see it. */
void gate_hl7(const rule_pack_t *pack, hl7_msg_t *msg, const char *buf, size_t len,
              const hl7_opts_t *opts, const gate_limits_t *lim, arena_t *a, gate_result_t *out);

/* gate_hl7() of the message without an earlier pass of spinegate's
 * annotation (a coder's resend, a second gate), which is never judged: one
 * pass, never two. *input is what was judged and is to be forwarded: buf
 * itself, or buf without those segments (in a). The message is parsed once
 * when it holds none, the usual case. */
void gate_hl7_unannotated(const rule_pack_t *pack, hl7_msg_t *msg, const char *buf, size_t len,
                          const hl7_opts_t *opts, const gate_limits_t *lim, arena_t *a,
                          slice_t *input, gate_result_t *out);

/* Maps and judges Claim i of a parsed FHIR document; lim as for gate_hl7(). */
void gate_fhir_claim(const rule_pack_t *pack, const fhir_doc_t *doc, size_t i,
                     const gate_limits_t *lim, arena_t *a, gate_result_t *out);

#endif
