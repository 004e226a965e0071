/* test_pack.c - loading the rule pack: the embedded pack and tables, packs
 * and tables from paths, every kind of load error (JSON syntax with its
 * line, semantic errors with their key path, checks against the tables),
 * and site policy (overrides, advisory, unknown rule ids). Packs under test
 * are the embedded pack edited through cJSON and written to a temp file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rules.h"
#include "rules_int.h"
#include "xmalloc.h"

static char tmp_path[64];

static const rule__embedded_t *embedded(const char *suffix)
{
    for (size_t i = 0; i < rule__embedded_count; i++) {
        size_t a = strlen(rule__embedded_files[i].name), b = strlen(suffix);
        if (a >= b && !strcmp(rule__embedded_files[i].name + a - b, suffix))
            return &rule__embedded_files[i];
    }
    return NULL;
}

static void write_tmp(const char *text)
{
    FILE *f = fopen(tmp_path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static cJSON *pack_json(void)
{
    const rule__embedded_t *e = embedded(".json");
    assert_non_null(e);
    cJSON *j = cJSON_Parse((const char *)e->data);
    assert_non_null(j);
    return j;
}

static cJSON *rule_obj(cJSON *root, const char *id, int *index)
{
    cJSON *rules = cJSON_GetObjectItem(root, "rules");
    int i = 0;
    cJSON *r;
    cJSON_ArrayForEach(r, rules)
    {
        if (!strcmp(cJSON_GetObjectItem(r, "id")->valuestring, id)) {
            if (index)
                *index = i;
            return r;
        }
        i++;
    }
    fail_msg("no rule %s", id);
    return NULL;
}

/* The index of the region axis whose first code is first. */
static int axis_index(cJSON *root, const char *first)
{
    int i = 0;
    cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(root, "region_axes"))
    {
        if (!strcmp(cJSON_GetArrayItem(cJSON_GetObjectItem(a, "codes"), 0)->valuestring, first))
            return i;
        i++;
    }
    fail_msg("no region axis starting with %s", first);
    return -1;
}

/* The index of the first excludes1 row of owner and note. */
static int row_index(cJSON *root, const char *owner, const char *note)
{
    int i = 0;
    cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(root, "excludes1"))
    {
        if (!strcmp(cJSON_GetObjectItem(r, "owner")->valuestring, owner) &&
            !strcmp(cJSON_GetObjectItem(r, "note")->valuestring, note))
            return i;
        i++;
    }
    fail_msg("no excludes1 row %s '%s'", owner, note);
    return -1;
}

/* Loads root (consumed) from a file and expects failure at where. */
static void expect_error(cJSON *root, err_t code, const char *where, const char *msg)
{
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    write_tmp(text);
    free(text);
    rule_pack_t *p = (rule_pack_t *)1;
    err_detail_t d;
    err_t rc = rule_pack_load(tmp_path, NULL, NULL, &p, &d);
    assert_null(p);
    if (rc != code || strcmp(d.where, where) != 0 || (msg && !strstr(d.msg, msg)))
        fail_msg("got %s at '%s': %s; expected %s at '%s' (%s)", err_name(rc), d.where, d.msg,
                 err_name(code), where, msg ? msg : "");
}

/* The embedded pack without rule id's message key must fail to load. */
static void expect_message_missing(const char *id, const char *key)
{
    int idx;
    char where[96];
    cJSON *j = pack_json();
    cJSON *r = rule_obj(j, id, &idx);
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(r, "messages"), key);
    snprintf(where, sizeof where, "rules[%d].messages.%s", idx, key);
    expect_error(j, ERR_BAD_PACK, where, "missing");
}

static void test_embedded_loads(void **state)
{
    (void)state;
    rule_pack_t *p;
    err_detail_t d;
    assert_int_equal(rule_pack_load(NULL, NULL, NULL, &p, &d), ERR_OK);
    const char *s = rule_pack_describe(p);
    assert_non_null(strstr(s, "spinegate-spine-rules v1 (14 rules)"));
    assert_non_null(strstr(s, "FY2026"));
    assert_int_equal(p->rules[RID_EXCLUDES1].severity, RULE_SEV_REJECT);
    rule_pack_free(p);
    rule_pack_free(NULL);
    assert_string_equal(rule_pack_describe(NULL), "no rule pack");
}

