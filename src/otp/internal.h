/*
 * internal.h — the runtime's private structures, shared by the otp modules.
 * Nothing here is API. See docs/internals/process-core.md for the design.
 */
#ifndef RUSM_OTP_INTERNAL_H
#define RUSM_OTP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "otp/alloc.h"
#include "otp/coro.h"
#include "otp/mailbox.h"
#include "otp/timer.h"
#include "rusm/metrics.h"
#include "rusm/otp.h"

#define RUSM__CACHELINE 64
#define RUSM__CHUNK 256 /* process structs allocated together */

/* ---- messages and signals ------------------------------------------ */

/* Node kinds. Exit payloads use the Exit message layout of otp.h (from,
 * code, len, detail) and Down payloads the Down layout, so a signal that
 * becomes a message (trapped exit, Down) is converted in place. */
enum rusm__node_kind {
  RUSM__N_MSG = 0,       /* a message (user or system tag) */
  RUSM__N_EXIT = 1,      /* exit/2 signal */
  RUSM__N_LINK_EXIT = 2, /* a linked process exited */
  RUSM__N_LINK = 3,      /* from wants a link */
  RUSM__N_UNLINK = 4,    /* from removed its link */
  RUSM__N_MONITOR = 5,   /* from monitors us with ref aux */
  RUSM__N_DEMONITOR = 6, /* monitor aux removed */
  RUSM__N_DOWN = 7,      /* a monitored process exited (ref aux) */
  RUSM__N_CALL = 8,      /* run a function in the process (rusm__push_call) */
};

#include "otp/u64map.h"

typedef struct rusm__links {
  rusm__u64map links;   /* linked pid -> 1 */
  rusm__u64map mon_out; /* ref -> monitored pid (monitors we hold) */
  rusm__u64map mon_in;  /* ref -> watcher pid (monitors on us) */
} rusm__links;

enum { RUSM__M_BUF = 1 }; /* payload lives in m->buf */

struct rusm_buf {
  _Atomic uint32_t refs;
  uint32_t _pad;
  size_t len;
  uint8_t data[];
};

struct rusm_msg {
  rusm__mpsc_node node; /* first: the mailbox queues it */
  struct rusm_msg *inner_next;
  uint64_t tag;
  rusm_pid_t from;
  uint32_t len;
  uint8_t kind;  /* rusm__node_kind */
  uint8_t flags; /* RUSM__M_* */
  uint16_t _pad;
  int64_t aux;
  rusm_buf *buf;
  const uint8_t *data;
  uint8_t inline_data[];
};

rusm_msg *rusm__msg_new(uint8_t kind, uint64_t tag, const void *data,
                        size_t len);
rusm_msg *rusm__msg_new_buf(uint64_t tag, rusm_buf *buf);

/* A reason with its bytes owned by the runtime. */
typedef struct rusm__reason_box {
  rusm_exit_code code;
  uint32_t len;
  uint8_t data[];
} rusm__reason_box;

/* ---- processes ------------------------------------------------------ */

/* p->flags bits */
enum {
  RUSM__P_EXITED = 1u << 0,   /* reaped or being reaped: sends are dropped */
  RUSM__P_ATTACHED = 1u << 1, /* an embedding thread, not scheduled */
  RUSM__P_DYING = 1u << 2,    /* reaping began: its name is going */
};

enum rusm__body_kind {
  RUSM__B_STACKLESS = 0,
  RUSM__B_STACKFUL = 1,
  RUSM__B_CUSTOM = 2,
  RUSM__B_ATTACHED = 3,
};

typedef struct rusm__hook {
  struct rusm__hook *next;
  void (*fn)(void *arg);
  void *arg;
} rusm__hook;

typedef struct rusm__sched rusm__sched;

struct rusm_proc {
  /* --- line 0: written by senders --------------------------------- */
  rusm__mailbox mbox;           /* producers' head */
  _Atomic uint32_t refs;        /* 1 while alive + 1 per thread holding it */
  _Atomic uint32_t flags;       /* RUSM__P_* */
  _Atomic uint64_t msgs_in;     /* messages pushed, for mailbox_len */
  _Atomic uint64_t shed;        /* user messages shed (bounded mailbox) */
  uint32_t capacity;            /* bounded mailbox, 0: unbounded */
  rusm_pid_t pid;               /* written only while refs == 0 */
  _Atomic(rusm__sched *) sched; /* home scheduler (queues and timers) */
  _Atomic uint8_t status;       /* rusm_proc_status, for introspection */
  uint8_t body;                 /* rusm__body_kind */

