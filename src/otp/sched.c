/*
 * sched.c — the runtime object and its schedulers.
 *
 * One thread per scheduler, each with a locked FIFO run queue, a "runnext"
 * slot and a timer wheel. A process woken by the process running on the
 * same scheduler goes to runnext and inherits the rest of the current
 * slice (as Go's runnext): a ping-ponging pair runs back to back without
 * touching the queue lock, and still yields to the queue when the slice's
 * budget is spent, so it cannot starve others. An idle scheduler spins a
 * little, stealing half of a busier queue (or the one waiting process of
 * a scheduler stuck in a long run), then sleeps on a futex until work or
 * its next timer. See docs/internals/process-core.md.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "otp/internal.h"

#define TICK_NS 1000000        /* timer wheel resolution: 1 ms */
#define SPIN_NS 50000          /* idle spin before sleeping */
#define STUCK_CHECK_NS 2000000 /* sleep bound while others have queued work */
#define DEFAULT_BUDGET 2000
#define DEFAULT_STACK (64 * 1024)
#define STACK_CACHE 256

int64_t rusm_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int rusm__futex_wait(_Atomic uint32_t *word, uint32_t expect,
                     int64_t timeout_ns) {
  struct timespec ts, *tsp = NULL;
  if (timeout_ns >= 0) {
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    tsp = &ts;
  }
  long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expect, tsp,
                   NULL, 0);
  return r == 0 ? 0 : -errno;
}

