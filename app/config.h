/* config.h - the daemon's settings: one table of keys, read from a config
 * file ("key = value" lines) and from the command line (--key value), with
 * the same names and defaults in both, in --help and in spinegate.conf(5).
 *
 * config_t is a value type owned by its caller; config_free() releases the
 * strings it holds. A reload builds a new config_t and swaps it whole.
 */
#ifndef SPINEGATE_CONFIG_H
#define SPINEGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "err.h"
#include "rules.h"

#define CONFIG_MAX_OVERRIDES 64

/* The settings that name one of a few choices, as read by config_validate()
 * (the strings stay for messages and the configuration dump). In the order of
 * the choices' lists in config.c. */
typedef enum { CONFIG_SYNC_FULL, CONFIG_SYNC_NORMAL } config_sync_t;
typedef enum { CONFIG_ANNOTATION_ZSG, CONFIG_ANNOTATION_NTE } config_annotation_t;
typedef enum { CONFIG_OTHERS_FORWARD, CONFIG_OTHERS_REJECT } config_others_t;
typedef enum { CONFIG_AUTH_TOKEN, CONFIG_AUTH_NONE } config_auth_t;

typedef struct {
    char host[256];
    int port; /* 0 = off */
    bool set; /* given in the file or on the command line (even as "off") */
} config_addr_t;

/* The MLLP listener when none is configured and HTTP is not either. */
#define CONFIG_DEFAULT_MLLP "127.0.0.1:2575"

typedef struct {
    /* listeners */
    config_addr_t listen_mllp;
    config_addr_t listen_http;
    char *fhir_base;
    char *http_auth;    /* "token" | "none" (none: loopback only, or insecure) */
    config_auth_t auth; /* http_auth, read once by config_validate() */
    char *http_tokens;  /* the bearer tokens file, or NULL */
    config_addr_t listen_admin; /* the worklist web page; port 0 = off */
    char *admin_users;          /* its accounts file; NULL = DATA-DIR/admin-users */
    long admin_session_ttl_ms;  /* idle time before a session ends */
    bool admin_secure_cookie;   /* the page is reached over TLS: Secure cookies */
    char *admin_tls_cert, *admin_tls_key; /* the page speaks TLS itself */
    long admin_lockout_attempts; /* failed logins of one account before it is locked */
    long admin_lockout_minutes;  /* ... within this long, and locked this long */
    bool insecure;      /* allow a non-loopback HTTP listener without TLS and auth */
    /* storage */
    char *data_dir;
    char *queue_backend;       /* "sqlite" | "postgres" */
    char *queue_url;           /* queue = postgres: libpq conninfo or URI */
    char *queue_sync;          /* "full" | "normal" */
    config_sync_t sync;        /* queue_sync, read once by config_validate() */
    bool queue_log;            /* SQLite queue: the message log (queue.h message_log) */
    long queue_max;
    /* downstream */
    config_addr_t downstream_mllp;
    char *downstream_fhir;     /* URL or NULL */
    config_addr_t reject_mllp; /* reject sink as MLLP, or the reject dir */
    long ack_timeout_ms;
    long downstream_window; /* MLLP messages in flight at once */
    long retry_max;      /* transport failures before dead-letter; 0 = forever */
    long reject_retries; /* application rejects before dead-letter */
    long retry_base_ms;
    long retry_max_delay_ms;
    long unready_after_ms;     /* /readyz: a destination failing this long is not ready */
    long queue_high_water;     /* /readyz: more waiting than this is not ready; 0 = 90% */
    bool accept_empty_queue;   /* start on a missing/empty queue of a used data folder */
    char *annotation;          /* "zsg" | "nte" */
    config_annotation_t annotation_style; /* annotation, read once by config_validate() */
    bool annotate_accepted;    /* the verdict header also on messages with no findings */
    char *other_messages;      /* "forward" | "reject": messages that carry no claim */
    config_others_t others;    /* other_messages, read once by config_validate() */
    long worklist_retention;   /* days a worklist item not open is kept */
    long inbox_poll_ms;        /* how often the queue looks at the inbox */
    bool worklist_annotated;   /* annotated messages become worklist items too */
    /* limits */
    long max_message_size;
    long max_body_size;
    long max_diagnoses;      /* diagnoses in one claim */
    long max_buffered_bytes; /* daemon-wide budget for unfinished input */
    long max_connections;
    long idle_timeout_ms;
    long header_timeout_ms;
    long body_timeout_ms;
    /* rules */
    char *rules_path;          /* NULL = built in */
    char *tables_path;         /* NULL = built in */
    bool advisory;
    char *severity[CONFIG_MAX_OVERRIDES + 1]; /* "rule=sev", NULL-terminated */
    int nseverity;
    char *adt;                 /* "annotate" | "judge" | "forward" (ADT messages) */
    /* logging */
    char *log_target;          /* "stderr" | "syslog" */
    char *log_level;
    bool log_phi;
    char *pid_file;
    /* TLS: paths, NULL when unset; *_allow are patterns one a line */
    char *mllp_tls_cert, *mllp_tls_key, *mllp_tls_client_ca, *mllp_tls_allow;
    char *http_tls_cert, *http_tls_key, *http_tls_client_ca, *http_tls_allow;
    bool downstream_mllp_tls;
    char *downstream_tls_ca, *downstream_tls_cert, *downstream_tls_key;
    char *downstream_tls_server_name;
    char *tls_min_version; /* "1.2" | "1.3" */
    int tls_min;           /* 12 or 13: tls_min_version, read once by config_validate() */
    long tls_handshake_timeout_ms;
    /* where the file came from, for messages */
    char *config_path;
} config_t;

