/*
 * test_timer.c — the hierarchical timing wheel (src/otp/timer.c).
 *
 * Time is simulated: every now_ns handed to the wheel is computed here,
 * none is read from a clock. Random tests use a fixed seed (printed), so a
 * failure replays.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "otp/timer.h"

#define US INT64_C(1000)
#define MS INT64_C(1000000)
#define SEC (1000 * MS)
#define HOUR (3600 * SEC)
#define DAY (24 * HOUR)
#define YEAR (365 * DAY)
#define T0 (5 * DAY + 12345) /* an arbitrary monotonic start */

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static uint64_t rng_state;

static void rng_seed(uint64_t seed) {
  rng_state = seed;
  print_message("seed %#llx\n", (unsigned long long)seed);
}

static uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static uint64_t rnd_below(uint64_t n) { return rnd() % n; }

/* The model's own tick arithmetic (test values stay far from overflow). */
static uint64_t ceil_tick(int64_t origin, int64_t tick, int64_t ns) {
  return ns <= origin ? 0 : (uint64_t)((ns - origin + tick - 1) / tick);
}

static uint64_t floor_tick(int64_t origin, int64_t tick, int64_t ns) {
  return ns <= origin ? 0 : (uint64_t)((ns - origin) / tick);
}

static int64_t at(int64_t origin, int64_t tick, uint64_t k) {
  return origin + (int64_t)k * tick;
}

/* Records what fired, and when (the now_ns of the advance that fired it). */
typedef struct firelog {
  int64_t now_ns;
  size_t n;
  rusm__timer *who[256];
  int64_t when[256];
} firelog;

static void log_fire(rusm__timer *t, void *ctx) {
  firelog *l = ctx;
  assert_false(t->armed);
  assert_null(t->next);
  assert_true(l->now_ns >= t->deadline_ns); /* never early */
  assert_true(l->n < 256);
  l->who[l->n] = t;
  l->when[l->n] = l->now_ns;
  l->n++;
}

static size_t adv(rusm__wheel *w, firelog *l, int64_t now_ns) {
  l->now_ns = now_ns;
  return rusm__wheel_advance(w, now_ns, log_fire, l);
}

static size_t log_index(const firelog *l, const rusm__timer *t) {
  for (size_t i = 0; i < l->n; i++)
    if (l->who[i] == t)
      return i;
  return SIZE_MAX;
}

static void no_fire(rusm__timer *t, void *ctx) {
  (void)t;
  (void)ctx;
  fail_msg("a timer fired when none was due");
}

/* ------------------------------------------------------------------ */
/* Basics                                                              */
/* ------------------------------------------------------------------ */

static void test_empty(void **state) {
  (void)state;
  rusm__wheel w;
  rusm__wheel_init(&w, T0, MS);
  assert_int_equal(rusm__wheel_count(&w), 0);
  assert_int_equal(rusm__wheel_next_ns(&w), -1);
  assert_int_equal(rusm__wheel_advance(&w, T0, no_fire, NULL), 0);
  assert_int_equal(rusm__wheel_advance(&w, T0 + HOUR, no_fire, NULL), 0);
  assert_int_equal(rusm__wheel_advance(&w, T0, no_fire, NULL), 0); /* back */
  assert_int_equal(rusm__wheel_next_ns(&w), -1);
}

/*
 * Deadlines on, just before and just after tick boundaries, across the
 * level-0/1 and level-1/2 borders. The wheel is advanced to every boundary
 * and to 1 ns before each: a timer fires at the first boundary at or after
 * its deadline, never 1 ns sooner, and timers fire in deadline-tick order
 * (ties in the order they were added).
 */
static void test_boundaries_and_order(void **state) {
  (void)state;
  static const int64_t rel[] = {
      3 * MS,      3 * MS + 1, 3 * MS - 1,    1 * MS,
      2 * MS,      1,          63 * MS,       64 * MS,
      64 * MS + 1, 65 * MS,    127 * MS,      128 * MS - 1,
      4095 * MS,   4096 * MS,  4097 * MS - 1, 4096 * MS + 1,
      3 * MS,      4096 * MS,  200 * MS + 5,  64 * MS,
  };
  enum { N = sizeof rel / sizeof rel[0] };
  rusm__timer t[N];
  memset(t, 0, sizeof t);
  rusm__wheel w;
  rusm__wheel_init(&w, T0, MS);
  for (size_t i = 0; i < N; i++)
    rusm__wheel_add(&w, &t[i], T0 + rel[i]);
  assert_int_equal(rusm__wheel_count(&w), N);

  firelog l = {0};
  for (uint64_t k = 1; k <= 4200; k++) {
    size_t expect = 0;
    for (size_t i = 0; i < N; i++)
      expect += ceil_tick(T0, MS, T0 + rel[i]) == k;
    assert_int_equal(adv(&w, &l, at(T0, MS, k) - 1), 0);
    assert_int_equal(adv(&w, &l, at(T0, MS, k)), expect);
  }
  assert_int_equal(l.n, N);
  assert_int_equal(rusm__wheel_count(&w), 0);
  for (size_t i = 0; i < N; i++) {
    size_t at_i = log_index(&l, &t[i]);
    assert_true(at_i != SIZE_MAX);
    assert_int_equal(l.when[at_i], at(T0, MS, ceil_tick(T0, MS, T0 + rel[i])));
  }
  for (size_t j = 1; j < l.n; j++) {
    size_t a = (size_t)(l.who[j - 1] - t), b = (size_t)(l.who[j] - t);
    uint64_t ka = ceil_tick(T0, MS, T0 + rel[a]);
    uint64_t kb = ceil_tick(T0, MS, T0 + rel[b]);
    assert_true(ka < kb || (ka == kb && a < b));
  }
}