static void test_from_paths(void **state)
{
    (void)state;
    const char *top = getenv("top_srcdir");
    char pack[1024], tables[1024], file[1100];
    snprintf(pack, sizeof pack, "%s/rules/spine-rules.json", top ? top : ".");
    snprintf(tables, sizeof tables, "%s/rules/tables", top ? top : ".");
    snprintf(file, sizeof file, "%s/spine-fy2026.tsv", tables);
    rule_pack_t *p;
    err_detail_t d;
    assert_int_equal(rule_pack_load(pack, tables, NULL, &p, &d), ERR_OK);
    assert_int_equal(p->ntables, 2);
    rule_pack_free(p);
    assert_int_equal(rule_pack_load(pack, file, NULL, &p, &d), ERR_OK);
    rule_pack_free(p);
    assert_int_equal(rule_pack_load("/nonexistent/pack.json", NULL, NULL, &p, &d), ERR_IO);
    assert_null(p);
    assert_int_equal(rule_pack_load(NULL, "/nonexistent", NULL, &p, &d), ERR_IO);
    /* a directory without tables */
    assert_int_equal(rule_pack_load(NULL, "/", NULL, &p, &d), ERR_BAD_TABLE);
    /* the same table twice overlaps itself */
    char dir[] = "/tmp/sg_tables_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char a[128], b[128];
    snprintf(a, sizeof a, "%s/a.tsv", dir);
    snprintf(b, sizeof b, "%s/b.tsv", dir);
    char *abs = realpath(file, NULL);
    assert_non_null(abs);
    assert_int_equal(symlink(abs, a), 0);
    assert_int_equal(symlink(abs, b), 0);
    free(abs);
    assert_int_equal(rule_pack_load(NULL, dir, NULL, &p, &d), ERR_BAD_TABLE);
    assert_non_null(strstr(d.msg, "overlaps"));
    unlink(a);
    unlink(b);
    rmdir(dir);
}

static void test_json_syntax_error_line(void **state)
{
    (void)state;
    write_tmp("{\n  \"pack\": \"x\",\n  \"version\": 1,\n  oops\n}\n");
    rule_pack_t *p;
    err_detail_t d;
    assert_int_equal(rule_pack_load(tmp_path, NULL, NULL, &p, &d), ERR_BAD_PACK);
    assert_int_equal(d.segment, 4);
    assert_non_null(strstr(d.msg, "line 4"));
    write_tmp("");
    assert_int_equal(rule_pack_load(tmp_path, NULL, NULL, &p, &d), ERR_BAD_PACK);
    write_tmp("[1,2]");
    assert_int_equal(rule_pack_load(tmp_path, NULL, NULL, &p, &d), ERR_BAD_PACK);
    assert_non_null(strstr(d.msg, "object"));
}

