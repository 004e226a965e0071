/* test_queue_log.c - unit tests of the queue's log file
 * (outbound/queue_log.c) on real files: records round-trip with NULL and
 * empty fields told apart and binary payloads kept; a scan stops at a torn
 * tail wherever it is cut, at a flipped bit anywhere in a record, at a
 * length over the limit and at an older epoch's records, and appends go
 * right after the last valid record; a short or damaged header is an empty
 * log; a write that fails partway leaves nothing a later scan could find;
 * a restart cuts the file to keep_bytes; records straddling the scan's read
 * window, or larger than it, come back whole. The tests that write run
 * twice: with buffered writes and with direct writes (O_DIRECT, whole
 * blocks); direct writes switched on and off between writes, and across a
 * restart, keep what is buffered and read back the same. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "queue_log.h"

#define MAX_RECORD 4096
#define BLOCK 4096 /* what direct writes round to */

/* The test runs with direct writes (fx_setup_direct). */
static bool direct_mode;

typedef struct {
    char dir[64];
    char path[96];
} fx_t;

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_queue_log.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/q.log", f->dir);
    *state = f;
    direct_mode = false;
    return 0;
}

static int fx_setup_direct(void **state)
{
    int rc = fx_setup(state);
    direct_mode = true;
    return rc;
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* ---- what a scan saw, copied ---- */

typedef struct {
    qlog_type_t type;
    uint64_t offset;
    int64_t id, created_ms;
    char *dest, *control_id, *content_type, *findings, *meta, *worklist;
    unsigned char *payload;
    size_t payload_len;
} seen_t;

typedef struct {
    seen_t r[64];
    size_t n;
} seen_list_t;

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static err_t collect(const qlog_record_t *rec, void *user)
{
    seen_list_t *l = user;
    assert_true(l->n < 64);
    seen_t *s = &l->r[l->n++];
    memset(s, 0, sizeof *s);
    s->type = rec->type;
    s->offset = rec->offset;
    s->id = rec->id;
    if (rec->type == QLOG_PUT) {
        const qlog_put_t *p = &rec->put;
        assert_int_equal(p->id, rec->id);
        s->created_ms = p->created_ms;
        s->dest = dup_or_null(p->dest);
        s->control_id = dup_or_null(p->control_id);
        s->content_type = dup_or_null(p->content_type);
        s->findings = dup_or_null(p->findings);
        s->meta = dup_or_null(p->meta);
        s->worklist = dup_or_null(p->worklist);
        assert_int_equal(((const unsigned char *)p->payload)[p->payload_len], 0);
        s->payload = malloc(p->payload_len + 1);
        memcpy(s->payload, p->payload, p->payload_len);
        s->payload_len = p->payload_len;
    }
    return ERR_OK;
}

static void seen_free(seen_list_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        seen_t *s = &l->r[i];
        free(s->dest);
        free(s->control_id);
        free(s->content_type);
        free(s->findings);
        free(s->meta);
        free(s->worklist);
        free(s->payload);
    }
    l->n = 0;
}

static qlog_t *open_ok(const char *path, size_t max_record)
{
    qlog_t *l = NULL;
    err_detail_t d;
    err_t rc = qlog_open(path, max_record, &l, &d);
    if (rc != ERR_OK)
        fail_msg("qlog_open: %s", d.msg);
    return l;
}

/* Opens path, scans it into *seen and returns the log, positioned. */
static qlog_t *open_scan(const char *path, size_t max_record, seen_list_t *seen,
                         qlog_scan_stats_t *st)
{
    qlog_t *l = open_ok(path, max_record);
    err_detail_t d;
    seen->n = 0;
    assert_int_equal(qlog_scan(l, collect, seen, st, &d), ERR_OK);
    return l;
}

/* A put with id's own texts and a payload of plen bytes (NULs included). */
static void make_put(qlog_put_t *p, int64_t id, unsigned char *payload, size_t plen)
{
    for (size_t i = 0; i < plen; i++)
        payload[i] = (unsigned char)(id * 7 + (int64_t)i);
    *p = (qlog_put_t){.id = id,
                      .created_ms = 1700000000000 + id,
                      .dest = "hl7",
                      .control_id = "MSG0001",
                      .content_type = "application/hl7-v2",
                      .payload = payload,
                      .payload_len = plen};
}

static void add_put_ok(qlog_t *l, int64_t id, size_t plen)
{
    unsigned char payload[MAX_RECORD];
    qlog_put_t p;
    make_put(&p, id, payload, plen);
    assert_int_equal(qlog_add_put(l, &p), ERR_OK);
}

