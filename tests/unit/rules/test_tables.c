/* test_tables.c - the code tables: lookups checked row by row against the
 * official TSV data (../shared/data, or $SPINEGATE_DATA), the 7th-character
 * logic checked against independent data (every 7-character code in the
 * MS-DRG CC/MCC/PDX lists that falls in a covered category must be
 * accepted as valid), code references of notes, region reading, and table
 * file errors. When the shared data is absent the data checks say so and
 * use the committed table file instead. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rules.h"
#include "rules_int.h"
#include "xmalloc.h"

static rule_pack_t *pack;
static char data_dir[1024];
static bool have_data;

static const rule__table_t *table(void)
{
    return &pack->tables[pack->ntables - 1];
}

static FILE *open_data(const char *rel)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", data_dir, rel);
    return fopen(path, "r");
}

/* Every code row of each fiscal year's spine-codes.tsv (FY2026 at the top
 * of icd10cm/, later years in icd10cm/fyNNNN/): found in that year's table,
 * same billable flag and description, and nothing more in the table. */
static void check_year(const rule__table_t *t)
{
    char path[160], fy[16];
    FILE *f;
    bool from_data = have_data;
    for (size_t i = 0; i < sizeof fy; i++)
        fy[i] = (char)(t->fy[i] >= 'A' && t->fy[i] <= 'Z' ? t->fy[i] + 32 : t->fy[i]);
    if (from_data) {
        if (!strcmp(t->fy, "FY2026"))
            snprintf(path, sizeof path, "icd10cm/spine-codes.tsv");
        else
            snprintf(path, sizeof path, "icd10cm/%s/spine-codes.tsv", fy);
        f = open_data(path);
    } else {
        printf("note: no shared data at %s: checking the committed table file instead\n", data_dir);
        char file[1100];
        snprintf(file, sizeof file, "%.1024s/rules/tables/spine-%s.tsv", getenv("top_srcdir") ? getenv("top_srcdir") : ".", fy);
        f = fopen(file, "r");
    }
    assert_non_null(f);
    char line[2048];
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *cols[4] = {0};
        char *s = line;
        if (!from_data) {
            if (line[0] != 'C' || line[1] != '\t')
                continue;
            s = line + 2;
        } else if (!strncmp(line, "code\t", 5)) {
            continue;
        }
        for (int i = 0; i < 4 && s; i++) {
            cols[i] = s;
            s = strchr(s, '\t');
            if (s)
                *s++ = '\0';
        }
        const char *code = cols[0], *bill = from_data ? cols[2] : cols[1];
        const char *desc = from_data ? cols[3] : cols[2];
        assert_non_null(desc);
        const rule__code_t *c = rule__table_find(t, code);
        if (!c)
            fail_msg("%s: %s not found", t->fy, code);
        assert_int_equal(c->billable, bill[0] == '1');
        assert_string_equal(c->desc, desc);
        char n[16];
        assert_true(claim_code_normalise(c->dotted, strlen(c->dotted), n, sizeof n));
        assert_string_equal(n, code);
        rows++;
    }
    fclose(f);
    printf("%s: %d code rows checked\n", t->fy, rows);
    assert_int_equal((size_t)rows, t->ncodes);
}

static void test_codes_match_tsv(void **state)
{
    (void)state;
    assert_int_equal(pack->ntables, 2);
    for (size_t i = 0; i < pack->ntables; i++)
        check_year(&pack->tables[i]);
    /* The one code FY2027 deleted in the range. */
    assert_non_null(rule__table_find(&pack->tables[0], "S23420"));
    assert_null(rule__table_find(&pack->tables[1], "S23420"));
    assert_string_equal(pack->tables[1].drg_version, "43");
    assert_string_equal(pack->tables[1].drg_for_year, "44");
}