static void test_semantic_errors(void **state)
{
    (void)state;
    cJSON *j = pack_json();
    int idx;
    cJSON *r = rule_obj(j, "seventh-character", &idx);
    cJSON_ReplaceItemInObject(r, "severity", cJSON_CreateString("fatal"));
    char where[64];
    snprintf(where, sizeof where, "rules[%d].severity", idx);
    expect_error(j, ERR_BAD_PACK, where, "unknown severity");

    j = pack_json();
    r = rule_obj(j, "excludes1-pair", &idx);
    cJSON_AddStringToObject(r, "severty", "warn");
    snprintf(where, sizeof where, "rules[%d].severty", idx);
    expect_error(j, ERR_BAD_PACK, where, "unknown key");

    j = pack_json();
    r = rule_obj(j, "excludes1-pair", &idx);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(r, "messages"), "query",
                              cJSON_CreateString("{code} and {patient_name}"));
    snprintf(where, sizeof where, "rules[%d].messages.query", idx);
    expect_error(j, ERR_BAD_PACK, where, "unknown placeholder {patient_name}");

    expect_message_missing("procedure-linkage", "dangling");

    j = pack_json();
    cJSON_AddItemToArray(cJSON_GetObjectItem(j, "rules"),
                         cJSON_Parse("{\"id\":\"no-such-rule\",\"severity\":\"warn\",\"messages\":{}}"));
    snprintf(where, sizeof where, "rules[%d].id", cJSON_GetArraySize(cJSON_GetObjectItem(j, "rules")) - 1);
    expect_error(j, ERR_BAD_PACK, where, "unknown rule id");

    j = pack_json();
    cJSON *proc = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "procedures"), 2);
    cJSON_ReplaceItemInObject(proc, "region", cJSON_CreateString("pelvis"));
    expect_error(j, ERR_BAD_PACK, "procedures[2].region", "not a specific region");

    j = pack_json();
    proc = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "procedures"), 0);
    cJSON_ReplaceItemInObject(proc, "codes", cJSON_CreateString("7202-72020"));
    expect_error(j, ERR_BAD_PACK, "procedures[0].codes", "equal-length");

    j = pack_json();
    cJSON_ReplaceItemInObject(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "levels"), 1), "to",
                              cJSON_CreateString("12"));
    expect_error(j, ERR_BAD_PACK, "levels[1].to", "number");

    j = pack_json();
    cJSON_DeleteItemFromObject(j, "regions");
    expect_error(j, ERR_BAD_PACK, "regions", "missing");

    /* the M43 region axis contradicting the table: 9 is multiple sites */
    j = pack_json();
    int ai = axis_index(j, "M43.0");
    cJSON *ax = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "region_axes"), ai);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(ax, "digits"), "9",
                              cJSON_CreateString("unspecified"));
    snprintf(where, sizeof where, "region_axes[%d].digits.9", ai);
    expect_error(j, ERR_BAD_PACK, where, "M43.09");

    /* an axis that leaves a code of its group without a region */
    j = pack_json();
    ai = axis_index(j, "M43.0");
    ax = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "region_axes"), ai);
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(ax, "digits"), "7");
    snprintf(where, sizeof where, "region_axes[%d].digits", ai);
    expect_error(j, ERR_BAD_PACK, where, "M43.07");

    /* the old per-rule region_aware params are refused with a pointer */
    j = pack_json();
    r = rule_obj(j, "excludes1-pair", &idx);
    cJSON_AddItemToObject(r, "params", cJSON_Parse("{\"region_aware\": []}"));
    snprintf(where, sizeof where, "rules[%d].params", idx);
    expect_error(j, ERR_BAD_PACK, where, "region_axes");

    /* a row whose note is not the tabular's text */
    j = pack_json();
    int ri = row_index(j, "M48.5", "traumatic fracture of vertebra (S12.-, S22.-, S32.-)");
    cJSON *row = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "excludes1"), ri);
    cJSON_ReplaceItemInObject(row, "note", cJSON_CreateString("traumatic fracture of vertebra"));
    snprintf(where, sizeof where, "excludes1[%d].note", ri);
    expect_error(j, ERR_BAD_PACK, where, "not an Excludes1 note under M48.5 in the FY2026 table");

    /* a row that widens its note (a humerus fracture is not S12/S22/S32) */
    j = pack_json();
    ri = row_index(j, "M48.5", "traumatic fracture of vertebra (S12.-, S22.-, S32.-)");
    row = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "excludes1"), ri);
    cJSON *ex = cJSON_GetObjectItem(row, "excludes");
    cJSON_AddItemToArray(ex, cJSON_CreateString("S42.2"));
    snprintf(where, sizeof where, "excludes1[%d].excludes[%d]", ri, cJSON_GetArraySize(ex) - 1);
    expect_error(j, ERR_BAD_PACK, where, "not among the codes the note points to");

    /* applies_to outside the owner, a bad relation, a missing reason */
    j = pack_json();
    row = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "excludes1"), ri);
    cJSON_AddItemToObject(row, "applies_to", cJSON_Parse("[\"M48.4\"]"));
    snprintf(where, sizeof where, "excludes1[%d].applies_to[0]", ri);
    expect_error(j, ERR_BAD_PACK, where, "not under the owner");
    j = pack_json();
    row = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "excludes1"), ri);
    cJSON_ReplaceItemInObject(row, "relation", cJSON_CreateString("same-level"));
    snprintf(where, sizeof where, "excludes1[%d].relation", ri);
    expect_error(j, ERR_BAD_PACK, where, "same-region or any");
    j = pack_json();
    row = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "excludes1"), ri);
    cJSON_ReplaceItemInObject(row, "severity", cJSON_CreateString("info"));
    snprintf(where, sizeof where, "excludes1[%d].severity", ri);
    expect_error(j, ERR_BAD_PACK, where, "reject or warn");
    j = pack_json();
    row = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "excludes1"), ri);
    cJSON_DeleteItemFromObject(row, "why");
    snprintf(where, sizeof where, "excludes1[%d].why", ri);
    expect_error(j, ERR_BAD_PACK, where, "missing");
    j = pack_json();
    row = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "excludes1"), ri);
    cJSON_AddStringToObject(row, "serverity", "warn");
    snprintf(where, sizeof where, "excludes1[%d].serverity", ri);
    expect_error(j, ERR_BAD_PACK, where, "unknown key");

    j = pack_json();
    r = rule_obj(j, "acquired-congenital", &idx);
    cJSON *m0 = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "params"), "map"), 0);
    cJSON_ReplaceItemInArray(cJSON_GetObjectItem(m0, "acquired"), 0, cJSON_CreateString("M43.7"));
    snprintf(where, sizeof where, "rules[%d].params.map[0].acquired[0]", idx);
    expect_error(j, ERR_BAD_PACK, where, "not in the FY2026 table");
    j = pack_json();
    r = rule_obj(j, "acquired-congenital", &idx);
    cJSON *aw = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "params"), "acquired_words");
    cJSON_ReplaceItemInArray(aw, 0, cJSON_CreateNumber(1));
    snprintf(where, sizeof where, "rules[%d].params.acquired_words[0]", idx);
    expect_error(j, ERR_BAD_PACK, where, "non-empty string");
    expect_message_missing("acquired-congenital", "acquired");
}

