/* json_tree.h - JSON text to a cJSON tree built in an arena (parsers/ only).
 *
 * cJSON_Parse allocates every node and string on its own and compares each
 * value with "null", "false" and "true" before it looks at its first byte;
 * for a FHIR Claim that was half the cost of a $validate request. This
 * reader builds the same tree (the same types, values, keys, sibling links
 * and head->prev tail link that cJSON's own parse leaves, so cJSON's
 * accessors, edits and printers work on it) out of one arena.
 *
 * It takes what cJSON 1.7.15 takes, with one difference: a \u escape whose
 * four characters are not hex digits is refused, where cJSON reads it as
 * U+0000 and cuts the string there. Bytes up to 32 count as white space,
 * numbers are what strtod() reads from a run of [0-9+-.eE], strings keep
 * their bytes as sent (no UTF-8 check), a UTF-8 byte order mark is skipped.
 *
 * The tree is never given to cJSON_Delete: it goes with the arena. Like
 * cJSON, it refuses nesting deeper than CJSON_NESTING_LIMIT (1000); the
 * FHIR reader refuses far less before it gets here (fhir_json.c).
 */
#ifndef SPINEGATE_JSON_TREE_H
#define SPINEGATE_JSON_TREE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "arena.h"

/* The value at the start of buf (after white space), or NULL with
 * *fail_at the byte offset where the text stopped being JSON. On success
 * *end_at is the offset just past the value, and *dup tells whether an
 * object in it names a key twice (the tree keeps both, as cJSON's does). */
cJSON *json_tree_parse(const char *buf, size_t len, arena_t *a, size_t *end_at, size_t *fail_at,
                       bool *dup);

#endif
