/* config.c - the settings table and its readers. Every key lives in
 * config_keys[] once; the file reader, the command line, --help and the
 * dump all walk that table, so they cannot disagree. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "xmalloc.h"

/* K_LINES: a string setting that may be repeated; the values are kept one
 * a line, in order. */
typedef enum { K_STR, K_ADDR, K_LONG, K_MS, K_SIZE, K_BOOL, K_LIST, K_LINES } key_kind_t;

typedef struct {
    const char *name;
    key_kind_t kind;
    size_t offset;
    const char *def;   /* default as text; NULL = unset */
    const char *arg;   /* metavariable for --help */
    const char *help;
} key_def_t;

#define O(f) offsetof(config_t, f)
static const key_def_t config_keys[] = {
    {"listen-mllp", K_ADDR, O(listen_mllp), NULL, "HOST:PORT",
     "MLLP listener for HL7 v2, or off [" CONFIG_DEFAULT_MLLP " unless listen-http is set]"},
    {"listen-http", K_ADDR, O(listen_http), NULL, "HOST:PORT",
     "HTTP listener for FHIR Claims (off unless set)"},
    {"fhir-base", K_STR, O(fhir_base), "/fhir", "PATH", "base path of the FHIR endpoints"},
    {"http-auth", K_STR, O(http_auth), "token", "token|none",
     "token: HTTP endpoints but health need a bearer token (http-tokens); none: open, only on a "
     "loopback listener (or with insecure)"},
    {"http-tokens", K_STR, O(http_tokens), NULL, "FILE",
     "bearer tokens for HTTP, one a line: NAME SCOPES sha256:HEX (reloaded on SIGHUP)"},
    {"insecure", K_BOOL, O(insecure), "no", NULL,
     "allow an HTTP listener on a non-loopback address without TLS and authentication"},
    {"listen-admin", K_ADDR, O(listen_admin), NULL, "HOST:PORT",
     "the coders' worklist web page (off unless set; login with admin-users)"},
    {"admin-users", K_STR, O(admin_users), NULL, "FILE",
     "web page accounts, NAME:ARGON2ID-HASH a line (spinegate-admin user) [DATA-DIR/admin-users]"},
    {"admin-session-ttl", K_MS, O(admin_session_ttl_ms), "30m", "DURATION",
     "a web page session ends after this long unused"},
    {"admin-secure-cookie", K_BOOL, O(admin_secure_cookie), "no", NULL,
     "mark the web page's session cookie Secure (the page is reached over TLS, e.g. a proxy)"},
    {"admin-tls-cert", K_STR, O(admin_tls_cert), NULL, "FILE",
     "the web page speaks TLS with this PEM certificate chain (with admin-tls-key)"},
    {"admin-tls-key", K_STR, O(admin_tls_key), NULL, "FILE", "private key of admin-tls-cert"},
    {"admin-lockout-attempts", K_LONG, O(admin_lockout_attempts), "5", "N",
     "failed logins of one account within admin-lockout-minutes that lock it"},
    {"admin-lockout-minutes", K_LONG, O(admin_lockout_minutes), "15", "MINUTES",
     "the window of admin-lockout-attempts, and how long a locked account stays locked"},
    {"data-dir", K_STR, O(data_dir), "./spinegate-data", "DIR",
     "queue, outbox, reject and dead-letter folders"},
    {"queue", K_STR, O(queue_backend), "sqlite", "sqlite|postgres",
     "where the queue lives: sqlite (queue.db in data-dir) or postgres (queue-url)"},
    {"queue-url", K_STR, O(queue_url), NULL, "CONNINFO",
     "queue = postgres: libpq connection string or URI (several hosts with "
     "target_session_attrs=read-write)"},
    {"queue-sync", K_STR, O(queue_sync), "full", "full|normal",
     "full: fsync every group commit; normal: WAL sync only at checkpoints"},
    {"queue-log", K_BOOL, O(queue_log), "yes", NULL,
     "sqlite: write messages a deliverer takes at once to an append-only log, not the table "
     "(docs/queue-log.md)"},
    {"queue-max", K_LONG, O(queue_max), "100000", "N",
     "messages waiting in the queue before senders are slowed down"},
    {"downstream-mllp", K_ADDR, O(downstream_mllp), NULL, "HOST:PORT",
     "billing MLLP endpoint (default: the outbox folder)"},
    {"downstream-fhir", K_STR, O(downstream_fhir), NULL, "URL",
     "FHIR server base URL (default: the outbox folder)"},
    {"reject-mllp", K_ADDR, O(reject_mllp), NULL, "HOST:PORT",
     "reject sink as an MLLP endpoint (default: the reject folder)"},
    {"ack-timeout", K_MS, O(ack_timeout_ms), "10s", "DURATION",
     "how long to wait for a downstream ACK or HTTP answer"},
    {"downstream-window", K_LONG, O(downstream_window), "1", "N",
     "messages in flight at once to an MLLP destination (1 to 64)"},
    {"retry-max", K_LONG, O(retry_max), "0", "N",
     "transport failures before a message is dead-lettered (0: retry forever)"},
    {"downstream-reject-retries", K_LONG, O(reject_retries), "1", "N",
     "tries of a message billing rejects (AE/AR, HTTP 4xx) before it is dead-lettered"},
    {"unready-after", K_MS, O(unready_after_ms), "5m", "DURATION",
     "/readyz answers 503 when a destination has been failing this long"},
    {"queue-high-water", K_LONG, O(queue_high_water), "0", "N",
     "/readyz answers 503 above this many waiting messages (0: 90% of queue-max)"},
    {"accept-empty-queue", K_BOOL, O(accept_empty_queue), "no", NULL,
     "start even though the queue database of a used data folder is missing or empty"},
    {"retry-base", K_MS, O(retry_base_ms), "500ms", "DURATION",
     "first retry delay, doubled each try"},
    {"retry-max-delay", K_MS, O(retry_max_delay_ms), "5m", "DURATION", "longest retry delay"},
    {"annotation", K_STR, O(annotation), "zsg", "zsg|nte",
     "segment that carries findings in forwarded HL7 messages"},
    {"annotate-accepted", K_BOOL, O(annotate_accepted), "no", NULL,
     "forwarded messages with no findings carry the verdict header too (HL7 ZSH, FHIR extension)"},
    {"worklist-retention", K_LONG, O(worklist_retention), "90", "DAYS",
     "worklist items resolved, resent or requeued are kept this long (open ones always)"},
    {"inbox-poll", K_MS, O(inbox_poll_ms), "1s", "DURATION",
     "how often messages spinegate-admin handed back without the daemon's socket are taken"},
    {"worklist-annotated", K_BOOL, O(worklist_annotated), "no", NULL,
     "annotated messages (warnings only) also become worklist items"},
    {"other-messages", K_STR, O(other_messages), "forward", "forward|reject",
     "HL7 types other than DFT/BAR/ADT (they carry no claim): pass through or reject"},
    {"max-message-size", K_SIZE, O(max_message_size), "4M", "BYTES",
     "largest HL7 message accepted (larger: AR, connection kept)"},
    {"max-body-size", K_SIZE, O(max_body_size), "8M", "BYTES", "largest HTTP body accepted (413)"},
    {"max-diagnoses", K_LONG, O(max_diagnoses), "1000", "N",
     "most diagnoses in one claim (more: AR / 413, not stored)"},
    {"max-buffered-bytes", K_SIZE, O(max_buffered_bytes), "256M", "BYTES",
     "bytes held for unfinished messages and waiting answers, daemon-wide; reads pause beyond it"},
    {"max-connections", K_LONG, O(max_connections), "1024", "N",
     "open connections per listener; at it the oldest idle one makes way for a new one"},
    {"idle-timeout", K_MS, O(idle_timeout_ms), "5m", "DURATION",
     "close a connection silent for this long"},
    {"header-timeout", K_MS, O(header_timeout_ms), "10s", "DURATION",
     "time allowed to send HTTP request headers"},
    {"body-timeout", K_MS, O(body_timeout_ms), "30s", "DURATION",
     "time allowed to send an HTTP request body"},
    {"rules", K_STR, O(rules_path), NULL, "FILE", "rule pack (default: the built-in pack)"},
    {"tables", K_STR, O(tables_path), NULL, "DIR",
     "ICD-10-CM/MS-DRG tables (default: built in)"},
    {"advisory", K_BOOL, O(advisory), "no", NULL, "advisory mode: nothing is rejected"},
    {"severity", K_LIST, O(severity), NULL, "RULE=SEVERITY",
     "override a rule's severity (reject|warn|info|off); repeatable"},
    {"adt", K_STR, O(adt), "annotate", "annotate|judge|forward",
     "ADT messages (working diagnoses, not bills): judged but never rejected, judged, "
     "or passed on"},
    {"log", K_STR, O(log_target), "stderr", "stderr|syslog", "where log lines go"},
    {"log-level", K_STR, O(log_level), "info", "LEVEL", "error|warn|info|debug"},
    {"log-phi", K_BOOL, O(log_phi), "no", NULL,
     "DEBUG ONLY: log message content (patient data)"},
    {"pid-file", K_STR, O(pid_file), NULL, "FILE", "write the process id here"},
    {"mllp-tls-cert", K_STR, O(mllp_tls_cert), NULL, "FILE",
     "MLLP listener speaks TLS with this PEM certificate chain (with mllp-tls-key)"},
    {"mllp-tls-key", K_STR, O(mllp_tls_key), NULL, "FILE", "private key of mllp-tls-cert"},
    {"mllp-tls-client-ca", K_STR, O(mllp_tls_client_ca), NULL, "FILE",
     "MLLP clients must present a certificate from this CA bundle (mTLS)"},
    {"mllp-tls-allow", K_LINES, O(mllp_tls_allow), NULL, "PATTERN",
     "admit only client certificates whose subject, CN or SAN matches (glob); repeatable"},
    {"http-tls-cert", K_STR, O(http_tls_cert), NULL, "FILE",
     "HTTP listener speaks TLS with this PEM certificate chain (with http-tls-key)"},
    {"http-tls-key", K_STR, O(http_tls_key), NULL, "FILE", "private key of http-tls-cert"},
    {"http-tls-client-ca", K_STR, O(http_tls_client_ca), NULL, "FILE",
     "HTTP clients must present a certificate from this CA bundle (mTLS)"},
    {"http-tls-allow", K_LINES, O(http_tls_allow), NULL, "PATTERN",
     "admit only client certificates whose subject, CN or SAN matches (glob); repeatable"},
    {"downstream-mllp-tls", K_BOOL, O(downstream_mllp_tls), "no", NULL,
     "speak TLS to downstream-mllp and reject-mllp"},
    {"downstream-tls-ca", K_STR, O(downstream_tls_ca), NULL, "FILE",
     "CA bundle that downstream servers are verified against (default: the system's)"},
    {"downstream-tls-cert", K_STR, O(downstream_tls_cert), NULL, "FILE",
     "client certificate presented downstream (with downstream-tls-key)"},
    {"downstream-tls-key", K_STR, O(downstream_tls_key), NULL, "FILE",
     "private key of downstream-tls-cert"},
    {"downstream-tls-server-name", K_STR, O(downstream_tls_server_name), NULL, "NAME",
     "name the downstream certificate must carry (default: the host of the destination)"},
    {"tls-min-version", K_STR, O(tls_min_version), "1.2", "1.2|1.3",
     "oldest TLS version accepted or offered"},
    {"tls-handshake-timeout", K_MS, O(tls_handshake_timeout_ms), "10s", "DURATION",
     "time allowed for a TLS handshake on a listener"},
};
#undef O
#define NKEYS (sizeof config_keys / sizeof config_keys[0])

