/* fuzz_hl7_claim.c - libFuzzer target for HL7 v2 -> claim: parse the input
 * as one message and map it with hl7_claim_read(), then walk the claim so
 * every string it holds is read (ASan sees any dangling pointer). The claim
 * must outlive the message: the message is freed before the walk. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hl7.h"
#include "hl7_ack.h"
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
    /* The writers back: an ACK and an annotation built from findings that
     * point at every diagnosis, with delimiters in the texts. */
    rule_finding_t fs[8];
    size_t nf = 0;
    for (size_t i = 0; rc == ERR_OK && i < c->ndx && nf < 8; i++, nf++) {
        memset(&fs[nf], 0, sizeof fs[nf]);
        fs[nf].rule_id = "fuzz|rule";
        fs[nf].severity = (rule_severity_t)(i % 3);
        fs[nf].message = "a|b^c~d\\e&f\r";
        fs[nf].location = c->dx[i].location;
        fs[nf].codes[0] = c->dx[i].code_sent;
        fs[nf].ncodes = 1;
        fs[nf].suggestion = c->dx[i].text;
        fs[nf].code_invalid = i & 1;
    }
    rule_verdict_t v = {.kind = VERDICT_ANNOTATE, .findings = fs, .nfindings = nf};
    hl7_ack_opts_t ao = {.timestamp = "20240101", .control_id = "F1",
                         .code = hl7_ack_code(m, rc == ERR_OK ? HL7_OUTCOME_REJECTED
                                                              : HL7_OUTCOME_UNPARSEABLE),
                         .verdict = &v, .error = rc == ERR_OK ? NULL : &d};
    if (ao.code == HL7_ACK_NONE)
        ao.code = HL7_ACK_AE;
    slice_t out;
    if (hl7_ack_build(m, &ao, &a, &out) != ERR_OK)
        abort();
    hl7_msg_t *back;
    if (hl7_parse(out.ptr, out.len, NULL, &back, NULL) != ERR_OK)
        abort();
    hl7_msg_free(back);
    /* One pass of annotation (header + a segment per finding), and stripping
     * it gives back the message as it was without earlier passes. */
    slice_t before;
    (void)hl7_annotation_strip((const char *)data, size, &o, &a, &before);
    bool terminated = size && (data[size - 1] == '\r' || data[size - 1] == '\n');
    for (int style = 0; style < 2; style++) {
        hl7_annotate_opts_t ann = {.style = (hl7_annotate_style_t)style, .pack_name = "p|k",
                                   .pack_version = 3, .header_when_accepted = size & 1};
        out = hl7_annotate(m, &v, &ann, &a);
        size_t added = nf + (nf || ann.header_when_accepted ? 1 : 0);
        if (hl7_parse(out.ptr, out.len, NULL, &back, NULL) != ERR_OK ||
            hl7_seg_count(back) != hl7_seg_count(m) + added)
            abort();
        hl7_msg_free(back);
        slice_t after;
        (void)hl7_annotation_strip(out.ptr, out.len, &o, &a, &after);
        /* NTE text is recognised by its start, which a delimiter such as '['
         * would escape; an unterminated last segment gains a terminator. */
        if (style == HL7_ANNOTATE_ZSG && terminated &&
            (after.len != before.len || memcmp(after.ptr, before.ptr, before.len) != 0))
            abort();
    }
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
