/* crc32c.c - CRC-32C, by slice-by-8 tables (built once) or by the SSE4.2
 * crc32 instruction, picked at run time. Both take their input byte by byte
 * in the CRC's own (least significant first) order, so neither depends on
 * the host's byte order except the SSE4.2 one, which exists only on
 * little-endian x86-64.
 *
 * The instruction takes three cycles before its result can feed the next
 * one, but a new one can start every cycle: long inputs are taken as three
 * lanes of LANE bytes at once, each with its own CRC, and the three are
 * joined after (the CRC of a then b is the CRC of a moved past len(b) zero
 * bytes, xored with the CRC of b from zero; moving past LANE zero bytes is
 * a linear map of the 32-bit register, kept as four byte tables). */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC32C_HAVE_SSE42 1
#include <nmmintrin.h>
#endif

#define POLY 0x82F63B78u /* 0x1EDC6F41 bit-reversed */

static uint32_t table[8][256];
static uint32_t (*impl)(uint32_t, const void *, size_t);
static pthread_once_t once = PTHREAD_ONCE_INIT;

#ifdef CRC32C_HAVE_SSE42
#define LANE 256 /* bytes per lane; a multiple of 8 */
/* lane_shift[k][v]: the register after LANE zero bytes, from a register
 * holding v in its byte k and zeros elsewhere. */
static uint32_t lane_shift[4][256];

__attribute__((target("sse4.2"))) static void build_lane_shift(void)
{
    uint32_t basis[32]; /* the map of each register bit */
    for (int i = 0; i < 32; i++) {
        uint64_t c = (uint64_t)1 << i;
        for (int k = 0; k < LANE / 8; k++)
            c = _mm_crc32_u64(c, 0);
        basis[i] = (uint32_t)c;
    }
    for (int k = 0; k < 4; k++)
        for (int v = 0; v < 256; v++) {
            uint32_t x = 0;
            for (int j = 0; j < 8; j++)
                if (v >> j & 1)
                    x ^= basis[8 * k + j];
            lane_shift[k][v] = x;
        }
}

static inline uint32_t shift_lane(uint32_t c)
{
    return lane_shift[0][c & 0xff] ^ lane_shift[1][(c >> 8) & 0xff] ^
           lane_shift[2][(c >> 16) & 0xff] ^ lane_shift[3][c >> 24];
}
#endif

static void init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        table[0][i] = c;
    }
    /* table[k][i]: the CRC of byte i followed by k zero bytes, so that
     * eight bytes are taken with eight lookups and no shifts between. */
    for (int k = 1; k < 8; k++)
        for (int i = 0; i < 256; i++)
            table[k][i] = (table[k - 1][i] >> 8) ^ table[0][table[k - 1][i] & 0xff];
    impl = crc32c__table;
#ifdef CRC32C_HAVE_SSE42
    if (crc32c__sse42_available()) {
        build_lane_shift();
        impl = crc32c__sse42;
    }
#endif
}

static void ready(void)
{
    pthread_once(&once, init);
}

uint32_t crc32c__table(uint32_t crc, const void *p, size_t n)
{
    ready();
    const unsigned char *b = p;
    uint32_t c = ~crc;
    for (; n && ((uintptr_t)b & 7); n--)
        c = table[0][(c ^ *b++) & 0xff] ^ (c >> 8);
    for (; n >= 8; n -= 8, b += 8) {
        uint32_t lo = c ^ ((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                           (uint32_t)b[3] << 24);
        c = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^
            table[4][lo >> 24] ^ table[3][b[4]] ^ table[2][b[5]] ^ table[1][b[6]] ^ table[0][b[7]];
    }
    for (; n; n--)
        c = table[0][(c ^ *b++) & 0xff] ^ (c >> 8);
    return ~c;
}

#ifdef CRC32C_HAVE_SSE42
bool crc32c__sse42_available(void)
{
    return __builtin_cpu_supports("sse4.2");
}

__attribute__((target("sse4.2"))) uint32_t crc32c__sse42(uint32_t crc, const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t c = ~crc;
    for (; n && ((uintptr_t)b & 7); n--)
        c = _mm_crc32_u8((uint32_t)c, *b++);
    if (n >= 3 * LANE)
        ready(); /* lane_shift */
    for (; n >= 3 * LANE; n -= 3 * LANE, b += 3 * LANE) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < LANE; i += 8) {
            uint64_t w0, w1, w2;
            memcpy(&w0, b + i, 8);
            memcpy(&w1, b + LANE + i, 8);
            memcpy(&w2, b + 2 * LANE + i, 8);
            c = _mm_crc32_u64(c, w0);
            c1 = _mm_crc32_u64(c1, w1);
            c2 = _mm_crc32_u64(c2, w2);
        }
        c = shift_lane((uint32_t)c) ^ (uint32_t)c1;
        c = shift_lane((uint32_t)c) ^ (uint32_t)c2;
    }
    for (; n >= 8; n -= 8, b += 8) {
        uint64_t w;
        memcpy(&w, b, 8); /* x86-64: little-endian, as the instruction expects */
        c = _mm_crc32_u64(c, w);
    }
    for (; n; n--)
        c = _mm_crc32_u8((uint32_t)c, *b++);
    return ~(uint32_t)c;
}
#else
bool crc32c__sse42_available(void)
{
    return false;
}

uint32_t crc32c__sse42(uint32_t crc, const void *p, size_t n)
{
    return crc32c__table(crc, p, n);
}
#endif

uint32_t crc32c_extend(uint32_t crc, const void *p, size_t n)
{
    ready();
    return n ? impl(crc, p, n) : crc;
}

uint32_t crc32c(const void *p, size_t n)
{
    return crc32c_extend(0, p, n);
}
