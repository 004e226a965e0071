/* out.c - the deliverer: pulls one destination's rows from the queue in
 * order, hands them one at a time to its transport, and records the outcome
 * (delivered, retried after a backoff, dead-lettered). Transport-neutral: the
 * protocols live in out_mllp.c, out_http.c and out_dir.c.
 * It also keeps the destination's cursor file (see out.h): the id of the
 * last row accepted downstream, so that a restart after kill -9 does not send
 * again what the uncommitted marks would have it send. A queue on PostgreSQL
 * has no cursor file: there the mark window alone (OUT_PG_MARK_WINDOW) bounds
 * what a crash or a failover sends again, and nothing is sent without the
 * reader's lease.
 * The out_dest_t owns the rows it fetched, its timers, its cursor file
 * descriptor and its transport state; all are released by out_stop() once
 * their handles are closed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "out_int.h"
#include "queue_int.h"
#include "xmalloc.h"

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pump(out_dest_t *d);
static void finish_stop(out_dest_t *d);
static void cur_done(out_dest_t *d);

/* The control id as it may appear in a log line or a note: the one escaping
 * helper of common/log.h (the name stays for the call sites below). */
#define safe_id(id, buf) log_id((id), (buf))

/* ---------------------------------------------------------------- cursor */

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* FNV-1a over a key and the first 16 bytes of the record (id, instance): a
 * zeroed, torn or foreign record passes only by a 2^-64 accident. */
static uint64_t cursor_check(const unsigned char rec[16])
{
    static const unsigned char key[8] = {'s', 'g', 'c', 'u', 'r', 's', 'o', 'r'};
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < 24; i++) {
        h ^= i < 8 ? key[i] : rec[i - 8];
        h *= 0x100000001b3ULL;
    }
    return h;
}

void out__cursor_encode(unsigned char rec[OUT_CURSOR_LEN], int64_t id, int64_t instance)
{
    put_le64(rec, (uint64_t)id);
    put_le64(rec + 8, (uint64_t)instance);
    put_le64(rec + 16, cursor_check(rec));
}

bool out__cursor_decode(const unsigned char *rec, size_t n, int64_t *id, int64_t *instance)
{
    if (n != OUT_CURSOR_LEN || get_le64(rec + 16) != cursor_check(rec))
        return false;
    uint64_t v = get_le64(rec);
    if (v > INT64_MAX)
        return false;
    *id = (int64_t)v;
    *instance = (int64_t)get_le64(rec + 8);
    return true;
}

/* Records that every row up to id is done. No fsync, on purpose: the page
 * cache outlives the process, and a power loss falls back on the marks. A
 * failed write leaves an older cursor, which only means more re-sends; while
 * it fails, pump() retries it and waits for every mark to commit before the
 * next message (the marks alone then say what a restart must send). */
static void cursor_put(out_dest_t *d, int64_t id)
{
    unsigned char rec[OUT_CURSOR_LEN];
    d->cursor_last = id;
    out__cursor_encode(rec, id, d->instance);
    ssize_t n;
    do
        n = pwrite(d->cursor_fd, rec, sizeof rec, 0);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof rec) {
        d->st.storage_errors++;
        if (!d->cursor_failing)
            log_error("out %s: cursor file not written (%s): a restart may send again what "
                      "was delivered since",
                      d->o.dest, n < 0 ? strerror(errno) : "short write");
        d->cursor_failing = true;
    } else if (d->cursor_failing) {
        log_info("out %s: cursor file written again", d->o.dest);
        d->cursor_failing = false;
    }
}

/* Writes the last delivered id not written yet, if any. */
static void cursor_write_due(out_dest_t *d)
{
    int64_t id = d->cursor_due;
    if (!id)
        return;
    d->cursor_due = 0;
    cursor_put(d, id);
    QUEUE_CRASH_POINT("cursor-written"); /* cursor moved, marks given but not committed */
}

static void cursor_write(out_dest_t *d, int64_t id)
{
    if (d->no_cursor)
        return;
    cursor_write_due(d); /* the writes keep their order */
    cursor_put(d, id);
}

static void cursor_check_cb(uv_check_t *c)
{
    out_dest_t *d = c->data;
    uv_check_stop(c);
    cursor_write_due(d);
}

/* A delivered row moves the cursor before the next row is handed to the
 * transport, or at the end of the loop turn: the answers read together
 * (a window's) cost one write instead of one each. The row's mark is
 * given first; it commits with a later group commit, so a crash before
 * either write sends the row again, as a crash before its answer was read
 * would. */
