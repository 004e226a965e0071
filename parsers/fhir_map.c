/* fhir_map.c - the format-independent half of the FHIR reader: document
 * checks (Claim or Bundle, limits), reference resolution, and the mapping of
 * one Claim into the claim model through fhir__ops_t.
 *
 * The document (xmalloc'd) owns its tree and its index arrays; claims and
 * their strings are copied into the caller's arena.
 */
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "fhir_int.h"
#include "xmalloc.h"

#define DXTYPE_SYSTEM "http://terminology.hl7.org/CodeSystem/ex-diagnosistype"
#define CLAIMTYPE_SYSTEM "http://terminology.hl7.org/CodeSystem/claim-type"

void fhir__where(err_detail_t *d, const char *path)
{
    if (d)
        snprintf(d->where, sizeof d->where, "%s", path);
}

fhir_format_t fhir_detect_format(const char *buf, size_t len)
{
    size_t i = 0;
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
        i = 3;
    while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n'))
        i++;
    return i < len && buf[i] == '<' ? FHIR_FMT_XML : FHIR_FMT_JSON;
}

/* A resource type is echoed in an error only when it looks like one, so a
 * hostile value never reaches a log or a response verbatim. */
static const char *safe_type(const char *t)
{
    if (!t || !*t || strlen(t) > 64)
        return NULL;
    for (const char *p = t; *p; p++)
        if (!isalpha((unsigned char)*p))
            return NULL;
    return t;
}

