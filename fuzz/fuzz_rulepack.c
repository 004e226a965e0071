/* fuzz_rulepack.c - the rule pack loader on arbitrary bytes: the JSON parse,
 * every semantic check, the compile against the tables and the policy must
 * refuse bad input with an error, never crash, hang or leak; a pack that
 * loads must also evaluate a claim. To keep each run fast the tables are a
 * small slice of the embedded FY2026 table, written once to a temp file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rules.h"
#include "rules_int.h"
#include "xmalloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char tables[64];

static void cleanup(void)
{
    unlink(tables);
}

/* Writes the rows of the embedded table that the seeds and the claim below
 * touch, with a fresh header and checksum. */
static void make_tables(void)
{
    const rule__embedded_t *e = NULL;
    for (size_t i = 0; i < rule__embedded_count; i++)
        if (strstr(rule__embedded_files[i].name, ".tsv"))
            e = &rule__embedded_files[i];
    if (!e)
        abort();
    static const char *const keep[] = {"C\tM40", "N\tM40", "C\tM41", "N\tM41", "C\tM43", "N\tM43", "C\tQ76", "N\tQ76", "C\tS12", "N\tS12",
                                       "C\tM48", "N\tM48", "N\tM80", "P\tM43", "M\tA02", "M\tI46",
                                       NULL};
    size_t cap = e->len, n = 0, lines = 0;
    char *body = xmalloc(cap + 1);
    const char *p = (const char *)e->data, *end = p + e->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        for (const char *const *k = keep; *k; k++)
            if (l > strlen(*k) && !strncmp(p, *k, strlen(*k))) {
                memcpy(body + n, p, l);
                n += l;
                lines++;
                break;
            }
        p += l;
    }
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)body[i];
        h *= 0x100000001b3ull;
    }
    snprintf(tables, sizeof tables, "/tmp/fuzz_rulepack.%ld.tsv", (long)getpid());
    FILE *f = fopen(tables, "wb");
    if (!f)
        abort();
    fprintf(f, "#spinegate-tables\t1\n#fiscal_year\tFY2026\n#valid_from\t2025-10-01\n"
               "#valid_to\t2026-09-30\n#body_lines\t%zu\n#body_fnv1a64\t%016llx\n",
            lines, (unsigned long long)h);
    fwrite(body, 1, n, f);
    fclose(f);
    xfree(body);
    atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tables[0])
        make_tables();
    rule_pack_t *p = NULL;
    err_detail_t d;
    static const char *const ov[] = {"excludes1-pair=warn", NULL};
    rule_policy_t pol = {.advisory = size & 1, .severity_overrides = ov};
    if (rule__pack_load_mem((const char *)data, size, tables, &pol, &p, &d) != ERR_OK)
        return 0;
    arena_t a;
    arena_init(&a, 0);
    claim_t *c = claim_new(&a, CLAIM_SRC_FHIR_JSON);
    const char *codes[] = {"M4304", "M4314", "Q762", "M4300", "S12001", "M48"};
    for (int i = 0; i < 6; i++) {
        claim_dx_t *dx = claim_add_dx(c, &a);
        dx->sequence = i + 1;
        dx->type = i ? DX_TYPE_SECONDARY : DX_TYPE_PRINCIPAL;
        snprintf(dx->code, sizeof dx->code, "%s", codes[i]);
        dx->text = "thoracic T12-L1 congenital C7-T1";
        dx->location = "x";
    }
    claim_line_t *l = claim_add_line(c, &a);
    l->code = "72148";
    l->system = PROCSYS_CPT;
    l->dx_pointers[l->ndx_pointers++] = 1;
    l->dx_pointers[l->ndx_pointers++] = 9;
    rule_verdict_t v;
    rule_evaluate(p, c, &a, &v);
    arena_free(&a);
    rule_pack_free(p);
    return 0;
}
