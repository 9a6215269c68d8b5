/*
 * rusm/bench.h — the benchmark harness behind `rusm bench`.
 *
 * A scenario is a descriptor (name, default N, kind, a run function doing
 * the work the RUSM way and, where it has one, a baseline function doing
 * the same work the plain way). rusm_bench_run() runs one scenario in
 * process: one warm-up run of each, then R measured runs interleaved
 * (baseline, rusm, baseline, rusm ...), each rusm run on a fresh runtime,
 * and reports medians, so that the ratio survives a noisy machine.
 *
 * Adding a scenario: one file under src/bench/ defining a
 * `const rusm_bench_scenario` plus one line in src/bench/registry.c.
 *
 * Conventions: functions return 0 or a negative RUSM_E* code (rusm/otp.h).
 */
#ifndef RUSM_BENCH_H
#define RUSM_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rusm/metrics.h"
#include "rusm/otp.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RUSM_BENCH_DEFAULT_REPEAT 5
#define RUSM_BENCH_MAX_REPEAT 1000
/* A failure guard for scenario waits (a hung runtime ends the run with
 * RUSM_ETIMEDOUT instead of hanging the CLI). */
#define RUSM_BENCH_WAIT_MS 120000

typedef enum rusm_bench_kind {
  RUSM_BENCH_THROUGHPUT = 0, /* ops/s */
  RUSM_BENCH_LATENCY = 1,    /* ops/s plus p50/p99 of each op */
  RUSM_BENCH_MEMORY = 2      /* resident bytes per process; ops/s = spawns */
} rusm_bench_kind;

/* The figures of one run, filled by a scenario function. */
typedef struct rusm_bench_sample {
  uint64_t ops;             /* operations done in the timed region */
  int64_t ns;               /* length of the timed region */
  double p50_us, p99_us;    /* LATENCY: per-op latency percentiles */
  double bytes_per_process; /* MEMORY: RSS delta / processes */
  uint64_t mappings;        /* MEMORY: lines of /proc/self/maps at peak */
} rusm_bench_sample;

/* What a scenario function gets. */
typedef struct rusm_bench_env {
  rusm_rt *rt;      /* a fresh runtime (rusm runs); NULL for baselines */
  uint64_t n;       /* the scenario's N */
  uint32_t threads; /* scheduler count: size of a baseline's thread pool */
} rusm_bench_env;

/*
 * Does one run. Allocates what it needs before starting its clock and frees
 * it after stopping it; times only the work (rusm_now_ns()). For rusm runs
 * the harness creates env->rt before and destroys it after, untimed; the
 * function must leave no process of its own alive (wait for them). Returns
 * 0 with *out filled, or a negative RUSM_E* code.
 */
typedef int (*rusm_bench_fn)(const rusm_bench_env *env, rusm_bench_sample *out);

typedef struct rusm_bench_scenario {
  const char *name;             /* e.g. "ping-pong" */
  const char *summary;          /* one line: what it measures */
  const char *baseline_summary; /* one line; NULL when no baseline */
  rusm_bench_kind kind;
  uint64_t default_n; /* runs in a few seconds */
  uint64_t min_n;     /* smallest meaningful N (>= 1) */
  rusm_bench_fn run;
  rusm_bench_fn baseline; /* NULL: none */
  /* What a memory figure is per: "process" when NULL, or "timer",
   * "connection" ... (JSON key bytes_per_<it>). A scenario of any kind
   * reports memory when its runs fill bytes_per_process. */
  const char *memory_per;
} rusm_bench_scenario;

/* The registry: every scenario, in `rusm bench list` order. */
size_t rusm_bench_count(void);
/* The i-th scenario (NULL when out of range). Static storage. */
const rusm_bench_scenario *rusm_bench_at(size_t i);
/* The scenario called name, or NULL. */
const rusm_bench_scenario *rusm_bench_find(const char *name);

typedef struct rusm_bench_opts {
  uint64_t n;          /* 0: the scenario's default_n */
  uint32_t repeat;     /* measured runs; 0: RUSM_BENCH_DEFAULT_REPEAT */
  uint32_t schedulers; /* 0: one per online core */
  bool no_warmup;      /* skip the warm-up runs (tests) */
  /* When non-NULL, filled with the metrics snapshot of the last measured
   * rusm run's runtime, taken just before it is destroyed. */
  rusm_metrics *metrics;
  /* Called after each measured run (progress, live feeds); may be NULL.
   * index counts from 0; baseline is NULL when the scenario has none. */
  void (*on_run)(void *arg, uint32_t index, const rusm_bench_sample *rusm,
                 const rusm_bench_sample *baseline);
  void *on_run_arg;
} rusm_bench_opts;

void rusm_bench_opts_init(rusm_bench_opts *o);

