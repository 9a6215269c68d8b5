// requires: wasm
/*
 * Unit tests: Wasm processes (src/wasm, rusm/wasm.h) with inline WAT
 * fixtures compiled by wasmtime_wat2wasm — every ABI call, out-of-bounds
 * pointers for each pointer-taking call, a run of trapping guests, kill of
 * a looping guest, fairness against native processes, memory limits, the
 * overflow tier, a native supervisor restarting a Wasm child, refused
 * modules, WASI stdout capture and the content-hash cache.
 *
 * Guests report to the test thread (its pid is their spawn argument) and
 * the test waits for those messages and for Down / Exit messages.
 */
#include "support.h"

#include <pthread.h>
#include <signal.h>

#include <wasmtime.h>

#include "rusm/wasm.h"

#define TAG_BAD 0xBAD /* guest -> test: check number that failed */

/* A pid no process has: slot 0 at the last generation. */
#define DEAD_PID "0x0FFFFFFF"

/* ------------------------------------------------------------------ */
/* Fixtures                                                            */
/* ------------------------------------------------------------------ */

#define IMPORTS                                                                \
  "(import \"rusm\" \"abi_version\" (func $abi_version (result i32)))\n"       \
  "(import \"rusm\" \"self\" (func $self (result i64)))\n"                     \
  "(import \"rusm\" \"arg\" (func $arg (param i32 i32) (result i32)))\n"       \
  "(import \"rusm\" \"send\" (func $send (param i64 i64 i32 i32) (result "     \
  "i32)))\n"                                                                   \
  "(import \"rusm\" \"receive\" (func $receive (param i64 i64 i64 i32 i32 "    \
  "i32) (result i32)))\n"                                                      \
  "(import \"rusm\" \"spawn\" (func $spawn (param i32 i32 i32 i32 i32) "       \
  "(result i64)))\n"                                                           \
  "(import \"rusm\" \"link\" (func $link (param i64) (result i32)))\n"         \
  "(import \"rusm\" \"unlink\" (func $unlink (param i64) (result i32)))\n"     \
  "(import \"rusm\" \"monitor\" (func $monitor (param i64) (result i64)))\n"   \
  "(import \"rusm\" \"demonitor\" (func $demonitor (param i64 i32) (result "   \
  "i32)))\n"                                                                   \
  "(import \"rusm\" \"trap_exit\" (func $trap_exit (param i32) (result "       \
  "i32)))\n"                                                                   \
  "(import \"rusm\" \"exit\" (func $exit (param i64 i32 i32 i32) (result "     \
  "i32)))\n"                                                                   \
  "(import \"rusm\" \"exit_self\" (func $exit_self (param i32 i32 i32)))\n"    \
  "(import \"rusm\" \"kill\" (func $kill (param i64) (result i32)))\n"         \
  "(import \"rusm\" \"register\" (func $register (param i32 i32) (result "     \
  "i32)))\n"                                                                   \
  "(import \"rusm\" \"whereis\" (func $whereis (param i32 i32) (result "       \
  "i64)))\n"                                                                   \
  "(import \"rusm\" \"send_named\" (func $send_named (param i32 i32 i64 i32 "  \
  "i32) (result i32)))\n"                                                      \
  "(import \"rusm\" \"send_after\" (func $send_after (param i64 i64 i64 i32 "  \
  "i32) (result i64)))\n"                                                      \
  "(import \"rusm\" \"cancel_timer\" (func $cancel_timer (param i64) (result " \
  "i64)))\n"                                                                   \
  "(import \"rusm\" \"now_ns\" (func $now_ns (result i64)))\n"                 \
  "(import \"rusm\" \"log\" (func $log (param i32 i32 i32)))\n"

/* Memory, the parent pid global (read from the spawn argument by $init),
 * and $ok: on a failed check, report its number to the parent and trap. */
#define PRELUDE                                                                \
  "(memory (export \"memory\") 1)\n"                                           \
  "(global $parent (mut i64) (i64.const 0))\n"                                 \
  "(func $init (drop (call $arg (i32.const 0) (i32.const 8)))\n"               \
  "  (global.set $parent (i64.load (i32.const 0))))\n"                         \
  "(func $ok (param $c i32) (param $n i32)\n"                                  \
  "  (if (i32.eqz (local.get $c)) (then\n"                                     \
  "    (i32.store (i32.const 512) (local.get $n))\n"                           \
  "    (drop (call $send (global.get $parent) (i64.const 0xBAD)\n"             \
  "      (i32.const 512) (i32.const 4)))\n"                                    \
  "    unreachable)))\n"                                                       \
  "(func $tell (param $tag i64)\n"                                             \
  "  (drop (call $send (global.get $parent) (local.get $tag) (i32.const 0)\n"  \
  "    (i32.const 0))))\n"

/* Every ABI call. Its argument: the parent's pid and two victims' pids.
 * Reports its pid (tag 1), two spawned children report (tag 50), it sends
 * exit(custom "bye") to the first victim and kills the second, then says
 * "done" (tag 100) and exits with reason custom "bye". */
