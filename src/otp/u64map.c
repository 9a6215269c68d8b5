#include "otp/u64map.h"

#include <string.h>

#include "otp/alloc.h"
#include "rusm/otp.h"

static inline uint32_t slot_of(uint64_t key, uint32_t cap) {
  key ^= key >> 33; /* murmur3 finaliser: pids and refs are sequential */
  key *= UINT64_C(0xff51afd7ed558ccd);
  key ^= key >> 33;
  return (uint32_t)key & (cap - 1);
}

static int rehash(rusm__u64map *m, uint32_t cap) {
  rusm__kv *slots = rusm__calloc(cap, sizeof *slots);
  if (!slots)
    return RUSM_ENOMEM;
  for (uint32_t i = 0; i < m->cap; i++) {
    if (!m->slots[i].key)
      continue;
    uint32_t j = slot_of(m->slots[i].key, cap);
    while (slots[j].key)
      j = (j + 1) & (cap - 1);
    slots[j] = m->slots[i];
  }
  rusm__free(m->slots, (size_t)m->cap * sizeof *m->slots);
  m->slots = slots;
  m->cap = cap;
  return 0;
}

int rusm__map_reserve(rusm__u64map *m, uint32_t more) {
  uint32_t need = m->len + more;
  if (need > UINT32_MAX / 4)
    return RUSM_ENOMEM;
  uint32_t cap = m->cap ? m->cap : 4;
  while (need * 4 > cap * 3) /* keep the load factor under 3/4 */
    cap *= 2;
  return cap == m->cap ? 0 : rehash(m, cap);
}

int rusm__map_put(rusm__u64map *m, uint64_t key, uint64_t val) {
  if (m->cap) {
    uint32_t i = slot_of(key, m->cap);
    while (m->slots[i].key) {
      if (m->slots[i].key == key) {
        m->slots[i].val = val;
        return 0;
      }
      i = (i + 1) & (m->cap - 1);
    }
  }
  int rc = rusm__map_reserve(m, 1);
  if (rc)
    return rc;
  uint32_t i = slot_of(key, m->cap);
  while (m->slots[i].key)
    i = (i + 1) & (m->cap - 1);
  m->slots[i].key = key;
  m->slots[i].val = val;
  m->len++;
  return 1;
}

static int64_t find(const rusm__u64map *m, uint64_t key) {
  if (!m->len)
    return -1;
  uint32_t i = slot_of(key, m->cap);
  while (m->slots[i].key) {
    if (m->slots[i].key == key)
      return i;
    i = (i + 1) & (m->cap - 1);
  }
  return -1;
}

bool rusm__map_get(const rusm__u64map *m, uint64_t key, uint64_t *val) {
  int64_t i = find(m, key);
  if (i < 0)
    return false;
  if (val)
    *val = m->slots[i].val;
  return true;
}

bool rusm__map_del(rusm__u64map *m, uint64_t key, uint64_t *val) {
  int64_t f = find(m, key);
  if (f < 0)
    return false;
  uint32_t i = (uint32_t)f, mask = m->cap - 1;
  if (val)
    *val = m->slots[i].val;
  /* backward-shift: pull later entries of the cluster into the hole */
  uint32_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (!m->slots[j].key)
      break;
    uint32_t home = slot_of(m->slots[j].key, m->cap);
    /* move j to i when its home is not in the cyclic range (i, j] */
    bool in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (!in_range) {
      m->slots[i] = m->slots[j];
      i = j;
    }
  }
  m->slots[i].key = 0;
  m->slots[i].val = 0;
  m->len--;
  return true;
}

void rusm__map_free(rusm__u64map *m) {
  rusm__free(m->slots, (size_t)m->cap * sizeof *m->slots);
  memset(m, 0, sizeof *m);
}
