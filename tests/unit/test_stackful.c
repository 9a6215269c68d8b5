// ctest-labels: concurrent
/*
 * Unit tests: stackful bodies — blocking receive, rusm_yield,
 * rusm_exit_self, stacks (default depth, custom sizes, guard page), register
 * and floating-point state across switches, many coroutines at once.
 */
#include "support.h"

#include <fcntl.h>
#include <fenv.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Basics                                                              */
/* ------------------------------------------------------------------ */

static void test_stackful_echo_and_normal_exit(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_metrics m0 = *t_metrics(e.rt);
  rusm_pid_t p = t_spawn_stackful_waiter(&e);
  assert_true(rusm_is_alive(e.rt, p));
  for (int i = 0; i < 100; i++)
    t_ping(&e, p);
  t_send_stop(e.rt, p, RUSM_EXIT_NORMAL, NULL); /* returns from fn */
  assert_int_equal(t_wait_note(&e, p).code, -1);
  assert_false(rusm_is_alive(e.rt, p));
  t_wait_idle(&e);
  rusm_metrics *m1 = t_metrics(e.rt);
  assert_int_equal(m1->exited_by[RUSM_EXIT_NORMAL],
                   m0.exited_by[RUSM_EXIT_NORMAL] + 1);
  assert_int_equal(m1->spawned, m0.spawned + 1);
  t_stop(&e);
}

typedef struct exit_arg {
  rusm_pid_t parent;
  rusm_exit_code code;
  const char *detail;
  atomic_int after;
} exit_arg;

static void exit_body(rusm_proc *self, void *arg) {
  exit_arg *a = arg;
  t_notify_on_exit(self, a->parent, 0);
  /* The detail lives on this stack, which goes away with the process. */
  char detail[32] = {0};
  rusm_reason r = {a->code, 0, NULL};
  if (a->detail != NULL) {
    r.len = (uint32_t)snprintf(detail, sizeof detail, "%s", a->detail);
    r.data = (const uint8_t *)detail;
  }
  rusm_exit_self(self, r);
  atomic_store(&a->after, 1);
}

static void exit_with(rusm_exit_code code, const char *detail) {
  t_env e;
  t_start(&e, 0);
  rusm_metrics m0 = *t_metrics(e.rt);
  exit_arg a = {e.pid, code, detail, 0};
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e.rt, exit_body, &a, NULL, &p), 0);
  t_wait_note(&e, p);
  t_wait_idle(&e);
  assert_int_equal(atomic_load(&a.after), 0);
  rusm_metrics *m1 = t_metrics(e.rt);
  assert_int_equal(m1->exited_by[code], m0.exited_by[code] + 1);
  assert_int_equal(m1->exited, m0.exited + 1);
  t_stop(&e);
}

static void test_exit_self_custom(void **state) {
  (void)state;
  exit_with(RUSM_EXIT_CUSTOM, "custom-detail");
}

static void test_exit_self_normal(void **state) {
  (void)state;
  exit_with(RUSM_EXIT_NORMAL, NULL);
}

static void test_exit_self_shutdown(void **state) {
  (void)state;
  exit_with(RUSM_EXIT_SHUTDOWN, "going down");
}

/* rusm_reason_str builds a custom reason viewing its text. */
static void test_exit_self_reason_str(void **state) {
  (void)state;
  rusm_reason r = rusm_reason_str("abc");
  assert_int_equal(r.code, RUSM_EXIT_CUSTOM);
  assert_int_equal(r.len, 3);
  assert_memory_equal(r.data, "abc", 3);
  exit_with(RUSM_EXIT_CUSTOM, "abc");
}

/* ------------------------------------------------------------------ */
/* rusm_yield                                                          */
/* ------------------------------------------------------------------ */

typedef struct yield_arg {
  rusm_pid_t parent;
  atomic_uint_fast64_t *mine, *other;
  uint64_t target;
} yield_arg;