static const char ABI_WAT[] =
    "(module\n" IMPORTS PRELUDE "(data (i32.const 256) \"wguest\")\n"
    "(data (i32.const 272) \"hello log\")\n"
    "(data (i32.const 288) \"bye\")\n"
    "(data (i32.const 296) \"child\")\n"
    "(data (i32.const 304) \"nope\")\n"
    "(data (i32.const 312) \"other:child\")\n"
    "(func (export \"child\") (call $init) (call $tell (i64.const 50)))\n"
    "(global $v1 (mut i64) (i64.const 0))\n"
    "(global $v2 (mut i64) (i64.const 0))\n"
    "(func (export \"main\") (local $me i64) (local $r i64)\n"
    "  (call $ok (i32.eq (call $arg (i32.const 0) (i32.const 48))\n"
    "    (i32.const 24)) (i32.const 1))\n"
    "  (global.set $parent (i64.load (i32.const 0)))\n"
    "  (global.set $v1 (i64.load (i32.const 8)))\n"
    "  (global.set $v2 (i64.load (i32.const 16)))\n"
    "  (call $ok (i32.eq (call $abi_version) (i32.const 1)) (i32.const 2))\n"
    "  (local.set $me (call $self))\n"
    "  (i64.store (i32.const 8) (local.get $me))\n"
    "  (call $ok (i32.eqz (call $send (global.get $parent) (i64.const 1)\n"
    "    (i32.const 8) (i32.const 8))) (i32.const 3))\n"
    "  (call $ok (i64.gt_s (call $now_ns) (i64.const 0)) (i32.const 4))\n"
    "  (call $ok (i32.eqz (call $register (i32.const 256) (i32.const 6)))\n"
    "    (i32.const 5))\n"
    "  (call $ok (i64.eq (call $whereis (i32.const 256) (i32.const 6))\n"
    "    (local.get $me)) (i32.const 6))\n"
    "  (call $ok (i32.eqz (call $send_named (i32.const 256) (i32.const 6)\n"
    "    (i64.const 2) (i32.const 272) (i32.const 9))) (i32.const 7))\n"
    /* truncated to cap 4; msg_info has the full length */
    "  (call $ok (i32.eq (call $receive (i64.const 2) (i64.const -1)\n"
    "    (i64.const -1) (i32.const 1024) (i32.const 4) (i32.const 128))\n"
    "    (i32.const 4)) (i32.const 8))\n"
    "  (call $ok (i64.eq (i64.load (i32.const 128)) (i64.const 2))\n"
    "    (i32.const 9))\n"
    "  (call $ok (i64.eq (i64.load (i32.const 136)) (local.get $me))\n"
    "    (i32.const 10))\n"
    "  (call $ok (i32.eq (i32.load (i32.const 144)) (i32.const 9))\n"
    "    (i32.const 11))\n"
    "  (call $ok (i32.eq (i32.load (i32.const 1024)) (i32.load (i32.const "
    "272)))\n"
    "    (i32.const 12))\n"
    /* poll and timeout */
    "  (call $ok (i32.eq (call $receive (i64.const 99) (i64.const -1)\n"
    "    (i64.const 0) (i32.const 1024) (i32.const 16) (i32.const 128))\n"
    "    (i32.const -4)) (i32.const 13))\n"
    "  (call $ok (i32.eq (call $receive (i64.const 99) (i64.const -1)\n"
    "    (i64.const 3) (i32.const 1024) (i32.const 16) (i32.const 128))\n"
    "    (i32.const -4)) (i32.const 14))\n"
    /* timers */
    "  (local.set $r (call $send_after (i64.const 2) (local.get $me)\n"
    "    (i64.const 3) (i32.const 288) (i32.const 3)))\n"
    "  (call $ok (i64.gt_s (local.get $r) (i64.const 0)) (i32.const 15))\n"
    "  (call $ok (i32.eq (call $receive (i64.const 3) (i64.const -1)\n"
    "    (i64.const -1) (i32.const 1024) (i32.const 16) (i32.const 128))\n"
    "    (i32.const 3)) (i32.const 16))\n"
    "  (local.set $r (call $send_after (i64.const 100000) (local.get $me)\n"
    "    (i64.const 4) (i32.const 0) (i32.const 0)))\n"
    "  (call $ok (i64.ge_s (call $cancel_timer (local.get $r)) (i64.const "
    "0))\n"
    "    (i32.const 17))\n"
    "  (call $ok (i64.eq (call $cancel_timer (local.get $r)) (i64.const "
    "-10))\n"
    "    (i32.const 18))\n"
    /* monitors, links, trap_exit */
    "  (local.set $r (call $monitor (global.get $parent)))\n"
    "  (call $ok (i64.gt_s (local.get $r) (i64.const 0)) (i32.const 19))\n"
    "  (call $ok (i32.eq (call $demonitor (local.get $r) (i32.const 1))\n"
    "    (i32.const 1)) (i32.const 20))\n"
    "  (call $ok (i32.eqz (call $demonitor (local.get $r) (i32.const 0)))\n"
    "    (i32.const 21))\n"
    "  (call $ok (i32.eqz (call $link (global.get $parent))) (i32.const 22))\n"
    "  (call $ok (i32.eqz (call $unlink (global.get $parent))) (i32.const "
    "23))\n"
    "  (call $ok (i32.eqz (call $trap_exit (i32.const 1))) (i32.const 24))\n"
    "  (call $ok (i32.eq (call $trap_exit (i32.const 0)) (i32.const 1))\n"
    "    (i32.const 25))\n"
    /* bad arguments are error codes, not traps */
    "  (call $ok (i32.eq (call $send (global.get $parent)\n"
    "    (i64.const 0x8000000000000005) (i32.const 0) (i32.const 0))\n"
    "    (i32.const -1)) (i32.const 26))\n"
    "  (call $ok (i32.eq (call $kill (i64.const " DEAD_PID "))\n"
    "    (i32.const -3)) (i32.const 27))\n"
    "  (call $ok (i32.eq (call $exit (i64.const " DEAD_PID ") (i32.const 6)\n"
    "    (i32.const 288) (i32.const 3)) (i32.const -3)) (i32.const 28))\n"
    "  (call $ok (i32.eq (call $exit (global.get $parent) (i32.const 99)\n"
    "    (i32.const 0) (i32.const 0)) (i32.const -1)) (i32.const 29))\n"
    "  (call $ok (i32.eq (call $register (i32.const 304) (i32.const 4))\n"
    "    (i32.const -11)) (i32.const 30))\n"
    "  (call $ok (i64.eqz (call $whereis (i32.const 304) (i32.const 4)))\n"
    "    (i32.const 31))\n"
    "  (call $ok (i32.eq (call $send_named (i32.const 304) (i32.const 4)\n"
    "    (i64.const 1) (i32.const 0) (i32.const 0)) (i32.const -10))\n"
    "    (i32.const 32))\n"
    "  (call $ok (i64.eq (call $cancel_timer (i64.const 12345))\n"
    "    (i64.const -10)) (i32.const 33))\n"
    /* exit signals to live processes; their Exit and Down come back as
     * messages: a monitored victim killed, a linked one exited while this
     * guest traps exits */
    "  (local.set $r (call $monitor (global.get $v2)))\n"
    "  (call $ok (i32.eqz (call $kill (global.get $v2))) (i32.const 37))\n"
    "  (call $ok (i32.ge_s (call $receive (i64.const 0x8000000000000002)\n"
    "    (i64.const -1) (i64.const -1) (i32.const 1024) (i32.const 64)\n"
    "    (i32.const 128)) (i32.const 24)) (i32.const 38))\n"
    "  (call $ok (i64.eq (i64.load (i32.const 1024)) (local.get $r))\n"
    "    (i32.const 39))\n"
    "  (call $ok (i64.eq (i64.load (i32.const 1032)) (global.get $v2))\n"
    "    (i32.const 40))\n"
    "  (call $ok (i32.eq (i32.load (i32.const 1040)) (i32.const 1))\n"
    "    (i32.const 41))\n"
    "  (drop (call $trap_exit (i32.const 1)))\n"
    "  (call $ok (i32.eqz (call $link (global.get $v1))) (i32.const 42))\n"
    "  (call $ok (i32.eqz (call $exit (global.get $v1) (i32.const 6)\n"
    "    (i32.const 288) (i32.const 3))) (i32.const 43))\n"
    "  (call $ok (i32.eq (call $receive (i64.const 0x8000000000000001)\n"
    "    (i64.const -1) (i64.const -1) (i32.const 1024) (i32.const 64)\n"
    "    (i32.const 128)) (i32.const 19)) (i32.const 44))\n"
    "  (call $ok (i64.eq (i64.load (i32.const 1024)) (global.get $v1))\n"
    "    (i32.const 45))\n"
    "  (call $ok (i32.eq (i32.load (i32.const 1032)) (i32.const 6))\n"
    "    (i32.const 46))\n"
    "  (call $ok (i32.eq (i32.load (i32.const 1036)) (i32.const 3))\n"
    "    (i32.const 47))\n"
    "  (call $ok (i32.eq (i32.load16_u (i32.const 1040)) (i32.const "
    "0x7962))\n"
    "    (i32.const 48))\n"
    "  (drop (call $trap_exit (i32.const 0)))\n"
    /* spawn (after the trap_exit checks: a child's exit must not reach
     * this guest as a message): an export of this module, and a
     * registered module; both
     * children get the parent pid as their argument */
    "  (local.set $r (call $spawn (i32.const 296) (i32.const 5) (i32.const 0)\n"
    "    (i32.const 8) (i32.const 0)))\n"
    "  (call $ok (i64.gt_s (local.get $r) (i64.const 0)) (i32.const 34))\n"
    "  (local.set $r (call $spawn (i32.const 312) (i32.const 11) (i32.const "
    "0)\n"
    "    (i32.const 8) (i32.const 3)))\n"
    "  (call $ok (i64.gt_s (local.get $r) (i64.const 0)) (i32.const 35))\n"
    "  (call $ok (i64.eq (call $spawn (i32.const 304) (i32.const 4)\n"
    "    (i32.const 0) (i32.const 0) (i32.const 0)) (i64.const -10))\n"
    "    (i32.const 36))\n"
    "  (call $log (i32.const 1) (i32.const 272) (i32.const 9))\n"
    "  (call $tell (i64.const 100))\n"
    "  (call $exit_self (i32.const 6) (i32.const 288) (i32.const 3))\n"
    "  unreachable)\n"
    ")\n";

