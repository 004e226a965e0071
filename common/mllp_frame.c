/* mllp_frame.c - the MLLP framer (common/mllp_frame.h): bytes in, complete frames out, no I/O.
 * A frame that arrives whole in one chunk is copied once into a new buf_t;
 * one that spans chunks is assembled straight into the buf_t that is handed
 * out, so either way the content is copied exactly once. The framer owns the
 * partial buf_t; each emitted frame is unreferenced after its callback.
 */
#include <string.h>

#include "mllp_frame.h"

#define SB MLLP_SB
#define FS MLLP_EB
#define CR MLLP_CR

enum { ST_OUT, ST_IN, ST_IN_FS };

void mllp_framer_init(mllp_framer_t *f, size_t max_size, size_t keep_head)
{
    memset(f, 0, sizeof *f);
    f->max_size = max_size ? max_size : 1024 * 1024;
    f->keep_head = keep_head ? keep_head : 1024;
    if (f->keep_head > f->max_size)
        f->keep_head = f->max_size;
    f->state = ST_OUT;
}

static void frame_begin(mllp_framer_t *f)
{
    f->state = ST_IN;
    f->total = 0;
    f->oversized = false;
    if (f->acc)
        f->acc->len = 0;
}

/* Adds content bytes of the current frame, keeping only what the limits allow. */
static void append(mllp_framer_t *f, const unsigned char *p, size_t n)
{
    if (n == 0)
        return;
    f->total = (f->total > SIZE_MAX - n) ? SIZE_MAX : f->total + n;
    size_t have = f->acc ? f->acc->len : 0;
    if (!f->oversized && f->total > f->max_size) {
        f->oversized = true;
        if (have > f->keep_head) {
            f->acc->len = have = f->keep_head;
            f->acc->data[have] = '\0';
        }
    }
    size_t limit = f->oversized ? f->keep_head : f->max_size;
    if (have < limit) {
        size_t take = n < limit - have ? n : limit - have;
        buf_append(&f->acc, &f->acc_cap, p, take);
    }
}

/* Ends the current frame whose last content bytes are p[0..n). */
static bool finish(mllp_framer_t *f, const unsigned char *p, size_t n, mllp_framer_cb cb,
                   void *user)
{
    buf_t *b;
    if (f->total == 0) {
        /* Whole frame in this chunk: one copy, straight from the read buffer. */
        f->total = n;
        f->oversized = n > f->max_size;
        b = buf_new(p, f->oversized ? f->keep_head : n);
    } else {
        append(f, p, n);
        b = f->acc;
        f->acc = NULL;
        f->acc_cap = 0;
    }
    mllp_frame_t fr = {.frame = b, .total = f->total, .oversized = f->oversized};
    f->frames++;
    if (fr.oversized)
        f->oversized_frames++;
    f->state = ST_OUT;
    f->total = 0;
    f->oversized = false;
    bool go = cb(user, &fr);
    buf_unref(b);
    return go;
}

size_t mllp_framer_feed(mllp_framer_t *f, const void *data, size_t n, mllp_framer_cb cb, void *user)
{
    const unsigned char *p = data;
    size_t i = 0;
    while (i < n) {
        if (f->state == ST_OUT) {
            const unsigned char *sb = memchr(p + i, SB, n - i);
            if (!sb) {
                f->dropped += n - i;
                return n;
            }
            f->dropped += (size_t)(sb - (p + i));
            i = (size_t)(sb - p) + 1;
            frame_begin(f);
            continue;
        }
        if (f->state == ST_IN_FS) {
            /* The previous chunk ended on 0x1C. */
            if (p[i] == CR) {
                i++;
                if (!finish(f, p, 0, cb, user))
                    return i;
                continue;
            }
            static const unsigned char fs = FS;
            append(f, &fs, 1);
            f->state = ST_IN;
        }
        /* ST_IN: scan for the end marker or a restart. */
        size_t s = i;
        for (;;) {
            /* The first SB or FS from i: two memchr passes scan a frame
             * several times faster than a byte loop that tests both. */
            const unsigned char *fs = memchr(p + i, FS, n - i);
            size_t stop = fs ? (size_t)(fs - p) : n;
            const unsigned char *sb = memchr(p + i, SB, stop - i);
            i = sb ? (size_t)(sb - p) : stop;
            if (i == n) {
                append(f, p + s, n - s);
                return n;
            }
            if (p[i] == SB) {
                /* Restart: the partial frame and its start block are dropped. */
                f->dropped += f->total + (i - s) + 1;
                frame_begin(f);
                s = ++i;
                continue;
            }
            if (i + 1 == n) {
                append(f, p + s, i - s);
                f->state = ST_IN_FS;
                return n;
            }
            if (p[i + 1] == CR) {
                size_t end = i;
                i += 2;
                if (!finish(f, p + s, end - s, cb, user))
                    return i;
                break;
            }
            i++; /* a lone 0x1C is content */
        }
    }
    return n;
}

size_t mllp_framer_partial(const mllp_framer_t *f)
{
    if (f->state == ST_OUT)
        return 0;
    return f->total + (f->state == ST_IN_FS ? 1 : 0);
}

void mllp_framer_free(mllp_framer_t *f)
{
    if (!f)
        return;
    if (f->state != ST_OUT)
        f->dropped += mllp_framer_partial(f) + 1;
    f->state = ST_OUT;
    buf_unref(f->acc);
    f->acc = NULL;
    f->acc_cap = 0;
}

char *mllp_frame_put(char *out, const void *p, size_t len)
{
    *out++ = MLLP_SB;
    if (len)
        memcpy(out, p, len);
    out += len;
    *out++ = MLLP_EB;
    *out++ = MLLP_CR;
    return out;
}
