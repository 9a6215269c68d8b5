/*
 * timer.c — the hierarchical timing wheel (contract in timer.h).
 *
 * Placement. Ticks are read as base-64 numbers, one digit per level. A timer
 * expiring at tick e > now sits at the level of the highest digit in which e
 * and now differ, in the slot named by e's digit there. So a level-L timer
 * agrees with now on every digit above L and has a larger digit L: at each
 * level only the slots above now's digit are in use, and every level-L timer
 * expires after every level-(L-1) one. The earliest timer is therefore in the
 * first occupied slot above now's digit on the lowest non-empty level, which
 * next_ns() finds with one bit scan per level.
 *
 * Two kinds of slot that placement never uses hold special lists:
 *  - level 0, the slot of now's digit: "due" timers, added with a deadline
 *    at or before the current tick. The next advance() fires them first.
 *  - the top level, slots at or below now's digit: timers beyond the wheel's
 *    range (e differs from now above bit 48, the "era"). They are looked at
 *    again when now enters a new era; until then next_ns() reports the start
 *    of the next era.
 *
 * advance() moves now to the target tick in one step. Per level it drains
 * only the slots now has passed over, or all of them when a higher digit
 * changed (time jumped past the whole level); each drained timer is either
 * due (e <= target) or is placed again relative to the target, on a lower
 * level. No tick-by-tick walk, so a jump of hours costs what the timers it
 * touches cost. Levels are drained bottom-up so a timer moved down is never
 * drained twice. Due timers go on a list local to advance() (a sentinel on
 * its stack) and their callbacks run only once the wheel is consistent at
 * the target tick, so a callback may add, cancel (even another due timer
 * still on that list) or free timers. A timer re-added with a past deadline
 * goes to the new due slot, which this advance() no longer looks at.
 *
 * Slot lists are circular and doubly linked (head->prev is the tail): O(1)
 * append, so timers that share a tick fire in the order they were added.
 *
 * Moving ahead. Entering a level-1 slot used to re-place all its timers at
 * once: with a million pending that was some 64,000 scattered entries in
 * one advance (5 ms with nothing else running). Level 0 therefore has a
 * second array: while time runs through one level-1 slot, each advance
 * moves an even share (what is left over the ticks left, oldest first) of the
 * next level-1 slot into the spare array by level-0 digit; when time
 * enters that slot the arrays swap (take_spare), and what is left of the
 * slot is drained as before, after the moved timers, so ties keep their
 * order. The border into a new level-2 slot cascades the old way.
 */
#include "otp/timer.h"

#include <assert.h>
#include <string.h>

#define BITS RUSM__WHEEL_BITS
#define LEVELS RUSM__WHEEL_LEVELS
#define TOP (LEVELS - 1)
#define RANGE_BITS (BITS * LEVELS) /* the wheel spans 2^48 ticks */
#define DIGIT_MASK ((uint64_t)RUSM__WHEEL_SLOTS - 1)
#define FIRING LEVELS /* t->level of a timer on advance()'s due list */

_Static_assert(RANGE_BITS < 64, "the wheel's range must fit a tick");
_Static_assert(RUSM__WHEEL_SLOTS == 64, "occupied[] is one uint64_t a level");

static inline unsigned digit(uint64_t tick, unsigned level) {
  return (unsigned)((tick >> (level * BITS)) & DIGIT_MASK);
}

/* Where a timer is linked is t->level: a level, FIRING, or ALT for level
 * 0's second array (w->spare). Which of the two arrays is level 0 now and
 * which is the spare one flips at each level-1 slot. */
#define ALT (LEVELS + 1)

static inline unsigned l0_tag(const rusm__wheel *w) {
  return w->swapped ? ALT : 0;
}
static inline unsigned spare_tag(const rusm__wheel *w) {
  return w->swapped ? 0 : ALT;
}
static inline rusm__timer **slot_at(rusm__wheel *w, unsigned tag,
                                    unsigned slot) {
  return tag == ALT ? &w->spare[slot] : &w->slots[tag][slot];
}
static inline uint64_t *occ_at(rusm__wheel *w, unsigned tag) {
  return tag == ALT ? &w->spare_occupied : &w->occupied[tag];
}
static inline uint64_t occ_of(const rusm__wheel *w, unsigned tag) {
  return tag == ALT ? w->spare_occupied : w->occupied[tag];
}

