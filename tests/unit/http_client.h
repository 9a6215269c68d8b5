/*
 * http_client.h — a small blocking HTTP/1.1 and WebSocket client for the
 * serving tests (header only; test_serve.c, test_dashboard.c). Plain
 * sockets on loopback with a receive timeout as the failure guard; every
 * function fails the test (cmocka) on an unexpected error, so they run on
 * the test thread only.
 */
#ifndef RUSM_TESTS_HTTP_CLIENT_H
#define RUSM_TESTS_HTTP_CLIENT_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#define HC_GUARD_S 10 /* receive timeout: a failure guard only */

static inline int hc_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct timeval tv = {HC_GUARD_S, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
    fail_msg("connect: %s", strerror(errno));
  return fd;
}

/* Sends everything; false when the peer is gone (EPIPE, reset). */
static inline bool hc_send(int fd, const void *data, size_t len) {
  const uint8_t *p = data;
  while (len) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    p += n;
    len -= (size_t)n;
  }
  return true;
}

static inline void hc_sends(int fd, const char *s) {
  assert_true(hc_send(fd, s, strlen(s)));
}

/* Reads until end of stream (or a reset); returns a malloc'd buffer
 * (NUL-terminated) and its length. */
static inline char *hc_read_all(int fd, size_t *len) {
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  assert_non_null(buf);
  for (;;) {
    if (n + 1 >= cap) {
      cap *= 2;
      buf = realloc(buf, cap);
      assert_non_null(buf);
    }
    ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      fail_msg("timed out waiting for end of stream");
    if (r <= 0)
      break; /* end of stream, or reset after the server's answer */
    n += (size_t)r;
  }
  buf[n] = '\0';
  if (len)
    *len = n;
  return buf;
}

/* One response: status, headers (raw) and body. */
typedef struct hc_resp {
  int status;
  char head[8192];
  char *body;
  size_t body_len;
  bool eof; /* the connection ended right after it */
} hc_resp;

/* A client connection: bytes read past one response (the next one, or
 * WebSocket frames after a 101) stay in buf for the next read. */
typedef struct hc_conn {
  int fd;
  char buf[65536];
  size_t len;
} hc_conn;

static inline void hc_open(hc_conn *c, uint16_t port) {
  c->fd = hc_connect(port);
  c->len = 0;
}

/* Reads more into c->buf; false at end of stream. */
static inline bool hc_fill(hc_conn *c) {
  if (c->len == sizeof c->buf)
    fail_msg("response too large for the test client");
  for (;;) {
    ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      fail_msg("timed out waiting for a response");
    if (r <= 0)
      return false;
    c->len += (size_t)r;
    return true;
  }
}

static inline const char *hc_header(const hc_resp *r, const char *name) {
  static char val[1024];
  size_t nl = strlen(name);
  const char *p = strstr(r->head, "\r\n");
  while (p && p[2]) {
    p += 2;
    if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      const char *v = p + nl + 1;
      while (*v == ' ')
        v++;
      size_t n = strcspn(v, "\r");
      if (n >= sizeof val)
        n = sizeof val - 1;
      memcpy(val, v, n);
      val[n] = '\0';
      return val;
    }
    p = strstr(p, "\r\n");
  }
  return NULL;
}

/* Reads one response; head_only: the request was HEAD. Returns false
 * when the connection ended before any byte of it. */
static inline bool hc_response(hc_conn *c, hc_resp *r, bool head_only) {
  memset(r, 0, sizeof *r);
  char *end;
  while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
    if (!hc_fill(c)) {
      if (c->len == 0)
        return false;
      fail_msg("connection ended inside a response head");
    }
  size_t hlen = (size_t)(end - c->buf) + 4;
  assert_true(hlen < sizeof r->head);
  memcpy(r->head, c->buf, hlen);
  r->head[hlen] = '\0';
  assert_int_equal(sscanf(r->head, "HTTP/1.1 %d", &r->status), 1);
  memmove(c->buf, c->buf + hlen, c->len - hlen);
  c->len -= hlen;
  const char *cl = hc_header(r, "Content-Length");
  size_t want = 0;
  bool until_eof = false;
  if (cl)
    want = strtoul(cl, NULL, 10);
  else if (r->status >= 200 && r->status != 204 && r->status != 304 &&
           r->status != 101)
    until_eof = true;
  if (head_only)
    want = 0, until_eof = false;
  while (until_eof || c->len < want) {
    if (!hc_fill(c)) {
      r->eof = true;
      break;
    }
  }
  if (until_eof)
    want = c->len;
  assert_true(c->len >= want);
  r->body = malloc(want + 1);
  assert_non_null(r->body);
  memcpy(r->body, c->buf, want);
  r->body[want] = '\0';
  r->body_len = want;
  memmove(c->buf, c->buf + want, c->len - want);
  c->len -= want;
  return true;
}

