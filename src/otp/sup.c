/*
 * sup.c — OTP-style supervisors (the "Supervisors" section of rusm/otp.h,
 * user documentation in docs/supervisors.md).
 *
 * A supervisor is an ordinary user of the core: it uses only the public
 * API. It runs as a stackful process that traps exits, so that its child
 * start functions may block (a start function that starts a supervisor
 * waits for that supervisor's children, as in OTP). Everything it owns
 * hangs off one `sup` struct released by an on_exit hook, so a kill (which
 * never resumes the coroutine) leaks nothing; it never holds a message or
 * a heap block across a runtime call that could end it, except through
 * that struct.
 *
 * Start handshake: the starter spawns the process (linked when asked, and
 * monitored), then sends an INIT message and one SPEC message per child;
 * the supervisor starts the children and replies. Later requests are
 * synchronous calls (call.h). All protocol tags are in one private range,
 * SUP_TAG_BASE (documented in docs/supervisors.md).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "otp/alloc.h"
#include "otp/call.h"
#include "rusm/otp.h"

/* "\x7f\xfe" "SU": user tags (top bit clear), unlikely to collide. */
#define SUP_TAG_BASE UINT64_C(0x7ffe535500000000)
#define TAG_INIT (SUP_TAG_BASE | 1)  /* starter -> sup: wire_init */
#define TAG_SPEC (SUP_TAG_BASE | 2)  /* starter -> sup: wire_spec */
#define TAG_REQ (SUP_TAG_BASE | 3)   /* caller -> sup: wire_req */
#define TAG_REPLY (SUP_TAG_BASE | 4) /* sup -> caller: wire_rep [+ infos] */
#define TAG_RETRY (SUP_TAG_BASE | 5) /* sup -> itself: u64 serial */

#define ID_MAX 64  /* rusm_child_info.id, NUL included */
#define ZOMBIES 16 /* pids whose one extra Exit is swallowed */

/* ------------------------------------------------------------------ */
/* Wire formats (same address space: function pointers travel as is)  */
/* ------------------------------------------------------------------ */

typedef struct wire_spec {
  char id[ID_MAX];
  rusm_child_start_fn start;
  void *arg;
  int64_t shutdown_ms;
  int32_t restart;
  uint8_t supervisor;
  uint8_t _pad[3];
} wire_spec;

enum { KIND_STATIC = 0, KIND_DYNAMIC = 1 };

typedef struct wire_init {
  uint64_t ref;
  rusm_pid_t parent; /* linked starter, or RUSM_PID_NONE */
  rusm_sup_flags flags;
  uint32_t kind;
  uint32_t nspecs; /* SPEC messages that follow (dynamic: the template) */
} wire_init;

enum {
  OP_START_CHILD = 1,
  OP_TERMINATE = 2,
  OP_RESTART = 3,
  OP_DELETE = 4,
  OP_WHICH = 5,
  OP_COUNT = 6,
  OP_DYN_START = 7,
  OP_DYN_TERMINATE = 8,
  OP_INFO = 9
};

typedef struct wire_req {
  uint64_t ref; /* first: call.h */
  uint32_t op;
  uint32_t _pad;
  rusm_pid_t pid; /* OP_DYN_TERMINATE */
  void *arg;      /* OP_DYN_START */
  uint64_t cap;   /* OP_WHICH: infos wanted */
  wire_spec spec; /* OP_START_CHILD; id for OP_TERMINATE/RESTART/DELETE */
} wire_req;

typedef struct wire_rep {
  uint64_t ref; /* first: call.h */
  int32_t rc;
  uint32_t ninfo; /* OP_WHICH: rusm_child_info entries that follow */
  rusm_pid_t pid;
  uint64_t total;
  rusm_child_counts counts;
  rusm_sup_info info; /* OP_INFO */
} wire_rep;

/* ------------------------------------------------------------------ */
/* Supervisor state                                                    */
/* ------------------------------------------------------------------ */

typedef struct child {
  uint64_t serial; /* stable identity (retries refer to it) */
  char id[ID_MAX];
  rusm_child_start_fn start;
  void *arg;
  int64_t shutdown_ms;
  rusm_restart restart;
  bool supervisor;
  bool restarting; /* a failed restart waits for its retry */
  bool started;    /* started at least once */
  rusm_pid_t pid;  /* RUSM_PID_NONE when not running */
  uint32_t restarts;
} child;

/* Dynamic children: an open-addressing map keyed by pid. */
typedef struct dyn_entry {
  rusm_pid_t pid; /* RUSM_PID_NONE: empty slot */
  void *arg;
  uint32_t restarts;
  uint32_t dead; /* shutdown: its Exit was already queued */
} dyn_entry;

/* Dynamic children whose restart failed, waiting for their retry. */
typedef struct dyn_pending {
  uint64_t serial;
  void *arg;
  uint32_t restarts;
} dyn_pending;

typedef struct sup {
  rusm_proc *self;
  rusm_rt *rt;
  rusm_pid_t parent;
  rusm_sup_flags flags;
  bool dynamic;
  uint64_t next_serial;

  /* static: children in start order */
  child *kids;
  size_t nkids, capkids;

  /* dynamic */
  child tmpl;
  dyn_entry *map;
  size_t map_cap, map_len; /* map_cap: a power of two, or 0 */
  dyn_pending *pend;
  size_t npend, cappend;

  /* restart times (ms) within the period, oldest first, as a ring */
  int64_t *ring;
  size_t ring_cap, ring_head, ring_len;

  rusm_pid_t zombies[ZOMBIES];
  unsigned zombie_next;

  void *scratch; /* reply buffer */
  size_t scratch_cap;
  uint8_t *why; /* the reason being handled (exit reasons reuse it) */
  size_t why_cap;
  uint64_t restarts_total; /* for rusm_sup_info_get */
} sup;

static void sup_free(void *arg) {
  sup *s = arg;
  rusm__xfree(s->kids);
  rusm__xfree(s->map);
  rusm__xfree(s->pend);
  rusm__xfree(s->ring);
  rusm__xfree(s->scratch);
  rusm__xfree(s->why);
  rusm__xfree(s);
}

/* ------------------------------------------------------------------ */
/* Validation and conversion                                           */
/* ------------------------------------------------------------------ */

static bool flags_ok(const rusm_sup_flags *f) {
  return (unsigned)f->strategy <= RUSM_REST_FOR_ONE && f->period_ms > 0;
}

static int spec_to_wire(const rusm_child_spec *sp, wire_spec *w) {
  if (!sp || !sp->id || !sp->start)
    return RUSM_EINVAL;
  size_t len = strnlen(sp->id, ID_MAX);
  if (len == 0 || len >= ID_MAX)
    return RUSM_EINVAL;
  if ((unsigned)sp->restart > RUSM_TEMPORARY ||
      sp->shutdown_ms < RUSM_SHUTDOWN_INFINITY)
    return RUSM_EINVAL;
  memset(w, 0, sizeof *w);
  memcpy(w->id, sp->id, len);
  w->start = sp->start;
  w->arg = sp->arg;
  w->shutdown_ms = sp->shutdown_ms;
  w->restart = (int32_t)sp->restart;
  w->supervisor = sp->supervisor;
  return 0;
}

