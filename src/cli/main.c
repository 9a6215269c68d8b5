/*
 * main.c — `rusm <verb> ...`: finds the verb and hands it the rest of the
 * command line. A new verb is a cmd_<verb>.c file plus one line below.
 */
#include <string.h>

#include "cli/cmd.h"

const rusm__cli_verb rusm__cli_verbs[] = {
    {"bench", rusm__cmd_bench, "run benchmark scenarios (rusm bench --help)"},
    {"top", rusm__cmd_top, "run the demo application and watch its processes"},
    {"dashboard", rusm__cmd_dashboard,
     "serve the web dashboard (prints its URL)"},
    {"node", rusm__cmd_node, "run a cluster node (rusm node --help)"},
    {"cluster", rusm__cmd_cluster,
     "make the cluster CA and node certificates (rusm cluster --help)"},
    {"version", rusm__cmd_version, "print the version"},
    {"help", rusm__cmd_help, "print this help"},
};
const size_t rusm__cli_verb_count =
    sizeof rusm__cli_verbs / sizeof rusm__cli_verbs[0];

int main(int argc, char **argv) {
  if (argc < 2) {
    rusm__cli_usage(stderr);
    return RUSM__CLI_USAGE;
  }
  const char *verb = argv[1];
  if (strcmp(verb, "-h") == 0 || strcmp(verb, "--help") == 0)
    verb = "help";
  else if (strcmp(verb, "-V") == 0 || strcmp(verb, "--version") == 0)
    verb = "version";
  for (size_t i = 0; i < rusm__cli_verb_count; i++)
    if (strcmp(verb, rusm__cli_verbs[i].name) == 0)
      return rusm__cli_verbs[i].fn(argc - 2, argv + 2);
  fprintf(stderr, "rusm: unknown command '%s'\n\n", verb);
  rusm__cli_usage(stderr);
  return RUSM__CLI_USAGE;
}
