/* admin.c - spinegate-admin: the coders' worklist from the shell. It opens
 * the queue database of a data folder on a connection of its own (SQLite
 * WAL lets it in beside a running daemon) and lists, shows, resolves,
 * requeues and resends worklist items (outbound/worklist.h). Messages it
 * hands back for delivery go into the inbox, which the daemon takes into its
 * queue within a second, or at its next start.
 *
 * What it prints is for the coder at the terminal and holds patient data
 * (the message, its lookup references); it never writes to the daemon's
 * log. Exit status as spinegate-check: 0 done, 1 refused (the rules
 * rejected a resent message, or an item is not in a state that allows the
 * action), 2 usage error, unknown item, or a data folder that cannot be read.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <termios.h>
#include <unistd.h>

#include "config.h"

#include "gate.h"
#include "hl7_ack.h"
#include "fhir_out.h"
#include "report.h"
#include "webauth.h"
#include "wlview.h"
#include "worklist.h"
#include "xmalloc.h"

typedef struct {
    config_t cfg;
    worklist_t *wl;
    bool json;
    const char *who;
    char users_path[4096]; /* admin-users, else DATA-DIR/admin-users */
} admin_t;

static void usage(FILE *f)
{
    fputs("usage: spinegate-admin [--data-dir DIR] [--config FILE] COMMAND [ARGS]\n"
          "The coders' worklist of a spinegate data folder: rejected messages and dead\n"
          "letters (and annotated messages with worklist-annotated).\n\n"
          "  list [--state S] [--kind K] [--rule RULE] [--source mllp|http] [--ref REF]\n"
          "       [--since TIME] [--until TIME] [--json]\n"
          "                       items, oldest first (--json: JSON Lines)\n"
          "  show ID [--json]     one item: the message with its findings marked\n"
          "  resolve ID --note TEXT\n"
          "                       mark an open item resolved\n"
          "  resend ID [FILE|-]   judge the corrected message (FILE, else the stored one)\n"
          "                       and, unless rejected, queue it; the item becomes resent\n"
          "  requeue ID... | requeue --all | requeue [FILTERS as for list]\n"
          "                       queue open dead letters again, in their order\n"
          "  stats [--json]       items per state, kind and rule; queue figures\n"
          "  prune                delete items past worklist-retention (never open ones)\n"
          "  user add|passwd|remove NAME\n"
          "                       accounts of the web page (admin-users); the password is\n"
          "                       read from standard input\n\n"
          "  --data-dir DIR       the daemon's data folder (default: its data-dir setting)\n"
          "  --config FILE        the daemon's config file: data-dir and the rule settings\n"
          "                       a resent message is judged with\n"
          "  --help, --version\n\n"
          "TIME is RFC 3339 (2026-12-01T08:00:00Z) or a date (2026-12-01), UTC when no\n"
          "offset is given. S is open, resolved, resent or requeued; K is reject, dead or\n"
          "annotate.\n\n"
          "Exit status: 0 done, 1 refused (resent message rejected, item not open), 2 usage\n"
          "error, unknown item or unreadable data folder.\n",
          f);
}

/* ---------------------------------------------------------------- helpers */

static int fail(const err_detail_t *d)
{
    fprintf(stderr, "spinegate-admin: %s\n", d->msg);
    return d->code == ERR_BAD_VALUE ? 1 : 2;
}

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

static void print_json(cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    puts(s);
    cJSON_free(s);
    cJSON_Delete(o);
}

/* ---------------------------------------------------------------- list */

static int list_cb(const worklist_item_t *it, void *user)
{
    admin_t *a = user;
    cJSON *o = wlview_item_json(it);
    if (a->json) {
        print_json(o);
        return 0;
    }
    char *rules = cJSON_PrintUnformatted(cJSON_GetObjectItem(o, "rules"));
    printf("%-6" PRId64 " %-9s %-8s %-9s %-4s %s  %-20s %s\n", it->id, it->state, it->kind,
           wlview_jstr(o, "verdict"), wlview_jstr(o, "source"), wlview_jstr(o, "received"), it->control_id, rules);
    cJSON_free(rules);
    cJSON_Delete(o);
    return 0;
}

