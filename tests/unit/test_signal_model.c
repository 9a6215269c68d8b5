// ctest-labels: concurrent
/*
 * Randomized test of links, monitors, trap_exit and exit signals against a
 * model (the table of docs/exit-signals.md as a graph propagation).
 *
 * A seeded run spawns K stackless and stackful "puppets" (processes that
 * run commands from the test thread and report every Exit / Down message
 * they receive; the same protocol as in test_signal.c), gives them a random
 * script (links, monitors, trap_exit), then drives random events: exit
 * signals (exit/2 from the test thread or from a puppet, kill, exit of a
 * process with a reason), links to live or dead pids, unlinks, monitors,
 * demonitors, trap changes, new spawns. The test thread monitors every
 * puppet. After each event the model predicts which processes die and of
 * what, and which Exit / Down messages the survivors receive, and the test
 * checks it exactly: the Downs of the dead (and no other), each expected
 * report, a ping of every survivor (so nothing else is in flight), and no
 * unexpected report. Then a few concurrent batches (several exit signals
 * at once, so the model allows the reasons any arrival order gives), and a
 * final batch killing everything. At the end every monitor has fired
 * exactly once, the runtime has only the test thread left, and the exit
 * counters by reason match the model.
 *
 * RUSM_MODEL_SEED=n runs that one seed; RUSM_MODEL_SEEDS=n runs n seeds.
 */
#include "support.h"

/* ------------------------------------------------------------------ */
/* Puppets                                                             */
/* ------------------------------------------------------------------ */

#define S_TAG_CMD UINT64_C(0x3200000000000001)
#define S_TAG_REPLY UINT64_C(0x3200000000000002)
#define S_TAG_REPORT UINT64_C(0x3200000000000003)

#define DMAX 64 /* reason detail bytes */

enum { K_SL = 0, K_SF = 1 };

enum s_op {
  OP_PING = 0,
  OP_LINK,
  OP_UNLINK,
  OP_MONITOR,
  OP_DEMONITOR,
  OP_TRAP,
  OP_EXIT,
  OP_STOP
};

typedef struct s_cmd {
  uint32_t op;
  int32_t code;
  uint64_t seq;
  uint64_t arg;
  uint32_t len;
  uint8_t detail[DMAX];
} s_cmd;

typedef struct s_reply {
  uint64_t seq;
  int64_t rc;
  uint64_t value;
} s_reply;

typedef struct s_report {
  rusm_pid_t who;
  uint64_t tag;
  rusm_pid_t from; /* Exit: from; Down: pid */
  rusm_ref ref;
  int32_t code;
  uint32_t len;
  uint8_t detail[DMAX];
} s_report;

static void puppet_report(rusm_proc *self, rusm_pid_t owner,
                          const rusm_msg *m) {
  s_report r;
  memset(&r, 0, sizeof r);
  r.who = rusm_self(self);
  r.tag = rusm_msg_tag(m);
  rusm_reason why = RUSM_REASON_NORMAL;
  if (r.tag == RUSM_TAG_EXIT) {
    rusm_exit_info x;
    T_CHECK(rusm_msg_exit(m, &x) == 0);
    r.from = x.from;
    why = x.reason;
  } else {
    rusm_down_info d;
    T_CHECK(rusm_msg_down(m, &d) == 0);
    r.from = d.pid;
    r.ref = d.ref;
    why = d.reason;
  }
  T_CHECK(r.from == rusm_msg_from(m));
  r.code = (int32_t)why.code;
  r.len = why.len;
  T_CHECK(why.len <= DMAX);
  if (why.len && why.len <= DMAX)
    memcpy(r.detail, why.data, why.len);
  T_CHECK(rusm_send(rusm_proc_rt(self), owner, S_TAG_REPORT, &r, sizeof r) ==
          0);
}

/* One message; true when the puppet must stop with *why (bytes in buf). */
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
  T_CHECK(rusm_send(rt, rusm_msg_from(m), S_TAG_REPLY, &r, sizeof r) == 0);
  return false;
}

typedef struct sl_puppet {
  rusm_pid_t owner;
  uint8_t stop_detail[DMAX];
} sl_puppet;

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

static const rusm_stackless_ops sl_puppet_ops = {NULL, sl_puppet_handle,
                                                 sl_puppet_terminate};

