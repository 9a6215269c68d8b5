// ctest-labels: concurrent
/*
 * Unit tests: the HTTP/1.1 + WebSocket server (rusm/serve.h) over
 * loopback, through real sockets: good requests and routing, keep-alive
 * and pipelining, a request split into one-byte writes, 400 on garbage,
 * 413 on oversized bodies and headers, 408 and idle timeouts, the write
 * timeout, the WebSocket handshake, echo, pings, posts from another
 * thread, the close handshake and bad frames (with their close statuses).
 * After every misbehaving client the server still answers.
 */
#include "support.h"

#include <pthread.h>

#include "http_client.h"
#include "rusm/serve.h"
#include "serve/ws.h"

/* ---- a small application ------------------------------------------------ */

static void h_hello(rusm_http_req *req, rusm_http_resp *resp, void *arg) {
  rusm_http_resp_header(resp, "Content-Type", "text/plain");
  rusm_http_resp_body_static(resp, "hello", 5);
}

/* Echoes the method, path, query, a header and the body. */
static void h_echo(rusm_http_req *req, rusm_http_resp *resp, void *arg) {
  size_t len;
  const char *body = rusm_http_req_body(req, &len);
  const char *x = rusm_http_req_header(req, "x-test");
  char *out = malloc(len + 512);
  int n = snprintf(out, len + 512, "%s %s ?%s x=%s body=%s",
                   rusm_http_req_method(req), rusm_http_req_path(req),
                   rusm_http_req_query(req), x ? x : "-", body);
  rusm_http_resp_body_take(resp, out, (size_t)n);
}

static void h_json(rusm_http_req *req, rusm_http_resp *resp, void *arg) {
  rusm_http_resp_json(resp, 201, "{\"ok\":true}");
}

static void h_bad_header(rusm_http_req *req, rusm_http_resp *resp, void *arg) {
  /* a handler's mistakes are refused, not written */
  T_CHECK(rusm_http_resp_header(resp, "X-Bad", "a\r\nInjected: yes") ==
          RUSM_EINVAL);
  T_CHECK(rusm_http_resp_header(resp, "Content-Length", "3") == RUSM_EINVAL);
  T_CHECK(rusm_http_resp_header(resp, "Bad Name", "x") == RUSM_EINVAL);
  T_CHECK(rusm_http_resp_status(resp, 42) == RUSM_EINVAL);
  rusm_http_resp_error(resp, 418, "quote \" and \\ and \x01");
}

static char g_big[8 << 20]; /* a large static body (write timeout) */

typedef struct fixture {
  t_env e;
  rusm_http_server *srv;
  uint16_t port;
} fixture;

static fixture g;

/* Tells the test thread which process serves it, then answers a body
 * larger than any socket buffer. */
static void h_big(rusm_http_req *req, rusm_http_resp *resp, void *arg) {
  rusm_pid_t me = rusm_self(rusm_http_req_proc(req));
  rusm_send(rusm_http_req_rt(req), g.e.pid, T_TAG_INFO, &me, sizeof me);
  rusm_http_resp_body_static(resp, g_big, sizeof g_big);
}

/* WebSocket: echoes text; "bye" closes (4000); a post shows up as text. */
static _Atomic rusm_pid_t g_session;
static atomic_int g_closed_code;

static int ws_open(rusm_ws *ws, void **state) {
  atomic_store(&g_session, rusm_ws_session(ws));
  return rusm_ws_send_text(ws, "welcome", 7);
}

static void ws_text(rusm_ws *ws, void *state, const char *data, size_t len) {
  if (len == 3 && memcmp(data, "bye", 3) == 0) {
    rusm_ws_close(ws, 4000, "bye");
    return;
  }
  rusm_ws_send_text(ws, data, len);
}

static void ws_close(rusm_pid_t pid, void *state, uint16_t code) {
  atomic_store(&g_closed_code, code);
}

static const rusm_ws_ops k_ws = {ws_open, ws_text, NULL, NULL, ws_close};

static void h_ws(rusm_http_req *req, rusm_http_resp *resp, void *arg) {
  rusm_http_resp_websocket(req, resp, &k_ws, NULL);
}

