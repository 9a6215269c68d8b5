/*
 * node.c — a runtime as a cluster node: the I/O thread that drives the
 * QUIC endpoint, membership (swim.c) and the global registry (greg.c), the
 * core's distribution route for other nodes' pids, and the bookkeeping
 * that turns a lost node into noconnection for links and monitors.
 *
 * Connections. One QUIC connection per pair of nodes carries data: the one
 * dialled by the node whose name sorts first ("canonical"). The other
 * side may dial too (to reach a seed before it knows names): such a
 * connection carries membership messages only. A peer is up once its
 * canonical connection has exchanged HELLO; it goes down, as in Erlang,
 * when that connection closes for any reason or membership declares it
 * dead: every link to its processes gets noconnection, every monitor a
 * Down { noconnection }, and its frames still queued are dropped.
 *
 * Threads. route() runs on any thread (the sender's); it encodes the frame
 * into the peer's outgoing buffer under n->mu and wakes the I/O thread
 * once per batch. Everything else runs on the I/O thread, which delivers
 * incoming frames straight into local mailboxes.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "cluster/greg.h"
#include "cluster/node.h"
#include "cluster/quic.h"
#include "cluster/swim.h"
#include "cluster/tls.h"
#include "cluster/wire.h"
#include "otp/internal.h"
#include "otp/u64map.h"
#include "rusm/cluster.h"

#define NODE_MAX (RUSM_NODE_ID_MAX + 1)
#define OUT_MAX ((size_t)64 << 20) /* queued bytes per peer: then drop msgs */
#define TICK_NS 100000000ull       /* housekeeping period */
#define IO_SPIN_NS 20000ull        /* I/O thread polls this long, then sleeps */
#define TAG_REPLY (RUSM_TAG_SYSTEM | 0x13) /* answers to rusm_spawn_on ... */

/* ---- a set of (local pid, remote pid) pairs: cross-node links -------- */

typedef struct pair {
  rusm_pid_t a, b; /* a == 0: empty; b == 0: deleted */
} pair;

typedef struct pairset {
  pair *slots;
  uint32_t cap, len, used; /* used: live + deleted */
} pairset;

static uint32_t pair_hash(rusm_pid_t a, rusm_pid_t b) {
  uint64_t h =
      a * UINT64_C(0x9e3779b97f4a7c15) ^ b * UINT64_C(0xc2b2ae3d27d4eb4f);
  return (uint32_t)(h ^ (h >> 29));
}

static int pairset_grow(pairset *s) {
  uint32_t ncap = s->cap ? s->cap * 2 : 16;
  if (s->len * 4 < s->cap) /* mostly deleted: rehash at the same size */
    ncap = s->cap;
  pair *n = calloc(ncap, sizeof *n);
  if (!n)
    return RUSM_ENOMEM;
  for (uint32_t i = 0; i < s->cap; i++) {
    pair *p = &s->slots[i];
    if (!p->a || !p->b)
      continue;
    uint32_t j = pair_hash(p->a, p->b) & (ncap - 1);
    while (n[j].a)
      j = (j + 1) & (ncap - 1);
    n[j] = *p;
  }
  free(s->slots);
  s->slots = n;
  s->cap = ncap;
  s->used = s->len;
  return 0;
}

static int pairset_add(pairset *s, rusm_pid_t a, rusm_pid_t b) {
  if ((s->used + 1) * 4 >= s->cap * 3 && pairset_grow(s) < 0)
    return RUSM_ENOMEM;
  uint32_t j = pair_hash(a, b) & (s->cap - 1);
  while (s->slots[j].a) {
    if (s->slots[j].a == a && s->slots[j].b == b)
      return 0;
    j = (j + 1) & (s->cap - 1);
  }
  s->slots[j] = (pair){a, b};
  s->len++;
  s->used++;
  return 0;
}

static void pairset_del(pairset *s, rusm_pid_t a, rusm_pid_t b) {
  if (!s->cap)
    return;
  uint32_t j = pair_hash(a, b) & (s->cap - 1);
  while (s->slots[j].a) {
    if (s->slots[j].a == a && s->slots[j].b == b) {
      s->slots[j].b = 0; /* tombstone: keeps probe chains whole */
      s->len--;
      return;
    }
    j = (j + 1) & (s->cap - 1);
  }
}

/* ---- structures ------------------------------------------------------ */

typedef struct conn_ctx conn_ctx;

/* The reply a blocked requester waits for (TAG_REPLY): req id first. */
typedef struct reply_hdr {
  uint64_t req_id;
  int64_t rc;
  uint64_t a, b; /* spawn: pid, ref; procs: total, more */
} reply_hdr;

/* A request (spawn, process list, process info) waiting for its reply. */
typedef struct pending {
  uint64_t id;
  rusm_pid_t requester;
} pending;

/* Dials to an address that failed: retried with a growing delay, logged
 * once (a dead member's address is tried again and again otherwise). */
typedef struct dialfail {
  char addr[128];
  uint64_t until_ns, delay_ns;
  struct dialfail *next;
} dialfail;

typedef struct peer {
  /* under n->mu */
  char name[RUSM__WIRE_NODE_NAME_MAX + 1];
  char addr[128];
  uint16_t id;
  uint64_t boot;
  bool known; /* a member (or was): routes queue for it */
  bool up;    /* canonical connection with HELLO both ways */
  bool dirty; /* on n->dirty: out holds bytes for the I/O thread */
  struct peer *dirty_next;
  rusm__wbuf out;
  pairset links;                     /* (local, remote) */
  rusm__u64map mon_out_w, mon_out_t; /* ref -> local watcher, remote target */
  rusm__u64map mon_in_w, mon_in_t;   /* ref -> remote watcher, local target */
  struct pending *pend; /* requests waiting for this peer's reply */
  size_t npend, pend_cap;
  /* I/O thread only */
  conn_ctx *conn; /* the canonical connection, once connected */
  bool dialing;
  rusm__wbuf held; /* bytes the connection would not take yet */
} peer;

struct conn_ctx {
  rusm_node *n;
  rusm__quic_conn *c;
  char addr[128];
  char peer_name[RUSM__WIRE_NODE_NAME_MAX + 1];
  bool connected, hello_got, canonical;
  peer *p; /* set when up */
  rusm__wire_reader rd;
  conn_ctx *next;
};

typedef struct factory {
  char name[RUSM_NAME_MAX + 1];
  rusm_factory_fn fn;
  void *ud;
  struct factory *next;
} factory;

struct rusm_node {
  rusm_rt *rt;
  char name[RUSM__WIRE_NODE_NAME_MAX + 1];
  char listen[128];
  uint16_t id;
  uint64_t boot;
  void (*log)(void *ud, const char *line);
  void *log_ud;
  rusm__tls_creds *creds;
  rusm__quic_endpoint *ep;
  rusm__swim *swim;
  rusm__greg *greg;
  int epfd, evfd;
  pthread_t thread;
  _Atomic bool stopping;
  _Atomic bool wake_pending;
  conn_ctx *conns;     /* I/O thread */
  dialfail *dialfails; /* I/O thread */
  uint64_t next_tick;
  uint64_t spin_ns; /* I/O thread: how long it polls before sleeping */

  pthread_mutex_t mu; /* recursive: a factory may send to other nodes */
  peer *_Atomic peers[NODE_MAX];
  peer *dirty;
  factory *factories;
  rusm_pid_t *subs;
  size_t nsubs, subs_cap;
  rusm_pid_t agent; /* watches processes with global names */
  uint64_t next_req;
  /* Counters: bumped on any thread (relaxed: statistics only). */
  struct {
    _Atomic uint64_t members_up, frames_out, frames_in, bytes_out, bytes_in,
        msgs_dropped, peers_refused, bad_frames, claims_rejected, noconnection;
  } st;
};

#define CNT(n, field, v)                                                       \
  atomic_fetch_add_explicit(&(n)->st.field, (uint64_t)(v), memory_order_relaxed)

static const rusm__dist_ops node_dist;
static bool dial_failed(rusm_node *n, const char *addr, uint64_t now);
static void dial_ok(rusm_node *n, const char *addr);

/* ---- small helpers ----------------------------------------------------- */

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void nlog(rusm_node *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void nlog(rusm_node *n, const char *fmt, ...) {
  char line[512];
  int k = snprintf(line, sizeof line, "node %s: ", n->name);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + k, sizeof line - (size_t)k, fmt, ap);
  va_end(ap);
  if (n->log)
    n->log(n->log_ud, line);
  else
    fprintf(stderr, "rusm %s\n", line);
}

static void wake_io(rusm_node *n) {
  /* relaxed: the eventfd write is the synchronisation; this flag only
   * saves writes while one is pending. */
  if (!atomic_exchange_explicit(&n->wake_pending, true, memory_order_relaxed)) {
    uint64_t one = 1;
    ssize_t w = write(n->evfd, &one, sizeof one);
    (void)w; /* a full counter still wakes the thread */
  }
}

static void mark_dirty(rusm_node *n, peer *p) {
  if (!p->dirty) {
    p->dirty = true;
    p->dirty_next = n->dirty;
    n->dirty = p;
  }
}

/* Under n->mu. */
static peer *peer_get(rusm_node *n, uint16_t id, bool create) {
  if (id == 0 || id >= NODE_MAX)
    return NULL;
  peer *p = atomic_load_explicit(&n->peers[id], memory_order_acquire);
  if (p || !create)
    return p;
  p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->id = id;
  rusm__wbuf_init(&p->out);
  rusm__wbuf_init(&p->held);
  /* release: route() readers see the initialised fields */
  atomic_store_explicit(&n->peers[id], p, memory_order_release);
  return p;
}

static peer *peer_by_name(rusm_node *n, const char *name) {
  for (uint32_t i = 1; i < NODE_MAX; i++) {
    peer *p = atomic_load_explicit(&n->peers[i], memory_order_acquire);
    if (p && p->known && strcmp(p->name, name) == 0)
      return p;
  }
  return NULL;
}

/* ---- route: frames for other nodes (any thread) ------------------------ */

static void read_exit(const rusm_msg *m, rusm_reason *r) {
  int32_t code;
  uint32_t len;
  memcpy(&code, m->data + 8, 4);
  memcpy(&len, m->data + 12, 4);
  r->code = (rusm_exit_code)code;
  r->len = len;
  r->data = len ? m->data + RUSM_EXIT_PAYLOAD_HDR : NULL;
}

