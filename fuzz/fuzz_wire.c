/*
 * fuzz_wire.c — libFuzzer target for the cluster frame codec
 * (src/cluster/wire.c).
 *
 * The input is a byte stream as a peer would send it. Properties checked:
 *  - decoding never reads outside the input and returns 1, 0 or a
 *    RUSM_EWIRE_* code;
 *  - every decoded frame re-encodes to exactly the bytes it came from
 *    (the encoding is canonical), and those decode to an equal frame;
 *  - a PROCS_REPLY's records iterate to its count;
 *  - the reader, fed the same stream in chunks, yields the same frames and
 *    the same final outcome (splitting never changes a result).
 * Run: fuzz_wire -max_total_time=60 corpus/wire (see fuzz/CMakeLists.txt).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/wire.h"

/* Small enough that length edits hit the limit often. */
#define MAX_BODY 4096
#define MAX_FRAMES 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

static bool is_wire_error(int rc) {
  return rc <= RUSM_EWIRE_MAGIC && rc >= RUSM_EWIRE_FIELD;
}

static void check_frame(const rusm__frame *f, const uint8_t *bytes,
                        size_t len) {
  /* Reused across inputs; still reachable at exit, so not a leak. */
  static rusm__wbuf out;
  rusm__wbuf_reset(&out);
  int rc = rusm__wire_encode(&out, f);
  if (rc != 0)
    fprintf(stderr, "re-encoding %s: %s\n", rusm__wire_kind_name(f->kind),
            rusm__wire_strerror(rc));
  CHECK(rc == 0);
  CHECK(out.len == len);
  CHECK(memcmp(out.data, bytes, len) == 0);
  rusm__frame g;
  size_t used = 0;
  CHECK(rusm__wire_decode(out.data, out.len, MAX_BODY, &g, &used) == 1);
  CHECK(used == len);
  CHECK(rusm__wire_frame_equal(f, &g));
  if (f->kind == RUSM__WIRE_PROCS_REPLY) {
    rusm__wire_procs_iter it;
    rusm__wire_proc p;
    uint32_t n = 0;
    rusm__wire_procs_iter_init(&it, &f->procs_reply);
    while (rusm__wire_procs_iter_next(&it, &p)) {
      CHECK(p.pid != 0);
      n++;
    }
    CHECK(n == f->procs_reply.count);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static uint32_t lens[MAX_FRAMES];
  size_t off = 0, count = 0;
  int rc;
  for (;;) {
    rusm__frame f;
    size_t used = 0;
    rc = rusm__wire_decode(data + off, size - off, MAX_BODY, &f, &used);
    if (rc <= 0)
      break;
    CHECK(rc == 1);
    CHECK(used >= RUSM__WIRE_HDR && used <= size - off);
    CHECK(used - RUSM__WIRE_HDR <= MAX_BODY);
    check_frame(&f, data + off, used);
    if (count < MAX_FRAMES)
      lens[count] = (uint32_t)used;
    count++;
    off += used;
  }
  CHECK(rc == 0 || is_wire_error(rc));
  CHECK(rusm__wire_strerror(rc) != NULL);

  /* The reader, fed chunks of sizes taken from the input itself. */
  rusm__wire_reader r;
  rusm__wire_reader_init(&r, MAX_BODY);
  size_t got = 0, roff = 0, pos = 0;
  int rrc = 0;
  while (pos < size && rrc >= 0) {
    size_t chunk = 1 + data[pos] % 97u;
    if (chunk > size - pos)
      chunk = size - pos;
    CHECK(rusm__wire_reader_feed(&r, data + pos, chunk) == 0);
    pos += chunk;
    rusm__frame f;
    while ((rrc = rusm__wire_reader_next(&r, &f)) == 1) {
      CHECK(got < count);
      if (got < MAX_FRAMES) {
        CHECK(roff + lens[got] <= size);
        rusm__frame w;
        size_t used = 0;
        CHECK(rusm__wire_decode(data + roff, lens[got], MAX_BODY, &w, &used) ==
              1);
        CHECK(rusm__wire_frame_equal(&f, &w));
        roff += lens[got];
      }
      got++;
    }
  }
  CHECK(got == count);
  if (rc < 0)
    CHECK(rrc == rc && rusm__wire_reader_finish(&r) == rc);
  else
    CHECK(rusm__wire_reader_finish(&r) ==
          (off < size ? RUSM_EWIRE_TRUNCATED : 0));
  rusm__wire_reader_free(&r);
  return 0;
}
