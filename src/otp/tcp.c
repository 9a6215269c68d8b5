/*
 * tcp.c — TCP sockets owned by processes (rusm/tcp.h, docs/tcp.md).
 *
 * Every socket sits in the poller's descriptor table (poll.h); its state
 * here is a tcp_sock, touched only by the owning process. Three kinds of
 * owner:
 *  - an acceptor (stackless, ours) owns a listening socket; readiness
 *    becomes a private READY message, and its handler accepts a batch;
 *  - a stackless connection process runs the user's rusm_tcp_conn_ops
 *    behind a wrapper ("message mode"): readiness reads once into the
 *    scheduler's buffer and appends a RUSM_TAG_TCP_DATA message; the
 *    socket is re-armed only when the process has handled every data
 *    message ("active once");
 *  - stackful processes and attached threads ("blocking mode") call recv /
 *    send / connect, which suspend in rusm_receive() on a private WAKE tag
 *    that the readiness call appends while they wait.
 * Messages made here are appended straight to the owner's inner list: the
 * readiness call runs in the owner, in a drain, so they land in order with
 * everything else it fetched.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "otp/poll.h"
#include "rusm/tcp.h"

/* Private tags (never reach user code). */
#define TAG_WAKE (RUSM_TAG_SYSTEM | 0x180)  /* a blocked call may go on */
#define TAG_START (RUSM_TAG_SYSTEM | 0x181) /* a stackful conn's socket */
#define TAG_READY (RUSM_TAG_SYSTEM | 0x182) /* the listening socket */

#define DEFAULT_BACKLOG 1024
#define DEFAULT_QUEUE_MAX (1u << 20)
#define ACCEPT_BATCH 64 /* accepts per readiness, then re-arm */
#define PAUSE_MS 50     /* accepting paused after EMFILE & co */

enum { K_LISTEN = 1, K_CONN = 2 };
enum { M_MSG = 1, M_BLOCK = 2 };

typedef struct wq_chunk {
  struct wq_chunk *next;
  uint32_t len, off;
  uint8_t data[];
} wq_chunk;

typedef struct tcp_sock tcp_sock;

/* The blocking-mode sockets of one process, closed by its on_exit hook. */
typedef struct sockset {
  tcp_sock *head;
} sockset;

typedef struct listener {
  rusm_tcp_listen_opts o;
  uint32_t nsched, next_sched;
  bool paused;
  int64_t resume_ns;
} listener;

struct tcp_sock {
  rusm__pollent *e; /* NULL once closed */
  rusm__poller *pl;
  uint8_t kind, mode;
  uint8_t flags;     /* RUSM_TCP_* */
  bool eof;          /* the peer ended its side */
  bool failed;       /* an I/O error, err */
  bool reported;     /* RUSM_TAG_TCP_CLOSED appended */
  bool waiting;      /* blocking mode: a WAKE is wanted */
  bool ready_queued; /* listening: a READY message waits */
  int32_t err;
  uint32_t pending;   /* message mode: data messages not handled yet */
  uint32_t queue_max; /* message mode: send queue bound */
  size_t queued;
  wq_chunk *wq_head, *wq_tail;
  sockset *set; /* blocking mode */
  tcp_sock *set_prev, *set_next;
  const rusm_tcp_conn_ops *ops; /* message mode: the user's callbacks */
  void *user;                   /* ... and its state */
  rusm_tcp_conn_fn fn;          /* stackful connections, until started */
  void *arg;
  listener *lst; /* listening */
};

static const rusm__pollent_ops sock_ops;

/* ---- errors ----------------------------------------------------------- */

typedef struct err_entry {
  int code;
  const char *name, *msg, *reason;
} err_entry;

static const err_entry k_errs[] = {
    {RUSM_ECONNREFUSED, "RUSM_ECONNREFUSED", "connection refused",
     "tcp: connection refused"},
    {RUSM_ECONNRESET, "RUSM_ECONNRESET", "connection reset by peer",
     "tcp: connection reset by peer"},
    {RUSM_EPIPE, "RUSM_EPIPE", "broken pipe", "tcp: broken pipe"},
    {RUSM_EADDRINUSE, "RUSM_EADDRINUSE", "address already in use",
     "tcp: address already in use"},
    {RUSM_EADDRNOTAVAIL, "RUSM_EADDRNOTAVAIL", "address not available",
     "tcp: address not available"},
    {RUSM_ECLOSED, "RUSM_ECLOSED", "socket closed", "tcp: socket closed"},
    {RUSM_EMFILE, "RUSM_EMFILE", "too many open files",
     "tcp: too many open files"},
    {RUSM_ENOBUFS, "RUSM_ENOBUFS", "send queue full", "tcp: send queue full"},
    {RUSM_EUNREACH, "RUSM_EUNREACH", "network or host unreachable",
     "tcp: network or host unreachable"},
    {RUSM_ECONNTIMEDOUT, "RUSM_ECONNTIMEDOUT", "connection timed out",
     "tcp: connection timed out"},
    {RUSM_ENOMEM, NULL, NULL, "tcp: out of memory"},
    {RUSM_ESYS, NULL, NULL, "tcp: system call failed"},
};

