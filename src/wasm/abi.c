/*
 * abi.c — the host ABI of docs/wasm-abi.md (imports from module "rusm"),
 * plus default-deny WASI preview 1.
 *
 * Every call but `receive` is a synchronous host function (the unchecked
 * flavour: raw values, no per-call type checks). `receive` is an async host
 * function: when nothing matches it returns a continuation that the
 * process's step re-polls whenever the scheduler runs it again (a message,
 * a signal or the deadline), so a waiting guest holds no thread. WASI's
 * poll_oneoff (sleep) is shadowed the same way, and clock_time_get with
 * it (see below).
 *
 * Guest pointers: every (pointer, length) pair is checked against the
 * memory's current size before use; a bad one traps the calling guest with
 * "rusm.<call>: ..." and nothing else is touched.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wasm/wasm_int.h"

#define INFO_BYTES 32 /* msg_info */
#define WASI_P1 "wasi_snapshot_preview1"

typedef wasmtime_val_raw_t raw_t;

static wproc *proc_of(wasmtime_caller_t *caller) {
  return wasmtime_context_get_data(wasmtime_caller_context(caller));
}

wasm_trap_t *rusm__wasm_trap(wproc *p, const char *call, const char *what) {
  int n =
      snprintf(p->host_trap, sizeof p->host_trap, "rusm.%s: %s", call, what);
  if (n < 0)
    n = 0;
  if ((size_t)n >= sizeof p->host_trap)
    n = (int)sizeof p->host_trap - 1;
  p->has_host_trap = true;
  return wasmtime_trap_new(p->host_trap, (size_t)n);
}

/* The guest bytes [ptr, ptr + len) or NULL (*trap set). Lengths are
 * unsigned: a negative i32 is a huge length, out of bounds. */
static uint8_t *guest(wproc *p, wasmtime_caller_t *caller, int32_t ptr,
                      int32_t len, const char *call, wasm_trap_t **trap) {
  static uint8_t empty;
  uint64_t off = (uint32_t)ptr, n = (uint32_t)len;
  wasmtime_extern_t ext;
  if (!p->has_mem && /* a start function runs before the step looks */
      wasmtime_caller_export_get(caller, "memory", 6, &ext) &&
      ext.kind == WASMTIME_EXTERN_MEMORY) {
    p->mem = ext.of.memory;
    p->has_mem = true;
  }
  if (!p->has_mem) {
    if (off == 0 && n == 0)
      return &empty;
    *trap = rusm__wasm_trap(p, call, "the module exports no memory");
    return NULL;
  }
  wasmtime_context_t *ctx = wasmtime_caller_context(caller);
  uint64_t size = wasmtime_memory_data_size(ctx, &p->mem);
  if (off + n > size) {
    char what[96];
    snprintf(what, sizeof what, "pointer/length out of bounds (%u + %u > %llu)",
             (unsigned)off, (unsigned)n, (unsigned long long)size);
    *trap = rusm__wasm_trap(p, call, what);
    return NULL;
  }
  return wasmtime_memory_data(ctx, &p->mem) + off;
}

/* A name argument as a C string in buf (RUSM_NAME_MAX + 1 bytes): 0, or
 * RUSM_EINVAL (empty, too long, or holding a NUL). */
static int guest_name(const uint8_t *src, int32_t len, char *buf) {
  if (len <= 0 || len > RUSM_NAME_MAX || memchr(src, 0, (size_t)len))
    return RUSM_EINVAL;
  memcpy(buf, src, (size_t)len);
  buf[len] = '\0';
  return 0;
}

static bool good_code(int32_t code) {
  return code >= 0 && code < RUSM_EXIT__COUNT;
}

/* An exit signal or kill aimed at the caller itself acts at its next
 * drain: make the guest yield at its next epoch check so that the drain
 * comes now rather than after a slice. */
static void yield_soon(wproc *p, wasmtime_caller_t *caller) {
  p->force_yield = true;
  wasmtime_context_set_epoch_deadline(wasmtime_caller_context(caller), 0);
}

#define HOST(name)                                                             \
  static wasm_trap_t *h_##name(void *env, wasmtime_caller_t *caller, raw_t *a, \
                               size_t n)

