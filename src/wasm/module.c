/*
 * module.c — loading modules: validation, the content-hash cache (two
 * loads of the same bytes share one compile), the entry exports, and one
 * InstancePre per tier (compile once, spawn many; the overflow tier's on
 * first need).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasm/wasm_int.h"

/* FNV-1a, 64 bits: the cache confirms a hit with memcmp, so the hash only
 * has to spread modules, not resist collisions. */
static uint64_t hash_bytes(const uint8_t *p, size_t n) {
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= UINT64_C(0x100000001b3);
  }
  return h ^ n;
}

static void set_err(char *err, size_t errlen, const char *fmt, const char *a,
                    const char *b) {
  if (err && errlen)
    snprintf(err, errlen, fmt, a, b);
}

static bool name_is(const wasm_name_t *n, const char *s) {
  size_t len = strlen(s);
  return n && n->size == len && memcmp(n->data, s, len) == 0;
}

/* Records the () -> () exports (entry points) and whether WASI is
 * imported. Returns false when out of memory. */
static bool inspect(rusm_wasm_module *m, wasmtime_module_t *mod) {
  wasm_importtype_vec_t imps = {0};
  wasmtime_module_imports(mod, &imps);
  for (size_t i = 0; i < imps.size; i++)
    if (name_is(wasm_importtype_module(imps.data[i]), "wasi_snapshot_preview1"))
      m->needs_wasi = true;
  wasm_importtype_vec_delete(&imps);

  wasm_exporttype_vec_t exps = {0};
  wasmtime_module_exports(mod, &exps);
  bool ok = true;
  m->entries = calloc(exps.size ? exps.size : 1, sizeof(char *));
  if (!m->entries)
    ok = false;
  for (size_t i = 0; ok && i < exps.size; i++) {
    const wasm_externtype_t *et = wasm_exporttype_type(exps.data[i]);
    if (wasm_externtype_kind(et) != WASM_EXTERN_FUNC)
      continue;
    const wasm_functype_t *ft = wasm_externtype_as_functype_const(et);
    if (wasm_functype_params(ft)->size || wasm_functype_results(ft)->size)
      continue;
    const wasm_name_t *n = wasm_exporttype_name(exps.data[i]);
    char *s = malloc(n->size + 1);
    if (!s) {
      ok = false;
      break;
    }
    memcpy(s, n->data, n->size);
    s[n->size] = '\0';
    m->entries[m->nentries++] = s;
  }
  wasm_exporttype_vec_delete(&exps);
  return ok;
}

static void module_free(rusm_wasm_module *m) {
  for (int t = 0; t < TIER__COUNT; t++) {
    wasmtime_instance_pre_t *pre =
        atomic_load_explicit(&m->pre[t], memory_order_relaxed);
    if (pre)
      wasmtime_instance_pre_delete(pre);
    if (m->mod[t])
      wasmtime_module_delete(m->mod[t]);
  }
  for (size_t i = 0; i < m->nentries; i++)
    free(m->entries[i]);
  free(m->entries);
  free(m->bytes);
  rusm_wasm *w = m->w;
  free(m);
  if (w) {
    atomic_fetch_sub_explicit(&w->modules_live, 1, memory_order_relaxed);
    rusm__wasm_unref(w);
  }
}

/* Compiles bytes for tier t of w and makes the InstancePre: the import
 * check happens here (an import the linker lacks is an error). */
static int compile(rusm_wasm *w, int t, const uint8_t *bytes, size_t len,
                   wasmtime_module_t **mod, wasmtime_instance_pre_t **pre,
                   char *err, size_t errlen) {
  char msg[512];
  wasmtime_error_t *e = wasmtime_module_new(w->tier[t].engine, bytes, len, mod);
  if (e) {
    rusm__wasm_errmsg(e, NULL, false, msg, sizeof msg);
    wasmtime_error_delete(e);
    set_err(err, errlen, "%s%s", msg, "");
    *mod = NULL;
    return RUSM_EINVAL;
  }
  atomic_fetch_add_explicit(&w->modules_compiled, 1, memory_order_relaxed);
  e = wasmtime_linker_instantiate_pre(w->tier[t].linker, *mod, pre);
  if (e) {
    rusm__wasm_errmsg(e, NULL, false, msg, sizeof msg);
    wasmtime_error_delete(e);
    set_err(err, errlen, "%s%s", msg, "");
    wasmtime_module_delete(*mod);
    *mod = NULL;
    *pre = NULL;
    return RUSM_EINVAL;
  }
  return 0;
}

