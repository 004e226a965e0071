/* metrics.h - the daemon's counters, rendered in Prometheus text format for
 * GET /metrics. Owned by the daemon and touched only on the loop thread, so
 * nothing here is atomic. Findings are counted by rule id; rule ids are
 * interned into a small table (a pack has tens of rules, not thousands).
 * Judged messages are counted by the ICD-10-CM code set applied (one per
 * fiscal year, interned the same way), and claims dated outside the code
 * sets loaded by which side they fell on.
 */
#ifndef SPINEGATE_METRICS_H
#define SPINEGATE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "rules.h"

typedef enum { METRIC_FMT_HL7, METRIC_FMT_FHIR_JSON, METRIC_FMT_FHIR_XML, METRIC_FMT__COUNT } metric_format_t;

/* Outcomes beyond the three verdicts: a message that could not be read, or
 * could not be stored. */
typedef enum {
    METRIC_ACCEPT,
    METRIC_ANNOTATE,
    METRIC_REJECT,
    METRIC_UNREADABLE,
    METRIC_STORE_FAILED,
    METRIC_OUTCOME__COUNT
} metric_outcome_t;

/* Why an HTTP request was refused by authentication. */
typedef enum {
    METRIC_AUTH_MISSING,
    METRIC_AUTH_INVALID,
    METRIC_AUTH_FORBIDDEN,
    METRIC_AUTH__COUNT
} metric_auth_t;

#define METRICS_MAX_RULES 128
#define METRICS_MAX_CODE_SETS 16
#define METRICS_LATENCY_BUCKETS 12

typedef struct {
    uint64_t messages[METRIC_FMT__COUNT][METRIC_OUTCOME__COUNT];
    /* $validate dry runs: judged, never stored or forwarded (their findings
     * and code sets are not in the traffic counters either). */
    uint64_t validations[METRIC_FMT__COUNT][METRIC_OUTCOME__COUNT];
    struct {
        char id[48];
        uint64_t count;
    } rules[METRICS_MAX_RULES];
    size_t nrules;
    struct {
        char name[16]; /* "FY2027" */
        uint64_t count;
    } code_sets[METRICS_MAX_CODE_SETS];
    size_t ncode_sets;
    uint64_t code_set_newer, code_set_older; /* date after the newest / before the oldest */
    uint64_t latency_buckets[METRICS_LATENCY_BUCKETS]; /* cumulative at render */
    uint64_t latency_count;
    double latency_sum_s;
    uint64_t reloads_ok, reloads_failed;
    /* HTTP requests refused by authentication: no credentials (401), a bad
     * token (401), a token without the scope (403). */
    uint64_t auth_refused[METRIC_AUTH__COUNT];
    uint64_t token_reloads_ok, token_reloads_failed;
} metrics_t;

void metrics_init(metrics_t *m);

/* Counts one message, its findings, and the code set that judged it (v is
 * NULL for a message that was not judged). */
void metrics_count(metrics_t *m, metric_format_t fmt, metric_outcome_t outcome,
                   const rule_verdict_t *v);

/* Counts one $validate call by the verdict it would have had (v NULL when
 * the Claim could not be read); kept apart from real traffic. */
void metrics_count_validation(metrics_t *m, metric_format_t fmt, metric_outcome_t outcome,
                              const rule_verdict_t *v);

/* Records the time from a message's last byte to its answer. */
void metrics_latency(metrics_t *m, double seconds);

/* Appends the counters in Prometheus text format to out (xrealloc'd; *len
 * updated). extra is appended verbatim (queue and delivery gauges). */
char *metrics_render(const metrics_t *m, const char *extra, size_t *len);

/* Maps a verdict to an outcome. */
metric_outcome_t metrics_outcome(verdict_kind_t v);

#endif
