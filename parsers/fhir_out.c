/* fhir_out.c - the FHIR writers. Each resource is first built once as a
 * small format-neutral tree (w_t, in the caller's arena, already in FHIR
 * element order), then rendered through cJSON or libxml2, so the JSON and
 * XML forms cannot say different things. The annotated Claim is the
 * document's own cJSON/libxml2 tree with extension subtrees added.
 * Outputs are copied into the caller's arena; library buffers are freed here.
 */
#include <cjson/cJSON.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <string.h>

#include "fhir_int.h"
#include "fhir_out.h"
#include "xmalloc.h"

#define FHIR_NS "http://hl7.org/fhir"

/* ---- the neutral tree ------------------------------------------------ */

typedef enum {
    W_OBJ,  /* complex element */
    W_STR,  /* string-valued primitive */
    W_LIT,  /* JSON literal primitive: number or boolean */
    W_ATTR, /* XML attribute / JSON string property (Extension.url) */
    W_RES,  /* a resource: JSON object with resourceType; XML <name><Type> */
} w_kind_t;

typedef struct w w_t;
struct w {
    const char *name; /* property name; NULL for the root resource */
    const char *val;  /* primitive value, or resource type for W_RES */
    w_kind_t kind;
    bool array;       /* a repeating element: JSON array, XML repeats */
    w_t *first, *last, *next;
};

static w_t *w_add(arena_t *a, w_t *parent, const char *name, w_kind_t kind, const char *val,
                  bool array)
{
    w_t *n = arena_calloc(a, 1, sizeof *n);
    n->name = name;
    n->kind = kind;
    n->val = val;
    n->array = array;
    if (parent) {
        if (parent->last)
            parent->last->next = n;
        else
            parent->first = n;
        parent->last = n;
    }
    return n;
}

static w_t *w_obj(arena_t *a, w_t *p, const char *name, bool array)
{
    return w_add(a, p, name, W_OBJ, NULL, array);
}

static void w_str(arena_t *a, w_t *p, const char *name, const char *val, bool array)
{
    if (val)
        w_add(a, p, name, W_STR, val, array);
}

static cJSON *to_json(const w_t *n)
{
    if (n->kind == W_STR || n->kind == W_ATTR)
        return cJSON_CreateString(n->val);
    if (n->kind == W_LIT)
        return cJSON_CreateRaw(n->val);
    cJSON *o = cJSON_CreateObject();
    if (n->kind == W_RES)
        cJSON_AddStringToObject(o, "resourceType", n->val);
    for (const w_t *c = n->first; c; c = c->next) {
        cJSON *v = to_json(c);
        if (c->array) {
            cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, c->name);
            if (!arr)
                arr = cJSON_AddArrayToObject(o, c->name);
            cJSON_AddItemToArray(arr, v);
        } else {
            cJSON_AddItemToObject(o, c->name, v);
        }
    }
    return o;
}

/* Renders n as a new element (not yet linked) of doc in namespace ns. */
static xmlNodePtr to_xml(xmlDocPtr doc, xmlNsPtr ns, const w_t *n)
{
    xmlNodePtr el = xmlNewDocNode(doc, ns, BAD_CAST(n->name ? n->name : n->val), NULL);
    if (n->kind == W_STR || n->kind == W_LIT) {
        xmlNewProp(el, BAD_CAST "value", BAD_CAST n->val);
        return el;
    }
    xmlNodePtr body = el;
    if (n->kind == W_RES && n->name) {
        body = xmlNewDocNode(doc, ns, BAD_CAST n->val, NULL);
        xmlAddChild(el, body);
    }
    for (const w_t *c = n->first; c; c = c->next) {
        if (c->kind == W_ATTR)
            xmlNewProp(body, BAD_CAST c->name, BAD_CAST c->val);
        else
            xmlAddChild(body, to_xml(doc, ns, c));
    }
    return el;
}

