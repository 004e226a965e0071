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
#include "rules.h"
#include "slice.h"

/* Code system of the rule ids in OperationOutcome.issue.details.coding. */
#define FHIR_OUT_RULE_SYSTEM "https://spinegate.invalid/fhir/CodeSystem/rule"
/* Extension holding one finding (sub-extensions rule, severity, message,
 * code, suggestion, reference, location). */
#define FHIR_OUT_EXT_FINDING "https://spinegate.invalid/fhir/StructureDefinition/finding"
/* Extension on the Claim holding the verdict (valueCode accept/annotate/reject). */
#define FHIR_OUT_EXT_VERDICT "https://spinegate.invalid/fhir/StructureDefinition/verdict"

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

/* Adds the findings of v to the i-th Claim of doc as extensions: a finding
 * with dx_index k goes on Claim.diagnosis[k], one with line_index k on
 * Claim.item[k], any other on the Claim; plus the verdict extension on the
 * Claim. Calling it twice adds the findings twice.
 * Errors: ERR_NOT_FOUND (no Claim i). */
err_t fhir_out_annotate(fhir_doc_t *doc, size_t i, const rule_verdict_t *v);

/* Serialises the i-th Claim alone (with its annotations), in the document's
 * format. Errors: ERR_NOT_FOUND (no Claim i). */
err_t fhir_out_claim(const fhir_doc_t *doc, size_t i, arena_t *a, slice_t *out);

/* Serialises the whole document (a Claim or a Bundle) in its format. */
void fhir_out_doc(const fhir_doc_t *doc, arena_t *a, slice_t *out);

/* The outcome of one entry of a batch or transaction. */
typedef struct {
    int status;                   /* HTTP status: 201, 422, 400, ... */
    const char *location;         /* "Claim/123/_history/1", or NULL */
    const rule_verdict_t *verdict; /* outcome from the verdict, or NULL */
    const err_detail_t *error;    /* outcome from an error (wins), or NULL */
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
} fhir_out_capability_t;

/* Writes the CapabilityStatement for GET [base]/metadata: FHIR 4.0.1,
 * json and xml, Claim with create and $validate, system batch and
 * transaction. Never fails. */
void fhir_out_capability(const fhir_out_capability_t *c, fhir_format_t fmt, arena_t *a,
                         slice_t *out);

#endif
