/*
 * rusm/wasm.h — WebAssembly processes on Wasmtime.
 *
 * A Wasm process is an ordinary RUSM process (same pid space, links,
 * monitors, registry, supervisors) whose body is a sandboxed instance of a
 * core Wasm module. The guest talks to the runtime through the host ABI of
 * docs/wasm-abi.md (imports from module "rusm", plus default-deny WASI
 * preview 1). Architecture, engines and limits: docs/wasm.md.
 *
 * Lifecycle:
 *   rusm_wasm_create(rt)        one host per runtime: engines, epoch ticker,
 *                               module cache and name registry
 *   rusm_wasm_load(...)         compile (or find by content hash) a module
 *   rusm_wasm_spawn(module)     a pid; the instance is made on its first run
 *   rusm_wasm_module_release()  drop the caller's module reference
 *   rusm_wasm_destroy()         drop the caller's host reference
 * Modules and the host are reference counted: a live Wasm process keeps its
 * module and the host alive, so release/destroy may be called in any order
 * (the last Wasm process to exit frees what is left). Every call here is
 * callable from any thread unless said otherwise.
 */
#ifndef RUSM_WASM_H
#define RUSM_WASM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rusm/otp.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RUSM_WASM_ABI_VERSION 1

typedef struct rusm_wasm rusm_wasm;
typedef struct rusm_wasm_module rusm_wasm_module;

/* ------------------------------------------------------------------ */
/* Guest output                                                        */
/* ------------------------------------------------------------------ */

/* Where a line of guest output came from. */
typedef enum rusm_wasm_log_source {
  RUSM_WASM_LOG_CALL = 0,   /* the ABI's `log` import */
  RUSM_WASM_LOG_STDOUT = 1, /* WASI fd 1 (level info) */
  RUSM_WASM_LOG_STDERR = 2  /* WASI fd 2 (level warn) */
} rusm_wasm_log_source;

/* Log levels of the ABI's `log` (other values are clamped). */
enum {
  RUSM_WASM_LOG_DEBUG = 0,
  RUSM_WASM_LOG_INFO = 1,
  RUSM_WASM_LOG_WARN = 2,
  RUSM_WASM_LOG_ERROR = 3
};

/*
 * Receives guest output, one record at a time: a `log` call, or one line of
 * stdout/stderr (without its newline; a line longer than 4 KiB arrives in
 * pieces, and an unterminated last line is flushed when the process
 * exits). Called while the guest waits for it: on the scheduler thread
 * running the guest, or (stdout/stderr) on one of Wasmtime's WASI I/O
 * threads. It must be quick and thread-safe; data is valid only during the
 * call.
 */
typedef void (*rusm_wasm_log_fn)(void *arg, rusm_pid_t pid, int level,
                                 rusm_wasm_log_source source, const char *data,
                                 size_t len);

/* ------------------------------------------------------------------ */
/* Host                                                                */
/* ------------------------------------------------------------------ */

typedef struct rusm_wasm_opts {
  /* Pooled tier: instances (with their memory, table and async stack)
   * pre-reserved in one pool. 0: 1000. */
  uint32_t pool_slots;
  /* On-demand tier taking spawns when the pool is full
   * (rusm_wasm_opts_init: true).
   * false: a spawn finding the pool full exits with reason custom
   * "wasm: pool full". */
  bool overflow;
  /* Default per-process linear-memory limit in bytes (0: 64 MiB); a
   * refused memory.grow returns -1 to the guest. */
  uint64_t max_memory;
  /* Virtual address space reserved per pooled memory slot (0: 4 GiB,
   * which lets compiled code skip bounds checks) and the guard after it
   * (0: 32 MiB). See docs/wasm.md for the address-space arithmetic. */
  uint64_t memory_reservation;
  uint64_t memory_guard;
  /* When a pooled slot is freed, its memory's dirty pages up to this many
   * bytes are reset in place and stay resident for the next instance
   * instead of going back to the kernel (rusm_wasm_opts_init: 256 KiB; 0:
   * none). Returning pages costs a TLB shootdown on every scheduler thread,
   * which dominates the spawn of a small guest. */
  uint64_t keep_resident;
  /* Native stack per running guest (0: 1 MiB) and the part of it Wasm
   * frames may use (0: 512 KiB); only touched pages are resident. */
  uint32_t async_stack_size;
  uint32_t max_wasm_stack;
  /* Epoch tick (0: 1000 us): a guest runs at most about one tick before it
   * is preempted (yields to the scheduler). */
  uint32_t epoch_tick_us;
  /* Guest output sink. NULL: lines go to stderr as
   * "[wasm <0.5.1> info] text". */
  rusm_wasm_log_fn log;
  void *log_arg;
} rusm_wasm_opts;

