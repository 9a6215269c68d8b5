/*
 * timers.c — send_after / exit_after / kill_after / cancel_timer.
 *
 * Each timer is a 128-byte entry on one scheduler's timer wheel (twheel),
 * touched only by that scheduler's thread. A timer set on a scheduler
 * thread goes straight into its wheel; one set elsewhere is pushed onto
 * a scheduler's request stack (MPSC, taken whole) and the scheduler is
 * woken to file it. Cancel from any thread is one CAS on the entry's state
 * word (generation | state), so exactly one of fire and cancel wins; the
 * canceller then asks the owner to unlink and free the entry.
 *
 * Entries live in chunks that are never freed before the runtime (type-
 * stable, as process structs): a ref (index, generation) can always be
 * resolved safely, and a stale ref never reaches a later timer.
 */
#include <string.h>

#include "otp/internal.h"

#define CHUNK_SHIFT 12 /* 4096 entries a chunk */
#define CHUNK (1u << CHUNK_SHIFT)
#define MAX_CHUNKS (1u << 16) /* 268M timers */
#define INLINE_MAX 24
#define CACHE_MAX 256

enum { T_FREE = 0, T_PENDING = 1, T_FIRED = 2, T_CANCELLED = 3 };
enum { K_SEND = 0, K_SEND_NAMED = 1, K_EXIT = 2 };

typedef struct rusm__tentry {
  rusm__timer t;          /* on the owner's twheel */
  _Atomic uint64_t state; /* gen << 2 | T_* */
  rusm_pid_t to;          /* K_SEND, K_EXIT */
  uint64_t tag;           /* K_SEND*: tag; K_EXIT: rusm_exit_code */
  uint8_t kind;           /* K_* */
  uint8_t owner;          /* scheduler index */
  uint8_t inline_payload; /* payload inline (else in buf) */
  uint8_t _pad;
  uint32_t len;   /* payload length */
  uint32_t index; /* position in the chunk table (its ref) */
  uint32_t _pad2;
  struct rusm__tentry *next;  /* add requests; free lists */
  struct rusm__tentry *cnext; /* cancel requests (an entry can be on the
                               * add stack and the cancel stack at once) */
  union {
    uint8_t bytes[INLINE_MAX];
    rusm_buf *buf; /* payload (and for K_SEND_NAMED: name, then payload) */
  } u;
} rusm__tentry;

_Static_assert(sizeof(rusm__tentry) <= 120, "a timer stays within 120 bytes");

typedef struct rusm__timers {
  pthread_mutex_t lock;
  rusm__tentry **chunks; /* MAX_CHUNKS slots, filled as needed */
  uint32_t nchunks;
  rusm__tentry *free; /* global free list */
  _Atomic uint64_t pending;
} rusm__timers;

int rusm__timers_init(rusm_rt *rt) {
  rusm__timers *T = rusm__calloc(1, sizeof *T);
  if (!T)
    return RUSM_ENOMEM;
  T->chunks = rusm__calloc(MAX_CHUNKS, sizeof(rusm__tentry *));
  if (!T->chunks) {
    rusm__free(T, sizeof *T);
    return RUSM_ENOMEM;
  }
  pthread_mutex_init(&T->lock, NULL);
  rt->timers = T;
  return 0;
}

static void payload_free(rusm__tentry *e) {
  if (!e->inline_payload)
    rusm_buf_unref(e->u.buf);
  e->inline_payload = 1;
}

void rusm__timers_destroy(rusm_rt *rt) {
  rusm__timers *T = rt->timers;
  if (!T)
    return;
  for (uint32_t c = 0; c < T->nchunks; c++) {
    for (uint32_t i = 0; i < CHUNK; i++) {
      rusm__tentry *e = &T->chunks[c][i];
      uint64_t st = atomic_load_explicit(&e->state, memory_order_relaxed);
      if ((st & 3) != T_FREE)
        payload_free(e);
    }
    rusm__free(T->chunks[c], CHUNK * sizeof(rusm__tentry));
  }
  rusm__free(T->chunks, MAX_CHUNKS * sizeof(rusm__tentry *));
  pthread_mutex_destroy(&T->lock);
  rusm__free(T, sizeof *T);
  rt->timers = NULL;
}

/* Free entries are cached per scheduler (set-and-fire cycles stay local);
 * other threads use the global list. */
