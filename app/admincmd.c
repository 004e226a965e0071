/* admincmd.c - spinegate-admin's worklist commands (see admincmd.h): parsed
 * in the program, run there or in the daemon, printing to the FILEs given.
 * What they print holds patient data (messages, lookup references): it goes
 * to the coder, never to a log.
 */
#include "admincmd.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "gate.h"
#include "report.h"
#include "wlview.h"
#include "xmalloc.h"

static const char *const op_names[ADMIN__COUNT] = {
    [ADMIN_LIST] = "list",       [ADMIN_SHOW] = "show",     [ADMIN_RESOLVE] = "resolve",
    [ADMIN_REQUEUE] = "requeue", [ADMIN_RESEND] = "resend", [ADMIN_STATS] = "stats",
    [ADMIN_PRUNE] = "prune",     [ADMIN_UNLOCK] = "unlock",
};

const char *admin_op_name(admin_op_t op)
{
    return op < ADMIN__COUNT ? op_names[op] : "?";
}

/* ---------------------------------------------------------------- parsing */

static bool parse_id(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v <= 0)
        return false;
    *out = v;
    return true;
}

static void add_id(admin_req_t *r, int64_t id)
{
    r->ids = xrealloc(r->ids, (r->nids + 1) * sizeof *r->ids);
    r->ids[r->nids++] = id;
}

static void set_str(char **dst, const char *s)
{
    xfree(*dst);
    *dst = s ? xstrdup(s) : NULL;
}

static bool filtered(const admin_req_t *r)
{
    return r->rule || r->source || r->since_ms || r->until_ms || r->ref;
}

/* The options of the command in argv (from optind on); what each command
 * takes is checked by the caller through allowed (a getopt letter string). */
static int options(int argc, char **argv, admin_req_t *r, const char *allowed, FILE *err)
{
    static const struct option opts[] = {
        {"state", required_argument, NULL, 's'},
        {"kind", required_argument, NULL, 'k'},
        {"rule", required_argument, NULL, 'r'},
        {"source", required_argument, NULL, 'S'},
        {"since", required_argument, NULL, 'a'},
        {"until", required_argument, NULL, 'u'},
        {"json", no_argument, NULL, 'j'},
        {"all", no_argument, NULL, 'A'},
        {"ref", required_argument, NULL, 'R'},
        {"note", required_argument, NULL, 'n'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == '?' || !strchr(allowed, opt)) {
            if (opt != '?')
                fprintf(err, "spinegate-admin: %s: option %s not taken\n", argv[0],
                        argv[optind - 1]);
            return 2;
        }
        switch (opt) {
        case 's': set_str(&r->state, optarg); break;
        case 'k': set_str(&r->kind, optarg); break;
        case 'r': set_str(&r->rule, optarg); break;
        case 'R': set_str(&r->ref, optarg); break;
        case 'n': set_str(&r->note, optarg); break;
        case 'S':
            if (strcmp(optarg, "mllp") != 0 && strcmp(optarg, "http") != 0) {
                fprintf(err, "spinegate-admin: --source: mllp or http\n");
                return 2;
            }
            set_str(&r->source, optarg);
            break;
        case 'a':
        case 'u':
            if (!wlview_parse_time(optarg, opt == 'a' ? &r->since_ms : &r->until_ms)) {
                fprintf(err, "spinegate-admin: --%s: not an RFC 3339 time or a date: %s\n",
                        opt == 'a' ? "since" : "until", optarg);
                return 2;
            }
            break;
        case 'j': r->json = true; break;
        case 'A': r->all = true; break;
        default: return 2;
        }
    }
    return 0;
}

#define FILTER_OPTS "skrSauR"

