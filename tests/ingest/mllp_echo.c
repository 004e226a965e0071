/* mllp_echo.c - a tiny MLLP server on the ingest listener for the stress
 * test: answers each frame with "ACK|<first 24 bytes>" after a delay of 0-3 ms
 * (so answers come out of order), an oversized frame with "AR|<total>",
 * a frame starting "NONE" with no reply. Prints its port; drains and exits on
 * SIGTERM. Usage: mllp_echo [max_message]. Test tool only. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "mllp.h"

static mllp_server_t *srv;
static uv_loop_t loop;
static uv_signal_t sig_term;

typedef struct {
    uv_timer_t t;
    mllp_req_t *req;
    char ack[40];
    int len;
} pending_t;

static void on_closed(uv_handle_t *h)
{
    free(h);
}

static void on_timer(uv_timer_t *t)
{
    pending_t *p = (pending_t *)t;
    mllp_req_reply(p->req, p->ack, (size_t)p->len);
    uv_close((uv_handle_t *)t, on_closed);
}

static void answer_later(mllp_req_t *req, const char *ack, int len, unsigned delay)
{
    pending_t *p = malloc(sizeof *p);
    p->req = req;
    memcpy(p->ack, ack, (size_t)len);
    p->len = len;
    uv_timer_init(&loop, &p->t);
    uv_timer_start(&p->t, on_timer, delay, 0);
}

static void on_frame(mllp_req_t *req, buf_t *frame, void *user)
{
    (void)user;
    if (frame->len >= 4 && memcmp(frame->data, "NONE", 4) == 0) {
        mllp_req_reply_none(req);
        return;
    }
    char ack[40];
    int n = snprintf(ack, sizeof ack, "ACK|%.*s", (int)(frame->len < 24 ? frame->len : 24),
                     frame->data);
    unsigned h = 0;
    for (size_t i = 0; i < frame->len; i++)
        h = h * 31 + (unsigned char)frame->data[i];
    answer_later(req, ack, n, h % 4);
}

static void on_oversized(mllp_req_t *req, buf_t *head, size_t total, void *user)
{
    (void)user;
    (void)head;
    char ack[40];
    int n = snprintf(ack, sizeof ack, "AR|%zu", total);
    answer_later(req, ack, n, 0);
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    uv_close((uv_handle_t *)&sig_term, NULL);
    mllp_stats_t st;
    mllp_server_stats(srv, &st);
    fprintf(stderr,
            "mllp_echo: %llu conns, %llu frames, %llu oversized, %llu pending, %llu pauses\n",
            (unsigned long long)st.conns_total, (unsigned long long)st.frames,
            (unsigned long long)st.oversized, (unsigned long long)st.pending,
            (unsigned long long)st.pauses);
    mllp_server_close(srv, NULL, NULL);
}

int main(int argc, char **argv)
{
    uv_loop_init(&loop);
    mllp_opts_t o;
    mllp_opts_default(&o);
    if (argc > 1)
        o.max_message = strtoul(argv[1], NULL, 10);
    o.max_pending = 8;
    mllp_callbacks_t cb = {.frame = on_frame, .oversized = on_oversized};
    err_detail_t d;
    if (mllp_server_listen(&loop, "127.0.0.1", 0, &o, &cb, NULL, &srv, &d) != ERR_OK) {
        fprintf(stderr, "mllp_echo: %s\n", d.msg);
        return 1;
    }
    uv_signal_init(&loop, &sig_term);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    printf("%d\n", mllp_server_port(srv));
    fflush(stdout);
    uv_run(&loop, UV_RUN_DEFAULT);
    return uv_loop_close(&loop) == 0 ? 0 : 1;
}