/* Fills opts with defaults. */
void rusm_wasm_opts_init(rusm_wasm_opts *opts);

/* Creates the Wasm host of rt (opts may be NULL) and starts its epoch
 * ticker thread. The caller owns one reference (rusm_wasm_destroy, before
 * or after rusm_rt_destroy, which reaps every Wasm process; the last of
 * them releases what the host still holds). Returns 0, RUSM_EINVAL,
 * RUSM_ENOMEM or RUSM_ESYS (the engine could not be made: the pool's
 * address space cannot be reserved, or a full pool would not fit in the
 * process's mapping limit, vm.max_map_count; see docs/wasm.md). */
int rusm_wasm_create(rusm_rt *rt, const rusm_wasm_opts *opts, rusm_wasm **out);

/* Drops the caller's reference. Modules still registered by name are
 * unregistered. Engines and the ticker go when the last Wasm process of
 * this host has exited. NULL is ignored. */
void rusm_wasm_destroy(rusm_wasm *w);

rusm_rt *rusm_wasm_rt(const rusm_wasm *w);

/* ------------------------------------------------------------------ */
/* Modules                                                             */
/* ------------------------------------------------------------------ */

/*
 * Compiles a core Wasm module (binary format) for this host, or returns
 * the module already compiled from the same bytes (content hash: two loads
 * of the same bytes share one compile and one module object; the first
 * load's name stays). name (may be NULL: "anon") labels its processes
 * "wasm:<name>" for observers; at most 63 bytes are kept. The module is
 * checked up front: malformed bytes, a non-Wasm file, or an import the host
 * does not provide (the "rusm" ABI and wasi_snapshot_preview1) are refused
 * with a message in err (NUL-terminated, truncated to errlen; err may be
 * NULL). Compiles on the calling thread: call it from a thread that may
 * block (not a stackless callback). *out is a new reference
 * (rusm_wasm_module_release).
 * Returns 0, RUSM_EINVAL (bad module; see err), RUSM_ENOMEM.
 */
int rusm_wasm_load(rusm_wasm *w, const char *name, const void *bytes,
                   size_t len, rusm_wasm_module **out, char *err,
                   size_t errlen);

/* rusm_wasm_load of a file's bytes; name NULL: the file's base name
 * without ".wasm". RUSM_ESYS when it cannot be read. */
int rusm_wasm_load_file(rusm_wasm *w, const char *name, const char *path,
                        rusm_wasm_module **out, char *err, size_t errlen);

/* Drops a reference. NULL is ignored. */
void rusm_wasm_module_release(rusm_wasm_module *m);
/* Adds a reference (returns m). */
rusm_wasm_module *rusm_wasm_module_ref(rusm_wasm_module *m);

/* The module's name (valid while the caller holds a reference). */
const char *rusm_wasm_module_name(const rusm_wasm_module *m);
/* Whether the module exports a function `name` of type () -> () that a
 * process can run. */
bool rusm_wasm_module_has_entry(const rusm_wasm_module *m, const char *name);

