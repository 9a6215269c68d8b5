// ctest-labels: concurrent
/*
 * Unit tests: the core's side of distribution (rusm__set_dist and the
 * routing of nodes for other nodes' pids). Without a route, a link or a
 * monitor on a remote pid is answered with noconnection and a message is
 * dropped; with one, every node for a remote pid reaches route() with its
 * kind, sender and payload, and nothing for a local pid does.
 */
#include "support.h"

#include <pthread.h>

#include "otp/internal.h"

#define REMOTE_NODE 7
#define T_TAG UINT64_C(0x4400000000000001)

static rusm_pid_t remote_pid(uint32_t slot) {
  return rusm_pid_make(REMOTE_NODE, slot, 1);
}

/* No node running: another node's pid is a dead pid (noproc), as the
 * tests of signal.c and proc.c also check. */
static void no_route_link_monitor_send(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 2);
  rusm_pid_t r = remote_pid(3);
  rusm_trap_exit(e.me, true);
  assert_int_equal(rusm_link(e.me, r), RUSM_ENOPROC);
  rusm_msg *m = t_recv_tag(&e, RUSM_TAG_EXIT);
  rusm_exit_info x;
  assert_int_equal(rusm_msg_exit(m, &x), 0);
  assert_true(x.from == r);
  assert_int_equal(x.reason.code, RUSM_EXIT_NOPROC);
  rusm_msg_free(m);

  rusm_ref ref = 0;
  assert_int_equal(rusm_monitor(e.me, r, &ref), 0);
  m = t_recv_tag(&e, RUSM_TAG_DOWN);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_true(d.ref == ref && d.pid == r);
  assert_int_equal(d.reason.code, RUSM_EXIT_NOPROC);
  rusm_msg_free(m);

  assert_int_equal(rusm_send(e.rt, r, T_TAG, "x", 1), 0); /* dropped */
  assert_int_equal(rusm_exit(e.rt, r, RUSM_REASON_KILL), RUSM_ENOPROC);
  t_expect_nothing(&e, NULL);
  t_stop(&e);
}

/* A route that reaches nothing, as a node's for an unknown node. */
static void nowhere(void *ctx, rusm_pid_t to, rusm_msg *m) {
  rusm__answer_unreachable(ctx, to, m);
}
static const rusm__dist_ops nowhere_ops = {.route = nowhere};

/* What a node answers for a node it cannot reach: noconnection. */
static void unreachable_answers(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 2);
  rusm__set_dist(e.rt, &nowhere_ops, e.rt);
  rusm_pid_t r = remote_pid(3);
  rusm_trap_exit(e.me, true);
  assert_int_equal(rusm_link(e.me, r), 0); /* the answer is a signal */
  rusm_msg *m = t_recv_tag(&e, RUSM_TAG_EXIT);
  rusm_exit_info x;
  assert_int_equal(rusm_msg_exit(m, &x), 0);
  assert_true(x.from == r);
  assert_int_equal(x.reason.code, RUSM_EXIT_NOCONNECTION);
  rusm_msg_free(m);
  rusm_ref ref = 0;
  assert_int_equal(rusm_monitor(e.me, r, &ref), 0);
  m = t_recv_tag(&e, RUSM_TAG_DOWN);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  assert_true(d.ref == ref && d.pid == r);
  assert_int_equal(d.reason.code, RUSM_EXIT_NOCONNECTION);
  rusm_msg_free(m);
  assert_int_equal(rusm_send(e.rt, r, T_TAG, "x", 1), 0); /* dropped */
  t_expect_nothing(&e, NULL);
  rusm__set_dist(e.rt, NULL, NULL);
  t_stop(&e);
}

/* A route that records what reaches it. */
typedef struct seen {
  pthread_mutex_t mu;
  uint32_t n;
  uint8_t kinds[16];
  rusm_pid_t to[16];
  rusm_pid_t from[16];
  uint64_t aux[16];
  uint64_t tag[16];
} seen;

static void record(void *ctx, rusm_pid_t to, rusm_msg *m) {
  seen *s = ctx;
  pthread_mutex_lock(&s->mu);
  if (s->n < 16) {
    s->kinds[s->n] = m->kind;
    s->to[s->n] = to;
    s->from[s->n] = m->from;
    s->aux[s->n] = (uint64_t)m->aux;
    s->tag[s->n] = m->tag;
    s->n++;
  }
  pthread_mutex_unlock(&s->mu);
  rusm__free_node(m);
}

