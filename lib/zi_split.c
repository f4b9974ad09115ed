/*  zi_split.c - split one layer along its output channels; see zi_split.h. */
#include "zi_split.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zi_error.h"
#include "zi_exec.h"
#include "zi_ops.h"

//  How a constant input of the split node or of its chain is divided.
typedef enum {
    S_DATA = 0,     //  the activation flowing through (not a constant)
    S_SHARED,       //  broadcast along the channel axis: both parts read it
    S_SLICED,       //  holds one entry per channel along dim `dim`
    S_ABSENT,       //  an omitted optional input
} s_use_t;

typedef struct {
    s_use_t use[8];
    int dim[8];
} s_inputs_t;

typedef struct {
    int node, chain;
    int64_t channels;
    bool channel_last;          //  Gemm / MatMul: channels are the last axis; Conv: axis 1
    int conv_rank;              //  Conv: rank of the weight (= rank of the data)
    s_inputs_t in[1 + ZI_SPLIT_CHAIN_MAX];
} s_probe_t;

static bool
s_is (const zi_node_t *n, const char *op)
{
    return strcmp (n->op_type, op) == 0 && n->domain[0] == '\0';
}

static bool
s_one_of (const zi_node_t *n, const char *const *ops)
{
    for (int i = 0; ops[i]; i++) {
        if (s_is (n, ops[i])) {
            return true;
        }
    }
    return false;
}

//  What may follow a split layer into both parts: elementwise ops, and
//  pools (after a Conv).
static const char *const s_unary[] = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu",
                                      "HardSigmoid", "HardSwish", "Softplus", "Softsign",
                                      "Identity", "Clip", NULL};
static const char *const s_binary[] = {"Add", "Sub", "Mul", "Div", "PRelu", NULL};
static const char *const s_pools[] = {"MaxPool", "AveragePool", NULL};

static const zi_tensor_t *
s_init (const zi_graph_t *g, int v)
{
    return v >= 0 && v < g->n_values ? g->values[v].init : NULL;
}

//  How a constant operand of an op working on the data is divided: it is
//  broadcast against the data (numpy rules, aligned to the right), so the
//  dimension that meets the channel axis decides.
static int
s_classify (const s_probe_t *p, const zi_tensor_t *c, s_use_t *use, int *dim)
{
    int d;
    if (p->channel_last) {
        d = c->rank - 1;
    }
    else {
        d = 1 - (p->conv_rank - c->rank);
    }
    if (d < 0 || d >= c->rank || c->ne[d] == 1) {
        *use = S_SHARED;
        return 0;
    }
    if (c->ne[d] == p->channels) {
        *use = S_SLICED;
        *dim = d;
        return 0;
    }
    return -1;
}

static int
s_readers (const zi_graph_t *g, int v)
{
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        for (int k = 0; k < g->nodes[i].n_in; k++) {
            n += g->nodes[i].in[k] == v ? 1 : 0;
        }
    }
    return n;
}

//  Is node j a channel-wise successor of value `data`? Fills its input uses.
static bool
s_chain_node (const zi_graph_t *g, const s_probe_t *p, int j, int data, s_inputs_t *io)
{
    const zi_node_t *n = &g->nodes[j];
    if (n->n_in < 1 || n->n_in > 8 || n->n_out < 1 || n->out[0] < 0) {
        return false;
    }
    for (int k = 1; k < n->n_out; k++) {
        if (n->out[k] >= 0) {
            return false;       //  MaxPool's Indices, Dropout's mask: not split
        }
    }
    bool un = s_one_of (n, s_unary), bin = s_one_of (n, s_binary), pool = s_one_of (n, s_pools);
    bool bn = s_is (n, "BatchNormalization");
    if (!un && !bin && !pool && !bn) {
        return false;
    }
    if ((pool || bn) && p->channel_last) {
        return false;           //  pools and BN work on axis 1 only
    }
    int seen_data = 0;
    for (int k = 0; k < n->n_in; k++) {
        int v = n->in[k];
        io->use[k] = S_ABSENT;
        if (v < 0) {
            continue;
        }
        if (v == data) {
            //  The data must be the operand the op is "about": input 0,
            //  or either operand of a commutative-enough binary op.
            if (!(k == 0 || (bin && k == 1))) {
                return false;
            }
            io->use[k] = S_DATA;
            seen_data++;
            continue;
        }
        const zi_tensor_t *c = s_init (g, v);
        if (!c) {
            return false;       //  another activation: not channel-wise
        }
        if (bn) {
            if (c->rank != 1 || c->ne[0] != p->channels) {
                return false;
            }
            io->use[k] = S_SLICED;
            io->dim[k] = 0;
            continue;
        }
        if (pool || s_classify (p, c, &io->use[k], &io->dim[k])) {
            return false;
        }
    }
    return seen_data == 1;
}