HOST(abi_version) {
  a[0].i32 = RUSM_WASM_ABI_VERSION;
  return NULL;
}

HOST(self) {
  a[0].i64 = (int64_t)proc_of(caller)->pid;
  return NULL;
}

HOST(arg) {
  wproc *p = proc_of(caller);
  wasm_trap_t *trap = NULL;
  uint8_t *buf = guest(p, caller, a[0].i32, a[1].i32, "arg", &trap);
  if (!buf)
    return trap;
  size_t cap = (uint32_t)a[1].i32;
  if (p->arg_len)
    memcpy(buf, p->arg, p->arg_len < cap ? p->arg_len : cap);
  a[0].i32 = (int32_t)p->arg_len;
  return NULL;
}

HOST(send) {
  wproc *p = proc_of(caller);
  rusm_pid_t to = (rusm_pid_t)a[0].i64;
  uint64_t tag = (uint64_t)a[1].i64;
  int32_t ptr = a[2].i32, len = a[3].i32;
  wasm_trap_t *trap = NULL;
  uint8_t *data = guest(p, caller, ptr, len, "send", &trap);
  if (!data)
    return trap;
  a[0].i32 = rusm_send(p->w->rt, to, tag, data, (uint32_t)len);
  return NULL;
}

HOST(link) {
  a[0].i32 = rusm_link(proc_of(caller)->self, (rusm_pid_t)a[0].i64);
  return NULL;
}

HOST(unlink) {
  a[0].i32 = rusm_unlink(proc_of(caller)->self, (rusm_pid_t)a[0].i64);
  return NULL;
}

HOST(monitor) {
  rusm_ref ref = 0;
  int rc = rusm_monitor(proc_of(caller)->self, (rusm_pid_t)a[0].i64, &ref);
  a[0].i64 = rc < 0 ? rc : (int64_t)ref;
  return NULL;
}

HOST(demonitor) {
  rusm_ref ref = (rusm_ref)a[0].i64;
  unsigned flags = (a[1].i32 & 1) ? RUSM_DEMONITOR_FLUSH : 0;
  a[0].i32 = rusm_demonitor(proc_of(caller)->self, ref, flags);
  return NULL;
}

HOST(trap_exit) {
  a[0].i32 = rusm_trap_exit(proc_of(caller)->self, a[0].i32 != 0) ? 1 : 0;
  return NULL;
}

HOST(exit) {
  wproc *p = proc_of(caller);
  rusm_pid_t pid = (rusm_pid_t)a[0].i64;
  int32_t code = a[1].i32, ptr = a[2].i32, len = a[3].i32;
  wasm_trap_t *trap = NULL;
  uint8_t *data = guest(p, caller, ptr, len, "exit", &trap);
  if (!data)
    return trap;
  if (!good_code(code)) {
    a[0].i32 = RUSM_EINVAL;
    return NULL;
  }
  rusm_reason r = {(rusm_exit_code)code, (uint32_t)len, len ? data : NULL};
  a[0].i32 = rusm_exit(p->w->rt, pid, r);
  if (pid == p->pid)
    yield_soon(p, caller);
  return NULL;
}

HOST(exit_self) {
  wproc *p = proc_of(caller);
  int32_t code = a[0].i32, ptr = a[1].i32, len = a[2].i32;
  wasm_trap_t *trap = NULL;
  uint8_t *data = guest(p, caller, ptr, len, "exit_self", &trap);
  if (!data)
    return trap;
  if (!good_code(code))
    return rusm__wasm_trap(p, "exit_self", "bad exit code");
  free(p->exit_detail);
  p->exit_detail = NULL;
  p->exit_len = 0;
  if (len > 0) {
    p->exit_detail = malloc((uint32_t)len);
    if (p->exit_detail) {
      memcpy(p->exit_detail, data, (uint32_t)len);
      p->exit_len = (uint32_t)len;
    }
  }
  p->exit_code = (rusm_exit_code)code;
  p->exiting = true;
  /* A trap unwinds the guest; the step then exits with this reason. */
  return wasmtime_trap_new("exit_self", 9);
}

HOST(kill) {
  wproc *p = proc_of(caller);
  rusm_pid_t pid = (rusm_pid_t)a[0].i64;
  a[0].i32 = rusm_kill(p->w->rt, pid);
  if (pid == p->pid)
    yield_soon(p, caller);
  return NULL;
}