/* A deadline at or before the wheel's time fires on the very next advance,
 * even one that does not move time (or moves it backwards). */
static void test_past_deadline(void **state) {
  (void)state;
  rusm__wheel w;
  rusm__timer a = {0}, b = {0}, c = {0}, d = {0}, f = {0};
  firelog l = {0};
  rusm__wheel_init(&w, T0, MS);
  rusm__wheel_add(&w, &a, T0);        /* exactly now */
  rusm__wheel_add(&w, &b, T0 - HOUR); /* before the origin */
  rusm__wheel_add(&w, &c, INT64_MIN); /* the distant past */
  rusm__wheel_add(&w, &f, T0 + 1);    /* the next tick */
  assert_true(rusm__wheel_next_ns(&w) <= T0);
  assert_int_equal(adv(&w, &l, T0), 3);
  assert_int_equal(rusm__wheel_count(&w), 1);
  assert_int_equal(rusm__wheel_next_ns(&w), T0 + MS);

  assert_int_equal(adv(&w, &l, T0 + 10 * MS + 7), 1); /* f */
  rusm__wheel_add(&w, &d, T0 + 4 * MS); /* before the wheel's time */
  rusm__wheel_add(&w, &f, T0 + 11 * MS);
  assert_int_equal(rusm__wheel_next_ns(&w), T0 + 10 * MS);
  assert_int_equal(adv(&w, &l, T0 + 5 * MS), 1); /* time went back: d only */
  assert_ptr_equal(l.who[l.n - 1], &d);
  assert_int_equal(adv(&w, &l, T0 + 11 * MS - 1), 0); /* the wheel kept 10 */
  assert_int_equal(adv(&w, &l, T0 + 11 * MS), 1);
  assert_int_equal(rusm__wheel_count(&w), 0);
}

static void test_cancel(void **state) {
  (void)state;
  rusm__wheel w;
  rusm__timer a = {0}, b = {0}, c = {0}, d = {0}, e = {0}, f = {0}, z = {0};
  firelog l = {0};
  rusm__wheel_init(&w, T0, MS);
  rusm__wheel_add(&w, &a, T0 + 10 * MS); /* a b c d share a slot */
  rusm__wheel_add(&w, &b, T0 + 10 * MS);
  rusm__wheel_add(&w, &c, T0 + 10 * MS);
  rusm__wheel_add(&w, &d, T0 + 10 * MS);
  rusm__wheel_add(&w, &e, T0 + 5 * MS); /* alone in its slot */
  rusm__wheel_add(&w, &f, T0 + 3 * HOUR);
  assert_int_equal(rusm__wheel_count(&w), 6);

  rusm__wheel_cancel(&w, &z); /* never armed: no-op */
  assert_false(z.armed);
  assert_int_equal(rusm__wheel_count(&w), 6);

  assert_int_equal(rusm__wheel_next_ns(&w), T0 + 5 * MS);
  rusm__wheel_cancel(&w, &e);
  assert_false(e.armed);
  assert_int_equal(rusm__wheel_count(&w), 5);
  assert_int_equal(rusm__wheel_next_ns(&w), T0 + 10 * MS);

  rusm__wheel_cancel(&w, &a); /* head */
  rusm__wheel_cancel(&w, &c); /* middle */
  rusm__wheel_cancel(&w, &d); /* tail */
  assert_int_equal(rusm__wheel_count(&w), 2);
  assert_int_equal(rusm__wheel_next_ns(&w), T0 + 10 * MS);
  rusm__wheel_cancel(&w, &b); /* the last one: the slot empties */
  assert_int_equal(rusm__wheel_count(&w), 1);
  int64_t nx = rusm__wheel_next_ns(&w);
  assert_true(nx > T0 && nx <= T0 + 3 * HOUR);

  rusm__wheel_cancel(&w, &a); /* twice: no-op */
  assert_int_equal(rusm__wheel_count(&w), 1);
  assert_int_equal(adv(&w, &l, T0 + 10 * MS), 0);

  rusm__wheel_add(&w, &a, T0 + 20 * MS); /* a cancelled timer is reusable */
  assert_int_equal(adv(&w, &l, T0 + 20 * MS), 1);
  assert_ptr_equal(l.who[0], &a);
  rusm__wheel_cancel(&w, &a); /* already fired: no-op */
  assert_int_equal(rusm__wheel_count(&w), 1);

  rusm__wheel_cancel(&w, &f);
  assert_int_equal(rusm__wheel_count(&w), 0);
  assert_int_equal(rusm__wheel_next_ns(&w), -1);
  assert_int_equal(adv(&w, &l, T0 + 4 * HOUR), 0);
}

/* ------------------------------------------------------------------ */
/* Callbacks that re-add, free and cancel                              */
/* ------------------------------------------------------------------ */

