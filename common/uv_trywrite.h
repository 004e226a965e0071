/* uv_trywrite.h - a socket write without libuv's write request when the
 * kernel takes every byte at once (the usual case for an ACK or a frame).
 *
 * Why: libuv 1.44 ends every completed uv_write with a POLLOUT stop that
 * queues the handle for an epoll_ctl(MOD) on the next loop turn, one extra
 * syscall per write even when nothing changes, plus a pending callback.
 * uv_try_write writes directly and refuses (UV_EAGAIN) while earlier writes
 * are queued, so the order of bytes on the stream is kept.
 */
#ifndef SPINEGATE_UV_TRYWRITE_H
#define SPINEGATE_UV_TRYWRITE_H

#include <stdbool.h>
#include <uv.h>

/* Writes what the socket takes now from bufs[0..*n). True when all of it
 * went; otherwise bufs and *n are advanced past what was written, and the
 * caller queues the rest with uv_write (which also reports any error). */
static inline bool uv_trywrite_all(uv_stream_t *s, uv_buf_t *bufs, unsigned *n)
{
    int rc = uv_try_write(s, bufs, *n);
    if (rc < 0)
        return false;
    size_t done = (size_t)rc;
    unsigned i = 0, k = 0;
    while (i < *n && done >= bufs[i].len)
        done -= bufs[i++].len;
    if (i == *n)
        return true;
    for (; i < *n; i++, k++) {
        bufs[k] = bufs[i];
        if (done) {
            bufs[k].base += done;
            bufs[k].len -= done;
            done = 0;
        }
    }
    *n = k;
    return false;
}

#endif
