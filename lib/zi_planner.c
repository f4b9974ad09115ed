/*  zi_planner.c - node costs and cut selection; see zi_planner.h. */
#include "zi_planner.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static double
s_count (const zi_tensor_t *t)
{
    if (!t || t->rank < 0) {
        return 0.0;
    }
    double n = 1.0;
    for (int i = 0; i < t->rank; i++) {
        n *= (double) t->ne[i];
    }
    return n;
}

static double
s_bytes (const zi_tensor_t *t)
{
    return t && t->rank >= 0 ? s_count (t) * (double) zi_dtype_size (t->dtype) : 0.0;
}

//  FLOPs of one node from its planned shapes. Unknown shapes count 0.
static double
s_flops (const zi_graph_t *g, const zi_exec_t *ex, const zi_node_t *node)
{
    const zi_tensor_t *y = node->n_out > 0 && node->out[0] >= 0
                               ? zi_exec_value (ex, node->out[0]) : NULL;
    const zi_tensor_t *a = node->n_in > 0 && node->in[0] >= 0
                               ? (g->values[node->in[0]].init ? g->values[node->in[0]].init
                                                              : zi_exec_value (ex, node->in[0]))
                               : NULL;
    const zi_tensor_t *w = node->n_in > 1 && node->in[1] >= 0
                               ? (g->values[node->in[1]].init ? g->values[node->in[1]].init
                                                              : zi_exec_value (ex, node->in[1]))
                               : NULL;
    double out = s_count (y);
    const char *op = node->op_type;
    if (strcmp (op, "MatMul") == 0 && a && a->rank >= 1) {
        return 2.0 * out * (double) a->ne[a->rank - 1];
    }
    if (strcmp (op, "Gemm") == 0 && a && a->rank == 2) {
        int trans_a = (int) zi_node_attr_int (node, "transA", 0);
        return 2.0 * out * (double) (trans_a ? a->ne[0] : a->ne[1]);
    }
    if (strcmp (op, "Conv") == 0 && w && w->rank >= 3) {
        //  each output element: C_in/group * prod(kernel) multiply-adds
        double per = 1.0;
        for (int i = 1; i < w->rank; i++) {
            per *= (double) w->ne[i];
        }
        return 2.0 * out * per;
    }
    if (strcmp (op, "ConvTranspose") == 0 && w && w->rank >= 3 && a) {
        double per = 1.0;
        for (int i = 1; i < w->rank; i++) {
            per *= (double) w->ne[i];
        }
        return 2.0 * s_count (a) * per;
    }
    if ((strcmp (op, "MaxPool") == 0 || strcmp (op, "AveragePool") == 0)) {
        int nk = 0;
        const int64_t *k = zi_node_attr_ints (node, "kernel_shape", &nk);
        double per = 1.0;
        for (int i = 0; i < nk; i++) {
            per *= (double) k[i];
        }
        return out * per;
    }
    if (strncmp (op, "Global", 6) == 0 || strncmp (op, "Reduce", 6) == 0
        || strcmp (op, "Softmax") == 0 || strcmp (op, "LogSoftmax") == 0
        || strcmp (op, "LayerNormalization") == 0) {
        return 4.0 * s_count (a);
    }
    return out;
}

