/* log.c - stderr or syslog output. Defaults to stderr at info level so that
 * tools and tests log sensibly without calling log_init(). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>

static struct {
    log_level_t level;
    bool use_syslog;
    bool phi;
} log_state = {LOG_LVL_INFO, false, false};

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_init(const char *ident, const char *target, log_level_t level, bool log_phi)
{
    log_state.level = level;
    log_state.phi = log_phi;
    log_state.use_syslog = target && strcmp(target, "syslog") == 0;
    if (log_state.use_syslog)
        openlog(ident ? ident : "spinegate", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_set_level(log_level_t level)
{
    log_state.level = level;
}

log_level_t log_get_level(void)
{
    return log_state.level;
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return LOG_LVL_WARN;
    return -1;
}

static void log_vwrite(log_level_t level, const char *fmt, va_list ap)
{
    if (log_state.use_syslog) {
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
        vsyslog(prio[level], fmt, ap);
        return;
    }
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[level]);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    fprintf(stderr, "%s\n", line);
}

void log_msg(log_level_t level, const char *fmt, ...)
{
    if (level > log_state.level)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}

const char *log_id(const char *id, char buf[LOG_ID_BUF])
{
    size_t k = 0;
    if (!id)
        return "-";
    for (; id[k] && k < LOG_ID_MAX; k++)
        buf[k] = id[k] > 0x20 && id[k] < 0x7f ? id[k] : '?';
    if (id[k])
        buf[k++] = '~';
    buf[k] = 0;
    return k ? buf : "-";
}

void log_phi(const char *what, const char *data, unsigned long len)
{
    if (!log_state.phi)
        return;
    char buf[4096];
    size_t n = len < sizeof buf - 1 ? len : sizeof buf - 1;
    for (size_t i = 0; i < n; i++)
        buf[i] = (data[i] == '\r' || data[i] == '\n') ? '|' : data[i];
    buf[n] = '\0';
    log_msg(log_state.level, "phi %s: %s", what, buf);
}
