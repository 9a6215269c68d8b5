/*
 * dashboard.h — `rusm dashboard`: the server behind the dashboard page
 * (docs/dashboard.md, protocol in docs/dashboard-protocol.md).
 *
 *   dashboard_server.c   routes, the WebSocket feed, sessions, start/stop
 *   dashboard_json.c     every message and object of the protocol (cJSON)
 *   dashboard_metrics.c  /metrics in the Prometheus text format
 *   dashboard_bench.c    scenario runs as child processes
 *   dashboard_assets.c   the embedded page (generated at build time by
 *                        cmake/embed_assets.cmake)
 *
 * Internal to the CLI (and its tests); not a public API.
 */
#ifndef RUSM_CLI_DASHBOARD_H
#define RUSM_CLI_DASHBOARD_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rusm/bench.h"
#include "rusm/observer.h"
#include "rusm/otp.h"
#include "rusm/serve.h"

/* ---- embedded files ------------------------------------------------------ */

typedef struct rusm__dash_asset {
  const char *path;         /* "/index.html", "/assets/index-1a2b3c.js" */
  const char *content_type; /* "text/javascript; charset=utf-8" */
  const char *etag;         /* quoted, e.g. "\"5f1e...\"" */
  const unsigned char *data;
  size_t len;
  int immutable; /* a content-hashed name: cached for a year */
} rusm__dash_asset;

/* The generated table (dashboard_assets.c, built into the rusm binary). */
extern const rusm__dash_asset rusm__dash_assets[];
extern const size_t rusm__dash_asset_count;
extern const int rusm__dash_assets_built; /* 0: only the placeholder */

/* ---- the server ---------------------------------------------------------- */

typedef struct rusm__dash rusm__dash;

typedef struct rusm__dash_opts {
  const char *host; /* NULL: 127.0.0.1 */
  uint16_t port;    /* 0: an ephemeral port */
  const rusm__dash_asset *assets;
  size_t nassets;
  /* The program that runs scenarios as `exe bench <scenario> --json
   * --progress [--n N] [--repeat R]`; NULL: this binary
   * (/proc/self/exe). */
  const char *exe;
  uint32_t metrics_ms; /* the feed's metrics period; 0: 1000 */
  uint32_t observe_ms; /* processes / sup_tree period; 0: 2000 */
  uint32_t ws_ping_ms; /* 0: 15000 */
} rusm__dash_opts;

/* Starts serving in rt (from a non-scheduler thread). *out is released
 * with rusm__dash_stop, then rusm__dash_free after the runtime stopped.
 * On failure nothing is left to release. */
int rusm__dash_start(rusm_rt *rt, const rusm__dash_opts *o, rusm__dash **out);
uint16_t rusm__dash_port(const rusm__dash *d);
rusm_http_server *rusm__dash_http(const rusm__dash *d);
/* Stops accepting, kills running scenario children and waits for their
 * reader threads. Call before rusm_rt_shutdown / rusm_rt_destroy. */
void rusm__dash_stop(rusm__dash *d);
/* After the runtime is shut down or destroyed. NULL is ignored. */
void rusm__dash_free(rusm__dash *d);

/* ---- feed topics and sessions (dashboard_server.c) ------------------------
 */

#define RUSM__DASH_T_PROCESSES 1u
#define RUSM__DASH_T_SUP_TREE 2u

/* Sends text to every session subscribed to one of topics (0: every
 * session). Any thread. */
void rusm__dash_broadcast(rusm__dash *d, unsigned topics, const char *text);

/* ---- scenario runs (dashboard_bench.c) ------------------------------------
 */

typedef struct rusm__dash_runs rusm__dash_runs;

int rusm__dash_runs_new(rusm__dash *d, rusm_rt *rt, const char *exe,
                        rusm__dash_runs **out);
/* Starts a run. 0 and *id; RUSM_ENOTFOUND (unknown scenario), RUSM_EBUSY
 * (that scenario is running), RUSM_EINVAL (bad n / repeat: err says),
 * RUSM_ESHUTDOWN (stopping), or an allocation / thread error. */
int rusm__dash_run(rusm__dash_runs *r, const char *scenario, uint64_t n,
                   uint32_t repeat, uint64_t *id, char *err, size_t errlen);
/* {"results":{"<scenario>":[Result...]}} as text (malloc; caller frees). */
char *rusm__dash_results_json(rusm__dash_runs *r);
/* Cancels runs and waits for their threads. */
void rusm__dash_runs_stop(rusm__dash_runs *r);
void rusm__dash_runs_free(rusm__dash_runs *r);

