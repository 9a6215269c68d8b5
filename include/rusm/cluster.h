/*
 * rusm/cluster.h — nodes: RUSM runtimes that span machines.
 *
 * A node is a runtime (rusm_rt) joined to a cluster over QUIC with mutual
 * TLS. Every pid carries its node id, so rusm_send, rusm_link,
 * rusm_monitor and rusm_exit reach a process on another node with no
 * change in the caller's code; when the connection to that node is lost
 * (or the node dies) links get noconnection and monitors a
 * Down { noconnection }, within the detection bound of
 * docs/internals/cluster-membership.md.
 *
 * Trust: rusm_cluster_ca_init makes a cluster CA, rusm_cluster_cert_issue
 * a certificate for each node name; a node accepts only peers whose
 * certificate comes from its CA, is valid now and names the node the peer
 * says it is. There is no plaintext mode.
 *
 * Threads: a node runs one I/O thread of its own. Every function here may
 * be called from any thread, process or not, unless it says otherwise.
 */
#ifndef RUSM_CLUSTER_H
#define RUSM_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rusm/observer.h"
#include "rusm/otp.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Cluster error codes. Internal ones: wire codec -200..-219, membership
 * -220..-229, registry -240..-249, QUIC -250..-259, TLS -260..-269. */
#define RUSM_ENODE_DOWN (-230)    /* the named node is not a member now */
#define RUSM_ENODE_NAME (-231)    /* a node name not [A-Za-z0-9._-]{1,63} */
#define RUSM_ENODE_TRUST (-232)   /* certificates missing or not usable */
#define RUSM_ENODE_ADDR (-233)    /* a listen / seed address not host:port */
#define RUSM_ENOFACTORY (-234)    /* no factory of that name on the node */
#define RUSM_ENODE_STOPPED (-235) /* the node is stopping or stopped */

typedef struct rusm_node rusm_node;

typedef struct rusm_node_opts {
  const char *name;         /* this node's name: must match its certificate */
  const char *listen;       /* "host:port" (UDP); port 0 picks one */
  const char *const *seeds; /* "host:port" of nodes to join through */
  size_t n_seeds;
  const char *ca_file;   /* the cluster CA certificate (PEM) */
  const char *cert_file; /* this node's certificate (PEM) */
  const char *key_file;  /* its key (PEM) */
  /* Failure detection: probe period T in ms (0: 200). A dead node is
   * declared down within 9T plus the network delay (1.8 s by default;
   * docs/internals/cluster-membership.md). */
  uint32_t probe_ms;
  /* Log lines (refused peers, members up/down); NULL: stderr. */
  void (*log)(void *ud, const char *line);
  void *log_ud;
} rusm_node_opts;

void rusm_node_opts_init(rusm_node_opts *o);

/* Starts the node of rt: rt's node id (rusm_rt_opts.node_id, 1..2047) is
 * the node's id and must be unique in the cluster (a duplicate name or id
 * is refused by the members). Returns 0, RUSM_EINVAL, RUSM_ENODE_NAME,
 * RUSM_ENODE_TRUST (with the reason logged), RUSM_ENODE_ADDR, or an
 * RUSM_EADDRINUSE / RUSM_ESYS when it cannot bind. One node per runtime. */
int rusm_node_start(rusm_rt *rt, const rusm_node_opts *o, rusm_node **out);

/* Leaves the cluster (members see this node go down at once), closes
 * every connection and frees the node. Remote links and monitors of local
 * processes fire with noconnection first. The runtime stays usable. */
void rusm_node_stop(rusm_node *n);

/* The node of a runtime, or NULL. */
rusm_node *rusm_rt_node_get(rusm_rt *rt);
const char *rusm_node_name(const rusm_node *n);
/* The UDP port the node listens on (useful with port 0). */
uint16_t rusm_node_port(const rusm_node *n);

typedef struct rusm_node_member {
  char name[64];
  char addr[128];
  uint16_t id;
  bool up; /* connected and alive; false: suspected */
  bool self;
} rusm_node_member;

/* Copies up to cap members (this node first) and returns how many there
 * are in all. */
size_t rusm_node_members(rusm_node *n, rusm_node_member *out, size_t cap);
/* The id of a member by name (0 when not a member now). */
uint16_t rusm_node_id_of(rusm_node *n, const char *name);

/* Node events: a subscribed process gets a message tagged
 * RUSM_TAG_NODEUP or RUSM_TAG_NODEDOWN whose payload is the node's name,
 * for every member that comes up or goes down after it subscribed. */
