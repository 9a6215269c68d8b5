/*
 * rusm/tcp.h — TCP for processes: listeners that spawn a process per
 * connection, outgoing connections, and sockets owned by processes.
 * See docs/tcp.md.
 *
 * Ownership (libuv style, adapted to processes):
 *  - A socket (rusm_sock *) is owned by exactly one process. Only that
 *    process may pass it to the calls below (others get RUSM_EINVAL). It is
 *    closed by rusm_tcp_close() or, at the latest, when the owner exits for
 *    any reason, kill included. A handle is invalid once closed: like a
 *    closed descriptor number it may come to name another socket.
 *  - Stackless owners (the connection processes of a listener given
 *    `ops`) get what arrives as messages (RUSM_TAG_TCP_DATA ...) and
 *    never block: rusm_tcp_send() writes what fits and queues the rest.
 *  - Stackful owners and attached threads use the blocking calls
 *    (rusm_tcp_recv, rusm_tcp_send, rusm_tcp_connect, rusm_tcp_wait). They
 *    suspend the process, never the scheduler thread, until the poll
 *    thread reports the socket ready.
 *  - Host names are numeric addresses ("127.0.0.1", "::1") or
 *    "localhost"; there is no DNS (a resolver call would block a
 *    scheduler thread).
 *
 * Conventions as in rusm/otp.h: 0 (or a non-negative count) on success, a
 * negative RUSM_E* code on failure; nothing aborts on bad input.
 */
#ifndef RUSM_TCP_H
#define RUSM_TCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "rusm/otp.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Errors (in addition to otp.h's)                                     */
/* ------------------------------------------------------------------ */

/* The TCP error codes (RUSM_ECONNREFUSED ... RUSM_ECONNTIMEDOUT, -100 to
 * -109) are in rusm/otp.h with the others; rusm_strerror() knows them. */

/* Same as rusm_strerror() / rusm_err_name() (kept for symmetry). */
const char *rusm_tcp_strerror(int err);
const char *rusm_tcp_err_name(int err);

/* ------------------------------------------------------------------ */
/* Messages to stackless connection processes                          */
/* ------------------------------------------------------------------ */

/* RUSM_TAG_SYSTEM | 0x100 .. 0x1ff belong to TCP; 0x180 and above are
 * private to the implementation and never reach user code. */

/* Bytes received: the payload (up to 64 KiB a message). Sender: none. The
 * socket reads no more until the process has handled every data message
 * delivered so far ("active once", so a slow process holds the peer back
 * through TCP flow control instead of growing its mailbox). */
#define RUSM_TAG_TCP_DATA (RUSM_TAG_SYSTEM | 0x100)
/* The connection ended. Payload: int32 (native endianness), 0 when the
 * peer closed its side (end of stream), else a negative RUSM_E* code (an
 * I/O error: RUSM_ECONNRESET ...). Delivered only with
 * RUSM_TCP_CLOSED_MSG; without it, the process exits when it would have
 * received it: reason normal at end of stream, else a custom reason
 * "tcp: <error text>" (e.g. "tcp: connection reset by peer"). After it the
 * socket reads nothing more; it may still send (after end of stream) until
 * closed. */
#define RUSM_TAG_TCP_CLOSED (RUSM_TAG_SYSTEM | 0x101)
/* The send queue emptied (with RUSM_TCP_DRAINED_MSG). No payload. */
#define RUSM_TAG_TCP_DRAINED (RUSM_TAG_SYSTEM | 0x102)

/* Decodes a RUSM_TAG_TCP_CLOSED payload: 0 or the error code; RUSM_EINVAL
 * when m is not such a message. */
int rusm_tcp_msg_closed(const rusm_msg *m, int *err);

/* ------------------------------------------------------------------ */
/* Listening                                                           */
/* ------------------------------------------------------------------ */

typedef struct rusm_sock rusm_sock;

/*
 * A stackless connection process: the callbacks of rusm_stackless_ops
 * with the connection's socket. `sock` is NULL once the process closed it
 * itself (rusm_tcp_close).
 */
