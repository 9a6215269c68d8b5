/*
 * rusm/otp.h — the Wasm-free core of RUSM: runtime, schedulers, processes,
 * mailboxes and messages.
 *
 * Conventions (libuv style):
 *  - Functions return 0 (or a non-negative value where documented) on
 *    success and a negative RUSM_E* code on failure. They never abort on
 *    input a user controls.
 *  - Every pointer handed out says who owns it and how it is released.
 *  - "Any thread" means any thread of the embedding program, scheduler
 *    threads included. "Process context" means code running as the body of
 *    a process (a stackless callback, a stackful function, or a thread that
 *    attached itself with rusm_attach()).
 */
#ifndef RUSM_OTP_H
#define RUSM_OTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

enum {
  RUSM_OK = 0,
  RUSM_EINVAL = -1,     /* bad argument */
  RUSM_ENOMEM = -2,     /* allocation failed or a configured limit reached */
  RUSM_ENOPROC = -3,    /* no such process (dead, stale or never existed) */
  RUSM_ETIMEDOUT = -4,  /* a receive deadline passed with no match */
  RUSM_ESHUTDOWN = -5,  /* the runtime is shutting down */
  RUSM_ELIMIT = -6,     /* a limit was reached (process table, files) */
  RUSM_ECONTEXT = -7,   /* called outside the process context it needs */
  RUSM_ESYS = -8,       /* an OS call failed (errno kept where useful) */
  RUSM_EEXIST = -9,     /* already exists (names, attachments) */
  RUSM_ENOTFOUND = -10, /* no such name / entry */
  RUSM_EBUSY = -11,     /* in use (a process that already has a name) */
  /* sockets (rusm/tcp.h) */
  RUSM_ECONNREFUSED = -100,  /* nobody listens there */
  RUSM_ECONNRESET = -101,    /* the peer reset the connection */
  RUSM_EPIPE = -102,         /* writing to a connection the peer closed */
  RUSM_EADDRINUSE = -103,    /* the address is taken */
  RUSM_EADDRNOTAVAIL = -104, /* no such local address / no port left */
  RUSM_ECLOSED = -105,       /* the socket is closed (or failed before) */
  RUSM_EMFILE = -106,        /* out of file descriptors */
  RUSM_ENOBUFS = -107,       /* the socket's send queue is full */
  RUSM_EUNREACH = -108,      /* network or host unreachable */
  RUSM_ECONNTIMEDOUT = -109  /* the connection timed out */
};

/* A static, human-readable string for an error code (never NULL). */
const char *rusm_strerror(int err);
/* The symbolic name of an error code, e.g. "RUSM_ENOPROC" (never NULL). */
const char *rusm_err_name(int err);

/* ------------------------------------------------------------------ */
/* Pids                                                                */
/* ------------------------------------------------------------------ */

/*
 * A pid is 64 bits: node (12) | slot (24) | generation (28).
 * 4,096 nodes and 16M live processes per node are far past what a cluster
 * of this kind holds; the wide generation is what matters: a slot is
 * reused 268M times before its generation would wrap, and a slot that gets
 * there is retired instead, so a stale pid never reaches a later process.
 * Generation starts at 1, so 0 is never a valid pid.
 * Printed like Erlang: <node.slot.gen>.
 */
typedef uint64_t rusm_pid_t;

#define RUSM_PID_NONE ((rusm_pid_t)0)
#define RUSM_PID_NODE_BITS 12
#define RUSM_PID_SLOT_BITS 24
#define RUSM_PID_GEN_BITS 28
#define RUSM_PID_SLOT_MAX ((UINT32_C(1) << RUSM_PID_SLOT_BITS) - 1)
#define RUSM_PID_GEN_MAX ((UINT32_C(1) << RUSM_PID_GEN_BITS) - 1)

#define RUSM_PID_NODE_MAX ((UINT32_C(1) << RUSM_PID_NODE_BITS) - 1)
/* The largest node id a runtime accepts: pids stay positive as i64. */
#define RUSM_NODE_ID_MAX (RUSM_PID_NODE_MAX >> 1)

static inline rusm_pid_t rusm_pid_make(uint16_t node, uint32_t slot,
                                       uint32_t gen) {
  return ((rusm_pid_t)(node & RUSM_PID_NODE_MAX)
          << (RUSM_PID_SLOT_BITS + RUSM_PID_GEN_BITS)) |
         ((rusm_pid_t)(slot & RUSM_PID_SLOT_MAX) << RUSM_PID_GEN_BITS) |
         (rusm_pid_t)(gen & RUSM_PID_GEN_MAX);
}
static inline uint16_t rusm_pid_node(rusm_pid_t p) {
  return (uint16_t)(p >> (RUSM_PID_SLOT_BITS + RUSM_PID_GEN_BITS));
}
static inline uint32_t rusm_pid_slot(rusm_pid_t p) {
  return (uint32_t)(p >> RUSM_PID_GEN_BITS) & RUSM_PID_SLOT_MAX;
}
static inline uint32_t rusm_pid_gen(rusm_pid_t p) {
  return (uint32_t)p & RUSM_PID_GEN_MAX;
}