static void cursor_deliver(out_dest_t *d, int64_t id)
{
    if (d->no_cursor)
        return;
    d->cursor_due = id;
    if (!uv_is_active((uv_handle_t *)&d->cursor_check))
        uv_check_start(&d->cursor_check, cursor_check_cb);
}

/* Opens "<queue path>.<dest>.cursor" and sets skip_upto from it. A record
 * that fails its check, or that belongs to another database (the queue was
 * deleted and recreated beside an old cursor: another instance, or an id
 * ahead of every id this queue ever allocated) is reset: then the queue's
 * marks alone decide what is sent again. */
static err_t cursor_open(out_dest_t *d, err_detail_t *e)
{
    const char *qp = queue_path(d->q);
    if (!qp) {
        /* A queue shared by several instances (PostgreSQL) has no file to
         * keep a cursor beside, and a cursor of one instance would mean
         * nothing to the next lease holder. The queue's committed marks
         * alone say what is done: the deliverer goes on sending while they
         * are group-committed, at most mark_window ahead of them (out_start:
         * OUT_PG_MARK_WINDOW), and after a crash or a failover the next
         * lease holder sends again those rows and the ones in flight. */
        d->no_cursor = true;
        return ERR_OK;
    }
    size_t len = strlen(qp) + strlen(d->o.dest) + 9;
    char *path = xmalloc(len);
    snprintf(path, len, "%s.%s.cursor", qp, d->o.dest);
    d->cursor_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (d->cursor_fd < 0) {
        err_t rc = err_set(e, ERR_IO, 0, "out %s: cursor file %s: %s", d->o.dest, path,
                           strerror(errno));
        xfree(path);
        return rc;
    }
    unsigned char rec[OUT_CURSOR_LEN + 1];
    ssize_t n;
    do
        n = pread(d->cursor_fd, rec, sizeof rec, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        err_t rc = err_set(e, ERR_IO, 0, "out %s: cursor file %s: %s", d->o.dest, path,
                           strerror(errno));
        xfree(path);
        return rc;
    }
    int64_t id = 0, inst = 0, max_id = queue_max_id(d->q);
    d->instance = queue_instance(d->q);
    if (n == 0) {
        /* A new cursor: nothing delivered yet through it. */
    } else if (!out__cursor_decode(rec, (size_t)n, &id, &inst)) {
        log_warn("out %s: cursor file %s is damaged (%zd bytes): ignored, the queue's marks "
                 "decide what is sent again",
                 d->o.dest, path, n);
        cursor_write(d, 0);
    } else if (inst != d->instance) {
        log_warn("out %s: cursor file %s belongs to another queue database (recreated?): "
                 "ignored",
                 d->o.dest, path);
        cursor_write(d, 0);
    } else if (id > max_id) {
        log_warn("out %s: cursor %" PRId64 " is past the highest id the queue ever allocated "
                 "(%" PRId64 "): the database was restored or rolled back; ignored",
                 d->o.dest, id, max_id);
        cursor_write(d, 0);
    } else {
        d->skip_upto = id;
    }
    xfree(path);
    return ERR_OK;
}

/* ---------------------------------------------------------------- fetching */

static void ring_push(out_dest_t *d, queue_row_t *row)
{
    d->ring[(d->ring_head + d->ring_n) % d->ring_cap] = row;
    d->ring_n++;
}

/* Puts a row sent but not answered back in front of the feed. */
static void ring_push_front(out_dest_t *d, queue_row_t *row)
{
    d->ring_head = (d->ring_head + d->ring_cap - 1) % d->ring_cap;
    d->ring[d->ring_head] = row;
    d->ring_n++;
}

static queue_row_t *ring_pop(out_dest_t *d)
{
    queue_row_t *row = d->ring[d->ring_head];
    d->ring_head = (d->ring_head + 1) % d->ring_cap;
    d->ring_n--;
    return row;
}

static void fetch_timer_cb(uv_timer_t *t)
{
    pump(t->data);
}

/* The reader's lease was lost and taken again (PostgreSQL): another
 * instance may have delivered the rows fetched before, and the new lease
 * starts from what the database holds. The messages in flight, if any, are
 * finished as usual; one waiting for its retry is let go (its attempt is
 * recorded; the next holder, this one too after a new fetch, sends it).
 * Nothing more is sent while the lease is 0. */