int admin_req_parse(int argc, char **argv, admin_req_t *r, FILE *err)
{
    const char *cmd = argv[0];
    admin_op_t op = ADMIN__COUNT;
    for (int i = 0; i < ADMIN_UNLOCK; i++)
        if (strcmp(cmd, op_names[i]) == 0)
            op = (admin_op_t)i;
    if (op == ADMIN__COUNT) {
        fprintf(err, "spinegate-admin: unknown command %s\n", cmd);
        return 2;
    }
    r->op = op;
    optind = 0; /* glibc's getopt starts afresh */
    static const char *const allowed[ADMIN__COUNT] = {
        [ADMIN_LIST] = FILTER_OPTS "j",
        [ADMIN_SHOW] = "j",
        [ADMIN_RESOLVE] = "n",
        [ADMIN_REQUEUE] = FILTER_OPTS "A",
        [ADMIN_RESEND] = "n",
        [ADMIN_STATS] = "j",
        [ADMIN_PRUNE] = "",
    };
    if (options(argc, argv, r, allowed[op], err))
        return 2;
    int rest = argc - optind;
    char **args = argv + optind;
    switch (op) {
    case ADMIN_LIST:
    case ADMIN_STATS:
    case ADMIN_PRUNE:
        if (rest) {
            fprintf(err, "spinegate-admin: %s takes no arguments\n", cmd);
            return 2;
        }
        return 0;
    case ADMIN_SHOW:
    case ADMIN_RESOLVE: {
        int64_t id;
        if (rest != 1 || !parse_id(args[0], &id) ||
            (op == ADMIN_RESOLVE && (!r->note || !*r->note))) {
            fprintf(err, "spinegate-admin: usage: %s\n",
                    op == ADMIN_SHOW ? "show ID [--json]" : "resolve ID --note TEXT");
            return 2;
        }
        add_id(r, id);
        return 0;
    }
    case ADMIN_RESEND: {
        int64_t id;
        if (rest < 1 || rest > 2 || !parse_id(args[0], &id)) {
            fprintf(err, "spinegate-admin: usage: resend ID [FILE|-] [--note TEXT]\n");
            return 2;
        }
        add_id(r, id);
        if (rest == 2)
            set_str(&r->input_path, args[1]);
        return 0;
    }
    case ADMIN_REQUEUE:
        if (rest) {
            if (r->all || filtered(r)) {
                fprintf(err, "spinegate-admin: requeue: ids, or --all, or filters\n");
                return 2;
            }
            for (int i = 0; i < rest; i++) {
                int64_t id;
                if (!parse_id(args[i], &id)) {
                    fprintf(err, "spinegate-admin: requeue: not an item id: %s\n", args[i]);
                    return 2;
                }
                add_id(r, id);
            }
        } else if (!r->all && !filtered(r)) {
            fprintf(err, "spinegate-admin: requeue: give ids, filters or --all\n");
            return 2;
        }
        return 0;
    case ADMIN_UNLOCK:
    case ADMIN__COUNT: break;
    }
    return 2;
}

/* ---------------------------------------------------------------- the wire */

static void add_str(cJSON *o, const char *k, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, k, v);
}

cJSON *admin_req_json(const admin_req_t *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "op", admin_op_name(r->op));
    cJSON_AddBoolToObject(o, "json", r->json);
    cJSON_AddBoolToObject(o, "all", r->all);
    add_str(o, "state", r->state);
    add_str(o, "kind", r->kind);
    add_str(o, "rule", r->rule);
    add_str(o, "source", r->source);
    add_str(o, "ref", r->ref);
    add_str(o, "note", r->note);
    add_str(o, "who", r->who);
    add_str(o, "name", r->name);
    if (r->since_ms)
        cJSON_AddNumberToObject(o, "since_ms", (double)r->since_ms);
    if (r->until_ms)
        cJSON_AddNumberToObject(o, "until_ms", (double)r->until_ms);
    cJSON *ids = cJSON_AddArrayToObject(o, "ids");
    for (size_t i = 0; i < r->nids; i++)
        cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)r->ids[i]));
    cJSON_AddBoolToObject(o, "has_input", r->has_input);
    return o;
}

/* A string member no longer than max (NUL-free by cJSON's making); absent
 * is fine, another type is not. */
static bool get_str(const cJSON *o, const char *k, size_t max, char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v)
        return true;
    if (!cJSON_IsString(v) || strlen(v->valuestring) > max)
        return false;
    *out = xstrdup(v->valuestring);
    return true;
}

static bool get_bool(const cJSON *o, const char *k, bool *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v)
        return true;
    if (!cJSON_IsBool(v))
        return false;
    *out = cJSON_IsTrue(v);
    return true;
}

/* A whole number in [lo, 2^53]: what a double carries exactly. */
static bool get_int(const cJSON *v, int64_t lo, int64_t *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < (double)lo || v->valuedouble > 9007199254740992.0 ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return false;
    *out = (int64_t)v->valuedouble;
    return true;
}

#define BAD(...) (snprintf(why, cap, __VA_ARGS__), admin_req_free(r), false)

