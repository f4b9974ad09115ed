/*  zi_worker.c - the exec worker; see zi_worker.h.

    Start-up, in order:
        1. find the replica and its segment in the plan;
        2. check the model file's sha256 (when the plan has one), load it,
           check the node count;
        3. work out the dtype and shape each segment input must have (the
           model declares them for its own inputs, but usually not for the
           tensors that cross a cut: those are inferred by planning the
           nodes before the segment for batch 1 and batch 2, a dimension
           that differs being the batch one);
           a cut tensor whose dim 0 does not follow the batch (a weight, a
           shape) is refused: the broker could not move it with its
           micro-batch (zinfer plan never cuts there);
        4. drop every constant the segment's nodes do not read;
        5. build the executor and check its inputs and outputs against the
           plan's segment (this also proves step 4 kept what is read: a
           dropped weight would show up as an unexpected input).
*/
#include "zi_worker.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "zi_blas.h"
#include "zi_exec.h"
#include "zi_log.h"
#include "zi_onnx.h"
#include "zi_security.h"
#include "zi_shm.h"
#include "zi_split.h"

//  How long a leaving worker waits for the broker to confirm it has read
//  the DISCONNECT, and the linger it falls back on (see s_leave).
#define S_LEAVE_WAIT_MS 500
#define S_LEAVE_LINGER_MS 200

//  The longest a loop iteration blocks, so a signal is noticed in time.
#define S_POLL_MAX_MS 100

//  What a segment input must look like; dtype UNDEFINED / rank -1 / a -1
//  dimension mean "anything".
typedef struct {
    zi_dtype_t dtype;
    int rank;
    int64_t shape[ZI_MAX_RANK];
} s_expect_t;

struct zi_worker {
    const zi_plan_t *plan;                  //  borrowed
    const zi_plan_segment_t *segment;       //  inside plan
    const zi_plan_replica_t *replica;       //  inside plan
    int seg;                                //  segment index
    zi_graph_t *graph;
    zi_exec_t *exec;
    int n_in;
    s_expect_t *expect;                     //  per executor input
    int n_out;
    int *out_exec;                          //  plan output k -> executor output
    size_t weight_bytes;
    size_t model_weight_bytes;
    //  Serving
    zsock_t *sock;
    int64_t interval;                       //  heartbeat interval, ms
    int64_t liveness;                       //  intervals of silence = lost
    int64_t last_sent;                      //  zclock_mono of the last send
    int64_t last_heard;                     //  ... of the last message received
    int64_t last_ready;                     //  ... of the last READY
    int64_t ready_due;                      //  READY to send at, or 0
    int64_t grace;                          //  reconnect backoff, 0 after a good exchange
    uint64_t tasks_done;
    uint64_t tasks_rejected;
    uint64_t tasks_failed;
    //  Shared memory (zi_shm.h, broker.shm_bytes, ipc plans only): refs
    //  accepted from the broker, and this worker's arena for the cut
    //  tensors it hands on (not for the last segment).
    bool shm_in;
    zi_shm_arena_t *arena;
    bool *out_shm;                          //  per plan output: a cut tensor
    //  This task's blocks, per executor output: the executor computes a
    //  cut tensor straight into one (s_out_alloc), the RESULT refers to it.
    void *out_block[ZI_MSG_MAX_TENSORS];
    zi_shm_ref_t out_ref[ZI_MSG_MAX_TENSORS];
    //  The blocks the last RESULT refers to: released here if it cannot
    //  be sent (the broker, which releases them otherwise, never sees it).
    zi_shm_ref_t sent_ref[ZI_MSG_MAX_TENSORS];
    int n_sent_ref;
};

//  The executor asks where output i goes: a cut tensor into a block of
//  this worker's arena (NULL when it is full: then inline).
static void *
s_out_alloc (void *arg, int i, size_t nbytes)
{
    zi_worker_t *self = (zi_worker_t *) arg;
    if (i < 0 || i >= ZI_MSG_MAX_TENSORS || self->out_block[i]) {
        return NULL;
    }
    for (int k = 0; k < self->n_out; k++) {
        if (self->out_exec[k] == i && self->out_shm[k]) {
            self->out_block[i] = zi_shm_alloc (self->arena, nbytes, &self->out_ref[i]);
            return self->out_block[i];
        }
    }
    return NULL;
}

//  Give back the blocks of a task that will not refer to them.
static void
s_release_blocks (zi_worker_t *self)
{
    for (int i = 0; i < ZI_MSG_MAX_TENSORS; i++) {
        if (self->out_block[i]) {
            zi_shm_release (&self->out_ref[i]);
            self->out_block[i] = NULL;
        }
    }
}

//  -------------------------------------------------------------------------
//  SHA-256 (FIPS 180-4). Small and self-contained: the model check is the
//  only user, and it is not worth a crypto library dependency.

typedef struct {
    uint32_t h[8];
    uint64_t len;               //  bytes hashed
    uint8_t buf[64];
    size_t nbuf;
} s_sha256_t;

