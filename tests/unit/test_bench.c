// ctest-labels: concurrent
/*
 * test_bench.c — the benchmark harness: statistics, argument parsing, the
 * JSON shape of results and metrics, and a tiny real run of every scenario
 * checked against the runtime's own counters. No timing assertions.
 */
#include <ctype.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rusm/bench.h"
#include "rusm/metrics.h"

/* ------------------------------------------------------------------ */
/* A small strict JSON checker (RFC 8259 syntax, no semantics)          */
/* ------------------------------------------------------------------ */

static const char *json_value(const char *p, int depth);

static const char *json_ws(const char *p) {
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
    p++;
  return p;
}

static const char *json_string(const char *p) {
  if (*p++ != '"')
    return NULL;
  while (*p && *p != '"') {
    if ((unsigned char)*p < 0x20)
      return NULL;
    if (*p == '\\') {
      p++;
      if (*p == 'u') {
        for (int i = 1; i <= 4; i++)
          if (!isxdigit((unsigned char)p[i]))
            return NULL;
        p += 4;
      } else if (!strchr("\"\\/bfnrt", *p) || !*p) {
        return NULL;
      }
    }
    p++;
  }
  return *p == '"' ? p + 1 : NULL;
}

static const char *json_number(const char *p) {
  if (*p == '-')
    p++;
  if (*p == '0')
    p++;
  else if (isdigit((unsigned char)*p))
    while (isdigit((unsigned char)*p))
      p++;
  else
    return NULL;
  if (*p == '.') {
    p++;
    if (!isdigit((unsigned char)*p))
      return NULL;
    while (isdigit((unsigned char)*p))
      p++;
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-')
      p++;
    if (!isdigit((unsigned char)*p))
      return NULL;
    while (isdigit((unsigned char)*p))
      p++;
  }
  return p;
}

static const char *json_value(const char *p, int depth) {
  if (depth > 32)
    return NULL;
  p = json_ws(p);
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    bool object = *p == '{';
    p = json_ws(p + 1);
    if (*p == close)
      return p + 1;
    for (;;) {
      if (object) {
        p = json_string(json_ws(p));
        if (!p)
          return NULL;
        p = json_ws(p);
        if (*p++ != ':')
          return NULL;
      }
      p = json_value(p, depth + 1);
      if (!p)
        return NULL;
      p = json_ws(p);
      if (*p == ',') {
        p++;
        continue;
      }
      return *p == close ? p + 1 : NULL;
    }
  }
  if (*p == '"')
    return json_string(p);
  if (strncmp(p, "true", 4) == 0 || strncmp(p, "null", 4) == 0)
    return p + 4;
  if (strncmp(p, "false", 5) == 0)
    return p + 5;
  return json_number(p);
}

/* True when s is exactly one JSON object. */
static bool json_is_object(const char *s) {
  const char *p = json_ws(s);
  if (*p != '{')
    return false;
  p = json_value(p, 0);
  return p && *json_ws(p) == '\0';
}

static bool has_key(const char *json, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  return strstr(json, pat) != NULL;
}

static void test_json_checker(void **state) {
  assert_true(json_is_object("{\"a\":[1,2.5,-3e-2,{\"b\":null}],\"c\":\"x\"}"));
  assert_true(json_is_object("{}"));
  assert_false(json_is_object("{\"a\":nan}"));
  assert_false(json_is_object("{\"a\":1,}"));
  assert_false(json_is_object("{\"a\":1} x"));
  assert_false(json_is_object("[1]"));
}

/* ------------------------------------------------------------------ */
/* Statistics                                                          */
/* ------------------------------------------------------------------ */

static void test_median(void **state) {
  double odd[] = {5, 1, 3};
  assert_true(rusm_bench_median(odd, 3) == 3);
  double even[] = {4, 1, 3, 2};
  assert_true(rusm_bench_median(even, 4) == 2.5);
  double one[] = {7};
  assert_true(rusm_bench_median(one, 1) == 7);
  assert_true(rusm_bench_median(NULL, 0) == 0);
}

