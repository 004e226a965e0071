/* testnet.h - helpers for the ingest socket tests: blocking loopback clients
 * that run in a pthread while the server runs on a libuv loop in the test's
 * main thread. Header-only, test code only. */
#ifndef SPINEGATE_TESTNET_H
#define SPINEGATE_TESTNET_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

static inline int tn_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static inline int tn_send(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static inline int tn_sends(int fd, const char *s)
{
    return tn_send(fd, s, strlen(s));
}

/* One byte, waiting at most timeout_ms: 1 read, 0 EOF, -1 timeout/error. */
static inline int tn_getc(int fd, char *c, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int r = poll(&pfd, 1, timeout_ms);
    if (r <= 0)
        return -1;
    ssize_t n = recv(fd, c, 1, 0);
    if (n < 0)
        return -1;
    return n == 1 ? 1 : 0;
}

/* Waits for EOF (or reset); returns 0 on EOF, -1 if data or timeout came first. */
static inline int tn_wait_eof(int fd, int timeout_ms)
{
    char c;
    int r = tn_getc(fd, &c, timeout_ms);
    if (r == 0)
        return 0;
    if (r < 0 && errno == ECONNRESET)
        return 0;
    return -1;
}

/* Reads one MLLP frame's content into out (NUL-terminated); returns its
 * length, -1 on timeout/EOF/overflow. */
static inline int tn_read_mllp(int fd, char *out, size_t cap, int timeout_ms)
{
    char c;
    size_t n = 0;
    do {
        if (tn_getc(fd, &c, timeout_ms) != 1)
            return -1;
    } while (c != 0x0b);
    for (;;) {
        if (tn_getc(fd, &c, timeout_ms) != 1)
            return -1;
        if (c == 0x1c) {
            if (tn_getc(fd, &c, timeout_ms) != 1 || c != 0x0d)
                return -1;
            out[n] = '\0';
            return (int)n;
        }
        if (n + 1 >= cap)
            return -1;
        out[n++] = c;
    }
}

/* Reads one HTTP response; returns the status (-1 on failure). The body is
 * copied into body (NUL-terminated), the head into head if non-NULL. */
static inline int tn_read_http(int fd, char *head, size_t hcap, char *body, size_t bcap,
                               int timeout_ms)
{
    char h[8192];
    size_t n = 0;
    char c;
    for (;;) {
        if (tn_getc(fd, &c, timeout_ms) != 1)
            return -1;
        if (n + 1 >= sizeof h)
            return -1;
        h[n++] = c;
        if (n >= 4 && memcmp(h + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    h[n] = '\0';
    if (head && hcap) {
        size_t k = n < hcap - 1 ? n : hcap - 1;
        memcpy(head, h, k);
        head[k] = '\0';
    }
    int status = 0;
    if (sscanf(h, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    size_t clen = 0;
    const char *cl = strcasestr(h, "\r\ncontent-length:");
    if (cl)
        clen = strtoul(cl + 17, NULL, 10);
    if (clen + 1 > bcap)
        return -1;
    for (size_t i = 0; i < clen; i++)
        if (tn_getc(fd, &body[i], timeout_ms) != 1)
            return -1;
    body[clen] = '\0';
    return status;
}

static inline uint64_t tn_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline void tn_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs client(arg) in a thread while the loop runs; when the client returns,
 * done(arg) runs on the loop thread (it closes the servers), and this returns
 * once the loop has no handles left. */
typedef struct {
    uv_async_t async;
    void *(*client)(void *);
    void (*done)(void *);
    void *arg;
    void *result;
} tn_run_t;

static inline void tn__on_async(uv_async_t *a)
{
    tn_run_t *r = a->data;
    uv_close((uv_handle_t *)a, NULL);
    r->done(r->arg);
}

static inline void *tn__thread(void *p)
{
    tn_run_t *r = p;
    r->result = r->client(r->arg);
    uv_async_send(&r->async);
    return NULL;
}

static inline void *tn_run(uv_loop_t *loop, void *(*client)(void *), void (*done)(void *),
                           void *arg)
{
    tn_run_t r = {.client = client, .done = done, .arg = arg};
    uv_async_init(loop, &r.async, tn__on_async);
    r.async.data = &r;
    pthread_t th;
    pthread_create(&th, NULL, tn__thread, &r);
    uv_run(loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    return r.result;
}

#endif