static const err_entry *find_err(int err) {
  for (size_t i = 0; i < sizeof k_errs / sizeof k_errs[0]; i++)
    if (k_errs[i].code == err)
      return &k_errs[i];
  return NULL;
}

const char *rusm_tcp_strerror(int err) {
  const err_entry *e = find_err(err);
  return e && e->msg ? e->msg : rusm_strerror(err);
}

const char *rusm_tcp_err_name(int err) {
  const err_entry *e = find_err(err);
  return e && e->name ? e->name : rusm_err_name(err);
}

/* The exit reason of a connection process ended by error err. */
static rusm_reason reason_for(int err) {
  const err_entry *e = find_err(err);
  return rusm_reason_str(e ? e->reason : "tcp: I/O error");
}

static int map_errno(int e) {
  switch (e) {
  case ECONNREFUSED:
    return RUSM_ECONNREFUSED;
  case ECONNRESET:
  case ECONNABORTED:
    return RUSM_ECONNRESET;
  case EPIPE:
    return RUSM_EPIPE;
  case EADDRINUSE:
    return RUSM_EADDRINUSE;
  case EADDRNOTAVAIL:
    return RUSM_EADDRNOTAVAIL;
  case EMFILE:
  case ENFILE:
    return RUSM_EMFILE;
  case ENOMEM:
  case ENOBUFS:
    return RUSM_ENOMEM;
  case ENETUNREACH:
  case EHOSTUNREACH:
  case ENETDOWN:
  case EHOSTDOWN:
    return RUSM_EUNREACH;
  case ETIMEDOUT:
    return RUSM_ECONNTIMEDOUT;
  case EINVAL:
  case EAFNOSUPPORT:
    return RUSM_EINVAL;
  default:
    return RUSM_ESYS;
  }
}

/* ---- addresses -------------------------------------------------------- */

static int parse_addr(const char *host, uint16_t port, bool passive,
                      struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  char tmp[64];
  if (host && strcmp(host, "localhost") == 0)
    host = "127.0.0.1";
  if (host && host[0] == '[') { /* "[::1]" */
    size_t n = strlen(host);
    if (n < 3 || n - 2 >= sizeof tmp || host[n - 1] != ']')
      return RUSM_EINVAL;
    memcpy(tmp, host + 1, n - 2);
    tmp[n - 2] = '\0';
    host = tmp;
  }
  struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
  if (!host || !*host) {
    if (!passive)
      return RUSM_EINVAL;
    v4->sin_family = AF_INET;
    v4->sin_addr.s_addr = htonl(INADDR_ANY);
    v4->sin_port = htons(port);
    *len = sizeof *v4;
    return 0;
  }
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    *len = sizeof *v4;
    return 0;
  }
  if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    *len = sizeof *v6;
    return 0;
  }
  return RUSM_EINVAL; /* no DNS: see tcp.h */
}

static int format_addr(const struct sockaddr_storage *ss, char *host,
                       size_t hostlen, uint16_t *port) {
  char buf[INET6_ADDRSTRLEN];
  uint16_t p;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
    p = ntohs(v4->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
    p = ntohs(v6->sin6_port);
  } else {
    return RUSM_ESYS;
  }
  if (host && hostlen) {
    size_t n = strlen(buf);
    if (n >= hostlen)
      n = hostlen - 1;
    memcpy(host, buf, n);
    host[n] = '\0';
  }
  if (port)
    *port = p;
  return 0;
}

/* ---- socket state ----------------------------------------------------- */

static tcp_sock *sock_new(rusm__poller *pl, uint8_t kind, uint8_t mode) {
  tcp_sock *ts = rusm__calloc(1, sizeof *ts);
  if (ts) {
    ts->pl = pl;
    ts->kind = kind;
    ts->mode = mode;
    ts->queue_max = DEFAULT_QUEUE_MAX;
  }
  return ts;
}

static void sock_free(tcp_sock *ts) {
  assert(!ts->e && !ts->wq_head);
  if (ts->lst)
    rusm__free(ts->lst, sizeof *ts->lst);
  rusm__free(ts, sizeof *ts);
}

static void wq_free(tcp_sock *ts) {
  while (ts->wq_head) {
    wq_chunk *c = ts->wq_head;
    ts->wq_head = c->next;
    rusm__free(c, sizeof *c + c->len);
  }
  ts->wq_tail = NULL;
  ts->queued = 0;
}

static void set_unlink(tcp_sock *ts) {
  if (!ts->set)
    return;
  if (ts->set_prev)
    ts->set_prev->set_next = ts->set_next;
  else
    ts->set->head = ts->set_next;
  if (ts->set_next)
    ts->set_next->set_prev = ts->set_prev;
  ts->set = NULL;
  ts->set_prev = ts->set_next = NULL;
}

/* Closes the descriptor. The tcp_sock stays (its holder frees it). */
static void sock_close(tcp_sock *ts) {
  if (!ts->e)
    return;
  set_unlink(ts);
  wq_free(ts);
  rusm__pollent_close(ts->e);
  ts->e = NULL;
}

static void sockset_exit(void *arg) {
  sockset *set = arg;
  while (set->head) {
    tcp_sock *ts = set->head;
    sock_close(ts); /* unlinks it */
    sock_free(ts);
  }
  rusm__free(set, sizeof *set);
}