static void wire_to_child(sup *s, const wire_spec *w, child *c) {
  memset(c, 0, sizeof *c);
  c->serial = s->next_serial++;
  memcpy(c->id, w->id, ID_MAX);
  c->id[ID_MAX - 1] = '\0';
  c->start = w->start;
  c->arg = w->arg;
  c->shutdown_ms = w->shutdown_ms;
  c->restart = (rusm_restart)w->restart;
  c->supervisor = w->supervisor != 0;
  c->pid = RUSM_PID_NONE;
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap)
    return p;
  size_t n = *cap ? *cap : 8;
  while (n < need)
    n *= 2;
  void *q = rusm__xrealloc(p, n * elem);
  if (q)
    *cap = n;
  return q;
}

static void zombie_add(sup *s, rusm_pid_t pid) {
  s->zombies[s->zombie_next++ % ZOMBIES] = pid;
}

static bool zombie_take(sup *s, rusm_pid_t pid) {
  for (unsigned i = 0; i < ZOMBIES; i++)
    if (s->zombies[i] == pid) {
      s->zombies[i] = RUSM_PID_NONE;
      return true;
    }
  return false;
}

/* Links a freshly started child. A child already dead cannot be linked:
 * the link then queues Exit { noproc } for us, and the start function may
 * have linked it too (a second Exit). The first Exit from the pid is its
 * death; a zombie entry swallows the other one. */
static void link_child(sup *s, rusm_pid_t pid) {
  if (rusm_link(s->self, pid) == RUSM_ENOPROC)
    zombie_add(s, pid);
}

/* A message the supervisor cannot afford to lose could not be sent (out
 * of memory): a caller would wait forever, or a child would never be
 * restarted. Let it crash: the exit reaches the caller's monitor and the
 * supervisor's own supervisor, which is what OTP would see. */
static void must_send(sup *s, rusm_pid_t to, uint64_t tag, const void *data,
                      size_t len) {
  if (rusm_send(s->rt, to, tag, data, len) != 0)
    rusm_exit_self(s->self, rusm_reason_str("supervisor: out of memory"));
}

static void reply(sup *s, rusm_pid_t to, const wire_rep *rep, size_t len) {
  if (to != RUSM_PID_NONE)
    must_send(s, to, TAG_REPLY, rep, len);
}

static void reply_rc(sup *s, rusm_pid_t to, uint64_t ref, int rc,
                     rusm_pid_t pid) {
  wire_rep rep;
  memset(&rep, 0, sizeof rep);
  rep.ref = ref;
  rep.rc = rc;
  rep.pid = pid;
  reply(s, to, &rep, sizeof rep);
}

/* ------------------------------------------------------------------ */
/* Restart intensity: a sliding window of restart times                */
/* ------------------------------------------------------------------ */

/* Records a restart; false when it is one too many (more than intensity
 * within period_ms), and the supervisor must give up. */
static bool add_restart(sup *s) {
  int64_t now = rusm_now_ns() / 1000000;
  while (s->ring_len > 0 &&
         now - s->ring[s->ring_head] >= (int64_t)s->flags.period_ms) {
    s->ring_head = (s->ring_head + 1) % s->ring_cap;
    s->ring_len--;
  }
  if (s->ring_len >= s->flags.intensity)
    return false;
  if (s->ring_len == s->ring_cap) {
    size_t cap = s->ring_cap ? s->ring_cap * 2 : 8;
    int64_t *r = rusm__xmalloc(cap * sizeof *r);
    if (!r)
      return false; /* cannot account for it: err on the safe side */
    for (size_t i = 0; i < s->ring_len; i++)
      r[i] = s->ring[(s->ring_head + i) % s->ring_cap];
    rusm__xfree(s->ring);
    s->ring = r;
    s->ring_cap = cap;
    s->ring_head = 0;
  }
  s->ring[(s->ring_head + s->ring_len) % s->ring_cap] = now;
  s->ring_len++;
  s->restarts_total++;
  return true;
}

/* ------------------------------------------------------------------ */
/* Stopping children                                                   */
/* ------------------------------------------------------------------ */

static bool exit_from(const rusm_msg *m, void *arg) {
  rusm_exit_info xi;
  return rusm_msg_exit(m, &xi) == 0 && xi.from == *(const rusm_pid_t *)arg;
}

/* Drops the Exit messages from pid already queued; true when there was
 * one (the child died by itself). */
static bool flush_exits(sup *s, rusm_pid_t pid) {
  rusm_filter f = rusm_filter_tag(RUSM_TAG_EXIT);
  f.pred = exit_from;
  f.pred_arg = &pid;
  bool found = false;
  rusm_msg *m;
  while (rusm_try_receive(s->self, &f, &m) == 0) {
    rusm_msg_free(m);
    found = true;
  }
  return found;
}

static bool down_of(const rusm_msg *m, void *arg) {
  rusm_down_info d;
  return rusm_msg_down(m, &d) == 0 && d.ref == *(const rusm_ref *)arg;
}

/* Waits for the Down of mref (pid's monitor) up to timeout_ms (-1:
 * forever). The wait goes in slices that check pid is still alive: a Down
 * lost to an allocation failure must not hang the supervisor. */
static bool wait_down(sup *s, rusm_ref mref, rusm_pid_t pid,
                      int64_t timeout_ms) {
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  f.pred = down_of;
  f.pred_arg = &mref;
  int64_t deadline =
      timeout_ms < 0 ? -1 : rusm_now_ns() + timeout_ms * INT64_C(1000000);
  for (;;) {
    int64_t slice = 100;
    if (deadline >= 0) {
      int64_t left = (deadline - rusm_now_ns()) / 1000000;
      if (left < slice)
        slice = left < 0 ? 0 : left;
    }
    rusm_msg *m;
    if (rusm_receive(s->self, &f, slice, &m) == 0) {
      rusm_msg_free(m);
      return true;
    }
    if (!rusm_is_alive(s->rt, pid)) { /* gone; its Down was lost */
      rusm_demonitor(s->self, mref, RUSM_DEMONITOR_FLUSH);
      return true;
    }
    if (deadline >= 0 && rusm_now_ns() >= deadline)
      return false;
  }
}

/*
 * Stops one child as OTP does: monitor, unlink (an Exit already queued
 * means it died by itself), then kill (brutal) or exit(shutdown) and wait
 * for the Down up to the timeout (infinity: forever), then kill. The
 * monitor makes the wait robust to the child dying at the same moment.
 */
