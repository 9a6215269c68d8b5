/*
 * Unit tests: the global registry state machine (src/cluster/greg.c).
 *
 * A simulated cluster of 3-5 registries exchanges messages through a queue
 * held by the test; a seeded PRNG picks delivery orders. Claims are signed
 * with a keyed hash per node (the "CA" below derives each node's key from
 * its name, and a node's "certificate" is the string "cert:<name>"), so
 * forgeries can be built by hand.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/greg.h"
#include "otp/alloc.h"
#include "rusm/otp.h"

#ifdef RUSM_SANITIZED
#define T_SCALE(full, small) (small)
#else
#define T_SCALE(full, small) (full)
#endif

#define MAXN 5
#define T_SIG_LEN 32

/* ------------------------------------------------------------------ */
/* Test crypto: a keyed hash per node                                  */
/* ------------------------------------------------------------------ */

static uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= UINT64_C(0xbf58476d1ce4e5b9);
  x ^= x >> 27;
  x *= UINT64_C(0x94d049bb133111eb);
  x ^= x >> 31;
  return x;
}

/* The key the test CA gives node `name`. */
static uint64_t name_key(const char *name) {
  uint64_t h = UINT64_C(0x5eed);
  for (const char *c = name; *c; c++)
    h = mix64(h ^ (uint8_t)*c);
  return mix64(h ^ UINT64_C(0xc0ffee));
}

static void t_mac(uint64_t key, const uint8_t *m, size_t n,
                  uint8_t out[T_SIG_LEN]) {
  for (uint64_t lane = 0; lane < 4; lane++) {
    uint64_t h = mix64(key ^ (UINT64_C(0x9e3779b97f4a7c15) * (lane + 1)));
    for (size_t i = 0; i < n; i++)
      h = mix64(h ^ m[i]);
    h = mix64(h ^ n);
    for (int b = 0; b < 8; b++)
      out[lane * 8 + (uint64_t)b] = (uint8_t)(h >> (8 * b));
  }
}

typedef struct t_node t_node;

static int t_sign(void *ctx, const uint8_t *msg, size_t n, uint8_t *sig,
                  size_t *sig_len);

/* The real verify checks that the proof chains to the CA and names
 * host_node; here the proof must read "cert:<host_node>". */
static bool t_verify(void *ctx, const char *host, const uint8_t *proof,
                     size_t proof_len, const uint8_t *msg, size_t n,
                     const uint8_t *sig, size_t sig_len) {
  (void)ctx;
  char cert[300];
  int cl = snprintf(cert, sizeof cert, "cert:%s", host);
  if (cl < 0 || proof_len != (size_t)cl || memcmp(proof, cert, proof_len) != 0)
    return false;
  uint8_t want[T_SIG_LEN];
  t_mac(name_key(host), msg, n, want);
  return sig_len == T_SIG_LEN && memcmp(sig, want, T_SIG_LEN) == 0;
}

/* ------------------------------------------------------------------ */
/* Hand-built messages (the documented layout, little-endian)          */
/* ------------------------------------------------------------------ */

typedef struct t_buf {
  uint8_t b[6000];
  size_t n;
} t_buf;

static void tb_le(t_buf *t, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; i++)
    t->b[t->n++] = (uint8_t)(v >> (8 * i));
}

static void tb_bytes(t_buf *t, const void *p, size_t n) {
  memcpy(t->b + t->n, p, n);
  t->n += n;
}

static void tb_str(t_buf *t, const char *s) {
  tb_le(t, strlen(s), 1);
  tb_bytes(t, s, strlen(s));
}

typedef struct t_claim {
  uint64_t seq;
  rusm_pid_t pid;
  uint16_t host_id;
  uint64_t boot;
  const char *name, *host;
  const char *proof; /* NULL: "cert:<host>" */
  uint64_t key;      /* 0: the host's own key */
} t_claim;

static void enc_claim(t_buf *out, const t_claim *c) {
  char cert[300];
  const char *proof = c->proof;
  if (!proof) {
    snprintf(cert, sizeof cert, "cert:%s", c->host);
    proof = cert;
  }
  t_buf s = {.n = 0};
  tb_bytes(&s, RUSM__GREG_SIGN_DOMAIN, strlen(RUSM__GREG_SIGN_DOMAIN));
  size_t body = s.n;
  tb_le(&s, 1, 1); /* version */
  tb_le(&s, RUSM__GREG_CLAIM, 1);
  tb_le(&s, c->seq, 8);
  tb_le(&s, c->pid, 8);
  tb_le(&s, c->host_id, 2);
  tb_le(&s, c->boot, 8);
  tb_str(&s, c->name);
  tb_str(&s, c->host);
  tb_le(&s, strlen(proof), 2);
  tb_bytes(&s, proof, strlen(proof));
  uint8_t sig[T_SIG_LEN];
  t_mac(c->key ? c->key : name_key(c->host), s.b, s.n, sig);
  out->n = 0;
  tb_bytes(out, s.b + body, s.n - body);
  tb_le(out, T_SIG_LEN, 2);
  tb_bytes(out, sig, T_SIG_LEN);
}

static void enc_release(t_buf *out, uint64_t seq, rusm_pid_t pid,
                        uint16_t host_id, uint64_t boot, const char *name,
                        const char *host, uint64_t rel_seq) {
  out->n = 0;
  tb_le(out, 1, 1);
  tb_le(out, RUSM__GREG_RELEASE, 1);
  tb_le(out, seq, 8);
  tb_le(out, pid, 8);
  tb_le(out, host_id, 2);
  tb_le(out, boot, 8);
  tb_str(out, name);
  tb_str(out, host);
  tb_le(out, rel_seq, 8);
}

/* ------------------------------------------------------------------ */
/* The simulated cluster                                               */
/* ------------------------------------------------------------------ */

typedef struct t_msg {
  int from, to;
  uint8_t *data;
  size_t len;
} t_msg;

typedef struct t_sim t_sim;

struct t_node {
  t_sim *sim;
  int idx;
  char name[16];
  uint16_t id;
  uint64_t boot;
  bool fail_sign;
  bool live;
  rusm__greg *g;
  rusm__greg_event *ev;
  size_t nev, evcap;
};

struct t_sim {
  int n;
  t_node node[MAXN];
  bool up[MAXN][MAXN]; /* up[i][j]: i has j as a member */
  t_msg *q;            /* in flight */
  size_t qn, qcap;
  uint64_t rng;
  size_t rejected; /* deliveries answered with an error */
  uint32_t max_tombstones;
};

static int t_sign(void *ctx, const uint8_t *msg, size_t n, uint8_t *sig,
                  size_t *sig_len) {
  t_node *nd = ctx;
  if (nd->fail_sign)
    return -1;
  assert_true(*sig_len >= T_SIG_LEN);
  t_mac(name_key(nd->name), msg, n, sig);
  *sig_len = T_SIG_LEN;
  return 0;
}

static uint64_t rnd(t_sim *s) {
  s->rng += UINT64_C(0x9e3779b97f4a7c15);
  return mix64(s->rng);
}

static rusm_pid_t pid_of(int idx, uint32_t slot) {
  return rusm_pid_make((uint16_t)(idx + 1), slot, 1);
}

static void node_start(t_sim *s, int i, uint64_t boot) {
  t_node *nd = &s->node[i];
  nd->sim = s;
  nd->idx = i;
  snprintf(nd->name, sizeof nd->name, "n%d", (i + 1) % 1000);
  nd->id = (uint16_t)(i + 1);
  nd->boot = boot;
  char cert[32];
  snprintf(cert, sizeof cert, "cert:%s", nd->name);
  rusm__greg_config cfg = {
      .node_name = nd->name,
      .node_id = nd->id,
      .boot_id = boot,
      .proof = (const uint8_t *)cert,
      .proof_len = strlen(cert),
      .sign = t_sign,
      .verify = t_verify,
      .crypto_ctx = nd,
      .max_tombstones = s->max_tombstones,
      .observe = true,
  };
  assert_int_equal(rusm__greg_new(&cfg, &nd->g), 0);
  nd->live = true;
}

static int node_by_name(const t_sim *s, const char *name) {
  for (int i = 0; i < s->n; i++)
    if (strcmp(s->node[i].name, name) == 0)
      return i;
  fail_msg("no node %s", name);
  return -1;
}

static void enqueue(t_sim *s, int from, int to, const uint8_t *d, size_t n) {
  if (s->qn == s->qcap) {
    s->qcap = s->qcap ? s->qcap * 2 : 64;
    s->q = realloc(s->q, s->qcap * sizeof *s->q);
    assert_non_null(s->q);
  }
  uint8_t *copy = malloc(n);
  assert_non_null(copy);
  memcpy(copy, d, n);
  s->q[s->qn++] = (t_msg){from, to, copy, n};
}

/* Moves node i's transmits into the queue (a broadcast goes to each member
 * i has up now) and its events into its log. */