static const key_def_t *key_find(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

bool config_key_exists(const char *key)
{
    return key_find(key) != NULL;
}

bool config_key_is_flag(const char *key)
{
    const key_def_t *k = key_find(key);
    return k && k->kind == K_BOOL;
}

static err_t bad(err_detail_t *d, const key_def_t *k, const char *key, int line, const char *why)
{
    err_set(d, ERR_BAD_CONFIG, 0, "%s%.0d%s%s: %s", line ? "line " : "", line, line ? ": " : "",
            k ? k->name : key, why);
    if (d) {
        d->segment = line;
        snprintf(d->where, sizeof d->where, "%s", k ? k->name : key);
    }
    return ERR_BAD_CONFIG;
}

/* Parses "30s", "500ms", "5m", "2h" or a bare number of milliseconds. */
static bool parse_duration(const char *s, long *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0)
        return false;
    double mult = 1;
    if (strcmp(end, "ms") == 0 || *end == '\0')
        mult = 1;
    else if (strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else
        return false;
    v *= mult;
    if (v > (double)LONG_MAX / 2)
        return false;
    *out = (long)v;
    return true;
}

/* Parses "4096", "64K", "4M", "1G". */
static bool parse_size(const char *s, long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0)
        return false;
    long long mult = 1;
    if (*end == 'k' || *end == 'K')
        mult = 1024, end++;
    else if (*end == 'm' || *end == 'M')
        mult = 1024 * 1024, end++;
    else if (*end == 'g' || *end == 'G')
        mult = 1024LL * 1024 * 1024, end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || v > LONG_MAX / mult)
        return false;
    *out = (long)(v * mult);
    return true;
}