static void assert_ids(const seen_list_t *s, const int64_t *ids, size_t n)
{
    assert_int_equal(s->n, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(s->r[i].id, ids[i]);
}

static uint64_t size_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    *n = (size_t)size_of(path);
    unsigned char *b = malloc(*n + 1);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* Direct writes on, and the descriptor's flags say so. The test folder's
 * file system must take O_DIRECT (ext4 and xfs do, tmpfs from Linux 6.6). */
static void direct_on(qlog_t *l)
{
    assert_true(qlog_direct(l, true));
    int fl = fcntl(qlog_fd(l), F_GETFL);
    assert_true(fl >= 0 && (fl & O_DIRECT));
}

/* The file's size after writes up to end: direct writes end on a block. */
static uint64_t written_size(uint64_t end)
{
    return direct_mode ? (end + BLOCK - 1) / BLOCK * BLOCK : end;
}

/* Why a scan of a log written up to end stops there: direct writes leave
 * zeros after it, to the end of its block. */
static qlog_stop_t written_stop(uint64_t end)
{
    return written_size(end) > end ? QLOG_STOP_ZEROS : QLOG_STOP_END;
}

/* A new log: restarted into epoch 1, ready for records (direct writes on
 * in direct mode). */
static qlog_t *new_log(const char *path)
{
    qlog_t *l = open_ok(path, MAX_RECORD);
    assert_int_equal(qlog_header(l), QLOG_HEADER_NONE);
    assert_int_equal(qlog_epoch(l), 0);
    assert_false(qlog_direct(l, true)); /* no write position yet */
    assert_int_equal(qlog_restart(l, 0, true), 0);
    assert_int_equal(qlog_epoch(l), 1);
    assert_int_equal(qlog_size(l), QLOG_HEADER_SIZE);
    if (direct_mode)
        direct_on(l);
    return l;
}

typedef struct {
    int64_t next;        /* the id the next record must have */
    unsigned char *want; /* scratch for the payload it must have */
} pattern_check_t;

/* Checks each record's id and payload bytes against the pattern
 * test_records_across_read_window wrote. */
static err_t check_payload(const qlog_record_t *rec, void *user)
{
    pattern_check_t *c = user;
    int64_t id = rec->id;
    assert_int_equal(id, c->next);
    size_t plen = id == 200 ? (size_t)3 << 20 : 4000 + (size_t)id * 3;
    assert_int_equal(rec->put.payload_len, plen);
    for (size_t i = 0; i < plen; i++)
        c->want[i] = (unsigned char)(id * 31 + (int64_t)(i % 251));
    assert_memory_equal(rec->put.payload, c->want, plen);
    c->next++;
    return ERR_OK;
}

/* ---- the tests ---- */

static void test_round_trip(void **state)
{
    fx_t *f = *state;
    qlog_t *l = new_log(f->path);
    const unsigned char bin[] = {0, 'a', 0, 0, 0xff, 0, 'b'};
    qlog_put_t full = {.id = 41,
                       .created_ms = -5,
                       .dest = "fhir",
                       .control_id = "C-1",
                       .content_type = "application/fhir+json",
                       .findings = "E001 missing",
                       .meta = "{\"peer\":\"x\"}",
                       .worklist = "reject",
                       .payload = bin,
                       .payload_len = sizeof bin};
    qlog_put_t nulls = {.id = INT64_MAX,
                        .created_ms = INT64_MIN,
                        .dest = "hl7",
                        .control_id = "",
                        .content_type = "t",
                        .payload = "P",
                        .payload_len = 1};
    qlog_put_t empties = nulls;
    empties.id = 43;
    empties.findings = empties.meta = empties.worklist = "";
    empties.payload_len = 0; /* an empty payload is kept as empty */
    assert_int_equal(qlog_add_put(l, &full), ERR_OK);
    assert_int_equal(qlog_add_put(l, &nulls), ERR_OK);
    qlog_add_delivered(l, 41);
    assert_int_equal(qlog_add_put(l, &empties), ERR_OK);
    qlog_add_delivered(l, -1);
    size_t pending = qlog_pending_bytes(l);
    assert_true(pending > 0);
    assert_int_equal(pending % 8, 0);
    assert_int_equal(qlog_write(l), 0);
    assert_int_equal(qlog_pending_bytes(l), 0);
    assert_int_equal(qlog_size(l), QLOG_HEADER_SIZE + pending);
    assert_int_equal(qlog_sync(l), 0);
    qlog_close(l);

    seen_list_t s;
    qlog_scan_stats_t st;
    l = open_scan(f->path, MAX_RECORD, &s, &st);
    assert_int_equal(qlog_header(l), QLOG_HEADER_OK);
    assert_int_equal(qlog_epoch(l), 1);
    assert_int_equal(st.puts, 3);
    assert_int_equal(st.delivered, 2);
    assert_int_equal(st.stop, written_stop(QLOG_HEADER_SIZE + pending));
    assert_int_equal(st.end, QLOG_HEADER_SIZE + pending);
    assert_int_equal(s.n, 5);

    seen_t *a = &s.r[0];
    assert_int_equal(a->type, QLOG_PUT);
    assert_int_equal(a->offset, QLOG_HEADER_SIZE);
    assert_int_equal(a->id, 41);
    assert_int_equal(a->created_ms, -5);
    assert_string_equal(a->dest, "fhir");
    assert_string_equal(a->control_id, "C-1");
    assert_string_equal(a->content_type, "application/fhir+json");
    assert_string_equal(a->findings, "E001 missing");
    assert_string_equal(a->meta, "{\"peer\":\"x\"}");
    assert_string_equal(a->worklist, "reject");
    assert_int_equal(a->payload_len, sizeof bin);
    assert_memory_equal(a->payload, bin, sizeof bin);

    seen_t *b = &s.r[1];
    assert_int_equal(b->id, INT64_MAX);
    assert_int_equal(b->created_ms, INT64_MIN);
    assert_string_equal(b->control_id, "");
    assert_null(b->findings);
    assert_null(b->meta);
    assert_null(b->worklist);
    assert_int_equal(b->payload_len, 1);
    assert_memory_equal(b->payload, "P", 1);

    assert_int_equal(s.r[2].type, QLOG_DELIVERED);
    assert_int_equal(s.r[2].id, 41);

    seen_t *c = &s.r[3];
    assert_int_equal(c->id, 43);
    assert_non_null(c->findings);
    assert_string_equal(c->findings, "");
    assert_string_equal(c->meta, "");
    assert_string_equal(c->worklist, "");
    assert_int_equal(c->payload_len, 0);

    assert_int_equal(s.r[4].type, QLOG_DELIVERED);
    assert_int_equal(s.r[4].id, -1);
    for (size_t i = 1; i < s.n; i++)
        assert_true(s.r[i].offset > s.r[i - 1].offset && s.r[i].offset % 8 == 0);
    seen_free(&s);
    qlog_close(l);
}

static void test_several_writes_then_scan(void **state)
{
    fx_t *f = *state;
    qlog_t *l = new_log(f->path);
    int64_t ids[40];
    size_t n = 0;
    for (int w = 0; w < 8; w++) {
        for (int k = 0; k <= w % 4; k++) {
            ids[n] = (int64_t)n + 1;
            add_put_ok(l, ids[n], 1 + n * 13);
            n++;
        }
        assert_int_equal(qlog_write(l), 0);
    }
    assert_int_equal(qlog_write(l), 0); /* nothing buffered: nothing to do */
    size_t end = qlog_size(l);
    assert_int_equal(size_of(f->path), written_size(end));
    qlog_close(l);

    seen_list_t s;
    qlog_scan_stats_t st;
    l = open_scan(f->path, MAX_RECORD, &s, &st);
    assert_ids(&s, ids, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char want[MAX_RECORD];
        qlog_put_t p;
        make_put(&p, ids[i], want, 1 + i * 13);
        assert_int_equal(s.r[i].payload_len, p.payload_len);
        assert_memory_equal(s.r[i].payload, want, p.payload_len);
    }
    assert_int_equal(st.end, end);
    assert_int_equal(qlog_size(l), end);
    seen_free(&s);
    qlog_close(l);
}

/* Writes records 1, 2 and 3 (3 with a padded body) and returns the offset
 * of 3 and the file's size. */
static void three_records(const char *path, uint64_t *third, uint64_t *end)
{
    qlog_t *l = new_log(path);
    add_put_ok(l, 1, 10);
    qlog_add_delivered(l, 1);
    assert_int_equal(qlog_write(l), 0);
    *third = qlog_size(l);
    add_put_ok(l, 3, 29);
    assert_int_equal(qlog_write(l), 0);
    *end = qlog_size(l);
    qlog_close(l);
}

static void test_torn_tail_at_every_byte(void **state)
{
    fx_t *f = *state;
    uint64_t third, end;
    three_records(f->path, &third, &end);
    size_t n;
    unsigned char *whole = slurp(f->path, &n);
    assert_int_equal(n, end);
    for (uint64_t cut = third + 1; cut < end; cut++) {
        spit(f->path, whole, (size_t)cut);
        seen_list_t s;
        qlog_scan_stats_t st;
        qlog_t *l = open_scan(f->path, MAX_RECORD, &s, &st);
        const int64_t before[] = {1, 1};
        assert_ids(&s, before, 2);
        assert_int_equal(st.stop, QLOG_STOP_TORN);
        assert_int_equal(st.end, third);
        assert_int_equal(qlog_size(l), third);
        seen_free(&s);
        qlog_add_delivered(l, 99);
        assert_int_equal(qlog_write(l), 0);
        assert_int_equal(size_of(f->path), third + 24);
        qlog_close(l);
        l = open_scan(f->path, MAX_RECORD, &s, &st);
        const int64_t after[] = {1, 1, 99};
        assert_ids(&s, after, 3);
        assert_int_equal(s.r[2].offset, third);
        assert_int_equal(st.stop, QLOG_STOP_END);
        seen_free(&s);
        qlog_close(l);
    }
    free(whole);
}

static void test_flipped_bit_stops_scan(void **state)
{
    fx_t *f = *state;
    uint64_t third, end;
    qlog_t *l = new_log(f->path);
    add_put_ok(l, 1, 5);
    uint64_t second = QLOG_HEADER_SIZE + qlog_pending_bytes(l);
    add_put_ok(l, 2, 21); /* a body of 16 + 28 + 28 + 21 bytes: 3 of padding */
    third = QLOG_HEADER_SIZE + qlog_pending_bytes(l);
    qlog_add_delivered(l, 2);
    assert_int_equal(qlog_write(l), 0);
    end = qlog_size(l);
    qlog_close(l);
    size_t n;
    unsigned char *whole = slurp(f->path, &n);
    assert_int_equal(n, end);
    assert_int_equal(third - second, 16 + 96);
    for (uint64_t at = second; at < third; at++) {
        for (int bit = 0; bit < 8; bit++) {
            whole[at] ^= (unsigned char)(1u << bit);
            spit(f->path, whole, n);
            whole[at] ^= (unsigned char)(1u << bit);
            seen_list_t s;
            qlog_scan_stats_t st;
            l = open_scan(f->path, MAX_RECORD, &s, &st);
            const int64_t first[] = {1};
            if (s.n != 1)
                fail_msg("bit %d of byte %llu: %zu records", bit, (unsigned long long)at, s.n);
            assert_ids(&s, first, 1);
            assert_int_equal(st.end, second);
            assert_int_not_equal(st.stop, QLOG_STOP_END);
            seen_free(&s);
            qlog_close(l);
        }
    }
    free(whole);
}

static void test_restart_hides_old_epoch(void **state)
{
    fx_t *f = *state;
    qlog_t *l = new_log(f->path);
    for (int64_t id = 1; id <= 6; id++)
        add_put_ok(l, id, 100);
    assert_int_equal(qlog_write(l), 0);
    uint64_t old_end = qlog_size(l);
    assert_int_equal(qlog_restart(l, 1 << 20, true), 0);
    assert_int_equal(qlog_epoch(l), 2);
    assert_int_equal(qlog_size(l), QLOG_HEADER_SIZE);
    /* the same size as the old first record: the next head a scan reads is
     * the old second record's, whole, but of the old epoch */
    add_put_ok(l, 7, 100);
    assert_int_equal(qlog_write(l), 0);
    uint64_t new_end = qlog_size(l);
    qlog_close(l);
    assert_int_equal(size_of(f->path), old_end); /* old records still behind */

    seen_list_t s;
    qlog_scan_stats_t st;
    l = open_scan(f->path, MAX_RECORD, &s, &st);
    const int64_t only[] = {7};
    assert_ids(&s, only, 1);
    assert_int_equal(qlog_epoch(l), 2);
    assert_int_equal(st.end, new_end);
    assert_int_equal(st.stop, QLOG_STOP_CRC);
    assert_int_equal(st.file_size, old_end);
    seen_free(&s);
    qlog_close(l);
}

/* A restart without its sync, then a power loss that kept the new records
 * but not the new header: the old header is read, and the new records fail
 * its salt, so a scan reads none of either epoch (the old one is in the
 * table; the new one was never synced, so never acknowledged). */
static void test_unsynced_restart_old_header_over_new_records(void **state)
{
    fx_t *f = *state;
    qlog_t *l = new_log(f->path);
    for (int64_t id = 1; id <= 4; id++)
        add_put_ok(l, id, 100);
    assert_int_equal(qlog_write(l), 0);
    size_t n;
    unsigned char *old_image = slurp(f->path, &n);
    assert_int_equal(qlog_restart(l, 1 << 20, false), 0);
    assert_int_equal(qlog_epoch(l), 2);
    for (int64_t id = 5; id <= 8; id++)
        add_put_ok(l, id, 100);
    assert_int_equal(qlog_write(l), 0);
    qlog_close(l);

    seen_list_t s;
    qlog_scan_stats_t st;
    l = open_scan(f->path, MAX_RECORD, &s, &st); /* the disk as written */
    const int64_t fresh[] = {5, 6, 7, 8};
    assert_ids(&s, fresh, 4);
    seen_free(&s);
    qlog_close(l);

    size_t m;
    unsigned char *img = slurp(f->path, &m);
    assert_int_equal(m, n); /* 4 records over 4 of the same length */
    assert_memory_not_equal(img, old_image, QLOG_HEADER_SIZE);
    memcpy(img, old_image, QLOG_HEADER_SIZE); /* the new header never reached the disk */
    spit(f->path, img, m);
    l = open_scan(f->path, MAX_RECORD, &s, &st);
    assert_int_equal(qlog_epoch(l), 1);
    assert_int_equal(s.n, 0);
    assert_int_equal(st.stop, QLOG_STOP_CRC);
    assert_int_equal(st.end, QLOG_HEADER_SIZE);
    seen_free(&s);
    qlog_close(l);
    free(img);
    free(old_image);
}

/* A torn batch whose first record was lost but whose later ones reached the
 * disk: records appended after the scan, even of the same length, must not
 * bring the later ones back. */
static void test_append_after_torn_batch_hides_it(void **state)
{
    fx_t *f = *state;
    qlog_t *l = new_log(f->path);
    add_put_ok(l, 1, 8);
    assert_int_equal(qlog_write(l), 0);
    uint64_t lost = qlog_size(l);
    add_put_ok(l, 2, 40);
    add_put_ok(l, 3, 40);
    assert_int_equal(qlog_write(l), 0);
    uint64_t end = qlog_size(l);
    qlog_close(l);
    size_t n;
    unsigned char *b = slurp(f->path, &n);
    memset(b + lost, 0, 16); /* record 2's head never reached the disk */
    spit(f->path, b, n);
    free(b);

    seen_list_t s;
    qlog_scan_stats_t st;
    l = open_scan(f->path, MAX_RECORD, &s, &st);
    const int64_t one[] = {1};
    assert_ids(&s, one, 1);
    assert_int_equal(st.stop, QLOG_STOP_ZEROS);
    assert_int_equal(st.file_size, end);
    assert_int_equal(size_of(f->path), lost); /* the scan cut the tail */
    seen_free(&s);
    add_put_ok(l, 4, 40); /* exactly record 2's size */
    assert_int_equal(qlog_write(l), 0);
    qlog_close(l);
    l = open_scan(f->path, MAX_RECORD, &s, &st);
    const int64_t want[] = {1, 4};
    assert_ids(&s, want, 2);
    assert_int_equal(st.stop, QLOG_STOP_END);
    seen_free(&s);
    qlog_close(l);
}

static void check_empty_log(const char *path, qlog_header_t want)
{
    qlog_t *l = open_ok(path, MAX_RECORD);
    assert_int_equal(qlog_header(l), want);
    assert_int_equal(qlog_epoch(l), 0);
    seen_list_t s = {.n = 0};
    qlog_scan_stats_t st;
    err_detail_t d;
    assert_int_equal(qlog_scan(l, collect, &s, &st, &d), ERR_OK);
    assert_int_equal(s.n, 0);
    assert_int_equal(st.stop, QLOG_STOP_NO_HEADER);
    assert_int_equal(qlog_size(l), 0);
    qlog_add_delivered(l, 1);
    assert_int_equal(qlog_write(l), -EINVAL); /* no salt yet: restart first */
    assert_int_equal(qlog_pending_bytes(l), 0);
    assert_int_equal(qlog_restart(l, 0, true), 0);
    assert_int_equal(qlog_epoch(l), 1);
    qlog_add_delivered(l, 2);
    assert_int_equal(qlog_write(l), 0);
    qlog_close(l);
    l = open_scan(path, MAX_RECORD, &s, &st);
    assert_int_equal(qlog_header(l), QLOG_HEADER_OK);
    const int64_t two[] = {2};
    assert_ids(&s, two, 1);
    qlog_close(l);
}

static void test_bad_or_short_header(void **state)
{
    fx_t *f = *state;
    uint64_t third, end;
    three_records(f->path, &third, &end);
    size_t n;
    unsigned char *whole = slurp(f->path, &n);

    spit(f->path, whole, 10);
    check_empty_log(f->path, QLOG_HEADER_SHORT);
    spit(f->path, whole, QLOG_HEADER_SIZE - 1);
    check_empty_log(f->path, QLOG_HEADER_SHORT);
    for (size_t at = 0; at < QLOG_HEADER_SIZE; at += 5) { /* magic, fields, reserved, CRC */
        whole[at] ^= 0x10;
        spit(f->path, whole, n);
        whole[at] ^= 0x10;
        check_empty_log(f->path, QLOG_HEADER_BAD);
    }
    free(whole);
}

static void test_unknown_version_refused(void **state)
{
    fx_t *f = *state;
    uint64_t third, end;
    three_records(f->path, &third, &end);
    size_t n;
    unsigned char *b = slurp(f->path, &n);
    b[8] = 2; /* version 2, with a CRC that matches */
    uint32_t crc = crc32c(b, 60);
    for (int i = 0; i < 4; i++)
        b[60 + i] = (unsigned char)(crc >> (8 * i));
    spit(f->path, b, n);
    free(b);
    qlog_t *l = NULL;
    err_detail_t d;
    assert_int_equal(qlog_open(f->path, MAX_RECORD, &l, &d), ERR_UNSUPPORTED);
    assert_null(l);
}

static void test_length_over_max_stops_scan(void **state)
{
    fx_t *f = *state;
    qlog_t *l = new_log(f->path);
    add_put_ok(l, 1, 10);
    uint64_t second = QLOG_HEADER_SIZE + qlog_pending_bytes(l);
    add_put_ok(l, 2, 200);
    size_t body2 = 16 + 28 + 3 + 7 + 18 + 200;
    add_put_ok(l, 3, 10);
    assert_int_equal(qlog_write(l), 0);
    qlog_close(l);
    size_t n;
    unsigned char *whole = slurp(f->path, &n);

    seen_list_t s;
    qlog_scan_stats_t st;
    l = open_scan(f->path, body2, &s, &st); /* just enough */
    assert_int_equal(s.n, 3);
    seen_free(&s);
    qlog_close(l);
    l = open_scan(f->path, body2 - 1, &s, &st);
    const int64_t one[] = {1};
    assert_ids(&s, one, 1);
    assert_int_equal(st.stop, QLOG_STOP_LENGTH);
    assert_int_equal(st.end, second);
    seen_free(&s);
    qlog_close(l);

    /* a huge length in a small file: refused on the length, nothing read */
    whole[second] = 0xf0, whole[second + 1] = 0xff, whole[second + 2] = 0xff;
    whole[second + 3] = 0xff;
    spit(f->path, whole, n);
    free(whole);
    l = open_scan(f->path, QLOG_RECORD_MAX, &s, &st);
    assert_ids(&s, one, 1);
    assert_int_equal(st.stop, QLOG_STOP_LENGTH);
    seen_free(&s);
    qlog_close(l);
}

static void test_add_refuses_what_a_scan_would(void **state)
{
    fx_t *f = *state;
    qlog_t *l = new_log(f->path);
    unsigned char payload[MAX_RECORD];
    qlog_put_t p;
    make_put(&p, 1, payload, MAX_RECORD - (16 + 28 + 3 + 7 + 18));
    assert_int_equal(qlog_add_put(l, &p), ERR_OK); /* exactly max_record */
    size_t pending = qlog_pending_bytes(l);
    p.payload_len++;
    assert_int_equal(qlog_add_put(l, &p), ERR_TOO_LARGE);
    p.payload_len = 1;
    p.dest = NULL;
    assert_int_equal(qlog_add_put(l, &p), ERR_BAD_VALUE);
    assert_int_equal(qlog_pending_bytes(l), pending);
    assert_int_equal(qlog_write(l), 0);
    qlog_close(l);
    seen_list_t s;
    l = open_scan(f->path, MAX_RECORD, &s, NULL);
    assert_int_equal(s.n, 1);
    seen_free(&s);
    qlog_close(l);
}

static void test_failed_write_counts_for_nothing(void **state)
{
    fx_t *f = *state;
    qlog_t *l = new_log(f->path);
    add_put_ok(l, 1, 10);
    assert_int_equal(qlog_write(l), 0);
    uint64_t pos = qlog_size(l);
    /* Direct: record 2 ends in the first block, 3 runs into the second. */
    size_t plen = direct_mode ? 3000 : 100;
    add_put_ok(l, 2, plen);
    uint64_t first_len = qlog_pending_bytes(l);
    add_put_ok(l, 3, plen);

    /* Room for record 2 whole and part of 3: the pwrite is cut short, then
     * fails (EFBIG; SIGXFSZ ignored). Limits bind root too. A direct write
     * is cut on a block's end (one cut elsewhere fails whole: EINVAL). */
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*old_xfsz)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = direct_mode ? BLOCK : (rlim_t)(pos + first_len + 20);
    assert_true(pos + first_len < lim.rlim_cur);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = qlog_write(l);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_xfsz);
    assert_int_equal(rc, -EFBIG);
    assert_int_equal(qlog_size(l), pos);
    assert_int_equal(qlog_pending_bytes(l), 0);

    /* record 2 reached the file whole, but no scan may see it */
    seen_list_t s;
    qlog_scan_stats_t st;
    qlog_t *other = open_scan(f->path, MAX_RECORD, &s, &st);
    const int64_t one[] = {1};
    assert_ids(&s, one, 1);
    assert_int_equal(st.end, pos);
    seen_free(&s);
    qlog_close(other);

    add_put_ok(l, 4, 30);
    assert_int_equal(qlog_write(l), 0);
    qlog_close(l);
    l = open_scan(f->path, MAX_RECORD, &s, &st);
    const int64_t want[] = {1, 4};
    assert_ids(&s, want, 2);
    assert_int_equal(s.r[1].offset, pos);
    seen_free(&s);
    qlog_close(l);
}