static void sf_puppet(rusm_proc *self, void *arg) {
  rusm_pid_t owner = (rusm_pid_t)(uintptr_t)arg;
  uint8_t buf[DMAX];
  for (;;) {
    rusm_msg *m = NULL;
    if (rusm_receive(self, NULL, -1, &m) != 0) {
      T_CHECK(!"puppet receive failed");
      return;
    }
    rusm_reason why;
    bool stop = puppet_do(self, owner, m, &why, buf);
    rusm_msg_free(m);
    if (stop) {
      if (why.code == RUSM_EXIT_NORMAL && why.len == 0)
        return;
      rusm_exit_self(self, why);
      return;
    }
  }
}

/* ------------------------------------------------------------------ */
/* The model                                                           */
/* ------------------------------------------------------------------ */

#define NMAX 512    /* processes spawned in one run, at most */
#define MONMAX 2048 /* monitors held by puppets */
#define EXPMAX 4096
#define CANDMAX 64 /* candidate reasons of a step */

typedef struct mr {
  int32_t code;
  uint32_t len;
  uint8_t d[DMAX];
} mr;

typedef struct mp {
  rusm_pid_t pid;
  rusm_ref ref; /* the test thread's monitor */
  int kind;
  bool alive, trap;
  mr why; /* once dead */
} mp;

typedef struct mm {
  int w, t; /* watcher, target */
  rusm_ref ref;
  bool active; /* no Down received yet, not demonitored */
} mm;

/* An Exit / Down report some puppet must (or may) send. */
typedef struct xr {
  int who;
  uint64_t tag;
  rusm_pid_t from;
  rusm_ref ref;
  mr why;
  bool used;
} xr;

static struct model {
  t_env e;
  uint64_t seed, rng;
  int step;
  int n; /* processes spawned */
  mp p[NMAX];
  bool link[NMAX][NMAX];
  mm mon[MONMAX];
  int nmon;
  uint64_t died_by[RUSM_EXIT__COUNT];
  /* the current step */
  xr want[EXPMAX], opt[EXPMAX];
  int nwant, nopt;
  mr cand[CANDMAX];
  int ncand;
  uint64_t allowed[NMAX]; /* bitmask over cand, for the dying */
  bool dying[NMAX];
  mr actual[NMAX];
  uint64_t seq;
  /* what a run exercised, printed at its end */
  uint64_t n_deaths, n_reports, n_optional, n_batch_deaths;
} M;

#define M_FAIL(...)                                                            \
  do {                                                                         \
    fprintf(stderr, "model seed %" PRIu64 ", step %d: ", M.seed, M.step);      \
    fprintf(stderr, __VA_ARGS__);                                              \
    fprintf(stderr, "\n");                                                     \
    fail_msg("model check failed (seed %" PRIu64 ", step %d)", M.seed,         \
             M.step);                                                          \
  } while (0)

#define M_CHECK(cond, ...)                                                     \
  do {                                                                         \
    if (!(cond))                                                               \
      M_FAIL(__VA_ARGS__);                                                     \
  } while (0)

static uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (M.rng += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}
static int rnd_n(int n) { return (int)(rnd() % (uint64_t)n); }
static bool chance(int percent) { return rnd_n(100) < percent; }

static bool mr_eq(const mr *a, const mr *b) {
  return a->code == b->code && a->len == b->len &&
         memcmp(a->d, b->d, a->len) == 0;
}

static mr mr_of(rusm_reason r) {
  mr m;
  memset(&m, 0, sizeof m);
  m.code = (int32_t)r.code;
  m.len = r.len <= DMAX ? r.len : DMAX;
  if (m.len)
    memcpy(m.d, r.data, m.len);
  return m;
}

static mr mr_code(rusm_exit_code code) {
  mr m;
  memset(&m, 0, sizeof m);
  m.code = (int32_t)code;
  return m;
}

static rusm_reason reason_of(const mr *m) {
  rusm_reason r = {(rusm_exit_code)m->code, m->len, m->len ? m->d : NULL};
  return r;
}

static const char *mr_str(const mr *m) {
  static char buf[4][96];
  static int k;
  char *b = buf[k++ % 4];
  int n = snprintf(
      b, 96, "%s/%u:", rusm_exit_code_name((rusm_exit_code)m->code), m->len);
  for (uint32_t i = 0; i < m->len && n < 90; i++)
    n += snprintf(b + n, (size_t)(96 - n), "%02x", m->d[i]);
  return b;
}

