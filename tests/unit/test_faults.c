// ctest-labels: concurrent
/*
 * test_faults.c — out-of-memory everywhere: every runtime allocation can
 * fail (rusm__test_fail_allocs), on the calling thread and on the
 * schedulers at once. Each call must return 0 or RUSM_ENOMEM (or the
 * error its contract names), nothing may crash or leak (LSan runs this in
 * the ASan stage), and once allocations work again the runtime must too.
 */
#include <stdlib.h>
#include <string.h>

#include "otp/alloc.h"
#include "rusm/observer.h"
#include "support.h"

#define STEPS T_SCALE(48, 24)

static bool ok_or_nomem(int rc) { return rc == 0 || rc == RUSM_ENOMEM; }

static void noop_hook(void *arg) { (void)arg; }

static rusm_next echo_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)state;
  if (m && rusm_msg_tag(m) == T_TAG_PING)
    rusm_send(rusm_proc_rt(self), rusm_msg_from(m), T_TAG_PONG,
              rusm_msg_data(m), rusm_msg_len(m));
  return rusm_next_wait();
}

static const rusm_stackless_ops echo_ops = {NULL, echo_handle, NULL};

static void sf_body(rusm_proc *self, void *arg) {
  (void)arg;
  rusm_msg *m;
  while (rusm_receive(self, NULL, -1, &m) == 0)
    rusm_msg_free(m);
}

/* The runtime still works: spawn, ping, exit. */
static void still_works(t_env *e) {
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e->rt, &echo_ops, NULL, NULL, &p), 0);
  t_send_u64(e->rt, p, T_TAG_PING, 7);
  rusm_msg *m = t_recv_tag(e, T_TAG_PONG);
  assert_int_equal(t_msg_u64(m), 7);
  rusm_msg_free(m);
  assert_int_equal(rusm_kill(e->rt, p), 0);
}

static void test_rt_create_fails_cleanly(void **state) {
  (void)state;
  for (int k = 0; k < STEPS; k++) {
    rusm_rt_opts o;
    rusm_rt_opts_init(&o);
    o.schedulers = 2;
    o.max_processes = 4096;
    rusm_rt *rt = NULL;
    rusm__test_fail_allocs(k);
    int rc = rusm_rt_create(&o, &rt);
    rusm__test_fail_allocs(-1);
    assert_true(rc == 0 || rc == RUSM_ENOMEM);
    if (rc == 0)
      rusm_rt_destroy(rt);
  }
}