/* One export per pointer-taking call, each with a bad (pointer, length). */
#define OOB "(i32.const 65530) (i32.const 16)"
static const char OOB_WAT[] =
    "(module\n" IMPORTS PRELUDE "(func (export \"arg\") (drop (call $arg " OOB
    ")))\n"
    "(func (export \"send\") (drop (call $send (i64.const 1) (i64.const 1) " OOB
    ")))\n"
    "(func (export \"send_neg\") (drop (call $send (i64.const 1) (i64.const 1)"
    " (i32.const 0) (i32.const -1))))\n"
    "(func (export \"receive_buf\") (drop (call $receive (i64.const 0)\n"
    "  (i64.const 0) (i64.const 0) " OOB " (i32.const 0))))\n"
    "(func (export \"receive_info\") (drop (call $receive (i64.const 0)\n"
    "  (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0)\n"
    "  (i32.const 65520))))\n"
    "(func (export \"spawn_name\") (drop (call $spawn " OOB
    " (i32.const 0) (i32.const 0) (i32.const 0))))\n"
    "(func (export \"spawn_arg\") (drop (call $spawn (i32.const 0) (i32.const "
    "1) " OOB " (i32.const 0))))\n"
    "(func (export \"exit\") (drop (call $exit (i64.const 1) (i32.const 6) " OOB
    ")))\n"
    "(func (export \"exit_self\") (call $exit_self (i32.const 6) " OOB "))\n"
    "(func (export \"register\") (drop (call $register " OOB ")))\n"
    "(func (export \"whereis\") (drop (call $whereis " OOB ")))\n"
    "(func (export \"send_named_name\") (drop (call $send_named " OOB
    " (i64.const 1) (i32.const 0) (i32.const 0))))\n"
    "(func (export \"send_named_data\") (drop (call $send_named (i32.const 0)"
    " (i32.const 1) (i64.const 1) " OOB ")))\n"
    "(func (export \"send_after\") (drop (call $send_after (i64.const 1)\n"
    "  (i64.const 1) (i64.const 1) " OOB ")))\n"
    "(func (export \"log\") (call $log (i32.const 1) " OOB "))\n"
    ")\n";

/* Traps at once. */
static const char TRAP_WAT[] =
    "(module (memory (export \"memory\") 1) (func (export \"main\") "
    "unreachable))\n";

/* Tells the parent (tag 1) it runs, then loops forever. */
static const char SPIN_WAT[] =
    "(module\n" IMPORTS PRELUDE
    "(func (export \"main\") (call $init) (call $tell (i64.const 1))\n"
    "  (loop $l (br $l))))\n";

/* Grows its memory twice and reports both results (tag 7: two i32). */
static const char GROW_WAT[] =
    "(module\n" IMPORTS PRELUDE "(func (export \"main\") (call $init)\n"
    "  (i32.store (i32.const 16) (memory.grow (i32.const 1)))\n"
    "  (i32.store (i32.const 20) (memory.grow (i32.const 1)))\n"
    "  (drop (call $send (global.get $parent) (i64.const 7) (i32.const 16)\n"
    "    (i32.const 8)))))\n";

/* Tells the parent it is ready (tag 1, its pid), waits for any message,
 * then: tag 9 traps, anything else is echoed back with tag 2. */
static const char PARK_WAT[] =
    "(module\n" IMPORTS PRELUDE "(func (export \"main\") (local $n i32)\n"
    "  (call $init)\n"
    "  (i64.store (i32.const 8) (call $self))\n"
    "  (drop (call $send (global.get $parent) (i64.const 1) (i32.const 8)\n"
    "    (i32.const 8)))\n"
    "  (local.set $n (call $receive (i64.const 0) (i64.const 0)\n"
    "    (i64.const -1) (i32.const 1024) (i32.const 256) (i32.const 128)))\n"
    "  (if (i64.eq (i64.load (i32.const 128)) (i64.const 9))\n"
    "    (then unreachable))\n"
    "  (drop (call $send (global.get $parent) (i64.const 2) (i32.const 1024)\n"
    "    (local.get $n)))))\n";

/* WASI: prints two lines to stdout (the second in two writes) and one to
 * stderr, checks it has no arguments, then tells the parent (tag 1). */
static const char WASI_WAT[] =
    "(module\n" IMPORTS "(import \"wasi_snapshot_preview1\" \"fd_write\"\n"
    "  (func $fd_write (param i32 i32 i32 i32) (result i32)))\n"
    "(import \"wasi_snapshot_preview1\" \"args_sizes_get\"\n"
    "  (func $args_sizes_get (param i32 i32) (result i32)))\n" PRELUDE
    "(data (i32.const 256) \"hello stdout\\nsecond \")\n"
    "(data (i32.const 288) \"line\\n\")\n"
    "(data (i32.const 304) \"to stderr\\n\")\n"
    "(func $write (param $fd i32) (param $p i32) (param $n i32)\n"
    "  (i32.store (i32.const 64) (local.get $p))\n"
    "  (i32.store (i32.const 68) (local.get $n))\n"
    "  (call $ok (i32.eqz (call $fd_write (local.get $fd) (i32.const 64)\n"
    "    (i32.const 1) (i32.const 72))) (i32.const 1)))\n"
    "(func (export \"_start\") (call $init)\n"
    "  (call $write (i32.const 1) (i32.const 256) (i32.const 20))\n"
    "  (call $write (i32.const 1) (i32.const 288) (i32.const 5))\n"
    "  (call $write (i32.const 2) (i32.const 304) (i32.const 10))\n"
    "  (call $ok (i32.eqz (call $args_sizes_get (i32.const 80) (i32.const "
    "84)))\n"
    "    (i32.const 2))\n"
    "  (call $ok (i32.eqz (i32.load (i32.const 80))) (i32.const 3))\n"
    "  (call $tell (i64.const 1))))\n";

/* WASI sleep (poll_oneoff on a monotonic clock) and clock_time_get:
 * "long" tells the parent (tag 1) and sleeps a minute; "short" sleeps 5 ms
 * between two clock readings and sends the first (tag 2). */
