/*
 * harness.c — runs a scenario (warm-up, then interleaved baseline / rusm
 * runs), takes medians, and formats the result.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_int.h"

void rusm_bench_opts_init(rusm_bench_opts *o) { memset(o, 0, sizeof *o); }

/* A rusm run: a fresh runtime around the scenario, created and destroyed
 * outside the scenario's timed region. */
static int run_rusm(const rusm_bench_scenario *s, const rusm_rt_opts *ro,
                    const rusm_bench_env *tmpl, rusm_bench_sample *out,
                    rusm_metrics *metrics) {
  rusm_rt *rt = NULL;
  int rc = rusm_rt_create(ro, &rt);
  if (rc < 0)
    return rc;
  rusm_bench_env env = *tmpl;
  env.rt = rt;
  memset(out, 0, sizeof *out);
  rc = s->run(&env, out);
  if (rc == 0 && metrics)
    rusm_metrics_snapshot(rt, metrics);
  rusm_rt_destroy(rt);
  if (rc == 0 && out->ns <= 0)
    out->ns = 1; /* a clock that did not move still divides */
  return rc;
}

static int run_baseline(const rusm_bench_scenario *s,
                        const rusm_bench_env *tmpl, rusm_bench_sample *out) {
  rusm_bench_env env = *tmpl;
  env.rt = NULL;
  memset(out, 0, sizeof *out);
  int rc = s->baseline(&env, out);
  if (rc == 0 && out->ns <= 0)
    out->ns = 1;
  return rc;
}

/* Medians of one field over the runs. */
typedef double (*field_fn)(const rusm_bench_sample *s);
static double f_seconds(const rusm_bench_sample *s) { return s->ns / 1e9; }
static double f_p50(const rusm_bench_sample *s) { return s->p50_us; }
static double f_p99(const rusm_bench_sample *s) { return s->p99_us; }
static double f_bpp(const rusm_bench_sample *s) { return s->bytes_per_process; }

static double median_of(const rusm_bench_sample *runs, uint32_t n, field_fn f,
                        double *scratch) {
  for (uint32_t i = 0; i < n; i++)
    scratch[i] = f(&runs[i]);
  return rusm_bench_median(scratch, n);
}

int rusm_bench_run(const rusm_bench_scenario *s, const rusm_bench_opts *opts,
                   rusm_bench_result *out) {
  rusm_bench_opts o;
  if (opts)
    o = *opts;
  else
    rusm_bench_opts_init(&o);
  if (!s || !s->run || !out)
    return RUSM_EINVAL;
  uint64_t n = o.n ? o.n : s->default_n;
  uint32_t repeat = o.repeat ? o.repeat : RUSM_BENCH_DEFAULT_REPEAT;
  if (n < (s->min_n ? s->min_n : 1) || repeat > RUSM_BENCH_MAX_REPEAT)
    return RUSM_EINVAL;

  memset(out, 0, sizeof *out);
  rusm_bench_sample *runs = calloc(repeat, sizeof *runs);
  rusm_bench_sample *bruns = s->baseline ? calloc(repeat, sizeof *bruns) : NULL;
  double *scratch = calloc(repeat, sizeof *scratch);
  if (!runs || !scratch || (s->baseline && !bruns)) {
    free(runs);
    free(bruns);
    free(scratch);
    return RUSM_ENOMEM;
  }

  rusm_rt_opts ro;
  rusm_rt_opts_init(&ro);
  ro.schedulers = o.schedulers;
  /* Room for every process a scenario may hold at once (default 1 << 22,
   * at most 1 << 24 per node). */
  uint64_t room = ro.max_processes ? ro.max_processes : UINT64_C(1) << 22;
  if (n + 1024 > room)
    ro.max_processes =
        n + 1024 > RUSM_PID_SLOT_MAX ? RUSM_PID_SLOT_MAX : (uint32_t)n + 1024;
  rusm_bench_env env = {
      .rt = NULL,
      .n = n,
      .threads = o.schedulers ? o.schedulers : rusm_bench_cores(),
  };

  int rc = 0;
  rusm_bench_sample warm;
  if (!o.no_warmup) {
    if (s->baseline)
      rc = run_baseline(s, &env, &warm);
    if (rc == 0)
      rc = run_rusm(s, &ro, &env, &warm, NULL);
  }
  for (uint32_t i = 0; rc == 0 && i < repeat; i++) {
    if (s->baseline)
      rc = run_baseline(s, &env, &bruns[i]);
    if (rc == 0)
      rc = run_rusm(s, &ro, &env, &runs[i], i + 1 == repeat ? o.metrics : NULL);
    if (rc == 0 && o.on_run)
      o.on_run(o.on_run_arg, i, &runs[i], bruns ? &bruns[i] : NULL);
  }
  if (rc < 0) {
    free(runs);
    free(bruns);
    free(scratch);
    return rc;
  }

  out->scenario = s;
  out->n = n;
  out->ops = runs[0].ops;
  out->repeat = repeat;
  out->schedulers = env.threads;
  out->runs = runs;
  out->baseline_runs = bruns;
  out->seconds = median_of(runs, repeat, f_seconds, scratch);
  out->ops_per_sec = out->seconds > 0 ? (double)out->ops / out->seconds : 0;
  if (s->baseline) {
    out->has_baseline = true;
    out->baseline_seconds = median_of(bruns, repeat, f_seconds, scratch);
    out->baseline_ops_per_sec =
        out->baseline_seconds > 0 ? (double)bruns[0].ops / out->baseline_seconds
                                  : 0;
    out->ratio = out->baseline_ops_per_sec > 0
                     ? out->ops_per_sec / out->baseline_ops_per_sec
                     : 0;
  }
  if (s->kind == RUSM_BENCH_LATENCY) {
    out->has_latency = true;
    out->p50_us = median_of(runs, repeat, f_p50, scratch);
    out->p99_us = median_of(runs, repeat, f_p99, scratch);
    if (bruns) {
      out->baseline_p50_us = median_of(bruns, repeat, f_p50, scratch);
      out->baseline_p99_us = median_of(bruns, repeat, f_p99, scratch);
    }
  }
  if (s->kind == RUSM_BENCH_MEMORY || runs[0].bytes_per_process > 0) {
    out->has_memory = true;
    out->bytes_per_process = median_of(runs, repeat, f_bpp, scratch);
    for (uint32_t i = 0; i < repeat; i++)
      if (runs[i].mappings > out->mappings)
        out->mappings = runs[i].mappings;
    out->max_map_count = rusm_bench_max_map_count();
  }
  free(scratch);
  return 0;
}

