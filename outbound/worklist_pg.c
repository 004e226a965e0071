/* worklist_pg.c - the worklist (worklist.h) on PostgreSQL: the table
 * spinegate_worklist that every instance sharing the queue database writes
 * its rejects and dead letters to (queue_pg.c, docs/queue-schema.md), so
 * that one worklist serves them all.
 *
 * A synchronous libpq connection of its own (PQexecParams). That is fine
 * here and only here: these functions never run on the loop thread
 * (spinegate-admin is its own process; the daemon calls them on the libuv
 * thread pool, app/adminsock.c and app/web.c). A connection lost outside a
 * transaction (a restart, a failover) is made again and the statement sent
 * once more (again_after_loss), so that a multi-host queue-url finds the new
 * primary without the coder seeing an error; within a transaction the call
 * fails and the next one connects again.
 *
 * Changes are transactions that lock the item first (SELECT ... FOR
 * UPDATE), so two coders on two instances cannot both resend one item. A
 * message handed back for delivery is inserted as a pending row of
 * spinegate_msgs in that transaction (there is no inbox to drain): it goes
 * to the end of its destination, and the item's link is "queue:N" at once.
 * A NOTIFY after the COMMIT tells the destination's lease holder, whichever
 * instance that is, to take it now rather than at its next poll.
 *
 * Columns holding message bytes are bytea (queue_pg.c says why); results
 * are asked for in binary, where libpq still ends every value with a NUL.
 * Ownership: worklist_open_pg() produces the worklist_t, worklist_close()
 * frees it.
 */
#include <cjson/cJSON.h>
#include <endian.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "queue_int.h"
#include "worklist.h"
#include "worklist_int.h"
#include "xmalloc.h"

#define WL_PG_SCHEMA_VERSION 2 /* the newest version of queue_pg.c's schema read here */
#define WL_PG_DEAD 3           /* spinegate_msgs.state, as in queue_pg.c */
#define WL_PG_DEAD_LETTERED 4

typedef struct {
    struct worklist base; /* first: a worklist_t * is a pg_wl_t * (worklist_int.h) */
    PGconn *conn;
} pg_wl_t;

#define ITEM_COLS                                                                                  \
    "id, kind, state, coalesce(msg_id, 0), dest, control_id, content_type, findings,"              \
    " meta, reason, received_ms, changed_by, note, link, coalesce(changed_ms, 0), payload"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The one place a libpq failure becomes err_t. */
static err_t pg_fail(pg_wl_t *w, const PGresult *res, err_detail_t *d, const char *what)
{
    char m[240];
    snprintf(m, sizeof m, "%s",
             res && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res)
             : w->conn                           ? PQerrorMessage(w->conn)
                                                 : "out of memory");
    size_t n = strlen(m);
    while (n && m[n - 1] == '\n')
        m[--n] = 0;
    return err_set(d, ERR_QUEUE, 0, "worklist: %s: %s", what, m);
}

/* After a statement failed: when it was sent outside a transaction and
 * the connection is what failed (the server restarted, or failed over),
 * connects again and says true, so that the caller sends it once more. Only
 * outside a transaction: what a statement inside one did is gone with it,
 * and a COMMIT whose answer was lost may have committed. */
static bool again_after_loss(pg_wl_t *w, bool was_idle)
{
    if (!was_idle || PQstatus(w->conn) != CONNECTION_BAD)
        return false;
    PQreset(w->conn);
    if (PQstatus(w->conn) != CONNECTION_OK)
        return false;
    PGresult *res = PQexec(w->conn, "SET lock_timeout = '10s'");
    bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    return ok;
}

/* Runs sql with text parameters (NULL for SQL NULL) and binary results.
 * bin marks the parameters sent as bytes (lens gives their lengths). On
 * success *out (may be NULL) holds the result. */
static err_t exec(pg_wl_t *w, const char *sql, int n, const char *const *vals, const int *lens,
                  const int *bin, PGresult **out, err_detail_t *d, const char *what)
{
    if (out)
        *out = NULL;
    bool was_idle = PQtransactionStatus(w->conn) == PQTRANS_IDLE;
    PGresult *res = PQexecParams(w->conn, sql, n, NULL, vals, lens, bin, 1);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && again_after_loss(w, was_idle)) {
        PQclear(res);
        res = PQexecParams(w->conn, sql, n, NULL, vals, lens, bin, 1);
        st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    }
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        err_t e = pg_fail(w, res, d, what);
        PQclear(res);
        return e;
    }
    if (out)
        *out = res;
    else
        PQclear(res);
    return ERR_OK;
}

