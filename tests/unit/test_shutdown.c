// ctest-labels: concurrent
/*
 * Unit tests: graceful shutdown (rusm_rt_add_root, rusm_rt_shutdown,
 * rusm_shutdown_report_format) — roots stopped in reverse order, each
 * supervisor stopping its children by their shutdown specs, stragglers
 * killed at the deadline and listed, the report's counts, no spawns
 * afterwards, attached threads left alone.
 *
 * The test thread (attached, so left alone by the shutdown) records the
 * order: processes send it a note as they exit.
 */
#include "support.h"

#include <pthread.h>

static bool down_of_ref(const rusm_msg *m, void *arg) {
  rusm_down_info d;
  return rusm_msg_down(m, &d) == 0 && d.ref == *(const rusm_ref *)arg;
}

/* A process that traps exits and ignores them all (shutdown included);
 * only a kill ends it. It says READY once it traps (an exit signal that
 * comes before that still ends it); its terminate sends a note with the
 * reason. */
static rusm_next stubborn_init(rusm_proc *self, void **state) {
  rusm_trap_exit(self, true);
  t_send(rusm_proc_rt(self), (rusm_pid_t)(uintptr_t)*state, T_TAG_READY, NULL,
         0);
  return rusm_next_wait();
}
static rusm_next stubborn_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)self;
  (void)state;
  (void)m;
  return rusm_next_wait();
}
static const rusm_stackless_ops stubborn_ops = {stubborn_init, stubborn_handle,
                                                t_waiter_terminate};

static rusm_pid_t spawn_ops(t_env *e, const rusm_stackless_ops *ops) {
  rusm_pid_t p = RUSM_PID_NONE;
  int rc =
      rusm_spawn_stackless(e->rt, ops, (void *)(uintptr_t)e->pid, NULL, &p);
  if (rc != 0)
    fail_msg("rusm_spawn_stackless: %s", rusm_err_name(rc));
  return p;
}

/* Child start functions: arg is the pid that gets the notes. */
static int start_waiter(rusm_rt *rt, void *arg, rusm_pid_t *out) {
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  return rusm_spawn_stackless(rt, &t_waiter_ops, arg, &o, out);
}
static int start_stubborn(rusm_rt *rt, void *arg, rusm_pid_t *out) {
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  return rusm_spawn_stackless(rt, &stubborn_ops, arg, &o, out);
}

/* Starts a supervisor of two children; returns their pids in start order. */
static rusm_pid_t start_tree(t_env *e, rusm_child_spec *specs,
                             rusm_pid_t kids[2]) {
  rusm_pid_t sup = RUSM_PID_NONE;
  int rc = rusm_sup_start(e->rt, NULL, specs, 2, NULL, &sup);
  if (rc != 0)
    fail_msg("rusm_sup_start: %s", rusm_err_name(rc));
  rusm_child_info ci[2];
  size_t count = 0;
  assert_int_equal(rusm_sup_which_children(e->rt, sup, ci, 2, &count), 0);
  assert_int_equal(count, 2);
  kids[0] = ci[0].pid;
  kids[1] = ci[1].pid;
  assert_true(kids[0] != RUSM_PID_NONE && kids[1] != RUSM_PID_NONE);
  return sup;
}

/* An attached helper thread: answers GO with DONE, leaves on STOP. */
typedef struct helper {
  rusm_rt *rt;
  rusm_pid_t test, pid;
  pthread_t th;
} helper;

static void *helper_main(void *p) {
  helper *h = p;
  rusm_proc *me = NULL;
  int rc = rusm_attach(h->rt, &me);
  T_CHECK(rc == 0);
  if (rc != 0)
    return NULL;
  h->pid = rusm_self(me);
  t_send(h->rt, h->test, T_TAG_READY, NULL, 0);
  for (;;) {
    rusm_msg *m = NULL;
    rc = rusm_receive(me, NULL, -1, &m);
    T_CHECK(rc == 0);
    if (rc != 0)
      break;
    uint64_t tag = rusm_msg_tag(m);
    rusm_msg_free(m);
    if (tag == T_TAG_GO)
      t_send(h->rt, h->test, T_TAG_DONE, NULL, 0);
    else if (tag == T_TAG_STOP)
      break;
  }
  rusm_detach(me);
  return NULL;
}

