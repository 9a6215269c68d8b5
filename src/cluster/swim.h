/*
 * swim.h — cluster membership state machine (SWIM with suspicion,
 * incarnations and Lifeguard-style refinements; internal).
 *
 * Pure state machine in quinn-proto's shape: no sockets, no clock reads,
 * no threads; its only randomness is a PRNG seeded from the config, so a
 * run replays exactly. The caller (the node's I/O layer) feeds it what
 * peers sent (handle_message) and the time (handle_timeout at
 * next_timeout), and carries what it wants sent (poll_transmit) and what
 * it has to report (poll_event). Every call is synchronous; one thread at
 * a time (no locking inside). Times are absolute milliseconds of one
 * monotonic clock of the caller's choice; a time earlier than one seen
 * before is taken as the latest seen.
 *
 * The transport may lose, duplicate, delay and reorder messages. Replies
 * go to the `from_addr` the caller passes with a message, so that must be
 * an address the sender can be reached at (its listen address).
 *
 * Protocol, message formats, parameters, the detection-time bound and what
 * happens on restart and partition: docs/internals/cluster-membership.md.
 *
 * Ownership: rusm__swim_new copies the config and the identity strings.
 * Bytes handed out by poll_transmit belong to the state machine and stay
 * valid until the next poll_transmit or rusm__swim_free. Events and member
 * records are copied out. Addresses and bytes passed in are only read
 * during the call.
 */
#ifndef RUSM_CLUSTER_SWIM_H
#define RUSM_CLUSTER_SWIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rusm/otp.h"

/* Errors (cluster range -200..-299; membership uses -220..-229). */
enum {
  RUSM_ESWIM_MALFORMED = -220, /* a message that does not decode */
  RUSM_ESWIM_VERSION = -221,   /* a message of an unknown version */
};

#define RUSM__SWIM_VERSION 1        /* first byte of every message */
#define RUSM__SWIM_NAME_MAX 63      /* node names: 1..63 of [A-Za-z0-9._-] */
#define RUSM__SWIM_ADDR_MAX 127     /* addresses: 1..127 bytes, no NUL */
#define RUSM__SWIM_NODE_ID_MAX 2047 /* node ids: 1..2047 */
#define RUSM__SWIM_MESSAGE_MIN 512  /* smallest max_message accepted */

/* Tunables. A zero field takes its default (rusm__swim_config_default
 * fills them all in); times in milliseconds. */
typedef struct rusm__swim_config {
  uint32_t probe_interval_ms;  /* T: one probe per period (200) */
  uint32_t probe_timeout_ms;   /* direct ack wait before ping-req (100), < T */
  uint32_t indirect_checks;    /* k members asked to ping-req (3) */
  uint32_t suspicion_mult;     /* S_min = mult * T (3) */
  uint32_t suspicion_max_mult; /* S_max = max_mult * S_min (2) */
  uint32_t suspicion_confirmations; /* K suspectors bring S_max to S_min (3) */
  uint32_t retransmit_mult;         /* lambda: updates ride lambda*log10(n+1)
                                       messages, rounded up (4) */
  uint32_t max_message;             /* bytes per message (1400), >= 512 */
  uint32_t join_retry_ms;           /* JOIN resent to the seeds until one
                                       answers (1000) */
  uint32_t sync_interval_ms;        /* full-state exchange with a random
                                       member (10000) */
  uint32_t reconnect_interval_ms;   /* a sync with a failed member or an
                                       absent seed, to heal partitions (1000) */
  uint32_t tombstone_ttl_ms;        /* how long dead members are remembered
                                       (3600000) */
  uint64_t seed;                    /* PRNG seed (any value, 0 included) */
} rusm__swim_config;

/* Fills every field with its default (seed 0). */
void rusm__swim_config_default(rusm__swim_config *cfg);

/* This node's identity. boot_id is new at each start and never 0. */
typedef struct rusm__swim_self {
  const char *name; /* NUL-terminated, copied */
  uint16_t node_id;
  const char *addr; /* NUL-terminated, copied */
  uint64_t boot_id;
} rusm__swim_self;

typedef enum rusm__swim_state {
  RUSM__SWIM_ALIVE = 1,
  RUSM__SWIM_SUSPECT = 2,
  RUSM__SWIM_DEAD = 3,
  RUSM__SWIM_LEFT = 4,
} rusm__swim_state;

typedef struct rusm__swim_member {
  char name[RUSM__SWIM_NAME_MAX + 1]; /* NUL-terminated */
  char addr[RUSM__SWIM_ADDR_MAX + 1]; /* NUL-terminated */
  uint16_t node_id;
  uint64_t boot_id;
  uint32_t incarnation;
  rusm__swim_state state;
} rusm__swim_member;

typedef enum rusm__swim_event_type {
  RUSM__SWIM_MEMBER_UP = 1,      /* a new member (or one back after a
                                    partition) */
  RUSM__SWIM_MEMBER_SUSPECT = 2, /* probes fail; may still refute */
  RUSM__SWIM_MEMBER_ALIVE = 3,   /* a suspect refuted the suspicion */
  RUSM__SWIM_MEMBER_DOWN = 4,    /* failed, left, restarted or lost a
                                    conflict: its links get noconnection */
  RUSM__SWIM_JOIN_REFUSED = 5,   /* see the reasons below */
} rusm__swim_event_type;