static err_t exec0(pg_wl_t *w, const char *sql, err_detail_t *d, const char *what)
{
    return exec(w, sql, 0, NULL, NULL, NULL, NULL, d, what);
}

static int64_t be64_at(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col) || PQgetlength(res, row, col) != 8)
        return 0;
    uint64_t v;
    memcpy(&v, PQgetvalue(res, row, col), 8);
    return (int64_t)be64toh(v);
}

static const char *text_at(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

/* A connection dropped since the last call (a restart, a failover) is made
 * again; libpq tries the url's hosts in turn. */
static err_t ready(pg_wl_t *w, err_detail_t *d)
{
    if (PQstatus(w->conn) == CONNECTION_OK && PQtransactionStatus(w->conn) == PQTRANS_IDLE)
        return ERR_OK;
    PQreset(w->conn);
    if (PQstatus(w->conn) != CONNECTION_OK)
        return pg_fail(w, NULL, d, "cannot connect to PostgreSQL");
    return exec0(w, "SET lock_timeout = '10s'", d, "set up");
}

static void pg_close(worklist_t *wb)
{
    pg_wl_t *w = (pg_wl_t *)wb;
    PQfinish(w->conn);
    xfree(w);
}

static const worklist__ops_t pg_ops;

err_t worklist_open_pg(const char *url, worklist_t **out, err_detail_t *d)
{
    *out = NULL;
    if (!url || !*url)
        return err_set(d, ERR_QUEUE, 0, "worklist: no PostgreSQL connection URL (queue-url)");
    pg_wl_t *w = xcalloc(1, sizeof *w);
    w->base.ops = &pg_ops;
    /* Bounds before the url, so that its own win: a server gone silent (a
     * partition) fails a call within 15 s, as the queue's transactions do,
     * rather than holding a thread of the daemon's pool for TCP's minutes. */
    const char *keys[] = {"connect_timeout", "tcp_user_timeout", "dbname",
                          "fallback_application_name", NULL};
    const char *vals[] = {"10", "15000", url, "spinegate-worklist", NULL};
    w->conn = PQconnectdbParams(keys, vals, 1);
    err_t e = ERR_OK;
    if (!w->conn || PQstatus(w->conn) != CONNECTION_OK)
        e = pg_fail(w, NULL, d, "cannot connect to PostgreSQL");
    PGresult *res = NULL;
    if (!e) {
        PQsetErrorVerbosity(w->conn, PQERRORS_TERSE);
        /* A coder's command waits for a row another one holds, not forever. */
        e = exec0(w, "SET lock_timeout = '10s'", d, "set up");
    }
    if (!e &&
        exec0(w, "SELECT 1 FROM spinegate_msgs, spinegate_worklist LIMIT 0", d, "open") != ERR_OK)
        e = err_set(d, ERR_QUEUE, 0,
                    "worklist: the database has no spinegate queue (the daemon makes it at its "
                    "first start with queue = postgres)");
    if (!e)
        e = exec(w, "SELECT max(version)::bigint FROM spinegate_schema", 0, NULL, NULL, NULL, &res,
                 d, "schema version");
    if (!e && PQntuples(res) == 1 && be64_at(res, 0, 0) > WL_PG_SCHEMA_VERSION)
        e = err_set(d, ERR_QUEUE, 0,
                    "worklist: queue schema version %" PRId64 " is newer than this program's (%d)",
                    be64_at(res, 0, 0), WL_PG_SCHEMA_VERSION);
    PQclear(res);
    if (e) {
        pg_close(&w->base);
        return e;
    }
    *out = &w->base;
    return ERR_OK;
}

static int item_of(const PGresult *res, int row, worklist_item_fn fn, void *user)
{
    worklist_item_t it = {
        .id = be64_at(res, row, 0),
        .kind = text_at(res, row, 1),
        .state = text_at(res, row, 2),
        .msg_id = be64_at(res, row, 3),
        .dest = text_at(res, row, 4),
        .control_id = text_at(res, row, 5),
        .content_type = text_at(res, row, 6),
        .findings = text_at(res, row, 7),
        .meta = text_at(res, row, 8),
        .reason = text_at(res, row, 9),
        .received_ms = be64_at(res, row, 10),
        .changed_by = text_at(res, row, 11),
        .note = text_at(res, row, 12),
        .link = text_at(res, row, 13),
        .changed_ms = be64_at(res, row, 14),
        .payload = (const unsigned char *)PQgetvalue(res, row, 15),
    };
    it.payload_len = (size_t)PQgetlength(res, row, 15);
    return fn(&it, user);
}

/* The filters on meta and findings, as the SQLite worklist applies them:
 * rule when meta's "rules" names it or the findings summary has "rule:";
 * source as meta says, else by the destination's format. Done here rather
 * than in SQL: meta is bytea, and a cast of one damaged item to json would
 * fail the whole list. */
static bool rule_matches(const worklist_item_t *it, const cJSON *meta, const char *rule)
{
    const cJSON *rules = cJSON_GetObjectItemCaseSensitive(meta, "rules");
    const cJSON *r;
    cJSON_ArrayForEach(r, rules)
    {
        if (cJSON_IsString(r) && strcmp(r->valuestring, rule) == 0)
            return true;
    }
    if (!it->findings)
        return false;
    size_t n = strlen(rule);
    for (const char *p = it->findings; (p = strstr(p, rule)) != NULL; p++)
        if ((p == it->findings || p[-1] == ' ') && p[n] == ':')
            return true;
    return false;
}

static bool source_matches(const worklist_item_t *it, const cJSON *meta, const char *source)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(meta, "source");
    if (cJSON_IsString(s))
        return strcmp(s->valuestring, source) == 0;
    const char *fmt = it->dest && strstr(it->dest, "fhir") ? "http" : "mllp";
    return strcmp(fmt, source) == 0;
}

