/*
 * quic.c — the QUIC adapter: the only file that calls ngtcp2 (0.12).
 *
 * One UDP socket per endpoint; connections found by destination
 * connection id (a hash map); each connection carries one ordered byte
 * stream per direction, as one unidirectional QUIC stream each way (a
 * bidirectional stream could not carry the acceptor's bytes before the
 * dialer had sent some). Design notes: docs/internals/cluster-transport.md.
 *
 * ngtcp2 rules kept here: no ngtcp2_conn_read_pkt / write / close call
 * from inside an ngtcp2 callback (caller actions made from callbacks are
 * recorded and done by the next flush); stream bytes handed to ngtcp2 stay
 * untouched until acknowledged (the send buffer frees only acked chunks).
 */
#include "cluster/quic.h"

#include "otp/alloc.h"
#include "rusm/otp.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SCID_LEN 16         /* every connection id we issue */
#define INITIAL_DCID_LEN 18 /* a dialer's first, random destination id */
#define TX_PKT 1452         /* largest datagram we write */
#define RX_MAX_PAYLOAD 1472 /* largest datagram we accept (transport param) */
#define RX_BUF 2048         /* receive buffer per datagram */
#define RX_BATCH 64         /* datagrams per recvmmsg */
#define RX_PER_CALL 1024    /* datagrams per on_readable */
#define GSO_MAX 64          /* datagrams per GSO send */
#define SOCK_BUF (4 << 20)  /* socket buffers asked for */
#define CHUNK_CAP (64 * 1024 - 64)
#define CHUNK_CACHE 16
#define RESET_BURST 100            /* stateless resets: a bucket of 100, */
#define RESET_EVERY_NS 10000000ull /* one more every 10 ms */

static const char k_priority[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
    "+CHACHA20-POLY1305:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:"
    "%DISABLE_TLS13_COMPAT_MODE";

/* ---- types -------------------------------------------------------- */

typedef struct chunk {
  struct chunk *next;
  size_t len;
  uint8_t data[CHUNK_CAP];
} chunk;

typedef struct cid_slot {
  rusm__quic_conn *conn; /* NULL: empty */
  uint8_t len;
  uint8_t id[NGTCP2_MAX_CIDLEN];
} cid_slot;

typedef struct cidmap {
  cid_slot *slots;
  size_t cap, n;
  uint64_t seed;
} cidmap;

enum cstate {
  C_HANDSHAKE, /* handshake running */
  C_OPEN,      /* on_connected said so (or will, for an unconfirmed dialer) */
  C_CLOSING,   /* we sent CONNECTION_CLOSE: repeat it to late packets */
  C_DRAINING   /* the peer closed: absorb late packets */
};

struct rusm__quic_conn {
  rusm__quic_endpoint *ep;
  rusm__quic_conn *prev, *next; /* every connection */
  rusm__quic_conn *dirty_next;  /* to flush */
  bool dirty;
  bool client;
  bool announced; /* on_connected delivered */
  bool reported;  /* its end was reported (or the caller let go) */
  bool user_gone; /* no more callbacks about it */
  bool verified;
  bool got_reset;
  bool want_writable;
  bool close_req; /* the caller asked to close */
  bool has_expected;
  enum cstate state;
  ngtcp2_conn *q;
  gnutls_session_t tls;
  ngtcp2_crypto_conn_ref ref;
  int64_t tx_sid, rx_sid;
  /* send buffer: [acked_off, end_off) held, [sent_off, end_off) unsent */
  chunk *head, *tail, *cur; /* cur: the chunk holding sent_off */
  size_t cur_pos;
  uint64_t head_off, acked_off, sent_off, end_off;
  /* closing */
  uint64_t close_code, close_deadline, linger_until, late_pkts;
  uint8_t *close_pkt;
  size_t close_len;
  char close_reason[257];
  /* failures found inside callbacks, reported after them */
  int fail_err;
  int verify_err;
  char fail_why[192];
  char verify_why[192];
  char peer[RUSM__TLS_NAME_MAX + 1];
  char expected[RUSM__TLS_NAME_MAX + 1];
  char addr[64];
  struct sockaddr_storage remote;
  socklen_t remote_len;
  void *ud;
};

struct rusm__quic_endpoint {
  int fd;
  int family;
  bool gso_ok;
  bool blocked; /* the socket was full: pend holds what waits */
  struct sockaddr_storage local;
  socklen_t local_len;
  rusm__quic_config cfg;
  rusm__tls_creds *creds;
  rusm__quic_callbacks cb;
  void *ud;
  ngtcp2_mem mem;
  cidmap map;
  rusm__quic_conn *conns;
  rusm__quic_conn *dirty;
  size_t nconns;
  chunk *free_chunks;
  size_t nfree_chunks;
  uint8_t reset_secret[32];
  uint64_t reset_tokens, reset_ts;
  rusm__quic_stats st;
  /* a batch the socket refused (EAGAIN), sent again first */
  uint8_t *pend;
  size_t pend_len, pend_seg;
  struct sockaddr_storage pend_to;
  socklen_t pend_tolen;
  uint8_t *rxbuf;
  uint8_t *txbuf;
};

/* ---- small helpers ------------------------------------------------ */

const char *rusm__quic_strerror(int err) {
  switch (err) {
  case RUSM_EQUIC_PEER_CLOSED:
    return "the peer closed the connection";
  case RUSM_EQUIC_IDLE:
    return "idle timeout";
  case RUSM_EQUIC_RESET:
    return "stateless reset (the peer lost the connection)";
  case RUSM_EQUIC_HANDSHAKE_TIMEOUT:
    return "handshake timeout";
  case RUSM_EQUIC_PEER_REFUSED:
    return "the peer refused the handshake";
  case RUSM_EQUIC_PROTOCOL:
    return "QUIC protocol failure";
  default:
    return rusm__tls_strerror(err);
  }
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void copy_str(char *dst, size_t cap, const char *src) {
  size_t n = strlen(src);
  if (n >= cap)
    n = cap - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* Printable ASCII only: reasons come from peers and go to logs. */
static void copy_printable(char *dst, size_t cap, const uint8_t *src,
                           size_t n) {
  if (n >= cap)
    n = cap - 1;
  for (size_t i = 0; i < n; i++)
    dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? (char)src[i] : '?';
  dst[n] = '\0';
}

static void format_addr(const struct sockaddr *sa, char *buf, size_t len) {
  char host[INET6_ADDRSTRLEN];
  unsigned port = 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
    (void)snprintf(buf, len, "%s:%u", host, port);
    return;
  }
  const struct sockaddr_in6 *in6 =
      (const struct sockaddr_in6 *)(const void *)sa;
  port = ntohs(in6->sin6_port);
  if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
    inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, sizeof host);
    (void)snprintf(buf, len, "%s:%u", host, port);
  } else {
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    (void)snprintf(buf, len, "[%s]:%u", host, port);
  }
}

/* Splits "host:port" / "[v6]:port". */
static int split_hostport(const char *s, char *host, size_t hcap, char *port,
                          size_t pcap) {
  const char *h = s, *he, *p;
  if (*s == '[') {
    h = s + 1;
    he = strchr(h, ']');
    if (!he || he[1] != ':')
      return RUSM_EINVAL;
    p = he + 2;
  } else {
    he = strrchr(s, ':');
    if (!he || memchr(s, ':', (size_t)(he - s)))
      return RUSM_EINVAL; /* a bare IPv6 address needs brackets */
    p = he + 1;
  }
  size_t hl = (size_t)(he - h), pl = strlen(p);
  if (hl >= hcap || pl == 0 || pl >= pcap)
    return RUSM_EINVAL;
  memcpy(host, h, hl);
  host[hl] = '\0';
  memcpy(port, p, pl + 1);
  return 0;
}

static int map_errno(int e) {
  switch (e) {
  case EADDRINUSE:
    return RUSM_EADDRINUSE;
  case EADDRNOTAVAIL:
    return RUSM_EADDRNOTAVAIL;
  case EMFILE:
  case ENFILE:
    return RUSM_EMFILE;
  case ENOMEM:
  case ENOBUFS:
    return RUSM_ENOMEM;
  default:
    return RUSM_ESYS;
  }
}

/* ngtcp2's allocations go through the runtime's accounted allocator. */
static void *m_malloc(size_t n, void *ud) {
  (void)ud;
  return rusm__xmalloc(n);
}
static void m_free(void *p, void *ud) {
  (void)ud;
  rusm__xfree(p);
}
static void *m_calloc(size_t n, size_t sz, void *ud) {
  (void)ud;
  return rusm__xcalloc(n, sz);
}
static void *m_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  return rusm__xrealloc(p, n);
}

/* ---- connection id map (open addressing, backward-shift delete) --- */

