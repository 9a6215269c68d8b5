/*
 * dashboard_json.c — the objects and messages of docs/dashboard-protocol.md,
 * built with cJSON, and the parser of what the page sends.
 *
 * Strings that come from the runtime (registered names, labels) may hold
 * any bytes; the page's WebSocket closes on invalid UTF-8 in a text frame,
 * so every such string goes through rusm__dash_utf8 first.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/dashboard.h"
#include "rusm/metrics.h"

#define MAX_DEPTH 16 /* client messages nest no deeper (see depth_ok) */

int64_t rusm__dash_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Length of the UTF-8 sequence at s (1..4), or 0 when it is not valid. */
static size_t utf8_seq(const unsigned char *s) {
  if (s[0] < 0x80)
    return 1;
  size_t n;
  uint32_t cp;
  if ((s[0] & 0xe0) == 0xc0) {
    n = 2;
    cp = s[0] & 0x1f;
  } else if ((s[0] & 0xf0) == 0xe0) {
    n = 3;
    cp = s[0] & 0x0f;
  } else if ((s[0] & 0xf8) == 0xf0) {
    n = 4;
    cp = s[0] & 0x07;
  } else {
    return 0;
  }
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3f);
  }
  static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0; /* overlong, out of range, surrogate */
  return n;
}

const char *rusm__dash_utf8(const char *s, char *buf, size_t len) {
  if (!len)
    return "";
  size_t o = 0;
  const unsigned char *p = (const unsigned char *)(s ? s : "");
  while (*p && o + 1 < len) {
    size_t n = utf8_seq(p);
    if (n == 0 || o + n >= len) {
      buf[o++] = '?';
      p++;
      continue;
    }
    memcpy(buf + o, p, n);
    o += n;
    p += n;
  }
  buf[o] = '\0';
  return buf;
}

/* Adds a runtime string, made valid UTF-8. */
static void add_str(cJSON *o, const char *key, const char *s) {
  char buf[RUSM_NAME_MAX + 1];
  cJSON_AddStringToObject(o, key, rusm__dash_utf8(s, buf, sizeof buf));
}

static void add_pid(cJSON *o, const char *key, rusm_pid_t pid) {
  if (pid == RUSM_PID_NONE) {
    cJSON_AddNullToObject(o, key);
    return;
  }
  char buf[48];
  rusm_pid_format(pid, buf, sizeof buf);
  cJSON_AddStringToObject(o, key, buf);
}

char *rusm__dash_print(cJSON *j) {
  if (!j)
    return NULL;
  char *s = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  return s;
}

/* ---- objects --------------------------------------------------------- */

static const char *kind_name(rusm_bench_kind k) {
  switch (k) {
  case RUSM_BENCH_LATENCY:
    return "latency";
  case RUSM_BENCH_MEMORY:
    return "memory";
  default:
    return "throughput";
  }
}

cJSON *rusm__dash_scenario_json(const rusm_bench_scenario *s) {
  cJSON *o = cJSON_CreateObject();
  if (!o)
    return NULL;
  cJSON_AddStringToObject(o, "name", s->name);
  cJSON_AddStringToObject(o, "summary", s->summary ? s->summary : "");
  cJSON_AddStringToObject(o, "kind", kind_name(s->kind));
  cJSON_AddNumberToObject(o, "default_n", (double)s->default_n);
  cJSON_AddBoolToObject(o, "has_baseline", s->baseline != NULL);
  /* What bytes_per_<x> a result carries: memory scenarios always report
   * one (per process unless the scenario says), others when they say. */
  const char *per = s->memory_per;
  if (!per && s->kind == RUSM_BENCH_MEMORY)
    per = "process";
  if (per)
    cJSON_AddStringToObject(o, "memory_per", per);
  else
    cJSON_AddNullToObject(o, "memory_per");
  return o;
}

static cJSON *scenario_list(void) {
  cJSON *a = cJSON_CreateArray();
  for (size_t i = 0; a && i < rusm_bench_count(); i++)
    cJSON_AddItemToArray(a, rusm__dash_scenario_json(rusm_bench_at(i)));
  return a;
}

cJSON *rusm__dash_scenarios_json(void) {
  cJSON *o = cJSON_CreateObject();
  if (o)
    cJSON_AddItemToObject(o, "scenarios", scenario_list());
  return o;
}

static const char *const k_status[] = {"runnable", "running", "waiting",
                                       "exiting"};

cJSON *rusm__dash_process_json(const rusm_obs_proc *p) {
  cJSON *o = cJSON_CreateObject();
  if (!o)
    return NULL;
  add_pid(o, "pid", p->pid);
  add_str(o, "name", p->name);
  add_str(o, "kind", p->kind);
  add_str(o, "label", p->label);
  cJSON_AddStringToObject(
      o, "status", (unsigned)p->status < 4 ? k_status[p->status] : "unknown");
  cJSON_AddNumberToObject(o, "scheduler", p->scheduler);
  cJSON_AddNumberToObject(o, "mailbox_len", (double)p->mailbox_len);
  cJSON_AddNumberToObject(o, "handled", (double)p->messages_handled);
  cJSON_AddNumberToObject(o, "reductions", (double)p->reductions);
  cJSON_AddNumberToObject(o, "shed", (double)p->shed);
  cJSON_AddNumberToObject(o, "links", p->links);
  cJSON_AddNumberToObject(o, "monitors", p->monitors);
  cJSON_AddNumberToObject(o, "monitored_by", p->monitored_by);
  cJSON_AddBoolToObject(o, "trap_exit", p->trap_exit);
  cJSON_AddNumberToObject(o, "memory", (double)p->memory);
  return o;
}

