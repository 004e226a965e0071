/* report.h - prints a message's verdict and findings, for a person (text)
 * or as one JSON object per line (JSON Lines). Used by spinegate-check.
 * Writes to a FILE the caller owns; allocates nothing that outlives a call.
 */
#ifndef SPINEGATE_REPORT_H
#define SPINEGATE_REPORT_H

#include <stdio.h>

#include "err.h"
#include "rules.h"

/* One message that was read and evaluated. The JSON object carries
 * "code_set" (the ICD-10-CM table applied, or null) and "code_set_fit"; the
 * text names the table on a line of its own. index is 1-based within source. */
void report_verdict_json(FILE *f, const char *source, size_t index, const char *control_id,
                         const rule_verdict_t *v);
void report_verdict_text(FILE *f, const char *source, size_t index, const char *control_id,
                         const rule_verdict_t *v);

/* One message that could not be read: verdict "reject" with a single
 * finding whose rule is "parse-error" and whose location is d->where. */
void report_error_json(FILE *f, const char *source, size_t index, const err_detail_t *d);
void report_error_text(FILE *f, const char *source, size_t index, const err_detail_t *d);

#endif