/* Reads the filter options of list and requeue from argv[optind...]. */
static int filter_args(int argc, char **argv, worklist_filter_t *f, bool *json, bool *all,
                       const char **ref)
{
    static const struct option opts[] = {
        {"state", required_argument, NULL, 's'}, {"kind", required_argument, NULL, 'k'},
        {"rule", required_argument, NULL, 'r'},  {"source", required_argument, NULL, 'S'},
        {"since", required_argument, NULL, 'a'}, {"until", required_argument, NULL, 'u'},
        {"json", no_argument, NULL, 'j'},        {"all", no_argument, NULL, 'A'},
        {"ref", required_argument, NULL, 'R'},   {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 's': f->state = optarg; break;
        case 'k': f->kind = optarg; break;
        case 'r': f->rule = optarg; break;
        case 'R': *ref = optarg; break;
        case 'S':
            if (strcmp(optarg, "mllp") != 0 && strcmp(optarg, "http") != 0) {
                fprintf(stderr, "spinegate-admin: --source: mllp or http\n");
                return 2;
            }
            f->source = optarg;
            break;
        case 'a':
        case 'u':
            if (!wlview_parse_time(optarg, opt == 'a' ? &f->since_ms : &f->until_ms)) {
                fprintf(stderr, "spinegate-admin: --%s: not an RFC 3339 time or a date: %s\n",
                        opt == 'a' ? "since" : "until", optarg);
                return 2;
            }
            break;
        case 'j':
            if (!json)
                return 2;
            *json = true;
            break;
        case 'A':
            if (!all)
                return 2;
            *all = true;
            break;
        default: return 2;
        }
    }
    return 0;
}

