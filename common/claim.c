/* claim.c - helpers of the claim model: code and date normalisation, code
 * system names, growth of the diagnosis and line arrays, and comparison. */
#include "claim.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

bool claim_code_normalise(const char *sent, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    bool dot = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)sent[i];
        if (ch == ' ' || ch == '\t')
            continue;
        if (ch == '.' && !dot) {
            /* "M43.04" and "M4304." are how codes are written; a dot
             * anywhere else changes what the code says. */
            size_t rest = i + 1;
            while (rest < len && (sent[rest] == ' ' || sent[rest] == '\t'))
                rest++;
            if (n == 3 || (n >= 3 && rest == len)) {
                dot = true;
                continue;
            }
        }
        /* ASCII only, whatever the locale: codes are letters and digits. */
        bool digit = ch >= '0' && ch <= '9', lower = ch >= 'a' && ch <= 'z';
        if (!(digit || lower || (ch >= 'A' && ch <= 'Z')) || n + 1 >= cap) {
            if (cap)
                out[0] = '\0';
            return false;
        }
        out[n++] = (char)(lower ? ch - 'a' + 'A' : ch);
    }
    if (cap)
        out[n < cap ? n : cap - 1] = '\0';
    return n > 0;
}

void claim_code_dotted(const char *code, char *out, size_t cap)
{
    /* Cut as snprintf would cut it; written by hand because every finding
     * names its codes this way. */
    if (!cap)
        return;
    size_t o = 0;
    for (size_t i = 0; code[i] && o + 1 < cap; i++) {
        if (i == 3) {
            out[o++] = '.';
            if (o + 1 == cap)
                break;
        }
        out[o++] = code[i];
    }
    out[o] = '\0';
}

