// ctest-labels: concurrent
/*
 * Unit tests: TCP (rusm/tcp.h) — listeners and their acceptors, stackless
 * and stackful connection processes, rusm_tcp_connect / recv / send / wait,
 * resets, crashes, links and monitors on connection processes, kill and
 * runtime destroy closing sockets, send queues, EMFILE back-off, and tiny
 * runs of the connection benchmarks.
 *
 * Clients are plain blocking sockets on the (attached) test thread or on
 * helper threads, with a receive timeout as the failure guard. Only
 * loopback addresses.
 */
#include "support.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rusm/bench.h"
#include "rusm/tcp.h"

/* ------------------------------------------------------------------ */
/* Plain clients                                                       */
/* ------------------------------------------------------------------ */

static int c_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct timeval tv = {T_GUARD_MS / 1000, 0};
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
  if (rc != 0)
    fail_msg("connect: %s", strerrordesc_np(errno));
  return fd;
}

static void c_send(int fd, const void *data, size_t len) {
  const uint8_t *p = data;
  while (len) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      fail_msg("send: %s", strerrordesc_np(errno));
    p += n;
    len -= (size_t)n;
  }
}

/* Reads exactly len bytes (fails on EOF or the guard). */
static void c_recv_exact(int fd, void *buf, size_t len) {
  uint8_t *p = buf;
  while (len) {
    ssize_t n = recv(fd, p, len, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      fail_msg("recv: %s", n == 0 ? "end of stream" : strerrordesc_np(errno));
    p += n;
    len -= (size_t)n;
  }
}

static void c_echo(int fd, const char *text) {
  size_t len = strlen(text);
  char back[256];
  assert_true(len < sizeof back);
  c_send(fd, text, len);
  c_recv_exact(fd, back, len);
  assert_memory_equal(back, text, len);
}

/* Waits for the end of stream (0) or a reset; returns recv's result. */
static ssize_t c_wait_end(int fd) {
  char buf[256];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return n;
  }
}

static void c_reset(int fd) {
  struct linger lg = {1, 0}; /* close sends RST */
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd);
}

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  int n = 0;
  while (readdir(d))
    n++;
  closedir(d);
  return n - 3; /* ".", ".." and the directory's own descriptor */
}

/* ------------------------------------------------------------------ */
/* Servers                                                             */
/* ------------------------------------------------------------------ */

/* What the connection processes of a test know. */
typedef struct srv {
  rusm_rt *rt;
  rusm_pid_t test; /* told each connection process's pid (T_TAG_READY) */
  _Atomic int terminated;
  _Atomic int sock_in_terminate; /* terminate saw an open socket */
} srv;

static void announce(srv *s, rusm_proc *self) {
  if (s && s->test)
    t_send_u64(s->rt, s->test, T_TAG_READY, rusm_self(self));
}

static rusm_next echo_init(rusm_proc *self, rusm_sock *sock, void **state) {
  T_CHECK(sock != NULL);
  announce(*state, self);
  return rusm_next_wait();
}

/* Echoes; "crash" ends it with reason "boom", "close" closes the socket
 * from the process (it lives on), "peer?" answers the peer's port. */
static rusm_next echo_handle(rusm_proc *self, rusm_sock *sock, void *state,
                             rusm_msg *m) {
  if (!m || rusm_msg_tag(m) != RUSM_TAG_TCP_DATA)
    return rusm_next_wait();
  const char *d = (const char *)rusm_msg_data(m);
  size_t len = rusm_msg_len(m);
  if (len == 5 && memcmp(d, "crash", 5) == 0)
    return rusm_next_stop(rusm_reason_str("boom"));
  if (len == 5 && memcmp(d, "close", 5) == 0) {
    T_CHECK(rusm_tcp_close(self, sock) == 0);
    T_CHECK(rusm_tcp_close(self, sock) == RUSM_EINVAL);
    return rusm_next_wait();
  }
  if (len == 5 && memcmp(d, "peer?", 5) == 0) {
    char host[64];
    uint16_t port = 0, lport = 0;
    T_CHECK(rusm_tcp_peername(self, sock, host, sizeof host, &port) == 0);
    T_CHECK(strcmp(host, "127.0.0.1") == 0);
    T_CHECK(rusm_tcp_sockname(self, sock, NULL, 0, &lport) == 0);
    char out[32];
    int n = snprintf(out, sizeof out, "%u %u", (unsigned)port, lport);
    T_CHECK(rusm_tcp_send(self, sock, out, (size_t)n) == 0);
    return rusm_next_wait();
  }
  /* A failed send (the peer is gone) ends the process through the
   * RUSM_TAG_TCP_CLOSED that follows it. */
  if (sock)
    rusm_tcp_send(self, sock, d, len);
  return rusm_next_wait();
}

static void echo_terminate(rusm_proc *self, rusm_sock *sock, void *state,
                           const rusm_reason *why) {
  srv *s = state;
  if (!s)
    return;
  if (sock)
    atomic_fetch_add(&s->sock_in_terminate, 1);
  atomic_fetch_add(&s->terminated, 1);
}

static const rusm_tcp_conn_ops echo_ops = {echo_init, echo_handle,
                                           echo_terminate};

