/* test_hl7.c - unit tests of the HL7 v2 tokenizer, accessors, paths,
 * escape codec, batch splitter and writer (parsers/hl7*.c). Messages are
 * written one segment per line and turned into CR-terminated text by
 * tu_cr(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "hl7.h"
#include "hl7_testutil.h"

#define assert_slice(s, lit)                                                                      \
    do {                                                                                          \
        slice_t s__ = (s);                                                                        \
        assert_non_null(s__.ptr);                                                                 \
        assert_int_equal(s__.len, strlen(lit));                                                   \
        assert_memory_equal(s__.ptr, lit, s__.len);                                               \
    } while (0)

static const char *DFT =
    "MSH|^~\\&|CHARGES|HOSP|BILLING|PAYER|20240105120000||DFT^P03^DFT_P03|MSG00001|P|2.5\n"
    "EVN|P03|20240105120000\n"
    "PID|1||12345^^^HOSP^MR~999^^^SSA^SS||DOE^JANE^Q&X&Y||19600101|F\n"
    "PV1|1|I|4W^401^A\n"
    "FT1|1|||20240105||CG||||1|||||||||M43.16~M54.50||||||22612^Lumbar fusion^C4|59~LT\n"
    "FT1|2|||20240105||CG||||1|||||||||\"\"||||||63030^Laminotomy^C4|\n"
    "DG1|1|I10|M43.16^Spondylolisthesis, lumbar region^I10||20240105|A\n"
    "DG1|2|I10|M54.50^Low back pain, unspecified^I10||20240105|W\n";

static hl7_msg_t *parse_lit(const char *lit, char **buf)
{
    size_t n;
    *buf = tu_cr(lit, &n);
    hl7_msg_t *m = NULL;
    err_detail_t d;
    err_t rc = hl7_parse(*buf, n, NULL, &m, &d);
    if (rc != ERR_OK)
        print_error("parse failed: %s: %s at %s\n", err_name(rc), d.msg, d.where);
    assert_int_equal(rc, ERR_OK);
    return m;
}

static void test_parse_fields_and_paths(void **state)
{
    (void)state;
    char *buf;
    hl7_msg_t *m = parse_lit(DFT, &buf);
    assert_int_equal(hl7_seg_count(m), 8);
    assert_slice(hl7_seg_id(m, 0), "MSH");
    assert_slice(hl7_seg_id(m, 7), "DG1");
    /* MSH-1 is the separator, MSH-2 the encoding characters, MSH-3 the first
     * field after them. */
    assert_slice(hl7_field(m, 0, 1), "|");
    assert_slice(hl7_field(m, 0, 2), "^~\\&");
    assert_slice(hl7_field(m, 0, 3), "CHARGES");
    slice_t v;
    assert_int_equal(hl7_get(m, "MSH-9.2", &v), ERR_OK);
    assert_slice(v, "P03");
    assert_int_equal(hl7_get(m, "MSH-9", &v), ERR_OK);
    assert_slice(v, "DFT^P03^DFT_P03");
    assert_int_equal(hl7_get(m, "MSH-2.2", &v), ERR_OK); /* never split */
    assert_int_equal(v.len, 0);
    assert_int_equal(hl7_get(m, "MSH-10", &v), ERR_OK);
    assert_slice(v, "MSG00001");
    assert_int_equal(hl7_get(m, "PID-5.3.2", &v), ERR_OK);
    assert_slice(v, "X");
    assert_int_equal(hl7_get(m, "PID-5.2", &v), ERR_OK);
    assert_slice(v, "JANE");
    assert_int_equal(hl7_get(m, "PID-3(2).4", &v), ERR_OK);
    assert_slice(v, "SSA");
    assert_int_equal(hl7_get(m, "PID-3", &v), ERR_OK);
    assert_slice(v, "12345^^^HOSP^MR~999^^^SSA^SS");
    assert_int_equal(hl7_get(m, "DG1(2)-3.1", &v), ERR_OK);
    assert_slice(v, "M54.50");
    assert_int_equal(hl7_get(m, "DG1-3.1", &v), ERR_OK);
    assert_slice(v, "M43.16");
    assert_int_equal(hl7_get(m, "FT1-19(2).1", &v), ERR_OK);
    assert_slice(v, "M54.50");
    assert_int_equal(hl7_get(m, "FT1-26(2)", &v), ERR_OK);
    assert_slice(v, "LT");
    assert_int_equal(hl7_get(m, "FT1(2)-25.3", &v), ERR_OK);
    assert_slice(v, "C4");
    assert_int_equal(hl7_get(m, "DG1", &v), ERR_OK);
    assert_slice(v, "DG1|1|I10|M43.16^Spondylolisthesis, lumbar region^I10||20240105|A");
    /* Beyond what was sent: empty, not an error; a missing segment is. */
    assert_int_equal(hl7_get(m, "PV1-50.3", &v), ERR_OK);
    assert_int_equal(v.len, 0);
    assert_int_equal(hl7_get(m, "DG1(3)-3", &v), ERR_NOT_FOUND);
    assert_int_equal(hl7_get(m, "ZZZ-1", &v), ERR_NOT_FOUND);
    assert_int_equal(hl7_get(m, "DG1-3..1", &v), ERR_BAD_PATH);
    /* Field counts and lookups. */
    assert_int_equal(hl7_field_count(m, 0), 12);
    assert_int_equal(hl7_field_count(m, 1), 2);
    assert_int_equal(hl7_seg_find(m, "FT1", 2), 5);
    assert_int_equal(hl7_seg_find(m, "FT1", 3), -1);
    assert_int_equal(hl7_seg_offset(m, 1), strchr(buf, '\r') - buf + 1);
    hl7_msg_free(m);
    xfree(buf);
}

