/*  zinfer-partition - the partition stage: splits large requests into
    micro-batches and coalesces small ones (dynamic batching).

        broker `to_partition` (PUSH) --> PULL  [this]  PUSH --> broker `intake` (PULL)

    The logic is lib/zi_batcher (see zi_batcher.h); this file is the loop.
    It waits for input at most until the oldest queued batch is due, so a
    request never waits longer than max_delay_us because of coalescing, and
    never spins. ERRORs from preprocess pass through unchanged. A request
    this stage cannot take (tensors disagreeing on rows, ...) is answered
    ERROR {id: rid, code: BAD_REQUEST}. On SIGINT/SIGTERM the queued batches
    are flushed and sent before the process exits.

    Batching policy (zi_batcher.h): every TASK and HEARTBEAT the broker
    sends here carries "credit" and "grant", segment 0's free credit at
    that moment and the broker's count of our TASKs plus it.
    After reading everything that arrived together, open batches go out at
    once while that credit lasts: an idle pipeline never waits for a batch
    to fill; a busy one coalesces what queues up, within max_delay_us.

    Liveness: HEARTBEAT {name} on the PUSH every heartbeat interval (the
    broker shows its replicas' liveness in STATS "stages"); DISCONNECT
    {name} when leaving.
*/
#include <inttypes.h>
#include <stdio.h>

#include "zi_batcher.h"
#include "zi_blas.h"
#include "zi_log.h"
#include "zi_msg.h"
#include "zi_stage.h"

//  Most messages read in one go before batches are checked again: a burst
//  coalesces, but cannot delay a due batch for long.
#define S_BURST 64

typedef struct {
    uint64_t errors;            //  ERRORs passed through
    uint64_t rejected;          //  requests answered ERROR here
    uint64_t dropped;           //  did not decode, or an unexpected command
    uint64_t sent;              //  TASKs sent
    uint64_t lost;              //  could not be sent before shutdown
} s_counts_t;

static void
s_send (zi_stage_t *stage, zsock_t *out, zi_msg_t **msg_p, s_counts_t *counts)
{
    if (zi_stage_send (stage, out, msg_p)) {
        counts->lost++;
    }
    else {
        counts->sent++;
    }
}

static void
s_drain (zi_stage_t *stage, zi_batcher_t *batcher, zsock_t *out, s_counts_t *counts)
{
    zi_msg_t *task;
    while ((task = zi_batcher_next (batcher))) {
        s_send (stage, out, &task, counts);
    }
}

static void
s_handle (zi_stage_t *stage, zi_batcher_t *batcher, zsock_t *out, zi_msg_t **msg_p,
          s_counts_t *counts)
{
    zi_cmd_t cmd = zi_msg_cmd (*msg_p);
    //  The broker's view of segment 0: how many tasks it could start now.
    if ((cmd == ZI_CMD_TASK || cmd == ZI_CMD_HEARTBEAT) && zi_msg_has (*msg_p, "credit")) {
        zi_batcher_set_credit (batcher, (int64_t) zi_msg_credit (*msg_p),
                               zi_msg_grant (*msg_p));
    }
    if (cmd == ZI_CMD_HEARTBEAT) {
        zi_msg_destroy (msg_p);
        return;
    }
    if (cmd == ZI_CMD_ERROR) {
        counts->errors++;
        zi_log_debug ("PART-ERROR-FORWARDED", "request %" PRIu64 ": %d %s",
                      zi_msg_id (*msg_p), zi_msg_code (*msg_p),
                      zi_msg_reason (*msg_p) ? zi_msg_reason (*msg_p) : "");
        s_send (stage, out, msg_p, counts);
        return;
    }
    if (cmd != ZI_CMD_TASK) {
        counts->dropped++;
        zi_log_warn ("PART-UNEXPECTED", "dropping a %s: partition takes TASKs and ERRORs",
                     zi_cmd_name (cmd));
        zi_msg_destroy (msg_p);
        return;
    }
    char err[512];
    int rc = zi_batcher_add (batcher, msg_p, zclock_usecs (), err, sizeof err);
    if (rc) {
        size_t nreqs = 0;
        const zi_msg_req_t *reqs = zi_msg_reqs (*msg_p, &nreqs);
        zi_code_t code = rc == ZI_ERR_NOMEM ? ZI_CODE_BUSY : ZI_CODE_BAD_REQUEST;
        for (size_t i = 0; i < nreqs; i++) {
            zi_log_info ("PART-REJECTED", "request %" PRIu64 ": %s: %s", reqs[i].id,
                         zi_code_name (code), err);
            zi_msg_t *error = zi_stage_error (reqs[i].id, code, err);
            counts->rejected++;
            if (error) {
                s_send (stage, out, &error, counts);
            }
        }
        zi_msg_destroy (msg_p);
    }
}

