// ctest-labels: concurrent
/*
 * Unit tests: the registry (rusm_register and friends) — the API and its
 * errors, names released on every kind of exit, races between registrants
 * and between registering and the process's own exit, and many names.
 */
#include "support.h"

#include <pthread.h>

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* A silent process: waits forever, discards messages, sends no note. */
static rusm_next sleeper_init(rusm_proc *self, void **state) {
  (void)self;
  (void)state;
  return rusm_next_wait();
}
static const rusm_stackless_ops sleeper_ops = {sleeper_init, NULL, NULL};

static rusm_pid_t spawn_sleeper(t_env *e) {
  rusm_pid_t p = RUSM_PID_NONE;
  int rc = rusm_spawn_stackless(e->rt, &sleeper_ops, NULL, NULL, &p);
  if (rc != 0)
    fail_msg("rusm_spawn_stackless: %s", rusm_err_name(rc));
  return p;
}

/* A process that exits normal at once. */
static rusm_next quitter_init(rusm_proc *self, void **state) {
  (void)self;
  (void)state;
  return rusm_next_stop(RUSM_REASON_NORMAL);
}
static const rusm_stackless_ops quitter_ops = {quitter_init,
                                               t_unexpected_handle, NULL};

/* A stackful process that crashes at once with a custom reason. */
static void crasher(rusm_proc *self, void *arg) {
  (void)arg;
  rusm_exit_self(self, rusm_reason_str("crash"));
}

static bool down_of_ref(const rusm_msg *m, void *arg) {
  rusm_down_info d;
  return rusm_msg_down(m, &d) == 0 && d.ref == *(const rusm_ref *)arg;
}

static rusm_ref monitor(t_env *e, rusm_pid_t pid) {
  rusm_ref ref = 0;
  assert_int_equal(rusm_monitor(e->me, pid, &ref), 0);
  return ref;
}

/* Waits for the Down of ref; returns its exit code (detail copied out). */
static int wait_down(t_env *e, rusm_ref ref, char *detail, size_t cap) {
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  f.pred = down_of_ref;
  f.pred_arg = &ref;
  rusm_msg *m = t_recv(e, &f);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  int code = (int)d.reason.code;
  if (detail && cap) {
    size_t n = d.reason.len < cap - 1 ? d.reason.len : cap - 1;
    if (n)
      memcpy(detail, d.reason.data, n);
    detail[n] = '\0';
  }
  rusm_msg_free(m);
  return code;
}

/* ------------------------------------------------------------------ */
/* The API                                                             */
/* ------------------------------------------------------------------ */

