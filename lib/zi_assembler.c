/*  zi_assembler.c - reassembly, un-coalescing and post-processing of the
    aggregate stage; see zi_assembler.h.

    State: `pending` maps a rid (as a decimal string: CZMQ's hash wants
    string keys) to the micro-batches received so far, sorted by mb;
    `order` lists the same requests by arrival of their first micro-batch,
    so expiry only looks at its head. `recent` remembers finished rids
    (answered, refused or expired) until `until_us`, in `recent_order`
    (FIFO; every entry lives equally long, so the head expires first).
*/
#include "zi_assembler.h"

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "zi_log.h"
#include "zi_transform.h"

typedef struct {
    uint32_t mb;
    zi_msg_t *task;             //  owned
} s_part_t;

typedef struct {
    uint64_t rid;
    uint32_t nmb;
    int64_t first_us;           //  arrival of its first micro-batch
    s_part_t *parts;            //  sorted by mb, no duplicates
    size_t n_parts;
    size_t cap_parts;
    void *handle;               //  in order
} s_req_t;

typedef struct {
    uint64_t rid;
    int64_t until_us;
} s_recent_t;

struct zi_assembler {
    const zi_plan_io_t *post;   //  borrowed
    size_t n_post;
    size_t queue_limit;
    int64_t expiry_us;
    size_t recent_max;
    zhashx_t *pending;          //  rid -> s_req_t * (owned by us, not the hash)
    zlistx_t *order;            //  s_req_t *, oldest first
    zhashx_t *recent;           //  rid -> s_recent_t * (owned by the hash)
    zlist_t *recent_order;      //  s_recent_t *, oldest first (borrowed)
    zlist_t *out;               //  zi_msg_t *, FIFO
    zi_assembler_stats_t stats;
};

#define S_KEY_LEN 24

static char *
s_key (char *buf, uint64_t rid)
{
    snprintf (buf, S_KEY_LEN, "%" PRIu64, rid);
    return buf;
}

static void
s_free_item (void **item)
{
    free (*item);
    *item = NULL;
}

static void
s_req_destroy (s_req_t **req_p)
{
    s_req_t *req = *req_p;
    if (!req) {
        return;
    }
    for (size_t i = 0; i < req->n_parts; i++) {
        zi_msg_destroy (&req->parts[i].task);
    }
    free (req->parts);
    free (req);
    *req_p = NULL;
}

