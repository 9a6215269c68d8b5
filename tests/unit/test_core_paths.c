// ctest-labels: concurrent
/*
 * Unit tests: the less travelled paths of the process core — signals
 * (src/otp/signal.c), the process table (ptab.c), stackful bodies and
 * attached threads (body_stackful.c), the link/monitor map (u64map.c) and
 * the process lifecycle (proc.c): remote and stale pids, exit signals with
 * every code, signals queued while their target cannot fetch them (a body
 * blocked in native code), signals that reach a process after its death,
 * generation exhaustion, a full table, and allocation failures.
 *
 * "Blocked in native code": a stackful body that waits on a POSIX
 * semaphore holds its scheduler thread without fetching its mailbox, so
 * the test can queue signals for it and then choose what it does next.
 * Some tests reach into the runtime's internals (otp/internal.h) to set up
 * an interleaving that otherwise depends on thread timing; each says so.
 *
 * test_regression_* cover core bugs found and fixed
 * (RUSM_TEST_FILTER=-regression_ skips them).
 */
#include "support.h"

#include <pthread.h>
#include <semaphore.h>
#include <sys/resource.h>

#include "otp/internal.h"
#include "otp/u64map.h"
#include "rusm/observer.h"

#define TAG_READY (T_TAG_CTL | 0x300)  /* process -> test: u64 pid */
#define TAG_CALLED (T_TAG_CTL | 0x301) /* call fn -> test: u64 dead */
#define TAG_REPORT (T_TAG_CTL | 0x302) /* process -> test: int64 rcs */
#define TAG_XINFO (T_TAG_CTL | 0x303)  /* trapper -> test: an Exit seen */
#define TAG_DATA 5                     /* plain user data */
#define TAG_NEVER UINT64_C(0x31000000000000ee)

static bool ok_or_nomem(int rc) { return rc == 0 || rc == RUSM_ENOMEM; }

/* Bodies blocked on a semaphore hold their scheduler thread: a test that
 * failed before releasing one would leave rusm_rt_destroy waiting for it
 * forever. The semaphores (and what the bodies read) live for the whole
 * run, and every test of this file releases those still closed first. */
#define GATES 16
static sem_t g_gate[GATES];
static atomic_bool g_gate_closed[GATES];
static int g_ngates;

static sem_t *gate_take(void) {
  assert_true(g_ngates < GATES);
  int i = g_ngates++;
  assert_int_equal(sem_init(&g_gate[i], 0, 0), 0);
  atomic_store(&g_gate_closed[i], true);
  return &g_gate[i];
}

static void gate_release(sem_t *s) {
  int i = (int)(s - g_gate);
  if (atomic_exchange(&g_gate_closed[i], false))
    sem_post(s);
}

static void core_start_opts(t_env *e, const rusm_rt_opts *o) {
  for (int i = 0; i < g_ngates; i++)
    gate_release(&g_gate[i]);
  t_start_opts(e, o);
}

static void core_start(t_env *e, uint32_t schedulers) {
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = schedulers;
  core_start_opts(e, &o);
}

static void drain_mine(t_env *e) {
  rusm_msg *m;
  while (rusm_receive(e->me, NULL, 0, &m) == 0)
    rusm_msg_free(m);
}

static bool down_ref(const rusm_msg *m, void *arg) {
  rusm_down_info d;
  return rusm_msg_down(m, &d) == 0 && d.ref == *(const rusm_ref *)arg;
}

/* The Down of ref; its reason is copied into detail (NUL-terminated). */
static rusm_down_info wait_down(t_env *e, rusm_ref ref, char *detail,
                                size_t cap) {
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  f.pred = down_ref;
  f.pred_arg = &ref;
  rusm_msg *m = t_recv(e, &f);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  if (detail) {
    size_t n = d.reason.len < cap - 1 ? d.reason.len : cap - 1;
    if (n)
      memcpy(detail, d.reason.data, n);
    detail[n] = '\0';
  }
  d.reason.data = NULL;
  rusm_msg_free(m);
  return d;
}

static rusm_ref watch(t_env *e, rusm_pid_t pid) {
  rusm_ref ref = 0;
  assert_int_equal(rusm_monitor(e->me, pid, &ref), 0);
  return ref;
}

static bool exit_from(const rusm_msg *m, void *arg) {
  rusm_exit_info xi;
  return rusm_msg_exit(m, &xi) == 0 && xi.from == *(const rusm_pid_t *)arg;
}

/* Whether an Exit from pid is queued for the test thread now (taken). */
static bool take_exit(t_env *e, rusm_pid_t from, int64_t timeout_ms,
                      rusm_exit_info *out, char *detail, size_t cap) {
  rusm_filter f = rusm_filter_tag(RUSM_TAG_EXIT);
  f.pred = exit_from;
  f.pred_arg = &from;
  rusm_msg *m = NULL;
  if (rusm_receive(e->me, &f, timeout_ms, &m) != 0)
    return false;
  rusm_exit_info xi;
  assert_int_equal(rusm_msg_exit(m, &xi), 0);
  if (detail) {
    size_t n = xi.reason.len < cap - 1 ? xi.reason.len : cap - 1;
    if (n)
      memcpy(detail, xi.reason.data, n);
    detail[n] = '\0';
  }
  xi.reason.data = NULL;
  if (out)
    *out = xi;
  rusm_msg_free(m);
  return true;
}

static uint64_t dropped_now(rusm_rt *rt) { return t_metrics(rt)->dropped; }

/* ------------------------------------------------------------------ */
/* u64map                                                              */
/* ------------------------------------------------------------------ */

/* Against a plain array model, with keys that collide on purpose (the
 * same low bits after hashing are likely among 4,000 keys in a small
 * table), deletions in the middle of clusters and wrap-around. */
static void test_u64map(void **state) {
  (void)state;
  rusm__u64map m;
  memset(&m, 0, sizeof m);
  uint64_t v = 0;
  assert_false(rusm__map_get(&m, 1, &v)); /* empty, no table */
  assert_false(rusm__map_del(&m, 1, NULL));
  assert_int_equal(rusm__map_put(&m, 7, 70), 1);
  assert_int_equal(rusm__map_put(&m, 7, 71), 0); /* update */
  assert_true(rusm__map_get(&m, 7, &v));
  assert_int_equal(v, 71);
  assert_true(rusm__map_get(&m, 7, NULL));
  assert_int_equal(m.len, 1);
  /* a reservation that cannot fit is refused without allocating */
  assert_int_equal(rusm__map_reserve(&m, UINT32_MAX - 1), RUSM_ENOMEM);
  assert_int_equal(rusm__map_reserve(&m, UINT32_MAX / 4), RUSM_ENOMEM);
  /* a growth that fails changes nothing */
  for (uint64_t k = 100; m.len * 4 + 4 <= m.cap * 3; k++)
    assert_int_equal(rusm__map_put(&m, k, k), 1);
  uint32_t cap = m.cap, len = m.len;
  rusm__test_fail_one_alloc(0);
  assert_int_equal(rusm__map_put(&m, 99999, 1), RUSM_ENOMEM);
  rusm__test_fail_one_alloc(0);
  assert_int_equal(rusm__map_reserve(&m, 64), RUSM_ENOMEM);
  rusm__test_fail_allocs(-1);
  assert_int_equal(m.cap, cap);
  assert_int_equal(m.len, len);
  assert_false(rusm__map_get(&m, 99999, NULL));
  assert_true(rusm__map_get(&m, 7, &v));
  rusm__map_free(&m);
  assert_int_equal(m.cap, 0);
  assert_int_equal(m.len, 0);

  enum { N = 4000 };
  static uint64_t model[N]; /* value + 1, 0: absent */
  memset(model, 0, sizeof model);
  uint64_t seed = 12345;
  for (int step = 0; step < 60000; step++) {
    seed = seed * 6364136223846793005u + 1442695040888963407u;
    uint32_t r = (uint32_t)(seed >> 33);
    uint64_t key = 1 + r % N;
    int op = (int)((seed >> 20) % 4);
    if (op <= 1) {
      int rc = rusm__map_put(&m, key, step);
      assert_int_equal(rc, model[key - 1] ? 0 : 1);
      model[key - 1] = (uint64_t)step + 1;
    } else if (op == 2) {
      uint64_t got = 0;
      bool was = rusm__map_del(&m, key, &got);
      assert_int_equal(was, model[key - 1] != 0);
      if (was)
        assert_int_equal(got, model[key - 1] - 1);
      model[key - 1] = 0;
    } else {
      uint64_t got = 0;
      bool has = rusm__map_get(&m, key, &got);
      assert_int_equal(has, model[key - 1] != 0);
      if (has)
        assert_int_equal(got, model[key - 1] - 1);
    }
  }
  uint32_t count = 0;
  for (int i = 0; i < N; i++)
    if (model[i]) {
      count++;
      assert_true(rusm__map_get(&m, (uint64_t)i + 1, NULL));
    }
  assert_int_equal(m.len, count);
  /* empty it entirely: every deletion keeps the others reachable */
  for (int i = 0; i < N; i++)
    if (model[i]) {
      assert_true(rusm__map_del(&m, (uint64_t)i + 1, NULL));
      model[i] = 0;
    }
  assert_int_equal(m.len, 0);
  rusm__map_free(&m);
}

