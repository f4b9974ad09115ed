/*  zi_exec.c - plan and run a node range of a graph; see zi_exec.h.

    Per executor, every graph value has a slot (a zi_tensor_t struct) and a
    kind:

        CONST    graph constant (initializer / Constant node): a view
        FOLDED   computed at plan time from constants and shapes: owned copy
        INPUT    fed by the caller at run time
        ARENA    intermediate whose shape is known at plan time: lives in the
                 arena at a planned offset
        DYNAMIC  intermediate whose shape depends on run-time values: malloc'd
                 at run time, freed after its last reader
        OUTPUT   produced here and returned to the caller: a fresh owning
                 tensor per run
        UNUSED   not touched by this range

    Planning runs once per distinct set of input shapes (a new batch size
    replans). Run time then does, per node: bind inputs, infer output shapes
    (cheap, and it re-checks what planning assumed), point outputs at their
    storage, run the kernel.
*/
#include "zi_exec.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zi_blas.h"
#include "zi_gemm.h"
#include "zi_ops.h"
#include "zi_ops_nn.h"

typedef enum {
    S_UNUSED = 0,
    S_CONST,
    S_FOLDED,
    S_INPUT,
    S_ARENA,
    S_DYNAMIC,
    S_OUTPUT,
} s_kind_t;

#define S_ALIGN 64

enum {
    S_FUSE_NONE = 0,
    S_FUSE_CONV,        //  head: Conv + act
    S_FUSE_GEMM,        //  head: Gemm + act
    S_FUSE_MATMUL,      //  head: MatMul + bias + act
    S_FUSE_TAIL,        //  skipped: runs inside its head
};

struct zi_exec {
    const zi_graph_t *g;
    int first, last;                //  node range, inclusive
    zi_exec_opts_t opts;
    int n_inputs;
    int *inputs;                    //  value indices
    int n_outputs;
    int *outputs;                   //  value indices
    bool *is_output;                //  per value
    bool *produced;                 //  per value: produced inside the range
    int *last_use;                  //  per value: last reading node in range
    //  Plan state
    bool planned;
    zi_tensor_t *plan_in;           //  the input shapes the plan was made for
    uint8_t *kind;                  //  per value: s_kind_t
    zi_tensor_t *vals;              //  per value: shape, dtype, data
    zi_tensor_t **folded;           //  per value: owned folded constants
    bool *node_folded;              //  per node (absolute index)
    bool *node_dynamic;             //  per node: shapes known only at run time
    size_t *offset;                 //  per value: arena offset
    size_t arena_size;
    size_t naive_size;
    uint8_t *arena;
    size_t arena_cap;
    double *node_seconds;           //  per node, when profiling
    //  Fusion (decided from the graph's structure in zi_exec_new):
    //  a head node (Conv, Gemm, MatMul) runs with its tail (an activation,
    //  or for MatMul an Add of a constant bias and optionally an
    //  activation) in one pass; the tail nodes are skipped and the
    //  intermediate values between them never exist.
    uint8_t *fuse;                  //  per node: S_FUSE_*
    zi_nn_act_t *fuse_act;          //  per head node
    int *fuse_bias;                 //  per head node: bias value, or -1
    int *fuse_out;                  //  per head node: the final output value
    int *fuse_tail;                 //  per head node: its last tail node
    int *fuse_pool;                 //  per Conv head: its fused 2x2 MaxPool
                                    //  node (the last tail), or -1
    int *fuse_head;                 //  per tail node: its head
    bool *fuse_on;                  //  per head node: fused in this plan
    zi_tensor_t unknown;            //  what zi_exec_value returns for DYNAMIC
    zi_pool_t *pool;                //  opts.nthreads > 1: kernels' threads
    //  Per Gemm / MatMul node whose B is constant: B packed for zi_gemm,
    //  made at its first run and kept (an initializer's) until destroy, or
    //  (a folded value's, pack_folded) until the plan is dropped.
    zi_gemm_pack_t **packs;
    bool *pack_folded;
    //  Outputs written into the caller's memory (zi_exec_set_output_alloc).
    zi_exec_out_alloc_fn *out_alloc;
    void *out_alloc_arg;
    bool *external;                 //  per value: this run's bytes are the caller's
};

//  -------------------------------------------------------------------------
//  Construction

static void
s_free_plan (zi_exec_t *self)
{
    const zi_graph_t *g = self->g;
    if (self->folded) {
        for (int v = 0; v < g->n_values; v++) {
            zi_tensor_destroy (&self->folded[v]);
        }
    }
    //  A folded B is recomputed (at a new address) by the next plan.
    for (int n = 0; self->packs && n < g->n_nodes; n++) {
        if (self->pack_folded[n]) {
            zi_gemm_pack_destroy (&self->packs[n]);
            self->pack_folded[n] = false;
        }
    }
    self->planned = false;
}

void
zi_exec_destroy (zi_exec_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zi_exec_t *self = *self_p;
    zi_pool_destroy (&self->pool);
    s_free_plan (self);
    for (int n = 0; self->packs && n < self->g->n_nodes; n++) {
        zi_gemm_pack_destroy (&self->packs[n]);
    }
    free (self->packs);
    free (self->pack_folded);
    free (self->external);
    free (self->inputs);
    free (self->outputs);
    free (self->is_output);
    free (self->produced);
    free (self->last_use);
    free (self->plan_in);
    free (self->kind);
    free (self->vals);
    free (self->folded);
    free (self->node_folded);
    free (self->node_dynamic);
    free (self->offset);
    free (self->arena);
    free (self->node_seconds);
    free (self->fuse);
    free (self->fuse_act);
    free (self->fuse_bias);
    free (self->fuse_out);
    free (self->fuse_tail);
    free (self->fuse_pool);
    free (self->fuse_head);
    free (self->fuse_on);
    free (self);
    *self_p = NULL;
}

static bool
s_list_has (const int *list, int n, int v)
{
    for (int i = 0; i < n; i++) {
        if (list[i] == v) {
            return true;
        }
    }
    return false;
}

