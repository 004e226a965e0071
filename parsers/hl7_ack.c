/* hl7_ack.c - ACK, AR-for-unparseable and annotation writers (contract in
 * hl7_ack.h). Segments are written value by value straight into the output
 * (hl7__segw_*, the writer's fast path, same bytes as hl7.h's segments), so
 * every value is escaped with the original message's delimiters; outputs
 * live in the caller's arena.
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

/* Whether an acknowledgment condition (table 0155) asks for an ACK with
 * code c: NE never, ER on errors, SU on success; empty and unknown values
 * answer with `otherwise`. */
static bool wanted(slice_t cond, hl7_ack_code_t c, bool otherwise)
{
    bool success = c == HL7_ACK_AA || c == HL7_ACK_CA;
    if (slice_eq(cond, "AL"))
        return true;
    if (slice_eq(cond, "NE"))
        return false;
    if (slice_eq(cond, "ER"))
        return !success;
    if (slice_eq(cond, "SU"))
        return success;
    return otherwise;
}

static hl7_ack_plan_t plan(slice_t accept_cond, slice_t app_cond, hl7_outcome_t outcome)
{
    hl7_ack_plan_t p = {
        .enhanced = accept_cond.len || app_cond.len, .accept = HL7_ACK_NONE, .app = HL7_ACK_NONE};
    bool stored = outcome == HL7_OUTCOME_ACCEPTED || outcome == HL7_OUTCOME_ANNOTATED ||
                  outcome == HL7_OUTCOME_REJECTED;
    hl7_ack_code_t verdict = outcome == HL7_OUTCOME_REJECTED ? HL7_ACK_AE
                             : stored                        ? HL7_ACK_AA
                                                             : HL7_ACK_AR;
    if (!p.enhanced) {
        p.app = verdict;
        return p;
    }
    hl7_ack_code_t commit = stored                                ? HL7_ACK_CA
                            : outcome == HL7_OUTCOME_STORE_FAILED ? HL7_ACK_CE
                                                                  : HL7_ACK_CR;
    /* An empty MSH-15 beside a valued MSH-16 still gets the accept ACK: the
     * sender is in enhanced mode and waits for it. */
    if (wanted(accept_cond, commit, true))
        p.accept = commit;
    /* Only a message the gate took responsibility for has a verdict to
     * report. An empty MSH-16 asks for nothing: an ACK the sender does not
     * read would be taken as the answer to its next message. */
    if (stored && wanted(app_cond, verdict, app_cond.len > 0))
        p.app = verdict;
    return p;
}

hl7_ack_plan_t hl7_ack_plan(const hl7_msg_t *msg, hl7_outcome_t outcome)
{
    slice_t accept = SLICE_NULL, app = SLICE_NULL;
    if (msg && hl7_seg_count(msg)) {
        accept = hl7_value(msg, 0, 15, 1, 1, 0);
        app = hl7_value(msg, 0, 16, 1, 1, 0);
    }
    return plan(accept, app, outcome);
}

/* The first line of data parsed as a message of its own, when it is an
 * MSH; NULL otherwise. The caller frees it. */
static hl7_msg_t *salvage_msh(const char *data, size_t len)
{
    size_t n = 0;
    while (data && n < len && n < 65536 && data[n] != '\r' && data[n] != '\n' && data[n] != '\0')
        n++;
    hl7_msg_t *m = hl7_msg_new();
    if (n < 8 || hl7_msg_parse(m, data, n, NULL, NULL) != ERR_OK) {
        hl7_msg_free(m);
        return NULL;
    }
    return m;
}

hl7_ack_plan_t hl7_ack_plan_raw(const char *data, size_t len, hl7_outcome_t outcome)
{
    hl7_msg_t *m = salvage_msh(data, len);
    hl7_ack_plan_t p = hl7_ack_plan(m, outcome);
    hl7_msg_free(m);
    return p;
}