static void lease_check(out_dest_t *d)
{
    uint64_t lease = queue_reader_lease(d->reader);
    if (lease == d->lease)
        return;
    while (d->ring_n)
        queue_row_free(ring_pop(d));
    if (d->cur && !d->sending && !d->dead_writing && !d->dead_retry && !d->stopping) {
        uv_timer_stop(&d->retry_timer);
        cur_done(d);
    }
    d->lease = lease;
}

/* True when row id is being sent (cur, or a row in the window behind it). */
static bool in_flight(const out_dest_t *d, int64_t id)
{
    if (d->cur && d->cur->id == id)
        return true;
    for (size_t i = 0; i < d->ahead_n; i++)
        if (d->ahead[i]->id == id)
            return true;
    return false;
}

static void fetch_cb(queue_reader_t *r, err_t status, queue_row_t **rows, size_t n, void *user)
{
    out_dest_t *d = user;
    d->fetching = false;
    lease_check(d);
    uint64_t skipped = 0;
    for (size_t i = 0; i < n; i++) {
        if (in_flight(d, rows[i]->id)) {
            /* Fetched again under a new lease while still ours. */
            queue_row_free(rows[i]);
        } else if (rows[i]->id <= d->skip_upto) {
            /* Accepted downstream before a crash; only its mark was lost. */
            queue_mark_delivered(d->reader, rows[i]->id);
            queue_row_free(rows[i]);
            skipped++;
        } else {
            ring_push(d, rows[i]);
        }
    }
    if (skipped) {
        d->st.skipped += skipped;
        log_info("out %s: %" PRIu64 " messages pending again after a crash were delivered "
                 "before it (cursor %" PRId64 "): marked delivered, not sent again",
                 d->o.dest, skipped, d->skip_upto);
    }
    if (status != ERR_OK && !d->stopping) {
        /* The queue logged why; try again shortly rather than spin. */
        uv_timer_start(&d->fetch_timer, fetch_timer_cb, 1000, 0);
        return;
    }
    pump(d);
}

static void maybe_fetch(out_dest_t *d)
{
    /* Refill at half empty, so the next rows are there when cur is done. */
    if (d->fetching || d->stopping || uv_is_active((uv_handle_t *)&d->fetch_timer))
        return;
    /* Rows in flight after cur count as held: they may come back (ring_push_front). */
    size_t held = d->ring_n + d->ahead_n;
    if (held > d->ring_cap / 2 || !queue_reader_has_more(d->reader))
        return;
    if (queue_reader_fetch(d->reader, d->ring_cap - held, fetch_cb) == ERR_OK)
        d->fetching = true;
}

static void ready_cb(queue_reader_t *r, void *user)
{
    pump(user);
}

/* ---------------------------------------------------------------- sending */

/* Writes what the transport took from send (see out__transport_t). */
static void tp_flush(out_dest_t *d)
{
    if (d->tp->flush)
        d->tp->flush(d);
}

/* Hands a row to the transport, the cursor of the rows answered so far
 * written first: after a kill -9 only the rows in flight go again. */
static void tp_send(out_dest_t *d, queue_row_t *row)
{
    cursor_write_due(d);
    d->tp->send(d, row);
}

/* The caller flushes, after the rows of the window are sent too. */
static void send_cur(out_dest_t *d)
{
    d->sending = true;
    d->st.inflight = 1;
    tp_send(d, d->cur);
}

/* With a window: while cur is in flight, sends the rows behind it, up to
 * the window, under the same conditions pump() sets for the next message. */
static void send_ahead(out_dest_t *d)
{
    lease_check(d);
    while (d->lease && d->sending && !d->stopping && d->ahead_n + 1 < d->o.window && d->ring_n &&
           !d->dead_pending) {
        cursor_write_due(d);
        if (d->cursor_failing)
            break;
        if (queue_reader_unsynced(d->reader) >= d->o.mark_window) {
            tp_flush(d);
            queue_reader_flush(d->reader);
            return;
        }
        queue_row_t *row = ring_pop(d);
        d->ahead[d->ahead_n++] = row;
        d->st.inflight = 1 + (unsigned)d->ahead_n;
        tp_send(d, row);
    }
    tp_flush(d);
    maybe_fetch(d);
}

/* cur was answered: the next row in flight becomes cur, still being sent.
 * False when none was in flight. */