//  How many nodes of [first, last] read value v, and whether anything
//  outside the range could need it (a graph output, a later segment).
static int
s_readers (const zi_graph_t *g, int first, int last, int v, bool *escapes)
{
    int count = 0;
    *escapes = g->values[v].is_output;
    for (int n = 0; n < g->n_nodes; n++) {
        for (int k = 0; k < g->nodes[n].n_in; k++) {
            if (g->nodes[n].in[k] == v) {
                if (n >= first && n <= last) {
                    count++;
                }
                else {
                    *escapes = true;
                }
            }
        }
    }
    return count;
}

//  The single node of the range that reads v, when it is the only reader
//  and v is needed nowhere else; -1 otherwise.
static int
s_sole_reader (const zi_graph_t *g, int first, int last, int v)
{
    bool escapes;
    if (v < 0 || s_readers (g, first, last, v, &escapes) != 1 || escapes) {
        return -1;
    }
    for (int n = first; n <= last; n++) {
        for (int k = 0; k < g->nodes[n].n_in; k++) {
            if (g->nodes[n].in[k] == v) {
                return n;
            }
        }
    }
    return -1;
}

//  An activation node that can run inside its producer's output pass.
static bool
s_activation (const zi_graph_t *g, const zi_node_t *node, int input, zi_nn_act_t *act)
{
    if (node->n_in < 1 || node->in[0] != input || node->n_out != 1) {
        return false;
    }
    if (zi_nn_act_from_node (node, act) == 0) {
        //  Only activations whose fused form is bit-identical to the
        //  element-wise kernel's: a cut between the producer and the
        //  activation must not change a single bit (segments run unfused
        //  there). Sigmoid / Tanh / Gelu use different exp / erf code in
        //  the two families, so they run as their own node.
        return act->kind == ZI_NN_ACT_RELU || act->kind == ZI_NN_ACT_LEAKY_RELU
               || act->kind == ZI_NN_ACT_CLIP;
    }
    //  Clip (opset >= 11) takes its bounds as inputs: fusable when they are
    //  constant float scalars.
    if (strcmp (node->op_type, "Clip") == 0 && !*node->domain) {
        float lo = -INFINITY, hi = INFINITY;
        for (int k = 1; k < node->n_in && k < 3; k++) {
            int v = node->in[k];
            if (v < 0) {
                continue;
            }
            const zi_tensor_t *t = g->values[v].init;
            if (!t || t->dtype != ZI_DT_F32 || zi_tensor_count (t) != 1) {
                return false;
            }
            *(k == 1 ? &lo : &hi) = *(const float *) t->data;
        }
        act->kind = ZI_NN_ACT_CLIP;
        act->alpha = lo;
        act->beta = hi;
        return true;
    }
    return false;
}

//  A Conv's output shape (N, M, oH, oW) -> its 2x2 / stride 2 MaxPool's.
static int
s_pooled_shape (zi_tensor_t *t)
{
    int64_t shape[4] = {t->ne[0], t->ne[1], t->ne[2] / 2, t->ne[3] / 2};
    return zi_tensor_set_shape (t, t->dtype, 4, shape);
}

static void
s_find_fusions (zi_exec_t *self)
{
    const zi_graph_t *g = self->g;
    for (int n = self->first; n <= self->last; n++) {
        const zi_node_t *head = &g->nodes[n];
        if (self->fuse[n] != S_FUSE_NONE || *head->domain || head->n_out != 1
            || head->out[0] < 0) {
            continue;
        }
        int kind = strcmp (head->op_type, "Conv") == 0     ? S_FUSE_CONV
                   : strcmp (head->op_type, "Gemm") == 0   ? S_FUSE_GEMM
                   : strcmp (head->op_type, "MatMul") == 0 ? S_FUSE_MATMUL
                                                            : S_FUSE_NONE;
        if (kind == S_FUSE_NONE) {
            continue;
        }
        int v = head->out[0];
        int bias = -1, tail = -1;
        zi_nn_act_t act = {ZI_NN_ACT_NONE, 0, 0};
        int next = s_sole_reader (g, self->first, self->last, v);
        if (kind == S_FUSE_MATMUL && next >= 0 && strcmp (g->nodes[next].op_type, "Add") == 0
            && !*g->nodes[next].domain && g->nodes[next].n_in == 2
            && g->nodes[next].n_out == 1) {
            //  Add (bias, x) or Add (x, bias): PyTorch emits both orders.
            const zi_node_t *add = &g->nodes[next];
            int other = add->in[0] == v ? add->in[1] : add->in[0];
            if (other >= 0 && other != v && g->values[other].init
                && g->values[other].init->dtype == ZI_DT_F32) {
                bias = other;
                tail = next;
                v = add->out[0];
                next = s_sole_reader (g, self->first, self->last, v);
            }
        }
        if (next >= 0 && s_activation (g, &g->nodes[next], v, &act)) {
            tail = next;
            v = g->nodes[next].out[0];
            next = v >= 0 ? s_sole_reader (g, self->first, self->last, v) : -1;
        }
        //  Conv (+ act) -> 2x2 MaxPool: pooled while the rows are in cache.
        int pool = -1;
        if (kind == S_FUSE_CONV && v >= 0 && next >= 0
            && zi_nn_maxpool_fusable (&g->nodes[next])
            && g->nodes[next].in[0] == v) {
            pool = tail = next;
            v = g->nodes[next].out[0];
        }
        if (tail < 0 || v < 0) {
            continue;
        }
        self->fuse_pool[n] = pool;
        if (pool >= 0 && act.kind != ZI_NN_ACT_NONE) {
            //  The activation between them is a tail too.
            int a = s_sole_reader (g, self->first, self->last, head->out[0]);
            self->fuse[a] = S_FUSE_TAIL;
            self->fuse_head[a] = n;
        }
        self->fuse[n] = (uint8_t) kind;
        self->fuse_act[n] = act;
        self->fuse_bias[n] = bias;
        self->fuse_out[n] = v;
        self->fuse_tail[n] = tail;
        //  The tail: the Add (when a bias was taken) and the activation.
        if (bias >= 0) {
            int add = s_sole_reader (g, self->first, self->last, head->out[0]);
            self->fuse[add] = S_FUSE_TAIL;
            self->fuse_head[add] = n;
        }
        self->fuse[tail] = S_FUSE_TAIL;
        self->fuse_head[tail] = n;
    }
}

