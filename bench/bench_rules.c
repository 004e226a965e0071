/* bench_rules.c - rule evaluation speed: ns per claim and claims per second
 * for each kind of claim (no spine code, clean spine claim, each kind of
 * finding), for a realistic mix (most of a hospital feed carries no spine
 * code), and for hostile claims of 2,000 and 20,000 diagnoses (evaluation
 * must stay linear in the number of diagnoses). Claims are built once; each
 * evaluation reuses one arena, reset between claims, as the daemon does per
 * message. Prints figures only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rules.h"

typedef struct {
    const char *name;
    const char *dx[6];   /* "CODE|type|text" */
    const char *line;    /* "CPT:ptr" or NULL */
    int weight;          /* share in the mix, per 100 */
} kind_t;

static const kind_t kinds[] = {
    {"no spine code", {"I10|P|", "E11.9||", "R52||", "Z79.4||"}, "99213:1", 60},
    {"clean spine claim", {"M43.04|P|Spondylolysis, thoracic region", "M54.6||", "I10||"}, "72146:1", 20},
    {"excludes1 reject", {"M43.04|P|", "M43.14||"}, NULL, 3},
    {"not billable", {"M54.5|P|low back pain"}, NULL, 3},
    {"7th character", {"S32.001|P|", "M43.04XA||"}, NULL, 3},
    {"site unspecified", {"M43.00|P|pars defect T8"}, "72146:1", 3},
    {"junction", {"M43.04|P|pars defect T12-L1"}, NULL, 2},
    {"congenital", {"M43.16|P|congenital spondylolisthesis L5"}, NULL, 2},
    {"linkage", {"M43.04|P|", "M43.16||"}, "72146:2", 2},
    {"DRG 551", {"M43.04|P|", "A02.1||", "I10||"}, "22612:1", 2},
};
#define NKINDS (sizeof kinds / sizeof kinds[0])