/* ------------------------------------------------------------------ */
/* Remote, stale and unknown                                           */
/* ------------------------------------------------------------------ */

static void test_remote_and_unknown_targets(void **state) {
  (void)state;
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.node_id = 5;
  t_env e;
  core_start_opts(&e, &o);
  assert_int_equal(rusm_pid_node(e.pid), 5);
  rusm_trap_exit(e.me, true);
  rusm_pid_t remote = rusm_pid_make(9, rusm_pid_slot(e.pid), 1);
  rusm_pid_t local_stale = rusm_pid_make(5, rusm_pid_slot(e.pid), 999);

  for (int i = 0; i < 2; i++) {
    rusm_pid_t p = i ? local_stale : remote;
    /* link: refused at once, a trapping caller gets Exit noproc */
    assert_int_equal(rusm_link(e.me, p), RUSM_ENOPROC);
    rusm_exit_info xi;
    assert_true(take_exit(&e, p, 0, &xi, NULL, 0));
    assert_int_equal(xi.reason.code, RUSM_EXIT_NOPROC);
    assert_int_equal(rusm_unlink(e.me, p), 0);
    /* monitor: Down noproc already queued */
    rusm_ref ref = 0;
    assert_int_equal(rusm_monitor(e.me, p, &ref), 0);
    rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
    f.pred = down_ref;
    f.pred_arg = &ref;
    rusm_msg *m = NULL;
    assert_int_equal(rusm_receive(e.me, &f, 0, &m), 0);
    rusm_down_info d;
    assert_int_equal(rusm_msg_down(m, &d), 0);
    assert_true(d.pid == p && d.reason.code == RUSM_EXIT_NOPROC);
    rusm_msg_free(m);
    assert_int_equal(rusm_demonitor(e.me, ref, 0), 0); /* fired already */
    /* everything else: not there */
    assert_int_equal(rusm_exit(e.rt, p, rusm_reason_str("x")), RUSM_ENOPROC);
    assert_int_equal(rusm_kill(e.rt, p), RUSM_ENOPROC);
    assert_false(rusm_is_alive(e.rt, p));
    rusm_proc_info pi;
    assert_int_equal(rusm_proc_info_get(e.rt, p, &pi), RUSM_ENOPROC);
    uint64_t before = dropped_now(e.rt);
    assert_int_equal(rusm_send(e.rt, p, TAG_DATA, "x", 1), 0); /* dropped */
    assert_int_equal(dropped_now(e.rt), before + 1);
  }
  /* demonitor of refs that never existed, with and without flush */
  assert_int_equal(rusm_demonitor(e.me, 0, 0), 0);
  assert_int_equal(rusm_demonitor(e.me, UINT64_C(0xdeadbeef), 0), 0);
  assert_int_equal(
      rusm_demonitor(e.me, UINT64_C(0xdeadbeef), RUSM_DEMONITOR_FLUSH), 0);
  /* the same from a process without any tables yet */
  rusm_pid_t w = t_spawn_waiter(&e);
  t_ping(&e, w);
  assert_int_equal(rusm_unlink(e.me, w), 0); /* never linked */
  t_send_stop(e.rt, w, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, w);
  t_wait_idle(&e);
  drain_mine(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Exit signals with every code                                        */
/* ------------------------------------------------------------------ */

/* Traps exits and reports each Exit it receives (code, detail) to the
 * test; STOP ends it. */
static rusm_next trapper_init(rusm_proc *self, void **state) {
  (void)state;
  rusm_trap_exit(self, true);
  return rusm_next_wait();
}

static rusm_next trapper_handle(rusm_proc *self, void *state, rusm_msg *m) {
  rusm_pid_t test = (rusm_pid_t)(uintptr_t)state;
  rusm_rt *rt = rusm_proc_rt(self);
  if (!m)
    return rusm_next_wait();
  if (rusm_msg_tag(m) == T_TAG_STOP)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  if (rusm_msg_tag(m) == T_TAG_PING)
    T_CHECK(rusm_send(rt, rusm_msg_from(m), T_TAG_PONG, rusm_msg_data(m),
                      rusm_msg_len(m)) == 0);
  rusm_exit_info xi;
  if (rusm_msg_exit(m, &xi) == 0)
    t_note_send(rt, test, rusm_self(self), &xi.reason, xi.from);
  return rusm_next_wait();
}

static void trapper_terminate(rusm_proc *self, void *state,
                              const rusm_reason *why) {
  rusm_pid_t test = (rusm_pid_t)(uintptr_t)state;
  /* value 1 tells the exit note from the Exit notes */
  t_note_send(rusm_proc_rt(self), test, rusm_self(self), why, 1);
}

static const rusm_stackless_ops trapper_ops = {trapper_init, trapper_handle,
                                               trapper_terminate};

static void test_exit_every_code(void **state) {
  (void)state;
  t_env e;
  core_start(&e, 0);
  static const char detail[] = "why";
  for (int code = 0; code < RUSM_EXIT__COUNT; code++) {
    rusm_reason r = {(rusm_exit_code)code, 3, (const uint8_t *)detail};
    /* a trapping target: every code but kill arrives as a message, bytes
     * included */
    rusm_pid_t t;
    assert_int_equal(rusm_spawn_stackless(e.rt, &trapper_ops,
                                          (void *)(uintptr_t)e.pid, NULL, &t),
                     0);
    t_ping(&e, t); /* it traps now */
    assert_int_equal(rusm_exit(e.rt, t, r), 0);
    t_note n = t_wait_note(&e, t);
    if (code == RUSM_EXIT_KILL) {
      assert_int_equal(n.value, 1);
      assert_int_equal(n.code, RUSM_EXIT_KILLED);
      assert_int_equal(n.len, 0);
    } else {
      assert_true(n.value == e.pid); /* from: the test thread */
      assert_int_equal(n.code, code);
      assert_int_equal(n.len, 3);
      assert_string_equal(n.detail, detail);
      t_send_stop(e.rt, t, RUSM_EXIT_NORMAL, NULL);
      n = t_wait_note(&e, t);
      assert_int_equal(n.code, RUSM_EXIT_NORMAL);
    }
    /* a target that does not trap: normal from another is ignored, kill
     * ends it killed, anything else ends it with that reason */
    rusm_pid_t w = t_spawn_waiter(&e);
    assert_int_equal(rusm_exit(e.rt, w, r), 0);
    if (code == RUSM_EXIT_NORMAL) {
      t_ping(&e, w);
      t_send_stop(e.rt, w, RUSM_EXIT_NORMAL, NULL);
      n = t_wait_note(&e, w);
      assert_int_equal(n.code, RUSM_EXIT_NORMAL);
    } else if (code == RUSM_EXIT_KILL) {
      n = t_wait_note(&e, w);
      assert_int_equal(n.code, RUSM_EXIT_KILLED);
      assert_int_equal(n.len, 0);
    } else {
      n = t_wait_note(&e, w);
      assert_int_equal(n.code, code);
      assert_string_equal(n.detail, detail);
    }
  }
  /* out of range, bytes without data */
  rusm_reason bad = {RUSM_EXIT__COUNT, 0, NULL};
  assert_int_equal(rusm_exit(e.rt, e.pid, bad), RUSM_EINVAL);
  bad.code = (rusm_exit_code)-1;
  assert_int_equal(rusm_exit(e.rt, e.pid, bad), RUSM_EINVAL);
  rusm_reason nodata = {RUSM_EXIT_CUSTOM, 4, NULL};
  assert_int_equal(rusm_exit(e.rt, e.pid, nodata), RUSM_EINVAL);
  assert_int_equal(rusm_exit(NULL, e.pid, RUSM_REASON_NORMAL), RUSM_EINVAL);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Signals queued for a body blocked in native code                    */
/* ------------------------------------------------------------------ */

enum blocked_mode {
  B_RETURN,          /* returns at once: reaped with its queue unread */
  B_RECEIVE,         /* receives (fetching its queue) */
  B_TRAP_OFF,        /* stops trapping, then receives */
  B_TRAP_ON,         /* starts trapping, then receives the Exit */
  B_DEMONITOR_YIELD, /* demonitor with flush (fetches), then yields */
  B_EXIT_SELF_WINS   /* an exit signal queued, exits by itself first */
};

typedef struct blocker {
  sem_t *go;
  rusm_pid_t test;
  enum blocked_mode mode;
  bool trap_first;
  bool spawn_linked;
  rusm_pid_t child; /* spawned linked (spawn_linked) */
  int64_t rc;       /* of the demonitor (B_DEMONITOR_YIELD) */
} blocker;

static void blocked_fn(rusm_proc *self, void *arg) {
  blocker *b = arg;
  rusm_rt *rt = rusm_proc_rt(self);
  if (b->trap_first)
    rusm_trap_exit(self, true);
  if (b->spawn_linked) {
    rusm_spawn_opts o;
    rusm_spawn_opts_init(&o);
    o.link = true;
    /* on another scheduler: this one will be held, and a process queued
     * behind a native run is not reliably stolen (see the report) */
    rusm_proc_info pi;
    T_CHECK(rusm_proc_info_get(rt, rusm_self(self), &pi) == 0);
    o.scheduler = (int32_t)((pi.scheduler + 1) % rusm_rt_schedulers(rt));
    T_CHECK(rusm_spawn_stackless(rt, &t_waiter_ops, (void *)(uintptr_t)b->test,
                                 &o, &b->child) == 0);
  }
  t_send_u64(rt, b->test, TAG_READY, rusm_self(self));
  while (sem_wait(b->go) != 0) /* native: the mailbox is not fetched */
    ;
  rusm_filter never = rusm_filter_tag(TAG_NEVER);
  rusm_msg *m = NULL;
  switch (b->mode) {
  case B_RETURN:
    return;
  case B_TRAP_OFF:
    rusm_trap_exit(self, false);
    /* fall through */
  case B_RECEIVE:
    (void)rusm_receive(self, &never, 0, &m);
    T_CHECK(!"survived a queued exit signal");
    return;
  case B_TRAP_ON: {
    rusm_trap_exit(self, true);
    rusm_filter fx = rusm_filter_tag(RUSM_TAG_EXIT);
    T_CHECK(rusm_receive(self, &fx, -1, &m) == 0);
    rusm_exit_info xi;
    T_CHECK(rusm_msg_exit(m, &xi) == 0);
    t_note_send(rt, b->test, rusm_self(self), &xi.reason, xi.from);
    rusm_msg_free(m);
    return;
  }
  case B_DEMONITOR_YIELD:
    b->rc = rusm_demonitor(self, UINT64_C(0x5eed), RUSM_DEMONITOR_FLUSH);
    t_send_u64(rt, b->test, TAG_REPORT, (uint64_t)b->rc);
    rusm_yield(self); /* the fetched exit signal ends it here */
    T_CHECK(!"yield returned with an exit pending");
    return;
  case B_EXIT_SELF_WINS:
    rusm_exit_self(self, rusm_reason_str("own"));
    return;
  }
}

static void spawn_blocked(t_env *e, blocker *b, enum blocked_mode mode) {
  memset(b, 0, sizeof *b);
  b->go = gate_take();
  b->test = e->pid;
  b->mode = mode;
}

static rusm_pid_t start_blocked(t_env *e, blocker *b) {
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e->rt, blocked_fn, b, NULL, &p), 0);
  assert_true(t_recv_u64(e, TAG_READY) == p);
  return p;
}

typedef struct call_ctx {
  rusm_rt *rt;
  rusm_pid_t test;
  _Atomic rusm_pid_t ran_in;
} call_ctx;

/* rusm__push_call's function: reports where it ran, or that it did not. */
static void call_fn(rusm_proc *p, void *ctx, bool dead) {
  call_ctx *c = ctx;
  if (!dead)
    atomic_store(&c->ran_in, rusm_self(p));
  T_CHECK(dead == (p == NULL));
  t_send_u64(c->rt, c->test, TAG_CALLED, dead);
}

static void test_signals_queued_while_blocked(void **state) {
  (void)state;
  t_env e;
  core_start(&e, 2);
  rusm_trap_exit(e.me, true);
  static blocker bs[6]; /* read by the bodies: outlive a failed test */
  blocker *b = NULL;
  char why[64];

  /* 1. reaped with everything still queued: messages are dropped, the
   * queued exit signal is moot (it returned first), the link and the
   * monitor that arrived before its death get its real reason, the call
   * is answered dead, a linked neighbour's exit is forgotten */
  b = &bs[0];
  spawn_blocked(&e, b, B_RETURN);
  b->spawn_linked = true;
  rusm_pid_t p = start_blocked(&e, b);
  rusm_ref xr = watch(&e, b->child);
  t_send_u64(e.rt, p, TAG_DATA, 1);
  t_send_u64(e.rt, p, TAG_DATA, 2);
  assert_int_equal(rusm_exit(e.rt, p, rusm_reason_str("too late")), 0);
  assert_int_equal(rusm_link(e.me, p), 0);
  rusm_ref ref = watch(&e, p);
  call_ctx cc = {e.rt, e.pid, 0};
  assert_int_equal(rusm__push_call(e.rt, p, call_fn, &cc), 0);
  assert_int_equal(rusm_kill(e.rt, b->child), 0);
  wait_down(&e, xr, NULL, 0); /* its Exit to p is queued by now */
  t_wait_note(&e, b->child);
  uint64_t dropped = dropped_now(e.rt);
  gate_release(b->go);
  rusm_down_info d = wait_down(&e, ref, why, sizeof why);
  assert_int_equal(d.reason.code, RUSM_EXIT_NORMAL);
  rusm_exit_info xi;
  assert_true(take_exit(&e, p, T_GUARD_MS, &xi, NULL, 0));
  assert_int_equal(xi.reason.code, RUSM_EXIT_NORMAL);
  assert_int_equal(t_recv_u64(&e, TAG_CALLED), 1);
  assert_true(atomic_load(&cc.ran_in) == RUSM_PID_NONE);
  t_wait_idle(&e); /* the drops are counted after the Down goes out */
  assert_int_equal(dropped_now(e.rt), dropped + 2);

  /* 2. two exit signals fetched together: the first one wins */
  b = &bs[1];
  spawn_blocked(&e, b, B_RECEIVE);
  p = start_blocked(&e, b);
  ref = watch(&e, p);
  assert_int_equal(rusm_exit(e.rt, p, rusm_reason_str("first")), 0);
  assert_int_equal(rusm_exit(e.rt, p, rusm_reason_str("second")), 0);
  gate_release(b->go);
  d = wait_down(&e, ref, why, sizeof why);
  assert_int_equal(d.reason.code, RUSM_EXIT_CUSTOM);
  assert_string_equal(why, "first");

  /* 3. trap_exit decides when the signal is fetched, not when it is
   * sent: queued while trapping, fetched after turning it off */
  b = &bs[2];
  spawn_blocked(&e, b, B_TRAP_OFF);
  b->trap_first = true;
  p = start_blocked(&e, b);
  ref = watch(&e, p);
  assert_int_equal(rusm_exit(e.rt, p, rusm_reason_str("untrapped")), 0);
  gate_release(b->go);
  d = wait_down(&e, ref, why, sizeof why);
  assert_int_equal(d.reason.code, RUSM_EXIT_CUSTOM);
  assert_string_equal(why, "untrapped");

  /* ... and queued while not trapping, fetched after turning it on */
  b = &bs[3];
  spawn_blocked(&e, b, B_TRAP_ON);
  p = start_blocked(&e, b);
  ref = watch(&e, p);
  assert_int_equal(rusm_exit(e.rt, p, rusm_reason_str("trapped")), 0);
  gate_release(b->go);
  t_note n = t_wait_note(&e, p);
  assert_int_equal(n.code, RUSM_EXIT_CUSTOM);
  assert_string_equal(n.detail, "trapped");
  assert_true(n.value == e.pid);
  d = wait_down(&e, ref, NULL, 0);
  assert_int_equal(d.reason.code, RUSM_EXIT_NORMAL);

  /* 4. a fetch outside receive (demonitor with flush, of a ref it never
   * had) leaves the exit pending; the next runtime call ends it */
  b = &bs[4];
  spawn_blocked(&e, b, B_DEMONITOR_YIELD);
  p = start_blocked(&e, b);
  ref = watch(&e, p);
  assert_int_equal(rusm_exit(e.rt, p, rusm_reason_str("at-yield")), 0);
  gate_release(b->go);
  assert_int_equal(t_recv_u64(&e, TAG_REPORT), 0);
  d = wait_down(&e, ref, why, sizeof why);
  assert_int_equal(d.reason.code, RUSM_EXIT_CUSTOM);
  assert_string_equal(why, "at-yield");

  /* 5. a body that exits by itself before fetching: its own reason */
  b = &bs[5];
  spawn_blocked(&e, b, B_EXIT_SELF_WINS);
  p = start_blocked(&e, b);
  ref = watch(&e, p);
  assert_int_equal(rusm_exit(e.rt, p, rusm_reason_str("queued")), 0);
  gate_release(b->go);
  d = wait_down(&e, ref, why, sizeof why);
  assert_string_equal(why, "own");
  t_wait_idle(&e);
  drain_mine(&e);
  t_stop(&e);
}

/* An attached thread that is sent an exit signal and detaches without
 * receiving: it ends with the signal's reason, not normal. */
typedef struct att_arg {
  rusm_rt *rt;
  rusm_pid_t test;
  sem_t *go;
} att_arg;

static void *attached_then_detach(void *arg) {
  att_arg *a = arg;
  rusm_proc *me = NULL;
  T_CHECK(rusm_attach(a->rt, &me) == 0);
  t_send_u64(a->rt, a->test, TAG_READY, rusm_self(me));
  while (sem_wait(a->go) != 0)
    ;
  rusm_detach(me);
  T_CHECK(rusm_current() == NULL);
  return NULL;
}

static void test_detach_with_exit_pending(void **state) {
  (void)state;
  t_env e;
  core_start(&e, 0);
  /* static: read by the thread. Not a gate released by later tests: a
   * runtime destroyed under it reaps it, and it must then stay blocked */
  static att_arg a;
  static sem_t go;
  assert_int_equal(sem_init(&go, 0, 0), 0);
  a.rt = e.rt;
  a.test = e.pid;
  a.go = &go;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, attached_then_detach, &a), 0);
  rusm_pid_t p = (rusm_pid_t)t_recv_u64(&e, TAG_READY);
  rusm_ref ref = watch(&e, p);
  assert_int_equal(rusm_exit(e.rt, p, rusm_reason_str("at-detach")), 0);
  sem_post(a.go);
  assert_int_equal(pthread_join(th, NULL), 0);
  char why[32];
  rusm_down_info d = wait_down(&e, ref, why, sizeof why);
  assert_int_equal(d.reason.code, RUSM_EXIT_CUSTOM);
  assert_string_equal(why, "at-detach");
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Calls run in a process (rusm__push_call)                            */
/* ------------------------------------------------------------------ */

