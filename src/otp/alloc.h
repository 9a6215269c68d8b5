/*
 * alloc.h — the one allocation wrapper of the runtime, with accounting.
 *
 * Every runtime allocation goes through here so the observer can show what
 * the runtime holds. Counters live in a per-thread block (no shared cache
 * line on the hot path) summed on read. Frees are sized: the caller passes
 * the size it allocated, as every caller knows it.
 */
#ifndef RUSM_OTP_ALLOC_H
#define RUSM_OTP_ALLOC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rusm__alloc_stats {
  int64_t bytes; /* bytes allocated now (may be negative per thread) */
  int64_t count; /* allocations live now */
} rusm__alloc_stats;

/* NULL on failure. Zeroed memory where the name says so. */
void *rusm__alloc(size_t size);
void *rusm__calloc(size_t n, size_t size);
/* size must be a multiple of align, align a power of two >= sizeof(void*). */
void *rusm__alloc_aligned(size_t align, size_t size);
void rusm__free(void *ptr, size_t size);

/* Unsized variants for modules that keep no sizes (supervisor tables):
 * a 16-byte header remembers the size. Same accounting, same fault
 * injection. rusm__xfree(NULL) is a no-op. */
void *rusm__xmalloc(size_t size);
void *rusm__xcalloc(size_t n, size_t size);
void *rusm__xrealloc(void *ptr, size_t size);
void rusm__xfree(void *ptr);

/* Test hook (fault injection): after `after` more successful runtime
 * allocations, every allocation fails until reset with -1. Costs one
 * relaxed load per allocation when off. */
void rusm__test_fail_allocs(int64_t after);
/* Test hook: only the allocation after `after` more fails (a transient
 * shortage), then allocations work again. */
void rusm__test_fail_one_alloc(int64_t after);

/* Sum over every thread that ever allocated. */
void rusm__alloc_totals(rusm__alloc_stats *out);

#endif

/*
 * Small-object pool for messages and other short-lived blocks: size
 * classes of 64, 128, 256 and 512 bytes with a per-thread free list and a
 * global depot of magazines (batches), so a block freed on the receiver's
 * thread finds its way back to senders without a malloc arena lock.
 * Larger sizes fall through to rusm__alloc. Free with the same size.
 */
void *rusm__pool_alloc(size_t size);
void rusm__pool_free(void *ptr, size_t size);
