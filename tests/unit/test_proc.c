// ctest-labels: concurrent
/*
 * Unit tests: processes — pids, spawn (stackless, stackful, custom bodies),
 * exit and kill, on_exit hooks, the process table (stale pids, limits),
 * attached threads, rusm_proc_info, rusm_rt_wait_idle, rusm_rt_destroy.
 */
#include "support.h"

#include <pthread.h>

/* ------------------------------------------------------------------ */
/* Pids                                                                */
/* ------------------------------------------------------------------ */

static void test_pid_helpers_and_format(void **state) {
  (void)state;
  rusm_pid_t p = rusm_pid_make(3, 12345, 77);
  assert_int_equal(rusm_pid_node(p), 3);
  assert_int_equal(rusm_pid_slot(p), 12345);
  assert_int_equal(rusm_pid_gen(p), 77);
  rusm_pid_t max = rusm_pid_make((uint16_t)RUSM_PID_NODE_MAX, RUSM_PID_SLOT_MAX,
                                 RUSM_PID_GEN_MAX);
  assert_true(max == UINT64_MAX);
  assert_int_equal(rusm_pid_node(max), RUSM_PID_NODE_MAX);
  /* Out-of-range parts are masked, never spill into a neighbour. */
  rusm_pid_t masked = rusm_pid_make(UINT16_MAX, 0, 0);
  assert_int_equal(rusm_pid_slot(masked), 0);
  assert_int_equal(rusm_pid_gen(masked), 0);
  assert_int_equal(rusm_pid_node(rusm_pid_make(0, UINT32_MAX, 0)), 0);
  assert_int_equal(rusm_pid_slot(rusm_pid_make(0, 0, UINT32_MAX)), 0);
  assert_int_equal(rusm_pid_slot(max), RUSM_PID_SLOT_MAX);
  assert_int_equal(rusm_pid_gen(max), RUSM_PID_GEN_MAX);

  char buf[64];
  int n = rusm_pid_format(rusm_pid_make(0, 5, 3), buf, sizeof buf);
  assert_string_equal(buf, "<0.5.3>");
  assert_int_equal(n, 7);

  char want[64];
  snprintf(want, sizeof want, "<%u.%u.%u>", (unsigned)RUSM_PID_NODE_MAX,
           (unsigned)RUSM_PID_SLOT_MAX, (unsigned)RUSM_PID_GEN_MAX);
  n = rusm_pid_format(max, buf, sizeof buf);
  assert_string_equal(buf, want);
  assert_int_equal(n, (int)strlen(want));

  n = rusm_pid_format(rusm_pid_make(2, 0, 1), buf, sizeof buf);
  assert_string_equal(buf, "<2.0.1>");
  assert_int_equal(n, 7);

  /* Truncation: snprintf semantics. */
  char small[5];
  memset(small, 'x', sizeof small);
  n = rusm_pid_format(rusm_pid_make(0, 5, 3), small, sizeof small);
  assert_int_equal(n, 7);
  assert_string_equal(small, "<0.5");
  n = rusm_pid_format(rusm_pid_make(0, 5, 3), NULL, 0);
  assert_int_equal(n, 7);
  char one[1] = {'x'};
  n = rusm_pid_format(rusm_pid_make(0, 5, 3), one, sizeof one);
  assert_int_equal(n, 7);
  assert_int_equal(one[0], '\0');
}

/* ------------------------------------------------------------------ */
/* Runtime creation                                                    */
/* ------------------------------------------------------------------ */

static void test_rt_create_options(void **state) {
  (void)state;
  rusm_rt *rt = NULL;
  assert_int_equal(rusm_rt_create(NULL, &rt), 0);
  assert_non_null(rt);
  assert_true(rusm_rt_schedulers(rt) >= 1);
  assert_int_equal(rusm_rt_node(rt), 0);
  assert_int_equal(rusm_process_count(rt), 0);
  assert_int_equal(rusm_rt_wait_idle(rt, 0), 0);
  rusm_rt_destroy(rt);

  rusm_rt_opts o;
  memset(&o, 0xff, sizeof o);
  rusm_rt_opts_init(&o);
  assert_int_equal(o.node_id, 0);
  assert_int_equal(o.mailbox_capacity, 0);
  o.schedulers = 2;
  o.node_id = 7;
  t_env e;
  t_start_opts(&e, &o);
  assert_int_equal(rusm_rt_schedulers(e.rt), 2);
  assert_int_equal(rusm_rt_node(e.rt), 7);
  assert_int_equal(rusm_pid_node(e.pid), 7);
  rusm_pid_t w = t_spawn_waiter(&e);
  assert_int_equal(rusm_pid_node(w), 7);
  assert_true(rusm_pid_gen(w) >= 1);
  t_ping(&e, w);
  t_send_stop(e.rt, w, RUSM_EXIT_NORMAL, NULL);
  assert_int_equal(t_wait_note(&e, w).code, RUSM_EXIT_NORMAL);
  t_stop(&e);

  /* Repeated create / destroy: threads and memory come back. */
  for (int i = 0; i < 5; i++) {
    rusm_rt_opts_init(&o);
    o.schedulers = 1 + (uint32_t)(i % 2);
    rt = NULL;
    assert_int_equal(rusm_rt_create(&o, &rt), 0);
    assert_int_equal(rusm_rt_schedulers(rt), o.schedulers);
    rusm_rt_destroy(rt);
  }
}

/* ------------------------------------------------------------------ */
/* Stackless lifecycle                                                 */
/* ------------------------------------------------------------------ */

static void test_stackless_lifecycle(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t w = t_spawn_waiter(&e);
  assert_true(w != RUSM_PID_NONE);
  assert_true(w != e.pid);
  assert_true(rusm_is_alive(e.rt, w));
  assert_int_equal(rusm_process_count(e.rt), 2);
  t_ping(&e, w);
  t_ping(&e, w);

  /* The reason views the STOP message, which is freed once handle()
   * returns: the runtime must have copied the bytes. */
  t_send_stop(e.rt, w, RUSM_EXIT_CUSTOM, "bye now");
  t_note n = t_wait_note(&e, w);
  assert_int_equal(n.code, RUSM_EXIT_CUSTOM);
  assert_int_equal(n.len, 7);
  assert_memory_equal(n.detail, "bye now", 7);

  assert_false(rusm_is_alive(e.rt, w));
  rusm_proc_info info;
  assert_int_equal(rusm_proc_info_get(e.rt, w, &info), RUSM_ENOPROC);
  assert_int_equal(rusm_kill(e.rt, w), RUSM_ENOPROC);
  t_wait_idle(&e);
  assert_int_equal(rusm_process_count(e.rt), 1);
  t_stop(&e);
}

#define CS_MAGIC UINT64_C(0xc0ffee)

typedef struct cs_arg {
  rusm_pid_t parent;
} cs_arg;

typedef struct cs_state {
  uint64_t magic;
  rusm_pid_t parent;
  uint64_t handled;
} cs_state;

static rusm_next cs_init(rusm_proc *self, void **state) {
  (void)self;
  cs_arg *a = *state;
  cs_state *cs = calloc(1, sizeof *cs);
  T_CHECK(cs != NULL);
  if (cs == NULL)
    return rusm_next_stop(RUSM_REASON_SHUTDOWN);
  cs->magic = CS_MAGIC;
  cs->parent = a->parent;
  *state = cs;
  return rusm_next_wait();
}

static rusm_next cs_handle(rusm_proc *self, void *state, rusm_msg *m) {
  cs_state *cs = state;
  T_CHECK(cs->magic == CS_MAGIC);
  T_CHECK(m != NULL);
  if (m == NULL)
    return rusm_next_wait();
  cs->handled++;
  if (rusm_msg_tag(m) == T_TAG_STOP)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  if (rusm_msg_tag(m) == T_TAG_PING)
    t_send_u64(rusm_proc_rt(self), rusm_msg_from(m), T_TAG_PONG, cs->handled);
  return rusm_next_wait();
}

static void cs_terminate(rusm_proc *self, void *state, const rusm_reason *why) {
  cs_state *cs = state;
  T_CHECK(cs->magic == CS_MAGIC);
  t_note_send(rusm_proc_rt(self), cs->parent, rusm_self(self), why,
              cs->handled);
  cs->magic = 0;
  free(cs);
}

static const rusm_stackless_ops cs_ops = {cs_init, cs_handle, cs_terminate};

