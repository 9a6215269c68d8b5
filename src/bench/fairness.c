/*
 * fairness: 2·K Wasm guests spin forever without calling the runtime
 * (guests/c/busy.c; K = schedulers), and a native probe pings a Wasm echo
 * process (guests/c/echo.c) once a millisecond; ops = N pings, and
 * p50/p99 are the probe's round trips. Only epoch preemption takes a
 * scheduler back from a spinning guest, so the round trip shows how long
 * a process waits for a turn when every scheduler is busy: about one
 * epoch tick (1 ms) per busy guest ahead of it in the run queue, at
 * worst. Target: p99 <= 20 ms.
 *
 * The probe is a stackful process on the schedulers (it competes for them
 * like any process): it sleeps 1 ms (a receive that nothing matches),
 * sends a ping, and waits for the echo, N times, then reports to the
 * attached main thread. The spinning guests are killed afterwards
 * (untimed). No baseline (there is no plain-threads way to preempt a
 * loop that never yields).
 */
#include "bench/bench_int.h"

#ifdef RUSM_HAVE_WASM

#include <stdlib.h>
#include <string.h>

#include "../../guests/c/protocol.h"

typedef struct probe {
  rusm_rt *rt;
  rusm_pid_t main, echo;
  uint64_t n, done;
  int64_t *lat;
  int64_t t0, t1;
  int err;
} probe;

static void probe_fn(rusm_proc *self, void *arg) {
  probe *p = arg;
  rusm_filter never = rusm_filter_tag(RUSM__BENCH_TAG_MORE);
  rusm_filter reply = rusm_filter_tag(GUEST_TAG_PING);
  p->t0 = rusm_now_ns();
  for (uint64_t i = 0; i < p->n && !p->err; i++) {
    rusm_msg *m = NULL;
    int rc = rusm_receive(self, &never, 1, &m); /* the 1 ms pause */
    if (rc == 0)
      rusm_msg_free(m);
    int64_t t = rusm_now_ns();
    rc = rusm_send(p->rt, p->echo, GUEST_TAG_PING, &i, sizeof i);
    if (rc == 0)
      rc = rusm_receive(self, &reply, RUSM_BENCH_WAIT_MS, &m);
    if (rc < 0) {
      p->err = rc;
      break;
    }
    rusm_msg_free(m);
    p->lat[p->done++] = rusm_now_ns() - t;
  }
  p->t1 = rusm_now_ns();
  rusm__bench_send_status(p->rt, p->main, RUSM__BENCH_TAG_DONE, p->err);
}

/* Waits for n GUEST_TAG_READY messages. */
static int await_ready(rusm__bench_waiter *wt, uint64_t n) {
  for (uint64_t i = 0; i < n; i++) {
    rusm_msg *m = NULL;
    int rc = rusm__bench_take(wt, GUEST_TAG_READY, &m);
    if (rc < 0)
      return rc;
    rusm_msg_free(m);
  }
  return 0;
}

static int fair_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  uint32_t k = rusm_rt_schedulers(env->rt);
  uint32_t nbusy = 2 * k;
  int64_t *lat = calloc(env->n, sizeof *lat); /* faulted in: calloc + use */
  rusm_pid_t *busy = calloc(nbusy, sizeof *busy);
  if (!lat || !busy) {
    free(lat);
    free(busy);
    return RUSM_ENOMEM;
  }
  memset(lat, 0, env->n * sizeof *lat);
  rusm_wasm *w = NULL;
  rusm_wasm_module *busy_m = NULL, *echo_m = NULL;
  rusm__bench_waiter wt = {0};
  int rc = rusm__bench_wasm_open(env->rt, NULL, "busy", &w, &busy_m);
  if (rc == 0) {
    /* A second module in the same host: echo. */
    char path[4096], err[256] = "";
    rc = rusm__bench_guest_path("echo", path, sizeof path);
    if (rc == 0)
      rc = rusm_wasm_load_file(w, NULL, path, &echo_m, err, sizeof err);
  }
  if (rc == 0)
    rc = rusm__bench_attach(env->rt, &wt);
  uint32_t spawned = 0;
  for (; rc == 0 && spawned < nbusy; spawned++)
    rc = rusm__bench_wasm_spawn(busy_m, "main", &wt.pid, sizeof wt.pid, 0,
                                &busy[spawned]);
  if (rc == 0)
    rc = await_ready(&wt, nbusy);
  rusm_pid_t echo = RUSM_PID_NONE;
  if (rc == 0)
    rc = rusm__bench_wasm_spawn(echo_m, "main", &wt.pid, sizeof wt.pid, 0,
                                &echo);
  if (rc == 0)
    rc = await_ready(&wt, 1);
  probe p = {
      .rt = env->rt, .main = wt.pid, .echo = echo, .n = env->n, .lat = lat};
  if (rc == 0) {
    rusm_pid_t probe_pid;
    rc = rusm_spawn_stackful(env->rt, probe_fn, &p, NULL, &probe_pid);
  }
  if (rc == 0)
    rc = rusm__bench_await(&wt, RUSM__BENCH_TAG_DONE);
  if (rc == 0)
    rc = p.err;

  for (uint32_t i = 0; i < spawned; i++)
    if (busy[i])
      rusm_kill(env->rt, busy[i]);
  if (echo)
    rusm_send(env->rt, echo, GUEST_TAG_STOP, NULL, 0);
  int idle_rc = rusm_rt_wait_idle(env->rt, RUSM_BENCH_WAIT_MS);
  if (wt.self)
    rusm__bench_detach(&wt);
  rusm_wasm_module_release(echo_m);
  if (w)
    rusm__bench_wasm_close(w, busy_m);
  if (rc == 0)
    rc = idle_rc;
  if (rc == 0) {
    out->ops = p.done;
    out->ns = p.t1 - p.t0;
    out->p50_us = (double)rusm_bench_percentile(lat, p.done, 50) / 1e3;
    out->p99_us = (double)rusm_bench_percentile(lat, p.done, 99) / 1e3;
  }
  free(busy);
  free(lat);
  return rc;
}

const rusm_bench_scenario rusm__bench_fairness = {
    .name = "fairness",
    .summary = "2 x schedulers Wasm guests spin forever; a native probe pings "
               "a Wasm echo every 1 ms: p50/p99 of its round trips",
    .baseline_summary = NULL,
    .kind = RUSM_BENCH_LATENCY,
    .default_n = 300,
    .min_n = 1,
    .run = fair_run,
    .baseline = NULL,
};

#else
typedef int rusm__bench_no_fairness;
#endif /* RUSM_HAVE_WASM */