typedef struct rusm_tcp_conn_ops {
  /* First call. *state starts as the listener's arg; the callback may
   * replace it. NULL: wait for anything. */
  rusm_next (*init)(rusm_proc *self, rusm_sock *sock, void **state);
  /* Each matching message (borrowed), or NULL when a wait timed out.
   * Required. */
  rusm_next (*handle)(rusm_proc *self, rusm_sock *sock, void *state,
                      rusm_msg *msg);
  /* Once, on exit for any reason (kill included), before the socket is
   * closed: a last rusm_tcp_send() is possible (it never waits; what does
   * not fit is lost). May be NULL. */
  void (*terminate)(rusm_proc *self, rusm_sock *sock, void *state,
                    const rusm_reason *why);
} rusm_tcp_conn_ops;

/* A stackful connection process. Returning exits with reason normal (and
 * closes the socket). */
typedef void (*rusm_tcp_conn_fn)(rusm_proc *self, rusm_sock *sock, void *arg);

/* Listener / connection flags. */
#define RUSM_TCP_CLOSED_MSG 1u  /* deliver RUSM_TAG_TCP_CLOSED, no exit */
#define RUSM_TCP_DRAINED_MSG 2u /* deliver RUSM_TAG_TCP_DRAINED */
#define RUSM_TCP_NODELAY 4u     /* TCP_NODELAY on accepted sockets */

typedef struct rusm_tcp_listen_opts {
  /* Exactly one of the two: how each connection process runs. ops must
   * outlive the listener and its connections (a static struct). */
  const rusm_tcp_conn_ops *ops; /* stackless (messages) */
  rusm_tcp_conn_fn fn;          /* stackful (blocking calls) */
  /* Handed to each connection process (borrowed: must outlive them). */
  void *arg;
  int32_t backlog;     /* listen(2) backlog; 0: 1024 (the kernel caps it) */
  uint32_t stack_size; /* stackful connections; 0: runtime default */
  uint32_t flags;      /* RUSM_TCP_* */
  /* Stackless connections: rusm_tcp_send() fails with RUSM_ENOBUFS while
   * more than this many bytes wait in the socket's queue; 0: 1 MiB. */
  uint32_t send_queue_max;
} rusm_tcp_listen_opts;

void rusm_tcp_listen_opts_init(rusm_tcp_listen_opts *o);

/*
 * Listens on host:port (port 0: an ephemeral port, reported in
 * *bound_port; host NULL: every IPv4 address) and spawns an acceptor
 * process that owns the listening socket. For each accepted connection the
 * acceptor spawns a connection process (stackless with o->ops, stackful
 * with o->fn) that owns the new socket; connection processes are spread
 * over the schedulers. The acceptor neither links to nor monitors them:
 * their failures do not touch it. When it runs out of file descriptors
 * (or memory) it pauses accepting for 50 ms instead of spinning, and
 * counts it (rusm_tcp_stats).
 *
 * Stop listening by ending the acceptor (rusm_exit(rt, acceptor,
 * RUSM_REASON_SHUTDOWN) or rusm_kill): its socket closes, connections go
 * on. Callable from any thread. Nothing links the acceptor to the caller
 * (link or monitor it yourself: a supervisor's start function can).
 * acceptor and bound_port may be NULL.
 *
 * Returns 0, RUSM_EINVAL, RUSM_EADDRINUSE, RUSM_EADDRNOTAVAIL,
 * RUSM_EMFILE, RUSM_ENOMEM, RUSM_ELIMIT, RUSM_ESHUTDOWN or RUSM_ESYS.
 */
int rusm_tcp_listen(rusm_rt *rt, const char *host, uint16_t port,
                    const rusm_tcp_listen_opts *o, rusm_pid_t *acceptor,
                    uint16_t *bound_port);

/* ------------------------------------------------------------------ */
/* Sockets                                                             */
/* ------------------------------------------------------------------ */

/*
 * Connects to host:port (stackful processes and attached threads only:
 * RUSM_ECONTEXT otherwise), waiting up to timeout_ms (-1: the kernel's
 * own limit). On success *out is a socket owned by self.
 * Returns 0, RUSM_ECONNREFUSED, RUSM_ETIMEDOUT, RUSM_EUNREACH,
 * RUSM_EADDRNOTAVAIL, RUSM_EMFILE, RUSM_EINVAL, RUSM_ECONTEXT,
 * RUSM_ESHUTDOWN (an attached thread killed meanwhile) ...
 */