/* Loads the pack j (freed here) from a file; it must load. */
static rule_pack_t *load_changed(cJSON *j)
{
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    write_tmp(text);
    free(text);
    rule_pack_t *p;
    err_detail_t d;
    assert_int_equal(rule_pack_load(tmp_path, NULL, NULL, &p, &d), ERR_OK);
    return p;
}

/* A claim of one principal diagnosis, code as sent. */
static claim_t *one_dx_claim(arena_t *a, const char *code)
{
    claim_t *c = claim_new(a, CLAIM_SRC_HL7V2);
    claim_dx_t *dx = claim_add_dx(c, a);
    dx->sequence = 1;
    dx->type = DX_TYPE_PRINCIPAL;
    snprintf(dx->code, sizeof dx->code, "%s", code);
    return c;
}

static void test_disabled_rule(void **state)
{
    (void)state;
    cJSON *j = pack_json();
    cJSON *r = rule_obj(j, "drg-tier", NULL);
    cJSON_AddBoolToObject(r, "enabled", false);
    rule_pack_t *p = load_changed(j);
    arena_t a;
    arena_init(&a, 0);
    rule_verdict_t v;
    rule_evaluate(p, one_dx_claim(&a, "M4304"), &a, &v);
    assert_int_equal(v.nfindings, 0);
    assert_int_equal(v.kind, VERDICT_ACCEPT);
    arena_free(&a);
    rule_pack_free(p);
}

/* Templates expand placeholders anywhere, side by side and repeated, with
 * unfilled ones empty; a template may hold at most RULE__TEMPLATE_MAX_VARS. */
static void test_template_expansion(void **state)
{
    (void)state;
    int idx;
    char where[64];
    /* a '{' that opens no placeholder is refused at load */
    cJSON *j = pack_json();
    cJSON *r = rule_obj(j, "seventh-character", &idx);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(r, "messages"), "not_applicable",
                              cJSON_CreateString("{code}|x{ {code}"));
    snprintf(where, sizeof where, "rules[%d].messages.not_applicable", idx);
    expect_error(j, ERR_BAD_PACK, where, "unknown placeholder");

    j = pack_json();
    r = rule_obj(j, "seventh-character", NULL);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(r, "messages"), "not_applicable",
                              cJSON_CreateString("{code}{code}|{other}|x {code}"));
    cJSON_ReplaceItemInObject(r, "reference", cJSON_CreateString("{code}"));
    rule_pack_t *p = load_changed(j);
    arena_t a;
    arena_init(&a, 0);
    rule_verdict_t v;
    rule_evaluate(p, one_dx_claim(&a, "M4304XA"), &a, &v);
    const rule_finding_t *f = NULL;
    for (size_t i = 0; i < v.nfindings; i++)
        if (!strcmp(v.findings[i].rule_id, "seventh-character"))
            f = &v.findings[i];
    assert_non_null(f);
    assert_string_equal(f->message, "M43.04XAM43.04XA||x M43.04XA");
    assert_string_equal(f->reference, "M43.04XA");
    arena_free(&a);
    rule_pack_free(p);

    char many[8 * (RULE__TEMPLATE_MAX_VARS + 1) + 1] = "";
    for (int i = 0; i <= RULE__TEMPLATE_MAX_VARS; i++)
        strcat(many, "{code} ");
    j = pack_json();
    r = rule_obj(j, "seventh-character", &idx);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(r, "messages"), "not_applicable",
                              cJSON_CreateString(many));
    snprintf(where, sizeof where, "rules[%d].messages.not_applicable", idx);
    expect_error(j, ERR_BAD_PACK, where, "more than 32 placeholders");
}

