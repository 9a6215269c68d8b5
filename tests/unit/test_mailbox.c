// ctest-labels: concurrent
/*
 * Unit tests: mailboxes and messages — order per sender, many senders,
 * selective receive (tag, mask, predicate), receive timeouts (attached,
 * stackful, stackless), shared buffers, payload edge cases.
 */
#include "support.h"

#include <pthread.h>

#define TAG_DATA 1

typedef struct seq_msg {
  uint32_t sender;
  uint32_t pad;
  uint64_t seq;
} seq_msg;

/* ------------------------------------------------------------------ */
/* Order per sender                                                    */
/* ------------------------------------------------------------------ */

typedef struct order_arg {
  rusm_pid_t parent;
  uint64_t n;
} order_arg;

static void order_rx_body(rusm_proc *self, void *arg) {
  order_arg *a = arg;
  rusm_filter f = rusm_filter_tag(TAG_DATA);
  uint64_t bad = 0;
  for (uint64_t i = 0; i < a->n; i++) {
    rusm_msg *m = NULL;
    if (rusm_receive(self, &f, T_GUARD_MS, &m) != 0) {
      bad += a->n - i;
      break;
    }
    bad += t_msg_u64(m) != i;
    rusm_msg_free(m);
  }
  t_send_u64(rusm_proc_rt(self), a->parent, T_TAG_DONE, bad);
}

static void test_order_one_sender_to_stackful(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  order_arg a = {e.pid, T_SCALE(100000, 10000)};
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e.rt, order_rx_body, &a, NULL, &p), 0);
  for (uint64_t i = 0; i < a.n; i++)
    t_send_u64(e.rt, p, TAG_DATA, i);
  assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 0);
  t_wait_idle(&e);
  t_stop(&e);
}

