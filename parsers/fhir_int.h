/* fhir_int.h - internals shared by the FHIR files; no other folder includes it.
 *
 * The mapping (fhir_map.c) never touches cJSON or libxml2 directly: it walks
 * the parse tree through fhir__ops_t, which fhir_json.c and fhir_xml.c each
 * implement. One mapping for both formats is what keeps JSON and XML from
 * drifting. Nodes are borrowed pointers into the document's tree.
 */
#ifndef SPINEGATE_FHIR_INT_H
#define SPINEGATE_FHIR_INT_H

#include <stdbool.h>

#include "fhir.h"

typedef const void *fhir__node_t;

/* Results of the primitive readers. */
#define FHIR__OK 0
#define FHIR__ABSENT 1 /* no value (XML element with extensions only) */
#define FHIR__BADTYPE (-1)

typedef struct {
    /* The child `name` of a complex node that may occur once: NULL when
     * absent; *bad set when present with the wrong shape (a JSON array, a
     * repeated XML element). */
    fhir__node_t (*get)(fhir__node_t obj, const char *name, bool *bad);
    /* The first item of the repeating child `name`: NULL when absent; *bad
     * when the JSON value is not an array. */
    fhir__node_t (*first)(fhir__node_t obj, const char *name, bool *bad);
    /* The item after `item` in its array (XML: next sibling of that name). */
    fhir__node_t (*next)(fhir__node_t item);
    /* True when n can hold children (a JSON object, any XML element). */
    bool (*is_object)(fhir__node_t n);
    /* A primitive's value as text: FHIR__OK, FHIR__ABSENT or FHIR__BADTYPE
     * (a JSON value that is not a string). */
    int (*str)(fhir__node_t n, const char **out);
    /* A numeric primitive (JSON number, XML value parsed as a decimal). */
    int (*num)(fhir__node_t n, double *out);
    /* The resource type of a resource node, or NULL. */
    const char *(*resource_type)(fhir__node_t res);
    /* The resource inside a resource container (contained[i],
     * entry.resource): JSON: the object itself; XML: its one child element.
     * NULL with *bad when malformed. */
    fhir__node_t (*resource)(fhir__node_t container, bool *bad);
} fhir__ops_t;

extern const fhir__ops_t fhir__json_ops;
extern const fhir__ops_t fhir__xml_ops;

typedef struct {
    const char *full_url; /* NULL when absent */
    fhir__node_t res;     /* NULL when the entry has no resource */
} fhir__entry_t;

struct fhir_doc {
    fhir_format_t fmt;
    const fhir__ops_t *ops;
    void *tree;          /* cJSON * or xmlDoc * */
    arena_t tree_arena;  /* JSON: the cJSON tree's memory, when tree_in_arena */
    bool tree_in_arena;  /* freed with tree_arena, never by cJSON_Delete */
    fhir__node_t root;   /* the top resource */
    const char *rtype;   /* "Claim", "Bundle" or "Parameters" */
    char bundle_type[32]; /* Bundle.type ("batch", "transaction", ...); "" for a Claim */
    char mode[8];         /* Parameters: the $validate mode ("create", ...), or "" */
    fhir__node_t *claims;
    size_t *claim_entry; /* entry index of each claim */
    size_t nclaims;
    fhir__entry_t *entries;
    size_t nentries;
};

/* Format parsers: fill doc->tree, doc->root and doc->ops, or fail with the
 * format's error. */
err_t fhir__json_parse(const char *buf, size_t len, const fhir_opts_t *o, fhir_doc_t *doc,
                       err_detail_t *d);
/* The JSON pre-pass (depth, NUL, \u0000; see fhir_json.c), 64 bytes at a
 * time where SSE2 is there, and byte by byte: both give the same answer. */
err_t fhir__json_prescan(const char *buf, size_t len, int max_depth, err_detail_t *d);
err_t fhir__json_prescan_bytewise(const char *buf, size_t len, int max_depth, err_detail_t *d);
err_t fhir__xml_parse(const char *buf, size_t len, const fhir_opts_t *o, fhir_doc_t *doc,
                      err_detail_t *d);
void fhir__json_free(void *tree);
void fhir__xml_free(void *tree);

/* Fills d->where with a truncated copy of path. */
void fhir__where(err_detail_t *d, const char *path);

#endif
