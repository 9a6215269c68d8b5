/*
 * Unit tests: the dashboard's server (src/cli/dashboard_*.c).
 *  - Every message of the feed and every object of the API, built by the
 *    real builders from a live runtime, checked with cJSON against
 *    docs/dashboard-protocol.md (fields, types, allowed values).
 *  - What the page sends (subscribe, run, POST /api/run bodies) and what
 *    a benchmark child prints (progress, result, garbage).
 *  - /metrics: every line a comment or `name{labels} value`, HELP and TYPE
 *    before the samples, counters that move after spawning and restarts.
 *  - A whole server on loopback: the page and its cache headers, the API,
 *    the feed (hello first, subscriptions answered at once), scenario runs
 *    as child processes (a stand-in script for `rusm bench`: progress,
 *    result, garbage, failure, one run per scenario), and the guards.
 */
#include "support.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <sys/stat.h>

#include "cli/dashboard.h"
#include "http_client.h"

/* ---- schema checks (docs/dashboard-protocol.md) ---------------------------
 */

static const cJSON *field(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!v) {
    char *t = cJSON_PrintUnformatted(o);
    fail_msg("no \"%s\" in %s", key, t);
  }
  return v;
}

static double num(const cJSON *o, const char *key) {
  const cJSON *v = field(o, key);
  if (!cJSON_IsNumber(v))
    fail_msg("\"%s\" is not a number", key);
  return v->valuedouble;
}

static const char *str(const cJSON *o, const char *key) {
  const cJSON *v = field(o, key);
  if (!cJSON_IsString(v))
    fail_msg("\"%s\" is not a string", key);
  return v->valuestring;
}

static bool boolean(const cJSON *o, const char *key) {
  const cJSON *v = field(o, key);
  if (!cJSON_IsBool(v))
    fail_msg("\"%s\" is not a boolean", key);
  return cJSON_IsTrue(v);
}

/* A string, or null when nullable. NULL for null. */
static const char *str_or_null(const cJSON *o, const char *key) {
  const cJSON *v = field(o, key);
  if (cJSON_IsNull(v))
    return NULL;
  if (!cJSON_IsString(v))
    fail_msg("\"%s\" is neither a string nor null", key);
  return v->valuestring;
}

static const cJSON *arr(const cJSON *o, const char *key) {
  const cJSON *v = field(o, key);
  if (!cJSON_IsArray(v))
    fail_msg("\"%s\" is not an array", key);
  return v;
}

static bool one_of(const char *s, const char *const *set) {
  for (; *set; set++)
    if (strcmp(s, *set) == 0)
      return true;
  return false;
}

/* Exactly these keys, no others (the page relies on the documented set). */
static void keys_exactly(const cJSON *o, const char *const *keys) {
  size_t n = 0;
  for (; keys[n]; n++)
    field(o, keys[n]);
  assert_int_equal(cJSON_GetArraySize(o), n);
}

static bool pid_like(const char *s) {
  unsigned a, b, c;
  char tail;
  return sscanf(s, "<%u.%u.%u%c", &a, &b, &c, &tail) == 4 && tail == '>';
}

static void v_scenario(const cJSON *s) {
  static const char *const kinds[] = {"throughput", "latency", "memory", NULL};
  assert_true(str(s, "name")[0]);
  str(s, "summary");
  assert_true(one_of(str(s, "kind"), kinds));
  assert_true(num(s, "default_n") >= 1);
  boolean(s, "has_baseline");
  const char *per = str_or_null(s, "memory_per");
  if (strcmp(str(s, "kind"), "memory") == 0)
    assert_non_null(per);
  static const char *const keys[] = {"name",      "summary",      "kind",
                                     "default_n", "has_baseline", "memory_per",
                                     NULL};
  keys_exactly(s, keys);
}

static void v_result(const cJSON *r) {
  assert_true(str(r, "scenario")[0]);
  num(r, "n");
  num(r, "ops");
  num(r, "seconds");
  num(r, "ops_per_sec");
  arr(r, "runs");
  assert_true(num(r, "id") >= 1);
  assert_true(num(r, "finished_at") > 1e12); /* ms since the epoch */
}

static void v_process(const cJSON *p) {
  static const char *const status[] = {"runnable", "running", "waiting",
                                       "exiting", NULL};
  static const char *const keys[] = {
      "pid",          "name",      "kind",       "label", "status", "scheduler",
      "mailbox_len",  "handled",   "reductions", "shed",  "links",  "monitors",
      "monitored_by", "trap_exit", "memory",     NULL};
  keys_exactly(p, keys);
  assert_true(pid_like(str(p, "pid")));
  str(p, "name");
  assert_true(str(p, "kind")[0]);
  str(p, "label");
  assert_true(one_of(str(p, "status"), status));
  static const char *const nums[] = {
      "scheduler", "mailbox_len", "handled",      "reductions", "shed",
      "links",     "monitors",    "monitored_by", "memory",     NULL};
  for (const char *const *k = nums; *k; k++)
    assert_true(num(p, *k) >= 0);
  boolean(p, "trap_exit");
}

