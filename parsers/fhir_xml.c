/* fhir_xml.c - FHIR XML: the guarded libxml2 parse and the tree accessors the
 * shared mapping walks (fhir__xml_ops).
 *
 * The xmlDoc is owned by the fhir_doc_t and freed by fhir__xml_free();
 * accessors return borrowed xmlNode pointers into it. Only elements in the
 * FHIR namespace count; values are read from `value` attributes in place.
 */
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_int.h"

#define FHIR_NS "http://hl7.org/fhir"

/* Parse guard, reached through ctxt->_private. libxml2 has its own depth
 * limit (256), but ours is configurable and gives ERR_TOO_DEEP; the
 * DOCTYPE hook stops the parser before any entity declaration is read, so
 * neither entity expansion nor external loading can happen at all. */
typedef struct {
    int depth, max_depth;
    bool too_deep, doctype;
    startElementNsSAX2Func start;
    endElementNsSAX2Func end;
} guard_t;

static void guard_start(void *ctx, const xmlChar *localname, const xmlChar *prefix,
                        const xmlChar *uri, int nb_namespaces, const xmlChar **namespaces,
                        int nb_attributes, int nb_defaulted, const xmlChar **attributes)
{
    xmlParserCtxtPtr p = ctx;
    guard_t *g = p->_private;
    if (++g->depth > g->max_depth) {
        g->too_deep = true;
        xmlStopParser(p);
        return;
    }
    g->start(ctx, localname, prefix, uri, nb_namespaces, namespaces, nb_attributes, nb_defaulted,
             attributes);
}

static void guard_end(void *ctx, const xmlChar *localname, const xmlChar *prefix,
                      const xmlChar *uri)
{
    xmlParserCtxtPtr p = ctx;
    guard_t *g = p->_private;
    g->depth--;
    g->end(ctx, localname, prefix, uri);
}

static void guard_dtd(void *ctx, const xmlChar *name, const xmlChar *ext, const xmlChar *sys)
{
    xmlParserCtxtPtr p = ctx;
    guard_t *g = p->_private;
    g->doctype = true;
    xmlStopParser(p);
}

/* libxml2 reports some errors (encoding conversion, I/O) through its
 * generic handler whatever the parse options, quoting input bytes: that is
 * message content, so it is silenced for the duration of a parse. */
static void silent_generic(void *ctx, const char *fmt, ...)
{
}

static void silent_structured(void *ctx, xmlErrorPtr err)
{
}

static bool is_fhir(const xmlNode *n)
{
    return n->type == XML_ELEMENT_NODE && n->ns && n->ns->href &&
           strcmp((const char *)n->ns->href, FHIR_NS) == 0;
}

err_t fhir__xml_parse(const char *buf, size_t len, const fhir_opts_t *o, fhir_doc_t *doc,
                      err_detail_t *d)
{
    if (len > INT_MAX)
        return err_set(d, ERR_TOO_LARGE, 0, "XML input too large");
    xmlInitParser();
    xmlParserCtxtPtr ctxt = xmlCreateMemoryParserCtxt(buf, (int)len);
    if (!ctxt)
        return err_set(d, ERR_BAD_XML, 0, "malformed XML: cannot start the parser");
    /* NONET: never fetch; no NOENT/DTDLOAD/DTDATTR/XINCLUDE; no HUGE, so
     * libxml2's own size limits on names and text stay on. */
    xmlCtxtUseOptions(ctxt, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                                XML_PARSE_NOCDATA);
    guard_t g = {.max_depth = o->max_depth,
                 .start = ctxt->sax->startElementNs,
                 .end = ctxt->sax->endElementNs};
    ctxt->_private = &g;
    ctxt->sax->startElementNs = guard_start;
    ctxt->sax->endElementNs = guard_end;
    ctxt->sax->internalSubset = guard_dtd;
    ctxt->sax->externalSubset = NULL;
    ctxt->sax->entityDecl = NULL;
    ctxt->sax->getEntity = NULL;
    ctxt->sax->resolveEntity = NULL;

    xmlGenericErrorFunc old_generic = xmlGenericError;
    void *old_generic_ctx = xmlGenericErrorContext;
    xmlStructuredErrorFunc old_structured = xmlStructuredError;
    void *old_structured_ctx = xmlStructuredErrorContext;
    xmlSetGenericErrorFunc(NULL, silent_generic);
    xmlSetStructuredErrorFunc(NULL, silent_structured);
    xmlParseDocument(ctxt);
    xmlSetGenericErrorFunc(old_generic_ctx, old_generic);
    xmlSetStructuredErrorFunc(old_structured_ctx, old_structured);
    xmlDocPtr xd = ctxt->myDoc;
    ctxt->myDoc = NULL;
    err_t e = ERR_OK;
    const xmlError *xe = xmlCtxtGetLastError(ctxt);
    int line = xe && xe->line > 0 ? xe->line : ctxt->input ? ctxt->input->line : 0;
    int col = xe && xe->int2 > 0 ? xe->int2 : ctxt->input ? ctxt->input->col : 0;
    long consumed = xmlByteConsumed(ctxt);
    size_t off = consumed > 0 ? (size_t)consumed : 0;
    if (g.doctype) {
        e = err_set(d, ERR_BAD_XML, off, "DOCTYPE is not allowed in FHIR XML (line %d)", line);
    } else if (g.too_deep) {
        e = err_set(d, ERR_TOO_DEEP, off, "XML nesting deeper than %d at line %d", o->max_depth,
                    line);
    } else if (!ctxt->wellFormed || !xd || !xmlDocGetRootElement(xd)) {
        e = err_set(d, ERR_BAD_XML, off, "malformed XML at line %d, column %d (libxml2 error %d)",
                    line, col, xe ? xe->code : 0);
    } else if (xd->intSubset || xd->extSubset) {
        e = err_set(d, ERR_BAD_XML, 0, "DOCTYPE is not allowed in FHIR XML");
    }
    if (e && d)
        d->segment = line;
    ctxt->_private = NULL;
    xmlFreeParserCtxt(ctxt);
    if (e) {
        xmlFreeDoc(xd);
        return e;
    }
    doc->tree = xd;
    doc->root = xmlDocGetRootElement(xd);
    doc->ops = &fhir__xml_ops;
    if (!is_fhir(doc->root)) {
        doc->tree = NULL;
        xmlFreeDoc(xd);
        return err_set(d, ERR_UNSUPPORTED, 0,
                       "the root element is not a resource in the FHIR namespace " FHIR_NS);
    }
    return ERR_OK;
}

