/*
 * greg.c — the global registry state machine (see greg.h and
 * docs/internals/cluster-registry.md).
 *
 * State: a hash table of names, each with its records in ascending key
 * order: live claims and tombstones (released claims of other nodes).
 * The holder of a name is its first live record. Records of another node
 * hang on that member too (dropped with it); this node's own claims are
 * always live (a release removes them) and are indexed by pid.
 *
 * Every operation either fails with nothing changed or succeeds: what it
 * needs (records, messages, the NAME_LOST event) is allocated before the
 * first change. Observer events are the one best-effort part.
 */
#include "cluster/greg.h"

#include <assert.h>
#include <string.h>

#include "otp/alloc.h"
#include "otp/u64map.h"

#define DOMAIN_LEN (sizeof RUSM__GREG_SIGN_DOMAIN - 1)
/* version, kind, seq, pid, host_id, host_boot */
#define HEAD_LEN (2 + 8 + 8 + 2 + 8)
/* The largest signed part of a claim: domain, head, name, host, proof. */
#define SIGNED_MAX                                                             \
  (DOMAIN_LEN + HEAD_LEN + 1 + RUSM_NAME_MAX + 1 + RUSM__GREG_NODE_NAME_MAX +  \
   2 + RUSM__GREG_PROOF_MAX)
#define NAME_BUCKETS_MIN 64

typedef struct greg_member greg_member;
typedef struct greg_name greg_name;
typedef struct greg_rec greg_rec;

struct greg_rec {
  greg_rec *next;          /* its name's records, ascending key */
  greg_name *nm;           /* its name */
  greg_member *host;       /* NULL: this node */
  greg_rec *hprev, *hnext; /* its host's records (this node's: g->own) */
  greg_rec *tprev, *tnext; /* the tombstone FIFO (released only) */
  uint64_t seq;            /* the claim's Lamport seq */
  uint64_t rel_seq;        /* the release's, when released */
  rusm_pid_t pid;
  bool released;
  uint8_t *msg; /* this node's claims: the signed message, for full syncs */
  size_t msg_len;
};

struct greg_name {
  greg_name *chain;
  uint64_t hash;
  greg_rec *recs;
  size_t len;
  char str[]; /* NUL-terminated */
};

struct greg_member {
  greg_member *next;
  greg_rec *recs; /* what it hosts: live claims and tombstones */
  /* Claims of seq <= floor were released and their tombstones dropped
   * (max_tombstones): such a claim arriving now is stale. */
  uint64_t floor;
  uint64_t boot;
  uint16_t id;
  size_t len;
  char str[];
};

typedef struct greg_tx {
  struct greg_tx *next;
  char *to; /* NULL: every member */
  uint8_t *data;
  size_t len;
} greg_tx;

typedef struct greg_ev {
  struct greg_ev *next;
  rusm__greg_event ev;
} greg_ev;

struct rusm__greg {
  char self[RUSM__GREG_NODE_NAME_MAX + 1];
  size_t self_len;
  uint16_t self_id;
  uint64_t self_boot;
  uint8_t *proof;
  size_t proof_len;
  rusm__greg_sign_fn sign;
  rusm__greg_verify_fn verify;
  void *crypto_ctx;
  uint32_t max_tombs, max_records;
  bool observe;

  uint64_t clock; /* Lamport */

  greg_name **buckets; /* power of two */
  size_t nbuckets, nnames;
  greg_member *members;
  size_t nmembers;
  greg_rec *own; /* this node's claims */
  rusm__u64map own_by_pid;
  size_t nown;
  greg_rec *thead, *ttail; /* tombstones, oldest first */
  size_t ntombs;
  size_t nrecords; /* records of other nodes */

  greg_tx *txhead, **txtail;
  greg_ev *evhead, **evtail;
  rusm__greg_stats st;
};

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* Length of a name (registry or node): 1..255 bytes, else 0. */
static size_t name_len_ok(const char *s) {
  if (!s)
    return 0;
  size_t n = strnlen(s, RUSM_NAME_MAX + 1);
  return n > RUSM_NAME_MAX ? 0 : n;
}

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= (uint8_t)s[i];
    h *= UINT64_C(0x100000001b3);
  }
  return h;
}

/* The Lamport clock after seeing seq s. Clamped so that a peer cannot push
 * it anywhere near wrapping; claims stop at RUSM__GREG_SEQ_MAX. */
static uint64_t clock_after(uint64_t clock, uint64_t s) {
  if (s > RUSM__GREG_SEQ_MAX)
    s = RUSM__GREG_SEQ_MAX;
  return s > clock ? s : clock;
}

static const char *rec_host(const rusm__greg *g, const greg_rec *r,
                            size_t *len) {
  if (!r->host) {
    *len = g->self_len;
    return g->self;
  }
  *len = r->host->len;
  return r->host->str;
}