static void test_stackless_init_replaces_state(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  cs_arg a = {e.pid};
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &cs_ops, &a, NULL, &p), 0);
  for (uint64_t i = 0; i < 3; i++)
    t_send_u64(e.rt, p, 1, i);
  t_send_u64(e.rt, p, T_TAG_PING, 0);
  assert_int_equal(t_recv_u64(&e, T_TAG_PONG), 4);
  t_send(e.rt, p, T_TAG_STOP, NULL, 0);
  t_note n = t_wait_note(&e, p);
  assert_int_equal(n.code, RUSM_EXIT_NORMAL);
  assert_int_equal(n.len, 0);
  assert_int_equal(n.value, 5);
  t_stop(&e);
}

/* init == NULL: state is the spawn arg and the process waits for anything. */
static rusm_next noinit_handle(rusm_proc *self, void *state, rusm_msg *m) {
  T_CHECK(m != NULL);
  if (m == NULL)
    return rusm_next_wait();
  rusm_pid_t parent = (rusm_pid_t)(uintptr_t)state;
  if (rusm_msg_tag(m) == T_TAG_STOP)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  /* Echo whatever came (any tag), tagged DONE, with the original tag. */
  t_send_u64(rusm_proc_rt(self), parent, T_TAG_DONE, rusm_msg_tag(m));
  return rusm_next_wait();
}

static const rusm_stackless_ops noinit_ops = {NULL, noinit_handle,
                                              t_waiter_terminate};

static void test_stackless_without_init(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &noinit_ops,
                                        (void *)(uintptr_t)e.pid, NULL, &p),
                   0);
  t_send(e.rt, p, 42, "x", 1);
  assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 42);
  t_send(e.rt, p, 7, NULL, 0);
  assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 7);
  t_send(e.rt, p, T_TAG_STOP, NULL, 0);
  assert_int_equal(t_wait_note(&e, p).code, RUSM_EXIT_NORMAL);
  t_stop(&e);
}

static rusm_next stop_init(rusm_proc *self, void **state) {
  (void)self;
  (void)state;
  return rusm_next_stop(rusm_reason_str("from-init"));
}

static rusm_next never_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)self;
  (void)state;
  (void)m;
  T_CHECK(!"handle called after init stopped");
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops stop_init_ops = {stop_init, never_handle,
                                                 t_waiter_terminate};

static void test_stackless_stop_in_init(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &stop_init_ops,
                                        (void *)(uintptr_t)e.pid, NULL, &p),
                   0);
  /* A message racing with the exit must not reach handle(). */
  t_send(e.rt, p, 1, NULL, 0);
  t_note n = t_wait_note(&e, p);
  assert_int_equal(n.code, RUSM_EXIT_CUSTOM);
  assert_int_equal(n.len, 9);
  assert_memory_equal(n.detail, "from-init", 9);
  t_wait_idle(&e);
  t_stop(&e);
}

/* handle == NULL (init set): messages are discarded, and the timeout init
 * asked for stops the process with reason normal. */
static rusm_next timed_init(rusm_proc *self, void **state) {
  (void)self;
  (void)state;
  return rusm_next_wait_for(NULL, 50);
}

static const rusm_stackless_ops nohandle_ops = {timed_init, NULL,
                                                t_waiter_terminate};

static void run_nohandle(int messages) {
  t_env e;
  t_start(&e, 0);
  int64_t t0 = rusm_now_ns();
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &nohandle_ops,
                                        (void *)(uintptr_t)e.pid, NULL, &p),
                   0);
  for (int i = 0; i < messages; i++)
    t_send_u64(e.rt, p, 1, (uint64_t)i);
  t_note n = t_wait_note(&e, p);
  assert_int_equal(n.code, RUSM_EXIT_NORMAL);
  assert_true(rusm_now_ns() - t0 >= 50 * 1000000);
  t_wait_idle(&e);
  t_stop(&e);
}

static void test_stackless_without_handle_times_out(void **state) {
  (void)state;
  run_nohandle(0);
}

/* A discarded message does not cancel the pending timeout (as a message
 * that matches no clause leaves Erlang's `receive ... after` timer). */
static void test_stackless_without_handle_discards_messages(void **state) {
  (void)state;
  run_nohandle(3);
}

/* ------------------------------------------------------------------ */
/* Kill                                                                */
/* ------------------------------------------------------------------ */

static void test_kill_stackless_blocked(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_metrics m0 = *t_metrics(e.rt);
  rusm_pid_t w = t_spawn_waiter(&e);
  t_ping(&e, w); /* it has run and waits in receive */
  assert_int_equal(rusm_kill(e.rt, w), 0);
  t_note n = t_wait_note(&e, w);
  assert_int_equal(n.code, RUSM_EXIT_KILLED);
  assert_int_equal(n.len, 0);
  assert_false(rusm_is_alive(e.rt, w));
  assert_int_equal(rusm_kill(e.rt, w), RUSM_ENOPROC);
  t_wait_idle(&e);
  rusm_metrics *m1 = t_metrics(e.rt);
  assert_int_equal(m1->exited_by[RUSM_EXIT_KILLED],
                   m0.exited_by[RUSM_EXIT_KILLED] + 1);
  t_stop(&e);
}

/* Killed before its first run: terminate runs once, with killed. */
static void test_kill_stackless_before_first_run(void **state) {
  (void)state;
  enum { N = T_SCALE(200, 50) };
  t_env e;
  t_start(&e, 0);
  rusm_pid_t pids[N];
  bool seen[N];
  for (int i = 0; i < N; i++) {
    pids[i] = t_spawn_waiter(&e);
    seen[i] = false;
    assert_int_equal(rusm_kill(e.rt, pids[i]), 0);
  }
  for (int i = 0; i < N; i++) {
    t_note n = t_wait_note(&e, RUSM_PID_NONE);
    assert_int_equal(n.code, RUSM_EXIT_KILLED);
    int j = 0;
    while (j < N && pids[j] != n.pid)
      j++;
    assert_true(j < N);
    assert_false(seen[j]);
    seen[j] = true;
  }
  t_wait_idle(&e);
  rusm_filter f = rusm_filter_tag(T_TAG_NOTE);
  t_expect_nothing(&e, &f);
  assert_int_equal(rusm_process_count(e.rt), 1);
  t_stop(&e);
}

typedef struct blocked_arg {
  rusm_pid_t parent;
  int64_t timeout_ms;  /* of the receive that never gets a match */
  size_t own_bytes;    /* > 0: malloc this much, freed by an on_exit hook */
  atomic_int returned; /* set if the receive ever returned */
} blocked_arg;

static void blocked_body(rusm_proc *self, void *arg) {
  blocked_arg *a = arg;
  rusm_rt *rt = rusm_proc_rt(self);
  t_notify_on_exit(self, a->parent, 0);
  if (a->own_bytes > 0) {
    void *p = malloc(a->own_bytes);
    T_CHECK(p != NULL);
    memset(p, 0xab, a->own_bytes);
    T_CHECK(rusm_on_exit(self, free, p) == 0);
  }
  t_send_u64(rt, a->parent, T_TAG_READY, rusm_self(self));
  rusm_filter f = rusm_filter_tag(0x4242); /* never sent */
  rusm_msg *m = NULL;
  (void)rusm_receive(self, &f, a->timeout_ms, &m);
  atomic_store(&a->returned, 1);
}

static void kill_blocked_stackful(int64_t timeout_ms, size_t own_bytes) {
  t_env e;
  t_start(&e, 0);
  rusm_metrics m0 = *t_metrics(e.rt);
  blocked_arg a = {e.pid, timeout_ms, own_bytes, 0};
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e.rt, blocked_body, &a, NULL, &p), 0);
  assert_true(t_recv_u64(&e, T_TAG_READY) == p);
  assert_int_equal(rusm_kill(e.rt, p), 0);
  t_note n = t_wait_note(&e, p);
  assert_int_equal(n.code, -1);
  assert_false(rusm_is_alive(e.rt, p));
  assert_int_equal(atomic_load(&a.returned), 0);
  t_wait_idle(&e);
  rusm_metrics *m1 = t_metrics(e.rt);
  assert_int_equal(m1->exited_by[RUSM_EXIT_KILLED],
                   m0.exited_by[RUSM_EXIT_KILLED] + 1);
  assert_int_equal(m1->exited, m0.exited + 1);
  t_stop(&e);
}