static void test_empty_vs_null(void **state)
{
    (void)state;
    char *buf;
    hl7_msg_t *m = parse_lit(DFT, &buf);
    slice_t v;
    assert_int_equal(hl7_get(m, "FT1(2)-19", &v), ERR_OK);
    assert_int_equal(hl7_value_kind(v), HL7_NULL);
    assert_int_equal(hl7_get(m, "FT1(2)-26", &v), ERR_OK);
    assert_int_equal(hl7_value_kind(v), HL7_EMPTY);
    assert_int_equal(hl7_get(m, "FT1(2)-40", &v), ERR_OK);
    assert_int_equal(hl7_value_kind(v), HL7_EMPTY);
    assert_int_equal(hl7_get(m, "FT1-19", &v), ERR_OK);
    assert_int_equal(hl7_value_kind(v), HL7_PRESENT);
    hl7_msg_free(m);
    xfree(buf);
}

/* Segments of many empty fields, beyond the first guess at the field array
 * (a field for every 8 bytes): it grows in the middle of a segment, and
 * every field keeps its place. */
static void test_many_fields(void **state)
{
    (void)state;
    enum { N = 3000 };
    char *in = xmalloc(64 + 2 * (N + 8));
    size_t len = (size_t)sprintf(in, "MSH|^~\\&|A|B|C|D|2024||ADT^A01|X|P|2.5\rZZZ");
    for (int i = 1; i <= N; i++)
        in[len++] = '|';
    memcpy(in + len, "end\rZZY|x", 9);
    len += 9;
    hl7_msg_t *m;
    assert_int_equal(hl7_parse(in, len, NULL, &m, NULL), ERR_OK);
    assert_int_equal(hl7_seg_count(m), 3);
    assert_int_equal(hl7_field_count(m, 1), N);
    slice_t v = hl7_field(m, 1, N);
    assert_true(v.len == 3 && memcmp(v.ptr, "end", 3) == 0);
    assert_int_equal(hl7_field(m, 1, N - 1).len, 0);
    v = hl7_field(m, 2, 1);
    assert_true(v.len == 1 && v.ptr[0] == 'x');
    hl7_msg_free(m);
    xfree(in);
}

/* Random messages against a plain split: segments end at CR, LF or CR LF
 * (blank lines skipped), fields at '|'. Field lengths of 0 to 150 put field
 * and segment ends at every place within and across the 64-byte blocks the
 * scan works in, and messages end anywhere in a block. */
static uint32_t rnd_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Separators back to back, thousands of them: every 64-byte block of the
 * scan ends 64 fields, the most room it makes at a time, across segments and
 * into the short last block. */
static void test_dense_separators(void **state)
{
    (void)state;
    enum { FIRST = 5000, SECOND = 3001 };
    char *in = xmalloc(16 + FIRST + SECOND);
    size_t len = (size_t)sprintf(in, "MSH|^~\\&");
    memset(in + len, '|', FIRST);
    len += FIRST;
    memcpy(in + len, "\rZZZ", 4);
    len += 4;
    memset(in + len, '|', SECOND);
    len += SECOND;
    hl7_msg_t *m = hl7_msg_new();
    for (int round = 0; round < 2; round++) {
        assert_int_equal(hl7_msg_parse(m, in, len, NULL, NULL), ERR_OK);
        assert_int_equal(hl7_seg_count(m), 2);
        /* MSH-1, MSH-2, and a field after each of the FIRST separators */
        assert_int_equal(hl7_field_count(m, 0), FIRST + 2);
        assert_int_equal(hl7_field_count(m, 1), SECOND);
        for (int f = 3; f <= FIRST + 2; f++)
            assert_int_equal(hl7_field(m, 0, f).len, 0);
        for (int f = 1; f <= SECOND; f++) {
            slice_t v = hl7_field(m, 1, f);
            assert_int_equal(v.len, 0);
            assert_ptr_equal(v.ptr, in + len - SECOND + f);
        }
    }
    hl7_msg_free(m);
    xfree(in);
}

static void test_fields_match_plain_split(void **state)
{
    (void)state;
    enum { MSGS = 3000, CAP = 1 << 14 };
    static const char *const terms[] = {"\r", "\n", "\r\n", "\r\r", "\n\n"};
    char *in = xmalloc(CAP);
    uint32_t seed = 0x9e3779b9u;
    /* Half the messages go through one handle, reused as the daemon reuses
     * its jobs' (cleared now and then): it must answer like a fresh one. */
    hl7_msg_t *reused = hl7_msg_new();
    for (int k = 0; k < MSGS; k++) {
        size_t len = (size_t)sprintf(in, "MSH|^~\\&|A");
        int nseg = 1 + (int)(rnd_next(&seed) % 8);
        for (int sg = 0; sg < nseg && len < CAP - 2000; sg++) {
            if (sg > 0) {
                const char *t = terms[rnd_next(&seed) % 5];
                memcpy(in + len, t, strlen(t));
                len += strlen(t);
                len += (size_t)sprintf(in + len, "Z%02d", (int)(rnd_next(&seed) % 100));
            }
            int nf = (int)(rnd_next(&seed) % 12);
            for (int f = 0; f < nf; f++) {
                in[len++] = '|';
                size_t fl = rnd_next(&seed) % 151;
                for (size_t i = 0; i < fl; i++)
                    in[len++] = (char)('A' + rnd_next(&seed) % 26);
            }
        }
        if (rnd_next(&seed) % 3 == 0)
            in[len++] = '\r';
        hl7_msg_t *m;
        if (k % 2) {
            assert_int_equal(hl7_parse(in, len, NULL, &m, NULL), ERR_OK);
        } else {
            if (k % 4 == 0) {
                hl7_msg_clear(reused);
                assert_int_equal(hl7_seg_count(reused), 0);
                assert_int_equal(hl7_msg_bytes(reused).len, 0);
            }
            assert_int_equal(hl7_msg_parse(reused, in, len, NULL, NULL), ERR_OK);
            m = reused;
        }
        /* The plain split. */
        size_t pos = 0, seg = 0;
        while (pos < len) {
            size_t end = pos;
            while (end < len && in[end] != '\r' && in[end] != '\n')
                end++;
            if (end > pos) {
                assert_true(seg < hl7_seg_count(m));
                size_t fstart = pos;
                int f = 0;
                for (size_t i = pos; i <= end; i++) {
                    if (i < end && in[i] != '|')
                        continue;
                    if (seg == 0 && f == 1) { /* MSH-1 is the separator, MSH-2 what follows */
                        assert_true(hl7_field(m, 0, 1).len == 1 &&
                                    hl7_field(m, 0, 1).ptr == in + 3);
                        f = 2;
                    }
                    slice_t v = hl7_field(m, seg, f);
                    assert_ptr_equal(v.ptr, in + fstart);
                    assert_int_equal(v.len, i - fstart);
                    fstart = i + 1;
                    f++;
                }
                assert_int_equal(hl7_field_count(m, seg), f - 1);
                seg++;
            }
            pos = end + 1;
        }
        assert_int_equal(hl7_seg_count(m), seg);
        if (m != reused)
            hl7_msg_free(m);
    }
    assert_true(hl7_msg_footprint(reused) > 0);
    hl7_msg_free(reused);
    xfree(in);
}