static void yielder_body(rusm_proc *self, void *arg) {
  yield_arg *a = arg;
  rusm_msg *m = NULL;
  rusm_filter go = rusm_filter_tag(T_TAG_GO);
  T_CHECK(rusm_receive(self, &go, T_GUARD_MS, &m) == 0);
  rusm_msg_free(m);
  int64_t guard = rusm_now_ns() + (int64_t)T_GUARD_MS * 1000000;
  uint64_t yields = 0;
  /* Ends only when both have advanced: on one scheduler that requires
   * rusm_yield to let the other run. */
  while (atomic_load(a->mine) < a->target ||
         atomic_load(a->other) < a->target) {
    atomic_fetch_add(a->mine, 1);
    rusm_yield(self);
    yields++;
    if (rusm_now_ns() > guard) {
      T_CHECK(!"yield did not let the other process run");
      break;
    }
  }
  t_send_u64(rusm_proc_rt(self), a->parent, T_TAG_DONE, yields);
}

static void test_yield_interleaves(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 1);
  atomic_uint_fast64_t ca = 0, cb = 0;
  yield_arg a = {e.pid, &ca, &cb, 1000};
  yield_arg b = {e.pid, &cb, &ca, 1000};
  rusm_pid_t pa, pb;
  assert_int_equal(rusm_spawn_stackful(e.rt, yielder_body, &a, NULL, &pa), 0);
  assert_int_equal(rusm_spawn_stackful(e.rt, yielder_body, &b, NULL, &pb), 0);
  t_send(e.rt, pa, T_TAG_GO, NULL, 0);
  t_send(e.rt, pb, T_TAG_GO, NULL, 0);
  assert_true(t_recv_u64(&e, T_TAG_DONE) >= 1);
  assert_true(t_recv_u64(&e, T_TAG_DONE) >= 1);
  assert_true(atomic_load(&ca) >= 1000);
  assert_true(atomic_load(&cb) >= 1000);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Stacks                                                              */
/* ------------------------------------------------------------------ */

static uintptr_t g_stack_low; /* lowest frame address seen (per run) */

__attribute__((noinline)) static int recurse(int depth, int yield_every,
                                             rusm_proc *self) {
  volatile char buf[256];
  for (size_t i = 0; i < sizeof buf; i += 64)
    buf[i] = (char)(depth + (int)i);
  buf[sizeof buf - 1] = (char)depth;
  uintptr_t here = (uintptr_t)&buf[0];
  if (g_stack_low == 0 || here < g_stack_low)
    g_stack_low = here;
  int r = 0;
  if (depth > 0)
    r = recurse(depth - 1, yield_every, self);
  if (yield_every > 0 && depth % yield_every == 0)
    rusm_yield(self);
  /* Frames must be intact after the inner calls and the switches. */
  for (size_t i = 0; i < sizeof buf; i += 64)
    if (buf[i] != (char)(depth + (int)i))
      r = -100000;
  if (buf[sizeof buf - 1] != (char)depth)
    r = -100000;
  return r + 1;
}

typedef struct deep_arg {
  rusm_pid_t parent;
  int depth;
  int yield_every;
} deep_arg;

static void deep_body(rusm_proc *self, void *arg) {
  deep_arg *a = arg;
  volatile char top;
  g_stack_low = 0;
  int r = recurse(a->depth, a->yield_every, self);
  uint64_t out[2] = {(uint64_t)(int64_t)r,
                     (uint64_t)((uintptr_t)&top - g_stack_low)};
  t_send(rusm_proc_rt(self), a->parent, T_TAG_DONE, out, sizeof out);
}

/* Returns the bytes of stack the recursion used. */
static uint64_t run_deep(t_env *e, int depth, int yield_every,
                         uint32_t stack_size) {
  deep_arg a = {e->pid, depth, yield_every};
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.stack_size = stack_size;
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e->rt, deep_body, &a, &o, &p), 0);
  rusm_msg *m = t_recv_tag(e, T_TAG_DONE);
  uint64_t out[2];
  assert_int_equal(rusm_msg_len(m), sizeof out);
  memcpy(out, rusm_msg_data(m), sizeof out);
  rusm_msg_free(m);
  assert_int_equal((int64_t)out[0], depth + 1);
  t_wait_idle(e);
  return out[1];
}

