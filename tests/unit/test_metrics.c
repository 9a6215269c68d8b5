/*
 * Unit tests: runtime metrics — counters moving with spawns, exits, sends,
 * deliveries and drops; per-scheduler figures; the JSON and text forms.
 */
#include "support.h"

#include <math.h>

/* ------------------------------------------------------------------ */
/* A small JSON validator (enough to say "this is one JSON object")    */
/* ------------------------------------------------------------------ */

typedef struct jp {
  const char *s;
  size_t i, n;
  int depth;
} jp;

static void j_ws(jp *p) {
  while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' ||
                         p->s[p->i] == '\n' || p->s[p->i] == '\r'))
    p->i++;
}

static bool j_value(jp *p);

static bool j_lit(jp *p, const char *lit) {
  size_t l = strlen(lit);
  if (p->n - p->i < l || memcmp(p->s + p->i, lit, l) != 0)
    return false;
  p->i += l;
  return true;
}

static bool j_string(jp *p) {
  if (p->i >= p->n || p->s[p->i] != '"')
    return false;
  p->i++;
  while (p->i < p->n) {
    unsigned char c = (unsigned char)p->s[p->i++];
    if (c == '"')
      return true;
    if (c < 0x20)
      return false;
    if (c == '\\') {
      if (p->i >= p->n)
        return false;
      char e = p->s[p->i++];
      if (e == 'u') {
        for (int k = 0; k < 4; k++, p->i++)
          if (p->i >= p->n || !strchr("0123456789abcdefABCDEF", p->s[p->i]))
            return false;
      } else if (!strchr("\"\\/bfnrt", e)) {
        return false;
      }
    }
  }
  return false;
}

static bool j_digits(jp *p) {
  size_t start = p->i;
  while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
    p->i++;
  return p->i > start;
}

static bool j_number(jp *p) {
  if (p->i < p->n && p->s[p->i] == '-')
    p->i++;
  if (p->i < p->n && p->s[p->i] == '0')
    p->i++;
  else if (!j_digits(p))
    return false;
  if (p->i < p->n && p->s[p->i] == '.') {
    p->i++;
    if (!j_digits(p))
      return false;
  }
  if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
    p->i++;
    if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
      p->i++;
    if (!j_digits(p))
      return false;
  }
  return true;
}

static bool j_object(jp *p) {
  p->i++; /* { */
  j_ws(p);
  if (p->i < p->n && p->s[p->i] == '}') {
    p->i++;
    return true;
  }
  for (;;) {
    j_ws(p);
    if (!j_string(p))
      return false;
    j_ws(p);
    if (p->i >= p->n || p->s[p->i++] != ':')
      return false;
    if (!j_value(p))
      return false;
    j_ws(p);
    if (p->i >= p->n)
      return false;
    char c = p->s[p->i++];
    if (c == '}')
      return true;
    if (c != ',')
      return false;
  }
}

static bool j_array(jp *p) {
  p->i++; /* [ */
  j_ws(p);
  if (p->i < p->n && p->s[p->i] == ']') {
    p->i++;
    return true;
  }
  for (;;) {
    if (!j_value(p))
      return false;
    j_ws(p);
    if (p->i >= p->n)
      return false;
    char c = p->s[p->i++];
    if (c == ']')
      return true;
    if (c != ',')
      return false;
  }
}

static bool j_value(jp *p) {
  if (++p->depth > 64)
    return false;
  j_ws(p);
  bool ok = false;
  if (p->i < p->n) {
    char c = p->s[p->i];
    if (c == '{')
      ok = j_object(p);
    else if (c == '[')
      ok = j_array(p);
    else if (c == '"')
      ok = j_string(p);
    else if (c == 't')
      ok = j_lit(p, "true");
    else if (c == 'f')
      ok = j_lit(p, "false");
    else if (c == 'n')
      ok = j_lit(p, "null");
    else
      ok = j_number(p);
  }
  p->depth--;
  return ok;
}

/* True when s is exactly one JSON object (surrounding blanks allowed). */
static bool json_is_object(const char *s) {
  jp p = {s, 0, strlen(s), 0};
  j_ws(&p);
  if (p.i >= p.n || s[p.i] != '{')
    return false;
  if (!j_value(&p))
    return false;
  j_ws(&p);
  return p.i == p.n;
}

