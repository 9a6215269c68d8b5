/*
 * fuzz_greg.c — libFuzzer target for the global registry's message handling
 * (src/cluster/greg.c), the bytes an authenticated peer sends in GREG
 * frames.
 *
 * The input is split into messages at each 0xA5 0x5A pair; each goes to a
 * registry that knows two members ("peer", id 2 and "other", id 3) as if
 * "peer" sent it. Signatures verify when their first byte is 0x5A, so the
 * fuzzer reaches the states behind the signature check. Properties: no
 * crash, leak or sanitizer report; a rejected message returns a negative
 * code; whereis answers with a pid of a member's node or none; the
 * registry frees cleanly whatever it holds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/greg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int sign(void *ctx, const uint8_t *msg, size_t n, uint8_t *sig,
                size_t *sig_len) {
  (void)ctx;
  (void)msg;
  (void)n;
  sig[0] = 0x5a;
  *sig_len = 1;
  return 0;
}

static bool verify(void *ctx, const char *host, const uint8_t *proof,
                   size_t plen, const uint8_t *msg, size_t n,
                   const uint8_t *sig, size_t slen) {
  (void)ctx;
  (void)host;
  (void)proof;
  (void)plen;
  (void)msg;
  (void)n;
  return slen >= 1 && sig[0] == 0x5a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint8_t cert[] = "cert";
  rusm__greg_config c = {.node_name = "self",
                         .node_id = 1,
                         .boot_id = 1,
                         .proof = cert,
                         .proof_len = sizeof cert,
                         .sign = sign,
                         .verify = verify,
                         .max_tombstones = 16,
                         .max_records = 64,
                         .observe = true};
  rusm__greg *g = NULL;
  if (rusm__greg_new(&c, &g) != 0)
    return 0;
  rusm__greg_member_up(g, "peer", 2, 1);
  rusm__greg_member_up(g, "other", 3, 1);
  rusm__greg_register(g, "mine", ((uint64_t)1 << 52) | (1u << 28) | 1);
  size_t start = 0;
  for (size_t i = 0; i + 1 <= size; i++) {
    bool cut = i + 1 < size && data[i] == 0xa5 && data[i + 1] == 0x5a;
    if (!cut && i + 1 != size)
      continue;
    size_t end = cut ? i : size;
    const char *from = (end > start && (data[start] & 1)) ? "other" : "peer";
    int rc = rusm__greg_handle_message(g, from, data + start, end - start);
    if (rc > 0) {
      fprintf(stderr, "handle_message returned %d\n", rc);
      abort();
    }
    start = end + 2;
    i = end + 1;
  }
  rusm_pid_t pid = rusm__greg_whereis(g, "mine");
  if (pid && (pid >> 52) > 3)
    abort();
  rusm__greg_transmit t;
  while (rusm__greg_poll_transmit(g, &t))
    rusm__greg_transmit_free(&t);
  rusm__greg_event ev;
  while (rusm__greg_poll_event(g, &ev))
    ;
  rusm__greg_member_down(g, "peer", 1);
  rusm__greg_free(g);
  return 0;
}