static void helper_start(t_env *e, helper *h) {
  h->rt = e->rt;
  h->test = e->pid;
  assert_int_equal(pthread_create(&h->th, NULL, helper_main, h), 0);
  rusm_msg_free(t_recv_tag(e, T_TAG_READY));
}

/* Every spawn kind is refused once the runtime is shutting down. */
static void assert_no_spawns(t_env *e) {
  rusm_pid_t p = RUSM_PID_NONE;
  assert_int_equal(rusm_spawn_stackless(e->rt, &t_waiter_ops,
                                        (void *)(uintptr_t)e->pid, NULL, &p),
                   RUSM_ESHUTDOWN);
  assert_int_equal(rusm_spawn_stackful(e->rt, t_stackful_waiter,
                                       (void *)(uintptr_t)e->pid, NULL, &p),
                   RUSM_ESHUTDOWN);
  rusm_child_spec spec = {.id = "late",
                          .start = start_waiter,
                          .arg = (void *)(uintptr_t)e->pid,
                          .restart = RUSM_PERMANENT,
                          .shutdown_ms = 100};
  assert_int_equal(rusm_sup_start(e->rt, NULL, &spec, 1, NULL, &p),
                   RUSM_ESHUTDOWN);
  assert_true(p == RUSM_PID_NONE);
}

/* ------------------------------------------------------------------ */
/* A supervision tree as the application                               */
/* ------------------------------------------------------------------ */

