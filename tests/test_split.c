/*  test_split.c - splitting one layer along its output channels (zi_split):
    every splittable layer of every model in the repo, split at several
    points, still matches torch's saved outputs and the unsplit model; a cut
    between the two parts (segments run apart, as the exec workers do) is
    bit-identical to the split graph run whole; bad splits get reasons.
    // ctest-timeout: 300
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zi_exec.h"
#include "zi_onnx.h"
#include "zi_ops.h"
#include "zi_split.h"
#include "zt_models.h"

//  Run nodes [first, last]; `vals` maps value index -> tensor (owned).
static void
s_run (const zi_graph_t *g, int first, int last, zi_tensor_t **vals)
{
    char err[1024];
    zi_exec_t *ex = zi_exec_new (g, first, last, NULL, err, sizeof err);
    cr_assert_not_null (ex, "segment %d:%d: %s", first, last, err);
    const zi_tensor_t *in[64];
    zi_tensor_t *out[64];
    cr_assert_leq (zi_exec_n_inputs (ex), 64);
    for (int i = 0; i < zi_exec_n_inputs (ex); i++) {
        int v = zi_graph_find_value (g, zi_exec_input (ex, i)->name);
        cr_assert (v >= 0 && vals[v], "segment %d:%d needs '%s' which nothing made", first,
                   last, zi_exec_input (ex, i)->name);
        in[i] = vals[v];
    }
    cr_assert_eq (zi_exec_run (ex, in, out, err, sizeof err), 0, "segment %d:%d: %s", first,
                  last, err);
    for (int i = 0; i < zi_exec_n_outputs (ex); i++) {
        int v = zi_graph_find_value (g, zi_exec_output (ex, i)->name);
        cr_assert (v >= 0);
        zi_tensor_destroy (&vals[v]);
        vals[v] = out[i];
    }
    zi_exec_destroy (&ex);
}

//  The graph's first output for input x, nodes cut after each of cuts[].
static zi_tensor_t *
s_output (const zi_graph_t *g, const zi_tensor_t *x, const int *cuts, int ncuts)
{
    zi_tensor_t **vals = (zi_tensor_t **) calloc ((size_t) g->n_values, sizeof *vals);
    cr_assert_not_null (vals);
    vals[g->inputs[0]] = zi_tensor_dup (x);
    int first = 0;
    for (int c = 0; c <= ncuts; c++) {
        int last = c < ncuts ? cuts[c] : g->n_nodes - 1;
        s_run (g, first, last, vals);
        first = last + 1;
    }
    zi_tensor_t *y = vals[g->outputs[0]];
    vals[g->outputs[0]] = NULL;
    for (int v = 0; v < g->n_values; v++) {
        zi_tensor_destroy (&vals[v]);
    }
    free (vals);
    cr_assert_not_null (y);
    return y;
}

static double
s_max_err (const zi_tensor_t *got, const zi_tensor_t *want, double rtol, double atol)
{
    cr_assert (zi_tensor_same_shape (got, want), "shape/dtype differ");
    const float *a = (const float *) got->data, *b = (const float *) want->data;
    double worst = 0;
    for (int64_t i = 0; i < zi_tensor_count (got); i++) {
        double e = fabs ((double) a[i] - b[i]) / (atol + rtol * fabs ((double) b[i]));
        worst = e > worst ? e : worst;
    }
    return worst;   //  <= 1 within tolerance
}

Test (split, every_splittable_layer_split_anywhere_still_matches_torch_and_the_whole_model)
{
    int splits = 0;
    for (size_t m = 0; m < ZT_NMODELS; m++) {
        zi_graph_t *g = zt_model_load (zt_models[m]);
        zi_tensor_t *x = zt_model_pb (zt_models[m], 0, "input_0.pb");
        zi_tensor_t *ref = zt_model_pb (zt_models[m], 0, "output_0.pb");
        zi_tensor_t *plain = s_output (g, x, NULL, 0);
        int nodes = g->n_nodes;
        for (int n = 0; n < nodes; n++) {
            int64_t channels;
            int chain;
            char err[512];
            if (zi_split_probe (g, n, &channels, &chain, err, sizeof err)) {
                continue;
            }
            int64_t points[3] = {1, channels / 2, channels - 1};
            for (int p = 0; p < 3; p++) {
                zi_graph_t *s = zt_model_load (zt_models[m]);
                cr_assert_eq (zi_split_apply (s, n, points[p], err, sizeof err), 0, "%s node %d "
                              "at %lld: %s", zt_models[m], n, (long long) points[p], err);
                cr_assert_eq (s->n_nodes, nodes + chain + 2, "%s node %d: %d nodes after the "
                              "split", zt_models[m], n, s->n_nodes);
                cr_assert_str_eq (s->nodes[n + 2 * chain + 2].op_type, "Concat");
                //  Tolerance as test_exec's against torch; against the unsplit
                //  model 1e-5 relative (a narrower GEMM may block differently).
                zi_tensor_t *whole = s_output (s, x, NULL, 0);
                cr_assert_leq (s_max_err (whole, ref, 1e-4, 1e-5), 1.0, "%s node %d at %lld: "
                               "differs from torch", zt_models[m], n, (long long) points[p]);
                cr_assert_leq (s_max_err (whole, plain, 1e-5, 1e-6), 1.0, "%s node %d at %lld: "
                               "differs from the unsplit model", zt_models[m], n,
                               (long long) points[p]);
                //  The cut between the parts: part A alone in segment 0.
                int cut = n + chain;
                zi_tensor_t *cutrun = s_output (s, x, &cut, 1);
                cr_assert_eq (memcmp (cutrun->data, whole->data, whole->nbytes), 0,
                              "%s node %d at %lld: the cut between the parts is not "
                              "bit-identical to the split graph run whole", zt_models[m], n,
                              (long long) points[p]);
                zi_tensor_destroy (&cutrun);
                zi_tensor_destroy (&whole);
                zi_graph_destroy (&s);
                splits++;
            }
        }
        zi_tensor_destroy (&plain);
        zi_tensor_destroy (&ref);
        zi_tensor_destroy (&x);
        zi_graph_destroy (&g);
    }
    //  Gemm (mlp, small_mlp), Conv (CNNs), MatMul (transformer): dozens.
    cr_assert_geq (splits, 60, "only %d splits tried: the probe refuses layers it should take",
                   splits);
}

Test (split, channel_wise_successors_are_copied_into_both_parts)
{
    //  Fashion-MNIST: Conv -> Relu -> MaxPool twice, then Flatten and Gemms.
    zi_graph_t *g = zt_model_load ("examples/fashion-mnist");
    int conv = -1;
    for (int n = g->n_nodes - 1; n >= 0; n--) {
        if (strcmp (g->nodes[n].op_type, "Conv") == 0) {
            conv = n;       //  the second convolution
            break;
        }
    }
    cr_assert_geq (conv, 0);
    int64_t channels;
    int chain;
    char err[512];
    cr_assert_eq (zi_split_probe (g, conv, &channels, &chain, err, sizeof err), 0, "%s", err);
    cr_assert_eq (chain, 2, "Relu and MaxPool follow the conv (got a chain of %d)", chain);
    const zi_tensor_t *w = g->values[g->nodes[conv].in[1]].init;
    int wv = g->nodes[conv].in[1];
    cr_assert_eq (zi_split_apply (g, conv, 16, err, sizeof err), 0, "%s", err);
    const char *want[] = {"Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Concat"};
    for (int i = 0; i < 7; i++) {
        cr_assert_str_eq (g->nodes[conv + i].op_type, want[i], "node %d", conv + i);
    }
    //  The parts' weights: 16 and channels-16 output channels; the original freed.
    cr_assert_eq (g->values[g->nodes[conv].in[1]].init->ne[0], 16);
    cr_assert_eq (g->values[g->nodes[conv + 3].in[1]].init->ne[0], channels - 16);
    cr_assert_null (g->values[wv].init, "the unsplit weight is still held");
    (void) w;
    zi_graph_destroy (&g);

    //  MLP: Gemm -> Relu.
    g = zt_model_load ("tests/models/mlp");
    cr_assert_str_eq (g->nodes[0].op_type, "Gemm");
    cr_assert_eq (zi_split_probe (g, 0, &channels, &chain, err, sizeof err), 0, "%s", err);
    cr_assert_eq (chain, 1);
    zi_graph_destroy (&g);
}

Test (split, bad_splits_are_refused_with_the_reason)
{
    zi_graph_t *g = zt_model_load ("tests/models/mlp");
    int nodes = g->n_nodes;
    int64_t channels;
    int chain;
    char err[512];
    cr_assert_eq (zi_split_probe (g, 0, &channels, &chain, err, sizeof err), 0, "%s", err);
    cr_assert_neq (zi_split_apply (g, 0, 0, err, sizeof err), 0);
    cr_assert (strstr (err, "split point must be 1.."), "%s", err);
    cr_assert_neq (zi_split_apply (g, 0, channels, err, sizeof err), 0);
    cr_assert (strstr (err, "split point"), "%s", err);
    cr_assert_neq (zi_split_apply (g, 1, 8, err, sizeof err), 0);    //  the Relu
    cr_assert (strstr (err, "only Gemm, MatMul and Conv"), "%s", err);
    cr_assert_neq (zi_split_apply (g, nodes, 8, err, sizeof err), 0);
    cr_assert (strstr (err, "has"), "%s", err);
    cr_assert_eq (g->n_nodes, nodes, "a refused split changed the graph");
    zi_split_t list[2] = {{0, 100}, {1, 5}};
    cr_assert_neq (zi_split_apply_all (g, list, 2, err, sizeof err), 0);
    cr_assert (strstr (err, "split 1 (node 1 at 5)"), "%s", err);
    zi_graph_destroy (&g);

    //  Grouped convolution (depthwise): not split.
    g = zt_model_load ("tests/models/resnet_tiny");
    for (int n = 0; n < g->n_nodes; n++) {
        if (strcmp (g->nodes[n].op_type, "Conv") == 0
            && zi_node_attr_int (&g->nodes[n], "group", 1) != 1) {
            cr_assert_neq (zi_split_probe (g, n, &channels, &chain, err, sizeof err), 0);
            cr_assert (strstr (err, "group 1"), "%s", err);
        }
    }
    zi_graph_destroy (&g);
}

//  Rows: every 2-D Conv of the repo's models that can be split along its
//  output rows, at its first, middle and last allowed row, gives exactly
//  the unsplit model's output (each output pixel is the same dot product;
//  the part's Slice only moves the rows it reads), matches torch, and the
//  cut between the parts (and after part B's Slice) is bit-identical too.
Test (split, convolutions_split_along_their_rows_are_bit_identical)
{
    int splits = 0;
    for (size_t m = 0; m < ZT_NMODELS; m++) {
        zi_graph_t *g = zt_model_load (zt_models[m]);
        zi_tensor_t *x = zt_model_pb (zt_models[m], 0, "input_0.pb");
        zi_tensor_t *ref = zt_model_pb (zt_models[m], 0, "output_0.pb");
        zi_tensor_t *plain = s_output (g, x, NULL, 0);
        int nodes = g->n_nodes;
        for (int n = 0; n < nodes; n++) {
            int64_t rows, step;
            int chain;
            char err[512];
            if (zi_split_probe_rows (g, n, &rows, &step, &chain, err, sizeof err)) {
                continue;
            }
            cr_assert_geq (rows, 2 * step);
            int64_t points[3] = {step, rows / 2 / step * step, (rows - 1) / step * step};
            for (int p = 0; p < 3; p++) {
                zi_graph_t *s = zt_model_load (zt_models[m]);
                cr_assert_eq (zi_split_apply_rows (s, n, points[p], err, sizeof err), 0,
                              "%s node %d at row %lld: %s", zt_models[m], n,
                              (long long) points[p], err);
                //  [Slice] Conv chain [Slice] Conv chain Concat
                int a_slice = strcmp (s->nodes[n].op_type, "Slice") == 0;
                int end_a = n + a_slice + chain;
                int b_slice = strcmp (s->nodes[end_a + 1].op_type, "Slice") == 0;
                cr_assert_str_eq (s->nodes[n + a_slice].op_type, "Conv");
                cr_assert_str_eq (s->nodes[end_a + 1 + b_slice].op_type, "Conv");
                cr_assert_eq (s->n_nodes, nodes + chain + 2 + a_slice + b_slice);
                cr_assert_str_eq (s->nodes[end_a + 1 + b_slice + chain + 1].op_type, "Concat");
                zi_tensor_t *whole = s_output (s, x, NULL, 0);
                cr_assert_eq (memcmp (whole->data, plain->data, plain->nbytes), 0,
                              "%s node %d at row %lld: differs from the unsplit model",
                              zt_models[m], n, (long long) points[p]);
                cr_assert_leq (s_max_err (whole, ref, 1e-4, 1e-5), 1.0, "%s node %d: "
                               "differs from torch", zt_models[m], n);
                int cuts[2] = {end_a, end_a + b_slice};
                for (int c = 0; c < 1 + b_slice; c++) {
                    zi_tensor_t *cutrun = s_output (s, x, &cuts[c], 1);
                    cr_assert_eq (memcmp (cutrun->data, whole->data, whole->nbytes), 0,
                                  "%s node %d at row %lld: the cut after node %d is not "
                                  "bit-identical", zt_models[m], n, (long long) points[p],
                                  cuts[c]);
                    zi_tensor_destroy (&cutrun);
                }
                zi_tensor_destroy (&whole);
                zi_graph_destroy (&s);
                splits++;
            }
        }
        zi_tensor_destroy (&plain);
        zi_tensor_destroy (&ref);
        zi_tensor_destroy (&x);
        zi_graph_destroy (&g);
    }
    //  Fashion-MNIST's two convolutions, resnet_tiny's, the transformer's none.
    cr_assert_geq (splits, 12, "only %d row splits tried", splits);
}

Test (split, bad_row_splits_are_refused_with_the_reason)
{
    zi_graph_t *g = zt_model_load ("examples/fashion-mnist");
    int conv = -1;
    for (int n = g->n_nodes - 1; n >= 0; n--) {
        conv = conv < 0 && strcmp (g->nodes[n].op_type, "Conv") == 0 ? n : conv;
    }
    int nodes = g->n_nodes;
    int64_t rows, step;
    int chain;
    char err[512];
    cr_assert_eq (zi_split_probe_rows (g, conv, &rows, &step, &chain, err, sizeof err), 0,
                  "%s", err);
    //  14 x 14 output rows, a 2 x 2 / stride 2 MaxPool after the Relu
    cr_assert_eq (rows, 14);
    cr_assert_eq (step, 2);
    cr_assert_eq (chain, 2);
    cr_assert_neq (zi_split_apply_rows (g, conv, 5, err, sizeof err), 0);
    cr_assert (strstr (err, "multiple of 2"), "%s", err);
    cr_assert_neq (zi_split_apply_rows (g, conv, 14, err, sizeof err), 0);
    cr_assert_neq (zi_split_apply_rows (g, conv, 0, err, sizeof err), 0);
    cr_assert_neq (zi_split_apply_rows (g, conv + 1, 2, err, sizeof err), 0);     //  the Relu
    cr_assert (strstr (err, "only Conv"), "%s", err);
    cr_assert_eq (g->n_nodes, nodes, "a refused split changed the graph");
    zi_split_t list[1] = {{.node = conv, .at = 3, .axis = ZI_SPLIT_ROWS}};
    cr_assert_neq (zi_split_apply_all (g, list, 1, err, sizeof err), 0);
    cr_assert (strstr (err, "split 0 (node"), "%s", err);
    zi_graph_destroy (&g);

    //  A Gemm has no rows.
    g = zt_model_load ("tests/models/mlp");
    cr_assert_neq (zi_split_probe_rows (g, 0, &rows, &step, &chain, err, sizeof err), 0);
    cr_assert (strstr (err, "only Conv"), "%s", err);
    zi_graph_destroy (&g);
}

//  An INTS attribute on node n.
static void
s_set_ints (zi_graph_t *g, int n, const char *name, const int64_t *v, int count)
{
    zi_attr_t a = {0};
    a.name = strdup (name);
    a.type = ZI_ATTR_INTS;
    a.n = count;
    a.ints = (int64_t *) malloc ((size_t) count * sizeof (int64_t));
    cr_assert (a.name && a.ints);
    memcpy (a.ints, v, (size_t) count * sizeof (int64_t));
    cr_assert_eq (zi_graph_node_add_attr (g, n, &a), 0);
}

//  A graph X[2,3,H,W] -> Conv(k, stride, pads, dilation) -> Relu -> Y, made
//  here: the corner cases of a row split the repo's models do not reach (a
//  kernel reaching past the padding, part B needing top padding, part A
//  bottom padding, strides and dilations that skip rows).
static zi_graph_t *
s_conv_graph (int64_t h, int64_t kh, int64_t sh, int64_t dh, int64_t pt, int64_t pb)
{
    zi_graph_t *g = zi_graph_new ();
    cr_assert_not_null (g);
    g->opset = 13;
    int x = zi_graph_add_value (g, "x"), w = zi_graph_add_value (g, "w");
    int b = zi_graph_add_value (g, "b"), c = zi_graph_add_value (g, "c");
    int y = zi_graph_add_value (g, "y");
    g->values[x].dtype = ZI_DT_F32;
    g->values[x].is_input = true;
    g->values[x].rank = 4;
    int64_t xs[4] = {2, 3, h, 9};
    memcpy (g->values[x].shape, xs, sizeof xs);
    g->values[w].init = zi_tensor_new (ZI_DT_F32, 4, (int64_t[]){4, 3, kh, 3});
    g->values[b].init = zi_tensor_new (ZI_DT_F32, 1, (int64_t[]){4});
    float *wf = (float *) g->values[w].init->data;
    for (int64_t i = 0; i < zi_tensor_count (g->values[w].init); i++) {
        wf[i] = (float) ((i * 37) % 19) / 19.0f - 0.45f;
    }
    for (int i = 0; i < 4; i++) {
        ((float *) g->values[b].init->data)[i] = 0.1f * (float) i - 0.15f;
    }
    int cin[3] = {x, w, b};
    int n = zi_graph_add_node (g, "Conv", "", "conv", 3, cin, 1, &c);
    s_set_ints (g, n, "pads", (int64_t[]){pt, 1, pb, 1}, 4);
    s_set_ints (g, n, "strides", (int64_t[]){sh, 1}, 2);
    s_set_ints (g, n, "dilations", (int64_t[]){dh, 1}, 2);
    g->nodes[n].op = zi_op_find ("Conv", "");
    int r = zi_graph_add_node (g, "Relu", "", "relu", 1, &c, 1, &y);
    g->nodes[r].op = zi_op_find ("Relu", "");
    g->inputs = (int *) malloc (sizeof (int));
    g->inputs[0] = x;
    g->n_inputs = 1;
    g->outputs = (int *) malloc (sizeof (int));
    g->outputs[0] = y;
    g->n_outputs = 1;
    g->values[y].is_output = true;
    char err[512];
    cr_assert_eq (zi_graph_sort (g, err, sizeof err), 0, "%s", err);
    return g;
}

Test (split, row_splits_of_awkward_convolutions_are_bit_identical)
{
    //  h, kernel, stride, dilation, pad top, pad bottom
    static const int64_t cases[][6] = {
        {12, 5, 1, 1, 2, 2},   //  part B starts inside the top padding at row 1
        {12, 7, 2, 1, 3, 3},   //  a ResNet stem: stride 2, pad 3
        {13, 3, 2, 1, 1, 0},   //  odd height, no bottom pad
        {11, 3, 1, 2, 2, 2},   //  dilation 2
        {10, 5, 3, 1, 4, 4},   //  pads bigger than the stride; part A padded at the bottom
        {9, 1, 1, 1, 0, 0},    //  1 x k kernel: no halo
    };
    int tried = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const int64_t *c = cases[k];
        zi_graph_t *g = s_conv_graph (c[0], c[1], c[2], c[3], c[4], c[5]);
        int64_t rows, step;
        int chain;
        char err[512];
        cr_assert_eq (zi_split_probe_rows (g, 0, &rows, &step, &chain, err, sizeof err), 0,
                      "case %zu: %s", k, err);
        int64_t span = c[0] + c[4] + c[5] - c[3] * (c[1] - 1) - 1;
        cr_assert_eq (rows, span / c[2] + 1, "case %zu: %lld output rows", k, (long long) rows);
        cr_assert_eq (chain, 1);
        zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 4, (int64_t[]){2, 3, c[0], 9});
        float *xf = (float *) x->data;
        for (int64_t i = 0; i < zi_tensor_count (x); i++) {
            xf[i] = (float) ((i * 7919) % 1000) / 500.0f - 1.0f;
        }
        zi_tensor_t *plain = s_output (g, x, NULL, 0);
        for (int64_t at = 1; at < rows; at++) {
            zi_graph_t *s = s_conv_graph (c[0], c[1], c[2], c[3], c[4], c[5]);
            cr_assert_eq (zi_split_apply_rows (s, 0, at, err, sizeof err), 0,
                          "case %zu at row %lld: %s", k, (long long) at, err);
            zi_tensor_t *whole = s_output (s, x, NULL, 0);
            cr_assert (zi_tensor_same_shape (whole, plain), "case %zu at row %lld: shape", k,
                       (long long) at);
            cr_assert_eq (memcmp (whole->data, plain->data, plain->nbytes), 0,
                          "case %zu (h %lld, kernel %lld, stride %lld, dilation %lld, pads "
                          "%lld/%lld) at row %lld: differs from the unsplit conv", k,
                          (long long) c[0], (long long) c[1], (long long) c[2],
                          (long long) c[3], (long long) c[4], (long long) c[5],
                          (long long) at);
            zi_tensor_destroy (&whole);
            zi_graph_destroy (&s);
            tried++;
        }
        zi_tensor_destroy (&plain);
        zi_tensor_destroy (&x);
        zi_graph_destroy (&g);
    }
    cr_assert_geq (tried, 30);
}
