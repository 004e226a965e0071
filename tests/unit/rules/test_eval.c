/* test_eval.c - the rules, case by case, from data files: every
 * tests/data/rules/NAME.case holds claims (diagnoses, service lines, dates)
 * and what the gate must say about them (verdict, findings that must and
 * must not appear), so adding a case needs no C. The format is described
 * at the top of tests/data/rules/README. Also a few API properties that a
 * case file cannot state (purity, accept untouched, the finding cap). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rules.h"
#include "rules_int.h"
#include "xmalloc.h"

#define MAX_EXPECT 32

typedef struct {
    char rule[48];
    char sev[16];
    char code[16];
    char suggest[64];
    char message[128];
    bool absent;
    int line;
} expect_t;

typedef struct {
    char name[128];
    const char *file;
    int line;
    arena_t a;
    claim_t *claim;
    char verdict[16];
    char verdict_not[16];
    char code_sets[64]; /* "" : not checked */
    int nfindings; /* -1: not checked */
    expect_t ex[MAX_EXPECT];
    int nex;
    const char *overrides[RULE_MAX_CODES * 4];
    int noverrides;
    bool advisory;
    int adt; /* -1: default policy */
    char ovbuf[8][64];
} case_t;

static rule_pack_t *default_pack;
static int failures, cases_run;

static void fail_case(const case_t *c, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%d: case '%s': ", c->file, line ? line : c->line, c->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    failures++;
}

/* Splits "key=value" tokens; text="..." may hold spaces. */
static char *next_tok(char **p)
{
    char *s = *p;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!*s)
        return NULL;
    char *start = s;
    bool quoted = false;
    for (; *s; s++) {
        if (*s == '"')
            quoted = !quoted;
        else if ((*s == ' ' || *s == '\t') && !quoted)
            break;
    }
    if (*s)
        *s++ = '\0';
    *p = s;
    return start;
}

static const char *unquote(arena_t *a, const char *v)
{
    size_t n = strlen(v);
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"')
        return arena_strndup(a, v + 1, n - 2);
    return arena_strdup(a, v);
}

static void show_findings(const rule_verdict_t *v)
{
    for (size_t i = 0; i < v->nfindings; i++) {
        const rule_finding_t *f = &v->findings[i];
        fprintf(stderr, "    got %s %s [%s%s%s] sugg=%s: %s\n", f->rule_id, rule_severity_name(f->severity),
                f->ncodes > 0 ? f->codes[0] : "", f->ncodes > 1 ? " " : "", f->ncodes > 1 ? f->codes[1] : "",
                f->suggestion ? f->suggestion : "-", f->message);
    }
}

static int suggestions_checked;

/* Every suggestion the engine makes must pass the rules itself: each code
 * of it, put in place of the diagnosis it was made for, re-judged, must
 * draw no reject on that diagnosis or naming that code. */
static void check_suggestions(case_t *c, const rule_pack_t *pack, const rule_verdict_t *v)
{
    for (size_t i = 0; i < v->nfindings; i++) {
        const rule_finding_t *f = &v->findings[i];
        if (!f->suggestion || f->dx_index < 0)
            continue;
        char buf[512];
        snprintf(buf, sizeof buf, "%s", f->suggestion);
        for (char *save = NULL, *code = strtok_r(buf, ", ", &save); code; code = strtok_r(NULL, ", ", &save)) {
            claim_t copy = *c->claim;
            copy.dx = arena_calloc(&c->a, c->claim->ndx, sizeof *copy.dx);
            memcpy(copy.dx, c->claim->dx, c->claim->ndx * sizeof *copy.dx);
            claim_dx_t *d = &copy.dx[f->dx_index];
            d->code_sent = arena_strdup(&c->a, code);
            d->system = CODESYS_ICD10CM;
            if (!claim_code_normalise(code, strlen(code), d->code, sizeof d->code)) {
                fail_case(c, 0, "suggestion '%s' of %s is not a code", code, f->rule_id);
                continue;
            }
            rule_verdict_t w;
            rule_evaluate(pack, &copy, &c->a, &w);
            suggestions_checked++;
            for (size_t k = 0; k < w.nfindings; k++) {
                const rule_finding_t *g = &w.findings[k];
                bool names = g->dx_index == f->dx_index;
                for (int q = 0; q < g->ncodes; q++)
                    names |= strcmp(g->codes[q], code) == 0;
                if (g->severity == RULE_SEV_REJECT && names)
                    fail_case(c, 0, "suggestion %s (from %s) is itself rejected: %s", code, f->rule_id,
                              g->message);
            }
        }
    }
}

