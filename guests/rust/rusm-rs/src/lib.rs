//! `rusm`: the Rust guest SDK of RUSM Wasm processes.
//!
//! A RUSM Wasm process is a core module instance (built for
//! `wasm32-wasip1`) that imports the functions of module `"rusm"`
//! described in `docs/wasm-abi.md` (ABI version 1). This crate wraps every
//! one of them: [`Pid`], [`send`], [`receive`], [`spawn`], links and
//! monitors, exit signals, the registry, timers, the clock and the log.
//!
//! A process runs one exported `extern "C" fn()` of its module, named at
//! spawn (`"main"` by default):
//!
//! ```ignore
//! #[export_name = "main"]
//! pub extern "C" fn echo() {
//!     loop {
//!         let m = rusm::receive(rusm::Filter::ANY, None).unwrap();
//!         if let Some(from) = m.from {
//!             let _ = rusm::send(from, m.tag, &m.data);
//!         }
//!     }
//! }
//! ```
//!
//! Errors are the runtime's `RUSM_E*` codes as [`Error`]. The numbers
//! (tags, codes) equal those of `rusm/otp.h`; the host's tests check them.
//!
//! Off wasm32 the imports do not exist: the crate still compiles (so that
//! `cargo check` and docs work on the host) but every call panics.

#![warn(missing_docs)]

use std::fmt;

/// The raw imports, exactly as the ABI table lists them.
#[allow(missing_docs)]
pub mod sys {
    #[cfg(target_family = "wasm")]
    #[link(wasm_import_module = "rusm")]
    extern "C" {
        pub fn abi_version() -> i32;
        #[link_name = "self"]
        pub fn self_() -> i64;
        pub fn arg(buf: *mut u8, cap: i32) -> i32;
        pub fn send(pid: i64, tag: i64, ptr: *const u8, len: i32) -> i32;
        pub fn receive(
            value: i64,
            mask: i64,
            timeout_ms: i64,
            buf: *mut u8,
            cap: i32,
            info: *mut u8,
        ) -> i32;
        pub fn spawn(
            name: *const u8,
            name_len: i32,
            arg: *const u8,
            arg_len: i32,
            flags: i32,
        ) -> i64;
        pub fn link(pid: i64) -> i32;
        pub fn unlink(pid: i64) -> i32;
        pub fn monitor(pid: i64) -> i64;
        pub fn demonitor(r: i64, flags: i32) -> i32;
        pub fn trap_exit(on: i32) -> i32;
        pub fn exit(pid: i64, code: i32, ptr: *const u8, len: i32) -> i32;
        pub fn exit_self(code: i32, ptr: *const u8, len: i32) -> !;
        pub fn kill(pid: i64) -> i32;
        pub fn register(name: *const u8, len: i32) -> i32;
        pub fn whereis(name: *const u8, len: i32) -> i64;
        pub fn send_named(name: *const u8, len: i32, tag: i64, ptr: *const u8, len2: i32) -> i32;
        pub fn send_after(delay_ms: i64, pid: i64, tag: i64, ptr: *const u8, len: i32) -> i64;
        pub fn cancel_timer(r: i64) -> i64;
        pub fn now_ns() -> i64;
        pub fn log(level: i32, ptr: *const u8, len: i32);
    }

    /// Host builds (checks, docs): the same names, panicking.
    #[cfg(not(target_family = "wasm"))]
    mod host {
        fn no() -> ! {
            panic!("rusm: the host ABI exists only inside a RUSM Wasm process")
        }
        pub unsafe fn abi_version() -> i32 {
            no()
        }
        pub unsafe fn self_() -> i64 {
            no()
        }
        pub unsafe fn arg(_: *mut u8, _: i32) -> i32 {
            no()
        }
        pub unsafe fn send(_: i64, _: i64, _: *const u8, _: i32) -> i32 {
            no()
        }
        pub unsafe fn receive(_: i64, _: i64, _: i64, _: *mut u8, _: i32, _: *mut u8) -> i32 {
            no()
        }
        pub unsafe fn spawn(_: *const u8, _: i32, _: *const u8, _: i32, _: i32) -> i64 {
            no()
        }
        pub unsafe fn link(_: i64) -> i32 {
            no()
        }
        pub unsafe fn unlink(_: i64) -> i32 {
            no()
        }
        pub unsafe fn monitor(_: i64) -> i64 {
            no()
        }
        pub unsafe fn demonitor(_: i64, _: i32) -> i32 {
            no()
        }
        pub unsafe fn trap_exit(_: i32) -> i32 {
            no()
        }
        pub unsafe fn exit(_: i64, _: i32, _: *const u8, _: i32) -> i32 {
            no()
        }
        pub unsafe fn exit_self(_: i32, _: *const u8, _: i32) -> ! {
            no()
        }
        pub unsafe fn kill(_: i64) -> i32 {
            no()
        }
        pub unsafe fn register(_: *const u8, _: i32) -> i32 {
            no()
        }
        pub unsafe fn whereis(_: *const u8, _: i32) -> i64 {
            no()
        }
        pub unsafe fn send_named(_: *const u8, _: i32, _: i64, _: *const u8, _: i32) -> i32 {
            no()
        }
        pub unsafe fn send_after(_: i64, _: i64, _: i64, _: *const u8, _: i32) -> i64 {
            no()
        }
        pub unsafe fn cancel_timer(_: i64) -> i64 {
            no()
        }
        pub unsafe fn now_ns() -> i64 {
            no()
        }
        pub unsafe fn log(_: i32, _: *const u8, _: i32) {
            no()
        }
    }
    #[cfg(not(target_family = "wasm"))]
    pub use host::*;
}