zi_exec_t *
zi_exec_new (const zi_graph_t *g, int first, int last,
             const zi_exec_opts_t *opts, char *err, size_t errlen)
{
    if (!g) {
        zi_fail (err, errlen, ZI_ERR_INVALID, "no graph");
        return NULL;
    }
    if (last < 0) {
        last = g->n_nodes - 1;
    }
    bool whole = (first == 0 && last == g->n_nodes - 1);
    if (g->n_nodes > 0 && (first < 0 || first > last || last >= g->n_nodes)) {
        zi_fail (err, errlen, ZI_ERR_INVALID,
                 "segment %d:%d is not a node range of a graph with %d nodes "
                 "(valid: 0..%d)", first, last, g->n_nodes, g->n_nodes - 1);
        return NULL;
    }
    for (int n = first; n <= last && g->n_nodes > 0; n++) {
        if (!g->nodes[n].op) {
            zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                     "node '%s': unsupported op %s", g->nodes[n].name,
                     g->nodes[n].op_type);
            return NULL;
        }
    }
    zi_exec_t *self = (zi_exec_t *) calloc (1, sizeof *self);
    if (!self) {
        zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        return NULL;
    }
    self->g = g;
    self->first = first;
    self->last = g->n_nodes > 0 ? last : -1;
    if (opts) {
        self->opts = *opts;
    }
    size_t nv = (size_t) (g->n_values > 0 ? g->n_values : 1);
    size_t nn = (size_t) (g->n_nodes > 0 ? g->n_nodes : 1);
    self->inputs = (int *) calloc (nv, sizeof (int));
    self->outputs = (int *) calloc (nv, sizeof (int));
    self->is_output = (bool *) calloc (nv, sizeof (bool));
    self->produced = (bool *) calloc (nv, sizeof (bool));
    self->last_use = (int *) calloc (nv, sizeof (int));
    self->kind = (uint8_t *) calloc (nv, 1);
    self->vals = (zi_tensor_t *) calloc (nv, sizeof (zi_tensor_t));
    self->folded = (zi_tensor_t **) calloc (nv, sizeof (zi_tensor_t *));
    self->node_folded = (bool *) calloc (nn, sizeof (bool));
    self->node_dynamic = (bool *) calloc (nn, sizeof (bool));
    self->offset = (size_t *) calloc (nv, sizeof (size_t));
    self->plan_in = (zi_tensor_t *) calloc (nv, sizeof (zi_tensor_t));
    self->node_seconds = (double *) calloc (nn, sizeof (double));
    self->fuse = (uint8_t *) calloc (nn, 1);
    self->fuse_act = (zi_nn_act_t *) calloc (nn, sizeof (zi_nn_act_t));
    self->fuse_bias = (int *) calloc (nn, sizeof (int));
    self->fuse_out = (int *) calloc (nn, sizeof (int));
    self->fuse_tail = (int *) calloc (nn, sizeof (int));
    self->fuse_pool = (int *) calloc (nn, sizeof (int));
    self->fuse_head = (int *) calloc (nn, sizeof (int));
    self->fuse_on = (bool *) calloc (nn, sizeof (bool));
    self->packs = (zi_gemm_pack_t **) calloc (nn, sizeof (zi_gemm_pack_t *));
    self->pack_folded = (bool *) calloc (nn, sizeof (bool));
    self->external = (bool *) calloc (nv, sizeof (bool));
    self->unknown.rank = -1;
    if (!self->inputs || !self->outputs || !self->is_output || !self->produced
        || !self->last_use || !self->kind || !self->vals || !self->folded
        || !self->node_folded || !self->node_dynamic || !self->offset
        || !self->plan_in || !self->node_seconds || !self->fuse || !self->fuse_act
        || !self->fuse_bias || !self->fuse_out || !self->fuse_tail || !self->fuse_pool || !self->fuse_head
        || !self->fuse_on || !self->packs || !self->pack_folded || !self->external) {
        zi_exec_destroy (&self);
        zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (int v = 0; v < g->n_values; v++) {
        self->last_use[v] = -1;
    }
    for (int n = first; n <= self->last; n++) {
        const zi_node_t *node = &g->nodes[n];
        for (int k = 0; k < node->n_out; k++) {
            if (node->out[k] >= 0) {
                self->produced[node->out[k]] = true;
            }
        }
        for (int k = 0; k < node->n_in; k++) {
            if (node->in[k] >= 0) {
                self->last_use[node->in[k]] = n;
            }
        }
    }
    //  Inputs: for the whole graph exactly the graph's inputs in order (so a
    //  caller can match them by position); for a segment, every non-constant
    //  value it reads and does not produce, graph inputs first.
    if (whole) {
        for (int i = 0; i < g->n_inputs; i++) {
            self->inputs[self->n_inputs++] = g->inputs[i];
        }
    }
    else {
        for (int i = 0; i < g->n_inputs; i++) {
            int v = g->inputs[i];
            if (self->last_use[v] >= 0) {
                self->inputs[self->n_inputs++] = v;
            }
        }
        for (int n = first; n <= self->last; n++) {
            const zi_node_t *node = &g->nodes[n];
            for (int k = 0; k < node->n_in; k++) {
                int v = node->in[k];
                if (v >= 0 && !self->produced[v] && !g->values[v].init
                    && !g->values[v].is_input
                    && !s_list_has (self->inputs, self->n_inputs, v)) {
                    self->inputs[self->n_inputs++] = v;
                }
            }
        }
    }
    //  Outputs: for the whole graph the graph's outputs in order; for a
    //  segment, graph outputs it produces and values read after it.
    if (whole) {
        for (int i = 0; i < g->n_outputs; i++) {
            self->outputs[self->n_outputs++] = g->outputs[i];
        }
    }
    else {
        for (int i = 0; i < g->n_outputs; i++) {
            if (self->produced[g->outputs[i]]) {
                self->outputs[self->n_outputs++] = g->outputs[i];
            }
        }
        for (int n = self->last + 1; n < g->n_nodes; n++) {
            const zi_node_t *node = &g->nodes[n];
            for (int k = 0; k < node->n_in; k++) {
                int v = node->in[k];
                if (v >= 0 && self->produced[v]
                    && !s_list_has (self->outputs, self->n_outputs, v)) {
                    self->outputs[self->n_outputs++] = v;
                }
            }
        }
    }
    for (int i = 0; i < self->n_outputs; i++) {
        self->is_output[self->outputs[i]] = true;
    }
    for (int n = 0; n < g->n_nodes; n++) {
        self->fuse_pool[n] = -1;
    }
    if (!self->opts.no_fuse && self->last >= self->first) {
        s_find_fusions (self);
    }
    //  NULL when nthreads < 2 or threads cannot start: kernels then run in
    //  the caller alone, with the same results.
    self->pool = zi_pool_new (self->opts.nthreads);
    //  With a pool the kernels split their work over its threads and call
    //  OpenBLAS from inside them: OpenBLAS must then stay on one thread, or
    //  the two pools would oversubscribe the cores.
    if (self->opts.nthreads > 0) {
        zi_blas_set_threads (self->pool ? 1 : self->opts.nthreads);
    }
    return self;
}

