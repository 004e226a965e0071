/* http_echo.c - a tiny HTTP server on the ingest listener for the curl test:
 * answers every request with "<METHOD> <path> <body length>", prints its
 * port on stdout, and drains and exits on SIGTERM or SIGINT. Test tool only. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "http.h"

static http_server_t *srv;
static uv_signal_t sig_term, sig_int;

static void on_request(http_req_t *req, void *user)
{
    (void)user;
    char out[256];
    slice_t p = http_req_path(req);
    int n = snprintf(out, sizeof out, "%s %.*s %zu\n", http_req_method(req), (int)p.len, p.ptr,
                     http_req_body(req)->len);
    http_req_respond(req, 200, "text/plain", out, (size_t)n, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    http_server_close(srv, NULL, NULL);
}

int main(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    http_opts_t o;
    http_opts_default(&o);
    o.max_body = 64 * 1024;
    http_callbacks_t cb = {.request = on_request};
    err_detail_t d;
    if (http_server_listen(&loop, "127.0.0.1", 0, &o, &cb, NULL, &srv, &d) != ERR_OK) {
        fprintf(stderr, "http_echo: %s\n", d.msg);
        return 1;
    }
    uv_signal_init(&loop, &sig_term);
    uv_signal_init(&loop, &sig_int);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    printf("%d\n", http_server_port(srv));
    fflush(stdout);
    uv_run(&loop, UV_RUN_DEFAULT);
    return uv_loop_close(&loop) == 0 ? 0 : 1;
}
