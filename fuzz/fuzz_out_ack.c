/* fuzz_out_ack.c - the downstream's MLLP ACK as hostile input: the bytes
 * between 0x0B and 0x1C 0x0D go to the MSA reader the MLLP client uses. The
 * first byte says whether a control id is expected ("MSG00001") or not. The
 * text a reject carries into the dead-letter note is read too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "out_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *ctrl = data[0] & 1 ? "MSG00001" : "";
    /* A copy of exactly size bytes, so that ASan sees any overread. */
    char *p = malloc(size - 1 ? size - 1 : 1);
    memcpy(p, data + 1, size - 1);
    char reason[96];
    out__res_t r = out__mllp_ack_parse(p, size - 1, ctrl, reason, sizeof reason);
    if (r != OUT_RES_OK && r != OUT_RES_RETRY && r != OUT_RES_REJECT)
        abort();
    if (r != OUT_RES_OK && strlen(reason) == 0)
        abort();
    char text[256];
    out__mllp_ack_text(p, size - 1, text, sizeof text);
    if (strlen(text) >= sizeof text)
        abort();
    for (const char *c = text; *c; c++)
        if ((unsigned char)*c < 0x20 && *c != '\n')
            abort();
    free(p);
    return 0;
}
