/* sqlite_walbuf.h: the queue's SQLite VFS that writes each commit's WAL
 * frames in one pwrite (see sqlite_walbuf.c). */
#ifndef SPINEGATE_SQLITE_WALBUF_H
#define SPINEGATE_SQLITE_WALBUF_H

#include <sqlite3.h>
#include <stdint.h>

#define SQLITE_WALBUF_VFS "spinegate-walbuf"

/* Registers the VFS (once; not the default) and returns its name for
 * sqlite3_open_v2, or NULL if the default VFS cannot be wrapped (the caller
 * then opens with the default one). Any thread. */
const char *sqlite_walbuf_vfs(void);

typedef struct {
    uint64_t gathered; /* WAL writes kept in a buffer */
    uint64_t flushes;  /* buffers written, each one pwrite or more */
} walbuf_stats_t;

/* Counts since the process started, over every connection. */
walbuf_stats_t sqlite_walbuf_stats(void);

#endif