static void test_order_one_sender_to_self(void **state) {
  (void)state;
  enum { N = T_SCALE(20000, 2000) };
  t_env e;
  t_start(&e, 0);
  for (uint64_t i = 0; i < N; i++)
    t_send_u64(e.rt, e.pid, TAG_DATA, i);
  for (uint64_t i = 0; i < N; i++) {
    rusm_msg *m = t_recv(&e, NULL);
    assert_int_equal(rusm_msg_tag(m), TAG_DATA);
    assert_int_equal(t_msg_u64(m), i);
    assert_true(rusm_msg_from(m) == e.pid);
    rusm_msg_free(m);
  }
  t_expect_nothing(&e, NULL);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Many senders, one receiver                                          */
/* ------------------------------------------------------------------ */

enum { NSL = 4, NSF = 4, NTH = 2, NSENDERS = NSL + NSF + NTH };
#define PER_SENDER T_SCALE(20000, 2000)
#define TAG_CONT 2

typedef struct sender_arg {
  rusm_pid_t to;
  uint32_t id;
  uint64_t seq; /* stackless: next to send */
  rusm_rt *rt;  /* threads */
} sender_arg;

static void send_seq(rusm_rt *rt, rusm_pid_t to, uint32_t id, uint64_t seq) {
  seq_msg s = {id, 0, seq};
  int rc = rusm_send(rt, to, TAG_DATA, &s, sizeof s);
  T_CHECK(rc == 0);
}

/* Stackless: sends in chunks, continuing through messages to itself. */
static rusm_next sl_sender_handle(rusm_proc *self, void *state, rusm_msg *m) {
  sender_arg *a = state;
  rusm_rt *rt = rusm_proc_rt(self);
  (void)m;
  for (int i = 0; i < 64 && a->seq < PER_SENDER; i++)
    send_seq(rt, a->to, a->id, a->seq++);
  if (a->seq == PER_SENDER)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  t_send(rt, rusm_self(self), TAG_CONT, NULL, 0);
  return rusm_next_wait();
}

static const rusm_stackless_ops sl_sender_ops = {NULL, sl_sender_handle, NULL};

static void sf_sender_body(rusm_proc *self, void *arg) {
  sender_arg *a = arg;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_filter go = rusm_filter_tag(T_TAG_GO);
  rusm_msg *m = NULL;
  T_CHECK(rusm_receive(self, &go, T_GUARD_MS, &m) == 0);
  rusm_msg_free(m);
  for (uint64_t i = 0; i < PER_SENDER; i++) {
    send_seq(rt, a->to, a->id, i);
    if (i % 1000 == 999)
      rusm_yield(self);
  }
}

static void *th_sender(void *p) {
  sender_arg *a = p;
  rusm_proc *me = NULL;
  int rc = rusm_attach(a->rt, &me);
  T_CHECK(rc == 0);
  if (rc != 0)
    return NULL;
  t_send_u64(a->rt, a->to, T_TAG_READY, rusm_self(me));
  rusm_msg *m = NULL;
  rusm_filter go = rusm_filter_tag(T_TAG_GO);
  T_CHECK(rusm_receive(me, &go, T_GUARD_MS, &m) == 0);
  rusm_msg_free(m);
  for (uint64_t i = 0; i < PER_SENDER; i++)
    send_seq(a->rt, a->to, a->id, i);
  rusm_detach(me);
  return NULL;
}

/* 4 stackless + 4 stackful + 2 attached threads send to the test thread:
 * all messages arrive, each sender's in its order. */
static void test_many_senders_one_receiver(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  sender_arg args[NSENDERS];
  rusm_pid_t pids[NSENDERS];
  pthread_t th[NTH];
  memset(args, 0, sizeof args);
  for (uint32_t i = 0; i < NSENDERS; i++) {
    args[i].to = e.pid;
    args[i].id = i;
    args[i].rt = e.rt;
  }
  for (uint32_t i = 0; i < NSF; i++)
    assert_int_equal(rusm_spawn_stackful(e.rt, sf_sender_body, &args[NSL + i],
                                         NULL, &pids[NSL + i]),
                     0);
  for (uint32_t i = 0; i < NTH; i++) {
    assert_int_equal(
        pthread_create(&th[i], NULL, th_sender, &args[NSL + NSF + i]), 0);
  }
  for (uint32_t i = 0; i < NTH; i++) {
    rusm_pid_t tp = t_recv_u64(&e, T_TAG_READY);
    /* READYs may come in any order: match the pid to its thread below. */
    pids[NSL + NSF + i] = tp;
  }
  for (uint32_t i = 0; i < NSL; i++)
    assert_int_equal(
        rusm_spawn_stackless(e.rt, &sl_sender_ops, &args[i], NULL, &pids[i]),
        0);
  /* Go: stackless ones start on their first message. */
  for (uint32_t i = 0; i < NSENDERS; i++)
    t_send(e.rt, pids[i], i < NSL ? TAG_CONT : T_TAG_GO, NULL, 0);

  uint64_t next[NSENDERS] = {0};
  rusm_pid_t from[NSENDERS] = {0};
  rusm_filter f = rusm_filter_tag(TAG_DATA);
  uint64_t total = (uint64_t)NSENDERS * PER_SENDER;
  for (uint64_t k = 0; k < total; k++) {
    rusm_msg *m = t_recv(&e, &f);
    seq_msg s;
    assert_int_equal(rusm_msg_len(m), sizeof s);
    memcpy(&s, rusm_msg_data(m), sizeof s);
    assert_true(s.sender < NSENDERS);
    if (s.seq != next[s.sender])
      fail_msg("sender %u: got seq %" PRIu64 ", expected %" PRIu64, s.sender,
               s.seq, next[s.sender]);
    next[s.sender]++;
    if (from[s.sender] == RUSM_PID_NONE)
      from[s.sender] = rusm_msg_from(m);
    assert_true(rusm_msg_from(m) == from[s.sender]);
    rusm_msg_free(m);
  }
  for (uint32_t i = 0; i < NSENDERS; i++)
    assert_int_equal(next[i], PER_SENDER);
  for (uint32_t i = 0; i < NSL + NSF; i++)
    assert_true(from[i] == pids[i]);
  for (uint32_t i = 0; i < NTH; i++)
    pthread_join(th[i], NULL);
  /* The threads' pids, in whatever order their READYs came. */
  rusm_pid_t a0 = from[NSL + NSF], a1 = from[NSL + NSF + 1];
  assert_true((a0 == pids[NSL + NSF] && a1 == pids[NSL + NSF + 1]) ||
              (a0 == pids[NSL + NSF + 1] && a1 == pids[NSL + NSF]));
  t_expect_nothing(&e, &f);
  t_wait_idle(&e);
  t_stop(&e);
}

typedef struct raw_arg {
  rusm_rt *rt;
  rusm_pid_t to;
  uint32_t id;
} raw_arg;

static void *raw_sender(void *p) {
  raw_arg *a = p;
  for (uint64_t i = 0; i < 2000; i++)
    send_seq(a->rt, a->to, a->id, i);
  return NULL;
}

/* Threads that are not attached: order kept, from == RUSM_PID_NONE. */
static void test_unattached_senders(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  raw_arg a[2] = {{e.rt, e.pid, 0}, {e.rt, e.pid, 1}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&th[i], NULL, raw_sender, &a[i]), 0);
  uint64_t next[2] = {0, 0};
  for (int k = 0; k < 4000; k++) {
    rusm_msg *m = t_recv(&e, NULL);
    seq_msg s;
    memcpy(&s, rusm_msg_data(m), sizeof s);
    assert_true(s.sender < 2);
    assert_int_equal(s.seq, next[s.sender]);
    next[s.sender]++;
    assert_true(rusm_msg_from(m) == RUSM_PID_NONE);
    rusm_msg_free(m);
  }
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Selective receive                                                   */
/* ------------------------------------------------------------------ */

static void expect_msg(t_env *e, const rusm_filter *f, uint64_t tag,
                       uint64_t seq) {
  rusm_msg *m = NULL;
  assert_int_equal(rusm_receive(e->me, f, 0, &m), 0);
  assert_int_equal(rusm_msg_tag(m), tag);
  assert_int_equal(t_msg_u64(m), seq);
  rusm_msg_free(m);
}

static void test_selective_by_tag(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  static const uint64_t tags[] = {1, 2, 3, 1, 2, 3, 1, 2, 3};
  for (uint64_t i = 0; i < 9; i++)
    t_send_u64(e.rt, e.pid, tags[i], i);
  rusm_filter f2 = rusm_filter_tag(2), f3 = rusm_filter_tag(3);
  rusm_filter f9 = rusm_filter_tag(9);
  expect_msg(&e, &f2, 2, 1);
  expect_msg(&e, &f2, 2, 4);
  expect_msg(&e, &f3, 3, 2);
  t_expect_nothing(&e, &f9);
  /* The rest, in arrival order. */
  static const uint64_t rest[] = {0, 3, 5, 6, 7, 8};
  for (int i = 0; i < 6; i++)
    expect_msg(&e, NULL, tags[rest[i]], rest[i]);
  t_expect_nothing(&e, NULL);
  t_stop(&e);
}

static void test_selective_by_mask(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  /* Tags: class in bits 8..11, instance in the low byte. */
  static const uint64_t tags[] = {0x101, 0x102, 0x201, 0x301,
                                  0x202, 0x105, 0x2ff};
  for (uint64_t i = 0; i < 7; i++)
    t_send_u64(e.rt, e.pid, tags[i], i);
  rusm_filter cls2 = {0x200, 0xf00, NULL, NULL};
  expect_msg(&e, &cls2, 0x201, 2);
  expect_msg(&e, &cls2, 0x202, 4);
  /* Low byte 0x05 of any class. */
  rusm_filter low5 = {0x05, 0xff, NULL, NULL};
  expect_msg(&e, &low5, 0x105, 5);
  expect_msg(&e, &cls2, 0x2ff, 6);
  t_expect_nothing(&e, &cls2);
  /* mask 0 without a predicate matches anything: the oldest first. */
  rusm_filter any = {0, 0, NULL, NULL};
  expect_msg(&e, &any, 0x101, 0);
  expect_msg(&e, &any, 0x102, 1);
  expect_msg(&e, &any, 0x301, 3);
  t_expect_nothing(&e, NULL);
  t_stop(&e);
}

typedef struct mod_arg {
  uint64_t mod, rem;
  int calls;
} mod_arg;

static bool seq_mod(const rusm_msg *m, void *arg) {
  mod_arg *a = arg;
  a->calls++;
  return t_msg_u64(m) % a->mod == a->rem;
}

static void test_selective_by_predicate(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  for (uint64_t i = 0; i < 12; i++)
    t_send_u64(e.rt, e.pid, i % 2 ? 7 : 8, i);
  mod_arg by3 = {3, 2, 0};
  rusm_filter p3 = {0, 0, seq_mod, &by3};
  expect_msg(&e, &p3, 8, 2);
  expect_msg(&e, &p3, 7, 5);
  assert_true(by3.calls >= 4);
  /* Predicate and mask together: both must hold. */
  mod_arg by4 = {4, 3, 0};
  rusm_filter tag7_by4 = {7, ~UINT64_C(0), seq_mod, &by4};
  expect_msg(&e, &tag7_by4, 7, 3);
  expect_msg(&e, &tag7_by4, 7, 7);
  expect_msg(&e, &tag7_by4, 7, 11);
  t_expect_nothing(&e, &tag7_by4);
  mod_arg by4b = {4, 0, 0};
  rusm_filter tag7_by4b = {7, ~UINT64_C(0), seq_mod, &by4b};
  t_expect_nothing(&e, &tag7_by4b); /* 7s are odd: never % 4 == 0 */
  static const uint64_t rest[] = {0, 1, 4, 6, 8, 9, 10};
  for (int i = 0; i < 7; i++)
    expect_msg(&e, NULL, rest[i] % 2 ? 7 : 8, rest[i]);
  t_expect_nothing(&e, NULL);
  t_stop(&e);
}

/* The match sits behind many that do not match: found, the rest kept. */
static void test_selective_deep_in_mailbox(void **state) {
  (void)state;
  enum { N = T_SCALE(10000, 2000) };
  t_env e;
  t_start(&e, 0);
  for (uint64_t i = 0; i < N; i++)
    t_send_u64(e.rt, e.pid, 5, i);
  t_send_u64(e.rt, e.pid, 6, N);
  rusm_filter f6 = rusm_filter_tag(6);
  expect_msg(&e, &f6, 6, N);
  rusm_proc_info info;
  assert_int_equal(rusm_proc_info_get(e.rt, e.pid, &info), 0);
  assert_int_equal(info.mailbox_len, N);
  for (uint64_t i = 0; i < N; i++)
    expect_msg(&e, NULL, 5, i);
  t_stop(&e);
}

static bool never(const rusm_msg *m, void *arg) {
  (void)m;
  (void)arg;
  return false;
}

static bool payload_is(const rusm_msg *m, void *arg) {
  return t_msg_u64(m) == *(uint64_t *)arg;
}

static void test_filter_match(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  t_send_u64(e.rt, e.pid, 0x1234, 7);
  rusm_msg *m = t_recv(&e, NULL);
  uint64_t seven = 7, eight = 8;
  rusm_filter f;
  assert_true(rusm_filter_match(NULL, m));
  f = (rusm_filter){0, 0, NULL, NULL};
  assert_true(rusm_filter_match(&f, m));
  f = rusm_filter_tag(0x1234);
  assert_true(f.value == 0x1234 && f.mask == ~UINT64_C(0));
  assert_null(f.pred);
  assert_true(rusm_filter_match(&f, m));
  f = rusm_filter_tag(0x1235);
  assert_false(rusm_filter_match(&f, m));
  f = (rusm_filter){0x1200, 0xff00, NULL, NULL};
  assert_true(rusm_filter_match(&f, m));
  f = (rusm_filter){0x1300, 0xff00, NULL, NULL};
  assert_false(rusm_filter_match(&f, m));
  f = (rusm_filter){0, 0, payload_is, &seven};
  assert_true(rusm_filter_match(&f, m));
  f = (rusm_filter){0, 0, payload_is, &eight};
  assert_false(rusm_filter_match(&f, m));
  f = (rusm_filter){0x1234, ~UINT64_C(0), never, NULL};
  assert_false(rusm_filter_match(&f, m));
  f = (rusm_filter){0x1235, ~UINT64_C(0), payload_is, &seven};
  assert_false(rusm_filter_match(&f, m));
  rusm_msg_free(m);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Receive timeouts                                                    */
/* ------------------------------------------------------------------ */

/* On GO, waits 20 ms, then sends DONE to whoever sent the GO. */
typedef struct delayed_state {
  rusm_pid_t to;
} delayed_state;

static rusm_next delayed_handle(rusm_proc *self, void *state, rusm_msg *m) {
  delayed_state *s = state;
  rusm_filter never_tag = rusm_filter_tag(0x4242);
  if (m != NULL && rusm_msg_tag(m) == T_TAG_GO) {
    s->to = rusm_msg_from(m);
    return rusm_next_wait_for(&never_tag, 20);
  }
  T_CHECK(m == NULL);
  t_send(rusm_proc_rt(self), s->to, T_TAG_DONE, NULL, 0);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops delayed_ops = {NULL, delayed_handle, NULL};

static void test_receive_timeouts_attached(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_msg *m = NULL;
  rusm_filter f2 = rusm_filter_tag(2);

  /* Poll: empty, then with only non-matching messages. */
  assert_int_equal(rusm_receive(e.me, NULL, 0, &m), RUSM_ETIMEDOUT);
  assert_null(m);
  assert_int_equal(rusm_try_receive(e.me, NULL, &m), RUSM_ETIMEDOUT);
  t_send_u64(e.rt, e.pid, 1, 0);
  assert_int_equal(rusm_receive(e.me, &f2, 0, &m), RUSM_ETIMEDOUT);
  assert_int_equal(rusm_try_receive(e.me, &f2, &m), RUSM_ETIMEDOUT);

  /* Short timeouts return RUSM_ETIMEDOUT, never early. */
  static const int64_t timeouts[] = {1, 20, 50};
  for (int i = 0; i < 3; i++) {
    int64_t t0 = rusm_now_ns();
    assert_int_equal(rusm_receive(e.me, &f2, timeouts[i], &m), RUSM_ETIMEDOUT);
    assert_true(rusm_now_ns() - t0 >= timeouts[i] * 1000000);
  }

  /* A message arriving before the timeout is returned. */
  delayed_state st = {RUSM_PID_NONE};
  rusm_pid_t d;
  assert_int_equal(rusm_spawn_stackless(e.rt, &delayed_ops, &st, NULL, &d), 0);
  t_send(e.rt, d, T_TAG_GO, NULL, 0);
  rusm_filter done = rusm_filter_tag(T_TAG_DONE);
  int64_t t0 = rusm_now_ns();
  assert_int_equal(rusm_receive(e.me, &done, T_GUARD_MS, &m), 0);
  assert_true(rusm_msg_from(m) == d);
  rusm_msg_free(m);
  assert_true(rusm_now_ns() - t0 >= 20 * 1000000 / 2); /* it did wait */

  /* The non-matching message is still there. */
  expect_msg(&e, NULL, 1, 0);
  t_wait_idle(&e);
  t_stop(&e);
}

/* Stackless timeouts: handle(NULL) once; a message before the deadline
 * cancels it; a later, different wait gets its own deadline. */
typedef struct tmo_state {
  rusm_pid_t parent;
  int64_t t0;     /* start of the current wait */
  int phase;      /* 0: first wait (60 ms), 1: second wait (100 ms) */
  uint64_t msgs;  /* tag-5 messages taken */
  uint64_t nulls; /* handle(NULL) calls */
} tmo_state;

static rusm_next tmo_init(rusm_proc *self, void **state) {
  (void)self;
  tmo_state *s = *state;
  rusm_filter f = rusm_filter_tag(77);
  s->t0 = rusm_now_ns();
  return rusm_next_wait_for(&f, 60);
}

static rusm_next tmo_handle(rusm_proc *self, void *state, rusm_msg *m) {
  tmo_state *s = state;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_filter f77 = rusm_filter_tag(77), f5 = rusm_filter_tag(5);
  int64_t now = rusm_now_ns();
  if (s->phase == 0) {
    /* First wait: for 77 with 60 ms; tag-5 traffic must not wake us. */
    T_CHECK(m == NULL);
    T_CHECK(now - s->t0 >= 60 * 1000000);
    s->nulls++;
    s->phase = 1;
    return rusm_next_wait_for(&f5, 0); /* poll the queued 5s */
  }
  if (s->phase == 1) {
    if (m != NULL) {
      T_CHECK(rusm_msg_tag(m) == 5);
      T_CHECK(t_msg_u64(m) == s->msgs);
      s->msgs++;
      return rusm_next_wait_for(&f5, 0);
    }
    s->nulls++; /* poll found nothing: all 5s taken */
    s->phase = 2;
    t_send_u64(rt, s->parent, T_TAG_READY, s->msgs);
    s->t0 = now;
    return rusm_next_wait_for(&f77, 10000);
  }
  if (s->phase == 2) {
    /* A 77 arrives well before the 10 s deadline. */
    T_CHECK(m != NULL && rusm_msg_tag(m) == 77);
    s->phase = 3;
    s->t0 = now;
    return rusm_next_wait_for(&f77, 100);
  }
  /* phase 3: the 100 ms timeout, not the cancelled 10 s one. */
  T_CHECK(m == NULL);
  T_CHECK(now - s->t0 >= 100 * 1000000);
  s->nulls++;
  t_send_u64(rt, s->parent, T_TAG_DONE, s->nulls);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops tmo_ops = {tmo_init, tmo_handle, NULL};

static void test_stackless_timeouts(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  tmo_state s;
  memset(&s, 0, sizeof s);
  s.parent = e.pid;
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &tmo_ops, &s, NULL, &p), 0);
  for (uint64_t i = 0; i < 20; i++)
    t_send_u64(e.rt, p, 5, i);
  assert_int_equal(t_recv_u64(&e, T_TAG_READY), 20);
  t_send(e.rt, p, 77, NULL, 0);
  assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 3);
  t_wait_idle(&e);
  t_stop(&e);
}

/* A stackless wait without timeout is never woken by time. */
static rusm_next ping_once_handle(rusm_proc *self, void *state, rusm_msg *m) {
  if (m == NULL) {
    T_CHECK(!"handle(NULL) without a timeout");
    return rusm_next_stop(RUSM_REASON_NORMAL);
  }
  t_send(rusm_proc_rt(self), rusm_msg_from(m), T_TAG_PONG, NULL, 0);
  (void)state;
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops ping_once_ops = {NULL, ping_once_handle, NULL};

static void test_stackless_wait_forever(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &ping_once_ops, NULL, NULL, &p),
                   0);
  /* Give a wrong timer a chance to fire before the message comes. */
  rusm_msg *m = NULL;
  rusm_filter never_tag = rusm_filter_tag(0x4242);
  assert_int_equal(rusm_receive(e.me, &never_tag, 30, &m), RUSM_ETIMEDOUT);
  t_send(e.rt, p, T_TAG_PING, NULL, 0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_PONG));
  t_wait_idle(&e);
  t_stop(&e);
}