static bool parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < 0)
        return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return *out = true, true;
        if (strcasecmp(s, no[i]) == 0)
            return *out = false, true;
    }
    return false;
}

/* "HOST:PORT", "[v6]:PORT", ":PORT" (all interfaces of 127.0.0.1?) or "off". */
static bool parse_addr(const char *s, config_addr_t *a)
{
    memset(a, 0, sizeof *a);
    a->set = true;
    if (strcmp(s, "off") == 0 || strcmp(s, "none") == 0 || *s == '\0')
        return true;
    const char *colon = strrchr(s, ':');
    if (!colon)
        return false;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']')
        h++, hl -= 2;
    if (hl == 0)
        h = "0.0.0.0", hl = 7;
    if (hl >= sizeof a->host)
        return false;
    long port;
    if (!parse_long(colon + 1, &port) || port < 1 || port > 65535)
        return false;
    memcpy(a->host, h, hl);
    a->host[hl] = '\0';
    a->port = (int)port;
    return true;
}

err_t config_set(config_t *c, const char *key, const char *value, int line, err_detail_t *d)
{
    const key_def_t *k = key_find(key);
    if (!k)
        return bad(d, NULL, key, line, "unknown setting (see spinegate --help)");
    void *field = (char *)c + k->offset;
    switch (k->kind) {
    case K_STR: {
        char **s = field;
        xfree(*s);
        *s = (strcmp(value, "") == 0) ? NULL : xstrdup(value);
        return ERR_OK;
    }
    case K_ADDR:
        if (!parse_addr(value, field))
            return bad(d, k, key, line, "expected HOST:PORT or off");
        return ERR_OK;
    case K_LONG:
        if (!parse_long(value, field))
            return bad(d, k, key, line, "expected a non-negative whole number");
        return ERR_OK;
    case K_MS:
        if (!parse_duration(value, field))
            return bad(d, k, key, line, "expected a duration such as 500ms, 30s, 5m");
        return ERR_OK;
    case K_SIZE:
        if (!parse_size(value, field))
            return bad(d, k, key, line, "expected a size such as 65536, 64K, 4M");
        return ERR_OK;
    case K_BOOL:
        if (!parse_bool(value, field))
            return bad(d, k, key, line, "expected yes or no");
        return ERR_OK;
    case K_LIST: {
        const char *eq = strchr(value, '=');
        if (!eq || eq == value || !eq[1])
            return bad(d, k, key, line, "expected RULE=SEVERITY");
        if (c->nseverity >= CONFIG_MAX_OVERRIDES)
            return bad(d, k, key, line, "too many overrides");
        c->severity[c->nseverity++] = xstrdup(value);
        c->severity[c->nseverity] = NULL;
        return ERR_OK;
    }
    case K_LINES: {
        char **s = field;
        if (!*value)
            return ERR_OK;
        if (strchr(value, '\n'))
            return bad(d, k, key, line, "one value a line");
        size_t have = *s ? strlen(*s) : 0, n = strlen(value);
        *s = xrealloc(*s, have + n + 2);
        if (have)
            (*s)[have++] = '\n';
        memcpy(*s + have, value, n + 1);
        return ERR_OK;
    }
    }
    return bad(d, k, key, line, "unsupported");
}