static const rusm_http_route k_routes[] = {
    {"GET", "/hello", h_hello, NULL}, {NULL, "/echo*", h_echo, NULL},
    {"POST", "/json", h_json, NULL},  {"GET", "/bad", h_bad_header, NULL},
    {"GET", "/big", h_big, NULL},     {"GET", "/ws", h_ws, NULL},
};

static int setup(void **state) {
  t_start(&g.e, 2);
  rusm_http_opts ho;
  rusm_http_opts_init(&ho);
  ho.routes = k_routes;
  ho.nroutes = sizeof k_routes / sizeof k_routes[0];
  ho.max_body_bytes = 64 << 10;
  ho.max_header_bytes = 4096;
  ho.max_headers = 32;
  ho.idle_timeout_ms = 300;
  ho.request_timeout_ms = 400;
  ho.write_timeout_ms = 300;
  ho.ws_ping_ms = 60000;
  ho.ws_max_message = 64 << 10;
  assert_int_equal(rusm_http_listen(g.e.rt, "127.0.0.1", 0, &ho, &g.srv), 0);
  g.port = rusm_http_port(g.srv);
  assert_true(g.port != 0);
  atomic_store(&g_closed_code, 0);
  return 0;
}

static int teardown(void **state) {
  rusm_http_stop(g.srv);
  t_stop(&g.e);
  rusm_http_free(g.srv);
  return 0;
}

/* Waits (on the attached test thread) until pid has exited. */
static void await_exit(rusm_pid_t pid) {
  rusm_ref ref;
  assert_int_equal(rusm_monitor(g.e.me, pid, &ref), 0);
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  rusm_msg *m;
  assert_int_equal(rusm_receive(g.e.me, &f, T_GUARD_MS, &m), 0);
  rusm_msg_free(m);
}

/* The server still answers: after every misbehaving client. */
static void still_serving(void) {
  hc_resp r;
  assert_int_equal(hc_request(g.port, "GET", "/hello", NULL, &r), 200);
  assert_string_equal(r.body, "hello");
  hc_resp_free(&r);
}

/* ---- HTTP -----------------------------------------------------------------
 */

static void test_get_and_routes(void **state) {
  hc_resp r;
  assert_int_equal(hc_request(g.port, "GET", "/hello", NULL, &r), 200);
  assert_string_equal(r.body, "hello");
  assert_string_equal(hc_header(&r, "Content-Length"), "5");
  assert_string_equal(hc_header(&r, "Content-Type"), "text/plain");
  assert_string_equal(hc_header(&r, "Connection"), "close");
  hc_resp_free(&r);

  assert_int_equal(hc_request(g.port, "HEAD", "/hello", NULL, &r), 200);
  assert_string_equal(hc_header(&r, "Content-Length"), "5");
  assert_int_equal(r.body_len, 0);
  hc_resp_free(&r);

  assert_int_equal(hc_request(g.port, "PUT", "/echo/x?a=1&b", "data", &r), 200);
  assert_string_equal(r.body, "PUT /echo/x ?a=1&b x=- body=data");
  hc_resp_free(&r);

  assert_int_equal(hc_request(g.port, "POST", "/json", "{}", &r), 201);
  assert_string_equal(r.body, "{\"ok\":true}");
  assert_string_equal(hc_header(&r, "Content-Type"), "application/json");
  hc_resp_free(&r);

  assert_int_equal(hc_request(g.port, "GET", "/json", NULL, &r), 405);
  hc_resp_free(&r);
  assert_int_equal(hc_request(g.port, "GET", "/nothing", NULL, &r), 404);
  assert_string_equal(r.body, "{\"error\":\"not found\"}");
  hc_resp_free(&r);

  assert_int_equal(hc_request(g.port, "GET", "/bad", NULL, &r), 418);
  assert_null(hc_header(&r, "Injected"));
  assert_string_equal(r.body,
                      "{\"error\":\"quote \\\" and \\\\ and \\u0001\"}");
  hc_resp_free(&r);

  /* absolute-form target and a header value with spaces around it */
  hc_conn *c = malloc(sizeof *c);
  hc_open(c, g.port);
  hc_sends(c->fd, "GET http://127.0.0.1/echo/abs?q HTTP/1.1\r\nHost: x\r\n"
                  "X-Test:   spaced value  \r\nConnection: close\r\n\r\n");
  assert_true(hc_response(c, &r, false));
  assert_string_equal(r.body, "GET /echo/abs ?q x=spaced value body=");
  hc_resp_free(&r);
  close(c->fd);
  free(c);
}