/* The outcome of rusm_bench_run(). Medians over the measured runs. */
typedef struct rusm_bench_result {
  const rusm_bench_scenario *scenario;
  uint64_t n;
  uint64_t ops; /* of the median run (every run does the same ops) */
  uint32_t repeat;
  uint32_t schedulers;
  double seconds;     /* median */
  double ops_per_sec; /* ops / seconds */
  bool has_baseline;
  double baseline_seconds; /* median */
  double baseline_ops_per_sec;
  double ratio; /* ops_per_sec / baseline_ops_per_sec */
  bool has_latency;
  double p50_us, p99_us; /* medians of the runs' percentiles */
  double baseline_p50_us, baseline_p99_us;
  bool has_memory;
  double bytes_per_process;         /* median */
  uint64_t mappings;                /* largest peak over the runs */
  uint64_t max_map_count;           /* vm.max_map_count, 0 if unreadable */
  rusm_bench_sample *runs;          /* repeat entries */
  rusm_bench_sample *baseline_runs; /* repeat entries, or NULL */
} rusm_bench_result;

/*
 * Runs scenario s as described at the top of this file. opts may be NULL.
 * On success *out holds the result; release it with
 * rusm_bench_result_free(). On failure nothing needs releasing. Returns 0,
 * RUSM_EINVAL (n below the scenario's min_n, repeat out of range), or the
 * first error of a run.
 */
int rusm_bench_run(const rusm_bench_scenario *s, const rusm_bench_opts *opts,
                   rusm_bench_result *out);
/* Frees the arrays a result owns (not the struct itself). */
void rusm_bench_result_free(rusm_bench_result *r);

/*
 * One JSON object, no newline: {"scenario","n","ops","seconds",
 * "ops_per_sec","schedulers","repeat","runs":[...]} plus, where they apply,
 * "p50_us","p99_us","bytes_per_process","mappings","max_map_count",
 * "baseline_ops_per_sec","ratio","baseline_p50_us","baseline_p99_us", and
 * "metrics" when m is not NULL. Returns the length it would have written,
 * like snprintf.
 */
int rusm_bench_to_json(const rusm_bench_result *r, const rusm_metrics *m,
                       char *buf, size_t len);
/* A readable multi-line summary. Same return as above. */
int rusm_bench_to_text(const rusm_bench_result *r, char *buf, size_t len);

/* ------------------------------------------------------------------ */
/* Command line (`rusm bench ...`)                                     */
/* ------------------------------------------------------------------ */

typedef enum rusm_bench_verb {
  RUSM_BENCH_VERB_RUN = 0, /* one scenario */
  RUSM_BENCH_VERB_ALL = 1,
  RUSM_BENCH_VERB_LIST = 2,
  RUSM_BENCH_VERB_HELP = 3
} rusm_bench_verb;

typedef struct rusm_bench_args {
  rusm_bench_verb verb;
  const rusm_bench_scenario *scenario; /* VERB_RUN */
  uint64_t n;                          /* 0: default */
  uint32_t repeat;                     /* 0: default */
  uint32_t schedulers;                 /* 0: one per core */
  bool json;
  bool metrics;
  bool progress; /* a JSON line on stdout after each measured run */
} rusm_bench_args;

/*
 * Parses the words after `bench`: <scenario|all|list> [--n N] [--json]
 * [--repeat R] [--schedulers K] [--metrics] [--progress] (also --opt=value;
 * -h/--help).
 * argv is not modified and may be borrowed by *out. On error returns
 * RUSM_EINVAL and writes a one-line message into err (NUL-terminated).
 */
int rusm_bench_parse_args(int argc, char *const argv[], rusm_bench_args *out,
                          char *err, size_t errlen);

/* ------------------------------------------------------------------ */
/* Helpers for scenarios and tests                                     */
/* ------------------------------------------------------------------ */

/* Median of v[0..n) (mean of the middle two when n is even); reorders v.
 * 0 when n == 0. */
double rusm_bench_median(double *v, size_t n);
/* Nearest-rank percentile (0 < p <= 100) of v[0..n): the value of rank
 * ceil(p/100 * n) in ascending order. Reorders v (selection, O(n)).
 * 0 when n == 0. */
int64_t rusm_bench_percentile(int64_t *v, size_t n, double p);
/* Resident set size of this process in bytes (/proc/self/statm), 0 on
 * error. */
uint64_t rusm_bench_rss_bytes(void);
/* Number of memory mappings (lines of /proc/self/maps), 0 on error. */
uint64_t rusm_bench_map_count(void);
/* vm.max_map_count, 0 on error. */
uint64_t rusm_bench_max_map_count(void);
/* Online cores (>= 1). */
uint32_t rusm_bench_cores(void);

#ifdef __cplusplus
}
#endif
#endif /* RUSM_BENCH_H */