void rusm__futex_wake(_Atomic uint32_t *word, int n) {
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* ---- run queues ------------------------------------------------------ */

void rusm__wake_sched(rusm__sched *s) {
  /* The exchange makes exactly one waker pay for the syscall. */
  if (atomic_load_explicit(&s->sleeping, memory_order_seq_cst) &&
      atomic_exchange_explicit(&s->sleeping, 0, memory_order_seq_cst))
    rusm__futex_wake(&s->sleeping, 1);
}

/* Some scheduler is asleep while work queues up: wake one to steal. */
static void wake_a_thief(rusm_rt *rt, rusm__sched *busy) {
  if (atomic_load_explicit(&rt->spinning, memory_order_relaxed) ||
      !atomic_load_explicit(&rt->sleepers, memory_order_relaxed))
    return;
  for (uint32_t i = 1; i < rt->nsched; i++) {
    rusm__sched *o = rt->sched[(busy->index + i) % rt->nsched];
    if (atomic_load_explicit(&o->sleeping, memory_order_relaxed)) {
      rusm__wake_sched(o);
      return;
    }
  }
}

void rusm__enqueue(rusm__sched *s, rusm_proc *p) {
  atomic_store_explicit(&p->status, RUSM_STATUS_RUNNABLE, memory_order_relaxed);
  p->rq_next = NULL;
  pthread_mutex_lock(&s->lock);
  if (s->q_tail)
    s->q_tail->rq_next = p;
  else
    s->q_head = p;
  s->q_tail = p;
  uint32_t len = atomic_load_explicit(&s->q_len, memory_order_relaxed) + 1;
  /* seq_cst store here and seq_cst load of `sleeping` in wake_sched pair
   * with the sleeper's seq_cst store of `sleeping` and load of q_len
   * (Dekker): either we see it asleep or it sees our process. (No fence:
   * ThreadSanitizer does not model fences.) */
  atomic_store_explicit(&s->q_len, len, memory_order_seq_cst);
  pthread_mutex_unlock(&s->lock);
  if (rusm__tl.sched != s)
    rusm__wake_sched(s);
  /* Work waits behind a running process (or queues up): let a sleeping
   * scheduler come and look; it steals half of a queue of two or more, or
   * the one waiting process of a scheduler stuck in a long native run. */
  if (len >= 2 || atomic_load_explicit(&s->running, memory_order_relaxed))
    wake_a_thief(s->rt, s);
}

static rusm_proc *dequeue(rusm__sched *s) {
  if (!atomic_load_explicit(&s->q_len, memory_order_relaxed))
    return NULL;
  pthread_mutex_lock(&s->lock);
  rusm_proc *p = s->q_head;
  if (p) {
    s->q_head = p->rq_next;
    if (!s->q_head)
      s->q_tail = NULL;
    atomic_store_explicit(
        &s->q_len, atomic_load_explicit(&s->q_len, memory_order_relaxed) - 1,
        memory_order_relaxed);
  }
  pthread_mutex_unlock(&s->lock);
  if (p)
    p->rq_next = NULL;
  return p;
}

/* A parked process got a message (or a timer): make it runnable. */
void rusm__schedule(rusm_proc *p) {
  if (p->body == RUSM__B_ATTACHED) {
    /* release: the attached thread's acquire of the word sees the push. */
    atomic_store_explicit(&p->b.at.futex, 1, memory_order_release);
    rusm__futex_wake(&p->b.at.futex, 1);
    return;
  }
  rusm__sched *home = atomic_load_explicit(&p->sched, memory_order_relaxed);
  rusm__sched *me = rusm__tl.sched;
  assert(home && "a spawned process always has a home scheduler");
  if (me && me != home && me->rt == home->rt && rusm__tl.cur &&
      rusm__tl.cur != p &&
      atomic_load_explicit(&home->sleeping, memory_order_relaxed) &&
      !atomic_load_explicit(&p->timer_armed, memory_order_acquire)) {
    /* Its home sleeps: rather than pay a futex wake (and a cold cache),
     * take it over, as a thief would. Processes that talk to each other
     * end up on one scheduler; idle ones steal the surplus back. A process
     * with an armed receive timer stays home (its timer lives there). */
    atomic_store_explicit(&p->sched, me, memory_order_relaxed);
    home = me;
  }
  if (me && me == home && rusm__tl.cur && rusm__tl.cur != p) {
    /* woken by the running process on its own scheduler: run it next */
    atomic_store_explicit(&p->status, RUSM_STATUS_RUNNABLE,
                          memory_order_relaxed);
    rusm_proc *old = me->runnext;
    me->runnext = p;
    if (old)
      rusm__enqueue(me, old);
    return;
  }
  rusm__enqueue(home, p);
}

rusm__sched *rusm__pick_sched(rusm_rt *rt, int32_t hint) {
  if (hint >= 0)
    return rt->sched[(uint32_t)hint % rt->nsched];
  rusm__sched *s = rusm__tl.sched;
  if (s && s->rt == rt)
    return s;
  uint32_t i = atomic_fetch_add_explicit(&rt->rr, 1, memory_order_relaxed);
  return rt->sched[i % rt->nsched];
}

/* ---- stealing -------------------------------------------------------- */

/* Moves up to half of v's queue (or its single waiting process when v is
 * stuck) to s; returns one to run. Processes with an armed receive timer
 * stay home: their timer lives on v's wheel. */
static rusm_proc *steal_from(rusm__sched *s, rusm__sched *v, bool stuck) {
  uint32_t len = atomic_load_explicit(&v->q_len, memory_order_relaxed);
  uint32_t want = len / 2;
  if (want == 0 && stuck && len == 1)
    want = 1;
  if (want == 0)
    return NULL;
  rusm_proc *got = NULL, *got_tail = NULL;
  uint32_t n = 0;
  pthread_mutex_lock(&v->lock);
  rusm_proc *prev = NULL, *p = v->q_head;
  while (p && n < want) {
    rusm_proc *next = p->rq_next;
    /* acquire: pairs with timer_fire's release (see there); a stale true
     * only delays a steal */
    if (atomic_load_explicit(&p->timer_armed, memory_order_acquire)) {
      prev = p;
      p = next;
      continue;
    }
    if (prev)
      prev->rq_next = next;
    else
      v->q_head = next;
    if (v->q_tail == p)
      v->q_tail = prev;
    p->rq_next = NULL;
    if (got_tail)
      got_tail->rq_next = p;
    else
      got = p;
    got_tail = p;
    n++;
    p = next;
  }
  atomic_store_explicit(
      &v->q_len, atomic_load_explicit(&v->q_len, memory_order_relaxed) - n,
      memory_order_relaxed);
  pthread_mutex_unlock(&v->lock);
  if (!got)
    return NULL;
  RUSM__INC(s->c.steals, n);
  for (rusm_proc *q = got; q; q = q->rq_next)
    atomic_store_explicit(&q->sched, s, memory_order_relaxed);
  rusm_proc *run = got;
  rusm_proc *rest = got->rq_next;
  run->rq_next = NULL;
  if (rest) {
    pthread_mutex_lock(&s->lock);
    if (s->q_tail)
      s->q_tail->rq_next = rest;
    else
      s->q_head = rest;
    s->q_tail = got_tail;
    atomic_store_explicit(
        &s->q_len,
        atomic_load_explicit(&s->q_len, memory_order_relaxed) + n - 1,
        memory_order_relaxed);
    pthread_mutex_unlock(&s->lock);
  }
  return run;
}

static rusm_proc *try_steal(rusm__sched *s, const uint64_t *seen_picks) {
  rusm_rt *rt = s->rt;
  for (uint32_t i = 1; i < rt->nsched; i++) {
    rusm__sched *v = rt->sched[(s->index + i) % rt->nsched];
    bool stuck = false;
    if (seen_picks)
      stuck = atomic_load_explicit(&v->running, memory_order_relaxed) &&
              atomic_load_explicit(&v->picks, memory_order_relaxed) ==
                  seen_picks[v->index];
    rusm_proc *p = steal_from(s, v, stuck);
    if (p)
      return p;
  }
  return NULL;
}

/* ---- timers ---------------------------------------------------------- */

static void timer_fire(rusm__timer *t, void *ctx) {
  (void)ctx;
  rusm_proc *p = (rusm_proc *)((char *)t - offsetof(rusm_proc, timer));
  /* release: a thief or waker that reads false (acquire) and moves the
   * process also sees the wheel done with p->timer (its armed flag). */
  atomic_store_explicit(&p->timer_armed, false, memory_order_release);
  /* The process is parked (we own waking it), or queued on this very
   * scheduler: then it re-checks its deadline when it runs. */
  if (rusm__mbox_unpark(&p->mbox, &p->cons))
    rusm__enqueue(atomic_load_explicit(&p->sched, memory_order_relaxed), p);
}

static void run_timers(rusm__sched *s) {
  bool api = rusm__wheel_count(&s->twheel) || rusm__timers_pending_requests(s);
  if (!rusm__wheel_count(&s->wheel) && !api)
    return;
  int64_t now = rusm_now_ns();
  if (rusm__wheel_count(&s->wheel))
    rusm__wheel_advance(&s->wheel, now, timer_fire, s);
  if (api)
    rusm__timers_run(s, now);
}

/* Earliest deadline of either wheel, or -1. */
static int64_t next_timer(rusm__sched *s) {
  int64_t a = rusm__wheel_next_ns(&s->wheel);
  int64_t b = rusm__timers_next(s);
  if (a < 0)
    return b;
  return b < 0 || a < b ? a : b;
}

/* ---- running a process ---------------------------------------------- */

static void run(rusm__sched *s, rusm_proc *p) {
  rusm__tl.cur = p;
  atomic_store_explicit(&p->status, RUSM_STATUS_RUNNING, memory_order_relaxed);
  for (;;) {
    if (rusm__drain(p)) {
      rusm__reap_pending(p);
      break;
    }
    rusm_step st = p->ops->step(p, p->state);
    if (p->exit_pending) {
      rusm__reap_pending(p);
      break;
    }
    if (st.kind == RUSM_STEP_EXIT) {
      /* The runtime keeps its own copy of the reason bytes (built-in
       * bodies already put theirs in exit_box). */
      if (st.reason.len && st.reason.data &&
          (!p->exit_box || st.reason.data != p->exit_box->data)) {
        rusm__reason_free(p->exit_box);
        p->exit_box =
            rusm__reason_copy(st.reason.code, st.reason.data, st.reason.len);
        st.reason.data = p->exit_box ? p->exit_box->data : NULL;
        if (!p->exit_box)
          st.reason.len = 0;
      }
      rusm__proc_reap(p, st.reason.code, st.reason.data, st.reason.len);
      break;
    }
    if (st.kind == RUSM_STEP_YIELD) {
      /* Not running any more: a lone yielder runs again at once, so it
       * must not wake a thief (which would split a ping-ponging pair). */
      atomic_store_explicit(&s->running, 0, memory_order_relaxed);
      rusm__enqueue(s, p);
      break;
    }
    /* WAIT: (re)arm the receive timer, then try to park. */
    if (st.deadline_ns >= 0) {
      if (!p->timer.armed || p->timer.deadline_ns != st.deadline_ns) {
        rusm__wheel_cancel(&s->wheel, &p->timer);
        rusm__wheel_add(&s->wheel, &p->timer, st.deadline_ns);
      }
      atomic_store_explicit(&p->timer_armed, true, memory_order_relaxed);
    } else if (p->timer.armed) {
      rusm__wheel_cancel(&s->wheel, &p->timer);
      atomic_store_explicit(&p->timer_armed, false, memory_order_relaxed);
    }
    atomic_store_explicit(&p->status, RUSM_STATUS_WAITING,
                          memory_order_relaxed);
    if (rusm__mbox_park(&p->mbox, &p->cons))
      break; /* parked: a push or the timer schedules it again */
    atomic_store_explicit(&p->status, RUSM_STATUS_RUNNING,
                          memory_order_relaxed);
    if (s->slice <= 0) { /* something arrived, but the slice is spent */
      atomic_store_explicit(&s->running, 0, memory_order_relaxed); /* above */
      rusm__enqueue(s, p);
      break;
    }
  }
  rusm__tl.cur = NULL;
}

/* ---- the scheduler loop ---------------------------------------------- */

static rusm_proc *pick(rusm__sched *s) {
  if (s->runnext && s->slice > 0) {
    rusm_proc *p = s->runnext;
    s->runnext = NULL;
    return p;
  }
  rusm_proc *p = dequeue(s);
  if (!p && s->runnext) { /* slice spent, but nothing else to do */
    p = s->runnext;
    s->runnext = NULL;
  } else if (p && s->runnext) {
    rusm__enqueue(s, s->runnext); /* the pair's slice is over: back of queue */
    s->runnext = NULL;
  }
  if (p)
    s->slice = (int32_t)s->rt->opts.budget;
  return p;
}

static bool has_work(rusm__sched *s) {
  /* seq_cst: the sleeper's half of the Dekker pair (see rusm__enqueue) */
  return s->runnext || atomic_load_explicit(&s->q_len, memory_order_seq_cst);
}

static bool others_have_work(rusm__sched *s) {
  rusm_rt *rt = s->rt;
  for (uint32_t i = 0; i < rt->nsched; i++)
    if (rt->sched[i] != s &&
        atomic_load_explicit(&rt->sched[i]->q_len, memory_order_relaxed) >= 2)
      return true;
  return false;
}

static void idle_end(rusm__sched *s, int64_t t0) {
  RUSM__INC(s->c.idle_ns, (uint64_t)(rusm_now_ns() - t0));
  atomic_store_explicit(&s->idle_since, 0, memory_order_relaxed);
}

static bool others_queued(rusm__sched *s) {
  rusm_rt *rt = s->rt;
  for (uint32_t i = 0; i < rt->nsched; i++)
    if (rt->sched[i] != s &&
        atomic_load_explicit(&rt->sched[i]->q_len, memory_order_relaxed))
      return true;
  return false;
}

/* Nothing to run: spin (stealing), then sleep until woken or a timer. */
static rusm_proc *idle(rusm__sched *s) {
  rusm_rt *rt = s->rt;
  uint64_t seen[RUSM_METRICS_MAX_SCHED];
  for (uint32_t i = 0; i < rt->nsched && i < RUSM_METRICS_MAX_SCHED; i++)
    seen[i] = atomic_load_explicit(&rt->sched[i]->picks, memory_order_relaxed);
  int64_t t0 = rusm_now_ns();
  /* relaxed: read by metrics snapshots only */
  atomic_store_explicit(&s->idle_since, t0, memory_order_relaxed);
  atomic_fetch_add_explicit(&rt->spinning, 1, memory_order_relaxed);
  rusm_proc *p = NULL;
  for (uint32_t spins = 0;; spins++) {
    if (has_work(s) ||
        atomic_load_explicit(&rt->stopping, memory_order_relaxed))
      break;
    if ((p = try_steal(s, NULL)) != NULL)
      break;
    if ((spins & 63) == 63) {
      /* Spinning must not keep other runnable threads (a node's I/O
       * thread, another runtime) off this core: let them run first. */
      sched_yield();
      int64_t now = rusm_now_ns();
      int64_t nt = next_timer(s);
      if ((nt >= 0 && nt <= now) || rusm__timers_pending_requests(s))
        break;
      if (now - t0 > SPIN_NS) {
        /* a scheduler whose picks did not move while we spun is stuck in
         * one long run: take its waiting process too */
        p = try_steal(s, rt->nsched <= RUSM_METRICS_MAX_SCHED ? seen : NULL);
        break;
      }
    }
    cpu_relax();
  }
  atomic_fetch_sub_explicit(&rt->spinning, 1, memory_order_relaxed);
  if (p || has_work(s) ||
      atomic_load_explicit(&rt->stopping, memory_order_relaxed)) {
    idle_end(s, t0);
    return p;
  }
  int64_t now = rusm_now_ns();
  int64_t next = next_timer(s);
  if ((next >= 0 && next <= now) || rusm__timers_pending_requests(s)) {
    idle_end(s, t0);
    return NULL;
  }
  /* seq_cst: see rusm__enqueue; we publish sleeping, then recheck. */
  atomic_store_explicit(&s->sleeping, 1, memory_order_seq_cst);
  atomic_fetch_add_explicit(&rt->sleepers, 1, memory_order_seq_cst);
  if (!has_work(s) && !others_have_work(s) &&
      !rusm__timers_pending_requests(s) &&
      !atomic_load_explicit(&rt->stopping, memory_order_seq_cst)) {
    RUSM__INC(s->c.sleeps, 1);
    /* While others hold queued work, wake now and then to look again: a
     * scheduler stuck in a long native run gets no chance to wake us. */
    int64_t wait = next >= 0 ? next - now : -1;
    if (others_queued(s) && (wait < 0 || wait > STUCK_CHECK_NS))
      wait = STUCK_CHECK_NS;
    rusm__futex_wait(&s->sleeping, 1, wait);
  }
  atomic_store_explicit(&s->sleeping, 0, memory_order_relaxed);
  atomic_fetch_sub_explicit(&rt->sleepers, 1, memory_order_relaxed);
  idle_end(s, t0);
  return NULL;
}

static void *sched_main(void *arg) {
  rusm__sched *s = arg;
  rusm_rt *rt = s->rt;
  rusm__tl.sched = s;
  rusm__tl.cur = NULL;
  rusm__coro_ctx_init(&s->coro_ctx);
  while (!atomic_load_explicit(&rt->stopping, memory_order_acquire)) {
    run_timers(s);
    rusm_proc *p = pick(s);
    if (!p) {
      p = idle(s);
      if (!p)
        continue;
      s->slice = (int32_t)rt->opts.budget;
    }
    RUSM__INC(s->picks, 1);
    RUSM__INC(s->c.runs, 1);
    atomic_store_explicit(&s->running, 1, memory_order_relaxed);
    run(s, p);
    atomic_store_explicit(&s->running, 0, memory_order_relaxed);
  }
  rusm__tl.sched = NULL;
  return NULL;
}

/* ---- runtime --------------------------------------------------------- */

void rusm_rt_opts_init(rusm_rt_opts *o) {
  memset(o, 0, sizeof *o);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  o->schedulers = n > 0 ? (uint32_t)n : 1;
  o->max_processes = 1u << 22;
  o->budget = DEFAULT_BUDGET;
  o->stack_size = DEFAULT_STACK;
}

int rusm_rt_create(const rusm_rt_opts *opts, rusm_rt **out) {
  if (!out)
    return RUSM_EINVAL;
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  if (opts) {
    if (opts->schedulers)
      o.schedulers = opts->schedulers;
    if (opts->max_processes)
      o.max_processes = opts->max_processes;
    if (opts->budget)
      o.budget = opts->budget;
    if (opts->stack_size)
      o.stack_size = opts->stack_size;
    o.mailbox_capacity = opts->mailbox_capacity;
    o.node_id = opts->node_id;
  }
  if (o.schedulers > RUSM_METRICS_MAX_SCHED ||
      o.max_processes > (1u << RUSM_PID_SLOT_BITS) ||
      o.node_id > RUSM_NODE_ID_MAX || o.budget > INT32_MAX / 2)
    return RUSM_EINVAL;
  rusm_rt *rt = rusm__calloc(1, sizeof *rt);
  if (!rt)
    return RUSM_ENOMEM;
  rt->opts = o;
  rt->nsched = o.schedulers;
  if (rusm__ptab_init(rt) != 0) {
    rusm__free(rt, sizeof *rt);
    return RUSM_ENOMEM;
  }
  pthread_mutex_init(&rt->mod_lock, NULL);
  if (rusm__registry_init(rt) != 0 || rusm__timers_init(rt) != 0) {
    rusm__registry_destroy(rt);
    rusm__ptab_destroy(rt);
    rusm__free(rt, sizeof *rt);
    return RUSM_ENOMEM;
  }
  rt->sched = rusm__calloc(rt->nsched, sizeof(rusm__sched *));
  int err = rt->sched ? 0 : RUSM_ENOMEM;
  for (uint32_t i = 0; !err && i < rt->nsched; i++) {
    rusm__sched *s = rusm__alloc_aligned(RUSM__CACHELINE, sizeof *s);
    if (!s) {
      err = RUSM_ENOMEM;
      break;
    }
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    s->rt = rt;
    s->index = i;
    s->started_ns = rusm_now_ns();
    rusm__wheel_init(&s->wheel, s->started_ns, TICK_NS);
    rusm__wheel_init(&s->twheel, s->started_ns, TICK_NS);
    rusm__stack_pool_init(&s->stacks, o.stack_size, STACK_CACHE);
    rt->sched[i] = s;
  }
  uint32_t started = 0;
  for (; !err && started < rt->nsched; started++)
    if (pthread_create(&rt->sched[started]->thread, NULL, sched_main,
                       rt->sched[started]) != 0)
      err = RUSM_ESYS;
  if (err) {
    atomic_store(&rt->stopping, true);
    for (uint32_t i = 0; i < started; i++) {
      rusm__wake_sched(rt->sched[i]);
      pthread_join(rt->sched[i]->thread, NULL);
    }
    for (uint32_t i = 0; rt->sched && i < rt->nsched; i++)
      if (rt->sched[i]) {
        rusm__stack_pool_destroy(&rt->sched[i]->stacks);
        pthread_mutex_destroy(&rt->sched[i]->lock);
        rusm__free(rt->sched[i], sizeof *rt->sched[i]);
      }
    rusm__free(rt->sched, rt->nsched * sizeof(rusm__sched *));
    rusm__timers_destroy(rt);
    rusm__registry_destroy(rt);
    rusm__ptab_destroy(rt);
    rusm__free(rt, sizeof *rt);
    return err;
  }
  *out = rt;
  return 0;
}

uint32_t rusm_rt_schedulers(const rusm_rt *rt) { return rt ? rt->nsched : 0; }
uint16_t rusm_rt_node(const rusm_rt *rt) { return rt ? rt->opts.node_id : 0; }

void rusm__module_add(rusm_rt *rt, rusm__module *m) {
  pthread_mutex_lock(&rt->mod_lock);
  m->next = rt->modules;
  rt->modules = m;
  pthread_mutex_unlock(&rt->mod_lock);
}

int rusm_rt_wait_idle(rusm_rt *rt, int64_t timeout_ms) {
  if (!rt || rusm__tl.sched)
    return rt ? RUSM_ECONTEXT : RUSM_EINVAL;
  int64_t deadline = timeout_ms < 0 ? -1 : rusm_now_ns() + timeout_ms * 1000000;
  atomic_fetch_add_explicit(&rt->idle_waiters, 1, memory_order_seq_cst);
  int rc = 0;
  for (;;) {
    uint32_t live = atomic_load_explicit(&rt->live, memory_order_seq_cst);
    if (live <= atomic_load_explicit(&rt->attached, memory_order_relaxed))
      break;
    int64_t left = -1;
    if (deadline >= 0) {
      left = deadline - rusm_now_ns();
      if (left <= 0) {
        rc = RUSM_ETIMEDOUT;
        break;
      }
    }
    /* bounded waits: `attached` can change without touching `live` */
    if (left < 0 || left > 100000000)
      left = 100000000;
    rusm__futex_wait(&rt->live, live, left);
  }
  atomic_fetch_sub_explicit(&rt->idle_waiters, 1, memory_order_relaxed);
  return rc;
}

/* Kills every live, non-attached process; returns how many it signalled. */
static uint32_t kill_all(rusm_rt *rt) {
  uint32_t n = 0;
  uint32_t used = atomic_load_explicit(&rt->slots_used, memory_order_acquire);
  for (uint32_t i = 0; i < used; i++) {
    rusm_proc *p = rusm__proc_at(rt, i);
    if (!p)
      continue;
    uint32_t r = atomic_load_explicit(&p->refs, memory_order_relaxed);
    if (!r)
      continue;
    rusm_proc *q = rusm__proc_get(rt, p->pid);
    if (!q)
      continue;
    if (!rusm__exited(q) && q->body != RUSM__B_ATTACHED) {
      rusm_msg *m =
          rusm__exit_node(RUSM__N_EXIT, RUSM_PID_NONE, RUSM_EXIT_KILL, NULL, 0);
      if (m) {
        if (rusm__mbox_push(&q->mbox, &m->node))
          rusm__schedule(q);
        n++;
      }
    }
    rusm__proc_unref(q);
  }
  return n;
}

void rusm_rt_destroy(rusm_rt *rt) {
  if (!rt)
    return;
  atomic_store(&rt->closing, true);
  if (rusm__tl.cur && rusm__tl.cur->rt == rt &&
      rusm__tl.cur->body == RUSM__B_ATTACHED)
    rusm_detach(rusm__tl.cur);
  /* Kill until only attached threads are left; processes may still be
   * spawning children that were in flight, hence the loop. */
  while (atomic_load(&rt->live) > atomic_load(&rt->attached)) {
    kill_all(rt);
    rusm_rt_wait_idle(rt, 50);
  }
  /* Runtime modules (I/O poller ...) stop once no process needs them. */
  pthread_mutex_lock(&rt->mod_lock);
  rusm__module *mods = rt->modules;
  rt->modules = NULL;
  pthread_mutex_unlock(&rt->mod_lock);
  while (mods) {
    rusm__module *next = mods->next;
    mods->stop(rt, mods);
    mods = next;
  }
  /* Attached threads of other callers: reap them here. */
  uint32_t used = atomic_load(&rt->slots_used);
  for (uint32_t i = 0; i < used; i++) {
    rusm_proc *p = rusm__proc_at(rt, i);
    if (p && atomic_load(&p->refs) && p->body == RUSM__B_ATTACHED &&
        !rusm__exited(p)) {
      rusm__drain(p);
      rusm__proc_reap(p, RUSM_EXIT_KILLED, NULL, 0);
    }
  }
  atomic_store(&rt->stopping, true);
  for (uint32_t i = 0; i < rt->nsched; i++) {
    atomic_store(&rt->sched[i]->sleeping, 0);
    rusm__futex_wake(&rt->sched[i]->sleeping, 1);
  }
  for (uint32_t i = 0; i < rt->nsched; i++)
    pthread_join(rt->sched[i]->thread, NULL);
  int64_t stacks_left = 0;
  for (uint32_t i = 0; i < rt->nsched; i++) {
    rusm__sched *s = rt->sched[i];
    rusm__stack_pool_destroy(&s->stacks);
    stacks_left += s->stacks.mapped;
    pthread_mutex_destroy(&s->lock);
    rusm__free(s, sizeof *s);
  }
  assert(stacks_left == 0 && "stackful stacks leaked");
  rusm__roots_free(rt);
  pthread_mutex_destroy(&rt->mod_lock);
  (void)stacks_left;
  rusm__free(rt->sched, rt->nsched * sizeof(rusm__sched *));
  rusm__timers_destroy(rt);
  rusm__registry_destroy(rt);
  rusm__ptab_destroy(rt);
  rusm__free(rt, sizeof *rt);
}
