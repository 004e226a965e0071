/* verdict.h - what judging a claim yields: findings with a severity, and a
 * verdict over them. The rules write verdicts; the parsers' writers (HL7
 * annotation and ACKs, FHIR OperationOutcome) and the daemon read them. Kept
 * in common/ so that those readers need not see the rules.
 */
#ifndef SPINEGATE_VERDICT_H
#define SPINEGATE_VERDICT_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    RULE_SEV_INFO,
    RULE_SEV_WARN,
    RULE_SEV_REJECT,
} rule_severity_t;

typedef enum {
    VERDICT_ACCEPT,   /* no findings */
    VERDICT_ANNOTATE, /* warnings or info only: forward with the findings */
    VERDICT_REJECT,   /* at least one reject finding: do not forward */
} verdict_kind_t;

#define RULE_MAX_CODES 4

typedef struct {
    const char *rule_id;       /* "excludes1-pair" */
    rule_severity_t severity;  /* after site policy */
    const char *message;       /* for a coder; names codes, never patient data */
    const char *codes[RULE_MAX_CODES]; /* dotted: "M43.04" */
    int ncodes;
    const char *location;      /* from the claim item: "DG1(2)-3" */
    int dx_index;              /* index into claim->dx, or -1 */
    int line_index;            /* index into claim->lines, or -1 */
    const char *suggestion;    /* dotted code(s) to consider, or NULL */
    const char *reference;     /* tabular note or guideline, or NULL */
    bool code_invalid;         /* the finding is about the code itself being
                                  invalid (FHIR issue code "code-invalid") */
} rule_finding_t;

/* Where the claim's date fell against the code sets loaded. */
typedef enum {
    RULE_CODESET_IN_RANGE,  /* a table covers the date (or no spine code) */
    RULE_CODESET_NEWER,     /* after the newest table: the newest was applied */
    RULE_CODESET_OLDER,     /* before the oldest table: validity not checked */
} rule_codeset_fit_t;

#define RULE_MAX_CODE_SETS 8 /* tables one verdict can name */

typedef struct {
    verdict_kind_t kind;
    rule_finding_t *findings;
    size_t nfindings;
    const char *code_set;        /* "FY2027": the table applied; NULL when none */
    /* Every table the claim was judged with, oldest first: two when dated
     * outpatient lines fall on both sides of 1 October. */
    const char *code_sets[RULE_MAX_CODE_SETS];
    size_t ncode_sets;
    rule_codeset_fit_t code_set_fit;
} rule_verdict_t;

/* How many tables a verdict names, and the i-th: the claim's own when no
 * list was made (a verdict built by hand). */
static inline size_t rule_verdict_ncode_sets(const rule_verdict_t *v)
{
    return v->ncode_sets ? v->ncode_sets : v->code_set ? 1 : 0;
}

static inline const char *rule_verdict_code_set_at(const rule_verdict_t *v, size_t i)
{
    return v->ncode_sets ? v->code_sets[i] : v->code_set;
}

/* "reject", "warn", "info": the words of the rule pack and of the reports. */
const char *rule_severity_name(rule_severity_t s);
/* The severity a word names, or -1. */
int rule_severity_from_name(const char *s);
/* "accept", "annotate", "reject". */
const char *verdict_name(verdict_kind_t v);
/* "in-range", "newer", "older". */
const char *rule_codeset_fit_name(rule_codeset_fit_t f);

#endif