  /* --- owner side: touched by the thread running the process ------- */
  _Alignas(RUSM__CACHELINE) rusm__mpsc_cons cons; /* consumer tail + stub */
  rusm_msg *inner_head, *inner_tail; /* fetched messages, arrival order */
  uint64_t inner_len;
  _Atomic uint64_t msgs_out; /* messages taken, for mailbox_len */
  _Atomic uint64_t handled;
  _Atomic uint64_t reductions;
  rusm_proc *rq_next; /* run queue / free list link */
  rusm_rt *rt;
  const rusm_body_ops *ops;
  void *state;
  rusm__hook *hooks;          /* on_exit, LIFO */
  rusm__reason_box *exit_box; /* the body's own stop reason bytes */
  rusm__reason_box *sig_box;  /* an exit signal's reason bytes */
  rusm_exit_code exit_code;   /* valid when exit_pending */
  bool exit_pending;
  _Atomic bool trap_exit;      /* owner-written; relaxed reads by observers */
  rusm__links *lk;             /* links and monitors, allocated on first use */
  char *_Atomic reg_name;      /* registered name (the registry's copy) */
  const char *_Atomic label;   /* rusm_set_label (static string) */
  _Atomic uint64_t ext_memory; /* rusm_set_memory */
  /* mirrors of the owner's table sizes, for observers */
  _Atomic uint32_t n_links, n_mon_out, n_mon_in;
  _Atomic uint32_t stack_bytes; /* stackful: the stack reserved */
  _Atomic bool timer_armed;     /* mirror of timer.armed, for thieves */
  uint32_t slot;
  uint32_t gen;
  rusm__timer timer; /* the receive timeout, on the home wheel */

  union {
    struct {
      const rusm_stackless_ops *ops;
      rusm_filter filter;
      bool has_filter;
      bool started;
      int64_t deadline_ns;
    } sl;
    struct {
      rusm__coro coro;
      rusm_stackful_fn fn;
      void *arg;
      rusm_step step; /* what the coroutine asked for when it suspended */
      bool inside;    /* executing on its own stack now (not reaping) */
    } sf;
    struct {
      _Atomic uint32_t futex; /* 1: woken */
      bool killed;
    } at;
  } b;
};

/* ---- schedulers ------------------------------------------------------ */

typedef struct rusm__sched_counters {
  _Atomic uint64_t spawned;
  _Atomic uint64_t exited_by[RUSM_EXIT__COUNT];
  _Atomic uint64_t sent;
  _Atomic uint64_t delivered;
  _Atomic uint64_t dropped;
  _Atomic uint64_t shed;
  _Atomic uint64_t steals;
  _Atomic uint64_t runs;
  _Atomic uint64_t sleeps;
  _Atomic uint64_t idle_ns;
} rusm__sched_counters;

/* Owner-thread increment: one writer, so load + store, no RMW. */
#define RUSM__INC(field, n)                                                    \
  atomic_store_explicit(                                                       \
      &(field), atomic_load_explicit(&(field), memory_order_relaxed) + (n),    \
      memory_order_relaxed)

struct rusm__sched {
  /* --- shared: run queue (locked) and sleep word --- */
  pthread_mutex_t lock;
  rusm_proc *q_head, *q_tail;
  _Atomic uint32_t q_len;
  _Atomic uint32_t sleeping;  /* futex word: 1 while asleep */
  _Atomic uint64_t picks;     /* progress counter, for thieves */
  _Atomic uint32_t running;   /* 1 while running a process */
  _Atomic int64_t idle_since; /* start of the current idle spell, or 0 */
  /* timer requests from other threads (MPSC stacks, taken whole) */
  struct rusm__tentry *_Atomic t_add;
  struct rusm__tentry *_Atomic t_cancel;