static const uint32_t s_sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define S_ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void
s_sha256_block (uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++) {
        w[i] = (uint32_t) p[4 * i] << 24 | (uint32_t) p[4 * i + 1] << 16
               | (uint32_t) p[4 * i + 2] << 8 | (uint32_t) p[4 * i + 3];
    }
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = S_ROR (w[i - 15], 7) ^ S_ROR (w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = S_ROR (w[i - 2], 17) ^ S_ROR (w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6],
             hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (S_ROR (e, 6) ^ S_ROR (e, 11) ^ S_ROR (e, 25))
                      + ((e & f) ^ (~e & g)) + s_sha256_k[i] + w[i];
        uint32_t t2 = (S_ROR (a, 2) ^ S_ROR (a, 13) ^ S_ROR (a, 22))
                      + ((a & b) ^ (a & c) ^ (b & c));
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

static void
s_sha256_init (s_sha256_t *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy (s->h, h0, sizeof h0);
    s->len = 0;
    s->nbuf = 0;
}

static void
s_sha256_update (s_sha256_t *s, const uint8_t *p, size_t n)
{
    s->len += n;
    if (s->nbuf) {
        size_t take = 64 - s->nbuf < n ? 64 - s->nbuf : n;
        memcpy (s->buf + s->nbuf, p, take);
        s->nbuf += take;
        p += take;
        n -= take;
        if (s->nbuf == 64) {
            s_sha256_block (s->h, s->buf);
            s->nbuf = 0;
        }
    }
    for (; n >= 64; p += 64, n -= 64) {
        s_sha256_block (s->h, p);
    }
    memcpy (s->buf, p, n);
    s->nbuf += n;
}

static void
s_sha256_final (s_sha256_t *s, char hex[65])
{
    uint64_t bits = s->len * 8;
    uint8_t pad[72] = {0x80};
    size_t npad = (s->nbuf < 56 ? 56 : 120) - s->nbuf;
    for (int i = 0; i < 8; i++) {
        pad[npad + (size_t) i] = (uint8_t) (bits >> (56 - 8 * i));
    }
    s_sha256_update (s, pad, npad + 8);
    for (int i = 0; i < 8; i++) {
        snprintf (hex + 8 * i, 9, "%08x", s->h[i]);
    }
    hex[64] = 0;
}

int
zi_worker_file_sha256 (const char *path, char hex[65], char *err, size_t errlen)
{
    FILE *file = path ? fopen (path, "rb") : NULL;
    if (!file) {
        return zi_fail (err, errlen, ZI_ERR_IO, "%s: %s", path ? path : "(null)",
                        strerror (errno));
    }
    s_sha256_t sha;
    s_sha256_init (&sha);
    uint8_t *buf = (uint8_t *) malloc (1 << 20);
    if (!buf) {
        fclose (file);
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t n;
    while ((n = fread (buf, 1, 1 << 20, file)) > 0) {
        s_sha256_update (&sha, buf, n);
    }
    int rc = ferror (file) ? zi_fail (err, errlen, ZI_ERR_IO, "%s: read error", path) : 0;
    free (buf);
    fclose (file);
    if (rc == 0) {
        s_sha256_final (&sha, hex);
    }
    return rc;
}

//  -------------------------------------------------------------------------
//  Finding the replica

//  "s0r0, s0r1, s1r0" (the plan's exec replicas), for messages.
static void
s_exec_names (const zi_plan_t *plan, char *buf, size_t len)
{
    size_t pos = 0;
    buf[0] = 0;
    for (size_t s = 0; s < plan->n_segments; s++) {
        for (size_t r = 0; r < plan->segments[s].n_replicas && pos < len; r++) {
            pos += (size_t) snprintf (buf + pos, len - pos, "%s%s", pos ? ", " : "",
                                      plan->segments[s].replicas[r].name);
        }
    }
    if (pos == 0) {
        snprintf (buf, len, "none");
    }
}

const zi_plan_replica_t *
zi_worker_find_replica (const zi_plan_t *plan, const char *name,
                        const zi_plan_segment_t **segment_p, char *err, size_t errlen)
{
    if (!plan || !name) {
        zi_fail (err, errlen, ZI_ERR_INVALID, "no plan or no replica name");
        return NULL;
    }
    const zi_plan_segment_t *segment = NULL;
    const zi_plan_stage_t *stage = NULL;
    const zi_plan_replica_t *replica = zi_plan_find_replica (plan, name, &segment, &stage);
    char names[512];
    if (!replica || !segment) {
        s_exec_names (plan, names, sizeof names);
        if (replica && stage) {
            zi_fail (err, errlen, ZI_ERR_NOTFOUND,
                     "replica '%s' belongs to the %s stage, not to a segment; "
                     "zinfer-exec serves segments (exec replicas: %s)",
                     name, zi_plan_stage_kind_name (stage->kind), names);
        }
        else {
            zi_fail (err, errlen, ZI_ERR_NOTFOUND,
                     "no replica called '%s' in the plan (exec replicas: %s)", name,
                     names);
        }
        return NULL;
    }
    if (segment_p) {
        *segment_p = segment;
    }
    return replica;
}

//  -------------------------------------------------------------------------
//  Weights

//  True when a node in [first, last] reads value v.
static void
s_mark_read (const zi_graph_t *g, int first, int last, bool *read)
{
    for (int n = first; n <= last; n++) {
        const zi_node_t *node = &g->nodes[n];
        for (int k = 0; k < node->n_in; k++) {
            if (node->in[k] >= 0 && node->in[k] < g->n_values) {
                read[node->in[k]] = true;
            }
        }
    }
}

int
zi_worker_drop_weights (zi_graph_t *graph, int first, int last, size_t *kept,
                        size_t *total)
{
    if (!graph || first < 0 || last < first || last >= graph->n_nodes) {
        return ZI_ERR_INVALID;
    }
    bool *read = (bool *) calloc ((size_t) (graph->n_values ? graph->n_values : 1), 1);
    if (!read) {
        return ZI_ERR_NOMEM;
    }
    s_mark_read (graph, first, last, read);
    size_t keep_bytes = 0, all_bytes = 0;
    for (int v = 0; v < graph->n_values; v++) {
        zi_tensor_t *init = graph->values[v].init;
        if (!init) {
            continue;
        }
        all_bytes += init->nbytes;
        if (read[v]) {
            keep_bytes += init->nbytes;
        }
        else {
            zi_tensor_destroy (&graph->values[v].init);
        }
    }
    free (read);
#ifdef __GLIBC__
    //  Large weights were allocated with mmap and are already back with the
    //  system; this returns the freed heap ones too, so the resident size
    //  shows the segment, not the model.
    malloc_trim (0);
#endif
    if (kept) {
        *kept = keep_bytes;
    }
    if (total) {
        *total = all_bytes;
    }
    return ZI_OK;
}

//  -------------------------------------------------------------------------
//  What the segment's inputs must look like

static void
s_expect_unknown (s_expect_t *e)
{
    memset (e, 0, sizeof *e);
    e->dtype = ZI_DT_UNDEFINED;
    e->rank = -1;
}

//  "[?,784]" from an expectation (rank -1: "any").
static char *
s_expect_shape_str (const s_expect_t *e, char *buf, size_t len)
{
    if (e->rank < 0) {
        snprintf (buf, len, "any");
        return buf;
    }
    size_t pos = (size_t) snprintf (buf, len, "[");
    for (int i = 0; i < e->rank && pos < len; i++) {
        if (e->shape[i] < 0) {
            pos += (size_t) snprintf (buf + pos, len - pos, "%s?", i ? "," : "");
        }
        else {
            pos += (size_t) snprintf (buf + pos, len - pos, "%s%" PRId64, i ? "," : "",
                                      e->shape[i]);
        }
    }
    if (pos < len) {
        snprintf (buf + pos, len - pos, "]");
    }
    return buf;
}

//  The model input called name as the plan declares it, or NULL.
static const zi_plan_tensor_t *
s_plan_model_input (const zi_plan_t *plan, const char *name)
{
    for (size_t i = 0; i < plan->model.n_inputs; i++) {
        if (plan->model.inputs[i].name && strcmp (plan->model.inputs[i].name, name) == 0) {
            return &plan->model.inputs[i];
        }
    }
    return NULL;
}

//  The declared type of a value: the model's own declaration, else (for a
//  model input) the plan's.
static void
s_expect_declared (const zi_plan_t *plan, const zi_value_t *v, s_expect_t *e)
{
    s_expect_unknown (e);
    e->dtype = v->dtype;
    if (v->rank >= 0 && v->rank <= ZI_MAX_RANK) {
        e->rank = v->rank;
        memcpy (e->shape, v->shape, sizeof e->shape);
    }
    const zi_plan_tensor_t *p = v->is_input ? s_plan_model_input (plan, v->name) : NULL;
    if (p && e->dtype == ZI_DT_UNDEFINED) {
        e->dtype = p->dtype;
    }
    if (p && e->rank < 0 && p->rank >= 0 && p->rank <= ZI_MAX_RANK) {
        e->rank = p->rank;
        memcpy (e->shape, p->shape, sizeof e->shape);
    }
}

//  Fill hint[v] for the values the segment [first, last] reads from before
//  it, by planning nodes [0, first-1] for batch 1 and batch 2 (dimensions
//  that differ become -1). Best effort: when a shape depends on run-time
//  values, or the model inputs' shapes are not declared, the hint stays
//  unknown and the engine's own checks are all there is.
static void
s_infer_cut_types (const zi_worker_t *self, int first, int last, s_expect_t *hint)
{
    const zi_graph_t *g = self->graph;
    if (first == 0) {
        return;
    }
    char err[512];
    zi_exec_t *prefix = zi_exec_new (g, 0, first - 1, NULL, err, sizeof err);
    if (!prefix) {
        zi_log_debug ("EXEC-INFER", "nodes 0..%d: %s", first - 1, err);
        return;
    }
    int n = zi_exec_n_inputs (prefix);
    zi_tensor_t *probe = (zi_tensor_t *) calloc ((size_t) (n ? n : 1), sizeof *probe);
    const zi_tensor_t **ins = (const zi_tensor_t **) calloc ((size_t) (n ? n : 1),
                                                             sizeof *ins);
    s_expect_t *first_pass = (s_expect_t *) calloc ((size_t) g->n_values, sizeof (s_expect_t));
    bool *wanted = (bool *) calloc ((size_t) g->n_values, 1);
    bool ok = probe && ins && first_pass && wanted;
    if (ok) {
        //  Only values the segment reads, does not produce, and that are
        //  not constants: what arrives in a TASK.
        s_mark_read (g, first, last, wanted);
        for (int n2 = first; n2 <= last; n2++) {
            for (int k = 0; k < g->nodes[n2].n_out; k++) {
                if (g->nodes[n2].out[k] >= 0) {
                    wanted[g->nodes[n2].out[k]] = false;
                }
            }
        }
        for (int v = 0; v < g->n_values; v++) {
            if (g->values[v].init) {
                wanted[v] = false;
            }
        }
    }
    for (int batch = 1; ok && batch <= 2; batch++) {
        for (int i = 0; ok && i < n; i++) {
            s_expect_t e;
            s_expect_declared (self->plan, zi_exec_input (prefix, i), &e);
            if (e.dtype == ZI_DT_UNDEFINED || e.rank < 0) {
                ok = false;
                break;
            }
            int64_t shape[ZI_MAX_RANK];
            for (int d = 0; d < e.rank; d++) {
                shape[d] = e.shape[d] < 0 ? batch : e.shape[d];
            }
            memset (&probe[i], 0, sizeof probe[i]);
            ok = zi_tensor_set_shape (&probe[i], e.dtype, e.rank, shape) == 0;
            ins[i] = &probe[i];
        }
        if (ok && zi_exec_prepare (prefix, ins, err, sizeof err)) {
            zi_log_debug ("EXEC-INFER", "nodes 0..%d: %s", first - 1, err);
            ok = false;
        }
        for (int v = 0; ok && v < g->n_values; v++) {
            if (!wanted[v]) {
                continue;
            }
            const zi_tensor_t *t = zi_exec_value (prefix, v);
            s_expect_t *e = batch == 1 ? &first_pass[v] : &hint[v];
            s_expect_unknown (e);
            if (t && t->rank >= 0 && zi_dtype_valid (t->dtype)) {
                e->dtype = t->dtype;
                e->rank = t->rank;
                memcpy (e->shape, t->ne, sizeof e->shape);
            }
            if (batch == 2) {
                const s_expect_t *a = &first_pass[v];
                if (a->rank != e->rank || a->dtype != e->dtype) {
                    s_expect_unknown (e);
                }
                for (int d = 0; d < e->rank; d++) {
                    if (a->shape[d] != e->shape[d]) {
                        e->shape[d] = -1;
                    }
                }
            }
        }
    }
    if (!ok) {
        for (int v = 0; v < g->n_values; v++) {
            s_expect_unknown (&hint[v]);
        }
    }
    free (wanted);
    free (first_pass);
    free (ins);
    free (probe);
    zi_exec_destroy (&prefix);
}

//  -------------------------------------------------------------------------
//  Start-up

//  "'a', 'b'" from a list of names, for messages; a list too long for
//  buf ends in "..." at a name boundary.
static void
s_join (char *buf, size_t len, char *const *names, size_t n)
{
    size_t pos = 0;
    buf[0] = 0;
    for (size_t i = 0; i < n; i++) {
        //  Room for this name, its quotes and separator, and a final ", ...".
        if (pos + strlen (names[i]) + 4 + 5 >= len) {
            snprintf (buf + pos, len - pos, "%s...", i ? ", " : "");
            break;
        }
        pos += (size_t) snprintf (buf + pos, len - pos, "%s'%s'", i ? ", " : "", names[i]);
    }
    if (n == 0) {
        snprintf (buf, len, "none");
    }
}

//  Check that the plan's list equals the executor's (as sets, no
//  duplicates); fill map[k] = executor index of the plan's k-th name.
static int
s_check_io (zi_worker_t *self, const char *what, char *const *plan_names, size_t n_plan,
            int n_exec, const zi_value_t *(*get) (const zi_exec_t *, int), int *map,
            char *err, size_t errlen)
{
    const zi_plan_segment_t *s = self->segment;
    char listed[512], actual[512];
    char *exec_names[ZI_MSG_MAX_TENSORS + 1];
    int shown = n_exec < ZI_MSG_MAX_TENSORS ? n_exec : ZI_MSG_MAX_TENSORS;
    for (int i = 0; i < shown; i++) {
        exec_names[i] = get (self->exec, i)->name;
    }
    s_join (listed, sizeof listed, plan_names, n_plan);
    s_join (actual, sizeof actual, exec_names, (size_t) shown);
    if (n_exec > ZI_MSG_MAX_TENSORS) {
        return zi_fail (err, errlen, ZI_ERR_LIMIT,
                        "segment %d (nodes %" PRId64 "..%" PRId64 ") has %d %s, more than "
                        "the %d tensors a message can carry",
                        self->seg, s->first_node, s->last_node, n_exec, what,
                        ZI_MSG_MAX_TENSORS);
    }
    const char *verb = strcmp (what, "inputs") == 0 ? "read from earlier segments or "
                                                      "the model's inputs"
                                                    : "send on";
    for (size_t k = 0; k < n_plan; k++) {
        int found = -1;
        for (int i = 0; i < n_exec; i++) {
            if (strcmp (exec_names[i], plan_names[k]) == 0) {
                found = i;
            }
        }
        for (size_t j = 0; j < k && found >= 0; j++) {
            if (map[j] == found) {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "segment %d: the plan lists %s '%s' twice", self->seg,
                                what, plan_names[k]);
            }
        }
        if (found < 0) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "segment %d (nodes %" PRId64 "..%" PRId64 "): the plan's %s "
                            "[%s] differ from what the nodes %s [%s]: '%s' is not one",
                            self->seg, s->first_node, s->last_node, what, listed, verb,
                            actual, plan_names[k]);
        }
        map[k] = found;
    }
    for (int i = 0; i < n_exec; i++) {
        bool listed_i = false;
        for (size_t k = 0; k < n_plan; k++) {
            listed_i = listed_i || map[k] == i;
        }
        if (!listed_i) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "segment %d (nodes %" PRId64 "..%" PRId64 "): the plan's %s "
                            "[%s] differ from what the nodes %s [%s]: '%s' is missing "
                            "from the plan",
                            self->seg, s->first_node, s->last_node, what, listed, verb,
                            actual, exec_names[i]);
        }
    }
    return ZI_OK;
}

