/* claim.h - the claim model: the one contract between the formats (HL7 v2,
 * FHIR JSON, FHIR XML) and the rules.
 *
 * A claim is a plain struct (a value type, like a config struct) because the
 * rules read every field of it. All of its strings and arrays live in the
 * arena passed to the reader that built it and die with that arena; nothing
 * in a claim is freed on its own. Strings are NUL-terminated and already
 * unescaped; NULL means absent. Each diagnosis and service line carries the
 * location it came from ("DG1(2)-3", "FT1(1)-19(2)", "Claim.diagnosis[1]") so
 * a finding can point back at it.
 */
#ifndef SPINEGATE_CLAIM_H
#define SPINEGATE_CLAIM_H

#include <stdbool.h>
#include <stddef.h>

#include "arena.h"

typedef enum {
    CLAIM_SRC_HL7V2,
    CLAIM_SRC_FHIR_JSON,
    CLAIM_SRC_FHIR_XML,
} claim_source_t;

/* A calendar date; year == 0 means absent. */
typedef struct {
    int year, month, day;
} claim_date_t;

typedef enum {
    CODESYS_UNKNOWN,   /* no system given: treated as ICD-10-CM if it looks like one */
    CODESYS_ICD10CM,   /* I10, I10C, ICD10CM, .../sid/icd-10-cm, OID 2.16.840.1.113883.6.90 */
    CODESYS_ICD10_WHO, /* .../sid/icd-10, OID 2.16.840.1.113883.6.3: read, but flagged */
    CODESYS_ICD9CM,    /* I9, I9C, ICD9, .../sid/icd-9-cm, OIDs ...6.103, ...6.2 */
    CODESYS_OTHER,     /* anything else: kept, never judged */
} claim_codesys_t;

typedef enum {
    DX_TYPE_UNSPECIFIED,
    DX_TYPE_PRINCIPAL, /* HL7 DG1-15 = 1, FHIR type "principal" */
    DX_TYPE_ADMITTING, /* HL7 DG1-6 = A, FHIR type "admitting" */
    DX_TYPE_SECONDARY, /* everything else that is stated */
} claim_dx_type_t;

/* How far the diagnosis had got when sent (HL7 DG1-6, table 0052): a
 * working diagnosis may have been replaced by a final one on the same bill.
 * Independent of the type: a principal may be sent as W or F. */
typedef enum {
    DX_STAGE_UNSTATED, /* no DG1-6 W/F; every FHIR diagnosis */
    DX_STAGE_WORKING,  /* DG1-6 = W */
    DX_STAGE_FINAL,    /* DG1-6 = F */
} claim_dx_stage_t;

typedef enum {
    POA_ABSENT, /* not stated */
    POA_Y,
    POA_N,
    POA_U,
    POA_W,
    POA_EXEMPT, /* "1" / exempt */
} claim_poa_t;

typedef struct {
    int sequence;            /* DG1-1 / diagnosis.sequence; 0 when absent */
    const char *code_sent;   /* exactly as sent (unescaped) */
    char code[16];           /* normalised: no dot, upper case, spaces removed;
                                "" when the sent code does not fit */
    claim_codesys_t system;
    const char *system_sent; /* "I10", a URI, ... ; NULL when absent */
    claim_dx_type_t type;
    claim_dx_stage_t stage;
    claim_poa_t poa;
    const char *text;        /* DG1-4 or DG1-3.2 / coding.display / text */
    const char *location;    /* "DG1(2)-3", "FT1(1)-19(2)", "Claim.diagnosis[1]" */
    /* Index into claim->lines of the service line that carried this code
     * (HL7 FT1-19 with no DG1 of the same code); -1 for a diagnosis of the
     * claim itself (DG1, Claim.diagnosis). claim_add_dx() sets -1. */
    int line;
} claim_dx_t;

typedef enum {
    PROCSYS_UNKNOWN,
    PROCSYS_CPT,   /* C4, CPT, http://www.ama-assn.org/go/cpt */
    PROCSYS_HCPCS, /* HCPCS, HC, HPC, https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets */
    PROCSYS_ICD10PCS,
    PROCSYS_OTHER,
} claim_procsys_t;

#define CLAIM_MAX_MODIFIERS 4
#define CLAIM_MAX_DX_POINTERS 12

typedef struct {
    int sequence;
    const char *code;        /* procedure code as sent; NULL when absent */
    claim_procsys_t system;
    const char *system_sent;
    const char *modifiers[CLAIM_MAX_MODIFIERS];
    int nmodifiers;
    double units;            /* 0 when absent */
    claim_date_t date_from, date_to;
    /* Diagnosis sequences this line points to (FHIR diagnosisSequence,
     * HL7 FT1-19 resolved to DG1 sequences). A pointer may name a sequence
     * that is not on the claim: the rules report it. */
    int dx_pointers[CLAIM_MAX_DX_POINTERS];
    int ndx_pointers;
    /* HL7 FT1-19 carries codes, not pointers: those codes, normalised, so
     * the rules can match them to diagnoses. */
    const char *dx_codes[CLAIM_MAX_DX_POINTERS];
    int ndx_codes;
    const char *location;    /* "FT1(1)", "Claim.item[0]" */
} claim_line_t;

/* What kind of message the claim came from: bills are judged; ADT carries
 * working and admitting diagnoses, not a bill (see rule_adt_mode_t). */
typedef enum {
    CLAIM_KIND_BILL, /* DFT, BAR, FHIR Claim */
    CLAIM_KIND_ADT,  /* ADT with DG1 */
} claim_kind_t;