static void read_down(const rusm_msg *m, rusm_reason *r) {
  int32_t code;
  uint32_t len;
  memcpy(&code, m->data + 16, 4);
  memcpy(&len, m->data + 20, 4);
  r->code = (rusm_exit_code)code;
  r->len = len;
  r->data = len ? m->data + RUSM_DOWN_PAYLOAD_HDR : NULL;
}

/* Encodes m for peer p and keeps the bookkeeping. Under n->mu. */
static int encode_node(peer *p, rusm_pid_t to, const rusm_msg *m) {
  rusm__frame f;
  memset(&f, 0, sizeof f);
  uint64_t ref = (uint64_t)m->aux;
  switch (m->kind) {
  case RUSM__N_MSG:
    return rusm__wire_encode_send(&p->out, to, m->from, m->tag, m->data,
                                  m->len);
  case RUSM__N_EXIT:
  case RUSM__N_LINK_EXIT:
    f.kind = RUSM__WIRE_EXIT;
    f.exit.from = m->from;
    f.exit.to = to;
    read_exit(m, &f.exit.reason);
    f.exit.via_link = m->kind == RUSM__N_LINK_EXIT && m->from;
    if (m->kind == RUSM__N_LINK_EXIT)
      pairset_del(&p->links, m->from, to);
    break;
  case RUSM__N_LINK:
  case RUSM__N_UNLINK:
    f.kind = m->kind == RUSM__N_LINK ? RUSM__WIRE_LINK : RUSM__WIRE_UNLINK;
    f.link.from = m->from;
    f.link.to = to;
    if (m->kind == RUSM__N_LINK) {
      if (pairset_add(&p->links, m->from, to) < 0)
        return RUSM_ENOMEM;
    } else {
      pairset_del(&p->links, m->from, to);
    }
    break;
  case RUSM__N_MONITOR:
  case RUSM__N_DEMONITOR:
    f.kind =
        m->kind == RUSM__N_MONITOR ? RUSM__WIRE_MONITOR : RUSM__WIRE_DEMONITOR;
    f.monitor.from = m->from;
    f.monitor.to = to;
    f.monitor.ref = ref;
    if (m->kind == RUSM__N_MONITOR) {
      if (rusm__map_put(&p->mon_out_w, ref, m->from) < 0 ||
          rusm__map_put(&p->mon_out_t, ref, to) < 0)
        return RUSM_ENOMEM;
    } else {
      rusm__map_del(&p->mon_out_w, ref, NULL);
      rusm__map_del(&p->mon_out_t, ref, NULL);
    }
    break;
  case RUSM__N_DOWN:
    f.kind = RUSM__WIRE_DOWN;
    f.down.ref = ref;
    f.down.to = to;
    f.down.pid = m->from;
    read_down(m, &f.down.reason);
    rusm__map_del(&p->mon_in_w, ref, NULL);
    rusm__map_del(&p->mon_in_t, ref, NULL);
    break;
  default:
    return RUSM_EINVAL;
  }
  return rusm__wire_encode(&p->out, &f);
}

static void route(void *ctx, rusm_pid_t to, rusm_msg *m) {
  rusm_node *n = ctx;
  uint16_t id = rusm_pid_node(to);
  pthread_mutex_lock(&n->mu);
  peer *p = peer_get(n, id, false);
  /* relaxed: a send racing the stop may still be queued, then dropped */
  if (!p || !p->known ||
      atomic_load_explicit(&n->stopping, memory_order_relaxed)) {
    CNT(n, msgs_dropped, m->kind == RUSM__N_MSG);
    pthread_mutex_unlock(&n->mu);
    rusm__answer_unreachable(n->rt, to, m);
    return;
  }
  if (m->kind == RUSM__N_MSG && p->out.len > OUT_MAX) {
    CNT(n, msgs_dropped, 1); /* the peer does not keep up: shed, as a mailbox */
    pthread_mutex_unlock(&n->mu);
    rusm__free_node(m);
    return;
  }
  int rc = encode_node(p, to, m);
  bool wake = false;
  if (rc == 0) {
    CNT(n, frames_out, 1);
    if (!p->dirty && p->up) {
      mark_dirty(n, p);
      wake = true;
    }
  } else {
    CNT(n, msgs_dropped, 1);
  }
  pthread_mutex_unlock(&n->mu);
  rusm__free_node(m);
  if (wake)
    wake_io(n);
}

static const rusm__dist_ops node_dist = {.route = route};

/* Appends a frame for peer p from the node itself (any thread). */
static int send_frame(rusm_node *n, peer *p, const rusm__frame *f) {
  pthread_mutex_lock(&n->mu);
  int rc = rusm__wire_encode(&p->out, f);
  bool wake = false;
  if (rc == 0 && p->up && !p->dirty) {
    mark_dirty(n, p);
    wake = true;
  }
  pthread_mutex_unlock(&n->mu);
  if (wake)
    wake_io(n);
  return rc;
}

/* ---- peers going up and down (I/O thread) ------------------------------ */

static void notify_subs(rusm_node *n, uint64_t tag, const char *name) {
  pthread_mutex_lock(&n->mu);
  size_t k = n->nsubs;
  rusm_pid_t *copy = k ? malloc(k * sizeof *copy) : NULL;
  if (copy)
    memcpy(copy, n->subs, k * sizeof *copy);
  pthread_mutex_unlock(&n->mu);
  for (size_t i = 0; copy && i < k; i++)
    rusm__send_sys(n->rt, copy[i], tag, name, strlen(name));
  free(copy);
}

static void pump_greg(rusm_node *n);

/* Under n->mu. */
static int pend_add(peer *p, uint64_t id, rusm_pid_t requester) {
  if (p->npend == p->pend_cap) {
    size_t nc = p->pend_cap ? p->pend_cap * 2 : 8;
    pending *x = realloc(p->pend, nc * sizeof *x);
    if (!x)
      return RUSM_ENOMEM;
    p->pend = x;
    p->pend_cap = nc;
  }
  p->pend[p->npend++] = (pending){id, requester};
  return 0;
}

/* Under n->mu: true when id was pending (and is not any more). */
static bool pend_take(peer *p, uint64_t id) {
  for (size_t i = 0; i < p->npend; i++)
    if (p->pend[i].id == id) {
      p->pend[i] = p->pend[--p->npend];
      return true;
    }
  return false;
}

static void reply_to(rusm_node *n, rusm_pid_t to, const reply_hdr *h,
                     const void *extra, size_t len);

/* A reply arrived: true when its request is still waiting. */
static bool pend_take_locked(rusm_node *n, peer *p, uint64_t id) {
  pthread_mutex_lock(&n->mu);
  bool asked = pend_take(p, id);
  pthread_mutex_unlock(&n->mu);
  return asked;
}

static void peer_down(rusm_node *n, peer *p, const char *why) {
  pthread_mutex_lock(&n->mu);
  if (!p->up) {
    pthread_mutex_unlock(&n->mu);
    return;
  }
  p->up = false;
  p->conn = NULL;
  rusm__wbuf_reset(&p->out);
  rusm__wbuf_reset(&p->held);
  pairset links = p->links;
  rusm__u64map ow = p->mon_out_w, ot = p->mon_out_t;
  rusm__u64map iw = p->mon_in_w, it = p->mon_in_t;
  memset(&p->links, 0, sizeof p->links);
  memset(&p->mon_out_w, 0, sizeof p->mon_out_w);
  memset(&p->mon_out_t, 0, sizeof p->mon_out_t);
  memset(&p->mon_in_w, 0, sizeof p->mon_in_w);
  memset(&p->mon_in_t, 0, sizeof p->mon_in_t);
  char name[sizeof p->name];
  memcpy(name, p->name, sizeof name);
  uint64_t boot = p->boot;
  pending *pend = p->pend;
  size_t npend = p->npend;
  p->pend = NULL;
  p->npend = p->pend_cap = 0;
  pthread_mutex_unlock(&n->mu);
  for (size_t i = 0; i < npend; i++) { /* requests in flight fail now */
    reply_hdr h = {pend[i].id, RUSM_ENODE_DOWN, 0, 0};
    reply_to(n, pend[i].requester, &h, NULL, 0);
  }
  free(pend);

  uint64_t fired = 0;
  for (uint32_t i = 0; i < links.cap; i++) {
    pair *x = &links.slots[i];
    if (!x->a || !x->b)
      continue;
    rusm_msg *m = rusm__exit_node(RUSM__N_LINK_EXIT, x->b,
                                  RUSM_EXIT_NOCONNECTION, NULL, 0);
    if (m && rusm__push_signal(n->rt, x->a, m) == 0)
      fired++;
  }
  for (uint32_t i = 0; i < ow.cap; i++) {
    rusm__kv *kv = &ow.slots[i];
    uint64_t target = 0;
    if (!kv->key || !rusm__map_get(&ot, kv->key, &target))
      continue;
    rusm_msg *m =
        rusm__down_node(kv->key, target, RUSM_EXIT_NOCONNECTION, NULL, 0);
    if (m && rusm__push_signal(n->rt, kv->val, m) == 0)
      fired++;
  }
  for (uint32_t i = 0; i < iw.cap; i++) { /* their monitors on us: gone */
    rusm__kv *kv = &iw.slots[i];
    uint64_t target = 0;
    if (!kv->key || !rusm__map_get(&it, kv->key, &target))
      continue;
    rusm_msg *m = rusm__plain_node(RUSM__N_DEMONITOR, kv->val, kv->key);
    if (m)
      rusm__push_signal(n->rt, target, m);
  }
  free(links.slots);
  rusm__map_free(&ow);
  rusm__map_free(&ot);
  rusm__map_free(&iw);
  rusm__map_free(&it);
  pthread_mutex_lock(&n->mu);
  CNT(n, noconnection, fired);
  CNT(n, members_up, (uint64_t)-1);
  rusm__greg_member_down(n->greg, name, boot);
  pthread_mutex_unlock(&n->mu);
  pump_greg(n);
  nlog(n, "node %s down (%s)", name, why);
  notify_subs(n, RUSM_TAG_NODEDOWN, name);
}

