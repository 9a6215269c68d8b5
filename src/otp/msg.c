/* msg.c — messages, shared buffers and receive filters. */
#include <string.h>

#include "otp/internal.h"

static size_t msg_size(size_t inline_len) {
  return sizeof(rusm_msg) + inline_len;
}

rusm_msg *rusm__msg_new(uint8_t kind, uint64_t tag, const void *data,
                        size_t len) {
  rusm_msg *m = rusm__pool_alloc(msg_size(len));
  if (!m)
    return NULL;
  m->inner_next = NULL;
  m->tag = tag;
  m->from = rusm__tl.cur ? rusm__tl.cur->pid : RUSM_PID_NONE;
  m->len = (uint32_t)len;
  m->kind = kind;
  m->flags = 0;
  m->_pad = 0;
  m->aux = 0;
  m->buf = NULL;
  m->data = m->inline_data;
  if (len && data) /* data NULL: the caller fills the payload */
    memcpy(m->inline_data, data, len);
  return m;
}

rusm_msg *rusm__msg_new_buf(uint64_t tag, rusm_buf *buf) {
  rusm_msg *m = rusm__msg_new(RUSM__N_MSG, tag, NULL, 0);
  if (!m)
    return NULL;
  m->flags = RUSM__M_BUF;
  m->buf = rusm_buf_ref(buf);
  m->data = buf->data;
  m->len = (uint32_t)buf->len;
  return m;
}

void rusm__free_node(rusm_msg *m) {
  size_t inl = 0;
  if (m->flags & RUSM__M_BUF)
    rusm_buf_unref(m->buf);
  else
    inl = m->len;
  rusm__pool_free(m, msg_size(inl));
}

void rusm_msg_free(rusm_msg *m) {
  if (m)
    rusm__free_node(m);
}

uint64_t rusm_msg_tag(const rusm_msg *m) { return m->tag; }
rusm_pid_t rusm_msg_from(const rusm_msg *m) { return m->from; }
const uint8_t *rusm_msg_data(const rusm_msg *m) { return m->data; }
size_t rusm_msg_len(const rusm_msg *m) { return m->len; }
rusm_buf *rusm_msg_buf(const rusm_msg *m) {
  return (m->flags & RUSM__M_BUF) ? m->buf : NULL;
}

bool rusm_filter_match(const rusm_filter *f, const rusm_msg *m) {
  return rusm__filter_match(f, m);
}

/* ---- shared buffers ---- */

rusm_buf *rusm_buf_new(size_t len) {
  if (len > UINT32_MAX)
    return NULL;
  rusm_buf *b = rusm__alloc(sizeof(rusm_buf) + len);
  if (!b)
    return NULL;
  atomic_init(&b->refs, 1);
  b->_pad = 0;
  b->len = len;
  return b;
}

rusm_buf *rusm_buf_from(const void *data, size_t len) {
  rusm_buf *b = rusm_buf_new(len);
  if (b && len)
    memcpy(b->data, data, len);
  return b;
}

uint8_t *rusm_buf_data(rusm_buf *b) { return b->data; }
size_t rusm_buf_len(const rusm_buf *b) { return b->len; }

rusm_buf *rusm_buf_ref(rusm_buf *b) {
  /* relaxed: taking a reference needs no ordering, only the drop does. */
  atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
  return b;
}

void rusm_buf_unref(rusm_buf *b) {
  if (!b)
    return;
  /* acq_rel: the last dropper must see every other holder's reads done. */
  if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
    rusm__free(b, sizeof(rusm_buf) + b->len);
}

/* ---- reasons ---- */

rusm__reason_box *rusm__reason_copy(rusm_exit_code code, const uint8_t *data,
                                    uint32_t len) {
  rusm__reason_box *b = rusm__alloc(sizeof *b + len);
  if (!b)
    return NULL;
  b->code = code;
  b->len = len;
  if (len)
    memcpy(b->data, data, len);
  return b;
}

void rusm__reason_free(rusm__reason_box *b) {
  if (b)
    rusm__free(b, sizeof *b + b->len);
}

rusm_reason rusm_reason_str(const char *text) {
  rusm_reason r = {RUSM_EXIT_CUSTOM, 0, NULL};
  if (text) {
    r.len = (uint32_t)strlen(text);
    r.data = (const uint8_t *)text;
  }
  return r;
}
