/*
 * timer.h — a hierarchical timing wheel (internal). One wheel per
 * scheduler, touched only by its owner thread: no locks, no atomics.
 * O(1) add and cancel; advance() is amortised O(1) per timer plus cascades.
 *
 * Ownership: the wheel never allocates or frees entries. The caller owns
 * each rusm__timer, keeps it alive while it is armed, and gets it back
 * (unlinked) in the fire callback or after rusm__wheel_cancel().
 */
#ifndef RUSM_OTP_TIMER_H
#define RUSM_OTP_TIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RUSM__WHEEL_BITS 6 /* 64 slots a level */
#define RUSM__WHEEL_SLOTS (1 << RUSM__WHEEL_BITS)
#define RUSM__WHEEL_LEVELS 8 /* 2^48 ticks of range */

typedef struct rusm__timer {
  struct rusm__timer *next, *prev; /* slot list (intrusive) */
  uint64_t expires;                /* absolute tick */
  int64_t deadline_ns;             /* as given to add(), for the caller */
  uint16_t level, slot;            /* where it is linked */
  bool armed;
} rusm__timer;

typedef struct rusm__wheel {
  int64_t tick_ns;   /* resolution */
  int64_t origin_ns; /* time of tick 0 */
  uint64_t now;      /* current tick: every timer with expires <= now fired */
  size_t count;      /* armed timers */
  uint64_t occupied[RUSM__WHEEL_LEVELS]; /* bit per non-empty slot */
  rusm__timer *slots[RUSM__WHEEL_LEVELS][RUSM__WHEEL_SLOTS];
  /* Level 0 has two arrays: while time runs through one level-1 slot, the
   * next level-1 slot's timers move, a share at each advance, into the
   * spare one, which becomes level 0 when time enters that slot. So no
   * advance re-places a whole level-1 slot at once (timer.c). */
  rusm__timer *spare[RUSM__WHEEL_SLOTS];
  uint64_t spare_occupied;
  uint64_t spare_period; /* tick >> BITS of the timers in the spare array */
  uint32_t l1_count[RUSM__WHEEL_SLOTS]; /* timers in each level-1 slot */
  bool swapped; /* level 0 is the spare array, slots[0] the other */
} rusm__wheel;

/* Starts an empty wheel at now_ns with the given resolution (> 0). */
void rusm__wheel_init(rusm__wheel *w, int64_t now_ns, int64_t tick_ns);

/* Arms t to fire at deadline_ns (rounded up to a tick: never early; a
 * deadline in the past fires on the next advance). t must not be armed. */
void rusm__wheel_add(rusm__wheel *w, rusm__timer *t, int64_t deadline_ns);

/* Disarms t if armed (no-op otherwise). */
void rusm__wheel_cancel(rusm__wheel *w, rusm__timer *t);

/* Earliest pending deadline in ns (a tick boundary, >= the true deadline
 * of some timer, never later than the earliest deadline + one tick), or
 * -1 when the wheel is empty. Used to bound a scheduler's sleep. */
int64_t rusm__wheel_next_ns(const rusm__wheel *w);

/* Moves time to now_ns and calls fire(t, ctx) for every timer whose tick
 * has come, each unlinked (armed == false) before its callback, so the
 * callback may free it or re-add it. Returns how many fired. */
size_t rusm__wheel_advance(rusm__wheel *w, int64_t now_ns,
                           void (*fire)(rusm__timer *t, void *ctx), void *ctx);

static inline size_t rusm__wheel_count(const rusm__wheel *w) {
  return w->count;
}

#endif
