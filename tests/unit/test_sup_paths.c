// ctest-labels: concurrent
/*
 * Unit tests: the less travelled paths of supervisors (src/otp/sup.c) and
 * of the call protocol under them (src/otp/call.c): every error return of
 * the API, start functions that fail, decline or hand back dead pids,
 * restarts that fail until the intensity gives out, requests that race a
 * child's exit or a pending retry, dynamic shutdown deadlines, callers and
 * supervisors dying mid-call, and allocation failures everywhere.
 *
 * Ordering without sleeps: a start function can hold its supervisor in a
 * "gate" (it runs in the supervisor's process). The gate tells the test it
 * is closed (BLOCKED), then on WANT n waits until n requests from distinct
 * callers sit in the supervisor's mailbox (it sees them through a receive
 * filter that never takes them) and answers SAW; on WANT GATE_GO it opens.
 * Requests queued while it is closed are handled after the start returns,
 * in arrival order, before anything the supervisor sends itself later.
 *
 * test_regression_* fails until the bug it describes is fixed
 * (RUSM_TEST_FILTER=-regression_ skips it).
 */
#include "support.h"

#include <pthread.h>

#include "otp/alloc.h"
#include "otp/call.h"
#include "rusm/observer.h"

#define TAG_UP (T_TAG_CTL | 0x200)      /* start fn -> test: child started */
#define TAG_GONE (T_TAG_CTL | 0x201)    /* worker -> test: it ended */
#define TAG_RC (T_TAG_CTL | 0x202)      /* caller process -> test: done */
#define TAG_BLOCKED (T_TAG_CTL | 0x203) /* gate -> test: closed */
#define TAG_SAW (T_TAG_CTL | 0x204)     /* gate -> test: requests queued */
#define TAG_WANT (T_TAG_CTL | 0x205)    /* test -> gate: u64 count or GO */
#define TAG_TICK (T_TAG_CTL | 0x206)    /* timer -> test */
#define GATE_GO UINT64_MAX

/* The supervisor protocol's reserved tag range (docs/supervisors.md). */
#define SUP_RANGE UINT64_C(0x7ffe535500000000)
#define SUP_RANGE_MASK UINT64_C(0xffffffff00000000)

#define LONG_PERIOD 600000 /* ms: no restart leaves the window in a test */

/* ------------------------------------------------------------------ */
/* Workers and start functions                                         */
/* ------------------------------------------------------------------ */

typedef struct wcfg {
  rusm_pid_t test; /* notes go here */
  uint64_t label;
  bool trap;             /* traps exits ... */
  bool ignore_shutdown;  /* ... and ignores them (must be killed) */
  bool no_link;          /* the start fn spawns unlinked */
  bool quiet;            /* no GONE note */
  bool no_up;            /* no UP note */
  int fail_from;         /* start #n (1-based) and later fail */
  int fail_only;         /* only start #n fails */
  int ignore_at;         /* start #n declines (pid NONE: OTP's ignore) */
  int dead_at;           /* start #n returns a child that already ended */
  bool dead_linked;      /* ... that it had spawned linked */
  int gate_at;           /* start #n holds its supervisor in the gate */
  int gate_rc;           /* then returns this (< 0) or starts normally */
  int inject_at;         /* start #n arms one allocation failure on return */
  int64_t inject_k;      /* ... after this many allocations */
  bool exit_inject;      /* the terminate callback arms one failure ... */
  int64_t exit_inject_k; /* ... after this many allocations */
  atomic_int starts;
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
  /* last: what the reaping path allocates next is the target */
  if (c->exit_inject)
    rusm__test_fail_one_alloc(c->exit_inject_k);
}

static const rusm_stackless_ops w_ops = {w_init, w_handle, w_terminate};

/* A process that ends normally in its first step. */
static rusm_next quick_init(rusm_proc *self, void **state) {
  (void)self;
  (void)state;
  return rusm_next_stop(RUSM_REASON_NORMAL);
}
static const rusm_stackless_ops quick_ops = {quick_init, NULL, NULL};

typedef struct gate_seen {
  rusm_pid_t self;
  uint64_t n;
  rusm_pid_t from[8];
} gate_seen;

/* Counts (never takes) requests of distinct callers queued for us. */
static bool count_reqs(const rusm_msg *m, void *arg) {
  gate_seen *g = arg;
  rusm_pid_t from = rusm_msg_from(m);
  if ((rusm_msg_tag(m) & SUP_RANGE_MASK) != SUP_RANGE || from == g->self)
    return false;
  for (uint64_t i = 0; i < g->n; i++)
    if (g->from[i] == from)
      return false;
  if (g->n < 8)
    g->from[g->n++] = from;
  return false;
}

/* Runs in the supervisor's process: see the header comment. */
static int gate(rusm_rt *rt, wcfg *c) {
  rusm_proc *self = rusm_current();
  gate_seen g;
  memset(&g, 0, sizeof g);
  g.self = rusm_self(self);
  send_note(rt, c->test, TAG_BLOCKED, c->label, g.self, NULL);
  for (;;) {
    rusm_filter fw = rusm_filter_tag(TAG_WANT);
    rusm_msg *m = NULL;
    if (rusm_receive(self, &fw, -1, &m) != 0)
      return RUSM_ESYS;
    uint64_t want = t_msg_u64(m);
    rusm_msg_free(m);
    if (want == GATE_GO)
      return c->gate_rc;
    rusm_filter fs = {0, 0, count_reqs, &g};
    while (g.n < want) {
      rusm_msg *x = NULL;
      T_CHECK(rusm_try_receive(self, &fs, &x) == RUSM_ETIMEDOUT);
      if (g.n < want)
        rusm_yield(self);
    }
    send_note(rt, c->test, TAG_SAW, c->label, g.self, NULL);
  }
}

static bool down_ref(const rusm_msg *m, void *arg) {
  rusm_down_info d;
  return rusm_msg_down(m, &d) == 0 && d.ref == *(const rusm_ref *)arg;
}

/* Starts a child that ends at once, waits until it is gone, and returns
 * its (dead) pid: the supervisor links a dead process. */
static int dead_child(rusm_rt *rt, wcfg *c, rusm_pid_t *out) {
  rusm_proc *self = rusm_current();
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  rusm_ref ref = 0;
  o.link = c->dead_linked;
  o.monitor = true;
  o.monitor_ref = &ref;
  int rc = rusm_spawn_stackless(rt, &quick_ops, NULL, &o, out);
  if (rc != 0)
    return rc;
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  f.pred = down_ref;
  f.pred_arg = &ref;
  rusm_msg *m = NULL;
  T_CHECK(rusm_receive(self, &f, -1, &m) == 0);
  rusm_msg_free(m);
  send_note(rt, c->test, TAG_UP, c->label, *out, NULL);
  return 0;
}

static int w_start_inner(rusm_rt *rt, wcfg *c, int n, rusm_pid_t *out) {
  if (n == c->gate_at) {
    int rc = gate(rt, c);
    if (rc < 0)
      return rc;
  }
  if ((c->fail_from > 0 && n >= c->fail_from) || n == c->fail_only)
    return RUSM_ESYS;
  if (n == c->ignore_at) {
    *out = RUSM_PID_NONE;
    return 0;
  }
  if (n == c->dead_at)
    return dead_child(rt, c, out);
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = !c->no_link;
  int rc = rusm_spawn_stackless(rt, &w_ops, c, &o, out);
  if (rc == 0 && !c->no_up)
    send_note(rt, c->test, TAG_UP, c->label, *out, NULL);
  return rc;
}

static int w_start(rusm_rt *rt, void *arg, rusm_pid_t *out) {
  wcfg *c = arg;
  int n = atomic_fetch_add(&c->starts, 1) + 1;
  int rc = w_start_inner(rt, c, n, out);
  /* last: what the supervisor allocates next is the target */
  if (n == c->inject_at)
    rusm__test_fail_one_alloc(c->inject_k);
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
/* Caller processes: one API call each, off the test thread            */
/* ------------------------------------------------------------------ */

typedef enum cop {
  C_TERMINATE,
  C_DELETE,
  C_START_CHILD,
  C_WHICH,
  C_INFO,
  C_DYN_START,
  C_DYN_TERMINATE,
  C_STOP
} cop;

typedef struct job {
  rusm_pid_t test, sup;
  cop op;
  const char *id;
  rusm_child_spec spec;
  void *arg;
  rusm_pid_t pid;
  /* results */
  int rc;
  rusm_pid_t out;
  size_t count;
  rusm_child_info ci[4];
  rusm_sup_info info;
} job;

static void caller_fn(rusm_proc *self, void *arg) {
  job *j = arg;
  rusm_rt *rt = rusm_proc_rt(self);
  switch (j->op) {
  case C_TERMINATE:
    j->rc = rusm_sup_terminate_child(rt, j->sup, j->id);
    break;
  case C_DELETE:
    j->rc = rusm_sup_delete_child(rt, j->sup, j->id);
    break;
  case C_START_CHILD:
    j->rc = rusm_sup_start_child(rt, j->sup, &j->spec, &j->out);
    break;
  case C_WHICH:
    j->rc = rusm_sup_which_children(rt, j->sup, j->ci, 4, &j->count);
    break;
  case C_INFO:
    j->rc = rusm_sup_info_get(rt, j->sup, &j->info);
    break;
  case C_DYN_START:
    j->rc = rusm_dynsup_start_child(rt, j->sup, j->arg, &j->out);
    break;
  case C_DYN_TERMINATE:
    j->rc = rusm_dynsup_terminate_child(rt, j->sup, j->pid);
    break;
  case C_STOP:
    j->rc = rusm_sup_stop(rt, j->sup, -1);
    break;
  }
  /* the message orders the writes above before the test's reads */
  T_CHECK(rusm_send(rt, j->test, TAG_RC, &j, sizeof j) == 0);
}

static void job_init(job *j, t_env *e, rusm_pid_t sup, cop op) {
  memset(j, 0, sizeof *j);
  j->test = e->pid;
  j->sup = sup;
  j->op = op;
  j->rc = -1000;
}

static void job_spawn(t_env *e, job *j) {
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e->rt, caller_fn, j, NULL, &p), 0);
}

