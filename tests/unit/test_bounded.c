// ctest-labels: concurrent
/*
 * Unit tests: bounded mailboxes (rusm_spawn_opts.mailbox_capacity and the
 * runtime default rusm_rt_opts.mailbox_capacity). User messages past the
 * capacity are shed and counted; signals, Exit and Down messages never
 * are; memory stays flat under a flood.
 */
#include "support.h"

#include <pthread.h>
#include <unistd.h>

#define TAG_DATA 1

static bool down_of_ref(const rusm_msg *m, void *arg) {
  rusm_down_info d;
  return rusm_msg_down(m, &d) == 0 && d.ref == *(const rusm_ref *)arg;
}

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

/* A t_waiter (takes only control tags: data piles up) with a capacity. */
static rusm_pid_t spawn_bounded_waiter(t_env *e, uint32_t cap) {
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.mailbox_capacity = cap;
  rusm_pid_t p = RUSM_PID_NONE;
  int rc = rusm_spawn_stackless(e->rt, &t_waiter_ops, (void *)(uintptr_t)e->pid,
                                &o, &p);
  if (rc != 0)
    fail_msg("rusm_spawn_stackless: %s", rusm_err_name(rc));
  return p;
}

static rusm_proc_info info_of(t_env *e, rusm_pid_t p) {
  rusm_proc_info i;
  memset(&i, 0, sizeof i);
  assert_int_equal(rusm_proc_info_get(e->rt, p, &i), 0);
  return i;
}

static void flood(rusm_rt *rt, rusm_pid_t to, uint64_t n) {
  for (uint64_t i = 0; i < n; i++)
    t_send(rt, to, TAG_DATA, &i, sizeof i);
}

/* ------------------------------------------------------------------ */
/* Per-spawn capacity, many senders                                    */
/* ------------------------------------------------------------------ */

#define CAP 100
#define THREADS 3
#define SENDERS (THREADS + 1) /* plus one process */

typedef struct flood_arg {
  rusm_rt *rt;
  rusm_pid_t to, done_to;
  uint64_t n;
  _Atomic uint64_t max_len; /* largest mailbox_len a sender saw */
  atomic_uint samples;
} flood_arg;

/* Floods, looking at the receiver's mailbox every 64 sends. */
static void flood_sampling(rusm_rt *rt, flood_arg *a) {
  for (uint64_t i = 0; i < a->n; i++) {
    t_send(rt, a->to, TAG_DATA, &i, sizeof i);
    rusm_proc_info info;
    if ((i & 63) == 0 && rusm_proc_info_get(rt, a->to, &info) == 0) {
      uint64_t m = atomic_load(&a->max_len);
      while (info.mailbox_len > m &&
             !atomic_compare_exchange_weak(&a->max_len, &m, info.mailbox_len))
        ;
      atomic_fetch_add(&a->samples, 1);
    }
  }
}

static void *flood_thread(void *p) {
  flood_arg *a = p;
  flood_sampling(a->rt, a);
  return NULL;
}

static void flood_proc(rusm_proc *self, void *p) {
  flood_arg *a = p;
  flood_sampling(rusm_proc_rt(self), a);
  t_send(rusm_proc_rt(self), a->done_to, T_TAG_DONE, NULL, 0);
}

