/*
 * test_coro.c — stackful coroutines (src/otp/coro.c, coro_x86_64.S):
 * switches, register and FP state, alignment, abandoned coroutines,
 * the stack pool, migration between threads and the guard page.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xmmintrin.h>

#include <cmocka.h>

#include "otp/coro.h"
#include "rusm/otp.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define TEST_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(TEST_ASAN)
#define TEST_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(TEST_TSAN)
#define TEST_TSAN 1
#endif

#ifdef TEST_ASAN
/* Fake stacks on: killed coroutines then park one in c->asan_fake, and
 * rusm__coro_release() must free it (the reap path in coro.c). */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "detect_stack_use_after_return=1";
}
#endif

#define STACK_SIZE (64 * 1024)

static size_t page_size(void) { return (size_t)getpagesize(); }

/* Destroys a pool all of whose stacks came back: nothing stays mapped. */
#define pool_done(p)                                                           \
  do {                                                                         \
    rusm__stack_pool_destroy(p);                                               \
    assert_int_equal((p)->mapped, 0);                                          \
  } while (0)

/* Keeps a buffer (and its redzones, under ASan) alive and written. */
__attribute__((noinline)) static void touch(volatile char *p, size_t n, int v) {
  for (size_t i = 0; i < n; i++)
    p[i] = (char)(v + (int)i);
}

/* ------------------------------------------------------------------ */
/* Helpers in assembly: register sentinels and the caller's rsp        */
/* ------------------------------------------------------------------ */

/*
 * test_clobber_call(fn, a, b, seed, out): loads rbx, rbp, r12-r15 with
 * seed+1 .. seed+6, calls fn(a, b), then stores what those registers hold
 * afterwards into out[0..5]. fn may switch stacks any number of times.
 */
__attribute__((visibility("hidden"))) void
test_clobber_call(void (*fn)(void *, void *), void *a, void *b, uint64_t seed,
                  uint64_t out[6]);
/* Returns the caller's rsp at its call instruction (16-aligned by ABI). */
__attribute__((visibility("hidden"))) uintptr_t test_caller_rsp(void);

__asm__(".text\n"
        ".globl test_clobber_call\n"
        ".hidden test_clobber_call\n"
        ".type test_clobber_call, @function\n"
        "test_clobber_call:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  pushq %r8\n" /* out; rsp is now 16-aligned */
        "  movq %rdi, %rax\n"
        "  movq %rsi, %rdi\n"
        "  movq %rdx, %rsi\n"
        "  leaq 1(%rcx), %rbx\n"
        "  leaq 2(%rcx), %rbp\n"
        "  leaq 3(%rcx), %r12\n"
        "  leaq 4(%rcx), %r13\n"
        "  leaq 5(%rcx), %r14\n"
        "  leaq 6(%rcx), %r15\n"
        "  call *%rax\n"
        "  movq (%rsp), %r8\n"
        "  movq %rbx, 0(%r8)\n"
        "  movq %rbp, 8(%r8)\n"
        "  movq %r12, 16(%r8)\n"
        "  movq %r13, 24(%r8)\n"
        "  movq %r14, 32(%r8)\n"
        "  movq %r15, 40(%r8)\n"
        "  popq %r8\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size test_clobber_call, .-test_clobber_call\n"
        ".globl test_caller_rsp\n"
        ".hidden test_caller_rsp\n"
        ".type test_caller_rsp, @function\n"
        "test_caller_rsp:\n"
        "  leaq 8(%rsp), %rax\n"
        "  ret\n"
        ".size test_caller_rsp, .-test_caller_rsp\n");

static int regs_match(const uint64_t out[6], uint64_t seed) {
  for (int i = 0; i < 6; i++)
    if (out[i] != seed + 1 + (uint64_t)i)
      return 0;
  return 1;
}

/* ------------------------------------------------------------------ */
/* Ping-pong                                                           */
/* ------------------------------------------------------------------ */

typedef struct pingpong {
  rusm__coro c;
  long in, out;
  int steps;
} pingpong;

static void pingpong_entry(void *arg) {
  pingpong *pp = arg;
  long total = 0; /* lives on the coroutine stack across switches */
  while (pp->in >= 0) {
    total += pp->in;
    pp->out = pp->in * 2 + total;
    pp->steps++;
    rusm__coro_suspend(&pp->c);
  }
  pp->out = -total;
  rusm__coro_finish(&pp->c);
}

