/*
 * rusm/serve.h — HTTP/1.1 and WebSocket serving on rusm TCP: a process per
 * connection (stackful, so handlers may block), llhttp for parsing and
 * wslay for WebSocket framing. See docs/dashboard.md (architecture).
 *
 * Ownership:
 *  - A server (rusm_http_server *) is made by rusm_http_listen() and owned
 *    by the caller. Its connection processes borrow it: free it with
 *    rusm_http_free() only once none can be alive (after rusm_rt_shutdown()
 *    or rusm_rt_destroy()). Routes, handler arguments and WebSocket ops are
 *    borrowed too and must live as long.
 *  - A request (rusm_http_req *) and its response (rusm_http_resp *) are
 *    borrowed by the handler for the duration of the call; every string a
 *    request hands out lives as long.
 *  - A WebSocket session is the connection process after the upgrade: its
 *    pid is the session's handle. rusm_ws_post_*() send to it from any
 *    thread (a message to that process, which writes the frame); a
 *    rusm_ws * is valid only inside the session's own callbacks.
 *
 * Conventions as in rusm/otp.h: 0 (or a non-negative count) on success, a
 * negative RUSM_E* code on failure; nothing aborts on input a peer sends.
 * What a peer gets wrong is answered on the wire: 400 (malformed), 413
 * (too large: body, headers, header count), 408 (too slow), then the
 * connection closes; a bad WebSocket frame gets a close frame with the
 * status RFC 6455 gives it (1002, 1007, 1009 ...).
 */
#ifndef RUSM_SERVE_H
#define RUSM_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rusm/otp.h"
#include "rusm/tcp.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rusm_http_server rusm_http_server;
typedef struct rusm_http_req rusm_http_req;
typedef struct rusm_http_resp rusm_http_resp;
typedef struct rusm_ws rusm_ws;

/* ------------------------------------------------------------------ */
/* Routes and server                                                   */
/* ------------------------------------------------------------------ */

/*
 * Answers one request: fill resp (status 200 and an empty body unless told
 * otherwise). Runs in the connection's (stackful) process, so it may call
 * blocking APIs (supervisor calls, rusm_obs_sup_tree ...); the connection
 * waits meanwhile.
 */
typedef void (*rusm_http_handler)(rusm_http_req *req, rusm_http_resp *resp,
                                  void *arg);

typedef struct rusm_http_route {
  const char *method; /* "GET", "POST" ...; NULL: any. GET answers HEAD too */
  /* An exact path ("/metrics"), or a prefix when it ends with '*'
   * ("/assets/" followed by a star). Matched against the path without
   * the query. */
  const char *path;
  rusm_http_handler handler;
  void *arg;
} rusm_http_route;

typedef struct rusm_http_opts {
  const rusm_http_route *routes; /* first match wins */
  size_t nroutes;
  /* No route matched the path; NULL: 404 {"error":"not found"}. A path
   * that matched only with another method gets 405. */
  rusm_http_handler fallback;
  void *fallback_arg;
  uint32_t max_header_bytes;   /* request line + headers; 0: 16 KiB */
  uint32_t max_headers;        /* 0: 64 */
  uint32_t max_body_bytes;     /* 0: 1 MiB */
  uint32_t idle_timeout_ms;    /* no request on a connection; 0: 30 s */
  uint32_t request_timeout_ms; /* first byte to last of a request; 0: 10 s */
  uint32_t write_timeout_ms;   /* one blocked write; 0: 10 s */
  uint32_t ws_ping_ms;         /* WebSocket ping interval; 0: 15 s */
  uint32_t ws_max_message;     /* largest message received; 0: 1 MiB */
  uint32_t stack_size;         /* connection processes; 0: 128 KiB */
} rusm_http_opts;

void rusm_http_opts_init(rusm_http_opts *o);

/*
 * Listens on host:port (port 0: an ephemeral one, see rusm_http_port) and
 * serves: one stackful process per connection, labelled "http" ("ws"
 * after an upgrade), keep-alive and pipelining, the limits above. o is
 * copied (what it points to is borrowed). Callable from any thread. Returns
 * 0 or the codes of rusm_tcp_listen (RUSM_EADDRINUSE ...), RUSM_ENOMEM.
 */
int rusm_http_listen(rusm_rt *rt, const char *host, uint16_t port,
                     const rusm_http_opts *o, rusm_http_server **out);

uint16_t rusm_http_port(const rusm_http_server *s);
/* The acceptor process (link or monitor it to watch the listener). */
rusm_pid_t rusm_http_acceptor(const rusm_http_server *s);
/* Stops accepting connections (open ones go on). Any thread; idempotent. */
void rusm_http_stop(rusm_http_server *s);
/* Frees the server: see Ownership above. NULL is ignored. */
void rusm_http_free(rusm_http_server *s);

typedef struct rusm_http_stats {
  uint64_t connections;   /* accepted so far */
  uint64_t requests;      /* requests answered by a handler */
  uint64_t bad_requests;  /* malformed: 400 */
  uint64_t too_large;     /* 413 */
  uint64_t timeouts;      /* 408 and write timeouts */
  uint64_t ws_sessions;   /* upgrades so far */
  uint64_t ws_open;       /* sessions open now */
  uint64_t ws_bad_frames; /* sessions closed on a protocol error */
} rusm_http_stats;

/* A snapshot of the server's counters (any thread). */
void rusm_http_stats_get(const rusm_http_server *s, rusm_http_stats *out);

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

