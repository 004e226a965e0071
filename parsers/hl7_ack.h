/* hl7_ack.h - what spinegate writes back in HL7 v2: the ACK to the sender
 * (original or enhanced mode, ERR segments per finding), the AR for input
 * that could not be parsed, and the annotated message forwarded to billing.
 *
 * Ownership: every output is written into the caller's arena and lives as
 * long as it. The parser stays clock-free: the ACK's timestamp (MSH-7) and
 * control id (MSH-10) are passed in. Outputs never carry message content
 * beyond the routing fields of MSH (MSH-3..6, 9, 11, 12, 18) and the
 * original control id (MSA-2); finding texts come from the rules, which
 * never put patient data in them.
 *
 * Acknowledgment codes (hl7_ack_code()):
 *   original mode (MSH-15 and MSH-16 both empty):
 *     accepted, annotated -> AA    rejected by the rules -> AE
 *     unparseable / unsupported, storage failed -> AR
 *   enhanced mode (MSH-15 or MSH-16 present): spinegate sends the accept
 *   (commit) acknowledgment; application acknowledgments come from
 *   billing downstream.
 *     accepted, annotated -> CA    rejected, storage failed -> CE
 *     unparseable / unsupported -> CR
 *   MSH-15 decides whether that commit ACK is sent: AL (and empty or an
 *   unknown value) always; NE never (HL7_ACK_NONE); ER only for CE/CR;
 *   SU only for CA.
 *
 * ERR segments: from v2.5 on, ERR-2 location (ERL: segment id ^ occurrence
 * ^ field ^ repetition ^ component ^ subcomponent, from the finding's
 * location "DG1(2)-3"), ERR-3 HL7 error code (table 0357, see below),
 * ERR-4 severity (E reject, W warn, I info), ERR-5 application error code
 * (the rule id, or the err_t name for a parse error), ERR-7 diagnostic
 * information (suggested codes; byte offset of a parse error), ERR-8 user
 * message (the finding's message). Before v2.5, ERR-1 only, as
 * segment^sequence^field^code&text&HL70357, and MSA-3 carries the first
 * message. Table 0357 codes used: 103 "Table value not found" for a code
 * that is not valid (finding->code_invalid); 207 "Application internal
 * error" for every other rule finding (0357 has no "business rule" code;
 * ERR-5 names the rule); for parse errors 100 "Segment sequence error"
 * (no MSH, bad segment, bad batch), 102 "Data type error" (delimiters,
 * escapes, NUL, truncation, terminators), 200 "Unsupported message type",
 * 207 otherwise.
 */
#ifndef SPINEGATE_HL7_ACK_H
#define SPINEGATE_HL7_ACK_H

#include "arena.h"
#include "err.h"
#include "hl7.h"
#include "rules.h"

typedef enum {
    HL7_OUTCOME_ACCEPTED,     /* no findings; stored for forwarding */
    HL7_OUTCOME_ANNOTATED,    /* warnings only; stored, forwarded annotated */
    HL7_OUTCOME_REJECTED,     /* reject findings; not forwarded */
    HL7_OUTCOME_UNPARSEABLE,  /* not parsed, or not a supported message */
    HL7_OUTCOME_STORE_FAILED, /* fine, but the queue could not store it */
} hl7_outcome_t;

typedef enum {
    HL7_ACK_NONE, /* send nothing (enhanced mode, MSH-15 says so) */
    HL7_ACK_AA,
    HL7_ACK_AE,
    HL7_ACK_AR,
    HL7_ACK_CA,
    HL7_ACK_CE,
    HL7_ACK_CR,
} hl7_ack_code_t;

/* "AA", "CE", ...; "" for HL7_ACK_NONE. */
const char *hl7_ack_code_str(hl7_ack_code_t c);

/* Picks MSA-1 for msg and an outcome (see the file comment). msg may be
 * NULL (input not parsed): original mode is assumed, so AR. */
hl7_ack_code_t hl7_ack_code(const hl7_msg_t *msg, hl7_outcome_t outcome);

typedef struct {
    const char *timestamp;  /* MSH-7, from the caller's clock; required */
    const char *control_id; /* MSH-10 of the ACK; required */
    hl7_ack_code_t code;    /* MSA-1; not HL7_ACK_NONE */
    const char *text;       /* MSA-3, optional */
    const err_detail_t *error;      /* one ERR for a parse/mapping error, or NULL */
    const rule_verdict_t *verdict;  /* one ERR per finding, or NULL */
} hl7_ack_opts_t;

/* Builds the ACK for msg (sender and receiver swapped, same delimiters,
 * version and processing id) into a; *out is the whole message, each
 * segment ended by \r. Errors: ERR_BAD_VALUE (timestamp or control id
 * missing, code NONE). */
err_t hl7_ack_build(const hl7_msg_t *msg, const hl7_ack_opts_t *o, arena_t *a, slice_t *out);

/* Builds an AR (or o->code) for input that could not be parsed: the MSH
 * routing fields, delimiters, version and control id are salvaged from the
 * raw bytes when the first line looks like an MSH with valid delimiters,
 * else a minimal MSH with |^~\& and version 2.5 is used. One ERR segment
 * describes perr (o->error is ignored; o->verdict too). Errors as
 * hl7_ack_build(). */
err_t hl7_ack_build_raw(const char *data, size_t len, const err_detail_t *perr,
                        const hl7_ack_opts_t *o, arena_t *a, slice_t *out);

typedef enum {
    HL7_ANNOTATE_ZSG, /* one ZSG segment per finding (docs/hl7-annotation.md) */
    HL7_ANNOTATE_NTE, /* one NTE segment per finding, the finding as text */
} hl7_annotate_style_t;

/* Writes msg with one segment per finding of v inserted after its last DG1
 * (at the end when there is none); every original segment is kept
 * byte-identical. With no findings the output is the input. Never fails. */
slice_t hl7_annotate(const hl7_msg_t *msg, const rule_verdict_t *v, hl7_annotate_style_t style,
                     arena_t *a);

#endif