static err_t path_err(err_detail_t *d, err_t code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static err_t path_err(err_detail_t *d, err_t code, const char *path, const char *fmt, ...)
{
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set(d, code, 0, "%s: %s", path, msg);
    fhir__where(d, path);
    return code;
}

static void add_entry(fhir_doc_t *doc, const char *full_url, fhir__node_t res)
{
    if ((doc->nentries & (doc->nentries - 1)) == 0) {
        size_t cap = doc->nentries ? doc->nentries * 2 : 8;
        doc->entries = xrealloc(doc->entries, cap * sizeof *doc->entries);
    }
    doc->entries[doc->nentries++] = (fhir__entry_t){full_url, res};
}

const char *fhir_doc_bundle_type(const fhir_doc_t *doc)
{
    return doc->bundle_type;
}

static void add_claim(fhir_doc_t *doc, fhir__node_t res, size_t entry)
{
    if ((doc->nclaims & (doc->nclaims - 1)) == 0) {
        size_t cap = doc->nclaims ? doc->nclaims * 2 : 8;
        doc->claims = xrealloc(doc->claims, cap * sizeof *doc->claims);
        doc->claim_entry = xrealloc(doc->claim_entry, cap * sizeof *doc->claim_entry);
    }
    doc->claim_entry[doc->nclaims] = entry;
    doc->claims[doc->nclaims++] = res;
}

static err_t index_bundle(fhir_doc_t *doc, const fhir_opts_t *o, err_detail_t *d)
{
    const fhir__ops_t *ops = doc->ops;
    bool bad = false;
    const char *type = NULL;
    fhir__node_t t = ops->get(doc->root, "type", &bad);
    if (bad || !t || ops->str(t, &type) != FHIR__OK || !*type)
        return path_err(d, ERR_BAD_VALUE, "Bundle.type", "a Bundle needs a type code");
    snprintf(doc->bundle_type, sizeof doc->bundle_type, "%s", type);
    size_t i = 0;
    for (fhir__node_t e = ops->first(doc->root, "entry", &bad); e; e = ops->next(e), i++) {
        char path[64];
        snprintf(path, sizeof path, "Bundle.entry[%zu]", i);
        if (!ops->is_object(e))
            return path_err(d, ERR_BAD_VALUE, path, "an entry must be an object");
        const char *full_url = NULL;
        fhir__node_t fu = ops->get(e, "fullUrl", &bad);
        if (bad || (fu && ops->str(fu, &full_url) == FHIR__BADTYPE))
            return path_err(d, ERR_BAD_VALUE, path, "fullUrl must be a string");
        fhir__node_t rc = ops->get(e, "resource", &bad);
        fhir__node_t res = rc ? ops->resource(rc, &bad) : NULL;
        const char *rt = res ? ops->resource_type(res) : NULL;
        if (bad || (res && !rt)) {
            snprintf(path, sizeof path, "Bundle.entry[%zu].resource", i);
            return path_err(d, ERR_BAD_VALUE, path, "not a resource");
        }
        add_entry(doc, full_url, res);
        if (rt && strcmp(rt, "Claim") == 0) {
            if (doc->nclaims >= o->max_claims)
                return path_err(d, ERR_TOO_LARGE, path, "more than %zu Claims in one Bundle",
                                o->max_claims);
            add_claim(doc, res, i);
        }
    }
    if (bad)
        return path_err(d, ERR_BAD_VALUE, "Bundle.entry", "entry must be an array");
    return ERR_OK;
}

/* The $validate form: Parameters with one `resource` parameter (the Claim
 * to check) and an optional `mode` (valueCode). Anything else is refused
 * rather than ignored, so a client never believes a `profile` was applied. */
static err_t index_parameters(fhir_doc_t *doc, err_detail_t *d)
{
    const fhir__ops_t *ops = doc->ops;
    bool bad = false;
    fhir__node_t claim = NULL;
    size_t i = 0;
    for (fhir__node_t p = ops->first(doc->root, "parameter", &bad); p; p = ops->next(p), i++) {
        char path[64];
        snprintf(path, sizeof path, "Parameters.parameter[%zu]", i);
        if (!ops->is_object(p))
            return path_err(d, ERR_BAD_VALUE, path, "a parameter must be an object");
        const char *name = NULL;
        fhir__node_t nn = ops->get(p, "name", &bad);
        if (bad || !nn || ops->str(nn, &name) != FHIR__OK || !*name) {
            snprintf(path, sizeof path, "Parameters.parameter[%zu].name", i);
            return path_err(d, ERR_BAD_VALUE, path, "a parameter needs a name");
        }
        if (strcmp(name, "resource") == 0) {
            if (claim)
                return path_err(d, ERR_BAD_VALUE, path, "the resource parameter is given twice");
            snprintf(path, sizeof path, "Parameters.parameter[%zu].resource", i);
            fhir__node_t rc = ops->get(p, "resource", &bad);
            if (!bad && !rc)
                return path_err(d, ERR_EMPTY, path, "the resource parameter holds no resource");
            fhir__node_t res = rc ? ops->resource(rc, &bad) : NULL;
            const char *rt = res ? ops->resource_type(res) : NULL;
            if (bad || !rt)
                return path_err(d, ERR_BAD_VALUE, path, "not a resource");
            if (strcmp(rt, "Claim") != 0)
                return path_err(d, ERR_UNSUPPORTED, path,
                                "$validate here checks a Claim, not a %s",
                                safe_type(rt) ? rt : "resource of another type");
            claim = res;
        } else if (strcmp(name, "mode") == 0) {
            const char *mode = NULL;
            fhir__node_t v = ops->get(p, "valueCode", &bad);
            snprintf(path, sizeof path, "Parameters.parameter[%zu].valueCode", i);
            if (doc->mode[0])
                return path_err(d, ERR_BAD_VALUE, path, "mode is given twice");
            if (bad || !v || ops->str(v, &mode) != FHIR__OK ||
                (strcmp(mode, "create") != 0 && strcmp(mode, "update") != 0 &&
                 strcmp(mode, "delete") != 0))
                return path_err(d, ERR_BAD_VALUE, path, "mode is a code: create, update or delete");
            snprintf(doc->mode, sizeof doc->mode, "%s", mode);
        } else {
            snprintf(path, sizeof path, "Parameters.parameter[%zu].name", i);
            return path_err(d, ERR_UNSUPPORTED, path,
                            "parameter %s is not supported: give resource and optionally mode",
                            safe_type(name) ? name : "of that name");
        }
    }
    if (bad)
        return path_err(d, ERR_BAD_VALUE, "Parameters.parameter", "parameter must be an array");
    if (!claim)
        return path_err(d, ERR_EMPTY, "Parameters.parameter",
                        "no resource parameter: $validate needs the Claim in one");
    add_claim(doc, claim, 0);
    return ERR_OK;
}

err_t fhir_parse(const char *buf, size_t len, fhir_format_t fmt, const fhir_opts_t *o,
                 fhir_doc_t **out, err_detail_t *d)
{
    *out = NULL;
    err_clear(d);
    fhir_opts_t opts = o ? *o : (fhir_opts_t){0};
    if (!opts.max_size)
        opts.max_size = FHIR_DEFAULT_MAX_SIZE;
    if (opts.max_depth <= 0)
        opts.max_depth = FHIR_DEFAULT_MAX_DEPTH;
    if (opts.max_depth > FHIR_MAX_DEPTH_CEILING)
        opts.max_depth = FHIR_MAX_DEPTH_CEILING;
    if (!opts.max_claims)
        opts.max_claims = FHIR_DEFAULT_MAX_CLAIMS;
    if (!buf || len == 0)
        return err_set(d, ERR_EMPTY, 0, "empty FHIR document");
    if (len > opts.max_size)
        return err_set(d, ERR_TOO_LARGE, opts.max_size, "FHIR document over %zu bytes",
                       opts.max_size);

    fhir_doc_t *doc = xcalloc(1, sizeof *doc);
    doc->fmt = fmt;
    err_t e = fmt == FHIR_FMT_XML ? fhir__xml_parse(buf, len, &opts, doc, d)
                                  : fhir__json_parse(buf, len, &opts, doc, d);
    if (e) {
        fhir_doc_free(doc);
        return e;
    }
    const char *rt = doc->ops->resource_type(doc->root);
    if (rt && strcmp(rt, "Claim") == 0) {
        doc->rtype = "Claim";
        add_claim(doc, doc->root, 0);
    } else if (rt && strcmp(rt, "Bundle") == 0) {
        doc->rtype = "Bundle";
        e = index_bundle(doc, &opts, d);
    } else if (rt && strcmp(rt, "Parameters") == 0) {
        doc->rtype = "Parameters";
        e = index_parameters(doc, d);
    } else if (safe_type(rt)) {
        e = err_set(d, ERR_UNSUPPORTED, 0,
                    "resource type %s is not supported here: send a Claim, a Bundle of Claims, "
                    "or Parameters for $validate",
                    rt);
    } else {
        e = err_set(d, ERR_UNSUPPORTED, 0,
                    "not a FHIR resource (no valid resourceType): send a Claim or a Bundle");
    }
    if (e) {
        fhir_doc_free(doc);
        return e;
    }
    *out = doc;
    return ERR_OK;
}

const char *fhir_doc_resource_type(const fhir_doc_t *doc)
{
    return doc->rtype;
}

const char *fhir_doc_validate_mode(const fhir_doc_t *doc)
{
    return doc->mode;
}

size_t fhir_doc_entry_count(const fhir_doc_t *doc)
{
    return doc->nentries;
}

const char *fhir_doc_entry_type(const fhir_doc_t *doc, size_t n)
{
    if (n >= doc->nentries || !doc->entries[n].res)
        return NULL;
    return doc->ops->resource_type(doc->entries[n].res);
}

fhir_format_t fhir_doc_format(const fhir_doc_t *doc)
{
    return doc->fmt;
}

size_t fhir_doc_claim_count(const fhir_doc_t *doc)
{
    return doc->nclaims;
}

size_t fhir_doc_claim_entry(const fhir_doc_t *doc, size_t i)
{
    return i < doc->nclaims ? doc->claim_entry[i] : 0;
}

void fhir_doc_free(fhir_doc_t *doc)
{
    if (!doc)
        return;
    if (doc->tree) {
        if (doc->fmt == FHIR_FMT_XML)
            fhir__xml_free(doc->tree);
        else if (!doc->tree_in_arena)
            fhir__json_free(doc->tree);
    }
    arena_free(&doc->tree_arena);
    xfree(doc->claims);
    xfree(doc->claim_entry);
    xfree(doc->entries);
    xfree(doc);
}

/* ---- mapping one Claim ---------------------------------------------- */

typedef struct {
    const fhir_doc_t *doc;
    const fhir__ops_t *ops;
    fhir__node_t claim;
    arena_t *a;
    err_detail_t *d;
    char path[128];
    size_t plen;
} map_t;

/* Room for "[" SIZE_MAX "]". */
#define INDEX_TEXT 24

/* Appends the n bytes at s to the path, as many as it has room for. The
 * path is built on every step of every claim, and only read when an error
 * names it: plain copies, no printf. */
static void path_put(map_t *m, const char *s, size_t n)
{
    size_t room = sizeof m->path - 1 - m->plen;
    if (n > room)
        n = room;
    memcpy(m->path + m->plen, s, n);
    m->plen += n;
    m->path[m->plen] = '\0';
}

/* Path steps; each returns the length to restore with pop(). push: a step
 * as written (".code"); push_name: "." and a name; push_at: a step and an
 * array index ("[2]"). */
static size_t push(map_t *m, const char *step)
{
    size_t old = m->plen;
    path_put(m, step, strlen(step));
    return old;
}

static size_t push_name(map_t *m, const char *name)
{
    size_t old = m->plen;
    path_put(m, ".", 1);
    path_put(m, name, strlen(name));
    return old;
}

/* "[i]" into t (INDEX_TEXT bytes); returns its length. */
static size_t index_text(char t[INDEX_TEXT], size_t i)
{
    t[0] = '[';
    size_t n = 1 + str_udec(t + 1, i);
    t[n++] = ']';
    return n;
}

static size_t push_at(map_t *m, const char *step, size_t i)
{
    size_t old = push(m, step);
    char t[INDEX_TEXT];
    path_put(m, t, index_text(t, i));
    return old;
}

/* name[i] in the arena: where a diagnosis or an item of the claim is. */
static const char *indexed(arena_t *a, const char *name, size_t i)
{
    char t[INDEX_TEXT];
    size_t nn = strlen(name), nt = index_text(t, i);
    char *out = arena_alloc(a, nn + nt + 1);
    memcpy(out, name, nn);
    memcpy(out + nn, t, nt);
    out[nn + nt] = '\0';
    return out;
}

static void pop(map_t *m, size_t old)
{
    m->plen = old;
    m->path[old] = '\0';
}

/* ERR_BAD_VALUE at path.name (name may be NULL for the current node). */
static err_t bad(map_t *m, const char *name, const char *what)
{
    size_t old = name ? push_name(m, name) : m->plen;
    err_t e = path_err(m->d, ERR_BAD_VALUE, m->path, "%s", what);
    pop(m, old);
    return e;
}

static err_t get_obj(map_t *m, fhir__node_t obj, const char *name, fhir__node_t *out)
{
    bool b = false;
    *out = m->ops->get(obj, name, &b);
    if (b || (*out && !m->ops->is_object(*out))) {
        *out = NULL;
        return bad(m, name, "must be a single object");
    }
    return ERR_OK;
}

static err_t first(map_t *m, fhir__node_t obj, const char *name, fhir__node_t *out)
{
    bool b = false;
    *out = m->ops->first(obj, name, &b);
    return b ? bad(m, name, "must be an array") : ERR_OK;
}

/* A string primitive; *out NULL when absent. */
static err_t get_str(map_t *m, fhir__node_t obj, const char *name, const char **out)
{
    bool b = false;
    *out = NULL;
    fhir__node_t n = m->ops->get(obj, name, &b);
    if (b)
        return bad(m, name, "must be a single value");
    if (n && m->ops->str(n, out) == FHIR__BADTYPE) {
        *out = NULL;
        return bad(m, name, "must be a string");
    }
    return ERR_OK;
}

/* A positiveInt primitive node; *out 0 when it has no value. */
static err_t pos_int(map_t *m, fhir__node_t n, const char *name, int *out)
{
    double v = 0;
    *out = 0;
    int rc = m->ops->num(n, &v);
    if (rc == FHIR__ABSENT)
        return ERR_OK;
    if (rc != FHIR__OK || v != floor(v) || v < 1 || v > INT_MAX)
        return bad(m, name, "must be a positive integer");
    *out = (int)v;
    return ERR_OK;
}

static err_t get_pos_int(map_t *m, fhir__node_t obj, const char *name, int *out)
{
    bool b = false;
    *out = 0;
    fhir__node_t n = m->ops->get(obj, name, &b);
    if (b)
        return bad(m, name, "must be a single value");
    return n ? pos_int(m, n, name, out) : ERR_OK;
}

static err_t get_date(map_t *m, fhir__node_t obj, const char *name, claim_date_t *out)
{
    const char *s;
    memset(out, 0, sizeof *out);
    err_t e = get_str(m, obj, name, &s);
    if (e || !s)
        return e;
    if (!claim_date_parse(s, strlen(s), out))
        return bad(m, name, "must be a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD[Thh:mm:ss])");
    return ERR_OK;
}

static err_t get_period(map_t *m, fhir__node_t obj, const char *name, claim_date_t *from,
                        claim_date_t *to)
{
    fhir__node_t p;
    err_t e = get_obj(m, obj, name, &p);
    if (e || !p)
        return e;
    size_t old = push_name(m, name);
    e = get_date(m, p, "start", from);
    if (!e)
        e = get_date(m, p, "end", to);
    pop(m, old);
    return e;
}

typedef struct {
    const char *system, *code, *display;
} coding_t;

typedef int (*rank_fn)(const char *system);

/* A diagnosis: the ICD-10-CM coding; else a WHO ICD-10 one (so the rules
 * report the wrong code system, not an invalid CM code); else the first. */
static int dx_rank(const char *system)
{
    switch (claim_codesys_from(system, system ? strlen(system) : 0)) {
    case CODESYS_ICD10CM: return 3;
    case CODESYS_ICD10_WHO: return 2;
    default: return 1;
    }
}

static int proc_rank(const char *system)
{
    switch (claim_procsys_from(system, system ? strlen(system) : 0)) {
    case PROCSYS_CPT: return 5;
    case PROCSYS_HCPCS: return 4;
    case PROCSYS_ICD10PCS: return 3;
    case PROCSYS_UNKNOWN: return 2;
    default: return 1;
    }
}

static int first_rank(const char *system)
{
    return 1;
}

/* Reads the CodeableConcept cc (at path.name) and picks the coding with a
 * code that ranks highest (the first of equals); *text is CodeableConcept.text. */
static err_t read_cc(map_t *m, fhir__node_t cc, rank_fn rank, coding_t *best, const char **text)
{
    memset(best, 0, sizeof *best);
    if (text)
        *text = NULL;
    err_t e = text ? get_str(m, cc, "text", text) : ERR_OK;
    fhir__node_t c;
    if (e || (e = first(m, cc, "coding", &c)))
        return e;
    int best_rank = 0;
    for (size_t i = 0; c; c = m->ops->next(c), i++) {
        size_t old = push_at(m, ".coding", i);
        coding_t k;
        if (!m->ops->is_object(c))
            e = bad(m, NULL, "must be a Coding object");
        if (!e)
            e = get_str(m, c, "system", &k.system);
        if (!e)
            e = get_str(m, c, "code", &k.code);
        if (!e)
            e = get_str(m, c, "display", &k.display);
        pop(m, old);
        if (e)
            return e;
        int r = k.code ? rank(k.system) : 0;
        if (r > best_rank) {
            best_rank = r;
            *best = k;
        }
    }
    return ERR_OK;
}

static char *dup(map_t *m, const char *s)
{
    return s ? arena_strdup(m->a, s) : NULL;
}

static bool id_is(const fhir__ops_t *ops, fhir__node_t res, const char *id, size_t idlen)
{
    bool b = false;
    const char *v;
    fhir__node_t n = ops->get(res, "id", &b);
    return n && ops->str(n, &v) == FHIR__OK && strlen(v) == idlen && memcmp(v, id, idlen) == 0;
}

/* Finds the resource a Reference.reference names, inside the Claim
 * (contained, "#id") or in the Bundle (by fullUrl, or "Type/id" against
 * the entries' types and ids). NULL when it is elsewhere. */
static fhir__node_t resolve(map_t *m, const char *ref)
{
    const fhir__ops_t *ops = m->ops;
    bool b = false;
    if (ref[0] == '#') {
        for (fhir__node_t c = ops->first(m->claim, "contained", &b); c; c = ops->next(c)) {
            fhir__node_t r = ops->resource(c, &b);
            if (r && id_is(ops, r, ref + 1, strlen(ref + 1)))
                return r;
        }
        return NULL;
    }
    const fhir_doc_t *doc = m->doc;
    for (size_t i = 0; i < doc->nentries; i++)
        if (doc->entries[i].res && doc->entries[i].full_url &&
            strcmp(doc->entries[i].full_url, ref) == 0)
            return doc->entries[i].res;
    /* Relative "Type/id" or "Type/id/_history/v". */
    const char *slash = strchr(ref, '/');
    if (!slash || strchr(ref, ':'))
        return NULL;
    const char *id = slash + 1, *idend = strchr(id, '/');
    size_t tlen = (size_t)(slash - ref), idlen = idend ? (size_t)(idend - id) : strlen(id);
    for (size_t i = 0; i < doc->nentries; i++) {
        fhir__node_t r = doc->entries[i].res;
        const char *rt = r ? ops->resource_type(r) : NULL;
        if (rt && strlen(rt) == tlen && memcmp(rt, ref, tlen) == 0 && id_is(ops, r, id, idlen))
            return r;
    }
    return NULL;
}

/* Resolves the Reference at obj.name to a resource of type want, or NULL. */
static err_t get_ref(map_t *m, fhir__node_t obj, const char *name, const char *want,
                     fhir__node_t *out, const char **display)
{
    fhir__node_t r;
    const char *ref = NULL;
    *out = NULL;
    err_t e = get_obj(m, obj, name, &r);
    if (e || !r)
        return e;
    size_t old = push_name(m, name);
    e = get_str(m, r, "reference", &ref);
    if (!e && display)
        e = get_str(m, r, "display", display);
    if (!e && ref) {
        *out = resolve(m, ref);
        const char *rt = *out ? m->ops->resource_type(*out) : NULL;
        if (*out && (!rt || strcmp(rt, want) != 0)) {
            char msg[96];
            snprintf(msg, sizeof msg, "must refer to a %s", want);
            e = bad(m, "reference", msg);
        }
    }
    pop(m, old);
    return e;
}

static void set_dx_code(map_t *m, claim_t *c, claim_dx_t *dx, const coding_t *k)
{
    if (!k->code)
        return;
    dx->code_sent = dup(m, k->code);
    dx->system_sent = dup(m, k->system);
    dx->system = claim_codesys_from(k->system, k->system ? strlen(k->system) : 0);
    claim_code_normalise(k->code, strlen(k->code), dx->code, sizeof dx->code);
    if (dx->system == CODESYS_ICD10_WHO)
        c->has_who_icd10 = true;
}

static err_t map_dx_type(map_t *m, fhir__node_t dxn, claim_dx_type_t *out)
{
    fhir__node_t t;
    bool principal = false, admitting = false, other = false;
    err_t e = first(m, dxn, "type", &t);
    for (size_t i = 0; !e && t; t = m->ops->next(t), i++) {
        size_t old = push_at(m, ".type", i);
        fhir__node_t c = NULL;
        if (!m->ops->is_object(t))
            e = bad(m, NULL, "must be a CodeableConcept");
        else
            e = first(m, t, "coding", &c);
        for (size_t j = 0; !e && c; c = m->ops->next(c), j++) {
            coding_t k = {0};
            size_t o2 = push_at(m, ".coding", j);
            if (!m->ops->is_object(c))
                e = bad(m, NULL, "must be a Coding object");
            if (!e)
                e = get_str(m, c, "system", &k.system);
            if (!e)
                e = get_str(m, c, "code", &k.code);
            pop(m, o2);
            if (e || !k.code || (k.system && strcmp(k.system, DXTYPE_SYSTEM) != 0))
                continue;
            if (strcmp(k.code, "principal") == 0)
                principal = true;
            else if (strcmp(k.code, "admitting") == 0)
                admitting = true;
            else
                other = true;
        }
        pop(m, old);
    }
    *out = principal   ? DX_TYPE_PRINCIPAL
           : admitting ? DX_TYPE_ADMITTING
           : other     ? DX_TYPE_SECONDARY
                       : DX_TYPE_UNSPECIFIED;
    return e;
}

static err_t map_poa(map_t *m, fhir__node_t dxn, claim_poa_t *out)
{
    fhir__node_t cc;
    coding_t k;
    *out = POA_ABSENT;
    err_t e = get_obj(m, dxn, "onAdmission", &cc);
    if (e || !cc)
        return e;
    size_t old = push(m, ".onAdmission");
    e = read_cc(m, cc, first_rank, &k, NULL);
    pop(m, old);
    if (e || !k.code)
        return e;
    static const struct {
        const char *code;
        claim_poa_t poa;
    } poas[] = {{"y", POA_Y}, {"n", POA_N}, {"u", POA_U}, {"w", POA_W},
                {"1", POA_EXEMPT}, {"exempt", POA_EXEMPT}};
    for (size_t i = 0; i < sizeof poas / sizeof poas[0]; i++)
        if (strcasecmp(k.code, poas[i].code) == 0)
            *out = poas[i].poa;
    return ERR_OK;
}

static err_t map_dx(map_t *m, claim_t *c, fhir__node_t dxn, size_t idx)
{
    claim_dx_t *dx = claim_add_dx(c, m->a);
    dx->location = indexed(m->a, "Claim.diagnosis", idx);
    if (!m->ops->is_object(dxn))
        return bad(m, NULL, "must be an object");
    err_t e = get_pos_int(m, dxn, "sequence", &dx->sequence);
    if (e)
        return e;
    fhir__node_t cc, refobj;
    bool b = false;
    refobj = m->ops->get(dxn, "diagnosisReference", &b);
    if ((e = get_obj(m, dxn, "diagnosisCodeableConcept", &cc)))
        return e;
    if (cc && refobj)
        return bad(m, NULL, "has both diagnosisCodeableConcept and diagnosisReference");
    const char *text = NULL, *ref_display = NULL;
    coding_t k = {0};
    if (!cc && refobj) {
        fhir__node_t cond = NULL;
        if ((e = get_ref(m, dxn, "diagnosisReference", "Condition", &cond, &ref_display)))
            return e;
        if (cond) {
            size_t old = push(m, ".diagnosisReference.resolve().code");
            bool b2 = false;
            cc = m->ops->get(cond, "code", &b2);
            if (b2 || (cc && !m->ops->is_object(cc)))
                e = bad(m, NULL, "must be a CodeableConcept");
            else if (cc)
                e = read_cc(m, cc, dx_rank, &k, &text);
            pop(m, old);
            cc = NULL;
        }
    } else if (cc) {
        size_t old = push(m, ".diagnosisCodeableConcept");
        e = read_cc(m, cc, dx_rank, &k, &text);
        pop(m, old);
    }
    if (e)
        return e;
    /* The array may have moved in claim_add_dx: re-fetch by index. */
    dx = &c->dx[c->ndx - 1];
    set_dx_code(m, c, dx, &k);
    dx->text = dup(m, k.display ? k.display : text ? text : ref_display);
    if ((e = map_dx_type(m, dxn, &dx->type)))
        return e;
    return map_poa(m, dxn, &dx->poa);
}

static err_t map_line(map_t *m, claim_t *c, fhir__node_t it, size_t idx)
{
    claim_line_t *ln = claim_add_line(c, m->a);
    ln->location = indexed(m->a, "Claim.item", idx);
    if (!m->ops->is_object(it))
        return bad(m, NULL, "must be an object");
    err_t e = get_pos_int(m, it, "sequence", &ln->sequence);
    fhir__node_t n;
    coding_t k = {0};
    if (!e && !(e = get_obj(m, it, "productOrService", &n)) && n) {
        size_t old = push(m, ".productOrService");
        e = read_cc(m, n, proc_rank, &k, NULL);
        pop(m, old);
        if (!e && k.code) {
            ln->code = dup(m, k.code);
            ln->system_sent = dup(m, k.system);
            ln->system = claim_procsys_from(k.system, k.system ? strlen(k.system) : 0);
        }
    }
    if (!e)
        e = first(m, it, "modifier", &n);
    for (size_t i = 0; !e && n; n = m->ops->next(n), i++) {
        size_t old = push_at(m, ".modifier", i);
        if (!m->ops->is_object(n))
            e = bad(m, NULL, "must be a CodeableConcept");
        else if (ln->nmodifiers >= CLAIM_MAX_MODIFIERS)
            e = bad(m, NULL, "more than 4 modifiers on one item");
        else
            e = read_cc(m, n, first_rank, &k, NULL);
        if (!e && k.code)
            ln->modifiers[ln->nmodifiers++] = dup(m, k.code);
        pop(m, old);
    }
    if (!e)
        e = first(m, it, "diagnosisSequence", &n);
    for (size_t i = 0; !e && n; n = m->ops->next(n), i++) {
        size_t old = push_at(m, ".diagnosisSequence", i);
        int seq = 0;
        if (ln->ndx_pointers >= CLAIM_MAX_DX_POINTERS)
            e = bad(m, NULL, "more than 12 diagnosisSequence values on one item");
        else
            e = pos_int(m, n, NULL, &seq);
        if (!e && seq)
            ln->dx_pointers[ln->ndx_pointers++] = seq;
        pop(m, old);
    }
    if (!e && !(e = get_obj(m, it, "quantity", &n)) && n) {
        bool b = false;
        fhir__node_t v = m->ops->get(n, "value", &b);
        double units = 0;
        int rc = v ? m->ops->num(v, &units) : FHIR__ABSENT;
        if (b || rc == FHIR__BADTYPE)
            e = bad(m, "quantity.value", "must be a decimal");
        else if (rc == FHIR__OK)
            ln->units = units;
    }
    if (!e)
        e = get_date(m, it, "servicedDate", &ln->date_from);
    if (!e && ln->date_from.year) {
        ln->date_to = ln->date_from;
        bool b = false;
        if (m->ops->get(it, "servicedPeriod", &b) || b)
            e = bad(m, NULL, "has both servicedDate and servicedPeriod");
    } else if (!e) {
        e = get_period(m, it, "servicedPeriod", &ln->date_from, &ln->date_to);
    }
    return e;
}

static err_t map_patient(map_t *m, claim_t *c)
{
    fhir__node_t p;
    err_t e = get_ref(m, m->claim, "patient", "Patient", &p, NULL);
    if (e || !p)
        return e;
    const char *g;
    size_t old = push(m, ".patient.resolve()");
    e = get_str(m, p, "gender", &g);
    if (!e && g) {
        if (strcmp(g, "female") == 0)
            c->sex = 'F';
        else if (strcmp(g, "male") == 0)
            c->sex = 'M';
        else if (strcmp(g, "other") == 0 || strcmp(g, "unknown") == 0)
            c->sex = 'U';
        else
            e = bad(m, "gender", "must be male, female, other or unknown");
    }
    if (!e)
        e = get_date(m, p, "birthDate", &c->birth_date);
    pop(m, old);
    return e;
}

/* Claim.patient.reference and Claim.identifier[0].value, for the worklist's
 * lookup only: read leniently (a wrong shape is judged elsewhere or not at
 * all, and must not turn a claim away). */
static void map_refs(map_t *m, claim_t *c)
{
    bool b = false;
    const char *s = NULL;
    fhir__node_t p = m->ops->get(m->claim, "patient", &b);
    if (!b && p && m->ops->is_object(p)) {
        fhir__node_t r = m->ops->get(p, "reference", &b);
        if (!b && r && m->ops->str(r, &s) == FHIR__OK && s)
            c->ref_mrn = dup(m, s);
    }
    b = false;
    fhir__node_t id = m->ops->first(m->claim, "identifier", &b);
    if (!b && id && m->ops->is_object(id)) {
        s = NULL;
        fhir__node_t v = m->ops->get(id, "value", &b);
        if (!b && v && m->ops->str(v, &s) == FHIR__OK && s)
            c->ref_account = dup(m, s);
    }
}

/* ---- care setting ---------------------------------------------------- */

/* Claim.type: a coding of the claim-type system (or one without a system). */
static int claimtype_rank(const char *system)
{
    if (!system)
        return 1;
    return strcmp(system, CLAIMTYPE_SYSTEM) == 0 ? 2 : 0;
}

/* True when a coding of the CodeableConcept cc has this code (any system,
 * case folded). Shapes are checked as everywhere else. */
static err_t cc_has_code(map_t *m, fhir__node_t cc, const char *code, bool *out)
{
    fhir__node_t c;
    *out = false;
    err_t e = first(m, cc, "coding", &c);
    for (size_t i = 0; !e && c; c = m->ops->next(c), i++) {
        size_t old = push_at(m, ".coding", i);
        const char *k = NULL;
        if (!m->ops->is_object(c))
            e = bad(m, NULL, "must be a Coding object");
        else
            e = get_str(m, c, "code", &k);
        pop(m, old);
        if (!e && k && strcasecmp(k, code) == 0)
            *out = true;
    }
    return e;
}

/* What Claim.supportingInfo says about the stay: the type of bill (category
 * "typeofbill", the CARIN Blue Button convention; code as sent) and the
 * admission period (category "admissionperiod" or "hospitalized", with a
 * timingPeriod). */
typedef struct {
    const char *tob;
    bool admission;
    claim_date_t adm_from, adm_to;
} stay_t;

static err_t map_supporting_info(map_t *m, stay_t *st)
{
    fhir__node_t n;
    err_t e = first(m, m->claim, "supportingInfo", &n);
    for (size_t i = 0; !e && n; n = m->ops->next(n), i++) {
        size_t old = push_at(m, ".supportingInfo", i);
        fhir__node_t cat = NULL, code = NULL;
        bool tob = false, adm = false, hosp = false;
        if (!m->ops->is_object(n))
            e = bad(m, NULL, "must be an object");
        if (!e && !(e = get_obj(m, n, "category", &cat)) && cat) {
            size_t o2 = push(m, ".category");
            e = cc_has_code(m, cat, "typeofbill", &tob);
            if (!e)
                e = cc_has_code(m, cat, "admissionperiod", &adm);
            if (!e)
                e = cc_has_code(m, cat, "hospitalized", &hosp);
            pop(m, o2);
        }
        if (!e && tob && !st->tob && !(e = get_obj(m, n, "code", &code)) && code) {
            coding_t k;
            size_t o2 = push(m, ".code");
            e = read_cc(m, code, first_rank, &k, NULL);
            pop(m, o2);
            if (!e && k.code)
                st->tob = dup(m, k.code);
        }
        if (!e && (adm || hosp) && !st->admission) {
            claim_date_t from = {0, 0, 0}, to = {0, 0, 0};
            e = get_period(m, n, "timingPeriod", &from, &to);
            if (!e && (from.year || to.year)) {
                st->admission = true;
                st->adm_from = from;
                st->adm_to = to;
            }
        }
        pop(m, old);
    }
    return e;
}

/* Encounters are context, not the claim: read leniently, a shape that does
 * not fit says nothing. */
static const char *enc_str(const fhir__ops_t *ops, fhir__node_t obj, const char *name)
{
    bool b = false;
    const char *v = NULL;
    fhir__node_t n = obj ? ops->get(obj, name, &b) : NULL;
    return n && !b && ops->str(n, &v) == FHIR__OK ? v : NULL;
}

static bool inpatient_class(const char *code)
{
    return code && (strcmp(code, "IMP") == 0 || strcmp(code, "ACUTE") == 0 ||
                    strcmp(code, "NONAC") == 0);
}

/* Encounter.class: a Coding in R4; a CodeableConcept (repeating) in R5. */
static bool enc_inpatient(const fhir__ops_t *ops, fhir__node_t enc)
{
    bool b = false;
    fhir__node_t cls = ops->get(enc, "class", &b);
    if (cls && ops->is_object(cls) && inpatient_class(enc_str(ops, cls, "code")))
        return true;
    for (fhir__node_t cc = ops->first(enc, "class", &b); cc; cc = ops->next(cc)) {
        if (!ops->is_object(cc))
            continue;
        if (inpatient_class(enc_str(ops, cc, "code")))
            return true;
        bool b2 = false;
        for (fhir__node_t k = ops->first(cc, "coding", &b2); k; k = ops->next(k))
            if (ops->is_object(k) && inpatient_class(enc_str(ops, k, "code")))
                return true;
    }
    return false;
}

static claim_date_t enc_end(const fhir__ops_t *ops, fhir__node_t enc)
{
    claim_date_t d = {0, 0, 0};
    bool b = false;
    fhir__node_t p = ops->get(enc, "period", &b);
    const char *end = p && !b && ops->is_object(p) ? enc_str(ops, p, "end") : NULL;
    if (end)
        (void)claim_date_parse(end, strlen(end), &d);
    return d;
}

typedef struct {
    bool inpatient;         /* an Encounter of class IMP, ACUTE or NONAC */
    claim_date_t end;       /* the period end of the first such Encounter */
} enc_info_t;

static void enc_note(const fhir__ops_t *ops, fhir__node_t enc, enc_info_t *ei)
{
    const char *rt = enc ? ops->resource_type(enc) : NULL;
    if (!rt || strcmp(rt, "Encounter") != 0 || ei->inpatient || !enc_inpatient(ops, enc))
        return;
    ei->inpatient = true;
    ei->end = enc_end(ops, enc);
}

/* The Encounters of this Claim: those its items reference (contained or in
 * the Bundle), its contained ones, and, in a Bundle that holds this one
 * Claim only, every Encounter entry of the Bundle. */
static void map_encounters(map_t *m, enc_info_t *ei)
{
    const fhir__ops_t *ops = m->ops;
    bool b = false;
    for (fhir__node_t it = ops->first(m->claim, "item", &b); it; it = ops->next(it)) {
        if (!ops->is_object(it))
            continue;
        bool b2 = false;
        for (fhir__node_t r = ops->first(it, "encounter", &b2); r; r = ops->next(r)) {
            const char *ref = ops->is_object(r) ? enc_str(ops, r, "reference") : NULL;
            if (ref)
                enc_note(ops, resolve(m, ref), ei);
        }
    }
    for (fhir__node_t c = ops->first(m->claim, "contained", &b); c; c = ops->next(c)) {
        bool b2 = false;
        enc_note(ops, ops->resource(c, &b2), ei);
    }
    if (m->doc->nclaims == 1 && strcmp(m->doc->rtype, "Bundle") == 0)
        for (size_t i = 0; i < m->doc->nentries; i++)
            enc_note(ops, m->doc->entries[i].res, ei);
}

/* Claim.type, the type of bill, the admission period and the Encounters
 * give the care setting and the discharge date (docs/claim-mapping.md):
 *  - professional, oral, vision, pharmacy: outpatient (no DRG, the service
 *    date picks the code set), whatever the Encounter;
 *  - institutional, or no type: a valid type of bill decides (11x/12x
 *    inpatient, other 1xx-8xx outpatient); else an admission period, else
 *    an inpatient Encounter, makes it inpatient; else unknown.
 * The discharge is the admission period's end, else, for an inpatient
 * claim, the Encounter's period end, else billablePeriod.end. */
static err_t map_setting(map_t *m, claim_t *c)
{
    fhir__node_t t;
    coding_t k = {0};
    err_t e = get_obj(m, m->claim, "type", &t);
    if (!e && t) {
        size_t old = push(m, ".type");
        e = read_cc(m, t, claimtype_rank, &k, NULL);
        pop(m, old);
    }
    stay_t st = {0};
    if (!e)
        e = map_supporting_info(m, &st);
    if (e)
        return e;
    enc_info_t ei = {0};
    map_encounters(m, &ei);
    c->type_of_bill = st.tob;
    const char *type = k.code;
    if (type && (strcmp(type, "professional") == 0 || strcmp(type, "oral") == 0 ||
                 strcmp(type, "vision") == 0 || strcmp(type, "pharmacy") == 0)) {
        c->setting = CLAIM_SETTING_OUTPATIENT;
    } else if (!type || strcmp(type, "institutional") == 0) {
        c->setting = claim_tob_setting(st.tob);
        if (c->setting == CLAIM_SETTING_UNKNOWN && (st.admission || ei.inpatient))
            c->setting = CLAIM_SETTING_INPATIENT;
    }
    if (st.adm_to.year)
        c->discharge = st.adm_to;
    else if (c->setting == CLAIM_SETTING_INPATIENT)
        c->discharge = ei.end.year ? ei.end : c->service_to;
    return ERR_OK;
}

static err_t map_claim(map_t *m, claim_t *c)
{
    fhir__node_t n;
    const char *id;
    err_t e = get_str(m, m->claim, "id", &id);
    if (e)
        return e;
    c->id = dup(m, id);
    c->message_type = "Claim";
    if ((e = get_period(m, m->claim, "billablePeriod", &c->service_from, &c->service_to)))
        return e;
    if ((e = map_patient(m, c)))
        return e;
    map_refs(m, c);
    if ((e = first(m, m->claim, "diagnosis", &n)))
        return e;
    for (size_t i = 0; n; n = m->ops->next(n), i++) {
        size_t old = push_at(m, ".diagnosis", i);
        e = map_dx(m, c, n, i);
        pop(m, old);
        if (e)
            return e;
    }
    if ((e = first(m, m->claim, "item", &n)))
        return e;
    for (size_t i = 0; n; n = m->ops->next(n), i++) {
        size_t old = push_at(m, ".item", i);
        e = map_line(m, c, n, i);
        pop(m, old);
        if (e)
            return e;
    }
    return map_setting(m, c);
}

err_t fhir_doc_claim(const fhir_doc_t *doc, size_t i, arena_t *a, claim_t **out,
                     err_detail_t *d)
{
    *out = NULL;
    err_clear(d);
    if (i >= doc->nclaims)
        return err_set(d, ERR_NOT_FOUND, 0, "no Claim number %zu in the document", i);
    map_t m = {.doc = doc, .ops = doc->ops, .claim = doc->claims[i], .a = a, .d = d};
    push(&m, "Claim");
    claim_t *c = claim_new(a, doc->fmt == FHIR_FMT_XML ? CLAIM_SRC_FHIR_XML : CLAIM_SRC_FHIR_JSON);
    err_t e = map_claim(&m, c);
    if (e)
        return e;
    *out = c;
    return ERR_OK;
}
