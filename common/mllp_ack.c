/* mllp_ack.c - reading an HL7 ACK that came back over MLLP (mllp_ack.h).
 * Only MSA-1, MSA-2 and the human text are read: nothing else of the ACK
 * decides anything, and the reader never looks past the n bytes given. */
#include <stdio.h>
#include <string.h>

#include "mllp_ack.h"

/* Where the segment from i ends: its first CR or LF, or n. By memchr: an
 * ACK's MSH is long enough for a byte loop to cost more. */
static size_t seg_end(const char *p, size_t n, size_t i)
{
    const char *cr = memchr(p + i, '\r', n - i);
    size_t end = cr ? (size_t)(cr - p) : n;
    const char *lf = memchr(p + i, '\n', end - i);
    return lf ? (size_t)(lf - p) : end;
}

bool mllp_ack_msa(const char *p, size_t n, slice_t *code, slice_t *ctrl)
{
    /* Segment by segment: only a segment's first bytes can name it. */
    for (size_t i = 0; i + 3 < n;) {
        if (memcmp(p + i, "MSA", 3) == 0) {
            char sep = p[i + 3];
            if (sep == '\r' || sep == '\n')
                return false;
            /* Fields 1 and 2, each up to the separator or the segment's end. */
            size_t f1 = i + 4, e1 = f1;
            while (e1 < n && p[e1] != sep && p[e1] != '\r' && p[e1] != '\n')
                e1++;
            size_t f2 = e1 + 1, e2 = f2;
            if (e1 < n && p[e1] == sep)
                while (e2 < n && p[e2] != sep && p[e2] != '\r' && p[e2] != '\n')
                    e2++;
            else
                f2 = e2 = e1;
            *code = slice_make(p + f1, e1 - f1);
            *ctrl = slice_make(p + f2, e2 - f2);
            return true;
        }
        i = seg_end(p, n, i);
        while (i < n && (p[i] == '\r' || p[i] == '\n'))
            i++;
    }
    return false;
}

mllp_ack_t mllp_ack_judge(bool has_msa, slice_t code, slice_t id, const char *ctrl, char *reason,
                          size_t rl)
{
    if (!has_msa) {
        snprintf(reason, rl, "no MSA segment in the ACK");
        return MLLP_ACK_INVALID;
    }
    if (code.len != 2) {
        snprintf(reason, rl, "MSA-1 is not an acknowledgment code");
        return MLLP_ACK_INVALID;
    }
    if (id.len && ctrl && ctrl[0] && !slice_eq(id, ctrl)) {
        snprintf(reason, rl, "ACK for another control id");
        return MLLP_ACK_OTHER_ID;
    }
    if (slice_eq(code, "AA") || slice_eq(code, "CA"))
        return MLLP_ACK_ACCEPTED;
    if (slice_eq(code, "AE") || slice_eq(code, "AR") || slice_eq(code, "CE") ||
        slice_eq(code, "CR")) {
        snprintf(reason, rl, "downstream answered %.2s", code.ptr);
        return MLLP_ACK_REFUSED;
    }
    snprintf(reason, rl, "MSA-1 is not an acknowledgment code");
    return MLLP_ACK_INVALID;
}

mllp_ack_t mllp_ack_read(const char *p, size_t n, const char *ctrl, char *reason, size_t rl)
{
    slice_t code = SLICE_NULL, id = SLICE_NULL;
    bool has_msa = mllp_ack_msa(p, n, &code, &id);
    return mllp_ack_judge(has_msa, code, id, ctrl, reason, rl);
}

void mllp_ack_text(const char *p, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    if (!cap)
        return;
    for (size_t i = 0; i < n;) {
        size_t e = seg_end(p, n, i);
        bool msa = e - i >= 4 && memcmp(p + i, "MSA", 3) == 0;
        bool err = e - i >= 4 && memcmp(p + i, "ERR", 3) == 0;
        if (msa || err) {
            size_t from = i;
            if (msa) {
                /* MSA-3, the text message: after the third field separator. */
                char sep = p[i + 3];
                int seen = 0;
                from = e;
                for (size_t j = i + 3; j < e; j++)
                    if (p[j] == sep && ++seen == 3) {
                        from = j + 1;
                        break;
                    }
                size_t to = from;
                while (to < e && p[to] != sep)
                    to++;
                e = to;
            }
            if (e > from && k + 1 < cap) {
                const char *label = msa ? "MSA-3: " : "";
                for (const char *l = label; *l && k + 1 < cap; l++)
                    out[k++] = *l;
                for (size_t j = from; j < e && k + 1 < cap; j++)
                    out[k++] = (unsigned char)p[j] < 0x20 || p[j] == 0x7f ? ' ' : p[j];
                if (k + 1 < cap)
                    out[k++] = '\n';
            }
        }
        i = seg_end(p, n, e);
        while (i < n && (p[i] == '\r' || p[i] == '\n'))
            i++;
    }
    out[k] = 0;
}
