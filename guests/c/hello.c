/* The smallest C guest: a WASI p1 command that writes one line to stdout
 * and returns 0. Proves the guest toolchain (scripts/guests-build) and the
 * host's WASI wiring (wasmtime/smoke.c). */
#include <stdio.h>

int main(void) {
  printf("hello from a C guest\n");
  return 0;
}