hl7_ack_code_t hl7_ack_code(const hl7_msg_t *msg, hl7_outcome_t outcome)
{
    hl7_ack_plan_t p = hl7_ack_plan(msg, outcome);
    return p.enhanced ? p.accept : p.app;
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

/* Writes v, escaped, when it has a value: a missing one leaves its
 * position empty. */
static void put_s(hl7__segw_t *w, int f, int r, int c, int sub, const char *v)
{
    if (v && *v)
        hl7__segw_put(w, f, r, c, sub, v, strlen(v), false);
}

static void put_raw(hl7__segw_t *w, int f, slice_t v)
{
    if (v.len)
        hl7__segw_put(w, f, 0, 0, 0, v.ptr, v.len, true);
}

/* v in decimal into buf (24 bytes at least, NUL-terminated); returns its
 * length. What snprintf's "%lld" gives, at a fraction of its cost. */
static size_t fmt_int(char *buf, long long v)
{
    size_t len = 0;
    if (v < 0)
        buf[len++] = '-';
    len += str_udec(buf + len, v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v);
    buf[len] = '\0';
    return len;
}

/* Writes v in decimal at a position. */
static void put_int(hl7__segw_t *w, int f, int r, int c, int sub, long long v)
{
    char num[24];
    size_t n = fmt_int(num, v);
    hl7__segw_put(w, f, r, c, sub, num, n, false);
}

static char sev_letter(rule_severity_t s)
{
    return s == RULE_SEV_REJECT ? 'E' : s == RULE_SEV_WARN ? 'W' : 'I';
}

hl7_0357_t hl7_ack_error_0357(err_t e, int version)
{
    switch (e) {
    case ERR_EMPTY:
    case ERR_NO_MSH:
    case ERR_BAD_SEGMENT:
    case ERR_BAD_BATCH: return (hl7_0357_t){"100", "Segment sequence error"};
    case ERR_BAD_DELIMS:
    case ERR_BAD_ESCAPE:
    case ERR_NUL_BYTE:
    case ERR_TRUNCATED:
    case ERR_BAD_TERMINATOR:
    case ERR_BAD_VALUE: return (hl7_0357_t){"102", "Data type error"};
    case ERR_TOO_LARGE:
        /* 104 entered table 0357 in v2.7; before, length was part of the data type. */
        return version >= 27 ? (hl7_0357_t){"104", "Value too long"}
                             : (hl7_0357_t){"102", "Data type error"};
    case ERR_UNSUPPORTED: return (hl7_0357_t){"200", "Unsupported message type"};
    default: return (hl7_0357_t){"207", "Application internal error"};
    }
}

hl7_0357_t hl7_ack_finding_0357(const rule_finding_t *f)
{
    if (f->severity != RULE_SEV_REJECT)
        return (hl7_0357_t){"0", "Message accepted"};
    return (hl7_0357_t){"103", "Table value not found"};
}

/* Fills the location (ERL from v2.5, the first three parts of ERR-1 before)
 * from a path such as "DG1(2)-3" or "FT1(1)"; leaves it empty otherwise.
 * field_no is ERR-1 / ERR-2. */
static void put_location(hl7__segw_t *w, int field_no, const char *loc)
{
    hl7_path_t p;
    if (!loc || hl7_path_parse(loc, strlen(loc), &p, NULL) != ERR_OK)
        return;
    bool occ_known = strchr(loc, '(') != NULL && loc[3] == '(';
    hl7__segw_put(w, field_no, 1, 1, 0, p.seg, 3, false);
    int vals[5] = {occ_known ? p.occ : 0, p.field, p.rep, p.comp, p.sub};
    for (int k = 0; k < 5; k++) {
        if (!vals[k] || (field_no == 1 && k > 1))
            continue;
        put_int(w, field_no, 1, k + 2, 0, vals[k]);
    }
}

/* Writes one ERR segment, and the \r that ends it, at the end of b. */
static void put_err(hl7__buf_t *b, const hl7_delims_t *dl, int ver, const char *loc,
                    hl7_0357_t code, char sev, const char *app_code, const char *diag,
                    const char *message)
{
    hl7__segw_t w;
    hl7__segw_open(&w, b, dl, "ERR");
    if (ver >= 25) {
        put_location(&w, 2, loc);
        put_s(&w, 3, 1, 1, 0, code.code);
        put_s(&w, 3, 1, 2, 0, code.text);
        put_s(&w, 3, 1, 3, 0, "HL70357");
        char sv[2] = {sev, 0};
        put_s(&w, 4, 0, 0, 0, sv);
        put_s(&w, 5, 1, 1, 0, app_code);
        put_s(&w, 7, 0, 0, 0, diag);
        put_s(&w, 8, 0, 0, 0, message);
    } else {
        put_location(&w, 1, loc);
        put_s(&w, 1, 1, 4, 1, code.code);
        put_s(&w, 1, 1, 4, 2, code.text);
        put_s(&w, 1, 1, 4, 3, "HL70357");
    }
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
    /* Segments are written straight into the output, values in field order. */
    hl7__buf_t b;
    hl7__buf_init(&b, a, 512);
    hl7__segw_t w;
    hl7__segw_open(&w, &b, dl, "MSH");
    put_raw(&w, 3, hl7_field(msg, 0, 5));
    put_raw(&w, 4, hl7_field(msg, 0, 6));
    put_raw(&w, 5, hl7_field(msg, 0, 3));
    put_raw(&w, 6, hl7_field(msg, 0, 4));
    put_s(&w, 7, 0, 0, 0, o->timestamp);
    slice_t trig = hl7_value(msg, 0, 9, 1, 2, 0);
    put_s(&w, 9, 1, 1, 0, "ACK");
    if (trig.len) {
        hl7__segw_put(&w, 9, 1, 2, 0, trig.ptr, trig.len, true);
        if (ver >= 24)
            put_s(&w, 9, 1, 3, 0, "ACK");
    }
    put_s(&w, 10, 0, 0, 0, o->control_id);
    put_raw(&w, 11, hl7_field(msg, 0, 11));
    put_raw(&w, 12, hl7_field(msg, 0, 12));
    if (o->no_ack_back) {
        put_s(&w, 15, 0, 0, 0, "NE");
        put_s(&w, 16, 0, 0, 0, "NE");
    }
    put_raw(&w, 18, hl7_field(msg, 0, 18));
    hl7__buf_putc(&b, '\r');

    const char *text = o->text;
    if (!text && ver < 25) {
        /* Before 2.5 ERR has no message: MSA-3 carries the first one. */
        if (o->error)
            text = o->error->msg;
        else if (o->verdict && o->verdict->nfindings)
            text = o->verdict->findings[0].message;
    }
    hl7__segw_open(&w, &b, dl, "MSA");
    put_s(&w, 1, 0, 0, 0, hl7_ack_code_str(o->code));
    slice_t orig_id = hl7_field(msg, 0, 10);
    if (orig_id.len)
        hl7__segw_put(&w, 2, 0, 0, 0, orig_id.ptr, orig_id.len, true);
    else
        hl7__segw_put(&w, 2, 0, 0, 0, "", 0, false);
    if (text && *text) {
        /* MSA-3 is ST(80) */
        size_t n = strlen(text);
        hl7__segw_put(&w, 3, 0, 0, 0, text, n > 80 ? 80 : n, false);
    }
    hl7__buf_putc(&b, '\r');

    if (o->error) {
        const err_detail_t *e = o->error;
        char diag[96];
        snprintf(diag, sizeof diag, "segment %d, byte offset %zu", e->segment, e->offset);
        put_err(&b, dl, ver, e->where[0] ? e->where : NULL, hl7_ack_error_0357(e->code, ver), 'E',
                err_name(e->code), diag, e->msg);
    }
    for (size_t i = 0; o->verdict && i < o->verdict->nfindings; i++) {
        const rule_finding_t *f = &o->verdict->findings[i];
        hl7_0357_t code = hl7_ack_finding_0357(f);
        char *diag = f->suggestion ? arena_printf(a, "suggested: %s", f->suggestion) : NULL;
        put_err(&b, dl, ver, f->location, code, sev_letter(f->severity), f->rule_id, diag,
                f->message);
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
    hl7_msg_t *m = salvage_msh(data, len);
    static const char fallback[] = "MSH|^~\\&|||||||||P|2.5";
    if (!m) {
        m = hl7_msg_new();
        (void)hl7_msg_parse(m, fallback, sizeof fallback - 1, NULL, NULL);
    }
    hl7_ack_opts_t o2 = *o;
    o2.verdict = NULL;
    o2.error = perr;
    err_t rc = hl7_ack_build(m, &o2, a, out);
    hl7_msg_free(m);
    return rc;
}

/* The version written in ZSH-1 and the NTE header; a later layout bumps it
 * and keeps recognising the older ones. */
#define ANNOTATION_FORMAT "1"

/* Writes the annotation header segment at the end of b. */
static void put_header(hl7__buf_t *b, arena_t *a, const hl7_delims_t *dl, const rule_verdict_t *v,
                       const hl7_annotate_opts_t *o)
{
    size_t n = v ? v->nfindings : 0;
    const char *verdict = verdict_name(v ? v->kind : VERDICT_ACCEPT);
    const char *code_set = v && v->code_set ? v->code_set : "";
    const char *fit = rule_codeset_fit_name(v ? v->code_set_fit : RULE_CODESET_IN_RANGE);
    const char *pack = o->pack_name ? o->pack_name : "";
    hl7__segw_t w;
    if (o->style == HL7_ANNOTATE_NTE) {
        const char *sets = code_set[0] ? NULL : "none"; /* "FY2026,FY2027" */
        for (size_t i = 0; v && i < rule_verdict_ncode_sets(v); i++)
            sets = sets ? arena_printf(a, "%s,%s", sets, rule_verdict_code_set_at(v, i))
                        : rule_verdict_code_set_at(v, i);
        hl7__segw_open(&w, b, dl, "NTE"); /* NTE-1 empty: the findings keep 1..n */
        put_s(&w, 2, 0, 0, 0, "O");
        const char *t =
            arena_printf(a,
                         "[spinegate " ANNOTATION_FORMAT
                         "] verdict=%s pack=%s v%d code-set=%s (%s) findings=%zu",
                         verdict, pack, o->pack_version, sets ? sets : "none", fit, n);
        put_s(&w, 3, 0, 0, 0, t);
        return;
    }
    hl7__segw_open(&w, b, dl, "ZSH");
    put_s(&w, 1, 0, 0, 0, ANNOTATION_FORMAT);
    put_s(&w, 2, 0, 0, 0, "spinegate");
    put_s(&w, 3, 0, 0, 0, verdict);
    put_s(&w, 4, 0, 0, 0, pack);
    if (o->pack_version)
        put_int(&w, 5, 0, 0, 0, o->pack_version);
    /* ZSH-6 repeats: every table used, two when dated lines span years. */
    for (size_t i = 0; v && i < rule_verdict_ncode_sets(v); i++)
        put_s(&w, 6, (int)i + 1, 0, 0, rule_verdict_code_set_at(v, i));
    if (code_set[0])
        put_s(&w, 7, 0, 0, 0, fit);
    put_int(&w, 8, 0, 0, 0, (long long)n);
}

static void put_text(hl7__buf_t *t, const char *s)
{
    hl7__buf_put(t, s, strlen(s));
}

/* Writes the segment of finding k (0-based) at the end of b. */
static void put_finding(hl7__buf_t *b, arena_t *a, const hl7_delims_t *dl,
                        hl7_annotate_style_t style, const rule_finding_t *f, size_t k)
{
    char sev[2] = {sev_letter(f->severity), 0};
    hl7__segw_t w;
    if (style == HL7_ANNOTATE_NTE) {
        hl7__segw_open(&w, b, dl, "NTE");
        put_int(&w, 1, 0, 0, 0, (long long)k + 1);
        put_s(&w, 2, 0, 0, 0, "O");
        hl7__buf_t t;
        hl7__buf_init(&t, a, 128);
        hl7__buf_putc(&t, '[');
        hl7__buf_putc(&t, sev[0]);
        hl7__buf_put(&t, "] ", 2);
        const char *parts[] = {f->rule_id, f->location, f->message};
        for (int p = 0; p < 3; p++) {
            if (!parts[p])
                continue;
            put_text(&t, parts[p]);
            hl7__buf_put(&t, p < 2 ? " " : "", p < 2 ? 1 : 0);
        }
        for (int c = 0; c < f->ncodes; c++) {
            hl7__buf_put(&t, c ? ", " : " (codes: ", c ? 2 : 9);
            put_text(&t, f->codes[c]);
            if (c == f->ncodes - 1)
                hl7__buf_putc(&t, ')');
        }
        if (f->suggestion) {
            hl7__buf_put(&t, " (suggested: ", 13);
            put_text(&t, f->suggestion);
            hl7__buf_putc(&t, ')');
        }
        hl7__segw_put(&w, 3, 0, 0, 0, t.p, t.len, false);
        return;
    }
    hl7__segw_open(&w, b, dl, "ZSG");
    put_int(&w, 1, 0, 0, 0, (long long)k + 1);
    put_s(&w, 2, 0, 0, 0, f->rule_id);
    put_s(&w, 3, 0, 0, 0, sev);
    for (int c = 0; c < f->ncodes && c < RULE_MAX_CODES; c++)
        put_s(&w, 4, c + 1, 0, 0, f->codes[c]);
    put_s(&w, 5, 0, 0, 0, f->location);
    put_s(&w, 6, 0, 0, 0, f->suggestion);
    put_s(&w, 7, 0, 0, 0, f->message);
}

slice_t hl7_annotate(const hl7_msg_t *msg, const rule_verdict_t *v, const hl7_annotate_opts_t *o,
                     arena_t *a)
{
    static const hl7_annotate_opts_t defaults = {.style = HL7_ANNOTATE_ZSG};
    if (!o)
        o = &defaults;
    hl7_edit_t *e = hl7_edit_new(msg, a);
    size_t nfindings = v ? v->nfindings : 0;
    if (nfindings == 0 && !o->header_when_accepted)
        return hl7_edit_write(e);
    const hl7_delims_t *dl = hl7_msg_delims(msg);
    size_t nseg = hl7_seg_count(msg), at = nseg;
    for (size_t i = nseg; i-- > 0;) {
        if (slice_eq(hl7_seg_id(msg, i), "DG1")) {
            at = i + 1;
            break;
        }
    }
    /* The whole pass is written as one block of segments and inserted at once. */
    hl7__buf_t b;
    hl7__buf_init(&b, a, 256 + 256 * nfindings);
    put_header(&b, a, dl, v, o);
    for (size_t k = 0; k < nfindings; k++) {
        hl7__buf_putc(&b, '\r');
        put_finding(&b, a, dl, o->style, &v->findings[k], k);
    }
    (void)hl7__edit_insert_text(e, at, hl7__buf_done(&b));
    return hl7_edit_write(e);
}

static bool starts_with(slice_t s, const char *prefix)
{
    size_t n = strlen(prefix);
    return s.len >= n && memcmp(s.ptr, prefix, n) == 0;
}

static bool all_digits(slice_t s)
{
    for (size_t i = 0; i < s.len; i++)
        if (s.ptr[i] < '0' || s.ptr[i] > '9')
            return false;
    return s.len > 0;
}

bool hl7_annotation_is_ours(const hl7_msg_t *msg, size_t i)
{
    slice_t id = hl7_seg_id(msg, i);
    if (slice_eq(id, "ZSH"))
        return all_digits(hl7_field(msg, i, 1)) && slice_eq(hl7_field(msg, i, 2), "spinegate");
    if (slice_eq(id, "ZSG")) {
        slice_t sev = hl7_field(msg, i, 3);
        return hl7_field(msg, i, 2).len > 0 &&
               (slice_eq(sev, "E") || slice_eq(sev, "W") || slice_eq(sev, "I"));
    }
    if (slice_eq(id, "NTE") && slice_eq(hl7_field(msg, i, 2), "O")) {
        /* The text is written escaped; none of these prefixes has a delimiter. */
        slice_t t = hl7_field(msg, i, 3);
        return starts_with(t, "[spinegate ") || starts_with(t, "[E] ") || starts_with(t, "[W] ") ||
               starts_with(t, "[I] ");
    }
    return false;
}

/* Whether some segment after the first starts with one of the ids that
 * annotation uses: most messages never have one, and skip the parse. */
static bool may_hold_annotation_after(const char *p, size_t n, char sep)
{
    /* memchr jumps from segment to segment: this runs on every message. */
    for (const char *q = memchr(p, sep, n); q; q = memchr(q + 1, sep, (size_t)(p + n - q - 1))) {
        size_t i = (size_t)(q - p) + 1;
        if (i + 3 >= n)
            return false;
        if ((p[i] == 'Z' && p[i + 1] == 'S' && (p[i + 2] == 'G' || p[i + 2] == 'H')) ||
            (p[i] == 'N' && p[i + 1] == 'T' && p[i + 2] == 'E'))
            return true;
    }
    return false;
}

static bool may_hold_annotation(const char *p, size_t n)
{
    return n > 4 &&
           (may_hold_annotation_after(p, n, '\r') || may_hold_annotation_after(p, n, '\n'));
}

size_t hl7_annotation_strip_parsed(const hl7_msg_t *msg, arena_t *a, slice_t *out)
{
    *out = hl7_msg_bytes(msg);
    hl7_edit_t *e = NULL;
    size_t removed = 0;
    for (size_t i = 1; i < hl7_seg_count(msg); i++)
        if (hl7_annotation_is_ours(msg, i)) {
            if (!e)
                e = hl7_edit_new(msg, a);
            (void)hl7_edit_delete(e, i);
            removed++;
        }
    if (removed)
        *out = hl7_edit_write(e);
    return removed;
}

size_t hl7_annotation_strip(const char *data, size_t len, const hl7_opts_t *opts, arena_t *a,
                            slice_t *out)
{
    *out = slice_make(data, len);
    if (!data || !may_hold_annotation(data, len))
        return 0;
    hl7_msg_t *m = hl7_msg_new();
    size_t removed = 0;
    if (hl7_msg_parse(m, data, len, opts, NULL) == ERR_OK)
        removed = hl7_annotation_strip_parsed(m, a, out);
    hl7_msg_free(m);
    return removed;
}