  /* --- owner only --- */
  _Alignas(RUSM__CACHELINE) rusm_rt *rt;
  uint32_t index;
  pthread_t thread;
  rusm_proc *runnext;          /* woken by the running process: runs next */
  int32_t slice;               /* reductions left in the current slice */
  rusm__wheel wheel;           /* receive timeouts (embedded in processes) */
  rusm__wheel twheel;          /* rusm_send_after & co (rusm__tentry) */
  struct rusm__tentry *tcache; /* free timer entries */
  uint32_t tcache_n;
  rusm__coro_ctx coro_ctx;
  rusm__stack_pool stacks;
  rusm_proc *free_procs; /* cached free process structs */
  uint32_t free_count;
  uint32_t steal_from; /* next victim to look at */
  int64_t started_ns;
  rusm__sched_counters c;
};

/* Counters for work done on threads that are not schedulers. */
typedef struct rusm__ext_counters {
  _Atomic uint64_t spawned;
  _Atomic uint64_t exited_by[RUSM_EXIT__COUNT];
  _Atomic uint64_t sent;
  _Atomic uint64_t delivered;
  _Atomic uint64_t dropped;
  _Atomic uint64_t shed;
} rusm__ext_counters;

struct rusm_rt {
  rusm_rt_opts opts;
  uint32_t nsched;
  rusm__sched **sched;
  _Atomic uint32_t rr;       /* round-robin for spawns from outside */
  _Atomic uint32_t sleepers; /* schedulers asleep */
  _Atomic uint32_t spinning; /* schedulers idle-spinning */
  _Atomic bool stopping;     /* schedulers leave their loops */
  _Atomic bool closing;      /* no new spawns */

  /* process table: slot -> struct, set once per slot, never changed */
  _Atomic(rusm_proc *) *table;
  uint32_t table_len;
  _Atomic uint32_t slots_used; /* slots ever handed out (for scans) */

  pthread_mutex_t free_lock; /* global free list (FIFO) + chunk list */
  rusm_proc *free_head, *free_tail;
  uint32_t free_len;
  void **chunks;
  uint32_t nchunks, chunks_cap;
  uint64_t retired; /* slots whose generation ran out */

  _Atomic uint32_t live;     /* futex word: live processes */
  _Atomic uint32_t attached; /* live attached threads */
  _Atomic uint32_t idle_waiters;
  _Atomic uint64_t next_ref; /* monitor refs */
  struct rusm__registry *reg;
  struct rusm__timers *timers;
  rusm_pid_t *roots; /* rusm_rt_add_root, in order, under mod_lock */
  uint32_t nroots, roots_cap;
  pthread_mutex_t mod_lock;
  struct rusm__module *modules;
  rusm__ext_counters ext;
  /* Distribution: where nodes and signals for other nodes' pids go (set
   * once by the cluster library before it starts routing; NULL: none). */
  const struct rusm__dist_ops *_Atomic dist;
  void *dist_ctx;
};

/* The cluster library's side of the core. route() takes ownership of m, a
 * message (RUSM__N_MSG) or a signal node, addressed to `to` on another
 * node; it never blocks and is called from any thread. */
typedef struct rusm__dist_ops {
  void (*route)(void *ctx, rusm_pid_t to, rusm_msg *m);
} rusm__dist_ops;

/* Installs (or with ops NULL removes) the distribution hook. */
void rusm__set_dist(rusm_rt *rt, const rusm__dist_ops *ops, void *ctx);
/* A node for another node's pid goes to the route (which takes m) and
 * true is returned. False (m untouched) for a local pid, or when no node
 * runs: then a remote pid is treated as a dead one (noproc), as before a
 * cluster exists. */
bool rusm__route_remote(rusm_rt *rt, rusm_pid_t to, rusm_msg *m);
/* Local delivery of a node built elsewhere (m->from already set): the
 * cluster's receive path. 0, or RUSM_ENOPROC when `to` is not alive. */
int rusm__deliver(rusm_rt *rt, rusm_pid_t to, rusm_msg *m);

/* Thread-local context: which scheduler / process this thread runs. */
/* Remote spawn: the next process spawned on this thread starts linked to
 * link_to and/or monitored by monitor_by (pids on other nodes), before it
 * can run. The other end's tables are the cluster's business. */