static void test_kill_stackful_blocked(void **state) {
  (void)state;
  kill_blocked_stackful(-1, 0);
}

static void test_kill_stackful_in_timed_receive(void **state) {
  (void)state;
  kill_blocked_stackful(3600 * 1000, 0); /* its timer must be cancelled */
}

/* A killed stackful body is never resumed: what it owns is released by its
 * on_exit hooks (LSan reports a leak otherwise). */
static void test_killed_stackful_releases_owned_memory(void **state) {
  (void)state;
  kill_blocked_stackful(-1, 1 << 16);
}

typedef struct spin_arg {
  rusm_pid_t parent;
} spin_arg;

static void yield_forever_body(rusm_proc *self, void *arg) {
  spin_arg *a = arg;
  t_notify_on_exit(self, a->parent, 0);
  t_send_u64(rusm_proc_rt(self), a->parent, T_TAG_READY, rusm_self(self));
  for (;;)
    rusm_yield(self);
}

/* Killing a runnable (never blocking) stackful body takes effect at its
 * next runtime call. */
static void test_kill_stackful_runnable(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 1);
  spin_arg a = {e.pid};
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e.rt, yield_forever_body, &a, NULL, &p),
                   0);
  assert_true(t_recv_u64(&e, T_TAG_READY) == p);
  assert_int_equal(rusm_kill(e.rt, p), 0);
  t_wait_note(&e, p);
  assert_false(rusm_is_alive(e.rt, p));
  t_wait_idle(&e);
  t_stop(&e);
}

static atomic_int g_unstarted_ran;

static void count_body(rusm_proc *self, void *arg) {
  (void)self;
  (void)arg;
  atomic_fetch_add(&g_unstarted_ran, 1);
}

/* Spawned and killed at once: whether it ran or not, it is reaped with
 * reason killed or normal (if it finished first) and its stack is freed. */
static void test_kill_stackful_before_first_run(void **state) {
  (void)state;
  enum { N = T_SCALE(100, 30) };
  t_env e;
  t_start(&e, 0);
  rusm_metrics m0 = *t_metrics(e.rt);
  atomic_store(&g_unstarted_ran, 0);
  int killed = 0;
  for (int i = 0; i < N; i++) {
    rusm_pid_t p;
    assert_int_equal(rusm_spawn_stackful(e.rt, count_body, NULL, NULL, &p), 0);
    int rc = rusm_kill(e.rt, p);
    assert_true(rc == 0 || rc == RUSM_ENOPROC);
    killed += rc == 0;
  }
  t_wait_idle(&e);
  rusm_metrics *m1 = t_metrics(e.rt);
  uint64_t k = m1->exited_by[RUSM_EXIT_KILLED] - m0.exited_by[RUSM_EXIT_KILLED];
  uint64_t nrm =
      m1->exited_by[RUSM_EXIT_NORMAL] - m0.exited_by[RUSM_EXIT_NORMAL];
  assert_int_equal(k + nrm, N);
  assert_true(k <= (uint64_t)killed);
  assert_true(nrm >= (uint64_t)(N - killed));
  assert_true(nrm <= (uint64_t)atomic_load(&g_unstarted_ran));
  assert_int_equal(rusm_process_count(e.rt), 1);
  t_stop(&e);
}

/* rusm_kill of oneself. */
static rusm_next killself_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)state;
  (void)m;
  T_CHECK(rusm_kill(rusm_proc_rt(self), rusm_self(self)) == 0);
  return rusm_next_wait();
}

static const rusm_stackless_ops killself_ops = {NULL, killself_handle,
                                                t_waiter_terminate};

static atomic_int g_killself_returned;

static void killself_body(rusm_proc *self, void *arg) {
  spin_arg *a = arg;
  t_notify_on_exit(self, a->parent, 0);
  T_CHECK(rusm_kill(rusm_proc_rt(self), rusm_self(self)) == 0);
  rusm_msg *m = NULL;
  (void)rusm_receive(self, NULL, -1, &m);
  atomic_store(&g_killself_returned, 1);
}

static void test_kill_self(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &killself_ops,
                                        (void *)(uintptr_t)e.pid, NULL, &p),
                   0);
  t_send(e.rt, p, T_TAG_GO, NULL, 0);
  assert_int_equal(t_wait_note(&e, p).code, RUSM_EXIT_KILLED);
  t_wait_idle(&e); /* its exit is counted after terminate ran */

  rusm_metrics m0 = *t_metrics(e.rt);
  spin_arg a = {e.pid};
  atomic_store(&g_killself_returned, 0);
  assert_int_equal(rusm_spawn_stackful(e.rt, killself_body, &a, NULL, &p), 0);
  t_wait_note(&e, p);
  t_wait_idle(&e);
  assert_int_equal(atomic_load(&g_killself_returned), 0);
  assert_int_equal(t_metrics(e.rt)->exited_by[RUSM_EXIT_KILLED],
                   m0.exited_by[RUSM_EXIT_KILLED] + 1);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* on_exit hooks: LIFO on every kind of exit                           */
/* ------------------------------------------------------------------ */

typedef struct lifo_log {
  atomic_int n;
  int order[8];
} lifo_log;

typedef struct lifo_hook {
  lifo_log *log;
  int id;
} lifo_hook;

static void lifo_fn(void *arg) {
  lifo_hook *h = arg;
  int i = atomic_fetch_add(&h->log->n, 1);
  if (i < 8)
    h->log->order[i] = h->id;
}

enum lifo_mode {
  LIFO_RETURN,    /* stackful returns */
  LIFO_EXIT_SELF, /* stackful rusm_exit_self(shutdown) */
  LIFO_KILL_SF,   /* stackful blocked, killed */
  LIFO_STOP_SL,   /* stackless returns rusm_next_stop */
  LIFO_KILL_SL    /* stackless waiting, killed */
};

typedef struct lifo_arg {
  rusm_pid_t parent;
  enum lifo_mode mode;
  lifo_log log;
  lifo_hook hooks[3];
} lifo_arg;

static void lifo_register(rusm_proc *self, lifo_arg *a) {
  /* Registered first, so it runs last: the note says all hooks ran. */
  t_notify_on_exit(self, a->parent, 0);
  for (int i = 0; i < 3; i++) {
    a->hooks[i].log = &a->log;
    a->hooks[i].id = i + 1;
    T_CHECK(rusm_on_exit(self, lifo_fn, &a->hooks[i]) == 0);
  }
  t_send_u64(rusm_proc_rt(self), a->parent, T_TAG_READY, rusm_self(self));
}

static void lifo_body(rusm_proc *self, void *arg) {
  lifo_arg *a = arg;
  lifo_register(self, a);
  if (a->mode == LIFO_EXIT_SELF) {
    rusm_exit_self(self, RUSM_REASON_SHUTDOWN);
  } else if (a->mode == LIFO_KILL_SF) {
    rusm_msg *m = NULL;
    rusm_filter f = rusm_filter_tag(0x4242);
    (void)rusm_receive(self, &f, -1, &m);
    T_CHECK(!"receive returned in a killed process");
  }
}

static rusm_next lifo_init(rusm_proc *self, void **state) {
  lifo_register(self, *state);
  return rusm_next_wait();
}

static rusm_next lifo_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)self;
  (void)state;
  if (m != NULL && rusm_msg_tag(m) == T_TAG_STOP)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  return rusm_next_wait();
}

static const rusm_stackless_ops lifo_ops = {lifo_init, lifo_handle, NULL};

static void run_lifo(enum lifo_mode mode, rusm_exit_code want) {
  t_env e;
  t_start(&e, 0);
  rusm_metrics m0 = *t_metrics(e.rt);
  lifo_arg a;
  memset(&a, 0, sizeof a);
  a.parent = e.pid;
  a.mode = mode;
  rusm_pid_t p;
  if (mode == LIFO_STOP_SL || mode == LIFO_KILL_SL)
    assert_int_equal(rusm_spawn_stackless(e.rt, &lifo_ops, &a, NULL, &p), 0);
  else
    assert_int_equal(rusm_spawn_stackful(e.rt, lifo_body, &a, NULL, &p), 0);
  assert_true(t_recv_u64(&e, T_TAG_READY) == p);
  if (mode == LIFO_KILL_SF || mode == LIFO_KILL_SL)
    assert_int_equal(rusm_kill(e.rt, p), 0);
  else if (mode == LIFO_STOP_SL)
    t_send(e.rt, p, T_TAG_STOP, NULL, 0);
  t_wait_note(&e, p);
  assert_int_equal(atomic_load(&a.log.n), 3);
  assert_int_equal(a.log.order[0], 3);
  assert_int_equal(a.log.order[1], 2);
  assert_int_equal(a.log.order[2], 1);
  t_wait_idle(&e);
  assert_int_equal(t_metrics(e.rt)->exited_by[want], m0.exited_by[want] + 1);
  t_stop(&e);
}

