/*
 * observer.c — process introspection (rusm/observer.h).
 *
 * Counters are read straight from the process structs (relaxed atomics,
 * under a reference, so the struct cannot be recycled meanwhile). Link
 * and monitor tables are private to their process, so rusm_obs_links asks
 * the process itself with a call run in its context (rusm__push_call),
 * and waits for the answer like any message.
 */
#include "rusm/observer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "otp/internal.h"

#define OBS_TAG_LINKS (RUSM_TAG_SYSTEM | UINT64_C(0x0b5e000000000001))

static const char *const k_status[] = {"runnable", "running", "waiting",
                                       "exiting"};

static void fill(rusm_rt *rt, rusm_proc *p, rusm_obs_proc *o) {
  memset(o, 0, sizeof *o);
  o->pid = p->pid;
  snprintf(o->kind, sizeof o->kind, "%s",
           p->ops && p->ops->kind ? p->ops->kind : "?");
  const char *label = atomic_load_explicit(&p->label, memory_order_relaxed);
  if (label)
    snprintf(o->label, sizeof o->label, "%s", label);
  if (atomic_load_explicit(&p->reg_name, memory_order_relaxed))
    rusm_name_of(rt, p->pid, o->name, sizeof o->name);
  o->status =
      (rusm_proc_status)atomic_load_explicit(&p->status, memory_order_relaxed);
  rusm__sched *s = atomic_load_explicit(&p->sched, memory_order_relaxed);
  o->scheduler = s ? s->index : 0;
  uint64_t in = atomic_load_explicit(&p->msgs_in, memory_order_relaxed);
  uint64_t out = atomic_load_explicit(&p->msgs_out, memory_order_relaxed);
  o->mailbox_len = in > out ? in - out : 0;
  o->messages_handled = atomic_load_explicit(&p->handled, memory_order_relaxed);
  o->reductions = atomic_load_explicit(&p->reductions, memory_order_relaxed);
  o->shed = atomic_load_explicit(&p->shed, memory_order_relaxed);
  o->links = atomic_load_explicit(&p->n_links, memory_order_relaxed);
  o->monitors = atomic_load_explicit(&p->n_mon_out, memory_order_relaxed);
  o->monitored_by = atomic_load_explicit(&p->n_mon_in, memory_order_relaxed);
  o->trap_exit = atomic_load_explicit(&p->trap_exit, memory_order_relaxed);
  /* an estimate: the struct, a small message per queued one, the stack
   * reserved (stackful), and what the body reported (Wasm memory) */
  o->memory = sizeof(rusm_proc) + o->mailbox_len * sizeof(rusm_msg) +
              atomic_load_explicit(&p->stack_bytes, memory_order_relaxed) +
              atomic_load_explicit(&p->ext_memory, memory_order_relaxed);
}

int rusm_obs_process(rusm_rt *rt, rusm_pid_t pid, rusm_obs_proc *out) {
  if (!rt || !out)
    return RUSM_EINVAL;
  rusm_proc *p = rusm__proc_get(rt, pid);
  if (!p)
    return RUSM_ENOPROC;
  int rc = RUSM_ENOPROC;
  if (!rusm__exited(p)) {
    fill(rt, p, out);
    rc = 0;
  }
  rusm__proc_unref(p);
  return rc;
}

int rusm_obs_processes(rusm_rt *rt, rusm_obs_proc *out, size_t cap,
                       size_t *total) {
  if (!rt || (!out && cap))
    return RUSM_EINVAL;
  size_t n = 0;
  uint32_t used = atomic_load_explicit(&rt->slots_used, memory_order_acquire);
  for (uint32_t i = 0; i < used; i++) {
    rusm_proc *p = rusm__proc_at(rt, i);
    if (!p || !atomic_load_explicit(&p->refs, memory_order_relaxed))
      continue;
    /* take a reference through the table, as any lookup */
    uint32_t r = atomic_load_explicit(&p->refs, memory_order_relaxed);
    bool got = false;
    while (r && !(got = atomic_compare_exchange_weak_explicit(
                      &p->refs, &r, r + 1, memory_order_acquire,
                      memory_order_relaxed)))
      ;
    if (!got)
      continue;
    if (!rusm__exited(p)) {
      if (n < cap)
        fill(rt, p, &out[n]);
      n++;
    }
    rusm__proc_unref(p);
  }
  if (total)
    *total = n;
  return 0;
}

