/*
 * dashboard_bench.c — scenario runs as child processes.
 *
 * A run is `exe bench <scenario> --json --progress [--n N] [--repeat R]`,
 * so its figures never share a process with the server. Each run has a
 * thread of its own, attached to the runtime as a process (label "bench",
 * visible in the observer): it forks the child, then blocks in poll(2) on
 * the child's stdout and stderr pipes (a thread of ours, not a scheduler
 * thread, so blocking costs nothing; no busy loop), turns each progress
 * line into a `bench` progress message, and the last line into the run's
 * Result. A child that exits non-zero, dies, or prints anything that is
 * not its JSON ends the run with a `bench` error message.
 *
 * Children die with the dashboard: rusm__dash_runs_stop kills them, and
 * PR_SET_PDEATHSIG kills them if the dashboard dies without stopping (it
 * fires when the thread that forked exits, which is the reader thread,
 * alive until it has reaped the child).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/dashboard.h"

#define MAX_LINE (1u << 20) /* a longer stdout line is garbage */
#define MAX_KEPT 100        /* results kept per scenario */
#define ERR_TAIL 1024       /* bytes of the child's stderr kept */

typedef struct run {
  rusm__dash_runs *rs;
  uint64_t id;
  const rusm_bench_scenario *s;
  size_t sidx;
  uint64_t n;
  uint32_t repeat;
  pthread_t thread;
  pid_t child; /* under rs->mu; 0 before the fork and once reaped */
  atomic_bool done;
  struct run *next;
} run;

struct rusm__dash_runs {
  rusm__dash *d;
  rusm_rt *rt;
  char *exe;
  pthread_mutex_t mu; /* everything below */
  bool stopping;
  bool *running;   /* per scenario index */
  cJSON **results; /* per scenario index: an array, oldest first */
  uint64_t next_id;
  run *runs;
};

/* ---- lines of the child's stdout ----------------------------------------- */

static rusm__dash_line garbage(char *err, size_t errlen, const char *what,
                               const char *line, size_t len) {
  char head[64], clean[96];
  size_t n = len < sizeof head - 1 ? len : sizeof head - 1;
  memcpy(head, line, n);
  head[n] = '\0';
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)head[i] < 0x20)
      head[i] = ' ';
  snprintf(err, errlen, "bench printed %s: %s%s", what,
           rusm__dash_utf8(head, clean, sizeof clean), len > n ? "..." : "");
  return RUSM__DASH_LINE_GARBAGE;
}

rusm__dash_line rusm__dash_parse_line(const char *line, size_t len, cJSON **obj,
                                      char *err, size_t errlen) {
  *obj = NULL;
  while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' ||
                 line[len - 1] == '\t'))
    len--;
  if (len == 0)
    return RUSM__DASH_LINE_EMPTY;
  cJSON *o = cJSON_ParseWithLength(line, len);
  if (!cJSON_IsObject(o)) {
    cJSON_Delete(o);
    return garbage(err, errlen, "a line that is not a JSON object", line, len);
  }
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
  const cJSON *ops = cJSON_GetObjectItemCaseSensitive(o, "ops_per_sec");
  if (cJSON_IsString(type) && strcmp(type->valuestring, "progress") == 0) {
    if (!cJSON_IsNumber(ops)) {
      cJSON_Delete(o);
      return garbage(err, errlen, "a progress line without ops_per_sec", line,
                     len);
    }
    /* The protocol's "run": the line's figures without its envelope. */
    cJSON_DeleteItemFromObjectCaseSensitive(o, "type");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "scenario");
    *obj = o;
    return RUSM__DASH_LINE_PROGRESS;
  }
  const cJSON *sc = cJSON_GetObjectItemCaseSensitive(o, "scenario");
  if (!type && cJSON_IsString(sc) && cJSON_IsNumber(ops)) {
    *obj = o;
    return RUSM__DASH_LINE_RESULT;
  }
  cJSON_Delete(o);
  return garbage(err, errlen, "JSON that is neither progress nor a result",
                 line, len);
}

/* ---- the reader thread ----------------------------------------------------
 */