/// The ABI version this crate speaks.
pub const ABI_VERSION: i32 = 1;

// ---------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------

/// A runtime error: the `RUSM_E*` codes of `rusm/otp.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// `RUSM_EINVAL` (-1): a bad argument.
    Inval,
    /// `RUSM_ENOMEM` (-2): out of memory or a configured limit.
    NoMem,
    /// `RUSM_ENOPROC` (-3): no such process.
    NoProc,
    /// `RUSM_ETIMEDOUT` (-4): nothing matched in time.
    TimedOut,
    /// `RUSM_ESHUTDOWN` (-5): the runtime is shutting down.
    Shutdown,
    /// `RUSM_ELIMIT` (-6): the process table is full.
    Limit,
    /// `RUSM_ECONTEXT` (-7): not allowed here (no spawn capability ...).
    Context,
    /// `RUSM_ESYS` (-8): an OS call failed on the host.
    Sys,
    /// `RUSM_EEXIST` (-9): the name is taken.
    Exist,
    /// `RUSM_ENOTFOUND` (-10): no such name, export or timer.
    NotFound,
    /// `RUSM_EBUSY` (-11): this process already has a name.
    Busy,
    /// A code this version does not know.
    Other(i32),
}

impl Error {
    /// The error of a negative result code.
    pub fn from_code(code: i64) -> Error {
        match code {
            -1 => Error::Inval,
            -2 => Error::NoMem,
            -3 => Error::NoProc,
            -4 => Error::TimedOut,
            -5 => Error::Shutdown,
            -6 => Error::Limit,
            -7 => Error::Context,
            -8 => Error::Sys,
            -9 => Error::Exist,
            -10 => Error::NotFound,
            -11 => Error::Busy,
            c => Error::Other(c as i32),
        }
    }

