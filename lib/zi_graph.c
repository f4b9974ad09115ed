/*  zi_graph.c - graph storage, lookup and topological sort; see zi_graph.h. */
#include "zi_graph.h"

#include <stdlib.h>
#include <string.h>

#include "zi_error.h"
#include "zi_ops.h"

zi_graph_t *
zi_graph_new (void)
{
    zi_graph_t *self = (zi_graph_t *) calloc (1, sizeof *self);
    if (self) {
        self->opset = 0;
        self->name = strdup ("");
        if (!self->name) {
            free (self);
            return NULL;
        }
    }
    return self;
}

void
zi_attr_clear (zi_attr_t *attr)
{
    if (!attr) {
        return;
    }
    free (attr->name);
    free (attr->s);
    zi_tensor_destroy (&attr->t);
    free (attr->floats);
    free (attr->ints);
    if (attr->strings) {
        for (int i = 0; i < attr->n; i++) {
            free (attr->strings[i]);
        }
        free (attr->strings);
    }
    memset (attr, 0, sizeof *attr);
}

void
zi_graph_node_clear (zi_node_t *node)
{
    free (node->name);
    free (node->op_type);
    free (node->domain);
    free (node->in);
    free (node->out);
    for (int i = 0; i < node->n_attr; i++) {
        zi_attr_clear (&node->attr[i]);
    }
    free (node->attr);
    memset (node, 0, sizeof *node);
}

void
zi_graph_destroy (zi_graph_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zi_graph_t *self = *self_p;
    for (int i = 0; i < self->n_values; i++) {
        free (self->values[i].name);
        zi_tensor_destroy (&self->values[i].init);
    }
    free (self->values);
    for (int i = 0; i < self->n_nodes; i++) {
        zi_graph_node_clear (&self->nodes[i]);
    }
    free (self->nodes);
    free (self->inputs);
    free (self->outputs);
    free (self->name);
    //  Weights may be views into the mapping: release it after the values.
    if (self->mapping && self->mapping_free) {
        self->mapping_free (self->mapping);
    }
    free (self);
    *self_p = NULL;
}

