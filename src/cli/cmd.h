/*
 * cmd.h — the verbs of the `rusm` command line. Each verb is one
 * cmd_<verb>.c file with one entry point, listed in main.c's table.
 */
#ifndef RUSM_CLI_CMD_H
#define RUSM_CLI_CMD_H

#include <stddef.h>
#include <stdio.h>

/* Exit statuses shared by every verb. */
enum {
  RUSM__CLI_OK = 0,
  RUSM__CLI_FAILED = 1, /* the work itself failed */
  RUSM__CLI_USAGE = 2   /* bad arguments: message and usage on stderr */
};

/* A verb gets the words after its name (argv[0] is the first of them). */
typedef int (*rusm__cli_fn)(int argc, char **argv);

typedef struct rusm__cli_verb {
  const char *name;
  rusm__cli_fn fn;
  const char *summary; /* one line for `rusm --help` */
} rusm__cli_verb;

/* The verb table (main.c). */
extern const rusm__cli_verb rusm__cli_verbs[];
extern const size_t rusm__cli_verb_count;

/* Prints the top-level usage (cmd_help.c). */
void rusm__cli_usage(FILE *to);

/* A bad-arguments exit: "rusm <verb>: <message>", a blank line, the verb's
 * usage, all on stderr; returns RUSM__CLI_USAGE (cmd_help.c). */
int rusm__cli_bad(const char *verb, void (*usage)(FILE *to), const char *fmt,
                  ...) __attribute__((format(printf, 3, 4)));

int rusm__cmd_bench(int argc, char **argv);
int rusm__cmd_top(int argc, char **argv);
int rusm__cmd_dashboard(int argc, char **argv);
int rusm__cmd_node(int argc, char **argv);
int rusm__cmd_cluster(int argc, char **argv);
int rusm__cmd_help(int argc, char **argv);
int rusm__cmd_version(int argc, char **argv);

#endif /* RUSM_CLI_CMD_H */