static void test_capacity_under_flood(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  uint64_t shed0 = t_metrics(e.rt)->shed;
  rusm_pid_t r = spawn_bounded_waiter(&e, CAP);
  rusm_proc_info i = info_of(&e, r);
  assert_int_equal(i.mailbox_capacity, CAP);
  assert_int_equal(i.shed, 0);

  uint64_t per = T_SCALE(30000, 4000);
  flood_arg a = {e.rt, r, e.pid, per, 0, 0};
  pthread_t th[THREADS];
  for (int k = 0; k < THREADS; k++)
    assert_int_equal(pthread_create(&th[k], NULL, flood_thread, &a), 0);
  assert_int_equal(rusm_spawn_stackful(e.rt, flood_proc, &a, NULL, NULL), 0);
  for (int k = 0; k < THREADS; k++)
    pthread_join(th[k], NULL);
  rusm_msg_free(t_recv_tag(&e, T_TAG_DONE));
  uint64_t max_len = atomic_load(&a.max_len);

  uint64_t total = per * SENDERS;
  i = info_of(&e, r);
  print_message("mailbox %" PRIu64 " (max seen %" PRIu64 " in %" PRIu64
                " samples), shed %" PRIu64 " of %" PRIu64 "\n",
                i.mailbox_len, max_len, (uint64_t)atomic_load(&a.samples),
                i.shed, total);
  /* Racing senders may overshoot by one message each, no more. */
  assert_true(i.mailbox_len >= CAP);
  assert_true(i.mailbox_len <= CAP + SENDERS);
  assert_true(max_len <= CAP + SENDERS);
  /* Nothing was received: every message was either queued or shed. */
  assert_int_equal(i.messages_handled, 0);
  assert_int_equal(i.shed + i.mailbox_len, total);
  assert_int_equal(t_metrics(e.rt)->shed - shed0, i.shed);

  /* Signals still get through a full mailbox: exit with a custom reason
   * ends it with that reason. */
  rusm_ref ref = 0;
  assert_int_equal(rusm_monitor(e.me, r, &ref), 0);
  uint64_t dropped0 = t_metrics(e.rt)->dropped;
  uint64_t queued = i.mailbox_len;
  assert_int_equal(rusm_exit(e.rt, r, rusm_reason_str("full")), 0);
  char detail[16];
  assert_int_equal(wait_down(&e, ref, detail, sizeof detail), RUSM_EXIT_CUSTOM);
  assert_string_equal(detail, "full");
  t_note n = t_wait_note(&e, r);
  assert_int_equal(n.code, RUSM_EXIT_CUSTOM);
  assert_memory_equal(n.detail, "full", 4);
  /* What was queued is dropped with it, and counted once the reaping is
   * complete (after the Down went out). */
  t_wait_idle(&e);
  assert_true(t_metrics(e.rt)->dropped - dropped0 >= queued);
  t_stop(&e);
}

/* Links itself to target, says READY, then waits for a STOP that a full
 * mailbox sheds anyway. */
typedef struct link_arg {
  rusm_pid_t to, target;
} link_arg;

static void linked_to(rusm_proc *self, void *p) {
  link_arg *a = p;
  T_CHECK(rusm_link(self, a->target) == 0);
  t_send(rusm_proc_rt(self), a->to, T_TAG_READY, NULL, 0);
  rusm_filter f = rusm_filter_tag(T_TAG_STOP);
  rusm_msg *m = NULL;
  if (rusm_receive(self, &f, -1, &m) == 0)
    rusm_msg_free(m);
}

static void test_kill_and_link_exit_through_full_mailbox(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  /* kill */
  rusm_pid_t r = spawn_bounded_waiter(&e, 5);
  flood(e.rt, r, 50);
  rusm_proc_info i = info_of(&e, r);
  assert_int_equal(i.mailbox_len, 5);
  assert_int_equal(i.shed, 45);
  rusm_ref ref = 0;
  assert_int_equal(rusm_monitor(e.me, r, &ref), 0);
  assert_int_equal(rusm_kill(e.rt, r), 0);
  assert_int_equal(wait_down(&e, ref, NULL, 0), RUSM_EXIT_KILLED);
  t_wait_note(&e, r);

  /* shutdown, and normal from itself (exit(self, normal) semantics do not
   * apply to others: ignored, then a real reason ends it) */
  r = spawn_bounded_waiter(&e, 1);
  flood(e.rt, r, 10);
  assert_int_equal(info_of(&e, r).mailbox_len, 1);
  assert_int_equal(rusm_exit(e.rt, r, RUSM_REASON_NORMAL), 0);
  assert_true(rusm_is_alive(e.rt, r));
  assert_int_equal(rusm_monitor(e.me, r, &ref), 0);
  assert_int_equal(rusm_exit(e.rt, r, RUSM_REASON_SHUTDOWN), 0);
  assert_int_equal(wait_down(&e, ref, NULL, 0), RUSM_EXIT_SHUTDOWN);
  t_wait_note(&e, r);

  /* A link: a linked process dying abnormally takes the full one along. */
  rusm_pid_t a = t_spawn_waiter(&e);
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.mailbox_capacity = 3;
  link_arg la = {e.pid, a};
  rusm_pid_t b;
  assert_int_equal(rusm_spawn_stackful(e.rt, linked_to, &la, &o, &b), 0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_READY));
  flood(e.rt, b, 30);
  i = info_of(&e, b);
  assert_int_equal(i.mailbox_len, 3);
  assert_int_equal(i.shed, 27);
  assert_int_equal(rusm_monitor(e.me, b, &ref), 0);
  t_send_stop(e.rt, a, RUSM_EXIT_CUSTOM, "linked");
  char detail[16];
  assert_int_equal(wait_down(&e, ref, detail, sizeof detail), RUSM_EXIT_CUSTOM);
  assert_string_equal(detail, "linked");
  t_wait_note(&e, a);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Down and Exit messages to a full watcher                            */
