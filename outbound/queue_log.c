/* queue_log.c - the queue's append-only log file (see queue_log.h for the
 * format and the rules).
 *
 * Integers are written and read byte by byte, least significant first, so
 * the file is the same on any host. Records are built in a buffer by the
 * add functions; their CRCs are computed by qlog_write, on whatever thread
 * writes, and with the salt of the epoch they are written in.
 *
 * The one invariant every path keeps: the bytes at the write position are
 * never the start of a valid record of the current epoch. A scan stops at
 * the first invalid record, so anything behind the write position - a
 * batch torn by a crash, what a failed write left, an older epoch's records
 * - can never be read as part of the log once records are appended in
 * front of it. Hence the cut after a scan and after a failed write. */
#include "queue_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "crc32c.h"
#include "xmalloc.h"

#define MAGIC "SGQLOG\0\1"
#define FORMAT_VERSION 1
#define ABSENT 0xFFFFFFFFu    /* a field's length when the field is NULL */
#define PUT_FIXED (8 + 8)     /* id, created_ms */
#define PUT_FIELDS 7          /* dest ... payload, each with a u32 length */
#define SCAN_WINDOW (1 << 20) /* bytes a scan reads at a time */
#define BUF_KEEP (4u << 20)   /* a write buffer larger than this is freed after use */
/* Direct writes start and end on multiples of this, from a buffer aligned
 * to it: a multiple of every logical block size in use (512, 4096). */
#define DIO_ALIGN ((size_t)4096)

struct qlog {
    int fd;
    size_t max_record;
    qlog_header_t header; /* as found at open */
    bool has_salt;        /* a valid header: found at open or written by a restart */
    uint64_t epoch, salt;
    uint32_t salt_crc;  /* the CRC-32C of the salt's 8 bytes, where each record's starts */
    bool positioned;    /* pos is known: a scan completed or a restart succeeded */
    uint64_t pos;       /* the write position */
    bool direct;        /* the descriptor has O_DIRECT (qlog_direct) */
    unsigned char *raw; /* the buffer's allocation; buf is raw aligned to DIO_ALIGN */
    unsigned char *buf; /* lead bytes, then the records added and not yet written */
    size_t lead;        /* direct only: the file's bytes [pos - lead, pos) */
    size_t len, cap;    /* len: the records' bytes after the lead; cap: buf's size */
    unsigned char *block_raw, *block; /* direct only: one aligned block, for writes
                                         outside buf */
    bool dsync_refused; /* the kernel refused RWF_DSYNC: qlog_write_dsync writes plainly */
};

/* ---- little-endian integers, byte by byte ---- */

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const unsigned char *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static size_t pad8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* ---- plain I/O: whole or an errno ---- */

/* *rwf: 0, or RWF_DSYNC for writes that return once on stable storage; a
 * kernel that refuses the flag (before Linux 4.7, or an emulated one) gets
 * plain writes, and *rwf is set to 0 to say so. */