typedef struct {
    admin_t *a;
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

static err_t walk(admin_t *a, const worklist_filter_t *f, const char *ref, worklist_item_fn fn,
                  void *user, err_detail_t *d)
{
    if (!ref)
        return worklist_list(a->wl, f, fn, user, d);
    ref_filter_t rf = {a, ref, fn, user};
    return worklist_list(a->wl, f, ref_cb, &rf, d);
}

static int cmd_list(admin_t *a, int argc, char **argv)
{
    worklist_filter_t f = {0};
    const char *ref = NULL;
    if (filter_args(argc, argv, &f, &a->json, NULL, &ref) || optind != argc) {
        usage(stderr);
        return 2;
    }
    err_detail_t d;
    err_clear(&d);
    if (walk(a, &f, ref, list_cb, a, &d) != ERR_OK)
        return fail(&d);
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

static void print_finding(const cJSON *f, const char *indent)
{
    printf("%s^ %s %s %s", indent, wlview_jstr(f, "location") ? wlview_jstr(f, "location") : "(message)",
           wlview_jstr(f, "rule") ? wlview_jstr(f, "rule") : "?", wlview_jstr(f, "severity") ? wlview_jstr(f, "severity") : "");
    const cJSON *codes = cJSON_GetObjectItemCaseSensitive(f, "codes"), *c;
    cJSON_ArrayForEach(c, codes) if (cJSON_IsString(c)) printf(" %s", c->valuestring);
    if (wlview_jstr(f, "message"))
        printf(": %s", wlview_jstr(f, "message"));
    if (wlview_jstr(f, "suggestion"))
        printf(" (consider %s)", wlview_jstr(f, "suggestion"));
    putchar('\n');
}

/* The HL7 message a segment a line, each finding marked under the segment
 * its location names; findings that name no segment come first. */
static void show_hl7(const worklist_item_t *it, const cJSON *findings)
{
    const cJSON *f;
    cJSON_ArrayForEach(f, findings)
    {
        char seg[4];
        int occ;
        if (!hl7_place(wlview_jstr(f, "location"), seg, &occ))
            print_finding(f, "  ");
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
            printf("%s(%d)\t%.*s\n", name, occ, (int)(e - p), p);
            cJSON_ArrayForEach(f, findings)
            {
                char seg[4];
                int o;
                if (hl7_place(wlview_jstr(f, "location"), seg, &o) && strcmp(seg, name) == 0 && o == occ)
                    print_finding(f, "      \t");
            }
        }
        p = e + 1;
    }
}

static int show_cb(const worklist_item_t *it, void *user)
{
    admin_t *a = user;
    cJSON *o = wlview_item_json(it);
    cJSON *m = wlview_meta(it);
    if (a->json) {
        const cJSON *fs = cJSON_GetObjectItemCaseSensitive(m, "findings");
        cJSON_AddItemToObject(o, "findings",
                              fs ? cJSON_Duplicate(fs, 1) : cJSON_CreateArray());
        cJSON_AddStringToObject(o, "content_type", it->content_type);
        char *msg = xmalloc(it->payload_len + 1);
        memcpy(msg, it->payload, it->payload_len);
        msg[it->payload_len] = 0;
        cJSON_AddStringToObject(o, "message", msg);
        xfree(msg);
        print_json(o);
        cJSON_Delete(m);
        return 0;
    }
    printf("item %" PRId64 ": %s, %s (%s)\n", it->id, it->kind, it->state, wlview_jstr(o, "verdict"));
    printf("received %s from %s%s%s, control id %s%s%s\n", wlview_jstr(o, "received"), wlview_jstr(o, "source"),
           wlview_jstr(o, "peer") ? " " : "", wlview_jstr(o, "peer") ? wlview_jstr(o, "peer") : "", it->control_id,
           wlview_jstr(o, "type") ? ", " : "", wlview_jstr(o, "type") ? wlview_jstr(o, "type") : "");
    const cJSON *refs = cJSON_GetObjectItemCaseSensitive(m, "refs");
    if (wlview_jstr(refs, "mrn") || wlview_jstr(refs, "account") || wlview_jstr(refs, "visit"))
        printf("patient %s, account %s, visit %s\n", wlview_jstr(refs, "mrn") ? wlview_jstr(refs, "mrn") : "-",
               wlview_jstr(refs, "account") ? wlview_jstr(refs, "account") : "-",
               wlview_jstr(refs, "visit") ? wlview_jstr(refs, "visit") : "-");
    if (it->reason)
        printf("dead-lettered: %s\n", it->reason);
    if (it->changed_ms)
        printf("%s by %s at %s%s%s%s%s\n", it->state, it->changed_by ? it->changed_by : "?",
               wlview_jstr(o, "changed"), it->note ? ": " : "", it->note ? it->note : "",
               it->link ? " -> " : "", it->link ? it->link : "");
    putchar('\n');
    const cJSON *findings = cJSON_GetObjectItemCaseSensitive(m, "findings");
    if (strstr(it->content_type, "hl7")) {
        show_hl7(it, findings);
    } else {
        const cJSON *f;
        cJSON_ArrayForEach(f, findings) print_finding(f, "  ");
        printf("%.*s\n", (int)it->payload_len, (const char *)it->payload);
    }
    cJSON_Delete(o);
    cJSON_Delete(m);
    return 0;
}

static int cmd_show(admin_t *a, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1)
        if (opt == 'j')
            a->json = true;
        else
            return 2;
    int64_t id;
    if (optind + 1 != argc || !parse_id(argv[optind], &id)) {
        usage(stderr);
        return 2;
    }
    err_detail_t d;
    err_clear(&d);
    if (worklist_get(a->wl, id, show_cb, a, &d) != ERR_OK)
        return fail(&d);
    return 0;
}

/* Reads the one option resolve and resend take, --note TEXT; false on any
 * other option (getopt has said which). */
static bool note_option(int argc, char **argv, const char **note)
{
    static const struct option opts[] = {{"note", required_argument, NULL, 'n'},
                                         {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt != 'n')
            return false;
        *note = optarg;
    }
    return true;
}