/* A timed wait satisfied by a message, then a wait without timeout: the
 * old timer must not fire into the new wait. */
static rusm_next untimed_init(rusm_proc *self, void **state) {
  (void)self;
  (void)state;
  rusm_filter f = rusm_filter_tag(77);
  return rusm_next_wait_for(&f, 10000);
}

static rusm_next untimed_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)state;
  if (m == NULL) {
    T_CHECK(!"a cancelled timeout fired");
    return rusm_next_stop(RUSM_REASON_NORMAL);
  }
  if (rusm_msg_tag(m) == 77) {
    rusm_filter f = rusm_filter_tag(T_TAG_PING);
    return rusm_next_wait_for(&f, -1);
  }
  t_send(rusm_proc_rt(self), rusm_msg_from(m), T_TAG_PONG, NULL, 0);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops untimed_ops = {untimed_init, untimed_handle,
                                               NULL};

static void untimed_body(rusm_proc *self, void *arg) {
  rusm_pid_t parent = (rusm_pid_t)(uintptr_t)arg;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_filter f77 = rusm_filter_tag(77), f78 = rusm_filter_tag(78);
  rusm_msg *m = NULL;
  t_send(rt, parent, T_TAG_READY, NULL, 0);
  T_CHECK(rusm_receive(self, &f77, 10000, &m) == 0);
  rusm_msg_free(m);
  t_send(rt, parent, T_TAG_READY, NULL, 0);
  T_CHECK(rusm_receive(self, &f78, -1, &m) == 0);
  rusm_msg_free(m);
  t_send(rt, parent, T_TAG_DONE, NULL, 0);
}