static bool is_job(const rusm_msg *m, void *arg) {
  job *j = NULL;
  if (rusm_msg_len(m) != sizeof j)
    return false;
  memcpy(&j, rusm_msg_data(m), sizeof j);
  return j == arg;
}

static void job_wait(t_env *e, job *j) {
  rusm_filter f = rusm_filter_tag(TAG_RC);
  f.pred = is_job;
  f.pred_arg = j;
  rusm_msg_free(t_recv(e, &f));
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

static rusm_pid_t expect_up(t_env *e, uint64_t label) {
  note n = recv_note(e, TAG_UP);
  if (n.label != label)
    fail_msg("UP from '%c', expected '%c'", (char)n.label, (char)label);
  return n.pid;
}

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

/* The gate of label closed its supervisor: returns the supervisor. */
static rusm_pid_t expect_blocked(t_env *e, uint64_t label) {
  note n = recv_note(e, TAG_BLOCKED);
  assert_int_equal(n.label, label);
  return n.pid;
}

/* Waits until n requests of distinct callers are queued at the gate. */
static void gate_want(t_env *e, rusm_pid_t sup, uint64_t n) {
  t_send_u64(e->rt, sup, TAG_WANT, n);
  recv_note(e, TAG_SAW);
}

static void gate_open(t_env *e, rusm_pid_t sup) {
  t_send_u64(e->rt, sup, TAG_WANT, GATE_GO);
}

static rusm_down_info wait_down(t_env *e, rusm_ref ref) {
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  f.pred = down_ref;
  f.pred_arg = &ref;
  rusm_msg *m = t_recv(e, &f);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  rusm_msg_free(m);
  d.reason.data = NULL; /* gone with the message */
  return d;
}

static rusm_ref watch(t_env *e, rusm_pid_t pid) {
  rusm_ref ref = 0;
  assert_int_equal(rusm_monitor(e->me, pid, &ref), 0);
  return ref;
}

static rusm_pid_t start_static(t_env *e, rusm_sup_strategy strategy,
                               uint32_t intensity, const rusm_child_spec *specs,
                               size_t n) {
  rusm_sup_flags f = {strategy, intensity, LONG_PERIOD};
  rusm_pid_t sup = RUSM_PID_NONE;
  int rc = rusm_sup_start(e->rt, &f, specs, n, NULL, &sup);
  if (rc != 0)
    fail_msg("rusm_sup_start: %s", rusm_err_name(rc));
  return sup;
}

static rusm_pid_t start_dynamic(t_env *e, uint32_t intensity,
                                const rusm_child_spec *tmpl) {
  rusm_sup_flags f = {RUSM_ONE_FOR_ONE, intensity, LONG_PERIOD};
  rusm_pid_t sup = RUSM_PID_NONE;
  int rc = rusm_dynsup_start(e->rt, &f, tmpl, NULL, &sup);
  if (rc != 0)
    fail_msg("rusm_dynsup_start: %s", rusm_err_name(rc));
  return sup;
}

static void stop_sup(t_env *e, rusm_pid_t sup) {
  int rc = rusm_sup_stop(e->rt, sup, T_GUARD_MS);
  if (rc != 0)
    fail_msg("rusm_sup_stop: %s", rusm_err_name(rc));
}

static rusm_child_counts counts(t_env *e, rusm_pid_t sup) {
  rusm_child_counts c;
  memset(&c, 0, sizeof c);
  int rc = rusm_sup_count_children(e->rt, sup, &c);
  if (rc != 0)
    fail_msg("count_children: %s", rusm_err_name(rc));
  return c;
}

static void crash(t_env *e, rusm_pid_t pid) {
  t_send_stop(e->rt, pid, RUSM_EXIT_CUSTOM, "boom");
}

/* ------------------------------------------------------------------ */
/* Error returns of the API                                            */
/* ------------------------------------------------------------------ */

static rusm_next sl_caller_init(rusm_proc *self, void **state) {
  rusm_pid_t test = (rusm_pid_t)(uintptr_t)*state;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_pid_t p = RUSM_PID_NONE;
  int64_t rc[2];
  rc[0] = rusm_sup_start(rt, NULL, NULL, 0, NULL, &p);
  rusm_child_spec t = {"t", w_start, NULL, RUSM_TEMPORARY, 0, false};
  rc[1] = rusm_dynsup_start(rt, NULL, &t, NULL, &p);
  T_CHECK(rusm_send(rt, test, TAG_RC, rc, sizeof rc) == 0);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}
static const rusm_stackless_ops sl_caller_ops = {sl_caller_init, NULL, NULL};

static void test_api_errors(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_sup_flags_init(NULL); /* tolerated */
  rusm_sup_flags f;
  rusm_sup_flags_init(&f);
  wcfg a;
  wcfg_init(&a, &e, 'A');
  rusm_child_spec sa = wspec("a", &a, RUSM_PERMANENT, 1000);
  rusm_pid_t p = RUSM_PID_NONE;

  /* start */
  assert_int_equal(rusm_sup_start(NULL, &f, &sa, 1, NULL, &p), RUSM_EINVAL);
  assert_int_equal(rusm_sup_start(e.rt, &f, NULL, 1, NULL, &p), RUSM_EINVAL);
  rusm_sup_flags bad = f;
  bad.strategy = (rusm_sup_strategy)7;
  assert_int_equal(rusm_sup_start(e.rt, &bad, &sa, 1, NULL, &p), RUSM_EINVAL);
  rusm_child_spec s2 = sa;
  s2.id = NULL;
  assert_int_equal(rusm_sup_start(e.rt, &f, &s2, 1, NULL, &p), RUSM_EINVAL);
  s2 = sa;
  s2.restart = (rusm_restart)9;
  assert_int_equal(rusm_sup_start(e.rt, &f, &s2, 1, NULL, &p), RUSM_EINVAL);
  assert_int_equal(rusm_dynsup_start(NULL, &f, &sa, NULL, &p), RUSM_EINVAL);
  assert_int_equal(rusm_dynsup_start(e.rt, &bad, &sa, NULL, &p), RUSM_EINVAL);
  bad = f;
  bad.period_ms = 0;
  assert_int_equal(rusm_dynsup_start(e.rt, &bad, &sa, NULL, &p), RUSM_EINVAL);
  assert_int_equal(rusm_dynsup_start(e.rt, &f, NULL, NULL, &p), RUSM_EINVAL);
  s2 = sa;
  s2.id = "";
  assert_int_equal(rusm_dynsup_start(e.rt, &f, &s2, NULL, &p), RUSM_EINVAL);
  expect_no(&e, TAG_UP);

  /* calls that cannot block, or cannot reach the runtime */
  rusm_pid_t sl;
  assert_int_equal(rusm_spawn_stackless(e.rt, &sl_caller_ops,
                                        (void *)(uintptr_t)e.pid, NULL, &sl),
                   0);
  rusm_msg *m = t_recv_tag(&e, TAG_RC);
  int64_t rcs[2];
  assert_int_equal(rusm_msg_len(m), sizeof rcs);
  memcpy(rcs, rusm_msg_data(m), sizeof rcs);
  rusm_msg_free(m);
  assert_int_equal(rcs[0], RUSM_ECONTEXT);
  assert_int_equal(rcs[1], RUSM_ECONTEXT);
  rusm_rt *other = NULL;
  rusm_rt_opts ro;
  rusm_rt_opts_init(&ro);
  ro.schedulers = 1;
  assert_int_equal(rusm_rt_create(&ro, &other), 0);
  /* the test thread is a process of e.rt, not of `other` */
  assert_int_equal(rusm_sup_start(other, NULL, NULL, 0, NULL, &p),
                   RUSM_ECONTEXT);
  rusm_child_counts cc;
  assert_int_equal(rusm_sup_count_children(other, e.pid, &cc), RUSM_ECONTEXT);
  rusm_rt_destroy(other);

  /* a live supervisor: the request errors */
  rusm_pid_t sup = start_static(&e, RUSM_ONE_FOR_ONE, 1, &sa, 1);
  rusm_pid_t pa = expect_up(&e, 'A');
  const char *long_id =
      "0123456789012345678901234567890123456789012345678901234567890123456";
  assert_int_equal(rusm_sup_stop(NULL, sup, 0), RUSM_EINVAL);
  assert_int_equal(rusm_sup_stop(e.rt, RUSM_PID_NONE, 0), RUSM_EINVAL);
  assert_int_equal(rusm_sup_stop(e.rt, e.pid, 0), RUSM_ECONTEXT);
  assert_int_equal(rusm_sup_terminate_child(e.rt, sup, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_sup_terminate_child(e.rt, sup, long_id),
                   RUSM_ENOTFOUND);
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, NULL, &p), RUSM_EINVAL);
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, long_id, &p),
                   RUSM_ENOTFOUND);
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, "nope", &p),
                   RUSM_ENOTFOUND);
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, "a", &p), RUSM_EEXIST);
  assert_int_equal(rusm_sup_delete_child(e.rt, sup, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_sup_delete_child(e.rt, sup, long_id), RUSM_ENOTFOUND);
  assert_int_equal(rusm_sup_delete_child(e.rt, sup, "a"), RUSM_EINVAL);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, NULL, &p), RUSM_EINVAL);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &sa, &p), RUSM_EEXIST);
  assert_int_equal(rusm_sup_which_children(e.rt, sup, NULL, 2, NULL),
                   RUSM_EINVAL);
  assert_int_equal(rusm_sup_which_children(NULL, sup, NULL, 0, NULL),
                   RUSM_EINVAL);
  assert_int_equal(rusm_sup_which_children(e.rt, RUSM_PID_NONE, NULL, 0, NULL),
                   RUSM_EINVAL);
  assert_int_equal(rusm_sup_count_children(e.rt, sup, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_sup_info_get(e.rt, sup, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, NULL, &p), RUSM_EINVAL);
  assert_int_equal(rusm_dynsup_terminate_child(e.rt, sup, pa), RUSM_EINVAL);
  /* a message it does not understand is dropped; it still answers */
  t_send_u64(e.rt, sup, 42, 42);
  t_send_u64(e.rt, sup, SUP_RANGE | 0xffff, 1);
  rusm_sup_info info;
  memset(&info, 0xff, sizeof info);
  assert_int_equal(rusm_sup_info_get(e.rt, sup, &info), 0);
  assert_int_equal(info.strategy, RUSM_ONE_FOR_ONE);
  assert_int_equal(info.intensity, 1);
  assert_int_equal(info.period_ms, LONG_PERIOD);
  assert_false(info.dynamic);
  assert_int_equal(info.restarts, 0);
  assert_int_equal(info.counts.specs, 1);
  assert_int_equal(info.counts.active, 1);
  assert_int_equal(info.counts.workers, 1);
  /* which_children may leave the count out */
  rusm_child_info ci[2];
  assert_int_equal(rusm_sup_which_children(e.rt, sup, ci, 2, NULL), 0);
  assert_string_equal(ci[0].id, "a");
  stop_sup(&e, sup);
  expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN);

  /* a dead supervisor */
  assert_int_equal(rusm_sup_info_get(e.rt, sup, &info), RUSM_ENOPROC);
  assert_int_equal(rusm_sup_which_children(e.rt, sup, ci, 2, NULL),
                   RUSM_ENOPROC);
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, "a", &p), RUSM_ENOPROC);
  assert_int_equal(rusm_sup_delete_child(e.rt, sup, "a"), RUSM_ENOPROC);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &sa, &p), RUSM_ENOPROC);
  assert_int_equal(rusm_dynsup_terminate_child(e.rt, sup, pa), RUSM_ENOPROC);
  assert_int_equal(rusm_sup_stop(e.rt, sup, 0), RUSM_ENOPROC);

  /* a dynamic supervisor reports itself as such */
  rusm_child_spec tmpl = wspec("w", NULL, RUSM_TEMPORARY, 1000);
  tmpl.supervisor = true;
  sup = start_dynamic(&e, 1, &tmpl);
  wcfg w;
  wcfg_init(&w, &e, 'W');
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &w, &p), 0);
  expect_up(&e, 'W');
  assert_int_equal(rusm_sup_info_get(e.rt, sup, &info), 0);
  assert_true(info.dynamic);
  assert_int_equal(info.counts.specs, 1);
  assert_int_equal(info.counts.active, 1);
  assert_int_equal(info.counts.supervisors, 1);
  assert_int_equal(info.counts.workers, 0);
  stop_sup(&e, sup);
  expect_gone(&e, 'W', RUSM_EXIT_SHUTDOWN);
  t_wait_idle(&e);
  t_stop(&e);
}

