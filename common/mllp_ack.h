/* mllp_ack.h - reading the HL7 ACK a downstream answers over MLLP: MSA-1
 * (the acknowledgment code), MSA-2 (the control id it answers) and, for the
 * dead-letter note, its human text. Pure functions on the frame's content
 * (common/mllp_frame.h cuts the frames); hostile input is fine.
 */
#ifndef SPINEGATE_MLLP_ACK_H
#define SPINEGATE_MLLP_ACK_H

#include <stdbool.h>
#include <stddef.h>

#include "slice.h"

typedef enum {
    MLLP_ACK_ACCEPTED, /* AA or CA */
    MLLP_ACK_REFUSED,  /* AE, AR, CE or CR: the receiver refused the message */
    MLLP_ACK_OTHER_ID, /* MSA-2 names another control id than the one expected */
    MLLP_ACK_INVALID,  /* no MSA segment, or MSA-1 is not an acknowledgment code */
} mllp_ack_t;

/* MSA-1 and MSA-2 of an ACK (either may be empty), as slices into p. False
 * when it has no MSA segment. */
bool mllp_ack_msa(const char *p, size_t n, slice_t *code, slice_t *ctrl);

/* mllp_ack_read's judgement of MSA-1 and MSA-2 found by mllp_ack_msa
 * (has_msa is what it returned), for a caller that already has them. */
mllp_ack_t mllp_ack_judge(bool has_msa, slice_t code, slice_t id, const char *ctrl, char *reason,
                          size_t rl);

/* Reads the ACK of the message whose control id is ctrl ("" or NULL: any).
 * For anything but MLLP_ACK_ACCEPTED, reason says why in a few words that
 * quote nothing of the ACK but its code ("downstream answered AR", "no MSA
 * segment in the ACK", "ACK for another control id"). */
mllp_ack_t mllp_ack_read(const char *p, size_t n, const char *ctrl, char *reason, size_t rl);

/* The text of an ACK's MSA-3 and ERR segments, one per line, for the
 * dead-letter note: at most cap-1 bytes, control characters as spaces. */
void mllp_ack_text(const char *p, size_t n, char *out, size_t cap);

#endif