/* ------------------------------------------------------------------ */

typedef struct watch_arg {
  rusm_pid_t to, target;
} watch_arg;

static bool is_down_or_exit(const rusm_msg *m, void *arg) {
  (void)arg;
  uint64_t t = rusm_msg_tag(m);
  return t == RUSM_TAG_DOWN || t == RUSM_TAG_EXIT;
}

/* Traps exits, links to and monitors target, then reports each Down and
 * Exit it gets as a note (pid: the process it is about; value: the tag's
 * low bits: 1 Exit, 2 Down). Never takes a data message. */
static void watcher(rusm_proc *self, void *p) {
  watch_arg *a = p;
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_trap_exit(self, true);
  T_CHECK(rusm_link(self, a->target) == 0);
  rusm_ref ref = 0;
  T_CHECK(rusm_monitor(self, a->target, &ref) == 0);
  t_send(rt, a->to, T_TAG_READY, NULL, 0);
  rusm_filter f = {0, 0, is_down_or_exit, NULL};
  for (int k = 0; k < 2; k++) {
    rusm_msg *m = NULL;
    if (rusm_receive(self, &f, -1, &m) != 0)
      return;
    rusm_pid_t about = RUSM_PID_NONE;
    rusm_reason why = RUSM_REASON_NORMAL;
    rusm_exit_info xi;
    rusm_down_info di;
    if (rusm_msg_exit(m, &xi) == 0) {
      about = xi.from;
      why = xi.reason;
    } else if (rusm_msg_down(m, &di) == 0) {
      T_CHECK(di.ref == ref);
      about = di.pid;
      why = di.reason;
    }
    t_note_send(rt, a->to, about, &why, rusm_msg_tag(m) & 0xff);
    rusm_msg_free(m);
  }
  rusm_filter never = rusm_filter_tag(T_TAG_STOP);
  rusm_msg *m = NULL;
  rusm_receive(self, &never, -1, &m); /* a STOP would be shed: killed */
  rusm_msg_free(m);
}

