/* test_lanes.c - the per-connection lanes over the real libuv thread pool:
 * one key's jobs run one at a time and finish in submission order, different
 * keys run side by side up to the cap, a done may submit more work, the
 * idle callback comes once everything is done, and a small job runs inline
 * only when nothing of its key is ahead of it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <string.h>
#include <uv.h>

#include "lanes.h"
#include "xmalloc.h"

typedef struct {
    lane_job_t lane; /* first */
    int key, seq;
    int *log;        /* done order, written on the loop thread */
    size_t *nlog;
    unsigned sleep_ms;
} job_t;

static atomic_int running_now, running_peak;
static int idle_calls;

static void run_job(lane_job_t *lane)
{
    job_t *j = (job_t *)lane;
    int now = atomic_fetch_add(&running_now, 1) + 1;
    int peak = atomic_load(&running_peak);
    while (now > peak && !atomic_compare_exchange_weak(&running_peak, &peak, now))
        ;
    uv_sleep(j->sleep_ms);
    atomic_fetch_sub(&running_now, 1);
}

static void done_job(lane_job_t *lane)
{
    job_t *j = (job_t *)lane;
    j->log[(*j->nlog)++] = j->key * 1000 + j->seq;
    xfree(j);
}

static void on_idle(lanes_t *ls, void *user)
{
    (void)ls;
    (void)user;
    idle_calls++;
}

static void submit(lanes_t *ls, int key, int seq, unsigned ms, int *log, size_t *nlog)
{
    job_t *j = xcalloc(1, sizeof *j);
    j->lane.run = run_job;
    j->lane.done = done_job;
    j->key = key;
    j->seq = seq;
    j->sleep_ms = ms;
    j->log = log;
    j->nlog = nlog;
    lanes_submit(ls, (uint64_t)key, &j->lane, false);
}

static void test_one_key_in_order_keys_side_by_side(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    atomic_store(&running_now, 0);
    atomic_store(&running_peak, 0);
    idle_calls = 0;
    lanes_t *ls = lanes_new(&loop, 2, on_idle, NULL);
    int log[64];
    size_t nlog = 0;
    /* Key 1's first job is the slowest: its later jobs must still wait. */
    submit(ls, 1, 0, 60, log, &nlog);
    for (int s = 1; s < 6; s++)
        submit(ls, 1, s, 1, log, &nlog);
    for (int s = 0; s < 6; s++)
        submit(ls, 2, s, 5, log, &nlog);
    for (int s = 0; s < 3; s++)
        submit(ls, 3, s, 5, log, &nlog);
    assert_int_equal(lanes_busy(ls), 15);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(nlog, 15);
    assert_int_equal(lanes_busy(ls), 0);
    assert_int_equal(idle_calls, 1);
    int next[4] = {0};
    for (size_t i = 0; i < nlog; i++) {
        int key = log[i] / 1000, seq = log[i] % 1000;
        assert_int_equal(seq, next[key]); /* each key in submission order */
        next[key]++;
    }
    /* Keys 2 and 3 finished while key 1's slow job ran. */
    assert_true(log[0] / 1000 != 1);
    /* The cap held, and two keys did run at once. */
    assert_int_equal(atomic_load(&running_peak), 2);
    lanes_free(ls);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A done that submits to its own key: the new job runs after it, once. */
static int chained;
static size_t chain_n;
static int chain_log[8];
static lanes_t *chain_set;

static void done_and_chain(lane_job_t *lane)
{
    job_t *j = (job_t *)lane;
    chain_log[chain_n++] = j->seq;
    if (j->seq < 3) {
        job_t *n = xcalloc(1, sizeof *n);
        n->lane.run = run_job;
        n->lane.done = done_and_chain;
        n->seq = j->seq + 1;
        chained++;
        lanes_submit(chain_set, 7, &n->lane, false);
    }
    xfree(j);
}

static void test_done_may_submit_to_its_own_key(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    idle_calls = 0;
    chain_set = lanes_new(&loop, 1, on_idle, NULL);
    job_t *j = xcalloc(1, sizeof *j);
    j->lane.run = run_job;
    j->lane.done = done_and_chain;
    lanes_submit(chain_set, 7, &j->lane, false);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(chained, 3);
    assert_int_equal(chain_n, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(chain_log[i], i);
    assert_int_equal(idle_calls, 1);
    lanes_free(chain_set);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A small job runs at once when its key is idle, and waits its turn when
 * the key has a job in flight. */
static void test_small_jobs_inline_only_when_their_key_is_idle(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    lanes_t *ls = lanes_new(&loop, 2, NULL, NULL);
    int log[8];
    size_t nlog = 0;
    job_t *a = xcalloc(1, sizeof *a);
    a->lane.run = run_job;
    a->lane.done = done_job;
    a->key = 1;
    a->log = log;
    a->nlog = &nlog;
    lanes_submit(ls, 1, &a->lane, true);
    assert_int_equal(nlog, 1); /* done before submit returned */
    assert_int_equal(lanes_busy(ls), 0);
    submit(ls, 1, 1, 30, log, &nlog); /* in flight on the pool */
    job_t *b = xcalloc(1, sizeof *b);
    b->lane.run = run_job;
    b->lane.done = done_job;
    b->key = 1;
    b->seq = 2;
    b->log = log;
    b->nlog = &nlog;
    lanes_submit(ls, 1, &b->lane, true);
    assert_int_equal(nlog, 1); /* queued behind seq 1 */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(nlog, 3);
    assert_int_equal(log[1], 1001);
    assert_int_equal(log[2], 1002);
    lanes_free(ls);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    lanes_size_pool(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_key_in_order_keys_side_by_side),
        cmocka_unit_test(test_done_may_submit_to_its_own_key),
        cmocka_unit_test(test_small_jobs_inline_only_when_their_key_is_idle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