static const char SLEEP_WAT[] =
    "(module\n" IMPORTS "(import \"wasi_snapshot_preview1\" \"poll_oneoff\"\n"
    "  (func $poll (param i32 i32 i32 i32) (result i32)))\n"
    "(import \"wasi_snapshot_preview1\" \"clock_time_get\"\n"
    "  (func $clock (param i32 i64 i32) (result i32)))\n" PRELUDE
    "(func $sleep (param $ns i64)\n"
    "  (i64.store (i32.const 1024) (i64.const 77))\n"
    "  (i32.store8 (i32.const 1032) (i32.const 0))\n"
    "  (i32.store (i32.const 1040) (i32.const 1))\n"
    "  (i64.store (i32.const 1048) (local.get $ns))\n"
    "  (i64.store (i32.const 1056) (i64.const 0))\n"
    "  (i32.store16 (i32.const 1064) (i32.const 0))\n"
    "  (call $ok (i32.eqz (call $poll (i32.const 1024) (i32.const 1152)\n"
    "    (i32.const 1) (i32.const 1200))) (i32.const 1))\n"
    "  (call $ok (i32.eq (i32.load (i32.const 1200)) (i32.const 1))\n"
    "    (i32.const 2))\n"
    "  (call $ok (i64.eq (i64.load (i32.const 1152)) (i64.const 77))\n"
    "    (i32.const 3)))\n"
    "(func (export \"long\") (call $init) (call $tell (i64.const 1))\n"
    "  (call $sleep (i64.const 60000000000)))\n"
    "(func (export \"short\") (call $init)\n"
    "  (call $ok (i32.eqz (call $clock (i32.const 1) (i64.const 0)\n"
    "    (i32.const 8))) (i32.const 4))\n"
    "  (call $sleep (i64.const 5000000))\n"
    "  (call $ok (i32.eqz (call $clock (i32.const 1) (i64.const 0)\n"
    "    (i32.const 16))) (i32.const 5))\n"
    "  (call $ok (i64.ge_s (i64.sub (i64.load (i32.const 16))\n"
    "    (i64.load (i32.const 8))) (i64.const 5000000)) (i32.const 6))\n"
    "  (drop (call $send (global.get $parent) (i64.const 2) (i32.const 8)\n"
    "    (i32.const 8)))))\n";

static const char UNKNOWN_IMPORT_WAT[] =
    "(module (import \"rusm\" \"nope\" (func)) (func (export \"main\")))\n";

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* Captured guest output. */
typedef struct logrec {
  rusm_pid_t pid;
  int level;
  rusm_wasm_log_source src;
  char text[128];
} logrec;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static logrec logs[64];
static size_t nlogs;

static void capture(void *arg, rusm_pid_t pid, int level,
                    rusm_wasm_log_source src, const char *data, size_t len) {
  (void)arg;
  pthread_mutex_lock(&log_lock);
  if (nlogs < sizeof logs / sizeof logs[0]) {
    logrec *r = &logs[nlogs++];
    r->pid = pid;
    r->level = level;
    r->src = src;
    snprintf(r->text, sizeof r->text, "%.*s", (int)len, data);
  }
  pthread_mutex_unlock(&log_lock);
}

static bool logged(rusm_pid_t pid, rusm_wasm_log_source src, int level,
                   const char *text) {
  bool found = false;
  pthread_mutex_lock(&log_lock);
  for (size_t i = 0; i < nlogs && !found; i++)
    found = logs[i].pid == pid && logs[i].src == src &&
            logs[i].level == level && strcmp(logs[i].text, text) == 0;
  pthread_mutex_unlock(&log_lock);
  return found;
}

typedef struct wenv {
  t_env t;
  rusm_wasm *w;
} wenv;

/* Wasmtime turns guest faults into traps with its own handlers for these
 * signals, installed once per process with the first engine. cmocka
 * installs handlers of its own around each test and restores the previous
 * ones after it, dropping Wasmtime's: they are put back at each start. */
static const int trap_signals[] = {SIGSEGV, SIGILL, SIGFPE, SIGBUS};
static struct sigaction wasmtime_sa[4];
static bool wasmtime_sa_saved;

static void keep_wasmtime_handlers(void) {
  for (size_t i = 0; i < 4; i++) {
    if (wasmtime_sa_saved)
      sigaction(trap_signals[i], &wasmtime_sa[i], NULL);
    else
      sigaction(trap_signals[i], NULL, &wasmtime_sa[i]);
  }
  wasmtime_sa_saved = true;
}

static void w_start_opts(wenv *e, uint32_t schedulers,
                         const rusm_wasm_opts *wo) {
  t_start(&e->t, schedulers);
  rusm_wasm_opts o;
  if (wo)
    o = *wo;
  else
    rusm_wasm_opts_init(&o);
  o.log = capture;
  int rc = rusm_wasm_create(e->t.rt, &o, &e->w);
  if (rc)
    fail_msg("rusm_wasm_create: %s", rusm_err_name(rc));
  keep_wasmtime_handlers();
}

static void w_start(wenv *e) { w_start_opts(e, 2, NULL); }

static void w_stop(wenv *e) {
  rusm_wasm_destroy(e->w);
  e->w = NULL;
  t_stop(&e->t);
}

static rusm_wasm_module *load_wat(wenv *e, const char *name, const char *wat) {
  wasm_byte_vec_t bin;
  wasmtime_error_t *err = wasmtime_wat2wasm(wat, strlen(wat), &bin);
  if (err) {
    wasm_byte_vec_t msg;
    wasmtime_error_message(err, &msg);
    fail_msg("wat2wasm %s: %.*s", name, (int)msg.size, msg.data);
  }
  rusm_wasm_module *m = NULL;
  char msg[512];
  int rc = rusm_wasm_load(e->w, name, bin.data, bin.size, &m, msg, sizeof msg);
  wasm_byte_vec_delete(&bin);
  if (rc)
    fail_msg("load %s: %s (%s)", name, rusm_err_name(rc), msg);
  return m;
}

/* Spawns entry of m with the test pid as argument; monitored when mon. */
static rusm_pid_t spawn_w(wenv *e, rusm_wasm_module *m, const char *entry,
                          bool mon, rusm_ref *ref) {
  rusm_wasm_spawn_opts o;
  rusm_wasm_spawn_opts_init(&o);
  o.entry = entry;
  o.arg = &e->t.pid;
  o.arg_len = sizeof e->t.pid;
  o.proc.monitor = mon;
  o.proc.monitor_ref = ref;
  rusm_pid_t pid = RUSM_PID_NONE;
  int rc = rusm_wasm_spawn(m, &o, &pid);
  if (rc)
    fail_msg("rusm_wasm_spawn %s: %s", entry ? entry : "(main)",
             rusm_err_name(rc));
  return pid;
}

static bool down_of(const rusm_msg *m, void *arg) {
  rusm_down_info d;
  return rusm_msg_down(m, &d) == 0 && d.pid == *(const rusm_pid_t *)arg;
}

/* Waits for the Down of pid (others stay queued); returns its reason code,
 * detail in buf. */
