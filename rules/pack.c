/* pack.c - loading a rule pack: the code tables (embedded or from a file or
 * directory), the rule pack JSON (embedded or from a file), validation with
 * errors that name the line or the key path ("rules[3].severity"), the
 * compilation of regions and rule parameters against the tables, and the
 * site policy. rule_pack_load() produces a pack that rule_pack_free()
 * consumes; a failed load frees everything it built and leaves *out NULL.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "rules_int.h"
#include "xmalloc.h"

#define PACK_MAX_BYTES (16u << 20)
#define TABLE_MAX_BYTES (64u << 20)
#define MAX_REGIONS 32
#define MAX_PHRASES 64

/* ---------------------------------------------------------------- names */

static const char *const rule_names[RID__COUNT] = {
    [RID_CODE_SYSTEM] = "code-system",
    [RID_CODE_INVALID] = "code-invalid",
    [RID_CODE_NOT_BILLABLE] = "code-not-billable",
    [RID_SEVENTH] = "seventh-character",
    [RID_EXCLUDES1] = "excludes1-pair",
    [RID_EXCLUDES2] = "excludes2-pair",
    [RID_SITE_UNSPECIFIED] = "site-unspecified",
    [RID_JUNCTION] = "junction-region",
    [RID_CONGENITAL] = "acquired-congenital",
    [RID_LINKAGE] = "procedure-linkage",
    [RID_DRG] = "drg-tier",
    [RID_TABLE_COVERAGE] = "table-coverage",
    [RID_DUPLICATE] = "duplicate-code",
    [RID_MANIFESTATION] = "manifestation-first",
};

static const char *const msgkey_names[MK__COUNT] = {
    [MK_DEFAULT] = "default",
    [MK_MISSING] = "missing",
    [MK_PLACEHOLDER] = "placeholder",
    [MK_UNDEFINED] = "undefined",
    [MK_NOT_APPLICABLE] = "not_applicable",
    [MK_SAME_REGION] = "same_region",
    [MK_REGION_UNSTATED] = "region_unstated",
    [MK_UNLINKED] = "unlinked",
    [MK_DANGLING] = "dangling",
    [MK_OTHER_REGION] = "other_region",
    [MK_MCC] = "mcc",
    [MK_NO_MCC] = "no_mcc",
    [MK_ALIVE_UNKNOWN] = "alive_unknown",
    [MK_NOT_STATED] = "not_stated",
    [MK_SURGERY] = "surgery",
    [MK_MALFORMED] = "malformed",
    [MK_NEWER_UNKNOWN] = "newer_unknown",
    [MK_WHO] = "who",
    [MK_UNKNOWN_SYSTEM] = "unknown_system",
    [MK_NEWER] = "newer",
    [MK_OLDER] = "older",
    [MK_SPAN] = "span",
    [MK_PRINCIPAL] = "principal",
    [MK_FIRST_LISTED] = "first_listed",
    [MK_GROUPER] = "grouper",
    [MK_POA_N] = "poa_n",
    [MK_SAME_CONDITION] = "same_condition",
    [MK_QUERY] = "query",
    [MK_REGION_OVERLAP] = "region_overlap",
    [MK_LEVELS_DIFFER] = "levels_differ",
    [MK_UNREVIEWED] = "unreviewed",
    [MK_WORKING] = "working",
    [MK_UNDATED] = "undated",
    [MK_DATES_DIFFER] = "dates_differ",
    [MK_DELETED] = "deleted",
    [MK_ACQUIRED] = "acquired",
};

static const char *const var_names[V__COUNT] = {
    "code", "other", "owner", "note", "region", "other_region", "suggestion", "chars",
    "char", "base", "description", "category", "fy", "source", "line", "proc", "kind",
    "label", "pointer", "mcc", "drg", "detail", "date", "tables",
    "sent", "form", "system", "grouper", "location", "boundary",
};

#define B(k) ((uint64_t)1 << (k))
_Static_assert(MK__COUNT <= 64, "message keys are held in a 64-bit mask");
uint64_t rule__msgkeys_of(rule__id_t id)
{
    switch (id) {
    case RID_SEVENTH: return B(MK_MISSING) | B(MK_PLACEHOLDER) | B(MK_UNDEFINED) | B(MK_NOT_APPLICABLE);
    case RID_EXCLUDES1:
        return B(MK_SAME_CONDITION) | B(MK_SAME_REGION) | B(MK_QUERY) | B(MK_OTHER_REGION) |
               B(MK_REGION_OVERLAP) | B(MK_REGION_UNSTATED) | B(MK_LEVELS_DIFFER) |
               B(MK_UNREVIEWED) | B(MK_WORKING) | B(MK_DATES_DIFFER);
    case RID_LINKAGE: return B(MK_UNLINKED) | B(MK_DANGLING) | B(MK_OTHER_REGION);
    case RID_DRG:
        return B(MK_MCC) | B(MK_NO_MCC) | B(MK_ALIVE_UNKNOWN) | B(MK_NOT_STATED) | B(MK_SURGERY) |
               B(MK_GROUPER) | B(MK_POA_N);
    case RID_CODE_INVALID:
        return B(MK_DEFAULT) | B(MK_MALFORMED) | B(MK_NEWER_UNKNOWN) | B(MK_UNDATED) |
               B(MK_DELETED) | B(MK_UNLINKED);
    case RID_CODE_SYSTEM: return B(MK_WHO) | B(MK_UNKNOWN_SYSTEM);
    case RID_TABLE_COVERAGE: return B(MK_NEWER) | B(MK_OLDER) | B(MK_SPAN);
    case RID_MANIFESTATION: return B(MK_PRINCIPAL) | B(MK_FIRST_LISTED);
    case RID_CONGENITAL: return B(MK_DEFAULT) | B(MK_ACQUIRED);
    default: return B(MK_DEFAULT);
    }
}

const char *rule__id_name(rule__id_t id)
{
    return (unsigned)id < RID__COUNT ? rule_names[id] : "?";
}

int rule__id_from(const char *name)
{
    for (int i = 0; i < RID__COUNT; i++)
        if (strcmp(name, rule_names[i]) == 0)
            return i;
    return -1;
}

const char *rule__msgkey_name(rule__msgkey_t k)
{
    return (unsigned)k < MK__COUNT ? msgkey_names[k] : "?";
}

int rule__var_from(const char *name, size_t n)
{
    /* Runs for each placeholder of each finding: the first byte rules out
     * most names before a comparison. */
    for (int i = 0; i < V__COUNT; i++)
        if (n && var_names[i][0] == name[0] && strncmp(var_names[i], name, n) == 0 &&
            var_names[i][n] == '\0')
            return i;
    return -1;
}

const char *rule__var_name(rule__var_t v)
{
    return (unsigned)v < V__COUNT ? var_names[v] : "?";
}

/* ---------------------------------------------------------------- errors */

typedef struct {
    err_detail_t *d;
    const char *file;
    char path[64];
} ctx_t;

static err_t perr(ctx_t *c, err_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static err_t perr(ctx_t *c, err_t code, const char *fmt, ...)
{
    if (!c->d)
        return code;
    char msg[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* The path goes to where alone: every caller prints "where: msg". */
    err_set(c->d, code, 0, "%s", msg);
    snprintf(c->d->where, sizeof c->d->where, "%s", c->path);
    return code;
}

/* Sets the current key path: printf-style ("rules[%d].severity"). */
static void at(ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void at(ctx_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->path, sizeof c->path, fmt, ap);
    va_end(ap);
}

/* Refuses keys that the format does not know, so a typo ("severty") is an
 * error instead of a silently ignored setting. */
static err_t only_keys(ctx_t *c, const cJSON *obj, const char *base, const char *const *keys)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, obj)
    {
        bool ok = false;
        for (const char *const *k = keys; *k && !ok; k++)
            ok = it->string && strcmp(it->string, *k) == 0;
        if (!ok) {
            at(c, "%s%s%s", base, *base ? "." : "", it->string ? it->string : "?");
            return perr(c, ERR_BAD_PACK, "unknown key");
        }
    }
    return ERR_OK;
}