static void test_iteration(void **state)
{
    (void)state;
    char *buf;
    hl7_msg_t *m = parse_lit(DFT, &buf);
    const hl7_delims_t *dl = hl7_msg_delims(m);
    slice_t f = hl7_field(m, 2, 3), rep, comp;
    hl7_iter_t it, ic;
    int nrep = 0, ncomp = 0;
    hl7_iter_init(&it, f, dl->repetition);
    while (hl7_iter_next(&it, &rep)) {
        nrep++;
        hl7_iter_init(&ic, rep, dl->component);
        while (hl7_iter_next(&ic, &comp))
            ncomp++;
    }
    assert_int_equal(nrep, 2);
    assert_int_equal(ncomp, 10);
    assert_int_equal(hl7_piece_count(f, dl->repetition), 2);
    assert_int_equal(hl7_piece_count(slice_make("", 0), '^'), 1);
    assert_slice(hl7_piece(slice_make("a^b^c", 5), '^', 3), "c");
    assert_int_equal(hl7_piece(slice_make("a^b^c", 5), '^', 4).len, 0);
    /* Walk every field of every segment. */
    size_t total = 0;
    for (size_t i = 0; i < hl7_seg_count(m); i++)
        for (int k = 0; k <= hl7_field_count(m, i); k++)
            total += hl7_field(m, i, k).len;
    assert_true(total > 0);
    hl7_msg_free(m);
    xfree(buf);
}

static void test_custom_delimiters(void **state)
{
    (void)state;
    char *buf;
    /* Subcomponent separator } as in the HAPI sample BAR messages. */
    hl7_msg_t *m = parse_lit("MSH|^~\\}|A|B|C|D|1993||BAR^P01|X1|P|2.4\n"
                             "PID|||1^2}x^M10||SMITH\\S\\JR\\T\\^ANN\n",
                             &buf);
    const hl7_delims_t *dl = hl7_msg_delims(m);
    assert_int_equal(dl->escape, '\\');
    assert_int_equal(dl->subcomponent, '}');
    slice_t v;
    assert_int_equal(hl7_get(m, "PID-3.2.2", &v), ERR_OK);
    assert_slice(v, "x");
    assert_int_equal(hl7_get(m, "PID-5.1", &v), ERR_OK);
    char out[32];
    size_t n;
    assert_int_equal(hl7_unescape(dl, v, out, sizeof out, &n, NULL), ERR_OK);
    assert_int_equal(n, 9);
    assert_memory_equal(out, "SMITH^JR}", 9);
    assert_int_equal(hl7_escape(dl, "a}b", 3, out, sizeof out), 5);
    assert_memory_equal(out, "a\\T\\b", 5);
    hl7_msg_free(m);
    xfree(buf);
    /* Field separator ^, components ~, repetitions |. */
    m = parse_lit("MSH^~|\\&^SENDING^200M^RECEIVING^200^2012^^ADT~A24^2003582144^T^2.4\n"
                  "PID^1^^11111~~~FOO&&0363|NI~FACILITY\n",
                  &buf);
    assert_int_equal(hl7_get(m, "MSH-9.2", &v), ERR_OK);
    assert_slice(v, "A24");
    assert_int_equal(hl7_get(m, "PID-3(2).2", &v), ERR_OK);
    assert_slice(v, "FACILITY");
    assert_int_equal(hl7_get(m, "PID-3.4.3", &v), ERR_OK);
    assert_slice(v, "0363");
    hl7_msg_free(m);
    xfree(buf);
}