/* The care setting, which decides the date that picks the code set and
 * whether an MS-DRG applies. Inpatient: HL7 PV1-2 = I or a type of bill
 * 11x/12x; FHIR Claim.type institutional with an inpatient type of bill or
 * an admission period, or an Encounter of class IMP. */
typedef enum {
    CLAIM_SETTING_UNKNOWN,
    CLAIM_SETTING_INPATIENT,
    CLAIM_SETTING_OUTPATIENT, /* stated and not inpatient (PV1-2 O/E/R..., TOB 13x, professional) */
} claim_setting_t;

typedef struct {
    claim_source_t source;
    claim_kind_t kind;
    claim_setting_t setting;
    const char *type_of_bill;  /* as sent ("0111", "111"); NULL when absent */
    claim_date_t discharge;    /* PV1-45 / admission period end; year 0 when absent */
    const char *id;            /* MSH-10 or Claim.id; NULL when absent */
    const char *message_type;  /* "DFT^P03", "Claim" */
    /* References a coder looks a claim up by (the worklist): PID-3, PID-18,
     * PV1-19 (first repetition, first component) / Claim.patient.reference,
     * Claim.identifier[0].value. PHI: stored, never logged. NULL when absent. */
    const char *ref_mrn, *ref_account, *ref_visit;
    char sex;                  /* 'F', 'M', 'U', or 0 when absent */
    claim_date_t birth_date;
    claim_date_t service_from, service_to; /* billablePeriod, PV1-44/45, FT1-4 */
    int discharged_alive;      /* 1 yes, 0 no (expired), -1 unknown */
    claim_dx_t *dx;
    size_t ndx, dx_cap;
    claim_line_t *lines;
    size_t nlines, lines_cap;
    /* A rule can turn this on (FHIR icd-10 under the WHO URI, for example);
     * readers only fill it. */
    bool has_who_icd10;
} claim_t;

/* Normalises an ICD-10-CM code the way coders write it: folds case, drops
 * spaces, and drops one dot after the third character and one trailing dot.
 * Writes at most cap-1 characters plus a NUL into out. Returns false
 * (out = "") when the result would not fit or the code holds anything else
 * (a dot elsewhere, a dash, a comma, other punctuation): such a code is
 * malformed, and the rules report it from code_sent. */
bool claim_code_normalise(const char *sent, size_t len, char *out, size_t cap);

/* Writes the dotted form of a normalised code ("M4304" -> "M43.04") into out. */
void claim_code_dotted(const char *code, char *out, size_t cap);

/* Parses "YYYY", "YYYY-MM", "YYYY-MM-DD", "YYYYMMDD[HHMM...]" into d.
 * Returns false (d zeroed) when it is not a date. */
bool claim_date_parse(const char *s, size_t len, claim_date_t *d);

/* Maps a code system as sent (HL7 table 0396 names, a FHIR URI, an OID bare
 * or as urn:oid:), case-insensitively, blanks around it ignored:
 *   ICD-10-CM  I10, I10C, ICD10CM, ICD-10-CM, ICD10,
 *              http://hl7.org/fhir/sid/icd-10-cm, 2.16.840.1.113883.6.90
 *   WHO ICD-10 http://hl7.org/fhir/sid/icd-10, 2.16.840.1.113883.6.3
 *   ICD-9-CM   I9, I9C, I9CDX, ICD9, ICD9CM, ICD-9-CM,
 *              http://hl7.org/fhir/sid/icd-9-cm, 2.16.840.1.113883.6.103,
 *              2.16.840.1.113883.6.2
 * NULL or blank is CODESYS_UNKNOWN; any other name CODESYS_OTHER. */
claim_codesys_t claim_codesys_from(const char *s, size_t len);
claim_procsys_t claim_procsys_from(const char *s, size_t len);

/* The care setting a UB-04 type of bill states, as sent ("0111" or "111";
 * blanks around it ignored): 11x and 12x (hospital inpatient) are
 * CLAIM_SETTING_INPATIENT, any other 1xx-8xx CLAIM_SETTING_OUTPATIENT, and
 * anything that is not such a code (NULL included) CLAIM_SETTING_UNKNOWN. */
claim_setting_t claim_tob_setting(const char *tob);

/* A readable name for each enum, for JSON output and logs. */
const char *claim_codesys_name(claim_codesys_t s);
const char *claim_dx_type_name(claim_dx_type_t t);
const char *claim_dx_stage_name(claim_dx_stage_t s);
const char *claim_setting_name(claim_setting_t s); /* "inpatient", "outpatient", "unknown" */
const char *claim_kind_name(claim_kind_t k);       /* "bill", "adt" */

/* Allocates a zeroed claim in a. */
claim_t *claim_new(arena_t *a, claim_source_t source);

/* Appends a zeroed diagnosis / line to c and returns it. The array grows in
 * the arena, so a pointer returned earlier is valid only until the next add
 * of the same kind: keep indexes, not pointers, while building. */
claim_dx_t *claim_add_dx(claim_t *c, arena_t *a);
claim_line_t *claim_add_line(claim_t *c, arena_t *a);

/* Makes room for at least ndx diagnoses and nlines lines in all, so that
 * adding up to that many allocates nothing more (a reader that counted its
 * segments first). */
void claim_reserve(claim_t *c, arena_t *a, size_t ndx, size_t nlines);

/* Returns the diagnosis with this sequence, or NULL. */
const claim_dx_t *claim_find_dx(const claim_t *c, int sequence);

/* Compares two claims field by field, ignoring source and locations.
 * Returns NULL when equal, else a static description of the first field
 * that differs. Used by tests (JSON and XML forms map equal). */
const char *claim_diff(const claim_t *a, const claim_t *b);

#endif
