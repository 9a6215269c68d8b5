// ctest-labels: concurrent
/*
 * Unit tests: the error and edge paths of TCP (src/otp/tcp.c) and of the
 * poller (src/otp/poll.c) that test_tcp.c leaves alone — bad addresses,
 * IPv6, refused / timed-out / unreachable connects, send after shutdown or
 * reset, sticky errors, send queues at their limit, calls from the wrong
 * process or context, out of descriptors, out of memory everywhere (fault
 * injection: every call fails cleanly and nothing leaks under LSan),
 * attached threads killed in blocking calls, events racing with close and
 * exit, an epoll descriptor lost behind the runtime's back, and runtime
 * destroy with sockets in every state.
 *
 * Some orderings need the poll thread to have routed an event before
 * something else happens. The "marker" (an attached thread blocked in
 * rusm_tcp_recv) gives that: the poll thread routes events in the order
 * they became ready, so once the marker wakes for a byte sent after event
 * E, E has been pushed to its owner. A "hog" (a stackful process spinning
 * without runtime calls) keeps a scheduler from running anything else.
 * Only loopback addresses.
 */
#include "support.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "otp/alloc.h"
#include "otp/poll.h"
#include "rusm/tcp.h"

/* Tags of this file (control range of support.h). */
#define TAG_HELLO (T_TAG_CTL | 0x40)  /* a process reports in */
#define TAG_RESULT (T_TAG_CTL | 0x41) /* a process reports a result */
#define TAG_X (T_TAG_CTL | 0x42)      /* a message to wait for */
#define TAG_NEVER (T_TAG_CTL | 0x43)  /* a message nobody sends */
#define TAG_HOG (T_TAG_CTL | 0x44)    /* the hog runs */

enum { BIG = 32 << 20 }; /* more than loopback's kernel buffers hold */

static uint8_t pattern_at(size_t i) { return (uint8_t)(i * 2654435761u >> 13); }

/* The pattern (BIG bytes, made once). */
static const uint8_t *pattern(void) {
  static uint8_t *p;
  if (!p) {
    p = malloc(BIG);
    assert_non_null(p);
    for (size_t i = 0; i < BIG; i++)
      p[i] = pattern_at(i);
  }
  return p;
}

/* ------------------------------------------------------------------ */
/* Plain sockets                                                       */
/* ------------------------------------------------------------------ */

static void guard_timeouts(int fd) {
  struct timeval tv = {T_GUARD_MS / 1000, 0};
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
}

static int c_socket(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  guard_timeouts(fd);
  return fd;
}

