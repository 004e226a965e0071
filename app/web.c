/* web.c - the coders' worklist as a web page (listen-admin), on the daemon's
 * loop: a login against admin-users (argon2id, verified on the thread pool
 * so the loop keeps serving claims), sessions in memory behind a random
 * cookie, a CSRF token per session on every POST, the embedded page files
 * and a small JSON API over the same worklist functions spinegate-admin
 * uses. Every view of an item and every change is appended to
 * DATA-DIR/admin-audit.log (0600): the page shows patient data.
 *
 * The worklist is read and changed on the thread pool, never on the loop
 * that carries the claims: reads on a connection of their own, one at a
 * time in arrival order (read_job_t); changes on another, which takes
 * SQLite's write lock (change_t). With the queue in PostgreSQL each call is
 * a round trip to the database.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "web.h"
#include "webauth.h"
#include "weblock.h"
#include "wlmeta.h"
#include "wlview.h"
#include "worklist.h"
#include "xmalloc.h"

#define WEB_SESSIONS 64
#define WEB_PAGE_SIZE 50
#define WEB_TREND_DAYS 14
#define COOKIE "sg_session"
/* Password checks at once on the thread pool, which also judges claims:
 * argon2id takes a core for a tenth of a second, so a flood of logins must
 * not take the pool. More wait for nobody: 503. */
#define WEB_LOGINS_AT_ONCE 1

/* No script, style or connection but our own; never framed. The referrer
 * (the address may hold a search for an MRN) stays on this site; not
 * no-referrer, under which a browser's form POST says "Origin: null". */
#define WEB_HEADERS                                                                                \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "             \
    "base-uri 'none'\r\n"                                                                          \
    "X-Content-Type-Options: nosniff\r\nReferrer-Policy: same-origin\r\n"                          \
    "X-Frame-Options: DENY\r\nCache-Control: no-store\r\n"

typedef struct {
    bool used;
    char id[WEBAUTH_TOKEN_HEX + 1];
    char csrf[WEBAUTH_TOKEN_HEX + 1];
    char user[WEBAUTH_NAME_MAX + 1];
    uint64_t last_ms; /* uv_now of the last request */
} web_session_t;

struct web {
    daemon_t *d;
    worklist_t *wl;
    char users_path[4096];
    int audit_fd;
    char dummy_hash[WEBAUTH_HASH_MAX]; /* verified against for unknown names: same time */
    web_session_t sessions[WEB_SESSIONS];
    unsigned logins_running;
    weblock_t *lock;      /* failed logins per account and per address */
    worklist_t *wl_write; /* changes, on the thread pool (change_work) */
    bool change_running;
    struct read_job *reads, **reads_tail; /* waiting for w->wl (read_pump) */
    bool read_running;
};

/* ---------------------------------------------------------------- helpers */

static void audit(web_t *w, const char *user, const char *action, int64_t item, const char *detail,
                  const http_req_t *req)
{
    char t[40], line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    wlview_rfc3339((int64_t)ts.tv_sec * 1000, t, sizeof t);
    int n = snprintf(line, sizeof line, "%s user=%s action=%s item=%" PRId64 " peer=%s%s%s\n", t,
                     user, action, item, req ? http_req_peer(req) : "", detail ? " " : "",
                     detail ? detail : "");
    if (n > (int)sizeof line - 1)
        n = (int)sizeof line - 1, line[n - 1] = '\n';
    if (w->audit_fd < 0 || write(w->audit_fd, line, (size_t)n) != n)
        log_error("admin audit log: cannot write: %s", strerror(errno));
}

static void respond(http_req_t *req, int status, const char *type, const char *body, size_t len,
                    const char *extra)
{
    char headers[1024];
    snprintf(headers, sizeof headers, "%s%s", WEB_HEADERS, extra ? extra : "");
    http_req_respond(req, status, type, body, len, headers);
}

static void respond_json(http_req_t *req, int status, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    respond(req, status, "application/json", s, strlen(s), NULL);
    cJSON_free(s);
    cJSON_Delete(o);
}

static void respond_error(http_req_t *req, int status, const char *why)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", why);
    respond_json(req, status, o);
}

static void redirect(http_req_t *req, const char *to, const char *extra)
{
    char h[512];
    snprintf(h, sizeof h, "Location: %s\r\n%s", to, extra ? extra : "");
    respond(req, 303, NULL, NULL, 0, h);
}

static const web_embedded_t *file_named(const char *name)
{
    for (size_t i = 0; i < web_embedded_count; i++)
        if (strcmp(web_embedded_files[i].name, name) == 0)
            return &web_embedded_files[i];
    return NULL;
}

static const char *type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (dot && !strcmp(dot, ".html"))
        return "text/html; charset=utf-8";
    if (dot && !strcmp(dot, ".js"))
        return "text/javascript; charset=utf-8";
    if (dot && !strcmp(dot, ".css"))
        return "text/css; charset=utf-8";
    return "application/octet-stream";
}

static void serve_file(http_req_t *req, const char *name, int status)
{
    const web_embedded_t *f = file_named(name);
    if (!f) {
        respond(req, 404, "text/plain", "not found\n", 10, NULL);
        return;
    }
    respond(req, status, type_of(name), (const char *)f->data, f->len, NULL);
}

