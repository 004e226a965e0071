/* out_int.h - what the deliverer (out.c) and its transports (out_mllp.c,
 * out_http.c, out_dir.c) share. A transport answers each row it is given
 * exactly once through out__send_done(); the row is borrowed until then. A
 * transport with `window` set may be given more rows (up to the destination's
 * window) before it answers the first; it answers them in the order given,
 * and an answer other than OUT_RES_OK for the first means it has forgotten
 * the others (its connection is gone): the deliverer sends them again. Not
 * for other modules. */
#ifndef SPINEGATE_OUT_INT_H
#define SPINEGATE_OUT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "out.h"
#include "queue.h"

typedef enum {
    OUT_RES_OK,        /* downstream accepted it */
    OUT_RES_RETRY,     /* try again after a backoff */
    OUT_RES_PERMANENT, /* will never succeed: dead-letter now */
    OUT_RES_REJECT,    /* downstream refused the message itself (HL7 AE/AR, HTTP 4xx):
                          dead-letter after reject_tries, with the answer's text */
    OUT_RES_STORAGE,   /* a local write failed (ENOSPC, EIO): not the message's fault,
                          retried with backoff however long it takes */
} out__res_t;

typedef struct {
    const char *name;
    /* Checks the options and sets up d->tp (handles, connections are lazy). */
    err_t (*init)(out_dest_t *d, err_detail_t *e);
    /* Sends row; answers with out__send_done() later (never from inside send). */
    void (*send)(out_dest_t *d, const queue_row_t *row);
    /* Closes every handle; calls out__transport_closed(d) when all are closed.
     * Never called while a send is unanswered. */
    void (*close)(out_dest_t *d);
    bool window; /* takes several rows in flight (answers in order, see above) */
    /* When not NULL, send only takes the row: flush writes every row taken
     * since, together. The deliverer calls it after its sends of one turn. */
    void (*flush)(out_dest_t *d);
} out__transport_t;

extern const out__transport_t out__mllp, out__http, out__dir;

struct out_dest {
    uv_loop_t *loop;
    queue_t *q;
    queue_reader_t *reader;
    out_dest_opts_t o; /* strings below are our copies */
    char *s_dest, *s_host, *s_url, *s_resource, *s_dir, *s_ext, *s_dead_dir;
    char *s_tls_server_name, *s_tls_ca, *s_tls_cert, *s_tls_key; /* o.tls is a reference */
    const out__transport_t *tp;
    void *tp_state;
    bool connected; /* kept by the transport, for stats */

    queue_row_t **ring; /* fetched, not yet sent */
    size_t ring_head, ring_n, ring_cap;
    int cursor_fd;        /* "<queue path>.<dest>.cursor", see out.h */
    bool no_cursor;       /* a queue with no file (PostgreSQL): marks commit one by one */
    uint64_t lease;       /* queue_reader_lease() the ring's rows were fetched under */
    int64_t instance;     /* queue_instance(), written into each cursor record */
    int64_t skip_upto;    /* rows fetched with id <= this were delivered before a crash */
    int64_t dead_pending; /* dead row whose cursor waits for its dead mark to commit */
    bool cursor_failing;  /* the last cursor write failed (logged once) */
    int64_t cursor_last;  /* the id last written (or tried) to the cursor file */
    int64_t cursor_due;   /* delivered up to here: written at the end of the loop turn */
    uv_check_t cursor_check; /* runs that write */
    queue_row_t *cur;  /* being sent or waiting for its retry: the oldest in flight */
    queue_row_t *ahead[OUT_WINDOW_MAX]; /* sent after cur, unanswered, oldest first */
    size_t ahead_n;
    unsigned attempts; /* of cur, including those before a restart */
    bool started, sending, fetching, dead_writing, stopping, stopped;
    uv_timer_t retry_timer, fetch_timer;
    uv_work_t dead_work;
    char dead_reason[128];
    char *dead_detail; /* downstream's own error text for the .reason file; NULL = none */
    int dead_rc;
    unsigned rejects;         /* application rejects of cur, persisted with each attempt */
    unsigned storage_tries;   /* consecutive failed dead-letter writes of cur */
    bool dead_retry;          /* cur is to be dead-lettered again when retry_timer fires */
    int64_t failing_since_ms; /* wall clock of the first failure of the head message; 0 = ok */
    unsigned handles_open;
    out_stop_cb stop_cb;
    void *stop_user;
    out_stats_t st;
};

/* The cursor file's one record, at offset 0: the row id, the queue's
 * instance (queue_instance) and a check value over both, each 8 bytes
 * little-endian. */
#define OUT_CURSOR_LEN 24
void out__cursor_encode(unsigned char rec[OUT_CURSOR_LEN], int64_t id, int64_t instance);
/* True, with *id and *instance, when rec is exactly one record that passes
 * its check. */
bool out__cursor_decode(const unsigned char *rec, size_t n, int64_t *id, int64_t *instance);

/* The transport's answer for the row given to send(). reason is for logs and
 * the dead-letter note (never content); NULL for OK. */
void out__send_done(out_dest_t *d, out__res_t res, const char *reason);

/* As out__send_done(), with the downstream's own error text (MSA-3 and ERR,
 * an OperationOutcome) for an OUT_RES_REJECT: it is written into the
 * dead-letter .reason file, never logged (it may quote the message). detail
 * is borrowed for the call; NULL = none. */
void out__send_done_detail(out_dest_t *d, out__res_t res, const char *reason, const char *detail);

/* The transport's handles are all closed. */
void out__transport_closed(out_dest_t *d);

/* "hl7", "json", "xml" or "bin" from a content type. */
const char *out__ext_for(const char *content_type);

/* "<seq, 12 digits>-<control id with [^A-Za-z0-9._-] as _, at most 64>.<ext>" */
void out__file_name(char *buf, size_t n, int64_t seq, const char *control_id, const char *ext);

/* Creates dir and its parents (mode 0750). Returns 0 or an errno. */
int out__mkdirs(const char *dir);

/* Writes n bytes of p to dir/name atomically: a hidden temp file, fsync,
 * rename, fsync of the folder (no fsync when !sync). Blocking: call it off the
 * loop thread. Returns 0 or an errno. */
int out__write_atomic(const char *dir, const char *name, const void *p, size_t n, bool sync);

/* mllp_ack_read() (common/mllp_ack.h) as a delivery result: OUT_RES_OK for
 * AA/CA, OUT_RES_REJECT for AE/AR/CE/CR ("downstream answered AE": billing
 * refused the message itself), OUT_RES_RETRY otherwise with a reason ("no
 * MSA segment", "ACK for another control id"). ctrl may be "" (not checked). */
out__res_t out__mllp_ack_parse(const char *p, size_t n, const char *ctrl, char *reason,
                               size_t reasonlen);

#endif