static zi_worker_t *
s_fail_new (zi_worker_t **self_p)
{
    zi_worker_destroy (self_p);
    return NULL;
}

zi_worker_t *
zi_worker_new (const zi_plan_t *plan, const char *name, char *err, size_t errlen)
{
    const zi_plan_segment_t *segment = NULL;
    const zi_plan_replica_t *replica =
        zi_worker_find_replica (plan, name, &segment, err, errlen);
    if (!replica) {
        return NULL;
    }
    zi_worker_t *self = (zi_worker_t *) calloc (1, sizeof *self);
    if (!self) {
        zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        return NULL;
    }
    self->plan = plan;
    self->segment = segment;
    self->replica = replica;
    self->seg = (int) (segment - plan->segments);

    char path[4096];
    if (!plan->model.path || zi_plan_path (plan, plan->model.path, path, sizeof path)) {
        zi_fail (err, errlen, ZI_ERR_INVALID, "model.path is missing or too long");
        return s_fail_new (&self);
    }
    if (plan->model.sha256) {
        char hex[65];
        if (zi_worker_file_sha256 (path, hex, err, errlen)) {
            return s_fail_new (&self);
        }
        if (strcmp (hex, plan->model.sha256) != 0) {
            zi_fail (err, errlen, ZI_ERR_MALFORMED,
                     "%s: sha256 is %s but the plan expects %s (model.sha256): this is "
                     "not the model the plan was made for",
                     path, hex, plan->model.sha256);
            return s_fail_new (&self);
        }
    }
    self->graph = zi_onnx_load (path, err, errlen);
    if (!self->graph) {
        return s_fail_new (&self);
    }
    zi_graph_t *g = self->graph;
    //  Layers the planner split across segments (model.splits): the node
    //  numbering of the segments is that of the split graph.
    if (plan->model.n_splits > 0) {
        char why[512];
        if (zi_split_apply_all (g, plan->model.splits, plan->model.n_splits, why,
                                sizeof why)) {
            zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: model.splits: %s", path, why);
            return s_fail_new (&self);
        }
    }
    if (g->n_nodes != plan->model.node_count) {
        zi_fail (err, errlen, ZI_ERR_MALFORMED,
                 "%s: the model has %d nodes but the plan says %" PRId64
                 " (model.node_count%s): the plan was made for another model",
                 path, g->n_nodes, plan->model.node_count,
                 plan->model.n_splits ? ", after its splits" : "");
        return s_fail_new (&self);
    }
    if (segment->first_node < 0 || segment->first_node > segment->last_node
        || segment->last_node >= g->n_nodes) {
        zi_fail (err, errlen, ZI_ERR_MALFORMED,
                 "segment %d: nodes %" PRId64 "..%" PRId64 " are not a range of the "
                 "model's %d nodes",
                 self->seg, segment->first_node, segment->last_node, g->n_nodes);
        return s_fail_new (&self);
    }
    int first = (int) segment->first_node, last = (int) segment->last_node;

    //  Types of the cut tensors, while the earlier segments' weights are
    //  still here to plan with.
    s_expect_t *hint = (s_expect_t *) calloc ((size_t) (g->n_values ? g->n_values : 1),
                                              sizeof *hint);
    if (!hint) {
        zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        return s_fail_new (&self);
    }
    for (int v = 0; v < g->n_values; v++) {
        s_expect_unknown (&hint[v]);
    }
    s_infer_cut_types (self, first, last, hint);

    zi_worker_drop_weights (g, first, last, &self->weight_bytes, &self->model_weight_bytes);

    int threads = replica->threads > 0 ? (int) replica->threads : 1;
    //  zi_exec_new sets OpenBLAS's thread count to fit its own pool.
    zi_exec_opts_t opts = {.nthreads = threads};
    char why[1024];
    self->exec = zi_exec_new (g, first, last, &opts, why, sizeof why);
    if (!self->exec) {
        zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "segment %d (nodes %d..%d): %s", self->seg,
                 first, last, why);
        free (hint);
        return s_fail_new (&self);
    }
    self->n_in = zi_exec_n_inputs (self->exec);
    self->n_out = zi_exec_n_outputs (self->exec);
    self->expect = (s_expect_t *) calloc ((size_t) self->n_in + 1, sizeof (s_expect_t));
    self->out_exec = (int *) calloc ((size_t) self->n_out + 1, sizeof (int));
    int *in_map = (int *) calloc ((size_t) segment->n_inputs + 1, sizeof (int));
    if (!self->expect || !self->out_exec || !in_map) {
        free (in_map);
        free (hint);
        zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        return s_fail_new (&self);
    }
    int rc = s_check_io (self, "inputs", segment->inputs, segment->n_inputs, self->n_in,
                         zi_exec_input, in_map, err, errlen);
    if (rc == ZI_OK) {
        rc = s_check_io (self, "outputs", segment->outputs, segment->n_outputs,
                         self->n_out, zi_exec_output, self->out_exec, err, errlen);
    }
    free (in_map);
    if (rc) {
        free (hint);
        return s_fail_new (&self);
    }
    //  Does the batch vary (a model input with a symbolic dim 0)? Then a
    //  cut tensor whose dim 0 stays the same at batch 1 and 2 has no batch
    //  axis: a weight, or a shape computed from the input.
    bool batch_varies = false;
    for (int i = 0; i < g->n_inputs; i++) {
        s_expect_t e;
        s_expect_declared (plan, &g->values[g->inputs[i]], &e);
        batch_varies |= e.rank >= 1 && e.shape[0] < 0;
    }
    for (int i = 0; i < self->n_in; i++) {
        const zi_value_t *v = zi_exec_input (self->exec, i);
        s_expect_t *e = &self->expect[i];
        s_expect_declared (plan, v, e);
        const s_expect_t *h = &hint[v - g->values];
        if (batch_varies && !v->is_input && h->rank >= 0 && (h->rank == 0 || h->shape[0] >= 0)) {
            //  The broker moves a cut tensor with its micro-batch and joins
            //  coalesced tasks along axis 0: this one cannot travel so.
            char shape[128];
            zi_fail (err, errlen, ZI_ERR_INVALID,
                     "segment %d (nodes %d..%d): input '%s' has no batch axis (%s %s for "
                     "every batch): a cut must not pass a weight or a shape tensor between "
                     "segments; make the plan again with `zinfer plan`, which cuts only "
                     "where every crossing tensor carries the batch",
                     self->seg, first, last, v->name, zi_dtype_name (h->dtype),
                     s_expect_shape_str (h, shape, sizeof shape));
            free (hint);
            return s_fail_new (&self);
        }
        if (e->dtype == ZI_DT_UNDEFINED) {
            e->dtype = h->dtype;
        }
        if (e->rank < 0) {
            e->rank = h->rank;
            memcpy (e->shape, h->shape, sizeof e->shape);
        }
    }
    free (hint);

    const char *work = plan->broker.endpoints[ZI_PLAN_EP_WORK].connect;
    if (plan->broker.shm_bytes > 0 && work && strncmp (work, "ipc://", 6) == 0) {
        self->shm_in = true;
        self->out_shm = (bool *) calloc ((size_t) self->n_out + 1, sizeof (bool));
        bool cut = false;
        for (size_t k = 0; self->out_shm && k < segment->n_outputs; k++) {
            bool model_out = false;
            for (size_t m = 0; m < plan->model.n_outputs; m++) {
                model_out |= strcmp (plan->model.outputs[m].name, segment->outputs[k]) == 0;
            }
            self->out_shm[k] = !model_out;
            cut |= !model_out;
        }
        char shm_why[256];
        if (cut && self->out_shm
            && !(self->arena = zi_shm_arena_new ((size_t) plan->broker.shm_bytes, shm_why,
                                                 sizeof shm_why))) {
            zi_log_warn ("EXEC-SHM", "no shared-memory arena, cut tensors go inline: %s",
                         shm_why);
        }
        if (self->arena) {
            zi_exec_set_output_alloc (self->exec, s_out_alloc, self);
        }
    }

    char ins[512], outs[512];
    s_join (ins, sizeof ins, segment->inputs, segment->n_inputs);
    s_join (outs, sizeof outs, segment->outputs, segment->n_outputs);
    double share = self->model_weight_bytes
                       ? 100.0 * (double) self->weight_bytes / (double) self->model_weight_bytes
                       : 100.0;
    //  The tensor lists go last: a log line is at most 1 KiB.
    zi_log_info ("EXEC-READY",
                 "segment %d, nodes %d..%d of %d, weights %zu/%zu bytes (%.1f%% of the "
                 "model's), BLAS core %s, %d thread%s, capacity %g, credit %" PRId64
                 ", inputs [%s], outputs [%s]",
                 self->seg, first, last, g->n_nodes, self->weight_bytes,
                 self->model_weight_bytes, share, zi_blas_corename (), threads,
                 threads == 1 ? "" : "s", replica->capacity, replica->credit, ins, outs);
    return self;
}

