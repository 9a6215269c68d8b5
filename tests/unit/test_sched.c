// ctest-labels: concurrent
/*
 * Unit tests: schedulers — fairness (budget, no starvation on one
 * scheduler), work stealing, timers, spawn storms and trees, kills racing
 * with running processes, scheduler metrics.
 */
#include "support.h"

#include <pthread.h>
#include <unistd.h>

static void test_default_schedulers(void **state) {
  (void)state;
  rusm_rt *rt = NULL;
  assert_int_equal(rusm_rt_create(NULL, &rt), 0);
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  uint32_t n = rusm_rt_schedulers(rt);
  assert_true(n >= 1);
  if (online > 0)
    assert_true(n <= (uint32_t)online);
  rusm_metrics m;
  memset(&m, 0, sizeof m);
  rusm_metrics_snapshot(rt, &m);
  assert_int_equal(m.schedulers, n);
  rusm_rt_destroy(rt);
}

/* ------------------------------------------------------------------ */
/* Fairness on one scheduler                                           */
/* ------------------------------------------------------------------ */

#define TAG_TICK 9

typedef struct pp_shared {
  rusm_pid_t parent, peer;
  atomic_uint_fast64_t rounds;
} pp_shared;

/* One side of a ping-pong that never stops by itself. The peer is a
 * t_waiter (PING -> PONG). */
static rusm_next pp_init(rusm_proc *self, void **state) {
  pp_shared *s = *state;
  t_send(rusm_proc_rt(self), s->peer, T_TAG_PING, NULL, 0);
  return rusm_next_wait();
}

static rusm_next pp_handle(rusm_proc *self, void *state, rusm_msg *m) {
  pp_shared *s = state;
  if (m == NULL || rusm_msg_tag(m) == T_TAG_STOP)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  if (rusm_msg_tag(m) == T_TAG_PONG) {
    if (atomic_fetch_add_explicit(&s->rounds, 1, memory_order_relaxed) + 1 ==
        1000)
      t_send(rusm_proc_rt(self), s->parent, T_TAG_GO, NULL, 0);
    t_send(rusm_proc_rt(self), s->peer, T_TAG_PING, NULL, 0);
  }
  return rusm_next_wait();
}

static void pp_terminate(rusm_proc *self, void *state, const rusm_reason *why) {
  pp_shared *s = state;
  t_note_send(rusm_proc_rt(self), s->parent, rusm_self(self), why, 0);
}

static const rusm_stackless_ops pp_ops = {pp_init, pp_handle, pp_terminate};

typedef struct counter_arg {
  rusm_pid_t parent;
  uint64_t n, target;
  int self_messages; /* 0: poll with wait_for(timeout 0) */
} counter_arg;

static rusm_next counter_next(counter_arg *a) {
  rusm_filter f = rusm_filter_tag(TAG_TICK);
  if (a->self_messages)
    return rusm_next_wait_for(&f, -1);
  return rusm_next_wait_for(&f, 0);
}

static rusm_next counter_init(rusm_proc *self, void **state) {
  counter_arg *a = *state;
  if (a->self_messages)
    t_send(rusm_proc_rt(self), rusm_self(self), TAG_TICK, NULL, 0);
  return counter_next(a);
}

static rusm_next counter_handle(rusm_proc *self, void *state, rusm_msg *m) {
  counter_arg *a = state;
  rusm_rt *rt = rusm_proc_rt(self);
  if (a->self_messages)
    T_CHECK(m != NULL && rusm_msg_tag(m) == TAG_TICK);
  else
    T_CHECK(m == NULL); /* nothing matches: each poll times out at once */
  if (++a->n == a->target) {
    t_send_u64(rt, a->parent, T_TAG_DONE, a->n);
    return rusm_next_stop(RUSM_REASON_NORMAL);
  }
  if (a->self_messages)
    t_send(rt, rusm_self(self), TAG_TICK, NULL, 0);
  return counter_next(a);
}

static const rusm_stackless_ops counter_ops = {counter_init, counter_handle,
                                               NULL};

/* Two stackless processes ping-ponging flat out on one scheduler do not
 * starve a third one that keeps itself runnable. */
