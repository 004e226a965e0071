/* serve_mllp.c - what the daemon does with each MLLP frame: judge it, store
 * it (accepted and annotated messages for delivery, rejected ones for the
 * reject sink), and only once the store is durable, answer the sender.
 *
 * A job owns everything one message needs until its answer is written: a
 * reference to the frame, the parsed message, an arena for the claim, the
 * findings and the output, and a reference to the rule pack that judged it
 * (its findings point into the pack).
 */
#include <stdio.h>
#include <string.h>

#include "daemon.h"
#include "gate.h"
#include "hl7_ack.h"
#include "lanes.h"
#include "log.h"
#include "wlmeta.h"
#include "xmalloc.h"

typedef struct mllp_job {
    lane_job_t lane; /* first: the lane callbacks get the job back from it */
    daemon_t *d;
    mllp_req_t *req;
    buf_t *frame;
    hl7_msg_t *msg;
    arena_t arena;
    daemon_pack_t *pack;
    gate_result_t result;
    uint64_t t0;
    const char *dest;
    /* What the pool thread needs, copied on the loop thread: a reload may
     * change the daemon's settings while the job runs. */
    hl7_opts_t hl7_opts;
    gate_limits_t limits;
    hl7_annotate_opts_t annotate_opts;
    slice_t input;     /* the frame without an earlier pass of annotation */
    slice_t annotated; /* the annotated message, when the verdict wants one */
    struct mllp_job *next_spare; /* on d->mllp_spares (job_free) */
} mllp_job_t;

/* Freed jobs are kept for the next frames (up to SPARE_JOBS, a list on
 * d->mllp_spares) with their parse index and arena block, so that a message
 * costs no allocation of its own for them; those that one large message
 * made large are freed instead. Jobs are made and freed on the loop only. */
#define SPARE_JOBS 32
#define SPARE_MSG_MAX (64 * 1024) /* the largest index kept, in bytes */
#define JOB_ARENA 8192

static void job_free(mllp_job_t *j)
{
    buf_unref(j->frame);
    daemon_pack_unref(j->pack);
    daemon_t *d = j->d;
    if (d->mllp_nspares < SPARE_JOBS && hl7_msg_footprint(j->msg) <= SPARE_MSG_MAX) {
        hl7_msg_t *msg = j->msg;
        hl7_msg_clear(msg);
        arena_t arena = j->arena;
        arena_recycle(&arena, JOB_ARENA);
        memset(j, 0, sizeof *j);
        j->msg = msg;
        j->arena = arena;
        j->next_spare = d->mllp_spares;
        d->mllp_spares = j;
        d->mllp_nspares++;
        return;
    }
    hl7_msg_free(j->msg);
    arena_free(&j->arena);
    xfree(j);
}

void serve_mllp_free_spares(daemon_t *d)
{
    while (d->mllp_spares) {
        mllp_job_t *j = d->mllp_spares;
        d->mllp_spares = j->next_spare;
        hl7_msg_free(j->msg);
        arena_free(&j->arena);
        xfree(j);
    }
    d->mllp_nspares = 0;
}

/* Fills the ACK's own MSH-7 and MSH-10: the parser is clock-free. */
static void ack_opts(daemon_t *d, arena_t *a, hl7_ack_opts_t *o)
{
    char ts[32];
    daemon_hl7_timestamp(ts, sizeof ts);
    memset(o, 0, sizeof *o);
    o->timestamp = arena_strdup(a, ts);
    /* "SG", the start time in hex, the sequence in six digits: written out
     * by hand, as it is for every ACK. */
    char *id = arena_alloc(a, 2 + 16 + 6 + 1), *p = id + 2;
    memcpy(id, "SG", 2);
    uint64_t start = d->start_ms;
    int shift = 60;
    while (shift > 0 && !(start >> shift))
        shift -= 4;
    for (; shift >= 0; shift -= 4)
        *p++ = "0123456789abcdef"[(start >> shift) & 15];
    uint64_t seq = ++d->ack_seq % 1000000;
    for (int k = 5; k >= 0; k--, seq /= 10)
        p[k] = (char)('0' + seq % 10);
    p[6] = '\0';
    o->control_id = id;
}

