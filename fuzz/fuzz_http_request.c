/* fuzz_http_request.c - HTTP request assembly (http__conn_feed: the
 * http_parser callbacks and our limits) on arbitrary bytes, without sockets.
 * Small limits so that 413/431 paths are reached; the input is fed in chunks
 * drawn from the input; every delivered request is checked against the
 * limits and its accessors exercised, then freed. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "http_int.h"

static http_opts_t opts;

static bool on_request(http__parse_t *p, http_req_t *req)
{
    (void)p;
    buf_t *body = http_req_body(req);
    assert(body);
    assert(body->len <= opts.max_body);
    assert(http_req_header_count(req) <= opts.max_headers);
    assert(http_req_target(req).len <= opts.max_header);
    (void)http_req_method(req);
    slice_t v = http_req_path(req);
    char out[64];
    (void)http_pct_decode(v, false, out, sizeof out, NULL);
    if (http_req_query_param(req, "_format", &v))
        (void)http_pct_decode(v, true, out, sizeof out, NULL);
    v = http_req_header(req, "content-type");
    (void)v;
    for (size_t i = 0; i < http_req_header_count(req); i++) {
        slice_t n, val;
        http_req_header_at(req, i, &n, &val);
        assert(n.len <= opts.max_header && val.len <= opts.max_header);
    }
    http_req_respond(req, 200, "text/plain", "ok", 2, NULL); /* off-socket: frees */
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    http_opts_default(&opts);
    opts.max_body = 256;
    opts.max_header = 512;
    opts.max_headers = 8;
    http__parse_t p;
    http__parse_init(&p, &opts, NULL);
    p.on_request = on_request;
    size_t i = 0;
    unsigned seed = size ? data[0] : 0;
    while (i < size && !p.error && !p.stop) {
        seed = seed * 1103515245u + 12345u;
        size_t n = 1 + (seed >> 16) % 64;
        if (n > size - i)
            n = size - i;
        size_t used = http__conn_feed(&p, (const char *)data + i, n);
        assert(used <= n);
        if (!p.error && !p.stop)
            assert(used == n);
        i += n;
    }
    if (p.error)
        assert(p.error == 400 || p.error == 413 || p.error == 431);
    http__parse_free(&p);
    return 0;
}
