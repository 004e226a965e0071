/* test_mllp_frame.c - the MLLP framer without sockets: every split point of
 * a multi-frame stream, garbage between frames, oversized frames, start and
 * end markers inside frames, one copy per frame. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "mllp.h"
#include "xmalloc.h"

#define MAXF 16

typedef struct {
    int n;
    char data[MAXF][256];
    size_t len[MAXF], total[MAXF];
    bool over[MAXF];
    int stop_after; /* stop the feed after this many frames (0: never) */
} got_t;

static bool on_frame(void *user, const mllp_frame_t *f)
{
    got_t *g = user;
    assert_true(g->n < MAXF);
    assert_true(f->frame->len < sizeof g->data[0]);
    memcpy(g->data[g->n], f->frame->data, f->frame->len);
    g->data[g->n][f->frame->len] = '\0';
    assert_int_equal(f->frame->data[f->frame->len], '\0');
    g->len[g->n] = f->frame->len;
    g->total[g->n] = f->total;
    g->over[g->n] = f->oversized;
    g->n++;
    return !(g->stop_after && g->n >= g->stop_after);
}

static const char stream[] = "junk\x0bMSH|^~\\&|A\rPID|1\r\x1c\x0d"
                             "\r\n"
                             "\x0bMSH|^~\\&|B\r\x1c\x0d"
                             "\x0b\x1c\x0d"
                             "\x0bMSH|x\x1cy|C\r\x1c\x0d";

static void check_stream(const got_t *g, uint64_t dropped)
{
    assert_int_equal(g->n, 4);
    assert_string_equal(g->data[0], "MSH|^~\\&|A\rPID|1\r");
    assert_string_equal(g->data[1], "MSH|^~\\&|B\r");
    assert_int_equal(g->len[2], 0);
    assert_string_equal(g->data[3], "MSH|x\x1cy|C\r");
    assert_int_equal(g->len[3], 10); /* the lone 0x1C is content */
    assert_int_equal(dropped, 6);    /* "junk" and "\r\n" */
}

static void test_every_split_point(void **state)
{
    (void)state;
    size_t n = sizeof stream - 1;
    size_t before = xmalloc_used();
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            got_t g = {0};
            mllp_framer_t f;
            mllp_framer_init(&f, 1024, 64);
            assert_int_equal(mllp_framer_feed(&f, stream, a, on_frame, &g), a);
            assert_int_equal(mllp_framer_feed(&f, stream + a, b - a, on_frame, &g), b - a);
            assert_int_equal(mllp_framer_feed(&f, stream + b, n - b, on_frame, &g), n - b);
            check_stream(&g, f.dropped);
            assert_int_equal(mllp_framer_partial(&f), 0);
            mllp_framer_free(&f);
        }
    }
    /* Byte at a time. */
    got_t g = {0};
    mllp_framer_t f;
    mllp_framer_init(&f, 1024, 64);
    for (size_t i = 0; i < n; i++)
        mllp_framer_feed(&f, stream + i, 1, on_frame, &g);
    check_stream(&g, f.dropped);
    assert_int_equal(f.frames, 4);
    mllp_framer_free(&f);
    assert_int_equal(xmalloc_used(), before);
}

static void test_oversized(void **state)
{
    (void)state;
    char msg[300];
    msg[0] = 0x0b;
    for (int i = 1; i <= 200; i++)
        msg[i] = (char)('a' + i % 26);
    msg[201] = 0x1c;
    msg[202] = 0x0d;
    memcpy(msg + 203, "\x0bok\x1c\x0d", 6);
    size_t n = 209;
    for (size_t split = 0; split <= n; split++) {
        got_t g = {0};
        mllp_framer_t f;
        mllp_framer_init(&f, 100, 10);
        mllp_framer_feed(&f, msg, split, on_frame, &g);
        mllp_framer_feed(&f, msg + split, n - split, on_frame, &g);
        assert_int_equal(g.n, 2);
        assert_true(g.over[0]);
        assert_int_equal(g.total[0], 200);
        assert_int_equal(g.len[0], 10);
        assert_memory_equal(g.data[0], msg + 1, 10);
        assert_false(g.over[1]);
        assert_string_equal(g.data[1], "ok");
        assert_int_equal(f.oversized_frames, 1);
        mllp_framer_free(&f);
    }
    /* Exactly max_size is not oversized. */
    got_t g = {0};
    mllp_framer_t f;
    mllp_framer_init(&f, 200, 10);
    mllp_framer_feed(&f, msg, 100, on_frame, &g);
    mllp_framer_feed(&f, msg + 100, 103, on_frame, &g);
    assert_int_equal(g.n, 1);
    assert_false(g.over[0]);
    assert_int_equal(g.len[0], 200);
    mllp_framer_free(&f);
}

static void test_start_inside_frame_restarts(void **state)
{
    (void)state;
    static const char s[] = "\x0bpartial\x0bwhole\x1c\x0d";
    for (size_t split = 0; split < sizeof s - 1; split++) {
        got_t g = {0};
        mllp_framer_t f;
        mllp_framer_init(&f, 1024, 64);
        mllp_framer_feed(&f, s, split, on_frame, &g);
        mllp_framer_feed(&f, s + split, sizeof s - 1 - split, on_frame, &g);
        assert_int_equal(g.n, 1);
        assert_string_equal(g.data[0], "whole");
        assert_int_equal(f.dropped, 8); /* 0x0B + "partial" */
        mllp_framer_free(&f);
    }
}

static void test_end_markers(void **state)
{
    (void)state;
    /* 0x1C 0x1C 0x0D: the first 0x1C is content. 0x1C then 0x0B: restart. */
    static const char s[] = "\x0b"
                            "a\x1c\x1c\x0d"
                            "\x0b"
                            "b\x1c\x0b"
                            "c\x1c\x0d";
    for (size_t split = 0; split < sizeof s - 1; split++) {
        got_t g = {0};
        mllp_framer_t f;
        mllp_framer_init(&f, 1024, 64);
        mllp_framer_feed(&f, s, split, on_frame, &g);
        mllp_framer_feed(&f, s + split, sizeof s - 1 - split, on_frame, &g);
        assert_int_equal(g.n, 2);
        assert_string_equal(g.data[0], "a\x1c");
        assert_string_equal(g.data[1], "c");
        assert_int_equal(f.dropped, 3); /* 0x0B b 0x1C */
        mllp_framer_free(&f);
    }
}

static void test_partial_and_stop(void **state)
{
    (void)state;
    /* A callback that stops: the feed returns just past that frame's end,
     * and feeding the rest later yields the remaining frames. */
    static const char two[] = "\x0b"
                              "a\x1c\x0d\x0b"
                              "b\x1c\x0d";
    got_t g = {.stop_after = 1};
    mllp_framer_t f;
    mllp_framer_init(&f, 1024, 64);
    assert_int_equal(mllp_framer_feed(&f, two, 8, on_frame, &g), 4);
    assert_int_equal(g.n, 1);
    g.stop_after = 0;
    assert_int_equal(mllp_framer_feed(&f, two + 4, 4, on_frame, &g), 4);
    assert_int_equal(g.n, 2);
    assert_string_equal(g.data[1], "b");
    got_t g2 = {0};
    mllp_framer_feed(&f, "\x0bhalf", 5, on_frame, &g2);
    assert_int_equal(mllp_framer_partial(&f), 4);
    mllp_framer_free(&f);
    assert_int_equal(f.dropped, 5);
    mllp_framer_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_split_point),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_start_inside_frame_restarts),
        cmocka_unit_test(test_end_markers),
        cmocka_unit_test(test_partial_and_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
