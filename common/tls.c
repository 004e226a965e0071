/* tls.c - the TLS engine: SSL_CTX built from settings, and per connection an
 * SSL object between two memory BIOs (ciphertext in, ciphertext out), so the
 * caller's loop owns the socket. OpenSSL's error queue is per thread and
 * shared: every call clears it first and turns what it leaves into one line.
 *
 * Ownership: see tls.h. A tls_conn_t holds a reference to its tls_ctx_t,
 * which holds the SSL_CTX (itself reference counted by OpenSSL).
 */
#include "tls.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "xmalloc.h"

struct tls_ctx {
    SSL_CTX *ssl;
    tls_role_t role;
    unsigned refs;
    char **allow; /* NULL-terminated patterns; NULL = none */
    int64_t not_after;
};

struct tls_conn {
    tls_ctx_t *ctx;
    SSL *ssl;
    BIO *in, *out; /* in: ciphertext from the peer; out: to it */
    bool established, failed, not_allowed, peer_closed;
    char error[200];
    char subject[256];
};

/* OpenSSL allocates with malloc; like xmalloc, running out is fatal. */
static void tls_oom(void)
{
    fprintf(stderr, "spinegate: out of memory in OpenSSL\n");
    abort();
}

/* The last OpenSSL error as text, or fallback when the queue is empty. */
static void ssl_reason(char *out, size_t cap, const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    if (!e) {
        snprintf(out, cap, "%s", fallback);
        return;
    }
    const char *r = ERR_reason_error_string(e);
    snprintf(out, cap, "%s", r ? r : fallback);
    ERR_clear_error();
}

static err_t ctx_fail(err_detail_t *d, const char *what, const char *file)
{
    char why[160];
    ssl_reason(why, sizeof why, "unreadable");
    return err_set(d, ERR_BAD_CONFIG, 0, "TLS %s %s: %s", what, file ? file : "", why);
}

static int64_t cert_not_after(X509 *x)
{
    struct tm tm;
    const ASN1_TIME *t = x ? X509_get0_notAfter(x) : NULL;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

static char **split_allow(const char *allow)
{
    if (!allow || !*allow)
        return NULL;
    size_t n = 1;
    for (const char *p = allow; *p; p++)
        n += *p == '\n';
    char **v = xcalloc(n + 1, sizeof *v);
    size_t i = 0;
    const char *p = allow;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len) {
            v[i] = xmalloc(len + 1);
            memcpy(v[i], p, len);
            v[i][len] = '\0';
            i++;
        }
        p += len + (e ? 1 : 0);
    }
    return v;
}

err_t tls_ctx_new(tls_role_t role, const tls_settings_t *s, tls_ctx_t **out, err_detail_t *d)
{
    *out = NULL;
    ERR_clear_error();
    int minv = s->min_version ? s->min_version : 12;
    if (minv != 12 && minv != 13)
        return err_set(d, ERR_BAD_CONFIG, 0, "tls-min-version: expected 1.2 or 1.3");
    if (role == TLS_SERVER && (!s->cert_file || !s->key_file))
        return err_set(d, ERR_BAD_CONFIG, 0, "TLS listener: a certificate and a key are required");
    if (!s->cert_file != !s->key_file)
        return err_set(d, ERR_BAD_CONFIG, 0,
                       "TLS: a certificate needs its key and a key its "
                       "certificate");
    SSL_CTX *ssl = SSL_CTX_new(role == TLS_SERVER ? TLS_server_method() : TLS_client_method());
    if (!ssl)
        return ctx_fail(d, "context", NULL);
    err_t rc = ERR_OK;
    SSL_CTX_set_min_proto_version(ssl, minv == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    /* Level 2 is Debian's default already; set so that a changed system
     * openssl.cnf cannot lower it under us. */
    SSL_CTX_set_security_level(ssl, 2);
    /* Partial writes and a moving write buffer: the out BIO always takes a
     * whole record, but say so rather than rely on it. */
    SSL_CTX_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* A peer asking for renegotiation again and again costs us handshakes
     * for free; nothing here needs it. */
    SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION);
    /* Resumed sessions are only accepted for this context's purpose; with
     * client verification OpenSSL refuses to resume without it. */
    if (role == TLS_SERVER)
        SSL_CTX_set_session_id_context(ssl, (const unsigned char *)"spinegate", 9);
    if (s->cert_file && SSL_CTX_use_certificate_chain_file(ssl, s->cert_file) != 1)
        rc = ctx_fail(d, "certificate", s->cert_file);
    else if (s->key_file && SSL_CTX_use_PrivateKey_file(ssl, s->key_file, SSL_FILETYPE_PEM) != 1)
        rc = ctx_fail(d, "key", s->key_file);
    else if (s->key_file && SSL_CTX_check_private_key(ssl) != 1)
        rc = ctx_fail(d, "key does not match the certificate:", s->key_file);
    if (rc == ERR_OK) {
        if (role == TLS_SERVER && s->ca_file) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(s->ca_file);
            if (!names || SSL_CTX_load_verify_locations(ssl, s->ca_file, NULL) != 1) {
                sk_X509_NAME_pop_free(names, X509_NAME_free);
                rc = ctx_fail(d, "client CA", s->ca_file);
            } else {
                SSL_CTX_set_client_CA_list(ssl, names);
                SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
            }
        } else if (role == TLS_CLIENT) {
            if (s->ca_file ? SSL_CTX_load_verify_locations(ssl, s->ca_file, NULL) != 1
                           : SSL_CTX_set_default_verify_paths(ssl) != 1)
                rc = ctx_fail(d, "CA", s->ca_file ? s->ca_file : "(system)");
            SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER, NULL);
        }
    }
    if (rc != ERR_OK) {
        SSL_CTX_free(ssl);
        return rc;
    }
    tls_ctx_t *c = xcalloc(1, sizeof *c);
    c->ssl = ssl;
    c->role = role;
    c->refs = 1;
    c->not_after = cert_not_after(SSL_CTX_get0_certificate(ssl));
    if (role == TLS_SERVER && s->ca_file)
        c->allow = split_allow(s->allow);
    *out = c;
    return ERR_OK;
}