/* A random reason for a process to end with (or to send). */
static mr rnd_reason(bool allow_normal) {
  mr m;
  memset(&m, 0, sizeof m);
  int x = rnd_n(100);
  if (allow_normal && x < 15) {
    m.code = RUSM_EXIT_NORMAL;
  } else if (x < 35) {
    m.code = RUSM_EXIT_SHUTDOWN;
    m.len = chance(50) ? (uint32_t)rnd_n(DMAX + 1) : 0;
  } else if (x < 85) {
    m.code = RUSM_EXIT_CUSTOM;
    m.len = (uint32_t)rnd_n(DMAX + 1);
  } else if (x < 93) {
    m.code = RUSM_EXIT_KILLED; /* an ordinary reason, when not from kill */
  } else {
    m.code = RUSM_EXIT_KILL; /* exit/2: the kill; own exit: ordinary */
    m.len = chance(30) ? 4 : 0;
  }
  for (uint32_t i = 0; i < m.len; i++)
    m.d[i] = (uint8_t)rnd();
  return m;
}

/* A reason no other source of a batch has. */
static mr unique_reason(int k) {
  mr m;
  memset(&m, 0, sizeof m);
  m.code = chance(50) ? RUSM_EXIT_CUSTOM : RUSM_EXIT_SHUTDOWN;
  m.len = 12;
  uint64_t tagv = (uint64_t)M.step << 16 | (uint64_t)k;
  memcpy(m.d, &tagv, 8);
  uint32_t r = (uint32_t)rnd();
  memcpy(m.d + 8, &r, 4);
  return m;
}

/* ---- talking to puppets ---- */

static s_cmd cmd(uint32_t op, uint64_t arg) {
  s_cmd c;
  memset(&c, 0, sizeof c);
  c.op = op;
  c.arg = arg;
  return c;
}

static s_cmd cmd_reason(uint32_t op, uint64_t arg, const mr *r) {
  s_cmd c = cmd(op, arg);
  c.code = r->code;
  c.len = r->len;
  memcpy(c.detail, r->d, r->len);
  return c;
}

static void cast(int i, s_cmd c) {
  c.seq = ++M.seq;
  int rc = rusm_send(M.e.rt, M.p[i].pid, S_TAG_CMD, &c, sizeof c);
  M_CHECK(rc == 0, "send: %s", rusm_err_name(rc));
}

typedef struct reply_or_down {
  uint64_t seq;
  rusm_ref ref;
} reply_or_down;

static bool is_reply_or_down(const rusm_msg *m, void *arg) {
  const reply_or_down *w = arg;
  if (rusm_msg_tag(m) == S_TAG_REPLY) {
    s_reply r;
    memcpy(&r, rusm_msg_data(m), sizeof r);
    return r.seq == w->seq;
  }
  rusm_down_info d;
  return rusm_msg_down(m, &d) == 0 && d.ref == w->ref;
}

/* Sends a command to the live puppet i and waits for the reply; its death
 * instead is a failure. */
static int64_t call(int i, s_cmd c, uint64_t *value) {
  cast(i, c);
  reply_or_down w = {M.seq, M.p[i].ref};
  rusm_filter f = {0, 0, is_reply_or_down, &w};
  rusm_msg *m = NULL;
  int rc = rusm_receive(M.e.me, &f, T_GUARD_MS, &m);
  M_CHECK(rc == 0, "no reply from process %d (op %u): %s", i, c.op,
          rusm_err_name(rc));
  if (rusm_msg_tag(m) != S_TAG_REPLY) {
    rusm_down_info d;
    rusm_msg_down(m, &d);
    mr why = mr_of(d.reason);
    rusm_msg_free(m);
    M_FAIL("process %d died unexpectedly (%s)", i, mr_str(&why));
  }
  s_reply r;
  memcpy(&r, rusm_msg_data(m), sizeof r);
  rusm_msg_free(m);
  if (value)
    *value = r.value;
  return r.rc;
}

static int spawn_puppet(int kind) {
  M_CHECK(M.n < NMAX, "too many processes");
  int i = M.n++;
  mp *p = &M.p[i];
  memset(p, 0, sizeof *p);
  p->kind = kind;
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.monitor = true;
  o.monitor_ref = &p->ref;
  int rc;
  if (kind == K_SF) {
    rc = rusm_spawn_stackful(M.e.rt, sf_puppet, (void *)(uintptr_t)M.e.pid, &o,
                             &p->pid);
  } else {
    sl_puppet *pp = calloc(1, sizeof *pp);
    M_CHECK(pp != NULL, "calloc");
    pp->owner = M.e.pid;
    rc = rusm_spawn_stackless(M.e.rt, &sl_puppet_ops, pp, &o, &p->pid);
    if (rc != 0)
      free(pp);
  }
  M_CHECK(rc == 0, "spawn: %s", rusm_err_name(rc));
  p->alive = true;
  for (int j = 0; j < NMAX; j++)
    M.link[i][j] = M.link[j][i] = false;
  return i;
}