int
zi_planner_costs (const zi_graph_t *g, const zi_tensor_t *const *inputs,
                  zi_node_cost_t *costs, double *cross_bytes, char *err, size_t errlen)
{
    //  Unfused: a value inside a fused group (Conv -> Relu -> MaxPool) has
    //  no planned tensor there, yet a cut may fall on it and move it.
    zi_exec_opts_t opts = {.no_fuse = true};
    zi_exec_t *ex = zi_exec_new (g, 0, -1, &opts, err, errlen);
    if (!ex) {
        return ZI_ERR_INVALID;
    }
    int rc = zi_exec_prepare (ex, inputs, err, errlen);
    if (rc) {
        zi_exec_destroy (&ex);
        return rc;
    }
    for (int n = 0; n < g->n_nodes; n++) {
        const zi_node_t *node = &g->nodes[n];
        zi_node_cost_t *c = &costs[n];
        memset (c, 0, sizeof *c);
        c->flops = s_flops (g, ex, node);
        for (int k = 0; k < node->n_in; k++) {
            int v = node->in[k];
            if (v < 0) {
                continue;
            }
            if (g->values[v].init) {
                c->weight_bytes += (double) g->values[v].init->nbytes;
            }
            else {
                c->act_bytes += s_bytes (zi_exec_value (ex, v));
            }
        }
        for (int k = 0; k < node->n_out; k++) {
            if (node->out[k] >= 0) {
                c->act_bytes += s_bytes (zi_exec_value (ex, node->out[k]));
            }
        }
        c->cost = c->flops + ZI_COST_FLOPS_PER_BYTE * (c->weight_bytes + c->act_bytes);
    }
    if (cross_bytes) {
        //  A value crosses the cut after node j when it is produced at or
        //  before j (or is a graph input) and read after j. Graph inputs
        //  count: a later segment reading one needs it shipped along.
        int *last_read = (int *) malloc ((size_t) (g->n_values > 0 ? g->n_values : 1)
                                         * sizeof (int));
        if (!last_read) {
            zi_exec_destroy (&ex);
            return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        }
        for (int v = 0; v < g->n_values; v++) {
            last_read[v] = g->values[v].is_output ? g->n_nodes : -1;
        }
        for (int n = 0; n < g->n_nodes; n++) {
            for (int k = 0; k < g->nodes[n].n_in; k++) {
                int v = g->nodes[n].in[k];
                if (v >= 0 && n > last_read[v]) {
                    last_read[v] = n;
                }
            }
        }
        for (int j = 0; j < g->n_nodes; j++) {
            cross_bytes[j] = 0.0;
        }
        for (int v = 0; v < g->n_values; v++) {
            if (g->values[v].init || last_read[v] < 0) {
                continue;
            }
            int from = g->values[v].producer;      //  -1 for graph inputs
            double b = s_bytes (zi_exec_value (ex, v));
            //  crosses every cut j with from <= j < last_read
            for (int j = from < 0 ? 0 : from; j < last_read[v] && j < g->n_nodes; j++) {
                cross_bytes[j] += b;
            }
        }
        free (last_read);
    }
    zi_exec_destroy (&ex);
    return ZI_OK;
}

//  dim 0 of every planned value (-1: rank unknown, -2: a scalar).
static void
s_dim0 (const zi_graph_t *g, const zi_exec_t *ex, int64_t *dim0)
{
    for (int v = 0; v < g->n_values; v++) {
        const zi_tensor_t *t = zi_exec_value (ex, v);
        dim0[v] = !t || t->rank < 0 ? -1 : t->rank == 0 ? -2 : t->ne[0];
    }
}

