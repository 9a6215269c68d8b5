/*
 * demo.c — the demo application (see demo.h). Built only on the public
 * API, as a user would write it.
 */
#include "cli/demo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T_TICK UINT64_C(0x64656d6f00000001)
#define T_WORK UINT64_C(0x64656d6f00000002)
#define T_PUT UINT64_C(0x64656d6f00000003)
#define T_GET UINT64_C(0x64656d6f00000004)
#define T_VAL UINT64_C(0x64656d6f00000005)
#define WORKERS 8
#define TICK_MS 100

struct rusm__demo {
  rusm_rt *rt;
  rusm_pid_t sup, pool;
  uint64_t seed; /* xorshift, touched only by the ticker */
};

/* ---- ticker: every TICK_MS, work for every worker of the pool ------ */

static rusm_next ticker_init(rusm_proc *self, void **state) {
  rusm__demo *d = *state;
  rusm_register(d->rt, "ticker", rusm_self(self));
  rusm_send_after(d->rt, TICK_MS, rusm_self(self), T_TICK, NULL, 0, NULL);
  return rusm_next_wait();
}

static rusm_next ticker_handle(rusm_proc *self, void *state, rusm_msg *m) {
  rusm__demo *d = state;
  if (m && rusm_msg_tag(m) == T_TICK) {
    /* workers register as worker-<i>: a crashed one's replacement takes
     * the name again, so the ticker needs no pids */
    for (int i = 0; i < WORKERS; i++) {
      char name[32];
      d->seed ^= d->seed << 13;
      d->seed ^= d->seed >> 7;
      d->seed ^= d->seed << 17;
      uint32_t roll = (uint32_t)(d->seed % 100);
      snprintf(name, sizeof name, "worker-%d", i);
      rusm_send_named(d->rt, name, T_WORK, &roll, sizeof roll);
    }
    rusm_send_after(d->rt, TICK_MS, rusm_self(self), T_TICK, NULL, 0, NULL);
  }
  return rusm_next_wait();
}

static const rusm_stackless_ops ticker_ops = {ticker_init, ticker_handle, NULL};

static int start_ticker(rusm_rt *rt, void *arg, rusm_pid_t *out) {
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  return rusm_spawn_stackless(rt, &ticker_ops, arg, &o, out);
}

/* ---- workers: stackful; crash on a bad roll ("let it crash") ------- */

static void worker_fn(rusm_proc *self, void *arg) {
  int idx = (int)(uintptr_t)arg;
  char name[32];
  snprintf(name, sizeof name, "worker-%d", idx);
  rusm_rt *rt = rusm_proc_rt(self);
  rusm_register(rt, name, rusm_self(self));
  rusm_filter f = rusm_filter_tag(T_WORK);
  for (;;) {
    rusm_msg *m;
    if (rusm_receive(self, &f, -1, &m) != 0)
      return;
    uint32_t roll = 0;
    if (rusm_msg_len(m) == sizeof roll)
      memcpy(&roll, rusm_msg_data(m), sizeof roll);
    rusm_msg_free(m);
    if (roll == 0) /* about one tick in a hundred */
      rusm_exit_self(self, rusm_reason_str("bad roll"));
    /* "work": record something in the key-value server */
    uint32_t kv[2] = {(uint32_t)idx, roll};
    rusm_send_named(rt, "kv", T_PUT, kv, sizeof kv);
  }
}

static int start_worker(rusm_rt *rt, void *arg, rusm_pid_t *out) {
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  return rusm_spawn_stackful(rt, worker_fn, arg, &o, out);
}

/* ---- kv: a key-value server (stackless) --------------------------- */

typedef struct kv_state {
  uint32_t vals[WORKERS];
  uint64_t puts, gets;
} kv_state;

static rusm_next kv_init(rusm_proc *self, void **state) {
  kv_state *s = calloc(1, sizeof *s);
  *state = s;
  if (!s)
    return rusm_next_stop(rusm_reason_str("no memory"));
  rusm_register(rusm_proc_rt(self), "kv", rusm_self(self));
  return rusm_next_wait();
}

