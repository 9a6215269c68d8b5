/*
 * fan-in: 16 stackless sender processes each send N/16 messages (8-byte
 * payload) to one receiver process; the clock runs from just before the
 * senders are spawned until the receiver has taken the last message.
 * ops = 16 * (N / 16).
 *
 * A sender sends in batches and messages itself "more" between them, so it
 * returns to its scheduler regularly (a stackless callback cannot be
 * preempted mid-call).
 *
 * Baseline: 16 threads pushing into one mutex-protected queue that one
 * consumer thread drains, waiting on a condition variable when it is
 * empty.
 */
#include <stdlib.h>
#include <string.h>

#include "bench/bench_int.h"

#define FAN_SENDERS 16
#define SEND_BATCH 256

typedef struct fanin {
  rusm_rt *rt;
  rusm_pid_t main;
  rusm_pid_t receiver;
  uint64_t per; /* messages per sender */
  uint64_t total;
  uint64_t got;  /* receiver-only */
  int64_t t_end; /* receiver-only; read by main after DONE */
} fanin;

typedef struct sender {
  fanin *f;
  uint64_t sent;
  int err;
} sender;

static rusm_next receiver_handle(rusm_proc *self, void *state, rusm_msg *msg) {
  fanin *f = state;
  if (msg && rusm_msg_tag(msg) == RUSM__BENCH_TAG_WORK &&
      ++f->got == f->total) {
    f->t_end = rusm_now_ns();
    rusm__bench_send_status(f->rt, f->main, RUSM__BENCH_TAG_DONE, 0);
    return rusm_next_stop(RUSM_REASON_NORMAL);
  }
  return rusm_next_wait();
}

static const rusm_stackless_ops receiver_ops = {.handle = receiver_handle};

static rusm_next sender_batch(rusm_proc *self, sender *s) {
  fanin *f = s->f;
  uint64_t end = s->sent + SEND_BATCH;
  if (end > f->per)
    end = f->per;
  for (; s->sent < end; s->sent++) {
    int rc = rusm_send(f->rt, f->receiver, RUSM__BENCH_TAG_WORK, &s->sent,
                       sizeof s->sent);
    if (rc < 0) {
      /* The receiver would wait forever: tell main directly. */
      s->err = rc;
      rusm__bench_send_status(f->rt, f->main, RUSM__BENCH_TAG_DONE, rc);
      return rusm_next_stop(RUSM_REASON_NORMAL);
    }
  }
  if (s->sent == f->per)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  rusm_send(f->rt, rusm_self(self), RUSM__BENCH_TAG_MORE, NULL, 0);
  rusm_filter more = rusm_filter_tag(RUSM__BENCH_TAG_MORE);
  return rusm_next_wait_for(&more, -1);
}

static rusm_next sender_init(rusm_proc *self, void **state) {
  return sender_batch(self, *state);
}

static rusm_next sender_handle(rusm_proc *self, void *state, rusm_msg *msg) {
  return sender_batch(self, state);
}

static const rusm_stackless_ops sender_ops = {.init = sender_init,
                                              .handle = sender_handle};

static int fanin_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  rusm__bench_waiter w = {0};
  int rc = rusm__bench_attach(env->rt, &w);
  if (rc < 0)
    return rc;
  fanin f = {.rt = env->rt, .main = w.pid, .per = env->n / FAN_SENDERS};
  f.total = f.per * FAN_SENDERS;
  sender senders[FAN_SENDERS];
  for (int i = 0; i < FAN_SENDERS; i++)
    senders[i] = (sender){.f = &f};

  rc = rusm_spawn_stackless(env->rt, &receiver_ops, &f, NULL, &f.receiver);
  int64_t t0 = rusm_now_ns();
  for (int i = 0; rc == 0 && i < FAN_SENDERS; i++) {
    rusm_pid_t pid;
    rc = rusm_spawn_stackless(env->rt, &sender_ops, &senders[i], NULL, &pid);
  }
  if (rc == 0)
    rc = rusm__bench_await(&w, RUSM__BENCH_TAG_DONE);
  /* After a failed spawn or send the receiver would wait forever. */
  if (rc < 0 && f.receiver)
    rusm_kill(env->rt, f.receiver);
  int idle = rusm_rt_wait_idle(env->rt, RUSM_BENCH_WAIT_MS);
  rusm__bench_detach(&w);
  if (rc == 0)
    rc = idle;
  if (rc < 0)
    return rc;
  out->ops = f.got;
  out->ns = f.t_end - t0;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Baseline: 16 producer threads, one locked queue, one consumer       */