void fhir__xml_free(void *tree)
{
    xmlFreeDoc(tree);
}

static bool named(const xmlNode *n, const char *name)
{
    return is_fhir(n) && strcmp((const char *)n->name, name) == 0;
}

static const xmlNode *find_from(const xmlNode *n, const char *name)
{
    for (; n; n = n->next)
        if (named(n, name))
            return n;
    return NULL;
}

static fhir__node_t x_get(fhir__node_t obj, const char *name, bool *bad)
{
    const xmlNode *n = find_from(((const xmlNode *)obj)->children, name);
    if (n && find_from(n->next, name)) {
        *bad = true;
        return NULL;
    }
    return n;
}

static fhir__node_t x_first(fhir__node_t obj, const char *name, bool *bad)
{
    return find_from(((const xmlNode *)obj)->children, name);
}

static fhir__node_t x_next(fhir__node_t item)
{
    const xmlNode *n = item;
    return find_from(n->next, (const char *)n->name);
}

static bool x_is_object(fhir__node_t n)
{
    return true;
}

static int x_str(fhir__node_t n, const char **out)
{
    for (const xmlAttr *a = ((const xmlNode *)n)->properties; a; a = a->next) {
        if (a->ns || strcmp((const char *)a->name, "value") != 0)
            continue;
        /* Without a DTD an attribute value is one text node (or none when
         * empty); character and predefined entity references are already
         * decoded by the parser. */
        const xmlNode *t = a->children;
        if (!t) {
            *out = "";
            return FHIR__OK;
        }
        if (t->type != XML_TEXT_NODE || t->next || !t->content)
            return FHIR__BADTYPE;
        *out = (const char *)t->content;
        return FHIR__OK;
    }
    return FHIR__ABSENT;
}

/* FHIR decimals and integers share JSON's number syntax. */
static bool json_number(const char *s)
{
    if (*s == '-')
        s++;
    if (*s == '0')
        s++;
    else if (*s >= '1' && *s <= '9')
        while (*s >= '0' && *s <= '9')
            s++;
    else
        return false;
    if (*s == '.') {
        s++;
        if (!(*s >= '0' && *s <= '9'))
            return false;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (!(*s >= '0' && *s <= '9'))
            return false;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    return *s == '\0';
}

static int x_num(fhir__node_t n, double *out)
{
    const char *s;
    int rc = x_str(n, &s);
    if (rc != FHIR__OK)
        return rc;
    if (!json_number(s))
        return FHIR__BADTYPE;
    double v = strtod(s, NULL);
    if (!isfinite(v))
        return FHIR__BADTYPE;
    *out = v;
    return FHIR__OK;
}

static const char *x_resource_type(fhir__node_t res)
{
    const xmlNode *n = res;
    return is_fhir(n) ? (const char *)n->name : NULL;
}

static fhir__node_t x_resource(fhir__node_t container, bool *bad)
{
    const xmlNode *r = NULL;
    for (const xmlNode *c = ((const xmlNode *)container)->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (r || !is_fhir(c)) {
            *bad = true;
            return NULL;
        }
        r = c;
    }
    if (!r)
        *bad = true;
    return r;
}

const fhir__ops_t fhir__xml_ops = {
    .get = x_get,
    .first = x_first,
    .next = x_next,
    .is_object = x_is_object,
    .str = x_str,
    .num = x_num,
    .resource_type = x_resource_type,
    .resource = x_resource,
};