void rusm_bench_result_free(rusm_bench_result *r) {
  if (!r)
    return;
  free(r->runs);
  free(r->baseline_runs);
  r->runs = NULL;
  r->baseline_runs = NULL;
}

/* ------------------------------------------------------------------ */
/* Output                                                              */
/* ------------------------------------------------------------------ */

static double ops_per_sec(const rusm_bench_sample *s) {
  return s->ns > 0 ? (double)s->ops * 1e9 / (double)s->ns : 0;
}

static const char *mem_per(const rusm_bench_result *r) {
  return r->scenario && r->scenario->memory_per ? r->scenario->memory_per
                                                : "process";
}

/* "bytes_per_process", "bytes_per_timer" ... */
static const char *mem_key(const rusm_bench_result *r) {
  static _Thread_local char key[48];
  snprintf(key, sizeof key, "bytes_per_%s", mem_per(r));
  return key;
}

static void json_run(rusm__sb *sb, const rusm_bench_result *r, uint32_t i) {
  const rusm_bench_sample *s = &r->runs[i];
  rusm__sb_printf(sb, "%s{", i ? "," : "");
  rusm__sb_json_num(sb, true, "seconds", s->ns / 1e9, "%.9f");
  rusm__sb_json_num(sb, false, "ops_per_sec", ops_per_sec(s), "%.1f");
  if (r->has_latency) {
    rusm__sb_json_num(sb, false, "p50_us", s->p50_us, "%.3f");
    rusm__sb_json_num(sb, false, "p99_us", s->p99_us, "%.3f");
  }
  if (r->has_memory) {
    rusm__sb_json_num(sb, false, mem_key(r), s->bytes_per_process, "%.1f");
    rusm__sb_printf(sb, ",\"mappings\":%llu", (unsigned long long)s->mappings);
  }
  if (r->has_baseline && r->baseline_runs) {
    const rusm_bench_sample *b = &r->baseline_runs[i];
    rusm__sb_json_num(sb, false, "baseline_seconds", b->ns / 1e9, "%.9f");
    rusm__sb_json_num(sb, false, "baseline_ops_per_sec", ops_per_sec(b),
                      "%.1f");
    if (r->has_latency) {
      rusm__sb_json_num(sb, false, "baseline_p50_us", b->p50_us, "%.3f");
      rusm__sb_json_num(sb, false, "baseline_p99_us", b->p99_us, "%.3f");
    }
  }
  rusm__sb_printf(sb, "}");
}

