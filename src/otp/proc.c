/*
 * proc.c — process lifecycle and messaging: spawn, send, signals, receive,
 * and the one reaping path every exit goes through (kill included).
 */
#include <string.h>

#include "otp/internal.h"

_Thread_local rusm__tls rusm__tl;

#define COUNT(rt_, field, n)                                                   \
  do {                                                                         \
    rusm__sched *s_ = rusm__tl.sched;                                          \
    rusm_rt *r_ = (rt_);                                                       \
    if (s_ && s_->rt == r_)                                                    \
      RUSM__INC(s_->c.field, (n));                                             \
    else                                                                       \
      atomic_fetch_add_explicit(&r_->ext.field, (n), memory_order_relaxed);    \
  } while (0)

#define SEND_SAMPLE 64        /* sends between looks at a mailbox length */
#define SEND_PENALTY_FROM 512 /* queued messages before senders pay extra */

void rusm__count_exit(rusm_rt *rt, rusm_exit_code code) {
  COUNT(rt, exited_by[code], 1);
}

void rusm_spawn_opts_init(rusm_spawn_opts *o) {
  memset(o, 0, sizeof *o);
  o->scheduler = -1;
}

/* ---- spawn ---------------------------------------------------------- */

static int remote_parent(rusm_proc *p, rusm__remote_parent *rp) {
  p->lk = p->lk ? p->lk : rusm__calloc(1, sizeof *p->lk);
  if (!p->lk)
    return RUSM_ENOMEM;
  if ((rp->link_to && rusm__map_put(&p->lk->links, rp->link_to, 1) < 0) ||
      (rp->monitor_by &&
       rusm__map_put(&p->lk->mon_in, rp->ref, rp->monitor_by) < 0)) {
    rusm__map_free(&p->lk->links);
    rusm__map_free(&p->lk->mon_in);
    rusm__map_free(&p->lk->mon_out);
    rusm__free(p->lk, sizeof *p->lk);
    p->lk = NULL;
    return RUSM_ENOMEM;
  }
  rp->spawned = p->pid;
  rusm__lk_sync(p);
  return 0;
}

int rusm__spawn(rusm_rt *rt, rusm_proc *p, const rusm_spawn_opts *opts,
                rusm_pid_t *out) {
  rusm__sched *s = rusm__pick_sched(rt, opts ? opts->scheduler : -1);
  p->gen++;
  p->pid = rusm_pid_make(rt->opts.node_id, p->slot, p->gen);
  rusm__mbox_init(&p->mbox, &p->cons);
  p->inner_head = p->inner_tail = NULL;
  p->inner_len = 0;
  atomic_store_explicit(&p->msgs_in, 0, memory_order_relaxed);
  atomic_store_explicit(&p->msgs_out, 0, memory_order_relaxed);
  atomic_store_explicit(&p->shed, 0, memory_order_relaxed);
  uint32_t cap = opts && opts->mailbox_capacity ? opts->mailbox_capacity
                                                : rt->opts.mailbox_capacity;
  /* attached threads (the embedding program) are never bounded */
  p->capacity = cap == UINT32_MAX || p->body == RUSM__B_ATTACHED ? 0 : cap;
  atomic_store_explicit(&p->handled, 0, memory_order_relaxed);
  atomic_store_explicit(&p->reductions, 0, memory_order_relaxed);
  atomic_store_explicit(&p->flags,
                        p->body == RUSM__B_ATTACHED ? RUSM__P_ATTACHED : 0,
                        memory_order_relaxed);
  atomic_store_explicit(&p->sched, s, memory_order_relaxed);
  p->hooks = NULL;
  p->exit_box = NULL;
  p->sig_box = NULL;
  p->exit_pending = false;
  p->exit_code = RUSM_EXIT_NORMAL;
  atomic_store_explicit(&p->timer_armed, false, memory_order_relaxed);
  memset(&p->timer, 0, sizeof p->timer);
  p->rq_next = NULL;
  atomic_store_explicit(&p->trap_exit, opts && opts->trap_exit,
                        memory_order_relaxed);
  p->lk = NULL;
  atomic_store_explicit(&p->reg_name, NULL, memory_order_relaxed);
  atomic_store_explicit(&p->label, NULL, memory_order_relaxed);
  atomic_store_explicit(&p->ext_memory, 0, memory_order_relaxed);
  atomic_store_explicit(&p->stack_bytes, 0, memory_order_relaxed);
  atomic_store_explicit(&p->n_links, 0, memory_order_relaxed);
  atomic_store_explicit(&p->n_mon_out, 0, memory_order_relaxed);
  atomic_store_explicit(&p->n_mon_in, 0, memory_order_relaxed);
  if (opts && (opts->link || opts->monitor)) {
    rusm_proc *cur = rusm__tl.cur;
    int rc = !cur || cur->rt != rt ? RUSM_ECONTEXT : rusm__spawn_links(p, opts);
    if (rc) {
      rusm__proc_free_unused(rt, p);
      return rc;
    }
  }
  if (__builtin_expect(rusm__tl.rparent != NULL, 0)) {
    int rc = remote_parent(p, rusm__tl.rparent);
    if (rc) {
      rusm__proc_free_unused(rt, p);
      return rc;
    }
    rusm__tl.rparent = NULL;
  }
  if (out)
    *out = p->pid;
  COUNT(rt, spawned, 1);
  /* relaxed: live is a count for waiters, not a publication. */
  atomic_fetch_add_explicit(&rt->live, 1, memory_order_relaxed);
  if (p->body == RUSM__B_ATTACHED) {
    atomic_fetch_add_explicit(&rt->attached, 1, memory_order_relaxed);
    atomic_store_explicit(&p->status, RUSM_STATUS_RUNNING,
                          memory_order_relaxed);
  } else {
    atomic_store_explicit(&p->status, RUSM_STATUS_RUNNABLE,
                          memory_order_relaxed);
  }
  /* release: publishes every field above to lookups (see ptab.c). */
  atomic_store_explicit(&p->refs, 1, memory_order_release);
  if (p->body != RUSM__B_ATTACHED)
    rusm__enqueue(s, p);
  return 0;
}