static void test_timeout_then_wait_forever(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 1);
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &untimed_ops, NULL, NULL, &p), 0);
  t_send(e.rt, p, 77, NULL, 0);
  t_send(e.rt, p, T_TAG_PING, NULL, 0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_PONG));

  assert_int_equal(rusm_spawn_stackful(e.rt, untimed_body,
                                       (void *)(uintptr_t)e.pid, NULL, &p),
                   0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_READY));
  t_send(e.rt, p, 77, NULL, 0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_READY));
  t_send(e.rt, p, 78, NULL, 0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_DONE));
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Shared buffers                                                      */
/* ------------------------------------------------------------------ */

#define BUF_LEN (1u << 20)
#define TAG_BUF 40

typedef struct buf_rx_arg {
  rusm_pid_t parent;
  int hold; /* keep a reference past the message, release on GO */
} buf_rx_arg;

static bool pattern_ok(const uint8_t *d, size_t len) {
  for (size_t i = 0; i < len; i += 4096)
    if (d[i] != (uint8_t)(i / 4096 * 7 + 1))
      return false;
  return d[len - 1] == 0xee;
}

static void buf_rx_body(rusm_proc *self, void *arg) {
  buf_rx_arg *a = arg;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_filter f = rusm_filter_tag(TAG_BUF);
  rusm_msg *m = NULL;
  if (rusm_receive(self, &f, T_GUARD_MS, &m) != 0) {
    T_CHECK(!"no buffer came");
    return;
  }
  rusm_buf *b = rusm_msg_buf(m);
  T_CHECK(b != NULL);
  if (b == NULL) {
    rusm_msg_free(m);
    return;
  }
  T_CHECK(rusm_msg_data(m) == rusm_buf_data(b));
  T_CHECK(rusm_msg_len(m) == BUF_LEN && rusm_buf_len(b) == BUF_LEN);
  T_CHECK(pattern_ok(rusm_msg_data(m), rusm_msg_len(m)));
  uint64_t ptr = (uint64_t)(uintptr_t)rusm_buf_data(b);
  rusm_buf *kept = a->hold ? rusm_buf_ref(b) : NULL;
  T_CHECK(!a->hold || kept == b);
  rusm_msg_free(m);
  t_send_u64(rt, a->parent, T_TAG_DONE, ptr);
  if (kept != NULL) {
    rusm_filter go = rusm_filter_tag(T_TAG_GO);
    T_CHECK(rusm_receive(self, &go, T_GUARD_MS, &m) == 0);
    rusm_msg_free(m);
    /* Every other reference is gone by now: ours keeps it alive. */
    T_CHECK(pattern_ok(rusm_buf_data(kept), rusm_buf_len(kept)));
    rusm_buf_unref(kept);
    t_send_u64(rt, a->parent, T_TAG_DONE, 0);
  }
}