/* The conflict order: (seq, host name bytewise, pid). */
static int key_cmp(uint64_t sa, const char *ha, size_t la, rusm_pid_t pa,
                   uint64_t sb, const char *hb, size_t lb, rusm_pid_t pb) {
  if (sa != sb)
    return sa < sb ? -1 : 1;
  int c = memcmp(ha, hb, la < lb ? la : lb);
  if (c != 0)
    return c < 0 ? -1 : 1;
  if (la != lb)
    return la < lb ? -1 : 1;
  if (pa != pb)
    return pa < pb ? -1 : 1;
  return 0;
}

static int rec_cmp(const rusm__greg *g, const greg_rec *a, const greg_rec *b) {
  size_t la, lb;
  const char *ha = rec_host(g, a, &la), *hb = rec_host(g, b, &lb);
  return key_cmp(a->seq, ha, la, a->pid, b->seq, hb, lb, b->pid);
}

static void put_le(uint8_t **p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; i++)
    (*p)[i] = (uint8_t)(v >> (8 * i));
  *p += n;
}

static void put_bytes(uint8_t **p, const void *s, size_t n) {
  if (n)
    memcpy(*p, s, n);
  *p += n;
}

/* ------------------------------------------------------------------ */
/* Names                                                               */
/* ------------------------------------------------------------------ */

static greg_name *name_find(const rusm__greg *g, const char *s, size_t n) {
  uint64_t h = hash_bytes(s, n);
  for (greg_name *nm = g->buckets[h & (g->nbuckets - 1)]; nm; nm = nm->chain)
    if (nm->hash == h && nm->len == n && memcmp(nm->str, s, n) == 0)
      return nm;
  return NULL;
}

static greg_name *name_alloc(const char *s, size_t n) {
  greg_name *nm = rusm__xmalloc(sizeof *nm + n + 1);
  if (!nm)
    return NULL;
  memset(nm, 0, sizeof *nm);
  nm->hash = hash_bytes(s, n);
  nm->len = n;
  memcpy(nm->str, s, n);
  nm->str[n] = '\0';
  return nm;
}

static void name_link(rusm__greg *g, greg_name *nm) {
  if (g->nnames >= g->nbuckets &&
      g->nbuckets <= SIZE_MAX / 2 / sizeof(greg_name *)) {
    /* Grow at load 1; without memory, longer chains do (no error). */
    size_t nb = g->nbuckets * 2;
    greg_name **b = rusm__xcalloc(nb, sizeof(greg_name *));
    if (b) {
      for (size_t i = 0; i < g->nbuckets; i++) {
        while (g->buckets[i]) {
          greg_name *e = g->buckets[i];
          g->buckets[i] = e->chain;
          e->chain = b[e->hash & (nb - 1)];
          b[e->hash & (nb - 1)] = e;
        }
      }
      rusm__xfree((void *)g->buckets);
      g->buckets = b;
      g->nbuckets = nb;
    }
  }
  greg_name **head = &g->buckets[nm->hash & (g->nbuckets - 1)];
  nm->chain = *head;
  *head = nm;
  g->nnames++;
}

static void name_unlink_free(rusm__greg *g, greg_name *nm) {
  greg_name **pp = &g->buckets[nm->hash & (g->nbuckets - 1)];
  while (*pp != nm)
    pp = &(*pp)->chain;
  *pp = nm->chain;
  g->nnames--;
  rusm__xfree(nm);
}

static greg_rec *name_holder(const greg_name *nm) {
  for (greg_rec *r = nm->recs; r; r = r->next)
    if (!r->released)
      return r;
  return NULL;
}

static rusm_pid_t holder_pid(const greg_name *nm) {
  const greg_rec *r = nm ? name_holder(nm) : NULL;
  return r ? r->pid : RUSM_PID_NONE;
}

/* ------------------------------------------------------------------ */
/* Events and transmits                                                */
/* ------------------------------------------------------------------ */

static greg_ev *ev_alloc(rusm__greg_event_kind kind, const char *name, size_t n,
                         rusm_pid_t pid) {
  greg_ev *e = rusm__xmalloc(sizeof *e);
  if (!e)
    return NULL;
  memset(e, 0, sizeof *e);
  e->ev.kind = kind;
  e->ev.pid = pid;
  memcpy(e->ev.name, name, n);
  e->ev.name[n] = '\0';
  return e;
}

static void ev_push(rusm__greg *g, greg_ev *e) {
  e->next = NULL;
  *g->evtail = e;
  g->evtail = &e->next;
}

/* Observer events for a change of holder (best effort). */
static void observe(rusm__greg *g, const char *name, size_t n,
                    rusm_pid_t before, rusm_pid_t after) {
  if (!g->observe || before == after)
    return;
  if (before != RUSM_PID_NONE) {
    greg_ev *e = ev_alloc(RUSM__GREG_NAME_RELEASED, name, n, before);
    if (e)
      ev_push(g, e);
    else
      g->st.events_dropped++;
  }
  if (after != RUSM_PID_NONE) {
    greg_ev *e = ev_alloc(RUSM__GREG_NAME_REGISTERED, name, n, after);
    if (e)
      ev_push(g, e);
    else
      g->st.events_dropped++;
  }
}

