/*  zi_stage.h - what the three PUSH/PULL stage programs share: arguments,
    sockets, sending under back-pressure and shutdown, and the preprocess
    stage's per-task logic.

    zinfer-preprocess, zinfer-partition and zinfer-aggregate are thin mains
    around this module (and zi_batcher / zi_assembler for the last two):

        int status;
        zi_stage_t *stage = zi_stage_new ("zinfer-preprocess", ZI_PLAN_STAGE_PREPROCESS,
                                          "validates and transforms request tensors",
                                          argc, argv, &status);
        if (!stage) {
            return status;              //  0 after --help, 2 after a usage error
        }
        zsock_t *in = zi_stage_connect (stage, ZMQ_PULL, ZI_PLAN_EP_TO_PREPROCESS, NULL);
        zsock_t *out = zi_stage_connect (stage, ZMQ_PUSH, ZI_PLAN_EP_PREPROCESSED, NULL);
        while (!zi_stage_interrupted ()) {
            if (zi_stage_wait (in, ZI_STAGE_POLL_MS) > 0) {
                ...  zi_msg_recv (in, ...) ... zi_stage_send (stage, out, &msg);
            }
        }
        zi_stage_close (stage, &out);
        zi_stage_destroy (&stage);

    Command line (every stage): --plan PLAN --name REPLICA [--log-level L],
    --help, --version. A missing or unknown flag, a plan that does not load,
    a replica name the plan does not have, or a replica of another kind of
    stage (a segment's exec replica, another stage, a custom stage) is a
    clear message on stderr and exit status 2.

    Shutdown: CZMQ's signal handler sets zsys_interrupted on SIGINT/SIGTERM.
    Loops wait at most ZI_STAGE_POLL_MS at a time so they notice it within
    ~100 ms. After it, zi_stage_send still waits for a slow peer, but only
    for ZI_STAGE_GRACE_MS in all (counted from the first send that saw the
    signal), so a stage exits well within 2 s even when the broker is gone.
    Output sockets close with a linger of ZI_STAGE_LINGER_MS. Delivery on a
    PUSH link at exit stays best effort (libzmq gives no acknowledgement, and
    4.3.x can drop what is queued in a closing socket): the broker re-injects
    work lost in a stage after its stage timeout.
*/
#ifndef ZI_STAGE_H_INCLUDED
#define ZI_STAGE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <czmq.h>

#include "zi_error.h"
#include "zi_msg.h"
#include "zi_plan.h"

#ifdef __cplusplus
extern "C" {
#endif

//  The longest a stage loop blocks, so a signal is noticed in time.
#define ZI_STAGE_POLL_MS 100
//  Send and receive high-water marks of every stage socket (messages).
#define ZI_STAGE_HWM 1000
//  After a signal: how long sends may still wait for a slow peer, in all.
#define ZI_STAGE_GRACE_MS 500
//  Linger of output sockets at close.
#define ZI_STAGE_LINGER_MS 500

typedef struct zi_stage zi_stage_t;

//  Parse argv (--plan, --name, --log-level, --help, --version), load the
//  plan and find the replica, which must belong to a built-in stage of
//  `kind`. Sets the log ident (program, replica name). Returns the stage,
//  or NULL with *status set to the exit status: 0 after --help/--version
//  (printed on stdout), 2 after a usage or plan error (explained on
//  stderr). `what` is the one-line description --help prints.
zi_stage_t *zi_stage_new (const char *program, zi_plan_stage_kind_t kind,
                          const char *what, int argc, char **argv, int *status);

//  Destroy a stage (and its plan); sets *self_p to NULL. Safe on NULL.
void zi_stage_destroy (zi_stage_t **self_p);

//  The loaded plan, this process's stage entry and replica, its name.
//  All live as long as the stage.
const zi_plan_t *zi_stage_plan (const zi_stage_t *self);
const zi_plan_stage_t *zi_stage_config (const zi_stage_t *self);
const zi_plan_replica_t *zi_stage_replica (const zi_stage_t *self);
const char *zi_stage_name (const zi_stage_t *self);

//  Create a socket of `type` with the stage options (zi_security_socket:
//  ZMQ_MAXMSGSIZE from the plan, ZMTP heartbeats, reconnect backoff;
//  bounded HWMs; routing id `identity` if not NULL; with CURVE, this
//  replica's key pair) and connect it to the plan's endpoint `ep`.
//  Returns the socket, or NULL after logging STAGE-CONNECT-FAILED.
zsock_t *zi_stage_connect (zi_stage_t *self, int type, zi_plan_ep_t ep,
                           const char *identity);

//  Close a socket: linger ZI_STAGE_LINGER_MS if `flush`, else 0. Sets
//  *sock_p to NULL; safe on NULL.
void zi_stage_close (zsock_t **sock_p, bool flush);

//  True once SIGINT or SIGTERM has arrived.
bool zi_stage_interrupted (void);

//  Wait up to timeout_ms (capped at ZI_STAGE_POLL_MS; < 0 means the cap)
//  for a message on sock. Returns 1 when one is ready, 0 on a timeout or a
//  signal.
int zi_stage_wait (zsock_t *sock, int64_t timeout_ms);

//  Send msg, first waiting until the socket can take it (a slow or absent
//  peer holds us back: back-pressure), polling so a signal is noticed.
//  After a signal the waiting is bounded by ZI_STAGE_GRACE_MS in all.
//  Always consumes *msg_p. Returns 0, ZI_ERR_TIMEOUT (dropped: the peer
//  did not take it before the grace ran out) or the zi_msg_send error.
int zi_stage_send (zi_stage_t *self, zsock_t *sock, zi_msg_t **msg_p);

//  Liveness on a PUSH link (preprocess on `preprocessed`, partition on
//  `intake`): send HEARTBEAT {name} on sock once per heartbeat interval
//  (call it every loop turn; it sends only when one is due), so the broker
//  can tell which stage replicas are live (STATS "stages"). Never blocks:
//  with no peer or a full queue the beat is skipped.
void zi_stage_beat (zi_stage_t *self, zsock_t *sock);

//  Milliseconds until the next HEARTBEAT is due (0: now).
int64_t zi_stage_beat_due_ms (const zi_stage_t *self);

//  DISCONNECT {name, reason} on a PUSH link before leaving (best effort,
//  never blocks): the broker marks this replica gone at once.
void zi_stage_leave (zi_stage_t *self, zsock_t *sock, const char *reason);

//  A new ERROR message {id, code, reason}.
zi_msg_t *zi_stage_error (uint64_t id, zi_code_t code, const char *reason);

//  ---------------------------------------------------------------------
//  Preprocess (pure; used by zinfer-preprocess)

//  Check the tensors of a request TASK against the preprocess stage's
//  declarations (every declared name present, no other name, dtype and
//  shape with -1 wildcards) and apply each declaration's ops. Model inputs
//  the stage does not declare are checked against the model's declaration
//  and pass unchanged; a plan that declares no inputs at all passes every
//  tensor through. Returns 0 and a new TASK in *out
//  (same reqs, mb, nmb, seg, prio, deadline, attempt; the transformed
//  tensors in declaration order), or an error with a message in err that
//  names the tensor and the problem. `task` is only read.
int zi_stage_preprocess (const zi_plan_t *plan, const zi_plan_stage_t *stage,
                         const zi_msg_t *task, zi_msg_t **out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