static uint64_t cid_hash(const cidmap *m, const uint8_t *id, size_t len) {
  uint64_t h = m->seed ^ 0xcbf29ce484222325ull; /* FNV-1a, seeded */
  for (size_t i = 0; i < len; i++)
    h = (h ^ id[i]) * 0x100000001b3ull;
  return h ^ (h >> 29);
}

static size_t cid_find_slot(const cidmap *m, const uint8_t *id, size_t len) {
  size_t mask = m->cap - 1;
  for (size_t i = cid_hash(m, id, len) & mask;; i = (i + 1) & mask) {
    const cid_slot *s = &m->slots[i];
    if (!s->conn || (s->len == len && memcmp(s->id, id, len) == 0))
      return i;
  }
}

static rusm__quic_conn *cid_get(const cidmap *m, const uint8_t *id,
                                size_t len) {
  if (len > NGTCP2_MAX_CIDLEN)
    return NULL;
  return m->slots[cid_find_slot(m, id, len)].conn;
}

static int cid_grow(cidmap *m) {
  size_t ncap = m->cap * 2;
  cid_slot *old = m->slots, *ns = rusm__xcalloc(ncap, sizeof *ns);
  if (!ns)
    return RUSM_ENOMEM;
  size_t ocap = m->cap;
  m->slots = ns;
  m->cap = ncap;
  for (size_t i = 0; i < ocap; i++)
    if (old[i].conn)
      m->slots[cid_find_slot(m, old[i].id, old[i].len)] = old[i];
  rusm__xfree(old);
  return 0;
}

static int cid_put(cidmap *m, const uint8_t *id, size_t len,
                   rusm__quic_conn *c) {
  assert(len <= NGTCP2_MAX_CIDLEN);
  if ((m->n + 1) * 2 > m->cap && cid_grow(m) != 0)
    return RUSM_ENOMEM;
  cid_slot *s = &m->slots[cid_find_slot(m, id, len)];
  if (!s->conn)
    m->n++;
  s->conn = c;
  s->len = (uint8_t)len;
  memcpy(s->id, id, len);
  return 0;
}

static void cid_del_at(cidmap *m, size_t i) {
  size_t mask = m->cap - 1;
  m->slots[i].conn = NULL;
  m->n--;
  /* Shift back the run after the hole so every entry stays reachable. */
  for (size_t j = (i + 1) & mask; m->slots[j].conn; j = (j + 1) & mask) {
    size_t home = cid_hash(m, m->slots[j].id, m->slots[j].len) & mask;
    bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (between)
      continue;
    m->slots[i] = m->slots[j];
    m->slots[j].conn = NULL;
    i = j;
  }
}

static void cid_del(cidmap *m, const uint8_t *id, size_t len,
                    const rusm__quic_conn *c) {
  if (len > NGTCP2_MAX_CIDLEN)
    return;
  size_t i = cid_find_slot(m, id, len);
  if (m->slots[i].conn == c)
    cid_del_at(m, i);
}

static void cid_del_conn(cidmap *m, const rusm__quic_conn *c) {
  /* Entries only move back into the hole being scanned, so re-check i. */
  for (size_t i = 0; i < m->cap;) {
    if (m->slots[i].conn == c)
      cid_del_at(m, i);
    else
      i++;
  }
}

/* ---- send buffer -------------------------------------------------- */

static chunk *chunk_get(rusm__quic_endpoint *ep) {
  chunk *k = ep->free_chunks;
  if (k) {
    ep->free_chunks = k->next;
    ep->nfree_chunks--;
  } else if (!(k = rusm__xmalloc(sizeof *k))) {
    return NULL;
  }
  k->next = NULL;
  k->len = 0;
  return k;
}

static void chunk_put(rusm__quic_endpoint *ep, chunk *k) {
  if (ep->nfree_chunks >= CHUNK_CACHE) {
    rusm__xfree(k);
    return;
  }
  k->next = ep->free_chunks;
  ep->free_chunks = k;
  ep->nfree_chunks++;
}

static int sb_append(rusm__quic_conn *c, const uint8_t *p, size_t n) {
  rusm__quic_endpoint *ep = c->ep;
  size_t room = c->tail ? CHUNK_CAP - c->tail->len : 0;
  /* All chunks first, so an allocation failure takes nothing. */
  chunk *fresh = NULL, **fl = &fresh;
  for (size_t need = n > room ? n - room : 0; need;) {
    chunk *k = chunk_get(ep);
    if (!k) {
      while (fresh) {
        chunk *nx = fresh->next;
        chunk_put(ep, fresh);
        fresh = nx;
      }
      return RUSM_ENOMEM;
    }
    *fl = k;
    fl = &k->next;
    need = need > CHUNK_CAP ? need - CHUNK_CAP : 0;
  }
  if (c->tail)
    c->tail->next = fresh;
  else
    c->head = fresh;
  while (n) {
    chunk *t = c->tail;
    if (!t || t->len == CHUNK_CAP) {
      t = t ? t->next : c->head;
      if (!t)
        return RUSM_ENOMEM; /* cannot happen: the chunks were taken above */
      c->tail = t;
      if (!c->cur) { /* the cursor waited at the end of a full chunk */
        c->cur = t;
        c->cur_pos = 0;
      }
    }
    size_t k = CHUNK_CAP - t->len < n ? CHUNK_CAP - t->len : n;
    memcpy(t->data + t->len, p, k);
    t->len += k;
    p += k;
    n -= k;
    c->end_off += k;
  }
  return 0;
}

/* The unsent bytes, as up to cap vectors. */
static size_t sb_iov(const rusm__quic_conn *c, ngtcp2_vec *v, size_t cap) {
  size_t n = 0;
  const chunk *k = c->cur;
  size_t pos = c->cur_pos;
  for (; k && n < cap; k = k->next, pos = 0) {
    if (k->len > pos) {
      v[n].base = (uint8_t *)(uintptr_t)(k->data + pos);
      v[n].len = k->len - pos;
      n++;
    }
  }
  return n;
}

static void sb_advance(rusm__quic_conn *c, size_t n) {
  c->sent_off += n;
  while (c->cur) {
    size_t left = c->cur->len - c->cur_pos;
    size_t k = n < left ? n : left;
    c->cur_pos += k;
    n -= k;
    if (c->cur_pos < CHUNK_CAP)
      break; /* inside the chunk, or at the end of the (open) tail */
    c->cur = c->cur->next;
    c->cur_pos = 0;
  }
  assert(n == 0);
}

static void sb_ack(rusm__quic_conn *c, uint64_t upto) {
  if (upto <= c->acked_off)
    return;
  assert(upto <= c->sent_off);
  c->acked_off = upto;
  /* A chunk goes once full and acked: the cursor is already past it. */
  while (c->head && c->head->len == CHUNK_CAP &&
         c->head_off + CHUNK_CAP <= c->acked_off) {
    chunk *k = c->head;
    assert(k != c->cur);
    c->head = k->next;
    c->head_off += CHUNK_CAP;
    if (c->tail == k)
      c->tail = NULL;
    chunk_put(c->ep, k);
  }
}

static void sb_free(rusm__quic_conn *c) {
  while (c->head) {
    chunk *k = c->head;
    c->head = k->next;
    chunk_put(c->ep, k);
  }
  c->tail = c->cur = NULL;
}

/* ---- socket output ------------------------------------------------ */

/* Sends a batch of datagrams (all seg bytes but maybe the last) to `to`:
 * one GSO sendmsg, or one sendmmsg. Returns the bytes the socket took;
 * fewer than len only when it was full (EAGAIN). Other errors drop the
 * datagrams: QUIC recovers from loss. */
static size_t sock_send(rusm__quic_endpoint *ep, const uint8_t *buf, size_t len,
                        size_t seg, const struct sockaddr *to,
                        socklen_t tolen) {
  size_t done = 0;
  while (done < len) {
    size_t left = len - done;
    if (ep->gso_ok && left > seg) {
      struct iovec iov = {(void *)(uintptr_t)(buf + done), left};
      union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
      } ctl;
      memset(&ctl, 0, sizeof ctl);
      struct msghdr mh = {0};
      mh.msg_name = (void *)(uintptr_t)to;
      mh.msg_namelen = tolen;
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      mh.msg_control = ctl.buf;
      mh.msg_controllen = sizeof ctl.buf;
      struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
      cm->cmsg_level = SOL_UDP;
      cm->cmsg_type = UDP_SEGMENT;
      cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t s16 = (uint16_t)seg;
      memcpy(CMSG_DATA(cm), &s16, sizeof s16);
      ssize_t r = sendmsg(ep->fd, &mh, 0);
      ep->st.send_calls++;
      if (r >= 0) {
        ep->st.tx_datagrams += (left + seg - 1) / seg;
        return len;
      }
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return done;
      if (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT ||
          errno == EOPNOTSUPP) {
        ep->gso_ok = false; /* no GSO here: datagram by datagram */
        continue;
      }
      return len;
    }
    struct mmsghdr mm[GSO_MAX];
    struct iovec iov[GSO_MAX];
    unsigned cnt = 0;
    for (size_t off = done; off < len && cnt < GSO_MAX; off += seg, cnt++) {
      iov[cnt].iov_base = (void *)(uintptr_t)(buf + off);
      iov[cnt].iov_len = len - off < seg ? len - off : seg;
      memset(&mm[cnt], 0, sizeof mm[cnt]);
      mm[cnt].msg_hdr.msg_name = (void *)(uintptr_t)to;
      mm[cnt].msg_hdr.msg_namelen = tolen;
      mm[cnt].msg_hdr.msg_iov = &iov[cnt];
      mm[cnt].msg_hdr.msg_iovlen = 1;
    }
    int r = sendmmsg(ep->fd, mm, cnt, 0);
    ep->st.send_calls++;
    if (r < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return done;
      /* drop the first datagram, try the rest */
      done += iov[0].iov_len;
      continue;
    }
    for (int i = 0; i < r; i++)
      done += iov[i].iov_len;
    ep->st.tx_datagrams += (uint64_t)r;
  }
  return len;
}