static void test_on_exit_lifo_normal_return(void **state) {
  (void)state;
  run_lifo(LIFO_RETURN, RUSM_EXIT_NORMAL);
}

static void test_on_exit_lifo_exit_self(void **state) {
  (void)state;
  run_lifo(LIFO_EXIT_SELF, RUSM_EXIT_SHUTDOWN);
}

static void test_on_exit_lifo_kill_stackful(void **state) {
  (void)state;
  run_lifo(LIFO_KILL_SF, RUSM_EXIT_KILLED);
}

static void test_on_exit_lifo_stop_stackless(void **state) {
  (void)state;
  run_lifo(LIFO_STOP_SL, RUSM_EXIT_NORMAL);
}

static void test_on_exit_lifo_kill_stackless(void **state) {
  (void)state;
  run_lifo(LIFO_KILL_SL, RUSM_EXIT_KILLED);
}

/* ------------------------------------------------------------------ */
/* Custom bodies (rusm_spawn_body)                                     */
/* ------------------------------------------------------------------ */

typedef struct gb_state {
  rusm_pid_t parent;
  uint64_t steps, yields, timeouts;
  int64_t deadline;
  char reason[32];
} gb_state;

static rusm_step gb_step(rusm_proc *self, void *state) {
  gb_state *s = state;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_step st = {RUSM_STEP_WAIT, -1, RUSM_REASON_NORMAL};
  s->steps++;
  T_CHECK(rusm_current() == self);
  if (s->yields < 5) {
    s->yields++;
    st.kind = RUSM_STEP_YIELD;
    return st;
  }
  rusm_msg *m = NULL;
  while (rusm_try_receive(self, NULL, &m) == 0) {
    uint64_t tag = rusm_msg_tag(m);
    if (tag == T_TAG_PING) {
      uint64_t v[3] = {s->steps, s->yields, s->timeouts};
      t_send(rt, rusm_msg_from(m), T_TAG_PONG, v, sizeof v);
    } else if (tag == T_TAG_GO) {
      s->deadline = rusm_now_ns() + 20 * 1000000;
    } else if (tag == T_TAG_STOP) {
      rusm_reason r = t_stop_reason(m);
      size_t n = r.len < sizeof s->reason ? r.len : sizeof s->reason;
      if (n > 0)
        memcpy(s->reason, r.data, n);
      rusm_msg_free(m);
      st.kind = RUSM_STEP_EXIT;
      st.reason = r;
      st.reason.len = (uint32_t)n;
      st.reason.data = n > 0 ? (const uint8_t *)s->reason : NULL;
      return st;
    }
    rusm_msg_free(m);
  }
  if (s->deadline > 0 && rusm_now_ns() >= s->deadline) {
    s->timeouts++;
    s->deadline = 0;
    t_send_u64(rt, s->parent, T_TAG_DONE, s->timeouts);
  }
  st.deadline_ns = s->deadline > 0 ? s->deadline : -1;
  return st;
}

static void gb_destroy(rusm_proc *self, void *state, const rusm_reason *why) {
  gb_state *s = state;
  /* Wipe our copy first: the note must come from the runtime's copy. */
  memset(s->reason, 0, sizeof s->reason);
  t_note_send(rusm_proc_rt(self), s->parent, rusm_self(self), why, s->steps);
  free(s);
}

static const rusm_body_ops gb_ops = {"custom-kind", gb_step, gb_destroy};

static void test_spawn_body_generic(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  gb_state *s = calloc(1, sizeof *s);
  assert_non_null(s);
  s->parent = e.pid;
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_body(e.rt, &gb_ops, s, NULL, &p), 0);
  rusm_proc_info info;
  assert_int_equal(rusm_proc_info_get(e.rt, p, &info), 0);
  assert_string_equal(info.kind, "custom-kind");
  assert_true(info.pid == p);

  t_send(e.rt, p, T_TAG_PING, NULL, 0);
  rusm_msg *m = t_recv_tag(&e, T_TAG_PONG);
  uint64_t v[3];
  assert_int_equal(rusm_msg_len(m), sizeof v);
  memcpy(v, rusm_msg_data(m), sizeof v);
  rusm_msg_free(m);
  assert_int_equal(v[1], 5); /* yielded 5 times before waiting */
  assert_true(v[0] >= 6);    /* ... so stepped at least 6 times */
  assert_int_equal(v[2], 0);

  /* WAIT with a deadline: stepped again once it passes. */
  int64_t t0 = rusm_now_ns();
  t_send(e.rt, p, T_TAG_GO, NULL, 0);
  assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 1);
  assert_true(rusm_now_ns() - t0 >= 20 * 1000000);

  t_send_stop(e.rt, p, RUSM_EXIT_CUSTOM, "gb-bye");
  t_note n = t_wait_note(&e, p);
  assert_int_equal(n.code, RUSM_EXIT_CUSTOM);
  assert_int_equal(n.len, 6);
  assert_memory_equal(n.detail, "gb-bye", 6);

  /* Killed: destroy is called with killed. */
  s = calloc(1, sizeof *s);
  assert_non_null(s);
  s->parent = e.pid;
  assert_int_equal(rusm_spawn_body(e.rt, &gb_ops, s, NULL, &p), 0);
  t_send(e.rt, p, T_TAG_PING, NULL, 0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_PONG));
  assert_int_equal(rusm_kill(e.rt, p), 0);
  n = t_wait_note(&e, p);
  assert_int_equal(n.code, RUSM_EXIT_KILLED);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Spawning from a process                                             */
/* ------------------------------------------------------------------ */