static const char *rules_list(arena_t *a, const rule_verdict_t *v)
{
    if (!v->nfindings)
        return "-";
    size_t n = 0;
    for (size_t i = 0; i < v->nfindings; i++)
        n += strlen(v->findings[i].rule_id) + 1;
    char *s = arena_alloc(a, n + 1), *p = s;
    for (size_t i = 0; i < v->nfindings; i++)
        p += sprintf(p, "%s%s", i ? "," : "", v->findings[i].rule_id);
    return s;
}

/* Builds one ACK with code for the job; SLICE_NULL when code is NONE or it
 * cannot be built. app says it is the application ACK of enhanced mode. */
static slice_t build_ack(mllp_job_t *j, hl7_outcome_t outcome, hl7_ack_code_t code, bool app,
                         bool enhanced)
{
    slice_t ack = SLICE_NULL;
    if (code == HL7_ACK_NONE)
        return ack;
    hl7_ack_opts_t o;
    ack_opts(j->d, &j->arena, &o);
    o.code = code;
    if (j->result.status == GATE_UNREADABLE) {
        if (hl7_ack_build_raw(j->frame->data, j->frame->len, &j->result.detail, &o, &j->arena,
                              &ack) != ERR_OK)
            return SLICE_NULL;
        return ack;
    }
    /* The verdict goes in the ACK that carries it: the only one in original
     * mode, the application ACK in enhanced mode (the accept ACK is about
     * storage alone). */
    if (j->result.status == GATE_JUDGED && (app || !enhanced))
        o.verdict = &j->result.verdict;
    o.no_ack_back = app;
    if (outcome == HL7_OUTCOME_STORE_FAILED) {
        err_detail_t *e = arena_alloc(&j->arena, sizeof *e);
        err_set(e, ERR_QUEUE, 0, "message could not be stored; send it again");
        o.error = e;
        o.text = e->msg;
    } else if (j->result.status == GATE_NOT_A_CLAIM && outcome == HL7_OUTCOME_UNPARSEABLE) {
        o.error = &j->result.detail;
    }
    if (hl7_ack_build(j->msg, &o, &j->arena, &ack) != ERR_OK)
        return SLICE_NULL;
    return ack;
}

/* Writes the answer (one ACK, or in enhanced mode the accept ACK and then
 * the application ACK, as MSH-15/16 ask) and finishes the job. */