void config_defaults(config_t *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NKEYS; i++)
        if (config_keys[i].def)
            config_set(c, config_keys[i].name, config_keys[i].def, 0, NULL);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

err_t config_load_file(config_t *c, const char *path, err_detail_t *d)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(d, ERR_IO, 0, "cannot open %s: %s", path, strerror(errno));
    char line[4096];
    int lineno = 0;
    err_t rc = ERR_OK;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = bad(d, NULL, "(line)", lineno, "line too long");
            break;
        }
        char *s = trim(line);
        if (*s == '#' || *s == '\0')
            continue;
        char *sep = strchr(s, '=');
        if (!sep) {
            rc = bad(d, NULL, s, lineno, "expected key = value");
            break;
        }
        *sep = '\0';
        char *key = trim(s), *value = trim(sep + 1);
        size_t vl = strlen(value);
        if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"')
            value[vl - 1] = '\0', value++;
        if ((rc = config_set(c, key, value, lineno, d)) != ERR_OK)
            break;
    }
    fclose(f);
    if (rc == ERR_OK) {
        xfree(c->config_path);
        c->config_path = xstrdup(path);
    } else if (d && strncmp(d->msg, "line", 4) == 0) {
        char tmp[sizeof d->msg];
        snprintf(tmp, sizeof tmp, "%s", d->msg);
        snprintf(d->msg, sizeof d->msg, "%.60s: %.120s", path, tmp);
    }
    return rc;
}