/* Formats "<node.slot.gen>" into buf (NUL-terminated, truncated to len).
 * Returns the length it would have written, like snprintf. */
int rusm_pid_format(rusm_pid_t pid, char *buf, size_t len);

/* ------------------------------------------------------------------ */
/* Exit reasons                                                        */
/* ------------------------------------------------------------------ */

typedef enum rusm_exit_code {
  RUSM_EXIT_NORMAL = 0,
  RUSM_EXIT_KILLED = 1,       /* result of an untrappable kill */
  RUSM_EXIT_SHUTDOWN = 2,     /* orderly stop (optional detail bytes) */
  RUSM_EXIT_NOPROC = 3,       /* target did not exist */
  RUSM_EXIT_NOCONNECTION = 4, /* reserved for the cluster */
  RUSM_EXIT_TRAP = 5,         /* a Wasm guest trapped (detail: message) */
  RUSM_EXIT_CUSTOM = 6,       /* user reason: detail bytes */
  RUSM_EXIT_KILL = 7,         /* as a signal (exit(pid, kill)): untrappable;
                               * as a process's own reason (Erlang's
                               * exit(kill)): an ordinary reason */
  RUSM_EXIT__COUNT
} rusm_exit_code;

/*
 * An exit reason: a code plus optional detail bytes. A rusm_reason value is
 * a borrowed view: the bytes belong to whoever built it (a string literal,
 * a message payload ...). The runtime copies the bytes when it keeps a
 * reason.
 */
typedef struct rusm_reason {
  rusm_exit_code code;
  uint32_t len;
  const uint8_t *data; /* NULL when len == 0 */
} rusm_reason;

#define RUSM_REASON_NORMAL ((rusm_reason){RUSM_EXIT_NORMAL, 0, NULL})
#define RUSM_REASON_KILL ((rusm_reason){RUSM_EXIT_KILL, 0, NULL})
#define RUSM_REASON_KILLED ((rusm_reason){RUSM_EXIT_KILLED, 0, NULL})
#define RUSM_REASON_SHUTDOWN ((rusm_reason){RUSM_EXIT_SHUTDOWN, 0, NULL})

/* A custom reason viewing a NUL-terminated string (not copied). */
rusm_reason rusm_reason_str(const char *text);
/* "normal", "killed", "shutdown", ... (never NULL). */
const char *rusm_exit_code_name(rusm_exit_code code);

/* ------------------------------------------------------------------ */
/* Runtime                                                             */
/* ------------------------------------------------------------------ */

typedef struct rusm_rt rusm_rt;
typedef struct rusm_proc rusm_proc;

typedef struct rusm_rt_opts {
  uint32_t schedulers;       /* 0: one per online core */
  uint32_t max_processes;    /* 0: 1 << 22; at most 1 << 24 */
  uint32_t budget;           /* reductions per run slice; 0: 2000 */
  uint32_t stack_size;       /* default stackful stack; 0: 64 KiB */
  uint32_t mailbox_capacity; /* default bound of user messages queued per
                              * process (0: unbounded); see spawn opts */
  uint16_t node_id;          /* this node's id in pids: < 2048, so that a
                              * pid is positive as a signed 64-bit value
                              * (Wasm guests get pids as i64) */
} rusm_rt_opts;

/* Fills opts with defaults. */
void rusm_rt_opts_init(rusm_rt_opts *opts);

/* Creates a runtime and starts its scheduler threads. opts may be NULL.
 * The caller owns *out and releases it with rusm_rt_destroy(). */
int rusm_rt_create(const rusm_rt_opts *opts, rusm_rt **out);

/* Kills every process still alive (reason killed), waits until all are
 * reaped, stops the schedulers and frees everything. Must not be called
 * from a scheduler thread. Threads still attached are detached first. */
void rusm_rt_destroy(rusm_rt *rt);

uint32_t rusm_rt_schedulers(const rusm_rt *rt);
uint16_t rusm_rt_node(const rusm_rt *rt);

/* Blocks the calling (non-scheduler) thread until no process is alive
 * except attached threads, or timeout_ms passes (-1: forever).
 * Returns 0 or RUSM_ETIMEDOUT. */