static void test_pingpong(void **state) {
  (void)state;
  rusm__stack_pool pool;
  rusm__coro_ctx ctx;
  assert_int_equal(rusm__stack_pool_init(&pool, STACK_SIZE, 4), 0);
  rusm__coro_ctx_init(&ctx);
  rusm__stack st;
  assert_int_equal(rusm__stack_get(&pool, 0, &st), 0);
  assert_non_null(st.lo);
  assert_int_equal(st.size, STACK_SIZE);

  pingpong pp = {0};
  rusm__coro_init(&pp.c, st, pingpong_entry, &pp);
  long total = 0;
  for (long i = 0; i < 1000; i++) {
    pp.in = i;
    rusm__coro_resume(&pp.c, &ctx);
    total += i;
    assert_int_equal(pp.out, i * 2 + total);
    assert_int_equal(pp.steps, i + 1);
    assert_false(pp.c.finished);
  }
  pp.in = -1;
  rusm__coro_resume(&pp.c, &ctx);
  assert_true(pp.c.finished);
  assert_int_equal(pp.out, -total);

  rusm__coro_release(&pp.c);
  rusm__stack_put(&pool, &pp.c.stack);
  assert_int_equal(pool.count, 1);
  pool_done(&pool);
}

/* ------------------------------------------------------------------ */
/* Many coroutines interleaved on one thread                           */
/* ------------------------------------------------------------------ */

#define INTERLEAVE_N 64
#define INTERLEAVE_STEPS 25

typedef struct interleave {
  rusm__coro c;
  int id;
  int *log;
  size_t *log_len;
} interleave;

static void interleave_entry(void *arg) {
  interleave *w = arg;
  uint32_t mine[32]; /* private stack data that must survive switches */
  for (int i = 0; i < 32; i++)
    mine[i] = (uint32_t)(w->id * 1000 + i);
  for (int step = 0; step < INTERLEAVE_STEPS; step++) {
    for (int i = 0; i < 32; i++)
      if (mine[i] != (uint32_t)(w->id * 1000 + i))
        w->log[(*w->log_len)++] = -1;
    w->log[(*w->log_len)++] = w->id;
    rusm__coro_suspend(&w->c);
  }
  rusm__coro_finish(&w->c);
}

static void test_interleave(void **state) {
  (void)state;
  rusm__stack_pool pool;
  rusm__coro_ctx ctx;
  assert_int_equal(rusm__stack_pool_init(&pool, STACK_SIZE, INTERLEAVE_N), 0);
  rusm__coro_ctx_init(&ctx);

  static interleave w[INTERLEAVE_N];
  static int log[INTERLEAVE_N * INTERLEAVE_STEPS + INTERLEAVE_N];
  size_t log_len = 0;
  for (int i = 0; i < INTERLEAVE_N; i++) {
    rusm__stack st;
    assert_int_equal(rusm__stack_get(&pool, STACK_SIZE, &st), 0);
    w[i].id = i;
    w[i].log = log;
    w[i].log_len = &log_len;
    rusm__coro_init(&w[i].c, st, interleave_entry, &w[i]);
  }
  assert_int_equal(pool.mapped, INTERLEAVE_N);

  int live = INTERLEAVE_N;
  while (live > 0) {
    live = 0;
    for (int i = 0; i < INTERLEAVE_N; i++) {
      if (w[i].c.finished)
        continue;
      rusm__coro_resume(&w[i].c, &ctx);
      live += !w[i].c.finished;
    }
  }
  assert_int_equal(log_len, INTERLEAVE_N * INTERLEAVE_STEPS);
  for (size_t k = 0; k < log_len; k++)
    assert_int_equal(log[k], (int)(k % INTERLEAVE_N));

  for (int i = 0; i < INTERLEAVE_N; i++) {
    rusm__coro_release(&w[i].c);
    rusm__stack_put(&pool, &w[i].c.stack);
  }
  assert_int_equal(pool.count, INTERLEAVE_N);
  assert_int_equal(pool.mapped, INTERLEAVE_N);
  pool_done(&pool);
}

/* ------------------------------------------------------------------ */
/* Callee-saved registers                                              */
/* ------------------------------------------------------------------ */

#define SEED_SCHED UINT64_C(0x5ced000000000000)
#define SEED_CORO UINT64_C(0xc0c0000000000000)
#define REG_ROUNDS 50

typedef struct regs_test {
  rusm__coro c;
  rusm__coro_ctx *ctx;
  int bad; /* rounds where the coroutine saw a clobbered register */
} regs_test;

static void do_suspend(void *c, void *unused) {
  (void)unused;
  rusm__coro_suspend(c);
}

static void do_resume(void *c, void *ctx) { rusm__coro_resume(c, ctx); }

static void regs_entry(void *arg) {
  regs_test *t = arg;
  for (uint64_t i = 0; i < REG_ROUNDS; i++) {
    uint64_t out[6];
    test_clobber_call(do_suspend, &t->c, NULL, SEED_CORO + i * 16, out);
    t->bad += !regs_match(out, SEED_CORO + i * 16);
  }
  rusm__coro_finish(&t->c);
}

