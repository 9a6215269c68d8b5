/*
 * Smoke test of the cached Wasmtime C API build (scripts/wasmtime-build):
 * proves that the static library links and that the features a Wasm process
 * body needs work from C. Not a unit test; see docs/wasmtime.md for how to
 * build and run it.
 *
 *   smoke              engine with the pooling allocator, copy-on-write
 *                      memory images and epoch interruption; a WAT module
 *                      through InstancePre into several stores; async
 *                      instantiate and calls driven by
 *                      wasmtime_call_future_poll (epoch yields, an async host
 *                      function), store limits, a trap code, an epoch kill.
 *   smoke GUEST.wasm   also runs a WASI p1 command with only stdout and
 *                      stderr inherited (no args, env or preopens).
 *
 * Exits 0 when every check holds and prints one line per check.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wasi.h>
#include <wasm.h>
#include <wasmtime.h>

static int failures;

static void check(bool ok, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void check(bool ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s ", ok ? "ok  " : "FAIL");
  vprintf(fmt, ap);
  putchar('\n');
  va_end(ap);
  if (!ok)
    failures++;
}

static void print_error(const char *what, wasmtime_error_t *err,
                        wasm_trap_t *trap) {
  wasm_byte_vec_t msg = {0};
  if (err) {
    wasmtime_error_message(err, &msg);
    wasmtime_error_delete(err);
  } else if (trap) {
    wasm_trap_message(trap, &msg);
    wasm_trap_delete(trap);
  }
  fprintf(stderr, "%s: %.*s\n", what, (int)msg.size, msg.data);
  wasm_byte_vec_delete(&msg);
}

static void die(const char *what, wasmtime_error_t *err, wasm_trap_t *trap) {
  print_error(what, err, trap);
  exit(1);
}

static const char module_wat[] =
    "(module\n"
    "  (import \"host\" \"wait\" (func $wait (param i32) (result i32)))\n"
    "  (memory (export \"memory\") 1 4)\n"
    "  (data (i32.const 0) \"hello from a CoW image\")\n"
    "  (func (export \"add\") (param i32 i32) (result i32)\n"
    "    local.get 0 local.get 1 i32.add)\n"
    "  (func (export \"spin\") (param $n i32) (result i32) (local $i i32)\n"
    "    (block $done (loop $top\n"
    "      local.get $i local.get $n i32.ge_u br_if $done\n"
    "      local.get $i i32.const 1 i32.add local.set $i\n"
    "      br $top))\n"
    "    local.get $i)\n"
    "  (func (export \"wait\") (param i32) (result i32)\n"
    "    local.get 0 call $wait i32.const 1 i32.add)\n"
    "  (func (export \"grow\") (param i32) (result i32)\n"
    "    local.get 0 memory.grow)\n"
    "  (func (export \"peek\") (param i32) (result i32)\n"
    "    local.get 0 i32.load8_u)\n"
    "  (func (export \"boom\") unreachable))\n";

/* Per-store state behind the epoch deadline callback. */
struct budget {
  unsigned yields;     /* deadline callbacks so far */
  unsigned kill_after; /* 0: yield forever; else fail the call at this one */
  uint64_t delta;      /* next deadline, in ticks after the yield resumes */
};

/* Epoch deadline reached: yield to the poller (as a scheduler does at the
 * end of a time slice) with a fresh deadline b->delta ticks after the
 * resumption, or kill. */
static wasmtime_error_t *on_deadline(wasmtime_context_t *ctx, void *data,
                                     uint64_t *delta,
                                     wasmtime_update_deadline_kind_t *kind) {
  (void)ctx;
  struct budget *b = data;
  b->yields++;
  if (b->kill_after && b->yields >= b->kill_after)
    return wasmtime_error_new("killed at epoch deadline");
  *delta = b->delta;
  *kind = WASMTIME_UPDATE_DEADLINE_YIELD;
  return NULL;
}

/* The async host function "host.wait": completes after three polls, as a
 * host call parked on a message would complete when the message arrives. */
struct pending {
  int left;
};

static bool wait_done(void *env) {
  struct pending *p = env;
  return --p->left <= 0;
}