void
zi_worker_destroy (zi_worker_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zi_worker_t *self = *self_p;
    if (self->sock) {
        zsock_set_linger (self->sock, 0);
        zsock_destroy (&self->sock);
    }
    zi_exec_destroy (&self->exec);
    zi_graph_destroy (&self->graph);
    zi_shm_arena_destroy (&self->arena);
    free (self->out_shm);
    free (self->expect);
    free (self->out_exec);
    free (self);
    *self_p = NULL;
}

size_t
zi_worker_weight_bytes (const zi_worker_t *self)
{
    return self ? self->weight_bytes : 0;
}

size_t
zi_worker_model_weight_bytes (const zi_worker_t *self)
{
    return self ? self->model_weight_bytes : 0;
}

//  -------------------------------------------------------------------------
//  One task

static zi_msg_t *
s_error (bool has_id, uint64_t id, zi_code_t code, const char *reason)
{
    zi_msg_t *msg = zi_msg_new_error (code, reason);
    if (msg && has_id) {
        zi_msg_set_id (msg, id);
    }
    return msg;
}

//  Check a TASK's tensors against the segment's inputs. Returns 0 or
//  ZI_ERR_MALFORMED with the reason.
static int
s_validate (const zi_worker_t *self, const zi_msg_t *task, char *reason, size_t len)
{
    const zi_plan_segment_t *s = self->segment;
    char takes[512];
    s_join (takes, sizeof takes, s->inputs, s->n_inputs);
    size_t n = zi_msg_tensor_count (task);
    for (size_t i = 0; i < n; i++) {
        const char *name = zi_msg_tensor_name (task, i);
        bool known = false;
        for (int k = 0; k < self->n_in && !known; k++) {
            known = strcmp (zi_exec_input (self->exec, k)->name, name) == 0;
        }
        if (!known) {
            return zi_fail (reason, len, ZI_ERR_MALFORMED,
                            "tensor '%s' is not an input of segment %d (it takes %s)", name,
                            self->seg, takes);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp (zi_msg_tensor_name (task, j), name) == 0) {
                return zi_fail (reason, len, ZI_ERR_MALFORMED, "tensor '%s' is given twice",
                                name);
            }
        }
    }
    int batch_of = -1;          //  the first batched input
    for (int k = 0; k < self->n_in; k++) {
        const char *name = zi_exec_input (self->exec, k)->name;
        const zi_tensor_t *t = zi_msg_tensor_find (task, name);
        const s_expect_t *e = &self->expect[k];
        char got[128], want[128];
        if (!t) {
            return zi_fail (reason, len, ZI_ERR_MALFORMED,
                            "tensor '%s' is missing (segment %d takes %s)", name, self->seg,
                            takes);
        }
        if (e->dtype != ZI_DT_UNDEFINED && t->dtype != e->dtype) {
            return zi_fail (reason, len, ZI_ERR_MALFORMED,
                            "tensor '%s': dtype %s, segment %d expects %s", name,
                            zi_dtype_name (t->dtype), self->seg, zi_dtype_name (e->dtype));
        }
        bool ok = e->rank < 0 || t->rank == e->rank;
        for (int d = 0; ok && e->rank >= 0 && d < e->rank; d++) {
            ok = e->shape[d] < 0 || e->shape[d] == t->ne[d];
        }
        //  A tensor from an earlier segment always carries the batch axis
        //  (zinfer plan cuts nowhere else), even when its shape is unknown.
        bool is_cut = !zi_exec_input (self->exec, k)->is_input;
        if (ok && is_cut && e->rank < 0 && t->rank < 1) {
            ok = false;
        }
        if (!ok) {
            return zi_fail (reason, len, ZI_ERR_MALFORMED,
                            "tensor '%s': shape %s, segment %d expects %s (? = any size%s)",
                            name, zi_tensor_shape_str (t, got, sizeof got), self->seg,
                            s_expect_shape_str (e, want, sizeof want),
                            e->rank < 0 ? ", with the batch as dim 0" : "");
        }
        //  Every batched input of one task has the same batch.
        bool batched = (e->rank >= 1 && e->shape[0] < 0) || (is_cut && e->rank < 0);
        if (batched && batch_of < 0) {
            batch_of = k;
        }
        else if (batched) {
            const zi_tensor_t *b = zi_msg_tensor_find (task,
                                                       zi_exec_input (self->exec, batch_of)->name);
            if (b && b->ne[0] != t->ne[0]) {
                return zi_fail (reason, len, ZI_ERR_MALFORMED,
                                "tensor '%s': shape %s, batch %" PRId64 ", but tensor '%s' "
                                "has batch %" PRId64 " (segment %d takes one batch)", name,
                                zi_tensor_shape_str (t, got, sizeof got), t->ne[0],
                                zi_exec_input (self->exec, batch_of)->name, b->ne[0],
                                self->seg);
            }
        }
    }
    return ZI_OK;
}