static void test_callee_saved_registers(void **state) {
  (void)state;
  rusm__stack_pool pool;
  rusm__coro_ctx ctx;
  assert_int_equal(rusm__stack_pool_init(&pool, STACK_SIZE, 1), 0);
  rusm__coro_ctx_init(&ctx);
  rusm__stack st;
  assert_int_equal(rusm__stack_get(&pool, 0, &st), 0);
  regs_test t = {.ctx = &ctx};
  rusm__coro_init(&t.c, st, regs_entry, &t);

  uint64_t i = 0;
  while (!t.c.finished) {
    uint64_t out[6];
    test_clobber_call(do_resume, &t.c, &ctx, SEED_SCHED + i * 16, out);
    assert_true(regs_match(out, SEED_SCHED + i * 16));
    i++;
  }
  assert_int_equal(i, REG_ROUNDS + 1);
  assert_int_equal(t.bad, 0);
  rusm__coro_release(&t.c);
  rusm__stack_put(&pool, &t.c.stack);
  pool_done(&pool);
}

/* ------------------------------------------------------------------ */
/* Floating-point control state                                        */
/* ------------------------------------------------------------------ */

#define MXCSR_RC_MASK 0x6000u
#define MXCSR_RC_DOWN 0x2000u
#define MXCSR_RC_UP 0x4000u
#define X87_CW_SINGLE 0x007Fu /* precision control: 24-bit */
#define X87_CW_DOUBLE 0x027Fu /* precision control: 53-bit */
#define FP_ROUNDS 20

static uint16_t x87_cw_get(void) {
  uint16_t cw;
  __asm__ volatile("fnstcw %0" : "=m"(cw));
  return cw;
}

static void x87_cw_set(uint16_t cw) { __asm__ volatile("fldcw %0" ::"m"(cw)); }

static double third(void) {
  volatile double one = 1.0, three = 3.0;
  return one / three;
}

typedef struct fp_test {
  rusm__coro c;
  unsigned initial_mxcsr;
  uint16_t initial_cw;
  int bad;
  double q;
} fp_test;

static void fp_entry(void *arg) {
  fp_test *t = arg;
  t->initial_mxcsr = _mm_getcsr();
  t->initial_cw = x87_cw_get();
  _mm_setcsr((_mm_getcsr() & ~MXCSR_RC_MASK) | MXCSR_RC_UP);
  x87_cw_set(X87_CW_SINGLE);
  t->q = third();
  for (int i = 0; i < FP_ROUNDS; i++) {
    rusm__coro_suspend(&t->c);
    t->bad += (_mm_getcsr() & MXCSR_RC_MASK) != MXCSR_RC_UP;
    t->bad += x87_cw_get() != X87_CW_SINGLE;
    t->bad += third() != t->q;
  }
  rusm__coro_finish(&t->c);
}

static void test_fp_state(void **state) {
  (void)state;
  unsigned saved_mxcsr = _mm_getcsr();
  uint16_t saved_cw = x87_cw_get();

  rusm__stack_pool pool;
  rusm__coro_ctx ctx;
  assert_int_equal(rusm__stack_pool_init(&pool, STACK_SIZE, 1), 0);
  rusm__coro_ctx_init(&ctx);
  rusm__stack st;
  assert_int_equal(rusm__stack_get(&pool, 0, &st), 0);
  fp_test t = {0};
  rusm__coro_init(&t.c, st, fp_entry, &t);

  _mm_setcsr((saved_mxcsr & ~MXCSR_RC_MASK) | MXCSR_RC_DOWN);
  x87_cw_set(X87_CW_DOUBLE);
  double q_down = third();
  int rounds = 0;
  while (!t.c.finished) {
    rusm__coro_resume(&t.c, &ctx);
    assert_int_equal(_mm_getcsr() & MXCSR_RC_MASK, MXCSR_RC_DOWN);
    assert_int_equal(x87_cw_get(), X87_CW_DOUBLE);
    assert_true(third() == q_down);
    rounds++;
  }
  _mm_setcsr(saved_mxcsr);
  x87_cw_set(saved_cw);

  assert_int_equal(rounds, FP_ROUNDS + 1);
  /* A new coroutine starts from the ABI defaults, not the creator's. */
  assert_int_equal(t.initial_mxcsr, 0x1F80);
  assert_int_equal(t.initial_cw, 0x037F);
  assert_int_equal(t.bad, 0);
  assert_true(t.q > q_down); /* rounded up vs down: the modes differed */

  rusm__coro_release(&t.c);
  rusm__stack_put(&pool, &t.c.stack);
  pool_done(&pool);
}

/* ------------------------------------------------------------------ */
/* Stack alignment at entry                                            */
/* ------------------------------------------------------------------ */

typedef struct align_test {
  rusm__coro c;
  uintptr_t frame, call_rsp, vec_addr;
  long double ld;
  float vsum;
} align_test;

/* long double arguments are passed in 16-aligned stack slots. */
__attribute__((noinline)) static long double ld_mix(long double a,
                                                    long double b) {
  return a * b + (long double)(((uintptr_t)&a & 15) + ((uintptr_t)&b & 15));
}