static void test_restart_keep_bytes(void **state)
{
    fx_t *f = *state;
    qlog_t *l = new_log(f->path);
    for (int64_t id = 1; id <= 40; id++)
        add_put_ok(l, id, 2000);
    assert_int_equal(qlog_write(l), 0);
    uint64_t big = size_of(f->path);
    assert_true(big > 80000);
    assert_int_equal(qlog_restart(l, 1 << 20, true), 0); /* longer than the file: kept */
    assert_int_equal(size_of(f->path), big);
    assert_int_equal(qlog_restart(l, 8192, true), 0);
    assert_int_equal(size_of(f->path), 8192);
    assert_int_equal(qlog_restart(l, 0, true), 0); /* never below the header */
    assert_int_equal(size_of(f->path), QLOG_HEADER_SIZE);
    assert_int_equal(qlog_epoch(l), 4);
    qlog_add_delivered(l, 5);
    assert_int_equal(qlog_write(l), 0);
    qlog_close(l);
    seen_list_t s;
    l = open_scan(f->path, MAX_RECORD, &s, NULL);
    const int64_t five[] = {5};
    assert_ids(&s, five, 1);
    assert_int_equal(qlog_epoch(l), 4);
    seen_free(&s);
    qlog_close(l);
}

/* Records across the scan's 1 MiB read window: many that straddle its
 * edges, and one larger than the window. */