typedef struct cbtimer {
  rusm__timer t; /* first: callbacks cast back to the container */
  rusm__wheel *w;
  int64_t period;  /* > 0: re-add period ns after the deadline */
  int64_t *now_ns; /* the advance's time, for checks */
  int readd_past;  /* times left to re-add with a past deadline */
  int fires;
  struct cbtimer *partner; /* cancelled by this one's callback */
  rusm__timer *spawn;      /* added by this one's callback... */
  int64_t spawn_at;        /* ...for this deadline */
} cbtimer;

static void cb_fire(rusm__timer *t, void *ctx) {
  cbtimer *c = (cbtimer *)t;
  (void)ctx;
  assert_false(t->armed);
  assert_true(*c->now_ns >= t->deadline_ns);
  c->fires++;
  if (c->period > 0) {
    assert_int_equal(*c->now_ns, t->deadline_ns); /* boundary-aligned */
    rusm__wheel_add(c->w, t, t->deadline_ns + c->period);
  }
  if (c->readd_past > 0) {
    c->readd_past--;
    rusm__wheel_add(c->w, t, t->deadline_ns - HOUR);
  }
  if (c->partner)
    rusm__wheel_cancel(c->w, &c->partner->t);
  if (c->spawn)
    rusm__wheel_add(c->w, c->spawn, c->spawn_at);
}

static void test_readd_periodic(void **state) {
  (void)state;
  rusm__wheel w;
  int64_t now = T0;
  rusm__wheel_init(&w, now, MS);
  cbtimer p = {.w = &w, .period = 10 * MS, .now_ns = &now};
  rusm__wheel_add(&w, &p.t, T0 + 10 * MS);
  size_t total = 0;
  for (uint64_t k = 1; k <= 1000; k++) {
    now = at(T0, MS, k);
    total += rusm__wheel_advance(&w, now, cb_fire, NULL);
  }
  assert_int_equal(p.fires, 100);
  assert_int_equal(total, 100);
  assert_int_equal(rusm__wheel_count(&w), 1);
  assert_int_equal(rusm__wheel_next_ns(&w), T0 + 1010 * MS);
}

/* Re-added with a deadline already past: fires once per advance call, on
 * the next call, never looping inside the current one. */
static void test_readd_past_from_callback(void **state) {
  (void)state;
  rusm__wheel w;
  int64_t now = T0;
  rusm__wheel_init(&w, now, MS);
  cbtimer p = {.w = &w, .now_ns = &now, .readd_past = 3};
  rusm__wheel_add(&w, &p.t, T0 + MS);
  now = T0 + MS;
  assert_int_equal(rusm__wheel_advance(&w, now, cb_fire, NULL), 1);
  assert_int_equal(rusm__wheel_count(&w), 1);
  assert_true(rusm__wheel_next_ns(&w) <= now);
  for (int i = 0; i < 3; i++) /* same time: one fire per call */
    assert_int_equal(rusm__wheel_advance(&w, now, cb_fire, NULL), 1);
  assert_int_equal(p.fires, 4);
  assert_int_equal(rusm__wheel_count(&w), 0);
  assert_int_equal(rusm__wheel_advance(&w, now, cb_fire, NULL), 0);
}

static void free_fire(rusm__timer *t, void *ctx) {
  size_t *left = ctx;
  assert_false(t->armed);
  (*left)--;
  free(t);
}

static void test_free_in_callback(void **state) {
  (void)state;
  rng_seed(0x7133);
  rusm__wheel w;
  rusm__wheel_init(&w, T0, MS);
  size_t left = 2000;
  for (size_t i = 0; i < left; i++) {
    rusm__timer *t = calloc(1, sizeof *t);
    assert_non_null(t);
    /* 0..2 s, so some cascade down from level 1 before firing */
    rusm__wheel_add(&w, t, T0 + (int64_t)rnd_below(2 * SEC));
  }
  for (int64_t now = T0; rusm__wheel_count(&w) > 0; now += 37 * MS)
    rusm__wheel_advance(&w, now, free_fire, &left);
  assert_int_equal(left, 0);
}

/* A callback cancels a timer due in the same advance (on its due list), and
 * one not yet due, and adds one in the past and one in the future. */
static void test_cancel_and_add_from_callback(void **state) {
  (void)state;
  rusm__wheel w;
  int64_t now = T0;
  rusm__wheel_init(&w, now, MS);
  rusm__timer past = {0}, future = {0};
  cbtimer a = {.w = &w, .now_ns = &now}, b = a, c = a, d = a;
  a.partner = &b; /* whichever of a, b fires first cancels the other */
  b.partner = &a;
  c.partner = &d; /* d is not due yet */
  c.spawn = &past;
  c.spawn_at = T0; /* already past: the next advance */
  d.spawn = &future;
  rusm__wheel_add(&w, &a.t, T0 + 5 * MS);
  rusm__wheel_add(&w, &b.t, T0 + 5 * MS);
  rusm__wheel_add(&w, &c.t, T0 + 5 * MS);
  rusm__wheel_add(&w, &d.t, T0 + 50 * MS);
  now = T0 + 5 * MS;
  assert_int_equal(rusm__wheel_advance(&w, now, cb_fire, NULL), 2);
  assert_int_equal(a.fires + b.fires, 1);
  assert_false(a.t.armed || b.t.armed || d.t.armed);
  assert_int_equal(c.fires, 1);
  assert_int_equal(d.fires, 0);
  assert_true(past.armed);
  assert_int_equal(rusm__wheel_count(&w), 1);

  firelog l = {0};
  assert_int_equal(adv(&w, &l, now), 1);
  assert_ptr_equal(l.who[0], &past);
  assert_int_equal(adv(&w, &l, T0 + HOUR), 0); /* d stays cancelled */
  assert_false(future.armed);
}