static void conn_free(rusm_node *n, conn_ctx *cc) {
  for (conn_ctx **pp = &n->conns; *pp; pp = &(*pp)->next)
    if (*pp == cc) {
      *pp = cc->next;
      break;
    }
  rusm__wire_reader_free(&cc->rd);
  free(cc);
}

static void conn_drop(rusm_node *n, conn_ctx *cc, uint64_t code,
                      const char *why) {
  peer *p = cc->p;
  rusm__quic_conn_close(cc->c, code, why);
  if (p && p->conn == cc)
    peer_down(n, p, why);
  if (p)
    p->dialing = false;
  conn_free(n, cc);
}

static int hello(rusm_node *n, conn_ctx *cc) {
  rusm__frame f;
  memset(&f, 0, sizeof f);
  f.kind = RUSM__WIRE_HELLO;
  f.hello.proto_min = RUSM__WIRE_VERSION_MIN;
  f.hello.proto_max = RUSM__WIRE_VERSION_MAX;
  f.hello.node_id = n->id;
  f.hello.boot_id = n->boot;
  f.hello.name =
      (rusm__wire_bytes){(const uint8_t *)n->name, (uint32_t)strlen(n->name)};
  f.hello.addr = (rusm__wire_bytes){(const uint8_t *)n->listen,
                                    (uint32_t)strlen(n->listen)};
  rusm__wbuf b;
  rusm__wbuf_init(&b);
  int rc = rusm__wire_encode(&b, &f);
  if (rc == 0)
    rc = rusm__quic_conn_send(cc->c, b.data, b.len);
  rusm__wbuf_free(&b);
  return rc;
}

static void peer_up(rusm_node *n, conn_ctx *cc, const rusm__wire_hello *h) {
  char addr[128];
  snprintf(addr, sizeof addr, "%.*s", (int)h->addr.len,
           (const char *)h->addr.p);
  pthread_mutex_lock(&n->mu);
  peer *p = peer_get(n, h->node_id, true);
  if (!p) {
    pthread_mutex_unlock(&n->mu);
    conn_drop(n, cc, RUSM__WIRE_BYE_REFUSED, "out of memory");
    return;
  }
  peer *other = peer_by_name(n, cc->peer_name);
  bool restarted = p->up && p->boot != h->boot_id;
  bool conflict = (other && other != p && other->up) ||
                  (p->known && p->up && strcmp(p->name, cc->peer_name) != 0);
  pthread_mutex_unlock(&n->mu);
  if (conflict) {
    nlog(n, "refused %s: node id %u or its name is taken", cc->peer_name,
         h->node_id);
    conn_drop(n, cc, RUSM__WIRE_BYE_CONFLICT, "node name or id taken");
    return;
  }
  if (p->up && !restarted) {
    conn_drop(n, cc, RUSM__WIRE_BYE_DUPLICATE, "duplicate connection");
    return;
  }
  if (restarted && p->conn) {
    conn_ctx *old = p->conn;
    peer_down(n, p, "restarted");
    rusm__quic_conn_close(old->c, RUSM__WIRE_BYE_NORMAL, "restarted");
    conn_free(n, old);
  }
  pthread_mutex_lock(&n->mu);
  snprintf(p->name, sizeof p->name, "%s", cc->peer_name);
  snprintf(p->addr, sizeof p->addr, "%s", addr);
  p->boot = h->boot_id;
  p->known = true;
  p->up = true;
  p->conn = cc;
  p->dialing = false;
  cc->p = p;
  CNT(n, members_up, 1);
  if (p->out.len)
    mark_dirty(n, p);
  rusm__greg_member_up(n->greg, p->name, p->id, p->boot);
  pthread_mutex_unlock(&n->mu);
  pump_greg(n);
  nlog(n, "node %s up (id %u, %s)", p->name, p->id, p->addr);
  notify_subs(n, RUSM_TAG_NODEUP, p->name);
}

/* ---- incoming frames (I/O thread) ---------------------------------- */

static void deliver_msg(rusm_node *n, rusm_pid_t to, rusm_pid_t from,
                        uint64_t tag, const rusm__wire_bytes *payload) {
  rusm_msg *m = rusm__msg_new(RUSM__N_MSG, tag, payload->p, payload->len);
  if (!m)
    return;
  m->from = from;
  rusm__deliver(n->rt, to, m);
}

/* A signal from a remote process to a local one; a link or monitor on a
 * local pid that is gone is answered noproc, back over the connection
 * (route() also drops the bookkeeping). */
static void push(rusm_node *n, rusm_pid_t to, rusm_msg *m) {
  if (m)
    rusm__push_signal_answered(n->rt, to, m);
}

static void handle_spawn(rusm_node *n, peer *p, const rusm__wire_spawn_req *r) {
  char fname[RUSM_NAME_MAX + 1];
  snprintf(fname, sizeof fname, "%.*s", (int)r->factory.len,
           (const char *)r->factory.p);
  rusm__frame f;
  memset(&f, 0, sizeof f);
  f.kind = RUSM__WIRE_SPAWN_REPLY;
  f.spawn_reply.req_id = r->req_id;
  f.spawn_reply.requester = r->requester;
  /* n->mu is held from the spawn until the reply is queued, so nothing the
   * child sends to the requester can pass the reply. */
  pthread_mutex_lock(&n->mu);
  factory *fa = n->factories;
  while (fa && strcmp(fa->name, fname) != 0)
    fa = fa->next;
  /* a monitor's ref is the requester's: the first 8 argument bytes */
  rusm__remote_parent rp = {0};
  uint64_t ref = 0;
  int rc = RUSM_ENOFACTORY;
  rusm_pid_t child = 0;
  if (fa) {
    if (r->link)
      rp.link_to = r->requester;
    if (r->monitor) {
      memcpy(&ref, r->args.p, r->args.len >= 8 ? 8 : 0);
      rp.monitor_by = r->requester;
      rp.ref = ref;
    }
    rusm__tl.rparent = (r->link || r->monitor) ? &rp : NULL;
    size_t skip = r->monitor && r->args.len >= 8 ? 8 : 0;
    rc = fa->fn(n->rt, fa->ud, r->args.p ? r->args.p + skip : NULL,
                r->args.len - skip, &child);
    rusm__tl.rparent = NULL;
    if (rc == 0 && (r->link || r->monitor) && rp.spawned != child)
      rc = RUSM_EINVAL; /* the factory spawned nothing we could link */
    if (rc == 0 && r->link)
      pairset_add(&p->links, child, r->requester);
    if (rc == 0 && r->monitor) {
      rusm__map_put(&p->mon_in_w, ref, r->requester);
      rusm__map_put(&p->mon_in_t, ref, child);
    }
  }
  f.spawn_reply.pid = rc == 0 ? child : 0;
  f.spawn_reply.err = rc == 0 ? 0 : rc;
  f.spawn_reply.ref = ref;
  if (rusm__wire_encode(&p->out, &f) == 0 && p->up)
    mark_dirty(n, p);
  pthread_mutex_unlock(&n->mu);
}

static void reply_to(rusm_node *n, rusm_pid_t to, const reply_hdr *h,
                     const void *extra, size_t len) {
  rusm_msg *m = rusm__msg_new(RUSM__N_MSG, TAG_REPLY, NULL, sizeof *h + len);
  if (!m)
    return;
  memcpy(m->inline_data, h, sizeof *h);
  if (len)
    memcpy(m->inline_data + sizeof *h, extra, len);
  rusm__deliver(n->rt, to, m);
}

static void obs_to_wire(const rusm_obs_proc *o, rusm__wire_proc *w) {
  w->pid = o->pid;
  w->label = (rusm__wire_bytes){(const uint8_t *)o->label,
                                (uint32_t)strnlen(o->label, sizeof o->label)};
  w->status = (uint8_t)o->status;
  w->mailbox_len =
      o->mailbox_len > UINT32_MAX ? UINT32_MAX : (uint32_t)o->mailbox_len;
  w->reductions = o->reductions;
  w->memory = o->memory;
}

static void wire_to_obs(const rusm__wire_proc *w, rusm_obs_proc *o) {
  memset(o, 0, sizeof *o);
  o->pid = w->pid;
  size_t k =
      w->label.len < sizeof o->label - 1 ? w->label.len : sizeof o->label - 1;
  if (k)
    memcpy(o->label, w->label.p, k);
  snprintf(o->kind, sizeof o->kind, "remote");
  o->status = (rusm_proc_status)w->status;
  o->mailbox_len = w->mailbox_len;
  o->reductions = w->reductions;
  o->memory = w->memory;
}

static void handle_procs(rusm_node *n, peer *p, const rusm__wire_procs_req *r) {
  size_t total = 0;
  rusm_obs_processes(n->rt, NULL, 0, &total);
  size_t cap = total + 16;
  rusm_obs_proc *all = calloc(cap, sizeof *all);
  size_t got = 0;
  if (all)
    rusm_obs_processes(n->rt, all, cap, &got);
  if (got > cap)
    got = cap;
  pthread_mutex_lock(&n->mu);
  rusm__wire_procs_builder b;
  if (rusm__wire_procs_begin(&p->out, &b, r->req_id, r->requester, 0) == 0) {
    size_t i = r->offset, k = 0;
    for (; i < got && k < r->max; i++, k++) {
      rusm__wire_proc w;
      obs_to_wire(&all[i], &w);
      if (rusm__wire_procs_add(&p->out, &b, &w) < 0)
        break;
    }
    rusm__wire_procs_end(&p->out, &b, i < got);
    if (p->up)
      mark_dirty(n, p);
  }
  pthread_mutex_unlock(&n->mu);
  free(all);
}

static void handle_info(rusm_node *n, peer *p, const rusm__wire_info_req *r) {
  rusm__frame f;
  memset(&f, 0, sizeof f);
  f.kind = RUSM__WIRE_INFO_REPLY;
  f.info_reply.req_id = r->req_id;
  f.info_reply.requester = r->requester;
  rusm_obs_proc o;
  if (rusm_pid_node(r->pid) != n->id ||
      rusm_obs_process(n->rt, r->pid, &o) != 0) {
    f.info_reply.noproc = true;
    f.info_reply.proc.pid = r->pid;
  } else {
    obs_to_wire(&o, &f.info_reply.proc);
    f.info_reply.links = o.links;
    f.info_reply.monitors = o.monitors;
  }
  send_frame(n, p, &f);
}

