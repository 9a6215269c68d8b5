/*
 * test_cluster_wire.c — the cluster frame codec (src/cluster/wire.c).
 *
 * Round trips of every kind, incremental decoding (whole buffer, byte by
 * byte, random chunks through the reader), every error class, the
 * PROCS_REPLY builder and a randomized mutation test. Random tests use a
 * fixed seed (printed), so a failure replays.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/wire.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static uint64_t rng_state;

static void rng_seed(uint64_t seed) {
  rng_state = seed;
  print_message("seed %#llx\n", (unsigned long long)seed);
}

static uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static rusm__wire_bytes B(const void *p, size_t n) {
  rusm__wire_bytes b = {n ? (const uint8_t *)p : NULL, (uint32_t)n};
  return b;
}

static rusm__wire_bytes S(const char *s) { return B(s, strlen(s)); }

static rusm_pid_t P(uint16_t node, uint32_t slot, uint32_t gen) {
  return rusm_pid_make(node, slot, gen);
}

static bool is_wire_error(int rc) {
  return rc <= RUSM_EWIRE_MAGIC && rc >= RUSM_EWIRE_FIELD;
}

/* A copy in a buffer of exactly n bytes, so ASan sees any over-read. */
static uint8_t *exact_copy(const uint8_t *p, size_t n) {
  uint8_t *c = malloc(n ? n : 1);
  assert_non_null(c);
  if (n)
    memcpy(c, p, n);
  return c;
}

/* ------------------------------------------------------------------ */
/* Sample frames: every kind, with the variants that matter            */
/* ------------------------------------------------------------------ */

#define BIG_LEN 70000 /* body length past 16 bits */
static uint8_t g_big[BIG_LEN];
static const uint8_t k_bin[] = {0, 1, 2, 0, 255, 'x', 0};

static const rusm__wire_proc k_procs[] = {
    {0x0010000000100001u,
     {(const uint8_t *)"web.acceptor", 12},
     2,
     3,
     12345,
     65536},
    {0x0010000000200001u, {NULL, 0}, 0, 0, 0, 0},
    {0x0010000000300007u,
     {(const uint8_t *)"db", 2},
     3,
     UINT32_MAX,
     UINT64_MAX,
     UINT64_MAX},
};

enum { N_SAMPLES = 27, N_SMALL = 26 }; /* the last one is big */

static void make_samples(rusm__frame *s) {
  memset(s, 0, sizeof(rusm__frame) * N_SAMPLES);
  int i = 0;
  s[i].kind = RUSM__WIRE_HELLO;
  s[i].hello = (rusm__wire_hello){1,
                                  1,
                                  7,
                                  0x1122334455667788u,
                                  5,
                                  S("node-a.example_1"),
                                  S("127.0.0.1:4370"),
                                  B(NULL, 0)};
  i++;
  s[i].kind = RUSM__WIRE_HELLO;
  s[i].hello = (rusm__wire_hello){
      1, 3, RUSM_NODE_ID_MAX, 0, UINT64_MAX, S("n"), S("[::1]:1"), S("ext")};
  i++;
  s[i].kind = RUSM__WIRE_SEND;
  s[i].send = (rusm__wire_send){P(2, 5, 1), 0, 42, S("hello")};
  i++;
  s[i].kind = RUSM__WIRE_SEND;
  s[i].send = (rusm__wire_send){P(2, 6, 9), P(1, 1, 1), UINT64_MAX, B(NULL, 0)};
  i++;
  s[i].kind = RUSM__WIRE_SEND_NAMED;
  s[i].send_named =
      (rusm__wire_send_named){S("logger"), P(1, 2, 3), 7, B(k_bin, 7)};
  i++;
  s[i].kind = RUSM__WIRE_LINK;
  s[i].link = (rusm__wire_link){P(1, 2, 3), P(2, 3, 4)};
  i++;
  s[i].kind = RUSM__WIRE_UNLINK;
  s[i].link = (rusm__wire_link){P(2, 3, 4), P(1, 2, 3)};
  i++;
  s[i].kind = RUSM__WIRE_EXIT;
  s[i].exit = (rusm__wire_exit){P(1, 2, 3),
                                P(2, 3, 4),
                                {RUSM_EXIT_CUSTOM, 4, (const uint8_t *)"boom"},
                                true};
  i++;
  s[i].kind = RUSM__WIRE_EXIT;
  s[i].exit =
      (rusm__wire_exit){0, P(2, 3, 4), {RUSM_EXIT_KILL, 0, NULL}, false};
  i++;
  s[i].kind = RUSM__WIRE_MONITOR;
  s[i].monitor = (rusm__wire_monitor){P(1, 9, 9), P(2, 8, 8), 77};
  i++;
  s[i].kind = RUSM__WIRE_DEMONITOR;
  s[i].monitor = (rusm__wire_monitor){P(1, 9, 9), P(2, 8, 8), 77};
  i++;
  s[i].kind = RUSM__WIRE_DOWN;
  s[i].down = (rusm__wire_down){
      77, P(1, 9, 9), P(2, 8, 8), {RUSM_EXIT_NOCONNECTION, 0, NULL}};
  i++;
  s[i].kind = RUSM__WIRE_DOWN;
  s[i].down = (rusm__wire_down){
      UINT64_MAX, P(1, 9, 9), P(2, 8, 8), {RUSM_EXIT_TRAP, 7, k_bin}};
  i++;
  s[i].kind = RUSM__WIRE_SPAWN_REQ;
  s[i].spawn_req = (rusm__wire_spawn_req){
      1, P(1, 4, 4), S("worker"), B(k_bin, sizeof k_bin), true, true};
  i++;
  s[i].kind = RUSM__WIRE_SPAWN_REQ;
  s[i].spawn_req =
      (rusm__wire_spawn_req){0, P(1, 4, 4), S("w"), B(NULL, 0), false, true};
  i++;
  s[i].kind = RUSM__WIRE_SPAWN_REPLY;
  s[i].spawn_reply = (rusm__wire_spawn_reply){1, P(1, 4, 4), P(2, 1, 1), 0, 5};
  i++;
  s[i].kind = RUSM__WIRE_SPAWN_REPLY;
  s[i].spawn_reply =
      (rusm__wire_spawn_reply){2, P(1, 4, 4), 0, RUSM_ENOTFOUND, 0};
  i++;
  s[i].kind = RUSM__WIRE_PROCS_REQ;
  s[i].procs_req = (rusm__wire_procs_req){3, P(1, 4, 4), 100, 50};
  i++;
  s[i].kind = RUSM__WIRE_PROCS_REPLY;
  s[i].procs_reply =
      (rusm__wire_procs_reply){3, P(1, 4, 4), true, 3, k_procs, B(NULL, 0)};
  i++;
  s[i].kind = RUSM__WIRE_PROCS_REPLY;
  s[i].procs_reply =
      (rusm__wire_procs_reply){4, P(1, 4, 4), false, 0, NULL, B(NULL, 0)};
  i++;
  s[i].kind = RUSM__WIRE_INFO_REQ;
  s[i].info_req = (rusm__wire_info_req){5, P(1, 4, 4), P(2, 1, 1)};
  i++;
  s[i].kind = RUSM__WIRE_INFO_REPLY;
  s[i].info_reply =
      (rusm__wire_info_reply){5, P(1, 4, 4), false, k_procs[0], 2, 3};
  i++;
  s[i].kind = RUSM__WIRE_INFO_REPLY;
  s[i].info_reply = (rusm__wire_info_reply){
      6, P(1, 4, 4), true, {P(2, 1, 1), {NULL, 0}, 0, 0, 0, 0}, 0, 0};
  i++;
  s[i].kind = RUSM__WIRE_GREG;
  s[i].opaque.data = B(NULL, 0);
  i++;
  s[i].kind = RUSM__WIRE_GOODBYE;
  s[i].goodbye = (rusm__wire_goodbye){RUSM__WIRE_BYE_NORMAL, S("bye")};
  i++;
  s[i].kind = RUSM__WIRE_GOODBYE;
  s[i].goodbye = (rusm__wire_goodbye){RUSM__WIRE_BYE_REFUSED, B(NULL, 0)};
  i++;
  assert_int_equal(i, N_SMALL);
  s[i].kind = RUSM__WIRE_SWIM;
  s[i].opaque.data = B(g_big, BIG_LEN);
  i++;
  assert_int_equal(i, N_SAMPLES);
}

