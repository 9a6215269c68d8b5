/*
 * wasm-idle-memory: N Wasm processes (guests/c/idle.c) parked in receive;
 * bytes_per_process = (RSS once all N are parked - RSS before the first
 * spawn) / N, RSS after the runtime, the Wasm host and the compiled module
 * exist (so per-process costs count: store, instance, the touched pages of
 * its linear memory and fiber stack, the process; the pool's untouched
 * reservations do not, as they are not resident). ops = N spawns, timed
 * from the first spawn until all N have reported in. No baseline.
 *
 * The host has a pool of 1,000 slots, as by default: past 1,000 live
 * guests the overflow tier takes the rest, so `--n 8000` is the
 * 8,000-processes-through-the-overflow-tier check (the run fails unless
 * all N are alive with an instance). Each guest sends the main thread one
 * READY before parking; the main thread takes them as they come (each is
 * freed before the second reading). The peak number of memory mappings is
 * reported too (vm.max_map_count is 65,530 here).
 */
#include "bench/bench_int.h"

#ifdef RUSM_HAVE_WASM

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../guests/c/protocol.h"

#define IDLE_POOL_SLOTS 1000

static int widle_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  uint64_t n = env->n;
  rusm_pid_t *pids = calloc(n, sizeof *pids);
  if (!pids)
    return RUSM_ENOMEM;
  memset(pids, 0, n * sizeof *pids); /* resident before the first reading */
  rusm_wasm_opts o;
  rusm_wasm_opts_init(&o);
  o.pool_slots = IDLE_POOL_SLOTS;
  rusm_wasm *w;
  rusm_wasm_module *m;
  int rc = rusm__bench_wasm_open(env->rt, &o, "idle", &w, &m);
  if (rc < 0) {
    free(pids);
    return rc;
  }
  rusm__bench_waiter wt = {0};
  rc = rusm__bench_attach(env->rt, &wt);
  if (rc < 0) {
    rusm__bench_wasm_close(w, m);
    free(pids);
    return rc;
  }

  malloc_trim(0);
  uint64_t rss0 = rusm_bench_rss_bytes();
  int64_t t0 = rusm_now_ns();
  uint64_t spawned = 0;
  for (; spawned < n; spawned++) {
    rc = rusm__bench_wasm_spawn(m, "main", &wt.pid, sizeof wt.pid, 0,
                                &pids[spawned]);
    if (rc < 0)
      break;
  }
  uint64_t ready = 0;
  while (rc == 0 && ready < n) {
    rusm_msg *msg = NULL;
    rc = rusm__bench_take(&wt, GUEST_TAG_READY, &msg);
    if (rc == 0) {
      rusm_msg_free(msg);
      ready++;
    }
  }
  int64_t t1 = rusm_now_ns();
  rusm_wasm_stats st;
  rusm_wasm_stats_get(w, &st);
  uint64_t rss1 = rusm_bench_rss_bytes();
  uint64_t maps = rusm_bench_map_count();
  if (rc == 0 && st.instances_live < n) {
    fprintf(stderr, "wasm-idle-memory: %llu of %llu guests have an instance\n",
            (unsigned long long)st.instances_live, (unsigned long long)n);
    rc = RUSM_ENOMEM;
  }

  for (uint64_t i = 0; i < spawned; i++)
    rusm_send(env->rt, pids[i], GUEST_TAG_STOP, NULL, 0);
  int idle_rc = rusm_rt_wait_idle(env->rt, RUSM_BENCH_WAIT_MS);
  rusm__bench_detach(&wt);
  rusm__bench_wasm_close(w, m);
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

const rusm_bench_scenario rusm__bench_wasm_idle_memory = {
    .name = "wasm-idle-memory",
    .summary = "N Wasm processes (guests/c/idle.c) parked in receive, pool of "
               "1,000 slots + overflow tier: resident bytes per process",
    .baseline_summary = NULL,
    .kind = RUSM_BENCH_MEMORY,
    .default_n = 5000,
    .min_n = 1,
    .run = widle_run,
    .baseline = NULL,
};

#else
typedef int rusm__bench_no_wasm_idle_memory;
#endif /* RUSM_HAVE_WASM */