static const rusm__dist_ops record_ops = {.route = record};

static void routed_nodes(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 2);
  seen s;
  memset(&s, 0, sizeof s);
  pthread_mutex_init(&s.mu, NULL);
  rusm__set_dist(e.rt, &record_ops, &s);
  rusm_pid_t r = remote_pid(9);

  assert_int_equal(rusm_send(e.rt, r, T_TAG, "abc", 3), 0);
  assert_int_equal(rusm_link(e.me, r), 0);
  rusm_ref ref = 0;
  assert_int_equal(rusm_monitor(e.me, r, &ref), 0);
  assert_int_equal(rusm_demonitor(e.me, ref, 0), 1);
  assert_int_equal(rusm_unlink(e.me, r), 0);
  assert_int_equal(rusm_exit(e.rt, r, RUSM_REASON_SHUTDOWN), 0);
  /* local traffic never reaches the route */
  assert_int_equal(rusm_send(e.rt, e.pid, T_TAG, "l", 1), 0);
  rusm_msg_free(t_recv_tag(&e, T_TAG));

  pthread_mutex_lock(&s.mu);
  assert_int_equal(s.n, 6);
  const uint8_t want[] = {RUSM__N_MSG,       RUSM__N_LINK,   RUSM__N_MONITOR,
                          RUSM__N_DEMONITOR, RUSM__N_UNLINK, RUSM__N_EXIT};
  for (uint32_t i = 0; i < 6; i++) {
    assert_int_equal(s.kinds[i], want[i]);
    assert_true(s.to[i] == r);
    assert_true(s.from[i] == e.pid);
  }
  assert_true(s.tag[0] == T_TAG);
  assert_true(s.aux[2] == ref && s.aux[3] == ref);
  pthread_mutex_unlock(&s.mu);

  /* a remote link (as the receive path pushes it) makes the local process
   * tell the remote pid when it exits */
  rusm_pid_t child = t_spawn_waiter(&e);
  rusm_ref mref = 0;
  assert_int_equal(rusm_monitor(e.me, child, &mref), 0);
  assert_int_equal(
      rusm__push_signal(e.rt, child, rusm__plain_node(RUSM__N_LINK, r, 0)), 0);
  assert_int_equal(rusm_kill(e.rt, child), 0);
  rusm_msg *down = t_recv_tag(&e, RUSM_TAG_DOWN); /* sent after the links */
  rusm_msg_free(down);
  pthread_mutex_lock(&s.mu);
  assert_int_equal(s.n, 7);
  assert_int_equal(s.kinds[6], RUSM__N_LINK_EXIT);
  assert_true(s.to[6] == r && s.from[6] == child);
  assert_int_equal((int)s.aux[6], RUSM_EXIT_KILLED);
  pthread_mutex_unlock(&s.mu);
  rusm__set_dist(e.rt, NULL, NULL);
  pthread_mutex_destroy(&s.mu);
  t_stop(&e);
}

/* rusm__deliver: a node built by the receive path, from a remote pid. */
static void deliver_from_remote(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 2);
  rusm_pid_t r = remote_pid(4);
  rusm_msg *m = rusm__msg_new(RUSM__N_MSG, T_TAG, "hi", 2);
  assert_non_null(m);
  m->from = r;
  assert_int_equal(rusm__deliver(e.rt, e.pid, m), 0);
  rusm_msg *got = t_recv_tag(&e, T_TAG);
  assert_true(rusm_msg_from(got) == r);
  assert_int_equal(rusm_msg_len(got), 2);
  rusm_msg_free(got);
  /* never bounced to another node */
  m = rusm__msg_new(RUSM__N_MSG, T_TAG, NULL, 0);
  assert_non_null(m);
  assert_int_equal(rusm__deliver(e.rt, r, m), RUSM_ENOPROC);
  t_stop(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(no_route_link_monitor_send),
      cmocka_unit_test(unreachable_answers),
      cmocka_unit_test(routed_nodes),
      cmocka_unit_test(deliver_from_remote),
  };
  return t_run("dist_hook", tests, sizeof tests / sizeof tests[0]);
}
