/*
 * signal.c — links, monitors and exit signals, with Erlang's semantics
 * (docs/exit-signals.md; the table in DESIGN.md is the specification).
 *
 * Every signal travels the receiver's mailbox like a message, so signals
 * and messages from one sender keep their order, and it acts when the
 * receiver fetches it (rusm__drain). Link and monitor tables are private
 * to their process: each side updates its own table when it acts on the
 * signal, so no locks are needed. Signals that reach a process after it
 * died are answered by the last holder of its struct (rusm__answer_dead):
 * a link gets Exit noproc, a monitor gets Down noproc.
 */
#include <string.h>

#include "otp/internal.h"

/* ---- encoding -------------------------------------------------------- */

typedef struct exit_hdr {
  rusm_pid_t from;
  int32_t code;
  uint32_t len;
} exit_hdr;

typedef struct down_hdr {
  rusm_ref ref;
  rusm_pid_t pid;
  int32_t code;
  uint32_t len;
} down_hdr;

_Static_assert(sizeof(exit_hdr) == RUSM_EXIT_PAYLOAD_HDR, "exit layout");
_Static_assert(sizeof(down_hdr) == RUSM_DOWN_PAYLOAD_HDR, "down layout");

rusm_msg *rusm__exit_node(uint8_t kind, rusm_pid_t from, rusm_exit_code code,
                          const uint8_t *data, uint32_t len) {
  rusm_msg *m = rusm__msg_new(kind, 0, NULL, sizeof(exit_hdr) + len);
  if (!m)
    return NULL;
  exit_hdr h = {from, (int32_t)code, len};
  memcpy(m->inline_data, &h, sizeof h);
  if (len)
    memcpy(m->inline_data + sizeof h, data, len);
  m->from = from;
  m->aux = code;
  return m;
}

rusm_msg *rusm__down_node(rusm_ref ref, rusm_pid_t pid, rusm_exit_code code,
                          const uint8_t *data, uint32_t len) {
  rusm_msg *m = rusm__msg_new(RUSM__N_DOWN, 0, NULL, sizeof(down_hdr) + len);
  if (!m)
    return NULL;
  down_hdr h = {ref, pid, (int32_t)code, len};
  memcpy(m->inline_data, &h, sizeof h);
  if (len)
    memcpy(m->inline_data + sizeof h, data, len);
  m->from = pid;
  m->aux = (int64_t)ref;
  return m;
}

rusm_msg *rusm__plain_node(uint8_t kind, rusm_pid_t from, uint64_t aux) {
  rusm_msg *m = rusm__msg_new(kind, 0, NULL, 0);
  if (m) {
    m->from = from;
    m->aux = (int64_t)aux;
  }
  return m;
}

int rusm_msg_exit(const rusm_msg *m, rusm_exit_info *out) {
  exit_hdr h;
  if (!m || !out || m->tag != RUSM_TAG_EXIT || m->len < sizeof h)
    return RUSM_EINVAL;
  memcpy(&h, m->data, sizeof h);
  if (h.len > m->len - sizeof h)
    return RUSM_EINVAL;
  out->from = h.from;
  out->reason.code = (rusm_exit_code)h.code;
  out->reason.len = h.len;
  out->reason.data = h.len ? m->data + sizeof h : NULL;
  return 0;
}

int rusm_msg_down(const rusm_msg *m, rusm_down_info *out) {
  down_hdr h;
  if (!m || !out || m->tag != RUSM_TAG_DOWN || m->len < sizeof h)
    return RUSM_EINVAL;
  memcpy(&h, m->data, sizeof h);
  if (h.len > m->len - sizeof h)
    return RUSM_EINVAL;
  out->ref = h.ref;
  out->pid = h.pid;
  out->reason.code = (rusm_exit_code)h.code;
  out->reason.len = h.len;
  out->reason.data = h.len ? m->data + sizeof h : NULL;
  return 0;
}

/* ---- delivery -------------------------------------------------------- */