/* A stackful echo: the same, with blocking calls. */
static void echo_fn(rusm_proc *self, rusm_sock *sock, void *arg) {
  announce(arg, self);
  char buf[4096];
  for (;;) {
    ssize_t n = rusm_tcp_recv(self, sock, buf, sizeof buf, -1);
    if (n == 0)
      return; /* end of stream: exit normal */
    if (n < 0)
      rusm_exit_self(self, rusm_reason_str(rusm_tcp_strerror((int)n)));
    if (n == 5 && memcmp(buf, "crash", 5) == 0)
      rusm_exit_self(self, rusm_reason_str("boom"));
    T_CHECK(rusm_tcp_send(self, sock, buf, (size_t)n) == 0);
  }
}

static uint16_t listen_echo(t_env *e, srv *s, bool stackful, uint32_t flags,
                            rusm_pid_t *acceptor) {
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  if (stackful)
    o.fn = echo_fn;
  else
    o.ops = &echo_ops;
  o.arg = s;
  o.flags = flags;
  uint16_t port = 0;
  rusm_pid_t acc = RUSM_PID_NONE;
  int rc = rusm_tcp_listen(e->rt, "127.0.0.1", 0, &o, &acc, &port);
  if (rc != 0)
    fail_msg("rusm_tcp_listen: %s", rusm_tcp_err_name(rc));
  assert_true(port != 0);
  assert_true(rusm_is_alive(e->rt, acc));
  if (acceptor)
    *acceptor = acc;
  return port;
}

static void srv_init(srv *s, t_env *e) {
  memset(s, 0, sizeof *s);
  s->rt = e->rt;
  s->test = e->pid;
}

/* The pid a new connection process announced. */
static rusm_pid_t next_conn(t_env *e) {
  return (rusm_pid_t)t_recv_u64(e, T_TAG_READY);
}

static bool down_of(const rusm_msg *m, void *arg) {
  rusm_down_info d;
  return rusm_msg_down(m, &d) == 0 && d.ref == *(const rusm_ref *)arg;
}

/* Waits for the Down of monitor ref (others stay queued); returns the
 * reason's code and copies its detail into detail (NUL-terminated). */
static rusm_exit_code await_down(t_env *e, rusm_ref ref, char *detail,
                                 size_t cap) {
  rusm_filter f = {RUSM_TAG_DOWN, ~UINT64_C(0), down_of, &ref};
  rusm_msg *m = t_recv(e, &f);
  rusm_down_info d;
  assert_int_equal(rusm_msg_down(m, &d), 0);
  rusm_exit_code code = d.reason.code;
  if (detail && cap) {
    size_t n = d.reason.len < cap - 1 ? d.reason.len : cap - 1;
    if (n)
      memcpy(detail, d.reason.data, n);
    detail[n] = '\0';
  }
  rusm_msg_free(m);
  return code;
}

static rusm_ref monitor(t_env *e, rusm_pid_t pid) {
  rusm_ref ref = 0;
  assert_int_equal(rusm_monitor(e->me, pid, &ref), 0);
  return ref;
}

static bool stats_open_is(rusm_rt *rt, uint64_t want) {
  rusm_tcp_stats st;
  assert_int_equal(rusm_tcp_stats_get(rt, &st), 0);
  return st.open == want;
}

typedef struct open_arg {
  rusm_rt *rt;
  uint64_t want;
} open_arg;

static bool open_reached(void *arg) {
  open_arg *a = arg;
  rusm_tcp_stats st;
  rusm_tcp_stats_get(a->rt, &st);
  return st.open == a->want;
}

/* The stats' open count settles at want (sockets close on the reaping
 * path, which the Down a test waited for follows; a status, not an
 * event, hence the poll). */
static void expect_open(rusm_rt *rt, uint64_t want) {
  open_arg a = {rt, want};
  if (!t_poll_until(open_reached, &a)) {
    rusm_tcp_stats st;
    rusm_tcp_stats_get(rt, &st);
    fail_msg("open sockets: %llu, want %llu", (unsigned long long)st.open,
             (unsigned long long)want);
  }
}

/* ------------------------------------------------------------------ */
/* Arguments and errors                                                */
/* ------------------------------------------------------------------ */