typedef struct rusm__remote_parent {
  rusm_pid_t link_to;    /* 0: none */
  rusm_pid_t monitor_by; /* 0: none */
  rusm_ref ref;          /* monitor_by's ref */
  rusm_pid_t spawned;    /* out: the process it went to */
} rusm__remote_parent;

typedef struct rusm__tls {
  rusm__sched *sched;           /* NULL on non-scheduler threads */
  rusm_proc *cur;               /* running process, or the attached one */
  rusm__remote_parent *rparent; /* consumed by the next spawn */
} rusm__tls;

extern _Thread_local rusm__tls rusm__tl;

/* ---- cross-module internals ----------------------------------------- */

/* ptab.c */
int rusm__ptab_init(rusm_rt *rt);
void rusm__ptab_destroy(rusm_rt *rt);
rusm_proc *rusm__proc_alloc(rusm_rt *rt); /* NULL: table full / ENOMEM */
rusm_proc *rusm__proc_get(rusm_rt *rt, rusm_pid_t pid); /* +1 ref */
void rusm__proc_unref(rusm_proc *p);
rusm_proc *rusm__proc_at(rusm_rt *rt, uint32_t slot); /* no ref, may be NULL */

/* proc.c */
int rusm__spawn(rusm_rt *rt, rusm_proc *p, const rusm_spawn_opts *opts,
                rusm_pid_t *out);
void rusm__proc_reap(rusm_proc *p, rusm_exit_code code, const uint8_t *data,
                     uint32_t len);
void rusm__reap_pending(rusm_proc *p);
/* Moves the outer queue into the inner list, acting on signals. Returns
 * true when the process must exit now (p->exit_pending). */
bool rusm__drain(rusm_proc *p);
void rusm__free_node(rusm_msg *m);
/* Charges n reductions to the running process and its slice (nothing
 * off a scheduler). Inline: it sits on every send and receive. */
static inline void rusm__charge(uint32_t n) {
  rusm__sched *s = rusm__tl.sched;
  rusm_proc *cur = rusm__tl.cur;
  if (!s || !cur)
    return;
  s->slice -= (int32_t)n;
  RUSM__INC(cur->reductions, n);
}
void rusm__preempt_slow(rusm_proc *cur);

static inline bool rusm__filter_match(const rusm_filter *f, const rusm_msg *m) {
  if (!f)
    return true;
  if ((m->tag & f->mask) != f->value)
    return false;
  return !f->pred || f->pred(m, f->pred_arg);
}
/* A stackful process that spent its slice yields at runtime calls. */
static inline void rusm__preempt_point(void) {
  rusm_proc *cur = rusm__tl.cur;
  if (__builtin_expect(cur && cur->body == RUSM__B_STACKFUL, 0))
    rusm__preempt_slow(cur);
}
rusm__reason_box *rusm__reason_copy(rusm_exit_code code, const uint8_t *data,
                                    uint32_t len);
void rusm__reason_free(rusm__reason_box *b);

void rusm__inner_append(rusm_proc *p, rusm_msg *m);
void rusm__proc_free_unused(rusm_rt *rt, rusm_proc *p); /* never spawned */

/* signal.c */
rusm_msg *rusm__exit_node(uint8_t kind, rusm_pid_t from, rusm_exit_code code,
                          const uint8_t *data, uint32_t len);
/* Pushes node m to pid (consumed either way). 0 or RUSM_ENOPROC. */
int rusm__push_signal(rusm_rt *rt, rusm_pid_t to, rusm_msg *m);
/* As rusm__push_signal, but a link or monitor for a pid that is not alive
 * is answered (Exit / Down noproc to its sender), as after a death: for
 * signals whose sender did not handle the error itself (a remote one). */
int rusm__push_signal_answered(rusm_rt *rt, rusm_pid_t to, rusm_msg *m);
void rusm__act_on_signal(rusm_proc *p, rusm_msg *m);
void rusm__lk_sync(rusm_proc *p);
void rusm__signals_on_exit(rusm_proc *p, rusm_exit_code code,
                           const uint8_t *data, uint32_t len);
void rusm__answer_dead(rusm_rt *rt, rusm_pid_t dead, rusm_msg *m);
/* A node for `to` on a node out of reach: a link or monitor is answered
 * with noconnection, anything else dropped (m consumed). */