static void pingpong_vs_counter(int self_messages) {
  t_env e;
  t_start(&e, 1);
  assert_int_equal(rusm_rt_schedulers(e.rt), 1);
  pp_shared s;
  memset(&s, 0, sizeof s);
  s.parent = e.pid;
  s.peer = t_spawn_waiter(&e);
  rusm_pid_t a;
  assert_int_equal(rusm_spawn_stackless(e.rt, &pp_ops, &s, NULL, &a), 0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_GO)); /* the ping-pong is going */

  counter_arg c = {e.pid, 0, T_SCALE(100000, 10000), self_messages};
  rusm_pid_t cp;
  assert_int_equal(rusm_spawn_stackless(e.rt, &counter_ops, &c, NULL, &cp), 0);
  assert_int_equal(t_recv_u64(&e, T_TAG_DONE), c.target);
  /* Finished while the ping-pong still runs. */
  assert_true(rusm_is_alive(e.rt, a));
  assert_true(rusm_is_alive(e.rt, s.peer));
  assert_true(atomic_load(&s.rounds) > 1000);

  t_send(e.rt, a, T_TAG_STOP, NULL, 0);
  t_send_stop(e.rt, s.peer, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, a);
  t_wait_note(&e, s.peer);
  t_wait_idle(&e);
  t_stop(&e);
}

static void test_pingpong_does_not_starve_poller(void **state) {
  (void)state;
  pingpong_vs_counter(0);
}

static void test_pingpong_does_not_starve_self_sender(void **state) {
  (void)state;
  pingpong_vs_counter(1);
}

/* A stackful body sending to itself forever, never blocking. */
static void hog_body(rusm_proc *self, void *arg) {
  rusm_pid_t parent = (rusm_pid_t)(uintptr_t)arg;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_pid_t me = rusm_self(self);
  t_notify_on_exit(self, parent, 0);
  t_send(rt, parent, T_TAG_READY, NULL, 0);
  for (;;) {
    (void)rusm_send(rt, me, TAG_TICK, NULL, 0);
    rusm_msg *m = NULL;
    if (rusm_try_receive(self, NULL, &m) == 0)
      rusm_msg_free(m);
  }
}

static void test_budget_preempts_stackful_hog(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 1);
  rusm_pid_t w = t_spawn_waiter(&e);
  t_ping(&e, w);
  rusm_pid_t hog;
  assert_int_equal(
      rusm_spawn_stackful(e.rt, hog_body, (void *)(uintptr_t)e.pid, NULL, &hog),
      0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_READY));
  /* The waiter shares the only scheduler with the hog. */
  for (int i = 0; i < 20; i++)
    t_ping(&e, w);
  rusm_pid_t late = t_spawn_waiter(&e);
  t_ping(&e, late);
  rusm_proc_info info;
  assert_int_equal(rusm_proc_info_get(e.rt, hog, &info), 0);
  assert_true(info.reductions > 0);
  assert_int_equal(rusm_kill(e.rt, hog), 0);
  t_wait_note(&e, hog);
  t_send_stop(e.rt, w, RUSM_EXIT_NORMAL, NULL);
  t_send_stop(e.rt, late, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, w);
  t_wait_note(&e, late);
  t_wait_idle(&e);
  t_stop(&e);
}

/* Long native work charging reductions with rusm_consume is preempted at
 * its next runtime call. It stops only when told, and only a process that
 * shares its scheduler can tell it. */
static void consumer_body(rusm_proc *self, void *arg) {
  rusm_pid_t parent = (rusm_pid_t)(uintptr_t)arg;
  rusm_filter stop = rusm_filter_tag(T_TAG_STOP);
  t_send(rusm_proc_rt(self), parent, T_TAG_READY, NULL, 0);
  int64_t guard = rusm_now_ns() + (int64_t)T_GUARD_MS * 1000000;
  for (;;) {
    rusm_consume(self, 500);
    rusm_msg *m = NULL;
    if (rusm_try_receive(self, &stop, &m) == 0) {
      rusm_msg_free(m);
      break;
    }
    if (rusm_now_ns() > guard) {
      T_CHECK(!"never told to stop");
      break;
    }
  }
  t_send(rusm_proc_rt(self), parent, T_TAG_DONE, NULL, 0);
}