static void test_percentile(void **state) {
  enum { N = 1000 };
  int64_t *v = malloc(N * sizeof *v);
  assert_non_null(v);
  /* 1..1000 in a scrambled order (a permutation: 7 is prime to 1000). */
  for (int i = 0; i < N; i++)
    v[i] = (int64_t)((i * 7 + 3) % N) + 1;
  assert_int_equal(rusm_bench_percentile(v, N, 50), 500);
  assert_int_equal(rusm_bench_percentile(v, N, 99), 990);
  assert_int_equal(rusm_bench_percentile(v, N, 100), 1000);
  assert_int_equal(rusm_bench_percentile(v, N, 0.01), 1);
  /* Descending input, and many equal values. */
  for (int i = 0; i < N; i++)
    v[i] = N - i;
  assert_int_equal(rusm_bench_percentile(v, N, 99), 990);
  for (int i = 0; i < N; i++)
    v[i] = i < 900 ? 5 : 9;
  assert_int_equal(rusm_bench_percentile(v, N, 50), 5);
  assert_int_equal(rusm_bench_percentile(v, N, 90), 5);
  assert_int_equal(rusm_bench_percentile(v, N, 91), 9);
  free(v);

  int64_t one[] = {42};
  assert_int_equal(rusm_bench_percentile(one, 1, 50), 42);
  assert_int_equal(rusm_bench_percentile(one, 1, 99), 42);
  int64_t two[] = {9, 1};
  assert_int_equal(rusm_bench_percentile(two, 2, 50), 1);
  assert_int_equal(rusm_bench_percentile(two, 2, 99), 9);
  assert_int_equal(rusm_bench_percentile(NULL, 0, 50), 0);
}

static void test_proc_readers(void **state) {
  assert_true(rusm_bench_rss_bytes() > 0);
  assert_true(rusm_bench_map_count() > 0);
  assert_true(rusm_bench_cores() >= 1);
}

/* ------------------------------------------------------------------ */
/* Registry and arguments                                              */
/* ------------------------------------------------------------------ */

