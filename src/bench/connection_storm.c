/*
 * connection-storm: N short connections against an echo server on
 * 127.0.0.1. CLIENTS client threads (in this process, plain blocking
 * sockets) each run their share one after the other: connect, send one
 * MSG_LEN-byte message, read the echo, close. ops = N connections, timed
 * from opening the clients' start gate until the last client is done.
 *
 * RUSM: rusm_tcp_listen with stackless connection processes that echo
 * what they receive (a process per connection, the socket read and written
 * in the process, readiness from the runtime's poll thread).
 * Baseline: a bare epoll echo server thread (level-triggered; accept,
 * read, write back, close at end of stream), same client, same run.
 *
 * Ports: the clients close first, so their side of each connection waits
 * in TIME_WAIT for a minute. Each client binds one of SRC_ADDRS loopback
 * source addresses (127.0.0.2 ...) with IP_BIND_ADDRESS_NO_PORT, so the
 * port is picked at connect() per 4-tuple, and every run listens on a
 * fresh ephemeral port: repeated runs do not run out of ephemeral ports
 * (28,232 per source and destination).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench/bench_int.h"
#include "rusm/tcp.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define CLIENTS 4
#define MSG_LEN 64
#define SRC_ADDRS 8
#define IO_GUARD_S 10 /* client receive timeout: a hung server fails */

/* ---- the client ---------------------------------------------------------- */

typedef struct storm_client {
  pthread_t thread;
  rusm__bench_gate *gate;
  uint16_t port;
  uint32_t index;
  uint64_t count;
  int rc; /* 0 or a negative RUSM_E* code */
} storm_client;

/* One connection: connect, echo one message, close. 0 or an error. */
static int one_connection(uint16_t port, uint32_t src) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return RUSM_ESYS;
  int one = 1;
  /* Best effort, both: without the first the port is picked at bind(),
   * without the second a hung server hangs the run. */
  (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  struct timeval tv = {IO_GUARD_S, 0};
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 + src % SRC_ADDRS);
  int rc = RUSM_ESYS;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
    goto out;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    rc = errno == EADDRNOTAVAIL ? RUSM_ELIMIT : RUSM_ESYS;
    goto out;
  }
  uint8_t msg[MSG_LEN], back[MSG_LEN];
  memset(msg, 'x', sizeof msg);
  if (send(fd, msg, sizeof msg, MSG_NOSIGNAL) != (ssize_t)sizeof msg)
    goto out;
  size_t got = 0;
  while (got < sizeof back) {
    ssize_t n = recv(fd, back + got, sizeof back - got, 0);
    if (n <= 0)
      goto out;
    got += (size_t)n;
  }
  rc = memcmp(msg, back, sizeof msg) == 0 ? 0 : RUSM_ESYS;
out:
  close(fd);
  return rc;
}

static void *client_main(void *arg) {
  storm_client *c = arg;
  rusm__bench_gate_wait(c->gate);
  for (uint64_t i = 0; i < c->count && c->rc == 0; i++)
    c->rc = one_connection(c->port, c->index + (uint32_t)i * CLIENTS);
  return NULL;
}

/* Runs the clients against port; fills out (ops, ns). */
static int run_clients(uint16_t port, uint64_t n, rusm_bench_sample *out) {
  storm_client cs[CLIENTS];
  rusm__bench_gate gate;
  rusm__bench_gate_init(&gate);
  uint32_t started = 0;
  int rc = 0;
  for (uint32_t i = 0; i < CLIENTS; i++) {
    cs[i] = (storm_client){.gate = &gate,
                           .port = port,
                           .index = i,
                           .count = n / CLIENTS + (i < n % CLIENTS),
                           .rc = 0};
    if (pthread_create(&cs[i].thread, NULL, client_main, &cs[i]) != 0) {
      rc = RUSM_ESYS;
      break;
    }
    started++;
  }
  int64_t t0 = rusm_now_ns();
  rusm__bench_gate_open(&gate);
  for (uint32_t i = 0; i < started; i++) {
    pthread_join(cs[i].thread, NULL);
    if (rc == 0)
      rc = cs[i].rc;
  }
  int64_t t1 = rusm_now_ns();
  rusm__bench_gate_destroy(&gate);
  out->ops = n;
  out->ns = t1 - t0;
  return rc;
}

/* ---- RUSM: a process per connection ---------------------------------------
 */

