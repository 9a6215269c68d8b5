/*
 * cmd_node.c — `rusm node`: runs one cluster node until SIGINT / SIGTERM
 * (docs/internals/cluster-cli.md).
 *
 * The node registers three demo factories that other nodes may start with
 * rusm_spawn_on: "echo" (answers every message to its sender, same tag and
 * payload), "sink" (counts messages; answers TAG_REPORT with the count) and
 * "crash" (exits with the custom reason it is told). Its own echo process
 * holds the global name "echo@NAME".
 *
 * stdout is line-oriented and machine-readable: `listening NAME ID
 * HOST:PORT` first, then `nodeup NAME` / `nodedown NAME` per member, and
 * with --control the answers to the commands read from stdin (one per
 * line, see control_help). Log lines (refused peers ...) go to stderr.
 *
 * Threads: main (takes the stop signals with sigwait), the "agent" (an
 * attached process: it holds the monitors, gets the node events and runs
 * the commands, so every answer and event comes out in one order), and
 * with --control a reader of stdin that hands each line to the agent.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cmd.h"
#include "rusm/cluster.h"

/* The demo factories' protocol (user tags). Other programs speak it too
 * (src/bench/distributed_fanout.c): keep the values. */
#define TAG_TEXT UINT64_C(0x726e6f6400000001)   /* text, printed by `recv` */
#define TAG_REPORT UINT64_C(0x726e6f6400000002) /* sink: send your count */
#define TAG_COUNT UINT64_C(0x726e6f6400000003)  /* sink's answer: u64 */
#define TAG_CRASH                                                              \
  UINT64_C(0x726e6f6400000004) /* crash: exit, reason = data                   \
                                */
/* Between the threads of this program. */
#define TAG_CMD UINT64_C(0x726e6f6400000010)
#define TAG_SYNC UINT64_C(0x726e6f6400000011)
#define TAG_QUIT UINT64_C(0x726e6f6400000012)

#define MAX_SEEDS 64
#define MAX_MONITORS 1024
#define MAX_UP 512
#define LINE_MAX_LEN 4096
#define CALL_TIMEOUT_MS 5000

/* ---- the demo factories --------------------------------------------- */

static rusm_next echo_init(rusm_proc *self, void **state) {
  rusm_set_label(self, "echo");
  return rusm_next_wait();
}

static rusm_next echo_handle(rusm_proc *self, void *state, rusm_msg *m) {
  rusm_pid_t from = m ? rusm_msg_from(m) : RUSM_PID_NONE;
  if (from && !(rusm_msg_tag(m) & RUSM_TAG_SYSTEM))
    rusm_send(rusm_proc_rt(self), from, rusm_msg_tag(m), rusm_msg_data(m),
              rusm_msg_len(m));
  return rusm_next_wait();
}

static const rusm_stackless_ops echo_ops = {.init = echo_init,
                                            .handle = echo_handle};

static int echo_factory(rusm_rt *rt, void *ud, const void *arg, size_t len,
                        rusm_pid_t *out) {
  return rusm_spawn_stackless(rt, &echo_ops, NULL, NULL, out);
}

/* sink: the optional argument is {u64 expect, u64 notify}: when the count
 * reaches expect, TAG_COUNT goes to notify unasked. */
typedef struct sink {
  uint64_t count, expect;
  rusm_pid_t notify;
} sink;

static rusm_next sink_init(rusm_proc *self, void **state) {
  rusm_set_label(self, "sink");
  return rusm_next_wait();
}

static rusm_next sink_handle(rusm_proc *self, void *state, rusm_msg *m) {
  sink *s = state;
  if (!m || (rusm_msg_tag(m) & RUSM_TAG_SYSTEM))
    return rusm_next_wait();
  if (rusm_msg_tag(m) == TAG_REPORT) {
    if (rusm_msg_from(m))
      rusm_send(rusm_proc_rt(self), rusm_msg_from(m), TAG_COUNT, &s->count,
                sizeof s->count);
  } else if (++s->count == s->expect && s->notify) {
    rusm_send(rusm_proc_rt(self), s->notify, TAG_COUNT, &s->count,
              sizeof s->count);
  }
  return rusm_next_wait();
}

static void sink_terminate(rusm_proc *self, void *state,
                           const rusm_reason *why) {
  free(state);
}

static const rusm_stackless_ops sink_ops = {
    .init = sink_init, .handle = sink_handle, .terminate = sink_terminate};