static void test_json_checker_itself(void **state) {
  (void)state;
  assert_true(json_is_object("{}"));
  assert_true(json_is_object(" {\"a\":1,\"b\":[1,2.5,-3e4,true,null],"
                             "\"c\":{\"d\":\"x\\\"y\\u00e9\"}} "));
  assert_false(json_is_object(""));
  assert_false(json_is_object("[]"));
  assert_false(json_is_object("{"));
  assert_false(json_is_object("{\"a\":1,}"));
  assert_false(json_is_object("{\"a\" 1}"));
  assert_false(json_is_object("{\"a\":nan}"));
  assert_false(json_is_object("{\"a\":1}{}"));
  assert_false(json_is_object("{\"a\":01}"));
  assert_false(json_is_object("{\"a\":\"x}"));
  assert_false(json_is_object("{\"a\":1.}"));
}

/* ------------------------------------------------------------------ */
/* Counters                                                            */
/* ------------------------------------------------------------------ */

static void test_snapshot_basics(void **state) {
  (void)state;
  rusm_metrics m;
  memset(&m, 0xff, sizeof m);
  rusm_metrics_snapshot(NULL, &m); /* no runtime: all zero */
  assert_int_equal(m.spawned, 0);
  assert_int_equal(m.schedulers, 0);

  t_env e;
  t_start(&e, 2);
  rusm_metrics *s = t_metrics(e.rt);
  assert_int_equal(s->schedulers, 2);
  assert_int_equal(s->live, 1); /* the attached test thread */
  assert_int_equal(s->live, rusm_process_count(e.rt));
  assert_true(s->alloc_bytes > 0);
  assert_true(s->alloc_count > 0);
  t_stop(&e);
}

static void test_spawn_and_exit_counters(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  t_wait_idle(&e);
  rusm_metrics m0 = *t_metrics(e.rt);
  rusm_pid_t sl[3], sf[2];
  for (int i = 0; i < 3; i++)
    sl[i] = t_spawn_waiter(&e);
  for (int i = 0; i < 2; i++)
    sf[i] = t_spawn_stackful_waiter(&e);
  rusm_metrics m1 = *t_metrics(e.rt);
  assert_int_equal(m1.spawned, m0.spawned + 5);
  assert_int_equal(m1.live, m0.live + 5);
  assert_int_equal(m1.exited, m0.exited);

  t_send_stop(e.rt, sl[0], RUSM_EXIT_NORMAL, NULL);
  assert_int_equal(rusm_kill(e.rt, sl[1]), 0);
  t_send_stop(e.rt, sl[2], RUSM_EXIT_CUSTOM, "why");
  t_send_stop(e.rt, sf[0], RUSM_EXIT_SHUTDOWN, NULL);
  t_send_stop(e.rt, sf[1], RUSM_EXIT_NORMAL, NULL);
  for (int i = 0; i < 3; i++)
    t_wait_note(&e, sl[i]);
  for (int i = 0; i < 2; i++)
    t_wait_note(&e, sf[i]);
  t_wait_idle(&e);
  rusm_metrics *m2 = t_metrics(e.rt);
  assert_int_equal(m2->exited, m0.exited + 5);
  assert_int_equal(m2->exited_by[RUSM_EXIT_NORMAL],
                   m0.exited_by[RUSM_EXIT_NORMAL] + 2);
  assert_int_equal(m2->exited_by[RUSM_EXIT_KILLED],
                   m0.exited_by[RUSM_EXIT_KILLED] + 1);
  assert_int_equal(m2->exited_by[RUSM_EXIT_CUSTOM],
                   m0.exited_by[RUSM_EXIT_CUSTOM] + 1);
  assert_int_equal(m2->exited_by[RUSM_EXIT_SHUTDOWN],
                   m0.exited_by[RUSM_EXIT_SHUTDOWN] + 1);
  assert_int_equal(m2->live, m0.live);
  assert_int_equal(m2->live, m2->spawned - m2->exited);
  uint64_t sum = 0;
  for (int c = 0; c < RUSM_EXIT__COUNT; c++)
    sum += m2->exited_by[c];
  assert_int_equal(sum, m2->exited);
  t_stop(&e);
}

