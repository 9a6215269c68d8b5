/*
 * bench_int.h — internals shared by the harness and the scenario files.
 */
#ifndef RUSM_BENCH_INT_H
#define RUSM_BENCH_INT_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rusm/bench.h"

/* The scenarios (one file each), listed in registry.c. */
extern const rusm_bench_scenario rusm__bench_spawn_storm;
extern const rusm_bench_scenario rusm__bench_ping_pong;
extern const rusm_bench_scenario rusm__bench_fan_in;
extern const rusm_bench_scenario rusm__bench_idle_memory;
extern const rusm_bench_scenario rusm__bench_idle_memory_stackful;
extern const rusm_bench_scenario rusm__bench_cascade;
extern const rusm_bench_scenario rusm__bench_fault_recovery;
extern const rusm_bench_scenario rusm__bench_timers;
extern const rusm_bench_scenario rusm__bench_connection_storm;
extern const rusm_bench_scenario rusm__bench_connection_scale;
extern const rusm_bench_scenario rusm__bench_distributed_fanout;
#ifdef RUSM_HAVE_WASM /* Wasm scenarios (RUSM_WASM), wasm_common.c helpers */
#include "rusm/wasm.h"
extern const rusm_bench_scenario rusm__bench_module_storm;
extern const rusm_bench_scenario rusm__bench_wasm_ping_pong;
extern const rusm_bench_scenario rusm__bench_fairness;
extern const rusm_bench_scenario rusm__bench_wasm_idle_memory;
#endif

/* Tags the scenarios use among themselves (user range: top bit clear). */
#define RUSM__BENCH_TAG_DONE UINT64_C(0x62656e6300000001)
#define RUSM__BENCH_TAG_MORE UINT64_C(0x62656e6300000002)
#define RUSM__BENCH_TAG_WORK UINT64_C(0x62656e6300000003)
#define RUSM__BENCH_TAG_REPLY UINT64_C(0x62656e6300000004)
#define RUSM__BENCH_TAG_STOP UINT64_C(0x62656e6300000005)

/*
 * The calling (non-scheduler) thread attached as a process, so that it can
 * wait for a scenario's "done" message. It only ever waits outside or at
 * the very end of a timed region: the measured loops run between
 * processes.
 */
typedef struct rusm__bench_waiter {
  rusm_proc *self;
  rusm_pid_t pid;
} rusm__bench_waiter;

int rusm__bench_attach(rusm_rt *rt, rusm__bench_waiter *w);
/* Receives one message tagged tag (RUSM_BENCH_WAIT_MS as a failure guard)
 * and returns the int32 status carried in its payload (0 when empty), or
 * RUSM_ETIMEDOUT / RUSM_ESHUTDOWN. */
int rusm__bench_await(rusm__bench_waiter *w, uint64_t tag);
void rusm__bench_detach(rusm__bench_waiter *w);
/* Sends tag with an int32 status payload (what rusm__bench_await reads). */
int rusm__bench_send_status(rusm_rt *rt, rusm_pid_t to, uint64_t tag,
                            int32_t status);
/* The whole buffer to / from a pipe or socket (EINTR retried); false on
 * an error or end of file. */
bool rusm__bench_write_all(int fd, const void *p, size_t len);
bool rusm__bench_read_all(int fd, void *p, size_t len);

#ifdef RUSM_HAVE_WASM
/* build/guests/c/<name>.wasm (or under $RUSM_GUESTS_DIR) into buf. */
int rusm__bench_guest_path(const char *name, char *buf, size_t len);
/* A Wasm host on rt (opts may be NULL) with guest <name> loaded; says on
 * stderr what is missing. Release both with rusm__bench_wasm_close. */
int rusm__bench_wasm_open(rusm_rt *rt, const rusm_wasm_opts *opts,
                          const char *guest, rusm_wasm **w,
                          rusm_wasm_module **m);
void rusm__bench_wasm_close(rusm_wasm *w, rusm_wasm_module *m);
/* rusm_wasm_spawn of entry with arg and caps, default options else. */
int rusm__bench_wasm_spawn(rusm_wasm_module *m, const char *entry,
                           const void *arg, size_t len, uint32_t caps,
                           rusm_pid_t *out);
/* The next message tagged tag (RUSM_BENCH_WAIT_MS guard); caller frees. */
int rusm__bench_take(rusm__bench_waiter *w, uint64_t tag, rusm_msg **out);
#endif

/*
 * A start gate for baseline threads: they block in wait() until open(), so
 * thread creation stays out of the timed region.
 */
typedef struct rusm__bench_gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool open;
} rusm__bench_gate;

void rusm__bench_gate_init(rusm__bench_gate *g);
void rusm__bench_gate_wait(rusm__bench_gate *g);
void rusm__bench_gate_open(rusm__bench_gate *g);
void rusm__bench_gate_destroy(rusm__bench_gate *g);

/*
 * A bounded string builder with snprintf's contract: len counts what would
 * have been written, buf stays NUL-terminated within cap.
 */
typedef struct rusm__sb {
  char *buf;
  size_t cap;
  size_t len;
} rusm__sb;

void rusm__sb_init(rusm__sb *sb, char *buf, size_t cap);
void rusm__sb_printf(rusm__sb *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* `"key":value` with a leading comma unless first; non-finite values are
 * written as 0 so the output stays valid JSON. */
void rusm__sb_json_num(rusm__sb *sb, bool first, const char *key, double v,
                       const char *fmt);
/* A short human figure: 1.23M, 456.7k, 12. */
const char *rusm__bench_human(double v, char *buf, size_t len);

#endif /* RUSM_BENCH_INT_H */