static void run_case(case_t *c)
{
    if (!c->claim)
        return;
    cases_run++;
    rule_pack_t *pack = default_pack;
    if (c->advisory || c->noverrides || c->adt >= 0) {
        c->overrides[c->noverrides] = NULL;
        rule_policy_t pol = {.advisory = c->advisory, .severity_overrides = c->overrides,
                             .adt = c->adt >= 0 ? (rule_adt_mode_t)c->adt : RULE_ADT_ANNOTATE};
        err_detail_t d;
        if (rule_pack_load(NULL, NULL, &pol, &pack, &d) != ERR_OK) {
            fail_case(c, 0, "policy does not load: %s", d.msg);
            return;
        }
    }
    rule_verdict_t v;
    rule_evaluate(pack, c->claim, &c->a, &v);
    int before = failures;
    if (c->verdict[0] && strcmp(verdict_name(v.kind), c->verdict) != 0)
        fail_case(c, 0, "verdict %s, expected %s", verdict_name(v.kind), c->verdict);
    if (c->verdict_not[0] && !strcmp(verdict_name(v.kind), c->verdict_not))
        fail_case(c, 0, "verdict %s, which the case forbids", verdict_name(v.kind));
    if (c->code_sets[0]) {
        char got[64] = "";
        for (size_t i = 0; i < v.ncode_sets; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", i ? " " : "",
                     v.code_sets[i]);
        if (strcmp(got[0] ? got : "none", c->code_sets) != 0)
            fail_case(c, 0, "code sets %s, expected %s", got[0] ? got : "none", c->code_sets);
    }
    if (c->nfindings >= 0 && (int)v.nfindings != c->nfindings)
        fail_case(c, 0, "%zu findings, expected %d", v.nfindings, c->nfindings);
    bool used[256] = {0};
    for (int k = 0; k < c->nex; k++) {
        const expect_t *e = &c->ex[k];
        int hit = -1;
        for (size_t i = 0; i < v.nfindings && i < 256 && hit < 0; i++) {
            const rule_finding_t *f = &v.findings[i];
            if (used[i] || strcmp(f->rule_id, e->rule) != 0)
                continue;
            if (e->absent) {
                hit = (int)i;
                break;
            }
            if (e->sev[0] && strcmp(rule_severity_name(f->severity), e->sev) != 0)
                continue;
            if (e->code[0]) {
                bool has = false;
                for (int q = 0; q < f->ncodes; q++)
                    has |= strcmp(f->codes[q], e->code) == 0;
                if (!has)
                    continue;
            }
            if (e->suggest[0] && (!f->suggestion || !strstr(f->suggestion, e->suggest)))
                continue;
            if (e->message[0] && !strstr(f->message, e->message))
                continue;
            hit = (int)i;
        }
        if (e->absent && hit >= 0)
            fail_case(c, e->line, "unexpected finding %s", e->rule);
        else if (!e->absent && hit < 0)
            fail_case(c, e->line, "missing finding %s %s code=%s suggest=%s", e->rule, e->sev, e->code,
                      e->suggest);
        else if (!e->absent)
            used[hit] = true;
    }
    /* Every finding must be well formed whatever the case expects: no
     * unfilled placeholder, no empty parentheses, no reference that lost
     * its values. */
    for (size_t i = 0; i < v.nfindings; i++) {
        const rule_finding_t *f = &v.findings[i];
        if (!f->rule_id || !f->message || !f->message[0] || strchr(f->message, '{') ||
            strstr(f->message, "()") || strstr(f->message, "''") || strstr(f->message, "  ") ||
            (f->reference && (strstr(f->reference, "()") || strchr(f->reference, '{'))))
            fail_case(c, 0, "finding %zu is malformed: %s", i, f->message ? f->message : "(none)");
    }
    check_suggestions(c, pack, &v);
    if (failures != before)
        show_findings(&v);
    if (pack != default_pack)
        rule_pack_free(pack);
}