int rusm_rt_wait_idle(rusm_rt *rt, int64_t timeout_ms);

/* ---- graceful shutdown ---- */

/* Marks pid as a top-level process of the application (a top-level
 * supervisor, usually: rusm_sup_start does it for supervisors started
 * without a parent). Shutdown stops these first, in reverse order. */
int rusm_rt_add_root(rusm_rt *rt, rusm_pid_t pid);

#define RUSM_SHUTDOWN_REPORT_MAX 32

typedef struct rusm_shutdown_report {
  uint32_t roots;         /* top-level processes asked to stop */
  uint32_t roots_stopped; /* ... that exited before the deadline */
  uint64_t exited;        /* processes that exited before the deadline */
  uint64_t killed;        /* stragglers killed at the deadline */
  int64_t elapsed_ms;
  uint32_t nkilled_listed; /* first killed processes, for the report */
  rusm_pid_t killed_pids[RUSM_SHUTDOWN_REPORT_MAX];
} rusm_shutdown_report;

/*
 * Stops the application within deadline_ms: no new spawns from now on;
 * top-level processes (rusm_rt_add_root) get exit(shutdown) in reverse
 * order, each waited for (a supervisor stops its children with their
 * shutdown specs); then every other process gets exit(shutdown); whatever
 * is still alive at the deadline is killed. Attached threads are left
 * alone. Blocks the calling thread (not a scheduler thread: then
 * RUSM_ECONTEXT). The runtime stays usable for rusm_rt_destroy. out may
 * be NULL. Returns 0, or RUSM_ETIMEDOUT when something had to be killed.
 */
int rusm_rt_shutdown(rusm_rt *rt, int64_t deadline_ms,
                     rusm_shutdown_report *out);

/* Writes a human-readable report (one line, then the killed pids). */
int rusm_shutdown_report_format(const rusm_shutdown_report *r, char *buf,
                                size_t len);

/* Monotonic clock in nanoseconds (the clock deadlines use). */
int64_t rusm_now_ns(void);

/* ------------------------------------------------------------------ */
/* Messages                                                            */
/* ------------------------------------------------------------------ */

/*
 * A reference-counted immutable byte buffer for large payloads: sending it
 * shares it instead of copying (Erlang's refc binaries). Create it, fill
 * data[0..len), then treat it as immutable.
 */
typedef struct rusm_buf rusm_buf;

/* New buffer of len bytes, refcount 1, owned by the caller.
 * Returns NULL when out of memory. */
rusm_buf *rusm_buf_new(size_t len);
/* New buffer holding a copy of data. */
rusm_buf *rusm_buf_from(const void *data, size_t len);
uint8_t *rusm_buf_data(rusm_buf *b);
size_t rusm_buf_len(const rusm_buf *b);
/* Adds a reference (returns b). */
rusm_buf *rusm_buf_ref(rusm_buf *b);
/* Drops a reference; frees on the last one. NULL is ignored. */
void rusm_buf_unref(rusm_buf *b);

/*
 * A received message. The receiver owns it and frees it with
 * rusm_msg_free() (stackful / attached receivers), or borrows it for the
 * duration of a stackless handle() call.
 */
typedef struct rusm_msg rusm_msg;

uint64_t rusm_msg_tag(const rusm_msg *m);
/* The sending process, or RUSM_PID_NONE when sent from outside any process. */
rusm_pid_t rusm_msg_from(const rusm_msg *m);
/* Payload view, valid until the message is freed. */
const uint8_t *rusm_msg_data(const rusm_msg *m);
size_t rusm_msg_len(const rusm_msg *m);
/* The payload as a shared buffer when it was sent as one (NULL otherwise);
 * the reference is borrowed: rusm_buf_ref() it to keep it. */
rusm_buf *rusm_msg_buf(const rusm_msg *m);
void rusm_msg_free(rusm_msg *m);

/* Reserved tags: tags with the top bit set belong to the runtime
 * (Exit and Down messages, timeouts ...). User tags must keep it clear. */
#define RUSM_TAG_SYSTEM (UINT64_C(1) << 63)
#define RUSM_TAG_EXIT (RUSM_TAG_SYSTEM | 1)
#define RUSM_TAG_DOWN (RUSM_TAG_SYSTEM | 2)
/* A user tag with this bit set is never shed by a bounded mailbox: use it
 * for replies a caller blocks on (supervisor calls do). */
#define RUSM_TAG_NOSHED (UINT64_C(1) << 62)