    /// The runtime's code (negative).
    pub fn code(self) -> i32 {
        match self {
            Error::Inval => -1,
            Error::NoMem => -2,
            Error::NoProc => -3,
            Error::TimedOut => -4,
            Error::Shutdown => -5,
            Error::Limit => -6,
            Error::Context => -7,
            Error::Sys => -8,
            Error::Exist => -9,
            Error::NotFound => -10,
            Error::Busy => -11,
            Error::Other(c) => c,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rusm error {:?} ({})", self, self.code())
    }
}

impl std::error::Error for Error {}

/// A result of the runtime.
pub type Result<T> = std::result::Result<T, Error>;

/// Whether a 64-bit result is an error code: small negative numbers, the
/// range kept wide (as Linux does for its syscalls) so that new codes fit.
pub fn is_err(v: i64) -> bool {
    (-4095..0).contains(&v)
}

fn check32(v: i32) -> Result<i32> {
    if v < 0 {
        Err(Error::from_code(v as i64))
    } else {
        Ok(v)
    }
}

fn check64(v: i64) -> Result<i64> {
    if is_err(v) {
        Err(Error::from_code(v))
    } else {
        Ok(v)
    }
}

fn len32(len: usize) -> i32 {
    // wasm32: usize is 32 bits; anything larger than i32 is refused by the
    // host's bounds check anyway.
    i32::try_from(len).unwrap_or(i32::MAX)
}

// ---------------------------------------------------------------------
// Pids, refs, tags, reasons
// ---------------------------------------------------------------------

/// A process id (64 bits: node 12 | slot 24 | generation 28). Never 0.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(u64);

impl Pid {
    /// A pid from its raw value; `None` for 0.
    pub const fn from_raw(raw: u64) -> Option<Pid> {
        if raw == 0 {
            None
        } else {
            Some(Pid(raw))
        }
    }
    /// The raw 64-bit value (as in C).
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// The node part.
    pub const fn node(self) -> u32 {
        (self.0 >> 52) as u32
    }
    /// The table slot part.
    pub const fn slot(self) -> u32 {
        ((self.0 >> 28) & 0xff_ffff) as u32
    }
    /// The generation part.
    pub const fn generation(self) -> u32 {
        (self.0 & 0xfff_ffff) as u32
    }
    /// The little-endian bytes (how guests pass pids in arguments).
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_le_bytes()
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}.{}.{}>", self.node(), self.slot(), self.generation())
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A monitor reference (never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MonitorRef(pub u64);

/// A timer reference (never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerRef(pub u64);

/// Reserved tags (top bit set: the runtime's).
pub mod tag {
    /// Every tag with this bit belongs to the runtime.
    pub const SYSTEM: u64 = 1 << 63;
    /// A trapped exit signal; payload: see [`crate::ExitSignal`].
    pub const EXIT: u64 = SYSTEM | 1;
    /// A monitor fired; payload: see [`crate::Down`].
    pub const DOWN: u64 = SYSTEM | 2;
    /// A user tag with this bit is never shed by a bounded mailbox.
    pub const NOSHED: u64 = 1 << 62;
}

/// Exit reason codes (`rusm_exit_code`).
pub mod code {
    /// The process finished.
    pub const NORMAL: i32 = 0;
    /// Result of an untrappable kill.
    pub const KILLED: i32 = 1;
    /// An orderly stop.
    pub const SHUTDOWN: i32 = 2;
    /// The target did not exist.
    pub const NOPROC: i32 = 3;
    /// A node was lost (cluster).
    pub const NOCONNECTION: i32 = 4;
    /// A guest trapped; the detail is the trap message.
    pub const TRAP: i32 = 5;
    /// A user reason; the detail is its bytes.
    pub const CUSTOM: i32 = 6;
    /// As a signal: the untrappable kill.
    pub const KILL: i32 = 7;
}

/// An exit reason: a code plus detail bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    /// One of [`code`].
    pub code: i32,
    /// Detail bytes (a custom reason's text, a trap's message).
    pub detail: Vec<u8>,
}

impl Reason {
    /// `normal`.
    pub fn normal() -> Reason {
        Reason {
            code: code::NORMAL,
            detail: Vec::new(),
        }
    }
    /// `shutdown`.
    pub fn shutdown() -> Reason {
        Reason {
            code: code::SHUTDOWN,
            detail: Vec::new(),
        }
    }
    /// The untrappable kill, as a signal.
    pub fn kill() -> Reason {
        Reason {
            code: code::KILL,
            detail: Vec::new(),
        }
    }
    /// A custom reason with these bytes.
    pub fn custom(detail: impl AsRef<[u8]>) -> Reason {
        Reason {
            code: code::CUSTOM,
            detail: detail.as_ref().to_vec(),
        }
    }
}

/// Spawn flags.
pub mod flags {
    /// Link the child to the caller, atomically with the spawn.
    pub const LINK: u32 = 1;
    /// The child traps exit signals.
    pub const TRAP_EXIT: u32 = 2;
}

// ---------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------

/// The host's ABI version (1).
pub fn abi_version() -> i32 {
    unsafe { sys::abi_version() }
}

/// The calling process's pid.
pub fn self_pid() -> Pid {
    Pid(unsafe { sys::self_() } as u64)
}

/// The spawn argument.
pub fn arg() -> Vec<u8> {
    let len = unsafe { sys::arg(std::ptr::null_mut(), 0) };
    let mut v = vec![0u8; len.max(0) as usize];
    if len > 0 {
        let got = unsafe { sys::arg(v.as_mut_ptr(), len) };
        v.truncate(got.clamp(0, len) as usize);
    }
    v
}

/// The spawn argument read as a pid (8 little-endian bytes).
pub fn arg_pid() -> Option<Pid> {
    let a = arg();
    let b: [u8; 8] = a.get(..8)?.try_into().ok()?;
    Pid::from_raw(u64::from_le_bytes(b))
}

// ---------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------

/// Sends a copy of `data` with `tag` to `to`. Sending to a dead pid is not
/// an error (the message is dropped). `Err(Inval)` for a system tag.
pub fn send(to: Pid, tag: u64, data: &[u8]) -> Result<()> {
    check32(unsafe { sys::send(to.0 as i64, tag as i64, data.as_ptr(), len32(data.len())) })
        .map(|_| ())
}

/// Which messages a receive takes: those with `(tag & mask) == value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    /// The tag bits wanted.
    pub value: u64,
    /// The tag bits looked at (0: every message, system ones included).
    pub mask: u64,
}