/* Fills c with the defaults. */
void config_defaults(config_t *c);

/* Applies "key" = "value" (key without leading dashes). line is for the
 * error message (0 = command line). Errors: ERR_BAD_CONFIG naming the key. */
err_t config_set(config_t *c, const char *key, const char *value, int line, err_detail_t *d);

/* Reads a config file. Errors: ERR_IO, ERR_BAD_CONFIG with the line. */
err_t config_load_file(config_t *c, const char *path, err_detail_t *d);

/* Checks values that depend on each other and fills the one default that
 * does (listen-mllp, when neither listener is set). Errors: ERR_BAD_CONFIG. */
err_t config_validate(config_t *c, err_detail_t *d);

/* True when host (as in listen-*) is a loopback address: 127.0.0.0/8, ::1
 * or "localhost". */
bool config_host_is_loopback(const char *host);

/* Puts in w (up to cap) what an operator should be warned of about the
 * HTTP listener: no tokens to authenticate with, tokens crossing the network
 * in clear, no authentication at all under insecure. Returns how many.
 * c must have passed config_validate(). */
size_t config_http_warnings(const config_t *c, const char **w, size_t cap);

/* The same for the admin web page: not on loopback and not behind TLS
 * (admin-secure-cookie). Returns how many. */
size_t config_admin_warnings(const config_t *c, const char **w, size_t cap);

/* Maps an adt setting to its mode: "annotate" (the default: ADT messages
 * are judged but never rejected), "judge" (judged like a bill) or "forward"
 * (not judged). Returns false, *out untouched, for anything else. */
bool config_adt_parse(const char *s, rule_adt_mode_t *out);

/* The name of an adt mode, as written in the config file. */
const char *config_adt_name(rule_adt_mode_t m);

/* Fills p with the rule settings of c (advisory, severity, adt); the
 * overrides point into c. c must have passed config_validate(). */
void config_rule_policy(const config_t *c, rule_policy_t *p);

/* True when key names a setting that takes no value on the command line. */
bool config_key_is_flag(const char *key);

/* True when key is a known setting. */
bool config_key_exists(const char *key);

/* Writes one line per key ("  --key VALUE   help (default: x)") to f. */
void config_print_help(FILE *f);

/* Writes the effective settings as a config file to f. */
void config_dump(const config_t *c, FILE *f);

void config_free(config_t *c);

#endif