static void collect(t_sim *s, int i) {
  t_node *nd = &s->node[i];
  rusm__greg_transmit t;
  while (rusm__greg_poll_transmit(nd->g, &t)) {
    if (t.to) {
      enqueue(s, i, node_by_name(s, t.to), t.data, t.len);
    } else {
      for (int j = 0; j < s->n; j++)
        if (s->up[i][j])
          enqueue(s, i, j, t.data, t.len);
    }
    rusm__greg_transmit_free(&t);
    rusm__greg_transmit_free(&t); /* twice is fine */
  }
  rusm__greg_event e;
  while (rusm__greg_poll_event(nd->g, &e)) {
    if (nd->nev == nd->evcap) {
      nd->evcap = nd->evcap ? nd->evcap * 2 : 16;
      nd->ev = realloc(nd->ev, nd->evcap * sizeof *nd->ev);
      assert_non_null(nd->ev);
    }
    nd->ev[nd->nev++] = e;
  }
}

/* Node i's transmits thrown away (a node whose messages never left). */
static void discard(t_sim *s, int i) {
  rusm__greg_transmit t;
  while (rusm__greg_poll_transmit(s->node[i].g, &t))
    rusm__greg_transmit_free(&t);
}

static void connect_one(t_sim *s, int i, int j) {
  t_node *b = &s->node[j];
  assert_int_equal(rusm__greg_member_up(s->node[i].g, b->name, b->id, b->boot),
                   0);
  s->up[i][j] = true;
  collect(s, i);
}

static void connect_pair(t_sim *s, int i, int j) {
  connect_one(s, i, j);
  connect_one(s, j, i);
}

static void disconnect_one(t_sim *s, int i, int j) {
  t_node *b = &s->node[j];
  assert_int_equal(rusm__greg_member_down(s->node[i].g, b->name, b->boot), 0);
  s->up[i][j] = false;
  collect(s, i);
}

static t_sim *sim_new(int n, uint64_t seed, uint32_t max_tombstones) {
  t_sim *s = calloc(1, sizeof *s);
  assert_non_null(s);
  s->n = n;
  s->rng = seed;
  s->max_tombstones = max_tombstones;
  for (int i = 0; i < n; i++)
    node_start(s, i, UINT64_C(1000) + (uint64_t)i);
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      connect_pair(s, i, j);
  return s;
}

static void node_stop(t_sim *s, int i) {
  t_node *nd = &s->node[i];
  rusm__greg_free(nd->g);
  nd->g = NULL;
  nd->live = false;
  free(nd->ev);
  nd->ev = NULL;
  nd->nev = nd->evcap = 0;
  for (int j = 0; j < MAXN; j++)
    s->up[i][j] = false;
}

static void sim_free(t_sim *s) {
  for (int i = 0; i < s->n; i++)
    if (s->node[i].live)
      node_stop(s, i);
  for (size_t k = 0; k < s->qn; k++)
    free(s->q[k].data);
  free(s->q);
  free(s);
}

/* Takes message k out of the queue (order of the rest kept). */
static t_msg take(t_sim *s, size_t k) {
  assert_true(k < s->qn);
  t_msg m = s->q[k];
  memmove(&s->q[k], &s->q[k + 1], (s->qn - k - 1) * sizeof *s->q);
  s->qn--;
  return m;
}

/* The first in-flight message from -> to, taken out. */
static t_msg take_first(t_sim *s, int from, int to) {
  for (size_t k = 0; k < s->qn; k++)
    if (s->q[k].from == from && s->q[k].to == to)
      return take(s, k);
  fail_msg("no message n%d -> n%d in flight", from + 1, to + 1);
  return (t_msg){0, 0, NULL, 0};
}

/* Delivers m (and frees it); returns handle_message's answer. */
static int deliver_msg(t_sim *s, t_msg m) {
  int rc = -1;
  if (s->node[m.to].live) {
    rc = rusm__greg_handle_message(s->node[m.to].g, s->node[m.from].name,
                                   m.data, m.len);
    if (rc != 0)
      s->rejected++;
    collect(s, m.to);
  }
  free(m.data);
  return rc;
}

static int deliver(t_sim *s, size_t k) { return deliver_msg(s, take(s, k)); }

static void run_random(t_sim *s) {
  while (s->qn)
    deliver(s, rnd(s) % s->qn);
}

static void run_fifo(t_sim *s) {
  while (s->qn)
    deliver(s, 0);
}

/* Every message in flight lost. */
static void drop_queue(t_sim *s) {
  for (size_t k = 0; k < s->qn; k++)
    free(s->q[k].data);
  s->qn = 0;
}

/* Every node's view of name is pid. */
static void expect_everywhere(t_sim *s, const char *name, rusm_pid_t pid) {
  for (int i = 0; i < s->n; i++) {
    if (!s->node[i].live)
      continue;
    rusm_pid_t got = rusm__greg_whereis(s->node[i].g, name);
    if (got != pid)
      fail_msg("%s: whereis(%s) = %#llx, want %#llx", s->node[i].name, name,
               (unsigned long long)got, (unsigned long long)pid);
  }
}

static size_t count_events(const t_node *nd, rusm__greg_event_kind kind,
                           const char *name, rusm_pid_t pid) {
  size_t c = 0;
  for (size_t k = 0; k < nd->nev; k++)
    if (nd->ev[k].kind == kind && (!name || !strcmp(nd->ev[k].name, name)) &&
        (!pid || nd->ev[k].pid == pid))
      c++;
  return c;
}

/* A snapshot of a registry's view, to check that nothing changed. */
typedef struct t_snap {
  rusm_reg_entry e[64];
  int n;
  uint64_t clock;
  rusm__greg_stats st;
} t_snap;

static int entry_cmp(const void *a, const void *b) {
  return strcmp(((const rusm_reg_entry *)a)->name,
                ((const rusm_reg_entry *)b)->name);
}

static void snap(const rusm__greg *g, t_snap *out) {
  out->n = rusm__greg_registered(g, out->e, 64);
  assert_true(out->n >= 0 && out->n <= 64);
  qsort(out->e, (size_t)out->n, sizeof out->e[0], entry_cmp);
  out->clock = rusm__greg_clock(g);
  rusm__greg_get_stats(g, &out->st);
}

static void expect_same_view(const t_snap *a, const t_snap *b) {
  assert_int_equal(a->n, b->n);
  for (int k = 0; k < a->n; k++) {
    assert_string_equal(a->e[k].name, b->e[k].name);
    assert_true(a->e[k].pid == b->e[k].pid);
  }
}

/* Nothing but the rejection counters changed. */
static void expect_unchanged(const t_snap *a, const t_snap *b) {
  expect_same_view(a, b);
  assert_true(a->clock == b->clock);
  assert_true(a->st.claims_accepted == b->st.claims_accepted);
  assert_true(a->st.releases_accepted == b->st.releases_accepted);
  assert_true(a->st.records == b->st.records);
  assert_true(a->st.tombstones == b->st.tombstones);
  assert_true(a->st.local_names == b->st.local_names);
  assert_true(a->st.names_lost == b->st.names_lost);
}

/* Every live node holds the same table. */
static void expect_tables_agree(t_sim *s) {
  t_snap first, other;
  int f = -1;
  for (int i = 0; i < s->n; i++) {
    if (!s->node[i].live)
      continue;
    if (f < 0) {
      f = i;
      snap(s->node[i].g, &first);
      continue;
    }
    snap(s->node[i].g, &other);
    expect_same_view(&first, &other);
  }
}

static void no_transmits(t_sim *s, int i) {
  rusm__greg_transmit t;
  assert_false(rusm__greg_poll_transmit(s->node[i].g, &t));
}

/* ------------------------------------------------------------------ */
/* Basics                                                              */
/* ------------------------------------------------------------------ */

static void test_register_whereis_everywhere(void **state) {
  (void)state;
  t_sim *s = sim_new(4, 1, 0);
  assert_int_equal(rusm__greg_register(s->node[0].g, "alpha", pid_of(0, 10)),
                   0);
  assert_int_equal(rusm__greg_register(s->node[0].g, "delta", pid_of(0, 11)),
                   0);
  assert_int_equal(rusm__greg_register(s->node[1].g, "beta", pid_of(1, 10)), 0);
  assert_int_equal(rusm__greg_register(s->node[2].g, "gamma", pid_of(2, 10)),
                   0);
  /* The registering node sees its own names at once. */
  assert_true(rusm__greg_whereis(s->node[0].g, "alpha") == pid_of(0, 10));
  assert_true(rusm__greg_whereis(s->node[3].g, "alpha") == RUSM_PID_NONE);
  for (int i = 0; i < 4; i++)
    collect(s, i);
  run_random(s);
  assert_int_equal(s->rejected, 0);
  expect_everywhere(s, "alpha", pid_of(0, 10));
  expect_everywhere(s, "delta", pid_of(0, 11));
  expect_everywhere(s, "beta", pid_of(1, 10));
  expect_everywhere(s, "gamma", pid_of(2, 10));
  expect_everywhere(s, "nope", RUSM_PID_NONE);
  expect_tables_agree(s);
  assert_int_equal(rusm__greg_registered(s->node[3].g, NULL, 0), 4);
  rusm_reg_entry two[2];
  assert_int_equal(rusm__greg_registered(s->node[3].g, two, 2), 4);

  rusm__greg_stats st;
  rusm__greg_get_stats(s->node[3].g, &st);
  assert_int_equal(st.claims_accepted, 4);
  assert_int_equal(st.records, 4);
  assert_int_equal(st.local_names, 0);
  assert_int_equal(st.members, 3);
  rusm__greg_get_stats(s->node[0].g, &st);
  assert_int_equal(st.local_names, 2);
  /* Observers heard of every name. */
  assert_int_equal(
      count_events(&s->node[3], RUSM__GREG_NAME_REGISTERED, NULL, 0), 4);
  sim_free(s);
}

