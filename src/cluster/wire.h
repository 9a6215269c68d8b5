/*
 * wire.h — the cluster frame codec (internal).
 *
 * Nodes talk over one reliable, ordered byte stream per peer connection (a
 * QUIC stream). The stream is a sequence of frames: an 8-byte header (magic,
 * version, kind, flags, body length u32) and a body whose layout depends on
 * the kind. Every integer is little-endian. docs/internals/cluster-wire.md
 * has the byte layouts, the limits and the versioning rule.
 *
 * Decoding copies nothing: the byte fields of a decoded rusm__frame
 * (names, payloads, reason details, record lists) are views into the input
 * buffer, valid as long as that buffer is. A view of length 0 has p == NULL.
 * Decoding never allocates; every length is checked against the bytes
 * actually present and against the decoder's body limit before use.
 *
 * Encoding appends to a growable rusm__wbuf. An encode call either appends
 * one whole frame or leaves the buffer as it was (on any error).
 *
 * Any negative result of the decoder means the peer spoke something that
 * is not this protocol: the caller closes the connection (after a GOODBYE
 * with RUSM__WIRE_BYE_PROTOCOL if it likes). The codes are the
 * RUSM_EWIRE_* below; rusm__wire_strerror() describes them.
 */
#ifndef RUSM_CLUSTER_WIRE_H
#define RUSM_CLUSTER_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rusm/otp.h"

/* ------------------------------------------------------------------ */
/* Errors (cluster range -200..-299; the codec uses -200..-219)        */
/* ------------------------------------------------------------------ */

enum {
  RUSM_EWIRE_MAGIC = -200,     /* first header byte is not the magic */
  RUSM_EWIRE_VERSION = -201,   /* header version not supported here */
  RUSM_EWIRE_KIND = -202,      /* unknown frame kind */
  RUSM_EWIRE_FLAGS = -203,     /* flag bits the kind does not define */
  RUSM_EWIRE_TOOBIG = -204,    /* body length over the decoder's limit */
  RUSM_EWIRE_SHORT = -205,     /* body too short for the kind's fields */
  RUSM_EWIRE_TRAILING = -206,  /* bytes left in the body after the fields */
  RUSM_EWIRE_STRING = -207,    /* a string field's length or bytes invalid */
  RUSM_EWIRE_ZERO = -208,      /* a required pid or ref is 0 */
  RUSM_EWIRE_CODE = -209,      /* exit / status / goodbye code unknown */
  RUSM_EWIRE_FIELD = -210,     /* another field out of range */
  RUSM_EWIRE_TRUNCATED = -211, /* the stream ended inside a frame */
};

/* A static description of err: the RUSM_EWIRE_* codes here, any other
 * code as rusm_strerror(). Never NULL. */
const char *rusm__wire_strerror(int err);

/* ------------------------------------------------------------------ */
/* Format constants                                                    */
/* ------------------------------------------------------------------ */

#define RUSM__WIRE_MAGIC 0x52u /* 'R' */
#define RUSM__WIRE_VERSION_MIN 1
#define RUSM__WIRE_VERSION_MAX 1 /* the version this code speaks */
#define RUSM__WIRE_HDR 8         /* header bytes */

/* Body limits: a decoder's max_body of 0 means the default; larger values
 * than the hard cap are clamped to it. Encoders refuse bodies over the
 * hard cap. Peers of one cluster should share their configured limit. */
#define RUSM__WIRE_MAX_BODY_DEFAULT ((size_t)8 << 20)
#define RUSM__WIRE_MAX_BODY_HARD ((size_t)64 << 20)

#define RUSM__WIRE_NODE_NAME_MAX 63 /* [A-Za-z0-9._-]{1,63} */
#define RUSM__WIRE_ADDR_MAX 255     /* printable ASCII, no space, 1..255 */
#define RUSM__WIRE_LABEL_MAX 255    /* no NUL, 0..255 */
#define RUSM__WIRE_TEXT_MAX 1024    /* GOODBYE text: no NUL, 0..1024 */
/* Registry and factory names: 1..RUSM_NAME_MAX (255) bytes, no NUL. */

