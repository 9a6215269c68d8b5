/*
 * rusm/metrics.h — runtime counters: a consistent-enough snapshot that the
 * CLI prints and a dashboard can stream. Counters are kept per scheduler
 * (no shared cache line on the hot path) and summed on read, so a snapshot
 * taken while processes run is approximate but each counter is monotonic.
 */
#ifndef RUSM_METRICS_H
#define RUSM_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "rusm/otp.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RUSM_METRICS_MAX_SCHED 64

typedef struct rusm_sched_metrics {
  uint64_t busy_ns;   /* time spent running processes */
  uint64_t total_ns;  /* time since the scheduler started */
  uint64_t runs;      /* process run slices */
  uint64_t steals;    /* processes stolen from other schedulers */
  uint64_t sleeps;    /* times the scheduler slept */
  double utilisation; /* busy_ns / total_ns, 0..1 */
} rusm_sched_metrics;

typedef struct rusm_metrics {
  uint64_t spawned;
  uint64_t exited;                      /* all reasons */
  uint64_t exited_by[RUSM_EXIT__COUNT]; /* by rusm_exit_code */
  uint64_t live;                        /* spawned - exited */
  uint64_t sent;                        /* send calls to a process */
  uint64_t delivered;                   /* messages taken by a receiver */
  uint64_t dropped;                     /* target dead / left in a dead box */
  uint64_t shed;        /* user messages shed by bounded mailboxes */
  uint64_t steals;      /* sum over schedulers */
  uint64_t alloc_bytes; /* accounted bytes now allocated */
  uint64_t alloc_count; /* accounted allocations live */
  uint32_t schedulers;
  rusm_sched_metrics sched[RUSM_METRICS_MAX_SCHED];
} rusm_metrics;

/* Fills *out with a snapshot. Callable from any thread. */
void rusm_metrics_snapshot(rusm_rt *rt, rusm_metrics *out);

/* Writes the snapshot as one JSON object (no trailing newline) into buf.
 * Returns the length it would have written, like snprintf. */
int rusm_metrics_to_json(const rusm_metrics *m, char *buf, size_t len);

/* Writes a human-readable multi-line summary. Same return as above. */
int rusm_metrics_to_text(const rusm_metrics *m, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* RUSM_METRICS_H */