int rusm_spawn_body(rusm_rt *rt, const rusm_body_ops *ops, void *state,
                    const rusm_spawn_opts *opts, rusm_pid_t *out) {
  if (!rt || !ops || !ops->step)
    return RUSM_EINVAL;
  if (atomic_load_explicit(&rt->closing, memory_order_relaxed))
    return RUSM_ESHUTDOWN;
  rusm_proc *p = rusm__proc_alloc(rt);
  if (!p)
    return RUSM_ELIMIT;
  p->body = RUSM__B_CUSTOM;
  p->ops = ops;
  p->state = state;
  return rusm__spawn(rt, p, opts, out);
}

/* ---- send ----------------------------------------------------------- */

void rusm__preempt_slow(rusm_proc *cur) {
  if (cur->b.sf.inside && rusm__tl.sched->slice <= 0)
    rusm_yield(cur);
}

static int deliver(rusm_rt *rt, rusm_pid_t to, rusm_msg *m) {
  COUNT(rt, sent, 1);
  rusm__charge(1);
  rusm_proc *p = rusm__proc_get(rt, to);
  if (!p || rusm__exited(p)) {
    if (p) {
      rusm__proc_unref(p);
    } else if (rusm__route_remote(rt, to, m)) { /* off the fast path */
      rusm__preempt_point();
      return 0;
    }
    rusm__free_node(m);
    COUNT(rt, dropped, 1);
    return 0;
  }
  if (p->capacity && !(m->tag & (RUSM_TAG_SYSTEM | RUSM_TAG_NOSHED))) {
    /* Bounded mailbox: shed user messages past capacity. Racing senders
     * may overshoot by one message each, no more. */
    uint64_t queued = atomic_load_explicit(&p->msgs_in, memory_order_relaxed) -
                      atomic_load_explicit(&p->msgs_out, memory_order_relaxed);
    if (queued >= p->capacity) {
      atomic_fetch_add_explicit(&p->shed, 1, memory_order_relaxed);
      rusm__proc_unref(p);
      rusm__free_node(m);
      COUNT(rt, shed, 1);
      return 0;
    }
  }
  /* relaxed: an approximate length for introspection. */
  uint64_t in = atomic_fetch_add_explicit(&p->msgs_in, 1, memory_order_relaxed);
  if (rusm__mbox_push(&p->mbox, &m->node))
    rusm__schedule(p);
  if ((in & (SEND_SAMPLE - 1)) == 0) {
    /* Back-pressure (as BEAM's send cost): a sender filling a long
     * mailbox is charged for it, so it yields sooner and the receiver
     * gets the CPU while the messages are still in cache. Sampled, as
     * msgs_out sits on the receiver's cache line. */
    uint64_t out = atomic_load_explicit(&p->msgs_out, memory_order_relaxed);
    if (in > out + SEND_PENALTY_FROM)
      rusm__charge((uint32_t)((in - out) >> 2 > UINT16_MAX ? UINT16_MAX
                                                           : (in - out) >> 2));
  }
  rusm__proc_unref(p);
  rusm__preempt_point();
  return 0;
}