typedef enum rusm__swim_reason {
  RUSM__SWIM_REASON_NONE = 0,
  /* MEMBER_DOWN */
  RUSM__SWIM_REASON_FAILED = 1,    /* the suspicion timed out */
  RUSM__SWIM_REASON_LEFT = 2,      /* it called rusm__swim_leave */
  RUSM__SWIM_REASON_RESTARTED = 3, /* a new boot id took its place */
  RUSM__SWIM_REASON_CONFLICT = 4,  /* it lost a name / id conflict (also
                                      JOIN_REFUSED about this node) */
  /* JOIN_REFUSED */
  RUSM__SWIM_REASON_NAME_TAKEN = 5,
  RUSM__SWIM_REASON_ID_TAKEN = 6,
  RUSM__SWIM_REASON_STALE = 7, /* a boot id already declared dead for
                                  good (left, restarted, conflict) */
} rusm__swim_reason;

/* JOIN_REFUSED carries, on the joining side, the live member that holds
 * the name or id (for STALE and CONFLICT: the winner if known, else this
 * node); on the seed side, the refused joiner. After a JOIN_REFUSED about
 * itself the state machine stops: it sends nothing more and ignores every
 * message (rusm__swim_stopped). */
typedef struct rusm__swim_event {
  rusm__swim_event_type type;
  rusm__swim_reason reason;
  rusm__swim_member member;
} rusm__swim_event;

typedef struct rusm__swim_transmit {
  const char *addr;     /* NUL-terminated destination */
  const uint8_t *bytes; /* one message */
  size_t len;           /* <= max_message */
} rusm__swim_transmit;

typedef struct rusm__swim_stats {
  uint64_t probes;           /* probes started */
  uint64_t probes_failed;    /* ... that got no ack, direct or indirect */
  uint64_t suspicions;       /* suspicions this node started */
  uint64_t refutations;      /* suspicions of this node it refuted */
  uint64_t messages_sent;    /* messages queued for transmission */
  uint64_t messages_dropped; /* not queued: queue full or no memory */
  uint64_t events_dropped;   /* not queued: no memory */
  uint32_t health;           /* Lifeguard local health multiplier, 0..8 */
} rusm__swim_stats;

typedef struct rusm__swim rusm__swim;

/* Creates the state machine of this node, alone in its cluster until it
 * joins through a seed (rusm__swim_add_seed). cfg may be NULL (defaults).
 * Returns 0, RUSM_EINVAL (bad config or identity) or RUSM_ENOMEM. */
int rusm__swim_new(const rusm__swim_config *cfg, const rusm__swim_self *self,
                   uint64_t now_ms, rusm__swim **out);
/* Frees everything. NULL is a no-op. */
void rusm__swim_free(rusm__swim *s);

/* Adds a seed address. A node with no other member sends JOIN to every
 * seed (its own address excepted) at the next timeout and every
 * join_retry_ms until one answers; seeds are also tried to heal
 * partitions. Returns 0, RUSM_EINVAL (bad address), RUSM_ENOMEM. */
int rusm__swim_add_seed(rusm__swim *s, const char *addr);

/* One message a peer sent; from_addr is where replies go. Returns 0
 * (handled or ignored), RUSM_ESWIM_MALFORMED or RUSM_ESWIM_VERSION (then
 * nothing changed), RUSM_EINVAL (NULL arguments), RUSM_ENOMEM (partly
 * applied: the protocol repairs it). */
int rusm__swim_handle_message(rusm__swim *s, const char *from_addr,
                              const uint8_t *bytes, size_t n, uint64_t now_ms);
/* Runs what is due at now_ms. Cheap when nothing is. */
void rusm__swim_handle_timeout(rusm__swim *s, uint64_t now_ms);
/* When handle_timeout is next due (absolute ms), UINT64_MAX for never. */
uint64_t rusm__swim_next_timeout(const rusm__swim *s);

/* The next message to send, false when none. */
bool rusm__swim_poll_transmit(rusm__swim *s, rusm__swim_transmit *out);
/* The next event, false when none. */
bool rusm__swim_poll_event(rusm__swim *s, rusm__swim_event *out);

/* Graceful leave: tells every member and stops. Messages already queued,
 * the announcement included, can still be polled. Returns 0. */
int rusm__swim_leave(rusm__swim *s);

/* A hint from the I/O layer that the transport to addr broke: a live
 * member there is suspected at once (as if a probe had failed) instead of
 * at its next probe; if alive, it refutes. Returns 0, RUSM_ENOTFOUND (no
 * live member there), RUSM_EINVAL. */
int rusm__swim_connection_lost(rusm__swim *s, const char *addr,
                               uint64_t now_ms);

/* The live members (alive or suspect), this node first. Writes up to cap
 * records and returns how many live members there are. */
size_t rusm__swim_members(const rusm__swim *s, rusm__swim_member *out,
                          size_t cap);
/* The number of live members, this node included. */
size_t rusm__swim_member_count(const rusm__swim *s);
/* The live member with this node id. Returns 0 or RUSM_ENOTFOUND. */
int rusm__swim_find(const rusm__swim *s, uint16_t node_id,
                    rusm__swim_member *out);
/* This node's own record (its incarnation changes as it refutes). */
void rusm__swim_self_record(const rusm__swim *s, rusm__swim_member *out);

/* True once a seed accepted the JOIN or a member exchanged views with this
 * node (and when no seed was ever given). */
bool rusm__swim_joined(const rusm__swim *s);
/* True after rusm__swim_leave or a JOIN_REFUSED about this node. */
bool rusm__swim_stopped(const rusm__swim *s);
void rusm__swim_get_stats(const rusm__swim *s, rusm__swim_stats *out);

#endif
