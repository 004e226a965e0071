/* sqlite_walbuf.c: a pass-through SQLite VFS that gathers a commit's WAL
 * writes into one pwrite.
 *
 * SQLite writes each WAL frame as two writes (a 24-byte header, then the
 * page), so a group commit of a dozen pages cost two dozen syscalls, each
 * touching one or two page-cache pages (the frame writes were a sixth of
 * the daemon's CPU in a profile at 8 connections). Here writes that
 * continue the previous one are kept in a buffer and written together when
 * the transaction's commit frame has been written (its header carries the
 * database size, nonzero only there), or sooner when anything else happens
 * to the file. A failed write is then reported to SQLite by the xWrite of
 * the commit frame, before SQLite publishes the commit, so a full disk
 * (ENOSPC) rolls the commit back as it did with plain writes, whether the
 * frames grew the file or reused it.
 *
 * SQLite publishes a commit by writing the wal-index header around a
 * shared-memory barrier (xShmBarrier on the database file). As a backstop
 * for a commit frame not recognised, the barrier writes whatever is left
 * in the buffer first, so no other connection can see a frame that is not
 * in the file; if that write fails the process stops: continuing would let
 * readers see a commit missing from the file, and a stop loses nothing
 * acknowledged, as a kill -9 does not (the commit's sender has not been
 * answered). */
#include "sqlite_walbuf.h"

#include <stdbool.h>

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WALBUF_CAP (512 * 1024)

typedef struct walbuf_file walbuf_file;
struct walbuf_file {
    sqlite3_file base;
    sqlite3_file *real;   /* the default VFS's file, stored after this struct */
    walbuf_file *wal;     /* on a database file: its open WAL */
    walbuf_file *db;      /* on a WAL: its database file */
    int fd;               /* WAL: our own descriptor, for the gathered writes */
    char *buf;            /* WAL: bytes not yet written, for offset off */
    size_t len;
    sqlite3_int64 off;
    bool commit_body_next; /* WAL: the last write was a commit frame's header */
};

/* A WAL frame header: page number, then the database size in pages after
 * the commit for a transaction's last frame and 0 for the others. */
#define WAL_FRAME_HEADER 24

static sqlite3_vfs *real_vfs;
static sqlite3_vfs walbuf_vfs;
static const sqlite3_io_methods db_methods, wal_methods, plain_methods;
static walbuf_stats_t stats; /* for the tests */

static sqlite3_file *R(sqlite3_file *f) { return ((walbuf_file *)f)->real; }

/* The default VFS's file follows ours, aligned for any member it has. */
static size_t head_size(void) { return (sizeof(walbuf_file) + 15) & ~(size_t)15; }