static rusm__sched *my_sched(rusm__timers *T) {
  rusm__sched *s = rusm__tl.sched;
  return s && s->rt->timers == T ? s : NULL;
}

static rusm__tentry *entry_alloc(rusm__timers *T) {
  rusm__sched *me = my_sched(T);
  if (me && !me->tcache) {
    /* refill with a batch: one lock for CACHE_MAX / 2 timers */
    pthread_mutex_lock(&T->lock);
    while (T->free && me->tcache_n < CACHE_MAX / 2) {
      rusm__tentry *e = T->free;
      T->free = e->next;
      e->next = me->tcache;
      me->tcache = e;
      me->tcache_n++;
    }
    pthread_mutex_unlock(&T->lock);
  }
  if (me && me->tcache) {
    rusm__tentry *e = me->tcache;
    me->tcache = e->next;
    me->tcache_n--;
    return e;
  }
  pthread_mutex_lock(&T->lock);
  if (!T->free && T->nchunks < MAX_CHUNKS) {
    rusm__tentry *c = rusm__calloc(CHUNK, sizeof *c);
    if (c) {
      for (uint32_t i = CHUNK; i-- > 0;) {
        atomic_init(&c[i].state, (uint64_t)1 << 2); /* gen 1, free */
        c[i].index = (T->nchunks << CHUNK_SHIFT) | i;
        c[i].next = T->free;
        T->free = &c[i];
      }
      T->chunks[T->nchunks++] = c;
    }
  }
  rusm__tentry *e = T->free;
  if (e)
    T->free = e->next;
  pthread_mutex_unlock(&T->lock);
  return e;
}

static void entry_release(rusm__timers *T, rusm__tentry *e) {
  payload_free(e);
  uint64_t st = atomic_load_explicit(&e->state, memory_order_relaxed);
  /* release: a cancel that later reads the new generation sees it free */
  atomic_store_explicit(&e->state, ((st >> 2) + 1) << 2 | T_FREE,
                        memory_order_release);
  atomic_fetch_sub_explicit(&T->pending, 1, memory_order_relaxed);
  rusm__sched *me = my_sched(T);
  if (me) {
    e->next = me->tcache;
    me->tcache = e;
    if (++me->tcache_n < 2 * CACHE_MAX)
      return;
    /* Full: the older half goes back in one go (one lock for CACHE_MAX
     * timers, not one each: schedulers firing side by side contended). */
    rusm__tentry *last = me->tcache;
    for (uint32_t i = 1; i < CACHE_MAX; i++)
      last = last->next;
    rusm__tentry *give = last->next;
    last->next = NULL;
    me->tcache_n = CACHE_MAX;
    rusm__tentry *tail = give;
    while (tail->next)
      tail = tail->next;
    pthread_mutex_lock(&T->lock);
    tail->next = T->free;
    T->free = give;
    pthread_mutex_unlock(&T->lock);
    return;
  }
  pthread_mutex_lock(&T->lock);
  e->next = T->free;
  T->free = e;
  pthread_mutex_unlock(&T->lock);
}

/* ---- the owner side ------------------------------------------------ */

static void fire(rusm__timer *t, void *ctx) {
  rusm__sched *s = ctx;
  rusm_rt *rt = s->rt;
  rusm__tentry *e = (rusm__tentry *)((char *)t - offsetof(rusm__tentry, t));
  uint64_t st = atomic_load_explicit(&e->state, memory_order_relaxed);
  if ((st & 3) != T_PENDING ||
      !atomic_compare_exchange_strong_explicit(
          &e->state, &st, (st & ~UINT64_C(3)) | T_FIRED, memory_order_acq_rel,
          memory_order_relaxed))
    return; /* cancelled: the cancel request frees it */
  const uint8_t *data = e->inline_payload ? e->u.bytes : e->u.buf->data;
  switch (e->kind) {
  case K_SEND:
    rusm__send_sys(rt, e->to, e->tag, data, e->len);
    break;
  case K_SEND_NAMED: {
    size_t nlen = strnlen((const char *)data, e->len);
    rusm_pid_t to = rusm_whereis(rt, (const char *)data);
    if (to != RUSM_PID_NONE)
      rusm__send_sys(rt, to, e->tag, data + nlen + 1, e->len - nlen - 1);
    break;
  }
  default: {
    rusm_reason r = {(rusm_exit_code)e->tag, e->len, e->len ? data : NULL};
    rusm_exit(rt, e->to, r);
    break;
  }
  }
  entry_release(rt->timers, e);
}