static const cJSON *need(ctx_t *c, const cJSON *obj, const char *base, const char *key,
                         int type, bool required, err_t *rc)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *rc = ERR_OK;
    at(c, "%s%s%s", base, *base ? "." : "", key);
    if (!v || cJSON_IsNull(v)) {
        if (required)
            *rc = perr(c, ERR_BAD_PACK, "missing");
        return NULL;
    }
    if ((v->type & 0xFF) != type && !(type == cJSON_True && cJSON_IsBool(v))) {
        static const struct { int t; const char *n; } tn[] = {
            {cJSON_String, "a string"}, {cJSON_Number, "a number"}, {cJSON_Array, "an array"},
            {cJSON_Object, "an object"}, {cJSON_True, "true or false"}};
        const char *want = "?";
        for (size_t i = 0; i < sizeof tn / sizeof tn[0]; i++)
            if (tn[i].t == type)
                want = tn[i].n;
        *rc = perr(c, ERR_BAD_PACK, "must be %s", want);
        return NULL;
    }
    return v;
}

/* ---------------------------------------------------------------- files */

static err_t read_file(const char *path, size_t max, char **out, size_t *len, err_detail_t *d)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_set(d, ERR_IO, 0, "cannot open %s: %s", path, strerror(errno));
        if (d)
            snprintf(d->where, sizeof d->where, "%.63s", path);
        return ERR_IO;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap + 1);
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n > max) {
            fclose(f);
            xfree(buf);
            err_set(d, ERR_TOO_LARGE, 0, "%s is larger than %zu bytes", path, max);
            return ERR_TOO_LARGE;
        }
        if (got == 0)
            break;
        if (n == cap) {
            cap *= 2;
            buf = xrealloc(buf, cap + 1);
        }
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        xfree(buf);
        err_set(d, ERR_IO, 0, "cannot read %s", path);
        return ERR_IO;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return ERR_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_table(const void *a, const void *b)
{
    const rule__table_t *x = a, *y = b;
    long kx = x->from.year * 10000L + x->from.month * 100 + x->from.day;
    long ky = y->from.year * 10000L + y->from.month * 100 + y->from.day;
    return kx < ky ? -1 : kx > ky;
}

static long date_key(claim_date_t dt)
{
    return dt.year * 10000L + dt.month * 100 + dt.day;
}

static err_t add_table(rule_pack_t *p, const char *name, const char *text, size_t len,
                       err_detail_t *d)
{
    p->tables = xrealloc(p->tables, (p->ntables + 1) * sizeof *p->tables);
    err_t rc = rule__table_parse(name, text, len, &p->tables[p->ntables], d);
    if (rc == ERR_OK)
        p->ntables++;
    return rc;
}

/* Each table's year and the service dates it covers, in load order. */
static char *tables_span(const rule_pack_t *p)
{
    char span[256] = "";
    size_t o = 0;
    for (size_t i = 0; i < p->ntables && o < sizeof span; i++) {
        const rule__table_t *t = &p->tables[i];
        int w = snprintf(span + o, sizeof span - o, "%s%s %04d-%02d-%02d..%04d-%02d-%02d",
                         i ? ", " : "", t->fy, t->from.year, t->from.month ? t->from.month : 1,
                         t->from.day ? t->from.day : 1, t->to.year, t->to.month ? t->to.month : 1,
                         t->to.day ? t->to.day : 1);
        if (w < 0)
            break;
        o += (size_t)w;
    }
    return xstrdup(span);
}

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static err_t load_tables(rule_pack_t *p, const char *path, err_detail_t *d)
{
    err_t rc = ERR_OK;
    if (!path) {
        for (size_t i = 0; i < rule__embedded_count && rc == ERR_OK; i++)
            if (ends_with(rule__embedded_files[i].name, ".tsv"))
                rc = add_table(p, rule__embedded_files[i].name,
                               (const char *)rule__embedded_files[i].data,
                               rule__embedded_files[i].len, d);
    } else {
        struct stat st;
        if (stat(path, &st) != 0) {
            err_set(d, ERR_IO, 0, "cannot open tables %s: %s", path, strerror(errno));
            return ERR_IO;
        }
        char **files = NULL;
        size_t nfiles = 0;
        if (S_ISDIR(st.st_mode)) {
            DIR *dir = opendir(path);
            if (!dir) {
                err_set(d, ERR_IO, 0, "cannot open tables directory %s: %s", path, strerror(errno));
                return ERR_IO;
            }
            struct dirent *e;
            while ((e = readdir(dir)) != NULL) {
                if (e->d_name[0] == '.' || !ends_with(e->d_name, ".tsv"))
                    continue;
                files = xrealloc(files, (nfiles + 1) * sizeof *files);
                size_t l = strlen(path) + strlen(e->d_name) + 2;
                files[nfiles] = xmalloc(l);
                snprintf(files[nfiles], l, "%s/%s", path, e->d_name);
                nfiles++;
            }
            closedir(dir);
            if (nfiles > 1)
                qsort(files, nfiles, sizeof *files, cmp_str);
        } else {
            files = xmalloc(sizeof *files);
            files[nfiles++] = xstrdup(path);
        }
        for (size_t i = 0; i < nfiles; i++) {
            if (rc == ERR_OK) {
                char *text;
                size_t len;
                rc = read_file(files[i], TABLE_MAX_BYTES, &text, &len, d);
                if (rc == ERR_OK) {
                    const char *base = strrchr(files[i], '/');
                    rc = add_table(p, base ? base + 1 : files[i], text, len, d);
                    xfree(text);
                }
            }
            xfree(files[i]);
        }
        xfree(files);
    }
    if (rc != ERR_OK)
        return rc;
    if (!p->ntables) {
        err_set(d, ERR_BAD_TABLE, 0, "no table files (*.tsv) found%s%s", path ? " in " : "",
                path ? path : "");
        return ERR_BAD_TABLE;
    }
    qsort(p->tables, p->ntables, sizeof *p->tables, cmp_table);
    for (size_t i = 0; i < p->ntables; i++) {
        const rule__table_t *t = &p->tables[i];
        if (date_key(t->to) < date_key(t->from) ||
            (i && date_key(t->from) <= date_key(p->tables[i - 1].to))) {
            err_set(d, ERR_BAD_TABLE, 0, "table %s: validity %s overlaps another table or ends "
                                         "before it starts", t->name, t->fy);
            return ERR_BAD_TABLE;
        }
    }
    return ERR_OK;
}

const rule__table_t *rule__table_for_date(const rule_pack_t *p, claim_date_t date)
{
    if (!p->ntables)
        return NULL;
    if (!date.year)
        return &p->tables[p->ntables - 1];
    /* A date without a day (YYYY-MM) compares as the first of the month. */
    claim_date_t dd = date;
    if (!dd.month)
        dd.month = 1;
    if (!dd.day)
        dd.day = 1;
    long k = date_key(dd);
    for (size_t i = 0; i < p->ntables; i++)
        if (k >= date_key(p->tables[i].from) && k <= date_key(p->tables[i].to))
            return &p->tables[i];
    return NULL;
}

/* ---------------------------------------------------------------- pack */

static char *norm_phrase(const char *s)
{
    char buf[256];
    rule__text_norm(s, buf, sizeof buf);
    return xstrdup(buf);
}