/* Takes a reference on a cached module unless it is already dying (its
 * count reached zero: it is being unlinked by its last owner). */
static bool try_ref(rusm_wasm_module *m) {
  uint64_t r = atomic_load_explicit(&m->refs, memory_order_relaxed);
  while (r) {
    /* relaxed: the cache lock orders the module's fields for us */
    if (atomic_compare_exchange_weak_explicit(
            &m->refs, &r, r + 1, memory_order_relaxed, memory_order_relaxed))
      return true;
  }
  return false;
}

static rusm_wasm_module *cache_find(rusm_wasm *w, uint64_t hash,
                                    const void *bytes, size_t len) {
  for (rusm_wasm_module *m = w->modules; m; m = m->next)
    if (m->hash == hash && m->len == len && memcmp(m->bytes, bytes, len) == 0 &&
        try_ref(m))
      return m;
  return NULL;
}

int rusm_wasm_load(rusm_wasm *w, const char *name, const void *bytes,
                   size_t len, rusm_wasm_module **out, char *err,
                   size_t errlen) {
  if (err && errlen)
    err[0] = '\0';
  if (!w || !out || (!bytes && len)) {
    set_err(err, errlen, "%s%s", "bad argument", "");
    return RUSM_EINVAL;
  }
  *out = NULL;
  if (!name || !*name)
    name = "anon";
  uint64_t h = hash_bytes(bytes, len);
  pthread_mutex_lock(&w->lock);
  rusm_wasm_module *hit = cache_find(w, h, bytes, len);
  pthread_mutex_unlock(&w->lock);
  if (hit) {
    atomic_fetch_add_explicit(&w->cache_hits, 1, memory_order_relaxed);
    *out = hit;
    return 0;
  }

  rusm_wasm_module *m = calloc(1, sizeof(*m));
  if (!m || !(m->bytes = malloc(len ? len : 1))) {
    free(m);
    set_err(err, errlen, "%s%s", "out of memory", "");
    return RUSM_ENOMEM;
  }
  memcpy(m->bytes, bytes, len);
  m->len = len;
  m->hash = h;
  atomic_init(&m->refs, 1);
  snprintf(m->name, sizeof m->name, "%s", name);
  char label[WASM_NAME_MAX + 8];
  snprintf(label, sizeof label, "wasm:%s", m->name);
  m->label = rusm__wasm_intern(label);
  rusm__wasm_ref(w);
  m->w = w;
  atomic_fetch_add_explicit(&w->modules_live, 1, memory_order_relaxed);

  char msg[512];
  wasmtime_instance_pre_t *pre = NULL;
  int rc = compile(w, TIER_POOL, m->bytes, len, &m->mod[TIER_POOL], &pre, msg,
                   sizeof msg);
  if (rc) {
    set_err(err, errlen, "module '%s': %s", m->name, msg);
    module_free(m);
    return rc;
  }
  atomic_init(&m->pre[TIER_POOL], pre);
  if (!inspect(m, m->mod[TIER_POOL])) {
    set_err(err, errlen, "%s%s", "out of memory", "");
    module_free(m);
    return RUSM_ENOMEM;
  }

  /* A concurrent load of the same bytes may have won: share its module. */
  pthread_mutex_lock(&w->lock);
  hit = cache_find(w, h, bytes, len);
  if (!hit) {
    m->next = w->modules;
    w->modules = m;
  }
  pthread_mutex_unlock(&w->lock);
  if (hit) {
    module_free(m);
    atomic_fetch_add_explicit(&w->cache_hits, 1, memory_order_relaxed);
    m = hit;
  }
  *out = m;
  return 0;
}