/* j as compact text in a. Printed outside any arena: cJSON's print buffer
 * doubles by copying, and every copy would stay in the arena. */
static void emit_json(cJSON *j, arena_t *a, slice_t *out)
{
    char *s = cJSON_PrintUnformatted(j);
    size_t n = strlen(s);
    out->ptr = arena_strndup(a, s, n);
    out->len = n;
    cJSON_free(s);
}

static void emit_xmldoc(xmlDocPtr doc, arena_t *a, slice_t *out)
{
    xmlChar *mem = NULL;
    int n = 0;
    xmlDocDumpMemoryEnc(doc, &mem, &n, "UTF-8");
    out->ptr = arena_strndup(a, (const char *)mem, (size_t)n);
    out->len = (size_t)n;
    xmlFree(mem);
}

/* Renders a root resource. */
static void render(const w_t *res, fhir_format_t fmt, arena_t *a, slice_t *out)
{
    if (fmt == FHIR_FMT_JSON) {
        /* The tree is built in a where cJSON allocates through xmalloc:
         * it is printed once and dropped with a. */
        bool in_arena = xmalloc_cjson_hooked();
        arena_t *before = in_arena ? xmalloc_cjson_arena(a) : NULL;
        cJSON *j = to_json(res);
        if (in_arena)
            xmalloc_cjson_arena(before);
        emit_json(j, a, out);
        if (!in_arena)
            cJSON_Delete(j);
        return;
    }
    xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
    xmlNodePtr root = xmlNewDocNode(doc, NULL, BAD_CAST res->val, NULL);
    xmlNsPtr ns = xmlNewNs(root, BAD_CAST FHIR_NS, NULL);
    xmlSetNs(root, ns);
    xmlDocSetRootElement(doc, root);
    for (const w_t *c = res->first; c; c = c->next)
        xmlAddChild(root, to_xml(doc, ns, c));
    emit_xmldoc(doc, a, out);
    xmlFreeDoc(doc);
}

/* ---- OperationOutcome ------------------------------------------------ */

static const char *issue_severity(rule_severity_t s)
{
    switch (s) {
    case RULE_SEV_REJECT: return "error";
    case RULE_SEV_WARN: return "warning";
    default: return "information";
    }
}

/* FHIRPath locations go to expression; others (HL7 "DG1(2)-3") to location. */
static bool is_fhirpath(const char *loc)
{
    return strncmp(loc, "Claim", 5) == 0 || strncmp(loc, "Bundle", 6) == 0;
}

static void add_verdict_issues(arena_t *a, w_t *oo, const rule_verdict_t *v)
{
    size_t n = v ? v->nfindings : 0;
    if (n == 0) {
        w_t *is = w_obj(a, oo, "issue", true);
        w_str(a, is, "severity", "information", false);
        w_str(a, is, "code", "informational", false);
        w_str(a, is, "diagnostics", "All OK: no coding rule found a problem", false);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const rule_finding_t *f = &v->findings[i];
        w_t *is = w_obj(a, oo, "issue", true);
        w_str(a, is, "severity", issue_severity(f->severity), false);
        w_str(a, is, "code", f->code_invalid ? "code-invalid" : "business-rule", false);
        w_t *det = w_obj(a, is, "details", false);
        w_t *cd = w_obj(a, det, "coding", true);
        w_str(a, cd, "system", FHIR_OUT_RULE_SYSTEM, false);
        w_str(a, cd, "code", f->rule_id ? f->rule_id : "unknown", false);
        w_str(a, cd, "display", f->message, false);
        const char *diag = f->message ? f->message : f->rule_id;
        if (f->suggestion)
            diag = arena_printf(a, "%s Consider: %s", diag ? diag : "", f->suggestion);
        w_str(a, is, "diagnostics", diag, false);
        if (f->location && *f->location) {
            w_str(a, is, is_fhirpath(f->location) ? "expression" : "location", f->location,
                  true);
        }
    }
}