/* ---- links and monitors, asked of the process --------------------- */

typedef struct links_req {
  rusm_rt *rt;
  rusm_pid_t reply_to;
  uint64_t ref;
} links_req;

/* Runs in the inspected process: reply {ref, nlinks, nmon, pids...}. */
static void links_call(rusm_proc *p, void *ctx, bool dead) {
  links_req *rq = ctx;
  if (!dead) {
    rusm__links *lk = p->lk;
    uint32_t nl = lk ? lk->links.len : 0, nm = lk ? lk->mon_out.len : 0;
    size_t len = 16 + (size_t)(nl + nm) * sizeof(rusm_pid_t);
    uint8_t *buf = malloc(len);
    if (buf) {
      memcpy(buf, &rq->ref, 8);
      memcpy(buf + 8, &nl, 4);
      memcpy(buf + 12, &nm, 4);
      size_t at = 16;
      for (uint32_t i = 0; lk && i < lk->links.cap; i++)
        if (lk->links.slots[i].key) {
          memcpy(buf + at, &lk->links.slots[i].key, 8);
          at += 8;
        }
      for (uint32_t i = 0; lk && i < lk->mon_out.cap; i++)
        if (lk->mon_out.slots[i].key) {
          memcpy(buf + at, &lk->mon_out.slots[i].val, 8);
          at += 8;
        }
      rusm__send_sys(rq->rt, rq->reply_to, OBS_TAG_LINKS, buf, len);
      free(buf);
    }
  }
  free(rq);
}

typedef struct ref_match {
  uint64_t ref;
} ref_match;

static bool is_reply(const rusm_msg *m, void *arg) {
  uint64_t ref;
  if (rusm_msg_len(m) < 16)
    return false;
  memcpy(&ref, rusm_msg_data(m), 8);
  return ref == ((ref_match *)arg)->ref;
}

static _Atomic uint64_t g_obs_ref;

int rusm_obs_links(rusm_rt *rt, rusm_pid_t pid, rusm_pid_t *links,
                   size_t links_cap, size_t *nlinks, rusm_pid_t *monitors,
                   size_t mon_cap, size_t *nmonitors, int64_t timeout_ms) {
  if (!rt || (!links && links_cap) || (!monitors && mon_cap))
    return RUSM_EINVAL;
  rusm_proc *me = rusm__tl.cur;
  bool temp = false;
  if (me && me->body != RUSM__B_STACKFUL && me->body != RUSM__B_ATTACHED)
    return RUSM_ECONTEXT;
  if (me && me->rt != rt)
    return RUSM_ECONTEXT;
  if (!me) {
    if (rusm__tl.sched)
      return RUSM_ECONTEXT;
    int rc = rusm_attach(rt, &me);
    if (rc)
      return rc;
    temp = true;
  }
  int rc;
  rusm_ref mref;
  ref_match rm = {atomic_fetch_add(&g_obs_ref, 1) + 1};
  links_req *rq = malloc(sizeof *rq);
  if (!rq) {
    rc = RUSM_ENOMEM;
    goto out;
  }
  rq->rt = rt;
  rq->reply_to = rusm_self(me);
  rq->ref = rm.ref;
  if ((rc = rusm_monitor(me, pid, &mref)) != 0) {
    free(rq);
    goto out;
  }
  if ((rc = rusm__push_call(rt, pid, links_call, rq)) != 0) {
    rusm_demonitor(me, mref, RUSM_DEMONITOR_FLUSH);
    goto out;
  }
  for (;;) {
    rusm_msg *m;
    rusm_filter any = {0, 0, NULL, NULL};
    rc = rusm_receive(me, &any, timeout_ms, &m);
    if (rc)
      break;
    rusm_down_info d;
    if (rusm_msg_tag(m) == RUSM_TAG_DOWN && rusm_msg_down(m, &d) == 0 &&
        d.ref == mref) {
      rusm_msg_free(m);
      rc = RUSM_ENOPROC;
      break;
    }
    if (rusm_msg_tag(m) == OBS_TAG_LINKS && is_reply(m, &rm)) {
      const uint8_t *b = rusm_msg_data(m);
      uint32_t nl, nm;
      memcpy(&nl, b + 8, 4);
      memcpy(&nm, b + 12, 4);
      for (uint32_t i = 0; i < nl && i < links_cap; i++)
        memcpy(&links[i], b + 16 + (size_t)i * 8, 8);
      for (uint32_t i = 0; i < nm && i < mon_cap; i++)
        memcpy(&monitors[i], b + 16 + (size_t)(nl + i) * 8, 8);
      if (nlinks)
        *nlinks = nl;
      if (nmonitors)
        *nmonitors = nm;
      rusm_msg_free(m);
      break;
    }
    /* not ours: an attached caller's other messages are put back in
     * order is impossible from here, so only temporary attachments (which
     * get nothing else) and dedicated observer threads should call this */
    rusm_msg_free(m);
  }
  rusm_demonitor(me, mref, RUSM_DEMONITOR_FLUSH);
out:
  if (temp)
    rusm_detach(me);
  return rc;
}