static rusm_next spawner_init(rusm_proc *self, void **state) {
  rusm_pid_t parent = (rusm_pid_t)(uintptr_t)*state;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_spawn_opts o;
  memset(&o, 0x55, sizeof o);
  rusm_spawn_opts_init(&o);
  T_CHECK(o.scheduler == -1);
  T_CHECK(o.stack_size == 0);
  rusm_pid_t kids[2] = {RUSM_PID_NONE, RUSM_PID_NONE};
  T_CHECK(rusm_spawn_stackless(rt, &t_waiter_ops, *state, &o, &kids[0]) == 0);
  T_CHECK(rusm_spawn_stackful(rt, t_stackful_waiter, *state, &o, &kids[1]) ==
          0);
  t_send(rt, parent, T_TAG_DONE, kids, sizeof kids);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops spawner_ops = {spawner_init, never_handle,
                                               t_waiter_terminate};

static void test_spawn_from_process(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t sp;
  assert_int_equal(rusm_spawn_stackless(e.rt, &spawner_ops,
                                        (void *)(uintptr_t)e.pid, NULL, &sp),
                   0);
  rusm_msg *m = t_recv_tag(&e, T_TAG_DONE);
  rusm_pid_t kids[2];
  assert_int_equal(rusm_msg_len(m), sizeof kids);
  memcpy(kids, rusm_msg_data(m), sizeof kids);
  assert_true(rusm_msg_from(m) == sp);
  rusm_msg_free(m);
  assert_int_equal(t_wait_note(&e, sp).code, RUSM_EXIT_NORMAL);
  for (int i = 0; i < 2; i++) {
    assert_true(rusm_is_alive(e.rt, kids[i]));
    t_ping(&e, kids[i]);
    t_send_stop(e.rt, kids[i], RUSM_EXIT_NORMAL, NULL);
    t_wait_note(&e, kids[i]);
  }
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Process table: stale pids, dead pids, limits, emptiness             */
/* ------------------------------------------------------------------ */

/* Spawns a t_waiter (notes to the test thread) for each SPAWN request and
 * replies with its pid: spawns from the scheduler reuse freed slots. */
#define TAG_SPAWN 30

static rusm_next spawn_service_handle(rusm_proc *self, void *state,
                                      rusm_msg *m) {
  rusm_pid_t parent = (rusm_pid_t)(uintptr_t)state;
  if (m == NULL || rusm_msg_tag(m) != TAG_SPAWN)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  rusm_pid_t p = RUSM_PID_NONE;
  int rc =
      rusm_spawn_stackless(rusm_proc_rt(self), &t_waiter_ops, state, NULL, &p);
  uint64_t reply[2] = {(uint64_t)(int64_t)rc, p};
  t_send(rusm_proc_rt(self), parent, T_TAG_DONE, reply, sizeof reply);
  return rusm_next_wait();
}

static const rusm_stackless_ops spawn_service_ops = {NULL, spawn_service_handle,
                                                     NULL};

static rusm_pid_t service_spawn(t_env *e, rusm_pid_t service, int *rc) {
  t_send(e->rt, service, TAG_SPAWN, NULL, 0);
  rusm_msg *m = t_recv_tag(e, T_TAG_DONE);
  uint64_t reply[2];
  assert_int_equal(rusm_msg_len(m), sizeof reply);
  memcpy(reply, rusm_msg_data(m), sizeof reply);
  rusm_msg_free(m);
  *rc = (int)(int64_t)reply[0];
  return (rusm_pid_t)reply[1];
}

static void test_stale_pid_never_reaches_new_process(void **state) {
  (void)state;
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = 1;
  o.max_processes = 8; /* few slots: one comes back soon */
  t_env e;
  t_start_opts(&e, &o);
  rusm_pid_t service;
  assert_int_equal(rusm_spawn_stackless(e.rt, &spawn_service_ops,
                                        (void *)(uintptr_t)e.pid, NULL,
                                        &service),
                   0);
  int rc;
  rusm_pid_t old = service_spawn(&e, service, &rc);
  assert_int_equal(rc, 0);
  t_send_stop(e.rt, old, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, old);

  rusm_pid_t fresh = RUSM_PID_NONE;
  for (int i = 0; i < 1000 && fresh == RUSM_PID_NONE; i++) {
    rusm_pid_t p = service_spawn(&e, service, &rc);
    assert_int_equal(rc, 0);
    if (rusm_pid_slot(p) == rusm_pid_slot(old)) {
      fresh = p;
      break;
    }
    t_send_stop(e.rt, p, RUSM_EXIT_NORMAL, NULL);
    t_wait_note(&e, p);
  }
  assert_true(fresh != RUSM_PID_NONE);
  assert_true(fresh != old);
  assert_true(rusm_pid_gen(fresh) != rusm_pid_gen(old));
  assert_false(rusm_is_alive(e.rt, old));
  assert_true(rusm_is_alive(e.rt, fresh));
  rusm_proc_info info;
  assert_int_equal(rusm_proc_info_get(e.rt, old, &info), RUSM_ENOPROC);
  assert_int_equal(rusm_kill(e.rt, old), RUSM_ENOPROC);

  rusm_metrics m0 = *t_metrics(e.rt);
  assert_int_equal(rusm_send(e.rt, old, 5, "stale", 5), 0);
  uint64_t bad = 111111;
  assert_int_equal(rusm_send(e.rt, old, T_TAG_PING, &bad, sizeof bad), 0);
  rusm_buf *b = rusm_buf_from("stale", 5);
  assert_int_equal(rusm_send_buf(e.rt, old, 5, b), 0);
  rusm_buf_unref(b);
  /* The fresh process answers our own PING only (t_ping checks the value)
   * and holds no stale data message. */
  t_ping(&e, fresh);
  rusm_filter pong = rusm_filter_tag(T_TAG_PONG);
  t_expect_nothing(&e, &pong);
  assert_int_equal(rusm_proc_info_get(e.rt, fresh, &info), 0);
  assert_int_equal(info.mailbox_len, 0);
  assert_int_equal(info.messages_handled, 1);
  rusm_metrics *m1 = t_metrics(e.rt);
  assert_int_equal(m1->dropped, m0.dropped + 3);

  t_send_stop(e.rt, fresh, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, fresh);
  t_send(e.rt, service, T_TAG_STOP, NULL, 0);
  t_wait_idle(&e);
  t_stop(&e);
}

static void test_send_to_dead_pid_is_dropped(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t w = t_spawn_waiter(&e);
  t_send_stop(e.rt, w, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, w);
  t_wait_idle(&e);

  rusm_metrics m0 = *t_metrics(e.rt);
  assert_int_equal(rusm_send(e.rt, w, 1, "x", 1), 0);
  /* A slot never used, and the largest slot / generation. */
  assert_int_equal(rusm_send(e.rt, rusm_pid_make(0, 99999, 1), 1, NULL, 0), 0);
  assert_int_equal(
      rusm_send(e.rt, rusm_pid_make(0, RUSM_PID_SLOT_MAX, RUSM_PID_GEN_MAX), 1,
                NULL, 0),
      0);
  rusm_buf *b = rusm_buf_from("shared", 6);
  assert_non_null(b);
  assert_int_equal(rusm_send_buf(e.rt, w, 1, b), 0);
  rusm_buf_unref(b);
  rusm_metrics *m1 = t_metrics(e.rt);
  assert_int_equal(m1->dropped, m0.dropped + 4);
  /* A pid of another node (no cluster here): dropped too. */
  rusm_pid_t remote = rusm_pid_make(5, rusm_pid_slot(w), rusm_pid_gen(w));
  assert_int_equal(rusm_send(e.rt, remote, 1, NULL, 0), 0);
  assert_int_equal(t_metrics(e.rt)->dropped, m0.dropped + 5);
  assert_int_equal(rusm_kill(e.rt, remote), RUSM_ENOPROC);
  assert_false(rusm_is_alive(e.rt, remote));
  assert_int_equal(rusm_kill(e.rt, rusm_pid_make(0, 99999, 1)), RUSM_ENOPROC);
  assert_int_equal(rusm_kill(e.rt, RUSM_PID_NONE), RUSM_ENOPROC);
  assert_false(rusm_is_alive(e.rt, RUSM_PID_NONE));
  assert_false(rusm_is_alive(
      e.rt, rusm_pid_make(0, RUSM_PID_SLOT_MAX, RUSM_PID_GEN_MAX)));
  t_stop(&e);
}

static void test_table_empty_after_all_exit(void **state) {
  (void)state;
  enum { N = T_SCALE(50, 20) };
  t_env e;
  t_start(&e, 0);
  rusm_pid_t pids[2 * N];
  for (int i = 0; i < N; i++) {
    pids[2 * i] = t_spawn_waiter(&e);
    pids[2 * i + 1] = t_spawn_stackful_waiter(&e);
  }
  assert_int_equal(rusm_process_count(e.rt), 2 * N + 1);
  for (int i = 0; i < 2 * N; i++)
    t_send_stop(e.rt, pids[i], RUSM_EXIT_NORMAL, NULL);
  for (int i = 0; i < 2 * N; i++)
    t_wait_note(&e, pids[i]);
  t_wait_idle(&e);
  assert_int_equal(rusm_process_count(e.rt), 1);
  for (int i = 0; i < 2 * N; i++)
    assert_false(rusm_is_alive(e.rt, pids[i]));
  t_stop(&e);
}

static atomic_int g_limit_destroyed;

static void limit_destroy(rusm_proc *self, void *state,
                          const rusm_reason *why) {
  (void)self;
  (void)why;
  atomic_fetch_add(&g_limit_destroyed, 1);
  free(state);
}

static rusm_step limit_step(rusm_proc *self, void *state) {
  (void)self;
  (void)state;
  rusm_step st = {RUSM_STEP_EXIT, -1, RUSM_REASON_NORMAL};
  return st;
}

static const rusm_body_ops limit_ops = {"limit", limit_step, limit_destroy};

typedef struct attach_try {
  rusm_rt *rt;
  atomic_int rc;
} attach_try;

static void *attach_once(void *p) {
  attach_try *a = p;
  rusm_proc *me = NULL;
  atomic_store(&a->rc, rusm_attach(a->rt, &me));
  if (me != NULL)
    rusm_detach(me);
  return NULL;
}

static void test_max_processes_limit(void **state) {
  (void)state;
  enum { MAX = 6 };
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.max_processes = MAX;
  t_env e;
  t_start_opts(&e, &o);
  rusm_pid_t service;
  assert_int_equal(rusm_spawn_stackless(e.rt, &spawn_service_ops,
                                        (void *)(uintptr_t)e.pid, NULL,
                                        &service),
                   0);
  rusm_pid_t pids[64];
  int n = 0, rc = 0;
  while (n < 64) {
    rc = rusm_spawn_stackless(e.rt, &t_waiter_ops, (void *)(uintptr_t)e.pid,
                              NULL, &pids[n]);
    if (rc != 0)
      break;
    n++;
  }
  assert_int_equal(rc, RUSM_ELIMIT);
  /* The test thread and the service hold a slot each. */
  assert_true(n >= 1 && n <= MAX - 2);
  assert_true(rusm_process_count(e.rt) <= MAX);
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e.rt, t_stackful_waiter, NULL, NULL, &p),
                   RUSM_ELIMIT);
  /* From a process (a scheduler thread) too. */
  assert_true(service_spawn(&e, service, &rc) == RUSM_PID_NONE);
  assert_int_equal(rc, RUSM_ELIMIT);
  /* And attaching a thread. */
  attach_try at = {e.rt, 1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, attach_once, &at), 0);
  pthread_join(th, NULL);
  assert_int_equal(atomic_load(&at.rc), RUSM_ELIMIT);
  /* A spawn refused for lack of room has not taken the body's state: the
   * caller still owns it (destroy is not called). */
  atomic_store(&g_limit_destroyed, 0);
  void *st = malloc(16);
  assert_int_equal(rusm_spawn_body(e.rt, &limit_ops, st, NULL, &p),
                   RUSM_ELIMIT);
  assert_int_equal(atomic_load(&g_limit_destroyed), 0);
  free(st);

  /* After one exits, spawning from this thread works again. */
  t_send_stop(e.rt, pids[n - 1], RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, pids[n - 1]);
  int64_t end = rusm_now_ns() + (int64_t)T_GUARD_MS * 1000000;
  st = malloc(16);
  do {
    rc = rusm_spawn_body(e.rt, &limit_ops, st, NULL, &p);
    if (rc == RUSM_ELIMIT)
      sched_yield();
  } while (rc == RUSM_ELIMIT && rusm_now_ns() < end);
  if (rc != 0)
    free(st);
  assert_int_equal(rc, 0);
  for (int i = 0; i < n - 1; i++)
    t_send_stop(e.rt, pids[i], RUSM_EXIT_NORMAL, NULL);
  for (int i = 0; i < n - 1; i++)
    t_wait_note(&e, pids[i]);
  t_send(e.rt, service, T_TAG_STOP, NULL, 0);
  t_wait_idle(&e);
  assert_int_equal(atomic_load(&g_limit_destroyed), 1);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* rusm_rt_wait_idle                                                   */