/* The index of s among the NULL-terminated choices, or -1 (NULL is none of
 * them). */
static int choice_of(const char *s, const char *const *choices)
{
    for (int i = 0; s && choices[i]; i++)
        if (strcmp(s, choices[i]) == 0)
            return i;
    return -1;
}

static bool one_of(const char *s, const char *const *choices)
{
    return choice_of(s, choices) >= 0;
}

/* The TLS settings of one listener (prefix "mllp" or "http") hang together:
 * a certificate needs its key, mTLS and the allow-list need TLS. The files
 * themselves are read when the listener starts. */
static err_t validate_listener_tls(const char *prefix, const char *cert, const char *key,
                                   const char *client_ca, const char *allow, err_detail_t *d)
{
    if (!cert != !key)
        return err_set(d, ERR_BAD_CONFIG, 0, "%s-tls-cert and %s-tls-key go together", prefix,
                       prefix);
    if (client_ca && !cert)
        return err_set(d, ERR_BAD_CONFIG, 0, "%s-tls-client-ca needs %s-tls-cert and -key",
                       prefix, prefix);
    if (allow && !client_ca)
        return err_set(d, ERR_BAD_CONFIG, 0,
                       "%s-tls-allow needs %s-tls-client-ca (client certificates)", prefix,
                       prefix);
    return ERR_OK;
}

static err_t config_validate_tls(const config_t *c, err_detail_t *d)
{
    static const char *const versions[] = {"1.2", "1.3", NULL};
    if (!one_of(c->tls_min_version, versions))
        return err_set(d, ERR_BAD_CONFIG, 0, "tls-min-version: expected 1.2 or 1.3");
    if (c->tls_handshake_timeout_ms < 100)
        return err_set(d, ERR_BAD_CONFIG, 0, "tls-handshake-timeout: at least 100ms");
    err_t rc = validate_listener_tls("mllp", c->mllp_tls_cert, c->mllp_tls_key,
                                     c->mllp_tls_client_ca, c->mllp_tls_allow, d);
    if (rc == ERR_OK)
        rc = validate_listener_tls("http", c->http_tls_cert, c->http_tls_key,
                                   c->http_tls_client_ca, c->http_tls_allow, d);
    if (rc == ERR_OK)
        rc = validate_listener_tls("admin", c->admin_tls_cert, c->admin_tls_key, NULL, NULL, d);
    if (rc == ERR_OK && !c->downstream_tls_cert != !c->downstream_tls_key)
        return err_set(d, ERR_BAD_CONFIG, 0,
                       "downstream-tls-cert and downstream-tls-key go together");
    return rc;
}

bool config_host_is_loopback(const char *host)
{
    unsigned char a[sizeof(struct in6_addr)];
    if (strcasecmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, a) == 1)
        return a[0] == 127;
    return inet_pton(AF_INET6, host, a) == 1 && IN6_IS_ADDR_LOOPBACK((struct in6_addr *)a);
}