void rusm__set_dist(rusm_rt *rt, const rusm__dist_ops *ops, void *ctx) {
  rt->dist_ctx = ctx;
  /* release: route() readers see dist_ctx set */
  atomic_store_explicit(&rt->dist, ops, memory_order_release);
}

bool rusm__route_remote(rusm_rt *rt, rusm_pid_t to, rusm_msg *m) {
  if (!to || rusm_pid_node(to) == rt->opts.node_id)
    return false;
  const rusm__dist_ops *d =
      atomic_load_explicit(&rt->dist, memory_order_acquire);
  if (!d)
    return false;
  d->route(rt->dist_ctx, to, m);
  return true;
}

/* A link or monitor that cannot be kept: answered from `who` with code
 * (m consumed; anything else is dropped). */
static void answer(rusm_rt *rt, rusm_pid_t who, rusm_msg *m,
                   rusm_exit_code code) {
  rusm_msg *r = NULL;
  rusm_pid_t back = m->from;
  if (m->kind == RUSM__N_LINK)
    r = rusm__exit_node(RUSM__N_LINK_EXIT, who, code, NULL, 0);
  else if (m->kind == RUSM__N_MONITOR)
    r = rusm__down_node((rusm_ref)m->aux, who, code, NULL, 0);
  rusm__free_node(m);
  if (r)
    rusm__push_signal(rt, back, r);
}

void rusm__answer_unreachable(rusm_rt *rt, rusm_pid_t to, rusm_msg *m) {
  answer(rt, to, m, RUSM_EXIT_NOCONNECTION);
}

/* answer: a node that finds no live process is answered as one that
 * reached it after its death (rusm__answer_dead) instead of dropped. */
static int push_signal(rusm_rt *rt, rusm_pid_t to, rusm_msg *m, bool answer) {
  rusm_proc *p = rusm__proc_get(rt, to);
  if (!p && rusm__route_remote(rt, to, m))
    return 0; /* the answer, if any, comes back as a signal */
  if (!p || rusm__exited(p)) {
    if (p)
      rusm__proc_unref(p);
    if (answer)
      rusm__answer_dead(rt, to, m);
    else
      rusm__free_node(m);
    return RUSM_ENOPROC;
  }
  if (rusm__mbox_push(&p->mbox, &m->node))
    rusm__schedule(p);
  rusm__proc_unref(p);
  return 0;
}

int rusm__push_signal(rusm_rt *rt, rusm_pid_t to, rusm_msg *m) {
  return push_signal(rt, to, m, false);
}

int rusm__push_signal_answered(rusm_rt *rt, rusm_pid_t to, rusm_msg *m) {
  return push_signal(rt, to, m, true);
}

/* Mirrors table sizes for observers (relaxed: counts, not publication). */
void rusm__lk_sync(rusm_proc *p) {
  rusm__links *lk = p->lk;
  atomic_store_explicit(&p->n_links, lk ? lk->links.len : 0,
                        memory_order_relaxed);
  atomic_store_explicit(&p->n_mon_out, lk ? lk->mon_out.len : 0,
                        memory_order_relaxed);
  atomic_store_explicit(&p->n_mon_in, lk ? lk->mon_in.len : 0,
                        memory_order_relaxed);
}

/* The process's own tables, allocated on first use. */
static rusm__links *tables(rusm_proc *p) {
  if (!p->lk) {
    p->lk = rusm__calloc(1, sizeof *p->lk);
  }
  return p->lk;
}

/* Turns a signal node into a message at the end of the inner list. */
static void to_message(rusm_proc *p, rusm_msg *m, uint64_t tag) {
  m->kind = RUSM__N_MSG;
  m->tag = tag;
  atomic_fetch_add_explicit(&p->msgs_in, 1, memory_order_relaxed);
  rusm__inner_append(p, m);
}