int rusm_bench_to_json(const rusm_bench_result *r, const rusm_metrics *m,
                       char *buf, size_t len) {
  rusm__sb sb;
  rusm__sb_init(&sb, buf, len);
  /* Scenario names are registry literals ([a-z0-9-]): no escaping. */
  rusm__sb_printf(&sb, "{\"scenario\":\"%s\",\"n\":%llu,\"ops\":%llu",
                  r->scenario ? r->scenario->name : "",
                  (unsigned long long)r->n, (unsigned long long)r->ops);
  rusm__sb_json_num(&sb, false, "seconds", r->seconds, "%.9f");
  rusm__sb_json_num(&sb, false, "ops_per_sec", r->ops_per_sec, "%.1f");
  if (r->has_latency) {
    rusm__sb_json_num(&sb, false, "p50_us", r->p50_us, "%.3f");
    rusm__sb_json_num(&sb, false, "p99_us", r->p99_us, "%.3f");
  }
  if (r->has_memory) {
    rusm__sb_json_num(&sb, false, mem_key(r), r->bytes_per_process, "%.1f");
    rusm__sb_printf(&sb, ",\"mappings\":%llu,\"max_map_count\":%llu",
                    (unsigned long long)r->mappings,
                    (unsigned long long)r->max_map_count);
  }
  if (r->has_baseline) {
    rusm__sb_json_num(&sb, false, "baseline_ops_per_sec",
                      r->baseline_ops_per_sec, "%.1f");
    rusm__sb_json_num(&sb, false, "ratio", r->ratio, "%.4f");
    if (r->has_latency) {
      rusm__sb_json_num(&sb, false, "baseline_p50_us", r->baseline_p50_us,
                        "%.3f");
      rusm__sb_json_num(&sb, false, "baseline_p99_us", r->baseline_p99_us,
                        "%.3f");
    }
  }
  rusm__sb_printf(&sb, ",\"schedulers\":%u,\"repeat\":%u,\"runs\":[",
                  r->schedulers, r->repeat);
  for (uint32_t i = 0; r->runs && i < r->repeat; i++)
    json_run(&sb, r, i);
  rusm__sb_printf(&sb, "]");
  if (m) {
    rusm__sb_printf(&sb, ",\"metrics\":");
    /* Written in place; w counts it even when it does not fit. */
    size_t room = sb.len < sb.cap ? sb.cap - sb.len : 0;
    int w = rusm_metrics_to_json(m, room ? sb.buf + sb.len : NULL, room);
    if (w > 0)
      sb.len += (size_t)w;
  }
  rusm__sb_printf(&sb, "}");
  return (int)sb.len;
}

int rusm_bench_to_text(const rusm_bench_result *r, char *buf, size_t len) {
  const rusm_bench_scenario *s = r->scenario;
  rusm__sb sb;
  rusm__sb_init(&sb, buf, len);
  if (!s)
    return 0;
  char h1[32];
  const char *unit = s->kind == RUSM_BENCH_MEMORY ? "spawns/s" : "ops/s";
  rusm__sb_printf(&sb, "%s: %s\n", s->name, s->summary);
  rusm__sb_printf(
      &sb, "  n %llu, ops %llu, median of %u run%s, %u scheduler%s\n",
      (unsigned long long)r->n, (unsigned long long)r->ops, r->repeat,
      r->repeat == 1 ? "" : "s", r->schedulers, r->schedulers == 1 ? "" : "s");
  rusm__sb_printf(&sb, "  rusm       %10s %-8s %10.6f s",
                  rusm__bench_human(r->ops_per_sec, h1, sizeof h1), unit,
                  r->seconds);
  if (r->has_latency)
    rusm__sb_printf(&sb, "   p50 %.2f us   p99 %.2f us", r->p50_us, r->p99_us);
  rusm__sb_printf(&sb, "\n");
  if (r->has_baseline) {
    rusm__sb_printf(&sb, "  baseline   %10s %-8s %10.6f s",
                    rusm__bench_human(r->baseline_ops_per_sec, h1, sizeof h1),
                    unit, r->baseline_seconds);
    if (r->has_latency)
      rusm__sb_printf(&sb, "   p50 %.2f us   p99 %.2f us", r->baseline_p50_us,
                      r->baseline_p99_us);
    rusm__sb_printf(&sb, "\n             (%s)\n",
                    s->baseline_summary ? s->baseline_summary : "");
    rusm__sb_printf(&sb, "  ratio      %.2fx (rusm / baseline)\n", r->ratio);
  }
  if (r->has_memory) {
    rusm__sb_printf(&sb, "  memory     %.1f bytes/%s (RSS delta)\n",
                    r->bytes_per_process, mem_per(r));
    rusm__sb_printf(&sb, "  mappings   %llu at peak (vm.max_map_count %llu)\n",
                    (unsigned long long)r->mappings,
                    (unsigned long long)r->max_map_count);
  }
  return (int)sb.len;
}