static void v_sup_node(const cJSON *n) {
  static const char *const strategies[] = {"one_for_one", "one_for_all",
                                           "rest_for_one", NULL};
  static const char *const keys[] = {"pid",        "parent",   "id",
                                     "supervisor", "strategy", "restarts",
                                     "children",   NULL};
  keys_exactly(n, keys);
  const char *pid = str_or_null(n, "pid");
  assert_true(!pid || pid_like(pid));
  const char *parent = str_or_null(n, "parent");
  assert_true(!parent || pid_like(parent));
  str(n, "id");
  const char *strat = str_or_null(n, "strategy");
  if (boolean(n, "supervisor"))
    assert_true(strat && one_of(strat, strategies));
  else
    assert_null(strat);
  assert_true(num(n, "restarts") >= 0);
  assert_true(num(n, "children") >= 0);
}

static const char *const k_types[] = {
    "hello", "metrics", "bench", "processes", "sup_tree", "error", NULL};

/* One server -> client message; returns its type. */
static const char *v_message(const cJSON *m) {
  assert_true(cJSON_IsObject(m));
  const char *type = str(m, "type");
  assert_true(one_of(type, k_types));
  if (strcmp(type, "hello") == 0) {
    assert_int_equal((int)num(m, "version"), 1);
    num(m, "node");
    assert_true(num(m, "schedulers") >= 1);
    const cJSON *s;
    assert_true(cJSON_GetArraySize(arr(m, "scenarios")) > 0);
    cJSON_ArrayForEach(s, arr(m, "scenarios")) v_scenario(s);
  } else if (strcmp(type, "metrics") == 0) {
    num(m, "t");
    const cJSON *x = field(m, "metrics");
    static const char *const nums[] = {"spawned",    "exited",    "live",
                                       "sent",       "delivered", "dropped",
                                       "shed",       "steals",    "alloc_bytes",
                                       "schedulers", NULL};
    for (const char *const *k = nums; *k; k++)
      num(x, *k);
    assert_true(cJSON_IsObject(field(x, "exited_by")));
    num(field(x, "exited_by"), "normal");
    const cJSON *s;
    assert_int_equal(cJSON_GetArraySize(arr(x, "sched")),
                     (int)num(x, "schedulers"));
    cJSON_ArrayForEach(s, arr(x, "sched")) {
      double u = num(s, "utilisation");
      assert_true(u >= 0 && u <= 1);
    }
  } else if (strcmp(type, "bench") == 0) {
    static const char *const states[] = {"started", "progress", "done", "error",
                                         NULL};
    assert_true(num(m, "id") >= 1);
    assert_true(str(m, "scenario")[0]);
    const char *state = str(m, "state");
    assert_true(one_of(state, states));
    if (strcmp(state, "progress") == 0) {
      const cJSON *run = field(m, "run");
      assert_true(num(run, "index") >= 0);
      num(run, "ops_per_sec");
      assert_null(cJSON_GetObjectItemCaseSensitive(run, "type"));
    } else if (strcmp(state, "done") == 0) {
      v_result(field(m, "result"));
      assert_string_equal(str(field(m, "result"), "scenario"),
                          str(m, "scenario"));
      assert_int_equal(num(field(m, "result"), "id"), num(m, "id"));
    } else if (strcmp(state, "error") == 0) {
      assert_true(str(m, "error")[0]);
    }
  } else if (strcmp(type, "processes") == 0) {
    num(m, "t");
    const cJSON *ps = arr(m, "processes");
    assert_true(num(m, "total") >= cJSON_GetArraySize(ps));
    assert_true(cJSON_GetArraySize(ps) <= 500);
    double last = 1e300;
    const cJSON *p;
    cJSON_ArrayForEach(p, ps) {
      v_process(p);
      assert_true(num(p, "reductions") <= last); /* sorted by reductions */
      last = num(p, "reductions");
    }
  } else if (strcmp(type, "sup_tree") == 0) {
    num(m, "t");
    const cJSON *n;
    cJSON_ArrayForEach(n, arr(m, "nodes")) {
      v_sup_node(n);
      /* parents come before their children */
      const char *parent = str_or_null(n, "parent");
      if (!parent)
        continue;
      bool seen = false;
      for (const cJSON *q = arr(m, "nodes")->child; q && q != n; q = q->next)
        if (str_or_null(q, "pid") && strcmp(str_or_null(q, "pid"), parent) == 0)
          seen = true;
      assert_true(seen);
    }
  } else {
    assert_true(str(m, "error")[0]);
  }
  return type;
}

/* Checks a printed message: valid JSON, and the schema. */
static const char *v_text(const char *text, cJSON **keep) {
  cJSON *m = cJSON_Parse(text);
  if (!m)
    fail_msg("not JSON: %s", text);
  const char *type = v_message(m);
  static char t[16];
  snprintf(t, sizeof t, "%s", type);
  if (keep)
    *keep = m;
  else
    cJSON_Delete(m);
  return t;
}

/* ---- a runtime with something to observe -----------------------------------
 */

static t_env g_env;
static rusm_pid_t g_sup;

/* Registers itself, then tells the test thread (which waits for it: a
 * supervisor's start returns before its child's first step). */
static rusm_next kv_init(rusm_proc *self, void **state) {
  rusm_register(rusm_proc_rt(self), "kv", rusm_self(self));
  rusm_send(rusm_proc_rt(self), g_env.pid, T_TAG_READY, NULL, 0);
  return rusm_next_wait();
}

static rusm_next kv_handle(rusm_proc *self, void *state, rusm_msg *m) {
  return rusm_next_wait();
}

static const rusm_stackless_ops kv_ops = {kv_init, kv_handle, NULL};

