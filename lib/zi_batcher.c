/*  zi_batcher.c - split and coalesce request TASKs; see zi_batcher.h. */
#include "zi_batcher.h"

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "zi_log.h"

//  One queued request.
typedef struct {
    zi_msg_t *task;             //  owned
    int64_t rows;
    int64_t queued_us;
} s_item_t;

//  Requests of one class whose tensors stack, waiting to go out together.
typedef struct {
    uint8_t prio;
    int64_t first_us;           //  when its first request was queued
    int64_t rows;
    s_item_t *items;
    size_t n_items;
    size_t cap_items;
} s_batch_t;

struct zi_batcher {
    int64_t micro_batch;
    int64_t max_batch;
    int64_t max_delay_us;
    s_batch_t *open[ZI_BATCHER_MAX_OPEN];   //  oldest first
    size_t n_open;
    size_t queued;
    zlist_t *out;               //  zi_msg_t * ready to send, FIFO
    int64_t free_slots;         //  tasks the downstream can start; < 0 unknown
    uint64_t emitted;           //  TASKs emitted, ever
    uint64_t offset;            //  grant - emitted - offset = free slots
    bool anchored;              //  offset set by a first grant
    zi_batcher_stats_t stats;
};

zi_batcher_t *
zi_batcher_new (int64_t micro_batch, int64_t max_batch, int64_t max_delay_us)
{
    if (micro_batch < 1 || max_batch < 1 || max_delay_us < 0) {
        return NULL;
    }
    zi_batcher_t *self = (zi_batcher_t *) calloc (1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->micro_batch = micro_batch;
    self->max_batch = max_batch;
    self->max_delay_us = max_delay_us;
    self->free_slots = -1;
    self->out = zlist_new ();
    if (!self->out) {
        free (self);
        return NULL;
    }
    return self;
}

static void
s_batch_destroy (s_batch_t **batch_p)
{
    s_batch_t *batch = *batch_p;
    if (!batch) {
        return;
    }
    for (size_t i = 0; i < batch->n_items; i++) {
        zi_msg_destroy (&batch->items[i].task);
    }
    free (batch->items);
    free (batch);
    *batch_p = NULL;
}

void
zi_batcher_destroy (zi_batcher_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zi_batcher_t *self = *self_p;
    for (size_t i = 0; i < self->n_open; i++) {
        s_batch_destroy (&self->open[i]);
    }
    zi_msg_t *msg;
    while ((msg = (zi_msg_t *) zlist_pop (self->out))) {
        zi_msg_destroy (&msg);
    }
    zlist_destroy (&self->out);
    free (self);
    *self_p = NULL;
}

//  =====================================================================
//  Helpers

//  The budget a request has left after waiting since queued_us: 0 for
//  none, else at least 1 ms (0 would read as "no deadline").
static uint32_t
s_remaining (const zi_msg_t *task, int64_t queued_us, int64_t now_us)
{
    uint32_t deadline = zi_msg_deadline_ms (task);
    if (deadline == 0) {
        return 0;
    }
    int64_t waited_ms = now_us > queued_us ? (now_us - queued_us) / 1000 : 0;
    return waited_ms < (int64_t) deadline ? deadline - (uint32_t) waited_ms : 1;
}

//  The smaller of two deadlines where 0 means none.
static uint32_t
s_min_deadline (uint32_t a, uint32_t b)
{
    if (a == 0) {
        return b;
    }
    return b == 0 || a < b ? a : b;
}

//  True when the tensors of b can be stacked under those of a along
//  dimension 0: the same names, dtypes, ranks and dimensions after the
//  first.
static bool
s_stackable (const zi_msg_t *a, const zi_msg_t *b)
{
    size_t n = zi_msg_tensor_count (a);
    if (zi_msg_tensor_count (b) != n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const zi_tensor_t *ta = zi_msg_tensor (a, i);
        const zi_tensor_t *tb = zi_msg_tensor_find (b, zi_msg_tensor_name (a, i));
        if (!tb || tb->dtype != ta->dtype || tb->rank != ta->rank) {
            return false;
        }
        for (int d = 1; d < ta->rank; d++) {
            if (tb->ne[d] != ta->ne[d]) {
                return false;
            }
        }
    }
    return true;
}

//  Append a message to the output queue; on failure the message is lost
//  (logged): zlist_append only fails when memory is exhausted.
static void
s_emit (zi_batcher_t *self, zi_msg_t **msg_p)
{
    //  Whatever leaves takes one of the downstream's free slots.
    if (self->free_slots > 0) {
        self->free_slots--;
    }
    self->emitted++;
    if (zlist_append (self->out, *msg_p)) {
        zi_log_error ("PART-NOMEM", "out of memory: a task is lost");
        zi_msg_destroy (msg_p);
        return;
    }
    *msg_p = NULL;
}

//  Turn a request's own message into a batch of one: the header says so
//  and the deadline is what is left of it.
static void
s_emit_alone (zi_batcher_t *self, s_item_t *item, int64_t now_us)
{
    zi_msg_t *task = item->task;
    item->task = NULL;
    uint32_t left = s_remaining (task, item->queued_us, now_us);
    if (left) {
        zi_msg_set_deadline_ms (task, left);
    }
    zi_msg_set_mb (task, 0, 1);
    zi_msg_set_seg (task, 0);
    self->stats.batches++;
    self->stats.coalesced++;
    s_emit (self, &task);
}

//  One TASK holding every request of the batch, tensors stacked along
//  dimension 0 in request order. NULL when memory is exhausted.
static zi_msg_t *
s_stack (const s_batch_t *batch, int64_t now_us)
{
    zi_msg_t *out = zi_msg_new (ZI_CMD_TASK);
    if (!out) {
        return NULL;
    }
    const zi_msg_t *first = batch->items[0].task;
    uint32_t deadline = 0, attempt = 0;
    bool ok = zi_msg_set_mb (out, 0, 1) == 0 && zi_msg_set_prio (out, batch->prio) == 0;
    for (size_t i = 0; ok && i < batch->n_items; i++) {
        const s_item_t *item = &batch->items[i];
        size_t nreqs = 0;
        const zi_msg_req_t *req = zi_msg_reqs (item->task, &nreqs);
        ok = zi_msg_add_req (out, req->id, 0, (uint32_t) item->rows) == 0;
        deadline = s_min_deadline (deadline, s_remaining (item->task, item->queued_us,
                                                         now_us));
        attempt = zi_msg_attempt (item->task) > attempt ? zi_msg_attempt (item->task)
                                                        : attempt;
    }
    zi_msg_set_seg (out, 0);
    if (deadline) {
        zi_msg_set_deadline_ms (out, deadline);
    }
    if (attempt) {
        zi_msg_set_attempt (out, attempt);
    }
    for (size_t k = 0; ok && k < zi_msg_tensor_count (first); k++) {
        const char *name = zi_msg_tensor_name (first, k);
        const zi_tensor_t *proto = zi_msg_tensor (first, k);
        int64_t shape[ZI_MAX_RANK];
        memcpy (shape, proto->ne, sizeof shape);
        shape[0] = batch->rows;
        //  t (rows of every request, ...): the requests' rows one after another
        zi_tensor_t *t = zi_tensor_new (proto->dtype, proto->rank, shape);
        ok = t != NULL;
        size_t pos = 0;
        for (size_t i = 0; ok && i < batch->n_items; i++) {
            const zi_tensor_t *src = zi_msg_tensor_find (batch->items[i].task, name);
            zi_tensor_t *dense = NULL;
            if (!zi_tensor_is_contiguous (src)) {
                dense = zi_tensor_dup (src);
                ok = dense != NULL;
                src = dense;
            }
            if (ok && src->nbytes > 0) {
                memcpy ((uint8_t *) t->data + pos, src->data, src->nbytes);
                pos += src->nbytes;
            }
            zi_tensor_destroy (&dense);
        }
        assert (!ok || pos == t->nbytes);
        if (ok && zi_msg_add_tensor (out, name, &t)) {
            ok = false;
        }
        zi_tensor_destroy (&t);
    }
    if (!ok) {
        zi_msg_destroy (&out);
    }
    return out;
}

static const char *
s_reason_name (int reason)
{
    return reason == 0   ? "full"
           : reason == 1 ? "delay"
           : reason == 3 ? "idle"
                         : "flush";
}

//  Send batch `index` of the open list on its way and close it.
//  reason: 0 full, 1 delay, 2 flush / open limit, 3 downstream idle.
static void
s_flush (zi_batcher_t *self, size_t index, int64_t now_us, int reason)
{
    s_batch_t *batch = self->open[index];
    memmove (&self->open[index], &self->open[index + 1],
             (self->n_open - index - 1) * sizeof self->open[0]);
    self->n_open--;
    self->queued -= batch->n_items;
    if (reason == 0) {
        self->stats.flush_full++;
    }
    else if (reason == 1) {
        self->stats.flush_delay++;
    }
    else if (reason == 3) {
        self->stats.flush_idle++;
    }
    else {
        self->stats.flush_other++;
    }
    zi_log_debug ("PART-FLUSH",
                  "class %u: %zu request%s, %" PRId64 " rows, after %" PRId64 " us (%s)",
                  batch->prio, batch->n_items, batch->n_items == 1 ? "" : "s",
                  batch->rows, now_us - batch->first_us, s_reason_name (reason));
    if (batch->n_items == 1) {
        s_emit_alone (self, &batch->items[0], now_us);
    }
    else {
        zi_msg_t *out = s_stack (batch, now_us);
        if (out) {
            self->stats.batches++;
            self->stats.coalesced += batch->n_items;
            s_emit (self, &out);
        }
        else {
            //  No memory for the stacked copy: the requests still go, one
            //  by one, as they are.
            zi_log_warn ("PART-STACK-FAILED", "out of memory stacking %zu requests: "
                         "sending them one by one", batch->n_items);
            for (size_t i = 0; i < batch->n_items; i++) {
                s_emit_alone (self, &batch->items[i], now_us);
            }
        }
    }
    s_batch_destroy (&batch);
}

//  Split a request into micro-batches; all or nothing.
static int
s_split (zi_batcher_t *self, zi_msg_t *task, int64_t rows, char *err, size_t errlen)
{
    size_t nreqs = 0;
    uint64_t rid = zi_msg_reqs (task, &nreqs)[0].id;
    int64_t nmb = (rows + self->micro_batch - 1) / self->micro_batch;
    zlist_t *made = zlist_new ();
    int rc = made ? ZI_OK : ZI_ERR_NOMEM;
    for (int64_t k = 0; rc == ZI_OK && k < nmb; k++) {
        int64_t first = k * self->micro_batch;
        int64_t count
            = rows - first < self->micro_batch ? rows - first : self->micro_batch;
        zi_msg_t *mb = zi_msg_new (ZI_CMD_TASK);
        if (!mb || zi_msg_add_req (mb, rid, (uint32_t) first, (uint32_t) count)
            || zi_msg_set_mb (mb, (uint32_t) k, (uint32_t) nmb)
            || zi_msg_set_prio (mb, zi_msg_prio (task))) {
            rc = ZI_ERR_NOMEM;
        }
        for (size_t i = 0; rc == ZI_OK && i < zi_msg_tensor_count (task); i++) {
            zi_tensor_t view;
            rc = zi_tensor_slice_rows (zi_msg_tensor (task, i), first, count, &view);
            if (rc == ZI_OK && zi_msg_add_tensor_copy (mb, zi_msg_tensor_name (task, i),
                                                       &view)) {
                rc = ZI_ERR_NOMEM;
            }
        }
        if (rc == ZI_OK) {
            zi_msg_set_seg (mb, 0);
            if (zi_msg_deadline_ms (task)) {
                zi_msg_set_deadline_ms (mb, zi_msg_deadline_ms (task));
            }
            if (zi_msg_attempt (task)) {
                zi_msg_set_attempt (mb, zi_msg_attempt (task));
            }
            rc = zlist_append (made, mb) ? ZI_ERR_NOMEM : ZI_OK;
        }
        if (rc) {
            zi_msg_destroy (&mb);
        }
    }
    zi_msg_t *mb;
    while (made && (mb = (zi_msg_t *) zlist_pop (made))) {
        if (rc) {
            zi_msg_destroy (&mb);
        }
        else {
            s_emit (self, &mb);
        }
    }
    zlist_destroy (&made);
    if (rc) {
        return zi_fail (err, errlen, rc, "request %" PRIu64 ": cannot split %" PRId64
                        " rows into micro-batches: %s", rid, rows, zi_strerror (rc));
    }
    self->stats.split++;
    self->stats.micro_batches += (uint64_t) nmb;
    zi_log_debug ("PART-SPLIT", "request %" PRIu64 ": %" PRId64 " rows in %" PRId64
                  " micro-batches of %" PRId64, rid, rows, nmb, self->micro_batch);
    return ZI_OK;
}

//  Check a request TASK and find its rows.
static int
s_rows (const zi_msg_t *task, int64_t *rows_p, char *err, size_t errlen)
{
    if (zi_msg_cmd (task) != ZI_CMD_TASK) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "a %s is not a request TASK",
                        zi_cmd_name (zi_msg_cmd (task)));
    }
    size_t nreqs = 0;
    const zi_msg_req_t *reqs = zi_msg_reqs (task, &nreqs);
    if (nreqs != 1) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "a request TASK carries one request, "
                        "this one %zu",
                        nreqs);
    }
    if (reqs[0].first != 0 || zi_msg_nmb (task) > 1) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "request %" PRIu64 ": already a "
                        "micro-batch (rows from %" PRIu32 ", mb %" PRIu32 " of %" PRIu32
                        ")",
                        reqs[0].id, reqs[0].first, zi_msg_mb (task), zi_msg_nmb (task));
    }
    size_t n = zi_msg_tensor_count (task);
    if (n == 0) {
        return zi_fail (err, errlen, ZI_ERR_SHAPE,
                        "request %" PRIu64 ": no input tensors", reqs[0].id);
    }
    int64_t rows = -1;
    const char *first_name = NULL;
    for (size_t i = 0; i < n; i++) {
        const zi_tensor_t *t = zi_msg_tensor (task, i);
        const char *name = zi_msg_tensor_name (task, i);
        if (t->rank < 1) {
            return zi_fail (err, errlen, ZI_ERR_SHAPE,
                            "input '%s': a scalar has no batch "
                            "dimension",
                            name);
        }
        if (rows < 0) {
            rows = t->ne[0];
            first_name = name;
        }
        else if (t->ne[0] != rows) {
            return zi_fail (err, errlen, ZI_ERR_SHAPE,
                            "input '%s': %" PRId64 " rows, but "
                            "input '%s' has %" PRId64 " (dimension 0 is the batch)",
                            name, t->ne[0], first_name, rows);
        }
    }
    if (rows < 1) {
        return zi_fail (err, errlen, ZI_ERR_SHAPE, "input '%s': 0 rows (a request needs "
                        "at least one)", first_name);
    }
    if ((int64_t) reqs[0].count != rows) {
        return zi_fail (err, errlen, ZI_ERR_SHAPE,
                        "request %" PRIu64 ": reqs says %" PRIu32
                        " rows, the inputs have %" PRId64,
                        reqs[0].id, reqs[0].count, rows);
    }
    *rows_p = rows;
    return ZI_OK;
}

