// ctest-labels: concurrent
/*
 * Unit tests: supervisors (src/otp/sup.c) — strategies, restart types,
 * restart intensity and escalation, shutdown specs and order, the child
 * API, dynamic supervisors (10,000 children), and a 3-level tree.
 *
 * Children announce themselves: their start function (which runs in the
 * supervisor's process, so announcements keep the start order) sends UP
 * {label, pid} to the test thread, and their terminate callback sends
 * GONE {label, pid, reason}. Tests wait for these messages, never sleep.
 */
#include "support.h"

#include <pthread.h>

#define TAG_UP (T_TAG_CTL | 0x100)   /* start fn -> test: a child started */
#define TAG_GONE (T_TAG_CTL | 0x101) /* worker -> test: it ended */
#define TAG_RC (T_TAG_CTL | 0x102)   /* helper process -> test: rc + pid */

#define LONG_PERIOD 600000 /* ms: no restart leaves the window in a test */

/* ------------------------------------------------------------------ */
/* Workers                                                             */
/* ------------------------------------------------------------------ */

typedef struct wcfg {
  rusm_pid_t test; /* notes go here */
  uint64_t label;
  bool trap;            /* traps exits ... */
  bool ignore_shutdown; /* ... and ignores them (must be killed) */
  bool no_link;         /* start fn spawns unlinked */
  bool quiet;           /* no GONE note */
  bool ignore_start;    /* start fn returns 0 with no pid (OTP's ignore) */
  int fail_from;        /* start #fail_from (1-based) on fails; 0: never */
  atomic_int starts;    /* start fn calls */
  atomic_int call_self; /* rc of a call to its own supervisor from start */
  bool do_call_self;
  bool exit_at_init; /* ends normally at once (races its linking) */
  bool no_up;        /* start fn sends no UP note */
} wcfg;

typedef struct note {
  uint64_t label;
  rusm_pid_t pid;
  int32_t code;
  uint32_t len;
  char detail[32];
} note;

static void send_note(rusm_rt *rt, rusm_pid_t to, uint64_t tag, uint64_t label,
                      rusm_pid_t pid, const rusm_reason *why) {
  note n;
  memset(&n, 0, sizeof n);
  n.label = label;
  n.pid = pid;
  n.code = why ? (int32_t)why->code : -1;
  if (why && why->len) {
    n.len = why->len;
    memcpy(n.detail, why->data,
           why->len < sizeof n.detail - 1 ? why->len : sizeof n.detail - 1);
  }
  T_CHECK(rusm_send(rt, to, tag, &n, sizeof n) == 0);
}

/* A stop reason's detail must outlive handle()'s borrowed message. */
static _Thread_local char w_detail[64];

static rusm_next w_stop(rusm_reason r) {
  if (r.len > sizeof w_detail)
    r.len = sizeof w_detail;
  if (r.len > 0)
    memcpy(w_detail, r.data, r.len);
  r.data = r.len > 0 ? (const uint8_t *)w_detail : NULL;
  return rusm_next_stop(r);
}

static rusm_next w_init(rusm_proc *self, void **state) {
  wcfg *c = *state;
  if (c->trap)
    rusm_trap_exit(self, true);
  if (c->exit_at_init)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  return rusm_next_wait();
}

static rusm_next w_handle(rusm_proc *self, void *state, rusm_msg *m) {
  wcfg *c = state;
  if (!m)
    return rusm_next_wait();
  uint64_t tag = rusm_msg_tag(m);
  if (tag == T_TAG_STOP)
    return w_stop(t_stop_reason(m));
  if (tag == T_TAG_PING) {
    T_CHECK(rusm_send(rusm_proc_rt(self), rusm_msg_from(m), T_TAG_PONG,
                      rusm_msg_data(m), rusm_msg_len(m)) == 0);
  } else if (tag == RUSM_TAG_EXIT && !c->ignore_shutdown) {
    rusm_exit_info xi;
    T_CHECK(rusm_msg_exit(m, &xi) == 0);
    return w_stop(xi.reason);
  }
  return rusm_next_wait();
}

static void w_terminate(rusm_proc *self, void *state, const rusm_reason *why) {
  wcfg *c = state;
  if (!c->quiet)
    send_note(rusm_proc_rt(self), c->test, TAG_GONE, c->label, rusm_self(self),
              why);
}

static const rusm_stackless_ops w_ops = {w_init, w_handle, w_terminate};

static int w_start(rusm_rt *rt, void *arg, rusm_pid_t *out) {
  wcfg *c = arg;
  int n = atomic_fetch_add(&c->starts, 1) + 1;
  if (c->do_call_self) {
    rusm_child_counts cc;
    atomic_store(&c->call_self,
                 rusm_sup_count_children(rt, rusm_self(rusm_current()), &cc));
  }
  if (c->fail_from > 0 && n >= c->fail_from)
    return RUSM_ESYS;
  if (c->ignore_start) {
    *out = RUSM_PID_NONE;
    return 0;
  }
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = !c->no_link;
  int rc = rusm_spawn_stackless(rt, &w_ops, c, &o, out);
  if (rc == 0 && !c->no_up)
    send_note(rt, c->test, TAG_UP, c->label, *out, NULL);
  return rc;
}

static void wcfg_init(wcfg *c, t_env *e, uint64_t label) {
  memset(c, 0, sizeof *c);
  c->test = e->pid;
  c->label = label;
}

static rusm_child_spec wspec(const char *id, wcfg *c, rusm_restart restart,
                             int64_t shutdown_ms) {
  rusm_child_spec s = {id, w_start, c, restart, shutdown_ms, false};
  return s;
}

/* ------------------------------------------------------------------ */
/* Test-thread helpers                                                 */
/* ------------------------------------------------------------------ */

static note recv_note(t_env *e, uint64_t tag) {
  rusm_msg *m = t_recv_tag(e, tag);
  note n;
  assert_int_equal(rusm_msg_len(m), sizeof n);
  memcpy(&n, rusm_msg_data(m), sizeof n);
  rusm_msg_free(m);
  return n;
}

/* The next UP must be about label; returns the new pid. */
static rusm_pid_t expect_up(t_env *e, uint64_t label) {
  note n = recv_note(e, TAG_UP);
  if (n.label != label)
    fail_msg("UP from '%c', expected '%c'", (char)n.label, (char)label);
  return n.pid;
}

/* The next GONE must be about label with the exit code. */
static note expect_gone(t_env *e, uint64_t label, rusm_exit_code code) {
  note n = recv_note(e, TAG_GONE);
  if (n.label != label)
    fail_msg("GONE from '%c', expected '%c'", (char)n.label, (char)label);
  if (n.code != (int32_t)code)
    fail_msg("'%c' exited %s, expected %s", (char)label,
             rusm_exit_code_name((rusm_exit_code)n.code),
             rusm_exit_code_name(code));
  return n;
}

static void expect_no(t_env *e, uint64_t tag) {
  rusm_filter f = rusm_filter_tag(tag);
  t_expect_nothing(e, &f);
}

/* which_children into a fixed array; returns the total. */
static size_t which(t_env *e, rusm_pid_t sup, rusm_child_info *out,
                    size_t cap) {
  size_t count = 0;
  int rc = rusm_sup_which_children(e->rt, sup, out, cap, &count);
  if (rc != 0)
    fail_msg("which_children: %s", rusm_err_name(rc));
  return count;
}

static bool child_info(t_env *e, rusm_pid_t sup, const char *id,
                       rusm_child_info *out) {
  rusm_child_info ci[16];
  size_t n = which(e, sup, ci, 16);
  for (size_t i = 0; i < n && i < 16; i++)
    if (strcmp(ci[i].id, id) == 0) {
      *out = ci[i];
      return true;
    }
  return false;
}