static void answer(mllp_job_t *j, hl7_outcome_t outcome, metric_outcome_t metric)
{
    daemon_t *d = j->d;
    hl7_ack_plan_t plan = j->result.status == GATE_UNREADABLE
                              ? hl7_ack_plan_raw(j->frame->data, j->frame->len, outcome)
                              : hl7_ack_plan(j->msg, outcome);
    slice_t first = build_ack(j, outcome, plan.accept, false, plan.enhanced);
    slice_t second = build_ack(j, outcome, plan.app, plan.enhanced, plan.enhanced);
    if (!first.ptr) {
        first = second;
        second = SLICE_NULL;
    }
    char code[8]; /* "CA+AA": joined by hand, snprintf costs more than the rest of this */
    const char *accept_code = hl7_ack_code_str(plan.accept), *app_code = hl7_ack_code_str(plan.app);
    size_t accept_len = strlen(accept_code), app_len = strlen(app_code);
    memcpy(code, accept_code, accept_len);
    size_t code_len = accept_len;
    if (plan.accept != HL7_ACK_NONE && plan.app != HL7_ACK_NONE)
        code[code_len++] = '+';
    memcpy(code + code_len, app_code, app_len);
    code[code_len + app_len] = '\0';
    unsigned long long conn = (unsigned long long)mllp_req_conn_id(j->req); /* req dies on reply */
    if (first.ptr)
        mllp_req_reply2(j->req, first.ptr, first.len, second.ptr, second.len);
    else
        mllp_req_reply_none(j->req);
    double secs = (double)(uv_hrtime() - j->t0) / 1e9;
    metrics_count(&d->metrics, METRIC_FMT_HL7, metric,
                  j->result.status == GATE_JUDGED ? &j->result.verdict : NULL);
    metrics_latency(&d->metrics, secs);
    char idb[LOG_ID_BUF];
    if (j->result.status == GATE_UNREADABLE) {
        char whereb[LOG_ID_BUF]; /* a location may quote a segment id from the message */
        log_warn("mllp conn=%llu id=%s unreadable (%s%s%s): answered %s", conn,
                 log_id(j->result.control_id, idb), err_name(j->result.detail.code),
                 j->result.detail.where[0] ? " at " : "",
                 j->result.detail.where[0] ? log_id(j->result.detail.where, whereb) : "",
                 code[0] ? code : "none");
    } else /* log_info builds its arguments (the rule list) only when it logs */
        log_info("mllp conn=%llu id=%s %s findings=%zu rules=%s stored=%s ack=%s %.2fms", conn,
                 log_id(j->result.control_id, idb),
                 j->result.status == GATE_NOT_A_CLAIM ? "no-claim"
                                                      : verdict_name(j->result.verdict.kind),
                 j->result.verdict.nfindings, rules_list(&j->arena, &j->result.verdict),
                 j->dest ? j->dest : "-", code[0] ? code : "none", secs * 1000);
    job_free(j);
}

static void stored(daemon_t *d, void *job, err_t status)
{
    (void)d;
    mllp_job_t *j = job;
    if (status == ERR_CLOSED && mllp_req_orphaned(j->req)) {
        char idb[LOG_ID_BUF];
        log_info("mllp id=%s: sender gone while the queue was full: not stored, not acknowledged",
                 log_id(j->result.control_id, idb));
        j->dest = NULL;
        answer(j, HL7_OUTCOME_STORE_FAILED, METRIC_STORE_FAILED);
        return;
    }
    if (status != ERR_OK) {
        char idb[LOG_ID_BUF];
        log_error("mllp id=%s: queue put failed (%s): answering with an error ACK",
                  log_id(j->result.control_id, idb), err_str(status));
        j->dest = NULL;
        answer(j, HL7_OUTCOME_STORE_FAILED, METRIC_STORE_FAILED);
        return;
    }
    if (j->result.status == GATE_JUDGED && j->result.verdict.kind == VERDICT_REJECT)
        answer(j, HL7_OUTCOME_REJECTED, METRIC_REJECT);
    else if (j->result.status == GATE_JUDGED && j->result.verdict.kind == VERDICT_ANNOTATE)
        answer(j, HL7_OUTCOME_ANNOTATED, METRIC_ANNOTATE);
    else
        answer(j, HL7_OUTCOME_ACCEPTED, METRIC_ACCEPT);
}

static bool sender_gone(void *job)
{
    return mllp_req_orphaned(((mllp_job_t *)job)->req);
}

static void store(mllp_job_t *j, dest_t dest, slice_t payload)
{
    queue_item_t item = {
        .dest = dest_name(dest),
        .control_id = j->result.control_id ? j->result.control_id : "",
        .content_type = "application/hl7-v2",
        .payload = payload.ptr,
        .payload_len = payload.len,
        .findings = wlmeta_summary(&j->arena, &j->result.verdict),
        .meta = wlmeta_json(&j->arena, "mllp", mllp_req_peer(j->req), &j->result),
        .worklist = wlmeta_kind(dest, &j->result, j->d->cfg.worklist_annotated),
        .order_key = DAEMON_LANE_MLLP | mllp_req_conn_id(j->req),
    };
    j->dest = item.dest;
    daemon_put(j->d, &item, stored, sender_gone, j);
}

/* On a pool thread: parse, judge and annotate; nothing here touches the
 * daemon's mutable state. */