typedef struct {
    const worklist_filter_t *f;
    worklist_item_fn fn;
    void *user;
} list_walk_t;

static int list_item(const worklist_item_t *it, void *user)
{
    list_walk_t *lw = user;
    if (lw->f->rule || lw->f->source) {
        cJSON *meta = it->meta ? cJSON_Parse(it->meta) : NULL;
        bool pass = (!lw->f->rule || rule_matches(it, meta, lw->f->rule)) &&
                    (!lw->f->source || source_matches(it, meta, lw->f->source));
        cJSON_Delete(meta);
        if (!pass)
            return 0;
    }
    return lw->fn(it, lw->user);
}

static err_t pg_list(worklist_t *wb, const worklist_filter_t *f, worklist_item_fn fn, void *user,
                     err_detail_t *d)
{
    pg_wl_t *w = (pg_wl_t *)wb;
    static const worklist_filter_t none = {0};
    if (!f)
        f = &none;
    err_t e = ready(w, d);
    if (e)
        return e;
    char since[24], until[24];
    snprintf(since, sizeof since, "%" PRId64, f->since_ms);
    snprintf(until, sizeof until, "%" PRId64, f->until_ms);
    const char *vals[] = {f->state, f->kind, since, until};
    list_walk_t lw = {.f = f, .fn = fn, .user = user};
    for (int attempt = 0;; attempt++) {
        /* Row by row: a worklist of months with their messages need not
         * fit in memory at once. */
        bool sent = PQsendQueryParams(
            w->conn,
            "SELECT " ITEM_COLS " FROM spinegate_worklist"
            " WHERE ($1::text IS NULL OR state=$1) AND ($2::text IS NULL OR kind=$2)"
            " AND ($3::bigint=0 OR received_ms>=$3)"
            " AND ($4::bigint=0 OR received_ms<$4) ORDER BY id",
            4, NULL, vals, NULL, NULL, 1);
        bool stopped = false, any = false;
        if (sent) {
            PQsetSingleRowMode(w->conn); /* when refused, the rows come at once: read below */
            PGresult *res;
            while ((res = PQgetResult(w->conn)) != NULL) {
                ExecStatusType st = PQresultStatus(res);
                if (st == PGRES_SINGLE_TUPLE || st == PGRES_TUPLES_OK) {
                    for (int i = 0; i < PQntuples(res) && !stopped; i++, any = true)
                        stopped = item_of(res, i, list_item, &lw) != 0;
                } else if (!e) {
                    e = pg_fail(w, res, d, "list");
                }
                PQclear(res); /* after a stop the rest is read and dropped */
            }
        } else {
            e = pg_fail(w, NULL, d, "list");
        }
        /* Nothing handed out yet: a lost connection may be tried again. */
        if (e && !any && attempt == 0 && again_after_loss(w, true)) {
            e = ERR_OK;
            continue;
        }
        return e;
    }
}

