/*
 * ptab.c — the process table (after BEAM's erl_ptab).
 *
 * Slot i is bound forever to one process struct, allocated in chunks the
 * first time the slot is needed and never freed before the runtime is:
 * memory is type-stable, so a lookup through a stale pid reads a valid
 * struct. A lookup is one acquire load of the slot plus an "increment the
 * reference count unless it is zero" CAS, then a pid comparison: a struct
 * whose count is zero is free, and one whose pid differs is a later
 * process in the same slot. References pin the struct: it returns to the
 * free list only when the last holder drops its reference, so a sender
 * can never push into a mailbox that is being recycled.
 *
 * Free structs sit in a FIFO (global, locked) fed through small per-
 * scheduler caches; FIFO reuse spreads generations over all free slots.
 * A slot whose generation would wrap is retired, never reused.
 */
#include <stdlib.h>
#include <string.h>

#include "otp/internal.h"

#define CACHE_MAX 128  /* per-scheduler cached free structs */
#define CACHE_BATCH 64 /* moved to/from the global list at once */

int rusm__ptab_init(rusm_rt *rt) {
  rt->table_len = rt->opts.max_processes;
  /* calloc of a large array maps zero pages: untouched slots cost no RSS */
  rt->table = rusm__calloc(rt->table_len, sizeof *rt->table);
  if (!rt->table)
    return RUSM_ENOMEM;
  pthread_mutex_init(&rt->free_lock, NULL);
  return 0;
}

void rusm__ptab_destroy(rusm_rt *rt) {
  for (uint32_t i = 0; i < rt->nchunks; i++)
    rusm__free(rt->chunks[i], RUSM__CHUNK * sizeof(rusm_proc));
  rusm__free(rt->chunks, rt->chunks_cap * sizeof(void *));
  rusm__free(rt->table, (size_t)rt->table_len * sizeof *rt->table);
  pthread_mutex_destroy(&rt->free_lock);
}

/* Under free_lock: a new chunk of structs appended to the free list. */
static int grow_locked(rusm_rt *rt) {
  uint32_t used = atomic_load_explicit(&rt->slots_used, memory_order_relaxed);
  if (used >= rt->table_len)
    return RUSM_ELIMIT;
  uint32_t n =
      rt->table_len - used < RUSM__CHUNK ? rt->table_len - used : RUSM__CHUNK;
  if (rt->nchunks == rt->chunks_cap) {
    uint32_t cap = rt->chunks_cap ? rt->chunks_cap * 2 : 64;
    void **nc = rusm__alloc(cap * sizeof(void *));
    if (!nc)
      return RUSM_ENOMEM;
    if (rt->nchunks)
      memcpy(nc, rt->chunks, rt->nchunks * sizeof(void *));
    rusm__free(rt->chunks, rt->chunks_cap * sizeof(void *));
    rt->chunks = nc;
    rt->chunks_cap = cap;
  }
  rusm_proc *chunk =
      rusm__alloc_aligned(RUSM__CACHELINE, RUSM__CHUNK * sizeof(rusm_proc));
  if (!chunk)
    return RUSM_ENOMEM;
  rt->chunks[rt->nchunks++] = chunk;
  for (uint32_t i = 0; i < n; i++) {
    rusm_proc *p = &chunk[i];
    memset(p, 0, sizeof *p);
    p->slot = used + i;
    p->gen = 0; /* incremented to 1 at first spawn */
    p->rt = rt;
    p->rq_next = NULL;
    if (rt->free_tail)
      rt->free_tail->rq_next = p;
    else
      rt->free_head = p;
    rt->free_tail = p;
    rt->free_len++;
    /* release: a lookup that loads the pointer sees the zeroed struct. */
    atomic_store_explicit(&rt->table[p->slot], p, memory_order_release);
  }
  /* release: scanners (rt_destroy, observer) read slots below this. */
  atomic_store_explicit(&rt->slots_used, used + n, memory_order_release);
  return 0;
}

/* Takes up to `want` structs from the global FIFO. */
static rusm_proc *take_global(rusm_rt *rt, uint32_t want, uint32_t *got) {
  pthread_mutex_lock(&rt->free_lock);
  if (!rt->free_head && grow_locked(rt) != 0) {
    pthread_mutex_unlock(&rt->free_lock);
    *got = 0;
    return NULL;
  }
  rusm_proc *first = rt->free_head, *last = first;
  uint32_t n = 1;
  while (n < want && last->rq_next) {
    last = last->rq_next;
    n++;
  }
  rt->free_head = last->rq_next;
  if (!rt->free_head)
    rt->free_tail = NULL;
  rt->free_len -= n;
  pthread_mutex_unlock(&rt->free_lock);
  last->rq_next = NULL;
  *got = n;
  return first;
}

