/*
 * Unit tests: randomized send / selective-receive sequences checked
 * against a model (a plain list): random tags, random filters (tag, mask,
 * predicate, both, anything), random interleaving of sends and receives.
 * Receivers: the attached test thread (to itself), a stackful process and
 * a stackless one (driven by commands). Seeded: the seed is printed, and
 * RUSM_TEST_SEED=<n> replays one.
 */
#include "support.h"

#include <unistd.h>

#define NTAGS 8 /* data tags 0..7 */
#define TAG_CMD (T_TAG_CTL | 0x10)
#define TAG_RES (T_TAG_CTL | 0x11)

/* ------------------------------------------------------------------ */
/* Random numbers, the model, filter specs                             */
/* ------------------------------------------------------------------ */

static uint64_t rnd(uint64_t *s) { /* xorshift64* */
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * UINT64_C(2685821657736338717);
}

static uint64_t base_seed(void) {
  const char *env = getenv("RUSM_TEST_SEED");
  if (env != NULL && *env != '\0')
    return strtoull(env, NULL, 0);
  return (uint64_t)rusm_now_ns() ^ ((uint64_t)getpid() << 32);
}

typedef struct mmsg {
  uint64_t tag, seq;
} mmsg;

typedef struct model {
  mmsg *v;
  size_t n, cap;
} model;

static void model_push(model *md, uint64_t tag, uint64_t seq) {
  if (md->n == md->cap) {
    md->cap = md->cap ? md->cap * 2 : 256;
    md->v = realloc(md->v, md->cap * sizeof *md->v);
    assert_non_null(md->v);
  }
  md->v[md->n].tag = tag;
  md->v[md->n].seq = seq;
  md->n++;
}

enum spec_kind {
  K_ANY,       /* NULL filter (test thread) / any data tag (processes) */
  K_ZERO_MASK, /* mask 0, no predicate: anything (test thread only) */
  K_TAG,       /* exactly one tag */
  K_MASK,      /* some tag bits */
  K_PRED,      /* seq % mod == rem */
  K_MASK_PRED, /* both */
  K__COUNT
};

typedef struct spec {
  uint32_t kind;
  uint32_t mod, rem;
  uint32_t pad;
  uint64_t value, mask;
} spec;

static spec spec_random(uint64_t *rs, bool test_thread) {
  spec sp;
  memset(&sp, 0, sizeof sp);
  do
    sp.kind = (uint32_t)(rnd(rs) % K__COUNT);
  while (!test_thread && sp.kind == K_ZERO_MASK);
  /* Masks keep the high bits, so they match data tags only. */
  uint64_t bits = rnd(rs) % NTAGS;
  sp.mask = bits | ~(uint64_t)(NTAGS - 1);
  sp.value = rnd(rs) % NTAGS & bits;
  sp.mod = 2 + (uint32_t)(rnd(rs) % 3);
  sp.rem = (uint32_t)(rnd(rs) % sp.mod);
  if (sp.kind == K_TAG) {
    sp.mask = ~UINT64_C(0);
    sp.value = rnd(rs) % NTAGS;
  }
  return sp;
}

static bool spec_match(const spec *sp, uint64_t tag, uint64_t seq) {
  switch (sp->kind) {
  case K_ANY:
    return true; /* every queued message is a data message */
  case K_ZERO_MASK:
    return true;
  case K_TAG:
  case K_MASK:
    return (tag & sp->mask) == sp->value;
  case K_PRED:
    return seq % sp->mod == sp->rem;
  default:
    return (tag & sp->mask) == sp->value && seq % sp->mod == sp->rem;
  }
}

static bool pred_mod(const rusm_msg *m, void *arg) {
  const spec *sp = arg;
  return t_msg_u64(m) % sp->mod == sp->rem;
}