static err_t pg_get(worklist_t *wb, int64_t id, worklist_item_fn fn, void *user, err_detail_t *d)
{
    pg_wl_t *w = (pg_wl_t *)wb;
    err_t e = ready(w, d);
    if (e)
        return e;
    char ids[24];
    snprintf(ids, sizeof ids, "%" PRId64, id);
    const char *vals[] = {ids};
    PGresult *res = NULL;
    e = exec(w, "SELECT " ITEM_COLS " FROM spinegate_worklist WHERE id=$1::bigint", 1, vals, NULL,
             NULL, &res, d, "read");
    if (!e && PQntuples(res) == 0)
        e = err_set(d, ERR_NOT_FOUND, 0, "no worklist item %" PRId64, id);
    if (!e)
        item_of(res, 0, fn, user);
    PQclear(res);
    return e;
}

/* Within a transaction: locks item id and reads what the changes check. */
typedef struct {
    char kind[16], state[16];
    char dest[QUEUE_DEST_MAX + 1];
    int64_t msg_id;
} item_head_t;

static err_t item_lock(pg_wl_t *w, int64_t id, item_head_t *h, err_detail_t *d)
{
    char ids[24];
    snprintf(ids, sizeof ids, "%" PRId64, id);
    const char *vals[] = {ids};
    PGresult *res = NULL;
    err_t e = exec(w,
                   "SELECT kind, state, dest, coalesce(msg_id, 0) FROM spinegate_worklist"
                   " WHERE id=$1::bigint FOR UPDATE",
                   1, vals, NULL, NULL, &res, d, "read");
    if (!e && PQntuples(res) == 0)
        e = err_set(d, ERR_NOT_FOUND, 0, "no worklist item %" PRId64, id);
    if (!e) {
        snprintf(h->kind, sizeof h->kind, "%s", PQgetvalue(res, 0, 0));
        snprintf(h->state, sizeof h->state, "%s", PQgetvalue(res, 0, 1));
        snprintf(h->dest, sizeof h->dest, "%s", PQgetvalue(res, 0, 2));
        h->msg_id = be64_at(res, 0, 3);
    }
    PQclear(res);
    return e;
}

/* item_lock, for an action only an open item takes (resolve, resend). */
static err_t item_lock_open(pg_wl_t *w, int64_t id, item_head_t *h, err_detail_t *d)
{
    err_t e = item_lock(w, id, h, d);
    if (!e && strcmp(h->state, "open") != 0)
        e = err_set(d, ERR_BAD_VALUE, 0, "item %" PRId64 " is %s, not open", id, h->state);
    return e;
}

static err_t begin(pg_wl_t *w, err_detail_t *d)
{
    err_t e = ready(w, d);
    return e ? e : exec0(w, "BEGIN", d, "begin");
}

static err_t end(pg_wl_t *w, err_t e, err_detail_t *d)
{
    if (!e)
        e = exec0(w, "COMMIT", d, "commit");
    if (PQtransactionStatus(w->conn) != PQTRANS_IDLE)
        PQclear(PQexec(w->conn, "ROLLBACK"));
    return e;
}

static err_t set_state(pg_wl_t *w, int64_t id, const char *state, const char *who, const char *note,
                       const char *link, err_detail_t *d)
{
    char ids[24], now[24];
    snprintf(ids, sizeof ids, "%" PRId64, id);
    snprintf(now, sizeof now, "%" PRId64, now_ms());
    const char *vals[] = {ids, state, who ? who : "", now, note, link};
    return exec(w,
                "UPDATE spinegate_worklist SET state=$2, changed_by=$3, changed_ms=$4::bigint,"
                " note=coalesce($5, note), link=coalesce($6, link) WHERE id=$1::bigint",
                6, vals, NULL, NULL, NULL, d, "update");
}

