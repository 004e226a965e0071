/* queue_log.h - the queue's append-only log file: each group commit's
 * messages (PUT records) and delivery marks (DELIVERED records) appended
 * with one pwrite, read back at open to replay what SQLite does not hold.
 * A module of its own; queue_sqlite.c is what will drive it.
 *
 * The file (integers little-endian): a 64-byte header (magic "SGQLOG\0\1",
 * format version, flags, epoch, a random salt drawn per epoch, a CRC-32C),
 * then records, each a 16-byte head (body length, CRC-32C of salt + type +
 * body, type, zeros), the body, and zeros to a multiple of 8. A scan takes
 * records from offset 64 and stops at the first that is not whole and valid:
 * a torn tail after a crash, or the end of the epoch. qlog_restart starts a
 * new epoch from offset 64 with a new salt, so that the older records left
 * behind (and bytes a sender chose, inside their payloads) never pass for
 * records of the new one.
 *
 * Ownership: qlog_open() produces a qlog_t freed by qlog_close() (NULL
 * accepted). Records added are copied into the log's buffer. What a scan
 * hands to its callback points into the scan's own buffers, valid during
 * that call only.
 *
 * Threads: no locks. One thread at a time may use a qlog_t; qlog_write and
 * qlog_sync may run on a worker thread (uv_queue_work) as long as nothing
 * else touches the log meanwhile.
 */
#ifndef SPINEGATE_QUEUE_LOG_H
#define SPINEGATE_QUEUE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct qlog qlog_t;

#define QLOG_HEADER_SIZE 64
#define QLOG_RECORD_HEAD 16
/* The largest max_record qlog_open takes: a body length must fit a u32 and
 * a field's u32 length must never reach the absent mark 0xFFFFFFFF. */
#define QLOG_RECORD_MAX ((size_t)1 << 30)

/* Record types. The type space is open: a scan stops at a type it does not
 * know, as at a damaged record. */
typedef enum {
    QLOG_PUT = 1,       /* a message stored */
    QLOG_DELIVERED = 2, /* a message delivered: it need not be replayed */
} qlog_type_t;

/* A message, as given to qlog_add_put and as a scan hands it back. */
typedef struct {
    int64_t id;
    int64_t created_ms;
    const char *dest;         /* never NULL */
    const char *control_id;   /* never NULL; may be "" */
    const char *content_type; /* never NULL */
    const char *findings;     /* NULL = none ("" is kept as "") */
    const char *meta;         /* NULL = none */
    const char *worklist;     /* worklist kind; NULL = none */
    const void *payload;      /* a scan's is followed by a NUL payload_len does not count */
    size_t payload_len;
} qlog_put_t;

/* One record found by a scan. */
typedef struct {
    qlog_type_t type;
    uint64_t offset; /* of its head in the file */
    int64_t id;      /* the message's id (QLOG_PUT: the same as put.id) */
    qlog_put_t put;  /* QLOG_PUT only; strings NUL-terminated */
} qlog_record_t;

/* Called by qlog_scan for each valid record, in file order. Return ERR_OK
 * to go on; any other code stops the scan, which returns it. */
typedef err_t (*qlog_record_cb)(const qlog_record_t *rec, void *user);

/* What the header at open looked like. */
typedef enum {
    QLOG_HEADER_OK,    /* valid: the log has an epoch and a salt */
    QLOG_HEADER_NONE,  /* empty file (just created): an empty log, epoch 0 */
    QLOG_HEADER_SHORT, /* 1..63 bytes: an empty log, epoch 0 (log it) */
    QLOG_HEADER_BAD,   /* bad magic or CRC: an empty log, epoch 0 (log it) */
} qlog_header_t;