static bool path_is(const http_req_t *req, const char *p)
{
    slice_t s = http_req_path(req);
    return s.len == strlen(p) && memcmp(s.ptr, p, s.len) == 0;
}

/* The query parameter name, decoded into out; "" when absent or bad. */
static const char *param(const http_req_t *req, const char *name, char *out, size_t cap)
{
    slice_t v;
    out[0] = '\0';
    if (http_req_query_param(req, name, &v) && !http_pct_decode(v, true, out, cap, NULL))
        out[0] = '\0';
    return out;
}

/* The login page again, 401, with its "wrong name or password" shown. */
static void login_refused(http_req_t *req)
{
    const web_embedded_t *f = file_named("login.html");
    static const char hidden[] = "class=\"error\" hidden>";
    const char *page = (const char *)f->data, *at = strstr(page, hidden);
    if (!at) {
        serve_file(req, "login.html", 401);
        return;
    }
    size_t head = (size_t)(at - page) + strlen("class=\"error\"");
    char *out = xmalloc(f->len);
    memcpy(out, page, head);
    out[head] = '>';
    size_t tail = f->len - (size_t)(at - page) - (sizeof hidden - 1);
    memcpy(out + head + 1, at + sizeof hidden - 1, tail);
    respond(req, 401, "text/html; charset=utf-8", out, head + 1 + tail, NULL);
    xfree(out);
}

/* The session cookie is Secure when the page speaks TLS itself or is said
 * to be reached over it (a proxy in front: admin-secure-cookie). */
static bool secure_cookie(const web_t *w)
{
    return w->d->cfg.admin_secure_cookie || w->d->tls[DAEMON_TLS_ADMIN] != NULL;
}

/* ---------------------------------------------------------------- sessions */

static web_session_t *session_of(web_t *w, const http_req_t *req)
{
    slice_t h = http_req_header(req, "Cookie");
    char id[WEBAUTH_TOKEN_HEX + 1];
    if (!h.ptr || !webauth_cookie(h.ptr, h.len, COOKIE, id, sizeof id) || !webauth_token_ok(id))
        return NULL;
    uint64_t now = uv_now(w->d->loop);
    for (size_t i = 0; i < WEB_SESSIONS; i++) {
        web_session_t *s = &w->sessions[i];
        if (!s->used || !webauth_token_eq(s->id, id))
            continue;
        if (now - s->last_ms > (uint64_t)w->d->cfg.admin_session_ttl_ms) {
            memset(s, 0, sizeof *s);
            return NULL;
        }
        s->last_ms = now;
        return s;
    }
    return NULL;
}

/* A new session for user; when all are taken the least recently used ends. */
static web_session_t *session_new(web_t *w, const char *user)
{
    web_session_t *s = &w->sessions[0];
    for (size_t i = 0; i < WEB_SESSIONS; i++) {
        if (!w->sessions[i].used) {
            s = &w->sessions[i];
            break;
        }
        if (w->sessions[i].last_ms < s->last_ms)
            s = &w->sessions[i];
    }
    memset(s, 0, sizeof *s);
    s->used = true;
    webauth_token_new(s->id);
    webauth_token_new(s->csrf);
    snprintf(s->user, sizeof s->user, "%s", user);
    s->last_ms = uv_now(w->d->loop);
    return s;
}

/* The POST's CSRF token (header X-CSRF-Token, else form field csrf) is the
 * session's. */
static bool csrf_ok(const web_session_t *s, const http_req_t *req)
{
    char tok[WEBAUTH_TOKEN_HEX + 1];
    slice_t h = http_req_header(req, "X-CSRF-Token");
    if (h.ptr && h.len == WEBAUTH_TOKEN_HEX) {
        memcpy(tok, h.ptr, h.len);
        tok[h.len] = '\0';
    } else {
        buf_t *b = http_req_body(req);
        if (!webauth_form_field((const char *)b->data, b->len, "csrf", tok, sizeof tok))
            return false;
    }
    return webauth_token_ok(tok) && webauth_token_eq(tok, s->csrf);
}

/* ---------------------------------------------------------------- login */

/* A login posted from another site's page (login CSRF: the coder would work
 * in someone else's account) is refused: a browser's Origin, when it sends
 * one, must name this host. The session's CSRF token covers every other POST. */
static bool same_origin(const http_req_t *req)
{
    slice_t origin = http_req_header(req, "Origin"), host = http_req_header(req, "Host");
    if (!origin.ptr)
        return true;
    const char *sep = origin.len > 3 ? memmem(origin.ptr, origin.len, "://", 3) : NULL;
    if (!sep || !host.ptr)
        return false;
    size_t off = (size_t)(sep + 3 - origin.ptr);
    return origin.len - off == host.len && memcmp(sep + 3, host.ptr, host.len) == 0;
}

typedef struct {
    uv_work_t work;
    web_t *w;
    http_req_t *req;
    char user[WEBAUTH_NAME_MAX + 1];
    char password[256];
    char peer[80];
    weblock_state_t locked; /* refused before the password is looked at */
    bool ok;
} login_job_t;