int
zi_exec_n_inputs (const zi_exec_t *self)
{
    return self->n_inputs;
}

int
zi_exec_n_outputs (const zi_exec_t *self)
{
    return self->n_outputs;
}

const zi_value_t *
zi_exec_input (const zi_exec_t *self, int i)
{
    return i >= 0 && i < self->n_inputs ? &self->g->values[self->inputs[i]] : NULL;
}

const zi_value_t *
zi_exec_output (const zi_exec_t *self, int i)
{
    return i >= 0 && i < self->n_outputs ? &self->g->values[self->outputs[i]] : NULL;
}

size_t
zi_exec_peak_bytes (const zi_exec_t *self)
{
    return self->arena_size;
}

size_t
zi_exec_naive_bytes (const zi_exec_t *self)
{
    return self->naive_size;
}

size_t
zi_exec_packed_bytes (const zi_exec_t *self)
{
    size_t total = 0;
    for (int n = self->first; n <= self->last; n++) {
        total += zi_gemm_pack_bytes (self->packs[n]);
    }
    return total;
}

//  -------------------------------------------------------------------------
//  Input checks

//  Check a caller's tensor against the value's declared dtype and shape.
static int
s_check_input (const zi_value_t *v, const zi_tensor_t *t, char *err, size_t errlen)
{
    char got[96], want[96];
    if (!t) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "input '%s' is missing", v->name);
    }
    if (!zi_dtype_valid (t->dtype)) {
        return zi_fail (err, errlen, ZI_ERR_SHAPE, "input '%s': unsupported dtype %d",
                        v->name, (int) t->dtype);
    }
    if (v->dtype != ZI_DT_UNDEFINED && t->dtype != v->dtype) {
        return zi_fail (err, errlen, ZI_ERR_SHAPE,
                        "input '%s': dtype %s, the model expects %s", v->name,
                        zi_dtype_name (t->dtype), zi_dtype_name (v->dtype));
    }
    if (!zi_tensor_is_contiguous (t) || (t->nbytes > 0 && !t->data)) {
        return zi_fail (err, errlen, ZI_ERR_INVALID,
                        "input '%s': tensor must be contiguous with data", v->name);
    }
    if (v->rank >= 0) {
        bool ok = (t->rank == v->rank);
        for (int i = 0; ok && i < v->rank; i++) {
            ok = (v->shape[i] < 0 || v->shape[i] == t->ne[i]);
        }
        if (!ok) {
            //  Show the declared shape with '?' for the symbolic dims.
            size_t pos = 0;
            pos += (size_t) snprintf (want + pos, sizeof want - pos, "[");
            for (int i = 0; i < v->rank && pos < sizeof want; i++) {
                if (v->shape[i] < 0) {
                    pos += (size_t) snprintf (want + pos, sizeof want - pos, "%s?", i ? "," : "");
                }
                else {
                    pos += (size_t) snprintf (want + pos, sizeof want - pos, "%s%lld",
                                              i ? "," : "", (long long) v->shape[i]);
                }
            }
            if (pos < sizeof want) {
                snprintf (want + pos, sizeof want - pos, "]");
            }
            return zi_fail (err, errlen, ZI_ERR_SHAPE,
                            "input '%s': shape %s, the model expects %s", v->name,
                            zi_tensor_shape_str (t, got, sizeof got), want);
        }
    }
    return ZI_OK;
}

//  -------------------------------------------------------------------------
//  Planning

typedef struct {
    int value;
    size_t size;
    int start, end;                 //  node indices of life
} s_block_t;

static int
s_block_cmp (const void *a, const void *b)
{
    const s_block_t *x = (const s_block_t *) a, *y = (const s_block_t *) b;
    if (x->size != y->size) {
        return x->size < y->size ? 1 : -1;
    }
    return x->value - y->value;
}

static size_t
s_align (size_t n)
{
    return (n + S_ALIGN - 1) / S_ALIGN * S_ALIGN;
}