/* Writes the buffer. Returns 0 or an errno. */
static int wal_flush(walbuf_file *w)
{
    size_t done = 0;
    while (done < w->len) {
        ssize_t n = pwrite(w->fd, w->buf + done, w->len - done, w->off + (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        done += (size_t)n;
    }
    if (w->len)
        __atomic_fetch_add(&stats.flushes, 1, __ATOMIC_RELAXED);
    w->len = 0;
    return 0;
}

/* Writes the buffer before another operation, or returns code (SQLITE_FULL
 * for a full disk). When that operation's error always fails the
 * transaction (a write, read or sync: SQLite rolls back on an I/O error),
 * the bytes are dropped with it, so that a later barrier does not try them
 * again and stop the process. Those of an operation whose error SQLite may
 * ignore (size, truncate, file control) are kept for the barrier. */
static int flush_or(walbuf_file *w, int code, bool drop)
{
    int e = wal_flush(w);
    if (e && drop)
        w->len = 0;
    return !e ? SQLITE_OK : e == ENOSPC || e == EDQUOT ? SQLITE_FULL : code;
}

/* ---- methods shared by every file: plain pass-through ---- */

static int m_close_plain(sqlite3_file *f)
{
    return R(f)->pMethods->xClose(R(f));
}
static int m_read_plain(sqlite3_file *f, void *b, int n, sqlite3_int64 off)
{
    return R(f)->pMethods->xRead(R(f), b, n, off);
}
static int m_write_plain(sqlite3_file *f, const void *b, int n, sqlite3_int64 off)
{
    return R(f)->pMethods->xWrite(R(f), b, n, off);
}
static int m_truncate_plain(sqlite3_file *f, sqlite3_int64 size)
{
    return R(f)->pMethods->xTruncate(R(f), size);
}
static int m_sync_plain(sqlite3_file *f, int flags)
{
    return R(f)->pMethods->xSync(R(f), flags);
}
static int m_size_plain(sqlite3_file *f, sqlite3_int64 *size)
{
    return R(f)->pMethods->xFileSize(R(f), size);
}
static int m_lock(sqlite3_file *f, int l) { return R(f)->pMethods->xLock(R(f), l); }
static int m_unlock(sqlite3_file *f, int l) { return R(f)->pMethods->xUnlock(R(f), l); }
static int m_reserved(sqlite3_file *f, int *out)
{
    return R(f)->pMethods->xCheckReservedLock(R(f), out);
}
static int m_fcntl_plain(sqlite3_file *f, int op, void *arg)
{
    return R(f)->pMethods->xFileControl(R(f), op, arg);
}
static int m_sector(sqlite3_file *f) { return R(f)->pMethods->xSectorSize(R(f)); }
static int m_devchar(sqlite3_file *f) { return R(f)->pMethods->xDeviceCharacteristics(R(f)); }
static int m_shmmap(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
    return R(f)->pMethods->xShmMap(R(f), pg, pgsz, extend, pp);
}
static int m_shmlock_plain(sqlite3_file *f, int off, int n, int flags)
{
    return R(f)->pMethods->xShmLock(R(f), off, n, flags);
}
static void m_shmbarrier_plain(sqlite3_file *f) { R(f)->pMethods->xShmBarrier(R(f)); }
static int m_shmunmap(sqlite3_file *f, int del) { return R(f)->pMethods->xShmUnmap(R(f), del); }
static int m_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    return R(f)->pMethods->xFetch(R(f), off, n, pp);
}
static int m_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return R(f)->pMethods->xUnfetch(R(f), off, p);
}

/* ---- the database file: its barrier writes its WAL's buffer ---- */

static void db_flush_wal(walbuf_file *db)
{
    int e;
    if (db->wal && (e = wal_flush(db->wal)) != 0) {
        log_error("queue: writing the WAL failed (%s) as a commit was being published: "
                  "stopping, so that no reader sees a commit missing from the file; nothing "
                  "acknowledged is lost",
                  strerror(e));
        abort();
    }
}

static void m_shmbarrier_db(sqlite3_file *f)
{
    db_flush_wal((walbuf_file *)f);
    m_shmbarrier_plain(f);
}

static int m_shmlock_db(sqlite3_file *f, int off, int n, int flags)
{
    db_flush_wal((walbuf_file *)f); /* a lock's change is a publication too */
    return m_shmlock_plain(f, off, n, flags);
}

static int m_close_db(sqlite3_file *f)
{
    walbuf_file *db = (walbuf_file *)f;
    if (db->wal)
        db->wal->db = NULL;
    db->wal = NULL;
    return m_close_plain(f);
}

/* ---- the WAL file ---- */

static bool is_commit_header(const void *b, int n)
{
    const unsigned char *h = b;
    return n == WAL_FRAME_HEADER && (h[4] | h[5] | h[6] | h[7]) != 0;
}