static void login_work(uv_work_t *wk)
{
    login_job_t *j = wk->data;
    char hash[WEBAUTH_HASH_MAX];
    err_detail_t d;
    /* A locked login costs the same hash as any other: its answer comes
     * as late as a wrong password's. */
    bool known = !j->locked && webauth_users_find(j->w->users_path, j->user, hash, &d) == ERR_OK;
    if (!known && !j->locked && d.code == ERR_IO)
        log_error("admin-users: %s", d.msg);
    j->ok = webauth_verify(known ? hash : j->w->dummy_hash, j->password) && known;
}

static void login_done(uv_work_t *wk, int status)
{
    login_job_t *j = wk->data;
    web_t *w = j->w;
    w->logins_running--;
    memset(j->password, 0, sizeof j->password);
    uint64_t now = uv_now(w->d->loop);
    if (j->locked) {
        /* The same page as a wrong password: a lock does not tell an
         * attacker that the name is an account; the audit log says why. */
        audit(w, j->user, "login-locked", 0,
              j->locked == WEBLOCK_ACCOUNT ? "by=account" : "by=address", j->req);
        login_refused(j->req);
    } else if (status == 0 && j->ok) {
        weblock_succeeded(w->lock, j->user);
        web_session_t *s = session_new(w, j->user);
        char cookie[256];
        snprintf(cookie, sizeof cookie,
                 "Set-Cookie: " COOKIE "=%s; Path=/; HttpOnly; SameSite=Strict%s\r\n", s->id,
                 secure_cookie(w) ? "; Secure" : "");
        audit(w, j->user, "login", 0, NULL, j->req);
        redirect(j->req, "/", cookie);
    } else {
        bool locks = weblock_failed(w->lock, j->user, j->peer, now);
        audit(w, j->user, "login-refused", 0, locks ? "locked=yes" : NULL, j->req);
        if (locks)
            log_warn("admin page: account %s locked for %ld minutes after %ld failed logins",
                     j->user, w->d->cfg.admin_lockout_minutes, w->d->cfg.admin_lockout_attempts);
        login_refused(j->req);
    }
    xfree(j);
}

static void post_login(web_t *w, http_req_t *req)
{
    buf_t *b = http_req_body(req);
    login_job_t *j = xcalloc(1, sizeof *j);
    if (!webauth_form_field((const char *)b->data, b->len, "user", j->user, sizeof j->user) ||
        !webauth_name_ok(j->user) ||
        !webauth_form_field((const char *)b->data, b->len, "password", j->password,
                            sizeof j->password)) {
        xfree(j);
        login_refused(req);
        return;
    }
    j->w = w;
    j->req = req;
    j->work.data = j;
    snprintf(j->peer, sizeof j->peer, "%s", http_req_peer(req));
    j->locked = weblock_check(w->lock, j->user, j->peer, uv_now(w->d->loop));
    if (w->logins_running >= WEB_LOGINS_AT_ONCE ||
        uv_queue_work(w->d->loop, &j->work, login_work, login_done) != 0) {
        memset(j->password, 0, sizeof j->password);
        xfree(j);
        static const char busy[] = "another login is being checked: try again\n";
        respond(req, 503, "text/plain", busy, sizeof busy - 1, "Retry-After: 1\r\n");
        return;
    }
    w->logins_running++;
}

/* ---------------------------------------------------------------- listing */

typedef struct {
    cJSON *items, *counts;
    const char *rule, *q;
} list_t;

static bool has_rule(const cJSON *rules, const char *rule)
{
    const cJSON *r;
    cJSON_ArrayForEach(r,
                       rules) if (cJSON_IsString(r) && !strcmp(r->valuestring, rule)) return true;
    return false;
}

/* q matches the control id or one of the lookup references, any case. */
static bool matches(const cJSON *o, const char *q)
{
    const char *cid = wlview_jstr(o, "control_id");
    if (cid && strcasestr(cid, q))
        return true;
    const cJSON *v, *refs = cJSON_GetObjectItemCaseSensitive(o, "refs");
    cJSON_ArrayForEach(v, refs) if (cJSON_IsString(v) && strcasestr(v->valuestring, q)) return true;
    return false;
}

static int list_cb(const worklist_item_t *it, void *user)
{
    list_t *l = user;
    cJSON *o = wlview_item_json(it);
    if (l->q[0] && !matches(o, l->q)) {
        cJSON_Delete(o);
        return 0;
    }
    /* Counts per rule over everything the other filters let through, so
     * the coder sees what picking a rule would leave. */
    const cJSON *r, *rules = cJSON_GetObjectItemCaseSensitive(o, "rules");
    cJSON_ArrayForEach(r, rules)
    {
        if (!cJSON_IsString(r))
            continue;
        cJSON *c = cJSON_GetObjectItemCaseSensitive(l->counts, r->valuestring);
        if (c)
            cJSON_SetNumberValue(c, c->valuedouble + 1);
        else
            cJSON_AddNumberToObject(l->counts, r->valuestring, 1);
    }
    if (l->rule[0] && !has_rule(rules, l->rule))
        cJSON_Delete(o);
    else
        cJSON_AddItemToArray(l->items, o);
    return 0;
}

