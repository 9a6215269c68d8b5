/*
 * poll.c — the per-runtime poll thread and the descriptor table (poll.h).
 */
#include "otp/poll.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ---- the descriptor table ------------------------------------------- */

/* Events pack the descriptor into 24 bits (rusm__push_call carries one
 * pointer-sized word: generation 32 | fd 24 | events 8). The open-file
 * limit is far below (20,000 here). */
#define FD_BITS 24
#define FD_MAX (1u << FD_BITS)
#define FD_CHUNK 256u

/* Chunks are made on first use and kept for the life of the program, so
 * an entry's memory never goes away under the poll thread. */
static _Atomic(rusm__pollent *) fd_chunks[FD_MAX / FD_CHUNK];

static rusm__pollent *fd_slot(uint32_t fd, bool create) {
  if (fd >= FD_MAX)
    return NULL;
  _Atomic(rusm__pollent *) *cp = &fd_chunks[fd / FD_CHUNK];
  /* acquire: pairs with the release CAS that published the chunk. */
  rusm__pollent *c = atomic_load_explicit(cp, memory_order_acquire);
  if (!c && create) {
    rusm__pollent *fresh = rusm__calloc(FD_CHUNK, sizeof *fresh);
    if (!fresh)
      return NULL;
    rusm__pollent *expect = NULL;
    if (atomic_compare_exchange_strong_explicit(
            cp, &expect, fresh, memory_order_acq_rel, memory_order_acquire)) {
      c = fresh;
    } else {
      rusm__free(fresh, FD_CHUNK * sizeof *fresh);
      c = expect;
    }
  }
  return c ? &c[fd % FD_CHUNK] : NULL;
}

int rusm__pollent_open(rusm__poller *pl, int fd, const rusm__pollent_ops *ops,
                       void *data, rusm__pollent **out) {
  if (fd < 0 || (uint32_t)fd >= FD_MAX)
    return RUSM_ELIMIT;
  rusm__pollent *e = fd_slot((uint32_t)fd, true);
  if (!e)
    return RUSM_ENOMEM;
  /* Only the holder of descriptor fd opens its entry, and the previous
   * holder freed the entry before close() let the number come back to us.
   * acquire: pairs with the release in rusm__pollent_close, so its resets
   * come before our writes (the kernel orders them anyway; this says so
   * to the compiler and to ThreadSanitizer). */
  if (atomic_load_explicit(&e->pl, memory_order_acquire) != NULL)
    return RUSM_EBUSY;
  e->fd = fd;
  e->armed = 0;
  e->registered = false;
  e->ops = ops;
  e->data = data;
  atomic_store_explicit(&e->owner, RUSM_PID_NONE, memory_order_relaxed);
  /* release: a poll thread that reads the new generation (relaxed is
   * enough there: it only compares it) finds the owner it goes with. */
  atomic_fetch_add_explicit(&e->gen, 1, memory_order_release);
  atomic_store_explicit(&e->pl, pl, memory_order_release);
  rusm__poller_count(pl, RUSM__PS_OPENED, 1);
  *out = e;
  return 0;
}

void rusm__pollent_own(rusm__pollent *e, rusm_pid_t pid) {
  assert(!e->registered && "owned before it is armed");
  /* release: the poll thread loads it (acquire) to route events. */
  atomic_store_explicit(&e->owner, pid, memory_order_release);
}

static uint64_t token(const rusm__pollent *e) {
  uint32_t gen = atomic_load_explicit(&e->gen, memory_order_relaxed);
  return ((uint64_t)gen << 32) | (uint32_t)e->fd;
}

int rusm__pollent_arm(rusm__pollent *e, uint32_t events) {
  events &= RUSM__EV_IN | RUSM__EV_OUT;
  if (events == e->armed)
    return 0;
  rusm__poller *pl = atomic_load_explicit(&e->pl, memory_order_relaxed);
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  /* RDHUP is not asked for: a read returning 0 says the same, in order
   * with the data before it. */
  ev.events = EPOLLONESHOT | ((events & RUSM__EV_IN) ? EPOLLIN : 0) |
              ((events & RUSM__EV_OUT) ? EPOLLOUT : 0);
  ev.data.u64 = token(e);
  int op = e->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(pl->epfd, op, e->fd, &ev) != 0)
    return RUSM_ESYS;
  e->registered = true;
  e->armed = events;
  return 0;
}

void rusm__pollent_close(rusm__pollent *e) {
  rusm__poller *pl = atomic_load_explicit(&e->pl, memory_order_relaxed);
  assert(pl && "closing a free entry");
  int fd = e->fd;
  /* Explicitly: a registration outlives close() while a duplicate of the
   * descriptor lives (a fork()ed child's copy). */
  if (e->registered) /* failing, it is still removed by the last close */
    (void)epoll_ctl(pl->epfd, EPOLL_CTL_DEL, fd, NULL);
  e->fd = -1;
  e->registered = false;
  e->armed = 0;
  e->ops = NULL;
  e->data = NULL;
  atomic_store_explicit(&e->owner, RUSM_PID_NONE, memory_order_relaxed);
  /* release: whoever opens the entry next (after close() hands the
   * number out again) sees it fully reset. */
  atomic_fetch_add_explicit(&e->gen, 1, memory_order_release);
  atomic_store_explicit(&e->pl, NULL, memory_order_release);
  rusm__poller_count(pl, RUSM__PS_CLOSED, 1);
  /* Last: until now the number is ours, so no one can open the entry. */
  close(fd);
}