int
zi_planner_batched (const zi_graph_t *g, const zi_tensor_t *const *inputs,
                    signed char *batched, char *err, size_t errlen)
{
    int nv = g->n_values > 0 ? g->n_values : 1;
    int ni = g->n_inputs > 0 ? g->n_inputs : 1;
    int64_t *a = (int64_t *) calloc ((size_t) nv, sizeof (int64_t));
    int64_t *b = (int64_t *) calloc ((size_t) nv, sizeof (int64_t));
    zi_tensor_t *probe = (zi_tensor_t *) calloc ((size_t) ni, sizeof (zi_tensor_t));
    const zi_tensor_t **pin = (const zi_tensor_t **) calloc ((size_t) ni, sizeof *pin);
    zi_exec_opts_t opts = {.no_fuse = true};   //  every value planned (see above)
    zi_exec_t *ex = zi_exec_new (g, 0, -1, &opts, err, errlen);
    int rc = ZI_OK;
    if (!ex) {
        rc = ZI_ERR_INVALID;
        goto out;
    }
    if (!a || !b || !probe || !pin) {
        rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        goto out;
    }
    //  The batch: dim 0 of the inputs whose declared dim 0 is symbolic.
    int64_t batch = -1;
    bool varies = false;
    for (int i = 0; i < g->n_inputs; i++) {
        const zi_value_t *v = &g->values[g->inputs[i]];
        //  probe: as given, with a symbolic dim 0 one larger
        probe[i] = *inputs[i];
        probe[i].owns_data = false;
        probe[i].data = NULL;
        if (v->rank >= 1 && v->shape[0] < 0 && inputs[i]->rank >= 1) {
            int64_t shape[ZI_MAX_RANK];
            memcpy (shape, inputs[i]->ne, sizeof shape);
            batch = inputs[i]->ne[0];
            shape[0] = batch + 1;
            memset (&probe[i], 0, sizeof probe[i]);
            if (zi_tensor_set_shape (&probe[i], inputs[i]->dtype, inputs[i]->rank, shape)) {
                rc = zi_fail (err, errlen, ZI_ERR_INVALID, "input '%s': bad shape", v->name);
                goto out;
            }
            varies = true;
        }
        pin[i] = &probe[i];
    }
    if (batch < 0 && g->n_inputs > 0 && inputs[0]->rank >= 1) {
        batch = inputs[0]->ne[0];
    }
    rc = zi_exec_prepare (ex, inputs, err, errlen);
    if (rc) {
        goto out;
    }
    s_dim0 (g, ex, a);
    if (varies) {
        rc = zi_exec_prepare (ex, pin, err, errlen);
        if (rc) {
            goto out;
        }
        s_dim0 (g, ex, b);
    }
    for (int v = 0; v < g->n_values; v++) {
        const zi_value_t *val = &g->values[v];
        if (val->init || val->is_input || val->producer < 0) {
            batched[v] = 1;
        }
        else if (a[v] == -1 || (varies && b[v] == -1)) {
            batched[v] = -1;
        }
        else {
            bool ok = batch >= 0 && a[v] == batch && (!varies || b[v] == batch + 1);
            batched[v] = ok ? 1 : 0;
        }
    }
out:
    zi_exec_destroy (&ex);
    free (a);
    free (b);
    free (probe);
    free (pin);
    return rc;
}