static rusm_child_counts counts(t_env *e, rusm_pid_t sup) {
  rusm_child_counts c;
  memset(&c, 0, sizeof c);
  int rc = rusm_sup_count_children(e->rt, sup, &c);
  if (rc != 0)
    fail_msg("count_children: %s", rusm_err_name(rc));
  return c;
}

/* A child's exit reaches the test (GONE) and its supervisor (Exit) on
 * separate paths; to see the supervisor's decision, ask until it shows.
 * Each question is a round trip to the supervisor, not a sleep. */
static void wait_stopped(t_env *e, rusm_pid_t sup, const char *id,
                         bool expect_present) {
  int64_t end = rusm_now_ns() + (int64_t)T_GUARD_MS * 1000000;
  for (;;) {
    rusm_child_info ci;
    bool present = child_info(e, sup, id, &ci);
    if (present == expect_present && (!present || ci.pid == RUSM_PID_NONE))
      return;
    if (rusm_now_ns() > end)
      fail_msg("child %s: still %s", id, present ? "present" : "absent");
    sched_yield();
  }
}

static rusm_pid_t start_sup(t_env *e, rusm_sup_strategy strategy,
                            uint32_t intensity, const rusm_child_spec *specs,
                            size_t n) {
  rusm_sup_flags f;
  rusm_sup_flags_init(&f);
  f.strategy = strategy;
  f.intensity = intensity;
  f.period_ms = LONG_PERIOD;
  rusm_pid_t sup = RUSM_PID_NONE;
  int rc = rusm_sup_start(e->rt, &f, specs, n, NULL, &sup);
  if (rc != 0)
    fail_msg("rusm_sup_start: %s", rusm_err_name(rc));
  assert_true(rusm_is_alive(e->rt, sup));
  return sup;
}

static void stop_sup(t_env *e, rusm_pid_t sup) {
  int rc = rusm_sup_stop(e->rt, sup, T_GUARD_MS);
  if (rc != 0)
    fail_msg("rusm_sup_stop: %s", rusm_err_name(rc));
  assert_false(rusm_is_alive(e->rt, sup));
}

static void crash(t_env *e, rusm_pid_t pid) {
  t_send_stop(e->rt, pid, RUSM_EXIT_CUSTOM, "boom");
}

/* ------------------------------------------------------------------ */
/* Basics and shutdown order                                           */
/* ------------------------------------------------------------------ */

static void test_flags_defaults(void **state) {
  (void)state;
  rusm_sup_flags f;
  memset(&f, 0xff, sizeof f);
  rusm_sup_flags_init(&f);
  assert_int_equal(f.strategy, RUSM_ONE_FOR_ONE);
  assert_int_equal(f.intensity, 1);
  assert_int_equal(f.period_ms, 5000);
}

static void test_start_order_and_stop_order(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg a, b, c;
  wcfg_init(&a, &e, 'A');
  wcfg_init(&b, &e, 'B');
  wcfg_init(&c, &e, 'C');
  rusm_child_spec specs[] = {wspec("a", &a, RUSM_PERMANENT, 1000),
                             wspec("b", &b, RUSM_PERMANENT, 1000),
                             wspec("c", &c, RUSM_PERMANENT, 1000)};
  rusm_pid_t sup = start_sup(&e, RUSM_ONE_FOR_ONE, 1, specs, 3);
  rusm_pid_t pa = expect_up(&e, 'A'), pb = expect_up(&e, 'B'),
             pc = expect_up(&e, 'C');

  rusm_child_info ci[4];
  assert_int_equal(which(&e, sup, ci, 4), 3);
  assert_string_equal(ci[0].id, "a");
  assert_string_equal(ci[1].id, "b");
  assert_string_equal(ci[2].id, "c");
  assert_true(ci[0].pid == pa && ci[1].pid == pb && ci[2].pid == pc);
  assert_int_equal(ci[0].restarts, 0);
  assert_int_equal(ci[0].restart, RUSM_PERMANENT);
  assert_false(ci[0].supervisor);
  /* a smaller buffer still reports the total */
  assert_int_equal(which(&e, sup, ci, 1), 3);
  assert_string_equal(ci[0].id, "a");
  size_t total = 0;
  assert_int_equal(rusm_sup_which_children(e.rt, sup, NULL, 0, &total), 0);
  assert_int_equal(total, 3);

  rusm_child_counts cc = counts(&e, sup);
  assert_int_equal(cc.specs, 3);
  assert_int_equal(cc.active, 3);
  assert_int_equal(cc.workers, 3);
  assert_int_equal(cc.supervisors, 0);

  stop_sup(&e, sup);
  /* reverse start order, each told shutdown */
  assert_true(expect_gone(&e, 'C', RUSM_EXIT_SHUTDOWN).pid == pc);
  assert_true(expect_gone(&e, 'B', RUSM_EXIT_SHUTDOWN).pid == pb);
  assert_true(expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN).pid == pa);
  assert_int_equal(rusm_sup_stop(e.rt, sup, T_GUARD_MS), RUSM_ENOPROC);
  t_wait_idle(&e);
  t_stop(&e);
}

static void test_stop_by_linked_caller(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg a;
  wcfg_init(&a, &e, 'A');
  rusm_child_spec sa = wspec("a", &a, RUSM_PERMANENT, 1000);
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  o.monitor = true;
  rusm_ref ref = 0;
  o.monitor_ref = &ref;
  rusm_pid_t sup = RUSM_PID_NONE;
  assert_int_equal(rusm_sup_start(e.rt, NULL, &sa, 1, &o, &sup), 0);
  assert_true(ref != 0);
  expect_up(&e, 'A');
  stop_sup(&e, sup);
  expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN);
  /* the caller's own monitor reports the stop; the caller survives it */
  rusm_msg *m = t_recv_tag(&e, RUSM_TAG_DOWN);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_true(d.ref == ref && d.pid == sup);
  assert_int_equal(d.reason.code, RUSM_EXIT_SHUTDOWN);
  rusm_msg_free(m);
  assert_true(rusm_is_alive(e.rt, e.pid));
  t_wait_idle(&e);
  t_stop(&e);
}

/* The runtime's default mailbox bound does not apply to supervisors: the
 * start handshake and requests are user messages and must not be shed. */
static void test_bounded_mailboxes(void **state) {
  (void)state;
  rusm_rt_opts ro;
  rusm_rt_opts_init(&ro);
  ro.mailbox_capacity = 2;
  t_env e;
  t_start_opts(&e, &ro);
  enum { N = 16 };
  wcfg c[N];
  rusm_child_spec specs[N];
  char ids[N][16];
  for (int i = 0; i < N; i++) {
    wcfg_init(&c[i], &e, (uint64_t)i);
    c[i].quiet = c[i].no_up = true;
    snprintf(ids[i], sizeof ids[i], "c%d", i);
    specs[i] = wspec(ids[i], &c[i], RUSM_PERMANENT, 1000);
  }
  rusm_pid_t sup = start_sup(&e, RUSM_ONE_FOR_ONE, 1, specs, N);
  rusm_child_counts cc = counts(&e, sup);
  assert_int_equal(cc.specs, N);
  assert_int_equal(cc.active, N);
  stop_sup(&e, sup);
  t_wait_idle(&e);
  t_stop(&e);
}

