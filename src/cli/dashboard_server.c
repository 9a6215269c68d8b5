/*
 * dashboard_server.c — the dashboard's listener: the embedded page, the
 * JSON API, the WebSocket feed and /metrics (docs/dashboard-protocol.md).
 *
 * Every connection is a process (rusm/serve.h); a feed session is the
 * connection's process after the upgrade. Sessions are listed here with
 * the topics they subscribed to; a broadcast makes one shared buffer and
 * posts it to each session (a message to its process, which writes the
 * frame). A stackful "dashboard" process samples the runtime: metrics
 * every second to every session, processes and the supervision tree every
 * two seconds to the sessions that asked for them (nothing is sampled
 * while nobody listens).
 *
 * On a loopback listener, requests must name a loopback Host (a web page
 * elsewhere cannot reach the API through DNS rebinding), and a browser's
 * Origin, when sent, must be a loopback one too (a web page elsewhere
 * cannot start runs through the user's browser).
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/dashboard.h"

#define PROCESSES_MAX 500
#define TAG_STOP UINT64_C(0x6461736800000001) /* to the sampler */

typedef struct session {
  rusm_pid_t pid;
  unsigned topics;
} session;

enum {
  R_SCENARIOS,
  R_RESULTS,
  R_PROCESSES,
  R_SUP_TREE,
  R_RUN,
  R_METRICS,
  R_WS,
  R_COUNT
};

struct rusm__dash {
  rusm_rt *rt;
  rusm__dash_opts o;
  bool loopback;
  rusm_http_server *http;
  rusm_http_route routes[R_COUNT];
  rusm__dash_runs *runs;
  rusm__dash_restarts restarts;
  rusm_pid_t sampler;
  pthread_mutex_t mu; /* sessions */
  session *sess;
  size_t nsess, capsess;
};

/* ---- sessions ------------------------------------------------------------ */

static void sess_add(rusm__dash *d, rusm_pid_t pid) {
  pthread_mutex_lock(&d->mu);
  if (d->nsess == d->capsess) {
    size_t cap = d->capsess ? d->capsess * 2 : 8;
    session *s = realloc(d->sess, cap * sizeof *s);
    if (!s) {
      pthread_mutex_unlock(&d->mu);
      return; /* the session gets no broadcasts; it still answers */
    }
    d->sess = s;
    d->capsess = cap;
  }
  d->sess[d->nsess++] = (session){pid, 0};
  pthread_mutex_unlock(&d->mu);
}

static void sess_del(rusm__dash *d, rusm_pid_t pid) {
  pthread_mutex_lock(&d->mu);
  for (size_t i = 0; i < d->nsess; i++)
    if (d->sess[i].pid == pid) {
      d->sess[i] = d->sess[--d->nsess];
      break;
    }
  pthread_mutex_unlock(&d->mu);
}

/* Sets the topics of pid; returns the ones it did not have. */
static unsigned sess_topics(rusm__dash *d, rusm_pid_t pid, unsigned topics) {
  unsigned added = 0;
  pthread_mutex_lock(&d->mu);
  for (size_t i = 0; i < d->nsess; i++)
    if (d->sess[i].pid == pid) {
      added = topics & ~d->sess[i].topics;
      d->sess[i].topics = topics;
      break;
    }
  pthread_mutex_unlock(&d->mu);
  return added;
}

/* The union of every session's topics, and how many sessions there are. */
static unsigned sess_union(rusm__dash *d, size_t *count) {
  unsigned u = 0;
  pthread_mutex_lock(&d->mu);
  for (size_t i = 0; i < d->nsess; i++)
    u |= d->sess[i].topics;
  *count = d->nsess;
  pthread_mutex_unlock(&d->mu);
  return u;
}

void rusm__dash_broadcast(rusm__dash *d, unsigned topics, const char *text) {
  size_t len = strlen(text);
  rusm_buf *b = rusm_buf_from(text, len);
  if (!b)
    return;
  pthread_mutex_lock(&d->mu);
  for (size_t i = 0; i < d->nsess; i++)
    if (!topics || (d->sess[i].topics & topics))
      rusm_ws_post_buf(d->rt, d->sess[i].pid, b); /* a slow one misses it */
  pthread_mutex_unlock(&d->mu);
  rusm_buf_unref(b);
}