static void test_listen_args(void **state) {
  t_env e;
  t_start(&e, 2);
  rusm_tcp_stats st;
  assert_int_equal(rusm_tcp_stats_get(e.rt, &st), 0);
  assert_int_equal(st.opened, 0);
  assert_int_equal(rusm_tcp_stats_get(NULL, &st), RUSM_EINVAL);

  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  uint16_t port;
  /* neither ops nor fn, then both */
  assert_int_equal(rusm_tcp_listen(e.rt, "127.0.0.1", 0, &o, NULL, &port),
                   RUSM_EINVAL);
  o.ops = &echo_ops;
  o.fn = echo_fn;
  assert_int_equal(rusm_tcp_listen(e.rt, "127.0.0.1", 0, &o, NULL, &port),
                   RUSM_EINVAL);
  o.fn = NULL;
  static const rusm_tcp_conn_ops no_handle = {0};
  o.ops = &no_handle;
  assert_int_equal(rusm_tcp_listen(e.rt, "127.0.0.1", 0, &o, NULL, &port),
                   RUSM_EINVAL);
  o.ops = &echo_ops;
  assert_int_equal(rusm_tcp_listen(NULL, "127.0.0.1", 0, &o, NULL, &port),
                   RUSM_EINVAL);
  assert_int_equal(rusm_tcp_listen(e.rt, "127.0.0.1", 0, NULL, NULL, &port),
                   RUSM_EINVAL);
  /* no DNS */
  assert_int_equal(rusm_tcp_listen(e.rt, "example.com", 0, &o, NULL, &port),
                   RUSM_EINVAL);
  assert_int_equal(rusm_tcp_listen(e.rt, "[::1", 0, &o, NULL, &port),
                   RUSM_EINVAL);

  /* A port taken: EADDRINUSE, and nothing left open by the failure. */
  srv s;
  srv_init(&s, &e);
  s.test = RUSM_PID_NONE;
  rusm_pid_t acc;
  port = listen_echo(&e, &s, false, 0, &acc);
  assert_int_equal(rusm_tcp_listen(e.rt, "localhost", port, &o, NULL, NULL),
                   RUSM_EADDRINUSE);
  assert_true(stats_open_is(e.rt, 1));

  /* Error names and texts. */
  assert_string_equal(rusm_tcp_err_name(RUSM_ECONNRESET), "RUSM_ECONNRESET");
  assert_string_equal(rusm_tcp_strerror(RUSM_ECONNRESET),
                      "connection reset by peer");
  assert_string_equal(rusm_tcp_err_name(RUSM_EINVAL), "RUSM_EINVAL");
  assert_string_equal(rusm_tcp_strerror(RUSM_ENOPROC),
                      rusm_strerror(RUSM_ENOPROC));

  /* Socket calls need a socket the caller owns. */
  char buf[8];
  assert_int_equal(rusm_tcp_send(e.me, NULL, "x", 1), RUSM_EINVAL);
  assert_int_equal(rusm_tcp_recv(e.me, NULL, buf, sizeof buf, 0), RUSM_EINVAL);
  assert_int_equal(rusm_tcp_close(e.me, NULL), RUSM_EINVAL);
  rusm_sock *sk = NULL;
  assert_int_equal(rusm_tcp_connect(NULL, "127.0.0.1", port, 100, &sk),
                   RUSM_EINVAL);
  assert_int_equal(rusm_tcp_connect(e.me, NULL, port, 100, &sk), RUSM_EINVAL);

  /* Stopping the acceptor closes the listening socket. */
  rusm_ref ref = monitor(&e, acc);
  assert_int_equal(rusm_exit(e.rt, acc, RUSM_REASON_SHUTDOWN), 0);
  assert_int_equal(await_down(&e, ref, NULL, 0), RUSM_EXIT_SHUTDOWN);
  expect_open(e.rt, 0);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Echo                                                                */
/* ------------------------------------------------------------------ */

static void echo_plain_client(bool stackful) {
  t_env e;
  t_start(&e, 2);
  srv s;
  srv_init(&s, &e);
  uint16_t port = listen_echo(&e, &s, stackful, RUSM_TCP_NODELAY, NULL);

  int fd = c_connect(port);
  rusm_pid_t conn = next_conn(&e);
  assert_true(rusm_is_alive(e.rt, conn));
  rusm_ref ref = monitor(&e, conn);
  c_echo(fd, "hello");
  c_echo(fd, "world, a little longer this time");
  for (int i = 0; i < 50; i++)
    c_echo(fd, "again");
  if (!stackful) {
    char back[32] = {0};
    c_send(fd, "peer?", 5);
    ssize_t n = recv(fd, back, sizeof back - 1, 0);
    assert_true(n > 0);
    struct sockaddr_in me, peer;
    socklen_t len = sizeof me;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&me, &len), 0);
    len = sizeof peer;
    assert_int_equal(getpeername(fd, (struct sockaddr *)&peer, &len), 0);
    char want[32];
    snprintf(want, sizeof want, "%u %u", (unsigned)ntohs(me.sin_port),
             (unsigned)ntohs(peer.sin_port));
    assert_string_equal(back, want);
  }

  /* The client closes: the connection process ends normal. */
  close(fd);
  assert_int_equal(await_down(&e, ref, NULL, 0), RUSM_EXIT_NORMAL);
  expect_open(e.rt, 1); /* the listener */
  if (!stackful) {
    assert_int_equal(atomic_load(&s.terminated), 1);
    assert_int_equal(atomic_load(&s.sock_in_terminate), 1);
  }
  t_stop(&e);
}

static void test_echo_plain_client(void **state) { echo_plain_client(false); }
static void test_echo_stackful_server(void **state) { echo_plain_client(true); }

/* A stackful process connects with rusm_tcp_connect and echoes. */
typedef struct conn_client {
  rusm_rt *rt;
  rusm_pid_t test;
  uint16_t port;
  int rounds;
} conn_client;