/* Relays a GO to the pid in its payload as STOP. */
static rusm_next relay_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)state;
  if (m == NULL || rusm_msg_tag(m) != T_TAG_GO)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  t_send(rusm_proc_rt(self), (rusm_pid_t)t_msg_u64(m), T_TAG_STOP, NULL, 0);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops relay_ops = {NULL, relay_handle, NULL};

static void test_consume_then_runtime_call_preempts(void **state) {
  (void)state;
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = 1;
  o.budget = 100; /* small: many preemptions */
  t_env e;
  t_start_opts(&e, &o);
  rusm_pid_t relay, busy;
  assert_int_equal(rusm_spawn_stackless(e.rt, &relay_ops, NULL, NULL, &relay),
                   0);
  assert_int_equal(rusm_spawn_stackful(e.rt, consumer_body,
                                       (void *)(uintptr_t)e.pid, NULL, &busy),
                   0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_READY));
  t_send_u64(e.rt, relay, T_TAG_GO, busy);
  rusm_msg_free(t_recv_tag(&e, T_TAG_DONE));
  t_wait_idle(&e);
  t_stop(&e);
}

/* A tiny budget still makes progress. */
static void test_tiny_budget(void **state) {
  (void)state;
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = 1;
  o.budget = 1;
  t_env e;
  t_start_opts(&e, &o);
  rusm_pid_t a = t_spawn_waiter(&e), b = t_spawn_stackful_waiter(&e);
  for (int i = 0; i < 200; i++) {
    t_ping(&e, a);
    t_ping(&e, b);
  }
  t_send_stop(e.rt, a, RUSM_EXIT_NORMAL, NULL);
  t_send_stop(e.rt, b, RUSM_EXIT_NORMAL, NULL);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Work stealing                                                       */
/* ------------------------------------------------------------------ */

typedef struct steal_shared {
  rusm_pid_t parent;
  atomic_uint mask; /* bit per scheduler a busy process ran on */
  int64_t deadline;
} steal_shared;

static void busy_body(rusm_proc *self, void *arg) {
  steal_shared *s = arg;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_pid_t me = rusm_self(self);
  while (rusm_now_ns() < s->deadline) {
    rusm_proc_info info;
    if (rusm_proc_info_get(rt, me, &info) == 0 && info.scheduler < 32)
      atomic_fetch_or(&s->mask, 1u << info.scheduler);
    if (atomic_load(&s->mask) == 3u)
      break;
    volatile uint64_t x = 0;
    for (int i = 0; i < 20000; i++) /* CPU-busy */
      x += (uint64_t)i;
    (void)x;
    rusm_yield(self);
  }
  t_send(rt, s->parent, T_TAG_DONE, NULL, 0);
}

/* Spawns the busy processes from one scheduler (opts NULL: the caller's). */
static rusm_next steal_spawner_init(rusm_proc *self, void **state) {
  for (int i = 0; i < 16; i++) {
    rusm_pid_t p;
    T_CHECK(rusm_spawn_stackful(rusm_proc_rt(self), busy_body, *state, NULL,
                                &p) == 0);
  }
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops steal_spawner_ops = {steal_spawner_init,
                                                     t_unexpected_handle, NULL};

static void test_work_stealing(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 2);
  if (rusm_rt_schedulers(e.rt) < 2) {
    t_stop(&e);
    skip();
  }
  rusm_metrics m0 = *t_metrics(e.rt);
  steal_shared s;
  memset(&s, 0, sizeof s);
  s.parent = e.pid;
  s.deadline = rusm_now_ns() + (int64_t)T_GUARD_MS * 1000000;
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.scheduler = 0;
  rusm_pid_t sp;
  assert_int_equal(rusm_spawn_stackless(e.rt, &steal_spawner_ops, &s, &o, &sp),
                   0);
  for (int i = 0; i < 16; i++)
    rusm_msg_free(t_recv_tag(&e, T_TAG_DONE));
  t_wait_idle(&e);
  rusm_metrics *m1 = t_metrics(e.rt);
  uint64_t steals = m1->steals - m0.steals;
  uint64_t per_sched = 0;
  for (uint32_t i = 0; i < m1->schedulers; i++)
    per_sched += m1->sched[i].steals;
  assert_int_equal(per_sched, m1->steals);
  if (atomic_load(&s.mask) != 3u && steals == 0)
    fail_msg("busy processes ran only on scheduler mask %#x, no steals",
             atomic_load(&s.mask));
  t_stop(&e);
}

/* Explicit placement: each scheduler index is accepted. */
static void test_spawn_on_each_scheduler(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 2);
  uint32_t n = rusm_rt_schedulers(e.rt);
  for (uint32_t i = 0; i < n; i++) {
    rusm_spawn_opts o;
    rusm_spawn_opts_init(&o);
    o.scheduler = (int32_t)i;
    rusm_pid_t p;
    assert_int_equal(rusm_spawn_stackless(e.rt, &t_waiter_ops,
                                          (void *)(uintptr_t)e.pid, &o, &p),
                     0);
    t_ping(&e, p);
    t_send_stop(e.rt, p, RUSM_EXIT_NORMAL, NULL);
    t_wait_note(&e, p);
    assert_int_equal(rusm_spawn_stackful(e.rt, t_stackful_waiter,
                                         (void *)(uintptr_t)e.pid, &o, &p),
                     0);
    t_ping(&e, p);
    t_send_stop(e.rt, p, RUSM_EXIT_NORMAL, NULL);
    t_wait_note(&e, p);
  }
  t_wait_idle(&e);
  t_stop(&e);
}