/* ------------------------------------------------------------------ */

/* Waits `arg` ms for nothing, then stops. */
static rusm_next sleeper_init(rusm_proc *self, void **state) {
  (void)self;
  rusm_filter f = rusm_filter_tag(0x4242);
  return rusm_next_wait_for(&f, (int64_t)(uintptr_t)*state);
}

static rusm_next sleeper_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)self;
  (void)state;
  T_CHECK(m == NULL);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops sleeper_ops = {sleeper_init, sleeper_handle,
                                               NULL};

static void test_rt_wait_idle(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  assert_int_equal(rusm_rt_wait_idle(e.rt, 0), 0); /* attached only */
  assert_int_equal(rusm_rt_wait_idle(e.rt, 10), 0);

  rusm_pid_t w = t_spawn_waiter(&e);
  assert_int_equal(rusm_rt_wait_idle(e.rt, 0), RUSM_ETIMEDOUT);
  int64_t t0 = rusm_now_ns();
  assert_int_equal(rusm_rt_wait_idle(e.rt, 50), RUSM_ETIMEDOUT);
  assert_true(rusm_now_ns() - t0 >= 50 * 1000000);

  /* Becomes idle while we wait. */
  rusm_pid_t s;
  assert_int_equal(
      rusm_spawn_stackless(e.rt, &sleeper_ops, (void *)(uintptr_t)20, NULL, &s),
      0);
  t_send_stop(e.rt, w, RUSM_EXIT_NORMAL, NULL);
  assert_int_equal(rusm_rt_wait_idle(e.rt, T_GUARD_MS), 0);
  assert_int_equal(rusm_process_count(e.rt), 1);
  assert_false(rusm_is_alive(e.rt, s));
  t_wait_note(&e, w);

  /* From a thread that is not attached. */
  rusm_detach(e.me);
  e.me = NULL;
  assert_null(rusm_current());
  assert_int_equal(rusm_process_count(e.rt), 0);
  assert_int_equal(
      rusm_spawn_stackless(e.rt, &sleeper_ops, (void *)(uintptr_t)10, NULL, &s),
      0);
  assert_int_equal(rusm_rt_wait_idle(e.rt, -1), 0);
  assert_int_equal(rusm_process_count(e.rt), 0);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* rusm_rt_destroy with live processes                                 */
/* ------------------------------------------------------------------ */

static atomic_int g_rd_terms, g_rd_hooks;

static void rd_terminate(rusm_proc *self, void *state, const rusm_reason *why) {
  (void)self;
  (void)state;
  T_CHECK(why->code == RUSM_EXIT_KILLED);
  atomic_fetch_add(&g_rd_terms, 1);
}

static rusm_next rd_init(rusm_proc *self, void **state) {
  rusm_pid_t parent = (rusm_pid_t)(uintptr_t)*state;
  t_send_u64(rusm_proc_rt(self), parent, T_TAG_READY, rusm_self(self));
  return rusm_next_wait();
}

static rusm_next rd_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)state;
  if (m == NULL)
    return rusm_next_wait();
  if (rusm_msg_tag(m) == T_TAG_GO) { /* keep busy: message ourselves */
    t_send(rusm_proc_rt(self), rusm_self(self), T_TAG_GO, NULL, 0);
    return rusm_next_wait();
  }
  if (rusm_msg_tag(m) == T_TAG_INFO) { /* park with a long timer */
    rusm_filter f = rusm_filter_tag(0x4242);
    return rusm_next_wait_for(&f, 3600 * 1000);
  }
  return rusm_next_wait();
}

static const rusm_stackless_ops rd_ops = {rd_init, rd_handle, rd_terminate};

static void rd_hook(void *arg) {
  free(arg);
  atomic_fetch_add(&g_rd_hooks, 1);
}

typedef struct rd_arg {
  rusm_pid_t parent;
  int mode; /* 0 blocked, 1 timed, 2 busy */
} rd_arg;

static void rd_body(rusm_proc *self, void *arg) {
  rd_arg *a = arg;
  int mode = a->mode;
  T_CHECK(rusm_on_exit(self, rd_hook, malloc(64)) == 0);
  t_send_u64(rusm_proc_rt(self), a->parent, T_TAG_READY, rusm_self(self));
  rusm_filter f = rusm_filter_tag(0x4242);
  rusm_msg *m = NULL;
  if (mode == 2)
    for (;;)
      rusm_yield(self);
  (void)rusm_receive(self, &f, mode == 1 ? 3600 * 1000 : -1, &m);
  T_CHECK(!"receive returned");
}

static void test_rt_destroy_kills_live_processes(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  atomic_store(&g_rd_terms, 0);
  atomic_store(&g_rd_hooks, 0);
  rusm_pid_t sl[3];
  for (int i = 0; i < 3; i++) {
    assert_int_equal(rusm_spawn_stackless(
                         e.rt, &rd_ops, (void *)(uintptr_t)e.pid, NULL, &sl[i]),
                     0);
    assert_true(t_recv_u64(&e, T_TAG_READY) == sl[i]);
  }
  t_send(e.rt, sl[1], T_TAG_GO, NULL, 0);   /* busy */
  t_send(e.rt, sl[2], T_TAG_INFO, NULL, 0); /* timed wait */
  rd_arg args[3] = {{e.pid, 0}, {e.pid, 1}, {e.pid, 2}};
  for (int i = 0; i < 3; i++) {
    rusm_pid_t p;
    assert_int_equal(rusm_spawn_stackful(e.rt, rd_body, &args[i], NULL, &p), 0);
    assert_true(t_recv_u64(&e, T_TAG_READY) == p);
  }
  /* Unstarted ones too. */
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e.rt, count_body, NULL, NULL, &p), 0);
  assert_int_equal(rusm_spawn_stackless(e.rt, &sleeper_ops,
                                        (void *)(uintptr_t)(3600 * 1000), NULL,
                                        &p),
                   0);
  /* Leave a message in the test thread's mailbox too. */
  t_send(e.rt, e.pid, 1, "left", 4);

  /* The test thread stays attached: destroy detaches it. */
  rusm_rt_destroy(e.rt);
  t_forget();
  assert_null(rusm_current());
  assert_int_equal(atomic_load(&g_rd_terms), 3);
  assert_int_equal(atomic_load(&g_rd_hooks), 3);
  t_assert_no_failures();

  /* The thread can attach to a new runtime. */
  t_start(&e, 1);
  t_stop(&e);
}