bool admin_req_from_json(const cJSON *o, admin_req_t *r, char *why, size_t cap)
{
    memset(r, 0, sizeof *r);
    if (!cJSON_IsObject(o))
        return BAD("not a JSON object");
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(o, "op");
    r->op = ADMIN__COUNT;
    for (int i = 0; i < ADMIN__COUNT && cJSON_IsString(op); i++)
        if (strcmp(op->valuestring, op_names[i]) == 0)
            r->op = (admin_op_t)i;
    if (r->op == ADMIN__COUNT)
        return BAD("no such command");
    if (!get_bool(o, "json", &r->json) || !get_bool(o, "all", &r->all) ||
        !get_bool(o, "has_input", &r->has_input) || !get_str(o, "state", 32, &r->state) ||
        !get_str(o, "kind", 32, &r->kind) || !get_str(o, "rule", 256, &r->rule) ||
        !get_str(o, "source", 8, &r->source) || !get_str(o, "ref", 256, &r->ref) ||
        !get_str(o, "note", 4096, &r->note) || !get_str(o, "who", 64, &r->who) ||
        !get_str(o, "name", 256, &r->name))
        return BAD("a member has the wrong type or is too long");
    if (r->source && strcmp(r->source, "mllp") && strcmp(r->source, "http"))
        return BAD("source: mllp or http");
    const cJSON *t;
    if (((t = cJSON_GetObjectItemCaseSensitive(o, "since_ms")) && !get_int(t, 0, &r->since_ms)) ||
        ((t = cJSON_GetObjectItemCaseSensitive(o, "until_ms")) && !get_int(t, 0, &r->until_ms)))
        return BAD("since_ms/until_ms: a time in ms");
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(o, "ids"), *v;
    if (ids && !cJSON_IsArray(ids))
        return BAD("ids: an array");
    if (cJSON_GetArraySize(ids) > 1000000)
        return BAD("ids: too many");
    cJSON_ArrayForEach(v, ids)
    {
        int64_t id;
        if (!get_int(v, 1, &id))
            return BAD("ids: positive whole numbers");
        add_id(r, id);
    }
    bool one = r->op == ADMIN_SHOW || r->op == ADMIN_RESOLVE || r->op == ADMIN_RESEND;
    if (one && r->nids != 1)
        return BAD("%s: one item id", op_names[r->op]);
    if (r->op == ADMIN_RESOLVE && (!r->note || !r->note[0]))
        return BAD("resolve: a note");
    if (r->op == ADMIN_REQUEUE && !r->nids && !r->all && !filtered(r))
        return BAD("requeue: ids, filters or all");
    if (r->op == ADMIN_UNLOCK && (!r->name || !r->name[0]))
        return BAD("unlock: a name");
    if (r->has_input && r->op != ADMIN_RESEND)
        return BAD("a message only goes with resend");
    return true;
}

void admin_req_free(admin_req_t *r)
{
    char **strs[] = {&r->state, &r->kind, &r->rule, &r->source, &r->ref,
                     &r->note,  &r->who,  &r->name, &r->input,  &r->input_path};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        xfree(*strs[i]);
        *strs[i] = NULL;
    }
    xfree(r->ids);
    r->ids = NULL;
    r->nids = 0;
}

/* ---------------------------------------------------------------- running */

typedef struct {
    const admin_env_t *env;
    const admin_req_t *r;
} run_t;

static int fail(const admin_env_t *env, const err_detail_t *d)
{
    fprintf(env->err, "spinegate-admin: %s\n", d->msg);
    return d->code == ERR_BAD_VALUE ? 1 : 2;
}

static void print_json(FILE *out, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    fputs(s, out);
    fputc('\n', out);
    cJSON_free(s);
    cJSON_Delete(o);
}

static void req_filter(const admin_req_t *r, worklist_filter_t *f)
{
    memset(f, 0, sizeof *f);
    f->state = r->state;
    f->kind = r->kind;
    f->rule = r->rule;
    f->source = r->source;
    f->since_ms = r->since_ms;
    f->until_ms = r->until_ms;
}

/* ---------------------------------------------------------------- list */