/* Whether the HTTP listener speaks TLS, and whether it verifies client
 * certificates (which authenticate a request as a token does). The TLS
 * settings (http-tls-cert, http-tls-client-ca) are read here and nowhere
 * else in this file's checks; without them the listener is plain. */
static bool http_tls_on(const config_t *c)
{
    return c->http_tls_cert != NULL;
}

static bool http_client_certs_on(const config_t *c)
{
    return c->http_tls_client_ca != NULL;
}

/* Who may reach the HTTP listener (spinegate.conf(5), AUTHENTICATION in
 * spinegate(8)): without authentication only on loopback, unless insecure
 * says the operator has put something else in front of it. */
static err_t validate_http_access(const config_t *c, err_detail_t *d)
{
    static const char *const modes[] = {"token", "none", NULL};
    if (!one_of(c->http_auth, modes))
        return err_set(d, ERR_BAD_CONFIG, 0, "http-auth: expected token or none");
    bool none = strcmp(c->http_auth, "none") == 0;
    if (none && c->http_tokens)
        return err_set(d, ERR_BAD_CONFIG, 0,
                       "http-tokens is set but http-auth = none would not ask for them: "
                       "remove one of the two");
    if (!c->listen_http.port || !none || config_host_is_loopback(c->listen_http.host) ||
        c->insecure)
        return ERR_OK;
    return err_set(d, ERR_BAD_CONFIG, 0,
                   "listen-http %.60s is not a loopback address: http-auth = none would let "
                   "anyone who reaches it send and read claims; set http-tokens (and TLS), or "
                   "insecure = yes if a proxy in front authenticates",
                   c->listen_http.host);
}

size_t config_http_warnings(const config_t *c, const char **w, size_t cap)
{
    size_t n = 0;
    if (!c->listen_http.port)
        return 0;
    bool none = strcmp(c->http_auth, "none") == 0;
    if (!none && !c->http_tokens && !http_client_certs_on(c) && n < cap)
        w[n++] = "http-auth = token but no http-tokens file: every HTTP endpoint but /healthz, "
                 "/readyz and metadata answers 401";
    if (config_host_is_loopback(c->listen_http.host) || http_tls_on(c) || n >= cap)
        return n;
    w[n++] = none ? "insecure = yes: the HTTP listener is not on loopback and answers anyone, "
                    "without TLS or authentication"
                  : "the HTTP listener is not on loopback and has no TLS: bearer tokens and "
                    "claims cross the network in clear";
    return n;
}