/* Handles one frame from an up peer; false: protocol breach, close. */
static bool handle_frame(rusm_node *n, conn_ctx *cc, const rusm__frame *f) {
  peer *p = cc->p;
  switch (f->kind) {
  case RUSM__WIRE_SEND:
    if (rusm_pid_node(f->send.to) != n->id || (f->send.tag & RUSM_TAG_SYSTEM))
      return false;
    deliver_msg(n, f->send.to, f->send.from, f->send.tag, &f->send.payload);
    return true;
  case RUSM__WIRE_SEND_NAMED: {
    if (f->send_named.tag & RUSM_TAG_SYSTEM)
      return false;
    char name[RUSM_NAME_MAX + 1];
    snprintf(name, sizeof name, "%.*s", (int)f->send_named.name.len,
             (const char *)f->send_named.name.p);
    rusm_pid_t to = rusm_whereis(n->rt, name);
    if (to)
      deliver_msg(n, to, f->send_named.from, f->send_named.tag,
                  &f->send_named.payload);
    return true;
  }
  case RUSM__WIRE_LINK:
  case RUSM__WIRE_UNLINK: {
    rusm_pid_t from = f->link.from, to = f->link.to;
    if (rusm_pid_node(from) != p->id || rusm_pid_node(to) != n->id)
      return false;
    pthread_mutex_lock(&n->mu);
    if (f->kind == RUSM__WIRE_LINK)
      pairset_add(&p->links, to, from);
    else
      pairset_del(&p->links, to, from);
    pthread_mutex_unlock(&n->mu);
    push(n, to,
         rusm__plain_node(f->kind == RUSM__WIRE_LINK ? RUSM__N_LINK
                                                     : RUSM__N_UNLINK,
                          from, 0));
    return true;
  }
  case RUSM__WIRE_EXIT: {
    const rusm__wire_exit *x = &f->exit;
    if ((x->from && rusm_pid_node(x->from) != p->id) ||
        rusm_pid_node(x->to) != n->id)
      return false;
    if (x->via_link) {
      pthread_mutex_lock(&n->mu);
      pairset_del(&p->links, x->to, x->from);
      pthread_mutex_unlock(&n->mu);
    }
    push(n, x->to,
         rusm__exit_node(x->via_link ? RUSM__N_LINK_EXIT : RUSM__N_EXIT,
                         x->from, x->reason.code, x->reason.data,
                         x->reason.len));
    return true;
  }
  case RUSM__WIRE_MONITOR:
  case RUSM__WIRE_DEMONITOR: {
    const rusm__wire_monitor *mo = &f->monitor;
    if (rusm_pid_node(mo->from) != p->id || rusm_pid_node(mo->to) != n->id)
      return false;
    pthread_mutex_lock(&n->mu);
    if (f->kind == RUSM__WIRE_MONITOR) {
      rusm__map_put(&p->mon_in_w, mo->ref, mo->from);
      rusm__map_put(&p->mon_in_t, mo->ref, mo->to);
    } else {
      rusm__map_del(&p->mon_in_w, mo->ref, NULL);
      rusm__map_del(&p->mon_in_t, mo->ref, NULL);
    }
    pthread_mutex_unlock(&n->mu);
    push(n, mo->to,
         rusm__plain_node(f->kind == RUSM__WIRE_MONITOR ? RUSM__N_MONITOR
                                                        : RUSM__N_DEMONITOR,
                          mo->from, mo->ref));
    return true;
  }
  case RUSM__WIRE_DOWN: {
    const rusm__wire_down *d = &f->down;
    if (rusm_pid_node(d->pid) != p->id || rusm_pid_node(d->to) != n->id)
      return false;
    pthread_mutex_lock(&n->mu);
    rusm__map_del(&p->mon_out_w, d->ref, NULL);
    rusm__map_del(&p->mon_out_t, d->ref, NULL);
    pthread_mutex_unlock(&n->mu);
    push(n, d->to,
         rusm__down_node(d->ref, d->pid, d->reason.code, d->reason.data,
                         d->reason.len));
    return true;
  }
  case RUSM__WIRE_SPAWN_REQ:
    if (rusm_pid_node(f->spawn_req.requester) != p->id)
      return false;
    handle_spawn(n, p, &f->spawn_req);
    return true;
  case RUSM__WIRE_SPAWN_REPLY: {
    const rusm__wire_spawn_reply *r = &f->spawn_reply;
    if (rusm_pid_node(r->requester) != n->id ||
        (r->pid && rusm_pid_node(r->pid) != p->id))
      return false;
    bool asked = pend_take_locked(n, p, r->req_id);
    if (!asked) { /* the requester gave up: undo what the child got */
      if (r->pid)
        rusm__push_signal(n->rt, r->pid,
                          rusm__exit_node(RUSM__N_LINK_EXIT, r->requester,
                                          RUSM_EXIT_NOPROC, NULL, 0));
      return true;
    }
    reply_hdr h = {r->req_id, r->err, r->pid, r->ref};
    if (r->pid) {
      /* the requester's ends of link and monitor, before the reply and so
       * before anything the child sends (the connection keeps order) */
      pthread_mutex_lock(&n->mu);
      pairset_add(&p->links, r->requester, r->pid);
      if (r->ref) {
        rusm__map_put(&p->mon_out_w, r->ref, r->requester);
        rusm__map_put(&p->mon_out_t, r->ref, r->pid);
      }
      pthread_mutex_unlock(&n->mu);
      push(n, r->requester, rusm__plain_node(RUSM__N_LINK, r->pid, 1));
    }
    reply_to(n, r->requester, &h, NULL, 0);
    return true;
  }
  case RUSM__WIRE_PROCS_REQ:
    if (rusm_pid_node(f->procs_req.requester) != p->id)
      return false;
    handle_procs(n, p, &f->procs_req);
    return true;
  case RUSM__WIRE_PROCS_REPLY: {
    const rusm__wire_procs_reply *r = &f->procs_reply;
    if (rusm_pid_node(r->requester) != n->id)
      return false;
    bool asked = pend_take_locked(n, p, r->req_id);
    if (!asked)
      return true; /* late: the requester timed out */
    rusm_obs_proc *recs = calloc(r->count ? r->count : 1, sizeof *recs);
    uint32_t k = 0;
    rusm__wire_procs_iter it;
    rusm__wire_procs_iter_init(&it, r);
    rusm__wire_proc w;
    while (recs && rusm__wire_procs_iter_next(&it, &w))
      wire_to_obs(&w, &recs[k++]);
    reply_hdr h = {r->req_id, recs ? (int64_t)k : RUSM_ENOMEM, k, r->more};
    reply_to(n, r->requester, &h, recs, recs ? k * sizeof *recs : 0);
    free(recs);
    return true;
  }
  case RUSM__WIRE_INFO_REQ:
    if (rusm_pid_node(f->info_req.requester) != p->id)
      return false;
    handle_info(n, p, &f->info_req);
    return true;
  case RUSM__WIRE_INFO_REPLY: {
    const rusm__wire_info_reply *r = &f->info_reply;
    if (rusm_pid_node(r->requester) != n->id)
      return false;
    bool asked = pend_take_locked(n, p, r->req_id);
    if (!asked)
      return true;
    rusm_obs_proc o;
    wire_to_obs(&r->proc, &o);
    o.links = r->links;
    o.monitors = r->monitors;
    reply_hdr h = {r->req_id, r->noproc ? RUSM_ENOPROC : 0, 0, 0};
    reply_to(n, r->requester, &h, &o, sizeof o);
    return true;
  }
  case RUSM__WIRE_GREG:
    pthread_mutex_lock(&n->mu);
    if (rusm__greg_handle_message(n->greg, p->name, f->opaque.data.p,
                                  f->opaque.data.len) < 0)
      CNT(n, claims_rejected, 1);
    pthread_mutex_unlock(&n->mu);
    pump_greg(n);
    return true;
  default:
    return false;
  }
}

static void on_frame(rusm_node *n, conn_ctx *cc, const rusm__frame *f,
                     bool *closed) {
  CNT(n, frames_in, 1);
  if (f->kind == RUSM__WIRE_SWIM) {
    rusm__swim_handle_message(n->swim, cc->addr, f->opaque.data.p,
                              f->opaque.data.len, mono_ns() / 1000000);
    return;
  }
  if (f->kind == RUSM__WIRE_GOODBYE) {
    conn_drop(n, cc, RUSM__WIRE_BYE_NORMAL, "peer said goodbye");
    *closed = true;
    return;
  }
  if (f->kind == RUSM__WIRE_HELLO) {
    if (cc->hello_got || strlen(cc->peer_name) != f->hello.name.len ||
        memcmp(cc->peer_name, f->hello.name.p, f->hello.name.len) != 0 ||
        f->hello.node_id == n->id ||
        rusm__wire_negotiate(RUSM__WIRE_VERSION_MIN, RUSM__WIRE_VERSION_MAX,
                             f->hello.proto_min, f->hello.proto_max) < 0) {
      CNT(n, bad_frames, 1);
      nlog(n,
           "closing %s: bad HELLO (name not its certificate's, id, "
           "or version)",
           cc->addr);
      conn_drop(n, cc, RUSM__WIRE_BYE_PROTOCOL, "bad hello");
      *closed = true;
      return;
    }
    cc->hello_got = true;
    if (cc->canonical) {
      peer_up(n, cc, &f->hello);
      /* peer_up may have dropped cc */
      bool alive = false;
      for (conn_ctx *x = n->conns; x; x = x->next)
        alive |= x == cc;
      *closed = !alive;
    }
    return;
  }
  if (!cc->canonical || !cc->p || cc->p->conn != cc ||
      !handle_frame(n, cc, f)) {
    CNT(n, bad_frames, 1);
    nlog(n, "closing connection to %s: unexpected %s frame", cc->addr,
         rusm__wire_kind_name(f->kind));
    conn_drop(n, cc, RUSM__WIRE_BYE_PROTOCOL, "unexpected frame");
    *closed = true;
  }
}

/* ---- QUIC callbacks --------------------------------------------------- */

