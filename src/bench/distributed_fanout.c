/*
 * distributed-fanout: two nodes on loopback, in two OS processes. Node A
 * is this process (a runtime of its own with node id 1: the harness's
 * runtime has no node id, so it stays idle); node B is a child process,
 * `rusm node` itself (/proc/self/exe) with certificates issued into a
 * mkdtemp directory. Per run, untimed: the CA and certificates, node B,
 * node A joining it, and on B (rusm_spawn_on) a "sink" told to report at
 * N messages and an "echo".
 *
 * Timed: 8 stackless senders on A each send N/8 messages (32-byte
 * payload) to the sink on B, from just before they are spawned until the
 * sink's report arrives back at A. ops = 8 * (N / 8) messages.
 * Latency: before that, PINGS round trips of one stackless process on A
 * against the echo on B (p50 / p99).
 *
 * Baseline, between the same kind of two processes: a forked child (system
 * calls only) as the plain TCP peer on loopback. 8 threads with a
 * connection each write every message with its own write(2) (a u32 length
 * then the 32 bytes, as a length-prefixed stream is framed); the child
 * reads them with poll(2), counts whole frames and writes one byte on a
 * pipe at N. Latency: one thread's PINGS round trips of the same frame
 * over another connection (TCP_NODELAY) that the child echoes.
 *
 * Messages a node cannot forward (over 64 MiB queued for B) are dropped
 * and counted, not held: the run then fails with a message saying so
 * instead of waiting for a count that cannot come.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench_int.h"
#include "rusm/cluster.h"

#define SENDERS 8
#define PAYLOAD 32
#define PINGS 2000
#define PING_WARMUP 100
#define SEND_BATCH 256
#define START_MS 20000 /* node B starting, the nodes joining, spawns */

/* The sink's answer (`rusm node`'s demo factories, src/cli/cmd_node.c). */
#define NODE_TAG_COUNT UINT64_C(0x726e6f6400000003)
#define TAG_PING UINT64_C(0x62656e6300000010)

#define NAME_A "bench-a"
#define NAME_B "bench-b"

/* ---- the two nodes -------------------------------------------------- */

typedef struct child {
  pid_t pid;
  int in;  /* its stdin: closing it stops the node */
  int out; /* its stdout */
} child;

typedef struct world {
  char dir[64];
  char log[96]; /* node B's stderr */
  child b;
  char b_addr[128];
  rusm_rt *rt;
  rusm_node *node;
  rusm__bench_waiter w;
} world;

static void quiet(void *ud, const char *line) {}

static void rm_dir(world *wd) {
  static const char *const files[] = {
      "ca.pem",      "ca.key",      NAME_A ".pem", NAME_A ".key",
      NAME_B ".pem", NAME_B ".key", "node-b.log"};
  char p[128];
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    snprintf(p, sizeof p, "%s/%s", wd->dir, files[i]);
    unlink(p);
  }
  rmdir(wd->dir);
}

static int certs(world *wd) {
  snprintf(wd->dir, sizeof wd->dir, "/tmp/rusm-fanout-XXXXXX");
  if (!mkdtemp(wd->dir)) {
    wd->dir[0] = '\0';
    return RUSM_ESYS;
  }
  char why[256] = "";
  int rc = rusm_cluster_ca_init(wd->dir, why, sizeof why);
  if (rc == 0)
    rc = rusm_cluster_cert_issue(wd->dir, NAME_A, wd->dir, 1, why, sizeof why);
  if (rc == 0)
    rc = rusm_cluster_cert_issue(wd->dir, NAME_B, wd->dir, 1, why, sizeof why);
  if (rc != 0)
    fprintf(stderr, "distributed-fanout: certificates: %s\n", why);
  return rc;
}