static void test_policy(void **state)
{
    (void)state;
    rule_pack_t *p;
    err_detail_t d;
    const char *ok[] = {"excludes1-pair=warn", "drg-tier=info", NULL};
    rule_policy_t pol = {.advisory = false, .severity_overrides = ok};
    assert_int_equal(rule_pack_load(NULL, NULL, &pol, &p, &d), ERR_OK);
    assert_int_equal(p->rules[RID_EXCLUDES1].severity, RULE_SEV_WARN);
    assert_int_equal(p->rules[RID_CODE_INVALID].severity, RULE_SEV_REJECT);
    rule_pack_free(p);

    rule_policy_t adv = {.advisory = true, .severity_overrides = NULL};
    assert_int_equal(rule_pack_load(NULL, NULL, &adv, &p, &d), ERR_OK);
    for (int i = 0; i < RID__COUNT; i++)
        assert_int_not_equal(p->rules[i].severity, RULE_SEV_REJECT);
    assert_non_null(strstr(rule_pack_describe(p), "advisory"));
    rule_pack_free(p);

    const char *bad_id[] = {"excludes-1=warn", NULL};
    rule_policy_t pb = {.advisory = false, .severity_overrides = bad_id};
    assert_int_equal(rule_pack_load(NULL, NULL, &pb, &p, &d), ERR_BAD_CONFIG);
    assert_null(p);
    assert_string_equal(d.where, "severity_overrides[0]");
    assert_non_null(strstr(d.msg, "unknown rule 'excludes-1'"));

    const char *bad_sev[] = {"drg-tier=info", "excludes1-pair=fatal", NULL};
    rule_policy_t ps = {.advisory = false, .severity_overrides = bad_sev};
    assert_int_equal(rule_pack_load(NULL, NULL, &ps, &p, &d), ERR_BAD_CONFIG);
    assert_string_equal(d.where, "severity_overrides[1]");

    /* "off" (spinegate.conf(5), --help) turns a rule off; its severity stays. */
    const char *off[] = {"drg-tier=off", NULL};
    rule_policy_t po = {.advisory = false, .severity_overrides = off};
    assert_int_equal(rule_pack_load(NULL, NULL, &po, &p, &d), ERR_OK);
    assert_false(p->rules[RID_DRG].enabled);
    assert_true(p->rules[RID_EXCLUDES1].enabled);
    rule_pack_free(p);

    const char *bad_form[] = {"excludes1-pair", NULL};
    rule_policy_t pf = {.advisory = false, .severity_overrides = bad_form};
    assert_int_equal(rule_pack_load(NULL, NULL, &pf, &p, &d), ERR_BAD_CONFIG);
}

/* Every Excludes1 note of every shipped table (built in, and every file in
 * rules/tables/) has a reviewed row: none is left to the raw pointers. */
static void test_excludes1_covers_every_note(void **state)
{
    (void)state;
    const char *top = getenv("top_srcdir");
    char tables[1024];
    snprintf(tables, sizeof tables, "%s/rules/tables", top ? top : ".");
    const char *paths[] = {NULL, tables};
    for (int k = 0; k < 2; k++) {
        rule_pack_t *p;
        err_detail_t d;
        assert_int_equal(rule_pack_load(NULL, paths[k], NULL, &p, &d), ERR_OK);
        assert_true(p->nex1rows >= 103);
        for (size_t ti = 0; ti < p->ntables; ti++) {
            size_t notes = 0;
            for (size_t i = 0; i < p->tables[ti].nnotes; i++)
                notes += p->tables[ti].notes[i].type == NOTE_EXCLUDES1;
            assert_true(notes >= 103);
            const rule__note_t *first;
            size_t n = rule__excludes_unreviewed(p, ti, &first);
            if (n)
                fail_msg("%s: %zu Excludes1 notes without a reviewed row, first %s \"%s\"",
                         p->tables[ti].name, n, first->owner_dotted, first->text);
        }
        rule_pack_free(p);
    }
}

