/*
 * host.c — the Wasm host of a runtime: its two engines (pooled, and the
 * on-demand overflow tier made on first need), the epoch ticker, the name
 * registry of modules and the counters. See docs/wasm.md.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "wasm/wasm_int.h"

#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)
#define PAGE UINT64_C(65536) /* Wasm page; also rounds host sizes */

/* The overflow tier: memories sized to what they hold, so address space is
 * not what bounds the number of instances (see docs/wasm.md). */
#define OVERFLOW_GROWTH_RESERVE 0

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13: guard pages in one VMA */
#endif

void rusm_wasm_opts_init(rusm_wasm_opts *o) {
  memset(o, 0, sizeof(*o));
  o->pool_slots = 1000;
  o->overflow = true;
  o->max_memory = 64 * MIB;
  o->memory_reservation = 4 * GIB;
  o->memory_guard = 32 * MIB;
  o->keep_resident = 256 * UINT64_C(1024);
  o->async_stack_size = 1024 * 1024;
  o->max_wasm_stack = 512 * 1024;
  o->epoch_tick_us = 1000;
}

static uint64_t round_up(uint64_t v, uint64_t to) {
  return (v + to - 1) / to * to;
}

/* Fills zero fields with defaults and checks the rest; Wasmtime aborts on
 * a configuration it rejects, so whatever it would refuse is refused here. */
static int normalize(rusm_wasm_opts *o, const rusm_wasm_opts *in) {
  rusm_wasm_opts d;
  rusm_wasm_opts_init(&d);
  *o = in ? *in : d;
  if (!o->pool_slots)
    o->pool_slots = d.pool_slots;
  if (!o->max_memory)
    o->max_memory = d.max_memory;
  if (!o->memory_reservation)
    o->memory_reservation = d.memory_reservation;
  if (!o->memory_guard)
    o->memory_guard = d.memory_guard;
  if (!o->async_stack_size)
    o->async_stack_size = d.async_stack_size;
  if (!o->max_wasm_stack)
    o->max_wasm_stack = d.max_wasm_stack;
  if (!o->epoch_tick_us)
    o->epoch_tick_us = d.epoch_tick_us;
  if (o->pool_slots > 1000000 || o->memory_reservation > 4 * GIB ||
      o->memory_guard > 4 * GIB || o->async_stack_size > 64 * MIB ||
      o->max_wasm_stack < 64 * 1024 || o->epoch_tick_us > 1000000 ||
      o->keep_resident > 4 * GIB)
    return RUSM_EINVAL;
  o->memory_reservation = round_up(o->memory_reservation, PAGE);
  o->memory_guard = round_up(o->memory_guard, PAGE);
  o->keep_resident = round_up(o->keep_resident, 4096);
  o->async_stack_size = (uint32_t)round_up(o->async_stack_size, 4096);
  o->max_wasm_stack = (uint32_t)round_up(o->max_wasm_stack, 4096);
  /* Host frames (host functions, WASI) need room above the Wasm frames. */
  if (o->async_stack_size < o->max_wasm_stack + 64 * 1024)
    return RUSM_EINVAL;
  return 0;
}

/* Address space the pool reserves up front (memories, stacks, tables: the
 * last at Wasmtime's default of 20,000 elements of 8 bytes). */
static uint64_t pool_address_space(const rusm_wasm_opts *o) {
  uint64_t slots = o->pool_slots;
  uint64_t mem = (slots + 1) * (o->memory_reservation + o->memory_guard);
  uint64_t stacks = slots * ((uint64_t)o->async_stack_size + 4096);
  uint64_t tables = slots * round_up(UINT64_C(20000) * 8, 4096);
  return mem + stacks + tables;
}

/* Engine::new aborts the process when the pool cannot be reserved, so
 * check that the address space is there first. */
