/*
 * rusm_abi.h — the numbers of the RUSM host ABI, version 1
 * (docs/wasm-abi.md): error codes, exit codes, reserved tags, flags and
 * layouts. Plain C with no imports, so that both sides can read it: guests
 * get it through rusm.h; the host's tests include it with
 * RUSM_ABI_LISTS_ONLY defined and check every value against rusm/otp.h
 * (tests/unit/test_wasm_guests.c).
 *
 * Each list below is X(NAME, VALUE) pairs; the definitions guests use
 * follow it, and a static assertion ties the two together.
 */
#ifndef RUSM_ABI_H
#define RUSM_ABI_H

#define RUSM_ABI_VERSION 1

/* Error codes: what every import returns on failure (as i32 or i64). */
#define RUSM_ABI_ERRORS(X)                                                     \
  X(RUSM_OK, 0)                                                                \
  X(RUSM_EINVAL, -1)                                                           \
  X(RUSM_ENOMEM, -2)                                                           \
  X(RUSM_ENOPROC, -3)                                                          \
  X(RUSM_ETIMEDOUT, -4)                                                        \
  X(RUSM_ESHUTDOWN, -5)                                                        \
  X(RUSM_ELIMIT, -6)                                                           \
  X(RUSM_ECONTEXT, -7)                                                         \
  X(RUSM_ESYS, -8)                                                             \
  X(RUSM_EEXIST, -9)                                                           \
  X(RUSM_ENOTFOUND, -10)                                                       \
  X(RUSM_EBUSY, -11)

/* Exit reason codes (rusm_exit_code). */
#define RUSM_ABI_EXIT_CODES(X)                                                 \
  X(RUSM_EXIT_NORMAL, 0)                                                       \
  X(RUSM_EXIT_KILLED, 1)                                                       \
  X(RUSM_EXIT_SHUTDOWN, 2)                                                     \
  X(RUSM_EXIT_NOPROC, 3)                                                       \
  X(RUSM_EXIT_NOCONNECTION, 4)                                                 \
  X(RUSM_EXIT_TRAP, 5)                                                         \
  X(RUSM_EXIT_CUSTOM, 6)                                                       \
  X(RUSM_EXIT_KILL, 7)

/* Reserved tags and tag bits (64-bit). */
#define RUSM_ABI_TAGS(X)                                                       \
  X(RUSM_TAG_SYSTEM, 0x8000000000000000ull)                                    \
  X(RUSM_TAG_EXIT, 0x8000000000000001ull)                                      \
  X(RUSM_TAG_DOWN, 0x8000000000000002ull)                                      \
  X(RUSM_TAG_NOSHED, 0x4000000000000000ull)

/* Sizes and flags shared with rusm/otp.h. */
#define RUSM_ABI_SIZES(X)                                                      \
  X(RUSM_EXIT_PAYLOAD_HDR, 16)                                                 \
  X(RUSM_DOWN_PAYLOAD_HDR, 24)                                                 \
  X(RUSM_DEMONITOR_FLUSH, 1)                                                   \
  X(RUSM_NAME_MAX, 255)

/* Pid layout (node | slot | generation), as rusm/otp.h. */
#define RUSM_ABI_PID_BITS(X)                                                   \
  X(RUSM_PID_NODE_BITS, 12)                                                    \
  X(RUSM_PID_SLOT_BITS, 24)                                                    \
  X(RUSM_PID_GEN_BITS, 28)

#ifndef RUSM_ABI_LISTS_ONLY

#include <stdint.h>

/* Written out rather than generated, so that a reader sees the values. */
enum {
  RUSM_OK = 0,
  RUSM_EINVAL = -1,     /* bad argument */
  RUSM_ENOMEM = -2,     /* out of memory or a configured limit */
  RUSM_ENOPROC = -3,    /* no such process */
  RUSM_ETIMEDOUT = -4,  /* receive: nothing matched in time */
  RUSM_ESHUTDOWN = -5,  /* the runtime is shutting down */
  RUSM_ELIMIT = -6,     /* process table full */
  RUSM_ECONTEXT = -7,   /* not allowed here (e.g. no spawn capability) */
  RUSM_ESYS = -8,       /* an OS call failed on the host */
  RUSM_EEXIST = -9,     /* already exists (a name) */
  RUSM_ENOTFOUND = -10, /* no such name, export or timer */
  RUSM_EBUSY = -11      /* this process already has a name */
};

typedef enum rusm_exit_code {
  RUSM_EXIT_NORMAL = 0,
  RUSM_EXIT_KILLED = 1,       /* result of an untrappable kill */
  RUSM_EXIT_SHUTDOWN = 2,     /* orderly stop */
  RUSM_EXIT_NOPROC = 3,       /* the target did not exist */
  RUSM_EXIT_NOCONNECTION = 4, /* a node was lost (cluster) */
  RUSM_EXIT_TRAP = 5,         /* a guest trapped; detail: the message */
  RUSM_EXIT_CUSTOM = 6,       /* user reason; detail: its bytes */
  RUSM_EXIT_KILL = 7          /* as a signal: the untrappable kill */
} rusm_exit_code;

#define RUSM_TAG_SYSTEM 0x8000000000000000ull /* runtime-owned tags */
#define RUSM_TAG_EXIT 0x8000000000000001ull   /* an exit signal, trapped */
#define RUSM_TAG_DOWN 0x8000000000000002ull   /* a monitor fired */
#define RUSM_TAG_NOSHED 0x4000000000000000ull /* never shed when bounded */

#define RUSM_EXIT_PAYLOAD_HDR 16 /* u64 from | i32 code | u32 len */
#define RUSM_DOWN_PAYLOAD_HDR 24 /* u64 ref | u64 pid | i32 code | u32 len */
#define RUSM_DEMONITOR_FLUSH 1   /* demonitor: drop a queued Down too */
#define RUSM_NAME_MAX 255        /* registered names, in bytes */

#define RUSM_PID_NODE_BITS 12
#define RUSM_PID_SLOT_BITS 24
#define RUSM_PID_GEN_BITS 28

/* Guest-only numbers (no otp.h counterpart). */
#define RUSM_SPAWN_LINK 1u      /* spawn flag: link the child to the caller */
#define RUSM_SPAWN_TRAP_EXIT 2u /* spawn flag: the child traps exits */
#define RUSM_MSG_INFO_SIZE 32   /* bytes receive writes at info */

typedef enum rusm_log_level {
  RUSM_LOG_DEBUG = 0,
  RUSM_LOG_INFO = 1,
  RUSM_LOG_WARN = 2,
  RUSM_LOG_ERROR = 3
} rusm_log_level;

/* The written-out values agree with the lists. */
#define RUSM_ABI__CHECK(name, value)                                           \
  _Static_assert((name) == (value), #name " differs from its ABI list entry");
RUSM_ABI_ERRORS(RUSM_ABI__CHECK)
RUSM_ABI_EXIT_CODES(RUSM_ABI__CHECK)
RUSM_ABI_TAGS(RUSM_ABI__CHECK)
RUSM_ABI_SIZES(RUSM_ABI__CHECK)
RUSM_ABI_PID_BITS(RUSM_ABI__CHECK)
#undef RUSM_ABI__CHECK

#endif /* RUSM_ABI_LISTS_ONLY */
#endif /* RUSM_ABI_H */
