/* wlview.h - worklist items as the coders see them, shared by
 * spinegate-admin and the daemon's web page so both show and judge the
 * same way: an item as a JSON object, times in RFC 3339, and the judging of
 * a corrected message before it is resent.
 *
 * Ownership: cJSON results belong to the caller (cJSON_Delete); judged
 * output lives in the arena passed.
 */
#ifndef SPINEGATE_WLVIEW_H
#define SPINEGATE_WLVIEW_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "config.h"
#include "gate.h"
#include "worklist.h"

/* RFC 3339 or a date, to ms since the epoch; no offset is UTC. */
bool wlview_parse_time(const char *s, int64_t *out);

/* ms since the epoch as "YYYY-MM-DDTHH:MM:SSZ" in buf. Returns buf. */
const char *wlview_rfc3339(int64_t ms, char *buf, size_t cap);

/* The item's meta object (NULL when it has none or it does not parse). */
cJSON *wlview_meta(const worklist_item_t *it);

/* o's string member k, or NULL. */
const char *wlview_jstr(const cJSON *o, const char *k);

/* "mllp" or "http": meta's source, else the destination's format. */
const char *wlview_source(const worklist_item_t *it, const cJSON *m);

/* The rule ids of the item's findings, as a JSON array. */
cJSON *wlview_rules(const worklist_item_t *it, const cJSON *m);

/* The listing object: id, state, kind, verdict, source, control_id, rules,
 * received, dest, refs, reason, changed, changed_by, note, link. */
cJSON *wlview_item_json(const worklist_item_t *it);

/* Called with the verdict while what it points into is still alive. */
typedef void (*wlview_verdict_fn)(const gate_result_t *r, void *user);

/* Judges buf as the daemon would, with cfg's settings; seen (may be NULL)
 * gets the result. On a verdict that lets it through fills m with what the
 * daemon would queue (annotated as it would; in ar). Returns 0 to be
 * queued, 1 rejected or unreadable, 2 error. */
int wlview_judge(const config_t *cfg, const rule_pack_t *pack, const char *buf, size_t len,
                 arena_t *ar, worklist_msg_t *m, wlview_verdict_fn seen, void *user);

#endif
