// ctest-labels: concurrent
/*
 * Unit tests: links, monitors, trap_exit and exit signals (signal.c), one
 * test per row of the exit-signal table in DESIGN.md (docs/exit-signals.md),
 * then cascades, spawn_link / spawn_monitor atomicity, unlink, monitors,
 * Exit and Down as mailbox messages, context errors.
 *
 * Most tests drive "puppets": processes (stackless or stackful, the same
 * protocol) that run commands sent by the test thread (link, monitor, trap,
 * exit, stop ...) and reply to each, and that forward every Exit or Down
 * message they receive to the test thread as a report. A reply is the
 * handshake: whatever signal a command sent (a link, an exit) is queued at
 * its target before the reply leaves, so it precedes anything the test
 * thread sends after reading the reply. The test thread monitors every
 * puppet, so each death is observed as a Down message with its reason.
 */
#include "support.h"

#include <pthread.h>

/* ------------------------------------------------------------------ */
/* Puppets: protocol                                                   */
/* ------------------------------------------------------------------ */

#define S_TAG_CMD UINT64_C(0x3100000000000001)
#define S_TAG_REPLY UINT64_C(0x3100000000000002)
#define S_TAG_REPORT UINT64_C(0x3100000000000003)
#define S_TAG_USER UINT64_C(0x3100000000000004)
#define S_TAG_DONE UINT64_C(0x3100000000000005)
#define S_TAG_NEVER UINT64_C(0x31000000000000ff) /* nobody sends it */

#define DETAIL_MAX 200

enum {
  K_SL = 0, /* stackless */
  K_SF = 1  /* stackful */
};

enum s_op {
  OP_PING = 0,
  OP_LINK,      /* arg: pid */
  OP_UNLINK,    /* arg: pid */
  OP_MONITOR,   /* arg: pid; reply value: ref */
  OP_DEMONITOR, /* arg: ref, code: flags */
  OP_TRAP,      /* code: on; reply rc: previous setting */
  OP_EXIT,      /* rusm_exit(arg, {code, detail}) */
  OP_STOP,      /* exit with {code, detail} (no reply) */
  OP_SEND,      /* sends detail with S_TAG_USER to arg */
  OP_MON_DEMON, /* monitor arg, (code & 2: fetch the mailbox), then
                 * demonitor with flags code & 1; value: the ref */
  /* a signal to arg, then at once a STOP {code, detail} command to arg:
   * the signal must act first */
  OP_LINK_STOP,
  OP_MONITOR_STOP, /* value: the ref */
  OP_UNLINK_STOP
};

typedef struct s_cmd {
  uint32_t op;
  int32_t code;
  uint64_t seq;
  uint64_t arg;
  uint32_t len;
  uint8_t detail[DETAIL_MAX];
} s_cmd;

typedef struct s_reply {
  uint64_t seq;
  int64_t rc;
  uint64_t value;
} s_reply;

/* What a puppet forwards of each Exit / Down message it receives. */
typedef struct s_report {
  rusm_pid_t who;      /* the puppet */
  uint64_t tag;        /* RUSM_TAG_EXIT or RUSM_TAG_DOWN */
  rusm_pid_t msg_from; /* rusm_msg_from() of the message */
  rusm_pid_t from;     /* Exit: from; Down: pid */
  rusm_ref ref;        /* Down: ref */
  int32_t code;
  uint32_t len;
  int32_t cross_rc; /* the other decoder on the same message (EINVAL) */
  uint32_t _pad;
  uint8_t detail[DETAIL_MAX];
} s_report;

static void puppet_report(rusm_proc *self, rusm_pid_t owner,
                          const rusm_msg *m) {
  s_report r;
  memset(&r, 0, sizeof r);
  r.who = rusm_self(self);
  r.tag = rusm_msg_tag(m);
  r.msg_from = rusm_msg_from(m);
  rusm_reason why = RUSM_REASON_NORMAL;
  rusm_exit_info x;
  rusm_down_info d;
  if (r.tag == RUSM_TAG_EXIT) {
    int rc = rusm_msg_exit(m, &x);
    T_CHECK(rc == 0);
    r.from = x.from;
    why = x.reason;
    r.cross_rc = rusm_msg_down(m, &d);
  } else {
    int rc = rusm_msg_down(m, &d);
    T_CHECK(rc == 0);
    r.from = d.pid;
    r.ref = d.ref;
    why = d.reason;
    r.cross_rc = rusm_msg_exit(m, &x);
  }
  r.code = (int32_t)why.code;
  r.len = why.len;
  T_CHECK(why.len <= DETAIL_MAX);
  T_CHECK((why.len == 0) == (why.data == NULL));
  if (why.len && why.len <= DETAIL_MAX)
    memcpy(r.detail, why.data, why.len);
  int rc = rusm_send(rusm_proc_rt(self), owner, S_TAG_REPORT, &r, sizeof r);
  T_CHECK(rc == 0);
}

/* Handles one message. True when the puppet must stop with *why (whose
 * bytes are copied into buf, which outlives the message). */
static bool puppet_do(rusm_proc *self, rusm_pid_t owner, rusm_msg *m,
                      rusm_reason *why, uint8_t *buf) {
  rusm_rt *rt = rusm_proc_rt(self);
  uint64_t tag = rusm_msg_tag(m);
  if (tag == RUSM_TAG_EXIT || tag == RUSM_TAG_DOWN) {
    puppet_report(self, owner, m);
    return false;
  }
  if (tag != S_TAG_CMD || rusm_msg_len(m) != sizeof(s_cmd))
    return false;
  s_cmd c;
  memcpy(&c, rusm_msg_data(m), sizeof c);
  T_CHECK(c.len <= DETAIL_MAX);
  rusm_reason reason = {(rusm_exit_code)c.code, c.len, c.len ? c.detail : NULL};
  s_reply r = {c.seq, 0, 0};
  rusm_ref ref = 0;
  switch (c.op) {
  case OP_PING:
    break;
  case OP_LINK:
    r.rc = rusm_link(self, c.arg);
    break;
  case OP_UNLINK:
    r.rc = rusm_unlink(self, c.arg);
    break;
  case OP_MONITOR:
    r.rc = rusm_monitor(self, c.arg, &ref);
    r.value = ref;
    break;
  case OP_DEMONITOR:
    r.rc = rusm_demonitor(self, c.arg, (unsigned)c.code);
    break;
  case OP_TRAP:
    r.rc = rusm_trap_exit(self, c.code != 0);
    break;
  case OP_EXIT:
    r.rc = rusm_exit(rt, c.arg, reason);
    break;
  case OP_SEND:
    r.rc = rusm_send(rt, c.arg, S_TAG_USER, c.detail, c.len);
    break;
  case OP_MON_DEMON:
    r.rc = rusm_monitor(self, c.arg, &ref);
    r.value = ref;
    if (r.rc == 0 && (c.code & 2)) {
      /* fetches the outer queue: a queued Down becomes a message */
      rusm_filter never = rusm_filter_tag(S_TAG_NEVER);
      rusm_msg *x = NULL;
      int rc = rusm_try_receive(self, &never, &x);
      T_CHECK(rc == RUSM_ETIMEDOUT);
    }
    if (r.rc == 0)
      r.rc = rusm_demonitor(self, ref, (unsigned)c.code & 1u);
    break;
  case OP_LINK_STOP:
  case OP_MONITOR_STOP:
  case OP_UNLINK_STOP: {
    if (c.op == OP_LINK_STOP)
      r.rc = rusm_link(self, c.arg);
    else if (c.op == OP_UNLINK_STOP)
      r.rc = rusm_unlink(self, c.arg);
    else
      r.rc = rusm_monitor(self, c.arg, &ref);
    r.value = ref;
    s_cmd stop = c;
    stop.op = OP_STOP;
    stop.seq = 0;
    int rc = rusm_send(rt, c.arg, S_TAG_CMD, &stop, sizeof stop);
    T_CHECK(rc == 0);
    break;
  }
  case OP_STOP:
    if (c.len)
      memcpy(buf, c.detail, c.len);
    *why = reason;
    why->data = c.len ? buf : NULL;
    return true;
  default:
    T_CHECK(!"unknown op");
    break;
  }
  int rc = rusm_send(rt, rusm_msg_from(m), S_TAG_REPLY, &r, sizeof r);
  T_CHECK(rc == 0);
  return false;
}

typedef struct sl_puppet {
  rusm_pid_t owner;
  uint8_t stop_detail[DETAIL_MAX]; /* the stop reason's bytes */
} sl_puppet;

static rusm_next sl_puppet_init(rusm_proc *self, void **state) {
  (void)self;
  (void)state;
  return rusm_next_wait();
}

static rusm_next sl_puppet_handle(rusm_proc *self, void *state, rusm_msg *m) {
  sl_puppet *pp = state;
  rusm_reason why;
  if (m && puppet_do(self, pp->owner, m, &why, pp->stop_detail))
    return rusm_next_stop(why);
  return rusm_next_wait();
}

static void sl_puppet_terminate(rusm_proc *self, void *state,
                                const rusm_reason *why) {
  (void)self;
  (void)why;
  free(state);
}

static const rusm_stackless_ops sl_puppet_ops = {
    sl_puppet_init, sl_puppet_handle, sl_puppet_terminate};

static void sf_puppet(rusm_proc *self, void *arg) {
  rusm_pid_t owner = (rusm_pid_t)(uintptr_t)arg;
  uint8_t buf[DETAIL_MAX];
  for (;;) {
    rusm_msg *m = NULL;
    int rc = rusm_receive(self, NULL, -1, &m);
    T_CHECK(rc == 0);
    if (rc != 0)
      return;
    rusm_reason why;
    bool stop = puppet_do(self, owner, m, &why, buf);
    rusm_msg_free(m);
    if (stop) {
      if (why.code == RUSM_EXIT_NORMAL && why.len == 0)
        return; /* returning is exiting normal */
      rusm_exit_self(self, why);
      T_CHECK(!"rusm_exit_self returned");
      return;
    }
  }
}

/* ------------------------------------------------------------------ */
/* Puppets: the test thread's side                                     */
/* ------------------------------------------------------------------ */

typedef struct pup {
  rusm_pid_t pid;
  rusm_ref ref; /* the test thread's monitor (spawn_monitor) */
  int kind;
} pup;

typedef struct s_why {
  int32_t code;
  uint32_t len;
  uint8_t detail[DETAIL_MAX];
} s_why;

static int spawn_kind(rusm_rt *rt, int kind, rusm_pid_t owner,
                      const rusm_spawn_opts *o, rusm_pid_t *out) {
  if (kind == K_SF)
    return rusm_spawn_stackful(rt, sf_puppet, (void *)(uintptr_t)owner, o, out);
  sl_puppet *pp = calloc(1, sizeof *pp);
  if (pp == NULL)
    return RUSM_ENOMEM;
  pp->owner = owner;
  int rc = rusm_spawn_stackless(rt, &sl_puppet_ops, pp, o, out);
  if (rc != 0)
    free(pp);
  return rc;
}

/* A puppet reporting to the test thread, monitored by it. */
static pup puppet(t_env *e, int kind) {
  pup p = {RUSM_PID_NONE, 0, kind};
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.monitor = true;
  o.monitor_ref = &p.ref;
  int rc = spawn_kind(e->rt, kind, e->pid, &o, &p.pid);
  if (rc != 0)
    fail_msg("spawn puppet: %s", rusm_err_name(rc));
  assert_true(p.ref != 0);
  return p;
}

static s_cmd cmd(uint32_t op, uint64_t arg) {
  s_cmd c;
  memset(&c, 0, sizeof c);
  c.op = op;
  c.arg = arg;
  return c;
}

static s_cmd cmd_reason(uint32_t op, uint64_t arg, rusm_exit_code code,
                        const void *detail, uint32_t len) {
  s_cmd c = cmd(op, arg);
  c.code = (int32_t)code;
  assert_true(len <= DETAIL_MAX);
  c.len = len;
  if (len)
    memcpy(c.detail, detail, len);
  return c;
}

static uint64_t s_seq;

static void cast(t_env *e, rusm_pid_t to, s_cmd c) {
  c.seq = ++s_seq;
  int rc = rusm_send(e->rt, to, S_TAG_CMD, &c, sizeof c);
  assert_int_equal(rc, 0);
}

static bool is_reply(const rusm_msg *m, void *arg) {
  s_reply r;
  if (rusm_msg_len(m) != sizeof r)
    return false;
  memcpy(&r, rusm_msg_data(m), sizeof r);
  return r.seq == *(const uint64_t *)arg;
}

/* Sends a command and waits for its reply: returns rc (value in *value). */
static int64_t call(t_env *e, pup p, s_cmd c, uint64_t *value) {
  cast(e, p.pid, c);
  uint64_t seq = s_seq;
  rusm_filter f = rusm_filter_tag(S_TAG_REPLY);
  f.pred = is_reply;
  f.pred_arg = &seq;
  rusm_msg *m = t_recv(e, &f);
  s_reply r;
  memcpy(&r, rusm_msg_data(m), sizeof r);
  rusm_msg_free(m);
  if (value)
    *value = r.value;
  return r.rc;
}

/* A round trip: p has acted on every signal queued before this call. */
static void ping(t_env *e, pup p) {
  assert_int_equal(call(e, p, cmd(OP_PING, 0), NULL), 0);
}

static int64_t p_link(t_env *e, pup p, rusm_pid_t to) {
  return call(e, p, cmd(OP_LINK, to), NULL);
}
static int64_t p_unlink(t_env *e, pup p, rusm_pid_t to) {
  return call(e, p, cmd(OP_UNLINK, to), NULL);
}
static rusm_ref p_monitor(t_env *e, pup p, rusm_pid_t to) {
  uint64_t ref = 0;
  assert_int_equal(call(e, p, cmd(OP_MONITOR, to), &ref), 0);
  assert_true(ref != 0);
  return ref;
}
static int64_t p_demonitor(t_env *e, pup p, rusm_ref ref, unsigned flags) {
  s_cmd c = cmd(OP_DEMONITOR, ref);
  c.code = (int32_t)flags;
  return call(e, p, c, NULL);
}
static void p_trap(t_env *e, pup p, bool on) {
  s_cmd c = cmd(OP_TRAP, 0);
  c.code = on;
  assert_int_equal(call(e, p, c, NULL), !on); /* previous setting */
}
static int64_t p_exit(t_env *e, pup p, rusm_pid_t to, rusm_exit_code code,
                      const void *detail, uint32_t len) {
  return call(e, p, cmd_reason(OP_EXIT, to, code, detail, len), NULL);
}
static void p_stop(t_env *e, pup p, rusm_exit_code code, const void *detail,
                   uint32_t len) {
  cast(e, p.pid, cmd_reason(OP_STOP, 0, code, detail, len));
}