static void on_connected(rusm__quic_conn *c, const char *peer_node, void *ud) {
  rusm_node *n = ud;
  conn_ctx *cc = rusm__quic_conn_ud(c);
  if (!cc) { /* accepted */
    cc = calloc(1, sizeof *cc);
    if (!cc) {
      rusm__quic_conn_close(c, RUSM__WIRE_BYE_REFUSED, "out of memory");
      return;
    }
    cc->n = n;
    cc->c = c;
    snprintf(cc->addr, sizeof cc->addr, "%s", rusm__quic_conn_peer_addr(c));
    rusm__wire_reader_init(&cc->rd, 0);
    cc->next = n->conns;
    n->conns = cc;
    rusm__quic_conn_set_ud(c, cc);
    if (hello(n, cc) < 0) {
      conn_drop(n, cc, RUSM__WIRE_BYE_REFUSED, "out of memory");
      return;
    }
  }
  cc->connected = true;
  dial_ok(n, cc->addr);
  snprintf(cc->peer_name, sizeof cc->peer_name, "%s", peer_node);
  bool client = rusm__quic_conn_is_client(c);
  cc->canonical =
      client ? strcmp(n->name, peer_node) < 0 : strcmp(peer_node, n->name) < 0;
  if (strcmp(peer_node, n->name) == 0) {
    nlog(n, "refused %s: it presents this node's own name", cc->addr);
    conn_drop(n, cc, RUSM__WIRE_BYE_CONFLICT, "same node name");
  }
}

static void on_data(rusm__quic_conn *c, const uint8_t *data, size_t len,
                    void *ud) {
  rusm_node *n = ud;
  conn_ctx *cc = rusm__quic_conn_ud(c);
  if (!cc)
    return;
  CNT(n, bytes_in, len);
  if (rusm__wire_reader_feed(&cc->rd, data, len) < 0) {
    conn_drop(n, cc, RUSM__WIRE_BYE_PROTOCOL, "out of memory");
    return;
  }
  for (;;) {
    rusm__frame f;
    int rc = rusm__wire_reader_next(&cc->rd, &f);
    if (rc == 0)
      return;
    if (rc < 0) {
      CNT(n, bad_frames, 1);
      nlog(n, "closing connection to %s: %s", cc->addr,
           rusm__wire_strerror(rc));
      conn_drop(n, cc, RUSM__WIRE_BYE_PROTOCOL, rusm__wire_strerror(rc));
      return;
    }
    bool closed = false;
    on_frame(n, cc, &f, &closed);
    if (closed)
      return;
  }
}

static void on_closed(rusm__quic_conn *c, int err, uint64_t app_code,
                      const char *why, void *ud) {
  rusm_node *n = ud;
  conn_ctx *cc = rusm__quic_conn_ud(c);
  if (!cc)
    return;
  if (!cc->connected) {
    if (dial_failed(n, cc->addr, mono_ns()))
      nlog(n, "cannot connect to %s: %s (retrying with back-off)", cc->addr,
           why ? why : "closed");
    if (err <= -1000 || (err >= -299 && err <= -200))
      CNT(n, peers_refused, 1);
  }
  peer *p = cc->p;
  if (p && p->conn == cc) {
    rusm__swim_connection_lost(n->swim, p->addr, mono_ns() / 1000000);
    peer_down(n, p, why ? why : "connection lost");
  }
  for (uint32_t i = 1; i < NODE_MAX; i++) {
    peer *q = atomic_load_explicit(&n->peers[i], memory_order_relaxed);
    if (q && q->dialing && strcmp(q->addr, cc->addr) == 0)
      q->dialing = false;
  }
  (void)app_code;
  conn_free(n, cc);
}

static void on_refused(const char *addr, int err, const char *why, void *ud) {
  rusm_node *n = ud;
  CNT(n, peers_refused, 1);
  (void)err;
  nlog(n, "refused peer %s: %s", addr, why ? why : "");
}

/* ---- dialing, membership and the registry (I/O thread) ------------- */

static dialfail *dialfail_find(rusm_node *n, const char *addr) {
  for (dialfail *d = n->dialfails; d; d = d->next)
    if (strcmp(d->addr, addr) == 0)
      return d;
  return NULL;
}

/* True while dials to addr wait after failures. */
static bool dial_backoff(rusm_node *n, const char *addr, uint64_t now) {
  dialfail *d = dialfail_find(n, addr);
  return d && now < d->until_ns;
}

/* A dial to addr failed: the next waits 1 s, then 2, 4 ... up to 30 s.
 * Returns true for the first failure in a row (the one worth a log line). */
static bool dial_failed(rusm_node *n, const char *addr, uint64_t now) {
  dialfail *d = dialfail_find(n, addr);
  bool first = d == NULL;
  if (!d) {
    d = calloc(1, sizeof *d);
    if (!d)
      return true;
    snprintf(d->addr, sizeof d->addr, "%s", addr);
    d->next = n->dialfails;
    n->dialfails = d;
    d->delay_ns = 1000000000ull;
  } else if (d->delay_ns < 30000000000ull) {
    d->delay_ns *= 2;
  }
  d->until_ns = now + d->delay_ns;
  return first;
}

static void dial_ok(rusm_node *n, const char *addr) {
  for (dialfail **pp = &n->dialfails; *pp; pp = &(*pp)->next)
    if (strcmp((*pp)->addr, addr) == 0) {
      dialfail *d = *pp;
      *pp = d->next;
      free(d);
      return;
    }
}

static conn_ctx *dial(rusm_node *n, const char *addr, const char *expect) {
  conn_ctx *cc = calloc(1, sizeof *cc);
  if (!cc)
    return NULL;
  cc->n = n;
  snprintf(cc->addr, sizeof cc->addr, "%s", addr);
  rusm__wire_reader_init(&cc->rd, 0);
  if (rusm__quic_connect(n->ep, addr, expect, cc, &cc->c) < 0) {
    rusm__wire_reader_free(&cc->rd);
    free(cc);
    return NULL;
  }
  cc->next = n->conns;
  n->conns = cc;
  if (hello(n, cc) < 0) {
    conn_drop(n, cc, RUSM__WIRE_BYE_REFUSED, "out of memory");
    return NULL;
  }
  return cc;
}

static void send_opaque(conn_ctx *cc, rusm__wire_kind kind, const uint8_t *b,
                        size_t len) {
  rusm__frame f;
  memset(&f, 0, sizeof f);
  f.kind = kind;
  f.opaque.data = (rusm__wire_bytes){b, (uint32_t)len};
  rusm__wbuf w;
  rusm__wbuf_init(&w);
  if (rusm__wire_encode(&w, &f) == 0)
    rusm__quic_conn_send(cc->c, w.data, w.len);
  rusm__wbuf_free(&w);
}

static void pump_swim(rusm_node *n) {
  rusm__swim_transmit t;
  while (rusm__swim_poll_transmit(n->swim, &t)) {
    conn_ctx *best = NULL;
    for (conn_ctx *x = n->conns; x; x = x->next)
      if (strcmp(x->addr, t.addr) == 0 && (!best || x->connected))
        best = x;
    if (!best && !dial_backoff(n, t.addr, mono_ns()))
      best = dial(n, t.addr, NULL);
    if (best)
      send_opaque(best, RUSM__WIRE_SWIM, t.bytes, t.len);
  }
  rusm__swim_event ev;
  while (rusm__swim_poll_event(n->swim, &ev)) {
    const rusm__swim_member *m = &ev.member;
    switch (ev.type) {
    case RUSM__SWIM_MEMBER_UP:
    case RUSM__SWIM_MEMBER_ALIVE: {
      pthread_mutex_lock(&n->mu);
      peer *p = peer_get(n, m->node_id, true);
      if (p && !p->up) {
        snprintf(p->name, sizeof p->name, "%s", m->name);
        snprintf(p->addr, sizeof p->addr, "%s", m->addr);
        p->known = true;
      }
      pthread_mutex_unlock(&n->mu);
      break;
    }
    case RUSM__SWIM_MEMBER_DOWN: {
      pthread_mutex_lock(&n->mu);
      peer *p = peer_get(n, m->node_id, false);
      bool match = p && strcmp(p->name, m->name) == 0 &&
                   (!p->up || p->boot == m->boot_id);
      conn_ctx *cc = match ? p->conn : NULL;
      pthread_mutex_unlock(&n->mu);
      if (match && p->up) {
        peer_down(n, p,
                  ev.reason == RUSM__SWIM_REASON_LEFT        ? "it left"
                  : ev.reason == RUSM__SWIM_REASON_RESTARTED ? "it restarted"
                  : ev.reason == RUSM__SWIM_REASON_CONFLICT
                      ? "it lost a name conflict"
                      : "failure detector: no answer");
        if (cc) {
          rusm__quic_conn_close(cc->c, RUSM__WIRE_BYE_NORMAL, "declared down");
          conn_free(n, cc);
        }
      }
      break;
    }
    case RUSM__SWIM_JOIN_REFUSED:
      nlog(n, "join refused: name %s or id %u taken (reason %d)", m->name,
           m->node_id, (int)ev.reason);
      break;
    default:
      break;
    }
  }
}

static void pump_greg(rusm_node *n) {
  pthread_mutex_lock(&n->mu);
  rusm__greg_transmit t;
  while (rusm__greg_poll_transmit(n->greg, &t)) {
    rusm__frame f;
    memset(&f, 0, sizeof f);
    f.kind = RUSM__WIRE_GREG;
    f.opaque.data = (rusm__wire_bytes){t.data, (uint32_t)t.len};
    for (uint32_t i = 1; i < NODE_MAX; i++) {
      peer *p = atomic_load_explicit(&n->peers[i], memory_order_relaxed);
      if (!p || !p->up || (t.to && strcmp(t.to, p->name) != 0))
        continue;
      if (rusm__wire_encode(&p->out, &f) == 0)
        mark_dirty(n, p);
    }
    rusm__greg_transmit_free(&t);
  }
  rusm__greg_event ev;
  while (rusm__greg_poll_event(n->greg, &ev))
    if (ev.kind == RUSM__GREG_NAME_LOST)
      rusm__send_sys(n->rt, ev.pid, RUSM_TAG_GLOBAL_LOST, ev.name,
                     strlen(ev.name));
  bool any = n->dirty != NULL;
  pthread_mutex_unlock(&n->mu);
  if (any)
    wake_io(n);
}