static void test_wire_layout(void **state) {
  (void)state;
  t_sim *s = sim_new(2, 2, 0);
  t_node *a = &s->node[0];
  uint64_t seq = rusm__greg_clock(a->g) + 1;
  assert_int_equal(rusm__greg_register(a->g, "doc", pid_of(0, 7)), 0);
  collect(s, 0);
  assert_int_equal(s->qn, 1);
  t_buf want;
  enc_claim(&want, &(t_claim){seq, pid_of(0, 7), a->id, a->boot, "doc", "n1",
                              NULL, 0});
  assert_int_equal(s->q[0].len, want.n);
  assert_memory_equal(s->q[0].data, want.b, want.n);
  run_fifo(s);

  assert_int_equal(rusm__greg_unregister(a->g, "doc"), 0);
  collect(s, 0);
  assert_int_equal(s->qn, 1);
  enc_release(&want, seq, pid_of(0, 7), a->id, a->boot, "doc", "n1", seq + 1);
  assert_int_equal(s->q[0].len, want.n);
  assert_memory_equal(s->q[0].data, want.b, want.n);
  run_fifo(s);
  expect_everywhere(s, "doc", RUSM_PID_NONE);
  sim_free(s);
}

static void test_name_taken(void **state) {
  (void)state;
  t_sim *s = sim_new(3, 3, 0);
  assert_int_equal(rusm__greg_register(s->node[0].g, "svc", pid_of(0, 1)), 0);
  assert_int_equal(rusm__greg_register(s->node[0].g, "svc", pid_of(0, 2)),
                   RUSM_EEXIST);
  assert_int_equal(rusm__greg_register(s->node[0].g, "svc", pid_of(0, 1)),
                   RUSM_EEXIST);
  collect(s, 0);
  run_random(s);
  t_snap before, after;
  snap(s->node[1].g, &before);
  assert_int_equal(rusm__greg_register(s->node[1].g, "svc", pid_of(1, 1)),
                   RUSM_EEXIST);
  snap(s->node[1].g, &after);
  expect_unchanged(&before, &after);
  no_transmits(s, 1);
  expect_everywhere(s, "svc", pid_of(0, 1));
  sim_free(s);
}

static void test_one_name_per_process(void **state) {
  (void)state;
  t_sim *s = sim_new(3, 4, 0);
  rusm__greg *g = s->node[0].g;
  rusm_pid_t p = pid_of(0, 5);
  assert_int_equal(rusm__greg_register(g, "a", p), 0);
  assert_int_equal(rusm__greg_register(g, "b", p), RUSM_EBUSY);
  assert_int_equal(rusm__greg_unregister(g, "a"), 0);
  assert_int_equal(rusm__greg_register(g, "b", p), 0);
  collect(s, 0);
  run_random(s);
  expect_everywhere(s, "a", RUSM_PID_NONE);
  expect_everywhere(s, "b", p);

  /* Arguments. */
  char big[RUSM_NAME_MAX + 2];
  memset(big, 'n', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(rusm__greg_register(g, big, pid_of(0, 6)), RUSM_EINVAL);
  assert_true(rusm__greg_whereis(g, big) == RUSM_PID_NONE);
  big[RUSM_NAME_MAX] = '\0'; /* 255 bytes: fine */
  assert_int_equal(rusm__greg_register(g, big, pid_of(0, 6)), 0);
  assert_int_equal(rusm__greg_register(g, "", pid_of(0, 7)), RUSM_EINVAL);
  assert_int_equal(rusm__greg_register(g, NULL, pid_of(0, 7)), RUSM_EINVAL);
  assert_int_equal(rusm__greg_register(g, "c", RUSM_PID_NONE), RUSM_EINVAL);
  assert_int_equal(rusm__greg_register(g, "c", pid_of(1, 7)), RUSM_EINVAL);
  assert_int_equal(rusm__greg_register(NULL, "c", pid_of(0, 7)), RUSM_EINVAL);
  assert_int_equal(rusm__greg_unregister(g, ""), RUSM_EINVAL);
  assert_true(rusm__greg_whereis(g, NULL) == RUSM_PID_NONE);
  collect(s, 0);
  run_random(s);
  expect_everywhere(s, big, pid_of(0, 6));
  assert_int_equal(s->rejected, 0);
  sim_free(s);
}

static void test_unregister_owner_only(void **state) {
  (void)state;
  t_sim *s = sim_new(3, 5, 0);
  t_node *a = &s->node[0], *b = &s->node[1], *c = &s->node[2];
  uint64_t seq = rusm__greg_clock(a->g) + 1;
  assert_int_equal(rusm__greg_register(a->g, "svc", pid_of(0, 1)), 0);
  collect(s, 0);
  run_random(s);

  assert_int_equal(rusm__greg_unregister(b->g, "svc"), RUSM_EGREG_NOTOWNER);
  assert_int_equal(rusm__greg_unregister(b->g, "other"), RUSM_ENOTFOUND);
  no_transmits(s, 1);

  /* n2 tells n3 that n1 released it: only n1 speaks for its claims. */
  t_snap before, after;
  snap(c->g, &before);
  t_buf m;
  enc_release(&m, seq, pid_of(0, 1), a->id, a->boot, "svc", "n1", seq + 5);
  assert_int_equal(rusm__greg_handle_message(c->g, "n2", m.b, m.n),
                   RUSM_EGREG_MISMATCH);
  /* ... nor as the host itself, for a pid of n1. */
  enc_release(&m, seq, pid_of(0, 1), b->id, b->boot, "svc", "n2", seq + 5);
  assert_int_equal(rusm__greg_handle_message(c->g, "n2", m.b, m.n),
                   RUSM_EGREG_MISMATCH);
  /* n1 releasing a seq it holds with another pid: refused. */
  enc_release(&m, seq, pid_of(0, 2), a->id, a->boot, "svc", "n1", seq + 5);
  assert_int_equal(rusm__greg_handle_message(c->g, "n1", m.b, m.n),
                   RUSM_EGREG_MISMATCH);
  snap(c->g, &after);
  expect_unchanged(&before, &after);
  assert_int_equal(after.st.rejected_mismatch - before.st.rejected_mismatch, 3);
  no_transmits(s, 2);
  expect_everywhere(s, "svc", pid_of(0, 1));

  assert_int_equal(rusm__greg_unregister(a->g, "svc"), 0);
  assert_int_equal(rusm__greg_unregister(a->g, "svc"), RUSM_ENOTFOUND);
  collect(s, 0);
  run_random(s);
  expect_everywhere(s, "svc", RUSM_PID_NONE);
  assert_int_equal(
      count_events(c, RUSM__GREG_NAME_RELEASED, "svc", pid_of(0, 1)), 1);
  sim_free(s);
}

static void test_release_on_process_exit(void **state) {
  (void)state;
  t_sim *s = sim_new(3, 6, 0);
  t_node *b = &s->node[1];
  rusm_pid_t p = pid_of(1, 9);
  assert_int_equal(rusm__greg_register(b->g, "worker", p), 0);
  collect(s, 1);
  run_random(s);
  expect_everywhere(s, "worker", p);

  assert_int_equal(rusm__greg_local_process_exited(b->g, pid_of(1, 10)),
                   RUSM_ENOTFOUND);
  assert_int_equal(rusm__greg_local_process_exited(b->g, pid_of(0, 9)),
                   RUSM_EINVAL);
  assert_int_equal(rusm__greg_local_process_exited(b->g, p), 0);
  assert_int_equal(rusm__greg_local_process_exited(b->g, p), RUSM_ENOTFOUND);
  assert_true(rusm__greg_whereis(b->g, "worker") == RUSM_PID_NONE);
  collect(s, 1);
  run_random(s);
  expect_everywhere(s, "worker", RUSM_PID_NONE);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(
        count_events(&s->node[i], RUSM__GREG_NAME_REGISTERED, "worker", p), 1);
    assert_int_equal(
        count_events(&s->node[i], RUSM__GREG_NAME_RELEASED, "worker", p), 1);
  }
  /* The pid may take a name again (its slot is not reused here, but the
   * registry does not care). */
  assert_int_equal(rusm__greg_register(b->g, "worker2", p), 0);
  collect(s, 1);
  run_random(s);
  expect_everywhere(s, "worker2", p);
  assert_int_equal(s->rejected, 0);
  sim_free(s);
}