static void send_msg(run *r, cJSON *m) {
  char *text = rusm__dash_print(m);
  if (text)
    rusm__dash_broadcast(r->rs->d, 0, text);
  free(text);
}

/* In the child, between fork and exec: async-signal-safe calls only. */
__attribute__((noreturn)) static void child_exec(pid_t parent, const char *exe,
                                                 char *const argv[], int out_w,
                                                 int err_w) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) /* the parent died before prctl took */
    _exit(127);
  setpgid(0, 0); /* a group of its own: a kill reaches its children too */
  sigset_t none;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, NULL); /* the dashboard blocks some */
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  (void)sigaction(SIGPIPE, &dfl, NULL);
  (void)sigaction(SIGINT, &dfl, NULL);
  (void)sigaction(SIGTERM, &dfl, NULL);
  int in = open("/dev/null", O_RDONLY);
  if (in < 0 || dup2(in, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
    _exit(127);
  execv(exe, argv);
  static const char msg[] = "cannot run the benchmark program\n";
  ssize_t w = write(2, msg, sizeof msg - 1);
  (void)w;
  _exit(127);
}

typedef struct reader {
  run *r;
  char *line;
  size_t len, cap;
  bool overflow;
  cJSON *result;
  char err[512];
  char tail[ERR_TAIL + 1]; /* the child's stderr, last bytes */
  size_t tail_len;
} reader;

/* Kills the child's process group (under rs->mu, child > 0). */
static void kill_group(pid_t child) { kill(-child, SIGKILL); }

static void kill_child(run *r) {
  pthread_mutex_lock(&r->rs->mu);
  if (r->child > 0)
    kill_group(r->child);
  pthread_mutex_unlock(&r->rs->mu);
}

static void on_line(reader *rd, const char *line, size_t len) {
  if (rd->err[0])
    return; /* failed already: the rest is noise */
  cJSON *obj;
  char err[sizeof rd->err];
  /* (a buffer of its own: handing rd->err to another unit makes the
   * static analyser forget what else rd holds) */
  rusm__dash_line kind =
      rusm__dash_parse_line(line, len, &obj, err, sizeof err);
  switch (kind) {
  case RUSM__DASH_LINE_PROGRESS: {
    cJSON *m = rusm__dash_bench_msg(rd->r->id, rd->r->s->name, "progress");
    if (m)
      cJSON_AddItemToObject(m, "run", obj);
    else
      cJSON_Delete(obj);
    send_msg(rd->r, m);
    break;
  }
  case RUSM__DASH_LINE_RESULT:
    cJSON_Delete(rd->result);
    rd->result = obj;
    break;
  case RUSM__DASH_LINE_GARBAGE:
    memcpy(rd->err, err, sizeof err);
    kill_child(rd->r); /* its figures can no longer be trusted */
    break;
  case RUSM__DASH_LINE_EMPTY:
    break;
  }
}

/* Room for one more byte of the line; false past MAX_LINE (or out of
 * memory). */
static bool line_room(reader *rd) {
  if (rd->len + 1 < rd->cap)
    return true;
  size_t cap = rd->cap ? rd->cap * 2 : 4096;
  if (cap > MAX_LINE)
    return false;
  char *l = realloc(rd->line, cap);
  if (!l)
    return false;
  rd->line = l;
  rd->cap = cap;
  return true;
}

static void on_stdout(reader *rd, const char *buf, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (buf[i] == '\n') {
      if (rd->overflow && !rd->err[0]) {
        snprintf(rd->err, sizeof rd->err, "bench printed a line over %u bytes",
                 MAX_LINE);
        kill_child(rd->r);
      } else if (!rd->overflow) {
        on_line(rd, rd->line, rd->len);
      }
      rd->len = 0;
      rd->overflow = false;
      continue;
    }
    if (rd->overflow)
      continue;
    if (line_room(rd))
      rd->line[rd->len++] = buf[i];
    else
      rd->overflow = true;
  }
}