//  Greedy-by-size offset assignment (as TFLite's arena planner): place the
//  largest tensors first, each at the lowest offset that does not overlap a
//  placed tensor whose lifetime intersects its own.
static int
s_assign_offsets (zi_exec_t *self, s_block_t *blocks, int nb)
{
    qsort (blocks, (size_t) nb, sizeof *blocks, s_block_cmp);
    size_t peak = 0;
    s_block_t **placed = (s_block_t **) malloc ((size_t) (nb ? nb : 1) * sizeof *placed);
    if (!placed) {
        return ZI_ERR_NOMEM;
    }
    int np = 0;
    for (int i = 0; i < nb; i++) {
        s_block_t *b = &blocks[i];
        size_t need = s_align (b->size ? b->size : 1);
        size_t best = 0;
        //  Try offset 0, then the end of every conflicting placed block.
        for (int attempt = -1; attempt < np; attempt++) {
            size_t cand;
            if (attempt < 0) {
                cand = 0;
            }
            else {
                s_block_t *p = placed[attempt];
                if (p->end < b->start || b->end < p->start) {
                    continue;
                }
                cand = self->offset[p->value] + s_align (p->size ? p->size : 1);
            }
            bool fits = true;
            for (int k = 0; k < np && fits; k++) {
                s_block_t *p = placed[k];
                if (p->end < b->start || b->end < p->start) {
                    continue;
                }
                size_t ps = self->offset[p->value];
                size_t pe = ps + s_align (p->size ? p->size : 1);
                if (cand < pe && ps < cand + need) {
                    fits = false;
                }
            }
            if (fits && (attempt < 0 || cand < best || best == 0)) {
                best = cand;
                if (attempt < 0) {
                    break;
                }
            }
        }
        self->offset[b->value] = best;
        if (best + need > peak) {
            peak = best + need;
        }
        placed[np++] = b;
    }
    free (placed);
    self->arena_size = peak;
    return ZI_OK;
}

//  Gather the input tensor pointers of a node from the value slots.
static void
s_bind (zi_exec_t *self, const zi_node_t *node, const zi_tensor_t **in,
        zi_tensor_t **out)
{
    for (int k = 0; k < node->n_in; k++) {
        in[k] = node->in[k] >= 0 ? &self->vals[node->in[k]] : NULL;
    }
    for (int k = 0; k < node->n_out; k++) {
        out[k] = node->out[k] >= 0 ? &self->vals[node->out[k]] : NULL;
    }
}

//  Refuse outputs larger than the limit before anything is allocated.
static int
s_check_sizes (const zi_exec_t *self, const zi_node_t *node, zi_tensor_t *const *out,
               char *err, size_t errlen)
{
    size_t limit = self->opts.max_tensor_bytes ? self->opts.max_tensor_bytes
                                               : ZI_EXEC_DEFAULT_MAX_TENSOR_BYTES;
    for (int k = 0; k < node->n_out; k++) {
        if (out[k] && out[k]->nbytes > limit) {
            char shape[96];
            return zi_fail (err, errlen, ZI_ERR_LIMIT, "node '%s' (%s): output %d would be "
                            "%s%s, %zu bytes, over the %zu-byte limit", node->name,
                            node->op_type, k, zi_dtype_name (out[k]->dtype),
                            zi_tensor_shape_str (out[k], shape, sizeof shape), out[k]->nbytes,
                            limit);
        }
    }
    return ZI_OK;
}

static bool
s_is_shape_only_op (const zi_node_t *node)
{
    return strcmp (node->op_type, "Shape") == 0 || strcmp (node->op_type, "Size") == 0;
}

