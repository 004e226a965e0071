/* test_walbuf.c - unit tests of the queue's WAL-gathering VFS
 * (outbound/sqlite_walbuf.c) against real files: every commit made through
 * it is whole and readable at once by connections on the default VFS, in
 * this thread and in another one reading while it writes, across
 * checkpoints that make SQLite reuse the WAL from its start, and while the
 * WAL grows; the file passes integrity_check afterwards. A write that fails
 * (a file size limit here, a full disk in production) fails the commit it
 * belongs to, which SQLite rolls back, and nothing stops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sqlite_walbuf.h"

#define ROW_BYTES 3000 /* a message's size: a row to a page */
#define INSERT_ROW "INSERT INTO t(id, b) VALUES(?1, ?2)"
#define SELECT_ROW "SELECT b FROM t WHERE id=?1"

typedef struct {
    char dir[64];
    char path[96];
} fx_t;

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_walbuf.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/q.db", f->dir);
    *state = f;
    return 0;
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

/* Row id's bytes: a pattern no other row has. */
static void fill(unsigned char *b, int64_t id)
{
    for (size_t i = 0; i < ROW_BYTES; i++)
        b[i] = (unsigned char)((uint64_t)id * 131u + i * 7u);
}

static sqlite3 *open_db(const char *path, const char *vfs, int flags)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, flags, vfs), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : sqlite3_errstr(rc));
}

static sqlite3_stmt *prepare_ok(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    return st;
}

