// guest-kind: entries
/*
 * busy: tells the pid given as its argument (if any) that it runs, then
 * spins forever without calling the runtime. Only epoch preemption takes
 * the CPU back from it, and only kill ends it: the fairness scenario runs
 * a few per scheduler next to a latency probe.
 */
#include "protocol.h"
#include "rusm.h"

static volatile uint64_t spins;

RUSM_ENTRY("main", busy_main) {
  rusm_pid_t ready = rusm_arg_pid();
  if (ready)
    rusm_send(ready, GUEST_TAG_READY, NULL, 0);
  for (;;)
    spins++; /* volatile: the loop is not optimised away */
}