static w_t *verdict_outcome(arena_t *a, const char *name, const rule_verdict_t *v)
{
    w_t *oo = w_add(a, NULL, name, W_RES, "OperationOutcome", false);
    add_verdict_issues(a, oo, v);
    return oo;
}

void fhir_out_outcome_verdict(const rule_verdict_t *v, fhir_format_t fmt, arena_t *a,
                              slice_t *out)
{
    render(verdict_outcome(a, NULL, v), fmt, a, out);
}

static const char *issue_type(err_t e)
{
    switch (e) {
    case ERR_BAD_JSON:
    case ERR_BAD_XML:
    case ERR_NUL_BYTE:
    case ERR_TRUNCATED: return "structure";
    case ERR_TOO_LARGE: return "too-long";
    case ERR_TOO_DEEP: return "too-costly";
    case ERR_UNSUPPORTED: return "not-supported";
    case ERR_BAD_VALUE: return "value";
    case ERR_EMPTY: return "required";
    case ERR_NOT_FOUND: return "not-found";
    case ERR_BUSY:
    case ERR_QUEUE: return "transient";
    case ERR_TIMEOUT: return "timeout";
    case ERR_PROTOCOL: return "invalid";
    case ERR_UNAUTHORIZED: return "login";
    case ERR_FORBIDDEN: return "forbidden";
    default: return "exception";
    }
}

static w_t *error_outcome(arena_t *a, const char *name, const err_detail_t *d)
{
    w_t *oo = w_add(a, NULL, name, W_RES, "OperationOutcome", false);
    w_t *is = w_obj(a, oo, "issue", true);
    w_str(a, is, "severity", "error", false);
    w_str(a, is, "code", issue_type(d->code), false);
    w_t *det = w_obj(a, is, "details", false);
    w_str(a, det, "text", err_str(d->code), false);
    w_str(a, is, "diagnostics", d->msg[0] ? d->msg : err_str(d->code), false);
    if (d->where[0])
        w_str(a, is, is_fhirpath(d->where) ? "expression" : "location", arena_strdup(a, d->where),
              true);
    return oo;
}

void fhir_out_outcome_error(const err_detail_t *d, fhir_format_t fmt, arena_t *a, slice_t *out)
{
    render(error_outcome(a, NULL, d), fmt, a, out);
}

/* ---- batch / transaction response ------------------------------------ */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return NULL;
    }
}

void fhir_out_batch_response(bool transaction, const fhir_out_entry_t *entries, size_t n,
                             fhir_format_t fmt, arena_t *a, slice_t *out)
{
    w_t *b = w_add(a, NULL, NULL, W_RES, "Bundle", false);
    w_str(a, b, "type", transaction ? "transaction-response" : "batch-response", false);
    for (size_t i = 0; i < n; i++) {
        const fhir_out_entry_t *e = &entries[i];
        w_t *en = w_obj(a, b, "entry", true);
        w_t *r = w_obj(a, en, "response", false);
        const char *rs = reason(e->status);
        w_str(a, r, "status",
              rs ? arena_printf(a, "%d %s", e->status, rs) : arena_printf(a, "%d", e->status),
              false);
        w_str(a, r, "location", e->location, false);
        w_t *oo = NULL;
        if (e->error)
            oo = error_outcome(a, "outcome", e->error);
        else if (e->verdict)
            oo = verdict_outcome(a, "outcome", e->verdict);
        else if (e->note) {
            oo = w_add(a, NULL, "outcome", W_RES, "OperationOutcome", false);
            w_t *is = w_obj(a, oo, "issue", true);
            w_str(a, is, "severity", "information", false);
            w_str(a, is, "code", "informational", false);
            w_str(a, is, "diagnostics", e->note, false);
        }
        if (oo) {
            if (r->last)
                r->last->next = oo;
            else
                r->first = oo;
            r->last = oo;
        }
    }
    render(b, fmt, a, out);
}

/* ---- CapabilityStatement --------------------------------------------- */

