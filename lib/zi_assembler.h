/*  zi_assembler.h - the aggregate stage's logic: reassemble micro-batches,
    un-coalesce batches, post-process, make one REPLY per request.

    Pure logic, no sockets and no clock (the caller passes monotonic
    microseconds). zinfer-aggregate hands it every TASK the broker sends
    after the last segment and sends what comes out on `results`:

        zi_assembler_t *a = zi_assembler_new (agg->tensors, agg->n_tensors,
                                              queue_limit, expiry_us);
        zi_assembler_add (a, &task, zclock_usecs ());   //  always consumes
        zi_assembler_expire (a, zclock_usecs ());
        zi_msg_t *out;
        while ((out = zi_assembler_next (a))) {         //  REPLY or ERROR
            ...send out...
        }

    A TASK's tensors are the model outputs, the rows of its reqs entries
    stacked along dimension 0 in entry order:

      - nmb = 1 (coalesced, or a request that was not split): entry k's rows
        start at the sum of the counts before it; each request gets its own
        REPLY {id: rid, t} at once;
      - nmb > 1 (one micro-batch of one request): kept by rid until all nmb
        micro-batches are in, whatever their arrival order, then
        concatenated along dimension 0 in mb order into one REPLY. A second
        copy of a micro-batch already held is dropped and counted (work is
        at-least-once upstream).

    Before a REPLY goes out, every output the aggregate stage declares goes
    through its post-process ops (zi_transform_post); topk's values tensor
    is added after it as "<name>.values". Outputs the stage does not
    declare pass unchanged; a declared one that is missing is an error.

    Memory is bounded: at most queue_limit requests are held incomplete (a
    micro-batch of one more request is answered ERROR BUSY for its rid); a
    request still incomplete expiry_us after its first micro-batch arrived
    is dropped (AGG-EXPIRED, counted). Requests answered or dropped are
    remembered for expiry_us (at most ZI_ASSEMBLER_RECENT_MAX of them) so
    that late or duplicate micro-batches are dropped instead of starting
    a new request that can never complete.

    Inconsistent tasks (rows that do not match reqs, micro-batches of one
    request that disagree on nmb, tensor names, dtypes or dimensions, or
    rows out of place) are answered with ERROR INTERNAL naming the problem:
    they are a bug upstream, not the client's.
*/
#ifndef ZI_ASSEMBLER_H_INCLUDED
#define ZI_ASSEMBLER_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "zi_error.h"
#include "zi_msg.h"
#include "zi_plan.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Finished requests remembered to drop late duplicates.
#define ZI_ASSEMBLER_RECENT_MAX (1u << 20)

typedef struct zi_assembler zi_assembler_t;

typedef struct {
    uint64_t tasks;             //  TASKs handed in
    uint64_t replies;           //  REPLYs made
    uint64_t errors;            //  ERRORs made (BUSY and INTERNAL)
    uint64_t busy;              //  requests refused because queue_limit were held
    uint64_t duplicates;        //  micro-batches / entries dropped as already seen
    uint64_t expired;           //  requests dropped incomplete
    uint64_t rejected;          //  messages that are not an aggregate TASK
} zi_assembler_stats_t;

//  Create an assembler. post (n_post entries, may be NULL) are the
//  aggregate stage's output declarations, borrowed: they must outlive the
//  assembler. queue_limit >= 1, expiry_us >= 1. NULL on bad arguments or
//  out of memory.
zi_assembler_t *zi_assembler_new (const zi_plan_io_t *post, size_t n_post,
                                  size_t queue_limit, int64_t expiry_us);

//  Destroy an assembler and everything it holds; NULLs *self_p.
void zi_assembler_destroy (zi_assembler_t **self_p);

//  Hand in one TASK from the broker. Always consumes *task_p. Replies
//  and errors it completes are queued for zi_assembler_next. Returns 0,
//  or ZI_ERR_INVALID for a message that is not a TASK (dropped, counted).
int zi_assembler_add (zi_assembler_t *self, zi_msg_t **task_p, int64_t now_us);

//  Drop the requests whose first micro-batch arrived expiry_us or more
//  before now_us, and forget finished requests as old. Returns how many
//  requests were dropped.
size_t zi_assembler_expire (zi_assembler_t *self, int64_t now_us);

//  Microseconds until the next request expires (0 if one has), or -1 when
//  none is held.
int64_t zi_assembler_timeout_us (const zi_assembler_t *self, int64_t now_us);

//  The next REPLY or ERROR to send, in the order they were made, or NULL.
//  The caller owns it.
zi_msg_t *zi_assembler_next (zi_assembler_t *self);

//  Requests held incomplete.
size_t zi_assembler_pending (const zi_assembler_t *self);

//  Counters since creation.
void zi_assembler_stats (const zi_assembler_t *self, zi_assembler_stats_t *stats);

#ifdef __cplusplus
}
#endif

#endif