/* The process's socket set, made (with its on_exit hook) on first use.
 * The hook list is the process's own, so finding ours there is safe on
 * its thread; one hook serves every socket it ever opens. */
static sockset *sockset_of(rusm_proc *p) {
  for (rusm__hook *h = p->hooks; h; h = h->next)
    if (h->fn == sockset_exit)
      return h->arg;
  sockset *set = rusm__calloc(1, sizeof *set);
  if (set && rusm_on_exit(p, sockset_exit, set) != 0) {
    rusm__free(set, sizeof *set);
    set = NULL;
  }
  return set;
}

static void set_link(sockset *set, tcp_sock *ts) {
  ts->set = set;
  ts->set_prev = NULL;
  ts->set_next = set->head;
  if (set->head)
    set->head->set_prev = ts;
  set->head = ts;
}

/* Appends a message to the owner's inner list (the owner's thread). */
static bool append(rusm_proc *p, uint64_t tag, const void *data, size_t len) {
  rusm_msg *m = rusm__msg_new(RUSM__N_MSG, tag, data, len);
  if (!m)
    return false;
  m->from = RUSM_PID_NONE;
  /* relaxed: mailbox_len is approximate (as in deliver()). */
  atomic_fetch_add_explicit(&p->msgs_in, 1, memory_order_relaxed);
  rusm__inner_append(p, m);
  return true;
}

/* The socket handle checked: open, ours (TCP) and owned by self. */
static tcp_sock *owned(rusm_proc *self, const rusm_sock *sock) {
  if (!self || !sock)
    return NULL;
  const rusm__pollent *e = (const rusm__pollent *)sock;
  /* relaxed: the owner itself wrote these (or a spawn published them). */
  if (!atomic_load_explicit(&e->pl, memory_order_relaxed) ||
      e->ops != &sock_ops ||
      atomic_load_explicit(&e->owner, memory_order_relaxed) != self->pid)
    return NULL;
  return e->data;
}

static bool can_block(const rusm_proc *self) {
  return self && self == rusm__tl.cur &&
         (self->body == RUSM__B_STACKFUL || self->body == RUSM__B_ATTACHED);
}

/* Charges one reduction per socket call; a stackful caller whose slice
 * is spent yields here, so a loop of calls that never wait stays fair. */
static void tick(rusm_proc *self) {
  rusm__charge(1);
  rusm__sched *s = rusm__tl.sched;
  if (s && self->body == RUSM__B_STACKFUL && s->slice <= 0)
    rusm_yield(self);
}

static rusm_sock *handle_of(const tcp_sock *ts) {
  return ts->e ? (rusm_sock *)ts->e : NULL;
}

/* ---- the send queue (message mode) -------------------------------------- */

static int wq_push(tcp_sock *ts, const uint8_t *data, size_t len) {
  if (len > UINT32_MAX)
    return RUSM_EINVAL;
  wq_chunk *c = rusm__alloc(sizeof *c + len);
  if (!c)
    return RUSM_ENOMEM;
  c->next = NULL;
  c->len = (uint32_t)len;
  c->off = 0;
  memcpy(c->data, data, len);
  if (ts->wq_tail)
    ts->wq_tail->next = c;
  else
    ts->wq_head = c;
  ts->wq_tail = c;
  ts->queued += len;
  return 0;
}

/* Writes queued bytes until the kernel takes no more. 0 or the error. */
static int wq_flush(tcp_sock *ts) {
  while (ts->wq_head) {
    wq_chunk *c = ts->wq_head;
    ssize_t n = send(ts->e->fd, c->data + c->off, c->len - c->off,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
      return map_errno(errno);
    }
    c->off += (uint32_t)n;
    ts->queued -= (size_t)n;
    if (c->off == c->len) {
      ts->wq_head = c->next;
      if (!ts->wq_head)
        ts->wq_tail = NULL;
      rusm__free(c, sizeof *c + c->len);
    }
  }
  return 0;
}

/* ---- message mode: readiness ------------------------------------------- */

/* Appends RUSM_TAG_TCP_CLOSED once. Out of memory, the process is not
 * told (it would stall, as everything does then). */
static void report(rusm_proc *p, tcp_sock *ts, int err) {
  if (ts->reported)
    return;
  int32_t v = err;
  if (append(p, RUSM_TAG_TCP_CLOSED, &v, sizeof v))
    ts->reported = true;
}

static void fail(rusm_proc *p, tcp_sock *ts, int err) {
  if (!ts->failed) {
    ts->failed = true;
    ts->err = err;
  }
  report(p, ts, err);
}

static bool want_read(const tcp_sock *ts) {
  return ts->e && !ts->eof && !ts->failed && !ts->reported && ts->pending == 0;
}

/* Arms for what the socket waits for now; an error fails it. */
static void msg_rearm(rusm_proc *p, tcp_sock *ts) {
  if (!ts->e)
    return;
  uint32_t ev = (want_read(ts) ? RUSM__EV_IN : 0) |
                (ts->wq_head && !ts->failed ? RUSM__EV_OUT : 0);
  if (rusm__pollent_arm(ts->e, ev) < 0)
    fail(p, ts, RUSM_ESYS);
}