//  =====================================================================
//  API

int
zi_batcher_add (zi_batcher_t *self, zi_msg_t **task_p, int64_t now_us, char *err,
                size_t errlen)
{
    assert (self);
    if (!task_p || !*task_p) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "no task");
    }
    zi_msg_t *task = *task_p;
    int64_t rows = 0;
    int rc = s_rows (task, &rows, err, errlen);
    if (rc) {
        return rc;
    }
    if (rows > self->micro_batch) {
        rc = s_split (self, task, rows, err, errlen);
        if (rc == ZI_OK) {
            self->stats.requests++;
            zi_msg_destroy (task_p);
        }
        return rc;
    }
    uint8_t prio = zi_msg_prio (task);
    if (self->max_delay_us == 0) {
        s_item_t item = {task, rows, now_us};
        *task_p = NULL;
        self->stats.requests++;
        s_emit_alone (self, &item, now_us);
        return ZI_OK;
    }
    size_t index = self->n_open;
    for (size_t i = 0; i < self->n_open; i++) {
        if (self->open[i]->prio == prio
            && s_stackable (self->open[i]->items[0].task, task)) {
            index = i;
            break;
        }
    }
    if (index < self->n_open && self->open[index]->rows + rows > self->max_batch) {
        s_flush (self, index, now_us, 0);
        index = self->n_open;
    }
    if (index == self->n_open) {
        s_batch_t *batch = (s_batch_t *) calloc (1, sizeof *batch);
        if (!batch) {
            return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        }
        if (self->n_open == ZI_BATCHER_MAX_OPEN) {
            s_flush (self, 0, now_us, 2);
        }
        batch->prio = prio;
        batch->first_us = now_us;
        index = self->n_open;
        self->open[self->n_open++] = batch;
    }
    s_batch_t *batch = self->open[index];
    if (batch->n_items == batch->cap_items) {
        size_t cap = batch->cap_items ? batch->cap_items * 2 : 4;
        s_item_t *items = (s_item_t *) realloc (batch->items, cap * sizeof *items);
        if (!items) {
            if (batch->n_items == 0) {
                s_batch_destroy (&self->open[index]);
                self->n_open--;
            }
            return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        }
        batch->items = items;
        batch->cap_items = cap;
    }
    batch->items[batch->n_items++] = (s_item_t) {task, rows, now_us};
    batch->rows += rows;
    self->queued++;
    self->stats.requests++;
    *task_p = NULL;
    if (batch->rows >= self->max_batch) {
        s_flush (self, index, now_us, 0);
    }
    return ZI_OK;
}

