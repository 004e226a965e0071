/* http_parse.c - assembles HTTP/1.1 requests from libhttp-parser callbacks,
 * enforcing our limits as bytes arrive: header bytes and count (431), body
 * size from Content-Length up front and from chunked data as it comes (413),
 * malformed input (400). No sockets or clocks: http.c adds those.
 * Ownership: the request being built belongs to the parse state; once
 * complete it is handed to on_request, which owns it.
 */
#include <string.h>
#include <strings.h>

#include "hex.h"
#include "http_int.h"
#include "xmalloc.h"

enum { LAST_NONE, LAST_FIELD, LAST_VALUE };

void http__req_free(http_req_t *r)
{
    if (!r)
        return;
    xfree(r->raw);
    xfree(r->hdrs);
    buf_unref(r->body);
    xfree(r);
}

static void req_slot_free(ingest__slot_t *s)
{
    http__req_free((http_req_t *)s);
}

static int fail(http__parse_t *p, int status, const char *why)
{
    if (!p->error) {
        p->error = status;
        p->why = why;
    }
    return 1;
}

/* Header bytes so far, counting ": " and CRLF per header as on the wire. */
static size_t head_size(const http_req_t *r)
{
    return r->raw_len + 4 * r->nhdr;
}

static int raw_append(http__parse_t *p, const char *at, size_t len)
{
    http_req_t *r = p->cur;
    if (head_size(r) + len > p->opts->max_header)
        return fail(p, 431, r->nhdr ? "request headers too large" : "request line too long");
    if (r->raw_len + len > r->raw_cap) {
        size_t cap = r->raw_cap ? r->raw_cap * 2 : 512;
        while (cap < r->raw_len + len)
            cap *= 2;
        r->raw = xrealloc(r->raw, cap);
        r->raw_cap = cap;
    }
    memcpy(r->raw + r->raw_len, at, len);
    r->raw_len += len;
    return 0;
}

static int on_message_begin(http_parser *hp)
{
    http__parse_t *p = hp->data;
    http__req_free(p->cur);
    p->cur = xcalloc(1, sizeof *p->cur);
    p->cur->slot.free = req_slot_free;
    p->last = LAST_NONE;
    p->body_expected = false;
    if (p->on_begin)
        p->on_begin(p);
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    http__parse_t *p = hp->data;
    if (raw_append(p, at, len))
        return 1;
    p->cur->url_len += len;
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    http__parse_t *p = hp->data;
    http_req_t *r = p->cur;
    if (p->last != LAST_FIELD) {
        if (r->nhdr >= p->opts->max_headers)
            return fail(p, 431, "too many request headers");
        if (r->nhdr == r->hdr_cap) {
            r->hdr_cap = r->hdr_cap ? r->hdr_cap * 2 : 16;
            r->hdrs = xrealloc(r->hdrs, r->hdr_cap * sizeof *r->hdrs);
        }
        r->hdrs[r->nhdr++] = (http__hdr_t){.name_off = (uint32_t)r->raw_len};
        p->last = LAST_FIELD;
    }
    if (raw_append(p, at, len))
        return 1;
    r->hdrs[r->nhdr - 1].name_len += (uint32_t)len;
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    http__parse_t *p = hp->data;
    http_req_t *r = p->cur;
    if (r->nhdr == 0)
        return fail(p, 400, "header value without a name");
    if (p->last != LAST_VALUE) {
        r->hdrs[r->nhdr - 1].val_off = (uint32_t)r->raw_len;
        p->last = LAST_VALUE;
    }
    if (raw_append(p, at, len))
        return 1;
    r->hdrs[r->nhdr - 1].val_len += (uint32_t)len;
    return 0;
}

