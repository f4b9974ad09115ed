/*  test_ops_reduce.c - Reduce*, ArgMax / ArgMin, TopK and CumSum
    (lib/zi_ops_reduce.c) against naive references with double accumulation.
    Tolerance for float32 results: atol 1e-5 + rtol 1e-4.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zi_ops.h"

#define ZT_NODE_NAME "r"
#include "ops_testutil.h"

//  Random data: this file's own sequence, uniform in [-1, 1).
static uint64_t t_rng = 0x9E3779B97F4A7C15ull;

static double
t_rand (void)
{
    return (double) ((zt_xorshift (&t_rng) >> 11) % 2000000) / 1000000.0 - 1.0;
}

static zi_tensor_t *
t_random (int rank, const int64_t *shape, double lo, double hi)
{
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, rank, shape, NULL);
    for (int64_t i = 0; i < zi_tensor_count (x); i++) {
        ((float *) x->data)[i] = (float) (lo + (hi - lo) * (t_rand () + 1) / 2);
    }
    return x;
}

static bool
t_close (double got, double ref)
{
    if (isnan (ref)) {
        return isnan (got);
    }
    if (isinf (ref)) {
        return got == ref;
    }
    return fabs (got - ref) <= 1e-5 + 1e-4 * fabs (ref);
}

//  Reduce* -----------------------------------------------------------------------

static const char *const t_rops[] = {
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum",
    "ReduceLogSumExp",
};

//  Naive reduction of x over the axes in mask: one output element, the
//  values chosen by walking every input element and keeping those whose
//  kept coordinates equal opos.
static double
t_ref_reduce (const char *op, const float *x, int rank, const int64_t *shape,
              const bool *mask, const int64_t *opos)
{
    double sum = 0, prod = 1, mx = -INFINITY, mn = INFINITY, l1 = 0, sq = 0;
    int64_t n = 0, pos[8] = {0}, count = 1;
    for (int d = 0; d < rank; d++) {
        count *= shape[d];
    }
    for (int64_t i = 0; i < count; i++, zt_next (rank, shape, pos)) {
        bool match = true;
        for (int d = 0; d < rank; d++) {
            match &= mask[d] || pos[d] == opos[d];
        }
        if (!match) {
            continue;
        }
        double v = x[i];
        sum += v;
        prod *= v;
        mx = v > mx ? v : mx;
        mn = v < mn ? v : mn;
        l1 += fabs (v);
        sq += v * v;
        n++;
    }
    if (!strcmp (op, "ReduceSum")) {
        return sum;
    }
    if (!strcmp (op, "ReduceMean")) {
        return sum / (double) n;
    }
    if (!strcmp (op, "ReduceMax")) {
        return mx;
    }
    if (!strcmp (op, "ReduceMin")) {
        return mn;
    }
    if (!strcmp (op, "ReduceProd")) {
        return prod;
    }
    if (!strcmp (op, "ReduceL1")) {
        return l1;
    }
    if (!strcmp (op, "ReduceL2")) {
        return sqrt (sq);
    }
    if (!strcmp (op, "ReduceSumSquare")) {
        return sq;
    }
    if (!strcmp (op, "ReduceLogSum")) {
        return log (sum);
    }
    //  log-sum-exp, the plain way (inputs here are small)
    double e = 0;
    memset (pos, 0, sizeof pos);
    for (int64_t i = 0; i < count; i++, zt_next (rank, shape, pos)) {
        bool match = true;
        for (int d = 0; d < rank; d++) {
            match &= mask[d] || pos[d] == opos[d];
        }
        if (match) {
            e += exp (x[i]);
        }
    }
    return log (e);
}

//  Run op over every subset of the axes of x, with keepdims 0 and 1, axes
//  as an attribute or as an input, and compare each output element.
static void
t_check_reduce_all_axes (const char *op, zi_tensor_t *x)
{
    int rank = x->rank;
    for (int subset = 0; subset < (1 << rank); subset++) {
        for (int keep = 0; keep < 2; keep++) {
            for (int as_input = 0; as_input < 2; as_input++) {
                int64_t axes[8];
                int n = 0;
                bool mask[8];
                for (int d = 0; d < rank; d++) {
                    mask[d] = subset & (1 << d);
                    if (mask[d]) {
                        //  alternate negative and positive spellings
                        axes[n] = (n % 2) ? d - rank : d;
                        n++;
                    }
                }
                if (subset == 0) {
                    for (int d = 0; d < rank; d++) {
                        mask[d] = true;     //  no axes: reduce all
                    }
                }
                zt_node_t t;
                zt_node_init (&t, op, 0, 0);
                zt_int (&t, "keepdims", keep);
                zi_tensor_t *in[2] = {x, NULL}, *out[1];
                int n_in = 1;
                if (as_input) {
                    in[1] = zt_i64_vec (n, axes);
                    n_in = 2;
                }
                else if (n > 0) {
                    zt_ints (&t, "axes", n, axes);
                }
                int rc = zt_run_n (&t, n_in, in, 1, out);
                cr_assert_eq (rc, 0, "%s: %s", op, t.err);
                //  expected shape
                int64_t oshape[8];
                int orank = 0;
                for (int d = 0; d < rank; d++) {
                    if (!mask[d]) {
                        oshape[orank++] = x->ne[d];
                    }
                    else if (keep) {
                        oshape[orank++] = 1;
                    }
                }
                cr_assert_eq (out[0]->rank, orank, "%s subset %d keep %d", op,
                              subset, keep);
                for (int d = 0; d < orank; d++) {
                    cr_assert_eq (out[0]->ne[d], oshape[d]);
                }
                //  walk the kept coordinates
                int64_t kshape[8], kpos[8] = {0};
                for (int d = 0; d < rank; d++) {
                    kshape[d] = mask[d] ? 1 : x->ne[d];
                }
                int64_t nout = zi_tensor_count (out[0]);
                for (int64_t e = 0; e < nout; e++) {
                    double ref = t_ref_reduce (op, (const float *) x->data, rank,
                                               x->ne, mask, kpos);
                    double got = ((float *) out[0]->data)[e];
                    cr_assert (t_close (got, (float) ref), "%s subset %d keep %d "
                               "element %lld: %g vs %g", op, subset, keep,
                               (long long) e, got, ref);
                    zt_next (rank, kshape, kpos);
                }
                zi_tensor_destroy (&out[0]);
                zi_tensor_destroy (&in[1]);
            }
        }
    }
}

Test (ops_reduce, every_op_every_axis_subset_float32)
{
    //  positive inputs keep ReduceLogSum defined
    zi_tensor_t *x = t_random (4, (int64_t[]){2, 3, 4, 5}, 0.1, 1.5);
    for (size_t i = 0; i < sizeof t_rops / sizeof t_rops[0]; i++) {
        t_check_reduce_all_axes (t_rops[i], x);
    }
    zi_tensor_destroy (&x);
    //  signed inputs for the others, with size-1 dims mixed in
    x = t_random (4, (int64_t[]){3, 1, 5, 2}, -2, 2);
    for (size_t i = 0; i < sizeof t_rops / sizeof t_rops[0]; i++) {
        if (strcmp (t_rops[i], "ReduceLogSum") != 0) {
            t_check_reduce_all_axes (t_rops[i], x);
        }
    }
    zi_tensor_destroy (&x);
}

Test (ops_reduce, scalar_and_large_inner_rows)
{
    zi_tensor_t *x = t_random (0, NULL, -1, 1);
    t_check_reduce_all_axes ("ReduceSum", x);
    t_check_reduce_all_axes ("ReduceMax", x);
    zi_tensor_destroy (&x);
    x = t_random (2, (int64_t[]){7, 300}, -1, 1);
    t_check_reduce_all_axes ("ReduceMean", x);
    t_check_reduce_all_axes ("ReduceL2", x);
    zi_tensor_destroy (&x);
}

Test (ops_reduce, noop_with_empty_axes_and_empty_axes_input)
{
    zi_tensor_t *x = t_random (2, (int64_t[]){2, 3}, -1, 1);
    zi_tensor_t *empty = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){0}, NULL);
    zi_tensor_t *in[2] = {x, empty}, *out[1];
    zt_node_t t;
    zt_node_init (&t, "ReduceSum", 0, 0);
    zt_int (&t, "noop_with_empty_axes", 1);
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    cr_assert_eq (out[0]->rank, 2);
    cr_assert_eq (memcmp (out[0]->data, x->data, x->nbytes), 0);
    zi_tensor_destroy (&out[0]);
    //  without noop, empty axes reduce everything
    zt_node_init (&t, "ReduceSum", 0, 0);
    zt_int (&t, "keepdims", 0);
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    cr_assert_eq (out[0]->rank, 0);
    double s = 0;
    for (int i = 0; i < 6; i++) {
        s += ((float *) x->data)[i];
    }
    cr_assert (t_close (*(float *) out[0]->data, s));
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&empty);
    zi_tensor_destroy (&x);
}

Test (ops_reduce, empty_reductions_give_the_identity)
{
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 2, (int64_t[]){3, 0}, NULL);
    static const int64_t ax1[] = {1};
    const char *ops[] = {"ReduceSum", "ReduceProd", "ReduceMax", "ReduceMin",
                         "ReduceL2", "ReduceLogSumExp"};
    double ref[] = {0, 1, -INFINITY, INFINITY, 0, -INFINITY};
    for (int i = 0; i < 6; i++) {
        zt_node_t t;
        zt_node_init (&t, ops[i], 0, 0);
        zt_ints (&t, "axes", 1, ax1);
        zi_tensor_t *in[1] = {x}, *out[1];
        cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
        cr_assert_eq (out[0]->ne[0], 3);
        cr_assert_eq (out[0]->ne[1], 1);
        for (int e = 0; e < 3; e++) {
            cr_assert (t_close (((float *) out[0]->data)[e], ref[i]), "%s: %g",
                       ops[i], ((float *) out[0]->data)[e]);
        }
        zi_tensor_destroy (&out[0]);
    }
    //  reducing the other axis gives an empty output
    zt_node_t t;
    zt_node_init (&t, "ReduceSum", 0, 0);
    static const int64_t ax0[] = {0};
    zt_ints (&t, "axes", 1, ax0);
    zi_tensor_t *in[1] = {x}, *out[1];
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    cr_assert_eq (zi_tensor_count (out[0]), 0);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&x);
}

Test (ops_reduce, integer_reductions_are_exact)
{
    //  int64 beyond 2^53: a double accumulator would lose the low bits
    int64_t v[4] = {(1LL << 60) + 1, 3, (1LL << 60) + 5, -7};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_I64, 2, (int64_t[]){2, 2}, v);
    static const int64_t ax1[] = {1};
    zt_node_t t;
    zt_node_init (&t, "ReduceSum", 0, 0);
    zt_ints (&t, "axes", 1, ax1);
    zt_int (&t, "keepdims", 0);
    zi_tensor_t *in[1] = {x}, *out[1];
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    cr_assert_eq (out[0]->dtype, ZI_DT_I64);
    cr_assert_eq (((int64_t *) out[0]->data)[0], (1LL << 60) + 4);
    cr_assert_eq (((int64_t *) out[0]->data)[1], (1LL << 60) - 2);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&x);
    //  int32 max / min / mean / prod
    int32_t w[6] = {4, -9, 7, 2, 2, -3};
    x = zt_tensor_of (ZI_DT_I32, 2, (int64_t[]){2, 3}, w);
    in[0] = x;
    const char *ops[] = {"ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd",
                         "ReduceL1", "ReduceSumSquare"};
    int32_t ref[][2] = {{7, 2}, {-9, -3}, {0, 0}, {-252, -12}, {20, 7}, {146, 17}};
    for (int i = 0; i < 6; i++) {
        zt_node_init (&t, ops[i], 0, 0);
        zt_ints (&t, "axes", 1, ax1);
        cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
        cr_assert_eq (out[0]->dtype, ZI_DT_I32);
        cr_assert_eq (((int32_t *) out[0]->data)[0], ref[i][0], "%s", ops[i]);
        cr_assert_eq (((int32_t *) out[0]->data)[1], ref[i][1], "%s", ops[i]);
        zi_tensor_destroy (&out[0]);
    }
    zi_tensor_destroy (&x);
}

Test (ops_reduce, log_sum_exp_is_stable)
{
    float v[3] = {1000, 1000, 999};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){3}, v);
    zt_node_t t;
    zt_node_init (&t, "ReduceLogSumExp", 0, 0);
    zi_tensor_t *in[1] = {x}, *out[1];
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    double ref = 1000 + log (2 + exp (-1.0));
    cr_assert (t_close (*(float *) out[0]->data, ref), "%g",
               *(float *) out[0]->data);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&x);
}

Test (ops_reduce, bad_axes_and_unknown_axes)
{
    zi_tensor_t *x = t_random (2, (int64_t[]){2, 3}, -1, 1);
    zt_node_t t;
    zt_node_init (&t, "ReduceMean", 0, 0);
    static const int64_t bad[] = {2};
    zt_ints (&t, "axes", 1, bad);
    zi_tensor_t *in[2] = {x, NULL}, *out[1];
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), ZI_ERR_SHAPE);
    cr_assert_neq (strstr (t.err, "node 'r' (ReduceMean)"), NULL, "%s", t.err);
    //  an axes input whose value is unknown while planning
    zi_tensor_t unknown;
    zi_tensor_init_view (&unknown, ZI_DT_I64, 1, (int64_t[]){1}, NULL, 8);
    in[1] = &unknown;
    zt_node_init (&t, "ReduceSum", 0, 0);
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), ZI_OP_NEEDS_VALUE);
    //  wrong attribute type is caught by check
    zt_node_init (&t, "ReduceSum", 0, 0);
    zt_attr (&t, "keepdims", ZI_ATTR_FLOAT);
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), ZI_ERR_MALFORMED);
    zi_tensor_destroy (&x);
}

//  ArgMax / ArgMin ------------------------------------------------------------------------

Test (ops_reduce, argmax_argmin_every_axis_with_ties)
{
    //  values from a small set so ties are frequent
    int64_t shape[3] = {3, 4, 5};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 3, shape, NULL);
    for (int i = 0; i < 60; i++) {
        ((float *) x->data)[i] = (float) ((i * 7) % 4);
    }
    for (int op = 0; op < 2; op++) {
        for (int axis = -3; axis < 3; axis++) {
            for (int keep = 0; keep < 2; keep++) {
                for (int last = 0; last < 2; last++) {
                    zt_node_t t;
                    zt_node_init (&t, op ? "ArgMin" : "ArgMax", 0, 0);
                    zt_int (&t, "axis", axis);
                    zt_int (&t, "keepdims", keep);
                    zt_int (&t, "select_last_index", last);
                    zi_tensor_t *in[1] = {x}, *out[1];
                    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
                    int a = axis < 0 ? axis + 3 : axis;
                    cr_assert_eq (out[0]->dtype, ZI_DT_I64);
                    cr_assert_eq (out[0]->rank, keep ? 3 : 2);
                    int64_t kshape[3] = {3, 4, 5}, kpos[3] = {0};
                    kshape[a] = 1;
                    for (int64_t e = 0; e < zi_tensor_count (out[0]); e++) {
                        int64_t best = 0, p[3] = {kpos[0], kpos[1], kpos[2]};
                        float bv = 0;
                        for (int64_t k = 0; k < shape[a]; k++) {
                            p[a] = k;
                            float v = ((float *) x->data)[(p[0] * 4 + p[1]) * 5 + p[2]];
                            bool better = k == 0
                                          || (op ? (last ? v <= bv : v < bv)
                                                 : (last ? v >= bv : v > bv));
                            if (better) {
                                bv = v;
                                best = k;
                            }
                        }
                        cr_assert_eq (((int64_t *) out[0]->data)[e], best,
                                      "op %d axis %d last %d element %lld", op,
                                      axis, last, (long long) e);
                        zt_next (3, kshape, kpos);
                    }
                    zi_tensor_destroy (&out[0]);
                }
            }
        }
    }
    zi_tensor_destroy (&x);
}

Test (ops_reduce, argmax_int_dtypes_and_errors)
{
    int64_t v[4] = {(1LL << 60) + 1, (1LL << 60) + 2, 5, -1};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){4}, v);
    zt_node_t t;
    zt_node_init (&t, "ArgMax", 0, 0);
    zi_tensor_t *in[1] = {x}, *out[1];
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    cr_assert_eq (*(int64_t *) out[0]->data, 1);    //  exact int64 compare
    zi_tensor_destroy (&out[0]);
    zt_node_init (&t, "ArgMin", 0, 0);
    zt_int (&t, "axis", 1);
    cr_assert_lt (zt_run_n (&t, 1, in, 1, out), 0);
    zi_tensor_destroy (&x);
    //  uint8
    uint8_t u[3] = {200, 7, 255};
    x = zt_tensor_of (ZI_DT_U8, 1, (int64_t[]){3}, u);
    in[0] = x;
    zt_node_init (&t, "ArgMax", 0, 0);
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    cr_assert_eq (*(int64_t *) out[0]->data, 2);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&x);
    //  an empty axis has no arg
    x = zt_tensor_of (ZI_DT_F32, 2, (int64_t[]){2, 0}, NULL);
    in[0] = x;
    zt_node_init (&t, "ArgMax", 0, 0);
    zt_int (&t, "axis", 1);
    cr_assert_lt (zt_run_n (&t, 1, in, 1, out), 0);
    zi_tensor_destroy (&x);
}

//  TopK -------------------------------------------------------------------------------------

typedef struct {
    float v;
    int64_t i;
} t_pair_t;

static bool t_largest;

static int
t_pair_cmp (const void *pa, const void *pb)
{
    const t_pair_t *a = pa, *b = pb;
    if (a->v != b->v) {
        return (t_largest ? a->v > b->v : a->v < b->v) ? -1 : 1;
    }
    return a->i < b->i ? -1 : 1;
}

Test (ops_reduce, topk_matches_sorted_reference_with_ties)
{
    int64_t shape[3] = {2, 6, 3};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 3, shape, NULL);
    for (int i = 0; i < 36; i++) {
        ((float *) x->data)[i] = (float) ((i * 5) % 7);     //  ties
    }
    for (int largest = 0; largest < 2; largest++) {
        for (int axis = -3; axis < 3; axis++) {
            int a = axis < 0 ? axis + 3 : axis;
            for (int64_t k = 0; k <= shape[a]; k++) {
                zt_node_t t;
                zt_node_init (&t, "TopK", 0, 0);
                zt_int (&t, "axis", axis);
                zt_int (&t, "largest", largest);
                zi_tensor_t *in[2] = {x, zt_i64_vec (1, &k)}, *out[2];
                cr_assert_eq (zt_run_n (&t, 2, in, 2, out), 0, "%s", t.err);
                int64_t os[3] = {2, 6, 3};
                os[a] = k;
                for (int d = 0; d < 3; d++) {
                    cr_assert_eq (out[0]->ne[d], os[d]);
                    cr_assert_eq (out[1]->ne[d], os[d]);
                }
                cr_assert_eq (out[1]->dtype, ZI_DT_I64);
                //  reference: sort each line along the axis
                int64_t ls[3] = {2, 6, 3}, lp[3] = {0};
                ls[a] = 1;
                t_largest = largest;
                do {
                    t_pair_t pr[6];
                    for (int64_t j = 0; j < shape[a]; j++) {
                        int64_t p[3] = {lp[0], lp[1], lp[2]};
                        p[a] = j;
                        pr[j].v = ((float *) x->data)[(p[0] * 6 + p[1]) * 3 + p[2]];
                        pr[j].i = j;
                    }
                    qsort (pr, (size_t) shape[a], sizeof pr[0], t_pair_cmp);
                    for (int64_t j = 0; j < k; j++) {
                        int64_t p[3] = {lp[0], lp[1], lp[2]};
                        p[a] = j;
                        int64_t o = (p[0] * os[1] + p[1]) * os[2] + p[2];
                        cr_assert_eq (((float *) out[0]->data)[o], pr[j].v);
                        cr_assert_eq (((int64_t *) out[1]->data)[o], pr[j].i,
                                      "largest %d axis %d k %lld", largest, axis,
                                      (long long) k);
                    }
                } while (zt_next (3, ls, lp));
                zi_tensor_destroy (&out[0]);
                zi_tensor_destroy (&out[1]);
                zi_tensor_destroy (&in[1]);
            }
        }
    }
    zi_tensor_destroy (&x);
}

Test (ops_reduce, topk_k_checks_and_opset1_attribute)
{
    zi_tensor_t *x = zt_tensor_of (ZI_DT_I32, 1, (int64_t[]){4}, (int32_t[]){3, 9, -1, 9});
    zt_node_t t;
    zt_node_init (&t, "TopK", 0, 0);
    int64_t k = 5;
    zi_tensor_t *in[2] = {x, zt_i64_vec (1, &k)}, *out[2];
    cr_assert_eq (zt_run_n (&t, 2, in, 2, out), ZI_ERR_SHAPE);
    ((int64_t *) in[1]->data)[0] = -1;
    cr_assert_eq (zt_run_n (&t, 2, in, 2, out), ZI_ERR_SHAPE);
    zi_tensor_t unknown;
    zi_tensor_init_view (&unknown, ZI_DT_I64, 1, (int64_t[]){1}, NULL, 8);
    zi_tensor_t *uin[2] = {x, &unknown};
    cr_assert_eq (zt_run_n (&t, 2, uin, 2, out), ZI_OP_NEEDS_VALUE);
    zi_tensor_destroy (&in[1]);
    //  TopK-1: k attribute; int32 values, ties by lower index
    zt_node_init (&t, "TopK", 0, 0);
    zt_int (&t, "k", 3);
    cr_assert_eq (zt_run_n (&t, 1, in, 2, out), 0, "%s", t.err);
    int32_t rv[3] = {9, 9, 3};
    int64_t ri[3] = {1, 3, 0};
    cr_assert_eq (memcmp (out[0]->data, rv, sizeof rv), 0);
    cr_assert_eq (memcmp (out[1]->data, ri, sizeof ri), 0);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&out[1]);
    zi_tensor_destroy (&x);
}

//  CumSum -------------------------------------------------------------------------------------

Test (ops_reduce, cumsum_exclusive_reverse_every_axis)
{
    int64_t shape[3] = {2, 3, 4};
    zi_tensor_t *x = t_random (3, shape, -1, 1);
    for (int axis = -3; axis < 3; axis++) {
        for (int excl = 0; excl < 2; excl++) {
            for (int rev = 0; rev < 2; rev++) {
                zt_node_t t;
                zt_node_init (&t, "CumSum", 0, 0);
                zt_int (&t, "exclusive", excl);
                zt_int (&t, "reverse", rev);
                int32_t ax = axis;
                zi_tensor_t *in[2] = {x, zt_tensor_of (ZI_DT_I32, 0, NULL, &ax)}, *out[1];
                cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
                int a = axis < 0 ? axis + 3 : axis;
                int64_t pos[3] = {0};
                for (int64_t e = 0; e < 24; e++, zt_next (3, shape, pos)) {
                    double s = 0;
                    for (int64_t j = 0; j < shape[a]; j++) {
                        bool take = rev ? (excl ? j > pos[a] : j >= pos[a])
                                        : (excl ? j < pos[a] : j <= pos[a]);
                        if (take) {
                            int64_t p[3] = {pos[0], pos[1], pos[2]};
                            p[a] = j;
                            s += ((float *) x->data)[(p[0] * 3 + p[1]) * 4 + p[2]];
                        }
                    }
                    cr_assert (t_close (((float *) out[0]->data)[e], s),
                               "axis %d excl %d rev %d e %lld", axis, excl, rev,
                               (long long) e);
                }
                zi_tensor_destroy (&out[0]);
                zi_tensor_destroy (&in[1]);
            }
        }
    }
    zi_tensor_destroy (&x);
    //  int64 data; a bad axis; an unsupported dtype
    zi_tensor_t *xi = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){3}, (int64_t[]){1, 2, 3});
    int64_t ax = 0;
    zi_tensor_t *in[2] = {xi, zt_tensor_of (ZI_DT_I64, 0, NULL, &ax)}, *out[1];
    zt_node_t t;
    zt_node_init (&t, "CumSum", 0, 0);
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    int64_t ref[3] = {1, 3, 6};
    cr_assert_eq (memcmp (out[0]->data, ref, sizeof ref), 0);
    zi_tensor_destroy (&out[0]);
    *(int64_t *) in[1]->data = 1;
    cr_assert_lt (zt_run_n (&t, 2, in, 1, out), 0);
    zi_tensor_destroy (&in[1]);
    zi_tensor_destroy (&xi);
    zi_tensor_t *xu = zt_tensor_of (ZI_DT_U8, 1, (int64_t[]){2}, (uint8_t[]){1, 2});
    in[0] = xu;
    in[1] = zt_tensor_of (ZI_DT_I64, 0, NULL, &ax);
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), ZI_ERR_UNSUPPORTED);
    zi_tensor_destroy (&in[1]);
    zi_tensor_destroy (&xu);
}
