/* notify.c - sd_notify for systemd's Type=notify (see notify.h). The
 * watchdog is fed from a timer on the daemon's own loop, so a loop that is
 * stuck stops feeding it and systemd restarts the service. */
#include "notify.h"

#ifdef HAVE_SYSTEMD
#include <stdint.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "xmalloc.h"

struct notify {
    uv_timer_t watchdog;
};

static void watchdog_tick(uv_timer_t *t)
{
    (void)t;
    sd_notify(0, "WATCHDOG=1");
}

static void watchdog_closed(uv_handle_t *h)
{
    xfree(h->data);
}

notify_t *notify_ready(uv_loop_t *loop)
{
    /* Without NOTIFY_SOCKET (started by hand, or by a test) this returns 0
     * and nothing is sent. */
    sd_notify(0, "READY=1");
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return NULL;
    notify_t *n = xcalloc(1, sizeof *n);
    uv_timer_init(loop, &n->watchdog);
    n->watchdog.data = n;
    /* Half the interval, as sd_watchdog_enabled(3) advises, so one late tick
     * is not yet a missed one. */
    uint64_t every_ms = usec / 2000 ? usec / 2000 : 1;
    uv_timer_start(&n->watchdog, watchdog_tick, every_ms, every_ms);
    log_info("systemd watchdog: fed every %llu ms", (unsigned long long)every_ms);
    return n;
}

void notify_stopping(notify_t *n)
{
    sd_notify(0, "STOPPING=1");
    if (n)
        uv_close((uv_handle_t *)&n->watchdog, watchdog_closed);
}

#else /* no libsystemd: nothing to tell */

notify_t *notify_ready(uv_loop_t *loop)
{
    (void)loop;
    return NULL;
}

void notify_stopping(notify_t *n)
{
    (void)n;
}

#endif
