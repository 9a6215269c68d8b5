/*
 * spawn-storm: a parent process spawns N stackless children that each send
 * it one message and exit; the parent receives all N. ops = N.
 *
 * The parent is a stackless process too (as in Erlang, where the parent is
 * a process): it spawns in batches and sends itself a "more" message
 * between batches, so that it returns to its scheduler regularly (a
 * stackless callback cannot be preempted) and drains its children's
 * messages as it goes. The clock runs from the parent's init to its last
 * receive; the attached main thread only waits for the final report.
 *
 * Baseline: a fixed pool of one thread per core handed N tasks through a
 * locked queue; each task "sends" one message into a locked result queue
 * that the main thread drains.
 */
#include <stdlib.h>
#include <string.h>

#include "bench/bench_int.h"

#define SPAWN_BATCH 512

typedef struct storm {
  rusm_rt *rt;
  rusm_pid_t main;   /* the waiter */
  rusm_pid_t parent; /* set by the parent's init before any child exists */
  uint64_t n;
  uint64_t spawned; /* parent-only */
  uint64_t got;     /* parent-only */
  int err;          /* parent-only, reported with DONE */
  int64_t t0, t1;   /* parent-only; read by main after DONE */
} storm;

static rusm_next child_init(rusm_proc *self, void **state) {
  storm *st = *state;
  rusm_send(rusm_proc_rt(self), st->parent, RUSM__BENCH_TAG_WORK, NULL, 0);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops child_ops = {.init = child_init};

/* Spawns the next batch; asks for another turn while children remain. */
static void spawn_batch(rusm_proc *self, storm *st) {
  uint64_t end = st->spawned + SPAWN_BATCH;
  if (end > st->n)
    end = st->n;
  while (st->spawned < end) {
    rusm_pid_t pid;
    int rc = rusm_spawn_stackless(st->rt, &child_ops, st, NULL, &pid);
    if (rc < 0) {
      st->err = rc;
      return;
    }
    st->spawned++;
  }
  if (st->spawned < st->n)
    rusm_send(st->rt, rusm_self(self), RUSM__BENCH_TAG_MORE, NULL, 0);
}

static rusm_next parent_finish(storm *st) {
  st->t1 = rusm_now_ns();
  rusm__bench_send_status(st->rt, st->main, RUSM__BENCH_TAG_DONE, st->err);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static rusm_next parent_init(rusm_proc *self, void **state) {
  storm *st = *state;
  st->parent = rusm_self(self);
  st->t0 = rusm_now_ns();
  spawn_batch(self, st);
  if (st->err)
    return parent_finish(st);
  return rusm_next_wait();
}

static rusm_next parent_handle(rusm_proc *self, void *state, rusm_msg *msg) {
  storm *st = state;
  if (!msg)
    return rusm_next_wait();
  if (rusm_msg_tag(msg) == RUSM__BENCH_TAG_MORE) {
    spawn_batch(self, st);
    if (st->err)
      return parent_finish(st);
  } else if (rusm_msg_tag(msg) == RUSM__BENCH_TAG_WORK) {
    if (++st->got == st->n)
      return parent_finish(st);
  }
  return rusm_next_wait();
}

static const rusm_stackless_ops parent_ops = {.init = parent_init,
                                              .handle = parent_handle};

static int storm_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  rusm__bench_waiter w = {0};
  int rc = rusm__bench_attach(env->rt, &w);
  if (rc < 0)
    return rc;
  storm st = {.rt = env->rt, .main = w.pid, .n = env->n};
  rusm_pid_t parent;
  rc = rusm_spawn_stackless(env->rt, &parent_ops, &st, NULL, &parent);
  if (rc == 0)
    rc = rusm__bench_await(&w, RUSM__BENCH_TAG_DONE);
  if (rc == 0)
    rc = rusm_rt_wait_idle(env->rt, RUSM_BENCH_WAIT_MS);
  rusm__bench_detach(&w);
  if (rc < 0)
    return rc;
  out->ops = st.got;
  out->ns = st.t1 - st.t0;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Baseline: fixed thread pool, locked task queue, locked result queue */
/* ------------------------------------------------------------------ */

typedef struct pool pool;
typedef struct task {
  struct task *next;
  void (*fn)(pool *p, struct task *t);
} task;

struct pool {
  pthread_mutex_t tq_mu;
  pthread_cond_t tq_cv;
  task *tq_head, *tq_tail;
  uint32_t tq_idle; /* workers waiting on tq_cv */
  bool quit;

  pthread_mutex_t rq_mu;
  pthread_cond_t rq_cv;
  task *rq_head, *rq_tail; /* a finished task is its own result message */
  bool rq_waiting;
};

/* The task body: "send" one message to the main thread. */
static void task_send_result(pool *p, task *t) {
  t->next = NULL;
  pthread_mutex_lock(&p->rq_mu);
  if (p->rq_tail)
    p->rq_tail->next = t;
  else
    p->rq_head = t;
  p->rq_tail = t;
  if (p->rq_waiting)
    pthread_cond_signal(&p->rq_cv);
  pthread_mutex_unlock(&p->rq_mu);
}

static void *pool_worker(void *arg) {
  pool *p = arg;
  for (;;) {
    pthread_mutex_lock(&p->tq_mu);
    while (!p->tq_head && !p->quit) {
      p->tq_idle++;
      pthread_cond_wait(&p->tq_cv, &p->tq_mu);
      p->tq_idle--;
    }
    task *t = p->tq_head;
    if (!t) { /* quit and drained */
      pthread_mutex_unlock(&p->tq_mu);
      return NULL;
    }
    p->tq_head = t->next;
    if (!p->tq_head)
      p->tq_tail = NULL;
    pthread_mutex_unlock(&p->tq_mu);
    t->fn(p, t);
  }
}

static int storm_baseline(const rusm_bench_env *env, rusm_bench_sample *out) {
  uint64_t n = env->n;
  uint32_t nthreads = env->threads ? env->threads : 1;
  task *tasks = calloc(n, sizeof *tasks);
  pthread_t *th = calloc(nthreads, sizeof *th);
  pool *p = calloc(1, sizeof *p);
  if (!tasks || !th || !p) {
    free(tasks);
    free(th);
    free(p);
    return RUSM_ENOMEM;
  }
  pthread_mutex_init(&p->tq_mu, NULL);
  pthread_cond_init(&p->tq_cv, NULL);
  pthread_mutex_init(&p->rq_mu, NULL);
  pthread_cond_init(&p->rq_cv, NULL);
  uint32_t started = 0;
  int rc = 0;
  for (; started < nthreads; started++)
    if (pthread_create(&th[started], NULL, pool_worker, p) != 0) {
      rc = RUSM_ESYS;
      break;
    }

  uint64_t got = 0;
  int64_t t0 = rusm_now_ns();
  for (uint64_t i = 0; rc == 0 && i < n; i++) {
    task *t = &tasks[i];
    t->fn = task_send_result;
    t->next = NULL;
    pthread_mutex_lock(&p->tq_mu);
    if (p->tq_tail)
      p->tq_tail->next = t;
    else
      p->tq_head = t;
    p->tq_tail = t;
    if (p->tq_idle)
      pthread_cond_signal(&p->tq_cv);
    pthread_mutex_unlock(&p->tq_mu);
  }
  while (rc == 0 && got < n) {
    pthread_mutex_lock(&p->rq_mu);
    while (!p->rq_head) {
      p->rq_waiting = true;
      pthread_cond_wait(&p->rq_cv, &p->rq_mu);
      p->rq_waiting = false;
    }
    task *batch = p->rq_head; /* drain everything queued so far */
    p->rq_head = p->rq_tail = NULL;
    pthread_mutex_unlock(&p->rq_mu);
    for (; batch; batch = batch->next)
      got++;
  }
  int64_t t1 = rusm_now_ns();

  pthread_mutex_lock(&p->tq_mu);
  p->quit = true;
  pthread_cond_broadcast(&p->tq_cv);
  pthread_mutex_unlock(&p->tq_mu);
  for (uint32_t i = 0; i < started; i++)
    pthread_join(th[i], NULL);
  pthread_cond_destroy(&p->rq_cv);
  pthread_mutex_destroy(&p->rq_mu);
  pthread_cond_destroy(&p->tq_cv);
  pthread_mutex_destroy(&p->tq_mu);
  free(p);
  free(th);
  free(tasks);
  if (rc < 0)
    return rc;
  out->ops = got;
  out->ns = t1 - t0;
  return 0;
}

const rusm_bench_scenario rusm__bench_spawn_storm = {
    .name = "spawn-storm",
    .summary = "a process spawns N stackless children that each message it "
               "once and exit; ops = N",
    .baseline_summary = "a fixed pool of one thread per core handed N tasks "
                        "through a locked queue, results through another",
    .kind = RUSM_BENCH_THROUGHPUT,
    .default_n = 200000,
    .min_n = 1,
    .run = storm_run,
    .baseline = storm_baseline,
};