typedef struct waiting_arg {
  rusm_rt *rt;
  rusm_pid_t pid;
} waiting_arg;

static bool is_waiting(void *arg) {
  waiting_arg *a = arg;
  rusm_proc_info pi;
  return rusm_proc_info_get(a->rt, a->pid, &pi) == 0 &&
         pi.status == RUSM_STATUS_WAITING;
}

static void test_push_call(void **state) {
  (void)state;
  t_env e;
  core_start(&e, 0);
  call_ctx cc = {e.rt, e.pid, 0};
  rusm_pid_t w = t_spawn_waiter(&e);
  t_ping(&e, w);
  waiting_arg wa = {e.rt, w};
  assert_true(t_poll_until(is_waiting, &wa)); /* parked: the call wakes it */
  /* a live process runs it, in order with its messages */
  assert_int_equal(rusm__push_call(e.rt, w, call_fn, &cc), 0);
  assert_int_equal(t_recv_u64(&e, TAG_CALLED), 0);
  assert_true(atomic_load(&cc.ran_in) == w);
  /* out of memory: nothing is called */
  rusm__test_fail_one_alloc(0);
  assert_int_equal(rusm__push_call(e.rt, w, call_fn, &cc), RUSM_ENOMEM);
  rusm__test_fail_allocs(-1);
  rusm_filter fc = rusm_filter_tag(TAG_CALLED);
  t_expect_nothing(&e, &fc);
  /* dead, remote: answered dead at once */
  t_send_stop(e.rt, w, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, w);
  t_wait_idle(&e);
  atomic_store(&cc.ran_in, 0);
  assert_int_equal(rusm__push_call(e.rt, w, call_fn, &cc), RUSM_ENOPROC);
  assert_int_equal(t_recv_u64(&e, TAG_CALLED), 1);
  rusm_pid_t remote = rusm_pid_make(3, 1, 1);
  assert_int_equal(rusm__push_call(e.rt, remote, call_fn, &cc), RUSM_ENOPROC);
  assert_int_equal(t_recv_u64(&e, TAG_CALLED), 1);
  assert_true(atomic_load(&cc.ran_in) == RUSM_PID_NONE);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Signals that reach a process after its death                        */
/* ------------------------------------------------------------------ */

/*
 * A sender looks a process up (taking a reference), the process is reaped,
 * and only then does the sender push: a message, a call, a link, a
 * monitor. The last holder of the struct answers them. White box: the
 * test holds the reference with rusm__proc_get and pushes the nodes as
 * rusm_send / rusm__push_call / rusm_link / rusm_monitor would have, with
 * its own tables updated as those calls do after a successful push.
 */
static void test_signals_after_death(void **state) {
  (void)state;
  t_env e;
  core_start(&e, 0);
  rusm_trap_exit(e.me, true);
  rusm_pid_t w = t_spawn_waiter(&e);
  rusm_proc *p = rusm__proc_get(e.rt, w);
  assert_non_null(p);
  rusm_ref wref = watch(&e, w);
  assert_int_equal(rusm_kill(e.rt, w), 0);
  t_wait_note(&e, w);
  wait_down(&e, wref, NULL, 0);
  t_wait_idle(&e); /* reaped: only our reference is left */
  assert_true(rusm__exited(p));
  assert_int_equal(atomic_load(&p->refs), 1);
  /* the struct is still this pid's while referenced: dead to everyone */
  call_ctx cc = {e.rt, e.pid, 0};
  assert_int_equal(rusm__push_call(e.rt, w, call_fn, &cc), RUSM_ENOPROC);
  assert_int_equal(t_recv_u64(&e, TAG_CALLED), 1);
  assert_int_equal(rusm_exit(e.rt, w, RUSM_REASON_KILL), RUSM_ENOPROC);
  assert_false(rusm_is_alive(e.rt, w));
  assert_int_equal(atomic_load(&p->refs), 1);

  /* a message */
  rusm_msg *m = rusm__msg_new(RUSM__N_MSG, TAG_DATA, "late", 4);
  assert_non_null(m);
  rusm__mbox_push(&p->mbox, &m->node); /* not parked: nobody to wake */
  /* a call */
  rusm__call_fn fn = call_fn;
  void *ctx = &cc;
  uint8_t payload[sizeof fn + sizeof ctx];
  memcpy(payload, &fn, sizeof fn);
  memcpy(payload + sizeof fn, &ctx, sizeof ctx);
  m = rusm__msg_new(RUSM__N_CALL, 0, payload, sizeof payload);
  assert_non_null(m);
  rusm__mbox_push(&p->mbox, &m->node);
  /* a link and a monitor from the test thread */
  rusm_ref late_ref = UINT64_C(0x1a7e);
  assert_non_null(e.me->lk);
  assert_int_equal(rusm__map_put(&e.me->lk->links, w, 1), 1);
  assert_int_equal(rusm__map_put(&e.me->lk->mon_out, late_ref, w), 1);
  rusm__lk_sync(e.me);
  m = rusm__msg_new(RUSM__N_LINK, 0, NULL, 0);
  assert_non_null(m);
  rusm__mbox_push(&p->mbox, &m->node);
  m = rusm__msg_new(RUSM__N_MONITOR, 0, NULL, 0);
  assert_non_null(m);
  m->aux = (int64_t)late_ref;
  rusm__mbox_push(&p->mbox, &m->node);

  uint64_t dropped = dropped_now(e.rt);
  rusm__proc_unref(p); /* the last reference: the answers go out */
  assert_int_equal(dropped_now(e.rt), dropped + 1);
  assert_int_equal(t_recv_u64(&e, TAG_CALLED), 1);
  rusm_exit_info xi;
  assert_true(take_exit(&e, w, T_GUARD_MS, &xi, NULL, 0));
  assert_int_equal(xi.reason.code, RUSM_EXIT_NOPROC);
  rusm_down_info d = wait_down(&e, late_ref, NULL, 0);
  assert_true(d.pid == w);
  assert_int_equal(d.reason.code, RUSM_EXIT_NOPROC);
  t_stop(&e);
}

/* The same from a process on a scheduler thread (the drop is counted on
 * that scheduler). */
typedef struct late_arg {
  rusm_pid_t test, victim;
} late_arg;

static void late_sender(rusm_proc *self, void *arg) {
  late_arg *a = arg;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_proc *p = rusm__proc_get(rt, a->victim);
  T_CHECK(p != NULL);
  if (!p)
    return;
  rusm_ref ref;
  T_CHECK(rusm_monitor(self, a->victim, &ref) == 0);
  T_CHECK(rusm_kill(rt, a->victim) == 0);
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  rusm_msg *m = NULL;
  T_CHECK(rusm_receive(self, &f, -1, &m) == 0);
  rusm_msg_free(m);
  while (atomic_load(&p->refs) > 1) /* the reaper drops its reference */
    rusm_yield(self);
  m = rusm__msg_new(RUSM__N_MSG, TAG_DATA, "late", 4);
  T_CHECK(m != NULL);
  if (m)
    rusm__mbox_push(&p->mbox, &m->node);
  rusm__proc_unref(p);
  t_send_u64(rt, a->test, T_TAG_DONE, 1);
}

static void test_late_message_from_scheduler(void **state) {
  (void)state;
  t_env e;
  core_start(&e, 0);
  late_arg a = {e.pid, t_spawn_waiter(&e)};
  t_ping(&e, a.victim);
  uint64_t dropped = dropped_now(e.rt);
  rusm_pid_t s;
  assert_int_equal(rusm_spawn_stackful(e.rt, late_sender, &a, NULL, &s), 0);
  t_wait_note(&e, a.victim);
  assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 1);
  t_wait_idle(&e);
  assert_int_equal(dropped_now(e.rt), dropped + 1);
  t_stop(&e);
}