static void connecting_fn(rusm_proc *self, void *arg) {
  conn_client *c = arg;
  rusm_sock *sock = NULL;
  int rc = rusm_tcp_connect(self, "127.0.0.1", c->port, T_GUARD_MS, &sock);
  T_CHECK(rc == 0);
  if (rc != 0) {
    t_send_u64(c->rt, c->test, T_TAG_DONE, (uint64_t)(int64_t)rc);
    return;
  }
  char host[64];
  uint16_t port = 0;
  T_CHECK(rusm_tcp_peername(self, sock, host, sizeof host, &port) == 0);
  T_CHECK(port == c->port && strcmp(host, "127.0.0.1") == 0);
  /* Nothing to read yet: a short timeout. */
  char buf[64];
  T_CHECK(rusm_tcp_recv(self, sock, buf, sizeof buf, 0) == RUSM_ETIMEDOUT);
  T_CHECK(rusm_tcp_recv(self, sock, buf, sizeof buf, 20) == RUSM_ETIMEDOUT);
  for (int i = 0; i < c->rounds; i++) {
    char msg[32];
    int n = snprintf(msg, sizeof msg, "round %d", i);
    T_CHECK(rusm_tcp_send(self, sock, msg, (size_t)n) == 0);
    size_t got = 0;
    while (got < (size_t)n) {
      ssize_t r =
          rusm_tcp_recv(self, sock, buf + got, sizeof buf - got, T_GUARD_MS);
      T_CHECK(r > 0);
      if (r <= 0)
        break;
      got += (size_t)r;
    }
    T_CHECK(got == (size_t)n && memcmp(buf, msg, (size_t)n) == 0);
  }
  /* rusm_tcp_wait: a message first, then readability. */
  t_send_u64(c->rt, c->test, T_TAG_GO, rusm_self(self));
  rusm_filter f = rusm_filter_tag(T_TAG_PING);
  rusm_msg *m = NULL;
  rc = rusm_tcp_wait(self, sock, &f, T_GUARD_MS, &m);
  T_CHECK(rc == 0 && m && rusm_msg_tag(m) == T_TAG_PING);
  rusm_msg_free(m);
  T_CHECK(rusm_tcp_send(self, sock, "wake", 4) == 0);
  rc = rusm_tcp_wait(self, sock, &f, T_GUARD_MS, &m);
  T_CHECK(rc == 1);
  T_CHECK(rusm_tcp_recv(self, sock, buf, sizeof buf, T_GUARD_MS) > 0);
  T_CHECK(rusm_tcp_close(self, sock) == 0);
  T_CHECK(rusm_tcp_send(self, sock, "x", 1) == RUSM_EINVAL);
  t_send_u64(c->rt, c->test, T_TAG_DONE, 0);
}

static void test_echo_stackful_connect(void **state) {
  t_env e;
  t_start(&e, 2);
  srv s;
  srv_init(&s, &e);
  s.test = RUSM_PID_NONE;
  conn_client c = {e.rt, e.pid, 0, 20};
  c.port = listen_echo(&e, &s, false, 0, NULL);
  rusm_pid_t pid;
  assert_int_equal(rusm_spawn_stackful(e.rt, connecting_fn, &c, NULL, &pid), 0);
  rusm_pid_t who = (rusm_pid_t)t_recv_u64(&e, T_TAG_GO);
  assert_true(who == pid);
  t_send(e.rt, pid, T_TAG_PING, NULL, 0);
  assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 0);
  rusm_tcp_stats st;
  rusm_tcp_stats_get(e.rt, &st);
  assert_int_equal(st.connected, 1);
  /* Both ends closed: only the listener is left. */
  expect_open(e.rt, 1);
  t_stop(&e);
}

/* A stackful client where nobody listens: connection refused. */
static void refused_fn(rusm_proc *self, void *arg) {
  conn_client *c = arg;
  rusm_sock *sock = NULL;
  int rc = rusm_tcp_connect(self, "127.0.0.1", c->port, T_GUARD_MS, &sock);
  t_send_u64(c->rt, c->test, T_TAG_DONE, (uint64_t)(int64_t)rc);
}

