// guest-kind: entries
/*
 * echo: replies to every user message with the same tag and payload, to
 * its sender. GUEST_TAG_STOP ends it normally; system messages (Exit,
 * Down) and messages from outside any process are ignored. The fairness
 * scenario's probe pings it; tests use it as the simplest process.
 */
#include "protocol.h"
#include "rusm.h"

/* Static, not on the stack: the shadow stack is small, and pages of it
 * never touched cost nothing. */
static unsigned char buf[64 * 1024];

RUSM_ENTRY("main", echo_main) {
  rusm_pid_t ready = rusm_arg_pid();
  if (ready)
    rusm_send(ready, GUEST_TAG_READY, NULL, 0);
  for (;;) {
    rusm_msg_info info;
    int32_t n = rusm_receive(NULL, -1, buf, sizeof buf, &info);
    if (n < 0)
      continue;
    if (info.tag == GUEST_TAG_STOP)
      return;
    if ((info.tag & RUSM_TAG_SYSTEM) || info.from == RUSM_PID_NONE)
      continue;
    rusm_send(info.from, info.tag, buf, (size_t)n);
  }
}
