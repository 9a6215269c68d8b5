/*
 * quic.h — the cluster's transport: one QUIC endpoint per node on one
 * non-blocking UDP socket, accepting and dialing, mutual TLS with the
 * cluster policy of tls.h, and per connection one ordered byte stream each
 * way (ngtcp2 0.12 + GnuTLS; docs/internals/cluster-transport.md).
 *
 * Driving. No threads inside: the caller owns the loop and the clock
 * (CLOCK_MONOTONIC nanoseconds, the `now` of every call; _connect reads
 * that clock itself). A loop that works:
 *
 *   epoll on rusm__quic_endpoint_fd (level-triggered, EPOLLIN, plus
 *   EPOLLOUT while rusm__quic_endpoint_want_write says so);
 *   wait until rusm__quic_endpoint_next_expiry, with sub-millisecond
 *   precision (epoll_pwait2 or a timerfd: pacing gaps are microseconds);
 *   readable        -> rusm__quic_endpoint_on_readable(ep, now)
 *   now >= expiry   -> rusm__quic_endpoint_on_timeout(ep, now)
 *   after any event and after sending -> rusm__quic_endpoint_flush(ep, now)
 *
 * Callbacks run inside on_readable / on_timeout / flush. From a callback
 * the caller may use _conn_send, _conn_close, _conn_set_ud and _connect,
 * never rusm__quic_endpoint_free. Nothing is sent from inside a callback:
 * the next flush does it.
 *
 * Connection handles. A handle from _connect is valid at once; an accepted
 * one is first seen in on_connected. A handle stays valid until on_closed
 * returns or the caller's _conn_close returns, whichever comes first;
 * after _conn_close no callback names the connection again.
 * Single-threaded: one thread drives an endpoint and its connections.
 */
#ifndef RUSM_CLUSTER_QUIC_H
#define RUSM_CLUSTER_QUIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/tls.h"

/* Error codes of this module (-250..-259; the cluster range is -200..-299),
 * besides the RUSM_ETLS_* refusals of tls.h and plain RUSM_E* codes. */
enum {
  RUSM_EQUIC_PEER_CLOSED = -250, /* the peer closed the connection */
  RUSM_EQUIC_IDLE = -251,        /* nothing heard within the idle timeout */
  RUSM_EQUIC_RESET = -252,       /* stateless reset: the peer lost state */
  RUSM_EQUIC_HANDSHAKE_TIMEOUT = -253, /* no handshake within its timeout */
  RUSM_EQUIC_PEER_REFUSED = -254, /* the peer refused us (its reason in why) */
  RUSM_EQUIC_PROTOCOL = -255      /* a QUIC or TLS protocol failure */
};

/* A static message for a RUSM_EQUIC_* code (then tls.h's, then rusm's). */
const char *rusm__quic_strerror(int err);

#define RUSM__QUIC_ALPN "rusm/1"

/* Zero fields take the defaults shown. */
typedef struct rusm__quic_config {
  uint64_t idle_timeout_ns;      /* 5 s: silence after which it closes */
  uint64_t keepalive_ns;         /* 1 s: PING after this much quiet */
  uint64_t handshake_timeout_ns; /* 5 s */
  uint64_t stream_window;        /* 16 MiB: receive window of the stream */
  uint64_t conn_window;          /* 32 MiB: receive window, connection */
  size_t send_buffer_max;        /* 32 MiB: bytes held per connection
                                    (unsent + unacknowledged) */
  unsigned max_conns;            /* 1024: incoming beyond are dropped */
} rusm__quic_config;

typedef struct rusm__quic_endpoint rusm__quic_endpoint;
typedef struct rusm__quic_conn rusm__quic_conn;

/* `ud` is the endpoint's user data (rusm__quic_endpoint_new). */
typedef struct rusm__quic_callbacks {
  /* The handshake finished and the peer passed verification (both sides;
   * a dialer sees it once the acceptor confirmed, so a refusal by the
   * acceptor never follows it). peer_node: from its certificate. */
  void (*on_connected)(rusm__quic_conn *c, const char *peer_node, void *ud);
  /* Stream bytes in order; `data` is valid during the call only. */
  void (*on_data)(rusm__quic_conn *c, const uint8_t *data, size_t n, void *ud);
  /* The connection is gone: err is a RUSM_ETLS_* refusal of ours, a
   * RUSM_EQUIC_* or RUSM_ENOMEM; why is a line for the log. Not called
   * after the caller's own _conn_close, nor by rusm__quic_endpoint_free.
   * app_code: the peer's code with RUSM_EQUIC_PEER_CLOSED, else 0. */
  void (*on_closed)(rusm__quic_conn *c, int err, uint64_t app_code,
                    const char *why, void *ud);
  /* An incoming handshake failed (our verification refused the peer, the
   * peer refused us, it timed out ...): "refused peer <addr>: <why>". */
  void (*on_refused)(const char *addr, int err, const char *why, void *ud);
  /* Optional: after _conn_send returned RUSM_ENOBUFS, the buffered bytes
   * fell to half the limit. */
  void (*on_writable)(rusm__quic_conn *c, void *ud);
} rusm__quic_callbacks;