static int
s_probe (const zi_graph_t *g, int node, s_probe_t *p, char *err, size_t errlen)
{
    memset (p, 0, sizeof *p);
    if (node < 0 || node >= g->n_nodes) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "node %d: the model has %d nodes", node,
                        g->n_nodes);
    }
    const zi_node_t *n = &g->nodes[node];
    p->node = node;
    bool gemm = s_is (n, "Gemm"), matmul = s_is (n, "MatMul"), conv = s_is (n, "Conv");
    if (!gemm && !matmul && !conv) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' is a %s; only Gemm, "
                        "MatMul and Conv layers can be split", node, n->name, n->op_type);
    }
    if (!n->op) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' has no kernel", node,
                        n->name);
    }
    if (n->n_out != 1 || n->out[0] < 0 || n->n_in < 2 || n->in[0] < 0
        || s_init (g, n->in[0])) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' (%s): needs one "
                        "activation input and one output", node, n->name, n->op_type);
    }
    const zi_tensor_t *w = s_init (g, n->in[1]);
    if (!w || !zi_tensor_is_contiguous (w)) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' (%s): its weight "
                        "is not a constant", node, n->name, n->op_type);
    }
    s_inputs_t *io = &p->in[0];
    for (int k = 0; k < n->n_in && k < 8; k++) {
        io->use[k] = n->in[k] < 0 ? S_ABSENT : S_SHARED;
    }
    io->use[0] = S_DATA;
    io->use[1] = S_SLICED;
    if (conv) {
        if (w->rank < 3 || zi_node_attr_int (n, "group", 1) != 1) {
            return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' (Conv): only "
                            "convolutions with group 1 are split", node, n->name);
        }
        p->channels = w->ne[0];
        p->conv_rank = w->rank;
        io->dim[1] = 0;
        if (n->n_in > 2 && n->in[2] >= 0) {
            const zi_tensor_t *b = s_init (g, n->in[2]);
            if (!b || b->rank != 1 || b->ne[0] != p->channels) {
                return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' (Conv): its "
                                "bias is not a constant of %" PRId64 " values", node, n->name,
                                p->channels);
            }
            io->use[2] = S_SLICED;
            io->dim[2] = 0;
        }
    }
    else {
        if (w->rank != 2) {
            return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' (%s): its weight "
                            "has rank %d, not 2", node, n->name, n->op_type, w->rank);
        }
        bool trans_b = gemm && zi_node_attr_int (n, "transB", 0) != 0;
        p->channels = trans_b ? w->ne[0] : w->ne[1];
        p->channel_last = true;
        io->dim[1] = trans_b ? 0 : 1;
        if (gemm && n->n_in > 2 && n->in[2] >= 0) {
            const zi_tensor_t *c = s_init (g, n->in[2]);
            if (!c || !zi_tensor_is_contiguous (c)
                || s_classify (p, c, &io->use[2], &io->dim[2])) {
                return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' (Gemm): C is "
                                "not a constant broadcast along the %" PRId64 " outputs",
                                node, n->name, p->channels);
            }
        }
    }
    if (p->channels < 2) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' (%s) has %" PRId64
                        " output channel(s): nothing to split", node, n->name, n->op_type,
                        p->channels);
    }
    //  The chain: successors that read only the previous output, one each.
    int data = n->out[0];
    while (p->chain < ZI_SPLIT_CHAIN_MAX) {
        int j = node + p->chain + 1;
        if (j >= g->n_nodes || g->values[data].is_output || s_readers (g, data) != 1
            || !g->nodes[j].op
            || !s_chain_node (g, p, j, data, &p->in[p->chain + 1])) {
            break;
        }
        for (int k = 0; k < g->nodes[j].n_in; k++) {
            const zi_tensor_t *c = s_init (g, g->nodes[j].in[k]);
            if (c && !zi_tensor_is_contiguous (c)) {
                return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d: a strided "
                                "constant", j);
            }
        }
        p->chain++;
        data = g->nodes[j].out[0];
    }
    return ZI_OK;
}

int
zi_split_probe (const zi_graph_t *g, int node, int64_t *channels, int *chain, char *err,
                size_t errlen)
{
    s_probe_t p;
    int rc = s_probe (g, node, &p, err, errlen);
    if (rc == ZI_OK) {
        if (channels) {
            *channels = p.channels;
        }
        if (chain) {
            *chain = p.chain;
        }
    }
    return rc;
}

