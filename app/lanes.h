/* lanes.h - judging off the loop thread, in arrival order per connection.
 *
 * Parsing a message and running the rules on it is pure CPU work that can
 * take a while on a large claim; done on the loop thread it would stall
 * every other connection's answers and the health endpoints. A lane job's
 * `run` goes to libuv's thread pool; its `done` comes back to the loop
 * thread, where storing and answering happen.
 *
 * Jobs submitted with the same key (one connection) run one after another,
 * each `done` before the next `run` starts, so a connection's messages reach
 * the queue in the order they arrived. Different keys run side by side, up
 * to a cap that leaves pool threads free for the queue's commits.
 */
#ifndef SPINEGATE_LANES_H
#define SPINEGATE_LANES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct lane_job lane_job_t;
typedef struct lane lane_t;
typedef struct lanes lanes_t;

typedef void (*lane_fn)(lane_job_t *job);

struct lane_job {
    lane_fn run;  /* on a pool thread: touches nothing the loop thread owns */
    lane_fn done; /* on the loop thread afterwards; may free the job */
    /* private */
    uv_work_t work;
    lane_t *lane;
    lane_job_t *next;
};

typedef void (*lanes_idle_cb)(lanes_t *ls, void *user);

/* Sizes libuv's thread pool for `max_running` judging jobs plus room for the
 * queue's and deliverers' own work. Must run before the process's first
 * uv_queue_work; a UV_THREADPOOL_SIZE already set is left alone. */
void lanes_size_pool(unsigned max_running);

/* A new set of lanes on loop. At most max_running jobs run at once (0: the
 * machine's parallelism). idle (may be NULL) is called whenever the last job
 * in flight has finished. */
lanes_t *lanes_new(uv_loop_t *loop, unsigned max_running, lanes_idle_cb idle, void *user);

/* Queues job behind the earlier jobs of key. With `small` set and nothing of
 * key in flight, runs job at once on the calling (loop) thread instead: a
 * hop to the pool and back costs more than judging an ordinary message, and
 * order is kept because nothing of key is ahead of it. */
void lanes_submit(lanes_t *ls, uint64_t key, lane_job_t *job, bool small);

/* Jobs submitted and not yet done. */
size_t lanes_busy(const lanes_t *ls);

/* Frees ls; no job may be in flight. */
void lanes_free(lanes_t *ls);

#endif