static int
s_run (zi_stage_t *stage)
{
    const zi_plan_stage_t *config = zi_stage_config (stage);
    zi_batcher_t *batcher =
        zi_batcher_new (config->micro_batch, config->max_batch, config->max_delay_us);
    if (!batcher) {
        zi_log_error ("PART-BAD-SETTINGS", "micro_batch %" PRId64 ", max_batch %" PRId64
                      ", max_delay_us %" PRId64 ": each must be >= 1 (delay >= 0)",
                      config->micro_batch, config->max_batch, config->max_delay_us);
        return 1;
    }
    zsock_t *in = zi_stage_connect (stage, ZMQ_PULL, ZI_PLAN_EP_TO_PARTITION, NULL);
    zsock_t *out = zi_stage_connect (stage, ZMQ_PUSH, ZI_PLAN_EP_INTAKE, NULL);
    if (!in || !out) {
        zi_stage_close (&in, false);
        zi_stage_close (&out, false);
        zi_batcher_destroy (&batcher);
        return 1;
    }
    zi_log_info ("PART-START", "micro_batch %" PRId64 ", max_batch %" PRId64
                 ", max_delay_us %" PRId64 "%s", config->micro_batch, config->max_batch,
                 config->max_delay_us, config->max_delay_us ? "" : " (no coalescing)");
    s_counts_t counts = {0, 0, 0, 0, 0};
    while (!zi_stage_interrupted ()) {
        //  Sleep until input arrives or the oldest batch is due (rounded
        //  up to a whole ms so we do not wake just before it).
        //  HEARTBEAT {name} on our PUSH once per interval: how the broker
        //  knows this replica is live.
        zi_stage_beat (stage, out);
        int64_t due_us = zi_batcher_timeout_us (batcher, zclock_usecs ());
        int64_t wait_ms = due_us < 0 ? ZI_STAGE_POLL_MS : (due_us + 999) / 1000;
        if (zi_stage_beat_due_ms (stage) < wait_ms) {
            wait_ms = zi_stage_beat_due_ms (stage);
        }
        if (zi_stage_wait (in, wait_ms)) {
            for (int burst = 0; burst < S_BURST; burst++) {
                zi_msg_t *msg = NULL;
                char err[512];
                int rc = zi_msg_recv (in, &msg, err, sizeof err);
                if (rc == ZI_ERR_IO) {
                    break;
                }
                if (rc) {
                    counts.dropped++;
                    zi_log_warn ("PART-DECODE-DROPPED",
                                 "%s (%s); %" PRIu64 " dropped so far", err,
                                 zi_strerror (rc), counts.dropped);
                }
                else {
                    s_handle (stage, batcher, out, &msg, &counts);
                }
                s_drain (stage, batcher, out, &counts);
                if (!(zsock_events (in) & ZMQ_POLLIN)) {
                    break;
                }
            }
            //  Everything that arrived together is in: if segment 0 has
            //  room, waiting would only add latency.
            zi_batcher_dispatch (batcher, zclock_usecs ());
        }
        zi_batcher_expire (batcher, zclock_usecs ());
        s_drain (stage, batcher, out, &counts);
    }
    size_t queued = zi_batcher_queued (batcher);
    zi_batcher_flush (batcher, zclock_usecs ());
    s_drain (stage, batcher, out, &counts);
    zi_batcher_stats_t stats;
    zi_batcher_stats (batcher, &stats);
    zi_log_info ("PART-STOP",
                 "signal: stopping after flushing %zu queued request%s; "
                 "%" PRIu64 " requests: %" PRIu64 " split into %" PRIu64
                 " micro-batches, %" PRIu64 " sent in %" PRIu64 " batch(es) (%" PRIu64
                 " at once: segment 0 had room); %" PRIu64
                 " errors forwarded, %" PRIu64 " rejected, %" PRIu64 " dropped, %" PRIu64
                 " lost at shutdown",
                 queued, queued == 1 ? "" : "s", stats.requests, stats.split,
                 stats.micro_batches, stats.coalesced, stats.batches, stats.flush_idle,
                 counts.errors,
                 counts.rejected, counts.dropped, counts.lost);
    zi_stage_close (&in, false);
    zi_stage_leave (stage, out, "SIGINT/SIGTERM: the partition stage is stopping");
    zi_stage_close (&out, true);
    zi_batcher_destroy (&batcher);
    return 0;
}

int
main (int argc, char **argv)
{
    zi_blas_init (argc, argv);
    int status = 0;
    zi_stage_t *stage = zi_stage_new ("zinfer-partition", ZI_PLAN_STAGE_PARTITION,
                                      "partition stage: splits large requests into "
                                      "micro-batches and coalesces small ones.",
                                      argc, argv, &status);
    if (!stage) {
        return status;
    }
    status = zi_stage_interrupted () ? 0 : s_run (stage);
    zi_stage_destroy (&stage);
    return status;
}