typedef struct {
    const char *key; /* an item's member: "id" (a number) or a string */
    int sign;        /* 1 ascending, -1 descending */
} sort_t;

static int cmp_items(const void *a, const void *b, void *user)
{
    const sort_t *so = user;
    const char *sort_key = so->key;
    const cJSON *x = *(cJSON *const *)a, *y = *(cJSON *const *)b;
    int c;
    if (!strcmp(sort_key, "id")) {
        double dx = cJSON_GetObjectItemCaseSensitive(x, "id")->valuedouble,
               dy = cJSON_GetObjectItemCaseSensitive(y, "id")->valuedouble;
        c = dx < dy ? -1 : dx > dy;
    } else {
        const char *sx = wlview_jstr(x, sort_key), *sy = wlview_jstr(y, sort_key);
        c = strcmp(sx ? sx : "", sy ? sy : "");
    }
    return c * so->sign;
}

/* ---------------------------------------------------------------- reads */

/* A read of the worklist for one request: run on the thread pool (its
 * worklist call and the JSON made of it), done on the loop (the answer). */
typedef struct read_job read_job_t;
struct read_job {
    uv_work_t work;
    read_job_t *next;
    web_t *w;
    http_req_t *req;
    void (*run)(read_job_t *j);
    void (*done)(read_job_t *j);
    char user[WEBAUTH_NAME_MAX + 1]; /* for the audit of a view */
    worklist_filter_t f;
    char state[32], rule[128], source[16], until[40], q[128];
    int64_t id;
    list_t l;
    cJSON *out;
    err_t rc;
    err_detail_t d;
};

static void read_pump(web_t *w);

static read_job_t *read_new(web_t *w, http_req_t *req, void (*run)(read_job_t *),
                            void (*done)(read_job_t *))
{
    read_job_t *j = xcalloc(1, sizeof *j);
    j->w = w;
    j->req = req;
    j->run = run;
    j->done = done;
    j->work.data = j;
    err_clear(&j->d);
    return j;
}

static void read_submit(read_job_t *j)
{
    web_t *w = j->w;
    *w->reads_tail = j;
    w->reads_tail = &j->next;
    read_pump(w);
}

static void read_work(uv_work_t *wk)
{
    read_job_t *j = wk->data;
    j->run(j);
}

static void read_free(read_job_t *j)
{
    cJSON_Delete(j->out);
    cJSON_Delete(j->l.items);
    cJSON_Delete(j->l.counts);
    xfree(j);
}

static void read_done(uv_work_t *wk, int status)
{
    read_job_t *j = wk->data;
    web_t *w = j->w;
    w->read_running = false;
    if (status != 0)
        respond_error(j->req, 500, "the worklist cannot be read");
    else
        j->done(j);
    read_free(j);
    read_pump(w);
}

/* Starts the next waiting read unless one runs: one connection, one caller. */
static void read_pump(web_t *w)
{
    while (!w->read_running && w->reads) {
        read_job_t *j = w->reads;
        w->reads = j->next;
        if (!w->reads)
            w->reads_tail = &w->reads;
        if (uv_queue_work(w->d->loop, &j->work, read_work, read_done) == 0) {
            w->read_running = true;
            return;
        }
        respond_error(j->req, 503, "the worklist cannot be read now: try again");
        read_free(j);
    }
}

static void items_run(read_job_t *j)
{
    j->rc = worklist_list(j->w->wl, &j->f, list_cb, &j->l, &j->d);
}

static void items_done(read_job_t *j);

static void api_items(web_t *w, http_req_t *req)
{
    char since[40];
    read_job_t *j = read_new(w, req, items_run, items_done);
    worklist_filter_t *f = &j->f;
    param(req, "state", j->state, sizeof j->state);
    param(req, "source", j->source, sizeof j->source);
    f->state = j->state[0] ? j->state : NULL;
    f->source = j->source[0] ? j->source : NULL;
    if ((param(req, "since", since, sizeof since)[0] && !wlview_parse_time(since, &f->since_ms)) ||
        (param(req, "until", j->until, sizeof j->until)[0] &&
         !wlview_parse_time(j->until, &f->until_ms))) {
        read_free(j);
        respond_error(req, 400, "since/until: expected a date or RFC 3339 time");
        return;
    }
    if (strlen(j->until) == 10)
        f->until_ms += 86400000; /* "To" a day takes that day in */
    j->l = (list_t){.items = cJSON_CreateArray(),
                    .counts = cJSON_CreateObject(),
                    .rule = param(req, "rule", j->rule, sizeof j->rule),
                    .q = param(req, "q", j->q, sizeof j->q)};
    read_submit(j);
}