static claim_dx_type_t dx_type(const char *s)
{
    if (!strcmp(s, "principal")) return DX_TYPE_PRINCIPAL;
    if (!strcmp(s, "admitting")) return DX_TYPE_ADMITTING;
    if (!strcmp(s, "secondary")) return DX_TYPE_SECONDARY;
    return DX_TYPE_UNSPECIFIED;
}

static void parse_list(const char *s, void (*add)(void *, const char *), void *ctx)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
        add(ctx, tok);
}

typedef struct {
    claim_line_t *l;
    arena_t *a;
} line_ctx_t;

static void add_ptr(void *ctx, const char *s)
{
    line_ctx_t *lc = ctx;
    if (lc->l->ndx_pointers < CLAIM_MAX_DX_POINTERS)
        lc->l->dx_pointers[lc->l->ndx_pointers++] = atoi(s);
}

static void add_dxcode(void *ctx, const char *s)
{
    line_ctx_t *lc = ctx;
    char n[16];
    claim_code_normalise(s, strlen(s), n, sizeof n);
    if (lc->l->ndx_codes < CLAIM_MAX_DX_POINTERS)
        lc->l->dx_codes[lc->l->ndx_codes++] = arena_strdup(lc->a, n);
}

static void start_case(case_t *c, const char *file, int line, const char *name)
{
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->file = file;
    c->line = line;
    c->nfindings = -1;
    c->adt = -1;
    arena_init(&c->a, 0);
    c->claim = claim_new(&c->a, CLAIM_SRC_FHIR_JSON);
    c->claim->service_from = (claim_date_t){2026, 1, 15};
}