/* movaps to a stack slot: faults if the stack is misaligned. */
__attribute__((noinline)) static float vec_sum(float x, uintptr_t *addr) {
  volatile __m128 v = _mm_set1_ps(x);
  *addr = (uintptr_t)&v;
  __m128 w = _mm_add_ps(v, v);
  float out[4];
  _mm_storeu_ps(out, w);
  return out[0] + out[1] + out[2] + out[3];
}

static void align_entry(void *arg) {
  align_test *t = arg;
  /* The frame pointer is entry rsp - 8: aligned iff entry rsp + 8 is. */
  t->frame = (uintptr_t)__builtin_frame_address(0);
  t->call_rsp = test_caller_rsp();
  t->ld = ld_mix(1.5L, 2.0L);
  t->vsum = vec_sum(1.25f, &t->vec_addr);
  rusm__coro_finish(&t->c);
}

static void test_stack_alignment(void **state) {
  (void)state;
  rusm__stack_pool pool;
  rusm__coro_ctx ctx;
  assert_int_equal(rusm__stack_pool_init(&pool, STACK_SIZE, 1), 0);
  rusm__coro_ctx_init(&ctx);
  rusm__stack st;
  assert_int_equal(rusm__stack_get(&pool, 0, &st), 0);
  align_test t = {0};
  rusm__coro_init(&t.c, st, align_entry, &t);
  rusm__coro_resume(&t.c, &ctx);
  assert_true(t.c.finished);
  assert_int_equal(t.frame % 16, 0);
  assert_int_equal(t.call_rsp % 16, 0);
  assert_int_equal(t.vec_addr % 16, 0);
  assert_true(t.ld == 3.0L); /* both arguments were 16-aligned */
  assert_true(t.vsum == 10.0f);
  /* ...and it all ran on the coroutine's stack. */
  assert_true(t.frame > (uintptr_t)st.lo &&
              t.frame < (uintptr_t)st.lo + st.size);
  rusm__coro_release(&t.c);
  rusm__stack_put(&pool, &t.c.stack);
  pool_done(&pool);
}

/* ------------------------------------------------------------------ */
/* Abandoned (killed) coroutines                                       */
/* ------------------------------------------------------------------ */

typedef struct deep_test {
  rusm__coro c;
  int depth;
  int done;
} deep_test;

/* Recurses with address-taken buffers, fixed and variable-length (ASan
 * redzones on each frame; under detect_stack_use_after_return the fixed
 * ones live on a fake stack), then parks at the bottom, never to return. */
__attribute__((noinline)) static int park_deep(deep_test *t, int level) {
  char fixed[64];
  char buf[200 + 8 * (level % 5)];
  touch(fixed, sizeof(fixed), level);
  touch(buf, sizeof(buf), level);
  if (level == t->depth) {
    while (!t->done) /* never set: it is killed here */
      rusm__coro_suspend(&t->c);
    return buf[0];
  }
  return park_deep(t, level + 1) + buf[level % sizeof(buf)] + fixed[3];
}

static void park_entry(void *arg) {
  deep_test *t = arg;
  park_deep(t, 0);
  rusm__coro_finish(&t->c);
}

/* Frames of different sizes over the same stack memory. */
__attribute__((noinline)) static int walk_deep(int level, int depth) {
  char buf[320 + 16 * (level % 3)];
  touch(buf, sizeof(buf), -level);
  if (level == depth)
    return buf[7];
  return walk_deep(level + 1, depth) + buf[level % sizeof(buf)];
}

static void walk_entry(void *arg) {
  deep_test *t = arg;
  walk_deep(0, t->depth);
  t->done = 1;
  rusm__coro_finish(&t->c);
}

static void test_abandoned_reuse(void **state) {
  (void)state;
  rusm__stack_pool pool;
  rusm__coro_ctx ctx;
  assert_int_equal(rusm__stack_pool_init(&pool, STACK_SIZE, 2), 0);
  rusm__coro_ctx_init(&ctx);

  /* Kill several times over the same stack, as a busy scheduler would. */
  void *first_map = NULL;
  for (int round = 0; round < 4; round++) {
    rusm__stack st;
    assert_int_equal(rusm__stack_get(&pool, 0, &st), 0);
    if (round == 0)
      first_map = st.map;
    assert_ptr_equal(st.map, first_map);

    deep_test killed = {.depth = 20 + round};
    rusm__coro_init(&killed.c, st, park_entry, &killed);
    rusm__coro_resume(&killed.c, &ctx);
    rusm__coro_resume(&killed.c, &ctx); /* suspended deep, twice */
    assert_false(killed.c.finished);
    rusm__coro_release(&killed.c); /* never resumed again */
    rusm__stack_put(&pool, &killed.c.stack);
    assert_int_equal(pool.count, 1);

    assert_int_equal(rusm__stack_get(&pool, 0, &st), 0);
    assert_ptr_equal(st.map, first_map);
    deep_test next = {.depth = 30};
    rusm__coro_init(&next.c, st, walk_entry, &next);
    rusm__coro_resume(&next.c, &ctx);
    assert_true(next.c.finished);
    assert_int_equal(next.done, 1);
    rusm__coro_release(&next.c);
    rusm__stack_put(&pool, &next.c.stack);
  }
  assert_int_equal(pool.mapped, 1);
  pool_done(&pool);
}