/* The MS-DRG lists as loaded: sizes, the alive flag, an exclusion. */
static void test_drg_lists(void **state)
{
    (void)state;
    const rule__table_t *t = table();
    assert_int_equal(t->npdx, 1170);
    assert_int_equal(t->nmcc, 3354);
    assert_int_equal(rule__map_get(&t->mcc_map, rule__key("I469")), 1);
    assert_int_equal(rule__map_get(&t->mcc_map, rule__key("T794XXA")), 1);
    assert_int_equal(rule__map_get(&t->mcc_map, rule__key("A021")), 0);
    assert_int_equal(rule__map_get(&t->mcc_map, rule__key("M4304")), -1);
    assert_true(rule__map_get(&t->pdx_map, rule__key("M4304")) >= 0);
    int32_t pi = rule__map_get(&t->pdx_map, rule__key("M4304"));
    assert_int_equal(t->pdx[pi].n, 0); /* M43.04 excludes no MCC */
    pi = rule__map_get(&t->pdx_map, rule__key("M9910"));
    assert_true(pi >= 0 && t->pdx[pi].n > 0);
    if (!have_data) {
        printf("note: no shared data: MCC rows not compared one by one\n");
        return;
    }
    FILE *f = open_data("msdrg/mcc.tsv");
    assert_non_null(f);
    char line[256], code[16], dotted[16];
    int alive, rows = 0;
    assert_non_null(fgets(line, sizeof line, f));
    while (fgets(line, sizeof line, f)) {
        assert_int_equal(sscanf(line, "%15s %15s %d", code, dotted, &alive), 3);
        assert_int_equal(rule__map_get(&t->mcc_map, rule__key(code)), alive);
        rows++;
    }
    fclose(f);
    assert_int_equal(rows, 3354);
}

/* Independent check of the 7th-character and placeholder logic: every code
 * CMS lists (CC, MCC, 551/552 principals) that falls in a covered category
 * is a valid code, so the rules must not reject it. */
static void check_list(const char *rel, int *checked)
{
    FILE *f = open_data(rel);
    assert_non_null(f);
    char line[256], code[16];
    arena_t a;
    arena_init(&a, 0);
    assert_non_null(fgets(line, sizeof line, f));
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%15s", code) != 1)
            continue;
        char cat[4];
        snprintf(cat, sizeof cat, "%.3s", code);
        bool cover = rule__map_get(&table()->category_map, rule__key(cat)) >= 0;
        const rule__seven_t *s = rule__table_seven_for(table(), code);
        if (!cover && !(s && !s->in_codes))
            continue;
        claim_t *c = claim_new(&a, CLAIM_SRC_HL7V2);
        c->service_from = (claim_date_t){2026, 3, 1};
        claim_dx_t *d = claim_add_dx(c, &a);
        d->sequence = 1;
        d->type = DX_TYPE_SECONDARY;
        snprintf(d->code, sizeof d->code, "%s", code);
        rule_verdict_t v;
        rule_evaluate(pack, c, &a, &v);
        for (size_t i = 0; i < v.nfindings; i++)
            if (v.findings[i].severity == RULE_SEV_REJECT)
                fail_msg("%s (from %s) rejected: %s", code, rel, v.findings[i].message);
        (*checked)++;
        arena_reset(&a);
    }
    arena_free(&a);
    fclose(f);
}

static void test_cms_codes_are_valid(void **state)
{
    (void)state;
    if (!have_data) {
        printf("note: no shared data at %s: CMS lists not checked\n", data_dir);
        return;
    }
    int checked = 0;
    check_list("msdrg/mcc.tsv", &checked);
    check_list("msdrg/cc.tsv", &checked);
    check_list("msdrg/drg551_552_pdx.tsv", &checked);
    printf("%d CMS-listed codes in covered categories accepted as valid\n", checked);
    assert_true(checked > 1000);
}

