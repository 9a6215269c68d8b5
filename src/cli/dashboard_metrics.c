/*
 * dashboard_metrics.c — GET /metrics: the runtime's counters in the
 * Prometheus text exposition format 0.0.4, every name prefixed rusm_.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/dashboard.h"
#include "rusm/metrics.h"
#include "rusm/tcp.h"

struct rusm__dash_sup_seen {
  rusm_pid_t pid;
  uint64_t restarts; /* the largest count seen for this pid */
  bool alive;
};

void rusm__dash_restarts_init(rusm__dash_restarts *t) {
  memset(t, 0, sizeof *t);
  pthread_mutex_init(&t->mu, NULL);
}

void rusm__dash_restarts_destroy(rusm__dash_restarts *t) {
  pthread_mutex_destroy(&t->mu);
  free(t->seen);
  t->seen = NULL;
}

/* The total so far: supervisors seen now plus those gone (whose counts
 * would otherwise vanish and make the counter go back). */
static uint64_t restarts_total(rusm__dash_restarts *t,
                               const rusm_obs_sup_node *nodes, size_t n) {
  pthread_mutex_lock(&t->mu);
  for (size_t i = 0; i < t->n; i++)
    t->seen[i].alive = false;
  for (size_t i = 0; i < n; i++) {
    if (!nodes[i].supervisor || nodes[i].pid == RUSM_PID_NONE)
      continue;
    size_t j = 0;
    while (j < t->n && t->seen[j].pid != nodes[i].pid)
      j++;
    if (j == t->n) {
      if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        void *p = realloc(t->seen, cap * sizeof *t->seen);
        if (!p)
          continue;
        t->seen = p;
        t->cap = cap;
      }
      t->seen[t->n++] = (struct rusm__dash_sup_seen){nodes[i].pid, 0, false};
    }
    if (nodes[i].restarts > t->seen[j].restarts)
      t->seen[j].restarts = nodes[i].restarts;
    t->seen[j].alive = true;
  }
  uint64_t sum = 0;
  size_t k = 0;
  for (size_t i = 0; i < t->n; i++) {
    if (!t->seen[i].alive) {
      t->retired += t->seen[i].restarts;
      continue;
    }
    sum += t->seen[i].restarts;
    t->seen[k++] = t->seen[i];
  }
  t->n = k;
  sum += t->retired;
  pthread_mutex_unlock(&t->mu);
  return sum;
}

typedef struct out {
  char *buf;
  size_t len, cap;
  bool failed;
} out;

static void put(out *o, const char *fmt, ...) {
  if (o->failed)
    return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      o->failed = true;
      return;
    }
    if ((size_t)n < o->cap - o->len) {
      o->len += (size_t)n;
      return;
    }
    size_t cap = o->cap * 2 + (size_t)n;
    char *b = realloc(o->buf, cap);
    if (!b) {
      o->failed = true;
      return;
    }
    o->buf = b;
    o->cap = cap;
  }
}

/* HELP and TYPE lines of one metric. */
static void head(out *o, const char *name, const char *type, const char *help) {
  put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(out *o, const char *name, const char *type, const char *help,
                uint64_t v) {
  head(o, name, type, help);
  put(o, "%s %llu\n", name, (unsigned long long)v);
}

char *rusm__dash_prometheus(rusm_rt *rt, rusm__dash_restarts *t, size_t *len) {
  rusm_metrics *m = malloc(sizeof *m);
  if (!m)
    return NULL;
  rusm_metrics_snapshot(rt, m);
  size_t total = 0;
  rusm_obs_sup_tree(rt, NULL, 0, &total);
  size_t cap = total + 16;
  rusm_obs_sup_node *nodes = calloc(cap, sizeof *nodes);
  if (nodes)
    rusm_obs_sup_tree(rt, nodes, cap, &total);
  uint64_t restarts =
      nodes ? restarts_total(t, nodes, total < cap ? total : cap) : 0;
  free(nodes);
  rusm_tcp_stats tcp;
  rusm_tcp_stats_get(rt, &tcp);

  out o = {malloc(4096), 0, 4096, false};
  if (!o.buf) {
    free(m);
    return NULL;
  }
  o.buf[0] = '\0';
  one(&o, "rusm_processes", "gauge",
      "Processes alive now (attached threads included).",
      rusm_process_count(rt));
  one(&o, "rusm_spawned_total", "counter",
      "Processes spawned since the runtime started.", m->spawned);
  head(&o, "rusm_exited_total", "counter",
       "Processes exited since the runtime started, by exit reason.");
  for (int c = 0; c < RUSM_EXIT__COUNT; c++) {
    if (c == RUSM_EXIT_KILL)
      continue; /* a signal only: no process exits with it */
    put(&o, "rusm_exited_total{reason=\"%s\"} %llu\n",
        rusm_exit_code_name((rusm_exit_code)c),
        (unsigned long long)m->exited_by[c]);
  }
  one(&o, "rusm_messages_sent_total", "counter", "Messages sent to processes.",
      m->sent);
  one(&o, "rusm_messages_delivered_total", "counter",
      "Messages taken by their receivers.", m->delivered);
  one(&o, "rusm_messages_dropped_total", "counter",
      "Messages dropped: the receiver was dead or died with them queued.",
      m->dropped);
  one(&o, "rusm_messages_shed_total", "counter",
      "User messages shed by bounded mailboxes.", m->shed);
  one(&o, "rusm_supervisor_restarts_total", "counter",
      "Child restarts done by supervisors.", restarts);
  head(&o, "rusm_scheduler_utilisation", "gauge",
       "Share of time each scheduler thread spent running processes (0..1).");
  uint32_t ns = m->schedulers < RUSM_METRICS_MAX_SCHED ? m->schedulers
                                                       : RUSM_METRICS_MAX_SCHED;
  for (uint32_t i = 0; i < ns; i++)
    put(&o, "rusm_scheduler_utilisation{scheduler=\"%u\"} %.6f\n", i,
        m->sched[i].utilisation);
  one(&o, "rusm_scheduler_steals_total", "counter",
      "Processes stolen by idle schedulers.", m->steals);
  one(&o, "rusm_timers_pending", "gauge",
      "Timers (send_after, exit_after ...) pending now.", rusm_timer_count(rt));
  one(&o, "rusm_tcp_connections_open", "gauge",
      "TCP sockets open now, listening sockets included.", tcp.open);
  one(&o, "rusm_tcp_accepted_total", "counter", "TCP connections accepted.",
      tcp.accepted);
  one(&o, "rusm_memory_allocated_bytes", "gauge",
      "Bytes the runtime holds through its accounted allocator.",
      m->alloc_bytes);
  one(&o, "rusm_wasm_instances", "gauge",
      "Wasm instances alive now (always 0: the dashboard runs no Wasm "
      "processes yet).",
      0);
  free(m);
  if (o.failed) {
    free(o.buf);
    return NULL;
  }
  if (len)
    *len = o.len;
  return o.buf;
}