HOST(register) {
  wproc *p = proc_of(caller);
  wasm_trap_t *trap = NULL;
  uint8_t *src = guest(p, caller, a[0].i32, a[1].i32, "register", &trap);
  if (!src)
    return trap;
  char name[RUSM_NAME_MAX + 1];
  int rc = guest_name(src, a[1].i32, name);
  a[0].i32 = rc ? rc : rusm_register(p->w->rt, name, p->pid);
  return NULL;
}

HOST(whereis) {
  wproc *p = proc_of(caller);
  wasm_trap_t *trap = NULL;
  uint8_t *src = guest(p, caller, a[0].i32, a[1].i32, "whereis", &trap);
  if (!src)
    return trap;
  char name[RUSM_NAME_MAX + 1];
  a[0].i64 = guest_name(src, a[1].i32, name)
                 ? 0
                 : (int64_t)rusm_whereis(p->w->rt, name);
  return NULL;
}

HOST(send_named) {
  wproc *p = proc_of(caller);
  int32_t nptr = a[0].i32, nlen = a[1].i32, ptr = a[3].i32, len = a[4].i32;
  uint64_t tag = (uint64_t)a[2].i64;
  wasm_trap_t *trap = NULL;
  uint8_t *src = guest(p, caller, nptr, nlen, "send_named", &trap);
  if (!src)
    return trap;
  uint8_t *data = guest(p, caller, ptr, len, "send_named", &trap);
  if (!data)
    return trap;
  char name[RUSM_NAME_MAX + 1];
  int rc = guest_name(src, nlen, name);
  a[0].i32 =
      rc ? rc : rusm_send_named(p->w->rt, name, tag, data, (uint32_t)len);
  return NULL;
}

HOST(send_after) {
  wproc *p = proc_of(caller);
  int64_t delay = a[0].i64;
  rusm_pid_t to = (rusm_pid_t)a[1].i64;
  uint64_t tag = (uint64_t)a[2].i64;
  int32_t ptr = a[3].i32, len = a[4].i32;
  wasm_trap_t *trap = NULL;
  uint8_t *data = guest(p, caller, ptr, len, "send_after", &trap);
  if (!data)
    return trap;
  rusm_timer_ref ref = 0;
  int rc = rusm_send_after(p->w->rt, delay, to, tag, data, (uint32_t)len, &ref);
  a[0].i64 = rc < 0 ? rc : (int64_t)ref;
  return NULL;
}

HOST(cancel_timer) {
  a[0].i64 =
      rusm_cancel_timer(proc_of(caller)->w->rt, (rusm_timer_ref)a[0].i64);
  return NULL;
}

HOST(now_ns) {
  a[0].i64 = rusm_now_ns();
  return NULL;
}

HOST(log) {
  wproc *p = proc_of(caller);
  int32_t level = a[0].i32;
  wasm_trap_t *trap = NULL;
  uint8_t *data = guest(p, caller, a[1].i32, a[2].i32, "log", &trap);
  if (!data)
    return trap;
  if (level < RUSM_WASM_LOG_DEBUG)
    level = RUSM_WASM_LOG_DEBUG;
  if (level > RUSM_WASM_LOG_ERROR)
    level = RUSM_WASM_LOG_ERROR;
  rusm__wasm_log(p->w, p->pid, level, RUSM_WASM_LOG_CALL, (const char *)data,
                 (uint32_t)a[2].i32);
  return NULL;
}