static void test_start_failure_stops_started(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg a, b, c;
  wcfg_init(&a, &e, 'A');
  wcfg_init(&b, &e, 'B');
  wcfg_init(&c, &e, 'C');
  c.fail_from = 1;
  rusm_child_spec specs[] = {wspec("a", &a, RUSM_PERMANENT, 1000),
                             wspec("b", &b, RUSM_PERMANENT, 1000),
                             wspec("c", &c, RUSM_PERMANENT, 1000)};
  rusm_sup_flags f;
  rusm_sup_flags_init(&f);
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true; /* the test thread survives the failed supervisor */
  rusm_pid_t sup = RUSM_PID_NONE;
  assert_int_equal(rusm_sup_start(e.rt, &f, specs, 3, &o, &sup), RUSM_ESYS);
  assert_true(sup == RUSM_PID_NONE);
  expect_up(&e, 'A');
  expect_up(&e, 'B');
  expect_gone(&e, 'B', RUSM_EXIT_SHUTDOWN);
  expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN);
  t_wait_idle(&e);
  assert_true(rusm_is_alive(e.rt, e.pid)); /* the parent survived */

  /* bad input: nothing is started */
  rusm_child_spec dup[] = {wspec("x", &a, RUSM_PERMANENT, 0),
                           wspec("x", &b, RUSM_PERMANENT, 0)};
  assert_int_equal(rusm_sup_start(e.rt, &f, dup, 2, NULL, &sup), RUSM_EEXIST);
  rusm_child_spec bad = wspec("", &a, RUSM_PERMANENT, 0);
  assert_int_equal(rusm_sup_start(e.rt, &f, &bad, 1, NULL, &sup), RUSM_EINVAL);
  bad =
      wspec("0123456789012345678901234567890123456789012345678901234567890123",
            &a, RUSM_PERMANENT, 0);
  assert_int_equal(rusm_sup_start(e.rt, &f, &bad, 1, NULL, &sup), RUSM_EINVAL);
  bad = wspec("x", &a, RUSM_PERMANENT, -2);
  assert_int_equal(rusm_sup_start(e.rt, &f, &bad, 1, NULL, &sup), RUSM_EINVAL);
  bad = wspec("x", &a, RUSM_PERMANENT, 0);
  bad.start = NULL;
  assert_int_equal(rusm_sup_start(e.rt, &f, &bad, 1, NULL, &sup), RUSM_EINVAL);
  f.period_ms = 0;
  assert_int_equal(rusm_sup_start(e.rt, &f, NULL, 0, NULL, &sup), RUSM_EINVAL);
  expect_no(&e, TAG_UP);

  /* no children at all is fine; flags NULL means the defaults */
  assert_int_equal(rusm_sup_start(e.rt, NULL, NULL, 0, NULL, &sup), 0);
  assert_int_equal(counts(&e, sup).specs, 0);
  stop_sup(&e, sup);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Strategies                                                          */
/* ------------------------------------------------------------------ */

static void test_one_for_one(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg a, b, c;
  wcfg_init(&a, &e, 'A');
  wcfg_init(&b, &e, 'B');
  wcfg_init(&c, &e, 'C');
  b.no_link = true; /* the supervisor links it anyway */
  rusm_child_spec specs[] = {wspec("a", &a, RUSM_PERMANENT, 1000),
                             wspec("b", &b, RUSM_PERMANENT, 1000),
                             wspec("c", &c, RUSM_PERMANENT, 1000)};
  rusm_pid_t sup = start_sup(&e, RUSM_ONE_FOR_ONE, 10, specs, 3);
  rusm_pid_t pa = expect_up(&e, 'A'), pb = expect_up(&e, 'B'),
             pc = expect_up(&e, 'C');
  for (int round = 0; round < 3; round++) {
    crash(&e, pb);
    assert_true(expect_gone(&e, 'B', RUSM_EXIT_CUSTOM).pid == pb);
    rusm_pid_t nb = expect_up(&e, 'B');
    assert_true(nb != pb);
    pb = nb;
  }
  expect_no(&e, TAG_GONE);
  rusm_child_info ci[3];
  assert_int_equal(which(&e, sup, ci, 3), 3);
  assert_true(ci[0].pid == pa && ci[1].pid == pb && ci[2].pid == pc);
  assert_int_equal(ci[0].restarts, 0);
  assert_int_equal(ci[1].restarts, 3);
  assert_int_equal(ci[2].restarts, 0);
  stop_sup(&e, sup);
  expect_gone(&e, 'C', RUSM_EXIT_SHUTDOWN);
  expect_gone(&e, 'B', RUSM_EXIT_SHUTDOWN);
  expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN);
  t_wait_idle(&e);
  t_stop(&e);
}

static void test_one_for_all(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg a, b, c;
  wcfg_init(&a, &e, 'A');
  wcfg_init(&b, &e, 'B');
  wcfg_init(&c, &e, 'C');
  rusm_child_spec specs[] = {wspec("a", &a, RUSM_PERMANENT, 1000),
                             wspec("b", &b, RUSM_PERMANENT, 1000),
                             wspec("c", &c, RUSM_PERMANENT, 1000)};
  rusm_pid_t sup = start_sup(&e, RUSM_ONE_FOR_ALL, 10, specs, 3);
  rusm_pid_t pa = expect_up(&e, 'A'), pb = expect_up(&e, 'B'),
             pc = expect_up(&e, 'C');
  crash(&e, pb);
  expect_gone(&e, 'B', RUSM_EXIT_CUSTOM);
  /* the others stop in reverse start order, then all start in order */
  assert_true(expect_gone(&e, 'C', RUSM_EXIT_SHUTDOWN).pid == pc);
  assert_true(expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN).pid == pa);
  rusm_pid_t na = expect_up(&e, 'A'), nb = expect_up(&e, 'B'),
             nc = expect_up(&e, 'C');
  assert_true(na != pa && nb != pb && nc != pc);
  expect_no(&e, TAG_GONE);
  rusm_child_info ci[3];
  assert_int_equal(which(&e, sup, ci, 3), 3);
  assert_true(ci[0].pid == na && ci[1].pid == nb && ci[2].pid == nc);
  for (int i = 0; i < 3; i++)
    assert_int_equal(ci[i].restarts, 1);
  stop_sup(&e, sup);
  expect_gone(&e, 'C', RUSM_EXIT_SHUTDOWN);
  expect_gone(&e, 'B', RUSM_EXIT_SHUTDOWN);
  expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN);
  t_wait_idle(&e);
  t_stop(&e);
}

