/*  test_identity_cut.c - a model that starts with Identity nodes on
    initializers (torch's shared all-zero conv biases), the README's old
    "known bug": those Identity outputs used to cross segment cuts as if
    they were activations, without a batch axis.

    tests/models/identity_bias (made by tests/models/make_models.py, torch
    reference outputs in .npy): Identity(zero_bias) x3 -> conv biases,
    Identity(fc_b_src), Reshape(bn_scale_src) -> a per-channel scale, three
    convs, GlobalAveragePool, torch's x.reshape(x.shape[0], -1) as
    Shape -> Gather -> Unsqueeze -> Concat -> Reshape, Gemm.

    Checks: (a) the loader folds the constant-only nodes into initializers;
    (b) every single cut, run segment by segment, is bit-identical to the
    whole graph, and every cut zinfer plan may choose also survives the
    broker's coalescing (cut tensors of two tasks joined along axis 0);
    (c) `zinfer plan` only makes cut tensors that carry the batch axis, and
    says which tensor forbids a cut when asked for too many segments;
    (d) the exec worker answers tasks of the wrong shape with an error that
    names the tensor, and refuses a plan that cuts across a shape tensor.
    // ctest-timeout: 60
*/
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "zi_exec.h"
#include "zi_msg.h"
#include "zi_npy.h"
#include "zi_onnx.h"
#include "zi_split.h"
#include "zi_plan.h"
#include "zi_planner.h"
#include "zi_worker.h"

#include "zt_spawn.h"

#define MODEL_DIR ZI_SOURCE_DIR "/tests/models/identity_bias"
#define MODEL MODEL_DIR "/identity_bias.onnx"
#define ZINFER ZI_BINARY_DIR "/zinfer"

//  ---------------------------------------------------------------------
//  Helpers

static char s_dir[64];

