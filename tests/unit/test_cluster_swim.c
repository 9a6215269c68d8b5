/*
 * test_cluster_swim.c — the membership state machine (src/cluster/swim.c).
 *
 * Everything runs on a simulated clock and a simulated network: N state
 * machines and a queue of messages in flight with a configurable delay,
 * loss and partition. No clock is read and nothing sleeps; every seed is
 * fixed (and printed), so a failure replays.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/swim.h"
#include "otp/alloc.h"

#define MAXN 24
#define SEC UINT64_C(1000)
#define T0 UINT64_C(1000000) /* an arbitrary start of the clock */

/* Defaults (docs/internals/cluster-membership.md): the detection bound is
 * D = 3T + S_max + delta with T = 200, S_max = 2 * 3T = 1200 ms. */
#define T_MS 200
#define SMAX_MS 1200

/* ------------------------------------------------------------------ */
/* Random numbers (the simulator's own)                                */
/* ------------------------------------------------------------------ */

static uint64_t splitmix(uint64_t *st) {
  uint64_t z = (*st += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* ------------------------------------------------------------------ */
/* The simulator                                                       */
/* ------------------------------------------------------------------ */

typedef struct evrec {
  uint64_t t;
  rusm__swim_event_type type;
  rusm__swim_reason reason;
  uint64_t boot;
  uint16_t id;
} evrec;

typedef struct node {
  rusm__swim *s; /* NULL: not running */
  char addr[32];
  char name[64];
  uint16_t id;
  uint64_t boot;
  int group; /* partition group */
  evrec *ev;
  size_t n_ev, cap_ev;
  uint64_t errors; /* handle_message failures */
} node;

typedef struct msg {
  uint64_t at, order;
  int to;
  int from;
  uint8_t *buf;
  size_t len;
} msg;

typedef struct sim {
  node n[MAXN];
  int nn;
  uint64_t now;
  msg *heap;
  size_t hn, hcap;
  uint64_t order;
  uint32_t loss_pct;
  uint32_t delay_min, delay_max;
  uint64_t rng;
  rusm__swim_config cfg;
  uint64_t sent, lost;
  size_t max_len;
  /* Optional capture of what one node sends (for replays). */
  int capture_from;
  uint8_t *captured[8];
  size_t captured_len[8];
  uint8_t captured_type[8];
} sim;

static void sim_init(sim *S, uint64_t seed) {
  memset(S, 0, sizeof *S);
  S->rng = seed;
  S->now = T0;
  S->delay_min = 1;
  S->delay_max = 5;
  S->capture_from = -1;
  rusm__swim_config_default(&S->cfg);
  print_message("seed %#llx\n", (unsigned long long)seed);
}

static uint64_t sim_rnd(sim *S) { return splitmix(&S->rng); }

static void heap_push(sim *S, msg m) {
  if (S->hn == S->hcap) {
    S->hcap = S->hcap ? 2 * S->hcap : 256;
    S->heap = realloc(S->heap, S->hcap * sizeof *S->heap);
    assert_non_null(S->heap);
  }
  size_t i = S->hn++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    msg *q = &S->heap[p];
    if (q->at < m.at || (q->at == m.at && q->order < m.order))
      break;
    S->heap[i] = *q;
    i = p;
  }
  S->heap[i] = m;
}

static msg heap_pop(sim *S) {
  msg top = S->heap[0];
  msg last = S->heap[--S->hn];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= S->hn)
      break;
    if (c + 1 < S->hn && (S->heap[c + 1].at < S->heap[c].at ||
                          (S->heap[c + 1].at == S->heap[c].at &&
                           S->heap[c + 1].order < S->heap[c].order)))
      c++;
    if (last.at < S->heap[c].at ||
        (last.at == S->heap[c].at && last.order < S->heap[c].order))
      break;
    S->heap[i] = S->heap[c];
    i = c;
  }
  if (S->hn)
    S->heap[i] = last;
  return top;
}

static int node_by_addr(const sim *S, const char *addr) {
  for (int i = 0; i < S->nn; i++)
    if (strcmp(S->n[i].addr, addr) == 0)
      return i;
  return -1;
}

static void log_event(node *nd, uint64_t t, const rusm__swim_event *e) {
  if (nd->n_ev == nd->cap_ev) {
    nd->cap_ev = nd->cap_ev ? 2 * nd->cap_ev : 64;
    nd->ev = realloc(nd->ev, nd->cap_ev * sizeof *nd->ev);
    assert_non_null(nd->ev);
  }
  evrec *r = &nd->ev[nd->n_ev++];
  r->t = t;
  r->type = e->type;
  r->reason = e->reason;
  r->boot = e->member.boot_id;
  r->id = e->member.node_id;
}

/* Moves what node i wants sent into the network, its events into its log. */
static void drain(sim *S, int i) {
  node *nd = &S->n[i];
  if (!nd->s)
    return;
  rusm__swim_transmit t;
  while (rusm__swim_poll_transmit(nd->s, &t)) {
    assert_true(t.len <= S->cfg.max_message);
    assert_true(t.len > 0);
    if (t.len > S->max_len)
      S->max_len = t.len;
    S->sent++;
    if (S->capture_from == i && t.len > 1 && t.bytes[1] >= 1 &&
        t.bytes[1] <= 7) {
      /* Keep the last message of each type (with entries if possible). */
      int k = t.bytes[1];
      free(S->captured[k]);
      S->captured[k] = malloc(t.len);
      assert_non_null(S->captured[k]);
      memcpy(S->captured[k], t.bytes, t.len);
      S->captured_len[k] = t.len;
      S->captured_type[k] = (uint8_t)k;
    }
    int to = node_by_addr(S, t.addr);
    if (to < 0 || (S->loss_pct && sim_rnd(S) % 100 < S->loss_pct)) {
      S->lost++;
      continue;
    }
    msg m;
    m.at =
        S->now + S->delay_min + sim_rnd(S) % (S->delay_max - S->delay_min + 1);
    m.order = S->order++;
    m.to = to;
    m.from = i;
    m.len = t.len;
    m.buf = malloc(t.len);
    assert_non_null(m.buf);
    memcpy(m.buf, t.bytes, t.len);
    heap_push(S, m);
  }
  rusm__swim_event e;
  while (rusm__swim_poll_event(nd->s, &e))
    log_event(nd, S->now, &e);
}

static void node_start(sim *S, int i, const char *name, uint16_t id,
                       const int *seeds, int n_seeds) {
  node *nd = &S->n[i];
  assert_null(nd->s);
  nd->n_ev = 0; /* the log is per instance */
  nd->errors = 0;
  if (i >= S->nn)
    S->nn = i + 1;
  snprintf(nd->addr, sizeof nd->addr, "10.0.0.%d:4370", i + 1);
  snprintf(nd->name, sizeof nd->name, "%s", name);
  nd->id = id;
  do
    nd->boot = sim_rnd(S);
  while (nd->boot == 0);
  rusm__swim_config cfg = S->cfg;
  cfg.seed = sim_rnd(S);
  rusm__swim_self self = {nd->name, id, nd->addr, nd->boot};
  assert_int_equal(rusm__swim_new(&cfg, &self, S->now, &nd->s), 0);
  for (int k = 0; k < n_seeds; k++)
    assert_int_equal(rusm__swim_add_seed(nd->s, S->n[seeds[k]].addr), 0);
  drain(S, i);
}