static void test_rest_for_one(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg a, b, c, d;
  wcfg_init(&a, &e, 'A');
  wcfg_init(&b, &e, 'B');
  wcfg_init(&c, &e, 'C');
  wcfg_init(&d, &e, 'D');
  rusm_child_spec specs[] = {wspec("a", &a, RUSM_PERMANENT, 1000),
                             wspec("b", &b, RUSM_PERMANENT, 1000),
                             wspec("c", &c, RUSM_PERMANENT, 1000),
                             wspec("d", &d, RUSM_PERMANENT, 1000)};
  rusm_pid_t sup = start_sup(&e, RUSM_REST_FOR_ONE, 10, specs, 4);
  rusm_pid_t pa = expect_up(&e, 'A'), pb = expect_up(&e, 'B');
  expect_up(&e, 'C');
  expect_up(&e, 'D');
  crash(&e, pb);
  expect_gone(&e, 'B', RUSM_EXIT_CUSTOM);
  expect_gone(&e, 'D', RUSM_EXIT_SHUTDOWN);
  expect_gone(&e, 'C', RUSM_EXIT_SHUTDOWN);
  expect_up(&e, 'B');
  expect_up(&e, 'C');
  rusm_pid_t pd = expect_up(&e, 'D');
  expect_no(&e, TAG_GONE);
  expect_no(&e, TAG_UP);
  rusm_child_info ci[4];
  assert_int_equal(which(&e, sup, ci, 4), 4);
  assert_true(ci[0].pid == pa); /* started before B: untouched */
  assert_int_equal(ci[0].restarts, 0);
  assert_int_equal(ci[1].restarts, 1);
  assert_true(ci[3].pid == pd);

  /* the last child crashing restarts only itself */
  crash(&e, pd);
  expect_gone(&e, 'D', RUSM_EXIT_CUSTOM);
  expect_up(&e, 'D');
  expect_no(&e, TAG_GONE);
  stop_sup(&e, sup);
  expect_gone(&e, 'D', RUSM_EXIT_SHUTDOWN);
  expect_gone(&e, 'C', RUSM_EXIT_SHUTDOWN);
  expect_gone(&e, 'B', RUSM_EXIT_SHUTDOWN);
  expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Restart types                                                       */
/* ------------------------------------------------------------------ */

static void test_restart_types(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg p, t, m;
  wcfg_init(&p, &e, 'P');
  wcfg_init(&t, &e, 'T');
  wcfg_init(&m, &e, 'M');
  rusm_child_spec specs[] = {wspec("perm", &p, RUSM_PERMANENT, 1000),
                             wspec("trans", &t, RUSM_TRANSIENT, 1000),
                             wspec("temp", &m, RUSM_TEMPORARY, 1000)};
  rusm_pid_t sup = start_sup(&e, RUSM_ONE_FOR_ONE, 100, specs, 3);
  rusm_pid_t pp = expect_up(&e, 'P'), pt = expect_up(&e, 'T'),
             pm = expect_up(&e, 'M');

  /* permanent: restarted even after a normal exit */
  t_send_stop(e.rt, pp, RUSM_EXIT_NORMAL, NULL);
  expect_gone(&e, 'P', RUSM_EXIT_NORMAL);
  assert_true(expect_up(&e, 'P') != pp);

  /* transient: normal, shutdown and shutdown with detail end it for good */
  t_send_stop(e.rt, pt, RUSM_EXIT_NORMAL, NULL);
  expect_gone(&e, 'T', RUSM_EXIT_NORMAL);
  wait_stopped(&e, sup, "trans", true);
  expect_no(&e, TAG_UP);
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, "trans", &pt), 0);
  assert_true(expect_up(&e, 'T') == pt);
  t_send_stop(e.rt, pt, RUSM_EXIT_SHUTDOWN, NULL);
  expect_gone(&e, 'T', RUSM_EXIT_SHUTDOWN);
  wait_stopped(&e, sup, "trans", true);
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, "trans", &pt), 0);
  assert_true(expect_up(&e, 'T') == pt);
  t_send_stop(e.rt, pt, RUSM_EXIT_SHUTDOWN, "bye");
  note n = expect_gone(&e, 'T', RUSM_EXIT_SHUTDOWN);
  assert_int_equal(n.len, 3);
  wait_stopped(&e, sup, "trans", true);
  expect_no(&e, TAG_UP);
  /* ... any other reason restarts it */
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, "trans", &pt), 0);
  assert_true(expect_up(&e, 'T') == pt);
  crash(&e, pt);
  expect_gone(&e, 'T', RUSM_EXIT_CUSTOM);
  pt = expect_up(&e, 'T');
  rusm_kill(e.rt, pt);
  expect_gone(&e, 'T', RUSM_EXIT_KILLED);
  pt = expect_up(&e, 'T');

  /* temporary: never restarted, and forgotten */
  assert_int_equal(counts(&e, sup).specs, 3);
  crash(&e, pm);
  expect_gone(&e, 'M', RUSM_EXIT_CUSTOM);
  wait_stopped(&e, sup, "temp", false);
  expect_no(&e, TAG_UP);
  rusm_child_counts cc = counts(&e, sup);
  assert_int_equal(cc.specs, 2);
  assert_int_equal(cc.active, 2);
  assert_int_equal(atomic_load(&m.starts), 1);

  /* a temporary child terminated by request is forgotten too */
  rusm_child_spec tmp2 = wspec("temp2", &m, RUSM_TEMPORARY, 1000);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &tmp2, &pm), 0);
  assert_true(expect_up(&e, 'M') == pm);
  assert_int_equal(rusm_sup_terminate_child(e.rt, sup, "temp2"), 0);
  expect_gone(&e, 'M', RUSM_EXIT_SHUTDOWN);
  assert_int_equal(counts(&e, sup).specs, 2);
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, "temp2", NULL),
                   RUSM_ENOTFOUND);

  stop_sup(&e, sup);
  expect_gone(&e, 'T', RUSM_EXIT_SHUTDOWN);
  expect_gone(&e, 'P', RUSM_EXIT_SHUTDOWN);
  t_wait_idle(&e);
  t_stop(&e);
}

/* Children that end while (or right after) they are being started: the
 * supervisor sees each end once, with its real reason when the start
 * function linked the child. */
static void test_child_dies_during_start(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg t;
  wcfg_init(&t, &e, 'T');
  t.exit_at_init = true;
  rusm_child_spec st = wspec("t", &t, RUSM_TRANSIENT, 1000);
  rusm_pid_t sup = start_sup(&e, RUSM_ONE_FOR_ONE, 1, &st, 1);
  expect_up(&e, 'T');
  expect_gone(&e, 'T', RUSM_EXIT_NORMAL);
  wait_stopped(&e, sup, "t", true); /* normal: not restarted */
  expect_no(&e, TAG_UP);
  assert_int_equal(atomic_load(&t.starts), 1);
  stop_sup(&e, sup);

  /* permanent, linked or not: restarted until the intensity gives out */
  for (int linked = 0; linked < 2; linked++) {
    wcfg p;
    wcfg_init(&p, &e, 'P');
    p.exit_at_init = true;
    p.no_link = !linked;
    rusm_child_spec sp = wspec("p", &p, RUSM_PERMANENT, 1000);
    rusm_sup_flags f = {RUSM_ONE_FOR_ONE, 3, LONG_PERIOD};
    rusm_spawn_opts o; /* monitored from birth: it may be gone at once */
    rusm_spawn_opts_init(&o);
    rusm_ref ref;
    o.monitor = true;
    o.monitor_ref = &ref;
    assert_int_equal(rusm_sup_start(e.rt, &f, &sp, 1, &o, &sup), 0);
    rusm_msg *m = t_recv_tag(&e, RUSM_TAG_DOWN);
    rusm_down_info d;
    assert_int_equal(rusm_msg_down(m, &d), 0);
    assert_true(d.pid == sup);
    assert_int_equal(d.reason.code, RUSM_EXIT_SHUTDOWN);
    rusm_msg_free(m);
    assert_int_equal(atomic_load(&p.starts), 4); /* first + 3 restarts */
    for (int i = 0; i < 4; i++) {
      expect_up(&e, 'P');
      expect_gone(&e, 'P', RUSM_EXIT_NORMAL);
    }
  }
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Shutdown specs                                                      */
/* ------------------------------------------------------------------ */

static void shutdown_case(bool trap, bool ignore, int64_t shutdown_ms,
                          rusm_exit_code expect) {
  t_env e;
  t_start(&e, 0);
  wcfg a;
  wcfg_init(&a, &e, 'A');
  a.trap = trap;
  a.ignore_shutdown = ignore;
  rusm_child_spec s = wspec("a", &a, RUSM_PERMANENT, shutdown_ms);
  rusm_pid_t sup = start_sup(&e, RUSM_ONE_FOR_ONE, 1, &s, 1);
  rusm_pid_t pa = expect_up(&e, 'A');
  t_ping(&e, pa); /* trap_exit is on once it answers */
  assert_int_equal(rusm_sup_terminate_child(e.rt, sup, "a"), 0);
  /* terminate_child returns once the child is gone */
  assert_false(rusm_is_alive(e.rt, pa));
  expect_gone(&e, 'A', expect);
  rusm_child_info ci;
  memset(&ci, 0, sizeof ci);
  assert_true(child_info(&e, sup, "a", &ci));
  assert_true(ci.pid == RUSM_PID_NONE);
  expect_no(&e, TAG_UP); /* not restarted */
  /* the same through the supervisor's own shutdown */
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, "a", &pa), 0);
  assert_true(expect_up(&e, 'A') == pa);
  t_ping(&e, pa);
  stop_sup(&e, sup);
  expect_gone(&e, 'A', expect);
  t_wait_idle(&e);
  t_stop(&e);
}