/* next_ns() asked from a callback while other due timers wait their turn. */
typedef struct nxctx {
  rusm__wheel *w;
  int64_t now_ns;
  int64_t seen[2];
  int n;
} nxctx;

static void next_fire(rusm__timer *t, void *ctx) {
  nxctx *x = ctx;
  (void)t;
  x->seen[x->n++] = rusm__wheel_next_ns(x->w);
}

static void test_next_ns_in_callback(void **state) {
  (void)state;
  rusm__wheel w;
  rusm__timer a = {0}, b = {0};
  rusm__wheel_init(&w, T0, MS);
  rusm__wheel_add(&w, &a, T0 + 3 * MS);
  rusm__wheel_add(&w, &b, T0 + 3 * MS);
  nxctx x = {.w = &w, .now_ns = T0 + 3 * MS};
  assert_int_equal(rusm__wheel_advance(&w, x.now_ns, next_fire, &x), 2);
  assert_int_equal(x.n, 2);
  assert_true(x.seen[0] <= x.now_ns && x.seen[0] >= 0); /* b still due */
  assert_int_equal(x.seen[1], -1);                      /* nothing left */
}

/* ------------------------------------------------------------------ */
/* next_ns                                                             */
/* ------------------------------------------------------------------ */

/* Drives the wheel the way a scheduler does: sleep until next_ns(), then
 * advance. Returns the number of wake-ups until `t` fired. */
static int wake_until_fired(rusm__wheel *w, firelog *l, rusm__timer *t) {
  int wakes = 0;
  size_t before = l->n;
  while (t->armed) {
    int64_t nx = rusm__wheel_next_ns(w);
    assert_true(nx >= 0);
    assert_true(nx <= t->deadline_ns + w->tick_ns - 1 || nx <= l->now_ns);
    adv(w, l, nx > l->now_ns ? nx : l->now_ns);
    wakes++;
    assert_true(wakes < 100);
  }
  assert_true(l->n > before);
  return wakes;
}

static void test_next_ns(void **state) {
  (void)state;
  rusm__wheel w;
  rusm__timer a = {0}, b = {0}, c = {0}, d = {0};
  firelog l = {0};
  rusm__wheel_init(&w, T0, MS);
  l.now_ns = T0;
  assert_int_equal(rusm__wheel_next_ns(&w), -1);

  rusm__wheel_add(&w, &a, T0 + 5 * MS + 300 * US); /* level 0: exact */
  assert_int_equal(rusm__wheel_next_ns(&w), T0 + 6 * MS);
  rusm__wheel_add(&w, &b, T0 + 200 * MS + 500 * US); /* tick 201, level 1 */
  assert_int_equal(rusm__wheel_next_ns(&w), T0 + 6 * MS);
  rusm__wheel_cancel(&w, &a);
  int64_t nx = rusm__wheel_next_ns(&w); /* level 1: the slot's start */
  assert_true(nx > T0 && nx <= T0 + 201 * MS);
  assert_true(wake_until_fired(&w, &l, &b) <= 2); /* one cascade */
  assert_int_equal(l.when[l.n - 1], T0 + 201 * MS);

  /* now is the last tick of a level-0 rotation (digit 63): a timer two
   * ticks on sits on level 1, and next_ns() still bounds it */
  adv(&w, &l, T0 + 255 * MS);
  rusm__wheel_add(&w, &c, T0 + 257 * MS);
  nx = rusm__wheel_next_ns(&w);
  assert_true(nx > T0 + 255 * MS && nx <= T0 + 257 * MS);
  wake_until_fired(&w, &l, &c);
  assert_int_equal(l.when[l.n - 1], T0 + 257 * MS);

  /* far timers converge to their exact tick within a few wake-ups */
  rusm__wheel_add(&w, &d, T0 + 3 * DAY + 17 * MS + 1);
  int wakes = wake_until_fired(&w, &l, &d);
  assert_true(wakes <= RUSM__WHEEL_LEVELS + 1);
  assert_int_equal(l.when[l.n - 1], T0 + 3 * DAY + 18 * MS);

  /* a past deadline: next_ns() says "now or earlier" */
  rusm__wheel_add(&w, &a, T0);
  nx = rusm__wheel_next_ns(&w);
  assert_true(nx >= 0 && nx <= l.now_ns);
  assert_int_equal(adv(&w, &l, l.now_ns), 1);
}

/* ------------------------------------------------------------------ */
/* Far deadlines and big jumps                                         */
/* ------------------------------------------------------------------ */

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Hours to centuries at 1 ms ticks: every level. (The wheel's range, 2^48
 * ms, is beyond int64 ns: test_era_boundary goes past it with 1 ns ticks.)
 */
