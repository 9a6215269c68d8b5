/*
 * protocol.h — what the sample guests of guests/c and the programs that
 * drive them (tests/unit/test_wasm_guests.c, the Wasm scenarios of
 * src/bench/) agree on: message tags and the layouts of spawn arguments
 * and reports. Plain C, included on both sides. All integers are
 * little-endian (wasm32 and x86-64 both are).
 */
#ifndef RUSM_GUEST_PROTOCOL_H
#define RUSM_GUEST_PROTOCOL_H

#include <stdint.h>

/* User tags (top bit clear), "gst" + a number. */
#define GUEST_TAG_PING UINT64_C(0x6773740000000001) /* echo / pong: reply */
#define GUEST_TAG_PONG UINT64_C(0x6773740000000002) /* pong's reply */
#define GUEST_TAG_STOP UINT64_C(0x6773740000000003) /* exit normally */
#define GUEST_TAG_WORK                                                         \
  UINT64_C(0x6773740000000004)                        /* a child's one message \
                                                       */
#define GUEST_TAG_READY UINT64_C(0x6773740000000005)  /* started / parked */
#define GUEST_TAG_REPORT UINT64_C(0x6773740000000006) /* results */
#define GUEST_TAG_STEP UINT64_C(0x6773740000000007)   /* abi_all: one result */
#define GUEST_TAG_TEST                                                         \
  UINT64_C(0x6773740000000008) /* abi_all: driver input                        \
                                */
#define GUEST_TAG_TEST2                                                        \
  UINT64_C(0x6773740000000009)                       /* abi_all: driver input  \
                                                      */
#define GUEST_TAG_TIMER UINT64_C(0x677374000000000a) /* abi_all: send_after */
#define GUEST_TAG_NAMED UINT64_C(0x677374000000000b) /* abi_all: send_named */

/* echo ("main"): replies to every user message with the same tag and
 * payload, to its sender; GUEST_TAG_STOP ends it. Arg: none, or a pid to
 * send GUEST_TAG_READY to once it runs. */

/* pingpong ("ping"): arg = guest_ping_arg; when done, sends report_to a
 * GUEST_TAG_REPORT of guest_ping_report followed by `done` int64
 * round-trip latencies (ns) when want_latencies is set, then stops pong.
 * ("pong"): replies GUEST_TAG_PONG (empty) to every GUEST_TAG_PING;
 * GUEST_TAG_STOP ends it. */
typedef struct guest_ping_arg {
  uint64_t report_to;      /* pid */
  uint64_t n;              /* round trips */
  uint64_t pong;           /* pid of pong, or 0: spawn "pong" (linked) */
  uint32_t want_latencies; /* 1: append the latencies to the report */
  uint32_t reserved;
} guest_ping_arg;

typedef struct guest_ping_report {
  int64_t t_start, t_end; /* now_ns around the loop */
  uint64_t done;          /* round trips completed */
  int32_t err;            /* first error (0: none) */
  uint32_t reserved;
} guest_ping_report;

/* spawner ("main"): arg = guest_storm_arg; spawns n processes of its own
 * module's "child" export (batch at a time, draining between batches),
 * receives their n GUEST_TAG_WORK messages, then sends report_to a
 * GUEST_TAG_REPORT of guest_storm_report. ("child"): arg = a pid (8
 * bytes); sends it one GUEST_TAG_WORK and returns. */
typedef struct guest_storm_arg {
  uint64_t report_to;
  uint64_t n;
  uint32_t batch; /* spawns between drains; 0: 512 */
  uint32_t reserved;
} guest_storm_arg;

typedef struct guest_storm_report {
  int64_t t_start, t_end; /* now_ns: before the first spawn, last message */
  uint64_t spawned, got;
  int32_t err; /* first error (0: none) */
  uint32_t reserved;
} guest_storm_report;

/* idle ("main"): arg = a pid (8 bytes) or nothing; sends it one
 * GUEST_TAG_READY, then parks in receive until GUEST_TAG_STOP. */

/* busy ("main"): arg = a pid or nothing; sends it GUEST_TAG_READY, then
 * spins forever without calling the runtime (only epoch preemption
 * interrupts it; kill ends it). */

/* trapper: one export per failure, each trapping at once: "unreachable",
 * "oob" (a load past the end of memory), "div0" (integer division by
 * zero), "stack" (unbounded recursion), "badptr" (a host call given a
 * pointer outside memory: traps in the call). "grow" (arg = a pid) tries
 * to grow memory by guest_grow_pages and reports the memory.grow result
 * as an int32 GUEST_TAG_REPORT, then returns. "main" returns at once. */
#define GUEST_GROW_PAGES 2048 /* 128 MiB: past the default 64 MiB limit */

/* abi_all ("main"): arg = the driver's pid. Runs every ABI call and sends
 * the driver one GUEST_TAG_STEP per result: a guest_step, name first
 * (NUL-padded), then the value. It expects the driver to answer some
 * steps (docs in abi_all.c), and ends with exit_self(custom, "abi_all
 * done"). */
#define GUEST_STEP_NAME 24
typedef struct guest_step {
  char name[GUEST_STEP_NAME];
  int64_t value;
} guest_step;

#endif /* RUSM_GUEST_PROTOCOL_H */