static void tx_free(greg_tx *t) {
  if (!t)
    return;
  rusm__xfree(t->to);
  rusm__xfree(t->data);
  rusm__xfree(t);
}

/* A transmit of len bytes (to filled in, data left to the caller). */
static greg_tx *tx_alloc(const char *to, size_t len) {
  greg_tx *t = rusm__xmalloc(sizeof *t);
  if (!t)
    return NULL;
  memset(t, 0, sizeof *t);
  t->len = len;
  t->data = rusm__xmalloc(len);
  if (to) {
    size_t n = strlen(to);
    t->to = rusm__xmalloc(n + 1);
    if (t->to)
      memcpy(t->to, to, n + 1);
  }
  if (!t->data || (to && !t->to)) {
    tx_free(t);
    return NULL;
  }
  return t;
}

static void tx_push(rusm__greg *g, greg_tx *t) {
  t->next = NULL;
  *g->txtail = t;
  g->txtail = &t->next;
}

/* The release of this node's claim r at rel_seq, for every member. */
static greg_tx *release_tx(const rusm__greg *g, const greg_rec *r,
                           uint64_t rel_seq) {
  const greg_name *nm = r->nm;
  size_t len = HEAD_LEN + 1 + nm->len + 1 + g->self_len + 8;
  greg_tx *t = tx_alloc(NULL, len);
  if (!t)
    return NULL;
  uint8_t *p = t->data;
  put_le(&p, RUSM__GREG_VERSION, 1);
  put_le(&p, RUSM__GREG_RELEASE, 1);
  put_le(&p, r->seq, 8);
  put_le(&p, r->pid, 8);
  put_le(&p, g->self_id, 2);
  put_le(&p, g->self_boot, 8);
  put_le(&p, nm->len, 1);
  put_bytes(&p, nm->str, nm->len);
  put_le(&p, g->self_len, 1);
  put_bytes(&p, g->self, g->self_len);
  put_le(&p, rel_seq, 8);
  assert((size_t)(p - t->data) == len);
  return t;
}

/* ------------------------------------------------------------------ */
/* Records                                                             */
/* ------------------------------------------------------------------ */

static void rec_insert(const rusm__greg *g, greg_name *nm, greg_rec *r) {
  greg_rec **pp = &nm->recs;
  while (*pp && rec_cmp(g, *pp, r) < 0)
    pp = &(*pp)->next;
  r->nm = nm;
  r->next = *pp;
  *pp = r;
}

static void host_link(greg_rec **head, greg_rec *r) {
  r->hprev = NULL;
  r->hnext = *head;
  if (*head)
    (*head)->hprev = r;
  *head = r;
}

static void tomb_push(rusm__greg *g, greg_rec *r) {
  r->tnext = NULL;
  r->tprev = g->ttail;
  if (g->ttail)
    g->ttail->tnext = r;
  else
    g->thead = r;
  g->ttail = r;
  g->ntombs++;
}

/* Unlinks r from everything and frees it (and its name when that was the
 * name's last record). Returns true when the name was freed too. */
static bool rec_remove(rusm__greg *g, greg_rec *r) {
  greg_name *nm = r->nm;
  greg_rec **pp = &nm->recs;
  while (*pp != r)
    pp = &(*pp)->next;
  *pp = r->next;

  greg_rec **head = r->host ? &r->host->recs : &g->own;
  if (r->hprev)
    r->hprev->hnext = r->hnext;
  else
    *head = r->hnext;
  if (r->hnext)
    r->hnext->hprev = r->hprev;

  if (r->released) {
    if (r->tprev)
      r->tprev->tnext = r->tnext;
    else
      g->thead = r->tnext;
    if (r->tnext)
      r->tnext->tprev = r->tprev;
    else
      g->ttail = r->tprev;
    g->ntombs--;
  }
  if (r->host) {
    g->nrecords--;
  } else {
    bool had = rusm__map_del(&g->own_by_pid, r->pid, NULL);
    assert(had);
    (void)had;
    g->nown--;
  }
  rusm__xfree(r->msg);
  rusm__xfree(r);
  if (nm->recs)
    return false;
  name_unlink_free(g, nm);
  return true;
}

/* rec_remove with observer events for the name's change of holder. */
static void rec_drop(rusm__greg *g, greg_rec *r) {
  if (!g->observe) {
    (void)rec_remove(g, r);
    return;
  }
  char name[RUSM_NAME_MAX + 1];
  greg_name *nm = r->nm;
  size_t n = nm->len;
  memcpy(name, nm->str, n);
  rusm_pid_t before = holder_pid(nm);
  bool gone = rec_remove(g, r);
  observe(g, name, n, before, gone ? RUSM_PID_NONE : holder_pid(nm));
}