void fhir_out_capability(const fhir_out_capability_t *c, fhir_format_t fmt, arena_t *a,
                         slice_t *out)
{
    const char *name = c->software_name ? c->software_name : "spinegate";
    w_t *cs = w_add(a, NULL, NULL, W_RES, "CapabilityStatement", false);
    w_str(a, cs, "status", "active", false);
    w_str(a, cs, "date", c->date ? c->date : "2025-01-01", false);
    w_str(a, cs, "kind", "instance", false);
    w_t *sw = w_obj(a, cs, "software", false);
    w_str(a, sw, "name", name, false);
    w_str(a, sw, "version", c->software_version, false);
    w_t *impl = w_obj(a, cs, "implementation", false);
    w_str(a, impl, "description",
          arena_printf(a, "%s: pre-billing gate for spine ICD-10-CM diagnosis coding", name),
          false);
    w_str(a, impl, "url", c->base_url, false);
    w_str(a, cs, "fhirVersion", "4.0.1", false);
    /* What a request may send and what Accept / _format may ask for. */
    w_str(a, cs, "format", "application/fhir+json", true);
    w_str(a, cs, "format", "application/fhir+xml", true);
    w_str(a, cs, "format", "application/json", true);
    w_str(a, cs, "format", "application/xml", true);
    w_str(a, cs, "format", "text/xml", true);
    w_str(a, cs, "format", "json", true);
    w_str(a, cs, "format", "xml", true);
    w_t *rest = w_obj(a, cs, "rest", true);
    w_str(a, rest, "mode", "server", false);
    if (c->security && *c->security) {
        w_t *sec = w_obj(a, rest, "security", false);
        w_str(a, sec, "description", c->security, false);
    }
    w_t *res = w_obj(a, rest, "resource", true);
    w_str(a, res, "type", "Claim", false);
    w_t *in = w_obj(a, res, "interaction", true);
    w_str(a, in, "code", "create", false);
    w_t *op = w_obj(a, res, "operation", true);
    w_str(a, op, "name", "validate", false);
    w_str(a, op, "definition", "http://hl7.org/fhir/OperationDefinition/Resource-validate", false);
    in = w_obj(a, rest, "interaction", true);
    w_str(a, in, "code", "batch", false);
    in = w_obj(a, rest, "interaction", true);
    w_str(a, in, "code", "transaction", false);
    /* [base]/$validate takes the same Claim or Parameters as Claim/$validate. */
    op = w_obj(a, rest, "operation", true);
    w_str(a, op, "name", "validate", false);
    w_str(a, op, "definition", "http://hl7.org/fhir/OperationDefinition/Resource-validate", false);
    render(cs, fmt, a, out);
}

/* ---- annotated Claim ------------------------------------------------- */

static w_t *finding_ext(arena_t *a, const rule_finding_t *f)
{
    w_t *ext = w_obj(a, NULL, "extension", true);
    w_add(a, ext, "url", W_ATTR, FHIR_OUT_EXT_FINDING, false);
    typedef struct {
        const char *url, *type, *val;
    } sub_t;
    sub_t subs[4 + RULE_MAX_CODES] = {
        {"rule", "valueCode", f->rule_id ? f->rule_id : "unknown"},
        {"severity", "valueCode", rule_severity_name(f->severity)},
        {"message", "valueString", f->message},
    };
    size_t ns = 3;
    for (int k = 0; k < f->ncodes && k < RULE_MAX_CODES; k++)
        subs[ns++] = (sub_t){"code", "valueString", f->codes[k]};
    subs[ns++] = (sub_t){"suggestion", "valueString", f->suggestion};
    for (size_t k = 0; k < ns; k++) {
        if (!subs[k].val || !*subs[k].val)
            continue;
        w_t *s = w_obj(a, ext, "extension", true);
        w_add(a, s, "url", W_ATTR, subs[k].url, false);
        w_str(a, s, subs[k].type, subs[k].val, false);
    }
    if (f->reference && *f->reference) {
        w_t *s = w_obj(a, ext, "extension", true);
        w_add(a, s, "url", W_ATTR, "reference", false);
        w_str(a, s, "valueString", f->reference, false);
    }
    if (f->location && *f->location) {
        w_t *s = w_obj(a, ext, "extension", true);
        w_add(a, s, "url", W_ATTR, "location", false);
        w_str(a, s, "valueString", f->location, false);
    }
    return ext;
}