/*
 * A receive filter. A message matches when (tag & mask) == value and, if
 * pred is set, pred(msg, pred_arg) returns true. A NULL filter (or
 * mask == 0 with no pred) matches anything.
 */
typedef struct rusm_filter {
  uint64_t value;
  uint64_t mask;
  bool (*pred)(const rusm_msg *m, void *pred_arg);
  void *pred_arg;
} rusm_filter;

/* A filter matching exactly one tag. */
static inline rusm_filter rusm_filter_tag(uint64_t tag) {
  rusm_filter f = {tag, ~UINT64_C(0), NULL, NULL};
  return f;
}
bool rusm_filter_match(const rusm_filter *f, const rusm_msg *m);

/*
 * Sends a copy of data[0..len) with tag to pid. Callable from any thread.
 * Never blocks. Sending to a dead or stale pid is not an error: the message
 * is dropped and counted. Returns 0, or RUSM_EINVAL (bad tag/len),
 * RUSM_ENOMEM.
 */
int rusm_send(rusm_rt *rt, rusm_pid_t to, uint64_t tag, const void *data,
              size_t len);
/* Sends a shared buffer: takes a new reference on buf (the caller keeps
 * its own). */
int rusm_send_buf(rusm_rt *rt, rusm_pid_t to, uint64_t tag, rusm_buf *buf);

/* ------------------------------------------------------------------ */
/* Processes                                                           */
/* ------------------------------------------------------------------ */

typedef uint64_t rusm_ref; /* monitor reference; never 0 */

typedef struct rusm_spawn_opts {
  uint32_t stack_size; /* stackful only; 0: runtime default */
  int32_t scheduler;   /* -1: the caller's scheduler or round-robin */
  /* spawn_link / spawn_monitor: set up atomically with the spawn, before
   * the child can run, so it can never die unlinked / unmonitored. Need
   * process context (the caller is the other end): RUSM_ECONTEXT if not. */
  bool link;
  bool monitor;
  rusm_ref *monitor_ref; /* out: the monitor's ref when monitor is set */
  /* Bounded mailbox: user messages (rusm_send / rusm_send_buf) arriving
   * while this many are queued are shed (dropped and counted); signals,
   * Exit and Down messages and runtime messages are never shed.
   * 0: the runtime's default; UINT32_MAX: unbounded. */
  uint32_t mailbox_capacity;
  /* The child traps exits from its first instant (no window where an exit
   * signal could end it before it turns trapping on itself). */
  bool trap_exit;
} rusm_spawn_opts;

void rusm_spawn_opts_init(rusm_spawn_opts *o);

/* --- generic body interface (what Wasm bodies implement) --- */

typedef enum rusm_step_kind {
  RUSM_STEP_YIELD = 0, /* runnable again: requeue */
  RUSM_STEP_WAIT = 1,  /* park until a new signal/message or deadline */
  RUSM_STEP_EXIT = 2   /* exit with reason */
} rusm_step_kind;

typedef struct rusm_step {
  rusm_step_kind kind;
  int64_t deadline_ns; /* WAIT: absolute rusm_now_ns() deadline, -1: none */
  rusm_reason reason;  /* EXIT: bytes copied by the runtime right away */
} rusm_step;

typedef struct rusm_body_ops {
  const char *kind; /* static string: "stackless", "stackful", "wasm" ... */
  /* Runs the process a while. Pulls messages with rusm_try_receive().
   * Called only on the process's scheduler thread, never concurrently. */
  rusm_step (*step)(rusm_proc *self, void *state);
  /* Called exactly once when the process is reaped (any reason, kill
   * included), on its scheduler thread; releases state. */
  void (*destroy)(rusm_proc *self, void *state, const rusm_reason *why);
} rusm_body_ops;

/* Spawns a process with a custom body. ops must outlive the process;
 * state is owned by the body from now on (released in destroy, also when
 * this call fails after taking it: check the return). */
int rusm_spawn_body(rusm_rt *rt, const rusm_body_ops *ops, void *state,
                    const rusm_spawn_opts *opts, rusm_pid_t *out);

/* --- stackless bodies: callbacks --- */

/* What a stackless callback asks for next. Build it with the helpers. */
typedef struct rusm_next {
  uint8_t stop;       /* 1: exit with reason */
  uint8_t has_filter; /* wait only for messages matching filter */
  rusm_filter filter;
  int64_t timeout_ms; /* -1: none; 0: poll; >0: then handle(NULL) */
  rusm_reason reason; /* bytes copied by the runtime right away */
} rusm_next;