/* rusm_sup_stop's own timeout, and a stop that ends without it. */
static void test_stop_timeout(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg s;
  wcfg_init(&s, &e, 'S');
  s.trap = s.ignore_shutdown = true;
  rusm_child_spec ss = wspec("s", &s, RUSM_PERMANENT, RUSM_SHUTDOWN_INFINITY);
  rusm_pid_t sup = start_static(&e, RUSM_ONE_FOR_ONE, 1, &ss, 1);
  rusm_pid_t ps = expect_up(&e, 'S');
  t_ping(&e, ps); /* it traps exits now */
  rusm_ref ref = watch(&e, sup);
  /* the child never goes by itself: the supervisor waits for it */
  assert_int_equal(rusm_sup_stop(e.rt, sup, 30), RUSM_ETIMEDOUT);
  assert_true(rusm_is_alive(e.rt, sup));
  assert_int_equal(rusm_kill(e.rt, ps), 0);
  expect_gone(&e, 'S', RUSM_EXIT_KILLED);
  rusm_down_info d = wait_down(&e, ref);
  assert_int_equal(d.reason.code, RUSM_EXIT_SHUTDOWN);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Start functions: declining, failing, dead pids                      */
/* ------------------------------------------------------------------ */

static void test_start_returns_dead_pid(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  /* transient, linked by the start fn: its normal exit is the one Exit
   * that counts; the noproc of the supervisor's own link is swallowed */
  wcfg t;
  wcfg_init(&t, &e, 'T');
  t.dead_at = 1;
  t.dead_linked = true;
  rusm_child_spec st = wspec("t", &t, RUSM_TRANSIENT, 1000);
  rusm_pid_t sup = start_static(&e, RUSM_ONE_FOR_ONE, 5, &st, 1);
  rusm_pid_t dead = expect_up(&e, 'T');
  assert_false(rusm_is_alive(e.rt, dead));
  rusm_child_info ci[2];
  size_t n = 0;
  /* both Exits were queued before this request */
  assert_int_equal(rusm_sup_which_children(e.rt, sup, ci, 2, &n), 0);
  assert_int_equal(n, 1);
  assert_true(ci[0].pid == RUSM_PID_NONE);
  assert_int_equal(ci[0].restarts, 0);
  rusm_sup_info info;
  assert_int_equal(rusm_sup_info_get(e.rt, sup, &info), 0);
  assert_int_equal(info.restarts, 0);
  assert_true(rusm_is_alive(e.rt, sup));

  /* permanent: restarted once (a live child then); the late noproc of the
   * dead pid does not count as a second exit */
  wcfg p;
  wcfg_init(&p, &e, 'P');
  p.dead_at = 1;
  p.dead_linked = true;
  rusm_child_spec sp = wspec("p", &p, RUSM_PERMANENT, 1000);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &sp, NULL), 0);
  expect_up(&e, 'P');
  rusm_pid_t live = expect_up(&e, 'P');
  assert_true(rusm_is_alive(e.rt, live));
  assert_int_equal(rusm_sup_info_get(e.rt, sup, &info), 0);
  assert_int_equal(info.restarts, 1);
  assert_int_equal(atomic_load(&p.starts), 2);
  t_ping(&e, live);

  /* not linked by the start fn: the link the supervisor makes reports the
   * death as noproc, which is abnormal: restarted */
  wcfg u;
  wcfg_init(&u, &e, 'U');
  u.dead_at = 1;
  rusm_child_spec su = wspec("u", &u, RUSM_TRANSIENT, 1000);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &su, NULL), 0);
  expect_up(&e, 'U');
  rusm_pid_t lu = expect_up(&e, 'U');
  assert_true(rusm_is_alive(e.rt, lu));
  stop_sup(&e, sup);
  expect_gone(&e, 'U', RUSM_EXIT_SHUTDOWN);
  expect_gone(&e, 'P', RUSM_EXIT_SHUTDOWN);

  /* the same through a dynamic supervisor */
  rusm_child_spec tmpl = wspec("d", NULL, RUSM_TRANSIENT, 1000);
  sup = start_dynamic(&e, 1, &tmpl);
  wcfg d;
  wcfg_init(&d, &e, 'D');
  d.dead_at = 1;
  d.dead_linked = true;
  rusm_pid_t pd = RUSM_PID_NONE;
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &d, &pd), 0);
  assert_true(expect_up(&e, 'D') == pd);
  assert_true(pd != RUSM_PID_NONE);
  assert_int_equal(rusm_sup_which_children(e.rt, sup, ci, 2, &n), 0);
  assert_int_equal(n, 0); /* exited normal: forgotten, not restarted */
  assert_int_equal(rusm_dynsup_terminate_child(e.rt, sup, pd), RUSM_ENOTFOUND);
  assert_true(rusm_is_alive(e.rt, sup));
  stop_sup(&e, sup);
  expect_no(&e, TAG_UP);
  t_wait_idle(&e);
  t_stop(&e);
}

static void test_declines_and_start_errors(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  /* a temporary child that declines is dropped; a permanent one stays */
  wcfg a, t, k;
  wcfg_init(&a, &e, 'A');
  wcfg_init(&t, &e, 'T');
  wcfg_init(&k, &e, 'K');
  t.ignore_at = 1;
  k.ignore_at = 1;
  rusm_child_spec specs[] = {wspec("a", &a, RUSM_PERMANENT, 1000),
                             wspec("t", &t, RUSM_TEMPORARY, 1000),
                             wspec("k", &k, RUSM_PERMANENT, 1000)};
  rusm_pid_t sup = start_static(&e, RUSM_ONE_FOR_ALL, 5, specs, 3);
  expect_up(&e, 'A');
  rusm_child_info ci[4];
  size_t n = 0;
  assert_int_equal(rusm_sup_which_children(e.rt, sup, ci, 4, &n), 0);
  assert_int_equal(n, 2);
  assert_string_equal(ci[0].id, "a");
  assert_string_equal(ci[1].id, "k");
  assert_true(ci[1].pid == RUSM_PID_NONE);
  /* restart_child of a declined child: started this time */
  rusm_pid_t pk = RUSM_PID_NONE;
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, "k", &pk), 0);
  assert_true(expect_up(&e, 'K') == pk);
  /* a temporary running child is forgotten when one_for_all stops it */
  wcfg r;
  wcfg_init(&r, &e, 'R');
  rusm_child_spec sr = wspec("r", &r, RUSM_TEMPORARY, 1000);
  rusm_pid_t pr = RUSM_PID_NONE;
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &sr, &pr), 0);
  assert_true(expect_up(&e, 'R') == pr);
  assert_int_equal(counts(&e, sup).specs, 3);
  crash(&e, pk);
  expect_gone(&e, 'K', RUSM_EXIT_CUSTOM);
  expect_gone(&e, 'R', RUSM_EXIT_SHUTDOWN);
  expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN);
  expect_up(&e, 'A');
  pk = expect_up(&e, 'K');
  rusm_child_counts cc = counts(&e, sup);
  assert_int_equal(cc.specs, 2);
  assert_int_equal(cc.active, 2);
  /* start_child: a failing start is not kept; a declining temporary is
   * accepted and dropped */
  wcfg x;
  wcfg_init(&x, &e, 'X');
  x.fail_only = 1;
  rusm_child_spec sx = wspec("x", &x, RUSM_PERMANENT, 1000);
  rusm_pid_t px = 77;
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &sx, &px), RUSM_ESYS);
  assert_int_equal(counts(&e, sup).specs, 2);
  wcfg y;
  wcfg_init(&y, &e, 'Y');
  y.ignore_at = 1;
  rusm_child_spec sy = wspec("y", &y, RUSM_TEMPORARY, 1000);
  rusm_pid_t py = 77;
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &sy, &py), 0);
  assert_true(py == RUSM_PID_NONE);
  assert_int_equal(counts(&e, sup).specs, 2);
  /* restart_child whose start fails: its error, child stays stopped */
  assert_int_equal(rusm_sup_terminate_child(e.rt, sup, "k"), 0);
  expect_gone(&e, 'K', RUSM_EXIT_SHUTDOWN);
  k.fail_only = atomic_load(&k.starts) + 1;
  assert_int_equal(rusm_sup_restart_child(e.rt, sup, "k", &pk), RUSM_ESYS);
  assert_int_equal(rusm_sup_delete_child(e.rt, sup, "k"), 0);
  assert_int_equal(counts(&e, sup).specs, 1);
  stop_sup(&e, sup);
  expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN);

  /* dynamic: a failing start is the caller's error, a declined one is 0
   * with no pid, and neither is kept */
  rusm_child_spec tmpl = wspec("w", NULL, RUSM_PERMANENT, 1000);
  sup = start_dynamic(&e, 1, &tmpl);
  wcfg f1, f2;
  wcfg_init(&f1, &e, '1');
  wcfg_init(&f2, &e, '2');
  f1.fail_only = 1;
  f2.ignore_at = 1;
  rusm_pid_t p = 77;
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &f1, &p), RUSM_ESYS);
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &f2, &p), 0);
  assert_true(p == RUSM_PID_NONE);
  assert_int_equal(counts(&e, sup).specs, 0);
  stop_sup(&e, sup);
  expect_no(&e, TAG_UP);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Restarts that fail: retried until the intensity gives out           */