/* Drops the oldest tombstones past max_tombstones into their host's floor:
 * in-order delivery from each host means no claim older than one of its
 * releases is still on the way (see the internals doc). */
static void tomb_trim(rusm__greg *g) {
  while (g->ntombs > g->max_tombs) {
    greg_rec *r = g->thead;
    assert(r && r->released && r->host);
    if (r->seq > r->host->floor)
      r->host->floor = r->seq;
    (void)rec_remove(g, r); /* a tombstone holds nothing: no event */
    g->st.tombstones_dropped++;
  }
}

/* ------------------------------------------------------------------ */
/* Members                                                             */
/* ------------------------------------------------------------------ */

static greg_member *member_find(const rusm__greg *g, const char *s, size_t n) {
  for (greg_member *m = g->members; m; m = m->next)
    if (m->len == n && memcmp(m->str, s, n) == 0)
      return m;
  return NULL;
}

/* Forgets m and everything it hosted. */
static void member_drop(rusm__greg *g, greg_member *m) {
  while (m->recs)
    rec_drop(g, m->recs);
  greg_member **pp = &g->members;
  while (*pp != m)
    pp = &(*pp)->next;
  *pp = m->next;
  g->nmembers--;
  rusm__xfree(m);
}

/* ------------------------------------------------------------------ */
/* Creation                                                            */
/* ------------------------------------------------------------------ */

int rusm__greg_new(const rusm__greg_config *cfg, rusm__greg **out) {
  if (!cfg || !out)
    return RUSM_EINVAL;
  *out = NULL;
  size_t n = name_len_ok(cfg->node_name);
  if (n == 0 || cfg->node_id == 0 || cfg->node_id > RUSM_NODE_ID_MAX ||
      !cfg->sign || !cfg->verify || cfg->proof_len > RUSM__GREG_PROOF_MAX ||
      (cfg->proof_len && !cfg->proof))
    return RUSM_EINVAL;
  rusm__greg *g = rusm__xcalloc(1, sizeof *g);
  if (!g)
    return RUSM_ENOMEM;
  memcpy(g->self, cfg->node_name, n);
  g->self[n] = '\0';
  g->self_len = n;
  g->self_id = cfg->node_id;
  g->self_boot = cfg->boot_id;
  g->sign = cfg->sign;
  g->verify = cfg->verify;
  g->crypto_ctx = cfg->crypto_ctx;
  g->max_tombs =
      cfg->max_tombstones ? cfg->max_tombstones : RUSM__GREG_DEFAULT_TOMBSTONES;
  g->max_records =
      cfg->max_records ? cfg->max_records : RUSM__GREG_DEFAULT_RECORDS;
  g->observe = cfg->observe;
  g->txtail = &g->txhead;
  g->evtail = &g->evhead;
  g->nbuckets = NAME_BUCKETS_MIN;
  g->buckets = rusm__xcalloc(g->nbuckets, sizeof(greg_name *));
  g->proof_len = cfg->proof_len;
  if (cfg->proof_len) {
    g->proof = rusm__xmalloc(cfg->proof_len);
    if (g->proof)
      memcpy(g->proof, cfg->proof, cfg->proof_len);
  }
  if (!g->buckets || (cfg->proof_len && !g->proof)) {
    rusm__greg_free(g);
    return RUSM_ENOMEM;
  }
  *out = g;
  return 0;
}

void rusm__greg_free(rusm__greg *g) {
  if (!g)
    return;
  for (size_t i = 0; g->buckets && i < g->nbuckets; i++) {
    greg_name *nm = g->buckets[i];
    while (nm) {
      greg_name *nx = nm->chain;
      for (greg_rec *r = nm->recs, *rn; r; r = rn) {
        rn = r->next;
        rusm__xfree(r->msg);
        rusm__xfree(r);
      }
      rusm__xfree(nm);
      nm = nx;
    }
  }
  rusm__xfree((void *)g->buckets);
  for (greg_member *m = g->members, *mn; m; m = mn) {
    mn = m->next;
    rusm__xfree(m);
  }
  for (greg_tx *t = g->txhead, *tn; t; t = tn) {
    tn = t->next;
    tx_free(t);
  }
  for (greg_ev *e = g->evhead, *en; e; e = en) {
    en = e->next;
    rusm__xfree(e);
  }
  rusm__map_free(&g->own_by_pid);
  rusm__xfree(g->proof);
  rusm__xfree(g);
}

/* ------------------------------------------------------------------ */
/* Names: local operations                                             */
/* ------------------------------------------------------------------ */