static bool next_in_flight(out_dest_t *d)
{
    if (!d->ahead_n)
        return false;
    d->cur = d->ahead[0];
    memmove(d->ahead, d->ahead + 1, --d->ahead_n * sizeof d->ahead[0]);
    d->attempts = d->cur->attempts;
    d->rejects = d->cur->rejects;
    d->storage_tries = 0;
    d->st.attempts = d->attempts;
    d->st.inflight = 1 + (unsigned)d->ahead_n;
    d->sending = true;
    return true;
}

/* cur failed: the rows sent after it were forgotten by the transport; they
 * go back in front of the feed, in order, and are sent again after cur. */
static void requeue_ahead(out_dest_t *d)
{
    while (d->ahead_n)
        ring_push_front(d, d->ahead[--d->ahead_n]);
    d->st.inflight = 1;
}

static void dead_write_start(out_dest_t *d);

static void retry_timer_cb(uv_timer_t *t)
{
    out_dest_t *d = t->data;
    if (d->stopping || !d->cur)
        return;
    if (d->dead_retry) {
        d->dead_retry = false;
        dead_write_start(d);
        return;
    }
    lease_check(d); /* lost meanwhile: cur is let go */
    if (!d->cur) {
        pump(d);
        return;
    }
    send_cur(d);
    pump(d); /* the window behind it */
    tp_flush(d);
}

static void pump(out_dest_t *d)
{
    if (d->stopping)
        return;
    maybe_fetch(d);
    if (d->dead_writing)
        return;
    if (d->cur) {
        if (d->o.window > 1)
            send_ahead(d);
        return;
    }
    if (d->dead_pending) {
        /* The cursor may pass a dead-lettered row only once its dead mark is
         * committed: a restart would otherwise skip it as delivered and its
         * dead row would be gone. Dead letters are rare; waiting is cheap. */
        if (queue_reader_unsynced(d->reader)) {
            queue_reader_flush(d->reader);
            return;
        }
        QUEUE_CRASH_POINT("dead-marked"); /* dead mark durable, cursor not moved */
        cursor_write(d, d->dead_pending);
        d->dead_pending = 0;
    }
    lease_check(d);
    if (d->ring_n == 0 || d->lease == 0)
        return;
    cursor_write_due(d);
    if (d->cursor_failing) {
        /* Try the cursor again; while it cannot be written, the marks must
         * be committed before anything else goes out. */
        cursor_write(d, d->cursor_last);
        if (d->cursor_failing && queue_reader_unsynced(d->reader)) {
            queue_reader_flush(d->reader);
            return;
        }
    }
    if (queue_reader_unsynced(d->reader) >= d->o.mark_window) {
        /* Too far ahead of what a restart would know: wait for the marks
         * (ready_cb brings us back here). */
        queue_reader_flush(d->reader);
        return;
    }
    d->cur = ring_pop(d);
    d->attempts = d->cur->attempts;
    d->rejects = d->cur->rejects; /* billing's refusals before a restart count */
    d->storage_tries = 0;
    d->st.attempts = d->attempts;
    maybe_fetch(d);
    QUEUE_CRASH_POINT("before-send"); /* stored and fetched, not sent */
    send_cur(d);
    if (d->o.window > 1)
        send_ahead(d);
    else
        tp_flush(d);
}

static uint64_t backoff_ms(const out_dest_t *d, unsigned attempt)
{
    uint64_t delay = d->o.backoff_base_ms;
    for (unsigned i = 1; i < attempt && delay < d->o.backoff_max_ms; i++)
        delay *= 2;
    if (delay > d->o.backoff_max_ms)
        delay = d->o.backoff_max_ms;
    if (d->o.jitter && delay > 1)
        delay = delay / 2 + (uint64_t)rand() % (delay - delay / 2 + 1);
    return delay;
}

static void cur_done(out_dest_t *d)
{
    queue_row_free(d->cur);
    d->cur = NULL;
    d->attempts = 0;
    d->st.attempts = 0;
    d->st.inflight = 0;
    d->rejects = 0;
    d->storage_tries = 0;
    d->dead_retry = false;
    xfree(d->dead_detail);
    d->dead_detail = NULL;
}

/* The head message went out (or to the dead-letter folder): nothing fails. */
static void failing_clear(out_dest_t *d)
{
    d->failing_since_ms = 0;
    d->st.storage_failing = false;
}