static claim_t *build(arena_t *a, const kind_t *k)
{
    claim_t *c = claim_new(a, CLAIM_SRC_HL7V2);
    c->service_from = (claim_date_t){2026, 2, 1};
    for (int i = 0; i < 6 && k->dx[i]; i++) {
        char buf[128];
        snprintf(buf, sizeof buf, "%s", k->dx[i]);
        char *code = strtok(buf, "|"), *type = strtok(NULL, "|"), *text = strtok(NULL, "|");
        claim_dx_t *d = claim_add_dx(c, a);
        d->sequence = i + 1;
        claim_code_normalise(code, strlen(code), d->code, sizeof d->code);
        d->system = CODESYS_ICD10CM;
        d->type = type && type[0] == 'P' ? DX_TYPE_PRINCIPAL : DX_TYPE_SECONDARY;
        if (text && *text)
            d->text = arena_strdup(a, text);
        d->location = arena_printf(a, "DG1(%d)-3", i + 1);
    }
    if (!strncmp(k->name, "DRG", 3))
        c->setting = CLAIM_SETTING_INPATIENT;
    if (k->line) {
        claim_line_t *l = claim_add_line(c, a);
        l->sequence = 1;
        l->code = arena_strndup(a, k->line, 5);
        l->system = PROCSYS_CPT;
        l->dx_pointers[l->ndx_pointers++] = atoi(k->line + 6);
        l->location = "FT1(1)";
    }
    return c;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A claim of n diagnoses: spine codes of many categories and regions (so
 * that Excludes1 notes, regions and suggestions all have work), repeated
 * codes, malformed codes, and distinct codes from outside the spine range,
 * each with a little free text. */
static claim_t *build_big(arena_t *a, int n)
{
    static const char *const spine[] = {
        "M43.0%d", "M43.1%d", "M54.1%d", "M51.1%d", "M47.2%d", "M46.4%d", "M48.0%d", "M40.1%d",
        "M41.2%d", "M42.1%d", "M45.A%d", "M49.8%d", "S22.0%dXA", "S32.0%dXA", "Q76.41%d", "M48.5%dXA",
    };
    claim_t *c = claim_new(a, CLAIM_SRC_HL7V2);
    c->service_from = (claim_date_t){2026, 11, 2};
    c->setting = CLAIM_SETTING_INPATIENT;
    for (int i = 0; i < n; i++) {
        claim_dx_t *d = claim_add_dx(c, a);
        char code[24];
        int kind = i % 10;
        if (kind < 6)
            snprintf(code, sizeof code, spine[(i / 10) % 16], (i / 160) % 10);
        else if (kind == 6)
            snprintf(code, sizeof code, "M51.36-");
        else
            snprintf(code, sizeof code, "Z%02d.%d%d", (i / 7) % 100, (i / 700) % 10, (i / 7000) % 10);
        d->sequence = i + 1;
        d->code_sent = arena_strdup(a, code);
        claim_code_normalise(code, strlen(code), d->code, sizeof d->code);
        d->system = CODESYS_ICD10CM;
        d->type = i ? DX_TYPE_SECONDARY : DX_TYPE_PRINCIPAL;
        d->text = i % 3 ? "pars defect L4-L5, congenital" : NULL;
        d->location = arena_printf(a, "DG1(%d)-3", i + 1);
    }
    return c;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 200000;
    rule_pack_t *pack;
    err_detail_t d;
    double t0 = now();
    if (rule_pack_load(NULL, NULL, NULL, &pack, &d) != ERR_OK) {
        fprintf(stderr, "bench_rules: pack: %s\n", d.msg);
        return 1;
    }
    printf("rule pack load (embedded pack + FY2026 and FY2027 tables): %.1f ms\n", (now() - t0) * 1e3);
    printf("%s\n", rule_pack_describe(pack));
    arena_t build_arena, ev;
    arena_init(&build_arena, 0);
    arena_init(&ev, 1 << 16);
    claim_t *claims[NKINDS];
    for (size_t k = 0; k < NKINDS; k++)
        claims[k] = build(&build_arena, &kinds[k]);
    size_t sink = 0;
    printf("%-20s %10s %12s %9s  %s\n", "claim kind", "ns/claim", "claims/s", "findings", "verdict");
    for (size_t k = 0; k < NKINDS; k++) {
        long n = iters / 4;
        rule_verdict_t v;
        double t = now();
        for (long i = 0; i < n; i++) {
            rule_evaluate(pack, claims[k], &ev, &v);
            sink += v.nfindings;
            arena_reset(&ev);
        }
        double el = now() - t;
        rule_evaluate(pack, claims[k], &ev, &v);
        printf("%-20s %10.0f %12.0f %9zu  %s\n", kinds[k].name, el / n * 1e9, n / el, v.nfindings,
               verdict_name(v.kind));
        arena_reset(&ev);
    }
    /* The mix, in a fixed shuffled order. */
    int order[100], o = 0;
    for (size_t k = 0; k < NKINDS; k++)
        for (int w = 0; w < kinds[k].weight && o < 100; w++)
            order[o++] = (int)k;
    unsigned seed = 12345;
    for (int i = o - 1; i > 0; i--) {
        seed = seed * 1103515245u + 12345u;
        int j = (int)(seed % (unsigned)(i + 1));
        int tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    double t = now();
    for (long i = 0; i < iters; i++) {
        rule_verdict_t v;
        rule_evaluate(pack, claims[order[i % o]], &ev, &v);
        sink += v.nfindings;
        arena_reset(&ev);
    }
    double el = now() - t;
    printf("%-20s %10.0f %12.0f   (%ld claims, 60%% without spine codes)\n", "mix", el / iters * 1e9,
           iters / el, iters);
    /* Hostile sizes: the cost per diagnosis must not grow with the claim. */
    for (int n = 2000; n <= 20000; n *= 10) {
        claim_t *big = build_big(&build_arena, n);
        int reps = n == 2000 ? 50 : 10;
        rule_verdict_t v;
        double tb = now();
        for (int r = 0; r < reps; r++) {
            rule_evaluate(pack, big, &ev, &v);
            sink += v.nfindings;
            arena_reset(&ev);
        }
        double eb = (now() - tb) / reps;
        rule_evaluate(pack, big, &ev, &v);
        printf("%-20s %10.2f ms/claim %8.0f ns/diagnosis %5zu findings  %s\n",
               n == 2000 ? "2,000 diagnoses" : "20,000 diagnoses", eb * 1e3, eb / n * 1e9, v.nfindings,
               verdict_name(v.kind));
        arena_reset(&ev);
    }
    arena_free(&ev);
    arena_free(&build_arena);
    rule_pack_free(pack);
    return sink == 0;
}
