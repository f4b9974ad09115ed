/*  zinfer-aggregate - the aggregate stage: reassembles micro-batch
    outputs in order, splits coalesced batches back into their requests,
    post-processes (softmax, argmax, top-k) and hands one REPLY per request
    to the broker.

        broker `to_aggregate` (ROUTER) <--> DEALER  [this]
                                            id = replica name
                                            PUSH --> broker `results` (PULL)

    On the DEALER: READY {name, seg, cap, credit} at start (and at the next
    beat after the broker says DISCONNECT: it has forgotten us), HEARTBEAT {name}
    every heartbeat interval, DISCONNECT when leaving; the broker sends the
    TASKs of the requests that hash to this aggregator. The logic is
    lib/zi_assembler (see zi_assembler.h); this file is the loop.
*/
#include <inttypes.h>
#include <stdio.h>

#include "zi_assembler.h"
#include "zi_blas.h"
#include "zi_log.h"
#include "zi_msg.h"
#include "zi_stage.h"

typedef struct {
    uint64_t dropped;           //  did not decode, or an unexpected command
    uint64_t sent;              //  REPLY / ERROR sent on results
    uint64_t lost;              //  could not be sent before shutdown
} s_counts_t;

//  READY, HEARTBEAT or DISCONNECT to the broker on the DEALER.
static void
s_signal (zi_stage_t *stage, zsock_t *dealer, zi_cmd_t cmd, const char *reason)
{
    const zi_plan_t *plan = zi_stage_plan (stage);
    if (cmd == ZI_CMD_HEARTBEAT && !(zsock_events (dealer) & ZMQ_POLLOUT)) {
        //  The broker has been gone for a thousand beats and the queue to
        //  it is full: a beat more says nothing, and must not block us.
        return;
    }
    zi_msg_t *msg = zi_msg_new (cmd);
    if (!msg) {
        return;
    }
    zi_msg_set_name (msg, zi_stage_name (stage));
    if (cmd == ZI_CMD_READY) {
        //  READY's required fields (PROTOCOL.md 7.3): an aggregator serves
        //  the "segment" past the last one, as the TASKs it gets say;
        //  capacity weighs it in the broker's rendezvous hash; credit is
        //  how many requests it holds at once.
        zi_msg_set_seg (msg, (uint32_t) plan->n_segments);
        zi_msg_set_capacity (msg, zi_stage_replica (stage)->capacity > 0
                                      ? zi_stage_replica (stage)->capacity
                                      : 1.0);
        zi_msg_set_credit (msg, (uint32_t) (plan->broker.queue_limit > 0
                                                ? plan->broker.queue_limit
                                                : ZI_PLAN_DEFAULT_QUEUE_LIMIT));
    }
    if (reason) {
        zi_msg_set_reason (msg, reason);
    }
    zi_stage_send (stage, dealer, &msg);
}

static void
s_drain (zi_stage_t *stage, zi_assembler_t *assembler, zsock_t *out, s_counts_t *counts)
{
    zi_msg_t *msg;
    while ((msg = zi_assembler_next (assembler))) {
        if (zi_stage_send (stage, out, &msg)) {
            counts->lost++;
        }
        else {
            counts->sent++;
        }
    }
}

static void
s_handle (zi_assembler_t *assembler, zi_msg_t **msg_p, bool *ready_due,
          s_counts_t *counts)
{
    switch (zi_msg_cmd (*msg_p)) {
        case ZI_CMD_TASK:
            zi_assembler_add (assembler, msg_p, zclock_usecs ());
            break;
        case ZI_CMD_HEARTBEAT:
            break;
        case ZI_CMD_DISCONNECT:
            //  READY goes at the next beat, not now: a draining broker
            //  answers every READY with DISCONNECT, and an answer at once
            //  would make the two of us ping-pong as fast as we can.
            if (!*ready_due) {
                zi_log_info ("AGG-RECONNECT", "the broker does not know us (%s): READY "
                             "at the next beat",
                             zi_msg_reason (*msg_p) ? zi_msg_reason (*msg_p) : "no reason");
            }
            *ready_due = true;
            break;
        default:
            counts->dropped++;
            zi_log_warn ("AGG-UNEXPECTED", "dropping a %s from the broker",
                         zi_cmd_name (zi_msg_cmd (*msg_p)));
            break;
    }
    zi_msg_destroy (msg_p);
}