static void test_shutdown_brutal_kill(void **state) {
  (void)state;
  shutdown_case(true, true, RUSM_SHUTDOWN_BRUTAL, RUSM_EXIT_KILLED);
}

static void test_shutdown_timeout_kills_stubborn_child(void **state) {
  (void)state;
  shutdown_case(true, true, 50, RUSM_EXIT_KILLED);
}

static void test_shutdown_timeout_prompt_child(void **state) {
  (void)state;
  /* a trapping child that leaves at once is not killed ... */
  shutdown_case(true, false, T_GUARD_MS, RUSM_EXIT_SHUTDOWN);
  /* ... nor one that does not trap */
  shutdown_case(false, false, T_GUARD_MS, RUSM_EXIT_SHUTDOWN);
}

static void test_shutdown_infinity(void **state) {
  (void)state;
  shutdown_case(true, false, RUSM_SHUTDOWN_INFINITY, RUSM_EXIT_SHUTDOWN);
}

/* ------------------------------------------------------------------ */
/* Child API                                                           */
/* ------------------------------------------------------------------ */

static void test_child_api(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg a, b, x;
  wcfg_init(&a, &e, 'A');
  wcfg_init(&b, &e, 'B');
  wcfg_init(&x, &e, 'X');
  rusm_child_spec sa = wspec("a", &a, RUSM_PERMANENT, 1000);
  rusm_pid_t sup = start_sup(&e, RUSM_ONE_FOR_ONE, 1, &sa, 1);
  rusm_pid_t pa = expect_up(&e, 'A');

  rusm_child_spec sb = wspec("b", &b, RUSM_TRANSIENT, 1000);
  sb.supervisor = true; /* only counted as such */
  rusm_pid_t pb = RUSM_PID_NONE;
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &sb, &pb), 0);
  assert_true(expect_up(&e, 'B') == pb);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &sb, NULL), RUSM_EEXIST);
  rusm_child_spec dup = wspec("a", &x, RUSM_PERMANENT, 1000);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &dup, NULL), RUSM_EEXIST);
  expect_no(&e, TAG_UP);

  rusm_child_counts cc = counts(&e, sup);
  assert_int_equal(cc.specs, 2);
  assert_int_equal(cc.active, 2);
  assert_int_equal(cc.workers, 1);
  assert_int_equal(cc.supervisors, 1);
  rusm_child_info ci[2];
  assert_int_equal(which(&e, sup, ci, 2), 2);
  assert_string_equal(ci[1].id, "b"); /* added last: last in start order */
  assert_true(ci[1].supervisor);
  assert_int_equal(ci[1].restart, RUSM_TRANSIENT);

  /* unknown ids */
  assert_int_equal(rusm_sup_terminate_child(e.rt, sup, "zz"), RUSM_ENOTFOUND);
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, "zz", NULL),
                   RUSM_ENOTFOUND);
  assert_int_equal(rusm_sup_delete_child(e.rt, sup, "zz"), RUSM_ENOTFOUND);
  /* running children */
  assert_int_equal(rusm_sup_delete_child(e.rt, sup, "a"), RUSM_EINVAL);
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, "a", NULL), RUSM_EEXIST);

  /* terminate, restart, terminate, delete */
  assert_int_equal(rusm_sup_terminate_child(e.rt, sup, "a"), 0);
  assert_true(expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN).pid == pa);
  assert_int_equal(rusm_sup_terminate_child(e.rt, sup, "a"), 0); /* again */
  cc = counts(&e, sup);
  assert_int_equal(cc.specs, 2);
  assert_int_equal(cc.active, 1);
  rusm_pid_t na = RUSM_PID_NONE;
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, "a", &na), 0);
  assert_true(expect_up(&e, 'A') == na && na != pa);
  rusm_child_info one;
  memset(&one, 0, sizeof one);
  assert_true(child_info(&e, sup, "a", &one));
  assert_int_equal(one.restarts, 1);
  assert_int_equal(rusm_sup_terminate_child(e.rt, sup, "a"), 0);
  expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN);
  assert_int_equal(rusm_sup_delete_child(e.rt, sup, "a"), 0);
  assert_int_equal(rusm_sup_delete_child(e.rt, sup, "a"), RUSM_ENOTFOUND);
  assert_int_equal(which(&e, sup, ci, 2), 1);
  assert_string_equal(ci[0].id, "b");

  /* a start function that fails: the spec is not kept */
  wcfg f;
  wcfg_init(&f, &e, 'F');
  f.fail_from = 1;
  rusm_child_spec sf = wspec("f", &f, RUSM_PERMANENT, 1000);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &sf, NULL), RUSM_ESYS);
  assert_int_equal(counts(&e, sup).specs, 1);
  /* one that declines (OTP's ignore): kept, not running */
  wcfg ig;
  wcfg_init(&ig, &e, 'I');
  ig.ignore_start = true;
  rusm_child_spec si = wspec("ig", &ig, RUSM_PERMANENT, 1000);
  rusm_pid_t pi = 1;
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &si, &pi), 0);
  assert_true(pi == RUSM_PID_NONE);
  cc = counts(&e, sup);
  assert_int_equal(cc.specs, 2);
  assert_int_equal(cc.active, 1);
  /* a start function calling its own supervisor cannot be answered */
  wcfg cs;
  wcfg_init(&cs, &e, 'S');
  cs.do_call_self = true;
  rusm_child_spec scs = wspec("cs", &cs, RUSM_TEMPORARY, 1000);
  rusm_pid_t pcs = RUSM_PID_NONE;
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &scs, &pcs), 0);
  assert_true(expect_up(&e, 'S') == pcs);
  assert_int_equal(atomic_load(&cs.call_self), RUSM_ECONTEXT);
  /* bad specs */
  rusm_child_spec bad = wspec(NULL, &x, RUSM_PERMANENT, 0);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &bad, NULL), RUSM_EINVAL);
  bad = wspec("q", &x, (rusm_restart)7, 0);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &bad, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, NULL, NULL), RUSM_EINVAL);
  /* dynamic-only calls on a static supervisor */
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &x, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_dynsup_terminate_child(e.rt, sup, pb), RUSM_EINVAL);

  stop_sup(&e, sup);
  expect_gone(&e, 'S', RUSM_EXIT_SHUTDOWN);
  expect_gone(&e, 'B', RUSM_EXIT_SHUTDOWN);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Calling contexts                                                    */
/* ------------------------------------------------------------------ */

typedef struct ctx_arg {
  rusm_pid_t test, sup;
} ctx_arg;