/* Tick holding ns, rounded down; times before the origin are tick 0. */
static uint64_t tick_floor(const rusm__wheel *w, int64_t ns) {
  if (ns <= w->origin_ns)
    return 0;
  /* Unsigned: the difference of two int64 can exceed INT64_MAX. */
  return ((uint64_t)ns - (uint64_t)w->origin_ns) / (uint64_t)w->tick_ns;
}

/* First tick at or after ns: a timer must never fire early. */
static uint64_t tick_ceil(const rusm__wheel *w, int64_t ns) {
  if (ns <= w->origin_ns)
    return 0;
  uint64_t d = (uint64_t)ns - (uint64_t)w->origin_ns;
  uint64_t t = (uint64_t)w->tick_ns;
  return d / t + (d % t != 0);
}

/* Start of a tick in ns, saturating at INT64_MAX. */
static int64_t tick_time(const rusm__wheel *w, uint64_t tick) {
  uint64_t span;
  if (__builtin_mul_overflow(tick, (uint64_t)w->tick_ns, &span))
    return INT64_MAX;
  /* INT64_MAX - origin as an exact unsigned value (origin may be < 0). */
  uint64_t room = (uint64_t)INT64_MAX - (uint64_t)w->origin_ns;
  if (span > room)
    return INT64_MAX;
  return (int64_t)((uint64_t)w->origin_ns + span);
}

static void slot_push(rusm__wheel *w, rusm__timer *t, unsigned level,
                      unsigned slot) {
  rusm__timer **head = slot_at(w, level, slot);
  if (level == 1)
    w->l1_count[slot]++;
  if (*head == NULL) {
    t->next = t->prev = t;
    *head = t;
    *occ_at(w, level) |= UINT64_C(1) << slot;
  } else {
    rusm__timer *first = *head, *last = first->prev;
    t->next = first;
    t->prev = last;
    last->next = t;
    first->prev = t;
  }
  t->level = (uint16_t)level;
  t->slot = (uint16_t)slot;
}

static void slot_unlink(rusm__wheel *w, rusm__timer *t) {
  assert((t->level < LEVELS || t->level == ALT) && t->slot < RUSM__WHEEL_SLOTS);
  rusm__timer **head = slot_at(w, t->level, t->slot);
  if (t->level == 1)
    w->l1_count[t->slot]--;
  if (t->next == t) {
    assert(*head == t);
    *head = NULL;
    *occ_at(w, t->level) &= ~(UINT64_C(1) << t->slot);
  } else {
    t->prev->next = t->next;
    t->next->prev = t->prev;
    if (*head == t)
      *head = t->next;
  }
}

/* Links an armed timer where its expiry belongs relative to w->now. */
static void place(rusm__wheel *w, rusm__timer *t) {
  uint64_t e = t->expires, now = w->now;
  if (e <= now) {
    slot_push(w, t, l0_tag(w), digit(now, 0));
    return;
  }
  uint64_t diff = e ^ now;
  if (diff >> RANGE_BITS) {
    slot_push(w, t, TOP, digit(now, TOP));
    return;
  }
  unsigned level = (unsigned)(63 - __builtin_clzll(diff)) / BITS;
  slot_push(w, t, level ? level : l0_tag(w), digit(e, level));
}

/* The due list is circular around a sentinel, so unlinking needs no head. */
static void due_push(rusm__timer *sentinel, rusm__timer *t) {
  t->next = sentinel;
  t->prev = sentinel->prev;
  sentinel->prev->next = t;
  sentinel->prev = t;
  t->level = FIRING;
  t->slot = 0;
}

static void due_unlink(rusm__timer *t) {
  t->prev->next = t->next;
  t->next->prev = t->prev;
}

/*
 * Empties the slots of `level` (a tag: ALT for level 0's second array)
 * named by `mask` (ascending, so timers keep
 * their expiry order): due timers go on the due list, later ones are placed
 * again relative to w->now, which is already the target tick.
 */