static void test_release_on_node_down(void **state) {
  (void)state;
  t_sim *s = sim_new(4, 7, 0);
  t_node *a = &s->node[0];
  assert_int_equal(rusm__greg_register(a->g, "x", pid_of(0, 1)), 0);
  assert_int_equal(rusm__greg_register(a->g, "y", pid_of(0, 2)), 0);
  assert_int_equal(rusm__greg_register(s->node[1].g, "z", pid_of(1, 1)), 0);
  collect(s, 0);
  collect(s, 1);
  run_random(s);
  expect_everywhere(s, "x", pid_of(0, 1));

  /* An old claim of n1's first boot, held back. */
  assert_int_equal(rusm__greg_register(a->g, "late", pid_of(0, 3)), 0);
  collect(s, 0);
  t_msg held = take_first(s, 0, 2);
  run_random(s);

  /* n1 goes away: every other node forgets what it held, no messages. */
  uint64_t old_boot = a->boot;
  for (int j = 1; j < 4; j++) {
    assert_int_equal(rusm__greg_member_down(s->node[j].g, "n1", old_boot + 1),
                     RUSM_ENOTFOUND); /* another boot: ignored */
    disconnect_one(s, j, 0);
    assert_int_equal(rusm__greg_member_down(s->node[j].g, "n1", old_boot),
                     RUSM_ENOTFOUND);
    assert_int_equal(rusm__greg_member_down(s->node[j].g, "n9", old_boot),
                     RUSM_ENOTFOUND);
    no_transmits(s, j);
    assert_true(rusm__greg_whereis(s->node[j].g, "x") == RUSM_PID_NONE);
    assert_true(rusm__greg_whereis(s->node[j].g, "y") == RUSM_PID_NONE);
    assert_true(rusm__greg_whereis(s->node[j].g, "late") == RUSM_PID_NONE);
    assert_true(rusm__greg_whereis(s->node[j].g, "z") == pid_of(1, 1));
    rusm__greg_stats st;
    rusm__greg_get_stats(s->node[j].g, &st);
    assert_int_equal(st.members, 2);
    assert_int_equal(st.records, j == 1 ? 0 : 1);
  }
  node_stop(s, 0);

  /* A claim of a host that is not a member: refused. */
  t_snap before, after;
  snap(s->node[2].g, &before);
  assert_int_equal(
      rusm__greg_handle_message(s->node[2].g, "n1", held.data, held.len),
      RUSM_EGREG_MISMATCH);

  /* n1 restarts with a new boot; the old boot's claim is still refused. */
  node_start(s, 0, old_boot + 100);
  for (int j = 1; j < 4; j++)
    connect_pair(s, 0, j);
  run_random(s);
  assert_int_equal(
      rusm__greg_handle_message(s->node[2].g, "n1", held.data, held.len),
      RUSM_EGREG_MISMATCH);
  free(held.data);
  snap(s->node[2].g, &after);
  expect_unchanged(&before, &after);
  assert_int_equal(after.st.rejected_mismatch - before.st.rejected_mismatch, 2);

  /* The new incarnation learned the table (z) and may take x again. */
  assert_true(rusm__greg_whereis(s->node[0].g, "z") == pid_of(1, 1));
  assert_int_equal(rusm__greg_register(s->node[0].g, "x", pid_of(0, 4)), 0);
  collect(s, 0);
  run_random(s);
  expect_everywhere(s, "x", pid_of(0, 4));
  expect_tables_agree(s);
  sim_free(s);
}

/* ------------------------------------------------------------------ */
/* Conflicts                                                           */
/* ------------------------------------------------------------------ */

/* Advances node i's clock by 2 with a name nobody hears of. */
static void warm(t_sim *s, int i) {
  assert_int_equal(rusm__greg_register(s->node[i].g, "warm", pid_of(i, 999)),
                   0);
  assert_int_equal(rusm__greg_unregister(s->node[i].g, "warm"), 0);
  discard(s, i);
}

typedef struct t_key {
  uint64_t seq;
  const char *host;
  rusm_pid_t pid;
} t_key;

static bool key_less(const t_key *a, const t_key *b) {
  if (a->seq != b->seq)
    return a->seq < b->seq;
  int c = strcmp(a->host, b->host);
  if (c)
    return c < 0;
  return a->pid < b->pid;
}

static bool next_perm(int *a, int n) {
  int i = n - 2;
  while (i >= 0 && a[i] >= a[i + 1])
    i--;
  if (i < 0)
    return false;
  int j = n - 1;
  while (a[j] <= a[i])
    j--;
  int t = a[i];
  a[i] = a[j];
  a[j] = t;
  for (int l = i + 1, r = n - 1; l < r; l++, r--) {
    t = a[l];
    a[l] = a[r];
    a[r] = t;
  }
  return true;
}

/* Three nodes claim "x" at once; the six claim deliveries go in the order
 * perm, and every message they cause lands at a random place of the queue.
 */
static void conflict_run(const int *perm, const int *skew, uint64_t seed) {
  t_sim *s = sim_new(3, seed, 0);
  t_key key[3];
  for (int i = 0; i < 3; i++) {
    for (int k = 0; k < skew[i]; k++)
      warm(s, i);
    key[i] = (t_key){rusm__greg_clock(s->node[i].g) + 1, s->node[i].name,
                     pid_of(i, 100 + (uint32_t)i)};
    assert_int_equal(rusm__greg_register(s->node[i].g, "x", key[i].pid), 0);
    assert_true(rusm__greg_clock(s->node[i].g) == key[i].seq);
  }
  for (int i = 0; i < 3; i++)
    collect(s, i);
  assert_int_equal(s->qn, 6);
  t_msg first[6];
  memcpy(first, s->q, sizeof first);
  for (int k = 0; k < 6; k++)
    s->q[k] = first[perm[k]];
  while (s->qn) {
    size_t before = s->qn - 1;
    deliver(s, 0);
    for (size_t k = before; k < s->qn; k++) {
      size_t to = rnd(s) % (k + 1);
      t_msg m = s->q[k];
      memmove(&s->q[to + 1], &s->q[to], (k - to) * sizeof *s->q);
      s->q[to] = m;
    }
  }
  int w = 0;
  for (int i = 1; i < 3; i++)
    if (key_less(&key[i], &key[w]))
      w = i;
  expect_everywhere(s, "x", key[w].pid);
  expect_tables_agree(s);
  for (int i = 0; i < 3; i++) {
    size_t lost = count_events(&s->node[i], RUSM__GREG_NAME_LOST, "x", 0);
    assert_int_equal(lost, i == w ? 0 : 1);
    if (i != w)
      assert_int_equal(
          count_events(&s->node[i], RUSM__GREG_NAME_LOST, "x", key[i].pid), 1);
    rusm__greg_stats st;
    rusm__greg_get_stats(s->node[i].g, &st);
    assert_int_equal(st.local_names, i == w ? 1 : 0);
    assert_int_equal(st.names_lost, i == w ? 0 : 1);
  }
  assert_int_equal(s->rejected, 0);
  sim_free(s);
}

static void test_conflict_every_order(void **state) {
  (void)state;
  /* Clock skews: equal seqs (the host name decides), and seqs that
   * differ so the lowest seq wins whatever the names. */
  static const int skews[][3] = {{0, 0, 0}, {2, 0, 1}, {0, 3, 3}, {1, 1, 0}};
  uint64_t seed = 100;
  for (size_t sk = 0; sk < sizeof skews / sizeof skews[0]; sk++) {
    int perm[6] = {0, 1, 2, 3, 4, 5};
    do {
      conflict_run(perm, skews[sk], seed++);
    } while (next_perm(perm, 6));
  }
}

/* The order itself, on one receiver: seq first, then the host name
 * bytewise (a prefix sorts first), then the pid. */
static void test_conflict_key_order(void **state) {
  (void)state;
  t_node solo = {.name = "zz"};
  rusm__greg_config cfg = {.node_name = "zz",
                           .node_id = 3,
                           .sign = t_sign,
                           .verify = t_verify,
                           .crypto_ctx = &solo};
  rusm__greg *g = NULL;
  assert_int_equal(rusm__greg_new(&cfg, &g), 0);
  assert_int_equal(rusm__greg_member_up(g, "ab", 1, 10), 0);
  assert_int_equal(rusm__greg_member_up(g, "a", 2, 20), 0);
  t_buf m;
  /* Same seq: "a" < "ab" although its pid is the larger. */
  enc_claim(&m,
            &(t_claim){4, rusm_pid_make(1, 1, 1), 1, 10, "k", "ab", NULL, 0});
  assert_int_equal(rusm__greg_handle_message(g, "ab", m.b, m.n), 0);
  assert_true(rusm__greg_whereis(g, "k") == rusm_pid_make(1, 1, 1));
  enc_claim(&m,
            &(t_claim){4, rusm_pid_make(2, 1, 1), 2, 20, "k", "a", NULL, 0});
  assert_int_equal(rusm__greg_handle_message(g, "a", m.b, m.n), 0);
  assert_true(rusm__greg_whereis(g, "k") == rusm_pid_make(2, 1, 1));
  /* A lower seq beats any name. */
  enc_claim(&m,
            &(t_claim){3, rusm_pid_make(1, 2, 1), 1, 10, "k", "ab", NULL, 0});
  assert_int_equal(rusm__greg_handle_message(g, "ab", m.b, m.n), 0);
  assert_true(rusm__greg_whereis(g, "k") == rusm_pid_make(1, 2, 1));
  /* The winner released: the next live claim in key order holds it until
   * its own host withdraws it. */
  enc_release(&m, 3, rusm_pid_make(1, 2, 1), 1, 10, "k", "ab", 5);
  assert_int_equal(rusm__greg_handle_message(g, "ab", m.b, m.n), 0);
  assert_true(rusm__greg_whereis(g, "k") == rusm_pid_make(2, 1, 1));
  rusm__greg_stats st;
  rusm__greg_get_stats(g, &st);
  assert_int_equal(st.conflicts_resolved, 2);
  assert_int_equal(st.names_lost, 0);
  rusm__greg_free(g);
}