/* The filter for sp (NULL for "anything" on the test thread). */
static const rusm_filter *spec_filter(const spec *sp, rusm_filter *f,
                                      bool test_thread) {
  memset(f, 0, sizeof *f);
  switch (sp->kind) {
  case K_ANY:
    if (test_thread)
      return NULL;
    f->value = 0;
    f->mask = ~(uint64_t)(NTAGS - 1); /* data tags only, never commands */
    return f;
  case K_ZERO_MASK:
    return f;
  case K_TAG:
  case K_MASK:
    f->value = sp->value;
    f->mask = sp->mask;
    return f;
  case K_PRED:
    /* Processes also hold queued commands: keep to data tags there. */
    if (!test_thread)
      f->mask = ~(uint64_t)(NTAGS - 1);
    f->pred = pred_mod;
    f->pred_arg = (void *)sp;
    return f;
  default:
    f->value = sp->value;
    f->mask = sp->mask;
    f->pred = pred_mod;
    f->pred_arg = (void *)sp;
    return f;
  }
}

/* Takes the first match out of the model; false when none. */
static bool model_take(model *md, const spec *sp, mmsg *out) {
  for (size_t i = 0; i < md->n; i++) {
    if (spec_match(sp, md->v[i].tag, md->v[i].seq)) {
      *out = md->v[i];
      memmove(&md->v[i], &md->v[i + 1], (md->n - i - 1) * sizeof *md->v);
      md->n--;
      return true;
    }
  }
  return false;
}

/* ------------------------------------------------------------------ */
/* The test thread receiving its own messages                          */
/* ------------------------------------------------------------------ */