static void host_wait(void *env, wasmtime_caller_t *caller,
                      const wasmtime_val_t *args, size_t nargs,
                      wasmtime_val_t *results, size_t nresults,
                      wasm_trap_t **trap_ret,
                      wasmtime_async_continuation_t *cont) {
  (void)env;
  (void)caller;
  (void)nargs;
  (void)nresults;
  (void)trap_ret;
  /* Results may be written now: Wasmtime reads them once the continuation
   * says done. */
  results[0].kind = WASMTIME_I32;
  results[0].of.i32 = args[0].of.i32;
  struct pending *p = malloc(sizeof(*p));
  if (!p) {
    *trap_ret = wasmtime_trap_new("out of memory", 13);
    return;
  }
  p->left = 3;
  cont->callback = wait_done;
  cont->env = p;
  cont->finalizer = free;
}

/* A ticker thread advancing the epoch every 100 us, as the runtime's
 * scheduler tick does: guest code running on another thread sees its
 * deadline pass in the middle of a loop. */
struct ticker {
  pthread_t thread;
  wasm_engine_t *engine;
  atomic_bool stop;
};

static void *tick(void *arg) {
  struct ticker *t = arg;
  const struct timespec period = {0, 100 * 1000};
  /* relaxed: only this flag is shared, and lateness by a tick is harmless */
  while (!atomic_load_explicit(&t->stop, memory_order_relaxed)) {
    wasmtime_engine_increment_epoch(t->engine);
    nanosleep(&period, NULL);
  }
  return NULL;
}

static void ticker_start(struct ticker *t, wasm_engine_t *engine) {
  t->engine = engine;
  atomic_init(&t->stop, false);
  if (pthread_create(&t->thread, NULL, tick, t) != 0) {
    perror("pthread_create");
    exit(1);
  }
}

static void ticker_stop(struct ticker *t) {
  atomic_store_explicit(&t->stop, true, memory_order_relaxed);
  pthread_join(t->thread, NULL);
}

/* Polls a future to completion, advancing the engine's epoch between polls
 * (a scheduler's ticker thread does that in the runtime). Returns the number
 * of polls that yielded. */
static unsigned drive(wasm_engine_t *engine, wasmtime_call_future_t *fut) {
  unsigned pending = 0;
  while (!wasmtime_call_future_poll(fut)) {
    pending++;
    wasmtime_engine_increment_epoch(engine);
  }
  wasmtime_call_future_delete(fut);
  return pending;
}

/* Calls export `name` of `inst` through wasmtime_func_call_async. */
static bool call_async(wasm_engine_t *engine, wasmtime_context_t *ctx,
                       const wasmtime_instance_t *inst, const char *name,
                       const int32_t *args, size_t nargs, int32_t *result,
                       unsigned *polls, wasm_trap_t **trap,
                       wasmtime_error_t **err) {
  wasmtime_extern_t ext;
  if (!wasmtime_instance_export_get(ctx, inst, name, strlen(name), &ext) ||
      ext.kind != WASMTIME_EXTERN_FUNC) {
    fprintf(stderr, "no export %s\n", name);
    exit(1);
  }
  wasmtime_val_t a[2], r[1];
  for (size_t i = 0; i < nargs; i++) {
    a[i].kind = WASMTIME_I32;
    a[i].of.i32 = args[i];
  }
  *trap = NULL;
  *err = NULL;
  size_t nres = result ? 1 : 0;
  wasmtime_call_future_t *fut =
      wasmtime_func_call_async(ctx, &ext.of.func, a, nargs, r, nres, trap, err);
  unsigned n = drive(engine, fut);
  if (polls)
    *polls = n;
  if (*trap || *err)
    return false;
  if (result)
    *result = r[0].of.i32;
  return true;
}

