/*
 * http.c — an HTTP/1.1 server on rusm TCP (rusm/serve.h).
 *
 * Each connection is a stackful process that reads with a deadline, feeds
 * llhttp, and answers each request from llhttp's message-complete
 * callback, in order, so pipelined requests are answered in the order
 * they came. Handlers run right there, in the connection's process, and
 * may block. Everything the connection holds lives in one heap block
 * released by the process's exit hook: a killed stackful body never
 * unwinds its stack.
 *
 * What a peer controls is bounded: the request line and headers
 * (max_header_bytes, max_headers), the body (max_body_bytes, refused
 * before it is read when Content-Length says so), the time a request may
 * take to arrive (request_timeout_ms: slow senders get 408), the time a
 * connection may sit idle, and the time one write may stay blocked
 * (write_timeout_ms: a peer that reads nothing ends its connection). A
 * malformed request gets 400 and the connection closes; the close is a
 * "lingering" one (shut our side, drain theirs for a moment) so that the
 * peer reads the error instead of a reset.
 */
#include "serve/http.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "serve/ws.h"

#define DEF_MAX_HEADER (16u << 10)
#define DEF_MAX_HEADERS 64u
#define DEF_MAX_BODY (1u << 20)
#define DEF_IDLE_MS 30000u
#define DEF_REQUEST_MS 10000u
#define DEF_WRITE_MS 10000u
#define DEF_PING_MS 15000u
#define DEF_WS_MAX (1u << 20)
#define DEF_STACK (128u << 10)
#define LINGER_MS 1000        /* draining the peer's side after an error */
#define LINGER_MAX (4u << 20) /* ... at most this many bytes */
#define SMALL_BODY 16384u     /* head and body in one write up to this */

/* ---- status texts ------------------------------------------------------ */

typedef struct status_text {
  int code;
  const char *text;
} status_text;