static int sink_factory(rusm_rt *rt, void *ud, const void *arg, size_t len,
                        rusm_pid_t *out) {
  if (len != 0 && len != 16)
    return RUSM_EINVAL; /* the bytes come from another node: checked */
  sink *s = calloc(1, sizeof *s);
  if (!s)
    return RUSM_ENOMEM;
  if (len) {
    memcpy(&s->expect, arg, 8);
    memcpy(&s->notify, (const uint8_t *)arg + 8, 8);
  }
  int rc = rusm_spawn_stackless(rt, &sink_ops, s, NULL, out);
  if (rc < 0)
    free(s); /* never ran: terminate will not free it */
  return rc;
}

static rusm_next crash_init(rusm_proc *self, void **state) {
  rusm_set_label(self, "crash");
  return rusm_next_wait();
}

static rusm_next crash_handle(rusm_proc *self, void *state, rusm_msg *m) {
  if (!m || rusm_msg_tag(m) != TAG_CRASH)
    return rusm_next_wait();
  /* the runtime copies the reason's bytes right away */
  rusm_reason r = {RUSM_EXIT_CUSTOM, (uint32_t)rusm_msg_len(m),
                   rusm_msg_len(m) ? rusm_msg_data(m) : NULL};
  if (!r.len)
    r = rusm_reason_str("crash");
  return rusm_next_stop(r);
}

static const rusm_stackless_ops crash_ops = {.init = crash_init,
                                             .handle = crash_handle};

static int crash_factory(rusm_rt *rt, void *ud, const void *arg, size_t len,
                         rusm_pid_t *out) {
  return rusm_spawn_stackless(rt, &crash_ops, NULL, NULL, out);
}

/* ---- the program's state ------------------------------------------- */

typedef struct mon {
  rusm_ref ref;
  rusm_pid_t pid;
  char label[96];
} mon;

typedef struct cli_node {
  rusm_rt *rt;
  rusm_node *node; /* set before the agent's SYNC, then read-only */
  const char *name;
  pthread_mutex_t out_mu; /* one line at a time on stdout */

  pthread_mutex_t mu; /* the fields below */
  pthread_cond_t cv;
  bool agent_ready;
  int agent_rc;
  rusm_pid_t agent_pid;
  bool ctl_open; /* false once the runtime is going away */

  /* agent thread only */
  mon *mons;
  size_t nmons;
  char (*up)[64]; /* members printed as up */
  size_t nup;
} cli_node;

