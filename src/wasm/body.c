/*
 * body.c — a Wasm process: an ordinary generic body (rusm_spawn_body).
 *
 * Its first step reserves a pooled slot (or takes the overflow tier), makes
 * the store and starts the instantiation as a poll-driven future; the next
 * polls finish it and start the entry export with wasmtime_func_call_async.
 * Every step polls that one future:
 *   - ready: the guest returned, trapped or exited: RUSM_STEP_EXIT;
 *   - pending in `receive` or a WASI sleep (a parked continuation,
 *     p->parked): RUSM_STEP_WAIT with its deadline; a message, signal or
 *     the deadline runs the step again, which re-polls the continuation;
 *   - pending at an epoch deadline (the guest used its slice):
 *     RUSM_STEP_YIELD.
 * A kill or exit signal is acted on by the core before the step: the
 * process is reaped without resuming the guest and destroy drops the
 * future (the suspended fiber) and the store.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasm/wasm_int.h"

enum { PH_NEW = 0, PH_INST = 1, PH_RUN = 2 };

static rusm_step w_step(rusm_proc *self, void *state);
static void w_destroy(rusm_proc *self, void *state, const rusm_reason *why);

static const rusm_body_ops wasm_ops = {"wasm", w_step, w_destroy};

#define INC(f) atomic_fetch_add_explicit(&w->f, 1, memory_order_relaxed)
#define DEC(f) atomic_fetch_sub_explicit(&w->f, 1, memory_order_relaxed)

/* ---- guest output ----------------------------------------------------- */

void rusm__wasm_log(rusm_wasm *w, rusm_pid_t pid, int level,
                    rusm_wasm_log_source src, const char *data, size_t len) {
  if (w->opts.log) {
    w->opts.log(w->opts.log_arg, pid, level, src, data, len);
    return;
  }
  static const char *const names[] = {"debug", "info", "warn", "error"};
  char ps[48];
  rusm_pid_format(pid, ps, sizeof ps);
  const char *lv = level >= 0 && level <= 3 ? names[level] : "info";
  fprintf(stderr, "[wasm %s %s] %.*s\n", ps, lv, (int)len, data);
}

static void line_emit(wproc *p, int fd) {
  rusm__wasm_log(p->w, p->pid,
                 fd == 0 ? RUSM_WASM_LOG_INFO : RUSM_WASM_LOG_WARN,
                 fd == 0 ? RUSM_WASM_LOG_STDOUT : RUSM_WASM_LOG_STDERR,
                 p->line[fd], p->line_len[fd]);
  p->line_len[fd] = 0;
}

/* WASI stdout/stderr: lines to the log. Wasmtime calls this while the guest
 * waits in fd_write (possibly from its I/O thread), never concurrently for
 * one process. */
static ptrdiff_t out_write(wproc *p, int fd, const unsigned char *buf,
                           size_t len) {
  if (!p->line[fd] && !(p->line[fd] = malloc(WASM_LINE_MAX)))
    return (ptrdiff_t)len; /* out of memory: the output is lost */
  for (size_t i = 0; i < len; i++) {
    if (buf[i] == '\n') {
      line_emit(p, fd);
      continue;
    }
    p->line[fd][p->line_len[fd]++] = (char)buf[i];
    if (p->line_len[fd] == WASM_LINE_MAX)
      line_emit(p, fd);
  }
  return (ptrdiff_t)len;
}

static ptrdiff_t on_stdout(void *data, const unsigned char *buf, size_t len) {
  return out_write(data, 0, buf, len);
}

static ptrdiff_t on_stderr(void *data, const unsigned char *buf, size_t len) {
  return out_write(data, 1, buf, len);
}

/* ---- spawn ------------------------------------------------------------ */

void rusm_wasm_spawn_opts_init(rusm_wasm_spawn_opts *o) {
  memset(o, 0, sizeof(*o));
  rusm_spawn_opts_init(&o->proc);
}

static void wproc_free(wproc *p) {
  rusm_wasm *w = p->w;
  for (int fd = 0; fd < 2; fd++)
    free(p->line[fd]);
  free(p->exit_detail);
  free(p->arg);
  rusm_wasm_module_release(p->m);
  free(p);
  rusm__wasm_unref(w);
}