/* Node i at index i, name "n<i>", id i + 1. */
static void start_default(sim *S, int i, const int *seeds, int n_seeds) {
  char name[16];
  snprintf(name, sizeof name, "n%d", i);
  node_start(S, i, name, (uint16_t)(i + 1), seeds, n_seeds);
}

/* The node stops dead: nothing more in or out. */
static void node_crash(sim *S, int i) {
  node *nd = &S->n[i];
  drain(S, i);
  rusm__swim_free(nd->s);
  nd->s = NULL;
}

static bool reachable(const sim *S, int a, int b) {
  return S->n[a].group == S->n[b].group;
}

typedef bool (*pred_fn)(sim *S, void *ctx);

/* Runs the network until pred holds (true) or the clock reaches `until`
 * (then pred's value). pred may be NULL: run to `until`. */
static bool sim_run(sim *S, uint64_t until, pred_fn pred, void *ctx) {
  uint64_t stuck = 0, last = S->now;
  for (;;) {
    if (pred && pred(S, ctx))
      return true;
    uint64_t t = UINT64_MAX;
    if (S->hn)
      t = S->heap[0].at;
    for (int i = 0; i < S->nn; i++)
      if (S->n[i].s) {
        uint64_t nt = rusm__swim_next_timeout(S->n[i].s);
        if (nt < t)
          t = nt;
      }
    if (t > until) {
      S->now = until;
      return pred ? pred(S, ctx) : true;
    }
    if (t > S->now)
      S->now = t;
    if (S->now == last) {
      /* Each pass must make progress: a next_timeout that stays in the
       * past after handle_timeout would spin here. */
      assert_true(++stuck < 100000);
    } else {
      stuck = 0;
      last = S->now;
    }
    while (S->hn && S->heap[0].at <= S->now) {
      msg m = heap_pop(S);
      node *dst = &S->n[m.to];
      if (dst->s && reachable(S, m.from, m.to)) {
        int rc = rusm__swim_handle_message(dst->s, S->n[m.from].addr, m.buf,
                                           m.len, S->now);
        if (rc < 0)
          dst->errors++;
        drain(S, m.to);
      }
      free(m.buf);
    }
    for (int i = 0; i < S->nn; i++)
      if (S->n[i].s && rusm__swim_next_timeout(S->n[i].s) <= S->now) {
        rusm__swim_handle_timeout(S->n[i].s, S->now);
        drain(S, i);
      }
  }
}

static void sim_free(sim *S) {
  for (int i = 0; i < S->nn; i++) {
    rusm__swim_free(S->n[i].s);
    free(S->n[i].ev);
  }
  while (S->hn) {
    msg m = heap_pop(S);
    free(m.buf);
  }
  free(S->heap);
  for (int k = 0; k < 8; k++)
    free(S->captured[k]);
}

/* ------------------------------------------------------------------ */
/* Views and event logs                                                */
/* ------------------------------------------------------------------ */

static int up_count(const sim *S) {
  int c = 0;
  for (int i = 0; i < S->nn; i++)
    c += S->n[i].s != NULL;
  return c;
}

static bool is_running_boot(const sim *S, uint64_t boot) {
  for (int i = 0; i < S->nn; i++)
    if (S->n[i].s && S->n[i].boot == boot)
      return true;
  return false;
}

/* Every running node sees exactly the running nodes, all alive. */
static bool converged(sim *S, void *ctx) {
  (void)ctx;
  size_t want = (size_t)up_count(S);
  rusm__swim_member ms[MAXN + 8];
  for (int i = 0; i < S->nn; i++) {
    if (!S->n[i].s)
      continue;
    size_t k = rusm__swim_members(S->n[i].s, ms, MAXN + 8);
    if (k != want)
      return false;
    for (size_t j = 0; j < k; j++)
      if (ms[j].state != RUSM__SWIM_ALIVE || !is_running_boot(S, ms[j].boot_id))
        return false;
  }
  return true;
}

static size_t count_ev(const node *nd, rusm__swim_event_type type,
                       uint64_t boot) {
  size_t c = 0;
  for (size_t i = 0; i < nd->n_ev; i++)
    c += nd->ev[i].type == type && nd->ev[i].boot == boot;
  return c;
}

static size_t count_type(const node *nd, rusm__swim_event_type type) {
  size_t c = 0;
  for (size_t i = 0; i < nd->n_ev; i++)
    c += nd->ev[i].type == type;
  return c;
}

static const evrec *find_ev(const node *nd, rusm__swim_event_type type,
                            uint64_t boot) {
  for (size_t i = 0; i < nd->n_ev; i++)
    if (nd->ev[i].type == type && nd->ev[i].boot == boot)
      return &nd->ev[i];
  return NULL;
}

typedef struct down_ctx {
  uint64_t boot;
} down_ctx;

/* Every running node has reported boot down. */
static bool all_down(sim *S, void *ctx) {
  const down_ctx *d = ctx;
  for (int i = 0; i < S->nn; i++)
    if (S->n[i].s && !find_ev(&S->n[i], RUSM__SWIM_MEMBER_DOWN, d->boot))
      return false;
  return true;
}

static void dump_log(const sim *S, int i, uint64_t boot) {
  const node *nd = &S->n[i];
  fprintf(stderr, "node %d (boot %llx) log about %llx:\n", i,
          (unsigned long long)nd->boot, (unsigned long long)boot);
  for (size_t k = 0; k < nd->n_ev; k++)
    if (nd->ev[k].boot == boot)
      fprintf(stderr, "  t=%llu type=%d reason=%d\n",
              (unsigned long long)(nd->ev[k].t - T0), nd->ev[k].type,
              nd->ev[k].reason);
}

/* For every node, each boot's UP / DOWN reports alternate, UP first. */
static void check_logs(const sim *S) {
  for (int i = 0; i < S->nn; i++) {
    const node *nd = &S->n[i];
    for (size_t a = 0; a < nd->n_ev; a++) {
      const evrec *e = &nd->ev[a];
      assert_true(e->boot != nd->boot || e->type == RUSM__SWIM_JOIN_REFUSED);
      if (e->type != RUSM__SWIM_MEMBER_UP && e->type != RUSM__SWIM_MEMBER_DOWN)
        continue;
      int last = 0; /* 0 none, 1 up, 2 down */
      for (size_t b = 0; b < a; b++) {
        const evrec *f = &nd->ev[b];
        if (f->boot != e->boot)
          continue;
        if (f->type == RUSM__SWIM_MEMBER_UP)
          last = 1;
        else if (f->type == RUSM__SWIM_MEMBER_DOWN)
          last = 2;
      }
      if ((e->type == RUSM__SWIM_MEMBER_UP) == (last == 1))
        dump_log(S, i, e->boot); /* about to fail: show the history */
      if (e->type == RUSM__SWIM_MEMBER_UP)
        assert_true(last != 1);
      else
        assert_int_equal(last, 1);
    }
  }
}