static void run_file(const char *path, const char *shown)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char buf[1024];
    int lineno = 0;
    case_t c;
    bool open_case = false;
    while (fgets(buf, sizeof buf, f)) {
        lineno++;
        buf[strcspn(buf, "\r\n")] = '\0';
        char *p = buf;
        char *kw = next_tok(&p);
        if (!kw || kw[0] == '#')
            continue;
        if (!strcmp(kw, "case")) {
            if (open_case) {
                run_case(&c);
                arena_free(&c.a);
            }
            while (*p == ' ')
                p++;
            start_case(&c, shown, lineno, p);
            open_case = true;
            continue;
        }
        if (!open_case) {
            fprintf(stderr, "%s:%d: '%s' before any 'case'\n", shown, lineno, kw);
            failures++;
            continue;
        }
        claim_t *cl = c.claim;
        if (!strcmp(kw, "date")) {
            char *d = next_tok(&p);
            if (!d || !strcmp(d, "none"))
                cl->service_from = (claim_date_t){0};
            else if (!claim_date_parse(d, strlen(d), &cl->service_from))
                fail_case(&c, lineno, "bad date");
        } else if (!strcmp(kw, "setting")) {
            char *v = next_tok(&p);
            cl->setting = v && !strcmp(v, "inpatient")    ? CLAIM_SETTING_INPATIENT
                          : v && !strcmp(v, "outpatient") ? CLAIM_SETTING_OUTPATIENT
                                                          : CLAIM_SETTING_UNKNOWN;
        } else if (!strcmp(kw, "discharge")) {
            char *d = next_tok(&p);
            if (!d || !claim_date_parse(d, strlen(d), &cl->discharge))
                fail_case(&c, lineno, "bad discharge date");
        } else if (!strcmp(kw, "kind")) {
            char *v = next_tok(&p);
            cl->kind = v && !strcmp(v, "adt") ? CLAIM_KIND_ADT : CLAIM_KIND_BILL;
        } else if (!strcmp(kw, "verdict-not")) {
            char *t = next_tok(&p);
            snprintf(c.verdict_not, sizeof c.verdict_not, "%s", t ? t : "");
        } else if (!strcmp(kw, "code-sets")) {
            snprintf(c.code_sets, sizeof c.code_sets, "%s", p ? p : "");
            size_t n = strlen(c.code_sets);
            while (n && (c.code_sets[n - 1] == ' ' || c.code_sets[n - 1] == '\n'))
                c.code_sets[--n] = '\0';
        } else if (!strcmp(kw, "alive")) {
            char *v = next_tok(&p);
            cl->discharged_alive = v && !strcmp(v, "yes") ? 1 : v && !strcmp(v, "no") ? 0 : -1;
        } else if (!strcmp(kw, "dx")) {
            char *seq = next_tok(&p), *code = next_tok(&p);
            if (!seq || !code) {
                fail_case(&c, lineno, "dx needs SEQ CODE");
                continue;
            }
            claim_dx_t *d = claim_add_dx(cl, &c.a);
            d->sequence = atoi(seq);
            d->code_sent = arena_strdup(&c.a, code);
            claim_code_normalise(code, strlen(code), d->code, sizeof d->code);
            d->system = CODESYS_ICD10CM;
            d->location = arena_printf(&c.a, "DG1(%d)-3", d->sequence);
            for (char *t; (t = next_tok(&p));) {
                if (!strncmp(t, "text=", 5))
                    d->text = unquote(&c.a, t + 5);
                else if (!strncmp(t, "line=", 5)) {
                    /* carried only in FT1-19 of the line with that sequence,
                     * written before it (tests/data/rules/README) */
                    int lseq = atoi(t + 5);
                    size_t li = 0;
                    while (li < cl->nlines && cl->lines[li].sequence != lseq)
                        li++;
                    if (li == cl->nlines) {
                        fail_case(&c, lineno, "dx line=%d: no line %d before it", lseq, lseq);
                        continue;
                    }
                    claim_line_t *l = &cl->lines[li];
                    d = &cl->dx[cl->ndx - 1];
                    d->line = (int)li;
                    d->sequence = 0;
                    d->type = DX_TYPE_SECONDARY;
                    d->location = arena_printf(&c.a, "FT1(%zu)-19(%d)", li + 1, l->ndx_codes + 1);
                    if (l->ndx_codes < CLAIM_MAX_DX_POINTERS && d->code[0])
                        l->dx_codes[l->ndx_codes++] = arena_strdup(&c.a, d->code);
                } else if (!strncmp(t, "poa=", 4))
                    d->poa = t[4] == 'Y' ? POA_Y : t[4] == 'N' ? POA_N : t[4] == 'U' ? POA_U
                             : t[4] == 'W' ? POA_W : t[4] == '1' ? POA_EXEMPT : POA_ABSENT;
                else if (!strcmp(t, "stage=working"))
                    d->stage = DX_STAGE_WORKING;
                else if (!strcmp(t, "stage=final"))
                    d->stage = DX_STAGE_FINAL;
                else if (!strncmp(t, "system=raw:", 11)) {
                    d->system_sent = arena_strdup(&c.a, t + 11);
                    d->system = claim_codesys_from(t + 11, strlen(t + 11));
                } else if (!strncmp(t, "system=", 7))
                    d->system = !strcmp(t + 7, "who")    ? CODESYS_ICD10_WHO
                                : !strcmp(t + 7, "icd9") ? CODESYS_ICD9CM
                                : !strcmp(t + 7, "other") ? CODESYS_OTHER
                                : !strcmp(t + 7, "none")  ? CODESYS_UNKNOWN
                                                          : CODESYS_ICD10CM;
                else
                    d->type = dx_type(t);
            }
        } else if (!strcmp(kw, "line")) {
            char *seq = next_tok(&p), *code = next_tok(&p);
            if (!seq || !code) {
                fail_case(&c, lineno, "line needs SEQ CODE");
                continue;
            }
            claim_line_t *l = claim_add_line(cl, &c.a);
            l->sequence = atoi(seq);
            l->code = arena_strdup(&c.a, code);
            l->system = code[0] >= 'A' ? PROCSYS_HCPCS : PROCSYS_CPT;
            l->location = arena_printf(&c.a, "FT1(%d)", l->sequence);
            line_ctx_t lc = {l, &c.a};
            for (char *t; (t = next_tok(&p));) {
                if (!strncmp(t, "ptr=", 4))
                    parse_list(t + 4, add_ptr, &lc);
                else if (!strncmp(t, "codes=", 6))
                    parse_list(t + 6, add_dxcode, &lc);
                else if (!strncmp(t, "date=", 5)) {
                    if (!claim_date_parse(t + 5, strlen(t + 5), &l->date_from))
                        fail_case(&c, lineno, "bad line date");
                }
                else if (!strncmp(t, "system=", 7))
                    l->system = !strcmp(t + 7, "none") ? PROCSYS_UNKNOWN
                                : !strcmp(t + 7, "pcs") ? PROCSYS_ICD10PCS
                                : !strcmp(t + 7, "hcpcs") ? PROCSYS_HCPCS
                                                          : PROCSYS_CPT;
            }
        } else if (!strcmp(kw, "policy")) {
            char *t = next_tok(&p);
            if (t && !strcmp(t, "advisory"))
                c.advisory = true;
            else if (t && !strncmp(t, "adt=", 4))
                c.adt = !strcmp(t + 4, "judge") ? RULE_ADT_JUDGE : !strcmp(t + 4, "forward") ? RULE_ADT_FORWARD
                                                                                            : RULE_ADT_ANNOTATE;
            else if (t && c.noverrides < 8) {
                snprintf(c.ovbuf[c.noverrides], sizeof c.ovbuf[0], "%s", t);
                c.overrides[c.noverrides] = c.ovbuf[c.noverrides];
                c.noverrides++;
            }
        } else if (!strcmp(kw, "expect")) {
            char *t = next_tok(&p);
            snprintf(c.verdict, sizeof c.verdict, "%s", t ? t : "");
        } else if (!strcmp(kw, "findings")) {
            char *t = next_tok(&p);
            c.nfindings = t ? atoi(t) : 0;
        } else if (!strcmp(kw, "finding") || !strcmp(kw, "no-finding")) {
            if (c.nex == MAX_EXPECT) {
                fail_case(&c, lineno, "too many expectations");
                continue;
            }
            expect_t *e = &c.ex[c.nex++];
            memset(e, 0, sizeof *e);
            e->line = lineno;
            e->absent = kw[0] == 'n';
            char *t = next_tok(&p);
            snprintf(e->rule, sizeof e->rule, "%s", t ? t : "");
            for (; (t = next_tok(&p));) {
                if (!strncmp(t, "code=", 5))
                    snprintf(e->code, sizeof e->code, "%s", t + 5);
                else if (!strncmp(t, "suggest=", 8))
                    snprintf(e->suggest, sizeof e->suggest, "%s", unquote(&c.a, t + 8));
                else if (!strncmp(t, "message=", 8)) {
                    const char *m = unquote(&c.a, t + 8);
                    snprintf(e->message, sizeof e->message, "%s", m);
                } else
                    snprintf(e->sev, sizeof e->sev, "%s", t);
            }
        } else {
            fail_case(&c, lineno, "unknown keyword '%s'", kw);
        }
    }
    if (open_case) {
        run_case(&c);
        arena_free(&c.a);
    }
    fclose(f);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_case_files(void **state)
{
    (void)state;
    const char *top = getenv("top_srcdir");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/data/rules", top ? top : ".");
    DIR *d = opendir(dir);
    assert_non_null(d);
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256) {
        size_t l = strlen(e->d_name);
        if (l > 5 && !strcmp(e->d_name + l - 5, ".case"))
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_name);
    assert_true(n > 0);
    for (int i = 0; i < n; i++) {
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        run_file(path, names[i]);
        free(names[i]);
    }
    printf("rules cases: %d run, %d failed; %d suggestions re-judged\n", cases_run, failures,
           suggestions_checked);
    assert_int_equal(failures, 0);
}

