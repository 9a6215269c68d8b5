// guest-kind: entries
/*
 * abi_all: every call of the host ABI, its results sent to a driver as
 * GUEST_TAG_STEP messages (a guest_step: name, value) so that the driver
 * (tests/unit/test_wasm_guests.c) checks them. The Rust SDK's twin
 * (guests/rust/echo, export "abi_all") sends the same steps in the same
 * order, so one driver checks both.
 *
 * "main", arg = the driver's pid. The driver must:
 *  - not message it before the step "ready" (the first receive polls an
 *    empty mailbox);
 *  - on "ready", send in this order: GUEST_TAG_TEST "hello",
 *    GUEST_TAG_TEST2 "x", GUEST_TAG_TEST "truncated-payload".
 *  - register guests/c/echo.c's module with the host as "echo".
 * It ends with exit_self(custom, "abi_all done") after the step "done".
 * Needs the spawn capability.
 *
 * Helper exports it spawns: "idle" (parks until GUEST_TAG_STOP), "child"
 * (arg: u64 pid [| i32 code | detail]: sends pid GUEST_TAG_WORK, then
 * returns, or exits with that reason when one is given), "register" (arg:
 * u64 pid | name: tries to register name, sends pid GUEST_TAG_WORK with
 * the int32 result).
 */
#include "protocol.h"
#include "rusm.h"

static rusm_pid_t driver;

static void step(const char *name, int64_t value) {
  guest_step s;
  memset(&s, 0, sizeof s);
  strncpy(s.name, name, sizeof s.name - 1);
  s.value = value;
  rusm_send(driver, GUEST_TAG_STEP, &s, sizeof s);
}

static int64_t truth(bool b) { return b ? 1 : 0; }

RUSM_ENTRY("idle", abi_idle) {
  rusm_filter stop = rusm_filter_tag(GUEST_TAG_STOP);
  rusm_receive(&stop, -1, NULL, 0, NULL);
}

RUSM_ENTRY("child", abi_child) {
  unsigned char a[64];
  int32_t n = rusm_arg(a, sizeof a);
  if (n < 8)
    return;
  rusm_pid_t to;
  memcpy(&to, a, 8);
  rusm_pid_t self = rusm_self();
  rusm_send(to, GUEST_TAG_WORK, &self, sizeof self);
  if (n >= 12 && n <= (int32_t)sizeof a) {
    int32_t code;
    memcpy(&code, a + 8, 4);
    rusm_exit_self((rusm_exit_code)code, a + 12, (size_t)n - 12);
  }
}

RUSM_ENTRY("register", abi_register) {
  char a[8 + RUSM_NAME_MAX + 1];
  int32_t n = rusm_arg(a, sizeof a - 1);
  if (n < 9 || n >= (int32_t)sizeof a)
    return;
  a[n] = '\0';
  rusm_pid_t to;
  memcpy(&to, a, 8);
  int32_t r = rusm_register(a + 8);
  rusm_send(to, GUEST_TAG_WORK, &r, sizeof r);
}

/* Receives one message with exactly this tag (forever) into buf. */
static int32_t take(uint64_t tag, void *buf, size_t cap, rusm_msg_info *info) {
  rusm_filter f = rusm_filter_tag(tag);
  return rusm_receive(&f, -1, buf, cap, info);
}