/* ------------------------------------------------------------------ */

static void test_failed_restarts_all_strategies(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  for (int strat = RUSM_ONE_FOR_ALL; strat <= RUSM_REST_FOR_ONE; strat++) {
    wcfg a, b, c;
    wcfg_init(&a, &e, 'A');
    wcfg_init(&b, &e, 'B');
    wcfg_init(&c, &e, 'C');
    a.quiet = b.quiet = c.quiet = true;
    b.fail_from = 2; /* b never starts again */
    rusm_child_spec specs[] = {wspec("a", &a, RUSM_PERMANENT, 1000),
                               wspec("b", &b, RUSM_PERMANENT, 1000),
                               wspec("c", &c, RUSM_PERMANENT, 1000)};
    rusm_pid_t sup = start_static(&e, (rusm_sup_strategy)strat, 3, specs, 3);
    rusm_ref ref = watch(&e, sup);
    rusm_pid_t pa = expect_up(&e, 'A');
    expect_up(&e, 'B');
    expect_up(&e, 'C');
    crash(&e, pa);
    /* the crash and each failed retry count: 3 allowed, the 4th is one
     * too many and the supervisor gives up */
    rusm_down_info d = wait_down(&e, ref);
    assert_int_equal(d.reason.code, RUSM_EXIT_SHUTDOWN);
    assert_int_equal(atomic_load(&b.starts), 4);
    assert_int_equal(atomic_load(&a.starts), strat == RUSM_ONE_FOR_ALL ? 4 : 2);
    assert_int_equal(atomic_load(&c.starts), 1); /* never reached again */
    for (int i = 1; i < atomic_load(&a.starts); i++)
      expect_up(&e, 'A');
    expect_no(&e, TAG_UP);
  }
  t_wait_idle(&e);
  t_stop(&e);
}

/* A restart that failed waits for its retry; the child is terminated and
 * deleted before the retry arrives, which must then be ignored. */
static void test_retry_after_delete_is_ignored(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg b;
  wcfg_init(&b, &e, 'B');
  b.gate_at = 2;
  b.gate_rc = RUSM_ESYS;
  rusm_child_spec sb = wspec("b", &b, RUSM_PERMANENT, 1000);
  rusm_pid_t sup = start_static(&e, RUSM_ONE_FOR_ONE, 5, &sb, 1);
  crash(&e, expect_up(&e, 'B'));
  expect_gone(&e, 'B', RUSM_EXIT_CUSTOM);
  assert_true(expect_blocked(&e, 'B') == sup); /* the restart, in the gate */
  job term, del;
  job_init(&term, &e, sup, C_TERMINATE);
  term.id = "b";
  job_spawn(&e, &term);
  gate_want(&e, sup, 1);
  job_init(&del, &e, sup, C_DELETE);
  del.id = "b";
  job_spawn(&e, &del);
  gate_want(&e, sup, 2);
  gate_open(&e, sup); /* the restart fails: its retry queues behind both */
  job_wait(&e, &term);
  job_wait(&e, &del);
  assert_int_equal(term.rc, 0);
  assert_int_equal(del.rc, 0);
  rusm_child_counts cc = counts(&e, sup); /* after the retry, too */
  assert_int_equal(cc.specs, 0);
  assert_int_equal(atomic_load(&b.starts), 2);
  rusm_sup_info info;
  assert_int_equal(rusm_sup_info_get(e.rt, sup, &info), 0);
  assert_int_equal(info.restarts, 1);
  expect_no(&e, TAG_UP);

  /* terminated (not deleted) while waiting: the retry is ignored too, and
   * delete works afterwards */
  wcfg c;
  wcfg_init(&c, &e, 'C');
  c.gate_at = 2;
  c.gate_rc = RUSM_ESYS;
  rusm_child_spec sc = wspec("c", &c, RUSM_PERMANENT, 1000);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &sc, NULL), 0);
  crash(&e, expect_up(&e, 'C'));
  expect_gone(&e, 'C', RUSM_EXIT_CUSTOM);
  expect_blocked(&e, 'C');
  job_init(&term, &e, sup, C_TERMINATE);
  term.id = "c";
  job_spawn(&e, &term);
  gate_want(&e, sup, 1);
  gate_open(&e, sup);
  job_wait(&e, &term);
  assert_int_equal(term.rc, 0);
  cc = counts(&e, sup);
  assert_int_equal(cc.specs, 1);
  assert_int_equal(cc.active, 0);
  assert_int_equal(atomic_load(&c.starts), 2);
  assert_int_equal(rusm_sup_delete_child(e.rt, sup, "c"), 0);
  stop_sup(&e, sup);
  t_wait_idle(&e);
  t_stop(&e);
}

/* A dynamic child whose restart fails waits as "pending": listed without a
 * pid and counted as a spec, until its retry starts it again. */
static void test_dynamic_pending_restart(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_child_spec tmpl = wspec("w", NULL, RUSM_PERMANENT, 1000);
  rusm_pid_t sup = start_dynamic(&e, 2, &tmpl);
  wcfg w;
  wcfg_init(&w, &e, 'W');
  w.gate_at = 2;
  w.gate_rc = RUSM_ESYS;
  rusm_pid_t p;
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &w, &p), 0);
  assert_true(expect_up(&e, 'W') == p);
  rusm_ref ref = watch(&e, sup);
  crash(&e, p);
  expect_gone(&e, 'W', RUSM_EXIT_CUSTOM);
  expect_blocked(&e, 'W');
  job which, info;
  job_init(&which, &e, sup, C_WHICH);
  job_spawn(&e, &which);
  gate_want(&e, sup, 1);
  job_init(&info, &e, sup, C_INFO);
  job_spawn(&e, &info);
  gate_want(&e, sup, 2);
  gate_open(&e, sup);
  job_wait(&e, &which);
  job_wait(&e, &info);
  assert_int_equal(which.rc, 0);
  assert_int_equal(which.count, 1);
  assert_true(which.ci[0].pid == RUSM_PID_NONE);
  assert_string_equal(which.ci[0].id, "w");
  assert_int_equal(info.rc, 0);
  assert_true(info.info.dynamic);
  assert_int_equal(info.info.counts.specs, 1);
  assert_int_equal(info.info.counts.active, 0);
  assert_int_equal(info.info.counts.workers, 1);
  assert_int_equal(info.info.restarts, 1);
  /* the retry: started again, with its own arg */
  p = expect_up(&e, 'W');
  assert_int_equal(atomic_load(&w.starts), 3);
  rusm_child_info ci[2];
  size_t n = 0;
  assert_int_equal(rusm_sup_which_children(e.rt, sup, ci, 2, &n), 0);
  assert_int_equal(n, 1);
  assert_true(ci[0].pid == p);
  assert_int_equal(ci[0].restarts, 1);
  /* one more crash: the third restart within the period is one too many */
  crash(&e, p);
  expect_gone(&e, 'W', RUSM_EXIT_CUSTOM);
  rusm_down_info d = wait_down(&e, ref);
  assert_int_equal(d.reason.code, RUSM_EXIT_SHUTDOWN);
  expect_no(&e, TAG_UP);
  t_wait_idle(&e);
  t_stop(&e);
}

/* The intensity window slides: a restart older than period_ms no longer
 * counts. The test waits for a timer of its own, since the passing of the
 * period is what is tested. */