err_t config_validate(config_t *c, err_detail_t *d)
{
    static const char *const syncs[] = {"full", "normal", NULL},
                             *const backends[] = {"sqlite", "postgres", NULL},
                             *const annotations[] = {"zsg", "nte", NULL},
                             *const others[] = {"forward", "reject", NULL},
                             *const targets[] = {"stderr", "syslog", NULL};
    /* MLLP is the default front unless the site asked for HTTP only. */
    if (!c->listen_mllp.set && !c->listen_http.port)
        parse_addr(CONFIG_DEFAULT_MLLP, &c->listen_mllp);
    if (!c->listen_mllp.port && !c->listen_http.port)
        return err_set(d, ERR_BAD_CONFIG, 0, "no listener: set listen-mllp or listen-http");
    if (!c->data_dir)
        return err_set(d, ERR_BAD_CONFIG, 0, "data-dir must be set");
    if (!one_of(c->queue_sync, syncs))
        return err_set(d, ERR_BAD_CONFIG, 0, "queue-sync: expected full or normal");
    if (!one_of(c->queue_backend, backends))
        return err_set(d, ERR_BAD_CONFIG, 0, "queue: expected sqlite or postgres");
    if (strcmp(c->queue_backend, "postgres") == 0 && (!c->queue_url || !c->queue_url[0]))
        return err_set(d, ERR_BAD_CONFIG, 0, "queue = postgres needs queue-url");
    if (!one_of(c->annotation, annotations))
        return err_set(d, ERR_BAD_CONFIG, 0, "annotation: expected zsg or nte");
    if (!one_of(c->other_messages, others))
        return err_set(d, ERR_BAD_CONFIG, 0, "other-messages: expected forward or reject");
    /* Read once here, so that no message compares strings. */
    c->sync = (config_sync_t)choice_of(c->queue_sync, syncs);
    c->annotation_style = (config_annotation_t)choice_of(c->annotation, annotations);
    c->others = (config_others_t)choice_of(c->other_messages, others);
    if (!c->log_level || log_level_parse(c->log_level) < 0)
        return err_set(d, ERR_BAD_CONFIG, 0, "log-level: expected error, warn, info or debug");
    rule_adt_mode_t adt;
    if (!config_adt_parse(c->adt, &adt))
        return err_set(d, ERR_BAD_CONFIG, 0, "adt: expected annotate, judge or forward");
    if (!one_of(c->log_target, targets))
        return err_set(d, ERR_BAD_CONFIG, 0, "log: expected stderr or syslog");
    if (!c->fhir_base || c->fhir_base[0] != '/')
        return err_set(d, ERR_BAD_CONFIG, 0, "fhir-base: must start with /");
    if (c->downstream_fhir && strncmp(c->downstream_fhir, "http://", 7) != 0 &&
        strncmp(c->downstream_fhir, "https://", 8) != 0)
        return err_set(d, ERR_BAD_CONFIG, 0, "downstream-fhir: expected an http:// or https:// URL");
    if (c->max_message_size < 64 || c->max_body_size < 64)
        return err_set(d, ERR_BAD_CONFIG, 0, "max-message-size/max-body-size: at least 64 bytes");
    if (c->retry_max < 0 || c->retry_max > 1000000000)
        return err_set(d, ERR_BAD_CONFIG, 0, "retry-max: 0 (forever) or a number of tries");
    if (c->downstream_window < 1 || c->downstream_window > 64)
        return err_set(d, ERR_BAD_CONFIG, 0, "downstream-window: 1 to 64");
    if (c->reject_retries < 1 || c->reject_retries > 1000)
        return err_set(d, ERR_BAD_CONFIG, 0, "downstream-reject-retries: 1 to 1000");
    if (c->queue_high_water < 0)
        return err_set(d, ERR_BAD_CONFIG, 0, "queue-high-water: 0 or more");
    if (c->retry_base_ms < 1 || c->retry_max_delay_ms > 86400000L)
        return err_set(d, ERR_BAD_CONFIG, 0,
                       "retry-base: at least 1ms; retry-max-delay: at most 24h");
    if (c->max_diagnoses < 1)
        return err_set(d, ERR_BAD_CONFIG, 0, "max-diagnoses: at least 1");
    if (c->max_buffered_bytes < c->max_message_size || c->max_buffered_bytes < c->max_body_size)
        return err_set(d, ERR_BAD_CONFIG, 0,
                       "max-buffered-bytes: at least max-message-size and max-body-size");
    if (c->queue_max < 1)
        return err_set(d, ERR_BAD_CONFIG, 0, "queue-max: at least 1");
    if (c->listen_admin.port && c->admin_session_ttl_ms < 1000)
        return err_set(d, ERR_BAD_CONFIG, 0, "admin-session-ttl: at least 1s");
    if (c->admin_lockout_attempts < 1 || c->admin_lockout_attempts > 1000)
        return err_set(d, ERR_BAD_CONFIG, 0, "admin-lockout-attempts: 1 to 1000");
    if (c->admin_lockout_minutes < 1 || c->admin_lockout_minutes > 10080)
        return err_set(d, ERR_BAD_CONFIG, 0, "admin-lockout-minutes: 1 to 10080 (a week)");
    if (c->inbox_poll_ms < 10 || c->inbox_poll_ms > 3600000L)
        return err_set(d, ERR_BAD_CONFIG, 0, "inbox-poll: 10ms to 1h");
    err_t rc = config_validate_tls(c, d);
    if (rc != ERR_OK)
        return rc;
    rc = validate_http_access(c, d);
    if (rc != ERR_OK)
        return rc;
    c->auth = strcmp(c->http_auth, "none") == 0 ? CONFIG_AUTH_NONE : CONFIG_AUTH_TOKEN;
    c->tls_min = strcmp(c->tls_min_version, "1.3") == 0 ? 13 : 12;
    return ERR_OK;
}

