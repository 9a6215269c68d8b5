#include "otp/alloc.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* One block per thread, linked into a global list once and never freed
 * (a thread's counts stay meaningful after it exits: memory it allocated
 * may still be live). Only the owning thread writes a block, so the
 * counters use relaxed load + store, not read-modify-write. */
typedef struct tblock {
  _Atomic int64_t bytes;
  _Atomic int64_t count;
  struct tblock *next;
} tblock;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static tblock *g_blocks;
static _Thread_local tblock *t_block;

static tblock *my_block(void) {
  tblock *b = t_block;
  if (b)
    return b;
  b = calloc(1, sizeof *b);
  if (!b)
    return NULL; /* accounting is lost for this thread, nothing else */
  pthread_mutex_lock(&g_lock);
  b->next = g_blocks;
  g_blocks = b;
  pthread_mutex_unlock(&g_lock);
  t_block = b;
  return b;
}

static void account(int64_t bytes, int64_t count) {
  tblock *b = my_block();
  if (!b)
    return;
  atomic_store_explicit(
      &b->bytes, atomic_load_explicit(&b->bytes, memory_order_relaxed) + bytes,
      memory_order_relaxed);
  atomic_store_explicit(
      &b->count, atomic_load_explicit(&b->count, memory_order_relaxed) + count,
      memory_order_relaxed);
}

void *rusm__alloc(size_t size) {
  void *p = malloc(size ? size : 1);
  if (p)
    account((int64_t)size, 1);
  return p;
}

void *rusm__calloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (p)
    account((int64_t)(n * size), 1);
  return p;
}

void *rusm__alloc_aligned(size_t align, size_t size) {
  void *p = aligned_alloc(align, size ? size : align);
  if (p)
    account((int64_t)size, 1);
  return p;
}

void rusm__free(void *ptr, size_t size) {
  if (!ptr)
    return;
  free(ptr);
  account(-(int64_t)size, -1);
}

void rusm__alloc_totals(rusm__alloc_stats *out) {
  int64_t bytes = 0, count = 0;
  pthread_mutex_lock(&g_lock);
  for (tblock *b = g_blocks; b; b = b->next) {
    bytes += atomic_load_explicit(&b->bytes, memory_order_relaxed);
    count += atomic_load_explicit(&b->count, memory_order_relaxed);
  }
  pthread_mutex_unlock(&g_lock);
  out->bytes = bytes;
  out->count = count;
}