/* During rusm_rt_destroy, a terminate callback (run by the kill of every
 * process) cannot spawn: the runtime is closing. */
static atomic_int g_sd_rc[3], g_sd_ran;

static rusm_next wait_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)self;
  (void)state;
  (void)m;
  return rusm_next_wait();
}

static void sd_terminate(rusm_proc *self, void *state, const rusm_reason *why) {
  (void)state;
  T_CHECK(why->code == RUSM_EXIT_KILLED);
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_pid_t p;
  atomic_store(&g_sd_rc[0],
               rusm_spawn_stackless(rt, &t_waiter_ops, NULL, NULL, &p));
  atomic_store(&g_sd_rc[1],
               rusm_spawn_stackful(rt, count_body, NULL, NULL, &p));
  atomic_store(&g_sd_rc[2], rusm_spawn_body(rt, &limit_ops, NULL, NULL, &p));
  atomic_fetch_add(&g_sd_ran, 1);
}

static const rusm_stackless_ops sd_ops = {NULL, wait_handle, sd_terminate};

static void test_spawn_while_shutting_down(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  atomic_store(&g_sd_ran, 0);
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &sd_ops, NULL, NULL, &p), 0);
  t_send(e.rt, p, 1, NULL, 0);
  rusm_rt_destroy(e.rt);
  t_forget();
  assert_int_equal(atomic_load(&g_sd_ran), 1);
  for (int i = 0; i < 3; i++)
    assert_int_equal(atomic_load(&g_sd_rc[i]), RUSM_ESHUTDOWN);
  t_assert_no_failures();
}

/* A process sending to itself while it exits: accepted, dropped. */
static void selfsend_terminate(rusm_proc *self, void *state,
                               const rusm_reason *why) {
  rusm_rt *rt = rusm_proc_rt(self);
  T_CHECK(rusm_send(rt, rusm_self(self), 1, "x", 1) == 0);
  T_CHECK(!rusm_is_alive(rt, rusm_self(self)));
  rusm_proc_info info;
  T_CHECK(rusm_proc_info_get(rt, rusm_self(self), &info) == RUSM_ENOPROC);
  t_note_send(rt, (rusm_pid_t)(uintptr_t)state, rusm_self(self), why, 0);
}

static const rusm_stackless_ops selfsend_ops = {NULL, wait_handle,
                                                selfsend_terminate};

static void test_send_to_exiting_process(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_metrics m0 = *t_metrics(e.rt);
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &selfsend_ops,
                                        (void *)(uintptr_t)e.pid, NULL, &p),
                   0);
  assert_int_equal(rusm_kill(e.rt, p), 0);
  t_wait_note(&e, p);
  t_wait_idle(&e);
  assert_int_equal(t_metrics(e.rt)->dropped, m0.dropped + 1);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Attached threads                                                    */
/* ------------------------------------------------------------------ */

static rusm_next probe_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)state;
  if (m == NULL || rusm_msg_tag(m) != T_TAG_GO)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  rusm_proc *p = NULL;
  int64_t rc = rusm_attach(rusm_proc_rt(self), &p);
  T_CHECK(rusm_current() == self);
  t_send_u64(rusm_proc_rt(self), rusm_msg_from(m), T_TAG_DONE, (uint64_t)rc);
  return rusm_next_wait();
}

static const rusm_stackless_ops probe_ops = {NULL, probe_handle, NULL};

static void probe_body(rusm_proc *self, void *arg) {
  rusm_pid_t parent = (rusm_pid_t)(uintptr_t)arg;
  rusm_proc *p = NULL;
  T_CHECK(rusm_current() == self);
  T_CHECK(rusm_proc_rt(self) != NULL);
  int64_t rc = rusm_attach(rusm_proc_rt(self), &p);
  t_send_u64(rusm_proc_rt(self), parent, T_TAG_DONE, (uint64_t)rc);
}

typedef struct thr_arg {
  rusm_rt *rt;
  rusm_pid_t parent;
  rusm_pid_t pid; /* written by the thread before READY */
  atomic_int first_rc, reattach_rc;
} thr_arg;

/* Attaches, says hello, echoes one message, detaches. */
static void *echo_thread(void *p) {
  thr_arg *a = p;
  rusm_proc *me = NULL;
  int rc = rusm_attach(a->rt, &me);
  T_CHECK(rc == 0);
  if (rc != 0)
    return NULL;
  T_CHECK(rusm_current() == me);
  t_send_u64(a->rt, a->parent, T_TAG_READY, rusm_self(me));
  rusm_msg *m = NULL;
  rc = rusm_receive(me, NULL, T_GUARD_MS, &m);
  T_CHECK(rc == 0);
  if (rc == 0) {
    T_CHECK(rusm_msg_from(m) == a->parent);
    t_send_u64(a->rt, a->parent, T_TAG_PONG, t_msg_u64(m));
    rusm_msg_free(m);
  }
  rusm_detach(me);
  T_CHECK(rusm_current() == NULL);
  return NULL;
}

static atomic_int g_hook_ran;

static void attached_hook(void *arg) { atomic_fetch_add((atomic_int *)arg, 1); }

static void test_attach_rules(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  assert_ptr_equal(rusm_current(), e.me);
  assert_ptr_equal(rusm_proc_rt(e.me), e.rt);
  rusm_proc *again = NULL;
  assert_int_equal(rusm_attach(e.rt, &again), RUSM_EEXIST);
  assert_null(again);
  rusm_proc_info info;
  assert_int_equal(rusm_proc_info_get(e.rt, e.pid, &info), 0);
  assert_true(info.pid == e.pid);
  assert_non_null(info.kind);
  assert_true(rusm_is_alive(e.rt, e.pid));

  /* On a scheduler thread: stackless and stackful bodies. */
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &probe_ops, NULL, NULL, &p), 0);
  t_send(e.rt, p, T_TAG_GO, NULL, 0);
  assert_int_equal((int64_t)t_recv_u64(&e, T_TAG_DONE), RUSM_ECONTEXT);
  t_send(e.rt, p, T_TAG_STOP, NULL, 0);
  assert_int_equal(
      rusm_spawn_stackful(e.rt, probe_body, (void *)(uintptr_t)e.pid, NULL, &p),
      0);
  assert_int_equal((int64_t)t_recv_u64(&e, T_TAG_DONE), RUSM_ECONTEXT);

  /* Another thread attached at the same time. */
  thr_arg ta;
  memset(&ta, 0, sizeof ta);
  ta.rt = e.rt;
  ta.parent = e.pid;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, echo_thread, &ta), 0);
  rusm_pid_t tp = t_recv_u64(&e, T_TAG_READY);
  assert_true(tp != e.pid);
  assert_true(rusm_is_alive(e.rt, tp));
  t_send_u64(e.rt, tp, 9, 1234);
  assert_int_equal(t_recv_u64(&e, T_TAG_PONG), 1234);
  pthread_join(th, NULL);
  assert_false(rusm_is_alive(e.rt, tp));

  /* on_exit on an attached thread runs when it detaches. */
  atomic_store(&g_hook_ran, 0);
  assert_int_equal(rusm_on_exit(e.me, attached_hook, &g_hook_ran), 0);
  rusm_pid_t old = e.pid;
  rusm_detach(e.me);
  assert_int_equal(atomic_load(&g_hook_ran), 1);
  assert_null(rusm_current());
  assert_false(rusm_is_alive(e.rt, old));
  assert_int_equal(rusm_attach(e.rt, &e.me), 0);
  e.pid = rusm_self(e.me);
  assert_true(e.pid != old);
  assert_ptr_equal(rusm_current(), e.me);
  t_wait_idle(&e);
  t_stop(&e);
}

