/*
 * wasm_common.c — what the Wasm scenarios share (module-storm,
 * wasm-ping-pong, fairness, wasm-idle-memory): finding the guests built by
 * scripts/guests-build, and making a Wasm host with a guest loaded.
 *
 * Built only with RUSM_WASM (RUSM_HAVE_WASM): without it the Wasm
 * scenarios do not exist.
 */
#include "bench/bench_int.h"

#ifdef RUSM_HAVE_WASM

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* build/guests/c/<name>.wasm: under RUSM_GUESTS_DIR when set, else under
 * the source tree this file was compiled from (the guests are build
 * products of the same checkout). */
int rusm__bench_guest_path(const char *name, char *buf, size_t len) {
  const char *dir = getenv("RUSM_GUESTS_DIR");
  int n;
  if (dir && *dir) {
    n = snprintf(buf, len, "%s/c/%s.wasm", dir, name);
  } else {
    char root[1024];
    snprintf(root, sizeof root, "%s", __FILE__);
    char *p = strstr(root, "/src/bench/");
    if (p)
      *p = '\0';
    else
      snprintf(root, sizeof root, ".");
    n = snprintf(buf, len, "%s/build/guests/c/%s.wasm", root, name);
  }
  return n < 0 || (size_t)n >= len ? RUSM_EINVAL : 0;
}

int rusm__bench_wasm_open(rusm_rt *rt, const rusm_wasm_opts *opts,
                          const char *guest, rusm_wasm **w,
                          rusm_wasm_module **m) {
  char path[PATH_MAX];
  int rc = rusm__bench_guest_path(guest, path, sizeof path);
  if (rc < 0)
    return rc;
  struct stat st;
  if (stat(path, &st) != 0) {
    fprintf(stderr,
            "bench: no guest %s: build the guests first "
            "(scripts/guests-build), or set RUSM_GUESTS_DIR\n",
            path);
    return RUSM_ENOTFOUND;
  }
  *w = NULL;
  *m = NULL;
  rc = rusm_wasm_create(rt, opts, w);
  if (rc < 0) {
    fprintf(stderr, "bench: rusm_wasm_create: %s\n", rusm_strerror(rc));
    return rc;
  }
  char err[256] = "";
  rc = rusm_wasm_load_file(*w, NULL, path, m, err, sizeof err);
  if (rc < 0) {
    fprintf(stderr, "bench: loading %s: %s\n", path, err);
    rusm_wasm_destroy(*w);
    *w = NULL;
    return rc;
  }
  return 0;
}

void rusm__bench_wasm_close(rusm_wasm *w, rusm_wasm_module *m) {
  rusm_wasm_module_release(m);
  rusm_wasm_destroy(w);
}

int rusm__bench_wasm_spawn(rusm_wasm_module *m, const char *entry,
                           const void *arg, size_t len, uint32_t caps,
                           rusm_pid_t *out) {
  rusm_wasm_spawn_opts o;
  rusm_wasm_spawn_opts_init(&o);
  o.entry = entry;
  o.arg = arg;
  o.arg_len = len;
  o.caps = caps;
  return rusm_wasm_spawn(m, &o, out);
}

int rusm__bench_take(rusm__bench_waiter *w, uint64_t tag, rusm_msg **out) {
  rusm_filter f = rusm_filter_tag(tag);
  int rc = rusm_receive(w->self, &f, RUSM_BENCH_WAIT_MS, out);
  return rc == 0 ? 0 : rc;
}

#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int rusm__bench_no_wasm;
#endif /* RUSM_HAVE_WASM */