RUSM_ENTRY("main", abi_main) {
  unsigned char buf[256];
  rusm_msg_info info;
  rusm_pid_t self = rusm_self();

  /* Identity and argument. */
  int32_t arg_len = rusm_arg(NULL, 0);
  driver = rusm_arg_pid();
  if (!driver)
    rusm_exit_self_str("abi_all: no driver pid");
  step("abi_version", rusm_abi_version());
  step("self", (int64_t)self);
  step("arg_len", arg_len);

  /* Sending and receiving. */
  step("send_bad_tag", rusm_send(driver, RUSM_TAG_SYSTEM | 5, NULL, 0));
  step("recv_poll_empty", rusm_receive(NULL, 0, buf, sizeof buf, &info));
  step("ready", 0);
  rusm_filter f2 = rusm_filter_tag(GUEST_TAG_TEST2);
  int32_t n = rusm_receive(&f2, -1, buf, sizeof buf, &info);
  step("recv_sel_len", n);
  step("recv_sel_tag_ok", truth(info.tag == GUEST_TAG_TEST2));
  step("recv_from_ok", truth(info.from == driver));
  n = take(GUEST_TAG_TEST, buf, sizeof buf, &info);
  step("recv_len", n);
  step("recv_payload_ok", truth(n == 5 && memcmp(buf, "hello", 5) == 0));
  /* A mask matching the test tags' family; a 4-byte buffer. */
  rusm_filter fam = {GUEST_TAG_TEST & ~UINT64_C(0xff), ~UINT64_C(0xff)};
  n = rusm_receive(&fam, -1, buf, 4, &info);
  step("recv_trunc_n", n);
  step("recv_trunc_len", info.len);
  step("recv_trunc_bytes_ok", truth(n == 4 && memcmp(buf, "trun", 4) == 0));
  step("recv_timeout", rusm_receive(NULL, 20, buf, sizeof buf, &info));

  /* Spawn, monitor, link, exit/2. */
  int64_t c1 = rusm_spawn("idle", NULL, 0, 0);
  step("spawn", c1);
  int64_t r1 = rusm_monitor((rusm_pid_t)c1);
  step("monitor_ok", truth(r1 > 0));
  step("link", rusm_link((rusm_pid_t)c1));
  step("unlink", rusm_unlink((rusm_pid_t)c1));
  step("exit", rusm_exit((rusm_pid_t)c1, RUSM_EXIT_CUSTOM, "bye", 3));
  n = take(RUSM_TAG_DOWN, buf, sizeof buf, &info);
  rusm_down_info d = {0};
  step("down_decode", rusm_decode_down(buf, (size_t)n, &d));
  step("down_ref_ok", truth(d.ref == (rusm_ref)r1));
  step("down_pid_ok", truth(d.pid == (rusm_pid_t)c1));
  step("down_code", d.code);
  step("down_detail_ok",
       truth(d.len == 3 && d.detail && memcmp(d.detail, "bye", 3) == 0));

  /* c1 is dead now. */
  step("send_dead", rusm_send((rusm_pid_t)c1, GUEST_TAG_WORK, NULL, 0));
  step("link_dead", rusm_link((rusm_pid_t)c1));
  step("kill_dead", rusm_kill((rusm_pid_t)c1));
  step("exit_dead", rusm_exit((rusm_pid_t)c1, RUSM_EXIT_SHUTDOWN, NULL, 0));
  int64_t r2 = rusm_monitor((rusm_pid_t)c1);
  n = take(RUSM_TAG_DOWN, buf, sizeof buf, &info);
  rusm_decode_down(buf, (size_t)n, &d);
  step("down_noproc_ref_ok", truth(d.ref == (rusm_ref)r2));
  step("down_noproc_code", d.code);

  /* demonitor, kill. */
  int64_t c2 = rusm_spawn("idle", NULL, 0, 0);
  int64_t r3 = rusm_monitor((rusm_pid_t)c2);
  int64_t r4 = rusm_monitor((rusm_pid_t)c2);
  step("monitor_stack_ok", truth(r3 > 0 && r4 > 0 && r3 != r4));
  step("demonitor_active", rusm_demonitor((rusm_ref)r3, 0));
  step("demonitor_again", rusm_demonitor((rusm_ref)r3, 0));
  step("kill", rusm_kill((rusm_pid_t)c2));
  n = take(RUSM_TAG_DOWN, buf, sizeof buf, &info);
  rusm_decode_down(buf, (size_t)n, &d);
  step("down_killed_ref_ok", truth(d.ref == (rusm_ref)r4));
  step("down_killed_code", d.code);
  rusm_filter down = rusm_filter_tag(RUSM_TAG_DOWN);
  step("no_down_after_demonitor", rusm_receive(&down, 0, NULL, 0, NULL));
  /* demonitor with flush: the Down of a dead pid is dropped. */
  int64_t r5 = rusm_monitor((rusm_pid_t)c2);
  step("demonitor_flush", rusm_demonitor((rusm_ref)r5, RUSM_DEMONITOR_FLUSH));
  step("flushed_down", rusm_receive(&down, 20, NULL, 0, NULL));

  /* Trapping exits. */
  step("trap_exit_prev", rusm_trap_exit(true));
  step("trap_exit_prev2", rusm_trap_exit(true));
  step("link_dead_trapping", rusm_link((rusm_pid_t)c1));
  n = take(RUSM_TAG_EXIT, buf, sizeof buf, &info);
  rusm_exit_info e = {0};
  step("exit_decode", rusm_decode_exit(buf, (size_t)n, &e));
  step("exit_noproc_code", e.code);
  step("exit_noproc_from_ok", truth(e.from == (rusm_pid_t)c1));
  unsigned char carg[8 + 4 + 4];
  int32_t code = RUSM_EXIT_CUSTOM;
  memcpy(carg, &self, 8);
  memcpy(carg + 8, &code, 4);
  memcpy(carg + 12, "boom", 4);
  int64_t c3 = rusm_spawn("child", carg, sizeof carg, RUSM_SPAWN_LINK);
  step("spawn_link_ok", truth(c3 > 0));
  n = take(GUEST_TAG_WORK, buf, sizeof buf, &info);
  step("child_work_from_ok", truth(info.from == (rusm_pid_t)c3 && n == 8));
  n = take(RUSM_TAG_EXIT, buf, sizeof buf, &info);
  rusm_decode_exit(buf, (size_t)n, &e);
  step("exit_trapped_from_ok", truth(e.from == (rusm_pid_t)c3));
  step("exit_trapped_code", e.code);
  step("exit_trapped_detail_ok",
       truth(e.len == 4 && e.detail && memcmp(e.detail, "boom", 4) == 0));
  step("spawn_unknown_is_err",
       truth(rusm_is_err(rusm_spawn("no_such_export", NULL, 0, 0))));
  /* A module the host registered as "echo" (the driver does). */
  int64_t e1 = rusm_spawn("echo:main", &self, sizeof self, 0);
  step("spawn_registered_ok", truth(e1 > 0));
  n = take(GUEST_TAG_READY, buf, sizeof buf, &info);
  step("registered_ready_ok", truth(info.from == (rusm_pid_t)e1));
  rusm_send((rusm_pid_t)e1, GUEST_TAG_STOP, NULL, 0);
  int64_t e2 = rusm_spawn("echo:", NULL, 0, 0); /* its default entry */
  step("spawn_reg_default_ok", truth(e2 > 0));
  rusm_send((rusm_pid_t)e2, GUEST_TAG_STOP, NULL, 0);
  step("spawn_bad_module_is_err",
       truth(rusm_is_err(rusm_spawn("no-such-module:main", NULL, 0, 0))));
  /* A child spawned trapping exits survives exit(shutdown). */
  int64_t c4 = rusm_spawn("idle", NULL, 0, RUSM_SPAWN_TRAP_EXIT);
  int64_t r6 = rusm_monitor((rusm_pid_t)c4);
  step("exit_to_trapping",
       rusm_exit((rusm_pid_t)c4, RUSM_EXIT_SHUTDOWN, NULL, 0));
  n = rusm_receive(&down, 20, buf, sizeof buf, &info);
  step("trapping_child_alive", n < 0 ? n : 0);
  if (n < 0) { /* alive, as it should be: now end it */
    rusm_kill((rusm_pid_t)c4);
    n = take(RUSM_TAG_DOWN, buf, sizeof buf, &info);
  }
  rusm_decode_down(buf, (size_t)n, &d);
  step("trapping_child_killed",
       truth(d.ref == (rusm_ref)r6 && d.code == RUSM_EXIT_KILLED));
  step("trap_exit_off_prev", rusm_trap_exit(false));

  /* Registry. */
  step("register", rusm_register("abi_all"));
  step("register_again", rusm_register("abi_all2"));
  step("whereis_self_ok", truth(rusm_whereis("abi_all") == self));
  step("whereis_none", (int64_t)rusm_whereis("no-such-name"));
  step("send_named", rusm_send_named("abi_all", GUEST_TAG_NAMED, "n", 1));
  n = take(GUEST_TAG_NAMED, buf, sizeof buf, &info);
  step("named_recv_ok", truth(n == 1 && buf[0] == 'n' && info.from == self));
  step("send_named_unknown",
       rusm_send_named("nobody-here", GUEST_TAG_NAMED, NULL, 0));
  unsigned char rarg[8 + 7];
  memcpy(rarg, &self, 8);
  memcpy(rarg + 8, "abi_all", 7);
  rusm_spawn("register", rarg, sizeof rarg, 0);
  int32_t reg = 0;
  take(GUEST_TAG_WORK, &reg, sizeof reg, &info);
  step("register_taken", reg);

  /* Timers and time. */
  int64_t t1 = rusm_send_after(5, self, GUEST_TAG_TIMER, "t", 1);
  step("send_after_ok", truth(t1 > 0));
  n = take(GUEST_TAG_TIMER, buf, sizeof buf, &info);
  step("timer_fired_ok", truth(n == 1 && buf[0] == 't'));
  step("cancel_fired", rusm_cancel_timer((rusm_timer_ref)t1));
  int64_t t2 = rusm_send_after(60000, self, GUEST_TAG_TIMER, NULL, 0);
  int64_t left = rusm_cancel_timer((rusm_timer_ref)t2);
  step("cancel_left_ok", truth(left > 0 && left <= 60000));
  step("cancel_again", rusm_cancel_timer((rusm_timer_ref)t2));
  int64_t a = rusm_now_ns();
  int64_t b = rusm_now_ns();
  step("now_ok", truth(a > 0 && b >= a));

  /* Logging (the driver may look for the line in the runtime's log). */
  rusm_log(RUSM_LOG_INFO, "abi_all: a log line");
  step("log", 0);

  step("done", 0);
  rusm_exit_self_str("abi_all done");
}