static int wait_down(wenv *e, rusm_pid_t pid, char *buf, size_t len) {
  rusm_filter f = {RUSM_TAG_DOWN, ~UINT64_C(0), down_of, &pid};
  rusm_msg *m = t_recv(&e->t, &f);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  if (buf)
    snprintf(buf, len, "%.*s", (int)d.reason.len,
             d.reason.data ? (const char *)d.reason.data : "");
  int code = (int)d.reason.code;
  rusm_msg_free(m);
  return code;
}

/* Fails the test if a guest reported a failed check (tag TAG_BAD). */
static void no_bad_report(wenv *e) {
  rusm_msg *m = NULL;
  rusm_filter f = rusm_filter_tag(TAG_BAD);
  if (rusm_try_receive(e->t.me, &f, &m) == 0) {
    uint32_t n = 0;
    memcpy(&n, rusm_msg_data(m), sizeof n);
    rusm_msg_free(m);
    fail_msg("guest check %u failed", n);
  }
}

static bool tag_or_bad(const rusm_msg *m, void *arg) {
  uint64_t t = rusm_msg_tag(m);
  return t == *(const uint64_t *)arg || t == TAG_BAD;
}

/* Receives the first message with tag from a guest, failing when a guest
 * reported a failed check first. */
static rusm_msg *recv_guest(wenv *e, uint64_t tag) {
  rusm_filter f = {0, 0, tag_or_bad, &tag};
  rusm_msg *m = NULL;
  if (rusm_receive(e->t.me, &f, T_GUARD_MS, &m) != 0) {
    rusm_filter d = rusm_filter_tag(RUSM_TAG_DOWN);
    while (rusm_try_receive(e->t.me, &d, &m) == 0) {
      rusm_down_info di;
      rusm_msg_down(m, &di);
      fprintf(stderr, "(a Down: reason %d '%.*s')\n", di.reason.code,
              (int)di.reason.len, (const char *)di.reason.data);
    }
    fail_msg("no message with tag %llu", (unsigned long long)tag);
  }
  if (rusm_msg_tag(m) == TAG_BAD) {
    uint32_t n = 0;
    memcpy(&n, rusm_msg_data(m), sizeof n);
    rusm_msg_free(m);
    fail_msg("guest check %u failed", n);
  }
  return m;
}

/* ------------------------------------------------------------------ */
/* Tests                                                               */
/* ------------------------------------------------------------------ */

static rusm_next ignore_handle(rusm_proc *self, void *st, rusm_msg *m) {
  (void)self;
  (void)st;
  (void)m;
  return rusm_next_wait();
}

static const rusm_stackless_ops idle_ops = {NULL, ignore_handle, NULL};

static void test_abi_calls(void **state) {
  (void)state;
  wenv e;
  w_start(&e);
  rusm_wasm_module *m = load_wat(&e, "abi", ABI_WAT);
  assert_int_equal(rusm_wasm_register(e.w, "other", m), 0);
  assert_int_equal(rusm_wasm_register(e.w, "other", m), RUSM_EEXIST);

  rusm_pid_t args[3] = {e.t.pid, 0, 0};
  for (int i = 0; i < 2; i++) {
    rusm_ref ref;
    assert_int_equal(
        rusm_spawn_stackless(e.t.rt, &idle_ops, NULL, NULL, &args[1 + i]), 0);
    assert_int_equal(rusm_monitor(e.t.me, args[1 + i], &ref), 0);
  }
  rusm_wasm_spawn_opts o;
  rusm_wasm_spawn_opts_init(&o);
  o.arg = args;
  o.arg_len = sizeof args;
  o.caps = RUSM_WASM_CAP_SPAWN;
  o.proc.monitor = true;
  rusm_pid_t pid = RUSM_PID_NONE;
  assert_int_equal(rusm_wasm_spawn(m, &o, &pid), 0);

  rusm_msg *msg = recv_guest(&e, 1);
  assert_int_equal(t_msg_u64(msg), pid);
  assert_int_equal(rusm_msg_from(msg), pid);
  rusm_msg_free(msg);
  /* two children: each tells 50 */
  rusm_msg_free(recv_guest(&e, 50));
  rusm_msg_free(recv_guest(&e, 50));
  rusm_msg_free(recv_guest(&e, 100));
  no_bad_report(&e);
  assert_true(logged(pid, RUSM_WASM_LOG_CALL, 1, "hello log"));

  char detail[64];
  assert_int_equal(wait_down(&e, args[1], detail, sizeof detail),
                   RUSM_EXIT_CUSTOM);
  assert_string_equal(detail, "bye");
  assert_int_equal(wait_down(&e, args[2], NULL, 0), RUSM_EXIT_KILLED);
  assert_int_equal(wait_down(&e, pid, detail, sizeof detail), RUSM_EXIT_CUSTOM);
  assert_string_equal(detail, "bye");
  /* its name went with it */
  assert_int_equal(rusm_whereis(e.t.rt, "wguest"), RUSM_PID_NONE);

  /* without the capability, spawn is refused (check 34 fails) */
  for (int i = 0; i < 2; i++)
    assert_int_equal(
        rusm_spawn_stackless(e.t.rt, &idle_ops, NULL, NULL, &args[1 + i]), 0);
  o.caps = 0;
  assert_int_equal(rusm_wasm_spawn(m, &o, &pid), 0);
  rusm_filter bad = rusm_filter_tag(TAG_BAD);
  msg = t_recv(&e.t, &bad);
  uint32_t n = 0;
  memcpy(&n, rusm_msg_data(msg), sizeof n);
  assert_int_equal(n, 34);
  rusm_msg_free(msg);
  assert_int_equal(wait_down(&e, pid, NULL, 0), RUSM_EXIT_TRAP);

  rusm_wasm_stats s;
  rusm_wasm_stats_get(e.w, &s);
  assert_int_equal(s.spawned, 4);
  assert_true(s.traps >= 1);
  assert_int_equal(rusm_wasm_unregister(e.w, "other"), 0);
  assert_int_equal(rusm_wasm_unregister(e.w, "other"), RUSM_ENOTFOUND);
  rusm_wasm_module_release(m);
  w_stop(&e);
}

static void test_out_of_bounds(void **state) {
  (void)state;
  static const struct {
    const char *entry, *call;
  } cases[] = {
      {"arg", "arg"},
      {"send", "send"},
      {"send_neg", "send"},
      {"receive_buf", "receive"},
      {"receive_info", "receive"},
      {"spawn_name", "spawn"},
      {"spawn_arg", "spawn"},
      {"exit", "exit"},
      {"exit_self", "exit_self"},
      {"register", "register"},
      {"whereis", "whereis"},
      {"send_named_name", "send_named"},
      {"send_named_data", "send_named"},
      {"send_after", "send_after"},
      {"log", "log"},
  };
  wenv e;
  w_start(&e);
  rusm_wasm_module *m = load_wat(&e, "oob", OOB_WAT);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    rusm_pid_t pid = spawn_w(&e, m, cases[i].entry, true, NULL);
    char detail[200], want[64];
    int code = wait_down(&e, pid, detail, sizeof detail);
    snprintf(want, sizeof want, "rusm.%s: ", cases[i].call);
    if (code != RUSM_EXIT_TRAP || strncmp(detail, want, strlen(want)) != 0)
      fail_msg("%s: reason %d '%s', want trap '%s...'", cases[i].entry, code,
               detail, want);
  }
  /* A link sees the trap too (as an Exit message: we trap exits). */
  rusm_trap_exit(e.t.me, true);
  rusm_wasm_spawn_opts o;
  rusm_wasm_spawn_opts_init(&o);
  o.entry = "send";
  o.proc.link = true;
  rusm_pid_t pid;
  assert_int_equal(rusm_wasm_spawn(m, &o, &pid), 0);
  rusm_msg *msg = t_recv_tag(&e.t, RUSM_TAG_EXIT);
  rusm_exit_info x;
  assert_int_equal(rusm_msg_exit(msg, &x), 0);
  assert_int_equal(x.from, pid);
  assert_int_equal(x.reason.code, RUSM_EXIT_TRAP);
  assert_true(x.reason.len > 10 &&
              memcmp(x.reason.data, "rusm.send: ", 11) == 0);
  rusm_msg_free(msg);
  rusm_trap_exit(e.t.me, false);
  rusm_wasm_module_release(m);
  w_stop(&e);
}