/* Reads an array of strings into normalised phrases. */
static err_t phrases(ctx_t *c, const cJSON *arr, const char *base, char ***out, int *n)
{
    *out = NULL;
    *n = 0;
    if (!arr)
        return ERR_OK;
    int cnt = cJSON_GetArraySize(arr);
    if (cnt > MAX_PHRASES) {
        at(c, "%s", base);
        return perr(c, ERR_BAD_PACK, "more than %d entries", MAX_PHRASES);
    }
    *out = xcalloc((size_t)cnt + 1, sizeof **out);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        at(c, "%s[%d]", base, i);
        if (!cJSON_IsString(it) || !it->valuestring[0])
            return perr(c, ERR_BAD_PACK, "must be a non-empty string");
        char *ph = norm_phrase(it->valuestring);
        if (strlen(ph) < 3) {
            xfree(ph);
            return perr(c, ERR_BAD_PACK, "has no letters or digits");
        }
        (*out)[i++] = ph;
        *n = i;
    }
    return ERR_OK;
}

static void free_strv(char **v, int n)
{
    if (!v)
        return;
    for (int i = 0; i < n; i++)
        xfree(v[i]);
    xfree(v);
}

static int region_index(const rule_pack_t *p, const char *id)
{
    for (int i = 0; i < p->geo.nregions; i++)
        if (p->geo.regions[i].id && strcmp(p->geo.regions[i].id, id) == 0)
            return i;
    return -1;
}

static unsigned segment_bit(const char *s)
{
    if (strcmp(s, "C") == 0) return RULE_SEG_C;
    if (strcmp(s, "T") == 0) return RULE_SEG_T;
    if (strcmp(s, "L") == 0) return RULE_SEG_L;
    if (strcmp(s, "S") == 0) return RULE_SEG_S;
    return 0;
}

static err_t load_regions(ctx_t *c, rule_pack_t *p, const cJSON *root)
{
    err_t rc;
    const cJSON *arr = need(c, root, "", "regions", cJSON_Array, true, &rc);
    if (!arr)
        return rc;
    int n = cJSON_GetArraySize(arr);
    if (n < 1 || n > MAX_REGIONS)
        return perr(c, ERR_BAD_PACK, "needs 1 to %d regions", MAX_REGIONS);
    p->geo.regions = xcalloc((size_t)n, sizeof *p->geo.regions);
    static const char *const keys[] = {"id", "kind", "label", "segments", "description", "text", NULL};
    int i = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, arr)
    {
        char base[32];
        snprintf(base, sizeof base, "regions[%d]", i);
        at(c, "%s", base);
        if (!cJSON_IsObject(r))
            return perr(c, ERR_BAD_PACK, "must be an object");
        if ((rc = only_keys(c, r, base, keys)) != ERR_OK)
            return rc;
        rule__region_t *g = &p->geo.regions[i];
        p->geo.nregions = ++i;
        const cJSON *v = need(c, r, base, "id", cJSON_String, true, &rc);
        if (!v)
            return rc;
        if (region_index(p, v->valuestring) >= 0 && region_index(p, v->valuestring) != i - 1)
            return perr(c, ERR_BAD_PACK, "region '%.40s' is defined twice", v->valuestring);
        if (!strcmp(v->valuestring, "any"))
            return perr(c, ERR_BAD_PACK, "'any' is reserved for procedures");
        g->id = xstrdup(v->valuestring);
        v = need(c, r, base, "label", cJSON_String, false, &rc);
        if (rc)
            return rc;
        g->label = xstrdup(v ? v->valuestring : g->id);
        v = need(c, r, base, "kind", cJSON_String, false, &rc);
        if (rc)
            return rc;
        g->kind = REGION_SPECIFIC;
        if (v) {
            if (!strcmp(v->valuestring, "unspecified")) g->kind = REGION_UNSPECIFIED;
            else if (!strcmp(v->valuestring, "multiple")) g->kind = REGION_MULTIPLE;
            else if (strcmp(v->valuestring, "specific"))
                return perr(c, ERR_BAD_PACK, "must be specific, unspecified or multiple");
        }
        v = need(c, r, base, "segments", cJSON_Array, g->kind == REGION_SPECIFIC, &rc);
        if (rc)
            return rc;
        int k = 0;
        const cJSON *s;
        if (v)
            cJSON_ArrayForEach(s, v)
            {
                at(c, "%s.segments[%d]", base, k++);
                unsigned b = cJSON_IsString(s) ? segment_bit(s->valuestring) : 0;
                if (!b)
                    return perr(c, ERR_BAD_PACK, "must be \"C\", \"T\", \"L\" or \"S\"");
                g->segments |= b;
            }
        if (g->kind == REGION_SPECIFIC && !g->segments) {
            at(c, "%s.segments", base);
            return perr(c, ERR_BAD_PACK, "a specific region needs at least one segment");
        }
        char pb[48];
        v = need(c, r, base, "description", cJSON_Array, true, &rc);
        snprintf(pb, sizeof pb, "%s.description", base);
        if (rc || (rc = phrases(c, v, pb, &g->desc, &g->ndesc)) != ERR_OK)
            return rc;
        v = need(c, r, base, "text", cJSON_Array, false, &rc);
        snprintf(pb, sizeof pb, "%s.text", base);
        if (rc || (rc = phrases(c, v, pb, &g->text, &g->ntext)) != ERR_OK)
            return rc;
    }
    return ERR_OK;
}

static err_t load_levels(ctx_t *c, rule_pack_t *p, const cJSON *root)
{
    err_t rc;
    const cJSON *arr = need(c, root, "", "levels", cJSON_Array, true, &rc);
    if (!arr)
        return rc;
    static const char *const keys[] = {"letter", "from", "to", "segment", NULL};
    int i = 0;
    const cJSON *l;
    cJSON_ArrayForEach(l, arr)
    {
        char base[32];
        snprintf(base, sizeof base, "levels[%d]", i);
        at(c, "%s", base);
        if (i >= (int)(sizeof p->geo.levels / sizeof p->geo.levels[0]))
            return perr(c, ERR_BAD_PACK, "too many levels");
        if (!cJSON_IsObject(l))
            return perr(c, ERR_BAD_PACK, "must be an object");
        if ((rc = only_keys(c, l, base, keys)) != ERR_OK)
            return rc;
        rule__level_t *lv = &p->geo.levels[i];
        const cJSON *v = need(c, l, base, "letter", cJSON_String, true, &rc);
        if (!v)
            return rc;
        if (strlen(v->valuestring) != 1 || !strchr("CTLS", v->valuestring[0]))
            return perr(c, ERR_BAD_PACK, "must be C, T, L or S");
        lv->letter = v->valuestring[0];
        const cJSON *f = need(c, l, base, "from", cJSON_Number, true, &rc);
        if (!f)
            return rc;
        const cJSON *t = need(c, l, base, "to", cJSON_Number, true, &rc);
        if (!t)
            return rc;
        if (f->valuedouble < 0 || t->valuedouble > 99 || f->valuedouble > t->valuedouble)
            return perr(c, ERR_BAD_PACK, "needs 0 <= from <= to <= 99");
        lv->from = (int)f->valuedouble;
        lv->to = (int)t->valuedouble;
        v = need(c, l, base, "segment", cJSON_String, true, &rc);
        if (!v)
            return rc;
        if (!(lv->segment = segment_bit(v->valuestring)))
            return perr(c, ERR_BAD_PACK, "must be C, T, L or S");
        p->geo.nlevels = ++i;
    }
    const cJSON *sw = need(c, root, "", "level_stop_words", cJSON_Array, false, &rc);
    if (rc)
        return rc;
    return phrases(c, sw, "level_stop_words", &p->geo.stop_after, &p->geo.nstop);
}

