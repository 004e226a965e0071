/* bench_fhir.c - throughput of the FHIR reader: JSON and XML Claim -> claim
 * model (parse + map every Claim + free), for single Claims and for a
 * Bundle of 100 Claims built in memory. Prints claims/s and MB/s; asserts
 * nothing about time. Usage: bench_fhir DATADIR [seconds per case]
 * (DATADIR = tests/data/fhir).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fhir.h"
#include "xmalloc.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *slurp(const char *dir, const char *rel, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = xmalloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

/* A Bundle of n copies of one Claim, in the Claim's format. */
static char *bundle_of(const char *claim, size_t clen, fhir_format_t fmt, int n, size_t *len)
{
    if (fmt == FHIR_FMT_XML) {
        const char *start = strstr(claim, "<Claim");
        clen -= (size_t)(start - claim);
        claim = start;
    }
    size_t cap = (clen + 64) * (size_t)n + 256, off = 0;
    char *b = xmalloc(cap);
    off += (size_t)snprintf(b + off, cap - off, "%s",
                            fmt == FHIR_FMT_XML
                                ? "<Bundle xmlns=\"http://hl7.org/fhir\"><type value=\"batch\"/>"
                                : "{\"resourceType\":\"Bundle\",\"type\":\"batch\",\"entry\":[");
    for (int i = 0; i < n; i++) {
        off += (size_t)snprintf(b + off, cap - off, "%s",
                                fmt == FHIR_FMT_XML ? "<entry><resource>"
                                : i                 ? ",{\"resource\":"
                                                    : "{\"resource\":");
        memcpy(b + off, claim, clen);
        off += clen;
        off += (size_t)snprintf(b + off, cap - off, "%s",
                                fmt == FHIR_FMT_XML ? "</resource></entry>" : "}");
    }
    off += (size_t)snprintf(b + off, cap - off, "%s", fmt == FHIR_FMT_XML ? "</Bundle>" : "]}");
    *len = off;
    return b;
}

static void run(const char *name, const char *buf, size_t len, fhir_format_t fmt, double secs)
{
    arena_t a;
    arena_init(&a, 0);
    size_t iters = 0, claims = 0;
    double t0 = now(), t;
    do {
        for (int k = 0; k < 20; k++) {
            fhir_doc_t *doc;
            err_detail_t d;
            if (fhir_parse(buf, len, fmt, NULL, &doc, &d)) {
                fprintf(stderr, "%s: %s\n", name, d.msg);
                exit(1);
            }
            for (size_t i = 0; i < fhir_doc_claim_count(doc); i++) {
                claim_t *c;
                if (fhir_doc_claim(doc, i, &a, &c, &d)) {
                    fprintf(stderr, "%s: %s\n", name, d.msg);
                    exit(1);
                }
                claims++;
            }
            fhir_doc_free(doc);
            arena_reset(&a);
            iters++;
        }
        t = now() - t0;
    } while (t < secs);
    arena_free(&a);
    printf("%-28s %4s %8zu B  %9.0f claims/s  %7.1f MB/s  (%zu docs in %.2fs)\n", name,
           fmt == FHIR_FMT_XML ? "xml" : "json", len, (double)claims / t,
           (double)len * (double)iters / t / 1e6, iters, t);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DATADIR [seconds]\n", argv[0]);
        return 2;
    }
    double secs = argc > 2 ? atof(argv[2]) : 1.0;
    xmalloc_hook_libraries();
    static const char *claims[] = {"spine-m4304-mri", "Claim-960151", "Claim-MED-00050"};
    for (size_t k = 0; k < sizeof claims / sizeof claims[0]; k++) {
        for (int f = FHIR_FMT_JSON; f <= FHIR_FMT_XML; f++) {
            char rel[256];
            size_t len;
            snprintf(rel, sizeof rel, "%s/%s.%s", f ? "xml" : "json", claims[k],
                     f ? "xml" : "json");
            char *buf = slurp(argv[1], rel, &len);
            run(claims[k], buf, len, (fhir_format_t)f, secs);
            if (k == 0) {
                size_t blen;
                char *b = bundle_of(buf, len, (fhir_format_t)f, 100, &blen);
                run("Bundle of 100 spine claims", b, blen, (fhir_format_t)f, secs);
                xfree(b);
            }
            xfree(buf);
        }
    }
    return 0;
}