static void set_exit(rusm_proc *p, rusm_exit_code code, const uint8_t *data,
                     uint32_t len) {
  if (p->exit_pending)
    return;
  p->exit_pending = true;
  p->exit_code = code;
  if (len) {
    rusm__reason_free(p->sig_box);
    p->sig_box = rusm__reason_copy(code, data, len);
  }
}

/* An exit signal: from exit/2 (linked == false) or a link (true). */
static void exit_signal(rusm_proc *p, rusm_msg *m, bool linked) {
  exit_hdr h;
  memcpy(&h, m->data, sizeof h);
  const uint8_t *detail = m->data + sizeof h;
  rusm_exit_code code = (rusm_exit_code)h.code;
  if (linked) {
    if (!p->lk || !rusm__map_del(&p->lk->links, h.from, NULL)) {
      rusm__free_node(m); /* unlinked meanwhile: no effect */
      return;
    }
    rusm__lk_sync(p);
  } else if (code == RUSM_EXIT_KILL) {
    set_exit(p, RUSM_EXIT_KILLED, NULL, 0); /* untrappable */
    rusm__free_node(m);
    return;
  }
  if (atomic_load_explicit(&p->trap_exit, memory_order_relaxed)) {
    to_message(p, m, RUSM_TAG_EXIT);
    return;
  }
  if (code == RUSM_EXIT_NORMAL) {
    /* ignored, except exit(self(), normal) */
    if (!linked && h.from == p->pid)
      set_exit(p, RUSM_EXIT_NORMAL, NULL, 0);
  } else {
    set_exit(p, code, detail, h.len);
  }
  rusm__free_node(m);
}

/* Out of memory for a link or monitor someone asked of p: p cannot keep
 * the promise, so it exits ("enomem"), and the asker, absent from p's
 * tables, is told directly (an Exit for a link, a Down for a monitor). */
static void cannot_keep(rusm_proc *p, const rusm_msg *m, uint64_t ref) {
  static const uint8_t why[] = "enomem";
  set_exit(p, RUSM_EXIT_CUSTOM, why, sizeof why - 1);
  rusm_msg *r =
      ref ? rusm__down_node(ref, p->pid, RUSM_EXIT_CUSTOM, why, sizeof why - 1)
          : rusm__exit_node(RUSM__N_LINK_EXIT, p->pid, RUSM_EXIT_CUSTOM, why,
                            sizeof why - 1);
  if (r)
    rusm__push_signal(p->rt, m->from, r);
}

void rusm__act_on_signal(rusm_proc *p, rusm_msg *m) {
  rusm__links *lk;
  uint64_t ref = (uint64_t)m->aux;
  switch (m->kind) {
  case RUSM__N_EXIT:
    exit_signal(p, m, false);
    return;
  case RUSM__N_LINK_EXIT:
    exit_signal(p, m, true);
    return;
  case RUSM__N_LINK:
    if ((lk = tables(p)) == NULL || rusm__map_put(&lk->links, m->from, 1) < 0)
      cannot_keep(p, m, 0);
    break;
  case RUSM__N_UNLINK:
    if (p->lk)
      rusm__map_del(&p->lk->links, m->from, NULL);
    break;
  case RUSM__N_MONITOR:
    if ((lk = tables(p)) == NULL ||
        rusm__map_put(&lk->mon_in, ref, m->from) < 0)
      cannot_keep(p, m, ref);
    break;
  case RUSM__N_DEMONITOR:
    if (p->lk)
      rusm__map_del(&p->lk->mon_in, ref, NULL);
    break;
  case RUSM__N_CALL: {
    rusm__call_fn fn;
    void *ctx;
    memcpy(&fn, m->data, sizeof fn);
    memcpy(&ctx, m->data + sizeof fn, sizeof ctx);
    fn(p, ctx, false);
    break;
  }
  case RUSM__N_DOWN:
    /* Delivered only while the monitor is ours: after demonitor no Down. */
    if (p->lk && rusm__map_del(&p->lk->mon_out, ref, NULL)) {
      to_message(p, m, RUSM_TAG_DOWN);
      rusm__lk_sync(p);
      return;
    }
    break;
  default:
    break;
  }
  rusm__free_node(m);
  rusm__lk_sync(p);
}