static int start_kv(rusm_rt *rt, void *arg, rusm_pid_t *out) {
  rusm_spawn_opts o;
  rusm_spawn_opts_init(&o);
  o.link = true;
  return rusm_spawn_stackless(rt, &kv_ops, arg, &o, out);
}

/* A supervisor holding a worker registered as "kv". */
static void start_sup(void) {
  rusm_child_spec spec = {"kv", start_kv, NULL, RUSM_PERMANENT, 1000, false};
  rusm_sup_flags f;
  rusm_sup_flags_init(&f);
  f.intensity = 10;
  assert_int_equal(rusm_sup_start(g_env.rt, &f, &spec, 1, NULL, &g_sup), 0);
  rusm_register(g_env.rt, "test_sup", g_sup);
  rusm_filter ready = rusm_filter_tag(T_TAG_READY);
  rusm_msg *m;
  assert_int_equal(rusm_receive(g_env.me, &ready, T_GUARD_MS, &m), 0);
  rusm_msg_free(m);
}

static void start_app(void) {
  t_start(&g_env, 2);
  start_sup();
}

/* ---- messages built from a live runtime ------------------------------------
 */

static void test_messages_match_the_protocol(void **state) {
  start_app();
  rusm_rt *rt = g_env.rt;
  char *t;

  t = rusm__dash_print(rusm__dash_hello_msg(rt));
  assert_string_equal(v_text(t, NULL), "hello");
  free(t);

  t = rusm__dash_print(rusm__dash_metrics_msg(rt, rusm__dash_now_ms()));
  assert_string_equal(v_text(t, NULL), "metrics");
  free(t);

  cJSON *m;
  t = rusm__dash_print(rusm__dash_processes_msg(rt, rusm__dash_now_ms(), 500));
  assert_string_equal(v_text(t, &m), "processes");
  bool kv = false;
  const cJSON *p;
  cJSON_ArrayForEach(p, arr(m, "processes")) kv |=
      strcmp(str(p, "name"), "kv") == 0;
  assert_true(kv);
  cJSON_Delete(m);
  free(t);
  /* at most max rows, total counts them all */
  t = rusm__dash_print(rusm__dash_processes_msg(rt, rusm__dash_now_ms(), 1));
  v_text(t, &m);
  assert_int_equal(cJSON_GetArraySize(arr(m, "processes")), 1);
  assert_true(num(m, "total") >= 3);
  cJSON_Delete(m);
  free(t);

  t = rusm__dash_print(rusm__dash_sup_tree_msg(rt, rusm__dash_now_ms()));
  assert_string_equal(v_text(t, &m), "sup_tree");
  assert_true(cJSON_GetArraySize(arr(m, "nodes")) >= 2);
  const cJSON *root = cJSON_GetArrayItem(arr(m, "nodes"), 0);
  assert_true(boolean(root, "supervisor"));
  assert_null(str_or_null(root, "parent"));
  assert_string_equal(str(root, "strategy"), "one_for_one");
  cJSON_Delete(m);
  free(t);

  t = rusm__dash_print(rusm__dash_error_msg("bad \xff input"));
  assert_string_equal(v_text(t, &m), "error");
  assert_string_equal(str(m, "error"), "bad ? input"); /* valid UTF-8 */
  cJSON_Delete(m);
  free(t);

  /* bench messages as the run's thread builds them */
  cJSON *obj;
  char err[256];
  const char *line = "{\"type\":\"progress\",\"scenario\":\"ping-pong\","
                     "\"index\":0,\"ops_per_sec\":12.5,\"p50_us\":1.5}";
  assert_int_equal(
      rusm__dash_parse_line(line, strlen(line), &obj, err, sizeof err),
      RUSM__DASH_LINE_PROGRESS);
  cJSON *b = rusm__dash_bench_msg(3, "ping-pong", "progress");
  cJSON_AddItemToObject(b, "run", obj);
  t = rusm__dash_print(b);
  assert_string_equal(v_text(t, NULL), "bench");
  free(t);
  line = "{\"scenario\":\"ping-pong\",\"n\":10,\"ops\":10,\"seconds\":0.5,"
         "\"ops_per_sec\":20,\"runs\":[]}";
  assert_int_equal(
      rusm__dash_parse_line(line, strlen(line), &obj, err, sizeof err),
      RUSM__DASH_LINE_RESULT);
  cJSON_AddNumberToObject(obj, "id", 3);
  cJSON_AddNumberToObject(obj, "finished_at", (double)rusm__dash_now_ms());
  b = rusm__dash_bench_msg(3, "ping-pong", "done");
  cJSON_AddItemToObject(b, "result", obj);
  t = rusm__dash_print(b);
  assert_string_equal(v_text(t, NULL), "bench");
  free(t);
  b = rusm__dash_bench_msg(3, "ping-pong", "started");
  t = rusm__dash_print(b);
  assert_string_equal(v_text(t, NULL), "bench");
  free(t);
  b = rusm__dash_bench_msg(4, "fan-in", "error");
  cJSON_AddStringToObject(b, "error", "bench exited with status 1");
  t = rusm__dash_print(b);
  assert_string_equal(v_text(t, NULL), "bench");
  free(t);

  /* every scenario of the registry as an object */
  cJSON *list = rusm__dash_scenarios_json();
  const cJSON *s;
  assert_int_equal(cJSON_GetArraySize(arr(list, "scenarios")),
                   (int)rusm_bench_count());
  cJSON_ArrayForEach(s, arr(list, "scenarios")) v_scenario(s);
  cJSON_Delete(list);
  t_stop(&g_env);
}

