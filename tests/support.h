/*
 * support.h — helpers shared by the unit tests (header only).
 *
 * cmocka's assert_* macros longjmp to the test's own frame, so they work
 * only on the test thread. Code running as a process body (on a scheduler
 * thread) or on a helper pthread records failures with T_CHECK instead; the
 * test thread turns them into a cmocka failure in t_stop().
 *
 * Tests wait on events (messages to the attached test thread), with
 * T_GUARD_MS only as a failure guard.
 */
#ifndef RUSM_TESTS_SUPPORT_H
#define RUSM_TESTS_SUPPORT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rusm/metrics.h"
#include "rusm/otp.h"

#define T_UNUSED __attribute__((unused))

/* Failure guard for every wait: never reached when things work. */
#define T_GUARD_MS 10000

/* Sanitizer builds run the same tests with smaller sizes. */
#ifdef RUSM_SANITIZED
#define T_SCALE(full, small) (small)
#else
#define T_SCALE(full, small) (full)
#endif

/* Control tags used by the helpers (user tags: top bit clear). Data tags of
 * the tests are small numbers, so a mask on the high bits tells them apart. */
#define T_TAG_CTL UINT64_C(0x7e00000000000000)
#define T_TAG_CTL_MASK UINT64_C(0xffffffffffff0000)
#define T_TAG_NOTE (T_TAG_CTL | 1)
#define T_TAG_PING (T_TAG_CTL | 2)
#define T_TAG_PONG (T_TAG_CTL | 3)
#define T_TAG_STOP (T_TAG_CTL | 4)
#define T_TAG_GO (T_TAG_CTL | 5)
#define T_TAG_DONE (T_TAG_CTL | 6)
#define T_TAG_READY (T_TAG_CTL | 7)
#define T_TAG_INFO (T_TAG_CTL | 8)

/* ------------------------------------------------------------------ */
/* Checks off the test thread                                          */
/* ------------------------------------------------------------------ */

static atomic_int t_failures T_UNUSED;

