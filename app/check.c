/* check.c - spinegate-check: the spine rules over files or stdin, for a
 * person (text) or a script (JSON Lines). Files are mapped, not read into
 * memory, so a 100,000-message batch costs little more than its page cache;
 * each message is judged in one arena that is reset between messages. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"

#include "gate.h"
#include "hl7_ack.h"
#include "report.h"
#include "xmalloc.h"

typedef struct {
    const rule_pack_t *pack;
    gate_limits_t lim; /* max-diagnoses, as the daemon applies it */
    bool json, quiet, progress;
    size_t rejected, messages;
    /* progress over all inputs, by bytes */
    size_t bytes_total, bytes_done;
    double last_draw;
} check_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void progress_draw(check_t *c, size_t done, bool final)
{
    if (!c->progress || !c->bytes_total)
        return;
    double t = now_s();
    if (!final && t - c->last_draw < 0.1)
        return;
    c->last_draw = t;
    int width = 40;
    double frac = (double)done / (double)c->bytes_total;
    if (frac > 1)
        frac = 1;
    int fill = (int)(frac * width);
    fprintf(stderr, "\r[%.*s%*s] %3d%%  %zu messages", fill,
            "########################################", width - fill, "", (int)(frac * 100),
            c->messages);
    if (final)
        fputs("\n", stderr);
    fflush(stderr);
}

static void emit(check_t *c, const char *source, size_t index, const gate_result_t *r)
{
    c->messages++;
    if (r->status == GATE_UNREADABLE) {
        c->rejected++;
        if (c->json)
            report_error_json(stdout, source, index, &r->detail);
        else
            report_error_text(stdout, source, index, &r->detail);
        return;
    }
    if (r->verdict.kind == VERDICT_REJECT)
        c->rejected++;
    if (c->quiet && r->verdict.nfindings == 0)
        return;
    if (c->json)
        report_verdict_json(stdout, source, index, r->control_id, &r->verdict);
    else
        report_verdict_text(stdout, source, index, r->control_id, &r->verdict);
}

static void check_hl7(check_t *c, const char *source, const char *data, size_t len, size_t base)
{
    arena_t batch_arena, a;
    arena_init(&batch_arena, 0);
    arena_init(&a, 16384);
    slice_t *msgs = NULL;
    size_t n = 0;
    err_detail_t d;
    err_clear(&d);
    hl7_opts_t opts = {.max_size = len + 1};
    if (hl7_batch_split(data, len, &opts, &batch_arena, &msgs, &n, &d) != ERR_OK) {
        gate_result_t r = {.status = GATE_UNREADABLE, .detail = d};
        emit(c, source, 1, &r);
        arena_free(&batch_arena);
        return;
    }
    hl7_msg_t *msg = hl7_msg_new();
    for (size_t i = 0; i < n; i++) {
        gate_result_t r;
        /* As the daemon does: an earlier pass of annotation is not judged. */
        slice_t input;
        gate_hl7_unannotated(c->pack, msg, msgs[i].ptr, msgs[i].len, &opts, &c->lim, &a, &input,
                             &r);
        emit(c, source, i + 1, &r);
        arena_reset(&a);
        progress_draw(c, base + (size_t)(msgs[i].ptr + msgs[i].len - data), false);
    }
    hl7_msg_free(msg);
    arena_free(&a);
    arena_free(&batch_arena);
}

static void check_fhir(check_t *c, const char *source, const char *data, size_t len,
                       gate_format_t fmt)
{
    fhir_doc_t *doc = NULL;
    err_detail_t d;
    err_clear(&d);
    fhir_opts_t opts = {.max_size = len + 1};
    if (fhir_parse(data, len, fmt == GATE_FHIR_XML ? FHIR_FMT_XML : FHIR_FMT_JSON, &opts, &doc,
                   &d) != ERR_OK) {
        gate_result_t r = {.status = GATE_UNREADABLE, .detail = d};
        emit(c, source, 1, &r);
        return;
    }
    arena_t a;
    arena_init(&a, 16384);
    size_t n = fhir_doc_claim_count(doc);
    for (size_t i = 0; i < n; i++) {
        gate_result_t r;
        gate_fhir_claim(c->pack, doc, i, &c->lim, &a, &r);
        emit(c, source, i + 1, &r);
        arena_reset(&a);
    }
    arena_free(&a);
    fhir_doc_free(doc);
}

static void check_buffer(check_t *c, const char *source, const char *data, size_t len,
                         size_t base)
{
    gate_format_t fmt = gate_detect(data, len);
    if (fmt == GATE_HL7)
        check_hl7(c, source, data, len, base);
    else
        check_fhir(c, source, data, len, fmt);
}

/* Reads all of stdin (it may be a pipe, so it cannot be mapped). */
static int check_stdin(check_t *c)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len == cap)
            buf = xrealloc(buf, cap *= 2);
        ssize_t n = read(STDIN_FILENO, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "spinegate-check: stdin: %s\n", strerror(errno));
            xfree(buf);
            return 2;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    check_buffer(c, "-", buf, len, 0);
    xfree(buf);
    return 0;
}