/* Runs on the thread pool: the payload and a note saying why. */
static void dead_work(uv_work_t *w)
{
    out_dest_t *d = w->data;
    const queue_row_t *row = d->cur;
    char name[128], note_name[140];
    const char *ext = d->o.ext ? d->o.ext : out__ext_for(row->content_type);
    out__file_name(name, sizeof name, row->id, row->control_id, ext);
    snprintf(note_name, sizeof note_name, "%s.reason", name);
    /* The downstream's own answer (MSA-3, ERR, an OperationOutcome) goes
     * last, after a blank line, as it came (it is bounded by the transport). */
    const char *detail = d->dead_detail ? d->dead_detail : "";
    size_t cap = 1024 + strlen(detail);
    char *note = xmalloc(cap), idb[72];
    int n = snprintf(note, cap,
                     "destination: %s\ncontrol-id: %s\ncontent-type: %s\nattempts: %u\n"
                     "reason: %s\nqueued-ms: %" PRId64 "\n%s%s%s",
                     row->dest, safe_id(row->control_id, idb), row->content_type, d->attempts,
                     d->dead_reason, row->created_ms, *detail ? "downstream-answer:\n" : "", detail,
                     *detail && detail[strlen(detail) - 1] != '\n' ? "\n" : "");
    if (n < 0 || (size_t)n >= cap)
        n = (int)strlen(note);
    d->dead_rc =
        out__write_atomic(d->o.dead_dir, name, row->payload, row->payload_len, !d->o.no_fsync);
    if (d->dead_rc == 0)
        QUEUE_CRASH_POINT("dead-payload-written"); /* no note yet, no mark */
    if (d->dead_rc == 0)
        d->dead_rc = out__write_atomic(d->o.dead_dir, note_name, note, (size_t)n, !d->o.no_fsync);
    xfree(note);
}

/* The message is out of the feed: its dead mark is given, and the cursor
 * passes it (pump) only once that mark is committed. */
static void dead_mark(out_dest_t *d, bool filed)
{
    char idb[72];
    d->st.dead++;
    log_error("out %s: control id %s dead-lettered after %u attempts: %s", d->o.dest,
              safe_id(d->cur->control_id, idb), d->attempts, d->dead_reason);
    if (filed)
        queue_mark_dead_lettered(d->reader, d->cur->id, d->attempts, d->dead_reason);
    else
        queue_mark_dead(d->reader, d->cur->id, d->attempts, d->dead_reason);
    d->dead_pending = d->cur->id;
    queue_reader_flush(d->reader);
    cur_done(d);
    failing_clear(d);
}

static void dead_done(uv_work_t *w, int status)
{
    out_dest_t *d = w->data;
    d->dead_writing = false;
    char idb[72];
    int en = status ? EINTR : d->dead_rc;
    if (en) {
        /* No file, no mark: the message stays pending, first in line, and
         * its dead letter is written again after a backoff (ENOSPC: when
         * space returns). Nothing behind it goes out meanwhile. */
        d->storage_tries++;
        d->st.storage_errors++;
        d->st.storage_failing = true;
        uint64_t delay = backoff_ms(d, d->storage_tries);
        snprintf(d->st.last_error, sizeof d->st.last_error, "dead-letter file: %s",
                 status ? uv_strerror(status) : strerror(en));
        log_error("out %s: control id %s: dead-letter file not written (%s); the message stays "
                  "pending, retry in %" PRIu64 " ms",
                  d->o.dest, safe_id(d->cur->control_id, idb),
                  status ? uv_strerror(status) : strerror(en), delay);
        if (d->stopping) {
            finish_stop(d);
            return;
        }
        d->dead_retry = true;
        uv_timer_start(&d->retry_timer, retry_timer_cb, delay, 0);
        return;
    }
    QUEUE_CRASH_POINT("dead-filed"); /* file and note durable, no mark given */
    dead_mark(d, true);
    if (d->stopping)
        finish_stop(d);
    else
        pump(d);
}

static void dead_write_start(out_dest_t *d)
{
    d->dead_writing = true;
    d->dead_work.data = d;
    uv_queue_work(d->loop, &d->dead_work, dead_work, dead_done);
}

/* detail: the downstream's answer for the .reason file (copied); may be NULL. */
static void dead_letter(out_dest_t *d, const char *reason, const char *detail)
{
    snprintf(d->dead_reason, sizeof d->dead_reason, "%s", reason);
    xfree(d->dead_detail);
    d->dead_detail = detail && *detail ? xstrdup(detail) : NULL;
    if (!d->o.dead_dir) {
        dead_mark(d, false); /* the queue keeps the only copy: never pruned */
        return;
    }
    dead_write_start(d);
}