/* A process stuck in native code (no runtime calls) holds its scheduler;
 * a process queued behind it is taken by an idle scheduler. */
typedef struct stuck_arg {
  rusm_pid_t parent;
  atomic_int flag;
  int64_t deadline;
} stuck_arg;

static rusm_next spinner_init(rusm_proc *self, void **state) {
  stuck_arg *a = *state;
  t_send(rusm_proc_rt(self), a->parent, T_TAG_READY, NULL, 0);
  while (!atomic_load(&a->flag) && rusm_now_ns() < a->deadline)
    sched_yield(); /* native work: calls nothing in the runtime */
  T_CHECK(atomic_load(&a->flag));
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops spinner_ops = {spinner_init,
                                               t_unexpected_handle, NULL};

static rusm_next setter_init(rusm_proc *self, void **state) {
  stuck_arg *a = *state;
  atomic_store(&a->flag, 1);
  t_send(rusm_proc_rt(self), a->parent, T_TAG_DONE, NULL, 0);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops setter_ops = {setter_init, t_unexpected_handle,
                                              NULL};

static void test_stuck_scheduler_gives_away_its_queue(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 2);
  stuck_arg a;
  memset(&a, 0, sizeof a);
  a.parent = e.pid;
  a.deadline = rusm_now_ns() + (int64_t)T_GUARD_MS * 1000000;
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.scheduler = 0;
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &spinner_ops, &a, &o, &p), 0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_READY)); /* it is spinning now */
  rusm_proc_info info;
  assert_int_equal(rusm_proc_info_get(e.rt, p, &info), 0);
  o.scheduler = (int32_t)info.scheduler; /* queue behind it */
  assert_int_equal(rusm_spawn_stackless(e.rt, &setter_ops, &a, &o, &p), 0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_DONE));
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Cross-scheduler messaging                                           */
/* ------------------------------------------------------------------ */

typedef struct xpp_arg {
  rusm_pid_t parent, peer;
  int rounds;
} xpp_arg;

static void xpp_body(rusm_proc *self, void *arg) {
  xpp_arg *a = arg;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_filter pong = rusm_filter_tag(T_TAG_PONG);
  int bad = 0;
  for (int i = 0; i < a->rounds; i++) {
    uint64_t v = (uint64_t)i;
    t_send(rt, a->peer, T_TAG_PING, &v, sizeof v);
    rusm_msg *m = NULL;
    if (rusm_receive(self, &pong, T_GUARD_MS, &m) != 0) {
      bad++;
      break;
    }
    bad += t_msg_u64(m) != v;
    rusm_msg_free(m);
  }
  t_send_u64(rt, a->parent, T_TAG_DONE, (uint64_t)bad);
}