static rusm_next stackless_caller_init(rusm_proc *self, void **state) {
  ctx_arg *a = *state;
  rusm_child_counts cc;
  int rc = rusm_sup_count_children(rusm_proc_rt(self), a->sup, &cc);
  int rc2 = rusm_sup_stop(rusm_proc_rt(self), a->sup, 0);
  int64_t v = rc == rc2 ? rc : 1;
  rusm_send(rusm_proc_rt(self), a->test, TAG_RC, &v, sizeof v);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops stackless_caller_ops = {
    stackless_caller_init, t_unexpected_handle, NULL};

static void stackful_caller(rusm_proc *self, void *arg) {
  ctx_arg *a = arg;
  rusm_child_counts cc;
  int64_t v = rusm_sup_count_children(rusm_proc_rt(self), a->sup, &cc);
  if (v == 0)
    v = cc.specs;
  rusm_send(rusm_proc_rt(self), a->test, TAG_RC, &v, sizeof v);
}

typedef struct thread_arg {
  rusm_rt *rt;
  rusm_pid_t sup;
  int rc;
  rusm_child_counts cc;
  bool attached_after;
  int rc_link;
} thread_arg;

static void *plain_thread(void *arg) {
  thread_arg *a = arg;
  a->rc = rusm_sup_count_children(a->rt, a->sup, &a->cc);
  a->attached_after = rusm_current() != NULL;
  /* a linked start needs a process to be the parent */
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  rusm_pid_t p;
  a->rc_link = rusm_sup_start(a->rt, NULL, NULL, 0, &o, &p);
  return NULL;
}

static void test_calling_contexts(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg a;
  wcfg_init(&a, &e, 'A');
  rusm_child_spec sa = wspec("a", &a, RUSM_PERMANENT, 1000);
  rusm_pid_t sup = start_sup(&e, RUSM_ONE_FOR_ONE, 1, &sa, 1);
  expect_up(&e, 'A');
  ctx_arg ca = {e.pid, sup};

  /* a stackless callback cannot block */
  rusm_pid_t p;
  assert_int_equal(
      rusm_spawn_stackless(e.rt, &stackless_caller_ops, &ca, NULL, &p), 0);
  assert_int_equal((int)t_recv_u64(&e, TAG_RC), RUSM_ECONTEXT);
  /* a stackful process can */
  assert_int_equal(rusm_spawn_stackful(e.rt, stackful_caller, &ca, NULL, &p),
                   0);
  assert_int_equal(t_recv_u64(&e, TAG_RC), 1);
  /* a plain thread is attached for the call, then detached */
  thread_arg ta = {e.rt, sup, -100, {0, 0, 0, 0}, true, -100};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, plain_thread, &ta), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(ta.rc, 0);
  assert_int_equal(ta.cc.active, 1);
  assert_false(ta.attached_after);
  assert_int_equal(ta.rc_link, RUSM_ECONTEXT);

  stop_sup(&e, sup);
  expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN);
  /* a dead supervisor answers RUSM_ENOPROC, it does not hang the caller */
  rusm_child_counts cc;
  assert_int_equal(rusm_sup_count_children(e.rt, sup, &cc), RUSM_ENOPROC);
  assert_int_equal(rusm_sup_terminate_child(e.rt, sup, "a"), RUSM_ENOPROC);
  assert_int_equal(rusm_sup_stop(e.rt, sup, T_GUARD_MS), RUSM_ENOPROC);
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, NULL, NULL),
                   RUSM_ENOPROC);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Parents, intensity and escalation                                   */
/* ------------------------------------------------------------------ */

typedef struct parent_arg {
  rusm_pid_t test;
  bool trap;
  rusm_sup_flags flags;
  const rusm_child_spec *specs;
  size_t n;
} parent_arg;

typedef struct parent_report {
  int64_t rc;
  rusm_pid_t sup;
} parent_report;

/* Starts a linked supervisor, reports {rc, pid}; then forwards the first
 * Exit it traps (as a GONE note labelled 'S'), or exits as STOP says. */
static void parent_fn(rusm_proc *self, void *arg) {
  parent_arg *a = arg;
  rusm_rt *rt = rusm_proc_rt(self);
  if (a->trap)
    rusm_trap_exit(self, true);
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  parent_report r = {0, RUSM_PID_NONE};
  r.rc = rusm_sup_start(rt, &a->flags, a->specs, a->n, &o, &r.sup);
  rusm_send(rt, a->test, TAG_RC, &r, sizeof r);
  if (r.rc != 0)
    return;
  for (;;) {
    rusm_msg *m = NULL;
    T_CHECK(rusm_receive(self, NULL, -1, &m) == 0);
    if (rusm_msg_tag(m) == RUSM_TAG_EXIT) {
      rusm_exit_info xi;
      T_CHECK(rusm_msg_exit(m, &xi) == 0);
      send_note(rt, a->test, TAG_GONE, 'S', xi.from, &xi.reason);
      rusm_msg_free(m);
      return;
    }
    if (rusm_msg_tag(m) == T_TAG_STOP) {
      rusm_reason why = t_stop_reason(m);
      char detail[64];
      if (why.len > sizeof detail)
        why.len = sizeof detail;
      if (why.len > 0)
        memcpy(detail, why.data, why.len);
      why.data = (const uint8_t *)detail;
      rusm_msg_free(m);
      rusm_exit_self(self, why);
    }
    rusm_msg_free(m);
  }
}

static rusm_pid_t spawn_parent(t_env *e, parent_arg *a, rusm_pid_t *parent) {
  T_CHECK(rusm_spawn_stackful(e->rt, parent_fn, a, NULL, parent) == 0);
  rusm_msg *m = t_recv_tag(e, TAG_RC);
  parent_report r;
  assert_int_equal(rusm_msg_len(m), sizeof r);
  memcpy(&r, rusm_msg_data(m), sizeof r);
  rusm_msg_free(m);
  assert_int_equal(r.rc, 0);
  return r.sup;
}

static void test_intensity_escalates_to_parent(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg a, b;
  wcfg_init(&a, &e, 'A');
  wcfg_init(&b, &e, 'B');
  rusm_child_spec specs[] = {wspec("a", &a, RUSM_PERMANENT, 1000),
                             wspec("b", &b, RUSM_PERMANENT, 1000)};
  parent_arg pa = {e.pid, true, {RUSM_ONE_FOR_ONE, 1, LONG_PERIOD}, specs, 2};
  rusm_pid_t parent;
  rusm_pid_t sup = spawn_parent(&e, &pa, &parent);
  rusm_pid_t p = expect_up(&e, 'A');
  expect_up(&e, 'B');
  crash(&e, p); /* one restart: within the intensity */
  expect_gone(&e, 'A', RUSM_EXIT_CUSTOM);
  p = expect_up(&e, 'A');
  crash(&e, p); /* two within the period: more than 1 */
  expect_gone(&e, 'A', RUSM_EXIT_CUSTOM);
  expect_gone(&e, 'B', RUSM_EXIT_SHUTDOWN); /* the rest stopped */
  note n = recv_note(&e, TAG_GONE);         /* what the parent saw */
  assert_int_equal(n.label, 'S');
  assert_true(n.pid == sup);
  assert_int_equal(n.code, RUSM_EXIT_SHUTDOWN);
  expect_no(&e, TAG_UP);
  t_wait_idle(&e);
  t_stop(&e);
}

static void test_intensity_zero_and_failed_restarts(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  /* intensity 0: the first restart is one too many */
  wcfg a;
  wcfg_init(&a, &e, 'A');
  rusm_child_spec sa = wspec("a", &a, RUSM_PERMANENT, 1000);
  rusm_sup_flags f = {RUSM_ONE_FOR_ONE, 0, LONG_PERIOD};
  rusm_pid_t sup;
  assert_int_equal(rusm_sup_start(e.rt, &f, &sa, 1, NULL, &sup), 0);
  rusm_ref ref;
  assert_int_equal(rusm_monitor(e.me, sup, &ref), 0);
  crash(&e, expect_up(&e, 'A'));
  expect_gone(&e, 'A', RUSM_EXIT_CUSTOM);
  rusm_msg *m = t_recv_tag(&e, RUSM_TAG_DOWN);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_true(d.pid == sup && d.reason.code == RUSM_EXIT_SHUTDOWN);
  rusm_msg_free(m);

  /* a restart that fails is retried, each try counting as a restart,
   * until the intensity gives out */
  wcfg b;
  wcfg_init(&b, &e, 'B');
  b.fail_from = 2;
  rusm_child_spec sb = wspec("b", &b, RUSM_PERMANENT, 1000);
  f.intensity = 3;
  assert_int_equal(rusm_sup_start(e.rt, &f, &sb, 1, NULL, &sup), 0);
  assert_int_equal(rusm_monitor(e.me, sup, &ref), 0);
  crash(&e, expect_up(&e, 'B'));
  expect_gone(&e, 'B', RUSM_EXIT_CUSTOM);
  m = t_recv_tag(&e, RUSM_TAG_DOWN);
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_true(d.pid == sup && d.reason.code == RUSM_EXIT_SHUTDOWN);
  rusm_msg_free(m);
  assert_int_equal(atomic_load(&b.starts), 4); /* first + 3 tries */
  expect_no(&e, TAG_UP);
  t_wait_idle(&e);
  t_stop(&e);
}

