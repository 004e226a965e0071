/* worklist.h - the coders' worklist: every rejected message, every dead
 * letter and (a setting) every annotated one, as rows of the table worklist
 * in the queue's database. The daemon writes items through the queue (see
 * queue.h: in the same transaction as the row they describe); this module
 * is the reading and changing side, used by spinegate-admin on its own
 * connection while the daemon runs (SQLite WAL lets a second process in) or
 * not. Messages handed back for delivery (requeue, resend) go into the table
 * inbox, which the daemon's queue drains (queue.h).
 *
 * With the queue in PostgreSQL (queue = postgres) the items are rows of
 * spinegate_worklist, shared by every instance using that database
 * (docs/queue-schema.md); worklist_open_pg() opens them, and everything
 * below works the same, except that a message handed back goes straight into
 * the queue's table as a pending row (there is no inbox: its link is
 * "queue:N" at once and the inbox figure is 0). Every call there blocks on
 * the network: call them off the loop thread.
 *
 * Ownership: worklist_open() produces a worklist_t freed by worklist_close().
 * An item handed to a callback is borrowed for the call only. Items hold PHI
 * (the message, its lookup references): never log them.
 */
#ifndef SPINEGATE_WORKLIST_H
#define SPINEGATE_WORKLIST_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define WORKLIST_KEEP_DAYS 90 /* worklist-retention's default */

typedef struct worklist worklist_t;

/* One item as stored. Strings are NUL-terminated; NULL when absent. */
typedef struct {
    int64_t id;
    const char *kind;  /* "reject", "dead", "annotate" */
    const char *state; /* "open", "resolved", "resent", "requeued" */
    int64_t msg_id;    /* the queue row it was written with */
    const char *dest;  /* the queue destination: "reject-hl7", "hl7", "fhir", ... */
    const char *control_id;
    const char *content_type;
    const char *findings; /* the queue's one-line summary: "rule:severity ..." */
    const char *meta;     /* JSON object from the daemon (queue_item_t.meta) */
    const char *reason;   /* why it was dead-lettered */
    int64_t received_ms;  /* when the daemon stored the message */
    const char *changed_by, *note, *link;
    int64_t changed_ms; /* 0 when never changed */
    const unsigned char *payload;
    size_t payload_len;
} worklist_item_t;

/* Return non-zero to stop the walk. */
typedef int (*worklist_item_fn)(const worklist_item_t *it, void *user);

/* What worklist_list() returns; NULL / 0 fields do not filter. */
typedef struct {
    const char *state;
    const char *kind;
    const char *rule;   /* items with a finding of this rule id */
    const char *source; /* "mllp" or "http": the destination's format (hl7 / fhir) */
    int64_t since_ms, until_ms; /* received in [since, until) */
} worklist_filter_t;

/* Opens the worklist of the queue database at path (which must exist),
 * creating the tables when the daemon has not yet. Errors: ERR_NOT_FOUND (no
 * such file), ERR_QUEUE (SQLite, not a queue database). */
err_t worklist_open(const char *path, worklist_t **out, err_detail_t *d);

/* Opens the worklist in the PostgreSQL database of url (a libpq connection
 * string or URI, the daemon's queue-url), whose schema the daemon has made
 * (queue_pg.c). Errors: ERR_QUEUE (cannot connect, not a spinegate queue
 * database, or one newer than this program). */
err_t worklist_open_pg(const char *url, worklist_t **out, err_detail_t *d);

/* Accepts NULL. */
void worklist_close(worklist_t *w);

/* Calls fn for each item that passes f (may be NULL), oldest first.
 * Errors: ERR_QUEUE. */
err_t worklist_list(worklist_t *w, const worklist_filter_t *f, worklist_item_fn fn, void *user,
                    err_detail_t *d);

/* Calls fn with item id. Errors: ERR_NOT_FOUND, ERR_QUEUE. */
err_t worklist_get(worklist_t *w, int64_t id, worklist_item_fn fn, void *user, err_detail_t *d);

/* Marks an open item resolved by who, with a note. Errors: ERR_NOT_FOUND,
 * ERR_BAD_VALUE (the item is not open), ERR_QUEUE. */
err_t worklist_resolve(worklist_t *w, int64_t id, const char *who, const char *note,
                       err_detail_t *d);

/* A message handed back for delivery. Borrowed for the call. */
typedef struct {
    const char *dest, *control_id, *content_type, *findings, *meta;
    const void *payload;
    size_t payload_len;
} worklist_msg_t;

/* Requeues an open dead letter: its message goes into the inbox for its
 * destination, unchanged; the item becomes "requeued" (link "inbox:N",
 * "queue:N" once the daemon has moved it). One transaction.
 * Errors: ERR_NOT_FOUND, ERR_BAD_VALUE (not a dead letter, or not open),
 * ERR_QUEUE. */
err_t worklist_requeue(worklist_t *w, int64_t id, const char *who, err_detail_t *d);

/* Queues m (a corrected message that passed the rules) through the inbox
 * and marks the open item id "resent", linked to it; note may be NULL. One
 * transaction. Errors: ERR_NOT_FOUND, ERR_BAD_VALUE (the item is not open, or
 * m's destination name is invalid), ERR_QUEUE. */
err_t worklist_resend(worklist_t *w, int64_t id, const worklist_msg_t *m, const char *who,
                      const char *note, err_detail_t *d);

/* Deletes items that are not open and were last changed (or received) more
 * than keep_days ago; *n (may be NULL) counts them. Errors: ERR_QUEUE. */
err_t worklist_prune(worklist_t *w, unsigned keep_days, size_t *n, err_detail_t *d);

/* Queue figures for stats: per destination, the pending and dead rows, and
 * the messages in the inbox not yet taken by the daemon. */
typedef void (*worklist_dest_fn)(const char *dest, int64_t pending, int64_t dead, void *user);
err_t worklist_queue_figures(worklist_t *w, worklist_dest_fn fn, void *user, int64_t *inbox,
                             err_detail_t *d);

#endif
