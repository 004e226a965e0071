/* queue_int.h - queue internals shared with outbound/ files, the fuzz target
 * and the unit tests: the row decoder, the destination-name check and the
 * write connection. Not for other modules. */
#ifndef SPINEGATE_QUEUE_INT_H
#define SPINEGATE_QUEUE_INT_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

#include "queue.h"

/* Decodes the current row of a fetch statement (columns id, dest, control_id,
 * content_type, payload, findings, attempts, created_ms, rejects) into one
 * allocation,
 * checking every type and length. Returns NULL with a reason in why when the
 * row is damaged. */
queue_row_t *queue__row_decode(sqlite3_stmt *st, size_t max_payload, char *why, size_t whylen);

/* True for 1..QUEUE_DEST_MAX bytes of [A-Za-z0-9_.-]. */
bool queue__valid_dest(const char *s);

/* The write connection, for the unit tests' fault injection (e.g. a lowered
 * sqlite3_limit that makes one insert of a group commit fail). Touch it only
 * on the loop thread while no commit runs. */
sqlite3 *queue__db(queue_t *q);

/* Crash points, for the kill -9 tests only. In a build with
 * -DSPINEGATE_CRASH_POINTS (the test daemon tests/integration/spinegate-crash,
 * never the installed one), QUEUE_CRASH_POINT("name") kills the process with
 * SIGKILL when the environment says SPINEGATE_TEST_CRASH_AT=name or name:N
 * (the Nth time that point is reached; N = 1 when absent), after one line on
 * stderr naming the point. Elsewhere it compiles to nothing. The points are
 * listed in tests/integration/test_crash.py. */
#ifdef SPINEGATE_CRASH_POINTS
void queue__crash_point(const char *name);
#define QUEUE_CRASH_POINT(name) queue__crash_point(name)
#else
#define QUEUE_CRASH_POINT(name) ((void)0)
#endif

#endif