zi_msg_t *
zi_worker_process (zi_worker_t *self, zi_msg_t **task_p)
{
    assert (self);
    assert (task_p);
    zi_msg_t *task = *task_p;
    *task_p = NULL;
    if (!task) {
        return NULL;
    }
    bool has_id = zi_msg_has (task, "id");
    uint64_t id = zi_msg_id (task);
    char reason[ZI_MSG_MAX_REASON];
    zi_msg_t *answer = NULL;
    if (zi_msg_cmd (task) != ZI_CMD_TASK) {
        snprintf (reason, sizeof reason, "%s is not a TASK", zi_cmd_name (zi_msg_cmd (task)));
        answer = s_error (has_id, id, ZI_CODE_BAD_REQUEST, reason);
    }
    else if (!has_id) {
        answer = s_error (false, 0, ZI_CODE_BAD_REQUEST,
                          "TASK without an id (required on the work link)");
    }
    else if (zi_msg_seg (task) != (uint32_t) self->seg) {
        snprintf (reason, sizeof reason,
                  "TASK for segment %" PRIu32 ", but worker '%s' serves segment %d",
                  zi_msg_seg (task), self->replica->name, self->seg);
        answer = s_error (true, id, ZI_CODE_BAD_REQUEST, reason);
    }
    else if (s_validate (self, task, reason, sizeof reason)) {
        answer = s_error (true, id, ZI_CODE_BAD_REQUEST, reason);
    }
    if (answer) {
        self->tasks_rejected++;
        zi_log_warn ("EXEC-TASK-REJECTED", "task %" PRIu64 ": %s", id, zi_msg_reason (answer));
        zi_msg_destroy (&task);
        return answer;
    }

    //  The tensors are views into the received frames: no copy on the way in.
    int n = (int) zi_msg_tensor_count (task);
    const char *names[ZI_MSG_MAX_TENSORS];
    const zi_tensor_t *ins[ZI_MSG_MAX_TENSORS];
    for (int i = 0; i < n; i++) {
        names[i] = zi_msg_tensor_name (task, (size_t) i);
        ins[i] = zi_msg_tensor (task, (size_t) i);
    }
    zi_tensor_t *outs[ZI_MSG_MAX_TENSORS] = {0};
    char why[ZI_MSG_MAX_REASON - 64];
    zi_log_debug ("EXEC-TASK-START", "task %" PRIu64 " attempt %" PRIu32 ": %d tensor%s",
                  id, zi_msg_attempt (task), n, n == 1 ? "" : "s");
    int64_t t0 = zclock_usecs ();
    int rc = zi_exec_run_named (self->exec, n, names, ins, outs, why, sizeof why);
    int64_t t1 = zclock_usecs ();
    if (rc) {
        s_release_blocks (self);
        self->tasks_failed++;
        snprintf (reason, sizeof reason, "segment %d: %s", self->seg, why);
        zi_log_warn ("EXEC-TASK-FAILED", "task %" PRIu64 ": %s", id, reason);
        zi_msg_destroy (&task);
        return s_error (true, id, ZI_CODE_INTERNAL, reason);
    }
    //  A frame over the broker's ZMQ_MAXMSGSIZE would make libzmq drop our
    //  whole connection; say so instead.
    int64_t max = self->plan->broker.max_message_bytes;
    for (int i = 0; i < self->n_out; i++) {
        bool in_shm = self->out_block[i] && outs[i]->data == self->out_block[i];
        if (max > 0 && !in_shm && outs[i]->nbytes > (uint64_t) max) {
            snprintf (reason, sizeof reason,
                      "segment %d: output '%s' is %zu bytes, more than the plan's "
                      "broker.max_message_bytes (%" PRId64 "): use smaller batches",
                      self->seg, zi_exec_output (self->exec, i)->name, outs[i]->nbytes, max);
            for (int j = 0; j < self->n_out; j++) {
                zi_tensor_destroy (&outs[j]);
            }
            s_release_blocks (self);
            self->tasks_failed++;
            zi_log_warn ("EXEC-TASK-FAILED", "task %" PRIu64 ": %s", id, reason);
            zi_msg_destroy (&task);
            return s_error (true, id, ZI_CODE_TOO_LARGE, reason);
        }
    }
    answer = zi_msg_new (ZI_CMD_RESULT);
    if (answer) {
        zi_msg_set_id (answer, id);
        zi_msg_set_seg (answer, (uint32_t) self->seg);
        //  Echo what the task carried (PROTOCOL.md allows it): a RESULT read
        //  on its own, in a log or a capture, says what it is.
        size_t nreqs = 0;
        const zi_msg_req_t *reqs = zi_msg_reqs (task, &nreqs);
        if (nreqs) {
            zi_msg_set_reqs (answer, reqs, nreqs);
        }
        if (zi_msg_has (task, "nmb")) {
            zi_msg_set_mb (answer, zi_msg_mb (task), zi_msg_nmb (task));
        }
    }
    bool handed[ZI_MSG_MAX_TENSORS] = {false};
    //  Outputs in the plan's order; zi_msg_add_tensor takes the owning
    //  tensors, whose buffers then go to libzmq without a copy.
    for (int k = 0; answer && k < self->n_out; k++) {
        int i = self->out_exec[k];
        //  A cut tensor the executor computed into a block of the arena
        //  (s_out_alloc): the broker and the next worker read it there,
        //  written once, never copied. (A full arena: inline.)
        void *block = self->out_block[i];
        if (block && outs[i]->data == block) {
            if (zi_msg_add_tensor_shm (answer, self->segment->outputs[k], outs[i]->dtype,
                                       outs[i]->rank, outs[i]->ne, block, &self->out_ref[i],
                                       false)) {
                zi_msg_destroy (&answer);
            }
            else {
                zi_msg_set_shm_out (answer, true);
                handed[i] = true;
            }
        }
        else if (zi_msg_add_tensor (answer, self->segment->outputs[k], &outs[i])) {
            zi_msg_destroy (&answer);
        }
    }
    for (int i = 0; i < self->n_out; i++) {
        zi_tensor_destroy (&outs[i]);
    }
    //  A RESULT that refers to its blocks hands them to the broker, which
    //  releases them; without one (out of memory) they are ours to free.
    self->n_sent_ref = 0;
    for (int i = 0; answer && i < self->n_out; i++) {
        if (handed[i]) {
            self->sent_ref[self->n_sent_ref++] = self->out_ref[i];
            self->out_block[i] = NULL;
        }
    }
    s_release_blocks (self);
    zi_msg_destroy (&task);
    if (!answer) {
        self->tasks_failed++;
        return s_error (true, id, ZI_CODE_INTERNAL, "out of memory building the RESULT");
    }
    self->tasks_done++;
    zi_log_debug ("EXEC-TASK", "task %" PRIu64 ": %.3f ms", id, (double) (t1 - t0) / 1000.0);
    return answer;
}