static void start_cluster(sim *S, int n) {
  int seed0[1] = {0};
  start_default(S, 0, NULL, 0);
  for (int i = 1; i < n; i++)
    start_default(S, i, seed0, 1);
  assert_true(sim_run(S, S->now + 30 * SEC, converged, NULL));
}

/* ------------------------------------------------------------------ */
/* Joins                                                               */
/* ------------------------------------------------------------------ */

static void join_n(int n, uint64_t seed) {
  sim S;
  sim_init(&S, seed);
  start_cluster(&S, n);
  print_message("%d nodes converged after %llu ms, %llu messages\n", n,
                (unsigned long long)(S.now - T0), (unsigned long long)S.sent);
  for (int i = 0; i < n; i++) {
    const node *nd = &S.n[i];
    assert_true(rusm__swim_joined(nd->s));
    assert_int_equal(rusm__swim_member_count(nd->s), (size_t)n);
    assert_int_equal(nd->errors, 0);
    assert_int_equal(count_type(nd, RUSM__SWIM_MEMBER_DOWN), 0);
    assert_int_equal(count_type(nd, RUSM__SWIM_JOIN_REFUSED), 0);
    for (int j = 0; j < n; j++)
      assert_int_equal(count_ev(nd, RUSM__SWIM_MEMBER_UP, S.n[j].boot),
                       i == j ? 0 : 1);
    rusm__swim_member m;
    assert_int_equal(rusm__swim_find(nd->s, (uint16_t)((i + 1) % n + 1), &m),
                     0);
    assert_int_equal(m.boot_id, S.n[(i + 1) % n].boot);
    assert_string_equal(m.addr, S.n[(i + 1) % n].addr);
  }
  /* Quiet for a while: nothing changes, no message is oversized. */
  sim_run(&S, S.now + 20 * SEC, NULL, NULL);
  assert_true(converged(&S, NULL));
  for (int i = 0; i < n; i++)
    assert_int_equal(count_type(&S.n[i], RUSM__SWIM_MEMBER_SUSPECT), 0);
  assert_true(S.max_len <= 1400);
  check_logs(&S);
  sim_free(&S);
}

static void test_join_3(void **state) {
  (void)state;
  join_n(3, 0x3001);
}

static void test_join_16(void **state) {
  (void)state;
  join_n(16, 0x16001);
}

/* ------------------------------------------------------------------ */
/* Failure detection                                                   */
/* ------------------------------------------------------------------ */

/* Crashes `victim` and checks that every other node reports it DOWN
 * within the bound, exactly once, and nothing else goes down. Returns the
 * slowest detection in ms. */
static uint64_t crash_and_detect(sim *S, int victim) {
  uint64_t t0 = S->now;
  uint64_t boot = S->n[victim].boot;
  uint64_t bound = 3 * T_MS + SMAX_MS + S->delay_max;
  node_crash(S, victim);
  down_ctx d = {boot};
  assert_true(sim_run(S, t0 + 10 * SEC, all_down, &d));
  uint64_t worst = 0;
  for (int i = 0; i < S->nn; i++) {
    const node *nd = &S->n[i];
    if (!nd->s)
      continue;
    const evrec *e = find_ev(nd, RUSM__SWIM_MEMBER_DOWN, boot);
    assert_non_null(e);
    assert_int_equal(e->reason, RUSM__SWIM_REASON_FAILED);
    uint64_t took = e->t - t0;
    if (took > worst)
      worst = took;
    if (took > bound)
      print_message("node %d took %llu ms > %llu\n", i,
                    (unsigned long long)took, (unsigned long long)bound);
    assert_true(took <= bound);
  }
  /* Let it settle: still exactly once, nobody else down. */
  sim_run(S, S->now + 5 * SEC, NULL, NULL);
  for (int i = 0; i < S->nn; i++) {
    const node *nd = &S->n[i];
    if (!nd->s)
      continue;
    assert_int_equal(count_ev(nd, RUSM__SWIM_MEMBER_DOWN, boot), 1);
    for (size_t k = 0; k < nd->n_ev; k++)
      if (nd->ev[k].type == RUSM__SWIM_MEMBER_DOWN)
        assert_false(is_running_boot(S, nd->ev[k].boot));
  }
  assert_true(converged(S, NULL));
  return worst;
}

static void detect_n(int n, int crashes, uint64_t seed) {
  sim S;
  sim_init(&S, seed);
  start_cluster(&S, n);
  uint64_t worst = 0, sum = 0;
  for (int c = 0; c < crashes; c++) {
    /* Let a random part of a period pass: crashes at every phase. */
    sim_run(&S, S.now + sim_rnd(&S) % (uint64_t)(3 * T_MS), NULL, NULL);
    int victim;
    do
      victim = (int)(sim_rnd(&S) % (uint64_t)n);
    while (!S.n[victim].s);
    uint64_t w = crash_and_detect(&S, victim);
    sum += w;
    if (w > worst)
      worst = w;
  }
  print_message("%d nodes, %d crashes: slowest detection %llu ms, mean of "
                "slowest %llu ms (bound %d ms)\n",
                n, crashes, (unsigned long long)worst,
                (unsigned long long)(sum / (uint64_t)crashes),
                3 * T_MS + SMAX_MS + 5);
  check_logs(&S);
  sim_free(&S);
}

static void test_detect_3(void **state) {
  (void)state;
  for (uint64_t seed = 0; seed < 6; seed++)
    detect_n(3, 1, 0xd300 + seed);
}

static void test_detect_16(void **state) {
  (void)state;
  detect_n(16, 10, 0xd1600);
  detect_n(16, 10, 0xd1601);
}

/* A suspect that is alive refutes; 20% loss for ten minutes brings no
 * false DOWN at the default settings. */
static void test_refute_under_loss(void **state) {
  (void)state;
  sim S;
  sim_init(&S, 0x10550);
  int n = 16;
  start_cluster(&S, n);
  S.loss_pct = 20;
  uint64_t dur = 600 * SEC;
  sim_run(&S, S.now + dur, NULL, NULL);
  uint64_t suspects = 0, refuted = 0, refutations = 0;
  for (int i = 0; i < n; i++) {
    const node *nd = &S.n[i];
    for (size_t k = 0; k < nd->n_ev; k++)
      if (nd->ev[k].type == RUSM__SWIM_MEMBER_DOWN)
        dump_log(&S, i, nd->ev[k].boot); /* about to fail */
  }
  for (int i = 0; i < n; i++) {
    const node *nd = &S.n[i];
    assert_int_equal(count_type(nd, RUSM__SWIM_MEMBER_DOWN), 0);
    suspects += count_type(nd, RUSM__SWIM_MEMBER_SUSPECT);
    refuted += count_type(nd, RUSM__SWIM_MEMBER_ALIVE);
    rusm__swim_stats st;
    rusm__swim_get_stats(nd->s, &st);
    refutations += st.refutations;
    assert_int_equal(nd->errors, 0);
  }
  print_message("20%% loss, %llu s: %llu suspect reports, %llu refuted, "
                "%llu refutations, %llu messages\n",
                (unsigned long long)(dur / SEC), (unsigned long long)suspects,
                (unsigned long long)refuted, (unsigned long long)refutations,
                (unsigned long long)S.sent);
  assert_true(suspects > 0);
  assert_true(refutations > 0);
  assert_true(refuted > 0);
  S.loss_pct = 0;
  assert_true(sim_run(&S, S.now + 30 * SEC, converged, NULL));
  check_logs(&S);
  sim_free(&S);
}