static bool is_down_ref(const rusm_msg *m, void *arg) {
  rusm_down_info d;
  return rusm_msg_down(m, &d) == 0 && d.ref == *(const rusm_ref *)arg;
}

static s_why why_of(rusm_reason r) {
  s_why w;
  memset(&w, 0, sizeof w);
  w.code = (int32_t)r.code;
  w.len = r.len;
  assert_true(r.len <= DETAIL_MAX);
  assert_true((r.len == 0) == (r.data == NULL));
  if (r.len)
    memcpy(w.detail, r.data, r.len);
  return w;
}

/* Waits for the Down of the monitor ref (pid: the process it watches). */
static s_why wait_down_ref(t_env *e, rusm_ref ref, rusm_pid_t pid) {
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  f.pred = is_down_ref;
  f.pred_arg = &ref;
  rusm_msg *m = t_recv(e, &f);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_true(d.ref == ref);
  assert_true(d.pid == pid);
  assert_true(rusm_msg_from(m) == pid);
  s_why w = why_of(d.reason);
  rusm_msg_free(m);
  return w;
}

/* Waits for p's death (the test thread's monitor). */
static s_why wait_down(t_env *e, pup p) {
  return wait_down_ref(e, p.ref, p.pid);
}

static void check_why(const s_why *w, rusm_exit_code code, const void *detail,
                      uint32_t len) {
  if (w->code != (int32_t)code)
    fail_msg("reason code %s, expected %s",
             rusm_exit_code_name((rusm_exit_code)w->code),
             rusm_exit_code_name(code));
  assert_int_equal(w->len, len);
  if (len)
    assert_memory_equal(w->detail, detail, len);
}

static void expect_down(t_env *e, pup p, rusm_exit_code code,
                        const void *detail, uint32_t len) {
  s_why w = wait_down(e, p);
  check_why(&w, code, detail, len);
}

static void kill_pup(t_env *e, pup p) {
  assert_int_equal(rusm_kill(e->rt, p.pid), 0);
  expect_down(e, p, RUSM_EXIT_KILLED, NULL, 0);
}

/* No Down of the test thread's monitor on p is queued now. */
static void expect_no_down(t_env *e, pup p) {
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  f.pred = is_down_ref;
  f.pred_arg = &p.ref;
  t_expect_nothing(e, &f);
}

typedef struct report_sel {
  rusm_pid_t who;
  uint64_t tag; /* 0: any */
  rusm_pid_t from;
  rusm_ref ref;
  bool any_from; /* do not look at from / ref */
} report_sel;

static bool is_report(const rusm_msg *m, void *arg) {
  const report_sel *s = arg;
  s_report r;
  if (rusm_msg_len(m) != sizeof r)
    return false;
  memcpy(&r, rusm_msg_data(m), sizeof r);
  if (r.who != s->who || (s->tag && r.tag != s->tag))
    return false;
  if (s->any_from)
    return true;
  if (r.tag == RUSM_TAG_DOWN && s->ref && r.ref != s->ref)
    return false;
  return r.from == s->from;
}

static s_report wait_report(t_env *e, report_sel sel) {
  rusm_filter f = rusm_filter_tag(S_TAG_REPORT);
  f.pred = is_report;
  f.pred_arg = &sel;
  rusm_msg *m = t_recv(e, &f);
  s_report r;
  memcpy(&r, rusm_msg_data(m), sizeof r);
  rusm_msg_free(m);
  assert_int_equal(r.cross_rc, RUSM_EINVAL);
  return r;
}

/* Waits for p's report of an Exit message from `from` and checks it. */
static void expect_exit_report(t_env *e, pup p, rusm_pid_t from,
                               rusm_exit_code code, const void *detail,
                               uint32_t len) {
  report_sel sel = {p.pid, RUSM_TAG_EXIT, from, 0, false};
  s_report r = wait_report(e, sel);
  assert_true(r.from == from);
  assert_true(r.msg_from == from);
  s_why w = {r.code, r.len, {0}};
  memcpy(w.detail, r.detail, sizeof w.detail);
  check_why(&w, code, detail, len);
}

/* Waits for p's report of the Down of its monitor ref on pid. */
static void expect_down_report(t_env *e, pup p, rusm_ref ref, rusm_pid_t pid,
                               rusm_exit_code code, const void *detail,
                               uint32_t len) {
  report_sel sel = {p.pid, RUSM_TAG_DOWN, pid, ref, false};
  s_report r = wait_report(e, sel);
  assert_true(r.ref == ref);
  assert_true(r.from == pid);
  assert_true(r.msg_from == pid);
  s_why w = {r.code, r.len, {0}};
  memcpy(w.detail, r.detail, sizeof w.detail);
  check_why(&w, code, detail, len);
}

/* p received no Exit / Down so far: a ping first, so that every signal
 * queued before this call has been acted on (and reported). */
static void expect_no_report(t_env *e, pup p) {
  ping(e, p);
  report_sel sel = {p.pid, 0, 0, 0, true};
  rusm_filter f = rusm_filter_tag(S_TAG_REPORT);
  f.pred = is_report;
  f.pred_arg = &sel;
  t_expect_nothing(e, &f);
}

/* Every process has exited (only the test thread is left): the tables,
 * the count and the metrics agree. Then stops the runtime. */
static void finish(t_env *e) {
  t_wait_idle(e);
  assert_int_equal(rusm_process_count(e->rt), 1);
  rusm_metrics *m = t_metrics(e->rt);
  assert_int_equal(m->live, 1);
  assert_int_equal(m->spawned - m->exited, 1);
  t_stop(e);
}

static bool is_exit_from(const rusm_msg *m, void *arg) {
  rusm_exit_info x;
  return rusm_msg_exit(m, &x) == 0 && x.from == *(const rusm_pid_t *)arg;
}

/* The test thread (trapping) receives the Exit message from `from`. */
static s_why recv_exit_from(t_env *e, rusm_pid_t from, int64_t timeout_ms) {
  rusm_filter f = rusm_filter_tag(RUSM_TAG_EXIT);
  f.pred = is_exit_from;
  f.pred_arg = &from;
  rusm_msg *m = NULL;
  int rc = rusm_receive(e->me, &f, timeout_ms, &m);
  if (rc != 0)
    fail_msg("no Exit message from the process: %s", rusm_err_name(rc));
  rusm_exit_info x;
  assert_int_equal(rusm_msg_exit(m, &x), 0);
  assert_true(rusm_msg_from(m) == from);
  s_why w = why_of(x.reason);
  rusm_msg_free(m);
  return w;
}

/* Runs fn(arg) on a plain pthread (not a process, not attached). */
typedef struct s_thread {
  void (*fn)(void *arg);
  void *arg;
} s_thread;

static void *s_thread_main(void *a) {
  s_thread *t = a;
  t->fn(t->arg);
  return NULL;
}

static void run_in_thread(void (*fn)(void *arg), void *arg) {
  s_thread t = {fn, arg};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, s_thread_main, &t), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
}

/* Reasons with bytes that a C string would lose. */
static const uint8_t BIN[] = {'b', 'o', 'o', 'm', 0, 0xff, 0x80, '\n', 'x'};
static const char PAYLOAD[] = "shutdown payload";
#define PAYLOAD_LEN ((uint32_t)(sizeof PAYLOAD - 1))

static uint8_t LONG_DETAIL[DETAIL_MAX];

static void fill_long_detail(void) {
  for (size_t i = 0; i < sizeof LONG_DETAIL; i++)
    LONG_DETAIL[i] = (uint8_t)(i * 7 + 3);
}

/* Tests run for both body kinds: fn(K_SL) and fn(K_SF). */
#define BOTH_KINDS(fn)                                                         \
  static void fn##_stackless(void **state) {                                   \
    (void)state;                                                               \
    fn(K_SL);                                                                  \
  }                                                                            \
  static void fn##_stackful(void **state) {                                    \
    (void)state;                                                               \
    fn(K_SF);                                                                  \
  }

