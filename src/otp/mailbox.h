/*
 * mailbox.h — the outer queue of a process mailbox: an intrusive,
 * wait-free-for-producers MPSC queue (Vyukov's, with a stub node that the
 * consumer re-pushes), plus a "parked" mark in the low bit of the head.
 *
 * The mark is how wake-ups happen exactly once with no extra atomics:
 *  - the consumer, finding the queue empty, parks by CAS-ing head from the
 *    stub to stub|1 (fails if anything was pushed meanwhile);
 *  - every push is one exchange on head; the producer whose exchange
 *    returned a marked pointer is the one that must schedule the process;
 *  - a timer (or anyone waking without a message) may CAS stub|1 -> stub and
 *    then owns the scheduling the same way.
 * While the process runs, head is never marked.
 *
 * Producers: any thread. Consumer: the one thread running the process.
 */
#ifndef RUSM_OTP_MAILBOX_H
#define RUSM_OTP_MAILBOX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rusm__mpsc_node {
  struct rusm__mpsc_node *_Atomic next;
} rusm__mpsc_node;

/* Producer side (hot for senders). */
typedef struct rusm__mailbox {
  _Atomic uintptr_t head; /* last pushed node | parked bit */
} rusm__mailbox;

/* Consumer side (owner thread only). */
typedef struct rusm__mpsc_cons {
  rusm__mpsc_node *tail;
  rusm__mpsc_node stub;
} rusm__mpsc_cons;

#define RUSM__MARK ((uintptr_t)1)

static inline void rusm__mbox_init(rusm__mailbox *mb, rusm__mpsc_cons *c) {
  atomic_store_explicit(&c->stub.next, NULL, memory_order_relaxed);
  c->tail = &c->stub;
  atomic_store_explicit(&mb->head, (uintptr_t)&c->stub, memory_order_relaxed);
}

/* Pushes n; returns true when the process was parked and the caller must
 * now schedule it. */
static inline bool rusm__mbox_push(rusm__mailbox *mb, rusm__mpsc_node *n) {
  atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
  /* acq_rel: release publishes n's contents to the consumer; acquire pairs
   * with the consumer's park CAS so the scheduler fields it wrote before
   * parking are visible to us when we schedule it. */
  uintptr_t prev =
      atomic_exchange_explicit(&mb->head, (uintptr_t)n, memory_order_acq_rel);
  rusm__mpsc_node *pn = (rusm__mpsc_node *)(prev & ~RUSM__MARK);
  /* release: the consumer's acquire load of next sees n's contents. */
  atomic_store_explicit(&pn->next, n, memory_order_release);
  return (prev & RUSM__MARK) != 0;
}

/* Pops the oldest node, or NULL when empty (or when a producer is midway
 * through a push: the caller retries later; parking then fails). */
static inline rusm__mpsc_node *rusm__mbox_pop(rusm__mailbox *mb,
                                              rusm__mpsc_cons *c) {
  rusm__mpsc_node *tail = c->tail;
  rusm__mpsc_node *next =
      atomic_load_explicit(&tail->next, memory_order_acquire);
  if (tail == &c->stub) {
    if (!next)
      return NULL;
    c->tail = next;
    tail = next;
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
  }
  if (next) {
    c->tail = next;
    return tail;
  }
  uintptr_t head = atomic_load_explicit(&mb->head, memory_order_acquire);
  if ((rusm__mpsc_node *)head != tail)
    return NULL; /* a producer is between its exchange and its link */
  rusm__mbox_push(mb, &c->stub);
  next = atomic_load_explicit(&tail->next, memory_order_acquire);
  if (next) {
    c->tail = next;
    return tail;
  }
  return NULL;
}

/* Parks: true when the queue was empty and is now marked; false when
 * something arrived (the caller keeps running the process). */
static inline bool rusm__mbox_park(rusm__mailbox *mb, rusm__mpsc_cons *c) {
  if (c->tail != &c->stub ||
      atomic_load_explicit(&c->stub.next, memory_order_acquire) != NULL)
    return false;
  uintptr_t expect = (uintptr_t)&c->stub;
  /* acq_rel: release publishes what the scheduler wrote before parking to
   * the producer that wins the wake-up; acquire is for the failure path. */
  return atomic_compare_exchange_strong_explicit(
      &mb->head, &expect, expect | RUSM__MARK, memory_order_acq_rel,
      memory_order_acquire);
}

/* Wakes a parked process without a message: true when the caller now owns
 * scheduling it (it was parked and nobody else woke it first). */
static inline bool rusm__mbox_unpark(rusm__mailbox *mb, rusm__mpsc_cons *c) {
  uintptr_t expect = (uintptr_t)&c->stub | RUSM__MARK;
  return atomic_compare_exchange_strong_explicit(
      &mb->head, &expect, (uintptr_t)&c->stub, memory_order_acq_rel,
      memory_order_relaxed);
}

#endif