static void test_shutdown_tree(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  void *to = (void *)(uintptr_t)e.pid;
  /* Root 1: a child stopped by exit(shutdown), one killed (brutal). */
  rusm_child_spec s1[2] = {
      {.id = "a", .start = start_waiter, .arg = to, .shutdown_ms = 5000},
      {.id = "b",
       .start = start_waiter,
       .arg = to,
       .shutdown_ms = RUSM_SHUTDOWN_BRUTAL},
  };
  /* Root 2: a child stopped by exit(shutdown), one that ignores it and is
   * killed by its supervisor after its 50 ms. */
  rusm_child_spec s2[2] = {
      {.id = "a", .start = start_waiter, .arg = to, .shutdown_ms = 5000},
      {.id = "b", .start = start_stubborn, .arg = to, .shutdown_ms = 50},
  };
  rusm_pid_t k1[2], k2[2];
  rusm_pid_t sup1 = start_tree(&e, s1, k1);
  rusm_pid_t sup2 = start_tree(&e, s2, k2);
  /* Not in a tree: one that stops when asked, one that never does. */
  rusm_pid_t loose = t_spawn_waiter(&e);
  rusm_pid_t straggler = spawn_ops(&e, &stubborn_ops);
  for (int i = 0; i < 2; i++) /* k2[1] and the straggler trap exits */
    rusm_msg_free(t_recv_tag(&e, T_TAG_READY));
  t_ping(&e, loose);
  helper h;
  helper_start(&e, &h);
  assert_int_equal(rusm_process_count(e.rt), 8 + 2);

  int64_t deadline_ms = 1500;
  rusm_shutdown_report rep;
  memset(&rep, 0xff, sizeof rep);
  int rc = rusm_rt_shutdown(e.rt, deadline_ms, &rep);
  assert_int_equal(rc, RUSM_ETIMEDOUT); /* the straggler had to be killed */

  /* Order: root 2's tree (children in reverse start order), then root
   * 1's, then the rest, the straggler last at the deadline. */
  struct {
    rusm_pid_t pid;
    int code;
  } want[] = {
      {k2[1], RUSM_EXIT_KILLED},   {k2[0], RUSM_EXIT_SHUTDOWN},
      {k1[1], RUSM_EXIT_KILLED},   {k1[0], RUSM_EXIT_SHUTDOWN},
      {loose, RUSM_EXIT_SHUTDOWN}, {straggler, RUSM_EXIT_KILLED},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    t_note n = t_wait_note(&e, RUSM_PID_NONE);
    if (n.pid != want[i].pid)
      fail_msg("note %zu is about the wrong process", i);
    assert_int_equal(n.code, want[i].code);
  }
  assert_false(rusm_is_alive(e.rt, sup1));
  assert_false(rusm_is_alive(e.rt, sup2));

  /* The report. */
  assert_int_equal(rep.roots, 2);
  assert_int_equal(rep.roots_stopped, 2);
  assert_int_equal(rep.killed, 1);
  assert_int_equal(rep.exited, 7);
  assert_int_equal(rep.nkilled_listed, 1);
  assert_true(rep.killed_pids[0] == straggler);
  assert_true(rep.elapsed_ms >= deadline_ms - 1); /* not killed early */
  char text[512];
  int n = rusm_shutdown_report_format(&rep, text, sizeof text);
  assert_true(n > 0 && (size_t)n < sizeof text);
  assert_int_equal((size_t)n, strlen(text));
  print_message("%s\n", text);
  assert_non_null(strstr(text, "2/2 top-level stopped"));
  assert_non_null(strstr(text, "7 exited cleanly"));
  assert_non_null(strstr(text, "1 killed"));
  char pid[32];
  rusm_pid_format(straggler, pid, sizeof pid);
  assert_non_null(strstr(text, pid));

  /* Afterwards: no spawns; attached threads alone and working. */
  assert_no_spawns(&e);
  assert_int_equal(rusm_process_count(e.rt), 2);
  assert_true(rusm_is_alive(e.rt, e.pid));
  assert_true(rusm_is_alive(e.rt, h.pid));
  t_send(e.rt, h.pid, T_TAG_GO, NULL, 0);
  rusm_msg *m = t_recv_tag(&e, T_TAG_DONE);
  assert_true(rusm_msg_from(m) == h.pid);
  rusm_msg_free(m);
  t_send(e.rt, h.pid, T_TAG_STOP, NULL, 0);
  pthread_join(h.th, NULL);
  t_expect_nothing(&e, NULL);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Plain roots, from a thread that is not attached                     */
/* ------------------------------------------------------------------ */

typedef struct shut_arg {
  rusm_rt *rt;
  int64_t deadline_ms;
  int rc;
  rusm_shutdown_report rep;
} shut_arg;

static void *shutdown_thread(void *p) {
  shut_arg *a = p;
  a->rc = rusm_rt_shutdown(a->rt, a->deadline_ms, &a->rep);
  return NULL;
}

static void test_shutdown_roots_reverse_order(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  assert_int_equal(rusm_rt_add_root(NULL, e.pid), RUSM_EINVAL);
  assert_int_equal(rusm_rt_add_root(e.rt, RUSM_PID_NONE), RUSM_EINVAL);
  enum { R = 12 };
  rusm_pid_t roots[R];
  for (int i = 0; i < R; i++) {
    roots[i] = i % 2 ? t_spawn_stackful_waiter(&e) : t_spawn_waiter(&e);
    assert_int_equal(rusm_rt_add_root(e.rt, roots[i]), 0);
  }
  /* A root that is gone by then is skipped (not counted). */
  rusm_pid_t gone = t_spawn_waiter(&e);
  assert_int_equal(rusm_rt_add_root(e.rt, gone), 0);
  rusm_ref ref = 0;
  assert_int_equal(rusm_monitor(e.me, gone, &ref), 0);
  t_send_stop(e.rt, gone, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, gone);
  rusm_filter df = rusm_filter_tag(RUSM_TAG_DOWN);
  df.pred = down_of_ref;
  df.pred_arg = &ref;
  rusm_msg_free(t_recv(&e, &df));
  for (int i = 0; i < R; i++)
    t_ping(&e, roots[i]);

  shut_arg a;
  memset(&a, 0, sizeof a);
  a.rt = e.rt;
  a.deadline_ms = 10000;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, shutdown_thread, &a), 0);
  for (int i = R; i-- > 0;) {
    t_note n = t_wait_note(&e, RUSM_PID_NONE);
    if (n.pid != roots[i])
      fail_msg("root %d stopped out of order", i);
    /* stackful waiters' on_exit hooks do not see the reason */
    assert_int_equal(n.code, i % 2 ? -1 : RUSM_EXIT_SHUTDOWN);
  }
  pthread_join(th, NULL);
  assert_int_equal(a.rc, 0);
  assert_int_equal(a.rep.roots, R);
  assert_int_equal(a.rep.roots_stopped, R);
  assert_int_equal(a.rep.exited, R);
  assert_int_equal(a.rep.killed, 0);
  assert_int_equal(a.rep.nkilled_listed, 0);
  assert_true(rusm_is_alive(e.rt, e.pid));
  assert_no_spawns(&e);
  /* Again: nothing left to do. */
  memset(&a.rep, 0xff, sizeof a.rep);
  assert_int_equal(rusm_rt_shutdown(e.rt, 100, &a.rep), 0);
  assert_int_equal(a.rep.roots, 0);
  assert_int_equal(a.rep.exited, 0);
  assert_int_equal(a.rep.killed, 0);
  assert_int_equal(rusm_rt_shutdown(e.rt, 0, NULL), 0);
  t_expect_nothing(&e, NULL);
  t_stop(&e);
}