static void test_api_under_oom(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_trap_exit(e.me, true); /* the victim's deaths reach us as messages */
  rusm_pid_t victim;
  assert_int_equal(rusm_spawn_stackful(e.rt, sf_body, NULL, NULL, &victim), 0);
  for (int k = 0; k < STEPS; k++) {
    rusm_pid_t p = RUSM_PID_NONE, q = RUSM_PID_NONE;
    rusm_ref ref;
    rusm_timer_ref tref;
    rusm_spawn_opts so;
    rusm_spawn_opts_init(&so);
    so.link = (k & 1) != 0;
    so.monitor = (k & 2) != 0;
    so.monitor_ref = &ref;
    rusm__test_fail_allocs(k);
    int rc = rusm_spawn_stackless(e.rt, &echo_ops, NULL, &so, &p);
    T_CHECK(ok_or_nomem(rc) || rc == RUSM_ELIMIT);
    rc = rusm_spawn_stackful(e.rt, sf_body, NULL, NULL, &q);
    T_CHECK(ok_or_nomem(rc) || rc == RUSM_ELIMIT);
    T_CHECK(ok_or_nomem(rusm_send(e.rt, victim, 1, "abcdef", 6)));
    char big[700];
    memset(big, 'x', sizeof big);
    T_CHECK(ok_or_nomem(rusm_send(e.rt, victim, 2, big, sizeof big)));
    rusm_buf *b = rusm_buf_from(big, sizeof big);
    if (b) {
      T_CHECK(ok_or_nomem(rusm_send_buf(e.rt, victim, 3, b)));
      rusm_buf_unref(b);
    }
    rc = rusm_link(e.me, victim);
    T_CHECK(ok_or_nomem(rc) || rc == RUSM_ENOPROC);
    T_CHECK(ok_or_nomem(rusm_monitor(e.me, victim, &ref)));
    rc = rusm_register(e.rt, "fault-name", victim);
    T_CHECK(rc == 0 || rc == RUSM_ENOMEM || rc == RUSM_EEXIST ||
            rc == RUSM_ENOPROC);
    rc = rusm_send_after(e.rt, 100000, victim, 4, "t", 1, &tref);
    T_CHECK(ok_or_nomem(rc));
    if (rc == 0)
      (void)rusm_cancel_timer(e.rt, tref);
    char huge[100];
    memset(huge, 'y', sizeof huge);
    rc = rusm_send_after(e.rt, 100000, victim, 5, huge, sizeof huge, &tref);
    T_CHECK(ok_or_nomem(rc));
    if (rc == 0)
      (void)rusm_cancel_timer(e.rt, tref);
    T_CHECK(ok_or_nomem(rusm_on_exit(e.me, noop_hook, NULL)));
    rc = rusm_exit(e.rt, victim, rusm_reason_str("not-kill: trapped? no"));
    (void)rc; /* may end the victim; it is respawned below */
    rusm__test_fail_allocs(-1);
    rusm_unregister(e.rt, "fault-name");
    rusm_unlink(e.me, victim);
    if (p)
      rusm_kill(e.rt, p);
    if (q)
      rusm_kill(e.rt, q);
    if (!rusm_is_alive(e.rt, victim))
      assert_int_equal(rusm_spawn_stackful(e.rt, sf_body, NULL, NULL, &victim),
                       0);
    t_assert_no_failures();
  }
  /* drop whatever Exit/Down the rounds left queued for the test thread */
  rusm_msg *m;
  while (rusm_receive(e.me, NULL, 0, &m) == 0)
    rusm_msg_free(m);
  still_works(&e);
  t_stop(&e);
}

/* Kills every process but the test thread (some lost their exit signal to
 * an allocation failure, as intended) and waits until they are gone. */
static void kill_all_but_me(t_env *e) {
  /* repeat: a process may spawn another just before its own kill */
  for (int round = 0; round < 100; round++) {
    size_t n = 0;
    rusm_obs_processes(e->rt, NULL, 0, &n);
    rusm_obs_proc *ps = calloc(n + 64, sizeof *ps);
    assert_non_null(ps);
    rusm_obs_processes(e->rt, ps, n + 64, &n);
    for (size_t i = 0; i < n && i < n + 64; i++)
      if (ps[i].pid != e->pid)
        rusm_kill(e->rt, ps[i].pid);
    free(ps);
    if (rusm_rt_wait_idle(e->rt, 100) == 0)
      return;
  }
  fail_msg("processes survive repeated kills");
}

/* Allocation failures inside the schedulers while processes exchange
 * messages, spawn, link and die: nothing crashes, nothing leaks. */
typedef struct storm_arg {
  rusm_pid_t parent;
  int left;
} storm_arg;

static void churn_body(rusm_proc *self, void *arg) {
  storm_arg *a = arg;
  rusm_rt *rt = rusm_proc_rt(self);
  for (int i = 0; i < a->left; i++) {
    rusm_spawn_opts so;
    rusm_spawn_opts_init(&so);
    so.monitor = true;
    rusm_ref ref;
    so.monitor_ref = &ref;
    rusm_pid_t c;
    if (rusm_spawn_stackless(rt, &echo_ops, NULL, &so, &c) == 0) {
      rusm_send(rt, c, T_TAG_PING, "p", 1);
      rusm_msg *m;
      if (rusm_receive(self, NULL, 5, &m) == 0)
        rusm_msg_free(m);
      rusm_exit(rt, c, rusm_reason_str("churn"));
    }
    rusm_link(self, c);
    rusm_unlink(self, c);
    rusm_send_after(rt, 1, rusm_self(self), 9, NULL, 0, NULL);
  }
  rusm_send(rt, a->parent, T_TAG_DONE, NULL, 0);
}