static void run_store(wasm_engine_t *engine, wasmtime_instance_pre_t *pre,
                      int round) {
  struct budget budget = {.delta = 1};
  wasmtime_store_t *store = wasmtime_store_new(engine, NULL, NULL);
  wasmtime_context_t *ctx = wasmtime_store_context(store);
  /* Memory may grow to 2 pages (128 KiB) in this store; -1 keeps defaults. */
  wasmtime_store_limiter(store, 2 * 65536, -1, -1, -1, -1);
  wasmtime_store_epoch_deadline_callback(store, on_deadline, &budget, NULL);
  wasmtime_context_set_epoch_deadline(ctx, 1);

  wasmtime_instance_t inst;
  wasm_trap_t *trap = NULL;
  wasmtime_error_t *err = NULL;
  unsigned polls = drive(engine, wasmtime_instance_pre_instantiate_async(
                                     pre, ctx, &inst, &trap, &err));
  if (trap || err)
    die("instantiate", err, trap);
  check(true, "[store %d] instance_pre_instantiate_async (%u yields)", round,
        polls);

  int32_t v = 0;
  int32_t args[2] = {40, 2};
  bool ok =
      call_async(engine, ctx, &inst, "add", args, 2, &v, &polls, &trap, &err);
  check(ok && v == 42, "[store %d] add(40, 2) = %d", round, v);
  if (!ok)
    print_error("add", err, trap);

  /* Deadline now and 0 ticks after each resumption: every epoch check (one
   * per loop iteration) yields, with no thread needed to advance the epoch. */
  args[0] = 1000;
  budget.yields = 0;
  budget.delta = 0;
  wasmtime_context_set_epoch_deadline(ctx, 0);
  ok = call_async(engine, ctx, &inst, "spin", args, 1, &v, &polls, &trap, &err);
  check(ok && v == 1000 && polls >= 1000 && budget.yields == polls,
        "[store %d] spin(1000) = %d, preempted by epochs %u times", round, v,
        polls);
  if (!ok)
    print_error("spin", err, trap);
  budget.delta = 1;

  args[0] = 41;
  ok = call_async(engine, ctx, &inst, "wait", args, 1, &v, &polls, &trap, &err);
  check(ok && v == 42 && polls >= 2,
        "[store %d] async host call: wait(41) = %d after %u pending polls",
        round, v, polls);
  if (!ok)
    print_error("wait", err, trap);

  args[0] = 0;
  ok = call_async(engine, ctx, &inst, "peek", args, 1, &v, NULL, &trap, &err);
  check(ok && v == 'h', "[store %d] data image: peek(0) = '%c'", round,
        (char)v);

  args[0] = 1;
  int32_t g1 = 0, g2 = 0;
  ok =
      call_async(engine, ctx, &inst, "grow", args, 1, &g1, NULL, &trap, &err) &&
      call_async(engine, ctx, &inst, "grow", args, 1, &g2, NULL, &trap, &err);
  check(ok && g1 == 1 && g2 == -1,
        "[store %d] store limit: grow to 2 pages = %d, to 3 pages = %d", round,
        g1, g2);

  ok = call_async(engine, ctx, &inst, "boom", NULL, 0, NULL, NULL, &trap, &err);
  wasmtime_trap_code_t code = 0xff;
  bool has_code = trap && wasmtime_trap_code(trap, &code);
  check(!ok && has_code && code == WASMTIME_TRAP_CODE_UNREACHABLE_CODE_REACHED,
        "[store %d] trap with code %d (unreachable)", round, (int)code);
  if (trap)
    wasm_trap_delete(trap);
  if (err)
    wasmtime_error_delete(err);

  /* An out-of-bounds load hits a guard page: Wasmtime's SIGSEGV handler
   * turns it into a trap. */
  args[0] = 1 << 20;
  trap = NULL;
  ok = call_async(engine, ctx, &inst, "peek", args, 1, &v, NULL, &trap, &err);
  code = 0xff;
  has_code = trap && wasmtime_trap_code(trap, &code);
  check(!ok && has_code && code == WASMTIME_TRAP_CODE_MEMORY_OUT_OF_BOUNDS,
        "[store %d] trap with code %d (memory out of bounds)", round,
        (int)code);
  if (trap)
    wasm_trap_delete(trap);
  if (err)
    wasmtime_error_delete(err);

  /* The store survives a trap: later calls still run. */
  args[0] = 1;
  args[1] = 1;
  ok = call_async(engine, ctx, &inst, "add", args, 2, &v, NULL, &trap, &err);
  check(ok && v == 2, "[store %d] call after the trap: add(1, 1) = %d", round,
        v);

  /* A runaway guest, interrupted by another thread's epoch ticks, is
   * stopped from the deadline callback. */
  struct ticker ticker;
  ticker_start(&ticker, engine);
  budget.yields = 0;
  budget.kill_after = 5;
  args[0] = INT32_MAX;
  ok = call_async(engine, ctx, &inst, "spin", args, 1, &v, &polls, &trap, &err);
  check(!ok && err && budget.yields == 5,
        "[store %d] spin(2^31-1) killed at its 5th epoch deadline", round);
  if (trap)
    wasm_trap_delete(trap);
  if (err)
    wasmtime_error_delete(err);

  /* Or by dropping its suspended future (an exit signal to a parked body):
   * the fiber is torn down and the store can still be used, then deleted. */
  budget.kill_after = 0;
  wasmtime_extern_t spin;
  wasmtime_instance_export_get(ctx, &inst, "spin", 4, &spin);
  wasmtime_val_t n = {.kind = WASMTIME_I32, .of.i32 = INT32_MAX}, r;
  trap = NULL;
  err = NULL;
  wasmtime_call_future_t *fut =
      wasmtime_func_call_async(ctx, &spin.of.func, &n, 1, &r, 1, &trap, &err);
  int pending = 0;
  while (pending < 3 && !wasmtime_call_future_poll(fut))
    pending++;
  wasmtime_call_future_delete(fut);
  ticker_stop(&ticker);
  args[0] = 2;
  args[1] = 2;
  ok = call_async(engine, ctx, &inst, "add", args, 2, &v, NULL, &trap, &err);
  check(pending == 3 && ok && v == 4,
        "[store %d] suspended call dropped after %d polls; add(2, 2) = %d",
        round, pending, v);
  if (!ok)
    print_error("add after drop", err, trap);

  wasmtime_store_delete(store);
}