/* Reads node B's stdout until its `listening` line (or the guard). */
static int await_listening(world *wd) {
  char buf[512];
  size_t len = 0;
  int64_t give_up = rusm_now_ns() + (int64_t)START_MS * 1000000;
  while (len + 1 < sizeof buf) {
    struct pollfd p = {.fd = wd->b.out, .events = POLLIN};
    int64_t left = (give_up - rusm_now_ns()) / 1000000;
    if (left <= 0)
      return RUSM_ETIMEDOUT;
    int k = poll(&p, 1, (int)left);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return k == 0 ? RUSM_ETIMEDOUT : RUSM_ESYS;
    ssize_t r = read(wd->b.out, buf + len, sizeof buf - 1 - len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return RUSM_ESYS; /* it exited: its log says why */
    len += (size_t)r;
    buf[len] = '\0';
    char *nl = strchr(buf, '\n');
    if (!nl)
      continue;
    *nl = '\0';
    /* listening NAME ID HOST:PORT */
    const char *addr = strrchr(buf, ' ');
    if (strncmp(buf, "listening " NAME_B " ", 18) != 0 || !addr)
      return RUSM_ESYS;
    snprintf(wd->b_addr, sizeof wd->b_addr, "%s", addr + 1);
    return 0;
  }
  return RUSM_ESYS;
}

/* Starts node B: `rusm node` (this very binary) with --control, its
 * stdin a pipe from here, so that it stops when this process goes away. */
static int start_b(world *wd, uint32_t threads) {
  char exe[PATH_MAX];
  ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (k <= 0)
    return RUSM_ESYS;
  exe[k] = '\0';
  char sched[16];
  snprintf(sched, sizeof sched, "%u", threads);
  char *argv[] = {exe,       "node",  "--name",    NAME_B,
                  "--id",    "2",     "--listen",  "127.0.0.1:0",
                  "--certs", wd->dir, "--control", "--schedulers",
                  sched,     NULL};
  snprintf(wd->log, sizeof wd->log, "%s/node-b.log", wd->dir);
  int in[2], out[2];
  int logfd = open(wd->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (logfd < 0)
    return RUSM_ESYS;
  if (pipe2(in, O_CLOEXEC) != 0) {
    close(logfd);
    return RUSM_ESYS;
  }
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(logfd);
    close(in[0]);
    close(in[1]);
    return RUSM_ESYS;
  }
  pid_t pid = fork();
  if (pid == 0) { /* system calls only until exec: this process has threads */
    if (dup2(in[0], STDIN_FILENO) < 0 || dup2(out[1], STDOUT_FILENO) < 0 ||
        dup2(logfd, STDERR_FILENO) < 0)
      _exit(127);
    execv(exe, argv);
    _exit(127);
  }
  close(logfd);
  close(in[0]);
  close(out[1]);
  if (pid < 0) {
    close(in[1]);
    close(out[0]);
    return RUSM_ESYS;
  }
  wd->b = (child){pid, in[1], out[0]};
  int rc = await_listening(wd);
  if (rc < 0)
    fprintf(stderr,
            "distributed-fanout: node B (%s node) did not start: see %s "
            "(kept)\n",
            exe, wd->log);
  return rc;
}

/* Closes B's stdin (it leaves the cluster and exits) and reaps it: its
 * stdout reaches end of file when it exits; killed if it lingers. */
static void stop_b(world *wd) {
  if (wd->b.pid <= 0)
    return;
  close(wd->b.in);
  int64_t give_up = rusm_now_ns() + INT64_C(5000000000);
  for (;;) {
    int64_t left = (give_up - rusm_now_ns()) / 1000000;
    struct pollfd p = {.fd = wd->b.out, .events = POLLIN};
    int k = left > 0 ? poll(&p, 1, (int)left) : 0;
    if (k < 0 && errno == EINTR)
      continue;
    char buf[256];
    ssize_t r = k > 0 ? read(wd->b.out, buf, sizeof buf) : -1;
    if (r < 0 && k > 0 && errno == EINTR)
      continue;
    if (r == 0)
      break; /* it exited */
    if (r < 0) {
      kill(wd->b.pid, SIGKILL);
      break;
    }
  }
  int status;
  while (waitpid(wd->b.pid, &status, 0) < 0 && errno == EINTR) {
  }
  close(wd->b.out);
  wd->b.pid = 0;
}

/* Node A in a runtime of its own, joined to B. */
static int start_a(world *wd, uint32_t threads) {
  rusm_rt_opts ro;
  rusm_rt_opts_init(&ro);
  ro.schedulers = threads;
  ro.node_id = 1;
  int rc = rusm_rt_create(&ro, &wd->rt);
  if (rc < 0)
    return rc;
  if ((rc = rusm__bench_attach(wd->rt, &wd->w)) < 0)
    return rc;
  char ca[128], cert[128], key[128];
  snprintf(ca, sizeof ca, "%s/ca.pem", wd->dir);
  snprintf(cert, sizeof cert, "%s/" NAME_A ".pem", wd->dir);
  snprintf(key, sizeof key, "%s/" NAME_A ".key", wd->dir);
  const char *seed = wd->b_addr;
  rusm_node_opts o;
  rusm_node_opts_init(&o);
  o.name = NAME_A;
  o.listen = "127.0.0.1:0";
  o.seeds = &seed;
  o.n_seeds = 1;
  o.ca_file = ca;
  o.cert_file = cert;
  o.key_file = key;
  o.log = quiet;
  if ((rc = rusm_node_start(wd->rt, &o, &wd->node)) < 0)
    return rc;
  if ((rc = rusm_node_subscribe(wd->node, wd->w.pid)) < 0)
    return rc;
  if (rusm_node_id_of(wd->node, NAME_B))
    return 0; /* up before the subscription */
  rusm_filter up = rusm_filter_tag(RUSM_TAG_NODEUP);
  rusm_msg *m = NULL;
  if ((rc = rusm_receive(wd->w.self, &up, START_MS, &m)) == 0)
    rusm_msg_free(m);
  return rc;
}

static void stop_a(world *wd) {
  if (wd->node)
    rusm_node_stop(wd->node);
  if (wd->w.self)
    rusm__bench_detach(&wd->w);
  if (wd->rt) {
    rusm_rt_wait_idle(wd->rt, RUSM_BENCH_WAIT_MS);
    rusm_rt_destroy(wd->rt);
  }
  wd->node = NULL;
  wd->rt = NULL;
}

/* ---- the ping process (A) against the echo (B) ------------------------ */

typedef struct pinger {
  rusm_rt *rt;
  rusm_pid_t main, echo;
  uint32_t done, total; /* total = warm-up + measured */
  int64_t *lat;         /* PINGS entries, ns */
  int64_t t_sent;
} pinger;

static rusm_next ping_next(rusm_proc *self, pinger *p) {
  if (p->done == p->total) {
    rusm__bench_send_status(p->rt, p->main, RUSM__BENCH_TAG_DONE, 0);
    return rusm_next_stop(RUSM_REASON_NORMAL);
  }
  uint8_t payload[PAYLOAD] = {0};
  p->t_sent = rusm_now_ns();
  int rc = rusm_send(p->rt, p->echo, TAG_PING, payload, sizeof payload);
  if (rc < 0) {
    rusm__bench_send_status(p->rt, p->main, RUSM__BENCH_TAG_DONE, rc);
    return rusm_next_stop(RUSM_REASON_NORMAL);
  }
  rusm_filter f = rusm_filter_tag(TAG_PING);
  return rusm_next_wait_for(&f, -1);
}

static rusm_next ping_init(rusm_proc *self, void **state) {
  return ping_next(self, *state);
}

static rusm_next ping_handle(rusm_proc *self, void *state, rusm_msg *m) {
  pinger *p = state;
  int64_t t = rusm_now_ns() - p->t_sent;
  if (p->done >= PING_WARMUP)
    p->lat[p->done - PING_WARMUP] = t;
  p->done++;
  return ping_next(self, p);
}

static const rusm_stackless_ops ping_ops = {.init = ping_init,
                                            .handle = ping_handle};

static int run_pings(world *wd, rusm_pid_t echo, rusm_bench_sample *out) {
  int64_t *lat = calloc(PINGS, sizeof *lat);
  if (!lat)
    return RUSM_ENOMEM;
  pinger p = {.rt = wd->rt,
              .main = wd->w.pid,
              .echo = echo,
              .total = PINGS + PING_WARMUP,
              .lat = lat};
  rusm_pid_t pid;
  int rc = rusm_spawn_stackless(wd->rt, &ping_ops, &p, NULL, &pid);
  if (rc == 0)
    rc = rusm__bench_await(&wd->w, RUSM__BENCH_TAG_DONE);
  if (rc == 0) {
    out->p50_us = (double)rusm_bench_percentile(lat, PINGS, 50) / 1e3;
    out->p99_us = (double)rusm_bench_percentile(lat, PINGS, 99) / 1e3;
  }
  free(lat);
  return rc;
}

/* ---- the senders (A) ------------------------------------------------- */

typedef struct fan {
  rusm_rt *rt;
  rusm_pid_t main, sink;
  uint64_t per;
} fan;

typedef struct sender {
  fan *f;
  uint64_t sent;
} sender;

static rusm_next sender_batch(rusm_proc *self, sender *s) {
  fan *f = s->f;
  uint64_t end = s->sent + SEND_BATCH < f->per ? s->sent + SEND_BATCH : f->per;
  uint8_t payload[PAYLOAD];
  memset(payload, 0x5a, sizeof payload);
  for (; s->sent < end; s->sent++) {
    memcpy(payload, &s->sent, sizeof s->sent);
    int rc = rusm_send(f->rt, f->sink, RUSM__BENCH_TAG_WORK, payload,
                       sizeof payload);
    if (rc < 0) { /* the sink would never report: tell main */
      rusm__bench_send_status(f->rt, f->main, RUSM__BENCH_TAG_DONE, rc);
      return rusm_next_stop(RUSM_REASON_NORMAL);
    }
  }
  if (s->sent == f->per)
    return rusm_next_stop(RUSM_REASON_NORMAL);
  rusm_send(f->rt, rusm_self(self), RUSM__BENCH_TAG_MORE, NULL, 0);
  rusm_filter more = rusm_filter_tag(RUSM__BENCH_TAG_MORE);
  return rusm_next_wait_for(&more, -1);
}

static rusm_next sender_init(rusm_proc *self, void **state) {
  return sender_batch(self, *state);
}

static rusm_next sender_handle(rusm_proc *self, void *state, rusm_msg *m) {
  return sender_batch(self, state);
}

static const rusm_stackless_ops sender_ops = {.init = sender_init,
                                              .handle = sender_handle};

static bool count_or_done(const rusm_msg *m, void *arg) {
  return rusm_msg_tag(m) == NODE_TAG_COUNT ||
         rusm_msg_tag(m) == RUSM__BENCH_TAG_DONE;
}

/* Waits for the sink's count (or a sender's failure), watching the node's
 * dropped-message counter. */
static int await_count(world *wd, uint64_t total) {
  int64_t give_up = rusm_now_ns() + (int64_t)RUSM_BENCH_WAIT_MS * 1000000;
  rusm_filter f = {0, 0, count_or_done, NULL};
  for (;;) {
    rusm_msg *m = NULL;
    int rc = rusm_receive(wd->w.self, &f, 50, &m);
    if (rc == 0) {
      uint64_t got = 0;
      int32_t status = 0;
      bool count = rusm_msg_tag(m) == NODE_TAG_COUNT;
      if (count && rusm_msg_len(m) == sizeof got)
        memcpy(&got, rusm_msg_data(m), sizeof got);
      else if (!count && rusm_msg_len(m) == sizeof status)
        memcpy(&status, rusm_msg_data(m), sizeof status);
      rusm_msg_free(m);
      if (!count)
        return status < 0 ? status : RUSM_EINVAL;
      return got == total ? 0 : RUSM_EINVAL;
    }
    if (rc != RUSM_ETIMEDOUT)
      return rc;
    rusm_node_stats st;
    rusm_node_stats_get(wd->node, &st);
    if (st.msgs_dropped) {
      fprintf(stderr,
              "distributed-fanout: node A dropped %llu messages (more than "
              "64 MiB queued for node B): use a smaller --n\n",
              (unsigned long long)st.msgs_dropped);
      return RUSM_ENOMEM;
    }
    if (rusm_now_ns() > give_up)
      return RUSM_ETIMEDOUT;
  }
}

static int fanout_run(const rusm_bench_env *env, rusm_bench_sample *out) {
  world wd;
  memset(&wd, 0, sizeof wd);
  uint64_t per = env->n / SENDERS, total = per * SENDERS;
  sender senders[SENDERS];
  fan f = {.per = per};
  int64_t t0 = 0, t1 = 0;
  int rc = certs(&wd);
  if (rc == 0)
    rc = start_b(&wd, env->threads);
  if (rc == 0 && (rc = start_a(&wd, env->threads)) < 0)
    fprintf(stderr, "distributed-fanout: node A could not join B: %s\n",
            rusm_err_name(rc));
  rusm_pid_t sink = RUSM_PID_NONE, echo = RUSM_PID_NONE;
  if (rc == 0) {
    uint64_t arg[2] = {total, wd.w.pid}; /* report at total, to us */
    rc = rusm_spawn_on(wd.w.self, NAME_B, "sink", arg, sizeof arg, 0, START_MS,
                       &sink, NULL);
    if (rc == 0)
      rc = rusm_spawn_on(wd.w.self, NAME_B, "echo", NULL, 0, 0, START_MS, &echo,
                         NULL);
    if (rc < 0)
      fprintf(stderr, "distributed-fanout: spawn on node B: %s\n",
              rusm_err_name(rc));
  }
  if (rc == 0)
    rc = run_pings(&wd, echo, out);
  if (rc == 0) {
    f = (fan){.rt = wd.rt, .main = wd.w.pid, .sink = sink, .per = per};
    t0 = rusm_now_ns();
    for (int i = 0; rc == 0 && i < SENDERS; i++) {
      senders[i] = (sender){.f = &f};
      rusm_pid_t pid;
      rc = rusm_spawn_stackless(wd.rt, &sender_ops, &senders[i], NULL, &pid);
    }
    if (rc == 0)
      rc = await_count(&wd, total);
    t1 = rusm_now_ns();
  }
  bool keep_log = rc < 0 && wd.b.pid > 0;
  stop_a(&wd);
  stop_b(&wd);
  if (keep_log)
    fprintf(stderr, "distributed-fanout: node B's log: %s (kept)\n", wd.log);
  else if (wd.dir[0])
    rm_dir(&wd);
  if (rc < 0)
    return rc;
  out->ops = total;
  out->ns = t1 - t0;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Baseline: plain TCP between this process and a forked child          */
/* ------------------------------------------------------------------ */

#define FRAME (4 + PAYLOAD)
#define ROLE_FAN 'F'
#define ROLE_PING 'P'

/* A frame parser per connection: u32 length, then that many bytes. */
typedef struct framer {
  uint32_t hdr_got; /* bytes of the length read so far */
  uint8_t hdr[4];
  uint64_t body_left;
} framer;

/* Counts the frames completed in b[0..len). */
static uint64_t frames_in(framer *f, const uint8_t *b, size_t len) {
  uint64_t done = 0;
  while (len) {
    if (f->hdr_got < 4) {
      f->hdr[f->hdr_got++] = *b++;
      len--;
      if (f->hdr_got == 4) {
        uint32_t n;
        memcpy(&n, f->hdr, 4);
        f->body_left = n;
      } else {
        continue;
      }
    }
    size_t take = f->body_left < len ? (size_t)f->body_left : len;
    b += take;
    len -= take;
    f->body_left -= take;
    if (f->body_left == 0) {
      f->hdr_got = 0;
      done++;
    }
  }
  return done;
}

/* The child: accepts SENDERS + 1 connections, counts the fan-in frames
 * (one byte on rep at total), echoes the ping connection. System calls
 * only (this process may have threads). Never returns. */
static _Noreturn void tcp_child(int lfd, int rep, uint64_t total) {
  struct pollfd p[SENDERS + 1];
  framer fr[SENDERS + 1];
  bool ping[SENDERS + 1];
  memset(fr, 0, sizeof fr);
  for (int i = 0; i < SENDERS + 1; i++) {
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    uint8_t role = 0;
    if (fd < 0 || !rusm__bench_read_all(fd, &role, 1))
      _exit(1);
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    p[i] = (struct pollfd){.fd = fd, .events = POLLIN};
    ping[i] = role == ROLE_PING;
  }
  close(lfd);
  uint64_t count = 0;
  int open = SENDERS + 1;
  static uint8_t buf[1 << 16];
  while (open > 0) {
    if (poll(p, SENDERS + 1, -1) < 0) {
      if (errno == EINTR)
        continue;
      _exit(1);
    }
    for (int i = 0; i < SENDERS + 1; i++) {
      if (p[i].fd < 0 || !p[i].revents)
        continue;
      ssize_t n = read(p[i].fd, buf, sizeof buf);
      if (n < 0 && (errno == EINTR || errno == EAGAIN))
        continue;
      if (n <= 0) {
        close(p[i].fd);
        p[i].fd = -1;
        open--;
        continue;
      }
      if (ping[i]) {
        if (!rusm__bench_write_all(p[i].fd, buf, (size_t)n))
          _exit(1);
        continue;
      }
      uint64_t before = count;
      count += frames_in(&fr[i], buf, (size_t)n);
      if (before < total && count >= total) {
        uint8_t one = 1;
        if (!rusm__bench_write_all(rep, &one, 1))
          _exit(1);
      }
    }
  }
  _exit(0);
}

typedef struct tcp_sender {
  int fd;
  uint64_t per;
  rusm__bench_gate *gate;
  bool failed;
} tcp_sender;

static void *tcp_sender_main(void *arg) {
  tcp_sender *s = arg;
  uint8_t frame[FRAME];
  uint32_t len = PAYLOAD;
  memcpy(frame, &len, 4);
  memset(frame + 4, 0x5a, PAYLOAD);
  rusm__bench_gate_wait(s->gate);
  for (uint64_t i = 0; i < s->per; i++) {
    memcpy(frame + 4, &i, sizeof i);
    if (!rusm__bench_write_all(s->fd, frame, sizeof frame)) {
      s->failed = true;
      break;
    }
  }
  return NULL;
}

static int tcp_connect(uint16_t port, uint8_t role) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons(port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int one = 1;
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      (role == ROLE_PING &&
       setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) ||
      !rusm__bench_write_all(fd, &role, 1)) {
    close(fd);
    return -1;
  }
  return fd;
}

static int tcp_pings(int fd, rusm_bench_sample *out) {
  int64_t *lat = calloc(PINGS, sizeof *lat);
  if (!lat)
    return RUSM_ENOMEM;
  uint8_t frame[FRAME], back[FRAME];
  uint32_t len = PAYLOAD;
  memset(frame, 0, sizeof frame);
  memcpy(frame, &len, 4);
  int rc = 0;
  for (uint32_t i = 0; i < PINGS + PING_WARMUP; i++) {
    int64_t t = rusm_now_ns();
    if (!rusm__bench_write_all(fd, frame, sizeof frame) ||
        !rusm__bench_read_all(fd, back, sizeof back)) {
      rc = RUSM_ESYS;
      break;
    }
    if (i >= PING_WARMUP)
      lat[i - PING_WARMUP] = rusm_now_ns() - t;
  }
  if (rc == 0) {
    out->p50_us = (double)rusm_bench_percentile(lat, PINGS, 50) / 1e3;
    out->p99_us = (double)rusm_bench_percentile(lat, PINGS, 99) / 1e3;
  }
  free(lat);
  return rc;
}

/* Waits for the child's byte at total (the guard: RUSM_BENCH_WAIT_MS). */
static int await_byte(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int k;
  while ((k = poll(&p, 1, RUSM_BENCH_WAIT_MS)) < 0 && errno == EINTR) {
  }
  uint8_t b;
  if (k == 0)
    return RUSM_ETIMEDOUT;
  return k > 0 && rusm__bench_read_all(fd, &b, 1) ? 0 : RUSM_ESYS;
}

static int fanout_baseline(const rusm_bench_env *env, rusm_bench_sample *out) {
  uint64_t per = env->n / SENDERS, total = per * SENDERS;
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0)
    return RUSM_ESYS;
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  int rep[2];
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
      listen(lfd, SENDERS + 1) != 0 ||
      getsockname(lfd, (struct sockaddr *)&a, &alen) != 0 ||
      pipe2(rep, O_CLOEXEC) != 0) {
    close(lfd);
    return RUSM_ESYS;
  }
  pid_t pid = fork();
  if (pid == 0) {
    close(rep[0]);
    tcp_child(lfd, rep[1], total);
  }
  close(lfd);
  close(rep[1]);
  if (pid < 0) {
    close(rep[0]);
    return RUSM_ESYS;
  }
  uint16_t port = ntohs(a.sin_port);
  rusm__bench_gate gate;
  rusm__bench_gate_init(&gate);
  tcp_sender s[SENDERS];
  pthread_t th[SENDERS];
  int started = 0, rc = 0;
  int pfd = -1;
  for (int i = 0; i < SENDERS; i++)
    s[i] = (tcp_sender){.fd = -1, .per = per, .gate = &gate};
  for (int i = 0; rc == 0 && i < SENDERS; i++)
    if ((s[i].fd = tcp_connect(port, ROLE_FAN)) < 0)
      rc = RUSM_ESYS;
  if (rc == 0 && (pfd = tcp_connect(port, ROLE_PING)) < 0)
    rc = RUSM_ESYS;
  if (rc == 0)
    rc = tcp_pings(pfd, out);
  for (int i = 0; rc == 0 && i < SENDERS; i++) {
    if (pthread_create(&th[i], NULL, tcp_sender_main, &s[i]) != 0)
      rc = RUSM_ESYS;
    else
      started++;
  }
  int64_t t0 = rusm_now_ns();
  if (rc < 0) /* the started ones send into the void: the child counts */
    for (int i = started; i < SENDERS; i++)
      s[i].per = 0;
  rusm__bench_gate_open(&gate);
  for (int i = 0; i < started; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; rc == 0 && i < SENDERS; i++)
    if (s[i].failed)
      rc = RUSM_ESYS;
  if (rc == 0)
    rc = await_byte(rep[0]);
  int64_t t1 = rusm_now_ns();
  for (int i = 0; i < SENDERS; i++)
    if (s[i].fd >= 0)
      close(s[i].fd);
  if (pfd >= 0)
    close(pfd);
  close(rep[0]);
  if (rc < 0)
    kill(pid, SIGKILL); /* it may wait for connections never made */
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  rusm__bench_gate_destroy(&gate);
  if (rc < 0)
    return rc;
  out->ops = total;
  out->ns = t1 - t0;
  return 0;
}

const rusm_bench_scenario rusm__bench_distributed_fanout = {
    .name = "distributed-fanout",
    .summary = "two nodes in two processes on loopback (QUIC, mutual TLS): 8 "
               "senders on A send N/8 32-byte messages each to one process "
               "on B; msgs/s, and p50/p99 of A-B-A round trips",
    .baseline_summary = "a forked plain TCP peer: 8 threads, a connection "
                        "and one write(2) per message each, counted by a "
                        "poll loop; round trips over a TCP_NODELAY "
                        "connection",
    .kind = RUSM_BENCH_LATENCY,
    .default_n = 200000,
    .min_n = SENDERS,
    .run = fanout_run,
    .baseline = fanout_baseline,
};