/* A claim with no spine code is accepted untouched, whatever else it has. */
static void test_no_spine_codes_no_findings(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    claim_t *c = claim_new(&a, CLAIM_SRC_HL7V2);
    const char *codes[] = {"I10", "E1165", "R52", "M2578", "Z0000", "XYZ", ""};
    for (int i = 0; i < 7; i++) {
        claim_dx_t *d = claim_add_dx(c, &a);
        d->sequence = i + 1;
        snprintf(d->code, sizeof d->code, "%s", codes[i]);
        d->type = i ? DX_TYPE_SECONDARY : DX_TYPE_PRINCIPAL;
    }
    claim_line_t *l = claim_add_line(c, &a);
    l->code = "72148"; /* a spine MRI without any link: still not judged */
    l->system = PROCSYS_CPT;
    rule_verdict_t v;
    rule_evaluate(default_pack, c, &a, &v);
    assert_int_equal(v.kind, VERDICT_ACCEPT);
    assert_int_equal(v.nfindings, 0);
    /* an empty claim too */
    claim_t *e = claim_new(&a, CLAIM_SRC_HL7V2);
    rule_evaluate(default_pack, e, &a, &v);
    assert_int_equal(v.kind, VERDICT_ACCEPT);
    arena_free(&a);
}

/* Same claim, same pack: same findings (no hidden state, no clock). */
static void test_pure_and_repeatable(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    claim_t *c = claim_new(&a, CLAIM_SRC_FHIR_JSON);
    const char *codes[] = {"M4304", "M4314", "Q762", "M4300"};
    for (int i = 0; i < 4; i++) {
        claim_dx_t *d = claim_add_dx(c, &a);
        d->sequence = i + 1;
        snprintf(d->code, sizeof d->code, "%s", codes[i]);
        d->text = "T12-L1";
        d->location = arena_printf(&a, "Claim.diagnosis[%d]", i);
    }
    rule_verdict_t v1, v2;
    rule_evaluate(default_pack, c, &a, &v1);
    rule_evaluate(default_pack, c, &a, &v2);
    assert_int_equal(v1.nfindings, v2.nfindings);
    assert_true(v1.nfindings > 0);
    for (size_t i = 0; i < v1.nfindings; i++) {
        assert_string_equal(v1.findings[i].rule_id, v2.findings[i].rule_id);
        assert_string_equal(v1.findings[i].message, v2.findings[i].message);
        assert_string_equal(v1.findings[i].location, v2.findings[i].location);
    }
    arena_free(&a);
}

