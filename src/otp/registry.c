/*
 * registry.c — local names for processes (Erlang's register/2).
 *
 * A chained hash table under one mutex: registering is rare, a lookup is
 * a hash and a short chain walk. The name is also kept on the process
 * (p->reg_name) so the reaping path releases it without a search. The
 * exit flag is set before the reaping path takes the lock, and checked
 * under it by register, so a name can never outlive its process.
 */
#include <string.h>

#include "otp/internal.h"

typedef struct entry {
  struct entry *next;
  uint64_t hash;
  rusm_pid_t pid;
  size_t len;
  char name[];
} entry;

typedef struct rusm__registry {
  pthread_mutex_t lock;
  entry **buckets;
  size_t nbuckets; /* power of two */
  size_t count;
} rusm__registry;

static uint64_t hash_name(const char *s, size_t len) {
  uint64_t h = UINT64_C(1469598103934665603); /* FNV-1a */
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= UINT64_C(1099511628211);
  }
  return h;
}

int rusm__registry_init(rusm_rt *rt) {
  rusm__registry *r = rusm__calloc(1, sizeof *r);
  if (!r)
    return RUSM_ENOMEM;
  r->nbuckets = 64;
  r->buckets = rusm__calloc(r->nbuckets, sizeof(entry *));
  if (!r->buckets) {
    rusm__free(r, sizeof *r);
    return RUSM_ENOMEM;
  }
  pthread_mutex_init(&r->lock, NULL);
  rt->reg = r;
  return 0;
}

static void entry_free(entry *e) { rusm__free(e, sizeof *e + e->len + 1); }

void rusm__registry_destroy(rusm_rt *rt) {
  rusm__registry *r = rt->reg;
  if (!r)
    return;
  for (size_t i = 0; i < r->nbuckets; i++)
    while (r->buckets[i]) {
      entry *e = r->buckets[i];
      r->buckets[i] = e->next;
      entry_free(e);
    }
  rusm__free(r->buckets, r->nbuckets * sizeof(entry *));
  pthread_mutex_destroy(&r->lock);
  rusm__free(r, sizeof *r);
  rt->reg = NULL;
}

/* Under the lock: the link that points at the entry for name, or at the
 * NULL ending its chain. */
static entry **find(rusm__registry *r, const char *name, size_t len,
                    uint64_t h) {
  entry **pp = &r->buckets[h & (r->nbuckets - 1)];
  while (*pp && ((*pp)->hash != h || (*pp)->len != len ||
                 memcmp((*pp)->name, name, len) != 0))
    pp = &(*pp)->next;
  return pp;
}

static void grow(rusm__registry *r) {
  size_t n = r->nbuckets * 2;
  entry **b = rusm__calloc(n, sizeof(entry *));
  if (!b)
    return; /* keep the longer chains */
  for (size_t i = 0; i < r->nbuckets; i++)
    while (r->buckets[i]) {
      entry *e = r->buckets[i];
      r->buckets[i] = e->next;
      e->next = b[e->hash & (n - 1)];
      b[e->hash & (n - 1)] = e;
    }
  rusm__free(r->buckets, r->nbuckets * sizeof(entry *));
  r->buckets = b;
  r->nbuckets = n;
}

static int check_name(const char *name, size_t *len) {
  if (!name)
    return RUSM_EINVAL;
  *len = strnlen(name, RUSM_NAME_MAX + 1);
  return *len == 0 || *len > RUSM_NAME_MAX ? RUSM_EINVAL : 0;
}

/* Under the lock: unlinks the entry at *pp and clears its process's name. */
static void remove_locked(rusm_rt *rt, rusm__registry *r, entry **pp) {
  entry *e = *pp;
  *pp = e->next;
  r->count--;
  rusm_proc *p = rusm__proc_at(rt, rusm_pid_slot(e->pid));
  char *expect = e->name;
  if (p)
    atomic_compare_exchange_strong_explicit(&p->reg_name, &expect, NULL,
                                            memory_order_relaxed,
                                            memory_order_relaxed);
  entry_free(e);
}