/* Sends, or keeps what the full socket refused for the next flush. */
static void send_batch(rusm__quic_endpoint *ep, const uint8_t *buf, size_t len,
                       size_t seg, const struct sockaddr *to, socklen_t tolen) {
  if (ep->blocked) {
    return; /* a datagram lost: rare, and QUIC resends */
  }
  size_t done = sock_send(ep, buf, len, seg, to, tolen);
  if (done == len)
    return;
  ep->st.tx_blocked++;
  ep->blocked = true;
  memcpy(ep->pend, buf + done, len - done);
  ep->pend_len = len - done;
  ep->pend_seg = seg;
  memcpy(&ep->pend_to, to, tolen);
  ep->pend_tolen = tolen;
}

static bool retry_pending(rusm__quic_endpoint *ep) {
  if (!ep->blocked)
    return true;
  size_t done =
      sock_send(ep, ep->pend, ep->pend_len, ep->pend_seg,
                (const struct sockaddr *)&ep->pend_to, ep->pend_tolen);
  if (done < ep->pend_len) {
    memmove(ep->pend, ep->pend + done, ep->pend_len - done);
    ep->pend_len -= done;
    return false;
  }
  ep->blocked = false;
  ep->pend_len = 0;
  return true;
}

/* ---- connection lifecycle ----------------------------------------- */

static void mark_dirty(rusm__quic_conn *c) {
  if (c->dirty)
    return;
  c->dirty = true;
  c->dirty_next = c->ep->dirty;
  c->ep->dirty = c;
}

static void conn_free(rusm__quic_conn *c) {
  rusm__quic_endpoint *ep = c->ep;
  if (c->dirty) {
    for (rusm__quic_conn **pp = &ep->dirty; *pp; pp = &(*pp)->dirty_next)
      if (*pp == c) {
        *pp = c->dirty_next;
        break;
      }
  }
  cid_del_conn(&ep->map, c);
  if (c->prev)
    c->prev->next = c->next;
  else
    ep->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  ep->nconns--;
  if (c->q)
    ngtcp2_conn_del(c->q);
  if (c->tls)
    gnutls_deinit(c->tls);
  sb_free(c);
  rusm__xfree(c->close_pkt);
  rusm__xfree(c);
}

/* Tells the caller once: on_closed for a connection it knows, on_refused
 * for an incoming handshake it never saw. */
static void conn_report(rusm__quic_conn *c, int err, uint64_t code,
                        const char *why) {
  if (c->reported)
    return;
  c->reported = true;
  if (c->user_gone)
    return;
  c->user_gone = true;
  rusm__quic_endpoint *ep = c->ep;
  if (c->client || c->announced) {
    ep->cb.on_closed(c, err, code, why, ep->ud);
  } else {
    ep->st.refused++;
    if (ep->cb.on_refused)
      ep->cb.on_refused(c->addr, err, why, ep->ud);
  }
}

static void conn_linger(rusm__quic_conn *c, enum cstate st, uint64_t now) {
  c->state = st;
  c->linger_until = now + 3 * ngtcp2_conn_get_pto(c->q);
}

/* Writes CONNECTION_CLOSE and enters the closing period; frees the
 * connection when there is nothing to send (or no way to). */
static void conn_close_now(rusm__quic_conn *c,
                           const ngtcp2_connection_close_error *cc,
                           uint64_t now) {
  rusm__quic_endpoint *ep = c->ep;
  if (!c->close_pkt && !(c->close_pkt = rusm__xmalloc(TX_PKT))) {
    conn_free(c);
    return;
  }
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi;
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(
      c->q, &ps.path, &pi, c->close_pkt, TX_PKT, cc, now);
  if (n <= 0) {
    conn_free(c);
    return;
  }
  c->close_len = (size_t)n;
  /* where the connection is now (a NAT may have moved the peer) */
  const ngtcp2_path *cur = ngtcp2_conn_get_path(c->q);
  if (cur->remote.addrlen > 0 && cur->remote.addrlen <= sizeof c->remote) {
    memcpy(&c->remote, cur->remote.addr, cur->remote.addrlen);
    c->remote_len = (socklen_t)cur->remote.addrlen;
  }
  send_batch(ep, c->close_pkt, c->close_len, c->close_len,
             (const struct sockaddr *)&c->remote, c->remote_len);
  conn_linger(c, C_CLOSING, now);
}

/* A failure of ours (liberr from ngtcp2, or one found in a callback). */
static void conn_fail(rusm__quic_conn *c, int liberr, uint64_t now) {
  ngtcp2_connection_close_error cc;
  ngtcp2_connection_close_error_default(&cc);
  char why[256];
  int err = RUSM_EQUIC_PROTOCOL;
  const char *reason = NULL;
  if (liberr == NGTCP2_ERR_CRYPTO) {
    uint8_t alert = ngtcp2_conn_get_tls_alert(c->q);
    if (c->verify_err) {
      err = c->verify_err;
      copy_str(why, sizeof why, c->verify_why);
    } else if (alert == GNUTLS_A_CERTIFICATE_REQUIRED) {
      err = RUSM_ETLS_NO_CERT;
      copy_str(why, sizeof why, "no certificate: the peer sent none");
    } else {
      const char *an = gnutls_alert_get_name((gnutls_alert_description_t)alert);
      (void)snprintf(why, sizeof why, "TLS handshake failed (alert: %s)",
                     an ? an : "?");
    }
    reason = why; /* the peer learns why it was refused */
    ngtcp2_connection_close_error_set_transport_error_tls_alert(
        &cc, alert, (const uint8_t *)reason, strlen(reason));
  } else if (liberr == NGTCP2_ERR_CALLBACK_FAILURE && c->fail_err) {
    err = c->fail_err;
    copy_str(why, sizeof why, c->fail_why);
    ngtcp2_connection_close_error_set_transport_error(
        &cc, NGTCP2_PROTOCOL_VIOLATION, (const uint8_t *)why, strlen(why));
  } else {
    if (liberr == NGTCP2_ERR_NOMEM || liberr == NGTCP2_ERR_CALLBACK_FAILURE)
      err = RUSM_ENOMEM;
    (void)snprintf(why, sizeof why, "QUIC: %s", ngtcp2_strerror(liberr));
    ngtcp2_connection_close_error_set_transport_error_liberr(&cc, liberr, NULL,
                                                             0);
  }
  conn_report(c, err, 0, why);
  if (liberr == NGTCP2_ERR_DROP_CONN || liberr == NGTCP2_ERR_RETRY ||
      liberr == NGTCP2_ERR_IDLE_CLOSE)
    conn_free(c);
  else
    conn_close_now(c, &cc, now);
}

/* The peer closed (CONNECTION_CLOSE or a stateless reset). */
static void conn_peer_closed(rusm__quic_conn *c, uint64_t now) {
  char why[320], reason[200] = "";
  int err;
  uint64_t code = 0;
  if (c->got_reset) {
    err = RUSM_EQUIC_RESET;
    copy_str(why, sizeof why,
             "stateless reset: the peer lost the connection (restarted?)");
  } else {
    ngtcp2_connection_close_error cc;
    ngtcp2_conn_get_connection_close_error(c->q, &cc);
    if (cc.reason && cc.reasonlen)
      copy_printable(reason, sizeof reason, cc.reason, cc.reasonlen);
    if (cc.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION) {
      err = RUSM_EQUIC_PEER_CLOSED;
      code = cc.error_code;
      (void)snprintf(why, sizeof why, "peer closed (code %llu)%s%s",
                     (unsigned long long)code, *reason ? ": " : "", reason);
    } else if ((cc.error_code & ~0xffull) == NGTCP2_CRYPTO_ERROR) {
      const char *an = gnutls_alert_get_name(
          (gnutls_alert_description_t)(cc.error_code & 0xff));
      err = RUSM_EQUIC_PEER_REFUSED;
      (void)snprintf(why, sizeof why, "peer refused the handshake (%s)%s%s",
                     an ? an : "TLS alert", *reason ? ": " : "", reason);
    } else if (cc.error_code == NGTCP2_NO_ERROR ||
               cc.error_code == NGTCP2_APPLICATION_ERROR) {
      err = RUSM_EQUIC_PEER_CLOSED;
      (void)snprintf(why, sizeof why, "peer closed%s%s", *reason ? ": " : "",
                     reason);
    } else {
      err = RUSM_EQUIC_PROTOCOL;
      (void)snprintf(why, sizeof why, "peer closed with error 0x%llx%s%s",
                     (unsigned long long)cc.error_code, *reason ? ": " : "",
                     reason);
    }
  }
  conn_report(c, err, code, why);
  conn_linger(c, C_DRAINING, now);
}