int rusm__deliver(rusm_rt *rt, rusm_pid_t to, rusm_msg *m) {
  if (!rt || !m)
    return RUSM_EINVAL;
  if (rusm_pid_node(to) != rt->opts.node_id) {
    rusm__free_node(m); /* never bounced back out */
    return RUSM_ENOPROC;
  }
  return deliver(rt, to, m);
}

int rusm_send(rusm_rt *rt, rusm_pid_t to, uint64_t tag, const void *data,
              size_t len) {
  if (!rt || (tag & RUSM_TAG_SYSTEM) || len > UINT32_MAX || (len && !data))
    return RUSM_EINVAL;
  rusm_msg *m = rusm__msg_new(RUSM__N_MSG, tag, data, len);
  if (!m)
    return RUSM_ENOMEM;
  return deliver(rt, to, m);
}

int rusm__send_sys(rusm_rt *rt, rusm_pid_t to, uint64_t tag, const void *data,
                   size_t len) {
  if (!rt || len > UINT32_MAX || (len && !data))
    return RUSM_EINVAL;
  rusm_msg *m = rusm__msg_new(RUSM__N_MSG, tag, data, len);
  if (!m)
    return RUSM_ENOMEM;
  return deliver(rt, to, m);
}

int rusm_send_buf(rusm_rt *rt, rusm_pid_t to, uint64_t tag, rusm_buf *buf) {
  if (!rt || !buf || (tag & RUSM_TAG_SYSTEM))
    return RUSM_EINVAL;
  rusm_msg *m = rusm__msg_new_buf(tag, buf);
  if (!m)
    return RUSM_ENOMEM;
  return deliver(rt, to, m);
}

/* ---- receive -------------------------------------------------------- */

void rusm__inner_append(rusm_proc *p, rusm_msg *m) {
  m->inner_next = NULL;
  if (p->inner_tail)
    p->inner_tail->inner_next = m;
  else
    p->inner_head = m;
  p->inner_tail = m;
  p->inner_len++;
}

bool rusm__drain(rusm_proc *p) {
  rusm__mpsc_node *n;
  while ((n = rusm__mbox_pop(&p->mbox, &p->cons)) != NULL) {
    rusm_msg *m = (rusm_msg *)n;
    if (m->kind != RUSM__N_MSG)
      rusm__act_on_signal(p, m);
    else
      rusm__inner_append(p, m);
  }
  return p->exit_pending;
}

/* Unlinks and returns the first inner message after `prev` (NULL: from the
 * start) that matches f; *last_seen tracks the scan position. */
static inline rusm_msg *scan(rusm_proc *p, const rusm_filter *f,
                             rusm_msg *start_prev, rusm_msg **last_seen) {
  rusm_msg *prev = start_prev;
  rusm_msg *m = prev ? prev->inner_next : p->inner_head;
  while (m) {
    if (rusm__filter_match(f, m)) {
      if (prev)
        prev->inner_next = m->inner_next;
      else
        p->inner_head = m->inner_next;
      if (p->inner_tail == m)
        p->inner_tail = prev;
      m->inner_next = NULL;
      p->inner_len--;
      return m;
    }
    prev = m;
    m = m->inner_next;
  }
  *last_seen = prev;
  return NULL;
}