static void test_far_deadlines(void **state) {
  (void)state;
  static const int64_t rel[] = {
      HOUR,        HOUR + 1, DAY,       DAY + 7 * MS,
      30 * DAY,    YEAR,     40 * YEAR, 200 * YEAR,
      3 * DAY + 1, 64 * MS,  YEAR + 1,  200 * YEAR - 1,
  };
  enum { N = sizeof rel / sizeof rel[0] };
  rusm__timer t[N];
  memset(t, 0, sizeof t);
  rusm__wheel w;
  firelog l = {0};

  /* 1) woken only by next_ns(): each fires exactly at its tick */
  rusm__wheel_init(&w, T0, MS);
  l.now_ns = T0;
  for (size_t i = 0; i < N; i++)
    rusm__wheel_add(&w, &t[i], T0 + rel[i]);
  int wakes = 0;
  while (rusm__wheel_count(&w) > 0) {
    int64_t nx = rusm__wheel_next_ns(&w), earliest = INT64_MAX;
    for (size_t i = 0; i < N; i++)
      if (t[i].armed && t[i].deadline_ns < earliest)
        earliest = t[i].deadline_ns;
    assert_true(nx > l.now_ns);
    assert_true(nx < earliest + MS);
    adv(&w, &l, nx);
    wakes++;
  }
  assert_int_equal(l.n, N);
  assert_true(wakes <= N * (RUSM__WHEEL_LEVELS + 2));
  for (size_t i = 0; i < N; i++)
    assert_int_equal(l.when[log_index(&l, &t[i])],
                     at(T0, MS, ceil_tick(T0, MS, T0 + rel[i])));

  /* 2) big jumps to 1 ns before each tick, then onto it */
  rusm__wheel_init(&w, T0, MS);
  l.n = 0;
  for (size_t i = 0; i < N; i++)
    rusm__wheel_add(&w, &t[i], T0 + rel[i]);
  int64_t due[N];
  for (size_t i = 0; i < N; i++)
    due[i] = at(T0, MS, ceil_tick(T0, MS, T0 + rel[i]));
  qsort(due, N, sizeof due[0], cmp_i64);
  for (size_t i = 0; i < N; i++) {
    if (i > 0 && due[i] == due[i - 1])
      continue;
    size_t expect = 0;
    for (size_t j = 0; j < N; j++)
      expect += due[j] == due[i];
    assert_int_equal(adv(&w, &l, due[i] - 1), 0);
    assert_int_equal(adv(&w, &l, due[i]), expect);
  }
  assert_int_equal(rusm__wheel_count(&w), 0);
}

typedef struct jumpctx {
  int64_t now_ns;
  uint8_t *fired;
  rusm__timer *base;
} jumpctx;

static void jump_fire(rusm__timer *t, void *ctx) {
  jumpctx *j = ctx;
  assert_true(j->now_ns >= t->deadline_ns);
  assert_int_equal(j->fired[t - j->base]++, 0);
}

/* One advance over 10 hours fires everything due by then and nothing
 * later. With 1 ns ticks that is 3.6e13 ticks: a tick-by-tick walk would
 * not finish. */
static void big_jump(int64_t tick) {
  enum { N = 20000, LATE = 500 };
  rusm__timer *t = calloc(N + LATE, sizeof *t);
  uint8_t *fired = calloc(N + LATE, 1);
  assert_non_null(t);
  assert_non_null(fired);
  rusm__wheel w;
  rusm__wheel_init(&w, T0, tick);
  size_t due_by_jump = 0;
  for (size_t i = 0; i < N + LATE; i++) {
    int64_t d = i < N ? T0 + 1 + (int64_t)rnd_below(10 * HOUR)
                      : T0 + 10 * HOUR + 1 + (int64_t)rnd_below(10 * HOUR);
    if (i % 97 == 0)
      d = T0 + 10 * HOUR; /* exactly at the jump */
    due_by_jump += d <= T0 + 10 * HOUR;
    rusm__wheel_add(&w, &t[i], d);
  }
  jumpctx j = {.now_ns = T0 + 10 * HOUR, .fired = fired, .base = t};
  assert_int_equal(rusm__wheel_advance(&w, j.now_ns, jump_fire, &j),
                   due_by_jump);
  assert_int_equal(rusm__wheel_count(&w), N + LATE - due_by_jump);
  for (size_t i = 0; i < N + LATE; i++)
    assert_int_equal(fired[i], t[i].deadline_ns <= j.now_ns);
  int64_t nx = rusm__wheel_next_ns(&w);
  assert_true(nx > j.now_ns && nx <= T0 + 20 * HOUR + tick);
  j.now_ns = T0 + 20 * HOUR + tick;
  assert_int_equal(rusm__wheel_advance(&w, j.now_ns, jump_fire, &j),
                   N + LATE - due_by_jump);
  for (size_t i = 0; i < N + LATE; i++)
    assert_int_equal(fired[i], 1);
  assert_int_equal(rusm__wheel_count(&w), 0);
  free(t);
  free(fired);
}

static void test_big_jump(void **state) {
  (void)state;
  rng_seed(0xb16);
  big_jump(MS);
  big_jump(1);
}

/*
 * 1 ns ticks: the wheel's 2^48-tick range is ~78 hours, so an "era" ends in
 * a test's simulated time. Timers straddle the era boundary, some lie
 * beyond the range, and the origin is negative.
 */