size_t config_admin_warnings(const config_t *c, const char **w, size_t cap)
{
    if (!c->listen_admin.port || config_host_is_loopback(c->listen_admin.host) ||
        c->admin_secure_cookie || c->admin_tls_cert || cap == 0)
        return 0;
    w[0] = "listen-admin is not on loopback and has no TLS (admin-tls-cert): passwords, "
           "session cookies and patient data (PHI) cross the network in clear";
    return 1;
}

static const char *const adt_names[] = {
    [RULE_ADT_ANNOTATE] = "annotate",
    [RULE_ADT_JUDGE] = "judge",
    [RULE_ADT_FORWARD] = "forward",
};

bool config_adt_parse(const char *s, rule_adt_mode_t *out)
{
    for (size_t i = 0; s && i < sizeof adt_names / sizeof adt_names[0]; i++)
        if (adt_names[i] && strcmp(s, adt_names[i]) == 0) {
            *out = (rule_adt_mode_t)i;
            return true;
        }
    return false;
}

const char *config_adt_name(rule_adt_mode_t m)
{
    return (unsigned)m < sizeof adt_names / sizeof adt_names[0] && adt_names[m] ? adt_names[m]
                                                                                 : "?";
}

void config_rule_policy(const config_t *c, rule_policy_t *p)
{
    memset(p, 0, sizeof *p);
    p->advisory = c->advisory;
    p->severity_overrides = (const char *const *)c->severity;
    p->adt = RULE_ADT_ANNOTATE;
    config_adt_parse(c->adt, &p->adt);
}

static void format_value(const config_t *c, const key_def_t *k, char *out, size_t cap)
{
    const void *field = (const char *)c + k->offset;
    switch (k->kind) {
    case K_STR: {
        const char *s = *(char *const *)field;
        snprintf(out, cap, "%s", s ? s : "");
        break;
    }
    case K_ADDR: {
        const config_addr_t *a = field;
        if (a->port)
            snprintf(out, cap, strchr(a->host, ':') ? "[%s]:%d" : "%s:%d", a->host, a->port);
        else
            snprintf(out, cap, "off");
        break;
    }
    case K_LONG:
    case K_SIZE:
        snprintf(out, cap, "%ld", *(const long *)field);
        break;
    case K_MS:
        snprintf(out, cap, "%ldms", *(const long *)field);
        break;
    case K_BOOL:
        snprintf(out, cap, "%s", *(const bool *)field ? "yes" : "no");
        break;
    case K_LIST:
    case K_LINES:
        out[0] = '\0';
        break;
    }
}

void config_print_help(FILE *f)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def_t *k = &config_keys[i];
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", k->name, k->arg ? " " : "", k->arg ? k->arg : "");
        fprintf(f, "  %-34s %s", left, k->help);
        if (k->def && k->kind != K_BOOL)
            fprintf(f, " [%s]", k->def);
        fputc('\n', f);
    }
}

void config_dump(const config_t *c, FILE *f)
{
    char v[512];
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def_t *k = &config_keys[i];
        if (k->kind == K_LIST) {
            for (int j = 0; j < c->nseverity; j++)
                fprintf(f, "%s = %s\n", k->name, c->severity[j]);
            continue;
        }
        if (k->kind == K_LINES) {
            const char *s = *(char *const *)((const char *)c + k->offset);
            if (!s || !*s)
                fprintf(f, "# %s =\n", k->name);
            while (s && *s) {
                size_t n = strcspn(s, "\n");
                fprintf(f, "%s = %.*s\n", k->name, (int)n, s);
                s += n + (s[n] == '\n');
            }
            continue;
        }
        format_value(c, k, v, sizeof v);
        if (v[0])
            fprintf(f, "%s = %s\n", k->name, v);
        else
            fprintf(f, "# %s =\n", k->name);
    }
}

void config_free(config_t *c)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (config_keys[i].kind == K_STR || config_keys[i].kind == K_LINES) {
            char **s = (char **)((char *)c + config_keys[i].offset);
            xfree(*s);
            *s = NULL;
        }
    for (int j = 0; j < c->nseverity; j++)
        xfree(c->severity[j]);
    c->nseverity = 0;
    c->severity[0] = NULL;
    xfree(c->config_path);
    c->config_path = NULL;
}