/* Sync path: the same module without async imports is callable with
 * wasmtime_func_call (trapping, rather than yielding, at an epoch deadline). */
static void run_sync(wasm_engine_t *engine) {
  static const char wat[] = "(module (func (export \"add\") (param i32 i32)"
                            " (result i32) local.get 0 local.get 1 i32.add))";
  wasm_byte_vec_t wasm;
  wasmtime_error_t *err = wasmtime_wat2wasm(wat, strlen(wat), &wasm);
  if (err)
    die("wat2wasm", err, NULL);
  wasmtime_module_t *module = NULL;
  err = wasmtime_module_new(engine, (uint8_t *)wasm.data, wasm.size, &module);
  wasm_byte_vec_delete(&wasm);
  if (err)
    die("compile", err, NULL);
  wasmtime_store_t *store = wasmtime_store_new(engine, NULL, NULL);
  wasmtime_context_t *ctx = wasmtime_store_context(store);
  wasmtime_context_set_epoch_deadline(ctx, 1000);
  wasmtime_instance_t inst;
  wasm_trap_t *trap = NULL;
  err = wasmtime_instance_new(ctx, module, NULL, 0, &inst, &trap);
  if (err || trap)
    die("instantiate", err, trap);
  wasmtime_extern_t ext;
  wasmtime_instance_export_get(ctx, &inst, "add", 3, &ext);
  wasmtime_val_t a[2] = {{.kind = WASMTIME_I32, .of.i32 = 2},
                         {.kind = WASMTIME_I32, .of.i32 = 3}};
  wasmtime_val_t r;
  err = wasmtime_func_call(ctx, &ext.of.func, a, 2, &r, 1, &trap);
  check(!err && !trap && r.of.i32 == 5, "sync wasmtime_func_call: add = %d",
        r.of.i32);
  if (err || trap)
    print_error("sync add", err, trap);
  wasmtime_store_delete(store);
  wasmtime_module_delete(module);
}

static wasm_byte_vec_t read_file(const char *path) {
  wasm_byte_vec_t v = {0};
  FILE *f = fopen(path, "rb");
  if (!f) {
    perror(path);
    exit(1);
  }
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  wasm_byte_vec_new_uninitialized(&v, (size_t)len);
  if (fread(v.data, 1, (size_t)len, f) != (size_t)len) {
    perror(path);
    exit(1);
  }
  fclose(f);
  return v;
}