static void read_some(rusm_proc *p, tcp_sock *ts) {
  uint8_t *buf = rusm__poller_buf(ts->pl);
  if (!buf) {
    fail(p, ts, RUSM_ENOMEM);
    return;
  }
  ssize_t n;
  do
    n = recv(ts->e->fd, buf, RUSM__POLL_BUF, MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  rusm__charge(1);
  if (n > 0) {
    if (append(p, RUSM_TAG_TCP_DATA, buf, (size_t)n))
      ts->pending++;
    else
      fail(p, ts, RUSM_ENOMEM);
  } else if (n == 0) {
    ts->eof = true;
    report(p, ts, 0);
  } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
    fail(p, ts, map_errno(errno));
  }
}

static void msg_ready(rusm_proc *p, tcp_sock *ts, uint32_t ev) {
  if (ts->wq_head && !ts->failed &&
      (ev & (RUSM__EV_OUT | RUSM__EV_ERR | RUSM__EV_HUP))) {
    int rc = wq_flush(ts);
    if (rc < 0)
      fail(p, ts, rc);
    else if (!ts->wq_head && (ts->flags & RUSM_TCP_DRAINED_MSG))
      append(p, RUSM_TAG_TCP_DRAINED, NULL, 0);
  }
  if (want_read(ts) && (ev & (RUSM__EV_IN | RUSM__EV_ERR | RUSM__EV_HUP)))
    read_some(p, ts);
  msg_rearm(p, ts);
}

/* The poller's call, in the owner. */
static void sock_ready(rusm_proc *p, rusm__pollent *e, uint32_t ev) {
  tcp_sock *ts = e->data;
  if (ts->kind == K_LISTEN) {
    if (!ts->ready_queued && append(p, TAG_READY, NULL, 0))
      ts->ready_queued = true;
    else if (!ts->ready_queued) /* out of memory: try again later */
      rusm__pollent_arm(e, RUSM__EV_IN);
  } else if (ts->mode == M_BLOCK) {
    if (ts->waiting && append(p, TAG_WAKE, NULL, 0))
      ts->waiting = false;
    else if (ts->waiting) /* out of memory: try again later */
      rusm__pollent_arm(e, ev & (RUSM__EV_IN | RUSM__EV_OUT));
  } else {
    msg_ready(p, ts, ev);
  }
}

/* Poller stop: nobody owns it any more (see poll.h). */
static void sock_drop(rusm__pollent *e) {
  tcp_sock *ts = e->data;
  sock_close(ts);
  sock_free(ts);
}

static const rusm__pollent_ops sock_ops = {sock_ready, sock_drop};

/* ---- message mode: the connection process ------------------------------ */

static rusm_next after_user(rusm_proc *self, tcp_sock *ts, rusm_next n) {
  if (!n.stop)
    msg_rearm(self, ts);
  return n;
}

static rusm_next conn_init(rusm_proc *self, void **state) {
  tcp_sock *ts = *state;
  rusm__pollent_own(ts->e, rusm_self(self));
  rusm_next n = ts->ops->init ? ts->ops->init(self, handle_of(ts), &ts->user)
                              : rusm_next_wait();
  /* A client usually writes as soon as it connects: read what is there
   * before the first arm, which saves the trip through the poll thread
   * (nothing there costs one recv returning EAGAIN). */
  if (!n.stop && want_read(ts))
    read_some(self, ts);
  return after_user(self, ts, n);
}

static rusm_next conn_handle(rusm_proc *self, void *state, rusm_msg *m) {
  tcp_sock *ts = state;
  if (m) {
    uint64_t tag = rusm_msg_tag(m);
    if (tag == RUSM_TAG_TCP_DATA && ts->pending) {
      ts->pending--;
    } else if (tag == RUSM_TAG_TCP_CLOSED &&
               !(ts->flags & RUSM_TCP_CLOSED_MSG)) {
      int err = 0;
      rusm_tcp_msg_closed(m, &err);
      return rusm_next_stop(err ? reason_for(err) : RUSM_REASON_NORMAL);
    }
  }
  rusm_next n = ts->ops->handle(self, handle_of(ts), ts->user, m);
  return after_user(self, ts, n);
}

/* Also when the process never ran (killed first): then the socket was
 * never owned, and is closed here all the same. */
static void conn_terminate(rusm_proc *self, void *state,
                           const rusm_reason *why) {
  tcp_sock *ts = state;
  bool owned_now =
      ts->e && atomic_load_explicit(&ts->e->owner, memory_order_relaxed) ==
                   rusm_self(self);
  if (ts->ops->terminate)
    ts->ops->terminate(self, owned_now ? handle_of(ts) : NULL, ts->user, why);
  if (ts->e && ts->wq_head && !ts->failed)
    wq_flush(ts); /* a last try; what does not fit is lost */
  sock_close(ts);
  sock_free(ts);
}

static const rusm_stackless_ops conn_ops = {conn_init, conn_handle,
                                            conn_terminate};

/* ---- blocking mode: stackful connection processes ----------------------- */

typedef struct start_msg {
  rusm__pollent *e; /* NULL: could not take the socket */
  rusm_tcp_conn_fn fn;
  void *arg;
} start_msg;

