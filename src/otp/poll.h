/*
 * poll.h — the runtime's I/O poller: one thread per runtime blocked in
 * epoll_wait (as BEAM's dedicated poll threads), created on first use and
 * stopped with the runtime. It never does I/O on a descriptor: for each
 * ready one it runs a function in the process that owns it
 * (rusm__push_call), on that process's thread and in order with its
 * messages, and the process does the read()/accept()/write() itself.
 *
 * Registrations are one-shot (EPOLLONESHOT, level-triggered): an event is
 * delivered once, then the descriptor stays disarmed until its owner arms
 * it again, typically after it drained it to EAGAIN. Level triggering
 * makes re-arming safe at any point: readiness still present fires again.
 *
 * Entries live in one table indexed by descriptor, shared by every
 * runtime of the program (descriptors are per OS process). Its memory is
 * type-stable, like the process table: the poll thread reads an entry's
 * generation and owner with atomic loads and never dereferences anything
 * else, so an entry closed and reused meanwhile is harmless. An event
 * carries the generation it was armed with; the owner side drops events
 * of an older generation. See docs/tcp.md.
 */
#ifndef RUSM_OTP_POLL_H
#define RUSM_OTP_POLL_H

#include "otp/internal.h"

typedef struct rusm__poller rusm__poller;
typedef struct rusm__pollent rusm__pollent;

/* Event bits (ours, not EPOLL*: they travel packed in 8 bits). */
enum {
  RUSM__EV_IN = 1u,
  RUSM__EV_OUT = 2u,
  RUSM__EV_ERR = 4u,
  RUSM__EV_HUP = 8u,
};

/* Counters of one poller (relaxed atomics, for rusm_tcp_stats). */
enum {
  RUSM__PS_OPENED = 0,     /* entries opened */
  RUSM__PS_CLOSED,         /* entries closed */
  RUSM__PS_ACCEPTED,       /* connections accepted */
  RUSM__PS_CONNECTED,      /* outgoing connections established */
  RUSM__PS_ACCEPT_PAUSES,  /* accepting paused: out of descriptors/memory */
  RUSM__PS_ACCEPT_ERRORS,  /* accept(2) failures of any kind */
  RUSM__PS_SPAWN_FAILURES, /* accepted connections closed: no process */
  RUSM__PS_COUNT
};

typedef struct rusm__pollent_ops {
  /* Runs in the owner, on its thread (during a drain of its mailbox),
   * when an armed event fired; the registration is disarmed by then
   * (e->armed == 0). events: RUSM__EV_* bits. */
  void (*ready)(rusm_proc *p, rusm__pollent *e, uint32_t events);
  /* Poller stop, for entries still open: releases e->data and closes e
   * (rusm__pollent_close). No process of the runtime runs any more. */
  void (*drop)(rusm__pollent *e);
} rusm__pollent_ops;

struct rusm__pollent {
  _Atomic uint32_t gen;       /* bumped at open and at close */
  _Atomic rusm_pid_t owner;   /* the process woken; NONE until owned */
  _Atomic(rusm__poller *) pl; /* non-NULL while open */
  int fd;
  /* --- the owner's (or the opener's, before rusm__pollent_own) --- */
  uint32_t armed; /* events armed and not delivered since (0: disarmed) */
  bool registered;
  const rusm__pollent_ops *ops;
  void *data;
};

struct rusm__poller {
  rusm__module mod; /* first: the runtime's module list holds it */
  rusm_rt *rt;
  int epfd;
  int evfd; /* wakes the poll thread for stop */
  pthread_t thread;
  _Atomic bool stop;
  uint32_t nbufs;
  uint8_t **bufs; /* per scheduler read buffers, made on first use */
  _Atomic uint64_t n[RUSM__PS_COUNT];
};

/* Size of a scheduler's read buffer (rusm__poller_buf). */
#define RUSM__POLL_BUF ((size_t)64 * 1024)

/* The runtime's poller, created (thread and all) on the first call.
 * Callable from any thread. 0, RUSM_ESHUTDOWN (runtime closing),
 * RUSM_ENOMEM or RUSM_ESYS. */
int rusm__poller_get(rusm_rt *rt, rusm__poller **out);
/* The runtime's poller if it exists, else NULL. */
rusm__poller *rusm__poller_find(rusm_rt *rt);

static inline void rusm__poller_count(rusm__poller *pl, int which, uint64_t n) {
  /* relaxed: statistics only. */
  atomic_fetch_add_explicit(&pl->n[which], n, memory_order_relaxed);
}

/* The running scheduler's read buffer (RUSM__POLL_BUF bytes), for owners
 * running on a scheduler thread of pl's runtime. NULL when out of memory
 * or not on such a thread. */
uint8_t *rusm__poller_buf(rusm__poller *pl);

/*
 * Takes fd (non-blocking, opened by the caller) into the table. Not armed,
 * not owned: the caller sets the owner with rusm__pollent_own before
 * arming. From now on fd belongs to the entry: rusm__pollent_close closes
 * it. On failure fd is left to the caller. Returns 0, RUSM_ELIMIT (fd too
 * large for the table), RUSM_EBUSY (fd already in the table: it was
 * closed behind the runtime's back) or RUSM_ENOMEM.
 */
int rusm__pollent_open(rusm__poller *pl, int fd, const rusm__pollent_ops *ops,
                       void *data, rusm__pollent **out);
/* Makes pid the process that events wake. Before the entry is armed. */
void rusm__pollent_own(rusm__pollent *e, rusm_pid_t pid);
/* Arms the entry for events (RUSM__EV_IN | RUSM__EV_OUT), one-shot. A no-op
 * when exactly these are armed already. Owner only. 0 or RUSM_ESYS. */
int rusm__pollent_arm(rusm__pollent *e, uint32_t events);
/* Unregisters and closes the descriptor; the entry is free again. Owner
 * only (or the opener before it is owned). */
void rusm__pollent_close(rusm__pollent *e);

#endif /* RUSM_OTP_POLL_H */