static int rnd_alive(void) {
  int alive = 0;
  for (int i = 0; i < M.n; i++)
    alive += M.p[i].alive;
  if (!alive)
    return -1;
  int k = rnd_n(alive);
  for (int i = 0; i < M.n; i++)
    if (M.p[i].alive && k-- == 0)
      return i;
  return -1;
}

static int count_alive(void) {
  int n = 0;
  for (int i = 0; i < M.n; i++)
    n += M.p[i].alive;
  return n;
}

/* ---- expectations ---- */

static void expect(xr *list, int *n, int who, uint64_t tag, rusm_pid_t from,
                   rusm_ref ref, const mr *why) {
  M_CHECK(*n < EXPMAX, "too many expectations");
  xr *x = &list[(*n)++];
  x->who = who;
  x->tag = tag;
  x->from = from;
  x->ref = ref;
  x->why = *why;
  x->used = false;
}

static void want(int who, uint64_t tag, rusm_pid_t from, rusm_ref ref,
                 const mr *why) {
  expect(M.want, &M.nwant, who, tag, from, ref, why);
}

static bool report_matches(const xr *x, const s_report *r) {
  if (r->who != M.p[x->who].pid || r->tag != x->tag || r->from != x->from)
    return false;
  return x->tag != RUSM_TAG_DOWN || r->ref == x->ref;
}

static bool is_wanted_report(const rusm_msg *m, void *arg) {
  s_report r;
  if (rusm_msg_len(m) != sizeof r)
    return false;
  memcpy(&r, rusm_msg_data(m), sizeof r);
  return report_matches(arg, &r);
}

static s_report report_of(const rusm_msg *m) {
  s_report r;
  memcpy(&r, rusm_msg_data(m), sizeof r);
  return r;
}

static const char *tag_name(uint64_t tag) {
  return tag == RUSM_TAG_EXIT ? "Exit" : tag == RUSM_TAG_DOWN ? "Down" : "?";
}

static int index_of_pid(rusm_pid_t pid) {
  for (int i = 0; i < M.n; i++)
    if (M.p[i].pid == pid)
      return i;
  return -1;
}

/* ---- one step: deaths, reports, survivors ---- */

static void clear_step(void) {
  M.nwant = M.nopt = 0;
  M.ncand = 0;
  memset(M.dying, 0, sizeof M.dying);
  memset(M.allowed, 0, sizeof M.allowed);
}

static int add_cand(const mr *r) {
  for (int k = 0; k < M.ncand; k++)
    if (mr_eq(&M.cand[k], r))
      return k;
  M_CHECK(M.ncand < CANDMAX, "too many candidate reasons");
  M.cand[M.ncand] = *r;
  return M.ncand++;
}

/* Process i ends because of its own event, with reason r. */
static void source_dies(int i, const mr *r) {
  M.dying[i] = true;
  M.allowed[i] |= UINT64_C(1) << add_cand(r);
}

/* Links: the non-trapping neighbours of the dying die too, with a reason
 * from one of their dying neighbours (normal does not travel). */
static void propagate(void) {
  bool changed = true;
  while (changed) {
    changed = false;
    for (int d = 0; d < M.n; d++) {
      if (!M.dying[d])
        continue;
      uint64_t abnormal = 0;
      for (int k = 0; k < M.ncand; k++)
        if ((M.allowed[d] >> k & 1) && M.cand[k].code != RUSM_EXIT_NORMAL)
          abnormal |= UINT64_C(1) << k;
      if (!abnormal)
        continue;
      for (int n = 0; n < M.n; n++) {
        if (!M.p[n].alive || !M.link[d][n] || M.p[n].trap)
          continue;
        uint64_t before = M.allowed[n];
        bool was = M.dying[n];
        M.dying[n] = true;
        M.allowed[n] |= abnormal;
        if (!was || M.allowed[n] != before)
          changed = true;
      }
    }
  }
}