/* Hands an accepted socket to its stackful process, in that process: the
 * socket is the call's until it runs, so a process killed before it ever
 * ran leaves nothing open (the call then runs with dead == true). */
static void claim_call(rusm_proc *p, void *ctx, bool dead) {
  tcp_sock *ts = ctx;
  if (dead) {
    sock_close(ts);
    sock_free(ts);
    return;
  }
  start_msg sm = {NULL, ts->fn, ts->arg};
  sockset *set = sockset_of(p);
  if (set) {
    rusm__pollent_own(ts->e, p->pid);
    set_link(set, ts);
    sm.e = ts->e;
  } else {
    sock_close(ts);
    sock_free(ts);
  }
  if (!append(p, TAG_START, &sm, sizeof sm)) {
    /* The process cannot be told; it waits for its socket until killed,
     * and its exit closes the socket. */
  }
}

static void conn_main(rusm_proc *self, void *arg) {
  (void)arg;
  rusm_filter f = rusm_filter_tag(TAG_START);
  rusm_msg *m = NULL;
  if (rusm_receive(self, &f, -1, &m) != 0)
    return;
  start_msg sm;
  memcpy(&sm, rusm_msg_data(m), sizeof sm);
  rusm_msg_free(m);
  if (!sm.e) {
    rusm_exit_self(self, reason_for(RUSM_ENOMEM));
    return;
  }
  sm.fn(self, (rusm_sock *)sm.e, sm.arg);
}

/* ---- the acceptor ------------------------------------------------------- */

static void start_conn(rusm_proc *self, tcp_sock *lts, int fd) {
  listener *l = lts->lst;
  rusm__poller *pl = lts->pl;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm__poller_count(pl, RUSM__PS_ACCEPTED, 1);
  if (l->o.flags & RUSM_TCP_NODELAY) {
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
                     sizeof one); /* a hint */
  }
  bool msg = l->o.ops != NULL;
  tcp_sock *ts = sock_new(pl, K_CONN, msg ? M_MSG : M_BLOCK);
  if (!ts || rusm__pollent_open(pl, fd, &sock_ops, ts, &ts->e) != 0) {
    if (ts)
      sock_free(ts);
    close(fd);
    rusm__poller_count(pl, RUSM__PS_SPAWN_FAILURES, 1);
    return;
  }
  ts->flags = (uint8_t)l->o.flags;
  ts->queue_max = l->o.send_queue_max ? l->o.send_queue_max : DEFAULT_QUEUE_MAX;
  rusm_spawn_opts so;
  rusm_spawn_opts_init(&so);
  /* Spread connections over the schedulers: each one's events then
   * wake it on its own home scheduler. */
  so.scheduler = (int32_t)(l->next_sched++ % l->nsched);
  rusm_pid_t pid;
  int rc;
  if (msg) {
    ts->ops = l->o.ops;
    ts->user = l->o.arg;
    rc = rusm_spawn_stackless(rt, &conn_ops, ts, &so, &pid);
  } else {
    ts->fn = l->o.fn;
    ts->arg = l->o.arg;
    so.stack_size = l->o.stack_size;
    rc = rusm_spawn_stackful(rt, conn_main, NULL, &so, &pid);
    if (rc == 0) {
      rc = rusm__push_call(rt, pid, claim_call, ts);
      if (rc == RUSM_ENOPROC)
        return; /* claim_call closed it */
      if (rc != 0)
        rusm_kill(rt, pid); /* it would wait for its socket forever */
    }
  }
  if (rc != 0) {
    sock_close(ts);
    sock_free(ts);
    rusm__poller_count(pl, RUSM__PS_SPAWN_FAILURES, 1);
  }
}

static rusm_next acc_wait(listener *l) {
  if (!l->paused)
    return rusm_next_wait();
  int64_t left = l->resume_ns - rusm_now_ns();
  int64_t ms = left <= 0 ? 1 : (left + 999999) / 1000000;
  return rusm_next_wait_for(NULL, ms);
}

static rusm_next accept_some(rusm_proc *self, tcp_sock *ts) {
  listener *l = ts->lst;
  for (int i = 0; i < ACCEPT_BATCH; i++) {
    int fd = accept4(ts->e->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      start_conn(self, ts, fd);
      continue;
    }
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK)
      break;
    if (e == EINTR)
      continue;
    rusm__poller_count(ts->pl, RUSM__PS_ACCEPT_ERRORS, 1);
    /* Failures of one connection (it went away, a firewall said no): the
     * next may do. */
    if (e == ECONNABORTED || e == EPROTO || e == EPERM || e == ENETDOWN ||
        e == ENOPROTOOPT || e == EHOSTDOWN || e == ENONET ||
        e == EHOSTUNREACH || e == EOPNOTSUPP || e == ENETUNREACH)
      continue;
    /* Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) or
     * worse: the connection stays in the backlog and the socket stays
     * ready, so re-arming would spin. Pause, unarmed, and try again. */
    rusm__poller_count(ts->pl, RUSM__PS_ACCEPT_PAUSES, 1);
    l->paused = true;
    l->resume_ns = rusm_now_ns() + (int64_t)PAUSE_MS * 1000000;
    return acc_wait(l);
  }
  if (rusm__pollent_arm(ts->e, RUSM__EV_IN) < 0)
    return rusm_next_stop(reason_for(RUSM_ESYS));
  return rusm_next_wait();
}