static err_t pg_resolve(worklist_t *wb, int64_t id, const char *who, const char *note,
                        err_detail_t *d)
{
    pg_wl_t *w = (pg_wl_t *)wb;
    item_head_t h;
    err_t e = begin(w, d);
    if (e)
        return e;
    e = item_lock_open(w, id, &h, d);
    if (!e)
        e = set_state(w, id, "resolved", who, note, NULL, d);
    return end(w, e, d);
}

/* After the COMMIT: the destination's lease holder, in whichever instance,
 * takes the new row now. A NOTIFY lost is no loss: it polls. */
static void notify_dest(pg_wl_t *w, const char *dest)
{
    const char *vals[] = {dest};
    PQclear(PQexecParams(w->conn, "SELECT pg_notify('" QUEUE__PG_CHANNEL "', $1)", 1, NULL, vals,
                         NULL, NULL, 0));
}

/* Within a transaction: the new row's id, as "queue:N". */
/* Runs an INSERT ... RETURNING id of one pending row of spinegate_msgs and
 * writes its worklist link ("queue:N") to link. */
static err_t queue_row_insert(pg_wl_t *w, const char *sql, int n, const char *const *vals,
                              const int *lens, const int *bin, char *link, size_t len,
                              err_detail_t *d)
{
    PGresult *res = NULL;
    err_t e = exec(w, sql, n, vals, lens, bin, &res, d, "queue");
    if (!e && PQntuples(res) != 1)
        e = err_set(d, ERR_QUEUE, 0, "worklist: queue: no row made");
    if (!e)
        snprintf(link, len, "queue:%" PRId64, be64_at(res, 0, 0));
    PQclear(res);
    return e;
}

static err_t pg_requeue(worklist_t *wb, int64_t id, const char *who, err_detail_t *d)
{
    pg_wl_t *w = (pg_wl_t *)wb;
    item_head_t h;
    char link[40], ids[24], now[24], msg[24], st_dead[8], st_lettered[8];
    err_t e = begin(w, d);
    if (e)
        return e;
    e = item_lock(w, id, &h, d);
    if (!e && (strcmp(h.kind, "dead") != 0 || strcmp(h.state, "open") != 0))
        e = err_set(d, ERR_BAD_VALUE, 0, "item %" PRId64 " is %s %s, not an open dead letter", id,
                    h.state, h.kind);
    if (!e && !queue__valid_dest(h.dest))
        e = err_set(d, ERR_BAD_VALUE, 0, "message cannot be queued");
    snprintf(ids, sizeof ids, "%" PRId64, id);
    snprintf(now, sizeof now, "%" PRId64, now_ms());
    snprintf(msg, sizeof msg, "%" PRId64, h.msg_id);
    snprintf(st_dead, sizeof st_dead, "%d", WL_PG_DEAD);
    snprintf(st_lettered, sizeof st_lettered, "%d", WL_PG_DEAD_LETTERED);
    /* The message, unchanged, as a new pending row: a new id puts it at the
     * end of its destination, as the SQLite inbox does. */
    const char *ins[] = {ids, now};
    if (!e)
        e = queue_row_insert(w,
                             "INSERT INTO spinegate_msgs(dest, control_id, content_type, payload,"
                             " findings, created_ms, updated_ms, meta, last_error)"
                             " SELECT dest, control_id, content_type, payload, findings,"
                             " $2::bigint, $2::bigint, meta,"
                             " convert_to('requeued from the worklist', 'UTF8')"
                             " FROM spinegate_worklist WHERE id=$1::bigint RETURNING id",
                             2, ins, NULL, NULL, link, sizeof link, d);
    /* The dead row is no longer the only copy: marked dead-lettered, it is
     * pruned with them (queue_pg.c) instead of kept for ever. */
    const char *upd[] = {msg, st_dead, st_lettered, now};
    if (!e)
        e = exec(w,
                 "UPDATE spinegate_msgs SET state=$3::smallint, updated_ms=$4::bigint"
                 " WHERE id=$1::bigint AND state=$2::smallint",
                 4, upd, NULL, NULL, NULL, d, "dead row");
    if (!e)
        e = set_state(w, id, "requeued", who, NULL, link, d);
    e = end(w, e, d);
    if (!e)
        notify_dest(w, h.dest);
    return e;
}