static void items_done(read_job_t *j)
{
    http_req_t *req = j->req;
    char sort[32], order[8], page[16];
    if (j->rc != ERR_OK) {
        log_error("admin page: worklist: %s", j->d.msg);
        respond_error(req, 500, "the worklist cannot be read");
        return;
    }
    list_t l = j->l;
    j->l.items = j->l.counts = NULL; /* l's now */
    /* Newest first unless asked otherwise; ties keep the list's order. */
    param(req, "sort", sort, sizeof sort);
    static const char *const keys[] = {"id",     "received", "state", "control_id",
                                       "source", "verdict",  NULL};
    sort_t so = {.key = "id", .sign = -1};
    for (size_t i = 0; keys[i]; i++)
        if (!strcmp(sort, keys[i]))
            so.key = keys[i];
    if (strcmp(param(req, "order", order, sizeof order), "asc") == 0)
        so.sign = 1;
    int n = cJSON_GetArraySize(l.items);
    cJSON **v = xcalloc((size_t)n + 1, sizeof *v);
    int k = 0;
    for (cJSON *it = l.items->child; it; it = it->next)
        v[k++] = it;
    qsort_r(v, (size_t)n, sizeof *v, cmp_items, &so);
    long pg = strtol(param(req, "page", page, sizeof page), NULL, 10);
    if (pg < 1)
        pg = 1;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "total", n);
    cJSON_AddNumberToObject(o, "page", (double)pg);
    cJSON_AddNumberToObject(o, "per_page", WEB_PAGE_SIZE);
    cJSON_AddItemToObject(o, "counts", l.counts);
    cJSON *items = cJSON_AddArrayToObject(o, "items");
    for (long i = (pg - 1) * WEB_PAGE_SIZE; i < n && i < pg * WEB_PAGE_SIZE; i++)
        cJSON_AddItemReferenceToArray(items, v[i]);
    respond_json(req, 200, o);
    xfree(v);
    cJSON_Delete(l.items);
}

/* ---------------------------------------------------------------- one item */

static int item_cb(const worklist_item_t *it, void *user)
{
    cJSON **out = user;
    cJSON *o = wlview_item_json(it);
    cJSON *m = wlview_meta(it);
    const cJSON *fs = cJSON_GetObjectItemCaseSensitive(m, "findings");
    cJSON_AddItemToObject(o, "findings", fs ? cJSON_Duplicate(fs, true) : cJSON_CreateArray());
    cJSON_AddStringToObject(o, "content_type", it->content_type ? it->content_type : "");
    char *text = xmalloc(it->payload_len + 1);
    memcpy(text, it->payload, it->payload_len);
    text[it->payload_len] = '\0';
    cJSON_AddStringToObject(o, "message", text);
    xfree(text);
    cJSON_Delete(m);
    *out = o;
    return 0;
}

static void fail(http_req_t *req, const err_detail_t *d);

static void item_run(read_job_t *j)
{
    j->rc = worklist_get(j->w->wl, j->id, item_cb, &j->out, &j->d);
}

static void item_done(read_job_t *j)
{
    if (j->rc != ERR_OK || !j->out) {
        fail(j->req, &j->d);
        return;
    }
    audit(j->w, j->user, "view", j->id, NULL, j->req);
    respond_json(j->req, 200, j->out);
    j->out = NULL;
}

static void fail(http_req_t *req, const err_detail_t *d)
{
    respond_error(req,
                  d->code == ERR_NOT_FOUND   ? 404
                  : d->code == ERR_BAD_VALUE ? 409
                                             : 500,
                  d->msg);
}

/* Judging for check and resend: the verdict the page shows. */
typedef struct {
    arena_t *ar;
    const char *verdict_json;
    const char *error;
} seen_t;

static void seen_cb(const gate_result_t *r, void *user)
{
    seen_t *s = user;
    s->verdict_json = wlmeta_json(s->ar, "web", NULL, r);
    if (r->status != GATE_JUDGED)
        s->error = arena_strdup(s->ar, r->detail.msg);
}

/* A change to the worklist (resolve, requeue, resend) takes SQLite's write
 * lock, which the queue's own commits hold now and then: it runs on the
 * thread pool, on a connection of its own, one at a time, so the loop that
 * carries the claims never waits for it. */
typedef enum { CHANGE_RESOLVE, CHANGE_REQUEUE, CHANGE_RESEND } change_kind_t;

typedef struct {
    uv_work_t work;
    web_t *w;
    http_req_t *req;
    change_kind_t kind;
    int64_t id;
    char user[WEBAUTH_NAME_MAX + 1];
    char *note;
    arena_t ar;       /* the judged message (resend) */
    worklist_msg_t m; /* resend: what goes to the inbox */
    cJSON *verdict;   /* resend: the answer, "resent" added once done */
    err_t rc;
    err_detail_t d;
    cJSON *item;         /* resolve, requeue: the item as it is now */
    err_detail_t item_d; /* why item is NULL */
} change_t;

static const char *const change_names[] = {"resolve", "requeue", "resend"};

static void change_work(uv_work_t *wk)
{
    change_t *c = wk->data;
    worklist_t *wl = c->w->wl_write;
    err_clear(&c->d);
    if (c->kind == CHANGE_RESOLVE)
        c->rc = worklist_resolve(wl, c->id, c->user, c->note, &c->d);
    else if (c->kind == CHANGE_REQUEUE)
        c->rc = worklist_requeue(wl, c->id, c->user, &c->d);
    else
        c->rc = worklist_resend(wl, c->id, &c->m, c->user, c->note, &c->d);
    /* The answer shows the item as changed, read here, off the loop. */
    err_clear(&c->item_d);
    if (c->rc == ERR_OK && c->kind != CHANGE_RESEND)
        worklist_get(wl, c->id, item_cb, &c->item, &c->item_d);
}