size_t
zi_batcher_expire (zi_batcher_t *self, int64_t now_us)
{
    size_t flushed = 0;
    for (size_t i = 0; i < self->n_open;) {
        if (now_us - self->open[i]->first_us >= self->max_delay_us) {
            s_flush (self, i, now_us, 1);
            flushed++;
        }
        else {
            i++;
        }
    }
    return flushed;
}

size_t
zi_batcher_flush (zi_batcher_t *self, int64_t now_us)
{
    size_t flushed = self->n_open;
    while (self->n_open > 0) {
        s_flush (self, 0, now_us, 2);
    }
    return flushed;
}

void
zi_batcher_set_credit (zi_batcher_t *self, int64_t credit, uint64_t grant)
{
    assert (self);
    if (credit < 0) {
        self->free_slots = -1;
        return;
    }
    if (grant == 0) {
        self->free_slots = credit;
        return;
    }
    //  Unsigned arithmetic wraps consistently; the difference is what
    //  matters. More than credit free means our count and the broker's
    //  are not aligned (first report, a restarted partition or broker,
    //  other partition replicas' TASKs): re-anchor at credit.
    int64_t slots = (int64_t) (grant - self->emitted - self->offset);
    if (!self->anchored || slots > credit) {
        self->offset = grant - self->emitted - (uint64_t) credit;
        self->anchored = true;
        slots = credit;
    }
    self->free_slots = slots > 0 ? slots : 0;
}

size_t
zi_batcher_dispatch (zi_batcher_t *self, int64_t now_us)
{
    assert (self);
    size_t flushed = 0;
    while (self->n_open > 0 && self->free_slots > 0) {
        s_flush (self, 0, now_us, 3);
        flushed++;
    }
    return flushed;
}

int64_t
zi_batcher_timeout_us (const zi_batcher_t *self, int64_t now_us)
{
    int64_t best = -1;
    for (size_t i = 0; i < self->n_open; i++) {
        int64_t due = self->open[i]->first_us + self->max_delay_us - now_us;
        due = due < 0 ? 0 : due;
        best = best < 0 || due < best ? due : best;
    }
    return best;
}

zi_msg_t *
zi_batcher_next (zi_batcher_t *self)
{
    return (zi_msg_t *) zlist_pop (self->out);
}

size_t
zi_batcher_queued (const zi_batcher_t *self)
{
    return self->queued;
}

size_t
zi_batcher_open (const zi_batcher_t *self)
{
    return self->n_open;
}

void
zi_batcher_stats (const zi_batcher_t *self, zi_batcher_stats_t *stats)
{
    *stats = self->stats;
}