static err_t pg_resend(worklist_t *wb, int64_t id, const worklist_msg_t *m, const char *who,
                       const char *note, err_detail_t *d)
{
    pg_wl_t *w = (pg_wl_t *)wb;
    if (!queue__valid_dest(m->dest) || !m->control_id || !m->content_type || !m->payload_len ||
        m->payload_len > INT32_MAX)
        return err_set(d, ERR_BAD_VALUE, 0, "message cannot be queued");
    item_head_t h;
    char link[40], now[24];
    err_t e = begin(w, d);
    if (e)
        return e;
    e = item_lock_open(w, id, &h, d);
    snprintf(now, sizeof now, "%" PRId64, now_ms());
    /* The texts go as bytes, as queue_pg.c's put sends them: bytea columns. */
    const char *vals[] = {m->dest,     m->control_id, m->content_type, (const char *)m->payload,
                          m->findings, now,           m->meta};
    int lens[] = {0,
                  (int)strlen(m->control_id),
                  (int)strlen(m->content_type),
                  (int)m->payload_len,
                  m->findings ? (int)strlen(m->findings) : 0,
                  0,
                  m->meta ? (int)strlen(m->meta) : 0};
    int bin[] = {0, 1, 1, 1, 1, 0, 1};
    if (!e)
        e = queue_row_insert(w,
                             "INSERT INTO spinegate_msgs(dest, control_id, content_type, payload,"
                             " findings, created_ms, updated_ms, meta, last_error) VALUES ($1,"
                             " $2, $3, $4, $5, $6::bigint, $6::bigint, $7,"
                             " convert_to('resent from the worklist', 'UTF8')) RETURNING id",
                             7, vals, lens, bin, link, sizeof link, d);
    if (!e)
        e = set_state(w, id, "resent", who, note, link, d);
    e = end(w, e, d);
    if (!e)
        notify_dest(w, m->dest);
    return e;
}

static err_t pg_prune(worklist_t *wb, unsigned keep_days, size_t *n, err_detail_t *d)
{
    pg_wl_t *w = (pg_wl_t *)wb;
    if (n)
        *n = 0;
    err_t e = ready(w, d);
    if (e)
        return e;
    char before[24];
    snprintf(before, sizeof before, "%" PRId64, now_ms() - (int64_t)keep_days * 86400000);
    const char *vals[] = {before};
    PGresult *res = NULL;
    /* Open items are work not done: age never removes them. */
    e = exec(w,
             "DELETE FROM spinegate_worklist WHERE state<>'open'"
             " AND coalesce(changed_ms, received_ms)<$1::bigint",
             1, vals, NULL, NULL, &res, d, "prune");
    if (!e && n)
        *n = (size_t)strtoull(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return e;
}

static err_t pg_queue_figures(worklist_t *wb, worklist_dest_fn fn, void *user, int64_t *inbox,
                              err_detail_t *d)
{
    pg_wl_t *w = (pg_wl_t *)wb;
    *inbox = 0; /* none: handed-back messages are queue rows at once */
    err_t e = ready(w, d);
    if (e)
        return e;
    PGresult *res = NULL;
    e = exec(w,
             "SELECT dest, count(*) FILTER (WHERE state=0), count(*) FILTER (WHERE state<>0)"
             " FROM spinegate_msgs GROUP BY dest ORDER BY dest",
             0, NULL, NULL, NULL, &res, d, "figures");
    if (e)
        return e;
    for (int i = 0; i < PQntuples(res); i++)
        fn(PQgetvalue(res, i, 0), be64_at(res, i, 1), be64_at(res, i, 2), user);
    PQclear(res);
    return ERR_OK;
}

static const worklist__ops_t pg_ops = {
    .close = pg_close,
    .list = pg_list,
    .get = pg_get,
    .resolve = pg_resolve,
    .requeue = pg_requeue,
    .resend = pg_resend,
    .prune = pg_prune,
    .queue_figures = pg_queue_figures,
};