void tls_ctx_ref(tls_ctx_t *ctx)
{
    ctx->refs++;
}

void tls_ctx_unref(tls_ctx_t *ctx)
{
    if (!ctx || --ctx->refs)
        return;
    for (char **p = ctx->allow; p && *p; p++)
        xfree(*p);
    xfree(ctx->allow);
    SSL_CTX_free(ctx->ssl);
    xfree(ctx);
}

int64_t tls_ctx_not_after(const tls_ctx_t *ctx)
{
    return ctx ? ctx->not_after : 0;
}

bool tls_ctx_mutual(const tls_ctx_t *ctx)
{
    return ctx && (SSL_CTX_get_verify_mode(ctx->ssl) & SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
}

tls_conn_t *tls_conn_new(tls_ctx_t *ctx, const char *server_name)
{
    tls_conn_t *t = xcalloc(1, sizeof *t);
    ERR_clear_error();
    t->ssl = SSL_new(ctx->ssl);
    t->in = BIO_new(BIO_s_mem());
    t->out = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->in || !t->out)
        tls_oom(); /* only out of memory fails here */
    /* An empty in BIO means "try again", not end of stream. */
    BIO_set_mem_eof_return(t->in, -1);
    SSL_set_bio(t->ssl, t->in, t->out);
    tls_ctx_ref(ctx);
    t->ctx = ctx;
    if (ctx->role == TLS_SERVER) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (server_name && *server_name) {
            X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
            /* An address is checked against the IP names of the SAN; a name
             * is sent as SNI and checked against its DNS names. */
            if (X509_VERIFY_PARAM_set1_ip_asc(vp, server_name) != 1) {
                ERR_clear_error();
                SSL_set_tlsext_host_name(t->ssl, server_name);
                SSL_set1_host(t->ssl, server_name);
            }
        }
    }
    return t;
}

void tls_conn_free(tls_conn_t *t)
{
    if (!t)
        return;
    SSL_free(t->ssl); /* frees both BIOs */
    tls_ctx_unref(t->ctx);
    xfree(t);
}

void tls_conn_feed(tls_conn_t *t, const void *p, size_t n)
{
    if (n && BIO_write(t->in, p, (int)n) != (int)n)
        tls_oom();
}

/* One allow-list pattern against one name. */
static bool allow_match(char *const *allow, const char *name)
{
    for (; *allow; allow++)
        if (fnmatch(*allow, name, 0) == 0)
            return true;
    return false;
}

/* Does the client certificate match the allow-list: its subject, its CN, or
 * one of its DNS, email or URI names. */
