/* metrics.c - counters and their Prometheus rendering. */
#include "metrics.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "xmalloc.h"

static const double latency_bounds[METRICS_LATENCY_BUCKETS] = {
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0};

static const char *const format_names[] = {"hl7v2", "fhir+json", "fhir+xml"};
static const char *const outcome_names[] = {"accept", "annotate", "reject", "unreadable",
                                            "store_failed"};

void metrics_init(metrics_t *m)
{
    memset(m, 0, sizeof *m);
}

metric_outcome_t metrics_outcome(verdict_kind_t v)
{
    return v == VERDICT_REJECT ? METRIC_REJECT : v == VERDICT_ANNOTATE ? METRIC_ANNOTATE : METRIC_ACCEPT;
}

static void count_rule(metrics_t *m, const char *id)
{
    for (size_t i = 0; i < m->nrules; i++)
        if (strcmp(m->rules[i].id, id) == 0) {
            m->rules[i].count++;
            return;
        }
    if (m->nrules == METRICS_MAX_RULES)
        return;
    snprintf(m->rules[m->nrules].id, sizeof m->rules[0].id, "%s", id);
    m->rules[m->nrules++].count = 1;
}

static void count_code_set(metrics_t *m, const char *name)
{
    /* The name comes from a table file a site may write: keep the label
     * value to characters that need no escaping in the text format. */
    char label[sizeof m->code_sets[0].name];
    size_t n = 0;
    for (; name[n] && n < sizeof label - 1; n++)
        label[n] =
            isalnum((unsigned char)name[n]) || name[n] == '-' || name[n] == '.' ? name[n] : '_';
    label[n] = '\0';
    for (size_t i = 0; i < m->ncode_sets; i++)
        if (strcmp(m->code_sets[i].name, label) == 0) {
            m->code_sets[i].count++;
            return;
        }
    if (m->ncode_sets == METRICS_MAX_CODE_SETS)
        return;
    memcpy(m->code_sets[m->ncode_sets].name, label, n + 1);
    m->code_sets[m->ncode_sets++].count = 1;
}

void metrics_count(metrics_t *m, metric_format_t fmt, metric_outcome_t outcome,
                   const rule_verdict_t *v)
{
    if ((unsigned)fmt >= METRIC_FMT__COUNT || (unsigned)outcome >= METRIC_OUTCOME__COUNT)
        return;
    m->messages[fmt][outcome]++;
    if (!v)
        return;
    for (size_t i = 0; i < v->nfindings; i++)
        count_rule(m, v->findings[i].rule_id);
    if (v->code_set)
        count_code_set(m, v->code_set);
    if (v->code_set_fit == RULE_CODESET_NEWER)
        m->code_set_newer++;
    else if (v->code_set_fit == RULE_CODESET_OLDER)
        m->code_set_older++;
}

void metrics_count_validation(metrics_t *m, metric_format_t fmt, metric_outcome_t outcome,
                              const rule_verdict_t *v)
{
    (void)v;
    if ((unsigned)fmt >= METRIC_FMT__COUNT || (unsigned)outcome >= METRIC_OUTCOME__COUNT)
        return;
    m->validations[fmt][outcome]++;
}

void metrics_latency(metrics_t *m, double seconds)
{
    for (int i = 0; i < METRICS_LATENCY_BUCKETS; i++)
        if (seconds <= latency_bounds[i]) {
            m->latency_buckets[i]++;
            break;
        }
    m->latency_count++;
    m->latency_sum_s += seconds;
}

typedef struct {
    char *p;
    size_t len, cap;
} sbuf_t;

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = (b->cap + (size_t)n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
}