static struct sockaddr_in loopback(uint16_t port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

static void c_connect_fd(int fd, uint16_t port) {
  struct sockaddr_in a = loopback(port);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
    fail_msg("connect: %s", strerrordesc_np(errno));
}

static int c_connect(uint16_t port) {
  int fd = c_socket();
  c_connect_fd(fd, port);
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

/* Reads up to len bytes, stopping early only at end of stream or an error;
 * returns the count. */
static size_t c_recv_upto(int fd, void *buf, size_t len) {
  uint8_t *p = buf;
  size_t got = 0;
  while (got < len) {
    ssize_t n = recv(fd, p + got, len - got, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      fail_msg("recv: no data within the guard");
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  return got;
}

static void c_recv_exact(int fd, void *buf, size_t len) {
  size_t got = c_recv_upto(fd, buf, len);
  if (got != len)
    fail_msg("recv: %zu of %zu bytes, then the end", got, len);
}

static void c_echo(int fd, const char *text) {
  size_t len = strlen(text);
  char back[64];
  assert_true(len < sizeof back);
  c_send(fd, text, len);
  c_recv_exact(fd, back, len);
  assert_memory_equal(back, text, len);
}

/* Reads until the end of stream (0) or an error (-1); fails on the guard. */
static ssize_t c_wait_end(int fd) {
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      fail_msg("recv: no end of stream within the guard");
    if (n <= 0)
      return n;
  }
}

/* Reads the pattern from offset 0 until the end of stream; returns the
 * count (every byte checked). */
static size_t c_read_pattern_to_end(int fd) {
  static uint8_t buf[1 << 16];
  size_t total = 0;
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      fail_msg("recv: no end of stream within the guard");
    if (n <= 0)
      return total;
    for (ssize_t i = 0; i < n; i++)
      if (buf[i] != pattern_at(total + (size_t)i))
        fail_msg("byte %zu differs", total + (size_t)i);
    total += (size_t)n;
  }
}

static void c_reset(int fd) {
  struct linger lg = {1, 0}; /* close sends RST */
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd);
}

/* A listener of the kernel only (never accepted by the runtime). */
static int plain_listen(int backlog, uint16_t *port) {
  int fd = c_socket();
  struct sockaddr_in a = loopback(0);
  socklen_t len = sizeof a;
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(fd, backlog), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

/* accept(2) with the listener's receive timeout as the guard. */
static int plain_accept(int lfd) {
  int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0)
    fail_msg("accept: %s", strerrordesc_np(errno));
  guard_timeouts(fd);
  return fd;
}

/* A port nobody listens on. */
static uint16_t closed_port(int family) {
  int fd = socket(family, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t len;
  if (family == AF_INET) {
    struct sockaddr_in a = loopback(0);
    memcpy(&ss, &a, sizeof a);
    len = sizeof a;
  } else {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    len = sizeof *a;
  }
  assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
  close(fd);
  return family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                           : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
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

static int lowest_free_fd(void) {
  int fd = 0;
  while (fcntl(fd, F_GETFD) >= 0)
    fd++;
  return fd;
}

/* The descriptor behind a handle (a rusm_sock is its table entry). */
static int sock_fd(const rusm_sock *s) {
  return ((const rusm__pollent *)s)->fd;
}

/* A full listen queue: backlog 1, two connections waiting, never accepted;
 * further SYNs are dropped, so connects to it time out. */
typedef struct full_listener {
  int lfd, fill[2];
  uint16_t port;
} full_listener;

static bool queue_full(void *arg) {
  full_listener *f = arg;
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  memset(&ti, 0, sizeof ti);
  if (getsockopt(f->lfd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
    return false;
  return ti.tcpi_unacked >= 2; /* a listener's accept queue length */
}

static void full_listener_open(full_listener *f) {
  f->lfd = plain_listen(1, &f->port);
  for (int i = 0; i < 2; i++) {
    f->fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(f->fill[i] >= 0);
    struct sockaddr_in a = loopback(f->port);
    int rc = connect(f->fill[i], (struct sockaddr *)&a, sizeof a);
    assert_true(rc == 0 || errno == EINPROGRESS);
  }
  /* The kernel completes the handshakes on its own: no event tells. */
  assert_true(t_poll_until(queue_full, f));
}

static void full_listener_close(full_listener *f) {
  close(f->fill[0]);
  close(f->fill[1]);
  close(f->lfd);
}

/* ------------------------------------------------------------------ */
/* Runtime helpers                                                     */
/* ------------------------------------------------------------------ */

static t_env start1(uint32_t schedulers) {
  t_env e;
  t_start(&e, schedulers);
  return e;
}

static t_env start_opts(uint32_t schedulers, uint32_t max_processes) {
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  o.schedulers = schedulers;
  o.max_processes = max_processes;
  t_env e;
  t_start_opts(&e, &o);
  return e;
}

static rusm_tcp_stats stats(rusm_rt *rt) {
  rusm_tcp_stats st;
  assert_int_equal(rusm_tcp_stats_get(rt, &st), 0);
  return st;
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

/* Sockets close on the reaping path, after the Down or end of stream a
 * test waited for: a status, hence the poll. */
static void expect_open(rusm_rt *rt, uint64_t want) {
  open_arg a = {rt, want};
  if (!t_poll_until(open_reached, &a))
    fail_msg("open sockets: %llu, want %llu",
             (unsigned long long)stats(rt).open, (unsigned long long)want);
}

typedef struct parked_arg {
  rusm_rt *rt;
  rusm_pid_t pid;
} parked_arg;

static bool is_parked(void *arg) {
  parked_arg *a = arg;
  rusm_proc_info in;
  return rusm_proc_info_get(a->rt, a->pid, &in) == 0 &&
         in.status == RUSM_STATUS_WAITING;
}

/* Waits until pid is parked in a receive (a state no message announces). */
static void await_parked(rusm_rt *rt, rusm_pid_t pid) {
  parked_arg a = {rt, pid};
  assert_true(t_poll_until(is_parked, &a));
}

static bool down_of(const rusm_msg *m, void *arg) {
  rusm_down_info d;
  return rusm_msg_down(m, &d) == 0 && d.ref == *(const rusm_ref *)arg;
}

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

static void expect_down(t_env *e, rusm_ref ref, rusm_exit_code code,
                        const char *detail) {
  char why[96];
  assert_int_equal(await_down(e, ref, why, sizeof why), code);
  assert_string_equal(why, detail);
}

/* Results of processes: four int64 values. */
typedef struct result {
  int64_t v[4];
} result;

static void send_result(rusm_rt *rt, rusm_pid_t to, uint64_t tag, int64_t a,
                        int64_t b, int64_t c, int64_t d) {
  result r = {{a, b, c, d}};
  t_send(rt, to, tag, &r, sizeof r);
}

static result recv_result(t_env *e, uint64_t tag) {
  rusm_msg *m = t_recv_tag(e, tag);
  result r;
  assert_int_equal(rusm_msg_len(m), sizeof r);
  memcpy(&r, rusm_msg_data(m), sizeof r);
  rusm_msg_free(m);
  return r;
}

/* ------------------------------------------------------------------ */
/* Servers                                                             */
/* ------------------------------------------------------------------ */

typedef struct srv {
  rusm_rt *rt;
  rusm_pid_t test;
  bool announce; /* init / start sends T_TAG_READY with the pid */
  bool notes;    /* terminate sends a t_note with the exit reason */
} srv;

static srv srv_of(t_env *e, bool announce, bool notes) {
  srv s = {e->rt, e->pid, announce, notes};
  return s;
}

static rusm_next echo_init(rusm_proc *self, rusm_sock *sock, void **state) {
  srv *s = *state;
  T_CHECK(sock != NULL);
  if (s && s->announce)
    t_send_u64(s->rt, s->test, T_TAG_READY, rusm_self(self));
  return rusm_next_wait();
}

static rusm_next echo_handle(rusm_proc *self, rusm_sock *sock, void *state,
                             rusm_msg *m) {
  if (m && rusm_msg_tag(m) == RUSM_TAG_TCP_DATA && sock)
    rusm_tcp_send(self, sock, rusm_msg_data(m), rusm_msg_len(m));
  return rusm_next_wait();
}

static void echo_terminate(rusm_proc *self, rusm_sock *sock, void *state,
                           const rusm_reason *why) {
  srv *s = state;
  if (s && s->notes)
    t_note_send(s->rt, s->test, rusm_self(self), why, sock != NULL);
}

static const rusm_tcp_conn_ops echo_ops = {echo_init, echo_handle,
                                           echo_terminate};

static void echo_fn(rusm_proc *self, rusm_sock *sock, void *arg) {
  srv *s = arg;
  if (s && s->announce)
    t_send_u64(s->rt, s->test, T_TAG_READY, rusm_self(self));
  char buf[512];
  for (;;) {
    ssize_t n = rusm_tcp_recv(self, sock, buf, sizeof buf, -1);
    if (n <= 0)
      return;
    if (rusm_tcp_send(self, sock, buf, (size_t)n) != 0)
      return;
  }
}

static uint16_t listen_opts(t_env *e, const rusm_tcp_listen_opts *o,
                            rusm_pid_t *acceptor) {
  uint16_t port = 0;
  rusm_pid_t acc = RUSM_PID_NONE;
  int rc = rusm_tcp_listen(e->rt, "127.0.0.1", 0, o, &acc, &port);
  if (rc != 0)
    fail_msg("rusm_tcp_listen: %s", rusm_tcp_err_name(rc));
  assert_true(port != 0);
  if (acceptor)
    *acceptor = acc;
  return port;
}

static uint16_t listen_echo(t_env *e, srv *s, bool stackful,
                            rusm_pid_t *acceptor) {
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  if (stackful)
    o.fn = echo_fn;
  else
    o.ops = &echo_ops;
  o.arg = s;
  return listen_opts(e, &o, acceptor);
}

static rusm_pid_t next_conn(t_env *e) {
  return (rusm_pid_t)t_recv_u64(e, T_TAG_READY);
}

/* ------------------------------------------------------------------ */
/* The marker and the hog                                              */
/* ------------------------------------------------------------------ */

typedef struct marker {
  rusm_rt *rt;
  pthread_t th;
  int lfd, peer;
  int pipe[2]; /* marker -> test: its pid once, then a byte per sync */
  uint16_t port;
  rusm_pid_t pid;
} marker;

static void *marker_main(void *arg) {
  marker *m = arg;
  rusm_proc *me = NULL;
  rusm_sock *s = NULL;
  rusm_pid_t pid = RUSM_PID_NONE;
  int rc = rusm_attach(m->rt, &me);
  T_CHECK(rc == 0);
  if (rc == 0) {
    rc = rusm_tcp_connect(me, "127.0.0.1", m->port, T_GUARD_MS, &s);
    T_CHECK(rc == 0);
    pid = rusm_self(me);
  }
  T_CHECK(write(m->pipe[1], &pid, sizeof pid) == sizeof pid);
  while (rc == 0) {
    char b = 0;
    ssize_t n = rusm_tcp_recv(me, s, &b, 1, 3 * T_GUARD_MS);
    if (n != 1 || b == 'q')
      break;
    T_CHECK(write(m->pipe[1], "m", 1) == 1);
  }
  if (me)
    rusm_detach(me); /* closes the socket */
  return NULL;
}

static void pipe_read(int fd, void *buf, size_t len) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  assert_int_equal(poll(&p, 1, T_GUARD_MS), 1);
  assert_int_equal(read(fd, buf, len), (ssize_t)len);
}

static void marker_start(marker *m, rusm_rt *rt) {
  memset(m, 0, sizeof *m);
  m->rt = rt;
  m->lfd = plain_listen(8, &m->port);
  assert_int_equal(pipe2(m->pipe, O_CLOEXEC), 0);
  assert_int_equal(pthread_create(&m->th, NULL, marker_main, m), 0);
  m->peer = plain_accept(m->lfd);
  pipe_read(m->pipe[0], &m->pid, sizeof m->pid);
  assert_true(m->pid != RUSM_PID_NONE);
}

/* Returns once the poll thread has routed every event that was ready
 * before the call. Neither drains the caller's mailbox. */
static void marker_sync(marker *m) {
  await_parked(m->rt, m->pid); /* its socket is armed and waited for */
  c_send(m->peer, "s", 1);
  char b;
  pipe_read(m->pipe[0], &b, 1);
}

static void marker_stop(marker *m) {
  c_send(m->peer, "q", 1);
  pthread_join(m->th, NULL);
  close(m->peer);
  close(m->lfd);
  close(m->pipe[0]);
  close(m->pipe[1]);
}

typedef struct hog {
  rusm_rt *rt;
  rusm_pid_t test;
  _Atomic bool release;
} hog;

/* Spins without a runtime call: its scheduler runs nothing else. */
static void hog_fn(rusm_proc *self, void *arg) {
  hog *h = arg;
  t_send_u64(h->rt, h->test, TAG_HOG, 0);
  int64_t end = rusm_now_ns() + (int64_t)T_GUARD_MS * 1000000;
  while (!atomic_load(&h->release) && rusm_now_ns() < end)
    sched_yield();
  T_CHECK(atomic_load(&h->release));
}

static void hog_start(hog *h, t_env *e, int32_t scheduler) {
  h->rt = e->rt;
  h->test = e->pid;
  atomic_store(&h->release, false);
  rusm_spawn_opts so;
  rusm_spawn_opts_init(&so);
  so.scheduler = scheduler;
  assert_int_equal(rusm_spawn_stackful(e->rt, hog_fn, h, &so, NULL), 0);
  assert_int_equal(t_recv_u64(e, TAG_HOG), 0);
}

static void hog_release(hog *h) { atomic_store(&h->release, true); }

/* ------------------------------------------------------------------ */
/* Names, messages, addresses                                          */
/* ------------------------------------------------------------------ */

static void test_names_and_closed_msg(void **state) {
  static const int codes[] = {RUSM_ECONNREFUSED,  RUSM_ECONNRESET,
                              RUSM_EPIPE,         RUSM_EADDRINUSE,
                              RUSM_EADDRNOTAVAIL, RUSM_ECLOSED,
                              RUSM_EMFILE,        RUSM_ENOBUFS,
                              RUSM_EUNREACH,      RUSM_ECONNTIMEDOUT,
                              RUSM_ENOMEM,        RUSM_ESYS,
                              RUSM_EINVAL,        -999};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    /* The same texts as the core's (which knows the TCP codes too). */
    assert_string_equal(rusm_tcp_strerror(codes[i]), rusm_strerror(codes[i]));
    assert_string_equal(rusm_tcp_err_name(codes[i]), rusm_err_name(codes[i]));
  }
  assert_string_equal(rusm_tcp_err_name(RUSM_ECONNTIMEDOUT),
                      "RUSM_ECONNTIMEDOUT");
  assert_string_equal(rusm_tcp_strerror(RUSM_ENOBUFS), "send queue full");

  t_env e = start1(1);
  int err = 1;
  assert_int_equal(rusm_tcp_msg_closed(NULL, &err), RUSM_EINVAL);
  t_send_u64(e.rt, e.pid, TAG_X, 0);
  rusm_msg *m = t_recv_tag(&e, TAG_X);
  assert_int_equal(rusm_tcp_msg_closed(m, &err), RUSM_EINVAL);
  assert_int_equal(err, 1);
  rusm_msg_free(m);
  assert_int_equal(rusm_tcp_stats_get(e.rt, NULL), RUSM_EINVAL);
  rusm_tcp_stats st = stats(e.rt); /* no TCP use yet: all zero */
  assert_int_equal(st.opened, 0);
  assert_int_equal(st.open, 0);
  t_stop(&e);
}

static void test_addresses(void **state) {
  t_env e = start1(2);
  srv s = srv_of(&e, false, false);
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.ops = &echo_ops;
  o.arg = &s;

  /* IPv6 loopback, bracketed or not; port 0 reports the one bound. */
  uint16_t p6 = 0;
  rusm_pid_t acc6;
  assert_int_equal(rusm_tcp_listen(e.rt, "[::1]", 0, &o, &acc6, &p6), 0);
  assert_true(p6 != 0);
  assert_int_equal(rusm_tcp_listen(e.rt, "::1", p6, &o, NULL, NULL),
                   RUSM_EADDRINUSE);
  rusm_sock *s6 = NULL;
  assert_int_equal(rusm_tcp_connect(e.me, "::1", p6, T_GUARD_MS, &s6), 0);
  char host[64];
  uint16_t port = 0;
  assert_int_equal(rusm_tcp_peername(e.me, s6, host, sizeof host, &port), 0);
  assert_string_equal(host, "::1");
  assert_int_equal(port, p6);
  port = 0;
  assert_int_equal(rusm_tcp_sockname(e.me, s6, host, sizeof host, &port), 0);
  assert_string_equal(host, "::1");
  assert_true(port != 0 && port != p6);
  assert_int_equal(rusm_tcp_send(e.me, s6, "six", 3), 0);
  char buf[8];
  assert_int_equal(rusm_tcp_recv(e.me, s6, buf, sizeof buf, T_GUARD_MS), 3);
  assert_memory_equal(buf, "six", 3);
  assert_int_equal(rusm_tcp_close(e.me, s6), 0);
  rusm_sock *sk = NULL;
  assert_int_equal(
      rusm_tcp_connect(e.me, "[::1]", closed_port(AF_INET6), T_GUARD_MS, &sk),
      RUSM_ECONNREFUSED);

  /* No host: every IPv4 address (reached here through loopback). */
  uint16_t pany = 0;
  rusm_pid_t accany;
  assert_int_equal(rusm_tcp_listen(e.rt, NULL, 0, &o, &accany, &pany), 0);
  int fd = c_connect(pany);
  c_echo(fd, "any");
  close(fd);

  /* "localhost" is 127.0.0.1; the port reported is the one clients reach. */
  uint16_t p4 = 0;
  assert_int_equal(rusm_tcp_listen(e.rt, "localhost", 0, &o, NULL, &p4), 0);
  rusm_sock *s4 = NULL;
  assert_int_equal(rusm_tcp_connect(e.me, "localhost", p4, T_GUARD_MS, &s4), 0);
  port = 0;
  assert_int_equal(rusm_tcp_peername(e.me, s4, host, sizeof host, &port), 0);
  assert_string_equal(host, "127.0.0.1");
  assert_int_equal(port, p4);
  /* Truncated to hostlen, NUL-terminated; hostlen 0 writes nothing. */
  char small[4] = "zzz";
  assert_int_equal(rusm_tcp_peername(e.me, s4, small, sizeof small, NULL), 0);
  assert_string_equal(small, "127");
  memcpy(small, "zzz", 4);
  assert_int_equal(rusm_tcp_sockname(e.me, s4, small, 0, NULL), 0);
  assert_string_equal(small, "zzz");
  assert_int_equal(rusm_tcp_close(e.me, s4), 0);

  /* Bad host strings: no DNS, no port suffix, well-formed brackets. */
  char longer[80];
  memset(longer, '1', sizeof longer);
  longer[0] = '[';
  longer[sizeof longer - 2] = ']';
  longer[sizeof longer - 1] = '\0';
  const char *bad[] = {"example.com", "127.0.0.1:80", "1.2.3",      "[]",
                       "[::1",        "::1]",         "[127.0.0.1", longer};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(rusm_tcp_listen(e.rt, bad[i], 0, &o, NULL, NULL),
                     RUSM_EINVAL);
    assert_int_equal(rusm_tcp_connect(e.me, bad[i], p4, T_GUARD_MS, &sk),
                     RUSM_EINVAL);
  }
  assert_int_equal(rusm_tcp_connect(e.me, "", p4, T_GUARD_MS, &sk),
                   RUSM_EINVAL);
  o.backlog = -1;
  assert_int_equal(rusm_tcp_listen(e.rt, "127.0.0.1", 0, &o, NULL, NULL),
                   RUSM_EINVAL);

  /* Loopback's broadcast address: unreachable at once, nothing sent. */
  assert_int_equal(
      rusm_tcp_connect(e.me, "127.255.255.255", 80, T_GUARD_MS, &sk),
      RUSM_EUNREACH);

  rusm_tcp_stats st = stats(e.rt);
  assert_int_equal(st.connected, 2);
  expect_open(e.rt, 3); /* the three listeners */
  for (int i = 0; i < 2; i++) {
    rusm_pid_t a = i ? accany : acc6;
    rusm_ref ref = monitor(&e, a);
    assert_int_equal(rusm_exit(e.rt, a, RUSM_REASON_SHUTDOWN), 0);
    assert_int_equal(await_down(&e, ref, NULL, 0), RUSM_EXIT_SHUTDOWN);
  }
  expect_open(e.rt, 1);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Connect timeouts                                                    */
/* ------------------------------------------------------------------ */

static void test_connect_timeouts(void **state) {
  t_env e = start1(1);
  full_listener f;
  full_listener_open(&f);
  rusm_sock *sk = NULL;
  /* The SYN is dropped: the call gives up at its deadline. */
  assert_int_equal(rusm_tcp_connect(e.me, "127.0.0.1", f.port, 50, &sk),
                   RUSM_ETIMEDOUT);
  assert_null(sk);
  /* Timeout 0: only a connection made at once would do. */
  assert_int_equal(rusm_tcp_connect(e.me, "127.0.0.1", f.port, 0, &sk),
                   RUSM_ETIMEDOUT);
  rusm_tcp_stats st = stats(e.rt);
  assert_int_equal(st.connected, 0);
  assert_int_equal(st.opened, 2);
  assert_int_equal(st.open, 0);
  full_listener_close(&f);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Blocking calls: attached thread                                     */
/* ------------------------------------------------------------------ */

static rusm_sock *attached_connect(t_env *e, uint16_t port) {
  rusm_sock *s = NULL;
  int rc = rusm_tcp_connect(e->me, "127.0.0.1", port, T_GUARD_MS, &s);
  if (rc != 0)
    fail_msg("rusm_tcp_connect: %s", rusm_tcp_err_name(rc));
  return s;
}

static void test_blocking_calls(void **state) {
  t_env e = start1(1);
  uint16_t port;
  int lfd = plain_listen(16, &port);
  rusm_sock *s = attached_connect(&e, port);
  int peer = plain_accept(lfd);
  char buf[16];

  /* Arguments. */
  assert_int_equal(rusm_tcp_recv(e.me, s, buf, 0, 0), RUSM_EINVAL);
  assert_int_equal(rusm_tcp_recv(e.me, s, NULL, 1, 0), RUSM_EINVAL);
  assert_int_equal(rusm_tcp_send(e.me, s, NULL, 1), RUSM_EINVAL);
  assert_int_equal(rusm_tcp_send(e.me, s, NULL, 0), 0);
  assert_int_equal(rusm_tcp_queued(e.me, s), 0);
  assert_int_equal(rusm_tcp_queued(e.me, NULL), RUSM_EINVAL);
  rusm_msg *m = NULL;
  assert_int_equal(rusm_tcp_wait(e.me, s, NULL, 0, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_tcp_wait(e.me, NULL, NULL, 0, &m), RUSM_EINVAL);
  assert_int_equal(rusm_tcp_shutdown(e.me, NULL), RUSM_EINVAL);
  assert_int_equal(rusm_tcp_peername(e.me, NULL, buf, sizeof buf, NULL),
                   RUSM_EINVAL);

  /* rusm_tcp_wait: a message already there comes first; else timeouts. */
  rusm_filter fx = rusm_filter_tag(TAG_X);
  t_send_u64(e.rt, e.pid, TAG_X, 7);
  assert_int_equal(rusm_tcp_wait(e.me, s, &fx, T_GUARD_MS, &m), 0);
  assert_int_equal(t_msg_u64(m), 7);
  rusm_msg_free(m);
  assert_int_equal(rusm_tcp_wait(e.me, s, &fx, 0, &m), RUSM_ETIMEDOUT);
  assert_null(m);
  assert_int_equal(rusm_tcp_wait(e.me, s, &fx, 20, &m), RUSM_ETIMEDOUT);
  assert_int_equal(rusm_tcp_recv(e.me, s, buf, sizeof buf, 20), RUSM_ETIMEDOUT);

  /* One process, several sockets: close them out of order. */
  rusm_sock *a = attached_connect(&e, port), *b = attached_connect(&e, port),
            *c = attached_connect(&e, port);
  int pa = plain_accept(lfd), pb = plain_accept(lfd), pc = plain_accept(lfd);
  assert_int_equal(rusm_tcp_close(e.me, b), 0); /* between two others */
  assert_int_equal(rusm_tcp_close(e.me, a), 0);
  assert_int_equal(c_wait_end(pb), 0);
  assert_int_equal(c_wait_end(pa), 0);
  assert_int_equal(rusm_tcp_send(e.me, c, "c", 1), 0);
  c_recv_exact(pc, buf, 1);
  assert_int_equal(rusm_tcp_close(e.me, c), 0);
  assert_int_equal(rusm_tcp_close(e.me, c), RUSM_EINVAL); /* twice */
  assert_int_equal(rusm_tcp_recv(e.me, c, buf, 1, 0), RUSM_EINVAL);
  close(pa);
  close(pb);
  close(pc);

  /* Shutdown (twice): the peer reads the end, reading goes on until the
   * peer's own end. */
  assert_int_equal(rusm_tcp_shutdown(e.me, s), 0);
  assert_int_equal(rusm_tcp_shutdown(e.me, s), 0);
  assert_int_equal(c_wait_end(peer), 0);
  c_send(peer, "late", 4);
  assert_int_equal(rusm_tcp_recv(e.me, s, buf, sizeof buf, T_GUARD_MS), 4);
  assert_memory_equal(buf, "late", 4);
  shutdown(peer, SHUT_WR);
  assert_int_equal(rusm_tcp_recv(e.me, s, buf, sizeof buf, T_GUARD_MS), 0);
  assert_int_equal(rusm_tcp_recv(e.me, s, buf, sizeof buf, T_GUARD_MS), 0);
  /* Sending after the shutdown fails, and the failure sticks. */
  assert_int_equal(rusm_tcp_send(e.me, s, "x", 1), RUSM_EPIPE);
  assert_int_equal(rusm_tcp_send(e.me, s, "x", 1), RUSM_EPIPE);
  close(peer);
  assert_int_equal(rusm_tcp_close(e.me, s), 0);

  /* Reset by the peer while waiting: the error, then sticky. */
  rusm_sock *r = attached_connect(&e, port);
  int pr = plain_accept(lfd);
  c_reset(pr);
  assert_int_equal(rusm_tcp_recv(e.me, r, buf, sizeof buf, T_GUARD_MS),
                   RUSM_ECONNRESET);
  assert_int_equal(rusm_tcp_recv(e.me, r, buf, sizeof buf, T_GUARD_MS),
                   RUSM_ECONNRESET);
  assert_int_equal(rusm_tcp_send(e.me, r, "x", 1), RUSM_ECONNRESET);
  /* No peer any more: the system calls fail. */
  assert_int_equal(rusm_tcp_peername(e.me, r, buf, sizeof buf, NULL),
                   RUSM_ESYS);
  assert_int_equal(rusm_tcp_shutdown(e.me, r), RUSM_ESYS);

  rusm_tcp_stats st = stats(e.rt);
  assert_int_equal(st.connected, 5);
  assert_int_equal(st.open, 1);
  /* r stays open: detaching (t_stop) closes it. */
  close(lfd);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Blocking sends: stackful connections                                */
/* ------------------------------------------------------------------ */

/* Sends BIG bytes (waiting for the peer to read), then returns: exit
 * normal, socket closed. */
static void sender_fn(rusm_proc *self, rusm_sock *sock, void *arg) {
  srv *s = arg;
  t_send_u64(s->rt, s->test, T_TAG_READY, rusm_self(self));
  T_CHECK(rusm_tcp_send(self, sock, pattern(), BIG) == 0);
}

static void test_stackful_send(void **state) {
  (void)pattern();
  t_env e = start1(2);
  srv s = srv_of(&e, true, false);
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.fn = sender_fn;
  o.arg = &s;
  o.stack_size = 128 * 1024;
  uint16_t port = listen_opts(&e, &o, NULL);

  /* The whole stream arrives, then the end: the function returned. */
  int fd = c_connect(port);
  rusm_pid_t conn = next_conn(&e);
  rusm_ref ref = monitor(&e, conn);
  assert_int_equal(c_read_pattern_to_end(fd), BIG);
  assert_int_equal(await_down(&e, ref, NULL, 0), RUSM_EXIT_NORMAL);
  close(fd);

  /* Killed while waiting to send: a prefix, then the end. */
  fd = c_connect(port);
  conn = next_conn(&e);
  ref = monitor(&e, conn);
  await_parked(e.rt, conn); /* the kernel's buffers are full */
  assert_int_equal(rusm_kill(e.rt, conn), 0);
  assert_int_equal(await_down(&e, ref, NULL, 0), RUSM_EXIT_KILLED);
  size_t got = c_read_pattern_to_end(fd);
  assert_true(got > 0 && got < BIG);
  close(fd);
  expect_open(e.rt, 1);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Stackless connections: closed messages, contexts, shutdown          */
/* ------------------------------------------------------------------ */

typedef struct hello {
  rusm_proc *self;
  rusm_sock *sock;
  rusm_pid_t pid;
} hello;

static rusm_next probe_init(rusm_proc *self, rusm_sock *sock, void **state) {
  srv *s = *state;
  hello h = {self, sock, rusm_self(self)};
  t_send(s->rt, s->test, TAG_HELLO, &h, sizeof h);
  return rusm_next_wait();
}

static rusm_next probe_handle(rusm_proc *self, rusm_sock *sock, void *state,
                              rusm_msg *m) {
  srv *s = state;
  uint64_t tag = rusm_msg_tag(m);
  if (tag == RUSM_TAG_TCP_DATA) {
    /* Blocking calls are for stackful processes. */
    char buf[8];
    rusm_msg *w = NULL;
    rusm_sock *out = NULL;
    T_CHECK(rusm_tcp_recv(self, sock, buf, sizeof buf, 0) == RUSM_ECONTEXT);
    T_CHECK(rusm_tcp_wait(self, sock, NULL, 0, &w) == RUSM_ECONTEXT);
    T_CHECK(rusm_tcp_connect(self, "127.0.0.1", 1, 0, &out) == RUSM_ECONTEXT);
    T_CHECK(rusm_tcp_send(self, sock, "ok", 2) == 0);
    return rusm_next_wait();
  }
  if (tag != RUSM_TAG_TCP_CLOSED)
    return rusm_next_wait();
  int err = 1;
  T_CHECK(rusm_tcp_msg_closed(m, &err) == 0);
  if (err == 0) {
    /* The peer ended its side; this one may still send until it shuts
     * its own: after that, sending fails and the failure sticks. */
    T_CHECK(rusm_tcp_send(self, sock, "bye", 3) == 0);
    T_CHECK(rusm_tcp_shutdown(self, sock) == 0);
    T_CHECK(rusm_tcp_send(self, sock, "x", 1) == RUSM_EPIPE);
    T_CHECK(rusm_tcp_send(self, sock, "x", 1) == RUSM_EPIPE);
    T_CHECK(rusm_tcp_queued(self, sock) == 0);
    T_CHECK(rusm_tcp_close(self, sock) == 0);
    T_CHECK(rusm_tcp_close(self, sock) == RUSM_EINVAL);
    T_CHECK(rusm_tcp_shutdown(self, sock) == RUSM_EINVAL);
    T_CHECK(rusm_tcp_queued(self, sock) == RUSM_EINVAL);
    T_CHECK(rusm_tcp_sockname(self, sock, NULL, 0, NULL) == RUSM_EINVAL);
    return rusm_next_stop(rusm_reason_str("done"));
  }
  char host[64];
  T_CHECK(err == RUSM_ECONNRESET);
  T_CHECK(rusm_tcp_peername(self, sock, host, sizeof host, NULL) == RUSM_ESYS);
  T_CHECK(rusm_tcp_shutdown(self, sock) == RUSM_ESYS);
  T_CHECK(rusm_tcp_send(self, sock, "x", 1) == RUSM_ECONNRESET);
  send_result(s->rt, s->test, TAG_RESULT, err, 0, 0, 0);
  return rusm_next_stop(rusm_reason_str("reset seen"));
}

static const rusm_tcp_conn_ops probe_ops = {probe_init, probe_handle, NULL};

static hello recv_hello(t_env *e) {
  rusm_msg *m = t_recv_tag(e, TAG_HELLO);
  hello h;
  assert_int_equal(rusm_msg_len(m), sizeof h);
  memcpy(&h, rusm_msg_data(m), sizeof h);
  rusm_msg_free(m);
  return h;
}

static void test_stackless_closed_msg(void **state) {
  t_env e = start1(2);
  srv s = srv_of(&e, false, false);
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.ops = &probe_ops;
  o.arg = &s;
  o.flags = RUSM_TCP_CLOSED_MSG | RUSM_TCP_NODELAY;
  uint16_t port = listen_opts(&e, &o, NULL);

  int fd = c_connect(port);
  hello h = recv_hello(&e);
  rusm_ref ref = monitor(&e, h.pid);
  /* Another process may not use the socket; nor its owner's handle from
   * a thread that is not running it. */
  assert_int_equal(rusm_tcp_send(e.me, h.sock, "x", 1), RUSM_EINVAL);
  assert_int_equal(rusm_tcp_close(e.me, h.sock), RUSM_EINVAL);
  assert_int_equal(rusm_tcp_queued(e.me, h.sock), RUSM_EINVAL);
  assert_int_equal(rusm_tcp_send(h.self, h.sock, "x", 1), RUSM_ECONTEXT);
  c_echo(fd, "ok"); /* "ok" is also what the checks above answer */
  /* Half-close: the process gets CLOSED(0), says goodbye, shuts down. */
  shutdown(fd, SHUT_WR);
  char bye[3];
  c_recv_exact(fd, bye, 3);
  assert_memory_equal(bye, "bye", 3);
  assert_int_equal(c_wait_end(fd), 0);
  expect_down(&e, ref, RUSM_EXIT_CUSTOM, "done");
  close(fd);

  /* A reset: CLOSED carries the error; the process decides. */
  fd = c_connect(port);
  h = recv_hello(&e);
  ref = monitor(&e, h.pid);
  c_reset(fd);
  assert_int_equal(recv_result(&e, TAG_RESULT).v[0], RUSM_ECONNRESET);
  expect_down(&e, ref, RUSM_EXIT_CUSTOM, "reset seen");
  expect_open(e.rt, 1);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Send queues                                                         */
/* ------------------------------------------------------------------ */

enum { CHUNK = 64 * 1024, QMAX = 8 << 20 };

typedef struct queue_srv {
  rusm_rt *rt;
  rusm_pid_t test;
  const uint8_t *huge; /* > 4 GiB, for "huge" */
  size_t huge_len;
} queue_srv;

/* "go": sends CHUNKs of the pattern until the queue is past its limit;
 * one send meanwhile fails for lack of memory (nothing sent). "fill":
 * one big send, then stops with queued bytes. "huge": one send of more
 * than 4 GiB. */
static rusm_next queue_handle(rusm_proc *self, rusm_sock *sock, void *state,
                              rusm_msg *m) {
  queue_srv *q = state;
  uint64_t tag = rusm_msg_tag(m);
  if (tag == RUSM_TAG_TCP_DRAINED) {
    T_CHECK(rusm_tcp_queued(self, sock) == 0);
    send_result(q->rt, q->test, TAG_RESULT, -1, 0, 0, 0);
    return rusm_next_wait();
  }
  if (tag != RUSM_TAG_TCP_DATA)
    return rusm_next_wait();
  const char *cmd = (const char *)rusm_msg_data(m);
  size_t len = rusm_msg_len(m);
  if (len == 4 && memcmp(cmd, "fill", 4) == 0) {
    T_CHECK(rusm_tcp_send(self, sock, pattern(), BIG) == 0);
    T_CHECK(rusm_tcp_queued(self, sock) > 0);
    return rusm_next_stop(rusm_reason_str("enough"));
  }
  if (len == 4 && memcmp(cmd, "huge", 4) == 0) {
    int rc = rusm_tcp_send(self, sock, q->huge, q->huge_len);
    send_result(q->rt, q->test, TAG_RESULT, rc, 0, 0, 0);
    return rusm_next_stop(RUSM_REASON_NORMAL);
  }
  size_t pos = 0;
  bool nomem_seen = false;
  int rc = 0;
  for (int i = 0; pos + 2 * CHUNK <= BIG; i++) {
    if (!nomem_seen && rusm_tcp_queued(self, sock) > 0) {
      /* A queue that cannot grow: refused whole, the stream intact. */
      rusm__test_fail_one_alloc(0);
      rc = rusm_tcp_send(self, sock, pattern() + pos, CHUNK);
      rusm__test_fail_one_alloc(-1);
      T_CHECK(rc == RUSM_ENOMEM);
      nomem_seen = true;
      if (rc == 0)
        pos += CHUNK;
    }
    rc = rusm_tcp_send(self, sock, pattern() + pos, CHUNK);
    if (rc != 0)
      break;
    pos += CHUNK;
  }
  T_CHECK(rc == RUSM_ENOBUFS);
  ssize_t queued = rusm_tcp_queued(self, sock);
  T_CHECK(queued > QMAX);
  T_CHECK(rusm_tcp_send(self, sock, "x", 1) == RUSM_ENOBUFS);
  send_result(q->rt, q->test, TAG_RESULT, (int64_t)pos, queued, nomem_seen, 0);
  return rusm_next_wait();
}

static const rusm_tcp_conn_ops queue_ops = {NULL, queue_handle, NULL};

static void test_send_queue_limits(void **state) {
  (void)pattern();
  t_env e = start1(1);
  queue_srv q = {e.rt, e.pid, NULL, 0};
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.ops = &queue_ops;
  o.arg = &q;
  o.flags = RUSM_TCP_DRAINED_MSG;
  o.send_queue_max = QMAX;
  uint16_t port = listen_opts(&e, &o, NULL);
  int fd = c_connect(port);
  c_send(fd, "go", 2);
  result r = recv_result(&e, TAG_RESULT);
  size_t total = (size_t)r.v[0];
  assert_true(total > QMAX && total < BIG);
  assert_true(r.v[1] > QMAX);
  assert_int_equal(r.v[2], 1);
  /* Everything accepted arrives, in order; then the queue reports empty. */
  uint8_t *got = malloc(total);
  assert_non_null(got);
  c_recv_exact(fd, got, total);
  assert_memory_equal(got, pattern(), total);
  free(got);
  assert_int_equal(recv_result(&e, TAG_RESULT).v[0], -1);
  close(fd);
  expect_open(e.rt, 1);
  t_stop(&e);
}

/* Stopping, or being killed, with bytes queued: a last flush, then the
 * socket closes; the peer reads a prefix and the end. */
static void test_queued_bytes_on_exit(void **state) {
  (void)pattern();
  t_env e = start1(1);
  queue_srv q = {e.rt, e.pid, NULL, 0};
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.ops = &queue_ops;
  o.arg = &q;
  rusm_pid_t acc;
  uint16_t port = listen_opts(&e, &o, &acc);
  int fd = c_connect(port);
  c_send(fd, "fill", 4);
  size_t got = c_read_pattern_to_end(fd);
  assert_true(got > 0 && got < BIG);
  close(fd);
  expect_open(e.rt, 1);

  /* Huge sends: a queue holds at most 4 GiB a send. */
  q.huge_len = ((size_t)1 << 32) + ((size_t)64 << 20);
  void *huge = mmap(NULL, q.huge_len, PROT_READ,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  assert_true(huge != MAP_FAILED);
  q.huge = huge;
  fd = c_connect(port);
  c_send(fd, "huge", 4);
  assert_int_equal(recv_result(&e, TAG_RESULT).v[0], RUSM_EINVAL);
  assert_int_equal(c_wait_end(fd), 0);
  close(fd);
  munmap(huge, q.huge_len);
  expect_open(e.rt, 1);
  t_stop(&e);
}

/* A connection process killed with bytes queued. */
static rusm_next filler_handle(rusm_proc *self, rusm_sock *sock, void *state,
                               rusm_msg *m) {
  srv *s = state;
  if (rusm_msg_tag(m) == RUSM_TAG_TCP_DATA) {
    T_CHECK(rusm_tcp_send(self, sock, pattern(), BIG) == 0);
    t_send_u64(s->rt, s->test, T_TAG_READY, rusm_self(self));
  }
  return rusm_next_wait();
}

static const rusm_tcp_conn_ops filler_ops = {NULL, filler_handle, NULL};

static void test_killed_with_queue(void **state) {
  (void)pattern();
  t_env e = start1(2);
  srv s = srv_of(&e, true, false);
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.ops = &filler_ops;
  o.arg = &s;
  uint16_t port = listen_opts(&e, &o, NULL);
  int fd = c_connect(port);
  c_send(fd, "go", 2);
  rusm_pid_t conn = next_conn(&e);
  rusm_ref ref = monitor(&e, conn);
  assert_int_equal(rusm_kill(e.rt, conn), 0);
  assert_int_equal(await_down(&e, ref, NULL, 0), RUSM_EXIT_KILLED);
  size_t got = c_read_pattern_to_end(fd);
  assert_true(got > 0 && got < BIG);
  close(fd);

  /* The peer resets with bytes still queued: flushing them fails, and
   * the process ends with the error. */
  fd = c_connect(port);
  c_send(fd, "go", 2);
  conn = next_conn(&e);
  ref = monitor(&e, conn);
  uint8_t some[4096];
  c_recv_exact(fd, some, sizeof some); /* the stream has started */
  c_reset(fd);
  char why[64];
  assert_int_equal(await_down(&e, ref, why, sizeof why), RUSM_EXIT_CUSTOM);
  assert_true(strcmp(why, "tcp: connection reset by peer") == 0 ||
              strcmp(why, "tcp: broken pipe") == 0);
  expect_open(e.rt, 1);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Fairness: calls that never wait still yield                         */
/* ------------------------------------------------------------------ */

typedef struct spin_arg {
  rusm_rt *rt;
  rusm_pid_t test;
  uint16_t port;
  _Atomic bool flag;
} spin_arg;

static void spinner_fn(rusm_proc *self, void *arg) {
  spin_arg *a = arg;
  rusm_sock *s = NULL;
  T_CHECK(rusm_tcp_connect(self, "127.0.0.1", a->port, T_GUARD_MS, &s) == 0);
  t_send_u64(a->rt, a->test, T_TAG_READY, 0);
  char b;
  int64_t calls = 0;
  int64_t end = rusm_now_ns() + (int64_t)T_GUARD_MS * 1000000;
  while (!atomic_load(&a->flag) && rusm_now_ns() < end) {
    T_CHECK(rusm_tcp_recv(self, s, &b, 1, 0) == RUSM_ETIMEDOUT);
    calls++;
  }
  send_result(a->rt, a->test, TAG_RESULT, atomic_load(&a->flag), calls, 0, 0);
}

static rusm_next flag_init(rusm_proc *self, void **state) {
  spin_arg *a = *state;
  atomic_store(&a->flag, true);
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops flag_ops = {flag_init, NULL, NULL};

static void test_calls_that_never_wait_yield(void **state) {
  t_env e = start1(1); /* one scheduler: the other runs only if it yields */
  spin_arg a = {e.rt, e.pid, 0, false};
  int lfd = plain_listen(4, &a.port);
  assert_int_equal(rusm_spawn_stackful(e.rt, spinner_fn, &a, NULL, NULL), 0);
  int peer = plain_accept(lfd);
  assert_int_equal(t_recv_u64(&e, T_TAG_READY), 0);
  assert_int_equal(rusm_spawn_stackless(e.rt, &flag_ops, &a, NULL, NULL), 0);
  result r = recv_result(&e, TAG_RESULT);
  assert_int_equal(r.v[0], 1);
  assert_true(r.v[1] > 0);
  close(peer);
  close(lfd);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* rusm_tcp_wait: the socket or a message                              */
/* ------------------------------------------------------------------ */

typedef struct waiter {
  rusm_rt *rt;
  rusm_pid_t test;
  uint16_t port;
} waiter;

/* Connects, reports, waits for readiness or TAG_X; reports what came
 * first, then whether the socket is readable now and the byte. */
static void waiter_fn(rusm_proc *self, void *arg) {
  waiter *w = arg;
  rusm_sock *s = NULL;
  T_CHECK(rusm_tcp_connect(self, "127.0.0.1", w->port, T_GUARD_MS, &s) == 0);
  t_send_u64(w->rt, w->test, T_TAG_READY, rusm_self(self));
  rusm_filter f = rusm_filter_tag(TAG_X);
  rusm_msg *m = NULL;
  int rc = rusm_tcp_wait(self, s, &f, T_GUARD_MS, &m);
  int64_t tag = m ? (int64_t)rusm_msg_tag(m) : 0;
  rusm_msg_free(m);
  m = NULL;
  int rc2 = rusm_tcp_wait(self, s, &f, 0, &m);
  rusm_msg_free(m);
  char b = 0;
  T_CHECK(rusm_tcp_recv(self, s, &b, 1, T_GUARD_MS) == 1);
  send_result(w->rt, w->test, TAG_RESULT, rc, tag, rc2, b);
}

static void test_wait_socket_or_message(void **state) {
  t_env e = start1(1);
  marker mk;
  marker_start(&mk, e.rt);
  waiter w = {e.rt, e.pid, 0};
  int lfd = plain_listen(4, &w.port);

  /* Readable while waiting: woken by the poller. */
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e.rt, waiter_fn, &w, NULL, &p), 0);
  int peer = plain_accept(lfd);
  assert_true(t_recv_u64(&e, T_TAG_READY) == p);
  await_parked(e.rt, p);
  c_send(peer, "w", 1);
  result r = recv_result(&e, TAG_RESULT);
  assert_int_equal(r.v[0], 1);
  assert_int_equal(r.v[2], 1); /* still readable: the byte is unread */
  assert_int_equal(r.v[3], 'w');
  close(peer);

  /* The message and the readiness both arrive before the process runs
   * again (its scheduler is held): the message, which came first, is
   * returned, and the wake-up that came behind it is dropped. */
  assert_int_equal(rusm_spawn_stackful(e.rt, waiter_fn, &w, NULL, &p), 0);
  peer = plain_accept(lfd);
  assert_true(t_recv_u64(&e, T_TAG_READY) == p);
  await_parked(e.rt, p);
  hog h;
  hog_start(&h, &e, 0);
  t_send_u64(e.rt, p, TAG_X, 0);
  c_send(peer, "m", 1);
  marker_sync(&mk); /* the readiness is in p's mailbox, behind TAG_X */
  hog_release(&h);
  r = recv_result(&e, TAG_RESULT);
  assert_int_equal(r.v[0], 0);
  assert_int_equal(r.v[1], TAG_X);
  assert_int_equal(r.v[2], 1); /* readable: the data is there */
  assert_int_equal(r.v[3], 'm');
  close(peer);
  close(lfd);
  marker_stop(&mk);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Events racing with close and exit                                   */
/* ------------------------------------------------------------------ */

typedef struct dead_arg {
  rusm_rt *rt;
  rusm_pid_t test;
  uint16_t port;
  _Atomic bool go;
} dead_arg;

/* Arms its socket, reports, then neither receives nor waits until told
 * to return: what the poller pushes meanwhile finds it gone. */
static void dead_owner_fn(rusm_proc *self, void *arg) {
  dead_arg *a = arg;
  rusm_sock *s = NULL;
  T_CHECK(rusm_tcp_connect(self, "127.0.0.1", a->port, T_GUARD_MS, &s) == 0);
  char b;
  T_CHECK(rusm_tcp_recv(self, s, &b, 1, 1) == RUSM_ETIMEDOUT); /* armed */
  t_send_u64(a->rt, a->test, T_TAG_READY, rusm_self(self));
  int64_t end = rusm_now_ns() + (int64_t)T_GUARD_MS * 1000000;
  while (!atomic_load(&a->go) && rusm_now_ns() < end)
    sched_yield();
}

static void test_events_racing_close_and_exit(void **state) {
  t_env e = start1(1);
  marker mk;
  marker_start(&mk, e.rt);
  uint16_t port;
  int lfd = plain_listen(8, &port);
  char b;

  /* Closed with a readiness call already queued: the call finds the
   * socket's generation gone and does nothing. */
  rusm_sock *s1 = attached_connect(&e, port);
  int p1 = plain_accept(lfd);
  assert_int_equal(rusm_tcp_recv(e.me, s1, &b, 1, 1), RUSM_ETIMEDOUT);
  c_send(p1, "a", 1);
  marker_sync(&mk);
  assert_int_equal(rusm_tcp_close(e.me, s1), 0);
  rusm_msg *m = NULL;
  assert_int_equal(rusm_try_receive(e.me, NULL, &m), RUSM_ETIMEDOUT);

  /* A registration outliving its entry (a duplicate of the descriptor
   * lives on, and the number now names another file): the poll thread
   * drops its events. */
  rusm_sock *s2 = attached_connect(&e, port);
  int p2 = plain_accept(lfd);
  assert_int_equal(rusm_tcp_recv(e.me, s2, &b, 1, 1), RUSM_ETIMEDOUT);
  int f2 = sock_fd(s2);
  int keep = dup(f2);
  int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
  assert_true(keep >= 0 && nul >= 0);
  assert_int_equal(dup2(nul, f2), f2);
  assert_int_equal(rusm_tcp_close(e.me, s2), 0); /* closes f2 (/dev/null) */
  c_send(p2, "b", 1);
  marker_sync(&mk);
  assert_int_equal(rusm_try_receive(e.me, NULL, &m), RUSM_ETIMEDOUT);
  close(keep);
  close(nul);

  /* The owner exits with a readiness call queued: it runs as dead. */
  dead_arg a = {e.rt, e.pid, port, false};
  rusm_pid_t p;
  assert_int_equal(rusm_spawn_stackful(e.rt, dead_owner_fn, &a, NULL, &p), 0);
  rusm_ref ref = monitor(&e, p);
  int p3 = plain_accept(lfd);
  assert_true(t_recv_u64(&e, T_TAG_READY) == p);
  c_send(p3, "c", 1);
  marker_sync(&mk);
  atomic_store(&a.go, true);
  assert_int_equal(await_down(&e, ref, NULL, 0), RUSM_EXIT_NORMAL);
  assert_true(c_wait_end(p3) <= 0); /* "c" was unread: maybe a reset */
  expect_open(e.rt, 1);             /* the marker's */
  close(p1);
  close(p2);
  close(p3);
  close(lfd);
  marker_stop(&mk);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* The poller's own contract (poll.h)                                  */
/* ------------------------------------------------------------------ */

typedef struct probe_ent {
  rusm_rt *rt;
  int calls;
  uint32_t armed_seen;
} probe_ent;

static void probe_ready(rusm_proc *p, rusm__pollent *e, uint32_t ev) {
  probe_ent *c = e->data;
  c->calls++;
  c->armed_seen = e->armed;
  T_CHECK(rusm_send(c->rt, rusm_self(p), TAG_RESULT, &ev, sizeof ev) == 0);
}

static void probe_drop(rusm__pollent *e) { rusm__pollent_close(e); }

static const rusm__pollent_ops probe_ent_ops = {probe_ready, probe_drop};

static void test_poller_contract(void **state) {
  t_env e = start1(1);
  rusm__poller *pl = NULL, *again = NULL;
  assert_int_equal(rusm__poller_get(NULL, &pl), RUSM_EINVAL);
  assert_int_equal(rusm__poller_get(e.rt, NULL), RUSM_EINVAL);
  assert_null(rusm__poller_find(e.rt));
  assert_int_equal(rusm__poller_get(e.rt, &pl), 0);
  assert_int_equal(rusm__poller_get(e.rt, &again), 0);
  assert_ptr_equal(pl, again);
  assert_null(rusm__poller_buf(pl)); /* not a scheduler thread */

  probe_ent pc = {e.rt, 0, 99};
  rusm__pollent *ent = NULL, *dup_ent = NULL;
  assert_int_equal(rusm__pollent_open(pl, -1, &probe_ent_ops, &pc, &ent),
                   RUSM_ELIMIT);
  assert_int_equal(rusm__pollent_open(pl, 1 << 24, &probe_ent_ops, &pc, &ent),
                   RUSM_ELIMIT);
  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  assert_true(efd >= 0);
  assert_int_equal(rusm__pollent_open(pl, efd, &probe_ent_ops, &pc, &ent), 0);
  assert_int_equal(rusm__pollent_open(pl, efd, &probe_ent_ops, &pc, &dup_ent),
                   RUSM_EBUSY);

  /* Owned by this thread, armed (twice: a no-op), made ready: the ready
   * callback runs here, in a receive, disarmed. */
  rusm__pollent_own(ent, e.pid);
  assert_int_equal(rusm__pollent_arm(ent, RUSM__EV_IN), 0);
  assert_int_equal(rusm__pollent_arm(ent, RUSM__EV_IN | 64u), 0);
  uint64_t one = 1;
  assert_int_equal(write(efd, &one, sizeof one), (ssize_t)sizeof one);
  rusm_msg *m = t_recv_tag(&e, TAG_RESULT);
  uint32_t ev = 0;
  memcpy(&ev, rusm_msg_data(m), sizeof ev);
  rusm_msg_free(m);
  assert_true(ev & RUSM__EV_IN);
  assert_int_equal(pc.calls, 1);
  assert_int_equal(pc.armed_seen, 0);
  rusm__pollent_close(ent); /* closes efd */

  /* Armed before it has an owner (against the contract): its events go
   * nowhere. */
  marker mk;
  marker_start(&mk, e.rt);
  int efd2 = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC); /* readable */
  assert_true(efd2 >= 0);
  rusm__pollent *ent2 = NULL;
  assert_int_equal(rusm__pollent_open(pl, efd2, &probe_ent_ops, &pc, &ent2), 0);
  assert_int_equal(rusm__pollent_arm(ent2, RUSM__EV_IN), 0);
  marker_sync(&mk);
  assert_int_equal(rusm_try_receive(e.me, NULL, &m), RUSM_ETIMEDOUT);
  assert_int_equal(pc.calls, 1);
  rusm__pollent_close(ent2);
  marker_stop(&mk);

  /* Out of memory for a new chunk of the table (a descriptor number no
   * entry ever had): RUSM_ENOMEM, the descriptor left to the caller. */
  struct rlimit lim;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &lim), 0);
  int base = eventfd(0, EFD_CLOEXEC);
  assert_true(base >= 0);
  bool nomem = false;
  for (int c = (int)(lim.rlim_cur / 256) - 1; c > 8 && !nomem; c--) {
    int fd = c * 256 + 17;
    if ((rlim_t)fd >= lim.rlim_cur)
      continue;
    assert_int_equal(dup2(base, fd), fd);
    rusm__test_fail_one_alloc(0);
    int rc = rusm__pollent_open(pl, fd, &probe_ent_ops, &pc, &ent);
    rusm__test_fail_one_alloc(-1);
    if (rc == RUSM_ENOMEM) {
      nomem = true;
      assert_true(fcntl(fd, F_GETFD) >= 0); /* still open */
      close(fd);
    } else {
      assert_int_equal(rc, 0); /* the chunk existed */
      rusm__pollent_close(ent);
    }
  }
  assert_true(nomem);
  close(base);
  rusm_tcp_stats st = stats(e.rt);
  assert_int_equal(st.open, 0);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* A descriptor closed behind the runtime's back                       */
/* ------------------------------------------------------------------ */

static bool spawn_failed(void *arg) { return stats(arg).spawn_failures > 0; }

static void test_descriptor_closed_behind_back(void **state) {
  t_env e = start1(1);
  srv s = srv_of(&e, false, false);
  uint16_t echo_port = listen_echo(&e, &s, false, NULL);
  uint16_t port;
  int lfd = plain_listen(4, &port);
  int client = c_socket(); /* made now: it must not take the number */
  rusm_sock *sk = attached_connect(&e, port);
  int peer = plain_accept(lfd);
  int f = sock_fd(sk);
  /* Fill every hole below f, so that the next descriptor is f. */
  int fill[64], nfill = 0;
  for (int fd = lowest_free_fd(); fd < f; fd = lowest_free_fd()) {
    assert_true(nfill < 64);
    fill[nfill++] = open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  close(f); /* the entry still holds the number */
  uint64_t opened = stats(e.rt).opened;

  /* Each new socket gets number f: its entry is taken (RUSM_EBUSY), and
   * the new descriptor is closed again. */
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.ops = &echo_ops;
  o.arg = &s;
  assert_int_equal(rusm_tcp_listen(e.rt, "127.0.0.1", 0, &o, NULL, NULL),
                   RUSM_EBUSY);
  assert_int_equal(lowest_free_fd(), f);
  rusm_sock *other = NULL;
  assert_int_equal(
      rusm_tcp_connect(e.me, "127.0.0.1", echo_port, T_GUARD_MS, &other),
      RUSM_EBUSY);
  assert_int_equal(lowest_free_fd(), f);
  /* Accepted on f: closed at once, counted as a spawn failure. */
  c_connect_fd(client, echo_port);
  assert_int_equal(c_wait_end(client), 0);
  /* counted just after the close the client saw */
  assert_true(t_poll_until(spawn_failed, e.rt));
  rusm_tcp_stats st = stats(e.rt);
  assert_int_equal(st.spawn_failures, 1);
  assert_int_equal(st.accepted, 1);
  assert_int_equal(st.opened, opened);
  assert_int_equal(lowest_free_fd(), f);
  /* Closing the stale handle is harmless (f is nobody's now). */
  assert_int_equal(rusm_tcp_close(e.me, sk), 0);
  for (int i = 0; i < nfill; i++)
    close(fill[i]);
  close(client);
  close(peer);
  close(lfd);
  expect_open(e.rt, 1);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* The epoll descriptor replaced behind the runtime's back             */
/* ------------------------------------------------------------------ */

/* Whether the thread named "rusm-poll" is blocked in epoll_wait (a state
 * no event announces: read from /proc). */
static bool poll_thread_blocked(void *arg) {
  (void)arg;
  DIR *d = opendir("/proc/self/task");
  if (!d)
    return false;
  bool blocked = false;
  struct dirent *de;
  while (!blocked && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.')
      continue;
    char path[300], buf[128];
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
    FILE *f = fopen(path, "r");
    if (!f)
      continue;
    bool ours = fgets(buf, sizeof buf, f) && strcmp(buf, "rusm-poll\n") == 0;
    fclose(f);
    if (!ours)
      continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/syscall", de->d_name);
    f = fopen(path, "r");
    if (!f)
      continue;
    long nr = -1;
    if (fscanf(f, "%ld", &nr) == 1)
      blocked = nr == SYS_epoll_wait || nr == SYS_epoll_pwait;
    fclose(f);
  }
  closedir(d);
  return blocked;
}

static void test_epoll_descriptor_lost(void **state) {
  (void)pattern();
  t_env e = start1(1);
  srv s = srv_of(&e, true, true);
  rusm_pid_t acc;
  uint16_t port = listen_echo(&e, &s, false, &acc);
  rusm_sock *sk = attached_connect(&e, port);
  rusm_pid_t c1 = next_conn(&e);
  uint16_t pport;
  int plfd = plain_listen(4, &pport);
  rusm_sock *slow = attached_connect(&e, pport); /* its peer never reads */
  int speer = plain_accept(plfd);
  rusm__poller *pl = rusm__poller_find(e.rt);
  assert_non_null(pl);
  rusm_ref racc = monitor(&e, acc);

  /* The poll thread waits on the old instance until one last event; its
   * next epoll_wait() fails and it ends. Arming fails from then on. */
  int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
  assert_true(nul >= 0);
  /* c1 and the acceptor have armed (they arm before parking); nothing
   * armed can fire now, so once the poll thread blocks, it stays. */
  await_parked(e.rt, c1);
  await_parked(e.rt, acc);
  assert_true(t_poll_until(poll_thread_blocked, NULL));
  assert_int_equal(dup2(nul, pl->epfd), pl->epfd);
  int fd = c_connect(port);
  rusm_pid_t c2 = next_conn(&e);
  t_note n = t_wait_note(&e, c2);
  assert_int_equal(n.code, RUSM_EXIT_CUSTOM);
  assert_string_equal(n.detail, "tcp: system call failed");
  assert_int_equal(c_wait_end(fd), 0);
  close(fd);
  expect_down(&e, racc, RUSM_EXIT_CUSTOM, "tcp: system call failed");

  /* Blocking calls fail instead of waiting forever. */
  char b;
  assert_int_equal(rusm_tcp_recv(e.me, sk, &b, 1, T_GUARD_MS), RUSM_ESYS);
  rusm_filter fn = rusm_filter_tag(TAG_NEVER);
  rusm_msg *m = NULL;
  assert_int_equal(rusm_tcp_wait(e.me, sk, &fn, T_GUARD_MS, &m), RUSM_ESYS);
  assert_null(m);
  assert_int_equal(rusm_tcp_send(e.me, slow, pattern(), BIG), RUSM_ESYS);
  rusm_sock *late = NULL;
  assert_int_equal(
      rusm_tcp_connect(e.me, "127.0.0.1", pport, T_GUARD_MS, &late), RUSM_ESYS);

  /* A new listener's acceptor cannot arm its socket: it stops. */
  hog h;
  hog_start(&h, &e, 0); /* holds the acceptor until it is monitored */
  rusm_pid_t acc2;
  uint16_t port2;
  assert_int_equal(rusm_tcp_listen(e.rt, "127.0.0.1", 0,
                                   &(rusm_tcp_listen_opts){.ops = &echo_ops},
                                   &acc2, &port2),
                   0);
  rusm_ref r2 = monitor(&e, acc2);
  hog_release(&h);
  expect_down(&e, r2, RUSM_EXIT_CUSTOM, "tcp: system call failed");
  assert_true(rusm_is_alive(e.rt, c1));
  close(nul);
  close(speer);
  close(plfd);
  t_stop(&e); /* joins the ended thread, closes what is left */
}

/* ------------------------------------------------------------------ */
/* The program stopped and continued (job control)                     */
/* ------------------------------------------------------------------ */

/* In a child: whether process `path` (/proc/<pid>/stat) is stopped. Only
 * async-signal-safe calls (the parent has threads). */
static bool proc_stopped(const char *path) {
  char buf[512];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return false;
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  return p && p[1] == ' ' && p[2] == 'T';
}

/* Ctrl-Z then fg: every thread's blocking call returns; epoll_wait() fails
 * with EINTR even though the poll thread blocks every signal (signal(7)),
 * and the poll thread must go on. */
static void test_stop_and_continue(void **state) {
  t_env e = start1(1);
  srv s = srv_of(&e, false, false);
  uint16_t port = listen_echo(&e, &s, false, NULL);
  int fd = c_connect(port);
  c_echo(fd, "before");
  pid_t me = getpid();
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)me);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    kill(me, SIGSTOP);
    /* Stopped is a state, not an event; a generous guard. */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do
      clock_gettime(CLOCK_MONOTONIC, &t);
    while (!proc_stopped(path) && t.tv_sec - t0.tv_sec < T_GUARD_MS / 1000);
    kill(me, SIGCONT);
    _exit(0);
  }
  int status = 0;
  assert_int_equal(waitpid(child, &status, 0), child);
  assert_true(WIFEXITED(status));
  /* The poll thread still routes events. */
  c_echo(fd, "after");
  int fd2 = c_connect(port);
  c_echo(fd2, "new");
  close(fd2);
  close(fd);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Attached threads killed in blocking calls                           */
/* ------------------------------------------------------------------ */

enum { IN_RECV, IN_CONNECT, IN_WAIT };

typedef struct victim {
  rusm_rt *rt;
  rusm_pid_t test;
  uint16_t port;
  int mode;
  int rc;
} victim;

static void *victim_main(void *arg) {
  victim *v = arg;
  rusm_proc *me = NULL;
  v->rc = rusm_attach(v->rt, &me);
  if (v->rc != 0)
    return NULL;
  rusm_sock *s = NULL;
  if (v->mode != IN_CONNECT) {
    v->rc = rusm_tcp_connect(me, "127.0.0.1", v->port, T_GUARD_MS, &s);
    T_CHECK(v->rc == 0);
  }
  t_send_u64(v->rt, v->test, TAG_HELLO, rusm_self(me));
  char b;
  rusm_filter fn = rusm_filter_tag(TAG_NEVER);
  rusm_msg *m = NULL;
  if (v->mode == IN_RECV)
    v->rc = (int)rusm_tcp_recv(me, s, &b, 1, 3 * T_GUARD_MS);
  else if (v->mode == IN_CONNECT)
    v->rc = rusm_tcp_connect(me, "127.0.0.1", v->port, 3 * T_GUARD_MS, &s);
  else
    v->rc = rusm_tcp_wait(me, s, &fn, 3 * T_GUARD_MS, &m);
  /* RUSM_ESHUTDOWN: the process is gone, with its sockets; no detach. */
  return NULL;
}

static void test_attached_killed_while_blocked(void **state) {
  t_env e = start1(1);
  uint16_t port;
  int lfd = plain_listen(4, &port);
  full_listener f;
  full_listener_open(&f);
  for (int mode = IN_RECV; mode <= IN_WAIT; mode++) {
    victim v = {e.rt, e.pid, mode == IN_CONNECT ? f.port : port, mode, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, victim_main, &v), 0);
    int peer = mode == IN_CONNECT ? -1 : plain_accept(lfd);
    rusm_pid_t pid = (rusm_pid_t)t_recv_u64(&e, TAG_HELLO);
    rusm_ref ref = monitor(&e, pid);
    assert_int_equal(rusm_kill(e.rt, pid), 0);
    assert_int_equal(await_down(&e, ref, NULL, 0), RUSM_EXIT_KILLED);
    pthread_join(th, NULL);
    assert_int_equal(v.rc, RUSM_ESHUTDOWN);
    if (peer >= 0) {
      assert_int_equal(c_wait_end(peer), 0);
      close(peer);
    }
    expect_open(e.rt, 0);
  }
  full_listener_close(&f);
  close(lfd);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Out of descriptors                                                  */
/* ------------------------------------------------------------------ */

static bool paused(void *arg) { return stats(arg).accept_pauses > 0; }

typedef struct accepted_arg {
  rusm_rt *rt;
  uint64_t want;
} accepted_arg;

static bool accepted_reached(void *arg) {
  accepted_arg *a = arg;
  return stats(a->rt).accepted >= a->want;
}

static void test_out_of_descriptors(void **state) {
  t_env e = start1(2);
  srv s = srv_of(&e, false, false);
  rusm_pid_t acc;
  uint16_t port = listen_echo(&e, &s, false, &acc);
  struct rlimit old;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);

  /* No descriptor left: new sockets fail with RUSM_EMFILE. */
  struct rlimit none = {(rlim_t)lowest_free_fd(), old.rlim_max};
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &none), 0);
  int rc1 =
      rusm_tcp_listen(e.rt, "127.0.0.1", 0,
                      &(rusm_tcp_listen_opts){.ops = &echo_ops}, NULL, NULL);
  rusm_sock *sk = NULL;
  int rc2 = rusm_tcp_connect(e.me, "127.0.0.1", port, T_GUARD_MS, &sk);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
  assert_int_equal(rc1, RUSM_EMFILE);
  assert_int_equal(rc2, RUSM_EMFILE);

  /* Room for ROOM more: the acceptor serves ROOM, pauses on EMFILE, and
   * goes on once descriptors free up (the limit stays low). */
  enum { N = 8, ROOM = 4 };
  int fds[N];
  for (int i = 0; i < N; i++)
    fds[i] = c_socket();
  int free_seen = 0, lim = 0;
  for (; free_seen < ROOM; lim++)
    if (fcntl(lim, F_GETFD) < 0)
      free_seen++;
  struct rlimit low = {(rlim_t)lim, old.rlim_max};
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
  for (int i = 0; i < N; i++) {
    c_connect_fd(fds[i], port);
    c_send(fds[i], "hi", 2);
  }
  bool ok = t_poll_until(paused, e.rt);
  /* Messages to a paused acceptor are ignored; it stays paused. */
  int rc = rusm_send(e.rt, acc, TAG_NEVER, NULL, 0);
  for (int i = 0; ok && i < ROOM; i++) {
    char back[2];
    c_recv_exact(fds[i], back, 2);
  }
  accepted_arg aa = {e.rt, ROOM};
  ok = ok && t_poll_until(accepted_reached, &aa);
  uint64_t accepted_paused = stats(e.rt).accepted;
  for (int i = 0; i < ROOM; i++)
    close(fds[i]);
  for (int i = ROOM; ok && i < N; i++) {
    char back[2];
    c_recv_exact(fds[i], back, 2);
    assert_memory_equal(back, "hi", 2);
  }
  int rc3 = setrlimit(RLIMIT_NOFILE, &old);
  assert_true(ok);
  assert_int_equal(rc, 0);
  assert_int_equal(rc3, 0);
  assert_int_equal(accepted_paused, ROOM);
  rusm_tcp_stats st = stats(e.rt);
  assert_int_equal(st.accepted, N);
  assert_true(st.accept_pauses >= 1);
  assert_true(st.accept_errors >= st.accept_pauses);
  assert_true(rusm_is_alive(e.rt, acc));
  /* Not paused: a message is ignored just the same. */
  assert_int_equal(rusm_send(e.rt, acc, TAG_NEVER, NULL, 0), 0);
  int fd = c_connect(port);
  c_echo(fd, "after");
  close(fd);
  for (int i = ROOM; i < N; i++)
    close(fds[i]);
  expect_open(e.rt, 1);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* Out of memory                                                       */
/* ------------------------------------------------------------------ */

/* The poller cannot be made: no memory, no descriptors, no thread. */
static void test_poller_creation_fails(void **state) {
  int fds0 = count_fds();
  t_env e = start1(1);
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.ops = &echo_ops;
  uint16_t port = 0;
  /* (Its buffer table failing instead: see the regression test below.) */
  rusm__test_fail_one_alloc(0);
  int rc = rusm_tcp_listen(e.rt, "127.0.0.1", 0, &o, NULL, &port);
  rusm__test_fail_one_alloc(-1);
  assert_int_equal(rc, RUSM_ENOMEM);
  rusm_sock *sk = NULL;
  rusm__test_fail_one_alloc(0);
  rc = rusm_tcp_connect(e.me, "127.0.0.1", 1, T_GUARD_MS, &sk);
  rusm__test_fail_one_alloc(-1);
  assert_int_equal(rc, RUSM_ENOMEM);

  struct rlimit old;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
  struct rlimit none = {(rlim_t)lowest_free_fd(), old.rlim_max};
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &none), 0);
  rc = rusm_tcp_listen(e.rt, "127.0.0.1", 0, &o, NULL, &port);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
  assert_int_equal(rc, RUSM_ESYS);

  /* A thread cannot be made (as at the system's thread limit): new
   * threads get a stack larger than the address space. */
  pthread_attr_t dflt, huge;
  assert_int_equal(pthread_getattr_default_np(&dflt), 0);
  assert_int_equal(pthread_attr_init(&huge), 0);
  assert_int_equal(pthread_attr_setstacksize(&huge, (size_t)1 << 46), 0);
  assert_int_equal(pthread_setattr_default_np(&huge), 0);
  rc = rusm_tcp_listen(e.rt, "127.0.0.1", 0, &o, NULL, &port);
  assert_int_equal(pthread_setattr_default_np(&dflt), 0);
  pthread_attr_destroy(&huge);
  pthread_attr_destroy(&dflt);
  assert_int_equal(rc, RUSM_ESYS);

  assert_null(rusm__poller_find(e.rt));
  assert_int_equal(count_fds(), fds0);
  /* Then it works. */
  rusm_pid_t acc;
  assert_int_equal(rusm_tcp_listen(e.rt, "127.0.0.1", 0, &o, &acc, &port), 0);
  int fd = c_connect(port);
  c_echo(fd, "works");
  close(fd);
  t_stop(&e);
  assert_int_equal(count_fds(), fds0);
}

/* Each allocation of rusm_tcp_listen fails in turn; then the process
 * limit. Nothing is left open. */
static void test_listen_out_of_memory(void **state) {
  t_env e = start_opts(1, 6);
  srv s = srv_of(&e, false, false);
  uint16_t port = listen_echo(&e, &s, false, NULL); /* makes the poller */
  int fds0 = count_fds();
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.ops = &echo_ops;
  rusm_pid_t acc = RUSM_PID_NONE;
  int k = 0, rc = 0;
  for (; k < 16; k++) {
    rusm__test_fail_one_alloc(k);
    rc = rusm_tcp_listen(e.rt, "127.0.0.1", 0, &o, &acc, &port);
    rusm__test_fail_one_alloc(-1);
    if (rc == 0)
      break;
    assert_int_equal(rc, RUSM_ENOMEM);
    assert_int_equal(count_fds(), fds0);
  }
  assert_int_equal(rc, 0);
  assert_true(k >= 2); /* the socket state and the listener's */
  rusm_ref ref = monitor(&e, acc);
  assert_int_equal(rusm_exit(e.rt, acc, RUSM_REASON_SHUTDOWN), 0);
  assert_int_equal(await_down(&e, ref, NULL, 0), RUSM_EXIT_SHUTDOWN);
  expect_open(e.rt, 1);

  /* No process left for the acceptor. */
  enum { WMAX = 64 };
  rusm_pid_t w[WMAX];
  int nw = 0;
  while (nw < WMAX &&
         rusm_spawn_stackless(e.rt, &t_waiter_ops, (void *)(uintptr_t)e.pid,
                              NULL, &w[nw]) == 0)
    nw++;
  assert_true(nw < WMAX);
  assert_int_equal(rusm_tcp_listen(e.rt, "127.0.0.1", 0, &o, NULL, NULL),
                   RUSM_ELIMIT);
  assert_int_equal(count_fds(), fds0);
  expect_open(e.rt, 1);
  for (int i = 0; i < nw; i++) {
    t_send_stop(e.rt, w[i], RUSM_EXIT_NORMAL, NULL);
    (void)t_wait_note(&e, w[i]);
  }
  t_stop(&e);
}

/* A connection attempt per allocation failing in turn; each ends with
 * an echo or a closed connection, never a hang. */
static void accept_under_oom(bool stackful) {
  t_env e = start1(1);
  srv s = srv_of(&e, false, !stackful);
  uint16_t port = listen_echo(&e, &s, stackful, NULL);
  int fd = c_connect(port); /* warm-up: buffers and chunks made */
  c_echo(fd, "warm");
  close(fd);
  if (!stackful)
    assert_int_equal(t_wait_note(&e, RUSM_PID_NONE).code, RUSM_EXIT_NORMAL);
  expect_open(e.rt, 1);
  int echoed = 0, closed = 0;
  for (int k = 0; k < 40; k++) {
    rusm_tcp_stats before = stats(e.rt);
    fd = c_socket();
    rusm__test_fail_one_alloc(k);
    c_connect_fd(fd, port);
    c_send(fd, "ping", 4);
    char back[4];
    size_t n = c_recv_upto(fd, back, 4);
    rusm__test_fail_one_alloc(-1);
    if (n == 0) {
      /* The acceptor counts a spawn failure just after the close the
       * client saw; it takes the next connection only after that. */
      int probe = c_connect(port);
      c_echo(probe, "probe");
      close(probe);
    }
    rusm_tcp_stats after = stats(e.rt);
    assert_int_equal(after.accepted, before.accepted + (n == 0 ? 2 : 1));
    bool spawn_failed = after.spawn_failures > before.spawn_failures;
    if (n == 4) {
      assert_memory_equal(back, "ping", 4);
      assert_false(spawn_failed);
      echoed++;
    } else {
      assert_int_equal(n, 0);
      closed++;
    }
    close(fd);
    if (!stackful) {
      /* notes in order: the failed connection's (sent before its socket
       * closed), then the one that closes now */
      if (n == 0 && !spawn_failed)
        assert_string_equal(t_wait_note(&e, RUSM_PID_NONE).detail,
                            "tcp: out of memory");
      assert_int_equal(t_wait_note(&e, RUSM_PID_NONE).code, RUSM_EXIT_NORMAL);
    }
    expect_open(e.rt, 1);
    /* Stackful: the first failure inside the process's start (its socket
     * set) ends the sweep; the next allocation is its start note, whose
     * loss leaves it waiting until killed (documented). */
    if (stackful && n == 0 && !spawn_failed)
      break;
  }
  assert_true(echoed > 0 && closed > 0);
  fd = c_connect(port);
  c_echo(fd, "still fine");
  close(fd);
  t_stop(&e);
}

static void test_accept_out_of_memory(void **state) { accept_under_oom(false); }
static void test_accept_out_of_memory_stackful(void **state) {
  accept_under_oom(true);
}

/* The scheduler's read buffer cannot be made: the connection ends with
 * reason "tcp: out of memory". */
static void test_read_buffer_out_of_memory(void **state) {
  t_env e = start1(1);
  srv s = srv_of(&e, true, true);
  uint16_t port = listen_echo(&e, &s, false, NULL);
  int fd = c_connect(port);
  rusm_pid_t conn = next_conn(&e);
  /* allocation 0: the poller's call to the process; 1: the buffer */
  rusm__test_fail_one_alloc(1);
  c_send(fd, "x", 1);
  ssize_t end = c_wait_end(fd);
  rusm__test_fail_one_alloc(-1);
  assert_true(end <= 0); /* "x" was never read: maybe a reset */
  t_note n = t_wait_note(&e, conn);
  assert_int_equal(n.code, RUSM_EXIT_CUSTOM);
  assert_string_equal(n.detail, "tcp: out of memory");
  close(fd);
  /* The next connection gets its buffer. */
  fd = c_connect(port);
  (void)next_conn(&e);
  c_echo(fd, "again");
  close(fd);
  t_stop(&e);
}

typedef struct oom_client {
  rusm_rt *rt;
  rusm_pid_t test;
  uint16_t port;
  int k;
} oom_client;

static void oom_connect_fn(rusm_proc *self, void *arg) {
  oom_client *c = arg;
  rusm_sock *s = NULL;
  rusm__test_fail_one_alloc(c->k);
  int rc = rusm_tcp_connect(self, "127.0.0.1", c->port, T_GUARD_MS, &s);
  rusm__test_fail_one_alloc(-1);
  int sent = rc == 0 ? rusm_tcp_send(self, s, "oom!", 4) : -1;
  send_result(c->rt, c->test, TAG_RESULT, rc, sent, 0, 0);
  /* returning closes the socket */
}

static void test_connect_out_of_memory(void **state) {
  t_env e = start1(1);
  uint16_t port;
  int lfd = plain_listen(16, &port); /* the other end allocates nothing */
  rusm__poller *pl;
  assert_int_equal(rusm__poller_get(e.rt, &pl), 0); /* made beforehand */
  int nomem = 0;
  for (int k = 0; k < 12; k++) {
    oom_client c = {e.rt, e.pid, port, k};
    rusm_pid_t p;
    assert_int_equal(rusm_spawn_stackful(e.rt, oom_connect_fn, &c, NULL, &p),
                     0);
    /* (no monitor: its table would be one more allocation to fail) */
    result r = recv_result(&e, TAG_RESULT);
    t_wait_idle(&e);
    if (r.v[0] == 0) {
      assert_int_equal(r.v[1], 0);
      int peer = plain_accept(lfd);
      char b[4];
      c_recv_exact(peer, b, 4);
      assert_memory_equal(b, "oom!", 4);
      assert_int_equal(c_wait_end(peer), 0);
      close(peer);
    } else {
      assert_int_equal(r.v[0], RUSM_ENOMEM);
      nomem++;
    }
    expect_open(e.rt, 0);
  }
  assert_true(nomem >= 3); /* state, socket set, exit hook */
  assert_int_equal(stats(e.rt).connected, 12 - nomem);
  close(lfd);
  t_stop(&e);
}

/* ------------------------------------------------------------------ */
/* A runtime closing                                                   */
/* ------------------------------------------------------------------ */

static _Atomic int closing_rc[2];

static void closer_terminate(rusm_proc *self, void *state,
                             const rusm_reason *why) {
  int i = (int)(intptr_t)state;
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.ops = &echo_ops;
  atomic_store(&closing_rc[i], rusm_tcp_listen(rusm_proc_rt(self), "127.0.0.1",
                                               0, &o, NULL, NULL));
}

static rusm_next closer_init(rusm_proc *self, void **state) {
  return rusm_next_wait();
}

static const rusm_stackless_ops closer_ops = {closer_init, NULL,
                                              closer_terminate};

static void test_listen_while_closing(void **state) {
  int fds0 = count_fds();
  for (int i = 0; i < 2; i++) {
    t_env e = start1(1);
    if (i == 1) { /* with a poller already there */
      rusm__poller *pl;
      assert_int_equal(rusm__poller_get(e.rt, &pl), 0);
    }
    atomic_store(&closing_rc[i], 1);
    assert_int_equal(rusm_spawn_stackless(e.rt, &closer_ops,
                                          (void *)(intptr_t)i, NULL, NULL),
                     0);
    t_stop(&e); /* the closer's terminate listens during destroy */
    assert_int_equal(atomic_load(&closing_rc[i]), RUSM_ESHUTDOWN);
  }
  assert_int_equal(count_fds(), fds0);
}

/* ------------------------------------------------------------------ */
/* Runtime destroy with sockets in every state                         */
/* ------------------------------------------------------------------ */

typedef struct stuck_conn {
  rusm_rt *rt;
  rusm_pid_t test;
  uint16_t port;
} stuck_conn;

static void stuck_connect_fn(rusm_proc *self, void *arg) {
  stuck_conn *c = arg;
  t_send_u64(c->rt, c->test, T_TAG_READY, rusm_self(self));
  rusm_sock *s = NULL;
  rusm_tcp_connect(self, "127.0.0.1", c->port, 3 * T_GUARD_MS, &s);
  T_CHECK(!"connect returned");
}

typedef struct idle_attached {
  rusm_rt *rt;
  uint16_t port;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stage;
} idle_attached;

static void *idle_main(void *arg) {
  idle_attached *l = arg;
  rusm_proc *me = NULL;
  rusm_sock *s = NULL;
  T_CHECK(rusm_attach(l->rt, &me) == 0);
  T_CHECK(rusm_tcp_connect(me, "127.0.0.1", l->port, T_GUARD_MS, &s) == 0);
  pthread_mutex_lock(&l->mu);
  l->stage = 1;
  pthread_cond_broadcast(&l->cv);
  while (l->stage < 2)
    pthread_cond_wait(&l->cv, &l->mu);
  pthread_mutex_unlock(&l->mu);
  return NULL; /* the runtime is gone: never touch me again */
}

static void test_destroy_every_state(void **state) {
  (void)pattern();
  int fds0 = count_fds();
  t_env e = start1(2);
  srv s = srv_of(&e, true, false);
  uint16_t echo = listen_echo(&e, &s, false, NULL);
  uint16_t echo_sf = listen_echo(&e, &s, true, NULL);
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.fn = sender_fn;
  o.arg = &s;
  uint16_t sender = listen_opts(&e, &o, NULL);
  rusm_tcp_listen_opts_init(&o);
  o.ops = &filler_ops;
  o.arg = &s;
  uint16_t filler = listen_opts(&e, &o, NULL);
  full_listener f;
  full_listener_open(&f);

  int c[4];
  c[0] = c_connect(echo); /* stackless, idle */
  (void)next_conn(&e);
  c_echo(c[0], "idle");
  c[1] = c_connect(echo_sf); /* stackful, waiting in recv */
  rusm_pid_t p1 = next_conn(&e);
  c_echo(c[1], "idle");
  await_parked(e.rt, p1);
  c[2] = c_connect(sender); /* stackful, waiting to send */
  await_parked(e.rt, next_conn(&e));
  c[3] = c_connect(filler); /* stackless, bytes queued */
  c_send(c[3], "go", 2);
  (void)next_conn(&e);
  stuck_conn sc = {e.rt, e.pid, f.port}; /* waiting in connect */
  assert_int_equal(rusm_spawn_stackful(e.rt, stuck_connect_fn, &sc, NULL, NULL),
                   0);
  await_parked(e.rt, (rusm_pid_t)t_recv_u64(&e, T_TAG_READY));
  rusm_sock *mine = attached_connect(&e, echo); /* this thread's */
  (void)next_conn(&e);
  idle_attached l = {.rt = e.rt, .port = echo};
  pthread_mutex_init(&l.mu, NULL);
  pthread_cond_init(&l.cv, NULL);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, idle_main, &l), 0);
  pthread_mutex_lock(&l.mu);
  while (l.stage < 1)
    pthread_cond_wait(&l.cv, &l.mu);
  pthread_mutex_unlock(&l.mu);
  (void)next_conn(&e);
  (void)mine;

  t_stop(&e);
  pthread_mutex_lock(&l.mu);
  l.stage = 2;
  pthread_cond_broadcast(&l.cv);
  pthread_mutex_unlock(&l.mu);
  pthread_join(th, NULL);
  pthread_cond_destroy(&l.cv);
  pthread_mutex_destroy(&l.mu);
  for (int i = 0; i < 4; i++) {
    if (i >= 2)
      (void)c_read_pattern_to_end(c[i]);
    else
      assert_int_equal(c_wait_end(c[i]), 0);
    close(c[i]);
  }
  full_listener_close(&f);
  assert_int_equal(count_fds(), fds0);
}

/* ------------------------------------------------------------------ */
/* Regression: a failed send hid data that was readable                   */
/* ------------------------------------------------------------------ */

/*
 * Regression (a core bug, fixed). The server answers
 * and closes (HTTP/1.0 style); the client had one more request on the way,
 * so its next send fails with RUSM_EPIPE. The answer is still in the
 * kernel's receive queue (a plain recv(2) returns it, then 0), but
 * rusm_tcp_recv returns the send's sticky error instead (tcp.c:
 * rusm_tcp_recv returns ts->err once ts->failed, and send_block sets
 * both). rusm/tcp.h promises stickiness for later sends only.
 */
static void test_regression_send_error_hides_readable_data(void **state) {
  t_env e = start1(1);
  uint16_t port;
  int lfd = plain_listen(4, &port);
  rusm_sock *s = attached_connect(&e, port);
  int peer = plain_accept(lfd);
  c_send(peer, "response", 8);
  close(peer);
  assert_int_equal(rusm_tcp_send(e.me, s, "more", 4), 0);
  /* The peer's reset (answering "more") arrives: POLLHUP. */
  struct pollfd p = {.fd = sock_fd(s), .events = 0};
  assert_int_equal(poll(&p, 1, T_GUARD_MS), 1);
  assert_true(p.revents & POLLHUP);
  assert_int_equal(rusm_tcp_send(e.me, s, "more", 4), RUSM_EPIPE);
  char buf[16];
  ssize_t n = rusm_tcp_recv(e.me, s, buf, sizeof buf, T_GUARD_MS);
  if (n != 8) {
    t_stop(&e);
    close(lfd);
    fail_msg("regression: rusm_tcp_recv returned %s, the 8 readable "
             "bytes are lost",
             rusm_tcp_err_name((int)n));
  }
  assert_memory_equal(buf, "response", 8);
  assert_int_equal(rusm_tcp_recv(e.me, s, buf, sizeof buf, T_GUARD_MS), 0);
  close(lfd);
  t_stop(&e);
}

/*
 * Regression (a core bug, fixed): when the
 * poller's per-scheduler buffer table cannot be allocated, poller_create
 * calls poller_free, which reads pl->bufs[i] for i < nbufs with pl->bufs
 * NULL: a segmentation fault instead of RUSM_ENOMEM. Run in a child
 * process (forked while this process has no other thread) so that the
 * crash does not take the other tests with it.
 */
static void test_regression_buffer_table_oom(void **state) {
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    /* cmocka's handlers would turn the crash into a test report */
    int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
      signal(sigs[i], SIG_DFL);
    rusm_rt_opts ro;
    rusm_rt_opts_init(&ro);
    ro.schedulers = 1;
    rusm_rt *rt = NULL;
    if (rusm_rt_create(&ro, &rt) != 0)
      _exit(3);
    rusm_tcp_listen_opts o;
    rusm_tcp_listen_opts_init(&o);
    o.ops = &echo_ops;
    /* allocation 0: the poller; 1: its buffer table */
    rusm__test_fail_one_alloc(1);
    int rc = rusm_tcp_listen(rt, "127.0.0.1", 0, &o, NULL, NULL);
    rusm__test_fail_one_alloc(-1);
    rusm_rt_destroy(rt);
    exit(rc == RUSM_ENOMEM ? 0 : 2); /* exit: coverage data is written */
  }
  int status = 0;
  assert_int_equal(waitpid(child, &status, 0), child);
  /* 0: RUSM_ENOMEM as it should; 2: another code; 3: no runtime. A
   * signal, or another status (a sanitizer stopped it): the crash. */
  bool crashed = WIFSIGNALED(status) ||
                 (WIFEXITED(status) && WEXITSTATUS(status) != 0 &&
                  WEXITSTATUS(status) != 2 && WEXITSTATUS(status) != 3);
  if (crashed)
    fail_msg("regression: rusm_tcp_listen crashed (%s %d) when the "
             "poller's buffer table could not be allocated",
             WIFSIGNALED(status) ? "signal" : "exit status",
             WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names_and_closed_msg),
      cmocka_unit_test(test_addresses),
      cmocka_unit_test(test_connect_timeouts),
      cmocka_unit_test(test_blocking_calls),
      cmocka_unit_test(test_stackful_send),
      cmocka_unit_test(test_stackless_closed_msg),
      cmocka_unit_test(test_send_queue_limits),
      cmocka_unit_test(test_queued_bytes_on_exit),
      cmocka_unit_test(test_killed_with_queue),
      cmocka_unit_test(test_calls_that_never_wait_yield),
      cmocka_unit_test(test_wait_socket_or_message),
      cmocka_unit_test(test_events_racing_close_and_exit),
      cmocka_unit_test(test_poller_contract),
      cmocka_unit_test(test_descriptor_closed_behind_back),
      cmocka_unit_test(test_epoll_descriptor_lost),
      cmocka_unit_test(test_stop_and_continue),
      cmocka_unit_test(test_attached_killed_while_blocked),
      cmocka_unit_test(test_out_of_descriptors),
      cmocka_unit_test(test_poller_creation_fails),
      cmocka_unit_test(test_listen_out_of_memory),
      cmocka_unit_test(test_accept_out_of_memory),
      cmocka_unit_test(test_accept_out_of_memory_stackful),
      cmocka_unit_test(test_read_buffer_out_of_memory),
      cmocka_unit_test(test_connect_out_of_memory),
      cmocka_unit_test(test_listen_while_closing),
      cmocka_unit_test(test_destroy_every_state),
      cmocka_unit_test(test_regression_send_error_hides_readable_data),
      cmocka_unit_test(test_regression_buffer_table_oom),
  };
  return T_RUN(tests);
}