impl Filter {
    /// Any message.
    pub const ANY: Filter = Filter { value: 0, mask: 0 };
    /// Exactly this tag.
    pub const fn tag(tag: u64) -> Filter {
        Filter {
            value: tag,
            mask: u64::MAX,
        }
    }
    /// Tags equal to `value` on the bits of `mask`.
    pub const fn masked(value: u64, mask: u64) -> Filter {
        Filter {
            value: value & mask,
            mask,
        }
    }
}

/// A received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its tag.
    pub tag: u64,
    /// Its sender (`None` when sent from outside any process).
    pub from: Option<Pid>,
    /// The payload (cut to the receive's capacity; see [`Message::len`]).
    pub data: Vec<u8>,
    /// The full payload length as sent.
    pub len: usize,
}

impl Message {
    /// Whether part of the payload was lost to the receive's capacity.
    pub fn truncated(&self) -> bool {
        self.len > self.data.len()
    }
    /// The Exit message's content, when it is one.
    pub fn exit_signal(&self) -> Option<ExitSignal> {
        if self.tag == tag::EXIT {
            ExitSignal::decode(&self.data)
        } else {
            None
        }
    }
    /// The Down message's content, when it is one.
    pub fn down(&self) -> Option<Down> {
        if self.tag == tag::DOWN {
            Down::decode(&self.data)
        } else {
            None
        }
    }
}

/// What `receive` writes: u64 tag | u64 from | u32 len | u32 | u64.
#[derive(Clone, Copy, Debug, Default)]
pub struct MsgInfo {
    /// The tag.
    pub tag: u64,
    /// The sender's raw pid (0: none).
    pub from: u64,
    /// The full payload length.
    pub len: u32,
}

impl MsgInfo {
    fn decode(b: &[u8; 32]) -> MsgInfo {
        MsgInfo {
            tag: u64::from_le_bytes(b[0..8].try_into().unwrap()),
            from: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            len: u32::from_le_bytes(b[16..20].try_into().unwrap()),
        }
    }
}

/// Payloads [`receive`] keeps whole; larger ones are cut (use
/// [`receive_into`] with a larger buffer).
pub const RECEIVE_MAX: usize = 64 * 1024;

/// Takes the first message matching `filter` (others stay, in order),
/// waiting at most `timeout_ms` (`None`: forever, `Some(0)`: poll).
/// `Err(TimedOut)` when none came.
pub fn receive(filter: Filter, timeout_ms: Option<u64>) -> Result<Message> {
    receive_with_capacity(filter, timeout_ms, RECEIVE_MAX)
}

/// [`receive`] keeping at most `cap` payload bytes.
pub fn receive_with_capacity(
    filter: Filter,
    timeout_ms: Option<u64>,
    cap: usize,
) -> Result<Message> {
    // One scratch buffer per instance (a process is single-threaded):
    // no allocation per receive beyond the payload's own Vec.
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < cap {
            s.resize(cap, 0);
        }
        let (n, info) = receive_into(filter, timeout_ms, &mut s[..cap])?;
        Ok(Message {
            tag: info.tag,
            from: Pid::from_raw(info.from),
            data: s[..n].to_vec(),
            len: info.len as usize,
        })
    })
}

/// The raw receive: copies at most `buf.len()` payload bytes into `buf`;
/// returns the bytes copied and the message's info.
pub fn receive_into(
    filter: Filter,
    timeout_ms: Option<u64>,
    buf: &mut [u8],
) -> Result<(usize, MsgInfo)> {
    let mut info = [0u8; 32];
    let timeout = match timeout_ms {
        None => -1,
        Some(t) => i64::try_from(t).unwrap_or(i64::MAX),
    };
    let n = check32(unsafe {
        sys::receive(
            filter.value as i64,
            filter.mask as i64,
            timeout,
            buf.as_mut_ptr(),
            len32(buf.len()),
            info.as_mut_ptr(),
        )
    })?;
    Ok((n as usize, MsgInfo::decode(&info)))
}