zi_assembler_t *
zi_assembler_new (const zi_plan_io_t *post, size_t n_post, size_t queue_limit,
                  int64_t expiry_us)
{
    if (queue_limit < 1 || expiry_us < 1 || (n_post && !post)) {
        return NULL;
    }
    zi_assembler_t *self = (zi_assembler_t *) calloc (1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->post = post;
    self->n_post = n_post;
    self->queue_limit = queue_limit;
    self->expiry_us = expiry_us;
    self->recent_max = queue_limit < ZI_ASSEMBLER_RECENT_MAX / 4
                           ? queue_limit * 4
                           : ZI_ASSEMBLER_RECENT_MAX;
    self->recent_max = self->recent_max < 1024 ? 1024 : self->recent_max;
    self->pending = zhashx_new ();
    self->order = zlistx_new ();
    self->recent = zhashx_new ();
    self->recent_order = zlist_new ();
    self->out = zlist_new ();
    if (!self->pending || !self->order || !self->recent || !self->recent_order
        || !self->out) {
        zi_assembler_destroy (&self);
        return NULL;
    }
    zhashx_set_destructor (self->recent, s_free_item);
    return self;
}

void
zi_assembler_destroy (zi_assembler_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zi_assembler_t *self = *self_p;
    if (self->order) {
        s_req_t *req;
        while ((req = (s_req_t *) zlistx_detach (self->order, NULL))) {
            s_req_destroy (&req);
        }
        zlistx_destroy (&self->order);
    }
    zhashx_destroy (&self->pending);
    zlist_destroy (&self->recent_order);
    zhashx_destroy (&self->recent);
    if (self->out) {
        zi_msg_t *msg;
        while ((msg = (zi_msg_t *) zlist_pop (self->out))) {
            zi_msg_destroy (&msg);
        }
        zlist_destroy (&self->out);
    }
    free (self);
    *self_p = NULL;
}

//  =====================================================================
//  Bookkeeping

static bool
s_is_recent (zi_assembler_t *self, uint64_t rid)
{
    char key[S_KEY_LEN];
    return zhashx_lookup (self->recent, s_key (key, rid)) != NULL;
}

static void
s_forget_oldest (zi_assembler_t *self)
{
    s_recent_t *old = (s_recent_t *) zlist_pop (self->recent_order);
    if (old) {
        char key[S_KEY_LEN];
        zhashx_delete (self->recent, s_key (key, old->rid));    //  frees old
    }
}

//  Remember that rid is finished, so its late micro-batches are dropped.
static void
s_remember (zi_assembler_t *self, uint64_t rid, int64_t now_us)
{
    char key[S_KEY_LEN];
    if (zhashx_lookup (self->recent, s_key (key, rid))) {
        return;
    }
    while (zlist_size (self->recent_order) >= self->recent_max) {
        s_forget_oldest (self);
    }
    s_recent_t *entry = (s_recent_t *) malloc (sizeof *entry);
    if (!entry) {
        return;                 //  only duplicates detection is lost
    }
    entry->rid = rid;
    entry->until_us = now_us + self->expiry_us;
    if (zhashx_insert (self->recent, key, entry)) {
        free (entry);
        return;
    }
    if (zlist_append (self->recent_order, entry)) {
        zhashx_delete (self->recent, key);
    }
}

static void
s_emit (zi_assembler_t *self, zi_msg_t **msg_p)
{
    if (zlist_append (self->out, *msg_p)) {
        zi_log_error ("AGG-NOMEM", "out of memory: an answer is lost");
        zi_msg_destroy (msg_p);
    }
    *msg_p = NULL;
}

static void
s_error (zi_assembler_t *self, uint64_t rid, zi_code_t code, const char *reason,
         int64_t now_us)
{
    zi_log_warn ("AGG-ERROR", "request %" PRIu64 ": %s: %s", rid, zi_code_name (code),
                 reason);
    zi_msg_t *msg = zi_msg_new_error (code, reason);
    if (msg) {
        zi_msg_set_id (msg, rid);
        self->stats.errors++;
        s_emit (self, &msg);
    }
    s_remember (self, rid, now_us);
}

//  Remove a pending request from the tables (the caller destroys it).
static void
s_unlink (zi_assembler_t *self, s_req_t *req)
{
    char key[S_KEY_LEN];
    zhashx_delete (self->pending, s_key (key, req->rid));
    zlistx_detach (self->order, req->handle);
    req->handle = NULL;
}

//  =====================================================================
//  Replies

//  The post-process declaration of an output, or NULL.
static const zi_plan_io_t *
s_post_for (const zi_assembler_t *self, const char *name)
{
    for (size_t i = 0; i < self->n_post; i++) {
        if (self->post[i].tensor.name && strcmp (self->post[i].tensor.name, name) == 0) {
            return &self->post[i];
        }
    }
    return NULL;
}

//  Make the REPLY of rid from its n outputs and queue it (or an ERROR).
//  tensors[i] is taken (set to NULL) when `take` and it can be moved.
static void
s_reply (zi_assembler_t *self, uint64_t rid, const char **names, zi_tensor_t **tensors,
         size_t n, bool take, int64_t now_us)
{
    char err[512] = "";
    int rc = ZI_OK;
    for (size_t d = 0; rc == ZI_OK && d < self->n_post; d++) {
        bool found = false;
        for (size_t i = 0; !found && i < n; i++) {
            found = strcmp (names[i], self->post[d].tensor.name) == 0;
        }
        if (!found) {
            rc = zi_fail (err, sizeof err, ZI_ERR_NOTFOUND, "output '%s': the aggregate "
                          "stage post-processes it, but the task does not carry it",
                          self->post[d].tensor.name);
        }
    }
    zi_msg_t *reply = rc ? NULL : zi_msg_new (ZI_CMD_REPLY);
    if (!rc && !reply) {
        rc = zi_fail (err, sizeof err, ZI_ERR_NOMEM, "out of memory");
    }
    if (reply) {
        zi_msg_set_id (reply, rid);
    }
    for (size_t i = 0; rc == ZI_OK && i < n; i++) {
        const zi_plan_io_t *io = s_post_for (self, names[i]);
        if (io && io->n_ops > 0) {
            zi_tensor_t *t = NULL, *extra = NULL;
            rc = zi_transform_post (io, tensors[i], &t, &extra, err, sizeof err);
            if (rc == ZI_OK && zi_msg_add_tensor (reply, names[i], &t)) {
                rc = zi_fail (err, sizeof err, ZI_ERR_LIMIT, "output '%s': cannot add it "
                              "to the reply", names[i]);
            }
            if (rc == ZI_OK && extra) {
                char vname[ZI_MSG_MAX_NAME + 16];
                snprintf (vname, sizeof vname, "%s.values", names[i]);
                if (zi_msg_add_tensor (reply, vname, &extra)) {
                    rc = zi_fail (err, sizeof err, ZI_ERR_LIMIT,
                                  "output '%s': cannot add "
                                  "'%s' to the reply",
                                  names[i], vname);
                }
            }
            zi_tensor_destroy (&t);
            zi_tensor_destroy (&extra);
        }
        else if (take) {
            if (zi_msg_add_tensor (reply, names[i], &tensors[i])) {
                rc = zi_fail (err, sizeof err, ZI_ERR_LIMIT, "output '%s': cannot add it "
                              "to the reply", names[i]);
            }
        }
        else if (zi_msg_add_tensor_copy (reply, names[i], tensors[i])) {
            rc = zi_fail (err, sizeof err, ZI_ERR_NOMEM,
                          "output '%s': cannot add it to the "
                          "reply",
                          names[i]);
        }
    }
    if (rc) {
        zi_msg_destroy (&reply);
        //  Out of memory is worth a retry; anything else here is a plan or
        //  model that does not match what the pipeline computed.
        s_error (self, rid, rc == ZI_ERR_NOMEM ? ZI_CODE_BUSY : ZI_CODE_INTERNAL, err,
                 now_us);
        return;
    }
    if (zi_log_get_level () <= ZI_LOG_DEBUG) {
        char summary[256];
        zi_log_debug ("AGG-REPLY", "%s", zi_msg_summary (reply, summary, sizeof summary));
    }
    self->stats.replies++;
    s_emit (self, &reply);
    s_remember (self, rid, now_us);
}

//  A coalesced task (nmb = 1): one REPLY per entry, rows cut in order.
static void
s_uncoalesce (zi_assembler_t *self, const zi_msg_t *task, int64_t now_us)
{
    size_t nreqs = 0;
    const zi_msg_req_t *reqs = zi_msg_reqs (task, &nreqs);
    size_t n = zi_msg_tensor_count (task);
    int64_t total = 0;
    for (size_t k = 0; k < nreqs; k++) {
        total += reqs[k].count;
    }
    char err[512] = "";
    for (size_t i = 0; i < n && !*err; i++) {
        const zi_tensor_t *t = zi_msg_tensor (task, i);
        if (t->rank < 1 || t->ne[0] != total) {
            char shape[96];
            snprintf (err, sizeof err,
                      "output '%s' is %s%s, but the task's reqs hold %" PRId64 " rows",
                      zi_msg_tensor_name (task, i), zi_dtype_name (t->dtype),
                      zi_tensor_shape_str (t, shape, sizeof shape), total);
        }
    }
    const char *names[ZI_MSG_MAX_TENSORS];
    zi_tensor_t views[ZI_MSG_MAX_TENSORS];
    zi_tensor_t *ptrs[ZI_MSG_MAX_TENSORS];
    int64_t offset = 0;
    for (size_t k = 0; k < nreqs; offset += reqs[k].count, k++) {
        uint64_t rid = reqs[k].id;
        char key[S_KEY_LEN];
        if (s_is_recent (self, rid) || zhashx_lookup (self->pending, s_key (key, rid))) {
            self->stats.duplicates++;
            zi_log_debug ("AGG-DUPLICATE", "request %" PRIu64 ": already answered", rid);
            continue;
        }
        if (*err) {
            s_error (self, rid, ZI_CODE_INTERNAL, err, now_us);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            names[i] = zi_msg_tensor_name (task, i);
            //  views[i] (count, ...): rows [offset, offset+count) of output i
            zi_tensor_slice_rows (zi_msg_tensor (task, i), offset, reqs[k].count,
                                  &views[i]);
            ptrs[i] = &views[i];
        }
        s_reply (self, rid, names, ptrs, n, false, now_us);
    }
}

//  All micro-batches of req are in: concatenate in mb order and reply.
static void
s_complete (zi_assembler_t *self, s_req_t *req, int64_t now_us)
{
    const zi_msg_t *first = req->parts[0].task;
    size_t n = zi_msg_tensor_count (first);
    char err[512] = "";
    int64_t rows = 0;
    //  Every part must carry the same outputs, rows in place.
    for (size_t p = 0; p < req->n_parts && !*err; p++) {
        const zi_msg_t *task = req->parts[p].task;
        size_t nreqs = 0;
        const zi_msg_req_t *entry = zi_msg_reqs (task, &nreqs);
        if (entry->first != rows) {
            snprintf (err, sizeof err, "micro-batch %" PRIu32 " holds rows from %" PRIu32
                      ", but the micro-batches before it end at row %" PRId64,
                      req->parts[p].mb, entry->first, rows);
            break;
        }
        if (zi_msg_tensor_count (task) != n) {
            snprintf (err, sizeof err,
                      "micro-batch %" PRIu32 " has %zu outputs, "
                      "micro-batch 0 %zu",
                      req->parts[p].mb, zi_msg_tensor_count (task), n);
            break;
        }
        for (size_t i = 0; i < n && !*err; i++) {
            const char *name = zi_msg_tensor_name (first, i);
            const zi_tensor_t *a = zi_msg_tensor (first, i);
            const zi_tensor_t *t = zi_msg_tensor_find (task, name);
            bool same = t && t->dtype == a->dtype && t->rank == a->rank && t->rank >= 1
                        && t->ne[0] == entry->count;
            for (int d = 1; same && d < t->rank; d++) {
                same = t->ne[d] == a->ne[d];
            }
            if (!same) {
                char shape[96], want[96];
                int64_t dims[ZI_MAX_RANK];
                memcpy (dims, a->ne, sizeof dims);
                dims[0] = entry->count;
                snprintf (
                    err, sizeof err,
                    "micro-batch %" PRIu32 ": output '%s' is %s%s, "
                    "expected %s%s (as micro-batch %" PRIu32 ", for %" PRIu32 " rows)",
                    req->parts[p].mb, name, t ? zi_dtype_name (t->dtype) : "missing",
                    t ? zi_tensor_shape_str (t, shape, sizeof shape) : "",
                    zi_dtype_name (a->dtype),
                    zi_shape_str (a->rank, dims, want, sizeof want), req->parts[0].mb,
                    entry->count);
            }
        }
        rows += entry->count;
    }
    const char *names[ZI_MSG_MAX_TENSORS];
    zi_tensor_t *whole[ZI_MSG_MAX_TENSORS] = {NULL};
    for (size_t i = 0; i < n && !*err; i++) {
        names[i] = zi_msg_tensor_name (first, i);
        const zi_tensor_t *a = zi_msg_tensor (first, i);
        int64_t shape[ZI_MAX_RANK];
        memcpy (shape, a->ne, sizeof shape);
        shape[0] = rows;
        //  whole[i] (rows, ...): the micro-batches' rows in mb order
        whole[i] = zi_tensor_new (a->dtype, a->rank, shape);
        if (!whole[i]) {
            snprintf (err, sizeof err, "out of memory for output '%s'", names[i]);
            break;
        }
        size_t pos = 0;
        for (size_t p = 0; p < req->n_parts; p++) {
            const zi_tensor_t *src = zi_msg_tensor_find (req->parts[p].task, names[i]);
            zi_tensor_t *dense
                = zi_tensor_is_contiguous (src) ? NULL : zi_tensor_dup (src);
            if (dense) {
                src = dense;
            }
            if (zi_tensor_is_contiguous (src) && src->nbytes) {
                memcpy ((uint8_t *) whole[i]->data + pos, src->data, src->nbytes);
                pos += src->nbytes;
            }
            zi_tensor_destroy (&dense);
        }
        if (pos != whole[i]->nbytes) {
            snprintf (err, sizeof err, "out of memory for output '%s'", names[i]);
        }
    }
    if (*err) {
        s_error (self, req->rid,
                 strncmp (err, "out of memory", 13) == 0 ? ZI_CODE_BUSY
                                                         : ZI_CODE_INTERNAL,
                 err, now_us);
    }
    else {
        s_reply (self, req->rid, names, whole, n, true, now_us);
    }
    for (size_t i = 0; i < n; i++) {
        zi_tensor_destroy (&whole[i]);
    }
}

//  One micro-batch of a split request.
static void
s_micro_batch (zi_assembler_t *self, zi_msg_t **task_p, int64_t now_us)
{
    zi_msg_t *task = *task_p;
    size_t nreqs = 0;
    const zi_msg_req_t *entry = zi_msg_reqs (task, &nreqs);
    uint64_t rid = entry->id;
    uint32_t mb = zi_msg_mb (task), nmb = zi_msg_nmb (task);
    if (s_is_recent (self, rid)) {
        self->stats.duplicates++;
        zi_log_debug ("AGG-DUPLICATE", "request %" PRIu64 ": micro-batch %" PRIu32
                      " after the request was finished", rid, mb);
        zi_msg_destroy (task_p);
        return;
    }
    char key[S_KEY_LEN];
    s_req_t *req = (s_req_t *) zhashx_lookup (self->pending, s_key (key, rid));
    if (!req) {
        if (zhashx_size (self->pending) >= self->queue_limit) {
            char reason[128];
            snprintf (reason, sizeof reason, "aggregator full: %zu requests being "
                      "reassembled", self->queue_limit);
            self->stats.busy++;
            s_error (self, rid, ZI_CODE_BUSY, reason, now_us);
            zi_msg_destroy (task_p);
            return;
        }
        req = (s_req_t *) calloc (1, sizeof *req);
        if (req) {
            req->rid = rid;
            req->nmb = nmb;
            req->first_us = now_us;
            req->handle = zlistx_add_end (self->order, req);
        }
        if (!req || !req->handle || zhashx_insert (self->pending, key, req)) {
            if (req && req->handle) {
                zlistx_detach (self->order, req->handle);
            }
            s_req_destroy (&req);
            s_error (self, rid, ZI_CODE_BUSY, "out of memory", now_us);
            zi_msg_destroy (task_p);
            return;
        }
    }
    if (req->nmb != nmb) {
        char reason[160];
        snprintf (reason, sizeof reason, "micro-batch %" PRIu32 " says %" PRIu32
                  " micro-batches, an earlier one %" PRIu32, mb, nmb, req->nmb);
        s_unlink (self, req);
        s_req_destroy (&req);
        s_error (self, rid, ZI_CODE_INTERNAL, reason, now_us);
        zi_msg_destroy (task_p);
        return;
    }
    //  Insert sorted by mb; they mostly arrive in order, so search from
    //  the end.
    size_t at = req->n_parts;
    while (at > 0 && req->parts[at - 1].mb > mb) {
        at--;
    }
    if (at > 0 && req->parts[at - 1].mb == mb) {
        self->stats.duplicates++;
        zi_log_debug ("AGG-DUPLICATE", "request %" PRIu64 ": micro-batch %" PRIu32
                      " again", rid, mb);
        zi_msg_destroy (task_p);
        return;
    }
    if (req->n_parts == req->cap_parts) {
        size_t cap = req->cap_parts ? req->cap_parts * 2 : 4;
        cap = cap > nmb ? nmb : cap;
        s_part_t *parts = (s_part_t *) realloc (req->parts, cap * sizeof *parts);
        if (!parts) {
            s_unlink (self, req);
            s_req_destroy (&req);
            s_error (self, rid, ZI_CODE_BUSY, "out of memory", now_us);
            zi_msg_destroy (task_p);
            return;
        }
        req->parts = parts;
        req->cap_parts = cap;
    }
    memmove (&req->parts[at + 1], &req->parts[at],
             (req->n_parts - at) * sizeof *req->parts);
    req->parts[at] = (s_part_t) {mb, task};
    req->n_parts++;
    *task_p = NULL;
    if (req->n_parts == req->nmb) {
        s_unlink (self, req);
        s_complete (self, req, now_us);
        s_req_destroy (&req);
    }
}

//  =====================================================================
//  API

int
zi_assembler_add (zi_assembler_t *self, zi_msg_t **task_p, int64_t now_us)
{
    assert (self);
    if (!task_p || !*task_p) {
        return ZI_ERR_INVALID;
    }
    self->stats.tasks++;
    size_t nreqs = 0;
    zi_msg_reqs (*task_p, &nreqs);
    if (zi_msg_cmd (*task_p) != ZI_CMD_TASK || nreqs == 0) {
        self->stats.rejected++;
        zi_log_warn ("AGG-UNEXPECTED", "dropping a %s: the aggregator takes TASKs",
                     zi_cmd_name (zi_msg_cmd (*task_p)));
        zi_msg_destroy (task_p);
        return ZI_ERR_INVALID;
    }
    if (zi_msg_nmb (*task_p) <= 1) {
        s_uncoalesce (self, *task_p, now_us);
        zi_msg_destroy (task_p);
    }
    else if (nreqs != 1) {
        //  The decoder refuses this already; a task built in memory may not.
        self->stats.rejected++;
        zi_msg_destroy (task_p);
        return ZI_ERR_INVALID;
    }
    else {
        s_micro_batch (self, task_p, now_us);
    }
    return ZI_OK;
}

size_t
zi_assembler_expire (zi_assembler_t *self, int64_t now_us)
{
    size_t dropped = 0;
    s_req_t *req;
    while ((req = (s_req_t *) zlistx_first (self->order))
           && now_us - req->first_us >= self->expiry_us) {
        zi_log_warn ("AGG-EXPIRED",
                     "request %" PRIu64 ": %zu of %" PRIu32 " micro-batches "
                     "after %" PRId64 " ms; dropped",
                     req->rid, req->n_parts, req->nmb, (now_us - req->first_us) / 1000);
        s_unlink (self, req);
        s_remember (self, req->rid, now_us);
        s_req_destroy (&req);
        self->stats.expired++;
        dropped++;
    }
    s_recent_t *old;
    while ((old = (s_recent_t *) zlist_first (self->recent_order))
           && old->until_us <= now_us) {
        s_forget_oldest (self);
    }
    return dropped;
}

int64_t
zi_assembler_timeout_us (const zi_assembler_t *self, int64_t now_us)
{
    s_req_t *req = (s_req_t *) zlistx_head (self->order);
    if (!req) {
        return -1;
    }
    int64_t due = req->first_us + self->expiry_us - now_us;
    return due < 0 ? 0 : due;
}

zi_msg_t *
zi_assembler_next (zi_assembler_t *self)
{
    return (zi_msg_t *) zlist_pop (self->out);
}

size_t
zi_assembler_pending (const zi_assembler_t *self)
{
    return zhashx_size (self->pending);
}

void
zi_assembler_stats (const zi_assembler_t *self, zi_assembler_stats_t *stats)
{
    *stats = self->stats;
}