static int
s_plan (zi_exec_t *self, const zi_tensor_t *const *inputs, char *err, size_t errlen)
{
    const zi_graph_t *g = self->g;
    s_free_plan (self);
    self->arena_size = 0;
    self->naive_size = 0;
    memset (self->kind, S_UNUSED, (size_t) g->n_values);
    //  Constants are views of the graph's tensors.
    for (int v = 0; v < g->n_values; v++) {
        memset (&self->vals[v], 0, sizeof self->vals[v]);
        if (g->values[v].init) {
            self->vals[v] = *g->values[v].init;
            self->vals[v].owns_data = false;
            self->kind[v] = S_CONST;
        }
    }
    for (int i = 0; i < self->n_inputs; i++) {
        int v = self->inputs[i];
        self->vals[v] = *inputs[i];
        self->vals[v].owns_data = false;
        self->vals[v].data = NULL;          //  unknown while planning
        self->kind[v] = S_INPUT;
        self->plan_in[i] = *inputs[i];
    }
    const zi_tensor_t *in[64];
    zi_tensor_t *out[64];
    bool *dyn = (bool *) calloc ((size_t) (g->n_values ? g->n_values : 1), sizeof (bool));
    if (!dyn) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    int rc = ZI_OK;
    for (int n = self->first; n <= self->last; n++) {
        self->fuse_on[n] = false;
    }
    for (int n = self->first; n <= self->last; n++) {
        const zi_node_t *node = &g->nodes[n];
        self->node_folded[n] = false;
        self->node_dynamic[n] = false;
        if (self->fuse[n] == S_FUSE_TAIL && self->fuse_on[self->fuse_head[n]]) {
            continue;       //  runs inside its head
        }
        if (node->n_in > 64 || node->n_out > 64) {
            rc = zi_fail (err, errlen, ZI_ERR_LIMIT, "node '%s' (%s): more than 64 "
                          "inputs or outputs", node->name, node->op_type);
            goto out;
        }
        bool all_valued = true, any_dyn = false;
        for (int k = 0; k < node->n_in; k++) {
            int v = node->in[k];
            if (v < 0) {
                continue;
            }
            any_dyn |= dyn[v];
            all_valued &= (self->kind[v] == S_CONST || self->kind[v] == S_FOLDED);
        }
        if (any_dyn) {
            //  Shapes unknown until run time: everything downstream waits.
            self->node_dynamic[n] = true;
            for (int k = 0; k < node->n_out; k++) {
                if (node->out[k] >= 0) {
                    dyn[node->out[k]] = true;
                    self->kind[node->out[k]] = self->is_output[node->out[k]] ? S_OUTPUT
                                                                              : S_DYNAMIC;
                }
            }
            continue;
        }
        s_bind (self, node, in, out);
        zi_kctx_t ctx = {node, node->n_in, in, node->n_out, out,
                         self->opts.nthreads, self->pool, err, errlen};
        rc = node->op->infer (&ctx);
        if (rc == ZI_OP_NEEDS_VALUE) {
            self->node_dynamic[n] = true;
            for (int k = 0; k < node->n_out; k++) {
                if (node->out[k] >= 0) {
                    dyn[node->out[k]] = true;
                    self->kind[node->out[k]] = self->is_output[node->out[k]] ? S_OUTPUT
                                                                              : S_DYNAMIC;
                }
            }
            rc = ZI_OK;
            continue;
        }
        if (rc == ZI_OK) {
            rc = s_check_sizes (self, node, out, err, errlen);
        }
        if (rc) {
            goto out;
        }
        if (self->fuse[n] != S_FUSE_NONE && self->fuse[n] != S_FUSE_TAIL && !all_valued) {
            //  Fuse when the shapes allow it: the head's output shape is the
            //  final value's (an activation keeps the shape; a bias must
            //  broadcast along rows only).
            int fv = self->fuse_out[n], bias = self->fuse_bias[n];
            bool ok = bias < 0 || zi_nn_matmul_bias_fusable (out[0]->rank, out[0]->ne,
                                                             g->values[bias].init);
            ok = ok && out[0]->dtype == ZI_DT_F32;
            ok = ok && (self->fuse_pool[n] < 0 || out[0]->rank == 4);
            if (ok) {
                self->vals[fv] = *out[0];
                self->vals[fv].data = NULL;
                self->vals[fv].owns_data = false;
                if (self->fuse_pool[n] >= 0) {
                    s_pooled_shape (&self->vals[fv]);
                }
                self->kind[fv] = self->is_output[fv] ? S_OUTPUT : S_ARENA;
                self->kind[node->out[0]] = S_UNUSED;
                self->fuse_on[n] = true;
                continue;
            }
        }
        if (all_valued || s_is_shape_only_op (node)) {
            //  Constant folding: run it now, keep the result as a constant.
            for (int k = 0; k < node->n_out; k++) {
                if (!out[k]) {
                    continue;
                }
                zi_tensor_t *t = zi_tensor_new (out[k]->dtype, out[k]->rank, out[k]->ne);
                if (!t) {
                    rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "node '%s' (%s): out of "
                                  "memory folding a constant", node->name, node->op_type);
                    goto out;
                }
                self->folded[node->out[k]] = t;
                out[k]->data = t->data;
            }
            rc = node->op->run (&ctx);
            if (rc) {
                goto out;
            }
            self->node_folded[n] = true;
            for (int k = 0; k < node->n_out; k++) {
                if (node->out[k] >= 0) {
                    self->kind[node->out[k]] = S_FOLDED;
                }
            }
            continue;
        }
        for (int k = 0; k < node->n_out; k++) {
            int v = node->out[k];
            if (v >= 0) {
                self->kind[v] = self->is_output[v] ? S_OUTPUT : S_ARENA;
            }
        }
    }
    //  Arena layout of the planned intermediates.
    {
        int nb = 0;
        s_block_t *blocks = (s_block_t *) calloc ((size_t) (g->n_values ? g->n_values : 1),
                                                  sizeof *blocks);
        if (!blocks) {
            rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (int v = 0; v < g->n_values; v++) {
            if (self->kind[v] != S_ARENA) {
                continue;
            }
            int start = g->values[v].producer;
            if (start >= 0 && self->fuse[start] == S_FUSE_TAIL
                && self->fuse_on[self->fuse_head[start]]) {
                start = self->fuse_head[start];     //  written by the head
            }
            int end = self->last_use[v] > start ? self->last_use[v] : start;
            blocks[nb++] = (s_block_t){v, self->vals[v].nbytes, start, end};
            self->naive_size += s_align (self->vals[v].nbytes ? self->vals[v].nbytes : 1);
        }
        rc = s_assign_offsets (self, blocks, nb);
        free (blocks);
        if (rc) {
            zi_fail (err, errlen, rc, "out of memory");
            goto out;
        }
        if (self->arena_size > self->arena_cap) {
            free (self->arena);
            self->arena = (uint8_t *) aligned_alloc (S_ALIGN, self->arena_size);
            if (!self->arena) {
                self->arena_cap = 0;
                rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "cannot allocate a %zu-byte "
                              "activation arena", self->arena_size);
                goto out;
            }
            self->arena_cap = self->arena_size;
        }
    }
    //  Folded values point at their owned copies from now on.
    for (int v = 0; v < g->n_values; v++) {
        if (self->kind[v] == S_FOLDED && self->folded[v]) {
            self->vals[v] = *self->folded[v];
            self->vals[v].owns_data = false;
        }
    }
    self->planned = true;
out:
    free (dyn);
    if (rc) {
        s_free_plan (self);
    }
    return rc;
}

static bool
s_same_as_plan (const zi_exec_t *self, const zi_tensor_t *const *inputs)
{
    if (!self->planned) {
        return false;
    }
    for (int i = 0; i < self->n_inputs; i++) {
        if (!zi_tensor_same_shape (&self->plan_in[i], inputs[i])) {
            return false;
        }
    }
    return true;
}

int
zi_exec_prepare (zi_exec_t *self, const zi_tensor_t *const *inputs, char *err,
                 size_t errlen)
{
    for (int i = 0; i < self->n_inputs; i++) {
        if (!inputs || !inputs[i]) {
            return zi_fail (err, errlen, ZI_ERR_INVALID, "input '%s' is missing",
                            self->g->values[self->inputs[i]].name);
        }
        //  Only the shape is checked here: data may be absent.
        zi_tensor_t probe = *inputs[i];
        probe.data = probe.nbytes ? (void *) 1 : NULL;
        int rc = s_check_input (&self->g->values[self->inputs[i]], &probe, err, errlen);
        if (rc) {
            return rc;
        }
    }
    return s_same_as_plan (self, inputs) ? ZI_OK : s_plan (self, inputs, err, errlen);
}