static void *killed_thread(void *p) {
  thr_arg *a = p;
  rusm_proc *me = NULL;
  int rc = rusm_attach(a->rt, &me);
  T_CHECK(rc == 0);
  if (rc != 0)
    return NULL;
  t_send_u64(a->rt, a->parent, T_TAG_READY, rusm_self(me));
  rusm_msg *m = NULL;
  rusm_filter f = rusm_filter_tag(0x4242);
  atomic_store(&a->first_rc, rusm_receive(me, &f, T_GUARD_MS, &m));
  rusm_detach(me); /* a no-op now: the process is gone */
  rusm_proc *me2 = NULL;
  atomic_store(&a->reattach_rc, rusm_attach(a->rt, &me2));
  if (me2 != NULL)
    rusm_detach(me2);
  return NULL;
}

/* A kill reaching an attached thread blocked in receive: RUSM_ESHUTDOWN. */
static void test_kill_attached_thread(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  thr_arg ta;
  memset(&ta, 0, sizeof ta);
  ta.rt = e.rt;
  ta.parent = e.pid;
  atomic_store(&ta.first_rc, 1);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, killed_thread, &ta), 0);
  rusm_pid_t tp = t_recv_u64(&e, T_TAG_READY);
  assert_int_equal(rusm_kill(e.rt, tp), 0);
  pthread_join(th, NULL);
  assert_int_equal(atomic_load(&ta.first_rc), RUSM_ESHUTDOWN);
  assert_int_equal(atomic_load(&ta.reattach_rc), 0);
  assert_false(rusm_is_alive(e.rt, tp));
  assert_int_equal(rusm_process_count(e.rt), 1);
  t_stop(&e);
}

/* A thread still attached when another thread destroys the runtime: its
 * process is ended (its on_exit hooks run) and nothing leaks. The thread
 * must not call the runtime afterwards. */
typedef struct linger_arg {
  rusm_rt *rt;
  pthread_barrier_t *bar;
  atomic_int rc;
} linger_arg;

static void *lingering_thread(void *p) {
  linger_arg *a = p;
  rusm_proc *me = NULL;
  atomic_store(&a->rc, rusm_attach(a->rt, &me));
  if (me != NULL) {
    void *owned = malloc(32);
    if (rusm_on_exit(me, free, owned) != 0)
      free(owned);
  }
  pthread_barrier_wait(a->bar); /* attached */
  pthread_barrier_wait(a->bar); /* the runtime is gone */
  return NULL;
}

static void test_destroy_with_other_thread_attached(void **state) {
  (void)state;
  t_cleanup_failed();
  rusm_rt *rt = NULL;
  assert_int_equal(rusm_rt_create(NULL, &rt), 0);
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, 2);
  linger_arg a = {rt, &bar, 1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, lingering_thread, &a), 0);
  pthread_barrier_wait(&bar);
  assert_int_equal(atomic_load(&a.rc), 0);
  assert_int_equal(rusm_process_count(rt), 1);
  assert_int_equal(rusm_rt_wait_idle(rt, 0), 0); /* attached ones only */
  rusm_rt_destroy(rt);
  pthread_barrier_wait(&bar);
  pthread_join(th, NULL);
  pthread_barrier_destroy(&bar);
}

/* ------------------------------------------------------------------ */
/* rusm_proc_info                                                      */
/* ------------------------------------------------------------------ */

typedef struct info_wait {
  rusm_rt *rt;
  rusm_pid_t pid;
  uint64_t mailbox_len;
  rusm_proc_info info;
} info_wait;

static bool info_is_waiting(void *arg) {
  info_wait *w = arg;
  if (rusm_proc_info_get(w->rt, w->pid, &w->info) != 0)
    return false;
  return w->info.status == RUSM_STATUS_WAITING &&
         w->info.mailbox_len == w->mailbox_len;
}

static rusm_next self_info_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)state;
  if (m == NULL || rusm_msg_tag(m) == T_TAG_STOP)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  rusm_proc_info info;
  memset(&info, 0, sizeof info);
  T_CHECK(rusm_proc_info_get(rusm_proc_rt(self), rusm_self(self), &info) == 0);
  T_CHECK(info.pid == rusm_self(self));
  T_CHECK(info.status == RUSM_STATUS_RUNNING);
  T_CHECK(info.scheduler < rusm_rt_schedulers(rusm_proc_rt(self)));
  T_CHECK(info.kind != NULL && strcmp(info.kind, "stackless") == 0);
  t_send(rusm_proc_rt(self), rusm_msg_from(m), T_TAG_DONE, &info.scheduler,
         sizeof info.scheduler);
  return rusm_next_wait();
}

static const rusm_stackless_ops self_info_ops = {NULL, self_info_handle, NULL};

static void check_info(t_env *e, rusm_pid_t p, const char *kind) {
  info_wait w = {e->rt, p, 0, {0}};
  t_ping(e, p);
  assert_true(t_poll_until(info_is_waiting, &w));
  assert_true(w.info.pid == p);
  assert_string_equal(w.info.kind, kind);
  assert_true(w.info.scheduler < rusm_rt_schedulers(e->rt));
  assert_int_equal(w.info.messages_handled, 1);
  assert_true(w.info.reductions > 0);

  /* Data messages it does not receive stay queued and are counted. */
  for (int i = 0; i < 3; i++)
    t_send_u64(e->rt, p, (uint64_t)i + 1, (uint64_t)i);
  w.mailbox_len = 3;
  assert_true(t_poll_until(info_is_waiting, &w));
  assert_int_equal(w.info.messages_handled, 1);

  t_ping(e, p);
  assert_true(t_poll_until(info_is_waiting, &w));
  assert_int_equal(w.info.messages_handled, 2);
  assert_int_equal(w.info.mailbox_len, 3);

  t_send_stop(e->rt, p, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(e, p);
  assert_int_equal(rusm_proc_info_get(e->rt, p, &w.info), RUSM_ENOPROC);
}

static void test_proc_info_fields(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 2);
  check_info(&e, t_spawn_waiter(&e), "stackless");
  check_info(&e, t_spawn_stackful_waiter(&e), "stackful");

  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &self_info_ops, NULL, NULL, &p),
                   0);
  t_send(e.rt, p, T_TAG_GO, NULL, 0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_DONE));
  t_send(e.rt, p, T_TAG_STOP, NULL, 0);
  t_wait_idle(&e);
  t_stop(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pid_helpers_and_format),
      cmocka_unit_test(test_rt_create_options),
      cmocka_unit_test(test_stackless_lifecycle),
      cmocka_unit_test(test_stackless_init_replaces_state),
      cmocka_unit_test(test_stackless_without_init),
      cmocka_unit_test(test_stackless_stop_in_init),
      cmocka_unit_test(test_stackless_without_handle_times_out),
      cmocka_unit_test(test_stackless_without_handle_discards_messages),
      cmocka_unit_test(test_kill_stackless_blocked),
      cmocka_unit_test(test_kill_stackless_before_first_run),
      cmocka_unit_test(test_kill_stackful_blocked),
      cmocka_unit_test(test_kill_stackful_in_timed_receive),
      cmocka_unit_test(test_killed_stackful_releases_owned_memory),
      cmocka_unit_test(test_kill_stackful_runnable),
      cmocka_unit_test(test_kill_stackful_before_first_run),
      cmocka_unit_test(test_kill_self),
      cmocka_unit_test(test_on_exit_lifo_normal_return),
      cmocka_unit_test(test_on_exit_lifo_exit_self),
      cmocka_unit_test(test_on_exit_lifo_kill_stackful),
      cmocka_unit_test(test_on_exit_lifo_stop_stackless),
      cmocka_unit_test(test_on_exit_lifo_kill_stackless),
      cmocka_unit_test(test_spawn_body_generic),
      cmocka_unit_test(test_spawn_from_process),
      cmocka_unit_test(test_stale_pid_never_reaches_new_process),
      cmocka_unit_test(test_send_to_dead_pid_is_dropped),
      cmocka_unit_test(test_table_empty_after_all_exit),
      cmocka_unit_test(test_max_processes_limit),
      cmocka_unit_test(test_rt_wait_idle),
      cmocka_unit_test(test_rt_destroy_kills_live_processes),
      cmocka_unit_test(test_spawn_while_shutting_down),
      cmocka_unit_test(test_send_to_exiting_process),
      cmocka_unit_test(test_attach_rules),
      cmocka_unit_test(test_kill_attached_thread),
      cmocka_unit_test(test_destroy_with_other_thread_attached),
      cmocka_unit_test(test_proc_info_fields),
  };
  return T_RUN(tests);
}