static const char *strategy_name(rusm_sup_strategy s) {
  switch (s) {
  case RUSM_ONE_FOR_ALL:
    return "one_for_all";
  case RUSM_REST_FOR_ONE:
    return "rest_for_one";
  default:
    return "one_for_one";
  }
}

cJSON *rusm__dash_sup_node_json(const rusm_obs_sup_node *n,
                                const char *root_name) {
  cJSON *o = cJSON_CreateObject();
  if (!o)
    return NULL;
  add_pid(o, "pid", n->pid);
  add_pid(o, "parent", n->parent);
  /* A root has no child id: its registered name says more than "". */
  add_str(o, "id", n->id[0] || !root_name ? n->id : root_name);
  cJSON_AddBoolToObject(o, "supervisor", n->supervisor);
  if (n->supervisor)
    cJSON_AddStringToObject(o, "strategy", strategy_name(n->strategy));
  else
    cJSON_AddNullToObject(o, "strategy");
  cJSON_AddNumberToObject(o, "restarts", n->restarts);
  cJSON_AddNumberToObject(o, "children", n->children);
  return o;
}

/* ---- messages ---------------------------------------------------------- */

static cJSON *msg(const char *type) {
  cJSON *o = cJSON_CreateObject();
  if (o)
    cJSON_AddStringToObject(o, "type", type);
  return o;
}

cJSON *rusm__dash_hello_msg(rusm_rt *rt) {
  cJSON *o = msg("hello");
  if (!o)
    return NULL;
  cJSON_AddNumberToObject(o, "version", 1);
  cJSON_AddNumberToObject(o, "node", rusm_rt_node(rt));
  cJSON_AddNumberToObject(o, "schedulers", rusm_rt_schedulers(rt));
  cJSON_AddItemToObject(o, "scenarios", scenario_list());
  return o;
}

cJSON *rusm__dash_metrics_msg(rusm_rt *rt, int64_t t_ms) {
  rusm_metrics *m = malloc(sizeof *m);
  if (!m)
    return NULL;
  rusm_metrics_snapshot(rt, m);
  int len = rusm_metrics_to_json(m, NULL, 0);
  char *text = len > 0 ? malloc((size_t)len + 1) : NULL;
  if (text)
    rusm_metrics_to_json(m, text, (size_t)len + 1);
  free(m);
  cJSON *inner = text ? cJSON_Parse(text) : NULL;
  free(text);
  cJSON *o = inner ? msg("metrics") : NULL;
  if (!o) {
    cJSON_Delete(inner);
    return NULL;
  }
  cJSON_AddNumberToObject(o, "t", (double)t_ms);
  cJSON_AddItemToObject(o, "metrics", inner);
  return o;
}

cJSON *rusm__dash_processes_msg(rusm_rt *rt, int64_t t_ms, size_t max) {
  size_t total = 0;
  rusm_obs_processes(rt, NULL, 0, &total);
  size_t cap = total + 64; /* some may start meanwhile */
  rusm_obs_proc *ps = calloc(cap, sizeof *ps);
  if (!ps)
    return NULL;
  rusm_obs_processes(rt, ps, cap, &total);
  size_t n = total < cap ? total : cap;
  rusm_obs_sort_procs(ps, n, RUSM_OBS_BY_REDUCTIONS);
  cJSON *o = msg("processes");
  cJSON *a = o ? cJSON_AddArrayToObject(o, "processes") : NULL;
  if (a) {
    cJSON_AddNumberToObject(o, "t", (double)t_ms);
    cJSON_AddNumberToObject(o, "total", (double)total);
    for (size_t i = 0; i < n && i < max; i++)
      cJSON_AddItemToArray(a, rusm__dash_process_json(&ps[i]));
  }
  free(ps);
  return o;
}

cJSON *rusm__dash_sup_tree_msg(rusm_rt *rt, int64_t t_ms) {
  size_t total = 0;
  rusm_obs_sup_tree(rt, NULL, 0, &total);
  size_t cap = total + 16;
  rusm_obs_sup_node *nodes = calloc(cap, sizeof *nodes);
  if (!nodes)
    return NULL;
  rusm_obs_sup_tree(rt, nodes, cap, &total);
  size_t n = total < cap ? total : cap;
  cJSON *o = msg("sup_tree");
  cJSON *a = o ? cJSON_AddArrayToObject(o, "nodes") : NULL;
  if (a) {
    cJSON_AddNumberToObject(o, "t", (double)t_ms);
    for (size_t i = 0; i < n; i++) {
      char name[RUSM_NAME_MAX + 1];
      bool named = nodes[i].parent == RUSM_PID_NONE &&
                   rusm_name_of(rt, nodes[i].pid, name, sizeof name) > 0;
      cJSON_AddItemToArray(
          a, rusm__dash_sup_node_json(&nodes[i], named ? name : NULL));
    }
  }
  free(nodes);
  return o;
}