static void test_down_and_exit_never_shed(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t target = t_spawn_waiter(&e);
  watch_arg a = {e.pid, target};
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.mailbox_capacity = 10;
  rusm_pid_t w;
  assert_int_equal(rusm_spawn_stackful(e.rt, watcher, &a, &o, &w), 0);
  rusm_msg_free(t_recv_tag(&e, T_TAG_READY));
  flood(e.rt, w, 1000);
  rusm_proc_info i = info_of(&e, w);
  assert_int_equal(i.mailbox_capacity, 10);
  assert_int_equal(i.mailbox_len, 10);
  assert_int_equal(i.shed, 990);

  t_send_stop(e.rt, target, RUSM_EXIT_CUSTOM, "gone");
  t_note n = t_wait_note(&e, target); /* the target's own terminate */
  assert_int_equal(n.code, RUSM_EXIT_CUSTOM);
  bool got[3] = {false, false, false};
  for (int k = 0; k < 2; k++) {
    rusm_filter f = rusm_filter_tag(T_TAG_NOTE);
    rusm_msg *m = t_recv(&e, &f);
    assert_true(rusm_msg_from(m) == w);
    t_note x;
    memcpy(&x, rusm_msg_data(m), sizeof x);
    rusm_msg_free(m);
    assert_true(x.pid == target);
    assert_int_equal(x.code, RUSM_EXIT_CUSTOM);
    assert_memory_equal(x.detail, "gone", 4);
    assert_true(x.value == 1 || x.value == 2);
    got[x.value] = true;
  }
  assert_true(got[1] && got[2]);
  /* They were taken, not shed: the shed count did not move. */
  i = info_of(&e, w);
  assert_int_equal(i.shed, 990);
  assert_int_equal(i.messages_handled, 2);
  assert_int_equal(i.mailbox_len, 10);
  rusm_ref ref = 0;
  assert_int_equal(rusm_monitor(e.me, w, &ref), 0);
  assert_int_equal(rusm_kill(e.rt, w), 0);
  assert_int_equal(wait_down(&e, ref, NULL, 0), RUSM_EXIT_KILLED);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Runtime-wide default                                                */
/* ------------------------------------------------------------------ */

static void test_runtime_default(void **state) {
  (void)state;
  /* Without a default, mailboxes are unbounded. */
  t_env e;
  t_start(&e, 0);
  rusm_pid_t r = t_spawn_waiter(&e);
  assert_int_equal(info_of(&e, r).mailbox_capacity, 0);
  flood(e.rt, r, 500);
  rusm_proc_info i = info_of(&e, r);
  assert_int_equal(i.mailbox_len, 500);
  assert_int_equal(i.shed, 0);
  assert_int_equal(t_metrics(e.rt)->shed, 0);
  /* A per-spawn bound still works there. */
  r = spawn_bounded_waiter(&e, 20);
  flood(e.rt, r, 500);
  i = info_of(&e, r);
  assert_int_equal(i.mailbox_len, 20);
  assert_int_equal(i.shed, 480);
  t_stop(&e);

  rusm_rt_opts ro;
  rusm_rt_opts_init(&ro);
  assert_int_equal(ro.mailbox_capacity, 0);
  ro.mailbox_capacity = 50;
  t_start_opts(&e, &ro);
  /* Spawns without their own capacity get the default. */
  r = t_spawn_waiter(&e);
  rusm_pid_t sf = t_spawn_stackful_waiter(&e);
  i = info_of(&e, r);
  assert_int_equal(i.mailbox_capacity, 50);
  assert_int_equal(info_of(&e, sf).mailbox_capacity, 50);
  flood(e.rt, r, 500);
  flood(e.rt, sf, 500);
  i = info_of(&e, r);
  assert_int_equal(i.mailbox_len, 50);
  assert_int_equal(i.shed, 450);
  i = info_of(&e, sf);
  assert_int_equal(i.mailbox_len, 50);
  assert_int_equal(i.shed, 450);
  /* Their own capacity wins ... */
  rusm_pid_t own = spawn_bounded_waiter(&e, 7);
  flood(e.rt, own, 500);
  i = info_of(&e, own);
  assert_int_equal(i.mailbox_capacity, 7);
  assert_int_equal(i.mailbox_len, 7);
  assert_int_equal(i.shed, 493);
  /* ... and UINT32_MAX opts out. */
  rusm_pid_t unb = spawn_bounded_waiter(&e, UINT32_MAX);
  flood(e.rt, unb, 500);
  i = info_of(&e, unb);
  assert_int_equal(i.mailbox_capacity, 0);
  assert_int_equal(i.mailbox_len, 500);
  assert_int_equal(i.shed, 0);
  assert_int_equal(t_metrics(e.rt)->shed, 450 + 450 + 493);
  /* Control messages sent while there is room still work. */
  rusm_pid_t fresh = t_spawn_waiter(&e);
  t_ping(&e, fresh);
  for (rusm_pid_t *p = (rusm_pid_t[]){r, sf, own, unb, fresh, 0}; *p; p++) {
    rusm_ref ref = 0;
    assert_int_equal(rusm_monitor(e.me, *p, &ref), 0);
    assert_int_equal(rusm_kill(e.rt, *p), 0);
    assert_int_equal(wait_down(&e, ref, NULL, 0), RUSM_EXIT_KILLED);
    t_wait_note(&e, *p);
  }
  t_wait_idle(&e);
  t_stop(&e);
}

/* Timer messages and sends by name are user messages: they count against
 * the bound like any other. */
typedef struct shed_wait {
  rusm_rt *rt;
  rusm_pid_t pid;
  uint64_t want;
} shed_wait;

static bool shed_reached(void *arg) {
  shed_wait *w = arg;
  rusm_proc_info i;
  return rusm_proc_info_get(w->rt, w->pid, &i) == 0 && i.shed >= w->want &&
         rusm_timer_count(w->rt) == 0;
}

static void test_timer_and_named_messages_count(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_pid_t r = spawn_bounded_waiter(&e, 2);
  assert_int_equal(rusm_register(e.rt, "bounded", r), 0);
  flood(e.rt, r, 2);
  assert_int_equal(rusm_send_named(e.rt, "bounded", TAG_DATA, NULL, 0), 0);
  assert_int_equal(info_of(&e, r).shed, 1);
  for (int k = 0; k < 3; k++)
    assert_int_equal(rusm_send_after(e.rt, 0, r, TAG_DATA, NULL, 0, NULL), 0);
  assert_int_equal(
      rusm_send_after_named(e.rt, 0, "bounded", TAG_DATA, "x", 1, NULL), 0);
  shed_wait w = {e.rt, r, 5};
  assert_true(t_poll_until(shed_reached, &w));
  rusm_proc_info i = info_of(&e, r);
  assert_int_equal(i.shed, 5);
  assert_int_equal(i.mailbox_len, 2);
  assert_int_equal(rusm_kill(e.rt, r), 0);
  t_wait_note(&e, r);
  t_wait_idle(&e);
  t_stop(&e);
}

/* Queued messages leave room as they are taken: a bounded receiver that
 * drains gets everything a single, paced sender sends. */
static void drainer(rusm_proc *self, void *p) {
  rusm_pid_t to = (rusm_pid_t)(uintptr_t)p;
  rusm_rt *rt = rusm_proc_rt(self);
  uint64_t expect = 0;
  rusm_filter f = rusm_filter_tag(TAG_DATA);
  for (;;) {
    rusm_msg *m = NULL;
    if (rusm_receive(self, &f, -1, &m) != 0)
      return;
    uint64_t v = t_msg_u64(m);
    rusm_msg_free(m);
    T_CHECK(v == expect);
    expect++;
    t_send(rt, to, T_TAG_INFO, &v, sizeof v); /* ack: paces the sender */
  }
}

static void test_room_comes_back(void **state) {
  (void)state;
  t_env e;
  t_start(&e, 0);
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.mailbox_capacity = 2;
  rusm_pid_t d;
  assert_int_equal(
      rusm_spawn_stackful(e.rt, drainer, (void *)(uintptr_t)e.pid, &o, &d), 0);
  for (uint64_t k = 0; k < 1000; k++) {
    t_send_u64(e.rt, d, TAG_DATA, k);
    assert_int_equal(t_recv_u64(&e, T_TAG_INFO), k);
  }
  rusm_proc_info i = info_of(&e, d);
  assert_int_equal(i.shed, 0);
  assert_int_equal(i.messages_handled, 1000);
  assert_int_equal(rusm_kill(e.rt, d), 0);
  t_wait_idle(&e);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Memory stays flat                                                   */
/* ------------------------------------------------------------------ */

static uint64_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f)
    return 0;
  unsigned long size = 0, resident = 0;
  int n = fscanf(f, "%lu %lu", &size, &resident);
  fclose(f);
  return n == 2 ? (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

static void test_memory_flat_under_flood(void **state) {
  (void)state;
#ifdef RUSM_SANITIZED
  skip(); /* sanitizer allocators keep freed memory in quarantine */
#endif
  t_env e;
  t_start(&e, 0);
  rusm_pid_t r = spawn_bounded_waiter(&e, 1000);
  /* Warm the allocator caches first, so that they do not count. */
  flood(e.rt, r, 1000);
  uint64_t before = rss_bytes();
  assert_true(before > 0);
  uint64_t n = 2000000;
  flood(e.rt, r, n);
  uint64_t after = rss_bytes();
  rusm_proc_info i = info_of(&e, r);
  print_message("RSS %+.1f MiB after %" PRIu64 " messages, %" PRIu64 " shed\n",
                ((double)after - (double)before) / (1024.0 * 1024.0), n,
                i.shed);
  assert_int_equal(i.mailbox_len, 1000);
  assert_int_equal(i.shed, n);
  assert_true(after < before + (UINT64_C(64) << 20));
  rusm_ref ref = 0;
  assert_int_equal(rusm_monitor(e.me, r, &ref), 0);
  assert_int_equal(rusm_kill(e.rt, r), 0);
  wait_down(&e, ref, NULL, 0);
  t_wait_idle(&e);
  t_stop(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_capacity_under_flood),
      cmocka_unit_test(test_kill_and_link_exit_through_full_mailbox),
      cmocka_unit_test(test_down_and_exit_never_shed),
      cmocka_unit_test(test_runtime_default),
      cmocka_unit_test(test_timer_and_named_messages_count),
      cmocka_unit_test(test_room_comes_back),
      cmocka_unit_test(test_memory_flat_under_flood),
  };
  return T_RUN(tests);
}