//  ---------------------------------------------------------------------
//  Rewriting

//  A fresh value named base + suffix (a counter appended if taken).
static int
s_new_value (zi_graph_t *g, const char *base, const char *suffix)
{
    char name[512];
    snprintf (name, sizeof name, "%s%s", base, suffix);
    for (int i = 2; zi_graph_find_value (g, name) >= 0 && i < 1000000; i++) {
        snprintf (name, sizeof name, "%s%s.%d", base, suffix, i);
    }
    return zi_graph_add_value (g, name);
}

//  Channels [lo, hi) of constant c along dim d, as a new tensor.
static zi_tensor_t *
s_slice (const zi_tensor_t *c, int d, int64_t lo, int64_t hi)
{
    int64_t shape[ZI_MAX_RANK];
    memcpy (shape, c->ne, sizeof shape);
    shape[d] = hi - lo;
    zi_tensor_t *t = zi_tensor_new (c->dtype, c->rank, shape);
    if (!t) {
        return NULL;
    }
    size_t es = zi_dtype_size (c->dtype);
    size_t inner = es;
    for (int i = d + 1; i < c->rank; i++) {
        inner *= (size_t) c->ne[i];
    }
    size_t outer = 1;
    for (int i = 0; i < d; i++) {
        outer *= (size_t) c->ne[i];
    }
    size_t src_row = (size_t) c->ne[d] * inner, dst_row = (size_t) (hi - lo) * inner;
    for (size_t o = 0; o < outer && dst_row > 0; o++) {
        memcpy ((char *) t->data + o * dst_row,
                (const char *) c->data + o * src_row + (size_t) lo * inner, dst_row);
    }
    return t;
}

static int
s_copy_attrs (zi_graph_t *g, int dst, const zi_node_t *src)
{
    for (int a = 0; a < src->n_attr; a++) {
        const zi_attr_t *s = &src->attr[a];
        zi_attr_t t = {0};
        t.name = strdup (s->name);
        t.type = s->type;
        t.f = s->f;
        t.i = s->i;
        t.n = s->n;
        t.s_len = s->s_len;
        bool ok = t.name != NULL;
        if (ok && s->s) {
            t.s = (char *) malloc (s->s_len + 1);
            ok = t.s != NULL;
            if (ok) {
                memcpy (t.s, s->s, s->s_len + 1);
            }
        }
        if (ok && s->t) {
            t.t = zi_tensor_dup (s->t);
            ok = t.t != NULL;
        }
        if (ok && s->floats) {
            t.floats = (float *) malloc ((size_t) (s->n > 0 ? s->n : 1) * sizeof (float));
            ok = t.floats != NULL;
            if (ok && s->n > 0) {
                memcpy (t.floats, s->floats, (size_t) s->n * sizeof (float));
            }
        }
        if (ok && s->ints) {
            t.ints = (int64_t *) malloc ((size_t) (s->n > 0 ? s->n : 1) * sizeof (int64_t));
            ok = t.ints != NULL;
            if (ok && s->n > 0) {
                memcpy (t.ints, s->ints, (size_t) s->n * sizeof (int64_t));
            }
        }
        if (ok && s->strings) {
            t.strings = (char **) calloc ((size_t) (s->n > 0 ? s->n : 1), sizeof (char *));
            ok = t.strings != NULL;
            for (int i = 0; ok && i < s->n; i++) {
                t.strings[i] = strdup (s->strings[i]);
                ok = t.strings[i] != NULL;
            }
        }
        if (!ok || zi_graph_node_add_attr (g, dst, &t)) {
            zi_attr_clear (&t);
            return ZI_ERR_NOMEM;
        }
    }
    return ZI_OK;
}

//  Append the copy of node `src` for one part: inputs as `io` says (data ->
//  `data`, sliced constants -> new initializers), output `out`.
static int
s_emit (zi_graph_t *g, int src, const s_inputs_t *io, int data, int out, int part, int64_t lo,
        int64_t hi)
{
    const zi_node_t *n = &g->nodes[src];
    int in[8];
    for (int k = 0; k < n->n_in; k++) {
        int v = n->in[k];
        switch (io->use[k]) {
            case S_DATA:
                in[k] = data;
                break;
            case S_SLICED: {
                int nv = s_new_value (g, g->values[v].name, part ? ".zsplit1" : ".zsplit0");
                if (nv < 0) {
                    return nv;
                }
                zi_value_t *val = &g->values[nv];
                const zi_value_t *orig = &g->values[v];
                val->init = s_slice (orig->init, io->dim[k], lo, hi);
                if (!val->init) {
                    return ZI_ERR_NOMEM;
                }
                val->dtype = orig->init->dtype;
                val->rank = orig->init->rank;
                memcpy (val->shape, val->init->ne, sizeof val->shape);
                in[k] = nv;
                break;
            }
            default:
                in[k] = v;
                break;
        }
    }
    char name[512];
    snprintf (name, sizeof name, "%s.zsplit%d", n->name, part);
    int ni = zi_graph_add_node (g, n->op_type, n->domain, name, n->n_in, in, 1, &out);
    if (ni < 0) {
        return ni;
    }
    //  n may have moved (the node array grew): index again.
    const zi_node_t *again = &g->nodes[src];
    int rc = s_copy_attrs (g, ni, again);
    if (rc) {
        return rc;
    }
    g->nodes[ni].op = again->op;
    return ni;
}

