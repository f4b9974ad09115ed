/*  zi_worker.h - the exec worker: serve one model segment to the broker.

    An exec worker (the program zinfer-exec) is one replica of one segment of
    the plan. It loads the model, keeps only the weights its own nodes read,
    builds an executor for its node range, and then serves the broker over
    the plan's `work` endpoint (PROTOCOL.md section 7.3):

        worker (DEALER, routing id = replica name)         broker (ROUTER)
          READY {seg, cap, credit, name}            ->
                                                    <-  TASK {id, seg, t = segment inputs}
          RESULT {id, seg, t = segment outputs}     ->      (or ERROR {id, code, reason})
          HEARTBEAT when idle for one interval      <->     HEARTBEAT
          DISCONNECT {reason} when leaving          ->
                                                    <-  DISCONNECT: "I forgot you": READY again

    Usage (what zinfer-exec's main does):

        char err[1024];
        zi_plan_t *plan = zi_plan_load ("plan.json", err, sizeof err);
        if (!zi_worker_find_replica (plan, "s0r1", NULL, err, sizeof err)) {
            ...                         //  not an exec replica: a usage error
        }
        zi_worker_t *worker = zi_worker_new (plan, "s0r1", err, sizeof err);
        if (worker) {
            zi_worker_run (worker);     //  until SIGINT / SIGTERM
            zi_worker_destroy (&worker);
        }
        zi_plan_destroy (&plan);

    Tasks run one at a time, in the order they arrive; the replica's credit
    (from the plan) is how many the broker may queue here. A bad task (a
    missing or extra tensor, a wrong dtype or shape) is answered with ERROR
    BAD_REQUEST naming the tensor; an engine failure with ERROR INTERNAL;
    the worker keeps serving either way. Deadlines are the broker's job and
    are not checked here.

    Liveness: a HEARTBEAT goes out when nothing else was sent for one
    heartbeat interval (plan broker.heartbeat.interval_ms). When nothing is
    heard from the broker for liveness intervals, the worker logs
    EXEC-BROKER-LOST, drops its socket (and whatever was queued on it),
    waits a backoff (one interval, doubling up to 32 intervals, reset by any
    message from the broker), connects a new socket and sends READY again.
    A task is computed in the worker's only thread, so a task that takes
    longer than liveness intervals looks like a dead worker to the broker,
    which re-dispatches it: keep tasks well below that.

    Shutdown: CZMQ's signal handler sets zsys_interrupted; the worker
    finishes the task in hand, sends its RESULT, sends DISCONNECT and
    waits (bounded, well under 2 s) until the broker has read it (see
    zi_worker.c, s_leave) before closing the socket.
*/
#ifndef ZI_WORKER_H_INCLUDED
#define ZI_WORKER_H_INCLUDED

#include <stddef.h>

#include "zi_error.h"
#include "zi_graph.h"
#include "zi_msg.h"
#include "zi_plan.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zi_worker zi_worker_t;

//  The exec replica called name and (if segment_p is not NULL) its segment.
//  Returns NULL with a message in err when no replica has that name or it
//  is a stage's replica, not a segment's (a usage error).
const zi_plan_replica_t *zi_worker_find_replica (const zi_plan_t *plan, const char *name,
                                                 const zi_plan_segment_t **segment_p,
                                                 char *err, size_t errlen);

//  Load replica `name` of the plan: find it, load the model (checking its
//  sha256 when the plan has one, and its node count), keep only the
//  segment's weights, build the executor and check its inputs and outputs
//  against the plan's segment. Logs EXEC-READY. The plan is borrowed and
//  must outlive the worker. Returns NULL with a message in err.
zi_worker_t *zi_worker_new (const zi_plan_t *plan, const char *name, char *err,
                            size_t errlen);

//  Destroy a worker (closing its socket if it has one); NULLs *self_p.
void zi_worker_destroy (zi_worker_t **self_p);

//  Serve the broker until zsys_interrupted is set (SIGINT / SIGTERM under
//  CZMQ's default handler), then leave cleanly. Returns 0, or ZI_ERR_IO
//  when the socket cannot be created or connected (err names why).
int zi_worker_run (zi_worker_t *self, char *err, size_t errlen);

//  Answer one TASK without any socket: the RESULT (the segment's outputs,
//  in the plan's order, moved into the message without copying) or an
//  ERROR naming the problem. Consumes *task_p (its tensors may be views
//  into received frames). Returns NULL only when memory is exhausted.
zi_msg_t *zi_worker_process (zi_worker_t *self, zi_msg_t **task_p);

//  Bytes of weights this worker keeps, and what the whole model's
//  constants held before the others were dropped.
size_t zi_worker_weight_bytes (const zi_worker_t *self);
size_t zi_worker_model_weight_bytes (const zi_worker_t *self);

//  Destroy the constants (initializers, folded Constant nodes) of a graph
//  that no node in [first, last] reads: "a worker materialises only its own
//  segment's weights". Stores the bytes kept in *kept and the bytes all
//  constants held before in *total (either may be NULL). Constants that
//  view a memory-mapped external data file stay mapped (the mapping is the
//  graph's) but are never touched again, so they are not resident. Returns
//  0, or ZI_ERR_INVALID when the range is not a node range of the graph.
int zi_worker_drop_weights (zi_graph_t *graph, int first, int last, size_t *kept,
                            size_t *total);

//  SHA-256 of a file as 64 lower-case hex digits (plus a NUL) in hex.
//  Returns 0, or ZI_ERR_IO with a message in err.
int zi_worker_file_sha256 (const char *path, char hex[65], char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