int rusm_wasm_load_file(rusm_wasm *w, const char *name, const char *path,
                        rusm_wasm_module **out, char *err, size_t errlen) {
  if (!path) {
    set_err(err, errlen, "%s%s", "no path", "");
    return RUSM_EINVAL;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    char why[128];
    set_err(err, errlen, "%s: %s", path,
            strerror_r(errno, why, sizeof why)); /* GNU: returns the text */
    return RUSM_ESYS;
  }
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      size_t ncap = cap ? cap * 2 : 65536;
      uint8_t *nb = realloc(buf, ncap);
      if (!nb) {
        free(buf);
        (void)fclose(f); /* read-only: nothing to lose */
        set_err(err, errlen, "%s: %s", path, "out of memory");
        return RUSM_ENOMEM;
      }
      buf = nb;
      cap = ncap;
    }
    size_t n = fread(buf + len, 1, cap - len, f);
    len += n;
    if (n == 0)
      break;
  }
  bool bad = ferror(f);
  (void)fclose(f); /* read-only: nothing to lose */
  if (bad) {
    free(buf);
    set_err(err, errlen, "%s: %s", path, "read error");
    return RUSM_ESYS;
  }
  char base[WASM_NAME_MAX + 1];
  if (!name) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(base, sizeof base, "%s", b);
    size_t bl = strlen(base);
    if (bl > 5 && strcmp(base + bl - 5, ".wasm") == 0)
      base[bl - 5] = '\0';
    name = base;
  }
  int rc = rusm_wasm_load(w, name, buf, len, out, err, errlen);
  free(buf);
  return rc;
}

rusm_wasm_module *rusm_wasm_module_ref(rusm_wasm_module *m) {
  /* relaxed: the caller already holds a reference */
  atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
  return m;
}

void rusm_wasm_module_release(rusm_wasm_module *m) {
  if (!m)
    return;
  /* acq_rel: the last owner must see every other owner's writes */
  if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
    return;
  rusm_wasm *w = m->w;
  pthread_mutex_lock(&w->lock);
  for (rusm_wasm_module **pp = &w->modules; *pp; pp = &(*pp)->next) {
    if (*pp == m) {
      *pp = m->next;
      break;
    }
  }
  pthread_mutex_unlock(&w->lock);
  module_free(m);
}

const char *rusm_wasm_module_name(const rusm_wasm_module *m) {
  return m ? m->name : NULL;
}

const char *rusm__wasm_entry(const rusm_wasm_module *m, const char *name,
                             size_t len) {
  if (!name) {
    const char *e = rusm__wasm_entry(m, "main", 4);
    return e ? e : rusm__wasm_entry(m, "_start", 6);
  }
  for (size_t i = 0; i < m->nentries; i++)
    if (strlen(m->entries[i]) == len && memcmp(m->entries[i], name, len) == 0)
      return m->entries[i];
  return NULL;
}

bool rusm_wasm_module_has_entry(const rusm_wasm_module *m, const char *name) {
  return m && rusm__wasm_entry(m, name, name ? strlen(name) : 0) != NULL;
}

wasmtime_instance_pre_t *rusm__wasm_pre(rusm_wasm_module *m, int t, char *err,
                                        size_t errlen) {
  /* acquire: pairs with the release store below */
  wasmtime_instance_pre_t *pre =
      atomic_load_explicit(&m->pre[t], memory_order_acquire);
  if (pre || t == TIER_POOL)
    return pre;
  rusm_wasm *w = m->w;
  if (!rusm__wasm_overflow(w, err, errlen))
    return NULL;
  /* One compile per module: later spawns wait for the first. */
  pthread_mutex_lock(&w->tier_lock);
  pre = atomic_load_explicit(&m->pre[t], memory_order_relaxed);
  if (!pre &&
      compile(w, t, m->bytes, m->len, &m->mod[t], &pre, err, errlen) == 0)
    atomic_store_explicit(&m->pre[t], pre, memory_order_release);
  pthread_mutex_unlock(&w->tier_lock);
  return pre;
}
