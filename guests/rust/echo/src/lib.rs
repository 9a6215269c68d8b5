//! A RUSM guest in Rust, built on the `rusm` crate.
//!
//! - `main`: echo — replies to every user message with the same tag and
//!   payload, to its sender; `STOP` ends it. With a pid as argument it
//!   first tells that pid `READY`.
//! - `abi_all`: every ABI call, its results sent to the driver (the pid
//!   given as argument) as `STEP` messages: the same steps, in the same
//!   order, as the C guest `guests/c/abi_all.c` (whose header says what
//!   the driver must do), so that one driver checks both.
//! - `idle`, `child`, `register`: the helpers `abi_all` spawns, as in C.
//!
//! Tags and layouts: `guests/c/protocol.h`.

use rusm::{code, tag, Filter, Pid, Reason};

const TAG_STOP: u64 = 0x6773740000000003;
const TAG_WORK: u64 = 0x6773740000000004;
const TAG_READY: u64 = 0x6773740000000005;
const TAG_STEP: u64 = 0x6773740000000007;
const TAG_TEST: u64 = 0x6773740000000008;
const TAG_TEST2: u64 = 0x6773740000000009;
const TAG_TIMER: u64 = 0x677374000000000a;
const TAG_NAMED: u64 = 0x677374000000000b;
const STEP_NAME: usize = 24;

#[export_name = "main"]
pub extern "C" fn echo_main() {
    if let Some(ready) = rusm::arg_pid() {
        let _ = rusm::send(ready, TAG_READY, &[]);
    }
    loop {
        let m = match rusm::receive(Filter::ANY, None) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if m.tag == TAG_STOP {
            return;
        }
        if m.tag & tag::SYSTEM != 0 {
            continue;
        }
        if let Some(from) = m.from {
            let _ = rusm::send(from, m.tag, &m.data);
        }
    }
}

#[export_name = "idle"]
pub extern "C" fn idle() {
    let _ = rusm::receive(Filter::tag(TAG_STOP), None);
}

/// arg: u64 pid [| i32 code | detail]: tells pid WORK (with own pid),
/// then returns, or exits with the reason given.
#[export_name = "child"]
pub extern "C" fn child() {
    let a = rusm::arg();
    let Some(to) = a
        .get(..8)
        .and_then(|b| Pid::from_raw(u64::from_le_bytes(b.try_into().ok()?)))
    else {
        return;
    };
    let _ = rusm::send(to, TAG_WORK, &rusm::self_pid().to_bytes());
    if a.len() >= 12 {
        let code = i32::from_le_bytes(a[8..12].try_into().unwrap());
        rusm::exit_self(&Reason {
            code,
            detail: a[12..].to_vec(),
        });
    }
}

/// arg: u64 pid | name: registers name, tells pid WORK with the i32 result.
#[export_name = "register"]
pub extern "C" fn register_child() {
    let a = rusm::arg();
    if a.len() < 9 {
        return;
    }
    let to = Pid::from_raw(u64::from_le_bytes(a[..8].try_into().unwrap()));
    let name = String::from_utf8_lossy(&a[8..]).into_owned();
    let r: i32 = match rusm::register(&name) {
        Ok(()) => 0,
        Err(e) => e.code(),
    };
    if let Some(to) = to {
        let _ = rusm::send(to, TAG_WORK, &r.to_le_bytes());
    }
}

struct Driver(Pid);

impl Driver {
    fn step(&self, name: &str, value: i64) {
        let mut b = [0u8; STEP_NAME + 8];
        let n = name.len().min(STEP_NAME - 1);
        b[..n].copy_from_slice(&name.as_bytes()[..n]);
        b[STEP_NAME..].copy_from_slice(&value.to_le_bytes());
        let _ = rusm::send(self.0, TAG_STEP, &b);
    }
    fn ok(&self, name: &str, b: bool) {
        self.step(name, b as i64);
    }
    fn res<T>(&self, name: &str, r: rusm::Result<T>) {
        self.step(name, r.err().map_or(0, |e| e.code() as i64));
    }
}

fn take(tag: u64) -> rusm::Message {
    rusm::receive(Filter::tag(tag), None).expect("receive forever")
}

fn code_of(r: rusm::Result<rusm::Message>) -> i64 {
    match r {
        Ok(_) => 0,
        Err(e) => e.code() as i64,
    }
}