static void test_records_across_read_window(void **state)
{
    fx_t *f = *state;
    const size_t big = (size_t)3 << 20, max_record = (size_t)4 << 20;
    qlog_t *l = open_ok(f->path, max_record);
    assert_int_equal(qlog_restart(l, 0, true), 0);
    if (direct_mode)
        direct_on(l);
    unsigned char *payload = malloc(big);
    qlog_put_t p;
    for (int64_t id = 1; id <= 400; id++) {
        size_t plen = id == 200 ? big : 4000 + (size_t)id * 3;
        for (size_t i = 0; i < plen; i++)
            payload[i] = (unsigned char)(id * 31 + (int64_t)(i % 251));
        p = (qlog_put_t){.id = id,
                         .dest = "hl7",
                         .control_id = "",
                         .content_type = "t",
                         .payload = payload,
                         .payload_len = plen};
        assert_int_equal(qlog_add_put(l, &p), ERR_OK);
        if (id % 50 == 0)
            assert_int_equal(qlog_write(l), 0);
    }
    uint64_t end = qlog_size(l);
    qlog_close(l);

    l = open_ok(f->path, max_record);
    qlog_scan_stats_t st;
    err_detail_t d;
    pattern_check_t c = {1, payload};
    assert_int_equal(qlog_scan(l, check_payload, &c, &st, &d), ERR_OK);
    assert_int_equal(c.next, 401);
    assert_int_equal(st.stop, written_stop(end));
    assert_int_equal(st.end, end);
    free(payload);
    qlog_close(l);
}