/* ---------------------------------------------------------------- resolve */

static int cmd_resolve(admin_t *a, int argc, char **argv)
{
    const char *note = NULL;
    if (!note_option(argc, argv, &note))
        return 2;
    int64_t id;
    if (optind + 1 != argc || !parse_id(argv[optind], &id) || !note || !*note) {
        fprintf(stderr, "spinegate-admin: usage: resolve ID --note TEXT\n");
        return 2;
    }
    err_detail_t d;
    err_clear(&d);
    if (worklist_resolve(a->wl, id, a->who, note, &d) != ERR_OK)
        return fail(&d);
    printf("item %" PRId64 " resolved\n", id);
    return 0;
}

/* ---------------------------------------------------------------- requeue */

typedef struct {
    admin_t *a;
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

static int cmd_requeue(admin_t *a, int argc, char **argv)
{
    worklist_filter_t f = {0};
    bool all = false;
    const char *ref = NULL;
    if (filter_args(argc, argv, &f, NULL, &all, &ref)) {
        usage(stderr);
        return 2;
    }
    bool filtered = f.rule || f.source || f.since_ms || f.until_ms || ref;
    id_list_t l = {a, NULL, 0, 0};
    err_detail_t d;
    err_clear(&d);
    if (optind < argc) {
        if (all || filtered) {
            fprintf(stderr, "spinegate-admin: requeue: ids, or --all, or filters\n");
            return 2;
        }
        for (int i = optind; i < argc; i++) {
            int64_t id;
            if (!parse_id(argv[i], &id)) {
                fprintf(stderr, "spinegate-admin: requeue: not an item id: %s\n", argv[i]);
                xfree(l.ids);
                return 2;
            }
            collect_cb(&(worklist_item_t){.id = id}, &l);
        }
    } else {
        if (!all && !filtered) {
            fprintf(stderr, "spinegate-admin: requeue: give ids, filters or --all\n");
            return 2;
        }
        f.kind = "dead";
        f.state = "open";
        if (walk(a, &f, ref, collect_cb, &l, &d) != ERR_OK) {
            xfree(l.ids);
            return fail(&d);
        }
    }
    int status = 0;
    for (size_t i = 0; i < l.n; i++) {
        /* In id order, one transaction each: what was requeued stays so if
         * a later one is refused. */
        err_clear(&d);
        if (worklist_requeue(a->wl, l.ids[i], a->who, &d) != ERR_OK) {
            int rc = fail(&d);
            status = rc > status ? rc : status;
            continue;
        }
        printf("item %" PRId64 " requeued\n", l.ids[i]);
    }
    if (!l.n)
        printf("no open dead letters matched\n");
    xfree(l.ids);
    return status;
}

/* ---------------------------------------------------------------- resend */

typedef struct {
    char *dest, *content_type, *payload;
    size_t payload_len;
    int64_t id;
} stored_t;

static int stored_cb(const worklist_item_t *it, void *user)
{
    stored_t *s = user;
    s->dest = xstrdup(it->dest);
    s->content_type = xstrdup(it->content_type);
    s->payload = xmalloc(it->payload_len + 1);
    memcpy(s->payload, it->payload, it->payload_len);
    s->payload[it->payload_len] = 0;
    s->payload_len = it->payload_len;
    return 0;
}

static char *read_input(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "spinegate-admin: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap)
            buf = xrealloc(buf, cap *= 2);
    }
    bool bad = ferror(f);
    if (f != stdin)
        fclose(f);
    if (bad) {
        fprintf(stderr, "spinegate-admin: %s: read error\n", path);
        xfree(buf);
        return NULL;
    }
    /* A file edited by hand ends its segments with newlines: HL7 wants CR. */
    if (gate_detect(buf, n) == GATE_HL7) {
        for (size_t i = 0; i < n; i++)
            if (buf[i] == '\n')
                buf[i] = '\r';
        size_t w = 0;
        for (size_t i = 0; i < n; i++)
            if (!(buf[i] == '\r' && w && buf[w - 1] == '\r'))
                buf[w++] = buf[i];
        n = w;
    }
    *len = n;
    return buf;
}

