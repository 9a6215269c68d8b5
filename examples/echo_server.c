/*
 * echo_server — a TCP echo server with a process per connection.
 *
 *   echo_server [port [host]]     (defaults: 0 = an ephemeral port,
 *                                  127.0.0.1)
 *
 * Prints "listening on HOST:PORT" once ready. Each connection gets a
 * stackless process that sends back what it receives and ends when the
 * peer closes (or resets) the connection. SIGINT or SIGTERM stops it
 * gracefully: the acceptor stops taking connections, open connections are
 * closed, the runtime is destroyed.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "rusm/otp.h"
#include "rusm/tcp.h"

static rusm_next echo_handle(rusm_proc *self, rusm_sock *sock, void *state,
                             rusm_msg *msg) {
  if (msg && sock && rusm_msg_tag(msg) == RUSM_TAG_TCP_DATA) {
    /* Never waits: what the peer does not take yet is queued. */
    int rc = rusm_tcp_send(self, sock, rusm_msg_data(msg), rusm_msg_len(msg));
    if (rc < 0)
      return rusm_next_stop(rusm_reason_str(rusm_tcp_strerror(rc)));
  }
  return rusm_next_wait();
}

static const rusm_tcp_conn_ops echo_ops = {.handle = echo_handle};

int main(int argc, char **argv) {
  long port = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
  const char *host = argc > 2 ? argv[2] : "127.0.0.1";
  if (port < 0 || port > 65535) {
    fprintf(stderr, "usage: %s [port [host]]\n", argv[0]);
    return 2;
  }

  /* Block the stop signals before any thread exists: every runtime
   * thread inherits the mask, and this thread takes them with sigwait.
   * Default dispositions first: a shell starts background jobs with
   * SIGINT ignored, and an ignored signal never reaches sigwait. */
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);

  rusm_rt *rt = NULL;
  int rc = rusm_rt_create(NULL, &rt);
  if (rc < 0) {
    fprintf(stderr, "echo_server: %s\n", rusm_strerror(rc));
    return 1;
  }
  rusm_tcp_listen_opts o;
  rusm_tcp_listen_opts_init(&o);
  o.ops = &echo_ops;
  o.flags = RUSM_TCP_NODELAY;
  rusm_pid_t acceptor;
  uint16_t bound;
  rc = rusm_tcp_listen(rt, host, (uint16_t)port, &o, &acceptor, &bound);
  if (rc < 0) {
    fprintf(stderr, "echo_server: listen on %s:%ld: %s\n", host, port,
            rusm_tcp_strerror(rc));
    rusm_rt_destroy(rt);
    return 1;
  }
  printf("listening on %s:%u\n", host, (unsigned)bound);
  fflush(stdout);

  int sig = 0;
  while (sigwait(&stop, &sig) != 0) {
  }
  fprintf(stderr, "echo_server: signal %d, stopping\n", sig);

  rusm_exit(rt, acceptor, RUSM_REASON_SHUTDOWN); /* no new connections */
  rusm_tcp_stats st;
  rusm_tcp_stats_get(rt, &st);
  rusm_rt_destroy(rt); /* closes the open connections */
  fprintf(stderr, "echo_server: %llu connections served\n",
          (unsigned long long)st.accepted);
  return 0;
}