/* The transport's hint starts the suspicion at once. */
static void test_connection_lost(void **state) {
  (void)state;
  sim S;
  sim_init(&S, 0xc1);
  start_cluster(&S, 5);
  /* A live member: suspected, refutes, stays. */
  assert_int_equal(rusm__swim_connection_lost(S.n[0].s, S.n[2].addr, S.now), 0);
  drain(&S, 0);
  assert_int_equal(count_ev(&S.n[0], RUSM__SWIM_MEMBER_SUSPECT, S.n[2].boot),
                   1);
  sim_run(&S, S.now + 5 * SEC, NULL, NULL);
  assert_int_equal(count_ev(&S.n[0], RUSM__SWIM_MEMBER_ALIVE, S.n[2].boot), 1);
  assert_int_equal(count_type(&S.n[0], RUSM__SWIM_MEMBER_DOWN), 0);
  assert_true(converged(&S, NULL));
  /* A dead one: down everywhere within S_max + delays, no probe wait. */
  uint64_t t0 = S.now, boot = S.n[4].boot;
  node_crash(&S, 4);
  assert_int_equal(rusm__swim_connection_lost(S.n[1].s, S.n[4].addr, S.now), 0);
  drain(&S, 1);
  down_ctx d = {boot};
  assert_true(sim_run(&S, t0 + 10 * SEC, all_down, &d));
  for (int i = 0; i < 4; i++) {
    const evrec *e = find_ev(&S.n[i], RUSM__SWIM_MEMBER_DOWN, boot);
    assert_true(e->t - t0 <= SMAX_MS + 2 * S.delay_max);
  }
  assert_int_equal(rusm__swim_connection_lost(S.n[1].s, "nowhere:1", S.now),
                   RUSM_ENOTFOUND);
  check_logs(&S);
  sim_free(&S);
}

/* ------------------------------------------------------------------ */
/* Partition, restart, refusal, leave                                  */
/* ------------------------------------------------------------------ */

typedef struct side_ctx {
  int size;
} side_ctx;

/* Every running node sees exactly its own side. */
static bool sides_split(sim *S, void *ctx) {
  const side_ctx *c = ctx;
  for (int i = 0; i < S->nn; i++)
    if (S->n[i].s && rusm__swim_member_count(S->n[i].s) != (size_t)c->size)
      return false;
  return true;
}

static void test_partition_heal(void **state) {
  (void)state;
  sim S;
  sim_init(&S, 0x9a27);
  int n = 6;
  start_cluster(&S, n);
  for (int i = 3; i < n; i++)
    S.n[i].group = 1;
  side_ctx c = {3};
  assert_true(sim_run(&S, S.now + 10 * SEC, sides_split, &c));
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      assert_int_equal(count_ev(&S.n[i], RUSM__SWIM_MEMBER_DOWN, S.n[j].boot),
                       (i < 3) != (j < 3) ? 1 : 0);
  sim_run(&S, S.now + 5 * SEC, NULL, NULL); /* a while apart */
  uint64_t heal = S.now;
  for (int i = 3; i < n; i++)
    S.n[i].group = 0;
  assert_true(sim_run(&S, S.now + 30 * SEC, converged, NULL));
  print_message("healed in %llu ms\n", (unsigned long long)(S.now - heal));
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      assert_int_equal(count_ev(&S.n[i], RUSM__SWIM_MEMBER_UP, S.n[j].boot),
                       i == j               ? 0
                       : (i < 3) != (j < 3) ? 2
                                            : 1);
  sim_run(&S, S.now + 20 * SEC, NULL, NULL);
  assert_true(converged(&S, NULL));
  check_logs(&S);
  sim_free(&S);
}

typedef struct restart_ctx {
  uint64_t old_boot, new_boot;
} restart_ctx;

static void restart_case(bool quick, uint64_t seed) {
  sim S;
  sim_init(&S, seed);
  int n = 5;
  start_cluster(&S, n);
  S.capture_from = 2;
  sim_run(&S, S.now + 2 * SEC, NULL, NULL); /* something to replay later */
  S.capture_from = -1;
  uint64_t old_boot = S.n[2].boot;
  node_crash(&S, 2);
  if (quick) {
    sim_run(&S, S.now + 50, NULL, NULL); /* before anyone notices */
  } else {
    down_ctx d = {old_boot};
    assert_true(sim_run(&S, S.now + 10 * SEC, all_down, &d));
  }
  int seeds[1] = {quick ? 0 : 4};
  start_default(&S, 2, seeds, 1); /* same name, id, address: new boot */
  uint64_t new_boot = S.n[2].boot;
  assert_true(new_boot != old_boot);
  assert_true(sim_run(&S, S.now + 30 * SEC, converged, NULL));
  for (int i = 0; i < n; i++) {
    if (i == 2)
      continue;
    const node *nd = &S.n[i];
    assert_int_equal(count_ev(nd, RUSM__SWIM_MEMBER_DOWN, old_boot), 1);
    assert_int_equal(count_ev(nd, RUSM__SWIM_MEMBER_UP, new_boot), 1);
    const evrec *dn = find_ev(nd, RUSM__SWIM_MEMBER_DOWN, old_boot);
    const evrec *up = find_ev(nd, RUSM__SWIM_MEMBER_UP, new_boot);
    assert_true(dn <= up); /* old down before new up (log order) */
    if (quick)
      assert_int_equal(dn->reason, RUSM__SWIM_REASON_RESTARTED);
  }
  /* Old messages of the old instance change nothing. */
  for (int k = 1; k < 8; k++) {
    if (!S.captured[k])
      continue;
    for (int i = 0; i < n; i++) {
      if (i == 2)
        continue;
      size_t before = S.n[i].n_ev;
      assert_int_equal(rusm__swim_handle_message(S.n[i].s, S.n[2].addr,
                                                 S.captured[k],
                                                 S.captured_len[k], S.now),
                       0);
      drain(&S, i);
      assert_int_equal(S.n[i].n_ev, before);
    }
  }
  sim_run(&S, S.now + 10 * SEC, NULL, NULL);
  assert_true(converged(&S, NULL));
  for (int i = 0; i < n; i++) {
    assert_int_equal(count_ev(&S.n[i], RUSM__SWIM_MEMBER_UP, old_boot),
                     i == 2 ? 0 : 1);
    assert_int_equal(count_ev(&S.n[i], RUSM__SWIM_MEMBER_DOWN, new_boot), 0);
  }
  check_logs(&S);
  sim_free(&S);
}