HOST(spawn) {
  wproc *p = proc_of(caller);
  int32_t nptr = a[0].i32, nlen = a[1].i32, aptr = a[2].i32, alen = a[3].i32;
  int32_t flags = a[4].i32;
  wasm_trap_t *trap = NULL;
  uint8_t *name = guest(p, caller, nptr, nlen, "spawn", &trap);
  if (!name)
    return trap;
  uint8_t *arg = guest(p, caller, aptr, alen, "spawn", &trap);
  if (!arg)
    return trap;
  if (!(p->caps & RUSM_WASM_CAP_SPAWN)) {
    a[0].i64 = RUSM_ECONTEXT;
    return NULL;
  }
  /* "export" of this module, or "module:export" ("module:" for its
   * default entry) of a module registered with the host. */
  rusm_wasm_module *m = p->m;
  const char *exp = (const char *)name;
  size_t elen = (uint32_t)nlen;
  const uint8_t *colon = memchr(name, ':', (uint32_t)nlen);
  bool other = colon != NULL;
  if (other) {
    size_t mlen = (size_t)(colon - name);
    char mname[WASM_NAME_MAX + 1];
    if (mlen == 0 || mlen > WASM_NAME_MAX) {
      a[0].i64 = RUSM_ENOTFOUND;
      return NULL;
    }
    memcpy(mname, name, mlen);
    mname[mlen] = '\0';
    m = rusm_wasm_lookup(p->w, mname);
    if (!m) {
      a[0].i64 = RUSM_ENOTFOUND;
      return NULL;
    }
    exp = (const char *)colon + 1;
    elen = (uint32_t)nlen - mlen - 1;
  }
  const char *entry =
      elen == 0 ? rusm__wasm_entry(m, NULL, 0) : rusm__wasm_entry(m, exp, elen);
  int64_t rc = RUSM_ENOTFOUND;
  if (entry) {
    rusm_wasm_spawn_opts o;
    rusm_wasm_spawn_opts_init(&o);
    o.proc.link = flags & 1;
    o.trap_exit = (flags & 2) != 0;
    o.arg = arg;
    o.arg_len = (uint32_t)alen;
    o.caps = p->caps;
    o.max_memory = p->max_memory;
    rusm_pid_t pid = RUSM_PID_NONE;
    int r = rusm__wasm_spawn(m, entry, &o, &pid);
    rc = r < 0 ? r : (int64_t)pid;
  }
  if (other)
    rusm_wasm_module_release(m);
  a[0].i64 = rc;
  return NULL;
}

/* ---- receive ---------------------------------------------------------- */

/* The guest suspends in an async host call: report the memory it holds
 * (observers show parked processes) and let the step wait. */
static void park(wproc *p, wasmtime_context_t *ctx) {
  uint64_t size = p->has_mem ? wasmtime_memory_data_size(ctx, &p->mem) : 0;
  if (size != p->mem_reported) {
    p->mem_reported = size;
    rusm_set_memory(p->self, size);
  }
  p->parked = true;
}

/* Takes the first matching message, if any, into the guest's buffer and
 * writes its msg_info. */
static bool rx_take(wproc *p) {
  rusm_msg *msg = NULL;
  if (rusm_try_receive(p->self, &p->rx.f, &msg) != 0)
    return false;
  size_t len = rusm_msg_len(msg);
  size_t n = len < p->rx.cap ? len : p->rx.cap;
  if (n)
    memcpy(p->rx.base + p->rx.buf, rusm_msg_data(msg), n);
  uint8_t info[INFO_BYTES] = {0};
  uint64_t tag = rusm_msg_tag(msg), from = rusm_msg_from(msg);
  uint32_t full = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
  memcpy(info, &tag, 8); /* x86-64 is little-endian, as Wasm is */
  memcpy(info + 8, &from, 8);
  memcpy(info + 16, &full, 4);
  memcpy(p->rx.base + p->rx.info, info, INFO_BYTES);
  rusm_msg_free(msg);
  p->rx.result->kind = WASMTIME_I32;
  p->rx.result->of.i32 = (int32_t)n;
  return true;
}

static bool rx_ready(void *env) {
  (void)env;
  return true;
}

/* The continuation of a parked receive, polled by each step. While it
 * returns false the step reports RUSM_STEP_WAIT with park_deadline. */
static bool rx_poll(void *env) {
  wproc *p = env;
  if (rx_take(p) ||
      (p->park_deadline >= 0 && rusm_now_ns() >= p->park_deadline)) {
    p->parked = false;
    return true;
  }
  return false;
}