static rusm_next kv_handle(rusm_proc *self, void *state, rusm_msg *m) {
  kv_state *s = state;
  if (!m)
    return rusm_next_wait();
  uint32_t kv[2];
  if (rusm_msg_tag(m) == T_PUT && rusm_msg_len(m) == sizeof kv) {
    memcpy(kv, rusm_msg_data(m), sizeof kv);
    if (kv[0] < WORKERS)
      s->vals[kv[0]] = kv[1];
    s->puts++;
  } else if (rusm_msg_tag(m) == T_GET && rusm_msg_len(m) == sizeof(uint32_t)) {
    uint32_t k;
    memcpy(&k, rusm_msg_data(m), sizeof k);
    uint32_t v = k < WORKERS ? s->vals[k] : 0;
    rusm_send(rusm_proc_rt(self), rusm_msg_from(m), T_VAL, &v, sizeof v);
    s->gets++;
  }
  return rusm_next_wait();
}

static void kv_terminate(rusm_proc *self, void *state, const rusm_reason *why) {
  free(state);
}

static const rusm_stackless_ops kv_ops = {kv_init, kv_handle, kv_terminate};

static int start_kv(rusm_rt *rt, void *arg, rusm_pid_t *out) {
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  return rusm_spawn_stackless(rt, &kv_ops, arg, &o, out);
}

/* ---- client: reads from kv every 20 ms ----------------------------- */

static rusm_next client_init(rusm_proc *self, void **state) {
  return rusm_next_wait_for(NULL, 20);
}

static rusm_next client_handle(rusm_proc *self, void *state, rusm_msg *m) {
  if (!m) { /* the 20 ms timeout: ask again */
    uint32_t k = (uint32_t)(rusm_now_ns() / 1000000) % WORKERS;
    rusm_send_named(rusm_proc_rt(self), "kv", T_GET, &k, sizeof k);
  }
  return rusm_next_wait_for(NULL, 20);
}

static const rusm_stackless_ops client_ops = {client_init, client_handle, NULL};

static int start_client(rusm_rt *rt, void *arg, rusm_pid_t *out) {
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  return rusm_spawn_stackless(rt, &client_ops, arg, &o, out);
}

/* ---- the pool: a dynamic supervisor of workers ---------------------- */

static int start_pool(rusm_rt *rt, void *arg, rusm_pid_t *out) {
  rusm__demo *d = arg;
  rusm_sup_flags f;
  rusm_sup_flags_init(&f);
  f.intensity = 20; /* workers crash on purpose: allow it */
  f.period_ms = 5000;
  rusm_child_spec tmpl = {"worker",       start_worker, NULL,
                          RUSM_PERMANENT, 500,          false};
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  int rc = rusm_dynsup_start(rt, &f, &tmpl, &o, out);
  for (int i = 0; rc == 0 && i < WORKERS; i++)
    rc = rusm_dynsup_start_child(rt, *out, (void *)(uintptr_t)i, NULL);
  if (rc == 0) {
    d->pool = *out;
    rusm_register(rt, "pool", *out);
  }
  return rc;
}

int rusm__demo_start(rusm_rt *rt, rusm__demo **out) {
  rusm__demo *d = calloc(1, sizeof *d);
  if (!d)
    return RUSM_ENOMEM;
  d->rt = rt;
  d->seed = (uint64_t)rusm_now_ns() | 1;
  rusm_child_spec specs[] = {
      {"kv", start_kv, d, RUSM_PERMANENT, 1000, false},
      {"pool", start_pool, d, RUSM_PERMANENT, RUSM_SHUTDOWN_INFINITY, true},
      {"ticker", start_ticker, d, RUSM_PERMANENT, 1000, false},
      {"client", start_client, d, RUSM_PERMANENT, 1000, false},
  };
  rusm_sup_flags f;
  rusm_sup_flags_init(&f);
  f.strategy = RUSM_ONE_FOR_ONE;
  f.intensity = 5;
  f.period_ms = 5000;
  int rc = rusm_sup_start(rt, &f, specs, sizeof specs / sizeof specs[0], NULL,
                          &d->sup);
  if (rc != 0) {
    free(d);
    return rc;
  }
  rusm_register(rt, "demo_sup", d->sup);
  *out = d;
  return 0;
}

void rusm__demo_free(rusm__demo *d) { free(d); }