static void drain(rusm__wheel *w, unsigned level, uint64_t mask,
                  rusm__timer *due) {
  rusm__timer *todo = NULL, *tail = NULL;
  uint64_t bits = *occ_at(w, level) & mask;
  /* Detach every slot first: a far timer placed again on the top level may
   * land in a slot of this same mask and must not be drained twice. */
  while (bits) {
    unsigned s = (unsigned)__builtin_ctzll(bits);
    bits &= bits - 1;
    rusm__timer *head = *slot_at(w, level, s);
    *slot_at(w, level, s) = NULL;
    if (level == 1)
      w->l1_count[s] = 0;
    if (tail)
      tail->next = head;
    else
      todo = head;
    tail = head->prev;
    tail->next = NULL;
  }
  *occ_at(w, level) &= ~mask;
  while (todo) {
    rusm__timer *t = todo;
    todo = t->next;
    if (t->expires <= w->now)
      due_push(due, t);
    else
      place(w, t); /* on a lower level, or the top one if beyond range */
  }
}

/*
 * Time entered a new level-1 slot (w->now is there). The spare array
 * holds timers moved ahead of time: if they belong to this very slot (and
 * level 0 was emptied by the drain before), the arrays swap and the ones
 * whose tick has come are due; otherwise (time jumped further) they are
 * drained like any other slot.
 */
static void take_spare(rusm__wheel *w, rusm__timer *due) {
  unsigned st = spare_tag(w);
  if (!occ_of(w, st))
    return;
  if (w->spare_period == w->now >> BITS && !occ_of(w, l0_tag(w))) {
    w->swapped = !w->swapped;
    unsigned to = digit(w->now, 0);
    drain(w, l0_tag(w), ~UINT64_C(0) >> (63 - to), due); /* ticks <= now */
  } else {
    drain(w, st, ~UINT64_C(0), due);
  }
}

/*
 * Moves a share of the timers of the next level-1 slot (oldest first, so
 * ties keep their order) into the spare array, by their level-0 digit.
 * Skipped when the next slot starts a new level-2 slot: that border
 * cascades the old way.
 */
static void premove(rusm__wheel *w, uint64_t ticks) {
  unsigned d1 = digit(w->now, 1);
  if (d1 == DIGIT_MASK || !w->l1_count[d1 + 1])
    return;
  /* An even share: what is left over the ticks left in this slot, for
   * each tick this advance covered (at least one), so the work is spread
   * and done before the border. */
  uint64_t left = RUSM__WHEEL_SLOTS - digit(w->now, 0);
  uint64_t share = (w->l1_count[d1 + 1] + left - 1) / left;
  uint64_t budget = share * (ticks ? ticks : 1);
  uint64_t period = (w->now >> BITS) + 1;
  unsigned st = spare_tag(w);
  if (occ_of(w, st) && w->spare_period != period)
    return; /* not reached: take_spare empties it at every slot change */
  rusm__timer **head = &w->slots[1][d1 + 1];
  while (*head && budget--) {
    rusm__timer *t = *head;
    assert(t->expires >> BITS == period);
    slot_unlink(w, t);
    w->spare_period = period;
    slot_push(w, t, st, digit(t->expires, 0));
  }
}

void rusm__wheel_init(rusm__wheel *w, int64_t now_ns, int64_t tick_ns) {
  assert(tick_ns > 0);
  memset(w, 0, sizeof *w);
  w->tick_ns = tick_ns;
  w->origin_ns = now_ns;
}

void rusm__wheel_add(rusm__wheel *w, rusm__timer *t, int64_t deadline_ns) {
  assert(!t->armed);
  /* Written only when it changes: an owner that set it before handing the
   * timer over may have other threads reading it (timers.c). */
  if (t->deadline_ns != deadline_ns)
    t->deadline_ns = deadline_ns;
  /* Below now for a past deadline: place() puts it on the due slot. */
  t->expires = tick_ceil(w, deadline_ns);
  t->armed = true;
  w->count++;
  place(w, t);
}