/* The default stack (64 KiB) holds a few hundred small frames. */
static void test_deep_recursion_default_stack(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 1);
  uint64_t used = run_deep(&e, T_SCALE(150, 60), 0, 0);
  assert_true(used >= (uint64_t)T_SCALE(150, 60) * 256); /* went deep */
  /* With switches at many depths: frames survive the context switch. */
  run_deep(&e, T_SCALE(150, 60), 7, 0);
  t_stop(&e);
}

static void test_custom_stack_size(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 1);
  /* 2 MiB: ~2000 frames of ~300 bytes (more under sanitizers). */
  uint64_t used = run_deep(&e, T_SCALE(2000, 1000), 0, 2u << 20);
  assert_true(used >= (uint64_t)T_SCALE(2000, 1000) * 256);
  run_deep(&e, T_SCALE(2000, 1000), 97, 2u << 20);
  /* Sizes that are not a page multiple, and a small one. */
  run_deep(&e, 20, 0, 100001);
  run_deep(&e, 10, 3, 32 * 1024);
  /* The pool caches default-size stacks; mixing sizes must not mix them. */
  for (int i = 0; i < 5; i++) {
    run_deep(&e, 10, 0, 0);
    run_deep(&e, T_SCALE(1000, 500), 0, 1u << 20);
  }
  t_stop(&e);
}

static volatile int g_huge_depth = 1 << 30;

static void overflow_body(rusm_proc *self, void *arg) {
  (void)arg;
  int r = recurse(g_huge_depth, 0, self);
  _exit(r == 0 ? 4 : 5); /* not reached: the guard page stops it */
}

/* Overflowing a stack hits the guard page (in a child process). */
static void test_stack_overflow_hits_guard_page(void **state) {
  (void)state;
  fflush(stdout);
  fflush(stderr);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    alarm(60);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0)
      dup2(devnull, 2); /* the expected crash report is noise here */
    rusm_rt_opts o;
    rusm_rt_opts_init(&o);
    o.schedulers = 1;
    rusm_rt *rt = NULL;
    if (rusm_rt_create(&o, &rt) != 0)
      _exit(3);
    rusm_pid_t p;
    if (rusm_spawn_stackful(rt, overflow_body, NULL, NULL, &p) != 0)
      _exit(3);
    (void)rusm_rt_wait_idle(rt, 30000);
    _exit(0);
  }
  int st = 0;
  assert_int_equal(waitpid(child, &st, 0), child);
  if (WIFSIGNALED(st)) {
    int sig = WTERMSIG(st);
    if (sig != SIGSEGV && sig != SIGBUS && sig != SIGABRT)
      fail_msg("child died of signal %d", sig);
  } else {
    int code = WEXITSTATUS(st);
    /* 0/4/5: the overflow went unnoticed; 3: setup failed. Sanitizers
     * report the SEGV and exit non-zero. */
    if (code == 0 || code == 3 || code == 4 || code == 5)
      fail_msg("child exited with %d", code);
  }
}

/* ------------------------------------------------------------------ */
/* State across switches                                               */
/* ------------------------------------------------------------------ */

typedef struct fp_arg {
  rusm_pid_t parent;
  int round_up;
} fp_arg;

static void fp_body(rusm_proc *self, void *arg) {
  fp_arg *a = arg;
  int want = a->round_up ? FE_UPWARD : FE_TONEAREST;
  if (a->round_up)
    T_CHECK(fesetround(FE_UPWARD) == 0);
  uint64_t bad = 0;
  for (int i = 0; i < 200; i++) {
    rusm_yield(self);
    if (fegetround() != want)
      bad++;
  }
  fesetround(FE_TONEAREST);
  t_send_u64(rusm_proc_rt(self), a->parent, T_TAG_DONE, bad);
}