int
zi_graph_find_value (const zi_graph_t *self, const char *name)
{
    //  Linear scan: graphs we serve have thousands of values at most and
    //  lookups happen at load time only.
    for (int i = 0; i < self->n_values; i++) {
        if (strcmp (self->values[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

int
zi_graph_add_value (zi_graph_t *self, const char *name)
{
    if (!name) {
        return ZI_ERR_INVALID;
    }
    if (zi_graph_find_value (self, name) >= 0) {
        return ZI_ERR_MALFORMED;
    }
    if (self->n_values == self->cap_values) {
        int cap = self->cap_values ? self->cap_values * 2 : 64;
        zi_value_t *values = (zi_value_t *) realloc (self->values,
                                                     (size_t) cap * sizeof *values);
        if (!values) {
            return ZI_ERR_NOMEM;
        }
        self->values = values;
        self->cap_values = cap;
    }
    zi_value_t *v = &self->values[self->n_values];
    memset (v, 0, sizeof *v);
    v->name = strdup (name);
    if (!v->name) {
        return ZI_ERR_NOMEM;
    }
    v->dtype = ZI_DT_UNDEFINED;
    v->rank = -1;
    v->producer = -1;
    return self->n_values++;
}

int
zi_graph_intern_value (zi_graph_t *self, const char *name)
{
    int idx = zi_graph_find_value (self, name);
    return idx >= 0 ? idx : zi_graph_add_value (self, name);
}

static int *
s_dup_ints (const int *src, int n)
{
    int *dst = (int *) malloc ((size_t) (n > 0 ? n : 1) * sizeof *dst);
    if (dst && n > 0) {
        memcpy (dst, src, (size_t) n * sizeof *dst);
    }
    return dst;
}

int
zi_graph_add_node (zi_graph_t *self, const char *op_type, const char *domain,
                   const char *name, int n_in, const int *in, int n_out,
                   const int *out)
{
    if (!op_type || n_in < 0 || n_out < 0) {
        return ZI_ERR_INVALID;
    }
    if (self->n_nodes == self->cap_nodes) {
        int cap = self->cap_nodes ? self->cap_nodes * 2 : 64;
        zi_node_t *nodes = (zi_node_t *) realloc (self->nodes,
                                                  (size_t) cap * sizeof *nodes);
        if (!nodes) {
            return ZI_ERR_NOMEM;
        }
        self->nodes = nodes;
        self->cap_nodes = cap;
    }
    zi_node_t *node = &self->nodes[self->n_nodes];
    memset (node, 0, sizeof *node);
    node->op_type = strdup (op_type);
    node->domain = strdup (domain ? domain : "");
    node->name = strdup (name ? name : "");
    node->in = s_dup_ints (in, n_in);
    node->out = s_dup_ints (out, n_out);
    node->n_in = n_in;
    node->n_out = n_out;
    if (!node->op_type || !node->domain || !node->name || !node->in || !node->out) {
        zi_graph_node_clear (node);
        return ZI_ERR_NOMEM;
    }
    return self->n_nodes++;
}

int
zi_graph_node_add_attr (zi_graph_t *self, int node_idx, zi_attr_t *attr)
{
    if (node_idx < 0 || node_idx >= self->n_nodes || !attr || !attr->name) {
        return ZI_ERR_INVALID;
    }
    zi_node_t *node = &self->nodes[node_idx];
    zi_attr_t *attrs = (zi_attr_t *) realloc (node->attr,
                                              (size_t) (node->n_attr + 1) * sizeof *attrs);
    if (!attrs) {
        return ZI_ERR_NOMEM;
    }
    node->attr = attrs;
    node->attr[node->n_attr++] = *attr;
    memset (attr, 0, sizeof *attr);
    return ZI_OK;
}

int
zi_graph_sort (zi_graph_t *self, char *err, size_t errlen)
{
    int n = self->n_nodes;
    //  Kahn's algorithm, picking the lowest-index ready node each round so
    //  that an already-sorted file keeps its order (stable, and what users
    //  see in netron matches our node numbers).
    int *pending = (int *) calloc ((size_t) (n > 0 ? n : 1), sizeof (int));
    int *order = (int *) malloc ((size_t) (n > 0 ? n : 1) * sizeof (int));
    int *producer = (int *) malloc ((size_t) (self->n_values > 0 ? self->n_values : 1) * sizeof (int));
    bool *done = (bool *) calloc ((size_t) (n > 0 ? n : 1), sizeof (bool));
    int rc = ZI_OK;
    if (!pending || !order || !producer || !done) {
        rc = ZI_ERR_NOMEM;
        goto out;
    }
    for (int v = 0; v < self->n_values; v++) {
        producer[v] = -1;
    }
    for (int i = 0; i < n; i++) {
        for (int o = 0; o < self->nodes[i].n_out; o++) {
            int v = self->nodes[i].out[o];
            if (v < 0) {
                continue;
            }
            if (producer[v] >= 0 || self->values[v].init || self->values[v].is_input) {
                rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                              "node '%s' (%s): output '%s' is already defined",
                              self->nodes[i].name, self->nodes[i].op_type,
                              self->values[v].name);
                goto out;
            }
            producer[v] = i;
        }
    }
    for (int i = 0; i < n; i++) {
        zi_node_t *node = &self->nodes[i];
        for (int k = 0; k < node->n_in; k++) {
            int v = node->in[k];
            if (v < 0) {
                continue;
            }
            if (producer[v] < 0 && !self->values[v].init && !self->values[v].is_input) {
                rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                              "node '%s' (%s): input '%s' is neither a graph "
                              "input, an initializer nor a node output",
                              node->name, node->op_type, self->values[v].name);
                goto out;
            }
            if (producer[v] >= 0) {
                pending[i]++;
            }
        }
    }
    int count = 0;
    int start = 0;
    while (count < n) {
        int pick = -1;
        for (int i = start; i < n; i++) {
            if (!done[i] && pending[i] == 0) {
                pick = i;
                break;
            }
        }
        if (pick < 0) {
            for (int i = 0; i < n; i++) {
                if (!done[i]) {
                    rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                  "node '%s' (%s): is part of a cycle",
                                  self->nodes[i].name, self->nodes[i].op_type);
                    goto out;
                }
            }
        }
        done[pick] = true;
        order[count++] = pick;
        //  Release consumers of pick's outputs. A node can be made ready with
        //  a lower index than pick: restart the scan from there.
        for (int o = 0; o < self->nodes[pick].n_out; o++) {
            int v = self->nodes[pick].out[o];
            if (v < 0) {
                continue;
            }
            for (int i = 0; i < n; i++) {
                for (int k = 0; k < self->nodes[i].n_in; k++) {
                    if (self->nodes[i].in[k] == v) {
                        pending[i]--;
                        if (pending[i] == 0 && i < start) {
                            start = i;
                        }
                    }
                }
            }
        }
        while (start < n && done[start]) {
            start++;
        }
    }
    {
        zi_node_t *sorted = (zi_node_t *) malloc ((size_t) (n > 0 ? n : 1) * sizeof *sorted);
        if (!sorted) {
            rc = ZI_ERR_NOMEM;
            goto out;
        }
        for (int i = 0; i < n; i++) {
            sorted[i] = self->nodes[order[i]];
        }
        if (n > 0) {
            memcpy (self->nodes, sorted, (size_t) n * sizeof *sorted);
        }
        free (sorted);
    }
    for (int v = 0; v < self->n_values; v++) {
        self->values[v].producer = -1;
    }
    for (int i = 0; i < n; i++) {
        for (int o = 0; o < self->nodes[i].n_out; o++) {
            if (self->nodes[i].out[o] >= 0) {
                self->values[self->nodes[i].out[o]].producer = i;
            }
        }
    }
out:
    free (pending);
    free (order);
    free (producer);
    free (done);
    return rc;
}

//  -------------------------------------------------------------------------
//  Constant folding

//  The bytes all folds of one graph may read and write together: this
//  allowance plus S_FOLD_WEIGHT_FACTOR times the graph's constant bytes
//  (zi_graph_fold_constants); each folded node also costs S_FOLD_NODE_COST.
#define S_FOLD_ALLOWANCE     ((size_t) 4 * ZI_GRAPH_FOLD_GROWTH)
#define S_FOLD_WEIGHT_FACTOR ((size_t) 8)
#define S_FOLD_NODE_COST     ((size_t) 256)

//  Operators folded at load: those whose kernel's time is linear in the
//  bytes it reads and writes (data movement, element-wise, reductions), so
//  that the fold budget below bounds the time as well as the memory. Why a
//  list: the loader runs on untrusted files, and a Conv, MatMul or pool of
//  constants costs what its shapes and attributes say (a 200-byte model can
//  ask for a 1e12-MAC Conv, found by fuzz_onnx). Those stay nodes; the
//  executor runs them like any other.
static const char *const s_fold_ops[] = {
    //  shape and data movement (zi_ops_shape.c)
    "Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
    "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements",
    "Expand", "Tile", "Pad", "Shape", "Size", "ConstantOfShape", "Range",
    //  element-wise (zi_ops_elem.c)
    "Cast", "CastLike", "Where", "Not", "IsNaN", "IsInf", "Clip",
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "BitShift", "Equal", "Less",
    "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Sum",
    "Mean", "Max", "Min", "Abs", "Neg", "Sign", "Relu", "Sqrt", "Exp",
    "Log", "Reciprocal", "Floor", "Ceil", "Round", "Sigmoid", "Tanh", "Erf",
    //  reductions (zi_ops_reduce.c, zi_ops_nn.c)
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum",
    "ReduceLogSumExp", "ArgMax", "ArgMin", "Softmax", "LogSoftmax",
};

static bool
s_fold_op_allowed (const zi_node_t *node)
{
    if (node->domain[0] && strcmp (node->domain, "ai.onnx") != 0) {
        return false;
    }
    for (size_t i = 0; i < sizeof s_fold_ops / sizeof s_fold_ops[0]; i++) {
        if (strcmp (node->op_type, s_fold_ops[i]) == 0) {
            return true;
        }
    }
    return false;
}

static size_t
s_add_sat (size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

//  Try to fold node n: all its inputs are constants. Returns 1 when folded
//  (outputs are now initializers), 0 when left alone, or ZI_ERR_NOMEM.
//  *budget is the bytes folding may still read and write in this graph: a
//  fold costs its inputs' and outputs' bytes (plus a per-node overhead) and
//  is refused when that exceeds what is left, so that a chain of nodes, each
//  within ZI_GRAPH_FOLD_GROWTH, cannot add up to gigabytes or hours.
static int
s_fold_node (zi_graph_t *self, int n, size_t *budget)
{
    zi_node_t *node = &self->nodes[n];
    if (!node->op || node->n_in > 64 || node->n_out > 64 || node->n_out < 1
        || !s_fold_op_allowed (node)) {
        return 0;
    }
    const zi_tensor_t *in[64];
    zi_tensor_t slot[64];
    zi_tensor_t *out[64];
    zi_tensor_t *made[64] = {0};
    size_t in_bytes = 0;
    int present = 0;
    for (int k = 0; k < node->n_in; k++) {
        int v = node->in[k];
        in[k] = NULL;
        if (v < 0) {
            continue;
        }
        if (!self->values[v].init) {
            return 0;
        }
        in[k] = self->values[v].init;
        in_bytes = s_add_sat (in_bytes, in[k]->nbytes);
        present++;
    }
    if (present == 0) {
        return 0;
    }
    for (int k = 0; k < node->n_out; k++) {
        int v = node->out[k];
        memset (&slot[k], 0, sizeof slot[k]);
        out[k] = v >= 0 ? &slot[k] : NULL;
        if (v >= 0 && (self->values[v].is_output || self->values[v].init)) {
            return 0;
        }
    }
    char why[256];
    zi_kctx_t ctx = {node, node->n_in, in, node->n_out, out, 0, NULL, why, sizeof why};
    if (node->op->infer (&ctx) != ZI_OK) {
        return 0;           //  NEEDS_VALUE cannot happen; errors: the executor says
    }
    size_t out_bytes = 0;
    for (int k = 0; k < node->n_out; k++) {
        if (out[k]) {
            if (out[k]->rank < 0 || !zi_dtype_valid (out[k]->dtype)) {
                return 0;
            }
            out_bytes = s_add_sat (out_bytes, out[k]->nbytes);
        }
    }
    if (out_bytes > s_add_sat (in_bytes, ZI_GRAPH_FOLD_GROWTH)) {
        return 0;
    }
    size_t cost = s_add_sat (s_add_sat (in_bytes, out_bytes), S_FOLD_NODE_COST);
    if (cost > *budget) {
        return 0;
    }
    *budget -= cost;
    int rc = 1;
    for (int k = 0; k < node->n_out; k++) {
        if (!out[k]) {
            continue;
        }
        //  out (shape as inferred) -> owned tensor the kernel fills
        made[k] = zi_tensor_new (out[k]->dtype, out[k]->rank, out[k]->ne);
        if (!made[k]) {
            rc = ZI_ERR_NOMEM;
            goto undo;
        }
        out[k]->data = made[k]->data;
    }
    if (node->op->run (&ctx) != ZI_OK) {
        rc = 0;
        goto undo;
    }
    for (int k = 0; k < node->n_out; k++) {
        if (!made[k]) {
            continue;
        }
        zi_value_t *val = &self->values[node->out[k]];
        val->init = made[k];
        val->dtype = made[k]->dtype;
        val->rank = made[k]->rank;
        memcpy (val->shape, made[k]->ne, sizeof val->shape);
        val->producer = -1;
    }
    return 1;
undo:
    for (int k = 0; k < node->n_out; k++) {
        zi_tensor_destroy (&made[k]);
    }
    return rc;
}

int
zi_graph_fold_constants (zi_graph_t *self, int *n_folded, char *err, size_t errlen)
{
    int n = self->n_nodes, folded = 0, rc = ZI_OK;
    bool *gone = (bool *) calloc ((size_t) (n > 0 ? n : 1), sizeof (bool));
    //  Per value: read by a folded node (its initializer may be unneeded now).
    bool *fed = (bool *) calloc ((size_t) (self->n_values > 0 ? self->n_values : 1),
                                 sizeof (bool));
    if (!gone || !fed) {
        free (gone);
        free (fed);
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory folding constants");
    }
    //  Budget: a fixed allowance plus a multiple of the weights the file
    //  holds, enough for every weight to pass through a chain of a few
    //  Identity / Cast / Reshape / Transpose nodes.
    size_t weights = 0;
    for (int v = 0; v < self->n_values; v++) {
        if (self->values[v].init) {
            weights = s_add_sat (weights, self->values[v].init->nbytes);
        }
    }
    size_t budget = s_add_sat (weights > SIZE_MAX / S_FOLD_WEIGHT_FACTOR
                                   ? SIZE_MAX
                                   : weights * S_FOLD_WEIGHT_FACTOR,
                               S_FOLD_ALLOWANCE);
    //  Topological order: a node's constant inputs were folded before it.
    for (int i = 0; i < n; i++) {
        int r = s_fold_node (self, i, &budget);
        if (r < 0) {
            rc = zi_fail (err, errlen, r, "node '%s' (%s): out of memory folding a "
                          "constant", self->nodes[i].name, self->nodes[i].op_type);
            break;
        }
        if (r == 1) {
            gone[i] = true;
            folded++;
            for (int k = 0; k < self->nodes[i].n_in; k++) {
                if (self->nodes[i].in[k] >= 0) {
                    fed[self->nodes[i].in[k]] = true;
                }
            }
        }
    }
    if (folded > 0) {
        //  Drop the folded nodes, keeping the order of the others.
        int kept = 0;
        for (int i = 0; i < n; i++) {
            if (gone[i]) {
                zi_graph_node_clear (&self->nodes[i]);
            }
            else {
                self->nodes[kept++] = self->nodes[i];
            }
        }
        self->n_nodes = kept;
        for (int v = 0; v < self->n_values; v++) {
            self->values[v].producer = -1;
        }
        for (int i = 0; i < kept; i++) {
            const zi_node_t *node = &self->nodes[i];
            for (int k = 0; k < node->n_out; k++) {
                if (node->out[k] >= 0) {
                    self->values[node->out[k]].producer = i;
                }
            }
            for (int k = 0; k < node->n_in; k++) {
                if (node->in[k] >= 0) {
                    fed[node->in[k]] = false;       //  still read
                }
            }
        }
        //  A weight that only folded nodes read (the source of an Identity)
        //  would be a second copy: free it.
        for (int v = 0; v < self->n_values; v++) {
            if (fed[v] && !self->values[v].is_output) {
                zi_tensor_destroy (&self->values[v].init);
            }
        }
    }
    free (gone);
    free (fed);
    if (n_folded) {
        *n_folded = folded;
    }
    return rc;
}

const zi_attr_t *
zi_node_attr (const zi_node_t *node, const char *name)
{
    for (int i = 0; i < node->n_attr; i++) {
        if (strcmp (node->attr[i].name, name) == 0) {
            return &node->attr[i];
        }
    }
    return NULL;
}

int64_t
zi_node_attr_int (const zi_node_t *node, const char *name, int64_t dflt)
{
    const zi_attr_t *a = zi_node_attr (node, name);
    return a && a->type == ZI_ATTR_INT ? a->i : dflt;
}

float
zi_node_attr_float (const zi_node_t *node, const char *name, float dflt)
{
    const zi_attr_t *a = zi_node_attr (node, name);
    return a && a->type == ZI_ATTR_FLOAT ? a->f : dflt;
}

const char *
zi_node_attr_string (const zi_node_t *node, const char *name, const char *dflt)
{
    const zi_attr_t *a = zi_node_attr (node, name);
    return a && a->type == ZI_ATTR_STRING ? a->s : dflt;
}

const int64_t *
zi_node_attr_ints (const zi_node_t *node, const char *name, int *n)
{
    const zi_attr_t *a = zi_node_attr (node, name);
    if (a && a->type == ZI_ATTR_INTS) {
        *n = a->n;
        return a->ints;
    }
    *n = 0;
    return NULL;
}

const float *
zi_node_attr_floats (const zi_node_t *node, const char *name, int *n)
{
    const zi_attr_t *a = zi_node_attr (node, name);
    if (a && a->type == ZI_ATTR_FLOATS) {
        *n = a->n;
        return a->floats;
    }
    *n = 0;
    return NULL;
}