static void receive_deaths(void) {
  int remaining = 0;
  bool seen[NMAX] = {false};
  for (int i = 0; i < M.n; i++)
    remaining += M.dying[i];
  rusm_filter dn = rusm_filter_tag(RUSM_TAG_DOWN);
  while (remaining > 0) {
    rusm_msg *m = NULL;
    int rc = rusm_receive(M.e.me, &dn, T_GUARD_MS, &m);
    if (rc != 0) {
      for (int i = 0; i < M.n; i++)
        if (M.dying[i] && !seen[i])
          fprintf(stderr, "  process %d (%s) should have died\n", i,
                  M.p[i].kind == K_SF ? "stackful" : "stackless");
      M_FAIL("%d expected death(s) did not happen", remaining);
    }
    rusm_down_info d;
    M_CHECK(rusm_msg_down(m, &d) == 0, "bad Down");
    mr why = mr_of(d.reason);
    rusm_msg_free(m);
    int i = index_of_pid(d.pid);
    M_CHECK(i >= 0 && M.p[i].ref == d.ref, "Down with an unknown ref");
    M_CHECK(M.p[i].alive, "second Down for process %d (%s)", i, mr_str(&why));
    M_CHECK(M.dying[i], "process %d died unexpectedly (%s)", i, mr_str(&why));
    M_CHECK(!seen[i], "second Down for process %d", i);
    bool ok = false;
    for (int k = 0; k < M.ncand && !ok; k++)
      ok = (M.allowed[i] >> k & 1) && mr_eq(&M.cand[k], &why);
    if (!ok) {
      for (int k = 0; k < M.ncand; k++)
        if (M.allowed[i] >> k & 1)
          fprintf(stderr, "  allowed: %s\n", mr_str(&M.cand[k]));
      M_FAIL("process %d (%s, trap %d) died with %s", i,
             M.p[i].kind == K_SF ? "stackful" : "stackless", M.p[i].trap,
             mr_str(&why));
    }
    M.actual[i] = why;
    M.n_deaths++;
    seen[i] = true;
    remaining--;
  }
}

/* What the deaths make the others receive. */
static void expect_reports(void) {
  for (int d = 0; d < M.n; d++) {
    if (!M.dying[d])
      continue;
    for (int s = 0; s < M.n; s++) {
      if (!M.p[s].alive || !M.link[d][s] || !M.p[s].trap)
        continue;
      if (M.dying[s]) /* died itself: may have seen it first */
        expect(M.opt, &M.nopt, s, RUSM_TAG_EXIT, M.p[d].pid, 0, &M.actual[d]);
      else
        want(s, RUSM_TAG_EXIT, M.p[d].pid, 0, &M.actual[d]);
    }
  }
  for (int k = 0; k < M.nmon; k++) {
    mm *x = &M.mon[k];
    if (!x->active || !M.dying[x->t])
      continue;
    if (M.dying[x->w])
      expect(M.opt, &M.nopt, x->w, RUSM_TAG_DOWN, M.p[x->t].pid, x->ref,
             &M.actual[x->t]);
    else
      want(x->w, RUSM_TAG_DOWN, M.p[x->t].pid, x->ref, &M.actual[x->t]);
  }
}

static void receive_wanted(void) {
  for (int k = 0; k < M.nwant; k++) {
    xr *x = &M.want[k];
    rusm_filter f = rusm_filter_tag(S_TAG_REPORT);
    f.pred = is_wanted_report;
    f.pred_arg = x;
    rusm_msg *m = NULL;
    int rc = rusm_receive(M.e.me, &f, T_GUARD_MS, &m);
    M_CHECK(rc == 0, "process %d got no %s from <%" PRIx64 "> (%s)", x->who,
            tag_name(x->tag), x->from, mr_str(&x->why));
    s_report r = report_of(m);
    rusm_msg_free(m);
    mr got = {r.code, r.len, {0}};
    memcpy(got.d, r.detail, sizeof got.d);
    M_CHECK(mr_eq(&got, &x->why), "process %d: %s with %s, expected %s", x->who,
            tag_name(x->tag), mr_str(&got), mr_str(&x->why));
    M.n_reports++;
  }
}

/* Every survivor acts on everything queued before this (and is alive). */
static void ping_survivors(void) {
  for (int i = 0; i < M.n; i++)
    if (M.p[i].alive && !M.dying[i])
      M_CHECK(call(i, cmd(OP_PING, 0), NULL) == 0, "ping");
}

/* Reports left in the mailbox must be optional ones. */
static void check_leftover_reports(void) {
  rusm_filter f = rusm_filter_tag(S_TAG_REPORT);
  rusm_msg *m = NULL;
  while (rusm_receive(M.e.me, &f, 0, &m) == 0) {
    s_report r = report_of(m);
    rusm_msg_free(m);
    mr got = {r.code, r.len, {0}};
    memcpy(got.d, r.detail, sizeof got.d);
    bool ok = false;
    for (int k = 0; k < M.nopt && !ok; k++) {
      xr *x = &M.opt[k];
      if (!x->used && report_matches(x, &r) && mr_eq(&got, &x->why))
        ok = x->used = true;
      M.n_optional += ok;
    }
    M_CHECK(ok, "unexpected %s (%s) from <%" PRIx64 "> at process %d",
            tag_name(r.tag), mr_str(&got), r.from, index_of_pid(r.who));
  }
}