static void test_intensity_window_slides(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg a;
  wcfg_init(&a, &e, 'A');
  rusm_child_spec sa = wspec("a", &a, RUSM_PERMANENT, 1000);
  rusm_sup_flags f = {RUSM_ONE_FOR_ONE, 1, 20};
  rusm_pid_t sup;
  assert_int_equal(rusm_sup_start(e.rt, &f, &sa, 1, NULL, &sup), 0);
  rusm_pid_t p = expect_up(&e, 'A');
  for (int i = 0; i < 3; i++) {
    crash(&e, p);
    expect_gone(&e, 'A', RUSM_EXIT_CUSTOM);
    p = expect_up(&e, 'A');
    assert_int_equal(rusm_send_after(e.rt, 30, e.pid, TAG_TICK, NULL, 0, NULL),
                     0);
    rusm_msg_free(t_recv_tag(&e, TAG_TICK));
  }
  rusm_sup_info info;
  assert_int_equal(rusm_sup_info_get(e.rt, sup, &info), 0);
  assert_int_equal(info.restarts, 3);
  stop_sup(&e, sup);
  expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Requests racing exits                                               */
/* ------------------------------------------------------------------ */

/* terminate of a child whose Exit is queued behind the request: the child
 * died on its own, the supervisor only collects it, and does not restart
 * it (the terminate came first). */
static void test_terminate_races_exit(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  /* static */
  wcfg c, g;
  wcfg_init(&c, &e, 'C');
  wcfg_init(&g, &e, 'G');
  g.gate_at = 1;
  rusm_child_spec sc = wspec("c", &c, RUSM_PERMANENT, 1000);
  rusm_pid_t sup = start_static(&e, RUSM_ONE_FOR_ONE, 5, &sc, 1);
  rusm_pid_t pc = expect_up(&e, 'C');
  job start, term;
  job_init(&start, &e, sup, C_START_CHILD);
  start.spec = wspec("g", &g, RUSM_PERMANENT, 1000);
  job_spawn(&e, &start);
  expect_blocked(&e, 'G');
  job_init(&term, &e, sup, C_TERMINATE);
  term.id = "c";
  job_spawn(&e, &term);
  gate_want(&e, sup, 1);
  rusm_ref rc_ = watch(&e, pc);
  crash(&e, pc);
  wait_down(&e, rc_); /* its Exit to the supervisor is queued by now */
  expect_gone(&e, 'C', RUSM_EXIT_CUSTOM);
  gate_open(&e, sup);
  job_wait(&e, &start);
  job_wait(&e, &term);
  assert_int_equal(start.rc, 0);
  assert_true(expect_up(&e, 'G') == start.out);
  assert_int_equal(term.rc, 0);
  rusm_child_counts cc = counts(&e, sup);
  assert_int_equal(cc.specs, 2);
  assert_int_equal(cc.active, 1);
  assert_int_equal(atomic_load(&c.starts), 1);
  stop_sup(&e, sup);
  expect_gone(&e, 'G', RUSM_EXIT_SHUTDOWN);

  /* dynamic */
  rusm_child_spec tmpl = wspec("d", NULL, RUSM_PERMANENT, 1000);
  sup = start_dynamic(&e, 5, &tmpl);
  wcfg d, h;
  wcfg_init(&d, &e, 'D');
  wcfg_init(&h, &e, 'H');
  h.gate_at = 1;
  rusm_pid_t pd;
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &d, &pd), 0);
  expect_up(&e, 'D');
  job_init(&start, &e, sup, C_DYN_START);
  start.arg = &h;
  job_spawn(&e, &start);
  expect_blocked(&e, 'H');
  job_init(&term, &e, sup, C_DYN_TERMINATE);
  term.pid = pd;
  job_spawn(&e, &term);
  gate_want(&e, sup, 1);
  rusm_ref rd = watch(&e, pd);
  crash(&e, pd);
  wait_down(&e, rd);
  expect_gone(&e, 'D', RUSM_EXIT_CUSTOM);
  gate_open(&e, sup);
  job_wait(&e, &start);
  job_wait(&e, &term);
  assert_int_equal(start.rc, 0);
  assert_true(expect_up(&e, 'H') == start.out);
  assert_int_equal(term.rc, 0);
  cc = counts(&e, sup);
  assert_int_equal(cc.specs, 1);
  assert_int_equal(cc.active, 1);
  assert_int_equal(atomic_load(&d.starts), 1);
  assert_int_equal(rusm_dynsup_terminate_child(e.rt, sup, pd), RUSM_ENOTFOUND);
  stop_sup(&e, sup);
  expect_gone(&e, 'H', RUSM_EXIT_SHUTDOWN);
  expect_no(&e, TAG_UP);
  t_wait_idle(&e);
  t_stop(&e);
}

/* Dynamic shutdown: a child whose Exit is already queued is not signalled,
 * a prompt one leaves with shutdown, a stubborn one is killed when the one
 * shared deadline passes. */
static void test_dynamic_shutdown_deadline(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_child_spec tmpl = wspec("d", NULL, RUSM_PERMANENT, 40);
  rusm_pid_t sup = start_dynamic(&e, 5, &tmpl);
  wcfg s, q, g;
  wcfg_init(&s, &e, 'S');
  wcfg_init(&q, &e, 'Q');
  wcfg_init(&g, &e, 'G');
  s.trap = s.ignore_shutdown = true;
  g.gate_at = 1;
  rusm_pid_t ps, pq;
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &s, &ps), 0);
  expect_up(&e, 'S');
  t_ping(&e, ps);
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &q, &pq), 0);
  expect_up(&e, 'Q');
  job start;
  job_init(&start, &e, sup, C_DYN_START);
  start.arg = &g;
  job_spawn(&e, &start);
  expect_blocked(&e, 'G');
  rusm_ref rs = watch(&e, sup);
  /* queued first: the stop; then q's Exit */
  assert_int_equal(rusm_exit(e.rt, sup, RUSM_REASON_SHUTDOWN), 0);
  rusm_ref rq = watch(&e, pq);
  crash(&e, pq);
  wait_down(&e, rq);
  expect_gone(&e, 'Q', RUSM_EXIT_CUSTOM);
  gate_open(&e, sup);
  job_wait(&e, &start);
  assert_int_equal(start.rc, 0);
  expect_up(&e, 'G');
  /* g leaves at once, s is killed at the deadline; q is not restarted */
  note n1 = recv_note(&e, TAG_GONE), n2 = recv_note(&e, TAG_GONE);
  if (n1.label == 'S') {
    note t = n1;
    n1 = n2;
    n2 = t;
  }
  assert_int_equal(n1.label, 'G');
  assert_int_equal(n1.code, RUSM_EXIT_SHUTDOWN);
  assert_int_equal(n2.label, 'S');
  assert_int_equal(n2.code, RUSM_EXIT_KILLED);
  rusm_down_info d = wait_down(&e, rs);
  assert_int_equal(d.reason.code, RUSM_EXIT_SHUTDOWN);
  assert_int_equal(atomic_load(&q.starts), 1);
  expect_no(&e, TAG_UP);

  /* infinity: waits for a child as long as it takes */
  tmpl.shutdown_ms = RUSM_SHUTDOWN_INFINITY;
  sup = start_dynamic(&e, 5, &tmpl);
  wcfg t;
  wcfg_init(&t, &e, 'T');
  t.trap = true;
  rusm_pid_t pt;
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &t, &pt), 0);
  expect_up(&e, 'T');
  t_ping(&e, pt);
  stop_sup(&e, sup);
  expect_gone(&e, 'T', RUSM_EXIT_SHUTDOWN);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Dying mid-call: the supervisor, or the caller                       */
/* ------------------------------------------------------------------ */

typedef struct thread_call {
  rusm_rt *rt;
  rusm_pid_t test, sup;
  bool stop; /* rusm_sup_stop instead of count_children */
  int rc;
  rusm_pid_t me;
} thread_call;

/* An attached thread that makes a call that will not be answered. */
static void *attached_caller(void *arg) {
  thread_call *tc = arg;
  rusm_proc *me = NULL;
  T_CHECK(rusm_attach(tc->rt, &me) == 0);
  tc->me = rusm_self(me);
  T_CHECK(rusm_send(tc->rt, tc->test, TAG_RC, &tc, sizeof tc) == 0);
  if (tc->stop) {
    tc->rc = rusm_sup_stop(tc->rt, tc->sup, -1);
  } else {
    rusm_child_counts cc;
    tc->rc = rusm_sup_count_children(tc->rt, tc->sup, &cc);
  }
  /* killed meanwhile: no longer a process, detach does nothing */
  T_CHECK(rusm_current() == NULL);
  rusm_detach(me);
  return NULL;
}