/* On the reaping path, after the process's resources are released. */
void rusm__signals_on_exit(rusm_proc *p, rusm_exit_code code,
                           const uint8_t *data, uint32_t len) {
  rusm__links *lk = p->lk;
  if (!lk)
    return;
  rusm_rt *rt = p->rt;
  for (uint32_t i = 0; i < lk->links.cap; i++) {
    rusm__kv *kv = &lk->links.slots[i];
    if (!kv->key)
      continue;
    rusm_msg *m = rusm__exit_node(RUSM__N_LINK_EXIT, p->pid, code, data, len);
    if (m)
      rusm__push_signal(rt, kv->key, m);
  }
  for (uint32_t i = 0; i < lk->mon_in.cap; i++) {
    rusm__kv *kv = &lk->mon_in.slots[i];
    if (!kv->key)
      continue;
    rusm_msg *m = rusm__down_node(kv->key, p->pid, code, data, len);
    if (m)
      rusm__push_signal(rt, kv->val, m);
  }
  for (uint32_t i = 0; i < lk->mon_out.cap; i++) {
    rusm__kv *kv = &lk->mon_out.slots[i];
    if (!kv->key)
      continue;
    rusm_msg *m = rusm__plain_node(RUSM__N_DEMONITOR, p->pid, kv->key);
    if (m)
      rusm__push_signal(rt, kv->val, m);
  }
  rusm__map_free(&lk->links);
  rusm__map_free(&lk->mon_out);
  rusm__map_free(&lk->mon_in);
  rusm__free(lk, sizeof *lk);
  p->lk = NULL;
  rusm__lk_sync(p);
}

static void call_dead(rusm_msg *m) {
  rusm__call_fn fn;
  void *ctx;
  memcpy(&fn, m->data, sizeof fn);
  memcpy(&ctx, m->data + sizeof fn, sizeof ctx);
  fn(NULL, ctx, true);
}

int rusm__push_call(rusm_rt *rt, rusm_pid_t to, rusm__call_fn fn, void *ctx) {
  uint8_t payload[sizeof fn + sizeof ctx];
  memcpy(payload, &fn, sizeof fn);
  memcpy(payload + sizeof fn, &ctx, sizeof ctx);
  rusm_msg *m = rusm__msg_new(RUSM__N_CALL, 0, payload, sizeof payload);
  if (!m)
    return RUSM_ENOMEM;
  rusm_proc *p = rusm__proc_get(rt, to);
  if (!p || rusm__exited(p)) {
    if (p)
      rusm__proc_unref(p);
    call_dead(m);
    rusm__free_node(m);
    return RUSM_ENOPROC;
  }
  if (rusm__mbox_push(&p->mbox, &m->node))
    rusm__schedule(p);
  rusm__proc_unref(p);
  return 0;
}

/* A signal that reached `dead` after it was reaped. */
void rusm__answer_dead(rusm_rt *rt, rusm_pid_t dead, rusm_msg *m) {
  if (m->kind == RUSM__N_CALL)
    call_dead(m);
  answer(rt, dead, m, RUSM_EXIT_NOPROC);
}

/* ---- API ------------------------------------------------------------- */

static bool is_self(const rusm_proc *self) {
  return self && self == rusm__tl.cur && !rusm__exited(self);
}

static rusm_ref new_ref(rusm_rt *rt) {
  /* relaxed: uniqueness is all a ref needs */
  uint64_t n =
      atomic_fetch_add_explicit(&rt->next_ref, 1, memory_order_relaxed) + 1;
  return ((uint64_t)rt->opts.node_id << 52) | (n & ((UINT64_C(1) << 52) - 1));
}