/* Random runs: 3-5 nodes register a few names at random moments while
 * messages fly in random order. The lowest-keyed successful claim of each
 * name must hold it everywhere in the end; every other one is lost. */
static void test_conflict_random(void **state) {
  (void)state;
  static const char *const names[] = {"x", "y", "z"};
  int runs = T_SCALE(400, 150);
  for (int run = 0; run < runs; run++) {
    t_sim *s = sim_new(3 + run % 3, 7000 + (uint64_t)run, 0);
    for (int i = 0; i < s->n; i++) {
      int k = (int)(rnd(s) % 4);
      while (k--)
        warm(s, i);
    }
    t_key won[3];
    bool any[3] = {false, false, false};
    t_key claims[128];
    int who[128], nclaims = 0;
    uint32_t slot = 1;
    int actions = 40 + (int)(rnd(s) % 40);
    for (int a = 0; a < actions || s->qn; a++) {
      if (a < actions && (s->qn == 0 || rnd(s) % 3 == 0)) {
        int i = (int)(rnd(s) % (uint64_t)s->n);
        int nm = (int)(rnd(s) % 3);
        t_key k = {rusm__greg_clock(s->node[i].g) + 1, s->node[i].name,
                   pid_of(i, slot++)};
        int rc = rusm__greg_register(s->node[i].g, names[nm], k.pid);
        if (rc == RUSM_EEXIST)
          continue;
        assert_int_equal(rc, 0);
        collect(s, i);
        assert_true(nclaims < 128);
        claims[nclaims] = k;
        who[nclaims++] = i;
        if (!any[nm] || key_less(&k, &won[nm]))
          won[nm] = k;
        any[nm] = true;
      } else if (s->qn) {
        deliver(s, rnd(s) % s->qn);
      }
    }
    for (int nm = 0; nm < 3; nm++)
      expect_everywhere(s, names[nm], any[nm] ? won[nm].pid : RUSM_PID_NONE);
    expect_tables_agree(s);
    /* Each claim that did not win was lost, once, on its own node. */
    for (int c = 0; c < nclaims; c++) {
      bool winner = false;
      for (int nm = 0; nm < 3; nm++)
        winner |= any[nm] && won[nm].pid == claims[c].pid;
      assert_int_equal(count_events(&s->node[who[c]], RUSM__GREG_NAME_LOST,
                                    NULL, claims[c].pid),
                       winner ? 0 : 1);
    }
    assert_int_equal(s->rejected, 0);
    sim_free(s);
  }
}

/* Two halves of a split cluster each register "leader"; when they meet,
 * the lower key wins on every node. */
static void test_partition_merge(void **state) {
  (void)state;
  for (uint64_t seed = 0; seed < 50; seed++) {
    t_sim *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->n = 4;
    s->rng = seed;
    for (int i = 0; i < 4; i++)
      node_start(s, i, 50 + (uint64_t)i);
    connect_pair(s, 0, 1);
    connect_pair(s, 2, 3);
    /* Skew the clocks so that either side may hold the lower key. */
    for (int k = (int)(rnd(s) % 3); k > 0; k--)
      warm(s, 0);
    for (int k = (int)(rnd(s) % 3); k > 0; k--)
      warm(s, 3);
    t_key ka = {rusm__greg_clock(s->node[0].g) + 1, "n1", pid_of(0, 1)};
    t_key kb = {rusm__greg_clock(s->node[3].g) + 1, "n4", pid_of(3, 1)};
    assert_int_equal(rusm__greg_register(s->node[0].g, "leader", ka.pid), 0);
    assert_int_equal(rusm__greg_register(s->node[3].g, "leader", kb.pid), 0);
    collect(s, 0);
    collect(s, 3);
    run_random(s);
    assert_true(rusm__greg_whereis(s->node[1].g, "leader") == ka.pid);
    assert_true(rusm__greg_whereis(s->node[2].g, "leader") == kb.pid);

    for (int i = 0; i < 2; i++)
      for (int j = 2; j < 4; j++)
        connect_pair(s, i, j);
    run_random(s);
    bool a_wins = key_less(&ka, &kb);
    expect_everywhere(s, "leader", a_wins ? ka.pid : kb.pid);
    assert_int_equal(count_events(&s->node[a_wins ? 3 : 0],
                                  RUSM__GREG_NAME_LOST, "leader", 0),
                     1);
    assert_int_equal(count_events(&s->node[a_wins ? 0 : 3],
                                  RUSM__GREG_NAME_LOST, "leader", 0),
                     0);
    assert_int_equal(s->rejected, 0);
    sim_free(s);
  }
}

/* ------------------------------------------------------------------ */
/* Forgeries                                                           */
/* ------------------------------------------------------------------ */

static void test_forged_claims(void **state) {
  (void)state;
  t_sim *s = sim_new(3, 8, 0);
  t_node *a = &s->node[0], *b = &s->node[1], *c = &s->node[2];
  assert_int_equal(rusm__greg_register(a->g, "legit", pid_of(0, 1)), 0);
  collect(s, 0);
  run_random(s);

  /* A genuine claim of n1, captured on its way to n2. */
  assert_int_equal(rusm__greg_register(a->g, "relayed", pid_of(0, 2)), 0);
  collect(s, 0);
  t_msg genuine = take_first(s, 0, 1);
  t_msg to_c = take_first(s, 0, 2);
  assert_int_equal(s->qn, 0);

  t_snap before, after;
  snap(c->g, &before);
  uint64_t seq = 50;
  t_buf m;

  /* Signature bytes altered. */
  enc_claim(&m, &(t_claim){seq, pid_of(0, 9), a->id, a->boot, "forged", "n1",
                           NULL, 0});
  m.b[m.n - 1] ^= 1;
  assert_int_equal(rusm__greg_handle_message(c->g, "n1", m.b, m.n),
                   RUSM_EGREG_SIG);
  /* Signed with the right key, but the proof names another node. */
  enc_claim(&m, &(t_claim){seq, pid_of(0, 9), a->id, a->boot, "forged", "n1",
                           "cert:n2", 0});
  assert_int_equal(rusm__greg_handle_message(c->g, "n1", m.b, m.n),
                   RUSM_EGREG_SIG);
  /* n2 invents a claim for a process of n1, signing with its own key. */
  enc_claim(&m, &(t_claim){seq, pid_of(0, 9), a->id, a->boot, "forged", "n1",
                           "cert:n1", name_key("n2")});
  assert_int_equal(rusm__greg_handle_message(c->g, "n1", m.b, m.n),
                   RUSM_EGREG_SIG); /* even were it to come from n1 */
  assert_int_equal(rusm__greg_handle_message(c->g, "n2", m.b, m.n),
                   RUSM_EGREG_MISMATCH);
  /* n2 relays n1's genuine claim. */
  assert_int_equal(
      rusm__greg_handle_message(c->g, "n2", genuine.data, genuine.len),
      RUSM_EGREG_MISMATCH);
  /* n2, as itself and correctly signed, claims a pid of n1. */
  enc_claim(&m, &(t_claim){seq, pid_of(0, 9), b->id, b->boot, "forged", "n2",
                           NULL, 0});
  assert_int_equal(rusm__greg_handle_message(c->g, "n2", m.b, m.n),
                   RUSM_EGREG_MISMATCH);
  /* n2 under n1's node id. */
  enc_claim(&m, &(t_claim){seq, pid_of(0, 9), a->id, b->boot, "forged", "n2",
                           NULL, 0});
  assert_int_equal(rusm__greg_handle_message(c->g, "n2", m.b, m.n),
                   RUSM_EGREG_MISMATCH);
  /* n1's key and name, but a boot id that is not its current one. */
  enc_claim(&m, &(t_claim){seq, pid_of(0, 9), a->id, a->boot - 1, "forged",
                           "n1", NULL, 0});
  assert_int_equal(rusm__greg_handle_message(c->g, "n1", m.b, m.n),
                   RUSM_EGREG_MISMATCH);
  /* A node that is no member. */
  enc_claim(&m, &(t_claim){seq, rusm_pid_make(9, 1, 1), 9, 1, "forged", "n9",
                           NULL, 0});
  assert_int_equal(rusm__greg_handle_message(c->g, "n9", m.b, m.n),
                   RUSM_EGREG_MISMATCH);
  /* The receiver's own name. */
  enc_claim(&m, &(t_claim){seq, pid_of(2, 9), c->id, c->boot, "forged", "n3",
                           NULL, 0});
  assert_int_equal(rusm__greg_handle_message(c->g, "n3", m.b, m.n),
                   RUSM_EGREG_MISMATCH);

  snap(c->g, &after);
  expect_unchanged(&before, &after);
  assert_int_equal(after.st.rejected_signature - before.st.rejected_signature,
                   3);
  assert_int_equal(after.st.rejected_mismatch - before.st.rejected_mismatch, 7);
  assert_true(rusm__greg_whereis(c->g, "forged") == RUSM_PID_NONE);
  assert_true(rusm__greg_whereis(c->g, "relayed") == RUSM_PID_NONE);
  no_transmits(s, 2);
  assert_int_equal(count_events(c, RUSM__GREG_NAME_REGISTERED, "forged", 0), 0);

  /* The genuine copies, from n1, are fine. */
  assert_int_equal(deliver_msg(s, genuine), 0);
  assert_int_equal(deliver_msg(s, to_c), 0);
  expect_everywhere(s, "relayed", pid_of(0, 2));
  expect_everywhere(s, "legit", pid_of(0, 1));
  sim_free(s);
}