static void out(cli_node *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void out(cli_node *c, const char *fmt, ...) {
  pthread_mutex_lock(&c->out_mu);
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
  fflush(stdout);
  pthread_mutex_unlock(&c->out_mu);
}

static void log_line(void *ud, const char *line) {
  fprintf(stderr, "rusm %s\n", line);
}

/* Bytes as one printable token-friendly string: controls become '?'. */
static void printable(char *dst, size_t cap, const uint8_t *p, size_t len) {
  size_t k = 0;
  for (size_t i = 0; i < len && k + 1 < cap; i++)
    dst[k++] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
  dst[k] = '\0';
}

/* "noconnection", "custom:text" (spaces in the text become '_'). */
static void reason_text(char *dst, size_t cap, const rusm_reason *r) {
  int k = snprintf(dst, cap, "%s", rusm_exit_code_name(r->code));
  if (r->len && k >= 0 && (size_t)k + 2 < cap) {
    dst[k] = ':';
    printable(dst + k + 1, cap - (size_t)k - 1, r->data, r->len);
    for (char *s = dst + k + 1; *s; s++)
      if (*s == ' ')
        *s = '_';
  }
}

static const char *pid_str(rusm_pid_t pid, char *buf, size_t len) {
  rusm_pid_format(pid, buf, len);
  return buf;
}

/* "<node.slot.gen>" back into a pid. */
static bool parse_pid(const char *s, rusm_pid_t *out) {
  unsigned long v[3];
  if (*s++ != '<')
    return false;
  for (int i = 0; i < 3; i++) {
    char *end;
    if (*s < '0' || *s > '9')
      return false;
    errno = 0;
    v[i] = strtoul(s, &end, 10);
    if (errno || *end != (i < 2 ? '.' : '>'))
      return false;
    s = end + 1;
  }
  if (*s || v[0] > RUSM_PID_NODE_MAX || v[1] > RUSM_PID_SLOT_MAX || v[2] == 0 ||
      v[2] > RUSM_PID_GEN_MAX)
    return false;
  *out = rusm_pid_make((uint16_t)v[0], (uint32_t)v[1], (uint32_t)v[2]);
  return true;
}

/* ---- node events ------------------------------------------------------ */

static bool up_has(cli_node *c, const char *name, size_t *at) {
  for (size_t i = 0; i < c->nup; i++)
    if (strcmp(c->up[i], name) == 0) {
      *at = i;
      return true;
    }
  return false;
}

static void member_up(cli_node *c, const char *name) {
  size_t at;
  if (up_has(c, name, &at))
    return; /* the catch-up after subscribing saw it already */
  if (c->nup < MAX_UP)
    snprintf(c->up[c->nup++], sizeof c->up[0], "%s", name);
  out(c, "nodeup %s", name);
}

static void member_down(cli_node *c, const char *name) {
  size_t at;
  if (up_has(c, name, &at)) {
    memmove(c->up[at], c->up[c->nup - 1], sizeof c->up[0]);
    c->nup--;
  }
  out(c, "nodedown %s", name);
}

/* Members already up when the agent subscribed. */
static void catch_up(cli_node *c) {
  rusm_node_member m[64];
  size_t k = rusm_node_members(c->node, m, 64);
  for (size_t i = 0; i < k && i < 64; i++)
    if (!m[i].self && m[i].up)
      member_up(c, m[i].name);
}

/* ---- commands (agent thread) ------------------------------------------ */

static void control_help(cli_node *c) {
  static const char *const lines[] = {
      "help members",
      "help whereis NAME                 -> whereis NAME PID|none",
      "help send NAME TEXT               -> sent NAME PID (global name); "
      "replies: recv PID TEXT",
      "help send-pid PID TEXT            -> sent PID PID",
      "help crash PID [REASON]           -> sent PID PID; the crash process "
      "exits custom:REASON",
      "help report PID                   -> sent PID PID; the sink answers: "
      "count PID N",
      "help monitor-global NAME          -> monitoring NAME PID; later "
      "monitor-down NAME PID REASON",
      "help monitor PID                  -> monitoring PID PID",
      "help spawn NODE FACTORY [ARG]     -> spawned NODE FACTORY PID "
      "(monitored as FACTORY@NODE)",
      "help register NAME                -> registered NAME PID (a new echo "
      "under a global name)",
      "help stats                        -> stats key=value ...",
      "help ping [TOKEN]                 -> pong [TOKEN]",
      "help quit                         -> stops the node (as SIGTERM)",
      "help errors: error COMMAND DETAIL RUSM_E..."};
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
    out(c, "%s", lines[i]);
}

static void add_monitor(cli_node *c, rusm_ref ref, rusm_pid_t pid,
                        const char *label) {
  if (c->nmons == MAX_MONITORS) /* forget the oldest: a long-lived node */
    memmove(&c->mons[0], &c->mons[1], --c->nmons * sizeof c->mons[0]);
  mon *m = &c->mons[c->nmons++];
  m->ref = ref;
  m->pid = pid;
  snprintf(m->label, sizeof m->label, "%s", label);
}

static void on_down(cli_node *c, const rusm_msg *msg) {
  rusm_down_info d;
  if (rusm_msg_down(msg, &d) != 0)
    return;
  char pb[32], why[160];
  reason_text(why, sizeof why, &d.reason);
  for (size_t i = 0; i < c->nmons; i++)
    if (c->mons[i].ref == d.ref) {
      out(c, "monitor-down %s %s %s", c->mons[i].label,
          pid_str(d.pid, pb, sizeof pb), why);
      memmove(&c->mons[i], &c->mons[i + 1],
              (c->nmons - i - 1) * sizeof c->mons[0]);
      c->nmons--;
      return;
    }
  out(c, "monitor-down ? %s %s", pid_str(d.pid, pb, sizeof pb), why);
}

/* Splits off the next space-separated word of *s (NULL when none). */
static char *word(char **s) {
  char *p = *s;
  while (*p == ' ' || *p == '\t')
    p++;
  if (!*p)
    return NULL;
  char *w = p;
  while (*p && *p != ' ' && *p != '\t')
    p++;
  if (*p)
    *p++ = '\0';
  *s = p;
  return w;
}

/* The rest of the line, leading blanks skipped (possibly ""). */
static char *rest(char **s) {
  char *p = *s;
  while (*p == ' ' || *p == '\t')
    p++;
  *s = p + strlen(p);
  return p;
}

static void send_to(cli_node *c, const char *label, rusm_pid_t pid,
                    uint64_t tag, const char *text) {
  char pb[32];
  int rc = rusm_send(c->rt, pid, tag, text, strlen(text));
  if (rc < 0)
    out(c, "error send %s %s", label, rusm_err_name(rc));
  else
    out(c, "sent %s %s", label, pid_str(pid, pb, sizeof pb));
}

static void cmd_members(cli_node *c) {
  rusm_node_member m[64];
  size_t k = rusm_node_members(c->node, m, 64);
  char line[64 * 65 + 32];
  int len = snprintf(line, sizeof line, "members %zu", k);
  for (size_t i = 0; i < k && i < 64 && len > 0 && (size_t)len < sizeof line;
       i++)
    len += snprintf(line + len, sizeof line - (size_t)len, " %s", m[i].name);
  out(c, "%s", line);
}

static void cmd_stats(cli_node *c) {
  rusm_node_stats s;
  rusm_node_stats_get(c->node, &s);
  out(c,
      "stats members_up=%llu frames_out=%llu frames_in=%llu bytes_out=%llu "
      "bytes_in=%llu msgs_dropped=%llu peers_refused=%llu bad_frames=%llu "
      "claims_rejected=%llu noconnection=%llu",
      (unsigned long long)s.members_up, (unsigned long long)s.frames_out,
      (unsigned long long)s.frames_in, (unsigned long long)s.bytes_out,
      (unsigned long long)s.bytes_in, (unsigned long long)s.msgs_dropped,
      (unsigned long long)s.peers_refused, (unsigned long long)s.bad_frames,
      (unsigned long long)s.claims_rejected,
      (unsigned long long)s.noconnection);
}

static void cmd_spawn(cli_node *c, rusm_proc *self, char *args) {
  char *node = word(&args), *factory = word(&args), *arg = rest(&args);
  if (!node || !factory) {
    out(c, "error spawn usage: spawn NODE FACTORY [ARG]");
    return;
  }
  rusm_pid_t pid = RUSM_PID_NONE;
  rusm_ref ref = 0;
  int rc = rusm_spawn_on(self, node, factory, *arg ? arg : NULL, strlen(arg),
                         RUSM_SPAWN_MONITOR, CALL_TIMEOUT_MS, &pid, &ref);
  if (rc < 0) {
    out(c, "error spawn %s %s %s", node, factory, rusm_err_name(rc));
    return;
  }
  char label[96], pb[32];
  snprintf(label, sizeof label, "%s@%s", factory, node);
  add_monitor(c, ref, pid, label);
  out(c, "spawned %s %s %s", node, factory, pid_str(pid, pb, sizeof pb));
}

static void cmd_monitor(cli_node *c, rusm_proc *self, const char *label,
                        rusm_pid_t pid) {
  rusm_ref ref = 0;
  char pb[32];
  int rc = rusm_monitor(self, pid, &ref);
  if (rc < 0) {
    out(c, "error monitor %s %s", label, rusm_err_name(rc));
    return;
  }
  /* the entry goes in before any Down can be taken: this thread takes it */
  add_monitor(c, ref, pid, label);
  out(c, "monitoring %s %s", label, pid_str(pid, pb, sizeof pb));
}

static void cmd_register(cli_node *c, const char *name) {
  rusm_pid_t pid;
  char pb[32];
  int rc = rusm_spawn_stackless(c->rt, &echo_ops, NULL, NULL, &pid);
  if (rc == 0) {
    rc = rusm_register_global(c->node, name, pid);
    if (rc < 0)
      rusm_kill(c->rt, pid);
  }
  if (rc < 0)
    out(c, "error register %s %s", name, rusm_err_name(rc));
  else
    out(c, "registered %s %s", name, pid_str(pid, pb, sizeof pb));
}

static void run_command(cli_node *c, rusm_proc *self, char *line) {
  char *s = line;
  char *cmd = word(&s);
  if (!cmd || cmd[0] == '#')
    return;
  char pb[32];
  rusm_pid_t pid;
  if (strcmp(cmd, "members") == 0) {
    cmd_members(c);
  } else if (strcmp(cmd, "whereis") == 0) {
    char *name = word(&s);
    if (!name) {
      out(c, "error whereis usage: whereis NAME");
      return;
    }
    pid = rusm_whereis_global(c->node, name);
    out(c, "whereis %s %s", name, pid ? pid_str(pid, pb, sizeof pb) : "none");
  } else if (strcmp(cmd, "send") == 0) {
    char *name = word(&s), *text = rest(&s);
    if (!name) {
      out(c, "error send usage: send NAME TEXT");
      return;
    }
    pid = rusm_whereis_global(c->node, name);
    if (!pid)
      out(c, "error send %s %s", name, rusm_err_name(RUSM_ENOTFOUND));
    else
      send_to(c, name, pid, TAG_TEXT, text);
  } else if (strcmp(cmd, "send-pid") == 0 || strcmp(cmd, "crash") == 0 ||
             strcmp(cmd, "report") == 0) {
    char *p = word(&s), *text = rest(&s);
    if (!p || !parse_pid(p, &pid)) {
      out(c, "error %s usage: %s <node.slot.gen> [TEXT]", cmd, cmd);
      return;
    }
    uint64_t tag = cmd[0] == 'c'   ? TAG_CRASH
                   : cmd[0] == 'r' ? TAG_REPORT
                                   : TAG_TEXT;
    send_to(c, "PID", pid, tag, cmd[0] == 'r' ? "" : text);
  } else if (strcmp(cmd, "monitor-global") == 0) {
    char *name = word(&s);
    if (!name) {
      out(c, "error monitor usage: monitor-global NAME");
      return;
    }
    pid = rusm_whereis_global(c->node, name);
    if (!pid)
      out(c, "error monitor %s %s", name, rusm_err_name(RUSM_ENOTFOUND));
    else
      cmd_monitor(c, self, name, pid);
  } else if (strcmp(cmd, "monitor") == 0) {
    char *p = word(&s);
    if (!p || !parse_pid(p, &pid))
      out(c, "error monitor usage: monitor <node.slot.gen>");
    else
      cmd_monitor(c, self, "PID", pid);
  } else if (strcmp(cmd, "spawn") == 0) {
    cmd_spawn(c, self, s);
  } else if (strcmp(cmd, "register") == 0) {
    char *name = word(&s);
    if (!name)
      out(c, "error register usage: register NAME");
    else
      cmd_register(c, name);
  } else if (strcmp(cmd, "stats") == 0) {
    cmd_stats(c);
  } else if (strcmp(cmd, "ping") == 0) {
    char *tok = word(&s);
    out(c, tok ? "pong %s" : "pong%s", tok ? tok : "");
  } else if (strcmp(cmd, "help") == 0) {
    control_help(c);
  } else if (strcmp(cmd, "quit") == 0 || strcmp(cmd, "stop") == 0) {
    kill(getpid(), SIGTERM); /* main takes it with sigwait */
  } else {
    out(c, "error unknown-command %s", cmd);
  }
}

/* ---- the agent: an attached process ---------------------------------- */

static void on_message(cli_node *c, rusm_proc *self, rusm_msg *m) {
  uint64_t tag = rusm_msg_tag(m);
  char pb[32], text[LINE_MAX_LEN];
  if (tag == TAG_CMD) {
    printable(text, sizeof text, rusm_msg_data(m), rusm_msg_len(m));
    run_command(c, self, text);
  } else if (tag == RUSM_TAG_NODEUP || tag == RUSM_TAG_NODEDOWN) {
    printable(text, 64, rusm_msg_data(m), rusm_msg_len(m));
    if (tag == RUSM_TAG_NODEUP)
      member_up(c, text);
    else
      member_down(c, text);
  } else if (tag == RUSM_TAG_DOWN) {
    on_down(c, m);
  } else if (tag == RUSM_TAG_EXIT) {
    rusm_exit_info x;
    if (rusm_msg_exit(m, &x) == 0) {
      reason_text(text, sizeof text, &x.reason);
      out(c, "exit %s %s", pid_str(x.from, pb, sizeof pb), text);
    }
  } else if (tag == TAG_TEXT) {
    printable(text, sizeof text, rusm_msg_data(m), rusm_msg_len(m));
    out(c, "recv %s %s", pid_str(rusm_msg_from(m), pb, sizeof pb), text);
  } else if (tag == TAG_COUNT && rusm_msg_len(m) == 8) {
    uint64_t n;
    memcpy(&n, rusm_msg_data(m), 8);
    out(c, "count %s %llu", pid_str(rusm_msg_from(m), pb, sizeof pb),
        (unsigned long long)n);
  } else if (tag == RUSM_TAG_GLOBAL_LOST) {
    printable(text, sizeof text, rusm_msg_data(m), rusm_msg_len(m));
    out(c, "global-lost %s", text);
  } else {
    out(c, "msg %s 0x%llx %zu", pid_str(rusm_msg_from(m), pb, sizeof pb),
        (unsigned long long)tag, rusm_msg_len(m));
  }
}

static bool sync_or_quit(const rusm_msg *m, void *arg) {
  return rusm_msg_tag(m) == TAG_SYNC || rusm_msg_tag(m) == TAG_QUIT;
}

static void *agent_main(void *arg) {
  cli_node *c = arg;
  rusm_proc *self = NULL;
  int rc = rusm_attach(c->rt, &self);
  pthread_mutex_lock(&c->mu);
  c->agent_rc = rc;
  c->agent_pid = rc == 0 ? rusm_self(self) : RUSM_PID_NONE;
  c->agent_ready = true;
  pthread_cond_signal(&c->cv);
  pthread_mutex_unlock(&c->mu);
  if (rc < 0)
    return NULL;
  /* Nothing is printed before SYNC (events wait in the mailbox), so that
   * `listening` is the first line. QUIT may come instead when start
   * fails. */
  rusm_msg *m = NULL;
  rusm_filter first = {0, 0, sync_or_quit, NULL};
  bool quit = rusm_receive(self, &first, -1, &m) != 0;
  if (!quit) {
    quit = rusm_msg_tag(m) == TAG_QUIT;
    rusm_msg_free(m);
  }
  if (!quit)
    catch_up(c);
  while (!quit && rusm_receive(self, NULL, -1, &m) == 0) {
    quit = rusm_msg_tag(m) == TAG_QUIT;
    if (!quit)
      on_message(c, self, m);
    rusm_msg_free(m);
  }
  rusm_detach(self);
  return NULL;
}

/* ---- the control reader (stdin) -------------------------------------- */

static void hand_line(cli_node *c, const char *line, size_t len) {
  pthread_mutex_lock(&c->mu);
  if (c->ctl_open)
    rusm_send(c->rt, c->agent_pid, TAG_CMD, line, len);
  pthread_mutex_unlock(&c->mu);
}

/* Plain read(2), no stdio: this thread may still be blocked in it when the
 * program exits. End of input stops the node, as SIGTERM does. */
static void *control_main(void *arg) {
  cli_node *c = arg;
  char buf[LINE_MAX_LEN];
  size_t len = 0;
  bool skipping = false; /* the rest of an over-long line */
  for (;;) {
    char chunk[1024];
    ssize_t k = read(STDIN_FILENO, chunk, sizeof chunk);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      break;
    for (ssize_t i = 0; i < k; i++) {
      char ch = chunk[i];
      if (ch == '\n') {
        if (!skipping)
          hand_line(c, buf, len && buf[len - 1] == '\r' ? len - 1 : len);
        len = 0;
        skipping = false;
      } else if (!skipping && len + 1 < sizeof buf) {
        buf[len++] = ch;
      } else if (!skipping) {
        hand_line(c, buf, len); /* cut, the tail dropped */
        skipping = true;
      }
    }
  }
  if (len && !skipping)
    hand_line(c, buf, len);
  pthread_mutex_lock(&c->mu);
  bool open = c->ctl_open;
  pthread_mutex_unlock(&c->mu);
  if (open)
    kill(getpid(), SIGTERM);
  return NULL;
}

/* ---- command line -------------------------------------------------- */

static void usage(FILE *to) {
  fprintf(to,
          "usage: rusm node --name NAME --id N --listen HOST:PORT\n"
          "                 [--seed HOST:PORT]... [--certs DIR]\n"
          "                 [--ca FILE] [--cert FILE] [--key FILE]\n"
          "                 [--probe-ms MS] [--schedulers K] [--control]\n"
          "\n"
          "Runs a cluster node (QUIC over UDP, mutual TLS) until SIGINT or\n"
          "SIGTERM, then leaves the cluster. Make the certificates with\n"
          "`rusm cluster ca init` and `rusm cluster cert issue NAME`.\n"
          "\n"
          "  --name NAME        the node's name; its certificate must name it\n"
          "  --id N             node id in pids, 1..%u, unique in the cluster\n"
          "  --listen HOST:PORT UDP address (port 0 picks one; printed)\n"
          "  --seed HOST:PORT   a member to join through (repeatable)\n"
          "  --certs DIR        DIR/ca.pem, DIR/NAME.pem and DIR/NAME.key\n"
          "  --ca/--cert/--key  the same files one by one (override --certs)\n"
          "  --probe-ms MS      failure-detector period (default 200)\n"
          "  --schedulers K     scheduler threads (default: one per core)\n"
          "  --control          read commands from stdin (`help` lists them);\n"
          "                     end of input stops the node\n"
          "\n"
          "stdout: `listening NAME ID HOST:PORT`, then `nodeup NAME` and\n"
          "`nodedown NAME` as members come and go, one line each.\n"
          "Factories for rusm_spawn_on: echo, sink, crash; this node's echo\n"
          "process is registered globally as echo@NAME.\n"
          "Exit status: 0 stopped by a signal, 1 failed, 2 bad arguments.\n",
          (unsigned)RUSM_NODE_ID_MAX);
}

#define bad(...) rusm__cli_bad("node", usage, __VA_ARGS__)

typedef struct node_args {
  const char *name, *listen, *ca, *cert, *key, *certs;
  const char *seeds[MAX_SEEDS];
  size_t nseeds;
  unsigned long id, probe_ms, schedulers;
  bool control;
} node_args;

static bool num_arg(const char *v, unsigned long lo, unsigned long hi,
                    unsigned long *out) {
  char *end;
  errno = 0;
  unsigned long x = strtoul(v, &end, 10);
  if (errno || *end || end == v || v[0] == '-' || x < lo || x > hi)
    return false;
  *out = x;
  return true;
}

/* HOST:PORT with a non-empty host ([v6] allowed) and a port 0..65535. */
static bool addr_ok(const char *s) {
  const char *colon = strrchr(s, ':');
  unsigned long port;
  return colon && colon != s && num_arg(colon + 1, 0, 65535, &port);
}

static bool name_ok(const char *s) {
  size_t n = 0;
  for (; s[n]; n++) {
    char ch = s[n];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
      return false;
  }
  return n >= 1 && n <= 63;
}

/* 0, RUSM__CLI_USAGE (message printed), or -1 for --help. */
static int parse_args(int argc, char **argv, node_args *a) {
  static const char *const valued[] = {
      "--name", "--id",  "--listen", "--seed",     "--ca",
      "--cert", "--key", "--certs",  "--probe-ms", "--schedulers"};
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i], *v = NULL;
    if (!arg)
      return bad("missing argument");
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)
      return -1;
    if (strcmp(arg, "--control") == 0) {
      a->control = true;
      continue;
    }
    size_t k = 0;
    const char *opt = NULL;
    for (size_t j = 0; j < sizeof valued / sizeof valued[0] && !opt; j++) {
      k = strlen(valued[j]);
      if (strncmp(arg, valued[j], k) == 0 && (arg[k] == '\0' || arg[k] == '='))
        opt = valued[j];
    }
    if (!opt)
      return bad("unexpected '%s'", arg);
    if (arg[k] == '=')
      v = arg + k + 1;
    else if (i + 1 < argc && argv[i + 1])
      v = argv[++i];
    else
      return bad("%s needs a value", opt);
    if (strcmp(opt, "--name") == 0) {
      a->name = v;
    } else if (strcmp(opt, "--id") == 0) {
      if (!num_arg(v, 1, RUSM_NODE_ID_MAX, &a->id))
        return bad("--id: '%s' is not a node id (1..%u)", v,
                   (unsigned)RUSM_NODE_ID_MAX);
    } else if (strcmp(opt, "--listen") == 0) {
      a->listen = v;
    } else if (strcmp(opt, "--seed") == 0) {
      if (a->nseeds == MAX_SEEDS)
        return bad("at most %d seeds", MAX_SEEDS);
      if (!addr_ok(v))
        return bad("--seed: '%s' is not HOST:PORT", v);
      a->seeds[a->nseeds++] = v;
    } else if (strcmp(opt, "--ca") == 0) {
      a->ca = v;
    } else if (strcmp(opt, "--cert") == 0) {
      a->cert = v;
    } else if (strcmp(opt, "--key") == 0) {
      a->key = v;
    } else if (strcmp(opt, "--certs") == 0) {
      a->certs = v;
    } else if (strcmp(opt, "--probe-ms") == 0) {
      if (!num_arg(v, 10, 60000, &a->probe_ms))
        return bad("--probe-ms: '%s' is not 10..60000", v);
    } else if (!num_arg(v, 1, 1024, &a->schedulers)) {
      return bad("--schedulers: '%s' is not 1..1024", v);
    }
  }
  if (!a->name || !a->id || !a->listen)
    return bad("--name, --id and --listen are required");
  if (!name_ok(a->name))
    return bad("--name: '%s' is not a node name (1..63 of A-Z a-z 0-9 . _ -)",
               a->name);
  if (!addr_ok(a->listen))
    return bad("--listen: '%s' is not HOST:PORT", a->listen);
  if (!a->certs && (!a->ca || !a->cert || !a->key))
    return bad("give --certs DIR, or --ca, --cert and --key");
  return 0;
}