static int
s_run (zi_stage_t *stage)
{
    const zi_plan_t *plan = zi_stage_plan (stage);
    const zi_plan_stage_t *config = zi_stage_config (stage);
    int64_t interval = plan->broker.heartbeat_interval_ms > 0
                           ? plan->broker.heartbeat_interval_ms
                           : ZI_PLAN_DEFAULT_HEARTBEAT_MS;
    int64_t deadline_ms = plan->broker.default_deadline_ms > 0
                              ? plan->broker.default_deadline_ms
                              : ZI_PLAN_DEFAULT_DEADLINE_MS;
    size_t queue_limit = (size_t) (plan->broker.queue_limit > 0
                                       ? plan->broker.queue_limit
                                       : ZI_PLAN_DEFAULT_QUEUE_LIMIT);
    zi_assembler_t *assembler = zi_assembler_new (config->tensors, config->n_tensors,
                                                  queue_limit, 2 * deadline_ms * 1000);
    zsock_t *dealer = zi_stage_connect (stage, ZMQ_DEALER, ZI_PLAN_EP_TO_AGGREGATE,
                                        zi_stage_name (stage));
    zsock_t *out = zi_stage_connect (stage, ZMQ_PUSH, ZI_PLAN_EP_RESULTS, NULL);
    if (!assembler || !dealer || !out) {
        zi_stage_close (&dealer, false);
        zi_stage_close (&out, false);
        zi_assembler_destroy (&assembler);
        return 1;
    }
    zi_log_info ("AGG-START",
                 "%zu post-processed output%s, holding up to %zu requests for "
                 "%" PRId64 " ms; heartbeat every %" PRId64 " ms",
                 config->n_tensors, config->n_tensors == 1 ? "" : "s", queue_limit,
                 2 * deadline_ms, interval);
    s_signal (stage, dealer, ZI_CMD_READY, NULL);
    int64_t next_beat = zclock_mono () + interval;
    s_counts_t counts = {0, 0, 0};
    bool ready_due = false;
    while (!zi_stage_interrupted ()) {
        int64_t now = zclock_mono ();
        int64_t wait = next_beat - now;
        int64_t due_us = zi_assembler_timeout_us (assembler, zclock_usecs ());
        if (due_us >= 0 && (due_us + 999) / 1000 < wait) {
            wait = (due_us + 999) / 1000;
        }
        if (zi_stage_wait (dealer, wait < 0 ? 0 : wait)) {
            zi_msg_t *msg = NULL;
            char err[512];
            int rc = zi_msg_recv (dealer, &msg, err, sizeof err);
            if (rc && rc != ZI_ERR_IO) {
                counts.dropped++;
                zi_log_warn ("AGG-DECODE-DROPPED", "%s (%s); %" PRIu64 " dropped so far",
                             err, zi_strerror (rc), counts.dropped);
            }
            else if (rc == ZI_OK) {
                s_handle (assembler, &msg, &ready_due, &counts);
            }
        }
        zi_assembler_expire (assembler, zclock_usecs ());
        s_drain (stage, assembler, out, &counts);
        if (zclock_mono () >= next_beat) {
            s_signal (stage, dealer, ready_due ? ZI_CMD_READY : ZI_CMD_HEARTBEAT, NULL);
            ready_due = false;
            next_beat = zclock_mono () + interval;
        }
    }
    //  Everything completed has been queued for sending already; what is
    //  still incomplete cannot be finished by us.
    s_drain (stage, assembler, out, &counts);
    s_signal (stage, dealer, ZI_CMD_DISCONNECT,
              "SIGINT/SIGTERM: the aggregator is stopping");
    zi_assembler_stats_t stats;
    zi_assembler_stats (assembler, &stats);
    zi_log_info ("AGG-STOP",
                 "signal: stopping with %zu incomplete request%s; %" PRIu64
                 " tasks, %" PRIu64 " replies, %" PRIu64 " errors (%" PRIu64
                 " busy), %" PRIu64 " duplicates, %" PRIu64 " expired, %" PRIu64
                 " dropped, %" PRIu64 " lost at shutdown",
                 zi_assembler_pending (assembler),
                 zi_assembler_pending (assembler) == 1 ? "" : "s", stats.tasks,
                 stats.replies, stats.errors, stats.busy, stats.duplicates, stats.expired,
                 counts.dropped + stats.rejected, counts.lost);
    zi_stage_close (&out, true);
    zi_stage_close (&dealer, true);
    zi_assembler_destroy (&assembler);
    return 0;
}

int
main (int argc, char **argv)
{
    zi_blas_init (argc, argv);
    int status = 0;
    zi_stage_t *stage = zi_stage_new ("zinfer-aggregate", ZI_PLAN_STAGE_AGGREGATE,
                                      "aggregate stage: reassembles micro-batch outputs, "
                                      "un-coalesces batches and post-processes them.",
                                      argc, argv, &status);
    if (!stage) {
        return status;
    }
    status = zi_stage_interrupted () ? 0 : s_run (stage);
    zi_stage_destroy (&stage);
    return status;
}
