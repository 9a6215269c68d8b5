/*
 * coro.c — stackful coroutines: stack pool and sanitizer-aware switches.
 * The switch itself is in coro_x86_64.S; the design note is
 * docs/internals/coro.md.
 */
#include "otp/coro.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rusm/otp.h"

/* Sanitizer detection: clang has __has_feature, gcc defines macros. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORO_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define CORO_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(CORO_ASAN)
#define CORO_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(CORO_TSAN)
#define CORO_TSAN 1
#endif

/* Declared here rather than via <sanitizer/...> so no header is needed. */
#ifdef CORO_ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom,
                                    size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save,
                                     const void **bottom_old, size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif
#ifdef CORO_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

#define CORO_HIDDEN __attribute__((visibility("hidden")))

/* coro_x86_64.S */
CORO_HIDDEN void rusm__coro_switch(void **save_sp, void *new_sp);
CORO_HIDDEN void rusm__coro_trampoline(void);
/* Called by the trampoline on the new stack, before entry(arg). */
CORO_HIDDEN void rusm__coro_boot(rusm__coro *c);

/* The initial frame, in 8-byte words from the saved sp (see the .S). */
enum {
  FRAME_CSR = 0, /* MXCSR (low half) and x87 CW (bits 32..47) */
  FRAME_R15,
  FRAME_R14,
  FRAME_R13, /* arg */
  FRAME_R12, /* entry */
  FRAME_RBX, /* the coroutine */
  FRAME_RBP,
  FRAME_RET,  /* rusm__coro_trampoline */
  FRAME_PAD0, /* rsp points here in the trampoline: 16-byte aligned */
  FRAME_PAD1,
  FRAME_WORDS
};

/* A new coroutine starts with the ABI's initial FP environment (round to
 * nearest, all exceptions masked; x87 extended precision), whatever
 * state the thread that creates or first resumes it is in. */
#define CORO_MXCSR_INIT 0x1F80u
#define CORO_X87CW_INIT 0x037Fu

/* Cached stacks beyond this many give their pages back on put, so a burst
 * of short-lived coroutines does not pin cap * size of resident memory.
 * Below it, put and get are syscall-free. */
#define CORO_POOL_HOT 16

/* ------------------------------------------------------------------ */
/* Stacks                                                              */
/* ------------------------------------------------------------------ */

/* Rounds size up to whole pages; 0 if that overflows (or leaves no room
 * for the guard page), which the callers turn into RUSM_ENOMEM. */
static size_t stack_round(size_t size) {
  size_t page = (size_t)getpagesize();
  if (size > SIZE_MAX - 2 * page)
    return 0;
  return (size + page - 1) & ~(page - 1);
}

static void stack_unpoison(const rusm__stack *s) {
#ifdef CORO_ASAN
  /* Frames of a coroutine that never returned (killed, or finished but
   * its last frames never popped) leave redzones poisoned. */
  __asan_unpoison_memory_region(s->lo, s->size);
#else
  (void)s;
#endif
}

static int stack_map(size_t size, rusm__stack *out) {
  size_t page = (size_t)getpagesize();
  size_t len = size + page;
  /* NORESERVE: stacks are sized for the worst case and mostly untouched,
   * so they should not count against overcommit. */
  void *map = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (map == MAP_FAILED)
    return RUSM_ENOMEM;
  /* The guard splits the mapping in two VMAs, which can itself fail with
   * ENOMEM once vm.max_map_count is reached. */
  if (mprotect(map, page, PROT_NONE) != 0) {
    munmap(map, len);
    return RUSM_ENOMEM;
  }
  out->map = map;
  out->map_len = len;
  out->lo = (char *)map + page;
  out->size = size;
  return 0;
}

