/*
 * fault-recovery: a one_for_one supervisor restarts a crashing child N
 * times. ops = N restarts; p50_us / p99_us are of crash -> replacement:
 * from sending the child "crash" until its replacement's announcement
 * arrives.
 *
 * The supervisor (rusm_sup_start) has one permanent child, a stackless
 * process spawned linked by the child's start function. Each new child
 * announces itself to the driver from its init (a message from its pid);
 * told "crash", it exits with a custom reason. The supervisor traps the
 * exit signal and starts a replacement. Intensity N + 10 in an hour, as
 * the Erlang peer's, so N restarts never exceed it.
 *
 * The driver is a stackful process (as the Erlang driver is a process): it
 * starts the supervisor, waits for the first child (untimed), then times
 * the N crash/announce round trips, stops the supervisor and reports to
 * the attached main thread. The same loop driven from the attached main
 * thread pays a futex wake-up per announcement and measured ten times
 * slower (see docs/bench.md).
 *
 * Baseline: thread restart. A "supervisor" thread joins the worker thread
 * (waits for it to die) and creates a new one; each worker announces
 * itself to the driver (the calling thread) through a mutex + condition
 * variable and waits on another for "crash", then returns.
 */
#include <stdlib.h>
#include <string.h>

#include "bench/bench_int.h"

#define FR_TAG_CRASH RUSM__BENCH_TAG_WORK  /* driver -> child */
#define FR_TAG_HELLO RUSM__BENCH_TAG_REPLY /* child -> driver: I am up */
#define FR_PERIOD_MS 3600000u              /* an hour: no restart expires */

typedef struct recovery {
  rusm_rt *rt;
  rusm_pid_t main;   /* the waiter: DONE goes here */
  rusm_pid_t driver; /* announcements go here; set before the supervisor */
  uint64_t n;
  uint64_t done;  /* restarts seen (driver-only) */
  int64_t *lat;   /* n entries, ns */
  int64_t t0, t1; /* driver-only; read by main after DONE */
} recovery;

/* --- the crashing child ---------------------------------------------- */

static rusm_next child_wait(void) {
  rusm_filter f = rusm_filter_tag(FR_TAG_CRASH);
  return rusm_next_wait_for(&f, -1);
}

static rusm_next child_init(rusm_proc *self, void **state) {
  recovery *r = *state;
  rusm_send(r->rt, r->driver, FR_TAG_HELLO, NULL, 0);
  return child_wait();
}

static rusm_next child_handle(rusm_proc *self, void *state, rusm_msg *msg) {
  if (msg && rusm_msg_tag(msg) == FR_TAG_CRASH)
    return rusm_next_stop(rusm_reason_str("boom"));
  return child_wait();
}

static const rusm_stackless_ops child_ops = {.init = child_init,
                                             .handle = child_handle};

/* Runs in the supervisor's process. */
static int child_start(rusm_rt *rt, void *arg, rusm_pid_t *out) {
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  return rusm_spawn_stackless(rt, &child_ops, arg, &o, out);
}

/* --- the driver -------------------------------------------------------- */

/* The next announcement: its sender is the current child. */
static int await_hello(rusm_proc *self, rusm_pid_t *child) {
  rusm_filter f = rusm_filter_tag(FR_TAG_HELLO);
  rusm_msg *m = NULL;
  int rc = rusm_receive(self, &f, RUSM_BENCH_WAIT_MS, &m);
  if (rc < 0)
    return rc;
  *child = rusm_msg_from(m);
  rusm_msg_free(m);
  return 0;
}

static int drive(rusm_proc *self, recovery *r) {
  rusm_sup_flags flags;
  rusm_sup_flags_init(&flags);
  flags.strategy = RUSM_ONE_FOR_ONE;
  flags.intensity = r->n + 10 > UINT32_MAX ? UINT32_MAX : (uint32_t)r->n + 10;
  flags.period_ms = FR_PERIOD_MS;
  rusm_child_spec spec = {
      .id = "crasher",
      .start = child_start,
      .arg = r,
      .restart = RUSM_PERMANENT,
      .shutdown_ms = 5000, /* OTP's default for a worker */
      .supervisor = false,
  };
  rusm_pid_t sup = RUSM_PID_NONE, child = RUSM_PID_NONE;
  int rc = rusm_sup_start(r->rt, &flags, &spec, 1, NULL, &sup);
  if (rc < 0)
    return rc;
  rc = await_hello(self, &child);

  r->t0 = r->t1 = rusm_now_ns();
  while (rc == 0 && r->done < r->n) {
    int64_t t = rusm_now_ns();
    rc = rusm_send(r->rt, child, FR_TAG_CRASH, NULL, 0);
    if (rc == 0)
      rc = await_hello(self, &child);
    if (rc == 0) {
      r->t1 = rusm_now_ns();
      r->lat[r->done++] = r->t1 - t;
    }
  }

  int stop_rc = rusm_sup_stop(r->rt, sup, RUSM_BENCH_WAIT_MS);
  return rc < 0 ? rc : stop_rc;
}

static void driver_fn(rusm_proc *self, void *arg) {
  recovery *r = arg;
  /* Set here rather than from rusm_spawn_stackful's out pid, which the
   * driver may outrun; the children read it after the supervisor request,
   * which orders it. */
  r->driver = rusm_self(self);
  int rc = drive(self, r);
  rusm__bench_send_status(r->rt, r->main, RUSM__BENCH_TAG_DONE, rc);
}

static void fill_latency(rusm_bench_sample *out, int64_t *lat, uint64_t n) {
  out->p50_us = (double)rusm_bench_percentile(lat, n, 50) / 1e3;
  out->p99_us = (double)rusm_bench_percentile(lat, n, 99) / 1e3;
}

