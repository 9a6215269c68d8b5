/*
 * http.h — internals of the HTTP server (http.c) shared with the
 * WebSocket layer (ws.c). Not a public header: see rusm/serve.h.
 */
#ifndef RUSM_SERVE_HTTP_H
#define RUSM_SERVE_HTTP_H

#include <llhttp.h>
#include <stdatomic.h>

#include "rusm/serve.h"

enum {
  RUSM__HS_CONNECTIONS,
  RUSM__HS_REQUESTS,
  RUSM__HS_BAD,
  RUSM__HS_TOO_LARGE,
  RUSM__HS_TIMEOUTS,
  RUSM__HS_WS,
  RUSM__HS_WS_CLOSED,
  RUSM__HS_WS_BAD,
  RUSM__HS_COUNT
};

struct rusm_http_server {
  rusm_rt *rt;
  rusm_http_opts o;
  rusm_pid_t acceptor;
  uint16_t port;
  atomic_bool stopped;
  _Atomic uint64_t n[RUSM__HS_COUNT]; /* statistics, relaxed */
};

typedef struct rusm__hdr {
  uint32_t name, value; /* offsets of NUL-terminated strings in hbuf */
} rusm__hdr;

struct rusm_http_req {
  struct rusm__hconn *c;
  const char *method, *target, *path, *query;
  char *body; /* NUL-terminated, or "" */
  size_t body_len;
};

struct rusm_http_resp {
  int status;
  char *hdrs; /* "Name: value\r\n" lines the handler added */
  size_t hdrs_len, hdrs_cap;
  const uint8_t *body;
  size_t body_len;
  void *owned; /* free()d with the response, when the body is ours */
  bool close;
  bool failed; /* out of memory while building: answer 500 */
  const rusm_ws_ops *ws_ops;
  void *ws_arg;
};

/* One connection: heap state owned by its process, freed by its exit hook
 * (a killed stackful body never unwinds, so nothing lives on its stack). */
typedef struct rusm__hconn {
  rusm_http_server *srv;
  rusm_proc *self;
  rusm_sock *sock;
  llhttp_t parser;
  /* request being parsed: target and headers in hbuf */
  char *hbuf;
  uint32_t hlen, hcap;
  rusm__hdr *hdrs;
  uint32_t nhdrs;
  uint8_t hstate;    /* 0 none, 1 in a field, 2 in a value */
  uint32_t path_off; /* the path's copy in hbuf (the target is at 0) */
  char *body;
  size_t body_len, body_cap;
  int fail_status; /* a limit hit while parsing: 413 ...; -1: no answer */
  const char *fail_text;
  bool in_request, stop, upgrade;
  int64_t deadline_ns; /* of the request being read */
  rusm_http_req req;
  rusm_http_resp resp;
  struct rusm_ws *ws; /* after an upgrade */
  uint8_t rbuf[16384];
} rusm__hconn;

static inline void rusm__hs_add(rusm_http_server *s, int i, int64_t v) {
  /* relaxed: statistics, read as a snapshot */
  atomic_fetch_add_explicit(&s->n[i], (uint64_t)v, memory_order_relaxed);
}

/* Writes everything (blocking), bounded by the write timeout: a peer that
 * reads nothing for that long ends the connection process. 0 or a
 * negative code. */
int rusm__hconn_write(rusm__hconn *c, const void *data, size_t len);

/* Appends the header line "name: value" without the checks of
 * rusm_http_resp_header (the server's own headers). */
int rusm__resp_add(rusm_http_resp *r, const char *name, const char *value);

#endif
