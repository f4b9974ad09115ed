/*  zinfer-preprocess - the preprocess stage: validates request tensors
    against the plan and transforms them (cast, scale, normalise, layout,
    resize, pad).

        broker `to_preprocess` (PUSH) --> PULL  [this]
                                          PUSH --> broker `preprocessed` (PULL)

    Each TASK carries one request (reqs = [[rid, 0, rows]], t = the client's
    inputs). It goes on with the same header and the transformed tensors, or
    is answered ERROR {id: rid, code: BAD_REQUEST, reason: what is wrong with
    which tensor}. A message that does not decode cannot be answered (no
    rid): it is dropped, counted and logged; the broker's stage timeout
    deals with the request.

    Liveness: HEARTBEAT {name} on the PUSH every heartbeat interval (the
    broker shows its replicas' liveness in STATS "stages"); DISCONNECT
    {name} when leaving on SIGINT/SIGTERM.
*/
#include <inttypes.h>
#include <stdio.h>

#include "zi_blas.h"
#include "zi_log.h"
#include "zi_msg.h"
#include "zi_stage.h"

typedef struct {
    uint64_t tasks;             //  forwarded transformed
    uint64_t rejected;          //  answered BAD_REQUEST (or another error)
    uint64_t dropped;           //  did not decode, or not a TASK
    uint64_t lost;              //  could not be sent before shutdown
} s_counts_t;

//  Handle one received message: forward it transformed, or answer ERROR.
static void
s_handle (zi_stage_t *stage, zsock_t *out, zi_msg_t **msg_p, s_counts_t *counts)
{
    zi_msg_t *msg = *msg_p;
    if (zi_msg_cmd (msg) != ZI_CMD_TASK) {
        counts->dropped++;
        zi_log_warn ("PRE-UNEXPECTED", "dropping a %s: preprocess takes TASKs",
                     zi_cmd_name (zi_msg_cmd (msg)));
        zi_msg_destroy (msg_p);
        return;
    }
    size_t nreqs = 0;
    const zi_msg_req_t *reqs = zi_msg_reqs (msg, &nreqs);
    char err[1024];
    zi_msg_t *result = NULL;
    int rc = zi_stage_preprocess (zi_stage_plan (stage), zi_stage_config (stage), msg,
                                  &result, err, sizeof err);
    if (rc == ZI_OK) {
        counts->tasks++;
        if (zi_stage_send (stage, out, &result)) {
            counts->lost++;
        }
    }
    else {
        //  NOMEM is worth a retry (BUSY); everything else is the input.
        zi_code_t code = rc == ZI_ERR_NOMEM ? ZI_CODE_BUSY : ZI_CODE_BAD_REQUEST;
        for (size_t i = 0; i < nreqs; i++) {
            zi_log_info ("PRE-REJECTED", "request %" PRIu64 ": %s: %s", reqs[i].id,
                         zi_code_name (code), err);
            zi_msg_t *error = zi_stage_error (reqs[i].id, code, err);
            counts->rejected++;
            if (!error || zi_stage_send (stage, out, &error)) {
                counts->lost++;
            }
        }
    }
    zi_msg_destroy (msg_p);
}

static int
s_run (zi_stage_t *stage)
{
    zsock_t *in = zi_stage_connect (stage, ZMQ_PULL, ZI_PLAN_EP_TO_PREPROCESS, NULL);
    zsock_t *out = zi_stage_connect (stage, ZMQ_PUSH, ZI_PLAN_EP_PREPROCESSED, NULL);
    if (!in || !out) {
        zi_stage_close (&in, false);
        zi_stage_close (&out, false);
        return 1;
    }
    const zi_plan_stage_t *config = zi_stage_config (stage);
    const zi_plan_t *plan = zi_stage_plan (stage);
    zi_log_info ("PRE-START",
                 "%zu input%s declared with their ops, the model has %zu; "
                 "pulling from %s",
                 config->n_tensors, config->n_tensors == 1 ? "" : "s",
                 plan->model.n_inputs,
                 plan->broker.endpoints[ZI_PLAN_EP_TO_PREPROCESS].connect);
    s_counts_t counts = {0, 0, 0, 0};
    while (!zi_stage_interrupted ()) {
        //  HEARTBEAT {name} on our PUSH once per interval: how the broker
        //  knows this replica is live.
        zi_stage_beat (stage, out);
        if (!zi_stage_wait (in, zi_stage_beat_due_ms (stage))) {
            continue;
        }
        zi_msg_t *msg = NULL;
        char err[512];
        int rc = zi_msg_recv (in, &msg, err, sizeof err);
        if (rc == ZI_ERR_IO) {
            continue;                   //  interrupted
        }
        if (rc) {
            counts.dropped++;
            zi_log_warn ("PRE-DECODE-DROPPED", "%s (%s); %" PRIu64 " dropped so far", err,
                         zi_strerror (rc), counts.dropped);
            continue;
        }
        s_handle (stage, out, &msg, &counts);
    }
    zi_log_info ("PRE-STOP",
                 "signal: stopping; %" PRIu64 " tasks forwarded, %" PRIu64
                 " rejected, %" PRIu64 " dropped, %" PRIu64 " lost at shutdown",
                 counts.tasks, counts.rejected, counts.dropped, counts.lost);
    //  Stop taking work first, so nothing more is queued for us; then
    //  tell the broker we are gone.
    zi_stage_close (&in, false);
    zi_stage_leave (stage, out, "SIGINT/SIGTERM: the preprocess stage is stopping");
    zi_stage_close (&out, true);
    return 0;
}

int
main (int argc, char **argv)
{
    zi_blas_init (argc, argv);
    int status = 0;
    zi_stage_t *stage
        = zi_stage_new ("zinfer-preprocess", ZI_PLAN_STAGE_PREPROCESS,
                        "preprocess stage: validates request tensors against "
                        "the plan and transforms them.",
                        argc, argv, &status);
    if (!stage) {
        return status;
    }
    status = zi_stage_interrupted () ? 0 : s_run (stage);
    zi_stage_destroy (&stage);
    return status;
}