static void test_dying_mid_call(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  /* the supervisor is killed while a start_child call waits on it */
  wcfg a, g;
  wcfg_init(&a, &e, 'A');
  wcfg_init(&g, &e, 'G');
  g.gate_at = 1;
  rusm_child_spec sa = wspec("a", &a, RUSM_PERMANENT, 1000);
  rusm_pid_t sup = start_static(&e, RUSM_ONE_FOR_ONE, 1, &sa, 1);
  expect_up(&e, 'A');
  job start;
  job_init(&start, &e, sup, C_START_CHILD);
  start.spec = wspec("g", &g, RUSM_PERMANENT, 1000);
  job_spawn(&e, &start);
  expect_blocked(&e, 'G');
  assert_int_equal(rusm_kill(e.rt, sup), 0);
  job_wait(&e, &start);
  assert_int_equal(start.rc, RUSM_ENOPROC);
  expect_gone(&e, 'A', RUSM_EXIT_KILLED); /* through its link */

  /* the caller is killed while it waits: a call to a process that never
   * answers (not a supervisor), and a stop that cannot finish */
  rusm_pid_t silent = t_spawn_waiter(&e);
  wcfg s;
  wcfg_init(&s, &e, 'S');
  s.trap = s.ignore_shutdown = true;
  rusm_child_spec ss = wspec("s", &s, RUSM_PERMANENT, RUSM_SHUTDOWN_INFINITY);
  sup = start_static(&e, RUSM_ONE_FOR_ONE, 1, &ss, 1);
  rusm_pid_t ps = expect_up(&e, 'S');
  t_ping(&e, ps);
  for (int i = 0; i < 2; i++) {
    thread_call tc = {e.rt, e.pid, i ? sup : silent, i == 1, -1000, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, attached_caller, &tc), 0);
    rusm_msg_free(t_recv_tag(&e, TAG_RC));
    assert_int_equal(rusm_kill(e.rt, tc.me), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(tc.rc, RUSM_ESHUTDOWN);
  }
  rusm_ref rs = watch(&e, sup);
  assert_true(rusm_is_alive(e.rt, sup)); /* still waiting for s */
  assert_int_equal(rusm_kill(e.rt, ps), 0);
  expect_gone(&e, 'S', RUSM_EXIT_KILLED);
  assert_int_equal(wait_down(&e, rs).reason.code, RUSM_EXIT_SHUTDOWN);
  t_send_stop(e.rt, silent, RUSM_EXIT_NORMAL, NULL);
  t_wait_note(&e, silent);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* which_children with small buffers                                   */
/* ------------------------------------------------------------------ */

static void test_which_children_caps(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  enum { N = 5 };
  wcfg c[N];
  char ids[N][16];
  rusm_child_spec specs[N];
  for (int i = 0; i < N; i++) {
    wcfg_init(&c[i], &e, (uint64_t)'0' + (uint64_t)i);
    c[i].quiet = c[i].no_up = true;
    snprintf(ids[i], sizeof ids[i], "c%d", i);
    specs[i] = wspec(ids[i], &c[i], RUSM_PERMANENT, 1000);
  }
  specs[3].supervisor = true; /* a flag only: reported as such */
  rusm_pid_t sup = start_static(&e, RUSM_ONE_FOR_ONE, 1, specs, N);
  for (size_t cap = 0; cap <= N + 2; cap++) {
    rusm_child_info ci[N + 3];
    memset(ci, 0xaa, sizeof ci);
    size_t n = 99;
    assert_int_equal(
        rusm_sup_which_children(e.rt, sup, cap ? ci : NULL, cap, &n), 0);
    assert_int_equal(n, N);
    for (size_t i = 0; i < cap && i < N; i++) {
      assert_string_equal(ci[i].id, ids[i]);
      assert_true(ci[i].pid != RUSM_PID_NONE);
      assert_int_equal(ci[i].supervisor, i == 3);
    }
    /* nothing written past what was asked for */
    uint8_t fill[sizeof(rusm_child_info)];
    memset(fill, 0xaa, sizeof fill);
    for (size_t i = cap < N ? cap : N; i < N + 3; i++)
      assert_memory_equal(&ci[i], fill, sizeof fill);
  }
  rusm_child_counts cc = counts(&e, sup);
  assert_int_equal(cc.supervisors, 1);
  assert_int_equal(cc.workers, N - 1);
  stop_sup(&e, sup);

  /* dynamic: cap below the total */
  rusm_child_spec tmpl = wspec("w", NULL, RUSM_PERMANENT, 1000);
  sup = start_dynamic(&e, 1, &tmpl);
  for (int i = 0; i < N; i++)
    assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &c[i], NULL), 0);
  rusm_child_info ci[2];
  size_t n = 0;
  assert_int_equal(rusm_sup_which_children(e.rt, sup, ci, 2, &n), 0);
  assert_int_equal(n, N);
  assert_true(ci[0].pid != RUSM_PID_NONE && ci[1].pid != RUSM_PID_NONE);
  assert_true(ci[0].pid != ci[1].pid);
  assert_int_equal(rusm_sup_which_children(e.rt, sup, NULL, 0, &n), 0);
  assert_int_equal(n, N);
  stop_sup(&e, sup);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* A full process table, a closing runtime                             */
/* ------------------------------------------------------------------ */

typedef struct plain_call {
  rusm_rt *rt;
  rusm_pid_t sup;
  int rc;
} plain_call;

/* A thread that is not a process: the call attaches it for its duration. */
static void *plain_caller(void *arg) {
  plain_call *pc = arg;
  rusm_child_counts cc;
  pc->rc = rusm_sup_count_children(pc->rt, pc->sup, &cc);
  return NULL;
}

static int plain_call_rc(rusm_rt *rt, rusm_pid_t sup) {
  plain_call pc = {rt, sup, -1000};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, plain_caller, &pc), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  return pc.rc;
}

static void test_table_full_and_closing(void **state) {
  (void)state;
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = 2;
  o.max_processes = 3;
  t_env e;
  t_start_opts(&e, &o);
  /* test thread + supervisor + one child fit */
  wcfg a;
  wcfg_init(&a, &e, 'A');
  rusm_child_spec sa = wspec("a", &a, RUSM_PERMANENT, 1000);
  rusm_pid_t sup = start_static(&e, RUSM_ONE_FOR_ONE, 1, &sa, 1);
  expect_up(&e, 'A');
  /* the table is full: no supervisor, no child, no temporary caller */
  rusm_pid_t p = RUSM_PID_NONE;
  assert_int_equal(rusm_sup_start(e.rt, NULL, NULL, 0, NULL, &p), RUSM_ELIMIT);
  assert_int_equal(plain_call_rc(e.rt, sup), RUSM_ELIMIT);
  wcfg b;
  wcfg_init(&b, &e, 'B');
  rusm_child_spec sb = wspec("b", &b, RUSM_PERMANENT, 1000);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &sb, &p), RUSM_ELIMIT);
  assert_int_equal(counts(&e, sup).specs, 1);
  /* a supervisor whose children cannot be spawned fails to start */
  assert_int_equal(rusm_sup_terminate_child(e.rt, sup, "a"), 0);
  expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN);
  assert_int_equal(rusm_sup_start(e.rt, NULL, &sb, 1, NULL, &p), RUSM_ELIMIT);
  expect_no(&e, TAG_UP);
  stop_sup(&e, sup);

  /* closing: nothing new starts, and a plain thread cannot attach */
  assert_int_equal(rusm_rt_shutdown(e.rt, T_GUARD_MS, NULL), 0);
  assert_int_equal(rusm_sup_start(e.rt, NULL, NULL, 0, NULL, &p),
                   RUSM_ESHUTDOWN);
  assert_int_equal(plain_call_rc(e.rt, sup), RUSM_ESHUTDOWN);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* The starter dies between the handshake messages                     */
/* ------------------------------------------------------------------ */

static rusm_next killer_init(rusm_proc *self, void **state) {
  rusm_pid_t victim = (rusm_pid_t)(uintptr_t)*state;
  T_CHECK(rusm_kill(rusm_proc_rt(self), victim) == 0);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}
static const rusm_stackless_ops killer_ops = {killer_init, NULL, NULL};

typedef struct starter_arg {
  const rusm_child_spec *specs;
  size_t n;
} starter_arg;

/*
 * With one scheduler and a budget of one reduction, the starter's slice is
 * spent by its first send (the INIT): it yields there, and the killer that
 * it spawned before runs first and kills it before it sends the specs. The
 * supervisor sees its starter's Down instead of the specs and ends without
 * starting anything (nobody waits for its answer).
 */
static void starter_fn(rusm_proc *self, void *arg) {
  starter_arg *a = arg;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_pid_t k;
  T_CHECK(rusm_spawn_stackless(rt, &killer_ops,
                               (void *)(uintptr_t)rusm_self(self), NULL,
                               &k) == 0);
  rusm_pid_t sup = RUSM_PID_NONE;
  (void)rusm_sup_start(rt, NULL, a->specs, a->n, NULL, &sup);
  T_CHECK(!"the starter survived its kill");
}

static void test_starter_killed_mid_handshake(void **state) {
  (void)state;
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = 1;
  o.budget = 1;
  t_env e;
  t_start_opts(&e, &o);
  wcfg a, b;
  wcfg_init(&a, &e, 'A');
  wcfg_init(&b, &e, 'B');
  rusm_child_spec specs[] = {wspec("a", &a, RUSM_PERMANENT, 1000),
                             wspec("b", &b, RUSM_PERMANENT, 1000)};
  starter_arg sa = {specs, 2};
  rusm_spawn_opts so;
  rusm_spawn_opts_init(&so);
  rusm_ref ref = 0;
  so.monitor = true;
  so.monitor_ref = &ref;
  rusm_pid_t st;
  assert_int_equal(rusm_spawn_stackful(e.rt, starter_fn, &sa, &so, &st), 0);
  assert_int_equal(wait_down(&e, ref).reason.code, RUSM_EXIT_KILLED);
  t_wait_idle(&e); /* the supervisor ended too */
  assert_int_equal(atomic_load(&a.starts), 0);
  assert_int_equal(atomic_load(&b.starts), 0);
  expect_no(&e, TAG_UP);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* call.h on its own                                                   */
/* ------------------------------------------------------------------ */

#define TAG_CREQ UINT64_C(0x3300000000000001)
#define TAG_CREP UINT64_C(0x3300000000000002)

/* A server that answers each request first with a reply too short to
 * carry a reference, then with one for another call, then properly. */
static rusm_next server_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)state;
  rusm_rt *rt = rusm_proc_rt(self);
  if (m && rusm_msg_tag(m) == T_TAG_PING)
    T_CHECK(rusm_send(rt, rusm_msg_from(m), T_TAG_PONG, rusm_msg_data(m),
                      rusm_msg_len(m)) == 0);
  if (!m || rusm_msg_tag(m) != TAG_CREQ || rusm_msg_len(m) < 8)
    return rusm_next_wait();
  rusm_pid_t to = rusm_msg_from(m);
  uint64_t ref;
  memcpy(&ref, rusm_msg_data(m), sizeof ref);
  T_CHECK(rusm_send(rt, to, TAG_CREP, "abc", 3) == 0);
  uint64_t other[2] = {ref + 1000000, 1};
  T_CHECK(rusm_send(rt, to, TAG_CREP, other, sizeof other) == 0);
  uint64_t good[2] = {ref, 7};
  T_CHECK(rusm_send(rt, to, TAG_CREP, good, sizeof good) == 0);
  /* (the tests below never fail the server's own allocations) */
  return rusm_next_wait();
}
static const rusm_stackless_ops server_ops = {NULL, server_handle, NULL};

