/*
 * cmd_help.c — `rusm help` / `rusm --help`.
 */
#include <stdarg.h>

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

int rusm__cli_bad(const char *verb, void (*usage)(FILE *to), const char *fmt,
                  ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "rusm %s: %s\n\n", verb, msg);
  usage(stderr);
  return RUSM__CLI_USAGE;
}
