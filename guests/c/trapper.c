// guest-kind: entries
/*
 * trapper: fails on demand, one export per failure, to show that a trap
 * ends only the process that trapped (with reason trap and the trap's
 * message). See protocol.h for the list.
 */
#include "protocol.h"
#include "rusm.h"

/* volatile: keep the compiler from proving the faults and removing them. */
static volatile uint32_t zero = 0;
static volatile uint32_t far_away = 0xfffffff0u;

RUSM_ENTRY("main", trapper_main) {}

RUSM_ENTRY("unreachable", trapper_unreachable) {
  __builtin_trap(); /* the wasm `unreachable` instruction */
}

RUSM_ENTRY("oob", trapper_oob) {
  volatile uint32_t *p = (volatile uint32_t *)(uintptr_t)far_away;
  (void)*p;
}

RUSM_ENTRY("div0", trapper_div0) {
  volatile uint32_t x = 7;
  x = x / zero;
}

/* Recursion on the Wasm stack only (no address-taken locals, so no
 * frames in linear memory): it ends in Wasmtime's stack-overflow trap. The
 * store after the call keeps it from becoming a loop. */
static volatile uint32_t sink;
static volatile uint32_t depth_limit = 0xffffffffu; /* never reached */
__attribute__((noinline)) static uint32_t deep(uint32_t n) {
  if (n >= depth_limit)
    return n;
  uint32_t r = deep(n + 1 + zero);
  sink = r;
  return r + n;
}

RUSM_ENTRY("stack", trapper_stack) { (void)deep(zero); }

RUSM_ENTRY("badptr", trapper_badptr) {
  /* A payload reaching past the end of linear memory. */
  rusm_raw_send((int64_t)rusm_self(), (int64_t)GUEST_TAG_WORK,
                (const void *)(uintptr_t)far_away, 4096);
}

RUSM_ENTRY("grow", trapper_grow) {
  rusm_pid_t to = rusm_arg_pid();
  int32_t r = (int32_t)__builtin_wasm_memory_grow(0, GUEST_GROW_PAGES);
  if (to)
    rusm_send(to, GUEST_TAG_REPORT, &r, sizeof r);
}
