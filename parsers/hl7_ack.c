/* hl7_ack.c - ACK, AR-for-unparseable and annotation writers (contract in
 * hl7_ack.h). Segments are built with the hl7.h segment writer, so every
 * value is escaped with the original message's delimiters; outputs live in
 * the caller's arena.
 */
#include "hl7_ack.h"
#include "hl7_int.h"

#include <stdio.h>
#include <string.h>

const char *hl7_ack_code_str(hl7_ack_code_t c)
{
    switch (c) {
    case HL7_ACK_AA: return "AA";
    case HL7_ACK_AE: return "AE";
    case HL7_ACK_AR: return "AR";
    case HL7_ACK_CA: return "CA";
    case HL7_ACK_CE: return "CE";
    case HL7_ACK_CR: return "CR";
    default: return "";
    }
}

hl7_ack_code_t hl7_ack_code(const hl7_msg_t *msg, hl7_outcome_t outcome)
{
    slice_t accept = SLICE_NULL, app = SLICE_NULL;
    if (msg) {
        accept = hl7_value(msg, 0, 15, 1, 1, 0);
        app = hl7_value(msg, 0, 16, 1, 1, 0);
    }
    bool enhanced = accept.len || app.len;
    if (!enhanced) {
        switch (outcome) {
        case HL7_OUTCOME_ACCEPTED:
        case HL7_OUTCOME_ANNOTATED: return HL7_ACK_AA;
        case HL7_OUTCOME_REJECTED: return HL7_ACK_AE;
        default: return HL7_ACK_AR;
        }
    }
    hl7_ack_code_t c;
    switch (outcome) {
    case HL7_OUTCOME_ACCEPTED:
    case HL7_OUTCOME_ANNOTATED: c = HL7_ACK_CA; break;
    case HL7_OUTCOME_UNPARSEABLE: c = HL7_ACK_CR; break;
    default: c = HL7_ACK_CE; break;
    }
    if (slice_eq(accept, "NE"))
        return HL7_ACK_NONE;
    if (slice_eq(accept, "ER") && c == HL7_ACK_CA)
        return HL7_ACK_NONE;
    if (slice_eq(accept, "SU") && c != HL7_ACK_CA)
        return HL7_ACK_NONE;
    return c;
}

/* MSH-12.1 as major * 10 + minor ("2.5.1" -> 25); 25 when unreadable. */
static int version_of(const hl7_msg_t *m)
{
    slice_t v = hl7_value(m, 0, 12, 1, 1, 0);
    if (v.len < 3 || v.ptr[0] < '1' || v.ptr[0] > '9' || v.ptr[1] != '.' || v.ptr[2] < '0' ||
        v.ptr[2] > '9')
        return 25;
    int minor = v.ptr[2] - '0';
    if (v.len > 3 && v.ptr[3] >= '0' && v.ptr[3] <= '9')
        minor = minor * 10 + (v.ptr[3] - '0');
    return (v.ptr[0] - '0') * 10 + (minor > 9 ? 9 : minor);
}

static void set_s(hl7_seg_t *s, int f, int r, int c, int sub, const char *v)
{
    if (v && *v)
        (void)hl7_seg_set(s, f, r, c, sub, v, strlen(v));
}

static void set_raw(hl7_seg_t *s, int f, slice_t v)
{
    if (v.len)
        (void)hl7_seg_set_raw(s, f, 0, 0, 0, v.ptr, v.len);
}

static char sev_letter(rule_severity_t s)
{
    return s == RULE_SEV_REJECT ? 'E' : s == RULE_SEV_WARN ? 'W' : 'I';
}

typedef struct {
    const char *code, *text;
} table0357_t;

static table0357_t err_0357(err_t e)
{
    switch (e) {
    case ERR_NO_MSH:
    case ERR_BAD_SEGMENT:
    case ERR_BAD_BATCH: return (table0357_t){"100", "Segment sequence error"};
    case ERR_BAD_DELIMS:
    case ERR_BAD_ESCAPE:
    case ERR_NUL_BYTE:
    case ERR_TRUNCATED:
    case ERR_BAD_TERMINATOR:
    case ERR_BAD_VALUE: return (table0357_t){"102", "Data type error"};
    case ERR_UNSUPPORTED: return (table0357_t){"200", "Unsupported message type"};
    default: return (table0357_t){"207", "Application internal error"};
    }
}

/* Fills the location (ERL from v2.5, the first three parts of ERR-1 before)
 * from a path such as "DG1(2)-3" or "FT1(1)"; leaves it empty otherwise.
 * field_no is ERR-1 / ERR-2. */