/* A link exit that arrives after the link was removed has no effect. */
static void test_link_exit_after_unlink(void **state) {
  (void)state;
  t_env e;
  core_start(&e, 0);
  rusm_trap_exit(e.me, true);
  rusm_pid_t w = t_spawn_waiter(&e);
  assert_int_equal(rusm_link(e.me, w), 0);
  t_ping(&e, w); /* the link is in force on both sides */
  assert_int_equal(rusm_kill(e.rt, w), 0);
  t_wait_idle(&e); /* its Exit to us is queued, not fetched */
  assert_int_equal(rusm_unlink(e.me, w), 0);
  assert_false(take_exit(&e, w, 0, NULL, NULL, 0));
  t_wait_note(&e, w);
  /* not trapping, same thing: it does not kill us either */
  rusm_trap_exit(e.me, false);
  w = t_spawn_waiter(&e);
  assert_int_equal(rusm_link(e.me, w), 0);
  t_ping(&e, w);
  assert_int_equal(rusm_exit(e.rt, w, rusm_reason_str("bye")), 0);
  t_wait_idle(&e);
  assert_int_equal(rusm_unlink(e.me, w), 0);
  t_wait_note(&e, w);
  assert_true(rusm_is_alive(e.rt, e.pid));
  t_stop(&e);
}

