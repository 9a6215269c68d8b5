/*
 * body_stackful.c — processes as C functions with a blocking receive, run
 * as coroutines on pooled stacks (coro.h). The stack is taken lazily on
 * the first run, on the scheduler thread that owns the pool. A killed
 * coroutine is never resumed: everything it owns is released by its
 * on_exit hooks on the common reaping path, never by unwinding.
 */
#include <string.h>

#include "otp/internal.h"

static void coro_entry(void *arg) {
  rusm_proc *p = arg;
  p->b.sf.fn(p, p->b.sf.arg);
  p->b.sf.step = (rusm_step){RUSM_STEP_EXIT, -1, RUSM_REASON_NORMAL};
  rusm__coro_finish(&p->b.sf.coro);
}

static rusm_step sf_step(rusm_proc *p, void *state) {
  (void)state;
  rusm__sched *s = rusm__tl.sched;
  if (!p->b.sf.coro.stack.map) {
    rusm__stack st;
    if (rusm__stack_get(&s->stacks, p->b.sf.coro.stack.size, &st) != 0) {
      static const char msg[] = "no memory for a stack";
      return (rusm_step){
          RUSM_STEP_EXIT,
          -1,
          {RUSM_EXIT_CUSTOM, sizeof msg - 1, (const uint8_t *)msg}};
    }
    rusm__coro_init(&p->b.sf.coro, st, coro_entry, p);
    atomic_store_explicit(&p->stack_bytes, (uint32_t)st.size,
                          memory_order_relaxed);
  }
  p->b.sf.inside = true;
  rusm__coro_resume(&p->b.sf.coro, &s->coro_ctx);
  p->b.sf.inside = false;
  return p->b.sf.step;
}

static void sf_destroy(rusm_proc *p, void *state, const rusm_reason *why) {
  (void)state;
  (void)why;
  if (p->b.sf.coro.stack.map) {
    rusm__coro_release(&p->b.sf.coro);
    rusm__stack_put(&rusm__tl.sched->stacks, &p->b.sf.coro.stack);
    memset(&p->b.sf.coro.stack, 0, sizeof p->b.sf.coro.stack);
  }
}

const rusm_body_ops rusm__stackful_ops = {"stackful", sf_step, sf_destroy};

int rusm_spawn_stackful(rusm_rt *rt, rusm_stackful_fn fn, void *arg,
                        const rusm_spawn_opts *opts, rusm_pid_t *out) {
  if (!rt || !fn)
    return RUSM_EINVAL;
  if (atomic_load_explicit(&rt->closing, memory_order_relaxed))
    return RUSM_ESHUTDOWN;
  uint32_t size =
      opts && opts->stack_size ? opts->stack_size : rt->opts.stack_size;
  if (size < 4096 || size > (1u << 30))
    return RUSM_EINVAL;
  rusm_proc *p = rusm__proc_alloc(rt);
  if (!p)
    return RUSM_ELIMIT;
  p->body = RUSM__B_STACKFUL;
  p->ops = &rusm__stackful_ops;
  p->state = NULL;
  memset(&p->b.sf, 0, sizeof p->b.sf);
  p->b.sf.fn = fn;
  p->b.sf.arg = arg;
  p->b.sf.coro.stack.size = size; /* wanted size until the stack exists */
  return rusm__spawn(rt, p, opts, out);
}

/* True only on the process's own stack: hooks and destroy run on the
 * scheduler's stack with the process still current, and must not yield. */
static bool in_own_coroutine(const rusm_proc *p) {
  return p && p->body == RUSM__B_STACKFUL && p == rusm__tl.cur &&
         p->b.sf.inside;
}

_Noreturn void rusm__stackful_exit_now(rusm_proc *p) {
  p->b.sf.step = (rusm_step){RUSM_STEP_EXIT, -1, RUSM_REASON_NORMAL};
  rusm__coro_finish(&p->b.sf.coro);
}

void rusm_yield(rusm_proc *self) {
  if (!in_own_coroutine(self))
    return;
  if (self->exit_pending)
    rusm__stackful_exit_now(self);
  self->b.sf.step = (rusm_step){RUSM_STEP_YIELD, -1, RUSM_REASON_NORMAL};
  rusm__coro_suspend(&self->b.sf.coro);
}

