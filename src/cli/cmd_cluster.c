/*
 * cmd_cluster.c — `rusm cluster ca init [--dir DIR]` and
 * `rusm cluster cert issue <node> [--ca DIR] [--out DIR] [--days N]`: the
 * cluster CA and the node certificates `rusm node` needs
 * (docs/internals/cluster-cli.md). Nothing is ever overwritten.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd.h"
#include "rusm/cluster.h"

#define DEFAULT_CA_DIR "./rusm-ca"
#define DEFAULT_DAYS 365u
#define MAX_DAYS 36600u /* rusm_cluster_cert_issue's own limit */

static void usage(FILE *to) {
  fprintf(to,
          "usage: rusm cluster ca init [--dir DIR]\n"
          "       rusm cluster cert issue <node> [--ca DIR] [--out DIR] "
          "[--days N]\n"
          "\n"
          "  ca init      creates a cluster CA: DIR/ca.pem and DIR/ca.key\n"
          "               (default DIR " DEFAULT_CA_DIR "; refuses to "
          "overwrite)\n"
          "  cert issue   issues OUT/<node>.pem and OUT/<node>.key signed by\n"
          "               the CA in --ca DIR (default " DEFAULT_CA_DIR "),\n"
          "               valid for --days N (default %u); OUT defaults to\n"
          "               the CA's directory, so `rusm node --certs DIR`\n"
          "               finds ca.pem, <node>.pem and <node>.key together.\n"
          "               A node name is 1..63 of A-Z a-z 0-9 . _ -\n"
          "\n"
          "Keep ca.key private: whoever holds it can add nodes to the "
          "cluster.\n"
          "Exit status: 0 done, 1 failed, 2 bad arguments.\n",
          DEFAULT_DAYS);
}

#define bad(...) rusm__cli_bad("cluster", usage, __VA_ARGS__)

static bool name_ok(const char *s) {
  size_t n = 0;
  for (; s[n]; n++) {
    char c = s[n];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return false;
  }
  return n >= 1 && n <= 63;
}

/* "--opt VALUE" or "--opt=VALUE" at argv[*i]: the value (advancing *i past
 * a separate one), or NULL when argv[*i] is not that option. *missing is
 * set when the option has no value. */
static const char *opt_value(int argc, char **argv, int *i, const char *opt,
                             bool *missing) {
  size_t k = strlen(opt);
  const char *a = argv[*i];
  if (!a || strncmp(a, opt, k) != 0)
    return NULL;
  if (a[k] == '=')
    return a + k + 1;
  if (a[k] != '\0')
    return NULL;
  if (*i + 1 >= argc || !argv[*i + 1]) {
    *missing = true;
    return NULL;
  }
  return argv[++*i];
}

static bool is_help(const char *a) {
  return a && (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0);
}

static int ca_init(int argc, char **argv) {
  const char *dir = DEFAULT_CA_DIR;
  for (int i = 0; i < argc; i++) {
    bool missing = false;
    const char *v;
    if (!argv[i]) {
      return bad("missing argument");
    } else if (is_help(argv[i])) {
      usage(stdout);
      return RUSM__CLI_OK;
    } else if ((v = opt_value(argc, argv, &i, "--dir", &missing))) {
      dir = v;
    } else if (missing) {
      return bad("%s needs a value", argv[i]);
    } else {
      return bad("ca init: unexpected '%s'", argv[i]);
    }
  }
  if (!*dir)
    return bad("--dir: empty directory name");
  char why[512] = "";
  int rc = rusm_cluster_ca_init(dir, why, sizeof why);
  if (rc != 0) {
    fprintf(stderr, "rusm cluster ca init: %s\n",
            why[0] ? why : rusm_strerror(rc));
    return rc == RUSM_EINVAL ? RUSM__CLI_USAGE : RUSM__CLI_FAILED;
  }
  printf("cluster CA created: %s/ca.pem (certificate), %s/ca.key (private "
         "key: keep it safe)\n",
         dir, dir);
  return RUSM__CLI_OK;
}

static int cert_issue(int argc, char **argv) {
  const char *ca = DEFAULT_CA_DIR, *out = NULL, *node = NULL;
  unsigned long days = DEFAULT_DAYS;
  for (int i = 0; i < argc; i++) {
    bool missing = false;
    const char *v;
    if (!argv[i]) {
      return bad("missing argument");
    } else if (is_help(argv[i])) {
      usage(stdout);
      return RUSM__CLI_OK;
    } else if ((v = opt_value(argc, argv, &i, "--ca", &missing))) {
      ca = v;
    } else if (!missing && (v = opt_value(argc, argv, &i, "--out", &missing))) {
      out = v;
    } else if (!missing &&
               (v = opt_value(argc, argv, &i, "--days", &missing))) {
      char *end;
      errno = 0;
      days = strtoul(v, &end, 10);
      if (errno || *end || end == v || v[0] == '-' || days == 0 ||
          days > MAX_DAYS)
        return bad("--days: '%s' is not a number of days (1..36600)", v);
    } else if (missing) {
      return bad("%s needs a value", argv[i]);
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      return bad("cert issue: unknown option '%s'", argv[i]);
    } else if (!node) {
      node = argv[i];
    } else {
      return bad("cert issue: unexpected '%s' (one node name)", argv[i]);
    }
  }
  if (!node)
    return bad("cert issue: missing the node name");
  if (!name_ok(node))
    return bad("cert issue: bad node name '%s' (1..63 of A-Z a-z 0-9 . _ -)",
               node);
  if (!*ca || (out && !*out))
    return bad("cert issue: empty directory name");
  if (!out)
    out = ca;
  char why[512] = "";
  int rc =
      rusm_cluster_cert_issue(ca, node, out, (unsigned)days, why, sizeof why);
  if (rc != 0) {
    fprintf(stderr, "rusm cluster cert issue: %s\n",
            why[0] ? why : rusm_strerror(rc));
    return RUSM__CLI_FAILED;
  }
  printf("certificate for %s issued: %s/%s.pem, %s/%s.key (valid %lu "
         "days)\n",
         node, out, node, out, node, days);
  return RUSM__CLI_OK;
}

int rusm__cmd_cluster(int argc, char **argv) {
  if (argc < 1 || !argv[0]) {
    usage(stderr);
    return RUSM__CLI_USAGE;
  }
  if (is_help(argv[0]) || strcmp(argv[0], "help") == 0) {
    usage(stdout);
    return RUSM__CLI_OK;
  }
  const char *sub = argc >= 2 && argv[1] ? argv[1] : "";
  if (strcmp(argv[0], "ca") == 0 && strcmp(sub, "init") == 0)
    return ca_init(argc - 2, argv + 2);
  if (strcmp(argv[0], "cert") == 0 && strcmp(sub, "issue") == 0)
    return cert_issue(argc - 2, argv + 2);
  fprintf(stderr, "rusm cluster: unknown command '%s%s%s'\n\n", argv[0],
          sub[0] ? " " : "", sub);
  usage(stderr);
  return RUSM__CLI_USAGE;
}
