/* fhir.h - FHIR R4 Claim (JSON or XML, alone or in a Bundle) -> claim model.
 *
 * Ownership: fhir_parse() produces a fhir_doc_t that owns its parse tree
 * (cJSON or libxml2) and is freed with fhir_doc_free(); it borrows nothing
 * from the input buffer, which may be freed right after parsing. Claims made
 * by fhir_doc_claim() live in the caller's arena (every string is copied), so
 * they outlive the document. Errors go into an err_detail_t whose `where` is
 * a FHIRPath-style location ("Claim.diagnosis[0].sequence") and whose msg
 * never quotes message content.
 */
#ifndef SPINEGATE_FHIR_H
#define SPINEGATE_FHIR_H

#include <stddef.h>

#include "arena.h"
#include "claim.h"
#include "err.h"

typedef enum {
    FHIR_FMT_JSON,
    FHIR_FMT_XML,
} fhir_format_t;

/* Limits applied to wire input. A zero field takes its default. */
typedef struct {
    size_t max_size;   /* bytes; default FHIR_DEFAULT_MAX_SIZE */
    int max_depth;     /* JSON {/[ nesting or XML element nesting; default 100 */
    size_t max_claims; /* Claim entries in one Bundle; default 1000 */
} fhir_opts_t;

#define FHIR_DEFAULT_MAX_SIZE (16u * 1024 * 1024)
#define FHIR_DEFAULT_MAX_DEPTH 100
#define FHIR_DEFAULT_MAX_CLAIMS 1000
/* Hard ceiling on max_depth: cJSON's compile-time nesting limit. */
#define FHIR_MAX_DEPTH_CEILING 1000

typedef struct fhir_doc fhir_doc_t;

/* Returns FHIR_FMT_XML when the first byte after a UTF-8 BOM and white space
 * is '<', else FHIR_FMT_JSON (so garbage is reported as bad JSON). */
fhir_format_t fhir_detect_format(const char *buf, size_t len);

/* Parses buf (len bytes, need not be NUL-terminated) as a Claim or a Bundle.
 * o may be NULL for the defaults. On success *out owns the parse tree; on
 * failure *out is NULL and d says why and where (d may be NULL).
 * For XML a DOCTYPE is refused outright, so no entity is ever declared,
 * expanded or loaded, and the network is never used.
 * Errors: ERR_EMPTY; ERR_TOO_LARGE (over max_size, or more Claims than
 * max_claims); ERR_TOO_DEEP (nesting over max_depth, offset/line of the
 * element that crossed it); ERR_BAD_JSON / ERR_BAD_XML (malformed; offset,
 * line in d->segment, column in the message; a DOCTYPE is ERR_BAD_XML);
 * ERR_UNSUPPORTED (a resource other than Claim, Bundle or Parameters: the
 * message names its type; XML not in the FHIR namespace; a Parameters whose
 * `resource` is not a Claim, or with a parameter other than resource and
 * mode); ERR_NUL_BYTE (JSON with a NUL,
 * raw or \u0000); ERR_BAD_VALUE (a JSON object with the same property twice,
 * a Bundle whose type or entry list has the wrong shape, a Parameters with
 * a nameless or repeated parameter or a mode outside create|update|delete;
 * d->where says where); ERR_EMPTY also for a Parameters without a
 * `resource` parameter. */
err_t fhir_parse(const char *buf, size_t len, fhir_format_t fmt, const fhir_opts_t *o,
                 fhir_doc_t **out, err_detail_t *d);

/* "Claim", "Bundle" or "Parameters" (the $validate form: one `resource`
 * parameter holding a Claim, which is then the document's one Claim);
 * valid as long as doc. */
const char *fhir_doc_resource_type(const fhir_doc_t *doc);

/* Bundle.type ("batch", "transaction", "collection", ...), truncated to 31
 * bytes; "" for a lone Claim. Valid as long as doc. */
const char *fhir_doc_bundle_type(const fhir_doc_t *doc);

/* The `mode` parameter of a Parameters document: "create", "update" or
 * "delete"; "" when absent or for a Claim or Bundle. Valid as long as doc. */
const char *fhir_doc_validate_mode(const fhir_doc_t *doc);

/* Number of Bundle.entry elements, whatever they hold (0 for a Claim or
 * Parameters document). */
size_t fhir_doc_entry_count(const fhir_doc_t *doc);

/* The resource type of Bundle.entry[n] ("Claim", "Patient", ...), or NULL
 * when that entry has no resource or n is out of range. Valid as long as doc. */
const char *fhir_doc_entry_type(const fhir_doc_t *doc, size_t n);

/* The document's format. */
fhir_format_t fhir_doc_format(const fhir_doc_t *doc);

/* Number of Claims: 1 for a Claim, the Claim entries of a Bundle (possibly 0). */
size_t fhir_doc_claim_count(const fhir_doc_t *doc);

/* Index in Bundle.entry of the i-th Claim (0 for a lone Claim), so a caller
 * can turn a Claim-relative location into "Bundle.entry[n].resource...". */
size_t fhir_doc_claim_entry(const fhir_doc_t *doc, size_t i);

/* Maps the i-th Claim into a claim allocated in a; the locations in it
 * ("Claim.diagnosis[0]", "Claim.item[1]") are relative to that Claim.
 * Diagnoses and lines are one per Claim.diagnosis / Claim.item element, in
 * order, so a dx/line index is also the FHIR array index. A
 * diagnosisReference that cannot be resolved inside the document gives a
 * diagnosis with code_sent NULL and code "" (the rules can say it is not
 * checkable). Of a CodeableConcept's codings, the ICD-10-CM one is taken,
 * else a WHO ICD-10 one, else the first with a code. The care setting, the
 * type of bill and the discharge date come from Claim.type, supportingInfo
 * (typeofbill, admissionperiod/hospitalized) and the Claim's Encounters,
 * as docs/claim-mapping.md says; kind is always CLAIM_KIND_BILL. On
 * failure *out is NULL.
 * Errors: ERR_NOT_FOUND (i out of range); ERR_BAD_VALUE (a wrong type or
 * shape: a string sequence, a diagnosis that is not an array, a sequence < 1,
 * more than CLAIM_MAX_MODIFIERS modifiers or CLAIM_MAX_DX_POINTERS
 * diagnosisSequence values, a bad date), with d->where the FHIRPath. */
err_t fhir_doc_claim(const fhir_doc_t *doc, size_t i, arena_t *a, claim_t **out,
                     err_detail_t *d);

/* Frees doc and its tree; accepts NULL. */
void fhir_doc_free(fhir_doc_t *doc);

#endif