/* Wait for any message, no timeout. */
static inline rusm_next rusm_next_wait(void) {
  rusm_next n = {0, 0, {0, 0, NULL, NULL}, -1, {RUSM_EXIT_NORMAL, 0, NULL}};
  return n;
}
/* Wait for a message matching f (NULL: any) for up to timeout_ms
 * (-1: forever). On timeout handle() is called with msg == NULL. */
static inline rusm_next rusm_next_wait_for(const rusm_filter *f,
                                           int64_t timeout_ms) {
  rusm_next n = rusm_next_wait();
  if (f) {
    n.has_filter = 1;
    n.filter = *f;
  }
  n.timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
  return n;
}
/* Exit with reason. */
static inline rusm_next rusm_next_stop(rusm_reason reason) {
  rusm_next n = rusm_next_wait();
  n.stop = 1;
  n.reason = reason;
  return n;
}

typedef struct rusm_stackless_ops {
  /* Called once first; may send, spawn ... *state starts as the spawn arg;
   * the callback may replace it. NULL: state = arg, wait for anything. */
  rusm_next (*init)(rusm_proc *self, void **state);
  /* Called with each matching message (borrowed: freed after return), or
   * with msg == NULL when the wait timed out. NULL (allowed when init is
   * set): messages are discarded and a timeout stops the process. */
  rusm_next (*handle)(rusm_proc *self, void *state, rusm_msg *msg);
  /* Called once on exit, whatever the reason (kill included). May be NULL. */
  void (*terminate)(rusm_proc *self, void *state, const rusm_reason *why);
} rusm_stackless_ops;

/* ops must outlive the process (a static struct, usually). */
int rusm_spawn_stackless(rusm_rt *rt, const rusm_stackless_ops *ops, void *arg,
                         const rusm_spawn_opts *opts, rusm_pid_t *out);

/* --- stackful bodies: a C function with blocking receive --- */

/* Returning from fn exits with reason normal. */
typedef void (*rusm_stackful_fn)(rusm_proc *self, void *arg);

/* Runs fn(self, arg) on a pooled stack with a guard page. */
int rusm_spawn_stackful(rusm_rt *rt, rusm_stackful_fn fn, void *arg,
                        const rusm_spawn_opts *opts, rusm_pid_t *out);

/* --- attached threads: an embedding thread as a process --- */

/* Gives the calling non-scheduler thread a pid and mailbox so it can
 * receive (blocking) like a stackful process. *out is owned by the runtime
 * and valid until rusm_detach(). Returns RUSM_EEXIST when already attached,
 * RUSM_ECONTEXT on a scheduler thread. */
int rusm_attach(rusm_rt *rt, rusm_proc **out);
/* Ends the attached thread's process with reason normal. */
void rusm_detach(rusm_proc *self);

/* --- calls in process context --- */

rusm_pid_t rusm_self(const rusm_proc *self);
rusm_rt *rusm_proc_rt(const rusm_proc *self);
/* The process running on this thread (a scheduler running a body, or an
 * attached thread), else NULL. */
rusm_proc *rusm_current(void);

/*
 * Blocking receive (stackful bodies and attached threads only): takes the
 * first message matching f (NULL: any), leaving others in arrival order.
 * timeout_ms: -1 forever, 0 poll. On success *out is owned by the caller
 * (rusm_msg_free). Returns 0, RUSM_ETIMEDOUT, or RUSM_ECONTEXT (stackless).
 * A kill arriving while blocked ends the process; this call then never
 * returns (stackful) — attached threads get RUSM_ESHUTDOWN.
 */
int rusm_receive(rusm_proc *self, const rusm_filter *f, int64_t timeout_ms,
                 rusm_msg **out);

/* Non-blocking receive for any body kind: 0 and *out (owned by the
 * caller), or RUSM_ETIMEDOUT when nothing matches now. */
int rusm_try_receive(rusm_proc *self, const rusm_filter *f, rusm_msg **out);

/* Stackful only: gives up the CPU, stays runnable. */
void rusm_yield(rusm_proc *self);

/* Stackful only: exits now with reason; never returns. In a stackless
 * callback return rusm_next_stop() instead (returns RUSM_ECONTEXT). */
int rusm_exit_self(rusm_proc *self, rusm_reason reason);

/* Registers fn(arg) to run when the process exits, for any reason and
 * kill included (LIFO order), on its scheduler thread. This is how a
 * process owns resources. Returns 0 or RUSM_ENOMEM. */
int rusm_on_exit(rusm_proc *self, void (*fn)(void *arg), void *arg);

/* Labels the calling process for observers ("supervisor", "acceptor"
 * ...). label must be a static string (it is not copied); NULL clears. */