static void put_global(rusm_rt *rt, rusm_proc *first, rusm_proc *last,
                       uint32_t n) {
  last->rq_next = NULL;
  pthread_mutex_lock(&rt->free_lock);
  if (rt->free_tail)
    rt->free_tail->rq_next = first;
  else
    rt->free_head = first;
  rt->free_tail = last;
  rt->free_len += n;
  pthread_mutex_unlock(&rt->free_lock);
}

rusm_proc *rusm__proc_alloc(rusm_rt *rt) {
  rusm__sched *s = rusm__tl.sched;
  if (s && s->rt == rt) {
    if (!s->free_procs) {
      uint32_t got;
      s->free_procs = take_global(rt, CACHE_BATCH, &got);
      s->free_count = got;
      if (!got)
        return NULL;
    }
    rusm_proc *p = s->free_procs;
    s->free_procs = p->rq_next;
    s->free_count--;
    p->rq_next = NULL;
    return p;
  }
  uint32_t got;
  return take_global(rt, 1, &got);
}

rusm_proc *rusm__proc_at(rusm_rt *rt, uint32_t slot) {
  if (slot >= rt->table_len)
    return NULL;
  return atomic_load_explicit(&rt->table[slot], memory_order_acquire);
}

rusm_proc *rusm__proc_get(rusm_rt *rt, rusm_pid_t pid) {
  if (rusm_pid_node(pid) != rt->opts.node_id)
    return NULL;
  rusm_proc *p = rusm__proc_at(rt, rusm_pid_slot(pid));
  if (!p)
    return NULL;
  uint32_t r = atomic_load_explicit(&p->refs, memory_order_relaxed);
  do {
    if (r == 0)
      return NULL; /* free struct */
    /* acquire on success: pairs with the spawner's release of refs = 1,
     * so p->pid below is this incarnation's. */
  } while (!atomic_compare_exchange_weak_explicit(
      &p->refs, &r, r + 1, memory_order_acquire, memory_order_relaxed));
  if (p->pid != pid) {
    rusm__proc_unref(p);
    return NULL;
  }
  return p;
}

/* The last reference is gone: nobody can push any more. Free what is left
 * in the outer queue and return the struct to a free list. */
static void final_free(rusm_proc *p) {
  rusm_rt *rt = p->rt;
  rusm__mpsc_node *n;
  uint64_t dropped = 0;
  while ((n = rusm__mbox_pop(&p->mbox, &p->cons)) != NULL) {
    rusm_msg *m = (rusm_msg *)n;
    if (m->kind == RUSM__N_MSG) {
      dropped++;
      rusm__free_node(m);
    } else {
      rusm__answer_dead(rt, p->pid, m);
    }
  }
  if (dropped) {
    rusm__sched *s = rusm__tl.sched;
    if (s && s->rt == rt)
      RUSM__INC(s->c.dropped, dropped);
    else
      atomic_fetch_add_explicit(&rt->ext.dropped, dropped,
                                memory_order_relaxed);
  }
  if (p->gen >= RUSM_PID_GEN_MAX) {
    pthread_mutex_lock(&rt->free_lock);
    rt->retired++;
    pthread_mutex_unlock(&rt->free_lock);
    return;
  }
  p->rq_next = NULL;
  rusm__sched *s = rusm__tl.sched;
  /* Cache locally only while the table has room for every scheduler's
   * cache to fill: near the limit every free slot must stay visible to
   * spawns from any thread (a cached slot is its scheduler's alone). */
  if (s && s->rt == rt &&
      (uint64_t)atomic_load_explicit(&rt->slots_used, memory_order_relaxed) +
              (uint64_t)rt->nsched * CACHE_MAX <
          rt->table_len) {
    p->rq_next = s->free_procs;
    s->free_procs = p;
    if (++s->free_count > CACHE_MAX) {
      /* give the oldest-cached half back to the global FIFO */
      rusm_proc *first = s->free_procs, *last = first;
      for (uint32_t i = 1; i < CACHE_BATCH; i++)
        last = last->rq_next;
      s->free_procs = last->rq_next;
      s->free_count -= CACHE_BATCH;
      put_global(rt, first, last, CACHE_BATCH);
    }
    return;
  }
  put_global(rt, p, p, 1);
}

void rusm__proc_free_unused(rusm_rt *rt, rusm_proc *p) {
  p->rq_next = NULL;
  put_global(rt, p, p, 1);
}

void rusm__proc_unref(rusm_proc *p) {
  /* acq_rel: the final dropper must see every other holder's pushes. */
  if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
    final_free(p);
}