const zi_tensor_t *
zi_exec_value (const zi_exec_t *self, int v)
{
    if (!self->planned || v < 0 || v >= self->g->n_values) {
        return &self->unknown;
    }
    switch (self->kind[v]) {
        case S_UNUSED: case S_DYNAMIC: return &self->unknown;
        case S_OUTPUT:
            //  An output's shape is known at plan time unless its node is
            //  dynamic.
            if (self->g->values[v].producer >= 0
                && self->node_dynamic[self->g->values[v].producer]) {
                return &self->unknown;
            }
            return &self->vals[v];
        default: return &self->vals[v];
    }
}

int
zi_exec_n_fused (const zi_exec_t *self)
{
    int count = 0;
    for (int n = self->first; n <= self->last; n++) {
        count += self->fuse[n] == S_FUSE_TAIL && self->fuse_on[self->fuse_head[n]];
    }
    return count;
}

double
zi_exec_node_seconds (const zi_exec_t *self, int n)
{
    return n >= 0 && n < self->g->n_nodes ? self->node_seconds[n] : 0.0;
}

void
zi_exec_node_seconds_reset (zi_exec_t *self, int n)
{
    for (int k = 0; k < self->g->n_nodes; k++) {
        if (n < 0 || k == n) {
            self->node_seconds[k] = 0.0;
        }
    }
}

//  -------------------------------------------------------------------------
//  Running

//  Position of value v in the executor's outputs (v is one).
static int
s_output_index (const zi_exec_t *self, int v)
{
    for (int i = 0; i < self->n_outputs; i++) {
        if (self->outputs[i] == v) {
            return i;
        }
    }
    return -1;
}

void
zi_exec_set_output_alloc (zi_exec_t *self, zi_exec_out_alloc_fn *fn, void *arg)
{
    if (!self) {
        return;
    }
    self->out_alloc = fn;
    self->out_alloc_arg = arg;
}

//  Allocate a tensor's storage without zeroing it (the kernel writes all of
//  it); at least one byte so that data != NULL.
static void *
s_alloc_data (size_t nbytes)
{
    return malloc (nbytes ? nbytes : 1);
}

//  The pack slot for a Gemm / MatMul node when its B (input 1) cannot
//  change between runs: a graph initializer, or a value folded by this
//  plan. Which slot (or none) never changes the result, only the time.
static zi_gemm_pack_t **
s_pack_slot (zi_exec_t *self, int n)
{
    const zi_node_t *node = &self->g->nodes[n];
    int b = node->n_in > 1 ? node->in[1] : -1;
    if (b < 0 || (self->kind[b] != S_CONST && self->kind[b] != S_FOLDED)) {
        return NULL;
    }
    if (self->kind[b] == S_FOLDED) {
        self->pack_folded[n] = true;
    }
    return &self->packs[n];
}

//  A Gemm or MatMul of the ONNX domain; *matmul tells which.
static bool
s_is_gemm (const zi_node_t *node, bool *matmul)
{
    if (*node->domain) {
        return false;
    }
    *matmul = strcmp (node->op_type, "MatMul") == 0;
    return *matmul || strcmp (node->op_type, "Gemm") == 0;
}

//  Run node n (a fused head with its tail when `fused`). Gemm and MatMul,
//  fused or not, go through the nn family's *_cached entry points with
//  their pack slot.
static int
s_run_node (zi_exec_t *self, int n, bool fused, zi_kctx_t *ctx)
{
    zi_nn_act_t act = fused ? self->fuse_act[n] : (zi_nn_act_t){ZI_NN_ACT_NONE, 0, 0};
    const zi_node_t *node = &self->g->nodes[n];
    bool matmul;
    if (s_is_gemm (node, &matmul)) {
        zi_gemm_pack_t **slot = s_pack_slot (self, n);
        if (!matmul) {
            return zi_nn_gemm_act_cached (ctx, act, slot);
        }
        int b = fused ? self->fuse_bias[n] : -1;
        return zi_nn_matmul_bias_act_cached (ctx, b >= 0 ? self->g->values[b].init : NULL,
                                             act, slot);
    }
    if (!fused) {
        return node->op->run (ctx);
    }
    if (self->fuse[n] == S_FUSE_CONV) {
        return self->fuse_pool[n] >= 0 ? zi_nn_conv_act_maxpool (ctx, act)
                                       : zi_nn_conv_act (ctx, act);
    }
    return zi_op_fail (ctx, ZI_ERR_INVALID, "not a fused node");
}