static int on_headers_complete(http_parser *hp)
{
    http__parse_t *p = hp->data;
    http_req_t *r = p->cur;
    r->headers_done = true;
    r->method = (uint8_t)hp->method;
    r->vmajor = (uint8_t)hp->http_major;
    r->vminor = (uint8_t)hp->http_minor;
    r->head = hp->method == HTTP_HEAD;
    r->keep_alive = http_should_keep_alive(hp) != 0;

    struct http_parser_url u;
    http_parser_url_init(&u);
    if (r->url_len == 0 ||
        http_parser_parse_url(r->raw, r->url_len, hp->method == HTTP_CONNECT, &u) != 0)
        return fail(p, 400, "malformed request target"), -1;
    if (u.field_set & (1 << UF_PATH)) {
        r->path_off = u.field_data[UF_PATH].off;
        r->path_len = u.field_data[UF_PATH].len;
    }
    if (u.field_set & (1 << UF_QUERY)) {
        r->query_off = u.field_data[UF_QUERY].off;
        r->query_len = u.field_data[UF_QUERY].len;
    }

    bool has_len = (hp->flags & F_CONTENTLENGTH) != 0;
    bool chunked = (hp->flags & F_CHUNKED) != 0;
    if (has_len && hp->content_length > p->opts->max_body)
        return fail(p, 413, "request body too large"), -1;
    p->body_expected = chunked || (has_len && hp->content_length > 0);
    if (has_len && hp->content_length > 0)
        buf_reserve(&r->body, &r->body_cap, (size_t)hp->content_length);

    slice_t expect = http_req_header(r, "expect");
    r->expect_continue = expect.len == 12 && strncasecmp(expect.ptr, "100-continue", 12) == 0 &&
                         r->vmajor == 1 && r->vminor >= 1;
    if (p->on_headers)
        p->on_headers(p, r, p->body_expected);
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    http__parse_t *p = hp->data;
    http_req_t *r = p->cur;
    size_t have = r->body ? r->body->len : 0;
    if (len > p->opts->max_body - have)
        return fail(p, 413, "request body too large");
    buf_append(&r->body, &r->body_cap, at, len);
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    http__parse_t *p = hp->data;
    http_req_t *r = p->cur;
    p->cur = NULL;
    p->last = LAST_NONE;
    if (hp->upgrade)
        r->keep_alive = false; /* no protocol switch: answer, then close */
    if (!r->body)
        r->body = buf_new(NULL, 0);
    bool keep = r->keep_alive;
    p->requests++;
    bool go = p->on_request(p, r); /* r may be freed from here on */
    if (!keep)
        p->stop = true;
    if (!go || !keep)
        http_parser_pause(hp, 1); /* execute returns just after this request */
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void http__parse_init(http__parse_t *p, const http_opts_t *opts, void *owner)
{
    memset(p, 0, sizeof *p);
    http_parser_init(&p->hp, HTTP_REQUEST);
    p->hp.data = p;
    p->opts = opts;
    p->owner = owner;
}

size_t http__conn_feed(http__parse_t *p, const char *data, size_t n)
{
    if (p->error || p->stop || n == 0)
        return 0;
    size_t used = http_parser_execute(&p->hp, &settings, data, n);
    if (p->error)
        return used;
    enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
    if (e == HPE_PAUSED) {
        if (!p->stop)
            http_parser_pause(&p->hp, 0); /* backpressure: resume on the next feed */
        return used;
    }
    if (e == HPE_HEADER_OVERFLOW) {
        fail(p, 431, "request headers too large");
    } else if (e != HPE_OK) {
        fail(p, 400, http_errno_description(e));
    } else if (p->hp.upgrade) {
        p->stop = true; /* the request was delivered; what follows is not HTTP */
    } else if (used != n) {
        fail(p, 400, "malformed request");
    }
    return used;
}

bool http__parse_in_message(const http__parse_t *p)
{
    return p->cur != NULL;
}

void http__parse_free(http__parse_t *p)
{
    http__req_free(p->cur);
    p->cur = NULL;
    p->stop = true;
}

/* ---- request accessors (no sockets involved) ------------------------------ */

const char *http_req_method(const http_req_t *req)
{
    return http_method_str((enum http_method)req->method);
}

slice_t http_req_target(const http_req_t *req)
{
    return slice_make(req->raw, req->url_len);
}

slice_t http_req_path(const http_req_t *req)
{
    return slice_make(req->raw + req->path_off, req->path_len);
}

slice_t http_req_query(const http_req_t *req)
{
    return slice_make(req->raw + req->query_off, req->query_len);
}

bool http_req_query_param(const http_req_t *req, const char *name, slice_t *value)
{
    const char *q = req->raw + req->query_off, *end = q + req->query_len;
    size_t nlen = strlen(name);
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        const char *kend = eq ? eq : stop;
        if ((size_t)(kend - q) == nlen && memcmp(q, name, nlen) == 0) {
            if (value)
                *value = eq ? slice_make(eq + 1, (size_t)(stop - eq - 1)) : slice_make(stop, 0);
            return true;
        }
        q = stop + 1;
    }
    if (value)
        *value = SLICE_NULL;
    return false;
}

static slice_t trim(const char *p, size_t n)
{
    while (n && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    return slice_make(p, n);
}

slice_t http_req_header(const http_req_t *req, const char *name)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i < req->nhdr; i++) {
        const http__hdr_t *h = &req->hdrs[i];
        if (h->name_len == nlen && strncasecmp(req->raw + h->name_off, name, nlen) == 0)
            return trim(req->raw + h->val_off, h->val_len);
    }
    return SLICE_NULL;
}

size_t http_req_header_count(const http_req_t *req)
{
    return req->nhdr;
}

void http_req_header_at(const http_req_t *req, size_t i, slice_t *name, slice_t *value)
{
    if (i >= req->nhdr) {
        *name = *value = SLICE_NULL;
        return;
    }
    const http__hdr_t *h = &req->hdrs[i];
    *name = slice_make(req->raw + h->name_off, h->name_len);
    *value = trim(req->raw + h->val_off, h->val_len);
}

buf_t *http_req_body(const http_req_t *req)
{
    return req->body;
}

int http_req_version_minor(const http_req_t *req)
{
    return req->vminor;
}

bool http_req_keep_alive(const http_req_t *req)
{
    return req->keep_alive;
}

bool http_pct_decode(slice_t in, bool plus_is_space, char *out, size_t cap, size_t *out_len)
{
    size_t o = 0;
    if (out_len)
        *out_len = 0;
    if (cap == 0)
        return false;
    for (size_t i = 0; i < in.len; i++) {
        int c = (unsigned char)in.ptr[i];
        if (c == '%') {
            if (in.len - i < 3)
                return out[0] = '\0', false;
            int hi = hex_value((unsigned char)in.ptr[i + 1]),
                lo = hex_value((unsigned char)in.ptr[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return out[0] = '\0', false;
            c = hi * 16 + lo;
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        if (o + 1 >= cap)
            return out[0] = '\0', false;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    if (out_len)
        *out_len = o;
    return true;
}