static bool parse_proc_code(const char *s, rule__proc_t *pr)
{
    const char *dash = strchr(s, '-');
    size_t a = dash ? (size_t)(dash - s) : strlen(s);
    const char *hi = dash ? dash + 1 : s;
    size_t b = strlen(hi);
    if (a != b || a < 4 || a > 7)
        return false;
    for (size_t i = 0; i < a; i++)
        if (!isalnum((unsigned char)s[i]) || !isalnum((unsigned char)hi[i]))
            return false;
    memcpy(pr->lo, s, a);
    memcpy(pr->hi, hi, b);
    return strcmp(pr->lo, pr->hi) <= 0;
}

static err_t load_procs(ctx_t *c, rule_pack_t *p, const cJSON *root)
{
    err_t rc;
    const cJSON *arr = need(c, root, "", "procedures", cJSON_Array, true, &rc);
    if (!arr)
        return rc;
    int n = cJSON_GetArraySize(arr);
    p->procs = xcalloc((size_t)n + 1, sizeof *p->procs);
    static const char *const keys[] = {"codes", "system", "region", "kind", "label", NULL};
    static const char *const kinds[] = {"imaging", "injection", "bracing", "surgery", "other", NULL};
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        char base[32];
        snprintf(base, sizeof base, "procedures[%d]", i);
        at(c, "%s", base);
        if (!cJSON_IsObject(e))
            return perr(c, ERR_BAD_PACK, "must be an object");
        if ((rc = only_keys(c, e, base, keys)) != ERR_OK)
            return rc;
        rule__proc_t *pr = &p->procs[i];
        p->nprocs = (size_t)++i;
        const cJSON *v = need(c, e, base, "codes", cJSON_String, true, &rc);
        if (!v)
            return rc;
        if (!parse_proc_code(v->valuestring, pr))
            return perr(c, ERR_BAD_PACK, "must be CODE or LO-HI with equal-length codes");
        v = need(c, e, base, "system", cJSON_String, true, &rc);
        if (!v)
            return rc;
        if (!strcmp(v->valuestring, "cpt")) pr->system = PROCSYS_CPT;
        else if (!strcmp(v->valuestring, "hcpcs")) pr->system = PROCSYS_HCPCS;
        else return perr(c, ERR_BAD_PACK, "must be cpt or hcpcs");
        v = need(c, e, base, "region", cJSON_String, true, &rc);
        if (!v)
            return rc;
        pr->region = -1;
        if (strcmp(v->valuestring, "any")) {
            pr->region = region_index(p, v->valuestring);
            if (pr->region < 0 || p->geo.regions[pr->region].kind != REGION_SPECIFIC)
                return perr(c, ERR_BAD_PACK, "'%.40s' is not a specific region of regions[] (or any)",
                            v->valuestring);
        }
        v = need(c, e, base, "kind", cJSON_String, true, &rc);
        if (!v)
            return rc;
        bool ok = false;
        for (const char *const *k = kinds; *k && !ok; k++)
            ok = !strcmp(*k, v->valuestring);
        if (!ok)
            return perr(c, ERR_BAD_PACK, "must be imaging, injection, bracing, surgery or other");
        pr->kind = xstrdup(v->valuestring);
        v = need(c, e, base, "label", cJSON_String, true, &rc);
        if (!v)
            return rc;
        pr->label = xstrdup(v->valuestring);
    }
    return ERR_OK;
}

/* Checks a template's {placeholders}. */
static err_t check_template(ctx_t *c, const char *s)
{
    int vars = 0;
    for (const char *q = s; *q; q++) {
        if (*q == '}')
            return perr(c, ERR_BAD_PACK, "unbalanced '}'");
        if (*q != '{')
            continue;
        const char *e = strchr(q, '}');
        if (!e)
            return perr(c, ERR_BAD_PACK, "unbalanced '{'");
        if (rule__var_from(q + 1, (size_t)(e - q - 1)) < 0)
            return perr(c, ERR_BAD_PACK, "unknown placeholder {%.*s}", (int)(e - q - 1 > 32 ? 32 : e - q - 1),
                        q + 1);
        if (++vars > RULE__TEMPLATE_MAX_VARS)
            return perr(c, ERR_BAD_PACK, "more than %d placeholders", RULE__TEMPLATE_MAX_VARS);
        q = e;
    }
    return ERR_OK;
}

static err_t ref_from(ctx_t *c, const char *s, rule__ref_t *r)
{
    char norm[16];
    if (!claim_code_normalise(s, strlen(s), norm, sizeof norm) || !rule__ref_parse(norm, strlen(norm), r))
        return perr(c, ERR_BAD_PACK, "'%.20s' is not an ICD-10-CM code or prefix", s);
    return ERR_OK;
}

/* The pack's code references: "M43.1", "M43.1-", "S12.0-S12.6",
 * "M51.-/5=4" (dots and a closing dash are optional). */
static err_t pack_ref(ctx_t *c, const char *s, rule__ref_t *r)
{
    char buf[32];
    size_t n = 0;
    for (const char *q = s; *q && n + 1 < sizeof buf; q++) {
        if (*q == '.' || *q == ' ')
            continue;
        if (*q == '-' && (q[1] == '\0' || q[1] == '/' || (q[1] == '.' && q[2] == '\0')))
            continue;
        buf[n++] = (char)toupper((unsigned char)*q);
    }
    buf[n] = '\0';
    if (!n || strlen(s) >= sizeof buf || !rule__ref_parse(buf, n, r))
        return perr(c, ERR_BAD_PACK, "'%.24s' is not an ICD-10-CM code, prefix or range", s);
    return ERR_OK;
}

/* An array of code references (non-empty when required). */
static err_t pack_refs(ctx_t *c, const cJSON *obj, const char *base, const char *key, bool required,
                       rule__ref_t **out, int *n)
{
    err_t rc;
    *out = NULL;
    *n = 0;
    const cJSON *arr = need(c, obj, base, key, cJSON_Array, required, &rc);
    if (!arr)
        return rc;
    int cnt = cJSON_GetArraySize(arr);
    if (cnt < 1)
        return perr(c, ERR_BAD_PACK, "must hold at least one code");
    *out = xcalloc((size_t)cnt, sizeof **out);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        at(c, "%s.%s[%d]", base, key, i);
        if (!cJSON_IsString(it))
            return perr(c, ERR_BAD_PACK, "must be a code string");
        if ((rc = pack_ref(c, it->valuestring, &(*out)[i])))
            return rc;
        *n = ++i;
    }
    return ERR_OK;
}

static err_t load_excludes1_params(ctx_t *c, rule_pack_t *p, const cJSON *params, const char *base)
{
    (void)p;
    if (!params)
        return ERR_OK;
    at(c, "%s", base);
    return perr(c, ERR_BAD_PACK,
                "this rule takes no params: regions are the top-level region_axes "
                "and the pairs the top-level excludes1 table (docs/excludes1.md)");
}