static void run_self(uint64_t seed, int ops) {
  t_env e;
  t_start(&e, 0);
  model md = {NULL, 0, 0};
  uint64_t rs = seed | 1, seq = 0;
  for (int op = 0; op < ops; op++) {
    if (rnd(&rs) % 100 < 50) {
      int k = 1 + (int)(rnd(&rs) % 4);
      for (int i = 0; i < k; i++) {
        uint64_t tag = rnd(&rs) % NTAGS;
        t_send_u64(e.rt, e.pid, tag, seq);
        model_push(&md, tag, seq++);
      }
      continue;
    }
    spec sp = spec_random(&rs, true);
    rusm_filter f;
    const rusm_filter *fp = spec_filter(&sp, &f, true);
    uint64_t how = rnd(&rs) % 100;
    rusm_msg *m = NULL;
    int rc;
    if (how < 45)
      rc = rusm_try_receive(e.me, fp, &m);
    else
      rc = rusm_receive(e.me, fp, how == 99 ? 1 : 0, &m);
    mmsg want;
    bool found = model_take(&md, &sp, &want);
    if (!found && rc != RUSM_ETIMEDOUT)
      fail_msg("seed %" PRIu64 " op %d: kind %u: got rc %d, model: nothing",
               seed, op, sp.kind, rc);
    if (found) {
      if (rc != 0)
        fail_msg("seed %" PRIu64 " op %d: kind %u: rc %d, model: seq %" PRIu64,
                 seed, op, sp.kind, rc, want.seq);
      if (rusm_msg_tag(m) != want.tag || t_msg_u64(m) != want.seq)
        fail_msg("seed %" PRIu64 " op %d: kind %u: got tag %" PRIu64
                 " seq %" PRIu64 ", model: tag %" PRIu64 " seq %" PRIu64,
                 seed, op, sp.kind, rusm_msg_tag(m), t_msg_u64(m), want.tag,
                 want.seq);
      rusm_msg_free(m);
    }
  }
  /* What is left comes out in arrival order. */
  for (size_t i = 0; i < md.n; i++) {
    rusm_msg *m = NULL;
    int rc = rusm_receive(e.me, NULL, 0, &m);
    if (rc != 0 || t_msg_u64(m) != md.v[i].seq)
      fail_msg("seed %" PRIu64 ": drain %zu: rc %d", seed, i, rc);
    rusm_msg_free(m);
  }
  t_expect_nothing(&e, NULL);
  free(md.v);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Processes driven by commands                                        */
/* ------------------------------------------------------------------ */

/* bounded: only messages with seq < bound may match. A command sent while
 * later data may already be queued behind it (pipelined) carries the
 * bound, so that the receiver sees what the model saw. */
typedef struct cmd {
  spec sp;
  uint64_t bound;
  uint32_t stop;
  uint16_t use_try;
  uint16_t bounded;
} cmd;

static bool pred_bounded(const rusm_msg *m, void *arg) {
  const cmd *c = arg;
  uint64_t seq = t_msg_u64(m);
  if (seq >= c->bound)
    return false;
  if (c->sp.kind == K_PRED || c->sp.kind == K_MASK_PRED)
    return seq % c->sp.mod == c->sp.rem;
  return true;
}

typedef struct res {
  uint64_t found, tag, seq;
} res;

/* Runs one command's receive; sends the RES. */
static void do_cmd(rusm_proc *self, rusm_pid_t parent, const cmd *c,
                   bool blocking_ok) {
  rusm_filter f;
  const rusm_filter *fp = spec_filter(&c->sp, &f, false);
  if (c->bounded) {
    f.pred = pred_bounded;
    f.pred_arg = (void *)c;
  }
  rusm_msg *m = NULL;
  int rc;
  if (c->use_try || !blocking_ok)
    rc = rusm_try_receive(self, fp, &m);
  else
    rc = rusm_receive(self, fp, 0, &m);
  res r = {0, 0, 0};
  if (rc == 0) {
    r.found = 1;
    r.tag = rusm_msg_tag(m);
    r.seq = t_msg_u64(m);
    rusm_msg_free(m);
  } else {
    T_CHECK(rc == RUSM_ETIMEDOUT);
  }
  t_send(rusm_proc_rt(self), parent, TAG_RES, &r, sizeof r);
}

static void model_rx_body(rusm_proc *self, void *arg) {
  rusm_pid_t parent = (rusm_pid_t)(uintptr_t)arg;
  rusm_filter fc = rusm_filter_tag(TAG_CMD);
  for (;;) {
    rusm_msg *m = NULL;
    if (rusm_receive(self, &fc, T_GUARD_MS, &m) != 0) {
      T_CHECK(!"no command");
      return;
    }
    cmd c;
    memcpy(&c, rusm_msg_data(m), sizeof c);
    rusm_msg_free(m);
    if (c.stop)
      return;
    do_cmd(self, parent, &c, true);
  }
}

static rusm_next model_sl_init(rusm_proc *self, void **state) {
  (void)self;
  (void)state;
  rusm_filter fc = rusm_filter_tag(TAG_CMD);
  return rusm_next_wait_for(&fc, -1);
}

static rusm_next model_sl_handle(rusm_proc *self, void *state, rusm_msg *m) {
  rusm_filter fc = rusm_filter_tag(TAG_CMD);
  cmd c;
  T_CHECK(m != NULL && rusm_msg_len(m) == sizeof c);
  if (m == NULL)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  memcpy(&c, rusm_msg_data(m), sizeof c);
  if (c.stop)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  do_cmd(self, (rusm_pid_t)(uintptr_t)state, &c, false);
  return rusm_next_wait_for(&fc, -1);
}

static const rusm_stackless_ops model_sl_ops = {model_sl_init, model_sl_handle,
                                                NULL};

typedef struct pending {
  mmsg want;
  bool found;
  uint32_t kind;
  int op;
} pending;

static void collect(t_env *e, uint64_t seed, pending *pend, size_t *npend) {
  for (size_t i = 0; i < *npend; i++) {
    rusm_msg *m = t_recv_tag(e, TAG_RES);
    res r;
    assert_int_equal(rusm_msg_len(m), sizeof r);
    memcpy(&r, rusm_msg_data(m), sizeof r);
    rusm_msg_free(m);
    const pending *p = &pend[i];
    if ((r.found != 0) != p->found)
      fail_msg("seed %" PRIu64 " op %d: kind %u: found %d (tag %" PRIu64
               " seq %" PRIu64 "), model %d",
               seed, p->op, p->kind, (int)r.found, r.tag, r.seq, (int)p->found);
    if (p->found && (r.tag != p->want.tag || r.seq != p->want.seq))
      fail_msg("seed %" PRIu64 " op %d: kind %u: got tag %" PRIu64
               " seq %" PRIu64 ", model: tag %" PRIu64 " seq %" PRIu64,
               seed, p->op, p->kind, r.tag, r.seq, p->want.tag, p->want.seq);
  }
  *npend = 0;
}

static void run_process(uint64_t seed, int ops, bool stackful) {
  enum { WINDOW = 64 };
  t_env e;
  t_start(&e, 0);
  rusm_pid_t rx;
  if (stackful)
    assert_int_equal(rusm_spawn_stackful(e.rt, model_rx_body,
                                         (void *)(uintptr_t)e.pid, NULL, &rx),
                     0);
  else
    assert_int_equal(rusm_spawn_stackless(e.rt, &model_sl_ops,
                                          (void *)(uintptr_t)e.pid, NULL, &rx),
                     0);
  model md = {NULL, 0, 0};
  pending pend[WINDOW];
  size_t npend = 0;
  uint64_t rs = seed | 1, seq = 0;
  for (int op = 0; op < ops; op++) {
    if (rnd(&rs) % 100 < 50) {
      int k = 1 + (int)(rnd(&rs) % 4);
      for (int i = 0; i < k; i++) {
        uint64_t tag = rnd(&rs) % NTAGS;
        t_send_u64(e.rt, rx, tag, seq);
        model_push(&md, tag, seq++);
      }
      continue;
    }
    cmd c;
    memset(&c, 0, sizeof c);
    c.sp = spec_random(&rs, false);
    c.use_try = rnd(&rs) % 2 == 0;
    bool pipelined = rnd(&rs) % 2 == 0;
    if (pipelined) {
      c.bounded = 1;
      c.bound = seq; /* every message sent so far, nothing sent later */
    }
    t_send(e.rt, rx, TAG_CMD, &c, sizeof c);
    pending *p = &pend[npend++];
    p->found = model_take(&md, &c.sp, &p->want);
    p->kind = c.sp.kind;
    p->op = op;
    if (!pipelined || npend == WINDOW)
      collect(&e, seed, pend, &npend);
  }
  collect(&e, seed, pend, &npend);
  /* Drain in arrival order with "any data" commands. */
  size_t left = md.n;
  for (size_t i = 0; i <= left; i++) {
    cmd c;
    memset(&c, 0, sizeof c);
    c.sp.kind = K_ANY;
    t_send(e.rt, rx, TAG_CMD, &c, sizeof c);
    pending *p = &pend[npend++];
    p->found = model_take(&md, &c.sp, &p->want);
    p->kind = K_ANY;
    p->op = -1;
    if (npend == WINDOW)
      collect(&e, seed, pend, &npend);
  }
  collect(&e, seed, pend, &npend);
  cmd stop;
  memset(&stop, 0, sizeof stop);
  stop.stop = 1;
  t_send(e.rt, rx, TAG_CMD, &stop, sizeof stop);
  t_wait_idle(&e);
  free(md.v);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */

static uint64_t g_seed;

static uint64_t seed_for(int variant) {
  uint64_t s = g_seed + (uint64_t)variant * UINT64_C(0x9e3779b97f4a7c15);
  print_message("model seed %" PRIu64 " (RUSM_TEST_SEED=%" PRIu64
                " replays this run)\n",
                s, g_seed);
  return s;
}

static void test_model_test_thread(void **state) {
  (void)state;
  run_self(seed_for(0), T_SCALE(30000, 4000));
}

static void test_model_stackful(void **state) {
  (void)state;
  run_process(seed_for(1), T_SCALE(20000, 3000), true);
}

static void test_model_stackless(void **state) {
  (void)state;
  run_process(seed_for(2), T_SCALE(20000, 3000), false);
}

/* Fixed seeds too, so a plain run always covers the same cases. */
static void test_model_fixed_seeds(void **state) {
  (void)state;
  for (uint64_t s = 1; s <= 3; s++) {
    run_self(s, 2000);
    run_process(s, 1000, s % 2 == 0);
  }
}

int main(void) {
  g_seed = base_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_model_test_thread),
      cmocka_unit_test(test_model_stackful),
      cmocka_unit_test(test_model_stackless),
      cmocka_unit_test(test_model_fixed_seeds),
  };
  return T_RUN(tests);
}
