/* http_int.h - the HTTP request assembly state machine, kept free of libuv so
 * that unit tests and the fuzz target drive it directly (http__conn_feed).
 * Ownership: the parse state owns the request being assembled; a completed
 * request is handed to on_request, which owns it from then on (and frees it
 * with http__req_free, directly or through its slot).
 */
#ifndef SPINEGATE_HTTP_INT_H
#define SPINEGATE_HTTP_INT_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "ingest_int.h"

typedef struct {
    uint32_t name_off, name_len, val_off, val_len;
} http__hdr_t;

struct http_req {
    ingest__slot_t slot; /* first; conn is NULL off-socket */
    char *raw;           /* request-target then header names and values */
    size_t raw_len, raw_cap;
    size_t url_len;
    size_t path_off, path_len, query_off, query_len;
    http__hdr_t *hdrs;
    size_t nhdr, hdr_cap;
    buf_t *body;
    size_t body_cap;
    uint8_t method, vmajor, vminor;
    bool keep_alive, expect_continue, headers_done, head;
};

typedef struct http__parse {
    http_parser hp;
    const http_opts_t *opts;
    void *owner;
    http_req_t *cur; /* request being assembled */
    int last;        /* 0 none, 1 header field, 2 header value */
    int error;       /* status the server must answer (400/413/431), 0 = none */
    const char *why; /* short reason for logs and the error body */
    bool stop;       /* no more requests are parsed on this connection */
    bool body_expected;
    uint64_t requests;
    /* Hooks; any may be NULL except on_request. */
    void (*on_begin)(struct http__parse *p);
    void (*on_headers)(struct http__parse *p, http_req_t *req, bool body_expected);
    /* Takes ownership of req. Return false to make http__conn_feed return
     * right after this request (backpressure; set stop too to end for good). */
    bool (*on_request)(struct http__parse *p, http_req_t *req);
} http__parse_t;

/* Prepares p; opts is borrowed for p's lifetime. */
void http__parse_init(http__parse_t *p, const http_opts_t *opts, void *owner);

/* Feeds bytes; returns how many were consumed: all of them, or fewer when
 * on_request returned false (feed the rest later). Afterwards p->error != 0
 * means the connection must be answered with that status and closed; p->stop
 * means no further bytes are wanted (Connection: close, HTTP/1.0, upgrade). */
size_t http__conn_feed(http__parse_t *p, const char *data, size_t n);

/* True between the first byte of a request and its completion. */
bool http__parse_in_message(const http__parse_t *p);

/* Frees a partly assembled request; p can no longer be fed. */
void http__parse_free(http__parse_t *p);

/* Frees a request (accepts NULL). */
void http__req_free(http_req_t *r);

#endif