static void on_stderr(reader *rd, const char *buf, size_t n) {
  if (n >= ERR_TAIL) {
    buf += n - ERR_TAIL;
    n = ERR_TAIL;
  }
  if (rd->tail_len + n > ERR_TAIL) {
    size_t drop = rd->tail_len + n - ERR_TAIL;
    memmove(rd->tail, rd->tail + drop, rd->tail_len - drop);
    rd->tail_len -= drop;
  }
  memcpy(rd->tail + rd->tail_len, buf, n);
  rd->tail_len += n;
  rd->tail[rd->tail_len] = '\0';
}

/* The last non-empty line of the child's stderr, into out. */
static const char *last_line(reader *rd, char *out, size_t len) {
  size_t end = rd->tail_len;
  while (end && (rd->tail[end - 1] == '\n' || rd->tail[end - 1] == '\r'))
    end--;
  size_t start = end;
  while (start && rd->tail[start - 1] != '\n')
    start--;
  char tmp[ERR_TAIL + 1];
  memcpy(tmp, rd->tail + start, end - start);
  tmp[end - start] = '\0';
  return rusm__dash_utf8(tmp, out, len);
}

/* Reads both pipes until both end. */
static void pump(reader *rd, int out_r, int err_r) {
  struct pollfd fds[2] = {{out_r, POLLIN, 0}, {err_r, POLLIN, 0}};
  int open_fds = 2;
  char buf[8192];
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !fds[i].revents)
        continue;
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        fds[i].fd = -1; /* poll ignores it from now on */
        open_fds--;
        continue;
      }
      if (i == 0)
        on_stdout(rd, buf, (size_t)n);
      else
        on_stderr(rd, buf, (size_t)n);
    }
  }
  if (rd->len && !rd->overflow) /* a last line without its newline */
    on_line(rd, rd->line, rd->len);
}

static void finish(run *r, reader *rd, int status, int spawn_err) {
  rusm__dash_runs *rs = r->rs;
  cJSON *m = NULL;
  char err[768] = "";
  pthread_mutex_lock(&rs->mu);
  bool stopping = rs->stopping;
  pthread_mutex_unlock(&rs->mu);
  char line[ERR_TAIL + 1];
  if (spawn_err) {
    char why[128];
    snprintf(err, sizeof err, "could not start the benchmark: %s",
             strerror_r(spawn_err, why, sizeof why));
  } else if (stopping) {
    snprintf(err, sizeof err, "cancelled: the dashboard is stopping");
  } else if (rd->err[0]) {
    snprintf(err, sizeof err, "%s", rd->err);
  } else if (WIFSIGNALED(status)) {
    snprintf(err, sizeof err, "bench was killed by signal %d",
             WTERMSIG(status));
  } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const char *why = last_line(rd, line, sizeof line);
    snprintf(err, sizeof err, "bench exited with status %d%s%s",
             WIFEXITED(status) ? WEXITSTATUS(status) : -1, why[0] ? ": " : "",
             why);
  } else if (!rd->result) {
    snprintf(err, sizeof err, "bench printed no result");
  }
  cJSON *kept = NULL;
  if (!err[0]) {
    cJSON_DeleteItemFromObjectCaseSensitive(rd->result, "id");
    cJSON_DeleteItemFromObjectCaseSensitive(rd->result, "finished_at");
    cJSON_AddNumberToObject(rd->result, "id", (double)r->id);
    cJSON_AddNumberToObject(rd->result, "finished_at",
                            (double)rusm__dash_now_ms());
    kept = cJSON_Duplicate(rd->result, true);
  }
  /* Stored and the scenario free again before the message goes out, so
   * a page reacting to "done" finds the result and may run again. */
  pthread_mutex_lock(&rs->mu);
  if (kept) {
    cJSON *list = rs->results[r->sidx];
    if (!cJSON_AddItemToArray(list, kept))
      cJSON_Delete(kept);
    while (cJSON_GetArraySize(list) > MAX_KEPT)
      cJSON_DeleteItemFromArray(list, 0);
  }
  rs->running[r->sidx] = false;
  pthread_mutex_unlock(&rs->mu);
  if (err[0]) {
    m = rusm__dash_bench_msg(r->id, r->s->name, "error");
    if (m)
      cJSON_AddStringToObject(m, "error", err);
  } else {
    m = rusm__dash_bench_msg(r->id, r->s->name, "done");
    if (m) {
      cJSON_AddItemToObject(m, "result", rd->result);
      rd->result = NULL;
    }
  }
  send_msg(r, m);
}

