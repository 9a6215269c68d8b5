/*
 * cmd_version.c — `rusm version` / `rusm --version`.
 */
#include "cli/cmd.h"

#ifndef RUSM_VERSION
#define RUSM_VERSION "0.1.0" /* the build may pass the project's version */
#endif

int rusm__cmd_version(int argc, char **argv) {
  printf("rusm %s\n", RUSM_VERSION);
  return RUSM__CLI_OK;
}