static void test_hierarchy(void **state)
{
    (void)state;
    const rule__table_t *t = table();
    const rule__code_t *c = rule__table_find(t, "M4304");
    assert_non_null(c);
    assert_string_equal(c->dotted, "M43.04");
    assert_string_equal(t->codes[c->parent].code, "M430");
    assert_true(c->leaf && c->billable);
    assert_int_equal(c->seven, -1);
    assert_string_equal(pack->geo.regions[c->region].id, "thoracic");
    const rule__code_t *m430 = rule__table_find(t, "M430");
    assert_false(m430->billable || m430->leaf);
    assert_int_equal(m430->end - (int32_t)(m430 - t->codes), 11); /* itself and M43.00-M43.09 */
    /* Excludes1 applying to M43.04: M43's and M43.0's notes */
    int q762 = 0, m431 = 0;
    for (int i = 0; i < c->nex1; i++) {
        const rule__note_t *n = &t->notes[c->ex1[i]];
        for (int r = 0; r < n->nrefs; r++) {
            q762 += rule__ref_match(&n->refs[r], "Q762");
            m431 += rule__ref_match(&n->refs[r], "M4316");
        }
    }
    assert_true(q762 >= 1 && m431 == 1);
    /* 7th characters: S12.0- use S12's, S12.8 its own */
    const rule__code_t *s = rule__table_find(t, "S12000");
    assert_string_equal(t->seven[s->seven].chars, "ABDGKS");
    s = rule__table_find(t, "S128");
    assert_string_equal(t->seven[s->seven].chars, "ADS");
    assert_string_equal(t->seven[rule__table_find(t, "M4850")->seven].chars, "ADGS");
    const rule__seven_t *m80 = rule__table_seven_for(t, "M8008XA");
    assert_non_null(m80);
    assert_false(m80->in_codes);
    assert_string_equal(m80->chars, "ADGKPS");
    /* regions from descriptions */
    assert_string_equal(pack->geo.regions[rule__table_find(t, "M4300")->region].id, "unspecified");
    assert_string_equal(pack->geo.regions[rule__table_find(t, "M4309")->region].id, "multiple");
    assert_string_equal(pack->geo.regions[rule__table_find(t, "M435X9")->region].id, "unspecified");
    assert_string_equal(pack->geo.regions[rule__table_find(t, "M50023")->region].id, "cervical");
    assert_string_equal(pack->geo.regions[rule__table_find(t, "S22080")->region].id, "thoracic");
    assert_string_equal(pack->geo.regions[rule__table_find(t, "M546")->region].id, "thoracic");
    assert_int_equal(rule__table_find(t, "M519")->region, -1);
    assert_int_equal(rule__table_find(t, "S323")->region, -1); /* ilium: not spine */
}

static void test_refs(void **state)
{
    (void)state;
    rule__ref_t r;
    assert_true(rule__ref_parse("Q763-Q764", 9, &r));
    assert_true(rule__ref_match(&r, "Q763"));
    assert_true(rule__ref_match(&r, "Q7649"));
    assert_false(rule__ref_match(&r, "Q765"));
    assert_false(rule__ref_match(&r, "Q762"));
    assert_true(rule__ref_parse("M433-M435X9", 11, &r));
    assert_true(rule__ref_match(&r, "M434"));
    assert_true(rule__ref_match(&r, "M435X9"));
    assert_false(rule__ref_match(&r, "M436"));
    assert_true(rule__ref_parse("M51/5=4", 7, &r));
    assert_true(rule__ref_match(&r, "M5124"));
    assert_false(rule__ref_match(&r, "M5126"));
    assert_false(rule__ref_match(&r, "M50"));
    assert_true(rule__ref_parse("M50-M54", 7, &r));
    assert_true(rule__ref_match(&r, "M5416"));
    assert_false(rule__ref_match(&r, "M4916"));
    assert_false(rule__ref_parse("m43", 3, &r));
    assert_false(rule__ref_parse("M43-M42", 7, &r)); /* reversed */
    assert_false(rule__ref_parse("M43/6=1", 7, &r));
    assert_false(rule__ref_parse("", 0, &r));
    assert_int_equal(rule__key("M43046789"), 0);
    assert_int_equal(rule__keyn("M4304", 5), rule__key("M4304"));
}