int
zi_planner_safe_cuts (const zi_graph_t *g, const zi_tensor_t *const *inputs, int *bad,
                      char *err, size_t errlen)
{
    int nv = g->n_values > 0 ? g->n_values : 1;
    signed char *batched = (signed char *) calloc ((size_t) nv, 1);
    int *last_read = (int *) calloc ((size_t) nv, sizeof (int));
    if (!batched || !last_read) {
        free (batched);
        free (last_read);
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    int rc = zi_planner_batched (g, inputs, batched, err, errlen);
    if (rc) {
        free (batched);
        free (last_read);
        return rc;
    }
    for (int v = 0; v < g->n_values; v++) {
        last_read[v] = -1;
    }
    for (int n = 0; n < g->n_nodes; n++) {
        bad[n] = -1;
        for (int k = 0; k < g->nodes[n].n_in; k++) {
            int v = g->nodes[n].in[k];
            if (v >= 0 && n > last_read[v]) {
                last_read[v] = n;
            }
        }
    }
    //  v crosses every cut j with producer <= j < last reader.
    for (int v = 0; v < g->n_values; v++) {
        if (batched[v] != 0) {
            continue;
        }
        for (int j = g->values[v].producer; j >= 0 && j < last_read[v]; j++) {
            if (bad[j] < 0) {
                bad[j] = v;
            }
        }
    }
    int forbidden = 0;
    for (int j = 0; j < g->n_nodes; j++) {
        forbidden += bad[j] >= 0 ? 1 : 0;
    }
    free (batched);
    free (last_read);
    return forbidden;
}

//  Minimal bottleneck max_s cost(s)/cap(s) over cuts into k segments, by
//  dynamic programming over prefix sums: best[s][j] = the bottleneck of the
//  best split of nodes 0..j into segments 0..s.
static double
s_best_bottleneck (int n, const double *prefix, int k, const double *cap,
                   const bool *allowed, double *best)
{
    //  best is (k, n) row-major
    for (int j = 0; j < n; j++) {
        best[j] = prefix[j + 1] / cap[0];
    }
    for (int s = 1; s < k; s++) {
        for (int j = 0; j < n; j++) {
            double b = DBL_MAX;
            //  segment s holds nodes i+1..j; segments before hold 0..i
            for (int i = s - 1; i < j; i++) {
                if (allowed && !allowed[i]) {
                    continue;
                }
                double here = (prefix[j + 1] - prefix[i + 1]) / cap[s];
                double prev = best[(s - 1) * n + i];
                double m = here > prev ? here : prev;
                if (m < b) {
                    b = m;
                }
            }
            best[s * n + j] = b;
        }
    }
    return best[(k - 1) * n + (n - 1)];
}

int
zi_planner_cut (int n, const double *cost, const double *cross_bytes, int k,
                const double *capacity, double tolerance, int *seg_last,
                double *bottleneck, char *err, size_t errlen)
{
    return zi_planner_cut_allowed (n, cost, cross_bytes, k, capacity, NULL, tolerance,
                                   seg_last, bottleneck, err, errlen);
}

int
zi_planner_cut_allowed (int n, const double *cost, const double *cross_bytes, int k,
                        const double *capacity, const bool *allowed, double tolerance,
                        int *seg_last, double *bottleneck, char *err, size_t errlen)
{
    if (k < 1 || n < 1) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "need at least one segment and "
                        "one node (got %d segments, %d nodes)", k, n);
    }
    if (k > n) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "cannot cut %d nodes into %d "
                        "segments: each segment needs at least one node", n, k);
    }
    for (int s = 0; s < k; s++) {
        if (!(capacity[s] > 0) || !isfinite (capacity[s])) {
            return zi_fail (err, errlen, ZI_ERR_INVALID, "segment %d: capacity must be "
                            "a positive number (got %g)", s, capacity[s]);
        }
    }
    if (allowed) {
        int places = 0;
        for (int j = 0; j < n - 1; j++) {
            places += allowed[j] ? 1 : 0;
        }
        if (places < k - 1) {
            return zi_fail (err, errlen, ZI_ERR_INVALID, "cannot cut into %d segments: "
                            "only %d of the %d places between nodes may be cut", k, places,
                            n - 1);
        }
    }
    size_t cells = (size_t) k * (size_t) n;
    double *prefix = (double *) malloc ((size_t) (n + 1) * sizeof (double));
    double *best = (double *) malloc (cells * sizeof (double));
    double *bytes = (double *) malloc (cells * sizeof (double));
    int *from = (int *) malloc (cells * sizeof (int));
    if (!prefix || !best || !bytes || !from) {
        free (prefix);
        free (best);
        free (bytes);
        free (from);
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    prefix[0] = 0.0;
    for (int j = 0; j < n; j++) {
        prefix[j + 1] = prefix[j] + (cost[j] > 0 ? cost[j] : 0.0);
    }
    double opt = s_best_bottleneck (n, prefix, k, capacity, allowed, best);
    //  Second pass: among splits whose every segment stays within the
    //  tolerated bottleneck, minimise the bytes crossing the cuts.
    double limit = opt * (1.0 + tolerance) + 1e-12 * (opt > 0 ? opt : 1.0);
    for (int j = 0; j < n; j++) {
        bool ok = prefix[j + 1] / capacity[0] <= limit;
        bytes[j] = ok ? 0.0 : DBL_MAX;
        from[j] = -1;
    }
    for (int s = 1; s < k; s++) {
        for (int j = 0; j < n; j++) {
            double b = DBL_MAX;
            int arg = -1;
            for (int i = s - 1; i < j; i++) {
                if (allowed && !allowed[i]) {
                    continue;
                }
                double prev = bytes[(s - 1) * n + i];
                if (prev == DBL_MAX) {
                    continue;
                }
                if ((prefix[j + 1] - prefix[i + 1]) / capacity[s] > limit) {
                    continue;
                }
                double total = prev + (cross_bytes ? cross_bytes[i] : 0.0);
                if (total < b) {
                    b = total;
                    arg = i;
                }
            }
            bytes[s * n + j] = b;
            from[s * n + j] = arg;
        }
    }
    //  The optimum itself is always feasible, so a path exists.
    int j = n - 1;
    for (int s = k - 1; s >= 0; s--) {
        seg_last[s] = j;
        j = from[s * n + j];
    }
    double achieved = 0.0;
    int start = 0;
    for (int s = 0; s < k; s++) {
        double c = (prefix[seg_last[s] + 1] - prefix[start]) / capacity[s];
        if (c > achieved) {
            achieved = c;
        }
        start = seg_last[s] + 1;
    }
    if (bottleneck) {
        *bottleneck = achieved;
    }
    free (prefix);
    free (best);
    free (bytes);
    free (from);
    return ZI_OK;
}
