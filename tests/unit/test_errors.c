/*
 * Unit tests: error and exit-code names, rusm_next / filter helpers, and
 * the argument and context checks of the process-core API (bad input gives
 * RUSM_EINVAL, calls in the wrong context RUSM_ECONTEXT, never a crash).
 */
#include "support.h"

/* ------------------------------------------------------------------ */
/* Names                                                               */
/* ------------------------------------------------------------------ */

static void test_error_names(void **state) {
  (void)state;
  static const struct {
    int code;
    const char *name;
  } codes[] = {
      {RUSM_OK, "RUSM_OK"},
      {RUSM_EINVAL, "RUSM_EINVAL"},
      {RUSM_ENOMEM, "RUSM_ENOMEM"},
      {RUSM_ENOPROC, "RUSM_ENOPROC"},
      {RUSM_ETIMEDOUT, "RUSM_ETIMEDOUT"},
      {RUSM_ESHUTDOWN, "RUSM_ESHUTDOWN"},
      {RUSM_ELIMIT, "RUSM_ELIMIT"},
      {RUSM_ECONTEXT, "RUSM_ECONTEXT"},
      {RUSM_ESYS, "RUSM_ESYS"},
      {RUSM_EEXIST, "RUSM_EEXIST"},
      {RUSM_ENOTFOUND, "RUSM_ENOTFOUND"},
      {RUSM_EBUSY, "RUSM_EBUSY"},
  };
  enum { N = sizeof codes / sizeof codes[0] };
  for (int i = 0; i < N; i++) {
    assert_string_equal(rusm_err_name(codes[i].code), codes[i].name);
    const char *msg = rusm_strerror(codes[i].code);
    assert_non_null(msg);
    assert_true(strlen(msg) > 0);
    for (int j = 0; j < i; j++)
      assert_string_not_equal(msg, rusm_strerror(codes[j].code));
  }
  /* Unknown codes: still a string, and not one of the known ones. */
  static const int unknown[] = {1, 42, -100, -999, INT32_MIN, INT32_MAX};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    const char *name = rusm_err_name(unknown[i]);
    const char *msg = rusm_strerror(unknown[i]);
    assert_non_null(name);
    assert_non_null(msg);
    for (int j = 0; j < N; j++) {
      assert_string_not_equal(name, codes[j].name);
      assert_string_not_equal(msg, rusm_strerror(codes[j].code));
    }
  }
}

static void test_exit_code_names(void **state) {
  (void)state;
  static const char *const want[RUSM_EXIT__COUNT] = {
      "normal",       "killed", "shutdown", "noproc",
      "noconnection", "trap",   "custom",   "kill"};
  for (int c = 0; c < RUSM_EXIT__COUNT; c++) {
    const char *name = rusm_exit_code_name((rusm_exit_code)c);
    assert_non_null(name);
    assert_string_equal(name, want[c]);
  }
  assert_non_null(rusm_exit_code_name(RUSM_EXIT__COUNT));
  assert_non_null(rusm_exit_code_name((rusm_exit_code)99));
  assert_non_null(rusm_exit_code_name((rusm_exit_code)-1));
  for (int c = 0; c < RUSM_EXIT__COUNT; c++)
    assert_string_not_equal(rusm_exit_code_name(RUSM_EXIT__COUNT),
                            rusm_exit_code_name((rusm_exit_code)c));
}

static void test_reason_and_next_helpers(void **state) {
  (void)state;
  static const char text[] = "detail";
  rusm_reason r = rusm_reason_str(text);
  assert_int_equal(r.code, RUSM_EXIT_CUSTOM);
  assert_int_equal(r.len, 6);
  assert_ptr_equal(r.data, text); /* a view, not a copy */
  r = rusm_reason_str("");
  assert_int_equal(r.code, RUSM_EXIT_CUSTOM);
  assert_int_equal(r.len, 0);

  rusm_reason k = RUSM_REASON_KILL;
  assert_int_equal(k.code, RUSM_EXIT_KILL);
  assert_int_equal(RUSM_REASON_KILLED.code, RUSM_EXIT_KILLED);
  assert_int_equal(RUSM_REASON_SHUTDOWN.code, RUSM_EXIT_SHUTDOWN);
  assert_int_equal(RUSM_REASON_NORMAL.len, 0);

  rusm_next n = rusm_next_wait();
  assert_int_equal(n.stop, 0);
  assert_int_equal(n.has_filter, 0);
  assert_int_equal(n.timeout_ms, -1);
  rusm_filter f = rusm_filter_tag(5);
  n = rusm_next_wait_for(&f, 25);
  assert_int_equal(n.stop, 0);
  assert_int_equal(n.has_filter, 1);
  assert_int_equal(n.filter.value, 5);
  assert_true(n.filter.mask == ~UINT64_C(0));
  assert_int_equal(n.timeout_ms, 25);
  n = rusm_next_wait_for(NULL, 0);
  assert_int_equal(n.has_filter, 0);
  assert_int_equal(n.timeout_ms, 0);
  n = rusm_next_wait_for(NULL, -5);
  assert_int_equal(n.timeout_ms, -1);
  n = rusm_next_stop(rusm_reason_str("x"));
  assert_int_equal(n.stop, 1);
  assert_int_equal(n.reason.code, RUSM_EXIT_CUSTOM);
  assert_int_equal(n.reason.len, 1);

  rusm_spawn_opts o;
  memset(&o, 0x5a, sizeof o);
  rusm_spawn_opts_init(&o);
  assert_int_equal(o.stack_size, 0);
  assert_int_equal(o.scheduler, -1);
  assert_false(o.link);
  assert_false(o.monitor);
  assert_null(o.monitor_ref);
}

