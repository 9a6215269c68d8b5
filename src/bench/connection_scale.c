/*
 * connection-scale: N concurrent idle connections, each held by its own
 * stackless connection process parked in receive (its socket armed for
 * reading). Reported: the server's resident bytes per connection,
 * bytes_per_connection = (RSS once all N are accepted and their processes
 * parked - RSS before listening) / N; pools, caches, the poll thread and
 * the descriptor table count. ops = N connections, timed from listening
 * until the last connection process has started. No baseline.
 *
 * The client lives in a separate OS process, so that only the server's
 * memory is measured and each side gets its own open-file limit (20,000
 * per process here, not raisable). It is fork()ed before the server
 * listens and does only system calls (no allocator, no stdio): this
 * process has threads, and the child must not touch their locks. It spreads
 * its connections over SRC_ADDRS loopback source addresses (ephemeral
 * ports are per source and destination), holds them until told to stop,
 * then closes them.
 *
 * N + FD_MARGIN descriptors must fit under the limit in both processes:
 * when they do not, the run fails with RUSM_ELIMIT and says so on stderr.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench_int.h"
#include "rusm/tcp.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define SRC_ADDRS 8
#define FD_MARGIN 64 /* the runtime's own descriptors, stdio, pipes ... */

/* ---- the client process ------------------------------------------------- */

/* What the child reports: how many connections it holds, or an errno. */
typedef struct child_report {
  uint64_t connected;
  int32_t err;
} child_report;

/* Closes every descriptor but keep_a and keep_b (inherited sockets would
 * keep the server's listening socket alive, and cost descriptors). */
static void close_others(int keep_a, int keep_b) {
  int lo = keep_a < keep_b ? keep_a : keep_b;
  int hi = keep_a < keep_b ? keep_b : keep_a;
  if (lo > 3)
    close_range(3, (unsigned)lo - 1, 0);
  if (hi > lo + 1)
    close_range((unsigned)lo + 1, (unsigned)hi - 1, 0);
  close_range((unsigned)hi + 1, ~0u, 0);
}

/* The child: system calls only. Never returns. */
static _Noreturn void client_child(int cmd, int rep, uint64_t n) {
  close_others(cmd, rep);
  child_report r = {0, 0};
  uint16_t port;
  int *fds = MAP_FAILED;
  if (!rusm__bench_read_all(cmd, &port, sizeof port))
    _exit(0);
  fds = mmap(NULL, n * sizeof *fds, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (fds == MAP_FAILED) {
    r.err = ENOMEM;
    goto report;
  }
  for (; r.connected < n; r.connected++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      r.err = errno;
      break;
    }
    int one = 1;
    /* Best effort: without it the port is picked at bind() instead. */
    (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr =
        htonl(INADDR_LOOPBACK + 1 + (uint32_t)(r.connected % SRC_ADDRS));
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
      r.err = errno;
      close(fd);
      break;
    }
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    int rc;
    while ((rc = connect(fd, (struct sockaddr *)&a, sizeof a)) != 0 &&
           errno == EINTR) {
    }
    if (rc != 0) {
      r.err = errno;
      close(fd);
      break;
    }
    fds[r.connected] = fd;
  }
report:
  rusm__bench_write_all(rep, &r, sizeof r);
  /* Hold them until the parent says stop (or goes away). */
  uint8_t stop;
  while (read(cmd, &stop, 1) < 0 && errno == EINTR) {
  }
  for (uint64_t i = 0; i < r.connected; i++)
    close(fds[i]);
  _exit(0);
}

/* ---- the server ------------------------------------------------------------
 */

typedef struct scale {
  rusm_rt *rt;
  rusm_pid_t main;
  uint64_t n;
  _Atomic uint64_t ready;
} scale;

static rusm_next conn_init(rusm_proc *self, rusm_sock *sock, void **state) {
  scale *s = *state;
  /* relaxed: the count is the only datum shared; the DONE message the
   * last one sends orders what the main thread reads after it. */
  if (atomic_fetch_add_explicit(&s->ready, 1, memory_order_relaxed) + 1 == s->n)
    rusm__bench_send_status(s->rt, s->main, RUSM__BENCH_TAG_DONE, 0);
  return rusm_next_wait();
}

static rusm_next conn_handle(rusm_proc *self, rusm_sock *sock, void *state,
                             rusm_msg *m) {
  return rusm_next_wait(); /* idle: whatever comes is dropped */
}

static const rusm_tcp_conn_ops conn_ops = {.init = conn_init,
                                           .handle = conn_handle};

static int check_fd_limit(uint64_t n) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return RUSM_ESYS;
  if (rl.rlim_cur != RLIM_INFINITY && n + FD_MARGIN > rl.rlim_cur) {
    fprintf(stderr,
            "connection-scale: %llu connections need %llu file descriptors "
            "in the server process (and as many in the client process), but "
            "the limit is %llu per process (RLIMIT_NOFILE; hard limit %llu, "
            "which cannot be raised here). Use --n %llu or less.\n",
            (unsigned long long)n, (unsigned long long)n + FD_MARGIN,
            (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
            (unsigned long long)(rl.rlim_cur - FD_MARGIN));
    return RUSM_ELIMIT;
  }
  return 0;
}