static void print_verdict(const gate_result_t *r, void *user)
{
    (void)user;
    if (r->status != GATE_JUDGED)
        report_error_text(stdout, "resend", 1, &r->detail);
    else
        report_verdict_text(stdout, "resend", 1, r->control_id, &r->verdict);
}

static int cmd_resend(admin_t *a, int argc, char **argv)
{
    const char *note = NULL;
    if (!note_option(argc, argv, &note))
        return 2;
    int64_t id;
    if (optind >= argc || argc - optind > 2 || !parse_id(argv[optind], &id)) {
        fprintf(stderr, "spinegate-admin: usage: resend ID [FILE|-] [--note TEXT]\n");
        return 2;
    }
    err_detail_t d;
    err_clear(&d);
    stored_t s = {0};
    if (worklist_get(a->wl, id, stored_cb, &s, &d) != ERR_OK)
        return fail(&d);
    char *buf = s.payload;
    size_t len = s.payload_len;
    char *file_buf = NULL;
    if (optind + 1 < argc) {
        file_buf = read_input(argv[optind + 1], &len);
        if (!file_buf) {
            xfree(s.dest);
            xfree(s.content_type);
            xfree(s.payload);
            return 2;
        }
        buf = file_buf;
    }
    rule_policy_t policy;
    config_rule_policy(&a->cfg, &policy);
    rule_pack_t *pack = NULL;
    int status = 0;
    if (rule_pack_load(a->cfg.rules_path, a->cfg.tables_path, &policy, &pack, &d) != ERR_OK) {
        fprintf(stderr, "spinegate-admin: rule pack: %s%s%s\n", d.where, d.where[0] ? ": " : "",
                d.msg);
        status = 2;
    }
    arena_t ar;
    arena_init(&ar, 16384);
    worklist_msg_t m = {0};
    if (!status)
        status = wlview_judge(&a->cfg, pack, buf, len, &ar, &m, print_verdict, NULL);
    if (!status) {
        if (worklist_resend(a->wl, id, &m, a->who, note, &d) != ERR_OK)
            status = fail(&d);
        else
            printf("item %" PRId64 " resent: queued for %s\n", id, m.dest);
    } else if (status == 1) {
        printf("item %" PRId64 " stays open: the message was not queued\n", id);
    }
    arena_free(&ar);
    rule_pack_free(pack);
    xfree(file_buf);
    xfree(s.dest);
    xfree(s.content_type);
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

static void print_counts(const char *title, const cJSON *o)
{
    printf("%s:", title);
    const cJSON *v;
    if (!o->child)
        printf(" none");
    cJSON_ArrayForEach(v, o) printf(" %s=%.0f", v->string, v->valuedouble);
    putchar('\n');
}

static int cmd_stats(admin_t *a, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1)
        if (opt == 'j')
            a->json = true;
        else
            return 2;
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    cJSON *o = cJSON_CreateObject();
    stats_t s = {cJSON_AddObjectToObject(o, "states"), cJSON_AddObjectToObject(o, "kinds"),
                 cJSON_AddObjectToObject(o, "open_by_rule")};
    cJSON *queue = cJSON_AddObjectToObject(o, "queue");
    int64_t inbox = 0;
    err_detail_t d;
    err_clear(&d);
    if (worklist_list(a->wl, NULL, stats_cb, &s, &d) != ERR_OK ||
        worklist_queue_figures(a->wl, dest_cb, queue, &inbox, &d) != ERR_OK) {
        cJSON_Delete(o);
        return fail(&d);
    }
    cJSON_AddNumberToObject(o, "inbox", (double)inbox);
    if (a->json) {
        print_json(o);
        return 0;
    }
    print_counts("items by state", s.states);
    print_counts("items by kind", s.kinds);
    print_counts("open items by rule", s.rules);
    const cJSON *q;
    cJSON_ArrayForEach(q, queue)
    {
        printf("queue %s: %.0f pending, %.0f dead\n", q->string,
               cJSON_GetObjectItem(q, "pending")->valuedouble,
               cJSON_GetObjectItem(q, "dead")->valuedouble);
    }
    printf("inbox: %" PRId64 " handed back, not yet taken by the daemon\n", inbox);
    cJSON_Delete(o);
    return 0;
}