static void h_receive(void *env, wasmtime_caller_t *caller,
                      const wasmtime_val_t *args, size_t nargs,
                      wasmtime_val_t *results, size_t nresults,
                      wasm_trap_t **trap_ret,
                      wasmtime_async_continuation_t *cont) {
  wproc *p = proc_of(caller);
  cont->callback = rx_ready;
  cont->env = p;
  cont->finalizer = NULL;
  results[0].kind = WASMTIME_I32;
  results[0].of.i32 = RUSM_ETIMEDOUT;
  uint64_t value = (uint64_t)args[0].of.i64, mask = (uint64_t)args[1].of.i64;
  int64_t timeout = args[2].of.i64;
  int32_t buf = args[3].of.i32, cap = args[4].of.i32, info = args[5].of.i32;
  wasm_trap_t *trap = NULL;
  uint8_t *b = guest(p, caller, buf, cap, "receive", &trap);
  if (!b || !guest(p, caller, info, INFO_BYTES, "receive", &trap)) {
    *trap_ret = trap;
    return;
  }
  wasmtime_context_t *ctx = wasmtime_caller_context(caller);
  p->rx.f = (rusm_filter){value, mask, NULL, NULL};
  if (mask == 0) /* any message, whatever value says */
    p->rx.f.value = 0;
  p->rx.base = b - (uint32_t)buf;
  p->rx.buf = (uint32_t)buf;
  p->rx.cap = (uint32_t)cap;
  p->rx.info = (uint32_t)info;
  p->rx.result = &results[0];
  if (rx_take(p) || timeout == 0)
    return;
  int64_t now = rusm_now_ns();
  p->park_deadline = timeout < 0 || timeout > (INT64_MAX - now) / 1000000
                         ? -1
                         : now + timeout * 1000000;
  park(p, ctx);
  cont->callback = rx_poll;
}

/* ---- WASI clocks and poll_oneoff ------------------------------------------
 * Wasmtime's WASI p1 runs poll_oneoff (what sleep() becomes) by blocking
 * the calling thread, which would hold a scheduler for the whole sleep. The
 * host shadows it: clock subscriptions park the process until the earliest
 * deadline, like a receive; stdio subscriptions are ready at once (stdout
 * and stderr always writable, stdin closed: end of file) and other
 * descriptors report EBADF. clock_time_get is shadowed too, so that the
 * guest's monotonic clock is the runtime's (absolute deadlines convert). */

enum { WASI_EBADF = 8, WASI_EFAULT = 21, WASI_EINVAL = 28 };
enum { SUB_SIZE = 48, EVENT_SIZE = 32 };
enum { EV_CLOCK = 0, EV_FD_READ = 1, EV_FD_WRITE = 2 };

static uint64_t ld64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

static int64_t realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Whether (ptr, n items of size) lies in a memory of size bytes. */
static bool in_bounds(uint32_t ptr, uint64_t n, uint64_t size, uint64_t mem) {
  return (uint64_t)ptr + n * size <= mem;
}

/* The absolute rusm_now_ns() deadline of clock subscription s. */
static int64_t sub_deadline(const uint8_t *s, int64_t mono0, int64_t real0) {
  uint32_t id;
  uint16_t flags;
  memcpy(&id, s + 16, sizeof id);
  memcpy(&flags, s + 40, sizeof flags);
  uint64_t t = ld64(s + 24);
  int64_t v = t > INT64_MAX ? INT64_MAX : (int64_t)t;
  if (!(flags & 1)) /* relative */
    return v > INT64_MAX - mono0 ? INT64_MAX : mono0 + v;
  if (id == 0) /* realtime, absolute */
    return mono0 + (v - real0);
  return v; /* monotonic (and cputime, treated alike), absolute */
}

static void put_event(uint8_t *ev, uint64_t userdata, uint16_t err,
                      uint8_t type, uint64_t nbytes, uint16_t flags) {
  memset(ev, 0, EVENT_SIZE);
  memcpy(ev, &userdata, 8);
  memcpy(ev + 8, &err, 2);
  ev[10] = type;
  memcpy(ev + 16, &nbytes, 8);
  memcpy(ev + 24, &flags, 2);
}

/* Writes events for the clock subscriptions due by now, after the k events
 * already written; false when none is due. */
