/*
 * cmd_top.c — `rusm top`: runs the demo application and refreshes a table
 * of its processes, sorted, like etop. SIGINT / SIGTERM stop it through
 * the runtime's graceful shutdown, whose report is printed.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cmd.h"
#include "cli/demo.h"
#include "rusm/metrics.h"
#include "rusm/observer.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static void usage(FILE *to) {
  fprintf(to,
          "usage: rusm top [--once] [--interval MS] [--limit N]\n"
          "                [--sort reductions|mailbox|memory|handled|pid]\n"
          "                [--schedulers K]\n"
          "Runs the demo application (a supervised key-value server, a pool\n"
          "of workers that crash now and then, a ticker and a client) and\n"
          "shows its processes. Ctrl-C shuts the runtime down gracefully.\n");
}

static int parse_u(const char *s, unsigned long max, unsigned long *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || *end || end == s || v > max)
    return -1;
  *out = v;
  return 0;
}

static const char *const k_status[] = {"runnable", "running", "waiting",
                                       "exiting"};

static void draw(rusm_rt *rt, rusm_obs_sort by, size_t limit, bool clear) {
  size_t total = 0;
  rusm_obs_processes(rt, NULL, 0, &total);
  size_t cap = total + 64;
  rusm_obs_proc *ps = calloc(cap, sizeof *ps);
  if (!ps)
    return;
  rusm_obs_processes(rt, ps, cap, &total);
  size_t n = total < cap ? total : cap;
  rusm_obs_sort_procs(ps, n, by);
  rusm_metrics m;
  rusm_metrics_snapshot(rt, &m);
  if (clear)
    printf("\033[H\033[2J");
  printf("rusm top — %llu processes, %llu spawned, %llu exited, %llu msgs "
         "sent, %u schedulers:",
         (unsigned long long)m.live, (unsigned long long)m.spawned,
         (unsigned long long)m.exited, (unsigned long long)m.sent,
         m.schedulers);
  for (uint32_t i = 0; i < m.schedulers && i < RUSM_METRICS_MAX_SCHED; i++)
    printf(" %3.0f%%", m.sched[i].utilisation * 100.0);
  printf("\n\n%-16s %-12s %-10s %-10s %-9s %4s %8s %10s %12s %8s %3s\n", "PID",
         "NAME", "KIND", "LABEL", "STATUS", "SCH", "MAILBOX", "HANDLED",
         "REDUCTIONS", "MEMORY", "LNK");
  for (size_t i = 0; i < n && i < limit; i++) {
    rusm_obs_proc *p = &ps[i];
    char pid[32];
    rusm_pid_format(p->pid, pid, sizeof pid);
    printf("%-16s %-12.12s %-10.10s %-10.10s %-9s %4u %8llu %10llu %12llu "
           "%8llu %3u\n",
           pid, p->name, p->kind, p->label,
           (unsigned)p->status < 4 ? k_status[p->status] : "?", p->scheduler,
           (unsigned long long)p->mailbox_len,
           (unsigned long long)p->messages_handled,
           (unsigned long long)p->reductions, (unsigned long long)p->memory,
           p->links);
  }
  fflush(stdout);
  free(ps);
}

int rusm__cmd_top(int argc, char **argv) {
  bool once = false;
  unsigned long interval = 1000, limit = 30, scheds = 0;
  rusm_obs_sort by = RUSM_OBS_BY_REDUCTIONS;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--once") == 0) {
      once = true;
    } else if (strcmp(a, "--interval") == 0 && v) {
      if (parse_u(v, 3600000, &interval) || interval < 50)
        goto bad;
      i++;
    } else if (strcmp(a, "--limit") == 0 && v) {
      if (parse_u(v, 100000, &limit))
        goto bad;
      i++;
    } else if (strcmp(a, "--schedulers") == 0 && v) {
      if (parse_u(v, RUSM_METRICS_MAX_SCHED, &scheds))
        goto bad;
      i++;
    } else if (strcmp(a, "--sort") == 0 && v) {
      if (strcmp(v, "reductions") == 0)
        by = RUSM_OBS_BY_REDUCTIONS;
      else if (strcmp(v, "mailbox") == 0)
        by = RUSM_OBS_BY_MAILBOX;
      else if (strcmp(v, "memory") == 0)
        by = RUSM_OBS_BY_MEMORY;
      else if (strcmp(v, "handled") == 0)
        by = RUSM_OBS_BY_HANDLED;
      else if (strcmp(v, "pid") == 0)
        by = RUSM_OBS_BY_PID;
      else
        goto bad;
      i++;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return RUSM__CLI_OK;
    } else {
      goto bad;
    }
  }
  rusm_rt_opts o;
  rusm_rt_opts_init(&o);
  if (scheds)
    o.schedulers = (uint32_t)scheds;
  rusm_rt *rt;
  int rc = rusm_rt_create(&o, &rt);
  if (rc) {
    fprintf(stderr, "rusm top: %s\n", rusm_strerror(rc));
    return RUSM__CLI_FAILED;
  }
  rusm__demo *demo = NULL;
  rc = rusm__demo_start(rt, &demo);
  if (rc) {
    fprintf(stderr, "rusm top: demo: %s\n", rusm_strerror(rc));
    rusm_rt_destroy(rt);
    return RUSM__CLI_FAILED;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  (void)sigaction(SIGINT, &sa, NULL); /* cannot fail for these */
  (void)sigaction(SIGTERM, &sa, NULL);
  bool tty = isatty(STDOUT_FILENO);
  if (once) {
    struct timespec ts = {0, 300 * 1000000L}; /* let the demo run a little */
    nanosleep(&ts, NULL);
    draw(rt, by, limit, false);
  } else {
    while (!g_stop) {
      draw(rt, by, limit, tty);
      struct timespec ts = {(time_t)(interval / 1000),
                            (long)(interval % 1000) * 1000000L};
      nanosleep(&ts, NULL); /* a signal cuts it short */
    }
  }
  rusm_shutdown_report rep;
  rusm_rt_shutdown(rt, 5000, &rep);
  char buf[2048];
  rusm_shutdown_report_format(&rep, buf, sizeof buf);
  fprintf(once ? stdout : stderr, "%s\n", buf);
  rusm_rt_destroy(rt);
  rusm__demo_free(demo);
  return RUSM__CLI_OK;
bad:
  usage(stderr);
  return RUSM__CLI_USAGE;
}
