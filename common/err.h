/* err.h - the project's one status type and the parse-error detail.
 *
 * Every fallible function returns err_t; ERR_OK is zero. Parsers also fill an
 * err_detail_t with where the problem is (byte offset, segment, field, or a
 * path such as "DG1(2)-3" / "Claim.diagnosis[1]") and a short message written
 * for the sender: it is what goes into an ACK's ERR segment or an
 * OperationOutcome. The detail never holds message content (PHI).
 */
#ifndef SPINEGATE_ERR_H
#define SPINEGATE_ERR_H

#include <stddef.h>

/* X(name, description). Append new codes at the end: numbers are logged. */
#define ERR_MAP(X)                                                        \
    X(OK, "success")                                                      \
    X(NOMEM, "out of memory")                                             \
    X(EMPTY, "empty input")                                               \
    X(TOO_LARGE, "input exceeds the size limit")                          \
    X(NUL_BYTE, "NUL byte in input")                                      \
    X(TRUNCATED, "truncated input")                                       \
    X(NO_MSH, "message does not start with an MSH segment")               \
    X(BAD_DELIMS, "bad encoding characters in MSH-1/MSH-2")              \
    X(BAD_SEGMENT, "malformed segment")                                   \
    X(BAD_ESCAPE, "bad escape sequence")                                  \
    X(BAD_TERMINATOR, "segment terminator not allowed in strict mode")    \
    X(BAD_BATCH, "malformed batch envelope")                              \
    X(BAD_PATH, "malformed field path")                                   \
    X(NOT_FOUND, "not found")                                             \
    X(NO_SPACE, "output buffer too small")                                \
    X(BAD_JSON, "malformed JSON")                                         \
    X(BAD_XML, "malformed XML")                                           \
    X(TOO_DEEP, "nesting too deep")                                       \
    X(UNSUPPORTED, "unsupported message or resource type")                \
    X(BAD_VALUE, "invalid value")                                         \
    X(BAD_CONFIG, "invalid configuration")                                \
    X(BAD_PACK, "invalid rule pack")                                      \
    X(BAD_TABLE, "invalid code table")                                    \
    X(IO, "I/O error")                                                    \
    X(QUEUE, "queue storage error")                                       \
    X(BUSY, "resource busy, try again")                                   \
    X(CLOSED, "connection closed")                                        \
    X(TIMEOUT, "timed out")                                               \
    X(PROTOCOL, "protocol error")                                         \
    X(UNAUTHORIZED, "authentication required")                            \
    X(FORBIDDEN, "not permitted")

typedef enum {
#define ERR__ENUM(name, desc) ERR_##name,
    ERR_MAP(ERR__ENUM)
#undef ERR__ENUM
    ERR__COUNT
} err_t;

/* Returns a static description of code; never NULL. */
const char *err_str(err_t code);

/* Returns the short symbolic name ("BAD_ESCAPE"); never NULL. */
const char *err_name(err_t code);

typedef struct {
    err_t code;
    size_t offset;      /* byte offset into the input, when known */
    int segment;        /* 1-based segment index (HL7) or line (text), 0 if n/a */
    int field;          /* 1-based field number (HL7), 0 if n/a */
    char where[64];     /* "DG1(2)-3", "Claim.diagnosis[1]", "rules[3].severity" */
    char msg[192];      /* for the sender; never message content */
} err_detail_t;

/* Records code and a printf-style message in d (d may be NULL) and returns
 * code, so that parsers can write `return err_set(d, ERR_X, off, "...")`. */
err_t err_set(err_detail_t *d, err_t code, size_t offset, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Clears d to ERR_OK; accepts NULL. */
void err_clear(err_detail_t *d);

#endif