static void conn_read_error(rusm__quic_conn *c, int rv, uint64_t now) {
  if (rv == NGTCP2_ERR_DRAINING) {
    conn_peer_closed(c, now);
  } else if (rv == NGTCP2_ERR_DROP_CONN || rv == NGTCP2_ERR_RETRY) {
    char why[128];
    (void)snprintf(why, sizeof why, "QUIC: %s", ngtcp2_strerror(rv));
    conn_report(c, RUSM_EQUIC_PROTOCOL, 0, why);
    conn_free(c);
  } else {
    conn_fail(c, rv, now);
  }
}

/* ---- TLS ------------------------------------------------------------ */

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref) {
  return ((rusm__quic_conn *)ref->user_data)->q;
}

/* The cluster policy, run by GnuTLS once the peer's certificate is in
 * (both sides). A refusal aborts the handshake with a bad_certificate
 * alert whose CONNECTION_CLOSE carries the reason to the peer. */
static int verify_cb(gnutls_session_t s) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  rusm__quic_conn *c = ref->user_data;
  unsigned n = 0;
  const gnutls_datum_t *pc = gnutls_certificate_get_peers(s, &n);
  int rc;
  if (!pc || n == 0) {
    rc = RUSM_ETLS_NO_CERT;
    copy_str(c->verify_why, sizeof c->verify_why,
             "no certificate: the peer sent none");
  } else {
    char why[sizeof c->verify_why];
    rc = rusm__tls_verify_peer(c->ep->creds, pc[0].data, pc[0].size,
                               c->has_expected ? c->expected : NULL, time(NULL),
                               c->peer, why, sizeof why);
    if (rc)
      copy_str(c->verify_why, sizeof c->verify_why, why);
  }
  if (rc) {
    c->verify_err = rc;
    c->peer[0] = '\0';
    return rc == RUSM_ETLS_NO_CERT ? GNUTLS_E_CERTIFICATE_REQUIRED
                                   : GNUTLS_E_CERTIFICATE_ERROR;
  }
  c->verified = true;
  return 0;
}

static int conn_tls_init(rusm__quic_conn *c) {
  rusm__quic_endpoint *ep = c->ep;
  unsigned flags = (c->client ? GNUTLS_CLIENT : GNUTLS_SERVER) |
                   GNUTLS_NO_TICKETS | GNUTLS_NO_END_OF_EARLY_DATA;
  int r = gnutls_init(&c->tls, flags);
  if (r < 0) {
    c->tls = NULL;
    return r == GNUTLS_E_MEMORY_ERROR ? RUSM_ENOMEM : RUSM_ETLS;
  }
  const gnutls_datum_t alpn = {(unsigned char *)(uintptr_t)RUSM__QUIC_ALPN,
                               sizeof RUSM__QUIC_ALPN - 1};
  int cfg = c->client ? ngtcp2_crypto_gnutls_configure_client_session(c->tls)
                      : ngtcp2_crypto_gnutls_configure_server_session(c->tls);
  if (cfg != 0 || gnutls_priority_set_direct(c->tls, k_priority, NULL) < 0 ||
      gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE,
                             rusm__tls_creds_gnutls(ep->creds)) < 0 ||
      gnutls_alpn_set_protocols(c->tls, &alpn, 1, GNUTLS_ALPN_MANDATORY) < 0)
    return RUSM_ETLS;
  gnutls_session_set_verify_function(c->tls, verify_cb);
  if (!c->client) {
    gnutls_certificate_server_set_request(c->tls, GNUTLS_CERT_REQUIRE);
    /* No CA list in the request: a client with a foreign certificate
     * still sends it, and is refused with the precise reason. */
    gnutls_certificate_send_x509_rdn_sequence(c->tls, 1);
  }
  c->ref.get_conn = get_conn;
  c->ref.user_data = c;
  gnutls_session_set_ptr(c->tls, &c->ref);
  ngtcp2_conn_set_tls_native_handle(c->q, c->tls);
  return 0;
}

static bool alpn_ok(gnutls_session_t s) {
  gnutls_datum_t got;
  return gnutls_alpn_get_selected_protocol(s, &got) == 0 &&
         got.size == sizeof RUSM__QUIC_ALPN - 1 &&
         memcmp(got.data, RUSM__QUIC_ALPN, got.size) == 0;
}

/* ---- ngtcp2 callbacks ------------------------------------------------ */

static int cb_fail(rusm__quic_conn *c, int err, const char *why) {
  c->fail_err = err;
  copy_str(c->fail_why, sizeof c->fail_why, why);
  return NGTCP2_ERR_CALLBACK_FAILURE;
}

static void announce(rusm__quic_conn *c) {
  c->state = C_OPEN;
  mark_dirty(c); /* held bytes may go now */
  if (c->announced || c->user_gone)
    return;
  c->announced = true;
  c->ep->cb.on_connected(c, c->peer, c->ep->ud);
}

static int cb_handshake_completed(ngtcp2_conn *q, void *ud) {
  (void)q;
  rusm__quic_conn *c = ud;
  if (!c->verified)
    return cb_fail(c, RUSM_ETLS_NO_CERT, "handshake ended unverified");
  if (!alpn_ok(c->tls))
    return cb_fail(c, RUSM_EQUIC_PROTOCOL,
                   "ALPN " RUSM__QUIC_ALPN " not negotiated");
  /* An acceptor has judged the dialer: it is connected. A dialer waits
   * for HANDSHAKE_DONE, the acceptor's verdict (cb_handshake_confirmed). */
  if (!c->client)
    announce(c);
  return 0;
}

static int cb_handshake_confirmed(ngtcp2_conn *q, void *ud) {
  (void)q;
  rusm__quic_conn *c = ud;
  if (c->client && c->state == C_HANDSHAKE)
    announce(c);
  return 0;
}

static int cb_recv_stream_data(ngtcp2_conn *q, uint32_t flags, int64_t sid,
                               uint64_t offset, const uint8_t *data, size_t len,
                               void *ud, void *sud) {
  (void)flags;
  (void)offset;
  (void)sud;
  rusm__quic_conn *c = ud;
  if (sid != c->rx_sid)
    return cb_fail(c, RUSM_EQUIC_PROTOCOL, "data on an unexpected stream");
  if (c->state == C_HANDSHAKE) {
    /* An acceptor sends only once it has verified us: its bytes are as
     * good as HANDSHAKE_DONE (which may be late or lost). */
    if (!c->client || !ngtcp2_conn_get_handshake_completed(q))
      return cb_fail(c, RUSM_EQUIC_PROTOCOL, "stream data before handshake");
    announce(c);
  }
  if (len && !c->user_gone)
    c->ep->cb.on_data(c, data, len, c->ep->ud);
  /* Delivered at once: give the window back. */
  if (ngtcp2_conn_extend_max_stream_offset(q, sid, len) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  ngtcp2_conn_extend_max_offset(q, len);
  return 0;
}

static int cb_stream_open(ngtcp2_conn *q, int64_t sid, void *ud) {
  rusm__quic_conn *c = ud;
  if (c->rx_sid != -1 || ngtcp2_is_bidi_stream(sid) ||
      ngtcp2_conn_is_local_stream(q, sid))
    return cb_fail(c, RUSM_EQUIC_PROTOCOL, "unexpected stream");
  c->rx_sid = sid;
  return 0;
}

static int cb_acked(ngtcp2_conn *q, int64_t sid, uint64_t offset, uint64_t len,
                    void *ud, void *sud) {
  (void)q;
  (void)sud;
  rusm__quic_conn *c = ud;
  if (sid != c->tx_sid)
    return 0;
  sb_ack(c, offset + len);
  if (c->close_req && c->acked_off == c->end_off)
    mark_dirty(c); /* a graceful close can go now */
  if (c->want_writable && !c->user_gone &&
      c->end_off - c->acked_off <= c->ep->cfg.send_buffer_max / 2) {
    c->want_writable = false;
    if (c->ep->cb.on_writable)
      c->ep->cb.on_writable(c, c->ep->ud);
  }
  return 0;
}

static int cb_stream_reset(ngtcp2_conn *q, int64_t sid, uint64_t final_size,
                           uint64_t app_code, void *ud, void *sud) {
  (void)q;
  (void)sid;
  (void)final_size;
  (void)app_code;
  (void)sud;
  return cb_fail(ud, RUSM_EQUIC_PROTOCOL, "the peer reset its stream");
}

static int cb_stop_sending(ngtcp2_conn *q, int64_t sid, uint64_t app_code,
                           void *ud, void *sud) {
  (void)q;
  (void)sid;
  (void)app_code;
  (void)sud;
  return cb_fail(ud, RUSM_EQUIC_PROTOCOL, "the peer stopped reading");
}

static int cb_recv_reset(ngtcp2_conn *q, const ngtcp2_pkt_stateless_reset *sr,
                         void *ud) {
  (void)q;
  (void)sr;
  ((rusm__quic_conn *)ud)->got_reset = true;
  return 0;
}

static int cb_extend_streams_uni(ngtcp2_conn *q, uint64_t max, void *ud) {
  (void)max;
  rusm__quic_conn *c = ud;
  if (c->tx_sid == -1 && ngtcp2_conn_open_uni_stream(q, &c->tx_sid, NULL) != 0)
    c->tx_sid = -1;
  mark_dirty(c);
  return 0;
}

static int cb_extend_stream_data(ngtcp2_conn *q, int64_t sid, uint64_t max,
                                 void *ud, void *sud) {
  (void)q;
  (void)sid;
  (void)max;
  (void)sud;
  mark_dirty(ud);
  return 0;
}

static void cb_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx) {
  (void)ctx;
  (void)gnutls_rnd(GNUTLS_RND_RANDOM, dest, len);
}