static void test_restart(void **state) {
  (void)state;
  restart_case(true, 0x7e51);
  restart_case(false, 0x7e52);
}

static void refused_case(sim *S, int slot, const char *name, uint16_t id,
                         rusm__swim_reason want, int holder) {
  int seeds[1] = {0};
  node_start(S, slot, name, id, seeds, 1);
  sim_run(S, S->now + 5 * SEC, NULL, NULL);
  const node *j = &S->n[slot];
  assert_true(rusm__swim_stopped(j->s));
  assert_false(rusm__swim_joined(j->s));
  assert_int_equal(rusm__swim_next_timeout(j->s), UINT64_MAX);
  assert_int_equal(rusm__swim_member_count(j->s), 1);
  assert_int_equal(count_type(j, RUSM__SWIM_JOIN_REFUSED), 1);
  const evrec *e = find_ev(j, RUSM__SWIM_JOIN_REFUSED, S->n[holder].boot);
  assert_non_null(e);
  assert_int_equal(e->reason, want);
  e = find_ev(&S->n[0], RUSM__SWIM_JOIN_REFUSED, j->boot);
  assert_non_null(e);
  assert_int_equal(e->reason, want);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(rusm__swim_member_count(S->n[i].s), 3);
    assert_int_equal(count_ev(&S->n[i], RUSM__SWIM_MEMBER_UP, j->boot), 0);
  }
  /* Out of the way: it never joined. */
  rusm__swim_free(S->n[slot].s);
  S->n[slot].s = NULL;
}