int rusm__wasm_spawn(rusm_wasm_module *m, const char *entry,
                     const rusm_wasm_spawn_opts *o, rusm_pid_t *out) {
  rusm_wasm *w = m->w;
  if (!o->arg && o->arg_len)
    return RUSM_EINVAL;
  wproc *p = calloc(1, sizeof(*p));
  if (!p)
    return RUSM_ENOMEM;
  if (o->arg_len) {
    p->arg = malloc(o->arg_len);
    if (!p->arg) {
      free(p);
      return RUSM_ENOMEM;
    }
    memcpy(p->arg, o->arg, o->arg_len);
    p->arg_len = o->arg_len;
  }
  rusm__wasm_ref(w);
  p->w = w;
  p->m = rusm_wasm_module_ref(m);
  p->entry = entry;
  p->max_memory = o->max_memory ? o->max_memory : w->opts.max_memory;
  p->caps = o->caps;
  p->trap_exit = o->trap_exit;
  p->tier = -1;
  rusm_spawn_opts po = o->proc;
  /* trapping from the first instant, and linked atomically with the spawn:
   * no exit signal can come between the two */
  po.trap_exit = o->trap_exit;
  if (INC(live) == 0)
    rusm__wasm_tick_wake(w);
  int rc = rusm_spawn_body(w->rt, &wasm_ops, p, &po, out);
  if (rc) {
    /* The core never ran destroy: the state is still ours. */
    DEC(live);
    wproc_free(p);
    return rc;
  }
  INC(spawned);
  return 0;
}

int rusm_wasm_spawn(rusm_wasm_module *m, const rusm_wasm_spawn_opts *opts,
                    rusm_pid_t *out) {
  if (!m)
    return RUSM_EINVAL;
  rusm_wasm_spawn_opts d;
  if (!opts) {
    rusm_wasm_spawn_opts_init(&d);
    opts = &d;
  }
  const char *entry =
      rusm__wasm_entry(m, opts->entry, opts->entry ? strlen(opts->entry) : 0);
  if (!entry)
    return RUSM_ENOTFOUND;
  return rusm__wasm_spawn(m, entry, opts, out);
}

/* ---- the store -------------------------------------------------------- */

/* Epoch deadline reached (the ticker advances the epoch every tick; the
 * deadline is one tick past the last resumption). Yield, unless this run
 * began less than half a tick ago: the deadline was then already near when
 * the run started (a long park), and yielding at once would cost a trip
 * through the run queue for nothing. */
static wasmtime_error_t *on_deadline(wasmtime_context_t *ctx, void *data,
                                     uint64_t *delta,
                                     wasmtime_update_deadline_kind_t *kind) {
  (void)ctx;
  wproc *p = data;
  int64_t half = (int64_t)p->w->opts.epoch_tick_us * 500;
  *delta = 1;
  if (p->force_yield || rusm_now_ns() - p->slice_start >= half) {
    p->force_yield = false;
    *kind = WASMTIME_UPDATE_DEADLINE_YIELD;
  } else {
    *kind = WASMTIME_UPDATE_DEADLINE_CONTINUE;
  }
  return NULL;
}

static void drop_store(wproc *p) {
  rusm_wasm *w = p->w;
  if (p->fut) {
    wasmtime_call_future_delete(p->fut); /* unwinds a suspended guest */
    p->fut = NULL;
  }
  if (p->store) {
    wasmtime_store_delete(p->store);
    p->store = NULL;
    p->ctx = NULL;
    p->has_mem = false;
  }
  if (p->tier >= 0) { /* an instance was made */
    DEC(instances_live);
    if (p->tier == TIER_POOL)
      DEC(pooled_live);
    else
      DEC(overflow_live);
    p->tier = -1;
  }
  /* After the store: the slot is back in Wasmtime's pool before another
   * spawn can count it free. */
  if (p->pool_slot) {
    atomic_fetch_sub_explicit(&w->pool_used, 1, memory_order_release);
    p->pool_slot = false;
  }
}

