/* fuzz_hl7.c - libFuzzer target for the HL7 v2 parser seam: split the input
 * as a batch, parse each message (and the whole input as one message), walk
 * every segment, field, repetition, component and subcomponent, decode each
 * value, rebuild every segment and write the message back, checking that an
 * unedited write is byte-identical. Owns nothing beyond one call. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hl7.h"
#include "hl7_ack.h"

static char scratch[1 << 16];

static void walk(const hl7_msg_t *m, arena_t *a)
{
    const hl7_delims_t *dl = hl7_msg_delims(m);
    for (size_t i = 0; i < hl7_seg_count(m); i++) {
        int nf = hl7_field_count(m, i);
        for (int f = 0; f <= nf; f++) {
            hl7_iter_t ir, ic, is;
            slice_t rep, comp, sub;
            hl7_iter_init(&ir, hl7_field(m, i, f), dl->repetition);
            while (hl7_iter_next(&ir, &rep)) {
                hl7_iter_init(&ic, rep, dl->component);
                while (hl7_iter_next(&ic, &comp)) {
                    hl7_iter_init(&is, comp, dl->subcomponent);
                    while (hl7_iter_next(&is, &sub)) {
                        size_t n;
                        err_detail_t d;
                        err_t rc = hl7_unescape(dl, sub, scratch, sizeof scratch, &n, &d);
                        if (rc == ERR_OK && n > sub.len)
                            abort(); /* decoding never grows */
                        hl7_kind_t k = hl7_value_kind(sub);
                        (void)k;
                    }
                }
            }
            char *s;
            (void)hl7_unescape_arena(m, hl7_field(m, i, f), a, &s, NULL);
        }
        hl7_seg_t *g = hl7_seg_from(a, m, i);
        slice_t t = hl7_seg_write(g), orig = hl7_seg_text(m, i);
        if (!slice_eq_slice(t, orig))
            abort();
        /* Setting a value with every delimiter in it must re-parse to it. */
        if (hl7_seg_set(g, 3, 2, 2, 2, "|^~\\&\r\n#", 8) != ERR_OK && i > 0)
            abort();
        (void)hl7_seg_write(g);
    }
    hl7_edit_t *e = hl7_edit_new(m, a);
    slice_t out = hl7_edit_write(e);
    slice_t in = hl7_msg_bytes(m);
    if (!slice_eq_slice(out, in))
        abort();
    /* An edit with an escaped value re-parses, and the value decodes back. */
    if (hl7_seg_count(m) > 1 && hl7_edit_set(e, "MSH-4.2", "a|b^c", 5, NULL) == ERR_OK) {
        out = hl7_edit_write(e);
        hl7_msg_t *m2;
        if (hl7_parse(out.ptr, out.len, NULL, &m2, NULL) != ERR_OK)
            abort();
        slice_t v;
        char *s;
        if (hl7_get(m2, "MSH-4.2", &v) != ERR_OK || hl7_unescape_arena(m2, v, a, &s, NULL) ||
            strcmp(s, "a|b^c") != 0)
            abort();
        hl7_msg_free(m2);
    }
    static const char *const paths[] = {"MSH-9.2", "PID-5.1.2", "DG1(2)-3.1", "FT1-19(2).1",
                                        "FT1-25.3", "MSH-2", "MSH-1"};
    for (size_t k = 0; k < sizeof paths / sizeof paths[0]; k++) {
        slice_t v;
        (void)hl7_get(m, paths[k], &v);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    arena_t a;
    arena_init(&a, 0);
    hl7_msg_t *m = hl7_msg_new();
    hl7_opts_t opts[2] = {{.max_size = 1 << 20}, {.max_size = 1 << 20, .strict = true}};
    for (int o = 0; o < 2; o++) {
        err_detail_t d;
        if (hl7_msg_parse(m, in, size, &opts[o], &d) == ERR_OK) {
            walk(m, &a);
            continue;
        }
        if (d.code == ERR_OK || hl7_seg_count(m) != 0)
            abort();
        /* The AR for unparseable input always builds and parses. */
        hl7_ack_opts_t ao = {.timestamp = "20240101", .control_id = "F1", .code = HL7_ACK_AR};
        slice_t out;
        hl7_msg_t *back;
        if (hl7_ack_build_raw(in, size, &d, &ao, &a, &out) != ERR_OK ||
            hl7_parse(out.ptr, out.len, NULL, &back, NULL) != ERR_OK)
            abort();
        hl7_msg_free(back);
    }
    slice_t *msgs;
    size_t n;
    if (hl7_batch_split(in, size, &opts[0], &a, &msgs, &n, NULL) == ERR_OK) {
        for (size_t i = 0; i < n; i++) {
            if (msgs[i].ptr < in || msgs[i].ptr + msgs[i].len > in + size)
                abort();
            if (hl7_msg_parse(m, msgs[i].ptr, msgs[i].len, &opts[0], NULL) == ERR_OK)
                walk(m, &a);
        }
    }
    hl7_path_t p;
    if (size < 64 && hl7_path_parse(in, size, &p, NULL) == ERR_OK) {
        char buf[64];
        hl7_path_format(&p, buf, sizeof buf);
    }
    hl7_msg_free(m);
    arena_free(&a);
    return 0;
}