/*
 * Registers m under name (1..63 bytes, no ':') so that guests may spawn
 * "name:export" (and "name:" for its default entry). The registry holds a
 * reference. RUSM_EEXIST when the name is taken, RUSM_EINVAL for a bad
 * name. Registry names are the host's, separate from process names.
 */
int rusm_wasm_register(rusm_wasm *w, const char *name, rusm_wasm_module *m);
/* RUSM_ENOTFOUND when the name is not registered. */
int rusm_wasm_unregister(rusm_wasm *w, const char *name);
/* A new reference to the module registered under name, or NULL. */
rusm_wasm_module *rusm_wasm_lookup(rusm_wasm *w, const char *name);

/* ------------------------------------------------------------------ */
/* Processes                                                           */
/* ------------------------------------------------------------------ */

/* Capabilities of a Wasm process: default deny. A guest's children (its
 * `spawn` import) get exactly its capabilities and memory limit. */
#define RUSM_WASM_CAP_SPAWN 1u /* may call `spawn` */

typedef struct rusm_wasm_spawn_opts {
  /* Process options: link / monitor (need process context), scheduler,
   * mailbox_capacity. stack_size is ignored. */
  rusm_spawn_opts proc;
  /* Export to run, () -> (). NULL: "main", or "_start" when the module
   * has no "main". */
  const char *entry;
  /* Bytes the guest reads with `arg` (copied; NULL with arg_len 0). */
  const void *arg;
  size_t arg_len;
  /* Linear-memory limit in bytes (0: the host's max_memory). */
  uint64_t max_memory;
  /* RUSM_WASM_CAP_* bits (default 0: nothing beyond the base ABI). */
  uint32_t caps;
  /* Start with trap_exit on (the guest may also call `trap_exit`): set
   * before the process exists (rusm_spawn_opts.trap_exit), so no exit
   * signal can reach it untrapped, linked or not. */
  bool trap_exit;
} rusm_wasm_spawn_opts;

void rusm_wasm_spawn_opts_init(rusm_wasm_spawn_opts *o);

/*
 * Spawns a process running an export of m (opts may be NULL). Cheap: no
 * instance is made here; the process's first run creates its store and
 * instance (pooled slot, or the overflow tier when the pool is full). An
 * instantiation failure or trap at startup ends the process with reason
 * trap. The process holds a reference on m. Returns 0, RUSM_ENOTFOUND (no
 * such entry export of type () -> ()), RUSM_EINVAL, RUSM_ECONTEXT
 * (link/monitor outside a process), RUSM_ENOMEM, RUSM_ELIMIT,
 * RUSM_ESHUTDOWN.
 */
int rusm_wasm_spawn(rusm_wasm_module *m, const rusm_wasm_spawn_opts *opts,
                    rusm_pid_t *out);

/* ------------------------------------------------------------------ */
/* Counters                                                            */
/* ------------------------------------------------------------------ */

typedef struct rusm_wasm_stats {
  uint32_t pool_slots;       /* configured pooled slots */
  uint64_t live;             /* Wasm processes alive (any phase) */
  uint64_t instances_live;   /* ... of which have an instance */
  uint64_t pooled_live;      /* instances in pooled slots */
  uint64_t overflow_live;    /* instances in the on-demand tier */
  uint64_t spawned;          /* Wasm processes spawned so far */
  uint64_t pooled_total;     /* instances made in the pool so far */
  uint64_t overflow_total;   /* ... in the overflow tier so far */
  uint64_t modules_live;     /* module objects alive */
  uint64_t modules_compiled; /* compiles done (overflow ones included) */
  uint64_t cache_hits;       /* loads served from the content-hash cache */
  uint64_t traps;            /* processes that ended with reason trap */
  uint64_t exits;            /* Wasm processes reaped (any reason) */
} rusm_wasm_stats;

/* A snapshot of the counters (each read atomically, not all at once). */
void rusm_wasm_stats_get(rusm_wasm *w, rusm_wasm_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* RUSM_WASM_H */