#define BOTH_TESTS(fn)                                                         \
  cmocka_unit_test(fn##_stackless), cmocka_unit_test(fn##_stackful)

/* ------------------------------------------------------------------ */
/* The table, row by row                                               */
/* ------------------------------------------------------------------ */

/* Row 1: a linked process exits normal. */
static void link_normal_exit(int kind) {
  t_env e;
  t_start(&e, 0);
  /* not trapping: nothing happens */
  pup a = puppet(&e, kind), b = puppet(&e, !kind);
  assert_int_equal(p_link(&e, a, b.pid), 0);
  p_stop(&e, b, RUSM_EXIT_NORMAL, NULL, 0);
  expect_down(&e, b, RUSM_EXIT_NORMAL, NULL, 0);
  expect_no_report(&e, a); /* alive, and nothing arrived */
  expect_no_down(&e, a);

  /* trapping: Exit { from, normal } */
  pup c = puppet(&e, kind), d = puppet(&e, !kind);
  p_trap(&e, c, true);
  assert_int_equal(p_link(&e, c, d.pid), 0);
  p_stop(&e, d, RUSM_EXIT_NORMAL, NULL, 0);
  expect_down(&e, d, RUSM_EXIT_NORMAL, NULL, 0);
  expect_exit_report(&e, c, d.pid, RUSM_EXIT_NORMAL, NULL, 0);
  expect_no_report(&e, c); /* exactly one */

  kill_pup(&e, a);
  kill_pup(&e, c);
  finish(&e);
}
BOTH_KINDS(link_normal_exit)

/* Row 2: a linked process exits with R != normal. */
static void link_abnormal_exit(int kind) {
  t_env e;
  t_start(&e, 0);
  /* not trapping: exits with R, detail bytes preserved */
  pup a = puppet(&e, kind), b = puppet(&e, !kind);
  assert_int_equal(p_link(&e, a, b.pid), 0);
  p_stop(&e, b, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, b, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, a, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);

  /* a long detail, through the other direction of the link */
  pup a2 = puppet(&e, kind), b2 = puppet(&e, !kind);
  assert_int_equal(p_link(&e, b2, a2.pid), 0);
  p_stop(&e, b2, RUSM_EXIT_CUSTOM, LONG_DETAIL, DETAIL_MAX);
  expect_down(&e, a2, RUSM_EXIT_CUSTOM, LONG_DETAIL, DETAIL_MAX);
  expect_down(&e, b2, RUSM_EXIT_CUSTOM, LONG_DETAIL, DETAIL_MAX);

  /* trapping: Exit { from, R } with the same bytes */
  pup c = puppet(&e, kind), d = puppet(&e, !kind);
  p_trap(&e, c, true);
  assert_int_equal(p_link(&e, c, d.pid), 0);
  p_stop(&e, d, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, d, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_exit_report(&e, c, d.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_no_report(&e, c);
  expect_no_down(&e, c);

  /* a process may end with reason killed itself: it propagates like any
   * abnormal reason (trappable, kills the non-trapping) */
  pup f = puppet(&e, kind), g = puppet(&e, !kind);
  assert_int_equal(p_link(&e, f, g.pid), 0);
  assert_int_equal(p_link(&e, c, g.pid), 0);
  p_stop(&e, g, RUSM_EXIT_KILLED, NULL, 0);
  expect_down(&e, g, RUSM_EXIT_KILLED, NULL, 0);
  expect_down(&e, f, RUSM_EXIT_KILLED, NULL, 0);
  expect_exit_report(&e, c, g.pid, RUSM_EXIT_KILLED, NULL, 0);

  kill_pup(&e, c);
  finish(&e);
}
BOTH_KINDS(link_abnormal_exit)

/* Row 3: exit(pid, kill), trapping or not: exits killed; links get killed. */
static void exit_kill(int kind) {
  t_env e;
  t_start(&e, 0);
  pup a = puppet(&e, kind);  /* not trapping */
  pup b = puppet(&e, kind);  /* trapping */
  pup c = puppet(&e, !kind); /* trapping, linked to a */
  pup d = puppet(&e, !kind); /* not trapping, linked to b */
  pup x = puppet(&e, !kind); /* sends exit signals */
  p_trap(&e, b, true);
  p_trap(&e, c, true);
  assert_int_equal(p_link(&e, c, a.pid), 0);
  assert_int_equal(p_link(&e, d, b.pid), 0);

  assert_int_equal(rusm_exit(e.rt, a.pid, RUSM_REASON_KILL), 0);
  expect_down(&e, a, RUSM_EXIT_KILLED, NULL, 0);
  expect_exit_report(&e, c, a.pid, RUSM_EXIT_KILLED, NULL, 0);

  /* from another process, to a trapping one */
  assert_int_equal(p_exit(&e, x, b.pid, RUSM_EXIT_KILL, NULL, 0), 0);
  expect_down(&e, b, RUSM_EXIT_KILLED, NULL, 0);
  expect_down(&e, d, RUSM_EXIT_KILLED, NULL, 0); /* killed propagates */
  expect_no_report(&e, x);

  /* the kill ignores detail bytes: the reason is killed, nothing else */
  pup f = puppet(&e, kind);
  p_trap(&e, f, true);
  assert_int_equal(
      rusm_exit(e.rt, f.pid,
                (rusm_reason){RUSM_EXIT_KILL, 3, (const uint8_t *)"abc"}),
      0);
  expect_down(&e, f, RUSM_EXIT_KILLED, NULL, 0);

  /* a trapping process killing itself */
  pup g = puppet(&e, kind);
  p_trap(&e, g, true);
  cast(&e, g.pid, cmd_reason(OP_EXIT, g.pid, RUSM_EXIT_KILL, NULL, 0));
  expect_down(&e, g, RUSM_EXIT_KILLED, NULL, 0);

  /* dead pids */
  assert_int_equal(rusm_kill(e.rt, a.pid), RUSM_ENOPROC);
  assert_int_equal(rusm_exit(e.rt, b.pid, RUSM_REASON_KILL), RUSM_ENOPROC);
  assert_int_equal(p_exit(&e, x, a.pid, RUSM_EXIT_KILL, NULL, 0), RUSM_ENOPROC);

  kill_pup(&e, c);
  kill_pup(&e, x);
  finish(&e);
}
BOTH_KINDS(exit_kill)

typedef struct exit_req {
  rusm_rt *rt;
  rusm_pid_t pid;
  rusm_reason reason;
  int rc;
} exit_req;

static void exit_in_thread(void *arg) {
  exit_req *r = arg;
  r->rc = rusm_exit(r->rt, r->pid, r->reason);
}

/* Row 4: exit(pid, normal) from another process: ignored unless trapping. */
static void exit_normal_from_other(int kind) {
  t_env e;
  t_start(&e, 0);
  pup a = puppet(&e, kind);  /* not trapping */
  pup b = puppet(&e, kind);  /* trapping */
  pup x = puppet(&e, !kind); /* another process */
  p_trap(&e, b, true);

  /* from the test thread (an attached process) */
  assert_int_equal(rusm_exit(e.rt, a.pid, RUSM_REASON_NORMAL), 0);
  expect_no_report(&e, a);
  expect_no_down(&e, a);
  assert_int_equal(rusm_exit(e.rt, b.pid, RUSM_REASON_NORMAL), 0);
  expect_exit_report(&e, b, e.pid, RUSM_EXIT_NORMAL, NULL, 0);

  /* from a process */
  assert_int_equal(p_exit(&e, x, a.pid, RUSM_EXIT_NORMAL, NULL, 0), 0);
  expect_no_report(&e, a);
  expect_no_down(&e, a);
  assert_int_equal(p_exit(&e, x, b.pid, RUSM_EXIT_NORMAL, NULL, 0), 0);
  expect_exit_report(&e, b, x.pid, RUSM_EXIT_NORMAL, NULL, 0);

  /* from a thread that is no process: the sender is RUSM_PID_NONE */
  exit_req r = {e.rt, a.pid, RUSM_REASON_NORMAL, -100};
  run_in_thread(exit_in_thread, &r);
  assert_int_equal(r.rc, 0);
  expect_no_report(&e, a);
  expect_no_down(&e, a);
  r.pid = b.pid;
  run_in_thread(exit_in_thread, &r);
  assert_int_equal(r.rc, 0);
  expect_exit_report(&e, b, RUSM_PID_NONE, RUSM_EXIT_NORMAL, NULL, 0);
  expect_no_report(&e, b);

  /* normal with detail bytes is still normal: ignored */
  assert_int_equal(
      rusm_exit(e.rt, a.pid,
                (rusm_reason){RUSM_EXIT_NORMAL, 2, (const uint8_t *)"ok"}),
      0);
  expect_no_report(&e, a);
  expect_no_down(&e, a);

  kill_pup(&e, a);
  kill_pup(&e, b);
  kill_pup(&e, x);
  finish(&e);
}
BOTH_KINDS(exit_normal_from_other)

/* Row 4, second half: exit(self, normal) exits normal (a trapping process
 * gets the message, as in Erlang); exit(self, R) likewise. */
static void exit_self(int kind) {
  t_env e;
  t_start(&e, 0);
  pup a = puppet(&e, kind);
  assert_int_equal(p_exit(&e, a, a.pid, RUSM_EXIT_NORMAL, NULL, 0), 0);
  expect_down(&e, a, RUSM_EXIT_NORMAL, NULL, 0);

  pup b = puppet(&e, kind);
  p_trap(&e, b, true);
  assert_int_equal(p_exit(&e, b, b.pid, RUSM_EXIT_NORMAL, NULL, 0), 0);
  expect_exit_report(&e, b, b.pid, RUSM_EXIT_NORMAL, NULL, 0);
  expect_no_down(&e, b);

  pup c = puppet(&e, kind);
  assert_int_equal(p_exit(&e, c, c.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN), 0);
  expect_down(&e, c, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);

  assert_int_equal(
      p_exit(&e, b, b.pid, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN), 0);
  expect_exit_report(&e, b, b.pid, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  expect_no_report(&e, b);
  kill_pup(&e, b);
  finish(&e);
}
BOTH_KINDS(exit_self)

/* Row 5: exit(pid, R), R neither normal nor kill: exits / message. */
static void exit_other_reason(int kind) {
  t_env e;
  t_start(&e, 0);
  pup x = puppet(&e, !kind);

  pup a = puppet(&e, kind);
  assert_int_equal(
      rusm_exit(e.rt, a.pid, (rusm_reason){RUSM_EXIT_CUSTOM, sizeof BIN, BIN}),
      0);
  expect_down(&e, a, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);

  pup b = puppet(&e, kind);
  p_trap(&e, b, true);
  assert_int_equal(
      rusm_exit(e.rt, b.pid, (rusm_reason){RUSM_EXIT_CUSTOM, sizeof BIN, BIN}),
      0);
  expect_exit_report(&e, b, e.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_no_down(&e, b);

  pup c = puppet(&e, kind);
  assert_int_equal(
      p_exit(&e, x, c.pid, RUSM_EXIT_CUSTOM, LONG_DETAIL, DETAIL_MAX), 0);
  expect_down(&e, c, RUSM_EXIT_CUSTOM, LONG_DETAIL, DETAIL_MAX);
  assert_int_equal(
      p_exit(&e, x, b.pid, RUSM_EXIT_CUSTOM, LONG_DETAIL, DETAIL_MAX), 0);
  expect_exit_report(&e, b, x.pid, RUSM_EXIT_CUSTOM, LONG_DETAIL, DETAIL_MAX);

  /* killed (not kill) is an ordinary, trappable reason */
  pup f = puppet(&e, kind);
  assert_int_equal(rusm_exit(e.rt, f.pid, RUSM_REASON_KILLED), 0);
  expect_down(&e, f, RUSM_EXIT_KILLED, NULL, 0);
  assert_int_equal(rusm_exit(e.rt, b.pid, RUSM_REASON_KILLED), 0);
  expect_exit_report(&e, b, e.pid, RUSM_EXIT_KILLED, NULL, 0);
  expect_no_report(&e, b);
  expect_no_down(&e, b);

  /* the exit signal reaches the target only; its sender is unaffected */
  expect_no_report(&e, x);
  kill_pup(&e, b);
  kill_pup(&e, x);
  finish(&e);
}
BOTH_KINDS(exit_other_reason)

/* Row 6: link to a pid that is already dead. */
static void link_dead_pid(int kind) {
  t_env e;
  t_start(&e, 0);
  pup dead = puppet(&e, !kind);
  kill_pup(&e, dead);
  const rusm_pid_t never[] = {
      rusm_pid_make(0, RUSM_PID_SLOT_MAX, 1),       /* slot never used */
      rusm_pid_make(9, 1, 1),                       /* another node */
      rusm_pid_make(0, rusm_pid_slot(dead.pid), 0), /* generation 0 */
  };

  /* not trapping: RUSM_ENOPROC, nothing else */
  pup a = puppet(&e, kind);
  assert_int_equal(p_link(&e, a, dead.pid), RUSM_ENOPROC);
  for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
    assert_int_equal(p_link(&e, a, never[i]), RUSM_ENOPROC);
  expect_no_report(&e, a);
  expect_no_down(&e, a);

  /* trapping: RUSM_ENOPROC and Exit { dead, noproc } */
  pup b = puppet(&e, kind);
  p_trap(&e, b, true);
  assert_int_equal(p_link(&e, b, dead.pid), RUSM_ENOPROC);
  expect_exit_report(&e, b, dead.pid, RUSM_EXIT_NOPROC, NULL, 0);
  for (size_t i = 0; i < sizeof never / sizeof never[0]; i++) {
    assert_int_equal(p_link(&e, b, never[i]), RUSM_ENOPROC);
    expect_exit_report(&e, b, never[i], RUSM_EXIT_NOPROC, NULL, 0);
  }
  expect_no_report(&e, b); /* exactly one each */

  /* linking to oneself does nothing */
  assert_int_equal(p_link(&e, a, a.pid), 0);

  /* the test thread: the Exit message is there at once */
  assert_false(rusm_trap_exit(e.me, true));
  assert_int_equal(rusm_link(e.me, dead.pid), RUSM_ENOPROC);
  s_why w = recv_exit_from(&e, dead.pid, 0);
  check_why(&w, RUSM_EXIT_NOPROC, NULL, 0);
  assert_true(rusm_trap_exit(e.me, false));
  assert_int_equal(rusm_link(e.me, dead.pid), RUSM_ENOPROC);
  rusm_filter ex = rusm_filter_tag(RUSM_TAG_EXIT);
  t_expect_nothing(&e, &ex);

  kill_pup(&e, a);
  kill_pup(&e, b);
  finish(&e);
}
BOTH_KINDS(link_dead_pid)

/* Row 7 (monitors): a monitor of a dead pid gets Down noproc at once. */
static void monitor_dead_pid(int kind) {
  t_env e;
  t_start(&e, 0);
  pup dead = puppet(&e, !kind);
  kill_pup(&e, dead);
  rusm_pid_t never = rusm_pid_make(0, RUSM_PID_SLOT_MAX - 1, 1);

  pup a = puppet(&e, kind);
  rusm_ref r1 = p_monitor(&e, a, dead.pid);
  expect_down_report(&e, a, r1, dead.pid, RUSM_EXIT_NOPROC, NULL, 0);
  rusm_ref r2 = p_monitor(&e, a, never);
  expect_down_report(&e, a, r2, never, RUSM_EXIT_NOPROC, NULL, 0);
  assert_true(r1 != r2);
  /* trap_exit changes nothing for monitors */
  p_trap(&e, a, true);
  rusm_ref r3 = p_monitor(&e, a, dead.pid);
  expect_down_report(&e, a, r3, dead.pid, RUSM_EXIT_NOPROC, NULL, 0);
  expect_no_report(&e, a);
  /* fired: nothing left to demonitor */
  assert_int_equal(p_demonitor(&e, a, r1, 0), 0);

  /* the test thread: queued by the time rusm_monitor returns */
  rusm_ref r4 = 0;
  assert_int_equal(rusm_monitor(e.me, dead.pid, &r4), 0);
  assert_true(r4 != 0);
  s_why w;
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  f.pred = is_down_ref;
  f.pred_arg = &r4;
  rusm_msg *m = NULL;
  assert_int_equal(rusm_receive(e.me, &f, 0, &m), 0);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_true(d.pid == dead.pid);
  w = why_of(d.reason);
  check_why(&w, RUSM_EXIT_NOPROC, NULL, 0);
  rusm_msg_free(m);
  assert_int_equal(rusm_demonitor(e.me, r4, 0), 0);

  kill_pup(&e, a);
  finish(&e);
}
BOTH_KINDS(monitor_dead_pid)

/* Reason shutdown with a payload, through every path. */
static void shutdown_payload(int kind) {
  t_env e;
  t_start(&e, 0);
  pup w = puppet(&e, !kind); /* trapping, linked, and a monitor holder */
  p_trap(&e, w, true);

  /* exits with it: link (non-trapping), link (trapping), monitor */
  pup a = puppet(&e, kind), b = puppet(&e, kind);
  assert_int_equal(p_link(&e, b, a.pid), 0);
  assert_int_equal(p_link(&e, w, a.pid), 0);
  rusm_ref ref = p_monitor(&e, w, a.pid);
  p_stop(&e, a, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  expect_down(&e, a, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  expect_down(&e, b, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  expect_exit_report(&e, w, a.pid, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  expect_down_report(&e, w, ref, a.pid, RUSM_EXIT_SHUTDOWN, PAYLOAD,
                     PAYLOAD_LEN);

  /* sent with exit/2 */
  pup c = puppet(&e, kind);
  assert_int_equal(rusm_exit(e.rt, c.pid,
                             (rusm_reason){RUSM_EXIT_SHUTDOWN, PAYLOAD_LEN,
                                           (const uint8_t *)PAYLOAD}),
                   0);
  expect_down(&e, c, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  assert_int_equal(rusm_exit(e.rt, w.pid,
                             (rusm_reason){RUSM_EXIT_SHUTDOWN, PAYLOAD_LEN,
                                           (const uint8_t *)PAYLOAD}),
                   0);
  expect_exit_report(&e, w, e.pid, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  /* and without bytes */
  assert_int_equal(rusm_exit(e.rt, w.pid, RUSM_REASON_SHUTDOWN), 0);
  expect_exit_report(&e, w, e.pid, RUSM_EXIT_SHUTDOWN, NULL, 0);
  expect_no_report(&e, w);
  kill_pup(&e, w);
  finish(&e);
}
BOTH_KINDS(shutdown_payload)

/* exit(kill) by a process on itself (rusm_exit_self / stop with code kill)
 * is, as Erlang's exit(kill), an ordinary reason for its links: trappable,
 * and the non-trapping exit with it (not killed). */
static void stop_with_kill_code(int kind) {
  t_env e;
  t_start(&e, 0);
  pup a = puppet(&e, kind), b = puppet(&e, !kind), c = puppet(&e, !kind);
  p_trap(&e, c, true);
  assert_int_equal(p_link(&e, b, a.pid), 0);
  assert_int_equal(p_link(&e, c, a.pid), 0);
  p_stop(&e, a, RUSM_EXIT_KILL, NULL, 0);
  expect_down(&e, a, RUSM_EXIT_KILL, NULL, 0);
  expect_down(&e, b, RUSM_EXIT_KILL, NULL, 0);
  expect_exit_report(&e, c, a.pid, RUSM_EXIT_KILL, NULL, 0);
  kill_pup(&e, c);
  finish(&e);
}
BOTH_KINDS(stop_with_kill_code)

/* ------------------------------------------------------------------ */
/* Cascades                                                            */
/* ------------------------------------------------------------------ */

#define CHAIN 100

/* n puppets, kinds alternating from `kind`, p[i] linked to p[i+1]. */
static void chain(t_env *e, pup *p, int n, int kind) {
  for (int i = 0; i < n; i++)
    p[i] = puppet(e, (kind + i) % 2);
  for (int i = 0; i + 1 < n; i++)
    assert_int_equal(p_link(e, p[i], p[i + 1].pid), 0);
}

static void expect_downs(t_env *e, const pup *p, int from, int to,
                         rusm_exit_code code, const void *detail,
                         uint32_t len) {
  for (int i = from; i < to; i++)
    expect_down(e, p[i], code, detail, len);
}

static void cascade_chain(int kind) {
  t_env e;
  t_start(&e, 0);
  pup p[CHAIN];

  /* kill the root: every link gets killed and passes it on */
  chain(&e, p, CHAIN, kind);
  assert_int_equal(rusm_kill(e.rt, p[0].pid), 0);
  expect_downs(&e, p, 0, CHAIN, RUSM_EXIT_KILLED, NULL, 0);

  /* a custom reason travels unchanged, bytes included */
  chain(&e, p, CHAIN, kind);
  p_stop(&e, p[0], RUSM_EXIT_CUSTOM, LONG_DETAIL, DETAIL_MAX);
  expect_downs(&e, p, 0, CHAIN, RUSM_EXIT_CUSTOM, LONG_DETAIL, DETAIL_MAX);

  /* from the middle, both ways */
  chain(&e, p, CHAIN, kind);
  assert_int_equal(rusm_exit(e.rt, p[CHAIN / 3].pid,
                             (rusm_reason){RUSM_EXIT_CUSTOM, sizeof BIN, BIN}),
                   0);
  expect_downs(&e, p, 0, CHAIN, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);

  /* a trapping process in the middle stops it and gets the message */
  int mid = CHAIN / 2;
  chain(&e, p, CHAIN, kind);
  p_trap(&e, p[mid], true);
  p_stop(&e, p[0], RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_downs(&e, p, 0, mid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_exit_report(&e, p[mid], p[mid - 1].pid, RUSM_EXIT_CUSTOM, BIN,
                     sizeof BIN);
  for (int i = mid; i < CHAIN; i++) {
    assert_true(rusm_is_alive(e.rt, p[i].pid));
    expect_no_down(&e, p[i]);
  }
  expect_no_report(&e, p[mid]);
  ping(&e, p[CHAIN - 1]);
  /* the link to the dead side is gone: linking again says noproc */
  assert_int_equal(p_link(&e, p[mid], p[mid - 1].pid), RUSM_ENOPROC);
  expect_exit_report(&e, p[mid], p[mid - 1].pid, RUSM_EXIT_NOPROC, NULL, 0);
  /* and the rest of the chain still holds: killed from the trapper on */
  assert_int_equal(rusm_kill(e.rt, p[mid].pid), 0);
  expect_downs(&e, p, mid, CHAIN, RUSM_EXIT_KILLED, NULL, 0);
  finish(&e);
}
BOTH_KINDS(cascade_chain)

#define TREE_BRANCH 3
#define TREE_DEPTH 4 /* levels: 1 + 3 + 9 + 27 = 40 nodes */
#define TREE_N 40

/* Node i's children are 3i+1 .. 3i+3 (heap order); parent links child. */
static void tree(t_env *e, pup *p, int kind) {
  for (int i = 0; i < TREE_N; i++)
    p[i] = puppet(e, (kind + i) % 2);
  for (int i = 1; i < TREE_N; i++)
    assert_int_equal(p_link(e, p[(i - 1) / TREE_BRANCH], p[i].pid), 0);
}

static bool in_subtree(int node, int root) {
  while (node > root)
    node = (node - 1) / TREE_BRANCH;
  return node == root;
}

static void cascade_tree(int kind) {
  t_env e;
  t_start(&e, 0);
  pup p[TREE_N];

  tree(&e, p, kind);
  assert_int_equal(rusm_kill(e.rt, p[0].pid), 0);
  expect_downs(&e, p, 0, TREE_N, RUSM_EXIT_KILLED, NULL, 0);

  /* a leaf's custom reason reaches the whole tree */
  tree(&e, p, kind);
  p_stop(&e, p[TREE_N - 1], RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_downs(&e, p, 0, TREE_N, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);

  /* a trapping inner node shields its subtree */
  tree(&e, p, kind);
  int t = 2; /* second child of the root */
  p_trap(&e, p[t], true);
  p_stop(&e, p[0], RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  for (int i = 0; i < TREE_N; i++)
    if (!in_subtree(i, t))
      expect_down(&e, p[i], RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  expect_exit_report(&e, p[t], p[0].pid, RUSM_EXIT_SHUTDOWN, PAYLOAD,
                     PAYLOAD_LEN);
  expect_no_report(&e, p[t]);
  for (int i = 0; i < TREE_N; i++)
    if (in_subtree(i, t)) {
      ping(&e, p[i]);
      expect_no_down(&e, p[i]);
    }
  assert_int_equal(rusm_kill(e.rt, p[t].pid), 0);
  for (int i = 0; i < TREE_N; i++)
    if (in_subtree(i, t))
      expect_down(&e, p[i], RUSM_EXIT_KILLED, NULL, 0);
  finish(&e);
}
BOTH_KINDS(cascade_tree)

/* ------------------------------------------------------------------ */
/* spawn_link / spawn_monitor atomicity                                */
/* ------------------------------------------------------------------ */

static const char EARLY[] = "early exit";
#define EARLY_LEN ((uint32_t)(sizeof EARLY - 1))

static rusm_next early_init(rusm_proc *self, void **state) {
  (void)self;
  (void)state;
  return rusm_next_stop(rusm_reason_str(EARLY));
}

static const rusm_stackless_ops early_ops = {early_init, t_unexpected_handle,
                                             NULL};

static void early_fn(rusm_proc *self, void *arg) {
  (void)arg;
  rusm_exit_self(self, rusm_reason_str(EARLY));
}

static int spawn_early(rusm_rt *rt, int kind, const rusm_spawn_opts *o,
                       rusm_pid_t *out) {
  if (kind == K_SF)
    return rusm_spawn_stackful(rt, early_fn, NULL, o, out);
  return rusm_spawn_stackless(rt, &early_ops, NULL, o, out);
}

#define BATCH 64

static int find_pid(const rusm_pid_t *pids, const bool *seen, int n,
                    rusm_pid_t pid) {
  for (int i = 0; i < n; i++)
    if (pids[i] == pid && !seen[i])
      return i;
  return -1;
}

/* The parent is the (trapping) test thread; children die in their first
 * step. Every child gives exactly one Exit, with its reason. */
static void spawn_link_atomic(int kind) {
  t_env e;
  t_start(&e, 0);
  const int n = T_SCALE(10000, 2000);
  uint64_t custom0 = t_metrics(e.rt)->exited_by[RUSM_EXIT_CUSTOM];
  assert_false(rusm_trap_exit(e.me, true));
  rusm_filter ex = rusm_filter_tag(RUSM_TAG_EXIT);
  for (int done = 0; done < n; done += BATCH) {
    rusm_pid_t pids[BATCH];
    bool seen[BATCH] = {false};
    int b = n - done < BATCH ? n - done : BATCH;
    for (int i = 0; i < b; i++) {
      rusm_spawn_opts o;
      rusm_spawn_opts_init(&o);
      o.link = true;
      o.scheduler = i % 2 ? -1 : i / 2; /* both local and remote queues */
      assert_int_equal(spawn_early(e.rt, kind, &o, &pids[i]), 0);
    }
    for (int i = 0; i < b; i++) {
      rusm_msg *m = t_recv(&e, &ex);
      rusm_exit_info x;
      assert_int_equal(rusm_msg_exit(m, &x), 0);
      int k = find_pid(pids, seen, b, x.from);
      if (k < 0)
        fail_msg("Exit from an unknown or already seen pid");
      seen[k] = true;
      s_why w = why_of(x.reason);
      check_why(&w, RUSM_EXIT_CUSTOM, EARLY, EARLY_LEN);
      rusm_msg_free(m);
    }
  }
  /* every child is reaped: a second Exit would be queued by now */
  t_wait_idle(&e);
  t_expect_nothing(&e, &ex);
  assert_int_equal(t_metrics(e.rt)->exited_by[RUSM_EXIT_CUSTOM] - custom0,
                   (uint64_t)n);
  /* the test thread's links are gone with the children */
  assert_true(rusm_trap_exit(e.me, false));
  finish(&e);
}
BOTH_KINDS(spawn_link_atomic)

static void spawn_monitor_atomic(int kind) {
  t_env e;
  t_start(&e, 0);
  const int n = T_SCALE(10000, 2000);
  rusm_filter dn = rusm_filter_tag(RUSM_TAG_DOWN);
  for (int done = 0; done < n; done += BATCH) {
    rusm_pid_t pids[BATCH];
    rusm_ref refs[BATCH];
    bool seen[BATCH] = {false};
    int b = n - done < BATCH ? n - done : BATCH;
    for (int i = 0; i < b; i++) {
      rusm_spawn_opts o;
      rusm_spawn_opts_init(&o);
      o.monitor = true;
      o.monitor_ref = &refs[i];
      o.link = (i % 3) == 0; /* both at once, sometimes */
      if (o.link)
        rusm_trap_exit(e.me, true);
      assert_int_equal(spawn_early(e.rt, kind, &o, &pids[i]), 0);
      assert_true(refs[i] != 0);
    }
    for (int i = 0; i < b; i++) {
      rusm_msg *m = t_recv(&e, &dn);
      rusm_down_info d;
      assert_int_equal(rusm_msg_down(m, &d), 0);
      int k = find_pid(pids, seen, b, d.pid);
      if (k < 0)
        fail_msg("Down about an unknown or already seen pid");
      seen[k] = true;
      assert_true(d.ref == refs[k]);
      s_why w = why_of(d.reason);
      check_why(&w, RUSM_EXIT_CUSTOM, EARLY, EARLY_LEN);
      rusm_msg_free(m);
      if (k % 3 == 0) {
        w = recv_exit_from(&e, pids[k], T_GUARD_MS);
        check_why(&w, RUSM_EXIT_CUSTOM, EARLY, EARLY_LEN);
      }
    }
  }
  t_wait_idle(&e);
  t_expect_nothing(&e, &dn);
  rusm_filter ex = rusm_filter_tag(RUSM_TAG_EXIT);
  t_expect_nothing(&e, &ex);
  finish(&e);
}
BOTH_KINDS(spawn_monitor_atomic)

/* Parents that are processes: a stackful one and a stackless one, both
 * trapping, spawn_link (or spawn_monitor) children that die at once. */
typedef struct parent_arg {
  rusm_pid_t owner;
  int child_kind;
  uint32_t n;
  bool monitor;
  /* stackless parent state */
  uint32_t i;
  rusm_pid_t child;
  rusm_ref ref;
  uint64_t bad;
} parent_arg;

static bool child_signal(const rusm_msg *m, void *arg) {
  const parent_arg *a = arg;
  rusm_exit_info x;
  rusm_down_info d;
  if (!a->monitor)
    return rusm_msg_exit(m, &x) == 0 && x.from == a->child;
  return rusm_msg_down(m, &d) == 0 && d.pid == a->child;
}

static rusm_filter child_filter(parent_arg *a) {
  rusm_filter f = rusm_filter_tag(a->monitor ? RUSM_TAG_DOWN : RUSM_TAG_EXIT);
  f.pred = child_signal;
  f.pred_arg = a;
  return f;
}

static bool check_child_msg(parent_arg *a, const rusm_msg *m) {
  rusm_exit_info x;
  rusm_down_info d;
  rusm_reason r;
  if (a->monitor) {
    if (rusm_msg_down(m, &d) != 0 || d.ref != a->ref)
      return false;
    r = d.reason;
  } else {
    if (rusm_msg_exit(m, &x) != 0)
      return false;
    r = x.reason;
  }
  return r.code == RUSM_EXIT_CUSTOM && r.len == EARLY_LEN &&
         memcmp(r.data, EARLY, EARLY_LEN) == 0;
}

static int parent_spawn(rusm_proc *self, parent_arg *a) {
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = !a->monitor;
  o.monitor = a->monitor;
  o.monitor_ref = &a->ref;
  return spawn_early(rusm_proc_rt(self), a->child_kind, &o, &a->child);
}

static void parent_done(rusm_proc *self, parent_arg *a) {
  /* nothing else may be queued: one signal per child */
  rusm_filter f = rusm_filter_tag(RUSM_TAG_SYSTEM);
  f.mask = RUSM_TAG_SYSTEM;
  rusm_msg *m = NULL;
  while (rusm_try_receive(self, &f, &m) == 0) {
    a->bad++;
    rusm_msg_free(m);
  }
  uint64_t out[2] = {a->bad, a->i};
  T_CHECK(rusm_send(rusm_proc_rt(self), a->owner, S_TAG_DONE, out,
                    sizeof out) == 0);
}

static void sf_parent(rusm_proc *self, void *arg) {
  parent_arg *a = arg;
  T_CHECK(!rusm_trap_exit(self, true));
  for (a->i = 0; a->i < a->n; a->i++) {
    if (parent_spawn(self, a) != 0) {
      a->bad++;
      continue;
    }
    rusm_filter f = child_filter(a);
    rusm_msg *m = NULL;
    if (rusm_receive(self, &f, T_GUARD_MS, &m) != 0) {
      a->bad++;
      continue;
    }
    if (!check_child_msg(a, m))
      a->bad++;
    rusm_msg_free(m);
  }
  parent_done(self, a);
}

static rusm_next sl_parent_next(rusm_proc *self, parent_arg *a) {
  while (a->i < a->n) {
    if (parent_spawn(self, a) == 0) {
      rusm_filter f = child_filter(a);
      return rusm_next_wait_for(&f, T_GUARD_MS);
    }
    a->bad++;
    a->i++;
  }
  parent_done(self, a);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static rusm_next sl_parent_init(rusm_proc *self, void **state) {
  T_CHECK(!rusm_trap_exit(self, true));
  return sl_parent_next(self, *state);
}

static rusm_next sl_parent_handle(rusm_proc *self, void *state, rusm_msg *m) {
  parent_arg *a = state;
  if (m == NULL || !check_child_msg(a, m))
    a->bad++;
  a->i++;
  return sl_parent_next(self, a);
}

static const rusm_stackless_ops sl_parent_ops = {sl_parent_init,
                                                 sl_parent_handle, NULL};

static void spawn_link_from_process(int kind) {
  t_env e;
  t_start(&e, 0);
  const uint32_t n = T_SCALE(2000, 500);
  for (int parent_kind = K_SL; parent_kind <= K_SF; parent_kind++) {
    for (int mon = 0; mon < 2; mon++) {
      parent_arg a;
      memset(&a, 0, sizeof a);
      a.owner = e.pid;
      a.child_kind = kind;
      a.n = n;
      a.monitor = mon;
      rusm_pid_t p;
      rusm_ref ref;
      rusm_spawn_opts o;
      rusm_spawn_opts_init(&o);
      o.monitor = true;
      o.monitor_ref = &ref;
      if (parent_kind == K_SF)
        assert_int_equal(rusm_spawn_stackful(e.rt, sf_parent, &a, &o, &p), 0);
      else
        assert_int_equal(rusm_spawn_stackless(e.rt, &sl_parent_ops, &a, &o, &p),
                         0);
      rusm_msg *m = t_recv_tag(&e, S_TAG_DONE);
      uint64_t out[2];
      assert_int_equal(rusm_msg_len(m), sizeof out);
      memcpy(out, rusm_msg_data(m), sizeof out);
      rusm_msg_free(m);
      assert_int_equal(out[0], 0); /* bad */
      assert_int_equal(out[1], n);
      s_why w = wait_down_ref(&e, ref, p);
      check_why(&w, RUSM_EXIT_NORMAL, NULL, 0);
    }
  }

  finish(&e);
}
BOTH_KINDS(spawn_link_from_process)

/* A non-trapping stackless / stackful parent dies with the reason of the
 * child it spawn_linked. */
static rusm_next doomed_parent_init(rusm_proc *self, void **state) {
  int kind = (int)(uintptr_t)*state;
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  rusm_pid_t c;
  T_CHECK(spawn_early(rusm_proc_rt(self), kind, &o, &c) == 0);
  return rusm_next_wait();
}

static const rusm_stackless_ops doomed_parent_ops = {doomed_parent_init, NULL,
                                                     NULL};

static void doomed_parent_fn(rusm_proc *self, void *arg) {
  int kind = (int)(uintptr_t)arg;
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  rusm_pid_t c;
  T_CHECK(spawn_early(rusm_proc_rt(self), kind, &o, &c) == 0);
  rusm_msg *m = NULL;
  rusm_receive(self, NULL, -1, &m); /* never returns: the link kills it */
  T_CHECK(!"the parent survived its child's abnormal exit");
  rusm_msg_free(m);
}

static void spawn_link_kills_parent(int kind) {
  t_env e;
  t_start(&e, 0);
  for (int parent_kind = K_SL; parent_kind <= K_SF; parent_kind++) {
    rusm_spawn_opts o;
    rusm_spawn_opts_init(&o);
    o.monitor = true;
    rusm_ref ref;
    o.monitor_ref = &ref;
    rusm_pid_t p;
    void *arg = (void *)(uintptr_t)kind;
    if (parent_kind == K_SF)
      assert_int_equal(rusm_spawn_stackful(e.rt, doomed_parent_fn, arg, &o, &p),
                       0);
    else
      assert_int_equal(
          rusm_spawn_stackless(e.rt, &doomed_parent_ops, arg, &o, &p), 0);
    s_why w = wait_down_ref(&e, ref, p);
    check_why(&w, RUSM_EXIT_CUSTOM, EARLY, EARLY_LEN);
  }
  finish(&e);
}
BOTH_KINDS(spawn_link_kills_parent)

/* ------------------------------------------------------------------ */
/* unlink, idempotence, direction                                      */
/* ------------------------------------------------------------------ */

static void unlink_cases(int kind) {
  t_env e;
  t_start(&e, 0);
  /* the caller unlinks: the other's death no longer reaches it */
  pup a = puppet(&e, kind), b = puppet(&e, !kind);
  p_trap(&e, a, true);
  assert_int_equal(p_link(&e, a, b.pid), 0);
  assert_int_equal(p_unlink(&e, a, b.pid), 0);
  p_stop(&e, b, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, b, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_no_report(&e, a);

  /* ... nor the caller's death the other (both directions are gone) */
  pup c = puppet(&e, kind), d = puppet(&e, !kind);
  assert_int_equal(p_link(&e, c, d.pid), 0);
  assert_int_equal(p_unlink(&e, c, d.pid), 0);
  p_stop(&e, c, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, c, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_no_report(&e, d);
  expect_no_down(&e, d);

  /* the side that did not create the link may remove it */
  pup f = puppet(&e, kind), g = puppet(&e, !kind);
  assert_int_equal(p_link(&e, f, g.pid), 0);
  assert_int_equal(p_unlink(&e, g, f.pid), 0);
  p_stop(&e, g, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, g, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_no_report(&e, f);
  expect_no_down(&e, f);

  /* unlinking what is not linked, or dead, is fine */
  assert_int_equal(p_unlink(&e, a, d.pid), 0);
  assert_int_equal(p_unlink(&e, a, b.pid), 0);
  assert_int_equal(p_unlink(&e, a, rusm_pid_make(0, RUSM_PID_SLOT_MAX, 1)), 0);
  assert_int_equal(p_unlink(&e, a, a.pid), 0);

  /* link again after an unlink: linked again */
  pup h = puppet(&e, !kind);
  assert_int_equal(p_link(&e, a, h.pid), 0);
  assert_int_equal(p_unlink(&e, a, h.pid), 0);
  assert_int_equal(p_link(&e, a, h.pid), 0);
  p_stop(&e, h, RUSM_EXIT_SHUTDOWN, NULL, 0);
  expect_down(&e, h, RUSM_EXIT_SHUTDOWN, NULL, 0);
  expect_exit_report(&e, a, h.pid, RUSM_EXIT_SHUTDOWN, NULL, 0);
  expect_no_report(&e, a);

  kill_pup(&e, a);
  kill_pup(&e, d);
  kill_pup(&e, f);

  /* the test thread as the unlinking side */
  pup k = puppet(&e, kind);
  assert_false(rusm_trap_exit(e.me, true));
  assert_int_equal(rusm_link(e.me, k.pid), 0);
  assert_int_equal(rusm_unlink(e.me, k.pid), 0);
  p_stop(&e, k, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, k, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  t_wait_idle(&e); /* k is reaped: an Exit would be queued by now */
  rusm_filter ex = rusm_filter_tag(RUSM_TAG_EXIT);
  t_expect_nothing(&e, &ex);
  assert_true(rusm_trap_exit(e.me, false));
  finish(&e);
}
BOTH_KINDS(unlink_cases)

static void link_idempotent(int kind) {
  t_env e;
  t_start(&e, 0);
  /* two links, one unlink: unlinked */
  pup a = puppet(&e, kind), b = puppet(&e, !kind);
  p_trap(&e, a, true);
  assert_int_equal(p_link(&e, a, b.pid), 0);
  assert_int_equal(p_link(&e, a, b.pid), 0);
  assert_int_equal(p_link(&e, b, a.pid), 0); /* the same link */
  assert_int_equal(p_unlink(&e, a, b.pid), 0);
  p_stop(&e, b, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, b, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_no_report(&e, a);

  /* two links: one Exit */
  pup c = puppet(&e, !kind);
  assert_int_equal(p_link(&e, a, c.pid), 0);
  assert_int_equal(p_link(&e, a, c.pid), 0);
  assert_int_equal(p_link(&e, c, a.pid), 0);
  p_stop(&e, c, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, c, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_exit_report(&e, a, c.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_no_report(&e, a);
  kill_pup(&e, a);
  finish(&e);
}
BOTH_KINDS(link_idempotent)

static void link_bidirectional(int kind) {
  t_env e;
  t_start(&e, 0);
  pup w = puppet(&e, !kind); /* trapping witness */
  p_trap(&e, w, true);

  /* the linking side dies: the linked side learns it */
  pup a = puppet(&e, kind);
  assert_int_equal(p_link(&e, a, w.pid), 0);
  p_stop(&e, a, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, a, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_exit_report(&e, w, a.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);

  /* the linked side dies: the linking side learns it */
  pup b = puppet(&e, kind);
  assert_int_equal(p_link(&e, w, b.pid), 0);
  p_stop(&e, b, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  expect_down(&e, b, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  expect_exit_report(&e, w, b.pid, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);

  /* and for non-trapping ends, both ways */
  pup c = puppet(&e, kind), d = puppet(&e, !kind);
  assert_int_equal(p_link(&e, c, d.pid), 0);
  p_stop(&e, d, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, d, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, c, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  pup f = puppet(&e, kind), g = puppet(&e, !kind);
  assert_int_equal(p_link(&e, f, g.pid), 0);
  p_stop(&e, f, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, f, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, g, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);

  expect_no_report(&e, w);
  kill_pup(&e, w);
  finish(&e);
}
BOTH_KINDS(link_bidirectional)

/* ------------------------------------------------------------------ */
/* Monitors                                                            */
/* ------------------------------------------------------------------ */

static void monitor_stacked(int kind) {
  t_env e;
  t_start(&e, 0);
  pup t = puppet(&e, kind), w = puppet(&e, !kind);
  rusm_ref r[3];
  for (int i = 0; i < 3; i++) {
    assert_int_equal(rusm_monitor(e.me, t.pid, &r[i]), 0);
    assert_true(r[i] != 0 && r[i] != t.ref);
    for (int j = 0; j < i; j++)
      assert_true(r[i] != r[j]);
  }
  rusm_ref q1 = p_monitor(&e, w, t.pid), q2 = p_monitor(&e, w, t.pid);
  assert_true(q1 != q2);
  assert_true(q1 != r[0] && q1 != r[1] && q1 != r[2]);
  ping(&e, t); /* the monitor signals have reached t */

  p_stop(&e, t, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, t, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  for (int i = 0; i < 3; i++) {
    s_why why = wait_down_ref(&e, r[i], t.pid);
    check_why(&why, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
    assert_int_equal(rusm_demonitor(e.me, r[i], 0), 0); /* fired */
  }
  expect_down_report(&e, w, q1, t.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down_report(&e, w, q2, t.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_no_report(&e, w);
  kill_pup(&e, w);
  t_wait_idle(&e);
  rusm_filter dn = rusm_filter_tag(RUSM_TAG_DOWN);
  t_expect_nothing(&e, &dn); /* one Down per ref, no more */
  finish(&e);
}
BOTH_KINDS(monitor_stacked)

static void demonitor_cases(int kind) {
  t_env e;
  t_start(&e, 0);
  rusm_filter dn = rusm_filter_tag(RUSM_TAG_DOWN);

  /* returns 1 for an active monitor, 0 afterwards or for unknown refs */
  pup t = puppet(&e, kind);
  rusm_ref r1 = 0;
  assert_int_equal(rusm_monitor(e.me, t.pid, &r1), 0);
  assert_int_equal(rusm_demonitor(e.me, r1, 0), 1);
  assert_int_equal(rusm_demonitor(e.me, r1, 0), 0);
  assert_int_equal(rusm_demonitor(e.me, r1, RUSM_DEMONITOR_FLUSH), 0);
  assert_int_equal(rusm_demonitor(e.me, UINT64_C(0x123456789), 0), 0);

  /* after demonitor no Down: monitor again, and the second ref's Down is
   * the only one (t's spawn monitor aside) */
  rusm_ref r2 = 0;
  assert_int_equal(rusm_monitor(e.me, t.pid, &r2), 0);
  assert_true(r2 != r1);
  assert_int_equal(rusm_kill(e.rt, t.pid), 0);
  expect_down(&e, t, RUSM_EXIT_KILLED, NULL, 0); /* the spawn monitor's */
  rusm_msg *m = t_recv(&e, &dn);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_true(d.ref == r2); /* not r1 */
  rusm_msg_free(m);
  assert_int_equal(rusm_demonitor(e.me, r2, 0), 0); /* fired */
  t_wait_idle(&e); /* t is reaped: any Down of r1 would be queued */
  t_expect_nothing(&e, &dn);

  /* the same from a puppet */
  pup w = puppet(&e, kind), u = puppet(&e, !kind);
  rusm_ref q1 = p_monitor(&e, w, u.pid);
  assert_int_equal(p_demonitor(&e, w, q1, 0), 1);
  assert_int_equal(p_demonitor(&e, w, q1, 0), 0);
  rusm_ref q2 = p_monitor(&e, w, u.pid);
  kill_pup(&e, u);
  expect_down_report(&e, w, q2, u.pid, RUSM_EXIT_KILLED, NULL, 0);
  assert_int_equal(p_demonitor(&e, w, q2, 0), 0);
  expect_no_report(&e, w); /* nothing for q1 */

  /* the target learns of the demonitor: its death sends nothing */
  pup v = puppet(&e, !kind);
  rusm_ref q3 = p_monitor(&e, w, v.pid);
  assert_int_equal(p_demonitor(&e, w, q3, 0), 1);
  kill_pup(&e, v);
  expect_no_report(&e, w);

  kill_pup(&e, w);
  finish(&e);
}
BOTH_KINDS(demonitor_cases)

/* Fetches the outer queue into the inner list (a receive that matches
 * nothing), so that a queued Down becomes a message. */
static void fetch_mailbox(t_env *e) {
  rusm_filter never = rusm_filter_tag(S_TAG_NEVER);
  rusm_msg *m = NULL;
  assert_int_equal(rusm_receive(e->me, &never, 0, &m), RUSM_ETIMEDOUT);
}

static void demonitor_flush(int kind) {
  t_env e;
  t_start(&e, 0);
  rusm_filter dn = rusm_filter_tag(RUSM_TAG_DOWN);
  pup dead = puppet(&e, kind);
  kill_pup(&e, dead);

  /* a Down queued (not yet fetched): demonitor, with or without flush,
   * returns 1 and no Down is received */
  for (unsigned flags = 0; flags <= RUSM_DEMONITOR_FLUSH; flags++) {
    rusm_ref r = 0;
    assert_int_equal(rusm_monitor(e.me, dead.pid, &r), 0);
    assert_int_equal(rusm_demonitor(e.me, r, flags), 1);
    t_expect_nothing(&e, &dn);
  }

  /* a Down already fetched into the mailbox: flush removes it */
  rusm_ref r1 = 0, r2 = 0;
  assert_int_equal(rusm_monitor(e.me, dead.pid, &r1), 0);
  assert_int_equal(rusm_monitor(e.me, dead.pid, &r2), 0);
  fetch_mailbox(&e);
  assert_int_equal(rusm_demonitor(e.me, r1, RUSM_DEMONITOR_FLUSH), 0);
  s_why w = wait_down_ref(&e, r2, dead.pid); /* only its own ref */
  check_why(&w, RUSM_EXIT_NOPROC, NULL, 0);
  t_expect_nothing(&e, &dn);

  /* without flush, a fetched Down stays (as in Erlang) */
  rusm_ref r3 = 0;
  assert_int_equal(rusm_monitor(e.me, dead.pid, &r3), 0);
  fetch_mailbox(&e);
  assert_int_equal(rusm_demonitor(e.me, r3, 0), 0);
  w = wait_down_ref(&e, r3, dead.pid);
  check_why(&w, RUSM_EXIT_NOPROC, NULL, 0);

  /* a live target that dies: its Down, fetched, flushed */
  pup t = puppet(&e, kind);
  rusm_ref r4 = 0;
  assert_int_equal(rusm_monitor(e.me, t.pid, &r4), 0);
  ping(&e, t);
  assert_int_equal(rusm_kill(e.rt, t.pid), 0);
  t_wait_idle(&e); /* t is reaped: its Downs are queued */
  fetch_mailbox(&e);
  assert_int_equal(rusm_demonitor(e.me, r4, RUSM_DEMONITOR_FLUSH), 0);
  expect_down(&e, t, RUSM_EXIT_KILLED, NULL, 0); /* the other ref's stays */
  t_expect_nothing(&e, &dn);

  /* in a puppet: monitor + demonitor in one step, the Down queued or
   * fetched, with or without flush */
  pup p = puppet(&e, !kind);
  uint64_t ref = 0;
  s_cmd c = cmd(OP_MON_DEMON, dead.pid);
  c.code = 0; /* queued, no flush: 1, no Down */
  assert_int_equal(call(&e, p, c, &ref), 1);
  c.code = 1; /* queued, flush: 1, no Down */
  assert_int_equal(call(&e, p, c, &ref), 1);
  c.code = 3; /* fetched, flush: 0, no Down */
  assert_int_equal(call(&e, p, c, &ref), 0);
  expect_no_report(&e, p);
  c.code = 2; /* fetched, no flush: 0, and the Down is received */
  assert_int_equal(call(&e, p, c, &ref), 0);
  expect_down_report(&e, p, ref, dead.pid, RUSM_EXIT_NOPROC, NULL, 0);
  expect_no_report(&e, p);
  kill_pup(&e, p);
  finish(&e);
}
BOTH_KINDS(demonitor_flush)

static void monitor_ignores_trap_exit(int kind) {
  t_env e;
  t_start(&e, 0);
  /* a trapping watcher gets a Down, not an Exit */
  pup w = puppet(&e, kind), t = puppet(&e, !kind);
  p_trap(&e, w, true);
  rusm_ref q = p_monitor(&e, w, t.pid);
  p_stop(&e, t, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, t, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down_report(&e, w, q, t.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_no_report(&e, w);

  /* a non-trapping watcher is not hurt by an abnormal Down */
  pup w2 = puppet(&e, kind), t2 = puppet(&e, !kind);
  rusm_ref q2 = p_monitor(&e, w2, t2.pid);
  assert_int_equal(rusm_kill(e.rt, t2.pid), 0);
  expect_down(&e, t2, RUSM_EXIT_KILLED, NULL, 0);
  expect_down_report(&e, w2, q2, t2.pid, RUSM_EXIT_KILLED, NULL, 0);
  expect_no_report(&e, w2);
  expect_no_down(&e, w2);

  /* a trapping target that turns an exit signal into a message is alive:
   * no Down; a kill still ends it */
  pup t3 = puppet(&e, kind);
  p_trap(&e, t3, true);
  rusm_ref q3 = p_monitor(&e, w2, t3.pid);
  assert_int_equal(
      rusm_exit(e.rt, t3.pid, (rusm_reason){RUSM_EXIT_CUSTOM, sizeof BIN, BIN}),
      0);
  expect_exit_report(&e, t3, e.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_no_down(&e, t3);
  expect_no_report(&e, w2);
  kill_pup(&e, t3);
  expect_down_report(&e, w2, q3, t3.pid, RUSM_EXIT_KILLED, NULL, 0);

  /* a monitor is no link: the watcher's death does not touch the target */
  pup t4 = puppet(&e, !kind);
  p_monitor(&e, w2, t4.pid);
  p_stop(&e, w2, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, w2, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_no_report(&e, t4);
  expect_no_down(&e, t4);

  kill_pup(&e, w);
  kill_pup(&e, t4);
  finish(&e);
}
BOTH_KINDS(monitor_ignores_trap_exit)

/* ------------------------------------------------------------------ */
/* Exit and Down are mailbox messages                                  */
/* ------------------------------------------------------------------ */

static void user_msg_is(rusm_msg *m, rusm_pid_t from, const char *text) {
  assert_true(rusm_msg_tag(m) == S_TAG_USER);
  assert_true(rusm_msg_from(m) == from);
  assert_int_equal(rusm_msg_len(m), strlen(text));
  assert_memory_equal(rusm_msg_data(m), text, strlen(text));
  rusm_msg_free(m);
}

static void p_send_text(t_env *e, pup p, rusm_pid_t to, const char *text) {
  s_cmd c =
      cmd_reason(OP_SEND, to, RUSM_EXIT_NORMAL, text, (uint32_t)strlen(text));
  assert_int_equal(call(e, p, c, NULL), 0);
}

static void selective_receive(int kind) {
  t_env e;
  t_start(&e, 0);
  assert_false(rusm_trap_exit(e.me, true));
  for (int round = 0; round < 2; round++) {
    pup p = puppet(&e, kind);
    assert_int_equal(rusm_link(e.me, p.pid), 0);
    p_send_text(&e, p, e.pid, "u1");
    p_send_text(&e, p, e.pid, "u2");
    p_stop(&e, p, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
    t_wait_idle(&e); /* p is reaped: its Exit and Down are queued */
    t_send(e.rt, e.pid, S_TAG_USER, "u3", 2);
    rusm_msg *m;
    if (round == 0) {
      /* pick the system messages first; user ones stay, in order */
      s_why w = wait_down(&e, p);
      check_why(&w, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
      w = recv_exit_from(&e, p.pid, 0);
      check_why(&w, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
      user_msg_is(t_recv(&e, NULL), p.pid, "u1");
      user_msg_is(t_recv(&e, NULL), p.pid, "u2");
      user_msg_is(t_recv(&e, NULL), e.pid, "u3");
    } else {
      /* arrival order: what p sent before dying, then its Exit and Down
       * (in either order), then what came later */
      user_msg_is(t_recv(&e, NULL), p.pid, "u1");
      user_msg_is(t_recv(&e, NULL), p.pid, "u2");
      bool got_exit = false, got_down = false;
      for (int i = 0; i < 2; i++) {
        m = t_recv(&e, NULL);
        if (rusm_msg_tag(m) == RUSM_TAG_EXIT)
          got_exit = true;
        else if (rusm_msg_tag(m) == RUSM_TAG_DOWN)
          got_down = true;
        rusm_msg_free(m);
      }
      assert_true(got_exit && got_down);
      user_msg_is(t_recv(&e, NULL), e.pid, "u3");
    }
    assert_int_equal(rusm_receive(e.me, NULL, 0, &m), RUSM_ETIMEDOUT);
  }
  assert_true(rusm_trap_exit(e.me, false));

  /* a trapping stackless / stackful body filters on the tags too */
  pup w = puppet(&e, kind);
  p_trap(&e, w, true);
  pup t = puppet(&e, !kind);
  assert_int_equal(p_link(&e, w, t.pid), 0);
  rusm_ref q = p_monitor(&e, w, t.pid);
  p_stop(&e, t, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, t, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_exit_report(&e, w, t.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down_report(&e, w, q, t.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  kill_pup(&e, w);
  finish(&e);
}
BOTH_KINDS(selective_receive)

/* A link, unlink or monitor signal acts before any later message from the
 * same sender: the target stops on that message, and the sender (trapping)
 * sees the real reason, never noproc (and nothing after an unlink). */
static void signal_then_message(int kind) {
  t_env e;
  t_start(&e, 0);
  const int n = T_SCALE(300, 60);
  pup a = puppet(&e, kind);
  p_trap(&e, a, true);
  for (int i = 0; i < n; i++) {
    pup b = puppet(&e, (kind + i) % 2);
    int64_t rc =
        call(&e, a,
             cmd_reason(OP_LINK_STOP, b.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN),
             NULL);
    assert_int_equal(rc, 0);
    expect_down(&e, b, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
    expect_exit_report(&e, a, b.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);

    pup c = puppet(&e, (kind + i) % 2);
    uint64_t ref = 0;
    rc = call(&e, a,
              cmd_reason(OP_MONITOR_STOP, c.pid, RUSM_EXIT_SHUTDOWN, PAYLOAD,
                         PAYLOAD_LEN),
              &ref);
    assert_int_equal(rc, 0);
    expect_down(&e, c, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
    expect_down_report(&e, a, ref, c.pid, RUSM_EXIT_SHUTDOWN, PAYLOAD,
                       PAYLOAD_LEN);

    pup d = puppet(&e, (kind + i) % 2);
    assert_int_equal(p_link(&e, a, d.pid), 0);
    rc = call(
        &e, a,
        cmd_reason(OP_UNLINK_STOP, d.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN),
        NULL);
    assert_int_equal(rc, 0);
    expect_down(&e, d, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
    expect_no_report(&e, a);
  }
  kill_pup(&e, a);
  finish(&e);
}
BOTH_KINDS(signal_then_message)

/* A message and then an exit signal from one sender arrive in that order
 * (the receiver traps: both are messages). */
static void message_then_exit_signal(int kind) {
  t_env e;
  t_start(&e, 0);
  assert_false(rusm_trap_exit(e.me, true));
  pup a = puppet(&e, kind);
  for (int i = 0; i < 20; i++) {
    p_send_text(&e, a, e.pid, "before");
    assert_int_equal(p_exit(&e, a, e.pid, RUSM_EXIT_CUSTOM, BIN, sizeof BIN),
                     0);
    p_send_text(&e, a, e.pid, "after");
    user_msg_is(t_recv(&e, NULL), a.pid, "before");
    rusm_msg *m = t_recv(&e, NULL);
    rusm_exit_info x;
    assert_int_equal(rusm_msg_exit(m, &x), 0);
    assert_true(x.from == a.pid);
    s_why w = why_of(x.reason);
    check_why(&w, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
    rusm_msg_free(m);
    user_msg_is(t_recv(&e, NULL), a.pid, "after");
  }
  assert_true(rusm_trap_exit(e.me, false));
  kill_pup(&e, a);
  finish(&e);
}
BOTH_KINDS(message_then_exit_signal)

static bool either_reason(const s_why *w, rusm_exit_code a, rusm_exit_code b) {
  return w->len == 0 && (w->code == (int32_t)a || w->code == (int32_t)b);
}

/* Linking to / monitoring a process that is being killed: whichever side of
 * its death the signal lands on, exactly one Exit / Down comes back, with
 * the reason (killed) or noproc; a link call that returned 0 always fires
 * (a non-trapping caller dies), one that returned RUSM_ENOPROC never. */
static void link_races_death(int kind) {
  t_env e;
  t_start(&e, 0);
  const int n = T_SCALE(2000, 400);
  rusm_filter ex = rusm_filter_tag(RUSM_TAG_EXIT);
  rusm_filter dn = rusm_filter_tag(RUSM_TAG_DOWN);
  int seen_noproc = 0, seen_killed = 0;
  pup x = puppet(&e, !kind); /* kills on command, racing the test thread */
  assert_false(rusm_trap_exit(e.me, true));
  for (int i = 0; i < n; i++) {
    pup b = puppet(&e, kind);
    if (i % 4 == 0)
      ping(&e, b);  /* sometimes parked, sometimes not yet run */
    if (i % 2 == 0) /* ordered: the kill, then the link, same sender */
      assert_int_equal(rusm_kill(e.rt, b.pid), 0);
    else /* racing: another process sends the kill */
      cast(&e, x.pid, cmd_reason(OP_EXIT, b.pid, RUSM_EXIT_KILL, NULL, 0));
    int rc = rusm_link(e.me, b.pid);
    assert_true(rc == 0 || rc == RUSM_ENOPROC);
    rusm_ref ref = 0;
    assert_int_equal(rusm_monitor(e.me, b.pid, &ref), 0);
    s_why w = recv_exit_from(&e, b.pid, T_GUARD_MS);
    assert_true(either_reason(&w, RUSM_EXIT_KILLED, RUSM_EXIT_NOPROC));
    if (rc == RUSM_ENOPROC)
      assert_int_equal(w.code, RUSM_EXIT_NOPROC);
    seen_noproc += w.code == RUSM_EXIT_NOPROC;
    seen_killed += w.code == RUSM_EXIT_KILLED;
    w = wait_down_ref(&e, ref, b.pid);
    assert_true(either_reason(&w, RUSM_EXIT_KILLED, RUSM_EXIT_NOPROC));
    expect_down(&e, b, RUSM_EXIT_KILLED, NULL, 0);
  }
  print_message("link_races_death: %d killed, %d noproc\n", seen_killed,
                seen_noproc);

  /* a non-trapping linker: rc 0 means it dies, RUSM_ENOPROC that it lives */
  const int m = T_SCALE(500, 100);
  pup a = puppet(&e, !kind);
  for (int i = 0; i < m; i++) {
    pup b = puppet(&e, kind);
    cast(&e, x.pid, cmd_reason(OP_EXIT, b.pid, RUSM_EXIT_KILL, NULL, 0));
    int64_t rc = p_link(&e, a, b.pid);
    expect_down(&e, b, RUSM_EXIT_KILLED, NULL, 0);
    if (rc == RUSM_ENOPROC) {
      expect_no_report(&e, a);
      expect_no_down(&e, a);
    } else {
      assert_int_equal(rc, 0);
      s_why w = wait_down(&e, a);
      assert_true(either_reason(&w, RUSM_EXIT_KILLED, RUSM_EXIT_NOPROC));
      a = puppet(&e, !kind);
    }
  }
  kill_pup(&e, a);
  kill_pup(&e, x);
  /* all reaped: a second Exit or Down would be queued by now */
  t_wait_idle(&e);
  t_expect_nothing(&e, &ex);
  t_expect_nothing(&e, &dn);
  assert_true(rusm_trap_exit(e.me, false));
  finish(&e);
}
BOTH_KINDS(link_races_death)

/* An attached thread is a process like the others for links and exits:
 * not trapping, an exit signal ends it (its blocking receive returns
 * RUSM_ESHUTDOWN, detach afterwards is harmless); trapping, it receives
 * the Exit message. */
typedef struct att_arg {
  rusm_rt *rt;
  rusm_pid_t owner;
  bool trap;
  int rc; /* of the receive that ended it */
} att_arg;

static void attached_main(void *arg) {
  att_arg *a = arg;
  rusm_proc *me = NULL;
  if (rusm_attach(a->rt, &me) != 0) {
    a->rc = -100;
    return;
  }
  if (a->trap)
    T_CHECK(!rusm_trap_exit(me, true));
  rusm_pid_t pid = rusm_self(me);
  T_CHECK(rusm_send(a->rt, a->owner, S_TAG_DONE, &pid, sizeof pid) == 0);
  for (;;) {
    rusm_msg *m = NULL;
    a->rc = rusm_receive(me, NULL, T_GUARD_MS, &m);
    if (a->rc != 0)
      break;
    if (rusm_msg_tag(m) == RUSM_TAG_EXIT)
      puppet_report(me, a->owner, m);
    rusm_msg_free(m);
  }
  rusm_detach(me); /* ended already: must do nothing */
}

typedef struct att_thread {
  pthread_t th;
  att_arg arg;
  s_thread t;
} att_thread;

static rusm_pid_t start_attached(t_env *e, att_thread *at, bool trap) {
  memset(at, 0, sizeof *at);
  at->arg.rt = e->rt;
  at->arg.owner = e->pid;
  at->arg.trap = trap;
  at->t.fn = attached_main;
  at->t.arg = &at->arg;
  assert_int_equal(pthread_create(&at->th, NULL, s_thread_main, &at->t), 0);
  rusm_msg *m = t_recv_tag(e, S_TAG_DONE);
  rusm_pid_t pid;
  memcpy(&pid, rusm_msg_data(m), sizeof pid);
  rusm_msg_free(m);
  return pid;
}

static void test_attached_thread_links(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  /* not trapping: a link ends it with the reason */
  att_thread at;
  rusm_pid_t t = start_attached(&e, &at, false);
  rusm_ref ref;
  assert_int_equal(rusm_monitor(e.me, t, &ref), 0);
  pup p = puppet(&e, K_SL);
  assert_int_equal(p_link(&e, p, t), 0);
  p_stop(&e, p, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, p, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  s_why w = wait_down_ref(&e, ref, t);
  check_why(&w, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  assert_int_equal(pthread_join(at.th, NULL), 0);
  assert_int_equal(at.arg.rc, RUSM_ESHUTDOWN);

  /* trapping: the Exit message, then a kill ends it */
  t = start_attached(&e, &at, true);
  assert_int_equal(rusm_monitor(e.me, t, &ref), 0);
  pup q = puppet(&e, K_SF);
  assert_int_equal(p_link(&e, q, t), 0);
  p_stop(&e, q, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  expect_down(&e, q, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  pup tp = {t, ref, K_SL};
  expect_exit_report(&e, tp, q.pid, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  assert_int_equal(rusm_kill(e.rt, t), 0);
  w = wait_down_ref(&e, ref, t);
  check_why(&w, RUSM_EXIT_KILLED, NULL, 0);
  assert_int_equal(pthread_join(at.th, NULL), 0);
  assert_int_equal(at.arg.rc, RUSM_ESHUTDOWN);

  /* exit(self-thread, normal) from another process is ignored */
  t = start_attached(&e, &at, false);
  assert_int_equal(rusm_monitor(e.me, t, &ref), 0);
  assert_int_equal(rusm_exit(e.rt, t, RUSM_REASON_NORMAL), 0);
  assert_int_equal(rusm_exit(e.rt, t, RUSM_REASON_SHUTDOWN), 0);
  w = wait_down_ref(&e, ref, t);
  check_why(&w, RUSM_EXIT_SHUTDOWN, NULL, 0);
  assert_int_equal(pthread_join(at.th, NULL), 0);
  assert_int_equal(at.arg.rc, RUSM_ESHUTDOWN);
  finish(&e);
}

static void test_msg_decoders(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  fill_long_detail();
  rusm_exit_info x;
  rusm_down_info d;

  /* a user message is neither */
  t_send(e.rt, e.pid, S_TAG_USER, "0123456789abcdefghijklmnopqrstuvwxyz", 36);
  rusm_msg *m = t_recv_tag(&e, S_TAG_USER);
  assert_int_equal(rusm_msg_exit(m, &x), RUSM_EINVAL);
  assert_int_equal(rusm_msg_down(m, &d), RUSM_EINVAL);
  assert_int_equal(rusm_msg_exit(NULL, &x), RUSM_EINVAL);
  assert_int_equal(rusm_msg_down(NULL, &d), RUSM_EINVAL);
  assert_int_equal(rusm_msg_exit(m, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_msg_down(m, NULL), RUSM_EINVAL);
  rusm_msg_free(m);

  /* an Exit message: its decoder, its wire layout, not a Down */
  pup p = puppet(&e, K_SL);
  assert_false(rusm_trap_exit(e.me, true));
  assert_int_equal(rusm_link(e.me, p.pid), 0);
  p_stop(&e, p, RUSM_EXIT_CUSTOM, LONG_DETAIL, DETAIL_MAX);
  m = t_recv_tag(&e, RUSM_TAG_EXIT);
  assert_int_equal(rusm_msg_down(m, &d), RUSM_EINVAL);
  assert_int_equal(rusm_msg_exit(m, &x), 0);
  assert_true(x.from == p.pid);
  assert_int_equal(x.reason.code, RUSM_EXIT_CUSTOM);
  assert_int_equal(x.reason.len, DETAIL_MAX);
  assert_int_equal(rusm_msg_len(m), RUSM_EXIT_PAYLOAD_HDR + DETAIL_MAX);
  const uint8_t *raw = rusm_msg_data(m);
  uint64_t from;
  int32_t code;
  uint32_t len;
  memcpy(&from, raw, 8);
  memcpy(&code, raw + 8, 4);
  memcpy(&len, raw + 12, 4);
  assert_true(from == p.pid);
  assert_int_equal(code, RUSM_EXIT_CUSTOM);
  assert_int_equal(len, DETAIL_MAX);
  assert_memory_equal(raw + RUSM_EXIT_PAYLOAD_HDR, LONG_DETAIL, DETAIL_MAX);
  assert_ptr_equal(x.reason.data, raw + RUSM_EXIT_PAYLOAD_HDR);
  assert_null(rusm_msg_buf(m));
  rusm_msg_free(m);

  /* a Down message likewise */
  s_why w = {0, 0, {0}};
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  m = t_recv(&e, &f);
  assert_int_equal(rusm_msg_exit(m, &x), RUSM_EINVAL);
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_true(d.ref == p.ref);
  assert_true(d.pid == p.pid);
  w = why_of(d.reason);
  check_why(&w, RUSM_EXIT_CUSTOM, LONG_DETAIL, DETAIL_MAX);
  assert_int_equal(rusm_msg_len(m), RUSM_DOWN_PAYLOAD_HDR + DETAIL_MAX);
  raw = rusm_msg_data(m);
  uint64_t ref, pid;
  memcpy(&ref, raw, 8);
  memcpy(&pid, raw + 8, 8);
  memcpy(&code, raw + 16, 4);
  memcpy(&len, raw + 20, 4);
  assert_true(ref == p.ref);
  assert_true(pid == p.pid);
  assert_int_equal(code, RUSM_EXIT_CUSTOM);
  assert_int_equal(len, DETAIL_MAX);
  assert_memory_equal(raw + RUSM_DOWN_PAYLOAD_HDR, LONG_DETAIL, DETAIL_MAX);
  rusm_msg_free(m);

  /* a reason without bytes has data NULL */
  pup q = puppet(&e, K_SF);
  assert_int_equal(rusm_link(e.me, q.pid), 0);
  p_stop(&e, q, RUSM_EXIT_SHUTDOWN, NULL, 0);
  m = t_recv_tag(&e, RUSM_TAG_EXIT);
  assert_int_equal(rusm_msg_exit(m, &x), 0);
  assert_int_equal(x.reason.len, 0);
  assert_null(x.reason.data);
  assert_int_equal(rusm_msg_len(m), RUSM_EXIT_PAYLOAD_HDR);
  rusm_msg_free(m);
  expect_down(&e, q, RUSM_EXIT_SHUTDOWN, NULL, 0);
  assert_true(rusm_trap_exit(e.me, false));
  finish(&e);
}

static void test_system_tags_rejected(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  uint8_t payload[RUSM_DOWN_PAYLOAD_HDR] = {0};
  const uint64_t tags[] = {RUSM_TAG_EXIT, RUSM_TAG_DOWN, RUSM_TAG_SYSTEM,
                           RUSM_TAG_SYSTEM | 77, UINT64_MAX};
  rusm_buf *b = rusm_buf_from(payload, sizeof payload);
  assert_non_null(b);
  pup p = puppet(&e, K_SF);
  for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) {
    assert_int_equal(rusm_send(e.rt, e.pid, tags[i], payload, sizeof payload),
                     RUSM_EINVAL);
    assert_int_equal(rusm_send(e.rt, p.pid, tags[i], payload, sizeof payload),
                     RUSM_EINVAL);
    assert_int_equal(rusm_send_buf(e.rt, e.pid, tags[i], b), RUSM_EINVAL);
  }
  rusm_buf_unref(b);
  rusm_msg *m = NULL;
  assert_int_equal(rusm_receive(e.me, NULL, 0, &m), RUSM_ETIMEDOUT);
  expect_no_report(&e, p);
  kill_pup(&e, p);
  finish(&e);
}

/* ------------------------------------------------------------------ */
/* Context errors                                                      */
/* ------------------------------------------------------------------ */

typedef struct ctx_probe {
  rusm_rt *rt;
  rusm_proc *other; /* a process that is not the calling one */
  rusm_pid_t target;
  int link, unlink, monitor, demonitor;
  bool trap;
  int spawn_link_sl, spawn_mon_sl, spawn_link_sf, spawn_both_sl;
  rusm_pid_t out;
} ctx_probe;

static void probe_calls(ctx_probe *c) {
  rusm_ref ref = 0;
  c->link = rusm_link(c->other, c->target);
  c->unlink = rusm_unlink(c->other, c->target);
  c->monitor = rusm_monitor(c->other, c->target, &ref);
  c->demonitor = rusm_demonitor(c->other, 1, 0);
  c->trap = rusm_trap_exit(c->other, true);
}

static void probe_in_thread(void *arg) {
  ctx_probe *c = arg;
  probe_calls(c);
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  c->out = RUSM_PID_NONE;
  c->spawn_link_sl = rusm_spawn_stackless(c->rt, &early_ops, NULL, &o, &c->out);
  c->spawn_link_sf = rusm_spawn_stackful(c->rt, early_fn, NULL, &o, &c->out);
  o.monitor = true;
  rusm_ref ref = 0;
  o.monitor_ref = &ref;
  c->spawn_both_sl = rusm_spawn_stackless(c->rt, &early_ops, NULL, &o, &c->out);
  o.link = false;
  c->spawn_mon_sl = rusm_spawn_stackless(c->rt, &early_ops, NULL, &o, &c->out);
}

static rusm_next probe_init(rusm_proc *self, void **state) {
  ctx_probe *c = *state;
  probe_calls(c);
  T_CHECK(rusm_send(rusm_proc_rt(self), rusm_self(c->other), S_TAG_DONE, NULL,
                    0) == 0);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops probe_ops = {probe_init, t_unexpected_handle,
                                             NULL};

static void check_probe(const ctx_probe *c) {
  assert_int_equal(c->link, RUSM_ECONTEXT);
  assert_int_equal(c->unlink, RUSM_ECONTEXT);
  assert_int_equal(c->monitor, RUSM_ECONTEXT);
  assert_int_equal(c->demonitor, RUSM_ECONTEXT);
  assert_false(c->trap);
}

static void test_context_errors(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  pup t = puppet(&e, K_SL);

  /* a plain thread calling with the test thread's process */
  ctx_probe c;
  memset(&c, 0, sizeof c);
  c.rt = e.rt;
  c.other = e.me;
  c.target = t.pid;
  run_in_thread(probe_in_thread, &c);
  check_probe(&c);
  assert_int_equal(c.spawn_link_sl, RUSM_ECONTEXT);
  assert_int_equal(c.spawn_link_sf, RUSM_ECONTEXT);
  assert_int_equal(c.spawn_both_sl, RUSM_ECONTEXT);
  assert_int_equal(c.spawn_mon_sl, RUSM_ECONTEXT);
  assert_true(c.out == RUSM_PID_NONE);
  /* nothing was spawned, and the trap flag did not change */
  assert_int_equal(rusm_process_count(e.rt), 2);
  assert_false(rusm_trap_exit(e.me, false));

  /* a process calling with another process's handle */
  memset(&c, 0, sizeof c);
  c.rt = e.rt;
  c.other = e.me;
  c.target = t.pid;
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &probe_ops, &c, NULL, &p), 0);
  rusm_msg_free(t_recv_tag(&e, S_TAG_DONE));
  check_probe(&c);
  assert_false(rusm_trap_exit(e.me, false));

  /* NULL handles and bad arguments */
  rusm_ref ref = 0;
  assert_int_equal(rusm_link(NULL, t.pid), RUSM_EINVAL);
  assert_int_equal(rusm_unlink(NULL, t.pid), RUSM_EINVAL);
  assert_int_equal(rusm_monitor(NULL, t.pid, &ref), RUSM_EINVAL);
  assert_int_equal(rusm_monitor(e.me, t.pid, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_demonitor(NULL, 1, 0), RUSM_EINVAL);
  assert_false(rusm_trap_exit(NULL, true));
  assert_int_equal(rusm_exit(NULL, t.pid, RUSM_REASON_KILL), RUSM_EINVAL);
  assert_int_equal(
      rusm_exit(e.rt, t.pid, (rusm_reason){RUSM_EXIT__COUNT, 0, NULL}),
      RUSM_EINVAL);
  assert_int_equal(
      rusm_exit(e.rt, t.pid, (rusm_reason){(rusm_exit_code)-1, 0, NULL}),
      RUSM_EINVAL);
  assert_int_equal(
      rusm_exit(e.rt, t.pid, (rusm_reason){RUSM_EXIT_CUSTOM, 4, NULL}),
      RUSM_EINVAL);
  expect_no_report(&e, t); /* none of that reached t */
  expect_no_down(&e, t);
  assert_int_equal(rusm_kill(e.rt, RUSM_PID_NONE), RUSM_ENOPROC);
  assert_int_equal(rusm_exit(e.rt, rusm_pid_make(0, RUSM_PID_SLOT_MAX, 1),
                             RUSM_REASON_SHUTDOWN),
                   RUSM_ENOPROC);
  kill_pup(&e, t);
  assert_int_equal(rusm_kill(e.rt, t.pid), RUSM_ENOPROC);
  assert_int_equal(rusm_exit(e.rt, t.pid, RUSM_REASON_NORMAL), RUSM_ENOPROC);
  finish(&e);
}

/* ------------------------------------------------------------------ */
/* What happens at process death                                       */
/* ------------------------------------------------------------------ */

/* on_exit hooks run, and their messages leave, before links and monitors
 * learn of the death; a stackless terminate sees the reason of the link
 * exit signal that ended it. */
static void hooked_fn(rusm_proc *self, void *arg) {
  rusm_pid_t owner = (rusm_pid_t)(uintptr_t)arg;
  t_notify_on_exit(self, owner, 42);
  T_CHECK(rusm_send(rusm_proc_rt(self), owner, S_TAG_DONE, NULL, 0) == 0);
  rusm_msg *m = NULL;
  rusm_filter f = rusm_filter_tag(S_TAG_NEVER);
  rusm_receive(self, &f, -1, &m); /* until the link kills it */
  T_CHECK(!"survived its link");
}

static void test_death_order(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  assert_false(rusm_trap_exit(e.me, true));
  rusm_pid_t h;
  rusm_ref ref;
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  o.monitor = true;
  o.monitor_ref = &ref;
  assert_int_equal(
      rusm_spawn_stackful(e.rt, hooked_fn, (void *)(uintptr_t)e.pid, &o, &h),
      0);
  rusm_msg_free(t_recv_tag(&e, S_TAG_DONE));
  pup b = puppet(&e, K_SL);
  assert_int_equal(p_link(&e, b, h), 0);
  p_stop(&e, b, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  expect_down(&e, b, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  /* from h, in order: the hook's note, then Exit and Down */
  rusm_msg *m = t_recv(&e, NULL);
  assert_true(rusm_msg_tag(m) == T_TAG_NOTE);
  rusm_msg_free(m);
  s_why w = recv_exit_from(&e, h, T_GUARD_MS);
  check_why(&w, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  w = wait_down_ref(&e, ref, h);
  check_why(&w, RUSM_EXIT_CUSTOM, BIN, sizeof BIN);
  assert_true(rusm_trap_exit(e.me, false));

  /* a stackless terminate gets the reason the link brought */
  rusm_pid_t s = t_spawn_waiter(&e); /* its terminate sends a note */
  pup c = puppet(&e, K_SF);
  assert_int_equal(p_link(&e, c, s), 0);
  p_stop(&e, c, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  expect_down(&e, c, RUSM_EXIT_SHUTDOWN, PAYLOAD, PAYLOAD_LEN);
  t_note n = t_wait_note(&e, s);
  assert_int_equal(n.code, RUSM_EXIT_SHUTDOWN);
  assert_int_equal(n.len, PAYLOAD_LEN);
  assert_memory_equal(n.detail, PAYLOAD, PAYLOAD_LEN);
  finish(&e);
}

/* The exit counters by reason follow what the processes died of. */
static void test_exit_metrics(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_metrics before = *t_metrics(e.rt);
  pup p[6];
  chain(&e, p, 3, K_SL);
  assert_int_equal(rusm_kill(e.rt, p[0].pid), 0);
  expect_downs(&e, p, 0, 3, RUSM_EXIT_KILLED, NULL, 0);
  chain(&e, p, 2, K_SF);
  p_stop(&e, p[0], RUSM_EXIT_SHUTDOWN, NULL, 0);
  expect_downs(&e, p, 0, 2, RUSM_EXIT_SHUTDOWN, NULL, 0);
  p[5] = puppet(&e, K_SL);
  p_stop(&e, p[5], RUSM_EXIT_NORMAL, NULL, 0);
  expect_down(&e, p[5], RUSM_EXIT_NORMAL, NULL, 0);
  t_wait_idle(&e);
  rusm_metrics *after = t_metrics(e.rt);
  assert_int_equal(after->exited_by[RUSM_EXIT_KILLED] -
                       before.exited_by[RUSM_EXIT_KILLED],
                   3);
  assert_int_equal(after->exited_by[RUSM_EXIT_SHUTDOWN] -
                       before.exited_by[RUSM_EXIT_SHUTDOWN],
                   2);
  assert_int_equal(after->exited_by[RUSM_EXIT_NORMAL] -
                       before.exited_by[RUSM_EXIT_NORMAL],
                   1);
  assert_int_equal(after->spawned - before.spawned, 6);
  finish(&e);
}

/* ------------------------------------------------------------------ */
/* Stop reasons of stackless callbacks                                 */
/* ------------------------------------------------------------------ */

/*
 * Regression: handle()'s message used to be freed before the stop reason
 * was copied, so a reason viewing the message's bytes (the natural
 * rusm_next_stop(reason from msg)) was read after free. Pool messages
 * (<= 512 bytes) hid it; a large one is malloc'd, which AddressSanitizer
 * watches.
 */
#define BIG_DETAIL 1000

static rusm_next big_stop_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)self;
  (void)state;
  if (m == NULL || rusm_msg_tag(m) != S_TAG_USER)
    return rusm_next_wait();
  rusm_reason r = {RUSM_EXIT_CUSTOM, (uint32_t)rusm_msg_len(m),
                   rusm_msg_data(m)};
  return rusm_next_stop(r);
}

static const rusm_stackless_ops big_stop_ops = {NULL, big_stop_handle, NULL};

static void test_stackless_stop_reason_viewing_message(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  static uint8_t big[BIG_DETAIL];
  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (uint8_t)(i * 13 + 1);
  rusm_pid_t p;
  rusm_ref ref;
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.monitor = true;
  o.monitor_ref = &ref;
  assert_int_equal(rusm_spawn_stackless(e.rt, &big_stop_ops, NULL, &o, &p), 0);
  assert_int_equal(rusm_send(e.rt, p, S_TAG_USER, big, sizeof big), 0);
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  f.pred = is_down_ref;
  f.pred_arg = &ref;
  rusm_msg *m = t_recv(&e, &f);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_int_equal(d.reason.code, RUSM_EXIT_CUSTOM);
  assert_int_equal(d.reason.len, sizeof big);
  assert_memory_equal(d.reason.data, big, sizeof big);
  rusm_msg_free(m);
  finish(&e);
}

/*
 * Regression: a body that fetches an exit signal itself (a stackless
 * callback through rusm_try_receive, either kind through
 * rusm_demonitor(FLUSH), which drains the mailbox) and then stops with S
 * used to be reaped with the signal's code and no bytes (the stop's reason
 * had replaced the signal's bytes). The signal ends the process, as in
 * Erlang: its reason, whole, is the exit reason.
 */
typedef struct mixed_case {
  rusm_reason sig, stop;
} mixed_case;

static const char SIG_DETAIL[] = "from the signal";
static const char STOP_DETAIL[] = "from the stop";

static rusm_next mixed_init(rusm_proc *self, void **state) {
  const mixed_case *c = *state;
  T_CHECK(rusm_exit(rusm_proc_rt(self), rusm_self(self), c->sig) == 0);
  rusm_msg *m = NULL;
  rusm_filter never = rusm_filter_tag(S_TAG_NEVER);
  T_CHECK(rusm_try_receive(self, &never, &m) == RUSM_ETIMEDOUT);
  return rusm_next_stop(c->stop);
}

static const rusm_stackless_ops mixed_ops = {mixed_init, t_unexpected_handle,
                                             NULL};

/* The stackful form: rusm_demonitor(FLUSH) drains the mailbox (and so
 * acts on the signal) without ending the coroutine. */
static void mixed_fn(rusm_proc *self, void *arg) {
  const mixed_case *c = arg;
  T_CHECK(rusm_exit(rusm_proc_rt(self), rusm_self(self), c->sig) == 0);
  rusm_ref ref = 0;
  T_CHECK(rusm_monitor(self, rusm_pid_make(0, RUSM_PID_SLOT_MAX, 1), &ref) ==
          0);
  rusm_demonitor(self, ref, RUSM_DEMONITOR_FLUSH);
  if (c->stop.code == RUSM_EXIT_NORMAL && c->stop.len == 0)
    return;
  rusm_exit_self(self, c->stop);
}

static bool same_reason(const s_why *w, rusm_reason r) {
  return w->code == (int32_t)r.code && w->len == r.len &&
         (r.len == 0 || memcmp(w->detail, r.data, r.len) == 0);
}

static void test_exit_signal_fetched_by_body_wins(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  const mixed_case cases[] = {
      {{RUSM_EXIT_SHUTDOWN, (uint32_t)strlen(SIG_DETAIL),
        (const uint8_t *)SIG_DETAIL},
       rusm_reason_str(STOP_DETAIL)},
      {rusm_reason_str(SIG_DETAIL), RUSM_REASON_NORMAL},
  };
  int bad = 0;
  for (size_t k = 0; k < 2 * sizeof cases / sizeof cases[0]; k++) {
    size_t i = k / 2;
    bool stackful = k % 2;
    rusm_pid_t p;
    rusm_ref ref;
    rusm_spawn_opts o;
    rusm_spawn_opts_init(&o);
    o.monitor = true;
    o.monitor_ref = &ref;
    void *arg = (void *)&cases[i];
    if (stackful)
      assert_int_equal(rusm_spawn_stackful(e.rt, mixed_fn, arg, &o, &p), 0);
    else
      assert_int_equal(rusm_spawn_stackless(e.rt, &mixed_ops, arg, &o, &p), 0);
    s_why w = wait_down_ref(&e, ref, p);
    if (!same_reason(&w, cases[i].sig)) {
      fprintf(stderr,
              "case %zu (%s): exit reason %s with %u detail bytes \"%.*s\", "
              "not the signal's\n",
              i, stackful ? "stackful" : "stackless",
              rusm_exit_code_name((rusm_exit_code)w.code), w.len, (int)w.len,
              (const char *)w.detail);
      bad++;
    }
  }
  finish(&e);
  if (bad)
    fail_msg("%d case(s) did not end with the exit signal's reason", bad);
}

int main(void) {
  fill_long_detail();
  const struct CMUnitTest tests[] = {
      BOTH_TESTS(link_normal_exit),
      BOTH_TESTS(link_abnormal_exit),
      BOTH_TESTS(exit_kill),
      BOTH_TESTS(exit_normal_from_other),
      BOTH_TESTS(exit_self),
      BOTH_TESTS(exit_other_reason),
      BOTH_TESTS(link_dead_pid),
      BOTH_TESTS(monitor_dead_pid),
      BOTH_TESTS(shutdown_payload),
      BOTH_TESTS(stop_with_kill_code),
      BOTH_TESTS(cascade_chain),
      BOTH_TESTS(cascade_tree),
      BOTH_TESTS(spawn_link_atomic),
      BOTH_TESTS(spawn_monitor_atomic),
      BOTH_TESTS(spawn_link_from_process),
      BOTH_TESTS(spawn_link_kills_parent),
      BOTH_TESTS(unlink_cases),
      BOTH_TESTS(link_idempotent),
      BOTH_TESTS(link_bidirectional),
      BOTH_TESTS(monitor_stacked),
      BOTH_TESTS(demonitor_cases),
      BOTH_TESTS(demonitor_flush),
      BOTH_TESTS(monitor_ignores_trap_exit),
      BOTH_TESTS(selective_receive),
      BOTH_TESTS(signal_then_message),
      BOTH_TESTS(message_then_exit_signal),
      BOTH_TESTS(link_races_death),
      cmocka_unit_test(test_attached_thread_links),
      cmocka_unit_test(test_msg_decoders),
      cmocka_unit_test(test_system_tags_rejected),
      cmocka_unit_test(test_context_errors),
      cmocka_unit_test(test_death_order),
      cmocka_unit_test(test_exit_metrics),
      cmocka_unit_test(test_stackless_stop_reason_viewing_message),
      cmocka_unit_test(test_exit_signal_fetched_by_body_wins),
  };
  return T_RUN(tests);
}
