/*
 * greg.h — the global registry state machine (internal).
 *
 * Cluster-wide names for processes: one process per name and one name per
 * process across every node, as the local registry (rusm_register) is on
 * one node. A name is held by a *claim* that its host node signs; every
 * node keeps the claims it has heard of and answers whereis from them.
 *
 * Pure state machine, in quinn-proto's shape: no sockets, clocks or
 * threads. The caller (the node's I/O layer) tells it about members
 * (member_up / member_down), feeds it the GREG frame bodies peers sent
 * (handle_message), and carries what it wants sent (poll_transmit) and
 * what it has to report (poll_event). Every call is synchronous; one
 * thread at a time (no locking inside).
 *
 * Messages are only ever sent directly from a claim's host to each member
 * (a full mesh), on a transport that authenticates the sender's node name
 * (mutual TLS) and keeps each sender's messages in order. Correctness
 * under reordering is kept anyway (tombstones, below); see
 * docs/internals/cluster-registry.md for the claim format, the signature
 * scheme, the conflict rule, releases and tombstones, and what a receiver
 * checks.
 *
 * Conflict rule (the same on every node, whatever the delivery order):
 * among the live claims of a name, the one with the lowest key
 * (Lamport seq, host node name bytewise, pid) holds it. A host that hears
 * of a live claim that beats its own withdraws its own (a release to
 * every member) and reports NAME_LOST for its process.
 *
 * Ownership: rusm__greg_new copies everything in the config it keeps
 * (names, proof); crypto_ctx is borrowed and must outlive the registry.
 * A transmit handed out by poll_transmit belongs to the caller until
 * rusm__greg_transmit_free. Events are copied out. Names passed in are
 * only read during the call.
 */
#ifndef RUSM_CLUSTER_GREG_H
#define RUSM_CLUSTER_GREG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rusm/otp.h"

/* ------------------------------------------------------------------ */
/* Errors (cluster range -200..-299; the registry uses -240..-249)     */
/* ------------------------------------------------------------------ */

enum {
  RUSM_EGREG_BADMSG = -240,   /* malformed registry message */
  RUSM_EGREG_SIG = -241,      /* a claim's signature does not verify */
  RUSM_EGREG_MISMATCH = -242, /* sender / host / boot / pid node do not
                                 match the member table */
  RUSM_EGREG_NOTOWNER = -243, /* the name is held by another node */
  RUSM_EGREG_SIGN = -244,     /* the sign callback failed */
};

/* ------------------------------------------------------------------ */
/* Limits                                                              */
/* ------------------------------------------------------------------ */

#define RUSM__GREG_VERSION 1
#define RUSM__GREG_NODE_NAME_MAX 255 /* node names: 1..255 bytes, no NUL */
#define RUSM__GREG_PROOF_MAX 4096    /* the host's certificate (DER) */
#define RUSM__GREG_SIG_MAX 512       /* signature bytes */
/* The largest claim seq: the Lamport clock stops issuing claims there
 * (register: RUSM_ELIMIT) so that no counter ever wraps. */
#define RUSM__GREG_SEQ_MAX (UINT64_C(1) << 62)
/* Releases may go a little past it (see greg.c); the wire accepts up to: */
#define RUSM__GREG_REL_SEQ_MAX (UINT64_C(1) << 63)
#define RUSM__GREG_DEFAULT_TOMBSTONES 4096
#define RUSM__GREG_DEFAULT_RECORDS (UINT32_C(1) << 20)

/* Message kinds (byte 1 of every message). */
enum { RUSM__GREG_CLAIM = 1, RUSM__GREG_RELEASE = 2 };

/* The signed bytes of a claim are this domain tag (no NUL) followed by the
 * claim message up to, not including, its sig_len field. */
#define RUSM__GREG_SIGN_DOMAIN "rusm-greg-claim-v1"

/* ------------------------------------------------------------------ */
/* Creation                                                            */
/* ------------------------------------------------------------------ */

/* Signs msg[0..n) with this node's key. *sig_len holds the capacity of
 * sig (RUSM__GREG_SIG_MAX) on entry and the signature's length on return
 * (1..capacity). Returns 0, or nonzero on failure. */
typedef int (*rusm__greg_sign_fn)(void *ctx, const uint8_t *msg, size_t n,
                                  uint8_t *sig, size_t *sig_len);