/* Why a scan stopped. */
typedef enum {
    QLOG_STOP_END,       /* at the end of the file, on a record boundary */
    QLOG_STOP_ZEROS,     /* at a record head of zeros: what a direct write leaves
                            after its records, or a block a crash left unwritten */
    QLOG_STOP_NO_HEADER, /* nothing scanned: the header was not valid */
    QLOG_STOP_TORN,      /* a record head or body runs past the end of the file */
    QLOG_STOP_LENGTH,    /* a body length over max_record */
    QLOG_STOP_CRC,       /* a CRC mismatch (a torn or damaged record, or an older epoch's) */
    QLOG_STOP_TYPE,      /* an unknown record type */
    QLOG_STOP_MALFORMED, /* nonzero reserved or padding bytes, or a body that does
                            not decode as its type says */
    QLOG_STOP_CALLBACK,  /* the callback returned an error */
} qlog_stop_t;

typedef struct {
    uint64_t puts;      /* PUT records handed to the callback */
    uint64_t delivered; /* DELIVERED records handed to the callback */
    uint64_t end;       /* offset after the last valid record (>= 64) */
    uint64_t file_size; /* the file's size when the scan began */
    qlog_stop_t stop;   /* why the scan stopped at end */
} qlog_scan_stats_t;

/* A short description of stop ("torn record", ...); never NULL. */
const char *qlog_stop_str(qlog_stop_t stop);

/* Opens path, creating it (mode 0600) when absent, and reads its header.
 * max_record (1..QLOG_RECORD_MAX) bounds a record's body, both for what a
 * scan accepts and for what may be added: the queue's max_payload plus
 * 64 KiB leaves room for every other field. A short or damaged header is
 * not an error: the log is empty with epoch 0 (qlog_header() says which, so
 * that the caller can log it), and it takes no writes before qlog_restart.
 * Nothing is written by the open.
 * Errors: ERR_BAD_VALUE (no path or out, max_record out of range), ERR_IO
 * (open or read failed), ERR_UNSUPPORTED (a valid header of another format
 * version or with unknown flags: a newer spinegate's log, which an empty log
 * would silently lose). *out is NULL on error. */
err_t qlog_open(const char *path, size_t max_record, qlog_t **out, err_detail_t *d);

/* The header as found by qlog_open (restarts do not change it). */
qlog_header_t qlog_header(const qlog_t *l);

/* The current epoch: the header's, 0 for an empty log, one more after each
 * qlog_restart. */
uint64_t qlog_epoch(const qlog_t *l);

/* Calls cb(rec, user) for each valid record of the current epoch, in file
 * order, and stops at the first record that is not valid (see qlog_stop_t).
 * Every length is checked against the file's size and max_record before
 * anything is allocated or read for it.
 * When the scan reaches its stop, the write position becomes the end of the
 * last valid record, and the file is cut there (ftruncate, fdatasync) when
 * it is longer: bytes after it may be records of a batch torn by a crash,
 * valid in this epoch, that records appended later must never expose.
 * st (may be NULL) gets the figures, also on error.
 * Errors: ERR_IO (a read, the cut or its sync failed), or what cb returned;
 * the log then has no write position (writes fail until a scan completes or
 * qlog_restart succeeds). A log with no valid header gives ERR_OK and no
 * records (stop QLOG_STOP_NO_HEADER) and still needs a qlog_restart. */
err_t qlog_scan(qlog_t *l, qlog_record_cb cb, void *user, qlog_scan_stats_t *st, err_detail_t *d);

/* Adds a PUT record of a copy of *put to the buffer (no syscall).
 * dest, control_id and content_type must not be NULL, nor payload when
 * payload_len is not 0; strings are taken up to their NUL.
 * Errors: ERR_BAD_VALUE (a required field NULL), ERR_TOO_LARGE (the body
 * would exceed max_record: nothing is added). */
err_t qlog_add_put(qlog_t *l, const qlog_put_t *put);

/* Adds a DELIVERED record of id to the buffer (no syscall). */
void qlog_add_delivered(qlog_t *l, int64_t id);

/* The file's descriptor, for an fdatasync that must not touch l (it runs
 * while another thread writes): a caller whose sync fails stops writing. */
int qlog_fd(const qlog_t *l);

