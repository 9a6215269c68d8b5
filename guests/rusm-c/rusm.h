/*
 * rusm.h — the C guest library of RUSM (rusm-c): everything a WebAssembly
 * process can ask of the runtime, over the host ABI of docs/wasm-abi.md
 * (version 1). Header only: include it and build with scripts/guests-build
 * (clang --target=wasm32-wasi, wasi-libc); see docs/guests.md.
 *
 * Two layers:
 *  - rusm_raw_<name>: the imports of module "rusm", one per row of the
 *    ABI table, with the ABI's exact types (pointers are guest addresses,
 *    lengths are i32);
 *  - rusm_<name>: friendly wrappers (C strings, size_t, structs) with the
 *    runtime's conventions: 0 or a non-negative value on success, a
 *    negative RUSM_E* code on failure. Calls returning a pid, a ref or a
 *    time return int64_t: a value for which rusm_is_err() holds is an error
 *    code, anything else is the result.
 *
 * Ownership: the runtime never keeps a pointer into guest memory; every
 * call copies what it reads before returning, so buffers may be reused at
 * once. Nothing here allocates.
 *
 * A process runs one exported function `void f(void)` of its module, named
 * at spawn ("main" by default). Define it with RUSM_ENTRY:
 *
 *     #include "rusm.h"
 *     RUSM_ENTRY("main", echo_main) {
 *       char buf[256];
 *       rusm_msg_info info;
 *       for (;;) {
 *         int32_t n = rusm_receive(NULL, -1, buf, sizeof buf, &info);
 *         if (n >= 0 && info.from)
 *           rusm_send(info.from, info.tag, buf, (size_t)n);
 *       }
 *     }
 */
#ifndef RUSM_GUEST_H
#define RUSM_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "rusm_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

#if !defined(__wasm__)
#error "rusm.h is for WebAssembly guests (clang --target=wasm32-wasi)"
#endif

/* Exports a function under name. */
#define RUSM_EXPORT(name) __attribute__((export_name(name)))

/* Defines an entry point: a `void fn(void)` exported as name, which a
 * process can run (the prototype keeps -Wmissing-prototypes quiet):
 *     RUSM_ENTRY("main", my_main) { ... }                                  */
#define RUSM_ENTRY(name, fn)                                                   \
  void fn(void);                                                               \
  RUSM_EXPORT(name) void fn(void)

typedef uint64_t rusm_pid_t;     /* a process id; 0 is never a process */
typedef uint64_t rusm_ref;       /* a monitor reference; never 0 */
typedef uint64_t rusm_timer_ref; /* a timer reference; never 0 */

#define RUSM_PID_NONE ((rusm_pid_t)0)

/* ------------------------------------------------------------------ */
/* The imports (module "rusm"), exactly as docs/wasm-abi.md lists them  */
/* ------------------------------------------------------------------ */

#define RUSM__IMPORT(name)                                                     \
  __attribute__((import_module("rusm"), import_name(name)))

RUSM__IMPORT("abi_version") int32_t rusm_raw_abi_version(void);
RUSM__IMPORT("self") int64_t rusm_raw_self(void);
RUSM__IMPORT("arg") int32_t rusm_raw_arg(void *buf, int32_t cap);
RUSM__IMPORT("send")
int32_t rusm_raw_send(int64_t pid, int64_t tag, const void *ptr, int32_t len);
RUSM__IMPORT("receive")
int32_t rusm_raw_receive(int64_t value, int64_t mask, int64_t timeout_ms,
                         void *buf, int32_t cap, void *info);
RUSM__IMPORT("spawn")
int64_t rusm_raw_spawn(const void *name, int32_t name_len, const void *arg,
                       int32_t arg_len, int32_t flags);