static int list_cb(const worklist_item_t *it, void *user)
{
    run_t *ru = user;
    FILE *out = ru->env->out;
    cJSON *o = wlview_item_json(it);
    if (ru->r->json) {
        print_json(out, o);
        return 0;
    }
    char *rules = cJSON_PrintUnformatted(cJSON_GetObjectItem(o, "rules"));
    fprintf(out, "%-6" PRId64 " %-9s %-8s %-9s %-4s %s  %-20s %s\n", it->id, it->state, it->kind,
            wlview_jstr(o, "verdict"), wlview_jstr(o, "source"), wlview_jstr(o, "received"),
            it->control_id, rules);
    cJSON_free(rules);
    cJSON_Delete(o);
    return 0;
}

typedef struct {
    const char *ref;
    worklist_item_fn next;
    void *next_user;
} ref_filter_t;

/* --ref: an item whose MRN, account or visit reference is ref. */
static int ref_cb(const worklist_item_t *it, void *user)
{
    ref_filter_t *rf = user;
    cJSON *m = wlview_meta(it);
    const cJSON *refs = cJSON_GetObjectItemCaseSensitive(m, "refs");
    bool hit = false;
    const char *keys[] = {"mrn", "account", "visit"};
    for (int i = 0; i < 3 && !hit; i++) {
        const char *v = wlview_jstr(refs, keys[i]);
        hit = v && strcmp(v, rf->ref) == 0;
    }
    cJSON_Delete(m);
    return hit ? rf->next(it, rf->next_user) : 0;
}

static err_t walk(const admin_env_t *env, const worklist_filter_t *f, const char *ref,
                  worklist_item_fn fn, void *user, err_detail_t *d)
{
    if (!ref)
        return worklist_list(env->wl, f, fn, user, d);
    ref_filter_t rf = {ref, fn, user};
    return worklist_list(env->wl, f, ref_cb, &rf, d);
}

static int run_list(const admin_env_t *env, const admin_req_t *r)
{
    worklist_filter_t f;
    req_filter(r, &f);
    run_t ru = {env, r};
    err_detail_t d;
    err_clear(&d);
    if (walk(env, &f, r->ref, list_cb, &ru, &d) != ERR_OK)
        return fail(env, &d);
    return 0;
}

/* ---------------------------------------------------------------- show */