static void put_location(hl7_seg_t *s, int field_no, const char *loc)
{
    hl7_path_t p;
    if (!loc || hl7_path_parse(loc, strlen(loc), &p, NULL) != ERR_OK)
        return;
    bool occ_known = strchr(loc, '(') != NULL && loc[3] == '(';
    char num[16];
    (void)hl7_seg_set(s, field_no, 1, 1, 0, p.seg, 3);
    int vals[5] = {occ_known ? p.occ : 0, p.field, p.rep, p.comp, p.sub};
    for (int k = 0; k < 5; k++) {
        if (!vals[k] || (field_no == 1 && k > 1))
            continue;
        snprintf(num, sizeof num, "%d", vals[k]);
        set_s(s, field_no, 1, k + 2, 0, num);
    }
}

static hl7_seg_t *err_seg(arena_t *a, const hl7_delims_t *dl, int ver, const char *loc,
                          table0357_t code, char sev, const char *app_code, const char *diag,
                          const char *message)
{
    hl7_seg_t *s = hl7_seg_new(a, dl, "ERR");
    if (ver >= 25) {
        put_location(s, 2, loc);
        set_s(s, 3, 1, 1, 0, code.code);
        set_s(s, 3, 1, 2, 0, code.text);
        set_s(s, 3, 1, 3, 0, "HL70357");
        char sv[2] = {sev, 0};
        set_s(s, 4, 0, 0, 0, sv);
        set_s(s, 5, 1, 1, 0, app_code);
        set_s(s, 7, 0, 0, 0, diag);
        set_s(s, 8, 0, 0, 0, message);
    } else {
        put_location(s, 1, loc);
        set_s(s, 1, 1, 4, 1, code.code);
        set_s(s, 1, 1, 4, 2, code.text);
        set_s(s, 1, 1, 4, 3, "HL70357");
    }
    return s;
}

static void put_seg(hl7__buf_t *b, hl7_seg_t *s)
{
    slice_t t = hl7_seg_write(s);
    hl7__buf_put(b, t.ptr, t.len);
    hl7__buf_putc(b, '\r');
}

err_t hl7_ack_build(const hl7_msg_t *msg, const hl7_ack_opts_t *o, arena_t *a, slice_t *out)
{
    *out = SLICE_NULL;
    if (!o || !o->timestamp || !*o->timestamp || !o->control_id || !*o->control_id ||
        o->code == HL7_ACK_NONE || hl7_seg_count(msg) == 0)
        return ERR_BAD_VALUE;
    const hl7_delims_t *dl = hl7_msg_delims(msg);
    int ver = version_of(msg);
    hl7_seg_t *msh = hl7_seg_new(a, dl, "MSH");
    set_raw(msh, 3, hl7_field(msg, 0, 5));
    set_raw(msh, 4, hl7_field(msg, 0, 6));
    set_raw(msh, 5, hl7_field(msg, 0, 3));
    set_raw(msh, 6, hl7_field(msg, 0, 4));
    set_s(msh, 7, 0, 0, 0, o->timestamp);
    slice_t trig = hl7_value(msg, 0, 9, 1, 2, 0);
    set_s(msh, 9, 1, 1, 0, "ACK");
    if (trig.len) {
        (void)hl7_seg_set_raw(msh, 9, 1, 2, 0, trig.ptr, trig.len);
        if (ver >= 24)
            set_s(msh, 9, 1, 3, 0, "ACK");
    }
    set_s(msh, 10, 0, 0, 0, o->control_id);
    set_raw(msh, 11, hl7_field(msg, 0, 11));
    set_raw(msh, 12, hl7_field(msg, 0, 12));
    set_raw(msh, 18, hl7_field(msg, 0, 18));

    const char *text = o->text;
    if (!text && ver < 25) {
        /* Before 2.5 ERR has no message: MSA-3 carries the first one. */
        if (o->error)
            text = o->error->msg;
        else if (o->verdict && o->verdict->nfindings)
            text = o->verdict->findings[0].message;
    }
    hl7_seg_t *msa = hl7_seg_new(a, dl, "MSA");
    set_s(msa, 1, 0, 0, 0, hl7_ack_code_str(o->code));
    slice_t orig_id = hl7_field(msg, 0, 10);
    if (orig_id.len)
        (void)hl7_seg_set_raw(msa, 2, 0, 0, 0, orig_id.ptr, orig_id.len);
    else
        (void)hl7_seg_set(msa, 2, 0, 0, 0, "", 0);
    if (text && *text) {
        /* MSA-3 is ST(80) */
        size_t n = strlen(text);
        (void)hl7_seg_set(msa, 3, 0, 0, 0, text, n > 80 ? 80 : n);
    }

    hl7__buf_t b;
    hl7__buf_init(&b, a, 512);
    put_seg(&b, msh);
    put_seg(&b, msa);
    if (o->error) {
        const err_detail_t *e = o->error;
        char diag[96];
        snprintf(diag, sizeof diag, "segment %d, byte offset %zu", e->segment, e->offset);
        put_seg(&b, err_seg(a, dl, ver, e->where[0] ? e->where : NULL, err_0357(e->code), 'E',
                            err_name(e->code), diag, e->msg));
    }
    for (size_t i = 0; o->verdict && i < o->verdict->nfindings; i++) {
        const rule_finding_t *f = &o->verdict->findings[i];
        table0357_t code = f->code_invalid ? (table0357_t){"103", "Table value not found"}
                                           : (table0357_t){"207", "Application internal error"};
        char *diag = f->suggestion ? arena_printf(a, "suggested: %s", f->suggestion) : NULL;
        put_seg(&b, err_seg(a, dl, ver, f->location, code, sev_letter(f->severity), f->rule_id,
                            diag, f->message));
    }
    *out = hl7__buf_done(&b);
    return ERR_OK;
}