typedef enum rusm__wire_kind {
  RUSM__WIRE_HELLO = 1,
  RUSM__WIRE_SEND = 2,
  RUSM__WIRE_SEND_NAMED = 3,
  RUSM__WIRE_LINK = 4,
  RUSM__WIRE_UNLINK = 5,
  RUSM__WIRE_EXIT = 6,
  RUSM__WIRE_MONITOR = 7,
  RUSM__WIRE_DEMONITOR = 8,
  RUSM__WIRE_DOWN = 9,
  RUSM__WIRE_SPAWN_REQ = 10,
  RUSM__WIRE_SPAWN_REPLY = 11,
  RUSM__WIRE_PROCS_REQ = 12,
  RUSM__WIRE_PROCS_REPLY = 13,
  RUSM__WIRE_INFO_REQ = 14,
  RUSM__WIRE_INFO_REPLY = 15,
  RUSM__WIRE_SWIM = 16,
  RUSM__WIRE_GREG = 17,
  RUSM__WIRE_GOODBYE = 18,
  RUSM__WIRE_KIND_MAX = RUSM__WIRE_GOODBYE
} rusm__wire_kind;

/* The kind's name ("SEND"), or "?" for an unknown value. */
const char *rusm__wire_kind_name(int kind);

/* Why a node closes a connection (GOODBYE). */
typedef enum rusm__wire_bye {
  RUSM__WIRE_BYE_NORMAL = 0,    /* the node is stopping */
  RUSM__WIRE_BYE_PROTOCOL = 1,  /* a frame did not decode (text: why) */
  RUSM__WIRE_BYE_VERSION = 2,   /* no protocol version in common */
  RUSM__WIRE_BYE_DUPLICATE = 3, /* another connection to that node won */
  RUSM__WIRE_BYE_CONFLICT = 4,  /* node name or id already in the cluster */
  RUSM__WIRE_BYE_REFUSED = 5,   /* refused by policy */
  RUSM__WIRE_BYE__COUNT
} rusm__wire_bye;

/* ------------------------------------------------------------------ */
/* Frames                                                              */
/* ------------------------------------------------------------------ */

/* A byte view: into the decoder's input, or owned by whoever builds a frame
 * to encode. p is NULL when len is 0 (after decoding). */
typedef struct rusm__wire_bytes {
  const uint8_t *p;
  uint32_t len;
} rusm__wire_bytes;

typedef struct rusm__wire_hello {
  uint8_t proto_min, proto_max; /* 1 <= min <= max */
  uint16_t node_id;             /* 1..RUSM_NODE_ID_MAX */
  uint64_t boot_id;             /* new at every node start */
  uint64_t caps;                /* capability bits (none defined yet) */
  rusm__wire_bytes name;        /* node name */
  rusm__wire_bytes addr;        /* where the node listens, e.g. "[::1]:4370" */
  rusm__wire_bytes ext;         /* rest of the body: ignored by version 1 */
} rusm__wire_hello;

typedef struct rusm__wire_send {
  rusm_pid_t to;   /* != 0 */
  rusm_pid_t from; /* 0: not sent by a process */
  uint64_t tag;
  rusm__wire_bytes payload;
} rusm__wire_send;

typedef struct rusm__wire_send_named {
  rusm__wire_bytes name; /* a registered name on the receiving node */
  rusm_pid_t from;       /* may be 0 */
  uint64_t tag;
  rusm__wire_bytes payload;
} rusm__wire_send_named;

/* LINK and UNLINK. */
typedef struct rusm__wire_link {
  rusm_pid_t from, to; /* both != 0 */
} rusm__wire_link;