/* A root that ignores the request holds shutdown up to the deadline, and
 * is then killed. */
static void test_shutdown_root_ignores(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t r = spawn_ops(&e, &stubborn_ops);
  rusm_msg_free(t_recv_tag(&e, T_TAG_READY));
  assert_int_equal(rusm_rt_add_root(e.rt, r), 0);
  rusm_pid_t w = t_spawn_waiter(&e);
  assert_int_equal(rusm_rt_add_root(e.rt, w), 0);
  t_ping(&e, w);
  rusm_shutdown_report rep;
  assert_int_equal(rusm_rt_shutdown(e.rt, 200, &rep), RUSM_ETIMEDOUT);
  assert_int_equal(t_wait_note(&e, w).code, RUSM_EXIT_SHUTDOWN);
  assert_int_equal(t_wait_note(&e, r).code, RUSM_EXIT_KILLED);
  assert_int_equal(rep.roots, 2);
  assert_int_equal(rep.roots_stopped, 1);
  assert_int_equal(rep.exited, 1);
  assert_int_equal(rep.killed, 1);
  assert_int_equal(rep.nkilled_listed, 1);
  assert_true(rep.killed_pids[0] == r);
  assert_true(rep.elapsed_ms >= 199);
  char text[256];
  rusm_shutdown_report_format(&rep, text, sizeof text);
  assert_non_null(strstr(text, "1/2 top-level stopped"));
  t_stop(&e);
}