/* Malformed Exit / Down payloads (only the runtime can make system-tagged
 * messages: rusm__send_sys) are rejected by the decoders. */
static void test_malformed_exit_and_down(void **state) {
  (void)state;
  t_env e;
  core_start(&e, 0);
  uint8_t buf[RUSM_DOWN_PAYLOAD_HDR + 4];
  memset(buf, 0, sizeof buf);
  uint32_t big = 100;
  /* Exit: header says 100 detail bytes, 4 follow */
  memcpy(buf + 12, &big, sizeof big);
  assert_int_equal(rusm__send_sys(e.rt, e.pid, RUSM_TAG_EXIT, buf,
                                  RUSM_EXIT_PAYLOAD_HDR + 4),
                   0);
  /* Down: the same */
  memset(buf, 0, sizeof buf);
  memcpy(buf + 20, &big, sizeof big);
  assert_int_equal(rusm__send_sys(e.rt, e.pid, RUSM_TAG_DOWN, buf, sizeof buf),
                   0);
  /* shorter than a header */
  assert_int_equal(rusm__send_sys(e.rt, e.pid, RUSM_TAG_EXIT, buf, 8), 0);
  assert_int_equal(rusm__send_sys(e.rt, e.pid, RUSM_TAG_DOWN, buf, 8), 0);
  rusm_exit_info xi;
  rusm_down_info di;
  for (int i = 0; i < 4; i++) {
    rusm_msg *m = NULL;
    assert_int_equal(rusm_receive(e.me, NULL, T_GUARD_MS, &m), 0);
    assert_int_equal(rusm_msg_exit(m, &xi), RUSM_EINVAL);
    assert_int_equal(rusm_msg_down(m, &di), RUSM_EINVAL);
    rusm_msg_free(m);
  }
  /* rusm__send_sys: its own argument checks and failures */
  assert_int_equal(rusm__send_sys(NULL, e.pid, 1, NULL, 0), RUSM_EINVAL);
  assert_int_equal(rusm__send_sys(e.rt, e.pid, 1, NULL, 3), RUSM_EINVAL);
  rusm__test_fail_one_alloc(0);
  assert_int_equal(rusm__send_sys(e.rt, e.pid, 1, "x", 1), RUSM_ENOMEM);
  rusm__test_fail_allocs(-1);
  assert_int_equal(rusm_msg_exit(NULL, &xi), RUSM_EINVAL);
  assert_int_equal(rusm_msg_down(NULL, &di), RUSM_EINVAL);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* The process table                                                   */
/* ------------------------------------------------------------------ */

/*
 * A slot whose generation reaches RUSM_PID_GEN_MAX is retired, never
 * reused, so a stale pid cannot reach a later process. 268M spawn/exit
 * cycles of one slot are out of a unit test's reach (see the report), so
 * the test moves the free slot's generation close to the end first (white
 * box, under the free-list lock) and then lets it run out for real.
 */
static void test_generation_retire(void **state) {
  (void)state;
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = 1;
  o.max_processes = 2; /* the test thread and one more */
  t_env e;
  core_start_opts(&e, &o);
  rusm_pid_t w = t_spawn_waiter(&e);
  uint32_t slot = rusm_pid_slot(w);
  rusm_pid_t x;
  assert_int_equal(rusm_spawn_stackless(e.rt, &t_waiter_ops, NULL, NULL, &x),
                   RUSM_ELIMIT); /* full */
  t_send_stop(e.rt, w, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, w);
  t_wait_idle(&e);
  rusm_proc *p = rusm__proc_at(e.rt, slot);
  assert_non_null(p);
  pthread_mutex_lock(&e.rt->free_lock);
  assert_int_equal(atomic_load(&p->refs), 0); /* free, on the free list */
  p->gen = RUSM_PID_GEN_MAX - 2;
  pthread_mutex_unlock(&e.rt->free_lock);
  rusm_pid_t last[2];
  for (int i = 0; i < 2; i++) {
    last[i] = t_spawn_waiter(&e);
    assert_int_equal(rusm_pid_slot(last[i]), slot);
    assert_int_equal(rusm_pid_gen(last[i]), RUSM_PID_GEN_MAX - 1 + i);
    t_ping(&e, last[i]);
    t_send_stop(e.rt, last[i], RUSM_EXIT_NORMAL, NULL);
    t_wait_note(&e, last[i]);
    t_wait_idle(&e);
  }
  /* the slot is gone for good: the table stays full */
  assert_int_equal(rusm_spawn_stackless(e.rt, &t_waiter_ops, NULL, NULL, &x),
                   RUSM_ELIMIT);
  pthread_mutex_lock(&e.rt->free_lock);
  assert_int_equal(e.rt->retired, 1);
  pthread_mutex_unlock(&e.rt->free_lock);
  for (int i = 0; i < 2; i++) {
    assert_false(rusm_is_alive(e.rt, last[i]));
    assert_int_equal(rusm_kill(e.rt, last[i]), RUSM_ENOPROC);
  }
  assert_false(rusm_is_alive(e.rt, w));
  t_stop(&e);
}

static rusm_next idle_init(rusm_proc *self, void **state) {
  (void)self;
  (void)state;
  return rusm_next_wait();
}
static rusm_next idle_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)self;
  (void)state;
  (void)m;
  return rusm_next_wait();
}
static const rusm_stackless_ops idle_ops = {idle_init, idle_handle, NULL};