static void test_register_whereis_unregister(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t a = spawn_sleeper(&e);
  rusm_pid_t b = spawn_sleeper(&e);

  assert_true(rusm_whereis(e.rt, "alpha") == RUSM_PID_NONE);
  assert_int_equal(rusm_register(e.rt, "alpha", a), 0);
  assert_true(rusm_whereis(e.rt, "alpha") == a);
  assert_true(rusm_whereis(e.rt, "alph") == RUSM_PID_NONE);
  assert_true(rusm_whereis(e.rt, "alphaa") == RUSM_PID_NONE);

  /* The name is copied: the caller's buffer can change afterwards. */
  char buf[16] = "beta";
  assert_int_equal(rusm_register(e.rt, buf, b), 0);
  strcpy(buf, "zzzz");
  assert_true(rusm_whereis(e.rt, "beta") == b);
  assert_true(rusm_whereis(e.rt, "zzzz") == RUSM_PID_NONE);

  /* name_of: length returned, copy truncated like snprintf. */
  char name[64];
  assert_int_equal(rusm_name_of(e.rt, a, name, sizeof name), 5);
  assert_string_equal(name, "alpha");
  char small[4];
  memset(small, 'x', sizeof small);
  assert_int_equal(rusm_name_of(e.rt, a, small, sizeof small), 5);
  assert_string_equal(small, "alp");
  assert_int_equal(rusm_name_of(e.rt, a, NULL, 0), 5);
  assert_int_equal(rusm_name_of(e.rt, a, NULL, 4), RUSM_EINVAL);
  assert_int_equal(rusm_name_of(NULL, a, name, sizeof name), RUSM_EINVAL);
  assert_int_equal(rusm_name_of(e.rt, e.pid, name, sizeof name),
                   RUSM_ENOTFOUND);
  assert_int_equal(rusm_name_of(e.rt, RUSM_PID_NONE, name, sizeof name),
                   RUSM_ENOTFOUND);

  /* registered: every entry, any order. */
  rusm_reg_entry ents[4];
  memset(ents, 0, sizeof ents);
  assert_int_equal(rusm_registered(e.rt, ents, 4), 2);
  bool saw_a = false, saw_b = false;
  for (int i = 0; i < 2; i++) {
    if (strcmp(ents[i].name, "alpha") == 0 && ents[i].pid == a)
      saw_a = true;
    if (strcmp(ents[i].name, "beta") == 0 && ents[i].pid == b)
      saw_b = true;
  }
  assert_true(saw_a && saw_b);
  assert_int_equal(rusm_registered(e.rt, ents, 1), 2); /* total, 1 copied */
  assert_int_equal(rusm_registered(e.rt, NULL, 0), 2);
  assert_int_equal(rusm_registered(e.rt, NULL, 3), RUSM_EINVAL);
  assert_int_equal(rusm_registered(NULL, ents, 4), RUSM_EINVAL);

  /* unregister frees both the name and the pid. */
  assert_int_equal(rusm_unregister(e.rt, "alpha"), 0);
  assert_true(rusm_whereis(e.rt, "alpha") == RUSM_PID_NONE);
  assert_int_equal(rusm_name_of(e.rt, a, name, sizeof name), RUSM_ENOTFOUND);
  assert_int_equal(rusm_unregister(e.rt, "alpha"), RUSM_ENOTFOUND);
  assert_int_equal(rusm_register(e.rt, "gamma", a), 0); /* pid free again */
  assert_int_equal(rusm_name_of(e.rt, a, name, sizeof name), 5);
  assert_string_equal(name, "gamma");
  assert_int_equal(rusm_register(e.rt, "alpha", b), RUSM_EBUSY);
  assert_int_equal(rusm_unregister(e.rt, "beta"), 0);
  assert_int_equal(rusm_register(e.rt, "alpha", b), 0); /* name free too */
  assert_true(rusm_whereis(e.rt, "alpha") == b);
  assert_int_equal(rusm_registered(e.rt, NULL, 0), 2);

  /* An attached thread can have a name too. */
  assert_int_equal(rusm_register(e.rt, "tester", e.pid), 0);
  assert_true(rusm_whereis(e.rt, "tester") == e.pid);
  t_stop(&e);
}

static void test_send_named(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t w = t_spawn_waiter(&e);
  assert_int_equal(rusm_register(e.rt, "echo", w), 0);
  assert_int_equal(rusm_register(e.rt, "me", e.pid), 0);

  uint64_t v = 42;
  assert_int_equal(rusm_send_named(e.rt, "echo", T_TAG_PING, &v, sizeof v), 0);
  rusm_msg *m = t_recv_tag(&e, T_TAG_PONG);
  assert_true(rusm_msg_from(m) == w);
  assert_int_equal(t_msg_u64(m), 42);
  rusm_msg_free(m);

  /* To the test thread itself, payload intact. */
  const char text[] = "hello by name";
  assert_int_equal(rusm_send_named(e.rt, "me", 7, text, sizeof text), 0);
  m = t_recv_tag(&e, 7);
  assert_int_equal(rusm_msg_len(m), sizeof text);
  assert_memory_equal(rusm_msg_data(m), text, sizeof text);
  rusm_msg_free(m);

  assert_int_equal(rusm_send_named(e.rt, "nobody", 7, NULL, 0), RUSM_ENOTFOUND);
  assert_int_equal(rusm_send_named(e.rt, NULL, 7, NULL, 0), RUSM_EINVAL);
  assert_int_equal(rusm_send_named(NULL, "me", 7, NULL, 0), RUSM_EINVAL);
  /* A name that cannot exist is an error either way (EINVAL or not found),
   * never a send. */
  assert_true(rusm_send_named(e.rt, "", 7, NULL, 0) < 0);
  /* Reserved tags are refused even for a known name. */
  assert_int_equal(rusm_send_named(e.rt, "me", RUSM_TAG_DOWN, NULL, 0),
                   RUSM_EINVAL);
  t_expect_nothing(&e, NULL);
  t_stop(&e);
}