/* ------------------------------------------------------------------ */
/* Bad arguments                                                       */
/* ------------------------------------------------------------------ */

static void body_nop(rusm_proc *self, void *arg) {
  (void)self;
  (void)arg;
}

static const rusm_stackless_ops empty_ops = {NULL, NULL, NULL};

static rusm_step step_exit(rusm_proc *self, void *state) {
  (void)self;
  (void)state;
  rusm_step st = {RUSM_STEP_EXIT, -1, RUSM_REASON_NORMAL};
  return st;
}

static const rusm_body_ops no_step_ops = {"bad", NULL, NULL};
static const rusm_body_ops exit_ops = {"exits", step_exit, NULL};

static void test_runtime_options_rejected(void **state) {
  (void)state;
  rusm_rt *rt = NULL;
  assert_int_equal(rusm_rt_create(NULL, NULL), RUSM_EINVAL);
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = RUSM_METRICS_MAX_SCHED + 1;
  assert_int_equal(rusm_rt_create(&o, &rt), RUSM_EINVAL);
  rusm_rt_opts_init(&o);
  o.max_processes = (1u << RUSM_PID_SLOT_BITS) + 1;
  assert_int_equal(rusm_rt_create(&o, &rt), RUSM_EINVAL);
  rusm_rt_opts_init(&o);
  o.node_id = RUSM_NODE_ID_MAX + 1;
  assert_int_equal(rusm_rt_create(&o, &rt), RUSM_EINVAL);
  rusm_rt_opts_init(&o);
  o.budget = UINT32_MAX;
  assert_int_equal(rusm_rt_create(&o, &rt), RUSM_EINVAL);
  assert_null(rt);

  /* The largest accepted values. */
  rusm_rt_opts_init(&o);
  o.schedulers = 1;
  o.node_id = RUSM_NODE_ID_MAX;
  assert_int_equal(rusm_rt_create(&o, &rt), 0);
  assert_int_equal(rusm_rt_node(rt), RUSM_NODE_ID_MAX);
  rusm_rt_destroy(rt);
  rusm_rt_destroy(NULL);
}