int
zi_exec_run (zi_exec_t *self, const zi_tensor_t *const *inputs, zi_tensor_t **outs,
             char *err, size_t errlen)
{
    const zi_graph_t *g = self->g;
    for (int i = 0; i < self->n_inputs; i++) {
        int rc = s_check_input (&g->values[self->inputs[i]], inputs ? inputs[i] : NULL,
                                err, errlen);
        if (rc) {
            return rc;
        }
    }
    if (!s_same_as_plan (self, inputs)) {
        int rc = s_plan (self, inputs, err, errlen);
        if (rc) {
            return rc;
        }
    }
    for (int i = 0; i < self->n_inputs; i++) {
        int v = self->inputs[i];
        self->vals[v] = *inputs[i];
        self->vals[v].owns_data = false;
    }
    //  Values produced at run time own nothing yet.
    for (int v = 0; v < g->n_values; v++) {
        self->external[v] = false;
        if (self->kind[v] == S_ARENA || self->kind[v] == S_DYNAMIC
            || self->kind[v] == S_OUTPUT) {
            self->vals[v].data = NULL;
            self->vals[v].owns_data = false;
        }
    }
    const zi_tensor_t *in[64];
    zi_tensor_t *out[64];
    int rc = ZI_OK;
    for (int n = self->first; n <= self->last && rc == ZI_OK; n++) {
        const zi_node_t *node = &g->nodes[n];
        if (self->node_folded[n]
            || (self->fuse[n] == S_FUSE_TAIL && self->fuse_on[self->fuse_head[n]])) {
            continue;
        }
        s_bind (self, node, in, out);
        bool fused = self->fuse_on[n];
        if (fused) {
            out[0] = &self->vals[self->fuse_out[n]];
        }
        zi_kctx_t ctx = {node, node->n_in, in, node->n_out, out, self->opts.nthreads,
                         self->pool, err, errlen};
        size_t planned[64];
        for (int k = 0; k < node->n_out; k++) {
            planned[k] = out[k] ? out[k]->nbytes : 0;
        }
        rc = node->op->infer (&ctx);
        if (rc == ZI_OK && fused && self->fuse_pool[n] >= 0) {
            rc = s_pooled_shape (out[0]);
        }
        if (rc == ZI_OP_NEEDS_VALUE) {
            rc = zi_fail (err, errlen, ZI_ERR_INVALID, "node '%s' (%s): an input "
                          "value is missing at run time", node->name, node->op_type);
        }
        if (rc == ZI_OK) {
            rc = s_check_sizes (self, node, out, err, errlen);
        }
        if (rc) {
            break;
        }
        for (int k = 0; k < node->n_out && rc == ZI_OK; k++) {
            if (!out[k]) {
                continue;
            }
            int v = fused ? self->fuse_out[n] : node->out[k];
            if (self->kind[v] == S_ARENA && out[k]->nbytes == planned[k]) {
                out[k]->data = self->arena + self->offset[v];
                out[k]->owns_data = false;
            }
            else if (self->kind[v] == S_OUTPUT && self->out_alloc && out[k]->nbytes > 0
                     && (out[k]->data = self->out_alloc (self->out_alloc_arg,
                                                         s_output_index (self, v),
                                                         out[k]->nbytes))) {
                //  Written straight where the caller wants it (a message
                //  buffer, shared memory): no copy after the run.
                out[k]->owns_data = false;
                self->external[v] = true;
            }
            else {
                //  DYNAMIC, OUTPUT, or an arena value whose size changed
                //  (cannot happen for a correct infer; handled anyway).
                out[k]->data = s_alloc_data (out[k]->nbytes);
                out[k]->owns_data = true;
                if (!out[k]->data) {
                    rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "node '%s' (%s): cannot "
                                  "allocate %zu bytes", node->name, node->op_type,
                                  out[k]->nbytes);
                }
            }
        }
        if (rc == ZI_OK) {
            struct timespec t0, t1;
            if (self->opts.profile) {
                clock_gettime (CLOCK_MONOTONIC, &t0);
            }
            rc = s_run_node (self, n, fused, &ctx);
            if (self->opts.profile) {
                clock_gettime (CLOCK_MONOTONIC, &t1);
                self->node_seconds[n] += (double) (t1.tv_sec - t0.tv_sec)
                                         + (double) (t1.tv_nsec - t0.tv_nsec) * 1e-9;
            }
        }
        //  Release dynamic buffers whose last reader just ran.
        for (int k = 0; k < node->n_in; k++) {
            int v = node->in[k];
            if (v >= 0 && self->last_use[v] == n && !self->is_output[v]
                && self->vals[v].owns_data && self->kind[v] != S_INPUT) {
                free (self->vals[v].data);
                self->vals[v].data = NULL;
                self->vals[v].owns_data = false;
            }
        }
    }
    if (rc == ZI_OK) {
        //  Hand the outputs over: owned ones move, others are copied.
        for (int i = 0; i < self->n_outputs; i++) {
            int v = self->outputs[i];
            zi_tensor_t *t = (zi_tensor_t *) calloc (1, sizeof *t);
            if (!t) {
                rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
                for (int j = 0; j < i; j++) {
                    zi_tensor_destroy (&outs[j]);
                }
                break;
            }
            if (self->vals[v].owns_data) {
                *t = self->vals[v];
                self->vals[v].owns_data = false;
                self->vals[v].data = NULL;
            }
            else if (self->external[v]) {
                //  The caller's memory: a view of it.
                *t = self->vals[v];
                t->owns_data = false;
            }
            else {
                free (t);
                t = zi_tensor_dup (&self->vals[v]);
                if (!t) {
                    rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
                    for (int j = 0; j < i; j++) {
                        zi_tensor_destroy (&outs[j]);
                    }
                    break;
                }
            }
            outs[i] = t;
        }
    }
    //  Whatever is still owned (error paths, dead dynamic values) goes.
    for (int v = 0; v < g->n_values; v++) {
        if (self->kind[v] != S_CONST && self->kind[v] != S_FOLDED
            && self->kind[v] != S_INPUT && self->vals[v].owns_data) {
            free (self->vals[v].data);
            self->vals[v].data = NULL;
            self->vals[v].owns_data = false;
        }
    }
    return rc;
}

int
zi_exec_run_named (zi_exec_t *self, int n, const char *const *names,
                   const zi_tensor_t *const *inputs, zi_tensor_t **out, char *err,
                   size_t errlen)
{
    const zi_tensor_t **ordered = (const zi_tensor_t **) calloc (
        (size_t) (self->n_inputs ? self->n_inputs : 1), sizeof *ordered);
    if (!ordered) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    int rc = ZI_OK;
    for (int k = 0; k < n && rc == ZI_OK; k++) {
        int found = -1;
        for (int i = 0; i < self->n_inputs; i++) {
            if (strcmp (self->g->values[self->inputs[i]].name, names[k]) == 0) {
                found = i;
            }
        }
        if (found < 0) {
            rc = zi_fail (err, errlen, ZI_ERR_NOTFOUND,
                          "'%s' is not an input of this %s", names[k],
                          self->first == 0 && self->last == self->g->n_nodes - 1
                              ? "model" : "segment");
        }
        else if (ordered[found]) {
            rc = zi_fail (err, errlen, ZI_ERR_INVALID, "input '%s' given twice", names[k]);
        }
        else {
            ordered[found] = inputs[k];
        }
    }
    for (int i = 0; i < self->n_inputs && rc == ZI_OK; i++) {
        if (!ordered[i]) {
            rc = zi_fail (err, errlen, ZI_ERR_INVALID, "input '%s' is missing",
                          self->g->values[self->inputs[i]].name);
        }
    }
    if (rc == ZI_OK) {
        rc = zi_exec_run (self, ordered, out, err, errlen);
    }
    free (ordered);
    return rc;
}
