/* report.c - text and JSON Lines output of verdicts. JSON is built with
 * cJSON so that escaping is never done by hand. */
#include "report.h"

#include <cjson/cJSON.h>

#include "xmalloc.h"

static void print_json(FILE *f, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    fprintf(f, "%s\n", s);
    cJSON_free(s);
    cJSON_Delete(o);
}

static cJSON *message_object(const char *source, size_t index, const char *control_id,
                             verdict_kind_t kind)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "source", source);
    cJSON_AddNumberToObject(o, "index", (double)index);
    if (control_id)
        cJSON_AddStringToObject(o, "id", control_id);
    cJSON_AddStringToObject(o, "verdict", verdict_name(kind));
    return o;
}

static void add_nullable(cJSON *o, const char *key, const char *value)
{
    if (value)
        cJSON_AddStringToObject(o, key, value);
    else
        cJSON_AddNullToObject(o, key);
}

/* Writes which ICD-10-CM table judged the message, for a person. Nothing
 * when no table was applied and the date was not outside them (no spine
 * code, an ADT passed unjudged, a message that carries no claim). */
static void code_set_text(FILE *f, const rule_verdict_t *v)
{
    switch (v->code_set_fit) {
    case RULE_CODESET_IN_RANGE:
        if (v->ncode_sets == 2)
            fprintf(f, "  code sets: ICD-10-CM %s and %s (service lines dated in each)\n",
                    v->code_sets[0], v->code_sets[1]);
        else if (v->code_set)
            fprintf(f, "  code set: ICD-10-CM %s\n", v->code_set);
        break;
    case RULE_CODESET_NEWER:
        fprintf(f, "  code set: ICD-10-CM %s, the newest loaded (the claim's date is after it)\n",
                v->code_set ? v->code_set : "-");
        break;
    case RULE_CODESET_OLDER:
        if (v->code_set)
            fprintf(f,
                    "  code set: ICD-10-CM %s, the oldest loaded (the claim's date is before "
                    "it: validity not checked)\n",
                    v->code_set);
        else
            fprintf(f, "  code set: none (the claim's date is before the oldest table: validity "
                       "not checked)\n");
        break;
    }
}

void report_verdict_json(FILE *f, const char *source, size_t index, const char *control_id,
                         const rule_verdict_t *v)
{
    cJSON *o = message_object(source, index, control_id, v->kind);
    add_nullable(o, "code_set", v->code_set);
    cJSON_AddStringToObject(o, "code_set_fit", rule_codeset_fit_name(v->code_set_fit));
    cJSON *sets = cJSON_AddArrayToObject(o, "code_sets");
    for (size_t i = 0; i < rule_verdict_ncode_sets(v); i++)
        cJSON_AddItemToArray(sets, cJSON_CreateString(rule_verdict_code_set_at(v, i)));
    cJSON *arr = cJSON_AddArrayToObject(o, "findings");
    for (size_t i = 0; i < v->nfindings; i++) {
        const rule_finding_t *fd = &v->findings[i];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "rule", fd->rule_id);
        cJSON_AddStringToObject(x, "severity", rule_severity_name(fd->severity));
        cJSON_AddStringToObject(x, "message", fd->message);
        cJSON *codes = cJSON_AddArrayToObject(x, "codes");
        for (int c = 0; c < fd->ncodes; c++)
            cJSON_AddItemToArray(codes, cJSON_CreateString(fd->codes[c]));
        add_nullable(x, "location", fd->location);
        add_nullable(x, "suggestion", fd->suggestion);
        cJSON_AddItemToArray(arr, x);
    }
    print_json(f, o);
}

void report_error_json(FILE *f, const char *source, size_t index, const err_detail_t *d)
{
    cJSON *o = message_object(source, index, NULL, VERDICT_REJECT);
    /* Not read, so not judged: no table was applied and none was chosen. */
    cJSON_AddNullToObject(o, "code_set");
    cJSON_AddNullToObject(o, "code_set_fit");
    cJSON *arr = cJSON_AddArrayToObject(o, "findings");
    cJSON *x = cJSON_CreateObject();
    cJSON_AddStringToObject(x, "rule", "parse-error");
    cJSON_AddStringToObject(x, "severity", "reject");
    cJSON_AddStringToObject(x, "message", d->msg[0] ? d->msg : err_str(d->code));
    cJSON_AddArrayToObject(x, "codes");
    add_nullable(x, "location", d->where[0] ? d->where : NULL);
    cJSON_AddNullToObject(x, "suggestion");
    cJSON_AddItemToArray(arr, x);
    print_json(f, o);
}

void report_verdict_text(FILE *f, const char *source, size_t index, const char *control_id,
                         const rule_verdict_t *v)
{
    fprintf(f, "%s #%zu%s%s: %s\n", source, index, control_id ? " " : "",
            control_id ? control_id : "", verdict_name(v->kind));
    code_set_text(f, v);
    for (size_t i = 0; i < v->nfindings; i++) {
        const rule_finding_t *fd = &v->findings[i];
        fprintf(f, "  %-7s %-24s %s", rule_severity_name(fd->severity), fd->rule_id,
                fd->location ? fd->location : "-");
        fprintf(f, "\n          %s\n", fd->message);
        if (fd->suggestion)
            fprintf(f, "          suggestion: %s\n", fd->suggestion);
    }
}

void report_error_text(FILE *f, const char *source, size_t index, const err_detail_t *d)
{
    fprintf(f, "%s #%zu: reject (cannot be read)\n  %-7s %-24s %s\n          %s\n", source, index,
            "reject", "parse-error", d->where[0] ? d->where : "-",
            d->msg[0] ? d->msg : err_str(d->code));
}