/// An Exit message: a linked process exited (or an exit signal came)
/// while this process traps exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitSignal {
    /// Who sent it (`None`: from outside any process).
    pub from: Option<Pid>,
    /// Why.
    pub reason: Reason,
}

impl ExitSignal {
    /// Decodes `u64 from | i32 code | u32 len | detail`.
    pub fn decode(b: &[u8]) -> Option<ExitSignal> {
        let from = u64::from_le_bytes(b.get(0..8)?.try_into().ok()?);
        let code = i32::from_le_bytes(b.get(8..12)?.try_into().ok()?);
        let len = u32::from_le_bytes(b.get(12..16)?.try_into().ok()?) as usize;
        let detail = &b[16..];
        let detail = detail[..len.min(detail.len())].to_vec();
        Some(ExitSignal {
            from: Pid::from_raw(from),
            reason: Reason { code, detail },
        })
    }
}

/// A Down message: a monitored process exited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    /// The monitor that fired.
    pub monitor: MonitorRef,
    /// The process that exited.
    pub pid: Option<Pid>,
    /// Why.
    pub reason: Reason,
}

impl Down {
    /// Decodes `u64 ref | u64 pid | i32 code | u32 len | detail`.
    pub fn decode(b: &[u8]) -> Option<Down> {
        let r = u64::from_le_bytes(b.get(0..8)?.try_into().ok()?);
        let pid = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
        let code = i32::from_le_bytes(b.get(16..20)?.try_into().ok()?);
        let len = u32::from_le_bytes(b.get(20..24)?.try_into().ok()?) as usize;
        let detail = &b[24..];
        let detail = detail[..len.min(detail.len())].to_vec();
        Some(Down {
            monitor: MonitorRef(r),
            pid: Pid::from_raw(pid),
            reason: Reason { code, detail },
        })
    }
}

// ---------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------

/// Spawns a process running `entry`: an export of this module, or
/// `"module:export"` for a module the host registered by name. `arg` is
/// what the child reads with [`arg`]; `flags` from [`flags`].
/// `Err(Context)` without the spawn capability.
pub fn spawn_with(entry: &str, arg: &[u8], flags: u32) -> Result<Pid> {
    let v = check64(unsafe {
        sys::spawn(
            entry.as_ptr(),
            len32(entry.len()),
            arg.as_ptr(),
            len32(arg.len()),
            flags as i32,
        )
    })?;
    Pid::from_raw(v as u64).ok_or(Error::Other(0))
}

/// [`spawn_with`] with no flags.
pub fn spawn(entry: &str, arg: &[u8]) -> Result<Pid> {
    spawn_with(entry, arg, 0)
}

/// [`spawn_with`] linked to the caller.
pub fn spawn_link(entry: &str, arg: &[u8]) -> Result<Pid> {
    spawn_with(entry, arg, flags::LINK)
}

/// Links to `pid` (bidirectional, idempotent). `Err(NoProc)` when it is
/// dead (a trapping caller then also gets an Exit with `noproc`).
pub fn link(pid: Pid) -> Result<()> {
    check32(unsafe { sys::link(pid.0 as i64) }).map(|_| ())
}

/// Removes a link (fine when there is none).
pub fn unlink(pid: Pid) -> Result<()> {
    check32(unsafe { sys::unlink(pid.0 as i64) }).map(|_| ())
}

/// Monitors `pid`: one [`Down`] follows when it exits (at once, `noproc`,
/// when it is dead already).
pub fn monitor(pid: Pid) -> Result<MonitorRef> {
    check64(unsafe { sys::monitor(pid.0 as i64) }).map(|r| MonitorRef(r as u64))
}

/// Removes a monitor; `flush` also drops its Down if already queued.
/// Returns whether the monitor was active.
pub fn demonitor(r: MonitorRef, flush: bool) -> Result<bool> {
    check32(unsafe { sys::demonitor(r.0 as i64, flush as i32) }).map(|v| v == 1)
}

/// Turns exit trapping on or off; returns the previous setting.
pub fn trap_exit(on: bool) -> bool {
    unsafe { sys::trap_exit(on as i32) == 1 }
}

/// Sends the exit signal `reason` to `pid` (Erlang's exit/2).
pub fn exit(pid: Pid, reason: &Reason) -> Result<()> {
    check32(unsafe {
        sys::exit(
            pid.0 as i64,
            reason.code,
            reason.detail.as_ptr(),
            len32(reason.detail.len()),
        )
    })
    .map(|_| ())
}