static void test_register_errors(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t a = spawn_sleeper(&e);
  rusm_pid_t b = spawn_sleeper(&e);

  /* Bad names: NULL, empty, too long (RUSM_NAME_MAX + 1 = 256 bytes). */
  char longest[RUSM_NAME_MAX + 1];
  memset(longest, 'n', RUSM_NAME_MAX);
  longest[RUSM_NAME_MAX] = '\0';
  char too_long[RUSM_NAME_MAX + 2];
  memset(too_long, 'n', RUSM_NAME_MAX + 1);
  too_long[RUSM_NAME_MAX + 1] = '\0';
  assert_int_equal(strlen(too_long), 256);

  assert_int_equal(rusm_register(e.rt, NULL, a), RUSM_EINVAL);
  assert_int_equal(rusm_register(e.rt, "", a), RUSM_EINVAL);
  assert_int_equal(rusm_register(e.rt, too_long, a), RUSM_EINVAL);
  assert_int_equal(rusm_register(NULL, "x", a), RUSM_EINVAL);
  assert_int_equal(rusm_unregister(e.rt, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_unregister(e.rt, ""), RUSM_EINVAL);
  assert_int_equal(rusm_unregister(e.rt, too_long), RUSM_EINVAL);
  assert_int_equal(rusm_unregister(NULL, "x"), RUSM_EINVAL);
  assert_true(rusm_whereis(e.rt, NULL) == RUSM_PID_NONE);
  assert_true(rusm_whereis(e.rt, "") == RUSM_PID_NONE);
  assert_true(rusm_whereis(e.rt, too_long) == RUSM_PID_NONE);
  assert_true(rusm_whereis(NULL, "x") == RUSM_PID_NONE);
  assert_int_equal(rusm_registered(e.rt, NULL, 0), 0);

  /* The longest legal name works, and is distinct from its prefixes. */
  assert_int_equal(rusm_register(e.rt, longest, a), 0);
  assert_true(rusm_whereis(e.rt, longest) == a);
  char got[RUSM_NAME_MAX + 1];
  assert_int_equal(rusm_name_of(e.rt, a, got, sizeof got), RUSM_NAME_MAX);
  assert_string_equal(got, longest);
  rusm_reg_entry ent;
  assert_int_equal(rusm_registered(e.rt, &ent, 1), 1);
  assert_string_equal(ent.name, longest);
  assert_true(ent.pid == a);
  longest[RUSM_NAME_MAX - 1] = '\0';
  assert_true(rusm_whereis(e.rt, longest) == RUSM_PID_NONE);
  longest[RUSM_NAME_MAX - 1] = 'n';
  assert_int_equal(rusm_unregister(e.rt, longest), 0);

  /* Taken name; pid already named (also under the same name). */
  assert_int_equal(rusm_register(e.rt, "svc", a), 0);
  assert_int_equal(rusm_register(e.rt, "svc", b), RUSM_EEXIST);
  assert_int_equal(rusm_register(e.rt, "svc", a), RUSM_EEXIST);
  assert_int_equal(rusm_register(e.rt, "other", a), RUSM_EBUSY);
  assert_true(rusm_whereis(e.rt, "svc") == a);
  assert_true(rusm_whereis(e.rt, "other") == RUSM_PID_NONE);

  /* Unknown names. */
  assert_int_equal(rusm_unregister(e.rt, "nobody"), RUSM_ENOTFOUND);
  assert_int_equal(rusm_send_named(e.rt, "nobody", 1, NULL, 0), RUSM_ENOTFOUND);

  /* Dead, stale and never-existing pids. */
  assert_int_equal(rusm_register(e.rt, "x", RUSM_PID_NONE), RUSM_ENOPROC);
  assert_int_equal(rusm_register(e.rt, "x", rusm_pid_make(0, 123456, 9)),
                   RUSM_ENOPROC);
  rusm_ref ref = monitor(&e, b);
  assert_int_equal(rusm_kill(e.rt, b), 0);
  assert_int_equal(wait_down(&e, ref, NULL, 0), RUSM_EXIT_KILLED);
  assert_int_equal(rusm_register(e.rt, "x", b), RUSM_ENOPROC);
  assert_true(rusm_whereis(e.rt, "x") == RUSM_PID_NONE);
  assert_int_equal(rusm_name_of(e.rt, b, got, sizeof got), RUSM_ENOTFOUND);
  assert_int_equal(rusm_registered(e.rt, NULL, 0), 1);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Release on exit                                                     */
/* ------------------------------------------------------------------ */

enum { END_NORMAL, END_KILL, END_CRASH, END_EXIT_SIGNAL, END__COUNT };

static void test_name_released_on_exit(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  for (int how = 0; how < END__COUNT; how++) {
    for (int stackful = 0; stackful < 2; stackful++) {
      rusm_pid_t w =
          stackful ? t_spawn_stackful_waiter(&e) : t_spawn_waiter(&e);
      assert_int_equal(rusm_register(e.rt, "svc", w), 0);
      t_ping(&e, w); /* it runs: the name outlives a running process */
      assert_true(rusm_whereis(e.rt, "svc") == w);
      rusm_ref ref = monitor(&e, w);
      int want = RUSM_EXIT_NORMAL;
      switch (how) {
      case END_NORMAL:
        t_send_stop(e.rt, w, RUSM_EXIT_NORMAL, NULL);
        break;
      case END_KILL:
        assert_int_equal(rusm_kill(e.rt, w), 0);
        want = RUSM_EXIT_KILLED;
        break;
      case END_CRASH:
        t_send_stop(e.rt, w, RUSM_EXIT_CUSTOM, "boom");
        want = RUSM_EXIT_CUSTOM;
        break;
      default:
        assert_int_equal(rusm_exit(e.rt, w, rusm_reason_str("bye")), 0);
        want = RUSM_EXIT_CUSTOM;
        break;
      }
      char detail[16];
      assert_int_equal(wait_down(&e, ref, detail, sizeof detail), want);
      if (how == END_CRASH)
        assert_string_equal(detail, "boom");
      t_wait_note(&e, w);
      /* Down observed: the name is gone and free for someone else. */
      assert_true(rusm_whereis(e.rt, "svc") == RUSM_PID_NONE);
      assert_int_equal(rusm_registered(e.rt, NULL, 0), 0);
      assert_int_equal(rusm_unregister(e.rt, "svc"), RUSM_ENOTFOUND);
      assert_int_equal(rusm_send_named(e.rt, "svc", 1, NULL, 0),
                       RUSM_ENOTFOUND);
      rusm_pid_t next = spawn_sleeper(&e);
      assert_int_equal(rusm_register(e.rt, "svc", next), 0);
      assert_true(rusm_whereis(e.rt, "svc") == next);
      ref = monitor(&e, next);
      assert_int_equal(rusm_kill(e.rt, next), 0);
      wait_down(&e, ref, NULL, 0);
      assert_true(rusm_whereis(e.rt, "svc") == RUSM_PID_NONE);
    }
  }
  /* A crash right at the start, with a name registered from outside. */
  rusm_pid_t c;
  rusm_ref ref;
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.monitor = true;
  o.monitor_ref = &ref;
  assert_int_equal(rusm_spawn_stackful(e.rt, crasher, NULL, &o, &c), 0);
  int rc = rusm_register(e.rt, "crasher", c);
  assert_true(rc == 0 || rc == RUSM_ENOPROC);
  char detail[16];
  assert_int_equal(wait_down(&e, ref, detail, sizeof detail), RUSM_EXIT_CUSTOM);
  assert_string_equal(detail, "crash");
  assert_true(rusm_whereis(e.rt, "crasher") == RUSM_PID_NONE);

  /* A detached thread's name goes too. */
  assert_int_equal(rusm_register(e.rt, "tester", e.pid), 0);
  rusm_detach(e.me);
  e.me = NULL;
  assert_true(rusm_whereis(e.rt, "tester") == RUSM_PID_NONE);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Races                                                               */
/* ------------------------------------------------------------------ */

#define RACERS 4

typedef struct race {
  rusm_rt *rt;
  pthread_barrier_t start, done;
  rusm_pid_t pids[RACERS];
  int rc[RACERS];
  int mode; /* 0: one name, many pids; 1: one pid, many names; -1: quit */
} race;

typedef struct racer {
  race *r;
  int i;
} racer;

static void *racer_main(void *p) {
  racer *me = p;
  race *r = me->r;
  for (;;) {
    pthread_barrier_wait(&r->start);
    if (r->mode < 0)
      return NULL;
    if (r->mode == 0) {
      r->rc[me->i] = rusm_register(r->rt, "race", r->pids[me->i]);
    } else {
      char name[16];
      snprintf(name, sizeof name, "race%d", me->i);
      r->rc[me->i] = rusm_register(r->rt, name, r->pids[0]);
    }
    pthread_barrier_wait(&r->done);
  }
}

static void test_race_threads_same_name(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  race r;
  memset(&r, 0, sizeof r);
  r.rt = e.rt;
  for (int i = 0; i < RACERS; i++)
    r.pids[i] = spawn_sleeper(&e);
  pthread_barrier_init(&r.start, NULL, RACERS + 1);
  pthread_barrier_init(&r.done, NULL, RACERS + 1);
  pthread_t th[RACERS];
  racer args[RACERS];
  for (int i = 0; i < RACERS; i++) {
    args[i] = (racer){&r, i};
    assert_int_equal(pthread_create(&th[i], NULL, racer_main, &args[i]), 0);
  }
  int rounds = T_SCALE(3000, 300);
  for (int round = 0; round < rounds; round++) {
    r.mode = round % 2;
    pthread_barrier_wait(&r.start);
    pthread_barrier_wait(&r.done);
    int winners = 0, winner = -1;
    for (int i = 0; i < RACERS; i++) {
      if (r.rc[i] == 0) {
        winners++;
        winner = i;
      } else {
        assert_int_equal(r.rc[i], r.mode == 0 ? RUSM_EEXIST : RUSM_EBUSY);
      }
    }
    assert_int_equal(winners, 1);
    assert_int_equal(rusm_registered(e.rt, NULL, 0), 1);
    if (r.mode == 0) {
      assert_true(rusm_whereis(e.rt, "race") == r.pids[winner]);
      assert_int_equal(rusm_unregister(e.rt, "race"), 0);
    } else {
      char name[16];
      snprintf(name, sizeof name, "race%d", winner);
      assert_true(rusm_whereis(e.rt, name) == r.pids[0]);
      char got[16];
      assert_int_equal(rusm_name_of(e.rt, r.pids[0], got, sizeof got),
                       (int)strlen(name));
      assert_string_equal(got, name);
      assert_int_equal(rusm_unregister(e.rt, name), 0);
    }
  }
  r.mode = -1;
  pthread_barrier_wait(&r.start);
  for (int i = 0; i < RACERS; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&r.start);
  pthread_barrier_destroy(&r.done);
  assert_int_equal(rusm_registered(e.rt, NULL, 0), 0);
  t_stop(&e);
}

/* A process that, on GO, registers itself as "race" and reports the
 * result to the test thread (the spawn arg), then waits to be killed. */
static rusm_next racer_proc_init(rusm_proc *self, void **state) {
  (void)self;
  (void)state;
  rusm_filter f = rusm_filter_tag(T_TAG_GO);
  return rusm_next_wait_for(&f, -1);
}

static rusm_next racer_proc_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)m;
  rusm_pid_t to = (rusm_pid_t)(uintptr_t)state;
  rusm_rt *rt = rusm_proc_rt(self);
  int64_t rc = rusm_register(rt, "race", rusm_self(self));
  t_send(rt, to, T_TAG_INFO, &rc, sizeof rc);
  rusm_filter none = rusm_filter_tag(T_TAG_STOP);
  return rusm_next_wait_for(&none, -1);
}

static const rusm_stackless_ops racer_proc_ops = {racer_proc_init,
                                                  racer_proc_handle, NULL};

static void test_race_processes_same_name(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  enum { K = 8 };
  int rounds = T_SCALE(300, 50);
  for (int round = 0; round < rounds; round++) {
    rusm_pid_t pids[K];
    rusm_ref refs[K];
    for (int i = 0; i < K; i++) {
      assert_int_equal(rusm_spawn_stackless(e.rt, &racer_proc_ops,
                                            (void *)(uintptr_t)e.pid, NULL,
                                            &pids[i]),
                       0);
      refs[i] = monitor(&e, pids[i]);
    }
    for (int i = 0; i < K; i++)
      t_send(e.rt, pids[i], T_TAG_GO, NULL, 0);
    int winners = 0;
    rusm_pid_t winner = RUSM_PID_NONE;
    for (int i = 0; i < K; i++) {
      rusm_msg *m = t_recv_tag(&e, T_TAG_INFO);
      int64_t rc;
      assert_int_equal(rusm_msg_len(m), sizeof rc);
      memcpy(&rc, rusm_msg_data(m), sizeof rc);
      if (rc == 0) {
        winners++;
        winner = rusm_msg_from(m);
      } else {
        assert_int_equal(rc, RUSM_EEXIST);
      }
      rusm_msg_free(m);
    }
    assert_int_equal(winners, 1);
    assert_true(rusm_whereis(e.rt, "race") == winner);
    /* Kill the winner first: its name must be gone once its Down came,
     * whatever the others do. */
    for (int i = 0; i < K; i++)
      assert_int_equal(rusm_kill(e.rt, pids[i]), 0);
    for (int i = 0; i < K; i++)
      wait_down(&e, refs[i], NULL, 0);
    assert_true(rusm_whereis(e.rt, "race") == RUSM_PID_NONE);
  }
  t_stop(&e);
}

/* A process that exits (normal, or crashing) as soon as it gets GO. */
static rusm_next go_quit_init(rusm_proc *self, void **state) {
  (void)self;
  (void)state;
  rusm_filter f = rusm_filter_tag(T_TAG_GO);
  return rusm_next_wait_for(&f, -1);
}
static rusm_next go_quit_handle(rusm_proc *self, void *state, rusm_msg *m) {
  (void)self;
  (void)m;
  return rusm_next_stop(state ? rusm_reason_str("crash") : RUSM_REASON_NORMAL);
}
static const rusm_stackless_ops go_quit_ops = {go_quit_init, go_quit_handle,
                                               NULL};

/* Busy work of a varying length, to move register() across the window in
 * which the process exits (a jitter, not a wait for anything). */
static void jitter(unsigned n) {
  for (volatile unsigned i = 0; i < n; i++)
    ;
}

/*
 * Register racing with the process's own exit: the process exits as soon
 * as it runs; register returns 0 or ENOPROC; ENOPROC leaves no entry
 * behind; and once the Down is seen, the name is free whatever register
 * returned. The monitor is set up with the spawn (before the process can
 * exit), so its Down carries the real reason: a monitor taken while the
 * process is already exiting is the subject of
 * test_name_gone_after_noproc_down (a known core bug).
 */
static void test_race_register_vs_exit(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  int rounds = T_SCALE(4000, 400);
  int won = 0, lost = 0;
  unsigned spin = 0;
  for (int round = 0; round < rounds; round++) {
    rusm_pid_t p;
    rusm_ref ref = 0;
    rusm_spawn_opts o;
    rusm_spawn_opts_init(&o);
    o.monitor = true;
    o.monitor_ref = &ref;
    int rc;
    bool crash = round % 3 == 2 && round % 5 != 4;
    if (round % 5 == 4)
      rc = rusm_spawn_stackless(e.rt, &quitter_ops, NULL, &o, &p);
    else
      rc = rusm_spawn_stackless(e.rt, &go_quit_ops, crash ? &e : NULL, &o, &p);
    assert_int_equal(rc, 0);
    t_send(e.rt, p, T_TAG_GO, NULL, 0);
    /* Steer the jitter so that both outcomes keep happening. */
    jitter(spin);
    rc = rusm_register(e.rt, "racy", p);
    if (rc == RUSM_ENOPROC) {
      lost++;
      spin = spin / 2;
      assert_true(rusm_whereis(e.rt, "racy") == RUSM_PID_NONE);
    } else {
      assert_int_equal(rc, 0);
      won++;
      spin = spin + 64 + spin / 8;
      rusm_pid_t w = rusm_whereis(e.rt, "racy");
      assert_true(w == RUSM_PID_NONE || w == p);
    }
    assert_int_equal(wait_down(&e, ref, NULL, 0),
                     crash ? RUSM_EXIT_CUSTOM : RUSM_EXIT_NORMAL);
    assert_true(rusm_whereis(e.rt, "racy") == RUSM_PID_NONE);
    assert_false(rusm_is_alive(e.rt, p));
    char buf[8];
    assert_int_equal(rusm_name_of(e.rt, p, buf, sizeof buf), RUSM_ENOTFOUND);
    assert_int_equal(rusm_register(e.rt, "racy", p), RUSM_ENOPROC);
  }
  assert_int_equal(rusm_registered(e.rt, NULL, 0), 0);
  print_message("register vs exit: %d registered, %d too late\n", won, lost);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Many names                                                          */
/* ------------------------------------------------------------------ */

static void test_thousand_names(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  enum { N = 1000 };
  static rusm_pid_t pids[N];
  static rusm_reg_entry ents[N + 8];
  char name[32];
  for (int i = 0; i < N; i++) {
    pids[i] = t_spawn_waiter(&e);
    snprintf(name, sizeof name, "worker-%d", i);
    assert_int_equal(rusm_register(e.rt, name, pids[i]), 0);
  }
  assert_int_equal(rusm_registered(e.rt, NULL, 0), N);
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "worker-%d", i);
    assert_true(rusm_whereis(e.rt, name) == pids[i]);
    char got[32];
    assert_int_equal(rusm_name_of(e.rt, pids[i], got, sizeof got),
                     (int)strlen(name));
    assert_string_equal(got, name);
  }
  memset(ents, 0, sizeof ents);
  assert_int_equal(rusm_registered(e.rt, ents, N + 8), N);
  static bool seen[N];
  memset(seen, 0, sizeof seen);
  for (int i = 0; i < N; i++) {
    int k = -1;
    assert_int_equal(sscanf(ents[i].name, "worker-%d", &k), 1);
    assert_true(k >= 0 && k < N);
    assert_false(seen[k]);
    seen[k] = true;
    assert_true(ents[i].pid == pids[k]);
  }
  /* Every one reachable by name. */
  for (uint64_t i = 0; i < N; i++) {
    snprintf(name, sizeof name, "worker-%d", (int)i);
    assert_int_equal(rusm_send_named(e.rt, name, T_TAG_PING, &i, sizeof i), 0);
  }
  memset(seen, 0, sizeof seen);
  for (int i = 0; i < N; i++) {
    uint64_t k = t_recv_u64(&e, T_TAG_PONG);
    assert_true(k < N);
    assert_false(seen[k]);
    seen[k] = true;
  }
  /* Half unregistered, half killed. */
  for (int i = 0; i < N; i += 2) {
    snprintf(name, sizeof name, "worker-%d", i);
    assert_int_equal(rusm_unregister(e.rt, name), 0);
  }
  assert_int_equal(rusm_registered(e.rt, NULL, 0), N / 2);
  for (int i = 1; i < N; i += 2)
    assert_int_equal(rusm_kill(e.rt, pids[i]), 0);
  for (int i = 1; i < N; i += 2)
    t_wait_note(&e, pids[i]);
  assert_int_equal(rusm_registered(e.rt, NULL, 0), 0);
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "worker-%d", i);
    assert_true(rusm_whereis(e.rt, name) == RUSM_PID_NONE);
  }
  t_stop(&e);
}