typedef struct rusm__quic_stats {
  uint64_t rx_datagrams, tx_datagrams;
  uint64_t rx_dropped;  /* garbage, unknown connection, over the limit */
  uint64_t resets_sent; /* stateless resets answered to unknown ids */
  uint64_t accepted;    /* incoming handshakes started */
  uint64_t refused;     /* incoming handshakes failed (on_refused) */
  uint64_t send_calls;  /* sendmsg/sendmmsg system calls */
  uint64_t tx_blocked;  /* times the socket's send buffer was full */
} rusm__quic_stats;

/* Fills cfg with the defaults. */
void rusm__quic_config_default(rusm__quic_config *cfg);

/* Binds a UDP socket to bind_addr ("host:port", "[v6]:port"; port 0 for an
 * ephemeral one; "[::]:p" also takes IPv4) and makes the endpoint. cfg
 * may be NULL (defaults); creds are borrowed and must outlive the
 * endpoint; cb is copied (on_connected, on_data, on_closed required).
 * Returns 0 and *out, RUSM_EINVAL, RUSM_EADDRINUSE, RUSM_EADDRNOTAVAIL,
 * RUSM_EMFILE, RUSM_ENOMEM, RUSM_ESYS. */
int rusm__quic_endpoint_new(const rusm__quic_config *cfg,
                            rusm__tls_creds *creds, const char *bind_addr,
                            const rusm__quic_callbacks *cb, void *ud,
                            rusm__quic_endpoint **out);

/* Sends a CONNECTION_CLOSE on every open connection (no callbacks),
 * closes the socket and frees everything. NULL is a no-op. */
void rusm__quic_endpoint_free(rusm__quic_endpoint *ep);

/* Test hook: frees like a crash would, telling no peer. */
void rusm__quic_endpoint_abandon(rusm__quic_endpoint *ep);

int rusm__quic_endpoint_fd(const rusm__quic_endpoint *ep);
uint16_t rusm__quic_endpoint_local_port(const rusm__quic_endpoint *ep);

/* Reads what the socket holds (recvmmsg, at most 1024 datagrams a call so
 * a flood cannot starve the loop: the fd stays readable). */
void rusm__quic_endpoint_on_readable(rusm__quic_endpoint *ep, uint64_t now);

/* The earliest deadline of any connection (absolute ns), UINT64_MAX when
 * none. */
uint64_t rusm__quic_endpoint_next_expiry(const rusm__quic_endpoint *ep);

/* Runs the timers that are due (retransmission, ACK delay, keepalive,
 * idle and handshake timeouts, pacing). */
void rusm__quic_endpoint_on_timeout(rusm__quic_endpoint *ep, uint64_t now);

/* Writes what every connection has to send (GSO batches of one
 * connection's packets; one system call per batch). */
void rusm__quic_endpoint_flush(rusm__quic_endpoint *ep, uint64_t now);

/* True when a send found the socket's buffer full: wait for EPOLLOUT,
 * then flush. */
bool rusm__quic_endpoint_want_write(const rusm__quic_endpoint *ep);

/* Connections (any state, closing ones included). */
size_t rusm__quic_endpoint_conn_count(const rusm__quic_endpoint *ep);

void rusm__quic_endpoint_stats(const rusm__quic_endpoint *ep,
                               rusm__quic_stats *out);

/* Dials addr ("ip:port" or "[ip6]:port", numeric: no DNS in the loop).
 * expected_node: the name the peer's certificate must carry, or NULL for
 * any cluster member. The handshake starts at the next flush. Returns 0
 * and *out, RUSM_EINVAL, RUSM_ELIMIT (max_conns), RUSM_ENOMEM, RUSM_ETLS. */
int rusm__quic_connect(rusm__quic_endpoint *ep, const char *addr,
                       const char *expected_node, void *conn_ud,
                       rusm__quic_conn **out);

/* Appends n bytes to the connection's stream. Bytes are copied, kept until
 * the peer acknowledges them, and written as flow and congestion control
 * allow; never dropped. Allowed before on_connected (held until then).
 * Returns 0, RUSM_ENOBUFS when they would take the connection past
 * send_buffer_max (nothing is taken: back off until on_writable),
 * RUSM_ECLOSED (closing), RUSM_EINVAL. */
int rusm__quic_conn_send(rusm__quic_conn *c, const void *data, size_t n);

/* Bytes held (unsent + unacknowledged). */
size_t rusm__quic_conn_buffered(const rusm__quic_conn *c);

/* Closes with an application code and a reason for the peer (NULL: none;
 * at most 256 bytes sent). Bytes already given to _conn_send are delivered
 * first (within the idle timeout), then CONNECTION_CLOSE goes out. The
 * handle is invalid on return and no callback names it again. */
void rusm__quic_conn_close(rusm__quic_conn *c, uint64_t app_code,
                           const char *reason);

/* The peer's node name ("" until verified). */
const char *rusm__quic_conn_peer_name(const rusm__quic_conn *c);
/* The peer's address, "ip:port". */
const char *rusm__quic_conn_peer_addr(const rusm__quic_conn *c);
bool rusm__quic_conn_is_client(const rusm__quic_conn *c);
void *rusm__quic_conn_ud(const rusm__quic_conn *c);
void rusm__quic_conn_set_ud(rusm__quic_conn *c, void *ud);

#endif