static void test_refused(void **state) {
  (void)state;
  sim S;
  sim_init(&S, 0x4ef);
  start_cluster(&S, 3);
  refused_case(&S, 3, "n1", 9, RUSM__SWIM_REASON_NAME_TAKEN, 1);
  refused_case(&S, 4, "fresh", 3, RUSM__SWIM_REASON_ID_TAKEN, 2);
  refused_case(&S, 5, "n0", 10, RUSM__SWIM_REASON_NAME_TAKEN, 0);
  refused_case(&S, 6, "other", 1, RUSM__SWIM_REASON_ID_TAKEN, 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(count_type(&S.n[i], RUSM__SWIM_MEMBER_DOWN), 0);
  assert_true(converged(&S, NULL));
  sim_free(&S);
}

/* The same name on both sides of a partition (a node joined one side
 * with the name of a node the other side holds failed): when the sides
 * meet, the lower boot id wins everywhere and the loser stops. */
static void conflict_case(uint64_t seed) {
  sim S;
  sim_init(&S, seed);
  start_cluster(&S, 6);
  for (int i = 3; i < 6; i++)
    S.n[i].group = 1;
  side_ctx c = {3};
  assert_true(sim_run(&S, S.now + 10 * SEC, sides_split, &c));
  S.n[6].group = 1;
  int seeds[1] = {3};
  node_start(&S, 6, "n1", 20, seeds, 1); /* n1 lives on the other side */
  side_ctx c4 = {4};
  for (int i = 0; i < 3; i++) /* (side A's count stays 3) */
    assert_int_equal(rusm__swim_member_count(S.n[i].s), 3);
  assert_true(sim_run(&S, S.now + 10 * SEC, NULL, NULL));
  for (int i = 3; i < 7; i++)
    assert_int_equal(rusm__swim_member_count(S.n[i].s), (size_t)c4.size);
  for (int i = 0; i < 7; i++)
    S.n[i].group = 0;
  sim_run(&S, S.now + 30 * SEC, NULL, NULL);
  int winner = S.n[1].boot < S.n[6].boot ? 1 : 6;
  int loser = winner == 1 ? 6 : 1;
  print_message("conflict: %s boot wins\n", winner == 1 ? "old" : "new");
  assert_true(rusm__swim_stopped(S.n[loser].s));
  assert_false(rusm__swim_stopped(S.n[winner].s));
  const evrec *e =
      find_ev(&S.n[loser], RUSM__SWIM_JOIN_REFUSED, S.n[loser].boot);
  if (!e)
    e = find_ev(&S.n[loser], RUSM__SWIM_JOIN_REFUSED, S.n[winner].boot);
  assert_non_null(e);
  assert_int_equal(e->reason, RUSM__SWIM_REASON_CONFLICT);
  uint64_t lost = S.n[loser].boot;
  node_crash(&S, loser);
  assert_true(sim_run(&S, S.now + 30 * SEC, converged, NULL));
  for (int i = 0; i < 7; i++) {
    if (!S.n[i].s)
      continue;
    const evrec *d = find_ev(&S.n[i], RUSM__SWIM_MEMBER_DOWN, lost);
    if (find_ev(&S.n[i], RUSM__SWIM_MEMBER_UP, lost))
      assert_true(d != NULL);
    /* Down for a conflict, or (side A, earlier) failed in the split. */
    if (d)
      assert_true(d->reason == RUSM__SWIM_REASON_CONFLICT ||
                  d->reason == RUSM__SWIM_REASON_FAILED);
  }
  check_logs(&S);
  sim_free(&S);
}

static void test_conflict(void **state) {
  (void)state;
  conflict_case(0xc0f1);
  conflict_case(0xc0f2);
  conflict_case(0xc0f3);
  conflict_case(0xc0f4);
}

/* Views larger than one message go in several; small messages, many
 * nodes, tombstones that expire. */
static void test_small_messages(void **state) {
  (void)state;
  sim S;
  sim_init(&S, 0x5a11);
  S.cfg.max_message = RUSM__SWIM_MESSAGE_MIN;
  S.cfg.tombstone_ttl_ms = 5000;
  int n = MAXN;
  start_cluster(&S, n);
  assert_true(S.max_len <= RUSM__SWIM_MESSAGE_MIN);
  for (int v = 0; v < 3; v++) {
    uint64_t boot = S.n[v * 5 + 2].boot;
    node_crash(&S, v * 5 + 2);
    down_ctx d = {boot};
    assert_true(sim_run(&S, S.now + 10 * SEC, all_down, &d));
  }
  sim_run(&S, S.now + 20 * SEC, NULL, NULL); /* tombstones expire */
  int seeds[1] = {1};
  start_default(&S, 2, seeds, 1); /* a restart after the expiry */
  assert_true(sim_run(&S, S.now + 30 * SEC, converged, NULL));
  assert_true(S.max_len <= RUSM__SWIM_MESSAGE_MIN);
  check_logs(&S);
  sim_free(&S);
}

static void test_leave(void **state) {
  (void)state;
  sim S;
  sim_init(&S, 0x1ea7e);
  start_cluster(&S, 4);
  uint64_t t0 = S.now, boot = S.n[3].boot;
  assert_int_equal(rusm__swim_leave(S.n[3].s), 0);
  assert_int_equal(rusm__swim_leave(S.n[3].s), 0); /* twice: no-op */
  assert_true(rusm__swim_stopped(S.n[3].s));
  assert_int_equal(rusm__swim_next_timeout(S.n[3].s), UINT64_MAX);
  drain(&S, 3);
  sim_run(&S, S.now + 3 * SEC, NULL, NULL);
  for (int i = 0; i < 3; i++) {
    const evrec *e = find_ev(&S.n[i], RUSM__SWIM_MEMBER_DOWN, boot);
    assert_non_null(e);
    assert_int_equal(e->reason, RUSM__SWIM_REASON_LEFT);
    assert_true(e->t - t0 <= S.delay_max);
    assert_int_equal(count_ev(&S.n[i], RUSM__SWIM_MEMBER_DOWN, boot), 1);
    assert_int_equal(count_ev(&S.n[i], RUSM__SWIM_MEMBER_SUSPECT, boot), 0);
    assert_int_equal(rusm__swim_member_count(S.n[i].s), 3);
  }
  /* A stopped machine ignores what still reaches it. */
  node_crash(&S, 3);
  sim_run(&S, S.now + 10 * SEC, NULL, NULL);
  assert_true(converged(&S, NULL));
  sim_free(&S);
}

/* ------------------------------------------------------------------ */
/* Malformed input                                                     */
/* ------------------------------------------------------------------ */

typedef struct snap {
  rusm__swim_member m[MAXN];
  size_t n;
  rusm__swim_stats st;
  uint64_t next;
  rusm__swim_member self;
} snap;

static void take_snap(rusm__swim *s, snap *p) {
  memset(p, 0, sizeof *p);
  p->n = rusm__swim_members(s, p->m, MAXN);
  rusm__swim_get_stats(s, &p->st);
  p->next = rusm__swim_next_timeout(s);
  rusm__swim_self_record(s, &p->self);
}

static void assert_unchanged(rusm__swim *s, const snap *before) {
  snap now;
  take_snap(s, &now);
  assert_int_equal(now.n, before->n);
  assert_memory_equal(now.m, before->m, sizeof now.m);
  assert_memory_equal(&now.st, &before->st, sizeof now.st);
  assert_int_equal(now.next, before->next);
  assert_memory_equal(&now.self, &before->self, sizeof now.self);
  rusm__swim_transmit t;
  assert_false(rusm__swim_poll_transmit(s, &t));
  rusm__swim_event e;
  assert_false(rusm__swim_poll_event(s, &e));
}

/* A hand encoder of the documented format. */
typedef struct enc {
  uint8_t b[2048];
  size_t n;
} enc;

static void e8(enc *e, uint64_t v) { e->b[e->n++] = (uint8_t)v; }
static void e16(enc *e, uint64_t v) {
  e8(e, v);
  e8(e, v >> 8);
}
static void e32(enc *e, uint64_t v) {
  e16(e, v);
  e16(e, v >> 16);
}
static void e64(enc *e, uint64_t v) {
  e32(e, v);
  e32(e, v >> 32);
}
static void estr(enc *e, const char *s) {
  size_t n = strlen(s);
  e8(e, n);
  memcpy(e->b + e->n, s, n);
  e->n += n;
}
static void ehdr(enc *e, uint8_t type, uint16_t id, uint64_t boot) {
  e->n = 0;
  e8(e, RUSM__SWIM_VERSION);
  e8(e, type);
  e16(e, id);
  e64(e, boot);
  e32(e, 0);
}
static void ealive(enc *e, uint16_t id, uint64_t boot, const char *name,
                   const char *addr) {
  e8(e, 1);
  e8(e, 1);
  e16(e, id);
  e64(e, boot);
  e32(e, 0);
  estr(e, name);
  estr(e, addr);
}

static void expect_bad(rusm__swim *s, const enc *e, int want) {
  snap before;
  take_snap(s, &before);
  int rc = rusm__swim_handle_message(s, "10.9.9.9:1", e->b, e->n, T0 + 1);
  assert_int_equal(rc, want);
  assert_unchanged(s, &before);
}

static void test_malformed(void **state) {
  (void)state;
  sim S;
  sim_init(&S, 0xbad);
  start_cluster(&S, 3);
  /* Capture real traffic of node 1 of every kind it sends. */
  S.capture_from = 1;
  assert_int_equal(rusm__swim_connection_lost(S.n[1].s, S.n[2].addr, S.now),
                   0); /* suspect and gossip entries on the wire */
  drain(&S, 1);
  sim_run(&S, S.now + 12 * SEC, NULL, NULL); /* a periodic SYNC too */
  S.n[2].group = 1; /* probes of node 2 fail: PING_REQ, NACK */
  sim_run(&S, S.now + 1 * SEC, NULL, NULL);
  S.n[2].group = 0;
  int seeds[1] = {1};
  node_start(&S, 3, "n0", 9, seeds, 1); /* refused by node 1: REFUSE */
  sim_run(&S, S.now + 1 * SEC, NULL, NULL);
  assert_true(rusm__swim_stopped(S.n[3].s));
  S.capture_from = -1;
  rusm__swim *s = S.n[0].s;
  /* Every strict prefix of every captured message is rejected. */
  size_t kinds = 0;
  for (int k = 1; k < 8; k++) {
    if (!S.captured[k])
      continue;
    kinds++;
    for (size_t len = 0; len < S.captured_len[k]; len++) {
      snap before;
      take_snap(s, &before);
      int rc =
          rusm__swim_handle_message(s, S.n[1].addr, S.captured[k], len, S.now);
      assert_int_equal(rc, RUSM_ESWIM_MALFORMED);
      assert_unchanged(s, &before);
    }
    /* And with a byte too many. */
    uint8_t *longer = malloc(S.captured_len[k] + 1);
    assert_non_null(longer);
    memcpy(longer, S.captured[k], S.captured_len[k]);
    longer[S.captured_len[k]] = 0;
    enc e;
    memcpy(e.b, longer, S.captured_len[k] + 1);
    e.n = S.captured_len[k] + 1;
    expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
    free(longer);
  }
  print_message("%zu message kinds captured\n", kinds);
  assert_int_equal(kinds, 7);

  uint64_t b = 0x1234;
  enc e;
  /* Version. */
  ehdr(&e, 7, 9, b);
  e8(&e, 0);
  e.b[0] = 2;
  expect_bad(s, &e, RUSM_ESWIM_VERSION);
  /* Unknown type; node id 0 and 2048; boot 0. */
  ehdr(&e, 8, 9, b);
  e8(&e, 0);
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  ehdr(&e, 7, 0, b);
  e8(&e, 0);
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  ehdr(&e, 7, 2048, b);
  e8(&e, 0);
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  ehdr(&e, 7, 9, 0);
  e8(&e, 0);
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  /* Entries: more announced than present; bad names and addresses. */
  ehdr(&e, 7, 9, b);
  e8(&e, 2);
  ealive(&e, 9, b, "ok", "a:1");
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  char too_long[RUSM__SWIM_NAME_MAX + 2];
  memset(too_long, 'a', sizeof too_long - 1);
  too_long[sizeof too_long - 1] = 0; /* 64 bytes */
  const char *bad_names[] = {"", "a/b", "sp ace", "x\xff", too_long};
  for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
    ehdr(&e, 7, 9, b);
    e8(&e, 1);
    ealive(&e, 9, b, bad_names[i], "a:1");
    expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  }
  ehdr(&e, 7, 9, b);
  e8(&e, 1);
  ealive(&e, 9, b, "ok", "");
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  ehdr(&e, 7, 9, b);
  e8(&e, 1);
  ealive(&e, 9, b, "ok", "a:1");
  e.b[e.n - 2] = 0; /* a NUL inside the address */
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  /* ALIVE without identity; reason bits on a SUSPECT; unknown kind;
   * SUSPECT from boot 0. */
  ehdr(&e, 7, 9, b);
  e8(&e, 1);
  e8(&e, 1);
  e8(&e, 0);
  e16(&e, 9);
  e64(&e, b);
  e32(&e, 0);
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  ehdr(&e, 7, 9, b);
  e8(&e, 1);
  e8(&e, 2);
  e8(&e, 0x10);
  e16(&e, 9);
  e64(&e, b);
  e32(&e, 0);
  e64(&e, b);
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  ehdr(&e, 7, 9, b);
  e8(&e, 1);
  e8(&e, 5);
  e8(&e, 0);
  e16(&e, 9);
  e64(&e, b);
  e32(&e, 0);
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  ehdr(&e, 7, 9, b);
  e8(&e, 1);
  e8(&e, 2);
  e8(&e, 0);
  e16(&e, 9);
  e64(&e, b);
  e32(&e, 0);
  e64(&e, 0);
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  /* A JOIN whose first entry is not the sender; a REFUSE without a
   * record; bad SYNC flags; a PING_REQ with an empty address. */
  ehdr(&e, 5, 9, b);
  e8(&e, 2);
  e8(&e, 1);
  ealive(&e, 9, b + 1, "ok", "a:1");
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  ehdr(&e, 6, 9, b);
  e8(&e, 1);
  e8(&e, 0);
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  ehdr(&e, 5, 9, b);
  e8(&e, 8);
  e8(&e, 0);
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  ehdr(&e, 3, 9, b);
  e32(&e, 1);
  e16(&e, 3);
  e64(&e, 77);
  e16(&e, 80);
  estr(&e, "");
  e8(&e, 0);
  expect_bad(s, &e, RUSM_ESWIM_MALFORMED);
  /* Bad arguments. */
  assert_int_equal(rusm__swim_handle_message(s, NULL, e.b, e.n, S.now),
                   RUSM_EINVAL);
  assert_int_equal(rusm__swim_handle_message(s, "", e.b, e.n, S.now),
                   RUSM_EINVAL);
  assert_int_equal(rusm__swim_handle_message(s, "x", NULL, 3, S.now),
                   RUSM_EINVAL);

  /* Random garbage: rejected, nothing changes. */
  uint8_t buf[600];
  for (int i = 0; i < 20000; i++) {
    size_t len = sim_rnd(&S) % sizeof buf;
    for (size_t k = 0; k < len; k++)
      buf[k] = (uint8_t)sim_rnd(&S);
    if (len > 0 && (i & 1))
      buf[0] = RUSM__SWIM_VERSION; /* get past the version check */
    snap before;
    take_snap(s, &before);
    int rc = rusm__swim_handle_message(s, "10.9.9.9:1", buf, len, S.now);
    assert_true(rc < 0);
    assert_unchanged(s, &before);
  }
  /* Mutations of real messages: never a crash; a rejection changes
   * nothing. Fed to a node of its own, thrown away afterwards. */
  rusm__swim *t = S.n[2].s;
  for (int i = 0; i < 20000; i++) {
    int k;
    do
      k = 1 + (int)(sim_rnd(&S) % 7);
    while (!S.captured[k]);
    size_t len = S.captured_len[k];
    memcpy(buf, S.captured[k], len);
    int flips = 1 + (int)(sim_rnd(&S) % 3);
    for (int f = 0; f < flips; f++)
      buf[sim_rnd(&S) % len] ^= (uint8_t)(1u << (sim_rnd(&S) % 8));
    snap before;
    take_snap(t, &before);
    int rc = rusm__swim_handle_message(t, "10.9.9.8:1", buf, len, S.now);
    if (rc < 0) {
      assert_unchanged(t, &before);
    } else {
      rusm__swim_transmit tx;
      while (rusm__swim_poll_transmit(t, &tx))
        ;
      rusm__swim_event ev;
      while (rusm__swim_poll_event(t, &ev))
        ;
    }
  }
  sim_free(&S);
}