static bool clocks_due(wproc *p, uint32_t k) {
  wsleep *sl = &p->sl;
  int64_t now = rusm_now_ns();
  for (uint32_t i = 0; i < sl->nsubs; i++) {
    const uint8_t *s = sl->base + sl->in + (uint64_t)i * SUB_SIZE;
    if (s[8] == EV_CLOCK && sub_deadline(s, sl->mono0, sl->real0) <= now)
      put_event(sl->base + sl->out + (uint64_t)k++ * EVENT_SIZE, ld64(s), 0,
                EV_CLOCK, 0, 0);
  }
  if (!k)
    return false;
  memcpy(sl->base + sl->nevents, &k, sizeof k);
  return true;
}

static bool sleep_poll(void *env) {
  wproc *p = env;
  if (!clocks_due(p, 0))
    return false;
  p->parked = false;
  return true;
}

static void h_poll_oneoff(void *env, wasmtime_caller_t *caller,
                          const wasmtime_val_t *args, size_t nargs,
                          wasmtime_val_t *results, size_t nresults,
                          wasm_trap_t **trap_ret,
                          wasmtime_async_continuation_t *cont) {
  wproc *p = proc_of(caller);
  cont->callback = rx_ready;
  cont->env = p;
  cont->finalizer = NULL;
  results[0].kind = WASMTIME_I32;
  results[0].of.i32 = 0;
  uint32_t in = (uint32_t)args[0].of.i32, out = (uint32_t)args[1].of.i32;
  uint32_t n = (uint32_t)args[2].of.i32, nev = (uint32_t)args[3].of.i32;
  wasmtime_context_t *ctx = wasmtime_caller_context(caller);
  uint64_t mem = p->has_mem ? wasmtime_memory_data_size(ctx, &p->mem) : 0;
  if (n == 0) {
    results[0].of.i32 = WASI_EINVAL;
    return;
  }
  if (!in_bounds(in, n, SUB_SIZE, mem) || !in_bounds(out, n, EVENT_SIZE, mem) ||
      !in_bounds(nev, 1, 4, mem)) {
    results[0].of.i32 = WASI_EFAULT;
    return;
  }
  wsleep *sl = &p->sl;
  sl->base = wasmtime_memory_data(ctx, &p->mem);
  sl->in = in;
  sl->out = out;
  sl->nsubs = n;
  sl->nevents = nev;
  sl->mono0 = rusm_now_ns();
  sl->real0 = realtime_ns();
  /* Descriptors are ready (or bad) at once. */
  uint32_t k = 0;
  int64_t earliest = INT64_MAX;
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t *s = sl->base + in + (uint64_t)i * SUB_SIZE;
    uint8_t *ev = sl->base + out + (uint64_t)k * EVENT_SIZE;
    uint32_t fd;
    memcpy(&fd, s + 16, sizeof fd);
    if (s[8] == EV_CLOCK) {
      int64_t d = sub_deadline(s, sl->mono0, sl->real0);
      earliest = d < earliest ? d : earliest;
      continue;
    }
    k++;
    if (s[8] == EV_FD_READ && fd == 0)
      put_event(ev, ld64(s), 0, EV_FD_READ, 0, 1 /* hangup: closed */);
    else if (s[8] == EV_FD_WRITE && (fd == 1 || fd == 2))
      put_event(ev, ld64(s), 0, EV_FD_WRITE, 65536, 0);
    else
      put_event(ev, ld64(s), s[8] > EV_FD_WRITE ? WASI_EINVAL : WASI_EBADF,
                s[8], 0, 0);
  }
  if (k) {
    if (!clocks_due(p, k))
      memcpy(sl->base + nev, &k, sizeof k);
    return;
  }
  if (clocks_due(p, 0))
    return;
  p->park_deadline = earliest;
  park(p, ctx);
  cont->callback = sleep_poll;
}

/* clock_time_get(id, precision, out) -> errno */
static wasm_trap_t *h_clock_time_get(void *env, wasmtime_caller_t *caller,
                                     raw_t *a, size_t n) {
  wproc *p = proc_of(caller);
  int32_t id = a[0].i32;
  uint32_t at = (uint32_t)a[2].i32;
  wasmtime_context_t *ctx = wasmtime_caller_context(caller);
  uint64_t mem = p->has_mem ? wasmtime_memory_data_size(ctx, &p->mem) : 0;
  if (id < 0 || id > 3) {
    a[0].i32 = WASI_EINVAL;
    return NULL;
  }
  if (id > 1) { /* CPU-time clocks: not provided (as in Wasmtime's WASI) */
    a[0].i32 = WASI_EBADF;
    return NULL;
  }
  if (!in_bounds(at, 1, 8, mem)) {
    a[0].i32 = WASI_EFAULT;
    return NULL;
  }
  uint64_t now = (uint64_t)(id == 0 ? realtime_ns() : rusm_now_ns());
  memcpy(wasmtime_memory_data(ctx, &p->mem) + at, &now, sizeof now);
  a[0].i32 = 0;
  return NULL;
}