static void test_cross_scheduler_pingpong(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 2);
  uint32_t n = rusm_rt_schedulers(e.rt);
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.scheduler = (int32_t)(n - 1);
  rusm_pid_t peer, sl_peer;
  assert_int_equal(rusm_spawn_stackful(e.rt, t_stackful_waiter,
                                       (void *)(uintptr_t)e.pid, &o, &peer),
                   0);
  assert_int_equal(rusm_spawn_stackless(e.rt, &t_waiter_ops,
                                        (void *)(uintptr_t)e.pid, &o, &sl_peer),
                   0);
  o.scheduler = 0;
  xpp_arg a = {e.pid, peer, T_SCALE(20000, 2000)};
  xpp_arg b = {e.pid, sl_peer, T_SCALE(20000, 2000)};
  rusm_pid_t pa, pb;
  assert_int_equal(rusm_spawn_stackful(e.rt, xpp_body, &a, &o, &pa), 0);
  assert_int_equal(rusm_spawn_stackful(e.rt, xpp_body, &b, &o, &pb), 0);
  assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 0);
  assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 0);
  t_send_stop(e.rt, peer, RUSM_EXIT_NORMAL, NULL);
  t_send_stop(e.rt, sl_peer, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, peer);
  t_wait_note(&e, sl_peer);
  t_wait_idle(&e);
  t_stop(&e);
}

/* One process waking two parked ones on its own scheduler: both run. */
typedef struct bcast_state {
  rusm_pid_t parent, w[2];
  int pongs;
} bcast_state;

static rusm_next bcast_handle(rusm_proc *self, void *state, rusm_msg *m) {
  bcast_state *b = state;
  rusm_rt *rt = rusm_proc_rt(self);
  if (m == NULL || rusm_msg_tag(m) == T_TAG_STOP)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  if (rusm_msg_tag(m) == T_TAG_GO) {
    b->pongs = 0;
    for (int i = 0; i < 2; i++)
      t_send_u64(rt, b->w[i], T_TAG_PING, (uint64_t)i);
  } else if (rusm_msg_tag(m) == T_TAG_PONG && ++b->pongs == 2) {
    t_send(rt, b->parent, T_TAG_DONE, NULL, 0);
  }
  return rusm_next_wait();
}

static const rusm_stackless_ops bcast_ops = {NULL, bcast_handle, NULL};

static void test_wake_two_from_one_process(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 1);
  bcast_state b;
  memset(&b, 0, sizeof b);
  b.parent = e.pid;
  b.w[0] = t_spawn_waiter(&e);
  b.w[1] = t_spawn_stackful_waiter(&e);
  t_ping(&e, b.w[0]);
  t_ping(&e, b.w[1]);
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &bcast_ops, &b, NULL, &p), 0);
  for (int i = 0; i < 100; i++) {
    t_send(e.rt, p, T_TAG_GO, NULL, 0);
    rusm_msg_free(t_recv_tag(&e, T_TAG_DONE));
  }
  t_send(e.rt, p, T_TAG_STOP, NULL, 0);
  for (int i = 0; i < 2; i++) {
    t_send_stop(e.rt, b.w[i], RUSM_EXIT_NORMAL, NULL);
    t_wait_note(&e, b.w[i]);
  }
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Timers                                                              */
/* ------------------------------------------------------------------ */

typedef struct timer_arg {
  rusm_pid_t parent;
  int64_t timeout_ms;
  int64_t start;
} timer_arg;

static rusm_next timer_init(rusm_proc *self, void **state) {
  (void)self;
  timer_arg *a = *state;
  a->start = rusm_now_ns();
  rusm_filter f = rusm_filter_tag(0x4242);
  return rusm_next_wait_for(&f, a->timeout_ms);
}