/* "DG1(2)-3" -> "DG1", 2; "PID-8" -> "PID", 1. False when not an HL7 place. */
static bool hl7_place(const char *loc, char seg[4], int *occ)
{
    if (!loc || strlen(loc) < 3)
        return false;
    for (int i = 0; i < 3; i++) {
        char c = loc[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return false;
        seg[i] = c;
    }
    seg[3] = 0;
    *occ = 1;
    if (loc[3] == '(')
        *occ = atoi(loc + 4);
    else if (loc[3] && loc[3] != '-')
        return false;
    return *occ >= 1;
}

static void print_finding(FILE *out, const cJSON *f, const char *indent)
{
    fprintf(out, "%s^ %s %s %s", indent,
            wlview_jstr(f, "location") ? wlview_jstr(f, "location") : "(message)",
            wlview_jstr(f, "rule") ? wlview_jstr(f, "rule") : "?",
            wlview_jstr(f, "severity") ? wlview_jstr(f, "severity") : "");
    const cJSON *codes = cJSON_GetObjectItemCaseSensitive(f, "codes"), *c;
    cJSON_ArrayForEach(c, codes) if (cJSON_IsString(c)) fprintf(out, " %s", c->valuestring);
    if (wlview_jstr(f, "message"))
        fprintf(out, ": %s", wlview_jstr(f, "message"));
    if (wlview_jstr(f, "suggestion"))
        fprintf(out, " (consider %s)", wlview_jstr(f, "suggestion"));
    fputc('\n', out);
}

/* The HL7 message a segment a line, each finding marked under the segment
 * its location names; findings that name no segment come first. */
static void show_hl7(FILE *out, const worklist_item_t *it, const cJSON *findings)
{
    const cJSON *f;
    cJSON_ArrayForEach(f, findings)
    {
        char seg[4];
        int occ;
        if (!hl7_place(wlview_jstr(f, "location"), seg, &occ))
            print_finding(out, f, "  ");
    }
    const char *p = (const char *)it->payload, *end = p + it->payload_len;
    typedef struct {
        char name[4];
        int n;
    } count_t;
    count_t counts[64];
    size_t ncounts = 0;
    while (p < end) {
        const char *e = p;
        while (e < end && *e != '\r' && *e != '\n')
            e++;
        if (e > p) {
            char name[4] = {0};
            memcpy(name, p, e - p >= 3 ? 3 : (size_t)(e - p));
            int occ = 0;
            for (size_t i = 0; i < ncounts && !occ; i++)
                if (strcmp(counts[i].name, name) == 0)
                    occ = ++counts[i].n;
            if (!occ && ncounts < sizeof counts / sizeof counts[0]) {
                memcpy(counts[ncounts].name, name, 4);
                counts[ncounts++].n = occ = 1;
            }
            fprintf(out, "%s(%d)\t%.*s\n", name, occ, (int)(e - p), p);
            cJSON_ArrayForEach(f, findings)
            {
                char seg[4];
                int o;
                if (hl7_place(wlview_jstr(f, "location"), seg, &o) && strcmp(seg, name) == 0 &&
                    o == occ)
                    print_finding(out, f, "      \t");
            }
        }
        p = e + 1;
    }
}

static int show_cb(const worklist_item_t *it, void *user)
{
    run_t *ru = user;
    FILE *out = ru->env->out;
    cJSON *o = wlview_item_json(it);
    cJSON *m = wlview_meta(it);
    if (ru->r->json) {
        const cJSON *fs = cJSON_GetObjectItemCaseSensitive(m, "findings");
        cJSON_AddItemToObject(o, "findings", fs ? cJSON_Duplicate(fs, 1) : cJSON_CreateArray());
        cJSON_AddStringToObject(o, "content_type", it->content_type);
        char *msg = xmalloc(it->payload_len + 1);
        memcpy(msg, it->payload, it->payload_len);
        msg[it->payload_len] = 0;
        cJSON_AddStringToObject(o, "message", msg);
        xfree(msg);
        print_json(out, o);
        cJSON_Delete(m);
        return 0;
    }
    fprintf(out, "item %" PRId64 ": %s, %s (%s)\n", it->id, it->kind, it->state,
            wlview_jstr(o, "verdict"));
    fprintf(out, "received %s from %s%s%s, control id %s%s%s\n", wlview_jstr(o, "received"),
            wlview_jstr(o, "source"), wlview_jstr(o, "peer") ? " " : "",
            wlview_jstr(o, "peer") ? wlview_jstr(o, "peer") : "", it->control_id,
            wlview_jstr(o, "type") ? ", " : "",
            wlview_jstr(o, "type") ? wlview_jstr(o, "type") : "");
    const cJSON *refs = cJSON_GetObjectItemCaseSensitive(m, "refs");
    if (wlview_jstr(refs, "mrn") || wlview_jstr(refs, "account") || wlview_jstr(refs, "visit"))
        fprintf(out, "patient %s, account %s, visit %s\n",
                wlview_jstr(refs, "mrn") ? wlview_jstr(refs, "mrn") : "-",
                wlview_jstr(refs, "account") ? wlview_jstr(refs, "account") : "-",
                wlview_jstr(refs, "visit") ? wlview_jstr(refs, "visit") : "-");
    if (it->reason)
        fprintf(out, "dead-lettered: %s\n", it->reason);
    if (it->changed_ms)
        fprintf(out, "%s by %s at %s%s%s%s%s\n", it->state, it->changed_by ? it->changed_by : "?",
                wlview_jstr(o, "changed"), it->note ? ": " : "", it->note ? it->note : "",
                it->link ? " -> " : "", it->link ? it->link : "");
    fputc('\n', out);
    const cJSON *findings = cJSON_GetObjectItemCaseSensitive(m, "findings");
    if (strstr(it->content_type, "hl7")) {
        show_hl7(out, it, findings);
    } else {
        const cJSON *f;
        cJSON_ArrayForEach(f, findings) print_finding(out, f, "  ");
        fprintf(out, "%.*s\n", (int)it->payload_len, (const char *)it->payload);
    }
    cJSON_Delete(o);
    cJSON_Delete(m);
    return 0;
}

static int run_show(const admin_env_t *env, const admin_req_t *r)
{
    run_t ru = {env, r};
    err_detail_t d;
    err_clear(&d);
    if (worklist_get(env->wl, r->ids[0], show_cb, &ru, &d) != ERR_OK)
        return fail(env, &d);
    return 0;
}

/* ---------------------------------------------------------------- resolve */

static int run_resolve(const admin_env_t *env, const admin_req_t *r)
{
    err_detail_t d;
    err_clear(&d);
    if (worklist_resolve(env->wl, r->ids[0], r->who, r->note, &d) != ERR_OK)
        return fail(env, &d);
    fprintf(env->out, "item %" PRId64 " resolved\n", r->ids[0]);
    return 0;
}

/* ---------------------------------------------------------------- requeue */

typedef struct {
    int64_t *ids;
    size_t n, cap;
} id_list_t;

static int collect_cb(const worklist_item_t *it, void *user)
{
    id_list_t *l = user;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->ids = xrealloc(l->ids, l->cap * sizeof *l->ids);
    }
    l->ids[l->n++] = it->id;
    return 0;
}

