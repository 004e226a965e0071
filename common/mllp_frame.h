/* mllp_frame.h - MLLP framing, 0x0B <message> 0x1C 0x0D, without I/O: the
 * framer that cuts a byte stream into frames (the listener's messages, the
 * downstream's ACKs) and the writer of one frame. Both ends use this one
 * copy, so inbound and outbound agree on every edge case.
 */
#ifndef SPINEGATE_MLLP_FRAME_H
#define SPINEGATE_MLLP_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define MLLP_SB 0x0B /* start block */
#define MLLP_EB 0x1C /* end block, followed by a carriage return */
#define MLLP_CR 0x0D
#define MLLP_OVERHEAD 3 /* bytes a frame adds around its content */

/* ---- framer (no I/O) --------------------------------------------------------
 * Feed it arbitrary chunks; it calls back once per complete frame. Rules:
 *  - bytes outside a frame are dropped and counted in `dropped`;
 *  - a frame ends only at 0x1C 0x0D; a lone 0x1C is content, so the end
 *    marker may be split across chunks at any point;
 *  - a 0x0B inside a frame restarts the frame: the partial frame before it is
 *    dropped (counted). HL7 content never holds 0x0B, so a second start block
 *    means the sender gave up on the first message and is resending; keeping
 *    the newest start is what gets that resend through;
 *  - a frame longer than max_size is not buffered: its first keep_head bytes
 *    are kept (enough for MSH, so an AR can carry the control id), the rest is
 *    counted and discarded up to the end marker, and it is reported oversized.
 */

typedef struct {
    buf_t *frame;   /* content without markers; for an oversized frame its
                       first keep_head bytes. Valid during the callback. */
    size_t total;   /* content length as sent */
    bool oversized; /* total > max_size */
} mllp_frame_t;

/* Called per complete frame (also an empty one). Return false to stop the
 * feed after this frame (backpressure, or the connection is closing). */
typedef bool (*mllp_framer_cb)(void *user, const mllp_frame_t *f);

typedef struct {
    size_t max_size, keep_head;
    int state;
    buf_t *acc; /* the frame being assembled when it spans chunks */
    size_t acc_cap;
    size_t total; /* content bytes of the current frame so far */
    bool oversized;
    uint64_t frames, oversized_frames, dropped;
} mllp_framer_t;

/* Prepares f. max_size 0 means 1 MiB; keep_head 0 means 1 KiB; keep_head is
 * clamped to max_size. */
void mllp_framer_init(mllp_framer_t *f, size_t max_size, size_t keep_head);

/* Feeds n bytes. Returns the bytes consumed: n, or fewer when a callback
 * asked to stop (then the count ends just after that frame's end marker, and
 * the rest can be fed again later). */
size_t mllp_framer_feed(mllp_framer_t *f, const void *data, size_t n, mllp_framer_cb cb,
                        void *user);

/* Content bytes of an unfinished frame (0 when between frames). */
size_t mllp_framer_partial(const mllp_framer_t *f);

/* Frees f's buffer; an unfinished frame is counted as dropped. */
void mllp_framer_free(mllp_framer_t *f);

/* Writes the frame of len bytes at p into out, which has room for
 * len + MLLP_OVERHEAD bytes; returns the end of what was written. */
char *mllp_frame_put(char *out, const void *p, size_t len);

#endif