static void
s_set_producers (zi_graph_t *g)
{
    for (int v = 0; v < g->n_values; v++) {
        g->values[v].producer = -1;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        for (int k = 0; k < g->nodes[i].n_out; k++) {
            if (g->nodes[i].out[k] >= 0) {
                g->values[g->nodes[i].out[k]].producer = i;
            }
        }
    }
}

//  Append Concat(part_out[0], part_out[1], axis) -> final.
static int
s_add_concat (zi_graph_t *g, int node, const int *part_out, int final, int64_t axis_value,
              char *err, size_t errlen)
{
    char name[512];
    snprintf (name, sizeof name, "%s.zsplit_concat", g->nodes[node].name);
    int cat = zi_graph_add_node (g, "Concat", "", name, 2, part_out, 1, &final);
    if (cat < 0) {
        return zi_fail (err, errlen, cat, "out of memory splitting node %d", node);
    }
    zi_attr_t axis = {0}, opset = {0};
    axis.name = strdup ("axis");
    axis.type = ZI_ATTR_INT;
    axis.i = axis_value;
    opset.name = strdup ("__opset");
    opset.type = ZI_ATTR_INT;
    opset.i = zi_node_attr_int (&g->nodes[node], "__opset", g->opset);
    if (opset.i < 13) {
        opset.i = 13;       //  Concat-11 and later take a negative axis
    }
    if (!axis.name || !opset.name || zi_graph_node_add_attr (g, cat, &axis)
        || zi_graph_node_add_attr (g, cat, &opset)) {
        zi_attr_clear (&axis);
        zi_attr_clear (&opset);
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory splitting node %d", node);
    }
    g->nodes[cat].op = zi_op_find ("Concat", "");
    char why[256];
    if (!g->nodes[cat].op || zi_op_check_node (&g->nodes[cat], why, sizeof why)) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d: no Concat kernel", node);
    }
    return ZI_OK;
}

//  Put the nodes appended since n0 in place of node..last (which go), fix
//  the producers, and free the constants in consts[] nothing reads now.
static int
s_reorder (zi_graph_t *g, int node, int last, int n0, const int *consts, int n_consts,
           char *err, size_t errlen)
{
    int added = g->n_nodes - n0;
    zi_node_t *order = (zi_node_t *) malloc ((size_t) g->n_nodes * sizeof *order);
    if (!order) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory splitting node %d", node);
    }
    int w = 0;
    for (int i = 0; i < node; i++) {
        order[w++] = g->nodes[i];
    }
    for (int i = n0; i < n0 + added; i++) {
        order[w++] = g->nodes[i];
    }
    for (int i = last + 1; i < n0; i++) {
        order[w++] = g->nodes[i];
    }
    for (int i = node; i <= last; i++) {
        zi_graph_node_clear (&g->nodes[i]);
    }
    memcpy (g->nodes, order, (size_t) w * sizeof *order);
    free (order);
    g->n_nodes = w;
    s_set_producers (g);
    for (int i = 0; i < n_consts; i++) {
        int v = consts[i];
        if (g->values[v].init && !g->values[v].is_output && s_readers (g, v) == 0) {
            zi_tensor_destroy (&g->values[v].init);
        }
    }
    return ZI_OK;
}