static bool peer_allowed(tls_conn_t *t, X509 *x)
{
    char *const *allow = t->ctx->allow;
    if (allow_match(allow, t->subject))
        return true;
    char cn[256];
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) > 0 &&
        allow_match(allow, cn))
        return true;
    bool ok = false;
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names && !ok && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        const ASN1_IA5STRING *s = NULL;
        if (g->type == GEN_DNS)
            s = g->d.dNSName;
        else if (g->type == GEN_EMAIL)
            s = g->d.rfc822Name;
        else if (g->type == GEN_URI)
            s = g->d.uniformResourceIdentifier;
        if (!s)
            continue;
        char buf[512];
        int len = ASN1_STRING_length(s);
        if (len <= 0 || (size_t)len >= sizeof buf)
            continue;
        memcpy(buf, ASN1_STRING_get0_data(s), (size_t)len);
        buf[len] = '\0';
        if (strlen(buf) == (size_t)len) /* no NUL hidden inside the name */
            ok = allow_match(allow, buf);
    }
    GENERAL_NAMES_free(names);
    return ok;
}

static void subject_text(X509 *x, char *out, size_t cap)
{
    out[0] = '\0';
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return;
    X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    int n = BIO_read(b, out, (int)cap - 1);
    out[n > 0 ? n : 0] = '\0';
    BIO_free(b);
}

static long conn_fail(tls_conn_t *t, const char *fallback)
{
    t->failed = true;
    long vr = SSL_get_verify_result(t->ssl);
    char why[160];
    ssl_reason(why, sizeof why, fallback);
    if (vr != X509_V_OK)
        snprintf(t->error, sizeof t->error, "%s (%s)", why, X509_verify_cert_error_string(vr));
    else
        snprintf(t->error, sizeof t->error, "%s", why);
    return -1;
}

/* The handshake just completed: the allow-list decides on the client. */
static long conn_established(tls_conn_t *t)
{
    t->established = true;
    X509 *peer = SSL_get1_peer_certificate(t->ssl);
    if (peer) {
        subject_text(peer, t->subject, sizeof t->subject);
        if (t->ctx->role == TLS_SERVER && t->ctx->allow && !peer_allowed(t, peer)) {
            X509_free(peer);
            t->failed = t->not_allowed = true;
            snprintf(t->error, sizeof t->error, "client certificate not on the allow-list");
            return -1;
        }
        X509_free(peer);
    }
    return 0;
}

long tls_conn_read(tls_conn_t *t, void *out, size_t cap)
{
    if (t->failed)
        return -1;
    ERR_clear_error();
    if (!t->established) {
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return 0;
            return conn_fail(t, "handshake failed");
        }
        if (conn_established(t) < 0)
            return -1;
    }
    if (cap == 0 || t->peer_closed)
        return 0;
    size_t got = 0;
    int r = SSL_read_ex(t->ssl, out, cap, &got);
    if (r == 1)
        return (long)got;
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    if (e == SSL_ERROR_ZERO_RETURN) {
        t->peer_closed = true;
        return 0;
    }
    return conn_fail(t, "bad TLS record");
}

int tls_conn_write(tls_conn_t *t, const void *p, size_t n)
{
    if (t->failed || !t->established) {
        if (!t->failed)
            snprintf(t->error, sizeof t->error, "write before the handshake");
        return -1;
    }
    ERR_clear_error();
    while (n) {
        size_t done = 0;
        if (SSL_write_ex(t->ssl, p, n, &done) != 1) {
            conn_fail(t, "write failed");
            return -1;
        }
        p = (const char *)p + done;
        n -= done;
    }
    return 0;
}

void tls_conn_close_notify(tls_conn_t *t)
{
    if (t->established && !t->failed) {
        ERR_clear_error();
        SSL_shutdown(t->ssl);
        ERR_clear_error();
    }
}

size_t tls_conn_out_pending(const tls_conn_t *t)
{
    return BIO_ctrl_pending(t->out);
}

size_t tls_conn_out_take(tls_conn_t *t, void *out, size_t cap)
{
    if (cap == 0)
        return 0;
    int n = BIO_read(t->out, out, cap > INT32_MAX ? INT32_MAX : (int)cap);
    return n > 0 ? (size_t)n : 0;
}

bool tls_conn_established(const tls_conn_t *t)
{
    return t->established && !t->failed;
}

bool tls_conn_peer_closed(const tls_conn_t *t)
{
    return t->peer_closed;
}

bool tls_conn_not_allowed(const tls_conn_t *t)
{
    return t->not_allowed;
}

const char *tls_conn_error(const tls_conn_t *t)
{
    return t->error[0] ? t->error : "no error";
}

const char *tls_conn_version(const tls_conn_t *t)
{
    return t->established ? SSL_get_version(t->ssl) : "";
}

const char *tls_conn_peer_subject(const tls_conn_t *t)
{
    return t->subject;
}