static int cmd_prune(admin_t *a, int argc, char **argv)
{
    (void)argv;
    if (argc != optind) {
        usage(stderr);
        return 2;
    }
    size_t n = 0;
    err_detail_t d;
    err_clear(&d);
    if (worklist_prune(a->wl, (unsigned)a->cfg.worklist_retention, &n, &d) != ERR_OK)
        return fail(&d);
    printf("%zu items pruned\n", n);
    return 0;
}

/* ---------------------------------------------------------------- user */

/* Reads one line from stdin into out (without the newline); on a terminal
 * without echo. False at end of input or when longer than cap - 1. */
static bool read_secret(const char *prompt, char *out, size_t cap)
{
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        fprintf(stderr, "%s", prompt);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    bool ok = fgets(out, (int)cap, stdin) != NULL;
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    size_t n = ok ? strcspn(out, "\r\n") : 0;
    if (ok && out[n] == '\0' && !feof(stdin) && strlen(out) == cap - 1)
        ok = false; /* longer than out: refused, not cut */
    out[n] = '\0';
    return ok;
}

/* user add|passwd NAME (the password on stdin, never in argv, where ps
 * would show it), user remove NAME: the web page's accounts. */
static int cmd_user(admin_t *a, int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "add") && strcmp(argv[1], "remove") &&
                      strcmp(argv[1], "passwd"))) {
        fprintf(stderr, "spinegate-admin: usage: user add|passwd|remove NAME "
                        "(the password is read from standard input)\n");
        return 2;
    }
    const char *op = argv[1], *name = argv[2];
    if (!webauth_name_ok(name)) {
        fprintf(stderr, "spinegate-admin: %s: a name is 1 to %d letters, digits, . _ - @\n",
                name, WEBAUTH_NAME_MAX);
        return 2;
    }
    if (!webauth_init()) {
        fprintf(stderr, "spinegate-admin: libsodium cannot start\n");
        return 2;
    }
    err_detail_t d;
    err_clear(&d);
    char hash[WEBAUTH_HASH_MAX];
    bool exists = webauth_users_find(a->users_path, name, hash, &d) == ERR_OK;
    if (!exists && d.code == ERR_IO) {
        fprintf(stderr, "spinegate-admin: %s\n", d.msg);
        return 2;
    }
    if (!strcmp(op, "add") && exists) {
        fprintf(stderr, "spinegate-admin: %s already has an account (user passwd)\n", name);
        return 1;
    }
    if (strcmp(op, "add") && !exists) {
        fprintf(stderr, "spinegate-admin: no account %s in %s\n", name, a->users_path);
        return 1;
    }
    if (!strcmp(op, "remove")) {
        if (webauth_users_set(a->users_path, name, NULL, &d) != ERR_OK)
            return fail(&d);
        printf("account %s removed (its open sessions end at their timeout)\n", name);
        return 0;
    }
    char pw[256], again[256];
    if (!read_secret("password: ", pw, sizeof pw) || strlen(pw) < 8) {
        fprintf(stderr, "spinegate-admin: a password of 8 to 255 characters on standard input\n");
        return 2;
    }
    if (isatty(STDIN_FILENO) && (!read_secret("again: ", again, sizeof again) || strcmp(pw, again))) {
        fprintf(stderr, "spinegate-admin: the two passwords differ\n");
        return 2;
    }
    bool hashed = webauth_hash(pw, hash);
    memset(pw, 0, sizeof pw);
    memset(again, 0, sizeof again);
    if (!hashed) {
        fprintf(stderr, "spinegate-admin: cannot hash the password (out of memory)\n");
        return 2;
    }
    if (webauth_users_set(a->users_path, name, hash, &d) != ERR_OK)
        return fail(&d);
    printf("account %s %s in %s\n", name, !strcmp(op, "add") ? "added" : "changed",
           a->users_path);
    return 0;
}

