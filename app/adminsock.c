/* adminsock.c - the daemon's end of spinegate-admin: a Unix socket,
 * DATA-DIR/admin.sock (0600), on the daemon's loop. A connection carries one
 * request (admin.c describes the framing): the command, parsed by the
 * program, as JSON, and the corrected message of a resend beside it. The
 * daemon runs it with admincmd.c, the code the program runs when no daemon
 * answers, but
 *   - on the thread pool, one command at a time, on a worklist connection
 *     of its own, so that the loop carrying the claims never waits on SQLite;
 *   - judging a resent message with the rule pack it has loaded;
 *   - taking requeued and resent messages from the inbox at once
 *     (queue_inbox_poke) rather than at the next inbox-poll;
 *   - adding each destination's live state to stats;
 *   - ending account lockouts of the web page (user unlock), which live in
 *     its memory only.
 * The output comes back framed, standard output and error apart, with the
 * exit status last.
 *
 * The socket is input like any other: a peer that is not the daemon's user
 * or root (SO_PEERCRED) is refused, and a request that is not framed as the
 * program frames it, too large, or not sent within ADMIN_READ_MS gets an
 * error and a log line. Logs name the command and who asked, never an
 * item's content.
 */
#include "daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "admincmd.h"
#include "log.h"
#include "webauth.h"
#include "worklist.h"
#include "xmalloc.h"

#define ADMIN_CONNS 16                  /* connections at once; more are closed at once */
#define ADMIN_READ_MS 10000             /* a whole request within this */
#define ADMIN_WRITE_MS 60000            /* the answer taken by the program within this */
#define ADMIN_OUT_MAX ((size_t)1 << 30) /* an answer larger is cut, with an error */

typedef enum { CONN_READING, CONN_WAITING, CONN_RUNNING, CONN_WRITING, CONN_CLOSING } conn_state_t;

typedef struct conn conn_t;
struct conn {
    adminsock_t *s;
    conn_t *prev, *next; /* all connections */
    conn_t *wait_next;   /* requests waiting for the pool */
    conn_state_t state;
    uv_pipe_t pipe;
    uv_timer_t timer;
    uv_work_t work;
    uv_write_t wr;
    unsigned open_handles;
    unsigned uid;
    int pid;
    char *in;
    size_t in_len, in_cap;
    admin_req_t req;
    int status;
    char *out; /* the answer's frames */
    size_t out_len, out_cap, last_frame;
    char last_type;
    bool cut; /* the answer outgrew ADMIN_OUT_MAX */
    /* Refused while the request still arrives: the rest is read and
     * dropped until its end, for closing on unread bytes would reset the
     * connection and lose the answer. */
    bool drain, drained, written;
    daemon_pack_t *pack;
    cJSON *live;
};

struct adminsock {
    daemon_t *d;
    uv_pipe_t server;
    bool server_open, bound;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    worklist_t *wl; /* the commands' connection, on the pool one command at a time */
    conn_t *conns;
    unsigned nconns;
    conn_t *wait_head, *wait_tail;
    bool running;
    bool closing;
};

/* ---------------------------------------------------------------- the answer */

static void out_reserve(conn_t *c, size_t more)
{
    if (c->out_len + more <= c->out_cap)
        return;
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + more)
        cap *= 2;
    c->out = xrealloc(c->out, cap);
    c->out_cap = cap;
}

static void put_u32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24), p[1] = (char)(v >> 16), p[2] = (char)(v >> 8), p[3] = (char)v;
}

/* Appends n bytes to a frame of type t, extending the last frame when it
 * is of the same type. */
static void frame_add(conn_t *c, char t, const void *data, size_t n)
{
    if (c->out_len && c->last_type == t && t != 'x') {
        char *h = c->out + c->last_frame;
        uint32_t len = (uint32_t)(unsigned char)h[1] << 24 | (uint32_t)(unsigned char)h[2] << 16 |
                       (uint32_t)(unsigned char)h[3] << 8 | (unsigned char)h[4];
        out_reserve(c, n);
        h = c->out + c->last_frame;
        put_u32(h + 1, len + (uint32_t)n);
    } else {
        out_reserve(c, n + 5);
        c->last_frame = c->out_len;
        c->out[c->out_len] = t;
        put_u32(c->out + c->out_len + 1, (uint32_t)n);
        c->out_len += 5;
        c->last_type = t;
    }
    memcpy(c->out + c->out_len, data, n);
    c->out_len += n;
}