static err_t refuse_second(const qlog_record_t *rec, void *user)
{
    (void)rec;
    return ++*(int *)user == 2 ? ERR_QUEUE : ERR_OK;
}

static void test_callback_error_stops_scan(void **state)
{
    fx_t *f = *state;
    uint64_t third, end;
    three_records(f->path, &third, &end);
    qlog_t *l = open_ok(f->path, MAX_RECORD);
    int calls = 0;
    qlog_scan_stats_t st;
    err_detail_t d;
    assert_int_equal(qlog_scan(l, refuse_second, &calls, &st, &d), ERR_QUEUE);
    assert_int_equal(calls, 2);
    assert_int_equal(st.stop, QLOG_STOP_CALLBACK);
    assert_int_equal(st.puts, 1);
    qlog_add_delivered(l, 1);
    assert_int_equal(qlog_write(l), -EINVAL); /* no position after a scan stopped short */
    assert_int_equal(size_of(f->path), end);
    qlog_close(l);
}

/* Checks each record against the ids wanted and add_put_ok's payloads. */
static void assert_puts(const seen_list_t *s, const int64_t *ids, const size_t *plens, size_t n)
{
    assert_ids(s, ids, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char want[MAX_RECORD];
        qlog_put_t p;
        make_put(&p, ids[i], want, plens[i]);
        assert_int_equal(s->r[i].type, QLOG_PUT);
        assert_int_equal(s->r[i].payload_len, plens[i]);
        assert_memory_equal(s->r[i].payload, want, plens[i]);
    }
}