static rusm_next acc_init(rusm_proc *self, void **state) {
  tcp_sock *ts = *state;
  rusm__pollent_own(ts->e, rusm_self(self));
  if (rusm__pollent_arm(ts->e, RUSM__EV_IN) < 0)
    return rusm_next_stop(reason_for(RUSM_ESYS));
  return rusm_next_wait();
}

static rusm_next acc_handle(rusm_proc *self, void *state, rusm_msg *m) {
  tcp_sock *ts = state;
  listener *l = ts->lst;
  if (m && rusm_msg_tag(m) == TAG_READY) {
    ts->ready_queued = false;
    if (!l->paused)
      return accept_some(self, ts);
  } else if (!m && l->paused && rusm_now_ns() >= l->resume_ns) {
    l->paused = false;
    return accept_some(self, ts);
  }
  return acc_wait(l); /* other messages are ignored */
}

static void acc_terminate(rusm_proc *self, void *state,
                          const rusm_reason *why) {
  tcp_sock *ts = state;
  sock_close(ts);
  sock_free(ts);
}

static const rusm_stackless_ops acc_ops = {acc_init, acc_handle, acc_terminate};

/* ---- API: listening --------------------------------------------------- */

void rusm_tcp_listen_opts_init(rusm_tcp_listen_opts *o) {
  if (o)
    memset(o, 0, sizeof *o);
}

int rusm_tcp_msg_closed(const rusm_msg *m, int *err) {
  int32_t v;
  if (!m || rusm_msg_tag(m) != RUSM_TAG_TCP_CLOSED ||
      rusm_msg_len(m) != sizeof v)
    return RUSM_EINVAL;
  memcpy(&v, rusm_msg_data(m), sizeof v);
  if (err)
    *err = v;
  return 0;
}

int rusm_tcp_listen(rusm_rt *rt, const char *host, uint16_t port,
                    const rusm_tcp_listen_opts *o, rusm_pid_t *acceptor,
                    uint16_t *bound_port) {
  if (!rt || !o || (o->ops == NULL) == (o->fn == NULL) ||
      (o->ops && !o->ops->handle) || o->backlog < 0)
    return RUSM_EINVAL;
  struct sockaddr_storage ss;
  socklen_t sslen;
  int rc = parse_addr(host, port, true, &ss, &sslen);
  if (rc < 0)
    return rc;
  rusm__poller *pl;
  if ((rc = rusm__poller_get(rt, &pl)) < 0)
    return rc;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return map_errno(errno);
  int one = 1;
  /* A restarted listener can take its port while old connections linger
   * in TIME_WAIT. */
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&ss, sslen) != 0 ||
      listen(fd, o->backlog ? o->backlog : DEFAULT_BACKLOG) != 0) {
    rc = map_errno(errno);
    close(fd);
    return rc;
  }
  struct sockaddr_storage local;
  memset(&local, 0, sizeof local);
  socklen_t llen = sizeof local;
  uint16_t bound = port;
  if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0)
    format_addr(&local, NULL, 0, &bound);

  tcp_sock *ts = sock_new(pl, K_LISTEN, M_MSG);
  listener *l = ts ? rusm__calloc(1, sizeof *l) : NULL;
  if (!l) {
    if (ts)
      sock_free(ts);
    close(fd);
    return RUSM_ENOMEM;
  }
  l->o = *o;
  l->nsched = rusm_rt_schedulers(rt) ? rusm_rt_schedulers(rt) : 1;
  ts->lst = l;
  if ((rc = rusm__pollent_open(pl, fd, &sock_ops, ts, &ts->e)) < 0) {
    sock_free(ts);
    close(fd);
    return rc;
  }
  rusm_pid_t pid;
  /* From here the acceptor owns ts: its terminate closes the socket even
   * if it never runs. */
  if ((rc = rusm_spawn_stackless(rt, &acc_ops, ts, NULL, &pid)) < 0) {
    sock_close(ts);
    sock_free(ts);
    return rc;
  }
  if (acceptor)
    *acceptor = pid;
  if (bound_port)
    *bound_port = bound;
  return 0;
}

/* ---- API: blocking calls ------------------------------------------------ */

/* Waits (blocking mode) until the socket may be ready for ev or the
 * deadline (-1: none) passes. RUSM_ESHUTDOWN: an attached caller was
 * killed meanwhile, and its sockets are closed and freed (ts included). */
static int wait_ready(rusm_proc *self, tcp_sock *ts, uint32_t ev,
                      int64_t deadline) {
  int64_t ms = -1;
  if (deadline >= 0) {
    int64_t left = deadline - rusm_now_ns();
    if (left <= 0)
      return RUSM_ETIMEDOUT;
    ms = (left + 999999) / 1000000;
  }
  if (rusm__pollent_arm(ts->e, ev) < 0)
    return RUSM_ESYS;
  ts->waiting = true;
  rusm_filter f = rusm_filter_tag(TAG_WAKE);
  rusm_msg *m = NULL;
  int rc = rusm_receive(self, &f, ms, &m);
  if (rc == RUSM_ESHUTDOWN)
    return rc;
  ts->waiting = false;
  if (rc == 0)
    rusm_msg_free(m);
  return rc;
}