/* Starts the agent thread and waits for its pid. */
static int agent_start(cli_node *c, pthread_t *th) {
  if (pthread_create(th, NULL, agent_main, c) != 0)
    return RUSM_ESYS;
  pthread_mutex_lock(&c->mu);
  while (!c->agent_ready)
    pthread_cond_wait(&c->cv, &c->mu);
  int rc = c->agent_rc;
  pthread_mutex_unlock(&c->mu);
  if (rc < 0)
    pthread_join(*th, NULL);
  return rc;
}

static void agent_stop(cli_node *c, pthread_t th) {
  pthread_mutex_lock(&c->mu);
  c->ctl_open = false; /* the reader sends nothing more */
  pthread_mutex_unlock(&c->mu);
  rusm_send(c->rt, c->agent_pid, TAG_QUIT, NULL, 0);
  pthread_join(th, NULL);
}

static int start_node(cli_node *c, const node_args *a) {
  char ca[4096], cert[4096], key[4096];
  if (a->certs) {
    snprintf(ca, sizeof ca, "%s/ca.pem", a->certs);
    snprintf(cert, sizeof cert, "%s/%s.pem", a->certs, a->name);
    snprintf(key, sizeof key, "%s/%s.key", a->certs, a->name);
  }
  rusm_node_opts o;
  rusm_node_opts_init(&o);
  o.name = a->name;
  o.listen = a->listen;
  o.seeds = a->seeds;
  o.n_seeds = a->nseeds;
  o.ca_file = a->ca ? a->ca : ca;
  o.cert_file = a->cert ? a->cert : cert;
  o.key_file = a->key ? a->key : key;
  o.probe_ms = (uint32_t)a->probe_ms;
  o.log = log_line;
  int rc = rusm_node_start(c->rt, &o, &c->node);
  if (rc < 0) {
    fprintf(stderr, "rusm node: cannot start %s: %s (%s)\n", a->name,
            rusm_strerror(rc), rusm_err_name(rc));
    return rc;
  }
  if ((rc = rusm_node_factory(c->node, "echo", echo_factory, NULL)) < 0 ||
      (rc = rusm_node_factory(c->node, "sink", sink_factory, NULL)) < 0 ||
      (rc = rusm_node_factory(c->node, "crash", crash_factory, NULL)) < 0) {
    fprintf(stderr, "rusm node: factories: %s\n", rusm_strerror(rc));
    return rc;
  }
  char gname[80];
  rusm_pid_t echo = RUSM_PID_NONE;
  snprintf(gname, sizeof gname, "echo@%s", a->name);
  rc = rusm_spawn_stackless(c->rt, &echo_ops, NULL, NULL, &echo);
  if (rc == 0)
    rc = rusm_register_global(c->node, gname, echo);
  if (rc < 0) {
    fprintf(stderr, "rusm node: global name %s: %s (%s)\n", gname,
            rusm_strerror(rc), rusm_err_name(rc));
    return rc;
  }
  rc = rusm_node_subscribe(c->node, c->agent_pid);
  if (rc < 0)
    fprintf(stderr, "rusm node: subscribe: %s\n", rusm_strerror(rc));
  return rc;
}

