/* err.c — names and messages for error and exit codes; pid formatting. */
#include <inttypes.h>
#include <stdio.h>

#include "rusm/cluster.h"
#include "rusm/otp.h"

typedef struct {
  int code;
  const char *name;
  const char *msg;
} err_entry;

static const err_entry k_errs[] = {
    {RUSM_OK, "RUSM_OK", "success"},
    {RUSM_EINVAL, "RUSM_EINVAL", "invalid argument"},
    {RUSM_ENOMEM, "RUSM_ENOMEM", "out of memory"},
    {RUSM_ENOPROC, "RUSM_ENOPROC", "no such process"},
    {RUSM_ETIMEDOUT, "RUSM_ETIMEDOUT", "timed out"},
    {RUSM_ESHUTDOWN, "RUSM_ESHUTDOWN", "runtime is shutting down"},
    {RUSM_ELIMIT, "RUSM_ELIMIT", "a limit was reached"},
    {RUSM_ECONTEXT, "RUSM_ECONTEXT", "not allowed in this context"},
    {RUSM_ESYS, "RUSM_ESYS", "system call failed"},
    {RUSM_EEXIST, "RUSM_EEXIST", "already exists"},
    {RUSM_ENOTFOUND, "RUSM_ENOTFOUND", "not found"},
    {RUSM_EBUSY, "RUSM_EBUSY", "resource busy"},
    {RUSM_ECONNREFUSED, "RUSM_ECONNREFUSED", "connection refused"},
    {RUSM_ECONNRESET, "RUSM_ECONNRESET", "connection reset by peer"},
    {RUSM_EPIPE, "RUSM_EPIPE", "broken pipe"},
    {RUSM_EADDRINUSE, "RUSM_EADDRINUSE", "address already in use"},
    {RUSM_EADDRNOTAVAIL, "RUSM_EADDRNOTAVAIL", "address not available"},
    {RUSM_ECLOSED, "RUSM_ECLOSED", "socket closed"},
    {RUSM_EMFILE, "RUSM_EMFILE", "too many open files"},
    {RUSM_ENOBUFS, "RUSM_ENOBUFS", "send queue full"},
    {RUSM_EUNREACH, "RUSM_EUNREACH", "network or host unreachable"},
    {RUSM_ECONNTIMEDOUT, "RUSM_ECONNTIMEDOUT", "connection timed out"},
    {RUSM_ENODE_DOWN, "RUSM_ENODE_DOWN", "node is not a member now"},
    {RUSM_ENODE_NAME, "RUSM_ENODE_NAME", "invalid node name"},
    {RUSM_ENODE_TRUST, "RUSM_ENODE_TRUST", "node certificates not usable"},
    {RUSM_ENODE_ADDR, "RUSM_ENODE_ADDR", "invalid node address"},
    {RUSM_ENOFACTORY, "RUSM_ENOFACTORY", "no such factory on the node"},
    {RUSM_ENODE_STOPPED, "RUSM_ENODE_STOPPED", "node stopped"},
};

static const err_entry *find(int err) {
  for (size_t i = 0; i < sizeof k_errs / sizeof k_errs[0]; i++)
    if (k_errs[i].code == err)
      return &k_errs[i];
  return NULL;
}

const char *rusm_strerror(int err) {
  const err_entry *e = find(err);
  return e ? e->msg : "unknown error";
}

const char *rusm_err_name(int err) {
  const err_entry *e = find(err);
  return e ? e->name : "RUSM_E?";
}

const char *rusm_exit_code_name(rusm_exit_code code) {
  static const char *const names[RUSM_EXIT__COUNT] = {
      "normal",       "killed", "shutdown", "noproc",
      "noconnection", "trap",   "custom",   "kill"};
  if ((unsigned)code < RUSM_EXIT__COUNT)
    return names[code];
  return "unknown";
}

int rusm_pid_format(rusm_pid_t pid, char *buf, size_t len) {
  return snprintf(buf, len, "<%u.%" PRIu32 ".%" PRIu32 ">",
                  (unsigned)rusm_pid_node(pid), rusm_pid_slot(pid),
                  rusm_pid_gen(pid));
}
