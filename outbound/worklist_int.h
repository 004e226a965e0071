/* worklist_int.h - what the queue (queue.c) shares with worklist.c: the
 * tables and the prune, on a connection the caller owns. Not for other
 * modules. */
#ifndef SPINEGATE_WORKLIST_INT_H
#define SPINEGATE_WORKLIST_INT_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

/* Creates the tables worklist and inbox when absent. Returns an SQLite code. */
int worklist__schema(sqlite3 *db);

/* Deletes items not open, last changed before now_ms - keep_days; *n counts
 * them. Returns an SQLite code. */
int worklist__prune(sqlite3 *db, unsigned keep_days, int64_t now_ms, size_t *n);

#endif