static int setup(void **state) {
  for (size_t i = 0; i < BIG_LEN; i++)
    g_big[i] = (uint8_t)(i * 31 + 7);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Round trips                                                         */
/* ------------------------------------------------------------------ */

static void test_roundtrip_every_kind(void **state) {
  rusm__frame s[N_SAMPLES];
  make_samples(s);
  bool seen[RUSM__WIRE_KIND_MAX + 1] = {false};
  rusm__wbuf b, again;
  rusm__wbuf_init(&b);
  rusm__wbuf_init(&again);
  for (int i = 0; i < N_SAMPLES; i++) {
    rusm__wbuf_reset(&b);
    int rc = rusm__wire_encode(&b, &s[i]);
    if (rc != 0)
      fail_msg("sample %d (%s): %s", i, rusm__wire_kind_name(s[i].kind),
               rusm__wire_strerror(rc));
    rusm__frame d;
    size_t used = 0;
    assert_int_equal(rusm__wire_decode(b.data, b.len, 0, &d, &used), 1);
    assert_int_equal(used, b.len);
    if (!rusm__wire_frame_equal(&s[i], &d))
      fail_msg("sample %d (%s) differs after a round trip", i,
               rusm__wire_kind_name(s[i].kind));
    seen[s[i].kind] = true;
    /* canonical: re-encoding the decoded frame gives the same bytes */
    rusm__wbuf_reset(&again);
    assert_int_equal(rusm__wire_encode(&again, &d), 0);
    assert_int_equal(again.len, b.len);
    assert_memory_equal(again.data, b.data, b.len);
    /* zero copy: every byte view points into the input */
    if (d.kind == RUSM__WIRE_SEND && d.send.payload.len) {
      assert_true(d.send.payload.p > b.data);
      assert_true(d.send.payload.p + d.send.payload.len == b.data + b.len);
    }
  }
  for (int k = 1; k <= RUSM__WIRE_KIND_MAX; k++)
    if (!seen[k])
      fail_msg("kind %d (%s) has no sample", k, rusm__wire_kind_name(k));
  rusm__wbuf_free(&b);
  rusm__wbuf_free(&again);
}

static void test_header_layout(void **state) {
  rusm__wbuf b;
  rusm__wbuf_init(&b);
  assert_int_equal(
      rusm__wire_encode_send(&b, 0x0102030405060708u, 0, 9, "ab", 2), 0);
  const uint8_t want[] = {RUSM__WIRE_MAGIC,
                          1,
                          RUSM__WIRE_SEND,
                          0,
                          26,
                          0,
                          0,
                          0,
                          8,
                          7,
                          6,
                          5,
                          4,
                          3,
                          2,
                          1, /* to, little-endian */
                          0,
                          0,
                          0,
                          0,
                          0,
                          0,
                          0,
                          0,
                          9,
                          0,
                          0,
                          0,
                          0,
                          0,
                          0,
                          0,
                          'a',
                          'b'};
  assert_int_equal(b.len, sizeof want);
  assert_memory_equal(b.data, want, sizeof want);
  rusm__wbuf_free(&b);
}

static void test_encode_send_matches_encode(void **state) {
  rusm__wbuf a, b;
  rusm__wbuf_init(&a);
  rusm__wbuf_init(&b);
  for (size_t len = 0; len < 300; len += 37) {
    rusm__frame f = {.kind = RUSM__WIRE_SEND};
    f.send = (rusm__wire_send){P(3, 1, 2), P(1, 1, 1), len, B(g_big, len)};
    assert_int_equal(rusm__wire_encode(&a, &f), 0);
    assert_int_equal(
        rusm__wire_encode_send(&b, f.send.to, f.send.from, len, g_big, len), 0);
  }
  assert_int_equal(a.len, b.len);
  assert_memory_equal(a.data, b.data, a.len);
  /* the fast path's own rules */
  size_t before = b.len;
  assert_int_equal(rusm__wire_encode_send(&b, 0, 1, 1, "x", 1),
                   RUSM_EWIRE_ZERO);
  assert_int_equal(
      rusm__wire_encode_send(&b, 1, 1, 1, g_big, RUSM__WIRE_MAX_BODY_HARD - 23),
      RUSM_EWIRE_TOOBIG);
  assert_int_equal(rusm__wire_encode_send(&b, 1, 1, 1, NULL, 3), RUSM_EINVAL);
  assert_int_equal(b.len, before);
  rusm__wbuf_free(&a);
  rusm__wbuf_free(&b);
}

/* ------------------------------------------------------------------ */
/* Incremental decoding                                                */
/* ------------------------------------------------------------------ */

static void test_byte_at_a_time(void **state) {
  rusm__frame s[N_SAMPLES];
  make_samples(s);
  rusm__wbuf b;
  rusm__wbuf_init(&b);
  for (int i = 0; i < N_SMALL; i++) {
    rusm__wbuf_reset(&b);
    assert_int_equal(rusm__wire_encode(&b, &s[i]), 0);
    rusm__frame d;
    size_t used = 12345;
    for (size_t k = 0; k < b.len; k++) {
      uint8_t *c = exact_copy(b.data, k);
      assert_int_equal(rusm__wire_decode(c, k, 0, &d, &used), 0);
      assert_int_equal(used, 12345); /* untouched */
      free(c);
    }
    assert_int_equal(rusm__wire_decode(b.data, b.len, 0, &d, &used), 1);
    assert_int_equal(used, b.len);
  }

  /* The same stream through the reader, one byte per feed. */
  rusm__wbuf_reset(&b);
  for (int i = 0; i < N_SAMPLES; i++)
    assert_int_equal(rusm__wire_encode(&b, &s[i]), 0);
  rusm__wire_reader r;
  rusm__wire_reader_init(&r, 0);
  int got = 0;
  for (size_t k = 0; k < b.len; k++) {
    assert_int_equal(rusm__wire_reader_feed(&r, b.data + k, 1), 0);
    rusm__frame d;
    int rc;
    while ((rc = rusm__wire_reader_next(&r, &d)) == 1) {
      assert_true(got < N_SAMPLES);
      assert_true(rusm__wire_frame_equal(&s[got], &d));
      got++;
    }
    assert_int_equal(rc, 0);
  }
  assert_int_equal(got, N_SAMPLES);
  assert_int_equal(rusm__wire_reader_finish(&r), 0);
  rusm__wire_reader_free(&r);
  rusm__wbuf_free(&b);
}

static void test_back_to_back(void **state) {
  rusm__frame s[N_SAMPLES];
  make_samples(s);
  enum { N = 20000 };
  rusm__wbuf b;
  rusm__wbuf_init(&b);
  rng_seed(0x5eed0001);
  /* many small SENDs, with now and then another kind between them */
  size_t kinds[N];
  for (size_t i = 0; i < N; i++) {
    if (i % 97 == 0) {
      kinds[i] = 1 + rnd_below(N_SMALL);
      assert_int_equal(rusm__wire_encode(&b, &s[kinds[i] - 1]), 0);
    } else {
      kinds[i] = 0;
      assert_int_equal(rusm__wire_encode_send(&b, P(2, (uint32_t)i, 1), i, i,
                                              g_big + i % 1000, i % 64),
                       0);
    }
  }
  size_t off = 0;
  for (size_t i = 0; i < N; i++) {
    rusm__frame d;
    size_t used = 0;
    assert_int_equal(rusm__wire_decode(b.data + off, b.len - off, 0, &d, &used),
                     1);
    off += used;
    if (kinds[i]) {
      assert_true(rusm__wire_frame_equal(&s[kinds[i] - 1], &d));
    } else {
      assert_int_equal(d.kind, RUSM__WIRE_SEND);
      assert_int_equal(d.send.to, P(2, (uint32_t)i, 1));
      assert_int_equal(d.send.from, i);
      assert_int_equal(d.send.tag, i);
      assert_int_equal(d.send.payload.len, i % 64);
      if (i % 64)
        assert_memory_equal(d.send.payload.p, g_big + i % 1000, i % 64);
    }
  }
  assert_int_equal(off, b.len);

  /* And through the reader in random chunks. */
  rusm__wire_reader r;
  rusm__wire_reader_init(&r, 0);
  size_t n = 0;
  for (off = 0; off < b.len;) {
    size_t chunk = 1 + rnd_below(3000);
    if (chunk > b.len - off)
      chunk = b.len - off;
    assert_int_equal(rusm__wire_reader_feed(&r, b.data + off, chunk), 0);
    off += chunk;
    rusm__frame d;
    while (rusm__wire_reader_next(&r, &d) == 1) {
      assert_int_equal(d.kind,
                       kinds[n] ? s[kinds[n] - 1].kind : RUSM__WIRE_SEND);
      n++;
    }
  }
  assert_int_equal(n, N);
  assert_int_equal(rusm__wire_reader_finish(&r), 0);

  /* A big frame's buffer is let go once the reader is empty again. */
  rusm__wbuf_reset(&b);
  assert_int_equal(rusm__wire_encode(&b, &s[N_SAMPLES - 1]), 0);
  assert_int_equal(rusm__wire_reader_feed(&r, b.data, b.len), 0);
  rusm__frame d;
  assert_int_equal(rusm__wire_reader_next(&r, &d), 1);
  assert_true(rusm__wire_frame_equal(&s[N_SAMPLES - 1], &d));
  assert_true(r.cap >= BIG_LEN);
  assert_int_equal(rusm__wire_reader_feed(&r, b.data, 100), 0);
  assert_true(r.cap < BIG_LEN);
  assert_int_equal(rusm__wire_reader_next(&r, &d), 0);
  rusm__wire_reader_free(&r);
  rusm__wbuf_free(&b);
}

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

/* A frame from raw parts: header fields as given, body bytes. */
static void craft(rusm__wbuf *out, uint8_t kind, uint8_t flags,
                  const rusm__wbuf *body) {
  rusm__wbuf_reset(out);
  assert_int_equal(rusm__wbuf_put_u8(out, RUSM__WIRE_MAGIC), 0);
  assert_int_equal(rusm__wbuf_put_u8(out, 1), 0);
  assert_int_equal(rusm__wbuf_put_u8(out, kind), 0);
  assert_int_equal(rusm__wbuf_put_u8(out, flags), 0);
  assert_int_equal(rusm__wbuf_put_u32(out, (uint32_t)body->len), 0);
  assert_int_equal(rusm__wbuf_append(out, body->data, body->len), 0);
}

/*
 * p[0..n) decodes to err; every prefix gives 0 until err shows, then err;
 * the reader fed byte by byte fails with err too.
 */
static void expect_err_max(const uint8_t *p, size_t n, size_t max, int err) {
  rusm__frame d;
  size_t used = 0;
  uint8_t *c = exact_copy(p, n);
  int rc = rusm__wire_decode(c, n, max, &d, &used);
  if (rc != err)
    fail_msg("expected %d (%s), got %d (%s)", err, rusm__wire_strerror(err), rc,
             rusm__wire_strerror(rc));
  free(c);
  bool shown = false;
  for (size_t k = 0; k < n; k++) {
    c = exact_copy(p, k);
    rc = rusm__wire_decode(c, k, max, &d, &used);
    free(c);
    if (rc == err)
      shown = true;
    else if (shown || rc != 0)
      fail_msg("prefix %zu of %zu: got %d", k, n, rc);
  }
  rusm__wire_reader r;
  rusm__wire_reader_init(&r, max);
  rc = 0;
  for (size_t k = 0; k < n && rc == 0; k++) {
    assert_int_equal(rusm__wire_reader_feed(&r, p + k, 1), 0);
    rc = rusm__wire_reader_next(&r, &d);
  }
  assert_int_equal(rc, err);
  /* sticky */
  assert_int_equal(rusm__wire_reader_next(&r, &d), err);
  assert_int_equal(rusm__wire_reader_feed(&r, p, 1), err);
  assert_int_equal(rusm__wire_reader_finish(&r), err);
  rusm__wire_reader_free(&r);
}

static void expect_err(const rusm__wbuf *f, int err) {
  expect_err_max(f->data, f->len, 0, err);
}

/* Encoding f fails with err and leaves the buffer as it was. */
static void expect_encode_err(const rusm__frame *f, int err) {
  rusm__wbuf b;
  rusm__wbuf_init(&b);
  assert_int_equal(rusm__wbuf_append(&b, "keep", 4), 0);
  int rc = rusm__wire_encode(&b, f);
  if (rc != err)
    fail_msg("encode %s: expected %d (%s), got %d (%s)",
             rusm__wire_kind_name(f->kind), err, rusm__wire_strerror(err), rc,
             rusm__wire_strerror(rc));
  assert_int_equal(b.len, 4);
  assert_memory_equal(b.data, "keep", 4);
  rusm__wbuf_free(&b);
}

static void test_header_errors(void **state) {
  const uint8_t ok[] = {RUSM__WIRE_MAGIC, 1, RUSM__WIRE_LINK, 0, 16, 0, 0, 0};
  uint8_t h[8];

  memcpy(h, ok, 8);
  h[0] = 0x00;
  expect_err_max(h, 1, 0, RUSM_EWIRE_MAGIC); /* seen at the first byte */
  h[0] = 'r';
  expect_err_max(h, 8, 0, RUSM_EWIRE_MAGIC);

  memcpy(h, ok, 8);
  h[1] = 0;
  expect_err_max(h, 2, 0, RUSM_EWIRE_VERSION);
  h[1] = 2;
  expect_err_max(h, 8, 0, RUSM_EWIRE_VERSION);

  memcpy(h, ok, 8);
  const uint8_t bad_kinds[] = {0, RUSM__WIRE_KIND_MAX + 1, 0x7f, 0xff};
  for (size_t i = 0; i < sizeof bad_kinds; i++) {
    h[2] = bad_kinds[i];
    expect_err_max(h, 3, 0, RUSM_EWIRE_KIND);
  }

  memcpy(h, ok, 8);
  h[3] = 1; /* LINK defines no flags */
  expect_err_max(h, 4, 0, RUSM_EWIRE_FLAGS);
  h[2] = RUSM__WIRE_EXIT;
  h[3] = 2; /* EXIT defines bit 0 only */
  expect_err_max(h, 4, 0, RUSM_EWIRE_FLAGS);
  h[2] = RUSM__WIRE_SPAWN_REQ;
  h[3] = 4;
  expect_err_max(h, 4, 0, RUSM_EWIRE_FLAGS);
  h[3] = 0x80;
  expect_err_max(h, 4, 0, RUSM_EWIRE_FLAGS);

  /* Fixed-size kinds: a length other than theirs fails at the header. */
  memcpy(h, ok, 8);
  h[4] = 15;
  expect_err_max(h, 8, 0, RUSM_EWIRE_SHORT);
  h[4] = 17;
  expect_err_max(h, 8, 0, RUSM_EWIRE_TRAILING);
  h[2] = RUSM__WIRE_SEND;
  h[4] = 23; /* shorter than to + from + tag */
  expect_err_max(h, 8, 0, RUSM_EWIRE_SHORT);
  h[2] = RUSM__WIRE_INFO_REPLY;
  h[3] = 1; /* noproc: exactly 24 */
  h[4] = 25;
  expect_err_max(h, 8, 0, RUSM_EWIRE_TRAILING);
}

static void put_len(uint8_t *h, uint32_t len) {
  h[4] = (uint8_t)len;
  h[5] = (uint8_t)(len >> 8);
  h[6] = (uint8_t)(len >> 16);
  h[7] = (uint8_t)(len >> 24);
}

static void test_oversized_seen_early(void **state) {
  uint8_t h[8] = {RUSM__WIRE_MAGIC, 1, RUSM__WIRE_SWIM, 0};
  rusm__frame d;
  size_t used;

  /* default limit (max_body 0): 8 MiB */
  put_len(h, (uint32_t)RUSM__WIRE_MAX_BODY_DEFAULT);
  assert_int_equal(rusm__wire_decode(h, 8, 0, &d, &used), 0);
  put_len(h, (uint32_t)RUSM__WIRE_MAX_BODY_DEFAULT + 1);
  expect_err_max(h, 8, 0, RUSM_EWIRE_TOOBIG);
  put_len(h, UINT32_MAX);
  expect_err_max(h, 8, 0, RUSM_EWIRE_TOOBIG);

  /* a configured limit */
  put_len(h, 101);
  expect_err_max(h, 8, 100, RUSM_EWIRE_TOOBIG);
  put_len(h, 100);
  assert_int_equal(rusm__wire_decode(h, 8, 100, &d, &used), 0);

  /* limits past the hard cap are clamped to it */
  put_len(h, (uint32_t)RUSM__WIRE_MAX_BODY_HARD);
  assert_int_equal(rusm__wire_decode(h, 8, SIZE_MAX, &d, &used), 0);
  put_len(h, (uint32_t)RUSM__WIRE_MAX_BODY_HARD + 1);
  expect_err_max(h, 8, SIZE_MAX, RUSM_EWIRE_TOOBIG);

  /* the reader fails at the header, having buffered 8 bytes */
  rusm__wire_reader r;
  rusm__wire_reader_init(&r, 1000);
  put_len(h, 1001);
  assert_int_equal(rusm__wire_reader_feed(&r, h, 8), 0);
  assert_int_equal(rusm__wire_reader_next(&r, &d), RUSM_EWIRE_TOOBIG);
  rusm__wire_reader_free(&r);

  /* a frame exactly at the configured limit decodes */
  rusm__wbuf b;
  rusm__wbuf_init(&b);
  rusm__frame f = {.kind = RUSM__WIRE_GREG};
  f.opaque.data = B(g_big, 1000);
  assert_int_equal(rusm__wire_encode(&b, &f), 0);
  assert_int_equal(rusm__wire_decode(b.data, b.len, 1000, &d, &used), 1);
  expect_err_max(b.data, b.len, 999, RUSM_EWIRE_TOOBIG);
  rusm__wbuf_free(&b);
}

static void test_truncated(void **state) {
  rusm__frame s[N_SAMPLES];
  make_samples(s);
  rusm__wbuf b;
  rusm__wbuf_init(&b);
  assert_int_equal(rusm__wire_encode(&b, &s[0]), 0);
  assert_int_equal(rusm__wire_encode(&b, &s[2]), 0);
  rusm__wire_reader r;
  rusm__wire_reader_init(&r, 0);
  assert_int_equal(rusm__wire_reader_feed(&r, b.data, b.len - 1), 0);
  rusm__frame d;
  assert_int_equal(rusm__wire_reader_next(&r, &d), 1);
  assert_int_equal(d.kind, RUSM__WIRE_HELLO);
  assert_int_equal(rusm__wire_reader_next(&r, &d), 0);
  assert_int_equal(rusm__wire_reader_finish(&r), RUSM_EWIRE_TRUNCATED);
  assert_int_equal(rusm__wire_reader_feed(&r, b.data + b.len - 1, 1), 0);
  assert_int_equal(rusm__wire_reader_next(&r, &d), 1);
  assert_int_equal(d.kind, RUSM__WIRE_SEND);
  assert_int_equal(rusm__wire_reader_finish(&r), 0);
  rusm__wire_reader_free(&r);
  rusm__wbuf_free(&b);
}

static void test_body_length_mismatch(void **state) {
  rusm__wbuf body, f;
  rusm__wbuf_init(&body);
  rusm__wbuf_init(&f);

  /* SEND_NAMED whose name runs past the body */
  rusm__wbuf_put_u64(&body, 1);
  rusm__wbuf_put_u64(&body, 2);
  rusm__wbuf_put_u8(&body, 10);
  rusm__wbuf_append(&body, "abc", 3);
  craft(&f, RUSM__WIRE_SEND_NAMED, 0, &body);
  expect_err(&f, RUSM_EWIRE_SHORT);

  /* PROCS_REPLY: count 2, one record */
  rusm__wbuf_reset(&body);
  rusm__wbuf_put_u64(&body, 1);
  rusm__wbuf_put_u64(&body, P(1, 1, 1));
  rusm__wbuf_put_u32(&body, 2);
  rusm__wbuf_put_u64(&body, P(1, 2, 1));
  rusm__wbuf_put_u8(&body, 0);
  rusm__wbuf_put_u32(&body, 0);
  rusm__wbuf_put_u64(&body, 0);
  rusm__wbuf_put_u64(&body, 0);
  rusm__wbuf_put_u8(&body, 0);
  craft(&f, RUSM__WIRE_PROCS_REPLY, 0, &body);
  expect_err(&f, RUSM_EWIRE_SHORT);
  /* count 1 with the same record decodes; one more byte is trailing */
  body.data[16] = 1;
  craft(&f, RUSM__WIRE_PROCS_REPLY, 0, &body);
  rusm__frame d;
  size_t used;
  assert_int_equal(rusm__wire_decode(f.data, f.len, 0, &d, &used), 1);
  assert_int_equal(d.procs_reply.count, 1);
  rusm__wbuf_put_u8(&body, 0);
  craft(&f, RUSM__WIRE_PROCS_REPLY, 0, &body);
  expect_err(&f, RUSM_EWIRE_TRAILING);
  /* a huge count with a small body fails fast, allocating nothing */
  body.data[16] = 0xff;
  body.data[17] = 0xff;
  body.data[18] = 0xff;
  body.data[19] = 0xff;
  craft(&f, RUSM__WIRE_PROCS_REPLY, 0, &body);
  expect_err(&f, RUSM_EWIRE_SHORT);

  /* HELLO: strings past the body */
  rusm__wbuf_reset(&body);
  rusm__wbuf_append(&body, "\x01\x01\x07\x00", 4);
  rusm__wbuf_put_u64(&body, 1);
  rusm__wbuf_put_u64(&body, 0);
  rusm__wbuf_put_u8(&body, 1);
  rusm__wbuf_append(&body, "a", 1);
  rusm__wbuf_put_u8(&body, 5);
  rusm__wbuf_append(&body, "x:1", 3);
  craft(&f, RUSM__WIRE_HELLO, 0, &body);
  expect_err(&f, RUSM_EWIRE_SHORT);

  /* INFO_REPLY with a full record and one byte too many */
  rusm__frame s[N_SAMPLES];
  make_samples(s);
  rusm__wbuf_reset(&f);
  assert_int_equal(rusm__wire_encode(&f, &s[21]), 0);
  assert_int_equal(s[21].kind, RUSM__WIRE_INFO_REPLY);
  rusm__wbuf_put_u8(&f, 0);
  f.data[4]++;
  expect_err(&f, RUSM_EWIRE_TRAILING);
  f.len -= 2;
  f.data[4] -= 2;
  expect_err(&f, RUSM_EWIRE_SHORT);

  rusm__wbuf_free(&body);
  rusm__wbuf_free(&f);
}

/* A HELLO with the given name and address. */
static void hello_with(rusm__wbuf *f, const uint8_t *name, size_t nlen,
                       const char *addr) {
  rusm__wbuf body;
  rusm__wbuf_init(&body);
  rusm__wbuf_append(&body, "\x01\x01\x07\x00", 4);
  rusm__wbuf_put_u64(&body, 1);
  rusm__wbuf_put_u64(&body, 0);
  rusm__wbuf_put_u8(&body, (uint8_t)nlen);
  rusm__wbuf_append(&body, name, nlen);
  rusm__wbuf_put_u8(&body, (uint8_t)strlen(addr));
  rusm__wbuf_append(&body, addr, strlen(addr));
  craft(f, RUSM__WIRE_HELLO, 0, &body);
  rusm__wbuf_free(&body);
}

static void test_bad_strings(void **state) {
  rusm__wbuf f, body;
  rusm__wbuf_init(&f);
  rusm__wbuf_init(&body);
  rusm__frame d;
  size_t used;

  uint8_t name[80];
  memset(name, 'a', sizeof name);
  hello_with(&f, name, 63, "h:1");
  assert_int_equal(rusm__wire_decode(f.data, f.len, 0, &d, &used), 1);
  hello_with(&f, name, 64, "h:1");
  expect_err(&f, RUSM_EWIRE_STRING);
  hello_with(&f, name, 0, "h:1");
  expect_err(&f, RUSM_EWIRE_STRING);
  const char bad_chars[] = {'/', ' ', ':', '@', 0, (char)0xc3, '\n'};
  for (size_t i = 0; i < sizeof bad_chars; i++) {
    name[3] = (uint8_t)bad_chars[i];
    hello_with(&f, name, 5, "h:1");
    expect_err(&f, RUSM_EWIRE_STRING);
  }
  static const uint8_t okname[7] = {'A', '-', 'z', '.', '0', '_', '9'};
  memcpy(name, okname, sizeof okname);
  hello_with(&f, name, 7, "h:1");
  assert_int_equal(rusm__wire_decode(f.data, f.len, 0, &d, &used), 1);
  hello_with(&f, name, 7, "");
  expect_err(&f, RUSM_EWIRE_STRING);
  hello_with(&f, name, 7, "h :1");
  expect_err(&f, RUSM_EWIRE_STRING);
  hello_with(&f, name, 7, "h\x7f");
  expect_err(&f, RUSM_EWIRE_STRING);

  /* registry names: 1..255 bytes, no NUL */
  rusm__wbuf_put_u64(&body, 0);
  rusm__wbuf_put_u64(&body, 0);
  rusm__wbuf_put_u8(&body, 3);
  rusm__wbuf_append(&body, "a\0b", 3);
  craft(&f, RUSM__WIRE_SEND_NAMED, 0, &body);
  expect_err(&f, RUSM_EWIRE_STRING);
  body.data[17] = 'a';
  body.data[18] = 'x';
  craft(&f, RUSM__WIRE_SEND_NAMED, 0, &body);
  assert_int_equal(rusm__wire_decode(f.data, f.len, 0, &d, &used), 1);
  body.data[16] = 0; /* empty name: the 3 bytes become the payload */
  craft(&f, RUSM__WIRE_SEND_NAMED, 0, &body);
  expect_err(&f, RUSM_EWIRE_STRING);

  /* factory names: the same rules */
  rusm__wbuf_reset(&body);
  rusm__wbuf_put_u64(&body, 0);
  rusm__wbuf_put_u64(&body, 1);
  rusm__wbuf_put_u8(&body, 0);
  craft(&f, RUSM__WIRE_SPAWN_REQ, 0, &body);
  expect_err(&f, RUSM_EWIRE_STRING);

  /* labels: no NUL */
  rusm__wbuf_reset(&body);
  rusm__wbuf_put_u64(&body, 0);
  rusm__wbuf_put_u64(&body, 1);
  rusm__wbuf_put_u64(&body, P(1, 2, 3));
  rusm__wbuf_put_u8(&body, 0);
  rusm__wbuf_put_u32(&body, 0);
  rusm__wbuf_put_u64(&body, 0);
  rusm__wbuf_put_u64(&body, 0);
  rusm__wbuf_put_u8(&body, 2);
  rusm__wbuf_append(&body, "a\0", 2);
  rusm__wbuf_put_u32(&body, 0);
  rusm__wbuf_put_u32(&body, 0);
  craft(&f, RUSM__WIRE_INFO_REPLY, 0, &body);
  expect_err(&f, RUSM_EWIRE_STRING);

  /* GOODBYE text: no NUL, at most 1024 bytes */
  rusm__wbuf_reset(&body);
  rusm__wbuf_put_u8(&body, 0);
  rusm__wbuf_append(&body, "ab\0", 3);
  craft(&f, RUSM__WIRE_GOODBYE, 0, &body);
  expect_err(&f, RUSM_EWIRE_STRING);
  rusm__wbuf_reset(&body);
  rusm__wbuf_put_u8(&body, 0);
  for (int i = 0; i < RUSM__WIRE_TEXT_MAX; i++)
    rusm__wbuf_put_u8(&body, 'x');
  craft(&f, RUSM__WIRE_GOODBYE, 0, &body);
  assert_int_equal(rusm__wire_decode(f.data, f.len, 0, &d, &used), 1);
  rusm__wbuf_put_u8(&body, 'x');
  craft(&f, RUSM__WIRE_GOODBYE, 0, &body);
  expect_err(&f, RUSM_EWIRE_STRING);

  rusm__wbuf_free(&f);
  rusm__wbuf_free(&body);
}

/* Encodes sample i, applies edit at body offset `at`, expects err. */
static void sample_edit(const rusm__frame *s, size_t at, uint64_t v,
                        size_t width, int err) {
  rusm__wbuf f;
  rusm__wbuf_init(&f);
  assert_int_equal(rusm__wire_encode(&f, s), 0);
  assert_true(RUSM__WIRE_HDR + at + width <= f.len);
  for (size_t i = 0; i < width; i++)
    f.data[RUSM__WIRE_HDR + at + i] = (uint8_t)(v >> (8 * i));
  expect_err(&f, err);
  rusm__wbuf_free(&f);
}

static void test_zero_ids(void **state) {
  rusm__frame s[N_SAMPLES];
  make_samples(s);
  sample_edit(&s[2], 0, 0, 8, RUSM_EWIRE_ZERO);   /* SEND to */
  sample_edit(&s[5], 0, 0, 8, RUSM_EWIRE_ZERO);   /* LINK from */
  sample_edit(&s[6], 8, 0, 8, RUSM_EWIRE_ZERO);   /* UNLINK to */
  sample_edit(&s[7], 0, 0, 8, RUSM_EWIRE_ZERO);   /* EXIT via link, from */
  sample_edit(&s[7], 8, 0, 8, RUSM_EWIRE_ZERO);   /* EXIT to */
  sample_edit(&s[9], 16, 0, 8, RUSM_EWIRE_ZERO);  /* MONITOR ref */
  sample_edit(&s[10], 0, 0, 8, RUSM_EWIRE_ZERO);  /* DEMONITOR from */
  sample_edit(&s[11], 0, 0, 8, RUSM_EWIRE_ZERO);  /* DOWN ref */
  sample_edit(&s[11], 16, 0, 8, RUSM_EWIRE_ZERO); /* DOWN pid */
  sample_edit(&s[13], 8, 0, 8, RUSM_EWIRE_ZERO);  /* SPAWN_REQ requester */
  sample_edit(&s[15], 16, 0, 8, RUSM_EWIRE_ZERO); /* SPAWN_REPLY result 0 */
  sample_edit(&s[17], 8, 0, 8, RUSM_EWIRE_ZERO);  /* PROCS_REQ requester */
  sample_edit(&s[18], 20, 0, 8, RUSM_EWIRE_ZERO); /* record pid */
  sample_edit(&s[20], 16, 0, 8, RUSM_EWIRE_ZERO); /* INFO_REQ pid */
  sample_edit(&s[22], 16, 0, 8, RUSM_EWIRE_ZERO); /* INFO_REPLY noproc pid */

  /* exit/2 from outside a process: from 0 is fine without the link flag */
  rusm__wbuf f;
  rusm__wbuf_init(&f);
  assert_int_equal(rusm__wire_encode(&f, &s[8]), 0);
  rusm__frame d;
  size_t used;
  assert_int_equal(rusm__wire_decode(f.data, f.len, 0, &d, &used), 1);
  assert_int_equal(d.exit.from, 0);
  f.data[3] = 1; /* ... but not with it */
  expect_err(&f, RUSM_EWIRE_ZERO);
  rusm__wbuf_free(&f);

  /* the encoder refuses the same */
  rusm__frame e = s[2];
  e.send.to = 0;
  expect_encode_err(&e, RUSM_EWIRE_ZERO);
  e = s[9];
  e.monitor.ref = 0;
  expect_encode_err(&e, RUSM_EWIRE_ZERO);
  e = s[7];
  e.exit.from = 0;
  expect_encode_err(&e, RUSM_EWIRE_ZERO);
  e = s[15];
  e.spawn_reply.pid = 0;
  expect_encode_err(&e, RUSM_EWIRE_ZERO);
}

static void test_bad_codes_and_fields(void **state) {
  rusm__frame s[N_SAMPLES];
  make_samples(s);
  sample_edit(&s[7], 16, RUSM_EXIT__COUNT, 1, RUSM_EWIRE_CODE); /* EXIT */
  sample_edit(&s[8], 16, 255, 1, RUSM_EWIRE_CODE);
  sample_edit(&s[11], 24, RUSM_EXIT__COUNT, 1, RUSM_EWIRE_CODE); /* DOWN */
  sample_edit(&s[18], 28, 4, 1, RUSM_EWIRE_CODE); /* record status */
  sample_edit(&s[24], 0, RUSM__WIRE_BYE__COUNT, 1, RUSM_EWIRE_CODE);

  sample_edit(&s[0], 0, 0, 1, RUSM_EWIRE_FIELD);    /* proto_min 0 */
  sample_edit(&s[0], 0, 2, 1, RUSM_EWIRE_FIELD);    /* min > max */
  sample_edit(&s[0], 2, 0, 2, RUSM_EWIRE_FIELD);    /* node id 0 */
  sample_edit(&s[0], 2, 2048, 2, RUSM_EWIRE_FIELD); /* node id too big */
  /* SPAWN_REPLY: an error outside int32, a ref with an error */
  sample_edit(&s[16], 16, (uint64_t)INT64_MIN, 8, RUSM_EWIRE_FIELD);
  sample_edit(&s[16], 24, 1, 8, RUSM_EWIRE_FIELD);

  rusm__frame e = s[7];
  e.exit.reason.code = (rusm_exit_code)(RUSM_EXIT__COUNT + 256);
  expect_encode_err(&e, RUSM_EWIRE_CODE);
  e = s[24];
  e.goodbye.code = 200;
  expect_encode_err(&e, RUSM_EWIRE_CODE);
  e = s[0];
  e.hello.node_id = 0;
  expect_encode_err(&e, RUSM_EWIRE_FIELD);
  e = s[15];
  e.spawn_reply.err = RUSM_EINVAL; /* both a pid and an error */
  expect_encode_err(&e, RUSM_EWIRE_FIELD);
  e = s[16];
  e.spawn_reply.ref = 3; /* a monitor ref with an error */
  expect_encode_err(&e, RUSM_EWIRE_FIELD);
  e = s[0];
  e.hello.name = S("bad name");
  expect_encode_err(&e, RUSM_EWIRE_STRING);
  char longname[300];
  memset(longname, 'n', sizeof longname);
  e = s[4];
  e.send_named.name = B(longname, 256);
  expect_encode_err(&e, RUSM_EWIRE_STRING);
  e = s[2];
  e.send.payload = B(NULL, 0);
  e.send.payload.len = 5; /* bytes missing */
  expect_encode_err(&e, RUSM_EINVAL);
  e.kind = (rusm__wire_kind)0;
  expect_encode_err(&e, RUSM_EWIRE_KIND);
  /* PROCS_REPLY whose count does not match its records */
  e = s[18];
  e.procs_reply.count = 4;
  rusm__wire_proc more[4] = {k_procs[0], k_procs[1], k_procs[2], k_procs[0]};
  more[3].status = 9;
  e.procs_reply.items = more;
  expect_encode_err(&e, RUSM_EWIRE_CODE);
}

static void test_strerror(void **state) {
  const int codes[] = {
      RUSM_EWIRE_MAGIC,    RUSM_EWIRE_VERSION, RUSM_EWIRE_KIND,
      RUSM_EWIRE_FLAGS,    RUSM_EWIRE_TOOBIG,  RUSM_EWIRE_SHORT,
      RUSM_EWIRE_TRAILING, RUSM_EWIRE_STRING,  RUSM_EWIRE_ZERO,
      RUSM_EWIRE_CODE,     RUSM_EWIRE_FIELD,   RUSM_EWIRE_TRUNCATED};
  size_t n = sizeof codes / sizeof codes[0];
  for (size_t i = 0; i < n; i++) {
    const char *m = rusm__wire_strerror(codes[i]);
    assert_non_null(m);
    assert_non_null(strstr(m, "wire:"));
    for (size_t j = 0; j < i; j++)
      assert_string_not_equal(m, rusm__wire_strerror(codes[j]));
  }
  assert_string_equal(rusm__wire_strerror(RUSM_ENOMEM),
                      rusm_strerror(RUSM_ENOMEM));
  assert_string_equal(rusm__wire_kind_name(RUSM__WIRE_PROCS_REPLY),
                      "PROCS_REPLY");
  assert_string_equal(rusm__wire_kind_name(99), "?");
}

/* ------------------------------------------------------------------ */
/* PROCS_REPLY, versions, buffers                                      */
/* ------------------------------------------------------------------ */

static void test_procs_builder(void **state) {
  rusm__wbuf b;
  rusm__wbuf_init(&b);
  assert_int_equal(rusm__wbuf_append(&b, "pre", 3), 0);
  rusm__wire_procs_builder bld;
  assert_int_equal(rusm__wire_procs_begin(&b, &bld, 9, 0, 0), RUSM_EWIRE_ZERO);
  assert_int_equal(rusm__wire_procs_begin(&b, &bld, 9, P(1, 1, 1), 1000), 0);
  uint32_t added = 0;
  char label[32];
  for (;;) {
    int n = snprintf(label, sizeof label, "proc-%u", (unsigned)added);
    rusm__wire_proc p = {P(1, added + 1, 1),   B(label, (size_t)n),  2, added,
                         added * UINT64_C(10), added * UINT64_C(100)};
    int rc = rusm__wire_procs_add(&b, &bld, &p);
    if (rc == RUSM_EWIRE_TOOBIG)
      break;
    assert_int_equal(rc, 0);
    added++;
  }
  assert_true(added > 10);
  rusm__wire_proc bad = k_procs[0];
  bad.pid = 0;
  assert_int_equal(rusm__wire_procs_add(&b, &bld, &bad), RUSM_EWIRE_ZERO);
  bad = k_procs[0];
  bad.status = 4;
  assert_int_equal(rusm__wire_procs_add(&b, &bld, &bad), RUSM_EWIRE_CODE);
  bad = k_procs[0];
  bad.label = B("a\0b", 3);
  assert_int_equal(rusm__wire_procs_add(&b, &bld, &bad), RUSM_EWIRE_STRING);
  rusm__wire_procs_end(&b, &bld, true);

  rusm__frame d;
  size_t used;
  assert_int_equal(rusm__wire_decode(b.data + 3, b.len - 3, 1000, &d, &used),
                   1);
  assert_int_equal(used, b.len - 3);
  assert_int_equal(d.kind, RUSM__WIRE_PROCS_REPLY);
  assert_true(d.procs_reply.more);
  assert_int_equal(d.procs_reply.count, added);
  assert_null(d.procs_reply.items);
  rusm__wire_procs_iter it;
  rusm__wire_procs_iter_init(&it, &d.procs_reply);
  rusm__wire_proc p;
  uint32_t i = 0;
  while (rusm__wire_procs_iter_next(&it, &p)) {
    int n = snprintf(label, sizeof label, "proc-%u", (unsigned)i);
    assert_int_equal(p.pid, P(1, i + 1, 1));
    assert_int_equal(p.label.len, n);
    assert_memory_equal(p.label.p, label, (size_t)n);
    assert_int_equal(p.mailbox_len, i);
    assert_int_equal(p.reductions, i * UINT64_C(10));
    assert_int_equal(p.memory, i * UINT64_C(100));
    i++;
  }
  assert_int_equal(i, added);
  assert_false(rusm__wire_procs_iter_next(&it, &p));

  /* Re-encoding the decoded reply (raw records) gives the same bytes. */
  rusm__wbuf again;
  rusm__wbuf_init(&again);
  assert_int_equal(rusm__wire_encode(&again, &d), 0);
  assert_int_equal(again.len, used);
  assert_memory_equal(again.data, b.data + 3, used);
  /* raw records with a wrong count are refused */
  d.procs_reply.count++;
  rusm__wbuf_reset(&again);
  assert_int_equal(rusm__wire_encode(&again, &d), RUSM_EWIRE_SHORT);
  d.procs_reply.count -= 2;
  assert_int_equal(rusm__wire_encode(&again, &d), RUSM_EWIRE_TRAILING);
  assert_int_equal(again.len, 0);
  rusm__wbuf_free(&again);

  /* abort takes the partial frame back out */
  size_t before = b.len;
  assert_int_equal(rusm__wire_procs_begin(&b, &bld, 1, P(1, 1, 1), 0), 0);
  assert_int_equal(rusm__wire_procs_add(&b, &bld, &k_procs[0]), 0);
  rusm__wire_procs_abort(&b, &bld);
  assert_int_equal(b.len, before);
  rusm__wbuf_free(&b);
}

static void test_negotiate(void **state) {
  assert_int_equal(rusm__wire_negotiate(1, 1, 1, 1), 1);
  assert_int_equal(rusm__wire_negotiate(1, 3, 2, 5), 3);
  assert_int_equal(rusm__wire_negotiate(2, 5, 1, 3), 3);
  assert_int_equal(rusm__wire_negotiate(1, 1, 2, 3), RUSM_EWIRE_VERSION);
  assert_int_equal(rusm__wire_negotiate(0, 0, 0, 4), RUSM_EWIRE_VERSION);
  assert_int_equal(rusm__wire_negotiate(3, 2, 1, 5), RUSM_EWIRE_VERSION);
  assert_int_equal(rusm__wire_negotiate(RUSM__WIRE_VERSION_MIN,
                                        RUSM__WIRE_VERSION_MAX, 1, 200),
                   RUSM__WIRE_VERSION_MAX);
}

static void test_wbuf(void **state) {
  rusm__wbuf b = {0};
  assert_int_equal(rusm__wbuf_append(&b, NULL, 0), 0);
  assert_int_equal(rusm__wbuf_put_u16(&b, 0x0102), 0);
  assert_int_equal(rusm__wbuf_put_u32(&b, 0x03040506), 0);
  assert_int_equal(rusm__wbuf_put_u64(&b, 0x0708090a0b0c0d0eu), 0);
  const uint8_t want[] = {2, 1, 6, 5, 4, 3, 0xe, 0xd, 0xc, 0xb, 0xa, 9, 8, 7};
  assert_int_equal(b.len, sizeof want);
  assert_memory_equal(b.data, want, sizeof want);
  rusm__wbuf_consume(&b, 2);
  assert_int_equal(b.len, sizeof want - 2);
  assert_memory_equal(b.data, want + 2, sizeof want - 2);
  for (int i = 0; i < 10000; i++)
    assert_int_equal(rusm__wbuf_put_u8(&b, (uint8_t)i), 0);
  size_t cap = b.cap;
  uint8_t *data = b.data;
  rusm__wbuf_reset(&b);
  assert_int_equal(b.len, 0);
  assert_int_equal(b.cap, cap);
  assert_ptr_equal(b.data, data);
  assert_int_equal(rusm__wbuf_reserve(&b, SIZE_MAX), RUSM_ENOMEM);
  assert_int_equal(rusm__wbuf_reserve(&b, cap), 0);
  assert_int_equal(b.cap, cap);
  rusm__wbuf_consume(&b, 0);
  rusm__wbuf_free(&b);
  assert_null(b.data);
  assert_int_equal(rusm__wbuf_put_u8(&b, 1), 0); /* usable after free */
  rusm__wbuf_free(&b);
}

/* ------------------------------------------------------------------ */
/* Randomized mutations                                                */
/* ------------------------------------------------------------------ */

#define MAX_FRAMES 64

static void mutate(uint8_t *p, size_t *n, size_t cap) {
  int edits = 1 + (int)rnd_below(3);
  for (int e = 0; e < edits && *n; e++) {
    size_t at = rnd_below(*n);
    switch (rnd_below(7)) {
    case 0: /* bit flip */
      p[at] ^= (uint8_t)(1u << rnd_below(8));
      break;
    case 1: /* random byte */
      p[at] = (uint8_t)rnd();
      break;
    case 2: /* truncation */
      *n = at;
      break;
    case 3: { /* a length field (of some header-looking spot) edited */
      size_t h = at < *n - 1 ? at : 0;
      if (h + 8 > *n)
        break;
      uint32_t len = p[h + 4] | (uint32_t)p[h + 5] << 8;
      static const int64_t deltas[] = {-2, -1, 1, 2, 29, -29};
      switch (rnd_below(4)) {
      case 0:
        len = (uint32_t)((int64_t)len + deltas[rnd_below(6)]);
        break;
      case 1:
        len = 0;
        break;
      case 2:
        len = UINT32_MAX - (uint32_t)rnd_below(3);
        break;
      default:
        len = (uint32_t)rnd_below(512);
      }
      p[h + 4] = (uint8_t)len;
      p[h + 5] = (uint8_t)(len >> 8);
      p[h + 6] = (uint8_t)(len >> 16);
      p[h + 7] = (uint8_t)(len >> 24);
      break;
    }
    case 4: /* a byte inserted */
      if (*n < cap) {
        memmove(p + at + 1, p + at, *n - at);
        p[at] = (uint8_t)rnd();
        (*n)++;
      }
      break;
    case 5: /* a byte removed */
      memmove(p + at, p + at + 1, *n - at - 1);
      (*n)--;
      break;
    default: /* an interesting value in a u8 slot */
      p[at] = (const uint8_t[]){0, 1, 0x7f, 0x80, 0xff}[rnd_below(5)];
    }
  }
}

/* Decodes the whole input: frames, then the final result (0: leftover
 * bytes or none, <0 error). Checks every frame re-encodes to its bytes. */
static int decode_all(const uint8_t *p, size_t n, rusm__frame *frames,
                      size_t *count, size_t *leftover, rusm__wbuf *scratch) {
  size_t off = 0;
  *count = 0;
  for (;;) {
    size_t used = 0;
    rusm__frame d;
    int rc = rusm__wire_decode(p + off, n - off, 4096, &d, &used);
    if (rc <= 0) {
      assert_true(rc == 0 || is_wire_error(rc));
      *leftover = n - off;
      return rc;
    }
    assert_int_equal(rc, 1);
    assert_true(used >= RUSM__WIRE_HDR && used <= n - off);
    rusm__wbuf_reset(scratch);
    assert_int_equal(rusm__wire_encode(scratch, &d), 0);
    assert_int_equal(scratch->len, used);
    assert_memory_equal(scratch->data, p + off, used);
    assert_true(*count < MAX_FRAMES);
    frames[(*count)++] = d;
    off += used;
  }
}

static void test_random_mutations(void **state) {
  rusm__frame s[N_SAMPLES];
  make_samples(s);
  rng_seed(0x5eed0002);
  rusm__wbuf valid, scratch;
  rusm__wbuf_init(&valid);
  rusm__wbuf_init(&scratch);
  enum { ITERS = 200000, CAP = 8192 };
  uint8_t *buf = malloc(CAP);
  assert_non_null(buf);
  size_t frames_seen = 0, errors_seen = 0;
  int error_kinds[16] = {0};
  for (int it = 0; it < ITERS; it++) {
    rusm__wbuf_reset(&valid);
    size_t nf = 1 + rnd_below(4);
    for (size_t i = 0; i < nf; i++)
      assert_int_equal(rusm__wire_encode(&valid, &s[rnd_below(N_SMALL)]), 0);
    assert_true(valid.len < CAP / 2);
    memcpy(buf, valid.data, valid.len);
    size_t n = valid.len;
    mutate(buf, &n, CAP);
    uint8_t *in = exact_copy(buf, n);

    rusm__frame frames[MAX_FRAMES];
    size_t count, leftover;
    int rc = decode_all(in, n, frames, &count, &leftover, &scratch);
    frames_seen += count;
    if (rc < 0) {
      errors_seen++;
      error_kinds[-rc - 200]++;
    }

    /* The same bytes through the reader in random chunks: same frames,
     * same outcome. */
    rusm__wire_reader r;
    rusm__wire_reader_init(&r, 4096);
    size_t got = 0;
    int rrc = 0;
    for (size_t off = 0; off < n && rrc >= 0;) {
      size_t chunk = 1 + rnd_below(n - off < 64 ? n - off : 64);
      assert_int_equal(rusm__wire_reader_feed(&r, in + off, chunk), 0);
      off += chunk;
      rusm__frame d;
      while ((rrc = rusm__wire_reader_next(&r, &d)) == 1) {
        assert_true(got < count);
        assert_true(rusm__wire_frame_equal(&frames[got], &d));
        got++;
      }
    }
    assert_int_equal(got, count);
    if (rc < 0) {
      assert_int_equal(rrc, rc);
    } else {
      assert_int_equal(rusm__wire_reader_finish(&r),
                       leftover ? RUSM_EWIRE_TRUNCATED : 0);
    }
    rusm__wire_reader_free(&r);
    free(in);
  }
  print_message("%d inputs: %zu frames decoded, %zu errors:", ITERS,
                frames_seen, errors_seen);
  for (int i = 0; i <= -RUSM_EWIRE_FIELD - 200; i++)
    print_message(" %d", error_kinds[i]);
  print_message("\n");
  assert_true(frames_seen > 0 && errors_seen > 0);
  free(buf);
  rusm__wbuf_free(&valid);
  rusm__wbuf_free(&scratch);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_every_kind),
      cmocka_unit_test(test_header_layout),
      cmocka_unit_test(test_encode_send_matches_encode),
      cmocka_unit_test(test_byte_at_a_time),
      cmocka_unit_test(test_back_to_back),
      cmocka_unit_test(test_header_errors),
      cmocka_unit_test(test_oversized_seen_early),
      cmocka_unit_test(test_truncated),
      cmocka_unit_test(test_body_length_mismatch),
      cmocka_unit_test(test_bad_strings),
      cmocka_unit_test(test_zero_ids),
      cmocka_unit_test(test_bad_codes_and_fields),
      cmocka_unit_test(test_strerror),
      cmocka_unit_test(test_procs_builder),
      cmocka_unit_test(test_negotiate),
      cmocka_unit_test(test_wbuf),
      cmocka_unit_test(test_random_mutations),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
