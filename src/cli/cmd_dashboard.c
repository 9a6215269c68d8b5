/*
 * cmd_dashboard.c — `rusm dashboard [--listen HOST:PORT]`: runs the demo
 * application and serves the dashboard page, its API, the WebSocket feed
 * and /metrics on one listener (docs/dashboard.md). Prints the URL once it
 * listens. SIGINT / SIGTERM stop it: the listener closes, scenario runs
 * are killed, then the runtime's graceful shutdown, whose report goes to
 * stderr.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd.h"
#include "cli/dashboard.h"
#include "cli/demo.h"
#include "rusm/metrics.h"

static void usage(FILE *to) {
  fprintf(to,
          "usage: rusm dashboard [--listen HOST:PORT] [--schedulers K]\n"
          "                      [--no-demo]\n"
          "Serves the dashboard at http://HOST:PORT/ (default\n"
          "127.0.0.1:8080; port 0 picks a free one): live metrics, benchmark\n"
          "tiles that run `rusm bench` as child processes, and an observer of\n"
          "the demo application. Also GET /metrics (Prometheus) and the JSON\n"
          "API of docs/dashboard-protocol.md. Ctrl-C stops it gracefully.\n"
          "  --listen HOST:PORT  address to listen on ([::1]:PORT for IPv6)\n"
          "  --schedulers K      scheduler threads (default: one per core)\n"
          "  --no-demo           do not start the demo application\n");
}

/* "HOST:PORT", "[v6]:PORT" or ":PORT" (127.0.0.1). host gets the part to
 * listen on, url_host the part to print. */
static int parse_listen(const char *s, char *host, size_t hostlen,
                        char *url_host, size_t urllen, uint16_t *port) {
  const char *colon = s ? strrchr(s, ':') : NULL;
  if (!colon)
    return -1;
  size_t hl = (size_t)(colon - s);
  if (hl == 0) {
    snprintf(host, hostlen, "127.0.0.1");
  } else if (s[0] == '[') {
    if (hl < 3 || s[hl - 1] != ']' || hl - 2 >= hostlen)
      return -1;
    memcpy(host, s + 1, hl - 2);
    host[hl - 2] = '\0';
  } else {
    if (hl >= hostlen || memchr(s, ':', hl))
      return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
  }
  snprintf(url_host, urllen, strchr(host, ':') ? "[%s]" : "%s", host);
  char *end;
  errno = 0;
  unsigned long p = strtoul(colon + 1, &end, 10);
  if (errno || *end || end == colon + 1 || p > 65535)
    return -1;
  *port = (uint16_t)p;
  return 0;
}

int rusm__cmd_dashboard(int argc, char **argv) {
  char host[64] = "127.0.0.1", url_host[72] = "127.0.0.1";
  uint16_t port = 8080;
  unsigned long scheds = 0;
  bool demo_on = true;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!a)
      goto bad;
    if (strncmp(a, "--listen=", 9) == 0 || (strcmp(a, "--listen") == 0 && v)) {
      const char *val = a[8] == '=' ? a + 9 : v;
      if (parse_listen(val, host, sizeof host, url_host, sizeof url_host,
                       &port) != 0) {
        fprintf(stderr, "rusm dashboard: bad --listen '%s' (HOST:PORT)\n", val);
        return RUSM__CLI_USAGE;
      }
      if (val == v)
        i++;
    } else if (strcmp(a, "--schedulers") == 0 && v) {
      char *end;
      scheds = strtoul(v, &end, 10);
      if (*end || end == v || scheds == 0 || scheds > RUSM_METRICS_MAX_SCHED)
        goto bad;
      i++;
    } else if (strcmp(a, "--no-demo") == 0) {
      demo_on = false;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return RUSM__CLI_OK;
    } else {
      goto bad;
    }
  }

  /* The stop signals are blocked before any thread exists (every thread
   * inherits the mask); this thread takes them with sigwait. */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);

  rusm_rt_opts ro;
  rusm_rt_opts_init(&ro);
  ro.schedulers = (uint32_t)scheds;
  rusm_rt *rt;
  int rc = rusm_rt_create(&ro, &rt);
  if (rc) {
    fprintf(stderr, "rusm dashboard: %s\n", rusm_strerror(rc));
    return RUSM__CLI_FAILED;
  }
  rusm__demo *demo = NULL;
  if (demo_on && (rc = rusm__demo_start(rt, &demo)) != 0) {
    fprintf(stderr, "rusm dashboard: demo: %s\n", rusm_strerror(rc));
    rusm_rt_destroy(rt);
    return RUSM__CLI_FAILED;
  }
  rusm__dash_opts o;
  memset(&o, 0, sizeof o);
  o.host = host;
  o.port = port;
  o.assets = rusm__dash_assets;
  o.nassets = rusm__dash_asset_count;
  rusm__dash *d = NULL;
  rc = rusm__dash_start(rt, &o, &d);
  if (rc) {
    fprintf(stderr, "rusm dashboard: listen on %s:%u: %s\n", url_host,
            (unsigned)port, rusm_tcp_strerror(rc));
    rusm_rt_destroy(rt);
    rusm__demo_free(demo);
    return RUSM__CLI_FAILED;
  }
  if (!rusm__dash_assets_built)
    fprintf(stderr, "rusm dashboard: note: the page was not built into this "
                    "binary (scripts/build builds it first); serving a "
                    "placeholder page and the API\n");
  if (strcmp(host, "127.0.0.1") != 0 && strcmp(host, "::1") != 0 &&
      strcmp(host, "localhost") != 0)
    fprintf(stderr,
            "rusm dashboard: warning: listening on %s: the "
            "dashboard has no authentication and can start "
            "benchmarks\n",
            url_host);
  printf("dashboard: http://%s:%u/\n", url_host, (unsigned)rusm__dash_port(d));
  fflush(stdout);

  int sig = 0;
  while (sigwait(&stop, &sig) != 0) {
  }
  fprintf(stderr, "rusm dashboard: %s, shutting down\n",
          sig == SIGINT ? "interrupted" : "terminated");
  rusm__dash_stop(d);
  rusm_shutdown_report rep;
  rusm_rt_shutdown(rt, 5000, &rep);
  char buf[2048];
  rusm_shutdown_report_format(&rep, buf, sizeof buf);
  fprintf(stderr, "%s\n", buf);
  rusm_rt_destroy(rt);
  rusm__dash_free(d);
  rusm__demo_free(demo);
  return RUSM__CLI_OK;
bad:
  usage(stderr);
  return RUSM__CLI_USAGE;
}
