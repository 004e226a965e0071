/* queue.c - the public queue (queue.h), dispatched to its backend: SQLite
 * (queue_sqlite.c, the default) or PostgreSQL (queue_pg.c). The callers never
 * know which one holds their rows. What both share lives here: the
 * destination-name check, the checks of an item and its copy into a put
 * request, and the row's free. */
#include "queue.h"

#include <string.h>

#include "queue_int.h"
#include "xmalloc.h"

bool queue__valid_dest(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > QUEUE_DEST_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

static bool text_ok(const char *s, size_t max)
{
    return s && strlen(s) <= max;
}

err_t queue__item_check(const queue_item_t *item, size_t max_payload)
{
    if (!item || !queue__valid_dest(item->dest) ||
        !text_ok(item->control_id, QUEUE_CONTROL_ID_MAX) ||
        !text_ok(item->content_type, QUEUE_CTYPE_MAX) || !item->content_type[0])
        return ERR_BAD_VALUE;
    if (!item->payload || item->payload_len == 0)
        return ERR_EMPTY;
    if (item->payload_len > max_payload ||
        (item->findings && strlen(item->findings) > QUEUE_FINDINGS_MAX))
        return ERR_TOO_LARGE;
    return ERR_OK;
}

err_t queue__items_check(const queue_item_t *items, size_t n, size_t max_payload,
                         size_t *refused)
{
    if (refused)
        *refused = 0;
    if (!items || n == 0)
        return ERR_BAD_VALUE;
    for (size_t i = 0; i < n; i++) {
        err_t e = queue__item_check(&items[i], max_payload);
        if (e) {
            if (refused)
                *refused = i;
            return e;
        }
    }
    return ERR_OK;
}

/* Copies n bytes of src to *at and moves *at past them; NULL stays NULL. */
static const char *text_put(char **at, const char *src, size_t n)
{
    if (!src)
        return NULL;
    char *dst = memcpy(*at, src, n);
    *at += n;
    return dst;
}

void *queue__item_copy(const queue_item_t *item, size_t head, queue__texts_t *t)
{
    size_t ld = strlen(item->dest) + 1, lc = strlen(item->control_id) + 1,
           lt = strlen(item->content_type) + 1,
           lf = item->findings ? strlen(item->findings) + 1 : 0,
           lm = item->meta ? strlen(item->meta) + 1 : 0,
           lw = item->worklist ? strlen(item->worklist) + 1 : 0;
    char *block = xmalloc(head + ld + lc + lt + lf + lm + lw + item->payload_len + 1);
    memset(block, 0, head);
    char *at = block + head;
    t->dest = text_put(&at, item->dest, ld);
    t->control_id = text_put(&at, item->control_id, lc);
    t->content_type = text_put(&at, item->content_type, lt);
    t->findings = text_put(&at, item->findings, lf);
    t->meta = text_put(&at, item->meta, lm);
    t->worklist = text_put(&at, item->worklist, lw);
    memcpy(at, item->payload, item->payload_len);
    at[item->payload_len] = 0;
    t->payload = (const unsigned char *)at;
    t->payload_len = item->payload_len;
    return block;
}

err_t queue_open(uv_loop_t *loop, const char *path, const queue_opts_t *opts, queue_t **out,
                 err_detail_t *d)
{
    if (opts && opts->backend == QUEUE_BACKEND_POSTGRES)
        return queue__pg_open(loop, opts, out, d);
    if (opts && opts->backend != QUEUE_BACKEND_SQLITE) {
        *out = NULL;
        return err_set(d, ERR_BAD_CONFIG, 0, "queue: unknown backend");
    }
    return queue__sqlite_open(loop, path, opts, out, d);
}

err_t queue_put(queue_t *q, const queue_item_t *item, queue_put_cb cb, void *user)
{
    return q->ops->put(q, item, cb, user);
}

err_t queue_put_many(queue_t *q, const queue_item_t *items, size_t n, queue_put_many_cb cb,
                     void *user, size_t *refused)
{
    return q->ops->put_many(q, items, n, cb, user, refused);
}

void queue_stats(const queue_t *q, queue_stats_t *st)
{
    q->ops->stats(q, st);
}

uint64_t queue_depth(const queue_t *q, const char *dest)
{
    return q->ops->depth(q, dest);
}

const char *queue_path(const queue_t *q)
{
    return q->ops->path(q);
}

int64_t queue_max_id(const queue_t *q)
{
    return q->ops->max_id(q);
}

int64_t queue_instance(const queue_t *q)
{
    return q->ops->instance(q);
}

void queue_close(queue_t *q, queue_close_cb cb, void *user)
{
    if (!q) {
        if (cb)
            cb(user);
        return;
    }
    q->ops->close(q, cb, user);
}

err_t queue_dead_review(queue_t *q, const char *dest, queue_dead_fn fate, void *user,
                        size_t *requeued, size_t *filed, err_detail_t *d)
{
    return q->ops->dead_review(q, dest, fate, user, requeued, filed, d);
}

void queue_inbox_poke(queue_t *q)
{
    if (q && q->ops->inbox_poke)
        q->ops->inbox_poke(q);
}

err_t queue_reader_open(queue_t *q, const char *dest, queue_ready_cb ready_cb, void *user,
                        queue_reader_t **out, err_detail_t *d)
{
    return q->ops->reader_open(q, dest, ready_cb, user, out, d);
}

err_t queue_reader_fetch(queue_reader_t *r, size_t max, queue_fetch_cb cb)
{
    return r->q->ops->reader_fetch(r, max, cb);
}

bool queue_reader_has_more(const queue_reader_t *r)
{
    return r->q->ops->reader_has_more(r);
}

size_t queue_reader_unsynced(const queue_reader_t *r)
{
    return r->q->ops->reader_unsynced(r);
}

void queue_reader_flush(queue_reader_t *r)
{
    r->q->ops->reader_flush(r);
}

uint64_t queue_reader_lease(const queue_reader_t *r)
{
    return r->q->ops->reader_lease(r);
}

void queue_reader_close(queue_reader_t *r)
{
    if (r)
        r->q->ops->reader_close(r);
}

err_t queue_mark_delivered(queue_reader_t *r, int64_t id)
{
    return r->q->ops->mark(r, QUEUE__MARK_DELIVERED, id, 0, 0, NULL);
}

err_t queue_mark_dead(queue_reader_t *r, int64_t id, unsigned attempts, const char *reason)
{
    return r->q->ops->mark(r, QUEUE__MARK_DEAD, id, attempts, 0, reason);
}

err_t queue_mark_dead_lettered(queue_reader_t *r, int64_t id, unsigned attempts,
                               const char *reason)
{
    return r->q->ops->mark(r, QUEUE__MARK_DEAD_LETTERED, id, attempts, 0, reason);
}

err_t queue_mark_attempt(queue_reader_t *r, int64_t id, unsigned attempts, unsigned rejects,
                         const char *reason)
{
    return r->q->ops->mark(r, QUEUE__MARK_ATTEMPT, id, attempts, rejects, reason);
}

void queue_row_free(queue_row_t *row)
{
    xfree(row);
}