RUSM__IMPORT("link") int32_t rusm_raw_link(int64_t pid);
RUSM__IMPORT("unlink") int32_t rusm_raw_unlink(int64_t pid);
RUSM__IMPORT("monitor") int64_t rusm_raw_monitor(int64_t pid);
RUSM__IMPORT("demonitor")
int32_t rusm_raw_demonitor(int64_t ref, int32_t flags);
RUSM__IMPORT("trap_exit") int32_t rusm_raw_trap_exit(int32_t on);
RUSM__IMPORT("exit")
int32_t rusm_raw_exit(int64_t pid, int32_t code, const void *ptr, int32_t len);
RUSM__IMPORT("exit_self")
__attribute__((noreturn)) void rusm_raw_exit_self(int32_t code, const void *ptr,
                                                  int32_t len);
RUSM__IMPORT("kill") int32_t rusm_raw_kill(int64_t pid);
RUSM__IMPORT("register")
int32_t rusm_raw_register(const void *name, int32_t len);
RUSM__IMPORT("whereis") int64_t rusm_raw_whereis(const void *name, int32_t len);
RUSM__IMPORT("send_named")
int32_t rusm_raw_send_named(const void *name, int32_t len, int64_t tag,
                            const void *ptr, int32_t len2);
RUSM__IMPORT("send_after")
int64_t rusm_raw_send_after(int64_t delay_ms, int64_t pid, int64_t tag,
                            const void *ptr, int32_t len);
RUSM__IMPORT("cancel_timer") int64_t rusm_raw_cancel_timer(int64_t ref);
RUSM__IMPORT("now_ns") int64_t rusm_raw_now_ns(void);
RUSM__IMPORT("log")
void rusm_raw_log(int32_t level, const void *ptr, int32_t len);

#undef RUSM__IMPORT

/* ------------------------------------------------------------------ */
/* Results                                                             */
/* ------------------------------------------------------------------ */

/* Whether a 64-bit result is an error code rather than a pid, ref or
 * count. Error codes are small negative numbers; the range is kept wide
 * (as Linux does for its syscalls) so new codes fit. */
static inline bool rusm_is_err(int64_t v) { return v < 0 && v >= -4095; }

/* The symbolic name of an error code ("RUSM_ENOPROC"), never NULL. */
static inline const char *rusm_err_name(int64_t err) {
  switch (err) {
#define RUSM__NAME(name, value)                                                \
  case value:                                                                  \
    return #name;
    RUSM_ABI_ERRORS(RUSM__NAME)
#undef RUSM__NAME
  default:
    return "RUSM_E?";
  }
}

/* "normal", "killed" ... (never NULL). */
static inline const char *rusm_exit_code_name(int32_t code) {
  static const char *const names[] = {"normal", "killed",       "shutdown",
                                      "noproc", "noconnection", "trap",
                                      "custom", "kill"};
  return code >= 0 && code < (int32_t)(sizeof names / sizeof names[0])
             ? names[code]
             : "unknown";
}

/* ------------------------------------------------------------------ */
/* Identity and arguments                                              */
/* ------------------------------------------------------------------ */

static inline int32_t rusm_abi_version(void) { return rusm_raw_abi_version(); }

/* The calling process's pid. */
static inline rusm_pid_t rusm_self(void) { return (rusm_pid_t)rusm_raw_self(); }

/* Copies at most cap bytes of the spawn argument into buf; returns the
 * argument's full length (larger than cap when it did not fit). */
static inline int32_t rusm_arg(void *buf, size_t cap) {
  return rusm_raw_arg(buf, (int32_t)cap);
}

/* The spawn argument read as one pid (8 bytes, the common case of a
 * parent passing its own pid), or RUSM_PID_NONE when it is not 8 bytes. */
static inline rusm_pid_t rusm_arg_pid(void) {
  rusm_pid_t pid = RUSM_PID_NONE;
  if (rusm_raw_arg(&pid, sizeof pid) != (int32_t)sizeof pid)
    return RUSM_PID_NONE;
  return pid;
}

static inline uint32_t rusm_pid_node(rusm_pid_t p) {
  return (uint32_t)(p >> (RUSM_PID_SLOT_BITS + RUSM_PID_GEN_BITS));
}
static inline uint32_t rusm_pid_slot(rusm_pid_t p) {
  return (uint32_t)(p >> RUSM_PID_GEN_BITS) &
         ((UINT32_C(1) << RUSM_PID_SLOT_BITS) - 1);
}
static inline uint32_t rusm_pid_gen(rusm_pid_t p) {
  return (uint32_t)p & ((UINT32_C(1) << RUSM_PID_GEN_BITS) - 1);
}