static void test_era_boundary(void **state) {
  (void)state;
  const int64_t origin = -7 * SEC, era = INT64_C(1) << 48;
  rusm__wheel w;
  rusm__timer far = {0}, inf = {0}, t[6];
  memset(t, 0, sizeof t);
  firelog l = {0};
  rusm__wheel_init(&w, origin, 1);
  l.now_ns = origin;

  rusm__wheel_add(&w, &far, origin + 100 * DAY); /* beyond the range */
  rusm__wheel_add(&w, &inf, INT64_MAX);
  int64_t nx = rusm__wheel_next_ns(&w);
  assert_true(nx > origin && nx <= origin + era); /* a lower bound */

  assert_int_equal(adv(&w, &l, origin + era - 3), 0);
  static const int64_t rel[] = {-1, 0, 1, 64, 1 << 20, 5 * SEC};
  for (size_t i = 0; i < 6; i++)
    rusm__wheel_add(&w, &t[i], origin + era + rel[i]);
  for (size_t i = 0; i < 6; i++) {
    while (t[i].armed) {
      nx = rusm__wheel_next_ns(&w);
      assert_true(nx > l.now_ns && nx <= t[i].deadline_ns);
      adv(&w, &l, nx);
    }
    assert_int_equal(l.when[log_index(&l, &t[i])], t[i].deadline_ns);
  }
  assert_int_equal(rusm__wheel_count(&w), 2);
  nx = rusm__wheel_next_ns(&w);
  assert_true(nx > l.now_ns && nx <= far.deadline_ns);

  assert_int_equal(adv(&w, &l, far.deadline_ns - 1), 0);
  assert_int_equal(adv(&w, &l, far.deadline_ns), 1);
  assert_false(far.armed);
  assert_true(inf.armed);
  rusm__wheel_cancel(&w, &inf);
  assert_int_equal(rusm__wheel_count(&w), 0);
}

/* Times near INT64_MAX: next_ns() saturates instead of wrapping. */
static void test_saturation(void **state) {
  (void)state;
  rusm__wheel w;
  rusm__timer a = {0};
  firelog l = {0};
  rusm__wheel_init(&w, 0, 3);
  rusm__wheel_add(&w, &a, INT64_MAX); /* its tick starts after INT64_MAX */
  assert_true(rusm__wheel_next_ns(&w) > 0);
  assert_int_equal(adv(&w, &l, INT64_MAX - 10), 0);
  assert_int_equal(rusm__wheel_next_ns(&w), INT64_MAX);
  assert_int_equal(adv(&w, &l, INT64_MAX), 0); /* INT64_MAX is mid-tick */
  assert_true(a.armed);
  rusm__wheel_cancel(&w, &a);

  /* huge ticks: tick * tick_ns overflows 64 bits */
  rusm__wheel_init(&w, INT64_MIN, INT64_C(1) << 20);
  rusm__wheel_add(&w, &a, INT64_MAX);
  assert_int_equal(rusm__wheel_next_ns(&w), INT64_MAX);
  rusm__wheel_cancel(&w, &a);
}

/* ------------------------------------------------------------------ */
/* Randomised test against a model                                     */
/* ------------------------------------------------------------------ */

enum { IDLE, ARMED, FIRED, CANCELLED };

typedef struct mtimer {
  rusm__timer t; /* first: the callback casts back */
  int64_t deadline;
  uint64_t expiry;       /* the model's tick for the deadline */
  uint64_t armed_before; /* advance calls begun before it was armed */
  uint32_t gen;          /* times armed */
  uint32_t fires, cancels;
  uint8_t state;
  bool past; /* its tick had come when it was armed */
} mtimer;

typedef struct hent {
  uint64_t expiry;
  uint32_t idx, gen;
} hent;

typedef struct vec {
  hent *v;
  size_t n, cap;
} vec;

typedef struct sim {
  rusm__wheel w;
  int64_t origin, tick;
  mtimer *m;
  size_t n;
  vec heap;       /* armed future timers, min-heap on expiry (lazy) */
  vec pend, due;  /* armed with a past deadline: for the next advance */
  int64_t now_ns; /* of the running (or last) advance */
  uint64_t now;   /* the model's tick */
  uint64_t prev;  /* the model's tick before the running advance */
  uint64_t advances;
  size_t armed;
  bool per_tick;
  bool in_callback_ops; /* callbacks re-add and cancel at random */
} sim;

static void vec_push(vec *v, hent e) {
  if (v->n == v->cap) {
    v->cap = v->cap ? 2 * v->cap : 1024;
    v->v = realloc(v->v, v->cap * sizeof *v->v);
    assert_non_null(v->v);
  }
  v->v[v->n++] = e;
}

static void heap_push(vec *h, hent e) {
  vec_push(h, e);
  for (size_t i = h->n - 1; i > 0;) {
    size_t p = (i - 1) / 2;
    if (h->v[p].expiry <= h->v[i].expiry)
      break;
    hent x = h->v[p];
    h->v[p] = h->v[i];
    h->v[i] = x;
    i = p;
  }
}

static void heap_pop(vec *h) {
  h->v[0] = h->v[--h->n];
  for (size_t i = 0;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < h->n && h->v[l].expiry < h->v[m].expiry)
      m = l;
    if (r < h->n && h->v[r].expiry < h->v[m].expiry)
      m = r;
    if (m == i)
      break;
    hent x = h->v[m];
    h->v[m] = h->v[i];
    h->v[i] = x;
    i = m;
  }
}