/*
 * KNOWN CORE BUG (src/otp/registry.c, rusm_register): the entry is
 * allocated before the checks, and on every failure path (EEXIST, EBUSY,
 * ENOPROC found under the lock) it is released with entry_free(), which
 * computes the size from e->len — never set on those paths. The
 * allocation accounting (metrics alloc_bytes) then moves by a garbage
 * amount; under UBSan the subtraction overflows and aborts the run (in
 * the first test that has a register fail). Fix: free with the size
 * computed from `len`, or set e->len right after allocating.
 * This test fails until the core is fixed.
 */
static void test_failed_register_keeps_accounting(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 1);
  rusm_pid_t a = spawn_sleeper(&e);
  rusm_pid_t b = spawn_sleeper(&e);
  rusm_pid_t c = spawn_sleeper(&e);
  assert_int_equal(rusm_register(e.rt, "taken", a), 0);
  rusm_ref ref = monitor(&e, b);
  assert_int_equal(rusm_kill(e.rt, b), 0);
  wait_down(&e, ref, NULL, 0);
  t_ping(&e, t_spawn_waiter(&e)); /* a quiet runtime from here */
  /* Each failed register must leave the accounted bytes as they were.
   * A successful entry two bytes longer, freed just before, makes malloc
   * likely to hand the same block back, whose stale len entry_free()
   * then trusts. */
  char good[64], bad[64];
  /* The accounting is process-wide, and the snapshot clamps a negative
   * total to 0: failed registers in earlier tests may have got it there. */
  if (t_metrics(e.rt)->alloc_bytes == 0)
    fail_msg("alloc_bytes is 0 with a live runtime: the accounting went "
             "negative before this test");
  int moved = 0;
  int64_t first = 0;
  for (int i = 0; i < 60; i++) {
    size_t len = 1 + (size_t)i % 50;
    memset(good, 'g', len + 2);
    good[len + 2] = '\0';
    memset(bad, 'b', len);
    bad[len] = '\0';
    assert_int_equal(rusm_register(e.rt, good, c), 0);
    assert_int_equal(rusm_unregister(e.rt, good), 0);
    uint64_t before = t_metrics(e.rt)->alloc_bytes;
    assert_int_equal(rusm_register(e.rt, bad, a), RUSM_EBUSY);
    assert_int_equal(rusm_register(e.rt, "taken", c), RUSM_EEXIST);
    assert_int_equal(rusm_register(e.rt, bad, b), RUSM_ENOPROC);
    uint64_t after = t_metrics(e.rt)->alloc_bytes;
    if (after != before && moved++ == 0)
      first = (int64_t)(after - before);
  }
  if (moved)
    fail_msg("alloc_bytes moved in %d of 60 rounds of failed registers "
             "(first by %" PRId64 " bytes)",
             moved, first);
  t_stop(&e);
}