/* Many diagnoses: bounded findings, no blow-up. Defects and slips at the
 * same ten regions, each sent many times. */
static void test_many_diagnoses_bounded(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    claim_t *c = claim_new(&a, CLAIM_SRC_HL7V2);
    for (int i = 0; i < 600; i++) {
        claim_dx_t *d = claim_add_dx(c, &a);
        d->sequence = i + 1;
        snprintf(d->code, sizeof d->code, "%s", i % 2 ? "M4314" : "M4304");
        d->code[4] = (char)('0' + (i / 2) % 10);
    }
    rule_verdict_t v;
    rule_evaluate(default_pack, c, &a, &v);
    assert_true(v.nfindings > 0 && v.nfindings <= 256);
    assert_int_equal(v.kind, VERDICT_REJECT);
    arena_free(&a);
}

/* Identical codes take part in pairs once: one finding per distinct pair. */
static void test_duplicates_pair_once(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    claim_t *c = claim_new(&a, CLAIM_SRC_HL7V2);
    const char *codes[] = {"M4306", "M4316", "M4306", "M4316", "M4306"};
    for (int i = 0; i < 5; i++) {
        claim_dx_t *d = claim_add_dx(c, &a);
        d->sequence = i + 1;
        snprintf(d->code, sizeof d->code, "%s", codes[i]);
    }
    rule_verdict_t v;
    rule_evaluate(default_pack, c, &a, &v);
    int n = 0;
    for (size_t i = 0; i < v.nfindings; i++)
        if (!strcmp(v.findings[i].rule_id, "excludes1-pair")) {
            n++;
            assert_int_equal(v.findings[i].dx_index, 0);
            assert_string_equal(v.findings[i].codes[1], "M43.16");
        }
    assert_int_equal(n, 1);
    arena_free(&a);
}