static void test_shared_buffer(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_buf *b = rusm_buf_new(BUF_LEN);
  assert_non_null(b);
  assert_int_equal(rusm_buf_len(b), BUF_LEN);
  uint8_t *d = rusm_buf_data(b);
  for (size_t i = 0; i < BUF_LEN; i += 4096)
    d[i] = (uint8_t)(i / 4096 * 7 + 1);
  d[BUF_LEN - 1] = 0xee;

  buf_rx_arg args[3] = {{e.pid, 0}, {e.pid, 0}, {e.pid, 1}};
  rusm_pid_t p[3];
  for (int i = 0; i < 3; i++)
    assert_int_equal(
        rusm_spawn_stackful(e.rt, buf_rx_body, &args[i], NULL, &p[i]), 0);
  rusm_metrics m0 = *t_metrics(e.rt);
  for (int i = 0; i < 3; i++)
    assert_int_equal(rusm_send_buf(e.rt, p[i], TAG_BUF, b), 0);
  /* Our own copy to ourselves, then drop our reference: the receivers'
   * references keep the buffer alive. */
  assert_int_equal(rusm_send_buf(e.rt, e.pid, TAG_BUF, b), 0);
  rusm_buf_unref(b);
  for (int i = 0; i < 3; i++)
    assert_true(t_recv_u64(&e, T_TAG_DONE) == (uint64_t)(uintptr_t)d);
  rusm_msg *m = t_recv_tag(&e, TAG_BUF);
  assert_ptr_equal(rusm_msg_buf(m), b);
  assert_ptr_equal(rusm_msg_data(m), d);
  assert_true(pattern_ok(rusm_msg_data(m), rusm_msg_len(m)));
  rusm_msg_free(m);
  /* Now only the holder's reference is left. */
  t_send(e.rt, p[2], T_TAG_GO, NULL, 0);
  assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 0);
  t_wait_idle(&e);
  rusm_metrics *m1 = t_metrics(e.rt);
  assert_true(m1->sent - m0.sent >= 4);
  t_stop(&e);
}