typedef struct rusm__wire_exit {
  rusm_pid_t from; /* may be 0 for exit/2 from outside a process */
  rusm_pid_t to;   /* != 0 */
  rusm_reason reason;
  bool via_link; /* the exit of a linked process (from != 0), else exit/2 */
} rusm__wire_exit;

/* MONITOR and DEMONITOR. */
typedef struct rusm__wire_monitor {
  rusm_pid_t from, to; /* watcher, watched: both != 0 */
  uint64_t ref;        /* != 0 */
} rusm__wire_monitor;

typedef struct rusm__wire_down {
  uint64_t ref;   /* != 0 */
  rusm_pid_t to;  /* the watcher, != 0 */
  rusm_pid_t pid; /* the watched, != 0 */
  rusm_reason reason;
} rusm__wire_down;

typedef struct rusm__wire_spawn_req {
  uint64_t req_id;
  rusm_pid_t requester;     /* != 0 */
  rusm__wire_bytes factory; /* registry-name rules */
  rusm__wire_bytes args;
  bool link, monitor;
} rusm__wire_spawn_req;

/* Exactly one of pid (success) and err (failure) is non-zero; ref is
 * non-zero exactly when a requested monitor was set up. */
typedef struct rusm__wire_spawn_reply {
  uint64_t req_id;
  rusm_pid_t requester; /* != 0 */
  rusm_pid_t pid;       /* 1..INT64_MAX, or 0 with err */
  int32_t err;          /* a negative RUSM_E* code, or 0 with pid */
  uint64_t ref;
} rusm__wire_spawn_reply;

typedef struct rusm__wire_procs_req {
  uint64_t req_id;
  rusm_pid_t requester; /* != 0 */
  uint32_t offset, max;
} rusm__wire_procs_req;

/* One process in PROCS_REPLY / INFO_REPLY. */
typedef struct rusm__wire_proc {
  rusm_pid_t pid;         /* != 0 */
  rusm__wire_bytes label; /* may be empty */
  uint8_t status;         /* a rusm_proc_status */
  uint32_t mailbox_len;   /* saturated by the sender */
  uint64_t reductions;
  uint64_t memory; /* bytes */
} rusm__wire_proc;

/*
 * PROCS_REPLY. Decoded: count and records (the validated record bytes,
 * walked with rusm__wire_procs_iter_*), items NULL. To encode, set either
 * items (count entries) or records + count (bytes as decoded, re-checked).
 * Large replies are better built in place: rusm__wire_procs_begin().
 */
typedef struct rusm__wire_procs_reply {
  uint64_t req_id;
  rusm_pid_t requester; /* != 0 */
  bool more;            /* further processes after these */
  uint32_t count;
  const rusm__wire_proc *items;
  rusm__wire_bytes records;
} rusm__wire_procs_reply;

typedef struct rusm__wire_info_req {
  uint64_t req_id;
  rusm_pid_t requester; /* != 0 */
  rusm_pid_t pid;       /* != 0 */
} rusm__wire_info_req;

/* noproc: only proc.pid is meaningful (the other fields are 0 / empty). */
typedef struct rusm__wire_info_reply {
  uint64_t req_id;
  rusm_pid_t requester; /* != 0 */
  bool noproc;
  rusm__wire_proc proc;
  uint32_t links, monitors;
} rusm__wire_info_reply;

/* SWIM and GREG: the whole body, for their state machines. */
typedef struct rusm__wire_opaque {
  rusm__wire_bytes data;
} rusm__wire_opaque;

typedef struct rusm__wire_goodbye {
  uint8_t code;          /* a rusm__wire_bye */
  rusm__wire_bytes text; /* 0..RUSM__WIRE_TEXT_MAX bytes, no NUL */
} rusm__wire_goodbye;