/* Direct writes switched on and off between writes, with records
 * buffered, and across restarts: every record of the last epoch comes
 * back, in order, and after a direct write the rest of its last block is
 * zeros, which end a scan cleanly. */
static void test_direct_switching(void **state)
{
    fx_t *f = *state;
    qlog_t *l = new_log(f->path);
    int64_t ids[32];
    size_t plens[32], n = 0;
#define ADD(len) (ids[n] = (int64_t)n + 100, plens[n] = (len), add_put_ok(l, ids[n], plens[n]), n++)
    ADD(10);
    ADD(3000);
    assert_true(qlog_direct(l, true)); /* with records buffered */
    assert_true(qlog_direct(l, true)); /* again: no change */
    assert_int_equal(qlog_write(l), 0);
    ADD(4000); /* across a block's end */
    ADD(1);
    assert_int_equal(qlog_write(l), 0);
    uint64_t end = qlog_size(l);
    assert_int_equal(size_of(f->path), (end + BLOCK - 1) / BLOCK * BLOCK);
    ADD(700);
    assert_false(qlog_direct(l, false)); /* off, with a record buffered */
    assert_int_equal(fcntl(qlog_fd(l), F_GETFL) & O_DIRECT, 0);
    assert_int_equal(qlog_write(l), 0);
    ADD(2500);
    assert_true(qlog_direct(l, true)); /* on again mid-block: the lead read back */
    assert_int_equal(qlog_write(l), 0);
    end = qlog_size(l);
    qlog_close(l);

    seen_list_t s;
    qlog_scan_stats_t st;
    size_t fsize = (size_t)size_of(f->path);
    assert_true(fsize % BLOCK == 0 && fsize > end);
    size_t got;
    unsigned char *bytes = slurp(f->path, &got);
    for (size_t i = end; i < fsize; i++)
        assert_int_equal(bytes[i], 0);
    free(bytes);
    l = open_scan(f->path, MAX_RECORD, &s, &st);
    assert_int_equal(st.stop, QLOG_STOP_ZEROS); /* at the zeros */
    assert_int_equal(st.end, end);
    assert_int_equal(size_of(f->path), end); /* the scan cut them */
    assert_puts(&s, ids, plens, n);
    seen_free(&s);

    /* Restarts with direct writes: the header is rewritten through its
     * block, and what was buffered goes into the new epoch. */
    direct_on(l);
    n = 0;
    ADD(50);
    assert_int_equal(qlog_restart(l, 1 << 20, false), 0);
    ADD(60);
    assert_int_equal(qlog_write(l), 0);
    assert_int_equal(qlog_restart(l, BLOCK * 3, true), 0); /* cut to a block's multiple */
    n = 0;
    ADD(3990);
    ADD(5);
    assert_int_equal(qlog_write(l), 0);
    ADD(77);
    assert_int_equal(qlog_write(l), 0);
    assert_int_equal(qlog_sync(l), 0);
    uint64_t epoch = qlog_epoch(l);
    end = qlog_size(l);
    qlog_close(l);
    l = open_scan(f->path, MAX_RECORD, &s, &st);
    assert_int_equal(qlog_epoch(l), epoch);
    assert_int_equal(st.stop, QLOG_STOP_ZEROS);
    assert_int_equal(st.end, end);
    assert_puts(&s, ids, plens, n);
    seen_free(&s);
    qlog_close(l);
#undef ADD
}