static void test_message_counters(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t w = t_spawn_waiter(&e); /* takes control tags only */
  t_ping(&e, w);
  rusm_metrics m0 = *t_metrics(e.rt);
  for (uint64_t i = 0; i < 5; i++)
    t_send_u64(e.rt, w, 1, i); /* stay queued */
  t_ping(&e, w);
  rusm_metrics m1 = *t_metrics(e.rt);
  /* 5 data + PING + PONG sent; PING and PONG taken. */
  assert_int_equal(m1.sent, m0.sent + 7);
  assert_int_equal(m1.delivered, m0.delivered + 2);
  assert_int_equal(m1.dropped, m0.dropped);

  /* Killed with 5 queued: they are dropped with the mailbox. */
  assert_int_equal(rusm_kill(e.rt, w), 0);
  t_wait_note(&e, w);
  t_wait_idle(&e);
  rusm_metrics m2 = *t_metrics(e.rt);
  assert_int_equal(m2.dropped, m1.dropped + 5);

  /* Sent to the dead pid: dropped at once. */
  assert_int_equal(rusm_send(e.rt, w, 1, NULL, 0), 0);
  rusm_metrics *m3 = t_metrics(e.rt);
  assert_int_equal(m3->dropped, m2.dropped + 1);
  assert_true(m3->sent >= m2.sent);
  t_stop(&e);
}

/* Messages queued but never fetched by a process that exits. */
static rusm_next burst_init(rusm_proc *self, void **state) {
  (void)state;
  rusm_filter f = rusm_filter_tag(T_TAG_STOP);
  t_send(rusm_proc_rt(self), rusm_self(self), 9, NULL, 0);
  t_send(rusm_proc_rt(self), rusm_self(self), 9, NULL, 0);
  return rusm_next_wait_for(&f, -1);
}

static rusm_next burst_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)self;
  (void)state;
  (void)m;
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops burst_ops = {burst_init, burst_handle,
                                             t_waiter_terminate};

static void test_dropped_in_dead_mailbox(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 1);
  rusm_metrics m0 = *t_metrics(e.rt);
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackless(e.rt, &burst_ops,
                                        (void *)(uintptr_t)e.pid, NULL, &p),
                   0);
  for (int i = 0; i < 3; i++)
    t_send(e.rt, p, 8, NULL, 0);
  t_send(e.rt, p, T_TAG_STOP, NULL, 0);
  t_wait_note(&e, p);
  t_wait_idle(&e);
  rusm_metrics *m1 = t_metrics(e.rt);
  assert_int_equal(m1->dropped, m0.dropped + 5); /* 2 to itself + 3 */
  t_stop(&e);
}

static void test_sched_figures_and_monotonic(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 2);
  rusm_pid_t w = t_spawn_waiter(&e);
  rusm_metrics prev = *t_metrics(e.rt);
  for (int round = 0; round < 20; round++) {
    for (int i = 0; i < 10; i++)
      t_ping(&e, w);
    rusm_metrics *m = t_metrics(e.rt);
    assert_true(m->spawned >= prev.spawned);
    assert_true(m->exited >= prev.exited);
    assert_true(m->sent >= prev.sent + 20);
    assert_true(m->delivered >= prev.delivered + 20);
    assert_true(m->dropped >= prev.dropped);
    assert_true(m->steals >= prev.steals);
    uint64_t steals = 0;
    for (uint32_t i = 0; i < m->schedulers; i++) {
      const rusm_sched_metrics *s = &m->sched[i];
      assert_true(s->total_ns >= prev.sched[i].total_ns);
      assert_true(s->runs >= prev.sched[i].runs);
      assert_true(s->sleeps >= prev.sched[i].sleeps);
      assert_true(s->busy_ns <= s->total_ns);
      assert_true(s->utilisation >= 0.0 && s->utilisation <= 1.0);
      steals += s->steals;
    }
    assert_int_equal(steals, m->steals);
    prev = *m;
  }
  t_send_stop(e.rt, w, RUSM_EXIT_NORMAL, NULL);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* JSON and text                                                       */
