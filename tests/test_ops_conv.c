/*  test_ops_conv.c - Conv's engines (AVX-512 shifted-copy and packed
    paths, portable im2col / pointwise / direct paths) and the 2x2 MaxPool
    fast path, against naive references, and bit-identical across thread
    counts (pools of 1, 2 and 3 threads).

    Tolerance for Conv: |got - want| <= 1e-5 * sum |x w| + 1e-6, where want
    and the sum of the absolute products are accumulated in double: every
    path sums the same products in float, in some order, so its error is
    bounded by a small multiple of eps * Kc * sum |x w|; the test shapes
    have Kc <= 1152 and random data, which keeps real errors well below
    that. MaxPool must match its reference exactly (NaN inputs included).
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zi_conv.h"
#include "zi_ops.h"
#include "zi_ops_nn.h"
#include "zi_pool.h"
#include "ops_testutil.h"

//  Random data: this file's own sequence.
static uint32_t s_seed = 777;

//  Conv ---------------------------------------------------------------------

typedef struct {
    int64_t N, C, M, group, H, W, kh, kw, sh, sw, dh, dw;
    int64_t pt, pl, pb, pr;     //  pads: top, left, bottom, right
} tconv_t;

static int64_t
out_dim (int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0, int64_t p1)
{
    return (in + p0 + p1 - (k - 1) * d - 1) / s + 1;
}

//  Run c's Conv (+ act) with `pool`, as one node with a 2x2/s2 MaxPool
//  after it when maxpool (zi_nn_conv_act_maxpool); returns Y (N, M, oH, oW)
//  or, pooled, (N, M, oH / 2, oW / 2), owned.
static zi_tensor_t *
run_conv_node (const tconv_t *c, const zi_tensor_t *x, const zi_tensor_t *w,
               const zi_tensor_t *b, zi_nn_act_t act, zi_pool_t *pool, bool maxpool)
{
    zt_node_t t;
    zt_node_init (&t, "Conv", b ? 3 : 2, 1);
    zt_ints (&t, "kernel_shape", 2, (int64_t[]){c->kh, c->kw});
    zt_ints (&t, "strides", 2, (int64_t[]){c->sh, c->sw});
    zt_ints (&t, "dilations", 2, (int64_t[]){c->dh, c->dw});
    zt_ints (&t, "pads", 4, (int64_t[]){c->pt, c->pl, c->pb, c->pr});
    zt_int (&t, "group", c->group);
    cr_assert_eq (zi_op_check_node (&t.node, t.err, sizeof t.err), 0, "%s",
                  t.err);
    const zi_tensor_t *in[] = {x, w, b};
    zi_tensor_t *y = (zi_tensor_t *) calloc (1, sizeof *y);
    zi_tensor_t *out[] = {y};
    zi_kctx_t ctx = {.node = &t.node, .n_in = b ? 3 : 2, .in = in,
                     .n_out = 1, .out = out,
                     .nthreads = zi_pool_size (pool), .pool = pool,
                     .err = t.err, .errlen = sizeof t.err};
    cr_assert_eq (zi_nn_conv_infer (&ctx), 0, "%s", t.err);
    if (maxpool) {
        int64_t shape[4] = {y->ne[0], y->ne[1], y->ne[2] / 2, y->ne[3] / 2};
        cr_assert_eq (zi_tensor_set_shape (y, ZI_DT_F32, 4, shape), 0);
    }
    y->data = malloc (y->nbytes ? y->nbytes : 1);
    y->owns_data = true;
    //  Poison: every element must be written.
    memset (y->data, 0xff, y->nbytes);
    int rc = maxpool ? zi_nn_conv_act_maxpool (&ctx, act) : zi_nn_conv_act (&ctx, act);
    cr_assert_eq (rc, 0, "%s", t.err);
    return y;
}

static zi_tensor_t *
run_conv (const tconv_t *c, const zi_tensor_t *x, const zi_tensor_t *w,
          const zi_tensor_t *b, zi_nn_act_t act, zi_pool_t *pool)
{
    return run_conv_node (c, x, w, b, act, pool, false);
}

//  Compare y with the double reference of c (zt_ref_conv).
static void
expect_conv (const tconv_t *c, const zi_tensor_t *x, const zi_tensor_t *w,
             const zi_tensor_t *b, zi_nn_act_t act, const zi_tensor_t *y,
             const char *what)
{
    const int64_t oH = out_dim (c->H, c->kh, c->sh, c->dh, c->pt, c->pb);
    const int64_t oW = out_dim (c->W, c->kw, c->sw, c->dw, c->pl, c->pr);
    cr_assert_eq (y->rank, 4);
    cr_assert (y->ne[0] == c->N && y->ne[1] == c->M && y->ne[2] == oH
               && y->ne[3] == oW, "%s: shape", what);
    zt_geom_t g = zt_geom (2, (int64_t[]){c->H, c->W}, (int64_t[]){c->kh, c->kw},
                           (int64_t[]){c->sh, c->sw}, (int64_t[]){c->dh, c->dw},
                           (int64_t[]){c->pt, c->pl}, (int64_t[]){oH, oW});
    double *abs;
    double *ref = zt_ref_conv (x, w, b, c->group, &g, &abs);
    const float *Y = y->data;
    for (int64_t i = 0; i < zi_tensor_count (y); i++) {
        double want = zt_ref_act (ref[i], act);
        double tol = 1e-5 * abs[i] + 1e-6;
        cr_assert (fabs (Y[i] - want) <= tol,
                   "%s: y[%lld,%lld,%lld,%lld] = %.8g, want %.8g (tol %.3g)",
                   what, (long long) (i / (c->M * oH * oW)),
                   (long long) (i / (oH * oW) % c->M), (long long) (i / oW % oH),
                   (long long) (i % oW), Y[i], want, tol);
    }
    free (ref);
    free (abs);
}

static const tconv_t s_shapes[] = {
    //  N  C   M grp  H   W kh kw sh sw dh dw pt pl pb pr
    {5, 1, 16, 1, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},    //  fashion conv1
    {5, 16, 32, 1, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},   //  fashion conv2
    {1, 3, 16, 1, 37, 33, 7, 7, 2, 2, 1, 1, 3, 3, 3, 3},    //  ResNet stem
    {5, 3, 20, 1, 17, 15, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},    //  3x3 stride 2
    {1, 32, 40, 1, 7, 7, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},     //  1x1
    {5, 16, 24, 1, 9, 9, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0},     //  1x1 stride 2
    {2, 8, 8, 8, 9, 11, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},      //  depthwise
    {1, 4, 8, 4, 10, 7, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},      //  depthwise x2
    {1, 6, 9, 3, 8, 9, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0},       //  groups
    {1, 5, 11, 1, 13, 12, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2},    //  dilation 2
    {5, 4, 9, 1, 10, 11, 3, 2, 1, 1, 1, 1, 0, 1, 2, 0},     //  asymmetric
    {1, 3, 8, 1, 10, 12, 3, 3, 1, 2, 1, 1, 1, 1, 1, 1},     //  strides 1, 2
    {1, 128, 17, 1, 6, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},    //  Kc 1152
    {1, 96, 10, 1, 9, 9, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},     //  Kc 864, s 2
    {1, 64, 8, 1, 40, 40, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},    //  pack chunks
    {1, 4, 8, 1, 60, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},     //  virtual chunks
    {1, 16, 40, 1, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},     //  channel parts
    {1, 7, 1, 1, 5, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},       //  M 1, oW 3
    {3, 2, 5, 1, 1, 19, 1, 5, 1, 1, 1, 1, 0, 2, 0, 2},      //  one row
    {2, 3, 6, 1, 8, 8, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0},       //  even kernel
    {2, 5, 12, 1, 11, 23, 3, 3, 1, 3, 2, 2, 1, 2, 0, 1},    //  sW 3, dil 2
    {1, 3, 9, 1, 6, 4, 3, 5, 1, 1, 1, 1, 1, 2, 1, 2},       //  kW > iW
};
#define N_SHAPES (sizeof s_shapes / sizeof s_shapes[0])

static void
make_inputs (const tconv_t *c, zi_tensor_t **x, zi_tensor_t **w,
             zi_tensor_t **b)
{
    *x = zt_lcg_tensor (&s_seed, 4, (int64_t[]){c->N, c->C, c->H, c->W});
    *w = zt_lcg_tensor (&s_seed, 4, (int64_t[]){c->M, c->C / c->group, c->kh, c->kw});
    *b = zt_lcg_tensor (&s_seed, 1, (int64_t[]){c->M});
}

//  Every shape on one path against the reference, with pool sizes 1..3;
//  all three results must be bit-identical.
static void
check_path (int avx512)
{
    zi_conv_set_avx512 (avx512);
    zi_conv_set_min_flops (0);      //  split even the small test shapes
    zi_pool_t *pools[3] = {NULL, zi_pool_new (2), zi_pool_new (3)};
    cr_assert (pools[1] && pools[2]);
    zi_nn_act_t relu = {ZI_NN_ACT_RELU, 0.0f, 0.0f};
    for (size_t i = 0; i < N_SHAPES; i++) {
        const tconv_t *c = &s_shapes[i];
        zi_tensor_t *x, *w, *b;
        make_inputs (c, &x, &w, &b);
        zi_tensor_t *y[3];
        for (int p = 0; p < 3; p++) {
            y[p] = run_conv (c, x, w, i % 2 ? b : NULL, relu, pools[p]);
        }
        char what[64];
        snprintf (what, sizeof what, "shape %zu avx512 %d", i, avx512);
        expect_conv (c, x, w, i % 2 ? b : NULL, relu, y[0], what);
        for (int p = 1; p < 3; p++) {
            cr_assert (memcmp (y[0]->data, y[p]->data, y[0]->nbytes) == 0,
                       "%s: %d threads differ from 1", what, p + 1);
            zi_tensor_destroy (&y[p]);
        }
        zi_tensor_destroy (&y[0]);
        zi_tensor_destroy (&x);
        zi_tensor_destroy (&w);
        zi_tensor_destroy (&b);
    }
    zi_pool_destroy (&pools[1]);
    zi_pool_destroy (&pools[2]);
    zi_conv_set_avx512 (-1);
    zi_conv_set_min_flops (-1);
}

Test (ops_conv, avx512_paths_match_reference_and_threads)
{
    check_path (1);     //  the portable path when the CPU lacks AVX-512
}

Test (ops_conv, portable_paths_match_reference_and_threads)
{
    check_path (0);
}

Test (ops_conv, fused_activations_and_no_bias)
{
    const zi_nn_act_t acts[] = {
        {ZI_NN_ACT_NONE, 0.0f, 0.0f},
        {ZI_NN_ACT_LEAKY_RELU, 0.1f, 0.0f},
        {ZI_NN_ACT_SIGMOID, 0.0f, 0.0f},
    };
    //  A padded-input shape and a packed one.
    const tconv_t *shapes[] = {&s_shapes[1], &s_shapes[3]};
    for (int avx = 0; avx < 2; avx++) {
        zi_conv_set_avx512 (avx);
        for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
            for (int s = 0; s < 2; s++) {
                zi_tensor_t *x, *w, *b;
                make_inputs (shapes[s], &x, &w, &b);
                zi_tensor_t *y = run_conv (shapes[s], x, w, b, acts[a], NULL);
                expect_conv (shapes[s], x, w, b, acts[a], y, "act");
                zi_tensor_destroy (&y);
                zi_tensor_destroy (&x);
                zi_tensor_destroy (&w);
                zi_tensor_destroy (&b);
            }
        }
    }
    zi_conv_set_avx512 (-1);
}

//  MaxPool ------------------------------------------------------------------

static zi_tensor_t *
run_maxpool (const zi_tensor_t *x, int64_t k, int64_t s, zi_pool_t *pool)
{
    zt_node_t t;
    zt_node_init (&t, "MaxPool", 1, 1);
    zt_ints (&t, "kernel_shape", 2, (int64_t[]){k, k});
    zt_ints (&t, "strides", 2, (int64_t[]){s, s});
    cr_assert_eq (zi_op_check_node (&t.node, t.err, sizeof t.err), 0, "%s",
                  t.err);
    const zi_tensor_t *in[] = {x};
    zi_tensor_t *y = (zi_tensor_t *) calloc (1, sizeof *y);
    zi_tensor_t *out[] = {y};
    zi_kctx_t ctx = {.node = &t.node, .n_in = 1, .in = in, .n_out = 1,
                     .out = out, .nthreads = zi_pool_size (pool),
                     .pool = pool, .err = t.err, .errlen = sizeof t.err};
    cr_assert_eq (zi_nn_maxpool_infer (&ctx), 0, "%s", t.err);
    y->data = malloc (y->nbytes);
    y->owns_data = true;
    memset (y->data, 0xff, y->nbytes);
    cr_assert_eq (zi_nn_maxpool_run (&ctx), 0, "%s", t.err);
    return y;
}

Test (ops_conv, maxpool_2x2_matches_reference_exactly)
{
    //  (N, C, H, W): odd sizes drop the last row / column; W 70 gives an
    //  output row of 35 = 16 + 16 + 3 (tails of both halves).
    const int64_t shapes[][4] = {
        {64, 16, 28, 28}, {1, 3, 7, 9}, {5, 2, 70, 70}, {2, 3, 5, 33},
        {1, 1, 2, 2}, {3, 4, 13, 31},
    };
    zi_pool_t *pools[3] = {NULL, zi_pool_new (2), zi_pool_new (3)};
    for (int avx = 0; avx < 2; avx++) {
        zi_conv_set_avx512 (avx);
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            zi_tensor_t *x = zt_lcg_tensor (&s_seed, 4, shapes[i]);
            float *xd = (float *) x->data;
            //  Some NaNs and -inf: a NaN tap is skipped, as in the
            //  generic loop (e > y is false).
            for (int64_t j = 0; j < zi_tensor_count (x); j += 37) {
                xd[j] = j % 2 ? NAN : -INFINITY;
            }
            const int64_t H = shapes[i][2], W = shapes[i][3];
            const int64_t oH = H / 2, oW = W / 2;
            zi_tensor_t *y[3];
            for (int p = 0; p < 3; p++) {
                y[p] = run_maxpool (x, 2, 2, pools[p]);
            }
            const float *Y = y[0]->data;
            for (int64_t pl = 0; pl < shapes[i][0] * shapes[i][1]; pl++) {
                for (int64_t oh = 0; oh < oH; oh++) {
                    for (int64_t ow = 0; ow < oW; ow++) {
                        float v = -INFINITY;
                        for (int a = 0; a < 2; a++) {
                            for (int bb = 0; bb < 2; bb++) {
                                float e = xd[(pl * H + 2 * oh + a) * W
                                             + 2 * ow + bb];
                                v = e > v ? e : v;
                            }
                        }
                        float got = Y[(pl * oH + oh) * oW + ow];
                        cr_assert (memcmp (&got, &v, sizeof v) == 0,
                                   "shape %zu avx %d: %g vs %g", i, avx, got,
                                   v);
                    }
                }
            }
            for (int p = 1; p < 3; p++) {
                cr_assert (memcmp (y[0]->data, y[p]->data, y[0]->nbytes)
                           == 0);
                zi_tensor_destroy (&y[p]);
            }
            zi_tensor_destroy (&y[0]);
            zi_tensor_destroy (&x);
        }
    }
    zi_pool_destroy (&pools[1]);
    zi_pool_destroy (&pools[2]);
    zi_conv_set_avx512 (-1);
}

Test (ops_conv, maxpool_generic_is_thread_identical)
{
    //  3x3 stride 2 (the ResNet stem's pool) goes the generic way; planes
    //  large enough for the pool to split them.
    zi_tensor_t *x = zt_lcg_tensor (&s_seed, 4, (int64_t[]){4, 16, 40, 45});
    zi_pool_t *pool = zi_pool_new (3);
    zi_tensor_t *a = run_maxpool (x, 3, 2, NULL);
    zi_tensor_t *b = run_maxpool (x, 3, 2, pool);
    cr_assert (memcmp (a->data, b->data, a->nbytes) == 0);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&x);
    zi_pool_destroy (&pool);
}

//  Conv (+ act) with a fused 2x2 MaxPool --------------------------------------

Test (ops_conv, fused_maxpool_is_bit_identical_to_conv_then_maxpool)
{
    //  Every 2-D shape above (the fused chunked path for stride 1 in H, a
    //  whole conv output then the pool for the others), both CPU paths,
    //  1..3 threads split as far as they go, with and without ReLU, and
    //  NaN inputs (whose handling the pool must keep).
    zi_conv_set_min_flops (0);
    zi_pool_t *pools[3] = {NULL, zi_pool_new (2), zi_pool_new (3)};
    cr_assert (pools[1] && pools[2]);
    const zi_nn_act_t acts[] = {{ZI_NN_ACT_RELU, 0.0f, 0.0f},
                                {ZI_NN_ACT_NONE, 0.0f, 0.0f}};
    int fused = 0;
    for (int avx = 0; avx < 2; avx++) {
        zi_conv_set_avx512 (avx);
        for (size_t i = 0; i < N_SHAPES; i++) {
            const tconv_t *c = &s_shapes[i];
            zi_tensor_t *x, *w, *b;
            make_inputs (c, &x, &w, &b);
            float *xd = (float *) x->data;
            for (int64_t j = 5; j < zi_tensor_count (x); j += 101) {
                xd[j] = NAN;
            }
            const zi_nn_act_t act = acts[i % 2];
            zi_tensor_t *conv = run_conv (c, x, w, b, act, NULL);
            if (conv->ne[2] < 2 || conv->ne[3] < 2) {
                //  The pooled output is empty (MaxPool would refuse it).
                zi_tensor_t *got = run_conv_node (c, x, w, b, act, NULL, true);
                cr_assert_eq (zi_tensor_count (got), 0);
                zi_tensor_destroy (&got);
                zi_tensor_destroy (&conv);
                zi_tensor_destroy (&x);
                zi_tensor_destroy (&w);
                zi_tensor_destroy (&b);
                continue;
            }
            zi_tensor_t *want = run_maxpool (conv, 2, 2, NULL);
            for (int p = 0; p < 3; p++) {
                zi_tensor_t *got = run_conv_node (c, x, w, b, act, pools[p], true);
                cr_assert (zi_tensor_same_shape (got, want),
                           "shape %zu: pooled shape", i);
                cr_assert (memcmp (got->data, want->data, want->nbytes) == 0,
                           "shape %zu avx %d, %d threads: fused Conv + "
                           "MaxPool differs from Conv then MaxPool",
                           i, avx, p + 1);
                zi_tensor_destroy (&got);
            }
            fused += zi_tensor_count (want) > 0;
            zi_tensor_destroy (&want);
            zi_tensor_destroy (&conv);
            zi_tensor_destroy (&x);
            zi_tensor_destroy (&w);
            zi_tensor_destroy (&b);
        }
    }
    cr_assert_gt (fused, 20);
    zi_pool_destroy (&pools[1]);
    zi_pool_destroy (&pools[2]);
    zi_conv_set_avx512 (-1);
    zi_conv_set_min_flops (-1);
}
