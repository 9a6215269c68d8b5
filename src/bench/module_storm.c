/*
 * module-storm: a Wasm process spawns N Wasm processes of its own module,
 * each of which sends it one message and exits; ops = N spawns. The guest
 * is guests/c/spawner.c, plain C on rusm.h: its "main" spawns "child" in
 * batches of 512 and takes the children's messages between batches; it
 * times itself (now_ns before the first spawn, after the N-th message) and
 * reports to the attached main thread, which only waits.
 *
 * Every spawn is a full process: a pid, a mailbox, a fresh store and an
 * instance from the module's InstancePre in a pooled slot (copy-on-write
 * memory image), a first run, a send and the reaping path.
 *
 * Baseline: Wasmtime alone, the plain way: one thread instantiating the
 * same module from an InstancePre into a new store N times (same pooling
 * allocator and memory layout as the runtime's pool) and calling its
 * "child" export, whose two imports (arg, send) are minimal host functions
 * (send counts the message). No scheduling, no mailboxes, no async calls,
 * no epochs.
 */
#include "bench/bench_int.h"

#ifdef RUSM_HAVE_WASM

#include <stdio.h>
#include <string.h>

#include <wasmtime.h>

#include "../../guests/c/protocol.h"

#define STORM_BATCH 512

static int storm_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  rusm_wasm *w;
  rusm_wasm_module *m;
  int rc = rusm__bench_wasm_open(env->rt, NULL, "spawner", &w, &m);
  if (rc < 0)
    return rc;
  rusm__bench_waiter wt = {0};
  rc = rusm__bench_attach(env->rt, &wt);
  if (rc < 0) {
    rusm__bench_wasm_close(w, m);
    return rc;
  }
  guest_storm_arg a = {.report_to = wt.pid, .n = env->n, .batch = STORM_BATCH};
  rusm_pid_t parent;
  rc = rusm__bench_wasm_spawn(m, "main", &a, sizeof a, RUSM_WASM_CAP_SPAWN,
                              &parent);
  guest_storm_report rep = {0};
  if (rc == 0) {
    rusm_msg *msg = NULL;
    rc = rusm__bench_take(&wt, GUEST_TAG_REPORT, &msg);
    if (rc == 0) {
      if (rusm_msg_len(msg) == sizeof rep)
        memcpy(&rep, rusm_msg_data(msg), sizeof rep);
      else
        rc = RUSM_EINVAL;
      rusm_msg_free(msg);
    }
  }
  if (rc == 0)
    rc = rusm_rt_wait_idle(env->rt, RUSM_BENCH_WAIT_MS);
  rusm__bench_detach(&wt);
  rusm__bench_wasm_close(w, m);
  if (rc == 0 && rep.err) {
    fprintf(stderr, "module-storm: spawn failed: %s\n", rusm_strerror(rep.err));
    rc = rep.err;
  }
  if (rc == 0 && rep.got != env->n)
    rc = RUSM_EINVAL;
  if (rc < 0)
    return rc;
  out->ops = rep.got;
  out->ns = rep.t_end - rep.t_start;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Baseline: InstancePre instantiate + call, Wasmtime's C API directly */
/* ------------------------------------------------------------------ */

typedef struct bare {
  uint64_t parent; /* what arg hands out */
  uint64_t sent;   /* messages "sent" */
} bare;

/* rusm.arg(buf, cap) -> i32: the parent pid, as the runtime would. */
static wasm_trap_t *bare_arg(void *env, wasmtime_caller_t *caller,
                             wasmtime_val_raw_t *a, size_t n) {
  bare *b = env;
  wasmtime_extern_t mem;
  if (!wasmtime_caller_export_get(caller, "memory", 6, &mem) ||
      mem.kind != WASMTIME_EXTERN_MEMORY)
    return wasmtime_trap_new("no memory", 9);
  wasmtime_context_t *ctx = wasmtime_caller_context(caller);
  uint64_t off = (uint32_t)a[0].i32, cap = (uint32_t)a[1].i32;
  if (off + cap > wasmtime_memory_data_size(ctx, &mem.of.memory))
    return wasmtime_trap_new("out of bounds", 13);
  if (cap >= sizeof b->parent)
    memcpy(wasmtime_memory_data(ctx, &mem.of.memory) + off, &b->parent,
           sizeof b->parent);
  a[0].i32 = (int32_t)sizeof b->parent;
  return NULL;
}