cJSON *rusm__dash_bench_msg(uint64_t id, const char *scenario,
                            const char *state) {
  cJSON *o = msg("bench");
  if (!o)
    return NULL;
  cJSON_AddNumberToObject(o, "id", (double)id);
  cJSON_AddStringToObject(o, "scenario", scenario);
  cJSON_AddStringToObject(o, "state", state);
  return o;
}

cJSON *rusm__dash_error_msg(const char *text) {
  cJSON *o = msg("error");
  if (o) {
    char buf[512];
    cJSON_AddStringToObject(o, "error", rusm__dash_utf8(text, buf, sizeof buf));
  }
  return o;
}

/* ---- client messages ---------------------------------------------------- */

/* cJSON parses recursively: refuse deep nesting before it sees the text
 * (a connection process has a small stack). */
static bool depth_ok(const char *s, size_t len) {
  int depth = 0;
  bool str = false;
  for (size_t i = 0; i < len; i++) {
    char ch = s[i];
    if (str) {
      if (ch == '\\')
        i++;
      else if (ch == '"')
        str = false;
    } else if (ch == '"') {
      str = true;
    } else if (ch == '{' || ch == '[') {
      if (++depth > MAX_DEPTH)
        return false;
    } else if (ch == '}' || ch == ']') {
      depth--;
    }
  }
  return true;
}

static int bad(char *err, size_t errlen, const char *text) {
  snprintf(err, errlen, "%s", text);
  return RUSM_EINVAL;
}

/* A whole number in [min, max] from a JSON number. */
static bool whole(const cJSON *j, double min, double max, uint64_t *out) {
  if (!cJSON_IsNumber(j))
    return false;
  double v = j->valuedouble;
  if (!(v >= min && v <= max) || v != (double)(uint64_t)v)
    return false;
  *out = (uint64_t)v;
  return true;
}

static int parse_run(const cJSON *o, rusm__dash_cmsg *out, char *err,
                     size_t errlen) {
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "scenario");
  if (!cJSON_IsString(s) || !s->valuestring[0])
    return bad(err, errlen, "\"scenario\" must be a non-empty string");
  if (strlen(s->valuestring) >= sizeof out->scenario)
    return bad(err, errlen, "unknown scenario");
  snprintf(out->scenario, sizeof out->scenario, "%s", s->valuestring);
  const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "n");
  if (n && !cJSON_IsNull(n) && !whole(n, 1, 1e12, &out->n))
    return bad(err, errlen, "\"n\" must be a whole number >= 1");
  const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "repeat");
  uint64_t rep = 0;
  if (r && !cJSON_IsNull(r) && !whole(r, 1, RUSM_BENCH_MAX_REPEAT, &rep))
    return bad(err, errlen, "\"repeat\" must be a whole number in 1..1000");
  out->repeat = (uint32_t)rep;
  out->kind = RUSM__DASH_C_RUN;
  return 0;
}

int rusm__dash_parse_client(const char *text, size_t len, bool run_body,
                            rusm__dash_cmsg *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (!depth_ok(text, len))
    return bad(err, errlen, "message nested too deeply");
  cJSON *o = cJSON_ParseWithLength(text, len);
  if (!o)
    return bad(err, errlen, "not JSON");
  int rc = 0;
  if (!cJSON_IsObject(o)) {
    rc = bad(err, errlen, "not a JSON object");
  } else if (run_body) {
    rc = parse_run(o, out, err, errlen);
  } else {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    if (!cJSON_IsString(type)) {
      rc = bad(err, errlen, "no \"type\"");
    } else if (strcmp(type->valuestring, "run") == 0) {
      rc = parse_run(o, out, err, errlen);
    } else if (strcmp(type->valuestring, "subscribe") == 0) {
      const cJSON *topics = cJSON_GetObjectItemCaseSensitive(o, "topics");
      if (!cJSON_IsArray(topics)) {
        rc = bad(err, errlen, "\"topics\" must be an array");
      } else {
        out->kind = RUSM__DASH_C_SUBSCRIBE;
        const cJSON *t;
        cJSON_ArrayForEach(t, topics) {
          if (cJSON_IsString(t) && strcmp(t->valuestring, "processes") == 0)
            out->topics |= RUSM__DASH_T_PROCESSES;
          else if (cJSON_IsString(t) && strcmp(t->valuestring, "sup_tree") == 0)
            out->topics |= RUSM__DASH_T_SUP_TREE;
          else {
            rc = bad(err, errlen, "unknown topic (processes, sup_tree)");
            break;
          }
        }
      }
    } else {
      char buf[64];
      snprintf(err, errlen, "unknown message type \"%s\"",
               rusm__dash_utf8(type->valuestring, buf, sizeof buf));
      rc = RUSM_EINVAL;
    }
  }
  cJSON_Delete(o);
  return rc;
}
