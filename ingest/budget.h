/* budget.h - one memory budget shared by every listener of the daemon: the
 * bytes held for input not yet complete (a partial MLLP frame, an HTTP
 * request being received, bytes read but not yet taken) and for messages
 * taken but not yet answered (a frame waiting on a full queue). Past the
 * limit, connections that hold such bytes stop being read until the total
 * falls back; connections that hold none are still read, so others are
 * served and nobody is dropped for it.
 *
 * Ownership: the caller creates the budget, hands it to each listener in its
 * options, and frees it after every listener has closed. Loop thread only.
 */
#ifndef SPINEGATE_BUDGET_H
#define SPINEGATE_BUDGET_H

#include <stddef.h>
#include <stdint.h>

typedef struct ingest_budget ingest_budget_t;

/* A budget of limit bytes (0 = no limit, counted only). */
ingest_budget_t *ingest_budget_new(size_t limit);

/* Frees b (NULL is fine). Every listener using it must have closed. */
void ingest_budget_free(ingest_budget_t *b);

typedef struct {
    size_t limit, used, peak; /* bytes */
    uint64_t pauses;          /* times a connection stopped being read for it */
    uint64_t paused;          /* connections not read for it now */
} ingest_budget_stats_t;

void ingest_budget_stats(const ingest_budget_t *b, ingest_budget_stats_t *out);

#endif