/* JSON: appends ext to obj.extension (made when missing). */
static void json_attach(cJSON *obj, const w_t *ext)
{
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, "extension");
    if (!cJSON_IsArray(arr)) {
        cJSON_DeleteItemFromObjectCaseSensitive(obj, "extension");
        arr = cJSON_AddArrayToObject(obj, "extension");
    }
    cJSON_AddItemToArray(arr, to_json(ext));
}

static bool xml_is(const xmlNode *n, const char *name)
{
    return n->type == XML_ELEMENT_NODE && n->ns && n->ns->href &&
           strcmp((const char *)n->ns->href, FHIR_NS) == 0 && strcmp((const char *)n->name, name) == 0;
}

/* XML: FHIR element order puts extension after the resource's id, meta,
 * implicitRules, language, text and contained (DomainResource) and first
 * in a BackboneElement; it goes after the last of those present, after
 * any extension already there. */
static void xml_attach(xmlNodePtr obj, bool resource, const w_t *ext)
{
    static const char *const before_res[] = {"id",   "meta",      "implicitRules", "language",
                                             "text", "contained", "extension",     NULL};
    static const char *const before_bb[] = {"extension", NULL};
    const char *const *before = resource ? before_res : before_bb;
    xmlNodePtr after = NULL;
    for (xmlNodePtr c = obj->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        bool hit = false;
        for (const char *const *b = before; *b; b++)
            hit = hit || xml_is(c, *b);
        if (!hit)
            break;
        after = c;
    }
    xmlNodePtr node = to_xml(obj->doc, obj->ns, ext);
    if (after) {
        xmlAddNextSibling(after, node);
    } else {
        xmlNodePtr firstel = obj->children;
        while (firstel && firstel->type != XML_ELEMENT_NODE)
            firstel = firstel->next;
        if (firstel)
            xmlAddPrevSibling(firstel, node);
        else
            xmlAddChild(obj, node);
    }
}

/* The k-th item of the repeating child `name` of obj, or NULL. */
static fhir__node_t nth(const fhir__ops_t *ops, fhir__node_t obj, const char *name, int k)
{
    bool bad = false;
    fhir__node_t n = ops->first(obj, name, &bad);
    for (int i = 0; n && i < k; i++)
        n = ops->next(n);
    return n;
}

static bool ours(const char *url)
{
    return url && strncmp(url, FHIR_OUT_EXT_BASE, strlen(FHIR_OUT_EXT_BASE)) == 0;
}

/* JSON: removes obj.extension items whose url is under FHIR_OUT_EXT_BASE,
 * and the array itself when nothing else is left (FHIR has no empty arrays). */
static void json_strip(cJSON *obj)
{
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, "extension");
    if (!cJSON_IsArray(arr))
        return;
    for (cJSON *x = arr->child, *next; x; x = next) {
        next = x->next;
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(x, "url");
        if (cJSON_IsString(u) && ours(u->valuestring))
            cJSON_Delete(cJSON_DetachItemViaPointer(arr, x));
    }
    if (!arr->child)
        cJSON_DeleteItemFromObjectCaseSensitive(obj, "extension");
}

/* XML: removes the <extension> children of obj whose url is ours. */
static void xml_strip(xmlNodePtr obj)
{
    for (xmlNodePtr c = obj->children, next; c; c = next) {
        next = c->next;
        if (!xml_is(c, "extension"))
            continue;
        xmlChar *u = xmlGetProp(c, BAD_CAST "url");
        bool mine = u && ours((const char *)u);
        xmlFree(u);
        if (mine) {
            xmlUnlinkNode(c);
            xmlFreeNode(c);
        }
    }
}