static void change_done(uv_work_t *wk, int status)
{
    change_t *c = wk->data;
    web_t *w = c->w;
    w->change_running = false;
    if (status != 0) {
        respond_error(c->req, 500, "the change was not made");
    } else if (c->rc != ERR_OK) {
        fail(c->req, &c->d);
    } else {
        audit(w, c->user, change_names[c->kind], c->id, c->kind == CHANGE_RESEND ? c->m.dest : NULL,
              c->req);
        /* A requeued or resent message is in the inbox: to its deliverer now. */
        if (c->kind != CHANGE_RESOLVE && w->d->queue && !w->d->stopping)
            queue_inbox_poke(w->d->queue);
        if (c->kind == CHANGE_RESEND) {
            cJSON_AddBoolToObject(c->verdict, "resent", true);
            respond_json(c->req, 200, c->verdict);
            c->verdict = NULL;
        } else if (c->item) {
            respond_json(c->req, 200, c->item);
            c->item = NULL;
        } else {
            fail(c->req, &c->item_d);
        }
    }
    cJSON_Delete(c->item);
    cJSON_Delete(c->verdict);
    arena_free(&c->ar);
    xfree(c->note);
    xfree(c);
}

static change_t *change_new(web_t *w, const web_session_t *s, http_req_t *req, change_kind_t kind,
                            int64_t id, const char *note)
{
    change_t *c = xcalloc(1, sizeof *c);
    c->w = w;
    c->req = req;
    c->kind = kind;
    c->id = id;
    snprintf(c->user, sizeof c->user, "%s", s->user);
    c->note = note ? xstrdup(note) : NULL;
    arena_init(&c->ar, 16384);
    c->work.data = c;
    return c;
}

/* Starts c, or answers 503 while another change is being saved. */
static void change_submit(change_t *c)
{
    web_t *w = c->w;
    if (w->change_running || uv_queue_work(w->d->loop, &c->work, change_work, change_done) != 0) {
        respond_error(c->req, 503, "another change is being saved: try again");
        cJSON_Delete(c->verdict);
        arena_free(&c->ar);
        xfree(c->note);
        xfree(c);
        return;
    }
    w->change_running = true;
}

/* check: the verdict on the edited message, nothing sent; resend: the same,
 * then, when it passes, the change. Judging stays on the loop, as the
 * daemon judges a message of this size inline. */
static void api_judge(web_t *w, web_session_t *s, http_req_t *req, int64_t id, bool resend)
{
    buf_t *b = http_req_body(req);
    cJSON *in = cJSON_ParseWithLength((const char *)b->data, b->len);
    const char *msg = wlview_jstr(in, "message"), *note = wlview_jstr(in, "note");
    if (!msg) {
        cJSON_Delete(in);
        respond_error(req, 400, "expected {\"message\": ...}");
        return;
    }
    change_t *c = change_new(w, s, req, CHANGE_RESEND, id, note);
    daemon_pack_t *p = daemon_pack_ref(w->d);
    seen_t seen = {.ar = &c->ar};
    int st = wlview_judge(&w->d->cfg, p->pack, msg, strlen(msg), &c->ar, &c->m, seen_cb, &seen);
    daemon_pack_unref(p);
    cJSON_Delete(in);
    cJSON *o = c->verdict = cJSON_CreateObject();
    cJSON *v = seen.verdict_json ? cJSON_Parse(seen.verdict_json) : NULL;
    if (v)
        cJSON_AddItemToObject(o, "judged", v);
    if (seen.error)
        cJSON_AddStringToObject(o, "error", seen.error);
    cJSON_AddBoolToObject(o, "passes", st == 0);
    if (resend && st == 0) {
        change_submit(c);
        return;
    }
    if (resend)
        audit(w, s->user, "resend-refused", id, NULL, req);
    c->verdict = NULL;
    respond_json(req, resend ? 422 : 200, o);
    arena_free(&c->ar);
    xfree(c->note);
    xfree(c);
}

static void api_item_post(web_t *w, web_session_t *s, http_req_t *req, int64_t id,
                          const char *action)
{
    if (!strcmp(action, "check") || !strcmp(action, "resend")) {
        api_judge(w, s, req, id, action[0] == 'r');
    } else if (!strcmp(action, "resolve")) {
        buf_t *b = http_req_body(req);
        cJSON *in = cJSON_ParseWithLength((const char *)b->data, b->len);
        const char *note = wlview_jstr(in, "note");
        if (note && note[0])
            change_submit(change_new(w, s, req, CHANGE_RESOLVE, id, note));
        else
            respond_error(req, 400, "a note is needed to resolve an item");
        cJSON_Delete(in);
    } else if (!strcmp(action, "requeue")) {
        change_submit(change_new(w, s, req, CHANGE_REQUEUE, id, NULL));
    } else {
        respond_error(req, 404, "no such action");
    }
}

/* ---------------------------------------------------------------- trends */

typedef struct {
    cJSON *rules, *sources;
    cJSON *days;
} trend_t;