int rusm__greg_register(rusm__greg *g, const char *name, rusm_pid_t pid) {
  size_t n = name_len_ok(name);
  if (!g || n == 0 || pid == RUSM_PID_NONE || rusm_pid_node(pid) != g->self_id)
    return RUSM_EINVAL;
  greg_name *nm = name_find(g, name, n);
  if (nm && name_holder(nm))
    return RUSM_EEXIST;
  if (rusm__map_get(&g->own_by_pid, pid, NULL))
    return RUSM_EBUSY;
  if (g->clock >= RUSM__GREG_SEQ_MAX)
    return RUSM_ELIMIT;
  uint64_t seq = g->clock + 1;

  /* The signed bytes: domain tag, then the claim up to its signature. */
  uint8_t buf[SIGNED_MAX];
  uint8_t *p = buf;
  put_bytes(&p, RUSM__GREG_SIGN_DOMAIN, DOMAIN_LEN);
  put_le(&p, RUSM__GREG_VERSION, 1);
  put_le(&p, RUSM__GREG_CLAIM, 1);
  put_le(&p, seq, 8);
  put_le(&p, pid, 8);
  put_le(&p, g->self_id, 2);
  put_le(&p, g->self_boot, 8);
  put_le(&p, n, 1);
  put_bytes(&p, name, n);
  put_le(&p, g->self_len, 1);
  put_bytes(&p, g->self, g->self_len);
  put_le(&p, g->proof_len, 2);
  put_bytes(&p, g->proof, g->proof_len);
  size_t signed_len = (size_t)(p - buf);
  uint8_t sig[RUSM__GREG_SIG_MAX];
  size_t sig_len = sizeof sig;
  if (g->sign(g->crypto_ctx, buf, signed_len, sig, &sig_len) != 0 ||
      sig_len == 0 || sig_len > sizeof sig)
    return RUSM_EGREG_SIGN;

  size_t body = signed_len - DOMAIN_LEN;
  size_t msg_len = body + 2 + sig_len;
  greg_rec *r = rusm__xcalloc(1, sizeof *r);
  uint8_t *msg = rusm__xmalloc(msg_len);
  greg_tx *tx = tx_alloc(NULL, msg_len);
  greg_name *fresh = nm ? NULL : name_alloc(name, n);
  if (!r || !msg || !tx || (!nm && !fresh) ||
      rusm__map_reserve(&g->own_by_pid, 1) != 0) {
    rusm__xfree(r);
    rusm__xfree(msg);
    tx_free(tx);
    rusm__xfree(fresh);
    return RUSM_ENOMEM;
  }
  p = msg;
  put_bytes(&p, buf + DOMAIN_LEN, body);
  put_le(&p, sig_len, 2);
  put_bytes(&p, sig, sig_len);
  memcpy(tx->data, msg, msg_len);

  if (fresh) {
    name_link(g, fresh);
    nm = fresh;
  }
  r->seq = seq;
  r->pid = pid;
  r->msg = msg;
  r->msg_len = msg_len;
  rec_insert(g, nm, r);
  host_link(&g->own, r);
  int put = rusm__map_put(&g->own_by_pid, pid, (uint64_t)(uintptr_t)r);
  assert(put == 1); /* room reserved above */
  (void)put;
  g->nown++;
  g->clock = seq;
  tx_push(g, tx);
  observe(g, nm->str, nm->len, RUSM_PID_NONE, pid);
  return 0;
}

/* Releases this node's claim r: a release for every member, then gone. */
static int release_local(rusm__greg *g, greg_rec *r) {
  assert(!r->host);
  greg_tx *tx = release_tx(g, r, g->clock + 1);
  if (!tx)
    return RUSM_ENOMEM;
  g->clock++;
  tx_push(g, tx);
  rec_drop(g, r);
  return 0;
}

int rusm__greg_unregister(rusm__greg *g, const char *name) {
  size_t n = name_len_ok(name);
  if (!g || n == 0)
    return RUSM_EINVAL;
  greg_name *nm = name_find(g, name, n);
  greg_rec *r = nm ? name_holder(nm) : NULL;
  if (!r)
    return RUSM_ENOTFOUND;
  if (r->host)
    return RUSM_EGREG_NOTOWNER;
  return release_local(g, r);
}

int rusm__greg_local_process_exited(rusm__greg *g, rusm_pid_t pid) {
  if (!g || pid == RUSM_PID_NONE || rusm_pid_node(pid) != g->self_id)
    return RUSM_EINVAL;
  uint64_t v;
  if (!rusm__map_get(&g->own_by_pid, pid, &v))
    return RUSM_ENOTFOUND;
  return release_local(g, (greg_rec *)(uintptr_t)v);
}

rusm_pid_t rusm__greg_whereis(const rusm__greg *g, const char *name) {
  size_t n = name_len_ok(name);
  if (!g || n == 0)
    return RUSM_PID_NONE;
  return holder_pid(name_find(g, name, n));
}