static int m_write_wal(sqlite3_file *f, const void *b, int n, sqlite3_int64 off)
{
    walbuf_file *w = (walbuf_file *)f;
    int rc;
    if (n <= 0 || (size_t)n > WALBUF_CAP) {
        rc = flush_or(w, SQLITE_IOERR_WRITE, true);
        return rc ? rc : m_write_plain(f, b, n, off);
    }
    bool follows = w->len && off == w->off + (sqlite3_int64)w->len;
    if (!follows || w->len + (size_t)n > WALBUF_CAP) {
        if ((rc = flush_or(w, SQLITE_IOERR_WRITE, true)) != SQLITE_OK)
            return rc;
        w->off = off;
    }
    memcpy(w->buf + w->len, b, (size_t)n);
    w->len += (size_t)n;
    __atomic_fetch_add(&stats.gathered, 1, __ATOMIC_RELAXED);
    if (w->commit_body_next) { /* the transaction's frames are all here */
        w->commit_body_next = false;
        return flush_or(w, SQLITE_IOERR_WRITE, true);
    }
    w->commit_body_next = is_commit_header(b, n);
    return SQLITE_OK;
}

static int m_read_wal(sqlite3_file *f, void *b, int n, sqlite3_int64 off)
{
    int rc = flush_or((walbuf_file *)f, SQLITE_IOERR_READ, true);
    return rc ? rc : m_read_plain(f, b, n, off);
}

static int m_truncate_wal(sqlite3_file *f, sqlite3_int64 size)
{
    int rc = flush_or((walbuf_file *)f, SQLITE_IOERR_TRUNCATE, false);
    return rc ? rc : m_truncate_plain(f, size);
}

static int m_sync_wal(sqlite3_file *f, int flags)
{
    int rc = flush_or((walbuf_file *)f, SQLITE_IOERR_FSYNC, true);
    return rc ? rc : m_sync_plain(f, flags);
}

static int m_size_wal(sqlite3_file *f, sqlite3_int64 *size)
{
    int rc = flush_or((walbuf_file *)f, SQLITE_IOERR_FSTAT, false);
    return rc ? rc : m_size_plain(f, size);
}

static int m_fcntl_wal(sqlite3_file *f, int op, void *arg)
{
    int rc = flush_or((walbuf_file *)f, SQLITE_IOERR_WRITE, false);
    return rc ? rc : m_fcntl_plain(f, op, arg);
}

static int m_close_wal(sqlite3_file *f)
{
    walbuf_file *w = (walbuf_file *)f;
    int e = wal_flush(w);
    if (e)
        log_error("queue: writing the WAL at close failed: %s", strerror(e));
    if (w->db)
        w->db->wal = NULL;
    close(w->fd);
    free(w->buf);
    int rc = m_close_plain(f);
    return e ? SQLITE_IOERR_WRITE : rc;
}

#define METHODS(close_, read_, write_, trunc_, sync_, size_, fcntl_, shmlock_, barrier_)        \
    {                                                                                          \
        3, close_, read_, write_, trunc_, sync_, size_, m_lock, m_unlock, m_reserved, fcntl_,  \
            m_sector, m_devchar, m_shmmap, shmlock_, barrier_, m_shmunmap, m_fetch, m_unfetch \
    }

static const sqlite3_io_methods plain_methods =
    METHODS(m_close_plain, m_read_plain, m_write_plain, m_truncate_plain, m_sync_plain,
            m_size_plain, m_fcntl_plain, m_shmlock_plain, m_shmbarrier_plain);
static const sqlite3_io_methods db_methods =
    METHODS(m_close_db, m_read_plain, m_write_plain, m_truncate_plain, m_sync_plain,
            m_size_plain, m_fcntl_plain, m_shmlock_db, m_shmbarrier_db);
static const sqlite3_io_methods wal_methods =
    METHODS(m_close_wal, m_read_wal, m_write_wal, m_truncate_wal, m_sync_wal, m_size_wal,
            m_fcntl_wal, m_shmlock_plain, m_shmbarrier_plain);

/* ---- the VFS ---- */