/* ---- the supervision tree ------------------------------------------ */

typedef struct sup_entry {
  rusm_pid_t pid;
  rusm_sup_info info;
  rusm_child_info *kids;
  size_t nkids;
  rusm_pid_t parent;
  char id[64];
} sup_entry;

static sup_entry *find_sup(sup_entry *s, size_t n, rusm_pid_t pid) {
  for (size_t i = 0; i < n; i++)
    if (s[i].pid == pid)
      return &s[i];
  return NULL;
}

static void emit(sup_entry *sups, size_t nsups, sup_entry *e,
                 rusm_obs_sup_node *out, size_t cap, size_t *n, int depth) {
  if (*n < cap) {
    rusm_obs_sup_node *o = &out[*n];
    memset(o, 0, sizeof *o);
    o->pid = e->pid;
    o->parent = e->parent;
    snprintf(o->id, sizeof o->id, "%s", e->id);
    o->supervisor = true;
    o->strategy = e->info.strategy;
    o->restarts = (uint32_t)e->info.restarts;
    o->children = (uint32_t)e->nkids;
  }
  (*n)++;
  if (depth > 64)
    return; /* a cycle cannot happen, but never recurse without bound */
  for (size_t k = 0; k < e->nkids; k++) {
    rusm_child_info *c = &e->kids[k];
    sup_entry *sub = c->pid ? find_sup(sups, nsups, c->pid) : NULL;
    if (sub) {
      emit(sups, nsups, sub, out, cap, n, depth + 1);
      continue;
    }
    if (*n < cap) {
      rusm_obs_sup_node *o = &out[*n];
      memset(o, 0, sizeof *o);
      o->pid = c->pid;
      o->parent = e->pid;
      snprintf(o->id, sizeof o->id, "%s", c->id);
      o->supervisor = c->supervisor;
      o->restarts = c->restarts;
    }
    (*n)++;
  }
}

int rusm_obs_sup_tree(rusm_rt *rt, rusm_obs_sup_node *out, size_t cap,
                      size_t *total) {
  if (!rt || (!out && cap))
    return RUSM_EINVAL;
  size_t np = 0;
  rusm_obs_processes(rt, NULL, 0, &np);
  rusm_obs_proc *procs = calloc(np + 16, sizeof *procs);
  sup_entry *sups = calloc(np + 16, sizeof *sups);
  if (!procs || !sups) {
    free(procs);
    free(sups);
    return RUSM_ENOMEM;
  }
  rusm_obs_processes(rt, procs, np + 16, &np);
  if (np > np + 16)
    np = np + 16;
  size_t ns = 0;
  for (size_t i = 0; i < np; i++) {
    if (strcmp(procs[i].label, "supervisor") != 0)
      continue;
    sup_entry *e = &sups[ns];
    e->pid = procs[i].pid;
    if (rusm_sup_info_get(rt, e->pid, &e->info) != 0)
      continue; /* gone meanwhile */
    size_t cnt = 0;
    if (rusm_sup_which_children(rt, e->pid, NULL, 0, &cnt) != 0)
      continue;
    e->kids = calloc(cnt + 1, sizeof *e->kids);
    if (!e->kids)
      continue;
    if (rusm_sup_which_children(rt, e->pid, e->kids, cnt + 1, &e->nkids) != 0) {
      free(e->kids);
      continue;
    }
    if (e->nkids > cnt + 1)
      e->nkids = cnt + 1;
    ns++;
  }
  /* parents: a supervisor listed as a child of another */
  for (size_t i = 0; i < ns; i++)
    for (size_t k = 0; k < sups[i].nkids; k++) {
      sup_entry *sub = find_sup(sups, ns, sups[i].kids[k].pid);
      if (sub && sub != &sups[i]) {
        sub->parent = sups[i].pid;
        snprintf(sub->id, sizeof sub->id, "%s", sups[i].kids[k].id);
      }
    }
  size_t n = 0;
  for (size_t i = 0; i < ns; i++)
    if (sups[i].parent == RUSM_PID_NONE)
      emit(sups, ns, &sups[i], out, cap, &n, 0);
  for (size_t i = 0; i < ns; i++)
    free(sups[i].kids);
  free(sups);
  free(procs);
  if (total)
    *total = n;
  return 0;
}