void out__send_done(out_dest_t *d, out__res_t res, const char *reason)
{
    out__send_done_detail(d, res, reason, NULL);
}

static void retry_later(out_dest_t *d, unsigned tries)
{
    char idb[72];
    uint64_t delay = backoff_ms(d, tries);
    d->st.retries++;
    if (d->st.storage_failing)
        log_error("out %s: control id %s: %s; the message stays pending, retry in %" PRIu64 " ms",
                  d->o.dest, safe_id(d->cur->control_id, idb), d->st.last_error, delay);
    else
        log_warn("out %s: control id %s attempt %u failed: %s; retry in %" PRIu64 " ms", d->o.dest,
                 safe_id(d->cur->control_id, idb), d->attempts, d->st.last_error, delay);
    queue_mark_attempt(d->reader, d->cur->id, d->attempts, d->rejects, d->st.last_error);
    if (!d->stopping)
        uv_timer_start(&d->retry_timer, retry_timer_cb, delay, 0);
}

void out__send_done_detail(out_dest_t *d, out__res_t res, const char *reason, const char *detail)
{
    d->sending = false;
    if (res != OUT_RES_STORAGE)
        d->attempts++; /* a local fault is not a try of the message */
    d->st.attempts = d->attempts;
    queue_row_t *row = d->cur;
    char idb[72];
    if (res == OUT_RES_OK) {
        failing_clear(d);
        d->st.delivered++;
        d->st.last_ok_ms = wall_ms();
        log_debug("out %s: control id %s delivered (attempt %u)", d->o.dest,
                  safe_id(row->control_id, idb), d->attempts);
        /* Once the cursor is written (before the next row is handed to
         * the transport, or at the end of this loop turn), a restart will
         * not send this row again, whatever became of the mark. */
        QUEUE_CRASH_POINT("acked"); /* accepted downstream, nothing recorded */
        cursor_deliver(d, row->id);
        queue_mark_delivered(d->reader, row->id);
        cur_done(d);
        next_in_flight(d);
    } else {
        requeue_ahead(d);
        snprintf(d->st.last_error, sizeof d->st.last_error, "%s", reason ? reason : "failed");
        if (!d->failing_since_ms)
            d->failing_since_ms = wall_ms();
        d->st.storage_failing = res == OUT_RES_STORAGE;
        if (res == OUT_RES_STORAGE) {
            d->st.storage_errors++;
            retry_later(d, ++d->storage_tries);
        } else if (res == OUT_RES_REJECT) {
            d->rejects++;
            d->st.rejects++;
            if (d->rejects >= d->o.reject_tries)
                dead_letter(d, d->st.last_error, detail);
            else {
                retry_later(d, d->rejects);
                /* The count is what bounds billing's refusals across a
                 * restart: commit it now, not within the marks' 10 ms. */
                queue_reader_flush(d->reader);
            }
        } else if (res == OUT_RES_PERMANENT || (d->o.max_tries && d->attempts >= d->o.max_tries)) {
            dead_letter(d, d->st.last_error, detail);
        } else {
            retry_later(d, d->attempts);
        }
    }
    if (d->stopping)
        finish_stop(d);
    else
        pump(d);
}

/* ---------------------------------------------------------------- start/stop */

/* A dead row marked "only in the queue": did a dead-letter file get written
 * for it after all (older versions marked every dead row so), or is it a
 * message stranded with no file anywhere (older versions on a full disk)? The
 * file's name is the one dead_work() gives it, then as now. */
