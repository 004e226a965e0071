/* admin.c - spinegate-admin: the coders' worklist from the shell. While the
 * daemon runs, each command goes to it over the Unix socket DATA-DIR/
 * admin.sock (app/adminsock.c): the daemon runs it on its thread pool,
 * judges a resent message with the rule pack it has loaded, hands requeued
 * and resent messages to its deliverers at once, and adds what only it
 * knows (each destination's state) to stats; what it prints comes back here.
 * When no daemon answers, the command runs here on the queue database of
 * the data folder (admincmd.c, the same code), and messages handed back for
 * delivery wait in the inbox for the daemon's next start.
 *
 * What it prints is for the coder at the terminal and holds patient data
 * (the message, its lookup references); it never writes to the daemon's
 * log. Exit status as spinegate-check: 0 done, 1 refused (the rules
 * rejected a resent message, or an item is not in a state that allows the
 * action), 2 usage error, unknown item, or a data folder that cannot be read.
 */
#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "config.h"

#include "admincmd.h"
#include "gate.h"
#include "webauth.h"
#include "worklist.h"
#include "xmalloc.h"

typedef struct {
    config_t cfg;
    char users_path[4096]; /* admin-users, else DATA-DIR/admin-users */
} admin_t;

/* How long to wait for the daemon's answer: a requeue --all of a long
 * backlog takes a while, a daemon that never answers is a fault. */
#define ANSWER_TIMEOUT_S 600

static void usage(FILE *f)
{
    fputs("usage: spinegate-admin [--data-dir DIR] [--config FILE] COMMAND [ARGS]\n"
          "The coders' worklist of a spinegate data folder: rejected messages and dead\n"
          "letters (and annotated messages with worklist-annotated). While the daemon runs,\n"
          "commands go to it over DIR/admin.sock; otherwise they work on DIR directly.\n\n"
          "  list [--state S] [--kind K] [--rule RULE] [--source mllp|http] [--ref REF]\n"
          "       [--since TIME] [--until TIME] [--json]\n"
          "                       items, oldest first (--json: JSON Lines)\n"
          "  show ID [--json]     one item: the message with its findings marked\n"
          "  resolve ID --note TEXT\n"
          "                       mark an open item resolved\n"
          "  resend ID [FILE|-]   judge the corrected message (FILE, else the stored one)\n"
          "                       and, unless rejected, queue it; the item becomes resent\n"
          "  requeue ID... | requeue --all | requeue [FILTERS as for list]\n"
          "                       queue open dead letters again, in their order\n"
          "  stats [--json]       items per state, kind and rule; queue figures; with the\n"
          "                       daemon running, each destination's state\n"
          "  prune                delete items past worklist-retention (never open ones)\n"
          "  user add|passwd|remove NAME\n"
          "                       accounts of the web page (admin-users); the password is\n"
          "                       read from standard input\n"
          "  user unlock NAME     end the lockout of an account after failed logins (the\n"
          "                       running daemon holds the locks)\n\n"
          "  --data-dir DIR       the daemon's data folder (default: its data-dir setting)\n"
          "  --config FILE        the daemon's config file: data-dir and the rule settings\n"
          "                       a resent message is judged with when the daemon is stopped\n"
          "  --help, --version\n\n"
          "TIME is RFC 3339 (2026-12-01T08:00:00Z) or a date (2026-12-01), UTC when no\n"
          "offset is given. S is open, resolved, resent or requeued; K is reject, dead or\n"
          "annotate.\n\n"
          "Exit status: 0 done, 1 refused (resent message rejected, item not open), 2 usage\n"
          "error, unknown item or unreadable data folder.\n",
          f);
}

static int fail(const err_detail_t *d)
{
    fprintf(stderr, "spinegate-admin: %s\n", d->msg);
    return d->code == ERR_BAD_VALUE ? 1 : 2;
}

/* ---------------------------------------------------------------- resend's FILE */

static char *read_input(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "spinegate-admin: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap)
            buf = xrealloc(buf, cap *= 2);
    }
    bool bad = ferror(f);
    if (f != stdin)
        fclose(f);
    if (bad) {
        fprintf(stderr, "spinegate-admin: %s: read error\n", path);
        xfree(buf);
        return NULL;
    }
    /* A file edited by hand ends its segments with newlines: HL7 wants CR. */
    if (gate_detect(buf, n) == GATE_HL7) {
        for (size_t i = 0; i < n; i++)
            if (buf[i] == '\n')
                buf[i] = '\r';
        size_t w = 0;
        for (size_t i = 0; i < n; i++)
            if (!(buf[i] == '\r' && w && buf[w - 1] == '\r'))
                buf[w++] = buf[i];
        n = w;
    }
    *len = n;
    return buf;
}

/* ---------------------------------------------------------------- user */

/* Reads one line from stdin into out (without the newline); on a terminal
 * without echo. False at end of input or when longer than cap - 1. */
