// requires: wasm
/*
 * test_wasm_guests.c — the real guests of guests/ (C with rusm.h, Rust with
 * the rusm crate) driven through rusm/wasm.h: every ABI call (abi_all, in
 * C and in Rust), echo, ping-pong and the spawn storm at small N, trap
 * isolation (trapper), busy loops preempted and killed (busy), WASI stdout
 * and stderr reaching the log (printer), the overflow tier (idle), and a
 * compile-time check that the guest library's constants equal
 * rusm/otp.h's.
 *
 * The guests are built by scripts/guests-build into build/guests/ (found
 * from this file's path, or RUSM_GUESTS_DIR); a missing one is built by
 * running that script once. RUSM_NO_RUST=1 skips the Rust guest.
 * No timing assertions; waits are on messages, with generous guards.
 */
#include <assert.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "rusm/otp.h"
#include "rusm/wasm.h"

#include "../../guests/c/protocol.h"
#define RUSM_ABI_LISTS_ONLY
#include "../../guests/rusm-c/rusm_abi.h"

#define GUARD_MS 30000 /* a failure guard, never a pacing delay */

/* ------------------------------------------------------------------ */
/* The guest library's numbers are the runtime's                       */
/* ------------------------------------------------------------------ */

#define SAME(name, value)                                                      \
  _Static_assert((uint64_t)(name) == (uint64_t)(value),                        \
                 "guests/rusm-c/rusm_abi.h: " #name " differs from otp.h");
RUSM_ABI_ERRORS(SAME)
RUSM_ABI_EXIT_CODES(SAME)
RUSM_ABI_TAGS(SAME)
RUSM_ABI_SIZES(SAME)
RUSM_ABI_PID_BITS(SAME)
#undef SAME
_Static_assert(RUSM_ABI_VERSION == RUSM_WASM_ABI_VERSION, "ABI version");
_Static_assert(RUSM_EXIT__COUNT == 8, "an exit code without a guest name");
_Static_assert(RUSM_EBUSY == -11, "an error code without a guest name");

/* The same lists at run time, so that the test reports what it checked. */
static void test_constants(void **state) {
  (void)state;
  int n = 0;
#define COUNT(name, value) n++;
  RUSM_ABI_ERRORS(COUNT)
  RUSM_ABI_EXIT_CODES(COUNT)
  RUSM_ABI_TAGS(COUNT)
  RUSM_ABI_SIZES(COUNT)
  RUSM_ABI_PID_BITS(COUNT)
#undef COUNT
  assert_int_equal(n, 12 + 8 + 4 + 4 + 3);
  assert_int_equal(RUSM_WASM_LOG_DEBUG, 0);
  assert_int_equal(RUSM_WASM_LOG_ERROR, 3);
}

/* ------------------------------------------------------------------ */
/* Fixture: a runtime, a Wasm host with a log sink, the attached thread */
/* ------------------------------------------------------------------ */

#define LOG_MAX 64
typedef struct logline {
  rusm_pid_t pid;
  int level;
  rusm_wasm_log_source source;
  char text[160];
} logline;

typedef struct logbook {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  logline lines[LOG_MAX];
  int n;
} logbook;

static logbook book = {
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {{0}}, 0};

static void on_log(void *arg, rusm_pid_t pid, int level,
                   rusm_wasm_log_source source, const char *data, size_t len) {
  logbook *b = arg;
  pthread_mutex_lock(&b->mu);
  if (b->n < LOG_MAX) {
    logline *l = &b->lines[b->n++];
    l->pid = pid;
    l->level = level;
    l->source = source;
    size_t k = len < sizeof l->text - 1 ? len : sizeof l->text - 1;
    memcpy(l->text, data, k);
    l->text[k] = '\0';
  }
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

/* Waits until a line from pid with that source and text has been logged.
 * Returns whether it came before the guard. */
static bool await_line(rusm_pid_t pid, rusm_wasm_log_source source,
                       const char *text) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += GUARD_MS / 1000;
  bool found = false;
  pthread_mutex_lock(&book.mu);
  for (;;) {
    for (int i = 0; i < book.n && !found; i++)
      found = book.lines[i].pid == pid && book.lines[i].source == source &&
              strcmp(book.lines[i].text, text) == 0;
    if (found || pthread_cond_timedwait(&book.cv, &book.mu, &until) != 0)
      break;
  }
  pthread_mutex_unlock(&book.mu);
  return found;
}

/*
 * Wasmtime turns guest faults (SIGSEGV, SIGILL, SIGFPE, SIGBUS) into traps
 * with its own SA_SIGINFO handlers, installed when the first engine is
 * made. cmocka installs its handlers around every test and fixture and
 * puts the old ones back with signal(), which drops SA_SIGINFO: a trap
 * would then end the test program. So main() saves Wasmtime's handlers
 * once, and every fixture and test puts them back first.
 */
static const int TRAP_SIGNALS[] = {SIGSEGV, SIGILL, SIGFPE, SIGBUS};
#define NTRAP_SIGNALS (sizeof TRAP_SIGNALS / sizeof TRAP_SIGNALS[0])
static struct sigaction wasmtime_handlers[NTRAP_SIGNALS];

static void save_wasmtime_handlers(void) {
  rusm_rt *rt = NULL;
  rusm_wasm *w = NULL;
  rusm_rt_opts ro;
  rusm_rt_opts_init(&ro);
  ro.schedulers = 1;
  assert(rusm_rt_create(&ro, &rt) == 0);
  assert(rusm_wasm_create(rt, NULL, &w) == 0); /* installs them */
  for (size_t i = 0; i < NTRAP_SIGNALS; i++)
    sigaction(TRAP_SIGNALS[i], NULL, &wasmtime_handlers[i]);
  rusm_wasm_destroy(w);
  rusm_rt_destroy(rt);
}

static void wasm_signals(void) {
  for (size_t i = 0; i < NTRAP_SIGNALS; i++)
    sigaction(TRAP_SIGNALS[i], &wasmtime_handlers[i], NULL);
}

typedef struct fx {
  rusm_rt *rt;
  rusm_wasm *w;
  rusm_proc *self;
  rusm_pid_t me;
} fx;

static int setup_pool(void **state, uint32_t pool_slots) {
  wasm_signals();
  fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  rusm_rt_opts ro;
  rusm_rt_opts_init(&ro);
  ro.schedulers = 2;
  assert_int_equal(rusm_rt_create(&ro, &f->rt), 0);
  rusm_wasm_opts wo;
  rusm_wasm_opts_init(&wo);
  wo.log = on_log;
  wo.log_arg = &book;
  if (pool_slots)
    wo.pool_slots = pool_slots;
  assert_int_equal(rusm_wasm_create(f->rt, &wo, &f->w), 0);
  assert_int_equal(rusm_attach(f->rt, &f->self), 0);
  f->me = rusm_self(f->self);
  pthread_mutex_lock(&book.mu);
  book.n = 0;
  pthread_mutex_unlock(&book.mu);
  *state = f;
  return 0;
}

static int setup(void **state) { return setup_pool(state, 0); }
static int setup_small_pool(void **state) { return setup_pool(state, 4); }

static int teardown(void **state) {
  wasm_signals();
  fx *f = *state;
  rusm_detach(f->self);
  /* A test that passed left no process behind; after a failure the
   * runtime's destruction kills what is left. */
  if (rusm_rt_wait_idle(f->rt, 2000) != 0)
    fprintf(stderr, "note: processes left alive; killed at teardown\n");
  rusm_wasm_destroy(f->w);
  rusm_rt_destroy(f->rt);
  free(f);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Finding (and if need be building) the guests                        */
/* ------------------------------------------------------------------ */

/* The repository root, from this file's path (CMake compiles it by its
 * absolute path). */
static void repo_root(char *buf, size_t len) {
  snprintf(buf, len, "%s", __FILE__);
  char *p = strstr(buf, "/tests/unit/");
  if (p)
    *p = '\0';
  else
    snprintf(buf, len, ".");
}

static void guest_path(const char *rel, char *buf, size_t len) {
  const char *dir = getenv("RUSM_GUESTS_DIR");
  if (dir && *dir) {
    snprintf(buf, len, "%s/%s", dir, rel);
    return;
  }
  char root[1024];
  repo_root(root, sizeof root);
  snprintf(buf, len, "%s/build/guests/%s", root, rel);
}

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool rust_wanted(void) {
  const char *no = getenv("RUSM_NO_RUST");
  return !(no && strcmp(no, "1") == 0);
}

/* Loads build/guests/<rel>; runs scripts/guests-build once when it is
 * missing (it is cached: a no-op when everything is current). */
static rusm_wasm_module *load(fx *f, const char *rel) {
  static bool built;
  char path[PATH_MAX];
  guest_path(rel, path, sizeof path);
  if (!exists(path) && !built && !getenv("RUSM_GUESTS_DIR")) {
    built = true;
    char root[1024], cmd[1100];
    repo_root(root, sizeof root);
    snprintf(cmd, sizeof cmd, "'%s/scripts/guests-build' >&2", root);
    fprintf(stderr, "note: %s missing, running scripts/guests-build\n", path);
    if (system(cmd) != 0)
      fprintf(stderr, "note: scripts/guests-build failed\n");
  }
  if (!exists(path))
    fail_msg("no guest %s (scripts/guests-build builds it)", path);
  rusm_wasm_module *m = NULL;
  char err[256] = "";
  int rc = rusm_wasm_load_file(f->w, NULL, path, &m, err, sizeof err);
  if (rc != 0)
    fail_msg("loading %s: %s (%s)", path, rusm_err_name(rc), err);
  return m;
}

static rusm_pid_t spawn(fx *f, rusm_wasm_module *m, const char *entry,
                        const void *arg, size_t len, uint32_t caps,
                        rusm_ref *mon) {
  rusm_wasm_spawn_opts o;
  rusm_wasm_spawn_opts_init(&o);
  o.entry = entry;
  o.arg = arg;
  o.arg_len = len;
  o.caps = caps;
  if (mon) {
    o.proc.monitor = true;
    o.proc.monitor_ref = mon;
  }
  rusm_pid_t pid = RUSM_PID_NONE;
  int rc = rusm_wasm_spawn(m, &o, &pid);
  if (rc != 0)
    fail_msg("spawn %s: %s", entry ? entry : "(default)", rusm_err_name(rc));
  return pid;
}

/* The next message with this tag (any when tag is 0); fails the test when
 * none comes before the guard. The caller frees it. */
static rusm_msg *take(fx *f, uint64_t tag) {
  rusm_filter flt = rusm_filter_tag(tag);
  rusm_msg *m = NULL;
  int rc = rusm_receive(f->self, tag ? &flt : NULL, GUARD_MS, &m);
  if (rc != 0)
    fail_msg("no message with tag %#llx: %s", (unsigned long long)tag,
             rusm_err_name(rc));
  return m;
}

static bool is_down_of(const rusm_msg *m, void *arg) {
  rusm_down_info d;
  return rusm_msg_down(m, &d) == 0 && d.ref == *(const rusm_ref *)arg;
}

/* Waits for the Down of ref (leaving other messages queued) and returns
 * its exit code; the detail is copied into detail (NUL-terminated) when
 * given. */
static int await_down(fx *f, rusm_ref ref, char *detail, size_t len) {
  rusm_filter flt = rusm_filter_tag(RUSM_TAG_DOWN);
  flt.pred = is_down_of;
  flt.pred_arg = &ref;
  rusm_msg *m = NULL;
  int rc = rusm_receive(f->self, &flt, GUARD_MS, &m);
  if (rc != 0)
    fail_msg("no Down for monitor %llu: %s", (unsigned long long)ref,
             rusm_err_name(rc));
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  int code = d.reason.code;
  if (detail) {
    size_t k = d.reason.len < len - 1 ? d.reason.len : len - 1;
    if (k)
      memcpy(detail, d.reason.data, k);
    detail[k] = '\0';
  }
  rusm_msg_free(m);
  return code;
}

/* ------------------------------------------------------------------ */
/* abi_all: every ABI call, in C and in Rust                           */
/* ------------------------------------------------------------------ */

enum { ANY_POSITIVE = INT32_MIN, THE_GUEST, ZERO_OR_ONE };

typedef struct expect {
  const char *name;
  int64_t value; /* or ANY_POSITIVE, THE_GUEST, ZERO_OR_ONE */
} expect;

/* In the order abi_all sends them. */
static const expect STEPS[] = {
    {"abi_version", 1},
    {"self", THE_GUEST},
    {"arg_len", 8},
    {"send_bad_tag", RUSM_EINVAL},
    {"recv_poll_empty", RUSM_ETIMEDOUT},
    {"ready", 0},
    {"recv_sel_len", 1},
    {"recv_sel_tag_ok", 1},
    {"recv_from_ok", 1},
    {"recv_len", 5},
    {"recv_payload_ok", 1},
    {"recv_trunc_n", 4},
    {"recv_trunc_len", 17},
    {"recv_trunc_bytes_ok", 1},
    {"recv_timeout", RUSM_ETIMEDOUT},
    {"spawn", ANY_POSITIVE},
    {"monitor_ok", 1},
    {"link", 0},
    {"unlink", 0},
    {"exit", 0},
    {"down_decode", 0},
    {"down_ref_ok", 1},
    {"down_pid_ok", 1},
    {"down_code", RUSM_EXIT_CUSTOM},
    {"down_detail_ok", 1},
    {"send_dead", 0},
    {"link_dead", RUSM_ENOPROC},
    {"kill_dead", RUSM_ENOPROC},
    {"exit_dead", RUSM_ENOPROC},
    {"down_noproc_ref_ok", 1},
    {"down_noproc_code", RUSM_EXIT_NOPROC},
    {"monitor_stack_ok", 1},
    {"demonitor_active", 1},
    {"demonitor_again", 0},
    {"kill", 0},
    {"down_killed_ref_ok", 1},
    {"down_killed_code", RUSM_EXIT_KILLED},
    {"no_down_after_demonitor", RUSM_ETIMEDOUT},
    /* A monitor of a dead pid counts as active until its Down is
     * fetched from the mailbox's outer queue. */
    {"demonitor_flush", ZERO_OR_ONE},
    {"flushed_down", RUSM_ETIMEDOUT},
    {"trap_exit_prev", 0},
    {"trap_exit_prev2", 1},
    {"link_dead_trapping", RUSM_ENOPROC},
    {"exit_decode", 0},
    {"exit_noproc_code", RUSM_EXIT_NOPROC},
    {"exit_noproc_from_ok", 1},
    {"spawn_link_ok", 1},
    {"child_work_from_ok", 1},
    {"exit_trapped_from_ok", 1},
    {"exit_trapped_code", RUSM_EXIT_CUSTOM},
    {"exit_trapped_detail_ok", 1},
    {"spawn_unknown_is_err", 1},
    {"spawn_registered_ok", 1},
    {"registered_ready_ok", 1},
    {"spawn_reg_default_ok", 1},
    {"spawn_bad_module_is_err", 1},
    {"exit_to_trapping", 0},
    {"trapping_child_alive", RUSM_ETIMEDOUT},
    {"trapping_child_killed", 1},
    {"trap_exit_off_prev", 1},
    {"register", 0},
    {"register_again", RUSM_EBUSY},
    {"whereis_self_ok", 1},
    {"whereis_none", 0},
    {"send_named", 0},
    {"named_recv_ok", 1},
    {"send_named_unknown", RUSM_ENOTFOUND},
    {"register_taken", RUSM_EEXIST},
    {"send_after_ok", 1},
    {"timer_fired_ok", 1},
    {"cancel_fired", RUSM_ENOTFOUND},
    {"cancel_left_ok", 1},
    {"cancel_again", RUSM_ENOTFOUND},
    {"now_ok", 1},
    {"log", 0},
    {"done", 0},
};
#define NSTEPS (sizeof STEPS / sizeof STEPS[0])

static void run_abi_all(fx *f, const char *rel, const char *entry) {
  wasm_signals();
  /* abi_all spawns "echo:main" and "echo:" (module:export). */
  rusm_wasm_module *echo = load(f, "c/echo.wasm");
  assert_int_equal(rusm_wasm_register(f->w, "echo", echo), 0);
  rusm_wasm_module_release(echo);
  rusm_wasm_module *m = load(f, rel);
  rusm_ref ref = 0;
  rusm_pid_t guest =
      spawn(f, m, entry, &f->me, sizeof f->me, RUSM_WASM_CAP_SPAWN, &ref);
  rusm_wasm_module_release(m);

  for (size_t k = 0; k < NSTEPS; k++) /* names fit guest_step */
    assert_true(strlen(STEPS[k].name) < GUEST_STEP_NAME);
  size_t i = 0;
  int failures = 0;
  while (i < NSTEPS) {
    rusm_msg *msg = NULL;
    int rc = rusm_receive(f->self, NULL, GUARD_MS, &msg);
    if (rc != 0)
      fail_msg("%s: no step after \"%s\": %s", rel,
               i ? STEPS[i - 1].name : "(start)", rusm_err_name(rc));
    if (rusm_msg_tag(msg) == RUSM_TAG_DOWN) {
      rusm_down_info d;
      rusm_msg_down(msg, &d);
      fail_msg("%s: the guest ended (%s: %.*s) before step \"%s\"", rel,
               rusm_exit_code_name(d.reason.code), (int)d.reason.len,
               (const char *)d.reason.data, STEPS[i].name);
    }
    assert_int_equal(rusm_msg_tag(msg), GUEST_TAG_STEP);
    assert_int_equal(rusm_msg_len(msg), sizeof(guest_step));
    guest_step s;
    memcpy(&s, rusm_msg_data(msg), sizeof s);
    rusm_msg_free(msg);
    s.name[GUEST_STEP_NAME - 1] = '\0';
    const expect *e = &STEPS[i++];
    if (strcmp(s.name, e->name) != 0)
      fail_msg("%s: step \"%s\" where \"%s\" was expected", rel, s.name,
               e->name);
    bool ok = e->value == ANY_POSITIVE  ? s.value > 0
              : e->value == THE_GUEST   ? (rusm_pid_t)s.value == guest
              : e->value == ZERO_OR_ONE ? s.value == 0 || s.value == 1
                                        : s.value == e->value;
    if (!ok) {
      fprintf(stderr, "%s: step %s = %lld, expected %lld\n", rel, s.name,
              (long long)s.value, (long long)e->value);
      failures++;
    }
    if (strcmp(s.name, "ready") == 0) {
      assert_int_equal(rusm_send(f->rt, guest, GUEST_TAG_TEST, "hello", 5), 0);
      assert_int_equal(rusm_send(f->rt, guest, GUEST_TAG_TEST2, "x", 1), 0);
      assert_int_equal(
          rusm_send(f->rt, guest, GUEST_TAG_TEST, "truncated-payload", 17), 0);
    }
  }
  char detail[64];
  assert_int_equal(await_down(f, ref, detail, sizeof detail), RUSM_EXIT_CUSTOM);
  assert_string_equal(detail, "abi_all done");
  assert_true(await_line(guest, RUSM_WASM_LOG_CALL, "abi_all: a log line"));
  assert_int_equal(rusm_wasm_unregister(f->w, "echo"), 0);
  if (failures)
    fail_msg("%s: %d step(s) differ (listed above)", rel, failures);
}

static void test_abi_all_c(void **state) {
  run_abi_all(*state, "c/abi_all.wasm", "main");
}

static void test_abi_all_rust(void **state) {
  if (!rust_wanted())
    skip();
  run_abi_all(*state, "rust/echo.wasm", "abi_all");
}

/* ------------------------------------------------------------------ */
/* echo, in C and in Rust                                              */
/* ------------------------------------------------------------------ */

static void run_echo(fx *f, const char *rel) {
  wasm_signals();
  rusm_wasm_module *m = load(f, rel);
  rusm_ref ref = 0;
  rusm_pid_t echo = spawn(f, m, "main", &f->me, sizeof f->me, 0, &ref);
  rusm_wasm_module_release(m);
  rusm_msg_free(take(f, GUEST_TAG_READY));

  static uint8_t big[10000];
  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (uint8_t)(i * 7);
  const size_t sizes[] = {0, 1, 100, sizeof big};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    assert_int_equal(rusm_send(f->rt, echo, GUEST_TAG_PING, big, sizes[k]), 0);
    rusm_msg *r = take(f, GUEST_TAG_PING);
    assert_int_equal(rusm_msg_from(r), echo);
    assert_int_equal(rusm_msg_len(r), sizes[k]);
    if (sizes[k])
      assert_memory_equal(rusm_msg_data(r), big, sizes[k]);
    rusm_msg_free(r);
  }
  assert_int_equal(rusm_send(f->rt, echo, GUEST_TAG_STOP, NULL, 0), 0);
  assert_int_equal(await_down(f, ref, NULL, 0), RUSM_EXIT_NORMAL);
}

static void test_echo_c(void **state) { run_echo(*state, "c/echo.wasm"); }

static void test_echo_rust(void **state) {
  if (!rust_wanted())
    skip();
  run_echo(*state, "rust/echo.wasm");
}

/* ------------------------------------------------------------------ */
/* ping-pong and the spawn storm at small N                            */
/* ------------------------------------------------------------------ */

static void test_pingpong(void **state) {
  fx *f = *state;
  wasm_signals();
  rusm_wasm_module *m = load(f, "c/pingpong.wasm");
  enum { N = 200 };
  guest_ping_arg a = {.report_to = f->me, .n = N, .want_latencies = 1};
  rusm_ref ref = 0;
  spawn(f, m, "ping", &a, sizeof a, RUSM_WASM_CAP_SPAWN, &ref);
  rusm_msg *r = take(f, GUEST_TAG_REPORT);
  guest_ping_report rep;
  assert_int_equal(rusm_msg_len(r), sizeof rep + N * sizeof(int64_t));
  memcpy(&rep, rusm_msg_data(r), sizeof rep);
  assert_int_equal(rep.err, 0);
  assert_int_equal(rep.done, N);
  assert_true(rep.t_end >= rep.t_start);
  int64_t lat[N];
  memcpy(lat, rusm_msg_data(r) + sizeof rep, sizeof lat);
  for (int i = 0; i < N; i++)
    assert_true(lat[i] >= 0);
  rusm_msg_free(r);
  assert_int_equal(await_down(f, ref, NULL, 0), RUSM_EXIT_NORMAL);

  /* Without the spawn capability ping cannot make its pong: it reports
   * RUSM_ECONTEXT and nothing else happens. */
  a.want_latencies = 0;
  spawn(f, m, "ping", &a, sizeof a, 0, &ref);
  r = take(f, GUEST_TAG_REPORT);
  memcpy(&rep, rusm_msg_data(r), sizeof rep);
  rusm_msg_free(r);
  assert_int_equal(rep.err, RUSM_ECONTEXT);
  assert_int_equal(rep.done, 0);
  assert_int_equal(await_down(f, ref, NULL, 0), RUSM_EXIT_NORMAL);
  rusm_wasm_module_release(m);
}

static void test_spawner(void **state) {
  fx *f = *state;
  wasm_signals();
  rusm_wasm_module *m = load(f, "c/spawner.wasm");
  guest_storm_arg a = {.report_to = f->me, .n = 300, .batch = 64};
  rusm_ref ref = 0;
  spawn(f, m, "main", &a, sizeof a, RUSM_WASM_CAP_SPAWN, &ref);
  rusm_msg *r = take(f, GUEST_TAG_REPORT);
  guest_storm_report rep;
  assert_int_equal(rusm_msg_len(r), sizeof rep);
  memcpy(&rep, rusm_msg_data(r), sizeof rep);
  rusm_msg_free(r);
  assert_int_equal(rep.err, 0);
  assert_int_equal(rep.spawned, 300);
  assert_int_equal(rep.got, 300);
  assert_int_equal(await_down(f, ref, NULL, 0), RUSM_EXIT_NORMAL);
  rusm_wasm_stats st;
  rusm_wasm_stats_get(f->w, &st);
  assert_true(st.spawned >= 301);
  rusm_wasm_module_release(m);
}

/* ------------------------------------------------------------------ */
/* Traps end only the guest that trapped                               */
/* ------------------------------------------------------------------ */

static void test_trap_isolation(void **state) {
  fx *f = *state;
  wasm_signals();
  rusm_wasm_module *echo_m = load(f, "c/echo.wasm");
  rusm_wasm_module *m = load(f, "c/trapper.wasm");
  rusm_ref echo_ref = 0;
  rusm_pid_t echo = spawn(f, echo_m, "main", &f->me, 8, 0, &echo_ref);
  rusm_msg_free(take(f, GUEST_TAG_READY));

  static const struct {
    const char *entry, *needle;
  } cases[] = {
      {"unreachable", "unreachable"}, {"oob", "out of bounds"},
      {"div0", "divide by zero"},     {"stack", "stack"},
      {"badptr", "rusm.send"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    rusm_ref ref = 0;
    spawn(f, m, cases[i].entry, NULL, 0, 0, &ref);
    char detail[512];
    int code = await_down(f, ref, detail, sizeof detail);
    if (code != RUSM_EXIT_TRAP || !strstr(detail, cases[i].needle))
      fail_msg("trapper %s: exit %s \"%s\" (wanted trap with \"%s\")",
               cases[i].entry, rusm_exit_code_name(code), detail,
               cases[i].needle);
    /* The neighbour is untouched. */
    assert_int_equal(rusm_send(f->rt, echo, GUEST_TAG_PING, "k", 1), 0);
    rusm_msg *r = take(f, GUEST_TAG_PING);
    assert_int_equal(rusm_msg_from(r), echo);
    rusm_msg_free(r);
  }

  /* memory.grow past the limit fails (returns -1) without a trap. */
  rusm_ref ref = 0;
  spawn(f, m, "grow", &f->me, 8, 0, &ref);
  rusm_msg *r = take(f, GUEST_TAG_REPORT);
  int32_t grown;
  assert_int_equal(rusm_msg_len(r), sizeof grown);
  memcpy(&grown, rusm_msg_data(r), sizeof grown);
  rusm_msg_free(r);
  assert_int_equal(grown, -1);
  assert_int_equal(await_down(f, ref, NULL, 0), RUSM_EXIT_NORMAL);

  spawn(f, m, "main", NULL, 0, 0, &ref);
  assert_int_equal(await_down(f, ref, NULL, 0), RUSM_EXIT_NORMAL);

  rusm_wasm_stats st;
  rusm_wasm_stats_get(f->w, &st);
  assert_true(st.traps >= 5);
  assert_int_equal(rusm_send(f->rt, echo, GUEST_TAG_STOP, NULL, 0), 0);
  assert_int_equal(await_down(f, echo_ref, NULL, 0), RUSM_EXIT_NORMAL);
  rusm_wasm_module_release(m);
  rusm_wasm_module_release(echo_m);
}

/* ------------------------------------------------------------------ */
/* Busy loops are preempted, and killed                                */
/* ------------------------------------------------------------------ */

static void test_busy_preempted(void **state) {
  fx *f = *state;
  wasm_signals();
  rusm_wasm_module *busy_m = load(f, "c/busy.wasm");
  rusm_wasm_module *echo_m = load(f, "c/echo.wasm");
  enum { NBUSY = 4 }; /* two per scheduler */
  rusm_ref refs[NBUSY];
  rusm_pid_t pids[NBUSY];
  for (int i = 0; i < NBUSY; i++) {
    pids[i] = spawn(f, busy_m, "main", &f->me, 8, 0, &refs[i]);
    rusm_msg_free(take(f, GUEST_TAG_READY));
  }
  /* Spinning guests on every scheduler, and still echo answers. */
  rusm_ref echo_ref = 0;
  rusm_pid_t echo = spawn(f, echo_m, "main", &f->me, 8, 0, &echo_ref);
  rusm_msg_free(take(f, GUEST_TAG_READY));
  for (int k = 0; k < 20; k++) {
    assert_int_equal(rusm_send(f->rt, echo, GUEST_TAG_PING, &k, sizeof k), 0);
    rusm_msg_free(take(f, GUEST_TAG_PING));
  }
  for (int i = 0; i < NBUSY; i++) {
    assert_int_equal(rusm_kill(f->rt, pids[i]), 0);
    assert_int_equal(await_down(f, refs[i], NULL, 0), RUSM_EXIT_KILLED);
  }
  assert_int_equal(rusm_send(f->rt, echo, GUEST_TAG_STOP, NULL, 0), 0);
  assert_int_equal(await_down(f, echo_ref, NULL, 0), RUSM_EXIT_NORMAL);
  rusm_wasm_module_release(busy_m);
  rusm_wasm_module_release(echo_m);
}

/* ------------------------------------------------------------------ */
/* WASI stdout / stderr reach the log                                  */
/* ------------------------------------------------------------------ */

static void test_printer(void **state) {
  fx *f = *state;
  wasm_signals();
  rusm_wasm_module *m = load(f, "c/printer.wasm");
  assert_true(rusm_wasm_module_has_entry(m, "_start"));
  rusm_ref ref = 0;
  rusm_pid_t pid = spawn(f, m, NULL, NULL, 0, 0, &ref); /* _start */
  rusm_wasm_module_release(m);
  assert_int_equal(await_down(f, ref, NULL, 0), RUSM_EXIT_NORMAL);
  assert_true(await_line(pid, RUSM_WASM_LOG_STDOUT, "printer: line one"));
  assert_true(await_line(pid, RUSM_WASM_LOG_STDOUT, "printer: 2 + 3 = 5"));
  assert_true(await_line(pid, RUSM_WASM_LOG_STDERR, "printer: to stderr"));
}

/* ------------------------------------------------------------------ */
/* More live guests than pool slots: the overflow tier takes the rest  */
/* ------------------------------------------------------------------ */

static void test_overflow_tier(void **state) {
  fx *f = *state; /* a pool of 4 slots */
  wasm_signals();
  rusm_wasm_module *m = load(f, "c/idle.wasm");
  enum { N = 24 };
  rusm_pid_t pids[N];
  rusm_ref refs[N];
  for (int i = 0; i < N; i++)
    pids[i] = spawn(f, m, "main", &f->me, 8, 0, &refs[i]);
  for (int i = 0; i < N; i++)
    rusm_msg_free(take(f, GUEST_TAG_READY));
  rusm_wasm_stats st;
  rusm_wasm_stats_get(f->w, &st);
  assert_int_equal(st.pool_slots, 4);
  assert_int_equal(st.instances_live, N);
  assert_true(st.pooled_live <= 4);
  assert_true(st.overflow_live >= N - 4);
  for (int i = 0; i < N; i++)
    assert_int_equal(rusm_send(f->rt, pids[i], GUEST_TAG_STOP, NULL, 0), 0);
  for (int i = 0; i < N; i++) {
    char detail[256] = "";
    int code = await_down(f, refs[i], detail, sizeof detail);
    if (code != RUSM_EXIT_NORMAL)
      fail_msg("idle %d ended %s: %s", i, rusm_exit_code_name(code), detail);
  }
  rusm_wasm_module_release(m);
}

int main(void) {
  /* RUSM_TEST_FILTER=test_printer runs only the tests matching it. */
  save_wasmtime_handlers();
  const char *filter = getenv("RUSM_TEST_FILTER");
  if (filter && *filter)
    cmocka_set_test_filter(filter);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_constants),
      cmocka_unit_test_setup_teardown(test_abi_all_c, setup, teardown),
      cmocka_unit_test_setup_teardown(test_abi_all_rust, setup, teardown),
      cmocka_unit_test_setup_teardown(test_echo_c, setup, teardown),
      cmocka_unit_test_setup_teardown(test_echo_rust, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pingpong, setup, teardown),
      cmocka_unit_test_setup_teardown(test_spawner, setup, teardown),
      cmocka_unit_test_setup_teardown(test_trap_isolation, setup, teardown),
      cmocka_unit_test_setup_teardown(test_busy_preempted, setup, teardown),
      cmocka_unit_test_setup_teardown(test_printer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_overflow_tier, setup_small_pool,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