static bool reserve_slot(rusm_wasm *w) {
  uint32_t n = atomic_load_explicit(&w->pool_used, memory_order_relaxed);
  while (n < w->opts.pool_slots) {
    /* acquire: pairs with the release in drop_store */
    if (atomic_compare_exchange_weak_explicit(&w->pool_used, &n, n + 1,
                                              memory_order_acquire,
                                              memory_order_relaxed))
      return true;
  }
  return false;
}

static rusm_step exit_with(wproc *p, rusm_exit_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static rusm_step exit_with(wproc *p, rusm_exit_code code, const char *fmt,
                           ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(p->reason, sizeof p->reason, fmt, ap);
  va_end(ap);
  if (n < 0)
    n = 0;
  if ((size_t)n >= sizeof p->reason)
    n = (int)sizeof p->reason - 1;
  rusm_step st = {RUSM_STEP_EXIT, -1, RUSM_REASON_NORMAL};
  st.reason.code = code;
  st.reason.len = (uint32_t)n;
  st.reason.data = n ? (const uint8_t *)p->reason : NULL;
  return st;
}

/* Starts the instantiation (PH_INST). false: *st says how the process
 * ends. */
static bool start_instance(wproc *p, bool overflow_only, rusm_step *st) {
  rusm_wasm *w = p->w;
  int t = TIER_OVERFLOW;
  if (!overflow_only && reserve_slot(w)) {
    p->pool_slot = true;
    t = TIER_POOL;
  } else if (!w->opts.overflow) {
    *st = exit_with(p, RUSM_EXIT_CUSTOM, "wasm: pool full");
    return false;
  }
  char err[200];
  wasmtime_instance_pre_t *pre = rusm__wasm_pre(p->m, t, err, sizeof err);
  if (!pre) {
    drop_store(p);
    *st = exit_with(p, RUSM_EXIT_TRAP, "wasm: %s", err);
    return false;
  }
  p->store = wasmtime_store_new(w->tier[t].engine, p, NULL);
  p->ctx = wasmtime_store_context(p->store);
  int64_t limit = p->max_memory > INT64_MAX ? -1 : (int64_t)p->max_memory;
  wasmtime_store_limiter(p->store, limit, -1, -1, -1, -1);
  wasmtime_store_epoch_deadline_callback(p->store, on_deadline, p, NULL);
  wasmtime_context_set_epoch_deadline(p->ctx, 1);
  if (p->m->needs_wasi) {
    /* Default deny: no args, env, preopens or sockets; stdin closed;
     * clocks and random are always there. */
    wasi_config_t *wc = wasi_config_new();
    wasi_config_set_stdout_custom(wc, on_stdout, p, NULL);
    wasi_config_set_stderr_custom(wc, on_stderr, p, NULL);
    wasmtime_error_t *e = wasmtime_context_set_wasi(p->ctx, wc);
    if (e) {
      rusm__wasm_errmsg(e, NULL, false, err, sizeof err);
      wasmtime_error_delete(e);
      drop_store(p);
      *st = exit_with(p, RUSM_EXIT_TRAP, "wasm: WASI: %s", err);
      return false;
    }
  }
  p->trap = NULL;
  p->err = NULL;
  p->fut = wasmtime_instance_pre_instantiate_async(pre, p->ctx, &p->inst,
                                                   &p->trap, &p->err);
  p->phase = PH_INST;
  p->tier = -1;
  p->inst_tier = t;
  return true;
}

/* The instance exists: find memory and entry, start the call (PH_RUN). */
static bool start_call(wproc *p, rusm_step *st) {
  rusm_wasm *w = p->w;
  p->tier = p->inst_tier;
  INC(instances_live);
  if (p->tier == TIER_POOL) {
    INC(pooled_live);
    INC(pooled_total);
  } else {
    INC(overflow_live);
    INC(overflow_total);
  }
  wasmtime_extern_t ext;
  if (wasmtime_instance_export_get(p->ctx, &p->inst, "memory", 6, &ext) &&
      ext.kind == WASMTIME_EXTERN_MEMORY) {
    p->mem = ext.of.memory;
    p->has_mem = true;
    p->mem_reported = wasmtime_memory_data_size(p->ctx, &p->mem);
    rusm_set_memory(p->self, p->mem_reported);
  }
  if (!wasmtime_instance_export_get(p->ctx, &p->inst, p->entry,
                                    strlen(p->entry), &ext) ||
      ext.kind != WASMTIME_EXTERN_FUNC) {
    *st = exit_with(p, RUSM_EXIT_TRAP, "wasm: no entry export '%s'", p->entry);
    return false;
  }
  p->fn = ext.of.func;
  p->trap = NULL;
  p->err = NULL;
  p->fut = wasmtime_func_call_async(p->ctx, &p->fn, NULL, 0, NULL, 0, &p->trap,
                                    &p->err);
  p->phase = PH_RUN;
  return true;
}

/* The future is done: the reason the process exits with. */
static rusm_step finish(wproc *p) {
  rusm_step st = {RUSM_STEP_EXIT, -1, RUSM_REASON_NORMAL};
  char msg[sizeof p->reason];
  if (p->exiting) {
    st.reason.code = p->exit_code;
    st.reason.len = p->exit_len;
    st.reason.data = p->exit_detail;
  } else if (p->trap) {
    if (p->has_host_trap)
      snprintf(msg, sizeof msg, "%s", p->host_trap);
    else
      rusm__wasm_errmsg(NULL, p->trap, true, msg, sizeof msg);
    st = exit_with(p, RUSM_EXIT_TRAP, "%s", msg);
  } else if (p->err) {
    int status = 0;
    if (wasmtime_error_exit_status(p->err, &status)) { /* WASI proc_exit */
      if (status != 0)
        st = exit_with(p, RUSM_EXIT_CUSTOM, "exit status %d", status);
    } else {
      rusm__wasm_errmsg(p->err, NULL, true, msg, sizeof msg);
      st = exit_with(p, RUSM_EXIT_TRAP, "%s", msg);
    }
  }
  if (p->trap)
    wasm_trap_delete(p->trap);
  if (p->err)
    wasmtime_error_delete(p->err);
  p->trap = NULL;
  p->err = NULL;
  return st;
}

static rusm_step pending(wproc *p) {
  if (p->parked)
    return (rusm_step){RUSM_STEP_WAIT, p->park_deadline, RUSM_REASON_NORMAL};
  return (rusm_step){RUSM_STEP_YIELD, -1, RUSM_REASON_NORMAL};
}

static rusm_step w_step(rusm_proc *self, void *state) {
  wproc *p = state;
  rusm_step st;
  p->slice_start = rusm_now_ns();
  if (p->phase == PH_NEW) {
    p->self = self;
    p->pid = rusm_self(self);
    rusm_set_label(self, p->m->label);
    if (!start_instance(p, false, &st))
      return st;
  }
  if (p->phase == PH_INST) {
    if (!wasmtime_call_future_poll(p->fut))
      return pending(p);
    wasmtime_call_future_delete(p->fut);
    p->fut = NULL;
    if (p->err && !p->trap && !p->exiting && p->inst_tier == TIER_POOL &&
        p->w->opts.overflow) {
      /* The module does not fit the pool's limits (tables, memories,
       * instance size): the overflow tier has none. */
      wasmtime_error_delete(p->err);
      p->err = NULL;
      drop_store(p);
      if (!start_instance(p, true, &st))
        return st;
      return (rusm_step){RUSM_STEP_YIELD, -1, RUSM_REASON_NORMAL};
    }
    if (p->trap || p->err)
      return finish(p);
    if (!start_call(p, &st))
      return st;
  }
  if (!wasmtime_call_future_poll(p->fut))
    return pending(p);
  wasmtime_call_future_delete(p->fut);
  p->fut = NULL;
  return finish(p);
}

static void w_destroy(rusm_proc *self, void *state, const rusm_reason *why) {
  wproc *p = state;
  rusm_wasm *w = p->w;
  if (!p->pid)
    p->pid = rusm_self(self);
  drop_store(p);
  if (p->trap)
    wasm_trap_delete(p->trap);
  if (p->err)
    wasmtime_error_delete(p->err);
  for (int fd = 0; fd < 2; fd++)
    if (p->line_len[fd])
      line_emit(p, fd);
  if (why && why->code == RUSM_EXIT_TRAP)
    INC(traps);
  INC(exits);
  DEC(live);
  wproc_free(p);
}