int rusm__stack_pool_init(rusm__stack_pool *p, size_t stack_size, size_t cap) {
  memset(p, 0, sizeof(*p));
  if (stack_size == 0)
    return RUSM_EINVAL;
  size_t size = stack_round(stack_size);
  if (size == 0)
    return RUSM_ENOMEM;
  if (cap > 0) {
    p->cache = calloc(cap, sizeof(*p->cache));
    if (p->cache == NULL)
      return RUSM_ENOMEM;
  }
  p->cap = cap;
  p->size = size;
  return 0;
}

void rusm__stack_pool_destroy(rusm__stack_pool *p) {
  for (size_t i = 0; i < p->count; i++)
    munmap(p->cache[i].map, p->cache[i].map_len);
  int64_t left = p->mapped - (int64_t)p->count;
  free(p->cache);
  memset(p, 0, sizeof(*p));
  p->mapped = left; /* nonzero: stacks still in use, or moved pools */
}

int rusm__stack_get(rusm__stack_pool *p, size_t size, rusm__stack *out) {
  /* 0 means the pool's size. */
  size_t want = size == 0 ? p->size : stack_round(size);
  if (want == 0)
    return RUSM_ENOMEM;
  if (want == p->size && p->count > 0) {
    *out = p->cache[--p->count];
    stack_unpoison(out);
    return 0;
  }
  int err = stack_map(want, out);
  if (err != 0)
    return err;
  p->mapped++;
  return 0;
}

void rusm__stack_put(rusm__stack_pool *p, rusm__stack *s) {
  if (s->map == NULL)
    return;
  stack_unpoison(s);
  if (s->size == p->size && p->count < p->cap) {
    /* Past the hot set, drop the pages: the next user faults in fresh
     * zero pages. LIFO reuse hands these out first, which is fine: it
     * only happens after a burst. */
    if (p->count >= CORO_POOL_HOT)
      madvise(s->lo, s->size, MADV_DONTNEED);
    p->cache[p->count++] = *s;
  } else {
    munmap(s->map, s->map_len);
    p->mapped--;
  }
  memset(s, 0, sizeof(*s));
}

/* ------------------------------------------------------------------ */
/* Switches                                                            */
/* ------------------------------------------------------------------ */

void rusm__coro_ctx_init(rusm__coro_ctx *ctx) {
  memset(ctx, 0, sizeof(*ctx));
#ifdef CORO_TSAN
  ctx->tsan_fiber = __tsan_get_current_fiber();
#endif
#ifdef CORO_ASAN
  /* ASan needs the bounds of the stack it switches back to. If this
   * fails, rusm__coro_boot() fills them in from ASan's own view. */
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void *lo;
    size_t size;
    if (pthread_attr_getstack(&attr, &lo, &size) == 0) {
      ctx->stack_lo = lo;
      ctx->stack_size = size;
    }
    pthread_attr_destroy(&attr);
  }
#endif
}

/* Writes the frame rusm__coro_switch pops to start the trampoline. */
static void frame_init(rusm__coro *c) {
  uintptr_t top = ((uintptr_t)c->stack.lo + c->stack.size) & ~(uintptr_t)15;
  uint64_t *f = (uint64_t *)top - FRAME_WORDS;
  memset(f, 0, FRAME_WORDS * sizeof(*f));
  f[FRAME_CSR] = CORO_MXCSR_INIT | (uint64_t)CORO_X87CW_INIT << 32;
  f[FRAME_R13] = (uint64_t)(uintptr_t)c->arg;
  f[FRAME_R12] = (uint64_t)(uintptr_t)c->entry;
  f[FRAME_RBX] = (uint64_t)(uintptr_t)c;
  /* rbp = 0 and a zero "return address" above the trampoline end
   * frame-pointer walks. */
  f[FRAME_RET] = (uint64_t)(uintptr_t)rusm__coro_trampoline;
  c->sp = f;
}

void rusm__coro_init(rusm__coro *c, rusm__stack stack, void (*entry)(void *arg),
                     void *arg) {
  assert(stack.lo != NULL && stack.size >= FRAME_WORDS * sizeof(uint64_t));
  memset(c, 0, sizeof(*c));
  c->stack = stack;
  c->entry = entry;
  c->arg = arg;
  frame_init(c);
#ifdef CORO_TSAN
  c->tsan_fiber = __tsan_create_fiber(0);
#endif
}