/* The Excludes1 verdict for M43.04 on a line dated d1 and M43.14 on a line
 * dated d2 (outpatient): a date without a day covers its whole month. */
static const char *pair_on_days(claim_date_t d1, claim_date_t d2)
{
    arena_t a;
    arena_init(&a, 0);
    claim_t *c = claim_new(&a, CLAIM_SRC_HL7V2);
    c->setting = CLAIM_SETTING_OUTPATIENT;
    c->service_from = d1;
    const char *codes[] = {"M4304", "M4314"};
    claim_date_t days[] = {d1, d2};
    for (int i = 0; i < 2; i++) {
        claim_dx_t *d = claim_add_dx(c, &a);
        d->sequence = i + 1;
        snprintf(d->code, sizeof d->code, "%s", codes[i]);
        claim_line_t *l = claim_add_line(c, &a);
        l->sequence = i + 1;
        l->code = "72070";
        l->system = PROCSYS_CPT;
        l->date_from = days[i];
        l->dx_pointers[l->ndx_pointers++] = i + 1;
    }
    rule_verdict_t v;
    rule_evaluate(default_pack, c, &a, &v);
    const char *got = "none";
    for (size_t i = 0; i < v.nfindings; i++)
        if (!strcmp(v.findings[i].rule_id, "excludes1-pair"))
            got = v.findings[i].severity == RULE_SEV_REJECT ? "reject" : "warn";
    arena_free(&a);
    return got;
}

static void test_pair_days_month_precision(void **state)
{
    (void)state;
    claim_date_t jan = {2026, 1, 0}, jan20 = {2026, 1, 20}, feb10 = {2026, 2, 10};
    claim_date_t y2026 = {2026, 0, 0}, jan31 = {2026, 1, 31}, feb1 = {2026, 2, 1};
    assert_string_equal(pair_on_days(jan20, feb10), "warn");
    assert_string_equal(pair_on_days(jan20, jan20), "reject");
    assert_string_equal(pair_on_days(jan, jan20), "reject"); /* January may be the 20th */
    assert_string_equal(pair_on_days(jan, jan31), "reject");
    assert_string_equal(pair_on_days(jan, feb1), "warn");
    assert_string_equal(pair_on_days(y2026, feb10), "reject");
}

/* The work of the pairs search, counted in diagnoses looked at (a clock
 * would make the test fail on a loaded machine): comparing every pair of
 * these 20,000 diagnoses, as the old loop did, would look at ~4e8; through
 * the index each note looks only at the codes it names (0 and 16 here). */