static int pwritev2_all(int fd, const void *b, size_t n, uint64_t off, int *rwf)
{
    size_t done = 0;
    while (done < n) {
        struct iovec v = {(char *)b + done, n - done};
        ssize_t w = *rwf ? pwritev2(fd, &v, 1, (off_t)(off + done), *rwf)
                         : pwrite(fd, v.iov_base, v.iov_len, (off_t)(off + done));
        if (w < 0 && *rwf && (errno == EOPNOTSUPP || errno == ENOSYS)) {
            *rwf = 0;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EIO;
        done += (size_t)w;
    }
    return 0;
}

static int pwrite_all(int fd, const void *b, size_t n, uint64_t off)
{
    int plain = 0;
    return pwritev2_all(fd, b, n, off, &plain);
}

/* Reads up to n bytes at off; *got is how many (fewer at the end of the
 * file). Returns 0 or an errno. */
static int pread_some(int fd, void *b, size_t n, uint64_t off, size_t *got)
{
    *got = 0;
    while (*got < n) {
        ssize_t r = pread(fd, (char *)b + *got, n - *got, (off_t)(off + *got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            break;
        *got += (size_t)r;
    }
    return 0;
}

static int file_size(int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

/* ---- the header ---- */

static void header_encode(unsigned char h[QLOG_HEADER_SIZE], uint64_t epoch, uint64_t salt)
{
    memset(h, 0, QLOG_HEADER_SIZE);
    memcpy(h, MAGIC, 8);
    put_le32(h + 8, FORMAT_VERSION);
    put_le32(h + 12, 0); /* flags */
    put_le64(h + 16, epoch);
    put_le64(h + 24, salt);
    put_le32(h + 60, crc32c(h, 60));
}

static void set_salt(qlog_t *l, uint64_t salt)
{
    unsigned char s[8];
    put_le64(s, salt);
    l->salt = salt;
    l->salt_crc = crc32c(s, sizeof s);
    l->has_salt = true;
}

static err_t header_read(qlog_t *l, err_detail_t *d)
{
    uint64_t size = 0;
    int e = file_size(l->fd, &size);
    if (e)
        return err_set(d, ERR_IO, 0, "queue log: fstat: %s", strerror(e));
    if (size == 0) {
        l->header = QLOG_HEADER_NONE;
        return ERR_OK;
    }
    unsigned char h[QLOG_HEADER_SIZE];
    size_t got;
    if ((e = pread_some(l->fd, h, sizeof h, 0, &got)) != 0)
        return err_set(d, ERR_IO, 0, "queue log: reading the header: %s", strerror(e));
    if (got < sizeof h) {
        l->header = QLOG_HEADER_SHORT;
        return ERR_OK;
    }
    if (memcmp(h, MAGIC, 8) != 0 || get_le32(h + 60) != crc32c(h, 60)) {
        l->header = QLOG_HEADER_BAD;
        return ERR_OK;
    }
    uint32_t version = get_le32(h + 8), flags = get_le32(h + 12);
    if (version != FORMAT_VERSION || flags != 0)
        return err_set(d, ERR_UNSUPPORTED, 0,
                       "queue log: format version %u flags 0x%x, this build reads version %u "
                       "flags 0",
                       (unsigned)version, (unsigned)flags, (unsigned)FORMAT_VERSION);
    l->header = QLOG_HEADER_OK;
    l->epoch = get_le64(h + 16);
    set_salt(l, get_le64(h + 24));
    return ERR_OK;
}

err_t qlog_open(const char *path, size_t max_record, qlog_t **out, err_detail_t *d)
{
    err_clear(d);
    if (out)
        *out = NULL;
    if (!path || !out || max_record == 0 || max_record > QLOG_RECORD_MAX)
        return err_set(d, ERR_BAD_VALUE, 0, "queue log: no path, or max_record out of range");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600); /* PHI: owner only */
    if (fd < 0)
        return err_set(d, ERR_IO, 0, "queue log %s: %s", path, strerror(errno));
    qlog_t *l = xcalloc(1, sizeof *l);
    l->fd = fd;
    l->max_record = max_record;
    err_t rc = header_read(l, d);
    if (rc != ERR_OK) {
        qlog_close(l);
        return rc;
    }
    *out = l;
    return ERR_OK;
}

qlog_header_t qlog_header(const qlog_t *l)
{
    return l->header;
}

uint64_t qlog_epoch(const qlog_t *l)
{
    return l->epoch;
}

size_t qlog_size(const qlog_t *l)
{
    return l->positioned ? (size_t)l->pos : 0;
}

size_t qlog_pending_bytes(const qlog_t *l)
{
    return l->len;
}

void qlog_discard(qlog_t *l)
{
    l->len = 0;
}

int qlog_fd(const qlog_t *l)
{
    return l->fd;
}

const char *qlog_stop_str(qlog_stop_t stop)
{
    switch (stop) {
    case QLOG_STOP_END: return "end of file";
    case QLOG_STOP_ZEROS: return "record head of zeros";
    case QLOG_STOP_NO_HEADER: return "no valid header";
    case QLOG_STOP_TORN: return "record runs past the end of the file";
    case QLOG_STOP_LENGTH: return "record length over the limit";
    case QLOG_STOP_CRC: return "record CRC mismatch";
    case QLOG_STOP_TYPE: return "unknown record type";
    case QLOG_STOP_MALFORMED: return "malformed record";
    case QLOG_STOP_CALLBACK: return "stopped by the caller";
    }
    return "unknown";
}

/* ---- scanning ---- */

typedef struct {
    unsigned char *buf;
    size_t cap, len;
    uint64_t off; /* the file offset of buf[0] */
} window_t;

/* Points *out at bytes [pos, pos + n) of the file, reading them (and what
 * follows, up to SCAN_WINDOW) when they are not in the window yet. The
 * caller has checked that they lie within the file's size, which bounds
 * the allocation. Returns 0, an errno, or -1 when the file was shorter
 * than that (it shrank meanwhile). */
static int window_get(int fd, window_t *w, uint64_t pos, size_t n, uint64_t size,
                      const unsigned char **out)
{
    if (pos >= w->off && pos + n <= w->off + w->len) {
        *out = w->buf + (pos - w->off);
        return 0;
    }
    size_t want = n > SCAN_WINDOW ? n : SCAN_WINDOW;
    if (want > size - pos)
        want = (size_t)(size - pos);
    if (want > w->cap) {
        xfree(w->buf);
        w->buf = xmalloc(want);
        w->cap = want;
    }
    w->off = pos;
    int e = pread_some(fd, w->buf, want, pos, &w->len);
    if (e)
        return e;
    if (w->len < n)
        return -1;
    *out = w->buf;
    return 0;
}

/* Takes one length-prefixed field at *at of body b (n bytes): NULL when
 * absent, else a copy followed by a NUL at *o, which moves past it. Text
 * fields may not hold a NUL (they are given back as C strings). */
static bool take_field(const unsigned char *b, size_t n, size_t *at, unsigned char **o, bool text,
                       const void **out, size_t *len)
{
    if (n - *at < 4)
        return false;
    uint32_t fl = get_le32(b + *at);
    *at += 4;
    *out = NULL;
    *len = 0;
    if (fl == ABSENT)
        return true;
    if (fl > n - *at || (text && memchr(b + *at, 0, fl)))
        return false;
    memcpy(*o, b + *at, fl);
    (*o)[fl] = 0;
    *out = *o;
    *len = fl;
    *o += fl + 1;
    *at += fl;
    return true;
}

/* Decodes a PUT body of n bytes into *put, its fields copied to scratch
 * (at least n bytes: the lengths' room takes the NULs). False when the
 * body is not exactly a PUT. */
static bool decode_put(const unsigned char *b, size_t n, unsigned char *scratch, qlog_put_t *put)
{
    if (n < PUT_FIXED + 4 * PUT_FIELDS)
        return false;
    put->id = (int64_t)get_le64(b);
    put->created_ms = (int64_t)get_le64(b + 8);
    const char **texts[] = {&put->dest,     &put->control_id, &put->content_type,
                            &put->findings, &put->meta,       &put->worklist};
    size_t at = PUT_FIXED, len;
    unsigned char *o = scratch;
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        const void *v;
        if (!take_field(b, n, &at, &o, true, &v, &len))
            return false;
        *texts[i] = v;
    }
    if (!take_field(b, n, &at, &o, false, &put->payload, &put->payload_len))
        return false;
    /* dest, control_id, content_type and payload are never absent */
    return at == n && put->dest && put->control_id && put->content_type && put->payload;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Checks the record at pos and hands it to cb. Returns the stop reason, or
 * -1 to go on with *next set; an errno goes to *e (stop QLOG_STOP_END). */
static int scan_one(qlog_t *l, window_t *w, uint64_t pos, uint64_t size, unsigned char **scratch,
                    size_t *scratch_cap, qlog_record_cb cb, void *user, qlog_scan_stats_t *st,
                    uint64_t *next, int *e, err_t *cb_rc)
{
    if (pos == size)
        return QLOG_STOP_END;
    if (size - pos < QLOG_RECORD_HEAD)
        return QLOG_STOP_TORN;
    const unsigned char *h;
    int r = window_get(l->fd, w, pos, QLOG_RECORD_HEAD, size, &h);
    if (r)
        return r < 0 ? QLOG_STOP_TORN : (*e = r, QLOG_STOP_END);
    if (all_zero(h, QLOG_RECORD_HEAD))
        return QLOG_STOP_ZEROS;
    uint32_t len = get_le32(h), crc = get_le32(h + 4);
    unsigned char type = h[8];
    if (len > l->max_record)
        return QLOG_STOP_LENGTH;
    size_t total = QLOG_RECORD_HEAD + pad8(len); /* max_record <= 1 GiB: no overflow */
    if (total > size - pos)
        return QLOG_STOP_TORN;
    if ((r = window_get(l->fd, w, pos, total, size, &h)) != 0)
        return r < 0 ? QLOG_STOP_TORN : (*e = r, QLOG_STOP_END);
    const unsigned char *body = h + QLOG_RECORD_HEAD;
    uint32_t c = crc32c_extend(l->salt_crc, &type, 1);
    if (crc32c_extend(c, body, len) != crc)
        return QLOG_STOP_CRC;
    /* Not covered by the CRC, so checked here: a flipped bit anywhere in a
     * record stops the scan. */
    if (!all_zero(h + 9, 7) || !all_zero(body + len, total - QLOG_RECORD_HEAD - len))
        return QLOG_STOP_MALFORMED;
    qlog_record_t rec = {.type = (qlog_type_t)type, .offset = pos};
    if (type == QLOG_PUT) {
        if (*scratch_cap < len) {
            xfree(*scratch);
            *scratch = xmalloc((size_t)len + 8);
            *scratch_cap = len;
        }
        if (!decode_put(body, len, *scratch, &rec.put))
            return QLOG_STOP_MALFORMED;
        rec.id = rec.put.id;
    } else if (type == QLOG_DELIVERED) {
        if (len != 8)
            return QLOG_STOP_MALFORMED;
        rec.id = (int64_t)get_le64(body);
    } else {
        return QLOG_STOP_TYPE;
    }
    if ((*cb_rc = cb(&rec, user)) != ERR_OK)
        return QLOG_STOP_CALLBACK;
    if (type == QLOG_PUT)
        st->puts++;
    else
        st->delivered++;
    *next = pos + total;
    return -1;
}

err_t qlog_scan(qlog_t *l, qlog_record_cb cb, void *user, qlog_scan_stats_t *st, err_detail_t *d)
{
    err_clear(d);
    qlog_scan_stats_t local;
    if (!st)
        st = &local;
    *st = (qlog_scan_stats_t){.end = QLOG_HEADER_SIZE, .stop = QLOG_STOP_NO_HEADER};
    l->positioned = false;
    if (qlog_direct(l, false)) /* the scan's reads are not aligned */
        return err_set(d, ERR_IO, 0, "queue log: cannot clear O_DIRECT: %s", strerror(errno));
    int e = file_size(l->fd, &st->file_size);
    if (e)
        return err_set(d, ERR_IO, 0, "queue log: fstat: %s", strerror(e));
    if (!l->has_salt)
        return ERR_OK;
    window_t w = {0};
    unsigned char *scratch = NULL;
    size_t scratch_cap = 0;
    uint64_t pos = QLOG_HEADER_SIZE, size = st->file_size;
    err_t cb_rc = ERR_OK;
    int stop;
    if (size < pos) /* a restart's header, cut since: nothing to read */
        size = pos;
    while ((stop = scan_one(l, &w, pos, size, &scratch, &scratch_cap, cb, user, st, &pos, &e,
                            &cb_rc)) < 0)
        ;
    xfree(w.buf);
    xfree(scratch);
    st->end = pos;
    st->stop = (qlog_stop_t)stop;
    if (e)
        return err_set(d, ERR_IO, (size_t)pos, "queue log: read: %s", strerror(e));
    if (stop == QLOG_STOP_CALLBACK)
        return err_set(d, cb_rc, (size_t)pos, "queue log: scan stopped by its caller");
    if (st->file_size > pos) {
        if (ftruncate(l->fd, (off_t)pos) != 0 || fdatasync(l->fd) != 0)
            return err_set(d, ERR_IO, (size_t)pos, "queue log: cutting the tail: %s",
                           strerror(errno));
    }
    l->pos = pos;
    l->positioned = true;
    return ERR_OK;
}

/* ---- the write buffer ---- */

static size_t align_up(size_t n)
{
    return (n + DIO_ALIGN - 1) & ~(DIO_ALIGN - 1);
}

static unsigned char *aligned(unsigned char *p)
{
    return p + (DIO_ALIGN - (uintptr_t)p % DIO_ALIGN) % DIO_ALIGN;
}

/* Room for want bytes from buf's start, the lead and the records kept;
 * buf stays aligned, as a direct write from it needs. */
static void buf_reserve(qlog_t *l, size_t want)
{
    if (want <= l->cap)
        return;
    size_t cap = l->cap ? l->cap : 4096;
    while (cap < want)
        cap *= 2;
    unsigned char *raw = xmalloc(cap + DIO_ALIGN - 1), *buf = aligned(raw);
    if (l->lead + l->len)
        memcpy(buf, l->buf, l->lead + l->len);
    xfree(l->raw);
    l->raw = raw;
    l->buf = buf;
    l->cap = cap;
}

static unsigned char *block_get(qlog_t *l)
{
    if (!l->block) {
        l->block_raw = xmalloc(2 * DIO_ALIGN - 1);
        l->block = aligned(l->block_raw);
    }
    return l->block;
}

/* ---- building records ---- */

/* Appends a record head for a body of len bytes and returns where the body
 * goes; the padding after it is zeroed, the CRC left for qlog_write. */
static unsigned char *record_begin(qlog_t *l, qlog_type_t type, size_t len)
{
    size_t total = QLOG_RECORD_HEAD + pad8(len);
    buf_reserve(l, l->lead + l->len + total);
    unsigned char *h = l->buf + l->lead + l->len;
    memset(h, 0, QLOG_RECORD_HEAD);
    memset(h + total - 8, 0, 8); /* covers the padding, whatever its size */
    put_le32(h, (uint32_t)len);
    h[8] = (unsigned char)type;
    l->len += total;
    return h + QLOG_RECORD_HEAD;
}

static unsigned char *put_field(unsigned char *p, const void *v, size_t len)
{
    put_le32(p, v ? (uint32_t)len : ABSENT);
    if (len)
        memcpy(p + 4, v, len);
    return p + 4 + len;
}

err_t qlog_add_put(qlog_t *l, const qlog_put_t *put)
{
    if (!put->dest || !put->control_id || !put->content_type || (!put->payload && put->payload_len))
        return ERR_BAD_VALUE;
    const char *texts[] = {put->dest,     put->control_id, put->content_type,
                           put->findings, put->meta,       put->worklist};
    size_t lens[6];
    uint64_t body = PUT_FIXED + 4 * PUT_FIELDS + (uint64_t)put->payload_len;
    if (put->payload_len > l->max_record)
        return ERR_TOO_LARGE;
    for (size_t i = 0; i < 6; i++) {
        lens[i] = texts[i] ? strlen(texts[i]) : 0;
        if (lens[i] > l->max_record)
            return ERR_TOO_LARGE;
        body += lens[i];
    }
    if (body > l->max_record)
        return ERR_TOO_LARGE;
    unsigned char *p = record_begin(l, QLOG_PUT, (size_t)body);
    put_le64(p, (uint64_t)put->id);
    put_le64(p + 8, (uint64_t)put->created_ms);
    p += PUT_FIXED;
    for (size_t i = 0; i < 6; i++)
        p = put_field(p, texts[i], lens[i]);
    /* an empty payload is present, not absent: give put_field a pointer */
    put_field(p, put->payload ? put->payload : "", put->payload_len);
    return ERR_OK;
}

void qlog_add_delivered(qlog_t *l, int64_t id)
{
    put_le64(record_begin(l, QLOG_DELIVERED, 8), (uint64_t)id);
}

/* ---- writing ---- */

static void buffer_drop(qlog_t *l)
{
    l->len = 0;
    if (l->cap > BUF_KEEP) { /* one large payload should not pin its size */
        unsigned char *old = l->raw, *lead = l->buf;
        size_t n = l->lead;
        l->raw = l->buf = NULL;
        l->cap = l->lead = 0;
        if (n) {
            buf_reserve(l, n);
            memcpy(l->buf, lead, n);
            l->lead = n;
        }
        xfree(old);
    }
}

/* Puts each buffered record's CRC in its head, with the current salt. */
static void buffer_seal(qlog_t *l)
{
    for (size_t at = 0; at < l->len;) {
        unsigned char *h = l->buf + l->lead + at;
        size_t len = get_le32(h);
        uint32_t c = crc32c_extend(l->salt_crc, h + 8, 1);
        put_le32(h + 4, crc32c_extend(c, h + QLOG_RECORD_HEAD, len));
        at += QLOG_RECORD_HEAD + pad8(len);
    }
}

/* After a failed write: what it left behind the write position must not
 * read as records (see the invariant at the top), now or after a crash. */
static int hide_partial(qlog_t *l)
{
    static const unsigned char zeros[QLOG_RECORD_HEAD];
    int e = ftruncate(l->fd, (off_t)l->pos) == 0 ? 0 : errno;
    if (e && l->direct) { /* zeros from pos stop a scan as well; direct: the whole block */
        unsigned char *b = block_get(l);
        memcpy(b, l->buf, l->lead);
        memset(b + l->lead, 0, DIO_ALIGN - l->lead);
        e = pwrite_all(l->fd, b, DIO_ALIGN, l->pos - l->lead);
    } else if (e) {
        e = pwrite_all(l->fd, zeros, sizeof zeros, l->pos);
    }
    if (!e && fdatasync(l->fd) != 0)
        e = errno;
    return e;
}

static int write_buffer(qlog_t *l, int *rwf)
{
    if (!l->len)
        return 0;
    if (!l->positioned) {
        buffer_drop(l);
        return -EINVAL;
    }
    buffer_seal(l);
    int e;
    if (l->direct) {
        /* Whole blocks: from the one that holds pos, its bytes before pos
         * (the lead) written again as they are, to the end of the last,
         * zeros after the records. */
        size_t end = l->lead + l->len, total = align_up(end);
        buf_reserve(l, total);
        memset(l->buf + end, 0, total - end);
        e = pwritev2_all(l->fd, l->buf, total, l->pos - l->lead, rwf);
        if (!e) {
            l->pos += l->len;
            size_t lead = (size_t)(l->pos % DIO_ALIGN);
            memmove(l->buf, l->buf + end - lead, lead);
            l->lead = lead;
        }
    } else {
        e = pwritev2_all(l->fd, l->buf, l->len, l->pos, rwf);
        if (!e)
            l->pos += l->len;
    }
    if (e && hide_partial(l) != 0)
        l->positioned = false;
    buffer_drop(l);
    return -e;
}

int qlog_write(qlog_t *l)
{
    int plain = 0;
    return write_buffer(l, &plain);
}

int qlog_write_dsync(qlog_t *l, bool *synced)
{
    int rwf = l->direct && !l->dsync_refused ? RWF_DSYNC : 0;
    int e = write_buffer(l, &rwf);
    if (l->direct && !rwf && !l->dsync_refused)
        l->dsync_refused = true; /* refused by the kernel: not asked again */
    *synced = e == 0 && rwf != 0;
    return e;
}

bool qlog_direct(qlog_t *l, bool on)
{
    if (on == l->direct)
        return on;
    int fl = fcntl(l->fd, F_GETFL);
    if (fl < 0)
        return l->direct;
    if (!on) {
        if (fcntl(l->fd, F_SETFL, fl & ~O_DIRECT) != 0)
            return true;
        if (l->len)
            memmove(l->buf, l->buf + l->lead, l->len);
        l->lead = 0;
        l->direct = false;
        return false;
    }
    if (!l->positioned)
        return false;
    /* The lead is read before O_DIRECT is set: a buffered read sees what
     * buffered writes left in the page cache, and needs no alignment. */
    size_t lead = (size_t)(l->pos % DIO_ALIGN), got = 0;
    buf_reserve(l, lead + l->len);
    if (l->len)
        memmove(l->buf + lead, l->buf, l->len);
    if (pread_some(l->fd, l->buf, lead, l->pos - lead, &got) != 0 || got != lead ||
        fcntl(l->fd, F_SETFL, fl | O_DIRECT) != 0) {
        if (l->len)
            memmove(l->buf, l->buf + lead, l->len);
        return false; /* O_DIRECT refused (tmpfs before Linux 6.6, ...): buffered */
    }
    l->lead = lead;
    l->direct = true;
    return true;
}

bool qlog_is_direct(const qlog_t *l)
{
    return l->direct;
}

int qlog_sync(qlog_t *l)
{
    if (fdatasync(l->fd) == 0)
        return 0;
    int e = errno;
    l->positioned = false;
    return -e;
}

int qlog_restart(qlog_t *l, size_t keep_bytes, bool sync)
{
    uint64_t salt = 0;
    unsigned char s[8];
    do {
        size_t got = 0;
        while (got < sizeof s) {
            ssize_t r = getrandom(s + got, sizeof s - got, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                return -errno;
            got += (size_t)r;
        }
        salt = get_le64(s);
    } while (l->has_salt && salt == l->salt); /* the old records must fail */
    l->positioned = false;
    unsigned char h[QLOG_HEADER_SIZE];
    header_encode(h, l->epoch + 1, salt);
    int e;
    if (l->direct) {
        /* The header's whole block: the old epoch's records in the rest of
         * it become zeros, which they may (the new salt fails them). */
        unsigned char *b = block_get(l);
        memcpy(b, h, sizeof h);
        memset(b + sizeof h, 0, DIO_ALIGN - sizeof h);
        e = pwrite_all(l->fd, b, DIO_ALIGN, 0);
    } else {
        e = pwrite_all(l->fd, h, sizeof h, 0);
    }
    uint64_t size = 0, keep = keep_bytes > QLOG_HEADER_SIZE ? keep_bytes : QLOG_HEADER_SIZE;
    if (!e)
        e = file_size(l->fd, &size);
    if (!e && size > keep && ftruncate(l->fd, (off_t)keep) != 0)
        e = errno;
    if (!e && sync && fdatasync(l->fd) != 0)
        e = errno;
    if (e)
        return -e;
    l->epoch++;
    set_salt(l, salt);
    l->pos = QLOG_HEADER_SIZE;
    l->positioned = true;
    if (l->direct) { /* the header is the new lead, before what is buffered */
        buf_reserve(l, QLOG_HEADER_SIZE + l->len);
        if (l->len)
            memmove(l->buf + QLOG_HEADER_SIZE, l->buf + l->lead, l->len);
        memcpy(l->buf, h, QLOG_HEADER_SIZE);
        l->lead = QLOG_HEADER_SIZE;
    }
    return 0;
}

void qlog_close(qlog_t *l)
{
    if (!l)
        return;
    if (l->fd >= 0)
        close(l->fd);
    xfree(l->raw);
    xfree(l->block_raw);
    xfree(l);
}