static int digits(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') /* ASCII digits, whatever the locale */
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

bool claim_date_parse(const char *s, size_t len, claim_date_t *d)
{
    memset(d, 0, sizeof *d);
    if (len < 4)
        return false;
    int y = digits(s, 4), m = 0, day = 0;
    if (y < 1)
        return false;
    if (len >= 7 && s[4] == '-') {
        m = digits(s + 5, 2);
        if (len >= 10 && s[7] == '-')
            day = digits(s + 8, 2);
        else if (len != 7)
            return false;
    } else if (len >= 6 && s[4] >= '0' && s[4] <= '9') {
        m = digits(s + 4, 2);
        if (len >= 8)
            day = digits(s + 6, 2);
    } else if (len != 4) {
        return false;
    }
    if (m < 0 || m > 12 || day < 0 || day > 31 || (day && !m))
        return false;
    d->year = y;
    d->month = m;
    d->day = day;
    return true;
}

static bool eq_any(const char *s, size_t len, const char *const *names)
{
    for (; *names; names++)
        if (strlen(*names) == len && strncasecmp(s, *names, len) == 0)
            return true;
    return false;
}

/* Surrounding blanks are no part of a name. */
static void trim(const char **s, size_t *len)
{
    while (*len && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
        (*len)--;
}

claim_codesys_t claim_codesys_from(const char *s, size_t len)
{
    /* HL7 table 0396 names as US senders use them ("I10" is ICD-10-CM on a
     * US feed), the FHIR URIs, and the OIDs bare and as urn:oid. "ICD10"
     * is kept from earlier releases: US senders mean the CM with it. */
    static const char *const cm[] = {"I10", "I10C", "ICD10CM", "ICD-10-CM", "ICD10",
                                     "http://hl7.org/fhir/sid/icd-10-cm",
                                     "2.16.840.1.113883.6.90",
                                     "urn:oid:2.16.840.1.113883.6.90", NULL};
    static const char *const who[] = {"http://hl7.org/fhir/sid/icd-10",
                                      "2.16.840.1.113883.6.3",
                                      "urn:oid:2.16.840.1.113883.6.3", NULL};
    /* 6.103 is ICD-9-CM diagnoses, 6.2 ICD-9-CM as a whole (HL7 "I9C"). */
    static const char *const i9[] = {"I9", "I9C", "I9CDX", "ICD9", "ICD9CM", "ICD-9-CM",
                                     "http://hl7.org/fhir/sid/icd-9-cm",
                                     "2.16.840.1.113883.6.103",
                                     "urn:oid:2.16.840.1.113883.6.103",
                                     "2.16.840.1.113883.6.2",
                                     "urn:oid:2.16.840.1.113883.6.2", NULL};
    if (!s)
        return CODESYS_UNKNOWN;
    trim(&s, &len);
    if (!len)
        return CODESYS_UNKNOWN;
    if (eq_any(s, len, cm))
        return CODESYS_ICD10CM;
    if (eq_any(s, len, who))
        return CODESYS_ICD10_WHO;
    if (eq_any(s, len, i9))
        return CODESYS_ICD9CM;
    return CODESYS_OTHER;
}

claim_setting_t claim_tob_setting(const char *tob)
{
    if (!tob)
        return CLAIM_SETTING_UNKNOWN;
    size_t n = strlen(tob);
    while (n && tob[n - 1] == ' ')
        n--;
    while (n && *tob == ' ') {
        tob++;
        n--;
    }
    /* NUBC writes four digits with a leading zero ("0111"); many systems
     * drop it ("111"). */
    if (n == 4 && tob[0] == '0') {
        tob++;
        n--;
    }
    if (n != 3)
        return CLAIM_SETTING_UNKNOWN;
    for (size_t i = 0; i < 3; i++)
        if (!isdigit((unsigned char)tob[i]))
            return CLAIM_SETTING_UNKNOWN;
    if (tob[0] < '1' || tob[0] > '8')
        return CLAIM_SETTING_UNKNOWN;
    /* Digit 1 is the type of facility (1 hospital), digit 2 the bill
     * classification (1 inpatient, 2 inpatient Part B). */
    if (tob[0] == '1' && (tob[1] == '1' || tob[1] == '2'))
        return CLAIM_SETTING_INPATIENT;
    return CLAIM_SETTING_OUTPATIENT;
}

claim_procsys_t claim_procsys_from(const char *s, size_t len)
{
    static const char *const cpt[] = {"C4", "CPT", "CPT4", "CPT-4",
                                      "http://www.ama-assn.org/go/cpt",
                                      "urn:oid:2.16.840.1.113883.6.12", NULL};
    static const char *const hcpcs[] = {"HCPCS",
                                        "HC",
                                        "HPC",
                                        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                                        "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                                        "urn:oid:2.16.840.1.113883.6.285",
                                        "urn:oid:2.16.840.1.113883.6.14",
                                        NULL};
    static const char *const pcs[] = {"I10P", "ICD10PCS", "http://www.cms.gov/Medicare/Coding/ICD10",
                                      NULL};
    if (!s || !len)
        return PROCSYS_UNKNOWN;
    if (eq_any(s, len, cpt))
        return PROCSYS_CPT;
    if (eq_any(s, len, hcpcs))
        return PROCSYS_HCPCS;
    if (eq_any(s, len, pcs))
        return PROCSYS_ICD10PCS;
    return PROCSYS_OTHER;
}

const char *claim_codesys_name(claim_codesys_t s)
{
    switch (s) {
    case CODESYS_ICD10CM: return "icd-10-cm";
    case CODESYS_ICD10_WHO: return "icd-10";
    case CODESYS_ICD9CM: return "icd-9-cm";
    case CODESYS_OTHER: return "other";
    default: return "unknown";
    }
}

const char *claim_setting_name(claim_setting_t s)
{
    switch (s) {
    case CLAIM_SETTING_INPATIENT: return "inpatient";
    case CLAIM_SETTING_OUTPATIENT: return "outpatient";
    default: return "unknown";
    }
}

const char *claim_kind_name(claim_kind_t k)
{
    return k == CLAIM_KIND_ADT ? "adt" : "bill";
}

const char *claim_dx_type_name(claim_dx_type_t t)
{
    switch (t) {
    case DX_TYPE_PRINCIPAL: return "principal";
    case DX_TYPE_ADMITTING: return "admitting";
    case DX_TYPE_SECONDARY: return "secondary";
    default: return "unspecified";
    }
}

const char *claim_dx_stage_name(claim_dx_stage_t s)
{
    switch (s) {
    case DX_STAGE_WORKING: return "working";
    case DX_STAGE_FINAL: return "final";
    default: return "unstated";
    }
}

claim_t *claim_new(arena_t *a, claim_source_t source)
{
    claim_t *c = arena_calloc(a, 1, sizeof *c);
    c->source = source;
    c->discharged_alive = -1;
    return c;
}

/* Doubles an arena array; the old copy is simply abandoned in the arena. */
static void *grow(arena_t *a, void *old, size_t n, size_t *cap, size_t elem)
{
    if (n < *cap)
        return old;
    size_t ncap = *cap ? *cap * 2 : 8;
    /* Not zeroed: each element is cleared when it is added. */
    void *p = arena_alloc(a, ncap * elem);
    if (n)
        memcpy(p, old, n * elem);
    *cap = ncap;
    return p;
}

/* Moves the n elements at old to a zeroed array of at least want. */
static void *reserve(arena_t *a, void *old, size_t n, size_t *cap, size_t want, size_t elem)
{
    if (want <= *cap)
        return old;
    void *p = arena_calloc(a, want, elem);
    if (n)
        memcpy(p, old, n * elem);
    *cap = want;
    return p;
}

void claim_reserve(claim_t *c, arena_t *a, size_t ndx, size_t nlines)
{
    c->dx = reserve(a, c->dx, c->ndx, &c->dx_cap, ndx, sizeof *c->dx);
    c->lines = reserve(a, c->lines, c->nlines, &c->lines_cap, nlines, sizeof *c->lines);
}

claim_dx_t *claim_add_dx(claim_t *c, arena_t *a)
{
    c->dx = grow(a, c->dx, c->ndx, &c->dx_cap, sizeof *c->dx);
    claim_dx_t *d = &c->dx[c->ndx++];
    memset(d, 0, sizeof *d);
    d->line = -1;
    return d;
}

claim_line_t *claim_add_line(claim_t *c, arena_t *a)
{
    c->lines = grow(a, c->lines, c->nlines, &c->lines_cap, sizeof *c->lines);
    claim_line_t *l = &c->lines[c->nlines++];
    memset(l, 0, sizeof *l);
    return l;
}

const claim_dx_t *claim_find_dx(const claim_t *c, int sequence)
{
    for (size_t i = 0; i < c->ndx; i++)
        if (c->dx[i].sequence == sequence)
            return &c->dx[i];
    return NULL;
}

static bool str_eq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static bool date_eq(claim_date_t a, claim_date_t b)
{
    return a.year == b.year && a.month == b.month && a.day == b.day;
}

const char *claim_diff(const claim_t *a, const claim_t *b)
{
    if (!str_eq(a->id, b->id)) return "id";
    if (a->kind != b->kind) return "kind";
    if (a->setting != b->setting) return "setting";
    if (!str_eq(a->type_of_bill, b->type_of_bill)) return "type_of_bill";
    if (!date_eq(a->discharge, b->discharge)) return "discharge";
    if (a->sex != b->sex) return "sex";
    if (!date_eq(a->birth_date, b->birth_date)) return "birth_date";
    if (!date_eq(a->service_from, b->service_from)) return "service_from";
    if (!date_eq(a->service_to, b->service_to)) return "service_to";
    if (a->discharged_alive != b->discharged_alive) return "discharged_alive";
    if (a->ndx != b->ndx) return "number of diagnoses";
    for (size_t i = 0; i < a->ndx; i++) {
        const claim_dx_t *x = &a->dx[i], *y = &b->dx[i];
        if (x->sequence != y->sequence) return "diagnosis.sequence";
        if (!str_eq(x->code_sent, y->code_sent)) return "diagnosis.code_sent";
        if (strcmp(x->code, y->code) != 0) return "diagnosis.code";
        if (x->system != y->system) return "diagnosis.system";
        if (!str_eq(x->system_sent, y->system_sent)) return "diagnosis.system_sent";
        if (x->type != y->type) return "diagnosis.type";
        if (x->stage != y->stage)
            return "diagnosis.stage";
        if (x->poa != y->poa) return "diagnosis.poa";
        if (!str_eq(x->text, y->text)) return "diagnosis.text";
        if (x->line != y->line) return "diagnosis.line";
    }
    if (a->nlines != b->nlines) return "number of lines";
    for (size_t i = 0; i < a->nlines; i++) {
        const claim_line_t *x = &a->lines[i], *y = &b->lines[i];
        if (x->sequence != y->sequence) return "line.sequence";
        if (!str_eq(x->code, y->code)) return "line.code";
        if (x->system != y->system) return "line.system";
        if (x->nmodifiers != y->nmodifiers) return "line.modifiers";
        for (int m = 0; m < x->nmodifiers; m++)
            if (!str_eq(x->modifiers[m], y->modifiers[m])) return "line.modifiers";
        if (x->units != y->units) return "line.units";
        if (!date_eq(x->date_from, y->date_from)) return "line.date_from";
        if (!date_eq(x->date_to, y->date_to)) return "line.date_to";
        if (x->ndx_pointers != y->ndx_pointers) return "line.dx_pointers";
        for (int p = 0; p < x->ndx_pointers; p++)
            if (x->dx_pointers[p] != y->dx_pointers[p]) return "line.dx_pointers";
        if (x->ndx_codes != y->ndx_codes) return "line.dx_codes";
        for (int k = 0; k < x->ndx_codes; k++)
            if (!str_eq(x->dx_codes[k], y->dx_codes[k])) return "line.dx_codes";
    }
    return NULL;
}