/* ---------------------------------------------------------------- main */

static const char *who_am_i(void)
{
    const char *s = getenv("SUDO_USER");
    if (s && *s)
        return s;
    struct passwd *pw = getpwuid(getuid());
    return pw ? pw->pw_name : "unknown";
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data-dir", required_argument, NULL, 'd'}, {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},           {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    admin_t a = {0};
    const char *data_dir = NULL, *config_file = NULL;
    int opt;
    /* "+": options end at the command; the command reads its own. */
    while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (opt) {
        case 'd': data_dir = optarg; break;
        case 'c': config_file = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("spinegate-admin %s\n", PACKAGE_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    xmalloc_hook_libraries();
    err_detail_t d;
    err_clear(&d);
    config_defaults(&a.cfg);
    if ((config_file && config_load_file(&a.cfg, config_file, &d) != ERR_OK) ||
        config_validate(&a.cfg, &d) != ERR_OK) {
        fprintf(stderr, "spinegate-admin: %s: %s\n", config_file ? config_file : "config",
                d.msg);
        config_free(&a.cfg);
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/queue.db", data_dir ? data_dir : a.cfg.data_dir);
    const char *cmd = argv[optind];
    if (a.cfg.admin_users)
        snprintf(a.users_path, sizeof a.users_path, "%s", a.cfg.admin_users);
    else
        snprintf(a.users_path, sizeof a.users_path, "%s/admin-users",
                 data_dir ? data_dir : a.cfg.data_dir);
    if (strcmp(cmd, "user") == 0) {
        /* Accounts live beside the queue, not in it: no database needed. */
        int status = cmd_user(&a, argc - optind, argv + optind);
        config_free(&a.cfg);
        return status;
    }
    if (strcmp(a.cfg.queue_backend, "postgres") == 0) {
        /* The worklist is then in PostgreSQL (docs/queue-schema.md), which
         * this tool does not read yet: saying so beats showing the stale
         * or missing queue.db of the data folder. */
        fprintf(stderr, "spinegate-admin: %s: queue = postgres is not supported yet by "
                        "spinegate-admin (the worklist is in PostgreSQL, tables "
                        "spinegate_worklist and spinegate_msgs)\n",
                config_file ? config_file : "config");
        config_free(&a.cfg);
        return 2;
    }
    typedef int (*cmd_fn)(admin_t *, int, char **);
    static const struct {
        const char *name;
        cmd_fn fn;
    } cmds[] = {{"list", cmd_list},       {"show", cmd_show},   {"resolve", cmd_resolve},
                {"requeue", cmd_requeue}, {"resend", cmd_resend}, {"stats", cmd_stats},
                {"prune", cmd_prune}};
    cmd_fn fn = NULL;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmds[i].name, cmd) == 0)
            fn = cmds[i].fn;
    if (!fn) {
        fprintf(stderr, "spinegate-admin: unknown command %s\n", cmd);
        usage(stderr);
        config_free(&a.cfg);
        return 2;
    }
    int status;
    if (worklist_open(path, &a.wl, &d) != ERR_OK) {
        fprintf(stderr, "spinegate-admin: %s\n", d.msg);
        status = 2;
    } else {
        a.who = who_am_i();
        /* The command sees its own argv (argv[0] the command); optind 0
         * makes glibc's getopt start afresh. */
        int sub_argc = argc - optind;
        char **sub_argv = argv + optind;
        optind = 0;
        status = fn(&a, sub_argc, sub_argv);
    }
    worklist_close(a.wl);
    config_free(&a.cfg);
    fflush(stdout);
    return status;
}
