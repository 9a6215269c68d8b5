/*
 * node.h — the node's internal hooks (the public API is rusm/cluster.h).
 */
#ifndef RUSM_CLUSTER_NODE_H
#define RUSM_CLUSTER_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "rusm/cluster.h"

/* Test hook: queues one frame of an opaque kind (RUSM__WIRE_SWIM or
 * RUSM__WIRE_GREG) with body bytes for the peer named peer_name, as a
 * misbehaving but authenticated node would. 0, RUSM_ENODE_DOWN,
 * RUSM_EINVAL, RUSM_ENOMEM. */
int rusm__node_inject(rusm_node *n, const char *peer_name, int kind,
                      const uint8_t *body, size_t len);

/* Test hook: raw bytes on the peer's stream (a corrupt frame). */
int rusm__node_inject_raw(rusm_node *n, const char *peer_name,
                          const uint8_t *bytes, size_t len);

#endif
