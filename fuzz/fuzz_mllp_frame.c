/* fuzz_mllp_frame.c - the MLLP framer on arbitrary bytes. The input is framed
 * twice: whole, and split into chunks at points drawn from the input itself;
 * both runs must emit the same frames and drop the same byte count, every
 * frame must respect the size limits, and none may contain a start block. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mllp_frame.h"

#define MAX_SIZE 64
#define KEEP 16

typedef struct {
    unsigned char *log;
    size_t len, cap;
    size_t frames;
} record_t;

static void rec_add(record_t *r, const void *p, size_t n)
{
    if (r->len + n > r->cap) {
        r->cap = (r->len + n) * 2 + 64;
        r->log = realloc(r->log, r->cap);
        assert(r->log);
    }
    memcpy(r->log + r->len, p, n);
    r->len += n;
}

static int stop_every;

static bool on_frame(void *user, const mllp_frame_t *f)
{
    record_t *r = user;
    assert(f->frame);
    if (f->oversized) {
        assert(f->total > MAX_SIZE);
        assert(f->frame->len == KEEP);
    } else {
        assert(f->frame->len == f->total);
        assert(f->total <= MAX_SIZE);
    }
    assert(memchr(f->frame->data, 0x0B, f->frame->len) == NULL);
    assert(f->frame->data[f->frame->len] == '\0');
    uint64_t hdr[2] = {f->total, f->oversized};
    rec_add(r, hdr, sizeof hdr);
    rec_add(r, f->frame->data, f->frame->len);
    r->frames++;
    return !(stop_every && r->frames % (size_t)stop_every == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    record_t whole = {0}, split = {0}, stopped = {0};
    mllp_framer_t f;

    mllp_framer_init(&f, MAX_SIZE, KEEP);
    mllp_framer_feed(&f, data, size, on_frame, &whole);
    uint64_t dropped_whole = f.dropped;
    size_t partial_whole = mllp_framer_partial(&f);
    mllp_framer_free(&f);

    mllp_framer_init(&f, MAX_SIZE, KEEP);
    size_t i = 0;
    unsigned seed = size ? data[0] : 0;
    while (i < size) {
        seed = seed * 1103515245u + 12345u;
        size_t n = 1 + (seed >> 16) % 7;
        if (n > size - i)
            n = size - i;
        mllp_framer_feed(&f, data + i, n, on_frame, &split);
        i += n;
    }
    assert(f.dropped == dropped_whole);
    assert(mllp_framer_partial(&f) == partial_whole);
    mllp_framer_free(&f);

    /* A callback that stops now and then; the rest is fed again, as the
     * listener does under backpressure. */
    mllp_framer_init(&f, MAX_SIZE, KEEP);
    stop_every = 1 + (size ? data[size - 1] % 3 : 0);
    i = 0;
    while (i < size) {
        size_t used = mllp_framer_feed(&f, data + i, size - i, on_frame, &stopped);
        assert(used > 0 && used <= size - i);
        i += used;
    }
    stop_every = 0;
    assert(f.dropped == dropped_whole);
    mllp_framer_free(&f);
    assert(stopped.len == whole.len && stopped.frames == whole.frames);
    assert(whole.len == 0 || memcmp(whole.log, stopped.log, whole.len) == 0);
    free(stopped.log);

    assert(whole.frames == split.frames);
    assert(whole.len == split.len);
    assert(whole.len == 0 || memcmp(whole.log, split.log, whole.len) == 0);
    free(whole.log);
    free(split.log);
    return 0;
}