static void apply_deaths(void) {
  for (int d = 0; d < M.n; d++) {
    if (!M.dying[d])
      continue;
    M.p[d].alive = false;
    M.p[d].why = M.actual[d];
    M.died_by[M.actual[d].code]++;
    for (int j = 0; j < M.n; j++)
      M.link[d][j] = M.link[j][d] = false;
  }
  for (int k = 0; k < M.nmon; k++) {
    mm *x = &M.mon[k];
    if (x->active && (M.dying[x->t] || M.dying[x->w]))
      x->active = false;
  }
}

/* Checks everything the step's model predicts, then applies it. */
static void settle(void) {
  propagate();
  receive_deaths();
  expect_reports();
  receive_wanted();
  ping_survivors();
  check_leftover_reports();
  apply_deaths();
}

/* ---- events ---- */

/* exit/2 to i with r from the test thread (sender -1) or puppet sender. */
static void ev_exit(int sender, int i, const mr *r) {
  clear_step();
  rusm_pid_t from = sender < 0 ? M.e.pid : M.p[sender].pid;
  int64_t rc;
  if (sender < 0)
    rc = rusm_exit(M.e.rt, M.p[i].pid, reason_of(r));
  else
    rc = call(sender, cmd_reason(OP_EXIT, M.p[i].pid, r), NULL);
  if (!M.p[i].alive) {
    M_CHECK(rc == RUSM_ENOPROC, "exit to a dead pid: %" PRId64, rc);
    settle();
    return;
  }
  M_CHECK(rc == 0, "exit: %" PRId64, rc);
  if (r->code == RUSM_EXIT_KILL) {
    mr killed = mr_code(RUSM_EXIT_KILLED);
    source_dies(i, &killed);
  } else if (M.p[i].trap) {
    want(i, RUSM_TAG_EXIT, from, 0, r);
  } else if (r->code == RUSM_EXIT_NORMAL) {
    if (from == M.p[i].pid) {
      mr normal = mr_code(RUSM_EXIT_NORMAL);
      source_dies(i, &normal);
    }
  } else {
    source_dies(i, r);
  }
  settle();
}

static void ev_stop(int i, const mr *r) {
  clear_step();
  cast(i, cmd_reason(OP_STOP, 0, r));
  source_dies(i, r);
  settle();
}

static void ev_link(int i, int j) {
  clear_step();
  int64_t rc = call(i, cmd(OP_LINK, M.p[j].pid), NULL);
  if (i == j) {
    M_CHECK(rc == 0, "link to self: %" PRId64, rc);
  } else if (!M.p[j].alive) {
    /* also proves i's table forgot j when j died */
    M_CHECK(rc == RUSM_ENOPROC, "link to dead %d: %" PRId64, j, rc);
    if (M.p[i].trap) {
      mr noproc = mr_code(RUSM_EXIT_NOPROC);
      want(i, RUSM_TAG_EXIT, M.p[j].pid, 0, &noproc);
    }
  } else {
    M_CHECK(rc == 0, "link: %" PRId64, rc);
    M.link[i][j] = M.link[j][i] = true;
  }
  settle();
}

static void ev_unlink(int i, int j) {
  clear_step();
  M_CHECK(call(i, cmd(OP_UNLINK, M.p[j].pid), NULL) == 0, "unlink");
  M.link[i][j] = M.link[j][i] = false;
  settle();
}

static void ev_trap(int i, bool on) {
  clear_step();
  s_cmd c = cmd(OP_TRAP, 0);
  c.code = on;
  M_CHECK(call(i, c, NULL) == M.p[i].trap, "trap_exit: previous setting");
  M.p[i].trap = on;
  settle();
}

static void ev_monitor(int w, int t) {
  clear_step();
  M_CHECK(M.nmon < MONMAX, "too many monitors");
  uint64_t ref = 0;
  M_CHECK(call(w, cmd(OP_MONITOR, M.p[t].pid), &ref) == 0 && ref != 0,
          "monitor");
  mm *x = &M.mon[M.nmon++];
  x->w = w;
  x->t = t;
  x->ref = ref;
  x->active = M.p[t].alive;
  if (!M.p[t].alive) {
    mr noproc = mr_code(RUSM_EXIT_NOPROC);
    want(w, RUSM_TAG_DOWN, M.p[t].pid, ref, &noproc);
  }
  settle();
}