static bool read_secret(const char *prompt, char *out, size_t cap)
{
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        fprintf(stderr, "%s", prompt);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    bool ok = fgets(out, (int)cap, stdin) != NULL;
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    size_t n = ok ? strcspn(out, "\r\n") : 0;
    if (ok && out[n] == '\0' && !feof(stdin) && strlen(out) == cap - 1)
        ok = false; /* longer than out: refused, not cut */
    out[n] = '\0';
    return ok;
}

/* user add|passwd NAME (the password on stdin, never in argv, where ps
 * would show it), user remove NAME: the web page's accounts. */
static int cmd_user(admin_t *a, int argc, char **argv)
{
    if (argc != 3 ||
        (strcmp(argv[1], "add") && strcmp(argv[1], "remove") && strcmp(argv[1], "passwd"))) {
        fprintf(stderr, "spinegate-admin: usage: user add|passwd|remove|unlock NAME "
                        "(the password is read from standard input)\n");
        return 2;
    }
    const char *op = argv[1], *name = argv[2];
    if (!webauth_name_ok(name)) {
        fprintf(stderr, "spinegate-admin: %s: a name is 1 to %d letters, digits, . _ - @\n", name,
                WEBAUTH_NAME_MAX);
        return 2;
    }
    if (!webauth_init()) {
        fprintf(stderr, "spinegate-admin: libsodium cannot start\n");
        return 2;
    }
    err_detail_t d;
    err_clear(&d);
    char hash[WEBAUTH_HASH_MAX];
    bool exists = webauth_users_find(a->users_path, name, hash, &d) == ERR_OK;
    if (!exists && d.code == ERR_IO) {
        fprintf(stderr, "spinegate-admin: %s\n", d.msg);
        return 2;
    }
    if (!strcmp(op, "add") && exists) {
        fprintf(stderr, "spinegate-admin: %s already has an account (user passwd)\n", name);
        return 1;
    }
    if (strcmp(op, "add") && !exists) {
        fprintf(stderr, "spinegate-admin: no account %s in %s\n", name, a->users_path);
        return 1;
    }
    if (!strcmp(op, "remove")) {
        if (webauth_users_set(a->users_path, name, NULL, &d) != ERR_OK)
            return fail(&d);
        printf("account %s removed (its open sessions end at their timeout)\n", name);
        return 0;
    }
    char pw[256], again[256];
    if (!read_secret("password: ", pw, sizeof pw) || strlen(pw) < 8) {
        fprintf(stderr, "spinegate-admin: a password of 8 to 255 characters on standard input\n");
        return 2;
    }
    if (isatty(STDIN_FILENO) &&
        (!read_secret("again: ", again, sizeof again) || strcmp(pw, again))) {
        fprintf(stderr, "spinegate-admin: the two passwords differ\n");
        return 2;
    }
    bool hashed = webauth_hash(pw, hash);
    memset(pw, 0, sizeof pw);
    memset(again, 0, sizeof again);
    if (!hashed) {
        fprintf(stderr, "spinegate-admin: cannot hash the password (out of memory)\n");
        return 2;
    }
    if (webauth_users_set(a->users_path, name, hash, &d) != ERR_OK)
        return fail(&d);
    printf("account %s %s in %s\n", name, !strcmp(op, "add") ? "added" : "changed", a->users_path);
    return 0;
}

/* ---------------------------------------------------------------- the daemon's socket */

static bool write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

/* Reads exactly n bytes; false at end of stream or on an error. */
static bool read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        c += r;
        n -= (size_t)r;
    }
    return true;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* Connects to the daemon's socket in data_dir: the fd, -1 when no daemon
 * answers there (no socket, or one left by a daemon that died), -2 after
 * saying why when the socket is there but cannot be used. */
static int connect_daemon(const char *data_dir)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(sa.sun_path, sizeof sa.sun_path, "%s/admin.sock", data_dir);
    if (n < 0 || (size_t)n >= sizeof sa.sun_path)
        return -1; /* too long for a socket: the daemon has none either */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int en = errno;
        close(fd);
        if (en == ENOENT || en == ECONNREFUSED)
            return -1;
        fprintf(stderr, "spinegate-admin: %s: %s\n", sa.sun_path, strerror(en));
        return -2;
    }
    struct timeval tv = {.tv_sec = ANSWER_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

/* Sends r to the daemon on fd and copies its answer to stdout and stderr.
 * The request: a 4-byte big-endian length, that much JSON, then the
 * corrected message of a resend up to the end of the stream. The answer:
 * frames of a type byte ('o' standard output, 'e' standard error, 'x' the
 * exit status, last), a 4-byte big-endian length and the bytes. Returns
 * the exit status. */
static int ask_daemon(int fd, const admin_req_t *r)
{
    cJSON *o = admin_req_json(r);
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    size_t jl = strlen(json);
    unsigned char len[4];
    put_u32(len, (uint32_t)jl);
    bool sent = write_all(fd, len, 4) && write_all(fd, json, jl) &&
                (!r->has_input || write_all(fd, r->input, r->input_len));
    cJSON_free(json);
    shutdown(fd, SHUT_WR);
    /* Even when sending failed the daemon may have said why. */
    char *buf = NULL;
    int status = -1;
    for (;;) {
        unsigned char h[5];
        if (!read_all(fd, h, 5))
            break;
        uint32_t n = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];
        if (n > (1u << 30))
            break;
        buf = xrealloc(buf, n ? n : 1);
        if (!read_all(fd, buf, n))
            break;
        if (h[0] == 'x') {
            status = n == 1 ? (unsigned char)buf[0] : 2;
            break;
        }
        FILE *to = h[0] == 'e' ? stderr : stdout;
        fwrite(buf, 1, n, to);
    }
    xfree(buf);
    close(fd);
    fflush(stdout);
    if (status < 0) {
        fprintf(stderr, "spinegate-admin: the daemon did not answer%s\n",
                sent ? "" : " (the request could not be sent)");
        return 2;
    }
    return status;
}

