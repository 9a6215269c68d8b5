/*
 * cmd_bench.c — `rusm bench <scenario|all|list> [--n N] [--json]
 * [--repeat R] [--schedulers K] [--metrics]`.
 *
 * With --json the last line of stdout is one JSON object (one per scenario
 * and line for `all`); progress goes to stderr, and only to a terminal.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cmd.h"
#include "rusm/bench.h"

static void bench_usage(FILE *to) {
  fprintf(to,
          "usage: rusm bench <scenario|all|list> [options]\n"
          "\n"
          "Runs a scenario in this process: one warm-up run, then R measured\n"
          "runs, each on a fresh runtime, interleaved with runs of the same\n"
          "work done the plain way (the baseline); reports medians.\n"
          "\n"
          "  list              the scenarios and their default N\n"
          "  all               every scenario at its default N, as a table\n"
          "  --n N             problem size (default: the scenario's)\n"
          "  --repeat R        measured runs (default %d)\n"
          "  --schedulers K    scheduler threads (default: one per core)\n"
          "  --json            one JSON object on the last line of stdout\n"
          "  --metrics         the runtime's metrics after the last run\n"
          "  --progress        a JSON line on stdout after each measured run\n"
          "\n"
          "Exit status: 0 done, 1 a run failed, 2 bad arguments.\n",
          RUSM_BENCH_DEFAULT_REPEAT);
}

static void progress(void *arg, uint32_t index, const rusm_bench_sample *r,
                     const rusm_bench_sample *b) {
  const rusm_bench_args *a = arg;
  double ops = r->ns > 0 ? (double)r->ops * 1e9 / (double)r->ns : 0;
  fprintf(stderr, "  run %u/%u: %.0f ops/s", index + 1,
          a->repeat ? a->repeat : RUSM_BENCH_DEFAULT_REPEAT, ops);
  if (b && b->ns > 0)
    fprintf(stderr, ", baseline %.0f ops/s",
            (double)b->ops * 1e9 / (double)b->ns);
  fprintf(stderr, "\n");
}

/* --progress: {"type":"progress","index":i,...} on stdout, flushed, so a
 * parent (the dashboard) can stream it. */
static void progress_json(void *arg, uint32_t index, const rusm_bench_sample *r,
                          const rusm_bench_sample *b) {
  const rusm_bench_args *a = arg;
  double ops = r->ns > 0 ? (double)r->ops * 1e9 / (double)r->ns : 0;
  printf("{\"type\":\"progress\",\"scenario\":\"%s\",\"index\":%u,"
         "\"ops_per_sec\":%.1f",
         a->scenario ? a->scenario->name : "", index, ops);
  if (b && b->ns > 0)
    printf(",\"baseline_ops_per_sec\":%.1f",
           (double)b->ops * 1e9 / (double)b->ns);
  if (r->p50_us > 0 || r->p99_us > 0)
    printf(",\"p50_us\":%.3f,\"p99_us\":%.3f", r->p50_us, r->p99_us);
  if (r->bytes_per_process > 0)
    printf(",\"bytes\":%.1f", r->bytes_per_process);
  printf("}\n");
  fflush(stdout);
}

static int run_scenario(const rusm_bench_args *a, const rusm_bench_scenario *s,
                        rusm_bench_result *res, rusm_metrics *metrics) {
  rusm_bench_opts o;
  rusm_bench_opts_init(&o);
  o.n = a->n;
  o.repeat = a->repeat;
  o.schedulers = a->schedulers;
  o.metrics = metrics;
  if (a->progress) {
    o.on_run = progress_json;
    o.on_run_arg = (void *)a;
  } else if (isatty(STDERR_FILENO)) {
    o.on_run = progress;
    o.on_run_arg = (void *)a;
    fprintf(stderr, "%s ...\n", s->name);
  }
  int rc = rusm_bench_run(s, &o, res);
  if (rc < 0)
    fprintf(stderr, "rusm bench %s: failed: %s (%s)\n", s->name,
            rusm_strerror(rc), rusm_err_name(rc));
  if (rc == RUSM_ENOMEM && strstr(s->name, "stackful"))
    fprintf(stderr,
            "  (a stackful process costs two memory mappings; this "
            "system allows %llu: see docs/bench.md)\n",
            (unsigned long long)rusm_bench_max_map_count());
  return rc;
}

/* Both printers size their output in a first pass. */
static int print_json(const rusm_bench_result *r, const rusm_metrics *m) {
  int len = rusm_bench_to_json(r, m, NULL, 0);
  char *buf = malloc((size_t)len + 1);
  if (!buf)
    return -1;
  rusm_bench_to_json(r, m, buf, (size_t)len + 1);
  printf("%s\n", buf);
  free(buf);
  return 0;
}

