/* metrics.c — the snapshot of runtime counters (formatting: src/metrics). */
#include <string.h>

#include "otp/internal.h"

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

void rusm_metrics_snapshot(rusm_rt *rt, rusm_metrics *out) {
  memset(out, 0, sizeof *out);
  if (!rt)
    return;
  out->spawned = LOAD(rt->ext.spawned);
  out->sent = LOAD(rt->ext.sent);
  out->delivered = LOAD(rt->ext.delivered);
  out->dropped = LOAD(rt->ext.dropped);
  out->shed = LOAD(rt->ext.shed);
  for (int c = 0; c < RUSM_EXIT__COUNT; c++)
    out->exited_by[c] = LOAD(rt->ext.exited_by[c]);
  int64_t now = rusm_now_ns();
  out->schedulers = rt->nsched;
  for (uint32_t i = 0; i < rt->nsched; i++) {
    rusm__sched *s = rt->sched[i];
    out->spawned += LOAD(s->c.spawned);
    out->sent += LOAD(s->c.sent);
    out->delivered += LOAD(s->c.delivered);
    out->dropped += LOAD(s->c.dropped);
    out->shed += LOAD(s->c.shed);
    for (int c = 0; c < RUSM_EXIT__COUNT; c++)
      out->exited_by[c] += LOAD(s->c.exited_by[c]);
    out->steals += LOAD(s->c.steals);
    if (i < RUSM_METRICS_MAX_SCHED) {
      rusm_sched_metrics *m = &out->sched[i];
      m->total_ns = (uint64_t)(now - s->started_ns);
      uint64_t idle = LOAD(s->c.idle_ns);
      int64_t since = LOAD(s->idle_since); /* an idle spell still going */
      if (since > 0 && now > since)
        idle += (uint64_t)(now - since);
      m->busy_ns = m->total_ns > idle ? m->total_ns - idle : 0;
      m->runs = LOAD(s->c.runs);
      m->steals = LOAD(s->c.steals);
      m->sleeps = LOAD(s->c.sleeps);
      m->utilisation =
          m->total_ns ? (double)m->busy_ns / (double)m->total_ns : 0.0;
    }
  }
  for (int c = 0; c < RUSM_EXIT__COUNT; c++)
    out->exited += out->exited_by[c];
  out->live = LOAD(rt->live);
  rusm__alloc_stats a;
  rusm__alloc_totals(&a);
  out->alloc_bytes = a.bytes > 0 ? (uint64_t)a.bytes : 0;
  out->alloc_count = a.count > 0 ? (uint64_t)a.count : 0;
}