/* ------------------------------------------------------------------ */

static void check_json(const rusm_metrics *m) {
  int n = rusm_metrics_to_json(m, NULL, 0);
  assert_true(n > 2);
  char *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(rusm_metrics_to_json(m, buf, (size_t)n + 1), n);
  assert_int_equal(strlen(buf), (size_t)n);
  if (!json_is_object(buf))
    fail_msg("not a JSON object: %s", buf);
  assert_true(buf[n - 1] == '}'); /* no trailing newline */
  assert_non_null(strstr(buf, "\"spawned\""));
  assert_non_null(strstr(buf, "\"dropped\""));
  assert_non_null(strstr(buf, "\"schedulers\""));
  /* Truncation: snprintf semantics, the prefix of the full text. */
  char small[16];
  memset(small, 'x', sizeof small);
  assert_int_equal(rusm_metrics_to_json(m, small, sizeof small), n);
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_memory_equal(small, buf, sizeof small - 1);
  char one = 'x';
  assert_int_equal(rusm_metrics_to_json(m, &one, 1), n);
  assert_int_equal(one, '\0');
  free(buf);
}

static void check_text(const rusm_metrics *m) {
  int n = rusm_metrics_to_text(m, NULL, 0);
  assert_true(n > 0);
  char *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(rusm_metrics_to_text(m, buf, (size_t)n + 1), n);
  assert_int_equal(strlen(buf), (size_t)n);
  assert_non_null(strchr(buf, '\n')); /* several lines */
  assert_non_null(strstr(buf, "spawned"));
  char small[8];
  assert_int_equal(rusm_metrics_to_text(m, small, sizeof small), n);
  assert_int_equal(strlen(small), sizeof small - 1);
  free(buf);
}

static void test_json_and_text_of_live_snapshot(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 2);
  rusm_pid_t w = t_spawn_waiter(&e);
  t_ping(&e, w);
  assert_int_equal(rusm_kill(e.rt, w), 0);
  t_wait_note(&e, w);
  t_wait_idle(&e);
  rusm_metrics *m = t_metrics(e.rt);
  check_json(m);
  check_text(m);
  /* The numbers are there. */
  char buf[8192];
  assert_true(rusm_metrics_to_json(m, buf, sizeof buf) < (int)sizeof buf);
  char want[64];
  snprintf(want, sizeof want, "\"spawned\":%" PRIu64, m->spawned);
  assert_non_null(strstr(buf, want));
  t_stop(&e);
}

static void test_json_of_edge_values(void **state) {
  (void)state;
  static rusm_metrics m;
  memset(&m, 0, sizeof m);
  check_json(&m); /* all zero, no scheduler */
  check_text(&m);

  memset(&m, 0xff, sizeof m); /* every counter at its maximum */
  m.schedulers = RUSM_METRICS_MAX_SCHED;
  for (int i = 0; i < RUSM_METRICS_MAX_SCHED; i++)
    m.sched[i].utilisation = i % 2 ? 1.0 : 0.5;
  check_json(&m);
  check_text(&m);

  /* Values JSON cannot hold (NaN, inf, out of range) still give JSON. */
  m.schedulers = 4;
  m.sched[0].utilisation = NAN;
  m.sched[1].utilisation = INFINITY;
  m.sched[2].utilisation = -1.0;
  m.sched[3].utilisation = 7.5;
  check_json(&m);
  check_text(&m);

  /* More schedulers than the array holds: clamped, no overrun. */
  m.schedulers = RUSM_METRICS_MAX_SCHED * 4;
  check_json(&m);
  check_text(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_json_checker_itself),
      cmocka_unit_test(test_snapshot_basics),
      cmocka_unit_test(test_spawn_and_exit_counters),
      cmocka_unit_test(test_message_counters),
      cmocka_unit_test(test_dropped_in_dead_mailbox),
      cmocka_unit_test(test_sched_figures_and_monotonic),
      cmocka_unit_test(test_json_and_text_of_live_snapshot),
      cmocka_unit_test(test_json_of_edge_values),
  };
  return T_RUN(tests);
}