/* ------------------------------------------------------------------ */
/* Releases and tombstones                                             */
/* ------------------------------------------------------------------ */

static void test_late_stale_claim(void **state) {
  (void)state;
  t_sim *s = sim_new(3, 9, 0);
  t_node *a = &s->node[0], *c = &s->node[2];
  assert_int_equal(rusm__greg_register(a->g, "x", pid_of(0, 1)), 0);
  collect(s, 0);
  t_msg held = take_first(s, 0, 2);
  uint8_t *copy = malloc(held.len);
  assert_non_null(copy);
  memcpy(copy, held.data, held.len);
  t_msg dup = {0, 1, copy, held.len}; /* a second copy, for n2 later */
  run_random(s);

  /* n1 releases x; n3 hears the release before the claim. */
  assert_int_equal(rusm__greg_unregister(a->g, "x"), 0);
  collect(s, 0);
  run_random(s);
  rusm__greg_stats st;
  rusm__greg_get_stats(c->g, &st);
  assert_int_equal(st.tombstones, 1);
  assert_int_equal(deliver_msg(s, held), 0);
  expect_everywhere(s, "x", RUSM_PID_NONE);
  rusm__greg_get_stats(c->g, &st);
  assert_int_equal(st.stale, 1);
  assert_int_equal(st.claims_accepted, 0);
  assert_int_equal(count_events(c, RUSM__GREG_NAME_REGISTERED, "x", 0), 0);

  /* n2 takes x; n1's old claim arrives at n2 again, late: no effect. */
  assert_int_equal(rusm__greg_register(s->node[1].g, "x", pid_of(1, 1)), 0);
  collect(s, 1);
  run_random(s);
  assert_int_equal(deliver_msg(s, dup), 0);
  expect_everywhere(s, "x", pid_of(1, 1));
  rusm__greg_get_stats(s->node[1].g, &st);
  assert_int_equal(st.stale, 1);
  assert_int_equal(st.names_lost, 0);

  /* A release that arrives twice is a duplicate. */
  assert_int_equal(rusm__greg_unregister(s->node[1].g, "x"), 0);
  collect(s, 1);
  t_msg rel = take_first(s, 1, 0);
  uint8_t *copy2 = malloc(rel.len);
  assert_non_null(copy2);
  memcpy(copy2, rel.data, rel.len);
  assert_int_equal(deliver_msg(s, rel), 0);
  assert_int_equal(deliver_msg(s, (t_msg){1, 0, copy2, rel.len}), 0);
  rusm__greg_get_stats(a->g, &st);
  assert_int_equal(st.duplicates, 1);
  run_random(s);
  expect_everywhere(s, "x", RUSM_PID_NONE);
  assert_int_equal(s->rejected, 0);
  sim_free(s);
}

static void test_tombstone_bound(void **state) {
  (void)state;
  t_sim *s = sim_new(3, 10, 4);
  t_node *a = &s->node[0], *c = &s->node[2];
  t_msg held[10];
  for (int k = 0; k < 10; k++) {
    char name[16];
    snprintf(name, sizeof name, "t%d", k);
    assert_int_equal(rusm__greg_register(a->g, name, pid_of(0, 1)), 0);
    assert_int_equal(rusm__greg_unregister(a->g, name), 0);
    collect(s, 0);
    held[k] = take_first(s, 0, 2); /* the claim; its release goes on */
    run_fifo(s);
  }
  rusm__greg_stats st;
  rusm__greg_get_stats(c->g, &st);
  assert_int_equal(st.tombstones, 4);
  assert_int_equal(st.tombstones_dropped, 6);
  assert_int_equal(st.releases_accepted, 10);
  /* Late claims: the last four meet their tombstones, the first six the
   * floor they were folded into. */
  for (int k = 9; k >= 0; k--)
    assert_int_equal(deliver_msg(s, held[k]), 0);
  rusm__greg_get_stats(c->g, &st);
  assert_int_equal(st.stale, 10);
  assert_int_equal(st.claims_accepted, 0);
  assert_int_equal(rusm__greg_registered(c->g, NULL, 0), 0);

  /* n1's newer claims still go through. */
  assert_int_equal(rusm__greg_register(a->g, "t0", pid_of(0, 2)), 0);
  collect(s, 0);
  run_fifo(s);
  expect_everywhere(s, "t0", pid_of(0, 2));

  /* A release of a claim under the floor: a duplicate. */
  t_buf m;
  enc_release(&m, 1, pid_of(0, 1), a->id, a->boot, "t0", "n1", 2);
  assert_int_equal(rusm__greg_handle_message(c->g, "n1", m.b, m.n), 0);
  expect_everywhere(s, "t0", pid_of(0, 2));

  /* When n1 goes, its tombstones go with it. */
  disconnect_one(s, 2, 0);
  rusm__greg_get_stats(c->g, &st);
  assert_int_equal(st.tombstones, 0);
  assert_int_equal(st.records, 0);
  sim_free(s);
}

/* ------------------------------------------------------------------ */
/* Membership                                                          */
/* ------------------------------------------------------------------ */

static void test_new_member_gets_full_table(void **state) {
  (void)state;
  t_sim *s = sim_new(3, 11, 0);
  for (int i = 0; i < 3; i++) {
    for (uint32_t k = 0; k < 5; k++) {
      char name[32];
      snprintf(name, sizeof name, "n%d-%u", i + 1, k);
      assert_int_equal(
          rusm__greg_register(s->node[i].g, name, pid_of(i, k + 1)), 0);
    }
    collect(s, i);
  }
  run_random(s);

  /* n4 starts alone with a name of its own, then joins. */
  s->n = 4;
  node_start(s, 3, 4000);
  assert_int_equal(rusm__greg_register(s->node[3].g, "fresh", pid_of(3, 1)), 0);
  discard(s, 3); /* no members yet: nobody to tell */
  for (int j = 0; j < 3; j++)
    connect_pair(s, 3, j);
  /* n4 is sent exactly the claims each node hosts. */
  size_t to_new = 0;
  for (size_t k = 0; k < s->qn; k++)
    to_new += s->q[k].to == 3;
  assert_int_equal(to_new, 15);
  run_random(s);
  assert_int_equal(rusm__greg_registered(s->node[3].g, NULL, 0), 16);
  expect_everywhere(s, "fresh", pid_of(3, 1));
  expect_everywhere(s, "n2-3", pid_of(1, 4));
  expect_tables_agree(s);

  /* member_up again for the same incarnation: a resend, no change. */
  t_snap before, after;
  snap(s->node[3].g, &before);
  connect_one(s, 0, 3);
  assert_int_equal(s->qn, 5);
  run_random(s);
  snap(s->node[3].g, &after);
  expect_same_view(&before, &after);
  assert_int_equal(after.st.duplicates - before.st.duplicates, 5);
  assert_int_equal(s->rejected, 0);

  /* Arguments. */
  rusm__greg *g = s->node[0].g;
  assert_int_equal(rusm__greg_member_up(g, "n1", 9, 1), RUSM_EINVAL);
  assert_int_equal(rusm__greg_member_up(g, "n9", 1, 1), RUSM_EINVAL);
  assert_int_equal(rusm__greg_member_up(g, "n9", 0, 1), RUSM_EINVAL);
  assert_int_equal(rusm__greg_member_up(g, "n9", RUSM_NODE_ID_MAX + 1, 1),
                   RUSM_EINVAL);
  assert_int_equal(rusm__greg_member_up(g, "", 9, 1), RUSM_EINVAL);
  assert_int_equal(rusm__greg_member_up(g, "n9", 2, 1), RUSM_EEXIST);
  assert_int_equal(rusm__greg_member_down(g, NULL, 1), RUSM_EINVAL);
  no_transmits(s, 0);

  /* A member coming back under a new boot without a down in between:
   * what its old incarnation held is dropped. */
  s->node[1].boot += 7;
  connect_one(s, 0, 1);
  drop_queue(s);
  assert_true(rusm__greg_whereis(g, "n2-0") == RUSM_PID_NONE);
  assert_true(rusm__greg_whereis(g, "n3-0") == pid_of(2, 1));
  sim_free(s);
}