/* ---- sorting and JSON ---------------------------------------------- */

/* qsort has no context argument */
static _Thread_local rusm_obs_sort t_sort;

static uint64_t key_of(const rusm_obs_proc *p) {
  switch (t_sort) {
  case RUSM_OBS_BY_MAILBOX:
    return p->mailbox_len;
  case RUSM_OBS_BY_MEMORY:
    return p->memory;
  case RUSM_OBS_BY_HANDLED:
    return p->messages_handled;
  case RUSM_OBS_BY_PID:
    return UINT64_MAX - p->pid;
  default:
    return p->reductions;
  }
}

static int cmp_desc(const void *a, const void *b) {
  uint64_t x = key_of(a), y = key_of(b);
  return (x < y) - (x > y);
}

void rusm_obs_sort_procs(rusm_obs_proc *p, size_t n, rusm_obs_sort by) {
  t_sort = by;
  if (p && n > 1)
    qsort(p, n, sizeof *p, cmp_desc);
}

/* Appends s as a JSON string (quotes and control characters escaped). */
static int json_str(char *buf, size_t len, size_t at, const char *s) {
  int n = 0;
#define PUT(c)                                                                 \
  do {                                                                         \
    if (at + (size_t)n + 1 < len)                                              \
      buf[at + (size_t)n] = (c);                                               \
    n++;                                                                       \
  } while (0)
  PUT('"');
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\') {
      PUT('\\');
      PUT((char)*c);
    } else if (*c < 0x20) {
      char esc[8];
      snprintf(esc, sizeof esc, "\\u%04x", *c);
      for (char *e = esc; *e; e++)
        PUT(*e);
    } else {
      PUT((char)*c);
    }
  }
  PUT('"');
#undef PUT
  if (len)
    buf[at + (size_t)n < len ? at + (size_t)n : len - 1] = '\0';
  return n;
}

int rusm_obs_proc_to_json(const rusm_obs_proc *p, char *buf, size_t len) {
  char pid[40];
  rusm_pid_format(p->pid, pid, sizeof pid);
  size_t at = 0;
  int n = snprintf(buf, len, "{\"pid\":\"%s\",\"name\":", pid);
  if (n < 0)
    return n;
  at = (size_t)n;
  at += (size_t)json_str(buf, len, at, p->name);
  int k = snprintf(buf + (at < len ? at : len), at < len ? len - at : 0,
                   ",\"kind\":");
  at += (size_t)k;
  at += (size_t)json_str(buf, len, at, p->kind);
  k = snprintf(buf + (at < len ? at : len), at < len ? len - at : 0,
               ",\"label\":");
  at += (size_t)k;
  at += (size_t)json_str(buf, len, at, p->label);
  k = snprintf(
      buf + (at < len ? at : len), at < len ? len - at : 0,
      ",\"status\":\"%s\",\"scheduler\":%" PRIu32 ",\"mailbox_len\":%" PRIu64
      ",\"handled\":%" PRIu64 ",\"reductions\":%" PRIu64 ",\"shed\":%" PRIu64
      ",\"links\":%" PRIu32 ",\"monitors\":%" PRIu32
      ",\"monitored_by\":%" PRIu32 ",\"trap_exit\":%s,\"memory\":%" PRIu64 "}",
      (unsigned)p->status < 4 ? k_status[p->status] : "?", p->scheduler,
      p->mailbox_len, p->messages_handled, p->reductions, p->shed, p->links,
      p->monitors, p->monitored_by, p->trap_exit ? "true" : "false", p->memory);
  at += (size_t)k;
  return (int)at;
}