/* Dials every known member this node must dial (its name sorts first). */
static void dial_members(rusm_node *n) {
  for (uint32_t i = 1; i < NODE_MAX; i++) {
    peer *p = atomic_load_explicit(&n->peers[i], memory_order_relaxed);
    if (!p || !p->known || p->up || p->dialing || !p->addr[0] ||
        strcmp(n->name, p->name) >= 0)
      continue;
    if (rusm__swim_find(n->swim, p->id, NULL) != 0 ||
        dial_backoff(n, p->addr, mono_ns()))
      continue; /* no longer a live member, or not answering */
    if (dial(n, p->addr, p->name))
      p->dialing = true;
  }
}

/* Moves every dirty peer's bytes into its connection. */
static void drain_out(rusm_node *n) {
  pthread_mutex_lock(&n->mu);
  peer *list = n->dirty;
  n->dirty = NULL;
  for (peer *p = list; p; p = p->dirty_next)
    p->dirty = false;
  /* the bytes move under the lock: route() appends meanwhile otherwise */
  for (peer *p = list; p; p = p->dirty_next) {
    if (!p->up || !p->conn)
      continue;
    if (p->held.len) { /* older bytes first */
      if (rusm__wbuf_append(&p->held, p->out.data, p->out.len) == 0)
        rusm__wbuf_reset(&p->out);
    } else {
      rusm__wbuf t = p->held;
      p->held = p->out;
      p->out = t;
    }
  }
  pthread_mutex_unlock(&n->mu);
  for (peer *p = list; p; p = p->dirty_next) {
    if (!p->conn || !p->held.len)
      continue;
    int rc = rusm__quic_conn_send(p->conn->c, p->held.data, p->held.len);
    if (rc == 0) {
      CNT(n, bytes_out, p->held.len);
      rusm__wbuf_reset(&p->held);
    }
    /* RUSM_ENOBUFS: kept in held until on_writable */
  }
}

static void on_writable(rusm__quic_conn *c, void *ud) {
  rusm_node *n = ud;
  conn_ctx *cc = rusm__quic_conn_ud(c);
  if (cc && cc->p) {
    pthread_mutex_lock(&n->mu);
    mark_dirty(n, cc->p);
    pthread_mutex_unlock(&n->mu);
  }
}

/* ---- the I/O thread --------------------------------------------------- */

static void *io_main(void *arg) {
  rusm_node *n = arg;
  struct epoll_event evs[8];
  while (!atomic_load_explicit(&n->stopping, memory_order_acquire)) {
    uint64_t now = mono_ns();
    uint64_t due = rusm__quic_endpoint_next_expiry(n->ep);
    uint64_t sw = rusm__swim_next_timeout(n->swim);
    if (sw != UINT64_MAX && sw * 1000000 < due)
      due = sw * 1000000;
    if (n->next_tick < due)
      due = n->next_tick;
    struct timespec ts = {0, 0};
    if (due > now) {
      uint64_t d = due - now;
      ts.tv_sec = (time_t)(d / 1000000000ull);
      ts.tv_nsec = (long)(d % 1000000000ull);
    }
    /* A reply often follows within microseconds: look again for a short
     * while (yielding the core) before paying a sleep and a wake-up. */
    int k = 0;
    if (due > now && n->spin_ns)
      for (uint64_t t0 = now; k == 0 && mono_ns() - t0 < n->spin_ns;) {
        k = epoll_wait(n->epfd, evs, 8, 0);
        if (k == 0)
          sched_yield();
      }
    if (k == 0)
      k = epoll_pwait2(n->epfd, evs, 8, &ts, NULL);
    now = mono_ns();
    for (int i = 0; i < k; i++) {
      if (evs[i].data.u32 == 1) {
        rusm__quic_endpoint_on_readable(n->ep, now);
      } else {
        uint64_t v;
        ssize_t r = read(n->evfd, &v, sizeof v);
        (void)r;
        atomic_store_explicit(&n->wake_pending, false, memory_order_relaxed);
      }
    }
    if (rusm__quic_endpoint_next_expiry(n->ep) <= now)
      rusm__quic_endpoint_on_timeout(n->ep, now);
    rusm__swim_handle_timeout(n->swim, now / 1000000);
    pump_swim(n);
    if (now >= n->next_tick) {
      n->next_tick = now + TICK_NS;
      dial_members(n);
    }
    drain_out(n);
    rusm__quic_endpoint_flush(n->ep, now);
  }
  rusm__swim_leave(n->swim);
  pump_swim(n);
  drain_out(n);
  rusm__quic_endpoint_flush(n->ep, mono_ns());
  return NULL;
}

/* ---- the agent: releases global names of exiting processes ------------ */

#define TAG_AGENT_WATCH (RUSM_TAG_SYSTEM | 0x14)

static rusm_next agent_handle(rusm_proc *self, void *state, rusm_msg *m) {
  rusm_node *n = state;
  if (!m)
    return rusm_next_wait();
  if (rusm_msg_tag(m) == TAG_AGENT_WATCH && rusm_msg_len(m) == 8) {
    rusm_pid_t pid;
    memcpy(&pid, rusm_msg_data(m), 8);
    rusm_ref ref;
    rusm_monitor(self, pid, &ref);
  } else if (rusm_msg_tag(m) == RUSM_TAG_DOWN) {
    rusm_down_info d;
    if (rusm_msg_down(m, &d) == 0) {
      pthread_mutex_lock(&n->mu);
      rusm__greg_local_process_exited(n->greg, d.pid);
      pthread_mutex_unlock(&n->mu);
      pump_greg(n);
    }
  }
  return rusm_next_wait();
}

static const rusm_stackless_ops agent_ops = {.handle = agent_handle};

/* ---- registry crypto ------------------------------------------------ */

static int greg_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig,
                     size_t *sig_len) {
  return rusm__tls_sign(ctx, msg, len, sig, sig_len);
}

static bool greg_verify(void *ctx, const char *host, const uint8_t *proof,
                        size_t proof_len, const uint8_t *msg, size_t len,
                        const uint8_t *sig, size_t sig_len) {
  return rusm__tls_verify_signed(ctx, host, proof, proof_len, msg, len, sig,
                                 sig_len);
}

/* ---- public API ------------------------------------------------------- */

void rusm_node_opts_init(rusm_node_opts *o) { memset(o, 0, sizeof *o); }

static rusm_node *_Atomic g_nodes[8]; /* rt -> node, for rusm_rt_node_get */

rusm_node *rusm_rt_node_get(rusm_rt *rt) {
  for (int i = 0; i < 8; i++) {
    rusm_node *n = atomic_load(&g_nodes[i]);
    if (n && n->rt == rt)
      return n;
  }
  return NULL;
}

static void node_free(rusm_node *n) {
  rusm__swim_free(n->swim);
  rusm__greg_free(n->greg);
  rusm__tls_creds_free(n->creds);
  if (n->epfd >= 0)
    close(n->epfd);
  if (n->evfd >= 0)
    close(n->evfd);
  for (uint32_t i = 1; i < NODE_MAX; i++) {
    peer *p = atomic_load(&n->peers[i]);
    if (!p)
      continue;
    rusm__wbuf_free(&p->out);
    rusm__wbuf_free(&p->held);
    free(p->pend);
    free(p->links.slots);
    rusm__map_free(&p->mon_out_w);
    rusm__map_free(&p->mon_out_t);
    rusm__map_free(&p->mon_in_w);
    rusm__map_free(&p->mon_in_t);
    free(p);
  }
  while (n->dialfails) {
    dialfail *d = n->dialfails;
    n->dialfails = d->next;
    free(d);
  }
  while (n->factories) {
    factory *f = n->factories;
    n->factories = f->next;
    free(f);
  }
  free(n->subs);
  pthread_mutex_destroy(&n->mu);
  free(n);
}