void rusm__wheel_cancel(rusm__wheel *w, rusm__timer *t) {
  if (!t->armed)
    return;
  if (t->level == FIRING)
    due_unlink(t); /* due in a running advance(), cancelled by a callback */
  else
    slot_unlink(w, t);
  t->next = t->prev = NULL;
  t->armed = false;
  assert(w->count > 0);
  w->count--;
}

int64_t rusm__wheel_next_ns(const rusm__wheel *w) {
  if (w->count == 0)
    return -1;
  uint64_t now = w->now;
  uint64_t occ0 = occ_of(w, l0_tag(w));
  if (occ0 & (UINT64_C(1) << digit(now, 0)))
    return tick_time(w, now); /* due list: not later than now */
  /* The spare array holds the next level-1 slot's first timers: exact. */
  uint64_t spare = occ_of(w, spare_tag(w));
  uint64_t cand =
      spare ? w->spare_period << BITS | (uint64_t)__builtin_ctzll(spare)
            : UINT64_MAX;
  for (unsigned level = 0; level < LEVELS; level++) {
    unsigned d = digit(now, level);
    if (d == DIGIT_MASK)
      continue; /* no slot above now's digit */
    uint64_t occ = level ? w->occupied[level] : occ0;
    uint64_t above = occ & (~UINT64_C(0) << (d + 1));
    if (above) {
      /* The slot's first tick: exact on level 0, a lower bound above it. */
      unsigned shift = level * BITS;
      uint64_t base = now >> (shift + BITS) << (shift + BITS);
      uint64_t slot = (uint64_t)__builtin_ctzll(above);
      uint64_t tick = base | (slot << shift);
      return tick_time(w, tick < cand ? tick : cand);
    }
  }
  if (spare)
    return tick_time(w, cand);
  if (w->occupied[TOP]) /* only timers beyond the range: next era */
    return tick_time(w, ((now >> RANGE_BITS) + 1) << RANGE_BITS);
  /* Only timers on a running advance()'s due list (asked by a callback). */
  return tick_time(w, now);
}

size_t rusm__wheel_advance(rusm__wheel *w, int64_t now_ns,
                           void (*fire)(rusm__timer *t, void *ctx), void *ctx) {
  assert(fire != NULL);
  rusm__timer due;
  due.next = due.prev = &due;
  uint64_t old = w->now;
  uint64_t target = tick_floor(w, now_ns);
  if (target < old)
    target = old; /* time never goes back */

  /* Timers added with a past deadline fire first: they are the oldest. */
  w->now = target;
  unsigned d0 = digit(old, 0);
  unsigned l0 = l0_tag(w);
  if (*occ_at(w, l0) & (UINT64_C(1) << d0)) {
    rusm__timer *t = *slot_at(w, l0, d0);
    *slot_at(w, l0, d0) = NULL;
    *occ_at(w, l0) &= ~(UINT64_C(1) << d0);
    t->prev->next = NULL;
    while (t) {
      rusm__timer *next = t->next;
      due_push(&due, t);
      t = next;
    }
  }

  for (unsigned level = 0; level < LEVELS && target > old; level++) {
    unsigned up = level * BITS + BITS;
    uint64_t mask;
    if ((old >> up) != (target >> up)) {
      mask = ~UINT64_C(0); /* a higher digit moved: all of this level */
    } else {
      unsigned from = digit(old, level), to = digit(target, level);
      if (from == to)
        break; /* this digit and all above are unchanged */
      /* Slots (from, to]: from < to <= 63, so both shifts are < 64. */
      mask = (~UINT64_C(0) << (from + 1)) & (~UINT64_C(0) >> (63 - to));
    }
    if (level == 1)
      take_spare(w, &due); /* time left its level-1 slot */
    drain(w, level ? level : l0_tag(w), mask, &due);
  }

  size_t fired = 0;
  while (due.next != &due) {
    rusm__timer *t = due.next;
    due_unlink(t);
    t->next = t->prev = NULL;
    t->armed = false;
    w->count--;
    fired++;
    fire(t, ctx); /* may free t: not touched after this */
  }
  premove(w, target - old);
  return fired;
}