/* A killed process's resources are found through a side list its owner
 * keeps, never by unwinding its stack. */
typedef struct side_test {
  rusm__coro c;
  void *owned[8];
  int n;
} side_test;

static void side_entry(void *arg) {
  side_test *t = arg;
  for (;;) {
    char *p = malloc(64 + (size_t)t->n);
    assert_non_null(p);
    memset(p, 0xab, 64);
    t->owned[t->n++] = p; /* registered before it can be killed */
    rusm__coro_suspend(&t->c);
    if (t->n == 8)
      for (;;)
        rusm__coro_suspend(&t->c);
  }
}

static void test_abandoned_side_list(void **state) {
  (void)state;
  rusm__stack_pool pool;
  rusm__coro_ctx ctx;
  assert_int_equal(rusm__stack_pool_init(&pool, STACK_SIZE, 1), 0);
  rusm__coro_ctx_init(&ctx);
  rusm__stack st;
  assert_int_equal(rusm__stack_get(&pool, 0, &st), 0);
  side_test t = {0};
  rusm__coro_init(&t.c, st, side_entry, &t);
  for (int i = 0; i < 5; i++)
    rusm__coro_resume(&t.c, &ctx);
  assert_int_equal(t.n, 5);

  /* Kill: free what it registered, drop the coroutine. LSan checks. */
  for (int i = 0; i < t.n; i++)
    free(t.owned[i]);
  rusm__coro_release(&t.c);
  rusm__stack_put(&pool, &t.c.stack);

  /* A coroutine that never ran can be released as well. */
  assert_int_equal(rusm__stack_get(&pool, 0, &st), 0);
  side_test idle = {0};
  rusm__coro_init(&idle.c, st, side_entry, &idle);
  rusm__coro_release(&idle.c);
  rusm__stack_put(&pool, &idle.c.stack);
  assert_int_equal(idle.n, 0);
  pool_done(&pool);
}

/* ------------------------------------------------------------------ */
/* Stack pool                                                          */
/* ------------------------------------------------------------------ */

static void test_pool_reuse(void **state) {
  (void)state;
  rusm__stack_pool pool;
  /* Rounded up to pages. */
  assert_int_equal(rusm__stack_pool_init(&pool, 10000, 4), 0);
  size_t pg = page_size();
  assert_int_equal(pool.size, (10000 + pg - 1) / pg * pg);

  rusm__stack a;
  assert_int_equal(rusm__stack_get(&pool, 0, &a), 0);
  assert_int_equal(a.size, pool.size);
  assert_int_equal(a.map_len, a.size + pg);
  assert_ptr_equal((char *)a.map + pg, a.lo);
  memset(a.lo, 1, a.size); /* the whole usable range is writable */
  void *map = a.map;
  assert_int_equal(pool.mapped, 1);

  rusm__stack_put(&pool, &a);
  assert_null(a.map); /* the caller's copy is cleared */
  assert_int_equal(pool.count, 1);
  assert_int_equal(pool.mapped, 1);

  rusm__stack b;
  assert_int_equal(rusm__stack_get(&pool, 10000, &b), 0); /* same size */
  assert_ptr_equal(b.map, map);
  assert_int_equal(pool.count, 0);
  assert_int_equal(pool.mapped, 1);

  /* Another size is never served from (or kept in) the cache. */
  rusm__stack big;
  assert_int_equal(rusm__stack_get(&pool, 4 * pool.size, &big), 0);
  assert_int_equal(big.size, 4 * pool.size);
  assert_int_equal(pool.mapped, 2);
  rusm__stack_put(&pool, &big);
  assert_int_equal(pool.count, 0);
  assert_int_equal(pool.mapped, 1);

  rusm__stack_put(&pool, &b);
  rusm__stack empty = {0};
  rusm__stack_put(&pool, &empty); /* no stack: no-op */
  assert_int_equal(pool.count, 1);
  rusm__stack_pool_destroy(&pool);
  assert_int_equal(pool.mapped, 0);
}

#define CAP_TEST_N 40

