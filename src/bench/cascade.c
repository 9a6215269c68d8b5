/*
 * cascade: a tree of N linked stackless processes is killed at its root;
 * ops = N processes torn down, timed from the kill until the last one is
 * gone.
 *
 * Node i of the tree has children CASCADE_FANOUT*i+1 ... (heap order):
 * each node spawns its children with opts.link from its own init, so the
 * links exist before a child can run. Every node then bumps a shared
 * counter and parks in receive; the last one messages the main thread
 * (one message in all, as in idle-memory). Building the tree is not timed.
 * Then the clock starts, the main thread sends the root an untrappable
 * kill and waits in rusm_rt_wait_idle() (woken by the last exit, not
 * polling): the root exits killed, its links get exit signals with reason
 * killed and, not trapping, die with it, and so on down the tree.
 *
 * Baseline: the same fan-out without the runtime: a tree of N heap nodes
 * torn down by a fixed pool of one thread per core; a worker takes a node
 * from a locked work queue, pushes its children onto it (signalling idle
 * workers) and frees the node.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_int.h"

/* Children per node: a depth of log4(N) keeps the wave wide enough for
 * every scheduler after a few levels, and each dying node signals a
 * handful of links, as a supervision tree's nodes do. */
#define CASCADE_FANOUT 4

typedef struct cascade cascade;

/* A node's spawn argument: its place in the tree is its index in the
 * array, so one pointer per node is all the bookkeeping there is. */
typedef struct cnode {
  cascade *c;
} cnode;

struct cascade {
  rusm_rt *rt;
  rusm_pid_t main;
  uint64_t n;
  cnode *nodes; /* n entries */
  _Atomic uint64_t ready;
  _Atomic int err; /* the first spawn failure, reported with DONE */
};

static const rusm_stackless_ops node_ops;

static void node_ready(cascade *c) {
  /* Relaxed: the count is the only datum shared; the DONE message the
   * last node sends orders everything main reads afterwards. */
  if (atomic_fetch_add_explicit(&c->ready, 1, memory_order_relaxed) + 1 == c->n)
    rusm__bench_send_status(c->rt, c->main, RUSM__BENCH_TAG_DONE, 0);
}

/* A failed spawn leaves its subtree missing, so the count would never
 * reach n: report the failure at once instead (main stops waiting). */
static void node_failed(cascade *c, int rc) {
  int none = 0;
  /* Relaxed: the value travels in the DONE message itself. */
  if (atomic_compare_exchange_strong_explicit(
          &c->err, &none, rc, memory_order_relaxed, memory_order_relaxed))
    rusm__bench_send_status(c->rt, c->main, RUSM__BENCH_TAG_DONE, rc);
}

static rusm_next node_init(rusm_proc *self, void **state) {
  cnode *me = *state;
  cascade *c = me->c;
  uint64_t i = (uint64_t)(me - c->nodes);
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  for (uint64_t k = 1; k <= CASCADE_FANOUT; k++) {
    uint64_t child = CASCADE_FANOUT * i + k;
    if (child >= c->n)
      break;
    rusm_pid_t pid;
    int rc = rusm_spawn_stackless(c->rt, &node_ops, &c->nodes[child], &o, &pid);
    if (rc < 0) {
      node_failed(c, rc);
      break;
    }
  }
  node_ready(c);
  return rusm_next_wait(); /* until an exit signal ends it */
}

static rusm_next node_handle(rusm_proc *self, void *state, rusm_msg *msg) {
  return rusm_next_wait(); /* nothing is sent to a node */
}

static const rusm_stackless_ops node_ops = {.init = node_init,
                                            .handle = node_handle};

static int cascade_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  uint64_t n = env->n;
  cnode *nodes = malloc(n * sizeof *nodes);
  if (!nodes)
    return RUSM_ENOMEM;
  rusm__bench_waiter w = {0};
  int rc = rusm__bench_attach(env->rt, &w);
  if (rc < 0) {
    free(nodes);
    return rc;
  }
  cascade c = {.rt = env->rt, .main = w.pid, .n = n, .nodes = nodes};
  atomic_init(&c.ready, 0);
  atomic_init(&c.err, 0);
  for (uint64_t i = 0; i < n; i++)
    nodes[i].c = &c;

  rusm_pid_t root = RUSM_PID_NONE;
  rc = rusm_spawn_stackless(env->rt, &node_ops, &nodes[0], NULL, &root);
  if (rc == 0)
    rc = rusm__bench_await(&w, RUSM__BENCH_TAG_DONE);
  int64_t t0 = 0, t1 = 0;
  if (rc == 0) {
    t0 = rusm_now_ns();
    rc = rusm_kill(env->rt, root);
  }
  /* On success this is the timed wait; after a failure it is the cleanup
   * (a partial tree, or one whose root is already gone). */
  if (rc < 0 && root != RUSM_PID_NONE)
    rusm_kill(env->rt, root);
  int idle_rc = rusm_rt_wait_idle(env->rt, RUSM_BENCH_WAIT_MS);
  t1 = rusm_now_ns();
  rusm__bench_detach(&w);
  free(nodes);
  if (rc == 0)
    rc = idle_rc;
  if (rc < 0)
    return rc;
  out->ops = n;
  out->ns = t1 - t0;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Baseline: heap tree torn down by a thread pool, locked work queue   */
/* ------------------------------------------------------------------ */

typedef struct hnode {
  struct hnode *next; /* work-queue link */
  struct hnode *kids[CASCADE_FANOUT];
} hnode;

