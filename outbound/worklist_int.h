/* worklist_int.h - worklist internals: what the SQLite queue
 * (queue_sqlite.c) shares with worklist.c (the tables and the prune, on a
 * connection the caller owns), and the backend interface through which
 * worklist.c dispatches every public call to SQLite (worklist.c) or
 * PostgreSQL (worklist_pg.c). Not for other modules. */
#ifndef SPINEGATE_WORKLIST_INT_H
#define SPINEGATE_WORKLIST_INT_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "worklist.h"

/* Creates the tables worklist and inbox when absent. Returns an SQLite code. */
int worklist__schema(sqlite3 *db);

/* Deletes items not open, last changed before now_ms - keep_days; *n counts
 * them. Returns an SQLite code. */
int worklist__prune(sqlite3 *db, unsigned keep_days, int64_t now_ms, size_t *n);

/* What a backend implements: worklist.h's functions one for one (see there
 * for what each does and may return). */
typedef struct {
    void (*close)(worklist_t *w);
    err_t (*list)(worklist_t *w, const worklist_filter_t *f, worklist_item_fn fn, void *user,
                  err_detail_t *d);
    err_t (*get)(worklist_t *w, int64_t id, worklist_item_fn fn, void *user, err_detail_t *d);
    err_t (*resolve)(worklist_t *w, int64_t id, const char *who, const char *note, err_detail_t *d);
    err_t (*requeue)(worklist_t *w, int64_t id, const char *who, err_detail_t *d);
    err_t (*resend)(worklist_t *w, int64_t id, const worklist_msg_t *m, const char *who,
                    const char *note, err_detail_t *d);
    err_t (*prune)(worklist_t *w, unsigned keep_days, size_t *n, err_detail_t *d);
    err_t (*queue_figures)(worklist_t *w, worklist_dest_fn fn, void *user, int64_t *inbox,
                           err_detail_t *d);
} worklist__ops_t;

/* The head of every backend's worklist: each backend's struct begins with
 * one, so that the pointers convert both ways. */
struct worklist {
    const worklist__ops_t *ops;
};

#endif
