/*
 * coro.h — stackful coroutines for stackful process bodies (internal).
 *
 * A hand-written x86-64 context switch (coro_x86_64.S) saves only the
 * callee-saved registers, MXCSR and the x87 control word: no signal-mask
 * syscall (ucontext costs ~0.5 us for it). Stacks come from a per-scheduler
 * pool; each has a PROT_NONE guard page below it. The switch is annotated
 * for AddressSanitizer (__sanitizer_start/finish_switch_fiber) and
 * ThreadSanitizer (__tsan_*_fiber) so both work across switches.
 *
 * Memory-mapping cost: a stack is one mmap with a guard page, i.e. two
 * kernel mappings (VMAs) while in use or cached.
 */
#ifndef RUSM_OTP_CORO_H
#define RUSM_OTP_CORO_H

#include <stddef.h>
#include <stdint.h>

typedef struct rusm__stack {
  void *map;      /* start of the mapping (the guard page), NULL if none */
  size_t map_len; /* guard + usable */
  void *lo;       /* lowest usable byte (just above the guard) */
  size_t size;    /* usable bytes; stack grows down from lo + size */
} rusm__stack;

/* A per-scheduler cache of stacks (not thread-safe: one owner thread). */
typedef struct rusm__stack_pool {
  rusm__stack *cache; /* cached stacks, all of size `size` */
  size_t count, cap;
  size_t size; /* usable size of cached stacks */
  /* stacks this pool mapped minus those it unmapped. A stack may be put
   * back into another scheduler's pool (its process migrated), so only
   * the sum over all pools is meaningful: 0 once every pool is
   * destroyed, which rusm_rt_destroy asserts. */
  int64_t mapped;
} rusm__stack_pool;

/* cap: how many free stacks to keep mapped for reuse. */
int rusm__stack_pool_init(rusm__stack_pool *p, size_t stack_size, size_t cap);
/* Unmaps every cached stack (and counts them unmapped). */
void rusm__stack_pool_destroy(rusm__stack_pool *p);
/* A stack of at least `size` usable bytes (rounded up to pages). Reuses a
 * cached one when sizes match. Returns 0 or RUSM_ENOMEM (mmap failed,
 * e.g. vm.max_map_count reached). */
int rusm__stack_get(rusm__stack_pool *p, size_t size, rusm__stack *out);
/* Returns a stack: cached if there is room (its pages may be released
 * with MADV_DONTNEED past a high-water mark), else unmapped. Also clears
 * sanitizer poisoning left by frames that never returned (a killed
 * coroutine). */
void rusm__stack_put(rusm__stack_pool *p, rusm__stack *s);

/* The scheduler side of switches: one per scheduler thread. */
typedef struct rusm__coro_ctx {
  void *sp;             /* saved stack pointer of the scheduler */
  void *tsan_fiber;     /* the thread's own TSan fiber */
  const void *stack_lo; /* the thread's stack bounds, for ASan */
  size_t stack_size;
} rusm__coro_ctx;

struct rusm__coro {
  void *sp; /* saved stack pointer of the coroutine */
  rusm__coro_ctx *caller;
  rusm__stack stack;
  void (*entry)(void *arg);
  void *arg;
  void *tsan_fiber;
  void *asan_fake; /* ASan fake-stack handle across switches */
  int finished;
};

typedef struct rusm__coro rusm__coro;

/* Call once on each scheduler thread before resuming coroutines. */
void rusm__coro_ctx_init(rusm__coro_ctx *ctx);

/* Prepares c to run entry(arg) on stack. entry must never return: it
 * ends with rusm__coro_finish(). */
void rusm__coro_init(rusm__coro *c, rusm__stack stack, void (*entry)(void *arg),
                     void *arg);

/* Switches from the scheduler into c until c suspends or finishes. */
void rusm__coro_resume(rusm__coro *c, rusm__coro_ctx *from);

/* From inside c: switches back to the scheduler that resumed it; returns
 * when c is resumed again. */
void rusm__coro_suspend(rusm__coro *c);

/* From inside c: switches back for the last time; c is never resumed. */
__attribute__((noreturn)) void rusm__coro_finish(rusm__coro *c);

/* Releases sanitizer state of a coroutine that finished or will never be
 * resumed (killed). Does not free the stack: the caller puts c->stack
 * back in its pool. Must not be called from inside c. */
void rusm__coro_release(rusm__coro *c);

#endif
