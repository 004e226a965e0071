/* fhir_out.h - FHIR R4 writers: OperationOutcome (for a verdict or an
 * error), the annotated Claim for forwarding, batch/transaction-response
 * Bundles and the server's CapabilityStatement, each as JSON or XML.
 *
 * Ownership: every output is written into the caller's arena as a
 * NUL-terminated slice and lives as long as that arena; nothing else is
 * retained. fhir_out_annotate() modifies the document's own tree (it adds
 * extensions), which fhir_out_claim()/fhir_out_doc() then serialise.
 * The extension and code system URLs are described in docs/fhir-extensions.md.
 */
#ifndef SPINEGATE_FHIR_OUT_H
#define SPINEGATE_FHIR_OUT_H

#include <stdbool.h>
#include <stddef.h>

#include "arena.h"
#include "err.h"
#include "fhir.h"
#include "verdict.h"
#include "slice.h"

/* Code system of the rule ids in OperationOutcome.issue.details.coding. */
#define FHIR_OUT_RULE_SYSTEM "https://spinegate.invalid/fhir/CodeSystem/rule"
/* Extension holding one finding (sub-extensions rule, severity, message,
 * code, suggestion, reference, location). */
#define FHIR_OUT_EXT_FINDING "https://spinegate.invalid/fhir/StructureDefinition/finding"
/* Every extension spinegate writes has a URL under this base; an earlier
 * pass's extensions are recognised (and replaced) by it. */
#define FHIR_OUT_EXT_BASE "https://spinegate.invalid/fhir/StructureDefinition/"
/* Extension on the Claim holding the verdict (valueCode accept/annotate/reject). */
#define FHIR_OUT_EXT_VERDICT "https://spinegate.invalid/fhir/StructureDefinition/verdict"
/* The header extension on the Claim: one per pass, sub-extensions verdict,
 * rulePack, codeSet, findings (docs/fhir-extensions.md). */
#define FHIR_OUT_EXT_ANNOTATION "https://spinegate.invalid/fhir/StructureDefinition/annotation"

/* Writes an OperationOutcome with one issue per finding of v: severity
 * error/warning/information for reject/warn/info, code code-invalid or
 * business-rule, details.coding = (FHIR_OUT_RULE_SYSTEM, rule id, message),
 * diagnostics = message (+ suggestion), expression = [location] when it is
 * a FHIRPath (else `location`). A verdict without findings gives one
 * information issue saying the claim passed. Never fails. */
void fhir_out_outcome_verdict(const rule_verdict_t *v, fhir_format_t fmt, arena_t *a,
                              slice_t *out);

/* Writes an OperationOutcome with one error issue for a parse/transport
 * error: code structure (malformed), too-long (size), too-costly (depth),
 * not-supported, value (bad value), ...; diagnostics = d->msg, expression =
 * d->where when set. Never fails. */
void fhir_out_outcome_error(const err_detail_t *d, fhir_format_t fmt, arena_t *a, slice_t *out);

/* Annotates the i-th Claim of doc with one pass of findings: first removes
 * every extension under FHIR_OUT_EXT_BASE that an earlier pass left on the
 * Claim, its diagnoses and its items (fhir_out_strip), then adds the header
 * extension (verdict, rule_pack when non-NULL, v->code_set, findings count)
 * and the verdict extension on the Claim, and each finding: one with
 * dx_index k on Claim.diagnosis[k], one with line_index k on Claim.item[k],
 * any other on the Claim. Calling it twice leaves one pass.
 * Errors: ERR_NOT_FOUND (no Claim i). */
err_t fhir_out_annotate_pack(fhir_doc_t *doc, size_t i, const rule_verdict_t *v,
                             const char *rule_pack);

/* fhir_out_annotate_pack without a rule pack name. */
err_t fhir_out_annotate(fhir_doc_t *doc, size_t i, const rule_verdict_t *v);

/* Removes the extensions an earlier spinegate pass added to the i-th Claim
 * (URL under FHIR_OUT_EXT_BASE, on the Claim, its diagnoses and items), so
 * a Claim forwarded without annotation carries no stale findings.
 * Errors: ERR_NOT_FOUND (no Claim i). */
err_t fhir_out_strip(fhir_doc_t *doc, size_t i);

/* Serialises the i-th Claim alone (with its annotations), in the document's
 * format. Errors: ERR_NOT_FOUND (no Claim i). */
err_t fhir_out_claim(const fhir_doc_t *doc, size_t i, arena_t *a, slice_t *out);

/* Re-renders in (one of these writers' outputs, in format fmt) indented
 * for people (_pretty=true). *out is in itself if in does not parse. */
void fhir_out_pretty(slice_t in, fhir_format_t fmt, arena_t *a, slice_t *out);

/* Serialises the whole document (a Claim or a Bundle) in its format. */
void fhir_out_doc(const fhir_doc_t *doc, arena_t *a, slice_t *out);

/* The outcome of one entry of a batch or transaction. */
typedef struct {
    int status;                   /* HTTP status: 201, 422, 400, ... */
    const char *location;         /* "Claim/123/_history/1", or NULL */
    const rule_verdict_t *verdict; /* outcome from the verdict, or NULL */
    const err_detail_t *error;    /* outcome from an error (wins), or NULL */
    const char *note;             /* else: one information issue saying this, or NULL */
} fhir_out_entry_t;

/* Writes a Bundle of type batch-response (transaction = false) or
 * transaction-response with one entry per result, in order: response.status
 * "<code> <reason>", response.location, response.outcome. Never fails. */
void fhir_out_batch_response(bool transaction, const fhir_out_entry_t *entries, size_t n,
                             fhir_format_t fmt, arena_t *a, slice_t *out);

typedef struct {
    const char *software_name;    /* "spinegate" */
    const char *software_version; /* "0.1.0" */
    const char *date;             /* dateTime of the statement, "2025-11-04" */
    const char *base_url;         /* implementation.url, or NULL */
    const char *security;         /* rest.security.description, or NULL */
} fhir_out_capability_t;

/* Writes the CapabilityStatement for GET [base]/metadata: FHIR 4.0.1,
 * the JSON and XML media types, Claim with create and $validate, system
 * batch, transaction and $validate. Never fails. */
void fhir_out_capability(const fhir_out_capability_t *c, fhir_format_t fmt, arena_t *a,
                         slice_t *out);

#endif