/* "region_axes": where each group of codes keeps its region. */
static err_t load_axes(ctx_t *c, rule_pack_t *p, const cJSON *root)
{
    err_t rc;
    const cJSON *arr = need(c, root, "", "region_axes", cJSON_Array, false, &rc);
    if (!arr)
        return rc;
    int n = cJSON_GetArraySize(arr);
    p->axes = xcalloc((size_t)n + 1, sizeof *p->axes);
    static const char *const keys[] = {"codes", "character", "digits", "region", NULL};
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        char base[32];
        snprintf(base, sizeof base, "region_axes[%d]", i);
        at(c, "%s", base);
        if (!cJSON_IsObject(e))
            return perr(c, ERR_BAD_PACK, "must be an object");
        if ((rc = only_keys(c, e, base, keys)) != ERR_OK)
            return rc;
        rule__axis_t *ax = &p->axes[i];
        p->naxes = ++i;
        for (int k = 0; k < 36; k++)
            ax->digit_region[k] = -1;
        ax->region = -1;
        if ((rc = pack_refs(c, e, base, "codes", true, &ax->codes, &ax->ncodes)))
            return rc;
        const cJSON *ch = need(c, e, base, "character", cJSON_Number, false, &rc);
        if (rc)
            return rc;
        const cJSON *dig = need(c, e, base, "digits", cJSON_Object, false, &rc);
        if (rc)
            return rc;
        const cJSON *reg = need(c, e, base, "region", cJSON_String, false, &rc);
        if (rc)
            return rc;
        if (!!reg == !!ch || !!ch != !!dig) {
            at(c, "%s", base);
            return perr(c, ERR_BAD_PACK, "needs either character and digits, or region");
        }
        if (reg) {
            at(c, "%s.region", base);
            if ((ax->region = region_index(p, reg->valuestring)) < 0)
                return perr(c, ERR_BAD_PACK, "must name a region of regions[]");
            continue;
        }
        at(c, "%s.character", base);
        if (ch->valuedouble < 4 || ch->valuedouble > 7 || ch->valuedouble != (int)ch->valuedouble)
            return perr(c, ERR_BAD_PACK, "must be 4 to 7");
        ax->character = (int)ch->valuedouble;
        const cJSON *dv;
        cJSON_ArrayForEach(dv, dig)
        {
            at(c, "%s.digits.%.8s", base, dv->string);
            const char *k = dv->string;
            if (strlen(k) != 1 || !isalnum((unsigned char)k[0]))
                return perr(c, ERR_BAD_PACK, "key must be one character 0-9 or A-Z");
            if (!cJSON_IsString(dv) || region_index(p, dv->valuestring) < 0)
                return perr(c, ERR_BAD_PACK, "must name a region of regions[]");
            char chr = (char)toupper((unsigned char)k[0]);
            ax->digit_region[isdigit((unsigned char)chr) ? chr - '0' : 10 + chr - 'A'] =
                region_index(p, dv->valuestring);
        }
    }
    return ERR_OK;
}

/* "excludes1": the reviewed table. Checked against the tables later. */
static err_t load_ex1rows(ctx_t *c, rule_pack_t *p, const cJSON *root)
{
    err_t rc;
    const cJSON *arr = need(c, root, "", "excludes1", cJSON_Array, false, &rc);
    if (!arr)
        return rc;
    int n = cJSON_GetArraySize(arr);
    p->ex1rows = xcalloc((size_t)n + 1, sizeof *p->ex1rows);
    static const char *const keys[] = {"owner",        "note",     "applies_to",
                                       "excludes",     "relation", "severity",
                                       "other_region", "why",      NULL};
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        char base[32];
        snprintf(base, sizeof base, "excludes1[%d]", i);
        at(c, "%s", base);
        if (!cJSON_IsObject(e))
            return perr(c, ERR_BAD_PACK, "must be an object");
        if ((rc = only_keys(c, e, base, keys)) != ERR_OK)
            return rc;
        rule__ex1row_t *r = &p->ex1rows[i];
        p->nex1rows = ++i;
        const cJSON *v = need(c, e, base, "owner", cJSON_String, true, &rc);
        if (!v)
            return rc;
        if ((rc = pack_ref(c, v->valuestring, &r->owner)))
            return rc;
        snprintf(r->owner_dotted, sizeof r->owner_dotted, "%s", v->valuestring);
        v = need(c, e, base, "note", cJSON_String, true, &rc);
        if (!v)
            return rc;
        if (!v->valuestring[0])
            return perr(c, ERR_BAD_PACK, "must be the note's text");
        r->note = xstrdup(v->valuestring);
        if ((rc = pack_refs(c, e, base, "applies_to", false, &r->applies, &r->napplies)))
            return rc;
        for (int k = 0; k < r->napplies; k++)
            if (!rule__ref_match(&r->owner, r->applies[k].lo) ||
                !rule__ref_match(&r->owner, r->applies[k].hi)) {
                at(c, "%s.applies_to[%d]", base, k);
                return perr(c, ERR_BAD_PACK, "is not under the owner %s", r->owner_dotted);
            }
        if ((rc = pack_refs(c, e, base, "excludes", true, &r->excl, &r->nexcl)))
            return rc;
        v = need(c, e, base, "relation", cJSON_String, true, &rc);
        if (!v)
            return rc;
        if (!strcmp(v->valuestring, "same-region"))
            r->same_region = true;
        else if (strcmp(v->valuestring, "any"))
            return perr(c, ERR_BAD_PACK, "must be same-region or any");
        v = need(c, e, base, "severity", cJSON_String, true, &rc);
        if (!v)
            return rc;
        int sev = rule_severity_from_name(v->valuestring);
        if (sev != RULE_SEV_REJECT && sev != RULE_SEV_WARN)
            return perr(c, ERR_BAD_PACK, "must be reject or warn");
        r->severity = (rule_severity_t)sev;
        v = need(c, e, base, "other_region", cJSON_String, false, &rc);
        if (rc)
            return rc;
        if (v) {
            if (!r->same_region)
                return perr(c, ERR_BAD_PACK, "applies only to relation same-region");
            if (!strcmp(v->valuestring, "none"))
                r->other_region_none = true;
            else if (strcmp(v->valuestring, "warn"))
                return perr(c, ERR_BAD_PACK, "must be warn or none");
        }
        v = need(c, e, base, "why", cJSON_String, true, &rc);
        if (!v)
            return rc;
        if (!v->valuestring[0])
            return perr(c, ERR_BAD_PACK, "must give the reviewer's reason");
        r->why = xstrdup(v->valuestring);
    }
    return ERR_OK;
}

static err_t load_strv(ctx_t *c, const cJSON *params, const char *base, const char *key,
                       char ***out, int *n)
{
    err_t rc;
    const cJSON *arr = need(c, params, base, key, cJSON_Array, true, &rc);
    if (!arr)
        return rc;
    char pb[64];
    snprintf(pb, sizeof pb, "%s.%s", base, key);
    return phrases(c, arr, pb, out, n);
}

