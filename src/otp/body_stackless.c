/*
 * body_stackless.c — processes as callbacks (init / handle / terminate):
 * the lightest kind, with no stack of their own. The body pulls matching
 * messages until it must wait, spends the slice's budget, or stops.
 */
#include <string.h>

#include "otp/internal.h"

/* Applies what a callback asked for; true when the process stops (its
 * reason copied into p->exit_box, which the reaping path frees). */
static bool apply(rusm_proc *p, const rusm_next *n) {
  if (n->stop) {
    rusm__reason_free(p->exit_box);
    p->exit_box = NULL;
    if (n->reason.code == RUSM_EXIT_NORMAL && !n->reason.len)
      return true; /* no box: stop_step reports normal */
    p->exit_box = rusm__reason_copy(n->reason.code, n->reason.data,
                                    n->reason.data ? n->reason.len : 0);
    if (!p->exit_box) /* out of memory: keep the code, lose the bytes */
      p->exit_box = rusm__reason_copy(n->reason.code, NULL, 0);
    return true;
  }
  p->b.sl.has_filter = n->has_filter;
  if (n->has_filter)
    p->b.sl.filter = n->filter;
  if (n->timeout_ms < 0)
    p->b.sl.deadline_ns = -1;
  else if (n->timeout_ms == 0)
    p->b.sl.deadline_ns = 0; /* poll */
  else
    p->b.sl.deadline_ns = rusm_now_ns() + n->timeout_ms * 1000000;
  return false;
}

static rusm_step stop_step(rusm_proc *p) {
  rusm_step st = {RUSM_STEP_EXIT, -1, RUSM_REASON_NORMAL};
  if (p->exit_box) {
    st.reason.code = p->exit_box->code;
    st.reason.len = p->exit_box->len;
    st.reason.data = p->exit_box->len ? p->exit_box->data : NULL;
  }
  return st;
}

static rusm_step sl_step(rusm_proc *p, void *state) {
  (void)state;
  const rusm_stackless_ops *ops = p->b.sl.ops;
  rusm__sched *s = rusm__tl.sched;
  if (!p->b.sl.started) {
    p->b.sl.started = true;
    rusm_next n = ops->init ? ops->init(p, &p->state) : rusm_next_wait();
    if (apply(p, &n))
      return stop_step(p);
  }
  for (;;) {
    if (p->exit_pending)
      return (rusm_step){RUSM_STEP_YIELD, -1, RUSM_REASON_NORMAL};
    rusm_msg *m;
    if (rusm_try_receive(p, p->b.sl.has_filter ? &p->b.sl.filter : NULL, &m) ==
        0) {
      if (!ops->handle) { /* discarded: the pending timeout stays */
        rusm__free_node(m);
        continue;
      }
      rusm_next n = ops->handle(p, p->state, m);
      bool stop = apply(p, &n); /* first: a reason may point into m */
      rusm__free_node(m);
      if (stop)
        return stop_step(p);
    } else if (p->exit_pending) {
      continue;
    } else if (p->b.sl.deadline_ns >= 0) {
      int64_t dl = p->b.sl.deadline_ns;
      if (dl != 0 && rusm_now_ns() < dl)
        return (rusm_step){RUSM_STEP_WAIT, dl, RUSM_REASON_NORMAL};
      p->b.sl.deadline_ns = -1;
      rusm__charge(1);
      rusm_next n = ops->handle ? ops->handle(p, p->state, NULL)
                                : rusm_next_stop(RUSM_REASON_NORMAL);
      if (apply(p, &n))
        return stop_step(p);
    } else {
      return (rusm_step){RUSM_STEP_WAIT, -1, RUSM_REASON_NORMAL};
    }
    if (s->slice <= 0)
      return (rusm_step){RUSM_STEP_YIELD, -1, RUSM_REASON_NORMAL};
  }
}

static void sl_destroy(rusm_proc *p, void *state, const rusm_reason *why) {
  const rusm_stackless_ops *ops = p->b.sl.ops;
  if (ops->terminate)
    ops->terminate(p, state, why);
}

const rusm_body_ops rusm__stackless_ops = {"stackless", sl_step, sl_destroy};

int rusm_spawn_stackless(rusm_rt *rt, const rusm_stackless_ops *ops, void *arg,
                         const rusm_spawn_opts *opts, rusm_pid_t *out) {
  if (!rt || !ops || (!ops->init && !ops->handle))
    return RUSM_EINVAL;
  if (atomic_load_explicit(&rt->closing, memory_order_relaxed))
    return RUSM_ESHUTDOWN;
  rusm_proc *p = rusm__proc_alloc(rt);
  if (!p)
    return RUSM_ELIMIT;
  p->body = RUSM__B_STACKLESS;
  p->ops = &rusm__stackless_ops;
  p->state = arg;
  memset(&p->b.sl, 0, sizeof p->b.sl);
  p->b.sl.ops = ops;
  p->b.sl.deadline_ns = -1;
  return rusm__spawn(rt, p, opts, out);
}