/* ---- request guards ---------------------------------------------------------
 */

/* Whether a host (with an optional :port) names this machine's loopback. */
static bool loopback_host(const char *h) {
  char buf[64];
  size_t n;
  if (h[0] == '[') {
    n = strcspn(h + 1, "]");
    if (h[1 + n] != ']' || n >= sizeof buf)
      return false;
    memcpy(buf, h + 1, n);
  } else {
    n = strcspn(h, ":");
    if (n >= sizeof buf)
      return false;
    memcpy(buf, h, n);
  }
  buf[n] = '\0';
  if (strcasecmp(buf, "localhost") == 0)
    return true;
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, buf, &a4) == 1)
    return (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, buf, &a6) == 1)
    return IN6_IS_ADDR_LOOPBACK(&a6);
  return false;
}

/* false (with a 403 set) when a loopback listener gets a foreign Host or
 * Origin. */
static bool guard(rusm__dash *d, rusm_http_req *req, rusm_http_resp *resp) {
  if (!d->loopback)
    return true;
  const char *host = rusm_http_req_header(req, "Host");
  if (host && !loopback_host(host)) {
    rusm_http_resp_error(resp, 403, "Host is not a loopback name");
    return false;
  }
  const char *origin = rusm_http_req_header(req, "Origin");
  if (origin) {
    const char *h = NULL;
    if (strncasecmp(origin, "http://", 7) == 0)
      h = origin + 7;
    else if (strncasecmp(origin, "https://", 8) == 0)
      h = origin + 8;
    if (!h || !loopback_host(h)) {
      rusm_http_resp_error(resp, 403, "Origin is not a loopback page");
      return false;
    }
  }
  return true;
}

/* ---- JSON answers
 * ------------------------------------------------------------ */

static void reply_text(rusm_http_resp *resp, int status, char *text) {
  if (!text) {
    rusm_http_resp_error(resp, 500, "out of memory");
    return;
  }
  rusm_http_resp_status(resp, status);
  rusm_http_resp_header(resp, "Content-Type", "application/json");
  rusm_http_resp_header(resp, "Cache-Control", "no-store");
  rusm_http_resp_body_take(resp, text, strlen(text));
}

static void reply(rusm_http_resp *resp, int status, cJSON *j) {
  reply_text(resp, status, rusm__dash_print(j));
}

static void h_scenarios(rusm_http_req *req, rusm_http_resp *resp, void *arg) {
  if (guard(arg, req, resp))
    reply(resp, 200, rusm__dash_scenarios_json());
}

static void h_results(rusm_http_req *req, rusm_http_resp *resp, void *arg) {
  rusm__dash *d = arg;
  if (guard(d, req, resp))
    reply_text(resp, 200, rusm__dash_results_json(d->runs));
}

static void h_processes(rusm_http_req *req, rusm_http_resp *resp, void *arg) {
  rusm__dash *d = arg;
  if (guard(d, req, resp))
    reply(resp, 200,
          rusm__dash_processes_msg(d->rt, rusm__dash_now_ms(), PROCESSES_MAX));
}

static void h_sup_tree(rusm_http_req *req, rusm_http_resp *resp, void *arg) {
  rusm__dash *d = arg;
  if (guard(d, req, resp))
    reply(resp, 200, rusm__dash_sup_tree_msg(d->rt, rusm__dash_now_ms()));
}

/* Starts a run; the answer as a status and an object. */
static int start_run(rusm__dash *d, const rusm__dash_cmsg *c, cJSON **out) {
  char err[256];
  uint64_t id = 0;
  int rc = rusm__dash_run(d->runs, c->scenario, c->n, c->repeat, &id, err,
                          sizeof err);
  int status;
  switch (rc) {
  case 0:
    *out = cJSON_CreateObject();
    if (*out) {
      cJSON_AddTrueToObject(*out, "accepted");
      cJSON_AddNumberToObject(*out, "id", (double)id);
    }
    return 202;
  case RUSM_ENOTFOUND:
    status = 404;
    break;
  case RUSM_EBUSY:
    status = 409;
    break;
  case RUSM_EINVAL:
    status = 400;
    break;
  case RUSM_ESHUTDOWN:
    status = 503;
    break;
  default:
    status = 500;
    break;
  }
  *out = cJSON_CreateObject();
  if (*out)
    cJSON_AddStringToObject(*out, "error", err);
  return status;
}