//  -------------------------------------------------------------------------
//  The socket

static int
s_connect (zi_worker_t *self, char *err, size_t errlen)
{
    const zi_plan_t *plan = self->plan;
    const char *endpoint = plan->broker.endpoints[ZI_PLAN_EP_WORK].connect;
    if (!endpoint) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "the plan has no work endpoint");
    }
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    if (!sock) {
        return zi_fail (err, errlen, ZI_ERR_IO, "cannot create a socket: %s",
                        zmq_strerror (zmq_errno ()));
    }
    //  The broker knows us by this routing id (PROTOCOL.md 7.3).
    zsock_set_identity (sock, self->replica->name);
    //  MAXMSGSIZE, ZMTP heartbeats, handshake bound, reconnect backoff.
    zi_security_socket (sock, plan, false);
    //  The broker never has more than credit TASKs out here; the rest is
    //  heartbeats and the odd control message.
    int hwm = (int) (self->replica->credit > 0 ? self->replica->credit : 1) + 100;
    zsock_set_sndhwm (sock, hwm);
    zsock_set_rcvhwm (sock, hwm);
    //  Never block: a send that finds the queue full fails and is logged
    //  (the broker re-dispatches what it does not hear back about), and
    //  receives only follow a poll.
    zsock_set_sndtimeo (sock, 0);
    zsock_set_rcvtimeo (sock, 0);
    zsock_set_linger (sock, 0);
    //  With CURVE: this replica's key pair ("{name}" in the plan's
    //  client_secret_file is its name) and the broker's public key.
    int rc = zi_security_client (sock, plan, self->replica->name, err, errlen);
    if (rc) {
        zsock_destroy (&sock);
        return rc;
    }
    if (zsock_connect (sock, "%s", endpoint)) {
        int e = zmq_errno ();
        zsock_destroy (&sock);
        return zi_fail (err, errlen, ZI_ERR_IO, "cannot connect to %s: %s", endpoint,
                        zmq_strerror (e));
    }
    self->sock = sock;
    return ZI_OK;
}