static void test_trap_storm(void **state) {
  (void)state;
  const int total = T_SCALE(10000, 1000), batch = 250;
  wenv e;
  w_start(&e);
  rusm_wasm_module *trap = load_wat(&e, "trap", TRAP_WAT);
  rusm_pid_t *pids = calloc((size_t)batch, sizeof *pids);
  assert_non_null(pids);
  for (int done = 0; done < total; done += batch) {
    for (int i = 0; i < batch; i++)
      pids[i] = spawn_w(&e, trap, NULL, true, NULL);
    for (int i = 0; i < batch; i++) {
      rusm_msg *m = t_recv_tag(&e.t, RUSM_TAG_DOWN);
      rusm_down_info d;
      assert_int_equal(rusm_msg_down(m, &d), 0);
      assert_int_equal(d.reason.code, RUSM_EXIT_TRAP);
      assert_true(d.reason.len > 0 &&
                  strstr((const char *)d.reason.data, "unreachable") != NULL);
      rusm_msg_free(m);
    }
  }
  free(pids);
  t_wait_idle(&e.t);
  rusm_wasm_stats s;
  rusm_wasm_stats_get(e.w, &s);
  assert_int_equal(s.live, 0);
  assert_int_equal(s.instances_live, 0);
  assert_int_equal(s.traps, (uint64_t)total);
  assert_int_equal(s.exits, (uint64_t)total);
  /* Healthy after: a normal guest still works. */
  rusm_wasm_module *park = load_wat(&e, "park", PARK_WAT);
  rusm_pid_t pid = spawn_w(&e, park, NULL, true, NULL);
  rusm_msg_free(recv_guest(&e, 1));
  t_send(e.t.rt, pid, 5, "hi", 2);
  rusm_msg *m = recv_guest(&e, 2);
  assert_int_equal(rusm_msg_len(m), 2);
  rusm_msg_free(m);
  assert_int_equal(wait_down(&e, pid, NULL, 0), RUSM_EXIT_NORMAL);
  rusm_wasm_module_release(park);
  rusm_wasm_module_release(trap);
  w_stop(&e);
}

static void test_kill_looping(void **state) {
  (void)state;
  wenv e;
  w_start(&e);
  rusm_wasm_module *m = load_wat(&e, "spin", SPIN_WAT);
  rusm_pid_t pid = spawn_w(&e, m, NULL, true, NULL);
  rusm_msg_free(recv_guest(&e, 1));
  assert_int_equal(rusm_kill(e.t.rt, pid), 0);
  assert_int_equal(wait_down(&e, pid, NULL, 0), RUSM_EXIT_KILLED);
  /* and an exit signal ends it too */
  pid = spawn_w(&e, m, NULL, true, NULL);
  rusm_msg_free(recv_guest(&e, 1));
  assert_int_equal(rusm_exit(e.t.rt, pid, rusm_reason_str("stop")), 0);
  char detail[32];
  assert_int_equal(wait_down(&e, pid, detail, sizeof detail), RUSM_EXIT_CUSTOM);
  assert_string_equal(detail, "stop");
  rusm_wasm_module_release(m);
  w_stop(&e);
}

/* Native ping-pong: two stackless processes bounce a counter; the pinger
 * tells the test when it reached the target. */
typedef struct pp {
  rusm_pid_t test, peer;
  uint64_t target;
} pp;

static rusm_next pong_handle(rusm_proc *self, void *st, rusm_msg *m) {
  (void)st;
  uint64_t v = t_msg_u64(m);
  rusm_send(rusm_proc_rt(self), rusm_msg_from(m), 1, &v, sizeof v);
  return rusm_next_wait();
}

static rusm_next ping_handle(rusm_proc *self, void *st, rusm_msg *m) {
  pp *p = st;
  uint64_t v = t_msg_u64(m) + 1;
  if (v >= p->target) {
    rusm_send(rusm_proc_rt(self), p->test, T_TAG_DONE, &v, sizeof v);
    return rusm_next_stop(RUSM_REASON_NORMAL);
  }
  rusm_send(rusm_proc_rt(self), p->peer, 1, &v, sizeof v);
  return rusm_next_wait();
}

static rusm_next ping_init(rusm_proc *self, void **st) {
  pp *p = *st;
  uint64_t v = 0;
  rusm_send(rusm_proc_rt(self), p->peer, 1, &v, sizeof v);
  return rusm_next_wait();
}

static void test_fairness(void **state) {
  (void)state;
  wenv e;
  w_start_opts(&e, 1,
               NULL); /* one scheduler: the guest and the pair share it */
  rusm_wasm_module *m = load_wat(&e, "spin", SPIN_WAT);
  rusm_pid_t spinner = spawn_w(&e, m, NULL, true, NULL);
  rusm_msg_free(recv_guest(&e, 1)); /* it is looping now */

  static const rusm_stackless_ops pong_ops = {NULL, pong_handle, NULL};
  static const rusm_stackless_ops ping_ops = {ping_init, ping_handle, NULL};
  rusm_pid_t pong;
  assert_int_equal(rusm_spawn_stackless(e.t.rt, &pong_ops, NULL, NULL, &pong),
                   0);
  pp p = {e.t.pid, pong, 2000};
  rusm_pid_t ping;
  assert_int_equal(rusm_spawn_stackless(e.t.rt, &ping_ops, &p, NULL, &ping), 0);
  assert_int_equal(t_recv_u64(&e.t, T_TAG_DONE), 2000);
  assert_true(rusm_is_alive(e.t.rt, spinner)); /* still looping */
  rusm_kill(e.t.rt, pong);
  rusm_kill(e.t.rt, spinner);
  assert_int_equal(wait_down(&e, spinner, NULL, 0), RUSM_EXIT_KILLED);
  rusm_wasm_module_release(m);
  w_stop(&e);
}