/* Formats "<node.slot.gen>" into buf (NUL-terminated, truncated to len);
 * returns the length it would have written, like snprintf. */
static inline int rusm_pid_format(rusm_pid_t pid, char *buf, size_t len) {
  return snprintf(buf, len, "<%u.%u.%u>", (unsigned)rusm_pid_node(pid),
                  (unsigned)rusm_pid_slot(pid), (unsigned)rusm_pid_gen(pid));
}

/* ------------------------------------------------------------------ */
/* Messages                                                            */
/* ------------------------------------------------------------------ */

/* What receive writes at info: 32 bytes, little-endian. */
typedef struct rusm_msg_info {
  uint64_t tag;
  rusm_pid_t from; /* RUSM_PID_NONE when sent from outside any process */
  uint32_t len;    /* the full payload length (> cap when truncated) */
  uint32_t reserved0;
  uint64_t reserved1;
} rusm_msg_info;
_Static_assert(sizeof(rusm_msg_info) == RUSM_MSG_INFO_SIZE,
               "msg_info is 32 bytes");
_Static_assert(offsetof(rusm_msg_info, len) == 16, "msg_info layout");

/* A receive filter: a message matches when (tag & mask) == value. */
typedef struct rusm_filter {
  uint64_t value;
  uint64_t mask; /* 0: any message, system ones included */
} rusm_filter;

static inline rusm_filter rusm_filter_any(void) {
  rusm_filter f = {0, 0};
  return f;
}
static inline rusm_filter rusm_filter_tag(uint64_t tag) {
  rusm_filter f = {tag, ~UINT64_C(0)};
  return f;
}

/* Sends a copy of data[0..len) with tag to pid. Sending to a dead pid is
 * not an error (the message is dropped). Returns 0, or RUSM_EINVAL (a tag
 * with the top bit set), RUSM_ENOMEM. */
static inline int32_t rusm_send(rusm_pid_t pid, uint64_t tag, const void *data,
                                size_t len) {
  return rusm_raw_send((int64_t)pid, (int64_t)tag, data, (int32_t)len);
}

/*
 * Takes the first message matching filter (NULL: any), leaving the others
 * in arrival order, waiting at most timeout_ms (-1: forever, 0: poll).
 * Copies at most cap payload bytes into buf and fills *info (may be NULL).
 * Returns the number of bytes copied, or RUSM_ETIMEDOUT. A message longer
 * than cap is still taken: the rest of it is lost (info->len tells).
 */
static inline int32_t rusm_receive(const rusm_filter *filter,
                                   int64_t timeout_ms, void *buf, size_t cap,
                                   rusm_msg_info *info) {
  rusm_msg_info scratch;
  uint64_t value = filter ? filter->value : 0;
  uint64_t mask = filter ? filter->mask : 0;
  return rusm_raw_receive((int64_t)value, (int64_t)mask, timeout_ms, buf,
                          (int32_t)cap, info ? info : &scratch);
}

/* ------------------------------------------------------------------ */
/* Exit and Down messages                                              */
/* ------------------------------------------------------------------ */

/* A decoded Exit message (tag RUSM_TAG_EXIT). detail points into the
 * payload given to the decoder. */
typedef struct rusm_exit_info {
  rusm_pid_t from;
  int32_t code;       /* rusm_exit_code */
  uint32_t len;       /* detail bytes present in the payload */
  uint32_t full_len;  /* detail bytes sent (> len when truncated) */
  const void *detail; /* NULL when len == 0 */
} rusm_exit_info;

/* A decoded Down message (tag RUSM_TAG_DOWN). */
typedef struct rusm_down_info {
  rusm_ref ref;
  rusm_pid_t pid;
  int32_t code;
  uint32_t len;
  uint32_t full_len;
  const void *detail;
} rusm_down_info;