int
zi_split_apply (zi_graph_t *g, int node, int64_t at, char *err, size_t errlen)
{
    s_probe_t p;
    int rc = s_probe (g, node, &p, err, errlen);
    if (rc) {
        return rc;
    }
    if (at <= 0 || at >= p.channels) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "node %d '%s' has %" PRId64 " output "
                        "channels: the split point must be 1..%" PRId64 " (got %" PRId64 ")",
                        node, g->nodes[node].name, p.channels, p.channels - 1, at);
    }
    const int n0 = g->n_nodes, c = p.chain, last = node + c;
    const int final = g->nodes[last].out[0];     //  the Concat will produce it
    //  Constants read by the replaced nodes: freed below if nothing else does.
    int consts[8 * (1 + ZI_SPLIT_CHAIN_MAX)], n_consts = 0;
    for (int j = node; j <= last; j++) {
        for (int k = 0; k < g->nodes[j].n_in; k++) {
            if (s_init (g, g->nodes[j].in[k])) {
                consts[n_consts++] = g->nodes[j].in[k];
            }
        }
    }
    int part_out[2] = {-1, -1};
    for (int part = 0; part < 2; part++) {
        int64_t lo = part ? at : 0, hi = part ? p.channels : at;
        int data = g->nodes[node].in[0];
        for (int j = node; j <= last; j++) {
            //  Part A keeps the original intermediate values; part B and
            //  the parts' last outputs get new ones.
            int orig = g->nodes[j].out[0];
            int out = orig;
            if (part == 0 && j != last) {
                //  Now holds channels 0..at-1 only: forget a declared shape
                //  (value_info) of all N channels.
                g->values[orig].rank = -1;
            }
            if (part == 1 || j == last) {
                char base[480];
                snprintf (base, sizeof base, "%s", g->values[orig].name);
                out = s_new_value (g, base, part ? ".zsplit1" : ".zsplit0");
                if (out < 0) {
                    return zi_fail (err, errlen, out, "out of memory splitting node %d", node);
                }
                g->values[out].dtype = g->values[orig].dtype;
            }
            int ni = s_emit (g, j, &p.in[j - node], data, out, part, lo, hi);
            if (ni < 0) {
                return zi_fail (err, errlen, ni, "out of memory splitting node %d", node);
            }
            data = out;
        }
        part_out[part] = data;
    }
    //  Concat of the two parts along the channel axis.
    int rc2 = s_add_concat (g, node, part_out, final, p.channel_last ? -1 : 1, err, errlen);
    if (rc2) {
        return rc2;
    }
    return s_reorder (g, node, last, n0, consts, n_consts, err, errlen);
}

int
zi_split_apply_all (zi_graph_t *g, const zi_split_t *splits, size_t n, char *err,
                    size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        char why[512];
        if (splits[i].node < 0 || splits[i].node >= g->n_nodes) {
            return zi_fail (err, errlen, ZI_ERR_INVALID, "split %zu (node %" PRId64 " at %"
                            PRId64 "): the model has %d nodes at this point", i,
                            splits[i].node, splits[i].at, g->n_nodes);
        }
        int rc = splits[i].axis == ZI_SPLIT_ROWS
                     ? zi_split_apply_rows (g, (int) splits[i].node, splits[i].at, why,
                                            sizeof why)
                     : zi_split_apply (g, (int) splits[i].node, splits[i].at, why, sizeof why);
        if (rc) {
            return zi_fail (err, errlen, rc, "split %zu (node %" PRId64 " at %" PRId64
                            "): %s", i, splits[i].node, splits[i].at, why);
        }
    }
    return ZI_OK;
}

//  ---------------------------------------------------------------------
//  Rows

typedef struct {
    int node, chain;
    int64_t h;                  //  input rows of the Conv
    int64_t ho;                 //  its output rows
    int64_t kh, sh, dh;         //  kernel, stride, dilation along H
    int64_t pads[4];            //  top, left, bottom, right
    int64_t step;               //  output rows per row after the chain's pools
} s_rows_t;