void rusm_set_label(rusm_proc *self, const char *label);
/* Reports memory the body holds outside the runtime's accounting (a Wasm
 * instance's linear memory), for observers. */
void rusm_set_memory(rusm_proc *self, uint64_t bytes);

/* Charges n reductions to the running process (long native work should
 * call it so that it can be preempted at the next runtime call). */
void rusm_consume(rusm_proc *self, uint32_t n);

/* --- links, monitors, exit signals (Erlang's semantics; see
 *     docs/exit-signals.md). `self` must be the calling process. --- */

/* Links self and pid (bidirectional, idempotent). RUSM_ENOPROC when pid is
 * dead; a trapping caller then also gets Exit { pid, noproc }. */
int rusm_link(rusm_proc *self, rusm_pid_t pid);
/* Removes the link; after it returns no exit signal from that link
 * reaches self. Unlinking a pid that is not linked (or dead) is fine. */
int rusm_unlink(rusm_proc *self, rusm_pid_t pid);

/* Turns exit trapping on/off; returns the previous setting. A trapping
 * process receives exit signals (but kill) as RUSM_TAG_EXIT messages. */
bool rusm_trap_exit(rusm_proc *self, bool on);

/* Monitors pid: exactly one Down { ref, pid, reason } message arrives
 * when it exits (at once with reason noproc when it is already dead).
 * Monitors stack: each call gets its own ref. */
int rusm_monitor(rusm_proc *self, rusm_pid_t pid, rusm_ref *out);

#define RUSM_DEMONITOR_FLUSH 1u /* also drop a Down already queued */
/* Removes a monitor: no Down for ref arrives after this returns; one
 * already fetched into the mailbox stays unless RUSM_DEMONITOR_FLUSH.
 * Returns 1 when the monitor was active, 0 when it was not (already fired
 * or unknown). */
int rusm_demonitor(rusm_proc *self, rusm_ref ref, unsigned flags);

/* Sends an exit signal with reason to pid, as Erlang's exit/2: kill ends
 * it with reason killed (untrappable); normal is ignored unless it traps
 * (or pid is the caller itself); other reasons end it unless it traps, in
 * which case it gets an Exit message. Callable from any thread (the
 * sender is the calling process, or none). RUSM_ENOPROC for a dead pid. */
int rusm_exit(rusm_rt *rt, rusm_pid_t pid, rusm_reason reason);

/* Decoded Exit / Down messages. The reason bytes point into the message:
 * valid until it is freed. Return 0, or RUSM_EINVAL when m is not one. */
typedef struct rusm_exit_info {
  rusm_pid_t from;
  rusm_reason reason;
} rusm_exit_info;
int rusm_msg_exit(const rusm_msg *m, rusm_exit_info *out);

typedef struct rusm_down_info {
  rusm_ref ref;
  rusm_pid_t pid;
  rusm_reason reason;
} rusm_down_info;
int rusm_msg_down(const rusm_msg *m, rusm_down_info *out);

/* Wire layout of the payloads (native endianness), for bodies that read
 * the bytes directly (Wasm guests):
 *   Exit: u64 from | i32 code | u32 len | len bytes of detail
 *   Down: u64 ref | u64 pid | i32 code | u32 len | len bytes of detail */
#define RUSM_EXIT_PAYLOAD_HDR 16
#define RUSM_DOWN_PAYLOAD_HDR 24

/* --- calls from anywhere --- */

/* Sends the untrappable kill: pid exits with reason killed. Killing a dead
 * pid returns RUSM_ENOPROC. */
int rusm_kill(rusm_rt *rt, rusm_pid_t pid);

bool rusm_is_alive(rusm_rt *rt, rusm_pid_t pid);

typedef enum rusm_proc_status {
  RUSM_STATUS_RUNNABLE = 0,
  RUSM_STATUS_RUNNING = 1,
  RUSM_STATUS_WAITING = 2,
  RUSM_STATUS_EXITING = 3
} rusm_proc_status;

typedef struct rusm_proc_info {
  rusm_pid_t pid;
  const char *kind; /* body kind (static string) */
  rusm_proc_status status;
  uint32_t scheduler;        /* index of its current scheduler */
  uint64_t mailbox_len;      /* messages queued, fetched or not */
  uint64_t messages_handled; /* messages received so far */
  uint64_t reductions;       /* total reductions consumed */
  uint64_t shed;             /* user messages shed (bounded mailbox) */
  uint32_t mailbox_capacity; /* 0: unbounded */
} rusm_proc_info;

/* Snapshot of one live process. RUSM_ENOPROC when dead or stale. */
int rusm_proc_info_get(rusm_rt *rt, rusm_pid_t pid, rusm_proc_info *out);