static void test_parent_exit_stops_supervisor(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg a, b;
  wcfg_init(&a, &e, 'A');
  wcfg_init(&b, &e, 'B');
  rusm_child_spec specs[] = {wspec("a", &a, RUSM_PERMANENT, 1000),
                             wspec("b", &b, RUSM_PERMANENT, 1000)};
  parent_arg pa = {e.pid, false, {RUSM_ONE_FOR_ONE, 1, LONG_PERIOD}, specs, 2};
  rusm_pid_t parent;
  rusm_pid_t sup = spawn_parent(&e, &pa, &parent);
  expect_up(&e, 'A');
  expect_up(&e, 'B');
  rusm_ref ref;
  assert_int_equal(rusm_monitor(e.me, sup, &ref), 0);
  t_send_stop(e.rt, parent, RUSM_EXIT_CUSTOM, "parent-died");
  expect_gone(&e, 'B', RUSM_EXIT_SHUTDOWN);
  expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN);
  rusm_msg *m = t_recv_tag(&e, RUSM_TAG_DOWN);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_true(d.pid == sup);
  assert_int_equal(d.reason.code, RUSM_EXIT_CUSTOM); /* the parent's reason */
  assert_int_equal(d.reason.len, strlen("parent-died"));
  assert_memory_equal(d.reason.data, "parent-died", d.reason.len);
  rusm_msg_free(m);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Dynamic supervisors                                                 */
/* ------------------------------------------------------------------ */

static void test_dynsup_api(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg c[3];
  for (int i = 0; i < 3; i++)
    wcfg_init(&c[i], &e, (uint64_t)'0' + (uint64_t)i);
  rusm_child_spec tmpl = wspec("worker", NULL, RUSM_PERMANENT, 1000);
  rusm_sup_flags f = {RUSM_ONE_FOR_ONE, 10, LONG_PERIOD};
  rusm_pid_t sup;
  assert_int_equal(rusm_dynsup_start(e.rt, &f, &tmpl, NULL, &sup), 0);
  rusm_pid_t p[3];
  for (int i = 0; i < 3; i++) {
    assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &c[i], &p[i]), 0);
    assert_true(expect_up(&e, (uint64_t)'0' + (uint64_t)i) == p[i]);
  }
  rusm_child_counts cc = counts(&e, sup);
  assert_int_equal(cc.specs, 3);
  assert_int_equal(cc.active, 3);
  assert_int_equal(cc.workers, 3);
  rusm_child_info ci[4];
  assert_int_equal(which(&e, sup, ci, 4), 3);
  int seen = 0;
  for (int i = 0; i < 3; i++) {
    assert_string_equal(ci[i].id, "worker");
    for (int j = 0; j < 3; j++)
      if (ci[i].pid == p[j])
        seen |= 1 << j;
  }
  assert_int_equal(seen, 7);

  /* a crashed child is restarted with its own arg */
  crash(&e, p[1]);
  expect_gone(&e, '1', RUSM_EXIT_CUSTOM);
  rusm_pid_t np = expect_up(&e, '1');
  assert_true(np != p[1]);
  p[1] = np;
  assert_int_equal(counts(&e, sup).active, 3);

  /* terminate by pid: stopped, forgotten, not restarted */
  assert_int_equal(rusm_dynsup_terminate_child(e.rt, sup, p[0]), 0);
  expect_gone(&e, '0', RUSM_EXIT_SHUTDOWN);
  assert_int_equal(rusm_dynsup_terminate_child(e.rt, sup, p[0]),
                   RUSM_ENOTFOUND);
  assert_int_equal(rusm_dynsup_terminate_child(e.rt, sup, e.pid),
                   RUSM_ENOTFOUND);
  cc = counts(&e, sup);
  assert_int_equal(cc.specs, 2);
  assert_int_equal(cc.active, 2);
  expect_no(&e, TAG_UP);

  /* static-only calls on a dynamic supervisor */
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &tmpl, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_sup_terminate_child(e.rt, sup, "worker"), RUSM_EINVAL);
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, "worker", NULL),
                   RUSM_EINVAL);
  assert_int_equal(rusm_sup_delete_child(e.rt, sup, "worker"), RUSM_EINVAL);
  /* a dynamic supervisor is one_for_one */
  rusm_sup_flags bad = {RUSM_ONE_FOR_ALL, 1, 1000};
  rusm_pid_t other;
  assert_int_equal(rusm_dynsup_start(e.rt, &bad, &tmpl, NULL, &other),
                   RUSM_EINVAL);

  stop_sup(&e, sup);
  /* dynamic children stop together: in no particular order */
  note n1 = recv_note(&e, TAG_GONE), n2 = recv_note(&e, TAG_GONE);
  assert_int_equal(n1.code, RUSM_EXIT_SHUTDOWN);
  assert_int_equal(n2.code, RUSM_EXIT_SHUTDOWN);
  assert_true((n1.label == '1' && n2.label == '2') ||
              (n1.label == '2' && n2.label == '1'));
  t_wait_idle(&e);
  t_stop(&e);
}

static void test_dynsup_temporary_and_transient(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg c;
  wcfg_init(&c, &e, 'T');
  rusm_child_spec tmpl = wspec("t", NULL, RUSM_TRANSIENT, RUSM_SHUTDOWN_BRUTAL);
  rusm_pid_t sup, p;
  assert_int_equal(rusm_dynsup_start(e.rt, NULL, &tmpl, NULL, &sup), 0);
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &c, &p), 0);
  expect_up(&e, 'T');
  t_send_stop(e.rt, p, RUSM_EXIT_SHUTDOWN, "done");
  expect_gone(&e, 'T', RUSM_EXIT_SHUTDOWN);
  int64_t end = rusm_now_ns() + (int64_t)T_GUARD_MS * 1000000;
  while (counts(&e, sup).specs != 0 && rusm_now_ns() < end)
    sched_yield();
  assert_int_equal(counts(&e, sup).specs, 0);
  expect_no(&e, TAG_UP);
  /* brutal_kill for all of them at shutdown */
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &c, &p), 0);
  expect_up(&e, 'T');
  stop_sup(&e, sup);
  expect_gone(&e, 'T', RUSM_EXIT_KILLED);
  t_wait_idle(&e);
  t_stop(&e);
}