/* More processes alive at once than the first 64 chunks of 256 structs:
 * the chunk list grows, and every process stays reachable. */
static void test_table_growth(void **state) {
  (void)state;
  enum { N = 64 * 256 + 300 };
  t_env e;
  core_start(&e, 0);
  rusm_pid_t *pids = calloc(N, sizeof *pids);
  assert_non_null(pids);
  for (size_t i = 0; i < N; i++)
    assert_int_equal(
        rusm_spawn_stackless(e.rt, &idle_ops, NULL, NULL, &pids[i]), 0);
  assert_true(rusm_process_count(e.rt) >= N);
  for (size_t i = 0; i < N; i += 997)
    assert_true(rusm_is_alive(e.rt, pids[i]));
  assert_true(rusm_is_alive(e.rt, pids[N - 1]));
  for (size_t i = 0; i < N; i++)
    assert_int_equal(rusm_kill(e.rt, pids[i]), 0);
  t_wait_idle(&e);
  free(pids);
  t_stop(&e);
}

/* Allocation failures while the table is made and first grown. */
static void test_table_oom(void **state) {
  (void)state;
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = 1;
  int nomem = 0;
  for (int k = 0; k < 6; k++) {
    rusm_rt *rt = NULL;
    rusm__test_fail_one_alloc(k);
    int rc = rusm_rt_create(&o, &rt);
    rusm__test_fail_allocs(-1);
    assert_true(ok_or_nomem(rc));
    if (rc == 0)
      rusm_rt_destroy(rt);
    else
      nomem++;
  }
  assert_true(nomem >= 2); /* the runtime struct, then the table */
  /* the first process of a runtime grows the table: its chunk list, then
   * the chunk; neither failure is lasting */
  rusm_rt *rt = NULL;
  assert_int_equal(rusm_rt_create(&o, &rt), 0);
  rusm_proc *me = NULL;
  for (int k = 0; k < 2; k++) {
    rusm__test_fail_one_alloc(k);
    int rc = rusm_attach(rt, &me);
    rusm__test_fail_allocs(-1);
    assert_int_equal(rc, RUSM_ELIMIT);
  }
  assert_int_equal(rusm_attach(rt, &me), 0);
  rusm_detach(me);
  rusm_rt_destroy(rt);
}

/* ------------------------------------------------------------------ */
/* Stackful bodies and attached threads                                */
/* ------------------------------------------------------------------ */

static rusm_next sl_receive_init(rusm_proc *self, void **state) {
  rusm_pid_t test = (rusm_pid_t)(uintptr_t)*state;
  rusm_msg *m = NULL;
  int64_t rc[3];
  rc[0] = rusm_receive(self, NULL, 0, &m);
  rc[1] = rusm_exit_self(self, RUSM_REASON_NORMAL);
  rusm_yield(self); /* no effect in a callback */
  rc[2] = 0;
  T_CHECK(rusm_send(rusm_proc_rt(self), test, TAG_REPORT, rc, sizeof rc) == 0);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}
static const rusm_stackless_ops sl_receive_ops = {sl_receive_init, NULL, NULL};

static void consume_fn(rusm_proc *self, void *arg) {
  rusm_pid_t test = (rusm_pid_t)(uintptr_t)arg;
  for (int i = 0; i < 4; i++)
    rusm_consume(self, 1000000); /* yields each time */
  t_send_u64(rusm_proc_rt(self), test, T_TAG_DONE, 1);
  rusm_msg *m = NULL;
  rusm_filter f = rusm_filter_tag(T_TAG_STOP);
  T_CHECK(rusm_receive(self, &f, -1, &m) == 0);
  rusm_msg_free(m);
}

typedef struct attach_try {
  rusm_rt *rt;
  int rc;
} attach_try;

static void *try_attach(void *arg) {
  attach_try *a = arg;
  rusm_proc *me = NULL;
  a->rc = rusm_attach(a->rt, &me);
  if (a->rc == 0)
    rusm_detach(me);
  return NULL;
}

static int attach_rc(rusm_rt *rt) {
  attach_try a = {rt, -1000};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, try_attach, &a), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  return a.rc;
}

static void noop_fn(rusm_proc *self, void *arg) {
  (void)self;
  (void)arg;
}

#ifndef RUSM_SANITIZED
/* The virtual size of this process in bytes, or 0. */
static uint64_t vm_size(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f)
    return 0;
  char line[256];
  uint64_t kb = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmSize: %" SCNu64 " kB", &kb) == 1)
      break;
  fclose(f);
  return kb * 1024;
}
#endif