static void stop_child(sup *s, rusm_pid_t pid, int64_t shutdown_ms) {
  rusm_ref mref = 0;
  int mrc = rusm_monitor(s->self, pid, &mref);
  rusm_unlink(s->self, pid);
  bool dead = flush_exits(s, pid);
  if (mrc != 0) { /* cannot wait for it: make sure it goes */
    rusm_exit(s->rt, pid, RUSM_REASON_KILL);
    return;
  }
  if (!dead)
    rusm_exit(s->rt, pid,
              shutdown_ms == RUSM_SHUTDOWN_BRUTAL ? RUSM_REASON_KILL
                                                  : RUSM_REASON_SHUTDOWN);
  int64_t t = dead || shutdown_ms <= 0 ? -1 : shutdown_ms;
  if (!wait_down(s, mref, pid, t)) {
    rusm_exit(s->rt, pid, RUSM_REASON_KILL);
    wait_down(s, mref, pid, -1);
  }
}

/* ------------------------------------------------------------------ */
/* Static children                                                     */
/* ------------------------------------------------------------------ */

static size_t find_id(const sup *s, const char *id) {
  for (size_t i = 0; i < s->nkids; i++)
    if (strncmp(s->kids[i].id, id, ID_MAX) == 0)
      return i;
  return SIZE_MAX;
}

static size_t find_pid(const sup *s, rusm_pid_t pid) {
  for (size_t i = 0; i < s->nkids; i++)
    if (s->kids[i].pid == pid)
      return i;
  return SIZE_MAX;
}

static size_t find_serial(const sup *s, uint64_t serial) {
  for (size_t i = 0; i < s->nkids; i++)
    if (s->kids[i].serial == serial)
      return i;
  return SIZE_MAX;
}

static void remove_kid(sup *s, size_t i) {
  memmove(&s->kids[i], &s->kids[i + 1], (s->nkids - i - 1) * sizeof *s->kids);
  s->nkids--;
}

/* Starts kids[i]. 0 also when the start function declined (pid NONE:
 * OTP's `ignore`); a temporary child that declines is removed, and
 * *removed says so. */
static int start_kid(sup *s, size_t i, bool *removed) {
  *removed = false;
  child *c = &s->kids[i];
  rusm_pid_t pid = RUSM_PID_NONE;
  int rc = c->start(s->rt, c->arg, &pid);
  c = &s->kids[i]; /* the start function ran our process: re-read */
  if (rc < 0)
    return rc;
  c->restarting = false;
  if (pid == RUSM_PID_NONE) {
    if (c->restart == RUSM_TEMPORARY) {
      remove_kid(s, i);
      *removed = true;
    }
    return 0;
  }
  link_child(s, pid);
  c->pid = pid;
  if (c->started)
    c->restarts++;
  c->started = true;
  return 0;
}

/* Stops the running children in [from, to) in reverse order; temporary
 * ones are forgotten (they are never restarted). `except` is skipped. */
static void stop_range(sup *s, size_t from, size_t to, uint64_t except) {
  for (size_t i = to; i-- > from;) {
    child *c = &s->kids[i];
    if (c->serial == except)
      continue;
    c->restarting = false;
    if (c->pid != RUSM_PID_NONE) {
      rusm_pid_t pid = c->pid;
      c->pid = RUSM_PID_NONE;
      stop_child(s, pid, c->shutdown_ms);
    }
    if (s->kids[i].restart == RUSM_TEMPORARY)
      remove_kid(s, i);
  }
}

static void retry_later(sup *s, uint64_t serial) {
  must_send(s, rusm_self(s->self), TAG_RETRY, &serial, sizeof serial);
}

/* Starts the children from index `from` on that are not running, in
 * order. On a failure the failed child is marked restarting and retried
 * later (counted as another restart, as in OTP). */
static void start_from(sup *s, size_t from) {
  for (size_t i = from; i < s->nkids;) {
    if (s->kids[i].pid != RUSM_PID_NONE) {
      i++;
      continue;
    }
    bool removed;
    if (start_kid(s, i, &removed) < 0) {
      s->kids[i].restarting = true;
      retry_later(s, s->kids[i].serial);
      return;
    }
    if (!removed)
      i++;
  }
}

_Noreturn static void terminate(sup *s, rusm_reason why);

/* Restarts kids[i] (not running) by the strategy. */
static void restart_kid(sup *s, size_t i) {
  if (!add_restart(s))
    terminate(s, RUSM_REASON_SHUTDOWN);
  uint64_t serial = s->kids[i].serial;
  switch (s->flags.strategy) {
  case RUSM_ONE_FOR_ONE: {
    bool removed;
    if (start_kid(s, i, &removed) < 0) {
      s->kids[i].restarting = true;
      retry_later(s, serial);
    }
    break;
  }
  case RUSM_ONE_FOR_ALL:
    stop_range(s, 0, s->nkids, serial);
    start_from(s, 0);
    break;
  case RUSM_REST_FOR_ONE:
    stop_range(s, i + 1, s->nkids, serial);
    i = find_serial(s, serial);
    if (i != SIZE_MAX)
      start_from(s, i);
    break;
  }
}

static bool transient_done(rusm_exit_code code) {
  return code == RUSM_EXIT_NORMAL || code == RUSM_EXIT_SHUTDOWN;
}

static void kid_exited(sup *s, size_t i, rusm_exit_code code) {
  child *c = &s->kids[i];
  c->pid = RUSM_PID_NONE;
  if (c->restart == RUSM_TEMPORARY) {
    remove_kid(s, i);
    return;
  }
  if (c->restart == RUSM_TRANSIENT && transient_done(code))
    return;
  restart_kid(s, i);
}

/* ------------------------------------------------------------------ */
/* Dynamic children: map keyed by pid (linear probing, backward-shift  */
/* deletion, at most half full)                                        */
/* ------------------------------------------------------------------ */

static size_t home_of(const sup *s, rusm_pid_t pid) {
  uint64_t x = pid; /* splitmix64's finalizer */
  x ^= x >> 30;
  x *= UINT64_C(0xbf58476d1ce4e5b9);
  x ^= x >> 27;
  x *= UINT64_C(0x94d049bb133111eb);
  x ^= x >> 31;
  return (size_t)x & (s->map_cap - 1);
}

static dyn_entry *map_find(sup *s, rusm_pid_t pid) {
  if (s->map_cap == 0 || pid == RUSM_PID_NONE)
    return NULL;
  for (size_t i = home_of(s, pid);; i = (i + 1) & (s->map_cap - 1)) {
    if (s->map[i].pid == pid)
      return &s->map[i];
    if (s->map[i].pid == RUSM_PID_NONE)
      return NULL;
  }
}

static void map_insert(sup *s, const dyn_entry *e) {
  size_t i = home_of(s, e->pid);
  while (s->map[i].pid != RUSM_PID_NONE)
    i = (i + 1) & (s->map_cap - 1);
  s->map[i] = *e;
  s->map_len++;
}