static void test_utf8_cleaning(void **state) {
  char buf[64];
  assert_string_equal(rusm__dash_utf8("plain", buf, sizeof buf), "plain");
  assert_string_equal(rusm__dash_utf8("caf\xc3\xa9", buf, sizeof buf),
                      "caf\xc3\xa9");
  assert_string_equal(rusm__dash_utf8("\xc0\xaf", buf, sizeof buf), "??");
  assert_string_equal(rusm__dash_utf8("\xed\xa0\x80", buf, sizeof buf), "???");
  assert_string_equal(rusm__dash_utf8("a\xe2\x82", buf, sizeof buf), "a??");
  assert_string_equal(rusm__dash_utf8("\xf0\x9f\x98\x80", buf, sizeof buf),
                      "\xf0\x9f\x98\x80");
  char small[4];
  assert_string_equal(rusm__dash_utf8("\xf0\x9f\x98\x80", small, sizeof small),
                      "???"); /* a sequence never split */
}

/* ---- what the page sends ----------------------------------------------------
 */

static int parse(const char *text, bool run_body, rusm__dash_cmsg *c) {
  char err[160];
  return rusm__dash_parse_client(text, strlen(text), run_body, c, err,
                                 sizeof err);
}

static void test_client_messages(void **state) {
  rusm__dash_cmsg c;
  assert_int_equal(
      parse("{\"type\":\"subscribe\",\"topics\":[\"processes\",\"sup_tree\"]}",
            false, &c),
      0);
  assert_int_equal(c.kind, RUSM__DASH_C_SUBSCRIBE);
  assert_int_equal(c.topics, RUSM__DASH_T_PROCESSES | RUSM__DASH_T_SUP_TREE);
  assert_int_equal(parse("{\"type\":\"subscribe\",\"topics\":[]}", false, &c),
                   0);
  assert_int_equal(c.topics, 0);
  assert_int_equal(parse("{\"type\":\"run\",\"scenario\":\"ping-pong\","
                         "\"n\":100000,\"repeat\":3}",
                         false, &c),
                   0);
  assert_int_equal(c.kind, RUSM__DASH_C_RUN);
  assert_string_equal(c.scenario, "ping-pong");
  assert_int_equal(c.n, 100000);
  assert_int_equal(c.repeat, 3);
  assert_int_equal(parse("{\"scenario\":\"fan-in\"}", true, &c), 0);
  assert_int_equal(c.n, 0);
  assert_int_equal(c.repeat, 0);

  static const char *const bad[] = {
      "",
      "not json",
      "[1,2]",
      "{}",
      "{\"type\":7}",
      "{\"type\":\"dance\"}",
      "{\"type\":\"subscribe\"}",
      "{\"type\":\"subscribe\",\"topics\":[\"everything\"]}",
      "{\"type\":\"run\"}",
      "{\"type\":\"run\",\"scenario\":\"\"}",
      "{\"type\":\"run\",\"scenario\":5}",
      "{\"type\":\"run\",\"scenario\":\"a\",\"n\":-1}",
      "{\"type\":\"run\",\"scenario\":\"a\",\"n\":1.5}",
      "{\"type\":\"run\",\"scenario\":\"a\",\"n\":\"10\"}",
      "{\"type\":\"run\",\"scenario\":\"a\",\"repeat\":0}",
      "{\"type\":\"run\",\"scenario\":\"a\",\"repeat\":100000}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (parse(bad[i], false, &c) != RUSM_EINVAL)
      fail_msg("accepted: %s", bad[i]);
  assert_int_equal(parse("{\"n\":5}", true, &c), RUSM_EINVAL);
  char deep[256]; /* deeper nesting than the parser takes */
  memset(deep, '[', 100);
  memset(deep + 100, ']', 100);
  deep[200] = '\0';
  assert_int_equal(parse(deep, false, &c), RUSM_EINVAL);
}

static void test_child_lines(void **state) {
  cJSON *o;
  char err[256];
  const char *l = "{\"type\":\"progress\",\"scenario\":\"x\",\"index\":2,"
                  "\"ops_per_sec\":5}\r";
  assert_int_equal(rusm__dash_parse_line(l, strlen(l), &o, err, sizeof err),
                   RUSM__DASH_LINE_PROGRESS);
  assert_null(cJSON_GetObjectItem(o, "type"));
  assert_null(cJSON_GetObjectItem(o, "scenario"));
  assert_int_equal(num(o, "index"), 2);
  cJSON_Delete(o);
  assert_int_equal(rusm__dash_parse_line("  ", 2, &o, err, sizeof err),
                   RUSM__DASH_LINE_EMPTY);
  static const char *const garbage[] = {"hello",
                                        "[1]",
                                        "{\"scenario\":\"x\"}",
                                        "{\"type\":\"progress\",\"index\":0}",
                                        "{\"ops_per_sec\":1}",
                                        "{\"scenario\":\"x\",\"ops_per_sec\":1",
                                        "\x01\x02\x03"};
  for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
    err[0] = '\0';
    assert_int_equal(rusm__dash_parse_line(garbage[i], strlen(garbage[i]), &o,
                                           err, sizeof err),
                     RUSM__DASH_LINE_GARBAGE);
    assert_null(o);
    assert_non_null(strstr(err, "bench printed"));
  }
}

/* ---- /metrics
 * ---------------------------------------------------------------- */