/* Runs a WASI p1 command: default-deny except inherited stdout/stderr. */
static void run_wasi(wasm_engine_t *engine, const char *path) {
  wasm_byte_vec_t wasm = read_file(path);
  wasmtime_module_t *module = NULL;
  wasmtime_error_t *err =
      wasmtime_module_new(engine, (uint8_t *)wasm.data, wasm.size, &module);
  wasm_byte_vec_delete(&wasm);
  if (err)
    die("compile guest", err, NULL);
  wasmtime_linker_t *linker = wasmtime_linker_new(engine);
  err = wasmtime_linker_define_wasi(linker);
  if (err)
    die("define wasi", err, NULL);
  wasmtime_store_t *store = wasmtime_store_new(engine, NULL, NULL);
  wasmtime_context_t *ctx = wasmtime_store_context(store);
  wasmtime_context_set_epoch_deadline(ctx, 1000000);
  wasi_config_t *wasi = wasi_config_new();
  wasi_config_inherit_stdout(wasi);
  wasi_config_inherit_stderr(wasi);
  err = wasmtime_context_set_wasi(ctx, wasi); /* takes ownership */
  if (err)
    die("set wasi", err, NULL);
  wasmtime_instance_t inst;
  wasm_trap_t *trap = NULL;
  err = wasmtime_linker_instantiate(linker, ctx, module, &inst, &trap);
  if (err || trap)
    die("instantiate guest", err, trap);
  wasmtime_extern_t start;
  if (!wasmtime_instance_export_get(ctx, &inst, "_start", 6, &start))
    die("guest has no _start", NULL, NULL);
  fflush(stdout);
  err = wasmtime_func_call(ctx, &start.of.func, NULL, 0, NULL, 0, &trap);
  int status = 0;
  if (err && wasmtime_error_exit_status(err, &status)) {
    wasmtime_error_delete(err); /* proc_exit(status) */
    err = NULL;
  }
  check(!err && !trap && status == 0, "WASI p1 guest %s exited %d", path,
        status);
  if (err || trap)
    print_error("guest", err, trap);
  wasmtime_store_delete(store);
  wasmtime_linker_delete(linker);
  wasmtime_module_delete(module);
}

int main(int argc, char **argv) {
  wasm_config_t *config = wasm_config_new();
  wasmtime_config_epoch_interruption_set(config, true);
  wasmtime_config_memory_init_cow_set(config, true);
  wasmtime_pooling_allocation_config_t *pool =
      wasmtime_pooling_allocation_config_new();
  wasmtime_pooling_allocation_config_total_core_instances_set(pool, 8);
  wasmtime_pooling_allocation_config_total_memories_set(pool, 8);
  wasmtime_pooling_allocation_config_total_tables_set(pool, 8);
  wasmtime_pooling_allocation_config_total_stacks_set(pool, 8);
  wasmtime_pooling_allocation_config_total_component_instances_set(pool, 0);
  wasmtime_pooling_allocation_config_max_memory_size_set(pool, 1 << 20);
  wasmtime_pooling_allocation_config_max_unused_warm_slots_set(pool, 4);
  wasmtime_pooling_allocation_strategy_set(config, pool);
  wasmtime_pooling_allocation_config_delete(pool);
  wasm_engine_t *engine = wasm_engine_new_with_config(config); /* owns it */
  if (!engine)
    die("engine", NULL, NULL);

  wasm_byte_vec_t wasm;
  wasmtime_error_t *err =
      wasmtime_wat2wasm(module_wat, strlen(module_wat), &wasm);
  if (err)
    die("wat2wasm", err, NULL);
  wasmtime_module_t *module = NULL;
  err = wasmtime_module_new(engine, (uint8_t *)wasm.data, wasm.size, &module);
  wasm_byte_vec_delete(&wasm);
  if (err)
    die("compile", err, NULL);
  check(true, "engine (pooling allocator, CoW, epochs) + WAT module compiled");

  wasmtime_linker_t *linker = wasmtime_linker_new(engine);
  wasm_functype_t *ty =
      wasm_functype_new_1_1(wasm_valtype_new_i32(), wasm_valtype_new_i32());
  err = wasmtime_linker_define_async_func(linker, "host", 4, "wait", 4, ty,
                                          host_wait, NULL, NULL);
  wasm_functype_delete(ty);
  if (err)
    die("define host.wait", err, NULL);
  wasmtime_instance_pre_t *pre = NULL;
  err = wasmtime_linker_instantiate_pre(linker, module, &pre);
  if (err)
    die("instantiate_pre", err, NULL);

  /* More stores than one so that pool slots are reused. */
  for (int round = 1; round <= 3; round++)
    run_store(engine, pre, round);
  run_sync(engine);
  if (argc > 1)
    run_wasi(engine, argv[1]);

  wasmtime_instance_pre_delete(pre);
  wasmtime_linker_delete(linker);
  wasmtime_module_delete(module);
  wasm_engine_delete(engine);
  printf("%s: %d failed\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