#define T_CHECK(cond)                                                          \
  do {                                                                         \
    if (!(cond)) {                                                             \
      atomic_fetch_add_explicit(&t_failures, 1, memory_order_relaxed);         \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                          \
  } while (0)

static inline void t_assert_no_failures(void) {
  int n = atomic_exchange(&t_failures, 0);
  if (n != 0)
    fail_msg("%d check(s) failed off the test thread (see stderr)", n);
}

/* ------------------------------------------------------------------ */
/* Runtime + attached test thread                                      */
/* ------------------------------------------------------------------ */

typedef struct t_env {
  rusm_rt *rt;
  rusm_proc *me; /* the test thread, attached */
  rusm_pid_t pid;
} t_env;

/* The runtime of the running test: when a test fails half-way (cmocka
 * longjmps out of it), the next t_start() destroys it, so one failure does
 * not cascade into every later test. */
static rusm_rt *t_live_rt T_UNUSED;

static inline void t_forget(void) { t_live_rt = NULL; }

static inline void t_cleanup_failed(void) {
  if (t_live_rt != NULL) {
    fprintf(stderr, "(destroying the runtime a failed test left behind)\n");
    rusm_rt_destroy(t_live_rt); /* detaches this thread too */
    t_live_rt = NULL;
    atomic_store(&t_failures, 0);
  }
}

static inline void t_start_opts(t_env *e, const rusm_rt_opts *o) {
  t_cleanup_failed();
  memset(e, 0, sizeof *e);
  int rc = rusm_rt_create(o, &e->rt);
  if (rc != 0)
    fail_msg("rusm_rt_create: %s", rusm_err_name(rc));
  assert_non_null(e->rt);
  t_live_rt = e->rt;
  rc = rusm_attach(e->rt, &e->me);
  if (rc != 0)
    fail_msg("rusm_attach: %s", rusm_err_name(rc));
  e->pid = rusm_self(e->me);
  assert_true(e->pid != RUSM_PID_NONE);
}

/* schedulers: 0 for the default (one per online core). */
static inline void t_start(t_env *e, uint32_t schedulers) {
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = schedulers;
  t_start_opts(e, &o);
}

static inline void t_stop(t_env *e) {
  if (e->me != NULL)
    rusm_detach(e->me);
  rusm_rt_destroy(e->rt);
  t_live_rt = NULL;
  e->rt = NULL;
  e->me = NULL;
  t_assert_no_failures();
}

/* Whether the test name passes $RUSM_TEST_FILTER: comma-separated words,
 * "x" keeps tests whose name contains x, "-x" drops them. */
static inline bool t_selected(const char *name, const char *filter) {
  if (filter == NULL || *filter == '\0')
    return true;
  bool any_keep = false, kept = false;
  const char *p = filter;
  while (*p != '\0') {
    size_t len = strcspn(p, ",");
    bool drop = *p == '-';
    char word[128];
    size_t wl = len - (drop ? 1 : 0);
    if (wl >= sizeof word)
      wl = sizeof word - 1;
    memcpy(word, p + (drop ? 1 : 0), wl);
    word[wl] = '\0';
    bool hit = wl > 0 && strstr(name, word) != NULL;
    if (drop && hit)
      return false;
    if (!drop) {
      any_keep = true;
      kept = kept || hit;
    }
    p += len;
    if (*p == ',')
      p++;
  }
  return !any_keep || kept;
}

/* Runs the tests that $RUSM_TEST_FILTER selects (all without it). */
static inline int t_run(const char *group, const struct CMUnitTest *tests,
                        size_t n) {
  const char *filter = getenv("RUSM_TEST_FILTER");
  struct CMUnitTest *sel = calloc(n ? n : 1, sizeof *sel);
  size_t k = 0;
  if (sel == NULL)
    return 1;
  for (size_t i = 0; i < n; i++)
    if (t_selected(tests[i].name, filter))
      sel[k++] = tests[i];
  int rc = _cmocka_run_group_tests(group, sel, k, NULL, NULL);
  free(sel);
  return rc;
}

#define T_RUN(tests) t_run(#tests, tests, sizeof(tests) / sizeof((tests)[0]))

static inline rusm_metrics *t_metrics(rusm_rt *rt) {
  static rusm_metrics bufs[4];
  static unsigned next;
  rusm_metrics *m = &bufs[next++ % 4];
  memset(m, 0, sizeof *m);
  rusm_metrics_snapshot(rt, m);
  return m;
}

/* Waits until only attached threads are left (guarded). */
static inline void t_wait_idle(t_env *e) {
  int rc = rusm_rt_wait_idle(e->rt, T_GUARD_MS);
  if (rc != 0)
    fail_msg("rusm_rt_wait_idle: %s", rusm_err_name(rc));
}

/* Spins (giving the CPU away) until cond(arg) holds; for states that no
 * message announces (a status flag). False when the guard passed. */
static inline bool t_poll_until(bool (*cond)(void *arg), void *arg) {
  int64_t end = rusm_now_ns() + (int64_t)T_GUARD_MS * 1000000;
  while (!cond(arg)) {
    if (rusm_now_ns() > end)
      return false;
    sched_yield();
  }
  return true;
}

/* ------------------------------------------------------------------ */
/* Messages                                                            */
/* ------------------------------------------------------------------ */

static inline void t_send(rusm_rt *rt, rusm_pid_t to, uint64_t tag,
                          const void *data, size_t len) {
  int rc = rusm_send(rt, to, tag, data, len);
  T_CHECK(rc == 0);
}

static inline void t_send_u64(rusm_rt *rt, rusm_pid_t to, uint64_t tag,
                              uint64_t v) {
  t_send(rt, to, tag, &v, sizeof v);
}

static inline uint64_t t_msg_u64(const rusm_msg *m) {
  uint64_t v = 0;
  if (rusm_msg_len(m) >= sizeof v)
    memcpy(&v, rusm_msg_data(m), sizeof v);
  return v;
}

/* Receives (test thread) a message matching f, failing after the guard. */
static inline rusm_msg *t_recv(t_env *e, const rusm_filter *f) {
  rusm_msg *m = NULL;
  int rc = rusm_receive(e->me, f, T_GUARD_MS, &m);
  if (rc != 0)
    fail_msg("rusm_receive: %s", rusm_err_name(rc));
  assert_non_null(m);
  return m;
}

static inline rusm_msg *t_recv_tag(t_env *e, uint64_t tag) {
  rusm_filter f = rusm_filter_tag(tag);
  return t_recv(e, &f);
}

static inline uint64_t t_recv_u64(t_env *e, uint64_t tag) {
  rusm_msg *m = t_recv_tag(e, tag);
  uint64_t v = t_msg_u64(m);
  rusm_msg_free(m);
  return v;
}

/* Asserts that nothing matching f is queued for the test thread now. */
static inline void t_expect_nothing(t_env *e, const rusm_filter *f) {
  rusm_msg *m = NULL;
  int rc = rusm_receive(e->me, f, 0, &m);
  if (rc == 0) {
    uint64_t tag = rusm_msg_tag(m);
    rusm_msg_free(m);
    fail_msg("unexpected message, tag %#" PRIx64, tag);
  }
  assert_int_equal(rc, RUSM_ETIMEDOUT);
}

/* ------------------------------------------------------------------ */
/* Notes: "this process ended (with this reason)"                      */
/* ------------------------------------------------------------------ */

typedef struct t_note {
  rusm_pid_t pid; /* the process the note is about */
  int32_t code;   /* exit code, -1 when unknown (on_exit hooks) */
  uint32_t len;   /* reason detail length */
  uint64_t value; /* free use */
  char detail[48];
} t_note;

static inline void t_note_send(rusm_rt *rt, rusm_pid_t to, rusm_pid_t about,
                               const rusm_reason *why, uint64_t value) {
  t_note n;
  memset(&n, 0, sizeof n);
  n.pid = about;
  n.code = why != NULL ? (int32_t)why->code : -1;
  n.value = value;
  if (why != NULL) {
    n.len = why->len;
    size_t c = why->len < sizeof n.detail - 1 ? why->len : sizeof n.detail - 1;
    if (c > 0)
      memcpy(n.detail, why->data, c);
  }
  int rc = rusm_send(rt, to, T_TAG_NOTE, &n, sizeof n);
  T_CHECK(rc == 0);
}

static inline bool t_note_is_about(const rusm_msg *m, void *arg) {
  t_note n;
  if (rusm_msg_len(m) != sizeof n)
    return false;
  memcpy(&n, rusm_msg_data(m), sizeof n);
  return n.pid == *(const rusm_pid_t *)arg;
}

/* Waits for the note about pid (RUSM_PID_NONE: any note). */
static inline t_note t_wait_note(t_env *e, rusm_pid_t about) {
  rusm_filter f = rusm_filter_tag(T_TAG_NOTE);
  if (about != RUSM_PID_NONE) {
    f.pred = t_note_is_about;
    f.pred_arg = &about;
  }
  rusm_msg *m = t_recv(e, &f);
  t_note n;
  memset(&n, 0, sizeof n);
  assert_int_equal(rusm_msg_len(m), sizeof n);
  memcpy(&n, rusm_msg_data(m), sizeof n);
  rusm_msg_free(m);
  return n;
}

/* on_exit hook sending a note (code -1) to `to`; frees itself. */
typedef struct t_exit_hook {
  rusm_rt *rt;
  rusm_pid_t to, pid;
  uint64_t value;
} t_exit_hook;

static inline void t_exit_hook_fn(void *arg) {
  t_exit_hook *h = arg;
  t_note_send(h->rt, h->to, h->pid, NULL, h->value);
  free(h);
}

static inline void t_notify_on_exit(rusm_proc *self, rusm_pid_t to,
                                    uint64_t value) {
  t_exit_hook *h = malloc(sizeof *h);
  T_CHECK(h != NULL);
  if (h == NULL)
    return;
  h->rt = rusm_proc_rt(self);
  h->to = to;
  h->pid = rusm_self(self);
  h->value = value;
  int rc = rusm_on_exit(self, t_exit_hook_fn, h);
  T_CHECK(rc == 0);
  if (rc != 0)
    free(h);
}

/* ------------------------------------------------------------------ */
/* Stop requests: STOP carries {code, detail bytes}                    */
/* ------------------------------------------------------------------ */

typedef struct t_stop_req {
  int32_t code;
  char detail[44];
} t_stop_req;

static inline void t_send_stop(rusm_rt *rt, rusm_pid_t to, rusm_exit_code code,
                               const char *detail) {
  t_stop_req r;
  memset(&r, 0, sizeof r);
  r.code = (int32_t)code;
  size_t n = 0;
  if (detail != NULL) {
    n = strlen(detail);
    if (n > sizeof r.detail)
      n = sizeof r.detail;
    memcpy(r.detail, detail, n);
  }
  t_send(rt, to, T_TAG_STOP, &r, offsetof(t_stop_req, detail) + n);
}

/* The reason a STOP message asks for, viewing the message's bytes. */
static inline rusm_reason t_stop_reason(const rusm_msg *m) {
  rusm_reason r = RUSM_REASON_NORMAL;
  size_t len = rusm_msg_len(m);
  if (len < offsetof(t_stop_req, detail))
    return r;
  int32_t code;
  memcpy(&code, rusm_msg_data(m), sizeof code);
  r.code = (rusm_exit_code)code;
  r.len = (uint32_t)(len - offsetof(t_stop_req, detail));
  r.data = r.len > 0 ? rusm_msg_data(m) + offsetof(t_stop_req, detail) : NULL;
  return r;
}

/* ------------------------------------------------------------------ */
/* Ready-made processes                                                */
/* ------------------------------------------------------------------ */

/* handle() for processes that stop in init and never receive. */
static inline rusm_next t_unexpected_handle(rusm_proc *self, void *state,
                                            rusm_msg *m) {
  (void)self;
  (void)state;
  (void)m;
  T_CHECK(!"handle() called unexpectedly");
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static inline rusm_filter t_ctl_filter(void) {
  rusm_filter f = {T_TAG_CTL, T_TAG_CTL_MASK, NULL, NULL};
  return f;
}

/*
 * Stackless waiter. arg: the pid to send notes to, as (void *)(uintptr_t).
 * Takes only control tags (data messages stay queued):
 *   PING -> PONG to the sender with the same payload;
 *   STOP -> exits with the reason in the payload.
 * Its terminate sends a note with the exit reason.
 */
static inline rusm_next t_waiter_init(rusm_proc *self, void **state) {
  (void)self;
  (void)state;
  rusm_filter f = t_ctl_filter();
  return rusm_next_wait_for(&f, -1);
}

static inline rusm_next t_waiter_handle(rusm_proc *self, void *state,
                                        rusm_msg *m) {
  (void)state;
  rusm_filter f = t_ctl_filter();
  T_CHECK(m != NULL);
  if (m == NULL)
    return rusm_next_wait_for(&f, -1);
  if (rusm_msg_tag(m) == T_TAG_PING) {
    int rc = rusm_send(rusm_proc_rt(self), rusm_msg_from(m), T_TAG_PONG,
                       rusm_msg_data(m), rusm_msg_len(m));
    T_CHECK(rc == 0);
  } else if (rusm_msg_tag(m) == T_TAG_STOP) {
    return rusm_next_stop(t_stop_reason(m));
  }
  return rusm_next_wait_for(&f, -1);
}

static inline void t_waiter_terminate(rusm_proc *self, void *state,
                                      const rusm_reason *why) {
  rusm_pid_t to = (rusm_pid_t)(uintptr_t)state;
  t_note_send(rusm_proc_rt(self), to, rusm_self(self), why, 0);
}

static const rusm_stackless_ops t_waiter_ops T_UNUSED = {
    t_waiter_init, t_waiter_handle, t_waiter_terminate};

static inline rusm_pid_t t_spawn_waiter(t_env *e) {
  rusm_pid_t p = RUSM_PID_NONE;
  int rc = rusm_spawn_stackless(e->rt, &t_waiter_ops, (void *)(uintptr_t)e->pid,
                                NULL, &p);
  if (rc != 0)
    fail_msg("rusm_spawn_stackless: %s", rusm_err_name(rc));
  return p;
}

/*
 * Stackful waiter: same protocol as the stackless one; its on_exit hook
 * sends a note with code -1 (hooks do not see the reason).
 */
static inline void t_stackful_waiter(rusm_proc *self, void *arg) {
  rusm_pid_t to = (rusm_pid_t)(uintptr_t)arg;
  rusm_filter f = t_ctl_filter();
  t_notify_on_exit(self, to, 0);
  for (;;) {
    rusm_msg *m = NULL;
    int rc = rusm_receive(self, &f, -1, &m);
    T_CHECK(rc == 0);
    if (rc != 0)
      return;
    if (rusm_msg_tag(m) == T_TAG_PING) {
      rc = rusm_send(rusm_proc_rt(self), rusm_msg_from(m), T_TAG_PONG,
                     rusm_msg_data(m), rusm_msg_len(m));
      T_CHECK(rc == 0);
    } else if (rusm_msg_tag(m) == T_TAG_STOP) {
      rusm_reason r = t_stop_reason(m);
      if (r.code == RUSM_EXIT_NORMAL && r.len == 0) {
        rusm_msg_free(m);
        return;
      }
      /* exit_self never returns, so free m first; the detail then lives
       * on this stack, which the runtime must copy before dropping it. */
      char detail[sizeof(t_stop_req)];
      if (r.len > sizeof detail)
        r.len = sizeof detail;
      if (r.len > 0)
        memcpy(detail, r.data, r.len);
      r.data = r.len > 0 ? (const uint8_t *)detail : NULL;
      rusm_msg_free(m);
      rusm_exit_self(self, r);
      T_CHECK(!"rusm_exit_self returned");
      return;
    }
    rusm_msg_free(m);
  }
}

static inline rusm_pid_t t_spawn_stackful_waiter(t_env *e) {
  rusm_pid_t p = RUSM_PID_NONE;
  int rc = rusm_spawn_stackful(e->rt, t_stackful_waiter,
                               (void *)(uintptr_t)e->pid, NULL, &p);
  if (rc != 0)
    fail_msg("rusm_spawn_stackful: %s", rusm_err_name(rc));
  return p;
}

/* A PING/PONG round trip: proves pid has run and is waiting again. */
static inline void t_ping(t_env *e, rusm_pid_t pid) {
  static uint64_t seq;
  uint64_t v = ++seq;
  t_send_u64(e->rt, pid, T_TAG_PING, v);
  rusm_msg *m = t_recv_tag(e, T_TAG_PONG);
  assert_int_equal(t_msg_u64(m), v);
  assert_true(rusm_msg_from(m) == pid);
  rusm_msg_free(m);
}

#endif