char *metrics_render(const metrics_t *m, const char *extra, size_t *len)
{
    sbuf_t b = {xmalloc(4096), 0, 4096};
    b.p[0] = '\0';
    sb_printf(&b, "# HELP spinegate_messages_total Messages received, by format and outcome.\n"
                  "# TYPE spinegate_messages_total counter\n");
    for (int f = 0; f < METRIC_FMT__COUNT; f++)
        for (int o = 0; o < METRIC_OUTCOME__COUNT; o++)
            sb_printf(&b, "spinegate_messages_total{format=\"%s\",outcome=\"%s\"} %llu\n",
                      format_names[f], outcome_names[o], (unsigned long long)m->messages[f][o]);
    sb_printf(&b, "# HELP spinegate_validations_total $validate calls (dry runs: nothing "
                  "stored or forwarded), by format and the outcome they would have had.\n"
                  "# TYPE spinegate_validations_total counter\n");
    for (int f = 0; f < METRIC_FMT__COUNT; f++)
        for (int o = 0; o < METRIC_OUTCOME__COUNT; o++)
            if (o != METRIC_STORE_FAILED) /* a dry run stores nothing */
                sb_printf(&b, "spinegate_validations_total{format=\"%s\",outcome=\"%s\"} %llu\n",
                          format_names[f], outcome_names[o],
                          (unsigned long long)m->validations[f][o]);
    sb_printf(&b, "# HELP spinegate_findings_total Findings, by rule.\n"
                  "# TYPE spinegate_findings_total counter\n");
    for (size_t i = 0; i < m->nrules; i++)
        sb_printf(&b, "spinegate_findings_total{rule=\"%s\"} %llu\n", m->rules[i].id,
                  (unsigned long long)m->rules[i].count);
    sb_printf(&b, "# HELP spinegate_code_set_total Messages judged, by the ICD-10-CM code set "
                  "applied.\n"
                  "# TYPE spinegate_code_set_total counter\n");
    for (size_t i = 0; i < m->ncode_sets; i++)
        sb_printf(&b, "spinegate_code_set_total{code_set=\"%s\"} %llu\n", m->code_sets[i].name,
                  (unsigned long long)m->code_sets[i].count);
    sb_printf(&b, "# HELP spinegate_code_set_fallback_total Messages dated outside the code sets "
                  "loaded: newer (the newest applied) or older (validity not checked).\n"
                  "# TYPE spinegate_code_set_fallback_total counter\n"
                  "spinegate_code_set_fallback_total{fit=\"newer\"} %llu\n"
                  "spinegate_code_set_fallback_total{fit=\"older\"} %llu\n",
              (unsigned long long)m->code_set_newer, (unsigned long long)m->code_set_older);
    sb_printf(&b, "# HELP spinegate_answer_seconds Time from a message's arrival to its answer.\n"
                  "# TYPE spinegate_answer_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < METRICS_LATENCY_BUCKETS; i++) {
        cum += m->latency_buckets[i];
        sb_printf(&b, "spinegate_answer_seconds_bucket{le=\"%g\"} %llu\n", latency_bounds[i],
                  (unsigned long long)cum);
    }
    sb_printf(&b, "spinegate_answer_seconds_bucket{le=\"+Inf\"} %llu\n",
              (unsigned long long)m->latency_count);
    sb_printf(&b, "spinegate_answer_seconds_sum %.6f\nspinegate_answer_seconds_count %llu\n",
              m->latency_sum_s, (unsigned long long)m->latency_count);
    sb_printf(&b, "# HELP spinegate_reloads_total Rule pack reloads, by result.\n"
                  "# TYPE spinegate_reloads_total counter\n"
                  "spinegate_reloads_total{result=\"ok\"} %llu\n"
                  "spinegate_reloads_total{result=\"failed\"} %llu\n",
              (unsigned long long)m->reloads_ok, (unsigned long long)m->reloads_failed);
    sb_printf(&b, "# HELP spinegate_http_auth_refused_total HTTP requests refused: no "
                  "credentials or a bad token (401), a token without the scope (403).\n"
                  "# TYPE spinegate_http_auth_refused_total counter\n"
                  "spinegate_http_auth_refused_total{reason=\"missing\"} %llu\n"
                  "spinegate_http_auth_refused_total{reason=\"invalid\"} %llu\n"
                  "spinegate_http_auth_refused_total{reason=\"forbidden\"} %llu\n",
              (unsigned long long)m->auth_refused[METRIC_AUTH_MISSING],
              (unsigned long long)m->auth_refused[METRIC_AUTH_INVALID],
              (unsigned long long)m->auth_refused[METRIC_AUTH_FORBIDDEN]);
    sb_printf(&b, "# HELP spinegate_http_tokens_reloads_total Reloads of the http-tokens file, "
                  "by result.\n"
                  "# TYPE spinegate_http_tokens_reloads_total counter\n"
                  "spinegate_http_tokens_reloads_total{result=\"ok\"} %llu\n"
                  "spinegate_http_tokens_reloads_total{result=\"failed\"} %llu\n",
              (unsigned long long)m->token_reloads_ok, (unsigned long long)m->token_reloads_failed);
    if (extra)
        sb_printf(&b, "%s", extra);
    *len = b.len;
    return b.p;
}