static void strip_node(const fhir_doc_t *doc, fhir__node_t n)
{
    if (!n || !doc->ops->is_object(n))
        return;
    if (doc->fmt == FHIR_FMT_XML)
        xml_strip((xmlNodePtr)n);
    else
        json_strip((cJSON *)n);
}

/* A JSON tree parsed into the document's arena (fhir_json.c) is edited
 * there too: the nodes added go with the document, the nodes taken out
 * stay until it goes. Returns what tree_edit_end() restores. */
static arena_t *tree_edit_begin(fhir_doc_t *doc)
{
    return doc->tree_in_arena ? xmalloc_cjson_arena(&doc->tree_arena) : NULL;
}

static void tree_edit_end(fhir_doc_t *doc, arena_t *before)
{
    if (doc->tree_in_arena)
        xmalloc_cjson_arena(before);
}

err_t fhir_out_strip(fhir_doc_t *doc, size_t i)
{
    if (i >= doc->nclaims)
        return ERR_NOT_FOUND;
    arena_t *before = tree_edit_begin(doc);
    fhir__node_t claim = doc->claims[i];
    strip_node(doc, claim);
    static const char *const kids[] = {"diagnosis", "item"};
    for (size_t k = 0; k < 2; k++) {
        bool bad = false;
        for (fhir__node_t n = doc->ops->first(claim, kids[k], &bad); n; n = doc->ops->next(n))
            strip_node(doc, n);
    }
    tree_edit_end(doc, before);
    return ERR_OK;
}

/* The header extension: what judged the Claim and what it found. */
static w_t *header_ext(arena_t *a, const rule_verdict_t *v, const char *rule_pack)
{
    w_t *ext = w_obj(a, NULL, "extension", true);
    w_add(a, ext, "url", W_ATTR, FHIR_OUT_EXT_ANNOTATION, false);
    w_t *s = w_obj(a, ext, "extension", true);
    w_add(a, s, "url", W_ATTR, "verdict", false);
    w_str(a, s, "valueCode", verdict_name(v ? v->kind : VERDICT_ACCEPT), false);
    if (rule_pack && *rule_pack) {
        s = w_obj(a, ext, "extension", true);
        w_add(a, s, "url", W_ATTR, "rulePack", false);
        w_str(a, s, "valueString", rule_pack, false);
    }
    /* One codeSet a table used: two when dated lines span two years. */
    for (size_t i = 0; v && i < rule_verdict_ncode_sets(v); i++) {
        s = w_obj(a, ext, "extension", true);
        w_add(a, s, "url", W_ATTR, "codeSet", false);
        w_str(a, s, "valueString", rule_verdict_code_set_at(v, i), false);
    }
    s = w_obj(a, ext, "extension", true);
    w_add(a, s, "url", W_ATTR, "findings", false);
    w_add(a, s, "valueUnsignedInt", W_LIT, arena_printf(a, "%zu", v ? v->nfindings : 0), false);
    return ext;
}