int rusm__greg_registered(const rusm__greg *g, rusm_reg_entry *out,
                          size_t cap) {
  if (!g || (cap && !out))
    return RUSM_EINVAL;
  size_t total = 0;
  for (size_t i = 0; i < g->nbuckets; i++) {
    for (const greg_name *nm = g->buckets[i]; nm; nm = nm->chain) {
      const greg_rec *r = name_holder(nm);
      if (!r)
        continue;
      if (total < cap) {
        memcpy(out[total].name, nm->str, nm->len + 1);
        out[total].pid = r->pid;
      }
      total++;
    }
  }
  return total > INT32_MAX ? INT32_MAX : (int)total;
}

/* ------------------------------------------------------------------ */
/* Membership                                                          */
/* ------------------------------------------------------------------ */

int rusm__greg_member_up(rusm__greg *g, const char *name, uint16_t id,
                         uint64_t boot) {
  size_t n = name_len_ok(name);
  if (!g || n == 0 || id == 0 || id > RUSM_NODE_ID_MAX || id == g->self_id ||
      (n == g->self_len && memcmp(name, g->self, n) == 0))
    return RUSM_EINVAL;
  for (const greg_member *o = g->members; o; o = o->next)
    if (o->id == id && !(o->len == n && memcmp(o->str, name, n) == 0))
      return RUSM_EEXIST;
  greg_member *old = member_find(g, name, n);
  bool same = old && old->id == id && old->boot == boot;

  /* Full sync: every claim of this node, as signed. */
  greg_tx *sync = NULL, **tail = &sync;
  for (const greg_rec *r = g->own; r; r = r->hnext) {
    greg_tx *t = tx_alloc(name, r->msg_len);
    if (!t)
      goto nomem;
    memcpy(t->data, r->msg, r->msg_len);
    *tail = t;
    tail = &t->next;
  }
  greg_member *m = NULL;
  if (!same) {
    m = rusm__xmalloc(sizeof *m + n + 1);
    if (!m)
      goto nomem;
    memset(m, 0, sizeof *m);
    m->id = id;
    m->boot = boot;
    m->len = n;
    memcpy(m->str, name, n);
    m->str[n] = '\0';
  }

  if (m) {
    if (old)
      member_drop(g, old); /* another incarnation: what it held is gone */
    m->next = g->members;
    g->members = m;
    g->nmembers++;
  }
  for (greg_tx *t = sync, *tn; t; t = tn) {
    tn = t->next;
    tx_push(g, t);
  }
  return 0;

nomem:
  for (greg_tx *t = sync, *tn; t; t = tn) {
    tn = t->next;
    tx_free(t);
  }
  return RUSM_ENOMEM;
}