/* A note no row reviews (a future table) is judged from its raw pointers
 * and never rejects; a pack without the table judges nothing by meaning. */
static void test_excludes1_unreviewed_note_warns(void **state)
{
    (void)state;
    cJSON *j = pack_json();
    cJSON *rows = cJSON_GetObjectItem(j, "excludes1");
    for (int i = cJSON_GetArraySize(rows) - 1; i >= 0; i--)
        if (!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, i), "owner")->valuestring,
                    "M43.0"))
            cJSON_DeleteItemFromArray(rows, i);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    rule_pack_t *p;
    err_detail_t d;
    assert_int_equal(rule__pack_load_mem(text, strlen(text), NULL, NULL, &p, &d), ERR_OK);
    free(text);
    const rule__note_t *first;
    assert_int_equal(rule__excludes_unreviewed(p, 0, &first), 2);
    assert_string_equal(first->owner_dotted, "M43.0");
    arena_t a;
    arena_init(&a, 0);
    claim_t *c = claim_new(&a, CLAIM_SRC_HL7V2);
    const char *codes[] = {"M4306", "M4316"};
    for (int i = 0; i < 2; i++) {
        claim_dx_t *dx = claim_add_dx(c, &a);
        dx->sequence = i + 1;
        snprintf(dx->code, sizeof dx->code, "%s", codes[i]);
        dx->system = CODESYS_ICD10CM;
    }
    c->service_from = (claim_date_t){2026, 1, 15};
    rule_verdict_t v;
    rule_evaluate(p, c, &a, &v);
    int seen = 0;
    for (size_t i = 0; i < v.nfindings; i++)
        if (!strcmp(v.findings[i].rule_id, "excludes1-pair")) {
            seen++;
            assert_int_equal(v.findings[i].severity, RULE_SEV_WARN);
            assert_non_null(strstr(v.findings[i].message, "not reviewed"));
        }
    assert_int_equal(seen, 1);
    assert_int_not_equal(v.kind, VERDICT_REJECT);
    arena_free(&a);
    rule_pack_free(p);
}

/* Judges a claim of two codes under pack p; returns the excludes1-pair
 * finding's severity, or -1 when there is none. */
static int pair_severity(rule_pack_t *p, const char *a, const char *b)
{
    arena_t ar;
    arena_init(&ar, 0);
    claim_t *c = claim_new(&ar, CLAIM_SRC_HL7V2);
    const char *codes[] = {a, b};
    for (int i = 0; i < 2; i++) {
        claim_dx_t *dx = claim_add_dx(c, &ar);
        dx->sequence = i + 1;
        snprintf(dx->code, sizeof dx->code, "%s", codes[i]);
        dx->system = CODESYS_ICD10CM;
    }
    c->service_from = (claim_date_t){2026, 1, 15};
    rule_verdict_t v;
    rule_evaluate(p, c, &ar, &v);
    int sev = -1;
    for (size_t i = 0; i < v.nfindings; i++)
        if (!strcmp(v.findings[i].rule_id, "excludes1-pair"))
            sev = (int)v.findings[i].severity;
    arena_free(&ar);
    return sev;
}

/* A row may name a range across categories (a note without a pointer names
 * its codes in words): partners are found in every category in between. */