typedef struct {
    conn_t *c;
    char type;
} sink_t;

static ssize_t sink_write(void *cookie, const char *buf, size_t n)
{
    sink_t *k = cookie;
    if (k->c->cut || k->c->out_len + n + 5 > ADMIN_OUT_MAX)
        k->c->cut = true; /* what came before stays whole */
    else
        frame_add(k->c, k->type, buf, n);
    return (ssize_t)n;
}

/* A FILE whose lines become frames of type t. */
static FILE *sink_open(sink_t *k)
{
    cookie_io_functions_t io = {.write = sink_write};
    FILE *f = fopencookie(k, "w", io);
    if (f)
        setvbuf(f, NULL, _IOLBF, 0);
    return f;
}

/* ---------------------------------------------------------------- connections */

static void conn_handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->open_handles)
        return;
    adminsock_t *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    admin_req_free(&c->req);
    xfree(c->in);
    xfree(c->out);
    xfree(c);
}

static void conn_close(conn_t *c)
{
    if (c->state == CONN_CLOSING)
        return;
    /* A command on the pool still writes into c, or waits for it: closed
     * once it has answered (run_done), or by pump. */
    if (c->state == CONN_RUNNING || c->state == CONN_WAITING)
        return;
    c->state = CONN_CLOSING;
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    uv_close((uv_handle_t *)&c->pipe, conn_handle_closed);
}

static void on_written(uv_write_t *wr, int status)
{
    conn_t *c = wr->data;
    if (status)
        log_warn("admin socket: the answer to %s (uid %u) was not taken: %s",
                 admin_op_name(c->req.op), c->uid, uv_strerror(status));
    c->written = true;
    if (!c->drain || c->drained || status)
        conn_close(c);
}

static void on_write_timeout(uv_timer_t *t)
{
    conn_t *c = t->data;
    log_warn("admin socket: a peer (uid %u) did not take its answer, or end a refused request, "
             "within %ds: closed",
             c->uid, (c->drain ? ADMIN_READ_MS : ADMIN_WRITE_MS) / 1000);
    conn_close(c);
}

/* Sends what c->out holds and the exit status, then closes. */
static void answer(conn_t *c, int status)
{
    unsigned char st = (unsigned char)status;
    if (c->cut) {
        static const char msg[] = "spinegate-admin: the answer was too large and is cut short\n";
        c->cut = false;
        frame_add(c, 'e', msg, sizeof msg - 1);
        st = 2;
    }
    frame_add(c, 'x', &st, 1);
    c->state = CONN_WRITING;
    if (!c->drain)
        uv_read_stop((uv_stream_t *)&c->pipe);
    uv_timer_start(&c->timer, on_write_timeout, c->drain ? ADMIN_READ_MS : ADMIN_WRITE_MS, 0);
    uv_buf_t b = uv_buf_init(c->out, (unsigned)c->out_len);
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->pipe, &b, 1, on_written) != 0)
        conn_close(c);
}

/* An error for the program (standard error, exit 2) and a log line. */
static void refuse(conn_t *c, const char *why)
{
    log_warn("admin socket: refused a request from uid %u (pid %d): %s", c->uid, c->pid, why);
    char msg[256];
    int n = snprintf(msg, sizeof msg, "spinegate-admin: the daemon refused the request: %s\n", why);
    frame_add(c, 'e', msg, (size_t)n);
    answer(c, 2);
}

/* ---------------------------------------------------------------- running */

static void pump(adminsock_t *s);