static int recovery_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  int64_t *lat = malloc(env->n * sizeof *lat);
  if (!lat)
    return RUSM_ENOMEM;
  memset(lat, 0, env->n * sizeof *lat); /* fault the pages in, untimed */
  rusm__bench_waiter w = {0};
  int rc = rusm__bench_attach(env->rt, &w);
  if (rc < 0) {
    free(lat);
    return rc;
  }
  recovery r = {.rt = env->rt, .main = w.pid, .n = env->n, .lat = lat};
  rusm_pid_t driver;
  rc = rusm_spawn_stackful(env->rt, driver_fn, &r, NULL, &driver);
  if (rc == 0)
    rc = rusm__bench_await(&w, RUSM__BENCH_TAG_DONE);
  int idle_rc = rusm_rt_wait_idle(env->rt, RUSM_BENCH_WAIT_MS);
  rusm__bench_detach(&w);
  if (rc == 0)
    rc = idle_rc;
  if (rc == 0) {
    out->ops = r.done;
    out->ns = r.t1 - r.t0;
    fill_latency(out, lat, r.done);
  }
  free(lat);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Baseline: thread restart                                            */
/* ------------------------------------------------------------------ */

typedef struct trestart {
  pthread_mutex_t mu;
  pthread_cond_t hello_cv; /* the driver waits for an announcement */
  pthread_cond_t crash_cv; /* the worker waits for "crash" */
  uint64_t hellos;         /* announcements so far */
  bool crash;              /* a crash request for the current worker */
  bool stop;               /* no restart after this exit */
  int err;                 /* a failed restart (the driver stops waiting) */
} trestart;

static const char boom[] = "boom";

static void *tr_worker(void *arg) {
  trestart *t = arg;
  pthread_mutex_lock(&t->mu);
  t->hellos++;
  pthread_cond_signal(&t->hello_cv);
  while (!t->crash)
    pthread_cond_wait(&t->crash_cv, &t->mu);
  t->crash = false;
  pthread_mutex_unlock(&t->mu);
  return (void *)boom; /* the exit reason, which the supervisor reads */
}

/* Starts the worker, waits for it to die, starts another, until told to
 * stop. */
static void *tr_supervisor(void *arg) {
  trestart *t = arg;
  for (;;) {
    pthread_t w;
    if (pthread_create(&w, NULL, tr_worker, t) != 0) {
      pthread_mutex_lock(&t->mu);
      t->err = RUSM_ESYS;
      pthread_cond_signal(&t->hello_cv);
      pthread_mutex_unlock(&t->mu);
      return NULL;
    }
    void *why = NULL;
    pthread_join(w, &why);
    pthread_mutex_lock(&t->mu);
    bool stop = t->stop;
    pthread_mutex_unlock(&t->mu);
    if (stop)
      return NULL;
  }
}

/* Waits (mu held) until the announcement count reaches want. */
static int tr_await_hello(trestart *t, uint64_t want) {
  while (t->hellos < want && !t->err)
    pthread_cond_wait(&t->hello_cv, &t->mu);
  return t->err;
}

static int recovery_baseline(const rusm_bench_env *env,
                             rusm_bench_sample *out) {
  uint64_t n = env->n;
  int64_t *lat = malloc(n * sizeof *lat);
  if (!lat)
    return RUSM_ENOMEM;
  memset(lat, 0, n * sizeof *lat);
  trestart t = {.hellos = 0};
  pthread_mutex_init(&t.mu, NULL);
  pthread_cond_init(&t.hello_cv, NULL);
  pthread_cond_init(&t.crash_cv, NULL);
  pthread_t sup;
  int rc = 0;
  if (pthread_create(&sup, NULL, tr_supervisor, &t) != 0)
    rc = RUSM_ESYS;

  uint64_t done = 0;
  int64_t t0 = 0, t1 = 0;
  if (rc == 0) {
    pthread_mutex_lock(&t.mu);
    rc = tr_await_hello(&t, 1); /* the first worker, untimed */
    t0 = t1 = rusm_now_ns();
    while (rc == 0 && done < n) {
      int64_t ts = rusm_now_ns();
      t.crash = true;
      pthread_cond_signal(&t.crash_cv);
      rc = tr_await_hello(&t, done + 2);
      if (rc == 0) {
        t1 = rusm_now_ns();
        lat[done++] = t1 - ts;
      }
    }
    /* Stop the last worker without a restart. */
    t.stop = true;
    t.crash = true;
    pthread_cond_signal(&t.crash_cv);
    pthread_mutex_unlock(&t.mu);
    pthread_join(sup, NULL);
  }
  pthread_cond_destroy(&t.crash_cv);
  pthread_cond_destroy(&t.hello_cv);
  pthread_mutex_destroy(&t.mu);
  if (rc == 0) {
    out->ops = done;
    out->ns = t1 - t0;
    fill_latency(out, lat, done);
  }
  free(lat);
  return rc;
}

const rusm_bench_scenario rusm__bench_fault_recovery = {
    .name = "fault-recovery",
    .summary = "a one_for_one supervisor restarts a crashing child N times; "
               "ops = restarts, p50/p99 of crash -> replacement up",
    .baseline_summary = "thread restart: a supervisor thread joins the dead "
                        "worker thread and creates a new one, which "
                        "announces itself through a mutex + condvar",
    .kind = RUSM_BENCH_LATENCY,
    .default_n = 20000,
    .min_n = 1,
    .run = recovery_run,
    .baseline = recovery_baseline,
};