static err_t load_rule_params(ctx_t *c, rule_pack_t *p, rule__id_t id, const cJSON *params,
                              const char *base)
{
    err_t rc;
    switch (id) {
    case RID_EXCLUDES1:
        return load_excludes1_params(c, p, params, base);
    case RID_SITE_UNSPECIFIED: {
        static const char *const keys[] = {"use_text", "use_other_codes", "use_procedures", NULL};
        p->site_use_text = p->site_use_codes = p->site_use_procedures = true;
        if (!params)
            return ERR_OK;
        if ((rc = only_keys(c, params, base, keys)) != ERR_OK)
            return rc;
        bool *dst[] = {&p->site_use_text, &p->site_use_codes, &p->site_use_procedures};
        for (int i = 0; i < 3; i++) {
            const cJSON *v = need(c, params, base, keys[i], cJSON_True, false, &rc);
            if (rc)
                return rc;
            if (v)
                *dst[i] = cJSON_IsTrue(v);
        }
        return ERR_OK;
    }
    case RID_JUNCTION: {
        static const char *const keys[] = {"junctions", NULL};
        if (!params)
            return ERR_OK;
        if ((rc = only_keys(c, params, base, keys)) != ERR_OK)
            return rc;
        const cJSON *arr = need(c, params, base, "junctions", cJSON_Array, true, &rc);
        if (!arr)
            return rc;
        p->junctions = xcalloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof *p->junctions);
        static const char *const jk[] = {"region", "from", NULL};
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, arr)
        {
            char eb[96];
            snprintf(eb, sizeof eb, "%s.junctions[%d]", base, i);
            at(c, "%s", eb);
            if (!cJSON_IsObject(e))
                return perr(c, ERR_BAD_PACK, "must be an object");
            if ((rc = only_keys(c, e, eb, jk)) != ERR_OK)
                return rc;
            rule__junction_t *j = &p->junctions[i];
            p->njunctions = ++i;
            const cJSON *v = need(c, e, eb, "region", cJSON_String, true, &rc);
            if (!v)
                return rc;
            if ((j->junction = region_index(p, v->valuestring)) < 0)
                return perr(c, ERR_BAD_PACK, "'%.40s' is not a region of regions[]", v->valuestring);
            const cJSON *from = need(c, e, eb, "from", cJSON_Array, true, &rc);
            if (!from)
                return rc;
            int k = 0;
            const cJSON *f;
            cJSON_ArrayForEach(f, from)
            {
                at(c, "%s.from[%d]", eb, k++);
                int ri = cJSON_IsString(f) ? region_index(p, f->valuestring) : -1;
                if (ri < 0)
                    return perr(c, ERR_BAD_PACK, "must name a region of regions[]");
                j->from |= 1u << ri;
            }
        }
        return ERR_OK;
    }
    case RID_CONGENITAL: {
        static const char *const keys[] = {"words", "acquired_words", "negations", "map", NULL};
        if (!params)
            return ERR_OK;
        if ((rc = only_keys(c, params, base, keys)) != ERR_OK)
            return rc;
        if ((rc = load_strv(c, params, base, "words", &p->congenital_words, &p->ncongenital_words)))
            return rc;
        const cJSON *aw = need(c, params, base, "acquired_words", cJSON_Array, false, &rc);
        char ab[64];
        snprintf(ab, sizeof ab, "%s.acquired_words", base);
        if (rc || (rc = phrases(c, aw, ab, &p->acquired_words, &p->nacquired_words)))
            return rc;
        const cJSON *neg = need(c, params, base, "negations", cJSON_Array, false, &rc);
        char nb[64];
        snprintf(nb, sizeof nb, "%s.negations", base);
        if (rc || (rc = phrases(c, neg, nb, &p->negations, &p->nnegations)))
            return rc;
        const cJSON *arr = need(c, params, base, "map", cJSON_Array, true, &rc);
        if (!arr)
            return rc;
        p->congenital = xcalloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof *p->congenital);
        static const char *const mk[] = {"acquired", "congenital", NULL};
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, arr)
        {
            char eb[96];
            snprintf(eb, sizeof eb, "%s.map[%d]", base, i);
            at(c, "%s", eb);
            if (!cJSON_IsObject(e))
                return perr(c, ERR_BAD_PACK, "must be an object");
            if ((rc = only_keys(c, e, eb, mk)) != ERR_OK)
                return rc;
            rule__congenital_t *m = &p->congenital[i];
            p->ncongenital = ++i;
            const cJSON *acq = need(c, e, eb, "acquired", cJSON_Array, true, &rc);
            if (!acq)
                return rc;
            m->acquired = xcalloc((size_t)cJSON_GetArraySize(acq) + 1, sizeof *m->acquired);
            int k = 0;
            const cJSON *a;
            cJSON_ArrayForEach(a, acq)
            {
                at(c, "%s.acquired[%d]", eb, k);
                if (!cJSON_IsString(a))
                    return perr(c, ERR_BAD_PACK, "must be a code string");
                if ((rc = ref_from(c, a->valuestring, &m->acquired[k])))
                    return rc;
                m->nacquired = ++k;
            }
            const cJSON *cg = need(c, e, eb, "congenital", cJSON_String, true, &rc);
            if (!cg)
                return rc;
            m->congenital = xstrdup(cg->valuestring);
        }
        return ERR_OK;
    }
    case RID_DRG: {
        static const char *const keys[] = {"first_when_unstated", NULL};
        p->drg_first_when_unstated = true;
        if (!params)
            return ERR_OK;
        if ((rc = only_keys(c, params, base, keys)) != ERR_OK)
            return rc;
        const cJSON *v = need(c, params, base, "first_when_unstated", cJSON_True, false, &rc);
        if (v)
            p->drg_first_when_unstated = cJSON_IsTrue(v);
        return rc;
    }
    default:
        if (params) {
            at(c, "%s", base);
            return perr(c, ERR_BAD_PACK, "this rule takes no params");
        }
        return ERR_OK;
    }
}

static err_t load_rules(ctx_t *c, rule_pack_t *p, const cJSON *root)
{
    err_t rc;
    const cJSON *arr = need(c, root, "", "rules", cJSON_Array, true, &rc);
    if (!arr)
        return rc;
    bool seen[RID__COUNT] = {0};
    static const char *const keys[] = {"id", "severity", "enabled", "reference", "messages",
                                       "params", "description", NULL};
    /* defaults for rules the pack leaves out: they are off */
    p->site_use_text = p->site_use_codes = p->site_use_procedures = true;
    p->drg_first_when_unstated = true;
    int i = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, arr)
    {
        char base[32];
        snprintf(base, sizeof base, "rules[%d]", i++);
        at(c, "%s", base);
        if (!cJSON_IsObject(r))
            return perr(c, ERR_BAD_PACK, "must be an object");
        if ((rc = only_keys(c, r, base, keys)) != ERR_OK)
            return rc;
        const cJSON *v = need(c, r, base, "id", cJSON_String, true, &rc);
        if (!v)
            return rc;
        int id = rule__id_from(v->valuestring);
        if (id < 0)
            return perr(c, ERR_BAD_PACK, "unknown rule id '%.40s'", v->valuestring);
        if (seen[id])
            return perr(c, ERR_BAD_PACK, "rule '%s' appears twice", rule_names[id]);
        seen[id] = true;
        rule__rule_t *rule = &p->rules[id];
        rule->index = i - 1;
        v = need(c, r, base, "severity", cJSON_String, true, &rc);
        if (!v)
            return rc;
        int sev = rule_severity_from_name(v->valuestring);
        if (sev < 0)
            return perr(c, ERR_BAD_PACK, "unknown severity '%.20s' (reject, warn or info)", v->valuestring);
        rule->severity = (rule_severity_t)sev;
        v = need(c, r, base, "enabled", cJSON_True, false, &rc);
        if (rc)
            return rc;
        rule->enabled = v ? cJSON_IsTrue(v) : true;
        v = need(c, r, base, "reference", cJSON_String, false, &rc);
        if (rc)
            return rc;
        if (v) {
            if ((rc = check_template(c, v->valuestring)))
                return rc;
            rule->reference = xstrdup(v->valuestring);
        }
        v = need(c, r, base, "description", cJSON_String, false, &rc);
        if (rc)
            return rc;
        const cJSON *msgs = need(c, r, base, "messages", cJSON_Object, true, &rc);
        if (!msgs)
            return rc;
        uint64_t want = rule__msgkeys_of((rule__id_t)id);
        const cJSON *m;
        cJSON_ArrayForEach(m, msgs)
        {
            at(c, "%s.messages.%.24s", base, m->string);
            int k = -1;
            for (int q = 0; q < MK__COUNT; q++)
                if ((want & B(q)) && !strcmp(m->string, msgkey_names[q]))
                    k = q;
            if (k < 0)
                return perr(c, ERR_BAD_PACK, "not a message key of rule %s", rule_names[id]);
            if (!cJSON_IsString(m) || !m->valuestring[0])
                return perr(c, ERR_BAD_PACK, "must be a non-empty string");
            if ((rc = check_template(c, m->valuestring)))
                return rc;
            if (rule->msg[k])
                return perr(c, ERR_BAD_PACK, "message key appears twice");
            rule->msg[k] = xstrdup(m->valuestring);
        }
        for (int q = 0; q < MK__COUNT; q++)
            if ((want & B(q)) && !rule->msg[q]) {
                at(c, "%s.messages.%s", base, msgkey_names[q]);
                return perr(c, ERR_BAD_PACK, "missing");
            }
        char pb[48];
        snprintf(pb, sizeof pb, "%s.params", base);
        const cJSON *params = need(c, r, base, "params", cJSON_Object, false, &rc);
        if (rc || (rc = load_rule_params(c, p, (rule__id_t)id, params, pb)))
            return rc;
    }
    return ERR_OK;
}