#define PARTNERS_LIMIT 20000UL

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Pairs are found through an index, not by comparing every pair: 20,000
 * diagnoses, most of them distinct codes in categories that Excludes1
 * notes name, are judged well under a second (the O(n^2) loop took
 * minutes). */
static void test_twenty_thousand_diagnoses(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 0);
    claim_t *c = claim_new(&a, CLAIM_SRC_HL7V2);
    static const char *const cats[] = {"M80", "M84", "Q05", "M99", "M96", "M07", "S39"};
    for (int i = 0; i < 20000; i++) {
        claim_dx_t *d = claim_add_dx(c, &a);
        d->sequence = i + 1;
        if (i < 40)
            /* spine owners whose notes name the categories below */
            snprintf(d->code, sizeof d->code, "%s",
                     (const char *[]){"M4300", "M4316", "M4824", "M4806", "M5416", "M4319", "M4302",
                                      "M5126"}[i % 8]);
        else
            /* distinct codes outside the tables: judged, never invalid */
            snprintf(d->code, sizeof d->code, "%s%04d", cats[i % 7], i);
    }
    rule_verdict_t v;
    double t0 = now_s();
    rule__partners_visited = 0;
    rule_evaluate(default_pack, c, &a, &v);
    double dt = now_s() - t0;
    printf("20000 diagnoses (findings cap reached) judged in %.3f s, %zu findings, %lu partners "
           "visited\n",
           dt, v.nfindings, rule__partners_visited);
    assert_true(v.nfindings > 0 && v.nfindings <= 256);
    assert_true(rule__partners_visited < PARTNERS_LIMIT);

    /* No finding at all, so nothing stops the search early: every kyphosis
     * code of M40 looks into M96, which holds 19,960 distinct codes that
     * its row does not name (only M96.2-M96.4 are). */
    claim_t *q = claim_new(&a, CLAIM_SRC_HL7V2);
    int owners = 0;
    for (int i = 0; i < 20000; i++) {
        claim_dx_t *d = claim_add_dx(q, &a);
        d->sequence = i + 1;
        if (i < 40) {
            static const char *const m40[] = {"M4000", "M4003", "M4004", "M4005", "M4010",
                                              "M4012", "M4013", "M4014", "M4015", "M4030",
                                              "M4035", "M4036", "M4037", "M4040", "M4045",
                                              "M4046", "M4047", "M4050", "M4055", "M4056"};
            snprintf(d->code, sizeof d->code, "%s", m40[i % 20]);
            owners++;
        } else {
            snprintf(d->code, sizeof d->code, "M960%04d", i);
        }
    }
    t0 = now_s();
    rule__partners_visited = 0;
    rule_evaluate(default_pack, q, &a, &v);
    dt = now_s() - t0;
    printf("20000 diagnoses (no pair) judged in %.3f s, %zu findings, %lu partners visited\n", dt,
           v.nfindings, rule__partners_visited);
    for (size_t i = 0; i < v.nfindings; i++)
        assert_string_not_equal(v.findings[i].rule_id, "excludes1-pair");
    assert_true(owners == 40);
    assert_true(rule__partners_visited < PARTNERS_LIMIT);
    arena_free(&a);
}

static int setup(void **state)
{
    (void)state;
    err_detail_t d;
    err_t rc = rule_pack_load(NULL, NULL, NULL, &default_pack, &d);
    if (rc != ERR_OK)
        fprintf(stderr, "embedded pack: %s (%s)\n", d.msg, d.where);
    return rc == ERR_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    rule_pack_free(default_pack);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_case_files),
        cmocka_unit_test(test_no_spine_codes_no_findings),
        cmocka_unit_test(test_pure_and_repeatable),
        cmocka_unit_test(test_many_diagnoses_bounded),
        cmocka_unit_test(test_duplicates_pair_once),
        cmocka_unit_test(test_pair_days_month_precision),
        cmocka_unit_test(test_twenty_thousand_diagnoses),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
