/*
 * call.h — synchronous request/reply between processes, built only on the
 * public API (rusm/otp.h). The supervisor calls (sup.c) use it.
 *
 * A call needs a caller that may block in rusm_receive(): a stackful
 * process or an attached thread. A plain thread that is not attached is
 * attached for the duration of the call; a scheduler thread running a
 * stackless (or custom) body cannot block and gets RUSM_ECONTEXT.
 *
 * Protocol: the request and the reply both start with a u64 reference
 * unique to the call (rusm__call_ref()); the caller monitors the callee for
 * the duration of the call, so a dead callee yields RUSM_ENOPROC instead of
 * a hang. Nothing the callee needs lives in the caller's memory: requests
 * and replies are copied messages, so a caller killed mid-call leaves
 * nothing dangling.
 */
#ifndef RUSM_OTP_CALL_H
#define RUSM_OTP_CALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rusm/otp.h"

typedef struct rusm__caller {
  rusm_rt *rt;
  rusm_proc *me; /* the calling process (borrowed) */
  bool temp;     /* attached for this call only: detached by leave */
} rusm__caller;

/* Finds (or makes, by attaching) the process the calling thread runs as.
 * Returns 0, RUSM_ECONTEXT (a stackless callback, another runtime's
 * process, or a scheduler thread outside any process), or what
 * rusm_attach() returns. */
int rusm__caller_enter(rusm_rt *rt, rusm__caller *c);
/* Detaches a temporary attachment. */
void rusm__caller_leave(rusm__caller *c);

/* A reference unique in this program (never 0). */
uint64_t rusm__call_ref(void);

/*
 * Waits for the reply to call `ref`: the first message tagged reply_tag
 * whose payload starts with ref, or the Down of monitor mref (the callee).
 * On a reply the monitor is removed (flushed) and *out gets the message
 * (owned by the caller: rusm_msg_free). Returns 0, RUSM_ENOPROC (the callee
 * died first), RUSM_ETIMEDOUT (monitor removed) or RUSM_ESHUTDOWN (the
 * calling attached thread was killed: it is no longer a process).
 */
int rusm__call_wait(rusm__caller *c, rusm_ref mref, uint64_t reply_tag,
                    uint64_t ref, int64_t timeout_ms, rusm_msg **out);

/*
 * A whole call: monitors `to`, stores a fresh reference in the first 8
 * bytes of req (len >= 8), sends it with tag, and waits as
 * rusm__call_wait(). RUSM_ECONTEXT when `to` is the caller itself (the
 * call could never be answered).
 */
int rusm__call(rusm__caller *c, rusm_pid_t to, uint64_t tag, void *req,
               size_t len, uint64_t reply_tag, rusm_msg **out);

#endif
