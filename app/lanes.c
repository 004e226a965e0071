/* lanes.c - per-connection FIFOs over libuv's thread pool. */
#include "lanes.h"

#include <stdio.h>
#include <stdlib.h>

#include "xmalloc.h"

struct lane {
    lanes_t *set;
    uint64_t key;
    lane_job_t *head, *tail; /* head is running or waiting for a slot */
    bool in_done;            /* head's done is running: submits must not start */
    lane_t *next;            /* in set->all */
    lane_t *next_ready;      /* in set->ready */
};

struct lanes {
    uv_loop_t *loop;
    unsigned max_running, running;
    size_t busy;
    lane_t *all;                      /* every lane with a job; few, so a list */
    lane_t *ready_head, *ready_tail;  /* lanes waiting for a running slot */
    lanes_idle_cb idle;
    void *user;
};

static unsigned default_running(void)
{
    unsigned n = uv_available_parallelism();
    return n < 1 ? 1 : n > 8 ? 8 : n;
}

void lanes_size_pool(unsigned max_running)
{
    if (getenv("UV_THREADPOOL_SIZE"))
        return;
    /* Four threads beyond the judging ones: a queue commit, a fetch, a
     * checkpoint and a dead-letter write never wait behind a large claim. */
    char n[16];
    snprintf(n, sizeof n, "%u", (max_running ? max_running : default_running()) + 4);
    setenv("UV_THREADPOOL_SIZE", n, 0);
}

lanes_t *lanes_new(uv_loop_t *loop, unsigned max_running, lanes_idle_cb idle, void *user)
{
    lanes_t *ls = xcalloc(1, sizeof *ls);
    ls->loop = loop;
    ls->max_running = max_running ? max_running : default_running();
    ls->idle = idle;
    ls->user = user;
    return ls;
}

static void work_cb(uv_work_t *w)
{
    lane_job_t *job = w->data;
    job->run(job);
}

static void start(lanes_t *ls, lane_t *l);

static void make_ready(lanes_t *ls, lane_t *l)
{
    if (ls->running < ls->max_running) {
        start(ls, l);
        return;
    }
    l->next_ready = NULL;
    if (ls->ready_tail)
        ls->ready_tail->next_ready = l;
    else
        ls->ready_head = l;
    ls->ready_tail = l;
}

static void remove_lane(lanes_t *ls, lane_t *l)
{
    for (lane_t **pp = &ls->all; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    xfree(l);
}

static void after_cb(uv_work_t *w, int status)
{
    (void)status; /* jobs are never cancelled */
    lane_job_t *job = w->data;
    lane_t *l = job->lane;
    lanes_t *ls = l->set;
    ls->running--;
    ls->busy--;
    l->head = job->next;
    if (!l->head)
        l->tail = NULL;
    l->in_done = true;
    job->done(job); /* job may be gone after this */
    l->in_done = false;
    if (l->head)
        make_ready(ls, l);
    else
        remove_lane(ls, l);
    while (ls->running < ls->max_running && ls->ready_head) {
        lane_t *r = ls->ready_head;
        ls->ready_head = r->next_ready;
        if (!ls->ready_head)
            ls->ready_tail = NULL;
        start(ls, r);
    }
    if (!ls->busy && ls->idle)
        ls->idle(ls, ls->user);
}

static void start(lanes_t *ls, lane_t *l)
{
    ls->running++;
    lane_job_t *job = l->head;
    job->work.data = job;
    uv_queue_work(ls->loop, &job->work, work_cb, after_cb);
}

void lanes_submit(lanes_t *ls, uint64_t key, lane_job_t *job, bool small)
{
    lane_t *l = ls->all;
    while (l && l->key != key)
        l = l->next;
    if (!l && small) {
        job->lane = NULL;
        job->run(job);
        job->done(job);
        return;
    }
    if (!l) {
        l = xcalloc(1, sizeof *l);
        l->set = ls;
        l->key = key;
        l->next = ls->all;
        ls->all = l;
    }
    job->lane = l;
    job->next = NULL;
    ls->busy++;
    bool was_empty = !l->head;
    if (l->tail)
        l->tail->next = job;
    else
        l->head = job;
    l->tail = job;
    if (was_empty && !l->in_done)
        make_ready(ls, l);
}

size_t lanes_busy(const lanes_t *ls)
{
    return ls->busy;
}

void lanes_free(lanes_t *ls)
{
    if (!ls)
        return;
    while (ls->all) {
        lane_t *l = ls->all;
        ls->all = l->next;
        xfree(l);
    }
    xfree(ls);
}
