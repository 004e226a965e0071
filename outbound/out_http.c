/* out_http.c - the HTTP client transport for FHIR: each row is POSTed to
 * <url>/<resource> with its content type, by libcurl's multi interface driven
 * from the libuv loop (one uv_poll_t per socket curl asks us to watch, one
 * uv_timer_t for curl's timeout), so no thread ever blocks on the network.
 * 2xx is delivered; 408, 429, 5xx and network errors are transient and
 * retried; any other status is the server refusing the message itself (an
 * application reject): answered as such, with the first 8 KiB of the
 * answer's body (an OperationOutcome) for the dead-letter note.
 * The easy handle is reused, so the connection is kept alive between
 * messages. Poll contexts are freed in their close callback; the body is
 * borrowed from the deliverer's row until out__send_done().
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "out_int.h"
#include "xmalloc.h"

typedef struct http_state http_state_t;

typedef struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    http_state_t *h;
    struct sock_ctx *next;
} sock_ctx_t;

struct http_state {
    out_dest_t *d;
    CURLM *multi;
    CURL *easy;
    char *url;
    uv_timer_t timer;
    struct curl_slist *hdrs;
    bool busy;       /* the easy handle is in the multi */
    bool add_failed; /* answer RETRY from the next timer tick */
    sock_ctx_t *socks;
    unsigned open_handles; /* timer + polls not yet closed */
    bool closing;
    char errbuf[CURL_ERROR_SIZE];
    char *body; /* the answer's first BODY_MAX bytes, NUL-terminated */
    size_t body_len;
};

#define BODY_MAX 8192

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_global(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void maybe_closed(http_state_t *h);

static void poll_closed(uv_handle_t *hd)
{
    sock_ctx_t *s = hd->data;
    http_state_t *h = s->h;
    xfree(s);
    h->open_handles--;
    maybe_closed(h);
}

static void sock_drop(http_state_t *h, sock_ctx_t *s)
{
    for (sock_ctx_t **pp = &h->socks; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, poll_closed);
}

static void check_done(http_state_t *h)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURLcode cc = msg->data.result;
        long status = 0;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        curl_multi_remove_handle(h->multi, msg->easy_handle);
        h->busy = false;
        char reason[128];
        out__res_t res;
        if (cc != CURLE_OK) {
            snprintf(reason, sizeof reason, "HTTP: %.100s",
                     h->errbuf[0] ? h->errbuf : curl_easy_strerror(cc));
            res = OUT_RES_RETRY;
        } else if (status >= 200 && status < 300) {
            res = OUT_RES_OK;
        } else {
            snprintf(reason, sizeof reason, "HTTP status %ld", status);
            res = (status >= 400 && status < 500 && status != 408 && status != 429) ? OUT_RES_REJECT
                                                                                    : OUT_RES_RETRY;
        }
        if (!h->closing)
            out__send_done_detail(h->d, res, res == OUT_RES_OK ? NULL : reason,
                                  res == OUT_RES_REJECT && h->body ? h->body : NULL);
    }
}

static void poll_cb(uv_poll_t *p, int status, int events)
{
    sock_ctx_t *s = p->data;
    http_state_t *h = s->h;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(h->multi, s->fd, flags, &running);
    check_done(h);
}

static void timer_cb(uv_timer_t *t)
{
    http_state_t *h = t->data;
    if (h->add_failed) {
        char reason[128];
        h->add_failed = false;
        snprintf(reason, sizeof reason, "HTTP: %.100s", h->errbuf);
        out__send_done(h->d, OUT_RES_RETRY, reason);
        return;
    }
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

/* CURLMOPT_SOCKETFUNCTION: curl says which events to watch on a socket. */
static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    http_state_t *h = userp;
    sock_ctx_t *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(h->multi, fd, NULL);
            sock_drop(h, s);
        }
        return 0;
    }
    if (!s) {
        s = xcalloc(1, sizeof *s);
        s->fd = fd;
        s->h = h;
        if (uv_poll_init_socket(h->d->loop, &s->poll, fd) != 0) {
            xfree(s);
            return -1;
        }
        s->poll.data = s;
        s->next = h->socks;
        h->socks = s;
        h->open_handles++;
        curl_multi_assign(h->multi, fd, s);
    }
    int ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, poll_cb);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: curl wants to be called back after timeout_ms. */
static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    http_state_t *h = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, timer_cb, (uint64_t)timeout_ms, 0);
    return 0;
}