static void test_memory_limit(void **state) {
  (void)state;
  wenv e;
  w_start(&e);
  rusm_wasm_module *m = load_wat(&e, "grow", GROW_WAT);
  rusm_wasm_spawn_opts o;
  rusm_wasm_spawn_opts_init(&o);
  o.arg = &e.t.pid;
  o.arg_len = sizeof e.t.pid;
  o.max_memory = 2 * 65536;
  rusm_pid_t pid;
  assert_int_equal(rusm_wasm_spawn(m, &o, &pid), 0);
  rusm_msg *msg = recv_guest(&e, 7);
  int32_t r[2];
  memcpy(r, rusm_msg_data(msg), sizeof r);
  rusm_msg_free(msg);
  assert_int_equal(r[0], 1);  /* grew from 1 page to 2 */
  assert_int_equal(r[1], -1); /* past the limit: refused */
  /* the host default (64 MiB) lets it grow */
  o.max_memory = 0;
  assert_int_equal(rusm_wasm_spawn(m, &o, &pid), 0);
  msg = recv_guest(&e, 7);
  memcpy(r, rusm_msg_data(msg), sizeof r);
  rusm_msg_free(msg);
  assert_int_equal(r[0], 1);
  assert_int_equal(r[1], 2);
  rusm_wasm_module_release(m);
  w_stop(&e);
}

static void test_overflow_tier(void **state) {
  (void)state;
  enum { SLOTS = 10, N = 50 };
  rusm_wasm_opts wo;
  rusm_wasm_opts_init(&wo);
  wo.pool_slots = SLOTS;
  wenv e;
  w_start_opts(&e, 2, &wo);
  rusm_wasm_module *m = load_wat(&e, "park", PARK_WAT);
  rusm_pid_t pids[N];
  for (int i = 0; i < N; i++)
    pids[i] = spawn_w(&e, m, NULL, true, NULL);
  for (int i = 0; i < N; i++) /* all parked in receive */
    rusm_msg_free(recv_guest(&e, 1));
  rusm_wasm_stats s;
  rusm_wasm_stats_get(e.w, &s);
  assert_int_equal(s.instances_live, N);
  assert_int_equal(s.pooled_live, SLOTS);
  assert_int_equal(s.overflow_live, N - SLOTS);
  for (int i = 0; i < N; i++)
    t_send_u64(e.t.rt, pids[i], 5, (uint64_t)i);
  uint64_t seen = 0;
  for (int i = 0; i < N; i++) {
    rusm_msg *msg = recv_guest(&e, 2);
    seen += t_msg_u64(msg);
    rusm_msg_free(msg);
  }
  assert_int_equal(seen, (uint64_t)N * (N - 1) / 2);
  for (int i = 0; i < N; i++) { /* in any order */
    rusm_msg *msg = t_recv_tag(&e.t, RUSM_TAG_DOWN);
    rusm_down_info d;
    assert_int_equal(rusm_msg_down(msg, &d), 0);
    assert_int_equal(d.reason.code, RUSM_EXIT_NORMAL);
    rusm_msg_free(msg);
  }
  rusm_wasm_stats_get(e.w, &s);
  assert_int_equal(s.pooled_total, SLOTS);
  assert_int_equal(s.overflow_total, N - SLOTS);
  rusm_wasm_module_release(m);
  w_stop(&e);
}

/* The Wasm child of a native supervisor: parks, traps on tag 9. */
typedef struct wchild {
  rusm_wasm_module *m;
  rusm_pid_t test;
} wchild;

static int start_wasm_child(rusm_rt *rt, void *arg, rusm_pid_t *out) {
  (void)rt;
  wchild *c = arg;
  rusm_wasm_spawn_opts o;
  rusm_wasm_spawn_opts_init(&o);
  o.arg = &c->test;
  o.arg_len = sizeof c->test;
  o.proc.link = true;
  return rusm_wasm_spawn(c->m, &o, out);
}

static void test_supervised(void **state) {
  (void)state;
  wenv e;
  w_start(&e);
  wchild c = {load_wat(&e, "park", PARK_WAT), e.t.pid};
  rusm_child_spec spec = {"guest", start_wasm_child, &c, RUSM_PERMANENT, 1000,
                          false};
  rusm_sup_flags fl;
  rusm_sup_flags_init(&fl);
  fl.intensity = 3;
  rusm_pid_t sup;
  assert_int_equal(rusm_sup_start(e.t.rt, &fl, &spec, 1, NULL, &sup), 0);
  rusm_msg *msg = recv_guest(&e, 1);
  rusm_pid_t first = t_msg_u64(msg);
  rusm_msg_free(msg);
  t_send(e.t.rt, first, 9, NULL, 0); /* traps */
  msg = recv_guest(&e, 1);           /* the restarted child */
  rusm_pid_t second = t_msg_u64(msg);
  rusm_msg_free(msg);
  assert_true(second != first);
  assert_false(rusm_is_alive(e.t.rt, first));
  rusm_child_info ci;
  size_t count = 0;
  assert_int_equal(rusm_sup_which_children(e.t.rt, sup, &ci, 1, &count), 0);
  assert_int_equal(count, 1);
  assert_int_equal(ci.pid, second);
  assert_int_equal(ci.restarts, 1);
  assert_int_equal(rusm_sup_stop(e.t.rt, sup, T_GUARD_MS), 0);
  assert_false(rusm_is_alive(e.t.rt, second));
  rusm_wasm_stats s;
  rusm_wasm_stats_get(e.w, &s);
  assert_int_equal(s.traps, 1);
  rusm_wasm_module_release(c.m);
  w_stop(&e);
}

static void test_bad_modules(void **state) {
  (void)state;
  wenv e;
  w_start(&e);
  char err[512];
  rusm_wasm_module *m = NULL;
  assert_int_equal(rusm_wasm_load(e.w, "junk", "hello", 5, &m, err, sizeof err),
                   RUSM_EINVAL);
  assert_null(m);
  assert_non_null(strstr(err, "junk"));
  assert_true(strlen(err) > 10);
  static const uint8_t elf[] = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0};
  assert_int_equal(
      rusm_wasm_load(e.w, NULL, elf, sizeof elf, &m, err, sizeof err),
      RUSM_EINVAL);
  assert_int_equal(rusm_wasm_load(e.w, NULL, "", 0, &m, err, sizeof err),
                   RUSM_EINVAL);

  wasm_byte_vec_t bin;
  assert_null(wasmtime_wat2wasm(PARK_WAT, strlen(PARK_WAT), &bin));
  assert_int_equal(
      rusm_wasm_load(e.w, "cut", bin.data, bin.size / 2, &m, err, sizeof err),
      RUSM_EINVAL);
  assert_non_null(strstr(err, "cut"));
  wasm_byte_vec_delete(&bin);

  assert_null(
      wasmtime_wat2wasm(UNKNOWN_IMPORT_WAT, strlen(UNKNOWN_IMPORT_WAT), &bin));
  assert_int_equal(
      rusm_wasm_load(e.w, "imp", bin.data, bin.size, &m, err, sizeof err),
      RUSM_EINVAL);
  assert_non_null(strstr(err, "nope"));
  wasm_byte_vec_delete(&bin);

  rusm_wasm_stats s;
  rusm_wasm_stats_get(e.w, &s);
  assert_int_equal(s.modules_live, 0);
  /* a missing entry is refused at spawn */
  m = load_wat(&e, "trap", TRAP_WAT);
  rusm_wasm_spawn_opts o;
  rusm_wasm_spawn_opts_init(&o);
  o.entry = "nope";
  rusm_pid_t pid;
  assert_int_equal(rusm_wasm_spawn(m, &o, &pid), RUSM_ENOTFOUND);
  assert_false(rusm_wasm_module_has_entry(m, "nope"));
  assert_true(rusm_wasm_module_has_entry(m, "main"));
  rusm_wasm_module_release(m);
  assert_int_equal(
      rusm_wasm_load_file(e.w, NULL, "/nonexistent.wasm", &m, err, sizeof err),
      RUSM_ESYS);
  w_stop(&e);
}