static void ev_demonitor(int k) {
  clear_step();
  mm *x = &M.mon[k];
  s_cmd c = cmd(OP_DEMONITOR, x->ref);
  c.code = chance(50) ? (int32_t)RUSM_DEMONITOR_FLUSH : 0;
  int64_t rc = call(x->w, c, NULL);
  M_CHECK(rc == (x->active ? 1 : 0), "demonitor returned %" PRId64, rc);
  x->active = false;
  settle();
}

/* Several exit signals at once (distinct targets, distinct abnormal
 * reasons): the dying set is exact, a reason any one that can reach. */
static void ev_batch(int nsrc, bool all_kill) {
  clear_step();
  int src[NMAX];
  int ns = 0;
  bool taken[NMAX] = {false};
  if (all_kill) {
    for (int i = 0; i < M.n; i++)
      if (M.p[i].alive)
        src[ns++] = i;
  } else {
    int alive = count_alive();
    if (nsrc > alive)
      nsrc = alive;
    while (ns < nsrc) {
      int i = rnd_alive();
      if (!taken[i]) {
        taken[i] = true;
        src[ns++] = i;
      }
    }
  }
  uint64_t deaths0 = M.n_deaths;
  for (int k = 0; k < ns; k++) {
    int i = src[k];
    int how = all_kill ? 0 : rnd_n(3);
    /* a non-trapping target may be dead already, by an earlier source's
     * cascade: the call then says noproc */
    int rc;
    if (how == 0) {
      rc = rusm_kill(M.e.rt, M.p[i].pid);
      M_CHECK(rc == 0 || (rc == RUSM_ENOPROC && !M.p[i].trap), "kill: %s",
              rusm_err_name(rc));
      mr killed = mr_code(RUSM_EXIT_KILLED);
      source_dies(i, &killed);
    } else {
      mr r = unique_reason(k);
      if (how == 1) {
        rc = rusm_exit(M.e.rt, M.p[i].pid, reason_of(&r));
        M_CHECK(rc == 0 || (rc == RUSM_ENOPROC && !M.p[i].trap), "exit: %s",
                rusm_err_name(rc));
        if (M.p[i].trap)
          want(i, RUSM_TAG_EXIT, M.e.pid, 0, &r);
        else
          source_dies(i, &r);
      } else {
        cast(i, cmd_reason(OP_STOP, 0, &r));
        source_dies(i, &r);
      }
    }
  }
  settle();
  M.n_batch_deaths += M.n_deaths - deaths0;
}

static void event(void) {
  int x = rnd_n(100);
  int i = rnd_alive();
  if (i < 0 || (x < 6 && M.n < NMAX)) {
    if (M.n >= NMAX)
      return;
    clear_step();
    int j = spawn_puppet(rnd_n(2));
    if (chance(30))
      ev_trap(j, true);
    return;
  }
  int j = rnd_n(M.n); /* any process, alive or dead */
  if (x < 28) {
    ev_link(i, j);
  } else if (x < 33) {
    ev_unlink(i, j);
  } else if (x < 41) {
    ev_trap(i, !M.p[i].trap);
  } else if (x < 52) {
    ev_monitor(i, j);
  } else if (x < 58) {
    int mine[MONMAX], n = 0;
    for (int k = 0; k < M.nmon; k++)
      if (M.mon[k].w == i)
        mine[n++] = k;
    if (n)
      ev_demonitor(mine[rnd_n(n)]);
  } else if (x < 68) {
    mr r = rnd_reason(true);
    ev_exit(-1, j, &r);
  } else if (x < 78) {
    mr r = rnd_reason(true);
    ev_exit(i, chance(20) ? i : j, &r); /* sometimes exit(self, R) */
  } else if (x < 84) {
    mr kill = mr_code(RUSM_EXIT_KILL);
    ev_exit(-1, j, &kill);
  } else {
    mr r = rnd_reason(true);
    ev_stop(i, &r);
  }
}

/* ---- a run ---- */

static void initial_script(int k) {
  for (int i = 0; i < k; i++)
    spawn_puppet(rnd_n(2));
  for (int i = 0; i < k; i++) {
    M.step++;
    if (chance(30))
      ev_trap(i, true);
    int links = chance(60) + chance(30);
    for (int l = 0; l < links; l++)
      ev_link(i, rnd_n(k));
    if (chance(40))
      ev_monitor(i, rnd_n(k));
  }
}