static rusm_next echo_handle(rusm_proc *self, rusm_sock *sock, void *state,
                             rusm_msg *m) {
  if (m && sock && rusm_msg_tag(m) == RUSM_TAG_TCP_DATA &&
      rusm_tcp_send(self, sock, rusm_msg_data(m), rusm_msg_len(m)) < 0)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  return rusm_next_wait();
}

static const rusm_tcp_conn_ops echo_ops = {.handle = echo_handle};

static int storm_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.ops = &echo_ops;
  o.backlog = 4096;
  rusm_pid_t acceptor;
  uint16_t port;
  int rc = rusm_tcp_listen(env->rt, "127.0.0.1", 0, &o, &acceptor, &port);
  if (rc < 0)
    return rc;
  rc = run_clients(port, env->n, out);
  /* Connection processes end as their clients close; the acceptor last. */
  rusm_kill(env->rt, acceptor);
  int idle = rusm_rt_wait_idle(env->rt, RUSM_BENCH_WAIT_MS);
  return rc < 0 ? rc : idle;
}

/* ---- baseline: a bare epoll echo server thread ------------------------------
 */

typedef struct bare_server {
  pthread_t thread;
  int lfd, epfd, stopfd;
} bare_server;

static void *bare_main(void *arg) {
  bare_server *b = arg;
  struct epoll_event evs[64];
  uint8_t buf[4096];
  uint64_t open = 0;
  bool stopping = false;
  /* Stop only once every connection has ended: the last clients' ends of
   * stream may still be on their way when the stop comes. */
  while (!stopping || open > 0) {
    int n = epoll_wait(b->epfd, evs, 64, -1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return NULL;
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == b->stopfd) {
        stopping = true;
        (void)epoll_ctl(b->epfd, EPOLL_CTL_DEL, fd, NULL); /* cannot fail */
        continue;
      }
      if (fd == b->lfd) {
        int c;
        while ((c = accept4(b->lfd, NULL, NULL,
                            SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          struct epoll_event ev = {.events = EPOLLIN, .data.fd = c};
          if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, c, &ev) != 0)
            close(c);
          else
            open++;
        }
        continue;
      }
      ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r > 0) {
        /* One small message: the socket buffer takes it whole. */
        if (send(fd, buf, (size_t)r, MSG_NOSIGNAL | MSG_DONTWAIT) == r)
          continue;
      } else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        continue;
      }
      close(fd); /* also leaves the epoll set */
      open--;
    }
  }
  return NULL;
}

static int bare_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  bare_server b = {.lfd = -1, .epfd = -1, .stopfd = -1};
  int rc = RUSM_ESYS;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  b.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  b.epfd = epoll_create1(EPOLL_CLOEXEC);
  b.stopfd = eventfd(0, EFD_CLOEXEC);
  if (b.lfd < 0 || b.epfd < 0 || b.stopfd < 0 ||
      bind(b.lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
      listen(b.lfd, 4096) != 0 ||
      getsockname(b.lfd, (struct sockaddr *)&a, &alen) != 0)
    goto out;
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = b.lfd};
  struct epoll_event sv = {.events = EPOLLIN, .data.fd = b.stopfd};
  if (epoll_ctl(b.epfd, EPOLL_CTL_ADD, b.lfd, &ev) != 0 ||
      epoll_ctl(b.epfd, EPOLL_CTL_ADD, b.stopfd, &sv) != 0 ||
      pthread_create(&b.thread, NULL, bare_main, &b) != 0)
    goto out;
  rc = run_clients(ntohs(a.sin_port), env->n, out);
  uint64_t one = 1;
  if (write(b.stopfd, &one, sizeof one) < 0) {
    /* an eventfd write of 1 does not fail */
  }
  pthread_join(b.thread, NULL);
out:
  if (b.lfd >= 0)
    close(b.lfd);
  if (b.epfd >= 0)
    close(b.epfd);
  if (b.stopfd >= 0)
    close(b.stopfd);
  return rc;
}

const rusm_bench_scenario rusm__bench_connection_storm = {
    .name = "connection-storm",
    .summary = "N short TCP connections (connect, echo 64 bytes, close) from "
               "4 client threads against an echo server on 127.0.0.1",
    .baseline_summary = "a bare epoll echo server thread, same clients",
    .kind = RUSM_BENCH_THROUGHPUT,
    .default_n = 10000,
    .min_n = 1,
    .run = storm_run,
    .baseline = bare_run,
};
