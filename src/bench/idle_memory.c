/*
 * idle-memory, idle-memory-stackful: N processes (stackless / stackful)
 * parked in receive. bytes_per_process = (RSS once all N are parked - RSS
 * after the runtime started, before the first spawn) / N; pools and caches
 * count. ops = N spawns, timed from the first spawn until every process
 * has reported in. No baseline.
 *
 * Each process bumps a shared counter just before it parks and the last
 * one messages the main thread: one message in all, so no mailbox of N
 * "ready" messages inflates the figure. The pid array is faulted in before
 * the first RSS reading for the same reason.
 *
 * The peak number of memory mappings (/proc/self/maps lines) is reported
 * too: a stackful process holds a stack and its guard page, two mappings,
 * against vm.max_map_count (65,530 here).
 */
#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_int.h"

typedef struct idle {
  rusm_rt *rt;
  rusm_pid_t main;
  uint64_t n;
  _Atomic uint64_t ready;
} idle;

static void mark_ready(idle *id) {
  /* Relaxed: the count is the only datum shared; the DONE message the
   * last process sends orders everything main reads afterwards. */
  if (atomic_fetch_add_explicit(&id->ready, 1, memory_order_relaxed) + 1 ==
      id->n)
    rusm__bench_send_status(id->rt, id->main, RUSM__BENCH_TAG_DONE, 0);
}

static rusm_next wait_stop(void) {
  rusm_filter f = rusm_filter_tag(RUSM__BENCH_TAG_STOP);
  return rusm_next_wait_for(&f, -1);
}

static rusm_next idle_init(rusm_proc *self, void **state) {
  mark_ready(*state);
  return wait_stop();
}

static rusm_next idle_handle(rusm_proc *self, void *state, rusm_msg *msg) {
  if (msg && rusm_msg_tag(msg) == RUSM__BENCH_TAG_STOP)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  return wait_stop();
}

static const rusm_stackless_ops idle_ops = {.init = idle_init,
                                            .handle = idle_handle};

static void idle_fn(rusm_proc *self, void *arg) {
  mark_ready(arg);
  rusm_filter f = rusm_filter_tag(RUSM__BENCH_TAG_STOP);
  rusm_msg *m = NULL;
  if (rusm_receive(self, &f, -1, &m) == 0)
    rusm_msg_free(m);
}

/*
 * Waits for the last process's DONE. A process that dies before parking
 * (a stackful one finding no stack: vm.max_map_count) would leave the
 * count short forever, so while waiting, check now and then that all N are
 * still alive. Returns 0, RUSM_ENOMEM when some died, or RUSM_ETIMEDOUT.
 */
static int await_parked(rusm__bench_waiter *w, rusm_rt *rt, uint64_t n) {
  int64_t give_up = rusm_now_ns() + (int64_t)RUSM_BENCH_WAIT_MS * 1000000;
  rusm_filter f = rusm_filter_tag(RUSM__BENCH_TAG_DONE);
  for (;;) {
    rusm_msg *m = NULL;
    int rc = rusm_receive(w->self, &f, 50, &m);
    if (rc == 0) {
      rusm_msg_free(m);
      return 0;
    }
    if (rc != RUSM_ETIMEDOUT)
      return rc;
    /* None of them exits before "stop"; the count includes this thread. */
    if (rusm_process_count(rt) < n + 1)
      return RUSM_ENOMEM;
    if (rusm_now_ns() > give_up)
      return RUSM_ETIMEDOUT;
  }
}

static int idle_common(const rusm_bench_env *env, rusm_bench_sample *out,
                       bool stackful) {
  uint64_t n = env->n;
  rusm_pid_t *pids = malloc(n * sizeof *pids);
  if (!pids)
    return RUSM_ENOMEM;
  memset(pids, 0, n * sizeof *pids); /* resident before the first reading */
  rusm__bench_waiter w = {0};
  int rc = rusm__bench_attach(env->rt, &w);
  if (rc < 0) {
    free(pids);
    return rc;
  }
  idle id = {.rt = env->rt, .main = w.pid, .n = n};
  atomic_init(&id.ready, 0);

  /* Hand back what earlier runs freed, so that their leftovers neither
   * inflate the first reading nor get reused for free by this run. */
  malloc_trim(0);
  uint64_t rss0 = rusm_bench_rss_bytes();
  int64_t t0 = rusm_now_ns();
  uint64_t spawned = 0;
  for (; spawned < n; spawned++) {
    rc = stackful
             ? rusm_spawn_stackful(env->rt, idle_fn, &id, NULL, &pids[spawned])
             : rusm_spawn_stackless(env->rt, &idle_ops, &id, NULL,
                                    &pids[spawned]);
    if (rc < 0)
      break;
  }
  if (rc == 0)
    rc = await_parked(&w, env->rt, n);
  int64_t t1 = rusm_now_ns();
  uint64_t rss1 = rusm_bench_rss_bytes();
  uint64_t maps = rusm_bench_map_count();

  for (uint64_t i = 0; i < spawned; i++)
    rusm_send(env->rt, pids[i], RUSM__BENCH_TAG_STOP, NULL, 0);
  int idle_rc = rusm_rt_wait_idle(env->rt, RUSM_BENCH_WAIT_MS);
  rusm__bench_detach(&w);
  free(pids);
  if (rc == 0)
    rc = idle_rc;
  if (rc < 0)
    return rc;
  out->ops = n;
  out->ns = t1 - t0;
  out->bytes_per_process =
      rss1 > rss0 ? (double)(rss1 - rss0) / (double)n : 0.0;
  out->mappings = maps;
  return 0;
}

static int idle_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  return idle_common(env, out, false);
}

static int idle_run_stackful(const rusm_bench_env *env,
                             rusm_bench_sample *out) {
  return idle_common(env, out, true);
}

const rusm_bench_scenario rusm__bench_idle_memory = {
    .name = "idle-memory",
    .summary = "N stackless processes parked in receive: resident bytes per "
               "process (ops/s = spawns/s)",
    .baseline_summary = NULL,
    .kind = RUSM_BENCH_MEMORY,
    .default_n = 1000000,
    .min_n = 1,
    .run = idle_run,
    .baseline = NULL,
};

const rusm_bench_scenario rusm__bench_idle_memory_stackful = {
    .name = "idle-memory-stackful",
    .summary = "N stackful processes (stack + guard page each) parked in "
               "receive: resident bytes per process and peak mappings",
    .baseline_summary = NULL,
    .kind = RUSM_BENCH_MEMORY,
    .default_n = 20000,
    .min_n = 1,
    .run = idle_run_stackful,
    .baseline = NULL,
};
