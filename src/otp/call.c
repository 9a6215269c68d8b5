/*
 * call.c — synchronous request/reply on top of the public API (call.h).
 */
#include "otp/call.h"

#include <stdatomic.h>
#include <string.h>

int rusm__caller_enter(rusm_rt *rt, rusm__caller *c) {
  c->rt = rt;
  c->temp = false;
  c->me = rusm_current();
  if (c->me != NULL) {
    if (rusm_proc_rt(c->me) != rt)
      return RUSM_ECONTEXT;
    /* Only bodies that may block in rusm_receive() can wait for a reply;
     * the body kind is the public way to tell them apart. */
    rusm_proc_info info;
    if (rusm_proc_info_get(rt, rusm_self(c->me), &info) != 0)
      return RUSM_ECONTEXT;
    if (strcmp(info.kind, "stackful") != 0 &&
        strcmp(info.kind, "attached") != 0)
      return RUSM_ECONTEXT;
    return 0;
  }
  /* A thread outside any process: attaching fails with RUSM_ECONTEXT on a
   * scheduler thread, which must not block. */
  int rc = rusm_attach(rt, &c->me);
  if (rc != 0) {
    c->me = NULL;
    return rc;
  }
  c->temp = true;
  return 0;
}

void rusm__caller_leave(rusm__caller *c) {
  if (c->temp && c->me != NULL)
    rusm_detach(c->me);
  c->me = NULL;
  c->temp = false;
}

uint64_t rusm__call_ref(void) {
  /* relaxed: only uniqueness matters, no data is published through it. */
  static _Atomic uint64_t next = 1;
  return atomic_fetch_add_explicit(&next, 1, memory_order_relaxed);
}

typedef struct call_match {
  uint64_t reply_tag;
  uint64_t ref;
  rusm_ref mref;
} call_match;

static bool match_reply(const rusm_msg *m, void *arg) {
  const call_match *cm = arg;
  uint64_t tag = rusm_msg_tag(m);
  if (tag == cm->reply_tag) {
    uint64_t ref;
    if (rusm_msg_len(m) < sizeof ref)
      return false;
    memcpy(&ref, rusm_msg_data(m), sizeof ref);
    return ref == cm->ref;
  }
  if (tag == RUSM_TAG_DOWN) {
    rusm_down_info d;
    return rusm_msg_down(m, &d) == 0 && d.ref == cm->mref;
  }
  return false;
}

int rusm__call_wait(rusm__caller *c, rusm_ref mref, uint64_t reply_tag,
                    uint64_t ref, int64_t timeout_ms, rusm_msg **out) {
  call_match cm = {reply_tag, ref, mref};
  rusm_filter f = {0, 0, match_reply, &cm};
  rusm_msg *m = NULL;
  int rc = rusm_receive(c->me, &f, timeout_ms, &m);
  if (rc == RUSM_ESHUTDOWN) {
    /* The attached caller was killed and reaped: nothing of it is ours. */
    c->me = NULL;
    return rc;
  }
  if (rc != 0) {
    rusm_demonitor(c->me, mref, RUSM_DEMONITOR_FLUSH);
    return rc;
  }
  if (rusm_msg_tag(m) == RUSM_TAG_DOWN) {
    rusm_msg_free(m);
    return RUSM_ENOPROC;
  }
  /* The reply came first (a callee's reply is ordered before its Down). */
  rusm_demonitor(c->me, mref, RUSM_DEMONITOR_FLUSH);
  *out = m;
  return 0;
}

int rusm__call(rusm__caller *c, rusm_pid_t to, uint64_t tag, void *req,
               size_t len, uint64_t reply_tag, rusm_msg **out) {
  if (to == rusm_self(c->me))
    return RUSM_ECONTEXT;
  rusm_ref mref = 0;
  int rc = rusm_monitor(c->me, to, &mref);
  if (rc != 0)
    return rc;
  uint64_t ref = rusm__call_ref();
  memcpy(req, &ref, sizeof ref);
  /* Sending to a dead callee is not an error: its Down answers instead. */
  rc = rusm_send(c->rt, to, tag, req, len);
  if (rc != 0) {
    rusm_demonitor(c->me, mref, RUSM_DEMONITOR_FLUSH);
    return rc;
  }
  return rusm__call_wait(c, mref, reply_tag, ref, -1, out);
}