static void h_run(rusm_http_req *req, rusm_http_resp *resp, void *arg) {
  rusm__dash *d = arg;
  if (!guard(d, req, resp))
    return;
  /* Only JSON: a cross-site form or "simple" request cannot send it
   * without a CORS preflight, which this server never grants. */
  const char *type = rusm_http_req_header(req, "Content-Type");
  if (!type || strncasecmp(type, "application/json", 16) != 0) {
    rusm_http_resp_error(resp, 415, "the body must be application/json");
    return;
  }
  size_t len;
  const char *body = rusm_http_req_body(req, &len);
  rusm__dash_cmsg c;
  char err[160];
  if (rusm__dash_parse_client(body, len, true, &c, err, sizeof err) != 0) {
    rusm_http_resp_error(resp, 400, err);
    return;
  }
  cJSON *j;
  int status = start_run(d, &c, &j);
  reply(resp, status, j);
}

static void h_metrics(rusm_http_req *req, rusm_http_resp *resp, void *arg) {
  rusm__dash *d = arg;
  if (!guard(d, req, resp))
    return;
  size_t len = 0;
  char *text = rusm__dash_prometheus(d->rt, &d->restarts, &len);
  if (!text) {
    rusm_http_resp_error(resp, 500, "out of memory");
    return;
  }
  rusm_http_resp_header(resp, "Content-Type",
                        "text/plain; version=0.0.4; charset=utf-8");
  rusm_http_resp_header(resp, "Cache-Control", "no-store");
  rusm_http_resp_body_take(resp, text, len);
}

/* ---- the feed
 * ------------------------------------------------------------------ */

typedef struct sess_state {
  rusm__dash *d;
} sess_state;

static void send_json(rusm_ws *ws, cJSON *j) {
  char *text = rusm__dash_print(j);
  if (text)
    rusm_ws_send_text(ws, text, strlen(text));
  free(text);
}

static int ws_open(rusm_ws *ws, void **state) {
  rusm__dash *d = *state;
  sess_state *s = malloc(sizeof *s);
  *state = s;
  if (!s)
    return -1;
  s->d = d;
  /* hello first: it is queued before the session is listed, so no
   * broadcast can overtake it. */
  send_json(ws, rusm__dash_hello_msg(d->rt));
  sess_add(d, rusm_ws_session(ws));
  return 0;
}

static void ws_text(rusm_ws *ws, void *state, const char *data, size_t len) {
  sess_state *s = state;
  rusm__dash *d = s->d;
  rusm__dash_cmsg c;
  char err[160];
  if (rusm__dash_parse_client(data, len, false, &c, err, sizeof err) != 0) {
    send_json(ws, rusm__dash_error_msg(err));
    return;
  }
  if (c.kind == RUSM__DASH_C_SUBSCRIBE) {
    unsigned added = sess_topics(d, rusm_ws_session(ws), c.topics);
    /* What was asked for now, at once, not at the next sampling. */
    if (added & RUSM__DASH_T_PROCESSES)
      send_json(ws, rusm__dash_processes_msg(d->rt, rusm__dash_now_ms(),
                                             PROCESSES_MAX));
    if (added & RUSM__DASH_T_SUP_TREE)
      send_json(ws, rusm__dash_sup_tree_msg(d->rt, rusm__dash_now_ms()));
  } else {
    cJSON *j;
    if (start_run(d, &c, &j) != 202) {
      const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
      send_json(ws, rusm__dash_error_msg(cJSON_IsString(e) ? e->valuestring
                                                           : "run refused"));
    }
    cJSON_Delete(j);
  }
}

static void ws_close(rusm_pid_t pid, void *state, uint16_t code) {
  sess_state *s = state;
  if (!s)
    return;
  sess_del(s->d, pid);
  free(s);
}

static const rusm_ws_ops k_ws_ops = {ws_open, ws_text, NULL, NULL, ws_close};

static void h_ws(rusm_http_req *req, rusm_http_resp *resp, void *arg) {
  rusm__dash *d = arg;
  if (guard(d, req, resp))
    rusm_http_resp_websocket(req, resp, &k_ws_ops, d);
}

