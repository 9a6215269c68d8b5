/*
 * args.c — parsing `rusm bench` arguments (kept in the library so the unit
 * tests reach it without the CLI).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_int.h"

#define MAX_N (UINT64_C(1) << 32)
#define MAX_SCHEDULERS 1024

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return RUSM_EINVAL;
}

/* A whole decimal number in [lo, hi]: digits only, no sign or spaces. */
static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
  if (!s || !*s)
    return RUSM_EINVAL;
  for (const char *p = s; *p; p++)
    if (*p < '0' || *p > '9')
      return RUSM_EINVAL;
  errno = 0;
  unsigned long long v = strtoull(s, NULL, 10);
  if (errno || v < lo || v > hi)
    return RUSM_EINVAL;
  *out = v;
  return 0;
}

/* Matches "--name value" and "--name=value"; *value is NULL when the
 * option has no value. Returns true when argv[*i] is this option. */
static bool take_value(int argc, char *const argv[], int *i, const char *name,
                       const char **value) {
  const char *a = argv[*i];
  size_t len = strlen(name);
  if (strncmp(a, name, len) != 0)
    return false;
  if (a[len] == '=') {
    *value = a + len + 1;
    return true;
  }
  if (a[len] != '\0')
    return false;
  *value = *i + 1 < argc ? argv[++*i] : NULL;
  return true;
}

int rusm_bench_parse_args(int argc, char *const argv[], rusm_bench_args *out,
                          char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (err && errlen)
    err[0] = '\0';
  const char *what = NULL;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = NULL;
    uint64_t num;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      out->verb = RUSM_BENCH_VERB_HELP;
      return 0;
    } else if (strcmp(a, "--json") == 0) {
      out->json = true;
    } else if (strcmp(a, "--metrics") == 0) {
      out->metrics = true;
    } else if (strcmp(a, "--progress") == 0) {
      out->progress = true;
    } else if (take_value(argc, argv, &i, "--n", &v)) {
      if (parse_u64(v, 1, MAX_N, &num) < 0)
        return fail(err, errlen, "--n wants a whole number from 1 to %llu",
                    (unsigned long long)MAX_N);
      out->n = num;
    } else if (take_value(argc, argv, &i, "--repeat", &v)) {
      if (parse_u64(v, 1, RUSM_BENCH_MAX_REPEAT, &num) < 0)
        return fail(err, errlen, "--repeat wants a whole number from 1 to %d",
                    RUSM_BENCH_MAX_REPEAT);
      out->repeat = (uint32_t)num;
    } else if (take_value(argc, argv, &i, "--schedulers", &v)) {
      if (parse_u64(v, 1, MAX_SCHEDULERS, &num) < 0)
        return fail(err, errlen,
                    "--schedulers wants a whole number from 1 to %d",
                    MAX_SCHEDULERS);
      out->schedulers = (uint32_t)num;
    } else if (a[0] == '-') {
      return fail(err, errlen, "unknown option '%s'", a);
    } else if (what) {
      return fail(err, errlen, "one scenario at a time ('%s' and '%s')", what,
                  a);
    } else {
      what = a;
    }
  }
  if (!what)
    return fail(err, errlen,
                "missing scenario (try 'rusm bench list' or 'all')");
  if (strcmp(what, "all") == 0) {
    out->verb = RUSM_BENCH_VERB_ALL;
  } else if (strcmp(what, "list") == 0) {
    out->verb = RUSM_BENCH_VERB_LIST;
  } else if (strcmp(what, "help") == 0) {
    out->verb = RUSM_BENCH_VERB_HELP;
  } else {
    out->verb = RUSM_BENCH_VERB_RUN;
    out->scenario = rusm_bench_find(what);
    if (!out->scenario)
      return fail(err, errlen, "unknown scenario '%s' (try 'rusm bench list')",
                  what);
    if (out->n && out->n < out->scenario->min_n)
      return fail(err, errlen, "%s needs --n of at least %llu", what,
                  (unsigned long long)out->scenario->min_n);
  }
  return 0;
}