/* ------------------------------------------------------------------ */
/* Malformed input                                                     */
/* ------------------------------------------------------------------ */

static void expect_bad(t_sim *s, int to, const char *from, const uint8_t *m,
                       size_t n) {
  t_snap before, after;
  snap(s->node[to].g, &before);
  int rc = rusm__greg_handle_message(s->node[to].g, from, m, n);
  assert_true(rc < 0);
  snap(s->node[to].g, &after);
  expect_unchanged(&before, &after);
  no_transmits(s, to);
}

static void test_garbage_rejected(void **state) {
  (void)state;
  t_sim *s = sim_new(3, 12, 0);
  t_node *a = &s->node[0];
  rusm__greg *g = s->node[2].g;
  static t_buf claim, rel, m; /* zeroed: bytes past n are read below */
  enc_claim(&claim,
            &(t_claim){5, pid_of(0, 1), a->id, a->boot, "x", "n1", NULL, 0});
  enc_release(&rel, 5, pid_of(0, 1), a->id, a->boot, "x", "n1", 6);

  rusm__greg_stats st0, st;
  rusm__greg_get_stats(g, &st0);
  /* Every truncation, and one byte too many. */
  for (size_t n = 0; n < claim.n; n++) {
    assert_int_equal(rusm__greg_handle_message(g, "n1", claim.b, n),
                     RUSM_EGREG_BADMSG);
  }
  for (size_t n = 0; n < rel.n; n++) {
    assert_int_equal(rusm__greg_handle_message(g, "n1", rel.b, n),
                     RUSM_EGREG_BADMSG);
  }
  claim.b[claim.n] = 0;
  assert_int_equal(rusm__greg_handle_message(g, "n1", claim.b, claim.n + 1),
                   RUSM_EGREG_BADMSG);
  rel.b[rel.n] = 0;
  assert_int_equal(rusm__greg_handle_message(g, "n1", rel.b, rel.n + 1),
                   RUSM_EGREG_BADMSG);
  rusm__greg_get_stats(g, &st);
  assert_int_equal(st.rejected_malformed - st0.rejected_malformed,
                   claim.n + rel.n + 2);
  assert_int_equal(rusm__greg_registered(g, NULL, 0), 0);
  assert_int_equal(rusm__greg_handle_message(g, NULL, claim.b, claim.n),
                   RUSM_EINVAL);
  assert_int_equal(rusm__greg_handle_message(g, "n1", NULL, 3), RUSM_EINVAL);

  /* Fields out of range, one at a time (offsets per the layout). */
  struct {
    size_t off;
    uint8_t val;
  } pokes[] = {
      {0, 2},    /* version */
      {1, 0},    /* kind */
      {1, 3},    /* kind */
      {2, 0},    /* seq 0 (low byte of 5) */
      {9, 0x80}, /* seq past RUSM__GREG_SEQ_MAX */
      {18, 0},   /* host id 0 */
      {19, 8},   /* host id 2049 */
      {28, 0},   /* name length 0 */
      {28, 200}, /* name longer than the message */
      {29, 0},   /* NUL in the name */
      {30, 0},   /* host length 0 */
      {31, 0},   /* NUL in the host */
  };
  for (size_t k = 0; k < sizeof pokes / sizeof pokes[0]; k++) {
    m = claim;
    m.b[pokes[k].off] = pokes[k].val;
    expect_bad(s, 2, "n1", m.b, m.n);
    m = rel;
    m.b[pokes[k].off] = pokes[k].val;
    expect_bad(s, 2, "n1", m.b, m.n);
  }
  /* pid 0 */
  m = claim;
  memset(m.b + 10, 0, 8);
  expect_bad(s, 2, "n1", m.b, m.n);
  /* proof length past the limit, then the signature lengths */
  size_t proof_off = 2 + 26 + 2 + 3;
  m = claim;
  m.b[proof_off] = 0x01;
  m.b[proof_off + 1] = 0x10; /* 4097, followed by a well-formed signature */
  size_t po = proof_off + 2 + 4097;
  memset(m.b + claim.n, 0, po + 2 + T_SIG_LEN - claim.n);
  m.b[po] = T_SIG_LEN;
  expect_bad(s, 2, "n1", m.b, po + 2 + T_SIG_LEN);
  size_t sig_off = claim.n - T_SIG_LEN - 2;
  m = claim;
  m.b[sig_off] = 0;
  expect_bad(s, 2, "n1", m.b, sig_off + 2);
  m = claim;
  m.b[sig_off] = 0x01;
  m.b[sig_off + 1] = 0x02; /* 513 */
  expect_bad(s, 2, "n1", m.b, sig_off + 2 + 513);
  /* a release not after its claim */
  m = rel;
  m.b[m.n - 8] = 5;
  expect_bad(s, 2, "n1", m.b, m.n);

  /* Any single-byte change of a claim breaks its signature, its syntax or
   * its binding: always refused, nothing changes. */
  for (size_t off = 0; off < claim.n; off++) {
    for (int bit = 0; bit < 8; bit += 3) {
      m = claim;
      m.b[off] ^= (uint8_t)(1u << bit);
      expect_bad(s, 2, "n1", m.b, m.n);
    }
  }
  /* Random bytes. */
  int rounds = T_SCALE(3000, 1000);
  for (int r = 0; r < rounds; r++) {
    size_t n = rnd(s) % 120;
    for (size_t k = 0; k < n; k++)
      m.b[k] = (uint8_t)rnd(s);
    if (n > 1 && r % 2) {
      m.b[0] = 1; /* mostly get past the version and kind */
      m.b[1] = (uint8_t)(1 + r % 4 / 2);
    }
    expect_bad(s, 2, "n1", m.b, n);
  }
  /* The unaltered messages still work. */
  assert_int_equal(rusm__greg_handle_message(g, "n1", claim.b, claim.n), 0);
  assert_true(rusm__greg_whereis(g, "x") == pid_of(0, 1));
  assert_int_equal(rusm__greg_handle_message(g, "n1", rel.b, rel.n), 0);
  assert_true(rusm__greg_whereis(g, "x") == RUSM_PID_NONE);
  sim_free(s);
}

/* ------------------------------------------------------------------ */
/* Failures and limits                                                 */
/* ------------------------------------------------------------------ */