static int64_t deadline_of(int64_t timeout_ms) {
  return timeout_ms < 0 ? -1 : rusm_now_ns() + timeout_ms * 1000000;
}

int rusm_tcp_connect(rusm_proc *self, const char *host, uint16_t port,
                     int64_t timeout_ms, rusm_sock **out) {
  if (!self || !out)
    return RUSM_EINVAL;
  if (!can_block(self))
    return RUSM_ECONTEXT;
  struct sockaddr_storage ss;
  socklen_t sslen;
  int rc = parse_addr(host, port, false, &ss, &sslen);
  if (rc < 0)
    return rc;
  rusm__poller *pl;
  if ((rc = rusm__poller_get(self->rt, &pl)) < 0)
    return rc;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return map_errno(errno);
  tcp_sock *ts = sock_new(pl, K_CONN, M_BLOCK);
  if (!ts || (rc = rusm__pollent_open(pl, fd, &sock_ops, ts, &ts->e)) < 0) {
    if (ts)
      sock_free(ts);
    close(fd);
    return ts ? rc : RUSM_ENOMEM;
  }
  rusm__pollent_own(ts->e, self->pid);
  sockset *set = sockset_of(self);
  if (!set) {
    sock_close(ts);
    sock_free(ts);
    return RUSM_ENOMEM;
  }
  set_link(set, ts);
  int64_t deadline = deadline_of(timeout_ms);
  if (connect(fd, (struct sockaddr *)&ss, sslen) != 0) {
    if (errno != EINPROGRESS && errno != EINTR) {
      rc = map_errno(errno);
    } else if ((rc = wait_ready(self, ts, RUSM__EV_OUT, deadline)) == 0) {
      int soerr = 0;
      socklen_t elen = sizeof soerr;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &elen) != 0)
        soerr = errno;
      if (soerr)
        rc = soerr == ETIMEDOUT ? RUSM_ETIMEDOUT : map_errno(soerr);
    }
    if (rc == RUSM_ESHUTDOWN)
      return rc; /* the socket went with the attached caller */
    if (rc < 0) {
      sock_close(ts);
      sock_free(ts);
      return rc;
    }
  }
  rusm__poller_count(pl, RUSM__PS_CONNECTED, 1);
  *out = (rusm_sock *)ts->e;
  return 0;
}

ssize_t rusm_tcp_recv(rusm_proc *self, rusm_sock *sock, void *buf, size_t len,
                      int64_t timeout_ms) {
  tcp_sock *ts = owned(self, sock);
  if (!ts || !buf || len == 0) /* 0 would read as end of stream */
    return RUSM_EINVAL;
  if (!can_block(self) || ts->mode != M_BLOCK)
    return RUSM_ECONTEXT;
  /* A broken pipe is the sending side's: what the peer sent before it
   * closed is still there to read. */
  if (ts->failed && ts->err != RUSM_EPIPE)
    return ts->err;
  tick(self);
  int64_t deadline = deadline_of(timeout_ms);
  for (;;) {
    ssize_t n = recv(ts->e->fd, buf, len, MSG_DONTWAIT);
    if (n >= 0)
      return n;
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      ts->failed = true;
      ts->err = map_errno(errno);
      return ts->err;
    }
    if (timeout_ms == 0)
      return RUSM_ETIMEDOUT;
    int rc = wait_ready(self, ts, RUSM__EV_IN, deadline);
    if (rc < 0)
      return rc;
  }
}

static int send_block(rusm_proc *self, tcp_sock *ts, const uint8_t *data,
                      size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t n =
        send(ts->e->fd, data + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      off += (size_t)n;
      continue;
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      ts->failed = true;
      ts->err = map_errno(errno);
      return ts->err;
    }
    int rc = wait_ready(self, ts, RUSM__EV_OUT, -1);
    if (rc < 0)
      return rc;
  }
  return 0;
}

static int send_msg(rusm_proc *self, tcp_sock *ts, const uint8_t *data,
                    size_t len) {
  size_t off = 0;
  if (ts->wq_head) {
    if (ts->queued > ts->queue_max)
      return RUSM_ENOBUFS;
  } else {
    while (off < len) {
      ssize_t n =
          send(ts->e->fd, data + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) {
        off += (size_t)n;
        continue;
      }
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      int err = map_errno(errno);
      fail(self, ts, err);
      return err;
    }
  }
  if (off < len) {
    int rc = wq_push(ts, data + off, len - off);
    if (rc < 0)
      return rc; /* the stream lost its tail: the caller should close */
    msg_rearm(self, ts);
  }
  return 0;
}

int rusm_tcp_send(rusm_proc *self, rusm_sock *sock, const void *data,
                  size_t len) {
  tcp_sock *ts = owned(self, sock);
  if (!ts || (len && !data))
    return RUSM_EINVAL;
  if (self != rusm__tl.cur)
    return RUSM_ECONTEXT;
  if (ts->failed)
    return ts->err;
  if (len == 0)
    return 0;
  if (ts->mode == M_BLOCK) {
    if (!can_block(self))
      return RUSM_ECONTEXT;
    tick(self);
    return send_block(self, ts, data, len);
  }
  rusm__charge(1);
  return send_msg(self, ts, data, len);
}