static int map_put(sup *s, const dyn_entry *e) {
  if ((s->map_len + 1) * 2 > s->map_cap) {
    size_t cap = s->map_cap ? s->map_cap * 2 : 64;
    dyn_entry *old = s->map;
    size_t old_cap = s->map_cap;
    dyn_entry *m = rusm__xcalloc(cap, sizeof *m);
    if (!m)
      return RUSM_ENOMEM;
    s->map = m;
    s->map_cap = cap;
    s->map_len = 0;
    for (size_t i = 0; i < old_cap; i++)
      if (old[i].pid != RUSM_PID_NONE)
        map_insert(s, &old[i]);
    rusm__xfree(old);
  }
  map_insert(s, e);
  return 0;
}

/* k lies cyclically in (i, j]. */
static bool between(size_t k, size_t i, size_t j) {
  return i <= j ? (i < k && k <= j) : (i < k || k <= j);
}

static void map_del(sup *s, dyn_entry *e) {
  size_t mask = s->map_cap - 1;
  size_t i = (size_t)(e - s->map);
  for (size_t j = (i + 1) & mask; s->map[j].pid != RUSM_PID_NONE;
       j = (j + 1) & mask) {
    /* An entry whose home is outside (i, j] may move back into the hole. */
    if (!between(home_of(s, s->map[j].pid), i, j)) {
      s->map[i] = s->map[j];
      i = j;
    }
  }
  s->map[i].pid = RUSM_PID_NONE;
  s->map_len--;
}

/* Starts a dynamic child with arg; *out gets its pid (NONE: declined). */
static int dyn_start(sup *s, void *arg, uint32_t restarts, rusm_pid_t *out) {
  rusm_pid_t pid = RUSM_PID_NONE;
  *out = RUSM_PID_NONE;
  int rc = s->tmpl.start(s->rt, arg, &pid);
  if (rc < 0)
    return rc;
  if (pid == RUSM_PID_NONE)
    return 0;
  link_child(s, pid);
  dyn_entry e = {pid, arg, restarts, 0};
  if (map_put(s, &e) != 0) { /* cannot track it: do not leave it running */
    stop_child(s, pid, RUSM_SHUTDOWN_BRUTAL);
    return RUSM_ENOMEM;
  }
  *out = pid;
  return 0;
}

static void dyn_restart(sup *s, void *arg, uint32_t restarts) {
  if (!add_restart(s))
    terminate(s, RUSM_REASON_SHUTDOWN);
  rusm_pid_t pid;
  if (dyn_start(s, arg, restarts + 1, &pid) >= 0)
    return;
  dyn_pending *p = grow(s->pend, &s->cappend, s->npend + 1, sizeof *p);
  if (!p)
    return; /* no memory to remember it: the child is lost */
  s->pend = p;
  uint64_t serial = s->next_serial++;
  s->pend[s->npend++] = (dyn_pending){serial, arg, restarts};
  retry_later(s, serial);
}

static void dyn_exited(sup *s, dyn_entry *e, rusm_exit_code code) {
  void *arg = e->arg;
  uint32_t restarts = e->restarts;
  map_del(s, e);
  if (s->tmpl.restart == RUSM_TEMPORARY ||
      (s->tmpl.restart == RUSM_TRANSIENT && transient_done(code)))
    return;
  dyn_restart(s, arg, restarts);
}

static bool any_down(const rusm_msg *m, void *arg) {
  (void)arg;
  rusm_down_info d;
  return rusm_msg_down(m, &d) == 0;
}

/* Stops every dynamic child at once (their order is unspecified, as in
 * OTP): monitor and unlink all, signal all, then collect the Downs with
 * one deadline, and kill the ones still there when it passes. */
static void dyn_stop_all(sup *s) {
  size_t waiting = 0;
  for (size_t i = 0; i < s->map_cap; i++) {
    dyn_entry *e = &s->map[i];
    if (e->pid == RUSM_PID_NONE)
      continue;
    rusm_ref mref;
    if (rusm_monitor(s->self, e->pid, &mref) != 0) {
      e->dead = 2; /* cannot wait for it: kill and forget */
      continue;
    }
    e->dead = 0;
    waiting++;
    rusm_unlink(s->self, e->pid);
  }
  /* Exits queued before the unlinks: those children are gone already. */
  rusm_filter fx = rusm_filter_tag(RUSM_TAG_EXIT);
  rusm_msg *m;
  while (rusm_try_receive(s->self, &fx, &m) == 0) {
    rusm_exit_info xi;
    if (rusm_msg_exit(m, &xi) == 0) {
      dyn_entry *e = map_find(s, xi.from);
      if (e && e->dead == 0)
        e->dead = 1;
    }
    rusm_msg_free(m);
  }
  bool brutal = s->tmpl.shutdown_ms == RUSM_SHUTDOWN_BRUTAL;
  for (size_t i = 0; i < s->map_cap; i++) {
    dyn_entry *e = &s->map[i];
    if (e->pid == RUSM_PID_NONE || e->dead == 1)
      continue;
    rusm_exit(s->rt, e->pid,
              brutal || e->dead == 2 ? RUSM_REASON_KILL : RUSM_REASON_SHUTDOWN);
  }
  int64_t deadline = s->tmpl.shutdown_ms > 0
                         ? rusm_now_ns() + s->tmpl.shutdown_ms * 1000000
                         : -1;
  rusm_filter fd = {RUSM_TAG_DOWN, ~UINT64_C(0), any_down, NULL};
  while (waiting > 0) {
    int64_t t = 100; /* slices: see wait_down */
    if (deadline >= 0) {
      int64_t left = deadline - rusm_now_ns();
      left = left > 0 ? (left + 999999) / 1000000 : 0;
      if (left < t)
        t = left;
    }
    if (rusm_receive(s->self, &fd, t, &m) != 0) {
      /* children gone whose Down was lost (an allocation failure) */
      for (size_t i = 0; i < s->map_cap; i++) {
        dyn_entry *e = &s->map[i];
        if (e->pid != RUSM_PID_NONE && e->dead != 2 &&
            !rusm_is_alive(s->rt, e->pid)) {
          map_del(s, e);
          waiting--;
        }
      }
      if (deadline >= 0 && rusm_now_ns() >= deadline) {
        for (size_t i = 0; i < s->map_cap; i++)
          if (s->map[i].pid != RUSM_PID_NONE && s->map[i].dead != 2)
            rusm_exit(s->rt, s->map[i].pid, RUSM_REASON_KILL);
        deadline = -1;
      }
      continue;
    }
    rusm_down_info d;
    if (rusm_msg_down(m, &d) == 0) {
      dyn_entry *e = map_find(s, d.pid);
      if (e && e->dead != 2) {
        map_del(s, e);
        waiting--;
      }
    }
    rusm_msg_free(m);
  }
}

/* ------------------------------------------------------------------ */
/* Ending the supervisor                                               */
/* ------------------------------------------------------------------ */

/* Stops all children (static: reverse start order, each by its shutdown
 * spec) and exits with why. */