static bool live(const sim *s, hent e) {
  const mtimer *m = &s->m[e.idx];
  return m->state == ARMED && m->gen == e.gen;
}

static int64_t sim_deadline(sim *s) {
  uint64_t r = rnd_below(100), span;
  if (r < 3) /* in the past, or exactly now */
    return s->now_ns - (int64_t)rnd_below(1000 * (uint64_t)s->tick);
  span = r < 43 ? 64 : r < 73 ? 4096 : r < 93 ? 262144 : UINT64_C(1) << 30;
  int64_t off = (int64_t)rnd_below(span) * s->tick;
  if (rnd_below(4)) /* mostly off the tick boundary */
    off += (int64_t)rnd_below((uint64_t)s->tick);
  return s->now_ns + off;
}

static void sim_arm(sim *s, size_t i) {
  mtimer *m = &s->m[i];
  assert_int_not_equal(m->state, ARMED);
  m->deadline = sim_deadline(s);
  m->expiry = ceil_tick(s->origin, s->tick, m->deadline);
  m->armed_before = s->advances;
  m->gen++;
  m->state = ARMED;
  m->past = m->expiry <= s->now;
  rusm__wheel_add(&s->w, &m->t, m->deadline);
  s->armed++;
  hent e = {m->expiry, (uint32_t)i, m->gen};
  if (m->past)
    vec_push(&s->pend, e);
  else
    heap_push(&s->heap, e);
}

static void sim_cancel(sim *s, size_t i) {
  mtimer *m = &s->m[i];
  size_t before = rusm__wheel_count(&s->w);
  rusm__wheel_cancel(&s->w, &m->t);
  assert_false(m->t.armed);
  if (m->state == ARMED) {
    m->state = CANCELLED;
    m->cancels++;
    s->armed--;
    assert_int_equal(rusm__wheel_count(&s->w), before - 1);
  } else {
    assert_int_equal(rusm__wheel_count(&s->w), before); /* no-op */
  }
}

static void sim_fire(rusm__timer *t, void *ctx) {
  sim *s = ctx;
  mtimer *m = (mtimer *)t;
  size_t i = (size_t)(m - s->m);
  assert_int_equal(m->state, ARMED); /* once, and never after a cancel */
  assert_false(t->armed);
  assert_true(s->now_ns >= m->deadline); /* never early */
  assert_true(m->expiry <= s->now);
  if (m->past) {
    assert_int_equal(s->advances, m->armed_before + 1); /* the next call */
  } else {
    assert_true(m->expiry > s->prev); /* not held back by an earlier call */
    if (s->per_tick)
      assert_true(s->now_ns - m->deadline < s->tick);
  }
  m->state = FIRED;
  m->fires++;
  s->armed--;
  if (s->in_callback_ops) {
    if (rnd_below(8) == 0)
      sim_arm(s, i); /* re-add itself, maybe in the past */
    if (rnd_below(16) == 0)
      sim_cancel(s, rnd_below(s->n)); /* maybe one still due in this call */
  }
}

static void sim_advance(sim *s, int64_t now_ns) {
  uint64_t k = floor_tick(s->origin, s->tick, now_ns);
  s->prev = s->now;
  s->now = k > s->now ? k : s->now;
  s->now_ns = now_ns;
  s->advances++;
  vec tmp = s->due; /* what was pending now must fire in this call */
  s->due = s->pend;
  s->pend = tmp;
  s->pend.n = 0;

  rusm__wheel_advance(&s->w, now_ns, sim_fire, s);

  for (size_t j = 0; j < s->due.n; j++)
    assert_false(live(s, s->due.v[j]));
  s->due.n = 0;
  assert_int_equal(rusm__wheel_count(&s->w), s->armed);
  /* Nothing due is left behind: with now_ns on a boundary this is "fired
   * at the first advance whose time >= deadline". */
  while (s->heap.n > 0 && !live(s, s->heap.v[0]))
    heap_pop(&s->heap);
  if (s->heap.n > 0)
    assert_true(s->heap.v[0].expiry > s->now);

  int64_t nx = rusm__wheel_next_ns(&s->w);
  bool pending = false;
  for (size_t j = 0; j < s->pend.n && !pending; j++)
    pending = live(s, s->pend.v[j]);
  if (s->armed == 0) {
    assert_int_equal(nx, -1);
  } else if (pending) {
    assert_int_equal(nx, at(s->origin, s->tick, s->now));
  } else {
    uint64_t e = s->heap.v[0].expiry;
    assert_true(nx > at(s->origin, s->tick, s->now));
    assert_true(nx <= at(s->origin, s->tick, e)); /* < deadline + tick */
    if (e >> RUSM__WHEEL_BITS == s->now >> RUSM__WHEEL_BITS)
      assert_int_equal(nx, at(s->origin, s->tick, e)); /* level 0: exact */
  }
}

