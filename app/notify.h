/* notify.h - tells a service manager (systemd's Type=notify) what the daemon
 * is doing: ready once the queue is open and the listeners are bound,
 * stopping when the drain begins, and alive, from a timer on the loop, while
 * the unit asks for a watchdog. Built without libsystemd (no HAVE_SYSTEMD),
 * every call does nothing and costs nothing.
 *
 * Ownership: notify_ready() produces a notifier that notify_stopping()
 * consumes (it closes the watchdog timer, so the loop can run out of
 * handles); notify_stopping(NULL) does nothing.
 */
#ifndef SPINEGATE_NOTIFY_H
#define SPINEGATE_NOTIFY_H

#include <uv.h>

typedef struct notify notify_t;

/* Sends READY=1 and, when the manager set WATCHDOG_USEC for this process,
 * starts a timer on loop that sends WATCHDOG=1 every half of it. Returns the
 * notifier, or NULL when there is nothing to stop later (no watchdog, or
 * built without libsystemd). Never fails: without a manager it is a no-op. */
notify_t *notify_ready(uv_loop_t *loop);

/* Sends STOPPING=1 and stops the watchdog timer. Consumes n (may be NULL). */
void notify_stopping(notify_t *n);

#endif
