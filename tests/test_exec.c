/*  test_exec.c - the executor on the models in the repo: results against the
    saved torch outputs, segments bit-identical to the whole graph for many
    cuts, fusion on/off agreement, memory plan reuse, bad inputs.
    // ctest-timeout: 300
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zi_exec.h"
#include "zi_gemm.h"
#include "zi_onnx.h"
#include "zi_ops.h"
#include "zt_models.h"

//  Run nodes [first, last] with the values computed so far (a small name ->
//  tensor table), adding the segment's outputs to the table.
typedef struct {
    int n;
    const char *names[256];
    zi_tensor_t *tensors[256];
} s_env_t;

static void
s_env_clear (s_env_t *env)
{
    for (int i = 0; i < env->n; i++) {
        zi_tensor_destroy (&env->tensors[i]);
    }
    env->n = 0;
}

static const zi_tensor_t *
s_env_get (s_env_t *env, const char *name)
{
    for (int i = 0; i < env->n; i++) {
        if (strcmp (env->names[i], name) == 0) {
            return env->tensors[i];
        }
    }
    return NULL;
}

static void
s_run_segment_threads (const zi_graph_t *g, int first, int last, s_env_t *env, bool no_fuse,
                       int nthreads)
{
    char err[1024];
    zi_exec_opts_t opts = {.no_fuse = no_fuse, .nthreads = nthreads};
    zi_exec_t *ex = zi_exec_new (g, first, last, &opts, err, sizeof err);
    cr_assert_not_null (ex, "segment %d:%d: %s", first, last, err);
    const zi_tensor_t *in[64];
    zi_tensor_t *out[64];
    cr_assert_leq (zi_exec_n_inputs (ex), 64);
    for (int i = 0; i < zi_exec_n_inputs (ex); i++) {
        in[i] = s_env_get (env, zi_exec_input (ex, i)->name);
        cr_assert_not_null (in[i], "segment %d:%d needs '%s' which no earlier segment made",
                            first, last, zi_exec_input (ex, i)->name);
    }
    cr_assert_eq (zi_exec_run (ex, in, out, err, sizeof err), 0, "segment %d:%d: %s", first,
                  last, err);
    for (int i = 0; i < zi_exec_n_outputs (ex); i++) {
        cr_assert_lt (env->n, 256);
        env->names[env->n] = zi_exec_output (ex, i)->name;
        env->tensors[env->n++] = out[i];
    }
    zi_exec_destroy (&ex);
}

static void
s_run_segment (const zi_graph_t *g, int first, int last, s_env_t *env, bool no_fuse)
{
    s_run_segment_threads (g, first, last, env, no_fuse, 0);
}

static void
s_assert_close (const zi_tensor_t *got, const zi_tensor_t *want, double rtol, double atol,
                const char *what)
{
    cr_assert (zi_tensor_same_shape (got, want), "%s: shape/dtype differ", what);
    cr_assert_eq (got->dtype, ZI_DT_F32);
    const float *a = (const float *) got->data, *b = (const float *) want->data;
    for (int64_t i = 0; i < zi_tensor_count (got); i++) {
        cr_assert (fabs ((double) a[i] - b[i]) <= atol + rtol * fabs ((double) b[i]),
                   "%s: element %lld: got %.9g, want %.9g", what, (long long) i, a[i], b[i]);
    }
}

Test (exec, whole_models_match_torch_reference_outputs)
{
    //  Tolerance: float32 kernels with different summation orders than
    //  torch's; the saved outputs are torch's own float32 results.
    for (size_t m = 0; m < ZT_NMODELS; m++) {
        zi_graph_t *g = zt_model_load (zt_models[m]);
        for (int set = 0; set < 2; set++) {
            char probe[1024];
            snprintf (probe, sizeof probe, "%s/%s/test_data_set_%d", ZI_SOURCE_DIR,
                      zt_models[m], set);
            FILE *f = fopen (probe, "r");
            if (!f) {
                continue;
            }
            fclose (f);
            s_env_t env = {0};
            env.names[0] = g->values[g->inputs[0]].name;
            env.tensors[0] = zt_model_pb (zt_models[m], set, "input_0.pb");
            env.n = 1;
            s_run_segment (g, 0, -1, &env, false);
            zi_tensor_t *want = zt_model_pb (zt_models[m], set, "output_0.pb");
            const zi_tensor_t *got = s_env_get (&env, g->values[g->outputs[0]].name);
            cr_assert_not_null (got);
            char what[256];
            snprintf (what, sizeof what, "%s set %d", zt_models[m], set);
            s_assert_close (got, want, 1e-4, 1e-5, what);
            zi_tensor_destroy (&want);
            s_env_clear (&env);
        }
        zi_graph_destroy (&g);
    }
}

//  Run the graph cut at `cuts` (last node of each segment but the final one)
//  and compare every graph output with the whole-graph run, byte for byte.
static void
s_check_cut (const zi_graph_t *g, const char *model, const zi_tensor_t *x, const int *cuts,
             int ncuts, const s_env_t *whole)
{
    s_env_t env = {0};
    env.names[0] = g->values[g->inputs[0]].name;
    env.tensors[0] = zi_tensor_dup (x);
    env.n = 1;
    int first = 0;
    for (int c = 0; c <= ncuts; c++) {
        int last = c < ncuts ? cuts[c] : g->n_nodes - 1;
        s_run_segment (g, first, last, &env, false);
        first = last + 1;
    }
    for (int o = 0; o < g->n_outputs; o++) {
        const char *name = g->values[g->outputs[o]].name;
        const zi_tensor_t *a = s_env_get (&env, name);
        const zi_tensor_t *b = s_env_get ((s_env_t *) whole, name);
        cr_assert (a && b && zi_tensor_same_shape (a, b), "%s: output '%s' missing/shape",
                   model, name);
        cr_assert_eq (memcmp (a->data, b->data, a->nbytes), 0,
                      "%s: output '%s' differs from the whole graph with %d cuts (first "
                      "cut after node %d)", model, name, ncuts, cuts[0]);
    }
    s_env_clear (&env);
}

Test (exec, segments_are_bit_identical_to_the_whole_graph)
{
    for (size_t m = 0; m < ZT_NMODELS; m++) {
        zi_graph_t *g = zt_model_load (zt_models[m]);
        zi_tensor_t *x = zt_model_pb (zt_models[m], 0, "input_0.pb");
        s_env_t whole = {0};
        whole.names[0] = g->values[g->inputs[0]].name;
        whole.tensors[0] = zi_tensor_dup (x);
        whole.n = 1;
        s_run_segment (g, 0, -1, &whole, false);
        //  every single cut point, then a few 2- and 3-cut splits
        for (int c = 0; c + 1 < g->n_nodes; c++) {
            s_check_cut (g, zt_models[m], x, &c, 1, &whole);
        }
        for (int a = 0; a + 2 < g->n_nodes; a += 1 + g->n_nodes / 7) {
            for (int b = a + 1; b + 1 < g->n_nodes; b += 1 + g->n_nodes / 5) {
                int cuts2[2] = {a, b};
                s_check_cut (g, zt_models[m], x, cuts2, 2, &whole);
                if (b + 2 < g->n_nodes) {
                    int cuts3[3] = {a, b, b + 1};
                    s_check_cut (g, zt_models[m], x, cuts3, 3, &whole);
                }
            }
        }
        s_env_clear (&whole);
        zi_tensor_destroy (&x);
        zi_graph_destroy (&g);
    }
}

Test (exec, fusion_changes_nothing)
{
    for (size_t m = 0; m < ZT_NMODELS; m++) {
        zi_graph_t *g = zt_model_load (zt_models[m]);
        zi_tensor_t *x = zt_model_pb (zt_models[m], 0, "input_0.pb");
        s_env_t fused = {0}, plain = {0};
        fused.names[0] = plain.names[0] = g->values[g->inputs[0]].name;
        fused.tensors[0] = zi_tensor_dup (x);
        plain.tensors[0] = zi_tensor_dup (x);
        fused.n = plain.n = 1;
        s_run_segment (g, 0, -1, &fused, false);
        s_run_segment (g, 0, -1, &plain, true);
        {
            //  every model here but resnet_tiny (Conv -> BatchNorm -> Relu)
            //  has a Conv/Gemm/MatMul followed by an activation or a bias
            //  Add, so something must have been fused
            char err[256];
            zi_exec_t *ex = zi_exec_new (g, 0, -1, NULL, err, sizeof err);
            const zi_tensor_t *in[1] = {x};
            zi_tensor_t *y[4] = {0};
            cr_assert_eq (zi_exec_run (ex, in, y, err, sizeof err), 0);
            if (!strstr (zt_models[m], "resnet_tiny")) {
                cr_assert_gt (zi_exec_n_fused (ex), 0, "%s: nothing fused", zt_models[m]);
            }
            if (strstr (zt_models[m], "fashion")) {
                //  Conv + Relu + MaxPool twice, Gemm + Relu
                cr_assert_eq (zi_exec_n_fused (ex), 5, "%s: %d tails fused", zt_models[m],
                              zi_exec_n_fused (ex));
            }
            for (int k = 0; k < zi_exec_n_outputs (ex); k++) {
                zi_tensor_destroy (&y[k]);
            }
            zi_exec_destroy (&ex);
        }
        const char *name = g->values[g->outputs[0]].name;
        const zi_tensor_t *a = s_env_get (&fused, name), *b = s_env_get (&plain, name);
        cr_assert_eq (memcmp (a->data, b->data, a->nbytes), 0, "%s: fused differs",
                      zt_models[m]);
        s_env_clear (&fused);
        s_env_clear (&plain);
        zi_tensor_destroy (&x);
        zi_graph_destroy (&g);
    }
}

Test (exec, memory_plan_reuses_buffers_and_replans_per_batch)
{
    zi_graph_t *g = zt_model_load ("tests/models/resnet_tiny");
    char err[512];
    zi_exec_t *ex = zi_exec_new (g, 0, -1, NULL, err, sizeof err);
    cr_assert_not_null (ex, "%s", err);
    for (int64_t batch = 1; batch <= 4; batch *= 2) {
        zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 4, (int64_t[]){batch, 3, 16, 16});
        zi_tensor_t *y = NULL;
        const zi_tensor_t *in[1] = {x};
        cr_assert_eq (zi_exec_run (ex, in, &y, err, sizeof err), 0, "%s", err);
        cr_assert_eq (y->ne[0], batch);
        //  intermediates share memory: the arena is smaller than their sum
        cr_assert_gt (zi_exec_peak_bytes (ex), 0);
        cr_assert_lt (zi_exec_peak_bytes (ex), zi_exec_naive_bytes (ex),
                      "peak %zu, naive %zu", zi_exec_peak_bytes (ex), zi_exec_naive_bytes (ex));
        zi_tensor_destroy (&y);
        zi_tensor_destroy (&x);
    }
    zi_exec_destroy (&ex);
    zi_graph_destroy (&g);
}

Test (exec, wrong_inputs_get_clear_errors)
{
    zi_graph_t *g = zt_model_load ("examples/fashion-mnist");
    char err[512];
    zi_exec_t *ex = zi_exec_new (g, 0, -1, NULL, err, sizeof err);
    cr_assert_not_null (ex);
    zi_tensor_t *y = NULL;
    //  wrong shape
    zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 4, (int64_t[]){2, 1, 27, 28});
    const zi_tensor_t *in[1] = {x};
    cr_assert_eq (zi_exec_run (ex, in, &y, err, sizeof err), ZI_ERR_SHAPE);
    cr_assert (strstr (err, "input 'input': shape [2,1,27,28], the model expects [?,1,28,28]"),
               "%s", err);
    zi_tensor_destroy (&x);
    //  wrong dtype
    x = zi_tensor_new (ZI_DT_U8, 4, (int64_t[]){2, 1, 28, 28});
    in[0] = x;
    cr_assert_eq (zi_exec_run (ex, in, &y, err, sizeof err), ZI_ERR_SHAPE);
    cr_assert (strstr (err, "dtype uint8, the model expects float32"), "%s", err);
    zi_tensor_destroy (&x);
    //  wrong name
    x = zi_tensor_new (ZI_DT_F32, 4, (int64_t[]){2, 1, 28, 28});
    const char *names[1] = {"image"};
    in[0] = x;
    cr_assert_eq (zi_exec_run_named (ex, 1, names, in, &y, err, sizeof err), ZI_ERR_NOTFOUND);
    cr_assert (strstr (err, "'image' is not an input"), "%s", err);
    //  and it still runs correctly afterwards
    names[0] = "input";
    cr_assert_eq (zi_exec_run_named (ex, 1, names, in, &y, err, sizeof err), 0, "%s", err);
    cr_assert_eq (y->ne[1], 10);
    zi_tensor_destroy (&y);
    zi_tensor_destroy (&x);
    //  bad ranges
    cr_assert_null (zi_exec_new (g, 3, 1, NULL, err, sizeof err));
    cr_assert (strstr (err, "not a node range"), "%s", err);
    cr_assert_null (zi_exec_new (g, 0, g->n_nodes, NULL, err, sizeof err));
    zi_exec_destroy (&ex);
    zi_graph_destroy (&g);
}

Test (exec, huge_outputs_from_small_inputs_are_refused)
{
    //  ConstantOfShape of a constant [2^16, 2^15] would be 8 GiB of floats:
    //  the executor must refuse it by name before allocating.
    zi_graph_t *g = zi_graph_new ();
    int shape = zi_graph_add_value (g, "shape");
    int y = zi_graph_add_value (g, "y");
    g->values[shape].init = zi_tensor_new (ZI_DT_I64, 1, (int64_t[]){2});
    ((int64_t *) g->values[shape].init->data)[0] = INT64_C (1) << 16;
    ((int64_t *) g->values[shape].init->data)[1] = INT64_C (1) << 15;
    int n = zi_graph_add_node (g, "ConstantOfShape", "", "big", 1, &shape, 1, &y);
    cr_assert_geq (n, 0);
    g->nodes[n].op = zi_op_find ("ConstantOfShape", "");
    g->outputs = (int *) malloc (sizeof (int));
    g->outputs[0] = y;
    g->n_outputs = 1;
    g->values[y].is_output = true;
    char err[512];
    cr_assert_eq (zi_graph_sort (g, err, sizeof err), 0, "%s", err);
    zi_exec_t *ex = zi_exec_new (g, 0, -1, NULL, err, sizeof err);
    cr_assert_not_null (ex, "%s", err);
    zi_tensor_t *out = NULL;
    cr_assert_eq (zi_exec_run (ex, NULL, &out, err, sizeof err), ZI_ERR_LIMIT);
    cr_assert (strstr (err, "node 'big' (ConstantOfShape)") && strstr (err, "limit"), "%s", err);
    cr_assert_null (out);
    zi_exec_destroy (&ex);
    zi_graph_destroy (&g);
}

//  x repeated `reps` times along its first dim (a bigger batch), with a
//  little change per copy so the rows differ.
static zi_tensor_t *
s_tile_batch (const zi_tensor_t *x, int reps)
{
    int64_t ne[ZI_MAX_RANK];
    memcpy (ne, x->ne, sizeof ne);
    ne[0] *= reps;
    zi_tensor_t *t = zi_tensor_new (ZI_DT_F32, x->rank, ne);
    cr_assert_not_null (t);
    int64_t n = zi_tensor_count (x);
    for (int r = 0; r < reps; r++) {
        float *dst = (float *) t->data + r * n;
        const float *src = (const float *) x->data;
        for (int64_t i = 0; i < n; i++) {
            dst[i] = src[i] * (1.0f + 0.01f * (float) r);
        }
    }
    return t;
}

//  The kernels split their work over the executor's pool: 1, 2 or 3
//  threads, whole graph or cut, give the same bytes, on the AVX-512 GEMM
//  and on the portable (OpenBLAS) one, at the saved batch and at a big one;
//  each path is close to torch's output.
Test (exec, thread_counts_and_gemm_paths_are_bit_identical)
{
    for (size_t m = 0; m < ZT_NMODELS; m++) {
        zi_graph_t *g = zt_model_load (zt_models[m]);
        zi_tensor_t *x0 = zt_model_pb (zt_models[m], 0, "input_0.pb");
        zi_tensor_t *want = zt_model_pb (zt_models[m], 0, "output_0.pb");
        const char *in_name = g->values[g->inputs[0]].name;
        const char *out_name = g->values[g->outputs[0]].name;
        for (int big = 0; big <= 1; big++) {
            zi_tensor_t *x = big ? s_tile_batch (x0, (int) (64 / x0->ne[0])) : zi_tensor_dup (x0);
            for (int avx = 0; avx <= 1; avx++) {
                zi_gemm_set_avx512 (avx);
                s_env_t ref = {.n = 1, .names = {in_name}, .tensors = {zi_tensor_dup (x)}};
                s_run_segment_threads (g, 0, -1, &ref, false, 1);
                const zi_tensor_t *y1 = s_env_get (&ref, out_name);
                char what[256];
                snprintf (what, sizeof what, "%s batch %lld (avx512 %d)", zt_models[m],
                          (long long) x->ne[0], zi_gemm_avx512 ());
                if (!big) {
                    s_assert_close (y1, want, 1e-4, 1e-5, what);
                }
                for (int t = 2; t <= 3; t++) {
                    s_env_t env = {.n = 1, .names = {in_name}, .tensors = {zi_tensor_dup (x)}};
                    s_run_segment_threads (g, 0, -1, &env, false, t);
                    const zi_tensor_t *yt = s_env_get (&env, out_name);
                    cr_assert_eq (memcmp (yt->data, y1->data, y1->nbytes), 0,
                                  "%s: %d threads differ from 1", what, t);
                    s_env_clear (&env);
                }
                //  cut in two at every third node, each half on 2 threads
                for (int c = 0; c + 1 < g->n_nodes; c += 3) {
                    s_env_t env = {.n = 1, .names = {in_name}, .tensors = {zi_tensor_dup (x)}};
                    s_run_segment_threads (g, 0, c, &env, false, 2);
                    s_run_segment_threads (g, c + 1, -1, &env, false, 2);
                    const zi_tensor_t *yc = s_env_get (&env, out_name);
                    cr_assert_eq (memcmp (yc->data, y1->data, y1->nbytes), 0,
                                  "%s: cut after node %d differs", what, c);
                    s_env_clear (&env);
                }
                s_env_clear (&ref);
            }
            zi_tensor_destroy (&x);
        }
        zi_gemm_set_avx512 (-1);
        zi_tensor_destroy (&want);
        zi_tensor_destroy (&x0);
        zi_graph_destroy (&g);
    }
}

//  Constant GEMM weights are packed once, at the first run, and reused:
//  the memory they take is reported and does not grow with more runs or a
//  new batch size.
Test (exec, gemm_weights_are_packed_once)
{
    zi_gemm_set_avx512 (1);
    if (!zi_gemm_avx512 ()) {
        cr_skip_test ("no AVX-512 on this CPU: weights are not packed");
    }
    zi_graph_t *g = zt_model_load ("tests/models/mlp");
    char err[512];
    zi_exec_opts_t opts = {.nthreads = 2};
    zi_exec_t *ex = zi_exec_new (g, 0, -1, &opts, err, sizeof err);
    cr_assert_not_null (ex, "%s", err);
    cr_assert_eq (zi_exec_packed_bytes (ex), 0);
    size_t packed = 0;
    for (int64_t batch = 1; batch <= 64; batch *= 4) {
        zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){batch, 784});
        cr_assert_not_null (x);
        memset (x->data, 0, x->nbytes);
        for (int rep = 0; rep < 2; rep++) {
            zi_tensor_t *y = NULL;
            const zi_tensor_t *in[1] = {x};
            cr_assert_eq (zi_exec_run (ex, in, &y, err, sizeof err), 0, "%s", err);
            zi_tensor_destroy (&y);
            if (packed == 0) {
                packed = zi_exec_packed_bytes (ex);
                //  784x1024 + 2 x 1024x1024 + 1024x10 (padded to 16) floats
                size_t floats = 784 * 1024 + 2 * 1024 * 1024 + 1024 * 16;
                cr_assert_geq (packed, floats * sizeof (float));
                cr_assert_lt (packed, floats * sizeof (float) + 4096);
            }
            cr_assert_eq (zi_exec_packed_bytes (ex), packed);
        }
        zi_tensor_destroy (&x);
    }
    zi_exec_destroy (&ex);
    zi_graph_destroy (&g);
    zi_gemm_set_avx512 (-1);
}

//  zi_exec_set_output_alloc: outputs computed straight into the caller's
//  memory are the same bytes as the executor's own; a NULL answer falls
//  back; the memory is never freed by the executor. (Outputs folded at
//  plan time, such as a Shape of the input, are copies, never asked for.)
#define S_NBUF 32
typedef struct {
    void *buf[S_NBUF];
    size_t asked[S_NBUF];
    int refuse;                 //  output index to answer NULL for, or -1
} s_alloc_t;

static void *
s_test_alloc (void *arg, int i, size_t nbytes)
{
    s_alloc_t *a = (s_alloc_t *) arg;
    if (i < 0 || i >= S_NBUF || i == a->refuse || a->buf[i]) {
        return NULL;
    }
    a->buf[i] = malloc (nbytes);
    cr_assert_not_null (a->buf[i]);
    a->asked[i] = nbytes;
    memset (a->buf[i], 0xA5, nbytes);   //  stale bytes: the kernels must overwrite all
    return a->buf[i];
}

Test (exec, outputs_go_straight_into_caller_memory)
{
    for (size_t m = 0; m < ZT_NMODELS; m++) {
        zi_graph_t *g = zt_model_load (zt_models[m]);
        zi_tensor_t *x = zt_model_pb (zt_models[m], 0, "input_0.pb");
        char err[1024];
        int checked = 0;
        //  segment boundaries: the outputs are the cut tensors (and the
        //  model's outputs for the last one)
        for (int c = 0; c < g->n_nodes; c += 1 + g->n_nodes / 6) {
            int last = c + g->n_nodes / 6 >= g->n_nodes - 1 ? g->n_nodes - 1 : c;
            s_env_t ref = {0};
            ref.names[0] = g->values[g->inputs[0]].name;
            ref.tensors[0] = zi_tensor_dup (x);
            ref.n = 1;
            s_run_segment (g, 0, last, &ref, false);
            zi_exec_t *ex = zi_exec_new (g, 0, last, NULL, err, sizeof err);
            cr_assert_not_null (ex, "%s", err);
            zi_exec_set_output_alloc (ex, s_test_alloc, NULL);
            cr_assert_leq (zi_exec_n_outputs (ex), S_NBUF);
            const zi_tensor_t *in[1] = {x};
            zi_tensor_t *out[64] = {0};
            for (int refuse = -1; refuse < zi_exec_n_outputs (ex); refuse++) {
                s_alloc_t a = {.refuse = refuse};
                zi_exec_set_output_alloc (ex, s_test_alloc, &a);
                cr_assert_eq (zi_exec_run (ex, in, out, err, sizeof err), 0, "%s", err);
                for (int i = 0; i < zi_exec_n_outputs (ex); i++) {
                    const zi_tensor_t *want = s_env_get (&ref, zi_exec_output (ex, i)->name);
                    cr_assert_not_null (want);
                    cr_assert (zi_tensor_same_shape (out[i], want));
                    cr_assert_eq (memcmp (out[i]->data, want->data, want->nbytes), 0,
                                  "%s nodes 0..%d: output %d differs in caller memory",
                                  zt_models[m], last, i);
                    bool mine = a.buf[i] != NULL;
                    cr_assert_eq (out[i]->data == a.buf[i], mine,
                                  "%s nodes 0..%d: output %d not where the caller put it",
                                  zt_models[m], last, i);
                    cr_assert_eq (out[i]->owns_data, !mine);
                    if (mine) {
                        cr_assert_eq (a.asked[i], want->nbytes);
                        checked++;
                    }
                    zi_tensor_destroy (&out[i]);     //  frees only what the executor owned
                }
                for (int i = 0; i < S_NBUF; i++) {
                    free (a.buf[i]);
                }
            }
            zi_exec_destroy (&ex);
            s_env_clear (&ref);
            if (last == g->n_nodes - 1) {
                break;
            }
        }
        cr_assert_gt (checked, 0, "%s: no output went to caller memory", zt_models[m]);
        zi_tensor_destroy (&x);
        zi_graph_destroy (&g);
    }
}
