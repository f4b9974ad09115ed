/*  test_ops_shape.c - the data-movement kernels (lib/zi_ops_shape*.c).

    Each test builds a node by hand, runs it the way the executor does
    (check -> infer -> allocate outputs -> run) and compares the result with
    a naive reference written here with plain index arithmetic.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zi_ops.h"

#define ZT_NODE_NAME "n"
#include "ops_testutil.h"

//  Tensors -----------------------------------------------------------------------

//  Float32 tensor filled with 0, 1, 2, ... (distinct values show any mix-up).
static zi_tensor_t *
t_iota (int rank, const int64_t *shape)
{
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, rank, shape, NULL);
    for (int64_t i = 0; i < zi_tensor_count (x); i++) {
        ((float *) x->data)[i] = (float) i;
    }
    return x;
}

static zi_tensor_t *
t_scalar_f (float v)
{
    return zt_tensor_of (ZI_DT_F32, 0, NULL, &v);
}

static void
t_expect_f32 (const zi_tensor_t *y, const float *ref, int64_t n, float atol)
{
    cr_assert_eq (y->dtype, ZI_DT_F32);
    cr_assert_eq (zi_tensor_count (y), n);
    const float *p = (const float *) y->data;
    for (int64_t i = 0; i < n; i++) {
        float tol = atol + 1e-4f * fabsf (ref[i]);
        cr_assert (fabsf (p[i] - ref[i]) <= tol, "element %lld: %g, expected %g",
                   (long long) i, p[i], ref[i]);
    }
}

//  Row-major flat index of pos in shape.
static int64_t
t_flat (int rank, const int64_t *shape, const int64_t *pos)
{
    int64_t f = 0;
    for (int d = 0; d < rank; d++) {
        f = f * shape[d] + pos[d];
    }
    return f;
}

//  Random data: this file's own sequence, uniform in [-1, 1).
static uint64_t t_rng = 88172645463325252ull;

static float
t_rand (void)
{
    return (float) ((zt_xorshift (&t_rng) >> 11) % 2000000) / 1000000.0f - 1.0f;
}

//  Reshape, Flatten, Squeeze, Unsqueeze, Identity --------------------------------

Test (ops_shape, reshape_copies_zero_and_infers_minus_one)
{
    zt_node_t t;
    zt_node_init (&t, "Reshape", 0, 0);
    zi_tensor_t *in[2] = {t_iota (3, (int64_t[]){2, 3, 4}),
                          zt_i64_vec (3, (int64_t[]){4, 0, -1})};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 3, (int64_t[]){4, 3, 2});
    cr_assert_eq (memcmp (out[0]->data, in[0]->data, in[0]->nbytes), 0);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&in[0]);
    zi_tensor_destroy (&in[1]);
}

Test (ops_shape, reshape_allowzero_keeps_zero_dims)
{
    zt_node_t t;
    zt_node_init (&t, "Reshape", 0, 0);
    zt_int (&t, "allowzero", 1);
    zi_tensor_t *in[2] = {zt_tensor_of (ZI_DT_F32, 2, (int64_t[]){0, 4}, NULL),
                          zt_i64_vec (3, (int64_t[]){2, 0, 7})};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 3, (int64_t[]){2, 0, 7});
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&in[0]);
    zi_tensor_destroy (&in[1]);
}

Test (ops_shape, reshape_rejects_bad_shapes)
{
    static const int64_t bad[][3] = {
        {-1, -1, 2},    //  two -1
        {5, 5, 1},      //  wrong count
        {2, 3, -2},     //  negative
    };
    for (int i = 0; i < 3; i++) {
        zt_node_t t;
        zt_node_init (&t, "Reshape", 0, 0);
        zi_tensor_t *in[2] = {t_iota (3, (int64_t[]){2, 3, 4}), zt_i64_vec (3, bad[i])};
        zi_tensor_t *out[1];
        int rc = zt_run_n (&t, 2, in, 1, out);
        cr_assert_lt (rc, 0, "case %d should fail", i);
        cr_assert_neq (strstr (t.err, "node 'n' (Reshape)"), NULL, "%s", t.err);
        zi_tensor_destroy (&in[0]);
        zi_tensor_destroy (&in[1]);
    }
    //  0 (copy) past the input's rank, and -1 next to an allowzero 0
    zt_node_t t;
    zt_node_init (&t, "Reshape", 0, 0);
    zi_tensor_t *in[2] = {t_iota (1, (int64_t[]){6}), zt_i64_vec (2, (int64_t[]){6, 0})};
    zi_tensor_t *out[1];
    cr_assert_lt (zt_run_n (&t, 2, in, 1, out), 0);
    zi_tensor_destroy (&in[1]);
    zt_node_init (&t, "Reshape", 0, 0);
    zt_int (&t, "allowzero", 1);
    in[1] = zt_i64_vec (2, (int64_t[]){0, -1});
    cr_assert_lt (zt_run_n (&t, 2, in, 1, out), 0);
    zi_tensor_destroy (&in[0]);
    zi_tensor_destroy (&in[1]);
}

Test (ops_shape, reshape_needs_the_shape_value)
{
    zt_node_t t;
    zt_node_init (&t, "Reshape", 0, 0);
    zi_tensor_t *x = t_iota (2, (int64_t[]){2, 3});
    zi_tensor_t shape;
    //  A known-shape, unknown-value input, as the static planner has.
    cr_assert_eq (zi_tensor_init_view (&shape, ZI_DT_I64, 1, (int64_t[]){2},
                                       NULL, 16), 0);
    zi_tensor_t *in[2] = {x, &shape};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), ZI_OP_NEEDS_VALUE);
    zi_tensor_destroy (&x);
}

Test (ops_shape, reshape1_takes_the_shape_attribute)
{
    zt_node_t t;
    zt_node_init (&t, "Reshape", 0, 0);
    static const int64_t shape[] = {3, -1};
    zt_ints (&t, "shape", 2, shape);
    zi_tensor_t *in[1] = {t_iota (2, (int64_t[]){2, 3})};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 2, (int64_t[]){3, 2});
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&in[0]);
}

Test (ops_shape, flatten_every_axis)
{
    int64_t shape[4] = {2, 3, 4, 5};
    for (int axis = -4; axis <= 4; axis++) {
        zt_node_t t;
        zt_node_init (&t, "Flatten", 0, 0);
        zt_int (&t, "axis", axis);
        zi_tensor_t *in[1] = {t_iota (4, shape)};
        zi_tensor_t *out[1];
        cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
        int a = axis < 0 ? axis + 4 : axis;
        int64_t o = 1;
        for (int d = 0; d < a; d++) {
            o *= shape[d];
        }
        zt_expect_shape (out[0], 2, (int64_t[]){o, 120 / o});
        cr_assert_eq (memcmp (out[0]->data, in[0]->data, in[0]->nbytes), 0);
        zi_tensor_destroy (&out[0]);
        zi_tensor_destroy (&in[0]);
    }
    zt_node_t t;
    zt_node_init (&t, "Flatten", 0, 0);
    zt_int (&t, "axis", 5);
    zi_tensor_t *in[1] = {t_iota (4, shape)};
    zi_tensor_t *out[1];
    cr_assert_lt (zt_run_n (&t, 1, in, 1, out), 0);
    zi_tensor_destroy (&in[0]);
}

Test (ops_shape, squeeze_attribute_input_and_default)
{
    //  opset 13: axes as an input, negative
    zt_node_t t;
    zt_node_init (&t, "Squeeze", 0, 0);
    zi_tensor_t *in[2] = {t_iota (4, (int64_t[]){1, 3, 1, 2}),
                          zt_i64_vec (1, (int64_t[]){-2})};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 3, (int64_t[]){1, 3, 2});
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&in[1]);
    //  opset 11: axes attribute
    zt_node_init (&t, "Squeeze", 0, 0);
    static const int64_t ax0[] = {0};
    zt_ints (&t, "axes", 1, ax0);
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 3, (int64_t[]){3, 1, 2});
    zi_tensor_destroy (&out[0]);
    //  no axes: every size-1 dim
    zt_node_init (&t, "Squeeze", 0, 0);
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 2, (int64_t[]){3, 2});
    cr_assert_eq (memcmp (out[0]->data, in[0]->data, in[0]->nbytes), 0);
    zi_tensor_destroy (&out[0]);
    //  squeezing a dim that is not 1 is an error
    zt_node_init (&t, "Squeeze", 0, 0);
    static const int64_t ax1[] = {1};
    zt_ints (&t, "axes", 1, ax1);
    cr_assert_lt (zt_run_n (&t, 1, in, 1, out), 0);
    cr_assert_neq (strstr (t.err, "squeeze"), NULL, "%s", t.err);
    zi_tensor_destroy (&in[0]);
}

Test (ops_shape, unsqueeze_axes_in_output_rank)
{
    zt_node_t t;
    zt_node_init (&t, "Unsqueeze", 0, 0);
    zi_tensor_t *in[2] = {t_iota (2, (int64_t[]){3, 4}),
                          zt_i64_vec (3, (int64_t[]){-1, 0, 2})};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 5, (int64_t[]){1, 3, 1, 4, 1});
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&in[1]);
    //  opset < 13 attribute; duplicate axes are an error
    zt_node_init (&t, "Unsqueeze", 0, 0);
    static const int64_t dup[] = {0, 0};
    zt_ints (&t, "axes", 2, dup);
    cr_assert_lt (zt_run_n (&t, 1, in, 1, out), 0);
    //  scalar -> (1,)
    zi_tensor_t *s[2] = {t_scalar_f (7), zt_i64_vec (1, (int64_t[]){0})};
    zt_node_init (&t, "Unsqueeze", 0, 0);
    cr_assert_eq (zt_run_n (&t, 2, s, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 1, (int64_t[]){1});
    cr_assert_eq (((float *) out[0]->data)[0], 7.0f);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&s[0]);
    zi_tensor_destroy (&s[1]);
    zi_tensor_destroy (&in[0]);
}

Test (ops_shape, identity_and_dropout_copy)
{
    zt_node_t t;
    zt_node_init (&t, "Identity", 0, 0);
    zi_tensor_t *x = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){3}, (int64_t[]){5, -6, 7});
    zi_tensor_t *in[3] = {x, NULL, NULL};
    zi_tensor_t *out[2];
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    cr_assert_eq (memcmp (out[0]->data, x->data, 24), 0);
    zi_tensor_destroy (&out[0]);

    zt_node_init (&t, "Dropout", 0, 0);
    zt_int (&t, "__opset", 13);
    cr_assert_eq (zt_run_n (&t, 1, in, 2, out), 0, "%s", t.err);
    cr_assert_eq (memcmp (out[0]->data, x->data, 24), 0);
    cr_assert_eq (out[1]->dtype, ZI_DT_BOOL);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq (((uint8_t *) out[1]->data)[i], 1);
    }
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&out[1]);

    //  training mode with a non-zero ratio is refused, with ratio 0 copied
    uint8_t yes = 1;
    zi_tensor_t *ratio = t_scalar_f (0.5f);
    zi_tensor_t *train = zt_tensor_of (ZI_DT_BOOL, 0, NULL, &yes);
    zi_tensor_t *fin[3] = {t_iota (1, (int64_t[]){4}), ratio, train};
    zt_node_init (&t, "Dropout", 0, 0);
    cr_assert_eq (zt_run_n (&t, 3, fin, 1, out), ZI_ERR_UNSUPPORTED);
    *(float *) ratio->data = 0;
    cr_assert_eq (zt_run_n (&t, 3, fin, 1, out), 0, "%s", t.err);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&fin[0]);
    zi_tensor_destroy (&ratio);
    zi_tensor_destroy (&train);
    zi_tensor_destroy (&x);
}

//  Transpose -------------------------------------------------------------------------

//  Naive transpose of any element size: y[p] = x[p permuted back].
static void
t_ref_transpose (uint8_t *y, const uint8_t *x, size_t esz, int rank,
                 const int64_t *shape, const int *perm)
{
    int64_t yshape[8], pos[8] = {0}, xpos[8];
    for (int d = 0; d < rank; d++) {
        yshape[d] = shape[perm[d]];
    }
    int64_t n = 1;
    for (int d = 0; d < rank; d++) {
        n *= shape[d];
    }
    for (int64_t i = 0; i < n; i++) {
        for (int d = 0; d < rank; d++) {
            xpos[perm[d]] = pos[d];
        }
        memcpy (y + i * esz, x + t_flat (rank, shape, xpos) * esz, esz);
        zt_next (rank, yshape, pos);
    }
}

static void
t_check_transpose (zi_dtype_t dt, int rank, const int64_t *shape,
                   const int *perm)
{
    zt_node_t t;
    zt_node_init (&t, "Transpose", 0, 0);
    int64_t p64[8];
    for (int d = 0; d < rank; d++) {
        p64[d] = perm[d];
    }
    zt_ints (&t, "perm", rank, p64);
    zi_tensor_t *x = zt_tensor_of (dt, rank, shape, NULL);
    for (size_t i = 0; i < x->nbytes; i++) {
        ((uint8_t *) x->data)[i] = (uint8_t) (i * 7 + i / 3);
    }
    zi_tensor_t *in[1] = {x}, *out[1];
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    uint8_t *ref = (uint8_t *) malloc (x->nbytes + 1);
    t_ref_transpose (ref, (const uint8_t *) x->data, zi_dtype_size (dt), rank,
                     shape, perm);
    cr_assert_eq (memcmp (out[0]->data, ref, x->nbytes), 0, "dtype %s rank %d",
                  zi_dtype_name (dt), rank);
    free (ref);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&x);
}

Test (ops_shape, transpose_matches_reference_for_all_perms_and_dtypes)
{
    //  every permutation of a 4-D tensor, for 1, 2, 4 and 8 byte elements
    int64_t shape[4] = {2, 3, 4, 5};
    zi_dtype_t dts[] = {ZI_DT_F32, ZI_DT_I64, ZI_DT_U8, ZI_DT_F16, ZI_DT_BOOL};
    int perm[4];
    for (int a = 0; a < 4; a++) {
        for (int b = 0; b < 4; b++) {
            for (int c = 0; c < 4; c++) {
                int d = 6 - a - b - c;
                if (a == b || a == c || b == c || d < 0 || d > 3 || d == a
                    || d == b || d == c) {
                    continue;
                }
                perm[0] = a;
                perm[1] = b;
                perm[2] = c;
                perm[3] = d;
                for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
                    t_check_transpose (dts[k], 4, shape, perm);
                }
            }
        }
    }
}

Test (ops_shape, transpose_large_2d_and_batched_tiles)
{
    //  odd sizes cross the 32x32 tiles' edges
    t_check_transpose (ZI_DT_F32, 2, (int64_t[]){67, 45}, (int[]){1, 0});
    t_check_transpose (ZI_DT_I64, 2, (int64_t[]){33, 100}, (int[]){1, 0});
    t_check_transpose (ZI_DT_U8, 3, (int64_t[]){3, 40, 50}, (int[]){0, 2, 1});
    t_check_transpose (ZI_DT_F32, 4, (int64_t[]){2, 12, 9, 16},
                       (int[]){0, 2, 1, 3});     //  keeps the innermost dim
    t_check_transpose (ZI_DT_F32, 3, (int64_t[]){10, 1, 9}, (int[]){2, 1, 0});
}

Test (ops_shape, transpose_default_reverses_and_checks_perm)
{
    zt_node_t t;
    zt_node_init (&t, "Transpose", 0, 0);
    zi_tensor_t *in[1] = {t_iota (3, (int64_t[]){2, 3, 4})}, *out[1];
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 3, (int64_t[]){4, 3, 2});
    //  y[k][j][i] = x[i][j][k]
    cr_assert_eq (((float *) out[0]->data)[1 * 6 + 2 * 2 + 1], 1 * 12 + 2 * 4 + 1);
    zi_tensor_destroy (&out[0]);
    static const int64_t bad[] = {0, 0, 1};
    zt_node_init (&t, "Transpose", 0, 0);
    zt_ints (&t, "perm", 3, bad);
    cr_assert_lt (zt_run_n (&t, 1, in, 1, out), 0);
    static const int64_t short_perm[] = {1, 0};
    zt_node_init (&t, "Transpose", 0, 0);
    zt_ints (&t, "perm", 2, short_perm);
    cr_assert_lt (zt_run_n (&t, 1, in, 1, out), 0);
    zi_tensor_destroy (&in[0]);
}

//  Concat and Split ---------------------------------------------------------------

Test (ops_shape, concat_along_each_axis)
{
    for (int axis = -3; axis < 3; axis++) {
        int a = axis < 0 ? axis + 3 : axis;
        int64_t s0[3] = {2, 3, 4}, s1[3] = {2, 3, 4}, s2[3] = {2, 3, 4};
        s1[a] = 1;
        s2[a] = 0;      //  an empty input
        zt_node_t t;
        zt_node_init (&t, "Concat", 0, 0);
        zt_int (&t, "axis", axis);
        zi_tensor_t *in[3] = {t_iota (3, s0), t_iota (3, s1), t_iota (3, s2)};
        for (int64_t i = 0; i < zi_tensor_count (in[1]); i++) {
            ((float *) in[1]->data)[i] += 1000;
        }
        zi_tensor_t *out[1];
        cr_assert_eq (zt_run_n (&t, 3, in, 1, out), 0, "%s", t.err);
        int64_t ys[3] = {2, 3, 4};
        ys[a] += 1;
        zt_expect_shape (out[0], 3, ys);
        int64_t pos[3] = {0};
        const float *y = (const float *) out[0]->data;
        int64_t n = zi_tensor_count (out[0]);
        for (int64_t i = 0; i < n; i++) {
            float ref;
            if (pos[a] < s0[a]) {
                ref = ((float *) in[0]->data)[t_flat (3, s0, pos)];
            }
            else {
                int64_t p1[3] = {pos[0], pos[1], pos[2]};
                p1[a] -= s0[a];
                ref = ((float *) in[1]->data)[t_flat (3, s1, p1)];
            }
            cr_assert_eq (y[i], ref, "axis %d element %lld", axis, (long long) i);
            zt_next (3, ys, pos);
        }
        zi_tensor_destroy (&out[0]);
        for (int i = 0; i < 3; i++) {
            zi_tensor_destroy (&in[i]);
        }
    }
}

Test (ops_shape, concat_rejects_mismatches)
{
    zt_node_t t;
    zt_node_init (&t, "Concat", 0, 0);
    zt_int (&t, "axis", 0);
    zi_tensor_t *in[2] = {t_iota (2, (int64_t[]){2, 3}), t_iota (2, (int64_t[]){2, 4})};
    zi_tensor_t *out[1];
    cr_assert_lt (zt_run_n (&t, 2, in, 1, out), 0);
    zt_node_init (&t, "Concat", 0, 0);      //  axis missing
    cr_assert_lt (zt_run_n (&t, 2, in, 1, out), 0);
    zt_node_init (&t, "Concat", 0, 0);
    zt_int (&t, "axis", 2);
    cr_assert_lt (zt_run_n (&t, 2, in, 1, out), 0);
    zi_tensor_destroy (&in[0]);
    zi_tensor_destroy (&in[1]);
}

static void
t_check_split (const zi_tensor_t *x, int axis, int n, zi_tensor_t **out,
               const int64_t *sizes)
{
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        int64_t shape[8];
        memcpy (shape, x->ne, sizeof shape);
        shape[axis] = sizes[i];
        zt_expect_shape (out[i], x->rank, shape);
        int64_t pos[8] = {0};
        for (int64_t e = 0; e < zi_tensor_count (out[i]); e++) {
            int64_t xp[8];
            memcpy (xp, pos, sizeof xp);
            xp[axis] += at;
            cr_assert_eq (((float *) out[i]->data)[e],
                          ((float *) x->data)[t_flat (x->rank, x->ne, xp)]);
            zt_next (x->rank, shape, pos);
        }
        at += sizes[i];
    }
}

Test (ops_shape, split_equal_input_attribute_and_num_outputs)
{
    zi_tensor_t *x = t_iota (2, (int64_t[]){6, 4});
    zi_tensor_t *out[4];
    zt_node_t t;
    //  equal parts
    zt_node_init (&t, "Split", 0, 0);
    zi_tensor_t *in[2] = {x, NULL};
    cr_assert_eq (zt_run_n (&t, 1, in, 3, out), 0, "%s", t.err);
    t_check_split (x, 0, 3, out, (int64_t[]){2, 2, 2});
    for (int i = 0; i < 3; i++) {
        zi_tensor_destroy (&out[i]);
    }
    //  split as an input (opset 13), axis -1
    zt_node_init (&t, "Split", 0, 0);
    zt_int (&t, "axis", -1);
    in[1] = zt_i64_vec (2, (int64_t[]){1, 3});
    cr_assert_eq (zt_run_n (&t, 2, in, 2, out), 0, "%s", t.err);
    t_check_split (x, 1, 2, out, (int64_t[]){1, 3});
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&out[1]);
    zi_tensor_destroy (&in[1]);
    //  split attribute (opset < 13), with a zero-size part
    zt_node_init (&t, "Split", 0, 0);
    static const int64_t sp[] = {5, 0, 1};
    zt_ints (&t, "split", 3, sp);
    cr_assert_eq (zt_run_n (&t, 1, in, 3, out), 0, "%s", t.err);
    t_check_split (x, 0, 3, out, sp);
    for (int i = 0; i < 3; i++) {
        zi_tensor_destroy (&out[i]);
    }
    //  num_outputs (opset 18): 6 = 2 + 2 + 2, and 6 over 4 = 2, 2, 2, 0
    zt_node_init (&t, "Split", 0, 0);
    zt_int (&t, "num_outputs", 4);
    cr_assert_eq (zt_run_n (&t, 1, in, 4, out), 0, "%s", t.err);
    t_check_split (x, 0, 4, out, (int64_t[]){2, 2, 2, 0});
    for (int i = 0; i < 4; i++) {
        zi_tensor_destroy (&out[i]);
    }
    //  errors: uneven equal split, wrong sum, negative part
    zt_node_init (&t, "Split", 0, 0);
    cr_assert_lt (zt_run_n (&t, 1, in, 4, out), 0);
    zt_node_init (&t, "Split", 0, 0);
    in[1] = zt_i64_vec (2, (int64_t[]){2, 3});
    cr_assert_lt (zt_run_n (&t, 2, in, 2, out), 0);
    zi_tensor_destroy (&in[1]);
    zt_node_init (&t, "Split", 0, 0);
    in[1] = zt_i64_vec (2, (int64_t[]){7, -1});
    cr_assert_lt (zt_run_n (&t, 2, in, 2, out), 0);
    zi_tensor_destroy (&in[1]);
    zi_tensor_destroy (&x);
}

//  Slice -----------------------------------------------------------------------------

//  The spec's slice, one axis: the list of indices taken.
static int64_t
t_ref_slice_axis (int64_t dim, int64_t s, int64_t e, int64_t step, int64_t *idx)
{
    if (s < 0) {
        s += dim;
    }
    if (e < 0) {
        e += dim;
    }
    int64_t n = 0;
    if (step > 0) {
        s = s < 0 ? 0 : s > dim ? dim : s;
        e = e < 0 ? 0 : e > dim ? dim : e;
        for (int64_t i = s; i < e; i += step) {
            idx[n++] = i;
        }
    }
    else {
        s = s < 0 ? 0 : s > dim - 1 ? dim - 1 : s;
        e = e < -1 ? -1 : e > dim - 1 ? dim - 1 : e;
        for (int64_t i = s; i > e; i += step) {
            idx[n++] = i;
        }
    }
    return n;
}

Test (ops_shape, slice_matches_reference_on_many_cases)
{
    static const struct {
        int64_t s, e, step;
    } cases[] = {
        {0, 5, 1}, {1, 4, 2}, {-3, -1, 1}, {-100, 100, 1}, {100, 200, 1},
        {4, 0, -1}, {-1, -100, -2}, {3, 3, 1}, {0, INT64_MAX, 3},
        {INT64_MAX, INT64_MIN, -1}, {-1, INT64_MIN, INT64_MIN}, {2, 1, 1},
        {0, -1, 4}, {5, -7, -3},
    };
    int64_t shape[2] = {4, 6};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        //  slice axis 1 with the case, axis 0 with 1:4:2 (or -1 reversed)
        zt_node_t t;
        zt_node_init (&t, "Slice", 0, 0);
        zi_tensor_t *in[5] = {
            t_iota (2, shape), zt_i64_vec (2, (int64_t[]){cases[c].s, -1}),
            zt_i64_vec (2, (int64_t[]){cases[c].e, -5}), zt_i64_vec (2, (int64_t[]){-1, 0}),
            zt_i64_vec (2, (int64_t[]){cases[c].step, -1}),
        };
        zi_tensor_t *out[1];
        cr_assert_eq (zt_run_n (&t, 5, in, 1, out), 0, "case %zu: %s", c, t.err);
        int64_t i0[8], i1[16];
        int64_t n0 = t_ref_slice_axis (4, -1, -5, -1, i0);
        int64_t n1 = t_ref_slice_axis (6, cases[c].s, cases[c].e, cases[c].step, i1);
        zt_expect_shape (out[0], 2, (int64_t[]){n0, n1});
        for (int64_t a = 0; a < n0; a++) {
            for (int64_t b = 0; b < n1; b++) {
                cr_assert_eq (((float *) out[0]->data)[a * n1 + b],
                              (float) (i0[a] * 6 + i1[b]), "case %zu", c);
            }
        }
        zi_tensor_destroy (&out[0]);
        for (int i = 0; i < 5; i++) {
            zi_tensor_destroy (&in[i]);
        }
    }
}

Test (ops_shape, slice_defaults_int32_and_opset1_attributes)
{
    //  axes and steps omitted, int32 starts/ends
    zt_node_t t;
    zt_node_init (&t, "Slice", 0, 0);
    int32_t st[2] = {1, 2}, en[2] = {3, 100};
    zi_tensor_t *in[3] = {t_iota (3, (int64_t[]){3, 4, 5}),
                          zt_tensor_of (ZI_DT_I32, 1, (int64_t[]){2}, st),
                          zt_tensor_of (ZI_DT_I32, 1, (int64_t[]){2}, en)};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 3, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 3, (int64_t[]){2, 2, 5});
    cr_assert_eq (((float *) out[0]->data)[0], 1 * 20 + 2 * 5);
    zi_tensor_destroy (&out[0]);
    //  opset 1: attributes
    zt_node_init (&t, "Slice", 0, 0);
    static const int64_t s1[] = {1}, e1[] = {-1}, a1[] = {2};
    zt_ints (&t, "starts", 1, s1);
    zt_ints (&t, "ends", 1, e1);
    zt_ints (&t, "axes", 1, a1);
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 3, (int64_t[]){3, 4, 3});
    cr_assert_eq (((float *) out[0]->data)[4], 7);   //  x[0][1][2]
    zi_tensor_destroy (&out[0]);
    //  a zero step, then an axis out of range -> errors
    zi_tensor_t *bad[5] = {in[0], zt_i64_vec (1, (int64_t[]){0}), zt_i64_vec (1, (int64_t[]){2}),
                           zt_i64_vec (1, (int64_t[]){0}), zt_i64_vec (1, (int64_t[]){0})};
    zt_node_init (&t, "Slice", 0, 0);
    cr_assert_lt (zt_run_n (&t, 5, bad, 1, out), 0);
    ((int64_t *) bad[3]->data)[0] = 3;
    zt_node_init (&t, "Slice", 0, 0);
    cr_assert_lt (zt_run_n (&t, 4, bad, 1, out), 0);
    for (int i = 1; i < 5; i++) {
        zi_tensor_destroy (&bad[i]);
    }
    for (int i = 0; i < 3; i++) {
        zi_tensor_destroy (&in[i]);
    }
}

//  Gather family ----------------------------------------------------------------------

Test (ops_shape, gather_any_axis_negative_and_int32_indices)
{
    int64_t shape[3] = {3, 4, 2};
    for (int axis = 0; axis < 3; axis++) {
        for (int i32 = 0; i32 < 2; i32++) {
            zt_node_t t;
            zt_node_init (&t, "Gather", 0, 0);
            zt_int (&t, "axis", axis - (i32 ? 3 : 0));
            int64_t n = shape[axis];
            int64_t raw[4] = {n - 1, 0, -1, -n};
            int32_t raw32[4] = {(int32_t) (n - 1), 0, -1, (int32_t) -n};
            zi_tensor_t *idx = i32 ? zt_tensor_of (ZI_DT_I32, 2, (int64_t[]){2, 2}, raw32)
                                   : zt_tensor_of (ZI_DT_I64, 2, (int64_t[]){2, 2}, raw);
            zi_tensor_t *in[2] = {t_iota (3, shape), idx}, *out[1];
            cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
            int64_t ys[4];
            int k = 0;
            for (int d = 0; d < 3; d++) {
                if (d == axis) {
                    ys[k++] = 2;
                    ys[k++] = 2;
                }
                else {
                    ys[k++] = shape[d];
                }
            }
            zt_expect_shape (out[0], 4, ys);
            int64_t pos[4] = {0};
            for (int64_t e = 0; e < zi_tensor_count (out[0]); e++) {
                int64_t xp[3];
                for (int d = 0, q = 0; d < 3; d++) {
                    if (d == axis) {
                        int64_t v = raw[pos[q] * 2 + pos[q + 1]];
                        xp[d] = v < 0 ? v + n : v;
                        q += 2;
                    }
                    else {
                        xp[d] = pos[q++];
                    }
                }
                cr_assert_eq (((float *) out[0]->data)[e],
                              (float) t_flat (3, shape, xp));
                zt_next (4, ys, pos);
            }
            zi_tensor_destroy (&out[0]);
            zi_tensor_destroy (&in[0]);
            zi_tensor_destroy (&in[1]);
        }
    }
}

Test (ops_shape, gather_out_of_range_is_an_error)
{
    zt_node_t t;
    zt_node_init (&t, "Gather", 0, 0);
    zi_tensor_t *in[2] = {t_iota (2, (int64_t[]){3, 2}), zt_i64_vec (2, (int64_t[]){0, 3})};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), ZI_ERR_SHAPE);
    cr_assert_neq (strstr (t.err, "out of range"), NULL, "%s", t.err);
    ((int64_t *) in[1]->data)[1] = -4;
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), ZI_ERR_SHAPE);
    //  float indices are refused
    zi_tensor_t *fin[2] = {in[0], t_scalar_f (0)};
    cr_assert_lt (zt_run_n (&t, 2, fin, 1, out), 0);
    //  scalar index: rank drops by one
    zi_tensor_t *sidx = zt_tensor_of (ZI_DT_I64, 0, NULL, (int64_t[]){2});
    zi_tensor_t *sin[2] = {in[0], sidx};
    cr_assert_eq (zt_run_n (&t, 2, sin, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 1, (int64_t[]){2});
    cr_assert_eq (((float *) out[0]->data)[1], 5);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&sidx);
    zi_tensor_destroy (&fin[1]);
    zi_tensor_destroy (&in[0]);
    zi_tensor_destroy (&in[1]);
}

Test (ops_shape, gather_elements_and_gather_nd)
{
    //  GatherElements axis 1 on (3,3) with a (2,2) index block, negatives
    zt_node_t t;
    zt_node_init (&t, "GatherElements", 0, 0);
    zt_int (&t, "axis", 1);
    zi_tensor_t *in[2] = {t_iota (2, (int64_t[]){3, 3}),
                          zt_tensor_of (ZI_DT_I64, 2, (int64_t[]){2, 2},
                                 (int64_t[]){0, -1, 2, 1})};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    t_expect_f32 (out[0], (float[]){0, 2, 5, 4}, 4, 0);
    zi_tensor_destroy (&out[0]);
    ((int64_t *) in[1]->data)[0] = 3;
    cr_assert_lt (zt_run_n (&t, 2, in, 1, out), 0);
    zi_tensor_destroy (&in[1]);
    //  GatherND: (3,3) data, indices (2,2) -> 2 elements; (2,1) -> 2 rows
    zt_node_init (&t, "GatherND", 0, 0);
    in[1] = zt_tensor_of (ZI_DT_I64, 2, (int64_t[]){2, 2}, (int64_t[]){0, 1, 2, -1});
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    t_expect_f32 (out[0], (float[]){1, 8}, 2, 0);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&in[1]);
    in[1] = zt_tensor_of (ZI_DT_I64, 2, (int64_t[]){2, 1}, (int64_t[]){2, 0});
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 2, (int64_t[]){2, 3});
    t_expect_f32 (out[0], (float[]){6, 7, 8, 0, 1, 2}, 6, 0);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&in[1]);
    //  batch_dims 1: data (2,3), indices (2,1) -> (2,)
    zt_node_init (&t, "GatherND", 0, 0);
    zt_int (&t, "batch_dims", 1);
    in[1] = zt_tensor_of (ZI_DT_I64, 2, (int64_t[]){2, 1}, (int64_t[]){2, 1});
    zi_tensor_t *d2[2] = {t_iota (2, (int64_t[]){2, 3}), in[1]};
    cr_assert_eq (zt_run_n (&t, 2, d2, 1, out), 0, "%s", t.err);
    t_expect_f32 (out[0], (float[]){2, 4}, 2, 0);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&d2[0]);
    zi_tensor_destroy (&in[1]);
    zi_tensor_destroy (&in[0]);
}

Test (ops_shape, scatter_elements_and_scatter_nd)
{
    zt_node_t t;
    zt_node_init (&t, "ScatterElements", 0, 0);
    zt_int (&t, "axis", 1);
    zi_tensor_t *in[3] = {
        t_iota (2, (int64_t[]){2, 3}),
        zt_tensor_of (ZI_DT_I64, 2, (int64_t[]){2, 1}, (int64_t[]){2, -3}),
        zt_tensor_of (ZI_DT_F32, 2, (int64_t[]){2, 1}, (float[]){10, 20}),
    };
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 3, in, 1, out), 0, "%s", t.err);
    t_expect_f32 (out[0], (float[]){0, 1, 10, 20, 4, 5}, 6, 0);
    zi_tensor_destroy (&out[0]);
    zt_node_init (&t, "ScatterElements", 0, 0);
    zt_int (&t, "axis", 1);
    zt_str (&t, "reduction", "add");
    cr_assert_eq (zt_run_n (&t, 3, in, 1, out), 0, "%s", t.err);
    t_expect_f32 (out[0], (float[]){0, 1, 12, 23, 4, 5}, 6, 0);
    zi_tensor_destroy (&out[0]);
    zt_node_init (&t, "ScatterElements", 0, 0);
    zt_str (&t, "reduction", "bogus");
    cr_assert_eq (zt_run_n (&t, 3, in, 1, out), ZI_ERR_UNSUPPORTED);
    for (int i = 1; i < 3; i++) {
        zi_tensor_destroy (&in[i]);
    }
    //  ScatterND: replace row 1 of (2,3)
    zt_node_init (&t, "ScatterND", 0, 0);
    in[1] = zt_tensor_of (ZI_DT_I64, 2, (int64_t[]){1, 1}, (int64_t[]){1});
    in[2] = zt_tensor_of (ZI_DT_F32, 2, (int64_t[]){1, 3}, (float[]){7, 8, 9});
    cr_assert_eq (zt_run_n (&t, 3, in, 1, out), 0, "%s", t.err);
    t_expect_f32 (out[0], (float[]){0, 1, 2, 7, 8, 9}, 6, 0);
    zi_tensor_destroy (&out[0]);
    ((int64_t *) in[1]->data)[0] = 2;
    cr_assert_lt (zt_run_n (&t, 3, in, 1, out), 0);
    for (int i = 0; i < 3; i++) {
        zi_tensor_destroy (&in[i]);
    }
}

//  Expand, Tile, Pad -----------------------------------------------------------------

Test (ops_shape, expand_broadcasts_both_ways)
{
    zt_node_t t;
    zt_node_init (&t, "Expand", 0, 0);
    zi_tensor_t *in[2] = {t_iota (2, (int64_t[]){3, 1}), zt_i64_vec (3, (int64_t[]){2, 1, 4})};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 3, (int64_t[]){2, 3, 4});
    for (int64_t i = 0; i < 24; i++) {
        cr_assert_eq (((float *) out[0]->data)[i], (float) ((i / 4) % 3));
    }
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&in[1]);
    //  a shape smaller than the input keeps the input's dims
    in[1] = zt_i64_vec (1, (int64_t[]){1});
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 2, (int64_t[]){3, 1});
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&in[1]);
    in[1] = zt_i64_vec (2, (int64_t[]){2, 5});
    cr_assert_lt (zt_run_n (&t, 2, in, 1, out), 0);
    zi_tensor_destroy (&in[1]);
    in[1] = zt_i64_vec (4, (int64_t[]){1 << 20, 1 << 20, 3, 1});
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), ZI_ERR_LIMIT);
    zi_tensor_destroy (&in[1]);
    zi_tensor_destroy (&in[0]);
}

Test (ops_shape, tile_repeats_each_dim)
{
    zt_node_t t;
    zt_node_init (&t, "Tile", 0, 0);
    zi_tensor_t *in[2] = {t_iota (2, (int64_t[]){2, 3}), zt_i64_vec (2, (int64_t[]){2, 3})};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 2, (int64_t[]){4, 9});
    for (int64_t i = 0; i < 4; i++) {
        for (int64_t j = 0; j < 9; j++) {
            cr_assert_eq (((float *) out[0]->data)[i * 9 + j],
                          (float) ((i % 2) * 3 + j % 3));
        }
    }
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&in[1]);
    in[1] = zt_i64_vec (2, (int64_t[]){1, -1});
    cr_assert_lt (zt_run_n (&t, 2, in, 1, out), 0);
    zi_tensor_destroy (&in[1]);
    in[1] = zt_i64_vec (1, (int64_t[]){2});
    cr_assert_lt (zt_run_n (&t, 2, in, 1, out), 0);
    zi_tensor_destroy (&in[1]);
    zi_tensor_destroy (&in[0]);
}

//  numpy.pad, one axis: source index or -1 for the constant.
static int64_t
t_ref_pad_src (int64_t o, int64_t b, int64_t n, const char *mode)
{
    int64_t i = o - b;
    if (i >= 0 && i < n) {
        return i;
    }
    if (strcmp (mode, "constant") == 0) {
        return -1;
    }
    if (strcmp (mode, "edge") == 0) {
        return i < 0 ? 0 : n - 1;
    }
    //  reflect, by repeated bouncing
    while (i < 0 || i >= n) {
        if (n == 1) {
            return 0;
        }
        i = i < 0 ? -i : 2 * (n - 1) - i;
    }
    return i;
}

Test (ops_shape, pad_modes_match_reference)
{
    const char *modes[] = {"constant", "reflect", "edge"};
    static const int64_t padsets[][6] = {
        {1, 2, 0, 2, 1, 3},
        {0, 0, 0, 0, 0, 0},
        {3, 4, 2, 3, 4, 2},     //  wider than the input: reflect repeats
        {-1, 1, 0, 0, -2, 1},   //  negative pads crop
    };
    int64_t shape[3] = {2, 4, 3};
    for (int m = 0; m < 3; m++) {
        for (int p = 0; p < 4; p++) {
            zt_node_t t;
            zt_node_init (&t, "Pad", 0, 0);
            zt_str (&t, "mode", modes[m]);
            zi_tensor_t *in[3] = {t_iota (3, shape), zt_i64_vec (6, padsets[p]),
                                  t_scalar_f (-7)};
            zi_tensor_t *out[1];
            int rc = zt_run_n (&t, 3, in, 1, out);
            cr_assert_eq (rc, 0, "%s %d: %s", modes[m], p, t.err);
            int64_t ys[3];
            for (int d = 0; d < 3; d++) {
                ys[d] = shape[d] + padsets[p][d] + padsets[p][3 + d];
            }
            zt_expect_shape (out[0], 3, ys);
            int64_t pos[3] = {0};
            for (int64_t e = 0; e < zi_tensor_count (out[0]); e++) {
                int64_t xp[3];
                bool cst = false;
                for (int d = 0; d < 3; d++) {
                    xp[d] = t_ref_pad_src (pos[d], padsets[p][d], shape[d], modes[m]);
                    cst |= xp[d] < 0;
                }
                float ref = cst ? -7.0f : (float) t_flat (3, shape, xp);
                cr_assert_eq (((float *) out[0]->data)[e], ref,
                              "%s pads %d element %lld", modes[m], p, (long long) e);
                zt_next (3, ys, pos);
            }
            zi_tensor_destroy (&out[0]);
            for (int i = 0; i < 3; i++) {
                zi_tensor_destroy (&in[i]);
            }
        }
    }
}

Test (ops_shape, pad_attribute_form_axes_and_errors)
{
    //  opset 2..10: pads and value attributes, on int64 data
    zt_node_t t;
    zt_node_init (&t, "Pad", 0, 0);
    static const int64_t pads[] = {1, 2};
    zt_ints (&t, "pads", 2, pads);
    zt_float (&t, "value", 9);
    zi_tensor_t *in[4] = {zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){2}, (int64_t[]){4, 5}),
                          NULL, NULL, NULL};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    int64_t ref[5] = {9, 4, 5, 9, 9};
    cr_assert_eq (memcmp (out[0]->data, ref, sizeof ref), 0);
    zi_tensor_destroy (&out[0]);
    //  opset 18: axes input selects the padded axes
    zi_tensor_t *x = t_iota (2, (int64_t[]){2, 2});
    zi_tensor_t *in4[4] = {x, zt_i64_vec (2, (int64_t[]){1, 1}), NULL, zt_i64_vec (1, (int64_t[]){-1})};
    zt_node_init (&t, "Pad", 0, 0);
    zt_str (&t, "mode", "edge");
    cr_assert_eq (zt_run_n (&t, 4, in4, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 2, (int64_t[]){2, 4});
    t_expect_f32 (out[0], (float[]){0, 0, 1, 1, 2, 2, 3, 3}, 8, 0);
    zi_tensor_destroy (&out[0]);
    //  wrap mode is refused at check time; pads of the wrong length later
    zt_node_init (&t, "Pad", 0, 0);
    zt_str (&t, "mode", "wrap");
    cr_assert_eq (zt_run_n (&t, 2, in4, 1, out), ZI_ERR_UNSUPPORTED);
    cr_assert_neq (strstr (t.err, "wrap"), NULL, "%s", t.err);
    zt_node_init (&t, "Pad", 0, 0);
    cr_assert_lt (zt_run_n (&t, 2, in4, 1, out), 0);
    //  cropping more than the axis has
    zi_tensor_destroy (&in4[1]);
    in4[1] = zt_i64_vec (4, (int64_t[]){-3, 0, 0, 0});
    zt_node_init (&t, "Pad", 0, 0);
    cr_assert_lt (zt_run_n (&t, 2, in4, 1, out), 0);
    zi_tensor_destroy (&in4[1]);
    zi_tensor_destroy (&in4[3]);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&in[0]);
}

//  Shape, Size, ConstantOfShape, Range, Constant --------------------------------------

Test (ops_shape, shape_and_size_read_no_data)
{
    //  The input has a shape but no data: Shape and Size must not care.
    zi_tensor_t x;
    cr_assert_eq (zi_tensor_init_view (&x, ZI_DT_F32, 4, (int64_t[]){2, 3, 5, 7},
                                       NULL, 2 * 3 * 5 * 7 * 4), 0);
    zi_tensor_t *in[1] = {&x}, *out[1];
    static const struct {
        bool has_s, has_e;
        int64_t s, e, n, first;
    } cases[] = {
        {false, false, 0, 0, 4, 2}, {true, false, 1, 0, 3, 3},
        {false, true, 0, -1, 3, 2}, {true, true, -3, 3, 2, 3},
        {true, false, -10, 0, 4, 2}, {false, true, 0, 10, 4, 2},
        {true, true, 3, 1, 0, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        zt_node_t t;
        zt_node_init (&t, "Shape", 0, 0);
        if (cases[c].has_s) {
            zt_int (&t, "start", cases[c].s);
        }
        if (cases[c].has_e) {
            zt_int (&t, "end", cases[c].e);
        }
        cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
        zt_expect_shape (out[0], 1, (int64_t[]){cases[c].n});
        if (cases[c].n) {
            cr_assert_eq (((int64_t *) out[0]->data)[0], cases[c].first, "case %zu", c);
        }
        zi_tensor_destroy (&out[0]);
    }
    zt_node_t t;
    zt_node_init (&t, "Size", 0, 0);
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    cr_assert_eq (out[0]->rank, 0);
    cr_assert_eq (*(int64_t *) out[0]->data, 210);
    zi_tensor_destroy (&out[0]);
}

Test (ops_shape, constant_of_shape_values_and_limits)
{
    zt_node_t t;
    zt_node_init (&t, "ConstantOfShape", 0, 0);
    zi_tensor_t *in[1] = {zt_i64_vec (2, (int64_t[]){2, 3})}, *out[1];
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    cr_assert_eq (out[0]->dtype, ZI_DT_F32);
    t_expect_f32 (out[0], (float[]){0, 0, 0, 0, 0, 0}, 6, 0);
    zi_tensor_destroy (&out[0]);
    //  an int64 value
    zi_tensor_t *v = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){1}, (int64_t[]){-5});
    zt_node_init (&t, "ConstantOfShape", 0, 0);
    zt_tensor_attr (&t, "value", v);
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    cr_assert_eq (out[0]->dtype, ZI_DT_I64);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq (((int64_t *) out[0]->data)[i], -5);
    }
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&in[0]);
    //  an empty shape makes a scalar; a zero dim an empty tensor
    in[0] = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){0}, NULL);
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    cr_assert_eq (out[0]->rank, 0);
    cr_assert_eq (*(int64_t *) out[0]->data, -5);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&in[0]);
    in[0] = zt_i64_vec (2, (int64_t[]){4, 0});
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    cr_assert_eq (zi_tensor_count (out[0]), 0);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&in[0]);
    //  negative or absurd sizes are refused before any allocation
    in[0] = zt_i64_vec (2, (int64_t[]){4, -1});
    cr_assert_lt (zt_run_n (&t, 1, in, 1, out), 0);
    zi_tensor_destroy (&in[0]);
    in[0] = zt_i64_vec (3, (int64_t[]){1 << 30, 1 << 30, 1 << 30});
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), ZI_ERR_LIMIT);
    zi_tensor_destroy (&in[0]);
    //  a value tensor with 2 elements is malformed
    zi_tensor_t *v2 = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){2}, (int64_t[]){1, 2});
    zt_node_init (&t, "ConstantOfShape", 0, 0);
    zt_tensor_attr (&t, "value", v2);
    in[0] = zt_i64_vec (1, (int64_t[]){2});
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), ZI_ERR_MALFORMED);
    zi_tensor_destroy (&in[0]);
    zi_tensor_destroy (&v2);
    zi_tensor_destroy (&v);
}

Test (ops_shape, range_float_int_and_guards)
{
    zt_node_t t;
    zt_node_init (&t, "Range", 0, 0);
    zi_tensor_t *in[3] = {t_scalar_f (1), t_scalar_f (5), t_scalar_f (1.5f)};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 3, in, 1, out), 0, "%s", t.err);
    t_expect_f32 (out[0], (float[]){1, 2.5f, 4}, 3, 1e-6f);
    zi_tensor_destroy (&out[0]);
    //  delta 0 and a huge count are refused before allocating
    *(float *) in[2]->data = 0;
    cr_assert_lt (zt_run_n (&t, 3, in, 1, out), 0);
    *(float *) in[2]->data = 1e-30f;
    cr_assert_eq (zt_run_n (&t, 3, in, 1, out), ZI_ERR_LIMIT);
    *(float *) in[2]->data = NAN;
    cr_assert_lt (zt_run_n (&t, 3, in, 1, out), 0);
    for (int i = 0; i < 3; i++) {
        zi_tensor_destroy (&in[i]);
    }
    //  int32, negative delta: 10, 7, 4, 1
    int32_t a = 10, b = 0, c = -3;
    in[0] = zt_tensor_of (ZI_DT_I32, 0, NULL, &a);
    in[1] = zt_tensor_of (ZI_DT_I32, 0, NULL, &b);
    in[2] = zt_tensor_of (ZI_DT_I32, 0, NULL, &c);
    cr_assert_eq (zt_run_n (&t, 3, in, 1, out), 0, "%s", t.err);
    int32_t ref[4] = {10, 7, 4, 1};
    zt_expect_shape (out[0], 1, (int64_t[]){4});
    cr_assert_eq (memcmp (out[0]->data, ref, sizeof ref), 0);
    zi_tensor_destroy (&out[0]);
    //  empty when the delta points away
    *(int32_t *) in[2]->data = 3;
    cr_assert_eq (zt_run_n (&t, 3, in, 1, out), 0, "%s", t.err);
    cr_assert_eq (zi_tensor_count (out[0]), 0);
    zi_tensor_destroy (&out[0]);
    for (int i = 0; i < 3; i++) {
        zi_tensor_destroy (&in[i]);
    }
    //  int64 extremes do not overflow the count
    int64_t lo = INT64_MIN, hi = INT64_MAX, one = 1;
    in[0] = zt_tensor_of (ZI_DT_I64, 0, NULL, &lo);
    in[1] = zt_tensor_of (ZI_DT_I64, 0, NULL, &hi);
    in[2] = zt_tensor_of (ZI_DT_I64, 0, NULL, &one);
    cr_assert_eq (zt_run_n (&t, 3, in, 1, out), ZI_ERR_LIMIT);
    for (int i = 0; i < 3; i++) {
        zi_tensor_destroy (&in[i]);
    }
}

Test (ops_shape, constant_attribute_kinds)
{
    zt_node_t t;
    zi_tensor_t *out[1];
    zt_node_init (&t, "Constant", 0, 0);
    zt_float (&t, "value_float", 2.5f);
    cr_assert_eq (zt_run_n (&t, 0, NULL, 1, out), 0, "%s", t.err);
    cr_assert_eq (out[0]->rank, 0);
    cr_assert_eq (*(float *) out[0]->data, 2.5f);
    zi_tensor_destroy (&out[0]);
    zt_node_init (&t, "Constant", 0, 0);
    static const int64_t iv[] = {3, -4};
    zt_ints (&t, "value_ints", 2, iv);
    cr_assert_eq (zt_run_n (&t, 0, NULL, 1, out), 0, "%s", t.err);
    cr_assert_eq (out[0]->dtype, ZI_DT_I64);
    cr_assert_eq (memcmp (out[0]->data, iv, sizeof iv), 0);
    zi_tensor_destroy (&out[0]);
    zi_tensor_t *v = t_iota (2, (int64_t[]){2, 2});
    zt_node_init (&t, "Constant", 0, 0);
    zt_tensor_attr (&t, "value", v);
    cr_assert_eq (zt_run_n (&t, 0, NULL, 1, out), 0, "%s", t.err);
    t_expect_f32 (out[0], (float[]){0, 1, 2, 3}, 4, 0);
    zi_tensor_destroy (&out[0]);
    //  two values, or a string value, are refused at check time
    zt_int (&t, "value_int", 1);
    cr_assert_eq (zt_run_n (&t, 0, NULL, 1, out), ZI_ERR_MALFORMED);
    zt_node_init (&t, "Constant", 0, 0);
    zt_str (&t, "value_string", "x");
    cr_assert_eq (zt_run_n (&t, 0, NULL, 1, out), ZI_ERR_UNSUPPORTED);
    zi_tensor_destroy (&v);
}

//  Trilu -----------------------------------------------------------------------------

Test (ops_shape, trilu_upper_lower_with_k)
{
    int64_t shape[3] = {2, 3, 4};
    for (int upper = 0; upper < 2; upper++) {
        for (int64_t k = -4; k <= 5; k++) {
            zt_node_t t;
            zt_node_init (&t, "Trilu", 0, 0);
            zt_int (&t, "upper", upper);
            zi_tensor_t *in[2] = {t_iota (3, shape), zt_tensor_of (ZI_DT_I64, 0, NULL, &k)};
            zi_tensor_t *out[1];
            cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
            for (int64_t e = 0; e < 24; e++) {
                int64_t i = (e / 4) % 3, j = e % 4;
                bool keep = upper ? j - i >= k : j - i <= k;
                cr_assert_eq (((float *) out[0]->data)[e], keep ? (float) e : 0.0f,
                              "upper %d k %lld e %lld", upper, (long long) k,
                              (long long) e);
            }
            zi_tensor_destroy (&out[0]);
            zi_tensor_destroy (&in[0]);
            zi_tensor_destroy (&in[1]);
        }
    }
    zt_node_t t;
    zt_node_init (&t, "Trilu", 0, 0);
    zi_tensor_t *in[1] = {t_iota (1, (int64_t[]){3})}, *out[1];
    cr_assert_lt (zt_run_n (&t, 1, in, 1, out), 0);
    zi_tensor_destroy (&in[0]);
}

//  Resize and Upsample ---------------------------------------------------------------

//  The spec's coordinate transform and rounding, written out plainly.
static double
t_ref_orig (const char *ctm, double x, double scale, double lin, double lout)
{
    if (strcmp (ctm, "asymmetric") == 0) {
        return x / scale;
    }
    if (strcmp (ctm, "align_corners") == 0) {
        return lout == 1 ? 0 : x * (lin - 1) / (lout - 1);
    }
    if (strcmp (ctm, "pytorch_half_pixel") == 0) {
        return lout > 1 ? (x + 0.5) / scale - 0.5 : 0;
    }
    if (strcmp (ctm, "tf_half_pixel_for_nn") == 0) {
        return (x + 0.5) / scale;
    }
    return (x + 0.5) / scale - 0.5;
}

static int64_t
t_ref_near (const char *mode, double x, int64_t n)
{
    double v;
    if (strcmp (mode, "floor") == 0) {
        v = floor (x);
    }
    else if (strcmp (mode, "ceil") == 0) {
        v = ceil (x);
    }
    else if (strcmp (mode, "round_prefer_ceil") == 0) {
        v = floor (x + 0.5);
    }
    else {
        v = ceil (x - 0.5);
    }
    return v < 0 ? 0 : v > n - 1 ? n - 1 : (int64_t) v;
}

//  Bilinear on the last two axes of (1, 1, h, w), in doubles.
static double
t_ref_bilinear (const float *x, int64_t h, int64_t w, double cy, double cx)
{
    cy = cy < 0 ? 0 : cy > h - 1 ? h - 1 : cy;
    cx = cx < 0 ? 0 : cx > w - 1 ? w - 1 : cx;
    int64_t y0 = (int64_t) floor (cy), x0 = (int64_t) floor (cx);
    int64_t y1 = y0 + 1 < h ? y0 + 1 : y0, x1 = x0 + 1 < w ? x0 + 1 : x0;
    double dy = cy - y0, dx = cx - x0;
    return (1 - dy) * ((1 - dx) * x[y0 * w + x0] + dx * x[y0 * w + x1])
           + dy * ((1 - dx) * x[y1 * w + x0] + dx * x[y1 * w + x1]);
}

Test (ops_shape, resize_nearest_and_linear_match_reference)
{
    const char *ctms[] = {"half_pixel", "asymmetric", "align_corners",
                          "pytorch_half_pixel", "tf_half_pixel_for_nn"};
    const char *rounds[] = {"round_prefer_floor", "round_prefer_ceil", "floor",
                            "ceil"};
    static const float scalesets[][2] = {{2.0f, 3.0f}, {0.6f, 0.5f}, {1.7f, 0.8f}};
    int64_t h = 4, w = 5;
    for (int c = 0; c < 5; c++) {
        for (int s = 0; s < 3; s++) {
            for (int m = 0; m < 5; m++) {     //  4 nearest modes, then linear
                bool linear = m == 4;
                zt_node_t t;
                zt_node_init (&t, "Resize", 0, 0);
                zt_int (&t, "__opset", 13);
                zt_str (&t, "mode", linear ? "linear" : "nearest");
                zt_str (&t, "coordinate_transformation_mode", ctms[c]);
                if (!linear) {
                    zt_str (&t, "nearest_mode", rounds[m]);
                }
                float sc[4] = {1, 1, scalesets[s][0], scalesets[s][1]};
                zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 4, (int64_t[]){1, 1, h, w}, NULL);
                for (int i = 0; i < h * w; i++) {
                    ((float *) x->data)[i] = t_rand ();
                }
                zi_tensor_t *in[4] = {x, NULL,
                                      zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){4}, sc), NULL};
                zi_tensor_t *out[1];
                cr_assert_eq (zt_run_n (&t, 3, in, 1, out), 0, "%s", t.err);
                int64_t oh = (int64_t) floor (h * (double) sc[2]);
                int64_t ow = (int64_t) floor (w * (double) sc[3]);
                zt_expect_shape (out[0], 4, (int64_t[]){1, 1, oh, ow});
                for (int64_t i = 0; i < oh; i++) {
                    for (int64_t j = 0; j < ow; j++) {
                        //  the resized length is scale * in, not floored
                        double cy = t_ref_orig (ctms[c], i, sc[2], h, h * (double) sc[2]);
                        double cx = t_ref_orig (ctms[c], j, sc[3], w, w * (double) sc[3]);
                        const float *xp = (const float *) x->data;
                        double ref = linear
                                         ? t_ref_bilinear (xp, h, w, cy, cx)
                                         : xp[t_ref_near (rounds[m], cy, h) * w
                                              + t_ref_near (rounds[m], cx, w)];
                        float got = ((float *) out[0]->data)[i * ow + j];
                        cr_assert (fabs (got - ref) <= 1e-5 + 1e-4 * fabs (ref),
                                   "%s %s scales %d at (%lld,%lld): %g vs %g",
                                   ctms[c], linear ? "linear" : rounds[m], s,
                                   (long long) i, (long long) j, got, ref);
                    }
                }
                zi_tensor_destroy (&out[0]);
                zi_tensor_destroy (&in[0]);
                zi_tensor_destroy (&in[2]);
            }
        }
    }
}

Test (ops_shape, resize_sizes_1d_linear_int_nearest_and_rejections)
{
    //  sizes input, 1-D linear with align_corners: 0..3 -> 7 points
    zt_node_t t;
    zt_node_init (&t, "Resize", 0, 0);
    zt_str (&t, "mode", "linear");
    zt_str (&t, "coordinate_transformation_mode", "align_corners");
    zi_tensor_t *in[4] = {t_iota (1, (int64_t[]){4}), NULL, NULL,
                          zt_i64_vec (1, (int64_t[]){7})};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 4, in, 1, out), 0, "%s", t.err);
    t_expect_f32 (out[0], (float[]){0, 0.5f, 1, 1.5f, 2, 2.5f, 3}, 7, 1e-6f);
    zi_tensor_destroy (&out[0]);
    //  nearest works on int64 by element size
    zi_tensor_destroy (&in[0]);
    in[0] = zt_tensor_of (ZI_DT_I64, 2, (int64_t[]){1, 2}, (int64_t[]){11, 22});
    zi_tensor_destroy (&in[3]);
    in[3] = zt_i64_vec (2, (int64_t[]){2, 4});
    zt_node_init (&t, "Resize", 0, 0);
    zt_str (&t, "coordinate_transformation_mode", "asymmetric");
    zt_str (&t, "nearest_mode", "floor");
    cr_assert_eq (zt_run_n (&t, 4, in, 1, out), 0, "%s", t.err);
    int64_t ref[8] = {11, 11, 22, 22, 11, 11, 22, 22};
    cr_assert_eq (memcmp (out[0]->data, ref, sizeof ref), 0);
    zi_tensor_destroy (&out[0]);
    //  linear on int64 is refused; so are cubic and tf_crop_and_resize
    zt_node_init (&t, "Resize", 0, 0);
    zt_str (&t, "mode", "linear");
    cr_assert_eq (zt_run_n (&t, 4, in, 1, out), ZI_ERR_UNSUPPORTED);
    zt_node_init (&t, "Resize", 0, 0);
    zt_str (&t, "mode", "cubic");
    cr_assert_eq (zt_run_n (&t, 4, in, 1, out), ZI_ERR_UNSUPPORTED);
    cr_assert_neq (strstr (t.err, "cubic"), NULL, "%s", t.err);
    zt_node_init (&t, "Resize", 0, 0);
    zt_str (&t, "coordinate_transformation_mode", "tf_crop_and_resize");
    cr_assert_eq (zt_run_n (&t, 4, in, 1, out), ZI_ERR_UNSUPPORTED);
    //  unknown sizes while planning
    zi_tensor_t unknown;
    zi_tensor_init_view (&unknown, ZI_DT_I64, 1, (int64_t[]){2}, NULL, 16);
    zi_tensor_t *pin[4] = {in[0], NULL, NULL, &unknown};
    zt_node_init (&t, "Resize", 0, 0);
    cr_assert_eq (zt_run_n (&t, 4, pin, 1, out), ZI_OP_NEEDS_VALUE);
    //  wrong number of sizes, zero / negative scales
    zi_tensor_destroy (&in[3]);
    in[3] = zt_i64_vec (1, (int64_t[]){2});
    cr_assert_lt (zt_run_n (&t, 4, in, 1, out), 0);
    float bad[2] = {1, -2};
    in[2] = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){2}, bad);
    cr_assert_lt (zt_run_n (&t, 3, in, 1, out), 0);
    zi_tensor_destroy (&in[2]);
    zi_tensor_destroy (&in[3]);
    zi_tensor_destroy (&in[0]);
}

Test (ops_shape, resize10_and_upsample_nearest)
{
    //  Upsample-9, scales input: the ONNX example
    zt_node_t t;
    zt_node_init (&t, "Upsample", 0, 0);
    zt_str (&t, "mode", "nearest");
    float sc[4] = {1, 1, 2, 3};
    zi_tensor_t *in[2] = {zt_tensor_of (ZI_DT_F32, 4, (int64_t[]){1, 1, 2, 2},
                                 (float[]){1, 2, 3, 4}),
                          zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){4}, sc)};
    zi_tensor_t *out[1];
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    float ref[24] = {1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2,
                     3, 3, 3, 4, 4, 4, 3, 3, 3, 4, 4, 4};
    zt_expect_shape (out[0], 4, (int64_t[]){1, 1, 4, 6});
    t_expect_f32 (out[0], ref, 24, 0);
    zi_tensor_destroy (&out[0]);
    //  Upsample-7: scales attribute; Resize-10: same answer
    zt_node_init (&t, "Upsample", 0, 0);
    zt_floats (&t, "scales", 4, sc);
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    t_expect_f32 (out[0], ref, 24, 0);
    zi_tensor_destroy (&out[0]);
    zt_node_init (&t, "Resize", 0, 0);
    zt_int (&t, "__opset", 10);
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    t_expect_f32 (out[0], ref, 24, 0);
    zi_tensor_destroy (&out[0]);
    //  Upsample linear (asymmetric): 1,2 -> 1, 1.5, 2, 2
    zt_node_init (&t, "Upsample", 0, 0);
    zt_str (&t, "mode", "linear");
    float sc2[4] = {1, 1, 1, 2};
    zi_tensor_destroy (&in[1]);
    in[1] = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){4}, sc2);
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    t_expect_f32 (out[0], (float[]){1, 1.5f, 2, 2, 3, 3.5f, 4, 4}, 8, 1e-6f);
    zi_tensor_destroy (&out[0]);
    zi_tensor_destroy (&in[0]);
    zi_tensor_destroy (&in[1]);
}

//  Planning: value-dependent ops answer NEEDS_VALUE -----------------------------------

Test (ops_shape, value_dependent_infer_needs_value)
{
    zi_tensor_t unknown;
    zi_tensor_init_view (&unknown, ZI_DT_I64, 1, (int64_t[]){2}, NULL, 16);
    zi_tensor_t *x = t_iota (2, (int64_t[]){4, 4});
    zi_tensor_t *out[1];
    const char *ops[] = {"Expand", "Tile", "Squeeze", "Unsqueeze", "Pad"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        zt_node_t t;
        zt_node_init (&t, ops[i], 0, 0);
        zi_tensor_t *in[2] = {x, &unknown};
        cr_assert_eq (zt_run_n (&t, 2, in, 1, out), ZI_OP_NEEDS_VALUE, "%s", ops[i]);
    }
    zt_node_t t;
    zt_node_init (&t, "Slice", 0, 0);
    zi_tensor_t *sin[3] = {x, &unknown, &unknown};
    cr_assert_eq (zt_run_n (&t, 3, sin, 1, out), ZI_OP_NEEDS_VALUE);
    zt_node_init (&t, "ConstantOfShape", 0, 0);
    zi_tensor_t *cin[1] = {&unknown};
    cr_assert_eq (zt_run_n (&t, 1, cin, 1, out), ZI_OP_NEEDS_VALUE);
    zi_tensor_t us;
    zi_tensor_init_view (&us, ZI_DT_I64, 0, NULL, NULL, 8);
    zt_node_init (&t, "Range", 0, 0);
    zi_tensor_t *rin[3] = {&us, &us, &us};
    cr_assert_eq (zt_run_n (&t, 3, rin, 1, out), ZI_OP_NEEDS_VALUE);
    zt_node_init (&t, "Split", 0, 0);
    zi_tensor_t *spin[2] = {x, &unknown};
    zi_tensor_t *sout[2];
    cr_assert_eq (zt_run_n (&t, 2, spin, 2, sout), ZI_OP_NEEDS_VALUE);
    zi_tensor_destroy (&x);
}

//  DepthToSpace, SpaceToDepth, NonZero, Compress, OneHot, EyeLike -------------------

Test (ops_shape, depth_to_space_modes_and_space_to_depth_roundtrip)
{
    int64_t n = 2, c = 8, h = 3, w = 5, b = 2, c2 = 2;
    for (int crd = 0; crd < 2; crd++) {
        zt_node_t t;
        zt_node_init (&t, "DepthToSpace", 0, 0);
        zt_int (&t, "blocksize", b);
        zt_str (&t, "mode", crd ? "CRD" : "DCR");
        zi_tensor_t *x = t_iota (4, (int64_t[]){n, c, h, w});
        zi_tensor_t *in[1] = {x}, *out[1];
        cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
        zt_expect_shape (out[0], 4, (int64_t[]){n, c2, h * b, w * b});
        //  the spec's formulas, element by element
        int64_t pos[4] = {0}, ys[4] = {n, c2, h * b, w * b};
        for (int64_t e = 0; e < zi_tensor_count (out[0]); e++, zt_next (4, ys, pos)) {
            int64_t bi = pos[2] % b, bj = pos[3] % b;
            int64_t ch = crd ? pos[1] * b * b + bi * b + bj
                             : (bi * b + bj) * c2 + pos[1];
            int64_t xp[4] = {pos[0], ch, pos[2] / b, pos[3] / b};
            cr_assert_eq (((float *) out[0]->data)[e],
                          (float) t_flat (4, (int64_t[]){n, c, h, w}, xp));
        }
        if (!crd) {
            //  SpaceToDepth undoes DCR DepthToSpace
            zt_node_t s;
            zt_node_init (&s, "SpaceToDepth", 0, 0);
            zt_int (&s, "blocksize", b);
            zi_tensor_t *sin[1] = {out[0]}, *back[1];
            cr_assert_eq (zt_run_n (&s, 1, sin, 1, back), 0, "%s", s.err);
            zt_expect_shape (back[0], 4, (int64_t[]){n, c, h, w});
            cr_assert_eq (memcmp (back[0]->data, x->data, x->nbytes), 0);
            zi_tensor_destroy (&back[0]);
        }
        zi_tensor_destroy (&out[0]);
        zi_tensor_destroy (&x);
    }
    zt_node_t t;
    zt_node_init (&t, "DepthToSpace", 0, 0);
    zt_int (&t, "blocksize", 3);
    zi_tensor_t *in[1] = {t_iota (4, (int64_t[]){1, 8, 2, 2})}, *out[1];
    cr_assert_lt (zt_run_n (&t, 1, in, 1, out), 0);
    zt_node_init (&t, "DepthToSpace", 0, 0);    //  no blocksize
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), ZI_ERR_MALFORMED);
    zi_tensor_destroy (&in[0]);
}

Test (ops_shape, nonzero_coordinates_and_needs_value)
{
    float v[6] = {0, 3, -0.0f, 0, 5, 1};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 2, (int64_t[]){2, 3}, v);
    zt_node_t t;
    zt_node_init (&t, "NonZero", 0, 0);
    zi_tensor_t *in[1] = {x}, *out[1];
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 2, (int64_t[]){2, 3});
    int64_t ref[6] = {0, 1, 1, 1, 1, 2};    //  rows, then columns
    cr_assert_eq (memcmp (out[0]->data, ref, sizeof ref), 0);
    zi_tensor_destroy (&out[0]);
    zi_tensor_t unknown;
    zi_tensor_init_view (&unknown, ZI_DT_F32, 1, (int64_t[]){2}, NULL, 8);
    in[0] = &unknown;
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), ZI_OP_NEEDS_VALUE);
    zi_tensor_destroy (&x);
}

Test (ops_shape, compress_with_and_without_axis)
{
    zi_tensor_t *x = t_iota (2, (int64_t[]){3, 2});
    uint8_t cv[3] = {0, 1, 1};
    zi_tensor_t *cond = zt_tensor_of (ZI_DT_BOOL, 1, (int64_t[]){3}, cv);
    zi_tensor_t *in[2] = {x, cond}, *out[1];
    zt_node_t t;
    zt_node_init (&t, "Compress", 0, 0);
    zt_int (&t, "axis", 0);
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 2, (int64_t[]){2, 2});
    t_expect_f32 (out[0], (float[]){2, 3, 4, 5}, 4, 0);
    zi_tensor_destroy (&out[0]);
    //  flattened, with a short condition
    zt_node_init (&t, "Compress", 0, 0);
    cr_assert_eq (zt_run_n (&t, 2, in, 1, out), 0, "%s", t.err);
    t_expect_f32 (out[0], (float[]){1, 2}, 2, 0);
    zi_tensor_destroy (&out[0]);
    //  a condition longer than the axis is an error
    zt_node_init (&t, "Compress", 0, 0);
    zt_int (&t, "axis", 1);
    cr_assert_lt (zt_run_n (&t, 2, in, 1, out), 0);
    zi_tensor_destroy (&cond);
    zi_tensor_destroy (&x);
}

Test (ops_shape, onehot_axes_negative_and_out_of_range_indices)
{
    int64_t iv[3] = {1, -1, 7};
    zi_tensor_t *idx = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){3}, iv);
    zi_tensor_t *depth = t_scalar_f (3);
    zi_tensor_t *vals = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){2}, (float[]){-1, 5});
    zi_tensor_t *in[3] = {idx, depth, vals}, *out[1];
    zt_node_t t;
    zt_node_init (&t, "OneHot", 0, 0);
    cr_assert_eq (zt_run_n (&t, 3, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 2, (int64_t[]){3, 3});
    t_expect_f32 (out[0], (float[]){-1, 5, -1, -1, -1, 5, -1, -1, -1}, 9, 0);
    zi_tensor_destroy (&out[0]);
    zt_node_init (&t, "OneHot", 0, 0);
    zt_int (&t, "axis", 0);
    cr_assert_eq (zt_run_n (&t, 3, in, 1, out), 0, "%s", t.err);
    zt_expect_shape (out[0], 2, (int64_t[]){3, 3});
    t_expect_f32 (out[0], (float[]){-1, -1, -1, 5, -1, -1, -1, 5, -1}, 9, 0);
    zi_tensor_destroy (&out[0]);
    *(float *) depth->data = 0;
    cr_assert_lt (zt_run_n (&t, 3, in, 1, out), 0);
    *(float *) depth->data = 1e12f;
    cr_assert_eq (zt_run_n (&t, 3, in, 1, out), ZI_ERR_LIMIT);
    zi_tensor_destroy (&idx);
    zi_tensor_destroy (&depth);
    zi_tensor_destroy (&vals);
}

Test (ops_shape, eyelike_dtype_and_k)
{
    zi_tensor_t *x = t_iota (2, (int64_t[]){3, 4});
    zi_tensor_t *in[1] = {x}, *out[1];
    for (int64_t k = -4; k <= 5; k++) {
        zt_node_t t;
        zt_node_init (&t, "EyeLike", 0, 0);
        zt_int (&t, "k", k);
        zt_int (&t, "dtype", ZI_DT_I32);
        cr_assert_eq (zt_run_n (&t, 1, in, 1, out), 0, "%s", t.err);
        cr_assert_eq (out[0]->dtype, ZI_DT_I32);
        for (int64_t e = 0; e < 12; e++) {
            cr_assert_eq (((int32_t *) out[0]->data)[e], (e % 4) - (e / 4) == k);
        }
        zi_tensor_destroy (&out[0]);
    }
    zt_node_t t;
    zt_node_init (&t, "EyeLike", 0, 0);
    zt_int (&t, "dtype", 8);     //  string
    cr_assert_eq (zt_run_n (&t, 1, in, 1, out), ZI_ERR_UNSUPPORTED);
    zi_tensor_destroy (&x);
}
