/* worklist.c - the public worklist (worklist.h), dispatched to its backend
 * (worklist_pg.c for PostgreSQL), and the SQLite one: the worklist's tables
 * and spinegate-admin's side of them, a synchronous SQLite connection of
 * its own, beside the daemon's (WAL). Every change is one short IMMEDIATE
 * transaction, so the daemon's group commit waits at most that long (busy
 * timeout). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "queue_int.h"
#include "worklist.h"
#include "worklist_int.h"
#include "xmalloc.h"

typedef struct {
    struct worklist base; /* first: a worklist_t * is an sl_t * (worklist_int.h) */
    sqlite3 *db;
} sl_t;

#define ITEM_COLS                                                                          \
    "id, kind, state, msg_id, dest, control_id, content_type, findings, meta, reason,"    \
    " received_ms, changed_by, note, link, coalesce(changed_ms, 0), payload"

int worklist__schema(sqlite3 *db)
{
    /* link: "inbox:N" while a requeued or resent message waits in the
     * inbox, "queue:N" once the daemon has queued it. */
    return sqlite3_exec(db,
                        "CREATE TABLE IF NOT EXISTS worklist("
                        " id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
                        " state TEXT NOT NULL DEFAULT 'open', msg_id INTEGER,"
                        " dest TEXT NOT NULL, control_id TEXT NOT NULL,"
                        " content_type TEXT NOT NULL, payload BLOB NOT NULL, findings TEXT,"
                        " meta TEXT, reason TEXT, received_ms INTEGER NOT NULL,"
                        " changed_by TEXT, changed_ms INTEGER, note TEXT, link TEXT);"
                        "CREATE INDEX IF NOT EXISTS worklist_received ON worklist(received_ms);"
                        "CREATE INDEX IF NOT EXISTS worklist_msg ON worklist(msg_id);"
                        "CREATE TABLE IF NOT EXISTS inbox("
                        " id INTEGER PRIMARY KEY AUTOINCREMENT, dest TEXT NOT NULL,"
                        " control_id TEXT NOT NULL, content_type TEXT NOT NULL,"
                        " payload BLOB NOT NULL, findings TEXT, meta TEXT,"
                        " created_ms INTEGER NOT NULL);",
                        NULL, NULL, NULL);
}

int worklist__prune(sqlite3 *db, unsigned keep_days, int64_t now_ms, size_t *n)
{
    *n = 0;
    sqlite3_stmt *st = NULL;
    /* Open items are work not done: age never removes them. */
    int rc = sqlite3_prepare_v2(db,
                                "DELETE FROM worklist WHERE state<>'open'"
                                " AND coalesce(changed_ms, received_ms)<?1",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, now_ms - (int64_t)keep_days * 86400000);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
            rc = SQLITE_OK;
            *n = (size_t)sqlite3_changes(db);
        }
    }
    sqlite3_finalize(st);
    return rc;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static err_t sql_fail(sl_t *w, err_detail_t *d, const char *what)
{
    return err_set(d, ERR_QUEUE, 0, "worklist: %s: %s", what, sqlite3_errmsg(w->db));
}

static const worklist__ops_t sl_ops;
static void sl_close(worklist_t *wb);