static void
s_drop_socket (zi_worker_t *self)
{
    if (self->sock) {
        zsock_set_linger (self->sock, 0);
        zsock_destroy (&self->sock);
    }
}

static int
s_send (zi_worker_t *self, zi_msg_t **msg_p)
{
    if (!*msg_p) {
        zi_log_error ("EXEC-SEND-FAILED", "out of memory building a message");
        return -1;
    }
    zi_cmd_t cmd = zi_msg_cmd (*msg_p);
    uint64_t id = zi_msg_id (*msg_p);
    //  A failed send counts as sent for the heartbeat clock, so a full
    //  queue (a broker that does not read) costs one try per interval, not
    //  a busy loop.
    self->last_sent = zclock_mono ();
    if (zi_msg_send (msg_p, self->sock)) {
        zi_log_warn ("EXEC-SEND-FAILED", "%s %" PRIu64 ": %s", zi_cmd_name (cmd), id,
                     zmq_strerror (zmq_errno ()));
        return -1;
    }
    return 0;
}

static void
s_send_ready (zi_worker_t *self)
{
    zi_msg_t *msg = zi_msg_new (ZI_CMD_READY);
    if (msg) {
        zi_msg_set_seg (msg, (uint32_t) self->seg);
        zi_msg_set_capacity (msg, self->replica->capacity);
        int64_t credit = self->replica->credit > 0 ? self->replica->credit : 1;
        zi_msg_set_credit (msg, (uint32_t) (credit < UINT32_MAX ? credit : UINT32_MAX));
        zi_msg_set_name (msg, self->replica->name);
    }
    s_send (self, &msg);
    self->last_ready = zclock_mono ();
    self->ready_due = 0;
    zi_log_debug ("EXEC-READY-SENT", "READY seg=%d cap=%g credit=%" PRId64, self->seg,
                  self->replica->capacity, self->replica->credit);
}

static void
s_send_simple (zi_worker_t *self, zi_cmd_t cmd, const char *reason)
{
    zi_msg_t *msg = zi_msg_new (cmd);
    if (msg && reason) {
        zi_msg_set_reason (msg, reason);
    }
    s_send (self, &msg);
}

//  Receive and handle one message. Returns the command handled (0 when
//  nothing could be read).
static zi_cmd_t
s_receive (zi_worker_t *self)
{
    zi_msg_t *msg = NULL;
    char err[512];
    if (self->shm_in) {
        zi_shm_accept_begin (false);    //  read in place; the broker releases
    }
    int rc = zi_msg_recv (self->sock, &msg, err, sizeof err);
    zi_shm_accept_end ();
    if (rc == ZI_ERR_IO) {
        return 0;                   //  nothing there after all, or a signal
    }
    //  Anything from the broker, even a message we cannot read, shows it
    //  is alive: that is a good exchange, which resets the backoff.
    self->last_heard = zclock_mono ();
    self->grace = 0;
    if (rc) {
        zi_log_warn ("EXEC-DECODE-FAILED", "a message from the broker: %s", err);
        zi_msg_t *e = zi_msg_new_error (zi_code_from_err (rc), err);
        s_send (self, &e);
        return 0;
    }
    zi_cmd_t cmd = zi_msg_cmd (msg);
    switch (cmd) {
        case ZI_CMD_TASK: {
            zi_msg_t *answer = zi_worker_process (self, &msg);
            bool result = answer && zi_msg_cmd (answer) == ZI_CMD_RESULT;
            if (s_send (self, &answer) && result) {
                for (int i = 0; i < self->n_sent_ref; i++) {
                    zi_shm_release (&self->sent_ref[i]);
                }
            }
            self->n_sent_ref = 0;
            break;
        }
        case ZI_CMD_HEARTBEAT:
            break;
        case ZI_CMD_DISCONNECT: {
            //  The broker does not know us (it declared us dead, or it was
            //  restarted): announce ourselves again, at most once per
            //  interval so a broker that keeps refusing us is not flooded.
            int64_t now = zclock_mono ();
            zi_log_info ("EXEC-BROKER-DISCONNECT", "the broker sent DISCONNECT (%s): "
                         "sending READY again",
                         zi_msg_reason (msg) ? zi_msg_reason (msg) : "no reason");
            if (now - self->last_ready >= self->interval) {
                s_send_ready (self);
            }
            else {
                self->ready_due = self->last_ready + self->interval;
            }
            break;
        }
        case ZI_CMD_ERROR:
            //  Never answered: a peer must not answer an ERROR with an ERROR.
            zi_log_warn ("EXEC-BROKER-ERROR", "id %" PRIu64 " code %d (%s): %s",
                         zi_msg_id (msg), zi_msg_code (msg), zi_code_name (zi_msg_code (msg)),
                         zi_msg_reason (msg) ? zi_msg_reason (msg) : "");
            break;
        default:
            zi_log_warn ("EXEC-UNEXPECTED", "ignoring a %s from the broker",
                         zi_cmd_name (cmd));
            break;
    }
    zi_msg_destroy (&msg);
    return cmd;
}