/* Number of live processes (attached threads included). */
uint64_t rusm_process_count(rusm_rt *rt);

/* ------------------------------------------------------------------ */
/* Timers                                                              */
/* ------------------------------------------------------------------ */

/* A timer reference: never 0; a stale ref never reaches a later timer. */
typedef uint64_t rusm_timer_ref;

/*
 * Sends a copy of data[0..len) with tag to `to` after delay_ms (>= 0), like
 * erlang:send_after/3. Callable from any thread; *ref (may be NULL) can
 * cancel it. A timer costs 120 bytes while pending, payload included up
 * to 24 bytes (larger payloads are copied into a shared buffer). If the
 * target is dead at expiry the message is dropped and counted.
 */
int rusm_send_after(rusm_rt *rt, int64_t delay_ms, rusm_pid_t to, uint64_t tag,
                    const void *data, size_t len, rusm_timer_ref *ref);
/* The same to a registered name, resolved at expiry (dropped if unknown). */
int rusm_send_after_named(rusm_rt *rt, int64_t delay_ms, const char *name,
                          uint64_t tag, const void *data, size_t len,
                          rusm_timer_ref *ref);
/* Sends the exit signal `reason` to pid after delay_ms (from: none). */
int rusm_exit_after(rusm_rt *rt, int64_t delay_ms, rusm_pid_t pid,
                    rusm_reason reason, rusm_timer_ref *ref);
/* Kills pid after delay_ms. */
int rusm_kill_after(rusm_rt *rt, int64_t delay_ms, rusm_pid_t pid,
                    rusm_timer_ref *ref);
/* Cancels a pending timer: the milliseconds that were left (>= 0), or
 * RUSM_ENOTFOUND when it already fired, was cancelled, or is unknown. */
int64_t rusm_cancel_timer(rusm_rt *rt, rusm_timer_ref ref);
/* Timers pending in the runtime now. */
uint64_t rusm_timer_count(rusm_rt *rt);

/* ------------------------------------------------------------------ */
/* Registry: local names for processes                                 */
/* ------------------------------------------------------------------ */

#define RUSM_NAME_MAX 255 /* bytes, not counting the NUL */

/* Registers name (copied; 1..RUSM_NAME_MAX bytes) for pid. One name per
 * process, one process per name. RUSM_EEXIST: name taken; RUSM_EBUSY: pid
 * already has a name; RUSM_ENOPROC: pid is dead; RUSM_EINVAL: bad name.
 * The name is released when the process exits (any reason). */
int rusm_register(rusm_rt *rt, const char *name, rusm_pid_t pid);
/* RUSM_ENOTFOUND when the name is not registered. */
int rusm_unregister(rusm_rt *rt, const char *name);
/* The pid registered under name, or RUSM_PID_NONE. */
rusm_pid_t rusm_whereis(rusm_rt *rt, const char *name);
/* rusm_send to a name; RUSM_ENOTFOUND for an unknown name. */
int rusm_send_named(rusm_rt *rt, const char *name, uint64_t tag,
                    const void *data, size_t len);
/* The name of pid copied into buf (NUL-terminated, truncated to len);
 * returns its length, or RUSM_ENOTFOUND when pid has no name. */
int rusm_name_of(rusm_rt *rt, rusm_pid_t pid, char *buf, size_t len);

typedef struct rusm_reg_entry {
  char name[RUSM_NAME_MAX + 1];
  rusm_pid_t pid;
} rusm_reg_entry;
/* Copies up to cap entries (any order) into out; returns the total number
 * of names registered (which may exceed cap). */
int rusm_registered(rusm_rt *rt, rusm_reg_entry *out, size_t cap);

/* ------------------------------------------------------------------ */
/* Supervisors (OTP's supervisor, see docs/supervisors.md)             */
/* ------------------------------------------------------------------ */

typedef enum rusm_sup_strategy {
  RUSM_ONE_FOR_ONE = 0,
  RUSM_ONE_FOR_ALL = 1,
  RUSM_REST_FOR_ONE = 2
} rusm_sup_strategy;

typedef enum rusm_restart {
  RUSM_PERMANENT = 0, /* always restarted */
  RUSM_TRANSIENT = 1, /* restarted unless it exits normal or shutdown */
  RUSM_TEMPORARY = 2  /* never restarted (and forgotten when it exits) */
} rusm_restart;

#define RUSM_SHUTDOWN_BRUTAL 0      /* exit(child, kill) at once */
#define RUSM_SHUTDOWN_INFINITY (-1) /* exit(child, shutdown), wait forever */