/* ---- delivering events ---------------------------------------------- */

#define EV_SHIFT 8
#define CTX(gen, fd, ev)                                                       \
  ((uintptr_t)(((uint64_t)(gen) << 32) | ((uint64_t)(fd) << EV_SHIFT) | (ev)))

/* In the owner (rusm__push_call): the event's generation must still be
 * the entry's, and the entry still the process's. */
static void on_ready(rusm_proc *p, void *ctx, bool dead) {
  if (dead)
    return; /* the owner is gone: its exit path closed the entry */
  uint64_t v = (uint64_t)(uintptr_t)ctx;
  uint32_t gen = (uint32_t)(v >> 32);
  uint32_t fd = (uint32_t)(v >> EV_SHIFT) & (FD_MAX - 1);
  uint32_t ev = (uint32_t)v & 0xffu;
  rusm__pollent *e = fd_slot(fd, false);
  /* relaxed: the owner wrote both (or the opener, before a spawn that
   * published them). */
  if (!e || atomic_load_explicit(&e->gen, memory_order_relaxed) != gen ||
      atomic_load_explicit(&e->owner, memory_order_relaxed) != p->pid)
    return;
  e->armed = 0; /* one-shot: the registration is disarmed now */
  e->ops->ready(p, e, ev);
}

typedef struct pending_ev {
  rusm_pid_t owner;
  uintptr_t ctx;
} pending_ev;

#define BATCH 256
#define WAKE_TOKEN UINT64_MAX
#define RETRY_MS 10 /* after a failed push (out of memory) */

static uint32_t ev_bits(uint32_t events) {
  uint32_t b = 0;
  if (events & EPOLLIN)
    b |= RUSM__EV_IN;
  if (events & EPOLLOUT)
    b |= RUSM__EV_OUT;
  if (events & EPOLLERR)
    b |= RUSM__EV_ERR;
  if (events & EPOLLHUP)
    b |= RUSM__EV_HUP;
  return b;
}

/* Routes one event to its owner; false when it must be retried. */
static bool route(rusm__poller *pl, const struct epoll_event *ev,
                  pending_ev *retry) {
  uint64_t tok = ev->data.u64;
  uint32_t fd = (uint32_t)tok, gen = (uint32_t)(tok >> 32);
  rusm__pollent *e = fd_slot(fd, false);
  if (!e || atomic_load_explicit(&e->gen, memory_order_relaxed) != gen)
    return true; /* closed since it was armed */
  /* acquire: pairs with rusm__pollent_own. A stale owner (the entry was
   * closed and reused meanwhile) gets an event whose generation it drops. */
  rusm_pid_t owner = atomic_load_explicit(&e->owner, memory_order_acquire);
  if (owner == RUSM_PID_NONE)
    return true;
  uintptr_t ctx = CTX(gen, fd, ev_bits(ev->events));
  if (rusm__push_call(pl->rt, owner, on_ready, (void *)ctx) == RUSM_ENOMEM) {
    retry->owner = owner;
    retry->ctx = ctx;
    return false;
  }
  return true;
}

static void *poll_main(void *arg) {
  rusm__poller *pl = arg;
  struct epoll_event evs[BATCH];
  pending_ev retry[BATCH];
  int nretry = 0;
  for (;;) {
    int n = epoll_wait(pl->epfd, evs, BATCH - nretry, nretry ? RETRY_MS : -1);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      break; /* the epoll descriptor is gone: nothing left to do */
    }
    /* Events a push could not deliver (out of memory) go first. */
    int keep = 0;
    for (int i = 0; i < nretry; i++)
      if (rusm__push_call(pl->rt, retry[i].owner, on_ready,
                          (void *)retry[i].ctx) == RUSM_ENOMEM)
        retry[keep++] = retry[i];
    nretry = keep;
    for (int i = 0; i < n; i++) {
      if (evs[i].data.u64 == WAKE_TOKEN) {
        uint64_t v;
        if (read(pl->evfd, &v, sizeof v) < 0) {
          /* EAGAIN: a wake already taken; the flag below decides. */
        }
        /* acquire: pairs with the release store in poller_stop. */
        if (atomic_load_explicit(&pl->stop, memory_order_acquire))
          return NULL;
        continue;
      }
      if (!route(pl, &evs[i], &retry[nretry]))
        nretry++;
    }
  }
  return NULL;
}

/* ---- lifecycle ------------------------------------------------------ */

static void poller_stop(rusm_rt *rt, rusm__module *m);

/* Serializes creation: the runtime's module list has its own lock, but
 * "find, else create and add" must be one step. */