/* Counts lines and columns up to off, for syntax errors. */
static void line_col(const char *s, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && s[i]; i++) {
        if (s[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static err_t load_pack_json(rule_pack_t *p, const char *name, const char *text, size_t len,
                            err_detail_t *d)
{
    ctx_t c = {d, name, ""};
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!root) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        int line, col;
        line_col(text, off, &line, &col);
        err_set(d, ERR_BAD_PACK, off, "%s: malformed JSON at line %d, column %d", name, line, col);
        if (d) {
            d->segment = line;
            snprintf(d->where, sizeof d->where, "%.30s:%d:%d", name, line, col);
        }
        return ERR_BAD_PACK;
    }
    err_t rc = ERR_OK;
    static const char *const keys[] = {"pack",        "version",          "description", "regions",
                                       "levels",      "level_stop_words", "procedures",  "rules",
                                       "region_axes", "excludes1",        NULL};
    at(&c, "(root)");
    if (!cJSON_IsObject(root)) {
        rc = perr(&c, ERR_BAD_PACK, "the pack must be a JSON object");
        goto out;
    }
    if ((rc = only_keys(&c, root, "", keys)))
        goto out;
    const cJSON *v = need(&c, root, "", "pack", cJSON_String, true, &rc);
    if (!v)
        goto out;
    p->name = xstrdup(v->valuestring);
    v = need(&c, root, "", "version", cJSON_Number, true, &rc);
    if (!v)
        goto out;
    if (v->valuedouble < 1 || v->valuedouble > 1e6) {
        rc = perr(&c, ERR_BAD_PACK, "must be a positive integer");
        goto out;
    }
    p->version = (int)v->valuedouble;
    if (need(&c, root, "", "description", cJSON_String, false, &rc), rc)
        goto out;
    if ((rc = load_regions(&c, p, root)) || (rc = load_levels(&c, p, root)) ||
        (rc = load_procs(&c, p, root)) || (rc = load_rules(&c, p, root)) ||
        (rc = load_axes(&c, p, root)) || (rc = load_ex1rows(&c, p, root)))
        goto out;
out:
    cJSON_Delete(root);
    return rc;
}

/* ---------------------------------------------------------------- compile */

void rule__compile_tables(rule_pack_t *p)
{
    for (size_t ti = 0; ti < p->ntables; ti++) {
        rule__table_t *t = &p->tables[ti];
        for (size_t i = 0; i < t->ncodes; i++)
            t->codes[i].region = (int16_t)rule__desc_region(&p->geo, t->codes[i].desc);
    }
}

/* Checks a region axis against one table: every complete code it covers
 * must get a region from it, and where the code's description names a
 * region, the same one. */
static err_t check_axes(ctx_t *c, const rule_pack_t *p, const rule__table_t *t)
{
    for (size_t k = 0; k < t->ncodes; k++) {
        const rule__code_t *code = &t->codes[k];
        if (!code->billable && !(code->leaf && code->seven >= 0))
            continue;
        int first = -1;
        for (int i = 0; i < p->naxes; i++) {
            const rule__axis_t *ax = &p->axes[i];
            bool in = false;
            for (int q = 0; q < ax->ncodes && !in; q++)
                in = rule__ref_match(&ax->codes[q], code->code);
            if (!in)
                continue;
            if (first >= 0) {
                at(c, "region_axes[%d].codes", i);
                return perr(c, ERR_BAD_PACK, "%s is also covered by region_axes[%d]", code->dotted,
                            first);
            }
            first = i;
            int want = ax->region;
            char ch = 0;
            if (ax->character) {
                if (code->len < ax->character) {
                    at(c, "region_axes[%d].character", i);
                    return perr(c, ERR_BAD_PACK, "%s has no character %d", code->dotted,
                                ax->character);
                }
                ch = code->code[ax->character - 1];
                int di = isdigit((unsigned char)ch) ? ch - '0' : 10 + ch - 'A';
                want = di >= 0 && di < 36 ? ax->digit_region[di] : -1;
                if (want < 0) {
                    at(c, "region_axes[%d].digits", i);
                    return perr(c, ERR_BAD_PACK, "has no region for '%c' (%s, \"%.60s\")", ch,
                                code->dotted, code->desc);
                }
            }
            if (code->region >= 0 && want != code->region) {
                if (ch)
                    at(c, "region_axes[%d].digits.%c", i, ch);
                else
                    at(c, "region_axes[%d].region", i);
                return perr(c, ERR_BAD_PACK, "maps %s to '%s' but the %s table reads \"%.60s\"",
                            code->dotted, p->geo.regions[want].id, t->fy, code->desc);
            }
        }
    }
    return ERR_OK;
}

/* Checks each reviewed Excludes1 row against one table: its note is an
 * Excludes1 note under its owner, word for word, and every code it names is
 * among the codes the note points to (a row narrows a note, never widens
 * it; a note without pointers names its codes in words). */
static err_t check_ex1rows(ctx_t *c, const rule_pack_t *p, const rule__table_t *t)
{
    for (int i = 0; i < p->nex1rows; i++) {
        const rule__ex1row_t *r = &p->ex1rows[i];
        const rule__note_t *n = rule__excludes_note(t, r);
        if (!n) {
            at(c, "excludes1[%d].note", i);
            return perr(c, ERR_BAD_PACK, "is not an Excludes1 note under %s in the %s table",
                        r->owner_dotted, t->fy);
        }
        for (int k = 0; k < r->nexcl && n->nrefs; k++) {
            bool in = false;
            for (int q = 0; q < n->nrefs && !in; q++)
                in = rule__ref_match(&n->refs[q], r->excl[k].lo) &&
                     rule__ref_match(&n->refs[q], r->excl[k].hi);
            if (!in) {
                at(c, "excludes1[%d].excludes[%d]", i, k);
                return perr(c, ERR_BAD_PACK,
                            "is not among the codes the note points to in the %s table", t->fy);
            }
        }
    }
    return ERR_OK;
}

/* Checks the pack against the tables: a region axis that contradicts the
 * table descriptions, an Excludes1 row that is not a note of the tables, or
 * a congenital map naming codes the tables do not have, is a pack error,
 * caught at load rather than as wrong findings. */
static err_t check_against_tables(rule_pack_t *p, err_detail_t *d)
{
    ctx_t c = {d, "pack", ""};
    for (size_t ti = 0; ti < p->ntables; ti++) {
        const rule__table_t *t = &p->tables[ti];
        err_t rc;
        if ((rc = check_axes(&c, p, t)) || (rc = check_ex1rows(&c, p, t)))
            return rc;
        for (int i = 0; i < p->ncongenital; i++)
            for (int k = 0; k < p->congenital[i].nacquired; k++) {
                const rule__ref_t *r = &p->congenital[i].acquired[k];
                if (!rule__table_find(t, r->lo)) {
                    at(&c, "rules[%d].params.map[%d].acquired[%d]", p->rules[RID_CONGENITAL].index, i, k);
                    return perr(&c, ERR_BAD_PACK, "%s is not in the %s table", r->lo, t->fy);
                }
            }
    }
    return ERR_OK;
}

static err_t apply_policy(rule_pack_t *p, const rule_policy_t *pol, err_detail_t *d)
{
    if (!pol)
        return ERR_OK;
    if (pol->severity_overrides) {
        for (int i = 0; pol->severity_overrides[i]; i++) {
            const char *s = pol->severity_overrides[i];
            const char *eq = strchr(s, '=');
            char id[48];
            size_t n = eq ? (size_t)(eq - s) : 0;
            if (!eq || n == 0 || n >= sizeof id) {
                err_set(d, ERR_BAD_CONFIG, 0, "severity override '%.60s' is not rule-id=severity", s);
                if (d)
                    snprintf(d->where, sizeof d->where, "severity_overrides[%d]", i);
                return ERR_BAD_CONFIG;
            }
            memcpy(id, s, n);
            id[n] = '\0';
            int rid = rule__id_from(id);
            bool off = strcmp(eq + 1, "off") == 0; /* the rule reports nothing */
            int sev = off ? RULE_SEV_INFO : rule_severity_from_name(eq + 1);
            if (rid < 0 || sev < 0) {
                err_set(d, ERR_BAD_CONFIG, 0,
                        rid < 0 ? "severity override names unknown rule '%.40s'"
                                : "severity override for '%.40s' has an unknown "
                                  "severity (reject, warn, info or off)",
                        id);
                if (d)
                    snprintf(d->where, sizeof d->where, "severity_overrides[%d]", i);
                return ERR_BAD_CONFIG;
            }
            if (off)
                p->rules[rid].enabled = false;
            else
                p->rules[rid].severity = (rule_severity_t)sev;
        }
    }
    p->adt = pol->adt;
    if (pol->advisory)
        for (int i = 0; i < RID__COUNT; i++)
            if (p->rules[i].severity == RULE_SEV_REJECT)
                p->rules[i].severity = RULE_SEV_WARN;
    return ERR_OK;
}

/* The whole load with the pack's JSON either in memory (json != NULL), from
 * pack_path, or built in. */
static err_t pack_load(const char *json, size_t json_len, const char *pack_path,
                       const char *tables_path, const rule_policy_t *policy, rule_pack_t **out,
                       err_detail_t *d)
{
    *out = NULL;
    err_clear(d);
    rule_pack_t *p = xcalloc(1, sizeof *p);
    err_t rc = load_tables(p, tables_path, d);
    if (rc == ERR_OK) {
        if (json) {
            rc = load_pack_json(p, "pack", json, json_len, d);
        } else if (pack_path) {
            char *text;
            size_t len;
            rc = read_file(pack_path, PACK_MAX_BYTES, &text, &len, d);
            if (rc == ERR_OK) {
                const char *base = strrchr(pack_path, '/');
                rc = load_pack_json(p, base ? base + 1 : pack_path, text, len, d);
                xfree(text);
            }
        } else {
            const rule__embedded_t *e = NULL;
            for (size_t i = 0; i < rule__embedded_count; i++)
                if (ends_with(rule__embedded_files[i].name, ".json"))
                    e = &rule__embedded_files[i];
            rc = e ? load_pack_json(p, e->name, (const char *)e->data, e->len, d)
                   : err_set(d, ERR_BAD_PACK, 0, "no rule pack built in");
        }
    }
    if (rc == ERR_OK) {
        rule__compile_tables(p);
        rc = check_against_tables(p, d);
    }
    if (rc == ERR_OK) {
        rule__excludes_index(p);
        p->tables_span = tables_span(p);
    }
    if (rc == ERR_OK)
        rc = apply_policy(p, policy, d);
    if (rc != ERR_OK) {
        rule_pack_free(p);
        return rc;
    }
    int enabled = 0;
    for (int i = 0; i < RID__COUNT; i++)
        enabled += p->rules[i].enabled;
    char sets[128] = "";
    size_t o = 0;
    for (size_t i = 0; i < p->ntables && o < sizeof sets; i++) {
        int w = snprintf(sets + o, sizeof sets - o, "%s%s", i ? ", " : "", p->tables[i].fy);
        if (w < 0)
            break;
        o += (size_t)w;
    }
    char buf[320];
    snprintf(buf, sizeof buf, "%s v%d (%d rules%s), ICD-10-CM %s", p->name, p->version, enabled,
             policy && policy->advisory ? ", advisory" : "", sets);
    p->describe = xstrdup(buf);
    *out = p;
    return ERR_OK;
}

err_t rule_pack_load(const char *pack_path, const char *tables_path,
                     const rule_policy_t *policy, rule_pack_t **out, err_detail_t *d)
{
    return pack_load(NULL, 0, pack_path, tables_path, policy, out, d);
}

err_t rule__pack_load_mem(const char *json, size_t len, const char *tables_path,
                          const rule_policy_t *policy, rule_pack_t **out, err_detail_t *d)
{
    return pack_load(json ? json : "", len, NULL, tables_path, policy, out, d);
}

void rule_pack_free(rule_pack_t *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->ntables; i++)
        rule__table_free(&p->tables[i]);
    xfree(p->tables);
    xfree(p->tables_span);
    for (int i = 0; i < p->geo.nregions; i++) {
        rule__region_t *r = &p->geo.regions[i];
        xfree(r->id);
        xfree(r->label);
        free_strv(r->desc, r->ndesc);
        free_strv(r->text, r->ntext);
    }
    xfree(p->geo.regions);
    free_strv(p->geo.stop_after, p->geo.nstop);
    for (size_t i = 0; i < p->nprocs; i++) {
        xfree(p->procs[i].kind);
        xfree(p->procs[i].label);
    }
    xfree(p->procs);
    for (int i = 0; i < RID__COUNT; i++) {
        xfree(p->rules[i].reference);
        for (int k = 0; k < MK__COUNT; k++)
            xfree(p->rules[i].msg[k]);
    }
    for (int i = 0; i < p->naxes; i++)
        xfree(p->axes[i].codes);
    xfree(p->axes);
    for (int i = 0; i < p->nex1rows; i++) {
        rule__ex1row_t *r = &p->ex1rows[i];
        xfree(r->note);
        xfree(r->applies);
        xfree(r->excl);
        xfree(r->why);
    }
    xfree(p->ex1rows);
    if (p->ex1idx)
        for (size_t i = 0; i < p->ntables; i++) {
            xfree(p->ex1idx[i].off);
            xfree(p->ex1idx[i].items);
            xfree(p->ex1idx[i].region);
        }
    xfree(p->ex1idx);
    xfree(p->junctions);
    for (int i = 0; i < p->ncongenital; i++) {
        xfree(p->congenital[i].acquired);
        xfree(p->congenital[i].congenital);
    }
    xfree(p->congenital);
    free_strv(p->congenital_words, p->ncongenital_words);
    free_strv(p->acquired_words, p->nacquired_words);
    free_strv(p->negations, p->nnegations);
    xfree(p->name);
    xfree(p->describe);
    xfree(p);
}

const char *rule_pack_describe(const rule_pack_t *p)
{
    return p ? p->describe : "no rule pack";
}

const char *rule_pack_name(const rule_pack_t *p)
{
    return p ? p->name : NULL;
}

int rule_pack_version(const rule_pack_t *p)
{
    return p ? p->version : 0;
}