/* True when sig is a valid signature of msg[0..n) by host_node: the real
 * one checks that proof (a DER certificate) chains to the cluster CA,
 * names host_node, and that sig was made with its key. */
typedef bool (*rusm__greg_verify_fn)(void *ctx, const char *host_node,
                                     const uint8_t *proof, size_t proof_len,
                                     const uint8_t *msg, size_t n,
                                     const uint8_t *sig, size_t sig_len);

typedef struct rusm__greg_config {
  const char *node_name; /* this node: 1..255 bytes, no NUL; copied */
  uint16_t node_id;      /* 1..RUSM_NODE_ID_MAX: local pids carry it */
  uint64_t boot_id;      /* this incarnation of the node */
  const uint8_t *proof;  /* this node's certificate; copied */
  size_t proof_len;      /* 0..RUSM__GREG_PROOF_MAX */
  rusm__greg_sign_fn sign;
  rusm__greg_verify_fn verify;
  void *crypto_ctx; /* passed to sign and verify; borrowed */
  /* Most tombstones (released claims of other nodes) kept; beyond it the
   * oldest are folded into a per-host floor. 0: the default. */
  uint32_t max_tombstones;
  /* Most records (live claims and tombstones) of other nodes kept; a claim
   * past it is refused with RUSM_ELIMIT. 0: the default. */
  uint32_t max_records;
  /* Also report NAME_REGISTERED / NAME_RELEASED (for observers). */
  bool observe;
} rusm__greg_config;

typedef struct rusm__greg rusm__greg;

/* Makes a registry with no members and no names. Returns 0 (*out set) or
 * RUSM_EINVAL (bad config), RUSM_ENOMEM. */
int rusm__greg_new(const rusm__greg_config *cfg, rusm__greg **out);
/* Frees the registry with its queued transmits and events (NULL: no-op).
 * Transmits already handed out stay the caller's. */
void rusm__greg_free(rusm__greg *g);

/* ------------------------------------------------------------------ */
/* Names                                                               */
/* ------------------------------------------------------------------ */

/* Registers name (1..RUSM_NAME_MAX bytes) for pid, a process of this node
 * (rusm_pid_node(pid) == node_id): signs a claim and queues it for every
 * member. Returns 0, or RUSM_EEXIST (name held in this node's view),
 * RUSM_EBUSY (pid already has a global name), RUSM_EINVAL (bad name or
 * pid), RUSM_ELIMIT (Lamport clock exhausted), RUSM_EGREG_SIGN,
 * RUSM_ENOMEM. Nothing changes on error. A concurrent claim elsewhere may
 * still win: then NAME_LOST is reported later. */
int rusm__greg_register(rusm__greg *g, const char *name, rusm_pid_t pid);
/* Releases name, held by a process of this node, and tells every member.
 * Returns 0, or RUSM_ENOTFOUND (not held), RUSM_EGREG_NOTOWNER (held by
 * another node's process), RUSM_EINVAL, RUSM_ENOMEM (nothing changed). */
int rusm__greg_unregister(rusm__greg *g, const char *name);
/* Releases the global name of pid (a process of this node that exited)
 * and tells every member. Returns 0, or RUSM_ENOTFOUND (no global name),
 * RUSM_EINVAL, RUSM_ENOMEM (nothing changed: call again). */
int rusm__greg_local_process_exited(rusm__greg *g, rusm_pid_t pid);
/* The pid holding name in this node's view, or RUSM_PID_NONE. */
rusm_pid_t rusm__greg_whereis(const rusm__greg *g, const char *name);
/* Copies up to cap held names (any order) into out; returns how many
 * names are held (may exceed cap). out may be NULL when cap is 0. */
int rusm__greg_registered(const rusm__greg *g, rusm_reg_entry *out, size_t cap);

/* ------------------------------------------------------------------ */
/* Membership (told by the caller)                                     */
/* ------------------------------------------------------------------ */

/* name (id, boot) is up: queues every claim this node hosts for it (full
 * sync). Call it on both sides whenever a member (re)appears; calling it
 * again for the same incarnation only resends. A new boot (or id) for a
 * known name first drops what the old incarnation held. Returns 0, or
 * RUSM_EINVAL (bad name or id, or this node's own), RUSM_EEXIST (id used
 * by another member), RUSM_ENOMEM (nothing changed). */