static void test_pool_cap(void **state) {
  (void)state;
  rusm__stack_pool pool;
  assert_int_equal(rusm__stack_pool_init(&pool, 16 * 1024, 2), 0);
  rusm__stack s[4];
  for (int i = 0; i < 4; i++)
    assert_int_equal(rusm__stack_get(&pool, 0, &s[i]), 0);
  assert_int_equal(pool.mapped, 4);
  for (int i = 0; i < 4; i++)
    rusm__stack_put(&pool, &s[i]);
  assert_int_equal(pool.count, 2); /* beyond cap: unmapped */
  assert_int_equal(pool.mapped, 2);
  pool_done(&pool);

  /* A burst past the hot set: those pages are given back, and the
   * stacks are still good when handed out again. */
  static rusm__stack b[CAP_TEST_N];
  assert_int_equal(rusm__stack_pool_init(&pool, 16 * 1024, CAP_TEST_N), 0);
  for (int i = 0; i < CAP_TEST_N; i++) {
    assert_int_equal(rusm__stack_get(&pool, 0, &b[i]), 0);
    memset(b[i].lo, 0x5a, b[i].size);
  }
  for (int i = 0; i < CAP_TEST_N; i++)
    rusm__stack_put(&pool, &b[i]);
  assert_int_equal(pool.count, CAP_TEST_N);
  for (int i = 0; i < CAP_TEST_N; i++) {
    assert_int_equal(rusm__stack_get(&pool, 0, &b[i]), 0);
    memset(b[i].lo, 0x33, b[i].size);
    assert_int_equal(((unsigned char *)b[i].lo)[b[i].size - 1], 0x33);
  }
  assert_int_equal(pool.mapped, CAP_TEST_N);
  for (int i = 0; i < CAP_TEST_N; i++)
    rusm__stack_put(&pool, &b[i]);
  pool_done(&pool);

  /* cap 0: nothing is cached. */
  assert_int_equal(rusm__stack_pool_init(&pool, 16 * 1024, 0), 0);
  assert_int_equal(rusm__stack_get(&pool, 0, &s[0]), 0);
  rusm__stack_put(&pool, &s[0]);
  assert_int_equal(pool.count, 0);
  assert_int_equal(pool.mapped, 0);
  pool_done(&pool);
}

static void test_pool_enomem(void **state) {
  (void)state;
  rusm__stack_pool pool;
  assert_int_equal(rusm__stack_pool_init(&pool, 0, 1), RUSM_EINVAL);
  assert_int_equal(rusm__stack_pool_init(&pool, SIZE_MAX, 1), RUSM_ENOMEM);
  assert_int_equal(rusm__stack_pool_init(&pool, STACK_SIZE, 1), 0);

  rusm__stack s = {0};
  /* Far beyond the address space: mmap fails, nothing aborts. */
  assert_int_equal(rusm__stack_get(&pool, SIZE_MAX / 2, &s), RUSM_ENOMEM);
  assert_int_equal(rusm__stack_get(&pool, SIZE_MAX, &s), RUSM_ENOMEM);
  assert_int_equal(rusm__stack_get(&pool, SIZE_MAX - 100, &s), RUSM_ENOMEM);
  assert_null(s.map);
  assert_int_equal(pool.mapped, 0);

  /* The pool still works afterwards. */
  assert_int_equal(rusm__stack_get(&pool, 0, &s), 0);
  rusm__stack_put(&pool, &s);
  pool_done(&pool);
}

/* A migrated process puts its stack into another scheduler's pool: each
 * pool's count drifts, their sum stays exact. */
static void test_pool_cross(void **state) {
  (void)state;
  rusm__stack_pool a, b;
  assert_int_equal(rusm__stack_pool_init(&a, STACK_SIZE, 4), 0);
  assert_int_equal(rusm__stack_pool_init(&b, STACK_SIZE, 1), 0);
  rusm__stack s[3];
  for (int i = 0; i < 3; i++)
    assert_int_equal(rusm__stack_get(&a, 0, &s[i]), 0);
  void *first = s[0].map;
  for (int i = 0; i < 3; i++)
    rusm__stack_put(&b, &s[i]); /* one cached in b, two unmapped */
  assert_int_equal(a.mapped, 3);
  assert_int_equal(b.mapped, -2);
  assert_int_equal(b.count, 1);
  assert_int_equal(rusm__stack_get(&b, 0, &s[0]), 0); /* b reuses a's */
  assert_ptr_equal(s[0].map, first);
  rusm__stack_put(&b, &s[0]);
  rusm__stack_pool_destroy(&a);
  rusm__stack_pool_destroy(&b);
  assert_int_equal(a.mapped + b.mapped, 0);
}

/* ------------------------------------------------------------------ */
/* Migration between threads                                           */
/* ------------------------------------------------------------------ */

#define MIG_N 16
#define MIG_ROUNDS 20 /* hand-offs each way */
#define MIG_TIMEOUT_S 60

typedef struct mig {
  rusm__coro c;
  int id;
  int runner; /* set by the scheduler thread before each resume */
  int stop;   /* set before the last resume */
  int steps;
  int runners[2 * MIG_ROUNDS + 1];
  pid_t tids[2 * MIG_ROUNDS + 1];
  int bad;
} mig;

typedef struct handoff {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int turn; /* 0: main thread, 1: worker, 2: worker must exit */
  int timed_out;
  int unfinished;        /* seen by the worker after its last round */
  int64_t worker_mapped; /* its pool's count after destroy */
  mig *m;
} handoff;

