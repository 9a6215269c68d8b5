/*
 * u64map.h — a small open-addressing hash map from nonzero u64 keys to u64
 * values (linear probing, backward-shift deletion: no tombstones). Used for
 * a process's links and monitors. Owner-thread only, no locking.
 */
#ifndef RUSM_OTP_U64MAP_H
#define RUSM_OTP_U64MAP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct rusm__kv {
  uint64_t key; /* 0: empty */
  uint64_t val;
} rusm__kv;

typedef struct rusm__u64map {
  rusm__kv *slots;
  uint32_t cap; /* 0 or a power of two */
  uint32_t len;
} rusm__u64map;

/* Makes room for `more` further insertions. 0 or RUSM_ENOMEM. */
int rusm__map_reserve(rusm__u64map *m, uint32_t more);
/* Inserts or updates. 1 when the key was new, 0 when it existed, or
 * RUSM_ENOMEM (nothing changed). key must not be 0. */
int rusm__map_put(rusm__u64map *m, uint64_t key, uint64_t val);
bool rusm__map_get(const rusm__u64map *m, uint64_t key, uint64_t *val);
/* Removes key; true (and *val if not NULL) when it was there. */
bool rusm__map_del(rusm__u64map *m, uint64_t key, uint64_t *val);
void rusm__map_free(rusm__u64map *m);

#endif