static void test_excludes1_range_across_categories(void **state)
{
    (void)state;
    cJSON *j = pack_json();
    int ri = row_index(j, "M43.6", "current injury - see Injury, of spine, by body region");
    cJSON *row = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "excludes1"), ri);
    cJSON_ReplaceItemInObject(row, "excludes", cJSON_Parse("[\"S12.9-S14.1\"]"));
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    rule_pack_t *p;
    err_detail_t d;
    assert_int_equal(rule__pack_load_mem(text, strlen(text), NULL, NULL, &p, &d), ERR_OK);
    free(text);
    assert_int_equal(pair_severity(p, "M436", "S129XXA"), RULE_SEV_WARN); /* lower bound */
    assert_int_equal(pair_severity(p, "M436", "S134XXA"), RULE_SEV_WARN); /* between */
    assert_int_equal(pair_severity(p, "M436", "S14109A"), RULE_SEV_WARN); /* upper bound */
    assert_int_equal(pair_severity(p, "M436", "S1201XA"), -1);            /* below */
    assert_int_equal(pair_severity(p, "M436", "S142XXA"), -1);            /* above */
    assert_int_equal(pair_severity(p, "M436", "S161XXA"), -1);            /* another category */
    rule_pack_free(p);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(rule_severity_name(RULE_SEV_REJECT), "reject");
    assert_string_equal(rule_severity_name(RULE_SEV_WARN), "warn");
    assert_string_equal(rule_severity_name(RULE_SEV_INFO), "info");
    assert_string_equal(verdict_name(VERDICT_ACCEPT), "accept");
    assert_string_equal(verdict_name(VERDICT_ANNOTATE), "annotate");
    assert_string_equal(verdict_name(VERDICT_REJECT), "reject");
    for (int i = 0; i < RID__COUNT; i++)
        assert_int_equal(rule__id_from(rule__id_name((rule__id_t)i)), i);
}

/* Each rule's reference cites the Official Guidelines section that says
 * what the rule applies (the section numbers of the FY2026/FY2027
 * guidelines), and cites no section outside the ones the rules rest on. */
static void test_guideline_references(void **state)
{
    (void)state;
    static const struct {
        const char *rule;
        const char *sections[3];
    } want[] = {
        {"code-invalid", {"I.A.3", NULL}},
        {"code-not-billable", {"I.A.3", "I.B.2", NULL}},
        {"seventh-character", {"I.A.4", "I.A.5", NULL}},
        {"excludes1-pair", {"I.A.12.a", NULL}},
        {"excludes2-pair", {"I.A.12.b", NULL}},
        {"site-unspecified", {"I.B.2", NULL}},
        {"acquired-congenital", {"I.A.12.a", NULL}},
        {"duplicate-code", {"I.B.12", NULL}},
        {"manifestation-first", {"I.A.13", NULL}},
        {"drg-tier", {"Section II", NULL}},
    };
    /* Section numbers the pack may cite: conventions (I.A.x), general
     * guidelines (I.B.x) and the principal diagnosis section. */
    static const char *const known[] = {"I.A.3", "I.A.4", "I.A.5", "I.A.12.a", "I.A.12.b", "I.A.13",
                                        "I.A.17", "I.A.19", "I.B.2", "I.B.12", NULL};
    rule_pack_t *p;
    err_detail_t d;
    assert_int_equal(rule_pack_load(NULL, NULL, NULL, &p, &d), ERR_OK);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int id = rule__id_from(want[i].rule);
        assert_true(id >= 0);
        const char *ref = p->rules[id].reference;
        if (!ref)
            fail_msg("%s has no reference", want[i].rule);
        for (int k = 0; want[i].sections[k]; k++)
            if (!strstr(ref, want[i].sections[k]))
                fail_msg("%s: reference does not cite %s: %s", want[i].rule, want[i].sections[k], ref);
    }
    for (int id = 0; id < RID__COUNT; id++) {
        const char *ref = p->rules[id].reference;
        for (const char *q = ref; q && (q = strstr(q, "I.")) != NULL; q++) {
            if (q > ref && (q[-1] != ' ' && q[-1] != '('))
                continue;
            size_t n = strspn(q, "I.ABCab0123456789");
            while (n && q[n - 1] == '.')
                n--;
            bool ok = false;
            for (int k = 0; known[k] && !ok; k++)
                ok = strlen(known[k]) == n && !strncmp(q, known[k], n);
            if (!ok)
                fail_msg("%s cites an unexpected section '%.*s'", rule__id_name((rule__id_t)id), (int)n, q);
        }
    }
    rule_pack_free(p);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmp_path, sizeof tmp_path, "/tmp/test_pack.%ld.json", (long)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(tmp_path);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded_loads),
        cmocka_unit_test(test_from_paths),
        cmocka_unit_test(test_json_syntax_error_line),
        cmocka_unit_test(test_semantic_errors),
        cmocka_unit_test(test_disabled_rule),
        cmocka_unit_test(test_template_expansion),
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_guideline_references),
        cmocka_unit_test(test_excludes1_covers_every_note),
        cmocka_unit_test(test_excludes1_unreviewed_note_warns),
        cmocka_unit_test(test_excludes1_range_across_categories),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
