/* hl7_escape.c - the HL7 v2 escape codec: decoding a raw value's escape
 * sequences into a caller buffer (on request only: the tokenizer never
 * decodes) and encoding a plain value for the wire. Neither allocates except
 * hl7_unescape_arena(), which writes into the caller's arena.
 */
#include "hl7_int.h"

#include <string.h>

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Appends n bytes to out if they fit; counts them either way. */
static inline void put(char *out, size_t cap, size_t *o, const char *s, size_t n)
{
    if (*o < cap) {
        size_t k = cap - *o < n ? cap - *o : n;
        memcpy(out + *o, s, k);
    }
    *o += n;
}

err_t hl7_unescape(const hl7_delims_t *dl, slice_t in, char *out, size_t cap, size_t *outlen,
                   err_detail_t *d)
{
    if (!dl)
        dl = &hl7_default_delims;
    const char E = dl->escape;
    const char *s = in.ptr;
    size_t n = in.len, o = 0, i = 0;
    *outlen = 0;
    while (i < n) {
        const char *q = s ? memchr(s + i, E, n - i) : NULL;
        size_t plain = (q ? (size_t)(q - s) : n) - i;
        put(out, cap, &o, s + i, plain);
        i += plain;
        if (!q)
            break;
        size_t open = i;
        const char *close = memchr(s + i + 1, E, n - i - 1);
        if (!close)
            return err_set(d, ERR_BAD_ESCAPE, open, "escape sequence at offset %zu is not closed",
                           open);
        size_t body = open + 1, blen = (size_t)(close - s) - body;
        const char *b = s + body;
        i = (size_t)(close - s) + 1;
        if (blen == 0)
            return err_set(d, ERR_BAD_ESCAPE, open, "empty escape sequence at offset %zu", open);
        char c = 0;
        if (blen == 1) {
            switch (b[0]) {
            case 'F': c = dl->field; break;
            case 'S': c = dl->component; break;
            case 'T': c = dl->subcomponent; break;
            case 'R': c = dl->repetition; break;
            case 'E': c = dl->escape; break;
            case 'P':
                if (dl->truncation)
                    c = dl->truncation;
                break;
            case 'H': /* highlighting on/off: no plain-text meaning */
            case 'N': continue;
            default: break;
            }
            if (c) {
                put(out, cap, &o, &c, 1);
                continue;
            }
        }
        switch (b[0]) {
        case 'X': {
            if (blen < 3 || (blen - 1) % 2)
                return err_set(d, ERR_BAD_ESCAPE, open,
                               "hex escape at offset %zu needs pairs of hex digits", open);
            for (size_t k = 1; k < blen; k += 2) {
                int hi = hexval((unsigned char)b[k]), lo = hexval((unsigned char)b[k + 1]);
                if (hi < 0 || lo < 0)
                    return err_set(d, ERR_BAD_ESCAPE, open,
                                   "hex escape at offset %zu holds a non-hex digit", open);
                char ch = (char)(hi << 4 | lo);
                put(out, cap, &o, &ch, 1);
            }
            continue;
        }
        case '.':
            if ((blen == 3 && memcmp(b, ".br", 3) == 0) || (blen >= 3 && memcmp(b, ".sp", 3) == 0))
                put(out, cap, &o, "\n", 1);
            else if (blen < 3)
                break;
            continue; /* other formatting commands: dropped */
        case 'C':
        case 'M': {
            /* Character set switches: \Cxxyy\ \Mxxyyzz\ (hex); dropped. */
            bool ok = (b[0] == 'C' && blen == 5) || (b[0] == 'M' && (blen == 5 || blen == 7));
            for (size_t k = 1; ok && k < blen; k++)
                ok = hexval((unsigned char)b[k]) >= 0;
            if (!ok)
                break;
            continue;
        }
        case 'Z':
            put(out, cap, &o, s + open, blen + 2);
            continue;
        default: break;
        }
        return err_set(d, ERR_BAD_ESCAPE, open, "unknown escape sequence at offset %zu", open);
    }
    *outlen = o;
    if (o > cap)
        return err_set(d, ERR_NO_SPACE, 0, "decoded value needs %zu bytes, buffer holds %zu", o,
                       cap);
    return ERR_OK;
}

err_t hl7_unescape_arena(const hl7_msg_t *m, slice_t in, arena_t *a, char **out, err_detail_t *d)
{
    *out = NULL;
    const hl7_delims_t *dl = m ? &m->dl : &hl7_default_delims;
    /* Decoding never grows a value (\Z..\ is copied as is, same length). */
    if (!in.ptr || !memchr(in.ptr, dl->escape, in.len)) {
        *out = arena_strndup(a, in.ptr ? in.ptr : "", in.len);
        return ERR_OK;
    }
    char *buf = arena_alloc(a, in.len + 1);
    size_t n;
    err_t rc = hl7_unescape(dl, in, buf, in.len, &n, d);
    if (rc == ERR_BAD_ESCAPE && d && m && in.ptr >= m->base && in.ptr <= m->base + m->len)
        d->offset += (size_t)(in.ptr - m->base);
    if (rc != ERR_OK)
        return rc;
    buf[n] = '\0';
    *out = buf;
    return ERR_OK;
}

size_t hl7_escape(const hl7_delims_t *dl, const char *in, size_t len, char *out, size_t cap)
{
    if (!dl)
        dl = &hl7_default_delims;
    size_t o = 0;
    char seq[3] = {dl->escape, 0, dl->escape};
    for (size_t i = 0; i < len; i++) {
        char c = in[i], code = 0;
        if (c == dl->field)
            code = 'F';
        else if (c == dl->component)
            code = 'S';
        else if (c == dl->subcomponent)
            code = 'T';
        else if (c == dl->repetition)
            code = 'R';
        else if (c == dl->escape)
            code = 'E';
        else if (dl->truncation && c == dl->truncation)
            code = 'P';
        if (code) {
            seq[1] = code;
            put(out, cap, &o, seq, 3);
        } else if (c == '\r' || c == '\n') {
            char x[6] = {dl->escape, 'X', '0', c == '\r' ? 'D' : 'A', dl->escape, 0};
            put(out, cap, &o, x, 5);
        } else {
            if (o < cap)
                out[o] = c;
            o++;
        }
    }
    return o;
}