int rusm_node_start(rusm_rt *rt, const rusm_node_opts *o, rusm_node **out) {
  if (!rt || !o || !out || !o->name || !o->listen || !o->ca_file ||
      !o->cert_file || !o->key_file || (o->n_seeds && !o->seeds))
    return RUSM_EINVAL;
  if (!rusm__tls_node_name_valid(o->name))
    return RUSM_ENODE_NAME;
  uint16_t id = rusm_rt_node(rt);
  if (id == 0)
    return RUSM_EINVAL; /* the runtime needs a node id */
  if (rusm_rt_node_get(rt))
    return RUSM_EEXIST;
  rusm_node *n = calloc(1, sizeof *n);
  if (!n)
    return RUSM_ENOMEM;
  n->rt = rt;
  n->id = id;
  n->epfd = n->evfd = -1;
  n->log = o->log;
  n->log_ud = o->log_ud;
  n->spin_ns = IO_SPIN_NS;
  snprintf(n->name, sizeof n->name, "%s", o->name);
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&n->mu, &ma);
  pthread_mutexattr_destroy(&ma);
  struct timespec rt_now;
  clock_gettime(CLOCK_REALTIME, &rt_now);
  n->boot = ((uint64_t)rt_now.tv_sec << 20) ^ (uint64_t)rt_now.tv_nsec ^
            ((uint64_t)getpid() << 40);
  char why[256] = "";
  int rc = rusm__tls_creds_load(o->ca_file, o->cert_file, o->key_file,
                                &n->creds, why, sizeof why);
  if (rc == 0)
    rc = rusm__tls_creds_check(n->creds, why, sizeof why);
  if (rc == 0 && strcmp(rusm__tls_creds_node(n->creds), n->name) != 0) {
    snprintf(why, sizeof why, "the certificate names %s, not %s",
             rusm__tls_creds_node(n->creds), n->name);
    rc = RUSM_ENODE_TRUST;
  }
  if (rc != 0) {
    nlog(n, "cannot start: %s", why);
    node_free(n);
    return rc == RUSM_ENOMEM ? rc : RUSM_ENODE_TRUST;
  }
  rusm__quic_callbacks cb = {.on_connected = on_connected,
                             .on_data = on_data,
                             .on_closed = on_closed,
                             .on_refused = on_refused,
                             .on_writable = on_writable};
  rusm__quic_config qc;
  rusm__quic_config_default(&qc);
  qc.idle_timeout_ns = 3000000000ull; /* a silent peer is gone after 3 s */
  qc.keepalive_ns = 500000000ull;
  rc = rusm__quic_endpoint_new(&qc, n->creds, o->listen, &cb, n, &n->ep);
  if (rc != 0) {
    nlog(n, "cannot listen on %s: %s", o->listen, rusm__quic_strerror(rc));
    node_free(n);
    return rc == RUSM_EINVAL ? RUSM_ENODE_ADDR : rc;
  }
  /* the address peers reach us at: the listen address with its real port */
  const char *colon = strrchr(o->listen, ':');
  snprintf(n->listen, sizeof n->listen, "%.*s:%u",
           (int)(colon ? colon - o->listen : 0), o->listen,
           rusm__quic_endpoint_local_port(n->ep));
  rusm__swim_config sc;
  rusm__swim_config_default(&sc);
  if (o->probe_ms)
    sc.probe_interval_ms = o->probe_ms;
  if (sc.probe_timeout_ms >= sc.probe_interval_ms)
    sc.probe_timeout_ms = sc.probe_interval_ms / 2;
  sc.seed = n->boot;
  rusm__swim_self me = {n->name, n->id, n->listen, n->boot};
  rc = rusm__swim_new(&sc, &me, mono_ns() / 1000000, &n->swim);
  for (size_t i = 0; rc == 0 && i < o->n_seeds; i++)
    if (rusm__swim_add_seed(n->swim, o->seeds[i]) < 0)
      rc = RUSM_ENODE_ADDR;
  const uint8_t *der;
  size_t der_len;
  rusm__tls_own_cert_der(n->creds, &der, &der_len);
  rusm__greg_config gc = {.node_name = n->name,
                          .node_id = n->id,
                          .boot_id = n->boot,
                          .proof = der,
                          .proof_len = der_len,
                          .sign = greg_sign,
                          .verify = greg_verify,
                          .crypto_ctx = n->creds};
  if (rc == 0)
    rc = rusm__greg_new(&gc, &n->greg);
  if (rc == 0)
    rc = rusm_spawn_stackless(rt, &agent_ops, n, NULL, &n->agent);
  if (rc == 0) {
    n->epfd = epoll_create1(EPOLL_CLOEXEC);
    n->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (n->epfd < 0 || n->evfd < 0)
      rc = errno == EMFILE ? RUSM_EMFILE : RUSM_ESYS;
  }
  if (rc == 0) {
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = 1};
    struct epoll_event w = {.events = EPOLLIN, .data.u32 = 2};
    if (epoll_ctl(n->epfd, EPOLL_CTL_ADD, rusm__quic_endpoint_fd(n->ep), &e) ||
        epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->evfd, &w))
      rc = RUSM_ESYS;
  }
  int slot = -1;
  for (int i = 0; rc == 0 && i < 8 && slot < 0; i++) {
    rusm_node *expect = NULL;
    if (atomic_compare_exchange_strong(&g_nodes[i], &expect, n))
      slot = i;
  }
  if (rc == 0 && slot < 0)
    rc = RUSM_ELIMIT;
  if (rc == 0) {
    rusm__set_dist(rt, &node_dist, n);
    if (pthread_create(&n->thread, NULL, io_main, n) != 0)
      rc = RUSM_ESYS;
  }
  if (rc != 0) {
    rusm__set_dist(rt, NULL, NULL);
    if (slot >= 0)
      atomic_store(&g_nodes[slot], NULL);
    if (n->agent)
      rusm_kill(rt, n->agent);
    rusm__quic_endpoint_free(n->ep);
    node_free(n);
    return rc;
  }
  nlog(n, "listening on %s (id %u)", n->listen, n->id);
  *out = n;
  return 0;
}

void rusm_node_stop(rusm_node *n) {
  if (!n)
    return;
  /* The I/O thread announces the leave (members hear it at once) and
   * ends; then this thread owns everything and closes it. */
  atomic_store_explicit(&n->stopping, true, memory_order_release);
  wake_io(n);
  pthread_join(n->thread, NULL);
  rusm__set_dist(n->rt, NULL, NULL);
  for (uint32_t i = 1; i < NODE_MAX; i++) {
    peer *p = atomic_load(&n->peers[i]);
    if (p && p->up)
      peer_down(n, p, "this node stops");
  }
  while (n->conns) {
    conn_ctx *cc = n->conns;
    rusm__quic_conn_close(cc->c, RUSM__WIRE_BYE_NORMAL, "node stopping");
    conn_free(n, cc);
  }
  rusm__quic_endpoint_free(n->ep);
  rusm_kill(n->rt, n->agent);
  for (int i = 0; i < 8; i++) {
    rusm_node *expect = n;
    atomic_compare_exchange_strong(&g_nodes[i], &expect, NULL);
  }
  node_free(n);
}

const char *rusm_node_name(const rusm_node *n) { return n ? n->name : ""; }

uint16_t rusm_node_port(const rusm_node *n) {
  return n ? rusm__quic_endpoint_local_port(n->ep) : 0;
}

size_t rusm_node_members(rusm_node *n, rusm_node_member *out, size_t cap) {
  if (!n)
    return 0;
  pthread_mutex_lock(&n->mu);
  size_t k = 0;
  if (cap) {
    memset(&out[0], 0, sizeof out[0]);
    snprintf(out[0].name, sizeof out[0].name, "%s", n->name);
    snprintf(out[0].addr, sizeof out[0].addr, "%s", n->listen);
    out[0].id = n->id;
    out[0].up = out[0].self = true;
  }
  k = 1;
  for (uint32_t i = 1; i < NODE_MAX; i++) {
    peer *p = atomic_load_explicit(&n->peers[i], memory_order_relaxed);
    if (!p || !p->up)
      continue;
    if (k < cap) {
      memset(&out[k], 0, sizeof out[k]);
      snprintf(out[k].name, sizeof out[k].name, "%s", p->name);
      snprintf(out[k].addr, sizeof out[k].addr, "%s", p->addr);
      out[k].id = p->id;
      out[k].up = true;
    }
    k++;
  }
  pthread_mutex_unlock(&n->mu);
  return k;
}

uint16_t rusm_node_id_of(rusm_node *n, const char *name) {
  if (!n || !name)
    return 0;
  if (strcmp(name, n->name) == 0)
    return n->id;
  pthread_mutex_lock(&n->mu);
  peer *p = peer_by_name(n, name);
  uint16_t id = p && p->up ? p->id : 0;
  pthread_mutex_unlock(&n->mu);
  return id;
}

int rusm_node_subscribe(rusm_node *n, rusm_pid_t pid) {
  if (!n || !pid)
    return RUSM_EINVAL;
  pthread_mutex_lock(&n->mu);
  int rc = 0;
  if (n->nsubs == n->subs_cap) {
    size_t nc = n->subs_cap ? n->subs_cap * 2 : 8;
    rusm_pid_t *s = realloc(n->subs, nc * sizeof *s);
    if (!s)
      rc = RUSM_ENOMEM;
    else {
      n->subs = s;
      n->subs_cap = nc;
    }
  }
  if (rc == 0)
    n->subs[n->nsubs++] = pid;
  pthread_mutex_unlock(&n->mu);
  return rc;
}

int rusm_node_unsubscribe(rusm_node *n, rusm_pid_t pid) {
  if (!n)
    return RUSM_EINVAL;
  pthread_mutex_lock(&n->mu);
  int rc = RUSM_ENOTFOUND;
  for (size_t i = 0; i < n->nsubs; i++)
    if (n->subs[i] == pid) {
      n->subs[i] = n->subs[--n->nsubs];
      rc = 0;
      break;
    }
  pthread_mutex_unlock(&n->mu);
  return rc;
}

int rusm_register_global(rusm_node *n, const char *name, rusm_pid_t pid) {
  if (!n || !name || !pid)
    return RUSM_EINVAL;
  if (rusm_pid_node(pid) != n->id || !rusm_is_alive(n->rt, pid))
    return RUSM_ENOPROC;
  pthread_mutex_lock(&n->mu);
  int rc = rusm__greg_register(n->greg, name, pid);
  pthread_mutex_unlock(&n->mu);
  if (rc == 0) {
    rusm__send_sys(n->rt, n->agent, TAG_AGENT_WATCH, &pid, sizeof pid);
    pump_greg(n);
  }
  return rc;
}

int rusm_unregister_global(rusm_node *n, const char *name) {
  if (!n || !name)
    return RUSM_EINVAL;
  pthread_mutex_lock(&n->mu);
  int rc = rusm__greg_unregister(n->greg, name);
  pthread_mutex_unlock(&n->mu);
  if (rc == 0)
    pump_greg(n);
  return rc;
}

rusm_pid_t rusm_whereis_global(rusm_node *n, const char *name) {
  if (!n || !name)
    return RUSM_PID_NONE;
  pthread_mutex_lock(&n->mu);
  rusm_pid_t pid = rusm__greg_whereis(n->greg, name);
  pthread_mutex_unlock(&n->mu);
  return pid;
}

int rusm_send_global(rusm_node *n, const char *name, uint64_t tag,
                     const void *data, size_t len) {
  rusm_pid_t pid = rusm_whereis_global(n, name);
  if (!pid)
    return n && name ? RUSM_ENOTFOUND : RUSM_EINVAL;
  return rusm_send(n->rt, pid, tag, data, len);
}

int rusm_node_factory(rusm_node *n, const char *name, rusm_factory_fn fn,
                      void *ud) {
  if (!n || !name || !fn || !name[0] || strlen(name) > RUSM_NAME_MAX)
    return RUSM_EINVAL;
  factory *f = calloc(1, sizeof *f);
  if (!f)
    return RUSM_ENOMEM;
  snprintf(f->name, sizeof f->name, "%s", name);
  f->fn = fn;
  f->ud = ud;
  pthread_mutex_lock(&n->mu);
  int rc = 0;
  for (factory *x = n->factories; x; x = x->next)
    if (strcmp(x->name, name) == 0)
      rc = RUSM_EEXIST;
  if (rc == 0) {
    f->next = n->factories;
    n->factories = f;
  }
  pthread_mutex_unlock(&n->mu);
  if (rc)
    free(f);
  return rc;
}

static bool reply_is(const rusm_msg *m, void *arg) {
  uint64_t id;
  if (rusm_msg_len(m) < sizeof(reply_hdr))
    return false;
  memcpy(&id, rusm_msg_data(m), sizeof id);
  return id == *(const uint64_t *)arg;
}

