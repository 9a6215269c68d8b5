/*
 * format.c — rusm_metrics as JSON (for --json output and live feeds) and as
 * text (for the CLI).
 */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "rusm/metrics.h"

/* snprintf's contract over several calls: len counts what would have been
 * written; buf stays NUL-terminated within cap. */
typedef struct out {
  char *buf;
  size_t cap;
  size_t len;
} out;

static void put(out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void put(out *o, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t room = o->len < o->cap ? o->cap - o->len : 0;
  int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
  va_end(ap);
  if (n > 0)
    o->len += (size_t)n;
}

static void start(out *o, char *buf, size_t len) {
  o->buf = buf;
  o->cap = buf ? len : 0;
  o->len = 0;
  if (o->cap)
    buf[0] = '\0';
}

static uint32_t sched_count(const rusm_metrics *m) {
  return m->schedulers < RUSM_METRICS_MAX_SCHED ? m->schedulers
                                                : RUSM_METRICS_MAX_SCHED;
}

/* Utilisation as a finite fraction in [0, 1] (JSON has no NaN). */
static double util(const rusm_sched_metrics *s) {
  double u = s->utilisation;
  if (!isfinite(u) || u < 0)
    return 0;
  return u > 1 ? 1 : u;
}

static unsigned long long ull(uint64_t v) { return (unsigned long long)v; }

int rusm_metrics_to_json(const rusm_metrics *m, char *buf, size_t len) {
  out o;
  start(&o, buf, len);
  put(&o,
      "{\"spawned\":%llu,\"exited\":%llu,\"live\":%llu,\"sent\":%llu,"
      "\"delivered\":%llu,\"dropped\":%llu,\"shed\":%llu,\"steals\":%llu,"
      "\"alloc_bytes\":%llu,\"alloc_count\":%llu,\"exited_by\":{",
      ull(m->spawned), ull(m->exited), ull(m->live), ull(m->sent),
      ull(m->delivered), ull(m->dropped), ull(m->shed), ull(m->steals),
      ull(m->alloc_bytes), ull(m->alloc_count));
  for (int c = 0; c < RUSM_EXIT__COUNT; c++)
    /* Code names are static identifiers ([a-z_]): no escaping needed. */
    put(&o, "%s\"%s\":%llu", c ? "," : "",
        rusm_exit_code_name((rusm_exit_code)c), ull(m->exited_by[c]));
  put(&o, "},\"schedulers\":%u,\"sched\":[", m->schedulers);
  for (uint32_t i = 0; i < sched_count(m); i++) {
    const rusm_sched_metrics *s = &m->sched[i];
    put(&o,
        "%s{\"busy_ns\":%llu,\"total_ns\":%llu,\"runs\":%llu,"
        "\"steals\":%llu,\"sleeps\":%llu,\"utilisation\":%.4f}",
        i ? "," : "", ull(s->busy_ns), ull(s->total_ns), ull(s->runs),
        ull(s->steals), ull(s->sleeps), util(s));
  }
  put(&o, "]}");
  return (int)o.len;
}

int rusm_metrics_to_text(const rusm_metrics *m, char *buf, size_t len) {
  out o;
  start(&o, buf, len);
  put(&o, "processes  spawned %llu  exited %llu  live %llu\n", ull(m->spawned),
      ull(m->exited), ull(m->live));
  put(&o, "exits     ");
  bool any = false;
  for (int c = 0; c < RUSM_EXIT__COUNT; c++) {
    if (!m->exited_by[c])
      continue;
    put(&o, " %s %llu", rusm_exit_code_name((rusm_exit_code)c),
        ull(m->exited_by[c]));
    any = true;
  }
  put(&o, "%s\n", any ? "" : " none");
  put(&o, "messages   sent %llu  delivered %llu  dropped %llu  shed %llu\n",
      ull(m->sent), ull(m->delivered), ull(m->dropped), ull(m->shed));
  put(&o, "memory     %llu bytes in %llu allocations\n", ull(m->alloc_bytes),
      ull(m->alloc_count));
  put(&o, "schedulers %u  steals %llu\n", m->schedulers, ull(m->steals));
  for (uint32_t i = 0; i < sched_count(m); i++) {
    const rusm_sched_metrics *s = &m->sched[i];
    put(&o,
        "  #%-3u %5.1f%% busy  runs %llu  steals %llu  sleeps %llu  "
        "up %.3f s\n",
        i, util(s) * 100.0, ull(s->runs), ull(s->steals), ull(s->sleeps),
        (double)s->total_ns / 1e9);
  }
  return (int)o.len;
}