static void test_out_of_memory(void **state) {
  (void)state;
  t_sim *s = sim_new(3, 13, 0);
  t_node *a = &s->node[0], *b = &s->node[1];
  t_snap before, after;

  /* register: each failure point leaves nothing behind. */
  int fails = 0;
  for (int64_t k = 0;; k++) {
    snap(a->g, &before);
    rusm__test_fail_allocs(k);
    int rc = rusm__greg_register(a->g, "x", pid_of(0, 1));
    rusm__test_fail_allocs(-1);
    if (rc == 0)
      break;
    assert_int_equal(rc, RUSM_ENOMEM);
    snap(a->g, &after);
    expect_unchanged(&before, &after);
    no_transmits(s, 0);
    fails++;
  }
  assert_true(fails >= 4);
  collect(s, 0);
  run_fifo(s);
  expect_everywhere(s, "x", pid_of(0, 1));

  /* n2 holds y with a later key than n1's claim of y: handling n1's claim
   * makes n2 withdraw (record, release, NAME_LOST) or change nothing. */
  for (int k = 0; k < 3; k++)
    warm(s, 1);
  assert_int_equal(rusm__greg_register(b->g, "y", pid_of(1, 1)), 0);
  discard(s, 1);
  collect(s, 1); /* its events so far */
  assert_int_equal(rusm__greg_register(a->g, "y", pid_of(0, 2)), 0);
  collect(s, 0);
  t_msg claim_y = take_first(s, 0, 1);
  fails = 0;
  for (int64_t k = 0;; k++) {
    snap(b->g, &before);
    rusm__test_fail_allocs(k);
    int rc = rusm__greg_handle_message(b->g, "n1", claim_y.data, claim_y.len);
    rusm__test_fail_allocs(-1);
    if (rc == 0)
      break;
    assert_int_equal(rc, RUSM_ENOMEM);
    snap(b->g, &after);
    expect_unchanged(&before, &after);
    no_transmits(s, 1);
    rusm__greg_event e;
    assert_false(rusm__greg_poll_event(b->g, &e));
    fails++;
  }
  assert_true(fails >= 3);
  free(claim_y.data);
  collect(s, 1);
  assert_int_equal(count_events(b, RUSM__GREG_NAME_LOST, "y", pid_of(1, 1)), 1);
  assert_true(rusm__greg_whereis(b->g, "y") == pid_of(0, 2));

  /* unregister and process exit. */
  snap(a->g, &before);
  rusm__test_fail_allocs(0);
  assert_int_equal(rusm__greg_unregister(a->g, "x"), RUSM_ENOMEM);
  assert_int_equal(rusm__greg_local_process_exited(a->g, pid_of(0, 1)),
                   RUSM_ENOMEM);
  rusm__test_fail_allocs(-1);
  snap(a->g, &after);
  expect_unchanged(&before, &after);

  /* member_up with a full sync to send. */
  for (int64_t k = 0;; k++) {
    rusm__test_fail_allocs(k);
    int rc = rusm__greg_member_up(a->g, "n5", 5, 55);
    rusm__test_fail_allocs(-1);
    if (rc == 0)
      break;
    assert_int_equal(rc, RUSM_ENOMEM);
    rusm__greg_stats st;
    rusm__greg_get_stats(a->g, &st);
    assert_int_equal(st.members, 2);
    rusm__greg_transmit t;
    while (rusm__greg_poll_transmit(a->g, &t)) {
      assert_non_null(t.to);
      assert_string_not_equal(t.to, "n5");
      rusm__greg_transmit_free(&t);
    }
  }
  rusm__greg_transmit t;
  int synced = 0;
  while (rusm__greg_poll_transmit(a->g, &t)) {
    assert_string_equal(t.to, "n5");
    synced++;
    rusm__greg_transmit_free(&t);
  }
  assert_int_equal(synced, 2); /* x and y */

  /* handle_message of a release before its claim (a new tombstone). */
  t_buf m;
  enc_release(&m, 90, pid_of(1, 40), b->id, b->boot, "z", "n2", 91);
  for (int64_t k = 0;; k++) {
    snap(a->g, &before);
    rusm__test_fail_allocs(k);
    int rc = rusm__greg_handle_message(a->g, "n2", m.b, m.n);
    rusm__test_fail_allocs(-1);
    if (rc == 0)
      break;
    assert_int_equal(rc, RUSM_ENOMEM);
    snap(a->g, &after);
    expect_unchanged(&before, &after);
  }
  rusm__greg_stats st;
  rusm__greg_get_stats(a->g, &st);
  assert_int_equal(st.tombstones, 1);

  /* Creation. */
  for (int64_t k = 0; k < 3; k++) {
    rusm__greg_config cfg = {.node_name = "solo",
                             .node_id = 9,
                             .proof = (const uint8_t *)"p",
                             .proof_len = 1,
                             .sign = t_sign,
                             .verify = t_verify};
    rusm__greg *g = NULL;
    rusm__test_fail_allocs(k);
    int rc = rusm__greg_new(&cfg, &g);
    rusm__test_fail_allocs(-1);
    assert_int_equal(rc, RUSM_ENOMEM);
    assert_null(g);
  }
  sim_free(s);
}

static void test_config_and_limits(void **state) {
  (void)state;
  rusm__greg *g = NULL;
  rusm__greg_config ok = {
      .node_name = "solo", .node_id = 9, .sign = t_sign, .verify = t_verify};
  rusm__greg_config c = ok;
  assert_int_equal(rusm__greg_new(NULL, &g), RUSM_EINVAL);
  assert_int_equal(rusm__greg_new(&c, NULL), RUSM_EINVAL);
  c.node_name = NULL;
  assert_int_equal(rusm__greg_new(&c, &g), RUSM_EINVAL);
  c = ok;
  c.node_name = "";
  assert_int_equal(rusm__greg_new(&c, &g), RUSM_EINVAL);
  c = ok;
  c.node_id = 0;
  assert_int_equal(rusm__greg_new(&c, &g), RUSM_EINVAL);
  c.node_id = RUSM_NODE_ID_MAX + 1;
  assert_int_equal(rusm__greg_new(&c, &g), RUSM_EINVAL);
  c = ok;
  c.sign = NULL;
  assert_int_equal(rusm__greg_new(&c, &g), RUSM_EINVAL);
  c = ok;
  c.verify = NULL;
  assert_int_equal(rusm__greg_new(&c, &g), RUSM_EINVAL);
  c = ok;
  c.proof_len = RUSM__GREG_PROOF_MAX + 1;
  c.proof = (const uint8_t *)"x";
  assert_int_equal(rusm__greg_new(&c, &g), RUSM_EINVAL);
  c.proof = NULL;
  c.proof_len = 3;
  assert_int_equal(rusm__greg_new(&c, &g), RUSM_EINVAL);
  assert_null(g);
  rusm__greg_free(NULL);
  assert_false(rusm__greg_poll_transmit(NULL, NULL));
  assert_false(rusm__greg_poll_event(NULL, NULL));
  rusm__greg_transmit_free(NULL);

  t_sim *s = sim_new(3, 14, 0);
  t_node *a = &s->node[0], *b = &s->node[1];

  /* A failing signer: nothing registered, nothing sent. */
  t_snap before, after;
  snap(a->g, &before);
  a->fail_sign = true;
  assert_int_equal(rusm__greg_register(a->g, "x", pid_of(0, 1)),
                   RUSM_EGREG_SIGN);
  a->fail_sign = false;
  snap(a->g, &after);
  expect_unchanged(&before, &after);
  no_transmits(s, 0);

  /* max_records: a receiver that is full refuses further claims. */
  rusm__greg_free(s->node[2].g);
  rusm__greg_config small = {.node_name = "n3",
                             .node_id = 3,
                             .boot_id = s->node[2].boot,
                             .proof = (const uint8_t *)"cert:n3",
                             .proof_len = 7,
                             .sign = t_sign,
                             .verify = t_verify,
                             .crypto_ctx = &s->node[2],
                             .max_records = 2};
  assert_int_equal(rusm__greg_new(&small, &s->node[2].g), 0);
  for (int j = 0; j < 2; j++)
    connect_one(s, 2, j);
  for (uint32_t k = 0; k < 3; k++) {
    char name[16];
    snprintf(name, sizeof name, "r%u", k);
    assert_int_equal(rusm__greg_register(a->g, name, pid_of(0, 10 + k)), 0);
  }
  collect(s, 0);
  run_fifo(s);
  assert_int_equal(s->rejected, 1);
  rusm__greg_stats st;
  rusm__greg_get_stats(s->node[2].g, &st);
  assert_int_equal(st.rejected_limit, 1);
  assert_int_equal(st.records, 2);
  assert_true(rusm__greg_whereis(s->node[2].g, "r2") == RUSM_PID_NONE);
  s->rejected = 0;

  /* The Lamport clock: a peer near the top stops new claims (no wrap),
   * while releases still go out and are accepted. */
  t_buf m;
  enc_claim(&m, &(t_claim){RUSM__GREG_SEQ_MAX, pid_of(1, 1), b->id, b->boot,
                           "top", "n2", NULL, 0});
  assert_int_equal(rusm__greg_handle_message(a->g, "n2", m.b, m.n), 0);
  assert_true(rusm__greg_clock(a->g) == RUSM__GREG_SEQ_MAX);
  assert_int_equal(rusm__greg_register(a->g, "more", pid_of(0, 50)),
                   RUSM_ELIMIT);
  assert_int_equal(rusm__greg_unregister(a->g, "r0"), 0);
  assert_true(rusm__greg_clock(a->g) == RUSM__GREG_SEQ_MAX + 1);
  collect(s, 0);
  run_fifo(s);
  assert_int_equal(s->rejected, 0);
  assert_true(rusm__greg_whereis(b->g, "r0") == RUSM_PID_NONE);
  /* A release seq past the wire's limit is malformed. */
  enc_release(&m, RUSM__GREG_SEQ_MAX, pid_of(1, 1), b->id, b->boot, "top", "n2",
              RUSM__GREG_REL_SEQ_MAX + 1);
  assert_int_equal(rusm__greg_handle_message(a->g, "n2", m.b, m.n),
                   RUSM_EGREG_BADMSG);
  sim_free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_register_whereis_everywhere),
      cmocka_unit_test(test_wire_layout),
      cmocka_unit_test(test_name_taken),
      cmocka_unit_test(test_one_name_per_process),
      cmocka_unit_test(test_unregister_owner_only),
      cmocka_unit_test(test_release_on_process_exit),
      cmocka_unit_test(test_release_on_node_down),
      cmocka_unit_test(test_conflict_key_order),
      cmocka_unit_test(test_conflict_every_order),
      cmocka_unit_test(test_conflict_random),
      cmocka_unit_test(test_partition_merge),
      cmocka_unit_test(test_forged_claims),
      cmocka_unit_test(test_late_stale_claim),
      cmocka_unit_test(test_tombstone_bound),
      cmocka_unit_test(test_new_member_gets_full_table),
      cmocka_unit_test(test_garbage_rejected),
      cmocka_unit_test(test_out_of_memory),
      cmocka_unit_test(test_config_and_limits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
