/* fuzz_rulepack.c - the rule pack loader on arbitrary bytes: the JSON parse,
 * every semantic check and the compile against the embedded tables must
 * refuse bad input with an error, never crash, hang or leak. The input is
 * written to a temp file because rule_pack_load() reads packs from paths;
 * the embedded tables are parsed once and reused through a loaded pack. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "rules.h"
#include "rules_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/fuzz_rulepack.%ld.json", (long)getpid());
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    rule_pack_t *p = NULL;
    err_detail_t d;
    static const char *const ov[] = {"excludes1-pair=warn", NULL};
    rule_policy_t pol = {.advisory = size & 1, .severity_overrides = ov};
    if (rule_pack_load(path, NULL, &pol, &p, &d) == ERR_OK) {
        /* a pack that loads must also evaluate */
        arena_t a;
        arena_init(&a, 0);
        claim_t *c = claim_new(&a, CLAIM_SRC_FHIR_JSON);
        const char *codes[] = {"M43.04", "M43.14", "Q76.2", "M43.00", "S32.001"};
        for (int i = 0; i < 5; i++) {
            claim_dx_t *dx = claim_add_dx(c, &a);
            dx->sequence = i + 1;
            dx->type = i ? DX_TYPE_SECONDARY : DX_TYPE_PRINCIPAL;
            claim_code_normalise(codes[i], 7, dx->code, sizeof dx->code);
            dx->text = "thoracic T12-L1 congenital";
        }
        claim_line_t *l = claim_add_line(c, &a);
        l->code = "72148";
        l->system = PROCSYS_CPT;
        l->dx_pointers[l->ndx_pointers++] = 1;
        rule_verdict_t v;
        rule_evaluate(p, c, &a, &v);
        arena_free(&a);
        rule_pack_free(p);
    }
    unlink(path);
    return 0;
}
