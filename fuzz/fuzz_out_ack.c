/* fuzz_out_ack.c - the downstream's MLLP ACK as hostile input: the bytes
 * between 0x0B and 0x1C 0x0D go to the ACK reader (common/mllp_ack.h) the
 * MLLP client uses. The
 * first byte says whether a control id is expected ("MSG00001") or not. The
 * text a reject carries into the dead-letter note is read too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mllp_ack.h"

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
    mllp_ack_t r = mllp_ack_read(p, size - 1, ctrl, reason, sizeof reason);
    if (r != MLLP_ACK_ACCEPTED && r != MLLP_ACK_REFUSED && r != MLLP_ACK_OTHER_ID &&
        r != MLLP_ACK_INVALID)
        abort();
    if (r != MLLP_ACK_ACCEPTED && strlen(reason) == 0)
        abort();
    if (r == MLLP_ACK_OTHER_ID && !ctrl[0])
        abort();
    char text[256];
    mllp_ack_text(p, size - 1, text, sizeof text);
    if (strlen(text) >= sizeof text)
        abort();
    for (const char *c = text; *c; c++)
        if ((unsigned char)*c < 0x20 && *c != '\n')
            abort();
    free(p);
    return 0;
}
