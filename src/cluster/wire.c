/*
 * wire.c — the cluster frame codec. The contract is wire.h; the byte
 * layouts are in docs/internals/cluster-wire.md.
 *
 * One set of rules: the decoder's. The encoder computes a frame's size,
 * writes it, then runs the decoder over what it wrote, so no frame leaves
 * a node that a peer would refuse, and the two cannot drift apart. The SEND
 * fast path skips that check; its only rules (to != 0, the size cap) are
 * checked inline.
 */
#include "cluster/wire.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* Header flag bits, per kind (any other bit is RUSM_EWIRE_FLAGS). */
#define F_EXIT_LINK 0x01u   /* EXIT: sent because of a link */
#define F_SPAWN_LINK 0x01u  /* SPAWN_REQ: link requester and child */
#define F_SPAWN_MON 0x02u   /* SPAWN_REQ: monitor the child */
#define F_PROCS_MORE 0x01u  /* PROCS_REPLY: more processes follow */
#define F_INFO_NOPROC 0x01u /* INFO_REPLY: no such process */

#define PROC_FIXED 30u /* a process record, its label bytes aside */
#define VAR UINT32_MAX /* no size bound but the body limit */

typedef struct kind_info {
  const char *name;
  uint8_t flags;    /* flag bits defined for the kind */
  uint32_t min_len; /* the fixed fields */
  uint32_t max_len; /* == min_len for fixed-size bodies */
} kind_info;

static const kind_info k_kinds[RUSM__WIRE_KIND_MAX + 1] = {
    [0] = {"?", 0, 0, 0},
    [RUSM__WIRE_HELLO] = {"HELLO", 0, 22, VAR},
    [RUSM__WIRE_SEND] = {"SEND", 0, 24, VAR},
    [RUSM__WIRE_SEND_NAMED] = {"SEND_NAMED", 0, 17, VAR},
    [RUSM__WIRE_LINK] = {"LINK", 0, 16, 16},
    [RUSM__WIRE_UNLINK] = {"UNLINK", 0, 16, 16},
    [RUSM__WIRE_EXIT] = {"EXIT", F_EXIT_LINK, 17, VAR},
    [RUSM__WIRE_MONITOR] = {"MONITOR", 0, 24, 24},
    [RUSM__WIRE_DEMONITOR] = {"DEMONITOR", 0, 24, 24},
    [RUSM__WIRE_DOWN] = {"DOWN", 0, 25, VAR},
    [RUSM__WIRE_SPAWN_REQ] = {"SPAWN_REQ", F_SPAWN_LINK | F_SPAWN_MON, 17, VAR},
    [RUSM__WIRE_SPAWN_REPLY] = {"SPAWN_REPLY", 0, 32, 32},
    [RUSM__WIRE_PROCS_REQ] = {"PROCS_REQ", 0, 24, 24},
    [RUSM__WIRE_PROCS_REPLY] = {"PROCS_REPLY", F_PROCS_MORE, 20, VAR},
    [RUSM__WIRE_INFO_REQ] = {"INFO_REQ", 0, 24, 24},
    /* without noproc: 16 + record + links + monitors */
    [RUSM__WIRE_INFO_REPLY] = {"INFO_REPLY", F_INFO_NOPROC, 16 + PROC_FIXED + 8,
                               VAR},
    [RUSM__WIRE_SWIM] = {"SWIM", 0, 0, VAR},
    [RUSM__WIRE_GREG] = {"GREG", 0, 0, VAR},
    [RUSM__WIRE_GOODBYE] = {"GOODBYE", 0, 1, VAR},
};

const char *rusm__wire_kind_name(int kind) {
  if (kind < 1 || kind > RUSM__WIRE_KIND_MAX)
    return "?";
  return k_kinds[kind].name;
}

const char *rusm__wire_strerror(int err) {
  switch (err) {
  case RUSM_EWIRE_MAGIC:
    return "wire: bad magic byte (not a cluster frame stream)";
  case RUSM_EWIRE_VERSION:
    return "wire: unsupported protocol version";
  case RUSM_EWIRE_KIND:
    return "wire: unknown frame kind";
  case RUSM_EWIRE_FLAGS:
    return "wire: flag bits not defined for this frame kind";
  case RUSM_EWIRE_TOOBIG:
    return "wire: frame body longer than the limit";
  case RUSM_EWIRE_SHORT:
    return "wire: frame body too short for its fields";
  case RUSM_EWIRE_TRAILING:
    return "wire: bytes left over after the frame's fields";
  case RUSM_EWIRE_STRING:
    return "wire: invalid string field (length or characters)";
  case RUSM_EWIRE_ZERO:
    return "wire: a required pid or monitor ref is 0";
  case RUSM_EWIRE_CODE:
    return "wire: unknown exit, status or goodbye code";
  case RUSM_EWIRE_FIELD:
    return "wire: field value out of range";
  case RUSM_EWIRE_TRUNCATED:
    return "wire: stream ended inside a frame";
  default:
    return rusm_strerror(err);
  }
}

/* ------------------------------------------------------------------ */
/* Little-endian loads and stores (compilers turn them into one move)  */
/* ------------------------------------------------------------------ */

static inline uint16_t ld16(const uint8_t *p) {
  return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t ld32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
         ((uint32_t)p[3] << 24);
}
static inline uint64_t ld64(const uint8_t *p) {
  return (uint64_t)ld32(p) | ((uint64_t)ld32(p + 4) << 32);
}
static inline uint8_t *st8(uint8_t *p, uint8_t v) {
  *p = v;
  return p + 1;
}
static inline uint8_t *st16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  return p + 2;
}
static inline uint8_t *st32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
  return p + 4;
}
static inline uint8_t *st64(uint8_t *p, uint64_t v) {
  st32(p, (uint32_t)v);
  return st32(p + 4, (uint32_t)(v >> 32));
}
static inline uint8_t *stn(uint8_t *p, const void *src, size_t n) {
  if (n)
    memcpy(p, src, n);
  return p + n;
}