int rusm_link(rusm_proc *self, rusm_pid_t pid) {
  if (!is_self(self))
    return self ? RUSM_ECONTEXT : RUSM_EINVAL;
  if (pid == self->pid)
    return 0;
  rusm__links *lk = tables(self);
  if (!lk || rusm__map_reserve(&lk->links, 1) != 0)
    return RUSM_ENOMEM;
  rusm__charge(1);
  if (rusm__map_get(&lk->links, pid, NULL))
    return 0; /* idempotent */
  rusm_msg *m = rusm__plain_node(RUSM__N_LINK, self->pid, 0);
  if (!m)
    return RUSM_ENOMEM;
  if (rusm__push_signal(self->rt, pid, m) != 0) {
    if (atomic_load_explicit(&self->trap_exit, memory_order_relaxed)) {
      rusm_msg *e =
          rusm__exit_node(RUSM__N_MSG, pid, RUSM_EXIT_NOPROC, NULL, 0);
      if (e) {
        e->tag = RUSM_TAG_EXIT;
        atomic_fetch_add_explicit(&self->msgs_in, 1, memory_order_relaxed);
        rusm__inner_append(self, e);
      }
    }
    return RUSM_ENOPROC;
  }
  rusm__map_put(&lk->links, pid, 1);
  rusm__lk_sync(self);
  return 0;
}

int rusm_unlink(rusm_proc *self, rusm_pid_t pid) {
  if (!is_self(self))
    return self ? RUSM_ECONTEXT : RUSM_EINVAL;
  rusm__charge(1);
  if (!self->lk || !rusm__map_del(&self->lk->links, pid, NULL))
    return 0;
  rusm__lk_sync(self);
  rusm_msg *m = rusm__plain_node(RUSM__N_UNLINK, self->pid, 0);
  if (m)
    rusm__push_signal(self->rt, pid, m);
  return 0;
}

bool rusm_trap_exit(rusm_proc *self, bool on) {
  if (!is_self(self))
    return false;
  bool old = atomic_load_explicit(&self->trap_exit, memory_order_relaxed);
  atomic_store_explicit(&self->trap_exit, on, memory_order_relaxed);
  return old;
}

int rusm_monitor(rusm_proc *self, rusm_pid_t pid, rusm_ref *out) {
  if (!is_self(self) || !out)
    return self && out ? RUSM_ECONTEXT : RUSM_EINVAL;
  rusm__links *lk = tables(self);
  if (!lk || rusm__map_reserve(&lk->mon_out, 1) != 0)
    return RUSM_ENOMEM;
  rusm__charge(1);
  rusm_ref ref = new_ref(self->rt);
  rusm_msg *m = rusm__plain_node(RUSM__N_MONITOR, self->pid, ref);
  if (!m)
    return RUSM_ENOMEM;
  rusm__map_put(&lk->mon_out, ref, pid);
  if (rusm__push_signal(self->rt, pid, m) != 0) {
    /* already dead: Down noproc through our own mailbox, like any Down */
    rusm_msg *d = rusm__down_node(ref, pid, RUSM_EXIT_NOPROC, NULL, 0);
    if (!d) {
      rusm__map_del(&lk->mon_out, ref, NULL);
      return RUSM_ENOMEM;
    }
    rusm__mbox_push(&self->mbox, &d->node);
  }
  rusm__lk_sync(self);
  *out = ref;
  return 0;
}

int rusm_demonitor(rusm_proc *self, rusm_ref ref, unsigned flags) {
  if (!is_self(self))
    return self ? RUSM_ECONTEXT : RUSM_EINVAL;
  rusm__charge(1);
  uint64_t target;
  int active = 0;
  if (self->lk && rusm__map_del(&self->lk->mon_out, ref, &target)) {
    active = 1;
    rusm_msg *m = rusm__plain_node(RUSM__N_DEMONITOR, self->pid, ref);
    if (m)
      rusm__push_signal(self->rt, target, m);
  }
  rusm__lk_sync(self);
  if (flags & RUSM_DEMONITOR_FLUSH) {
    rusm__drain(self);
    rusm_msg *prev = NULL, *m = self->inner_head;
    while (m) {
      rusm_msg *next = m->inner_next;
      rusm_down_info d;
      if (m->tag == RUSM_TAG_DOWN && rusm_msg_down(m, &d) == 0 &&
          d.ref == ref) {
        if (prev)
          prev->inner_next = next;
        else
          self->inner_head = next;
        if (self->inner_tail == m)
          self->inner_tail = prev;
        self->inner_len--;
        atomic_fetch_add_explicit(&self->msgs_out, 1, memory_order_relaxed);
        rusm__free_node(m);
      } else {
        prev = m;
      }
      m = next;
    }
  }
  return active;
}