#define RUSM_TAG_NODEUP (RUSM_TAG_SYSTEM | 0x10)
#define RUSM_TAG_NODEDOWN (RUSM_TAG_SYSTEM | 0x11)
int rusm_node_subscribe(rusm_node *n, rusm_pid_t pid);
int rusm_node_unsubscribe(rusm_node *n, rusm_pid_t pid);

/* ---- global registry ---------------------------------------------- */

/* One name per process and one process per name, cluster-wide; a name is
 * released when its process exits or its node goes down. pid must be a
 * local process. RUSM_EEXIST when taken, RUSM_EBUSY when pid already has a
 * global name, RUSM_ENOPROC for a dead pid. Concurrent claims on two nodes
 * are settled the same way everywhere; the losing process gets a message
 * RUSM_TAG_GLOBAL_LOST with the name as payload. */
#define RUSM_TAG_GLOBAL_LOST (RUSM_TAG_SYSTEM | 0x12)
int rusm_register_global(rusm_node *n, const char *name, rusm_pid_t pid);
/* RUSM_ENOTFOUND when not registered; an error when another node's
 * process holds it. */
int rusm_unregister_global(rusm_node *n, const char *name);
/* The pid, or RUSM_PID_NONE. */
rusm_pid_t rusm_whereis_global(rusm_node *n, const char *name);
/* RUSM_ENOTFOUND for an unknown name. */
int rusm_send_global(rusm_node *n, const char *name, uint64_t tag,
                     const void *data, size_t len);

/* ---- remote spawn ------------------------------------------------- */

/* A factory: what a remote node may start here, by name (no code travels).
 * Called on the node's I/O thread; it must spawn without blocking (any
 * rusm_spawn_* with the opts given: they carry nothing but defaults) and
 * return 0 with *out set, or a negative error. */
typedef int (*rusm_factory_fn)(rusm_rt *rt, void *ud, const void *arg,
                               size_t len, rusm_pid_t *out);
int rusm_node_factory(rusm_node *n, const char *name, rusm_factory_fn fn,
                      void *ud);

#define RUSM_SPAWN_LINK 1u    /* link the caller and the child atomically */
#define RUSM_SPAWN_MONITOR 2u /* monitor the child; *mref gets the ref */

/* Spawns on node `node` from its factory `factory` with the argument bytes,
 * waiting up to timeout_ms (-1: no limit) for the answer. self must be the
 * calling process (stackful or attached: this blocks in a receive).
 * RUSM_ENODE_DOWN, RUSM_ENOFACTORY, RUSM_ETIMEDOUT, or the factory's
 * error. With RUSM_SPAWN_LINK the link exists from the child's first
 * instant: its exit reaches the caller whatever happens. */
int rusm_spawn_on(rusm_proc *self, const char *node, const char *factory,
                  const void *arg, size_t len, unsigned flags,
                  int64_t timeout_ms, rusm_pid_t *out, rusm_ref *mref);

/* ---- live attach: a remote node's processes ------------------------- */

/* Lists a remote node's processes (or this node's, by its own name):
 * up to cap records from index `offset`, with *total set to how many it
 * has. self as for rusm_spawn_on. Returns the number copied. */
int rusm_node_processes(rusm_proc *self, const char *node, size_t offset,
                        rusm_obs_proc *out, size_t cap, size_t *total,
                        int64_t timeout_ms);
/* One remote process's details; RUSM_ENOPROC when it is not alive. */
int rusm_node_process_info(rusm_proc *self, rusm_pid_t pid, rusm_obs_proc *out,
                           int64_t timeout_ms);

/* ---- counters ------------------------------------------------------- */

typedef struct rusm_node_stats {
  uint64_t members_up; /* members now up, self excluded */
  uint64_t frames_out, frames_in;
  uint64_t bytes_out, bytes_in;
  uint64_t msgs_dropped;    /* messages to unreachable nodes */
  uint64_t peers_refused;   /* handshakes refused (trust) */
  uint64_t bad_frames;      /* connections closed for malformed input */
  uint64_t claims_rejected; /* forged or mismatched registry claims */
  uint64_t noconnection;    /* links / monitors fired by a lost node */
} rusm_node_stats;
void rusm_node_stats_get(rusm_node *n, rusm_node_stats *out);

/* ---- trust ---------------------------------------------------------- */

/* Creates a cluster CA in dir (ca.pem, ca.key). Refuses to overwrite.
 * why (may be NULL) gets a message on failure. */
int rusm_cluster_ca_init(const char *dir, char *why, size_t whylen);
/* Issues <out_dir>/<node>.pem and <node>.key signed by the CA in ca_dir,
 * valid for `days`. */
int rusm_cluster_cert_issue(const char *ca_dir, const char *node,
                            const char *out_dir, unsigned days, char *why,
                            size_t whylen);

#ifdef __cplusplus
}
#endif

#endif
