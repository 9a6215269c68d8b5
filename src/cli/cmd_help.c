/*
 * cmd_help.c — `rusm help` / `rusm --help`.
 */
#include "cli/cmd.h"

void rusm__cli_usage(FILE *to) {
  fprintf(to, "usage: rusm <command> [options]\n\ncommands:\n");
  for (size_t i = 0; i < rusm__cli_verb_count; i++)
    fprintf(to, "  %-10s %s\n", rusm__cli_verbs[i].name,
            rusm__cli_verbs[i].summary);
  fprintf(to, "\n'rusm <command> --help' describes a command.\n");
}

int rusm__cmd_help(int argc, char **argv) {
  rusm__cli_usage(stdout);
  return RUSM__CLI_OK;
}