ssize_t rusm_tcp_queued(rusm_proc *self, const rusm_sock *sock) {
  tcp_sock *ts = owned(self, sock);
  if (!ts)
    return RUSM_EINVAL;
  return (ssize_t)ts->queued;
}

typedef struct wait_arg {
  const rusm_filter *f;
} wait_arg;

static bool wake_or_user(const rusm_msg *m, void *arg) {
  const wait_arg *w = arg;
  return rusm_msg_tag(m) == TAG_WAKE || rusm_filter_match(w->f, m);
}

int rusm_tcp_wait(rusm_proc *self, rusm_sock *sock, const rusm_filter *f,
                  int64_t timeout_ms, rusm_msg **out) {
  tcp_sock *ts = owned(self, sock);
  if (!ts || !out)
    return RUSM_EINVAL;
  if (!can_block(self) || ts->mode != M_BLOCK)
    return RUSM_ECONTEXT;
  *out = NULL;
  if (rusm_try_receive(self, f, out) == 0)
    return 0;
  struct pollfd pfd = {.fd = ts->e->fd, .events = POLLIN};
  if (ts->failed || poll(&pfd, 1, 0) > 0)
    return 1;
  if (timeout_ms == 0)
    return RUSM_ETIMEDOUT;
  int64_t ms = timeout_ms < 0 ? -1 : timeout_ms;
  if (rusm__pollent_arm(ts->e, RUSM__EV_IN) < 0)
    return RUSM_ESYS;
  ts->waiting = true;
  wait_arg wa = {f};
  rusm_filter wf = {0, 0, wake_or_user, &wa};
  rusm_msg *m = NULL;
  int rc = rusm_receive(self, &wf, ms, &m);
  if (rc == RUSM_ESHUTDOWN)
    return rc;
  ts->waiting = false;
  if (rc < 0)
    return rc;
  if (rusm_msg_tag(m) == TAG_WAKE) {
    rusm_msg_free(m);
    return 1;
  }
  /* A WAKE that came behind the message is stale now: drop it. */
  rusm_filter wk = rusm_filter_tag(TAG_WAKE);
  rusm_msg *w = NULL;
  if (rusm_try_receive(self, &wk, &w) == 0)
    rusm_msg_free(w);
  *out = m;
  return 0;
}

/* ---- API: the rest ------------------------------------------------------ */

int rusm_tcp_shutdown(rusm_proc *self, rusm_sock *sock) {
  tcp_sock *ts = owned(self, sock);
  if (!ts)
    return RUSM_EINVAL;
  if (shutdown(ts->e->fd, SHUT_WR) != 0)
    return map_errno(errno);
  return 0;
}

int rusm_tcp_close(rusm_proc *self, rusm_sock *sock) {
  tcp_sock *ts = owned(self, sock);
  if (!ts || ts->kind != K_CONN)
    return RUSM_EINVAL;
  sock_close(ts);
  if (ts->mode == M_BLOCK)
    sock_free(ts); /* a message-mode one lives on with its process */
  return 0;
}

static int addr_query(rusm_proc *self, const rusm_sock *sock, bool peer,
                      char *host, size_t hostlen, uint16_t *port) {
  tcp_sock *ts = owned(self, sock);
  if (!ts)
    return RUSM_EINVAL;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t len = sizeof ss;
  int rc = peer ? getpeername(ts->e->fd, (struct sockaddr *)&ss, &len)
                : getsockname(ts->e->fd, (struct sockaddr *)&ss, &len);
  if (rc != 0)
    return map_errno(errno);
  return format_addr(&ss, host, hostlen, port);
}

int rusm_tcp_peername(rusm_proc *self, const rusm_sock *sock, char *host,
                      size_t hostlen, uint16_t *port) {
  return addr_query(self, sock, true, host, hostlen, port);
}

int rusm_tcp_sockname(rusm_proc *self, const rusm_sock *sock, char *host,
                      size_t hostlen, uint16_t *port) {
  return addr_query(self, sock, false, host, hostlen, port);
}

int rusm_tcp_stats_get(rusm_rt *rt, rusm_tcp_stats *out) {
  if (!rt || !out)
    return RUSM_EINVAL;
  memset(out, 0, sizeof *out);
  rusm__poller *pl = rusm__poller_find(rt);
  if (!pl)
    return 0;
  uint64_t v[RUSM__PS_COUNT];
  for (int i = 0; i < RUSM__PS_COUNT; i++)
    v[i] = atomic_load_explicit(&pl->n[i], memory_order_relaxed);
  out->opened = v[RUSM__PS_OPENED];
  out->open = v[RUSM__PS_OPENED] >= v[RUSM__PS_CLOSED]
                  ? v[RUSM__PS_OPENED] - v[RUSM__PS_CLOSED]
                  : 0;
  out->accepted = v[RUSM__PS_ACCEPTED];
  out->connected = v[RUSM__PS_CONNECTED];
  out->accept_pauses = v[RUSM__PS_ACCEPT_PAUSES];
  out->accept_errors = v[RUSM__PS_ACCEPT_ERRORS];
  out->spawn_failures = v[RUSM__PS_SPAWN_FAILURES];
  return 0;
}