static int print_text(const rusm_bench_result *r, const rusm_metrics *m) {
  int len = rusm_bench_to_text(r, NULL, 0);
  int mlen = m ? rusm_metrics_to_text(m, NULL, 0) : 0;
  size_t cap = (size_t)(len > mlen ? len : mlen) + 1;
  char *buf = malloc(cap);
  if (!buf)
    return -1;
  rusm_bench_to_text(r, buf, cap);
  fputs(buf, stdout);
  if (m) {
    rusm_metrics_to_text(m, buf, cap);
    printf("metrics of the last run:\n%s", buf);
  }
  free(buf);
  return 0;
}

static int cmd_run(const rusm_bench_args *a) {
  rusm_metrics *metrics = a->metrics ? calloc(1, sizeof *metrics) : NULL;
  if (a->metrics && !metrics)
    return RUSM__CLI_FAILED;
  rusm_bench_result res;
  int rc = run_scenario(a, a->scenario, &res, metrics);
  if (rc == 0) {
    if (a->json)
      rc = print_json(&res, metrics);
    else
      rc = print_text(&res, metrics);
    rusm_bench_result_free(&res);
  }
  free(metrics);
  fflush(stdout);
  if (rc == RUSM_ELIMIT) /* N does not fit this machine (open files ...) */
    return RUSM__CLI_USAGE;
  return rc == 0 ? RUSM__CLI_OK : RUSM__CLI_FAILED;
}

/* A short figure for the table: 1.23M, 456.7k, 12. */
static const char *human(double v, char *buf, size_t len) {
  if (v >= 1e9)
    snprintf(buf, len, "%.2fG", v / 1e9);
  else if (v >= 1e6)
    snprintf(buf, len, "%.2fM", v / 1e6);
  else if (v >= 1e4)
    snprintf(buf, len, "%.1fk", v / 1e3);
  else
    snprintf(buf, len, "%.0f", v);
  return buf;
}

static void table_row(const rusm_bench_result *r) {
  char ops[32], base[32], ratio[32], extra[96];
  human(r->ops_per_sec, ops, sizeof ops);
  if (r->has_baseline) {
    human(r->baseline_ops_per_sec, base, sizeof base);
    snprintf(ratio, sizeof ratio, "%.2fx", r->ratio);
  } else {
    snprintf(base, sizeof base, "-");
    snprintf(ratio, sizeof ratio, "-");
  }
  extra[0] = '\0';
  if (r->has_latency)
    snprintf(extra, sizeof extra, "  p50 %.2f us, p99 %.2f us", r->p50_us,
             r->p99_us);
  else if (r->has_memory)
    snprintf(extra, sizeof extra, "  %.0f B/process, %llu mappings",
             r->bytes_per_process, (unsigned long long)r->mappings);
  printf("%-22s %9llu %10s %11s %7s%s\n", r->scenario->name,
         (unsigned long long)r->n, ops, base, ratio, extra);
}

static int cmd_all(const rusm_bench_args *a) {
  int status = RUSM__CLI_OK;
  if (!a->json)
    printf("%-22s %9s %10s %11s %7s  %s\n", "scenario", "n", "ops/s",
           "baseline/s", "ratio", "latency / memory");
  for (size_t i = 0; i < rusm_bench_count(); i++) {
    const rusm_bench_scenario *s = rusm_bench_at(i);
    rusm_bench_result res;
    fflush(stdout);
    if (run_scenario(a, s, &res, NULL) < 0) {
      if (!a->json)
        printf("%-22s failed\n", s->name);
      status = RUSM__CLI_FAILED;
      continue;
    }
    if (a->json)
      print_json(&res, NULL);
    else
      table_row(&res);
    rusm_bench_result_free(&res);
  }
  fflush(stdout);
  return status;
}

static int cmd_list(void) {
  for (size_t i = 0; i < rusm_bench_count(); i++) {
    const rusm_bench_scenario *s = rusm_bench_at(i);
    printf("%-22s N %-8llu %s\n", s->name, (unsigned long long)s->default_n,
           s->summary);
    if (s->baseline_summary)
      printf("%-22s baseline: %s\n", "", s->baseline_summary);
  }
  return RUSM__CLI_OK;
}

int rusm__cmd_bench(int argc, char **argv) {
  rusm_bench_args a;
  char err[256];
  if (rusm_bench_parse_args(argc, argv, &a, err, sizeof err) < 0) {
    fprintf(stderr, "rusm bench: %s\n\n", err);
    bench_usage(stderr);
    return RUSM__CLI_USAGE;
  }
  switch (a.verb) {
  case RUSM_BENCH_VERB_HELP:
    bench_usage(stdout);
    return RUSM__CLI_OK;
  case RUSM_BENCH_VERB_LIST:
    return cmd_list();
  case RUSM_BENCH_VERB_ALL:
    return cmd_all(&a);
  case RUSM_BENCH_VERB_RUN:
    break;
  }
  return cmd_run(&a);
}