static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;

rusm__poller *rusm__poller_find(rusm_rt *rt) {
  rusm__poller *found = NULL;
  pthread_mutex_lock(&rt->mod_lock);
  for (rusm__module *m = rt->modules; m; m = m->next)
    if (m->stop == poller_stop) {
      found = (rusm__poller *)m;
      break;
    }
  pthread_mutex_unlock(&rt->mod_lock);
  return found;
}

static void poller_free(rusm__poller *pl) {
  for (uint32_t i = 0; pl->bufs && i < pl->nbufs; i++)
    if (pl->bufs[i])
      rusm__free(pl->bufs[i], RUSM__POLL_BUF);
  if (pl->bufs)
    rusm__free(pl->bufs, pl->nbufs * sizeof *pl->bufs);
  if (pl->evfd >= 0)
    close(pl->evfd);
  if (pl->epfd >= 0)
    close(pl->epfd);
  rusm__free(pl, sizeof *pl);
}

static int poller_create(rusm_rt *rt, rusm__poller **out) {
  rusm__poller *pl = rusm__calloc(1, sizeof *pl);
  if (!pl)
    return RUSM_ENOMEM;
  pl->rt = rt;
  pl->mod.stop = poller_stop;
  pl->epfd = epoll_create1(EPOLL_CLOEXEC);
  pl->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  pl->nbufs = rusm_rt_schedulers(rt);
  pl->bufs = rusm__calloc(pl->nbufs ? pl->nbufs : 1, sizeof *pl->bufs);
  int rc = 0;
  if (!pl->bufs)
    rc = RUSM_ENOMEM;
  else if (pl->epfd < 0 || pl->evfd < 0)
    rc = RUSM_ESYS;
  if (rc == 0) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN; /* level-triggered: stays up until stop */
    ev.data.u64 = WAKE_TOKEN;
    if (epoll_ctl(pl->epfd, EPOLL_CTL_ADD, pl->evfd, &ev) != 0)
      rc = RUSM_ESYS;
  }
  if (rc == 0) {
    /* The thread blocks every signal: they belong to the embedding
     * program's threads (sigwait() in a main loop ...). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (pthread_create(&pl->thread, NULL, poll_main, pl) != 0)
      rc = RUSM_ESYS;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  if (rc) {
    poller_free(pl);
    return rc;
  }
  pthread_setname_np(pl->thread, "rusm-poll");
  *out = pl;
  return 0;
}

int rusm__poller_get(rusm_rt *rt, rusm__poller **out) {
  if (!rt || !out)
    return RUSM_EINVAL;
  rusm__poller *pl = rusm__poller_find(rt);
  if (pl) {
    *out = pl;
    return 0;
  }
  pthread_mutex_lock(&create_lock);
  int rc = 0;
  pl = rusm__poller_find(rt);
  if (!pl) {
    /* Modules stop once no process is left: a poller made while the
     * runtime closes could outlive it. */
    if (atomic_load_explicit(&rt->closing, memory_order_relaxed))
      rc = RUSM_ESHUTDOWN;
    else if ((rc = poller_create(rt, &pl)) == 0)
      rusm__module_add(rt, &pl->mod);
  }
  pthread_mutex_unlock(&create_lock);
  if (rc == 0)
    *out = pl;
  return rc;
}

uint8_t *rusm__poller_buf(rusm__poller *pl) {
  rusm__sched *s = rusm__tl.sched;
  if (!s || s->rt != pl->rt || s->index >= pl->nbufs)
    return NULL;
  /* Only this scheduler's thread touches its slot. */
  if (!pl->bufs[s->index])
    pl->bufs[s->index] = rusm__alloc(RUSM__POLL_BUF);
  return pl->bufs[s->index];
}

/* rusm_rt_destroy: every process has exited, so every entry its processes
 * owned is closed already; what is left belongs to attached threads still
 * attached, or was never handed to a process. */
static void poller_stop(rusm_rt *rt, rusm__module *m) {
  (void)rt;
  rusm__poller *pl = (rusm__poller *)m;
  /* release: pairs with the poll thread's acquire load. */
  atomic_store_explicit(&pl->stop, true, memory_order_release);
  uint64_t one = 1;
  while (write(pl->evfd, &one, sizeof one) < 0 && errno == EINTR) {
  }
  pthread_join(pl->thread, NULL);

  uint64_t opened = atomic_load(&pl->n[RUSM__PS_OPENED]);
  uint64_t closed = atomic_load(&pl->n[RUSM__PS_CLOSED]);
  for (uint32_t c = 0; opened != closed && c < FD_MAX / FD_CHUNK; c++) {
    rusm__pollent *chunk =
        atomic_load_explicit(&fd_chunks[c], memory_order_acquire);
    for (uint32_t i = 0; chunk && i < FD_CHUNK; i++) {
      rusm__pollent *e = &chunk[i];
      if (atomic_load_explicit(&e->pl, memory_order_acquire) != pl)
        continue;
      e->ops->drop(e);
      closed++;
    }
  }
  poller_free(pl);
}
