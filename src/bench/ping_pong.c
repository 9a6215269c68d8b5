/*
 * ping-pong: two stackless processes bounce one message N times; each round
 * trip's latency goes into a preallocated array (p50/p99 from a selection
 * afterwards). ops = N round trips.
 *
 * Ping spawns pong from its init (so both start on ping's scheduler, as an
 * Erlang process spawning its peer would) and runs the clock itself; the
 * attached main thread only waits for the final report, outside the loop.
 *
 * Baseline: two threads handing a turn back and forth through a mutex and
 * a condition variable each.
 */
#include <stdlib.h>
#include <string.h>

#include "bench/bench_int.h"

typedef struct pingpong {
  rusm_rt *rt;
  rusm_pid_t main;
  rusm_pid_t pong;
  uint64_t n;
  uint64_t done;   /* round trips completed */
  int64_t *lat;    /* n entries, ns */
  int64_t t_start; /* whole loop */
  int64_t t_end;
  int64_t t_sent; /* this round trip */
  int err;
} pingpong;

static rusm_next pong_handle(rusm_proc *self, void *state, rusm_msg *msg) {
  if (!msg)
    return rusm_next_wait();
  if (rusm_msg_tag(msg) == RUSM__BENCH_TAG_STOP)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  rusm_send(rusm_proc_rt(self), rusm_msg_from(msg), RUSM__BENCH_TAG_REPLY, NULL,
            0);
  return rusm_next_wait();
}

static const rusm_stackless_ops pong_ops = {.handle = pong_handle};