static void test_dynsup_many_children(void **state) {
  (void)state;
  const size_t n = T_SCALE(10000, 2000);
  t_env e;
  t_start(&e, 0);
  wcfg *c = calloc(n, sizeof *c);
  rusm_pid_t *pids = calloc(n, sizeof *pids);
  assert_non_null(c);
  assert_non_null(pids);
  rusm_child_spec tmpl = wspec("w", NULL, RUSM_PERMANENT, 1000);
  rusm_sup_flags f = {RUSM_ONE_FOR_ONE, (uint32_t)(2 * n), LONG_PERIOD};
  rusm_pid_t sup;
  assert_int_equal(rusm_dynsup_start(e.rt, &f, &tmpl, NULL, &sup), 0);
  for (size_t i = 0; i < n; i++) {
    wcfg_init(&c[i], &e, i);
    c[i].quiet = true;
    assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &c[i], &pids[i]), 0);
    assert_true(pids[i] != RUSM_PID_NONE);
  }
  for (size_t i = 0; i < n; i++) {
    note u = recv_note(&e, TAG_UP);
    assert_true(u.label == i && u.pid == pids[i]); /* one sender: in order */
  }
  rusm_child_counts cc = counts(&e, sup);
  assert_int_equal(cc.specs, n);
  assert_int_equal(cc.active, n);

  /* kill them all: each is restarted with its own arg */
  for (size_t i = 0; i < n; i++)
    assert_int_equal(rusm_kill(e.rt, pids[i]), 0);
  for (size_t i = 0; i < n; i++) {
    note u = recv_note(&e, TAG_UP);
    assert_true(u.label < n);
    assert_true(u.pid != pids[u.label]);
    pids[u.label] = u.pid;
  }
  for (size_t i = 0; i < n; i++)
    assert_int_equal(atomic_load(&c[i].starts), 2);
  cc = counts(&e, sup);
  assert_int_equal(cc.active, n);

  size_t total = 0;
  rusm_child_info *ci = calloc(n, sizeof *ci);
  assert_non_null(ci);
  assert_int_equal(rusm_sup_which_children(e.rt, sup, ci, n, &total), 0);
  assert_int_equal(total, n);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(ci[i].restarts, 1);
  free(ci);

  /* terminate one by pid among many */
  assert_int_equal(rusm_dynsup_terminate_child(e.rt, sup, pids[n / 2]), 0);
  assert_false(rusm_is_alive(e.rt, pids[n / 2]));
  assert_int_equal(counts(&e, sup).active, n - 1);

  stop_sup(&e, sup);
  for (size_t i = 0; i < n; i++)
    assert_false(rusm_is_alive(e.rt, pids[i]));
  t_wait_idle(&e);
  assert_int_equal(rusm_process_count(e.rt), 1); /* the test thread */
  t_stop(&e);
  free(c);
  free(pids);
}

/* ------------------------------------------------------------------ */
/* A 3-level tree                                                      */
/* ------------------------------------------------------------------ */

typedef struct level {
  rusm_pid_t test;
  uint64_t label;
  rusm_sup_flags flags;
  rusm_child_spec child;
} level;

/* A start function that starts a supervisor (in the parent supervisor's
 * process, which blocks until the new one has started its children). */
static int sup_start_fn(rusm_rt *rt, void *arg, rusm_pid_t *out) {
  level *l = arg;
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  int rc = rusm_sup_start(rt, &l->flags, &l->child, 1, &o, out);
  if (rc == 0)
    send_note(rt, l->test, TAG_UP, l->label, *out, NULL);
  return rc;
}

static void test_three_level_tree(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg w;
  wcfg_init(&w, &e, 'W');
  /* bottom: restarts W once, then gives up */
  level bottom = {e.pid,
                  'L',
                  {RUSM_ONE_FOR_ONE, 1, LONG_PERIOD},
                  wspec("w", &w, RUSM_PERMANENT, 1000)};
  /* middle: gives up at the first restart of the bottom */
  level middle = {e.pid,
                  'M',
                  {RUSM_ONE_FOR_ONE, 0, LONG_PERIOD},
                  {"bottom", sup_start_fn, &bottom, RUSM_PERMANENT,
                   RUSM_SHUTDOWN_INFINITY, true}};
  rusm_child_spec top_spec = {"middle",       sup_start_fn,           &middle,
                              RUSM_PERMANENT, RUSM_SHUTDOWN_INFINITY, true};
  rusm_pid_t top = start_sup(&e, RUSM_ONE_FOR_ONE, 1, &top_spec, 1);
  /* each level announces after its children are up */
  rusm_pid_t pw = expect_up(&e, 'W');
  rusm_pid_t pl = expect_up(&e, 'L');
  rusm_pid_t pm = expect_up(&e, 'M');
  rusm_child_info ci;
  memset(&ci, 0, sizeof ci);
  assert_true(child_info(&e, top, "middle", &ci));
  assert_true(ci.pid == pm && ci.supervisor);
  assert_true(child_info(&e, pm, "bottom", &ci));
  assert_true(ci.pid == pl);
  assert_true(child_info(&e, pl, "w", &ci));
  assert_true(ci.pid == pw);
  rusm_child_counts cc = counts(&e, top);
  assert_int_equal(cc.supervisors, 1);
  assert_int_equal(cc.workers, 0);

  crash(&e, pw); /* the bottom restarts W */
  expect_gone(&e, 'W', RUSM_EXIT_CUSTOM);
  pw = expect_up(&e, 'W');
  rusm_ref rl, rm;
  assert_int_equal(rusm_monitor(e.me, pl, &rl), 0);
  assert_int_equal(rusm_monitor(e.me, pm, &rm), 0);
  crash(&e, pw); /* too many for the bottom, then for the middle */
  expect_gone(&e, 'W', RUSM_EXIT_CUSTOM);
  rusm_pid_t nw = expect_up(&e, 'W');
  rusm_pid_t nl = expect_up(&e, 'L');
  rusm_pid_t nm = expect_up(&e, 'M');
  assert_true(nw != pw && nl != pl && nm != pm);
  for (int i = 0; i < 2; i++) {
    rusm_msg *m = t_recv_tag(&e, RUSM_TAG_DOWN);
    rusm_down_info d;
    assert_int_equal(rusm_msg_down(m, &d), 0);
    assert_true(d.pid == pl || d.pid == pm);
    assert_int_equal(d.reason.code, RUSM_EXIT_SHUTDOWN);
    rusm_msg_free(m);
  }
  assert_true(rusm_is_alive(e.rt, top));
  assert_true(child_info(&e, top, "middle", &ci));
  assert_true(ci.pid == nm);
  assert_int_equal(ci.restarts, 1);
  assert_true(child_info(&e, nm, "bottom", &ci));
  assert_true(ci.pid == nl);
  assert_int_equal(ci.restarts, 0); /* a new middle: a fresh start */

  /* stopping the top stops the whole tree, leaves first */
  stop_sup(&e, top);
  expect_gone(&e, 'W', RUSM_EXIT_SHUTDOWN);
  assert_false(rusm_is_alive(e.rt, nl));
  assert_false(rusm_is_alive(e.rt, nm));
  t_wait_idle(&e);
  t_stop(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_flags_defaults),
      cmocka_unit_test(test_start_order_and_stop_order),
      cmocka_unit_test(test_stop_by_linked_caller),
      cmocka_unit_test(test_bounded_mailboxes),
      cmocka_unit_test(test_start_failure_stops_started),
      cmocka_unit_test(test_one_for_one),
      cmocka_unit_test(test_one_for_all),
      cmocka_unit_test(test_rest_for_one),
      cmocka_unit_test(test_restart_types),
      cmocka_unit_test(test_child_dies_during_start),
      cmocka_unit_test(test_shutdown_brutal_kill),
      cmocka_unit_test(test_shutdown_timeout_kills_stubborn_child),
      cmocka_unit_test(test_shutdown_timeout_prompt_child),
      cmocka_unit_test(test_shutdown_infinity),
      cmocka_unit_test(test_child_api),
      cmocka_unit_test(test_calling_contexts),
      cmocka_unit_test(test_intensity_escalates_to_parent),
      cmocka_unit_test(test_intensity_zero_and_failed_restarts),
      cmocka_unit_test(test_parent_exit_stops_supervisor),
      cmocka_unit_test(test_dynsup_api),
      cmocka_unit_test(test_dynsup_temporary_and_transient),
      cmocka_unit_test(test_dynsup_many_children),
      cmocka_unit_test(test_three_level_tree),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