err_t fhir_out_annotate_pack(fhir_doc_t *doc, size_t i, const rule_verdict_t *v,
                             const char *rule_pack)
{
    if (fhir_out_strip(doc, i) != ERR_OK)
        return ERR_NOT_FOUND;
    arena_t a;
    arena_init(&a, 0);
    fhir__node_t claim = doc->claims[i];
    bool xml = doc->fmt == FHIR_FMT_XML;
    arena_t *before = tree_edit_begin(doc);
    w_t *hx = header_ext(&a, v, rule_pack);
    w_t *vx = w_obj(&a, NULL, "extension", true);
    w_add(&a, vx, "url", W_ATTR, FHIR_OUT_EXT_VERDICT, false);
    w_str(&a, vx, "valueCode", verdict_name(v ? v->kind : VERDICT_ACCEPT), false);
    if (xml) {
        xml_attach((xmlNodePtr)claim, true, hx);
        xml_attach((xmlNodePtr)claim, true, vx);
    } else {
        json_attach((cJSON *)claim, hx);
        json_attach((cJSON *)claim, vx);
    }
    for (size_t k = 0; v && k < v->nfindings; k++) {
        const rule_finding_t *f = &v->findings[k];
        fhir__node_t target = NULL;
        if (f->dx_index >= 0)
            target = nth(doc->ops, claim, "diagnosis", f->dx_index);
        else if (f->line_index >= 0)
            target = nth(doc->ops, claim, "item", f->line_index);
        bool on_claim = !target || !doc->ops->is_object(target);
        if (on_claim)
            target = claim;
        w_t *ext = finding_ext(&a, f);
        if (xml)
            xml_attach((xmlNodePtr)target, on_claim, ext);
        else
            json_attach((cJSON *)target, ext);
    }
    tree_edit_end(doc, before);
    arena_free(&a);
    return ERR_OK;
}

err_t fhir_out_annotate(fhir_doc_t *doc, size_t i, const rule_verdict_t *v)
{
    return fhir_out_annotate_pack(doc, i, v, NULL);
}

static void xml_node_out(const xmlNode *node, arena_t *a, slice_t *out)
{
    if (node == xmlDocGetRootElement(node->doc)) {
        emit_xmldoc(node->doc, a, out);
        return;
    }
    /* A Claim inside a Bundle: copied into a document of its own; libxml2
     * re-declares the FHIR namespace on the copy's root. */
    xmlDocPtr d = xmlNewDoc(BAD_CAST "1.0");
    xmlNodePtr copy = xmlDocCopyNode((xmlNodePtr)node, d, 1);
    xmlDocSetRootElement(d, copy);
    xmlReconciliateNs(d, copy);
    emit_xmldoc(d, a, out);
    xmlFreeDoc(d);
}

err_t fhir_out_claim(const fhir_doc_t *doc, size_t i, arena_t *a, slice_t *out)
{
    if (i >= doc->nclaims)
        return ERR_NOT_FOUND;
    if (doc->fmt == FHIR_FMT_XML)
        xml_node_out(doc->claims[i], a, out);
    else
        emit_json((cJSON *)doc->claims[i], a, out);
    return ERR_OK;
}

void fhir_out_pretty(slice_t in, fhir_format_t fmt, arena_t *a, slice_t *out)
{
    *out = in;
    if (fmt == FHIR_FMT_JSON) {
        cJSON *j = cJSON_ParseWithLength(in.ptr, in.len);
        if (!j)
            return;
        char *p = cJSON_Print(j);
        size_t n = strlen(p);
        out->ptr = arena_strndup(a, p, n);
        out->len = n;
        cJSON_free(p);
        cJSON_Delete(j);
        return;
    }
    /* Our own output: no DTD, no entities; XML_PARSE_NONET all the same. */
    xmlDocPtr d = xmlReadMemory(in.ptr, (int)in.len, NULL, "UTF-8",
                                XML_PARSE_NONET | XML_PARSE_NOBLANKS);
    if (!d)
        return;
    xmlChar *mem = NULL;
    int n = 0;
    xmlDocDumpFormatMemoryEnc(d, &mem, &n, "UTF-8", 1);
    out->ptr = arena_strndup(a, (const char *)mem, (size_t)n);
    out->len = (size_t)n;
    xmlFree(mem);
    xmlFreeDoc(d);
}

void fhir_out_doc(const fhir_doc_t *doc, arena_t *a, slice_t *out)
{
    if (doc->fmt == FHIR_FMT_XML)
        emit_xmldoc((xmlDocPtr)doc->tree, a, out);
    else
        emit_json((cJSON *)doc->root, a, out);
}
