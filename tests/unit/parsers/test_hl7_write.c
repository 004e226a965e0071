/* test_hl7_write.c - the writer's fast paths (parsers/hl7_write.c): values
 * escaped only from their first delimiter on, segments written straight
 * into a buffer (hl7__segw_*), text inserted whole into an edit, and
 * untouched runs of a message copied at once. Each is pinned against the
 * escape codec or the segment model it stands in for, byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "hl7_int.h"

#define assert_slice(s, lit)                                                                       \
    do {                                                                                           \
        slice_t s__ = (s);                                                                         \
        assert_non_null(s__.ptr);                                                                  \
        assert_int_equal(s__.len, strlen(lit));                                                    \
        assert_memory_equal(s__.ptr, lit, s__.len);                                                \
    } while (0)

static const hl7_delims_t TRUNC = {'|', '^', '~', '\\', '&', '#'};
static const hl7_delims_t CUSTOM = {'#', '}', '!', '$', '%', 0};

/* A segment holding v (n bytes) as ZZZ-1, written. */
static slice_t one_value(arena_t *a, const hl7_delims_t *dl, const char *v, size_t n)
{
    hl7_seg_t *s = hl7_seg_new(a, dl, "ZZZ");
    assert_int_equal(hl7_seg_set(s, 1, 0, 0, 0, v, n), ERR_OK);
    return hl7_seg_write(s);
}

/* ZZZ-1 holding v is what the codec gives for v. */
static void assert_codec(arena_t *a, const hl7_delims_t *dl, const char *v, size_t n)
{
    size_t need = hl7_escape(dl, v, n, NULL, 0);
    char *want = arena_alloc(a, need + 4);
    memcpy(want, "ZZZ", 3);
    want[3] = dl->field;
    hl7_escape(dl, v, n, want + 4, need);
    slice_t got = one_value(a, dl, v, n);
    if (got.len != need + 4 || memcmp(got.ptr, want, got.len) != 0)
        fail_msg("value of %zu bytes: got '%.*s', want '%.*s'", n, (int)got.len, got.ptr,
                 (int)need + 4, want);
}

static void test_escape_fast_path(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    /* Plain values of every length around the 16-byte blocks, copied as
     * they are: control bytes other than CR and LF, DEL, NUL and non-ASCII
     * bytes are not escaped. */
    const char plain[] = "abcdefghij\x01\x1f\x7f\x80\xff\xc3\xa9 .,:()0123456789ABCDEFGHIJKLMN";
    for (size_t n = 0; n < sizeof plain; n++) {
        slice_t got = one_value(&a, &hl7_default_delims, plain, n);
        assert_int_equal(got.len, n + 4);
        assert_memory_equal(got.ptr + 4, plain, n);
    }
    slice_t nul = one_value(&a, &hl7_default_delims, "a\0b", 3);
    assert_int_equal(nul.len, 7);
    assert_memory_equal(nul.ptr, "ZZZ|a\0b", 7);
    /* Each character that is escaped, alone, first, last, and on each side
     * of a 16-byte block boundary. */
    assert_slice(one_value(&a, &hl7_default_delims, "|", 1), "ZZZ|\\F\\");
    assert_slice(one_value(&a, &hl7_default_delims, "^x", 2), "ZZZ|\\S\\x");
    assert_slice(one_value(&a, &hl7_default_delims, "x~", 2), "ZZZ|x\\R\\");
    assert_slice(one_value(&a, &hl7_default_delims, "0123456789abcde\\", 16),
                 "ZZZ|0123456789abcde\\E\\");
    assert_slice(one_value(&a, &hl7_default_delims, "0123456789abcdef&", 17),
                 "ZZZ|0123456789abcdef\\T\\");
    assert_slice(one_value(&a, &hl7_default_delims, "line 1\rline 2\nend", 17),
                 "ZZZ|line 1\\X0D\\line 2\\X0A\\end");
    /* The truncation character only when the message has one; another
     * message's delimiters are data. */
    assert_slice(one_value(&a, &hl7_default_delims, "a#b", 3), "ZZZ|a#b");
    assert_slice(one_value(&a, &TRUNC, "a#b", 3), "ZZZ|a\\P\\b");
    assert_slice(one_value(&a, &CUSTOM, "a|b^c~d\\e&f", 11), "ZZZ#a|b^c~d\\e&f");
    assert_slice(one_value(&a, &CUSTOM, "#}!$%", 5), "ZZZ#$F$$S$$R$$E$$T$");
    /* Every byte value at every position of a value longer than two
     * blocks, with each delimiter set: as the codec writes it. */
    const hl7_delims_t *sets[] = {&hl7_default_delims, &TRUNC, &CUSTOM};
    char v[40];
    for (size_t k = 0; k < 3; k++)
        for (int ch = 0; ch < 256; ch++)
            for (size_t at = 0; at < sizeof v; at++) {
                memset(v, 'x', sizeof v);
                v[at] = (char)ch;
                assert_codec(&a, sets[k], v, sizeof v);
                assert_codec(&a, sets[k], v, at + 1);
            }
    arena_free(&a);
}