err_t worklist_open(const char *path, worklist_t **out, err_detail_t *d)
{
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return err_set(d, errno == ENOENT ? ERR_NOT_FOUND : ERR_IO, 0, "%s: %s", path,
                       strerror(errno));
    sl_t *w = xcalloc(1, sizeof *w);
    w->base.ops = &sl_ops;
    int rc = sqlite3_open_v2(path, &w->db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(w->db, 10000);
        rc = worklist__schema(w->db);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(w->db, "SELECT 1 FROM msgs LIMIT 1", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        err_t e = err_set(d, ERR_QUEUE, 0, "%s: %s", path,
                          w->db ? sqlite3_errmsg(w->db) : "cannot open");
        sl_close(&w->base);
        return e;
    }
    *out = &w->base;
    return ERR_OK;
}

static void sl_close(worklist_t *wb)
{
    sl_t *w = (sl_t *)wb;
    sqlite3_close(w->db);
    xfree(w);
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

static int item_of(sqlite3_stmt *st, worklist_item_fn fn, void *user)
{
    worklist_item_t it = {
        .id = sqlite3_column_int64(st, 0),
        .kind = col_text(st, 1),
        .state = col_text(st, 2),
        .msg_id = sqlite3_column_int64(st, 3),
        .dest = col_text(st, 4),
        .control_id = col_text(st, 5),
        .content_type = col_text(st, 6),
        .findings = col_text(st, 7),
        .meta = col_text(st, 8),
        .reason = col_text(st, 9),
        .received_ms = sqlite3_column_int64(st, 10),
        .changed_by = col_text(st, 11),
        .note = col_text(st, 12),
        .link = col_text(st, 13),
        .changed_ms = sqlite3_column_int64(st, 14),
        .payload = sqlite3_column_blob(st, 15),
    };
    it.payload_len = (size_t)sqlite3_column_bytes(st, 15);
    if (!it.payload)
        it.payload = (const unsigned char *)"";
    return fn(&it, user);
}

static err_t sl_list(worklist_t *wb, const worklist_filter_t *f, worklist_item_fn fn, void *user,
                     err_detail_t *d)
{
    sl_t *w = (sl_t *)wb;
    static const worklist_filter_t none = {0};
    if (!f)
        f = &none;
    sqlite3_stmt *st = NULL;
    /* The source is the daemon's listener, named in meta; items without meta
     * (none are written so today) fall back to the destination's format. */
    int rc = sqlite3_prepare_v2(
        w->db,
        "SELECT " ITEM_COLS " FROM worklist WHERE (?1 IS NULL OR state=?1)"
        " AND (?2 IS NULL OR kind=?2)"
        " AND (?3 IS NULL OR EXISTS(SELECT 1 FROM json_each(worklist.meta, '$.rules')"
        "  WHERE value=?3) OR (' ' || coalesce(findings, '')) LIKE '% ' || ?3 || ':%')"
        " AND (?4 IS NULL OR coalesce(json_extract(meta, '$.source'),"
        "  CASE WHEN dest LIKE '%fhir%' THEN 'http' ELSE 'mllp' END)=?4)"
        " AND (?5=0 OR received_ms>=?5) AND (?6=0 OR received_ms<?6) ORDER BY id",
        -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sql_fail(w, d, "list");
    if (f->state)
        sqlite3_bind_text(st, 1, f->state, -1, SQLITE_STATIC);
    if (f->kind)
        sqlite3_bind_text(st, 2, f->kind, -1, SQLITE_STATIC);
    if (f->rule)
        sqlite3_bind_text(st, 3, f->rule, -1, SQLITE_STATIC);
    if (f->source)
        sqlite3_bind_text(st, 4, f->source, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, f->since_ms);
    sqlite3_bind_int64(st, 6, f->until_ms);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (item_of(st, fn, user))
            break;
    err_t e = rc == SQLITE_ROW || rc == SQLITE_DONE ? ERR_OK : sql_fail(w, d, "list");
    sqlite3_finalize(st);
    return e;
}

static err_t sl_get(worklist_t *wb, int64_t id, worklist_item_fn fn, void *user, err_detail_t *d)
{
    sl_t *w = (sl_t *)wb;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(w->db, "SELECT " ITEM_COLS " FROM worklist WHERE id=?1", -1, &st,
                           NULL) != SQLITE_OK)
        return sql_fail(w, d, "read");
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    err_t e = ERR_OK;
    if (rc == SQLITE_ROW)
        item_of(st, fn, user);
    else if (rc == SQLITE_DONE)
        e = err_set(d, ERR_NOT_FOUND, 0, "no worklist item %" PRId64, id);
    else
        e = sql_fail(w, d, "read");
    sqlite3_finalize(st);
    return e;
}

/* Within a transaction: the item's kind and state, ERR_NOT_FOUND when none. */
static err_t item_state(sl_t *w, int64_t id, char *kind, char *state, err_detail_t *d)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(w->db, "SELECT kind, state FROM worklist WHERE id=?1", -1, &st,
                           NULL) != SQLITE_OK)
        return sql_fail(w, d, "read");
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    err_t e = ERR_OK;
    if (rc == SQLITE_ROW) {
        snprintf(kind, 16, "%s", col_text(st, 0) ? col_text(st, 0) : "");
        snprintf(state, 16, "%s", col_text(st, 1) ? col_text(st, 1) : "");
    } else if (rc == SQLITE_DONE) {
        e = err_set(d, ERR_NOT_FOUND, 0, "no worklist item %" PRId64, id);
    } else {
        e = sql_fail(w, d, "read");
    }
    sqlite3_finalize(st);
    return e;
}