static void test_call_protocol(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm__caller c;
  assert_int_equal(rusm__caller_enter(e.rt, &c), 0);
  assert_false(c.temp);
  rusm_pid_t srv;
  assert_int_equal(rusm_spawn_stackless(e.rt, &server_ops, NULL, NULL, &srv),
                   0);
  uint64_t req[2] = {0, 5};
  rusm_msg *m = NULL;
  assert_int_equal(rusm__call(&c, srv, TAG_CREQ, req, sizeof req, TAG_CREP, &m),
                   0);
  uint64_t rep[2];
  assert_int_equal(rusm_msg_len(m), sizeof rep);
  memcpy(rep, rusm_msg_data(m), sizeof rep);
  assert_true(rep[0] == req[0] && rep[1] == 7);
  rusm_msg_free(m);
  /* the two stray replies stay queued (not ours to take) */
  rusm_filter f = rusm_filter_tag(TAG_CREP);
  for (int i = 0; i < 2; i++)
    rusm_msg_free(t_recv(&e, &f));
  t_expect_nothing(&e, &f);
  /* the caller itself: never answered */
  assert_int_equal(
      rusm__call(&c, e.pid, TAG_CREQ, req, sizeof req, TAG_CREP, &m),
      RUSM_ECONTEXT);
  /* a wait that times out removes its monitor (no Down left behind) */
  rusm_ref mref;
  assert_int_equal(rusm_monitor(e.me, srv, &mref), 0);
  assert_int_equal(rusm__call_wait(&c, mref, TAG_CREP, 424242, 5, &m),
                   RUSM_ETIMEDOUT);
  assert_int_equal(rusm_demonitor(e.me, mref, 0), 0);
  /* allocation failures on the caller's side: its monitor (the first
   * allocation: its tables have room), then its request; the server is
   * parked and allocates nothing meanwhile */
  for (int k = 0; k < 2; k++) {
    rusm__test_fail_one_alloc(k);
    m = NULL;
    int rc = rusm__call(&c, srv, TAG_CREQ, req, sizeof req, TAG_CREP, &m);
    rusm__test_fail_allocs(-1);
    assert_int_equal(rc, RUSM_ENOMEM);
    assert_null(m);
  }
  t_ping(&e, srv); /* no request reached it: it answers the ping only */
  t_expect_nothing(&e, &f);
  rusm__caller_leave(&c);
  assert_true(rusm_current() == e.me); /* not a temporary attachment */
  assert_int_equal(rusm_kill(e.rt, srv), 0);
  t_wait_idle(&e);
  rusm_msg *x;
  while (rusm_receive(e.me, NULL, 0, &x) == 0)
    rusm_msg_free(x);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Out of memory                                                       */
/* ------------------------------------------------------------------ */

/* Kills every process but the test thread, and waits until they are gone
 * (a process may have lost a signal to an allocation failure). */
static void kill_all_but_me(t_env *e) {
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

static void drain_mine(t_env *e) {
  rusm_msg *m;
  while (rusm_receive(e->me, NULL, 0, &m) == 0)
    rusm_msg_free(m);
}

/* Monitors and links to the test thread many times, then lets go: the
 * test thread's tables keep the room, so storing a supervisor's monitor
 * of its starter allocates nothing later (a failure there would end the
 * test thread: the known bug of test_core_paths.c). */
static void warm_fn(rusm_proc *self, void *arg) {
  rusm_pid_t test = (rusm_pid_t)(uintptr_t)arg;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_ref refs[12];
  for (int i = 0; i < 12; i++)
    T_CHECK(rusm_monitor(self, test, &refs[i]) == 0);
  T_CHECK(rusm_link(self, test) == 0);
  t_send_u64(rt, test, T_TAG_DONE, 1);
  rusm_filter f = rusm_filter_tag(T_TAG_GO);
  rusm_msg *m = NULL;
  T_CHECK(rusm_receive(self, &f, -1, &m) == 0);
  rusm_msg_free(m);
  for (int i = 0; i < 12; i++)
    T_CHECK(rusm_demonitor(self, refs[i], 0) == 1);
  T_CHECK(rusm_unlink(self, test) == 0);
}

static void warm_tables(t_env *e) {
  rusm_pid_t p;
  assert_int_equal(
      rusm_spawn_stackful(e->rt, warm_fn, (void *)(uintptr_t)e->pid, NULL, &p),
      0);
  assert_int_equal(t_recv_u64(e, T_TAG_DONE), 1); /* stored by now */
  t_send_u64(e->rt, p, T_TAG_GO, 1);
  t_wait_idle(e);
  drain_mine(e); /* takes the demonitors and the unlink */
}

/*
 * Targeted failures: the code that runs right before the allocation to
 * fail arms the hook (a start function in the supervisor's process, or a
 * child's terminate callback on its way out) while every other thread
 * waits, so the one failure lands where it is meant to.
 */
static void test_oom_targeted(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  /* the error reply of a failed start cannot be sent: the supervisor
   * exits, and its starter learns it from its monitor */
  wcfg a;
  wcfg_init(&a, &e, 'A');
  a.fail_only = a.inject_at = 1;
  rusm_child_spec sa = wspec("a", &a, RUSM_PERMANENT, 1000);
  rusm_pid_t p = RUSM_PID_NONE;
  assert_int_equal(rusm_sup_start(e.rt, NULL, &sa, 1, NULL, &p), RUSM_ENOPROC);
  assert_true(p == RUSM_PID_NONE);

  /* start_child's answer cannot be sent: the supervisor crashes with a
   * reason that says why */
  rusm_pid_t sup = start_static(&e, RUSM_ONE_FOR_ONE, 5, NULL, 0);
  rusm_ref ref = watch(&e, sup);
  wcfg b;
  wcfg_init(&b, &e, 'B');
  b.fail_only = b.inject_at = 1;
  rusm_child_spec sb = wspec("b", &b, RUSM_PERMANENT, 1000);
  assert_int_equal(rusm_sup_start_child(e.rt, sup, &sb, &p), RUSM_ENOPROC);
  rusm_filter fd = rusm_filter_tag(RUSM_TAG_DOWN);
  fd.pred = down_ref;
  fd.pred_arg = &ref;
  rusm_msg *m = t_recv(&e, &fd);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_int_equal(d.reason.code, RUSM_EXIT_CUSTOM);
  const char *why = "supervisor: out of memory";
  assert_int_equal(d.reason.len, strlen(why));
  assert_memory_equal(d.reason.data, why, strlen(why));
  rusm_msg_free(m);

  /* a restart that cannot be recorded counts as one too many: the child's
   * Exit reaches the supervisor (the one allocation after the hook), the
   * restart bookkeeping is the next */
  wcfg c;
  wcfg_init(&c, &e, 'C');
  c.exit_inject = true;
  c.exit_inject_k = 1;
  rusm_child_spec sc = wspec("c", &c, RUSM_PERMANENT, 1000);
  sup = start_static(&e, RUSM_ONE_FOR_ONE, 5, &sc, 1);
  rusm_pid_t pc = expect_up(&e, 'C');
  ref = watch(&e, sup);
  t_send_stop(e.rt, pc, RUSM_EXIT_CUSTOM, NULL);
  expect_gone(&e, 'C', RUSM_EXIT_CUSTOM);
  assert_int_equal(wait_down(&e, ref).reason.code, RUSM_EXIT_SHUTDOWN);
  assert_int_equal(atomic_load(&c.starts), 1);

  /* a dynamic child that cannot be tracked is not left running */
  rusm_child_spec tmpl = wspec("w", NULL, RUSM_PERMANENT, 1000);
  sup = start_dynamic(&e, 5, &tmpl);
  wcfg w;
  wcfg_init(&w, &e, 'W');
  w.inject_at = 1;
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &w, &p), RUSM_ENOMEM);
  expect_up(&e, 'W');
  expect_gone(&e, 'W', RUSM_EXIT_KILLED);
  assert_int_equal(counts(&e, sup).specs, 0);
  /* a restart that fails cannot be remembered for its retry: the child is
   * dropped (the one failure: the pending list) */
  wcfg r;
  wcfg_init(&r, &e, 'R');
  r.fail_only = r.inject_at = 2;
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &r, &p), 0);
  assert_true(expect_up(&e, 'R') == p);
  crash(&e, p);
  expect_gone(&e, 'R', RUSM_EXIT_CUSTOM);
  int64_t end = rusm_now_ns() + (int64_t)T_GUARD_MS * 1000000;
  while (atomic_load(&r.starts) < 2 && rusm_now_ns() < end)
    sched_yield();
  rusm_child_counts cc = counts(&e, sup); /* after the restart attempt */
  assert_int_equal(cc.specs, 0);
  assert_int_equal(atomic_load(&r.starts), 2);
  /* memory is back: the same works */
  w.inject_at = 0;
  assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &w, &p), 0);
  assert_true(expect_up(&e, 'W') == p);
  stop_sup(&e, sup);
  expect_gone(&e, 'W', RUSM_EXIT_SHUTDOWN);
  t_wait_idle(&e);
  t_stop(&e);
}

typedef enum oop {
  O_START,     /* rusm_sup_start with monitor (and link) */
  O_START_KID, /* start_child on a supervisor without children */
  O_WHICH,     /* the first which_children (its reply buffer grows) */
  O_TERMINATE, /* terminate_child: the supervisor's stop bookkeeping */
  O_DYN_START, /* the first dynamic child (the map is allocated) */
  O_DYN_STOP,  /* stopping a dynamic supervisor with children */
  O__COUNT
} oop;

/*
 * One allocation fails, k allocations from the call on, for each k of a
 * range: every call answers 0, RUSM_ENOMEM, or RUSM_ENOPROC (a supervisor
 * that could not send its answer exits), the runtime stays usable, and
 * nothing leaks (LeakSanitizer). The ranges of the calls that make a
 * supervisor stop a child end before the child's own Down is allocated:
 * a lost Down is a known hang (test_regression_sup_waits_for_lost_down
 * below).
 */