static bool can_reserve(uint64_t bytes) {
  void *p = mmap(NULL, bytes, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return false;
  munmap(p, bytes);
  return true;
}

/* ---- overflow-tier fiber stacks ---------------------------------------
 * Wasmtime's own on-demand stacks are an mmap plus an mprotect'ed guard
 * page each: two kernel mappings per running guest, so the default limit of
 * 65,530 mappings per process would cap the overflow tier long before
 * memory does. Where the kernel has guard regions (MADV_GUARD_INSTALL,
 * Linux 6.13), stacks are carved from slabs of STACKS_PER_SLAB instead,
 * each slab one mapping with a guard page below every stack; a freed stack
 * gives its pages back (MADV_DONTNEED) and is reused. Elsewhere Wasmtime's
 * own stacks are used. */

#define STACKS_PER_SLAB 64
#define STACK_KEEP ((size_t)64 * 1024)

typedef struct gpool gpool;

typedef struct gstack {
  gpool *pool;
  uint8_t *base; /* the guard page; the stack is the `size` bytes above */
  struct gstack *next;
} gstack;

struct gpool {
  pthread_mutex_t lock;
  size_t page, size; /* stack bytes, whole pages */
  gstack *free;
  struct gslab {
    struct gslab *next;
    uint8_t *map;
    size_t len;
    gstack stacks[STACKS_PER_SLAB];
  } * slabs;
};

static uint8_t *gstack_top(void *env, size_t *len) {
  gstack *s = env;
  *len = s->pool->size;
  return s->base + s->pool->page + s->pool->size;
}

static void gstack_free(void *env) {
  gstack *s = env;
  gpool *g = s->pool;
  /* Pages below the top STACK_KEEP go back to the kernel (the guard page
   * stays installed); the top, where nearly every guest's frames live, is
   * kept for the next user: returning touched pages costs a TLB shootdown
   * on every scheduler thread. Stacks need not be zero (Wasmtime asks for
   * zeroed stacks only with async_stack_zeroing, which is off). */
  if (g->size > STACK_KEEP)
    madvise(s->base + g->page, g->size - STACK_KEEP, MADV_DONTNEED);
  pthread_mutex_lock(&g->lock);
  s->next = g->free;
  g->free = s;
  pthread_mutex_unlock(&g->lock);
}

/* A new slab onto the free list (g->lock held). */
static bool gpool_grow(gpool *g) {
  struct gslab *sl = calloc(1, sizeof(*sl));
  if (!sl)
    return false;
  size_t slot = g->page + g->size;
  sl->len = slot * STACKS_PER_SLAB;
  sl->map = mmap(NULL, sl->len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (sl->map == MAP_FAILED) {
    free(sl);
    return false;
  }
  for (size_t i = 0; i < STACKS_PER_SLAB; i++) {
    gstack *s = &sl->stacks[i];
    s->pool = g;
    s->base = sl->map + i * slot;
    if (madvise(s->base, g->page, MADV_GUARD_INSTALL) != 0) {
      munmap(sl->map, sl->len); /* never hand out an unguarded stack */
      free(sl);
      return false;
    }
  }
  for (size_t i = STACKS_PER_SLAB; i-- > 0;) {
    sl->stacks[i].next = g->free;
    g->free = &sl->stacks[i];
  }
  sl->next = g->slabs;
  g->slabs = sl;
  return true;
}

static wasmtime_error_t *gstack_new(void *env, size_t size, bool zeroed,
                                    wasmtime_stack_memory_t *out) {
  gpool *g = env;
  if (size > g->size)
    return wasmtime_error_new("fiber stack larger than configured");
  pthread_mutex_lock(&g->lock);
  if (!g->free && !gpool_grow(g)) {
    pthread_mutex_unlock(&g->lock);
    return wasmtime_error_new("cannot map fiber stacks");
  }
  gstack *s = g->free;
  g->free = s->next;
  pthread_mutex_unlock(&g->lock);
  if (zeroed) { /* the kept top may hold an earlier guest's frames */
    size_t keep = g->size < STACK_KEEP ? g->size : STACK_KEEP;
    memset(s->base + g->page + g->size - keep, 0, keep);
  }
  out->env = s;
  out->get_stack_memory = gstack_top;
  out->finalizer = gstack_free;
  return NULL;
}

static void gpool_free(void *env) {
  gpool *g = env;
  while (g->slabs) {
    struct gslab *sl = g->slabs;
    g->slabs = sl->next;
    munmap(sl->map, sl->len);
    free(sl);
  }
  pthread_mutex_destroy(&g->lock);
  free(g);
}

static bool have_guard_regions(size_t page) {
  void *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return false;
  bool ok = madvise(p, page, MADV_GUARD_INSTALL) == 0;
  munmap(p, 2 * page);
  return ok;
}

/* Installs the slab stacks on an overflow engine's config, if possible. */
static void use_slab_stacks(wasm_config_t *c, size_t stack_size) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (!have_guard_regions(page))
    return;
  gpool *g = calloc(1, sizeof(*g));
  if (!g)
    return;
  pthread_mutex_init(&g->lock, NULL);
  g->page = page;
  g->size = (stack_size + page - 1) / page * page;
  wasmtime_stack_creator_t sc = {g, gstack_new, gpool_free};
  wasmtime_config_host_stack_creator_set(c, &sc);
}

/* Kernel mappings this process may still make (vm.max_map_count minus the
 * mappings it has). The pool costs 2 per slot up front (its stacks' guard
 * pages) and 2 more per busy slot (an accessible memory slot splits the
 * pool's reservation); Wasmtime aborts when it cannot make them. */
static long mappings_left(void) {
  long max = 65530;
  FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
  if (f) {
    if (fscanf(f, "%ld", &max) != 1) // NOLINT(cert-err34-c): checked
      max = 65530;
    (void)fclose(f);
  }
  long used = 0;
  f = fopen("/proc/self/maps", "r");
  if (f) {
    int c;
    while ((c = fgetc(f)) != EOF)
      used += c == '\n';
    (void)fclose(f);
  }
  return max - used;
}

static wasm_engine_t *make_engine(const rusm_wasm_opts *o, int tier) {
  wasm_config_t *c = wasm_config_new();
  if (!c)
    return NULL;
  wasmtime_config_epoch_interruption_set(c, true);
  wasmtime_config_memory_init_cow_set(c, true);
  wasmtime_config_async_stack_size_set(c, o->async_stack_size);
  wasmtime_config_max_wasm_stack_set(c, o->max_wasm_stack);
  /* Core modules only: no per-store state for concurrent component calls. */
  wasmtime_config_concurrency_support_set(c, false);
  if (tier == TIER_POOL) {
    wasmtime_config_memory_reservation_set(c, o->memory_reservation);
    wasmtime_config_memory_guard_size_set(c, o->memory_guard);
    wasmtime_pooling_allocation_config_t *pc =
        wasmtime_pooling_allocation_config_new();
    uint32_t n = o->pool_slots;
    wasmtime_pooling_allocation_config_total_core_instances_set(pc, n);
    wasmtime_pooling_allocation_config_total_memories_set(pc, n);
    wasmtime_pooling_allocation_config_total_tables_set(pc, n);
    wasmtime_pooling_allocation_config_total_stacks_set(pc, n);
    wasmtime_pooling_allocation_config_total_component_instances_set(pc, 0);
    wasmtime_pooling_allocation_config_max_memory_size_set(
        pc, (size_t)o->memory_reservation);
    wasmtime_pooling_allocation_config_linear_memory_keep_resident_set(
        pc, (size_t)o->keep_resident);
    wasmtime_pooling_allocation_config_table_keep_resident_set(
        pc, (size_t)o->keep_resident);
    wasmtime_pooling_allocation_strategy_set(c, pc);
    wasmtime_pooling_allocation_config_delete(pc);
  } else {
    /* On demand: each memory is mapped at its size plus a small growth
     * reserve and moves when it outgrows it; compiled code checks bounds
     * explicitly. A few MiB of address space per instance instead of
     * 4 GiB + guard. */
    wasmtime_config_memory_reservation_set(c, 0);
    wasmtime_config_memory_guard_size_set(c, 0);
    wasmtime_config_memory_reservation_for_growth_set(c,
                                                      OVERFLOW_GROWTH_RESERVE);
    wasmtime_config_memory_may_move_set(c, true);
    use_slab_stacks(c, o->async_stack_size);
  }
  return wasm_engine_new_with_config(c); /* takes c */
}

static int make_tier(rusm_wasm *w, int t, char *err, size_t errlen) {
  wtier *tier = &w->tier[t];
  tier->engine = make_engine(&w->opts, t);
  if (!tier->engine) {
    snprintf(err, errlen, "wasm: cannot create the engine");
    return RUSM_ENOMEM;
  }
  tier->linker = wasmtime_linker_new(tier->engine);
  wasmtime_error_t *e = tier->linker ? rusm__wasm_define_abi(tier->linker)
                                     : wasmtime_error_new("no linker");
  if (e) {
    rusm__wasm_errmsg(e, NULL, false, err, errlen);
    wasmtime_error_delete(e);
    if (tier->linker)
      wasmtime_linker_delete(tier->linker);
    wasm_engine_delete(tier->engine);
    tier->engine = NULL;
    tier->linker = NULL;
    return RUSM_ENOMEM;
  }
  return 0;
}

wtier *rusm__wasm_overflow(rusm_wasm *w, char *err, size_t errlen) {
  /* acquire: pairs with the release store below (tier fields visible) */
  if (atomic_load_explicit(&w->overflow_ready, memory_order_acquire))
    return &w->tier[TIER_OVERFLOW];
  pthread_mutex_lock(&w->tier_lock);
  wtier *t = NULL;
  if (atomic_load_explicit(&w->overflow_ready, memory_order_relaxed) ||
      make_tier(w, TIER_OVERFLOW, err, errlen) == 0) {
    atomic_store_explicit(&w->overflow_ready, true, memory_order_release);
    t = &w->tier[TIER_OVERFLOW];
  }
  pthread_mutex_unlock(&w->tier_lock);
  return t;
}

/* ---- epoch ticker --------------------------------------------------- */

/* One thread per host advances the epoch of both engines every tick while
 * any Wasm process is alive, and sleeps on tick_cond otherwise. */
static void *ticker_main(void *arg) {
  rusm_wasm *w = arg;
  struct timespec period = {w->opts.epoch_tick_us / 1000000,
                            (long)(w->opts.epoch_tick_us % 1000000) * 1000};
  pthread_mutex_lock(&w->tick_lock);
  while (!w->tick_stop) {
    /* relaxed: a late view of the count costs at most one tick */
    if (!atomic_load_explicit(&w->live, memory_order_relaxed)) {
      pthread_cond_wait(&w->tick_cond, &w->tick_lock);
      continue;
    }
    pthread_mutex_unlock(&w->tick_lock);
    wasmtime_engine_increment_epoch(w->tier[TIER_POOL].engine);
    if (atomic_load_explicit(&w->overflow_ready, memory_order_acquire))
      wasmtime_engine_increment_epoch(w->tier[TIER_OVERFLOW].engine);
    nanosleep(&period, NULL);
    pthread_mutex_lock(&w->tick_lock);
  }
  pthread_mutex_unlock(&w->tick_lock);
  return NULL;
}

void rusm__wasm_tick_wake(rusm_wasm *w) {
  pthread_mutex_lock(&w->tick_lock);
  pthread_cond_signal(&w->tick_cond);
  pthread_mutex_unlock(&w->tick_lock);
}

/* ---- create / destroy ----------------------------------------------- */

int rusm_wasm_create(rusm_rt *rt, const rusm_wasm_opts *opts, rusm_wasm **out) {
  if (!rt || !out)
    return RUSM_EINVAL;
  *out = NULL;
  rusm_wasm *w = calloc(1, sizeof(*w));
  if (!w)
    return RUSM_ENOMEM;
  int rc = normalize(&w->opts, opts);
  if (rc) {
    free(w);
    return rc;
  }
  w->rt = rt;
  atomic_init(&w->refs, 1);
  pthread_mutex_init(&w->lock, NULL);
  pthread_mutex_init(&w->tier_lock, NULL);
  pthread_mutex_init(&w->tick_lock, NULL);
  pthread_cond_init(&w->tick_cond, NULL);
  /* A full pool must fit in the mapping limit, with room to spare for the
   * rest of the program (and the overflow tier). */
  if (!can_reserve(pool_address_space(&w->opts)) ||
      4 * (long)w->opts.pool_slots + 1024 > mappings_left()) {
    rc = RUSM_ESYS;
    goto fail;
  }
  char err[256];
  rc = make_tier(w, TIER_POOL, err, sizeof err);
  if (rc)
    goto fail;
  if (pthread_create(&w->ticker, NULL, ticker_main, w) != 0) {
    rc = RUSM_ESYS;
    goto fail;
  }
  w->ticker_started = true;
  *out = w;
  return 0;
fail:
  rusm__wasm_unref(w);
  return rc;
}

static void host_free(rusm_wasm *w) {
  if (w->ticker_started) {
    pthread_mutex_lock(&w->tick_lock);
    w->tick_stop = true;
    pthread_cond_signal(&w->tick_cond);
    pthread_mutex_unlock(&w->tick_lock);
    pthread_join(w->ticker, NULL);
  }
  for (int t = 0; t < TIER__COUNT; t++) {
    if (w->tier[t].linker)
      wasmtime_linker_delete(w->tier[t].linker);
    if (w->tier[t].engine)
      wasm_engine_delete(w->tier[t].engine);
  }
  pthread_mutex_destroy(&w->lock);
  pthread_mutex_destroy(&w->tier_lock);
  pthread_mutex_destroy(&w->tick_lock);
  pthread_cond_destroy(&w->tick_cond);
  free(w);
}

void rusm__wasm_ref(rusm_wasm *w) {
  /* relaxed: the caller already holds a reference */
  atomic_fetch_add_explicit(&w->refs, 1, memory_order_relaxed);
}

void rusm__wasm_unref(rusm_wasm *w) {
  /* acq_rel: the last owner must see every other owner's writes */
  if (atomic_fetch_sub_explicit(&w->refs, 1, memory_order_acq_rel) == 1)
    host_free(w);
}

void rusm_wasm_destroy(rusm_wasm *w) {
  if (!w)
    return;
  /* The registry's module references would keep the host alive. */
  pthread_mutex_lock(&w->lock);
  wreg *r = w->registry;
  w->registry = NULL;
  pthread_mutex_unlock(&w->lock);
  while (r) {
    wreg *next = r->next;
    rusm_wasm_module_release(r->mod);
    free(r);
    r = next;
  }
  rusm__wasm_unref(w);
}

rusm_rt *rusm_wasm_rt(const rusm_wasm *w) { return w ? w->rt : NULL; }

/* ---- registry ------------------------------------------------------- */

static bool good_name(const char *name) {
  size_t n = name ? strlen(name) : 0;
  return n >= 1 && n <= WASM_NAME_MAX && !strchr(name, ':');
}

int rusm_wasm_register(rusm_wasm *w, const char *name, rusm_wasm_module *m) {
  if (!w || !m || m->w != w || !good_name(name))
    return RUSM_EINVAL;
  wreg *r = calloc(1, sizeof(*r));
  if (!r)
    return RUSM_ENOMEM;
  snprintf(r->name, sizeof r->name, "%s", name);
  r->mod = rusm_wasm_module_ref(m);
  pthread_mutex_lock(&w->lock);
  for (wreg *e = w->registry; e; e = e->next) {
    if (strcmp(e->name, name) == 0) {
      pthread_mutex_unlock(&w->lock);
      rusm_wasm_module_release(r->mod);
      free(r);
      return RUSM_EEXIST;
    }
  }
  r->next = w->registry;
  w->registry = r;
  pthread_mutex_unlock(&w->lock);
  return 0;
}

int rusm_wasm_unregister(rusm_wasm *w, const char *name) {
  if (!w || !name)
    return RUSM_EINVAL;
  pthread_mutex_lock(&w->lock);
  for (wreg **pp = &w->registry; *pp; pp = &(*pp)->next) {
    wreg *e = *pp;
    if (strcmp(e->name, name) == 0) {
      *pp = e->next;
      pthread_mutex_unlock(&w->lock);
      rusm_wasm_module_release(e->mod);
      free(e);
      return 0;
    }
  }
  pthread_mutex_unlock(&w->lock);
  return RUSM_ENOTFOUND;
}

rusm_wasm_module *rusm_wasm_lookup(rusm_wasm *w, const char *name) {
  if (!w || !name)
    return NULL;
  rusm_wasm_module *m = NULL;
  pthread_mutex_lock(&w->lock);
  for (wreg *e = w->registry; e; e = e->next) {
    if (strcmp(e->name, name) == 0) {
      m = rusm_wasm_module_ref(e->mod); /* the entry's reference keeps it */
      break;
    }
  }
  pthread_mutex_unlock(&w->lock);
  return m;
}

/* ---- counters ------------------------------------------------------- */

#define LOAD(f) atomic_load_explicit(&w->f, memory_order_relaxed)

void rusm_wasm_stats_get(rusm_wasm *w, rusm_wasm_stats *out) {
  memset(out, 0, sizeof(*out));
  if (!w)
    return;
  out->pool_slots = w->opts.pool_slots;
  out->live = LOAD(live);
  out->instances_live = LOAD(instances_live);
  out->pooled_live = LOAD(pooled_live);
  out->overflow_live = LOAD(overflow_live);
  out->spawned = LOAD(spawned);
  out->pooled_total = LOAD(pooled_total);
  out->overflow_total = LOAD(overflow_total);
  out->modules_live = LOAD(modules_live);
  out->modules_compiled = LOAD(modules_compiled);
  out->cache_hits = LOAD(cache_hits);
  out->traps = LOAD(traps);
  out->exits = LOAD(exits);
}

/* ---- helpers -------------------------------------------------------- */

typedef struct interned {
  struct interned *next;
  char s[];
} interned;

static pthread_mutex_t intern_lock = PTHREAD_MUTEX_INITIALIZER;
static interned *intern_list;

/* Labels must outlive every observer read (rusm_set_label keeps the
 * pointer), so they are kept for the life of the program: one per distinct
 * module name. */
const char *rusm__wasm_intern(const char *s) {
  pthread_mutex_lock(&intern_lock);
  interned *e = intern_list;
  while (e && strcmp(e->s, s) != 0)
    e = e->next;
  if (!e) {
    size_t n = strlen(s) + 1;
    e = malloc(sizeof(*e) + n);
    if (e) {
      memcpy(e->s, s, n);
      e->next = intern_list;
      intern_list = e;
    }
  }
  pthread_mutex_unlock(&intern_lock);
  return e ? e->s : "wasm";
}

/* Appends text[0..n) to buf (len > 0) at *at, newlines flattened. */
static void put_raw(char *buf, size_t len, size_t *at, const char *text,
                    size_t n) {
  for (size_t i = 0; i < n && *at + 1 < len; i++)
    buf[(*at)++] = text[i] == '\n' ? ' ' : text[i];
  buf[*at] = '\0';
}

/* put_raw of text trimmed of spaces and newlines. */
static void put(char *buf, size_t len, size_t *at, const char *text, size_t n) {
  while (n && (*text == ' ' || *text == '\n'))
    text++, n--;
  while (n && (text[n - 1] == ' ' || text[n - 1] == '\n'))
    n--;
  put_raw(buf, len, at, text, n);
}

/*
 * Wasmtime formats errors with their context chain:
 *   "<top>\n\nCaused by:\n    0: <cause>\n    1: <cause>"
 * (one cause: no number). A trap's top is "error while executing at wasm
 * backtrace:" and the frames; its root cause is the trap's own message.
 */
void rusm__wasm_errmsg(const wasmtime_error_t *err, const wasm_trap_t *trap,
                       bool root, char *buf, size_t len) {
  if (!len)
    return;
  buf[0] = '\0';
  wasm_byte_vec_t v = {0};
  if (err)
    wasmtime_error_message(err, &v);
  else if (trap)
    wasm_trap_message(trap, &v);
  else
    return;
  size_t n = v.size;
  while (n && v.data[n - 1] == '\0')
    n--;
  const char *s = v.data, *end = v.data + n;
  const char *caused = memmem(s, n, "\n\nCaused by:\n", 13);
  size_t at = 0;
  if (!caused) {
    put(buf, len, &at, s, n);
  } else {
    const char *top_end = caused;
    const char *c = caused + 13;
    if (!root && !memmem(s, (size_t)(top_end - s), "wasm backtrace", 14)) {
      const char *nl = memchr(s, '\n', (size_t)(top_end - s));
      put(buf, len, &at, s, (size_t)((nl ? nl : top_end) - s));
    }
    /* Causes are "N: "-numbered lines when there are several; other lines
     * continue the cause above them (a long message spans lines). */
    bool first = true;
    while (c < end) {
      const char *nl = memchr(c, '\n', (size_t)(end - c));
      const char *le = nl ? nl : end;
      const char *t = c;
      while (t < le && *t == ' ')
        t++;
      const char *num = t;
      while (t < le && *t >= '0' && *t <= '9')
        t++;
      bool numbered = t > num && t + 1 < le && t[0] == ':' && t[1] == ' ';
      t = numbered ? t + 2 : num;
      if (t < le) {
        if (first || numbered) {
          if (root)
            at = 0;
          else if (at)
            put_raw(buf, len, &at, ": ", 2);
        } else {
          put_raw(buf, len, &at, " ", 1);
        }
        put(buf, len, &at, t, (size_t)(le - t));
        first = false;
      }
      c = le + 1;
    }
  }
  wasm_byte_vec_delete(&v);
}