/* Each coroutine keeps its own MXCSR / x87 control word. */
static void test_fp_control_kept_per_process(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 1);
  fp_arg up = {e.pid, 1}, near = {e.pid, 0};
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e.rt, fp_body, &up, NULL, &p), 0);
  assert_int_equal(rusm_spawn_stackful(e.rt, fp_body, &near, NULL, &p), 0);
  assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 0);
  assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 0);
  t_wait_idle(&e);
  t_stop(&e);
}

typedef struct mix_arg {
  rusm_pid_t parent;
  uint64_t seed;
} mix_arg;

/* Many live values across switches: callee-saved registers survive. */
__attribute__((noinline)) static uint64_t mix(rusm_proc *self, uint64_t s,
                                              int rounds) {
  uint64_t a = s, b = s * 3 + 1, c = s ^ 0x9e3779b97f4a7c15u, d = s + 7;
  uint64_t f = s * 31, g = ~s, h = s >> 3, k = s << 5;
  for (int i = 0; i < rounds; i++) {
    a = a * 6364136223846793005u + b;
    b ^= c >> 7;
    c += d * 3;
    d ^= f << 11;
    f += g;
    g ^= h * 5;
    h += k;
    k ^= a >> 13;
    if (self != NULL)
      rusm_yield(self);
  }
  return a ^ b ^ c ^ d ^ f ^ g ^ h ^ k;
}

static void mix_body(rusm_proc *self, void *arg) {
  mix_arg *a = arg;
  uint64_t got = mix(self, a->seed, 300);
  uint64_t want = mix(NULL, a->seed, 300);
  t_send_u64(rusm_proc_rt(self), a->parent, T_TAG_DONE, got == want);
}

static void test_registers_survive_switches(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 1);
  mix_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i].parent = e.pid;
    args[i].seed = 1000u + (uint64_t)i;
    rusm_pid_t p;
    assert_int_equal(rusm_spawn_stackful(e.rt, mix_body, &args[i], NULL, &p),
                     0);
  }
  for (int i = 0; i < 4; i++)
    assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 1);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Receive in a stackful body                                          */
/* ------------------------------------------------------------------ */

static void timeouts_body(rusm_proc *self, void *arg) {
  rusm_pid_t parent = (rusm_pid_t)(uintptr_t)arg;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_msg *m = NULL;
  rusm_filter f77 = rusm_filter_tag(77);

  /* Poll an empty mailbox. */
  T_CHECK(rusm_receive(self, NULL, 0, &m) == RUSM_ETIMEDOUT);
  T_CHECK(rusm_try_receive(self, NULL, &m) == RUSM_ETIMEDOUT);

  /* A short timeout: not early. */
  int64_t t0 = rusm_now_ns();
  T_CHECK(rusm_receive(self, &f77, 30, &m) == RUSM_ETIMEDOUT);
  T_CHECK(rusm_now_ns() - t0 >= 30 * 1000000);

  /* A message arriving before the timeout is returned. */
  t_send(rt, parent, T_TAG_READY, NULL, 0);
  int rc = rusm_receive(self, &f77, T_GUARD_MS, &m);
  T_CHECK(rc == 0);
  if (rc == 0) {
    T_CHECK(t_msg_u64(m) == 1);
    rusm_msg_free(m);
  }

  /* Non-matching traffic during a timed wait: still times out, and that
   * traffic stays queued in order. */
  t_send(rt, parent, T_TAG_READY, NULL, 0);
  t0 = rusm_now_ns();
  T_CHECK(rusm_receive(self, &f77, 60, &m) == RUSM_ETIMEDOUT);
  T_CHECK(rusm_now_ns() - t0 >= 60 * 1000000);
  rusm_filter f5 = rusm_filter_tag(5);
  for (uint64_t i = 0; i < 50; i++) {
    rc = rusm_try_receive(self, &f5, &m);
    T_CHECK(rc == 0);
    if (rc != 0)
      break;
    T_CHECK(t_msg_u64(m) == i);
    rusm_msg_free(m);
  }
  T_CHECK(rusm_try_receive(self, NULL, &m) == RUSM_ETIMEDOUT);
  t_send(rt, parent, T_TAG_DONE, NULL, 0);
}