/* The sampler: metrics to everyone, processes and the tree to those who
 * asked, each on its own period. */
static void sampler_fn(rusm_proc *self, void *arg) {
  rusm__dash *d = arg;
  rusm_set_label(self, "dashboard");
  rusm_register(d->rt, "dashboard", rusm_self(self));
  const int64_t mperiod = (int64_t)d->o.metrics_ms * 1000000;
  const int64_t operiod = (int64_t)d->o.observe_ms * 1000000;
  int64_t next_m = rusm_now_ns() + mperiod, next_o = rusm_now_ns() + operiod;
  for (;;) {
    int64_t now = rusm_now_ns();
    int64_t until = next_m < next_o ? next_m : next_o;
    if (until > now) {
      rusm_msg *m = NULL;
      int rc = rusm_receive(self, NULL, (until - now + 999999) / 1000000, &m);
      if (rc == 0) {
        bool stop = rusm_msg_tag(m) == TAG_STOP;
        rusm_msg_free(m);
        if (stop)
          return;
        continue;
      }
      now = rusm_now_ns();
    }
    size_t nsess;
    unsigned topics = sess_union(d, &nsess);
    if (now >= next_m) {
      if (nsess) {
        char *t = rusm__dash_print(
            rusm__dash_metrics_msg(d->rt, rusm__dash_now_ms()));
        if (t)
          rusm__dash_broadcast(d, 0, t);
        free(t);
      }
      next_m += mperiod;
      if (next_m <= now) /* fell behind: no burst to catch up */
        next_m = now + mperiod;
    }
    if (now >= next_o) {
      if (topics & RUSM__DASH_T_PROCESSES) {
        char *t = rusm__dash_print(rusm__dash_processes_msg(
            d->rt, rusm__dash_now_ms(), PROCESSES_MAX));
        if (t)
          rusm__dash_broadcast(d, RUSM__DASH_T_PROCESSES, t);
        free(t);
      }
      if (topics & RUSM__DASH_T_SUP_TREE) {
        char *t = rusm__dash_print(
            rusm__dash_sup_tree_msg(d->rt, rusm__dash_now_ms()));
        if (t)
          rusm__dash_broadcast(d, RUSM__DASH_T_SUP_TREE, t);
        free(t);
      }
      next_o += operiod;
      if (next_o <= now)
        next_o = now + operiod;
    }
  }
}

/* ---- the page
 * -------------------------------------------------------------------- */

/* Whether an If-None-Match value names etag (or is "*"). */
static bool etag_match(const char *inm, const char *etag) {
  size_t el = strlen(etag);
  while (*inm) {
    while (*inm == ' ' || *inm == ',')
      inm++;
    if (strncmp(inm, "W/", 2) == 0)
      inm += 2;
    size_t n = strcspn(inm, ",");
    size_t m = n;
    while (m && inm[m - 1] == ' ')
      m--;
    if ((m == 1 && inm[0] == '*') || (m == el && strncmp(inm, etag, el) == 0))
      return true;
    inm += n;
  }
  return false;
}

static void h_asset(rusm_http_req *req, rusm_http_resp *resp, void *arg) {
  rusm__dash *d = arg;
  const char *path = rusm_http_req_path(req);
  if (strcmp(path, "/") == 0)
    path = "/index.html";
  const rusm__dash_asset *a = NULL;
  for (size_t i = 0; i < d->o.nassets && !a; i++)
    if (strcmp(d->o.assets[i].path, path) == 0)
      a = &d->o.assets[i];
  if (!a) {
    rusm_http_resp_error(resp, 404, "not found");
    return;
  }
  const char *m = rusm_http_req_method(req);
  if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
    rusm_http_resp_error(resp, 405, "method not allowed");
    rusm_http_resp_header(resp, "Allow", "GET, HEAD");
    return;
  }
  rusm_http_resp_header(resp, "ETag", a->etag);
  rusm_http_resp_header(resp, "Cache-Control",
                        a->immutable ? "public, max-age=31536000, immutable"
                                     : "no-cache");
  const char *inm = rusm_http_req_header(req, "If-None-Match");
  if (inm && etag_match(inm, a->etag)) {
    rusm_http_resp_status(resp, 304);
    return;
  }
  rusm_http_resp_header(resp, "Content-Type", a->content_type);
  rusm_http_resp_header(resp, "X-Content-Type-Options", "nosniff");
  rusm_http_resp_body_static(resp, a->data, a->len);
}

