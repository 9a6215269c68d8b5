/*
 * shutdown.c — graceful runtime shutdown with a deadline (OTP's
 * init:stop/0 order: the application's top-level supervisors stop in
 * reverse start order, each stopping its children with their shutdown
 * specs; then stragglers; then kill at the deadline).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "otp/internal.h"

int rusm_rt_add_root(rusm_rt *rt, rusm_pid_t pid) {
  if (!rt || pid == RUSM_PID_NONE)
    return RUSM_EINVAL;
  int rc = 0;
  pthread_mutex_lock(&rt->mod_lock);
  if (rt->nroots == rt->roots_cap) {
    uint32_t cap = rt->roots_cap ? rt->roots_cap * 2 : 8;
    rusm_pid_t *n = rusm__alloc(cap * sizeof *n);
    if (!n) {
      rc = RUSM_ENOMEM;
    } else {
      if (rt->nroots)
        memcpy(n, rt->roots, rt->nroots * sizeof *n);
      rusm__free(rt->roots, rt->roots_cap * sizeof *n);
      rt->roots = n;
      rt->roots_cap = cap;
    }
  }
  if (rc == 0)
    rt->roots[rt->nroots++] = pid;
  pthread_mutex_unlock(&rt->mod_lock);
  return rc;
}

void rusm__roots_free(rusm_rt *rt) {
  rusm__free(rt->roots, rt->roots_cap * sizeof *rt->roots);
  rt->roots = NULL;
  rt->nroots = rt->roots_cap = 0;
}

static int64_t left_ms(int64_t deadline) {
  int64_t l = (deadline - rusm_now_ns()) / 1000000;
  return l > 0 ? l : 0;
}

static bool is_down_of(const rusm_msg *m, void *arg) {
  rusm_down_info d;
  return rusm_msg_down(m, &d) == 0 && d.ref == *(const rusm_ref *)arg;
}

/* Waits for the Down of ref until deadline; true when it came. Other
 * messages of the caller stay queued. */
static bool await_down(rusm_proc *me, rusm_ref ref, int64_t deadline) {
  rusm_msg *m;
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  f.pred = is_down_of;
  f.pred_arg = &ref;
  if (rusm_receive(me, &f, left_ms(deadline), &m) != 0)
    return false;
  rusm_msg_free(m);
  return true;
}

/* Calls fn(p) for every live, non-attached process (holding a ref). */
static void each_live(rusm_rt *rt, void (*fn)(rusm_rt *, rusm_proc *, void *),
                      void *arg) {
  uint32_t used = atomic_load_explicit(&rt->slots_used, memory_order_acquire);
  for (uint32_t i = 0; i < used; i++) {
    rusm_proc *p = rusm__proc_at(rt, i);
    if (!p || !atomic_load_explicit(&p->refs, memory_order_relaxed))
      continue;
    rusm_proc *q = rusm__proc_get(rt, p->pid);
    if (!q)
      continue;
    if (!rusm__exited(q) && q->body != RUSM__B_ATTACHED)
      fn(rt, q, arg);
    rusm__proc_unref(q);
  }
}

static void ask_shutdown(rusm_rt *rt, rusm_proc *p, void *arg) {
  (void)arg;
  rusm_exit(rt, p->pid, RUSM_REASON_SHUTDOWN);
}

static void kill_one(rusm_rt *rt, rusm_proc *p, void *arg) {
  rusm_shutdown_report *r = arg;
  if (rusm_kill(rt, p->pid) == 0) {
    if (r->nkilled_listed < RUSM_SHUTDOWN_REPORT_MAX)
      r->killed_pids[r->nkilled_listed++] = p->pid;
    r->killed++;
  }
}

static uint64_t non_attached_live(rusm_rt *rt) {
  uint32_t live = atomic_load_explicit(&rt->live, memory_order_relaxed);
  uint32_t att = atomic_load_explicit(&rt->attached, memory_order_relaxed);
  return live > att ? live - att : 0;
}

int rusm_rt_shutdown(rusm_rt *rt, int64_t deadline_ms,
                     rusm_shutdown_report *out) {
  if (!rt || deadline_ms < 0)
    return RUSM_EINVAL;
  if (rusm__tl.sched)
    return RUSM_ECONTEXT;
  rusm_shutdown_report rep;
  memset(&rep, 0, sizeof rep);
  int64_t t0 = rusm_now_ns();
  int64_t deadline = t0 + deadline_ms * 1000000;
  uint64_t before = non_attached_live(rt);

  /* Wait through a temporary attachment unless the caller is one. */
  rusm_proc *me = rusm__tl.cur;
  bool temp = false;
  if (!me || me->rt != rt) {
    if (me)
      return RUSM_ECONTEXT; /* attached to another runtime */
    int rc = rusm_attach(rt, &me);
    if (rc)
      return rc;
    temp = true;
  }
  atomic_store(&rt->closing, true);

  pthread_mutex_lock(&rt->mod_lock);
  uint32_t n = rt->nroots;
  rusm_pid_t *roots = n ? rusm__alloc(n * sizeof *roots) : NULL;
  if (roots)
    memcpy(roots, rt->roots, n * sizeof *roots);
  else
    n = 0;
  pthread_mutex_unlock(&rt->mod_lock);

  for (uint32_t i = n; i-- > 0;) {
    rusm_ref ref;
    if (!rusm_is_alive(rt, roots[i]) || rusm_monitor(me, roots[i], &ref))
      continue;
    rep.roots++;
    rusm_exit(rt, roots[i], RUSM_REASON_SHUTDOWN);
    if (await_down(me, ref, deadline))
      rep.roots_stopped++;
    else
      rusm_demonitor(me, ref, RUSM_DEMONITOR_FLUSH);
  }
  rusm__free(roots, n * sizeof *roots);

  /* Everything else: ask, then wait until the deadline. */
  each_live(rt, ask_shutdown, NULL);
  while (non_attached_live(rt) && left_ms(deadline) > 0) {
    /* wait_idle counts attached threads as idle: exactly what we need */
    int64_t l = left_ms(deadline);
    rusm_rt_wait_idle(rt, l < 50 ? l : 50);
  }
  if (non_attached_live(rt)) {
    each_live(rt, kill_one, &rep);
    rusm_rt_wait_idle(rt, 10000);
  }
  uint64_t after = non_attached_live(rt);
  rep.exited = before > rep.killed + after ? before - rep.killed - after : 0;
  rep.elapsed_ms = (rusm_now_ns() - t0) / 1000000;
  if (temp)
    rusm_detach(me);
  if (out)
    *out = rep;
  return rep.killed ? RUSM_ETIMEDOUT : 0;
}

int rusm_shutdown_report_format(const rusm_shutdown_report *r, char *buf,
                                size_t len) {
  if (!r)
    return RUSM_EINVAL;
  int n = snprintf(
      buf, len,
      "shutdown: %" PRIu32 "/%" PRIu32 " top-level stopped, %" PRIu64
      " exited cleanly, %" PRIu64 " killed at the deadline, %" PRId64 " ms",
      r->roots_stopped, r->roots, r->exited, r->killed, r->elapsed_ms);
  for (uint32_t i = 0; i < r->nkilled_listed && n >= 0; i++) {
    char pid[32];
    rusm_pid_format(r->killed_pids[i], pid, sizeof pid);
    size_t at = (size_t)n < len ? (size_t)n : len;
    n += snprintf(buf + at, len - at, "%s%s", i ? " " : "\n  killed: ", pid);
  }
  return n;
}