err_t hl7_ack_build_raw(const char *data, size_t len, const err_detail_t *perr,
                        const hl7_ack_opts_t *o, arena_t *a, slice_t *out)
{
    *out = SLICE_NULL;
    if (!o)
        return ERR_BAD_VALUE;
    /* Salvage: the first line alone, when it parses as an MSH. */
    size_t n = 0;
    while (data && n < len && n < 65536 && data[n] != '\r' && data[n] != '\n' && data[n] != '\0')
        n++;
    hl7_msg_t *m = hl7_msg_new();
    static const char fallback[] = "MSH|^~\\&|||||||||P|2.5";
    if (n < 8 || hl7_msg_parse(m, data, n, NULL, NULL) != ERR_OK)
        (void)hl7_msg_parse(m, fallback, sizeof fallback - 1, NULL, NULL);
    hl7_ack_opts_t o2 = *o;
    o2.verdict = NULL;
    o2.error = perr;
    err_t rc = hl7_ack_build(m, &o2, a, out);
    hl7_msg_free(m);
    return rc;
}

slice_t hl7_annotate(const hl7_msg_t *msg, const rule_verdict_t *v, hl7_annotate_style_t style,
                     arena_t *a)
{
    hl7_edit_t *e = hl7_edit_new(msg, a);
    if (!v || v->nfindings == 0)
        return hl7_edit_write(e);
    const hl7_delims_t *dl = hl7_msg_delims(msg);
    size_t nseg = hl7_seg_count(msg), at = nseg;
    for (size_t i = nseg; i-- > 0;) {
        if (slice_eq(hl7_seg_id(msg, i), "DG1")) {
            at = i + 1;
            break;
        }
    }
    for (size_t k = 0; k < v->nfindings; k++) {
        const rule_finding_t *f = &v->findings[k];
        char setid[24], sev[2] = {sev_letter(f->severity), 0};
        snprintf(setid, sizeof setid, "%zu", k + 1);
        hl7_seg_t *s;
        if (style == HL7_ANNOTATE_NTE) {
            s = hl7_seg_new(a, dl, "NTE");
            set_s(s, 1, 0, 0, 0, setid);
            set_s(s, 2, 0, 0, 0, "O");
            hl7__buf_t t;
            hl7__buf_init(&t, a, 128);
            char head[64];
            snprintf(head, sizeof head, "[%s] ", sev);
            hl7__buf_put(&t, head, strlen(head));
            const char *parts[] = {f->rule_id, f->location, f->message};
            for (int p = 0; p < 3; p++) {
                if (!parts[p])
                    continue;
                hl7__buf_put(&t, parts[p], strlen(parts[p]));
                hl7__buf_put(&t, p < 2 ? " " : "", p < 2 ? 1 : 0);
            }
            for (int c = 0; c < f->ncodes; c++) {
                hl7__buf_put(&t, c ? ", " : " (codes: ", c ? 2 : 9);
                hl7__buf_put(&t, f->codes[c], strlen(f->codes[c]));
                if (c == f->ncodes - 1)
                    hl7__buf_putc(&t, ')');
            }
            if (f->suggestion) {
                hl7__buf_put(&t, " (suggested: ", 13);
                hl7__buf_put(&t, f->suggestion, strlen(f->suggestion));
                hl7__buf_putc(&t, ')');
            }
            slice_t txt = hl7__buf_done(&t);
            (void)hl7_seg_set(s, 3, 0, 0, 0, txt.ptr, txt.len);
        } else {
            s = hl7_seg_new(a, dl, "ZSG");
            set_s(s, 1, 0, 0, 0, setid);
            set_s(s, 2, 0, 0, 0, f->rule_id);
            set_s(s, 3, 0, 0, 0, sev);
            for (int c = 0; c < f->ncodes && c < RULE_MAX_CODES; c++)
                set_s(s, 4, c + 1, 0, 0, f->codes[c]);
            set_s(s, 5, 0, 0, 0, f->location);
            set_s(s, 6, 0, 0, 0, f->suggestion);
            set_s(s, 7, 0, 0, 0, f->message);
        }
        (void)hl7_edit_insert(e, at, s);
    }
    return hl7_edit_write(e);
}
