// guest-kind: entries
/*
 * spawner: the module-storm guest. "main" (arg: guest_storm_arg) spawns n
 * processes of its own module's "child" export, each given the parent's
 * pid; a child sends the parent one GUEST_TAG_WORK and returns. The
 * parent spawns `batch` at a time and takes what has arrived between
 * batches (so its mailbox stays short), then waits for the rest and
 * reports a guest_storm_report to report_to.
 */
#include "protocol.h"
#include "rusm.h"

RUSM_ENTRY("child", spawner_child) {
  rusm_pid_t parent = rusm_arg_pid();
  if (parent)
    rusm_send(parent, GUEST_TAG_WORK, NULL, 0);
}

RUSM_ENTRY("main", spawner_main) {
  guest_storm_arg a;
  if (rusm_arg(&a, sizeof a) != (int32_t)sizeof a)
    rusm_exit_self_str("spawner: bad argument");
  uint32_t batch = a.batch ? a.batch : 512;
  rusm_pid_t self = rusm_self();
  rusm_filter work = rusm_filter_tag(GUEST_TAG_WORK);
  guest_storm_report rep = {0};
  rep.t_start = rusm_now_ns();
  while (rep.spawned < a.n && rep.err == 0) {
    uint64_t end = rep.spawned + batch;
    if (end > a.n)
      end = a.n;
    while (rep.spawned < end) {
      int64_t v = rusm_spawn("child", &self, sizeof self, 0);
      if (rusm_is_err(v)) {
        rep.err = (int32_t)v;
        break;
      }
      rep.spawned++;
    }
    while (rusm_receive(&work, 0, NULL, 0, NULL) >= 0)
      rep.got++;
  }
  while (rep.got < rep.spawned) {
    if (rusm_receive(&work, -1, NULL, 0, NULL) < 0)
      break;
    rep.got++;
  }
  rep.t_end = rusm_now_ns();
  rusm_send(a.report_to, GUEST_TAG_REPORT, &rep, sizeof rep);
}
