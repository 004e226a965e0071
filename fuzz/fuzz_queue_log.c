/* fuzz_queue_log.c - the queue's log file (outbound/queue_log.c) as hostile
 * input: after its first byte, the input is written as a whole log file,
 * opened and scanned, with every byte of every record handed out touched.
 * A mutated record almost never has a matching CRC, so when the first byte
 * is odd every CRC is set right first (the header's, and each record's with
 * the header's salt, as far as the lengths lead), which takes the fuzzer
 * past the CRCs into the record decoding; when even, the file is as given. Then what the daemon
 * does next is checked: a record appended after the scan (after a restart when the header was not
 * valid; with direct writes when the first byte's second bit is set) must be found by a second
 * scan right after the same records as the first, and nothing else. No crash, no leak, no hang, no
 * allocation beyond the file's size. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crc32c.h"
#include "queue_log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_RECORD (1 << 16)
#define APPENDED_ID INT64_C(0x5ca1ab1e)

static char path[160];

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void set_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Sets the header's CRC and each record's (salt + type + body), walking
 * the records by their lengths while they fit. */
static void fix_crcs(uint8_t *b, size_t n)
{
    if (n < QLOG_HEADER_SIZE)
        return;
    set_le32(b + 60, crc32c(b, 60));
    uint32_t salt_crc = crc32c(b + 24, 8);
    for (size_t pos = QLOG_HEADER_SIZE; n - pos >= QLOG_RECORD_HEAD;) {
        size_t len = le32(b + pos), total = QLOG_RECORD_HEAD + ((len + 7) & ~(size_t)7);
        if (len > n || total > n - pos)
            break;
        uint32_t c = crc32c_extend(salt_crc, b + pos + 8, 1);
        set_le32(b + pos + 4, crc32c_extend(c, b + pos + QLOG_RECORD_HEAD, len));
        pos += total;
    }
}

typedef struct {
    uint64_t n;
    int64_t last_id;
    uint64_t last_offset;
} tally_t;

static err_t touch(const qlog_record_t *rec, void *user)
{
    tally_t *t = user;
    if (rec->type == QLOG_PUT) {
        const qlog_put_t *p = &rec->put;
        volatile size_t sum = strlen(p->dest) + strlen(p->control_id) + strlen(p->content_type) +
                              (p->findings ? strlen(p->findings) : 0) +
                              (p->meta ? strlen(p->meta) : 0) +
                              (p->worklist ? strlen(p->worklist) : 0) +
                              ((const unsigned char *)p->payload)[p->payload_len];
        for (size_t i = 0; i < p->payload_len; i++)
            sum += ((const unsigned char *)p->payload)[i];
        (void)sum;
    }
    t->n++;
    t->last_id = rec->id;
    t->last_offset = rec->offset;
    return ERR_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) { /* tmpfs when there is one: the scan's cut syncs */
        const char *t = getenv("TMPDIR");
        if (!t)
            t = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/fuzz_queue_log.%d", t, (int)getpid());
    }
    if (size == 0)
        return 0;
    uint8_t *copy = malloc(size);
    if (!copy)
        abort();
    memcpy(copy, data + 1, size - 1);
    if (data[0] & 1)
        fix_crcs(copy, size - 1);
    FILE *f = fopen(path, "wb");
    if (!f || (size > 1 && fwrite(copy, 1, size - 1, f) != size - 1))
        abort();
    fclose(f);
    free(copy);

    qlog_t *l = NULL;
    err_detail_t d;
    if (qlog_open(path, MAX_RECORD, &l, &d) != ERR_OK) {
        unlink(path); /* only a valid header of another version may refuse */
        return 0;
    }
    tally_t first = {0};
    qlog_scan_stats_t st;
    if (qlog_scan(l, touch, &first, &st, &d) != ERR_OK)
        abort();
    if (st.stop != QLOG_STOP_NO_HEADER && st.end > st.file_size)
        abort();
    if (st.stop == QLOG_STOP_NO_HEADER && qlog_restart(l, 0, true) != 0)
        abort();
    uint64_t end = qlog_size(l);
    bool direct = (data[0] & 2) && qlog_direct(l, true);
    qlog_add_delivered(l, APPENDED_ID);
    if (qlog_write(l) != 0)
        abort();
    qlog_close(l);

    if (qlog_open(path, MAX_RECORD, &l, &d) != ERR_OK)
        abort();
    tally_t second = {0};
    if (qlog_scan(l, touch, &second, &st, &d) != ERR_OK)
        abort();
    /* direct: zeros after the record, to its block's end */
    if (!(st.stop == QLOG_STOP_END || (direct && st.stop == QLOG_STOP_ZEROS)) ||
        second.n != first.n + 1 || second.last_id != APPENDED_ID || second.last_offset != end)
        abort();
    qlog_close(l);
    unlink(path);
    return 0;
}