static const status_text k_status[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {304, "Not Modified"},
    {400, "Bad Request"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {411, "Length Required"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {426, "Upgrade Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {503, "Service Unavailable"},
    {505, "HTTP Version Not Supported"},
};

const char *rusm_http_status_text(int status) {
  for (size_t i = 0; i < sizeof k_status / sizeof k_status[0]; i++)
    if (k_status[i].code == status)
      return k_status[i].text;
  return "Unknown";
}

/* ---- responses ---------------------------------------------------------- */

static void resp_reset(rusm_http_resp *r) {
  free(r->owned);
  char *h = r->hdrs;
  size_t cap = r->hdrs_cap;
  memset(r, 0, sizeof *r);
  r->hdrs = h; /* the header buffer is kept for the next request */
  r->hdrs_cap = cap;
  r->status = 200;
}

static void resp_free(rusm_http_resp *r) {
  free(r->owned);
  free(r->hdrs);
  memset(r, 0, sizeof *r);
}

int rusm_http_resp_status(rusm_http_resp *r, int status) {
  if (!r || status < 100 || status > 599)
    return RUSM_EINVAL;
  r->status = status;
  return 0;
}

static bool token_ok(const char *s) {
  if (!*s)
    return false;
  for (; *s; s++)
    if (*s <= ' ' || *s == ':' || (unsigned char)*s >= 0x7f)
      return false;
  return true;
}

static bool value_ok(const char *s) {
  for (; *s; s++)
    if (*s == '\r' || *s == '\n')
      return false;
  return true;
}

int rusm__resp_add(rusm_http_resp *r, const char *name, const char *value) {
  size_t need = strlen(name) + strlen(value) + 4;
  if (r->hdrs_len + need + 1 > r->hdrs_cap) {
    size_t cap = r->hdrs_cap ? r->hdrs_cap * 2 : 256;
    while (cap < r->hdrs_len + need + 1)
      cap *= 2;
    char *h = realloc(r->hdrs, cap);
    if (!h) {
      r->failed = true;
      return RUSM_ENOMEM;
    }
    r->hdrs = h;
    r->hdrs_cap = cap;
  }
  r->hdrs_len +=
      (size_t)snprintf(r->hdrs + r->hdrs_len, r->hdrs_cap - r->hdrs_len,
                       "%s: %s\r\n", name, value);
  return 0;
}

int rusm_http_resp_header(rusm_http_resp *r, const char *name,
                          const char *value) {
  if (!r || !name || !value || !token_ok(name) || !value_ok(value) ||
      strcasecmp(name, "Content-Length") == 0 ||
      strcasecmp(name, "Connection") == 0 ||
      strcasecmp(name, "Transfer-Encoding") == 0)
    return RUSM_EINVAL;
  return rusm__resp_add(r, name, value);
}

static void body_drop(rusm_http_resp *r) {
  free(r->owned);
  r->owned = NULL;
  r->body = NULL;
  r->body_len = 0;
}

int rusm_http_resp_body_take(rusm_http_resp *r, void *data, size_t len) {
  if (!r || (!data && len)) {
    free(data);
    return RUSM_EINVAL;
  }
  body_drop(r);
  r->owned = data;
  r->body = data;
  r->body_len = len;
  return 0;
}

int rusm_http_resp_body(rusm_http_resp *r, const void *data, size_t len) {
  if (!r || (!data && len))
    return RUSM_EINVAL;
  void *copy = malloc(len ? len : 1);
  if (!copy) {
    r->failed = true;
    return RUSM_ENOMEM;
  }
  if (len)
    memcpy(copy, data, len);
  return rusm_http_resp_body_take(r, copy, len);
}

int rusm_http_resp_body_static(rusm_http_resp *r, const void *data,
                               size_t len) {
  if (!r || (!data && len))
    return RUSM_EINVAL;
  body_drop(r);
  r->body = data;
  r->body_len = len;
  return 0;
}

int rusm_http_resp_json(rusm_http_resp *r, int status, const char *json) {
  if (!r || !json)
    return RUSM_EINVAL;
  int rc = rusm_http_resp_status(r, status);
  if (rc == 0)
    rc = rusm__resp_add(r, "Content-Type", "application/json");
  if (rc == 0)
    rc = rusm_http_resp_body(r, json, strlen(json));
  return rc;
}

/* JSON string contents of s (no quotes) into out; returns the length. */
static size_t json_escape(const char *s, char *out, size_t cap) {
  size_t n = 0;
  for (; *s && n + 7 < cap; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') {
      out[n++] = '\\';
      out[n++] = (char)ch;
    } else if (ch < 0x20) {
      n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
    } else {
      out[n++] = (char)ch;
    }
  }
  out[n] = '\0';
  return n;
}

int rusm_http_resp_error(rusm_http_resp *r, int status, const char *text) {
  if (!r || !text)
    return RUSM_EINVAL;
  char esc[512], json[560];
  json_escape(text, esc, sizeof esc);
  snprintf(json, sizeof json, "{\"error\":\"%s\"}", esc);
  return rusm_http_resp_json(r, status, json);
}

void rusm_http_resp_close(rusm_http_resp *r) {
  if (r)
    r->close = true;
}

/* ---- requests ------------------------------------------------------------ */

const char *rusm_http_req_method(const rusm_http_req *r) {
  return r ? r->method : NULL;
}
const char *rusm_http_req_target(const rusm_http_req *r) {
  return r ? r->target : NULL;
}
const char *rusm_http_req_path(const rusm_http_req *r) {
  return r ? r->path : NULL;
}
const char *rusm_http_req_query(const rusm_http_req *r) {
  return r ? r->query : NULL;
}

const char *rusm_http_req_header(const rusm_http_req *r, const char *name) {
  if (!r || !name)
    return NULL;
  const rusm__hconn *c = r->c;
  for (uint32_t i = 0; i < c->nhdrs; i++)
    if (strcasecmp(c->hbuf + c->hdrs[i].name, name) == 0)
      return c->hbuf + c->hdrs[i].value;
  return NULL;
}

const char *rusm_http_req_body(const rusm_http_req *r, size_t *len) {
  if (len)
    *len = r ? r->body_len : 0;
  return r ? r->body : NULL;
}

rusm_proc *rusm_http_req_proc(const rusm_http_req *r) {
  return r ? r->c->self : NULL;
}

rusm_rt *rusm_http_req_rt(const rusm_http_req *r) {
  return r ? r->c->srv->rt : NULL;
}

int rusm_http_req_peer(const rusm_http_req *r, char *host, size_t hostlen,
                       uint16_t *port) {
  if (!r)
    return RUSM_EINVAL;
  return rusm_tcp_peername(r->c->self, r->c->sock, host, hostlen, port);
}

/* ---- writing --------------------------------------------------------------
 */

int rusm__hconn_write(rusm__hconn *c, const void *data, size_t len) {
  if (len == 0)
    return 0;
  rusm_rt *rt = c->srv->rt;
  rusm_timer_ref ref = 0;
  /* A peer that stops reading would block this process for good: an exit
   * signal to ourselves ends it if the write is still stuck then (the
   * socket and this block are released on the exit path). */
  rusm_exit_after(rt, c->srv->o.write_timeout_ms, rusm_self(c->self),
                  rusm_reason_str("http: write timeout"), &ref);
  int rc = rusm_tcp_send(c->self, c->sock, data, len);
  if (ref)
    rusm_cancel_timer(rt, ref);
  return rc;
}

static bool no_body_status(int status) {
  return status < 200 || status == 204 || status == 304;
}

/* Writes the response of the current request. head_only: HEAD. */
static int send_response(rusm__hconn *c, rusm_http_resp *r, bool keep,
                         bool head_only) {
  if (r->failed) { /* out of memory while the handler built it */
    body_drop(r);
    r->hdrs_len = 0;
    r->status = 500;
  }
  char line[160];
  int n = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", r->status,
                   rusm_http_status_text(r->status));
  size_t cap = (size_t)n + r->hdrs_len + 96;
  bool one = !head_only && r->body_len <= SMALL_BODY;
  if (one)
    cap += r->body_len;
  char *buf = malloc(cap);
  if (!buf)
    return RUSM_ENOMEM;
  size_t at = 0;
  memcpy(buf, line, (size_t)n);
  at += (size_t)n;
  if (r->status != 101) {
    if (!no_body_status(r->status))
      at += (size_t)snprintf(buf + at, cap - at, "Content-Length: %zu\r\n",
                             r->body_len);
    at += (size_t)snprintf(buf + at, cap - at, "Connection: %s\r\n",
                           keep ? "keep-alive" : "close");
  }
  if (r->hdrs_len) {
    memcpy(buf + at, r->hdrs, r->hdrs_len);
    at += r->hdrs_len;
  }
  buf[at++] = '\r';
  buf[at++] = '\n';
  bool body = !head_only && !no_body_status(r->status) && r->body_len;
  if (body && one) {
    memcpy(buf + at, r->body, r->body_len);
    at += r->body_len;
  }
  int rc = rusm__hconn_write(c, buf, at);
  free(buf);
  if (rc == 0 && body && !one)
    rc = rusm__hconn_write(c, r->body, r->body_len);
  return rc;
}

/* An error answer while parsing (no handler): status, JSON, close. */
static void send_error(rusm__hconn *c, int status, const char *text) {
  rusm_http_resp *r = &c->resp;
  resp_reset(r);
  rusm_http_resp_error(r, status, text);
  send_response(c, r, false, false);
}

/* ---- parsing ------------------------------------------------------------ */

static rusm__hconn *conn_of(llhttp_t *p) { return p->data; }

static int fail(rusm__hconn *c, int status, const char *text) {
  if (!c->fail_status) {
    c->fail_status = status;
    c->fail_text = text;
  }
  return -1;
}

/* Appends raw request bytes to hbuf, counted against the header limit. */
static int happend(rusm__hconn *c, const char *at, size_t len) {
  if (c->hlen + len + 1 > c->srv->o.max_header_bytes)
    return fail(c, 413, "request headers too large");
  memcpy(c->hbuf + c->hlen, at, len);
  c->hlen += (uint32_t)len;
  return 0;
}

/* The NULs between strings: hcap leaves room for them past the limit. */
static void hterm(rusm__hconn *c) {
  assert(c->hlen < c->hcap);
  c->hbuf[c->hlen++] = '\0';
}

static int on_message_begin(llhttp_t *p) {
  rusm__hconn *c = conn_of(p);
  c->hlen = 0;
  c->nhdrs = 0;
  c->hstate = 0;
  c->path_off = 0;
  c->body_len = 0;
  if (c->body)
    c->body[0] = '\0';
  c->fail_status = 0;
  c->fail_text = NULL;
  c->in_request = true;
  c->deadline_ns =
      rusm_now_ns() + (int64_t)c->srv->o.request_timeout_ms * 1000000;
  resp_reset(&c->resp);
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  return happend(conn_of(p), at, len);
}

static int on_url_complete(llhttp_t *p) {
  rusm__hconn *c = conn_of(p);
  hterm(c);
  /* The path is copied after the target: both stay NUL-terminated. */
  const char *t = c->hbuf; /* the target is the first string */
  const char *path = t;
  if (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0) {
    path = strchr(t + (t[4] == ':' ? 7 : 8), '/'); /* absolute-form */
    if (!path)
      path = "/";
  }
  if (path[0] != '/' && strcmp(path, "*") != 0)
    return fail(c, 400, "bad request target");
  size_t plen = strcspn(path, "?#");
  uint32_t off = c->hlen;
  if (c->hlen + plen + 1 >= c->hcap)
    return fail(c, 413, "request headers too large");
  memcpy(c->hbuf + c->hlen, path, plen);
  c->hlen += (uint32_t)plen;
  hterm(c);
  c->path_off = off;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  rusm__hconn *c = conn_of(p);
  if (c->hstate != 1) {
    if (c->nhdrs >= c->srv->o.max_headers)
      return fail(c, 413, "too many request headers");
    c->hdrs[c->nhdrs].name = c->hlen;
    c->hdrs[c->nhdrs].value = 0;
    c->hstate = 1;
  }
  return happend(c, at, len);
}

static int on_header_field_complete(llhttp_t *p) {
  rusm__hconn *c = conn_of(p);
  if (c->hstate != 1) /* an empty name: llhttp refuses those first */
    return fail(c, 400, "bad header");
  hterm(c);
  c->hstate = 0;
  c->hdrs[c->nhdrs].value = c->hlen; /* "" until a value comes */
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  rusm__hconn *c = conn_of(p);
  c->hstate = 2;
  return happend(c, at, len);
}

static int on_header_value_complete(llhttp_t *p) {
  rusm__hconn *c = conn_of(p);
  while (c->hlen > c->hdrs[c->nhdrs].value &&
         (c->hbuf[c->hlen - 1] == ' ' || c->hbuf[c->hlen - 1] == '\t'))
    c->hlen--;
  hterm(c);
  c->nhdrs++;
  c->hstate = 0;
  return 0;
}

static void req_fill(rusm__hconn *c) {
  rusm_http_req *r = &c->req;
  r->c = c;
  r->method =
      llhttp_method_name((llhttp_method_t)llhttp_get_method(&c->parser));
  r->target = c->hbuf; /* the target is the first string of hbuf */
  r->path = c->hbuf + c->path_off;
  const char *q = strchr(r->target, '?');
  r->query = q ? q + 1 : "";
  r->body = c->body ? c->body : (char *)"";
  r->body_len = c->body_len;
}

static int on_headers_complete(llhttp_t *p) {
  rusm__hconn *c = conn_of(p);
  if (p->flags & F_CONTENT_LENGTH &&
      p->content_length > c->srv->o.max_body_bytes)
    return fail(c, 413, "request body too large");
  req_fill(c);
  const char *expect = rusm_http_req_header(&c->req, "Expect");
  if (expect && strcasecmp(expect, "100-continue") == 0 && p->http_major == 1 &&
      p->http_minor >= 1) {
    static const char k_continue[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (rusm__hconn_write(c, k_continue, sizeof k_continue - 1) != 0)
      return fail(c, -1, NULL); /* the peer is gone: no answer */
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  rusm__hconn *c = conn_of(p);
  if (c->body_len + len > c->srv->o.max_body_bytes)
    return fail(c, 413, "request body too large");
  if (c->body_len + len + 1 > c->body_cap) {
    size_t cap = c->body_cap ? c->body_cap : 1024;
    while (cap < c->body_len + len + 1)
      cap *= 2;
    char *b = realloc(c->body, cap);
    if (!b)
      return fail(c, 500, "out of memory");
    c->body = b;
    c->body_cap = cap;
  }
  memcpy(c->body + c->body_len, at, len);
  c->body_len += len;
  c->body[c->body_len] = '\0';
  return 0;
}

/* ---- dispatch ------------------------------------------------------------ */

static bool path_match(const char *pattern, const char *path) {
  size_t n = strlen(pattern);
  if (n && pattern[n - 1] == '*')
    return strncmp(pattern, path, n - 1) == 0;
  return strcmp(pattern, path) == 0;
}

static bool method_match(const char *want, const char *have) {
  return !want || strcmp(want, have) == 0 ||
         (strcmp(want, "GET") == 0 && strcmp(have, "HEAD") == 0);
}

static void dispatch(rusm__hconn *c) {
  const rusm_http_opts *o = &c->srv->o;
  rusm_http_req *req = &c->req;
  rusm_http_resp *resp = &c->resp;
  bool path_seen = false;
  for (size_t i = 0; i < o->nroutes; i++) {
    const rusm_http_route *rt = &o->routes[i];
    if (!rt->path || !rt->handler || !path_match(rt->path, req->path))
      continue;
    if (!method_match(rt->method, req->method)) {
      path_seen = true;
      continue;
    }
    rt->handler(req, resp, rt->arg);
    return;
  }
  if (path_seen)
    rusm_http_resp_error(resp, 405, "method not allowed");
  else if (o->fallback)
    o->fallback(req, resp, o->fallback_arg);
  else
    rusm_http_resp_error(resp, 404, "not found");
}

static int on_message_complete(llhttp_t *p) {
  rusm__hconn *c = conn_of(p);
  bool keep = llhttp_should_keep_alive(p) != 0; /* flags reset after this */
  bool upgrade = p->upgrade != 0;
  req_fill(c);
  c->in_request = false;
  rusm__hs_add(c->srv, RUSM__HS_REQUESTS, 1);
  dispatch(c);
  rusm_http_resp *r = &c->resp;
  if (r->ws_ops && r->status == 101 && !r->failed) {
    if (send_response(c, r, false, false) != 0) {
      c->stop = true;
      return HPE_PAUSED;
    }
    c->upgrade = true;
    c->stop = true;
    return HPE_PAUSED; /* what follows is WebSocket */
  }
  r->ws_ops = NULL;
  if (r->status == 101) /* 101 without an accepted upgrade */
    r->status = 500;
  if (r->close || upgrade)
    keep = false;
  bool head = strcmp(c->req.method, "HEAD") == 0;
  if (send_response(c, r, keep, head) != 0 || !keep) {
    c->stop = true;
    return HPE_PAUSED;
  }
  resp_reset(r);
  return 0;
}

static const llhttp_settings_t k_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- the connection process ------------------------------------------------
 */

static void conn_exit(void *arg) {
  rusm__hconn *c = arg;
  rusm__ws_free(c);
  resp_free(&c->resp);
  free(c->hbuf);
  free(c->hdrs);
  free(c->body);
  free(c);
}

/* Shuts our side, then reads and drops what the peer still sends for a
 * moment, so it reads our last answer instead of a reset. */
static void linger_close(rusm__hconn *c) {
  if (rusm_tcp_shutdown(c->self, c->sock) != 0)
    return;
  int64_t end = rusm_now_ns() + (int64_t)LINGER_MS * 1000000;
  size_t total = 0;
  while (total < LINGER_MAX) {
    int64_t left = (end - rusm_now_ns()) / 1000000;
    if (left <= 0)
      break;
    ssize_t n = rusm_tcp_recv(c->self, c->sock, c->rbuf, sizeof c->rbuf, left);
    if (n <= 0)
      break;
    total += (size_t)n;
  }
}

static void conn_main(rusm_proc *self, rusm_sock *sock, void *arg) {
  rusm_http_server *srv = arg;
  rusm__hs_add(srv, RUSM__HS_CONNECTIONS, 1);
  rusm__hconn *c = calloc(1, sizeof *c);
  if (!c)
    return;
  if (rusm_on_exit(self, conn_exit, c) != 0) {
    free(c);
    return;
  }
  rusm_set_label(self, "http");
  c->srv = srv;
  c->self = self;
  c->sock = sock;
  /* Room for the NULs and the path copy beyond the counted bytes. */
  c->hcap = srv->o.max_header_bytes * 2 + 2 * srv->o.max_headers + 16;
  c->hbuf = malloc(c->hcap);
  c->hdrs = calloc(srv->o.max_headers + 1, sizeof *c->hdrs);
  if (!c->hbuf || !c->hdrs)
    return;
  resp_reset(&c->resp);
  llhttp_init(&c->parser, HTTP_REQUEST, &k_settings);
  c->parser.data = c;
  for (;;) {
    int64_t timeout = srv->o.idle_timeout_ms;
    if (c->in_request) {
      timeout = (c->deadline_ns - rusm_now_ns()) / 1000000;
      if (timeout <= 0) {
        rusm__hs_add(srv, RUSM__HS_TIMEOUTS, 1);
        send_error(c, 408, "request timeout");
        linger_close(c);
        return;
      }
    }
    ssize_t n = rusm_tcp_recv(self, sock, c->rbuf, sizeof c->rbuf, timeout);
    if (n == RUSM_ETIMEDOUT && c->in_request)
      continue; /* the deadline check above answers 408 */
    if (n <= 0)
      return; /* idle, end of stream or an error: nothing to answer */
    llhttp_errno_t err =
        llhttp_execute(&c->parser, (const char *)c->rbuf, (size_t)n);
    if (err == HPE_OK)
      continue;
    if ((err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) && c->stop) {
      if (c->upgrade) {
        const uint8_t *pos = (const uint8_t *)llhttp_get_error_pos(&c->parser);
        size_t rest = 0;
        if (pos && pos >= c->rbuf && pos <= c->rbuf + n)
          rest = (size_t)(c->rbuf + n - pos);
        rusm__ws_run(c, rest ? pos : NULL, rest);
        linger_close(c); /* the peer may still be sending (1009 ...) */
        return;
      }
      linger_close(c);
      return;
    }
    /* A parse error, or a limit our callbacks hit. */
    int status = c->fail_status ? c->fail_status : 400;
    if (status == 413)
      rusm__hs_add(srv, RUSM__HS_TOO_LARGE, 1);
    else if (status == 400)
      rusm__hs_add(srv, RUSM__HS_BAD, 1);
    if (status > 0) {
      char text[160];
      if (c->fail_text)
        snprintf(text, sizeof text, "%s", c->fail_text);
      else
        snprintf(text, sizeof text, "bad request: %s",
                 llhttp_get_error_reason(&c->parser)
                     ? llhttp_get_error_reason(&c->parser)
                     : llhttp_errno_name(err));
      send_error(c, status, text);
      linger_close(c);
    }
    return;
  }
}

/* ---- the server ------------------------------------------------------------
 */

void rusm_http_opts_init(rusm_http_opts *o) {
  if (o)
    memset(o, 0, sizeof *o);
}

int rusm_http_listen(rusm_rt *rt, const char *host, uint16_t port,
                     const rusm_http_opts *o, rusm_http_server **out) {
  if (!rt || !o || !out || (o->nroutes && !o->routes))
    return RUSM_EINVAL;
  rusm_http_server *s = calloc(1, sizeof *s);
  if (!s)
    return RUSM_ENOMEM;
  s->rt = rt;
  s->o = *o;
  rusm_http_opts *so = &s->o;
  if (!so->max_header_bytes)
    so->max_header_bytes = DEF_MAX_HEADER;
  if (!so->max_headers)
    so->max_headers = DEF_MAX_HEADERS;
  if (!so->max_body_bytes)
    so->max_body_bytes = DEF_MAX_BODY;
  if (!so->idle_timeout_ms)
    so->idle_timeout_ms = DEF_IDLE_MS;
  if (!so->request_timeout_ms)
    so->request_timeout_ms = DEF_REQUEST_MS;
  if (!so->write_timeout_ms)
    so->write_timeout_ms = DEF_WRITE_MS;
  if (!so->ws_ping_ms)
    so->ws_ping_ms = DEF_PING_MS;
  if (!so->ws_max_message)
    so->ws_max_message = DEF_WS_MAX;
  if (!so->stack_size)
    so->stack_size = DEF_STACK;
  rusm_tcp_listen_opts lo;
  rusm_tcp_listen_opts_init(&lo);
  lo.fn = conn_main;
  lo.arg = s;
  lo.stack_size = so->stack_size;
  lo.flags = RUSM_TCP_NODELAY;
  int rc = rusm_tcp_listen(rt, host, port, &lo, &s->acceptor, &s->port);
  if (rc < 0) {
    free(s);
    return rc;
  }
  *out = s;
  return 0;
}

uint16_t rusm_http_port(const rusm_http_server *s) { return s ? s->port : 0; }

rusm_pid_t rusm_http_acceptor(const rusm_http_server *s) {
  return s ? s->acceptor : RUSM_PID_NONE;
}

void rusm_http_stop(rusm_http_server *s) {
  if (s && !atomic_exchange(&s->stopped, true))
    rusm_exit(s->rt, s->acceptor, RUSM_REASON_SHUTDOWN);
}

void rusm_http_free(rusm_http_server *s) { free(s); }

void rusm_http_stats_get(const rusm_http_server *s, rusm_http_stats *out) {
  if (!out)
    return;
  memset(out, 0, sizeof *out);
  if (!s)
    return;
  uint64_t v[RUSM__HS_COUNT];
  for (int i = 0; i < RUSM__HS_COUNT; i++)
    v[i] = atomic_load_explicit(&s->n[i], memory_order_relaxed);
  out->connections = v[RUSM__HS_CONNECTIONS];
  out->requests = v[RUSM__HS_REQUESTS];
  out->bad_requests = v[RUSM__HS_BAD];
  out->too_large = v[RUSM__HS_TOO_LARGE];
  out->timeouts = v[RUSM__HS_TIMEOUTS];
  out->ws_sessions = v[RUSM__HS_WS];
  out->ws_open = v[RUSM__HS_WS] >= v[RUSM__HS_WS_CLOSED]
                     ? v[RUSM__HS_WS] - v[RUSM__HS_WS_CLOSED]
                     : 0;
  out->ws_bad_frames = v[RUSM__HS_WS_BAD];
}