/* What one line of a child's stdout is. */
typedef enum rusm__dash_line {
  RUSM__DASH_LINE_EMPTY = 0,
  RUSM__DASH_LINE_PROGRESS = 1, /* *obj: the "run" object */
  RUSM__DASH_LINE_RESULT = 2,   /* *obj: the Result object */
  RUSM__DASH_LINE_GARBAGE = 3   /* err says what */
} rusm__dash_line;

struct cJSON;
/* Classifies one line (without its newline). *obj (when set) is owned by
 * the caller (cJSON_Delete). */
rusm__dash_line rusm__dash_parse_line(const char *line, size_t len,
                                      struct cJSON **obj, char *err,
                                      size_t errlen);

/* ---- protocol messages (dashboard_json.c) ---------------------------------
 */

/* Each returns a new cJSON object (caller deletes) or NULL out of memory.
 * t_ms is wall-clock milliseconds since the epoch (rusm__dash_now_ms). */
int64_t rusm__dash_now_ms(void);
struct cJSON *rusm__dash_scenario_json(const rusm_bench_scenario *s);
struct cJSON *rusm__dash_scenarios_json(void); /* {"scenarios":[...]} */
struct cJSON *rusm__dash_hello_msg(rusm_rt *rt);
struct cJSON *rusm__dash_metrics_msg(rusm_rt *rt, int64_t t_ms);
struct cJSON *rusm__dash_process_json(const rusm_obs_proc *p);
/* The processes message: at most max rows, by reductions. */
struct cJSON *rusm__dash_processes_msg(rusm_rt *rt, int64_t t_ms, size_t max);
/* root_name: the registered name of a root supervisor (its "id"), or
 * NULL. */
struct cJSON *rusm__dash_sup_node_json(const rusm_obs_sup_node *n,
                                       const char *root_name);
/* The sup_tree message; blocks (rusm_obs_sup_tree): not from a stackless
 * callback. */
struct cJSON *rusm__dash_sup_tree_msg(rusm_rt *rt, int64_t t_ms);
/* {"type":"bench","id":id,"scenario":s,"state":state}; the caller adds
 * "run", "result" or "error". */
struct cJSON *rusm__dash_bench_msg(uint64_t id, const char *scenario,
                                   const char *state);
struct cJSON *rusm__dash_error_msg(const char *text);
/* Prints j without spaces (malloc; the caller frees) and deletes j. NULL
 * when j is NULL or out of memory. */
char *rusm__dash_print(struct cJSON *j);
/* A string as valid UTF-8 (bad bytes become '?'), into buf. */
const char *rusm__dash_utf8(const char *s, char *buf, size_t len);

/* A message from the page (the feed's client → server messages, and the
 * body of POST /api/run). */
typedef struct rusm__dash_cmsg {
  enum { RUSM__DASH_C_SUBSCRIBE = 1, RUSM__DASH_C_RUN = 2 } kind;
  unsigned topics; /* SUBSCRIBE */
  char scenario[64];
  uint64_t n;      /* 0: the scenario's default */
  uint32_t repeat; /* 0: the default */
} rusm__dash_cmsg;

/* Parses a client message ({"type":"subscribe"|"run",...}); with
 * run_body, a POST /api/run body (no "type"). 0, or RUSM_EINVAL with a
 * reason in err. */
int rusm__dash_parse_client(const char *text, size_t len, bool run_body,
                            rusm__dash_cmsg *out, char *err, size_t errlen);

/* ---- Prometheus (dashboard_metrics.c) --------------------------------------
 */

/* Turns per-supervisor restart counts (which start again at 0 when a
 * supervisor is restarted) into one monotonic total. */
typedef struct rusm__dash_restarts {
  pthread_mutex_t mu;
  struct rusm__dash_sup_seen *seen;
  size_t n, cap;
  uint64_t retired; /* restarts of supervisors gone since */
} rusm__dash_restarts;

void rusm__dash_restarts_init(rusm__dash_restarts *t);
void rusm__dash_restarts_destroy(rusm__dash_restarts *t);

/* The exposition (text format 0.0.4) as a malloc'd string (*len without
 * the NUL), or NULL out of memory. Blocks (rusm_obs_sup_tree): call from a
 * thread that may block. */
char *rusm__dash_prometheus(rusm_rt *rt, rusm__dash_restarts *t, size_t *len);

#endif