/// Ends the calling process with `reason`.
pub fn exit_self(reason: &Reason) -> ! {
    unsafe {
        sys::exit_self(
            reason.code,
            reason.detail.as_ptr(),
            len32(reason.detail.len()),
        )
    }
}

/// The untrappable kill.
pub fn kill(pid: Pid) -> Result<()> {
    check32(unsafe { sys::kill(pid.0 as i64) }).map(|_| ())
}

// ---------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------

/// Registers the calling process under `name`. `Err(Exist)`: taken;
/// `Err(Busy)`: this process has a name already.
pub fn register(name: &str) -> Result<()> {
    check32(unsafe { sys::register(name.as_ptr(), len32(name.len())) }).map(|_| ())
}

/// The process registered under `name`.
pub fn whereis(name: &str) -> Option<Pid> {
    let v = unsafe { sys::whereis(name.as_ptr(), len32(name.len())) };
    if is_err(v) {
        None
    } else {
        Pid::from_raw(v as u64)
    }
}

/// [`send`] to a registered name; `Err(NotFound)` when nobody has it.
pub fn send_named(name: &str, tag: u64, data: &[u8]) -> Result<()> {
    check32(unsafe {
        sys::send_named(
            name.as_ptr(),
            len32(name.len()),
            tag as i64,
            data.as_ptr(),
            len32(data.len()),
        )
    })
    .map(|_| ())
}

// ---------------------------------------------------------------------
// Timers, time, log
// ---------------------------------------------------------------------

/// Sends `data` with `tag` to `to` after `delay_ms`.
pub fn send_after(delay_ms: u64, to: Pid, tag: u64, data: &[u8]) -> Result<TimerRef> {
    let d = i64::try_from(delay_ms).unwrap_or(i64::MAX);
    check64(unsafe {
        sys::send_after(d, to.0 as i64, tag as i64, data.as_ptr(), len32(data.len()))
    })
    .map(|r| TimerRef(r as u64))
}

/// Cancels a timer: the milliseconds that were left, or `None` when it
/// already fired or was cancelled.
pub fn cancel_timer(r: TimerRef) -> Option<u64> {
    let v = unsafe { sys::cancel_timer(r.0 as i64) };
    if v < 0 {
        None
    } else {
        Some(v as u64)
    }
}

/// The runtime's monotonic clock, in nanoseconds.
pub fn now_ns() -> i64 {
    unsafe { sys::now_ns() }
}

/// Log levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Level {
    /// 0
    Debug = 0,
    /// 1
    Info = 1,
    /// 2
    Warn = 2,
    /// 3
    Error = 3,
}

/// Writes a line to the runtime's log, tagged with the pid.
pub fn log(level: Level, text: &str) {
    unsafe { sys::log(level as i32, text.as_ptr(), len32(text.len())) }
}

/// `format!` into the runtime's log at info level.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log($crate::Level::Info, &format!($($t)*)) };
}

/// `format!` into the runtime's log at warn level.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log($crate::Level::Warn, &format!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_parts() {
        let p = Pid::from_raw((3u64 << 52) | (5u64 << 28) | 7).unwrap();
        assert_eq!((p.node(), p.slot(), p.generation()), (3, 5, 7));
        assert_eq!(p.to_string(), "<3.5.7>");
        assert!(Pid::from_raw(0).is_none());
    }

    #[test]
    fn errors_round_trip() {
        for c in -11..=-1 {
            assert_eq!(Error::from_code(c).code() as i64, c);
        }
        assert!(is_err(-4) && !is_err(5) && !is_err(i64::MIN));
    }

    #[test]
    fn decoders() {
        let mut b = Vec::new();
        b.extend_from_slice(&9u64.to_le_bytes());
        b.extend_from_slice(&6i32.to_le_bytes());
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(b"boom");
        let e = ExitSignal::decode(&b).unwrap();
        assert_eq!(e.from.unwrap().raw(), 9);
        assert_eq!(e.reason, Reason::custom("boom"));
        assert!(ExitSignal::decode(&b[..10]).is_none());
        let mut d = Vec::new();
        d.extend_from_slice(&1u64.to_le_bytes());
        d.extend_from_slice(&2u64.to_le_bytes());
        d.extend_from_slice(&1i32.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        let d = Down::decode(&d).unwrap();
        assert_eq!(
            (d.monitor.0, d.pid.unwrap().raw(), d.reason.code),
            (1, 2, code::KILLED)
        );
    }
}