/* ---- the linker ------------------------------------------------------ */

static wasm_valtype_vec_t types(const char *sig) {
  wasm_valtype_vec_t v;
  size_t n = strlen(sig);
  wasm_valtype_vec_new_uninitialized(&v, n);
  for (size_t i = 0; i < n; i++)
    v.data[i] = wasm_valtype_new(sig[i] == 'I' ? WASM_I64 : WASM_I32);
  return v;
}

/* params / results: 'i' i32, 'I' i64. */
static wasm_functype_t *functype(const char *params, const char *results) {
  wasm_valtype_vec_t p = types(params), r = types(results);
  return wasm_functype_new(&p, &r); /* takes both vectors */
}

typedef struct hostfn {
  const char *name, *params, *results;
  wasmtime_func_unchecked_callback_t cb;
} hostfn;

static const hostfn HOSTFNS[] = {
    {"abi_version", "", "i", h_abi_version},
    {"self", "", "I", h_self},
    {"arg", "ii", "i", h_arg},
    {"send", "IIii", "i", h_send},
    {"spawn", "iiiii", "I", h_spawn},
    {"link", "I", "i", h_link},
    {"unlink", "I", "i", h_unlink},
    {"monitor", "I", "I", h_monitor},
    {"demonitor", "Ii", "i", h_demonitor},
    {"trap_exit", "i", "i", h_trap_exit},
    {"exit", "Iiii", "i", h_exit},
    {"exit_self", "iii", "", h_exit_self},
    {"kill", "I", "i", h_kill},
    {"register", "ii", "i", h_register},
    {"whereis", "ii", "I", h_whereis},
    {"send_named", "iiIii", "i", h_send_named},
    {"send_after", "IIIii", "I", h_send_after},
    {"cancel_timer", "I", "I", h_cancel_timer},
    {"now_ns", "", "I", h_now_ns},
    {"log", "iii", "", h_log},
};

wasmtime_error_t *rusm__wasm_define_abi(wasmtime_linker_t *linker) {
  wasmtime_error_t *e = NULL;
  for (size_t i = 0; !e && i < sizeof HOSTFNS / sizeof HOSTFNS[0]; i++) {
    const hostfn *h = &HOSTFNS[i];
    wasm_functype_t *ty = functype(h->params, h->results);
    e = wasmtime_linker_define_func_unchecked(
        linker, "rusm", 4, h->name, strlen(h->name), ty, h->cb, NULL, NULL);
    wasm_functype_delete(ty);
  }
  if (!e) {
    wasm_functype_t *ty = functype("IIIiii", "i");
    e = wasmtime_linker_define_async_func(linker, "rusm", 4, "receive", 7, ty,
                                          h_receive, NULL, NULL);
    wasm_functype_delete(ty);
  }
  if (!e)
    e = wasmtime_linker_define_wasi(linker);
  if (e)
    return e;
  wasmtime_linker_allow_shadowing(linker, true);
  wasm_functype_t *ty = functype("iiii", "i");
  e = wasmtime_linker_define_async_func(linker, WASI_P1, strlen(WASI_P1),
                                        "poll_oneoff", 11, ty, h_poll_oneoff,
                                        NULL, NULL);
  wasm_functype_delete(ty);
  if (!e) {
    ty = functype("iIi", "i");
    e = wasmtime_linker_define_func_unchecked(linker, WASI_P1, strlen(WASI_P1),
                                              "clock_time_get", 14, ty,
                                              h_clock_time_get, NULL, NULL);
    wasm_functype_delete(ty);
  }
  wasmtime_linker_allow_shadowing(linker, false);
  return e;
}