int rusm_exit_self(rusm_proc *self, rusm_reason reason) {
  if (!in_own_coroutine(self))
    return self ? RUSM_ECONTEXT : RUSM_EINVAL;
  /* exit_box: owned by the reaping path, alive until links have it */
  rusm__reason_box *b =
      rusm__reason_copy(reason.code, reason.data, reason.data ? reason.len : 0);
  rusm__reason_free(self->exit_box);
  self->exit_box = b;
  rusm_step st = {RUSM_STEP_EXIT, -1, {reason.code, 0, NULL}};
  if (b) {
    st.reason.len = b->len;
    st.reason.data = b->len ? b->data : NULL;
  }
  self->b.sf.step = st;
  rusm__coro_finish(&self->b.sf.coro);
}

/* Attached threads block on a futex instead of switching stacks. */
static int attached_wait(rusm_proc *p, int64_t deadline) {
  atomic_store_explicit(&p->b.at.futex, 0, memory_order_relaxed);
  atomic_store_explicit(&p->status, RUSM_STATUS_WAITING, memory_order_relaxed);
  if (!rusm__mbox_park(&p->mbox, &p->cons)) {
    atomic_store_explicit(&p->status, RUSM_STATUS_RUNNING,
                          memory_order_relaxed);
    return 0;
  }
  /* acquire: pairs with the waker's release store (rusm__schedule). */
  while (!atomic_load_explicit(&p->b.at.futex, memory_order_acquire)) {
    int64_t left = -1;
    if (deadline >= 0) {
      left = deadline - rusm_now_ns();
      if (left <= 0) {
        if (rusm__mbox_unpark(&p->mbox, &p->cons))
          break;        /* we took our own wake-up: not parked any more */
        left = 1000000; /* a pusher won: its wake is on the way */
      }
    }
    rusm__futex_wait(&p->b.at.futex, 0, left);
  }
  atomic_store_explicit(&p->status, RUSM_STATUS_RUNNING, memory_order_relaxed);
  return 0;
}

int rusm_receive(rusm_proc *self, const rusm_filter *f, int64_t timeout_ms,
                 rusm_msg **out) {
  if (!self || !out)
    return RUSM_EINVAL;
  if (!in_own_coroutine(self) &&
      !(self == rusm__tl.cur && self->body == RUSM__B_ATTACHED))
    return RUSM_ECONTEXT;
  int64_t deadline = timeout_ms > 0 ? rusm_now_ns() + timeout_ms * 1000000 : -1;
  for (;;) {
    if (rusm_try_receive(self, f, out) == 0)
      return 0;
    if (self->exit_pending) { /* only attached threads get here */
      rusm_proc *p = self;
      rusm__tl.cur = NULL;
      rusm__reap_pending(p);
      return RUSM_ESHUTDOWN;
    }
    if (timeout_ms == 0 || (deadline >= 0 && rusm_now_ns() >= deadline))
      return RUSM_ETIMEDOUT;
    if (self->body == RUSM__B_STACKFUL) {
      self->b.sf.step =
          (rusm_step){RUSM_STEP_WAIT, deadline, RUSM_REASON_NORMAL};
      rusm__coro_suspend(&self->b.sf.coro);
    } else {
      attached_wait(self, deadline);
    }
  }
}

/* ---- attached threads ---- */

static rusm_step at_step(rusm_proc *p, void *state) {
  (void)p;
  (void)state;
  return (rusm_step){RUSM_STEP_WAIT, -1, RUSM_REASON_NORMAL};
}

const rusm_body_ops rusm__attached_ops = {"attached", at_step, NULL};

int rusm_attach(rusm_rt *rt, rusm_proc **out) {
  if (!rt || !out)
    return RUSM_EINVAL;
  if (rusm__tl.sched)
    return RUSM_ECONTEXT;
  if (rusm__tl.cur)
    return RUSM_EEXIST;
  if (atomic_load_explicit(&rt->closing, memory_order_relaxed))
    return RUSM_ESHUTDOWN;
  rusm_proc *p = rusm__proc_alloc(rt);
  if (!p)
    return RUSM_ELIMIT;
  p->body = RUSM__B_ATTACHED;
  p->ops = &rusm__attached_ops;
  p->state = NULL;
  memset(&p->b.at, 0, sizeof p->b.at);
  rusm__spawn(rt, p, NULL, NULL);
  rusm__tl.cur = p;
  *out = p;
  return 0;
}

void rusm_detach(rusm_proc *self) {
  /* Only the attached thread itself, and only while its process lives
   * (a kill may have ended it already: then the struct is not ours). */
  if (!self || self != rusm__tl.cur || self->body != RUSM__B_ATTACHED)
    return;
  rusm__tl.cur = NULL;
  if (rusm__drain(self))
    rusm__reap_pending(self);
  else
    rusm__proc_reap(self, RUSM_EXIT_NORMAL, NULL, 0);
}