static int reset_token(const rusm__quic_endpoint *ep, const uint8_t *cid,
                       size_t len, uint8_t *token) {
  ngtcp2_cid id;
  ngtcp2_cid_init(&id, cid, len);
  return ngtcp2_crypto_generate_stateless_reset_token(
      token, ep->reset_secret, sizeof ep->reset_secret, &id);
}

static int cb_new_cid(ngtcp2_conn *q, ngtcp2_cid *cid, uint8_t *token,
                      size_t cidlen, void *ud) {
  (void)q;
  rusm__quic_conn *c = ud;
  if (gnutls_rnd(GNUTLS_RND_RANDOM, cid->data, cidlen) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  cid->datalen = cidlen;
  if (reset_token(c->ep, cid->data, cidlen, token) != 0 ||
      cid_put(&c->ep->map, cid->data, cidlen, c) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
}

static int cb_remove_cid(ngtcp2_conn *q, const ngtcp2_cid *cid, void *ud) {
  (void)q;
  rusm__quic_conn *c = ud;
  cid_del(&c->ep->map, cid->data, cid->datalen, c);
  return 0;
}

static const ngtcp2_callbacks k_callbacks = {
    .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
    .handshake_completed = cb_handshake_completed,
    .encrypt = ngtcp2_crypto_encrypt_cb,
    .decrypt = ngtcp2_crypto_decrypt_cb,
    .hp_mask = ngtcp2_crypto_hp_mask_cb,
    .recv_stream_data = cb_recv_stream_data,
    .acked_stream_data_offset = cb_acked,
    .stream_open = cb_stream_open,
    .recv_stateless_reset = cb_recv_reset,
    .extend_max_local_streams_uni = cb_extend_streams_uni,
    .rand = cb_rand,
    .get_new_connection_id = cb_new_cid,
    .remove_connection_id = cb_remove_cid,
    .update_key = ngtcp2_crypto_update_key_cb,
    .stream_reset = cb_stream_reset,
    .extend_max_stream_data = cb_extend_stream_data,
    .handshake_confirmed = cb_handshake_confirmed,
    .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
    .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
    .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
    .stream_stop_sending = cb_stop_sending,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
};

/* ---- connection creation ------------------------------------------ */

static void conn_settings(const rusm__quic_endpoint *ep, uint64_t now,
                          ngtcp2_settings *s, ngtcp2_transport_params *p) {
  ngtcp2_settings_default(s);
  s->initial_ts = now;
  s->handshake_timeout = ep->cfg.handshake_timeout_ns;
  s->max_tx_udp_payload_size = TX_PKT;
  s->max_window = ep->cfg.conn_window;
  s->max_stream_window = ep->cfg.stream_window;
  ngtcp2_transport_params_default(p);
  p->initial_max_streams_uni = 1; /* the peer's one stream to us */
  p->initial_max_streams_bidi = 0;
  p->initial_max_stream_data_uni = ep->cfg.stream_window;
  p->initial_max_data = ep->cfg.conn_window;
  p->max_idle_timeout = ep->cfg.idle_timeout_ns;
  p->max_udp_payload_size = RX_MAX_PAYLOAD;
  p->active_connection_id_limit = 4;
  p->disable_active_migration = 1;
}

static rusm__quic_conn *conn_alloc(rusm__quic_endpoint *ep,
                                   const struct sockaddr *sa, socklen_t salen,
                                   bool client) {
  rusm__quic_conn *c = rusm__xcalloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->ep = ep;
  c->client = client;
  c->tx_sid = c->rx_sid = -1;
  memcpy(&c->remote, sa, salen);
  c->remote_len = salen;
  format_addr(sa, c->addr, sizeof c->addr);
  c->next = ep->conns;
  if (ep->conns)
    ep->conns->prev = c;
  ep->conns = c;
  ep->nconns++;
  return c;
}

static ngtcp2_path conn_path(rusm__quic_conn *c) {
  ngtcp2_path p;
  memset(&p, 0, sizeof p);
  p.local.addr = (ngtcp2_sockaddr *)&c->ep->local;
  p.local.addrlen = c->ep->local_len;
  p.remote.addr = (ngtcp2_sockaddr *)&c->remote;
  p.remote.addrlen = c->remote_len;
  return p;
}

static int parse_peer(const rusm__quic_endpoint *ep, const char *addr,
                      struct sockaddr_storage *out, socklen_t *outlen) {
  char host[INET6_ADDRSTRLEN + 1], port[8];
  if (!addr || split_hostport(addr, host, sizeof host, port, sizeof port))
    return RUSM_EINVAL;
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
    return RUSM_EINVAL;
  int rc = 0;
  if (res->ai_family == ep->family) {
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *outlen = res->ai_addrlen;
  } else if (res->ai_family == AF_INET && ep->family == AF_INET6) {
    /* an IPv4 peer from a dual-stack socket: ::ffff:a.b.c.d */
    const struct sockaddr_in *in = (const void *)res->ai_addr;
    struct sockaddr_in6 m;
    memset(&m, 0, sizeof m);
    m.sin6_family = AF_INET6;
    m.sin6_port = in->sin_port;
    m.sin6_addr.s6_addr[10] = 0xff;
    m.sin6_addr.s6_addr[11] = 0xff;
    memcpy(&m.sin6_addr.s6_addr[12], &in->sin_addr, 4);
    memcpy(out, &m, sizeof m);
    *outlen = sizeof m;
  } else {
    rc = RUSM_EINVAL; /* an IPv6 peer from an IPv4 socket */
  }
  freeaddrinfo(res);
  return rc;
}

int rusm__quic_connect(rusm__quic_endpoint *ep, const char *addr,
                       const char *expected_node, void *conn_ud,
                       rusm__quic_conn **out) {
  if (!ep || !out ||
      (expected_node && !rusm__tls_node_name_valid(expected_node)))
    return RUSM_EINVAL;
  struct sockaddr_storage sa;
  socklen_t salen;
  int rc = parse_peer(ep, addr, &sa, &salen);
  if (rc)
    return rc;
  if (ep->nconns >= ep->cfg.max_conns)
    return RUSM_ELIMIT;
  rusm__quic_conn *c = conn_alloc(ep, (struct sockaddr *)&sa, salen, true);
  if (!c)
    return RUSM_ENOMEM;
  c->ud = conn_ud;
  if (expected_node) {
    c->has_expected = true;
    copy_str(c->expected, sizeof c->expected, expected_node);
  }
  ngtcp2_cid dcid, scid;
  dcid.datalen = INITIAL_DCID_LEN;
  scid.datalen = SCID_LEN;
  uint64_t now = mono_ns();
  ngtcp2_settings s;
  ngtcp2_transport_params p;
  conn_settings(ep, now, &s, &p);
  ngtcp2_path path = conn_path(c);
  rc = RUSM_ETLS;
  if (gnutls_rnd(GNUTLS_RND_RANDOM, dcid.data, dcid.datalen) == 0 &&
      gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, scid.datalen) == 0) {
    ngtcp2_callbacks cbs = k_callbacks;
    cbs.client_initial = ngtcp2_crypto_client_initial_cb;
    cbs.recv_retry = ngtcp2_crypto_recv_retry_cb;
    int r =
        ngtcp2_conn_client_new(&c->q, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1,
                               &cbs, &s, &p, &ep->mem, c);
    rc = r == 0 ? 0 : RUSM_ENOMEM;
    if (r != 0)
      c->q = NULL;
  }
  if (rc == 0)
    rc = conn_tls_init(c);
  if (rc == 0)
    rc = cid_put(&ep->map, scid.data, scid.datalen, c);
  if (rc) {
    conn_free(c);
    return rc;
  }
  ngtcp2_conn_set_keep_alive_timeout(c->q, ep->cfg.keepalive_ns);
  mark_dirty(c);
  *out = c;
  return 0;
}

/* A new incoming connection from a client Initial packet. */
static rusm__quic_conn *conn_accept(rusm__quic_endpoint *ep,
                                    const ngtcp2_pkt_hd *hd,
                                    const struct sockaddr *sa, socklen_t salen,
                                    uint64_t now) {
  if (ep->nconns >= ep->cfg.max_conns)
    return NULL;
  rusm__quic_conn *c = conn_alloc(ep, sa, salen, false);
  if (!c)
    return NULL;
  ngtcp2_cid scid;
  scid.datalen = SCID_LEN;
  ngtcp2_settings s;
  ngtcp2_transport_params p;
  conn_settings(ep, now, &s, &p);
  p.original_dcid = hd->dcid;
  p.stateless_reset_token_present = 1;
  ngtcp2_path path = conn_path(c);
  int rc = RUSM_ETLS;
  if (gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, scid.datalen) == 0 &&
      reset_token(ep, scid.data, scid.datalen, p.stateless_reset_token) == 0) {
    ngtcp2_callbacks cbs = k_callbacks;
    cbs.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
    int r = ngtcp2_conn_server_new(&c->q, &hd->scid, &scid, &path, hd->version,
                                   &cbs, &s, &p, &ep->mem, c);
    rc = r == 0 ? 0 : RUSM_ENOMEM;
    if (r != 0)
      c->q = NULL;
  }
  if (rc == 0)
    rc = conn_tls_init(c);
  /* Our id, and the dialer's first (random) one until it learns ours. */
  if (rc == 0)
    rc = cid_put(&ep->map, scid.data, scid.datalen, c);
  if (rc == 0)
    rc = cid_put(&ep->map, hd->dcid.data, hd->dcid.datalen, c);
  if (rc) {
    c->user_gone = true; /* never seen: nothing to report */
    conn_free(c);
    return NULL;
  }
  ngtcp2_conn_set_keep_alive_timeout(c->q, ep->cfg.keepalive_ns);
  return c;
}