typedef struct rusm__frame {
  rusm__wire_kind kind; /* selects the member */
  union {
    rusm__wire_hello hello;
    rusm__wire_send send;
    rusm__wire_send_named send_named;
    rusm__wire_link link; /* LINK, UNLINK */
    rusm__wire_exit exit;
    rusm__wire_monitor monitor; /* MONITOR, DEMONITOR */
    rusm__wire_down down;
    rusm__wire_spawn_req spawn_req;
    rusm__wire_spawn_reply spawn_reply;
    rusm__wire_procs_req procs_req;
    rusm__wire_procs_reply procs_reply;
    rusm__wire_info_req info_req;
    rusm__wire_info_reply info_reply;
    rusm__wire_opaque opaque; /* SWIM, GREG */
    rusm__wire_goodbye goodbye;
  };
} rusm__frame;

/* Field-by-field equality (byte views by content), for tests and checks. */
bool rusm__wire_frame_equal(const rusm__frame *a, const rusm__frame *b);

/* ------------------------------------------------------------------ */
/* Output buffer                                                       */
/* ------------------------------------------------------------------ */

/* A growable byte buffer (malloc'd, owned by the struct). Zero-initialised
 * is a valid empty buffer. */
typedef struct rusm__wbuf {
  uint8_t *data;
  size_t len, cap;
} rusm__wbuf;

void rusm__wbuf_init(rusm__wbuf *b);
/* Frees the bytes; the buffer is empty and reusable afterwards. */
void rusm__wbuf_free(rusm__wbuf *b);
/* Empties the buffer, keeping its capacity. */
void rusm__wbuf_reset(rusm__wbuf *b);
/* Drops the first n (<= len) bytes, e.g. those a stream accepted. */
void rusm__wbuf_consume(rusm__wbuf *b, size_t n);
/* Makes room for `extra` more bytes. 0 or RUSM_ENOMEM (also on overflow). */
int rusm__wbuf_reserve(rusm__wbuf *b, size_t extra);
/* Appends; 0 or RUSM_ENOMEM (the buffer is unchanged then). */
int rusm__wbuf_append(rusm__wbuf *b, const void *p, size_t n);
int rusm__wbuf_put_u8(rusm__wbuf *b, uint8_t v);
int rusm__wbuf_put_u16(rusm__wbuf *b, uint16_t v);
int rusm__wbuf_put_u32(rusm__wbuf *b, uint32_t v);
int rusm__wbuf_put_u64(rusm__wbuf *b, uint64_t v);

/* ------------------------------------------------------------------ */
/* Encoding                                                            */
/* ------------------------------------------------------------------ */

/*
 * Appends frame f to out. f is checked by the decoder's rules first, so
 * whatever encodes also decodes: returns 0, RUSM_ENOMEM, or the RUSM_EWIRE_*
 * code the decoder would give (RUSM_EWIRE_TOOBIG past the hard cap). On
 * error out is unchanged. The encoding is canonical: decoding a frame and
 * encoding it again gives back the same bytes. f's views must not point
 * into out itself (growing out may move its bytes).
 */
int rusm__wire_encode(rusm__wbuf *out, const rusm__frame *f);

/* The hot path: appends a SEND without building a frame. Same results. */
int rusm__wire_encode_send(rusm__wbuf *out, rusm_pid_t to, rusm_pid_t from,
                           uint64_t tag, const void *payload, size_t len);

/*
 * A PROCS_REPLY built in place, one record at a time, so a node can answer
 * from its process table without an array of records:
 *   begin(); while (...) { r = add(); if (r == RUSM_EWIRE_TOOBIG) break; }
 *   end(more);  — or abort() to take the partial frame back out.
 * add() refuses (RUSM_EWIRE_TOOBIG, nothing appended) a record that would
 * take the body past max_body (0: the default). Between begin and
 * end/abort, append nothing else to out.
 */
typedef struct rusm__wire_procs_builder {
  size_t start; /* offset of the frame in out */
  size_t max_body;
  uint32_t count;
} rusm__wire_procs_builder;

int rusm__wire_procs_begin(rusm__wbuf *out, rusm__wire_procs_builder *bld,
                           uint64_t req_id, rusm_pid_t requester,
                           size_t max_body);