static void test_stackful_receive_timeouts(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e.rt, timeouts_body,
                                       (void *)(uintptr_t)e.pid, NULL, &p),
                   0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_READY));
  t_send_u64(e.rt, p, 77, 1);
  rusm_msg_free(t_recv_tag(&e, T_TAG_READY));
  for (uint64_t i = 0; i < 50; i++)
    t_send_u64(e.rt, p, 5, i);
  rusm_msg_free(t_recv_tag(&e, T_TAG_DONE));
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Many coroutines                                                     */
/* ------------------------------------------------------------------ */

static void nop_body(rusm_proc *self, void *arg) {
  (void)self;
  (void)arg;
}

static void test_many_stackful(void **state) {
  (void)state;
  enum { LIVE = T_SCALE(300, 64), CHURN = T_SCALE(3000, 300) };
  t_env e;
  t_start(&e, 0);
  rusm_metrics m0 = *t_metrics(e.rt);
  static rusm_pid_t pids[LIVE];
  for (int i = 0; i < LIVE; i++)
    pids[i] = t_spawn_stackful_waiter(&e);
  assert_int_equal(rusm_process_count(e.rt), LIVE + 1);
  for (int i = 0; i < LIVE; i++)
    t_ping(&e, pids[i]);
  /* Mixed exits: return, exit_self(custom), kill. */
  for (int i = 0; i < LIVE; i++) {
    if (i % 3 == 0)
      t_send_stop(e.rt, pids[i], RUSM_EXIT_NORMAL, NULL);
    else if (i % 3 == 1)
      t_send_stop(e.rt, pids[i], RUSM_EXIT_CUSTOM, "many");
    else
      assert_int_equal(rusm_kill(e.rt, pids[i]), 0);
  }
  for (int i = 0; i < LIVE; i++)
    t_wait_note(&e, pids[i]);
  t_wait_idle(&e);
  rusm_metrics *m1 = t_metrics(e.rt);
  assert_int_equal(m1->exited_by[RUSM_EXIT_NORMAL] -
                       m0.exited_by[RUSM_EXIT_NORMAL],
                   (LIVE + 2) / 3);
  assert_int_equal(m1->exited_by[RUSM_EXIT_CUSTOM] -
                       m0.exited_by[RUSM_EXIT_CUSTOM],
                   (LIVE + 1) / 3);
  assert_int_equal(m1->exited_by[RUSM_EXIT_KILLED] -
                       m0.exited_by[RUSM_EXIT_KILLED],
                   LIVE / 3);

  /* Churn: stacks come back to the pool and are reused. */
  m0 = *m1;
  for (int i = 0; i < CHURN; i++) {
    rusm_pid_t p;
    assert_int_equal(rusm_spawn_stackful(e.rt, nop_body, NULL, NULL, &p), 0);
  }
  t_wait_idle(&e);
  m1 = t_metrics(e.rt);
  assert_int_equal(
      m1->exited_by[RUSM_EXIT_NORMAL] - m0.exited_by[RUSM_EXIT_NORMAL], CHURN);
  assert_int_equal(rusm_process_count(e.rt), 1);
  t_stop(&e);
}

/* A stackful process spawning and talking to stackful children. */
static void parent_body(rusm_proc *self, void *arg) {
  rusm_pid_t test = (rusm_pid_t)(uintptr_t)arg;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_pid_t me = rusm_self(self);
  rusm_pid_t kids[4];
  for (int i = 0; i < 4; i++)
    T_CHECK(rusm_spawn_stackful(rt, t_stackful_waiter, (void *)(uintptr_t)me,
                                NULL, &kids[i]) == 0);
  rusm_filter pong = rusm_filter_tag(T_TAG_PONG);
  for (int i = 0; i < 4; i++) {
    uint64_t v = (uint64_t)i;
    t_send(rt, kids[i], T_TAG_PING, &v, sizeof v);
    rusm_msg *m = NULL;
    T_CHECK(rusm_receive(self, &pong, T_GUARD_MS, &m) == 0);
    if (m != NULL) {
      T_CHECK(t_msg_u64(m) == v);
      T_CHECK(rusm_msg_from(m) == kids[i]);
      rusm_msg_free(m);
    }
    t_send_stop(rt, kids[i], RUSM_EXIT_NORMAL, NULL);
  }
  /* Their notes come to us. */
  rusm_filter note = rusm_filter_tag(T_TAG_NOTE);
  for (int i = 0; i < 4; i++) {
    rusm_msg *m = NULL;
    T_CHECK(rusm_receive(self, &note, T_GUARD_MS, &m) == 0);
    rusm_msg_free(m);
  }
  t_send(rt, test, T_TAG_DONE, NULL, 0);
}