/* ---- start and stop
 * ------------------------------------------------------------- */

/* The listen address (a bare IPv6 one has no brackets). */
static bool host_is_loopback(const char *host) {
  struct in6_addr a6;
  if (host[0] != '[' && strchr(host, ':'))
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
  return loopback_host(host);
}

int rusm__dash_start(rusm_rt *rt, const rusm__dash_opts *o, rusm__dash **out) {
  if (!rt || !o || !out)
    return RUSM_EINVAL;
  rusm__dash *d = calloc(1, sizeof *d);
  if (!d)
    return RUSM_ENOMEM;
  d->rt = rt;
  d->o = *o;
  if (!d->o.host)
    d->o.host = "127.0.0.1";
  if (!d->o.metrics_ms)
    d->o.metrics_ms = 1000;
  if (!d->o.observe_ms)
    d->o.observe_ms = 2000;
  d->loopback = host_is_loopback(d->o.host);
  pthread_mutex_init(&d->mu, NULL);
  rusm__dash_restarts_init(&d->restarts);
  int rc = rusm__dash_runs_new(d, rt, o->exe, &d->runs);
  if (rc) {
    rusm__dash_free(d);
    return rc;
  }
  static const struct {
    const char *method, *path;
    rusm_http_handler h;
  } k_routes[R_COUNT] = {
      [R_SCENARIOS] = {"GET", "/api/scenarios", h_scenarios},
      [R_RESULTS] = {"GET", "/api/results", h_results},
      [R_PROCESSES] = {"GET", "/api/processes", h_processes},
      [R_SUP_TREE] = {"GET", "/api/sup-tree", h_sup_tree},
      [R_RUN] = {"POST", "/api/run", h_run},
      [R_METRICS] = {"GET", "/metrics", h_metrics},
      [R_WS] = {"GET", "/ws", h_ws},
  };
  for (int i = 0; i < R_COUNT; i++)
    d->routes[i] = (rusm_http_route){k_routes[i].method, k_routes[i].path,
                                     k_routes[i].h, d};
  rusm_http_opts ho;
  rusm_http_opts_init(&ho);
  ho.routes = d->routes;
  ho.nroutes = R_COUNT;
  ho.fallback = h_asset;
  ho.fallback_arg = d;
  ho.ws_ping_ms = o->ws_ping_ms;
  rc = rusm_http_listen(rt, d->o.host, o->port, &ho, &d->http);
  if (rc) { /* nothing borrows d yet */
    rusm__dash_free(d);
    return rc;
  }
  /* Without a sampler (out of memory now) the feed still answers, only
   * without periodic messages. */
  rusm_spawn_opts so;
  rusm_spawn_opts_init(&so);
  if (rusm_spawn_stackful(rt, sampler_fn, d, &so, &d->sampler) != 0)
    d->sampler = RUSM_PID_NONE;
  *out = d;
  return 0;
}

uint16_t rusm__dash_port(const rusm__dash *d) {
  return d ? rusm_http_port(d->http) : 0;
}

rusm_http_server *rusm__dash_http(const rusm__dash *d) {
  return d ? d->http : NULL;
}

void rusm__dash_stop(rusm__dash *d) {
  if (!d)
    return;
  rusm_http_stop(d->http);
  if (d->sampler != RUSM_PID_NONE)
    rusm_send(d->rt, d->sampler, TAG_STOP, NULL, 0);
  rusm__dash_runs_stop(d->runs);
  /* A clean close (going away) for the pages: they reconnect later. */
  pthread_mutex_lock(&d->mu);
  for (size_t i = 0; i < d->nsess; i++)
    rusm_ws_post_close(d->rt, d->sess[i].pid, 1001);
  pthread_mutex_unlock(&d->mu);
}

void rusm__dash_free(rusm__dash *d) {
  if (!d)
    return;
  rusm__dash_runs_free(d->runs);
  rusm_http_free(d->http);
  rusm__dash_restarts_destroy(&d->restarts);
  pthread_mutex_destroy(&d->mu);
  free(d->sess);
  free(d);
}