/* ------------------------------------------------------------------ */
/* API edges and allocation failures                                   */
/* ------------------------------------------------------------------ */

static void test_api(void **state) {
  (void)state;
  rusm__swim *s = NULL;
  rusm__swim_self ok = {"node-a.1_x", 7, "127.0.0.1:4370", 42};
  assert_int_equal(rusm__swim_new(NULL, &ok, 0, &s), 0);
  rusm__swim_member m;
  rusm__swim_self_record(s, &m);
  assert_string_equal(m.name, "node-a.1_x");
  assert_int_equal(m.node_id, 7);
  assert_int_equal(m.boot_id, 42);
  assert_true(rusm__swim_joined(s));
  assert_false(rusm__swim_stopped(s));
  assert_int_equal(rusm__swim_member_count(s), 1);
  assert_int_equal(rusm__swim_find(s, 7, &m), 0);
  assert_int_equal(rusm__swim_find(s, 8, &m), RUSM_ENOTFOUND);
  assert_int_equal(rusm__swim_add_seed(s, ""), RUSM_EINVAL);
  assert_int_equal(rusm__swim_add_seed(s, "127.0.0.1:4370"), 0); /* self */
  assert_true(rusm__swim_joined(s));
  assert_int_equal(rusm__swim_add_seed(s, "127.0.0.1:4371"), 0);
  assert_false(rusm__swim_joined(s));
  assert_int_equal(rusm__swim_next_timeout(s), 0); /* JOIN at once */
  rusm__swim_handle_timeout(s, 5);
  rusm__swim_transmit t;
  assert_true(rusm__swim_poll_transmit(s, &t));
  assert_string_equal(t.addr, "127.0.0.1:4371");
  assert_int_equal(t.bytes[0], RUSM__SWIM_VERSION);
  assert_int_equal(t.bytes[1], 5); /* SYNC (JOIN) */
  assert_false(rusm__swim_poll_transmit(s, &t));
  assert_true(rusm__swim_next_timeout(s) > 5);
  rusm__swim_free(s);
  rusm__swim_free(NULL);

  /* Bad identities and configs. */
  rusm__swim_self bad = ok;
  bad.name = "";
  assert_int_equal(rusm__swim_new(NULL, &bad, 0, &s), RUSM_EINVAL);
  bad = ok;
  bad.name = "has space";
  assert_int_equal(rusm__swim_new(NULL, &bad, 0, &s), RUSM_EINVAL);
  bad = ok;
  bad.node_id = 0;
  assert_int_equal(rusm__swim_new(NULL, &bad, 0, &s), RUSM_EINVAL);
  bad.node_id = 2048;
  assert_int_equal(rusm__swim_new(NULL, &bad, 0, &s), RUSM_EINVAL);
  bad = ok;
  bad.boot_id = 0;
  assert_int_equal(rusm__swim_new(NULL, &bad, 0, &s), RUSM_EINVAL);
  char long_addr[200];
  memset(long_addr, 'a', sizeof long_addr - 1);
  long_addr[sizeof long_addr - 1] = 0;
  bad = ok;
  bad.addr = long_addr;
  assert_int_equal(rusm__swim_new(NULL, &bad, 0, &s), RUSM_EINVAL);
  long_addr[RUSM__SWIM_ADDR_MAX] = 0; /* exactly the maximum */
  assert_int_equal(rusm__swim_new(NULL, &bad, 0, &s), 0);
  rusm__swim_free(s);
  rusm__swim_config c;
  rusm__swim_config_default(&c);
  c.probe_timeout_ms = c.probe_interval_ms;
  assert_int_equal(rusm__swim_new(&c, &ok, 0, &s), RUSM_EINVAL);
  rusm__swim_config_default(&c);
  c.max_message = 100;
  assert_int_equal(rusm__swim_new(&c, &ok, 0, &s), RUSM_EINVAL);
  memset(&c, 0, sizeof c); /* all defaults */
  assert_int_equal(rusm__swim_new(&c, &ok, 0, &s), 0);
  rusm__swim_free(s);
  assert_int_equal(rusm__swim_new(&c, &ok, 0, NULL), RUSM_EINVAL);

  /* Creation under allocation failure: ENOMEM, nothing leaked. */
  for (int64_t k = 0; k < 4; k++) {
    rusm__test_fail_allocs(k);
    int rc = rusm__swim_new(NULL, &ok, 0, &s);
    rusm__test_fail_allocs(-1);
    if (rc == 0)
      rusm__swim_free(s);
    else
      assert_int_equal(rc, RUSM_ENOMEM);
  }
}