static queue_dead_fate_t dead_fate(const queue_row_t *row, void *user)
{
    out_dest_t *d = user;
    char name[128], path[4096 + 160];
    out__file_name(name, sizeof name, row->id, row->control_id,
                   d->o.ext ? d->o.ext : out__ext_for(row->content_type));
    snprintf(path, sizeof path, "%s/%s", d->o.dead_dir, name);
    struct stat st;
    if (stat(path, &st) == 0)
        return QUEUE_DEAD_FILED;
    /* Only a clear "no such file" requeues: an unreadable folder proves nothing. */
    return errno == ENOENT ? QUEUE_DEAD_REQUEUE : QUEUE_DEAD_KEEP;
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static void free_dest(out_dest_t *d)
{
    while (d->ring_n)
        queue_row_free(ring_pop(d));
    xfree(d->ring);
    while (d->ahead_n)
        queue_row_free(d->ahead[--d->ahead_n]);
    queue_row_free(d->cur);
    xfree(d->dead_detail);
    if (d->cursor_fd >= 0)
        close(d->cursor_fd);
    xfree(d->s_dest);
    xfree(d->s_host);
    xfree(d->s_url);
    xfree(d->s_resource);
    xfree(d->s_dir);
    xfree(d->s_ext);
    xfree(d->s_dead_dir);
    xfree(d->s_tls_server_name);
    xfree(d->s_tls_ca);
    xfree(d->s_tls_cert);
    xfree(d->s_tls_key);
    tls_ctx_unref(d->o.tls);
    xfree(d);
}

void out_set_tls(out_dest_t *d, tls_ctx_t *ctx)
{
    if (!d->o.tls || !ctx)
        return;
    tls_ctx_ref(ctx);
    tls_ctx_unref(d->o.tls); /* an open session holds its own reference */
    d->o.tls = ctx;
}

err_t out_start(uv_loop_t *loop, queue_t *q, const out_dest_opts_t *opts, out_dest_t **out,
                err_detail_t *e)
{
    *out = NULL;
    if (!loop || !q || !opts)
        return err_set(e, ERR_BAD_CONFIG, 0, "out_start: no loop, queue or options");
    if (!queue__valid_dest(opts->dest))
        return err_set(e, ERR_BAD_CONFIG, 0, "out: invalid destination name");
    const out__transport_t *tp = opts->kind == OUT_DIR    ? &out__dir
                                 : opts->kind == OUT_MLLP ? &out__mllp
                                 : opts->kind == OUT_HTTP ? &out__http
                                                          : NULL;
    if (!tp)
        return err_set(e, ERR_BAD_CONFIG, 0, "out %s: unknown transport kind", opts->dest);
    if (opts->window > OUT_WINDOW_MAX)
        return err_set(e, ERR_BAD_CONFIG, 0, "out %s: window %u: at most %d", opts->dest,
                       opts->window, OUT_WINDOW_MAX);

    out_dest_t *d = xcalloc(1, sizeof *d);
    d->cursor_fd = -1;
    d->loop = loop;
    d->q = q;
    d->tp = tp;
    d->o = *opts;
    d->o.dest = d->s_dest = xstrdup(opts->dest);
    d->o.host = d->s_host = dup_or_null(opts->host);
    d->o.url = d->s_url = dup_or_null(opts->url);
    d->o.resource = d->s_resource = xstrdup(opts->resource ? opts->resource : "Claim");
    d->o.dir = d->s_dir = dup_or_null(opts->dir);
    d->o.ext = d->s_ext = dup_or_null(opts->ext);
    d->o.dead_dir = d->s_dead_dir = dup_or_null(opts->dead_dir);
    d->o.tls_server_name = d->s_tls_server_name = dup_or_null(opts->tls_server_name);
    d->o.tls_ca = d->s_tls_ca = dup_or_null(opts->tls_ca);
    d->o.tls_cert = d->s_tls_cert = dup_or_null(opts->tls_cert);
    d->o.tls_key = d->s_tls_key = dup_or_null(opts->tls_key);
    if (d->o.tls)
        tls_ctx_ref(d->o.tls);
    if (!d->o.reject_tries)
        d->o.reject_tries = 1;
    if (!d->o.backoff_base_ms)
        d->o.backoff_base_ms = 500;
    if (!d->o.backoff_max_ms)
        d->o.backoff_max_ms = 300000;
    if (d->o.backoff_max_ms < d->o.backoff_base_ms)
        d->o.backoff_max_ms = d->o.backoff_base_ms;
    if (!d->o.connect_timeout_ms)
        d->o.connect_timeout_ms = 5000;
    if (!d->o.ack_timeout_ms)
        d->o.ack_timeout_ms = 10000;
    if (!d->o.fetch_batch)
        d->o.fetch_batch = 64;
    if (!d->o.mark_window)
        d->o.mark_window = 32;
    if (!d->o.window || !tp->window)
        d->o.window = 1;
    if (!queue_path(q) && opts->mark_window == 0)
        d->o.mark_window = OUT_PG_MARK_WINDOW; /* no cursor file: see cursor_open */
    /* The rows in flight come out of the ring and may go back into it. */
    d->ring_cap = d->o.fetch_batch > d->o.window ? d->o.fetch_batch : d->o.window;
    d->ring = xcalloc(d->ring_cap, sizeof *d->ring);

    err_t rc = ERR_OK;
    if (d->o.dead_dir) {
        int en = out__mkdirs(d->o.dead_dir);
        if (en)
            rc = err_set(e, ERR_BAD_CONFIG, 0, "out %s: dead-letter folder %s: %s", d->o.dest,
                         d->o.dead_dir, strerror(en));
    }
    if (!rc)
        rc = tp->init(d, e);
    if (rc) {
        free_dest(d);
        return rc;
    }
    /* The reader first: it proves that no other deliverer of dest runs,
     * before the cursor file is read or reset. */
    rc = queue_reader_open(q, d->o.dest, ready_cb, d, &d->reader, e);
    if (!rc) {
        d->lease = queue_reader_lease(d->reader);
        rc = cursor_open(d, e);
        if (rc) {
            queue_reader_close(d->reader);
            d->reader = NULL;
        }
    }
    if (rc) {
        /* The transport holds no open handles before its first send. */
        tp->close(d);
        return rc;
    }
    if (d->o.dead_dir) {
        /* Without a dead-letter folder a dead row is dead on purpose: the
         * queue is where its message was meant to stay. */
        size_t nreq = 0, nfiled = 0;
        err_detail_t de;
        err_clear(&de);
        if (queue_dead_review(q, d->o.dest, dead_fate, d, &nreq, &nfiled, &de) != ERR_OK)
            log_error("out %s: dead rows not reviewed: %s", d->o.dest, de.msg);
    }
    uv_timer_init(loop, &d->retry_timer);
    uv_timer_init(loop, &d->fetch_timer);
    uv_check_init(loop, &d->cursor_check);
    d->retry_timer.data = d->fetch_timer.data = d->cursor_check.data = d;
    d->started = true;
    log_info("out %s: delivering by %s (%" PRIu64 " pending, cursor %" PRId64 ")", d->o.dest,
             tp->name, queue_depth(q, d->o.dest), d->skip_upto);
    *out = d;
    pump(d);
    return ERR_OK;
}

void out_stats(const out_dest_t *d, out_stats_t *st)
{
    *st = d->st;
    st->connected = d->connected;
    st->failing_since_ms = d->failing_since_ms;
    st->oldest_ms = d->cur ? d->cur->created_ms : d->ring_n ? d->ring[d->ring_head]->created_ms : 0;
}

static void timer_closed(uv_handle_t *h)
{
    out_dest_t *d = h->data;
    if (--d->handles_open == 0) {
        out_stop_cb cb = d->stop_cb;
        void *user = d->stop_user;
        log_info("out %s: stopped", d->o.dest);
        free_dest(d);
        if (cb)
            cb(user);
    }
}

void out__transport_closed(out_dest_t *d)
{
    if (!d->started) {
        /* out_start failed after the transport was set up: nothing else is open. */
        free_dest(d);
        return;
    }
    d->handles_open = 3;
    uv_close((uv_handle_t *)&d->retry_timer, timer_closed);
    uv_close((uv_handle_t *)&d->fetch_timer, timer_closed);
    uv_close((uv_handle_t *)&d->cursor_check, timer_closed);
}

/* Closes everything once nothing is being sent or dead-lettered. */
static void finish_stop(out_dest_t *d)
{
    if (d->sending || d->dead_writing || d->stopped)
        return;
    d->stopped = true;
    uv_timer_stop(&d->retry_timer);
    uv_timer_stop(&d->fetch_timer);
    uv_check_stop(&d->cursor_check);
    if (!d->no_cursor)
        cursor_write_due(d);
    /* A row waiting for its retry stays pending in the queue for next time. */
    if (d->cur)
        cur_done(d);
    queue_reader_close(d->reader);
    d->reader = NULL;
    d->tp->close(d);
}

void out_stop(out_dest_t *d, out_stop_cb cb, void *user)
{
    if (!d) {
        if (cb)
            cb(user);
        return;
    }
    if (d->stopping)
        return;
    d->stopping = true;
    d->stop_cb = cb;
    d->stop_user = user;
    log_info("out %s: stopping%s", d->o.dest, d->sending ? " after the message in flight" : "");
    finish_stop(d);
}