static void test_wasi_stdout(void **state) {
  (void)state;
  wenv e;
  w_start(&e);
  rusm_wasm_module *m = load_wat(&e, "wasi", WASI_WAT);
  rusm_pid_t pid = spawn_w(&e, m, NULL, true, NULL); /* _start */
  rusm_msg_free(recv_guest(&e, 1));
  assert_int_equal(wait_down(&e, pid, NULL, 0), RUSM_EXIT_NORMAL);
  assert_true(
      logged(pid, RUSM_WASM_LOG_STDOUT, RUSM_WASM_LOG_INFO, "hello stdout"));
  assert_true(
      logged(pid, RUSM_WASM_LOG_STDOUT, RUSM_WASM_LOG_INFO, "second line"));
  assert_true(
      logged(pid, RUSM_WASM_LOG_STDERR, RUSM_WASM_LOG_WARN, "to stderr"));
  rusm_wasm_module_release(m);
  w_stop(&e);
}

typedef struct waiting_arg {
  rusm_rt *rt;
  rusm_pid_t pid;
} waiting_arg;

static bool is_waiting(void *arg) {
  waiting_arg *a = arg;
  rusm_proc_info pi;
  return rusm_proc_info_get(a->rt, a->pid, &pi) == 0 &&
         pi.status == RUSM_STATUS_WAITING;
}

/* A sleeping guest parks: on a single scheduler, a native process still
 * answers while the guest sleeps for a minute. */
static void test_wasi_sleep(void **state) {
  (void)state;
  wenv e;
  w_start_opts(&e, 1, NULL);
  rusm_wasm_module *m = load_wat(&e, "sleep", SLEEP_WAT);
  rusm_pid_t sleeper = spawn_w(&e, m, "long", true, NULL);
  rusm_msg_free(recv_guest(&e, 1));
  static const rusm_stackless_ops pong_ops = {NULL, pong_handle, NULL};
  rusm_pid_t pong;
  assert_int_equal(rusm_spawn_stackless(e.t.rt, &pong_ops, NULL, NULL, &pong),
                   0);
  t_send_u64(e.t.rt, pong, 1, 42);
  assert_int_equal(t_recv_u64(&e.t, 1), 42);
  /* parked, not holding the scheduler (a blocking sleep stays RUNNING) */
  waiting_arg wa = {e.t.rt, sleeper};
  assert_true(t_poll_until(is_waiting, &wa));
  rusm_kill(e.t.rt, sleeper);
  assert_int_equal(wait_down(&e, sleeper, NULL, 0), RUSM_EXIT_KILLED);
  rusm_kill(e.t.rt, pong);

  int64_t t0 = rusm_now_ns();
  rusm_pid_t pid = spawn_w(&e, m, "short", true, NULL);
  rusm_msg *msg = recv_guest(&e, 2);
  int64_t first = (int64_t)t_msg_u64(msg);
  rusm_msg_free(msg);
  /* the guest's monotonic clock is the runtime's */
  assert_true(first >= t0 && first <= rusm_now_ns());
  assert_int_equal(wait_down(&e, pid, NULL, 0), RUSM_EXIT_NORMAL);
  rusm_wasm_module_release(m);
  w_stop(&e);
}

static void test_module_cache(void **state) {
  (void)state;
  wenv e;
  w_start(&e);
  rusm_wasm_module *a = load_wat(&e, "a", TRAP_WAT);
  rusm_wasm_module *b = load_wat(&e, "b", TRAP_WAT);
  assert_ptr_equal(a, b);
  assert_string_equal(rusm_wasm_module_name(b), "a");
  rusm_wasm_stats s;
  rusm_wasm_stats_get(e.w, &s);
  assert_int_equal(s.modules_compiled, 1);
  assert_int_equal(s.cache_hits, 1);
  assert_int_equal(s.modules_live, 1);
  rusm_wasm_module_release(a);
  rusm_wasm_module_release(b);
  rusm_wasm_stats_get(e.w, &s);
  assert_int_equal(s.modules_live, 0);
  /* once released, the same bytes compile again */
  a = load_wat(&e, "a", TRAP_WAT);
  rusm_wasm_stats_get(e.w, &s);
  assert_int_equal(s.modules_compiled, 2);
  /* a process keeps its module (and the host) alive after release */
  rusm_wasm_module *park = load_wat(&e, "park", PARK_WAT);
  rusm_pid_t pid = spawn_w(&e, park, NULL, true, NULL);
  rusm_wasm_module_release(park);
  rusm_msg_free(recv_guest(&e, 1));
  rusm_proc_info pi;
  assert_int_equal(rusm_proc_info_get(e.t.rt, pid, &pi), 0);
  assert_string_equal(pi.kind, "wasm");
  rusm_wasm_module_release(a);
  rusm_wasm_destroy(e.w); /* the parked guest keeps the host */
  e.w = NULL;
  t_send(e.t.rt, pid, 5, "x", 1);
  rusm_msg_free(recv_guest(&e, 2));
  assert_int_equal(wait_down(&e, pid, NULL, 0), RUSM_EXIT_NORMAL);
  t_stop(&e.t);
}

/* Options Wasmtime would abort on are refused with an error. */
static void test_host_opts(void **state) {
  (void)state;
  t_env t;
  t_start(&t, 1);
  rusm_wasm *w = NULL;
  rusm_wasm_opts o;
  rusm_wasm_opts_init(&o);
  o.pool_slots = 40000; /* 40,000 x 4 GiB: more than the address space */
  assert_int_equal(rusm_wasm_create(t.rt, &o, &w), RUSM_ESYS);
  assert_null(w);
  rusm_wasm_opts_init(&o);
  o.async_stack_size = 256 * 1024; /* no room above 512 KiB of Wasm frames */
  assert_int_equal(rusm_wasm_create(t.rt, &o, &w), RUSM_EINVAL);
  rusm_wasm_opts_init(&o);
  o.pool_slots = 4;
  o.memory_reservation = 1 << 20; /* small slots are fine */
  assert_int_equal(rusm_wasm_create(t.rt, &o, &w), 0);
  rusm_wasm_destroy(w);
  t_stop(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_abi_calls),
      cmocka_unit_test(test_out_of_bounds),
      cmocka_unit_test(test_trap_storm),
      cmocka_unit_test(test_kill_looping),
      cmocka_unit_test(test_fairness),
      cmocka_unit_test(test_memory_limit),
      cmocka_unit_test(test_overflow_tier),
      cmocka_unit_test(test_supervised),
      cmocka_unit_test(test_bad_modules),
      cmocka_unit_test(test_wasi_stdout),
      cmocka_unit_test(test_wasi_sleep),
      cmocka_unit_test(test_host_opts),
      cmocka_unit_test(test_module_cache),
  };
  return T_RUN(tests);
}