static inline void hc_resp_free(hc_resp *r) {
  free(r->body);
  r->body = NULL;
}

/* Whether the server ended the connection (reads what is left first). */
static inline bool hc_closed(hc_conn *c) {
  while (hc_fill(c)) {
  }
  return true;
}

/* A whole exchange on a fresh connection ("Connection: close"). */
static inline int hc_request(uint16_t port, const char *method,
                             const char *path, const char *body, hc_resp *out) {
  hc_conn *c = malloc(sizeof *c);
  assert_non_null(c);
  hc_open(c, port);
  char head[512];
  snprintf(head, sizeof head,
           "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
           "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
           method, path, body ? strlen(body) : 0);
  hc_sends(c->fd, head);
  if (body)
    hc_sends(c->fd, body);
  assert_true(hc_response(c, out, strcmp(method, "HEAD") == 0));
  close(c->fd);
  free(c);
  return out->status;
}

/* ---- WebSocket ---------------------------------------------------------- */

/* Opens a session on path; the 101 is checked, leftovers kept in c. */
static inline void hc_ws_open(hc_conn *c, uint16_t port, const char *path) {
  hc_open(c, port);
  char req[512];
  snprintf(req, sizeof req,
           "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
           path);
  hc_sends(c->fd, req);
  hc_resp r;
  assert_true(hc_response(c, &r, false));
  assert_int_equal(r.status, 101);
  /* RFC 6455's own example key and answer. */
  assert_string_equal(hc_header(&r, "Sec-WebSocket-Accept"),
                      "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  hc_resp_free(&r);
}

/* A client frame (masked unless mask is false). */
static inline void hc_ws_frame(hc_conn *c, uint8_t first, const void *data,
                               size_t len, bool mask) {
  uint8_t *f = malloc(len + 14);
  assert_non_null(f);
  size_t n = 0;
  f[n++] = first;
  uint8_t m = mask ? 0x80 : 0;
  if (len < 126) {
    f[n++] = (uint8_t)(m | len);
  } else if (len < 65536) {
    f[n++] = m | 126;
    f[n++] = (uint8_t)(len >> 8);
    f[n++] = (uint8_t)len;
  } else {
    f[n++] = m | 127;
    for (int i = 7; i >= 0; i--)
      f[n++] = (uint8_t)((uint64_t)len >> (8 * i));
  }
  static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
  if (mask) {
    memcpy(f + n, key, 4);
    n += 4;
  }
  const uint8_t *p = data;
  for (size_t i = 0; i < len; i++)
    f[n + i] = mask ? p[i] ^ key[i % 4] : p[i];
  hc_send(c->fd, f, n + len); /* a closed peer is the test's business */
  free(f);
}

static inline void hc_ws_text(hc_conn *c, const char *s) {
  hc_ws_frame(c, 0x81, s, strlen(s), true);
}

/* Reads one server frame: its opcode, and its payload (malloc'd, NUL-
 * terminated). Returns -1 at end of stream. */
static inline int hc_ws_read(hc_conn *c, char **payload, size_t *len) {
  *payload = NULL; /* defined on every path, the error ones included */
  *len = 0;
  while (c->len < 2)
    if (!hc_fill(c))
      return -1;
  uint8_t b0 = (uint8_t)c->buf[0], b1 = (uint8_t)c->buf[1];
  assert_false(b1 & 0x80); /* servers never mask */
  size_t hl = 2;
  uint64_t n = b1 & 0x7f;
  if (n == 126)
    hl = 4;
  else if (n == 127)
    hl = 10;
  while (c->len < hl)
    if (!hc_fill(c))
      return -1;
  if (n == 126)
    n = (uint64_t)(uint8_t)c->buf[2] << 8 | (uint8_t)c->buf[3];
  else if (n == 127) {
    n = 0;
    for (int i = 0; i < 8; i++)
      n = n << 8 | (uint8_t)c->buf[2 + i];
  }
  assert_true(hl + n <= sizeof c->buf);
  while (c->len < hl + n)
    if (!hc_fill(c))
      return -1;
  char *p = malloc(n + 1);
  assert_non_null(p);
  memcpy(p, c->buf + hl, n);
  p[n] = '\0';
  memmove(c->buf, c->buf + hl + n, c->len - hl - n);
  c->len -= hl + n;
  if (payload)
    *payload = p;
  else
    free(p);
  if (len)
    *len = n;
  return b0 & 0x0f;
}

/* Reads frames until a close frame; returns its status (0: none, -1: the
 * stream ended first). */
static inline int hc_ws_close_status(hc_conn *c) {
  for (;;) {
    char *p;
    size_t n;
    int op = hc_ws_read(c, &p, &n);
    if (op < 0)
      return -1;
    int code = n >= 2 ? ((uint8_t)p[0] << 8 | (uint8_t)p[1]) : 0;
    free(p);
    if (op == 8)
      return code;
  }
}

#endif