static void bump(cJSON *o, const char *k)
{
    cJSON *c = cJSON_GetObjectItemCaseSensitive(o, k);
    if (c)
        cJSON_SetNumberValue(c, c->valuedouble + 1);
    else
        cJSON_AddNumberToObject(o, k, 1);
}

static int trend_cb(const worklist_item_t *it, void *user)
{
    trend_t *t = user;
    char day[40];
    wlview_rfc3339(it->received_ms, day, sizeof day);
    day[10] = '\0';
    cJSON *m = wlview_meta(it);
    if (it->kind && !strcmp(it->kind, "reject"))
        bump(t->sources, wlview_source(it, m));
    cJSON *rules = wlview_rules(it, m), *r;
    cJSON_ArrayForEach(r, rules)
    {
        cJSON *per = cJSON_GetObjectItemCaseSensitive(t->rules, r->valuestring);
        if (!per)
            per = cJSON_AddObjectToObject(t->rules, r->valuestring);
        bump(per, day);
    }
    cJSON_Delete(rules);
    cJSON_Delete(m);
    return 0;
}

static void trends_run(read_job_t *j)
{
    trend_t t = {.rules = cJSON_GetObjectItemCaseSensitive(j->out, "findings_per_rule_day"),
                 .sources = cJSON_GetObjectItemCaseSensitive(j->out, "rejects_per_source"),
                 .days = cJSON_GetObjectItemCaseSensitive(j->out, "days")};
    j->rc = worklist_list(j->w->wl, &j->f, trend_cb, &t, &j->d);
}

static void trends_done(read_job_t *j)
{
    if (j->rc != ERR_OK) {
        log_error("admin page: worklist: %s", j->d.msg);
        respond_error(j->req, 500, "the worklist cannot be read");
        return;
    }
    respond_json(j->req, 200, j->out);
    j->out = NULL;
}

static void api_trends(web_t *w, http_req_t *req)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t today = (int64_t)ts.tv_sec / 86400 * 86400 * 1000;
    worklist_filter_t f = {.since_ms = today - (WEB_TREND_DAYS - 1) * 86400000LL};
    cJSON *o = cJSON_CreateObject();
    trend_t t = {.rules = cJSON_AddObjectToObject(o, "findings_per_rule_day"),
                 .sources = cJSON_AddObjectToObject(o, "rejects_per_source"),
                 .days = cJSON_AddArrayToObject(o, "days")};
    for (int i = 0; i < WEB_TREND_DAYS; i++) {
        char day[40];
        wlview_rfc3339(f.since_ms + (int64_t)i * 86400000LL, day, sizeof day);
        day[10] = '\0';
        cJSON_AddItemToArray(t.days, cJSON_CreateString(day));
    }
    read_job_t *j = read_new(w, req, trends_run, trends_done);
    j->f = f;
    j->out = o;
    read_submit(j);
}

static void api_destinations(web_t *w, http_req_t *req)
{
    cJSON *o = cJSON_CreateObject();
    daemon_destinations_json(w->d, cJSON_AddObjectToObject(o, "destinations"));
    respond_json(req, 200, o);
}

/* ---------------------------------------------------------------- routing */

/* "/api/items/ID[/ACTION]": the id and the action ("" for none). */
static bool item_path(const http_req_t *req, int64_t *id, char *action, size_t cap)
{
    slice_t p = http_req_path(req);
    static const char pre[] = "/api/items/";
    char buf[128];
    if (p.len <= sizeof pre - 1 || p.len >= sizeof buf || memcmp(p.ptr, pre, sizeof pre - 1))
        return false;
    memcpy(buf, p.ptr + sizeof pre - 1, p.len - (sizeof pre - 1));
    buf[p.len - (sizeof pre - 1)] = '\0';
    char *end;
    long long v = strtoll(buf, &end, 10);
    if (end == buf || v <= 0 || (*end && *end != '/'))
        return false;
    *id = v;
    snprintf(action, cap, "%s", *end ? end + 1 : "");
    return true;
}

