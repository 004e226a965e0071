/* fuzz_hl7_claim.c - libFuzzer target for HL7 v2 -> claim: parse the input
 * as one message and map it with hl7_claim_read(), then walk the claim so
 * every string it holds is read (ASan sees any dangling pointer). The claim
 * must outlive the message: the message is freed before the walk. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hl7.h"
#include "hl7_claim.h"

static size_t sink;

static void touch(const char *s)
{
    if (s)
        sink += strlen(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hl7_opts_t o = {.max_size = 1 << 20};
    hl7_msg_t *m;
    if (hl7_parse((const char *)data, size, &o, &m, NULL) != ERR_OK)
        return 0;
    arena_t a;
    arena_init(&a, 0);
    claim_t *c;
    err_detail_t d;
    err_t rc = hl7_claim_read(m, &a, &c, &d);
    hl7_msg_free(m);
    if (rc == ERR_OK) {
        touch(c->id);
        touch(c->message_type);
        for (size_t i = 0; i < c->ndx; i++) {
            const claim_dx_t *x = &c->dx[i];
            touch(x->code_sent);
            touch(x->system_sent);
            touch(x->text);
            touch(x->location);
            if (strlen(x->code) >= sizeof x->code)
                abort();
        }
        for (size_t i = 0; i < c->nlines; i++) {
            const claim_line_t *l = &c->lines[i];
            touch(l->code);
            touch(l->system_sent);
            touch(l->location);
            if (l->nmodifiers > CLAIM_MAX_MODIFIERS || l->ndx_codes > CLAIM_MAX_DX_POINTERS ||
                l->ndx_pointers > CLAIM_MAX_DX_POINTERS)
                abort();
            for (int k = 0; k < l->nmodifiers; k++)
                touch(l->modifiers[k]);
            for (int k = 0; k < l->ndx_codes; k++)
                touch(l->dx_codes[k]);
        }
    } else if (d.code != rc || !d.where[0]) {
        abort();
    }
    arena_free(&a);
    return 0;
}
