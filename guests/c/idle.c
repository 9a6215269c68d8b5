// guest-kind: entries
/*
 * idle: tells the pid given as its argument (if any) that it runs, then
 * parks in receive until GUEST_TAG_STOP. What idle-memory measures: a
 * Wasm process that holds nothing but its instance and a parked call.
 */
#include "protocol.h"
#include "rusm.h"

RUSM_ENTRY("main", idle_main) {
  rusm_pid_t ready = rusm_arg_pid();
  if (ready)
    rusm_send(ready, GUEST_TAG_READY, NULL, 0);
  rusm_filter stop = rusm_filter_tag(GUEST_TAG_STOP);
  rusm_receive(&stop, -1, NULL, 0, NULL);
}
