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

static __attribute__((noinline)) tblock *my_block_slow(void) {
  tblock *b = calloc(1, sizeof *b);
  if (!b)
    return NULL; /* accounting is lost for this thread, nothing else */
  pthread_mutex_lock(&g_lock);
  b->next = g_blocks;
  g_blocks = b;
  pthread_mutex_unlock(&g_lock);
  t_block = b;
  return b;
}

/* Inline: it runs on every message allocation and free. */
static inline void account(int64_t bytes, int64_t count) {
  tblock *b = t_block;
  if (__builtin_expect(!b, 0) && !(b = my_block_slow()))
    return;
  atomic_store_explicit(
      &b->bytes, atomic_load_explicit(&b->bytes, memory_order_relaxed) + bytes,
      memory_order_relaxed);
  atomic_store_explicit(
      &b->count, atomic_load_explicit(&b->count, memory_order_relaxed) + count,
      memory_order_relaxed);
}

/* fault injection: when on, allocations left before they start failing */
static _Atomic bool g_fail_on;
static _Atomic bool g_fail_once;
static _Atomic int64_t g_fail_left;

void rusm__test_fail_allocs(int64_t after) {
  atomic_store_explicit(&g_fail_left, after, memory_order_relaxed);
  atomic_store_explicit(&g_fail_once, false, memory_order_relaxed);
  atomic_store_explicit(&g_fail_on, after >= 0, memory_order_relaxed);
}

void rusm__test_fail_one_alloc(int64_t after) {
  atomic_store_explicit(&g_fail_left, after, memory_order_relaxed);
  atomic_store_explicit(&g_fail_once, true, memory_order_relaxed);
  atomic_store_explicit(&g_fail_on, after >= 0, memory_order_relaxed);
}

static inline bool injected_failure(void) {
  if (__builtin_expect(!atomic_load_explicit(&g_fail_on, memory_order_relaxed),
                       1))
    return false;
  /* relaxed: a test knob, not a synchronisation point */
  int64_t left =
      atomic_fetch_sub_explicit(&g_fail_left, 1, memory_order_relaxed);
  if (atomic_load_explicit(&g_fail_once, memory_order_relaxed))
    return left == 0;
  return left <= 0;
}

void *rusm__alloc(size_t size) {
  if (injected_failure())
    return NULL;
  void *p = malloc(size ? size : 1);
  if (p)
    account((int64_t)size, 1);
  return p;
}

void *rusm__calloc(size_t n, size_t size) {
  if (injected_failure())
    return NULL;
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (p)
    account((int64_t)(n * size), 1);
  return p;
}