static void mig_entry(void *arg) {
  mig *m = arg;
  uint64_t local[16]; /* stack data carried from thread to thread */
  for (int i = 0; i < 16; i++)
    local[i] = (uint64_t)m->id << 32 | (uint64_t)i;
  for (;;) {
    for (int i = 0; i < 16; i++)
      m->bad += local[i] != ((uint64_t)m->id << 32 | (uint64_t)i);
    m->runners[m->steps] = m->runner;
    m->tids[m->steps] = gettid(); /* a syscall: never cached */
    m->steps++;
    if (m->stop)
      rusm__coro_finish(&m->c);
    rusm__coro_suspend(&m->c);
  }
}

/* Waits until h->turn is `want` or 2; 0, or -1 on timeout. */
static int wait_turn(handoff *h, int want) {
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += MIG_TIMEOUT_S;
  int rc = 0;
  pthread_mutex_lock(&h->mu);
  while (h->turn != want && h->turn != 2 && rc == 0) {
    int err = pthread_cond_timedwait(&h->cv, &h->mu, &deadline);
    if (err == ETIMEDOUT)
      rc = -1;
  }
  pthread_mutex_unlock(&h->mu);
  return rc;
}

static void give_turn(handoff *h, int to) {
  pthread_mutex_lock(&h->mu);
  h->turn = to;
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
}

static void mig_run(mig *m, rusm__coro_ctx *ctx, int who, int first, int last) {
  for (int i = 0; i < MIG_N; i++) {
    /* Odd ones are created here but first run on the worker. */
    if (first && (i & 1))
      continue;
    m[i].runner = who;
    m[i].stop = last;
    rusm__coro_resume(&m[i].c, ctx);
  }
}

/* The worker plays a second scheduler with its own pool: coroutines
 * finish here and their stacks go into this pool, as after a steal. */
static void *mig_worker(void *arg) {
  handoff *h = arg;
  rusm__coro_ctx ctx;
  rusm__stack_pool pool;
  rusm__coro_ctx_init(&ctx);
  if (rusm__stack_pool_init(&pool, STACK_SIZE, MIG_N / 2) != 0) {
    h->timed_out = 1; /* reported as a failure by the main thread */
    give_turn(h, 0);
    return NULL;
  }
  for (int round = 0;; round++) {
    if (wait_turn(h, 1) != 0) {
      h->timed_out = 1;
      break;
    }
    pthread_mutex_lock(&h->mu);
    int turn = h->turn;
    pthread_mutex_unlock(&h->mu);
    if (turn == 2)
      break;
    int last = round == MIG_ROUNDS - 1;
    mig_run(h->m, &ctx, 1, 0, last);
    for (int i = 0; last && i < MIG_N; i++) {
      h->unfinished += !h->m[i].c.finished;
      rusm__coro_release(&h->m[i].c);
      rusm__stack_put(&pool, &h->m[i].c.stack);
    }
    give_turn(h, 0);
  }
  rusm__stack_pool_destroy(&pool);
  h->worker_mapped = pool.mapped;
  return NULL;
}

static void test_migrate_threads(void **state) {
  (void)state;
  rusm__stack_pool pool;
  rusm__coro_ctx ctx;
  assert_int_equal(rusm__stack_pool_init(&pool, STACK_SIZE, MIG_N), 0);
  rusm__coro_ctx_init(&ctx);

  static mig m[MIG_N];
  memset(m, 0, sizeof(m));
  for (int i = 0; i < MIG_N; i++) {
    rusm__stack st;
    assert_int_equal(rusm__stack_get(&pool, 0, &st), 0);
    m[i].id = i;
    rusm__coro_init(&m[i].c, st, mig_entry, &m[i]);
  }

  handoff h = {.turn = 0, .m = m};
  pthread_mutex_init(&h.mu, NULL);
  pthread_cond_init(&h.cv, NULL);
  pthread_t worker;
  assert_int_equal(pthread_create(&worker, NULL, mig_worker, &h), 0);

  pid_t main_tid = gettid();
  int timed_out = 0;
  for (int round = 0; round < MIG_ROUNDS && !timed_out; round++) {
    mig_run(m, &ctx, 0, round == 0, 0);
    give_turn(&h, 1);
    timed_out = wait_turn(&h, 0) != 0;
  }
  give_turn(&h, 2);
  pthread_join(worker, NULL);
  assert_false(timed_out);
  assert_false(h.timed_out);

  assert_int_equal(h.unfinished, 0);
  for (int i = 0; i < MIG_N; i++) {
    assert_true(m[i].c.finished);
    assert_null(m[i].c.stack.map); /* put back by the worker */
    assert_int_equal(m[i].bad, 0);
    int even = !(i & 1);
    assert_int_equal(m[i].steps, 2 * MIG_ROUNDS - !even);
    for (int s = 0; s < m[i].steps; s++) {
      int who = even ? (s & 1) : !(s & 1);
      assert_int_equal(m[i].runners[s], who);
      if (who == 0)
        assert_int_equal(m[i].tids[s], main_tid);
      else
        assert_int_not_equal(m[i].tids[s], main_tid);
    }
  }
  pthread_cond_destroy(&h.cv);
  pthread_mutex_destroy(&h.mu);
  rusm__stack_pool_destroy(&pool);
  assert_int_equal(pool.mapped + h.worker_mapped, 0);
}