static void run_seed(uint64_t seed, int k, int events, int batches) {
  memset(&M, 0, sizeof M);
  M.seed = seed;
  M.rng = seed;
  uint32_t schedulers = 1 + (uint32_t)(seed % 4);
  fprintf(stderr, "model: seed %" PRIu64 ", %u scheduler(s), %d processes\n",
          seed, schedulers, k);
  t_start(&M.e, schedulers);
  rusm_metrics before = *t_metrics(M.e.rt);

  initial_script(k);
  for (int s = 0; s < events; s++) {
    M.step++;
    event();
  }
  for (int b = 0; b < batches; b++) {
    M.step++;
    /* refill, rewire, then several signals at once */
    while (count_alive() < k && M.n < NMAX) {
      int i = spawn_puppet(rnd_n(2));
      if (chance(30))
        ev_trap(i, true);
    }
    for (int l = 0; l < k; l++) {
      int i = rnd_alive(), j = rnd_alive();
      if (i != j)
        ev_link(i, j);
    }
    for (int l = 0; l < k / 4; l++)
      ev_monitor(rnd_alive(), rnd_n(M.n));
    M.step++;
    ev_batch(2 + rnd_n(7), false);
  }
  M.step++;
  ev_batch(NMAX, true); /* kill everything left */
  M_CHECK(count_alive() == 0, "processes left");

  /* every process reaped; every monitor fired exactly once */
  t_wait_idle(&M.e);
  M_CHECK(rusm_process_count(M.e.rt) == 1, "process count %" PRIu64,
          rusm_process_count(M.e.rt));
  rusm_msg *m = NULL;
  if (rusm_receive(M.e.me, NULL, 0, &m) == 0) {
    uint64_t tag = rusm_msg_tag(m);
    rusm_msg_free(m);
    M_FAIL("message left over, tag %#" PRIx64, tag);
  }
  for (int i = 0; i < M.n; i++)
    M_CHECK(rusm_demonitor(M.e.me, M.p[i].ref, 0) == 0,
            "the test thread's monitor of %d is still active", i);
  rusm_metrics *after = t_metrics(M.e.rt);
  M_CHECK(after->live == 1, "metrics live %" PRIu64, after->live);
  M_CHECK(after->spawned - after->exited == 1, "spawned - exited");
  M_CHECK(after->spawned - before.spawned == (uint64_t)M.n, "spawned");
  for (int c = 0; c < RUSM_EXIT__COUNT; c++)
    M_CHECK(after->exited_by[c] - before.exited_by[c] == M.died_by[c],
            "exits with %s: %" PRIu64 ", model %" PRIu64,
            rusm_exit_code_name((rusm_exit_code)c),
            after->exited_by[c] - before.exited_by[c], M.died_by[c]);
  t_stop(&M.e);
  fprintf(stderr,
          "model: seed %" PRIu64 " done: %d steps, %d processes, %" PRIu64
          " deaths (%" PRIu64 " in batches), %" PRIu64
          " reports checked, %" PRIu64 " optional ones seen\n",
          seed, M.step, M.n, M.n_deaths, M.n_batch_deaths, M.n_reports,
          M.n_optional);
}

static uint64_t env_u64(const char *name, uint64_t dflt) {
  const char *v = getenv(name);
  return v && *v ? strtoull(v, NULL, 0) : dflt;
}

static void test_signal_model(void **state) {
  (void)state;
  const char *one = getenv("RUSM_MODEL_SEED");
  if (one && *one) {
    run_seed(strtoull(one, NULL, 0), 50, 400, 4);
    return;
  }
  uint64_t seeds = env_u64("RUSM_MODEL_SEEDS", T_SCALE(8, 3));
  for (uint64_t s = 1; s <= seeds; s++)
    run_seed(s * UINT64_C(0x2545f4914f6cdd1d), 50, T_SCALE(400, 150),
             T_SCALE(4, 2));
}

/* Small and dense: few processes, many links, so cascades and concurrent
 * batches hit the same processes over and over. */
static void test_signal_model_dense(void **state) {
  (void)state;
  uint64_t seeds = env_u64("RUSM_MODEL_SEEDS", T_SCALE(8, 3));
  for (uint64_t s = 1; s <= seeds; s++)
    run_seed(s * UINT64_C(0x9e3779b97f4a7c15) + 7, 12, T_SCALE(300, 120),
             T_SCALE(12, 4));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_signal_model),
      cmocka_unit_test(test_signal_model_dense),
  };
  return T_RUN(tests);
}
