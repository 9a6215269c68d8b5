/*
 * wasm_int.h — internals of the Wasm host (src/wasm). Built only on the
 * public API of rusm/otp.h: a Wasm process is an ordinary generic body.
 * Design notes: docs/wasm.md.
 */
#ifndef RUSM_WASM_INT_H
#define RUSM_WASM_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <wasi.h>
#include <wasm.h>
#include <wasmtime.h>

#include "rusm/otp.h"
#include "rusm/wasm.h"

/* The two engines. Code compiled for one cannot run on the other (their
 * memory layouts differ, so bounds checks differ). */
enum { TIER_POOL = 0, TIER_OVERFLOW = 1, TIER__COUNT };

#define WASM_NAME_MAX 63 /* module and registry names, NUL excluded */
#define WASM_LINE_MAX 4096

typedef struct wtier {
  wasm_engine_t *engine;
  wasmtime_linker_t *linker;
} wtier;

typedef struct wreg {
  struct wreg *next;
  char name[WASM_NAME_MAX + 1];
  rusm_wasm_module *mod;
} wreg;

struct rusm_wasm {
  /* user + one per module + one per live process */
  _Atomic uint64_t refs;
  rusm_rt *rt;
  rusm_wasm_opts opts;

  /* tier[TIER_OVERFLOW] is made on first need under tier_lock, then
   * published by a release store of overflow_ready. */
  wtier tier[TIER__COUNT];
  _Atomic bool overflow_ready;
  pthread_mutex_t tier_lock;

  pthread_mutex_t lock; /* modules (cache) and registry */
  rusm_wasm_module *modules;
  wreg *registry;

  /* epoch ticker */
  pthread_t ticker;
  bool ticker_started;
  pthread_mutex_t tick_lock;
  pthread_cond_t tick_cond;
  bool tick_stop;

  /* pooled slots in use: reserved before instantiating (exact: only our
   * stores use the pool) */
  _Atomic uint32_t pool_used;

  /* counters (relaxed: statistics only) */
  _Atomic uint64_t live, instances_live, pooled_live, overflow_live;
  _Atomic uint64_t spawned, pooled_total, overflow_total;
  _Atomic uint64_t modules_live, modules_compiled, cache_hits, traps, exits;
};

struct rusm_wasm_module {
  _Atomic uint64_t refs; /* users + processes + registry entries */
  rusm_wasm *w;
  rusm_wasm_module *next; /* cache list, under w->lock */
  char name[WASM_NAME_MAX + 1];
  const char *label; /* "wasm:<name>", interned for the process lifetime */
  uint64_t hash;
  uint8_t *bytes; /* kept: the overflow tier compiles them lazily */
  size_t len;
  bool needs_wasi;
  char **entries; /* exports of type () -> () */
  size_t nentries;
  /* per tier: the compiled module and its InstancePre (overflow: made on
   * first need under w->tier_lock, published with release) */
  wasmtime_module_t *mod[TIER__COUNT];
  _Atomic(wasmtime_instance_pre_t *) pre[TIER__COUNT];
};

/* ---- host.c ---- */
void rusm__wasm_ref(rusm_wasm *w);
void rusm__wasm_unref(rusm_wasm *w);
/* The overflow tier's engine and linker, made on first call. NULL when it
 * cannot be made (err filled). */
wtier *rusm__wasm_overflow(rusm_wasm *w, char *err, size_t errlen);
/* Wakes the ticker (a first live instance). */
void rusm__wasm_tick_wake(rusm_wasm *w);
/* A static copy of s (same string -> same pointer), never freed. */
const char *rusm__wasm_intern(const char *s);
/* Writes the message of a wasmtime error or trap (either may be NULL) into
 * buf. root: only the innermost cause (a trap's own message, without the
 * backtrace); else every cause joined by ": ". */
void rusm__wasm_errmsg(const wasmtime_error_t *err, const wasm_trap_t *trap,
                       bool root, char *buf, size_t len);

/* ---- module.c ---- */
/* The InstancePre of m for tier t, compiling for it on first need. */
wasmtime_instance_pre_t *rusm__wasm_pre(rusm_wasm_module *m, int t, char *err,
                                        size_t errlen);
/* The entry name of m matching name (NULL: the default), or NULL. */
const char *rusm__wasm_entry(const rusm_wasm_module *m, const char *name,
                             size_t len);

/* ---- abi.c ---- */
/* Defines the "rusm" imports and WASI p1 in linker. */
wasmtime_error_t *rusm__wasm_define_abi(wasmtime_linker_t *linker);

/* ---- body.c ---- */
typedef struct wproc wproc;
/* Spawn with inherited settings (the guest `spawn` import). */
int rusm__wasm_spawn(rusm_wasm_module *m, const char *entry,
                     const rusm_wasm_spawn_opts *o, rusm_pid_t *out);
void rusm__wasm_log(rusm_wasm *w, rusm_pid_t pid, int level,
                    rusm_wasm_log_source src, const char *data, size_t len);

/* The per-process state the host functions reach through the store. */
/* A parked `receive` (the guest memory neither grows nor moves while the
 * guest is suspended, so base stays valid until it completes). */
typedef struct wrecv {
  rusm_filter f;
  uint8_t *base;
  uint32_t buf, cap, info;
  wasmtime_val_t *result; /* where the continuation writes the result */
} wrecv;

/* A parked WASI poll_oneoff on clocks. */
typedef struct wsleep {
  uint8_t *base;
  uint32_t in, out, nsubs, nevents;
  int64_t mono0, real0; /* clocks at the call */
  wasmtime_val_t *result;
} wsleep;

struct wproc {
  rusm_wasm *w;
  rusm_wasm_module *m;
  rusm_proc *self;
  rusm_pid_t pid;
  const char *entry; /* points into m->entries */
  uint8_t *arg;
  size_t arg_len;
  uint64_t max_memory;
  uint32_t caps;
  bool trap_exit;

  int phase;
  int tier;       /* -1 until instantiated */
  int inst_tier;  /* the tier being instantiated */
  bool pool_slot; /* holds one of w->pool_used */
  wasmtime_store_t *store;
  wasmtime_context_t *ctx;
  wasmtime_instance_t inst;
  wasmtime_memory_t mem;
  bool has_mem;
  wasmtime_func_t fn;
  wasmtime_call_future_t *fut;
  wasm_trap_t *trap;
  wasmtime_error_t *err;

  int64_t slice_start; /* this run's start (epoch callback) */
  bool force_yield;    /* yield at the next epoch check */
  /* An async host call is pending (receive, sleep): the step reports
   * RUSM_STEP_WAIT until park_deadline (absolute ns, -1: none). */
  bool parked;
  int64_t park_deadline;
  wrecv rx;
  wsleep sl;
  uint64_t mem_reported;

  /* exit_self / a trap raised by a host function */
  bool exiting;
  rusm_exit_code exit_code;
  uint8_t *exit_detail;
  uint32_t exit_len;
  char host_trap[160];
  bool has_host_trap;
  char reason[256]; /* the exit detail the step returns */

  /* partial stdout / stderr lines */
  char *line[2];
  size_t line_len[2];
};

/* Raises a trap in the calling guest naming the call, e.g.
 * "rusm.send: pointer/length out of bounds". */
wasm_trap_t *rusm__wasm_trap(wproc *p, const char *call, const char *what);

#endif /* RUSM_WASM_INT_H */
