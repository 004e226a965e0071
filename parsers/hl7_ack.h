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
 * Acknowledgment modes (hl7_ack_plan(); the full table is docs/hl7-acks.md):
 *   original mode (MSH-15 and MSH-16 both empty): one ACK, the verdict.
 *     accepted, annotated -> AA    rejected by the rules -> AE
 *     unparseable / unsupported, storage failed -> AR
 *   enhanced mode (MSH-15 or MSH-16 valued, HL7 v2.5 2.9.3): first the
 *   accept (commit) ACK, which is about storage only, then, when MSH-16
 *   asks for it, the application ACK with the verdict.
 *     accept ACK: stored (whatever the verdict, a reject goes to the reject
 *     sink) -> CA; storage failed -> CE; unparseable / unsupported -> CR.
 *     Sent per MSH-15: AL, empty or unknown always; NE never; ER only CE/CR;
 *     SU only CA.
 *     application ACK, only after a CA-worthy store: accepted, annotated
 *     -> AA; rejected -> AE. Sent per MSH-16: AL or unknown always; NE or
 *     empty never; ER only AE; SU only AA. Its own MSH-15/16 are NE, so the
 *     sender does not acknowledge it back into the gate's inbound feed.
 *
 * ERR segments: from v2.5 on, ERR-2 location (ERL: segment id ^ occurrence
 * ^ field ^ repetition ^ component ^ subcomponent, from the finding's
 * location "DG1(2)-3"), ERR-3 HL7 error code (table 0357, see below),
 * ERR-4 severity (E reject, W warn, I info), ERR-5 application error code
 * (the rule id, or the err_t name for a parse error), ERR-7 diagnostic
 * information (suggested codes; byte offset of a parse error), ERR-8 user
 * message (the finding's message). Before v2.5, ERR-1 only, as
 * segment^sequence^field^code&text&HL70357, and MSA-3 carries the first
 * message. Table 0357 codes (hl7_ack_finding_0357(), hl7_ack_error_0357()):
 * a warning or information finding is 0 "Message accepted" (it stopped
 * nothing); a reject finding is 103 "Table value not found" (every rule
 * judges codes against a reference table: the ICD-10-CM tabular, its
 * Excludes1 and code-first notes, the 7th-character and MS-DRG tables; a
 * reject means the code, or the code in that company, is not an allowed
 * entry; ERR-5 names the rule). Parse errors: 100 "Segment sequence error"
 * (no MSH, empty, bad segment, bad batch), 102 "Data type error"
 * (delimiters, escapes, NUL, truncation, terminators, bad values), 104
 * "Value too long" (too large; v2.7 on, 102 before), 200 "Unsupported
 * message type". 207 "Application internal error" is kept for failures of
 * the gate itself (storage).
 */
#ifndef SPINEGATE_HL7_ACK_H
#define SPINEGATE_HL7_ACK_H

#include "arena.h"
#include "err.h"
#include "hl7.h"
#include "verdict.h"

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

/* The acknowledgments one message gets, in the order they are sent. */
typedef struct {
    bool enhanced;         /* MSH-15 or MSH-16 valued */
    hl7_ack_code_t accept; /* enhanced mode: CA/CE/CR, or NONE (MSH-15 says
                              not to); always NONE in original mode */
    hl7_ack_code_t app;    /* AA/AE/AR: the only ACK in original mode; in
                              enhanced mode the application ACK sent after
                              the accept ACK, or NONE (MSH-16 says not to) */
} hl7_ack_plan_t;

/* Plans the acknowledgments for msg and an outcome (see the file comment).
 * msg may be NULL (input not parsed): original mode is assumed, so AR. */
hl7_ack_plan_t hl7_ack_plan(const hl7_msg_t *msg, hl7_outcome_t outcome);

/* As hl7_ack_plan() for input that did not parse as a whole: MSH-15/16
 * are read from its first line when that parses as an MSH (as
 * hl7_ack_build_raw() salvages it), else original mode. */
hl7_ack_plan_t hl7_ack_plan_raw(const char *data, size_t len, hl7_outcome_t outcome);

/* The first ACK of the plan: plan.accept in enhanced mode, plan.app in
 * original mode. */
hl7_ack_code_t hl7_ack_code(const hl7_msg_t *msg, hl7_outcome_t outcome);

/* Table 0357 code and text for ERR-3 (see the file comment). version is
 * MSH-12 as major * 10 + minor (25 for "2.5"). */
typedef struct {
    const char *code, *text;
} hl7_0357_t;
hl7_0357_t hl7_ack_finding_0357(const rule_finding_t *f);
hl7_0357_t hl7_ack_error_0357(err_t e, int version);

typedef struct {
    const char *timestamp;         /* MSH-7, from the caller's clock; required */
    const char *control_id;        /* MSH-10 of the ACK; required */
    hl7_ack_code_t code;           /* MSA-1; not HL7_ACK_NONE */
    const char *text;              /* MSA-3, optional */
    const err_detail_t *error;     /* one ERR for a parse/mapping error, or NULL */
    const rule_verdict_t *verdict; /* one ERR per finding, or NULL */
    bool no_ack_back;              /* MSH-15 and MSH-16 of the ACK set to NE: an
                                      enhanced-mode application ACK, which must not
                                      be acknowledged */
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
    HL7_ANNOTATE_ZSG, /* ZSH header, one ZSG segment per finding (docs/hl7-annotation.md) */
    HL7_ANNOTATE_NTE, /* the same as NTE segments of text */
} hl7_annotate_style_t;

typedef struct {
    hl7_annotate_style_t style;
    const char *pack_name; /* rule pack id for the header, or NULL */
    int pack_version;
    bool header_when_accepted; /* a message with no findings gets the header */
} hl7_annotate_opts_t;

/* Writes msg with one pass of annotation inserted after its last DG1 (at
 * the end when there is none): a header segment (verdict, rule pack, code
 * set, count of findings), then one segment per finding of v. Every
 * original segment is kept byte-identical. With no findings, and no header
 * asked for, the output is the input. o may be NULL (ZSG, no pack named).
 * Never fails. */
slice_t hl7_annotate(const hl7_msg_t *msg, const rule_verdict_t *v, const hl7_annotate_opts_t *o,
                     arena_t *a);

/* True when segment i of msg is annotation that a spinegate pass wrote: a
 * ZSH whose ZSH-2 is "spinegate" and ZSH-1 a format version; a ZSG whose
 * ZSG-2 names a rule and ZSG-3 is E, W or I; an NTE whose NTE-2 is "O" and
 * NTE-3 starts with "[spinegate " (header) or "[E] ", "[W] ", "[I] ". */
bool hl7_annotation_is_ours(const hl7_msg_t *msg, size_t i);

/* Removes every earlier pass of annotation (hl7_annotation_is_ours()) from
 * the len bytes at data: *out is the message without those segments (in a),
 * byte-identical otherwise, or data itself when there was none or data does
 * not parse (opts as for hl7_msg_parse()). Returns the number of segments
 * removed. Never fails. */
size_t hl7_annotation_strip(const char *data, size_t len, const hl7_opts_t *opts, arena_t *a,
                            slice_t *out);

/* The same for a message already parsed into msg: *out is its bytes without
 * those segments (in a), or its bytes themselves when it has none. */
size_t hl7_annotation_strip_parsed(const hl7_msg_t *msg, arena_t *a, slice_t *out);

#endif