/*
 * KNOWN CORE BUG (src/otp/signal.c rusm_monitor / src/otp/proc.c
 * rusm__proc_reap): the reaper sets the exited flag first and releases
 * the name a little later. A monitor taken in between sees the flag and
 * answers with an immediate Down { noproc }, so a caller can observe the
 * Down while whereis still returns the dead pid (and rusm_register of the
 * name by another process still gets EEXIST). Widened here by threads
 * that keep the registry lock busy: only some rounds hit the window, but
 * every run seen so far had some (1 to 200 of 3000).
 * Fix: release the name before the exited flag becomes visible (a
 * separate "dying" flag for the register/reap Dekker pair), or have the
 * registry treat an entry whose process has exited as absent.
 * This test fails until the core is fixed.
 */
typedef struct hammer {
  rusm_rt *rt;
  atomic_bool stop;
  rusm_reg_entry *ents;
  size_t cap;
} hammer;

static void *hammer_main(void *p) {
  hammer *h = p;
  while (!atomic_load(&h->stop))
    rusm_registered(h->rt, h->ents, h->cap);
  return NULL;
}

static void test_name_gone_after_noproc_down(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  enum { FILL = 3000 };
  char name[32];
  for (int i = 0; i < FILL; i++) {
    snprintf(name, sizeof name, "filler-%d", i);
    assert_int_equal(rusm_register(e.rt, name, spawn_sleeper(&e)), 0);
  }
  hammer h[2];
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    h[i] = (hammer){e.rt, false, calloc(FILL, sizeof(rusm_reg_entry)), FILL};
    assert_non_null(h[i].ents);
    assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
  }
  int rounds = T_SCALE(3000, 400), noproc = 0, named = 0;
  for (int i = 0; i < rounds; i++) {
    rusm_pid_t p;
    assert_int_equal(rusm_spawn_stackless(e.rt, &go_quit_ops, NULL, NULL, &p),
                     0);
    snprintf(name, sizeof name, "dying-%d", i);
    assert_int_equal(rusm_register(e.rt, name, p), 0);
    t_send(e.rt, p, T_TAG_GO, NULL, 0);
    /* until the exited flag is up (a state no message announces) */
    int64_t end = rusm_now_ns() + (int64_t)T_GUARD_MS * 1000000;
    while (rusm_is_alive(e.rt, p) && rusm_now_ns() < end)
      ;
    assert_false(rusm_is_alive(e.rt, p));
    rusm_ref ref = monitor(&e, p);
    if (wait_down(&e, ref, NULL, 0) == RUSM_EXIT_NOPROC)
      noproc++;
    if (rusm_whereis(e.rt, name) != RUSM_PID_NONE)
      named++;
  }
  for (int i = 0; i < 2; i++) {
    atomic_store(&h[i].stop, true);
    pthread_join(th[i], NULL);
    free(h[i].ents);
  }
  print_message("%d of %d rounds: Down { noproc } seen, name still there "
                "in %d\n",
                noproc, rounds, named);
  assert_int_equal(named, 0);
  t_stop(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_register_whereis_unregister),
      cmocka_unit_test(test_send_named),
      cmocka_unit_test(test_register_errors),
      cmocka_unit_test(test_name_released_on_exit),
      cmocka_unit_test(test_race_threads_same_name),
      cmocka_unit_test(test_race_processes_same_name),
      cmocka_unit_test(test_race_register_vs_exit),
      cmocka_unit_test(test_thousand_names),
      /* Known core bugs: these fail until the core is fixed. */
      cmocka_unit_test(test_failed_register_keeps_accounting),
      cmocka_unit_test(test_name_gone_after_noproc_down),
  };
  return T_RUN(tests);
}