/*
 * Waits for the last connection process's DONE, watching the child: if it
 * reports failure first (no ports, no descriptors), gives up. 0, the
 * child's failure as RUSM_ELIMIT / RUSM_ESYS, or RUSM_ETIMEDOUT.
 */
static int await_all(rusm__bench_waiter *w, int rep, child_report *r,
                     bool *have_report) {
  int64_t give_up = rusm_now_ns() + (int64_t)RUSM_BENCH_WAIT_MS * 1000000;
  rusm_filter f = rusm_filter_tag(RUSM__BENCH_TAG_DONE);
  for (;;) {
    rusm_msg *m = NULL;
    int rc = rusm_receive(w->self, &f, 20, &m);
    if (rc == 0) {
      rusm_msg_free(m);
      return 0;
    }
    if (rc != RUSM_ETIMEDOUT)
      return rc;
    struct pollfd pfd = {.fd = rep, .events = POLLIN};
    if (!*have_report && poll(&pfd, 1, 0) > 0) {
      if (!rusm__bench_read_all(rep, r, sizeof *r))
        return RUSM_ESYS; /* the child died */
      *have_report = true;
      if (r->err) {
        fprintf(stderr,
                "connection-scale: the client made %llu connections, then: "
                "%s\n",
                (unsigned long long)r->connected, strerrordesc_np(r->err));
        return r->err == EMFILE || r->err == EADDRNOTAVAIL ? RUSM_ELIMIT
                                                           : RUSM_ESYS;
      }
    }
    if (rusm_now_ns() > give_up)
      return RUSM_ETIMEDOUT;
  }
}

static int scale_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  uint64_t n = env->n;
  int rc = check_fd_limit(n);
  if (rc < 0)
    return rc;
  int cmd[2], rep[2];
  if (pipe2(cmd, O_CLOEXEC) != 0)
    return RUSM_ESYS;
  if (pipe2(rep, O_CLOEXEC) != 0) {
    close(cmd[0]);
    close(cmd[1]);
    return RUSM_ESYS;
  }
  pid_t child = fork();
  if (child == 0)
    client_child(cmd[0], rep[1], n);
  close(cmd[0]);
  close(rep[1]);
  if (child < 0) {
    close(cmd[1]);
    close(rep[0]);
    return RUSM_ESYS;
  }

  rusm__bench_waiter w = {0};
  scale s = {.rt = env->rt, .n = n};
  atomic_init(&s.ready, 0);
  rusm_pid_t acceptor = RUSM_PID_NONE;
  child_report r = {0, 0};
  bool have_report = false;
  int64_t t0 = 0, t1 = 0;
  uint64_t rss0 = 0, rss1 = 0, maps = 0;
  if ((rc = rusm__bench_attach(env->rt, &w)) < 0)
    goto stop_child;
  s.main = w.pid;

  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.ops = &conn_ops;
  o.arg = &s;
  o.backlog = 4096;
  uint16_t port;
  /* Hand back what earlier runs freed (as idle-memory does). */
  malloc_trim(0);
  rss0 = rusm_bench_rss_bytes();
  t0 = rusm_now_ns();
  if ((rc = rusm_tcp_listen(env->rt, "127.0.0.1", 0, &o, &acceptor, &port)) < 0)
    goto stop_child;
  if (!rusm__bench_write_all(cmd[1], &port, sizeof port)) {
    rc = RUSM_ESYS;
    goto stop_child;
  }
  rc = await_all(&w, rep[0], &r, &have_report);
  t1 = rusm_now_ns();
  rss1 = rusm_bench_rss_bytes();
  maps = rusm_bench_map_count();

stop_child:
  close(cmd[1]); /* stop: the child closes its connections and exits */
  close(rep[0]);
  int status;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (acceptor != RUSM_PID_NONE)
    rusm_kill(env->rt, acceptor);
  /* Every connection process ends with its connection (end of stream). */
  int idle = rusm_rt_wait_idle(env->rt, RUSM_BENCH_WAIT_MS);
  rusm__bench_detach(&w);
  if (rc == 0)
    rc = idle;
  if (rc < 0)
    return rc;
  out->ops = n;
  out->ns = t1 - t0;
  out->bytes_per_process = rss1 > rss0 ? (double)(rss1 - rss0) / (double)n : 0;
  out->mappings = maps;
  return 0;
}

const rusm_bench_scenario rusm__bench_connection_scale = {
    .name = "connection-scale",
    .summary = "N concurrent idle TCP connections (client in a separate "
               "process), a stackless process each: server resident bytes "
               "per connection",
    .baseline_summary = NULL,
    .kind = RUSM_BENCH_MEMORY,
    .default_n = 15000,
    .min_n = 1,
    .run = scale_run,
    .baseline = NULL,
    .memory_per = "connection",
};