static void test_scheduler_side_oom(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  enum { N = 4 };
  storm_arg args[N];
  for (int round = 0; round < T_SCALE(6, 3); round++) {
    rusm_pid_t pids[N];
    for (int i = 0; i < N; i++) {
      args[i].parent = e.pid;
      args[i].left = 60;
      assert_int_equal(
          rusm_spawn_stackful(e.rt, churn_body, &args[i], NULL, &pids[i]), 0);
    }
    /* fail some allocations while they churn, then let them finish */
    rusm__test_fail_allocs(200 + round * 150);
    int64_t until = rusm_now_ns() + 20 * 1000000;
    rusm_msg *m;
    while (rusm_now_ns() < until && rusm_receive(e.me, NULL, 1, &m) == 0)
      rusm_msg_free(m);
    rusm__test_fail_allocs(-1);
    (void)pids;
    kill_all_but_me(&e);
    while (rusm_receive(e.me, NULL, 0, &m) == 0)
      rusm_msg_free(m);
  }
  still_works(&e);
  t_stop(&e);
}

static int start_echo(rusm_rt *rt, void *arg, rusm_pid_t *out) {
  (void)arg;
  rusm_spawn_opts so;
  rusm_spawn_opts_init(&so);
  so.link = true;
  return rusm_spawn_stackless(rt, &echo_ops, NULL, &so, out);
}

/* Supervisors under allocation failures: every call fails cleanly or
 * works; the runtime works afterwards. */
static void test_supervisors_under_oom(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_trap_exit(e.me, true);
  /* one allocation fails (a transient shortage): the calls below block
   * on replies, and a lasting failure could lose one (documented) */
  for (int k = 0; k < T_SCALE(400, 120); k += 2) {
    rusm_child_spec specs[3] = {
        {"a", start_echo, NULL, RUSM_PERMANENT, 100, false},
        {"b", start_echo, NULL, RUSM_TRANSIENT, RUSM_SHUTDOWN_BRUTAL, false},
        {"c", start_echo, NULL, RUSM_TEMPORARY, 100, false},
    };
    rusm_pid_t sup = RUSM_PID_NONE, dyn = RUSM_PID_NONE, c;
    rusm__test_fail_one_alloc(k);
    int rc = rusm_sup_start(e.rt, NULL, specs, 3, NULL, &sup);
    T_CHECK(rc == 0 || rc == RUSM_ENOMEM || rc == RUSM_ENOPROC ||
            rc == RUSM_ESHUTDOWN);
    if (rc == 0) {
      rusm_child_spec extra = {"d", start_echo, NULL, RUSM_PERMANENT,
                               100, false};
      rc = rusm_sup_start_child(e.rt, sup, &extra, &c);
      T_CHECK(rc == 0 || rc == RUSM_ENOMEM || rc == RUSM_ENOPROC);
      rusm_child_info info[8];
      size_t n;
      rc = rusm_sup_which_children(e.rt, sup, info, 8, &n);
      T_CHECK(rc == 0 || rc == RUSM_ENOMEM || rc == RUSM_ENOPROC);
    }
    rusm_child_spec tmpl = {"w", start_echo, NULL, RUSM_PERMANENT, 100, false};
    rc = rusm_dynsup_start(e.rt, NULL, &tmpl, NULL, &dyn);
    T_CHECK(rc == 0 || rc == RUSM_ENOMEM || rc == RUSM_ENOPROC);
    for (int i = 0; rc == 0 && i < 4; i++) {
      int r2 = rusm_dynsup_start_child(e.rt, dyn, NULL, &c);
      T_CHECK(r2 == 0 || r2 == RUSM_ENOMEM || r2 == RUSM_ENOPROC);
    }
    rusm__test_fail_allocs(-1);
    if (sup)
      rusm_sup_stop(e.rt, sup, 5000);
    if (dyn)
      rusm_sup_stop(e.rt, dyn, 5000);
    kill_all_but_me(&e);
    rusm_msg *m;
    while (rusm_receive(e.me, NULL, 0, &m) == 0)
      rusm_msg_free(m);
    t_assert_no_failures();
  }
  still_works(&e);
  t_stop(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rt_create_fails_cleanly),
      cmocka_unit_test(test_api_under_oom),
      cmocka_unit_test(test_scheduler_side_oom),
      cmocka_unit_test(test_supervisors_under_oom),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
