/* out_dir.c - the directory sink, and the atomic file writer it shares with
 * the dead-letter folder. A message becomes <dir>/<seq>-<control id>.<ext>
 * through a hidden temp file that is written, fsynced and renamed, then the
 * folder is fsynced: a reader of the folder sees whole files or nothing, and
 * a file that is there survives a crash. The write runs on the thread pool;
 * the row is borrowed from the deliverer until out__send_done().
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "out_int.h"
#include "xmalloc.h"

const char *out__ext_for(const char *ct)
{
    if (!ct)
        return "bin";
    if (strncasecmp(ct, "application/hl7", 15) == 0 ||
        strncasecmp(ct, "x-application/hl7", 17) == 0)
        return "hl7";
    if (strstr(ct, "json"))
        return "json";
    if (strstr(ct, "xml"))
        return "xml";
    return "bin";
}

void out__file_name(char *buf, size_t n, int64_t seq, const char *ctrl, const char *ext)
{
    char clean[65];
    size_t k = 0;
    for (const char *p = ctrl ? ctrl : ""; *p && k < sizeof clean - 1; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || (c == '.' && k > 0);
        clean[k++] = ok ? c : '_';
    }
    clean[k] = 0;
    snprintf(buf, n, "%012" PRId64 "-%s.%s", seq, k ? clean : "noid", ext);
}

int out__mkdirs(const char *dir)
{
    char path[4096];
    if (!dir || !*dir || strlen(dir) >= sizeof path)
        return EINVAL;
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(path, 0750) != 0 && errno != EEXIST)
                return errno;
            *p = c;
            if (!c)
                break;
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0)
        return errno;
    return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

int out__write_atomic(const char *dir, const char *name, const void *p, size_t n, bool sync)
{
    char tmp[4200], final[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s/.tmp-%s", dir, name) >= sizeof tmp ||
        (size_t)snprintf(final, sizeof final, "%s/%s", dir, name) >= sizeof final)
        return ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600); /* PHI: owner only */
    if (fd < 0)
        return errno;
    const char *s = p;
    int en = 0;
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            en = w < 0 ? errno : EIO;
            break;
        }
        s += w;
        n -= (size_t)w;
    }
    if (!en && sync && fsync(fd) != 0)
        en = errno;
    if (close(fd) != 0 && !en)
        en = errno;
    if (!en && rename(tmp, final) != 0)
        en = errno;
    if (en) {
        unlink(tmp);
        return en;
    }
    if (sync) {
        /* The rename is durable only once the folder itself is. */
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
            return errno;
        if (fsync(dfd) != 0)
            en = errno;
        close(dfd);
    }
    return en;
}

/* ---------------------------------------------------------------- transport */

typedef struct {
    uv_work_t work;
    out_dest_t *d;
    const queue_row_t *row;
    int rc;
} dir_state_t;

static err_t dir_init(out_dest_t *d, err_detail_t *e)
{
    if (!d->o.dir || !*d->o.dir)
        return err_set(e, ERR_BAD_CONFIG, 0, "out %s: no folder for the directory sink", d->o.dest);
    int en = out__mkdirs(d->o.dir);
    if (en)
        return err_set(e, ERR_BAD_CONFIG, 0, "out %s: folder %s: %s", d->o.dest, d->o.dir,
                       strerror(en));
    dir_state_t *s = xcalloc(1, sizeof *s);
    s->d = d;
    s->work.data = s;
    d->tp_state = s;
    return ERR_OK;
}

static void dir_work(uv_work_t *w)
{
    dir_state_t *s = w->data;
    const out_dest_t *d = s->d;
    char name[128];
    const char *ext = d->o.ext ? d->o.ext : out__ext_for(s->row->content_type);
    out__file_name(name, sizeof name, s->row->id, s->row->control_id, ext);
    s->rc = out__write_atomic(d->o.dir, name, s->row->payload, s->row->payload_len, !d->o.no_fsync);
}

static void dir_done(uv_work_t *w, int status)
{
    dir_state_t *s = w->data;
    char reason[128];
    if (status == 0 && s->rc == 0) {
        out__send_done(s->d, OUT_RES_OK, NULL);
        return;
    }
    snprintf(reason, sizeof reason, "write to %s: %s", s->d->o.dir,
             status ? uv_strerror(status) : strerror(s->rc));
    /* A full or failing disk is not the message's fault: retried with
     * backoff for as long as it lasts, never dead-lettered. */
    out__send_done(s->d, OUT_RES_STORAGE, reason);
}

static void dir_send(out_dest_t *d, const queue_row_t *row)
{
    dir_state_t *s = d->tp_state;
    s->row = row;
    uv_queue_work(d->loop, &s->work, dir_work, dir_done);
}

static void dir_close(out_dest_t *d)
{
    xfree(d->tp_state);
    d->tp_state = NULL;
    out__transport_closed(d);
}

const out__transport_t out__dir = {"directory", dir_init, dir_send, dir_close, false, NULL};
