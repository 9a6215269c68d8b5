/*
 * swim.c — cluster membership: SWIM with suspicion and incarnations, plus
 * Lifeguard's local health, buddy system, nacks and confirmation-driven
 * suspicion timeouts. The contract is swim.h; the protocol, the wire
 * format and the detection bound are in docs/internals/cluster-membership.md.
 *
 * Members live in an array of pointers (stable addresses), looked up by
 * boot id with a linear scan: a cluster has at most 2047 live members plus
 * a bounded number of tombstones, and the scans cost less than the
 * messages that cause them.
 */
#include "cluster/swim.h"

#include <assert.h>
#include <string.h>

#include "otp/alloc.h"

/* ------------------------------------------------------------------ */
/* Wire constants                                                      */
/* ------------------------------------------------------------------ */

enum {
  T_PING = 1,
  T_ACK = 2,
  T_PING_REQ = 3,
  T_NACK = 4,
  T_SYNC = 5,
  T_REFUSE = 6,
  T_GOSSIP = 7,
};

enum { SYNC_REQ = 1, SYNC_JOIN = 2, SYNC_JOINED = 4 };

enum { E_ALIVE = 1, E_SUSPECT = 2, E_DEAD = 3, E_LEFT = 4 };

/* Entry flags: bit 0 says name and address follow; bits 4-5 carry why a
 * DEAD member died (0 failed, 1 restarted, 2 conflict). */
#define EF_IDENT 0x01u
#define EF_REASON_SHIFT 4
#define EF_REASON_MASK 0x30u
enum { WR_FAILED = 0, WR_RESTARTED = 1, WR_CONFLICT = 2 };

/* REFUSE reasons on the wire. */
enum { WREF_NAME = 1, WREF_ID = 2, WREF_STALE = 3 };

#define HDR_LEN 16u
#define ENTRY_FIXED 16u
#define ENTRY_MAX                                                              \
  (ENTRY_FIXED + 8u + 2u + RUSM__SWIM_NAME_MAX + RUSM__SWIM_ADDR_MAX)
#define ENTRIES_MAX 255u

/* Limits of the state kept. */
#define MAX_SUSPECTORS 8u /* distinct suspectors remembered per suspicion */
#define RELAY_MAX 64u     /* ping-reqs relayed at once */
#define HEALTH_MAX 8u     /* Lifeguard's local health multiplier */
#define TOMBSTONE_MAX 4096u
#define LIVE_MAX                                                               \
  4096u /* live records (ids are unique: 2047 in a sane                        \
           cluster; the rest is slack for conflicts) */
#define BCAST_MAX 1024u
#define TXQ_MAX (4u * 2048u + 256u) /* room for a fan-out to everyone */
#define INDIRECT_MAX 16u
#define CONFIRM_MAX 7u
#define NOTIFY_MAX 16u /* suspectors told of a refutation at each tick */

/* ------------------------------------------------------------------ */
/* State                                                               */
/* ------------------------------------------------------------------ */

typedef struct member {
  uint64_t boot;
  uint32_t inc;
  uint16_t id;
  uint8_t state;  /* rusm__swim_state */
  uint8_t reason; /* rusm__swim_reason, for DEAD / LEFT */
  bool final;     /* dead for good: left, restarted, conflict */
  bool has_ident; /* tombstones learnt from bare DEAD entries have none */
  uint8_t name_len, addr_len;
  char name[RUSM__SWIM_NAME_MAX + 1];
  char addr[RUSM__SWIM_ADDR_MAX + 1];
  uint64_t since; /* last change of state */
  /* Suspicion (state SUSPECT). suspectors[0] started it. */
  uint64_t susp_start, susp_deadline;
  uint64_t suspectors[MAX_SUSPECTORS];
  uint8_t n_suspectors;
  bool self_suspects;   /* this node's own probe failed too */
  bool confirm_pending; /* probe it at the next free tick */
  uint64_t last_probe;
  uint64_t told_dead; /* last "you are dead" sent to it (rate limit) */
} member;

typedef struct ident {
  const char *name, *addr;
  uint8_t name_len, addr_len;
  uint16_t id;
  uint64_t boot;
  uint32_t inc;
} ident;

typedef struct pentry {
  uint8_t kind, wreason;
  bool has_ident;
  uint16_t id;
  uint64_t boot;
  uint32_t inc;
  uint64_t from;
  const char *name, *addr;
  uint8_t name_len, addr_len;
} pentry;

typedef struct pmsg {
  uint8_t type;
  uint16_t id;
  uint64_t boot;
  uint32_t inc;
  uint32_t seq;
  uint64_t target_boot; /* PING, PING_REQ */
  uint64_t responder;   /* ACK */
  uint16_t target_id, nack_ms;
  const char *target_addr;
  uint8_t target_addr_len;
  uint8_t flags;  /* SYNC */
  uint8_t reason; /* REFUSE */
  unsigned n;
  pentry e[ENTRIES_MAX];
} pmsg;

typedef struct probe {
  bool active, acked, indirect;
  uint16_t id;
  uint64_t boot;
  uint32_t seq;
  uint64_t ack_deadline, end;
  uint32_t expected_nacks, nacks;
  char addr[RUSM__SWIM_ADDR_MAX + 1];
} probe;

typedef struct relay {
  bool used, nacked;
  uint32_t origin_seq, seq;
  uint64_t target_boot;
  uint64_t nack_at, expire;
  char origin[RUSM__SWIM_ADDR_MAX + 1];
} relay;

typedef struct bcast {
  uint64_t key; /* the member's boot id: a newer update replaces */
  uint32_t transmits;
  uint32_t stamp; /* message that last took it (one copy per message) */
  uint16_t len;
  uint8_t bytes[ENTRY_MAX];
} bcast;

typedef struct notify {
  uint64_t boot; /* a member that suspects (or declared dead) this node */
  uint32_t left; /* ticks left to repeat the refutation to it */
} notify;

typedef struct tx {
  uint8_t *buf;
  size_t len;
  char addr[RUSM__SWIM_ADDR_MAX + 1];
} tx;

enum { RUN_ACTIVE = 0, RUN_STOPPED = 1 };

struct rusm__swim {
  rusm__swim_config cfg;
  member self;
  uint64_t now;
  int run;
  bool joined;
  uint32_t health;
  uint64_t rng[4];
  int err; /* RUSM_ENOMEM met while handling one call */

  member **mem;
  size_t n_mem, cap_mem;
  size_t n_live;  /* live members besides this node */
  size_t n_tombs; /* DEAD / LEFT records */

  char (*seeds)[RUSM__SWIM_ADDR_MAX + 1];
  size_t n_seeds, cap_seeds;
  bool has_join_seed; /* a seed that is not this node's own address */

  /* Probing. */
  uint64_t next_tick;
  uint64_t tick_no;
  uint32_t seq;
  probe pr;
  uint64_t *order; /* randomized round-robin of boot ids */
  size_t n_order, pos_order, cap_order;
  relay relays[RELAY_MAX];
  notify notify[NOTIFY_MAX];

  uint64_t join_due, sync_due, reconnect_due, unknown_ok;
  uint64_t reconnect_round;

  /* Piggybacked updates, in insertion order. */
  bcast *bq;
  size_t n_bq;
  uint32_t stamp;

  /* Outgoing messages (ring). */
  tx *txq;
  size_t tx_head, tx_n, tx_cap;
  uint8_t *cur_tx; /* handed out by the last poll_transmit */
  char cur_addr[RUSM__SWIM_ADDR_MAX + 1]; /* ... and its address */
  uint8_t *out; /* max_message bytes: the message being built */

  /* Events (ring). */
  rusm__swim_event *evq;
  size_t ev_head, ev_n, ev_cap;