static void test_truncation_char(void **state)
{
    (void)state;
    char *buf;
    hl7_msg_t *m = parse_lit("MSH|^~\\&#|A|B|C|D|2024||ADT^A01|1|P|2.7\n"
                             "NTE|1||long text cut#|a\\P\\b\n",
                             &buf);
    const hl7_delims_t *dl = hl7_msg_delims(m);
    assert_int_equal(dl->truncation, '#');
    assert_slice(hl7_field(m, 0, 2), "^~\\&#");
    assert_slice(hl7_field(m, 0, 3), "A");
    slice_t v;
    assert_int_equal(hl7_get(m, "NTE-3", &v), ERR_OK);
    assert_slice(v, "long text cut#"); /* passed through */
    char out[16];
    size_t n;
    assert_int_equal(hl7_get(m, "NTE-4", &v), ERR_OK);
    assert_int_equal(hl7_unescape(dl, v, out, sizeof out, &n, NULL), ERR_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(out, "a#b", 3);
    assert_int_equal(hl7_escape(dl, "a#b", 3, out, sizeof out), 5);
    assert_memory_equal(out, "a\\P\\b", 5);
    hl7_msg_free(m);
    xfree(buf);
}

static void test_terminators(void **state)
{
    (void)state;
    const char *lf = "MSH|^~\\&|A||||||ADT^A01|1|P|2.5\nPID|1\r\nPV1|1\n\n\r\n";
    hl7_msg_t *m = NULL;
    err_detail_t d;
    assert_int_equal(hl7_parse(lf, strlen(lf), NULL, &m, &d), ERR_OK);
    assert_int_equal(hl7_seg_count(m), 3);
    assert_slice(hl7_seg_text(m, 1), "PID|1");
    assert_slice(hl7_seg_text(m, 2), "PV1|1");
    hl7_msg_free(m);
    hl7_opts_t strict = {.strict = true};
    assert_int_equal(hl7_parse(lf, strlen(lf), &strict, &m, &d), ERR_BAD_TERMINATOR);
    assert_null(m);
    assert_int_equal(d.offset, strchr(lf, '\n') - lf);
    assert_int_equal(d.segment, 1);
    /* Trailing empty segments are ignored, also in strict mode. */
    const char *cr = "MSH|^~\\&|A||||||ADT^A01|1|P|2.5\rPID|1\r\r\r";
    assert_int_equal(hl7_parse(cr, strlen(cr), &strict, &m, &d), ERR_OK);
    assert_int_equal(hl7_seg_count(m), 2);
    hl7_msg_free(m);
    /* Empty segments in the middle: skipped, unless strict. */
    const char *mid = "MSH|^~\\&|A||||||ADT^A01|1|P|2.5\r\rPID|1\r";
    assert_int_equal(hl7_parse(mid, strlen(mid), NULL, &m, &d), ERR_OK);
    assert_int_equal(hl7_seg_count(m), 2);
    hl7_msg_free(m);
    assert_int_equal(hl7_parse(mid, strlen(mid), &strict, &m, &d), ERR_BAD_SEGMENT);
    /* No terminator at all on the last segment. */
    const char *none = "MSH|^~\\&|A||||||ADT^A01|1|P|2.5\rPID|1";
    assert_int_equal(hl7_parse(none, strlen(none), &strict, &m, &d), ERR_OK);
    assert_slice(hl7_seg_text(m, 1), "PID|1");
    hl7_msg_free(m);
    /* A segment of only an id, and MSH ending right after MSH-2. */
    const char *bare = "MSH|^~\\&\rZZ1\rZZ2|\r";
    assert_int_equal(hl7_parse(bare, strlen(bare), NULL, &m, &d), ERR_OK);
    assert_int_equal(hl7_field_count(m, 0), 2);
    assert_int_equal(hl7_field_count(m, 1), 0);
    assert_int_equal(hl7_field_count(m, 2), 1);
    hl7_msg_free(m);
}

static void expect_err(const char *in, size_t n, const hl7_opts_t *o, err_t code,
                       const char *where, size_t offset)
{
    hl7_msg_t *m = (hl7_msg_t *)1;
    err_detail_t d;
    err_t rc = hl7_parse(in, n, o, &m, &d);
    if (rc != code)
        print_error("expected %s, got %s (%s)\n", err_name(code), err_name(rc), d.msg);
    assert_int_equal(rc, code);
    assert_null(m);
    assert_int_equal(d.code, code);
    assert_true(d.msg[0] != '\0');
    if (where)
        assert_string_equal(d.where, where);
    if (offset != (size_t)-1)
        assert_int_equal(d.offset, offset);
}

static void test_errors(void **state)
{
    (void)state;
    expect_err("", 0, NULL, ERR_EMPTY, NULL, -1);
    expect_err("\r\n\r", 3, NULL, ERR_EMPTY, NULL, -1);
    expect_err("PID|1\r", 6, NULL, ERR_NO_MSH, "segment 1", 0);
    expect_err("FHS|^~\\&\r", 9, NULL, ERR_NO_MSH, NULL, 0);
    expect_err("MS", 2, NULL, ERR_TRUNCATED, "MSH-1", -1);
    expect_err("MSH", 3, NULL, ERR_TRUNCATED, "MSH-1", -1);
    expect_err("MSH|^~", 6, NULL, ERR_TRUNCATED, "MSH-2", 6);
    expect_err("MSHA^~\\&|", 9, NULL, ERR_BAD_DELIMS, "MSH-1", 3);
    expect_err("MSH|^~\\|x\r", 10, NULL, ERR_BAD_DELIMS, "MSH-2", 4);
    expect_err("MSH|^^\\&|x\r", 11, NULL, ERR_BAD_DELIMS, "MSH-2", 4);
    expect_err("MSH|^~\\&#!|x\r", 13, NULL, ERR_BAD_DELIMS, "MSH-2", 4);
    expect_err("MSH|^~|&|x\r", 11, NULL, ERR_BAD_DELIMS, "MSH-2", 4);
    expect_err("MSH|^~\\&|A\rPID|1\rPV1|1|x\0y\r", 27, NULL, ERR_NUL_BYTE, "PV1-2", 24);
    expect_err("MSH|^~\0&|A\r", 11, NULL, ERR_NUL_BYTE, "MSH-2", 6);
    expect_err("MSH|^~\\&|A\rPID|1\rpv1|1\r", 23, NULL, ERR_BAD_SEGMENT, "segment 3", 17);
    expect_err("MSH|^~\\&|A\rPID1|1\r", 18, NULL, ERR_BAD_SEGMENT, "segment 2", 11);
    expect_err("MSH|^~\\&|A\rPI\r", 14, NULL, ERR_BAD_SEGMENT, "segment 2", 11);
    expect_err("MSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\r", 28, NULL, ERR_BAD_SEGMENT, "MSH", 17);
    expect_err("MSH|^~\\&|A\rBTS|1\r", 17, NULL, ERR_BAD_SEGMENT, "BTS", 11);
    hl7_opts_t small = {.max_size = 10};
    expect_err("MSH|^~\\&|A\r", 11, &small, ERR_TOO_LARGE, NULL, -1);
    /* The detail carries segment and field numbers. */
    err_detail_t d;
    hl7_msg_t *m;
    assert_int_equal(hl7_parse("MSH|^~\\&|A\rPID|1\rPV1|1|x\0y\r", 27, NULL, &m, &d),
                     ERR_NUL_BYTE);
    assert_int_equal(d.segment, 3);
    assert_int_equal(d.field, 2);
    /* A handle is reusable after an error and after a success. */
    m = hl7_msg_new();
    assert_int_equal(hl7_msg_parse(m, "PID", 3, NULL, &d), ERR_NO_MSH);
    assert_int_equal(hl7_seg_count(m), 0);
    assert_int_equal(hl7_msg_parse(m, "MSH|^~\\&|A\rPID|1", 16, NULL, &d), ERR_OK);
    assert_int_equal(hl7_seg_count(m), 2);
    assert_int_equal(hl7_msg_parse(m, "MSH|^~\\&|B", 10, NULL, &d), ERR_OK);
    assert_int_equal(hl7_seg_count(m), 1);
    assert_slice(hl7_field(m, 0, 3), "B");
    hl7_msg_free(m);
    hl7_msg_free(NULL);
}

static void test_paths(void **state)
{
    (void)state;
    hl7_path_t p;
    err_detail_t d;
    assert_int_equal(hl7_path_parse("DG1(2)-3.1", 10, &p, &d), ERR_OK);
    assert_string_equal(p.seg, "DG1");
    assert_int_equal(p.occ, 2);
    assert_int_equal(p.field, 3);
    assert_int_equal(p.rep, 0);
    assert_int_equal(p.comp, 1);
    assert_int_equal(hl7_path_parse("FT1-19(2).1", 11, &p, &d), ERR_OK);
    assert_int_equal(p.occ, 1);
    assert_int_equal(p.field, 19);
    assert_int_equal(p.rep, 2);
    assert_int_equal(p.comp, 1);
    assert_int_equal(hl7_path_parse("PID-5.1.2", 9, &p, &d), ERR_OK);
    assert_int_equal(p.sub, 2);
    char out[32];
    hl7_path_format(&p, out, sizeof out);
    assert_string_equal(out, "PID-5.1.2");
    assert_int_equal(hl7_path_parse("DG1(2)-3(1).1.1", 15, &p, &d), ERR_OK);
    hl7_path_format(&p, out, sizeof out);
    assert_string_equal(out, "DG1(2)-3(1).1.1");
    hl7_path_format(&p, out, 5);
    assert_string_equal(out, "DG1(");
    const char *bad[] = {"", "DG", "dg1-3", "DG1-", "DG1-0", "DG1(0)-3", "DG1-3.", "DG1-3(2",
                         "DG1-3.1.1.1", "DG1-99999", "DG1 -3", "DG1-3x", "1G1-3", NULL};
    for (int i = 0; bad[i]; i++) {
        if (hl7_path_parse(bad[i], strlen(bad[i]), &p, &d) != ERR_BAD_PATH)
            fail_msg("path '%s' accepted", bad[i]);
        assert_int_equal(d.code, ERR_BAD_PATH);
    }
    assert_int_equal(hl7_path_parse("DG1-3x", 6, &p, &d), ERR_BAD_PATH);
    assert_int_equal(d.offset, 5);
}

static void test_unescape(void **state)
{
    (void)state;
    const hl7_delims_t *dl = &hl7_default_delims;
    char out[64];
    size_t n;
    err_detail_t d;
    const char *in = "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f";
    assert_int_equal(hl7_unescape(dl, slice_cstr(in), out, sizeof out, &n, &d), ERR_OK);
    assert_int_equal(n, 11);
    assert_memory_equal(out, "a|b^c&d~e\\f", 11);
    in = "\\X0D0A\\x\\X41\\\\.br\\y\\H\\bold\\N\\\\.sp2\\z\\.in+4\\\\C2842\\";
    assert_int_equal(hl7_unescape(dl, slice_cstr(in), out, sizeof out, &n, &d), ERR_OK);
    assert_int_equal(n, 12);
    assert_memory_equal(out, "\r\nxA\nybold\nz", 12);
    in = "q\\Zlocal\\r";
    assert_int_equal(hl7_unescape(dl, slice_cstr(in), out, sizeof out, &n, &d), ERR_OK);
    assert_int_equal(n, strlen(in));
    assert_memory_equal(out, in, n);
    /* Errors, with the offset of the opening escape character. */
    const struct {
        const char *in;
        size_t off;
    } bad[] = {{"abc\\F", 3},   {"ab\\\\", 2},      {"\\Q\\", 0},   {"x\\X4\\", 1},
               {"\\XZZ\\", 0},  {"\\X\\", 0},       {"\\.\\", 0},   {"\\C12\\", 0},
               {"a\\P\\", 1},   {"\\M12345G\\", 0}, {"ok\\FF\\", 2}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_t rc = hl7_unescape(dl, slice_cstr(bad[i].in), out, sizeof out, &n, &d);
        if (rc != ERR_BAD_ESCAPE)
            fail_msg("'%s' gave %s", bad[i].in, err_name(rc));
        assert_int_equal(d.offset, bad[i].off);
    }
    /* Too small a buffer. */
    assert_int_equal(hl7_unescape(dl, slice_cstr("abc\\F\\def"), out, 4, &n, &d), ERR_NO_SPACE);
    assert_int_equal(n, 7);
    assert_int_equal(hl7_unescape(dl, slice_cstr("abcdefg"), out, 7, &n, &d), ERR_OK);
    assert_int_equal(hl7_unescape(dl, SLICE_NULL, out, 7, &n, &d), ERR_OK);
    assert_int_equal(n, 0);
}

static void test_unescape_arena_offsets(void **state)
{
    (void)state;
    char *buf;
    hl7_msg_t *m = parse_lit("MSH|^~\\&|A||||||ADT^A01|1|P|2.5\n"
                             "NTE|1||fine\\T\\x|bad\\Q\\x\n",
                             &buf);
    arena_t a;
    arena_init(&a, 0);
    char *s;
    err_detail_t d;
    slice_t v;
    assert_int_equal(hl7_get(m, "NTE-3", &v), ERR_OK);
    assert_int_equal(hl7_unescape_arena(m, v, &a, &s, &d), ERR_OK);
    assert_string_equal(s, "fine&x");
    assert_int_equal(hl7_get(m, "NTE-4", &v), ERR_OK);
    assert_int_equal(hl7_unescape_arena(m, v, &a, &s, &d), ERR_BAD_ESCAPE);
    assert_null(s);
    assert_int_equal(d.offset, (size_t)(strstr(buf, "\\Q") - buf));
    arena_free(&a);
    hl7_msg_free(m);
    xfree(buf);
}

static void test_escape_roundtrip(void **state)
{
    (void)state;
    const hl7_delims_t *dl = &hl7_default_delims;
    const char *plain = "A|B^C~D\\E&F\rG\nH#";
    char enc[128], dec[64];
    size_t need = hl7_escape(dl, plain, strlen(plain), NULL, 0);
    assert_int_equal(need, strlen("A\\F\\B\\S\\C\\R\\D\\E\\E\\T\\F\\X0D\\G\\X0A\\H#"));
    assert_int_equal(hl7_escape(dl, plain, strlen(plain), enc, sizeof enc), need);
    assert_memory_equal(enc, "A\\F\\B\\S\\C\\R\\D\\E\\E\\T\\F\\X0D\\G\\X0A\\H#", need);
    size_t n;
    assert_int_equal(hl7_unescape(dl, slice_make(enc, need), dec, sizeof dec, &n, NULL), ERR_OK);
    assert_int_equal(n, strlen(plain));
    assert_memory_equal(dec, plain, n);
    /* A short output buffer is never overrun. */
    memset(enc, 'z', sizeof enc);
    assert_int_equal(hl7_escape(dl, plain, strlen(plain), enc, 4), need);
    assert_int_equal(enc[4], 'z');
}

static void test_uuencoded_escaped(void **state)
{
    (void)state;
    /* The HAPI sample: a uuencoded file escaped into one value. Decoding and
     * encoding again gives the same bytes. */
    size_t len;
    char *in = tu_read("tests/data/hl7/corpus/hapi_uuencoded_escaped.hl7", &len);
    assert_non_null(in);
    while (len && in[len - 1] == '\r')
        len--;
    char *dec = xmalloc(len);
    size_t n;
    err_detail_t d;
    assert_int_equal(hl7_unescape(NULL, slice_make(in, len), dec, len, &n, &d), ERR_OK);
    assert_true(n < len);
    assert_memory_equal(dec, "begin 644 WAV.DAT\r\n", 19);
    size_t need = hl7_escape(NULL, dec, n, NULL, 0);
    assert_int_equal(need, len);
    char *enc = xmalloc(need);
    hl7_escape(NULL, dec, n, enc, need);
    assert_memory_equal(enc, in, len);
    xfree(enc);
    xfree(dec);
    xfree(in);
}

static void test_batch_split(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    slice_t *v;
    size_t n;
    err_detail_t d;
    size_t len;
    char *in = tu_cr("FHS|^~\\&|A\nBHS|^~\\&|A\nMSH|^~\\&|1\nPID|1\nMSH|^~\\&|2\nBTS|2\n"
                     "BHS|^~\\&\nMSH|^~\\&|3\nBTS|1\nFTS|2\n",
                     &len);
    assert_int_equal(hl7_batch_split(in, len, NULL, &a, &v, &n, &d), ERR_OK);
    assert_int_equal(n, 3);
    assert_slice(v[0], "MSH|^~\\&|1\rPID|1\r");
    assert_slice(v[1], "MSH|^~\\&|2\r");
    assert_slice(v[2], "MSH|^~\\&|3\r");
    xfree(in);
    /* Blank lines between plain messages; LF endings. */
    const char *blank = "MSH|^~\\&|1\nPID|1\n\nMSH|^~\\&|2\r\n\r\n";
    assert_int_equal(hl7_batch_split(blank, strlen(blank), NULL, &a, &v, &n, &d), ERR_OK);
    assert_int_equal(n, 2);
    assert_slice(v[0], "MSH|^~\\&|1\nPID|1\n");
    assert_slice(v[1], "MSH|^~\\&|2\r\n");
    /* Malformed envelopes. */
    const struct {
        const char *in;
        const char *where;
        int segment;
    } bad[] = {
        {"BHS|^~\\&\nEVN|A04\nBTS|0\n", "EVN", 2},
        {"BHS|^~\\&\nMSH|^~\\&|1\nBHS|^~\\&\nMSH|^~\\&|2\n", "BHS", 3},
        {"MSH|^~\\&|1\nFHS|^~\\&\n", "FHS", 2},
        {"BHS|^~\\&\nMSH|^~\\&|1\nBTS|2\n", "BTS-1", 3},
        {"MSH|^~\\&|1\nFTS|2\n", "FTS-1", 2},
        {"MSH|^~\\&|1\nFTS|1\nMSH|^~\\&|2\n", "MSH", 3},
        {"MSH|^~\\&|1\nBTS|1\nBTS|0\n", "BTS", 3},
        {"FHS|^~\\&\nFTS|0\n", "MSH", 0},
        {"MSH|^~\\&|1\nBHS|^~\\&\n", "BHS", 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *b = tu_cr(bad[i].in, &len);
        err_t rc = hl7_batch_split(b, len, NULL, &a, &v, &n, &d);
        if (rc != ERR_BAD_BATCH)
            fail_msg("case %zu gave %s", i, err_name(rc));
        assert_null(v);
        assert_int_equal(n, 0);
        assert_string_equal(d.where, bad[i].where);
        assert_int_equal(d.segment, bad[i].segment);
        xfree(b);
    }
    assert_int_equal(hl7_batch_split("\r\r", 2, NULL, &a, &v, &n, &d), ERR_EMPTY);
    hl7_opts_t small = {.max_size = 4};
    assert_int_equal(hl7_batch_split("MSH|^~\\&", 8, &small, &a, &v, &n, &d), ERR_TOO_LARGE);
    arena_free(&a);
}

static void test_write_identity_and_edits(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    char *buf;
    hl7_msg_t *m = parse_lit(DFT, &buf);
    slice_t all = hl7_msg_bytes(m);
    /* No edit: byte-identical; every segment rebuilt from its fields too. */
    hl7_edit_t *e = hl7_edit_new(m, &a);
    slice_t out = hl7_edit_write(e);
    assert_true(slice_eq_slice(out, all));
    for (size_t i = 0; i < hl7_seg_count(m); i++) {
        hl7_seg_t *s = hl7_seg_from(&a, m, i);
        assert_true(slice_eq_slice(hl7_seg_write(s), hl7_seg_text(m, i)));
    }
    /* Values with delimiters are escaped; finer parts split coarser ones. */
    e = hl7_edit_new(m, &a);
    assert_int_equal(hl7_edit_set(e, "PID-5.1", "O'NEIL|SMITH^JR", 15, NULL), ERR_OK);
    assert_int_equal(hl7_edit_set(e, "PID-3(2).1", "A~B&C\\D", 7, NULL), ERR_OK);
    assert_int_equal(hl7_edit_set(e, "PID-12.2", "x", 1, NULL), ERR_OK);
    assert_int_equal(hl7_edit_set(e, "MSH-10", "NEW1", 4, NULL), ERR_OK);
    assert_int_equal(hl7_edit_set(e, "MSH-2", "x", 1, NULL), ERR_BAD_PATH);
    assert_int_equal(hl7_edit_set(e, "ZZZ-2", "x", 1, NULL), ERR_NOT_FOUND);
    assert_int_equal(hl7_edit_set(e, "PID", "x", 1, NULL), ERR_BAD_PATH);
    hl7_seg_t *z = hl7_seg_new(&a, hl7_msg_delims(m), "ZSG");
    assert_int_equal(hl7_seg_set(z, 1, 0, 0, 0, "1", 1), ERR_OK);
    assert_int_equal(hl7_seg_set(z, 4, 2, 1, 0, "M43.16", 6), ERR_OK);
    assert_int_equal(hl7_seg_set(z, 4, 1, 1, 0, "M54.50", 6), ERR_OK);
    assert_int_equal(hl7_seg_set(z, 3, 0, 0, 0, "a|b", 3), ERR_OK);
    assert_int_equal(hl7_seg_set(z, 0, 0, 0, 0, "x", 1), ERR_BAD_PATH);
    assert_slice(hl7_seg_write(z), "ZSG|1||a\\F\\b|M54.50~M43.16");
    assert_int_equal(hl7_edit_insert(e, hl7_seg_count(m), z), ERR_OK);
    hl7_seg_t *z2 = hl7_seg_new(&a, hl7_msg_delims(m), "ZSG");
    hl7_seg_set(z2, 1, 0, 0, 0, "2", 1);
    assert_int_equal(hl7_edit_insert(e, 6, z2), ERR_OK);
    assert_int_equal(hl7_edit_insert(e, 99, z2), ERR_BAD_VALUE);
    hl7_seg_t *r = hl7_seg_new(&a, hl7_msg_delims(m), "PV1");
    hl7_seg_set(r, 2, 0, 0, 0, "O", 1);
    assert_int_equal(hl7_edit_replace(e, 3, r), ERR_OK);
    assert_int_equal(hl7_edit_replace(e, 30, r), ERR_BAD_VALUE);
    out = hl7_edit_write(e);
    hl7_msg_t *m2 = NULL;
    err_detail_t d;
    assert_int_equal(hl7_parse(out.ptr, out.len, NULL, &m2, &d), ERR_OK);
    assert_int_equal(hl7_seg_count(m2), 10);
    slice_t v;
    char *s;
    assert_int_equal(hl7_get(m2, "PID-5.1", &v), ERR_OK);
    assert_slice(v, "O'NEIL\\F\\SMITH\\S\\JR");
    assert_int_equal(hl7_unescape_arena(m2, v, &a, &s, &d), ERR_OK);
    assert_string_equal(s, "O'NEIL|SMITH^JR");
    assert_int_equal(hl7_get(m2, "PID-5.3.2", &v), ERR_OK); /* untouched neighbours */
    assert_slice(v, "X");
    assert_int_equal(hl7_get(m2, "PID-3(2)", &v), ERR_OK);
    assert_slice(v, "A\\R\\B\\T\\C\\E\\D^^^SSA^SS");
    assert_int_equal(hl7_get(m2, "PID-3(1)", &v), ERR_OK);
    assert_slice(v, "12345^^^HOSP^MR");
    assert_int_equal(hl7_get(m2, "PID-12", &v), ERR_OK);
    assert_slice(v, "^x");
    assert_int_equal(hl7_get(m2, "MSH-10", &v), ERR_OK);
    assert_slice(v, "NEW1");
    assert_slice(hl7_seg_text(m2, 0),
                 "MSH|^~\\&|CHARGES|HOSP|BILLING|PAYER|20240105120000||DFT^P03^DFT_P03|NEW1|P|2.5");
    assert_slice(hl7_seg_text(m2, 3), "PV1||O");
    assert_slice(hl7_seg_text(m2, 6), "ZSG|2");
    assert_slice(hl7_seg_text(m2, 9), "ZSG|1||a\\F\\b|M54.50~M43.16");
    /* Untouched segments are byte-identical. */
    for (size_t i = 1; i < 8; i++) {
        if (i == 2 || i == 3)
            continue;
        size_t j = i < 6 ? i : i + 1;
        assert_true(slice_eq_slice(hl7_seg_text(m2, j), hl7_seg_text(m, i)));
    }
    hl7_msg_free(m2);
    hl7_msg_free(m);
    xfree(buf);
    arena_free(&a);
}

static void test_edit_delete(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    /* A deleted segment goes with its terminator; blank lines after it stay,
     * an insert before it still lands there, and the rest is as received. */
    const char *in = "MSH|^~\\&|A\r\nZSG|1\r\n\nPID|1\rNTE|1\nPV1|1";
    hl7_msg_t *m;
    assert_int_equal(hl7_parse(in, strlen(in), NULL, &m, NULL), ERR_OK);
    hl7_edit_t *e = hl7_edit_new(m, &a);
    assert_int_equal(hl7_edit_delete(e, 1), ERR_OK);
    assert_int_equal(hl7_edit_delete(e, 3), ERR_OK);
    assert_int_equal(hl7_edit_delete(e, 5), ERR_BAD_VALUE);
    hl7_seg_t *z = hl7_seg_new(&a, NULL, "ZZZ");
    assert_int_equal(hl7_edit_insert(e, 3, z), ERR_OK);
    assert_slice(hl7_edit_write(e), "MSH|^~\\&|A\r\n\nPID|1\rZZZ\rPV1|1");
    /* The last segment, unterminated, goes too. */
    e = hl7_edit_new(m, &a);
    assert_int_equal(hl7_edit_delete(e, 4), ERR_OK);
    assert_slice(hl7_edit_write(e), "MSH|^~\\&|A\r\nZSG|1\r\n\nPID|1\rNTE|1\n");
    hl7_msg_free(m);
    arena_free(&a);
}

static void test_write_terminators(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    /* LF endings, blank lines and no final terminator come out as they were. */
    const char *in = "\nMSH|^~\\&|A\nPID|1\r\n\nPV1|1";
    hl7_msg_t *m;
    assert_int_equal(hl7_parse(in, strlen(in), NULL, &m, NULL), ERR_OK);
    hl7_edit_t *e = hl7_edit_new(m, &a);
    assert_slice(hl7_edit_write(e), in);
    hl7_seg_t *z = hl7_seg_new(&a, NULL, "ZSG");
    hl7_seg_set(z, 1, 0, 0, 0, "1", 1);
    hl7_edit_insert(e, 3, z);
    hl7_edit_insert(e, 2, z);
    /* Blank lines stay with the segment before them: an insert's \r
     * followed by an original \n would read back as one \r\n. */
    assert_slice(hl7_edit_write(e), "\nMSH|^~\\&|A\nPID|1\r\n\nZSG|1\rPV1|1\rZSG|1\r");
    hl7_msg_free(m);
    /* MSH with a truncation character is rebuilt with it. */
    in = "MSH|^~\\&#|A|B\r";
    assert_int_equal(hl7_parse(in, strlen(in), NULL, &m, NULL), ERR_OK);
    e = hl7_edit_new(m, &a);
    assert_int_equal(hl7_edit_set(e, "MSH-4", "x#y", 3, NULL), ERR_OK);
    assert_slice(hl7_edit_write(e), "MSH|^~\\&#|A|x\\P\\y\r");
    hl7_msg_free(m);
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_fields_and_paths),
        cmocka_unit_test(test_empty_vs_null),
        cmocka_unit_test(test_many_fields),
        cmocka_unit_test(test_fields_match_plain_split),
        cmocka_unit_test(test_dense_separators),
        cmocka_unit_test(test_iteration),
        cmocka_unit_test(test_custom_delimiters),
        cmocka_unit_test(test_truncation_char),
        cmocka_unit_test(test_terminators),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_unescape),
        cmocka_unit_test(test_unescape_arena_offsets),
        cmocka_unit_test(test_escape_roundtrip),
        cmocka_unit_test(test_uuencoded_escaped),
        cmocka_unit_test(test_batch_split),
        cmocka_unit_test(test_write_identity_and_edits),
        cmocka_unit_test(test_write_terminators),
        cmocka_unit_test(test_edit_delete),
    };
    return cmocka_run_group_tests_name("hl7", tests, NULL, NULL);
}