#[export_name = "abi_all"]
pub extern "C" fn abi_all() {
    let me = rusm::self_pid();
    let arg_len = rusm::arg().len() as i64;
    let Some(driver) = rusm::arg_pid() else {
        rusm::exit_self(&Reason::custom("abi_all: no driver pid"));
    };
    let d = Driver(driver);
    d.step("abi_version", rusm::abi_version() as i64);
    d.step("self", me.raw() as i64);
    d.step("arg_len", arg_len);

    // Sending and receiving.
    d.res("send_bad_tag", rusm::send(driver, tag::SYSTEM | 5, &[]));
    d.step(
        "recv_poll_empty",
        code_of(rusm::receive(Filter::ANY, Some(0))),
    );
    d.step("ready", 0);
    let m = take(TAG_TEST2);
    d.step("recv_sel_len", m.data.len() as i64);
    d.ok("recv_sel_tag_ok", m.tag == TAG_TEST2);
    d.ok("recv_from_ok", m.from == Some(driver));
    let m = take(TAG_TEST);
    d.step("recv_len", m.data.len() as i64);
    d.ok("recv_payload_ok", m.data == b"hello");
    let m = rusm::receive_with_capacity(Filter::masked(TAG_TEST, !0xff), None, 4).unwrap();
    d.step("recv_trunc_n", m.data.len() as i64);
    d.step("recv_trunc_len", m.len as i64);
    d.ok("recv_trunc_bytes_ok", m.data == b"trun" && m.truncated());
    d.step(
        "recv_timeout",
        code_of(rusm::receive(Filter::ANY, Some(20))),
    );

    // Spawn, monitor, link, exit/2.
    let c1 = rusm::spawn("idle", &[]).expect("spawn idle");
    d.step("spawn", c1.raw() as i64);
    let r1 = rusm::monitor(c1).expect("monitor");
    d.ok("monitor_ok", r1.0 > 0);
    d.res("link", rusm::link(c1));
    d.res("unlink", rusm::unlink(c1));
    d.res("exit", rusm::exit(c1, &Reason::custom("bye")));
    let m = take(tag::DOWN);
    let down = m.down();
    d.step("down_decode", if down.is_some() { 0 } else { -1 });
    let down = down.expect("a Down payload");
    d.ok("down_ref_ok", down.monitor == r1);
    d.ok("down_pid_ok", down.pid == Some(c1));
    d.step("down_code", down.reason.code as i64);
    d.ok("down_detail_ok", down.reason.detail == b"bye");

    // c1 is dead now.
    d.res("send_dead", rusm::send(c1, TAG_WORK, &[]));
    d.res("link_dead", rusm::link(c1));
    d.res("kill_dead", rusm::kill(c1));
    d.res("exit_dead", rusm::exit(c1, &Reason::shutdown()));
    let r2 = rusm::monitor(c1).expect("monitor a dead pid");
    let down = take(tag::DOWN).down().expect("Down");
    d.ok("down_noproc_ref_ok", down.monitor == r2);
    d.step("down_noproc_code", down.reason.code as i64);

    // demonitor, kill.
    let c2 = rusm::spawn("idle", &[]).expect("spawn idle");
    let r3 = rusm::monitor(c2).expect("monitor");
    let r4 = rusm::monitor(c2).expect("monitor");
    d.ok("monitor_stack_ok", r3 != r4);
    d.step(
        "demonitor_active",
        rusm::demonitor(r3, false).unwrap() as i64,
    );
    d.step(
        "demonitor_again",
        rusm::demonitor(r3, false).unwrap() as i64,
    );
    d.res("kill", rusm::kill(c2));
    let down = take(tag::DOWN).down().expect("Down");
    d.ok("down_killed_ref_ok", down.monitor == r4);
    d.step("down_killed_code", down.reason.code as i64);
    d.step(
        "no_down_after_demonitor",
        code_of(rusm::receive(Filter::tag(tag::DOWN), Some(0))),
    );
    let r5 = rusm::monitor(c2).expect("monitor");
    d.step("demonitor_flush", rusm::demonitor(r5, true).unwrap() as i64);
    d.step(
        "flushed_down",
        code_of(rusm::receive(Filter::tag(tag::DOWN), Some(20))),
    );

    // Trapping exits.
    d.ok("trap_exit_prev", rusm::trap_exit(true));
    d.ok("trap_exit_prev2", rusm::trap_exit(true));
    d.res("link_dead_trapping", rusm::link(c1));
    let e = take(tag::EXIT).exit_signal();
    d.step("exit_decode", if e.is_some() { 0 } else { -1 });
    let e = e.expect("an Exit payload");
    d.step("exit_noproc_code", e.reason.code as i64);
    d.ok("exit_noproc_from_ok", e.from == Some(c1));
    let mut carg = me.to_bytes().to_vec();
    carg.extend_from_slice(&code::CUSTOM.to_le_bytes());
    carg.extend_from_slice(b"boom");
    let c3 = rusm::spawn_link("child", &carg);
    d.ok("spawn_link_ok", c3.is_ok());
    let c3 = c3.expect("spawn_link");
    let m = take(TAG_WORK);
    d.ok(
        "child_work_from_ok",
        m.from == Some(c3) && m.data.len() == 8,
    );
    let e = take(tag::EXIT).exit_signal().expect("Exit");
    d.ok("exit_trapped_from_ok", e.from == Some(c3));
    d.step("exit_trapped_code", e.reason.code as i64);
    d.ok("exit_trapped_detail_ok", e.reason.detail == b"boom");
    d.ok(
        "spawn_unknown_is_err",
        rusm::spawn("no_such_export", &[]).is_err(),
    );
    // A module the host registered as "echo" (the driver does).
    let e1 = rusm::spawn("echo:main", &me.to_bytes());
    d.ok("spawn_registered_ok", e1.is_ok());
    let m = take(TAG_READY);
    d.ok("registered_ready_ok", e1.ok() == m.from);
    if let Ok(e1) = e1 {
        let _ = rusm::send(e1, TAG_STOP, &[]);
    }
    let e2 = rusm::spawn("echo:", &[]); // its default entry
    d.ok("spawn_reg_default_ok", e2.is_ok());
    if let Ok(e2) = e2 {
        let _ = rusm::send(e2, TAG_STOP, &[]);
    }
    d.ok(
        "spawn_bad_module_is_err",
        rusm::spawn("no-such-module:main", &[]).is_err(),
    );
    let c4 = rusm::spawn_with("idle", &[], rusm::flags::TRAP_EXIT).expect("spawn idle");
    let r6 = rusm::monitor(c4).expect("monitor");
    d.res("exit_to_trapping", rusm::exit(c4, &Reason::shutdown()));
    let early = rusm::receive(Filter::tag(tag::DOWN), Some(20));
    d.step(
        "trapping_child_alive",
        early.as_ref().map_or_else(|e| e.code() as i64, |_| 0),
    );
    let down = match early {
        Ok(m) => m, // it died: the check below fails, the run goes on
        Err(_) => {
            let _ = rusm::kill(c4);
            take(tag::DOWN)
        }
    };
    let down = down.down().expect("Down");
    d.ok(
        "trapping_child_killed",
        down.monitor == r6 && down.reason.code == code::KILLED,
    );
    d.ok("trap_exit_off_prev", rusm::trap_exit(false));

    // Registry.
    d.res("register", rusm::register("abi_all"));
    d.res("register_again", rusm::register("abi_all2"));
    d.ok("whereis_self_ok", rusm::whereis("abi_all") == Some(me));
    d.step(
        "whereis_none",
        rusm::whereis("no-such-name").map_or(0, |p| p.raw() as i64),
    );
    d.res("send_named", rusm::send_named("abi_all", TAG_NAMED, b"n"));
    let m = take(TAG_NAMED);
    d.ok("named_recv_ok", m.data == b"n" && m.from == Some(me));
    d.res(
        "send_named_unknown",
        rusm::send_named("nobody-here", TAG_NAMED, &[]),
    );
    let mut rarg = me.to_bytes().to_vec();
    rarg.extend_from_slice(b"abi_all");
    let _ = rusm::spawn("register", &rarg);
    let m = take(TAG_WORK);
    let reg = m
        .data
        .get(..4)
        .map_or(0, |b| i32::from_le_bytes(b.try_into().unwrap()));
    d.step("register_taken", reg as i64);

    // Timers and time.
    let t1 = rusm::send_after(5, me, TAG_TIMER, b"t");
    d.ok("send_after_ok", t1.is_ok());
    let m = take(TAG_TIMER);
    d.ok("timer_fired_ok", m.data == b"t");
    let t1 = t1.expect("send_after");
    d.step(
        "cancel_fired",
        rusm::cancel_timer(t1).map_or(-10, |v| v as i64),
    );
    let t2 = rusm::send_after(60000, me, TAG_TIMER, &[]).expect("send_after");
    let left = rusm::cancel_timer(t2);
    d.ok(
        "cancel_left_ok",
        matches!(left, Some(l) if l > 0 && l <= 60000),
    );
    d.step(
        "cancel_again",
        rusm::cancel_timer(t2).map_or(-10, |v| v as i64),
    );
    let a = rusm::now_ns();
    let b = rusm::now_ns();
    d.ok("now_ok", a > 0 && b >= a);

    rusm::info!("abi_all: a log line");
    d.step("log", 0);

    d.step("done", 0);
    rusm::exit_self(&Reason::custom("abi_all done"));
}
