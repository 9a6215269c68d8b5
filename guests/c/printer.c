/*
 * printer: a plain WASI command (main, run through `_start`) that writes
 * through wasi-libc's stdio: two lines to stdout and one to stderr. The
 * host routes both to the runtime's log, tagged with the pid; tests check
 * what arrives there.
 */
#include <stdio.h>

int main(void) {
  printf("printer: line one\n");
  printf("printer: %d + %d = %d\n", 2, 3, 2 + 3);
  fprintf(stderr, "printer: to stderr\n");
  return 0;
}
