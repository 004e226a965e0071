/* rules.h - the spine coding rules: verdict = evaluate(pack, claim).
 *
 * A rule pack is the code tables plus the rules and their policy, loaded and
 * validated as a whole; it is immutable once loaded, so one pack can be
 * shared read-only by everything until a reload swaps in a new one. The
 * module is pure: no sockets, no clocks, no files except inside
 * rule_pack_load(). Findings and their strings are allocated in the arena
 * the caller passes to rule_evaluate() and live as long as it.
 */
#ifndef SPINEGATE_RULES_H
#define SPINEGATE_RULES_H

#include <stdbool.h>
#include <stddef.h>

#include "arena.h"
#include "claim.h"
#include "err.h"
#include "verdict.h"

typedef struct rule_pack rule_pack_t;

/* How ADT messages (CLAIM_KIND_ADT) are judged: they carry working
 * diagnoses, not a bill. */
typedef enum {
    RULE_ADT_ANNOTATE, /* default: judged, but no finding rejects (reject -> warn) */
    RULE_ADT_JUDGE,    /* judged like a bill */
    RULE_ADT_FORWARD,  /* not judged at all: accepted untouched */
} rule_adt_mode_t;

/* Site policy applied on load. */
typedef struct {
    bool advisory;             /* nothing rejects: reject becomes warn */
    /* "rule-id=severity" overrides, NULL-terminated; may be NULL. */
    const char *const *severity_overrides;
    rule_adt_mode_t adt;       /* default RULE_ADT_ANNOTATE */
} rule_policy_t;

/* Loads a rule pack (format: docs/rule-pack.md). pack_path names the JSON
 * pack; tables_path names one table file or a directory whose *.tsv files
 * are loaded (one per fiscal year; validity periods may not overlap). NULL
 * means the pack / tables built into the binary. policy may be NULL. On
 * failure *out is NULL and d names what is wrong: d->where holds
 * "file:line:col" for JSON syntax, the key path ("rules[3].severity") for
 * pack content, "name:line" for a table row, "severity_overrides[i]" for
 * policy; d->segment holds the line where there is one.
 * Errors: ERR_IO (cannot read), ERR_TOO_LARGE (file over 16 MiB pack / 64 MiB
 * table), ERR_BAD_PACK, ERR_BAD_TABLE, ERR_BAD_CONFIG (policy names an
 * unknown rule or severity, or is not "rule-id=severity"). */
err_t rule_pack_load(const char *pack_path, const char *tables_path,
                     const rule_policy_t *policy, rule_pack_t **out, err_detail_t *d);

/* Frees a pack; accepts NULL. */
void rule_pack_free(rule_pack_t *pack);

/* A short description for logs: "spine rules v1 (23 rules), ICD-10-CM FY2026". */
const char *rule_pack_describe(const rule_pack_t *pack);

/* The pack's "pack" name and "version" (docs/rule-pack.md), for the header
 * of an annotated message; NULL and 0 for a NULL pack. */
const char *rule_pack_name(const rule_pack_t *pack);
int rule_pack_version(const rule_pack_t *pack);

/* Evaluates claim against pack. Never fails on claim content: anything the
 * tables do not cover is left alone, and a claim without a covered spine
 * code gets no findings (VERDICT_ACCEPT). The code set is picked by the
 * discharge date of an inpatient claim and the service date of any other
 * (dated outpatient lines judge their own diagnoses by their own date);
 * out->code_set names it and out->code_set_fit says whether the date fell
 * after the newest table or before the oldest (docs/rule-pack.md). ADT
 * claims follow the pack's policy (rule_policy_t.adt). At most 256 findings
 * are reported. Pure: no I/O, no clock, no global state; safe to call from
 * several threads on one pack. Linear in the size of the claim.
 * out->findings and their strings live in a. */
void rule_evaluate(const rule_pack_t *pack, const claim_t *claim, arena_t *a,
                   rule_verdict_t *out);

#endif