static void run_work(uv_work_t *w)
{
    conn_t *c = w->data;
    adminsock_t *s = c->s;
    sink_t ko = {c, 'o'}, ke = {c, 'e'};
    FILE *out = sink_open(&ko), *err = sink_open(&ke);
    if (!out || !err) {
        if (out)
            fclose(out);
        if (err)
            fclose(err);
        static const char msg[] = "spinegate-admin: the daemon is out of memory\n";
        frame_add(c, 'e', msg, sizeof msg - 1);
        c->status = 2;
        return;
    }
    admin_env_t env = {.cfg = &s->d->cfg,
                       .wl = s->wl,
                       .pack = c->pack ? c->pack->pack : NULL,
                       .live = c->live,
                       .out = out,
                       .err = err};
    c->status = admin_run(&env, &c->req);
    fflush(out);
    fflush(err);
    fclose(out);
    fclose(err);
}

static void run_done(uv_work_t *w, int status)
{
    conn_t *c = w->data;
    adminsock_t *s = c->s;
    daemon_t *d = s->d;
    s->running = false;
    daemon_pack_unref(c->pack);
    c->pack = NULL;
    cJSON_Delete(c->live);
    c->live = NULL;
    if (status != 0) {
        static const char msg[] = "spinegate-admin: the daemon could not run the command\n";
        frame_add(c, 'e', msg, sizeof msg - 1);
        c->status = 2;
    }
    /* A requeue or resend left messages in the inbox: to the deliverers now.
     * (PostgreSQL has no inbox: worklist_pg.c's NOTIFY told the deliverer.) */
    if ((c->req.op == ADMIN_REQUEUE || c->req.op == ADMIN_RESEND) && d->queue && !d->stopping)
        queue_inbox_poke(d->queue);
    log_info("admin socket: %s by %s (uid %u): exit %d", admin_op_name(c->req.op),
             c->req.who ? c->req.who : "?", c->uid, c->status);
    answer(c, c->status);
    pump(s);
}

/* Starts the next waiting command unless one runs. */
static void pump(adminsock_t *s)
{
    while (!s->running && s->wait_head) {
        conn_t *c = s->wait_head;
        s->wait_head = c->wait_next;
        if (!s->wait_head)
            s->wait_tail = NULL;
        c->wait_next = NULL;
        if (s->closing) {
            c->state = CONN_READING;
            conn_close(c);
            continue;
        }
        daemon_t *d = s->d;
        c->state = CONN_RUNNING;
        /* What only the loop may touch is gathered here. */
        if (c->req.op == ADMIN_STATS) {
            c->live = cJSON_CreateObject();
            daemon_destinations_json(d, c->live);
        }
        if (c->req.op == ADMIN_RESEND)
            c->pack = daemon_pack_ref(d);
        c->work.data = c;
        if (uv_queue_work(d->loop, &c->work, run_work, run_done) != 0) {
            daemon_pack_unref(c->pack);
            c->pack = NULL;
            cJSON_Delete(c->live);
            c->live = NULL;
            c->state = CONN_READING;
            refuse(c, "the thread pool did not take the command");
            continue;
        }
        s->running = true;
    }
}