_Noreturn static void terminate(sup *s, rusm_reason why) {
  if (s->dynamic) {
    dyn_stop_all(s);
  } else {
    for (size_t i = s->nkids; i-- > 0;) {
      child *c = &s->kids[i];
      if (c->pid == RUSM_PID_NONE)
        continue;
      rusm_pid_t pid = c->pid;
      c->pid = RUSM_PID_NONE;
      stop_child(s, pid, c->shutdown_ms);
    }
  }
  /* The reason's bytes are copied before the on_exit hook frees s. */
  rusm_exit_self(s->self, why);
  abort(); /* unreachable: rusm_exit_self never returns in a stackful body */
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

static void fill_info(rusm_child_info *ci, const child *c, rusm_pid_t pid,
                      uint32_t restarts) {
  memset(ci, 0, sizeof *ci);
  memcpy(ci->id, c->id, ID_MAX);
  ci->pid = pid;
  ci->restart = c->restart;
  ci->supervisor = c->supervisor;
  ci->restarts = restarts;
}

static void counts(const sup *s, rusm_child_counts *out) {
  memset(out, 0, sizeof *out);
  if (s->dynamic) {
    uint32_t n = (uint32_t)(s->map_len + s->npend);
    out->specs = n;
    out->active = (uint32_t)s->map_len;
    if (s->tmpl.supervisor)
      out->supervisors = n;
    else
      out->workers = n;
    return;
  }
  out->specs = (uint32_t)s->nkids;
  for (size_t i = 0; i < s->nkids; i++) {
    if (s->kids[i].pid != RUSM_PID_NONE)
      out->active++;
    if (s->kids[i].supervisor)
      out->supervisors++;
    else
      out->workers++;
  }
}

static void do_which(sup *s, rusm_pid_t from, const wire_req *rq) {
  size_t total = s->dynamic ? s->map_len + s->npend : s->nkids;
  size_t n = rq->cap < total ? (size_t)rq->cap : total;
  size_t len = sizeof(wire_rep) + n * sizeof(rusm_child_info);
  void *buf = grow(s->scratch, &s->scratch_cap, len, 1);
  if (!buf) {
    reply_rc(s, from, rq->ref, RUSM_ENOMEM, RUSM_PID_NONE);
    return;
  }
  s->scratch = buf;
  wire_rep *rep = buf;
  memset(rep, 0, sizeof *rep);
  rep->ref = rq->ref;
  rep->total = total;
  rep->ninfo = (uint32_t)n;
  rusm_child_info *ci = (rusm_child_info *)(rep + 1);
  size_t k = 0;
  if (!s->dynamic) {
    for (; k < n; k++)
      fill_info(&ci[k], &s->kids[k], s->kids[k].pid, s->kids[k].restarts);
  } else {
    for (size_t i = 0; i < s->map_cap && k < n; i++)
      if (s->map[i].pid != RUSM_PID_NONE) {
        fill_info(&ci[k], &s->tmpl, s->map[i].pid, s->map[i].restarts);
        k++;
      }
    for (size_t i = 0; i < s->npend && k < n; i++, k++)
      fill_info(&ci[k], &s->tmpl, RUSM_PID_NONE, s->pend[i].restarts);
  }
  reply(s, from, rep, len);
}

static int do_start_child(sup *s, const wire_spec *w, rusm_pid_t *out) {
  *out = RUSM_PID_NONE;
  if (find_id(s, w->id) != SIZE_MAX)
    return RUSM_EEXIST;
  child *k = grow(s->kids, &s->capkids, s->nkids + 1, sizeof *k);
  if (!k)
    return RUSM_ENOMEM;
  s->kids = k;
  size_t i = s->nkids++;
  wire_to_child(s, w, &s->kids[i]);
  bool removed;
  int rc = start_kid(s, i, &removed);
  if (rc < 0) {
    remove_kid(s, i);
    return rc;
  }
  if (!removed)
    *out = s->kids[i].pid;
  return 0;
}

static int do_terminate_child(sup *s, const char *id) {
  size_t i = find_id(s, id);
  if (i == SIZE_MAX)
    return RUSM_ENOTFOUND;
  child *c = &s->kids[i];
  c->restarting = false;
  if (c->pid != RUSM_PID_NONE) {
    rusm_pid_t pid = c->pid;
    c->pid = RUSM_PID_NONE;
    stop_child(s, pid, c->shutdown_ms);
  }
  if (s->kids[i].restart == RUSM_TEMPORARY)
    remove_kid(s, i);
  return 0;
}

static int do_restart_child(sup *s, const char *id, rusm_pid_t *out) {
  *out = RUSM_PID_NONE;
  size_t i = find_id(s, id);
  if (i == SIZE_MAX)
    return RUSM_ENOTFOUND;
  if (s->kids[i].pid != RUSM_PID_NONE)
    return RUSM_EEXIST;
  bool removed;
  int rc = start_kid(s, i, &removed);
  if (rc == 0 && !removed)
    *out = s->kids[i].pid;
  return rc;
}

static int do_delete_child(sup *s, const char *id) {
  size_t i = find_id(s, id);
  if (i == SIZE_MAX)
    return RUSM_ENOTFOUND;
  if (s->kids[i].pid != RUSM_PID_NONE || s->kids[i].restarting)
    return RUSM_EINVAL;
  remove_kid(s, i);
  return 0;
}

static void handle_req(sup *s, rusm_pid_t from, const wire_req *rq) {
  int rc = RUSM_EINVAL;
  rusm_pid_t pid = RUSM_PID_NONE;
  char id[ID_MAX];
  memcpy(id, rq->spec.id, ID_MAX);
  id[ID_MAX - 1] = '\0';
  switch (rq->op) {
  case OP_WHICH:
    do_which(s, from, rq);
    return;
  case OP_COUNT:
  case OP_INFO: {
    wire_rep rep;
    memset(&rep, 0, sizeof rep);
    rep.ref = rq->ref;
    counts(s, &rep.counts);
    rep.info.strategy = s->flags.strategy;
    rep.info.intensity = s->flags.intensity;
    rep.info.period_ms = s->flags.period_ms;
    rep.info.dynamic = s->dynamic;
    rep.info.restarts = s->restarts_total;
    rep.info.counts = rep.counts;
    reply(s, from, &rep, sizeof rep);
    return;
  }
  case OP_START_CHILD:
    if (!s->dynamic)
      rc = do_start_child(s, &rq->spec, &pid);
    break;
  case OP_TERMINATE:
    if (!s->dynamic)
      rc = do_terminate_child(s, id);
    break;
  case OP_RESTART:
    if (!s->dynamic)
      rc = do_restart_child(s, id, &pid);
    break;
  case OP_DELETE:
    if (!s->dynamic)
      rc = do_delete_child(s, id);
    break;
  case OP_DYN_START:
    if (s->dynamic)
      rc = dyn_start(s, rq->arg, 0, &pid);
    break;
  case OP_DYN_TERMINATE:
    if (s->dynamic) {
      dyn_entry *e = map_find(s, rq->pid);
      rc = RUSM_ENOTFOUND;
      if (e) {
        stop_child(s, rq->pid, s->tmpl.shutdown_ms);
        e = map_find(s, rq->pid); /* unchanged, but cheap to be sure */
        if (e)
          map_del(s, e);
        rc = 0;
      }
    }
    break;
  default:
    break;
  }
  reply_rc(s, from, rq->ref, rc, pid);
}

static void handle_retry(sup *s, uint64_t serial) {
  if (!s->dynamic) {
    size_t i = find_serial(s, serial);
    if (i != SIZE_MAX && s->kids[i].restarting &&
        s->kids[i].pid == RUSM_PID_NONE)
      restart_kid(s, i);
    return;
  }
  for (size_t i = 0; i < s->npend; i++)
    if (s->pend[i].serial == serial) {
      dyn_pending p = s->pend[i];
      s->pend[i] = s->pend[--s->npend];
      dyn_restart(s, p.arg, p.restarts);
      return;
    }
}

/* An exit signal (trapped). From the parent: stop, with its reason. From a
 * child: the restart rules. From anyone else: exit(sup, R) stops the
 * supervisor as it would stop a process that does not trap (this is how
 * rusm_sup_stop works), except that normal is ignored. */
static void handle_exit(sup *s, rusm_pid_t from, rusm_reason why) {
  if (from != RUSM_PID_NONE && from == s->parent)
    terminate(s, why);
  if (s->dynamic) {
    dyn_entry *e = map_find(s, from);
    if (e) {
      dyn_exited(s, e, why.code);
      return;
    }
  } else {
    size_t i = find_pid(s, from);
    if (i != SIZE_MAX && from != RUSM_PID_NONE) {
      kid_exited(s, i, why.code);
      return;
    }
  }
  if (from != RUSM_PID_NONE && zombie_take(s, from))
    return;
  if (why.code != RUSM_EXIT_NORMAL)
    terminate(s, why);
}

/* ------------------------------------------------------------------ */
/* The supervisor process                                              */
/* ------------------------------------------------------------------ */

static void main_loop(sup *s) {
  for (;;) {
    rusm_msg *m;
    if (rusm_receive(s->self, NULL, -1, &m) != 0)
      continue;
    uint64_t tag = rusm_msg_tag(m);
    rusm_pid_t from = rusm_msg_from(m);
    if (tag == RUSM_TAG_EXIT) {
      rusm_exit_info xi;
      if (rusm_msg_exit(m, &xi) != 0) {
        rusm_msg_free(m);
        continue;
      }
      /* Keep the detail: the reason may become our own exit reason. */
      rusm_reason why = {xi.reason.code, 0, NULL};
      uint8_t *w = grow(s->why, &s->why_cap, xi.reason.len, 1);
      if (w && xi.reason.len > 0) {
        s->why = w;
        memcpy(w, xi.reason.data, xi.reason.len);
        why.len = xi.reason.len;
        why.data = w;
      }
      rusm_msg_free(m);
      handle_exit(s, xi.from, why);
    } else if (tag == TAG_REQ && rusm_msg_len(m) == sizeof(wire_req)) {
      wire_req rq;
      memcpy(&rq, rusm_msg_data(m), sizeof rq);
      rusm_msg_free(m);
      handle_req(s, from, &rq);
    } else if (tag == TAG_RETRY && from == rusm_self(s->self) &&
               rusm_msg_len(m) == sizeof(uint64_t)) {
      uint64_t serial;
      memcpy(&serial, rusm_msg_data(m), sizeof serial);
      rusm_msg_free(m);
      handle_retry(s, serial);
    } else {
      /* Stale Downs and replies, unknown messages: dropped (OTP logs). */
      rusm_msg_free(m);
    }
  }
}

typedef struct init_match {
  uint64_t tag;
  rusm_ref mref;
} init_match;

static bool init_or_down(const rusm_msg *m, void *arg) {
  const init_match *im = arg;
  if (rusm_msg_tag(m) == im->tag)
    return true;
  rusm_down_info d;
  return rusm_msg_tag(m) == RUSM_TAG_DOWN && rusm_msg_down(m, &d) == 0 &&
         d.ref == im->mref;
}

/* Takes the next starter message with tag (copied into out, len bytes),
 * or false when the starter died first (monitored as cmref). */
static bool take_from_starter(rusm_proc *self, uint64_t tag, rusm_ref cmref,
                              void *out, size_t len) {
  init_match im = {tag, cmref};
  rusm_filter f = {0, 0, init_or_down, &im};
  rusm_msg *m;
  if (rusm_receive(self, &f, -1, &m) != 0)
    return false;
  bool ok = rusm_msg_tag(m) == tag && rusm_msg_len(m) == len;
  if (ok)
    memcpy(out, rusm_msg_data(m), len);
  rusm_msg_free(m);
  return ok;
}

/* Starts the initial children in order; on a failure stops the started
 * ones in reverse order and returns the error. */
static int start_initial(sup *s) {
  for (size_t i = 0; i < s->nkids;) {
    bool removed;
    int rc = start_kid(s, i, &removed);
    if (rc < 0) {
      stop_range(s, 0, i, 0);
      return rc;
    }
    if (!removed)
      i++;
  }
  return 0;
}

static void sup_main(rusm_proc *self, void *arg) {
  rusm_pid_t starter = (rusm_pid_t)(uintptr_t)arg;
  rusm_trap_exit(self, true);
  rusm_set_label(self, "supervisor"); /* observers find the tree by it */
  /* Watch the starter while it sends the specs, so that its death cannot
   * leave us waiting for them forever. */
  rusm_ref cmref = 0;
  if (rusm_monitor(self, starter, &cmref) != 0)
    return;
  wire_init in;
  if (!take_from_starter(self, TAG_INIT, cmref, &in, sizeof in))
    return;
  int rc = 0;
  sup *s = rusm__xcalloc(1, sizeof *s);
  if (s && rusm_on_exit(self, sup_free, s) != 0) {
    rusm__xfree(s);
    s = NULL;
  }
  if (!s) {
    rc = RUSM_ENOMEM;
  } else {
    s->self = self;
    s->rt = rusm_proc_rt(self);
    s->parent = in.parent;
    s->flags = in.flags;
    s->dynamic = in.kind == KIND_DYNAMIC;
    s->next_serial = 1;
    if (!s->dynamic && in.nspecs > 0) {
      s->kids = rusm__xcalloc(in.nspecs, sizeof *s->kids);
      if (!s->kids)
        rc = RUSM_ENOMEM;
      else
        s->capkids = in.nspecs;
    }
  }
  for (uint32_t i = 0; i < in.nspecs && rc == 0; i++) {
    wire_spec w;
    if (!take_from_starter(self, TAG_SPEC, cmref, &w, sizeof w))
      return; /* the starter is gone; nobody waits for a reply */
    if (s->dynamic)
      wire_to_child(s, &w, &s->tmpl);
    else
      wire_to_child(s, &w, &s->kids[s->nkids++]);
  }
  rusm_demonitor(self, cmref, RUSM_DEMONITOR_FLUSH);
  if (rc == 0 && !s->dynamic)
    rc = start_initial(s);
  if (rc != 0) {
    /* Unlink first, so that a parent that does not trap exits survives
     * our end; the error is the answer. */
    if (in.parent != RUSM_PID_NONE)
      rusm_unlink(self, in.parent);
    wire_rep rep;
    memset(&rep, 0, sizeof rep);
    rep.ref = in.ref;
    rep.rc = rc;
    if (rusm_send(rusm_proc_rt(self), starter, TAG_REPLY, &rep, sizeof rep))
      rusm_exit_self(self, rusm_reason_str("supervisor: out of memory"));
    return;
  }
  reply_rc(s, starter, in.ref, 0, rusm_self(self));
  main_loop(s);
}

/* ------------------------------------------------------------------ */
/* Public API                                                          */
/* ------------------------------------------------------------------ */

void rusm_sup_flags_init(rusm_sup_flags *f) {
  if (!f)
    return;
  f->strategy = RUSM_ONE_FOR_ONE;
  f->intensity = 1;
  f->period_ms = 5000;
}

/* Spawns the supervisor and hands it the specs (validated by the caller).
 * No heap memory is held across the sends or the wait: a stackful caller
 * killed there must leave nothing behind (its stack is not unwound). */
static int start_sup(rusm_rt *rt, const rusm_sup_flags *flags, uint32_t kind,
                     const rusm_child_spec *specs, size_t n,
                     const rusm_spawn_opts *opts, rusm_pid_t *out) {
  rusm__caller c;
  int rc = rusm__caller_enter(rt, &c);
  if (rc != 0)
    return rc;
  /* The parent is the calling process: a thread attached only for this
   * call would end right away and take the supervisor with it. */
  if (c.temp && opts && opts->link) {
    rusm__caller_leave(&c);
    return RUSM_ECONTEXT;
  }
  rusm_spawn_opts so;
  rusm_spawn_opts_init(&so);
  if (opts) {
    so.stack_size = opts->stack_size;
    so.scheduler = opts->scheduler;
    so.link = opts->link;
  }
  /* A shed request would leave its caller waiting forever: requests are
   * user messages, so the supervisor's mailbox is never bounded. */
  so.mailbox_capacity = UINT32_MAX;
  rusm_ref mref = 0;
  so.monitor = true;
  so.monitor_ref = &mref;
  rusm_pid_t me = rusm_self(c.me), pid = RUSM_PID_NONE;
  rc = rusm_spawn_stackful(rt, sup_main, (void *)(uintptr_t)me, &so, &pid);
  if (rc != 0) {
    rusm__caller_leave(&c);
    return rc;
  }
  if (opts && opts->monitor) {
    rc = rusm_monitor(c.me, pid, opts->monitor_ref);
    if (rc != 0)
      goto undo;
  }
  wire_init in;
  memset(&in, 0, sizeof in);
  in.ref = rusm__call_ref();
  in.parent = so.link ? me : RUSM_PID_NONE;
  in.flags = *flags;
  in.kind = kind;
  in.nspecs = (uint32_t)n;
  rc = rusm_send(rt, pid, TAG_INIT, &in, sizeof in);
  for (size_t i = 0; i < n && rc == 0; i++) {
    wire_spec w;
    spec_to_wire(&specs[i], &w);
    if (kind == KIND_DYNAMIC)
      w.arg = NULL; /* each dynamic child gets its own */
    rc = rusm_send(rt, pid, TAG_SPEC, &w, sizeof w);
  }
  if (rc != 0)
    goto undo;
  rusm_msg *m = NULL;
  rc = rusm__call_wait(&c, mref, TAG_REPLY, in.ref, -1, &m);
  if (rc == 0) {
    wire_rep rep;
    memset(&rep, 0, sizeof rep);
    memcpy(&rep, rusm_msg_data(m),
           rusm_msg_len(m) < sizeof rep ? rusm_msg_len(m) : sizeof rep);
    rusm_msg_free(m);
    rc = rep.rc;
  }
  if (rc == 0 && out)
    *out = pid;
  /* No parent: a top-level supervisor of the application, stopped first
   * (in reverse start order) by rusm_rt_shutdown. */
  if (rc == 0 && !so.link)
    rusm_rt_add_root(rt, pid);
  rusm__caller_leave(&c);
  return rc;
undo:
  if (so.link)
    rusm_unlink(c.me, pid);
  rusm_exit(rt, pid, RUSM_REASON_KILL);
  rusm_demonitor(c.me, mref, RUSM_DEMONITOR_FLUSH);
  rusm__caller_leave(&c);
  return rc;
}

int rusm_sup_start(rusm_rt *rt, const rusm_sup_flags *flags,
                   const rusm_child_spec *children, size_t n,
                   const rusm_spawn_opts *opts, rusm_pid_t *out) {
  rusm_sup_flags defaults;
  rusm_sup_flags_init(&defaults);
  if (!flags)
    flags = &defaults;
  if (!rt || (n > 0 && !children) || n > UINT32_MAX || !flags_ok(flags))
    return RUSM_EINVAL;
  for (size_t i = 0; i < n; i++) {
    wire_spec w;
    int rc = spec_to_wire(&children[i], &w);
    if (rc != 0)
      return rc;
    for (size_t j = 0; j < i; j++)
      if (strcmp(children[i].id, children[j].id) == 0)
        return RUSM_EEXIST;
  }
  return start_sup(rt, flags, KIND_STATIC, children, n, opts, out);
}

int rusm_dynsup_start(rusm_rt *rt, const rusm_sup_flags *flags,
                      const rusm_child_spec *tmpl, const rusm_spawn_opts *opts,
                      rusm_pid_t *out) {
  rusm_sup_flags defaults;
  rusm_sup_flags_init(&defaults);
  if (!flags)
    flags = &defaults;
  if (!rt || !flags_ok(flags) || flags->strategy != RUSM_ONE_FOR_ONE)
    return RUSM_EINVAL;
  wire_spec w;
  int rc = spec_to_wire(tmpl, &w);
  if (rc != 0)
    return rc;
  return start_sup(rt, flags, KIND_DYNAMIC, tmpl, 1, opts, out);
}

int rusm_sup_stop(rusm_rt *rt, rusm_pid_t sup_pid, int64_t timeout_ms) {
  if (!rt || sup_pid == RUSM_PID_NONE)
    return RUSM_EINVAL;
  rusm__caller c;
  int rc = rusm__caller_enter(rt, &c);
  if (rc != 0)
    return rc;
  if (sup_pid == rusm_self(c.me)) {
    rusm__caller_leave(&c);
    return RUSM_ECONTEXT;
  }
  /* A linked caller (the parent, usually) asked for the stop: it must not
   * die of it. OTP's supervisor:stop/1 spares the parent likewise. */
  rusm_unlink(c.me, sup_pid);
  rusm_ref mref = 0;
  rc = rusm_monitor(c.me, sup_pid, &mref);
  if (rc == 0) {
    rc = rusm_exit(rt, sup_pid, RUSM_REASON_SHUTDOWN);
    if (rc != 0) {
      rusm_demonitor(c.me, mref, RUSM_DEMONITOR_FLUSH);
    } else {
      rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
      f.pred = down_of;
      f.pred_arg = &mref;
      rusm_msg *m = NULL;
      rc = rusm_receive(c.me, &f, timeout_ms < 0 ? -1 : timeout_ms, &m);
      if (rc == 0)
        rusm_msg_free(m);
      else if (rc == RUSM_ETIMEDOUT)
        rusm_demonitor(c.me, mref, RUSM_DEMONITOR_FLUSH);
      else if (rc == RUSM_ESHUTDOWN)
        c.me = NULL; /* killed while waiting: no longer a process */
    }
  }
  rusm__caller_leave(&c);
  return rc;
}

/* One request/reply round trip. */
static int sup_call(rusm_rt *rt, rusm_pid_t sup_pid, wire_req *rq,
                    rusm_msg **out) {
  if (!rt || sup_pid == RUSM_PID_NONE)
    return RUSM_EINVAL;
  rusm__caller c;
  int rc = rusm__caller_enter(rt, &c);
  if (rc != 0)
    return rc;
  rc = rusm__call(&c, sup_pid, TAG_REQ, rq, sizeof *rq, TAG_REPLY, out);
  rusm__caller_leave(&c);
  return rc;
}

/* A call whose reply is a plain wire_rep. */
static int simple_call(rusm_rt *rt, rusm_pid_t sup_pid, wire_req *rq,
                       wire_rep *rep) {
  rusm_msg *m = NULL;
  memset(rep, 0, sizeof *rep);
  int rc = sup_call(rt, sup_pid, rq, &m);
  if (rc != 0)
    return rc;
  size_t len = rusm_msg_len(m);
  memcpy(rep, rusm_msg_data(m), len < sizeof *rep ? len : sizeof *rep);
  rusm_msg_free(m);
  return rep->rc;
}

static int id_req(wire_req *rq, uint32_t op, const char *id) {
  memset(rq, 0, sizeof *rq);
  rq->op = op;
  if (!id)
    return RUSM_EINVAL;
  size_t len = strnlen(id, ID_MAX);
  if (len >= ID_MAX)
    return RUSM_ENOTFOUND; /* no child can have that id */
  memcpy(rq->spec.id, id, len);
  return 0;
}

int rusm_sup_start_child(rusm_rt *rt, rusm_pid_t sup_pid,
                         const rusm_child_spec *spec, rusm_pid_t *out) {
  wire_req rq;
  memset(&rq, 0, sizeof rq);
  rq.op = OP_START_CHILD;
  int rc = spec_to_wire(spec, &rq.spec);
  if (rc != 0)
    return rc;
  wire_rep rep;
  rc = simple_call(rt, sup_pid, &rq, &rep);
  if (rc == 0 && out)
    *out = rep.pid;
  return rc;
}

int rusm_sup_terminate_child(rusm_rt *rt, rusm_pid_t sup_pid, const char *id) {
  wire_req rq;
  int rc = id_req(&rq, OP_TERMINATE, id);
  if (rc != 0)
    return rc;
  wire_rep rep;
  return simple_call(rt, sup_pid, &rq, &rep);
}

int rusm_sup_restart_child(rusm_rt *rt, rusm_pid_t sup_pid, const char *id,
                           rusm_pid_t *out) {
  wire_req rq;
  int rc = id_req(&rq, OP_RESTART, id);
  if (rc != 0)
    return rc;
  wire_rep rep;
  rc = simple_call(rt, sup_pid, &rq, &rep);
  if (rc == 0 && out)
    *out = rep.pid;
  return rc;
}

int rusm_sup_delete_child(rusm_rt *rt, rusm_pid_t sup_pid, const char *id) {
  wire_req rq;
  int rc = id_req(&rq, OP_DELETE, id);
  if (rc != 0)
    return rc;
  wire_rep rep;
  return simple_call(rt, sup_pid, &rq, &rep);
}

int rusm_sup_which_children(rusm_rt *rt, rusm_pid_t sup_pid,
                            rusm_child_info *out, size_t cap, size_t *count) {
  if (cap > 0 && !out)
    return RUSM_EINVAL;
  wire_req rq;
  memset(&rq, 0, sizeof rq);
  rq.op = OP_WHICH;
  rq.cap = cap;
  rusm_msg *m = NULL;
  int rc = sup_call(rt, sup_pid, &rq, &m);
  if (rc != 0)
    return rc;
  wire_rep rep;
  memset(&rep, 0, sizeof rep);
  size_t len = rusm_msg_len(m);
  memcpy(&rep, rusm_msg_data(m), len < sizeof rep ? len : sizeof rep);
  rc = rep.rc;
  if (rc == 0) {
    size_t n = rep.ninfo;
    if (n > cap || len < sizeof rep + n * sizeof *out)
      n = 0; /* malformed: not from a supervisor */
    if (n > 0)
      memcpy(out, rusm_msg_data(m) + sizeof rep, n * sizeof *out);
    if (count)
      *count = (size_t)rep.total;
  }
  rusm_msg_free(m);
  return rc;
}

int rusm_sup_count_children(rusm_rt *rt, rusm_pid_t sup_pid,
                            rusm_child_counts *out) {
  if (!out)
    return RUSM_EINVAL;
  wire_req rq;
  memset(&rq, 0, sizeof rq);
  rq.op = OP_COUNT;
  wire_rep rep;
  int rc = simple_call(rt, sup_pid, &rq, &rep);
  if (rc == 0)
    *out = rep.counts;
  return rc;
}

int rusm_sup_info_get(rusm_rt *rt, rusm_pid_t sup_pid, rusm_sup_info *out) {
  if (!out)
    return RUSM_EINVAL;
  wire_req rq;
  memset(&rq, 0, sizeof rq);
  rq.op = OP_INFO;
  wire_rep rep;
  int rc = simple_call(rt, sup_pid, &rq, &rep);
  if (rc == 0)
    *out = rep.info;
  return rc;
}

int rusm_dynsup_start_child(rusm_rt *rt, rusm_pid_t sup_pid, void *arg,
                            rusm_pid_t *out) {
  wire_req rq;
  memset(&rq, 0, sizeof rq);
  rq.op = OP_DYN_START;
  rq.arg = arg;
  wire_rep rep;
  int rc = simple_call(rt, sup_pid, &rq, &rep);
  if (rc == 0 && out)
    *out = rep.pid;
  return rc;
}

int rusm_dynsup_terminate_child(rusm_rt *rt, rusm_pid_t sup_pid,
                                rusm_pid_t child_pid) {
  wire_req rq;
  memset(&rq, 0, sizeof rq);
  rq.op = OP_DYN_TERMINATE;
  rq.pid = child_pid;
  wire_rep rep;
  return simple_call(rt, sup_pid, &rq, &rep);
}