const char *rusm_http_req_method(const rusm_http_req *r); /* "GET" */
const char *rusm_http_req_target(const rusm_http_req *r); /* as sent */
const char *rusm_http_req_path(const rusm_http_req *r);   /* "/api/run" */
const char *rusm_http_req_query(const rusm_http_req *r);  /* after '?', "" */
/* The first header called name (case-insensitive), or NULL. */
const char *rusm_http_req_header(const rusm_http_req *r, const char *name);
/* The body (NUL-terminated for convenience; *len excludes the NUL). */
const char *rusm_http_req_body(const rusm_http_req *r, size_t *len);
/* The connection's process (blocking calls need it) and its runtime. */
rusm_proc *rusm_http_req_proc(const rusm_http_req *r);
rusm_rt *rusm_http_req_rt(const rusm_http_req *r);
/* The peer's address; 0 or a negative code (see rusm_tcp_peername). */
int rusm_http_req_peer(const rusm_http_req *r, char *host, size_t hostlen,
                       uint16_t *port);

/* ------------------------------------------------------------------ */
/* Responses                                                           */
/* ------------------------------------------------------------------ */

/* 100..599, else RUSM_EINVAL. */
int rusm_http_resp_status(rusm_http_resp *r, int status);
/* Adds a header (copied). Names and values with CR, LF or NUL, and the
 * headers the server writes itself (Content-Length, Connection, Transfer-
 * Encoding), give RUSM_EINVAL. */
int rusm_http_resp_header(rusm_http_resp *r, const char *name,
                          const char *value);
/* The body, copied. Replaces an earlier one. */
int rusm_http_resp_body(rusm_http_resp *r, const void *data, size_t len);
/* The body, borrowed: data must stay valid until the connection process
 * exits (static data: embedded files). */
int rusm_http_resp_body_static(rusm_http_resp *r, const void *data, size_t len);
/* The body, taken: data came from malloc() and is free()d by the server
 * (also when this call fails). */
int rusm_http_resp_body_take(rusm_http_resp *r, void *data, size_t len);
/* status, Content-Type: application/json and json (copied) as the body. */
int rusm_http_resp_json(rusm_http_resp *r, int status, const char *json);
/* status and {"error":"<text>"} (text escaped). */
int rusm_http_resp_error(rusm_http_resp *r, int status, const char *text);
/* Closes the connection after this response. */
void rusm_http_resp_close(rusm_http_resp *r);

/* The reason phrase of a status ("Not Found"), "Unknown" if none. */
const char *rusm_http_status_text(int status);

/* ------------------------------------------------------------------ */
/* WebSocket                                                           */
/* ------------------------------------------------------------------ */

/* Session callbacks; all run in the session's process (stackful: they may
 * block, and the session reads nothing meanwhile). */
typedef struct rusm_ws_ops {
  /* After the handshake. *state starts as the arg given to
   * rusm_http_resp_websocket. Non-zero: the session closes (1011). May be
   * NULL. */
  int (*open)(rusm_ws *ws, void **state);
  /* A complete text message (valid UTF-8, checked), borrowed. */
  void (*text)(rusm_ws *ws, void *state, const char *data, size_t len);
  /* A complete binary message; NULL: binary messages close the session
   * with 1003 (unsupported data). */
  void (*binary)(rusm_ws *ws, void *state, const uint8_t *data, size_t len);
  /* Any other message the session's process receives (borrowed); NULL:
   * dropped. */
  void (*info)(rusm_ws *ws, void *state, rusm_msg *m);
  /* Once, at the end, whatever the cause (a kill included: then on the
   * exit path, where nothing may be sent). code is the close status
   * received or sent, 1006 when the connection just ended. May be NULL. */
  void (*close)(rusm_pid_t session, void *state, uint16_t code);
} rusm_ws_ops;

/*
 * Accepts req as a WebSocket upgrade (RFC 6455: GET, Upgrade: websocket,
 * Connection: upgrade, Sec-WebSocket-Version: 13, a 16-byte key): sets the
 * 101 response, after which the connection becomes a session run by ops.
 * A request that is no valid upgrade gets its error response here (426 or
 * 400) and RUSM_EINVAL. ops and arg are borrowed (see Ownership).
 */
int rusm_http_resp_websocket(rusm_http_req *req, rusm_http_resp *resp,
                             const rusm_ws_ops *ops, void *arg);

/* In the session's callbacks: queues a text message (copied), written
 * when the callback returns. RUSM_ECLOSED after a close. */
int rusm_ws_send_text(rusm_ws *ws, const void *data, size_t len);
/* Queues a close frame (code 1000..4999, reason <= 123 bytes). */
int rusm_ws_close(rusm_ws *ws, uint16_t code, const char *reason);
rusm_pid_t rusm_ws_session(const rusm_ws *ws);
rusm_proc *rusm_ws_proc(const rusm_ws *ws);

/* Messages posted beyond this many queued in a session are refused
 * (RUSM_ENOBUFS): a slow reader loses frames instead of growing memory. */
#define RUSM_WS_POST_MAX 256

/* From any thread: a text message to a session (copied). RUSM_ENOPROC
 * when the session has ended, RUSM_ENOBUFS (see above). */
int rusm_ws_post_text(rusm_rt *rt, rusm_pid_t session, const void *data,
                      size_t len);
/* The same with a shared buffer (a broadcast sends one buffer to many). */
int rusm_ws_post_buf(rusm_rt *rt, rusm_pid_t session, rusm_buf *text);
/* From any thread: asks the session to close with code. */
int rusm_ws_post_close(rusm_rt *rt, rusm_pid_t session, uint16_t code);

/* The tags of those messages (user tags; the session's process consumes
 * them). */
#define RUSM_WS_TAG_TEXT UINT64_C(0x7275736d77730001)
#define RUSM_WS_TAG_CLOSE UINT64_C(0x7275736d77730002)

#ifdef __cplusplus
}
#endif
#endif /* RUSM_SERVE_H */