/* ---------------------------------------------------------------- main */

static const char *who_am_i(void)
{
    const char *s = getenv("SUDO_USER");
    if (s && *s)
        return s;
    struct passwd *pw = getpwuid(getuid());
    return pw ? pw->pw_name : "unknown";
}

/* Runs r on the data folder itself: no daemon answers. */
static int run_here(admin_t *a, const char *data_dir, admin_req_t *r)
{
    if (r->op == ADMIN_UNLOCK) {
        /* Locks live in the running daemon's memory: none without one. */
        printf("no daemon answers on %s/admin.sock: no account is locked\n", data_dir);
        return 0;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/queue.db", data_dir);
    worklist_t *wl = NULL;
    err_detail_t d;
    err_clear(&d);
    /* With queue = postgres the worklist is the database's, shared by every
     * instance (docs/queue-schema.md), not a file of this data folder. */
    err_t e = strcmp(a->cfg.queue_backend, "postgres") == 0
                  ? worklist_open_pg(a->cfg.queue_url, &wl, &d)
                  : worklist_open(path, &wl, &d);
    if (e != ERR_OK) {
        fprintf(stderr, "spinegate-admin: %s\n", d.msg);
        return 2;
    }
    admin_env_t env = {.cfg = &a->cfg, .wl = wl, .out = stdout, .err = stderr};
    int status = admin_run(&env, r);
    worklist_close(wl);
    return status;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data-dir", required_argument, NULL, 'd'},
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    admin_t a = {0};
    const char *data_dir = NULL, *config_file = NULL;
    int opt;
    /* "+": options end at the command; the command reads its own. */
    while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (opt) {
        case 'd': data_dir = optarg; break;
        case 'c': config_file = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("spinegate-admin %s\n", PACKAGE_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    xmalloc_hook_libraries();
    err_detail_t d;
    err_clear(&d);
    config_defaults(&a.cfg);
    if ((config_file && config_load_file(&a.cfg, config_file, &d) != ERR_OK) ||
        config_validate(&a.cfg, &d) != ERR_OK) {
        fprintf(stderr, "spinegate-admin: %s: %s\n", config_file ? config_file : "config", d.msg);
        config_free(&a.cfg);
        return 2;
    }
    if (!data_dir)
        data_dir = a.cfg.data_dir;
    const char *cmd = argv[optind];
    if (a.cfg.admin_users)
        snprintf(a.users_path, sizeof a.users_path, "%s", a.cfg.admin_users);
    else
        snprintf(a.users_path, sizeof a.users_path, "%s/admin-users", data_dir);
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    admin_req_t r = {0};
    int status = 0;
    if (strcmp(cmd, "user") == 0 && !(sub_argc == 3 && strcmp(sub_argv[1], "unlock") == 0)) {
        /* Accounts live beside the queue, not in it: no database needed. */
        status = cmd_user(&a, sub_argc, sub_argv);
        config_free(&a.cfg);
        return status;
    }
    if (strcmp(cmd, "user") == 0) {
        r.op = ADMIN_UNLOCK;
        r.name = xstrdup(sub_argv[2]);
        if (!webauth_name_ok(r.name)) {
            fprintf(stderr, "spinegate-admin: %s: a name is 1 to %d letters, digits, . _ - @\n",
                    r.name, WEBAUTH_NAME_MAX);
            status = 2;
        }
    } else {
        status = admin_req_parse(sub_argc, sub_argv, &r, stderr);
        if (status && !strcmp(cmd, "list"))
            usage(stderr);
    }
    if (!status && r.input_path) {
        r.input = read_input(r.input_path, &r.input_len);
        r.has_input = r.input != NULL;
        status = r.input ? 0 : 2;
    }
    if (!status) {
        r.who = xstrdup(who_am_i());
        int fd = connect_daemon(data_dir);
        if (fd >= 0)
            status = ask_daemon(fd, &r);
        else if (fd == -1)
            status = run_here(&a, data_dir, &r);
        else
            status = 2;
    }
    admin_req_free(&r);
    config_free(&a.cfg);
    fflush(stdout);
    return status;
}