/* The request is in: check it, then run it. */
static void dispatch(conn_t *c)
{
    adminsock_t *s = c->s;
    uv_timer_stop(&c->timer);
    if (c->in_len < 4) {
        refuse(c, "not a spinegate-admin request (too short)");
        return;
    }
    const unsigned char *p = (const unsigned char *)c->in;
    size_t hlen = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    if (hlen > c->in_len - 4) {
        refuse(c, "not a spinegate-admin request (cut short)");
        return;
    }
    cJSON *o = cJSON_ParseWithLength(c->in + 4, hlen);
    char why[160];
    if (!o) {
        refuse(c, "not a spinegate-admin request (not JSON)");
        return;
    }
    bool ok = admin_req_from_json(o, &c->req, why, sizeof why);
    cJSON_Delete(o);
    if (!ok) {
        char msg[200];
        snprintf(msg, sizeof msg, "not a spinegate-admin request (%s)", why);
        refuse(c, msg);
        return;
    }
    size_t rest = c->in_len - 4 - hlen;
    if (!c->req.has_input && rest) {
        refuse(c, "not a spinegate-admin request (bytes after the command)");
        return;
    }
    if (c->req.who && !webauth_name_ok(c->req.who)) {
        xfree(c->req.who);
        c->req.who = NULL; /* recorded as the uid's instead */
    }
    if (!c->req.who) {
        char uid[32];
        snprintf(uid, sizeof uid, "uid%u", c->uid);
        c->req.who = xstrdup(uid);
    }
    if (c->req.has_input) {
        c->req.input = xmalloc(rest + 1);
        memcpy(c->req.input, c->in + 4 + hlen, rest);
        c->req.input[rest] = '\0';
        c->req.input_len = rest;
    }
    xfree(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
    if (c->req.op == ADMIN_UNLOCK) {
        char msg[200];
        int n;
        if (!webauth_name_ok(c->req.name)) {
            refuse(c, "unlock: not an account name");
            return;
        }
        int r = web_unlock(s->d, c->req.name, c->req.who);
        if (r < 0)
            n = snprintf(msg, sizeof msg,
                         "the web page is off (listen-admin): no account is locked\n");
        else
            n = snprintf(msg, sizeof msg,
                         r ? "account %s unlocked\n" : "account %s was not locked\n", c->req.name);
        frame_add(c, 'o', msg, (size_t)n);
        log_info("admin socket: unlock by %s (uid %u): %s", c->req.who, c->uid,
                 r > 0 ? "unlocked" : "was not locked");
        answer(c, 0);
        return;
    }
    c->state = CONN_WAITING;
    if (s->wait_tail)
        s->wait_tail->wait_next = c;
    else
        s->wait_head = c;
    s->wait_tail = c;
    pump(s);
}

static size_t max_request(const adminsock_t *s)
{
    const config_t *cfg = &s->d->cfg;
    long m =
        cfg->max_message_size > cfg->max_body_size ? cfg->max_message_size : cfg->max_body_size;
    return 4 + ADMIN_REQ_MAX + (size_t)m;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    conn_t *c = h->data;
    if (c->in_cap - c->in_len < 16384) {
        size_t cap = c->in_cap ? c->in_cap * 2 : 65536;
        c->in = xrealloc(c->in, cap);
        c->in_cap = cap;
    }
    *b = uv_buf_init(c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    conn_t *c = st->data;
    if (c->state != CONN_READING) {
        c->in_len = 0; /* draining a refused request: dropped */
        if (n < 0 && c->drain && !c->drained) {
            c->drained = true;
            uv_read_stop(st);
            if (c->written)
                conn_close(c);
        }
        return;
    }
    if (n == UV_EOF) {
        uv_read_stop(st);
        dispatch(c);
        return;
    }
    if (n < 0) {
        log_warn("admin socket: reading a request from uid %u: %s", c->uid, uv_strerror((int)n));
        conn_close(c);
        return;
    }
    c->in_len += (size_t)n;
    if (c->in_len >= 4) {
        const unsigned char *p = (const unsigned char *)c->in;
        size_t hlen = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        if (hlen > ADMIN_REQ_MAX) {
            c->drain = true;
            refuse(c, "not a spinegate-admin request (bad length)");
            return;
        }
    }
    if (c->in_len > max_request(c->s)) {
        c->drain = true;
        refuse(c, "request too large (max-message-size, max-body-size)");
    }
}

static void on_read_timeout(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->state != CONN_READING)
        return;
    uv_read_stop((uv_stream_t *)&c->pipe);
    refuse(c, "the request was not sent within 10s");
}

static void on_connection(uv_stream_t *server, int status)
{
    adminsock_t *s = server->data;
    if (status < 0) {
        log_warn("admin socket: accept: %s", uv_strerror(status));
        return;
    }
    conn_t *c = xcalloc(1, sizeof *c);
    c->s = s;
    c->state = CONN_READING;
    uv_pipe_init(s->d->loop, &c->pipe, 0);
    uv_timer_init(s->d->loop, &c->timer);
    c->pipe.data = c->timer.data = c;
    c->open_handles = 2;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
        conn_close(c);
        return;
    }
    if (s->nconns > ADMIN_CONNS) {
        log_warn("admin socket: more than %d connections at once: one closed", ADMIN_CONNS);
        conn_close(c);
        return;
    }
    uv_os_fd_t fd;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        log_warn("admin socket: cannot tell who connected: closed");
        conn_close(c);
        return;
    }
    c->uid = cred.uid;
    c->pid = cred.pid;
    if (cred.uid != 0 && cred.uid != geteuid()) {
        c->drain = true;
        refuse(c, "not the daemon's user or root");
        uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
        return;
    }
    uv_timer_start(&c->timer, on_read_timeout, ADMIN_READ_MS, 0);
    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

