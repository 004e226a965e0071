/* crc32c.h - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used
 * by iSCSI, ext4 and SQLite's WAL alternative: the checksum of the queue's
 * log records (outbound/queue_log.c). Pure functions on caller memory; any
 * thread. On x86-64 the SSE4.2 crc32 instruction is used when the CPU has
 * it (chosen once, at the first call); it gives the same results as the
 * table. */
#ifndef SPINEGATE_CRC32C_H
#define SPINEGATE_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The CRC-32C of n bytes at p (p may be NULL when n is 0):
 * crc32c("123456789", 9) == 0xE3069283, crc32c(NULL, 0) == 0. */
uint32_t crc32c(const void *p, size_t n);

/* Continues crc, the CRC-32C of earlier bytes (0 for none), over n more
 * bytes: crc32c_extend(crc32c(a, na), b, nb) is the CRC of a then b. */
uint32_t crc32c_extend(uint32_t crc, const void *p, size_t n);

/* ---- for the unit tests: each implementation on its own ---- */

/* The portable one (slice-by-8 tables). */
uint32_t crc32c__table(uint32_t crc, const void *p, size_t n);

/* True when this build and CPU have the SSE4.2 one; crc32c__sse42 may be
 * called only then. */
bool crc32c__sse42_available(void);
uint32_t crc32c__sse42(uint32_t crc, const void *p, size_t n);

#endif