static void test_text(void **state)
{
    (void)state;
    char n[256];
    rule__text_norm("Pars defect T12\xe2\x80\x93L1, thoracic!", n, sizeof n);
    assert_string_equal(n, " PARS DEFECT T12 L1 THORACIC ");
    uint32_t set = rule__text_regions(&pack->geo, n, false);
    int tl = -1, th = -1;
    for (int i = 0; i < pack->geo.nregions; i++) {
        if (!strcmp(pack->geo.regions[i].id, "thoracolumbar")) tl = i;
        if (!strcmp(pack->geo.regions[i].id, "thoracic")) th = i;
    }
    assert_true(set & (1u << tl));
    assert_true(set & (1u << th));
    rule__text_norm("T2 weighted", n, sizeof n);
    assert_int_equal(rule__text_regions(&pack->geo, n, false), 0);
    rule__text_norm(NULL, n, sizeof n);
    assert_string_equal(n, " ");
    rule__text_norm("x", n, 2);
    char *neg[] = {" NOT "};
    rule__text_norm("not congenital", n, sizeof n);
    assert_false(rule__text_has_word(n, " CONGENITAL ", neg, 1));
    rule__text_norm("congenital, not acquired", n, sizeof n);
    assert_true(rule__text_has_word(n, " CONGENITAL ", neg, 1));
}

static void expect_table_error(const char *text, const char *needle)
{
    rule__table_t t;
    err_detail_t d;
    err_t rc = rule__table_parse("t.tsv", text, strlen(text), &t, &d);
    assert_int_equal(rc, ERR_BAD_TABLE);
    if (!strstr(d.msg, needle))
        fail_msg("'%s' lacks '%s'", d.msg, needle);
}

static void test_table_errors(void **state)
{
    (void)state;
    expect_table_error("", "version 1 header");
    expect_table_error("#spinegate-tables\t1\n", "header lacks");
    expect_table_error("#spinegate-tables\t1\n#fiscal_year\tFY2026\n#valid_from\t2025-10-01\n"
                       "#valid_to\t2026-09-30\n#body_lines\t1\n#body_fnv1a64\t0000000000000000\nC\tM43\t0\tx\n",
                       "checksum");
    expect_table_error("#spinegate-tables\t1\n#valid_from\t2025-13-01\n", "valid_from");
    expect_table_error("#spinegate-tables\n", "header line");
    /* a body with a correct checksum but a bad row: the line is named */
    const char *body = "C\tM43\t0\tx\nQ\tbad\n";
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = body; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 0x100000001b3ull;
    }
    char text[512];
    snprintf(text, sizeof text,
             "#spinegate-tables\t1\n#fiscal_year\tFY2026\n#valid_from\t2025-10-01\n"
             "#valid_to\t2026-09-30\n#body_lines\t2\n#body_fnv1a64\t%016llx\n%s",
             (unsigned long long)h, body);
    rule__table_t t;
    err_detail_t d;
    assert_int_equal(rule__table_parse("t.tsv", text, strlen(text), &t, &d), ERR_BAD_TABLE);
    assert_int_equal(d.segment, 8);
    assert_string_equal(d.where, "t.tsv:8");
}

static int setup(void **state)
{
    (void)state;
    const char *env = getenv("SPINEGATE_DATA");
    const char *top = getenv("top_srcdir");
    snprintf(data_dir, sizeof data_dir, "%s", env ? env : "");
    if (!env)
        snprintf(data_dir, sizeof data_dir, "%s/../shared/data", top ? top : ".");
    struct stat st;
    have_data = stat(data_dir, &st) == 0 && S_ISDIR(st.st_mode);
    err_detail_t d;
    return rule_pack_load(NULL, NULL, NULL, &pack, &d) == ERR_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    rule_pack_free(pack);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_match_tsv), cmocka_unit_test(test_drg_lists),
        cmocka_unit_test(test_cms_codes_are_valid), cmocka_unit_test(test_hierarchy),
        cmocka_unit_test(test_refs), cmocka_unit_test(test_text),
        cmocka_unit_test(test_table_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