static err_t begin(sl_t *w, err_detail_t *d)
{
    return sqlite3_exec(w->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK
               ? ERR_OK
               : sql_fail(w, d, "begin");
}

static err_t end(sl_t *w, err_t e, err_detail_t *d)
{
    if (!e && sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        e = sql_fail(w, d, "commit");
    if (!sqlite3_get_autocommit(w->db))
        sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    return e;
}

static err_t set_state(sl_t *w, int64_t id, const char *state, const char *who,
                       const char *note, const char *link, err_detail_t *d)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(w->db,
                           "UPDATE worklist SET state=?2, changed_by=?3, changed_ms=?4,"
                           " note=coalesce(?5, note), link=coalesce(?6, link) WHERE id=?1",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(w, d, "update");
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, who ? who : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now_ms());
    if (note)
        sqlite3_bind_text(st, 5, note, -1, SQLITE_STATIC);
    if (link)
        sqlite3_bind_text(st, 6, link, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? ERR_OK : sql_fail(w, d, "update");
}

static err_t sl_resolve(worklist_t *wb, int64_t id, const char *who, const char *note,
                        err_detail_t *d)
{
    sl_t *w = (sl_t *)wb;
    char kind[16], state[16];
    err_t e = begin(w, d);
    if (e)
        return e;
    e = item_state(w, id, kind, state, d);
    if (!e && strcmp(state, "open") != 0)
        e = err_set(d, ERR_BAD_VALUE, 0, "item %" PRId64 " is %s, not open", id, state);
    if (!e)
        e = set_state(w, id, "resolved", who, note, NULL, d);
    return end(w, e, d);
}

/* Within a transaction: puts a message into the inbox; *inbox_id is its id. */
static err_t inbox_put(sl_t *w, const worklist_msg_t *m, int64_t *inbox_id, err_detail_t *d)
{
    if (!queue__valid_dest(m->dest) || !m->control_id || !m->content_type || !m->payload_len)
        return err_set(d, ERR_BAD_VALUE, 0, "message cannot be queued");
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(w->db,
                           "INSERT INTO inbox(dest, control_id, content_type, payload, findings,"
                           " meta, created_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(w, d, "inbox");
    sqlite3_bind_text(st, 1, m->dest, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, m->control_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, m->content_type, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(st, 4, m->payload, m->payload_len, SQLITE_STATIC);
    if (m->findings)
        sqlite3_bind_text(st, 5, m->findings, -1, SQLITE_STATIC);
    if (m->meta)
        sqlite3_bind_text(st, 6, m->meta, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, now_ms());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_fail(w, d, "inbox");
    *inbox_id = sqlite3_last_insert_rowid(w->db);
    return ERR_OK;
}

typedef struct {
    worklist_msg_t m;
    char *buf; /* the copies m points into */
} msg_copy_t;

static int copy_item(const worklist_item_t *it, void *user)
{
    msg_copy_t *c = user;
    const char *s[5] = {it->dest, it->control_id, it->content_type, it->findings, it->meta};
    size_t len[5], total = it->payload_len + 1;
    for (int i = 0; i < 5; i++)
        total += len[i] = s[i] ? strlen(s[i]) + 1 : 0;
    char *p = c->buf = xmalloc(total);
    const char **dst[5] = {&c->m.dest, &c->m.control_id, &c->m.content_type, &c->m.findings,
                           &c->m.meta};
    for (int i = 0; i < 5; i++) {
        *dst[i] = s[i] ? memcpy(p, s[i], len[i]) : NULL;
        p += len[i];
    }
    c->m.payload = memcpy(p, it->payload, it->payload_len);
    c->m.payload_len = it->payload_len;
    return 0;
}

static err_t sl_requeue(worklist_t *wb, int64_t id, const char *who, err_detail_t *d)
{
    sl_t *w = (sl_t *)wb;
    char kind[16], state[16], link[40];
    msg_copy_t c = {0};
    int64_t inbox_id = 0;
    err_t e = begin(w, d);
    if (e)
        return e;
    e = item_state(w, id, kind, state, d);
    if (!e && (strcmp(kind, "dead") != 0 || strcmp(state, "open") != 0))
        e = err_set(d, ERR_BAD_VALUE, 0, "item %" PRId64 " is %s %s, not an open dead letter", id,
                    state, kind);
    if (!e)
        e = sl_get(&w->base, id, copy_item, &c, d);
    if (!e)
        e = inbox_put(w, &c.m, &inbox_id, d);
    /* The dead row, if the queue still holds it as the only copy, is no
     * longer that: the inbox holds it now. Marked dead-lettered so that the
     * start-up review (queue_dead_review) does not requeue it a second time. */
    if (!e) {
        char sql[160];
        snprintf(sql, sizeof sql,
                 "UPDATE msgs SET state=4 WHERE state=3 AND id=(SELECT msg_id FROM worklist"
                 " WHERE id=%" PRId64 ")",
                 id);
        if (sqlite3_exec(w->db, sql, NULL, NULL, NULL) != SQLITE_OK)
            e = sql_fail(w, d, "dead row");
    }
    snprintf(link, sizeof link, "inbox:%" PRId64, inbox_id);
    if (!e)
        e = set_state(w, id, "requeued", who, NULL, link, d);
    xfree(c.buf);
    return end(w, e, d);
}

static err_t sl_resend(worklist_t *wb, int64_t id, const worklist_msg_t *m, const char *who,
                       const char *note, err_detail_t *d)
{
    sl_t *w = (sl_t *)wb;
    char kind[16], state[16], link[40];
    int64_t inbox_id = 0;
    err_t e = begin(w, d);
    if (e)
        return e;
    e = item_state(w, id, kind, state, d);
    if (!e && strcmp(state, "open") != 0)
        e = err_set(d, ERR_BAD_VALUE, 0, "item %" PRId64 " is %s, not open", id, state);
    if (!e)
        e = inbox_put(w, m, &inbox_id, d);
    snprintf(link, sizeof link, "inbox:%" PRId64, inbox_id);
    if (!e)
        e = set_state(w, id, "resent", who, note, link, d);
    return end(w, e, d);
}

static err_t sl_prune(worklist_t *wb, unsigned keep_days, size_t *n, err_detail_t *d)
{
    sl_t *w = (sl_t *)wb;
    size_t k = 0;
    int rc = worklist__prune(w->db, keep_days, now_ms(), &k);
    if (n)
        *n = k;
    return rc == SQLITE_OK ? ERR_OK : sql_fail(w, d, "prune");
}

static err_t sl_queue_figures(worklist_t *wb, worklist_dest_fn fn, void *user, int64_t *inbox,
                              err_detail_t *d)
{
    sl_t *w = (sl_t *)wb;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(w->db,
                           "SELECT dest, sum(state=0), sum(state<>0) FROM msgs GROUP BY dest"
                           " ORDER BY dest",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(w, d, "figures");
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn(col_text(st, 0), sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2), user);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_fail(w, d, "figures");
    *inbox = 0;
    if (sqlite3_prepare_v2(w->db, "SELECT count(*) FROM inbox", -1, &st, NULL) != SQLITE_OK)
        return sql_fail(w, d, "figures");
    if (sqlite3_step(st) == SQLITE_ROW)
        *inbox = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return ERR_OK;
}

static const worklist__ops_t sl_ops = {
    .close = sl_close,
    .list = sl_list,
    .get = sl_get,
    .resolve = sl_resolve,
    .requeue = sl_requeue,
    .resend = sl_resend,
    .prune = sl_prune,
    .queue_figures = sl_queue_figures,
};

/* ---------------------------------------------------------------- dispatch */

void worklist_close(worklist_t *w)
{
    if (w)
        w->ops->close(w);
}

err_t worklist_list(worklist_t *w, const worklist_filter_t *f, worklist_item_fn fn, void *user,
                    err_detail_t *d)
{
    return w->ops->list(w, f, fn, user, d);
}

err_t worklist_get(worklist_t *w, int64_t id, worklist_item_fn fn, void *user, err_detail_t *d)
{
    return w->ops->get(w, id, fn, user, d);
}

err_t worklist_resolve(worklist_t *w, int64_t id, const char *who, const char *note,
                       err_detail_t *d)
{
    return w->ops->resolve(w, id, who, note, d);
}

err_t worklist_requeue(worklist_t *w, int64_t id, const char *who, err_detail_t *d)
{
    return w->ops->requeue(w, id, who, d);
}

err_t worklist_resend(worklist_t *w, int64_t id, const worklist_msg_t *m, const char *who,
                      const char *note, err_detail_t *d)
{
    return w->ops->resend(w, id, m, who, note, d);
}

err_t worklist_prune(worklist_t *w, unsigned keep_days, size_t *n, err_detail_t *d)
{
    return w->ops->prune(w, keep_days, n, d);
}

err_t worklist_queue_figures(worklist_t *w, worklist_dest_fn fn, void *user, int64_t *inbox,
                             err_detail_t *d)
{
    return w->ops->queue_figures(w, fn, user, inbox, d);
}