static void test_stackful_and_attached_edges(void **state) {
  (void)state;
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = 2;
  o.max_processes = 4;
  t_env e;
  core_start_opts(&e, &o);
  rusm_msg *m = NULL;
  /* calls that need the process's own stack */
  assert_int_equal(rusm_receive(NULL, NULL, 0, &m), RUSM_EINVAL);
  assert_int_equal(rusm_receive(e.me, NULL, 0, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_try_receive(NULL, NULL, &m), RUSM_EINVAL);
  assert_int_equal(rusm_try_receive(e.me, NULL, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_exit_self(NULL, RUSM_REASON_NORMAL), RUSM_EINVAL);
  assert_int_equal(rusm_exit_self(e.me, RUSM_REASON_NORMAL), RUSM_ECONTEXT);
  rusm_yield(NULL);
  rusm_yield(e.me); /* not a stackful body: nothing happens */
  rusm_proc *other = NULL;
  assert_int_equal(rusm_attach(NULL, &other), RUSM_EINVAL);
  assert_int_equal(rusm_attach(e.rt, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_attach(e.rt, &other), RUSM_EEXIST);
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &sl_receive_ops,
                                        (void *)(uintptr_t)e.pid, NULL, &p),
                   0);
  rusm_msg *r = t_recv_tag(&e, TAG_REPORT);
  int64_t rc[3];
  memcpy(rc, rusm_msg_data(r), sizeof rc);
  rusm_msg_free(r);
  assert_int_equal(rc[0], RUSM_ECONTEXT);
  assert_int_equal(rc[1], RUSM_ECONTEXT);
  t_wait_idle(&e); /* its slot is free again */
  /* another process's handle, from this thread */
  rusm_pid_t w = t_spawn_stackful_waiter(&e);
  t_ping(&e, w);
  rusm_proc *wp = rusm__proc_get(e.rt, w);
  assert_non_null(wp);
  assert_int_equal(rusm_receive(wp, NULL, 0, &m), RUSM_ECONTEXT);
  assert_int_equal(rusm_exit_self(wp, RUSM_REASON_NORMAL), RUSM_ECONTEXT);
  rusm__proc_unref(wp);
  assert_int_equal(rusm_spawn_stackful(NULL, noop_fn, NULL, NULL, &p),
                   RUSM_EINVAL);
  assert_int_equal(rusm_spawn_stackful(e.rt, NULL, NULL, NULL, &p),
                   RUSM_EINVAL);
  rusm_spawn_opts so;
  rusm_spawn_opts_init(&so);
  so.stack_size = 100;
  assert_int_equal(rusm_spawn_stackful(e.rt, noop_fn, NULL, &so, &p),
                   RUSM_EINVAL);

  /* consume: a long native computation is charged and preempted */
  rusm_pid_t c;
  assert_int_equal(
      rusm_spawn_stackful(e.rt, consume_fn, (void *)(uintptr_t)e.pid, NULL, &c),
      0);
  assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 1);
  rusm_proc_info pi;
  assert_int_equal(rusm_proc_info_get(e.rt, c, &pi), 0);
  assert_true(pi.reductions >= 4000000);
  rusm_consume(NULL, 10);
  rusm_consume(e.me, 10); /* not on a scheduler: no effect */

  /* the table is full (test thread, two stackful, one more fits) */
  rusm_pid_t filler = t_spawn_waiter(&e);
  assert_int_equal(rusm_spawn_stackful(e.rt, noop_fn, NULL, NULL, &p),
                   RUSM_ELIMIT);
  assert_int_equal(attach_rc(e.rt), RUSM_ELIMIT);
  t_send_stop(e.rt, filler, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, filler);
  t_send_stop(e.rt, c, RUSM_EXIT_NORMAL, NULL);
  t_send_stop(e.rt, w, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, w);
  t_wait_idle(&e);

#ifndef RUSM_SANITIZED
  /* no memory for a stack: the process exits with a reason that says so
   * (address space capped just above what is mapped now; a 1 GiB stack
   * does not fit, everything small still does) */
  struct rlimit old;
  uint64_t vm = vm_size();
  if (vm != 0 && getrlimit(RLIMIT_AS, &old) == 0 &&
      (old.rlim_max == RLIM_INFINITY ||
       old.rlim_max > vm + (UINT64_C(512) << 20))) {
    so.stack_size = 1u << 30;
    rusm_ref ref = 0;
    so.monitor = true; /* it may be gone before a later monitor */
    so.monitor_ref = &ref;
    rusm_pid_t big;
    struct rlimit cap = old;
    cap.rlim_cur = vm + (UINT64_C(256) << 20);
    assert_int_equal(setrlimit(RLIMIT_AS, &cap), 0);
    int src = rusm_spawn_stackful(e.rt, noop_fn, NULL, &so, &big);
    char why[64] = "";
    rusm_down_info d;
    memset(&d, 0, sizeof d);
    if (src == 0)
      d = wait_down(&e, ref, why, sizeof why);
    assert_int_equal(setrlimit(RLIMIT_AS, &old), 0);
    assert_int_equal(src, 0);
    assert_int_equal(d.reason.code, RUSM_EXIT_CUSTOM);
    assert_string_equal(why, "no memory for a stack");
  }
#endif

  /* closing: no stackful spawn, no attach */
  assert_int_equal(rusm_rt_shutdown(e.rt, T_GUARD_MS, NULL), 0);
  assert_int_equal(rusm_spawn_stackful(e.rt, noop_fn, NULL, NULL, &p),
                   RUSM_ESHUTDOWN);
  assert_int_equal(attach_rc(e.rt), RUSM_ESHUTDOWN);
  drain_mine(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Process API edges                                                   */
/* ------------------------------------------------------------------ */

static rusm_step null_step(rusm_proc *self, void *state) {
  (void)self;
  (void)state;
  return (rusm_step){RUSM_STEP_EXIT, -1, RUSM_REASON_NORMAL};
}

static void count_hook(void *arg) { atomic_fetch_add((atomic_int *)arg, 1); }

static void test_proc_api_edges(void **state) {
  (void)state;
  t_env e;
  core_start(&e, 0);
  rusm_pid_t p;
  /* spawn_body */
  rusm_body_ops no_step = {"custom", NULL, NULL};
  assert_int_equal(rusm_spawn_body(NULL, &no_step, NULL, NULL, &p),
                   RUSM_EINVAL);
  assert_int_equal(rusm_spawn_body(e.rt, NULL, NULL, NULL, &p), RUSM_EINVAL);
  assert_int_equal(rusm_spawn_body(e.rt, &no_step, NULL, NULL, &p),
                   RUSM_EINVAL);
  rusm_body_ops ok = {"custom", null_step, NULL};
  rusm_spawn_opts so;
  rusm_spawn_opts_init(&so);
  rusm_ref ref = 0;
  so.monitor = true;
  so.monitor_ref = &ref;
  assert_int_equal(rusm_spawn_body(e.rt, &ok, NULL, &so, &p), 0);
  assert_int_equal(wait_down(&e, ref, NULL, 0).reason.code, RUSM_EXIT_NORMAL);

  /* a bounded mailbox sheds user messages past its capacity */
  rusm_spawn_opts_init(&so);
  so.mailbox_capacity = 2;
  rusm_pid_t w;
  assert_int_equal(rusm_spawn_stackless(e.rt, &t_waiter_ops,
                                        (void *)(uintptr_t)e.pid, &so, &w),
                   0);
  uint64_t shed = t_metrics(e.rt)->shed;
  for (uint64_t i = 0; i < 5; i++) /* data tags: the waiter leaves them */
    t_send_u64(e.rt, w, TAG_DATA, i);
  assert_int_equal(t_metrics(e.rt)->shed, shed + 3);
  rusm_proc_info pi;
  assert_int_equal(rusm_proc_info_get(e.rt, w, &pi), 0);
  assert_int_equal(pi.mailbox_capacity, 2);
  assert_int_equal(pi.shed, 3);
  assert_int_equal(pi.mailbox_len, 2);
  assert_int_equal(rusm_proc_info_get(NULL, w, &pi), RUSM_EINVAL);
  assert_int_equal(rusm_proc_info_get(e.rt, w, NULL), RUSM_EINVAL);

  /* send failures */
  rusm__test_fail_one_alloc(0);
  assert_int_equal(rusm_send(e.rt, w, TAG_DATA, "x", 1), RUSM_ENOMEM);
  rusm_buf *b = rusm_buf_from("abc", 3);
  assert_non_null(b);
  rusm__test_fail_one_alloc(0);
  assert_int_equal(rusm_send_buf(e.rt, w, TAG_DATA, b), RUSM_ENOMEM);
  rusm__test_fail_allocs(-1);
  rusm_buf_unref(b);
  /* system-tagged messages from the runtime's modules */
  assert_int_equal(rusm__send_sys(e.rt, e.pid, RUSM_TAG_SYSTEM | 77, "sys", 3),
                   0);
  rusm_msg *m = t_recv_tag(&e, RUSM_TAG_SYSTEM | 77);
  assert_int_equal(rusm_msg_len(m), 3);
  assert_memory_equal(rusm_msg_data(m), "sys", 3);
  rusm_msg_free(m);

  /* on_exit */
  assert_int_equal(rusm_on_exit(NULL, count_hook, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_on_exit(e.me, NULL, NULL), RUSM_EINVAL);
  rusm__test_fail_one_alloc(0);
  atomic_int hooks = 0;
  assert_int_equal(rusm_on_exit(e.me, count_hook, &hooks), RUSM_ENOMEM);
  rusm__test_fail_allocs(-1);

  /* a registered process's name goes with it */
  assert_int_equal(rusm_register(e.rt, "core-paths", w), 0);
  assert_true(rusm_whereis(e.rt, "core-paths") == w);
  ref = watch(&e, w);
  assert_int_equal(rusm_kill(e.rt, w), 0);
  wait_down(&e, ref, NULL, 0);
  assert_true(rusm_whereis(e.rt, "core-paths") == RUSM_PID_NONE);
  t_wait_note(&e, w);

  /* observers */
  rusm_set_memory(NULL, 1);
  rusm_set_memory(e.me, UINT64_C(1) << 30);
  rusm_obs_proc op;
  assert_int_equal(rusm_obs_process(e.rt, e.pid, &op), 0);
  assert_true(op.memory >= (UINT64_C(1) << 30));
  rusm_set_memory(e.me, 0);
  assert_false(rusm_is_alive(NULL, e.pid));
  assert_int_equal(rusm_process_count(NULL), 0);
  assert_int_equal(hooks, 0);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Links and monitors out of memory                                    */
/* ------------------------------------------------------------------ */

enum { OOM_LINK, OOM_MONITOR, OOM_MONITOR_DEAD, OOM_SPAWN_LINKS, OOM__N };

typedef struct oom_arg {
  rusm_pid_t test, target;
  int what;
  int64_t k;
} oom_arg;

/* Runs in a fresh process (no tables yet): arms the failure, makes one
 * call, reports its result. */
static void oom_body(rusm_proc *self, void *arg) {
  oom_arg *a = arg;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_ref ref = 0;
  rusm_pid_t c = RUSM_PID_NONE;
  int64_t out[2] = {-1000, 0};
  rusm_spawn_opts so;
  rusm_spawn_opts_init(&so);
  so.link = so.monitor = true;
  so.monitor_ref = &ref;
  rusm__test_fail_one_alloc(a->k);
  switch (a->what) {
  case OOM_LINK:
    out[0] = rusm_link(self, a->target);
    break;
  case OOM_MONITOR:
  case OOM_MONITOR_DEAD:
    out[0] = rusm_monitor(self, a->target, &ref);
    break;
  case OOM_SPAWN_LINKS:
    out[0] = rusm_spawn_stackless(rt, &idle_ops, NULL, &so, &c);
    break;
  }
  rusm__test_fail_allocs(-1);
  if (a->what == OOM_MONITOR_DEAD) {
    /* a Down is queued exactly when the call worked */
    rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
    rusm_msg *m = NULL;
    out[1] = rusm_receive(self, &f, 0, &m) == 0;
    rusm_msg_free(m);
  }
  if (c != RUSM_PID_NONE) {
    rusm_unlink(self, c);
    rusm_kill(rt, c);
  }
  if (a->what != OOM_MONITOR_DEAD)
    rusm_unlink(self, a->target);
  T_CHECK(rusm_send(rt, a->test, TAG_REPORT, out, sizeof out) == 0);
}

static void test_link_monitor_oom(void **state) {
  (void)state;
  t_env e;
  core_start(&e, 2);
  rusm_pid_t target = t_spawn_waiter(&e);
  /* its tables get room first: the failures below are the callers' */
  assert_int_equal(rusm_link(e.me, target), 0);
  rusm_ref tr = watch(&e, target);
  t_ping(&e, target);
  assert_int_equal(rusm_unlink(e.me, target), 0);
  assert_int_equal(rusm_demonitor(e.me, tr, RUSM_DEMONITOR_FLUSH), 1);
  rusm_pid_t dead = t_spawn_waiter(&e);
  t_send_stop(e.rt, dead, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, dead);
  for (int what = 0; what < OOM__N; what++) {
    int nomem = 0;
    for (int k = 0; k < 8; k++) {
      oom_arg a = {e.pid, what == OOM_MONITOR_DEAD ? dead : target, what, k};
      rusm_pid_t p;
      assert_int_equal(rusm_spawn_stackful(e.rt, oom_body, &a, NULL, &p), 0);
      rusm_msg *m = t_recv_tag(&e, TAG_REPORT);
      int64_t out[2];
      memcpy(out, rusm_msg_data(m), sizeof out);
      rusm_msg_free(m);
      if (!ok_or_nomem((int)out[0]))
        fail_msg("what %d, k %d: %s", what, k, rusm_err_name((int)out[0]));
      if (out[0] == RUSM_ENOMEM)
        nomem++;
      if (what == OOM_MONITOR_DEAD)
        assert_int_equal(out[1], out[0] == 0);
      /* the target survives whatever happened to its watcher */
      t_ping(&e, target);
    }
    if (nomem == 0)
      fail_msg("what %d: no RUSM_ENOMEM seen", what);
  }
  /* exit signals need a node too */
  rusm__test_fail_one_alloc(0);
  assert_int_equal(rusm_exit(e.rt, target, rusm_reason_str("x")), RUSM_ENOMEM);
  rusm__test_fail_allocs(-1);
  t_ping(&e, target);
  t_send_stop(e.rt, target, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, target);
  t_wait_idle(&e);
  drain_mine(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* REGRESSIONS                                                         */
/* ------------------------------------------------------------------ */

/*
 * Regression (a core bug, fixed): a link or monitor whose entry the target
 * cannot store (its table allocation fails when it fetches the signal) kills
 * the target with {custom, "enomem"}, but the caller, whose rusm_link /
 * rusm_monitor returned 0, never hears of it: no Exit, no Down ("a link that
 * returned 0 always fires"; "exactly one Down arrives"). A supervisor call made
 * at that moment would wait forever. Deterministic: the target has no tables
 * yet, the caller's own tables have room, so the caller's signal node is
 * the one allocation before the target's table.
 */
static void test_regression_link_monitor_lost_on_oom(void **state) {
  (void)state;
  t_env e;
  core_start(&e, 0);
  rusm_trap_exit(e.me, true);
  /* give the test thread's own tables room */
  rusm_pid_t z = t_spawn_waiter(&e);
  assert_int_equal(rusm_link(e.me, z), 0);
  rusm_ref zr = watch(&e, z);
  t_ping(&e, z);
  assert_int_equal(rusm_unlink(e.me, z), 0);
  assert_int_equal(rusm_demonitor(e.me, zr, RUSM_DEMONITOR_FLUSH), 1);

  bool lost[2] = {false, false};
  for (int i = 0; i < 2; i++) {
    rusm_pid_t t = t_spawn_waiter(&e);
    t_ping(&e, t); /* parked, no tables */
    rusm_ref ref = 0;
    rusm__test_fail_one_alloc(1);
    int rc = i == 0 ? rusm_link(e.me, t) : rusm_monitor(e.me, t, &ref);
    t_note n = t_wait_note(&e, t); /* it died */
    rusm__test_fail_allocs(-1);
    assert_int_equal(rc, 0);
    assert_int_equal(n.code, RUSM_EXIT_CUSTOM);
    assert_string_equal(n.detail, "enomem");
    /* wait until its reaping is over (the live count drops last), so
     * that anything it sent on its way out is queued for us */
    int64_t end = rusm_now_ns() + (int64_t)T_GUARD_MS * 1000000;
    while (rusm_process_count(e.rt) > 2 && rusm_now_ns() < end)
      sched_yield();
    assert_int_equal(rusm_process_count(e.rt), 2);
    if (i == 0) {
      lost[0] = !take_exit(&e, t, 0, NULL, NULL, 0);
    } else {
      rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
      f.pred = down_ref;
      f.pred_arg = &ref;
      rusm_msg *m = NULL;
      lost[1] = rusm_receive(e.me, &f, 0, &m) != 0;
      rusm_msg_free(m);
      if (lost[1])
        rusm_demonitor(e.me, ref, RUSM_DEMONITOR_FLUSH);
    }
    if (i == 0)
      rusm_unlink(e.me, t);
  }
  t_send_stop(e.rt, z, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, z);
  t_wait_idle(&e);
  drain_mine(&e);
  t_stop(&e);
  if (lost[0] || lost[1])
    fail_msg("regression: the target died of enomem but the caller got "
             "%s%s%s",
             lost[0] ? "no Exit (link)" : "", lost[0] && lost[1] ? " and " : "",
             lost[1] ? "no Down (monitor)" : "");
}

/*
 * Regression (a core bug, fixed): max_processes is not reachable from outside
 * the schedulers once processes have exited. Structs freed on a scheduler while
 * the table still had room stay in that scheduler's private cache (ptab.c
 * final_free); when the table later fills up, a spawn from a thread that is not
 * a scheduler (or from another scheduler) sees an empty global free list and a
 * full table and fails with RUSM_ELIMIT, although up to CACHE_MAX structs per
 * scheduler are free. Expected: 299 more processes fit next to the test thread
 * with max_processes = 300.
 */
static void test_regression_free_slots_hidden_in_caches(void **state) {
  (void)state;
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = 2;
  o.max_processes = 300; /* more than one chunk: caching is on at first */
  t_env e;
  core_start_opts(&e, &o);
  enum { CHURN = 200 };
  rusm_pid_t *p = calloc(o.max_processes, sizeof *p);
  assert_non_null(p);
  for (int i = 0; i < CHURN; i++)
    assert_int_equal(rusm_spawn_stackless(e.rt, &idle_ops, NULL, NULL, &p[i]),
                     0);
  for (int i = 0; i < CHURN; i++)
    assert_int_equal(rusm_kill(e.rt, p[i]), 0);
  t_wait_idle(&e);
  uint32_t n = 0;
  int rc = 0;
  while (n < o.max_processes &&
         (rc = rusm_spawn_stackless(e.rt, &idle_ops, NULL, NULL, &p[n])) == 0)
    n++;
  assert_int_equal(rc, RUSM_ELIMIT);
  for (uint32_t i = 0; i < n; i++)
    rusm_kill(e.rt, p[i]);
  t_wait_idle(&e);
  free(p);
  t_stop(&e);
  if (n != o.max_processes - 1)
    fail_msg("regression: only %u of %u processes could be spawned: "
             "free slots stay in the schedulers' caches",
             n, o.max_processes - 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_u64map),
      cmocka_unit_test(test_remote_and_unknown_targets),
      cmocka_unit_test(test_exit_every_code),
      cmocka_unit_test(test_signals_queued_while_blocked),
      cmocka_unit_test(test_detach_with_exit_pending),
      cmocka_unit_test(test_push_call),
      cmocka_unit_test(test_signals_after_death),
      cmocka_unit_test(test_late_message_from_scheduler),
      cmocka_unit_test(test_link_exit_after_unlink),
      cmocka_unit_test(test_malformed_exit_and_down),
      cmocka_unit_test(test_generation_retire),
      cmocka_unit_test(test_table_growth),
      cmocka_unit_test(test_table_oom),
      cmocka_unit_test(test_stackful_and_attached_edges),
      cmocka_unit_test(test_proc_api_edges),
      cmocka_unit_test(test_link_monitor_oom),
      cmocka_unit_test(test_regression_link_monitor_lost_on_oom),
      cmocka_unit_test(test_regression_free_slots_hidden_in_caches),
  };
  return T_RUN(tests);
}