static void test_connect_refused(void **state) {
  t_env e;
  t_start(&e, 2);
  /* A port nobody listens on: bind one, note it, close it. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  conn_client c = {e.rt, e.pid, ntohs(a.sin_port), 0};
  rusm_pid_t pid;
  assert_int_equal(rusm_spawn_stackful(e.rt, refused_fn, &c, NULL, &pid), 0);
  assert_int_equal((int64_t)t_recv_u64(&e, T_TAG_DONE), RUSM_ECONNREFUSED);
  t_wait_idle(&e);
  expect_open(e.rt, 0);

  /* Attached threads may use the blocking calls too. */
  srv s;
  srv_init(&s, &e);
  s.test = RUSM_PID_NONE;
  uint16_t port = listen_echo(&e, &s, false, 0, NULL);
  rusm_sock *sock = NULL;
  assert_int_equal(rusm_tcp_connect(e.me, "127.0.0.1", port, T_GUARD_MS, &sock),
                   0);
  assert_int_equal(rusm_tcp_send(e.me, sock, "attached", 8), 0);
  char buf[16];
  ssize_t n = rusm_tcp_recv(e.me, sock, buf, sizeof buf, T_GUARD_MS);
  assert_int_equal(n, 8);
  assert_memory_equal(buf, "attached", 8);
  assert_int_equal(rusm_tcp_queued(e.me, sock), 0);
  /* Left open: detaching (t_stop) closes it. */
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Many connections                                                    */
/* ------------------------------------------------------------------ */

static void test_many_connections(void **state) {
  enum { N = T_SCALE(200, 100) };
  t_env e;
  t_start(&e, 2);
  srv s;
  srv_init(&s, &e);
  s.test = RUSM_PID_NONE;
  uint16_t port = listen_echo(&e, &s, false, 0, NULL);
  int fds[N];
  for (int i = 0; i < N; i++)
    fds[i] = c_connect(port);
  /* All open at once; each says something of its own. */
  for (int round = 0; round < 3; round++)
    for (int i = 0; i < N; i++) {
      char msg[48];
      snprintf(msg, sizeof msg, "conn %d round %d", i, round);
      c_echo(fds[i], msg);
    }
  expect_open(e.rt, N + 1);
  rusm_tcp_stats st;
  rusm_tcp_stats_get(e.rt, &st);
  assert_int_equal(st.accepted, N);
  for (int i = 0; i < N; i++)
    close(fds[i]);
  expect_open(e.rt, 1);
  assert_int_equal(atomic_load(&s.terminated), N);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Failures                                                            */
/* ------------------------------------------------------------------ */

static void peer_reset(bool stackful) {
  t_env e;
  t_start(&e, 2);
  srv s;
  srv_init(&s, &e);
  uint16_t port = listen_echo(&e, &s, stackful, 0, NULL);
  int fd = c_connect(port);
  rusm_pid_t conn = next_conn(&e);
  rusm_ref ref = monitor(&e, conn);
  c_echo(fd, "before the reset");
  c_reset(fd);
  char why[64];
  assert_int_equal(await_down(&e, ref, why, sizeof why), RUSM_EXIT_CUSTOM);
  if (stackful) /* its own reason, from the error rusm_tcp_recv returned */
    assert_string_equal(why, "connection reset by peer");
  else
    assert_string_equal(why, "tcp: connection reset by peer");
  expect_open(e.rt, 1);
  t_stop(&e);
}

static void test_peer_reset(void **state) { peer_reset(false); }
static void test_peer_reset_stackful(void **state) { peer_reset(true); }

static void test_crash_acceptor_survives(void **state) {
  t_env e;
  t_start(&e, 2);
  srv s;
  srv_init(&s, &e);
  rusm_pid_t acc;
  uint16_t port = listen_echo(&e, &s, false, 0, &acc);
  for (int i = 0; i < 5; i++) {
    int fd = c_connect(port);
    rusm_pid_t conn = next_conn(&e);
    rusm_ref ref = monitor(&e, conn);
    c_echo(fd, "fine so far");
    c_send(fd, "crash", 5);
    char why[32];
    assert_int_equal(await_down(&e, ref, why, sizeof why), RUSM_EXIT_CUSTOM);
    assert_string_equal(why, "boom");
    /* Its socket closed with it. */
    assert_true(c_wait_end(fd) <= 0);
    close(fd);
    assert_true(rusm_is_alive(e.rt, acc));
  }
  /* Still accepting. */
  int fd = c_connect(port);
  (void)next_conn(&e);
  c_echo(fd, "still here");
  close(fd);
  t_stop(&e);
}

/* Connects, sends garbage, vanishes (half the time with a reset). */
static void test_garbage_and_vanish(void **state) {
  t_env e;
  t_start(&e, 2);
  srv s;
  srv_init(&s, &e);
  uint16_t port = listen_echo(&e, &s, false, 0, NULL);
  uint8_t junk[3000];
  for (size_t i = 0; i < sizeof junk; i++)
    junk[i] = (uint8_t)(i * 7919u >> 3);
  for (int i = 0; i < 10; i++) {
    int fd = c_connect(port);
    rusm_pid_t conn = next_conn(&e);
    rusm_ref ref = monitor(&e, conn);
    c_send(fd, junk, sizeof junk);
    if (i % 2)
      c_reset(fd);
    else
      close(fd);
    char why[64];
    rusm_exit_code code = await_down(&e, ref, why, sizeof why);
    /* normal, or the peer's reset seen by a read or by the echo */
    assert_true(code == RUSM_EXIT_NORMAL ||
                (code == RUSM_EXIT_CUSTOM &&
                 (strcmp(why, "tcp: connection reset by peer") == 0 ||
                  strcmp(why, "tcp: broken pipe") == 0)));
  }
  expect_open(e.rt, 1);
  assert_int_equal(atomic_load(&s.terminated), 10);
  t_stop(&e);
}

/* Links and monitors on connection processes carry the right reasons. */
static void test_links_and_monitors(void **state) {
  t_env e;
  t_start(&e, 2);
  srv s;
  srv_init(&s, &e);
  uint16_t port = listen_echo(&e, &s, false, 0, NULL);
  rusm_trap_exit(e.me, true);

  for (size_t k = 0; k < 3; k++) {
    int fd = c_connect(port);
    rusm_pid_t conn = next_conn(&e);
    rusm_ref r1 = monitor(&e, conn), r2 = monitor(&e, conn);
    assert_int_equal(rusm_link(e.me, conn), 0);
    c_echo(fd, "linked");
    if (k == 0)
      close(fd);
    else if (k == 1)
      c_send(fd, "crash", 5);
    else
      c_reset(fd);
    const char *want = k == 0   ? ""
                       : k == 1 ? "boom"
                                : "tcp: connection reset by peer";
    rusm_exit_code want_code = k == 0 ? RUSM_EXIT_NORMAL : RUSM_EXIT_CUSTOM;
    char why[64];
    assert_int_equal(await_down(&e, r1, why, sizeof why), want_code);
    assert_string_equal(why, want);
    assert_int_equal(await_down(&e, r2, why, sizeof why), want_code);
    assert_string_equal(why, want);
    /* The link: trapped, so an Exit message with the same reason. */
    rusm_msg *m = t_recv_tag(&e, RUSM_TAG_EXIT);
    rusm_exit_info x;
    assert_int_equal(rusm_msg_exit(m, &x), 0);
    assert_true(x.from == conn);
    assert_int_equal(x.reason.code, want_code);
    assert_int_equal(x.reason.len, strlen(want));
    rusm_msg_free(m);
    if (k != 2)
      close(fd);
  }
  rusm_trap_exit(e.me, false);
  t_stop(&e);
}

/* Killing a connection process closes its socket: the client reads end of
 * stream. */
static void kill_closes(bool stackful) {
  t_env e;
  t_start(&e, 2);
  srv s;
  srv_init(&s, &e);
  uint16_t port = listen_echo(&e, &s, stackful, 0, NULL);
  int fd = c_connect(port);
  rusm_pid_t conn = next_conn(&e);
  c_echo(fd, "about to be killed");
  rusm_ref ref = monitor(&e, conn);
  assert_int_equal(rusm_kill(e.rt, conn), 0);
  assert_int_equal(await_down(&e, ref, NULL, 0), RUSM_EXIT_KILLED);
  assert_int_equal(c_wait_end(fd), 0);
  close(fd);
  expect_open(e.rt, 1);
  t_stop(&e);
}

static void test_kill_closes_socket(void **state) { kill_closes(false); }
static void test_kill_closes_socket_stackful(void **state) {
  kill_closes(true);
}

/* A process that closed its own socket lives on; the peer sees the end. */
static void test_close_from_process(void **state) {
  t_env e;
  t_start(&e, 2);
  srv s;
  srv_init(&s, &e);
  uint16_t port = listen_echo(&e, &s, false, 0, NULL);
  int fd = c_connect(port);
  rusm_pid_t conn = next_conn(&e);
  c_send(fd, "close", 5);
  assert_int_equal(c_wait_end(fd), 0);
  close(fd);
  expect_open(e.rt, 1);
  assert_true(rusm_is_alive(e.rt, conn));
  rusm_ref ref = monitor(&e, conn);
  rusm_exit(e.rt, conn, RUSM_REASON_SHUTDOWN);
  assert_int_equal(await_down(&e, ref, NULL, 0), RUSM_EXIT_SHUTDOWN);
  assert_int_equal(atomic_load(&s.sock_in_terminate), 0);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Runtime destroy with open connections                               */
/* ------------------------------------------------------------------ */

static void holder_fn(rusm_proc *self, void *arg) {
  conn_client *c = arg;
  rusm_sock *sock = NULL;
  T_CHECK(rusm_tcp_connect(self, "127.0.0.1", c->port, T_GUARD_MS, &sock) == 0);
  t_send_u64(c->rt, c->test, T_TAG_DONE, 0);
  char buf[8];
  rusm_tcp_recv(self, sock, buf, sizeof buf, -1); /* until killed */
}

/* A thread attached to the runtime that holds a connection and is still
 * attached when the runtime is destroyed (its socket is closed by the
 * poller's stop, before the runtime reaps the thread's process). */
typedef struct late_attached {
  rusm_rt *rt;
  uint16_t port;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stage; /* 1: connected, 2: runtime destroyed */
  int rc;
} late_attached;

static void *late_main(void *arg) {
  late_attached *l = arg;
  rusm_proc *me = NULL;
  int rc = rusm_attach(l->rt, &me);
  rusm_sock *sock = NULL;
  if (rc == 0)
    rc = rusm_tcp_connect(me, "127.0.0.1", l->port, T_GUARD_MS, &sock);
  pthread_mutex_lock(&l->mu);
  l->rc = rc;
  l->stage = 1;
  pthread_cond_broadcast(&l->cv);
  while (l->stage < 2)
    pthread_cond_wait(&l->cv, &l->mu);
  pthread_mutex_unlock(&l->mu);
  return NULL; /* the runtime is gone: never touch me again */
}

static void test_destroy_with_open_connections(void **state) {
  int fds0 = count_fds();
  t_env e;
  t_start(&e, 2);
  srv s1, s2;
  srv_init(&s1, &e);
  srv_init(&s2, &e);
  s1.test = s2.test = RUSM_PID_NONE;
  uint16_t p1 = listen_echo(&e, &s1, false, 0, NULL);
  uint16_t p2 = listen_echo(&e, &s2, true, 0, NULL);
  enum { N = 10 };
  int fds[2 * N];
  for (int i = 0; i < N; i++) {
    fds[i] = c_connect(p1);
    c_echo(fds[i], "open");
    fds[N + i] = c_connect(p2);
    c_echo(fds[N + i], "open");
  }
  /* Stackful processes holding client sockets of their own. */
  conn_client c = {e.rt, e.pid, p1, 0};
  for (int i = 0; i < 3; i++) {
    rusm_pid_t pid;
    assert_int_equal(rusm_spawn_stackful(e.rt, holder_fn, &c, NULL, &pid), 0);
    assert_int_equal(t_recv_u64(&e, T_TAG_DONE), 0);
  }
  late_attached l = {.rt = e.rt, .port = p1};
  pthread_mutex_init(&l.mu, NULL);
  pthread_cond_init(&l.cv, NULL);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, late_main, &l), 0);
  pthread_mutex_lock(&l.mu);
  while (l.stage < 1)
    pthread_cond_wait(&l.cv, &l.mu);
  pthread_mutex_unlock(&l.mu);
  assert_int_equal(l.rc, 0);

  t_stop(&e);
  pthread_mutex_lock(&l.mu);
  l.stage = 2;
  pthread_cond_broadcast(&l.cv);
  pthread_mutex_unlock(&l.mu);
  pthread_join(th, NULL);
  pthread_cond_destroy(&l.cv);
  pthread_mutex_destroy(&l.mu);
  for (int i = 0; i < 2 * N; i++) {
    assert_int_equal(c_wait_end(fds[i]), 0);
    close(fds[i]);
  }
  assert_int_equal(count_fds(), fds0);
}

/* ------------------------------------------------------------------ */
/* Send queues, closed messages                                        */
/* ------------------------------------------------------------------ */

enum { BULK = 4 << 20 };

typedef struct bulk_srv {
  rusm_rt *rt;
  rusm_pid_t test;
  uint8_t *data;
} bulk_srv;

/* On "go": sends BULK bytes at once (queued), reports ENOBUFS on the next
 * send, and closes after RUSM_TAG_TCP_DRAINED. With CLOSED_MSG: on the
 * peer's end of stream, says goodbye and stops. */
static rusm_next bulk_handle(rusm_proc *self, rusm_sock *sock, void *state,
                             rusm_msg *m) {
  bulk_srv *b = state;
  if (!m)
    return rusm_next_wait();
  uint64_t tag = rusm_msg_tag(m);
  if (tag == RUSM_TAG_TCP_DATA) {
    T_CHECK(rusm_tcp_send(self, sock, b->data, BULK) == 0);
    ssize_t q = rusm_tcp_queued(self, sock);
    T_CHECK(q > 0);
    /* Past the limit (64 KiB here): refused, nothing sent. */
    T_CHECK(rusm_tcp_send(self, sock, "x", 1) == RUSM_ENOBUFS);
    t_send_u64(b->rt, b->test, T_TAG_INFO, (uint64_t)q);
  } else if (tag == RUSM_TAG_TCP_DRAINED) {
    T_CHECK(rusm_tcp_queued(self, sock) == 0);
    t_send_u64(b->rt, b->test, T_TAG_NOTE, 0);
  } else if (tag == RUSM_TAG_TCP_CLOSED) {
    int err = -1;
    T_CHECK(rusm_tcp_msg_closed(m, &err) == 0 && err == 0);
    T_CHECK(rusm_tcp_send(self, sock, "bye", 3) == 0);
    return rusm_next_stop(RUSM_REASON_SHUTDOWN);
  }
  return rusm_next_wait();
}

static const rusm_tcp_conn_ops bulk_ops = {.handle = bulk_handle};

static void test_send_queue_and_closed_msg(void **state) {
  t_env e;
  t_start(&e, 2);
  bulk_srv b = {e.rt, e.pid, malloc(BULK)};
  assert_non_null(b.data);
  for (size_t i = 0; i < BULK; i++)
    b.data[i] = (uint8_t)(i * 2654435761u >> 24);
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.ops = &bulk_ops;
  o.arg = &b;
  o.flags = RUSM_TCP_CLOSED_MSG | RUSM_TCP_DRAINED_MSG;
  o.send_queue_max = 64 * 1024;
  uint16_t port;
  assert_int_equal(rusm_tcp_listen(e.rt, "127.0.0.1", 0, &o, NULL, &port), 0);
  int fd = c_connect(port);
  c_send(fd, "go", 2);
  /* The process had queued most of it before the client read anything. */
  assert_true(t_recv_u64(&e, T_TAG_INFO) > 0);
  uint8_t *got = malloc(BULK);
  assert_non_null(got);
  c_recv_exact(fd, got, BULK);
  assert_memory_equal(got, b.data, BULK);
  assert_int_equal(t_recv_u64(&e, T_TAG_NOTE), 0); /* drained */
  /* Half-close: the process gets CLOSED(0), answers, stops. */
  shutdown(fd, SHUT_WR);
  char bye[4] = {0};
  c_recv_exact(fd, bye, 3);
  assert_string_equal(bye, "bye");
  assert_int_equal(c_wait_end(fd), 0);
  close(fd);
  expect_open(e.rt, 1);
  free(got);
  t_stop(&e);
  free(b.data);
}

/* ------------------------------------------------------------------ */
/* Out of descriptors: the acceptor backs off                          */
/* ------------------------------------------------------------------ */

static bool paused(void *arg) {
  rusm_tcp_stats st;
  rusm_tcp_stats_get(arg, &st);
  return st.accept_pauses > 0;
}

static void test_emfile_backoff(void **state) {
  enum { N = 24, ROOM = 6 };
  t_env e;
  t_start(&e, 2);
  srv s;
  srv_init(&s, &e);
  s.test = RUSM_PID_NONE;
  uint16_t port = listen_echo(&e, &s, false, 0, NULL);
  int fds[N];
  for (int i = 0; i < N; i++) {
    fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fds[i] >= 0);
    struct timeval tv = {T_GUARD_MS / 1000, 0};
    assert_int_equal(
        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  }
  /* Lower the soft limit so that exactly ROOM more descriptors fit. */
  struct rlimit old;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
  int free_seen = 0, fd = 0;
  for (; free_seen < ROOM; fd++)
    if (fcntl(fd, F_GETFD) < 0)
      free_seen++;
  struct rlimit low = {(rlim_t)fd, old.rlim_max};
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);

  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  for (int i = 0; i < N; i++) {
    assert_int_equal(connect(fds[i], (struct sockaddr *)&a, sizeof a), 0);
    c_send(fds[i], "hi", 2);
  }
  /* ROOM of them are served; then accept(2) fails with EMFILE. */
  bool ok = t_poll_until(paused, e.rt);
  int rc = setrlimit(RLIMIT_NOFILE, &old);
  assert_true(ok);
  assert_int_equal(rc, 0);
  /* After the pause the rest are accepted: everyone gets the echo. */
  for (int i = 0; i < N; i++) {
    char back[2];
    c_recv_exact(fds[i], back, 2);
    assert_memory_equal(back, "hi", 2);
  }
  rusm_tcp_stats st;
  rusm_tcp_stats_get(e.rt, &st);
  assert_int_equal(st.accepted, N);
  assert_true(st.accept_errors >= st.accept_pauses);
  for (int i = 0; i < N; i++)
    close(fds[i]);
  expect_open(e.rt, 1);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Benchmarks, tiny                                                    */
/* ------------------------------------------------------------------ */

static void tiny_bench(const char *name, uint64_t n) {
  const rusm_bench_scenario *s = rusm_bench_find(name);
  assert_non_null(s);
  rusm_bench_opts o;
  rusm_bench_opts_init(&o);
  o.n = n;
  o.repeat = 1;
  o.no_warmup = true;
  o.schedulers = 2;
  rusm_bench_result r;
  int rc = rusm_bench_run(s, &o, &r);
  if (rc != 0)
    fail_msg("%s: %s", name, rusm_tcp_err_name(rc));
  assert_int_equal(r.ops, n);
  assert_true(r.ops_per_sec > 0);
  if (s->kind == RUSM_BENCH_MEMORY)
    assert_true(r.has_memory);
  else
    assert_true(r.has_baseline && r.baseline_ops_per_sec > 0);
  char json[4096];
  rusm_bench_to_json(&r, NULL, json, sizeof json);
  if (s->kind == RUSM_BENCH_MEMORY)
    assert_non_null(strstr(json, "\"bytes_per_connection\":"));
  rusm_bench_result_free(&r);
}

static void test_bench_connection_storm(void **state) {
  int fds0 = count_fds();
  tiny_bench("connection-storm", 40);
  assert_int_equal(count_fds(), fds0);
}

static void test_bench_connection_scale(void **state) {
  int fds0 = count_fds();
  tiny_bench("connection-scale", 50);
  assert_int_equal(count_fds(), fds0);
  /* Past the open-file limit: refused up front. */
  const rusm_bench_scenario *s = rusm_bench_find("connection-scale");
  rusm_bench_opts o;
  rusm_bench_opts_init(&o);
  o.n = 1000000;
  o.repeat = 1;
  o.no_warmup = true;
  rusm_bench_result r;
  assert_int_equal(rusm_bench_run(s, &o, &r), RUSM_ELIMIT);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_listen_args),
      cmocka_unit_test(test_echo_plain_client),
      cmocka_unit_test(test_echo_stackful_server),
      cmocka_unit_test(test_echo_stackful_connect),
      cmocka_unit_test(test_connect_refused),
      cmocka_unit_test(test_many_connections),
      cmocka_unit_test(test_peer_reset),
      cmocka_unit_test(test_peer_reset_stackful),
      cmocka_unit_test(test_crash_acceptor_survives),
      cmocka_unit_test(test_garbage_and_vanish),
      cmocka_unit_test(test_links_and_monitors),
      cmocka_unit_test(test_kill_closes_socket),
      cmocka_unit_test(test_kill_closes_socket_stackful),
      cmocka_unit_test(test_close_from_process),
      cmocka_unit_test(test_destroy_with_open_connections),
      cmocka_unit_test(test_send_queue_and_closed_msg),
      cmocka_unit_test(test_emfile_backoff),
      cmocka_unit_test(test_bench_connection_storm),
      cmocka_unit_test(test_bench_connection_scale),
  };
  return T_RUN(tests);
}