int rusm__greg_member_down(rusm__greg *g, const char *name, uint64_t boot) {
  size_t n = name_len_ok(name);
  if (!g || n == 0)
    return RUSM_EINVAL;
  greg_member *m = member_find(g, name, n);
  if (!m || m->boot != boot)
    return RUSM_ENOTFOUND;
  member_drop(g, m);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Messages                                                            */
/* ------------------------------------------------------------------ */

typedef struct greg_in {
  uint8_t kind;
  uint64_t seq;     /* the claim's */
  uint64_t rel_seq; /* RELEASE */
  rusm_pid_t pid;
  uint16_t host_id;
  uint64_t boot;
  size_t name_len, host_len;
  char name[RUSM_NAME_MAX + 1];
  char host[RUSM__GREG_NODE_NAME_MAX + 1];
  const uint8_t *proof; /* CLAIM */
  size_t proof_len;
  const uint8_t *sig;
  size_t sig_len;
  size_t signed_len; /* bytes of the message under the signature */
} greg_in;

typedef struct greg_rd {
  const uint8_t *p;
  size_t left;
  bool bad;
} greg_rd;

static const uint8_t *rd_take(greg_rd *r, size_t n) {
  if (r->bad || r->left < n) {
    r->bad = true;
    return NULL;
  }
  const uint8_t *p = r->p;
  r->p += n;
  r->left -= n;
  return p;
}

static uint64_t rd_le(greg_rd *r, size_t n) {
  const uint8_t *p = rd_take(r, n);
  uint64_t v = 0;
  for (size_t i = 0; p && i < n; i++)
    v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* A name field: u8 length (1..255), bytes without NUL. */
static bool rd_name(greg_rd *r, char *out, size_t *len) {
  size_t n = (size_t)rd_le(r, 1);
  const uint8_t *p = rd_take(r, n);
  if (!p || n == 0 || memchr(p, 0, n))
    return false;
  memcpy(out, p, n);
  out[n] = '\0';
  *len = n;
  return true;
}

static int decode(const uint8_t *data, size_t len, greg_in *in) {
  greg_rd r = {data, len, false};
  if (rd_le(&r, 1) != RUSM__GREG_VERSION)
    return RUSM_EGREG_BADMSG;
  in->kind = (uint8_t)rd_le(&r, 1);
  if (in->kind != RUSM__GREG_CLAIM && in->kind != RUSM__GREG_RELEASE)
    return RUSM_EGREG_BADMSG;
  in->seq = rd_le(&r, 8);
  in->pid = rd_le(&r, 8);
  in->host_id = (uint16_t)rd_le(&r, 2);
  in->boot = rd_le(&r, 8);
  if (r.bad || in->seq == 0 || in->seq > RUSM__GREG_SEQ_MAX ||
      in->pid == RUSM_PID_NONE || in->host_id == 0 ||
      in->host_id > RUSM_NODE_ID_MAX)
    return RUSM_EGREG_BADMSG;
  if (!rd_name(&r, in->name, &in->name_len) ||
      !rd_name(&r, in->host, &in->host_len))
    return RUSM_EGREG_BADMSG;
  if (in->kind == RUSM__GREG_CLAIM) {
    in->proof_len = (size_t)rd_le(&r, 2);
    in->proof = rd_take(&r, in->proof_len);
    in->signed_len = len - r.left;
    in->sig_len = (size_t)rd_le(&r, 2);
    in->sig = rd_take(&r, in->sig_len);
    if (r.bad || in->proof_len > RUSM__GREG_PROOF_MAX || in->sig_len == 0 ||
        in->sig_len > RUSM__GREG_SIG_MAX)
      return RUSM_EGREG_BADMSG;
  } else {
    in->rel_seq = rd_le(&r, 8);
    if (r.bad || in->rel_seq <= in->seq || in->rel_seq > RUSM__GREG_REL_SEQ_MAX)
      return RUSM_EGREG_BADMSG;
  }
  return r.left == 0 ? 0 : RUSM_EGREG_BADMSG;
}

/* Only a claim's host speaks for it, from its current incarnation, for its
 * own processes: the member the message binds to, or NULL. */
static greg_member *bind_host(const rusm__greg *g, const char *from,
                              const greg_in *in) {
  if (strcmp(from, in->host) != 0)
    return NULL;
  greg_member *m = member_find(g, in->host, in->host_len);
  if (!m || m->id != in->host_id || m->boot != in->boot ||
      rusm_pid_node(in->pid) != in->host_id)
    return NULL;
  return m;
}

static greg_rec *rec_find(const greg_name *nm, const greg_member *m,
                          uint64_t seq) {
  for (greg_rec *r = nm ? nm->recs : NULL; r; r = r->next)
    if (r->host == m && r->seq == seq)
      return r;
  return NULL;
}

static int handle_claim(rusm__greg *g, const greg_in *in, const uint8_t *data,
                        greg_member *m) {
  uint8_t buf[SIGNED_MAX];
  assert(DOMAIN_LEN + in->signed_len <= sizeof buf);
  memcpy(buf, RUSM__GREG_SIGN_DOMAIN, DOMAIN_LEN);
  memcpy(buf + DOMAIN_LEN, data, in->signed_len);
  if (!g->verify(g->crypto_ctx, m->str, in->proof, in->proof_len, buf,
                 DOMAIN_LEN + in->signed_len, in->sig, in->sig_len)) {
    g->st.rejected_signature++;
    return RUSM_EGREG_SIG;
  }
  greg_name *nm = name_find(g, in->name, in->name_len);
  greg_rec *known = rec_find(nm, m, in->seq);
  if (known) {
    if (known->released)
      g->st.stale++;
    else
      g->st.duplicates++;
    return 0;
  }
  if (in->seq <= m->floor) {
    g->st.stale++;
    return 0;
  }
  if (g->nrecords >= g->max_records) {
    g->st.rejected_limit++;
    return RUSM_ELIMIT;
  }

  /* Does it beat this node's own claim (always live) of the name? */
  greg_rec *mine = NULL;
  for (greg_rec *r = nm ? nm->recs : NULL; r && !mine; r = r->next)
    if (!r->host)
      mine = r;
  bool lose = false;
  if (mine) {
    size_t ml;
    const char *mh = rec_host(g, mine, &ml);
    lose = key_cmp(in->seq, m->str, m->len, in->pid, mine->seq, mh, ml,
                   mine->pid) < 0;
  }
  uint64_t clock = clock_after(g->clock, in->seq);

  greg_rec *r = rusm__xcalloc(1, sizeof *r);
  greg_name *fresh = nm ? NULL : name_alloc(in->name, in->name_len);
  greg_tx *tx = lose ? release_tx(g, mine, clock + 1) : NULL;
  greg_ev *lost =
      lose ? ev_alloc(RUSM__GREG_NAME_LOST, in->name, in->name_len, mine->pid)
           : NULL;
  if (!r || (!nm && !fresh) || (lose && (!tx || !lost))) {
    rusm__xfree(r);
    rusm__xfree(fresh);
    tx_free(tx);
    rusm__xfree(lost);
    return RUSM_ENOMEM;
  }

  if (fresh) {
    name_link(g, fresh);
    nm = fresh;
  }
  rusm_pid_t before = holder_pid(nm);
  r->host = m;
  r->seq = in->seq;
  r->pid = in->pid;
  rec_insert(g, nm, r);
  host_link(&m->recs, r);
  g->nrecords++;
  g->clock = clock;
  g->st.claims_accepted++;
  for (const greg_rec *o = nm->recs; o; o = o->next) {
    if (!o->released && o->host != m) {
      g->st.conflicts_resolved++;
      break;
    }
  }
  if (lose) {
    /* Withdraw: every member hears it, as it hears every release. */
    g->clock = clock + 1;
    tx_push(g, tx);
    ev_push(g, lost);
    g->st.names_lost++;
    bool gone = rec_remove(g, mine);
    assert(!gone); /* r is still there */
    (void)gone;
  }
  observe(g, nm->str, nm->len, before, holder_pid(nm));
  return 0;
}

static int handle_release(rusm__greg *g, const greg_in *in, greg_member *m) {
  greg_name *nm = name_find(g, in->name, in->name_len);
  greg_rec *r = rec_find(nm, m, in->seq);
  if (r && r->pid != in->pid) {
    g->st.rejected_mismatch++;
    return RUSM_EGREG_MISMATCH;
  }
  if ((r && r->released) || (!r && in->seq <= m->floor)) {
    g->st.duplicates++;
    return 0;
  }
  rusm_pid_t before = holder_pid(nm);
  if (!r) {
    /* Release before claim (reordered): the tombstone waits for it. */
    if (g->nrecords >= g->max_records) {
      g->st.rejected_limit++;
      return RUSM_ELIMIT;
    }
    r = rusm__xcalloc(1, sizeof *r);
    greg_name *fresh = nm ? NULL : name_alloc(in->name, in->name_len);
    if (!r || (!nm && !fresh)) {
      rusm__xfree(r);
      rusm__xfree(fresh);
      return RUSM_ENOMEM;
    }
    if (fresh) {
      name_link(g, fresh);
      nm = fresh;
    }
    r->host = m;
    r->seq = in->seq;
    r->pid = in->pid;
    rec_insert(g, nm, r);
    host_link(&m->recs, r);
    g->nrecords++;
  }
  r->released = true;
  r->rel_seq = in->rel_seq;
  tomb_push(g, r);
  g->clock = clock_after(g->clock, in->rel_seq);
  g->st.releases_accepted++;
  observe(g, nm->str, nm->len, before, holder_pid(nm));
  tomb_trim(g);
  return 0;
}

int rusm__greg_handle_message(rusm__greg *g, const char *from_node,
                              const uint8_t *data, size_t len) {
  if (!g || !from_node || (len && !data))
    return RUSM_EINVAL;
  greg_in in;
  memset(&in, 0, sizeof in);
  if (decode(data, len, &in) != 0) {
    g->st.rejected_malformed++;
    return RUSM_EGREG_BADMSG;
  }
  greg_member *m = bind_host(g, from_node, &in);
  if (!m) {
    g->st.rejected_mismatch++;
    return RUSM_EGREG_MISMATCH;
  }
  return in.kind == RUSM__GREG_CLAIM ? handle_claim(g, &in, data, m)
                                     : handle_release(g, &in, m);
}

bool rusm__greg_poll_transmit(rusm__greg *g, rusm__greg_transmit *out) {
  if (!g || !out || !g->txhead)
    return false;
  greg_tx *t = g->txhead;
  g->txhead = t->next;
  if (!g->txhead)
    g->txtail = &g->txhead;
  out->to = t->to;
  out->data = t->data;
  out->len = t->len;
  rusm__xfree(t);
  return true;
}

void rusm__greg_transmit_free(rusm__greg_transmit *t) {
  if (!t)
    return;
  rusm__xfree(t->to);
  rusm__xfree(t->data);
  memset(t, 0, sizeof *t);
}

bool rusm__greg_poll_event(rusm__greg *g, rusm__greg_event *out) {
  if (!g || !out || !g->evhead)
    return false;
  greg_ev *e = g->evhead;
  g->evhead = e->next;
  if (!g->evhead)
    g->evtail = &g->evhead;
  *out = e->ev;
  rusm__xfree(e);
  return true;
}

/* ------------------------------------------------------------------ */
/* Introspection                                                       */
/* ------------------------------------------------------------------ */

void rusm__greg_get_stats(const rusm__greg *g, rusm__greg_stats *out) {
  if (!g || !out)
    return;
  *out = g->st;
  out->tombstones = g->ntombs;
  out->records = g->nrecords;
  out->local_names = g->nown;
  out->members = g->nmembers;
}

uint64_t rusm__greg_clock(const rusm__greg *g) { return g ? g->clock : 0; }