/* Transient allocation failures while a cluster runs: no crash, no leak,
 * and the protocol repairs what was lost. */
static void test_alloc_failures(void **state) {
  (void)state;
  sim S;
  sim_init(&S, 0xa110c);
  start_cluster(&S, 4);
  for (int k = 0; k < 200; k++) {
    rusm__test_fail_one_alloc((int64_t)(sim_rnd(&S) % 40));
    sim_run(&S, S.now + 97, NULL, NULL);
  }
  rusm__test_fail_allocs(-1);
  rusm__test_fail_one_alloc(-1);
  assert_true(sim_run(&S, S.now + 60 * SEC, converged, NULL));
  sim_free(&S);
}

/* ------------------------------------------------------------------ */
/* A randomized run                                                    */
/* ------------------------------------------------------------------ */

static void random_run(uint64_t seed) {
  sim S;
  sim_init(&S, seed);
  S.delay_max = 20;
  int slots = 12;
  start_cluster(&S, 5);
  uint64_t end = S.now + 90 * SEC;
  int crashes = 0, starts = 0, hints = 0, splits = 0;
  while (S.now < end) {
    sim_run(&S, S.now + 300 + sim_rnd(&S) % 2000, NULL, NULL);
    uint64_t r = sim_rnd(&S) % 100;
    int up = up_count(&S);
    if (r < 35 && up > 2) {
      int v;
      do
        v = (int)(sim_rnd(&S) % (uint64_t)slots);
      while (!S.n[v].s);
      node_crash(&S, v);
      crashes++;
    } else if (r < 70 && up < slots) {
      int v;
      do
        v = (int)(sim_rnd(&S) % (uint64_t)slots);
      while (S.n[v].s);
      /* Slots 0 and 1 are the well-known seeds, up or not. */
      int seeds[2] = {v == 0 ? 1 : 0, v == 1 ? 0 : 1};
      start_default(&S, v, seeds, v < 2 ? 1 : 2); /* a used slot: restart */
      starts++;
    } else if (r < 78) {
      /* Split at random, or heal. */
      bool split = sim_rnd(&S) % 2;
      for (int i = 0; i < slots; i++)
        S.n[i].group = split ? (int)(sim_rnd(&S) % 2) : 0;
      splits += split;
    } else if (r < 85) {
      int a = (int)(sim_rnd(&S) % (uint64_t)slots);
      int b = (int)(sim_rnd(&S) % (uint64_t)slots);
      if (S.n[a].s && a != b && S.n[b].addr[0]) {
        (void)rusm__swim_connection_lost(S.n[a].s, S.n[b].addr, S.now);
        drain(&S, a);
        hints++;
      }
    } else {
      S.loss_pct = (uint32_t)(sim_rnd(&S) % 16);
    }
  }
  S.loss_pct = 0;
  for (int i = 0; i < slots; i++)
    S.n[i].group = 0;
  /* Clusters that lost every member the other knew find each other
   * through a seed: one must be up. */
  if (!S.n[0].s) {
    int seeds[1] = {1};
    start_default(&S, 0, seeds, 1);
  }
  uint64_t quiet = S.now;
  bool ok = sim_run(&S, S.now + 120 * SEC, converged, NULL);
  print_message("random run %#llx: %d crashes, %d starts, %d splits, %d "
                "hints; %d up; converged%s %llu ms after the network "
                "quieted\n",
                (unsigned long long)seed, crashes, starts, splits, hints,
                up_count(&S), ok ? "" : " NOT",
                (unsigned long long)(S.now - quiet));
  assert_true(ok);
  for (int i = 0; i < S.nn; i++) {
    assert_int_equal(S.n[i].errors, 0);
    if (S.n[i].s)
      assert_int_equal(count_type(&S.n[i], RUSM__SWIM_JOIN_REFUSED), 0);
  }
  check_logs(&S);
  /* Stays converged. */
  sim_run(&S, S.now + 30 * SEC, NULL, NULL);
  assert_true(converged(&S, NULL));
  sim_free(&S);
}

static void test_random(void **state) {
  (void)state;
  for (uint64_t k = 0; k < 6; k++)
    random_run(0x5eed0 + k);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_api),
      cmocka_unit_test(test_join_3),
      cmocka_unit_test(test_join_16),
      cmocka_unit_test(test_detect_3),
      cmocka_unit_test(test_detect_16),
      cmocka_unit_test(test_connection_lost),
      cmocka_unit_test(test_refute_under_loss),
      cmocka_unit_test(test_partition_heal),
      cmocka_unit_test(test_restart),
      cmocka_unit_test(test_refused),
      cmocka_unit_test(test_leave),
      cmocka_unit_test(test_conflict),
      cmocka_unit_test(test_small_messages),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_alloc_failures),
      cmocka_unit_test(test_random),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