/* Starts one child. Runs in the supervisor's process: spawn the child
 * with opts.link = true (the supervisor links anyway if you do not) and
 * return 0 with its pid, or a negative code (a failed start). */
typedef int (*rusm_child_start_fn)(rusm_rt *rt, void *arg, rusm_pid_t *out);

typedef struct rusm_child_spec {
  const char *id; /* unique in its supervisor; copied (at most 63 bytes) */
  rusm_child_start_fn start;
  void *arg; /* borrowed: must outlive the supervisor */
  rusm_restart restart;
  int64_t shutdown_ms; /* RUSM_SHUTDOWN_BRUTAL, a timeout in ms, or
                        * RUSM_SHUTDOWN_INFINITY (use it for supervisors) */
  bool supervisor;     /* the child is a supervisor (for counts, trees) */
} rusm_child_spec;

typedef struct rusm_sup_flags {
  rusm_sup_strategy strategy;
  uint32_t intensity; /* at most this many restarts ... (default 1) */
  uint32_t period_ms; /* ... in any window this long (default 5000) */
} rusm_sup_flags;

void rusm_sup_flags_init(rusm_sup_flags *f);

/*
 * The calls below are synchronous requests to the supervisor process: the
 * caller blocks for the reply, so they need a thread that may block: a
 * non-scheduler thread (attached or not) or a stackful process. From a
 * stackless callback they return RUSM_ECONTEXT.
 */

/* Starts a supervisor that starts children[0..n) in order (specs copied).
 * If one fails to start, those started are stopped in reverse order and
 * the error is returned. opts->link links it to the calling process (its
 * parent; an exit signal from the parent stops it, children first). */
int rusm_sup_start(rusm_rt *rt, const rusm_sup_flags *flags,
                   const rusm_child_spec *children, size_t n,
                   const rusm_spawn_opts *opts, rusm_pid_t *out);

/* Stops a supervisor as its parent would (exit signal shutdown: children
 * stopped in reverse start order with their shutdown specs) and waits
 * until it is gone, or timeout_ms (-1: forever). The caller is unlinked
 * from it first, so a parent stopping its own supervisor survives. A
 * supervisor calling itself gets RUSM_ECONTEXT. A supervisor started
 * without a parent (no opts->link) is a root for rusm_rt_shutdown. */
int rusm_sup_stop(rusm_rt *rt, rusm_pid_t sup, int64_t timeout_ms);

int rusm_sup_start_child(rusm_rt *rt, rusm_pid_t sup,
                         const rusm_child_spec *spec, rusm_pid_t *out);
int rusm_sup_terminate_child(rusm_rt *rt, rusm_pid_t sup, const char *id);
int rusm_sup_restart_child(rusm_rt *rt, rusm_pid_t sup, const char *id,
                           rusm_pid_t *out);
int rusm_sup_delete_child(rusm_rt *rt, rusm_pid_t sup, const char *id);

typedef struct rusm_child_info {
  char id[64];
  rusm_pid_t pid; /* RUSM_PID_NONE when not running */
  rusm_restart restart;
  bool supervisor;
  uint32_t restarts; /* times this child was restarted */
} rusm_child_info;

/* Fills out[0..cap) in start order; *count gets the total number. */
int rusm_sup_which_children(rusm_rt *rt, rusm_pid_t sup, rusm_child_info *out,
                            size_t cap, size_t *count);

typedef struct rusm_child_counts {
  uint32_t specs, active, supervisors, workers;
} rusm_child_counts;
int rusm_sup_count_children(rusm_rt *rt, rusm_pid_t sup,
                            rusm_child_counts *out);

typedef struct rusm_sup_info {
  rusm_sup_strategy strategy;
  uint32_t intensity;
  uint32_t period_ms;
  bool dynamic;
  uint64_t restarts; /* restarts done so far */
  rusm_child_counts counts;
} rusm_sup_info;
int rusm_sup_info_get(rusm_rt *rt, rusm_pid_t sup, rusm_sup_info *out);

/* A dynamic supervisor: one_for_one over many children made from one
 * template spec, each started with its own arg (the template's arg is
 * ignored). */
int rusm_dynsup_start(rusm_rt *rt, const rusm_sup_flags *flags,
                      const rusm_child_spec *tmpl, const rusm_spawn_opts *opts,
                      rusm_pid_t *out);
int rusm_dynsup_start_child(rusm_rt *rt, rusm_pid_t sup, void *arg,
                            rusm_pid_t *out);
int rusm_dynsup_terminate_child(rusm_rt *rt, rusm_pid_t sup, rusm_pid_t child);

#ifdef __cplusplus
}
#endif
#endif /* RUSM_OTP_H */