/* ------------------------------------------------------------------ */
/* Guard page                                                          */
/* ------------------------------------------------------------------ */

static volatile int g_recursion_limit = 1 << 30;
static uintptr_t g_guard_lo, g_guard_hi;

__attribute__((noinline)) static int overflow(int depth) {
  volatile char pad[512];
  pad[0] = (char)depth;
  pad[511] = (char)depth;
  if (depth > g_recursion_limit)
    return 0;
  return overflow(depth + 1) + pad[0] + pad[511];
}

static void overflow_entry(void *arg) {
  rusm__coro *c = arg;
  overflow(0);
  rusm__coro_finish(c);
}

/* Lets the fault through (default action: killed by SIGSEGV) only if it
 * hit the guard page; anything else is a different failure. */
static void guard_handler(int sig, siginfo_t *info, void *uctx) {
  (void)sig;
  (void)uctx;
  uintptr_t addr = (uintptr_t)info->si_addr;
  if (addr < g_guard_lo || addr >= g_guard_hi)
    _exit(3);
  /* SA_RESETHAND restored SIG_DFL: the retried access kills us. */
}

static void test_guard_page(void **state) {
  (void)state;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    static char altstack[64 * 1024];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof(altstack)};
    if (sigaltstack(&ss, NULL) != 0)
      _exit(4);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = guard_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0)
      _exit(5);

    rusm__stack_pool pool;
    rusm__coro_ctx ctx;
    rusm__stack st;
    static rusm__coro c;
    if (rusm__stack_pool_init(&pool, 32 * 1024, 1) != 0 ||
        rusm__stack_get(&pool, 0, &st) != 0)
      _exit(6);
    g_guard_lo = (uintptr_t)st.map;
    g_guard_hi = (uintptr_t)st.lo;
    rusm__coro_ctx_init(&ctx);
    rusm__coro_init(&c, st, overflow_entry, &c);
    rusm__coro_resume(&c, &ctx);
    _exit(7); /* the recursion came back: no guard */
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (WIFEXITED(status))
    print_message("guard child exited with %d\n", WEXITSTATUS(status));
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGSEGV);
}

/* ------------------------------------------------------------------ */
/* Cost of a round trip (reported, never asserted)                     */
/* ------------------------------------------------------------------ */

typedef struct bench {
  rusm__coro c;
  volatile int stop;
} bench;

static void bench_entry(void *arg) {
  bench *b = arg;
  while (!b->stop)
    rusm__coro_suspend(&b->c);
  rusm__coro_finish(&b->c);
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void test_roundtrip_cost(void **state) {
  (void)state;
#if defined(TEST_ASAN) || defined(TEST_TSAN)
  const long iters = 200000; /* sanitizer builds: just exercise it */
#else
  const long iters = 10000000;
#endif
  rusm__stack_pool pool;
  rusm__coro_ctx ctx;
  assert_int_equal(rusm__stack_pool_init(&pool, STACK_SIZE, 1), 0);
  rusm__coro_ctx_init(&ctx);
  rusm__stack st;
  assert_int_equal(rusm__stack_get(&pool, 0, &st), 0);
  bench b = {0};
  rusm__coro_init(&b.c, st, bench_entry, &b);
  rusm__coro_resume(&b.c, &ctx); /* warm */

  double t0 = now_ns();
  for (long i = 0; i < iters; i++)
    rusm__coro_resume(&b.c, &ctx);
  double t1 = now_ns();
  print_message("coro resume+suspend round trip: %.1f ns (%ld iterations)\n",
                (t1 - t0) / (double)iters, iters);

  b.stop = 1;
  rusm__coro_resume(&b.c, &ctx);
  assert_true(b.c.finished);
  rusm__coro_release(&b.c);
  rusm__stack_put(&pool, &b.c.stack);
  pool_done(&pool);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pingpong),
      cmocka_unit_test(test_interleave),
      cmocka_unit_test(test_callee_saved_registers),
      cmocka_unit_test(test_fp_state),
      cmocka_unit_test(test_stack_alignment),
      cmocka_unit_test(test_abandoned_reuse),
      cmocka_unit_test(test_abandoned_side_list),
      cmocka_unit_test(test_pool_reuse),
      cmocka_unit_test(test_pool_cap),
      cmocka_unit_test(test_pool_enomem),
      cmocka_unit_test(test_pool_cross),
      cmocka_unit_test(test_guard_page),
      cmocka_unit_test(test_migrate_threads),
      cmocka_unit_test(test_roundtrip_cost),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