/* rusm.send(pid, tag, ptr, len) -> i32: counts. */
static wasm_trap_t *bare_send(void *env, wasmtime_caller_t *caller,
                              wasmtime_val_raw_t *a, size_t n) {
  bare *b = env;
  b->sent++;
  a[0].i32 = 0;
  return NULL;
}

static wasm_functype_t *fty(const wasm_valkind_t *p, size_t np,
                            wasm_valkind_t r) {
  wasm_valtype_vec_t params, results;
  wasm_valtype_vec_new_uninitialized(&params, np);
  for (size_t i = 0; i < np; i++)
    params.data[i] = wasm_valtype_new(p[i]);
  wasm_valtype_vec_new_uninitialized(&results, 1);
  results.data[0] = wasm_valtype_new(r);
  return wasm_functype_new(&params, &results);
}

static bool bare_fail(const char *what, wasmtime_error_t *e, wasm_trap_t *t) {
  if (!e && !t)
    return false;
  wasm_byte_vec_t msg = {0, NULL};
  if (e)
    wasmtime_error_message(e, &msg);
  else
    wasm_trap_message(t, &msg);
  fprintf(stderr, "module-storm baseline: %s: %.*s\n", what, (int)msg.size,
          msg.data);
  wasm_byte_vec_delete(&msg);
  if (e)
    wasmtime_error_delete(e);
  if (t)
    wasm_trap_delete(t);
  return true;
}

