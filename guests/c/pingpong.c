// guest-kind: entries
/*
 * pingpong: both sides of the wasm-ping-pong scenario.
 *
 * "ping" (arg: guest_ping_arg) bounces one message off pong n times,
 * timing each round trip with now_ns, then reports to report_to (a
 * guest_ping_report, followed by the latencies when asked) and stops pong.
 * With arg.pong == 0 it spawns its own "pong", linked.
 *
 * "pong" replies GUEST_TAG_PONG to every GUEST_TAG_PING until
 * GUEST_TAG_STOP.
 */
#include <stdlib.h>

#include "protocol.h"
#include "rusm.h"

RUSM_ENTRY("pong", pong_main) {
  for (;;) {
    rusm_msg_info info;
    int32_t n = rusm_receive(NULL, -1, NULL, 0, &info);
    if (n < 0)
      continue;
    if (info.tag == GUEST_TAG_STOP)
      return;
    if (info.tag == GUEST_TAG_PING)
      rusm_send(info.from, GUEST_TAG_PONG, NULL, 0);
  }
}

RUSM_ENTRY("ping", ping_main) {
  guest_ping_arg a;
  if (rusm_arg(&a, sizeof a) != (int32_t)sizeof a)
    rusm_exit_self_str("ping: bad argument");
  guest_ping_report rep = {0};
  /* Report header and latencies in one buffer: one message at the end. */
  size_t lat_bytes = a.want_latencies ? (size_t)a.n * sizeof(int64_t) : 0;
  unsigned char *out = malloc(sizeof rep + lat_bytes);
  if (!out)
    rusm_exit_self_str("ping: out of memory");
  int64_t *lat = (int64_t *)(void *)(out + sizeof rep);

  rusm_pid_t pong = a.pong;
  if (!pong) {
    int64_t v = rusm_spawn("pong", NULL, 0, RUSM_SPAWN_LINK);
    if (rusm_is_err(v))
      rep.err = (int32_t)v;
    else
      pong = (rusm_pid_t)v;
  }
  rusm_filter reply = rusm_filter_tag(GUEST_TAG_PONG);
  rep.t_start = rusm_now_ns();
  int64_t sent = rep.t_start;
  for (uint64_t i = 0; rep.err == 0 && i < a.n; i++) {
    int32_t rc = rusm_send(pong, GUEST_TAG_PING, NULL, 0);
    if (rc == 0)
      rc = rusm_receive(&reply, -1, NULL, 0, NULL);
    if (rc < 0) {
      rep.err = rc;
      break;
    }
    int64_t now = rusm_now_ns();
    if (lat_bytes)
      lat[i] = now - sent;
    sent = now;
    rep.done++;
  }
  rep.t_end = sent;
  memcpy(out, &rep, sizeof rep);
  rusm_send(a.report_to, GUEST_TAG_REPORT, out,
            sizeof rep + (lat_bytes ? rep.done * sizeof(int64_t) : 0));
  if (pong)
    rusm_send(pong, GUEST_TAG_STOP, NULL, 0);
  free(out);
}