/* Synchronized writes: direct ones are synced by the write itself, the
 * first after an unsynced restart rewriting the new header with its block;
 * buffered ones are plain and say so; every record is read back. */
static void test_write_dsync(void **state)
{
    fx_t *f = *state;
    qlog_t *l = new_log(f->path);
    bool synced = false;
    add_put_ok(l, 1, 100);
    add_put_ok(l, 2, 3000);
    add_put_ok(l, 3, 3000); /* across a block's end */
    assert_int_equal(qlog_write_dsync(l, &synced), 0);
    assert_true(synced);
    assert_int_equal(qlog_restart(l, BLOCK * 4, false), 0);
    uint64_t epoch = qlog_epoch(l);
    add_put_ok(l, 4, 10);
    assert_int_equal(qlog_write_dsync(l, &synced), 0);
    assert_true(synced);
    assert_false(qlog_direct(l, false));
    add_put_ok(l, 5, 20);
    synced = true;
    assert_int_equal(qlog_write_dsync(l, &synced), 0);
    assert_false(synced); /* buffered: qlog_sync still owed */
    assert_int_equal(qlog_sync(l), 0);
    uint64_t end = qlog_size(l);
    qlog_close(l);

    seen_list_t s;
    qlog_scan_stats_t st;
    l = open_scan(f->path, MAX_RECORD, &s, &st);
    assert_int_equal(qlog_epoch(l), epoch);
    const int64_t ids[] = {4, 5}; /* the new epoch's, under its header */
    assert_ids(&s, ids, 2);
    assert_int_equal(st.end, end);
    seen_free(&s);
    synced = false;
    assert_int_equal(qlog_write_dsync(l, &synced), 0); /* nothing buffered */
    qlog_close(l);

    l = open_ok(f->path, MAX_RECORD); /* no scan: no write position */
    add_put_ok(l, 6, 10);
    assert_int_equal(qlog_write_dsync(l, &synced), -EINVAL);
    assert_false(synced);
    qlog_close(l);
}