int rusm_exit(rusm_rt *rt, rusm_pid_t pid, rusm_reason reason) {
  if (!rt || (unsigned)reason.code >= RUSM_EXIT__COUNT ||
      (reason.len && !reason.data))
    return RUSM_EINVAL;
  rusm__charge(1);
  rusm_pid_t from = rusm__tl.cur ? rusm__tl.cur->pid : RUSM_PID_NONE;
  rusm_msg *m =
      rusm__exit_node(RUSM__N_EXIT, from, reason.code, reason.data, reason.len);
  if (!m)
    return RUSM_ENOMEM;
  return rusm__push_signal(rt, pid, m);
}

int rusm_kill(rusm_rt *rt, rusm_pid_t pid) {
  return rusm_exit(rt, pid, RUSM_REASON_KILL);
}

int rusm__monitor_prepare(rusm_proc *self, rusm_ref *ref) {
  if (!is_self(self))
    return RUSM_ECONTEXT;
  rusm__links *lk = tables(self);
  if (!lk)
    return RUSM_ENOMEM;
  rusm_ref r = new_ref(self->rt);
  if (rusm__map_put(&lk->mon_out, r, 0) < 0)
    return RUSM_ENOMEM;
  *ref = r;
  rusm__lk_sync(self);
  return 0;
}

void rusm__monitor_settle(rusm_proc *self, rusm_ref ref, rusm_pid_t target) {
  if (!self->lk)
    return;
  if (target && rusm__map_get(&self->lk->mon_out, ref, NULL))
    rusm__map_put(&self->lk->mon_out, ref, target);
  else if (!target)
    rusm__map_del(&self->lk->mon_out, ref, NULL);
  rusm__lk_sync(self);
}

/* Sets up spawn_link / spawn_monitor on a child not yet published. */
int rusm__spawn_links(rusm_proc *child, const rusm_spawn_opts *opts) {
  rusm_proc *self = rusm__tl.cur;
  rusm__links *mine = tables(self);
  child->lk = rusm__calloc(1, sizeof *child->lk);
  if (!mine || !child->lk)
    goto nomem;
  if (opts->link && (rusm__map_reserve(&mine->links, 1) != 0 ||
                     rusm__map_reserve(&child->lk->links, 1) != 0))
    goto nomem;
  if (opts->monitor && (rusm__map_reserve(&mine->mon_out, 1) != 0 ||
                        rusm__map_reserve(&child->lk->mon_in, 1) != 0))
    goto nomem;
  /* reserved: the puts below cannot fail */
  if (opts->link) {
    rusm__map_put(&mine->links, child->pid, 1);
    rusm__map_put(&child->lk->links, self->pid, 1);
  }
  if (opts->monitor) {
    rusm_ref ref = new_ref(self->rt);
    rusm__map_put(&mine->mon_out, ref, child->pid);
    rusm__map_put(&child->lk->mon_in, ref, self->pid);
    if (opts->monitor_ref)
      *opts->monitor_ref = ref;
  }
  rusm__lk_sync(self);
  rusm__lk_sync(child);
  return 0;
nomem:
  if (child->lk) {
    rusm__map_free(&child->lk->links);
    rusm__map_free(&child->lk->mon_in);
    rusm__free(child->lk, sizeof *child->lk);
    child->lk = NULL;
  }
  return RUSM_ENOMEM;
}