//  The Conv's input height, from the declared shape or by planning the
//  nodes before it on the model's declared inputs (batch 1).
static int
s_input_height (const zi_graph_t *g, int node, int64_t *h, char *err, size_t errlen)
{
    int x = g->nodes[node].in[0];
    const zi_value_t *xv = &g->values[x];
    if (xv->rank == 4 && xv->shape[2] > 0) {
        *h = xv->shape[2];
        return ZI_OK;
    }
    if (node == 0 || xv->producer < 0) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s': the height of its "
                        "input is not fixed by the model", node, g->nodes[node].name);
    }
    zi_exec_t *ex = zi_exec_new (g, 0, node - 1, NULL, err, errlen);
    if (!ex) {
        return ZI_ERR_UNSUPPORTED;
    }
    int rc = ZI_OK;
    int n = zi_exec_n_inputs (ex);
    zi_tensor_t probe[64];
    const zi_tensor_t *in[64];
    if (n > 64) {
        rc = zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d: too many inputs", node);
    }
    for (int i = 0; rc == ZI_OK && i < n; i++) {
        const zi_value_t *v = zi_exec_input (ex, i);
        int64_t shape[ZI_MAX_RANK];
        if (v->rank < 0 || v->init) {
            rc = zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s': input '%s' declares "
                          "no shape", node, g->nodes[node].name, v->name);
            break;
        }
        for (int d = 0; d < v->rank; d++) {
            shape[d] = v->shape[d] >= 0 ? v->shape[d] : 1;
        }
        memset (&probe[i], 0, sizeof probe[i]);
        if (zi_tensor_set_shape (&probe[i], v->dtype ? v->dtype : ZI_DT_F32, v->rank, shape)) {
            rc = zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d: input '%s' has a bad "
                          "shape", node, v->name);
            break;
        }
        in[i] = &probe[i];
    }
    if (rc == ZI_OK) {
        rc = zi_exec_prepare (ex, in, err, errlen);
    }
    if (rc == ZI_OK) {
        const zi_tensor_t *t = zi_exec_value (ex, x);
        if (!t || t->rank != 4 || t->ne[2] < 1) {
            rc = zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s': the height of its "
                          "input is not known before it runs", node, g->nodes[node].name);
        }
        else {
            *h = t->ne[2];
        }
    }
    zi_exec_destroy (&ex);
    return rc;
}

//  Is node j a row-wise successor of value `data`? Multiplies *step by a
//  pool's stride. Constants must not vary along H (axis 2 of 4).
static bool
s_rows_chain_node (const zi_graph_t *g, int j, int data, int64_t *step)
{
    const zi_node_t *n = &g->nodes[j];
    if (n->n_in < 1 || n->n_in > 8 || n->n_out < 1 || n->out[0] < 0 || n->in[0] != data) {
        return false;
    }
    for (int k = 1; k < n->n_out; k++) {
        if (n->out[k] >= 0) {
            return false;
        }
    }
    bool un = s_one_of (n, s_unary), bin = s_one_of (n, s_binary), pool = s_one_of (n, s_pools);
    bool bn = s_is (n, "BatchNormalization");
    if (!un && !bin && !pool && !bn) {
        return false;
    }
    for (int k = 1; k < n->n_in; k++) {
        int v = n->in[k];
        if (v < 0) {
            continue;
        }
        const zi_tensor_t *c = s_init (g, v);
        if (!c || v == data) {
            return false;
        }
        //  BN's parameters are per channel; others broadcast right-aligned
        //  against [N, C, H, W]: the dim meeting H must be absent or 1.
        int d = c->rank - 2;
        if (!bn && d >= 0 && c->ne[d] != 1) {
            return false;
        }
        if (!zi_tensor_is_contiguous (c)) {
            return false;
        }
    }
    if (pool) {
        int nk = 0, ns = 0, np = 0, nd = 0;
        const int64_t *k = zi_node_attr_ints (n, "kernel_shape", &nk);
        const int64_t *s = zi_node_attr_ints (n, "strides", &ns);
        const int64_t *p = zi_node_attr_ints (n, "pads", &np);
        const int64_t *d = zi_node_attr_ints (n, "dilations", &nd);
        const char *ap = zi_node_attr_string (n, "auto_pad", "NOTSET");
        if (nk != 2 || (ns && ns != 2) || (np && np != 4) || (nd && nd != 2)
            || zi_node_attr_int (n, "ceil_mode", 0) != 0
            || (strcmp (ap, "NOTSET") != 0 && strcmp (ap, "VALID") != 0)) {
            return false;
        }
        int64_t sh = ns ? s[0] : 1;
        if (k[0] != sh || sh < 1 || (np && (p[0] != 0 || p[2] != 0)) || (nd && d[0] != 1)) {
            return false;
        }
        *step *= sh;
    }
    return true;
}