static void web_request(http_req_t *req, void *user)
{
    web_t *w = user;
    const char *method = http_req_method(req);
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    /* Files that hold no patient data are served without a session. */
    if (get &&
        (path_is(req, "/app.js") || path_is(req, "/style.css") || path_is(req, "/login.js"))) {
        slice_t p = http_req_path(req);
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)p.len - 1, p.ptr + 1);
        serve_file(req, name, 200);
        return;
    }
    if (path_is(req, "/login")) {
        if (post && !same_origin(req))
            respond(req, 403, "text/plain", "cross-site login refused\n", 25, NULL);
        else if (post)
            post_login(w, req);
        else if (get)
            serve_file(req, "login.html", 200);
        else
            respond(req, 405, "text/plain", "method not allowed\n", 19, "Allow: GET, POST\r\n");
        return;
    }
    web_session_t *s = session_of(w, req);
    bool api = http_req_path(req).len >= 5 && !memcmp(http_req_path(req).ptr, "/api/", 5);
    if (!s) {
        if (api || post)
            respond_error(req, 401, "log in first");
        else
            redirect(req, "/login", NULL);
        return;
    }
    if (post && !csrf_ok(s, req)) {
        audit(w, s->user, "csrf-refused", 0, NULL, req);
        respond_error(req, 403, "missing or wrong CSRF token");
        return;
    }
    int64_t id;
    char action[32];
    if (get && (path_is(req, "/") || path_is(req, "/index.html"))) {
        serve_file(req, "index.html", 200);
    } else if (post && path_is(req, "/logout")) {
        audit(w, s->user, "logout", 0, NULL, req);
        memset(s, 0, sizeof *s);
        redirect(req, "/login",
                 "Set-Cookie: " COOKIE "=; Path=/; Max-Age=0; HttpOnly; "
                 "SameSite=Strict\r\n");
    } else if (get && path_is(req, "/api/session")) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "user", s->user);
        cJSON_AddStringToObject(o, "csrf", s->csrf);
        respond_json(req, 200, o);
    } else if (get && path_is(req, "/api/items")) {
        audit(w, s->user, "list", 0, NULL, req);
        api_items(w, req);
    } else if (get && path_is(req, "/api/trends")) {
        api_trends(w, req);
    } else if (get && path_is(req, "/api/destinations")) {
        api_destinations(w, req);
    } else if (item_path(req, &id, action, sizeof action)) {
        if (get && !action[0]) {
            read_job_t *j = read_new(w, req, item_run, item_done);
            j->id = id;
            snprintf(j->user, sizeof j->user, "%s", s->user);
            read_submit(j);
        } else if (post && action[0]) {
            api_item_post(w, s, req, id, action);
        } else {
            respond_error(req, 405, "method not allowed");
        }
    } else {
        respond_error(req, 404, "not found");
    }
}

/* ---------------------------------------------------------------- lifetime */

err_t web_listen(daemon_t *d)
{
    const config_t *c = &d->cfg;
    err_detail_t e;
    err_clear(&e);
    if (!webauth_init()) {
        log_error("listen-admin: libsodium cannot start");
        return ERR_IO;
    }
    web_t *w = xcalloc(1, sizeof *w);
    w->d = d;
    w->audit_fd = -1;
    w->reads_tail = &w->reads;
    w->lock = weblock_new((unsigned)c->admin_lockout_attempts,
                          (uint64_t)c->admin_lockout_minutes * 60000);
    d->web = w;
    if (c->admin_users)
        snprintf(w->users_path, sizeof w->users_path, "%s", c->admin_users);
    else
        snprintf(w->users_path, sizeof w->users_path, "%s/admin-users", c->data_dir);
    if (access(w->users_path, R_OK) != 0)
        log_warn("listen-admin: no accounts in %s yet (spinegate-admin user add NAME)",
                 w->users_path);
    char audit_path[4200];
    snprintf(audit_path, sizeof audit_path, "%s/admin-audit.log", c->data_dir);
    w->audit_fd = open(audit_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (w->audit_fd < 0) {
        log_error("listen-admin: audit log %s: %s", audit_path, strerror(errno));
        return ERR_IO;
    }
    if (!webauth_hash("spinegate: no such account", w->dummy_hash)) {
        log_error("listen-admin: cannot hash (out of memory)");
        return ERR_IO;
    }
    if (daemon_worklist_open(d, &w->wl, &e) != ERR_OK ||
        daemon_worklist_open(d, &w->wl_write, &e) != ERR_OK) {
        log_error("listen-admin: worklist: %s", e.msg);
        return ERR_IO;
    }
    http_opts_t o;
    http_opts_default(&o);
    o.max_body = (size_t)c->max_message_size * 2 + 65536; /* an edited message, JSON-escaped */
    o.max_connections = 64;
    o.budget = d->budget;
    o.tls = d->tls[DAEMON_TLS_ADMIN];
    o.tls_handshake_timeout_ms = (unsigned)c->tls_handshake_timeout_ms;
    http_callbacks_t cb = {.request = web_request};
    if (http_server_listen(d->loop, c->listen_admin.host, c->listen_admin.port, &o, &cb, w,
                           &d->admin, &e) != ERR_OK) {
        log_error("admin listener %s:%d: %s", c->listen_admin.host, c->listen_admin.port, e.msg);
        return ERR_IO;
    }
    log_info("worklist web page on %s://%s:%d (accounts: %s)", o.tls ? "https" : "http",
             c->listen_admin.host, http_server_port(d->admin), w->users_path);
    return ERR_OK;
}

void web_close(daemon_t *d, http_server_close_cb done)
{
    http_server_close(d->admin, done, d);
}

void web_free(daemon_t *d)
{
    web_t *w = d->web;
    if (!w)
        return;
    worklist_close(w->wl);
    worklist_close(w->wl_write);
    weblock_free(w->lock);
    if (w->audit_fd >= 0)
        close(w->audit_fd);
    memset(w->sessions, 0, sizeof w->sessions);
    xfree(w);
    d->web = NULL;
}

int web_unlock(daemon_t *d, const char *name, const char *who)
{
    web_t *w = d->web;
    if (!w)
        return -1;
    bool was = weblock_unlock(w->lock, name, uv_now(d->loop));
    char detail[WEBAUTH_NAME_MAX + 16];
    snprintf(detail, sizeof detail, "account=%s", name);
    audit(w, who, was ? "unlock" : "unlock-not-locked", 0, detail, NULL);
    return was;
}