/* ------------------------------------------------------------------ */

typedef struct node {
  struct node *next;
  uint64_t value;
} node;

typedef struct queue {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  node *head, *tail;
  bool waiting; /* consumer asleep on cv */
  uint64_t per, total;
  node *nodes; /* total entries, preallocated: producer i owns slice i */
  int64_t t_end;
  rusm__bench_gate gate;
} queue;

typedef struct producer {
  queue *q;
  uint32_t index;
} producer;

static void *producer_main(void *arg) {
  producer *p = arg;
  queue *q = p->q;
  node *mine = q->nodes + (uint64_t)p->index * q->per;
  rusm__bench_gate_wait(&q->gate);
  for (uint64_t i = 0; i < q->per; i++) {
    node *nd = &mine[i];
    nd->next = NULL;
    nd->value = i;
    pthread_mutex_lock(&q->mu);
    if (q->tail)
      q->tail->next = nd;
    else
      q->head = nd;
    q->tail = nd;
    if (q->waiting)
      pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
  }
  return NULL;
}

static void *consumer_main(void *arg) {
  queue *q = arg;
  uint64_t got = 0;
  rusm__bench_gate_wait(&q->gate);
  while (got < q->total) {
    pthread_mutex_lock(&q->mu);
    while (!q->head) {
      q->waiting = true;
      pthread_cond_wait(&q->cv, &q->mu);
      q->waiting = false;
    }
    node *batch = q->head; /* take everything queued so far */
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    for (; batch; batch = batch->next)
      got++;
  }
  q->t_end = rusm_now_ns();
  return NULL;
}

static int fanin_baseline(const rusm_bench_env *env, rusm_bench_sample *out) {
  queue q = {.per = env->n / FAN_SENDERS};
  q.total = q.per * FAN_SENDERS;
  q.nodes = calloc(q.total ? q.total : 1, sizeof *q.nodes);
  if (!q.nodes)
    return RUSM_ENOMEM;
  pthread_mutex_init(&q.mu, NULL);
  pthread_cond_init(&q.cv, NULL);
  rusm__bench_gate_init(&q.gate);
  producer prods[FAN_SENDERS];
  pthread_t th[FAN_SENDERS + 1];
  int started = 0, rc = 0;
  if (pthread_create(&th[started], NULL, consumer_main, &q) == 0)
    started++;
  else
    rc = RUSM_ESYS;
  for (uint32_t i = 0; rc == 0 && i < FAN_SENDERS; i++) {
    prods[i] = (producer){.q = &q, .index = i};
    if (pthread_create(&th[started], NULL, producer_main, &prods[i]) == 0)
      started++;
    else
      rc = RUSM_ESYS;
  }
  if (rc < 0 && started) {
    /* Let the started threads run to an end: hand the consumer what the
     * missing producers would have sent, unmeasured. */
    pthread_mutex_lock(&q.mu);
    q.total = (uint64_t)(started - 1) * q.per;
    pthread_mutex_unlock(&q.mu);
  }
  int64_t t0 = rusm_now_ns();
  rusm__bench_gate_open(&q.gate);
  for (int i = 0; i < started; i++)
    pthread_join(th[i], NULL);
  if (rc == 0) {
    out->ops = q.total;
    out->ns = q.t_end - t0;
  }
  rusm__bench_gate_destroy(&q.gate);
  pthread_cond_destroy(&q.cv);
  pthread_mutex_destroy(&q.mu);
  free(q.nodes);
  return rc;
}

const rusm_bench_scenario rusm__bench_fan_in = {
    .name = "fan-in",
    .summary = "16 stackless senders each send N/16 messages to one receiver "
               "process; ops = messages received",
    .baseline_summary = "16 threads pushing into one mutex-protected queue "
                        "drained by one consumer thread (condvar when empty)",
    .kind = RUSM_BENCH_THROUGHPUT,
    .default_n = 2000000,
    .min_n = FAN_SENDERS,
    .run = fanin_run,
    .baseline = fanin_baseline,
};