static int
s_probe_rows (const zi_graph_t *g, int node, s_rows_t *r, char *err, size_t errlen)
{
    memset (r, 0, sizeof *r);
    if (node < 0 || node >= g->n_nodes) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "node %d: the model has %d nodes", node,
                        g->n_nodes);
    }
    const zi_node_t *n = &g->nodes[node];
    r->node = node;
    if (!s_is (n, "Conv") || !n->op) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' is a %s; only Conv "
                        "layers can be split along their rows", node, n->name, n->op_type);
    }
    const zi_tensor_t *w = n->n_in >= 2 ? s_init (g, n->in[1]) : NULL;
    if (n->n_out != 1 || n->out[0] < 0 || n->in[0] < 0 || s_init (g, n->in[0]) || !w
        || w->rank != 4) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' (Conv): only 2-D "
                        "convolutions of an activation with a constant weight are split "
                        "along their rows", node, n->name);
    }
    const char *ap = zi_node_attr_string (n, "auto_pad", "NOTSET");
    if (strcmp (ap, "NOTSET") != 0) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' (Conv): auto_pad %s; "
                        "only explicit pads are split along the rows", node, n->name, ap);
    }
    int ns = 0, np = 0, nd = 0;
    const int64_t *s = zi_node_attr_ints (n, "strides", &ns);
    const int64_t *p = zi_node_attr_ints (n, "pads", &np);
    const int64_t *d = zi_node_attr_ints (n, "dilations", &nd);
    if ((ns && ns != 2) || (np && np != 4) || (nd && nd != 2)) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' (Conv): malformed "
                        "strides, pads or dilations", node, n->name);
    }
    r->kh = w->ne[2];
    r->sh = ns ? s[0] : 1;
    r->dh = nd ? d[0] : 1;
    for (int i = 0; i < 4; i++) {
        r->pads[i] = np ? p[i] : 0;
    }
    if (r->sh < 1 || r->dh < 1 || r->kh < 1 || r->pads[0] < 0 || r->pads[2] < 0
        || r->pads[0] >= r->dh * (r->kh - 1) + 1) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' (Conv): strides, "
                        "dilations or pads it cannot be split with", node, n->name);
    }
    int rc = s_input_height (g, node, &r->h, err, errlen);
    if (rc) {
        return rc;
    }
    int64_t span = r->h + r->pads[0] + r->pads[2] - r->dh * (r->kh - 1) - 1;
    r->ho = span >= 0 ? span / r->sh + 1 : 0;
    r->step = 1;
    int data = n->out[0];
    while (r->chain < ZI_SPLIT_CHAIN_MAX) {
        int j = node + r->chain + 1;
        int64_t step = r->step;
        if (j >= g->n_nodes || g->values[data].is_output || s_readers (g, data) != 1
            || !g->nodes[j].op || !s_rows_chain_node (g, j, data, &step)) {
            break;
        }
        r->step = step;
        r->chain++;
        data = g->nodes[j].out[0];
    }
    if (r->ho < 2 * r->step) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s' (Conv): %" PRId64
                        " output row(s) in steps of %" PRId64 ": nothing to split", node,
                        n->name, r->ho, r->step);
    }
    return ZI_OK;
}

int
zi_split_probe_rows (const zi_graph_t *g, int node, int64_t *rows, int64_t *step, int *chain,
                     char *err, size_t errlen)
{
    s_rows_t r;
    int rc = s_probe_rows (g, node, &r, err, errlen);
    if (rc == ZI_OK) {
        if (rows) {
            *rows = r.ho;
        }
        if (step) {
            *step = r.step;
        }
        if (chain) {
            *chain = r.chain;
        }
    }
    return rc;
}

//  An INTS attribute, replaced if the node has it.
static int
s_set_ints (zi_graph_t *g, int ni, const char *name, const int64_t *v, int n)
{
    zi_node_t *node = &g->nodes[ni];
    for (int a = 0; a < node->n_attr; a++) {
        zi_attr_t *at = &node->attr[a];
        if (strcmp (at->name, name) == 0 && at->type == ZI_ATTR_INTS && at->n == n) {
            memcpy (at->ints, v, (size_t) n * sizeof *v);
            return ZI_OK;
        }
    }
    zi_attr_t t = {0};
    t.name = strdup (name);
    t.type = ZI_ATTR_INTS;
    t.n = n;
    t.ints = (int64_t *) malloc ((size_t) n * sizeof (int64_t));
    if (!t.name || !t.ints) {
        zi_attr_clear (&t);
        return ZI_ERR_NOMEM;
    }
    memcpy (t.ints, v, (size_t) n * sizeof *v);
    if (zi_graph_node_add_attr (g, ni, &t)) {
        zi_attr_clear (&t);
        return ZI_ERR_NOMEM;
    }
    return ZI_OK;
}