/* ---- input ---------------------------------------------------------- */

static void send_reset(rusm__quic_endpoint *ep, const uint8_t *dcid,
                       size_t dcidlen, size_t pktlen, const struct sockaddr *sa,
                       socklen_t salen, uint64_t now) {
  /* Smaller than what came (no reset loops), at least the minimum. */
  size_t randlen = pktlen - 1 - NGTCP2_STATELESS_RESET_TOKENLEN;
  if (pktlen < 1 + NGTCP2_STATELESS_RESET_TOKENLEN +
                   NGTCP2_MIN_STATELESS_RESET_RANDLEN + 1 ||
      dcidlen != SCID_LEN)
    return;
  if (randlen > 40)
    randlen = 40;
  uint64_t refill = (now - ep->reset_ts) / RESET_EVERY_NS;
  if (refill) {
    ep->reset_tokens = ep->reset_tokens + refill > RESET_BURST
                           ? RESET_BURST
                           : ep->reset_tokens + refill;
    ep->reset_ts = now;
  }
  if (ep->reset_tokens == 0)
    return;
  ep->reset_tokens--;
  uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN], rnd[64], pkt[128];
  if (reset_token(ep, dcid, dcidlen, token) != 0 ||
      gnutls_rnd(GNUTLS_RND_NONCE, rnd, randlen) != 0)
    return;
  ngtcp2_ssize n =
      ngtcp2_pkt_write_stateless_reset(pkt, sizeof pkt, token, rnd, randlen);
  if (n <= 0)
    return;
  ep->st.resets_sent++;
  send_batch(ep, pkt, (size_t)n, (size_t)n, sa, salen);
}