  rusm__swim_stats st;
  pmsg pm; /* the message being decoded (too big for small stacks) */
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rnd(rusm__swim *s) { /* xoshiro256** */
  uint64_t *r = s->rng;
  uint64_t out = rotl(r[1] * 5, 7) * 9;
  uint64_t t = r[1] << 17;
  r[2] ^= r[0];
  r[3] ^= r[1];
  r[1] ^= r[2];
  r[0] ^= r[3];
  r[2] ^= t;
  r[3] = rotl(r[3], 45);
  return out;
}

static uint64_t rnd_below(rusm__swim *s, uint64_t n) {
  return n ? rnd(s) % n : 0;
}

static uint64_t min64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static bool is_live(const member *m) {
  return m->state == RUSM__SWIM_ALIVE || m->state == RUSM__SWIM_SUSPECT;
}

static bool name_char_ok(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

static bool name_ok(const char *p, size_t n) {
  if (n < 1 || n > RUSM__SWIM_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!name_char_ok((unsigned char)p[i]))
      return false;
  return true;
}

static bool addr_ok(const char *p, size_t n) {
  return n >= 1 && n <= RUSM__SWIM_ADDR_MAX && memchr(p, 0, n) == NULL;
}

static bool id_ok(uint32_t id) {
  return id >= 1 && id <= RUSM__SWIM_NODE_ID_MAX;
}

static bool str_eq(const char *a, size_t an, const char *b, size_t bn) {
  return an == bn && memcmp(a, b, an) == 0;
}

/* Length of a C string of at most max bytes, or max + 1 when longer. */
static size_t bounded_len(const char *p, size_t max) {
  const char *z = memchr(p, 0, max + 1);
  return z ? (size_t)(z - p) : max + 1;
}

static void copy_str(char *dst, uint8_t *dst_len, const char *src, size_t n) {
  memcpy(dst, src, n);
  dst[n] = 0;
  *dst_len = (uint8_t)n;
}

/* log2(x) in 16.16 fixed point, x >= 1 (no libm in the library). */
static uint32_t log2_q16(uint32_t x) {
  assert(x >= 1);
  uint32_t ip = 31u - (uint32_t)__builtin_clz(x);
  uint64_t y = ((uint64_t)x << 16) >> ip; /* [1, 2) in Q16 */
  uint32_t frac = 0;
  for (int i = 15; i >= 0; i--) {
    y = (y * y) >> 16;
    if (y >= (UINT64_C(2) << 16)) {
      y >>= 1;
      frac |= 1u << i;
    }
  }
  return (ip << 16) | frac;
}

/* ceil(log10(x)) for x >= 1. */
static uint32_t ceil_log10(uint64_t x) {
  uint32_t d = 0;
  for (uint64_t p = 1; p < x; p *= 10)
    d++;
  return d;
}

/* ------------------------------------------------------------------ */
/* Encoding                                                            */
/* ------------------------------------------------------------------ */

static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static uint8_t wire_reason(uint8_t reason) {
  switch (reason) {
  case RUSM__SWIM_REASON_RESTARTED:
    return WR_RESTARTED;
  case RUSM__SWIM_REASON_CONFLICT:
    return WR_CONFLICT;
  default:
    return WR_FAILED;
  }
}

/* One entry describing m (kind from its state) into p (>= ENTRY_MAX
 * bytes). Returns its length. */
static size_t enc_entry(uint8_t *p, const member *m, bool with_ident) {
  uint8_t kind = E_ALIVE;
  switch (m->state) {
  case RUSM__SWIM_SUSPECT:
    kind = E_SUSPECT;
    break;
  case RUSM__SWIM_DEAD:
    kind = E_DEAD;
    break;
  case RUSM__SWIM_LEFT:
    kind = E_LEFT;
    break;
  default:
    break;
  }
  assert(kind != E_ALIVE || m->has_ident);
  bool id_on = (with_ident || kind == E_ALIVE) && m->has_ident;
  uint8_t flags = id_on ? EF_IDENT : 0;
  if (kind == E_DEAD)
    flags |= (uint8_t)(wire_reason(m->reason) << EF_REASON_SHIFT);
  p[0] = kind;
  p[1] = flags;
  put16(p + 2, m->id);
  put64(p + 4, m->boot);
  put32(p + 12, m->inc);
  size_t n = ENTRY_FIXED;
  if (kind == E_SUSPECT) {
    assert(m->n_suspectors > 0);
    put64(p + n, m->suspectors[m->n_suspectors - 1]);
    n += 8;
  }
  if (id_on) {
    p[n++] = m->name_len;
    memcpy(p + n, m->name, m->name_len);
    n += m->name_len;
    p[n++] = m->addr_len;
    memcpy(p + n, m->addr, m->addr_len);
    n += m->addr_len;
  }
  assert(n <= ENTRY_MAX);
  return n;
}

static void enc_header(rusm__swim *s, uint8_t *p, uint8_t type) {
  p[0] = RUSM__SWIM_VERSION;
  p[1] = type;
  put16(p + 2, s->self.id);
  put64(p + 4, s->self.boot);
  put32(p + 12, s->self.inc);
}

/* ------------------------------------------------------------------ */
/* Decoding (everything checked before anything changes)               */
/* ------------------------------------------------------------------ */

typedef struct rbuf {
  const uint8_t *p;
  size_t n, off;
  bool bad;
} rbuf;

static const uint8_t *r_take(rbuf *r, size_t k) {
  if (r->bad || r->n - r->off < k) {
    r->bad = true;
    return NULL;
  }
  const uint8_t *p = r->p + r->off;
  r->off += k;
  return p;
}

static uint8_t r8(rbuf *r) {
  const uint8_t *p = r_take(r, 1);
  return p ? p[0] : 0;
}

static uint16_t r16(rbuf *r) {
  const uint8_t *p = r_take(r, 2);
  return p ? (uint16_t)(p[0] | (p[1] << 8)) : 0;
}

static uint32_t r32(rbuf *r) {
  const uint8_t *p = r_take(r, 4);
  uint32_t v = 0;
  if (p)
    for (int i = 3; i >= 0; i--)
      v = (v << 8) | p[i];
  return v;
}

static uint64_t r64(rbuf *r) {
  const uint8_t *p = r_take(r, 8);
  uint64_t v = 0;
  if (p)
    for (int i = 7; i >= 0; i--)
      v = (v << 8) | p[i];
  return v;
}

/* A length-prefixed string; NULL when short. */
static const char *r_str(rbuf *r, uint8_t *len) {
  *len = r8(r);
  return (const char *)r_take(r, *len);
}

static bool dec_entry(rbuf *r, pentry *e) {
  e->kind = r8(r);
  uint8_t flags = r8(r);
  e->id = r16(r);
  e->boot = r64(r);
  e->inc = r32(r);
  if (r->bad || e->kind < E_ALIVE || e->kind > E_LEFT)
    return false;
  if (flags & ~(EF_IDENT | EF_REASON_MASK))
    return false;
  e->has_ident = (flags & EF_IDENT) != 0;
  e->wreason = (uint8_t)((flags & EF_REASON_MASK) >> EF_REASON_SHIFT);
  if (e->wreason > WR_CONFLICT || (e->wreason && e->kind != E_DEAD))
    return false;
  if (!id_ok(e->id) || e->boot == 0)
    return false;
  if (e->kind == E_ALIVE && !e->has_ident)
    return false;
  e->from = 0;
  if (e->kind == E_SUSPECT) {
    e->from = r64(r);
    if (e->from == 0)
      return false;
  }
  e->name = e->addr = NULL;
  e->name_len = e->addr_len = 0;
  if (e->has_ident) {
    e->name = r_str(r, &e->name_len);
    e->addr = r_str(r, &e->addr_len);
    if (r->bad || !name_ok(e->name, e->name_len) ||
        !addr_ok(e->addr, e->addr_len))
      return false;
  }
  return !r->bad;
}

static int decode(const uint8_t *b, size_t n, pmsg *m) {
  rbuf r = {b, n, 0, false};
  uint8_t version = r8(&r);
  if (r.bad)
    return RUSM_ESWIM_MALFORMED;
  if (version != RUSM__SWIM_VERSION)
    return RUSM_ESWIM_VERSION;
  m->type = r8(&r);
  m->id = r16(&r);
  m->boot = r64(&r);
  m->inc = r32(&r);
  if (r.bad || !id_ok(m->id) || m->boot == 0)
    return RUSM_ESWIM_MALFORMED;
  switch (m->type) {
  case T_PING:
    m->seq = r32(&r);
    m->target_boot = r64(&r);
    if (m->target_boot == 0)
      return RUSM_ESWIM_MALFORMED;
    break;
  case T_ACK:
    m->seq = r32(&r);
    m->responder = r64(&r);
    if (m->responder == 0)
      return RUSM_ESWIM_MALFORMED;
    break;
  case T_PING_REQ:
    m->seq = r32(&r);
    m->target_id = r16(&r);
    m->target_boot = r64(&r);
    m->nack_ms = r16(&r);
    m->target_addr = r_str(&r, &m->target_addr_len);
    if (r.bad || !id_ok(m->target_id) || m->target_boot == 0 ||
        !addr_ok(m->target_addr, m->target_addr_len))
      return RUSM_ESWIM_MALFORMED;
    break;
  case T_NACK:
    m->seq = r32(&r);
    break;
  case T_SYNC:
    m->flags = r8(&r);
    if (m->flags & ~(SYNC_REQ | SYNC_JOIN | SYNC_JOINED))
      return RUSM_ESWIM_MALFORMED;
    break;
  case T_REFUSE:
    m->reason = r8(&r);
    if (m->reason < WREF_NAME || m->reason > WREF_STALE)
      return RUSM_ESWIM_MALFORMED;
    break;
  case T_GOSSIP:
    break;
  default:
    return RUSM_ESWIM_MALFORMED;
  }
  m->n = r8(&r);
  if (r.bad)
    return RUSM_ESWIM_MALFORMED;
  for (unsigned i = 0; i < m->n; i++)
    if (!dec_entry(&r, &m->e[i]))
      return RUSM_ESWIM_MALFORMED;
  if (r.off != r.n)
    return RUSM_ESWIM_MALFORMED; /* trailing bytes */
  /* A JOIN carries the joiner itself, first; a REFUSE one full record. */
  if (m->type == T_SYNC && (m->flags & SYNC_JOIN)) {
    const pentry *j = &m->e[0];
    if (m->n < 1 || j->kind != E_ALIVE || j->boot != m->boot || j->id != m->id)
      return RUSM_ESWIM_MALFORMED;
  }
  if (m->type == T_REFUSE && (m->n != 1 || !m->e[0].has_ident))
    return RUSM_ESWIM_MALFORMED;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Events and transmissions                                            */
/* ------------------------------------------------------------------ */

static void to_record(const member *m, rusm__swim_member *out) {
  memset(out, 0, sizeof *out);
  memcpy(out->name, m->name, m->name_len);
  memcpy(out->addr, m->addr, m->addr_len);
  out->node_id = m->id;
  out->boot_id = m->boot;
  out->incarnation = m->inc;
  out->state = (rusm__swim_state)m->state;
}

static void emit(rusm__swim *s, rusm__swim_event_type type,
                 rusm__swim_reason reason, const member *m) {
  if (s->ev_n == s->ev_cap) {
    size_t cap = s->ev_cap ? 2 * s->ev_cap : 16;
    rusm__swim_event *q = rusm__xmalloc(cap * sizeof *q);
    if (!q) {
      s->st.events_dropped++;
      s->err = RUSM_ENOMEM;
      return;
    }
    for (size_t i = 0; i < s->ev_n; i++)
      q[i] = s->evq[(s->ev_head + i) % s->ev_cap];
    rusm__xfree(s->evq);
    s->evq = q;
    s->ev_cap = cap;
    s->ev_head = 0;
  }
  rusm__swim_event *e = &s->evq[(s->ev_head + s->ev_n) % s->ev_cap];
  e->type = type;
  e->reason = reason;
  to_record(m, &e->member);
  s->ev_n++;
}

/* Queues a copy of the len bytes in s->out for addr. */
static void push_tx(rusm__swim *s, const char *addr, size_t len) {
  assert(len <= s->cfg.max_message);
  if (s->tx_n == s->tx_cap) {
    size_t cap = s->tx_cap ? 2 * s->tx_cap : 32;
    if (cap > TXQ_MAX)
      cap = TXQ_MAX;
    tx *q = s->tx_n >= TXQ_MAX ? NULL : rusm__xmalloc(cap * sizeof *q);
    if (!q) {
      s->st.messages_dropped++;
      return;
    }
    for (size_t i = 0; i < s->tx_n; i++)
      q[i] = s->txq[(s->tx_head + i) % s->tx_cap];
    rusm__xfree(s->txq);
    s->txq = q;
    s->tx_cap = cap;
    s->tx_head = 0;
  }
  uint8_t *buf = rusm__xmalloc(len);
  if (!buf) {
    s->st.messages_dropped++;
    return;
  }
  memcpy(buf, s->out, len);
  tx *t = &s->txq[(s->tx_head + s->tx_n) % s->tx_cap];
  t->buf = buf;
  t->len = len;
  size_t an = bounded_len(addr, RUSM__SWIM_ADDR_MAX);
  assert(an <= RUSM__SWIM_ADDR_MAX);
  memcpy(t->addr, addr, an);
  t->addr[an] = 0;
  s->tx_n++;
  s->st.messages_sent++;
}

/* ------------------------------------------------------------------ */
/* Piggybacked updates                                                 */
/* ------------------------------------------------------------------ */

static uint32_t retransmit_limit(const rusm__swim *s) {
  uint32_t l = s->cfg.retransmit_mult * ceil_log10(s->n_live + 2);
  return l ? l : 1;
}

static void bq_remove(rusm__swim *s, size_t i) {
  memmove(&s->bq[i], &s->bq[i + 1], (s->n_bq - i - 1) * sizeof *s->bq);
  s->n_bq--;
}

/* Queues the current state of m for piggybacking, replacing what was
 * queued about it. */
static void bcast_member(rusm__swim *s, const member *m) {
  for (size_t i = 0; i < s->n_bq; i++)
    if (s->bq[i].key == m->boot) {
      bq_remove(s, i);
      break;
    }
  if (s->n_bq == BCAST_MAX) { /* drop the most sent (oldest first) */
    size_t worst = 0;
    for (size_t i = 1; i < s->n_bq; i++)
      if (s->bq[i].transmits > s->bq[worst].transmits)
        worst = i;
    bq_remove(s, worst);
  }
  bcast *b = &s->bq[s->n_bq++];
  b->key = m->boot;
  b->transmits = 0;
  b->stamp = 0;
  b->len = (uint16_t)enc_entry(b->bytes, m, false);
}

/* Appends piggybacked updates at p (room bytes, at most max_n entries),
 * fewest transmissions first, newest first among equals. Returns how many
 * were written; *used gets their bytes. */
static unsigned fill_piggyback(rusm__swim *s, uint8_t *p, size_t room,
                               unsigned max_n, size_t *used) {
  unsigned n = 0;
  size_t off = 0;
  uint32_t limit = retransmit_limit(s);
  uint32_t stamp = ++s->stamp;
  for (uint32_t level = 0; level < limit && n < max_n; level++) {
    for (size_t i = s->n_bq; i-- > 0 && n < max_n;) {
      bcast *b = &s->bq[i];
      if (b->transmits != level || b->stamp == stamp || b->len > room - off)
        continue;
      memcpy(p + off, b->bytes, b->len);
      off += b->len;
      b->transmits++;
      b->stamp = stamp;
      n++;
    }
  }
  for (size_t i = s->n_bq; i-- > 0;)
    if (s->bq[i].transmits >= limit)
      bq_remove(s, i);
  *used = off;
  return n;
}

/* Builds and queues one message: header, body, then the entry section:
 * the pre_n entries in pre first, then piggybacked updates if piggy. */
static void send_msg(rusm__swim *s, const char *addr, uint8_t type,
                     const uint8_t *body, size_t body_len, const uint8_t *pre,
                     size_t pre_len, unsigned pre_n, bool piggy) {
  uint8_t *o = s->out;
  size_t max = s->cfg.max_message;
  assert(HDR_LEN + body_len + 1 + pre_len <= max);
  enc_header(s, o, type);
  size_t off = HDR_LEN;
  if (body_len) {
    memcpy(o + off, body, body_len);
    off += body_len;
  }
  size_t count_at = off++;
  if (pre_len) {
    memcpy(o + off, pre, pre_len);
    off += pre_len;
  }
  unsigned n = pre_n;
  if (piggy && n < ENTRIES_MAX) {
    size_t used = 0;
    n += fill_piggyback(s, o + off, max - off, ENTRIES_MAX - n, &used);
    off += used;
  }
  o[count_at] = (uint8_t)n;
  push_tx(s, addr, off);
}

/* Sends the pre entries to every live member but `except` (0: none).
 * Nothing else rides along: a burst to everyone would use up the
 * retransmission budget of every queued update at once, and an update
 * whose one copy to some member was lost would then never reach it. */
static void fanout(rusm__swim *s, const uint8_t *pre, size_t pre_len,
                   unsigned pre_n, uint64_t except) {
  for (size_t i = 0; i < s->n_mem; i++) {
    const member *m = s->mem[i];
    if (is_live(m) && m->boot != except)
      send_msg(s, m->addr, T_GOSSIP, NULL, 0, pre, pre_len, pre_n, false);
  }
}

static void fanout_member(rusm__swim *s, const member *m, uint64_t except) {
  uint8_t e[ENTRY_MAX];
  size_t n = enc_entry(e, m, false);
  fanout(s, e, n, 1, except);
}

/* Our whole view (this node first) to addr, in as many SYNC messages as
 * it takes; only the first carries SYNC_REQ. */
static void send_state(rusm__swim *s, const char *addr, uint8_t flags) {
  uint8_t *o = s->out;
  size_t max = s->cfg.max_message;
  size_t i = 0; /* next member; the first round sends self */
  bool self_sent = false;
  do {
    enc_header(s, o, T_SYNC);
    o[HDR_LEN] = flags;
    size_t count_at = HDR_LEN + 1, off = HDR_LEN + 2;
    unsigned n = 0;
    uint8_t e[ENTRY_MAX];
    if (!self_sent) {
      off += enc_entry(o + off, &s->self, true);
      n++;
      self_sent = true;
    }
    while (i < s->n_mem && n < ENTRIES_MAX) {
      size_t len = enc_entry(e, s->mem[i], true);
      if (len > max - off)
        break;
      memcpy(o + off, e, len);
      off += len;
      n++;
      i++;
    }
    o[count_at] = (uint8_t)n;
    push_tx(s, addr, off);
    flags &= (uint8_t)~SYNC_REQ;
  } while (i < s->n_mem);
}

/* A SYNC_REQ (or JOIN) with just this node, and `extra` (may be NULL). */
static void send_hello(rusm__swim *s, const char *addr, uint8_t flags,
                       const member *extra) {
  uint8_t body[1] = {flags};
  uint8_t e[2 * ENTRY_MAX];
  size_t n = enc_entry(e, &s->self, true);
  unsigned cnt = 1;
  if (extra) {
    n += enc_entry(e + n, extra, true);
    cnt++;
  }
  send_msg(s, addr, T_SYNC, body, 1, e, n, cnt, false);
}

/* ------------------------------------------------------------------ */
/* The member table                                                    */
/* ------------------------------------------------------------------ */

static member *find_boot(const rusm__swim *s, uint64_t boot) {
  for (size_t i = 0; i < s->n_mem; i++)
    if (s->mem[i]->boot == boot)
      return s->mem[i];
  return NULL;
}

static void count_state(rusm__swim *s, const member *m, int delta) {
  if (is_live(m))
    s->n_live = (size_t)((ptrdiff_t)s->n_live + delta);
  else
    s->n_tombs = (size_t)((ptrdiff_t)s->n_tombs + delta);
}

static void set_state(rusm__swim *s, member *m, uint8_t state) {
  count_state(s, m, -1);
  m->state = state;
  m->since = s->now;
  count_state(s, m, +1);
  if (state != RUSM__SWIM_SUSPECT) {
    m->n_suspectors = 0;
    m->self_suspects = m->confirm_pending = false;
  }
}

static void remove_member(rusm__swim *s, size_t i) {
  member *m = s->mem[i];
  count_state(s, m, -1);
  s->mem[i] = s->mem[--s->n_mem];
  rusm__xfree(m);
}

/* Drops the oldest tombstone. */
static void evict_tombstone(rusm__swim *s) {
  size_t best = SIZE_MAX;
  for (size_t i = 0; i < s->n_mem; i++)
    if (!is_live(s->mem[i]) &&
        (best == SIZE_MAX || s->mem[i]->since < s->mem[best]->since))
      best = i;
  if (best != SIZE_MAX)
    remove_member(s, best);
}

/* A new record in `state` (ident name/addr may be empty). NULL: no memory
 * or too many records. */
static member *new_member(rusm__swim *s, const ident *id, uint8_t state) {
  bool live = state == RUSM__SWIM_ALIVE || state == RUSM__SWIM_SUSPECT;
  if (live && s->n_live >= LIVE_MAX)
    return NULL;
  if (!live && s->n_tombs >= TOMBSTONE_MAX)
    evict_tombstone(s);
  if (s->n_mem == s->cap_mem) {
    size_t cap = s->cap_mem ? 2 * s->cap_mem : 16;
    member **a = rusm__xrealloc(s->mem, cap * sizeof(member *));
    if (!a) {
      s->err = RUSM_ENOMEM;
      return NULL;
    }
    s->mem = a;
    s->cap_mem = cap;
  }
  member *m = rusm__xcalloc(1, sizeof *m);
  if (!m) {
    s->err = RUSM_ENOMEM;
    return NULL;
  }
  m->boot = id->boot;
  m->inc = id->inc;
  m->id = id->id;
  m->state = state;
  m->since = s->now;
  if (id->name_len) {
    m->has_ident = true;
    copy_str(m->name, &m->name_len, id->name, id->name_len);
    copy_str(m->addr, &m->addr_len, id->addr, id->addr_len);
  }
  s->mem[s->n_mem++] = m;
  count_state(s, m, +1);
  return m;
}

static ident entry_ident(const pentry *e) {
  ident id = {e->name, e->addr, e->name_len, e->addr_len,
              e->id,   e->boot, e->inc};
  return id;
}

static ident member_ident(const member *m) {
  ident id = {m->name, m->addr, m->name_len, m->addr_len,
              m->id,   m->boot, m->inc};
  return id;
}

/* Inserts boot at a random place of what is left of this round. */
static void order_insert(rusm__swim *s, uint64_t boot) {
  if (s->n_order == s->cap_order) {
    size_t cap = s->cap_order ? 2 * s->cap_order : 16;
    uint64_t *a = rusm__xrealloc(s->order, cap * sizeof *a);
    if (!a)
      return; /* probed from the next round on */
    s->order = a;
    s->cap_order = cap;
  }
  size_t at = s->pos_order + rnd_below(s, s->n_order - s->pos_order + 1);
  memmove(&s->order[at + 1], &s->order[at],
          (s->n_order - at) * sizeof *s->order);
  s->order[at] = boot;
  s->n_order++;
}

/* The next member of the randomized round-robin; a new shuffled round
 * when this one is used up. */
static member *order_next(rusm__swim *s) {
  for (int round = 0; round < 2; round++) {
    while (s->pos_order < s->n_order) {
      member *m = find_boot(s, s->order[s->pos_order++]);
      if (m && is_live(m))
        return m;
    }
    if (s->n_live > s->cap_order) {
      uint64_t *a = rusm__xrealloc(s->order, s->n_live * sizeof *a);
      if (!a)
        return NULL;
      s->order = a;
      s->cap_order = s->n_live;
    }
    s->n_order = s->pos_order = 0;
    for (size_t i = 0; i < s->n_mem; i++)
      if (is_live(s->mem[i]))
        s->order[s->n_order++] = s->mem[i]->boot;
    for (size_t i = s->n_order; i > 1; i--) { /* Fisher-Yates */
      size_t j = rnd_below(s, i);
      uint64_t t = s->order[i - 1];
      s->order[i - 1] = s->order[j];
      s->order[j] = t;
    }
  }
  return NULL;
}

/* The live member that follows this node in node-id order (cyclic). */
static member *ring_successor(const rusm__swim *s) {
  member *next = NULL, *first = NULL;
  for (size_t i = 0; i < s->n_mem; i++) {
    member *m = s->mem[i];
    if (!is_live(m))
      continue;
    if (!first || m->id < first->id)
      first = m;
    if (m->id > s->self.id && (!next || m->id < next->id))
      next = m;
  }
  return next ? next : first;
}

/* ------------------------------------------------------------------ */
/* State changes                                                       */
/* ------------------------------------------------------------------ */

static void stop(rusm__swim *s) {
  s->run = RUN_STOPPED;
  s->pr.active = false;
}

/* This node's suspicion timeout after `confirm` confirmations: from
 * S_max down to S_min as independent suspectors add up (Lifeguard). */
static uint64_t suspicion_timeout(const rusm__swim *s, uint32_t confirm) {
  uint64_t smin = (uint64_t)s->cfg.suspicion_mult * s->cfg.probe_interval_ms;
  uint64_t smax = smin * s->cfg.suspicion_max_mult;
  uint64_t k = s->cfg.suspicion_confirmations;
  uint64_t others = s->n_live > 0 ? s->n_live - 1 : 0; /* besides X */
  if (k > others)
    k = others;
  if (k == 0 || confirm >= k)
    return smin;
  uint64_t frac = ((uint64_t)log2_q16(confirm + 1) << 16) /
                  log2_q16((uint32_t)k + 1); /* Q16, < 1 */
  return smax - (((smax - smin) * frac) >> 16);
}

static void update_deadline(rusm__swim *s, member *m) {
  uint32_t c = m->n_suspectors ? m->n_suspectors - 1u : 0u;
  m->susp_deadline = m->susp_start + suspicion_timeout(s, c);
}

/* Makes m dead (reason FAILED, LEFT, RESTARTED or CONFLICT), reports it
 * and queues the news. */
static void mark_dead(rusm__swim *s, member *m, rusm__swim_reason reason) {
  assert(is_live(m));
  set_state(s, m,
            reason == RUSM__SWIM_REASON_LEFT ? RUSM__SWIM_LEFT
                                             : RUSM__SWIM_DEAD);
  m->reason = (uint8_t)reason;
  m->final = reason != RUSM__SWIM_REASON_FAILED;
  emit(s, RUSM__SWIM_MEMBER_DOWN, reason, m);
  bcast_member(s, m);
}

/* Records boot as dead for `reason`: a tombstone (made if need be, no
 * event) or, for a live member, a death reported as usual. */
static void tombstone(rusm__swim *s, const ident *id,
                      rusm__swim_reason reason) {
  member *m = find_boot(s, id->boot);
  if (!m) {
    m = new_member(s, id, RUSM__SWIM_DEAD);
    if (!m)
      return;
  } else if (is_live(m)) {
    mark_dead(s, m, reason);
    return;
  }
  m->state =
      reason == RUSM__SWIM_REASON_LEFT ? RUSM__SWIM_LEFT : RUSM__SWIM_DEAD;
  m->reason = (uint8_t)reason;
  m->final = reason != RUSM__SWIM_REASON_FAILED;
  m->since = s->now;
  bcast_member(s, m);
}

static void set_alive(rusm__swim *s, member *m, uint32_t inc) {
  bool was_suspect = m->state == RUSM__SWIM_SUSPECT;
  m->inc = inc;
  set_state(s, m, RUSM__SWIM_ALIVE);
  if (was_suspect)
    emit(s, RUSM__SWIM_MEMBER_ALIVE, RUSM__SWIM_REASON_NONE, m);
  bcast_member(s, m);
}

/* `who` suspects this node or holds it dead: it hears the refutation
 * directly at each tick for as long as a suspicion can last (S_max), on
 * top of the fan-out and the gossip, so that losing a message or two
 * does not make it a false DOWN. */
static void notify_add(rusm__swim *s, uint64_t who) {
  uint32_t ticks = s->cfg.suspicion_mult * s->cfg.suspicion_max_mult;
  notify *slot = NULL;
  for (unsigned i = 0; i < NOTIFY_MAX; i++) {
    notify *n = &s->notify[i];
    if (n->left && n->boot == who) {
      slot = n;
      break;
    }
    if (!n->left && !slot)
      slot = n;
  }
  if (slot) { /* full: the fan-out and the gossip still go */
    slot->boot = who;
    slot->left = ticks;
  }
}

static void notify_tick(rusm__swim *s) {
  uint8_t e[ENTRY_MAX];
  size_t n = 0;
  for (unsigned i = 0; i < NOTIFY_MAX; i++) {
    notify *t = &s->notify[i];
    if (!t->left)
      continue;
    t->left--;
    const member *m = find_boot(s, t->boot);
    if (!m || !is_live(m))
      continue;
    if (!n)
      n = enc_entry(e, &s->self, false);
    send_msg(s, m->addr, T_GOSSIP, NULL, 0, e, n, 1, false);
  }
}

/* Someone says this node is suspect or dead at inc: refute with a higher
 * incarnation, told to every member at once. */
static void refute(rusm__swim *s, uint32_t inc) {
  s->self.inc = (inc > s->self.inc ? inc : s->self.inc) + 1;
  if (s->health < HEALTH_MAX)
    s->health++;
  s->st.refutations++;
  bcast_member(s, &s->self);
  fanout_member(s, &s->self, 0);
}

/* This node lost a name / id conflict to `winner`: report it, tell the
 * members and stop. */
static void lose_conflict(rusm__swim *s, const ident *winner) {
  member w = {0};
  w.boot = winner->boot;
  w.id = winner->id;
  w.inc = winner->inc;
  w.state = RUSM__SWIM_ALIVE;
  copy_str(w.name, &w.name_len, winner->name, winner->name_len);
  copy_str(w.addr, &w.addr_len, winner->addr, winner->addr_len);
  emit(s, RUSM__SWIM_JOIN_REFUSED, RUSM__SWIM_REASON_CONFLICT, &w);
  member me = s->self;
  me.state = RUSM__SWIM_DEAD;
  me.reason = RUSM__SWIM_REASON_CONFLICT;
  fanout_member(s, &me, 0);
  stop(s);
}

enum { ACCEPT = 0, REJECT = 1 };

/* Before a new boot id becomes a live member: no two live members may
 * share a name or an id. Same name, id and address as a live member: a
 * restart, settled by the seed's verdict or by a probe (see the doc), so
 * the newcomer waits. Otherwise the lower boot id wins everywhere. */
static int clash(rusm__swim *s, const ident *id) {
  bool same_name =
      str_eq(id->name, id->name_len, s->self.name, s->self.name_len);
  if (same_name || id->id == s->self.id) {
    if (same_name && id->id == s->self.id &&
        str_eq(id->addr, id->addr_len, s->self.addr, s->self.addr_len)) {
      tombstone(s, id, RUSM__SWIM_REASON_RESTARTED); /* an old me */
    } else if (id->boot < s->self.boot) {
      lose_conflict(s, id);
    } else {
      tombstone(s, id, RUSM__SWIM_REASON_CONFLICT);
    }
    return REJECT;
  }
  bool any = false, win = true;
  for (size_t i = 0; i < s->n_mem; i++) {
    const member *m = s->mem[i];
    if (!is_live(m) || m->boot == id->boot)
      continue;
    bool n_eq = str_eq(id->name, id->name_len, m->name, m->name_len);
    if (!n_eq && m->id != id->id)
      continue;
    if (n_eq && m->id == id->id &&
        str_eq(id->addr, id->addr_len, m->addr, m->addr_len))
      return REJECT;
    any = true;
    if (id->boot > m->boot)
      win = false;
  }
  if (!any)
    return ACCEPT;
  if (!win) {
    tombstone(s, id, RUSM__SWIM_REASON_CONFLICT);
    return REJECT;
  }
  for (size_t i = 0; i < s->n_mem; i++) {
    member *m = s->mem[i];
    if (is_live(m) && m->boot != id->boot &&
        (str_eq(id->name, id->name_len, m->name, m->name_len) ||
         m->id == id->id))
      mark_dead(s, m, RUSM__SWIM_REASON_CONFLICT);
  }
  return ACCEPT;
}

/* An ALIVE claim (with identity) at incarnation id->inc. */
static void apply_alive(rusm__swim *s, const ident *id) {
  if (id->boot == s->self.boot)
    return;
  member *m = find_boot(s, id->boot);
  if (m) {
    if (m->final)
      return;
    if (is_live(m)) {
      if (id->inc > m->inc)
        set_alive(s, m, id->inc);
      return;
    }
    if (id->inc <= m->inc || !id->name_len)
      return;
    /* Back from the dead (it refuted a failure verdict: a partition). */
    if (!m->has_ident) {
      m->has_ident = true;
      copy_str(m->name, &m->name_len, id->name, id->name_len);
      copy_str(m->addr, &m->addr_len, id->addr, id->addr_len);
    }
    ident mine = member_ident(m);
    if (clash(s, &mine) != ACCEPT)
      return;
    m->inc = id->inc;
    set_state(s, m, RUSM__SWIM_ALIVE);
    emit(s, RUSM__SWIM_MEMBER_UP, RUSM__SWIM_REASON_NONE, m);
    bcast_member(s, m);
    order_insert(s, m->boot);
    return;
  }
  if (clash(s, id) != ACCEPT)
    return;
  m = new_member(s, id, RUSM__SWIM_ALIVE);
  if (!m)
    return;
  emit(s, RUSM__SWIM_MEMBER_UP, RUSM__SWIM_REASON_NONE, m);
  bcast_member(s, m);
  order_insert(s, m->boot);
}

static bool add_suspector(rusm__swim *s, member *m, uint64_t from) {
  for (unsigned i = 0; i < m->n_suspectors; i++)
    if (m->suspectors[i] == from)
      return false;
  if (m->n_suspectors >= MAX_SUSPECTORS)
    return false;
  m->suspectors[m->n_suspectors++] = from;
  if (from == s->self.boot)
    m->self_suspects = true;
  update_deadline(s, m);
  return true;
}

/* m becomes suspect at inc on the word of `from`. */
static void start_suspicion(rusm__swim *s, member *m, uint32_t inc,
                            uint64_t from) {
  m->inc = inc;
  set_state(s, m, RUSM__SWIM_SUSPECT);
  m->susp_start = s->now;
  m->n_suspectors = 0;
  (void)add_suspector(s, m, from);
  /* A member that hears of a suspicion probes the suspect itself at its
   * next free tick with probability 2K/(n-2) (all of them in a small
   * cluster): enough independent confirmations to shorten the timeout of
   * a real failure, and more paths for a live suspect to refute. */
  if (from != s->self.boot && s->n_live > 1) {
    uint64_t want = 2 * (uint64_t)s->cfg.suspicion_confirmations;
    uint64_t others = s->n_live - 1;
    m->confirm_pending = want >= others || rnd_below(s, others) < want;
  }
  emit(s, RUSM__SWIM_MEMBER_SUSPECT, RUSM__SWIM_REASON_NONE, m);
  bcast_member(s, m);
}

static void apply_suspect(rusm__swim *s, const pentry *e, bool sync) {
  if (e->boot == s->self.boot) {
    notify_add(s, e->from);
    if (e->inc >= s->self.inc)
      refute(s, e->inc);
    return;
  }
  member *m = find_boot(s, e->boot);
  if (!m && sync && e->has_ident) {
    ident id = entry_ident(e);
    apply_alive(s, &id);
    m = find_boot(s, e->boot);
  }
  if (!m || !is_live(m) || e->inc < m->inc)
    return;
  if (m->state == RUSM__SWIM_ALIVE || e->inc > m->inc)
    start_suspicion(s, m, e->inc, e->from);
  else if (add_suspector(s, m, e->from))
    bcast_member(s, m); /* spread the confirmation */
}

static rusm__swim_reason entry_reason(const pentry *e) {
  if (e->kind == E_LEFT)
    return RUSM__SWIM_REASON_LEFT;
  switch (e->wreason) {
  case WR_RESTARTED:
    return RUSM__SWIM_REASON_RESTARTED;
  case WR_CONFLICT:
    return RUSM__SWIM_REASON_CONFLICT;
  default:
    return RUSM__SWIM_REASON_FAILED;
  }
}

static void apply_dead(rusm__swim *s, const pentry *e, bool sync,
                       uint64_t sender) {
  rusm__swim_reason reason = entry_reason(e);
  bool final = reason != RUSM__SWIM_REASON_FAILED;
  if (e->boot == s->self.boot) {
    if (reason == RUSM__SWIM_REASON_FAILED) {
      notify_add(s, sender);
      if (e->inc >= s->self.inc)
        refute(s, e->inc);
    } else if (reason != RUSM__SWIM_REASON_LEFT) {
      /* The cluster holds this boot for a stale or losing instance. */
      emit(s, RUSM__SWIM_JOIN_REFUSED,
           reason == RUSM__SWIM_REASON_RESTARTED ? RUSM__SWIM_REASON_STALE
                                                 : RUSM__SWIM_REASON_CONFLICT,
           &s->self);
      stop(s);
    }
    return;
  }
  member *m = find_boot(s, e->boot);
  if (!m) {
    ident id = entry_ident(e);
    tombstone(s, &id, reason);
    return;
  }
  if (m->final)
    return;
  if (!is_live(m)) { /* failed before: now perhaps for good */
    if (final) {
      m->state =
          reason == RUSM__SWIM_REASON_LEFT ? RUSM__SWIM_LEFT : RUSM__SWIM_DEAD;
      m->reason = (uint8_t)reason;
      m->final = true;
      bcast_member(s, m);
    } else if (e->inc > m->inc) {
      m->inc = e->inc;
    }
    return;
  }
  if (!final && e->inc < m->inc)
    return;
  if (!final && sync) {
    /* A full-state exchange says dead: suspect instead, so that a member
     * this node still hears from is not dropped on hearsay (a healed
     * partition); the member refutes if alive. */
    if (m->state == RUSM__SWIM_ALIVE || e->inc > m->inc)
      start_suspicion(s, m, e->inc, sender);
    else if (add_suspector(s, m, sender))
      bcast_member(s, m);
    return;
  }
  if (e->inc > m->inc)
    m->inc = e->inc;
  mark_dead(s, m, reason);
}

/* The entries of a message: deaths first, so that a restart's
 * "old boot dead" clears the way for its "new boot alive". */
static void apply_entries(rusm__swim *s, const pmsg *pm, bool sync) {
  for (int pass = 0; pass < 2; pass++) {
    for (unsigned i = 0; i < pm->n && s->run == RUN_ACTIVE; i++) {
      const pentry *e = &pm->e[i];
      if ((e->kind == E_ALIVE) != (pass == 1))
        continue;
      if (e->kind == E_ALIVE) {
        ident id = entry_ident(e);
        apply_alive(s, &id);
      } else if (e->kind == E_SUSPECT) {
        apply_suspect(s, e, sync);
      } else {
        apply_dead(s, e, sync, pm->boot);
      }
    }
  }
}

/* ------------------------------------------------------------------ */
/* Probing                                                             */
/* ------------------------------------------------------------------ */

static void send_ping(rusm__swim *s, const char *addr, uint32_t seq,
                      uint64_t target, const member *m) {
  uint8_t body[12];
  put32(body, seq);
  put64(body + 4, target);
  /* Buddy system: a suspect hears of its suspicion from every prober. */
  uint8_t e[ENTRY_MAX];
  size_t n = 0;
  if (m && m->state == RUSM__SWIM_SUSPECT)
    n = enc_entry(e, m, false);
  send_msg(s, addr, T_PING, body, sizeof body, e, n, n ? 1 : 0, true);
}

static void send_ack(rusm__swim *s, const char *addr, uint32_t seq,
                     uint64_t responder) {
  uint8_t body[12];
  put32(body, seq);
  put64(body + 4, responder);
  send_msg(s, addr, T_ACK, body, sizeof body, NULL, 0, 0, true);
}

static void start_probe(rusm__swim *s, member *m) {
  probe *p = &s->pr;
  uint64_t h = 1 + s->health; /* Lifeguard: a struggling node waits more */
  p->active = true;
  p->acked = p->indirect = false;
  p->id = m->id;
  p->boot = m->boot;
  p->seq = ++s->seq;
  p->ack_deadline = s->now + h * s->cfg.probe_timeout_ms;
  p->end = s->now + h * s->cfg.probe_interval_ms;
  p->expected_nacks = p->nacks = 0;
  memcpy(p->addr, m->addr, (size_t)m->addr_len + 1);
  m->last_probe = s->now;
  s->st.probes++;
  send_ping(s, m->addr, p->seq, m->boot, m);
}

/* No direct ack in time: ask k other members, and ping once more. */
static void probe_indirect(rusm__swim *s) {
  probe *p = &s->pr;
  p->indirect = true;
  const member *m = find_boot(s, p->boot);
  send_ping(s, p->addr, p->seq, p->boot, m && is_live(m) ? m : NULL);
  size_t cand = 0;
  for (size_t i = 0; i < s->n_mem; i++)
    if (s->mem[i]->state == RUSM__SWIM_ALIVE && s->mem[i]->boot != p->boot)
      cand++;
  uint64_t left = p->end > s->now ? p->end - s->now : 0;
  uint64_t nack_ms = left * 8 / 10; /* nack before our probe ends */
  uint8_t body[4 + 2 + 8 + 2 + 1 + RUSM__SWIM_ADDR_MAX];
  size_t an = strlen(p->addr);
  put32(body, p->seq);
  put16(body + 4, p->id);
  put64(body + 6, p->boot);
  put16(body + 14, (uint16_t)min64(nack_ms, UINT16_MAX));
  body[16] = (uint8_t)an;
  memcpy(body + 17, p->addr, an);
  /* k distinct random picks among cand (selection sampling). */
  size_t need = min64(s->cfg.indirect_checks, cand);
  for (size_t i = 0; i < s->n_mem && need > 0; i++) {
    const member *r = s->mem[i];
    if (r->state != RUSM__SWIM_ALIVE || r->boot == p->boot)
      continue;
    if (rnd_below(s, cand) < need) {
      send_msg(s, r->addr, T_PING_REQ, body, 17 + an, NULL, 0, 0, true);
      p->expected_nacks++;
      need--;
    }
    cand--;
  }
}

static void originate_suspicion(rusm__swim *s, member *m) {
  s->st.suspicions++;
  start_suspicion(s, m, m->inc, s->self.boot);
  fanout_member(s, m, 0); /* the suspect included: it refutes at once */
}

/* This node's own probe of a suspect failed too: a confirmation, told
 * straight to whoever started the suspicion. */
static void confirm_suspicion(rusm__swim *s, member *m) {
  /* This node's timer runs from its own evidence: the originator's
   * timer, which started first, bounds the detection time; a confirmer
   * that missed the refutation gets time to hear it from the suspect,
   * which now knows it as a suspector. */
  uint64_t start = m->susp_start;
  m->susp_start = s->now;
  if (!add_suspector(s, m, s->self.boot)) {
    m->susp_start = start;
    return;
  }
  bcast_member(s, m);
  /* The suspect hears of it too: it repeats its refutation to each
   * suspector it knows of (notify_add). */
  uint8_t e[ENTRY_MAX];
  size_t n = enc_entry(e, m, false);
  send_msg(s, m->addr, T_GOSSIP, NULL, 0, e, n, 1, false);
  member *origin = find_boot(s, m->suspectors[0]);
  if (origin && is_live(origin))
    send_msg(s, origin->addr, T_GOSSIP, NULL, 0, e, n, 1, true);
}

static void probe_finish(rusm__swim *s) {
  probe *p = &s->pr;
  p->active = false;
  if (p->acked)
    return;
  s->st.probes_failed++;
  /* Lifeguard: missing nacks mean this node's own links are bad. */
  uint32_t up = 1;
  if (p->expected_nacks)
    up = p->nacks >= p->expected_nacks ? 0 : p->expected_nacks - p->nacks;
  s->health = (uint32_t)min64((uint64_t)s->health + up, HEALTH_MAX);
  member *m = find_boot(s, p->boot);
  if (!m || !is_live(m))
    return;
  if (m->state == RUSM__SWIM_ALIVE)
    originate_suspicion(s, m);
  else if (!m->self_suspects)
    confirm_suspicion(s, m);
}

/* The member to probe at this tick: odd ticks go to the ring successor
 * (every member is then probed at least every other period by its ring
 * predecessor, the base of the detection bound); the others to a
 * suspect to confirm, a suspect this node suspects (its chance to hear
 * the refutation), or the next of the randomized round-robin. */
static member *pick_target(rusm__swim *s) {
  if (s->n_live == 0)
    return NULL;
  if (s->tick_no & 1)
    return ring_successor(s);
  member *best = NULL;
  for (size_t i = 0; i < s->n_mem; i++) {
    member *m = s->mem[i];
    if (m->state != RUSM__SWIM_SUSPECT)
      continue;
    if (m->confirm_pending) {
      m->confirm_pending = false;
      return m;
    }
    if (m->self_suspects && (!best || m->last_probe < best->last_probe))
      best = m;
  }
  return best ? best : order_next(s);
}

/* ------------------------------------------------------------------ */
/* Handling messages                                                   */
/* ------------------------------------------------------------------ */

static void advance(rusm__swim *s, uint64_t now) {
  if (now > s->now)
    s->now = now;
}

/* A message from `from_addr` comes from a boot id this node holds dead
 * (failed): tell it, so that it refutes (at most once per period). */
static void tell_dead(rusm__swim *s, member *m, const char *from_addr) {
  if (m->told_dead && s->now < m->told_dead + s->cfg.probe_interval_ms)
    return;
  m->told_dead = s->now;
  uint8_t e[ENTRY_MAX];
  size_t n = enc_entry(e, m, false);
  send_msg(s, from_addr, T_GOSSIP, NULL, 0, e, n, 1, false);
}

/* What the header alone says: the sender is alive at its incarnation. */
static void sender_seen(rusm__swim *s, member *m, const pmsg *pm,
                        const char *from_addr) {
  if (!m) {
    /* A stranger (its join not heard of yet): introduce ourselves, it
     * answers with its view (rate-limited to one per period). */
    if (pm->type != T_SYNC && s->now >= s->unknown_ok) {
      s->unknown_ok = s->now + s->cfg.probe_interval_ms;
      send_hello(s, from_addr, SYNC_REQ, NULL);
    }
    return;
  }
  if (is_live(m)) {
    if (pm->inc > m->inc)
      set_alive(s, m, pm->inc);
    return;
  }
  if (pm->inc > m->inc && m->has_ident) {
    ident id = member_ident(m);
    id.inc = pm->inc;
    apply_alive(s, &id);
  } else {
    tell_dead(s, m, from_addr);
  }
}

static void send_refuse(rusm__swim *s, const char *addr, uint8_t why,
                        const member *holder) {
  uint8_t body[1] = {why};
  uint8_t e[ENTRY_MAX];
  size_t n = enc_entry(e, holder, true);
  send_msg(s, addr, T_REFUSE, body, 1, e, n, 1, false);
}

/* A JOIN at this (seed) node. */
static void handle_join(rusm__swim *s, const char *from_addr, const pmsg *pm) {
  const pentry *j = &pm->e[0];
  ident jid = entry_ident(j);
  member joiner = {0};
  joiner.boot = j->boot;
  joiner.id = j->id;
  joiner.inc = j->inc;
  joiner.state = RUSM__SWIM_ALIVE;
  joiner.has_ident = true;
  copy_str(joiner.name, &joiner.name_len, j->name, j->name_len);
  copy_str(joiner.addr, &joiner.addr_len, j->addr, j->addr_len);

  const member *holder = NULL;
  member *restart_of = NULL;
  rusm__swim_reason why = RUSM__SWIM_REASON_NONE;
  const member *old = find_boot(s, j->boot);
  bool was_live = old && is_live(old); /* (old may go below: evictions) */
  if (old && old->final) {
    why = RUSM__SWIM_REASON_STALE;
    holder = &joiner;
  } else if (str_eq(j->name, j->name_len, s->self.name, s->self.name_len)) {
    why = RUSM__SWIM_REASON_NAME_TAKEN;
    holder = &s->self;
  } else if (j->id == s->self.id) {
    why = RUSM__SWIM_REASON_ID_TAKEN;
    holder = &s->self;
  }
  for (size_t i = 0; i < s->n_mem && why == RUSM__SWIM_REASON_NONE; i++) {
    member *m = s->mem[i];
    if (!is_live(m) || m->boot == j->boot)
      continue;
    bool n_eq = str_eq(j->name, j->name_len, m->name, m->name_len);
    if (n_eq && m->id == j->id &&
        str_eq(j->addr, j->addr_len, m->addr, m->addr_len)) {
      restart_of = m; /* the same node, started again */
    } else if (n_eq) {
      why = RUSM__SWIM_REASON_NAME_TAKEN;
      holder = m;
    } else if (m->id == j->id) {
      why = RUSM__SWIM_REASON_ID_TAKEN;
      holder = m;
    }
  }
  if (why != RUSM__SWIM_REASON_NONE) {
    uint8_t w = why == RUSM__SWIM_REASON_NAME_TAKEN ? WREF_NAME
                : why == RUSM__SWIM_REASON_ID_TAKEN ? WREF_ID
                                                    : WREF_STALE;
    send_refuse(s, from_addr, w, holder);
    emit(s, RUSM__SWIM_JOIN_REFUSED, why, &joiner);
    return;
  }
  /* Earlier boots of the same node are dead for good: even one that was
   * only thought failed can no longer come back. */
  uint8_t fan[2 * ENTRY_MAX];
  size_t fan_len = 0;
  unsigned fan_n = 0;
  if (restart_of) {
    mark_dead(s, restart_of, RUSM__SWIM_REASON_RESTARTED);
    fan_len += enc_entry(fan, restart_of, false);
    fan_n++;
  }
  for (size_t i = 0; i < s->n_mem; i++) {
    member *m = s->mem[i];
    if (m->state == RUSM__SWIM_DEAD && !m->final && m->boot != j->boot &&
        m->id == j->id && str_eq(j->name, j->name_len, m->name, m->name_len) &&
        str_eq(j->addr, j->addr_len, m->addr, m->addr_len)) {
      ident mid = member_ident(m);
      tombstone(s, &mid, RUSM__SWIM_REASON_RESTARTED);
    }
  }
  apply_alive(s, &jid);
  if (s->run != RUN_ACTIVE)
    return;
  member *m = find_boot(s, j->boot);
  if (m && is_live(m) && (!was_live || restart_of)) {
    /* Everyone hears of the change now, not a few periods later. */
    fan_len += enc_entry(fan + fan_len, m, false);
    fan_n++;
    fanout(s, fan, fan_len, fan_n, m->boot);
  }
  send_state(s, from_addr, SYNC_JOINED);
}

static void handle_refuse(rusm__swim *s, const pmsg *pm) {
  if (s->joined)
    return; /* another seed took us in: that answer stands */
  const pentry *e = &pm->e[0];
  member h = {0};
  h.boot = e->boot;
  h.id = e->id;
  h.inc = e->inc;
  h.state = RUSM__SWIM_ALIVE;
  copy_str(h.name, &h.name_len, e->name, e->name_len);
  copy_str(h.addr, &h.addr_len, e->addr, e->addr_len);
  rusm__swim_reason why = pm->reason == WREF_NAME ? RUSM__SWIM_REASON_NAME_TAKEN
                          : pm->reason == WREF_ID ? RUSM__SWIM_REASON_ID_TAKEN
                                                  : RUSM__SWIM_REASON_STALE;
  emit(s, RUSM__SWIM_JOIN_REFUSED, why, &h);
  stop(s);
}

static void handle_ack(rusm__swim *s, const pmsg *pm) {
  probe *p = &s->pr;
  if (p->active && !p->acked && pm->seq == p->seq) {
    if (pm->responder == p->boot) {
      p->acked = true;
      p->active = false;
      if (s->health > 0)
        s->health--;
    } else if (pm->boot == pm->responder && pm->id == p->id) {
      /* Another boot of the same node answers at that address: the one
       * probed was restarted. */
      member *m = find_boot(s, p->boot);
      p->active = false;
      if (m && is_live(m))
        mark_dead(s, m, RUSM__SWIM_REASON_RESTARTED);
    }
    return;
  }
  for (unsigned i = 0; i < RELAY_MAX; i++) {
    relay *r = &s->relays[i];
    if (r->used && r->seq == pm->seq && r->target_boot == pm->responder) {
      send_ack(s, r->origin, r->origin_seq, pm->responder);
      r->used = false;
      return;
    }
  }
}

static void handle_ping_req(rusm__swim *s, const char *from_addr,
                            const pmsg *pm) {
  if (pm->target_boot == s->self.boot) {
    send_ack(s, from_addr, pm->seq, s->self.boot);
    return;
  }
  relay *r = NULL;
  for (unsigned i = 0; i < RELAY_MAX && !r; i++)
    if (!s->relays[i].used)
      r = &s->relays[i];
  if (!r)
    return; /* busy: the origin's other relays may answer */
  r->used = true;
  r->nacked = false;
  r->origin_seq = pm->seq;
  r->seq = ++s->seq;
  r->target_boot = pm->target_boot;
  r->nack_at = s->now + pm->nack_ms;
  r->expire = s->now + pm->nack_ms + s->cfg.probe_interval_ms;
  size_t an = bounded_len(from_addr, RUSM__SWIM_ADDR_MAX);
  memcpy(r->origin, from_addr, an);
  r->origin[an] = 0;
  char target[RUSM__SWIM_ADDR_MAX + 1];
  memcpy(target, pm->target_addr, pm->target_addr_len);
  target[pm->target_addr_len] = 0;
  const member *m = find_boot(s, pm->target_boot);
  send_ping(s, target, r->seq, pm->target_boot, m && is_live(m) ? m : NULL);
}

int rusm__swim_handle_message(rusm__swim *s, const char *from_addr,
                              const uint8_t *bytes, size_t n, uint64_t now_ms) {
  if (!s || !from_addr || (!bytes && n))
    return RUSM_EINVAL;
  if (!addr_ok(from_addr, bounded_len(from_addr, RUSM__SWIM_ADDR_MAX)))
    return RUSM_EINVAL;
  pmsg *pm = &s->pm;
  int rc = decode(bytes, n, pm);
  if (rc)
    return rc;
  advance(s, now_ms);
  if (s->run != RUN_ACTIVE || pm->boot == s->self.boot)
    return 0;
  s->err = 0;
  member *snd = find_boot(s, pm->boot);
  bool join = pm->type == T_SYNC && (pm->flags & SYNC_JOIN);
  if (snd && snd->final) {
    /* A stale instance or a conflict's loser: nothing it says counts, but
     * it hears why (and stops), unless it left of its own accord. */
    if (join)
      handle_join(s, from_addr, pm);
    else if (snd->state == RUSM__SWIM_DEAD)
      tell_dead(s, snd, from_addr);
    return s->err;
  }
  if (join) {
    handle_join(s, from_addr, pm);
    return s->err;
  }
  if (pm->type == T_REFUSE) {
    handle_refuse(s, pm);
    return s->err;
  }
  bool known = snd != NULL;
  sender_seen(s, snd, pm, from_addr);
  if (s->run != RUN_ACTIVE)
    return s->err;
  if (pm->type == T_SYNC) {
    apply_entries(s, pm, true);
    if (s->run != RUN_ACTIVE)
      return s->err;
    /* A seed's answer, or a member's view exchange: this node is in. */
    if ((pm->flags & SYNC_JOINED) || (s->n_live > 0 && known))
      s->joined = true;
    if (pm->flags & SYNC_REQ)
      send_state(s, from_addr, 0);
    return s->err;
  }
  apply_entries(s, pm, false);
  if (s->run != RUN_ACTIVE)
    return s->err;
  switch (pm->type) {
  case T_PING:
    send_ack(s, from_addr, pm->seq, s->self.boot);
    break;
  case T_ACK:
    handle_ack(s, pm);
    break;
  case T_PING_REQ:
    handle_ping_req(s, from_addr, pm);
    break;
  case T_NACK:
    if (s->pr.active && pm->seq == s->pr.seq)
      s->pr.nacks++;
    break;
  default:
    break; /* GOSSIP: the entries were all */
  }
  return s->err;
}

/* ------------------------------------------------------------------ */
/* Timeouts                                                            */
/* ------------------------------------------------------------------ */

static void gc_tombstones(rusm__swim *s) {
  for (size_t i = s->n_mem; i-- > 0;) {
    const member *m = s->mem[i];
    if (!is_live(m) && s->now - m->since >= s->cfg.tombstone_ttl_ms)
      remove_member(s, i);
  }
}

/* This node's address, or a live member's. */
static bool addr_is_live(const rusm__swim *s, const char *addr) {
  size_t an = strlen(addr);
  if (str_eq(addr, an, s->self.addr, s->self.addr_len))
    return true;
  for (size_t i = 0; i < s->n_mem; i++)
    if (is_live(s->mem[i]) &&
        str_eq(addr, an, s->mem[i]->addr, s->mem[i]->addr_len))
      return true;
  return false;
}

/* A failed member at an address no live member holds now. */
static bool reconnect_target(const rusm__swim *s, const member *m) {
  return m->state == RUSM__SWIM_DEAD && !m->final && m->has_ident &&
         !addr_is_live(s, m->addr);
}

/* Heals partitions: a hello to one member thought failed, or to one seed
 * nobody live answers at. The failed member learns it is held dead (the
 * entry sent along) and refutes; its full view comes back. */
static void reconnect(rusm__swim *s) {
  size_t failed = 0, seeds = 0;
  for (size_t i = 0; i < s->n_mem; i++)
    failed += reconnect_target(s, s->mem[i]);
  for (size_t i = 0; i < s->n_seeds; i++)
    seeds += !addr_is_live(s, s->seeds[i]);
  /* Seeds and failed members take turns: after much churn the failed
   * outnumber the seeds, and the seeds are what joins two clusters that
   * no longer know each other's members. */
  s->reconnect_round++;
  bool to_seed = seeds > 0 && (failed == 0 || (s->reconnect_round & 1));
  if (!to_seed && failed == 0)
    return;
  size_t pick = rnd_below(s, to_seed ? seeds : failed);
  if (to_seed) {
    for (size_t i = 0; i < s->n_seeds; i++)
      if (!addr_is_live(s, s->seeds[i]) && pick-- == 0) {
        send_hello(s, s->seeds[i], SYNC_REQ, NULL);
        return;
      }
  }
  for (size_t i = 0; i < s->n_mem; i++)
    if (reconnect_target(s, s->mem[i]) && pick-- == 0) {
      send_hello(s, s->mem[i]->addr, SYNC_REQ, s->mem[i]);
      return;
    }
}

static void send_joins(rusm__swim *s) {
  for (size_t i = 0; i < s->n_seeds; i++)
    if (!str_eq(s->seeds[i], strlen(s->seeds[i]), s->self.addr,
                s->self.addr_len))
      send_hello(s, s->seeds[i], SYNC_JOIN, NULL);
}

void rusm__swim_handle_timeout(rusm__swim *s, uint64_t now_ms) {
  if (!s)
    return;
  advance(s, now_ms);
  if (s->run != RUN_ACTIVE)
    return;
  uint64_t now = s->now;
  probe *p = &s->pr;
  if (p->active && !p->indirect && now >= p->ack_deadline && now < p->end)
    probe_indirect(s);
  if (p->active && now >= p->end)
    probe_finish(s);
  for (unsigned i = 0; i < RELAY_MAX; i++) {
    relay *r = &s->relays[i];
    if (!r->used)
      continue;
    if (!r->nacked && now >= r->nack_at) {
      uint8_t body[4];
      put32(body, r->origin_seq);
      send_msg(s, r->origin, T_NACK, body, 4, NULL, 0, 0, true);
      r->nacked = true;
    }
    if (now >= r->expire)
      r->used = false;
  }
  for (size_t i = 0; i < s->n_mem; i++) {
    member *m = s->mem[i];
    if (m->state != RUSM__SWIM_SUSPECT || now < m->susp_deadline)
      continue;
    if (m->self_suspects) {
      mark_dead(s, m, RUSM__SWIM_REASON_FAILED);
      fanout_member(s, m, 0);
    } else {
      /* Only hearsay so far: a member is declared dead on this node's
       * own evidence (or a DEAD report), so probe it first. A failure
       * makes this node a suspector past its deadline: dead at once. */
      m->confirm_pending = true;
      m->susp_deadline = UINT64_MAX;
    }
  }
  if (now >= s->next_tick) {
    if (p->active) {
      s->next_tick = p->end; /* a health-stretched probe runs over */
    } else {
      s->tick_no++;
      notify_tick(s);
      member *t = pick_target(s);
      if (t)
        start_probe(s, t);
      s->next_tick += s->cfg.probe_interval_ms;
      if (s->next_tick <= now)
        s->next_tick = now + s->cfg.probe_interval_ms;
      gc_tombstones(s);
    }
  }
  if (!s->joined && s->has_join_seed && now >= s->join_due) {
    send_joins(s);
    s->join_due = now + s->cfg.join_retry_ms;
  }
  if (now >= s->sync_due) {
    s->sync_due = now + s->cfg.sync_interval_ms;
    if (s->n_live > 0) {
      size_t pick = rnd_below(s, s->n_live);
      for (size_t i = 0; i < s->n_mem; i++)
        if (is_live(s->mem[i]) && pick-- == 0) {
          send_state(s, s->mem[i]->addr, SYNC_REQ);
          break;
        }
    }
  }
  if (now >= s->reconnect_due) {
    s->reconnect_due = now + s->cfg.reconnect_interval_ms;
    if (s->joined)
      reconnect(s);
  }
}

uint64_t rusm__swim_next_timeout(const rusm__swim *s) {
  if (!s || s->run != RUN_ACTIVE)
    return UINT64_MAX;
  uint64_t t = min64(s->next_tick, min64(s->sync_due, s->reconnect_due));
  const probe *p = &s->pr;
  if (p->active) {
    if (!p->indirect)
      t = min64(t, p->ack_deadline);
    t = min64(t, p->end);
  }
  for (unsigned i = 0; i < RELAY_MAX; i++) {
    const relay *r = &s->relays[i];
    if (r->used)
      t = min64(t, r->nacked ? r->expire : r->nack_at);
  }
  for (size_t i = 0; i < s->n_mem; i++)
    if (s->mem[i]->state == RUSM__SWIM_SUSPECT)
      t = min64(t, s->mem[i]->susp_deadline);
  if (!s->joined && s->has_join_seed)
    t = min64(t, s->join_due);
  return t;
}

/* ------------------------------------------------------------------ */
/* API                                                                 */
/* ------------------------------------------------------------------ */

void rusm__swim_config_default(rusm__swim_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->probe_interval_ms = 200;
  cfg->probe_timeout_ms = 100;
  cfg->indirect_checks = 3;
  cfg->suspicion_mult = 3;
  cfg->suspicion_max_mult = 2;
  cfg->suspicion_confirmations = 3;
  cfg->retransmit_mult = 4;
  cfg->max_message = 1400;
  cfg->join_retry_ms = 1000;
  cfg->sync_interval_ms = 10000;
  cfg->reconnect_interval_ms = 1000;
  cfg->tombstone_ttl_ms = 3600000;
}

static int fill_config(rusm__swim_config *c, const rusm__swim_config *in) {
  rusm__swim_config d;
  rusm__swim_config_default(&d);
  if (!in) {
    *c = d;
    return 0;
  }
  *c = *in;
#define RUSM__SWIM_DEF(f)                                                      \
  if (c->f == 0)                                                               \
  c->f = d.f
  RUSM__SWIM_DEF(probe_interval_ms);
  RUSM__SWIM_DEF(probe_timeout_ms);
  RUSM__SWIM_DEF(indirect_checks);
  RUSM__SWIM_DEF(suspicion_mult);
  RUSM__SWIM_DEF(suspicion_max_mult);
  RUSM__SWIM_DEF(suspicion_confirmations);
  RUSM__SWIM_DEF(retransmit_mult);
  RUSM__SWIM_DEF(max_message);
  RUSM__SWIM_DEF(join_retry_ms);
  RUSM__SWIM_DEF(sync_interval_ms);
  RUSM__SWIM_DEF(reconnect_interval_ms);
  RUSM__SWIM_DEF(tombstone_ttl_ms);
#undef RUSM__SWIM_DEF
  if (c->probe_timeout_ms >= c->probe_interval_ms ||
      c->probe_interval_ms > 60000 || c->indirect_checks > INDIRECT_MAX ||
      c->suspicion_mult > 1000 || c->suspicion_max_mult > 100 ||
      c->suspicion_confirmations > CONFIRM_MAX || c->retransmit_mult > 64 ||
      c->max_message < RUSM__SWIM_MESSAGE_MIN || c->max_message > 65535)
    return RUSM_EINVAL;
  return 0;
}

int rusm__swim_new(const rusm__swim_config *cfg, const rusm__swim_self *self,
                   uint64_t now_ms, rusm__swim **out) {
  if (!out)
    return RUSM_EINVAL;
  *out = NULL;
  if (!self || !self->name || !self->addr || self->boot_id == 0 ||
      !id_ok(self->node_id))
    return RUSM_EINVAL;
  size_t nl = bounded_len(self->name, RUSM__SWIM_NAME_MAX);
  size_t al = bounded_len(self->addr, RUSM__SWIM_ADDR_MAX);
  if (!name_ok(self->name, nl) || !addr_ok(self->addr, al))
    return RUSM_EINVAL;
  rusm__swim_config c;
  if (fill_config(&c, cfg))
    return RUSM_EINVAL;
  rusm__swim *s = rusm__xcalloc(1, sizeof *s);
  if (!s)
    return RUSM_ENOMEM;
  s->out = rusm__xmalloc(c.max_message);
  s->bq = rusm__xmalloc(BCAST_MAX * sizeof *s->bq);
  if (!s->out || !s->bq) {
    rusm__xfree(s->out);
    rusm__xfree(s->bq);
    rusm__xfree(s);
    return RUSM_ENOMEM;
  }
  s->cfg = c;
  s->now = now_ms;
  s->joined = true;
  member *me = &s->self;
  me->boot = self->boot_id;
  me->id = self->node_id;
  me->state = RUSM__SWIM_ALIVE;
  me->has_ident = true;
  me->since = now_ms;
  copy_str(me->name, &me->name_len, self->name, nl);
  copy_str(me->addr, &me->addr_len, self->addr, al);
  /* splitmix64 spreads any seed, 0 included, over the generator state. */
  uint64_t x = c.seed ^ self->boot_id;
  for (int i = 0; i < 4; i++) {
    uint64_t z = (x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    s->rng[i] = z ^ (z >> 31);
  }
  /* Spread the first tick over a period: nodes started together do not
   * probe in lockstep. */
  s->next_tick = now_ms + 1 + rnd_below(s, c.probe_interval_ms);
  s->sync_due = now_ms + c.sync_interval_ms;
  s->reconnect_due = now_ms + c.reconnect_interval_ms;
  *out = s;
  return 0;
}

void rusm__swim_free(rusm__swim *s) {
  if (!s)
    return;
  for (size_t i = 0; i < s->n_mem; i++)
    rusm__xfree(s->mem[i]);
  rusm__xfree(s->mem);
  rusm__xfree(s->seeds);
  rusm__xfree(s->order);
  rusm__xfree(s->bq);
  for (size_t i = 0; i < s->tx_n; i++)
    rusm__xfree(s->txq[(s->tx_head + i) % s->tx_cap].buf);
  rusm__xfree(s->txq);
  rusm__xfree(s->cur_tx);
  rusm__xfree(s->out);
  rusm__xfree(s->evq);
  rusm__xfree(s);
}

int rusm__swim_add_seed(rusm__swim *s, const char *addr) {
  if (!s || !addr)
    return RUSM_EINVAL;
  size_t an = bounded_len(addr, RUSM__SWIM_ADDR_MAX);
  if (!addr_ok(addr, an))
    return RUSM_EINVAL;
  for (size_t i = 0; i < s->n_seeds; i++)
    if (str_eq(s->seeds[i], strlen(s->seeds[i]), addr, an))
      return 0;
  if (s->n_seeds == s->cap_seeds) {
    size_t cap = s->cap_seeds ? 2 * s->cap_seeds : 4;
    char(*a)[RUSM__SWIM_ADDR_MAX + 1] =
        rusm__xrealloc(s->seeds, cap * sizeof *a);
    if (!a)
      return RUSM_ENOMEM;
    s->seeds = a;
    s->cap_seeds = cap;
  }
  memcpy(s->seeds[s->n_seeds], addr, an);
  s->seeds[s->n_seeds][an] = 0;
  s->n_seeds++;
  if (!str_eq(addr, an, s->self.addr, s->self.addr_len)) {
    s->has_join_seed = true;
    if (s->n_live == 0 && s->run == RUN_ACTIVE) {
      s->joined = false;
      s->join_due = s->now; /* at the next timeout */
    }
  }
  return 0;
}

bool rusm__swim_poll_transmit(rusm__swim *s, rusm__swim_transmit *out) {
  if (!s || !out)
    return false;
  rusm__xfree(s->cur_tx);
  s->cur_tx = NULL;
  if (s->tx_n == 0)
    return false;
  tx *t = &s->txq[s->tx_head];
  s->tx_head = (s->tx_head + 1) % s->tx_cap;
  s->tx_n--;
  s->cur_tx = t->buf;
  memcpy(s->cur_addr, t->addr, sizeof s->cur_addr); /* the slot may be
                                                       reused before */
  out->addr = s->cur_addr;
  out->bytes = t->buf;
  out->len = t->len;
  return true;
}

bool rusm__swim_poll_event(rusm__swim *s, rusm__swim_event *out) {
  if (!s || !out || s->ev_n == 0)
    return false;
  *out = s->evq[s->ev_head];
  s->ev_head = (s->ev_head + 1) % s->ev_cap;
  s->ev_n--;
  return true;
}

int rusm__swim_leave(rusm__swim *s) {
  if (!s)
    return RUSM_EINVAL;
  if (s->run != RUN_ACTIVE)
    return 0;
  member me = s->self;
  me.state = RUSM__SWIM_LEFT;
  me.reason = RUSM__SWIM_REASON_LEFT;
  fanout_member(s, &me, 0);
  stop(s);
  return 0;
}

int rusm__swim_connection_lost(rusm__swim *s, const char *addr,
                               uint64_t now_ms) {
  if (!s || !addr)
    return RUSM_EINVAL;
  advance(s, now_ms);
  if (s->run != RUN_ACTIVE)
    return RUSM_ENOTFOUND;
  size_t an = bounded_len(addr, RUSM__SWIM_ADDR_MAX);
  for (size_t i = 0; i < s->n_mem; i++) {
    member *m = s->mem[i];
    if (!is_live(m) || !str_eq(addr, an, m->addr, m->addr_len))
      continue;
    s->err = 0;
    if (m->state == RUSM__SWIM_ALIVE)
      originate_suspicion(s, m);
    else
      confirm_suspicion(s, m);
    return 0;
  }
  return RUSM_ENOTFOUND;
}

size_t rusm__swim_members(const rusm__swim *s, rusm__swim_member *out,
                          size_t cap) {
  if (!s)
    return 0;
  size_t n = 0;
  if (out && cap > 0)
    to_record(&s->self, &out[0]);
  n++;
  for (size_t i = 0; i < s->n_mem; i++) {
    if (!is_live(s->mem[i]))
      continue;
    if (out && n < cap)
      to_record(s->mem[i], &out[n]);
    n++;
  }
  return n;
}

size_t rusm__swim_member_count(const rusm__swim *s) {
  return s ? s->n_live + 1 : 0;
}

int rusm__swim_find(const rusm__swim *s, uint16_t node_id,
                    rusm__swim_member *out) {
  if (!s)
    return RUSM_EINVAL;
  if (node_id == s->self.id) {
    if (out)
      to_record(&s->self, out);
    return 0;
  }
  for (size_t i = 0; i < s->n_mem; i++)
    if (is_live(s->mem[i]) && s->mem[i]->id == node_id) {
      if (out)
        to_record(s->mem[i], out);
      return 0;
    }
  return RUSM_ENOTFOUND;
}

void rusm__swim_self_record(const rusm__swim *s, rusm__swim_member *out) {
  if (s && out)
    to_record(&s->self, out);
}

bool rusm__swim_joined(const rusm__swim *s) { return s && s->joined; }

bool rusm__swim_stopped(const rusm__swim *s) {
  return !s || s->run != RUN_ACTIVE;
}

void rusm__swim_get_stats(const rusm__swim *s, rusm__swim_stats *out) {
  if (!s || !out)
    return;
  *out = s->st;
  out->health = s->health;
}
