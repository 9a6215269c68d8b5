/*
 * timers: N pending timers under load. The main thread arms N
 * rusm_send_after timers (delays spread over 500..1500 ms, each message
 * carrying its own deadline) while 2 busy processes per scheduler burn CPU
 * through the runtime; a receiver process records how late each message
 * arrived (arrival - deadline). Reported: p50_us / p99_us of that
 * lateness, and bytes per pending timer (RSS with all N armed, before the
 * first fires, minus RSS before arming, over N). ops = N timers fired,
 * timed from the first arm to the last arrival. No baseline.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_int.h"

#define TIMER_TAG UINT64_C(0x62656e6300000010)
#define SPREAD_MS 1000
#define FIRST_MS 500

typedef struct tload {
  rusm_rt *rt;
  rusm_pid_t main;
  uint64_t n, got;
  int64_t *late; /* ns, one per timer, receiver-only */
  int64_t t_last;
  _Atomic bool stop;
} tload;

static rusm_next recv_handle(rusm_proc *self, void *state, rusm_msg *m) {
  tload *t = state;
  if (!m || rusm_msg_tag(m) != TIMER_TAG || rusm_msg_len(m) != 8)
    return rusm_next_wait();
  int64_t now = rusm_now_ns(), deadline;
  memcpy(&deadline, rusm_msg_data(m), sizeof deadline);
  if (t->got < t->n)
    t->late[t->got] = now - deadline;
  if (++t->got == t->n) {
    t->t_last = now;
    rusm__bench_send_status(t->rt, t->main, RUSM__BENCH_TAG_DONE, 0);
    return rusm_next_stop(RUSM_REASON_NORMAL);
  }
  return rusm_next_wait();
}

static const rusm_stackless_ops recv_ops = {.handle = recv_handle};

/* Load: CPU work charged to the runtime, so the schedulers preempt it. */
static void busy_fn(rusm_proc *self, void *arg) {
  tload *t = arg;
  volatile uint64_t x = 0;
  while (!atomic_load_explicit(&t->stop, memory_order_relaxed)) {
    for (int i = 0; i < 2000; i++)
      x += (uint64_t)i;
    rusm_consume(self, 100);
  }
  (void)x;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static int timers_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  tload t = {.rt = env->rt, .n = env->n};
  t.late = calloc(env->n, sizeof *t.late);
  int64_t *delays = malloc(env->n * sizeof *delays);
  if (!t.late || !delays) {
    free(t.late);
    free(delays);
    return RUSM_ENOMEM;
  }
  memset(t.late, 0, env->n * sizeof *t.late); /* fault it in: not timers */
  uint64_t seed = 0x9e3779b97f4a7c15u;
  for (uint64_t i = 0; i < env->n; i++) {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    delays[i] = FIRST_MS + (int64_t)(seed % SPREAD_MS);
  }
  rusm__bench_waiter w = {0};
  int rc = rusm__bench_attach(env->rt, &w);
  if (rc < 0) {
    free(t.late);
    free(delays);
    return rc;
  }
  t.main = w.pid;
  rusm_pid_t recv;
  rc = rusm_spawn_stackless(env->rt, &recv_ops, &t, NULL, &recv);
  uint32_t nbusy = 2 * rusm_rt_schedulers(env->rt);
  for (uint32_t i = 0; rc == 0 && i < nbusy; i++)
    rc = rusm_spawn_stackful(env->rt, busy_fn, &t, NULL, NULL);
  uint64_t rss0 = rusm_bench_rss_bytes();
  int64_t t0 = rusm_now_ns();
  for (uint64_t i = 0; rc == 0 && i < env->n; i++) {
    int64_t deadline = rusm_now_ns() + delays[i] * 1000000;
    rc = rusm_send_after(env->rt, delays[i], recv, TIMER_TAG, &deadline,
                         sizeof deadline, NULL);
  }
  uint64_t rss1 = rusm_bench_rss_bytes();
  bool all_pending = rusm_now_ns() - t0 < (int64_t)FIRST_MS * 1000000;
  if (rc == 0)
    rc = rusm__bench_await(&w, RUSM__BENCH_TAG_DONE);
  atomic_store(&t.stop, true);
  if (rc != 0)
    rusm_kill(env->rt, recv);
  int idle = rusm_rt_wait_idle(env->rt, RUSM_BENCH_WAIT_MS);
  rusm__bench_detach(&w);
  if (rc == 0)
    rc = idle;
  if (rc == 0) {
    qsort(t.late, t.n, sizeof *t.late, cmp_i64);
    out->ops = t.n;
    out->ns = t.t_last - t0;
    uint64_t i50 = t.n / 2, i99 = (t.n * 99) / 100;
    out->p50_us = (double)t.late[i50] / 1000.0;
    out->p99_us = (double)t.late[i99] / 1000.0;
    /* arming took longer than the first delay: some had fired already,
     * and the figure would understate; report it only when it is clean */
    out->bytes_per_process =
        all_pending && rss1 > rss0 ? (double)(rss1 - rss0) / (double)t.n : 0.0;
    out->mappings = rusm_bench_map_count();
  }
  free(t.late);
  free(delays);
  return rc;
}

const rusm_bench_scenario rusm__bench_timers = {
    .name = "timers",
    .summary = "N pending send_after timers under load: lateness p50/p99 "
               "and resident bytes per pending timer",
    .baseline_summary = NULL,
    .kind = RUSM_BENCH_LATENCY,
    .default_n = 1000000,
    .min_n = 1,
    .run = timers_run,
    .baseline = NULL,
    .memory_per = "timer",
};