/* ---------------------------------------------------------------- lifetime */

/* The socket at path: 1 when a daemon answers on it, 0 when it is absent or
 * left by one that died (then removed), -1 on another error (errno). */
static int probe(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int en = errno;
    close(fd);
    if (rc == 0)
        return 1;
    if (en == ENOENT)
        return 0;
    struct stat st;
    if (en == ECONNREFUSED && lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
        errno = EEXIST; /* something else by that name: not ours to remove */
        return -1;
    }
    if (en == ECONNREFUSED) {
        log_info("admin socket %s was left by a daemon that stopped uncleanly: replaced", path);
        return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
    }
    errno = en;
    return -1;
}

err_t adminsock_listen(daemon_t *d)
{
    adminsock_t *s = xcalloc(1, sizeof *s);
    s->d = d;
    int n = snprintf(s->path, sizeof s->path, "%s/admin.sock", d->cfg.data_dir);
    if (n < 0 || (size_t)n >= sizeof s->path) {
        log_warn("admin socket: %s/admin.sock is longer than a socket path may be: "
                 "spinegate-admin will work on the data folder directly",
                 d->cfg.data_dir);
        xfree(s);
        return ERR_OK;
    }
    int p = probe(s->path);
    if (p != 0) {
        if (p > 0)
            log_error("admin socket %s answers: another spinegate runs on this data folder",
                      s->path);
        else
            log_error("admin socket %s: %s", s->path,
                      errno == EEXIST ? "there is a file by that name that is not a socket"
                                      : strerror(errno));
        xfree(s);
        return ERR_IO;
    }
    err_detail_t e;
    err_clear(&e);
    if (daemon_worklist_open(d, &s->wl, &e) != ERR_OK) {
        log_error("admin socket: worklist: %s", e.msg);
        xfree(s);
        return ERR_IO;
    }
    d->adminsock = s;
    uv_pipe_init(d->loop, &s->server, 0);
    s->server.data = s;
    s->server_open = true;
    int rc = uv_pipe_bind(&s->server, s->path);
    s->bound = rc == 0;
    /* umask 077 made it the owner's already; 0600 says so outright. */
    if (rc == 0 && chmod(s->path, 0600) != 0)
        rc = uv_translate_sys_error(errno);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->server, 8, on_connection);
    if (rc != 0) {
        log_error("admin socket %s: %s", s->path, uv_strerror(rc));
        return ERR_IO;
    }
    log_info("admin socket %s: spinegate-admin's commands run here", s->path);
    return ERR_OK;
}

void adminsock_close(daemon_t *d)
{
    adminsock_t *s = d->adminsock;
    if (!s || s->closing)
        return;
    s->closing = true;
    if (s->server_open) {
        uv_close((uv_handle_t *)&s->server, NULL);
        s->server_open = false;
        if (s->bound)
            unlink(s->path);
    }
    for (conn_t *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == CONN_READING)
            conn_close(c);
    }
    pump(s); /* closes the requests still waiting */
}

void adminsock_free(daemon_t *d)
{
    adminsock_t *s = d->adminsock;
    if (!s)
        return;
    worklist_close(s->wl);
    xfree(s);
    d->adminsock = NULL;
}
