/*
 * rusm/observer.h — introspection of a live runtime (Erlang's observer /
 * etop): every process with its state and counters, links and monitors,
 * and the supervision tree.
 *
 * Snapshots are taken without stopping anything, so they are consistent
 * per field, not across fields. What only the process itself may read
 * (its link and monitor tables) is asked of the process, as Erlang's
 * process_info is: a request it answers between two of its steps.
 */
#ifndef RUSM_OBSERVER_H
#define RUSM_OBSERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rusm/otp.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rusm_obs_proc {
  rusm_pid_t pid;
  char name[RUSM_NAME_MAX + 1]; /* registered name, "" if none */
  char kind[32];                /* body kind: stackless, stackful, ... */
  char label[32];               /* rusm_set_label, "" if none */
  rusm_proc_status status;
  uint32_t scheduler;
  uint64_t mailbox_len;
  uint64_t messages_handled;
  uint64_t reductions;
  uint64_t shed;
  uint32_t links;        /* processes linked to it */
  uint32_t monitors;     /* monitors it holds */
  uint32_t monitored_by; /* monitors on it */
  bool trap_exit;
  /* resident estimate: process struct, queued messages, stack pages in
   * use (stackful), plus what rusm_set_memory reported (Wasm memory) */
  uint64_t memory;
} rusm_obs_proc;

/* One process. RUSM_ENOPROC when dead. */
int rusm_obs_process(rusm_rt *rt, rusm_pid_t pid, rusm_obs_proc *out);

/* Every live process into out[0..cap) (in slot order); *total gets how
 * many were alive (may exceed cap). Callable from any thread. */
int rusm_obs_processes(rusm_rt *rt, rusm_obs_proc *out, size_t cap,
                       size_t *total);

/* The pids linked to pid, and those it monitors, as the process itself
 * reports them (a request answered between its steps; waits up to
 * timeout_ms). Either array may be NULL with cap 0. Needs a thread that
 * may block (not a stackless callback): RUSM_ECONTEXT otherwise. */
int rusm_obs_links(rusm_rt *rt, rusm_pid_t pid, rusm_pid_t *links,
                   size_t links_cap, size_t *nlinks, rusm_pid_t *monitors,
                   size_t mon_cap, size_t *nmonitors, int64_t timeout_ms);

/* A node of the supervision tree. */
typedef struct rusm_obs_sup_node {
  rusm_pid_t pid;    /* RUSM_PID_NONE: a child spec not running */
  rusm_pid_t parent; /* its supervisor, RUSM_PID_NONE for a root */
  char id[64];       /* child id in its parent ("" for roots) */
  bool supervisor;
  rusm_sup_strategy strategy; /* supervisors */
  uint32_t restarts;          /* restarts it did (supervisors), or of it */
  uint32_t children;          /* supervisors: child count */
} rusm_obs_sup_node;

/* Walks every supervisor (processes labelled "supervisor" by
 * rusm_sup_start / rusm_dynsup_start) and lists supervisors and their
 * children, parents before children. Blocking like rusm_obs_links. */
int rusm_obs_sup_tree(rusm_rt *rt, rusm_obs_sup_node *out, size_t cap,
                      size_t *total);

/* Sorting for `rusm top`-style tables. */
typedef enum rusm_obs_sort {
  RUSM_OBS_BY_REDUCTIONS = 0,
  RUSM_OBS_BY_MAILBOX = 1,
  RUSM_OBS_BY_MEMORY = 2,
  RUSM_OBS_BY_HANDLED = 3,
  RUSM_OBS_BY_PID = 4
} rusm_obs_sort;
void rusm_obs_sort_procs(rusm_obs_proc *p, size_t n, rusm_obs_sort by);

/* One process as a JSON object (no newline). Returns the length it would
 * have written, like snprintf. */
int rusm_obs_proc_to_json(const rusm_obs_proc *p, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* RUSM_OBSERVER_H */
