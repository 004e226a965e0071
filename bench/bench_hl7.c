/* bench_hl7.c - throughput of the HL7 v2 parser on one core: parse a
 * message (a realistic DFT^P03 by default) and read every DG1-3 and FT1-25
 * code, over and over for a fixed time, three ways: a reused handle (the
 * daemon's steady state: no allocation), a fresh handle per message, and
 * access by path strings. Prints figures, never judges them; the last line
 * is machine-readable for bench_hl7.sh. Usage: bench_hl7 FILE [SECONDS]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hl7.h"
#include "xmalloc.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t sink;

/* Reads DG1-3.1 and FT1-25.1 of every DG1 and FT1 by iteration. */
static void read_codes(const hl7_msg_t *m)
{
    for (size_t i = 0; i < hl7_seg_count(m); i++) {
        slice_t id = hl7_seg_id(m, i);
        if (slice_eq(id, "DG1"))
            sink += hl7_value(m, i, 3, 1, 1, 0).len;
        else if (slice_eq(id, "FT1"))
            sink += hl7_value(m, i, 25, 1, 1, 0).len;
    }
}

/* The same by path strings, as a casual caller would. */
static void read_codes_by_path(const hl7_msg_t *m)
{
    static const char *const dg1[] = {"DG1-3.1", "DG1(2)-3.1", "DG1(3)-3.1", "DG1(4)-3.1",
                                      "DG1(5)-3.1"};
    static const char *const ft1[] = {"FT1-25.1", "FT1(2)-25.1", "FT1(3)-25.1", "FT1(4)-25.1"};
    slice_t v;
    for (size_t k = 0; k < sizeof dg1 / sizeof *dg1 && hl7_get(m, dg1[k], &v) == ERR_OK; k++)
        sink += v.len;
    for (size_t k = 0; k < sizeof ft1 / sizeof *ft1 && hl7_get(m, ft1[k], &v) == ERR_OK; k++)
        sink += v.len;
}

typedef enum { MODE_REUSE, MODE_FRESH, MODE_PATH } mode_t_;

static double run(const char *buf, size_t len, double secs, mode_t_ mode, long *count)
{
    hl7_msg_t *m = hl7_msg_new();
    long n = 0;
    double t0 = now(), t;
    do {
        for (int k = 0; k < 1000; k++) {
            err_detail_t d;
            if (mode == MODE_FRESH) {
                hl7_msg_t *f;
                if (hl7_parse(buf, len, NULL, &f, &d) != ERR_OK) {
                    fprintf(stderr, "parse failed: %s\n", d.msg);
                    exit(1);
                }
                read_codes(f);
                hl7_msg_free(f);
            } else {
                if (hl7_msg_parse(m, buf, len, NULL, &d) != ERR_OK) {
                    fprintf(stderr, "parse failed: %s\n", d.msg);
                    exit(1);
                }
                if (mode == MODE_PATH)
                    read_codes_by_path(m);
                else
                    read_codes(m);
            }
        }
        n += 1000;
        t = now();
    } while (t - t0 < secs);
    hl7_msg_free(m);
    *count = n;
    return t - t0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE [SECONDS]\n", argv[0]);
        return 2;
    }
    double secs = argc > 2 ? atof(argv[2]) : 2.0;
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    static char buf[1 << 20];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    static const char *const names[] = {"reused handle", "fresh handle ", "by path      "};
    double best_rate = 0, best_mbs = 0;
    for (int mode = 0; mode < 3; mode++) {
        long n;
        double t = run(buf, len, secs / 3, (mode_t_)mode, &n);
        double rate = (double)n / t, mbs = rate * (double)len / 1e6;
        printf("hl7 C (%s): %10.0f msgs/s  %8.1f MB/s  (%zu-byte message, %ld parses)\n",
               names[mode], rate, mbs, len, n);
        if (mode == MODE_REUSE) {
            best_rate = rate;
            best_mbs = mbs;
        }
    }
    printf("RESULT c_msgs_per_s=%.0f c_mb_per_s=%.1f bytes=%zu sink=%zu\n", best_rate, best_mbs,
           len, sink % 10);
    return 0;
}