static void judge(lane_job_t *lane)
{
    mllp_job_t *j = (mllp_job_t *)lane;
    gate_hl7_unannotated(j->pack->pack, j->msg, j->frame->data, j->frame->len, &j->hl7_opts,
                         &j->limits, &j->arena, &j->input, &j->result);
    const rule_verdict_t *v = &j->result.verdict;
    if (j->result.status == GATE_JUDGED &&
        (v->kind != VERDICT_ACCEPT || j->annotate_opts.header_when_accepted))
        j->annotated = hl7_annotate(j->msg, v, &j->annotate_opts, &j->arena);
}

/* Back on the loop thread: store what was judged, or answer at once. */
static void route(lane_job_t *lane)
{
    mllp_job_t *j = (mllp_job_t *)lane;
    daemon_t *d = j->d;
    switch (j->result.status) {
    case GATE_UNREADABLE:
        answer(j, HL7_OUTCOME_UNPARSEABLE, METRIC_UNREADABLE);
        return;
    case GATE_NOT_A_CLAIM:
        if (d->cfg.others == CONFIG_OTHERS_REJECT) {
            answer(j, HL7_OUTCOME_UNPARSEABLE, METRIC_REJECT);
            return;
        }
        store(j, DEST_HL7, j->input);
        return;
    case GATE_JUDGED:
        break;
    }
    const rule_verdict_t *v = &j->result.verdict;
    if (v->kind == VERDICT_ACCEPT && !j->annotate_opts.header_when_accepted)
        store(j, DEST_HL7, j->input);
    else
        store(j, v->kind == VERDICT_REJECT ? DEST_REJECT_HL7 : DEST_HL7, j->annotated);
}

static mllp_job_t *job_new(daemon_t *d, mllp_req_t *req, buf_t *frame)
{
    mllp_job_t *j = d->mllp_spares;
    if (j) {
        d->mllp_spares = j->next_spare;
        d->mllp_nspares--;
        j->next_spare = NULL;
    } else {
        j = xcalloc(1, sizeof *j);
        j->msg = hl7_msg_new();
        arena_init(&j->arena, JOB_ARENA);
    }
    j->d = d;
    j->req = req;
    j->t0 = uv_hrtime();
    j->frame = buf_ref(frame);
    return j;
}

void serve_mllp_frame(mllp_req_t *req, buf_t *frame, void *user)
{
    daemon_t *d = user;
    mllp_job_t *j = job_new(d, req, frame);
    j->pack = daemon_pack_ref(d);
    j->hl7_opts = d->hl7_opts;
    j->limits = d->gate_limits;
    j->annotate_opts = (hl7_annotate_opts_t){
        .style = d->cfg.annotation_style == CONFIG_ANNOTATION_NTE ? HL7_ANNOTATE_NTE
                                                                 : HL7_ANNOTATE_ZSG,
        .pack_name = rule_pack_name(j->pack->pack),
        .pack_version = rule_pack_version(j->pack->pack),
        .header_when_accepted = d->cfg.annotate_accepted,
    };
    log_phi("mllp frame", frame->data, frame->len);
    j->lane.run = judge;
    j->lane.done = route;
    /* One lane per connection: its messages are stored in arrival order. */
    lanes_submit(d->lanes, DAEMON_LANE_MLLP | mllp_req_conn_id(req), &j->lane,
                 frame->len <= DAEMON_JUDGE_INLINE_MAX);
}

void serve_mllp_oversized(mllp_req_t *req, buf_t *head, size_t total, void *user)
{
    daemon_t *d = user;
    mllp_job_t *j = job_new(d, req, head);
    j->result.status = GATE_UNREADABLE;
    err_set(&j->result.detail, ERR_TOO_LARGE, total,
            "message of %zu bytes is over the limit of %ld bytes", total, d->cfg.max_message_size);
    answer(j, HL7_OUTCOME_UNPARSEABLE, METRIC_UNREADABLE);
}