static void *run_thread(void *arg) {
  run *r = arg;
  rusm__dash_runs *rs = r->rs;
  rusm_proc *self = NULL;
  if (rusm_attach(rs->rt, &self) == 0)
    rusm_set_label(self, "bench");
  else
    self = NULL; /* shutting down: run without a pid */
  send_msg(r, rusm__dash_bench_msg(r->id, r->s->name, "started"));

  char nbuf[32], rbuf[16];
  char *argv[10];
  int k = 0;
  argv[k++] = rs->exe;
  argv[k++] = (char *)"bench";
  argv[k++] = (char *)r->s->name;
  argv[k++] = (char *)"--json";
  argv[k++] = (char *)"--progress";
  if (r->n) {
    snprintf(nbuf, sizeof nbuf, "%" PRIu64, r->n);
    argv[k++] = (char *)"--n";
    argv[k++] = nbuf;
  }
  if (r->repeat) {
    snprintf(rbuf, sizeof rbuf, "%" PRIu32, r->repeat);
    argv[k++] = (char *)"--repeat";
    argv[k++] = rbuf;
  }
  argv[k] = NULL;

  reader rd;
  memset(&rd, 0, sizeof rd);
  rd.r = r;
  int outp[2] = {-1, -1}, errp[2] = {-1, -1};
  int status = 0;
  int spawn_err = 0;
  if (pipe2(outp, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0) {
    spawn_err = errno;
  } else {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
      child_exec(parent, rs->exe, argv, outp[1], errp[1]);
    if (pid < 0)
      spawn_err = errno;
    if (pid > 0) {
      close(outp[1]);
      close(errp[1]);
      outp[1] = errp[1] = -1;
      setpgid(pid, pid); /* also here: the group exists before any kill */
      pthread_mutex_lock(&rs->mu);
      r->child = pid;
      if (rs->stopping) /* stop ran before we had a pid to kill */
        kill_group(pid);
      pthread_mutex_unlock(&rs->mu);
      pump(&rd, outp[0], errp[0]);
      /* No kill may reach the pid once it is reaped (it could be reused):
       * forget it first. (The group may outlive the child only through
       * grandchildren, which rusm bench has none of.) */
      pthread_mutex_lock(&rs->mu);
      r->child = 0;
      pthread_mutex_unlock(&rs->mu);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }
  for (int i = 0; i < 2; i++) {
    if (outp[i] >= 0)
      close(outp[i]);
    if (errp[i] >= 0)
      close(errp[i]);
  }
  finish(r, &rd, status, spawn_err);
  cJSON_Delete(rd.result);
  free(rd.line);
  if (self)
    rusm_detach(self);
  atomic_store_explicit(&r->done, true, memory_order_release);
  return NULL;
}

/* ---- runs ---------------------------------------------------------------- */

int rusm__dash_runs_new(rusm__dash *d, rusm_rt *rt, const char *exe,
                        rusm__dash_runs **out) {
  rusm__dash_runs *rs = calloc(1, sizeof *rs);
  if (!rs)
    return RUSM_ENOMEM;
  size_t n = rusm_bench_count();
  rs->d = d;
  rs->rt = rt;
  rs->exe = strdup(exe ? exe : "/proc/self/exe");
  rs->running = calloc(n + 1, sizeof *rs->running);
  rs->results = calloc(n + 1, sizeof(cJSON *));
  rs->next_id = 1;
  bool ok = rs->exe && rs->running && rs->results;
  for (size_t i = 0; ok && i < n; i++)
    ok = (rs->results[i] = cJSON_CreateArray()) != NULL;
  pthread_mutex_init(&rs->mu, NULL);
  if (!ok) {
    rusm__dash_runs_free(rs);
    return RUSM_ENOMEM;
  }
  *out = rs;
  return 0;
}

/* Joins and frees runs whose threads are done (under rs->mu). */
static void reap(rusm__dash_runs *rs) {
  for (run **pp = &rs->runs; *pp;) {
    run *r = *pp;
    if (atomic_load_explicit(&r->done, memory_order_acquire)) {
      pthread_join(r->thread, NULL);
      *pp = r->next;
      free(r);
    } else {
      pp = &r->next;
    }
  }
}

int rusm__dash_run(rusm__dash_runs *rs, const char *scenario, uint64_t n,
                   uint32_t repeat, uint64_t *id, char *err, size_t errlen) {
  const rusm_bench_scenario *s = rusm_bench_find(scenario);
  if (!s) {
    snprintf(err, errlen, "unknown scenario");
    return RUSM_ENOTFOUND;
  }
  size_t idx = 0;
  while (rusm_bench_at(idx) != s)
    idx++;
  if (n && n < s->min_n) {
    snprintf(err, errlen, "n must be at least %" PRIu64 " for %s", s->min_n,
             s->name);
    return RUSM_EINVAL;
  }
  if (repeat > RUSM_BENCH_MAX_REPEAT) {
    snprintf(err, errlen, "repeat must be at most %d", RUSM_BENCH_MAX_REPEAT);
    return RUSM_EINVAL;
  }
  run *r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(err, errlen, "out of memory");
    return RUSM_ENOMEM;
  }
  r->rs = rs;
  r->s = s;
  r->sidx = idx;
  r->n = n;
  r->repeat = repeat;
  pthread_mutex_lock(&rs->mu);
  reap(rs);
  int rc = 0;
  if (rs->stopping) {
    snprintf(err, errlen, "the dashboard is stopping");
    rc = RUSM_ESHUTDOWN;
  } else if (rs->running[idx]) {
    snprintf(err, errlen, "%s is already running", s->name);
    rc = RUSM_EBUSY;
  } else {
    r->id = rs->next_id++;
    rs->running[idx] = true;
    if (pthread_create(&r->thread, NULL, run_thread, r) != 0) {
      rs->running[idx] = false;
      snprintf(err, errlen, "cannot start a thread");
      rc = RUSM_ESYS;
    } else {
      r->next = rs->runs;
      rs->runs = r;
      *id = r->id;
    }
  }
  pthread_mutex_unlock(&rs->mu);
  if (rc)
    free(r);
  return rc;
}

char *rusm__dash_results_json(rusm__dash_runs *rs) {
  cJSON *o = cJSON_CreateObject();
  cJSON *res = o ? cJSON_AddObjectToObject(o, "results") : NULL;
  if (!res) {
    cJSON_Delete(o);
    return NULL;
  }
  pthread_mutex_lock(&rs->mu);
  for (size_t i = 0; i < rusm_bench_count(); i++)
    if (cJSON_GetArraySize(rs->results[i]) > 0)
      cJSON_AddItemToObject(res, rusm_bench_at(i)->name,
                            cJSON_Duplicate(rs->results[i], true));
  pthread_mutex_unlock(&rs->mu);
  return rusm__dash_print(o);
}

void rusm__dash_runs_stop(rusm__dash_runs *rs) {
  if (!rs)
    return;
  pthread_mutex_lock(&rs->mu);
  rs->stopping = true;
  for (run *r = rs->runs; r; r = r->next)
    if (r->child > 0)
      kill_group(r->child);
  run *list = rs->runs;
  rs->runs = NULL;
  pthread_mutex_unlock(&rs->mu);
  /* Without the lock: the threads take it to finish. */
  while (list) {
    run *r = list;
    list = r->next;
    pthread_join(r->thread, NULL);
    free(r);
  }
}

void rusm__dash_runs_free(rusm__dash_runs *rs) {
  if (!rs)
    return;
  rusm__dash_runs_stop(rs);
  if (rs->results)
    for (size_t i = 0; i < rusm_bench_count(); i++)
      cJSON_Delete(rs->results[i]);
  free(rs->results);
  free(rs->running);
  free(rs->exe);
  pthread_mutex_destroy(&rs->mu);
  free(rs);
}