void *rusm__alloc_aligned(size_t align, size_t size) {
  if (injected_failure())
    return NULL;
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

/* ---- small-object pool ---- */

#define POOL_CLASSES 4
#define MAG 256       /* blocks in a magazine */
#define DEPOT_MAX 512 /* magazines kept per class; more are freed */

typedef struct pblock {
  struct pblock *next;
} pblock;

typedef struct ptls {
  pblock *head[POOL_CLASSES];
  uint32_t count[POOL_CLASSES];
  bool registered;
} ptls;

/* A magazine is a list of MAG blocks; magazines are chained through a
 * second word of their first block. */
static pthread_mutex_t g_depot_lock = PTHREAD_MUTEX_INITIALIZER;
static pblock *g_depot[POOL_CLASSES];
static uint32_t g_depot_n[POOL_CLASSES];
static pthread_key_t g_pool_key;
static pthread_once_t g_pool_once = PTHREAD_ONCE_INIT;
static _Thread_local ptls t_pool;

static inline int pool_class(size_t size) {
  if (size <= 64)
    return 0;
  if (size <= 128)
    return 1;
  if (size <= 256)
    return 2;
  if (size <= 512)
    return 3;
  return -1;
}

static inline size_t class_size(int c) { return (size_t)64 << c; }

#define MAG_LINK(b) (((pblock **)(b))[1])

static void depot_put(int c, pblock *mag) {
  pthread_mutex_lock(&g_depot_lock);
  if (g_depot_n[c] < DEPOT_MAX) {
    MAG_LINK(mag) = g_depot[c];
    g_depot[c] = mag;
    g_depot_n[c]++;
    mag = NULL;
  }
  pthread_mutex_unlock(&g_depot_lock);
  while (mag) { /* depot full: give the memory back */
    pblock *n = mag->next;
    free(mag);
    mag = n;
  }
}

static void pool_thread_exit(void *arg) {
  (void)arg;
  ptls *t = &t_pool;
  for (int c = 0; c < POOL_CLASSES; c++) {
    while (t->head[c]) {
      pblock *mag = t->head[c], *last = mag;
      uint32_t n = 1;
      while (n < MAG && last->next) {
        last = last->next;
        n++;
      }
      t->head[c] = last->next;
      last->next = NULL;
      depot_put(c, mag);
    }
    t->count[c] = 0;
  }
}

static void pool_once(void) {
  pthread_key_create(&g_pool_key, pool_thread_exit);
}

/* The thread's blocks go back to the depot when it exits. */
static inline void pool_register(ptls *t) {
  if (!t->registered) {
    pthread_once(&g_pool_once, pool_once);
    pthread_setspecific(g_pool_key, t);
    t->registered = true;
  }
}

void *rusm__pool_alloc(size_t size) {
  int c = pool_class(size);
  if (c < 0)
    return rusm__alloc(size);
  if (injected_failure())
    return NULL;
  ptls *t = &t_pool;
  pblock *b = t->head[c];
  if (!b) {
    pool_register(t);
    pthread_mutex_lock(&g_depot_lock);
    pblock *mag = g_depot[c];
    if (mag) {
      g_depot[c] = MAG_LINK(mag);
      g_depot_n[c]--;
    }
    pthread_mutex_unlock(&g_depot_lock);
    if (!mag) {
      b = malloc(class_size(c));
      if (b)
        account((int64_t)class_size(c), 1);
      return b;
    }
    b = mag;
    uint32_t n = 0;
    for (pblock *x = mag; x; x = x->next)
      n++;
    t->count[c] = n;
  }
  t->head[c] = b->next;
  t->count[c]--;
  account((int64_t)class_size(c), 1);
  return b;
}

void rusm__pool_free(void *ptr, size_t size) {
  if (!ptr)
    return;
  int c = pool_class(size);
  if (c < 0) {
    rusm__free(ptr, size);
    return;
  }
  account(-(int64_t)class_size(c), -1);
  ptls *t = &t_pool;
  pool_register(t);
  pblock *b = ptr;
  b->next = t->head[c];
  t->head[c] = b;
  if (++t->count[c] >= 2 * MAG) {
    /* hand the newest MAG blocks to the depot, keep the rest hot */
    pblock *mag = t->head[c], *last = mag;
    for (uint32_t i = 1; i < MAG; i++)
      last = last->next;
    t->head[c] = last->next;
    last->next = NULL;
    t->count[c] -= MAG;
    depot_put(c, mag);
  }
}

/* ---- unsized: a header holds the size ---- */

#define XHDR 16 /* keeps malloc's 16-byte alignment */

void *rusm__xmalloc(size_t size) {
  if (size > SIZE_MAX - XHDR)
    return NULL;
  uint8_t *p = rusm__alloc(size + XHDR);
  if (!p)
    return NULL;
  memcpy(p, &size, sizeof size);
  return p + XHDR;
}

void *rusm__xcalloc(size_t n, size_t size) {
  if (size && n > (SIZE_MAX - XHDR) / size)
    return NULL;
  uint8_t *p = rusm__xmalloc(n * size);
  if (p)
    memset(p, 0, n * size);
  return p;
}

void rusm__xfree(void *ptr) {
  if (!ptr)
    return;
  uint8_t *p = (uint8_t *)ptr - XHDR;
  size_t size;
  memcpy(&size, p, sizeof size);
  rusm__free(p, size + XHDR);
}

void *rusm__xrealloc(void *ptr, size_t size) {
  if (!ptr)
    return rusm__xmalloc(size);
  uint8_t *q = rusm__xmalloc(size);
  if (!q)
    return NULL; /* ptr stays valid, as realloc's contract */
  size_t old;
  memcpy(&old, (uint8_t *)ptr - XHDR, sizeof old);
  memcpy(q, ptr, old < size ? old : size);
  rusm__xfree(ptr);
  return q;
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