static void test_buf_api(void **state) {
  (void)state;
  static const char text[] = "hello, buffer";
  rusm_buf *b = rusm_buf_from(text, sizeof text);
  assert_non_null(b);
  assert_int_equal(rusm_buf_len(b), sizeof text);
  assert_true(rusm_buf_data(b) != (const uint8_t *)text);
  assert_memory_equal(rusm_buf_data(b), text, sizeof text);
  assert_ptr_equal(rusm_buf_ref(b), b);
  rusm_buf_unref(b);
  assert_memory_equal(rusm_buf_data(b), text, sizeof text); /* still held */
  rusm_buf_unref(b);
  rusm_buf_unref(NULL);

  rusm_buf *z = rusm_buf_new(0);
  if (z != NULL) {
    assert_int_equal(rusm_buf_len(z), 0);
    rusm_buf_unref(z);
  }
  z = rusm_buf_from(NULL, 0);
  if (z != NULL) {
    assert_int_equal(rusm_buf_len(z), 0);
    rusm_buf_unref(z);
  }
}

/* ------------------------------------------------------------------ */
/* Payloads                                                            */
/* ------------------------------------------------------------------ */

static void test_payload_sizes_and_copies(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  /* Empty. */
  assert_int_equal(rusm_send(e.rt, e.pid, 3, NULL, 0), 0);
  rusm_msg *m = t_recv_tag(&e, 3);
  assert_int_equal(rusm_msg_len(m), 0);
  assert_null(rusm_msg_buf(m));
  rusm_msg_free(m);

  /* Every size around the pool's classes, then large ones. */
  static uint8_t src[70000];
  for (size_t i = 0; i < sizeof src; i++)
    src[i] = (uint8_t)(i * 31 + 7);
  static const size_t sizes[] = {
      1,   7,   8,   15,   16,   17,   63,   64,   65,    100,  127,
      128, 129, 200, 255,  256,  257,  400,  447,  448,   449,  464,
      511, 512, 513, 1000, 4095, 4096, 4097, 9999, 65536, 70000};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
    assert_int_equal(rusm_send(e.rt, e.pid, 4, src, sizes[k]), 0);
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    m = t_recv_tag(&e, 4);
    assert_int_equal(rusm_msg_len(m), sizes[k]);
    assert_memory_equal(rusm_msg_data(m), src, sizes[k]);
    rusm_msg_free(m);
  }

  /* The payload is copied at send: later changes do not show. */
  size_t big = T_SCALE(4u << 20, 1u << 20);
  uint8_t *p = malloc(big);
  assert_non_null(p);
  memset(p, 0x5a, big);
  assert_int_equal(rusm_send(e.rt, e.pid, 5, p, big), 0);
  memset(p, 0xa5, big);
  m = t_recv_tag(&e, 5);
  assert_int_equal(rusm_msg_len(m), big);
  const uint8_t *d = rusm_msg_data(m);
  assert_true(d[0] == 0x5a && d[big / 2] == 0x5a && d[big - 1] == 0x5a);
  rusm_msg_free(m);
  free(p);
  rusm_msg_free(NULL);
  t_stop(&e);
}

