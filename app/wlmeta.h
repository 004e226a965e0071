/* wlmeta.h - the worklist description of a judged message (queue_item_t's
 * meta, worklist.h): where it came from, what it is, the references a coder
 * looks it up by, the verdict and the findings, as one JSON object. Built on
 * the loop thread when the message is stored; its text is PHI (the lookup
 * references) and is never logged.
 *
 * Ownership: results are allocated in the arena passed.
 */
#ifndef SPINEGATE_WLMETA_H
#define SPINEGATE_WLMETA_H

#include "arena.h"
#include "dest.h"
#include "gate.h"

/* The JSON object for r, received on source ("mllp", "http") from peer
 * ("ip:port", may be NULL):
 * {"source","peer","type","verdict","refs":{"mrn","account","visit"},
 *  "rules":[...],"findings":[{"rule","severity","codes","location","message",
 *  "suggestion","reference"}]}; absent values are left out. */
const char *wlmeta_json(arena_t *a, const char *source, const char *peer, const gate_result_t *r);

/* The verdict's name: "accept", "annotate", "reject"; "unreadable" or
 * "not-a-claim" when r was not judged. */
const char *wlmeta_verdict_name(const gate_result_t *r);

/* The worklist kind a stored message is recorded as (queue_item_t's
 * worklist): "reject" for the reject destinations, "annotate" for an
 * annotated message when annotated is set (worklist-annotated), else NULL. */
const char *wlmeta_kind(dest_t dest, const gate_result_t *r, bool annotated);

/* The queue's one-line findings summary, "rule:severity rule:severity";
 * NULL when there are none. */
const char *wlmeta_summary(arena_t *a, const rule_verdict_t *v);

#endif