int rusm__wire_procs_add(rusm__wbuf *out, rusm__wire_procs_builder *bld,
                         const rusm__wire_proc *proc);
void rusm__wire_procs_end(rusm__wbuf *out, rusm__wire_procs_builder *bld,
                          bool more);
void rusm__wire_procs_abort(rusm__wbuf *out, rusm__wire_procs_builder *bld);

/* ------------------------------------------------------------------ */
/* Decoding                                                            */
/* ------------------------------------------------------------------ */

/*
 * Decodes the frame at the start of p[0..n). max_body: the body limit (0:
 * RUSM__WIRE_MAX_BODY_DEFAULT; clamped to RUSM__WIRE_MAX_BODY_HARD).
 * Returns
 *   1  a frame: *out filled (views into p), *consumed = its size;
 *   0  p holds a valid beginning of a frame but not all of it: call again
 *      with more bytes (*out, *consumed untouched);
 *  <0  a RUSM_EWIRE_* code: close the connection.
 * Header errors (magic, version, kind, flags, a length past the limit or
 * impossible for the kind) are reported as soon as the bytes that show
 * them are present, never after waiting for the body. The result for a
 * given stream does not depend on how it is split into calls.
 */
int rusm__wire_decode(const uint8_t *p, size_t n, size_t max_body,
                      rusm__frame *out, size_t *consumed);

/* Highest version in both [min_a, max_a] and [min_b, max_b], or
 * RUSM_EWIRE_VERSION when the ranges do not meet. */
int rusm__wire_negotiate(uint8_t min_a, uint8_t max_a, uint8_t min_b,
                         uint8_t max_b);

/* Iterates a decoded (or encodable) PROCS_REPLY's records, no allocation.
 * The reply's bytes must stay valid while iterating. */
typedef struct rusm__wire_procs_iter {
  const uint8_t *p, *end;
  const rusm__wire_proc *item;
  uint32_t left;
} rusm__wire_procs_iter;

void rusm__wire_procs_iter_init(rusm__wire_procs_iter *it,
                                const rusm__wire_procs_reply *r);
/* Fills *out (label a view) and returns true, or false at the end. */
bool rusm__wire_procs_iter_next(rusm__wire_procs_iter *it,
                                rusm__wire_proc *out);

/*
 * Stream reassembly for a connection whose bytes arrive in chunks: feed()
 * copies a chunk in, next() hands out frames one by one (views into the
 * reader's buffer, valid until the next feed() or free()). Call next()
 * until it returns 0 after each feed(): the reader then holds at most one
 * partial frame, and only bytes actually received (never a size read from
 * the wire); a buffer grown for a large frame is released once the reader
 * is empty again. A bad header fails next() as soon as it is complete, so
 * an oversized frame is never buffered. Errors are sticky:
 * after a negative next(), every later next() returns the same code.
 * A caller whose reader holds nothing may run rusm__wire_decode on a chunk
 * directly and feed only the undecoded rest.
 */
typedef struct rusm__wire_reader {
  uint8_t *buf;
  size_t len, cap, off; /* bytes held, capacity, bytes already decoded */
  size_t max_body;
  int err;
} rusm__wire_reader;

void rusm__wire_reader_init(rusm__wire_reader *r, size_t max_body);
void rusm__wire_reader_free(rusm__wire_reader *r);
/* 0, RUSM_ENOMEM, or the reader's sticky error. */
int rusm__wire_reader_feed(rusm__wire_reader *r, const uint8_t *p, size_t n);
/* 1 (a frame in *out), 0 (need more bytes) or a RUSM_EWIRE_* code. */
int rusm__wire_reader_next(rusm__wire_reader *r, rusm__frame *out);
/* At the end of the stream: 0 when no partial frame is left, else
 * RUSM_EWIRE_TRUNCATED (or the sticky error). */
int rusm__wire_reader_finish(const rusm__wire_reader *r);

#endif
