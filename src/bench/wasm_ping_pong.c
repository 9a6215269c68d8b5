/*
 * wasm-ping-pong: two Wasm processes bounce one message N times; ops = N
 * round trips, p50/p99 per round trip. The guests are guests/c/pingpong.c
 * (plain C on rusm.h): "ping" times each round trip with now_ns into an
 * array in its own memory and reports it, with its start and end times,
 * in one message after the loop; "pong" answers every ping. Both are
 * spawned from the attached main thread (pong first; ping gets its pid),
 * which only waits for the report.
 *
 * Each hop is a send from a host call, a parked `receive` resumed by the
 * scheduler (the guest's async call polled again), and a copy into guest
 * memory. No baseline: compare with the native ping-pong scenario (two
 * stackless processes) run at the same N.
 */
#include "bench/bench_int.h"

#ifdef RUSM_HAVE_WASM

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../guests/c/protocol.h"

static int wpp_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  rusm_wasm *w;
  rusm_wasm_module *m;
  int rc = rusm__bench_wasm_open(env->rt, NULL, "pingpong", &w, &m);
  if (rc < 0)
    return rc;
  rusm__bench_waiter wt = {0};
  rc = rusm__bench_attach(env->rt, &wt);
  if (rc < 0) {
    rusm__bench_wasm_close(w, m);
    return rc;
  }
  rusm_pid_t pong = RUSM_PID_NONE, ping;
  rc = rusm__bench_wasm_spawn(m, "pong", NULL, 0, 0, &pong);
  guest_ping_arg a = {
      .report_to = wt.pid, .n = env->n, .pong = pong, .want_latencies = 1};
  if (rc == 0)
    rc = rusm__bench_wasm_spawn(m, "ping", &a, sizeof a, 0, &ping);
  rusm_msg *msg = NULL;
  if (rc == 0)
    rc = rusm__bench_take(&wt, GUEST_TAG_REPORT, &msg);
  else if (pong)
    rusm_kill(env->rt, pong);
  guest_ping_report rep = {0};
  if (rc == 0) {
    size_t len = rusm_msg_len(msg);
    if (len >= sizeof rep) {
      memcpy(&rep, rusm_msg_data(msg), sizeof rep);
      if (rep.err == 0 && len != sizeof rep + rep.done * sizeof(int64_t))
        rc = RUSM_EINVAL;
    } else {
      rc = RUSM_EINVAL;
    }
  }
  if (rc == 0 && rep.err) {
    fprintf(stderr, "wasm-ping-pong: %s\n", rusm_strerror(rep.err));
    rc = rep.err;
  }
  if (rc == 0 && rep.done != env->n)
    rc = RUSM_EINVAL;
  if (rc == 0) {
    /* The latencies, copied out of the message (after the clock). */
    int64_t *lat = malloc(rep.done * sizeof *lat);
    if (!lat) {
      rc = RUSM_ENOMEM;
    } else {
      memcpy(lat, rusm_msg_data(msg) + sizeof rep, rep.done * sizeof *lat);
      out->p50_us = (double)rusm_bench_percentile(lat, rep.done, 50) / 1e3;
      out->p99_us = (double)rusm_bench_percentile(lat, rep.done, 99) / 1e3;
      free(lat);
    }
  }
  rusm_msg_free(msg);
  int idle_rc = rusm_rt_wait_idle(env->rt, RUSM_BENCH_WAIT_MS);
  rusm__bench_detach(&wt);
  rusm__bench_wasm_close(w, m);
  if (rc == 0)
    rc = idle_rc;
  if (rc < 0)
    return rc;
  out->ops = rep.done;
  out->ns = rep.t_end - rep.t_start;
  return 0;
}

const rusm_bench_scenario rusm__bench_wasm_ping_pong = {
    .name = "wasm-ping-pong",
    .summary = "two Wasm processes (guests/c/pingpong.c) bounce one message "
               "N times; ops = round trips, p50/p99 per round trip",
    .baseline_summary = NULL,
    .kind = RUSM_BENCH_LATENCY,
    .default_n = 100000,
    .min_n = 1,
    .run = wpp_run,
    .baseline = NULL,
};

#else
typedef int rusm__bench_no_wasm_ping_pong;
#endif /* RUSM_HAVE_WASM */