int rusm__greg_member_up(rusm__greg *g, const char *name, uint16_t id,
                         uint64_t boot);
/* name (boot) is gone: forgets every claim and tombstone it hosted; no
 * message is needed (every node does the same when it sees it go).
 * Returns 0, or RUSM_ENOTFOUND (unknown name, or another boot: ignored),
 * RUSM_EINVAL. */
int rusm__greg_member_down(rusm__greg *g, const char *name, uint64_t boot);

/* ------------------------------------------------------------------ */
/* Messages                                                            */
/* ------------------------------------------------------------------ */

/* One GREG body (the payload of a wire GREG frame) sent by from_node, the
 * transport-authenticated name of the peer. Returns 0 (applied, or a
 * duplicate or stale message ignored), or with nothing changed but the
 * stats: RUSM_EGREG_BADMSG (malformed), RUSM_EGREG_MISMATCH (sender not
 * the host, host not an up member, boot, id or pid node not matching),
 * RUSM_EGREG_SIG (signature rejected), RUSM_ELIMIT (max_records),
 * RUSM_ENOMEM, RUSM_EINVAL (NULL arguments). */
int rusm__greg_handle_message(rusm__greg *g, const char *from_node,
                              const uint8_t *data, size_t len);

typedef struct rusm__greg_transmit {
  char *to;      /* a member's name, or NULL: every member up */
  uint8_t *data; /* one GREG body */
  size_t len;
} rusm__greg_transmit;

/* Hands out the next queued message (true), or false when none. The
 * caller owns *out until rusm__greg_transmit_free(out). */
bool rusm__greg_poll_transmit(rusm__greg *g, rusm__greg_transmit *out);
/* Frees what a transmit holds and clears it (safe to call twice). */
void rusm__greg_transmit_free(rusm__greg_transmit *t);

typedef enum rusm__greg_event_kind {
  /* A process of this node lost its name to a conflicting claim; the
   * claim is already withdrawn. The caller tells the process. */
  RUSM__GREG_NAME_LOST = 1,
  /* Observer events (config.observe): the holder of name changed in this
   * node's view. Best effort: dropped (and counted) when out of memory. */
  RUSM__GREG_NAME_REGISTERED = 2,
  RUSM__GREG_NAME_RELEASED = 3,
} rusm__greg_event_kind;

typedef struct rusm__greg_event {
  rusm__greg_event_kind kind;
  rusm_pid_t pid;
  char name[RUSM_NAME_MAX + 1]; /* NUL-terminated */
} rusm__greg_event;

/* Copies out the next event (true), or false when none. */
bool rusm__greg_poll_event(rusm__greg *g, rusm__greg_event *out);

/* ------------------------------------------------------------------ */
/* Introspection                                                       */
/* ------------------------------------------------------------------ */

typedef struct rusm__greg_stats {
  uint64_t claims_accepted;    /* claims of other nodes recorded */
  uint64_t releases_accepted;  /* releases of other nodes applied */
  uint64_t rejected_signature; /* RUSM_EGREG_SIG */
  uint64_t rejected_mismatch;  /* RUSM_EGREG_MISMATCH */
  uint64_t rejected_malformed; /* RUSM_EGREG_BADMSG */
  uint64_t rejected_limit;     /* RUSM_ELIMIT (max_records) */
  uint64_t duplicates;         /* a claim or release already known */
  uint64_t stale;              /* a released claim arriving late */
  uint64_t conflicts_resolved; /* a claim met a live claim of another host
                                  for the same name (one of them lost) */
  uint64_t names_lost;         /* claims of this node withdrawn */
  uint64_t tombstones_dropped; /* folded into a floor by max_tombstones */
  uint64_t events_dropped;     /* observer events lost to memory */
  uint64_t tombstones;         /* held now */
  uint64_t records;            /* records of other nodes held now */
  uint64_t local_names;        /* names held by this node's processes */
  uint64_t members;            /* members up now */
} rusm__greg_stats;

void rusm__greg_get_stats(const rusm__greg *g, rusm__greg_stats *out);
/* The Lamport clock: the next claim of this node gets clock + 1. */
uint64_t rusm__greg_clock(const rusm__greg *g);

#endif