static void test_stackful_spawns_stackful(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e.rt, parent_body,
                                       (void *)(uintptr_t)e.pid, NULL, &p),
                   0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_DONE));
  t_wait_idle(&e);
  assert_int_equal(rusm_process_count(e.rt), 1);
  t_stop(&e);
}

/* Many on_exit hooks: all run, last registered first. */
typedef struct order_hook {
  atomic_int *count;
  int index, total;
} order_hook;

static void order_fn(void *arg) {
  order_hook *h = arg;
  int seen = atomic_fetch_add(h->count, 1);
  T_CHECK(seen == h->total - 1 - h->index);
}

typedef struct hooks_arg {
  rusm_pid_t parent;
  atomic_int count;
  order_hook hooks[100];
} hooks_arg;

static void hooks_body(rusm_proc *self, void *arg) {
  hooks_arg *a = arg;
  t_notify_on_exit(self, a->parent, 0);
  for (int i = 0; i < 100; i++) {
    a->hooks[i].count = &a->count;
    a->hooks[i].index = i;
    a->hooks[i].total = 100;
    T_CHECK(rusm_on_exit(self, order_fn, &a->hooks[i]) == 0);
  }
  rusm_yield(self);
}

static void test_many_on_exit_hooks(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  hooks_arg a;
  memset(&a, 0, sizeof a);
  a.parent = e.pid;
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e.rt, hooks_body, &a, NULL, &p), 0);
  t_wait_note(&e, p);
  assert_int_equal(atomic_load(&a.count), 100);
  t_wait_idle(&e);
  t_stop(&e);
}

/* A stackful body with rusm_consume: accounted, still correct. */
static void consume_body(rusm_proc *self, void *arg) {
  rusm_pid_t parent = (rusm_pid_t)(uintptr_t)arg;
  for (int i = 0; i < 1000; i++)
    rusm_consume(self, 100);
  rusm_proc_info info;
  T_CHECK(rusm_proc_info_get(rusm_proc_rt(self), rusm_self(self), &info) == 0);
  t_send_u64(rusm_proc_rt(self), parent, T_TAG_DONE, info.reductions);
}

static void test_consume_counts_reductions(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e.rt, consume_body,
                                       (void *)(uintptr_t)e.pid, NULL, &p),
                   0);
  assert_true(t_recv_u64(&e, T_TAG_DONE) >= 1000 * 100);
  t_wait_idle(&e);
  t_stop(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stackful_echo_and_normal_exit),
      cmocka_unit_test(test_exit_self_custom),
      cmocka_unit_test(test_exit_self_normal),
      cmocka_unit_test(test_exit_self_shutdown),
      cmocka_unit_test(test_exit_self_reason_str),
      cmocka_unit_test(test_yield_interleaves),
      cmocka_unit_test(test_deep_recursion_default_stack),
      cmocka_unit_test(test_custom_stack_size),
      cmocka_unit_test(test_stack_overflow_hits_guard_page),
      cmocka_unit_test(test_fp_control_kept_per_process),
      cmocka_unit_test(test_registers_survive_switches),
      cmocka_unit_test(test_stackful_receive_timeouts),
      cmocka_unit_test(test_many_stackful),
      cmocka_unit_test(test_stackful_spawns_stackful),
      cmocka_unit_test(test_many_on_exit_hooks),
      cmocka_unit_test(test_consume_counts_reductions),
  };
  return T_RUN(tests);
}