static err_t http_init(out_dest_t *d, err_detail_t *e)
{
    const char *u = d->o.url;
    if (!u || (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0))
        return err_set(e, ERR_BAD_CONFIG, 0, "out %s: HTTP needs an http:// or https:// URL",
                       d->o.dest);
    pthread_once(&curl_once, curl_global);
    if (curl_init_rc != CURLE_OK)
        return err_set(e, ERR_BAD_CONFIG, 0, "out %s: libcurl init failed: %s", d->o.dest,
                       curl_easy_strerror(curl_init_rc));
    http_state_t *h = xcalloc(1, sizeof *h);
    h->d = d;
    size_t ul = strlen(u);
    while (ul > 0 && u[ul - 1] == '/')
        ul--;
    size_t n = ul + strlen(d->o.resource) + 2;
    h->url = xmalloc(n);
    snprintf(h->url, n, "%.*s/%s", (int)ul, u, d->o.resource);
    h->multi = curl_multi_init();
    h->easy = curl_easy_init();
    if (!h->multi || !h->easy) {
        curl_multi_cleanup(h->multi);
        curl_easy_cleanup(h->easy);
        xfree(h->url);
        xfree(h);
        return err_set(e, ERR_BAD_CONFIG, 0, "out %s: libcurl handles", d->o.dest);
    }
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    CURL *c = h->easy;
    curl_easy_setopt(c, CURLOPT_URL, h->url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)d->o.connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)d->o.ack_timeout_ms);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85 */
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    /* https:// URLs: libcurl verifies the chain and the URL's host itself;
     * these are the same settings as the MLLP destinations take. */
    if (d->o.tls_ca)
        curl_easy_setopt(c, CURLOPT_CAINFO, d->o.tls_ca);
    if (d->o.tls_cert) {
        curl_easy_setopt(c, CURLOPT_SSLCERT, d->o.tls_cert);
        curl_easy_setopt(c, CURLOPT_SSLKEY, d->o.tls_key);
    }
    curl_easy_setopt(c, CURLOPT_SSLVERSION,
                     d->o.tls_min_version == 13 ? CURL_SSLVERSION_TLSv1_3
                                                : CURL_SSLVERSION_TLSv1_2);
    uv_timer_init(d->loop, &h->timer);
    h->timer.data = h;
    h->open_handles = 1;
    d->tp_state = h;
    return ERR_OK;
}

/* The answer body is kept up to BODY_MAX bytes: a refusal's OperationOutcome
 * goes into the dead-letter note; the rest is dropped. */
static size_t keep_body(char *p, size_t size, size_t n, void *user)
{
    http_state_t *h = user;
    size_t len = size * n;
    if (!h->body)
        h->body = xmalloc(BODY_MAX + 1);
    size_t take = BODY_MAX - h->body_len < len ? BODY_MAX - h->body_len : len;
    for (size_t i = 0; i < take; i++)
        h->body[h->body_len + i] = p[i] == 0 ? ' ' : p[i];
    h->body_len += take;
    h->body[h->body_len] = 0;
    return len;
}

static void http_send(out_dest_t *d, const queue_row_t *row)
{
    http_state_t *h = d->tp_state;
    char ct[QUEUE_CTYPE_MAX + 32];
    snprintf(ct, sizeof ct, "Content-Type: %s", row->content_type);
    curl_slist_free_all(h->hdrs);
    h->hdrs = curl_slist_append(NULL, ct);
    h->hdrs = curl_slist_append(h->hdrs, "Expect:"); /* no 100-continue round trip */
    h->hdrs = curl_slist_append(h->hdrs, "Accept: application/fhir+json");
    h->errbuf[0] = 0;
    curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, h->hdrs);
    curl_easy_setopt(h->easy, CURLOPT_POSTFIELDS, (const char *)row->payload);
    curl_easy_setopt(h->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)row->payload_len);
    curl_easy_setopt(h->easy, CURLOPT_WRITEFUNCTION, keep_body);
    curl_easy_setopt(h->easy, CURLOPT_WRITEDATA, h);
    h->body_len = 0;
    if (h->body)
        h->body[0] = 0;
    h->busy = true;
    CURLMcode mc = curl_multi_add_handle(h->multi, h->easy);
    if (mc != CURLM_OK) {
        /* Answer from the timer, never from inside send(). */
        h->busy = false;
        log_error("out %s: curl_multi_add_handle: %s", d->o.dest, curl_multi_strerror(mc));
        snprintf(h->errbuf, sizeof h->errbuf, "%s", curl_multi_strerror(mc));
        h->add_failed = true;
        uv_timer_start(&h->timer, timer_cb, 0, 0);
    }
}

static void timer_closed(uv_handle_t *hd)
{
    http_state_t *h = hd->data;
    h->open_handles--;
    maybe_closed(h);
}

static void maybe_closed(http_state_t *h)
{
    if (!h->closing || h->open_handles)
        return;
    out_dest_t *d = h->d;
    curl_slist_free_all(h->hdrs);
    xfree(h->body);
    xfree(h->url);
    xfree(h);
    d->tp_state = NULL;
    out__transport_closed(d);
}

static void http_close(out_dest_t *d)
{
    http_state_t *h = d->tp_state;
    h->closing = true;
    if (h->busy)
        curl_multi_remove_handle(h->multi, h->easy);
    curl_easy_cleanup(h->easy);
    curl_multi_cleanup(h->multi); /* may call socket_cb(REMOVE) */
    while (h->socks)
        sock_drop(h, h->socks);
    uv_close((uv_handle_t *)&h->timer, timer_closed);
}

const out__transport_t out__http = {"HTTP", http_init, http_send, http_close, false, NULL};
