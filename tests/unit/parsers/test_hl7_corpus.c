/* test_hl7_corpus.c - runs every file of tests/data/hl7/corpus/ through the
 * batch splitter and the parser, as listed with its expected outcome in
 * tests/data/hl7/corpus/EXPECTED (adding a file needs no C). Each message
 * that parses is also walked to every subcomponent, decoded, rebuilt segment
 * by segment and written back, and must come out byte-identical. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "hl7.h"
#include "hl7_testutil.h"

static err_t err_by_name(const char *name)
{
    for (int i = 0; i < ERR__COUNT; i++)
        if (strcmp(err_name((err_t)i), name) == 0)
            return (err_t)i;
    fail_msg("unknown error name %s in EXPECTED", name);
    return ERR_OK;
}

/* Walks and checks one message; returns how many values failed to decode. */
static int check_message(const char *file, const hl7_msg_t *m, arena_t *a)
{
    const hl7_delims_t *dl = hl7_msg_delims(m);
    int bad = 0;
    char out[4096];
    for (size_t i = 0; i < hl7_seg_count(m); i++) {
        for (int f = i == 0 ? 3 : 1; f <= hl7_field_count(m, i); f++) {
            hl7_iter_t ir, ic;
            slice_t rep, comp;
            hl7_iter_init(&ir, hl7_field(m, i, f), dl->repetition);
            while (hl7_iter_next(&ir, &rep)) {
                hl7_iter_init(&ic, rep, dl->component);
                while (hl7_iter_next(&ic, &comp)) {
                    size_t n;
                    if (hl7_unescape(dl, comp, out, sizeof out, &n, NULL) != ERR_OK)
                        bad++;
                }
            }
        }
        hl7_seg_t *s = hl7_seg_from(a, m, i);
        if (!slice_eq_slice(hl7_seg_write(s), hl7_seg_text(m, i)))
            fail_msg("%s: segment %zu does not rebuild identically", file, i + 1);
    }
    slice_t w = hl7_edit_write(hl7_edit_new(m, a));
    if (!slice_eq_slice(w, hl7_msg_bytes(m)))
        fail_msg("%s: message does not write back identically", file);
    return bad;
}

static void run_file(const char *file, const char *expect, int want_n)
{
    char rel[512];
    snprintf(rel, sizeof rel, "tests/data/hl7/corpus/%s", file);
    size_t len = 0;
    char *buf = tu_read(rel, &len);
    if (!buf)
        fail_msg("cannot read %s", rel);
    arena_t a;
    arena_init(&a, 0);
    slice_t *msgs;
    size_t n;
    err_detail_t d;
    err_t rc = hl7_batch_split(buf, len, NULL, &a, &msgs, &n, &d);
    int segno = d.segment;
    hl7_msg_t *m = hl7_msg_new();
    size_t parsed = 0;
    int bad_escapes = 0;
    for (size_t i = 0; rc == ERR_OK && i < n; i++) {
        rc = hl7_msg_parse(m, msgs[i].ptr, msgs[i].len, NULL, &d);
        segno = d.segment;
        if (rc != ERR_OK)
            break;
        bad_escapes += check_message(file, m, &a);
        /* Every corpus message is CR-terminated: strict mode agrees. */
        hl7_opts_t strict = {.strict = true};
        hl7_msg_t *m2;
        if (hl7_parse(msgs[i].ptr, msgs[i].len, &strict, &m2, &d) != ERR_OK)
            fail_msg("%s: message %zu fails in strict mode: %s", file, i + 1, d.msg);
        hl7_msg_free(m2);
        parsed++;
    }
    if (strcmp(expect, "ok") == 0) {
        if (rc != ERR_OK)
            fail_msg("%s: expected ok, got %s at segment %d: %s", file, err_name(rc), segno,
                     d.msg);
        if ((int)parsed != want_n)
            fail_msg("%s: expected %d messages, got %zu", file, want_n, parsed);
        if (bad_escapes)
            print_message("%s: %d values with malformed escapes (decode reports them)\n", file,
                          bad_escapes);
    } else {
        err_t want = err_by_name(expect);
        if (rc != want || segno != want_n)
            fail_msg("%s: expected %s at segment %d, got %s at segment %d (%s)", file, expect,
                     want_n, err_name(rc), segno, d.msg);
        /* An error detail never echoes content: where is an id or a number. */
        assert_true(strlen(d.where) < 16);
    }
    hl7_msg_free(m);
    arena_free(&a);
    xfree(buf);
}

static void test_corpus(void **state)
{
    (void)state;
    size_t len = 0;
    char *exp = tu_read("tests/data/hl7/corpus/EXPECTED", &len);
    assert_non_null(exp);
    exp = xrealloc(exp, len + 1);
    exp[len] = '\0';
    int files = 0, ok = 0;
    char *save = NULL;
    for (char *line = strtok_r(exp, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || line[0] == '\0')
            continue;
        char file[256], expect[32];
        int n;
        if (sscanf(line, "%255s %31s %d", file, expect, &n) != 3)
            fail_msg("bad EXPECTED line: %s", line);
        run_file(file, expect, n);
        files++;
        ok += strcmp(expect, "ok") == 0;
    }
    print_message("corpus: %d files, %d parse and round-trip, %d rejected as expected\n", files,
                  ok, files - ok);
    assert_true(files >= 80);
    xfree(exp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
    };
    return cmocka_run_group_tests_name("hl7_corpus", tests, NULL, NULL);
}