static bool name_char(char ch, bool first) {
  return isalpha((unsigned char)ch) || ch == '_' || ch == ':' ||
         (!first && isdigit((unsigned char)ch));
}

/* Parses one exposition: every line a comment (# HELP / # TYPE) or a
 * sample `name{labels} value`; HELP and TYPE come before a metric's
 * samples. Returns the value of the sample `want` (name with labels), or
 * -1 when absent. */
static double prom_parse(const char *text, const char *want) {
  double found = -1;
  char typed[64][96];
  size_t ntyped = 0;
  const char *line = text;
  while (*line) {
    const char *nl = strchr(line, '\n');
    assert_non_null(nl); /* every line ends with a newline */
    char buf[512];
    size_t len = (size_t)(nl - line);
    assert_true(len > 0 && len < sizeof buf);
    memcpy(buf, line, len);
    buf[len] = '\0';
    line = nl + 1;
    if (buf[0] == '#') {
      char kind[8], name[96], rest[400];
      assert_int_equal(sscanf(buf, "# %7s %95s %399[^\n]", kind, name, rest),
                       3);
      assert_true(strcmp(kind, "HELP") == 0 || strcmp(kind, "TYPE") == 0);
      assert_true(strncmp(name, "rusm_", 5) == 0);
      if (strcmp(kind, "TYPE") == 0) {
        assert_true(strcmp(rest, "counter") == 0 || strcmp(rest, "gauge") == 0);
        if (strcmp(rest, "counter") == 0)
          assert_non_null(strstr(name, "_total"));
        assert_true(ntyped < 64);
        snprintf(typed[ntyped++], sizeof typed[0], "%s", name);
      }
      continue;
    }
    /* name */
    size_t i = 0;
    assert_true(name_char(buf[0], true));
    while (name_char(buf[i], false))
      i++;
    char name[96];
    memcpy(name, buf, i);
    name[i] = '\0';
    bool known = false;
    for (size_t k = 0; k < ntyped; k++)
      known |= strcmp(typed[k], name) == 0;
    if (!known)
      fail_msg("sample before its TYPE: %s", buf);
    /* {label="value",...} */
    if (buf[i] == '{') {
      i++;
      for (;;) {
        assert_true(name_char(buf[i], true));
        while (name_char(buf[i], false))
          i++;
        assert_true(buf[i] == '=' && buf[i + 1] == '"');
        i += 2;
        while (buf[i] && buf[i] != '"')
          i += buf[i] == '\\' ? 2 : 1;
        assert_true(buf[i] == '"');
        i++;
        if (buf[i] == ',') {
          i++;
          continue;
        }
        assert_true(buf[i] == '}');
        i++;
        break;
      }
    }
    assert_true(buf[i] == ' ');
    char *end;
    double v = strtod(buf + i + 1, &end);
    assert_true(*end == '\0' && end != buf + i + 1);
    buf[i] = '\0';
    if (strcmp(buf, want) == 0)
      found = v;
  }
  return found;
}

static double metric(rusm__dash_restarts *tr, const char *want) {
  size_t len;
  char *text = rusm__dash_prometheus(g_env.rt, tr, &len);
  assert_non_null(text);
  assert_int_equal(strlen(text), len);
  double v = prom_parse(text, want);
  free(text);
  return v;
}

static rusm_next quit_init(rusm_proc *self, void **state) {
  return rusm_next_stop(RUSM_REASON_NORMAL);
}

static const rusm_stackless_ops quit_ops = {quit_init, NULL, NULL};