/* Files the timers other threads armed on s. */
static void file_adds(rusm__sched *s) {
  /* acquire: pairs with the pushers' release; we see their entries */
  rusm__tentry *add =
      atomic_exchange_explicit(&s->t_add, NULL, memory_order_acquire);
  while (add) {
    rusm__tentry *n = add->next;
    rusm__wheel_add(&s->twheel, &add->t, add->t.deadline_ns);
    add = n;
  }
}

void rusm__timers_run(rusm__sched *s, int64_t now) {
  rusm__timers *T = s->rt->timers;
  if (rusm__timers_pending_requests(s)) {
    /* Cancels first, then adds: an entry's add was pushed before its
     * cancel, so once we hold the cancel, the add stack we take next holds
     * the add too, and every cancelled entry is filed before it is
     * unlinked and freed (freeing one still on the add stack would cut
     * the stack). acquire: pairs with the pushers' release. */
    rusm__tentry *c =
        atomic_exchange_explicit(&s->t_cancel, NULL, memory_order_acquire);
    file_adds(s);
    while (c) {
      rusm__tentry *n = c->cnext;
      rusm__wheel_cancel(&s->twheel, &c->t);
      entry_release(T, c);
      c = n;
    }
  }
  if (rusm__wheel_count(&s->twheel))
    rusm__wheel_advance(&s->twheel, now, fire, s);
}

int64_t rusm__timers_next(rusm__sched *s) {
  return rusm__wheel_next_ns(&s->twheel);
}

/* ---- the API --------------------------------------------------------- */

static void push_req(rusm__tentry *_Atomic *stack, rusm__tentry *e,
                     bool cancel) {
  rusm__tentry *head = atomic_load_explicit(stack, memory_order_relaxed);
  do
    *(cancel ? &e->cnext : &e->next) = head;
  /* release: the owner's acquire exchange sees the entry's fields */
  while (!atomic_compare_exchange_weak_explicit(
      stack, &head, e, memory_order_release, memory_order_relaxed));
}

static int arm(rusm_rt *rt, int64_t delay_ms, uint8_t kind, rusm_pid_t to,
               uint64_t tag, const void *a, size_t alen, const void *b,
               size_t blen, rusm_timer_ref *ref) {
  if (!rt || delay_ms < 0 || delay_ms > INT64_MAX / 2000000 ||
      alen + blen > UINT32_MAX || (alen && !a) || (blen && !b))
    return RUSM_EINVAL;
  rusm__timers *T = rt->timers;
  rusm__tentry *e = entry_alloc(T);
  if (!e)
    return RUSM_ENOMEM;
  size_t len = alen + blen;
  e->kind = kind;
  e->to = to;
  e->tag = tag;
  e->len = (uint32_t)len;
  if (len <= INLINE_MAX) {
    e->inline_payload = 1;
    if (alen)
      memcpy(e->u.bytes, a, alen);
    if (blen)
      memcpy(e->u.bytes + alen, b, blen);
  } else {
    rusm_buf *buf = rusm_buf_new(len);
    if (!buf) {
      e->inline_payload = 1;
      entry_release(T, e);
      atomic_fetch_add_explicit(&T->pending, 1, memory_order_relaxed);
      return RUSM_ENOMEM;
    }
    memcpy(buf->data, a, alen);
    if (blen)
      memcpy(buf->data + alen, b, blen);
    e->inline_payload = 0;
    e->u.buf = buf;
  }
  memset(&e->t, 0, sizeof e->t);
  /* the wheel leaves an equal deadline_ns untouched, so cancel may read it
   * from any thread once it saw PENDING */
  e->t.deadline_ns = rusm_now_ns() + delay_ms * 1000000;
  uint64_t st = atomic_load_explicit(&e->state, memory_order_relaxed);
  uint64_t gen = st >> 2;
  /* release: a cancel that sees PENDING sees the deadline */
  atomic_store_explicit(&e->state, gen << 2 | T_PENDING, memory_order_release);
  atomic_fetch_add_explicit(&T->pending, 1, memory_order_relaxed);
  if (ref)
    *ref = (uint64_t)e->index << 32 | (gen & 0xffffffffu);
  rusm__sched *me = rusm__tl.sched;
  if (me && me->rt == rt) {
    e->owner = (uint8_t)me->index;
    rusm__wheel_add(&me->twheel, &e->t, e->t.deadline_ns);
    return 0;
  }
  rusm__sched *s = rusm__pick_sched(rt, -1);
  e->owner = (uint8_t)s->index;
  push_req(&s->t_add, e, false);
  rusm__wake_sched(s);
  return 0;
}