static rusm_next ping_finish(pingpong *pp) {
  if (pp->pong)
    rusm_send(pp->rt, pp->pong, RUSM__BENCH_TAG_STOP, NULL, 0);
  rusm__bench_send_status(pp->rt, pp->main, RUSM__BENCH_TAG_DONE, pp->err);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static rusm_next ping_wait(void) {
  rusm_filter f = rusm_filter_tag(RUSM__BENCH_TAG_REPLY);
  return rusm_next_wait_for(&f, -1);
}

static rusm_next ping_init(rusm_proc *self, void **state) {
  pingpong *pp = *state;
  int rc = rusm_spawn_stackless(pp->rt, &pong_ops, NULL, NULL, &pp->pong);
  if (rc < 0) {
    pp->err = rc;
    pp->pong = RUSM_PID_NONE;
    return ping_finish(pp);
  }
  pp->t_start = pp->t_sent = rusm_now_ns();
  rc = rusm_send(pp->rt, pp->pong, RUSM__BENCH_TAG_WORK, NULL, 0);
  if (rc < 0) {
    pp->err = rc;
    return ping_finish(pp);
  }
  return ping_wait();
}

static rusm_next ping_handle(rusm_proc *self, void *state, rusm_msg *msg) {
  pingpong *pp = state;
  if (!msg)
    return ping_wait();
  int64_t now = rusm_now_ns();
  pp->lat[pp->done++] = now - pp->t_sent;
  if (pp->done == pp->n) {
    pp->t_end = now;
    return ping_finish(pp);
  }
  pp->t_sent = now;
  int rc = rusm_send(pp->rt, pp->pong, RUSM__BENCH_TAG_WORK, NULL, 0);
  if (rc < 0) {
    pp->err = rc;
    return ping_finish(pp);
  }
  return ping_wait();
}

static const rusm_stackless_ops ping_ops = {.init = ping_init,
                                            .handle = ping_handle};

static void fill_latency(rusm_bench_sample *out, int64_t *lat, uint64_t n) {
  out->p50_us = (double)rusm_bench_percentile(lat, n, 50) / 1e3;
  out->p99_us = (double)rusm_bench_percentile(lat, n, 99) / 1e3;
}

static int pingpong_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  int64_t *lat = malloc(env->n * sizeof *lat);
  if (!lat)
    return RUSM_ENOMEM;
  memset(lat, 0, env->n * sizeof *lat); /* fault the pages in, untimed */
  rusm__bench_waiter w = {0};
  int rc = rusm__bench_attach(env->rt, &w);
  if (rc < 0) {
    free(lat);
    return rc;
  }
  pingpong pp = {.rt = env->rt, .main = w.pid, .n = env->n, .lat = lat};
  rusm_pid_t ping;
  rc = rusm_spawn_stackless(env->rt, &ping_ops, &pp, NULL, &ping);
  if (rc == 0)
    rc = rusm__bench_await(&w, RUSM__BENCH_TAG_DONE);
  if (rc == 0)
    rc = rusm_rt_wait_idle(env->rt, RUSM_BENCH_WAIT_MS);
  rusm__bench_detach(&w);
  if (rc == 0) {
    out->ops = pp.done;
    out->ns = pp.t_end - pp.t_start;
    fill_latency(out, lat, pp.done);
  }
  free(lat);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Baseline: two threads, mutex + condition variables                  */
/* ------------------------------------------------------------------ */

typedef struct handoff {
  pthread_mutex_t mu;
  pthread_cond_t to_ping, to_pong;
  int turn; /* 0: ping's, 1: pong's, 2: stop */
  uint64_t n;
  int64_t *lat;
  int64_t t_start, t_end;
  rusm__bench_gate gate;
} handoff;

static void *handoff_pong(void *arg) {
  handoff *h = arg;
  pthread_mutex_lock(&h->mu);
  for (;;) {
    while (h->turn == 0)
      pthread_cond_wait(&h->to_pong, &h->mu);
    if (h->turn == 2)
      break;
    h->turn = 0;
    pthread_cond_signal(&h->to_ping);
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

static void *handoff_ping(void *arg) {
  handoff *h = arg;
  rusm__bench_gate_wait(&h->gate);
  int64_t sent = rusm_now_ns();
  h->t_start = sent;
  pthread_mutex_lock(&h->mu);
  for (uint64_t i = 0; i < h->n; i++) {
    h->turn = 1;
    pthread_cond_signal(&h->to_pong);
    while (h->turn != 0)
      pthread_cond_wait(&h->to_ping, &h->mu);
    int64_t now = rusm_now_ns();
    h->lat[i] = now - sent;
    sent = now;
  }
  h->t_end = sent;
  h->turn = 2;
  pthread_cond_signal(&h->to_pong);
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

static int pingpong_baseline(const rusm_bench_env *env,
                             rusm_bench_sample *out) {
  handoff h = {.n = env->n, .turn = 0};
  h.lat = malloc(env->n * sizeof *h.lat);
  if (!h.lat)
    return RUSM_ENOMEM;
  memset(h.lat, 0, env->n * sizeof *h.lat);
  pthread_mutex_init(&h.mu, NULL);
  pthread_cond_init(&h.to_ping, NULL);
  pthread_cond_init(&h.to_pong, NULL);
  rusm__bench_gate_init(&h.gate);
  pthread_t a, b;
  int rc = 0;
  if (pthread_create(&b, NULL, handoff_pong, &h) != 0) {
    rc = RUSM_ESYS;
  } else {
    if (pthread_create(&a, NULL, handoff_ping, &h) != 0) {
      rc = RUSM_ESYS;
      pthread_mutex_lock(&h.mu);
      h.turn = 2;
      pthread_cond_signal(&h.to_pong);
      pthread_mutex_unlock(&h.mu);
    } else {
      rusm__bench_gate_open(&h.gate);
      pthread_join(a, NULL);
    }
    pthread_join(b, NULL);
  }
  if (rc == 0) {
    out->ops = h.n;
    out->ns = h.t_end - h.t_start;
    fill_latency(out, h.lat, h.n);
  }
  rusm__bench_gate_destroy(&h.gate);
  pthread_cond_destroy(&h.to_pong);
  pthread_cond_destroy(&h.to_ping);
  pthread_mutex_destroy(&h.mu);
  free(h.lat);
  return rc;
}

const rusm_bench_scenario rusm__bench_ping_pong = {
    .name = "ping-pong",
    .summary = "two stackless processes bounce one message N times; ops = "
               "round trips, p50/p99 per round trip",
    .baseline_summary = "two threads handing off through a mutex + "
                        "condition variable",
    .kind = RUSM_BENCH_LATENCY,
    .default_n = 100000,
    .min_n = 1,
    .run = pingpong_run,
    .baseline = pingpong_baseline,
};