static int storm_baseline(const rusm_bench_env *env, rusm_bench_sample *out) {
  char path[4096];
  int rc = rusm__bench_guest_path("spawner", path, sizeof path);
  if (rc < 0)
    return rc;
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    fprintf(stderr, "bench: no guest %s (scripts/guests-build)\n", path);
    return RUSM_ENOTFOUND;
  }
  wasm_byte_vec_t bytes;
  long size = fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : -1;
  if (size > 0 && fseek(fp, 0, SEEK_SET) != 0)
    size = -1;
  wasm_byte_vec_new_uninitialized(&bytes, size > 0 ? (size_t)size : 0);
  bool read_ok = size > 0 && fread(bytes.data, 1, bytes.size, fp) == bytes.size;
  (void)fclose(fp); /* read-only: nothing to lose */
  if (!read_ok) {
    wasm_byte_vec_delete(&bytes);
    return RUSM_ESYS;
  }

  /* The runtime pool's shape (rusm_wasm_opts defaults), sync calls. */
  rusm_wasm_opts d;
  rusm_wasm_opts_init(&d);
  wasm_config_t *cfg = wasm_config_new();
  wasmtime_config_memory_init_cow_set(cfg, true);
  wasmtime_config_memory_reservation_set(cfg, d.memory_reservation);
  wasmtime_config_memory_guard_size_set(cfg, d.memory_guard);
  wasmtime_config_concurrency_support_set(cfg, false);
  wasmtime_pooling_allocation_config_t *pc =
      wasmtime_pooling_allocation_config_new();
  wasmtime_pooling_allocation_config_total_core_instances_set(pc, d.pool_slots);
  wasmtime_pooling_allocation_config_total_memories_set(pc, d.pool_slots);
  wasmtime_pooling_allocation_config_total_tables_set(pc, d.pool_slots);
  wasmtime_pooling_allocation_config_total_stacks_set(pc, d.pool_slots);
  wasmtime_pooling_allocation_config_total_component_instances_set(pc, 0);
  wasmtime_pooling_allocation_config_max_memory_size_set(
      pc, (size_t)d.memory_reservation);
  wasmtime_pooling_allocation_strategy_set(cfg, pc);
  wasmtime_pooling_allocation_config_delete(pc);
  wasm_engine_t *engine = wasm_engine_new_with_config(cfg);
  if (!engine) {
    wasm_byte_vec_delete(&bytes);
    return RUSM_ENOMEM;
  }

  bare b = {.parent = 1};
  wasmtime_module_t *mod = NULL;
  wasmtime_linker_t *linker = wasmtime_linker_new(engine);
  wasmtime_instance_pre_t *pre = NULL;
  rc = RUSM_EINVAL;
  if (bare_fail("compile",
                wasmtime_module_new(engine, (const uint8_t *)bytes.data,
                                    bytes.size, &mod),
                NULL))
    goto done;
  static const wasm_valkind_t arg_p[] = {WASM_I32, WASM_I32};
  static const wasm_valkind_t send_p[] = {WASM_I64, WASM_I64, WASM_I32,
                                          WASM_I32};
  wasm_functype_t *t_arg = fty(arg_p, 2, WASM_I32);
  wasm_functype_t *t_send = fty(send_p, 4, WASM_I32);
  wasmtime_error_t *e = wasmtime_linker_define_func_unchecked(
      linker, "rusm", 4, "arg", 3, t_arg, bare_arg, &b, NULL);
  if (!e)
    e = wasmtime_linker_define_func_unchecked(linker, "rusm", 4, "send", 4,
                                              t_send, bare_send, &b, NULL);
  wasm_functype_delete(t_arg);
  wasm_functype_delete(t_send);
  /* The parent's imports (spawn, receive ...) are never called here. */
  if (!e)
    e = wasmtime_linker_define_unknown_imports_as_traps(linker, mod);
  if (!e)
    e = wasmtime_linker_instantiate_pre(linker, mod, &pre);
  if (bare_fail("link", e, NULL))
    goto done;

  int64_t t0 = rusm_now_ns();
  for (uint64_t i = 0; i < env->n; i++) {
    wasmtime_store_t *store = wasmtime_store_new(engine, NULL, NULL);
    wasmtime_context_t *ctx = wasmtime_store_context(store);
    wasmtime_instance_t inst;
    wasm_trap_t *trap = NULL;
    e = wasmtime_instance_pre_instantiate(pre, ctx, &inst, &trap);
    wasmtime_extern_t child;
    if (!e && !trap &&
        (!wasmtime_instance_export_get(ctx, &inst, "child", 5, &child) ||
         child.kind != WASMTIME_EXTERN_FUNC))
      e = wasmtime_error_new("no export child");
    if (!e && !trap)
      e = wasmtime_func_call(ctx, &child.of.func, NULL, 0, NULL, 0, &trap);
    wasmtime_store_delete(store);
    if (bare_fail("run", e, trap))
      goto done;
  }
  int64_t t1 = rusm_now_ns();
  rc = b.sent == env->n ? 0 : RUSM_EINVAL;
  out->ops = b.sent;
  out->ns = t1 - t0;

done:
  if (pre)
    wasmtime_instance_pre_delete(pre);
  wasmtime_linker_delete(linker);
  if (mod)
    wasmtime_module_delete(mod);
  wasm_engine_delete(engine);
  wasm_byte_vec_delete(&bytes);
  return rc;
}

const rusm_bench_scenario rusm__bench_module_storm = {
    .name = "module-storm",
    .summary = "a Wasm process spawns N Wasm processes of its module "
               "(guests/c/spawner.c) that each message it once and exit",
    .baseline_summary = "one thread: Wasmtime InstancePre instantiate + call "
                        "of the same module, N times (C API, same pool)",
    .kind = RUSM_BENCH_THROUGHPUT,
    .default_n = 20000,
    .min_n = 1,
    .run = storm_run,
    .baseline = storm_baseline,
};

#else
typedef int rusm__bench_no_module_storm;
#endif /* RUSM_HAVE_WASM */