int rusm_send_after(rusm_rt *rt, int64_t delay_ms, rusm_pid_t to, uint64_t tag,
                    const void *data, size_t len, rusm_timer_ref *ref) {
  if (tag & RUSM_TAG_SYSTEM)
    return RUSM_EINVAL;
  return arm(rt, delay_ms, K_SEND, to, tag, data, len, NULL, 0, ref);
}

int rusm_send_after_named(rusm_rt *rt, int64_t delay_ms, const char *name,
                          uint64_t tag, const void *data, size_t len,
                          rusm_timer_ref *ref) {
  if ((tag & RUSM_TAG_SYSTEM) || !name)
    return RUSM_EINVAL;
  size_t nlen = strnlen(name, RUSM_NAME_MAX + 1);
  if (nlen == 0 || nlen > RUSM_NAME_MAX)
    return RUSM_EINVAL;
  return arm(rt, delay_ms, K_SEND_NAMED, RUSM_PID_NONE, tag, name, nlen + 1,
             data, len, ref);
}

int rusm_exit_after(rusm_rt *rt, int64_t delay_ms, rusm_pid_t pid,
                    rusm_reason reason, rusm_timer_ref *ref) {
  if ((unsigned)reason.code >= RUSM_EXIT__COUNT)
    return RUSM_EINVAL;
  return arm(rt, delay_ms, K_EXIT, pid, reason.code, reason.data, reason.len,
             NULL, 0, ref);
}

int rusm_kill_after(rusm_rt *rt, int64_t delay_ms, rusm_pid_t pid,
                    rusm_timer_ref *ref) {
  return rusm_exit_after(rt, delay_ms, pid, RUSM_REASON_KILL, ref);
}

int64_t rusm_cancel_timer(rusm_rt *rt, rusm_timer_ref ref) {
  if (!rt)
    return RUSM_EINVAL;
  rusm__timers *T = rt->timers;
  uint32_t idx = (uint32_t)(ref >> 32);
  uint32_t c = idx >> CHUNK_SHIFT;
  pthread_mutex_lock(&T->lock); /* chunk table grows under the lock */
  rusm__tentry *base = c < T->nchunks ? T->chunks[c] : NULL;
  pthread_mutex_unlock(&T->lock);
  if (!base)
    return RUSM_ENOTFOUND;
  rusm__tentry *e = &base[idx & (CHUNK - 1)];
  uint64_t st = atomic_load_explicit(&e->state, memory_order_acquire);
  if ((st & 3) != T_PENDING || ((st >> 2) & 0xffffffffu) != (ref & 0xffffffffu))
    return RUSM_ENOTFOUND; /* fired, cancelled, or a later timer */
  /* acq_rel: wins against fire's CAS; acquire to read the deadline */
  if (!atomic_compare_exchange_strong_explicit(
          &e->state, &st, (st & ~UINT64_C(3)) | T_CANCELLED,
          memory_order_acq_rel, memory_order_relaxed))
    return RUSM_ENOTFOUND;
  int64_t left = e->t.deadline_ns - rusm_now_ns();
  rusm__sched *s = rt->sched[e->owner % rt->nsched];
  if (rusm__tl.sched == s) {
    file_adds(s); /* it may still wait on the add stack */
    rusm__wheel_cancel(&s->twheel, &e->t);
    entry_release(T, e);
  } else {
    push_req(&s->t_cancel, e, true);
    rusm__wake_sched(s);
  }
  return left > 0 ? (left + 999999) / 1000000 : 0;
}

uint64_t rusm_timer_count(rusm_rt *rt) {
  return rt ? atomic_load_explicit(&rt->timers->pending, memory_order_relaxed)
            : 0;
}