/* More stragglers than the report lists. */
static void test_shutdown_many_stragglers(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  enum { N = RUSM_SHUTDOWN_REPORT_MAX + 8 };
  rusm_pid_t p[N];
  for (int i = 0; i < N; i++)
    p[i] = spawn_ops(&e, &stubborn_ops);
  for (int i = 0; i < N; i++)
    rusm_msg_free(t_recv_tag(&e, T_TAG_READY));
  for (int i = 0; i < 10; i++)
    t_spawn_waiter(&e);
  rusm_shutdown_report rep;
  assert_int_equal(rusm_rt_shutdown(e.rt, 100, &rep), RUSM_ETIMEDOUT);
  assert_int_equal(rep.roots, 0);
  assert_int_equal(rep.killed, N);
  assert_int_equal(rep.exited, 10);
  assert_int_equal(rep.nkilled_listed, RUSM_SHUTDOWN_REPORT_MAX);
  for (uint32_t i = 0; i < rep.nkilled_listed; i++) {
    bool known = false;
    for (int k = 0; k < N; k++)
      known = known || rep.killed_pids[i] == p[k];
    assert_true(known);
    for (uint32_t j = 0; j < i; j++)
      assert_true(rep.killed_pids[j] != rep.killed_pids[i]);
  }
  for (int i = 0; i < N + 10; i++)
    t_wait_note(&e, RUSM_PID_NONE);

  /* The text: every listed pid; snprintf-like when it does not fit. */
  char text[4096];
  int n = rusm_shutdown_report_format(&rep, text, sizeof text);
  assert_true(n > 0 && (size_t)n < sizeof text);
  char num[32];
  snprintf(num, sizeof num, "%d killed", N);
  assert_non_null(strstr(text, num));
  for (uint32_t i = 0; i < rep.nkilled_listed; i++) {
    char pid[32];
    rusm_pid_format(rep.killed_pids[i], pid, sizeof pid);
    assert_non_null(strstr(text, pid));
  }
  char small[40];
  memset(small, 'x', sizeof small);
  assert_int_equal(rusm_shutdown_report_format(&rep, small, sizeof small), n);
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_memory_equal(small, text, sizeof small - 1);
  assert_int_equal(rusm_shutdown_report_format(&rep, NULL, 0), n);
  assert_int_equal(rusm_shutdown_report_format(NULL, text, sizeof text),
                   RUSM_EINVAL);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Calling contexts                                                    */
/* ------------------------------------------------------------------ */

static rusm_next shut_from_proc_init(rusm_proc *self, void **state) {
  rusm_pid_t to = (rusm_pid_t)(uintptr_t)*state;
  rusm_shutdown_report rep;
  int64_t rc = rusm_rt_shutdown(rusm_proc_rt(self), 100, &rep);
  t_send(rusm_proc_rt(self), to, T_TAG_INFO, &rc, sizeof rc);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}
static const rusm_stackless_ops shut_from_proc_ops = {
    shut_from_proc_init, t_unexpected_handle, NULL};

static void shut_from_stackful(rusm_proc *self, void *arg) {
  rusm_pid_t to = (rusm_pid_t)(uintptr_t)arg;
  int64_t rc = rusm_rt_shutdown(rusm_proc_rt(self), 100, NULL);
  t_send(rusm_proc_rt(self), to, T_TAG_INFO, &rc, sizeof rc);
}

static void test_shutdown_contexts(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  assert_int_equal(rusm_rt_shutdown(NULL, 100, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_rt_shutdown(e.rt, -1, NULL), RUSM_EINVAL);
  /* From scheduler threads: refused, and nothing is shut down. */
  spawn_ops(&e, &shut_from_proc_ops);
  assert_int_equal((int64_t)t_recv_u64(&e, T_TAG_INFO), RUSM_ECONTEXT);
  assert_int_equal(rusm_spawn_stackful(e.rt, shut_from_stackful,
                                       (void *)(uintptr_t)e.pid, NULL, NULL),
                   0);
  assert_int_equal((int64_t)t_recv_u64(&e, T_TAG_INFO), RUSM_ECONTEXT);
  rusm_pid_t w = t_spawn_waiter(&e);
  t_ping(&e, w);
  /* A thread attached to another runtime cannot stop this one. */
  rusm_rt *other = NULL;
  assert_int_equal(rusm_rt_create(NULL, &other), 0);
  assert_int_equal(rusm_rt_shutdown(other, 100, NULL), RUSM_ECONTEXT);
  rusm_rt_destroy(other);
  assert_true(rusm_is_alive(e.rt, w));
  t_send_stop(e.rt, w, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, w);
  /* An empty runtime shuts down at once. */
  t_wait_idle(&e);
  rusm_shutdown_report rep;
  assert_int_equal(rusm_rt_shutdown(e.rt, 0, &rep), 0);
  assert_int_equal(rep.roots, 0);
  assert_int_equal(rep.exited, 0);
  assert_int_equal(rep.killed, 0);
  assert_no_spawns(&e);
  t_stop(&e);
}

/*
 * KNOWN CORE BUG (src/otp/shutdown.c, await_down): when the caller is an
 * attached thread, rusm_rt_shutdown waits for each root's Down with a
 * filter on the Down tag only, and frees every Down that is not its own:
 * the caller's own, unrelated Down messages queued at that time are lost.
 * (A filter with a predicate on the ref, as rusm_sup_stop uses, keeps
 * them.) Deterministic: the Down of an earlier monitor is queued before
 * shutdown starts. This test fails until the core is fixed.
 */
static void test_shutdown_keeps_callers_downs(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t x = t_spawn_waiter(&e);
  rusm_ref ref = 0;
  assert_int_equal(rusm_monitor(e.me, x, &ref), 0);
  assert_int_equal(rusm_kill(e.rt, x), 0);
  t_wait_note(&e, x);
  t_wait_idle(&e); /* x fully reaped: its Down is in our mailbox */
  rusm_pid_t root = t_spawn_waiter(&e);
  assert_int_equal(rusm_rt_add_root(e.rt, root), 0);
  assert_int_equal(rusm_rt_shutdown(e.rt, 5000, NULL), 0);
  t_wait_note(&e, root);
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  f.pred = down_of_ref;
  f.pred_arg = &ref;
  rusm_msg *m = NULL;
  int rc = rusm_receive(e.me, &f, 0, &m);
  if (rc != 0)
    fail_msg("the Down of our own monitor was consumed by rusm_rt_shutdown");
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_true(d.pid == x);
  assert_int_equal(d.reason.code, RUSM_EXIT_KILLED);
  rusm_msg_free(m);
  t_stop(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shutdown_tree),
      cmocka_unit_test(test_shutdown_roots_reverse_order),
      cmocka_unit_test(test_shutdown_root_ignores),
      cmocka_unit_test(test_shutdown_many_stragglers),
      cmocka_unit_test(test_shutdown_contexts),
      /* Known core bug: fails until rusm_rt_shutdown is fixed. */
      cmocka_unit_test(test_shutdown_keeps_callers_downs),
  };
  return T_RUN(tests);
}