typedef struct teardown {
  pthread_mutex_t mu;
  pthread_cond_t work_cv; /* workers wait for nodes */
  pthread_cond_t done_cv; /* main waits for the last node */
  hnode *head, *tail;
  uint32_t idle; /* workers waiting on work_cv */
  uint64_t left; /* nodes not yet torn down */
  bool quit;
  rusm__bench_gate gate;
} teardown;

static void *teardown_worker(void *arg) {
  teardown *t = arg;
  rusm__bench_gate_wait(&t->gate);
  pthread_mutex_lock(&t->mu);
  for (;;) {
    while (!t->head && !t->quit) {
      t->idle++;
      pthread_cond_wait(&t->work_cv, &t->mu);
      t->idle--;
    }
    hnode *x = t->head;
    if (!x)
      break; /* quit */
    t->head = x->next;
    if (!t->head)
      t->tail = NULL;
    pthread_mutex_unlock(&t->mu);

    /* "Notify" the children: one batch onto the queue, one lock. */
    hnode *first = NULL, *last = NULL;
    for (int k = 0; k < CASCADE_FANOUT && x->kids[k]; k++) {
      hnode *kid = x->kids[k];
      kid->next = NULL;
      if (last)
        last->next = kid;
      else
        first = kid;
      last = kid;
    }
    free(x);

    pthread_mutex_lock(&t->mu);
    if (first) {
      if (t->tail)
        t->tail->next = first;
      else
        t->head = first;
      t->tail = last;
      if (t->idle)
        pthread_cond_signal(&t->work_cv);
    }
    if (--t->left == 0) {
      t->quit = true;
      pthread_cond_broadcast(&t->work_cv);
      pthread_cond_signal(&t->done_cv);
    }
  }
  pthread_mutex_unlock(&t->mu);
  return NULL;
}

/* Frees a tree through the creation chain of its nodes. */
static void free_chain(hnode *x) {
  while (x) {
    hnode *dead = x;
    x = x->next;
    free(dead);
  }
}

/* Builds the same heap-ordered tree as the rusm run, one malloc per node.
 * While building, `next` chains the nodes in creation (breadth-first)
 * order, which is also the order of their parents: a cursor walks it,
 * moving on after every CASCADE_FANOUT children. */
static hnode *build_tree(uint64_t n) {
  hnode *root = calloc(1, sizeof *root);
  if (!root)
    return NULL;
  hnode *parent = root, *last = root;
  for (uint64_t i = 1; i < n; i++) {
    hnode *x = calloc(1, sizeof *x);
    if (!x) {
      free_chain(root);
      return NULL;
    }
    last->next = x;
    last = x;
    parent->kids[(i - 1) % CASCADE_FANOUT] = x;
    if ((i - 1) % CASCADE_FANOUT == CASCADE_FANOUT - 1)
      parent = parent->next;
  }
  return root;
}

static int cascade_baseline(const rusm_bench_env *env, rusm_bench_sample *out) {
  uint64_t n = env->n;
  uint32_t nthreads = env->threads ? env->threads : 1;
  pthread_t *th = calloc(nthreads, sizeof *th);
  teardown *t = calloc(1, sizeof *t);
  hnode *root = th && t ? build_tree(n) : NULL;
  if (!root) {
    free(th);
    free(t);
    return RUSM_ENOMEM;
  }
  pthread_mutex_init(&t->mu, NULL);
  pthread_cond_init(&t->work_cv, NULL);
  pthread_cond_init(&t->done_cv, NULL);
  rusm__bench_gate_init(&t->gate);
  t->left = n;
  uint32_t started = 0;
  int rc = 0;
  for (; started < nthreads; started++)
    if (pthread_create(&th[started], NULL, teardown_worker, t) != 0) {
      rc = RUSM_ESYS;
      break;
    }

  int64_t t0 = 0, t1 = 0;
  if (rc == 0) {
    root->next = NULL; /* from here on, `next` is the work-queue link */
    t0 = rusm_now_ns();
    t->head = t->tail = root; /* before the gate opens: no lock needed */
    rusm__bench_gate_open(&t->gate);
    pthread_mutex_lock(&t->mu);
    while (t->left)
      pthread_cond_wait(&t->done_cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
    t1 = rusm_now_ns();
  } else {
    /* Nothing was torn down: let the started workers leave, then free
     * the tree here (its creation chain is intact). */
    pthread_mutex_lock(&t->mu);
    t->quit = true;
    pthread_mutex_unlock(&t->mu);
    rusm__bench_gate_open(&t->gate);
    free_chain(root);
  }
  for (uint32_t i = 0; i < started; i++)
    pthread_join(th[i], NULL);
  rusm__bench_gate_destroy(&t->gate);
  pthread_cond_destroy(&t->done_cv);
  pthread_cond_destroy(&t->work_cv);
  pthread_mutex_destroy(&t->mu);
  free(t);
  free(th);
  if (rc < 0)
    return rc;
  out->ops = n;
  out->ns = t1 - t0;
  return 0;
}

const rusm_bench_scenario rusm__bench_cascade = {
    .name = "cascade",
    .summary = "a tree of N linked stackless processes killed at its root: "
               "exit signals tear it down; ops = N processes gone",
    .baseline_summary = "a tree of N heap nodes torn down by a pool of one "
                        "thread per core through a locked work queue",
    .kind = RUSM_BENCH_THROUGHPUT,
    .default_n = 100000,
    .min_n = 1,
    .run = cascade_run,
    .baseline = cascade_baseline,
};