/* Queues a request frame for node `node` and waits for its reply. */
static int request(rusm_proc *self, rusm_node *n, const char *node,
                   rusm__frame *f, uint64_t *req_id, int64_t timeout_ms,
                   rusm_msg **out) {
  pthread_mutex_lock(&n->mu);
  peer *p = peer_by_name(n, node);
  if (!p || !p->up) {
    pthread_mutex_unlock(&n->mu);
    return RUSM_ENODE_DOWN;
  }
  uint64_t id = ++n->next_req;
  *req_id = id;
  switch (f->kind) {
  case RUSM__WIRE_SPAWN_REQ:
    f->spawn_req.req_id = id;
    break;
  case RUSM__WIRE_PROCS_REQ:
    f->procs_req.req_id = id;
    break;
  default:
    f->info_req.req_id = id;
    break;
  }
  /* pending before it leaves: the peer going down answers it */
  int rc = pend_add(p, id, rusm_self(self));
  if (rc == 0) {
    rc = rusm__wire_encode(&p->out, f);
    if (rc < 0)
      pend_take(p, id);
  }
  bool wake = rc == 0 && !p->dirty;
  if (wake)
    mark_dirty(n, p);
  pthread_mutex_unlock(&n->mu);
  if (rc < 0)
    return rc;
  if (wake)
    wake_io(n);
  rusm_filter flt = rusm_filter_tag(TAG_REPLY);
  flt.pred = reply_is;
  flt.pred_arg = req_id;
  rc = rusm_receive(self, &flt, timeout_ms, out);
  if (rc != 0) {
    pthread_mutex_lock(&n->mu);
    pend_take(p, id); /* a reply after this is dropped */
    pthread_mutex_unlock(&n->mu);
  }
  return rc;
}

int rusm_spawn_on(rusm_proc *self, const char *node, const char *factory_name,
                  const void *arg, size_t len, unsigned flags,
                  int64_t timeout_ms, rusm_pid_t *out, rusm_ref *mref) {
  if (!self || !node || !factory_name || !out || (len && !arg) ||
      len > RUSM__WIRE_MAX_BODY_DEFAULT / 2 ||
      ((flags & RUSM_SPAWN_MONITOR) && !mref))
    return RUSM_EINVAL;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_node *n = rusm_rt_node_get(rt);
  if (!n)
    return RUSM_ENODE_STOPPED;
  rusm_ref ref = 0;
  if (flags & RUSM_SPAWN_MONITOR) {
    int rc = rusm__monitor_prepare(self, &ref);
    if (rc < 0)
      return rc;
  }
  /* the monitor's ref travels first in the argument bytes */
  uint8_t *args = malloc(len + 8);
  if (!args) {
    if (ref)
      rusm__monitor_settle(self, ref, 0);
    return RUSM_ENOMEM;
  }
  size_t alen = 0;
  if (ref) {
    memcpy(args, &ref, 8);
    alen = 8;
  }
  if (len)
    memcpy(args + alen, arg, len);
  alen += len;
  rusm__frame f;
  memset(&f, 0, sizeof f);
  f.kind = RUSM__WIRE_SPAWN_REQ;
  f.spawn_req.requester = rusm_self(self);
  f.spawn_req.factory = (rusm__wire_bytes){(const uint8_t *)factory_name,
                                           (uint32_t)strlen(factory_name)};
  f.spawn_req.args = (rusm__wire_bytes){alen ? args : NULL, (uint32_t)alen};
  f.spawn_req.link = flags & RUSM_SPAWN_LINK;
  f.spawn_req.monitor = flags & RUSM_SPAWN_MONITOR;
  uint64_t id = 0;
  rusm_msg *m = NULL;
  int rc = request(self, n, node, &f, &id, timeout_ms, &m);
  free(args);
  reply_hdr h = {0, 0, 0, 0};
  if (rc == 0) {
    memcpy(&h, rusm_msg_data(m), sizeof h);
    rusm_msg_free(m);
    rc = (int)h.rc;
  }
  if (ref)
    rusm__monitor_settle(self, ref, rc == 0 ? h.a : 0);
  if (rc == 0) {
    if (!(flags & RUSM_SPAWN_LINK))
      rusm_unlink(self, h.a); /* the reply path links: undo when unasked */
    *out = h.a;
    if (mref)
      *mref = ref;
  }
  return rc;
}

int rusm_node_processes(rusm_proc *self, const char *node, size_t offset,
                        rusm_obs_proc *out, size_t cap, size_t *total,
                        int64_t timeout_ms) {
  if (!self || !node || (cap && !out))
    return RUSM_EINVAL;
  rusm_node *n = rusm_rt_node_get(rusm_proc_rt(self));
  if (!n)
    return RUSM_ENODE_STOPPED;
  if (strcmp(node, n->name) == 0) {
    size_t all = 0;
    rusm_obs_processes(n->rt, NULL, 0, &all);
    rusm_obs_proc *tmp = calloc(all + 16, sizeof *tmp);
    if (!tmp)
      return RUSM_ENOMEM;
    size_t got = 0;
    rusm_obs_processes(n->rt, tmp, all + 16, &got);
    if (got > all + 16)
      got = all + 16;
    size_t k = 0;
    for (size_t i = offset; i < got && k < cap; i++)
      out[k++] = tmp[i];
    free(tmp);
    if (total)
      *total = got;
    return (int)k;
  }
  rusm__frame f;
  memset(&f, 0, sizeof f);
  f.kind = RUSM__WIRE_PROCS_REQ;
  f.procs_req.requester = rusm_self(self);
  f.procs_req.offset = (uint32_t)(offset > UINT32_MAX ? UINT32_MAX : offset);
  f.procs_req.max = (uint32_t)(cap > 4096 ? 4096 : cap);
  uint64_t id;
  rusm_msg *m = NULL;
  int rc = request(self, n, node, &f, &id, timeout_ms, &m);
  if (rc < 0)
    return rc;
  reply_hdr h;
  memcpy(&h, rusm_msg_data(m), sizeof h);
  size_t k = h.rc > 0 ? (size_t)h.rc : 0;
  if (k > cap)
    k = cap;
  if (k)
    memcpy(out, rusm_msg_data(m) + sizeof h, k * sizeof *out);
  rusm_msg_free(m);
  if (total)
    *total = offset + k + (h.b ? 1 : 0);
  return h.rc < 0 ? (int)h.rc : (int)k;
}

int rusm_node_process_info(rusm_proc *self, rusm_pid_t pid, rusm_obs_proc *out,
                           int64_t timeout_ms) {
  if (!self || !out || !pid)
    return RUSM_EINVAL;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_node *n = rusm_rt_node_get(rt);
  if (!n || rusm_pid_node(pid) == rusm_rt_node(rt))
    return rusm_obs_process(rt, pid, out);
  pthread_mutex_lock(&n->mu);
  peer *p = peer_get(n, rusm_pid_node(pid), false);
  char name[sizeof p->name] = "";
  if (p && p->up)
    memcpy(name, p->name, sizeof name);
  pthread_mutex_unlock(&n->mu);
  if (!name[0])
    return RUSM_ENODE_DOWN;
  rusm__frame f;
  memset(&f, 0, sizeof f);
  f.kind = RUSM__WIRE_INFO_REQ;
  f.info_req.requester = rusm_self(self);
  f.info_req.pid = pid;
  uint64_t id;
  rusm_msg *m = NULL;
  int rc = request(self, n, name, &f, &id, timeout_ms, &m);
  if (rc < 0)
    return rc;
  reply_hdr h;
  memcpy(&h, rusm_msg_data(m), sizeof h);
  if (h.rc == 0)
    memcpy(out, rusm_msg_data(m) + sizeof h, sizeof *out);
  rusm_msg_free(m);
  return (int)h.rc;
}

void rusm_node_stats_get(rusm_node *n, rusm_node_stats *out) {
  if (!n || !out)
    return;
#define GET(field) atomic_load_explicit(&n->st.field, memory_order_relaxed)
  *out = (rusm_node_stats){.members_up = GET(members_up),
                           .frames_out = GET(frames_out),
                           .frames_in = GET(frames_in),
                           .bytes_out = GET(bytes_out),
                           .bytes_in = GET(bytes_in),
                           .msgs_dropped = GET(msgs_dropped),
                           .peers_refused = GET(peers_refused),
                           .bad_frames = GET(bad_frames),
                           .noconnection = GET(noconnection)};
#undef GET
  pthread_mutex_lock(&n->mu);
  rusm__greg_stats gs;
  rusm__greg_get_stats(n->greg, &gs);
  out->claims_rejected =
      gs.rejected_signature + gs.rejected_mismatch + gs.rejected_malformed;
  pthread_mutex_unlock(&n->mu);
}

/* Test hook (node.h): queues one raw frame for a peer, as a misbehaving
 * node would send it. */
int rusm__node_inject(rusm_node *n, const char *peer_name, int kind,
                      const uint8_t *body, size_t len) {
  if (!n || !peer_name || len > UINT32_MAX)
    return RUSM_EINVAL;
  pthread_mutex_lock(&n->mu);
  peer *p = peer_by_name(n, peer_name);
  pthread_mutex_unlock(&n->mu);
  if (!p || !p->up)
    return RUSM_ENODE_DOWN;
  rusm__frame f;
  memset(&f, 0, sizeof f);
  f.kind = (rusm__wire_kind)kind;
  f.opaque.data = (rusm__wire_bytes){body, (uint32_t)len};
  return send_frame(n, p, &f);
}

int rusm__node_inject_raw(rusm_node *n, const char *peer_name,
                          const uint8_t *bytes, size_t len) {
  if (!n || !peer_name || (len && !bytes))
    return RUSM_EINVAL;
  pthread_mutex_lock(&n->mu);
  peer *p = peer_by_name(n, peer_name);
  int rc =
      p && p->up ? rusm__wbuf_append(&p->out, bytes, len) : RUSM_ENODE_DOWN;
  if (rc == 0)
    mark_dirty(n, p);
  pthread_mutex_unlock(&n->mu);
  if (rc == 0)
    wake_io(n);
  return rc;
}

int rusm_cluster_ca_init(const char *dir, char *why, size_t whylen) {
  return rusm__tls_ca_init(dir, why, whylen);
}

int rusm_cluster_cert_issue(const char *ca_dir, const char *node,
                            const char *out_dir, unsigned days, char *why,
                            size_t whylen) {
  return rusm__tls_cert_issue(ca_dir, node, out_dir, days, why, whylen);
}