int rusm__cmd_node(int argc, char **argv) {
  node_args a;
  memset(&a, 0, sizeof a);
  int prc = parse_args(argc, argv, &a);
  if (prc < 0) {
    usage(stdout);
    return RUSM__CLI_OK;
  }
  if (prc)
    return prc;

  /* Blocked before any thread exists (they all inherit the mask); main
   * takes them with sigwait. A closed stdout must not kill the node. */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);
  signal(SIGPIPE, SIG_IGN);

  /* static: the control thread may still look at it while the program
   * exits */
  static cli_node c;
  c.name = a.name;
  c.ctl_open = true;
  pthread_mutex_init(&c.out_mu, NULL);
  pthread_mutex_init(&c.mu, NULL);
  pthread_cond_init(&c.cv, NULL);
  c.mons = calloc(MAX_MONITORS, sizeof *c.mons);
  c.up = calloc(MAX_UP, sizeof *c.up);
  rusm_rt_opts ro;
  rusm_rt_opts_init(&ro);
  ro.node_id = (uint16_t)a.id;
  ro.schedulers = (uint32_t)a.schedulers;
  pthread_t agent;
  memset(&agent, 0, sizeof agent);
  int rc = c.mons && c.up ? rusm_rt_create(&ro, &c.rt) : RUSM_ENOMEM;
  bool agent_on = false;
  if (rc == 0 && (rc = agent_start(&c, &agent)) == 0)
    agent_on = true;
  if (rc < 0)
    fprintf(stderr, "rusm node: %s\n", rusm_strerror(rc));
  else
    rc = start_node(&c, &a); /* says what failed */
  if (rc < 0) {
    if (agent_on)
      agent_stop(&c, agent);
    rusm_node_stop(c.node);
    if (c.rt)
      rusm_rt_destroy(c.rt);
    free(c.mons);
    free(c.up);
    return rc == RUSM_ENODE_ADDR || rc == RUSM_ENODE_NAME ? RUSM__CLI_USAGE
                                                          : RUSM__CLI_FAILED;
  }

  rusm_node_member self;
  rusm_node_members(c.node, &self, 1);
  out(&c, "listening %s %u %s", a.name, (unsigned)a.id, self.addr);
  rusm_send(c.rt, c.agent_pid, TAG_SYNC, NULL, 0);
  if (a.control) {
    pthread_t ctl;
    if (pthread_create(&ctl, NULL, control_main, &c) == 0)
      pthread_detach(ctl); /* may stay blocked in read() until exit */
    else
      fprintf(stderr, "rusm node: no control thread; running without\n");
  }

  int sig = 0;
  while (sigwait(&stop, &sig) != 0) {
  }
  fprintf(stderr, "rusm node: %s: %s, leaving the cluster\n", a.name,
          sig == SIGINT ? "interrupted" : "terminated");
  agent_stop(&c, agent);
  rusm_node_stop(c.node);
  rusm_rt_shutdown(c.rt, 2000, NULL);
  rusm_rt_destroy(c.rt);
  free(c.mons);
  free(c.up);
  /* the mutexes stay: the control thread may still hold c.mu's address */
  return RUSM__CLI_OK;
}