/* ------------------------------------------------------------------ */
/* Output buffer                                                       */
/* ------------------------------------------------------------------ */

void rusm__wbuf_init(rusm__wbuf *b) { memset(b, 0, sizeof *b); }

void rusm__wbuf_free(rusm__wbuf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

void rusm__wbuf_reset(rusm__wbuf *b) { b->len = 0; }

void rusm__wbuf_consume(rusm__wbuf *b, size_t n) {
  assert(n <= b->len);
  if (n < b->len)
    memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

static int wbuf_grow(rusm__wbuf *b, size_t extra) {
  if (extra > SIZE_MAX / 4 - b->len)
    return RUSM_ENOMEM;
  size_t need = b->len + extra;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap *= 2;
  uint8_t *d = realloc(b->data, cap);
  if (!d)
    return RUSM_ENOMEM;
  b->data = d;
  b->cap = cap;
  return 0;
}

int rusm__wbuf_reserve(rusm__wbuf *b, size_t extra) {
  return extra <= b->cap - b->len ? 0 : wbuf_grow(b, extra);
}

int rusm__wbuf_append(rusm__wbuf *b, const void *p, size_t n) {
  if (n == 0)
    return 0;
  int rc = rusm__wbuf_reserve(b, n);
  if (rc)
    return rc;
  b->len = (size_t)(stn(b->data + b->len, p, n) - b->data);
  return 0;
}

int rusm__wbuf_put_u8(rusm__wbuf *b, uint8_t v) {
  return rusm__wbuf_append(b, &v, 1);
}

int rusm__wbuf_put_u16(rusm__wbuf *b, uint16_t v) {
  uint8_t t[2];
  st16(t, v);
  return rusm__wbuf_append(b, t, sizeof t);
}

int rusm__wbuf_put_u32(rusm__wbuf *b, uint32_t v) {
  uint8_t t[4];
  st32(t, v);
  return rusm__wbuf_append(b, t, sizeof t);
}

int rusm__wbuf_put_u64(rusm__wbuf *b, uint64_t v) {
  uint8_t t[8];
  st64(t, v);
  return rusm__wbuf_append(b, t, sizeof t);
}

/* ------------------------------------------------------------------ */
/* Field rules                                                         */
/* ------------------------------------------------------------------ */

static bool node_name_ok(const uint8_t *s, size_t n) {
  if (n < 1 || n > RUSM__WIRE_NODE_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok)
      return false;
  }
  return true;
}

static bool addr_ok(const uint8_t *s, size_t n) {
  if (n < 1 || n > RUSM__WIRE_ADDR_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (s[i] < 0x21 || s[i] > 0x7e)
      return false;
  return true;
}

static bool no_nul(const uint8_t *s, size_t n) {
  return n == 0 || memchr(s, 0, n) == NULL;
}

/* Registry and factory names. */
static bool reg_name_ok(const uint8_t *s, size_t n) {
  return n >= 1 && n <= RUSM_NAME_MAX && no_nul(s, n);
}

static bool exit_code_ok(uint8_t c) { return c < RUSM_EXIT__COUNT; }

static bool status_ok(uint8_t s) { return s <= RUSM_STATUS_EXITING; }

/* ------------------------------------------------------------------ */
/* Body reader                                                         */
/* ------------------------------------------------------------------ */

typedef struct rd {
  const uint8_t *p;
  size_t left;
} rd;

#define TRY(expr)                                                              \
  do {                                                                         \
    int rc_ = (expr);                                                          \
    if (rc_ < 0)                                                               \
      return rc_;                                                              \
  } while (0)

static int get_u8(rd *r, uint8_t *v) {
  if (r->left < 1)
    return RUSM_EWIRE_SHORT;
  *v = r->p[0];
  r->p++;
  r->left--;
  return 0;
}

static int get_u16(rd *r, uint16_t *v) {
  if (r->left < 2)
    return RUSM_EWIRE_SHORT;
  *v = ld16(r->p);
  r->p += 2;
  r->left -= 2;
  return 0;
}

static int get_u32(rd *r, uint32_t *v) {
  if (r->left < 4)
    return RUSM_EWIRE_SHORT;
  *v = ld32(r->p);
  r->p += 4;
  r->left -= 4;
  return 0;
}

static int get_u64(rd *r, uint64_t *v) {
  if (r->left < 8)
    return RUSM_EWIRE_SHORT;
  *v = ld64(r->p);
  r->p += 8;
  r->left -= 8;
  return 0;
}

/* A pid or ref that must not be 0. */
static int get_id(rd *r, uint64_t *v) {
  TRY(get_u64(r, v));
  return *v ? 0 : RUSM_EWIRE_ZERO;
}

static int get_bytes(rd *r, size_t n, rusm__wire_bytes *out) {
  if (r->left < n)
    return RUSM_EWIRE_SHORT;
  out->p = n ? r->p : NULL;
  out->len = (uint32_t)n; /* n <= body length, a u32 */
  r->p += n;
  r->left -= n;
  return 0;
}

/* A string with a u8 length before it. */
static int get_str8(rd *r, rusm__wire_bytes *out) {
  uint8_t n;
  TRY(get_u8(r, &n));
  return get_bytes(r, n, out);
}

/* The rest of the body. */
static int get_rest(rd *r, rusm__wire_bytes *out) {
  return get_bytes(r, r->left, out);
}

static int get_reason(rd *r, rusm_reason *out) {
  uint8_t code;
  rusm__wire_bytes detail;
  TRY(get_u8(r, &code));
  if (!exit_code_ok(code))
    return RUSM_EWIRE_CODE;
  TRY(get_rest(r, &detail));
  out->code = (rusm_exit_code)code;
  out->len = detail.len;
  out->data = detail.p;
  return 0;
}

static int get_proc(rd *r, rusm__wire_proc *out) {
  TRY(get_id(r, &out->pid));
  TRY(get_u8(r, &out->status));
  if (!status_ok(out->status))
    return RUSM_EWIRE_CODE;
  TRY(get_u32(r, &out->mailbox_len));
  TRY(get_u64(r, &out->reductions));
  TRY(get_u64(r, &out->memory));
  TRY(get_str8(r, &out->label));
  return no_nul(out->label.p, out->label.len) ? 0 : RUSM_EWIRE_STRING;
}

static int decode_hello(rd *r, rusm__wire_hello *h) {
  TRY(get_u8(r, &h->proto_min));
  TRY(get_u8(r, &h->proto_max));
  if (h->proto_min < 1 || h->proto_min > h->proto_max)
    return RUSM_EWIRE_FIELD;
  TRY(get_u16(r, &h->node_id));
  if (h->node_id < 1 || h->node_id > RUSM_NODE_ID_MAX)
    return RUSM_EWIRE_FIELD;
  TRY(get_u64(r, &h->boot_id));
  TRY(get_u64(r, &h->caps));
  TRY(get_str8(r, &h->name));
  if (!node_name_ok(h->name.p, h->name.len))
    return RUSM_EWIRE_STRING;
  TRY(get_str8(r, &h->addr));
  if (!addr_ok(h->addr.p, h->addr.len))
    return RUSM_EWIRE_STRING;
  return get_rest(r, &h->ext);
}

static int decode_spawn_reply(rd *r, rusm__wire_spawn_reply *s) {
  uint64_t res;
  TRY(get_u64(r, &s->req_id));
  TRY(get_id(r, &s->requester));
  TRY(get_u64(r, &res));
  TRY(get_u64(r, &s->ref));
  int64_t v = (int64_t)res;
  if (v == 0)
    return RUSM_EWIRE_ZERO;
  if (v < 0) {
    if (v < INT32_MIN || s->ref != 0)
      return RUSM_EWIRE_FIELD;
    s->pid = 0;
    s->err = (int32_t)v;
  } else {
    s->pid = res;
    s->err = 0;
  }
  return 0;
}

static int decode_procs_reply(rd *r, uint8_t flags, rusm__wire_procs_reply *s) {
  TRY(get_u64(r, &s->req_id));
  TRY(get_id(r, &s->requester));
  TRY(get_u32(r, &s->count));
  s->more = (flags & F_PROCS_MORE) != 0;
  s->items = NULL;
  /* Validate every record now, so that iterating cannot fail later. */
  rd recs = *r;
  for (uint32_t i = 0; i < s->count; i++) {
    rusm__wire_proc p;
    TRY(get_proc(r, &p));
  }
  s->records.p = recs.left - r->left ? recs.p : NULL;
  s->records.len = (uint32_t)(recs.left - r->left);
  return 0;
}

static int decode_info_reply(rd *r, uint8_t flags, rusm__wire_info_reply *s) {
  TRY(get_u64(r, &s->req_id));
  TRY(get_id(r, &s->requester));
  s->noproc = (flags & F_INFO_NOPROC) != 0;
  if (s->noproc) {
    memset(&s->proc, 0, sizeof s->proc);
    s->links = s->monitors = 0;
    return get_id(r, &s->proc.pid);
  }
  TRY(get_proc(r, &s->proc));
  TRY(get_u32(r, &s->links));
  return get_u32(r, &s->monitors);
}

static int decode_body(uint8_t kind, uint8_t flags, rd *r, rusm__frame *f) {
  memset(f, 0, sizeof *f);
  f->kind = (rusm__wire_kind)kind;
  switch (f->kind) {
  case RUSM__WIRE_HELLO:
    return decode_hello(r, &f->hello);
  case RUSM__WIRE_SEND:
    TRY(get_id(r, &f->send.to));
    TRY(get_u64(r, &f->send.from));
    TRY(get_u64(r, &f->send.tag));
    return get_rest(r, &f->send.payload);
  case RUSM__WIRE_SEND_NAMED:
    TRY(get_u64(r, &f->send_named.from));
    TRY(get_u64(r, &f->send_named.tag));
    TRY(get_str8(r, &f->send_named.name));
    if (!reg_name_ok(f->send_named.name.p, f->send_named.name.len))
      return RUSM_EWIRE_STRING;
    return get_rest(r, &f->send_named.payload);
  case RUSM__WIRE_LINK:
  case RUSM__WIRE_UNLINK:
    TRY(get_id(r, &f->link.from));
    return get_id(r, &f->link.to);
  case RUSM__WIRE_EXIT:
    f->exit.via_link = (flags & F_EXIT_LINK) != 0;
    TRY(get_u64(r, &f->exit.from));
    if (f->exit.via_link && f->exit.from == 0)
      return RUSM_EWIRE_ZERO;
    TRY(get_id(r, &f->exit.to));
    return get_reason(r, &f->exit.reason);
  case RUSM__WIRE_MONITOR:
  case RUSM__WIRE_DEMONITOR:
    TRY(get_id(r, &f->monitor.from));
    TRY(get_id(r, &f->monitor.to));
    return get_id(r, &f->monitor.ref);
  case RUSM__WIRE_DOWN:
    TRY(get_id(r, &f->down.ref));
    TRY(get_id(r, &f->down.to));
    TRY(get_id(r, &f->down.pid));
    return get_reason(r, &f->down.reason);
  case RUSM__WIRE_SPAWN_REQ:
    f->spawn_req.link = (flags & F_SPAWN_LINK) != 0;
    f->spawn_req.monitor = (flags & F_SPAWN_MON) != 0;
    TRY(get_u64(r, &f->spawn_req.req_id));
    TRY(get_id(r, &f->spawn_req.requester));
    TRY(get_str8(r, &f->spawn_req.factory));
    if (!reg_name_ok(f->spawn_req.factory.p, f->spawn_req.factory.len))
      return RUSM_EWIRE_STRING;
    return get_rest(r, &f->spawn_req.args);
  case RUSM__WIRE_SPAWN_REPLY:
    return decode_spawn_reply(r, &f->spawn_reply);
  case RUSM__WIRE_PROCS_REQ:
    TRY(get_u64(r, &f->procs_req.req_id));
    TRY(get_id(r, &f->procs_req.requester));
    TRY(get_u32(r, &f->procs_req.offset));
    return get_u32(r, &f->procs_req.max);
  case RUSM__WIRE_PROCS_REPLY:
    return decode_procs_reply(r, flags, &f->procs_reply);
  case RUSM__WIRE_INFO_REQ:
    TRY(get_u64(r, &f->info_req.req_id));
    TRY(get_id(r, &f->info_req.requester));
    return get_id(r, &f->info_req.pid);
  case RUSM__WIRE_INFO_REPLY:
    return decode_info_reply(r, flags, &f->info_reply);
  case RUSM__WIRE_SWIM:
  case RUSM__WIRE_GREG:
    return get_rest(r, &f->opaque.data);
  case RUSM__WIRE_GOODBYE:
    TRY(get_u8(r, &f->goodbye.code));
    if (f->goodbye.code >= RUSM__WIRE_BYE__COUNT)
      return RUSM_EWIRE_CODE;
    TRY(get_rest(r, &f->goodbye.text));
    if (f->goodbye.text.len > RUSM__WIRE_TEXT_MAX ||
        !no_nul(f->goodbye.text.p, f->goodbye.text.len))
      return RUSM_EWIRE_STRING;
    return 0;
  }
  return RUSM_EWIRE_KIND; /* not reached: the header was checked */
}

/* ------------------------------------------------------------------ */
/* Decoding                                                            */
/* ------------------------------------------------------------------ */

static size_t clamp_max_body(size_t max_body) {
  if (max_body == 0)
    return RUSM__WIRE_MAX_BODY_DEFAULT;
  return max_body > RUSM__WIRE_MAX_BODY_HARD ? RUSM__WIRE_MAX_BODY_HARD
                                             : max_body;
}

/*
 * Checks the header bytes present in p[0..n), each as soon as it is there.
 * Returns 1 with *len for a complete, acceptable header, 0 when the bytes
 * so far are fine but the header is incomplete, or an error. Each check
 * reads only bytes before it, so the answer is the same however the
 * stream is split.
 */
static int check_header(const uint8_t *p, size_t n, size_t max_body,
                        uint32_t *len) {
  if (n < 1)
    return 0;
  if (p[0] != RUSM__WIRE_MAGIC)
    return RUSM_EWIRE_MAGIC;
  if (n < 2)
    return 0;
  if (p[1] < RUSM__WIRE_VERSION_MIN || p[1] > RUSM__WIRE_VERSION_MAX)
    return RUSM_EWIRE_VERSION;
  if (n < 3)
    return 0;
  uint8_t kind = p[2];
  if (kind < 1 || kind > RUSM__WIRE_KIND_MAX)
    return RUSM_EWIRE_KIND;
  if (n < 4)
    return 0;
  uint8_t flags = p[3];
  if (flags & (uint8_t)~k_kinds[kind].flags)
    return RUSM_EWIRE_FLAGS;
  if (n < RUSM__WIRE_HDR)
    return 0;
  uint32_t l = ld32(p + 4);
  if (l > max_body)
    return RUSM_EWIRE_TOOBIG;
  uint32_t lo = k_kinds[kind].min_len, hi = k_kinds[kind].max_len;
  if (kind == RUSM__WIRE_INFO_REPLY && (flags & F_INFO_NOPROC))
    lo = hi = 24; /* req_id, requester, pid */
  if (l < lo)
    return RUSM_EWIRE_SHORT;
  if (l > hi)
    return RUSM_EWIRE_TRAILING;
  *len = l;
  return 1;
}

int rusm__wire_decode(const uint8_t *p, size_t n, size_t max_body,
                      rusm__frame *out, size_t *consumed) {
  assert(p != NULL || n == 0);
  uint32_t len = 0;
  int rc = check_header(p, n, clamp_max_body(max_body), &len);
  if (rc <= 0)
    return rc;
  if (n - RUSM__WIRE_HDR < len)
    return 0;
  rd r = {p + RUSM__WIRE_HDR, len};
  TRY(decode_body(p[2], p[3], &r, out));
  if (r.left != 0)
    return RUSM_EWIRE_TRAILING;
  *consumed = RUSM__WIRE_HDR + (size_t)len;
  return 1;
}

int rusm__wire_negotiate(uint8_t min_a, uint8_t max_a, uint8_t min_b,
                         uint8_t max_b) {
  uint8_t lo = min_a > min_b ? min_a : min_b;
  uint8_t hi = max_a < max_b ? max_a : max_b;
  if (lo < 1 || lo > hi)
    return RUSM_EWIRE_VERSION;
  return hi;
}

void rusm__wire_procs_iter_init(rusm__wire_procs_iter *it,
                                const rusm__wire_procs_reply *r) {
  it->item = r->items;
  it->p = r->items ? NULL : r->records.p;
  it->end = it->p ? it->p + r->records.len : NULL;
  it->left = r->count;
}

bool rusm__wire_procs_iter_next(rusm__wire_procs_iter *it,
                                rusm__wire_proc *out) {
  if (it->left == 0)
    return false;
  if (it->item) {
    *out = *it->item++;
    it->left--;
    return true;
  }
  /* The decoder validated these bytes; the bound check guards against a
   * reply built by hand with a wrong count. */
  rd r = {it->p, it->p ? (size_t)(it->end - it->p) : 0};
  if (get_proc(&r, out) < 0) {
    it->left = 0;
    return false;
  }
  it->p = r.p;
  it->left--;
  return true;
}

/* ------------------------------------------------------------------ */
/* Reader                                                              */
/* ------------------------------------------------------------------ */

#define READER_KEEP ((size_t)64 << 10) /* capacity kept while idle */

void rusm__wire_reader_init(rusm__wire_reader *r, size_t max_body) {
  memset(r, 0, sizeof *r);
  r->max_body = clamp_max_body(max_body);
}

void rusm__wire_reader_free(rusm__wire_reader *r) {
  free(r->buf);
  r->buf = NULL;
  r->len = r->cap = r->off = 0;
}

int rusm__wire_reader_feed(rusm__wire_reader *r, const uint8_t *p, size_t n) {
  if (r->err)
    return r->err;
  if (n == 0)
    return 0;
  if (r->off) { /* frames handed out before are dropped now */
    memmove(r->buf, r->buf + r->off, r->len - r->off);
    r->len -= r->off;
    r->off = 0;
  }
  /* One large frame must not pin its buffer for the connection's life. */
  if (r->len == 0 && r->cap > READER_KEEP && n <= READER_KEEP) {
    free(r->buf);
    r->buf = NULL;
    r->cap = 0;
  }
  if (n > r->cap - r->len) {
    if (n > SIZE_MAX / 4 - r->len)
      return RUSM_ENOMEM;
    size_t cap = r->cap ? r->cap : 4096;
    while (cap < r->len + n)
      cap *= 2;
    uint8_t *b = realloc(r->buf, cap);
    if (!b)
      return RUSM_ENOMEM;
    r->buf = b;
    r->cap = cap;
  }
  memcpy(r->buf + r->len, p, n);
  r->len += n;
  return 0;
}

int rusm__wire_reader_next(rusm__wire_reader *r, rusm__frame *out) {
  if (r->err)
    return r->err;
  if (r->len == r->off)
    return 0;
  size_t used = 0;
  int rc = rusm__wire_decode(r->buf + r->off, r->len - r->off, r->max_body, out,
                             &used);
  if (rc < 0)
    r->err = rc;
  else if (rc == 1)
    r->off += used;
  return rc;
}

int rusm__wire_reader_finish(const rusm__wire_reader *r) {
  if (r->err)
    return r->err;
  return r->len > r->off ? RUSM_EWIRE_TRUNCATED : 0;
}

/* ------------------------------------------------------------------ */
/* Encoding                                                            */
/* ------------------------------------------------------------------ */

/* A view to encode: its length fits the field; bytes present if any. */
static int view_ok(rusm__wire_bytes b, size_t max) {
  if (b.len > max)
    return RUSM_EWIRE_STRING;
  return b.len && !b.p ? RUSM_EINVAL : 0;
}

static int reason_size(const rusm_reason *r, size_t *size) {
  /* the code goes out as a u8: one past the enum must not wrap into it */
  if ((unsigned)r->code >= RUSM_EXIT__COUNT)
    return RUSM_EWIRE_CODE;
  if (r->len && !r->data)
    return RUSM_EINVAL;
  *size += 1 + (size_t)r->len;
  return 0;
}

static int proc_size(const rusm__wire_proc *p, size_t *size) {
  TRY(view_ok(p->label, RUSM__WIRE_LABEL_MAX));
  *size += PROC_FIXED + p->label.len;
  return 0;
}

/* The body size of f and its header flags; checks what the decoder could
 * not see (lengths that do not fit their fields, missing bytes). */
static int body_size(const rusm__frame *f, uint8_t *flags, size_t *size) {
  size_t s = 0;
  *flags = 0;
  switch (f->kind) {
  case RUSM__WIRE_HELLO:
    TRY(view_ok(f->hello.name, RUSM__WIRE_NODE_NAME_MAX));
    TRY(view_ok(f->hello.addr, RUSM__WIRE_ADDR_MAX));
    TRY(view_ok(f->hello.ext, UINT32_MAX));
    s = 22 + (size_t)f->hello.name.len + f->hello.addr.len + f->hello.ext.len;
    break;
  case RUSM__WIRE_SEND:
    TRY(view_ok(f->send.payload, UINT32_MAX));
    s = 24 + (size_t)f->send.payload.len;
    break;
  case RUSM__WIRE_SEND_NAMED:
    TRY(view_ok(f->send_named.name, RUSM_NAME_MAX));
    TRY(view_ok(f->send_named.payload, UINT32_MAX));
    s = 17 + (size_t)f->send_named.name.len + f->send_named.payload.len;
    break;
  case RUSM__WIRE_LINK:
  case RUSM__WIRE_UNLINK:
    s = 16;
    break;
  case RUSM__WIRE_EXIT:
    *flags = f->exit.via_link ? F_EXIT_LINK : 0;
    s = 16;
    TRY(reason_size(&f->exit.reason, &s));
    break;
  case RUSM__WIRE_MONITOR:
  case RUSM__WIRE_DEMONITOR:
    s = 24;
    break;
  case RUSM__WIRE_DOWN:
    s = 24;
    TRY(reason_size(&f->down.reason, &s));
    break;
  case RUSM__WIRE_SPAWN_REQ:
    *flags = (uint8_t)((f->spawn_req.link ? F_SPAWN_LINK : 0) |
                       (f->spawn_req.monitor ? F_SPAWN_MON : 0));
    TRY(view_ok(f->spawn_req.factory, RUSM_NAME_MAX));
    TRY(view_ok(f->spawn_req.args, UINT32_MAX));
    s = 17 + (size_t)f->spawn_req.factory.len + f->spawn_req.args.len;
    break;
  case RUSM__WIRE_SPAWN_REPLY: {
    const rusm__wire_spawn_reply *sr = &f->spawn_reply;
    /* exactly one of pid and err; a pid must stay positive as i64 */
    if ((sr->pid == 0) == (sr->err == 0))
      return sr->pid == 0 ? RUSM_EWIRE_ZERO : RUSM_EWIRE_FIELD;
    if (sr->err > 0 || sr->pid > (uint64_t)INT64_MAX)
      return RUSM_EWIRE_FIELD;
    s = 32;
    break;
  }
  case RUSM__WIRE_PROCS_REQ:
    s = 24;
    break;
  case RUSM__WIRE_PROCS_REPLY: {
    const rusm__wire_procs_reply *pr = &f->procs_reply;
    *flags = pr->more ? F_PROCS_MORE : 0;
    s = 20;
    if (pr->items) {
      for (uint32_t i = 0; i < pr->count; i++) {
        TRY(proc_size(&pr->items[i], &s));
        if (s > RUSM__WIRE_MAX_BODY_HARD)
          return RUSM_EWIRE_TOOBIG;
      }
    } else {
      TRY(view_ok(pr->records, UINT32_MAX));
      s += pr->records.len;
    }
    break;
  }
  case RUSM__WIRE_INFO_REQ:
    s = 24;
    break;
  case RUSM__WIRE_INFO_REPLY:
    if (f->info_reply.noproc) {
      *flags = F_INFO_NOPROC;
      s = 24;
    } else {
      s = 24;
      TRY(proc_size(&f->info_reply.proc, &s));
    }
    break;
  case RUSM__WIRE_SWIM:
  case RUSM__WIRE_GREG:
    TRY(view_ok(f->opaque.data, UINT32_MAX));
    s = f->opaque.data.len;
    break;
  case RUSM__WIRE_GOODBYE:
    TRY(view_ok(f->goodbye.text, RUSM__WIRE_TEXT_MAX));
    s = 1 + (size_t)f->goodbye.text.len;
    break;
  default:
    return RUSM_EWIRE_KIND;
  }
  if (s > RUSM__WIRE_MAX_BODY_HARD)
    return RUSM_EWIRE_TOOBIG;
  *size = s;
  return 0;
}

static uint8_t *put_view(uint8_t *q, rusm__wire_bytes b) {
  return stn(q, b.p, b.len);
}

static uint8_t *put_str8(uint8_t *q, rusm__wire_bytes b) {
  q = st8(q, (uint8_t)b.len); /* body_size checked that it fits */
  return put_view(q, b);
}

static uint8_t *put_reason(uint8_t *q, const rusm_reason *r) {
  q = st8(q, (uint8_t)r->code);
  return stn(q, r->data, r->len);
}

static uint8_t *put_proc(uint8_t *q, const rusm__wire_proc *p) {
  q = st64(q, p->pid);
  q = st8(q, p->status);
  q = st32(q, p->mailbox_len);
  q = st64(q, p->reductions);
  q = st64(q, p->memory);
  return put_str8(q, p->label);
}

static uint8_t *put_header(uint8_t *q, uint8_t kind, uint8_t flags,
                           uint32_t len) {
  q = st8(q, RUSM__WIRE_MAGIC);
  q = st8(q, RUSM__WIRE_VERSION_MAX);
  q = st8(q, kind);
  q = st8(q, flags);
  return st32(q, len);
}

/* Writes f's body at q (room checked by the caller). */
static uint8_t *put_body(uint8_t *q, const rusm__frame *f) {
  switch (f->kind) {
  case RUSM__WIRE_HELLO:
    q = st8(q, f->hello.proto_min);
    q = st8(q, f->hello.proto_max);
    q = st16(q, f->hello.node_id);
    q = st64(q, f->hello.boot_id);
    q = st64(q, f->hello.caps);
    q = put_str8(q, f->hello.name);
    q = put_str8(q, f->hello.addr);
    return put_view(q, f->hello.ext);
  case RUSM__WIRE_SEND:
    q = st64(q, f->send.to);
    q = st64(q, f->send.from);
    q = st64(q, f->send.tag);
    return put_view(q, f->send.payload);
  case RUSM__WIRE_SEND_NAMED:
    q = st64(q, f->send_named.from);
    q = st64(q, f->send_named.tag);
    q = put_str8(q, f->send_named.name);
    return put_view(q, f->send_named.payload);
  case RUSM__WIRE_LINK:
  case RUSM__WIRE_UNLINK:
    q = st64(q, f->link.from);
    return st64(q, f->link.to);
  case RUSM__WIRE_EXIT:
    q = st64(q, f->exit.from);
    q = st64(q, f->exit.to);
    return put_reason(q, &f->exit.reason);
  case RUSM__WIRE_MONITOR:
  case RUSM__WIRE_DEMONITOR:
    q = st64(q, f->monitor.from);
    q = st64(q, f->monitor.to);
    return st64(q, f->monitor.ref);
  case RUSM__WIRE_DOWN:
    q = st64(q, f->down.ref);
    q = st64(q, f->down.to);
    q = st64(q, f->down.pid);
    return put_reason(q, &f->down.reason);
  case RUSM__WIRE_SPAWN_REQ:
    q = st64(q, f->spawn_req.req_id);
    q = st64(q, f->spawn_req.requester);
    q = put_str8(q, f->spawn_req.factory);
    return put_view(q, f->spawn_req.args);
  case RUSM__WIRE_SPAWN_REPLY: {
    const rusm__wire_spawn_reply *sr = &f->spawn_reply;
    q = st64(q, sr->req_id);
    q = st64(q, sr->requester);
    q = st64(q, sr->pid ? sr->pid : (uint64_t)(int64_t)sr->err);
    return st64(q, sr->ref);
  }
  case RUSM__WIRE_PROCS_REQ:
    q = st64(q, f->procs_req.req_id);
    q = st64(q, f->procs_req.requester);
    q = st32(q, f->procs_req.offset);
    return st32(q, f->procs_req.max);
  case RUSM__WIRE_PROCS_REPLY: {
    const rusm__wire_procs_reply *pr = &f->procs_reply;
    q = st64(q, pr->req_id);
    q = st64(q, pr->requester);
    q = st32(q, pr->count);
    if (!pr->items)
      return put_view(q, pr->records);
    for (uint32_t i = 0; i < pr->count; i++)
      q = put_proc(q, &pr->items[i]);
    return q;
  }
  case RUSM__WIRE_INFO_REQ:
    q = st64(q, f->info_req.req_id);
    q = st64(q, f->info_req.requester);
    return st64(q, f->info_req.pid);
  case RUSM__WIRE_INFO_REPLY:
    q = st64(q, f->info_reply.req_id);
    q = st64(q, f->info_reply.requester);
    if (f->info_reply.noproc)
      return st64(q, f->info_reply.proc.pid);
    q = put_proc(q, &f->info_reply.proc);
    q = st32(q, f->info_reply.links);
    return st32(q, f->info_reply.monitors);
  case RUSM__WIRE_SWIM:
  case RUSM__WIRE_GREG:
    return put_view(q, f->opaque.data);
  case RUSM__WIRE_GOODBYE:
    q = st8(q, f->goodbye.code);
    return put_view(q, f->goodbye.text);
  }
  return q; /* not reached: body_size refused the kind */
}

int rusm__wire_encode(rusm__wbuf *out, const rusm__frame *f) {
  uint8_t flags;
  size_t size;
  TRY(body_size(f, &flags, &size));
  TRY(rusm__wbuf_reserve(out, RUSM__WIRE_HDR + size));
  uint8_t *start = out->data + out->len;
  uint8_t *end =
      put_body(put_header(start, (uint8_t)f->kind, flags, (uint32_t)size), f);
  assert((size_t)(end - start) == RUSM__WIRE_HDR + size);
  (void)end;
  /* The decoder's rules are the rules: a frame it refuses is not sent (the
   * bytes stay past out->len, so the buffer is unchanged). */
  rusm__frame chk;
  size_t used = 0;
  int rc = rusm__wire_decode(start, RUSM__WIRE_HDR + size,
                             RUSM__WIRE_MAX_BODY_HARD, &chk, &used);
  if (rc < 0)
    return rc;
  assert(rc == 1 && used == RUSM__WIRE_HDR + size);
  out->len += RUSM__WIRE_HDR + size;
  return 0;
}

int rusm__wire_encode_send(rusm__wbuf *out, rusm_pid_t to, rusm_pid_t from,
                           uint64_t tag, const void *payload, size_t len) {
  if (to == 0)
    return RUSM_EWIRE_ZERO;
  if (len > RUSM__WIRE_MAX_BODY_HARD - 24)
    return RUSM_EWIRE_TOOBIG;
  if (len && !payload)
    return RUSM_EINVAL;
  TRY(rusm__wbuf_reserve(out, RUSM__WIRE_HDR + 24 + len));
  uint8_t *q = out->data + out->len;
  q = put_header(q, RUSM__WIRE_SEND, 0, (uint32_t)(24 + len));
  q = st64(q, to);
  q = st64(q, from);
  q = st64(q, tag);
  q = stn(q, payload, len);
  out->len = (size_t)(q - out->data);
  return 0;
}

/* ------------------------------------------------------------------ */
/* PROCS_REPLY builder                                                 */
/* ------------------------------------------------------------------ */

int rusm__wire_procs_begin(rusm__wbuf *out, rusm__wire_procs_builder *bld,
                           uint64_t req_id, rusm_pid_t requester,
                           size_t max_body) {
  if (requester == 0)
    return RUSM_EWIRE_ZERO;
  TRY(rusm__wbuf_reserve(out, RUSM__WIRE_HDR + 20));
  bld->start = out->len;
  bld->max_body = clamp_max_body(max_body);
  bld->count = 0;
  uint8_t *q = out->data + out->len;
  q = put_header(q, RUSM__WIRE_PROCS_REPLY, 0, 20);
  q = st64(q, req_id);
  q = st64(q, requester);
  q = st32(q, 0);
  out->len = (size_t)(q - out->data);
  return 0;
}

int rusm__wire_procs_add(rusm__wbuf *out, rusm__wire_procs_builder *bld,
                         const rusm__wire_proc *proc) {
  size_t size = 0;
  if (proc->pid == 0)
    return RUSM_EWIRE_ZERO;
  if (!status_ok(proc->status))
    return RUSM_EWIRE_CODE;
  TRY(proc_size(proc, &size));
  if (!no_nul(proc->label.p, proc->label.len))
    return RUSM_EWIRE_STRING;
  size_t body = out->len - bld->start - RUSM__WIRE_HDR;
  if (size > bld->max_body - body || bld->count == UINT32_MAX)
    return RUSM_EWIRE_TOOBIG;
  TRY(rusm__wbuf_reserve(out, size));
  out->len = (size_t)(put_proc(out->data + out->len, proc) - out->data);
  bld->count++;
  return 0;
}

void rusm__wire_procs_end(rusm__wbuf *out, rusm__wire_procs_builder *bld,
                          bool more) {
  uint8_t *h = out->data + bld->start;
  size_t body = out->len - bld->start - RUSM__WIRE_HDR;
  assert(h[2] == RUSM__WIRE_PROCS_REPLY && body <= bld->max_body);
  h[3] = more ? F_PROCS_MORE : 0;
  st32(h + 4, (uint32_t)body);
  st32(h + RUSM__WIRE_HDR + 16, bld->count);
}

void rusm__wire_procs_abort(rusm__wbuf *out, rusm__wire_procs_builder *bld) {
  assert(bld->start <= out->len);
  out->len = bld->start;
}

/* ------------------------------------------------------------------ */
/* Equality                                                            */
/* ------------------------------------------------------------------ */

static bool bytes_eq(rusm__wire_bytes a, rusm__wire_bytes b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static bool reason_eq(const rusm_reason *a, const rusm_reason *b) {
  return a->code == b->code && a->len == b->len &&
         (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static bool proc_eq(const rusm__wire_proc *a, const rusm__wire_proc *b) {
  return a->pid == b->pid && bytes_eq(a->label, b->label) &&
         a->status == b->status && a->mailbox_len == b->mailbox_len &&
         a->reductions == b->reductions && a->memory == b->memory;
}

static bool procs_eq(const rusm__wire_procs_reply *a,
                     const rusm__wire_procs_reply *b) {
  if (a->req_id != b->req_id || a->requester != b->requester ||
      a->more != b->more || a->count != b->count)
    return false;
  rusm__wire_procs_iter ia, ib;
  rusm__wire_procs_iter_init(&ia, a);
  rusm__wire_procs_iter_init(&ib, b);
  rusm__wire_proc pa, pb;
  for (;;) {
    bool ha = rusm__wire_procs_iter_next(&ia, &pa);
    bool hb = rusm__wire_procs_iter_next(&ib, &pb);
    if (ha != hb)
      return false;
    if (!ha)
      return true;
    if (!proc_eq(&pa, &pb))
      return false;
  }
}

bool rusm__wire_frame_equal(const rusm__frame *a, const rusm__frame *b) {
  if (a->kind != b->kind)
    return false;
  switch (a->kind) {
  case RUSM__WIRE_HELLO: {
    const rusm__wire_hello *x = &a->hello, *y = &b->hello;
    return x->proto_min == y->proto_min && x->proto_max == y->proto_max &&
           x->node_id == y->node_id && x->boot_id == y->boot_id &&
           x->caps == y->caps && bytes_eq(x->name, y->name) &&
           bytes_eq(x->addr, y->addr) && bytes_eq(x->ext, y->ext);
  }
  case RUSM__WIRE_SEND:
    return a->send.to == b->send.to && a->send.from == b->send.from &&
           a->send.tag == b->send.tag &&
           bytes_eq(a->send.payload, b->send.payload);
  case RUSM__WIRE_SEND_NAMED:
    return bytes_eq(a->send_named.name, b->send_named.name) &&
           a->send_named.from == b->send_named.from &&
           a->send_named.tag == b->send_named.tag &&
           bytes_eq(a->send_named.payload, b->send_named.payload);
  case RUSM__WIRE_LINK:
  case RUSM__WIRE_UNLINK:
    return a->link.from == b->link.from && a->link.to == b->link.to;
  case RUSM__WIRE_EXIT:
    return a->exit.from == b->exit.from && a->exit.to == b->exit.to &&
           a->exit.via_link == b->exit.via_link &&
           reason_eq(&a->exit.reason, &b->exit.reason);
  case RUSM__WIRE_MONITOR:
  case RUSM__WIRE_DEMONITOR:
    return a->monitor.from == b->monitor.from &&
           a->monitor.to == b->monitor.to && a->monitor.ref == b->monitor.ref;
  case RUSM__WIRE_DOWN:
    return a->down.ref == b->down.ref && a->down.to == b->down.to &&
           a->down.pid == b->down.pid &&
           reason_eq(&a->down.reason, &b->down.reason);
  case RUSM__WIRE_SPAWN_REQ:
    return a->spawn_req.req_id == b->spawn_req.req_id &&
           a->spawn_req.requester == b->spawn_req.requester &&
           bytes_eq(a->spawn_req.factory, b->spawn_req.factory) &&
           bytes_eq(a->spawn_req.args, b->spawn_req.args) &&
           a->spawn_req.link == b->spawn_req.link &&
           a->spawn_req.monitor == b->spawn_req.monitor;
  case RUSM__WIRE_SPAWN_REPLY:
    return a->spawn_reply.req_id == b->spawn_reply.req_id &&
           a->spawn_reply.requester == b->spawn_reply.requester &&
           a->spawn_reply.pid == b->spawn_reply.pid &&
           a->spawn_reply.err == b->spawn_reply.err &&
           a->spawn_reply.ref == b->spawn_reply.ref;
  case RUSM__WIRE_PROCS_REQ:
    return a->procs_req.req_id == b->procs_req.req_id &&
           a->procs_req.requester == b->procs_req.requester &&
           a->procs_req.offset == b->procs_req.offset &&
           a->procs_req.max == b->procs_req.max;
  case RUSM__WIRE_PROCS_REPLY:
    return procs_eq(&a->procs_reply, &b->procs_reply);
  case RUSM__WIRE_INFO_REQ:
    return a->info_req.req_id == b->info_req.req_id &&
           a->info_req.requester == b->info_req.requester &&
           a->info_req.pid == b->info_req.pid;
  case RUSM__WIRE_INFO_REPLY: {
    const rusm__wire_info_reply *x = &a->info_reply, *y = &b->info_reply;
    if (x->req_id != y->req_id || x->requester != y->requester ||
        x->noproc != y->noproc)
      return false;
    if (x->noproc)
      return x->proc.pid == y->proc.pid;
    return proc_eq(&x->proc, &y->proc) && x->links == y->links &&
           x->monitors == y->monitors;
  }
  case RUSM__WIRE_SWIM:
  case RUSM__WIRE_GREG:
    return bytes_eq(a->opaque.data, b->opaque.data);
  case RUSM__WIRE_GOODBYE:
    return a->goodbye.code == b->goodbye.code &&
           bytes_eq(a->goodbye.text, b->goodbye.text);
  }
  return false;
}