static int run_requeue(const admin_env_t *env, const admin_req_t *r)
{
    id_list_t l = {NULL, 0, 0};
    err_detail_t d;
    err_clear(&d);
    if (r->nids) {
        for (size_t i = 0; i < r->nids; i++)
            collect_cb(&(worklist_item_t){.id = r->ids[i]}, &l);
    } else {
        worklist_filter_t f;
        req_filter(r, &f);
        f.kind = "dead";
        f.state = "open";
        if (walk(env, &f, r->ref, collect_cb, &l, &d) != ERR_OK) {
            xfree(l.ids);
            return fail(env, &d);
        }
    }
    int status = 0;
    for (size_t i = 0; i < l.n; i++) {
        /* In id order, one transaction each: what was requeued stays so if
         * a later one is refused. */
        err_clear(&d);
        if (worklist_requeue(env->wl, l.ids[i], r->who, &d) != ERR_OK) {
            int rc = fail(env, &d);
            status = rc > status ? rc : status;
            continue;
        }
        fprintf(env->out, "item %" PRId64 " requeued\n", l.ids[i]);
    }
    if (!l.n)
        fprintf(env->out, "no open dead letters matched\n");
    xfree(l.ids);
    return status;
}

/* ---------------------------------------------------------------- resend */

typedef struct {
    char *payload;
    size_t payload_len;
} stored_t;

static int stored_cb(const worklist_item_t *it, void *user)
{
    stored_t *s = user;
    s->payload = xmalloc(it->payload_len + 1);
    memcpy(s->payload, it->payload, it->payload_len);
    s->payload[it->payload_len] = 0;
    s->payload_len = it->payload_len;
    return 0;
}

static void print_verdict(const gate_result_t *res, void *user)
{
    FILE *out = user;
    if (res->status != GATE_JUDGED)
        report_error_text(out, "resend", 1, &res->detail);
    else
        report_verdict_text(out, "resend", 1, res->control_id, &res->verdict);
}

static int run_resend(const admin_env_t *env, const admin_req_t *r)
{
    int64_t id = r->ids[0];
    err_detail_t d;
    err_clear(&d);
    stored_t s = {0};
    if (worklist_get(env->wl, id, stored_cb, &s, &d) != ERR_OK)
        return fail(env, &d);
    const char *buf = r->has_input ? r->input : s.payload;
    size_t len = r->has_input ? r->input_len : s.payload_len;
    rule_pack_t *loaded = NULL;
    const rule_pack_t *pack = env->pack;
    int status = 0;
    if (!pack) {
        rule_policy_t policy;
        config_rule_policy(env->cfg, &policy);
        if (rule_pack_load(env->cfg->rules_path, env->cfg->tables_path, &policy, &loaded, &d) !=
            ERR_OK) {
            fprintf(env->err, "spinegate-admin: rule pack: %s%s%s\n", d.where,
                    d.where[0] ? ": " : "", d.msg);
            status = 2;
        }
        pack = loaded;
    }
    arena_t ar;
    arena_init(&ar, 16384);
    worklist_msg_t m = {0};
    if (!status)
        status =
            wlview_judge(env->cfg, pack, buf ? buf : "", len, &ar, &m, print_verdict, env->out);
    if (!status) {
        if (worklist_resend(env->wl, id, &m, r->who, r->note, &d) != ERR_OK)
            status = fail(env, &d);
        else
            fprintf(env->out, "item %" PRId64 " resent: queued for %s\n", id, m.dest);
    } else if (status == 1) {
        fprintf(env->out, "item %" PRId64 " stays open: the message was not queued\n", id);
    }
    arena_free(&ar);
    rule_pack_free(loaded);
    xfree(s.payload);
    return status;
}

/* ---------------------------------------------------------------- stats */

typedef struct {
    cJSON *states, *kinds, *rules;
} stats_t;