static void test_keep_alive_and_pipelining(void **state) {
  hc_conn *c = malloc(sizeof *c);
  hc_open(c, g.port);
  hc_resp r;
  for (int i = 0; i < 3; i++) { /* one connection, several requests */
    hc_sends(c->fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(hc_response(c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(hc_header(&r, "Connection"), "keep-alive");
    hc_resp_free(&r);
  }
  /* pipelined: three requests in one write, answered in order */
  hc_sends(c->fd, "GET /echo/1 HTTP/1.1\r\nHost: x\r\n\r\n"
                  "POST /echo/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                  "\r\nabc"
                  "GET /echo/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  "\r\n");
  const char *want[3] = {
      "GET /echo/1 ? x=- body=", "POST /echo/2 ? x=- body=abc",
      "GET /echo/3 ? x=- body="};
  for (int i = 0; i < 3; i++) {
    assert_true(hc_response(c, &r, false));
    assert_string_equal(r.body, want[i]);
    hc_resp_free(&r);
  }
  assert_true(hc_closed(c));
  close(c->fd);

  /* HTTP/1.0 closes unless asked to keep the connection */
  hc_open(c, g.port);
  hc_sends(c->fd, "GET /hello HTTP/1.0\r\n\r\n");
  assert_true(hc_response(c, &r, false));
  assert_string_equal(hc_header(&r, "Connection"), "close");
  hc_resp_free(&r);
  assert_false(hc_response(c, &r, false));
  close(c->fd);

  /* chunked request body */
  hc_open(c, g.port);
  hc_sends(c->fd, "POST /echo/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                  "chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n"
                  "0\r\n\r\n");
  assert_true(hc_response(c, &r, false));
  assert_string_equal(r.body, "POST /echo/c ? x=- body=abcde");
  hc_resp_free(&r);
  close(c->fd);
  free(c);
}

static void test_split_into_tiny_writes(void **state) {
  static const char req[] =
      "POST /echo/split?k=v HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Test: tiny\r\n"
      "Content-Length: 11\r\nConnection: close\r\n\r\nhello world";
  hc_conn *c = malloc(sizeof *c);
  hc_open(c, g.port);
  for (size_t i = 0; i < sizeof req - 1; i++)
    assert_true(hc_send(c->fd, req + i, 1)); /* one segment each (NODELAY) */
  hc_resp r;
  assert_true(hc_response(c, &r, false));
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "POST /echo/split ?k=v x=tiny body=hello world");
  hc_resp_free(&r);
  close(c->fd);
  free(c);
}

/* Sends raw bytes, reads until the server closes, returns the status. */
static int raw_status(const void *data, size_t len, char **body) {
  int fd = hc_connect(g.port);
  hc_send(fd, data, len);
  size_t n;
  char *all = hc_read_all(fd, &n);
  close(fd);
  int status = 0;
  if (sscanf(all, "HTTP/1.1 %d", &status) != 1)
    status = -1;
  if (body) {
    char *b = strstr(all, "\r\n\r\n");
    *body = strdup(b ? b + 4 : "");
  }
  free(all);
  return status;
}

static void test_garbage_gets_400(void **state) {
  static const char *const bad[] = {
      "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* a TLS hello */
      "GARBAGE\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
      "GET / HTTP/9.9\r\n\r\n",
      "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
      ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2"
       "\r\n\r\n"),
      "GET nopath HTTP/1.1\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *body;
    int status = raw_status(bad[i], strlen(bad[i]), &body);
    if (status != 400)
      fail_msg("case %zu: status %d, body %s", i, status, body);
    assert_non_null(strstr(body, "\"error\""));
    free(body);
  }
  uint8_t noise[512];
  uint32_t x = 12345;
  for (size_t i = 0; i < sizeof noise; i++) {
    x = x * 1103515245u + 12345u;
    noise[i] = (uint8_t)(x >> 16);
  }
  assert_int_equal(raw_status(noise, sizeof noise, NULL), 400);
  still_serving();
  rusm_http_stats st;
  rusm_http_stats_get(g.srv, &st);
  assert_true(st.bad_requests >= 9);
}

static void test_too_large_gets_413(void **state) {
  /* a declared body over the limit: refused before it is read */
  char head[256];
  snprintf(head, sizeof head,
           "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n",
           1 << 20);
  int fd = hc_connect(g.port);
  hc_sends(fd, head);
  char *chunk = calloc(1, 256 << 10); /* some of it: the server drains */
  hc_send(fd, chunk, 256 << 10);
  size_t n;
  char *all = hc_read_all(fd, &n);
  assert_non_null(strstr(all, "HTTP/1.1 413 "));
  assert_non_null(strstr(all, "request body too large"));
  free(all);
  close(fd);

  /* a chunked body that grows past it */
  fd = hc_connect(g.port);
  hc_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
               "chunked\r\n\r\n");
  for (int i = 0; i < 4; i++) {
    hc_sends(fd, "8000\r\n");
    if (!hc_send(fd, chunk, 0x8000) || !hc_send(fd, "\r\n", 2))
      break; /* refused already */
  }
  all = hc_read_all(fd, &n);
  assert_non_null(strstr(all, "HTTP/1.1 413 "));
  free(all);
  close(fd);
  free(chunk);

  /* Expect: 100-continue with a body too large: 413 instead of 100 */
  fd = hc_connect(g.port);
  hc_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               "Content-Length: 10000000\r\n\r\n");
  all = hc_read_all(fd, &n);
  assert_true(strncmp(all, "HTTP/1.1 413 ", 13) == 0);
  free(all);
  close(fd);
  /* ... and a fitting one gets 100 Continue first */
  hc_conn *c = malloc(sizeof *c);
  hc_open(c, g.port);
  hc_sends(c->fd, "POST /echo/e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue"
                  "\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
  hc_resp r;
  assert_true(hc_response(c, &r, false));
  assert_int_equal(r.status, 100);
  hc_resp_free(&r);
  hc_sends(c->fd, "ok");
  assert_true(hc_response(c, &r, false));
  assert_string_equal(r.body, "POST /echo/e ? x=- body=ok");
  hc_resp_free(&r);
  close(c->fd);
  free(c);

  /* headers over max_header_bytes, and too many of them */
  char *big = malloc(8192);
  size_t at = (size_t)sprintf(big, "GET /hello HTTP/1.1\r\nX-Big: ");
  memset(big + at, 'a', 6000);
  at += 6000;
  at += (size_t)sprintf(big + at, "\r\n\r\n");
  assert_int_equal(raw_status(big, at, NULL), 413);
  at = (size_t)sprintf(big, "GET /hello HTTP/1.1\r\n");
  for (int i = 0; i < 40; i++)
    at += (size_t)sprintf(big + at, "X-H%d: v\r\n", i);
  at += (size_t)sprintf(big + at, "\r\n");
  assert_int_equal(raw_status(big, at, NULL), 413);
  free(big);
  still_serving();
}

static void test_timeouts(void **state) {
  /* idle: a connection that sends nothing is closed */
  int fd = hc_connect(g.port);
  size_t n;
  char *all = hc_read_all(fd, &n);
  assert_int_equal(n, 0);
  free(all);
  close(fd);
  /* a request that never ends gets 408 */
  fd = hc_connect(g.port);
  hc_sends(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n");
  all = hc_read_all(fd, &n);
  assert_true(strncmp(all, "HTTP/1.1 408 ", 13) == 0);
  free(all);
  close(fd);
  /* a peer that reads nothing: the write times out and the connection
   * process ends (its socket closed with it) */
  fd = hc_connect(g.port);
  int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  hc_sends(fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
  rusm_filter f = rusm_filter_tag(T_TAG_INFO);
  rusm_msg *m;
  assert_int_equal(rusm_receive(g.e.me, &f, T_GUARD_MS, &m), 0);
  rusm_pid_t conn;
  memcpy(&conn, rusm_msg_data(m), sizeof conn);
  rusm_msg_free(m);
  await_exit(conn);
  close(fd);
  still_serving();
}

/* ---- WebSocket --------------------------------------------------------------
 */

static void expect_text(hc_conn *c, const char *want) {
  char *p;
  size_t n;
  int op = hc_ws_read(c, &p, &n);
  assert_int_equal(op, 1);
  assert_string_equal(p, want);
  free(p);
}

static void test_ws_accept_key_and_sha1(void **state) {
  char out[29];
  rusm__ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out);
  assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  uint8_t d[20];
  rusm__sha1("abc", 3, d);
  static const uint8_t abc[20] = {0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81,
                                  0x6a, 0xba, 0x3e, 0x25, 0x71, 0x78, 0x50,
                                  0xc2, 0x6c, 0x9c, 0xd0, 0xd8, 0x9d};
  assert_memory_equal(d, abc, 20);
  /* 56 bytes: the padding spills into a second block */
  const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  rusm__sha1(two, strlen(two), d);
  static const uint8_t two_d[20] = {0x84, 0x98, 0x3e, 0x44, 0x1c, 0x3b, 0xd2,
                                    0x6e, 0xba, 0xae, 0x4a, 0xa1, 0xf9, 0x51,
                                    0x29, 0xe5, 0xe5, 0x46, 0x70, 0xf1};
  assert_memory_equal(d, two_d, 20);
}

static void test_ws_echo_ping_post_close(void **state) {
  hc_conn *c = malloc(sizeof *c);
  hc_ws_open(c, g.port, "/ws");
  expect_text(c, "welcome");
  hc_ws_text(c, "hi there");
  expect_text(c, "hi there");
  /* a fragmented message: two frames, one text */
  hc_ws_frame(c, 0x01, "frag", 4, true);
  hc_ws_frame(c, 0x80, "mented", 6, true);
  expect_text(c, "fragmented");
  /* a large one (16-bit length) */
  char *big = malloc(40000);
  memset(big, 'x', 39999);
  big[39999] = '\0';
  hc_ws_text(c, big);
  expect_text(c, big);
  free(big);
  /* ping -> pong with the same payload */
  hc_ws_frame(c, 0x89, "pp", 2, true);
  char *p;
  size_t n;
  assert_int_equal(hc_ws_read(c, &p, &n), 10);
  assert_string_equal(p, "pp");
  free(p);
  /* a post from this (non-process) thread, and a shared buffer */
  rusm_pid_t s = atomic_load(&g_session);
  assert_int_equal(rusm_ws_post_text(g.e.rt, s, "posted", 6), 0);
  expect_text(c, "posted");
  rusm_buf *b = rusm_buf_from("shared", 6);
  assert_int_equal(rusm_ws_post_buf(g.e.rt, s, b), 0);
  rusm_buf_unref(b);
  expect_text(c, "shared");
  /* the client closes: the server answers with the same status */
  rusm_ref ref;
  assert_int_equal(rusm_monitor(g.e.me, s, &ref), 0);
  uint8_t code[2] = {0x03, 0xe8}; /* 1000 */
  hc_ws_frame(c, 0x88, code, 2, true);
  assert_int_equal(hc_ws_close_status(c), 1000);
  assert_true(hc_closed(c));
  close(c->fd);
  /* the session is gone: posting to it says so */
  rusm_filter down = rusm_filter_tag(RUSM_TAG_DOWN);
  rusm_msg *m;
  assert_int_equal(rusm_receive(g.e.me, &down, T_GUARD_MS, &m), 0);
  rusm_msg_free(m);
  assert_int_equal(rusm_ws_post_text(g.e.rt, s, "x", 1), RUSM_ENOPROC);
  assert_int_equal(atomic_load(&g_closed_code), 1000);

  /* the server closes ("bye"), and on a post_close */
  hc_ws_open(c, g.port, "/ws");
  expect_text(c, "welcome");
  hc_ws_text(c, "bye");
  assert_int_equal(hc_ws_close_status(c), 4000);
  close(c->fd);
  hc_ws_open(c, g.port, "/ws");
  expect_text(c, "welcome");
  assert_int_equal(rusm_ws_post_close(g.e.rt, atomic_load(&g_session), 1001),
                   0);
  assert_int_equal(hc_ws_close_status(c), 1001);
  close(c->fd);
  free(c);
  still_serving();
}

/* A session that gets frame, then the close status it must answer. */
static int bad_frame(const uint8_t *raw, size_t len) {
  hc_conn *c = malloc(sizeof *c);
  hc_ws_open(c, g.port, "/ws");
  expect_text(c, "welcome");
  hc_send(c->fd, raw, len);
  int code = hc_ws_close_status(c);
  close(c->fd);
  free(c);
  return code;
}

static void test_ws_bad_frames(void **state) {
  /* unmasked client frame */
  static const uint8_t unmasked[] = {0x81, 0x02, 'h', 'i'};
  assert_int_equal(bad_frame(unmasked, sizeof unmasked), 1002);
  /* invalid UTF-8 in a text frame: 0xff 0xfe, mask 0 */
  static const uint8_t bad_utf8[] = {0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe};
  assert_int_equal(bad_frame(bad_utf8, sizeof bad_utf8), 1007);
  /* a reserved opcode */
  static const uint8_t opcode3[] = {0x83, 0x81, 0, 0, 0, 0, 'x'};
  assert_int_equal(bad_frame(opcode3, sizeof opcode3), 1002);
  /* a continuation with nothing to continue */
  static const uint8_t cont[] = {0x80, 0x81, 0, 0, 0, 0, 'x'};
  assert_int_equal(bad_frame(cont, sizeof cont), 1002);
  /* RSV bits without an extension */
  static const uint8_t rsv[] = {0xc1, 0x81, 0, 0, 0, 0, 'x'};
  assert_int_equal(bad_frame(rsv, sizeof rsv), 1002);
  /* a control frame over 125 bytes (the frame layer refuses it) */
  uint8_t ctrl[4 + 4 + 200] = {0x89, 0x80 | 126, 0, 200};
  assert_int_equal(bad_frame(ctrl, sizeof ctrl), 1002);
  /* a length not in its shortest form */
  static const uint8_t longform[] = {0x81, 0x80 | 126, 0,   5,   0,   0,  0,
                                     0,    'h',        'e', 'l', 'l', 'o'};
  assert_int_equal(bad_frame(longform, sizeof longform), 1002);
  /* binary, with no binary callback: unsupported data */
  static const uint8_t binary[] = {0x82, 0x81, 0, 0, 0, 0, 'x'};
  assert_int_equal(bad_frame(binary, sizeof binary), 1003);
  /* a message over ws_max_message (64 KiB here) */
  size_t big = (64 << 10) + 10;
  uint8_t *huge = calloc(1, big + 14);
  huge[0] = 0x81;
  huge[1] = 0x80 | 127;
  for (int i = 0; i < 8; i++)
    huge[2 + i] = (uint8_t)((uint64_t)big >> (8 * (7 - i)));
  assert_int_equal(bad_frame(huge, big + 14), 1009);
  free(huge);
  still_serving();
}

static void test_ws_handshake_refusals(void **state) {
  char *body;
  static const char no_upgrade[] =
      "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  assert_int_equal(raw_status(no_upgrade, sizeof no_upgrade - 1, &body), 426);
  free(body);
  static const char bad_key[] =
      "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: "
      "keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Key: tooshort\r\n\r\n";
  assert_int_equal(raw_status(bad_key, sizeof bad_key - 1, NULL), 400);
  static const char old_version[] =
      "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: "
      "Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: "
      "dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
  assert_int_equal(raw_status(old_version, sizeof old_version - 1, NULL), 426);
  /* frames right behind the handshake, in the same write */
  hc_conn *c = malloc(sizeof *c);
  hc_open(c, g.port);
  char req[1024];
  int n = snprintf(req, sizeof req,
                   "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
  static const uint8_t hi[] = {0x81, 0x82, 0, 0, 0, 0, 'h', 'i'};
  memcpy(req + n, hi, sizeof hi);
  assert_true(hc_send(c->fd, req, (size_t)n + sizeof hi));
  hc_resp r;
  assert_true(hc_response(c, &r, false));
  assert_int_equal(r.status, 101);
  hc_resp_free(&r);
  expect_text(c, "welcome");
  expect_text(c, "hi");
  close(c->fd);
  free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ws_accept_key_and_sha1),
      cmocka_unit_test_setup_teardown(test_get_and_routes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_keep_alive_and_pipelining, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_split_into_tiny_writes, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_garbage_gets_400, setup, teardown),
      cmocka_unit_test_setup_teardown(test_too_large_gets_413, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ws_echo_ping_post_close, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_ws_bad_frames, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ws_handshake_refusals, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