static void test_oom_sweeps(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 2);
  rusm_trap_exit(e.me, true);
  warm_tables(&e);
  wcfg q;
  wcfg_init(&q, &e, 'Q');
  q.quiet = q.no_up = true;
  rusm_child_spec specs[2] = {wspec("a", &q, RUSM_PERMANENT, 1000),
                              wspec("b", &q, RUSM_TEMPORARY, 0)};
  rusm_child_spec tmpl = wspec("w", NULL, RUSM_PERMANENT, 1000);
  const int range[O__COUNT] = {T_SCALE(48, 32), 10, 5, 3, 10, 5};
  int nomem[O__COUNT] = {0};
  for (int op = 0; op < O__COUNT; op++) {
    for (int k = 0; k < range[op]; k++) {
      rusm_pid_t sup = RUSM_PID_NONE, p = RUSM_PID_NONE;
      rusm_sup_flags f = {RUSM_ONE_FOR_ONE, 3, LONG_PERIOD};
      if (op == O_START_KID || op == O_WHICH || op == O_TERMINATE)
        assert_int_equal(rusm_sup_start(e.rt, &f, specs,
                                        op == O_START_KID ? 0 : 1, NULL, &sup),
                         0);
      if (op == O_DYN_START || op == O_DYN_STOP) {
        assert_int_equal(rusm_dynsup_start(e.rt, &f, &tmpl, NULL, &sup), 0);
        for (int i = 0; op == O_DYN_STOP && i < 2; i++)
          assert_int_equal(rusm_dynsup_start_child(e.rt, sup, &q, NULL), 0);
      }
      rusm_child_info ci[4];
      size_t n = 0;
      if (op == O_TERMINATE || op == O_DYN_STOP) {
        /* the children's monitor tables get room first: a child that
         * cannot store its supervisor's monitor dies without a Down (the
         * known bug of test_core_paths.c) */
        assert_int_equal(rusm_sup_which_children(e.rt, sup, ci, 4, &n), 0);
        for (size_t i = 0; i < n && i < 4; i++) {
          rusm_ref r = watch(&e, ci[i].pid);
          t_ping(&e, ci[i].pid);
          assert_int_equal(rusm_demonitor(e.me, r, RUSM_DEMONITOR_FLUSH), 1);
        }
      }
      rusm_spawn_opts so;
      rusm_spawn_opts_init(&so);
      rusm_ref ref;
      so.monitor = true;
      so.monitor_ref = &ref;
      so.link = (k & 1) != 0;
      int rc = 0;
      rusm__test_fail_one_alloc(k);
      switch ((oop)op) {
      case O_START:
        rc = rusm_sup_start(e.rt, &f, specs, 2, &so, &sup);
        break;
      case O_START_KID:
        rc = rusm_sup_start_child(e.rt, sup, &specs[0], &p);
        break;
      case O_WHICH:
        rc = rusm_sup_which_children(e.rt, sup, ci, 4, &n);
        break;
      case O_TERMINATE:
        rc = rusm_sup_terminate_child(e.rt, sup, "a");
        break;
      case O_DYN_START:
        rc = rusm_dynsup_start_child(e.rt, sup, &q, &p);
        break;
      case O_DYN_STOP:
        rc = rusm_sup_stop(e.rt, sup, T_GUARD_MS);
        break;
      case O__COUNT:
        break;
      }
      rusm__test_fail_allocs(-1);
      if (rc != 0 && rc != RUSM_ENOMEM && rc != RUSM_ENOPROC)
        fail_msg("op %d, k %d: %s", op, k, rusm_err_name(rc));
      if (rc == RUSM_ENOMEM)
        nomem[op]++;
      if (sup != RUSM_PID_NONE && rusm_is_alive(e.rt, sup))
        assert_int_equal(rusm_sup_stop(e.rt, sup, T_GUARD_MS), 0);
      kill_all_but_me(&e);
      drain_mine(&e);
      t_assert_no_failures();
    }
    if (nomem[op] == 0)
      fail_msg("op %d never saw RUSM_ENOMEM", op);
  }
  /* the runtime still works */
  rusm_pid_t sup = RUSM_PID_NONE;
  assert_int_equal(rusm_sup_start(e.rt, NULL, specs, 2, NULL, &sup), 0);
  assert_int_equal(counts(&e, sup).active, 2);
  stop_sup(&e, sup);
  t_wait_idle(&e);
  drain_mine(&e);
  t_stop(&e);
}

typedef struct ostart {
  rusm_pid_t test;
  int64_t k;
  const rusm_child_spec *specs;
  size_t n;
  bool link;
} ostart;

typedef struct rc_or_down {
  rusm_ref ref;
} rc_or_down;

static bool is_rc_or_down(const rusm_msg *m, void *arg) {
  rc_or_down *a = arg;
  return rusm_msg_tag(m) == TAG_RC || down_ref(m, &a->ref);
}

/* Arms the failure and starts a supervisor; reports {rc, pid}. */
static void oom_starter(rusm_proc *self, void *arg) {
  ostart *a = arg;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_trap_exit(self, true);
  rusm_spawn_opts so;
  rusm_spawn_opts_init(&so);
  rusm_ref ref;
  so.link = a->link;
  so.monitor = true;
  so.monitor_ref = &ref;
  rusm_pid_t sup = RUSM_PID_NONE;
  rusm__test_fail_one_alloc(a->k);
  int64_t out[2];
  out[0] = rusm_sup_start(rt, NULL, a->specs, a->n, &so, &sup);
  rusm__test_fail_allocs(-1);
  out[1] = (int64_t)sup;
  if (out[0] == 0)
    T_CHECK(rusm_sup_stop(rt, sup, -1) == 0);
  T_CHECK(rusm_send(rt, a->test, TAG_RC, out, sizeof out) == 0);
}

/* The start handshake with one scheduler: the starter runs until it waits
 * for the answer, then the supervisor runs, so the k-th allocation is the
 * same one in every run and the sweep reaches each of the supervisor's
 * own allocations (its state, its exit hook, its child table ...). */
static void test_oom_start_one_scheduler(void **state) {
  (void)state;
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = 1;
  t_env e;
  t_start_opts(&e, &o);
  wcfg q;
  wcfg_init(&q, &e, 'Q');
  q.quiet = q.no_up = true;
  rusm_child_spec specs[2] = {wspec("a", &q, RUSM_PERMANENT, 1000),
                              wspec("b", &q, RUSM_TRANSIENT, 1000)};
  int seen[4] = {0, 0, 0, 0}; /* 0, ENOMEM, ENOPROC, starter died */
  for (int k = 0; k < 40; k++) {
    ostart a = {e.pid, k, specs, 2, (k & 1) != 0};
    rusm_spawn_opts so;
    rusm_spawn_opts_init(&so);
    rusm_ref ref = 0;
    so.monitor = true;
    so.monitor_ref = &ref;
    rusm_pid_t p;
    assert_int_equal(rusm_spawn_stackful(e.rt, oom_starter, &a, &so, &p), 0);
    /* the report, or the starter's end: a process that cannot store a
     * link or monitor made to it (its table) exits {custom, "enomem"} */
    rc_or_down rd = {ref};
    rusm_filter f = {0, 0, is_rc_or_down, &rd};
    rusm_msg *m = t_recv(&e, &f);
    if (rusm_msg_tag(m) == TAG_RC) {
      int64_t out[2];
      memcpy(out, rusm_msg_data(m), sizeof out);
      if (out[0] == 0)
        seen[0]++;
      else if (out[0] == RUSM_ENOMEM)
        seen[1]++;
      else if (out[0] == RUSM_ENOPROC)
        seen[2]++;
      else
        fail_msg("k %d: %s", k, rusm_err_name((int)out[0]));
      rusm_msg_free(m);
      m = NULL;
      wait_down(&e, ref);
    } else {
      rusm_down_info d;
      assert_int_equal(rusm_msg_down(m, &d), 0);
      assert_int_equal(d.reason.code, RUSM_EXIT_CUSTOM);
      assert_int_equal(d.reason.len, 6);
      assert_memory_equal(d.reason.data, "enomem", 6);
      seen[3]++;
    }
    rusm_msg_free(m);
    kill_all_but_me(&e);
    drain_mine(&e);
    t_assert_no_failures();
  }
  assert_true(seen[0] > 0 && seen[1] > 0);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* REGRESSIONS                                                         */
/* ------------------------------------------------------------------ */

/*
 * Regression (a core bug, fixed): a supervisor waits forever for a Down lost to
 * an allocation failure. The child's Down (allocated on the child's way out)
 * fails; stop_child() waits shutdown_ms, kills (RUSM_ENOPROC: the child is
 * gone) and then waits for the Down again with no limit, so the supervisor
 * and its caller hang for good. Expected: terminate_child returns.
 */
static void test_regression_sup_waits_for_lost_down(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  wcfg a;
  wcfg_init(&a, &e, 'A');
  a.exit_inject = true; /* the next allocation: its Down to the supervisor */
  rusm_child_spec sa = wspec("a", &a, RUSM_PERMANENT, 50);
  rusm_pid_t sup = start_static(&e, RUSM_ONE_FOR_ONE, 5, &sa, 1);
  expect_up(&e, 'A');
  job term;
  job_init(&term, &e, sup, C_TERMINATE);
  term.id = "a";
  job_spawn(&e, &term);
  expect_gone(&e, 'A', RUSM_EXIT_SHUTDOWN);
  rusm_filter f = rusm_filter_tag(TAG_RC);
  f.pred = is_job;
  f.pred_arg = &term;
  rusm_msg *m = NULL;
  int rc = rusm_receive(e.me, &f, 3000, &m);
  if (rc != 0)
    fail_msg("regression: terminate_child never returns: the supervisor "
             "waits forever for a Down lost to an allocation failure");
  rusm_msg_free(m);
  assert_int_equal(term.rc, 0);
  stop_sup(&e, sup);
  t_wait_idle(&e);
  t_stop(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_api_errors),
      cmocka_unit_test(test_stop_timeout),
      cmocka_unit_test(test_start_returns_dead_pid),
      cmocka_unit_test(test_declines_and_start_errors),
      cmocka_unit_test(test_failed_restarts_all_strategies),
      cmocka_unit_test(test_retry_after_delete_is_ignored),
      cmocka_unit_test(test_dynamic_pending_restart),
      cmocka_unit_test(test_intensity_window_slides),
      cmocka_unit_test(test_terminate_races_exit),
      cmocka_unit_test(test_dynamic_shutdown_deadline),
      cmocka_unit_test(test_dying_mid_call),
      cmocka_unit_test(test_which_children_caps),
      cmocka_unit_test(test_table_full_and_closing),
      cmocka_unit_test(test_starter_killed_mid_handshake),
      cmocka_unit_test(test_call_protocol),
      cmocka_unit_test(test_oom_targeted),
      cmocka_unit_test(test_oom_sweeps),
      cmocka_unit_test(test_oom_start_one_scheduler),
      cmocka_unit_test(test_regression_sup_waits_for_lost_down),
  };
  return T_RUN(tests);
}
