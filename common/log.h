/* log.h - the daemon's log. Lines go to stderr (default) or syslog, one per
 * event, carrying control ids, rule ids and counts: never message content.
 * Content may be logged only through log_phi(), which prints nothing unless
 * the operator turned on the debug option that says so.
 */
#ifndef SPINEGATE_LOG_H
#define SPINEGATE_LOG_H

#include <stdbool.h>

typedef enum { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG } log_level_t;

/* target: "stderr" or "syslog". ident names the program in syslog lines. */
void log_init(const char *ident, const char *target, log_level_t level, bool log_phi);
void log_set_level(log_level_t level);
log_level_t log_get_level(void);

/* Parses "error"/"warn"/"info"/"debug"; returns -1 when unknown. */
int log_level_parse(const char *s);

void log_msg(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* An id or string from a message (MSH-10, Claim.id) as it may appear in a
 * log line: it came from the sender, so anything but printable ASCII becomes
 * '?' (no forged lines, no terminal escapes) and more than LOG_ID_MAX bytes
 * end in '~'. Returns buf, or "-" for NULL or "". Every log line that carries
 * such a string goes through this one helper. */
#define LOG_ID_MAX 64
#define LOG_ID_BUF (LOG_ID_MAX + 8)
const char *log_id(const char *id, char buf[LOG_ID_BUF]);

/* Logs content (PHI) only when enabled with log_init(..., log_phi=true). */
void log_phi(const char *what, const char *data, unsigned long len);

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
/* Info and debug lines are mostly off and some are per message: their
 * arguments (log_id() and the like) are not even computed then. */
#define log_info(...)                                                                              \
    do {                                                                                           \
        if (log_get_level() >= LOG_LVL_INFO)                                                       \
            log_msg(LOG_LVL_INFO, __VA_ARGS__);                                                    \
    } while (0)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_get_level() >= LOG_LVL_DEBUG)                                                      \
            log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                                                   \
    } while (0)

#endif