/* A process sending to itself (stackless and stackful). */
static rusm_next self_send_init(rusm_proc *self, void **state) {
  (void)state;
  for (uint64_t i = 0; i < 10; i++)
    t_send_u64(rusm_proc_rt(self), rusm_self(self), 9, i);
  return rusm_next_wait();
}

typedef struct self_state {
  rusm_pid_t parent;
  uint64_t next;
} self_state;

static rusm_next self_send_handle(rusm_proc *self, void *state, rusm_msg *m) {
  self_state *s = state;
  T_CHECK(m != NULL && rusm_msg_tag(m) == 9);
  T_CHECK(rusm_msg_from(m) == rusm_self(self));
  T_CHECK(t_msg_u64(m) == s->next);
  if (++s->next == 10) {
    t_send(rusm_proc_rt(self), s->parent, T_TAG_DONE, NULL, 0);
    return rusm_next_stop(RUSM_REASON_NORMAL);
  }
  return rusm_next_wait();
}

static const rusm_stackless_ops self_send_ops = {self_send_init,
                                                 self_send_handle, NULL};

static void self_send_body(rusm_proc *self, void *arg) {
  self_state *s = arg;
  for (uint64_t i = 0; i < 10; i++)
    t_send_u64(rusm_proc_rt(self), rusm_self(self), 9, i);
  for (uint64_t i = 0; i < 10; i++) {
    rusm_msg *m = NULL;
    T_CHECK(rusm_receive(self, NULL, 0, &m) == 0);
    if (m == NULL)
      return;
    T_CHECK(t_msg_u64(m) == i && rusm_msg_from(m) == rusm_self(self));
    rusm_msg_free(m);
  }
  t_send(rusm_proc_rt(self), s->parent, T_TAG_DONE, NULL, 0);
}

