/*  zi_batcher.h - the partition stage's logic: split large requests into
    micro-batches, coalesce small ones into batches (dynamic batching).

    Pure logic, no sockets and no clock: the caller passes the time (any
    monotonic microseconds) so tests control it. zinfer-partition feeds it
    the request TASKs it receives and sends what comes out:

        zi_batcher_t *b = zi_batcher_new (micro_batch, max_batch, max_delay_us);
        //  a request TASK arrives: reqs = [[rid, 0, rows]], one request
        if (zi_batcher_add (b, &task, zclock_usecs (), err, sizeof err)) {
            ...answer ERROR {id: rid} with err; the task is still ours...
        }
        zi_batcher_expire (b, zclock_usecs ());     //  batches past their delay
        zi_msg_t *out;
        while ((out = zi_batcher_next (b))) {
            ...send out...
        }
        //  poll for the next request at most this long:
        int64_t wait_us = zi_batcher_timeout_us (b, zclock_usecs ());

    A request of `rows` rows (dimension 0 of its tensors, which must agree):

      - rows > micro_batch: split at once into nmb = ceil(rows / micro_batch)
        micro-batch TASKs; micro-batch k holds rows [k * micro_batch, ...)
        (reqs = [[rid, k * micro_batch, count]], mb = k, nmb);
      - otherwise, with max_delay_us = 0: sent at once as it is;
      - otherwise queued: requests of the same priority class whose tensors
        stack (same names, dtypes and dimensions after the first) are stacked
        along dimension 0 into one TASK (reqs = [[rid1, 0, n1], [rid2, 0,
        n2], ...], mb = 0, nmb = 1) until the next one would take the batch
        over max_batch rows, or the batch reaches max_batch rows, or
        max_delay_us has passed since its first request was queued. So no
        request waits longer than max_delay_us because of coalescing.

    Every TASK out has seg = 0. Its deadline is the smallest budget left
    among its requests (each request's deadline minus the whole
    milliseconds it waited here, at least 1 so it never reads as "none");
    0 when no request has one. A batch of one request goes out as the
    request's own message (its tensors are not copied); a micro-batch's rows
    are a view of the request's tensors copied into the outgoing message.

    At most ZI_BATCHER_MAX_OPEN batches are open at once (inputs that do not
    stack with each other open their own): one more flushes the oldest.

    Never hold a request while the pipeline is idle (Triton / Clipper-style
    dynamic batching). Waiting for a batch to fill only pays when the
    downstream is busy anyway; when segment 0 could start a task right now,
    waiting is pure latency. So the caller passes on the broker's report
    (zi_batcher_set_credit; PROTOCOL.md 7.2): on every TASK and HEARTBEAT
    it sends to partition, "credit" = the tasks segment 0 could start then
    (credit - in flight - queued over its replicas) and "grant" = the
    broker's running count of TASKs received from partition plus that
    credit. Free slots = grant - TASKs this batcher has emitted (anchored
    so they never exceed credit): a report made before our last TASKs
    reached the broker does not hand out again the credit they will use.
    Once everything that arrived together has been read, the caller calls
    zi_batcher_dispatch: open batches go out at once, oldest first, while
    free slots remain; every TASK emitted uses one. So an idle pipeline
    sees every request at once (a batch of one, or what arrived in one
    burst), and a busy one gets batches that grew while it was busy, still
    bounded by max_batch and max_delay_us. Until the first report the
    downstream's state is unknown and batches wait as above (a broker that
    does not report behaves as before).

        if (zi_msg_has (task, "credit")) {              //  the broker's report
            zi_batcher_set_credit (b, zi_msg_credit (task), zi_msg_grant (task));
        }
        zi_batcher_add (b, &task, now, err, sizeof err);
        ...read the rest of the burst...
        zi_batcher_dispatch (b, zclock_usecs ());        //  idle: go now
*/
#ifndef ZI_BATCHER_H_INCLUDED
#define ZI_BATCHER_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "zi_error.h"
#include "zi_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Open (not yet flushed) batches at once.
#define ZI_BATCHER_MAX_OPEN 64

typedef struct zi_batcher zi_batcher_t;

typedef struct {
    uint64_t requests;          //  accepted by zi_batcher_add
    uint64_t split;             //  requests split into micro-batches
    uint64_t micro_batches;     //  TASKs made by splitting
    uint64_t batches;           //  coalesced TASKs (including batches of one)
    uint64_t coalesced;         //  requests that went out in coalesced TASKs
    uint64_t flush_full;        //  batches flushed because max_batch was reached
    uint64_t flush_delay;       //  ... because max_delay_us passed
    uint64_t flush_other;       //  ... by zi_batcher_flush or the open limit
    uint64_t flush_idle;        //  ... because the downstream had room
} zi_batcher_stats_t;

//  Create a batcher: micro_batch and max_batch >= 1 rows, max_delay_us >= 0
//  (0 disables coalescing). NULL on bad settings or out of memory.
zi_batcher_t *zi_batcher_new (int64_t micro_batch, int64_t max_batch,
                              int64_t max_delay_us);

//  Destroy a batcher and every message it still holds; NULLs *self_p.
void zi_batcher_destroy (zi_batcher_t **self_p);

//  Take one request TASK (one reqs entry [rid, 0, rows], nmb 1, at least
//  one tensor, every tensor rank >= 1 with the same dimension 0 = rows >=
//  1). On success takes ownership (*task_p NULL) and returns 0: output may
//  be ready (zi_batcher_next). On failure returns ZI_ERR_MALFORMED (reqs
//  or micro-batch fields), ZI_ERR_SHAPE (rows) or ZI_ERR_NOMEM with a
//  message in err naming the problem; the caller still owns the task.
int zi_batcher_add (zi_batcher_t *self, zi_msg_t **task_p, int64_t now_us, char *err,
                    size_t errlen);

//  Flush the batches whose first request was queued max_delay_us or more
//  before now_us. Returns how many were flushed.
size_t zi_batcher_expire (zi_batcher_t *self, int64_t now_us);

//  Flush every open batch (shutdown). Returns how many were flushed.
size_t zi_batcher_flush (zi_batcher_t *self, int64_t now_us);

//  The broker's report of segment 0: `credit` tasks it could start when
//  the report was made, and `grant` (0 = not given) its running count of
//  TASKs received from partition plus credit. Without grant the free slots
//  are credit; with it, grant minus the TASKs emitted here, at most
//  credit. credit < 0 means unknown (then batches only leave full or after
//  max_delay_us). Each TASK emitted uses up one slot until the next report.
void zi_batcher_set_credit (zi_batcher_t *self, int64_t credit, uint64_t grant);

//  Flush open batches, oldest first, while the downstream has free slots
//  (zi_batcher_set_credit). Call it when no more input is waiting, so what
//  arrived together goes out together. Returns how many were flushed.
size_t zi_batcher_dispatch (zi_batcher_t *self, int64_t now_us);

//  Microseconds from now_us until the next batch is due (0 when one is
//  due already), or -1 when nothing is queued.
int64_t zi_batcher_timeout_us (const zi_batcher_t *self, int64_t now_us);

//  The next TASK to send, in the order they were made, or NULL. The caller
//  owns it.
zi_msg_t *zi_batcher_next (zi_batcher_t *self);

//  Requests queued in open batches, and open batches.
size_t zi_batcher_queued (const zi_batcher_t *self);
size_t zi_batcher_open (const zi_batcher_t *self);

//  Counters since creation.
void zi_batcher_stats (const zi_batcher_t *self, zi_batcher_stats_t *stats);

#ifdef __cplusplus
}
#endif

#endif
