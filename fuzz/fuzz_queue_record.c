/* fuzz_queue_record.c - the queue's stored records as hostile input. The
 * first byte picks the seam:
 *   even: the rest is a whole database file: queue_open() it and read every
 *         pending row of "hl7" back; a damaged file must give an error;
 *   odd:  the rest describes rows whose columns have arbitrary types and
 *         bytes, inserted under our schema; the reader must decode the good
 *         ones and mark the others dead.
 * Either way: no crash, no leak, no hang. */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "log.h"
#include "queue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[128], wal[140], shm[140], lock[140];

static void paths(void)
{
    if (path[0])
        return;
    const char *t = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/fuzz_queue_record.%d.db", t ? t : "/tmp", (int)getpid());
    snprintf(wal, sizeof wal, "%s-wal", path);
    snprintf(shm, sizeof shm, "%s-shm", path);
    snprintf(lock, sizeof lock, "%s.lock", path);
}

static void clean(void)
{
    unlink(path);
    unlink(wal);
    unlink(shm);
    unlink(lock);
}

static void fetch_cb(queue_reader_t *r, err_t status, queue_row_t **rows, size_t n, void *user)
{
    for (size_t i = 0; i < n; i++) {
        /* Touch every byte the decoder promised. */
        volatile size_t sum = strlen(rows[i]->dest) + strlen(rows[i]->control_id) +
                              strlen(rows[i]->content_type) +
                              (rows[i]->findings ? strlen(rows[i]->findings) : 0) +
                              rows[i]->payload[rows[i]->payload_len];
        (void)sum;
        queue_row_free(rows[i]);
    }
    *(int *)user = status == ERR_OK ? 1 : -1;
}

static void closed_cb(void *user)
{
    (void)user;
}

static void read_back(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    queue_opts_t o = {.sync = QUEUE_SYNC_NORMAL, .max_payload = 1 << 16};
    queue_t *q = NULL;
    err_detail_t d;
    if (queue_open(&loop, path, &o, &q, &d) == ERR_OK) {
        queue_reader_t *r = NULL;
        int status = 0;
        if (queue_reader_open(q, "hl7", NULL, &status, &r, &d) == ERR_OK) {
            for (int round = 0; round < 8 && queue_reader_has_more(r); round++) {
                status = 0;
                if (queue_reader_fetch(r, 64, fetch_cb) != ERR_OK)
                    break;
                /* Until the rows are back. A damaged file can fail every
                 * commit of the dead marks the reader makes, and the queue
                 * retries those with backoff for as long as it runs (it never
                 * drops a mark), so the loop is not left to run dry. */
                uint64_t until = uv_now(&loop) + 3000;
                while (status == 0 && uv_now(&loop) < until)
                    uv_run(&loop, UV_RUN_ONCE);
                if (status <= 0)
                    break;
            }
            queue_reader_close(r);
        }
        queue_close(q, closed_cb, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    if (uv_loop_close(&loop) != 0)
        abort(); /* a handle left open */
}

static void bind_column(sqlite3_stmt *st, int col, const uint8_t **p, const uint8_t *end)
{
    if (*p >= end) {
        sqlite3_bind_null(st, col);
        return;
    }
    uint8_t type = *(*p)++;
    size_t len = *p < end ? *(*p)++ : 0;
    if (len > (size_t)(end - *p))
        len = (size_t)(end - *p);
    switch (type % 5) {
    case 0: sqlite3_bind_null(st, col); break;
    case 1: {
        int64_t v = 0;
        memcpy(&v, *p, len < 8 ? len : 8);
        sqlite3_bind_int64(st, col, type & 0x80 ? (int64_t)(type >> 3) - 4 : v);
        break;
    }
    case 2: sqlite3_bind_text(st, col, (const char *)*p, (int)len, SQLITE_TRANSIENT); break;
    case 3: sqlite3_bind_blob(st, col, *p, (int)len, SQLITE_TRANSIENT); break;
    case 4: sqlite3_bind_double(st, col, (double)len / 3.0); break;
    }
    *p += len;
}

static void rows_from(const uint8_t *p, size_t n)
{
    /* Let the queue create its schema, then write rows behind its back. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    queue_opts_t o = {.sync = QUEUE_SYNC_NORMAL};
    queue_t *q = NULL;
    if (queue_open(&loop, path, &o, &q, NULL) != ERR_OK)
        abort();
    queue_close(q, closed_cb, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);

    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        abort();
    sqlite3_exec(db, "PRAGMA synchronous=OFF; BEGIN", 0, 0, 0);
    sqlite3_stmt *st;
    /* Column checks off: a damaged file can hold anything, NULLs included. */
    sqlite3_exec(db, "PRAGMA ignore_check_constraints=1", 0, 0, 0);
    if (sqlite3_prepare_v2(db,
                           "INSERT OR IGNORE INTO msgs(dest, control_id, content_type, payload,"
                           " findings, attempts, created_ms, updated_ms, state)"
                           " VALUES(coalesce(?1,'hl7'), coalesce(?2,''), coalesce(?3,''),"
                           " coalesce(?4,''), ?5, coalesce(?6,0), coalesce(?7,0), 0, 0)",
                           -1, &st, NULL) != SQLITE_OK)
        abort();
    const uint8_t *end = p + n;
    for (int rows = 0; p < end && rows < 32; rows++) {
        for (int c = 1; c <= 7; c++)
            bind_column(st, c, &p, end);
        sqlite3_step(st);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    sqlite3_finalize(st);
    sqlite3_exec(db, "COMMIT", 0, 0, 0);
    sqlite3_close(db);
    read_back();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    paths();
    log_set_level(LOG_LVL_ERROR);
    clean();
    if (size == 0)
        return 0;
    if (data[0] % 2 == 0) {
        FILE *f = fopen(path, "wb");
        if (!f)
            abort();
        if (size > 1 && fwrite(data + 1, 1, size - 1, f) != size - 1)
            abort();
        fclose(f);
        read_back();
    } else {
        rows_from(data + 1, size - 1);
    }
    clean();
    return 0;
}