static void test_prometheus(void **state) {
  t_start(&g_env, 2);
  rusm__dash_restarts tr;
  rusm__dash_restarts_init(&tr);

  /* counters move: processes spawned that exit normally. Waiting for the
   * runtime to be idle (the attached test thread aside) means their exits
   * are counted. */
  double spawned = metric(&tr, "rusm_spawned_total");
  double normal = metric(&tr, "rusm_exited_total{reason=\"normal\"}");
  for (int i = 0; i < 20; i++) {
    rusm_pid_t pid;
    assert_int_equal(
        rusm_spawn_stackless(g_env.rt, &quit_ops, NULL, NULL, &pid), 0);
  }
  assert_int_equal(rusm_rt_wait_idle(g_env.rt, T_GUARD_MS), 0);
  assert_true(metric(&tr, "rusm_spawned_total") >= spawned + 20);
  assert_true(metric(&tr, "rusm_exited_total{reason=\"normal\"}") >=
              normal + 20);

  start_sup();
  static const char *const names[] = {
      "rusm_processes",
      "rusm_spawned_total",
      "rusm_exited_total{reason=\"normal\"}",
      "rusm_exited_total{reason=\"killed\"}",
      "rusm_messages_sent_total",
      "rusm_messages_delivered_total",
      "rusm_messages_dropped_total",
      "rusm_messages_shed_total",
      "rusm_supervisor_restarts_total",
      "rusm_scheduler_utilisation{scheduler=\"0\"}",
      "rusm_scheduler_utilisation{scheduler=\"1\"}",
      "rusm_timers_pending",
      "rusm_tcp_connections_open",
      "rusm_wasm_instances",
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (metric(&tr, names[i]) < 0)
      fail_msg("missing: %s", names[i]);
  assert_int_equal(metric(&tr, "rusm_wasm_instances"), 0);
  assert_true(metric(&tr, "rusm_processes") >= 3);

  /* sends are counted when they are made */
  double sent = metric(&tr, "rusm_messages_sent_total");
  for (int i = 0; i < 5; i++)
    rusm_send_named(g_env.rt, "kv", 1, "x", 1);
  assert_true(metric(&tr, "rusm_messages_sent_total") >= sent + 5);

  /* a restart: kill the supervised worker, wait for its replacement */
  assert_int_equal(metric(&tr, "rusm_supervisor_restarts_total"), 0);
  rusm_pid_t kv = rusm_whereis(g_env.rt, "kv");
  rusm_ref ref;
  assert_int_equal(rusm_monitor(g_env.me, kv, &ref), 0);
  assert_int_equal(rusm_kill(g_env.rt, kv), 0);
  rusm_filter f = rusm_filter_tag(RUSM_TAG_DOWN);
  rusm_msg *m;
  assert_int_equal(rusm_receive(g_env.me, &f, T_GUARD_MS, &m), 0);
  rusm_msg_free(m);
  /* the supervisor answers calls only between its steps: once it answers,
   * the restart it does on the Exit it got first is done */
  rusm_sup_info info;
  assert_int_equal(rusm_sup_info_get(g_env.rt, g_sup, &info), 0);
  assert_int_equal(info.restarts, 1);
  assert_int_equal(metric(&tr, "rusm_supervisor_restarts_total"), 1);
  /* the supervisor itself goes: its restarts stay counted */
  assert_int_equal(rusm_sup_stop(g_env.rt, g_sup, T_GUARD_MS), 0);
  assert_int_equal(metric(&tr, "rusm_supervisor_restarts_total"), 1);
  rusm__dash_restarts_destroy(&tr);
  t_stop(&g_env);
}

/* ---- a whole server
 * ----------------------------------------------------------- */

static const unsigned char k_index[] = "<!doctype html><title>t</title>";
static const unsigned char k_js[] = "console.log(1)";
static const rusm__dash_asset k_assets[] = {
    {"/index.html", "text/html; charset=utf-8", "\"idx1\"", k_index,
     sizeof k_index - 1, 0},
    {"/assets/app-1234.js", "text/javascript; charset=utf-8", "\"js1\"", k_js,
     sizeof k_js - 1, 1},
};

/* A stand-in for `rusm bench <scenario> --json --progress [--n N]`. */
static const char k_script[] =
    "#!/bin/sh\n"
    "[ \"$1\" = bench ] && [ \"$3\" = --json ] && [ \"$4\" = --progress ] "
    "|| exit 2\n"
    "case \"$2\" in\n"
    "ping-pong)\n"
    "  echo '{\"type\":\"progress\",\"scenario\":\"ping-pong\",\"index\":0,"
    "\"ops_per_sec\":1000.5,\"baseline_ops_per_sec\":10}'\n"
    "  echo '{\"type\":\"progress\",\"scenario\":\"ping-pong\",\"index\":1,"
    "\"ops_per_sec\":2000.5}'\n"
    "  echo \"{\\\"scenario\\\":\\\"ping-pong\\\",\\\"n\\\":${6:-7},"
    "\\\"ops\\\":100,\\\"seconds\\\":0.05,\\\"ops_per_sec\\\":1500.25,"
    "\\\"runs\\\":[{\\\"seconds\\\":0.05,\\\"ops_per_sec\\\":1500.25}]}\" ;;\n"
    "fan-in) echo 'this is not JSON'; echo '{\"scenario\":\"fan-in\","
    "\"ops_per_sec\":1}' ;;\n"
    "spawn-storm) echo 'rusm bench: failed: out of memory' >&2; exit 1 ;;\n"
    "idle-memory) exec sleep 60 ;;\n"
    "*) exit 2 ;;\n"
    "esac\n";

typedef struct server {
  rusm__dash *d;
  uint16_t port;
  char dir[64], exe[96];
} server;

static void server_start(server *s) {
  start_app();
  snprintf(s->dir, sizeof s->dir, "%s", "/tmp/rusm-dash-XXXXXX");
  assert_non_null(mkdtemp(s->dir));
  snprintf(s->exe, sizeof s->exe, "%s/fake-rusm", s->dir);
  FILE *f = fopen(s->exe, "w");
  assert_non_null(f);
  fputs(k_script, f);
  fclose(f);
  chmod(s->exe, 0700);
  rusm__dash_opts o;
  memset(&o, 0, sizeof o);
  o.port = 0;
  o.assets = k_assets;
  o.nassets = 2;
  o.exe = s->exe;
  o.metrics_ms = 100;
  o.observe_ms = 200;
  assert_int_equal(rusm__dash_start(g_env.rt, &o, &s->d), 0);
  s->port = rusm__dash_port(s->d);
  assert_true(s->port != 0);
}

static void server_stop(server *s) {
  rusm__dash_stop(s->d);
  t_stop(&g_env);
  rusm__dash_free(s->d);
  unlink(s->exe);
  rmdir(s->dir);
}

/* The next feed message of type (others skipped, all checked). */
static cJSON *next_of(hc_conn *c, const char *type) {
  for (;;) {
    char *p = NULL;
    size_t n;
    int op = hc_ws_read(c, &p, &n);
    if (op < 0)
      fail_msg("the feed ended while waiting for %s", type);
    if (op != 1) {
      free(p);
      continue;
    }
    cJSON *m;
    const char *t = v_text(p, &m);
    free(p);
    if (strcmp(t, type) == 0)
      return m;
    cJSON_Delete(m);
  }
}

/* The next bench message of scenario (checked), as a cJSON object. */
static cJSON *next_bench(hc_conn *c, const char *scenario) {
  for (;;) {
    cJSON *m = next_of(c, "bench");
    if (strcmp(str(m, "scenario"), scenario) == 0)
      return m;
    cJSON_Delete(m);
  }
}

static void test_server_api_and_page(void **state) {
  server s;
  server_start(&s);
  hc_resp r;
  /* the page, with its cache headers */
  assert_int_equal(hc_request(s.port, "GET", "/", NULL, &r), 200);
  assert_string_equal(r.body, (const char *)k_index);
  assert_string_equal(hc_header(&r, "ETag"), "\"idx1\"");
  assert_string_equal(hc_header(&r, "Cache-Control"), "no-cache");
  assert_string_equal(hc_header(&r, "Content-Type"),
                      "text/html; charset=utf-8");
  hc_resp_free(&r);
  assert_int_equal(hc_request(s.port, "GET", "/assets/app-1234.js", NULL, &r),
                   200);
  assert_non_null(strstr(hc_header(&r, "Cache-Control"), "immutable"));
  hc_resp_free(&r);
  hc_conn *c = malloc(sizeof *c);
  hc_open(c, s.port);
  hc_sends(c->fd, "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "If-None-Match: \"other\", \"idx1\"\r\nConnection: close"
                  "\r\n\r\n");
  assert_true(hc_response(c, &r, false));
  assert_int_equal(r.status, 304);
  assert_int_equal(r.body_len, 0);
  hc_resp_free(&r);
  close(c->fd);
  assert_int_equal(hc_request(s.port, "GET", "/nope.js", NULL, &r), 404);
  hc_resp_free(&r);
  assert_int_equal(hc_request(s.port, "POST", "/index.html", "{}", &r), 405);
  hc_resp_free(&r);

  /* the API */
  cJSON *j;
  assert_int_equal(hc_request(s.port, "GET", "/api/scenarios", NULL, &r), 200);
  j = cJSON_Parse(r.body);
  const cJSON *sc;
  cJSON_ArrayForEach(sc, arr(j, "scenarios")) v_scenario(sc);
  cJSON_Delete(j);
  hc_resp_free(&r);
  assert_int_equal(hc_request(s.port, "GET", "/api/processes", NULL, &r), 200);
  assert_string_equal(v_text(r.body, NULL), "processes");
  hc_resp_free(&r);
  assert_int_equal(hc_request(s.port, "GET", "/api/sup-tree", NULL, &r), 200);
  assert_string_equal(v_text(r.body, NULL), "sup_tree");
  hc_resp_free(&r);
  assert_int_equal(hc_request(s.port, "GET", "/api/results", NULL, &r), 200);
  assert_string_equal(r.body, "{\"results\":{}}");
  hc_resp_free(&r);
  assert_int_equal(hc_request(s.port, "GET", "/metrics", NULL, &r), 200);
  assert_true(prom_parse(r.body, "rusm_processes") >= 3);
  assert_non_null(strstr(hc_header(&r, "Content-Type"), "version=0.0.4"));
  hc_resp_free(&r);

  /* refusals */
  assert_int_equal(
      hc_request(s.port, "POST", "/api/run", "{\"scenario\":1}", &r), 400);
  hc_resp_free(&r);
  assert_int_equal(
      hc_request(s.port, "POST", "/api/run", "{\"scenario\":\"no-such\"}", &r),
      404);
  assert_string_equal(r.body, "{\"error\":\"unknown scenario\"}");
  hc_resp_free(&r);
  assert_int_equal(hc_request(s.port, "POST", "/api/run",
                              "{\"scenario\":\"ping-pong\",\"n\":0}", &r),
                   400);
  hc_resp_free(&r);
  hc_open(c, s.port);
  hc_sends(c->fd, "POST /api/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type:"
                  " text/plain\r\nContent-Length: 2\r\nConnection: close\r\n"
                  "\r\n{}");
  assert_true(hc_response(c, &r, false));
  assert_int_equal(r.status, 415);
  hc_resp_free(&r);
  close(c->fd);
  hc_open(c, s.port); /* DNS rebinding: a foreign Host */
  hc_sends(c->fd, "GET /api/processes HTTP/1.1\r\nHost: evil.example:80\r\n"
                  "Connection: close\r\n\r\n");
  assert_true(hc_response(c, &r, false));
  assert_int_equal(r.status, 403);
  hc_resp_free(&r);
  close(c->fd);
  hc_open(c, s.port); /* a foreign page's WebSocket */
  hc_sends(c->fd, "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: "
                  "http://evil.example\r\nUpgrade: websocket\r\nConnection: "
                  "Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
                  "dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
  assert_true(hc_response(c, &r, false));
  assert_int_equal(r.status, 403);
  hc_resp_free(&r);
  close(c->fd);
  free(c);
  server_stop(&s);
}

static void test_server_feed_and_runs(void **state) {
  server s;
  server_start(&s);
  hc_conn *c = malloc(sizeof *c);
  hc_ws_open(c, s.port, "/ws");
  /* hello comes first */
  char *p = NULL;
  size_t n;
  assert_int_equal(hc_ws_read(c, &p, &n), 1);
  assert_string_equal(v_text(p, NULL), "hello");
  free(p);
  cJSON *m = next_of(c, "metrics");
  cJSON_Delete(m);
  /* subscribing sends both snapshots at once, then periodically */
  hc_ws_text(c, "{\"type\":\"subscribe\",\"topics\":[\"processes\","
                "\"sup_tree\"]}");
  m = next_of(c, "processes");
  bool kv = false;
  const cJSON *row;
  cJSON_ArrayForEach(row, arr(m, "processes")) kv |=
      strcmp(str(row, "name"), "kv") == 0;
  assert_true(kv);
  cJSON_Delete(m);
  cJSON_Delete(next_of(c, "sup_tree"));
  cJSON_Delete(next_of(c, "processes"));
  hc_ws_text(c, "{\"type\":\"subscribe\",\"topics\":[]}");
  /* bad client messages get an error; the session stays */
  hc_ws_text(c, "{\"type\":\"nope\"}");
  m = next_of(c, "error");
  assert_non_null(strstr(str(m, "error"), "nope"));
  cJSON_Delete(m);

  /* a run through POST /api/run: started, progress, done */
  hc_resp r;
  assert_int_equal(hc_request(s.port, "POST", "/api/run",
                              "{\"scenario\":\"ping-pong\",\"n\":1000,"
                              "\"repeat\":2}",
                              &r),
                   202);
  cJSON *acc = cJSON_Parse(r.body);
  assert_true(boolean(acc, "accepted"));
  double id = num(acc, "id");
  cJSON_Delete(acc);
  hc_resp_free(&r);
  m = next_bench(c, "ping-pong");
  assert_string_equal(str(m, "state"), "started");
  assert_int_equal(num(m, "id"), id);
  cJSON_Delete(m);
  for (int i = 0; i < 2; i++) {
    m = next_bench(c, "ping-pong");
    assert_string_equal(str(m, "state"), "progress");
    assert_int_equal(num(field(m, "run"), "index"), i);
    cJSON_Delete(m);
  }
  m = next_bench(c, "ping-pong");
  assert_string_equal(str(m, "state"), "done");
  const cJSON *res = field(m, "result");
  assert_true(num(res, "ops_per_sec") == 1500.25);
  assert_int_equal(num(res, "n"), 1000); /* --n reached the child */
  cJSON_Delete(m);
  /* ... and the result is in /api/results, with the same figure */
  assert_int_equal(hc_request(s.port, "GET", "/api/results", NULL, &r), 200);
  cJSON *all = cJSON_Parse(r.body);
  hc_resp_free(&r);
  const cJSON *list = arr(field(all, "results"), "ping-pong");
  assert_int_equal(cJSON_GetArraySize(list), 1);
  v_result(cJSON_GetArrayItem(list, 0));
  assert_int_equal(num(cJSON_GetArrayItem(list, 0), "id"), id);
  assert_true(num(cJSON_GetArrayItem(list, 0), "ops_per_sec") == 1500.25);
  cJSON_Delete(all);

  /* a run through the feed, of a child that prints garbage */
  hc_ws_text(c, "{\"type\":\"run\",\"scenario\":\"fan-in\"}");
  m = next_bench(c, "fan-in");
  assert_string_equal(str(m, "state"), "started");
  cJSON_Delete(m);
  m = next_bench(c, "fan-in");
  assert_string_equal(str(m, "state"), "error");
  assert_non_null(strstr(str(m, "error"), "not a JSON object"));
  cJSON_Delete(m);
  /* a child that fails: its stderr says why */
  hc_ws_text(c, "{\"type\":\"run\",\"scenario\":\"spawn-storm\"}");
  m = next_bench(c, "spawn-storm");
  cJSON_Delete(m);
  m = next_bench(c, "spawn-storm");
  assert_string_equal(str(m, "state"), "error");
  assert_non_null(strstr(str(m, "error"), "status 1"));
  assert_non_null(strstr(str(m, "error"), "out of memory"));
  cJSON_Delete(m);
  /* one run per scenario: a second one is refused while it runs */
  assert_int_equal(hc_request(s.port, "POST", "/api/run",
                              "{\"scenario\":\"idle-memory\"}", &r),
                   202);
  hc_resp_free(&r);
  m = next_bench(c, "idle-memory");
  assert_string_equal(str(m, "state"), "started");
  cJSON_Delete(m);
  assert_int_equal(hc_request(s.port, "POST", "/api/run",
                              "{\"scenario\":\"idle-memory\"}", &r),
                   409);
  hc_resp_free(&r);
  hc_ws_text(c, "{\"type\":\"run\",\"scenario\":\"idle-memory\"}");
  m = next_of(c, "error");
  assert_non_null(strstr(str(m, "error"), "already running"));
  cJSON_Delete(m);
  /* stopping kills the child (it sleeps for a minute): the run ends as
   * cancelled, and the page gets a clean close (going away) */
  rusm__dash_stop(s.d);
  m = next_bench(c, "idle-memory");
  assert_string_equal(str(m, "state"), "error");
  assert_non_null(strstr(str(m, "error"), "cancelled"));
  cJSON_Delete(m);
  assert_int_equal(hc_ws_close_status(c), 1001);
  close(c->fd);
  free(c);
  server_stop(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_utf8_cleaning),
      cmocka_unit_test(test_client_messages),
      cmocka_unit_test(test_child_lines),
      cmocka_unit_test(test_messages_match_the_protocol),
      cmocka_unit_test(test_prometheus),
      cmocka_unit_test(test_server_api_and_page),
      cmocka_unit_test(test_server_feed_and_runs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