static void test_registry(void **state) {
  const char *want[] = {
      "spawn-storm",          "ping-pong", "fan-in",        "idle-memory",
      "idle-memory-stackful", "cascade",   "fault-recovery"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    assert_non_null(rusm_bench_find(want[i]));
  assert_null(rusm_bench_find("nope"));
  assert_null(rusm_bench_find(NULL));
  assert_null(rusm_bench_at(rusm_bench_count()));
  for (size_t i = 0; i < rusm_bench_count(); i++) {
    const rusm_bench_scenario *s = rusm_bench_at(i);
    assert_non_null(s->run);
    assert_true(s->default_n >= s->min_n && s->min_n >= 1);
    assert_true((s->baseline == NULL) == (s->baseline_summary == NULL));
    assert_ptr_equal(rusm_bench_find(s->name), s);
  }
}

static int parse(rusm_bench_args *a, char *err, ...) {
  char *argv[16];
  int argc = 0;
  va_list ap;
  va_start(ap, err);
  for (char *w; (w = va_arg(ap, char *)) && argc < 16;)
    argv[argc++] = w;
  va_end(ap);
  return rusm_bench_parse_args(argc, argv, a, err, 256);
}

static void test_parse_args(void **state) {
  rusm_bench_args a;
  char err[256];

  assert_int_equal(parse(&a, err, "ping-pong", "--n", "1000", "--json",
                         "--repeat", "3", "--schedulers", "2", NULL),
                   0);
  assert_int_equal(a.verb, RUSM_BENCH_VERB_RUN);
  assert_ptr_equal(a.scenario, rusm_bench_find("ping-pong"));
  assert_int_equal(a.n, 1000);
  assert_int_equal(a.repeat, 3);
  assert_int_equal(a.schedulers, 2);
  assert_true(a.json);
  assert_false(a.metrics);

  /* --opt=value, options before the scenario, defaults left at 0. */
  assert_int_equal(parse(&a, err, "--n=77", "--metrics", "spawn-storm", NULL),
                   0);
  assert_int_equal(a.n, 77);
  assert_int_equal(a.repeat, 0);
  assert_true(a.metrics);

  assert_int_equal(parse(&a, err, "all", NULL), 0);
  assert_int_equal(a.verb, RUSM_BENCH_VERB_ALL);
  assert_int_equal(parse(&a, err, "list", NULL), 0);
  assert_int_equal(a.verb, RUSM_BENCH_VERB_LIST);
  assert_int_equal(parse(&a, err, "nope", "--help", NULL), 0);
  assert_int_equal(a.verb, RUSM_BENCH_VERB_HELP);

  assert_int_equal(parse(&a, err, "nope", NULL), RUSM_EINVAL);
  assert_non_null(strstr(err, "unknown scenario 'nope'"));
  assert_int_equal(parse(&a, err, NULL), RUSM_EINVAL);
  assert_non_null(strstr(err, "missing scenario"));
  assert_int_equal(parse(&a, err, "ping-pong", "fan-in", NULL), RUSM_EINVAL);
  assert_int_equal(parse(&a, err, "ping-pong", "--bogus", NULL), RUSM_EINVAL);
  assert_non_null(strstr(err, "--bogus"));
  assert_int_equal(parse(&a, err, "ping-pong", "--n", NULL), RUSM_EINVAL);
  assert_int_equal(parse(&a, err, "ping-pong", "--n", "0", NULL), RUSM_EINVAL);
  assert_int_equal(parse(&a, err, "ping-pong", "--n", "-5", NULL), RUSM_EINVAL);
  assert_int_equal(parse(&a, err, "ping-pong", "--n", "12x", NULL),
                   RUSM_EINVAL);
  assert_int_equal(
      parse(&a, err, "ping-pong", "--n", "99999999999999999999999", NULL),
      RUSM_EINVAL);
  assert_int_equal(parse(&a, err, "ping-pong", "--repeat", "0", NULL),
                   RUSM_EINVAL);
  assert_int_equal(parse(&a, err, "ping-pong", "--schedulers", "0", NULL),
                   RUSM_EINVAL);
  /* Below the scenario's minimum (16 senders need 16 messages). */
  assert_int_equal(parse(&a, err, "fan-in", "--n", "5", NULL), RUSM_EINVAL);
  assert_non_null(strstr(err, "at least 16"));
}

/* ------------------------------------------------------------------ */
/* Output shape                                                        */
/* ------------------------------------------------------------------ */

static void test_json_shape_synthetic(void **state) {
  rusm_bench_sample runs[3] = {
      {.ops = 100, .ns = 2000, .p50_us = 1.5, .p99_us = 4},
      {.ops = 100, .ns = 1000, .p50_us = 1.0, .p99_us = 3},
      {.ops = 100, .ns = 3000, .p50_us = 2.0, .p99_us = 5},
  };
  rusm_bench_sample bruns[3] = {{.ops = 100, .ns = 4000},
                                {.ops = 100, .ns = 4000},
                                {.ops = 100, .ns = 4000}};
  rusm_bench_result r = {
      .scenario = rusm_bench_find("ping-pong"),
      .n = 100,
      .ops = 100,
      .repeat = 3,
      .schedulers = 2,
      .seconds = 2e-6,
      .ops_per_sec = 5e7,
      .has_baseline = true,
      .baseline_seconds = 4e-6,
      .baseline_ops_per_sec = 2.5e7,
      .ratio = 2,
      .has_latency = true,
      .p50_us = 1.5,
      .p99_us = 4,
      .baseline_p50_us = NAN, /* a NaN must not leak into JSON */
      .runs = runs,
      .baseline_runs = bruns,
  };
  char buf[4096];
  int len = rusm_bench_to_json(&r, NULL, buf, sizeof buf);
  assert_true(len > 0 && (size_t)len < sizeof buf);
  assert_int_equal(strlen(buf), (size_t)len);
  assert_true(json_is_object(buf));
  assert_null(strchr(buf, '\n'));
  const char *keys[] = {"scenario", "ops",    "seconds", "ops_per_sec",
                        "runs",     "p50_us", "p99_us",  "baseline_ops_per_sec",
                        "ratio"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    assert_true(has_key(buf, keys[i]));
  assert_non_null(strstr(buf, "\"scenario\":\"ping-pong\""));
  assert_false(has_key(buf, "bytes_per_process"));

  /* Truncation: same length reported, output cut and terminated. */
  char small[16];
  assert_int_equal(rusm_bench_to_json(&r, NULL, small, sizeof small), len);
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_int_equal(rusm_bench_to_json(&r, NULL, NULL, 0), len);

  char text[2048];
  assert_true(rusm_bench_to_text(&r, text, sizeof text) > 0);
  assert_non_null(strstr(text, "ping-pong"));
  assert_non_null(strstr(text, "ratio"));
}

static void test_metrics_format(void **state) {
  rusm_metrics m;
  memset(&m, 0, sizeof m);
  m.spawned = 10;
  m.exited = 7;
  m.exited_by[RUSM_EXIT_NORMAL] = 6;
  m.exited_by[RUSM_EXIT_KILLED] = 1;
  m.live = 3;
  m.schedulers = 2;
  m.sched[0].utilisation = 0.5;
  m.sched[1].utilisation = NAN;
  char buf[4096];
  int len = rusm_metrics_to_json(&m, buf, sizeof buf);
  assert_true(len > 0 && (size_t)len < sizeof buf);
  assert_true(json_is_object(buf));
  assert_non_null(strstr(buf, "\"spawned\":10"));
  assert_non_null(strstr(buf, "\"killed\":1"));
  assert_int_equal(rusm_metrics_to_json(&m, NULL, 0), len);
  char small[8];
  assert_int_equal(rusm_metrics_to_json(&m, small, sizeof small), len);
  assert_int_equal(strlen(small), sizeof small - 1);

  len = rusm_metrics_to_text(&m, buf, sizeof buf);
  assert_true(len > 0 && (size_t)len < sizeof buf);
  assert_non_null(strstr(buf, "spawned 10"));
  assert_non_null(strstr(buf, "killed 1"));

  /* A scheduler count past the array is clamped, not overrun. */
  m.schedulers = 1000;
  len = rusm_metrics_to_json(&m, NULL, 0);
  char *big = malloc((size_t)len + 1);
  assert_non_null(big);
  rusm_metrics_to_json(&m, big, (size_t)len + 1);
  assert_true(json_is_object(big));
  free(big);
}

/* ------------------------------------------------------------------ */
/* Tiny real runs                                                      */
/* ------------------------------------------------------------------ */

typedef struct seen {
  uint32_t calls;
  bool baseline_each_time;
} seen;

static void count_runs(void *arg, uint32_t index, const rusm_bench_sample *r,
                       const rusm_bench_sample *b) {
  seen *s = arg;
  assert_int_equal(index, s->calls);
  s->calls++;
  if (!b)
    s->baseline_each_time = false;
}

/* Runs s with n, two measured runs and no warm-up; checks the figures
 * describe real work and returns the runtime's counters of the last run. */
static void tiny_run(const char *name, uint64_t n, rusm_bench_result *res,
                     rusm_metrics *m) {
  const rusm_bench_scenario *s = rusm_bench_find(name);
  assert_non_null(s);
  seen calls = {0, true};
  rusm_bench_opts o;
  rusm_bench_opts_init(&o);
  o.n = n;
  o.repeat = 2;
  o.no_warmup = true;
  o.metrics = m;
  o.on_run = count_runs;
  o.on_run_arg = &calls;
  assert_int_equal(rusm_bench_run(s, &o, res), 0);
  assert_int_equal(calls.calls, 2);
  assert_int_equal(calls.baseline_each_time, s->baseline != NULL);
  assert_ptr_equal(res->scenario, s);
  assert_int_equal(res->repeat, 2);
  assert_true(res->seconds > 0 && res->ops_per_sec > 0);
  for (uint32_t i = 0; i < 2; i++) {
    assert_int_equal(res->runs[i].ops, res->ops);
    assert_true(res->runs[i].ns > 0);
    if (s->baseline) {
      assert_int_equal(res->baseline_runs[i].ops, res->ops);
      assert_true(res->baseline_runs[i].ns > 0);
    }
  }
  assert_int_equal(res->has_baseline, s->baseline != NULL);
  if (s->baseline)
    assert_true(res->baseline_ops_per_sec > 0 && res->ratio > 0);

  char *json = malloc(1 << 16);
  assert_non_null(json);
  int len = rusm_bench_to_json(res, m, json, 1 << 16);
  assert_true(len > 0 && len < (1 << 16));
  assert_true(json_is_object(json));
  assert_true(has_key(json, "metrics"));
  free(json);
}

static void test_run_spawn_storm(void **state) {
  rusm_bench_result r;
  rusm_metrics m;
  tiny_run("spawn-storm", 3000, &r, &m);
  assert_int_equal(r.ops, 3000);
  assert_true(m.spawned >= 3001); /* the parent and its children */
  assert_true(m.delivered >= 3000);
  rusm_bench_result_free(&r);
}

static void test_run_ping_pong(void **state) {
  rusm_bench_result r;
  rusm_metrics m;
  tiny_run("ping-pong", 2000, &r, &m);
  assert_int_equal(r.ops, 2000);
  assert_true(m.delivered >= 4000); /* a ping and a pong per round trip */
  assert_true(r.has_latency);
  assert_true(r.p50_us > 0 && r.p99_us >= r.p50_us);
  assert_true(r.baseline_p50_us > 0 && r.baseline_p99_us >= r.baseline_p50_us);
  rusm_bench_result_free(&r);
}

static void test_run_fan_in(void **state) {
  rusm_bench_result r;
  rusm_metrics m;
  tiny_run("fan-in", 16 * 500 + 7, &r, &m);
  assert_int_equal(r.ops, 16 * 500); /* N rounded down to 16 senders */
  assert_true(m.spawned >= 17);
  assert_true(m.delivered >= 16 * 500);
  rusm_bench_result_free(&r);
}

static void test_run_idle_memory(void **state) {
  rusm_bench_result r;
  rusm_metrics m;
  tiny_run("idle-memory", 5000, &r, &m);
  assert_int_equal(r.ops, 5000);
  assert_true(m.spawned >= 5000);
  assert_true(r.has_memory && r.bytes_per_process > 0);
  assert_true(r.mappings > 0);
  rusm_bench_result_free(&r);
}

static void test_run_idle_memory_stackful(void **state) {
  rusm_bench_result r;
  rusm_metrics m;
  tiny_run("idle-memory-stackful", 300, &r, &m);
  assert_int_equal(r.ops, 300);
  assert_true(m.spawned >= 300);
  assert_true(r.bytes_per_process > 0);
  /* Each parked stackful process holds its own stack mapping at least. */
  assert_true(r.mappings > 300);
  rusm_bench_result_free(&r);
}

static void test_run_cascade(void **state) {
  rusm_bench_result r;
  rusm_metrics m;
  tiny_run("cascade", 3000, &r, &m);
  assert_int_equal(r.ops, 3000);
  assert_true(m.spawned >= 3000);
  /* The whole tree went down through the kill and its links. */
  assert_true(m.exited_by[RUSM_EXIT_KILLED] >= 3000);
  assert_int_equal(m.live, 0); /* nothing left behind */
  rusm_bench_result_free(&r);
}

static void test_run_fault_recovery(void **state) {
  rusm_bench_result r;
  rusm_metrics m;
  tiny_run("fault-recovery", 300, &r, &m);
  assert_int_equal(r.ops, 300);
  /* Every restart followed a crash with the child's custom reason, and
   * each replacement is a new process: the first child plus 300. */
  assert_true(m.exited_by[RUSM_EXIT_CUSTOM] >= 300);
  assert_true(m.spawned >= 301);
  assert_true(r.has_latency);
  assert_true(r.p50_us > 0 && r.p99_us >= r.p50_us);
  assert_true(r.baseline_p50_us > 0 && r.baseline_p99_us >= r.baseline_p50_us);
  rusm_bench_result_free(&r);
}

static void test_run_rejects_bad_opts(void **state) {
  rusm_bench_opts o;
  rusm_bench_opts_init(&o);
  rusm_bench_result r;
  o.n = 3; /* fan-in needs 16 */
  assert_int_equal(rusm_bench_run(rusm_bench_find("fan-in"), &o, &r),
                   RUSM_EINVAL);
  o.n = 100;
  o.repeat = RUSM_BENCH_MAX_REPEAT + 1;
  assert_int_equal(rusm_bench_run(rusm_bench_find("ping-pong"), &o, &r),
                   RUSM_EINVAL);
  assert_int_equal(rusm_bench_run(NULL, NULL, &r), RUSM_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_json_checker),
      cmocka_unit_test(test_median),
      cmocka_unit_test(test_percentile),
      cmocka_unit_test(test_proc_readers),
      cmocka_unit_test(test_registry),
      cmocka_unit_test(test_parse_args),
      cmocka_unit_test(test_json_shape_synthetic),
      cmocka_unit_test(test_metrics_format),
      cmocka_unit_test(test_run_rejects_bad_opts),
      cmocka_unit_test(test_run_spawn_storm),
      cmocka_unit_test(test_run_ping_pong),
      cmocka_unit_test(test_run_fan_in),
      cmocka_unit_test(test_run_idle_memory),
      cmocka_unit_test(test_run_idle_memory_stackful),
      cmocka_unit_test(test_run_cascade),
      cmocka_unit_test(test_run_fault_recovery),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