//  Append Slice(x, rows [start, end) of axis 2) -> a new value; returns it.
static int
s_add_row_slice (zi_graph_t *g, int node, int x, int part, int64_t start, int64_t end)
{
    char base[480];
    snprintf (base, sizeof base, "%s", g->values[x].name);
    int out = s_new_value (g, base, part ? ".zrows1" : ".zrows0");
    if (out < 0) {
        return out;
    }
    g->values[out].dtype = g->values[x].dtype;
    char name[512];
    snprintf (name, sizeof name, "%s.zslice%d", g->nodes[node].name, part);
    int ni = zi_graph_add_node (g, "Slice", "", name, 1, &x, 1, &out);
    if (ni < 0) {
        return ni;
    }
    int64_t a = start, b = end, axis = 2;
    zi_attr_t op = {0};
    op.name = strdup ("__opset");
    op.type = ZI_ATTR_INT;
    op.i = 9;           //  starts / ends / axes as attributes (Slice-1)
    if (!op.name || zi_graph_node_add_attr (g, ni, &op)) {
        zi_attr_clear (&op);
        return ZI_ERR_NOMEM;
    }
    if (s_set_ints (g, ni, "starts", &a, 1) || s_set_ints (g, ni, "ends", &b, 1)
        || s_set_ints (g, ni, "axes", &axis, 1)) {
        return ZI_ERR_NOMEM;
    }
    g->nodes[ni].op = zi_op_find ("Slice", "");
    char why[256];
    if (!g->nodes[ni].op || zi_op_check_node (&g->nodes[ni], why, sizeof why)) {
        return ZI_ERR_UNSUPPORTED;
    }
    return out;
}

int
zi_split_apply_rows (zi_graph_t *g, int node, int64_t at, char *err, size_t errlen)
{
    s_rows_t r;
    int rc = s_probe_rows (g, node, &r, err, errlen);
    if (rc) {
        return rc;
    }
    if (at <= 0 || at >= r.ho || at % r.step != 0) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "node %d '%s' has %" PRId64 " output "
                        "rows: the split row must be a multiple of %" PRId64 " in 1..%" PRId64
                        " (got %" PRId64 ")", node, g->nodes[node].name, r.ho, r.step,
                        r.ho - 1, at);
    }
    const int n0 = g->n_nodes, c = r.chain, last = node + c;
    const int final = g->nodes[last].out[0];
    const int x = g->nodes[node].in[0];
    //  Input rows each part reads, and the padding it still needs:
    //  part A's output rows 0..at-1 read rows -top .. (at-1)*sh - top +
    //  dh*(kh-1); part B's at..ho-1 start at at*sh - top.
    int64_t reach = r.dh * (r.kh - 1) + 1;
    int64_t a_end = (at - 1) * r.sh - r.pads[0] + reach;
    int64_t a_pad_bottom = a_end > r.h ? a_end - r.h : 0;
    a_end = a_end < r.h ? a_end : r.h;
    int64_t b_start = at * r.sh - r.pads[0];
    int64_t b_pad_top = b_start < 0 ? -b_start : 0;
    b_start = b_start > 0 ? b_start : 0;
    if (a_end < 1 || b_start >= r.h) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node %d '%s': row %" PRId64 " leaves "
                        "a part without input rows", node, g->nodes[node].name, at);
    }
    s_inputs_t shared;
    memset (&shared, 0, sizeof shared);
    shared.use[0] = S_DATA;
    for (int k = 1; k < 8; k++) {
        shared.use[k] = S_SHARED;
    }
    int part_out[2] = {-1, -1};
    for (int part = 0; part < 2; part++) {
        int64_t s0 = part ? b_start : 0, s1 = part ? r.h : a_end;
        int data = x;
        if (s0 > 0 || s1 < r.h) {
            data = s_add_row_slice (g, node, x, part, s0, s1);
            if (data < 0) {
                return zi_fail (err, errlen, data == ZI_ERR_UNSUPPORTED ? data : ZI_ERR_NOMEM,
                                "cannot add a Slice splitting node %d", node);
            }
        }
        for (int j = node; j <= last; j++) {
            int orig = g->nodes[j].out[0];
            char base[480];
            snprintf (base, sizeof base, "%s", g->values[orig].name);
            int out = s_new_value (g, base, part ? ".zsplit1" : ".zsplit0");
            if (out < 0) {
                return zi_fail (err, errlen, out, "out of memory splitting node %d", node);
            }
            g->values[out].dtype = g->values[orig].dtype;
            int ni = s_emit (g, j, &shared, data, out, part, 0, 0);
            if (ni < 0) {
                return zi_fail (err, errlen, ni, "out of memory splitting node %d", node);
            }
            if (j == node) {
                int64_t pads[4] = {part ? b_pad_top : r.pads[0], r.pads[1],
                                   part ? r.pads[2] : a_pad_bottom, r.pads[3]};
                if (s_set_ints (g, ni, "pads", pads, 4)) {
                    return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory splitting "
                                    "node %d", node);
                }
            }
            data = out;
        }
        part_out[part] = data;
    }
    rc = s_add_concat (g, node, part_out, final, 2, err, errlen);
    if (rc) {
        return rc;
    }
    return s_reorder (g, node, last, n0, NULL, 0, err, errlen);
}
