/*
 * ws.h — the WebSocket layer's entry points for the HTTP server (http.c).
 * Not a public header: see rusm/serve.h.
 */
#ifndef RUSM_SERVE_WS_H
#define RUSM_SERVE_WS_H

#include <stddef.h>
#include <stdint.h>

#include "serve/http.h"

/* Runs the session on an upgraded connection (after the 101 response was
 * written); rest[0..len) are bytes that came after the handshake. Returns
 * when the session ends; the caller then closes the connection. */
void rusm__ws_run(rusm__hconn *c, const uint8_t *rest, size_t len);

/* Releases the session of c, if any, and calls its close callback (from
 * the connection's exit hook: the process may have been killed). */
void rusm__ws_free(rusm__hconn *c);

/* Sec-WebSocket-Accept for key (RFC 6455 4.2.2): 28 characters and a NUL
 * into out. */
void rusm__ws_accept_key(const char *key, char out[29]);

/* The 20-byte SHA-1 digest of data[0..len) (the handshake needs it). */
void rusm__sha1(const void *data, size_t len, uint8_t out[20]);

#endif
