/* test_crc32c.c - unit tests of common/crc32c.c: published CRC-32C vectors
 * through the public functions and through each implementation, the empty
 * input, extension in pieces, every start alignment and odd length, and
 * the table and SSE4.2 implementations against each other on random data
 * (the SSE4.2 cases are skipped on a CPU without it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"

typedef uint32_t (*impl_fn)(uint32_t, const void *, size_t);

/* Known answers: RFC 3720 (iSCSI) B.4, and the usual check value. */
static void check_vectors(impl_fn f)
{
    unsigned char b[32];
    assert_int_equal(f(0, "123456789", 9), 0xE3069283u);
    memset(b, 0, sizeof b);
    assert_int_equal(f(0, b, 32), 0x8A9136AAu);
    memset(b, 0xff, sizeof b);
    assert_int_equal(f(0, b, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)i;
    assert_int_equal(f(0, b, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)(31 - i);
    assert_int_equal(f(0, b, 32), 0x113FDB5Cu);
    assert_int_equal(f(0, "a", 1), 0xC1D04330u);
}

static void test_vectors(void **state)
{
    (void)state;
    assert_int_equal(crc32c("123456789", 9), 0xE3069283u);
    check_vectors(crc32c_extend);
    check_vectors(crc32c__table);
}

static void test_vectors_sse42(void **state)
{
    (void)state;
    if (!crc32c__sse42_available())
        skip();
    check_vectors(crc32c__sse42);
}

static void test_empty(void **state)
{
    (void)state;
    assert_int_equal(crc32c(NULL, 0), 0);
    assert_int_equal(crc32c("", 0), 0);
    assert_int_equal(crc32c_extend(0x12345678u, NULL, 0), 0x12345678u);
    assert_int_equal(crc32c__table(0x12345678u, "x", 0), 0x12345678u);
}

/* The CRC of a buffer is the same taken whole or in two pieces split
 * anywhere, and from any start alignment, for every length up to 80 (the
 * unaligned head, the 8-byte body and the tail of each implementation). */
static void check_pieces_and_alignment(impl_fn f)
{
    unsigned char src[96], moved[96 + 8];
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (unsigned char)(i * 37u + 11u);
    for (size_t len = 0; len <= 80; len++) {
        uint32_t whole = f(0, src, len);
        for (size_t cut = 0; cut <= len; cut++)
            assert_int_equal(f(f(0, src, cut), src + cut, len - cut), whole);
        for (size_t shift = 1; shift < 8; shift++) {
            memcpy(moved + shift, src, len);
            assert_int_equal(f(0, moved + shift, len), whole);
        }
    }
}

static void test_pieces_and_alignment(void **state)
{
    (void)state;
    check_pieces_and_alignment(crc32c__table);
    check_pieces_and_alignment(crc32c_extend);
}

static void test_pieces_and_alignment_sse42(void **state)
{
    (void)state;
    if (!crc32c__sse42_available())
        skip();
    check_pieces_and_alignment(crc32c__sse42);
}

static void test_table_equals_sse42(void **state)
{
    (void)state;
    if (!crc32c__sse42_available())
        skip();
    enum { N = 1 << 16 };
    unsigned char *b = malloc(N + 8);
    assert_non_null(b);
    srand(20261203);
    for (int round = 0; round < 600; round++) {
        /* mostly short inputs (where head and tail handling differ), some long */
        size_t len = round < 550 ? (size_t)rand() % 300 : (size_t)rand() % N;
        size_t start = (size_t)rand() % 8;
        for (size_t i = 0; i < len + start; i++)
            b[i] = (unsigned char)rand();
        uint32_t seed = round % 2 ? (uint32_t)rand() : 0;
        assert_int_equal(crc32c__table(seed, b + start, len), crc32c__sse42(seed, b + start, len));
    }
    free(b);
}

/* Around the lengths where the SSE4.2 one takes its three lanes (768 bytes
 * a round, LANE in crc32c.c), from every start alignment, with and without
 * a seed: the joined lanes give the table's answer. */
static void test_three_lanes_equal_table(void **state)
{
    (void)state;
    if (!crc32c__sse42_available())
        skip();
    static const size_t lens[] = {760,  767,  768,  769,  775,  776,  1535, 1536,
                                  1537, 2303, 2304, 2305, 2400, 4096, 10000};
    unsigned char *b = malloc(10000 + 8);
    assert_non_null(b);
    for (size_t i = 0; i < 10000 + 8; i++)
        b[i] = (unsigned char)(i * 131u + (i >> 7) * 7u + 3u);
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++)
        for (size_t start = 0; start < 8; start++) {
            assert_int_equal(crc32c__table(0, b + start, lens[k]),
                             crc32c__sse42(0, b + start, lens[k]));
            assert_int_equal(crc32c__table(0xA5A5A5A5u, b + start, lens[k]),
                             crc32c__sse42(0xA5A5A5A5u, b + start, lens[k]));
        }
    memset(b, 0, 10000);
    assert_int_equal(crc32c__table(0, b, 2304), crc32c__sse42(0, b, 2304));
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_vectors_sse42),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_pieces_and_alignment),
        cmocka_unit_test(test_pieces_and_alignment_sse42),
        cmocka_unit_test(test_table_equals_sse42),
        cmocka_unit_test(test_three_lanes_equal_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