static rusm_next timer_handle(rusm_proc *self, void *state, rusm_msg *m) {
  timer_arg *a = state;
  T_CHECK(m == NULL);
  int64_t elapsed = rusm_now_ns() - a->start;
  T_CHECK(elapsed >= a->timeout_ms * 1000000); /* never early */
  t_send_u64(rusm_proc_rt(self), a->parent, T_TAG_DONE, (uint64_t)elapsed);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops timer_ops = {timer_init, timer_handle, NULL};

/* Many timers with spread deadlines (several wheel levels) fire, none
 * early, on every scheduler; long ones get cancelled by a kill. */
static void test_many_timers(void **state) {
  (void)state;
  enum { N = T_SCALE(300, 60), LONG = 20 };
  t_env e;
  t_start(&e, 2);
  static timer_arg args[N + LONG];
  uint64_t seed = 12345;
  rusm_pid_t longs[LONG];
  for (int i = 0; i < N + LONG; i++) {
    seed = seed * 6364136223846793005u + 1442695040888963407u;
    args[i].parent = e.pid;
    if (i < N)
      args[i].timeout_ms = i % 10 == 0 ? 70 + (int64_t)(seed >> 60) * 10
                                       : 1 + (int64_t)((seed >> 33) % 40);
    else
      args[i].timeout_ms = (int64_t)(i - N + 1) * 3600 * 1000; /* hours */
    rusm_pid_t p;
    assert_int_equal(rusm_spawn_stackless(e.rt, &timer_ops, &args[i], NULL, &p),
                     0);
    if (i >= N)
      longs[i - N] = p;
  }
  for (int i = 0; i < N; i++)
    rusm_msg_free(t_recv_tag(&e, T_TAG_DONE));
  for (int i = 0; i < LONG; i++)
    assert_int_equal(rusm_kill(e.rt, longs[i]), 0);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Spawn storm and tree                                                */
/* ------------------------------------------------------------------ */

static rusm_next quick_init(rusm_proc *self, void **state) {
  (void)self;
  (void)state;
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops quick_ops = {quick_init, t_unexpected_handle,
                                             NULL};

static void test_spawn_storm(void **state) {
  (void)state;
  enum { N = T_SCALE(20000, 2000) };
  t_env e;
  t_start(&e, 0);
  rusm_metrics m0 = *t_metrics(e.rt);
  for (int i = 0; i < N; i++) {
    rusm_pid_t p;
    assert_int_equal(rusm_spawn_stackless(e.rt, &quick_ops, NULL, NULL, &p), 0);
  }
  t_wait_idle(&e);
  rusm_metrics *m1 = t_metrics(e.rt);
  assert_int_equal(m1->spawned - m0.spawned, N);
  assert_int_equal(m1->exited - m0.exited, N);
  assert_int_equal(
      m1->exited_by[RUSM_EXIT_NORMAL] - m0.exited_by[RUSM_EXIT_NORMAL], N);
  assert_int_equal(m1->live, m0.live);
  assert_int_equal(rusm_process_count(e.rt), 1);
  t_stop(&e);
}

static rusm_pid_t g_tree_parent;

/* state: remaining depth. Leaves report; inner nodes spawn two children
 * and stop at once. */
static rusm_next tree_init(rusm_proc *self, void **state);

static const rusm_stackless_ops tree_ops = {tree_init, t_unexpected_handle,
                                            NULL};

static rusm_next tree_init(rusm_proc *self, void **state) {
  uintptr_t depth = (uintptr_t)*state;
  rusm_rt *rt = rusm_proc_rt(self);
  if (depth == 0) {
    t_send(rt, g_tree_parent, T_TAG_DONE, NULL, 0);
  } else {
    for (int i = 0; i < 2; i++) {
      rusm_pid_t p;
      T_CHECK(rusm_spawn_stackless(rt, &tree_ops, (void *)(depth - 1), NULL,
                                   &p) == 0);
    }
  }
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static void test_spawn_tree(void **state) {
  (void)state;
  enum { DEPTH = T_SCALE(10, 7) };
  t_env e;
  t_start(&e, 0);
  g_tree_parent = e.pid;
  rusm_metrics m0 = *t_metrics(e.rt);
  rusm_pid_t root;
  assert_int_equal(rusm_spawn_stackless(e.rt, &tree_ops,
                                        (void *)(uintptr_t)DEPTH, NULL, &root),
                   0);
  for (int i = 0; i < (1 << DEPTH); i++)
    rusm_msg_free(t_recv_tag(&e, T_TAG_DONE));
  t_wait_idle(&e);
  assert_int_equal(t_metrics(e.rt)->spawned - m0.spawned, (2 << DEPTH) - 1);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Kills racing with running processes                                 */
/* ------------------------------------------------------------------ */

enum { RING = 64 };

/* A ring member: SETUP carries the next pid; TOKEN is passed on. */
#define TAG_SETUP 20
#define TAG_TOKEN 21

typedef struct ring_state {
  rusm_pid_t parent, next;
} ring_state;

static rusm_next ring_handle(rusm_proc *self, void *state, rusm_msg *m) {
  ring_state *s = state;
  if (m == NULL)
    return rusm_next_wait();
  if (rusm_msg_tag(m) == TAG_SETUP) {
    s->next = (rusm_pid_t)t_msg_u64(m);
  } else if (rusm_msg_tag(m) == TAG_TOKEN && s->next != RUSM_PID_NONE) {
    /* The next one may be dead already: the send is still fine. */
    int rc = rusm_send(rusm_proc_rt(self), s->next, TAG_TOKEN, rusm_msg_data(m),
                       rusm_msg_len(m));
    T_CHECK(rc == 0);
  }
  return rusm_next_wait();
}

static void ring_terminate(rusm_proc *self, void *state,
                           const rusm_reason *why) {
  ring_state *s = state;
  t_note_send(rusm_proc_rt(self), s->parent, rusm_self(self), why, 0);
}

static const rusm_stackless_ops ring_ops = {NULL, ring_handle, ring_terminate};

typedef struct killer_arg {
  rusm_rt *rt;
  rusm_pid_t *pids;
  int first, step;
} killer_arg;

static void *killer_thread(void *p) {
  killer_arg *k = p;
  for (int i = k->first; i < RING; i += k->step)
    T_CHECK(rusm_kill(k->rt, k->pids[i]) == 0);
  return NULL;
}

static void test_kill_storm_on_busy_ring(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  static ring_state st[RING];
  static rusm_pid_t pids[RING];
  for (int i = 0; i < RING; i++) {
    st[i].parent = e.pid;
    st[i].next = RUSM_PID_NONE;
    assert_int_equal(
        rusm_spawn_stackless(e.rt, &ring_ops, &st[i], NULL, &pids[i]), 0);
  }
  for (int i = 0; i < RING; i++)
    t_send_u64(e.rt, pids[i], TAG_SETUP, pids[(i + 1) % RING]);
  for (int i = 0; i < 8; i++)
    t_send_u64(e.rt, pids[i * (RING / 8)], TAG_TOKEN, (uint64_t)i);
  killer_arg k[2] = {{e.rt, pids, 0, 2}, {e.rt, pids, 1, 2}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&th[i], NULL, killer_thread, &k[i]), 0);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < RING; i++)
    assert_int_equal(t_wait_note(&e, pids[i]).code, RUSM_EXIT_KILLED);
  t_wait_idle(&e);
  assert_int_equal(rusm_process_count(e.rt), 1);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Scheduler metrics                                                   */
/* ------------------------------------------------------------------ */

static void test_sched_metrics(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 2);
  rusm_pid_t w = t_spawn_waiter(&e);
  for (int i = 0; i < 100; i++)
    t_ping(&e, w);
  t_send_stop(e.rt, w, RUSM_EXIT_NORMAL, NULL);
  t_wait_idle(&e);
  rusm_metrics *m = t_metrics(e.rt);
  assert_int_equal(m->schedulers, rusm_rt_schedulers(e.rt));
  uint64_t runs = 0;
  for (uint32_t i = 0; i < m->schedulers; i++) {
    const rusm_sched_metrics *s = &m->sched[i];
    assert_true(s->total_ns > 0);
    assert_true(s->busy_ns <= s->total_ns);
    assert_true(s->utilisation >= 0.0 && s->utilisation <= 1.0);
    runs += s->runs;
  }
  /* A process woken before it parks runs on in the same slice: at least
   * one run, not necessarily one per message. */
  assert_true(runs >= 1);
  t_stop(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_default_schedulers),
      cmocka_unit_test(test_pingpong_does_not_starve_poller),
      cmocka_unit_test(test_pingpong_does_not_starve_self_sender),
      cmocka_unit_test(test_budget_preempts_stackful_hog),
      cmocka_unit_test(test_consume_then_runtime_call_preempts),
      cmocka_unit_test(test_tiny_budget),
      cmocka_unit_test(test_work_stealing),
      cmocka_unit_test(test_spawn_on_each_scheduler),
      cmocka_unit_test(test_stuck_scheduler_gives_away_its_queue),
      cmocka_unit_test(test_cross_scheduler_pingpong),
      cmocka_unit_test(test_wake_two_from_one_process),
      cmocka_unit_test(test_many_timers),
      cmocka_unit_test(test_spawn_storm),
      cmocka_unit_test(test_spawn_tree),
      cmocka_unit_test(test_kill_storm_on_busy_ring),
      cmocka_unit_test(test_sched_metrics),
  };
  return T_RUN(tests);
}