static void bump(cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (v)
        cJSON_SetNumberValue(v, v->valuedouble + 1);
    else
        cJSON_AddNumberToObject(o, k, 1);
}

static int stats_cb(const worklist_item_t *it, void *user)
{
    stats_t *s = user;
    bump(s->states, it->state);
    bump(s->kinds, it->kind);
    if (strcmp(it->state, "open") == 0) {
        cJSON *m = wlview_meta(it), *rules = wlview_rules(it, m), *r;
        cJSON_ArrayForEach(r, rules) bump(s->rules, r->valuestring);
        cJSON_Delete(rules);
        cJSON_Delete(m);
    }
    return 0;
}

static void dest_cb(const char *dest, int64_t pending, int64_t dead, void *user)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "pending", (double)pending);
    cJSON_AddNumberToObject(o, "dead", (double)dead);
    cJSON_AddItemToObject(user, dest, o);
}

static void print_counts(FILE *out, const char *title, const cJSON *o)
{
    fprintf(out, "%s:", title);
    const cJSON *v;
    if (!o->child)
        fprintf(out, " none");
    cJSON_ArrayForEach(v, o) fprintf(out, " %s=%.0f", v->string, v->valuedouble);
    fputc('\n', out);
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static int run_stats(const admin_env_t *env, const admin_req_t *r)
{
    FILE *out = env->out;
    cJSON *o = cJSON_CreateObject();
    stats_t s = {cJSON_AddObjectToObject(o, "states"), cJSON_AddObjectToObject(o, "kinds"),
                 cJSON_AddObjectToObject(o, "open_by_rule")};
    cJSON *queue = cJSON_AddObjectToObject(o, "queue");
    int64_t inbox = 0;
    err_detail_t d;
    err_clear(&d);
    if (worklist_list(env->wl, NULL, stats_cb, &s, &d) != ERR_OK ||
        worklist_queue_figures(env->wl, dest_cb, queue, &inbox, &d) != ERR_OK) {
        cJSON_Delete(o);
        return fail(env, &d);
    }
    cJSON_AddNumberToObject(o, "inbox", (double)inbox);
    /* What only the running daemon knows: each destination's state. */
    if (env->live)
        cJSON_AddItemToObject(o, "destinations", cJSON_Duplicate(env->live, 1));
    if (r->json) {
        print_json(out, o);
        return 0;
    }
    print_counts(out, "items by state", s.states);
    print_counts(out, "items by kind", s.kinds);
    print_counts(out, "open items by rule", s.rules);
    const cJSON *q;
    cJSON_ArrayForEach(q, queue)
    {
        fprintf(out, "queue %s: %.0f pending, %.0f dead\n", q->string, num(q, "pending"),
                num(q, "dead"));
    }
    fprintf(out, "inbox: %" PRId64 " handed back, not yet taken by the daemon\n", inbox);
    cJSON_ArrayForEach(q, env->live)
    {
        const char *err = wlview_jstr(q, "last_error");
        fprintf(out, "destination %s: %s, %.0f queued, oldest %.0fs%s%s\n", q->string,
                wlview_jstr(q, "state") ? wlview_jstr(q, "state") : "?", num(q, "depth"),
                num(q, "oldest_age_s"), err && *err ? ", last error: " : "",
                err && *err ? err : "");
    }
    cJSON_Delete(o);
    return 0;
}

static int run_prune(const admin_env_t *env)
{
    size_t n = 0;
    err_detail_t d;
    err_clear(&d);
    if (worklist_prune(env->wl, (unsigned)env->cfg->worklist_retention, &n, &d) != ERR_OK)
        return fail(env, &d);
    fprintf(env->out, "%zu items pruned\n", n);
    return 0;
}

int admin_run(const admin_env_t *env, const admin_req_t *r)
{
    switch (r->op) {
    case ADMIN_LIST: return run_list(env, r);
    case ADMIN_SHOW: return run_show(env, r);
    case ADMIN_RESOLVE: return run_resolve(env, r);
    case ADMIN_REQUEUE: return run_requeue(env, r);
    case ADMIN_RESEND: return run_resend(env, r);
    case ADMIN_STATS: return run_stats(env, r);
    case ADMIN_PRUNE: return run_prune(env);
    case ADMIN_UNLOCK:
    case ADMIN__COUNT: break;
    }
    fprintf(env->err, "spinegate-admin: %s needs the running daemon\n", admin_op_name(r->op));
    return 2;
}