static void test_invalid_arguments(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 1);
  rusm_pid_t p = RUSM_PID_NONE;

  /* Spawns. */
  assert_int_equal(rusm_spawn_stackless(e.rt, NULL, NULL, NULL, &p),
                   RUSM_EINVAL);
  assert_int_equal(rusm_spawn_stackless(e.rt, &empty_ops, NULL, NULL, &p),
                   RUSM_EINVAL);
  assert_int_equal(rusm_spawn_stackless(NULL, &t_waiter_ops, NULL, NULL, &p),
                   RUSM_EINVAL);
  assert_int_equal(rusm_spawn_stackful(e.rt, NULL, NULL, NULL, &p),
                   RUSM_EINVAL);
  assert_int_equal(rusm_spawn_stackful(NULL, body_nop, NULL, NULL, &p),
                   RUSM_EINVAL);
  rusm_spawn_opts so;
  rusm_spawn_opts_init(&so);
  so.stack_size = 100; /* below a page */
  assert_int_equal(rusm_spawn_stackful(e.rt, body_nop, NULL, &so, &p),
                   RUSM_EINVAL);
  so.stack_size = UINT32_MAX;
  assert_int_equal(rusm_spawn_stackful(e.rt, body_nop, NULL, &so, &p),
                   RUSM_EINVAL);
  assert_int_equal(rusm_spawn_body(e.rt, NULL, NULL, NULL, &p), RUSM_EINVAL);
  assert_int_equal(rusm_spawn_body(e.rt, &no_step_ops, NULL, NULL, &p),
                   RUSM_EINVAL);
  assert_int_equal(rusm_spawn_body(NULL, &exit_ops, NULL, NULL, &p),
                   RUSM_EINVAL);
  assert_true(p == RUSM_PID_NONE);
  assert_int_equal(rusm_process_count(e.rt), 1); /* nothing was spawned */

  /* Sends: system tags are the runtime's; data NULL needs len 0. */
  rusm_metrics m0 = *t_metrics(e.rt);
  assert_int_equal(rusm_send(e.rt, e.pid, RUSM_TAG_SYSTEM, NULL, 0),
                   RUSM_EINVAL);
  assert_int_equal(rusm_send(e.rt, e.pid, RUSM_TAG_EXIT, NULL, 0), RUSM_EINVAL);
  assert_int_equal(rusm_send(e.rt, e.pid, RUSM_TAG_DOWN, "x", 1), RUSM_EINVAL);
  assert_int_equal(rusm_send(e.rt, e.pid, 1, NULL, 5), RUSM_EINVAL);
  assert_int_equal(rusm_send(NULL, e.pid, 1, NULL, 0), RUSM_EINVAL);
  rusm_buf *b = rusm_buf_from("abc", 3);
  assert_int_equal(rusm_send_buf(e.rt, e.pid, RUSM_TAG_SYSTEM | 7, b),
                   RUSM_EINVAL);
  assert_int_equal(rusm_send_buf(e.rt, e.pid, 1, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_send_buf(NULL, e.pid, 1, b), RUSM_EINVAL);
  rusm_buf_unref(b);
  t_expect_nothing(&e, NULL); /* none of them arrived */
  assert_int_equal(t_metrics(e.rt)->sent, m0.sent);

  /* Receives and the rest. */
  rusm_msg *m = NULL;
  assert_int_equal(rusm_receive(e.me, NULL, 0, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_receive(NULL, NULL, 0, &m), RUSM_EINVAL);
  assert_int_equal(rusm_try_receive(e.me, NULL, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_try_receive(NULL, NULL, &m), RUSM_EINVAL);
  assert_int_equal(rusm_attach(e.rt, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_attach(NULL, &e.me), RUSM_EINVAL);
  rusm_proc_info info;
  assert_int_equal(rusm_proc_info_get(e.rt, e.pid, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_proc_info_get(NULL, e.pid, &info), RUSM_EINVAL);
  assert_int_equal(rusm_proc_info_get(e.rt, RUSM_PID_NONE, &info),
                   RUSM_ENOPROC);
  assert_int_equal(rusm_on_exit(e.me, NULL, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_on_exit(NULL, free, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_exit_self(NULL, RUSM_REASON_NORMAL), RUSM_EINVAL);
  assert_int_equal(rusm_kill(NULL, e.pid), RUSM_EINVAL);
  assert_false(rusm_is_alive(NULL, e.pid));
  assert_int_equal(rusm_process_count(NULL), 0);
  assert_int_equal(rusm_rt_schedulers(NULL), 0);
  assert_int_equal(rusm_rt_wait_idle(NULL, 0), RUSM_EINVAL);
  assert_true(rusm_self(NULL) == RUSM_PID_NONE);
  assert_null(rusm_proc_rt(NULL));

  /* Calls that need their own process, from the test thread. */
  assert_int_equal(rusm_exit_self(e.me, RUSM_REASON_NORMAL), RUSM_ECONTEXT);
  rusm_yield(e.me);       /* not a coroutine: a no-op */
  rusm_yield(NULL);       /* ignored */
  rusm_consume(e.me, 10); /* not on a scheduler: nothing to charge */
  rusm_consume(NULL, 10); /* ignored */
  assert_true(rusm_is_alive(e.rt, e.pid));
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Wrong context                                                       */
/* ------------------------------------------------------------------ */

/* A stackless body trying the calls of other contexts; it reports the
 * results in order, as int64 values. */
static rusm_next ctx_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)state;
  if (m == NULL || rusm_msg_tag(m) != T_TAG_GO)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  rusm_rt *rt = rusm_proc_rt(self);
  int64_t rc[5];
  rusm_msg *got = NULL;
  rc[0] = rusm_receive(self, NULL, 0, &got);
  rc[1] = rusm_exit_self(self, RUSM_REASON_SHUTDOWN);
  rusm_proc *p = NULL;
  rc[2] = rusm_attach(rt, &p);
  rc[3] = rusm_rt_wait_idle(rt, 0);
  rusm_yield(self); /* stackless: a no-op, the callback goes on */
  rc[4] = rusm_try_receive(self, NULL, &got); /* fine here: nothing queued */
  t_send(rt, rusm_msg_from(m), T_TAG_DONE, rc, sizeof rc);
  return rusm_next_wait();
}

static const rusm_stackless_ops ctx_ops = {NULL, ctx_handle,
                                           t_waiter_terminate};

typedef struct other_arg {
  rusm_proc *victim; /* a process that is not the caller */
  rusm_pid_t parent;
} other_arg;

/* A stackful body using another process's handle. */
static void other_body(rusm_proc *self, void *arg) {
  other_arg *a = arg;
  rusm_msg *m = NULL;
  int64_t rc[2];
  rc[0] = rusm_receive(a->victim, NULL, 0, &m);
  rc[1] = rusm_exit_self(a->victim, RUSM_REASON_NORMAL);
  t_send(rusm_proc_rt(self), a->parent, T_TAG_DONE, rc, sizeof rc);
}

static void test_wrong_context(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 1);
  rusm_proc *again = NULL;
  assert_int_equal(rusm_attach(e.rt, &again), RUSM_EEXIST);
  assert_null(again);

  rusm_pid_t p;
  assert_int_equal(
      rusm_spawn_stackless(e.rt, &ctx_ops, (void *)(uintptr_t)e.pid, NULL, &p),
      0);
  t_send(e.rt, p, T_TAG_GO, NULL, 0);
  rusm_msg *m = t_recv_tag(&e, T_TAG_DONE);
  int64_t rc[5];
  assert_int_equal(rusm_msg_len(m), sizeof rc);
  memcpy(rc, rusm_msg_data(m), sizeof rc);
  rusm_msg_free(m);
  assert_int_equal(rc[0], RUSM_ECONTEXT);
  assert_int_equal(rc[1], RUSM_ECONTEXT);
  assert_int_equal(rc[2], RUSM_ECONTEXT);
  assert_int_equal(rc[3], RUSM_ECONTEXT);
  assert_int_equal(rc[4], RUSM_ETIMEDOUT);
  assert_true(rusm_is_alive(e.rt, p)); /* none of it ended the process */
  t_send(e.rt, p, T_TAG_GO, NULL, 0);  /* and it still works */
  m = t_recv_tag(&e, T_TAG_DONE);
  memcpy(rc, rusm_msg_data(m), sizeof rc);
  rusm_msg_free(m);
  assert_int_equal(rc[0], RUSM_ECONTEXT);
  t_send(e.rt, p, T_TAG_STOP, NULL, 0);
  assert_int_equal(t_wait_note(&e, p).code, RUSM_EXIT_NORMAL);

  /* Someone else's process handle. */
  other_arg a = {e.me, e.pid};
  assert_int_equal(rusm_spawn_stackful(e.rt, other_body, &a, NULL, &p), 0);
  m = t_recv_tag(&e, T_TAG_DONE);
  int64_t rc2[2];
  memcpy(rc2, rusm_msg_data(m), sizeof rc2);
  rusm_msg_free(m);
  assert_int_equal(rc2[0], RUSM_ECONTEXT);
  assert_int_equal(rc2[1], RUSM_ECONTEXT);
  t_wait_idle(&e);
  t_stop(&e);
}

/* Without attaching, the thread has no process. */
static void test_unattached_thread(void **state) {
  (void)state;
  t_cleanup_failed();
  rusm_rt *rt = NULL;
  assert_int_equal(rusm_rt_create(NULL, &rt), 0);
  assert_null(rusm_current());
  assert_int_equal(rusm_send(rt, rusm_pid_make(0, 1, 1), 1, NULL, 0), 0);
  /* spawn_link / spawn_monitor need a calling process. */
  rusm_spawn_opts so;
  rusm_spawn_opts_init(&so);
  so.link = true;
  rusm_pid_t p = RUSM_PID_NONE;
  assert_int_equal(rusm_spawn_stackful(rt, body_nop, NULL, &so, &p),
                   RUSM_ECONTEXT);
  so.link = false;
  so.monitor = true;
  assert_int_equal(rusm_spawn_stackless(rt, &t_waiter_ops, NULL, &so, &p),
                   RUSM_ECONTEXT);
  assert_true(p == RUSM_PID_NONE);
  assert_int_equal(rusm_process_count(rt), 0);
  rusm_proc *me = NULL;
  assert_int_equal(rusm_attach(rt, &me), 0);
  assert_ptr_equal(rusm_current(), me);
  rusm_detach(me);
  assert_null(rusm_current());
  rusm_detach(me); /* twice: ignored */
  rusm_detach(NULL);
  rusm_rt_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_error_names),
      cmocka_unit_test(test_exit_code_names),
      cmocka_unit_test(test_reason_and_next_helpers),
      cmocka_unit_test(test_runtime_options_rejected),
      cmocka_unit_test(test_invalid_arguments),
      cmocka_unit_test(test_wrong_context),
      cmocka_unit_test(test_unattached_thread),
  };
  return T_RUN(tests);
}
