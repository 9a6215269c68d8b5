/*
 * util.c — statistics, /proc readers, waiters, gates and string building
 * for the harness and the scenarios.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench_int.h"

/* ------------------------------------------------------------------ */
/* Statistics                                                          */
/* ------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double rusm_bench_median(double *v, size_t n) {
  if (n == 0)
    return 0;
  qsort(v, n, sizeof *v, cmp_double);
  if (n % 2)
    return v[n / 2];
  return (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void swap_i64(int64_t *a, int64_t *b) {
  int64_t t = *a;
  *a = *b;
  *b = t;
}

int64_t rusm_bench_percentile(int64_t *v, size_t n, double p) {
  if (n == 0)
    return 0;
  /* p * n first: exact for the integral ranks we use (p50, p99 of whole
   * counts), where p / 100 * n could round up past the rank. */
  double r = ceil(p * (double)n / 100.0);
  ptrdiff_t k = r < 1 ? 0 : (ptrdiff_t)r - 1;
  if (k >= (ptrdiff_t)n)
    k = (ptrdiff_t)n - 1;

  /* Quickselect with a median-of-three Hoare partition: O(n) expected,
   * and runs of equal latencies split evenly. */
  ptrdiff_t lo = 0, hi = (ptrdiff_t)n - 1;
  while (lo < hi) {
    ptrdiff_t mid = lo + (hi - lo) / 2;
    if (v[mid] < v[lo])
      swap_i64(&v[mid], &v[lo]);
    if (v[hi] < v[lo])
      swap_i64(&v[hi], &v[lo]);
    if (v[hi] < v[mid])
      swap_i64(&v[hi], &v[mid]);
    int64_t pivot = v[mid];
    ptrdiff_t i = lo, j = hi;
    while (i <= j) {
      while (v[i] < pivot)
        i++;
      while (v[j] > pivot)
        j--;
      if (i <= j) {
        swap_i64(&v[i], &v[j]);
        i++;
        j--;
      }
    }
    /* Now v[lo..j] <= pivot <= v[i..hi] and v[j+1..i-1] == pivot. */
    if (k <= j)
      hi = j;
    else if (k >= i)
      lo = i;
    else
      return v[k];
  }
  return v[k];
}

/* ------------------------------------------------------------------ */
/* /proc readers (plain read(2): no stdio buffers in the figures)      */
/* ------------------------------------------------------------------ */

uint64_t rusm_bench_rss_bytes(void) {
  char buf[128];
  int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t got = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (got <= 0)
    return 0;
  buf[got] = '\0';
  /* "size resident shared ..." in pages. */
  char *end = NULL;
  strtoull(buf, &end, 10);
  if (end == buf || *end != ' ')
    return 0;
  const char *res = end + 1;
  unsigned long long resident = strtoull(res, &end, 10);
  if (end == res)
    return 0;
  long page = sysconf(_SC_PAGESIZE);
  return (uint64_t)resident * (uint64_t)(page > 0 ? page : 4096);
}

uint64_t rusm_bench_map_count(void) {
  char buf[16384];
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  uint64_t lines = 0;
  ssize_t got;
  while ((got = read(fd, buf, sizeof buf)) > 0) {
    for (const char *p = buf; (p = memchr(p, '\n', (size_t)(buf + got - p)));
         p++)
      lines++;
  }
  close(fd);
  return lines;
}

uint64_t rusm_bench_max_map_count(void) {
  char buf[32];
  int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t got = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (got <= 0)
    return 0;
  buf[got] = '\0';
  return strtoull(buf, NULL, 10);
}

uint32_t rusm_bench_cores(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (uint32_t)n : 1;
}

/* ------------------------------------------------------------------ */
/* Waiting for a scenario's processes                                  */
/* ------------------------------------------------------------------ */

int rusm__bench_attach(rusm_rt *rt, rusm__bench_waiter *w) {
  int rc = rusm_attach(rt, &w->self);
  if (rc < 0)
    return rc;
  w->pid = rusm_self(w->self);
  return 0;
}

int rusm__bench_await(rusm__bench_waiter *w, uint64_t tag) {
  rusm_filter f = rusm_filter_tag(tag);
  rusm_msg *m = NULL;
  int rc = rusm_receive(w->self, &f, RUSM_BENCH_WAIT_MS, &m);
  if (rc < 0)
    return rc;
  int32_t status = 0;
  if (rusm_msg_len(m) == sizeof status)
    memcpy(&status, rusm_msg_data(m), sizeof status);
  rusm_msg_free(m);
  return status;
}

void rusm__bench_detach(rusm__bench_waiter *w) {
  if (w->self)
    rusm_detach(w->self);
  w->self = NULL;
  w->pid = RUSM_PID_NONE;
}

int rusm__bench_send_status(rusm_rt *rt, rusm_pid_t to, uint64_t tag,
                            int32_t status) {
  return rusm_send(rt, to, tag, &status, sizeof status);
}

/* ------------------------------------------------------------------ */
/* Start gate                                                          */
/* ------------------------------------------------------------------ */

void rusm__bench_gate_init(rusm__bench_gate *g) {
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  g->open = false;
}

void rusm__bench_gate_wait(rusm__bench_gate *g) {
  pthread_mutex_lock(&g->mu);
  while (!g->open)
    pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}

void rusm__bench_gate_open(rusm__bench_gate *g) {
  pthread_mutex_lock(&g->mu);
  g->open = true;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

void rusm__bench_gate_destroy(rusm__bench_gate *g) {
  pthread_cond_destroy(&g->cv);
  pthread_mutex_destroy(&g->mu);
}

/* ------------------------------------------------------------------ */
/* Strings                                                             */
/* ------------------------------------------------------------------ */

void rusm__sb_init(rusm__sb *sb, char *buf, size_t cap) {
  sb->buf = buf;
  sb->cap = cap;
  sb->len = 0;
  if (buf && cap)
    buf[0] = '\0';
}

void rusm__sb_printf(rusm__sb *sb, const char *fmt, ...) {
  size_t room = sb->len < sb->cap ? sb->cap - sb->len : 0;
  char *at = room ? sb->buf + sb->len : NULL;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(at, room, fmt, ap);
  va_end(ap);
  if (n > 0)
    sb->len += (size_t)n;
}

void rusm__sb_json_num(rusm__sb *sb, bool first, const char *key, double v,
                       const char *fmt) {
  char num[64];
  snprintf(num, sizeof num, fmt, isfinite(v) ? v : 0.0);
  rusm__sb_printf(sb, "%s\"%s\":%s", first ? "" : ",", key, num);
}

const char *rusm__bench_human(double v, char *buf, size_t len) {
  if (!isfinite(v))
    snprintf(buf, len, "-");
  else if (v >= 1e9)
    snprintf(buf, len, "%.2fG", v / 1e9);
  else if (v >= 1e6)
    snprintf(buf, len, "%.2fM", v / 1e6);
  else if (v >= 1e4)
    snprintf(buf, len, "%.1fk", v / 1e3);
  else
    snprintf(buf, len, "%.0f", v);
  return buf;
}

bool rusm__bench_write_all(int fd, const void *p, size_t len) {
  const uint8_t *b = p;
  while (len) {
    ssize_t n = write(fd, b, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    b += n;
    len -= (size_t)n;
  }
  return true;
}

bool rusm__bench_read_all(int fd, void *p, size_t len) {
  uint8_t *b = p;
  while (len) {
    ssize_t n = read(fd, b, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    b += n;
    len -= (size_t)n;
  }
  return true;
}
