/* verdict.c - the names of severities, verdicts and code-set fits: one table
 * each, read by the rule pack loader, the writers and the reports alike. */
#include <string.h>

#include "verdict.h"

static const char *const severity_names[] = {
    [RULE_SEV_INFO] = "info",
    [RULE_SEV_WARN] = "warn",
    [RULE_SEV_REJECT] = "reject",
};

static const char *const verdict_names[] = {
    [VERDICT_ACCEPT] = "accept",
    [VERDICT_ANNOTATE] = "annotate",
    [VERDICT_REJECT] = "reject",
};

static const char *const fit_names[] = {
    [RULE_CODESET_IN_RANGE] = "in-range",
    [RULE_CODESET_NEWER] = "newer",
    [RULE_CODESET_OLDER] = "older",
};

#define NAMES(t) (sizeof(t) / sizeof(t)[0])

const char *rule_severity_name(rule_severity_t s)
{
    return (unsigned)s < NAMES(severity_names) ? severity_names[s] : "info";
}

int rule_severity_from_name(const char *s)
{
    for (size_t i = 0; s && i < NAMES(severity_names); i++)
        if (strcmp(s, severity_names[i]) == 0)
            return (int)i;
    return -1;
}

const char *verdict_name(verdict_kind_t v)
{
    return (unsigned)v < NAMES(verdict_names) ? verdict_names[v] : "accept";
}

const char *rule_codeset_fit_name(rule_codeset_fit_t f)
{
    return (unsigned)f < NAMES(fit_names) ? fit_names[f] : "in-range";
}