int rusm_tcp_connect(rusm_proc *self, const char *host, uint16_t port,
                     int64_t timeout_ms, rusm_sock **out);

/*
 * Receives up to len (> 0) bytes (stackful owners and attached threads),
 * waiting up to timeout_ms (-1: forever; 0: only what is there).
 * Returns the byte count (> 0), 0 at end of stream, or RUSM_ETIMEDOUT,
 * RUSM_ECONNRESET, RUSM_ECLOSED, RUSM_ECONTEXT (a stackless owner: data
 * comes as messages there), RUSM_EINVAL, RUSM_ESHUTDOWN ...
 */
ssize_t rusm_tcp_recv(rusm_proc *self, rusm_sock *sock, void *buf, size_t len,
                      int64_t timeout_ms);

/*
 * Sends data[0..len) (copied or written before the call returns: the
 * caller keeps its buffer). Stackful owners and attached threads wait
 * until everything is written. Stackless owners write what fits now and
 * queue the rest in the socket, flushed as the peer reads; RUSM_ENOBUFS
 * (nothing sent) while the queue holds more than its limit. An error is
 * sticky: later sends fail with it. Returns 0, RUSM_EPIPE,
 * RUSM_ECONNRESET, RUSM_ENOBUFS, RUSM_ENOMEM, RUSM_ECLOSED, RUSM_EINVAL ...
 */
int rusm_tcp_send(rusm_proc *self, rusm_sock *sock, const void *data,
                  size_t len);

/* Bytes waiting in the send queue of a stackless owner's socket (0 for
 * others), or RUSM_EINVAL. */
ssize_t rusm_tcp_queued(rusm_proc *self, const rusm_sock *sock);

/*
 * Stackful owners and attached threads: waits until the socket is
 * readable (data, end of stream or an error: a rusm_tcp_recv() will not
 * block) or a message matching f arrives (f NULL: any message), up to
 * timeout_ms (-1: forever). Returns 1 when the socket is readable, 0 with
 * *out (owned by the caller: rusm_msg_free) when a message came first, or
 * RUSM_ETIMEDOUT, RUSM_ECONTEXT, RUSM_EINVAL ...
 */
int rusm_tcp_wait(rusm_proc *self, rusm_sock *sock, const rusm_filter *f,
                  int64_t timeout_ms, rusm_msg **out);

/* Ends the sending side (shutdown(2) SHUT_WR): the peer reads end of
 * stream, reading goes on. 0 or a negative code. */
int rusm_tcp_shutdown(rusm_proc *self, rusm_sock *sock);

/* Closes the socket now (what a stackless owner had queued is dropped).
 * 0, or RUSM_EINVAL when sock is not an open socket of self. */
int rusm_tcp_close(rusm_proc *self, rusm_sock *sock);

/* The peer's / the local address as a numeric string (NUL-terminated,
 * truncated to hostlen; 46 bytes hold any) and port. Either output may be
 * NULL. 0, RUSM_EINVAL or RUSM_ESYS. */
int rusm_tcp_peername(rusm_proc *self, const rusm_sock *sock, char *host,
                      size_t hostlen, uint16_t *port);
int rusm_tcp_sockname(rusm_proc *self, const rusm_sock *sock, char *host,
                      size_t hostlen, uint16_t *port);

/* ------------------------------------------------------------------ */
/* Statistics                                                          */
/* ------------------------------------------------------------------ */

typedef struct rusm_tcp_stats {
  uint64_t open;           /* sockets open now, listeners included */
  uint64_t opened;         /* sockets opened so far */
  uint64_t accepted;       /* connections accepted */
  uint64_t connected;      /* rusm_tcp_connect() successes */
  uint64_t accept_pauses;  /* pauses: out of file descriptors or memory */
  uint64_t accept_errors;  /* accept(2) failures of any kind */
  uint64_t spawn_failures; /* accepted connections closed: no process */
} rusm_tcp_stats;

/* A snapshot of the runtime's counters (all 0 before its first TCP use).
 * Callable from any thread. 0 or RUSM_EINVAL. */
int rusm_tcp_stats_get(rusm_rt *rt, rusm_tcp_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* RUSM_TCP_H */