static void test_random_model(void **state) {
  (void)state;
  enum { N = 100000 };
  rng_seed(0x5eed0001);
  sim *s = calloc(1, sizeof *s);
  assert_non_null(s);
  s->origin = T0;
  s->tick = 1000;
  s->n = N;
  s->m = calloc(N, sizeof *s->m);
  assert_non_null(s->m);
  rusm__wheel_init(&s->w, s->origin, s->tick);
  s->now_ns = s->origin;
  s->in_callback_ops = true;

  /* 1) advance every tick: each fires within one tick of its deadline */
  s->per_tick = true;
  size_t first = 0;
  for (uint64_t k = 1; k <= 150000; k++) {
    if (first < N)
      sim_arm(s, first++);
    if (rnd_below(4) == 0) {
      size_t i = rnd_below(N);
      if (s->m[i].state != ARMED && i < first)
        sim_arm(s, i);
    }
    if (rnd_below(4) == 0)
      sim_cancel(s, rnd_below(first));
    sim_advance(s, at(s->origin, s->tick, k));
  }
  assert_int_equal(first, N);

  /* 2) coarse, uneven steps, mostly on tick boundaries */
  s->per_tick = false;
  for (int step = 0; step < 4000; step++) {
    for (int op = 0; op < 20; op++) {
      size_t i = rnd_below(N);
      if (s->m[i].state != ARMED)
        sim_arm(s, i);
      else if (rnd_below(3) == 0)
        sim_cancel(s, i);
    }
    uint64_t r = rnd_below(100), jump;
    jump = 1 + rnd_below(r < 50   ? 64
                         : r < 80 ? 4096
                         : r < 95 ? UINT64_C(1) << 20
                                  : UINT64_C(1) << 32);
    int64_t now_ns = at(s->origin, s->tick, s->now + jump);
    if (rnd_below(5) == 0)
      now_ns += (int64_t)rnd_below((uint64_t)s->tick);
    sim_advance(s, now_ns);
  }

  /* 3) one jump past every deadline, without re-adds */
  s->in_callback_ops = false;
  sim_advance(s, at(s->origin, s->tick, s->now + (UINT64_C(1) << 31)));
  assert_int_equal(s->armed, 0);
  assert_int_equal(rusm__wheel_count(&s->w), 0);
  assert_int_equal(rusm__wheel_next_ns(&s->w), -1);
  uint64_t arms = 0;
  for (size_t i = 0; i < N; i++) {
    const mtimer *m = &s->m[i];
    assert_true(m->gen >= 1);
    assert_int_not_equal(m->state, ARMED);
    assert_int_equal(m->fires + m->cancels, m->gen);
    arms += m->gen;
  }
  print_message("%llu arms over %llu advances\n", (unsigned long long)arms,
                (unsigned long long)s->advances);
  free(s->heap.v);
  free(s->pend.v);
  free(s->due.v);
  free(s->m);
  free(s);
}

/* ------------------------------------------------------------------ */
/* A million armed timers                                              */
/* ------------------------------------------------------------------ */

typedef struct millctx {
  int64_t now_ns;
  rusm__timer *base;
  uint8_t *fired;
  size_t n;
} millctx;

static void mill_fire(rusm__timer *t, void *ctx) {
  millctx *c = ctx;
  /* woken by next_ns(): exactly at the deadline's tick */
  if (c->now_ns != at(T0, MS, ceil_tick(T0, MS, t->deadline_ns)))
    fail_msg("fired at %lld for deadline %lld", (long long)c->now_ns,
             (long long)t->deadline_ns);
  c->fired[t - c->base]++;
  c->n++;
}

static void test_million(void **state) {
  (void)state;
  enum { N = 1000000 };
  rng_seed(0x1000000);
  rusm__timer *t = calloc(N, sizeof *t);
  uint8_t *fired = calloc(N, 1);
  assert_non_null(t);
  assert_non_null(fired);
  rusm__wheel w;
  rusm__wheel_init(&w, T0, MS);
  for (size_t i = 0; i < N; i++)
    rusm__wheel_add(&w, &t[i], T0 + 1 + (int64_t)rnd_below(DAY));
  assert_int_equal(rusm__wheel_count(&w), N);

  millctx c = {.now_ns = T0, .base = t, .fired = fired};
  size_t wakes = 0;
  while (rusm__wheel_count(&w) > 0) {
    int64_t nx = rusm__wheel_next_ns(&w);
    assert_true(nx > c.now_ns);
    c.now_ns = nx;
    rusm__wheel_advance(&w, nx, mill_fire, &c);
    wakes++;
  }
  assert_int_equal(c.n, N);
  for (size_t i = 0; i < N; i++)
    assert_int_equal(fired[i], 1);
  assert_int_equal(rusm__wheel_next_ns(&w), -1);
  print_message("%zu wake-ups for %d timers\n", wakes, N);
  free(t);
  free(fired);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_boundaries_and_order),
      cmocka_unit_test(test_past_deadline),
      cmocka_unit_test(test_cancel),
      cmocka_unit_test(test_readd_periodic),
      cmocka_unit_test(test_readd_past_from_callback),
      cmocka_unit_test(test_free_in_callback),
      cmocka_unit_test(test_cancel_and_add_from_callback),
      cmocka_unit_test(test_next_ns_in_callback),
      cmocka_unit_test(test_next_ns),
      cmocka_unit_test(test_far_deadlines),
      cmocka_unit_test(test_big_jump),
      cmocka_unit_test(test_era_boundary),
      cmocka_unit_test(test_saturation),
      cmocka_unit_test(test_random_model),
      cmocka_unit_test(test_million),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