static bool same_sockaddr(const struct sockaddr_storage *a, socklen_t alen,
                          const struct sockaddr *b, socklen_t blen) {
  if (a->ss_family != b->sa_family || alen != blen)
    return false;
  if (b->sa_family == AF_INET) {
    const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
    return x->sin_port == y->sin_port &&
           x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
  return x->sin6_port == y->sin6_port &&
         memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
}

static bool token_equal(const uint8_t *a, const uint8_t *b) {
  uint8_t d = 0; /* constant time: tokens are secrets */
  for (size_t i = 0; i < NGTCP2_STATELESS_RESET_TOKENLEN; i++)
    d |= (uint8_t)(a[i] ^ b[i]);
  return d == 0;
}

/* The connection from sa that this datagram resets (its last 16 bytes are
 * the token the peer gave for one of its ids), or NULL. A reset carries a
 * random destination id, so the id map cannot find it. */
static rusm__quic_conn *reset_target(rusm__quic_endpoint *ep,
                                     const uint8_t *data, size_t len,
                                     const struct sockaddr *sa,
                                     socklen_t salen) {
  if (len <
      NGTCP2_MIN_STATELESS_RESET_RANDLEN + NGTCP2_STATELESS_RESET_TOKENLEN)
    return NULL;
  const uint8_t *tok = data + len - NGTCP2_STATELESS_RESET_TOKENLEN;
  for (rusm__quic_conn *c = ep->conns; c; c = c->next) {
    if ((c->state != C_HANDSHAKE && c->state != C_OPEN) ||
        !same_sockaddr(&c->remote, c->remote_len, sa, salen))
      continue;
    ngtcp2_cid_token ids[8];
    size_t n = ngtcp2_conn_get_num_active_dcid(c->q);
    if (n > sizeof ids / sizeof ids[0])
      continue;
    n = ngtcp2_conn_get_active_dcid(c->q, ids);
    for (size_t i = 0; i < n; i++)
      if (ids[i].token_present && token_equal(ids[i].token, tok))
        return c;
  }
  return NULL;
}

static void on_datagram(rusm__quic_endpoint *ep, uint8_t *data, size_t len,
                        const struct sockaddr *sa, socklen_t salen,
                        uint64_t now) {
  ep->st.rx_datagrams++;
  ngtcp2_version_cid vc;
  if (ngtcp2_pkt_decode_version_cid(&vc, data, len, SCID_LEN) != 0) {
    ep->st.rx_dropped++;
    return;
  }
  rusm__quic_conn *c = cid_get(&ep->map, vc.dcid, vc.dcidlen);
  bool fresh = false;
  if (!c) {
    ngtcp2_pkt_hd hd;
    if (vc.version == 0) { /* short header: a reset, or a connection lost */
      if ((c = reset_target(ep, data, len, sa, salen))) {
        c->got_reset = true;
        conn_peer_closed(c, now);
        return;
      }
      ep->st.rx_dropped++;
      send_reset(ep, vc.dcid, vc.dcidlen, len, sa, salen, now);
      return;
    }
    if (ngtcp2_accept(&hd, data, len) != 0 ||
        !(c = conn_accept(ep, &hd, sa, salen, now))) {
      ep->st.rx_dropped++;
      return;
    }
    fresh = true;
  }
  if (c->state == C_DRAINING)
    return;
  if (c->state == C_CLOSING) {
    /* Answer late packets with our close, ever more rarely. */
    c->late_pkts++;
    if ((c->late_pkts & (c->late_pkts - 1)) == 0)
      send_batch(ep, c->close_pkt, c->close_len, c->close_len, sa, salen);
    return;
  }
  ngtcp2_path path;
  memset(&path, 0, sizeof path);
  path.local.addr = (ngtcp2_sockaddr *)&ep->local;
  path.local.addrlen = ep->local_len;
  path.remote.addr = (ngtcp2_sockaddr *)(uintptr_t)sa;
  path.remote.addrlen = salen;
  ngtcp2_pkt_info pi = {0};
  int rv = ngtcp2_conn_read_pkt(c->q, &path, &pi, data, len, now);
  if (fresh && (rv == NGTCP2_ERR_DROP_CONN || rv == NGTCP2_ERR_RETRY)) {
    /* An "Initial" that was none: no handshake to report. */
    ep->st.rx_dropped++;
    c->user_gone = true;
    conn_free(c);
    return;
  }
  if (fresh)
    ep->st.accepted++;
  if (rv != 0) {
    conn_read_error(c, rv, now);
    return;
  }
  mark_dirty(c);
}

void rusm__quic_endpoint_on_readable(rusm__quic_endpoint *ep, uint64_t now) {
  struct mmsghdr mm[RX_BATCH];
  struct iovec iov[RX_BATCH];
  struct sockaddr_storage from[RX_BATCH];
  for (size_t total = 0; total < RX_PER_CALL;) {
    for (size_t i = 0; i < RX_BATCH; i++) {
      iov[i].iov_base = ep->rxbuf + i * RX_BUF;
      iov[i].iov_len = RX_BUF;
      memset(&mm[i], 0, sizeof mm[i]);
      mm[i].msg_hdr.msg_name = &from[i];
      mm[i].msg_hdr.msg_namelen = sizeof from[i];
      mm[i].msg_hdr.msg_iov = &iov[i];
      mm[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(ep->fd, mm, RX_BATCH, MSG_DONTWAIT, NULL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return; /* EAGAIN: drained (other errors: nothing to read either) */
    for (int i = 0; i < n; i++) {
      if (mm[i].msg_hdr.msg_flags & MSG_TRUNC || mm[i].msg_len == 0) {
        ep->st.rx_datagrams++;
        ep->st.rx_dropped++;
        continue;
      }
      on_datagram(ep, ep->rxbuf + (size_t)i * RX_BUF, mm[i].msg_len,
                  (const struct sockaddr *)&from[i], mm[i].msg_hdr.msg_namelen,
                  now);
    }
    total += (size_t)n;
    if (n < RX_BATCH)
      return;
  }
}

/* ---- timers ----------------------------------------------------------- */

uint64_t rusm__quic_endpoint_next_expiry(const rusm__quic_endpoint *ep) {
  uint64_t t = UINT64_MAX;
  for (const rusm__quic_conn *c = ep->conns; c; c = c->next) {
    uint64_t x;
    if (c->state == C_CLOSING || c->state == C_DRAINING) {
      x = c->linger_until;
    } else {
      x = ngtcp2_conn_get_expiry(c->q);
      if (c->close_req && c->close_deadline < x)
        x = c->close_deadline;
    }
    if (x < t)
      t = x;
  }
  return t;
}

void rusm__quic_endpoint_on_timeout(rusm__quic_endpoint *ep, uint64_t now) {
  rusm__quic_conn *next;
  for (rusm__quic_conn *c = ep->conns; c; c = next) {
    next = c->next;
    if (c->state == C_CLOSING || c->state == C_DRAINING) {
      if (now >= c->linger_until)
        conn_free(c);
      continue;
    }
    if (c->close_req && now >= c->close_deadline) {
      mark_dirty(c);
      continue;
    }
    if (ngtcp2_conn_get_expiry(c->q) > now)
      continue;
    int rv = ngtcp2_conn_handle_expiry(c->q, now);
    if (rv == NGTCP2_ERR_IDLE_CLOSE) {
      char why[96];
      (void)snprintf(why, sizeof why, "idle timeout: nothing heard for %.1f s",
                     (double)ep->cfg.idle_timeout_ns / 1e9);
      conn_report(c, RUSM_EQUIC_IDLE, 0, why);
      conn_free(c); /* silently, as QUIC wants */
    } else if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
      conn_report(c, RUSM_EQUIC_HANDSHAKE_TIMEOUT, 0,
                  "handshake timeout: no answer from the peer");
      conn_free(c);
    } else if (rv != 0) {
      conn_fail(c, rv, now);
    } else {
      mark_dirty(c);
    }
  }
}

/* ---- output ----------------------------------------------------------- */

static bool can_send_stream(const rusm__quic_conn *c) {
  return c->state == C_OPEN && c->tx_sid != -1 && c->sent_off < c->end_off;
}

/* The caller's close, once the bytes it sent are acknowledged (or the
 * deadline passed, or they never could go). */
static bool try_user_close(rusm__quic_conn *c, uint64_t now) {
  if (c->acked_off != c->end_off && c->state == C_OPEN &&
      now < c->close_deadline)
    return false;
  ngtcp2_connection_close_error cc;
  ngtcp2_connection_close_error_default(&cc);
  ngtcp2_connection_close_error_set_application_error(
      &cc, c->close_code, (const uint8_t *)c->close_reason,
      strlen(c->close_reason));
  conn_close_now(c, &cc, now);
  return true;
}

static bool same_addr(const ngtcp2_addr *a, const struct sockaddr_storage *b,
                      socklen_t blen) {
  return a->addrlen == blen && memcmp(a->addr, b, blen) == 0;
}

/* Writes what c has to send. False when c closed (and may be freed). */
static bool conn_write(rusm__quic_conn *c, uint64_t now) {
  rusm__quic_endpoint *ep = c->ep;
  if (c->state != C_HANDSHAKE && c->state != C_OPEN)
    return false;
  if (c->close_req && try_user_close(c, now))
    return false;
  /* The stream opens when the peer allows it; here again if that failed
   * (memory). Not inside the write loop: no other call may come between
   * writes that coalesce into one packet. */
  if (c->tx_sid == -1 && c->state == C_OPEN &&
      ngtcp2_conn_get_streams_uni_left(c->q) > 0 &&
      ngtcp2_conn_open_uni_stream(c->q, &c->tx_sid, NULL) != 0)
    c->tx_sid = -1;
  size_t quantum = ngtcp2_conn_get_send_quantum(c->q);
  size_t max_pkts = quantum / TX_PKT;
  if (max_pkts < 8)
    max_pkts = 8;
  uint8_t *buf = ep->txbuf;
  size_t off = 0, npkt = 0, seg = 0, total = 0;
  struct sockaddr_storage dest;
  socklen_t destlen = 0;
  bool stream_blocked = false;
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi;
  for (;;) {
    ngtcp2_vec vec[16];
    size_t vcnt = 0;
    int64_t sid = -1;
    if (!stream_blocked && can_send_stream(c)) {
      vcnt = sb_iov(c, vec, 16);
      sid = c->tx_sid;
    }
    ngtcp2_ssize ndata = -1;
    ngtcp2_ssize nw = ngtcp2_conn_writev_stream(
        c->q, &ps.path, &pi, buf + off, TX_PKT, &ndata,
        NGTCP2_WRITE_STREAM_FLAG_MORE, sid, vec, vcnt, now);
    if (nw < 0) {
      if (nw == NGTCP2_ERR_WRITE_MORE) {
        sb_advance(c, (size_t)ndata);
        continue;
      }
      if (nw == NGTCP2_ERR_STREAM_DATA_BLOCKED ||
          nw == NGTCP2_ERR_STREAM_SHUT_WR ||
          nw == NGTCP2_ERR_STREAM_NOT_FOUND) {
        stream_blocked = true;
        continue;
      }
      if (off)
        send_batch(ep, buf, off, seg, (struct sockaddr *)&dest, destlen);
      conn_fail(c, (int)nw, now);
      return false;
    }
    if (ndata > 0)
      sb_advance(c, (size_t)ndata);
    if (nw == 0)
      break;
    /* One GSO batch: same destination, same size (the last may be
     * shorter). */
    if (npkt &&
        ((size_t)nw > seg || !same_addr(&ps.path.remote, &dest, destlen))) {
      send_batch(ep, buf, off, seg, (struct sockaddr *)&dest, destlen);
      if (ep->blocked) {
        off = 0;
        break; /* this packet is lost: QUIC sends it again */
      }
      memmove(buf, buf + off, (size_t)nw);
      off = npkt = 0;
    }
    if (npkt == 0) {
      seg = (size_t)nw;
      destlen = (socklen_t)ps.path.remote.addrlen;
      memcpy(&dest, ps.path.remote.addr, destlen);
    }
    off += (size_t)nw;
    npkt++;
    total++;
    if ((size_t)nw < seg || npkt == GSO_MAX) {
      send_batch(ep, buf, off, seg, (struct sockaddr *)&dest, destlen);
      off = npkt = 0;
      if (ep->blocked)
        break;
    }
    if (total >= max_pkts)
      break;
  }
  if (off)
    send_batch(ep, buf, off, seg, (struct sockaddr *)&dest, destlen);
  ngtcp2_conn_update_pkt_tx_time(c->q, now);
  return true;
}

void rusm__quic_endpoint_flush(rusm__quic_endpoint *ep, uint64_t now) {
  if (!retry_pending(ep))
    return;
  while (ep->dirty) {
    rusm__quic_conn *c = ep->dirty;
    ep->dirty = c->dirty_next;
    c->dirty = false;
    bool open = conn_write(c, now); /* false: c may be freed */
    if (ep->blocked) {
      if (open)
        mark_dirty(c); /* it may have more: after EPOLLOUT */
      return;
    }
  }
}

bool rusm__quic_endpoint_want_write(const rusm__quic_endpoint *ep) {
  return ep->blocked;
}

/* ---- the caller's connection calls -------------------------------- */

int rusm__quic_conn_send(rusm__quic_conn *c, const void *data, size_t n) {
  if (!c || (!data && n))
    return RUSM_EINVAL;
  if (c->close_req || c->reported || c->state == C_CLOSING ||
      c->state == C_DRAINING)
    return RUSM_ECLOSED;
  if (n == 0)
    return 0;
  size_t held = (size_t)(c->end_off - c->acked_off);
  if (n > c->ep->cfg.send_buffer_max - held ||
      held > c->ep->cfg.send_buffer_max) {
    c->want_writable = true;
    return RUSM_ENOBUFS;
  }
  int rc = sb_append(c, data, n);
  if (rc == 0 && c->state == C_OPEN)
    mark_dirty(c);
  return rc;
}

size_t rusm__quic_conn_buffered(const rusm__quic_conn *c) {
  return (size_t)(c->end_off - c->acked_off);
}

void rusm__quic_conn_close(rusm__quic_conn *c, uint64_t app_code,
                           const char *reason) {
  if (!c || c->user_gone)
    return;
  c->user_gone = true;
  c->reported = true;
  if (c->state == C_CLOSING || c->state == C_DRAINING || c->close_req)
    return;
  c->close_req = true;
  c->close_code = app_code;
  copy_str(c->close_reason, sizeof c->close_reason, reason ? reason : "");
  c->close_deadline = mono_ns() + c->ep->cfg.idle_timeout_ns;
  mark_dirty(c);
}

const char *rusm__quic_conn_peer_name(const rusm__quic_conn *c) {
  return c->verified ? c->peer : "";
}
const char *rusm__quic_conn_peer_addr(const rusm__quic_conn *c) {
  return c->addr;
}
bool rusm__quic_conn_is_client(const rusm__quic_conn *c) { return c->client; }
void *rusm__quic_conn_ud(const rusm__quic_conn *c) { return c->ud; }
void rusm__quic_conn_set_ud(rusm__quic_conn *c, void *ud) { c->ud = ud; }

/* ---- the endpoint ------------------------------------------------- */

void rusm__quic_config_default(rusm__quic_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->idle_timeout_ns = 5 * NGTCP2_SECONDS;
  cfg->keepalive_ns = 1 * NGTCP2_SECONDS;
  cfg->handshake_timeout_ns = 5 * NGTCP2_SECONDS;
  cfg->stream_window = 16u << 20;
  cfg->conn_window = 32u << 20;
  cfg->send_buffer_max = 32u << 20;
  cfg->max_conns = 1024;
}

static void fill_config(rusm__quic_config *dst, const rusm__quic_config *src) {
  rusm__quic_config_default(dst);
  if (!src)
    return;
  if (src->idle_timeout_ns)
    dst->idle_timeout_ns = src->idle_timeout_ns;
  if (src->keepalive_ns)
    dst->keepalive_ns = src->keepalive_ns;
  if (src->handshake_timeout_ns)
    dst->handshake_timeout_ns = src->handshake_timeout_ns;
  if (src->stream_window)
    dst->stream_window = src->stream_window;
  if (src->conn_window)
    dst->conn_window = src->conn_window;
  if (src->send_buffer_max)
    dst->send_buffer_max = src->send_buffer_max;
  if (src->max_conns)
    dst->max_conns = src->max_conns;
}

static int open_socket(rusm__quic_endpoint *ep, const char *bind_addr) {
  char host[256], port[8];
  if (split_hostport(bind_addr, host, sizeof host, port, sizeof port))
    return RUSM_EINVAL;
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  bool any = host[0] == '\0' || strcmp(host, "*") == 0;
  int g = getaddrinfo(any ? NULL : host, port, &hints, &res);
  if (g != 0 || !res)
    return g == EAI_MEMORY ? RUSM_ENOMEM : RUSM_EADDRNOTAVAIL;
  int fd = socket(res->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  IPPROTO_UDP);
  if (fd < 0) {
    int e = errno;
    freeaddrinfo(res);
    return map_errno(e);
  }
  int zero = 0, size = SOCK_BUF;
  if (res->ai_family == AF_INET6)
    (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  /* Best effort: the kernel caps these at rmem_max / wmem_max. */
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
    int e = errno;
    close(fd);
    freeaddrinfo(res);
    return map_errno(e);
  }
  ep->family = res->ai_family;
  freeaddrinfo(res);
  ep->local_len = sizeof ep->local;
  if (getsockname(fd, (struct sockaddr *)&ep->local, &ep->local_len) != 0) {
    int e = errno;
    close(fd);
    return map_errno(e);
  }
  ep->fd = fd;
  return 0;
}

int rusm__quic_endpoint_new(const rusm__quic_config *cfg,
                            rusm__tls_creds *creds, const char *bind_addr,
                            const rusm__quic_callbacks *cb, void *ud,
                            rusm__quic_endpoint **out) {
  if (!creds || !bind_addr || !cb || !cb->on_connected || !cb->on_data ||
      !cb->on_closed || !out)
    return RUSM_EINVAL;
  *out = NULL;
  rusm__quic_endpoint *ep = rusm__xcalloc(1, sizeof *ep);
  if (!ep)
    return RUSM_ENOMEM;
  ep->fd = -1;
  fill_config(&ep->cfg, cfg);
  ep->creds = creds;
  ep->cb = *cb;
  ep->ud = ud;
  ep->gso_ok = true;
  ep->mem.malloc = m_malloc;
  ep->mem.free = m_free;
  ep->mem.calloc = m_calloc;
  ep->mem.realloc = m_realloc;
  ep->reset_tokens = RESET_BURST;
  ep->reset_ts = mono_ns();
  rusm__tls_creds_derive(creds, "rusm quic stateless reset", ep->reset_secret,
                         sizeof ep->reset_secret);
  ep->map.cap = 64;
  ep->map.slots = rusm__xcalloc(ep->map.cap, sizeof *ep->map.slots);
  ep->rxbuf = rusm__xmalloc((size_t)RX_BATCH * RX_BUF);
  ep->txbuf = rusm__xmalloc((size_t)GSO_MAX * TX_PKT);
  ep->pend = rusm__xmalloc((size_t)GSO_MAX * TX_PKT);
  int rc = RUSM_ENOMEM;
  if (ep->map.slots && ep->rxbuf && ep->txbuf && ep->pend &&
      gnutls_rnd(GNUTLS_RND_NONCE, &ep->map.seed, sizeof ep->map.seed) == 0)
    rc = open_socket(ep, bind_addr);
  if (rc) {
    rusm__xfree(ep->map.slots);
    rusm__xfree(ep->rxbuf);
    rusm__xfree(ep->txbuf);
    rusm__xfree(ep->pend);
    rusm__xfree(ep);
    return rc;
  }
  *out = ep;
  return 0;
}

static void endpoint_free(rusm__quic_endpoint *ep, bool polite) {
  if (!ep)
    return;
  uint64_t now = mono_ns();
  while (ep->conns) {
    rusm__quic_conn *c = ep->conns;
    c->user_gone = true;
    if (polite && (c->state == C_HANDSHAKE || c->state == C_OPEN)) {
      ngtcp2_connection_close_error cc;
      ngtcp2_connection_close_error_default(&cc);
      static const char bye[] = "endpoint shutting down";
      ngtcp2_connection_close_error_set_application_error(
          &cc, 0, (const uint8_t *)bye, sizeof bye - 1);
      ep->blocked = false; /* a last try for each close */
      conn_close_now(c, &cc, now);
      if (ep->conns != c)
        continue; /* conn_close_now freed it */
    }
    conn_free(c);
  }
  while (ep->free_chunks) {
    chunk *k = ep->free_chunks;
    ep->free_chunks = k->next;
    rusm__xfree(k);
  }
  if (ep->fd >= 0)
    close(ep->fd);
  rusm__xfree(ep->map.slots);
  rusm__xfree(ep->rxbuf);
  rusm__xfree(ep->txbuf);
  rusm__xfree(ep->pend);
  gnutls_memset(ep->reset_secret, 0, sizeof ep->reset_secret);
  rusm__xfree(ep);
}

void rusm__quic_endpoint_free(rusm__quic_endpoint *ep) {
  endpoint_free(ep, true);
}

void rusm__quic_endpoint_abandon(rusm__quic_endpoint *ep) {
  endpoint_free(ep, false);
}

int rusm__quic_endpoint_fd(const rusm__quic_endpoint *ep) { return ep->fd; }

uint16_t rusm__quic_endpoint_local_port(const rusm__quic_endpoint *ep) {
  if (ep->local.ss_family == AF_INET)
    return ntohs(
        ((const struct sockaddr_in *)(const void *)&ep->local)->sin_port);
  return ntohs(
      ((const struct sockaddr_in6 *)(const void *)&ep->local)->sin6_port);
}

size_t rusm__quic_endpoint_conn_count(const rusm__quic_endpoint *ep) {
  return ep->nconns;
}

void rusm__quic_endpoint_stats(const rusm__quic_endpoint *ep,
                               rusm__quic_stats *out) {
  *out = ep->st;
}