int rusm_register(rusm_rt *rt, const char *name, rusm_pid_t pid) {
  size_t len;
  if (!rt || check_name(name, &len) != 0)
    return RUSM_EINVAL;
  rusm_proc *p = rusm__proc_get(rt, pid);
  if (!p)
    return RUSM_ENOPROC;
  rusm__registry *r = rt->reg;
  uint64_t h = hash_name(name, len);
  entry *e = rusm__alloc(sizeof *e + len + 1);
  if (e) {
    e->len = len; /* entry_free needs it on every path */
    e->next = NULL;
  }
  int rc = 0;
  pthread_mutex_lock(&r->lock);
  entry **pp = find(r, name, len, h);
  if (atomic_load_explicit(&p->flags, memory_order_acquire) &
      (RUSM__P_EXITED | RUSM__P_DYING))
    rc = RUSM_ENOPROC;
  else if (*pp)
    rc = RUSM_EEXIST;
  else if (atomic_load_explicit(&p->reg_name, memory_order_relaxed))
    rc = RUSM_EBUSY;
  else if (!e)
    rc = RUSM_ENOMEM;
  if (rc == 0) {
    e->next = NULL;
    e->hash = h;
    e->pid = pid;
    e->len = len;
    memcpy(e->name, name, len + 1);
    *pp = e;
    e = NULL;
    r->count++;
    /* seq_cst store, then seq_cst load of the exit flag: the Dekker pair
     * of the reaping path (flag, then name). If the process died while we
     * registered, one of us sees the other and the name goes. */
    atomic_store_explicit(&p->reg_name, (*pp)->name, memory_order_seq_cst);
    if (atomic_load_explicit(&p->flags, memory_order_seq_cst) &
        (RUSM__P_EXITED | RUSM__P_DYING)) {
      remove_locked(rt, r, pp);
      rc = RUSM_ENOPROC;
    } else if (r->count > r->nbuckets) {
      grow(r);
    }
  }
  pthread_mutex_unlock(&r->lock);
  if (e)
    entry_free(e);
  rusm__proc_unref(p);
  return rc;
}

int rusm_unregister(rusm_rt *rt, const char *name) {
  size_t len;
  if (!rt || check_name(name, &len) != 0)
    return RUSM_EINVAL;
  rusm__registry *r = rt->reg;
  int rc = RUSM_ENOTFOUND;
  pthread_mutex_lock(&r->lock);
  entry **pp = find(r, name, len, hash_name(name, len));
  if (*pp) {
    remove_locked(rt, r, pp);
    rc = 0;
  }
  pthread_mutex_unlock(&r->lock);
  return rc;
}

void rusm__registry_release(rusm_proc *p) {
  rusm__registry *r = p->rt->reg;
  pthread_mutex_lock(&r->lock);
  char *name = atomic_load_explicit(&p->reg_name, memory_order_relaxed);
  if (name) {
    size_t len = strlen(name);
    entry **pp = find(r, name, len, hash_name(name, len));
    if (*pp && (*pp)->pid == p->pid)
      remove_locked(p->rt, r, pp);
    atomic_store_explicit(&p->reg_name, NULL, memory_order_relaxed);
  }
  pthread_mutex_unlock(&r->lock);
}

rusm_pid_t rusm_whereis(rusm_rt *rt, const char *name) {
  size_t len;
  if (!rt || check_name(name, &len) != 0)
    return RUSM_PID_NONE;
  rusm__registry *r = rt->reg;
  pthread_mutex_lock(&r->lock);
  entry *e = *find(r, name, len, hash_name(name, len));
  rusm_pid_t pid = e ? e->pid : RUSM_PID_NONE;
  pthread_mutex_unlock(&r->lock);
  return pid;
}

int rusm_send_named(rusm_rt *rt, const char *name, uint64_t tag,
                    const void *data, size_t len) {
  rusm_pid_t pid = rusm_whereis(rt, name);
  if (pid == RUSM_PID_NONE)
    return rt && name ? RUSM_ENOTFOUND : RUSM_EINVAL;
  return rusm_send(rt, pid, tag, data, len);
}

int rusm_name_of(rusm_rt *rt, rusm_pid_t pid, char *buf, size_t len) {
  if (!rt || (!buf && len))
    return RUSM_EINVAL;
  rusm_proc *p = rusm__proc_get(rt, pid);
  if (!p)
    return RUSM_ENOTFOUND;
  int rc = RUSM_ENOTFOUND;
  pthread_mutex_lock(&rt->reg->lock);
  char *name = atomic_load_explicit(&p->reg_name, memory_order_relaxed);
  if (name) {
    size_t n = strlen(name);
    if (len) {
      size_t c = n < len - 1 ? n : len - 1;
      memcpy(buf, name, c);
      buf[c] = '\0';
    }
    rc = (int)n;
  }
  pthread_mutex_unlock(&rt->reg->lock);
  rusm__proc_unref(p);
  return rc;
}

int rusm_registered(rusm_rt *rt, rusm_reg_entry *out, size_t cap) {
  if (!rt || (!out && cap))
    return RUSM_EINVAL;
  rusm__registry *r = rt->reg;
  size_t n = 0;
  pthread_mutex_lock(&r->lock);
  for (size_t i = 0; i < r->nbuckets; i++)
    for (entry *e = r->buckets[i]; e; e = e->next) {
      if (n < cap) {
        memcpy(out[n].name, e->name, e->len + 1);
        out[n].pid = e->pid;
      }
      n++;
    }
  pthread_mutex_unlock(&r->lock);
  return (int)n;
}