static sqlite3 *open_writer(const char *path)
{
    const char *vfs = sqlite_walbuf_vfs();
    assert_non_null(vfs);
    sqlite3 *db = open_db(path, vfs, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    exec_ok(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, b BLOB NOT NULL)");
    return db;
}

/* Begins a transaction and inserts rows first..first+n-1 in it. */
static void stage_rows(sqlite3 *db, sqlite3_stmt *ins, int64_t first, int n)
{
    unsigned char b[ROW_BYTES];
    exec_ok(db, "BEGIN IMMEDIATE");
    for (int k = 0; k < n; k++) {
        fill(b, first + k);
        sqlite3_bind_int64(ins, 1, first + k);
        sqlite3_bind_blob(ins, 2, b, ROW_BYTES, SQLITE_TRANSIENT);
        assert_int_equal(sqlite3_step(ins), SQLITE_DONE);
        sqlite3_reset(ins);
    }
}

/* Inserts rows first..first+n-1 in one transaction. */
static void insert_rows(sqlite3 *db, sqlite3_stmt *ins, int64_t first, int n)
{
    stage_rows(db, ins, first, n);
    exec_ok(db, "COMMIT");
}

/* Whether row id is there with its own bytes (0), missing (1) or wrong (-1). */
static int check_row(sqlite3_stmt *sel, int64_t id)
{
    unsigned char want[ROW_BYTES];
    fill(want, id);
    sqlite3_bind_int64(sel, 1, id);
    int rc = sqlite3_step(sel);
    int out = 1;
    if (rc == SQLITE_ROW)
        out = sqlite3_column_bytes(sel, 0) == ROW_BYTES &&
                      memcmp(sqlite3_column_blob(sel, 0), want, ROW_BYTES) == 0
                  ? 0
                  : -1;
    else if (rc != SQLITE_DONE)
        out = -1;
    sqlite3_reset(sel);
    return out;
}

static void integrity_ok(const char *path)
{
    sqlite3 *db = open_db(path, NULL, SQLITE_OPEN_READONLY);
    sqlite3_stmt *st = prepare_ok(db, "PRAGMA integrity_check");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* Each commit is read back at once by another connection on the default
 * VFS, before and after checkpoints that restart the WAL; the writes of
 * the commits into the reused WAL were gathered. */
static void test_commits_visible_at_once(void **state)
{
    fx_t *f = *state;
    sqlite3 *w = open_writer(f->path);
    sqlite3 *r = open_db(f->path, NULL, SQLITE_OPEN_READONLY);
    sqlite3 *ck = open_db(f->path, NULL, SQLITE_OPEN_READWRITE);
    sqlite3_stmt *ins = prepare_ok(w, INSERT_ROW), *sel = prepare_ok(r, SELECT_ROW);
    walbuf_stats_t before = sqlite_walbuf_stats();
    int64_t next = 1;
    for (int round = 0; round < 40; round++) {
        for (int c = 0; c < 10; c++) {
            int n = 1 + (round + c) % 6;
            insert_rows(w, ins, next, n);
            for (int k = 0; k < n; k++)
                assert_int_equal(check_row(sel, next + k), 0);
            assert_int_equal(check_row(sel, next + n), 1);
            next += n;
        }
        /* Copies everything and resets the WAL: the next commit writes
         * from the WAL's start, inside the file. */
        int log = -1, done = -1;
        assert_int_equal(sqlite3_wal_checkpoint_v2(ck, NULL, SQLITE_CHECKPOINT_RESTART, &log, &done),
                         SQLITE_OK);
        assert_int_equal(log, done);
    }
    walbuf_stats_t after = sqlite_walbuf_stats();
    /* The commits that fit in the reused WAL (about half of the 400 here:
     * rounds differ in size) were gathered, two writes a frame, each commit
     * then written at once. */
    uint64_t gathered = after.gathered - before.gathered, flushes = after.flushes - before.flushes;
    assert_true(flushes >= 100);
    assert_true(gathered >= 4 * flushes);
    for (int64_t id = 1; id < next; id++)
        assert_int_equal(check_row(sel, id), 0);
    sqlite3_finalize(ins);
    sqlite3_finalize(sel);
    sqlite3_close(ck);
    sqlite3_close(r);
    assert_int_equal(sqlite3_close(w), SQLITE_OK);
    integrity_ok(f->path);
}

/* Commits into a WAL that grows (no checkpoint) are gathered too: one
 * write of the buffer a commit, made when its commit frame is written. */
static void test_growing_wal_one_write_a_commit(void **state)
{
    fx_t *f = *state;
    sqlite3 *w = open_writer(f->path);
    sqlite3 *r = open_db(f->path, NULL, SQLITE_OPEN_READONLY);
    sqlite3_stmt *ins = prepare_ok(w, INSERT_ROW), *sel = prepare_ok(r, SELECT_ROW);
    char wal[112];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    struct stat st0, st1;
    assert_int_equal(stat(wal, &st0), 0);
    walbuf_stats_t before = sqlite_walbuf_stats();
    int64_t next = 1;
    for (int c = 0; c < 60; c++) {
        int n = 1 + c % 6;
        insert_rows(w, ins, next, n);
        for (int k = 0; k < n; k++)
            assert_int_equal(check_row(sel, next + k), 0);
        next += n;
    }
    walbuf_stats_t after = sqlite_walbuf_stats();
    assert_int_equal(stat(wal, &st1), 0);
    assert_true(st1.st_size > st0.st_size + 60 * ROW_BYTES); /* it grew */
    assert_int_equal(after.flushes - before.flushes, 60);
    assert_true(after.gathered - before.gathered >= 4 * 60);
    sqlite3_finalize(ins);
    sqlite3_finalize(sel);
    sqlite3_close(r);
    assert_int_equal(sqlite3_close(w), SQLITE_OK);
    integrity_ok(f->path);
}

static int64_t count_rows(const char *path)
{
    sqlite3 *db = open_db(path, NULL, SQLITE_OPEN_READONLY);
    sqlite3_stmt *st = prepare_ok(db, "SELECT count(*) FROM t");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* A commit whose gathered frames cannot all be written (the WAL may not
 * grow past a file size limit: EFBIG, as ENOSPC on a full disk) fails with
 * an I/O error from COMMIT, is rolled back and is seen by no reader; the
 * process goes on, and the same rows commit once the WAL may grow. */
static void test_failed_write_fails_its_commit(void **state)
{
    fx_t *f = *state;
    sqlite3 *w = open_writer(f->path);
    sqlite3_stmt *ins = prepare_ok(w, INSERT_ROW);
    for (int64_t id = 1; id <= 40; id += 4)
        insert_rows(w, ins, id, 4);
    char wal[112];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    struct stat st;
    assert_int_equal(stat(wal, &st), 0);

    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*old_xfsz)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = (rlim_t)st.st_size + 8192; /* room for two of the six frames */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    stage_rows(w, ins, 41, 6);
    int rc = sqlite3_exec(w, "COMMIT", NULL, NULL, NULL);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_xfsz);
    assert_int_equal(rc & 0xff, SQLITE_IOERR);
    if (!sqlite3_get_autocommit(w))
        exec_ok(w, "ROLLBACK");
    assert_int_equal(count_rows(f->path), 40);
    integrity_ok(f->path);

    insert_rows(w, ins, 41, 6);
    assert_int_equal(count_rows(f->path), 46);
    sqlite3_finalize(ins);
    assert_int_equal(sqlite3_close(w), SQLITE_OK);
    integrity_ok(f->path);
}

typedef struct {
    const char *path;
    atomic_llong committed; /* the writer's last committed id */
    atomic_bool stop;
    long checked, bad;
} reader_t;

/* Reads, again and again, the last row the writer said it committed and
 * every row the reader's own snapshot holds past it. */
static void *reader_main(void *arg)
{
    reader_t *rd = arg;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(rd->path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *sel = NULL, *max = NULL;
    sqlite3_prepare_v2(db, SELECT_ROW, -1, &sel, NULL);
    sqlite3_prepare_v2(db, "SELECT coalesce(max(id), 0) FROM t", -1, &max, NULL);
    while (!atomic_load(&rd->stop)) {
        int64_t floor = atomic_load(&rd->committed);
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        int64_t top = 0;
        if (sqlite3_step(max) == SQLITE_ROW)
            top = sqlite3_column_int64(max, 0);
        sqlite3_reset(max);
        if (top < floor)
            rd->bad++; /* a commit the writer saw end is not visible */
        for (int64_t id = top > 8 ? top - 8 : 1; id <= top; id++) {
            rd->checked++;
            if (check_row(sel, id) != 0)
                rd->bad++;
        }
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
    sqlite3_finalize(sel);
    sqlite3_finalize(max);
    sqlite3_close(db);
    return NULL;
}

/* A reader in another thread, reading while commits and checkpoints go on,
 * never finds a committed row missing or with other bytes. */
static void test_reader_meanwhile(void **state)
{
    fx_t *f = *state;
    sqlite3 *w = open_writer(f->path);
    sqlite3 *ck = open_db(f->path, NULL, SQLITE_OPEN_READWRITE);
    sqlite3_stmt *ins = prepare_ok(w, INSERT_ROW);
    reader_t rd = {.path = f->path};
    pthread_t th;
    insert_rows(w, ins, 1, 1);
    atomic_store(&rd.committed, 1);
    assert_int_equal(pthread_create(&th, NULL, reader_main, &rd), 0);
    int64_t next = 2;
    for (int c = 0; c < 3000; c++) {
        int n = 1 + c % 5;
        insert_rows(w, ins, next, n);
        next += n;
        atomic_store(&rd.committed, next - 1);
        if (c % 50 == 49)
            sqlite3_wal_checkpoint_v2(ck, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (c % 500 == 499)
            sqlite3_wal_checkpoint_v2(ck, NULL, SQLITE_CHECKPOINT_RESTART, NULL, NULL);
    }
    atomic_store(&rd.stop, true);
    pthread_join(th, NULL);
    assert_true(rd.checked > 0);
    assert_int_equal(rd.bad, 0);
    sqlite3_finalize(ins);
    sqlite3_close(ck);
    assert_int_equal(sqlite3_close(w), SQLITE_OK);
    integrity_ok(f->path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commits_visible_at_once, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_reader_meanwhile, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_growing_wal_one_write_a_commit, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_failed_write_fails_its_commit, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