static int check_file(check_t *c, const char *path, size_t base)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "spinegate-check: %s: %s\n", path, strerror(errno));
        return 2;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "spinegate-check: %s: not a regular file\n", path);
        close(fd);
        return 2;
    }
    if (st.st_size == 0) {
        close(fd);
        check_buffer(c, path, "", 0, base);
        return 0;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        fprintf(stderr, "spinegate-check: %s: %s\n", path, strerror(errno));
        return 2;
    }
    madvise(map, (size_t)st.st_size, MADV_SEQUENTIAL);
    check_buffer(c, path, map, (size_t)st.st_size, base);
    munmap(map, (size_t)st.st_size);
    return 0;
}

static void usage(FILE *f)
{
    fputs("usage: spinegate-check [OPTIONS] [FILE...]\n"
          "Applies the spine coding rules to HL7 v2 messages (one message or a batch file)\n"
          "and FHIR R4 Claims or Bundles (JSON or XML) read from FILEs or standard input.\n\n"
          "  --json               one JSON object per message (JSON Lines)\n"
          "  --quiet              print only messages with findings\n"
          "  --advisory           nothing rejects (reject findings become warnings)\n"
          "  --adt MODE           ADT messages (working diagnoses, not bills): annotate\n"
          "                       (judged, never rejected; the default), judge, forward\n"
          "  --severity RULE=SEV  override one rule's severity (reject|warn|info|off)\n"
          "  --max-diagnoses N    a claim with more diagnoses is refused unjudged, as the\n"
          "                       daemon refuses it (default 1000, the daemon's default)\n"
          "  --rules FILE         rule pack to use instead of the built-in one\n"
          "  --tables DIR         code tables to use instead of the built-in ones\n"
          "  --no-progress        never draw the progress bar on stderr\n"
          "  --help, --version\n\n"
          "Exit status: 0 no message rejected, 1 at least one rejected, 2 usage error or\n"
          "unreadable input.\n",
          f);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"advisory", no_argument, NULL, 'a'},
        {"severity", required_argument, NULL, 's'},
        {"rules", required_argument, NULL, 'r'},
        {"tables", required_argument, NULL, 't'},
        {"no-progress", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"adt", required_argument, NULL, 'A'},
        {"max-diagnoses", required_argument, NULL, 'D'},
        {NULL, 0, NULL, 0},
    };
    check_t c = {.lim = {.max_diagnoses = 1000}};
    const char *rules = NULL, *tables = NULL;
    const char *overrides[CONFIG_MAX_OVERRIDES + 1] = {0};
    int noverrides = 0;
    bool advisory = false, no_progress = false;
    rule_adt_mode_t adt = RULE_ADT_ANNOTATE;
    int opt;
    while ((opt = getopt_long(argc, argv, "jqh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'j': c.json = true; break;
        case 'q': c.quiet = true; break;
        case 'a': advisory = true; break;
        case 's':
            if (noverrides == CONFIG_MAX_OVERRIDES) {
                fprintf(stderr, "spinegate-check: too many --severity options\n");
                return 2;
            }
            overrides[noverrides++] = optarg;
            break;
        case 'r': rules = optarg; break;
        case 't': tables = optarg; break;
        case 'A':
            if (!config_adt_parse(optarg, &adt)) {
                fprintf(stderr, "spinegate-check: --adt: expected annotate, judge or forward\n");
                return 2;
            }
            break;
        case 'P': no_progress = true; break;
        case 'D': {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || v < 1 || optarg[0] == '-' || v > SIZE_MAX) {
                fprintf(stderr, "spinegate-check: --max-diagnoses: a number, at least 1\n");
                return 2;
            }
            c.lim.max_diagnoses = (size_t)v;
            break;
        }
        case 'h': usage(stdout); return 0;
        case 'V': printf("spinegate-check %s\n", PACKAGE_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    xmalloc_hook_libraries();
    rule_policy_t policy = {.advisory = advisory, .severity_overrides = overrides, .adt = adt};
    rule_pack_t *pack = NULL;
    err_detail_t d;
    err_clear(&d);
    if (rule_pack_load(rules, tables, &policy, &pack, &d) != ERR_OK) {
        fprintf(stderr, "spinegate-check: rule pack: %s%s%s\n", d.where, d.where[0] ? ": " : "",
                d.msg);
        return 2;
    }
    c.pack = pack;
    c.progress = !no_progress && isatty(STDERR_FILENO);
    int status = 0;
    if (optind == argc) {
        status = check_stdin(&c);
    } else {
        for (int i = optind; i < argc; i++) {
            struct stat st;
            if (strcmp(argv[i], "-") != 0 && stat(argv[i], &st) == 0)
                c.bytes_total += (size_t)st.st_size;
        }
        size_t base = 0;
        for (int i = optind; i < argc; i++) {
            int rc = strcmp(argv[i], "-") == 0 ? check_stdin(&c) : check_file(&c, argv[i], base);
            if (rc > status)
                status = rc;
            struct stat st;
            if (strcmp(argv[i], "-") != 0 && stat(argv[i], &st) == 0)
                base += (size_t)st.st_size;
            progress_draw(&c, base, false);
        }
        progress_draw(&c, base, true);
    }
    fflush(stdout);
    rule_pack_free(pack);
    if (status)
        return status;
    return c.rejected ? 1 : 0;
}