void rusm__answer_unreachable(rusm_rt *rt, rusm_pid_t to, rusm_msg *m);
/* Signal nodes, for the cluster's receive path. */
rusm_msg *rusm__down_node(rusm_ref ref, rusm_pid_t pid, rusm_exit_code code,
                          const uint8_t *data, uint32_t len);
rusm_msg *rusm__plain_node(uint8_t kind, rusm_pid_t from, uint64_t aux);
/* Remote spawn_monitor: a monitor ref entered in self's table before the
 * target exists (so a Down that follows the spawn reply finds it), then
 * pointed at the target, or (target 0) removed. Process context. */
int rusm__monitor_prepare(rusm_proc *self, rusm_ref *ref);
void rusm__monitor_settle(rusm_proc *self, rusm_ref ref, rusm_pid_t target);
int rusm__spawn_links(rusm_proc *child, const rusm_spawn_opts *opts);

/* A function run by the thread that runs process p, when p fetches the
 * node (in order with p's other signals and messages), with dead == false;
 * or with dead == true (p == NULL) when p exited first, so ctx can be
 * released. For runtime modules built on the core (TCP, timers ...). */
typedef void (*rusm__call_fn)(rusm_proc *p, void *ctx, bool dead);
/* 0, RUSM_ENOMEM, or RUSM_ENOPROC (then fn was already called with
 * dead == true). Callable from any thread. */
int rusm__push_call(rusm_rt *rt, rusm_pid_t to, rusm__call_fn fn, void *ctx);
/* rusm_send without the user-tag check: for runtime modules' messages. */
int rusm__send_sys(rusm_rt *rt, rusm_pid_t to, uint64_t tag, const void *data,
                   size_t len);

/* An optional runtime module that lives as long as the runtime (the I/O
 * poller ...). Registered once; its stop runs in rusm_rt_destroy after
 * every process exited and before the schedulers stop. */
typedef struct rusm__module {
  struct rusm__module *next;
  void (*stop)(rusm_rt *rt, struct rusm__module *m);
} rusm__module;
void rusm__module_add(rusm_rt *rt, rusm__module *m);

/* timers.c */
int rusm__timers_init(rusm_rt *rt);
void rusm__timers_destroy(rusm_rt *rt);
/* On scheduler s: takes requests from other threads, fires due timers. */
void rusm__timers_run(rusm__sched *s, int64_t now);
/* Earliest API-timer deadline on s, or -1. */
int64_t rusm__timers_next(rusm__sched *s);
/* Adds or cancels from other threads wait for this scheduler. Inline: the
 * scheduler looks at every pick. */
static inline bool rusm__timers_pending_requests(rusm__sched *s) {
  return atomic_load_explicit(&s->t_add, memory_order_relaxed) ||
         atomic_load_explicit(&s->t_cancel, memory_order_relaxed);
}

/* shutdown.c */
void rusm__roots_free(rusm_rt *rt);

/* registry.c */
int rusm__registry_init(rusm_rt *rt);
void rusm__registry_destroy(rusm_rt *rt);
void rusm__registry_release(rusm_proc *p); /* on the reaping path */

/* sched.c */
void rusm__schedule(rusm_proc *p); /* p was parked: make it runnable */
void rusm__enqueue(rusm__sched *s, rusm_proc *p);
void rusm__wake_sched(rusm__sched *s); /* if asleep */
rusm__sched *rusm__pick_sched(rusm_rt *rt, int32_t hint);
void rusm__count_exit(rusm_rt *rt, rusm_exit_code code);

/* bodies: a stackful process that must exit now (a kill fetched inside
 * the coroutine) switches out for good; never returns. */
_Noreturn void rusm__stackful_exit_now(rusm_proc *p);

extern const rusm_body_ops rusm__stackless_ops;
extern const rusm_body_ops rusm__stackful_ops;
extern const rusm_body_ops rusm__attached_ops;

static inline bool rusm__exited(const rusm_proc *p) {
  return atomic_load_explicit(&p->flags, memory_order_acquire) & RUSM__P_EXITED;
}

/* futex helpers (sched.c) */
int rusm__futex_wait(_Atomic uint32_t *word, uint32_t expect,
                     int64_t timeout_ns);
void rusm__futex_wake(_Atomic uint32_t *word, int n);

#endif