//  Leave: DISCONNECT, then make sure the broker has read it before the
//  socket goes. Linger alone is not enough: libzmq 4.3.4 can drop messages
//  still queued in a socket being closed, whatever its linger. So after
//  the DISCONNECT the worker sends a HEARTBEAT as a probe: the broker has
//  forgotten us by the time it reads the probe, and answers a HEARTBEAT
//  from a worker it does not know with DISCONNECT (PROTOCOL.md 7.3). One
//  connection delivers in order, so that DISCONNECT proves our own was
//  read, and the socket can close at once. If no answer comes within
//  S_LEAVE_WAIT_MS (a broker that is gone or busy) the worker falls back to
//  a short linger and leaves anyway: the broker then learns of our
//  departure by our silence, as it would if we had crashed. TASKs that
//  arrive meanwhile are not run: the broker re-dispatches the tasks of a
//  worker that has left.
static void
s_leave (zi_worker_t *self)
{
    s_send_simple (self, ZI_CMD_DISCONNECT, "SIGINT/SIGTERM: the worker is stopping");
    s_send_simple (self, ZI_CMD_HEARTBEAT, NULL);
    int64_t deadline = zclock_mono () + S_LEAVE_WAIT_MS;
    bool confirmed = false;
    int dropped = 0;
    for (int64_t now = zclock_mono (); !confirmed && now < deadline; now = zclock_mono ()) {
        zmq_pollitem_t item = {zsock_resolve (self->sock), 0, ZMQ_POLLIN, 0};
        int n = zmq_poll (&item, 1, (long) (deadline - now));
        if (n <= 0 || !(item.revents & ZMQ_POLLIN)) {
            continue;               //  timeout, or a second signal (EINTR)
        }
        zi_msg_t *msg = NULL;
        if (self->shm_in) {
            zi_shm_accept_begin (false);
        }
        int got = zi_msg_recv (self->sock, &msg, NULL, 0);
        zi_shm_accept_end ();
        if (got == 0) {
            confirmed = zi_msg_cmd (msg) == ZI_CMD_DISCONNECT;
            dropped += zi_msg_cmd (msg) == ZI_CMD_TASK;
        }
        zi_msg_destroy (&msg);
    }
    if (dropped) {
        zi_log_info ("EXEC-TASKS-LEFT", "%d task%s arrived after the DISCONNECT and were "
                     "not run: the broker re-dispatches them", dropped,
                     dropped == 1 ? "" : "s");
    }
    if (!confirmed) {
        zi_log_warn ("EXEC-LEAVE-UNCONFIRMED", "the broker did not confirm the DISCONNECT "
                     "within %d ms; leaving anyway", S_LEAVE_WAIT_MS);
    }
    zsock_set_linger (self->sock, confirmed ? 0 : S_LEAVE_LINGER_MS);
    zsock_destroy (&self->sock);
}

int
zi_worker_run (zi_worker_t *self, char *err, size_t errlen)
{
    assert (self);
    const zi_plan_broker_t *b = &self->plan->broker;
    self->interval = b->heartbeat_interval_ms > 0 ? b->heartbeat_interval_ms
                                                  : ZI_PLAN_DEFAULT_HEARTBEAT_MS;
    self->liveness = b->heartbeat_liveness > 0 ? b->heartbeat_liveness
                                               : ZI_PLAN_DEFAULT_LIVENESS;
    const char *endpoint = b->endpoints[ZI_PLAN_EP_WORK].connect;
    if (zsys_interrupted) {
        return ZI_OK;               //  stopped while loading
    }
    int rc = s_connect (self, err, errlen);
    if (rc) {
        return rc;
    }
    s_send_ready (self);
    self->last_heard = zclock_mono ();
    self->grace = 0;
    zi_log_info ("EXEC-SERVING", "segment %d, to the broker at %s", self->seg,
                 endpoint);
    while (!zsys_interrupted) {
        int64_t now = zclock_mono ();
        int64_t lost_at = self->last_heard + self->liveness * self->interval + self->grace;
        int64_t due = self->last_sent + self->interval;
        if (lost_at < due) {
            due = lost_at;
        }
        if (self->ready_due && self->ready_due < due) {
            due = self->ready_due;
        }
        int64_t timeout = due - now;
        timeout = timeout < 0 ? 0 : timeout > S_POLL_MAX_MS ? S_POLL_MAX_MS : timeout;
        zmq_pollitem_t item = {zsock_resolve (self->sock), 0, ZMQ_POLLIN, 0};
        int n = zmq_poll (&item, 1, (long) timeout);
        if (n < 0) {
            if (zmq_errno () == EINTR) {
                continue;
            }
            return zi_fail (err, errlen, ZI_ERR_IO, "poll: %s", zmq_strerror (zmq_errno ()));
        }
        if (n > 0 && (item.revents & ZMQ_POLLIN)) {
            s_receive (self);
        }
        now = zclock_mono ();
        //  Silence is judged only when nothing is waiting to be read, so a
        //  long task (during which nothing is read) is not mistaken for it.
        lost_at = self->last_heard + self->liveness * self->interval + self->grace;
        if (n == 0 && now >= lost_at) {
            //  Start over with a new socket (whatever was queued on the old
            //  one is dropped), at once: an idle socket would only delay
            //  meeting a broker that comes back. The backoff stretches the
            //  wait before the NEXT attempt: interval, 2x, ... 32x.
            self->grace = self->grace ? self->grace * 2 : self->interval;
            if (self->grace > 32 * self->interval) {
                self->grace = 32 * self->interval;
            }
            zi_log_warn ("EXEC-BROKER-LOST", "nothing heard from the broker at %s for "
                         "%" PRId64 " ms: reconnecting (next try after %" PRId64 " ms more "
                         "of silence)",
                         endpoint, now - self->last_heard,
                         self->liveness * self->interval + self->grace);
            s_drop_socket (self);
            rc = s_connect (self, err, errlen);
            if (rc) {
                return rc;
            }
            s_send_ready (self);
            self->last_heard = now;
            continue;
        }
        if (self->ready_due && now >= self->ready_due) {
            s_send_ready (self);
        }
        if (now - self->last_sent >= self->interval) {
            s_send_simple (self, ZI_CMD_HEARTBEAT, NULL);
        }
    }
    s_leave (self);
    zi_log_info ("EXEC-STOPPED", "%" PRIu64 " tasks done, %" PRIu64 " rejected, %" PRIu64
                 " failed", self->tasks_done, self->tasks_rejected, self->tasks_failed);
    return ZI_OK;
}