/* Drops what is buffered, unwritten: the records of a batch refused before
 * its write (its table part failed). */
void qlog_discard(qlog_t *l);

/* Bytes in the buffer, not yet written. */
size_t qlog_pending_bytes(const qlog_t *l);

/* Writes the buffer at the write position with one pwrite (more only after
 * a short write) and empties it. With direct writes (qlog_direct) the
 * pwrite covers whole 4 KiB blocks: from the start of the one that holds
 * the write position, whose bytes before it are written again unchanged, to
 * the end of the last, zeros after the records. On success the write
 * position moves past it. On failure nothing written counts: the position
 * stays, what a partial write left is hidden from later scans (the file is
 * cut back, or the first record head overwritten with zeros, then synced),
 * the buffer is dropped and the caller refuses those records' messages. Not
 * synced: qlog_sync. Returns 0 (also with nothing buffered) or -errno:
 * -EINVAL when the log has no write position (no completed scan of a valid
 * header, no successful restart since a failed one, or a failed sync), the
 * pwrite's error (-ENOSPC, -EFBIG, -EIO, ...) otherwise. When even hiding a
 * partial write fails, the log has no write position from then on. */
int qlog_write(qlog_t *l);

/* qlog_write, where with direct writes the pwrite is synchronized
 * (RWF_DSYNC): on success *synced is true and the blocks written, so the
 * records and the lead before them (the header, in the first write after
 * qlog_restart), are on stable storage as after qlog_sync, for one syscall
 * and one wait for the device instead of two. Other writes, buffered ones
 * or those the kernel refused the flag for (it is not asked again), are
 * plain: *synced is false and they need qlog_sync like any. A failure is
 * qlog_write's, the sync's error included (-EIO). */
int qlog_write_dsync(qlog_t *l, bool *synced);

/* Turns direct writes (O_DIRECT) on or off and returns whether they are
 * on. Direct writes skip the page cache: over blocks the file already has
 * (qlog_restart's keep_bytes), a write and the fdatasync after it cost the
 * kernel about half the CPU of a buffered write and its writeback, but the
 * pwrite waits for the device, so only for a caller that waits for the
 * sync anyway (queue-sync=full). Turning them on needs a write position;
 * where the file system refuses O_DIRECT the log stays buffered (false).
 * A scan turns them off (its reads are not aligned). Not while another
 * thread writes through the log. */
bool qlog_direct(qlog_t *l, bool on);

/* Whether writes are direct now. */
bool qlog_is_direct(const qlog_t *l);

/* fdatasync of the file. Returns 0 or -errno. After a failure the log takes
 * no writes until qlog_restart succeeds: the kernel may have dropped pages
 * of the records written since the last sync, leaving a hole that would
 * hide every record appended after it, and a later scan may or may not
 * find those records (their messages' ids may come back at replay). */
int qlog_sync(qlog_t *l);

/* Starts a new epoch: a new salt, the header rewritten at offset 0 with the
 * epoch one more, the file cut to keep_bytes (at least the header) when it
 * is longer, then synced when sync is true; records go from offset 64
 * again. Only when the caller holds every record of the old epoch elsewhere
 * (SQLite): the old records are invalid from then on. Without the sync, the
 * header reaches the disk with the next qlog_sync (or the kernel's
 * writeback): until then a power loss may leave the old header over new
 * records, which then fail its salt, so nothing of either epoch is read;
 * the old epoch is in the table and the new one's records were never
 * synced. What is buffered stays buffered, for the new epoch. Returns 0 or
 * -errno (getrandom, pwrite, ftruncate, fdatasync); on failure the header
 * may be half written and the log takes no writes until a restart
 * succeeds. */
int qlog_restart(qlog_t *l, size_t keep_bytes, bool sync);

/* The write position: the bytes of the current epoch, header included (0
 * while the log has no write position). */
size_t qlog_size(const qlog_t *l);

/* Closes the file and frees l, dropping anything still buffered. l may be
 * NULL. */
void qlog_close(qlog_t *l);

#endif