/* Decodes the len bytes of an Exit payload (u64 from | i32 code | u32 len
 * | detail). Returns 0, or RUSM_EINVAL when it is shorter than the header.
 */
static inline int rusm_decode_exit(const void *payload, size_t len,
                                   rusm_exit_info *out) {
  const uint8_t *p = payload;
  if (!p || len < RUSM_EXIT_PAYLOAD_HDR)
    return RUSM_EINVAL;
  memcpy(&out->from, p, 8);
  memcpy(&out->code, p + 8, 4);
  memcpy(&out->full_len, p + 12, 4);
  size_t have = len - RUSM_EXIT_PAYLOAD_HDR;
  out->len = out->full_len < have ? out->full_len : (uint32_t)have;
  out->detail = out->len ? p + RUSM_EXIT_PAYLOAD_HDR : NULL;
  return 0;
}

/* Decodes a Down payload (u64 ref | u64 pid | i32 code | u32 len |
 * detail). Returns 0, or RUSM_EINVAL when it is shorter than the header. */
static inline int rusm_decode_down(const void *payload, size_t len,
                                   rusm_down_info *out) {
  const uint8_t *p = payload;
  if (!p || len < RUSM_DOWN_PAYLOAD_HDR)
    return RUSM_EINVAL;
  memcpy(&out->ref, p, 8);
  memcpy(&out->pid, p + 8, 8);
  memcpy(&out->code, p + 16, 4);
  memcpy(&out->full_len, p + 20, 4);
  size_t have = len - RUSM_DOWN_PAYLOAD_HDR;
  out->len = out->full_len < have ? out->full_len : (uint32_t)have;
  out->detail = out->len ? p + RUSM_DOWN_PAYLOAD_HDR : NULL;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Processes                                                           */
/* ------------------------------------------------------------------ */

/*
 * Spawns a process running entry: an export of this module ("child"), or
 * "module:export" for a module the host registered by name. arg[0..len)
 * is copied for the child to read with rusm_arg(). flags: RUSM_SPAWN_LINK,
 * RUSM_SPAWN_TRAP_EXIT. Returns the child's pid, or an error (rusm_is_err):
 * RUSM_ECONTEXT without the spawn capability, RUSM_ENOTFOUND / RUSM_EINVAL
 * for an unknown entry, RUSM_ELIMIT, RUSM_ENOMEM.
 */
static inline int64_t rusm_spawn(const char *entry, const void *arg, size_t len,
                                 uint32_t flags) {
  return rusm_raw_spawn(entry, (int32_t)strlen(entry), arg, (int32_t)len,
                        (int32_t)flags);
}

/* Links (bidirectional, idempotent). RUSM_ENOPROC when pid is dead (a
 * trapping caller also gets Exit { pid, noproc }). */
static inline int32_t rusm_link(rusm_pid_t pid) {
  return rusm_raw_link((int64_t)pid);
}
/* Removes a link; unlinking what is not linked is fine. */
static inline int32_t rusm_unlink(rusm_pid_t pid) {
  return rusm_raw_unlink((int64_t)pid);
}

/* Monitors pid: returns the ref (one Down { ref, pid, reason } follows
 * when pid exits, at once with noproc when it is already dead), or an
 * error (rusm_is_err). */
static inline int64_t rusm_monitor(rusm_pid_t pid) {
  return rusm_raw_monitor((int64_t)pid);
}
/* Removes a monitor: 1 when it was active, 0 when not. flags:
 * RUSM_DEMONITOR_FLUSH also drops a Down already queued. */
static inline int32_t rusm_demonitor(rusm_ref ref, uint32_t flags) {
  return rusm_raw_demonitor((int64_t)ref, (int32_t)flags);
}

/* Turns exit trapping on/off; returns the previous setting (0 or 1). */
static inline int32_t rusm_trap_exit(bool on) {
  return rusm_raw_trap_exit(on ? 1 : 0);
}

/* Sends the exit signal (code, detail) to pid, as Erlang's exit/2:
 * RUSM_EXIT_KILL cannot be trapped; normal is ignored unless pid traps.
 * RUSM_ENOPROC for a dead pid. */
static inline int32_t rusm_exit(rusm_pid_t pid, rusm_exit_code code,
                                const void *detail, size_t len) {
  return rusm_raw_exit((int64_t)pid, (int32_t)code, detail, (int32_t)len);
}

/* Ends the calling process with reason (code, detail). Never returns. */
__attribute__((noreturn)) static inline void
rusm_exit_self(rusm_exit_code code, const void *detail, size_t len) {
  rusm_raw_exit_self((int32_t)code, detail, (int32_t)len);
}

/* Ends the calling process with a custom reason whose detail is text. */
__attribute__((noreturn)) static inline void
rusm_exit_self_str(const char *text) {
  rusm_raw_exit_self(RUSM_EXIT_CUSTOM, text, (int32_t)strlen(text));
}

/* The untrappable kill: pid exits with reason killed. RUSM_ENOPROC for a
 * dead pid. */
static inline int32_t rusm_kill(rusm_pid_t pid) {
  return rusm_raw_kill((int64_t)pid);
}

/* ------------------------------------------------------------------ */
/* Registry                                                            */
/* ------------------------------------------------------------------ */

/* Registers the calling process under name (1..RUSM_NAME_MAX bytes).
 * RUSM_EEXIST: taken; RUSM_EBUSY: this process has a name already. The
 * name goes when the process exits. */
static inline int32_t rusm_register(const char *name) {
  return rusm_raw_register(name, (int32_t)strlen(name));
}
/* The pid registered under name, or RUSM_PID_NONE. */
static inline rusm_pid_t rusm_whereis(const char *name) {
  int64_t v = rusm_raw_whereis(name, (int32_t)strlen(name));
  return v > 0 ? (rusm_pid_t)v : RUSM_PID_NONE;
}
/* rusm_send to a name; RUSM_ENOTFOUND when nobody has it. */
static inline int32_t rusm_send_named(const char *name, uint64_t tag,
                                      const void *data, size_t len) {
  return rusm_raw_send_named(name, (int32_t)strlen(name), (int64_t)tag, data,
                             (int32_t)len);
}

/* ------------------------------------------------------------------ */
/* Timers and time                                                     */
/* ------------------------------------------------------------------ */

/* Sends a copy of data[0..len) with tag to pid after delay_ms. Returns the
 * timer's ref (for rusm_cancel_timer) or an error (rusm_is_err). */
static inline int64_t rusm_send_after(int64_t delay_ms, rusm_pid_t pid,
                                      uint64_t tag, const void *data,
                                      size_t len) {
  return rusm_raw_send_after(delay_ms, (int64_t)pid, (int64_t)tag, data,
                             (int32_t)len);
}
/* Cancels a timer: the milliseconds that were left (>= 0), or
 * RUSM_ENOTFOUND when it already fired or was cancelled. */
static inline int64_t rusm_cancel_timer(rusm_timer_ref ref) {
  return rusm_raw_cancel_timer((int64_t)ref);
}
/* The runtime's monotonic clock, in nanoseconds. */
static inline int64_t rusm_now_ns(void) { return rusm_raw_now_ns(); }

/* ------------------------------------------------------------------ */
/* Logging (to the runtime's log, tagged with the pid)                 */
/* ------------------------------------------------------------------ */

static inline void rusm_log_bytes(rusm_log_level level, const void *data,
                                  size_t len) {
  rusm_raw_log((int32_t)level, data, (int32_t)len);
}
static inline void rusm_log(rusm_log_level level, const char *text) {
  rusm_raw_log((int32_t)level, text, (int32_t)strlen(text));
}
/* printf-style; lines longer than 255 bytes are cut. */
__attribute__((format(printf, 2, 3))) static inline void
rusm_logf(rusm_log_level level, const char *fmt, ...) {
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  rusm_raw_log((int32_t)level, line,
               n < (int)sizeof line ? n : (int)sizeof line - 1);
}

#ifdef __cplusplus
}
#endif
#endif /* RUSM_GUEST_H */