static void
s_setup (void)
{
    strcpy (s_dir, "/tmp/zi_identity_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
}

static void
s_teardown (void)
{
    if (*s_dir) {
        zt_rm_tree (s_dir);
        *s_dir = 0;
    }
}

TestSuite (identity_cut, .init = s_setup, .fini = s_teardown);

static zi_graph_t *
s_load (void)
{
    char err[1024];
    zi_graph_t *g = zi_onnx_load (MODEL, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    return g;
}

//  The model as a plan runs it: with the layers it splits split.
static zi_graph_t *
s_load_for (const zi_plan_t *plan)
{
    char err[1024];
    zi_graph_t *g = s_load ();
    cr_assert_eq (zi_split_apply_all (g, plan->model.splits, plan->model.n_splits, err,
                                      sizeof err), 0, "%s", err);
    return g;
}

static zi_tensor_t *
s_npy (const char *file)
{
    char path[1024], err[512];
    snprintf (path, sizeof path, "%s/%s", MODEL_DIR, file);
    zi_tensor_t *t = NULL;
    cr_assert_eq (zi_npy_read (path, &t, err, sizeof err), 0, "%s", err);
    return t;
}

static int
s_find (const zi_graph_t *g, const char *name)
{
    int v = zi_graph_find_value (g, name);
    cr_assert_geq (v, 0, "no value '%s'", name);
    return v;
}

//  A name -> tensor table of what the segments computed so far.
typedef struct {
    int n;
    char *names[64];
    zi_tensor_t *tensors[64];
} s_env_t;

static void
s_env_put (s_env_t *env, const char *name, zi_tensor_t *t)
{
    cr_assert_lt (env->n, 64);
    env->names[env->n] = strdup (name);
    env->tensors[env->n++] = t;
}

static zi_tensor_t *
s_env_get (const s_env_t *env, const char *name)
{
    for (int i = 0; i < env->n; i++) {
        if (strcmp (env->names[i], name) == 0) {
            return env->tensors[i];
        }
    }
    return NULL;
}

static void
s_env_clear (s_env_t *env)
{
    for (int i = 0; i < env->n; i++) {
        free (env->names[i]);
        zi_tensor_destroy (&env->tensors[i]);
    }
    env->n = 0;
}

//  Run nodes [first, last] on the table, adding the segment's outputs.
static void
s_run (const zi_graph_t *g, int first, int last, s_env_t *env)
{
    char err[1024];
    zi_exec_t *ex = zi_exec_new (g, first, last, NULL, err, sizeof err);
    cr_assert_not_null (ex, "nodes %d..%d: %s", first, last, err);
    const zi_tensor_t *in[64];
    zi_tensor_t *out[64];
    for (int i = 0; i < zi_exec_n_inputs (ex); i++) {
        in[i] = s_env_get (env, zi_exec_input (ex, i)->name);
        cr_assert_not_null (in[i], "nodes %d..%d need '%s'", first, last,
                            zi_exec_input (ex, i)->name);
    }
    cr_assert_eq (zi_exec_run (ex, in, out, err, sizeof err), 0, "nodes %d..%d: %s", first,
                  last, err);
    for (int i = 0; i < zi_exec_n_outputs (ex); i++) {
        s_env_put (env, zi_exec_output (ex, i)->name, out[i]);
    }
    zi_exec_destroy (&ex);
}

//  The whole graph on one input.
static zi_tensor_t *
s_whole (const zi_graph_t *g, const zi_tensor_t *x)
{
    s_env_t env = {0};
    s_env_put (&env, "input", zi_tensor_dup (x));
    s_run (g, 0, g->n_nodes - 1, &env);
    zi_tensor_t *y = zi_tensor_dup (s_env_get (&env, "output"));
    s_env_clear (&env);
    return y;
}

static bool
s_bit_equal (const zi_tensor_t *a, const zi_tensor_t *b)
{
    return zi_tensor_same_shape (a, b) && a->nbytes == b->nbytes
           && memcmp (a->data, b->data, a->nbytes) == 0;
}

//  a and b joined along axis 0 (both contiguous, same trailing dims).
static zi_tensor_t *
s_concat0 (const zi_tensor_t *a, const zi_tensor_t *b)
{
    cr_assert (a->rank >= 1 && a->rank == b->rank && a->dtype == b->dtype);
    int64_t shape[ZI_MAX_RANK];
    memcpy (shape, a->ne, sizeof shape);
    shape[0] = a->ne[0] + b->ne[0];
    zi_tensor_t *t = zi_tensor_new (a->dtype, a->rank, shape);
    cr_assert_not_null (t);
    cr_assert_eq (t->nbytes, a->nbytes + b->nbytes);
    memcpy (t->data, a->data, a->nbytes);
    memcpy ((char *) t->data + a->nbytes, b->data, b->nbytes);
    return t;
}

//  The inputs cmd_plan estimates with: the symbolic batch bound to `batch`.
static zi_tensor_t *
s_probe (const zi_graph_t *g, int64_t batch)
{
    const zi_value_t *v = &g->values[g->inputs[0]];
    int64_t shape[ZI_MAX_RANK];
    for (int d = 0; d < v->rank; d++) {
        shape[d] = v->shape[d] >= 0 ? v->shape[d] : batch;
    }
    zi_tensor_t *t = zi_tensor_new (v->dtype, v->rank, shape);
    cr_assert_not_null (t);
    return t;
}

//  ---------------------------------------------------------------------
//  (a) Loading folds the constant-only nodes

Test (identity_cut, load_folds_identity_and_constant_nodes)
{
    zi_graph_t *g = s_load ();
    //  20 nodes in the file: 4 Identity + 1 Reshape of initializers fold.
    cr_assert_eq (g->n_nodes, 15, "nodes after folding: %d", g->n_nodes);
    for (int n = 0; n < g->n_nodes; n++) {
        cr_assert_str_neq (g->nodes[n].op_type, "Identity", "node %d is still an Identity", n);
        bool all_const = true;
        for (int k = 0; k < g->nodes[n].n_in; k++) {
            int v = g->nodes[n].in[k];
            all_const &= v < 0 || g->values[v].init != NULL;
        }
        cr_assert_not (all_const, "node %d (%s) reads only constants", n, g->nodes[n].name);
    }
    //  The Identity outputs are weights now, each with its own data.
    const char *biases[] = {"b0", "b1", "b2"};
    for (int i = 0; i < 3; i++) {
        const zi_value_t *b = &g->values[s_find (g, biases[i])];
        cr_assert_not_null (b->init, "%s is not an initializer", biases[i]);
        cr_assert_eq (b->producer, -1);
        cr_assert_eq (b->init->rank, 1);
        cr_assert_eq (b->init->ne[0], 8);
        for (int c = 0; c < 8; c++) {
            cr_assert_eq (((const float *) b->init->data)[c], 0.0f);
        }
    }
    const zi_value_t *scale = &g->values[s_find (g, "scale")];
    cr_assert_not_null (scale->init);
    cr_assert_eq (scale->init->rank, 3);
    cr_assert_eq (scale->init->ne[0], 8);
    cr_assert_not_null (g->values[s_find (g, "fc_b")].init);
    //  Sources that only the folded nodes read are gone (no second copy).
    cr_assert_null (g->values[s_find (g, "zero_bias")].init);
    cr_assert_null (g->values[s_find (g, "fc_b_src")].init);
    cr_assert_null (g->values[s_find (g, "bn_scale_src")].init);

    //  And the model still computes what torch computed.
    const char *sets[][2] = {{"input_b2.npy", "output_b2.npy"}, {"input_b3.npy", "output_b3.npy"}};
    for (int s = 0; s < 2; s++) {
        zi_tensor_t *x = s_npy (sets[s][0]), *want = s_npy (sets[s][1]);
        zi_tensor_t *y = s_whole (g, x);
        cr_assert (zi_tensor_same_shape (y, want));
        for (int64_t i = 0; i < zi_tensor_count (y); i++) {
            float a = ((const float *) y->data)[i], b = ((const float *) want->data)[i];
            cr_assert (fabsf (a - b) <= 1e-4f + 1e-4f * fabsf (b), "%s[%lld]: %g vs %g",
                       sets[s][1], (long long) i, a, b);
        }
        zi_tensor_destroy (&x);
        zi_tensor_destroy (&want);
        zi_tensor_destroy (&y);
    }
    zi_graph_destroy (&g);
}

//  ---------------------------------------------------------------------
//  (b) Every cut, segment by segment

Test (identity_cut, every_cut_is_bit_identical_and_safe_cuts_coalesce)
{
    zi_graph_t *g = s_load ();
    zi_tensor_t *x2 = s_npy ("input_b2.npy"), *x3 = s_npy ("input_b3.npy");
    zi_tensor_t *x5 = s_concat0 (x2, x3);
    zi_tensor_t *want2 = s_whole (g, x2), *want3 = s_whole (g, x3), *want5 = s_whole (g, x5);

    zi_tensor_t *probe = s_probe (g, 16);
    int bad[64];
    cr_assert_leq (g->n_nodes, 64);
    char err[512];
    int forbidden = zi_planner_safe_cuts (g, (const zi_tensor_t *const *) &probe, bad, err,
                                          sizeof err);
    cr_assert_geq (forbidden, 0, "%s", err);
    zi_tensor_destroy (&probe);
    //  Only the four cuts inside Shape -> Gather -> Unsqueeze -> Concat pass
    //  a tensor without the batch axis; before folding, every cut before the
    //  last conv passed the zero bias.
    cr_assert_eq (forbidden, 4);
    const char *shape_chain[] = {"gap_shape", "n0", "n1", "flat_shape"};
    for (int j = 0; j < g->n_nodes - 1; j++) {
        bool in_chain = j >= 9 && j <= 12;
        cr_assert_eq (bad[j] >= 0, in_chain, "cut after node %d (%s)", j, g->nodes[j].name);
        if (in_chain) {
            cr_assert_str_eq (g->values[bad[j]].name, shape_chain[j - 9]);
        }
    }

    for (int j = 0; j + 1 < g->n_nodes; j++) {
        //  Segment by segment, for two batches: bit-identical to the whole.
        const zi_tensor_t *xs[2] = {x2, x3};
        const zi_tensor_t *wants[2] = {want2, want3};
        s_env_t env[2] = {{0}, {0}};
        for (int b = 0; b < 2; b++) {
            s_env_put (&env[b], "input", zi_tensor_dup (xs[b]));
            s_run (g, 0, j, &env[b]);
            s_run (g, j + 1, g->n_nodes - 1, &env[b]);
            cr_assert (s_bit_equal (s_env_get (&env[b], "output"), wants[b]),
                       "cut after node %d, batch %lld: differs from the whole graph", j,
                       (long long) xs[b]->ne[0]);
        }
        s_env_clear (&env[1]);
        s_env_clear (&env[0]);
        if (bad[j] >= 0) {
            continue;
        }
        //  As the broker coalesces two tasks: segment 0 ran on each batch,
        //  the second segment runs once on the cut tensors joined along
        //  axis 0. Every cut tensor must have the batch as dim 0 for that.
        char err2[1024];
        zi_exec_t *head = zi_exec_new (g, 0, j, NULL, err2, sizeof err2);
        zi_exec_t *tail = zi_exec_new (g, j + 1, g->n_nodes - 1, NULL, err2, sizeof err2);
        cr_assert (head && tail, "%s", err2);
        zi_tensor_t *o2[16], *o3[16];
        const zi_tensor_t *in2[1] = {x2}, *in3[1] = {x3};
        cr_assert_eq (zi_exec_n_inputs (head), 1);
        cr_assert_leq (zi_exec_n_outputs (head), 16);
        cr_assert_eq (zi_exec_run (head, in2, o2, err2, sizeof err2), 0, "%s", err2);
        cr_assert_eq (zi_exec_run (head, in3, o3, err2, sizeof err2), 0, "%s", err2);
        s_env_t joined = {0};
        s_env_put (&joined, "input", zi_tensor_dup (x5));
        for (int i = 0; i < zi_exec_n_outputs (head); i++) {
            const char *name = zi_exec_output (head, i)->name;
            cr_assert (o2[i]->rank >= 1 && o2[i]->ne[0] == 2 && o3[i]->ne[0] == 3,
                       "cut after node %d: '%s' has no batch axis", j, name);
            s_env_put (&joined, name, s_concat0 (o2[i], o3[i]));
            zi_tensor_destroy (&o2[i]);
            zi_tensor_destroy (&o3[i]);
        }
        zi_exec_destroy (&head);
        zi_exec_destroy (&tail);
        s_run (g, j + 1, g->n_nodes - 1, &joined);
        const zi_tensor_t *y = s_env_get (&joined, "output");
        cr_assert (zi_tensor_same_shape (y, want5), "cut after node %d: coalesced shape", j);
        for (int64_t i = 0; i < zi_tensor_count (y); i++) {
            float a = ((const float *) y->data)[i], b = ((const float *) want5->data)[i];
            cr_assert (fabsf (a - b) <= 1e-5f + 1e-5f * fabsf (b),
                       "cut after node %d, coalesced [%lld]: %g vs %g", j, (long long) i, a, b);
        }
        s_env_clear (&joined);
    }
    zi_tensor_destroy (&x2);
    zi_tensor_destroy (&x3);
    zi_tensor_destroy (&x5);
    zi_tensor_destroy (&want2);
    zi_tensor_destroy (&want3);
    zi_tensor_destroy (&want5);
    zi_graph_destroy (&g);
}

//  ---------------------------------------------------------------------
//  (c) zinfer plan

static int
s_sh (char *out, size_t len, const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));

static int
s_sh (char *out, size_t len, const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (cmd, sizeof cmd, fmt, ap);
    va_end (ap);
    strncat (cmd, " 2>&1", sizeof cmd - strlen (cmd) - 1);
    FILE *p = popen (cmd, "r");
    cr_assert_not_null (p);
    size_t n = fread (out, 1, len - 1, p);
    out[n] = 0;
    int st = pclose (p);
    return WIFEXITED (st) ? WEXITSTATUS (st) : -1;
}

static zi_plan_t *
s_plan (int k)
{
    char out[4096], path[256], err[1024];
    snprintf (path, sizeof path, "%s/plan%d.json", s_dir, k);
    int rc = s_sh (out, sizeof out, "%s plan %s -o %s --ipc %s --segments %d", ZINFER, MODEL,
                   path, s_dir, k);
    cr_assert_eq (rc, 0, "zinfer plan --segments %d: %s", k, out);
    zi_plan_t *plan = zi_plan_load (path, err, sizeof err);
    cr_assert_not_null (plan, "%s", err);
    return plan;
}

Test (identity_cut, plan_cut_tensors_carry_the_batch_axis)
{
    zi_graph_t *g = s_load ();
    zi_tensor_t *x2 = s_npy ("input_b2.npy"), *x3 = s_npy ("input_b3.npy");
    for (int k = 2; k <= 11; k++) {
        zi_plan_t *plan = s_plan (k);
        zi_graph_destroy (&g);
        g = s_load_for (plan);
        cr_assert_eq (plan->model.node_count, g->n_nodes);
        cr_assert_eq (plan->n_segments, (size_t) k);
        //  Run the plan's segments for batch 2 and 3: every tensor a
        //  segment receives from an earlier one has the batch as dim 0.
        const zi_tensor_t *xs[2] = {x2, x3};
        for (int b = 0; b < 2; b++) {
            s_env_t env = {0};
            s_env_put (&env, "input", zi_tensor_dup (xs[b]));
            for (size_t s = 0; s < plan->n_segments; s++) {
                const zi_plan_segment_t *seg = &plan->segments[s];
                for (size_t i = 0; i < seg->n_inputs; i++) {
                    if (strcmp (seg->inputs[i], "input") == 0) {
                        continue;
                    }
                    const zi_tensor_t *t = s_env_get (&env, seg->inputs[i]);
                    cr_assert_not_null (t, "%d segments: '%s'", k, seg->inputs[i]);
                    cr_assert (t->rank >= 1 && t->ne[0] == xs[b]->ne[0],
                               "%d segments: segment %zu input '%s' has no batch axis", k, s,
                               seg->inputs[i]);
                }
                s_run (g, (int) seg->first_node, (int) seg->last_node, &env);
            }
            s_env_clear (&env);
        }
        zi_plan_destroy (&plan);
    }
    //  More segments than safe cuts: the error names a tensor in the way.
    char out[4096];
    int rc = s_sh (out, sizeof out, "%s plan %s -o %s/p.json --segments 14", ZINFER, MODEL,
                   s_dir);
    cr_assert_eq (rc, 1, "%s", out);
    cr_assert (strstr (out, "only 10 of the 14 places") && strstr (out, "'flat_shape' has no "
                                                                        "batch axis"),
               "%s", out);
    zi_tensor_destroy (&x2);
    zi_tensor_destroy (&x3);
    zi_graph_destroy (&g);
}

//  ---------------------------------------------------------------------
//  (d) The worker: malformed tasks get an error, bad cuts are refused

static zi_msg_t *
s_task (uint64_t id, uint32_t seg)
{
    zi_msg_t *task = zi_msg_new (ZI_CMD_TASK);
    cr_assert_not_null (task);
    zi_msg_set_id (task, id);
    zi_msg_set_seg (task, seg);
    zi_msg_add_req (task, 100 + id, 0, 2);
    return task;
}

static void
s_add (zi_msg_t *task, const char *name, int rank, const int64_t *shape)
{
    zi_tensor_t *t = zi_tensor_new (ZI_DT_F32, rank, shape);
    cr_assert_not_null (t);
    memset (t->data, 0, t->nbytes);
    cr_assert_eq (zi_msg_add_tensor (task, name, &t), 0);
}

//  The answer must be an error naming the tensor and both shapes.
static void
s_expect_error (zi_worker_t *w, zi_msg_t *task, const char *a, const char *b, const char *c)
{
    zi_msg_t *answer = zi_worker_process (w, &task);
    cr_assert_not_null (answer);
    cr_assert_eq (zi_msg_cmd (answer), ZI_CMD_ERROR, "expected an error mentioning %s", a);
    const char *reason = zi_msg_reason (answer);
    cr_assert (strstr (reason, a) && (!b || strstr (reason, b)) && (!c || strstr (reason, c)),
               "reason: %s", reason);
    zi_msg_destroy (&answer);
}

Test (identity_cut, worker_answers_malformed_tasks_with_errors)
{
    //  10 segments: a later one that takes two cut tensors (the residual
    //  Add's), none of them a model input.
    zi_plan_t *plan = s_plan (10);
    size_t si = 1;
    while (si < plan->n_segments && plan->segments[si].n_inputs < 2) {
        si++;
    }
    cr_assert_lt (si, plan->n_segments, "no segment takes two tensors");
    const zi_plan_segment_t *seg = &plan->segments[si];
    uint32_t sn = (uint32_t) si;
    char err[1024];
    zi_worker_t *w = zi_worker_new (plan, seg->replicas[0].name, err, sizeof err);
    cr_assert_not_null (w, "%s", err);
    //  The expected shapes, from a whole-graph plan at batch 2.
    zi_graph_t *g = s_load_for (plan);
    zi_exec_opts_t unfused = {.no_fuse = true};    //  every value planned
    zi_exec_t *ex = zi_exec_new (g, 0, -1, &unfused, err, sizeof err);
    zi_tensor_t *x2 = s_npy ("input_b2.npy");
    const zi_tensor_t *in[1] = {x2};
    cr_assert_eq (zi_exec_prepare (ex, in, err, sizeof err), 0, "%s", err);

    //  A correct task runs.
    zi_msg_t *task = s_task (1, sn);
    for (size_t i = 0; i < seg->n_inputs; i++) {
        const zi_tensor_t *t = zi_exec_value (ex, s_find (g, seg->inputs[i]));
        cr_assert (t->rank >= 1 && t->ne[0] == 2);
        s_add (task, seg->inputs[i], t->rank, t->ne);
    }
    zi_msg_t *answer = zi_worker_process (w, &task);
    cr_assert_eq (zi_msg_cmd (answer), ZI_CMD_RESULT, "%s", zi_msg_reason (answer));
    zi_msg_destroy (&answer);

    const char *cut = seg->inputs[0];
    const zi_tensor_t *good = zi_exec_value (ex, s_find (g, cut));
    int64_t shape[ZI_MAX_RANK];
    //  (1) the batch axis missing: the cut tensor of one sample, dim 0 gone
    task = s_task (2, sn);
    s_add (task, cut, good->rank - 1, good->ne + 1);
    for (size_t i = 1; i < seg->n_inputs; i++) {
        const zi_tensor_t *t = zi_exec_value (ex, s_find (g, seg->inputs[i]));
        s_add (task, seg->inputs[i], t->rank, t->ne);
    }
    s_expect_error (w, task, cut, "expects [?", "shape [");
    //  (2) a weight-shaped tensor (what the Identity bias used to be)
    task = s_task (3, sn);
    s_add (task, cut, 1, (int64_t[]) {8});
    for (size_t i = 1; i < seg->n_inputs; i++) {
        const zi_tensor_t *t = zi_exec_value (ex, s_find (g, seg->inputs[i]));
        s_add (task, seg->inputs[i], t->rank, t->ne);
    }
    s_expect_error (w, task, cut, "shape [8]", "expects");
    //  (3) a wrong channel count
    memcpy (shape, good->ne, sizeof shape);
    shape[1] += 1;
    task = s_task (4, sn);
    s_add (task, cut, good->rank, shape);
    for (size_t i = 1; i < seg->n_inputs; i++) {
        const zi_tensor_t *t = zi_exec_value (ex, s_find (g, seg->inputs[i]));
        s_add (task, seg->inputs[i], t->rank, t->ne);
    }
    s_expect_error (w, task, cut, "expects", NULL);
    //  (4) inputs of different batches
    {
        task = s_task (5, sn);
        for (size_t i = 0; i < seg->n_inputs; i++) {
            const zi_tensor_t *t = zi_exec_value (ex, s_find (g, seg->inputs[i]));
            memcpy (shape, t->ne, sizeof shape);
            shape[0] = i == 0 ? 2 : 3;
            s_add (task, seg->inputs[i], t->rank, shape);
        }
        s_expect_error (w, task, "has batch", "batch 3", "batch 2");
    }
    //  (5) a scalar
    task = s_task (6, sn);
    s_add (task, cut, 0, NULL);
    s_expect_error (w, task, cut, "expects", NULL);
    //  The worker still serves.
    task = s_task (7, sn);
    for (size_t i = 0; i < seg->n_inputs; i++) {
        const zi_tensor_t *t = zi_exec_value (ex, s_find (g, seg->inputs[i]));
        s_add (task, seg->inputs[i], t->rank, t->ne);
    }
    answer = zi_worker_process (w, &task);
    cr_assert_eq (zi_msg_cmd (answer), ZI_CMD_RESULT, "%s", zi_msg_reason (answer));
    zi_msg_destroy (&answer);

    zi_worker_destroy (&w);
    zi_exec_destroy (&ex);
    zi_tensor_destroy (&x2);
    zi_graph_destroy (&g);
    zi_plan_destroy (&plan);
}

Test (identity_cut, worker_refuses_a_cut_across_a_shape_tensor)
{
    //  A hand-made cut after Concat (node 12): 'flat_shape' (int64 [2])
    //  would cross. zinfer plan never makes it; a worker given it says why.
    zi_plan_t *plan = s_plan (2);
    zi_plan_segment_t *s0 = &plan->segments[0], *s1 = &plan->segments[1];
    for (size_t i = 0; i < s0->n_outputs; i++) {
        free (s0->outputs[i]);
    }
    for (size_t i = 0; i < s1->n_inputs; i++) {
        free (s1->inputs[i]);
    }
    s0->last_node = 12;
    s1->first_node = 13;
    char **names = (char **) realloc (s0->outputs, 2 * sizeof (char *));
    cr_assert_not_null (names);
    s0->outputs = names;
    s0->outputs[0] = strdup ("gap");
    s0->outputs[1] = strdup ("flat_shape");
    s0->n_outputs = 2;
    names = (char **) realloc (s1->inputs, 2 * sizeof (char *));
    cr_assert_not_null (names);
    s1->inputs = names;
    s1->inputs[0] = strdup ("gap");
    s1->inputs[1] = strdup ("flat_shape");
    s1->n_inputs = 2;
    char err[1024];
    zi_worker_t *w = zi_worker_new (plan, "s1r0", err, sizeof err);
    cr_assert_null (w);
    cr_assert (strstr (err, "'flat_shape' has no batch axis") && strstr (err, "int64 [2]"),
               "%s", err);
    //  Segment 0 of the same plan is fine: it takes the model input only.
    w = zi_worker_new (plan, "s0r0", err, sizeof err);
    cr_assert_not_null (w, "%s", err);
    zi_worker_destroy (&w);
    zi_plan_destroy (&plan);
}
