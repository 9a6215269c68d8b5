/*
 * ws.c — WebSocket sessions (RFC 6455) on upgraded HTTP connections, with
 * wslay doing the framing (rusm/serve.h).
 *
 * A session is the connection's stackful process running a loop: wait
 * for the socket or a message (rusm_tcp_wait), feed what the socket has
 * to wslay, turn session messages (RUSM_WS_TAG_TEXT / _CLOSE, posted from
 * any thread) into frames, write what wslay queued. wslay answers pings,
 * checks masking, opcodes, UTF-8 of text messages and the message size,
 * and queues the close frame with the status RFC 6455 gives each
 * problem. One case it closes without a status: a malformed frame header
 * (an oversized or fragmented control frame, a non-minimal length); there
 * we write the 1002 close frame ourselves.
 *
 * The server pings every ws_ping_ms and drops a peer that has not
 * answered (or sent anything) by the next ping.
 */
#include "serve/ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#define CLOSE_WAIT_MS 1000 /* after our close frame, for the peer's */

struct rusm_ws {
  rusm__hconn *c;
  rusm_pid_t pid;
  wslay_event_context_ptr ctx;
  const rusm_ws_ops *ops;
  void *state;
  const uint8_t *in; /* what the recv callback hands wslay */
  size_t in_len;
  bool io_failed; /* a write failed */
  bool dead;      /* the session is over */
  bool ping_out;  /* a ping is unanswered */
  uint16_t code;  /* close status we wrote ourselves (1002), else 0 */
};