int rusm_try_receive(rusm_proc *self, const rusm_filter *f, rusm_msg **out) {
  if (!self || !out)
    return RUSM_EINVAL;
  if (self == rusm__tl.cur)
    rusm__preempt_point(); /* before the scan: see below */
  rusm_msg *last = NULL;
  rusm_msg *m = self->inner_head ? scan(self, f, NULL, &last) : NULL;
  if (!m && !self->exit_pending && !rusm__drain(self)) {
    /* only what the drain appended after `last` is new */
    m = scan(self, f, last, &last);
  }
  if (!m && self->exit_pending && self->body == RUSM__B_STACKFUL &&
      self == rusm__tl.cur && self->b.sf.inside)
    rusm__stackful_exit_now(self);
  if (!m) {
    /* No yield here: a caller that finds nothing parks next, and a yield
     * between the scan and the park would let the scheduler's own drain
     * move a message into the inner list unseen. */
    rusm__charge(1);
    return RUSM_ETIMEDOUT;
  }
  atomic_fetch_add_explicit(&self->msgs_out, 1, memory_order_relaxed);
  RUSM__INC(self->handled, 1);
  COUNT(self->rt, delivered, 1);
  rusm__charge(1);
  *out = m; /* no yield after this: a kill meanwhile would lose m */
  return 0;
}

/* ---- exit ----------------------------------------------------------- */

int rusm_on_exit(rusm_proc *self, void (*fn)(void *arg), void *arg) {
  if (!self || !fn)
    return RUSM_EINVAL;
  rusm__hook *h = rusm__alloc(sizeof *h);
  if (!h)
    return RUSM_ENOMEM;
  h->fn = fn;
  h->arg = arg;
  h->next = self->hooks;
  self->hooks = h;
  return 0;
}

void rusm__proc_reap(rusm_proc *p, rusm_exit_code code, const uint8_t *data,
                     uint32_t len) {
  rusm_rt *rt = p->rt;
  /* The name goes before the process is seen dead (Erlang: after a Down,
   * whereis no longer finds it). seq_cst: DYING here, then the name, is
   * the Dekker pair of rusm_register (name, then the flags). */
  atomic_fetch_or_explicit(&p->flags, RUSM__P_DYING, memory_order_seq_cst);
  if (atomic_load_explicit(&p->reg_name, memory_order_seq_cst))
    rusm__registry_release(p);
  /* release: senders that see EXITED drop their message instead */
  atomic_fetch_or_explicit(&p->flags, RUSM__P_EXITED, memory_order_release);
  atomic_store_explicit(&p->status, RUSM_STATUS_EXITING, memory_order_relaxed);
  rusm__sched *s = atomic_load_explicit(&p->sched, memory_order_relaxed);
  if (p->timer.armed && s)
    rusm__wheel_cancel(&s->wheel, &p->timer);
  atomic_store_explicit(&p->timer_armed, false, memory_order_relaxed);

  rusm_reason why = {code, len, len ? data : NULL};
  while (p->hooks) {
    rusm__hook *h = p->hooks;
    p->hooks = h->next;
    h->fn(h->arg);
    rusm__free(h, sizeof *h);
  }
  if (p->ops->destroy)
    p->ops->destroy(p, p->state, &why);
  /* Links and monitors learn of the exit after the process's resources
   * are released (a restarted child can take its predecessor's port).
   * Signals still queued are acted on first, so a link or monitor that
   * arrived before death gets the real reason. */
  rusm__mpsc_node *n;
  while ((n = rusm__mbox_pop(&p->mbox, &p->cons)) != NULL) {
    rusm_msg *m = (rusm_msg *)n;
    switch (m->kind) {
    case RUSM__N_MSG:
      rusm__inner_append(p, m);
      break;
    case RUSM__N_LINK:
    case RUSM__N_UNLINK:
    case RUSM__N_MONITOR:
    case RUSM__N_DEMONITOR:
      rusm__act_on_signal(p, m);
      break;
    case RUSM__N_CALL:
      rusm__answer_dead(rt, p->pid, m);
      break;
    case RUSM__N_LINK_EXIT: /* that end is gone: no signal back to it */
      if (p->lk)
        rusm__map_del(&p->lk->links, m->from, NULL);
      rusm__free_node(m);
      break;
    default:
      rusm__free_node(m);
      break;
    }
  }
  rusm__signals_on_exit(p, code, why.data, why.len);
  atomic_store_explicit(&p->trap_exit, false, memory_order_relaxed);

  uint64_t dropped = 0;
  while (p->inner_head) {
    rusm_msg *m = p->inner_head;
    p->inner_head = m->inner_next;
    rusm__free_node(m);
    dropped++;
  }
  p->inner_tail = NULL;
  p->inner_len = 0;
  if (dropped)
    COUNT(rt, dropped, dropped);
  rusm__reason_free(p->exit_box);
  p->exit_box = NULL;
  rusm__reason_free(p->sig_box);
  p->sig_box = NULL;
  rusm__count_exit(rt, code);

  bool attached = p->body == RUSM__B_ATTACHED;
  rusm__proc_unref(p); /* the alive reference */
  if (attached)
    atomic_fetch_sub_explicit(&rt->attached, 1, memory_order_relaxed);
  /* seq_cst: Dekker pair with rusm_rt_wait_idle (it bumps idle_waiters,
   * then reads live): either it sees our count or we see it waiting. */
  uint32_t left = atomic_fetch_sub_explicit(&rt->live, 1, memory_order_seq_cst);
  if (atomic_load_explicit(&rt->idle_waiters, memory_order_seq_cst) &&
      left - 1 <= atomic_load_explicit(&rt->attached, memory_order_relaxed))
    rusm__futex_wake(&rt->live, 1 << 30);
}

