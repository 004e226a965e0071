/* tls.h - TLS for the sockets of every stage, through OpenSSL 3 memory BIOs:
 * the caller moves ciphertext between its own socket (a libuv stream) and a
 * tls_conn_t, and gets plaintext in and out, so one loop serves TLS and
 * plaintext connections alike and no socket is ever handed to OpenSSL.
 *
 * Ownership: a tls_ctx_t (certificate, key, CA, allow-list, minimum version)
 * is reference counted: tls_ctx_new produces one reference, each tls_conn_t
 * holds one, so a reload can put a new context in place while connections
 * made with the old one go on. tls_conn_free accepts NULL. Not thread-safe:
 * one thread (the loop) per context and its connections.
 */
#ifndef SPINEGATE_TLS_H
#define SPINEGATE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct tls_ctx tls_ctx_t;
typedef struct tls_conn tls_conn_t;

typedef enum { TLS_SERVER, TLS_CLIENT } tls_role_t;

typedef struct {
    const char *cert_file; /* PEM chain, leaf first; required for a server */
    const char *key_file;  /* PEM private key of cert_file */
    /* Server: CA bundle that client certificates must chain to; set, it
     * makes the listener require one (mTLS). Client: CA bundle the server is
     * verified against; NULL uses the system's (/etc/ssl/certs). */
    const char *ca_file;
    /* Server with ca_file: patterns (fnmatch(3) globs), one a line, matched
     * against the client certificate's subject ("CN=...,O=..." as RFC 2253
     * prints it), its CN and each DNS, email and URI name of its SAN; one
     * match admits it. NULL or empty: every certificate from ca_file. */
    const char *allow;
    int min_version; /* 12 or 13 (TLS 1.2, 1.3); 0 = 12 */
} tls_settings_t;

/* Builds a context from s: reads and checks the files now (the key must
 * match the certificate), so a broken file is found at start or reload and
 * never by a connection. Ciphers are OpenSSL's defaults at security level 2.
 * Errors: ERR_BAD_CONFIG (missing or unreadable file, key does not match,
 * bad version, server without a certificate), detail names the file and
 * OpenSSL's reason. *out is NULL on failure. */
err_t tls_ctx_new(tls_role_t role, const tls_settings_t *s, tls_ctx_t **out, err_detail_t *d);

void tls_ctx_ref(tls_ctx_t *ctx);
void tls_ctx_unref(tls_ctx_t *ctx); /* NULL is fine */

/* When ctx's own certificate stops being valid (Unix seconds), or 0 when it
 * has none. */
int64_t tls_ctx_not_after(const tls_ctx_t *ctx);

/* True when a server context requires client certificates. */
bool tls_ctx_mutual(const tls_ctx_t *ctx);

/* A connection over ctx (takes a reference). For a client, server_name is
 * sent as SNI and the server's certificate must name it (a DNS name, or an
 * IP address when it is one); NULL skips the name check (the chain is still
 * verified). The client handshake starts on the first tls_conn_read. */
tls_conn_t *tls_conn_new(tls_ctx_t *ctx, const char *server_name);
void tls_conn_free(tls_conn_t *t);

/* Hands n bytes of ciphertext from the peer to t. */
void tls_conn_feed(tls_conn_t *t, const void *p, size_t n);

/* Drives the handshake and decrypts what has been fed: writes at most cap
 * bytes of plaintext to out. Returns the byte count (> 0), 0 when nothing
 * more can be read until more ciphertext is fed (or the peer closed: see
 * tls_conn_peer_closed), or -1 when the connection failed (a handshake
 * failure, a certificate refused, a bad record: tls_conn_error says why).
 * Either way ciphertext may be waiting to be sent (tls_conn_out_pending). */
long tls_conn_read(tls_conn_t *t, void *out, size_t cap);

/* Encrypts n bytes of plaintext into the outgoing ciphertext. Only once the
 * handshake is done. Returns 0, or -1 (tls_conn_error says why). */
int tls_conn_write(tls_conn_t *t, const void *p, size_t n);

/* Queues a close_notify alert (the orderly end of a TLS stream). */
void tls_conn_close_notify(tls_conn_t *t);

/* Ciphertext waiting to be sent, and taking it: tls_conn_out_take copies
 * at most cap bytes to out and returns how many. */
size_t tls_conn_out_pending(const tls_conn_t *t);
size_t tls_conn_out_take(tls_conn_t *t, void *out, size_t cap);

bool tls_conn_established(const tls_conn_t *t);
bool tls_conn_peer_closed(const tls_conn_t *t);

/* True when t failed because a valid client certificate matched no pattern
 * of the allow-list (rather than a handshake failure). */
bool tls_conn_not_allowed(const tls_conn_t *t);

/* Why the connection failed (a short text, no message content). */
const char *tls_conn_error(const tls_conn_t *t);

/* The negotiated version ("TLSv1.3") and, once established with a client
 * certificate, its subject; "" when there is none. For log lines. */
const char *tls_conn_version(const tls_conn_t *t);
const char *tls_conn_peer_subject(const tls_conn_t *t);

/* True when the first byte a client sent cannot start a TLS handshake (a
 * handshake record begins with 0x16): plaintext sent to a TLS port. */
static inline bool tls_looks_like_plaintext(unsigned char first_byte)
{
    return first_byte != 0x16;
}

/* Counters a TLS listener keeps, for /metrics. */
typedef struct {
    uint64_t handshakes; /* completed */
    uint64_t failed;     /* handshake failures: bad certificate, protocol, closed early */
    uint64_t plaintext;  /* plaintext sent to the TLS port */
    uint64_t timeouts;   /* stalled mid-handshake past the timeout */
    uint64_t refused;    /* client certificate valid but not on the allow-list */
} tls_stats_t;

#endif