/* ---- SHA-1 and base64 (the handshake) ------------------------------------ */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const uint8_t *p) {
  uint32_t w[80];
  for (size_t i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
           (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
  for (size_t i = 16; i < 80; i++)
    w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
  for (size_t i = 0; i < 80; i++) {
    uint32_t f, k;
    if (i < 20) {
      f = (b & c) | (~b & d);
      k = 0x5a827999;
    } else if (i < 40) {
      f = b ^ c ^ d;
      k = 0x6ed9eba1;
    } else if (i < 60) {
      f = (b & c) | (b & d) | (c & d);
      k = 0x8f1bbcdc;
    } else {
      f = b ^ c ^ d;
      k = 0xca62c1d6;
    }
    uint32_t t = rol(a, 5) + f + e + k + w[i];
    e = d;
    d = c;
    c = rol(b, 30);
    b = a;
    a = t;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
}

void rusm__sha1(const void *data, size_t len, uint8_t out[20]) {
  uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
  const uint8_t *p = data;
  size_t left = len;
  for (; left >= 64; left -= 64, p += 64)
    sha1_block(h, p);
  uint8_t tail[128];
  memset(tail, 0, sizeof tail);
  memcpy(tail, p, left);
  tail[left] = 0x80;
  size_t tlen = left + 9 <= 64 ? 64 : 128;
  uint64_t bits = (uint64_t)len * 8;
  for (size_t i = 0; i < 8; i++)
    tail[tlen - 1 - i] = (uint8_t)(bits >> (8 * i));
  sha1_block(h, tail);
  if (tlen == 128)
    sha1_block(h, tail + 64);
  for (size_t i = 0; i < 5; i++) {
    out[4 * i] = (uint8_t)(h[i] >> 24);
    out[4 * i + 1] = (uint8_t)(h[i] >> 16);
    out[4 * i + 2] = (uint8_t)(h[i] >> 8);
    out[4 * i + 3] = (uint8_t)h[i];
  }
}

static const char k_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void base64(const uint8_t *in, size_t len, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < len)
      v |= (uint32_t)in[i + 1] << 8;
    if (i + 2 < len)
      v |= in[i + 2];
    out[o++] = k_b64[(v >> 18) & 63];
    out[o++] = k_b64[(v >> 12) & 63];
    out[o++] = i + 1 < len ? k_b64[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < len ? k_b64[v & 63] : '=';
  }
  out[o] = '\0';
}

void rusm__ws_accept_key(const char *key, char out[29]) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  char buf[128];
  /* a key is 24 characters; a longer one (refused anyway) is cut */
  int n = snprintf(buf, sizeof buf, "%.64s%s", key, guid);
  uint8_t d[20];
  rusm__sha1(buf, (size_t)n, d);
  base64(d, sizeof d, out);
}

/* A key is the base64 of 16 bytes: 22 characters and "==". */
static bool key_ok(const char *key) {
  if (!key || strlen(key) != 24 || strcmp(key + 22, "==") != 0)
    return false;
  for (int i = 0; i < 22; i++)
    if (!strchr(k_b64, key[i]) || key[i] == '\0')
      return false;
  return true;
}

/* Whether a comma-separated header value holds token (any case). */
static bool has_token(const char *v, const char *token) {
  size_t tl = strlen(token);
  while (v && *v) {
    while (*v == ' ' || *v == '\t' || *v == ',')
      v++;
    size_t n = strcspn(v, ",");
    size_t m = n;
    while (m && (v[m - 1] == ' ' || v[m - 1] == '\t'))
      m--;
    if (m == tl && strncasecmp(v, token, tl) == 0)
      return true;
    v += n;
  }
  return false;
}

int rusm_http_resp_websocket(rusm_http_req *req, rusm_http_resp *resp,
                             const rusm_ws_ops *ops, void *arg) {
  if (!req || !resp || !ops)
    return RUSM_EINVAL;
  const char *upgrade = rusm_http_req_header(req, "Upgrade");
  const char *conn = rusm_http_req_header(req, "Connection");
  const char *version = rusm_http_req_header(req, "Sec-WebSocket-Version");
  const char *key = rusm_http_req_header(req, "Sec-WebSocket-Key");
  if (!upgrade || !has_token(upgrade, "websocket")) {
    rusm_http_resp_error(resp, 426, "a WebSocket upgrade is required here");
    rusm_http_resp_header(resp, "Upgrade", "websocket");
    return RUSM_EINVAL;
  }
  if (strcmp(rusm_http_req_method(req), "GET") != 0 || !conn ||
      !has_token(conn, "upgrade")) {
    rusm_http_resp_error(resp, 400, "bad WebSocket handshake");
    return RUSM_EINVAL;
  }
  if (!version || strcmp(version, "13") != 0) {
    rusm_http_resp_error(resp, 426, "unsupported WebSocket version");
    rusm_http_resp_header(resp, "Sec-WebSocket-Version", "13");
    return RUSM_EINVAL;
  }
  if (!key_ok(key)) {
    rusm_http_resp_error(resp, 400, "bad Sec-WebSocket-Key");
    return RUSM_EINVAL;
  }
  char accept[29];
  rusm__ws_accept_key(key, accept);
  rusm_http_resp_body_static(resp, NULL, 0);
  resp->hdrs_len = 0; /* only the handshake's headers */
  resp->status = 101;
  resp->ws_ops = ops;
  resp->ws_arg = arg;
  /* The server's own headers (rusm_http_resp_header refuses
   * "Connection"). */
  rusm__resp_add(resp, "Upgrade", "websocket");
  rusm__resp_add(resp, "Connection", "Upgrade");
  rusm__resp_add(resp, "Sec-WebSocket-Accept", accept);
  return resp->failed ? RUSM_ENOMEM : 0;
}

/* ---- wslay callbacks -------------------------------------------------------
 */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       int flags, void *user) {
  rusm_ws *ws = user;
  if (ws->in_len == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = len < ws->in_len ? len : ws->in_len;
  memcpy(buf, ws->in, n);
  ws->in += n;
  ws->in_len -= n;
  return (ssize_t)n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data,
                       size_t len, int flags, void *user) {
  rusm_ws *ws = user;
  if (rusm__hconn_write(ws->c, data, len) != 0) {
    ws->io_failed = true;
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

static int genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                      void *user) {
  memset(buf, 0, len); /* only clients mask */
  return 0;
}

static void msg_cb(wslay_event_context_ptr ctx,
                   const struct wslay_event_on_msg_recv_arg *arg, void *user) {
  rusm_ws *ws = user;
  ws->ping_out = false; /* the peer is alive */
  switch (arg->opcode) {
  case WSLAY_TEXT_FRAME:
    if (ws->ops->text)
      ws->ops->text(ws, ws->state, arg->msg ? (const char *)arg->msg : "",
                    arg->msg_length);
    break;
  case WSLAY_BINARY_FRAME:
    if (ws->ops->binary)
      ws->ops->binary(ws, ws->state, arg->msg, arg->msg_length);
    else
      wslay_event_queue_close(ctx, WSLAY_CODE_UNSUPPORTED_DATA, NULL, 0);
    break;
  default: /* close and ping are answered by wslay; pong needs nothing */
    break;
  }
}

static const struct wslay_event_callbacks k_callbacks = {
    recv_cb, send_cb, genmask_cb, NULL, NULL, NULL, msg_cb};

/* ---- the session ----------------------------------------------------------
 */

/* Writes the close frame wslay could not give a status (see the top). */
static void close_protocol_error(rusm_ws *ws) {
  static const uint8_t k_close[] = {0x88, 0x02, 0x03, 0xea}; /* 1002 */
  if (!wslay_event_get_close_sent(ws->ctx))
    rusm__hconn_write(ws->c, k_close, sizeof k_close);
  ws->code = WSLAY_CODE_PROTOCOL_ERROR;
  ws->dead = true;
}

static void feed(rusm_ws *ws, const uint8_t *data, size_t len) {
  ws->in = data;
  ws->in_len = len;
  int r = wslay_event_recv(ws->ctx);
  ws->in = NULL;
  ws->in_len = 0;
  if (r == WSLAY_ERR_CALLBACK_FAILURE && !ws->io_failed)
    close_protocol_error(ws); /* only our recv callback could fail else */
  else if (r < 0)
    ws->dead = true;
}

static void flush(rusm_ws *ws) {
  while (!ws->dead && wslay_event_want_write(ws->ctx))
    if (wslay_event_send(ws->ctx) < 0)
      ws->dead = true;
}

static void on_message(rusm_ws *ws, rusm_msg *m) {
  uint64_t tag = rusm_msg_tag(m);
  if (tag == RUSM_WS_TAG_TEXT) {
    struct wslay_event_msg wm = {WSLAY_TEXT_FRAME, rusm_msg_data(m),
                                 rusm_msg_len(m)};
    wslay_event_queue_msg(ws->ctx, &wm); /* refused once closing: fine */
  } else if (tag == RUSM_WS_TAG_CLOSE) {
    uint16_t code = WSLAY_CODE_NORMAL_CLOSURE;
    if (rusm_msg_len(m) == sizeof code)
      memcpy(&code, rusm_msg_data(m), sizeof code);
    wslay_event_queue_close(ws->ctx, code, NULL, 0);
  } else if (ws->ops->info) {
    ws->ops->info(ws, ws->state, m);
  }
}

void rusm__ws_run(rusm__hconn *c, const uint8_t *rest, size_t len) {
  rusm_ws *ws = calloc(1, sizeof *ws);
  if (!ws)
    return;
  c->ws = ws;
  ws->c = c;
  ws->pid = rusm_self(c->self);
  ws->ops = c->resp.ws_ops;
  ws->state = c->resp.ws_arg;
  if (wslay_event_context_server_init(&ws->ctx, &k_callbacks, ws) != 0) {
    ws->ctx = NULL;
    return;
  }
  wslay_event_config_set_max_recv_msg_length(ws->ctx, c->srv->o.ws_max_message);
  rusm_set_label(c->self, "ws");
  rusm__hs_add(c->srv, RUSM__HS_WS, 1);
  if (ws->ops->open && ws->ops->open(ws, &ws->state) != 0)
    wslay_event_queue_close(ws->ctx, WSLAY_CODE_INTERNAL_SERVER_ERROR, NULL, 0);
  if (len)
    feed(ws, rest, len);
  const int64_t ping_ns = (int64_t)c->srv->o.ws_ping_ms * 1000000;
  int64_t next_ping = rusm_now_ns() + ping_ns;
  int64_t close_by = -1;
  for (;;) {
    flush(ws);
    if (ws->dead ||
        (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx)))
      break;
    int64_t now = rusm_now_ns();
    if (wslay_event_get_close_sent(ws->ctx)) {
      if (close_by < 0)
        close_by = now + (int64_t)CLOSE_WAIT_MS * 1000000;
      else if (now >= close_by)
        break; /* the peer never answered our close */
    }
    int64_t until =
        close_by >= 0 && close_by < next_ping ? close_by : next_ping;
    if (now >= next_ping) {
      if (ws->ping_out)
        break; /* no answer for a whole interval: the peer is gone */
      struct wslay_event_msg ping = {WSLAY_PING, NULL, 0};
      wslay_event_queue_msg(ws->ctx, &ping);
      ws->ping_out = true;
      next_ping = now + ping_ns;
      continue;
    }
    int64_t ms = (until - now + 999999) / 1000000;
    rusm_msg *m = NULL;
    int rc = rusm_tcp_wait(c->self, c->sock, NULL, ms, &m);
    if (rc == 1) {
      ssize_t n = rusm_tcp_recv(c->self, c->sock, c->rbuf, sizeof c->rbuf, 0);
      if (n == RUSM_ETIMEDOUT)
        continue;
      if (n <= 0)
        break; /* end of stream or reset */
      ws->ping_out = false;
      feed(ws, c->rbuf, (size_t)n);
    } else if (rc == 0) {
      on_message(ws, m);
      rusm_msg_free(m);
    } else if (rc != RUSM_ETIMEDOUT) {
      break;
    }
  }
}

void rusm__ws_free(rusm__hconn *c) {
  rusm_ws *ws = c->ws;
  if (!ws)
    return;
  c->ws = NULL;
  if (ws->ctx) {
    uint16_t code = ws->code;
    if (!code && wslay_event_get_close_received(ws->ctx))
      code = wslay_event_get_status_code_received(ws->ctx);
    if (!code && wslay_event_get_close_sent(ws->ctx))
      code = wslay_event_get_status_code_sent(ws->ctx);
    if (!code)
      code = WSLAY_CODE_ABNORMAL_CLOSURE;
    uint16_t sent = wslay_event_get_close_sent(ws->ctx)
                        ? wslay_event_get_status_code_sent(ws->ctx)
                        : 0;
    if (ws->code == WSLAY_CODE_PROTOCOL_ERROR ||
        (!wslay_event_get_close_received(ws->ctx) &&
         (sent == WSLAY_CODE_PROTOCOL_ERROR ||
          sent == WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA ||
          sent == WSLAY_CODE_MESSAGE_TOO_BIG ||
          sent == WSLAY_CODE_UNSUPPORTED_DATA)))
      rusm__hs_add(c->srv, RUSM__HS_WS_BAD, 1);
    rusm__hs_add(c->srv, RUSM__HS_WS_CLOSED, 1);
    if (ws->ops->close)
      ws->ops->close(ws->pid, ws->state, code);
    wslay_event_context_free(ws->ctx);
  }
  free(ws);
}

/* ---- API ----------------------------------------------------------------- */

int rusm_ws_send_text(rusm_ws *ws, const void *data, size_t len) {
  if (!ws || !ws->ctx || (!data && len))
    return RUSM_EINVAL;
  struct wslay_event_msg wm = {WSLAY_TEXT_FRAME, data, len};
  int r = wslay_event_queue_msg(ws->ctx, &wm);
  if (r == WSLAY_ERR_NO_MORE_MSG)
    return RUSM_ECLOSED;
  return r == 0 ? 0 : r == WSLAY_ERR_NOMEM ? RUSM_ENOMEM : RUSM_EINVAL;
}

int rusm_ws_close(rusm_ws *ws, uint16_t code, const char *reason) {
  if (!ws || !ws->ctx || code < 1000 || code > 4999)
    return RUSM_EINVAL;
  size_t n = reason ? strlen(reason) : 0;
  if (n > 123)
    return RUSM_EINVAL;
  int r = wslay_event_queue_close(ws->ctx, code, (const uint8_t *)reason, n);
  return r == 0 ? 0 : r == WSLAY_ERR_NO_MORE_MSG ? RUSM_ECLOSED : RUSM_EINVAL;
}

rusm_pid_t rusm_ws_session(const rusm_ws *ws) {
  return ws ? ws->pid : RUSM_PID_NONE;
}

rusm_proc *rusm_ws_proc(const rusm_ws *ws) { return ws ? ws->c->self : NULL; }

static int post_check(rusm_rt *rt, rusm_pid_t session) {
  rusm_proc_info info;
  if (!rt)
    return RUSM_EINVAL;
  if (rusm_proc_info_get(rt, session, &info) != 0)
    return RUSM_ENOPROC;
  return info.mailbox_len >= RUSM_WS_POST_MAX ? RUSM_ENOBUFS : 0;
}

int rusm_ws_post_text(rusm_rt *rt, rusm_pid_t session, const void *data,
                      size_t len) {
  int rc = post_check(rt, session);
  return rc ? rc : rusm_send(rt, session, RUSM_WS_TAG_TEXT, data, len);
}

int rusm_ws_post_buf(rusm_rt *rt, rusm_pid_t session, rusm_buf *text) {
  int rc = post_check(rt, session);
  return rc ? rc : rusm_send_buf(rt, session, RUSM_WS_TAG_TEXT, text);
}

int rusm_ws_post_close(rusm_rt *rt, rusm_pid_t session, uint16_t code) {
  if (!rt)
    return RUSM_EINVAL;
  return rusm_send(rt, session, RUSM_WS_TAG_CLOSE, &code, sizeof code);
}