static void test_segw_matches_segment(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    /* The same values, set in a segment and written straight in field order. */
    struct {
        int f, r, c, s;
        const char *v;
        bool raw;
    } vals[] = {
        {3, 0, 0, 0, "A^B", true},    {4, 1, 1, 0, "x|y", false},  {4, 1, 2, 0, "", false},
        {4, 1, 3, 2, "s&t", false},   {4, 3, 0, 0, "rep3", false}, {5, 0, 0, 0, "", false},
        {7, 2, 1, 1, "deep", false},  {7, 2, 2, 0, "c~2", true},   {9, 0, 0, 0, "a#b", false},
        {12, 1, 1, 3, "\r\n", false},
    };
    const char *ids[] = {"ZSG", "MSH", "Z", ""};
    const hl7_delims_t *sets[] = {&hl7_default_delims, &TRUNC, &CUSTOM};
    for (size_t k = 0; k < 3; k++)
        for (size_t i = 0; i < 4; i++) {
            hl7_seg_t *g = hl7_seg_new(&a, sets[k], ids[i]);
            hl7__buf_t b;
            hl7__buf_init(&b, &a, 0);
            hl7__segw_t w;
            hl7__segw_open(&w, &b, sets[k], ids[i]);
            for (size_t j = 0; j < sizeof vals / sizeof vals[0]; j++) {
                size_t n = strlen(vals[j].v);
                if (vals[j].raw)
                    hl7_seg_set_raw(g, vals[j].f, vals[j].r, vals[j].c, vals[j].s, vals[j].v, n);
                else
                    hl7_seg_set(g, vals[j].f, vals[j].r, vals[j].c, vals[j].s, vals[j].v, n);
                hl7__segw_put(&w, vals[j].f, vals[j].r, vals[j].c, vals[j].s, vals[j].v, n,
                              vals[j].raw);
            }
            slice_t want = hl7_seg_write(g), got = hl7__buf_done(&b);
            if (!slice_eq_slice(got, want))
                fail_msg("%s: got '%.*s', want '%.*s'", ids[i], (int)got.len, got.ptr,
                         (int)want.len, want.ptr);
        }
    hl7__buf_t b;
    hl7__buf_init(&b, &a, 0);
    hl7__segw_t w;
    hl7__segw_open(&w, &b, &TRUNC, "MSH");
    hl7__segw_put(&w, 3, 0, 0, 0, "A", 1, false);
    hl7__segw_put(&w, 9, 1, 2, 0, "P03", 3, false);
    assert_slice(hl7__buf_done(&b), "MSH|^~\\&#|A||||||^P03");
    arena_free(&a);
}

static void test_edit_insert_text(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    /* Text inserted whole lands as the segments it holds would, whatever
     * the terminators around it; drops and replacements still apply. */
    const char *ins[] = {"MSH|^~\\&|A\rPID|1\rDG1|1\rPV1|1\r",
                         "\r\nMSH|^~\\&|A\r\nPID|1\r\n\r\nDG1|1\n\nPV1|1",
                         "MSH|^~\\&|A\nPID|1\nDG1|1\nPV1|1\n"};
    for (size_t k = 0; k < 3; k++) {
        hl7_msg_t *m;
        assert_int_equal(hl7_parse(ins[k], strlen(ins[k]), NULL, &m, NULL), ERR_OK);
        for (size_t at = 0; at <= hl7_seg_count(m); at++) {
            hl7_edit_t *by_seg = hl7_edit_new(m, &a), *by_text = hl7_edit_new(m, &a);
            hl7_seg_t *z1 = hl7_seg_new(&a, NULL, "ZSH"), *z2 = hl7_seg_new(&a, NULL, "ZSG");
            hl7_seg_set(z1, 1, 0, 0, 0, "1", 1);
            hl7_seg_set(z2, 2, 0, 0, 0, "x|y", 3);
            assert_int_equal(hl7_edit_insert(by_seg, at, z1), ERR_OK);
            assert_int_equal(hl7_edit_insert(by_seg, at, z2), ERR_OK);
            assert_int_equal(
                hl7__edit_insert_text(by_text, at, slice_make("ZSH|1\rZSG||x\\F\\y", 16)), ERR_OK);
            hl7_seg_t *r = hl7_seg_new(&a, NULL, "PID");
            hl7_seg_set(r, 1, 0, 0, 0, "2", 1);
            hl7_edit_t *both[] = {by_seg, by_text};
            for (size_t j = 0; j < 2; j++) {
                assert_int_equal(hl7_edit_delete(both[j], 2), ERR_OK);
                assert_int_equal(hl7_edit_replace(both[j], 1, r), ERR_OK);
            }
            assert_true(slice_eq_slice(hl7_edit_write(by_text), hl7_edit_write(by_seg)));
        }
        hl7_edit_t *e = hl7_edit_new(m, &a);
        assert_int_equal(hl7__edit_insert_text(e, hl7_seg_count(m) + 1, slice_make("ZSH", 3)),
                         ERR_BAD_VALUE);
        assert_int_equal(hl7__edit_insert_text(e, 0, SLICE_NULL), ERR_BAD_VALUE);
        hl7_msg_free(m);
    }
    /* After a last segment without terminator, and with nothing changed. */
    hl7_msg_t *m;
    const char *in = "\nMSH|^~\\&|A\nPID|1\r\n\nPV1|1";
    assert_int_equal(hl7_parse(in, strlen(in), NULL, &m, NULL), ERR_OK);
    hl7_edit_t *e = hl7_edit_new(m, &a);
    assert_slice(hl7_edit_write(e), in);
    hl7__edit_insert_text(e, 3, slice_make("ZSH|1\rZSG|1", 11));
    assert_slice(hl7_edit_write(e), "\nMSH|^~\\&|A\nPID|1\r\n\nPV1|1\rZSH|1\rZSG|1\r");
    hl7_msg_free(m);
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_fast_path),
        cmocka_unit_test(test_segw_matches_segment),
        cmocka_unit_test(test_edit_insert_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