void rusm__coro_boot(rusm__coro *c) {
#ifdef CORO_ASAN
  /* asan_fake is NULL for a new coroutine; it is the saved fake stack
   * when coro_release() reaps a killed one (see there). */
  const void *lo;
  size_t size;
  __sanitizer_finish_switch_fiber(c->asan_fake, &lo, &size);
  if (c->caller->stack_size == 0) {
    c->caller->stack_lo = lo;
    c->caller->stack_size = size;
  }
#else
  (void)c;
#endif
}

void rusm__coro_resume(rusm__coro *c, rusm__coro_ctx *from) {
  assert(!c->finished);
  c->caller = from;
#ifdef CORO_ASAN
  void *fake = NULL;
  __sanitizer_start_switch_fiber(&fake, c->stack.lo, c->stack.size);
#endif
#ifdef CORO_TSAN
  /* Flags 0: the switch synchronises, as the hand-over it models does. */
  __tsan_switch_to_fiber(c->tsan_fiber, 0);
#endif
  rusm__coro_switch(&from->sp, c->sp);
#ifdef CORO_ASAN
  __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
}

void rusm__coro_suspend(rusm__coro *c) {
  /* c->caller may differ after the switch (migrated): never reuse it. */
  rusm__coro_ctx *to = c->caller;
#ifdef CORO_ASAN
  __sanitizer_start_switch_fiber(&c->asan_fake, to->stack_lo, to->stack_size);
#endif
#ifdef CORO_TSAN
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
  rusm__coro_switch(&c->sp, to->sp);
#ifdef CORO_ASAN
  __sanitizer_finish_switch_fiber(c->asan_fake, NULL, NULL);
#endif
}

void rusm__coro_finish(rusm__coro *c) {
  rusm__coro_ctx *to = c->caller;
  c->finished = 1;
#ifdef CORO_ASAN
  /* NULL: this fiber is gone, let ASan free its fake stack. Nothing
   * below may use an address-taken local, which could live there. */
  __sanitizer_start_switch_fiber(NULL, to->stack_lo, to->stack_size);
  c->asan_fake = NULL;
#endif
#ifdef CORO_TSAN
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
  /* Saving into c->sp (not a local) for the same reason; c is still
   * alive: its owner only frees it once resume() has returned. */
  rusm__coro_switch(&c->sp, to->sp);
  __builtin_trap(); /* resumed after finishing */
}

#ifdef CORO_ASAN
static void reap_entry(void *arg) { rusm__coro_finish(arg); }

/*
 * A killed coroutine that ran with a fake stack (detect_stack_use_after_
 * return) parked the handle in c->asan_fake; only a final switch *out of*
 * that fiber with NULL frees it. So run a fresh frame on the top of the
 * abandoned stack: the trampoline's boot() reinstalls the fake stack and
 * reap_entry() leaves with rusm__coro_finish(). The old frames below are
 * overwritten, never unwound; the stack must still be mapped.
 */
static void asan_reap(rusm__coro *c) {
  rusm__coro_ctx here = {0}; /* boot() records this thread's bounds */
  /* The new frame lands where dead frames left redzones. */
  stack_unpoison(&c->stack);
  c->entry = reap_entry;
  c->arg = c;
  frame_init(c);
  rusm__coro_resume(c, &here);
}
#endif

void rusm__coro_release(rusm__coro *c) {
#ifdef CORO_ASAN
  if (!c->finished && c->asan_fake != NULL)
    asan_reap(c);
#endif
#ifdef CORO_TSAN
  if (c->tsan_fiber != NULL)
    __tsan_destroy_fiber(c->tsan_fiber);
  c->tsan_fiber = NULL;
#endif
  c->sp = NULL;
  c->caller = NULL;
}