/* A direct write larger than the buffer kept after use (4 MiB): the buffer
 * is freed, the lead carried into a small one, and the records written
 * after it land right behind the large one. */
static void test_direct_large_record_then_small(void **state)
{
    fx_t *f = *state;
    const size_t big = (size_t)5 << 20;
    qlog_t *l = open_ok(f->path, (size_t)8 << 20);
    assert_int_equal(qlog_restart(l, 0, true), 0);
    direct_on(l);
    unsigned char *payload = malloc(big);
    for (size_t i = 0; i < big; i++)
        payload[i] = (unsigned char)(i * 13 + 5);
    qlog_put_t p = {.id = 1,
                    .dest = "hl7",
                    .control_id = "",
                    .content_type = "t",
                    .payload = payload,
                    .payload_len = big};
    assert_int_equal(qlog_add_put(l, &p), ERR_OK);
    assert_int_equal(qlog_write(l), 0);
    qlog_add_delivered(l, 1);
    assert_int_equal(qlog_write(l), 0);
    qlog_add_delivered(l, 2);
    assert_int_equal(qlog_write(l), 0);
    uint64_t end = qlog_size(l);
    qlog_close(l);

    seen_list_t s;
    qlog_scan_stats_t st;
    l = open_scan(f->path, (size_t)8 << 20, &s, &st);
    const int64_t ids[] = {1, 1, 2};
    assert_ids(&s, ids, 3);
    assert_int_equal(s.r[0].payload_len, big);
    assert_memory_equal(s.r[0].payload, payload, big);
    assert_int_equal(s.r[1].type, QLOG_DELIVERED);
    assert_int_equal(st.end, end);
    seen_free(&s);
    free(payload);
    qlog_close(l);
}

static void test_open_errors(void **state)
{
    fx_t *f = *state;
    qlog_t *l = (qlog_t *)1;
    err_detail_t d;
    assert_int_equal(qlog_open(f->path, 0, &l, &d), ERR_BAD_VALUE);
    assert_null(l);
    assert_int_equal(qlog_open(f->path, QLOG_RECORD_MAX + 1, &l, &d), ERR_BAD_VALUE);
    assert_int_equal(qlog_open(f->dir, MAX_RECORD, &l, &d), ERR_IO); /* a directory */
    assert_null(l);
    qlog_close(NULL);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, fx_setup, fx_teardown)
#define TD(name) cmocka_unit_test_setup_teardown(name, fx_setup_direct, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(test_round_trip),
        T(test_several_writes_then_scan),
        T(test_torn_tail_at_every_byte),
        T(test_flipped_bit_stops_scan),
        T(test_restart_hides_old_epoch),
        T(test_unsynced_restart_old_header_over_new_records),
        T(test_append_after_torn_batch_hides_it),
        T(test_bad_or_short_header),
        T(test_unknown_version_refused),
        T(test_length_over_max_stops_scan),
        T(test_add_refuses_what_a_scan_would),
        T(test_failed_write_counts_for_nothing),
        T(test_restart_keep_bytes),
        T(test_records_across_read_window),
        T(test_callback_error_stops_scan),
        T(test_open_errors),
        TD(test_round_trip),
        TD(test_several_writes_then_scan),
        TD(test_failed_write_counts_for_nothing),
        TD(test_restart_keep_bytes),
        TD(test_records_across_read_window),
        TD(test_direct_switching),
        TD(test_direct_large_record_then_small),
        TD(test_write_dsync),
    };
#undef T
#undef TD
    return cmocka_run_group_tests(tests, NULL, NULL);
}