/* Reaps p for the exit signal it received: the signal ends the process
 * with its reason (R, whole), whatever the body was doing meanwhile. */
void rusm__reap_pending(rusm_proc *p) {
  rusm__reason_box *b = p->sig_box;
  rusm__proc_reap(p, p->exit_code, b ? b->data : NULL, b ? b->len : 0);
}

/* ---- introspection -------------------------------------------------- */

rusm_pid_t rusm_self(const rusm_proc *self) {
  return self ? self->pid : RUSM_PID_NONE;
}
rusm_rt *rusm_proc_rt(const rusm_proc *self) { return self ? self->rt : NULL; }
rusm_proc *rusm_current(void) { return rusm__tl.cur; }

void rusm_set_label(rusm_proc *self, const char *label) {
  if (self)
    atomic_store_explicit(&self->label, label, memory_order_relaxed);
}

void rusm_set_memory(rusm_proc *self, uint64_t bytes) {
  if (self)
    atomic_store_explicit(&self->ext_memory, bytes, memory_order_relaxed);
}

void rusm_consume(rusm_proc *self, uint32_t n) {
  if (self && self == rusm__tl.cur) {
    rusm__charge(n);
    rusm__preempt_point();
  }
}

bool rusm_is_alive(rusm_rt *rt, rusm_pid_t pid) {
  if (!rt)
    return false;
  rusm_proc *p = rusm__proc_get(rt, pid);
  if (!p)
    return false;
  bool alive = !rusm__exited(p);
  rusm__proc_unref(p);
  return alive;
}

int rusm_proc_info_get(rusm_rt *rt, rusm_pid_t pid, rusm_proc_info *out) {
  if (!rt || !out)
    return RUSM_EINVAL;
  rusm_proc *p = rusm__proc_get(rt, pid);
  if (!p)
    return RUSM_ENOPROC;
  if (rusm__exited(p)) {
    rusm__proc_unref(p);
    return RUSM_ENOPROC;
  }
  memset(out, 0, sizeof *out);
  out->pid = pid;
  out->kind = p->ops->kind;
  out->status =
      (rusm_proc_status)atomic_load_explicit(&p->status, memory_order_relaxed);
  rusm__sched *s = atomic_load_explicit(&p->sched, memory_order_relaxed);
  out->scheduler = s ? s->index : 0;
  uint64_t in = atomic_load_explicit(&p->msgs_in, memory_order_relaxed);
  uint64_t taken = atomic_load_explicit(&p->msgs_out, memory_order_relaxed);
  out->mailbox_len = in > taken ? in - taken : 0;
  out->messages_handled =
      atomic_load_explicit(&p->handled, memory_order_relaxed);
  out->reductions = atomic_load_explicit(&p->reductions, memory_order_relaxed);
  out->shed = atomic_load_explicit(&p->shed, memory_order_relaxed);
  out->mailbox_capacity = p->capacity;
  rusm__proc_unref(p);
  return 0;
}

uint64_t rusm_process_count(rusm_rt *rt) {
  return rt ? atomic_load_explicit(&rt->live, memory_order_relaxed) : 0;
}