static void test_send_to_self(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  self_state a = {e.pid, 0}, b = {e.pid, 0};
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &self_send_ops, &a, NULL, &p), 0);
  assert_int_equal(rusm_spawn_stackful(e.rt, self_send_body, &b, NULL, &p), 0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_DONE));
  rusm_msg_free(t_recv_tag(&e, T_TAG_DONE));
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Every message is delivered or dropped, whatever races with exits     */
/* ------------------------------------------------------------------ */

enum { STORM_PIDS = 16 };

typedef struct storm {
  rusm_rt *rt;
  _Atomic rusm_pid_t pids[STORM_PIDS];
  atomic_int stop;
  atomic_uint_fast64_t sent;
} storm;

static void *storm_sender(void *p) {
  storm *st = p;
  uint64_t n = 0;
  while (!atomic_load(&st->stop)) {
    for (int i = 0; i < STORM_PIDS; i++) {
      T_CHECK(rusm_send(st->rt, atomic_load(&st->pids[i]), 1, &n, sizeof n) ==
              0);
      n++;
    }
  }
  atomic_fetch_add(&st->sent, n);
  return NULL;
}

/* Takes 20 messages, then stops. */
static rusm_next take20_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)self;
  (void)m;
  uintptr_t *left = state;
  if (--*left == 0)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  return rusm_next_wait();
}

static void take20_terminate(rusm_proc *self, void *state,
                             const rusm_reason *why) {
  (void)self;
  (void)state;
  (void)why;
}

static const rusm_stackless_ops take20_ops = {NULL, take20_handle,
                                              take20_terminate};

static void take20_body(rusm_proc *self, void *arg) {
  (void)arg;
  for (int i = 0; i < 20; i++) {
    rusm_msg *m = NULL;
    if (rusm_receive(self, NULL, T_GUARD_MS, &m) != 0)
      return;
    rusm_msg_free(m);
  }
}

static void test_delivered_or_dropped_under_exit_races(void **state) {
  (void)state;
  enum { ROUNDS = T_SCALE(60, 15) };
  t_env e;
  t_start(&e, 0);
  static storm st;
  memset(&st, 0, sizeof st);
  st.rt = e.rt;
  static uintptr_t budget[ROUNDS][STORM_PIDS];
  rusm_metrics m0 = *t_metrics(e.rt);
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&th[i], NULL, storm_sender, &st), 0);
  for (int r = 0; r < ROUNDS; r++) {
    for (int i = 0; i < STORM_PIDS; i++) {
      rusm_pid_t p;
      budget[r][i] = 20;
      if (i % 2)
        assert_int_equal(
            rusm_spawn_stackless(e.rt, &take20_ops, &budget[r][i], NULL, &p),
            0);
      else
        assert_int_equal(rusm_spawn_stackful(e.rt, take20_body, NULL, NULL, &p),
                         0);
      atomic_store(&st.pids[i], p);
    }
    t_wait_idle(&e); /* all 16 took their 20 and exited */
  }
  atomic_store(&st.stop, 1);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  t_wait_idle(&e);
  rusm_metrics *m1 = t_metrics(e.rt);
  uint64_t sent = m1->sent - m0.sent;
  uint64_t got = m1->delivered - m0.delivered;
  uint64_t lost = m1->dropped - m0.dropped;
  assert_int_equal(sent, atomic_load(&st.sent));
  assert_int_equal(got, (uint64_t)ROUNDS * STORM_PIDS * 20);
  assert_int_equal(sent, got + lost);
  t_stop(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_order_one_sender_to_stackful),
      cmocka_unit_test(test_order_one_sender_to_self),
      cmocka_unit_test(test_many_senders_one_receiver),
      cmocka_unit_test(test_unattached_senders),
      cmocka_unit_test(test_selective_by_tag),
      cmocka_unit_test(test_selective_by_mask),
      cmocka_unit_test(test_selective_by_predicate),
      cmocka_unit_test(test_selective_deep_in_mailbox),
      cmocka_unit_test(test_filter_match),
      cmocka_unit_test(test_receive_timeouts_attached),
      cmocka_unit_test(test_stackless_timeouts),
      cmocka_unit_test(test_stackless_wait_forever),
      cmocka_unit_test(test_timeout_then_wait_forever),
      cmocka_unit_test(test_shared_buffer),
      cmocka_unit_test(test_buf_api),
      cmocka_unit_test(test_payload_sizes_and_copies),
      cmocka_unit_test(test_send_to_self),
      cmocka_unit_test(test_delivered_or_dropped_under_exit_races),
  };
  return T_RUN(tests);
}