static int v_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    (void)vfs;
    walbuf_file *p = (walbuf_file *)f;
    memset(p, 0, sizeof *p);
    p->fd = -1;
    p->real = (sqlite3_file *)((char *)p + head_size());
    int rc = real_vfs->xOpen(real_vfs, name, p->real, flags, out);
    if (rc != SQLITE_OK || !p->real->pMethods || p->real->pMethods->iVersion < 3) {
        if (rc == SQLITE_OK) { /* not a file this shim knows how to wrap */
            p->real->pMethods->xClose(p->real);
            rc = SQLITE_CANTOPEN;
        }
        p->base.pMethods = NULL;
        return rc;
    }
    p->base.pMethods = &plain_methods;
    if (flags & SQLITE_OPEN_MAIN_DB) {
        p->base.pMethods = &db_methods;
    } else if ((flags & SQLITE_OPEN_WAL) && name) {
        sqlite3_file *dbf = sqlite3_database_file_object(name);
        int fd = open(name, O_WRONLY | O_CLOEXEC);
        char *buf = fd >= 0 ? malloc(WALBUF_CAP) : NULL;
        if (dbf && dbf->pMethods == &db_methods && buf) {
            p->db = (walbuf_file *)dbf;
            p->db->wal = p;
            p->fd = fd;
            p->buf = buf;
            p->base.pMethods = &wal_methods;
        } else {
            free(buf); /* unbuffered: every write goes through as before */
            if (fd >= 0)
                close(fd);
        }
    }
    return SQLITE_OK;
}

static int v_delete(sqlite3_vfs *v, const char *n, int sync)
{
    (void)v;
    return real_vfs->xDelete(real_vfs, n, sync);
}
static int v_access(sqlite3_vfs *v, const char *n, int flags, int *out)
{
    (void)v;
    return real_vfs->xAccess(real_vfs, n, flags, out);
}
static int v_fullpath(sqlite3_vfs *v, const char *n, int len, char *out)
{
    (void)v;
    return real_vfs->xFullPathname(real_vfs, n, len, out);
}
static void *v_dlopen(sqlite3_vfs *v, const char *n)
{
    (void)v;
    return real_vfs->xDlOpen(real_vfs, n);
}
static void v_dlerror(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    real_vfs->xDlError(real_vfs, n, out);
}
static void (*v_dlsym(sqlite3_vfs *v, void *h, const char *s))(void)
{
    (void)v;
    return real_vfs->xDlSym(real_vfs, h, s);
}
static void v_dlclose(sqlite3_vfs *v, void *h)
{
    (void)v;
    real_vfs->xDlClose(real_vfs, h);
}
static int v_random(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return real_vfs->xRandomness(real_vfs, n, out);
}
static int v_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return real_vfs->xSleep(real_vfs, us);
}
static int v_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    return real_vfs->xCurrentTime(real_vfs, out);
}
static int v_lasterr(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return real_vfs->xGetLastError(real_vfs, n, out);
}
static int v_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

static int register_rc = SQLITE_ERROR;

static void register_once(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    if (!real_vfs || real_vfs->iVersion < 2 || !real_vfs->xCurrentTimeInt64)
        return;
    walbuf_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)(head_size() + (size_t)real_vfs->szOsFile),
        .mxPathname = real_vfs->mxPathname,
        .zName = SQLITE_WALBUF_VFS,
        .xOpen = v_open,
        .xDelete = v_delete,
        .xAccess = v_access,
        .xFullPathname = v_fullpath,
        .xDlOpen = v_dlopen,
        .xDlError = v_dlerror,
        .xDlSym = v_dlsym,
        .xDlClose = v_dlclose,
        .xRandomness = v_random,
        .xSleep = v_sleep,
        .xCurrentTime = v_time,
        .xGetLastError = v_lasterr,
        .xCurrentTimeInt64 = v_time64,
    };
    register_rc = sqlite3_vfs_register(&walbuf_vfs, 0);
}

const char *sqlite_walbuf_vfs(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_once);
    return register_rc == SQLITE_OK ? SQLITE_WALBUF_VFS : NULL;
}

walbuf_stats_t sqlite_walbuf_stats(void)
{
    return (walbuf_stats_t){__atomic_load_n(&stats.gathered, __ATOMIC_RELAXED),
                            __atomic_load_n(&stats.flushes, __ATOMIC_RELAXED)};
}
