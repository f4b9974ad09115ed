/*  test_ops_nn.c - the nn family (MatMul, Gemm, Conv, ConvTranspose, pools,
    normalisations, softmax, PRelu, LRN) against naive references.

    Every kernel is reached the way the executor reaches it: zi_op_find ->
    zi_op_check_node -> infer -> allocate outputs -> run. References are
    plain loops accumulating in double. Tolerance for float32 results:
    |got - want| <= 1e-4 * |want| + 1e-4 (GEMM reorders sums of up to a few
    thousand products; anything beyond that is a bug, not rounding).
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zi_gemm.h"
#include "zi_ops.h"
#include "zi_ops_nn.h"
#include "ops_testutil.h"

//  Data and comparison ----------------------------------------------------------

//  Random data: this file's own sequence.
static uint32_t s_seed = 12345;

#define RT(...) zt_lcg_tensor (&s_seed, INTS (__VA_ARGS__))
#define EXPECT_SHAPE(t, ...) zt_expect_shape (t, INTS (__VA_ARGS__))

static void
expect_close_tol (const float *got, const double *want, int64_t n,
                  double rtol, double atol, const char *what)
{
    for (int64_t i = 0; i < n; i++) {
        double d = fabs ((double) got[i] - want[i]);
        cr_assert (d <= atol + rtol * fabs (want[i]),
                   "%s: element %lld is %.7g, want %.7g", what, (long long) i,
                   (double) got[i], want[i]);
    }
}

static void
expect_close (const float *got, const double *want, int64_t n,
              const char *what)
{
    expect_close_tol (got, want, n, 1e-4, 1e-4, what);
}

//  MatMul -----------------------------------------------------------------------

//  numpy matmul in double for A (ra dims) @ B (rb dims), batch broadcast.
static double *
ref_matmul (const zi_tensor_t *a, const zi_tensor_t *b, int64_t *count)
{
    int ra = a->rank, rb = b->rank;
    int64_t M = ra == 1 ? 1 : a->ne[ra - 2], K = a->ne[ra - 1];
    int64_t N = rb == 1 ? 1 : b->ne[rb - 1];
    int rab = ra > 2 ? ra - 2 : 0, rbb = rb > 2 ? rb - 2 : 0;
    int br = rab > rbb ? rab : rbb;
    int64_t bs[8], nb = 1;
    for (int i = 0; i < br; i++) {
        int ia = i - (br - rab), ib = i - (br - rbb);
        int64_t da = ia >= 0 ? a->ne[ia] : 1, db = ib >= 0 ? b->ne[ib] : 1;
        bs[i] = da == 1 ? db : da;
        nb *= bs[i];
    }
    double *y = zt_dalloc (nb * M * N);
    const float *A = a->data, *B = b->data;
    for (int64_t t = 0; t < nb; t++) {
        //  decompose t into batch indices, map to A's and B's batch offsets
        int64_t rem = t, ao = 0, bo = 0, as = 1, bsz = 1;
        for (int i = br - 1; i >= 0; i--) {
            int64_t idx = rem % bs[i];
            rem /= bs[i];
            int ia = i - (br - rab), ib = i - (br - rbb);
            if (ia >= 0) {
                ao += (a->ne[ia] == 1 ? 0 : idx) * as;
                as *= a->ne[ia];
            }
            if (ib >= 0) {
                bo += (b->ne[ib] == 1 ? 0 : idx) * bsz;
                bsz *= b->ne[ib];
            }
        }
        for (int64_t m = 0; m < M; m++) {
            for (int64_t n = 0; n < N; n++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) {
                    s += (double) A[(ao * M + m) * K + k]
                         * B[(bo * K + k) * N + n];
                }
                y[(t * M + m) * N + n] = s;
            }
        }
    }
    *count = nb * M * N;
    return y;
}

static void
check_matmul (zi_tensor_t *a, zi_tensor_t *b, int orank, const int64_t *oshape)
{
    zt_node_t t;
    zt_node_init (&t, "MatMul", 2, 1);
    zi_tensor_t *in[] = {a, b}, *out[1];
    int rc = zt_run (&t, in, out, NULL);
    cr_assert_eq (rc, 0, "MatMul failed: %s", t.err);
    zt_expect_shape (out[0], orank, oshape);
    int64_t n;
    double *want = ref_matmul (a, b, &n);
    cr_assert_eq (n, zi_tensor_count (out[0]), "%lld vs %lld", (long long) n, (long long) zi_tensor_count (out[0]));
    expect_close (out[0]->data, want, n, "MatMul");
    free (want);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
}

Test (ops_nn, matmul_2d_and_vectors)
{
    check_matmul (RT (3, 4), RT (4, 5), INTS (3, 5));
    check_matmul (RT (1, 7), RT (7, 9), INTS (1, 9));      //  sgemv, M == 1
    check_matmul (RT (6, 7), RT (7, 1), INTS (6, 1));      //  sgemv, N == 1
    check_matmul (RT (7), RT (7, 3), INTS (3));            //  1-D @ 2-D
    check_matmul (RT (3, 7), RT (7), INTS (3));            //  2-D @ 1-D
    check_matmul (RT (5), RT (5), 0, NULL);                //  dot -> scalar
    check_matmul (RT (33, 65), RT (65, 17), INTS (33, 17));
}

Test (ops_nn, matmul_batched_broadcast)
{
    check_matmul (RT (2, 3, 4), RT (4, 5), INTS (2, 3, 5));     //  folded
    check_matmul (RT (2, 3, 4), RT (2, 4, 5), INTS (2, 3, 5));
    check_matmul (RT (2, 1, 3, 4), RT (5, 4, 6), INTS (2, 5, 3, 6));
    check_matmul (RT (3, 4), RT (2, 4, 5), INTS (2, 3, 5));
    check_matmul (RT (4), RT (2, 4, 5), INTS (2, 5));            //  1-D A
    check_matmul (RT (2, 3, 4), RT (4), INTS (2, 3));            //  1-D B
    check_matmul (RT (3, 1, 4), RT (1, 3, 4, 2), INTS (1, 3, 1, 2));
}

Test (ops_nn, matmul_empty_dims)
{
    //  K == 0: the sum is empty, every output element is 0.
    zt_node_t t;
    zt_node_init (&t, "MatMul", 2, 1);
    zi_tensor_t *a = RT (3, 0), *b = RT (0, 4), *in[] = {a, b}, *out[1];
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    EXPECT_SHAPE (out[0], 3, 4);
    for (int i = 0; i < 12; i++) {
        cr_assert_eq (((float *) out[0]->data)[i], 0.0f);
    }
    zt_free_outs (out, 1);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    check_matmul (RT (0, 4), RT (4, 5), INTS (0, 5));
    check_matmul (RT (0, 3, 4), RT (4, 5), INTS (0, 3, 5));
}

Test (ops_nn, matmul_rejects_bad_shapes)
{
    zt_node_t t;
    zt_node_init (&t, "MatMul", 2, 1);
    zi_tensor_t *out[1];
    zi_tensor_t *a = RT (3, 4), *b = RT (5, 6), *in[] = {a, b};
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_SHAPE);
    cr_assert (strstr (t.err, "n0") && strstr (t.err, "MatMul"), "%s", t.err);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&b);
    b = RT (3, 4, 5);
    zi_tensor_t *a2 = RT (2, 3, 4), *in2[] = {a2, b};
    cr_assert_eq (zt_run (&t, in2, out, NULL), ZI_ERR_SHAPE);
    zt_free_outs (out, 1);
    zi_tensor_t *s = zi_tensor_new (ZI_DT_F32, 0, NULL), *in3[] = {s, a};
    cr_assert_lt (zt_run (&t, in3, out, NULL), 0);
    zt_free_outs (out, 1);
    zi_tensor_t *i64 = zi_tensor_new (ZI_DT_I64, 2, (int64_t[]){4, 2});
    zi_tensor_t *in4[] = {a, i64};
    cr_assert_eq (zt_run (&t, in4, out, NULL), ZI_ERR_UNSUPPORTED);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&a2);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&s);
    zi_tensor_destroy (&i64);
}

//  Gemm -------------------------------------------------------------------------

static void
check_gemm (int64_t M, int64_t N, int64_t K, bool ta, bool tb, float alpha,
            float beta, int crank, const int64_t *cshape)
{
    zt_node_t t;
    zt_node_init (&t, "Gemm", crank >= 0 ? 3 : 2, 1);
    zt_int (&t, "transA", ta);
    zt_int (&t, "transB", tb);
    zt_float (&t, "alpha", alpha);
    zt_float (&t, "beta", beta);
    zi_tensor_t *a = ta ? RT (K, M) : RT (M, K);
    zi_tensor_t *b = tb ? RT (N, K) : RT (K, N);
    zi_tensor_t *c = crank >= 0 ? zt_lcg_tensor (&s_seed, crank, cshape) : NULL;
    zi_tensor_t *in[] = {a, b, c}, *out[1];
    int rc = zt_run (&t, in, out, NULL);
    cr_assert_eq (rc, 0, "Gemm failed: %s", t.err);
    EXPECT_SHAPE (out[0], M, N);
    double *want = zt_dalloc (M * N);
    const float *A = a->data, *B = b->data, *C = c ? c->data : NULL;
    int64_t c0 = crank == 2 ? cshape[0] : 1;
    int64_t c1 = crank >= 1 ? cshape[crank - 1] : 1;
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) {
                s += (double) (ta ? A[k * M + i] : A[i * K + k])
                     * (tb ? B[j * K + k] : B[k * N + j]);
            }
            double cv = C ? C[(c0 == 1 ? 0 : i) * c1 + (c1 == 1 ? 0 : j)] : 0;
            want[i * N + j] = alpha * s + beta * cv;
        }
    }
    expect_close (out[0]->data, want, M * N, "Gemm");
    free (want);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&c);
}

Test (ops_nn, gemm_transposes_and_scalars)
{
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            check_gemm (5, 7, 3, ta, tb, 1.0f, 1.0f, -1, NULL);
            check_gemm (5, 7, 3, ta, tb, 0.5f, -2.0f, 2, (int64_t[]){5, 7});
            check_gemm (1, 7, 9, ta, tb, 1.0f, 1.0f, 1, (int64_t[]){7});
            check_gemm (6, 1, 9, ta, tb, 2.0f, 0.5f, 1, (int64_t[]){1});
        }
    }
}

Test (ops_nn, gemm_c_broadcasts)
{
    check_gemm (4, 6, 5, false, true, 1.0f, 1.0f, 0, NULL);           //  scalar
    check_gemm (4, 6, 5, false, true, 1.0f, 3.0f, 1, (int64_t[]){6});
    check_gemm (4, 6, 5, false, false, 1.0f, 1.0f, 2, (int64_t[]){1, 6});
    check_gemm (4, 6, 5, true, false, 1.0f, 1.5f, 2, (int64_t[]){4, 1});
    check_gemm (4, 6, 5, false, false, 1.0f, 1.0f, 2, (int64_t[]){1, 1});
    check_gemm (4, 6, 5, false, false, 1.0f, 0.0f, 2, (int64_t[]){4, 6});
    check_gemm (1, 6, 5, false, false, 1.0f, 1.0f, 2, (int64_t[]){1, 6});
    check_gemm (4, 6, 0, false, false, 1.0f, 1.0f, 1, (int64_t[]){6});  //  K 0
    check_gemm (0, 6, 3, false, false, 1.0f, 1.0f, 1, (int64_t[]){6});  //  M 0
}

Test (ops_nn, gemm_rejects_bad_inputs)
{
    zt_node_t t;
    zi_tensor_t *out[1];
    zt_node_init (&t, "Gemm", 3, 1);
    zi_tensor_t *a = RT (4, 5), *b = RT (5, 6), *c = RT (3, 6);
    zi_tensor_t *in[] = {a, b, c};
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_SHAPE, "%s", t.err);
    zt_free_outs (out, 1);
    zi_tensor_t *a3 = RT (1, 4, 5), *in2[] = {a3, b, NULL};
    cr_assert_eq (zt_run (&t, in2, out, NULL), ZI_ERR_SHAPE);
    zt_free_outs (out, 1);
    zt_node_init (&t, "Gemm", 2, 1);
    zt_float (&t, "transA", 1.0f);  //  wrong attribute type
    zi_tensor_t *in3[] = {a, b};
    cr_assert_eq (zt_run (&t, in3, out, NULL), ZI_ERR_MALFORMED);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&a3);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&c);
}

//  Fused GEMM entry points ---------------------------------------------------------

Test (ops_nn, gemm_bias_act_every_activation)
{
    zi_nn_act_t acts[] = {
        {ZI_NN_ACT_NONE, 0, 0}, {ZI_NN_ACT_RELU, 0, 0},
        {ZI_NN_ACT_LEAKY_RELU, 0.1f, 0}, {ZI_NN_ACT_SIGMOID, 0, 0},
        {ZI_NN_ACT_TANH, 0, 0}, {ZI_NN_ACT_GELU, 0, 0},
        {ZI_NN_ACT_CLIP, -0.5f, 0.5f},
    };
    int64_t dims[][3] = {{4, 6, 5}, {1, 6, 5}, {4, 1, 5}, {3, 4, 0}};
    for (size_t di = 0; di < 4; di++) {
        int64_t M = dims[di][0], N = dims[di][1], K = dims[di][2];
        for (int tb = 0; tb < 2; tb++) {
            for (size_t ai = 0; ai < sizeof acts / sizeof acts[0]; ai++) {
                zi_tensor_t *a = RT (M, K), *b = tb ? RT (N, K) : RT (K, N);
                zi_tensor_t *bias = RT (N);
                float *y = (float *) malloc ((size_t) (M * N) * sizeof *y);
                int rc = zi_nn_gemm_bias_act (y, a->data, b->data, tb,
                                              ai % 2 ? bias->data : NULL, M, N,
                                              K, acts[ai]);
                cr_assert_eq (rc, 0);
                double *want = zt_dalloc (M * N);
                const float *A = a->data, *B = b->data, *bb = bias->data;
                for (int64_t i = 0; i < M; i++) {
                    for (int64_t j = 0; j < N; j++) {
                        double s = ai % 2 ? bb[j] : 0.0;
                        for (int64_t k = 0; k < K; k++) {
                            s += (double) A[i * K + k]
                                 * (tb ? B[j * K + k] : B[k * N + j]);
                        }
                        want[i * N + j] = zt_ref_act (s, acts[ai]);
                    }
                }
                expect_close (y, want, M * N, "gemm_bias_act");
                free (want);
                free (y);
                zi_tensor_destroy (&a);
                zi_tensor_destroy (&b);
                zi_tensor_destroy (&bias);
            }
        }
    }
    cr_assert_eq (zi_nn_gemm_bias_act (NULL, NULL, NULL, false, NULL, -1, 1,
                                       1, acts[0]),
                  ZI_ERR_INVALID);
}

Test (ops_nn, matmul_bias_act_fuses_add_and_relu)
{
    zi_tensor_t *a = RT (2, 3, 4), *b = RT (2, 4, 5), *bias = RT (1, 5);
    zt_node_t t;
    zt_node_init (&t, "MatMul", 2, 1);
    zi_tensor_t *in[] = {a, b};
    zi_tensor_t *y = (zi_tensor_t *) calloc (1, sizeof *y), *out[] = {y};
    zi_kctx_t ctx = {.node = &t.node, .n_in = 2,
                     .in = (const zi_tensor_t *const *) in, .n_out = 1,
                     .out = out, .err = t.err, .errlen = sizeof t.err};
    cr_assert_eq (zi_op_find ("MatMul", "")->infer (&ctx), 0);
    y->data = malloc (y->nbytes);
    y->owns_data = true;
    cr_assert (zi_nn_matmul_bias_fusable (y->rank, y->ne, bias));
    zi_tensor_t *bad = RT (3, 5);
    cr_assert (!zi_nn_matmul_bias_fusable (y->rank, y->ne, bad));
    zi_nn_act_t relu = {ZI_NN_ACT_RELU, 0, 0};
    cr_assert_eq (zi_nn_matmul_bias_act (&ctx, bias, relu), 0, "%s", t.err);
    int64_t n;
    double *want = ref_matmul (a, b, &n);
    for (int64_t i = 0; i < n; i++) {
        want[i] = zt_ref_act (want[i] + ((float *) bias->data)[i % 5], relu);
    }
    expect_close (y->data, want, n, "MatMul+Add+Relu");
    free (want);
    zi_tensor_destroy (&y);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&bias);
    zi_tensor_destroy (&bad);
}

//  Run a MatMul (bias may be NULL) or Gemm node on `pool` with a pack cache
//  slot (NULL = none); returns the output.
static zi_tensor_t *
run_gemm_node (zt_node_t *t, zi_tensor_t **in, const zi_tensor_t *bias, zi_pool_t *pool,
               zi_gemm_pack_t **cache)
{
    zi_tensor_t *y = (zi_tensor_t *) calloc (1, sizeof *y), *out[] = {y};
    cr_assert_not_null (y);
    for (int i = 0; i < t->node.n_in; i++) {
        t->ins[i] = i;
    }
    t->outs[0] = ZT_MAXIO;
    zi_kctx_t ctx = {.node = &t->node, .n_in = t->node.n_in,
                     .in = (const zi_tensor_t *const *) in, .n_out = 1, .out = out,
                     .nthreads = zi_pool_size (pool), .pool = pool, .err = t->err,
                     .errlen = sizeof t->err};
    cr_assert_eq (zi_op_find (t->node.op_type, "")->infer (&ctx), 0, "%s", t->err);
    y->data = malloc (y->nbytes);
    y->owns_data = true;
    memset (y->data, 0xff, y->nbytes);
    zi_nn_act_t relu = {ZI_NN_ACT_RELU, 0, 0};
    int rc = strcmp (t->node.op_type, "Gemm") == 0
                 ? zi_nn_gemm_act_cached (&ctx, relu, cache)
                 : zi_nn_matmul_bias_act_cached (&ctx, bias, relu, cache);
    cr_assert_eq (rc, 0, "%s", t->err);
    return y;
}

//  MatMul (folded and batched) and Gemm split over 2 and 3 threads, with
//  and without a cached pack, on both GEMM paths: the same bytes as one
//  thread, and close to the reference.
Test (ops_nn, matmul_gemm_on_a_pool_match_one_thread)
{
    zi_pool_t *pools[] = {NULL, zi_pool_new (2), zi_pool_new (3)};
    zi_tensor_t *cases[][3] = {
        {RT (3, 40, 50), RT (50, 70), RT (70)},     //  folded, bias row
        {RT (6, 9, 20), RT (6, 20, 33), NULL},      //  batched
        {RT (64, 300), RT (300, 17), RT (1)},       //  scalar bias
    };
    for (int avx = 0; avx <= 1; avx++) {
        zi_gemm_set_avx512 (avx);
        for (size_t c = 0; c < 4; c++) {
            bool gemm = c == 3;
            zt_node_t t;
            zt_node_init (&t, gemm ? "Gemm" : "MatMul", gemm ? 3 : 2, 1);
            zi_tensor_t *gin[3] = {NULL};
            if (gemm) {
                zt_int (&t, "transB", 1);
                gin[0] = RT (33, 100);
                gin[1] = RT (70, 100);
                gin[2] = RT (70);
            }
            zi_tensor_t **in = gemm ? gin : cases[c];
            const zi_tensor_t *bias = gemm ? NULL : cases[c][2];
            zi_tensor_t *y1 = run_gemm_node (&t, in, bias, NULL, NULL);
            if (!gemm) {
                int64_t n;
                double *want = ref_matmul (in[0], in[1], &n);
                int64_t L = y1->ne[y1->rank - 1];
                for (int64_t i = 0; i < n; i++) {
                    double b = !bias ? 0 : zi_tensor_count (bias) == 1
                                               ? ((float *) bias->data)[0]
                                               : ((float *) bias->data)[i % L];
                    want[i] = zt_ref_act (want[i] + b, (zi_nn_act_t){ZI_NN_ACT_RELU, 0, 0});
                }
                expect_close (y1->data, want, n, "MatMul on a pool");
                free (want);
            }
            for (int p = 0; p < 3; p++) {
                zi_gemm_pack_t *pack = NULL;
                for (int rep = 0; rep < 2; rep++) {
                    zi_tensor_t *yp = run_gemm_node (&t, in, bias, pools[p], &pack);
                    cr_assert_eq (memcmp (yp->data, y1->data, y1->nbytes), 0,
                                  "case %zu, avx %d, %d threads, run %d: differs", c, avx,
                                  zi_pool_size (pools[p]), rep);
                    zi_tensor_destroy (&yp);
                }
                zi_gemm_pack_destroy (&pack);
            }
            zi_tensor_destroy (&y1);
            for (int i = 0; i < 3; i++) {
                zi_tensor_destroy (&gin[i]);
            }
        }
    }
    zi_gemm_set_avx512 (-1);
    for (size_t c = 0; c < 3; c++) {
        for (int i = 0; i < 3; i++) {
            zi_tensor_destroy (&cases[c][i]);
        }
    }
    zi_pool_destroy (&pools[1]);
    zi_pool_destroy (&pools[2]);
}

Test (ops_nn, act_from_node)
{
    zt_node_t t;
    zi_nn_act_t act;
    zt_node_init (&t, "LeakyRelu", 1, 1);
    zt_float (&t, "alpha", 0.2f);
    cr_assert_eq (zi_nn_act_from_node (&t.node, &act), 0);
    cr_assert_eq (act.kind, ZI_NN_ACT_LEAKY_RELU);
    cr_assert_float_eq (act.alpha, 0.2f, 1e-7);
    zt_node_init (&t, "Relu", 1, 1);
    cr_assert_eq (zi_nn_act_from_node (&t.node, &act), 0);
    cr_assert_eq (act.kind, ZI_NN_ACT_RELU);
    zt_node_init (&t, "Clip", 3, 1);     //  opset 11: bounds are inputs
    cr_assert_eq (zi_nn_act_from_node (&t.node, &act), ZI_ERR_UNSUPPORTED);
    zt_node_init (&t, "Add", 2, 1);
    cr_assert_eq (zi_nn_act_from_node (&t.node, &act), ZI_ERR_UNSUPPORTED);
}

//  Conv -------------------------------------------------------------------------

typedef struct {
    int nd;
    int64_t N, C, M, group;
    int64_t in[3], k[3];
    int64_t s[3], d[3], pads[6];    //  0 = default / absent
    const char *auto_pad;
    bool bias;
    int64_t out[3];                 //  expected output spatial dims
    int64_t pb[3];                  //  expected begin pads
    zi_nn_act_t act;
} tconv_t;

static void
check_conv (const tconv_t *c)
{
    int nd = c->nd;
    int64_t xs[5] = {c->N, c->C}, ws[5] = {c->M, c->C / c->group};
    for (int i = 0; i < nd; i++) {
        xs[2 + i] = c->in[i];
        ws[2 + i] = c->k[i];
    }
    zi_tensor_t *x = zt_lcg_tensor (&s_seed, nd + 2, xs), *w = zt_lcg_tensor (&s_seed, nd + 2, ws);
    zi_tensor_t *b = c->bias ? zt_lcg_tensor (&s_seed, 1, &c->M) : NULL;
    zt_node_t t;
    zt_node_init (&t, "Conv", c->bias ? 3 : 2, 1);
    if (c->group != 1) {
        zt_int (&t, "group", c->group);
    }
    if (c->s[0]) {
        zt_ints (&t, "strides", nd, c->s);
    }
    if (c->d[0]) {
        zt_ints (&t, "dilations", nd, c->d);
    }
    if (c->pads[0] || c->pads[1] || c->pads[nd]) {
        zt_ints (&t, "pads", 2 * nd, c->pads);
    }
    if (c->auto_pad) {
        zt_str (&t, "auto_pad", c->auto_pad);
    }
    zt_ints (&t, "kernel_shape", nd, c->k);
    zi_tensor_t *in[] = {x, w, b}, *out[1];
    int rc;
    if (c->act.kind == ZI_NN_ACT_NONE) {
        rc = zt_run (&t, in, out, NULL);
    }
    else {
        out[0] = (zi_tensor_t *) calloc (1, sizeof (zi_tensor_t));
        zi_kctx_t ctx = {.node = &t.node, .n_in = t.node.n_in,
                         .in = (const zi_tensor_t *const *) in, .n_out = 1,
                         .out = out, .err = t.err, .errlen = sizeof t.err};
        rc = zi_nn_conv_infer (&ctx);
        cr_assert_eq (rc, 0, "%s", t.err);
        out[0]->data = malloc (out[0]->nbytes + 1);
        out[0]->owns_data = true;
        rc = zi_nn_conv_act (&ctx, c->act);
    }
    cr_assert_eq (rc, 0, "Conv failed: %s", t.err);
    int64_t ys[5] = {c->N, c->M};
    for (int i = 0; i < nd; i++) {
        ys[2 + i] = c->out[i];
    }
    zt_expect_shape (out[0], nd + 2, ys);
    zt_geom_t g = zt_geom (nd, c->in, c->k, c->s[0] ? c->s : NULL,
                        c->d[0] ? c->d : NULL, c->pb, c->out);
    double *want = zt_ref_conv (x, w, b, c->group, &g, NULL);
    int64_t n = zi_tensor_count (out[0]);
    for (int64_t i = 0; i < n; i++) {
        want[i] = zt_ref_act (want[i], c->act);
    }
    expect_close (out[0]->data, want, n, "Conv");
    free (want);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&w);
    zi_tensor_destroy (&b);
}

Test (ops_nn, conv_onnx_basic_with_padding)
{
    //  ONNX backend test "basic_conv_with_padding": x = 0..24, W = ones.
    float xv[25], wv[9];
    for (int i = 0; i < 25; i++) {
        xv[i] = (float) i;
    }
    for (int i = 0; i < 9; i++) {
        wv[i] = 1.0f;
    }
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, INTS (1, 1, 5, 5), xv);
    zi_tensor_t *w = zt_tensor_of (ZI_DT_F32, INTS (1, 1, 3, 3), wv);
    zt_node_t t;
    zt_node_init (&t, "Conv", 2, 1);
    zt_ints (&t, "kernel_shape", INTS (3, 3));
    zt_ints (&t, "pads", INTS (1, 1, 1, 1));
    zi_tensor_t *in[] = {x, w}, *out[1];
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    static const double want[] = {
        12, 21, 27, 33, 24, 33, 54, 63, 72, 51, 63, 99, 108, 117, 81,
        93, 144, 153, 162, 111, 72, 111, 117, 123, 84,
    };
    EXPECT_SHAPE (out[0], 1, 1, 5, 5);
    expect_close (out[0]->data, want, 25, "basic_conv_with_padding");
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&w);
}

Test (ops_nn, conv_2d_general)
{
    tconv_t cases[] = {
        //  plain 3x3, no pads
        {.nd = 2, .N = 2, .C = 3, .M = 4, .group = 1, .in = {7, 8},
         .k = {3, 3}, .bias = true, .out = {5, 6}},
        //  strides, asymmetric pads
        {.nd = 2, .N = 1, .C = 2, .M = 3, .group = 1, .in = {7, 5},
         .k = {3, 3}, .s = {2, 2}, .pads = {1, 0, 1, 0}, .out = {4, 2},
         .pb = {1, 0}},
        //  dilations + pads + stride 3 in one dim
        {.nd = 2, .N = 1, .C = 3, .M = 2, .group = 1, .in = {9, 10},
         .k = {3, 2}, .s = {1, 3}, .d = {2, 3}, .pads = {2, 1, 2, 1},
         .bias = true, .out = {9, 3}, .pb = {2, 1}},
        //  grouped
        {.nd = 2, .N = 2, .C = 4, .M = 6, .group = 2, .in = {6, 6},
         .k = {3, 3}, .pads = {1, 1, 1, 1}, .bias = true, .out = {6, 6},
         .pb = {1, 1}},
        //  pointwise 1x1 (one GEMM, no im2col), grouped
        {.nd = 2, .N = 2, .C = 6, .M = 4, .group = 2, .in = {5, 7},
         .k = {1, 1}, .bias = true, .out = {5, 7}},
        //  1x1 with stride 2 (not the pointwise path)
        {.nd = 2, .N = 1, .C = 3, .M = 5, .group = 1, .in = {6, 7},
         .k = {1, 1}, .s = {2, 2}, .out = {3, 4}},
        //  kernel larger than input, saved by pads
        {.nd = 2, .N = 1, .C = 1, .M = 2, .group = 1, .in = {2, 2},
         .k = {4, 4}, .pads = {2, 2, 2, 2}, .out = {3, 3}, .pb = {2, 2}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_conv (&cases[i]);
    }
}

Test (ops_nn, conv_depthwise_direct_path)
{
    tconv_t cases[] = {
        {.nd = 2, .N = 2, .C = 5, .M = 5, .group = 5, .in = {8, 9},
         .k = {3, 3}, .pads = {1, 1, 1, 1}, .bias = true, .out = {8, 9},
         .pb = {1, 1}},
        {.nd = 2, .N = 1, .C = 4, .M = 4, .group = 4, .in = {9, 9},
         .k = {3, 3}, .s = {2, 2}, .pads = {1, 1, 1, 1}, .out = {5, 5},
         .pb = {1, 1}},
        //  channel multiplier 2 and dilation
        {.nd = 2, .N = 1, .C = 3, .M = 6, .group = 3, .in = {10, 8},
         .k = {3, 3}, .d = {2, 2}, .pads = {2, 2, 2, 2}, .bias = true,
         .out = {10, 8}, .pb = {2, 2}},
        //  single input channel, many filters
        {.nd = 2, .N = 1, .C = 1, .M = 8, .group = 1, .in = {6, 6},
         .k = {3, 3}, .s = {1, 2}, .out = {4, 2}},
        //  depthwise 1-D with stride 3
        {.nd = 1, .N = 2, .C = 3, .M = 3, .group = 3, .in = {17}, .k = {4},
         .s = {3}, .pads = {2, 1}, .out = {6}, .pb = {2}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_conv (&cases[i]);
    }
}

Test (ops_nn, conv_1d_and_3d)
{
    tconv_t cases[] = {
        {.nd = 1, .N = 2, .C = 3, .M = 4, .group = 1, .in = {11}, .k = {3},
         .s = {2}, .pads = {1, 1}, .bias = true, .out = {6}, .pb = {1}},
        {.nd = 3, .N = 1, .C = 2, .M = 3, .group = 1, .in = {5, 6, 4},
         .k = {3, 3, 2}, .pads = {1, 1, 0, 1, 1, 1}, .bias = true,
         .out = {5, 6, 4}, .pb = {1, 1, 0}},
        {.nd = 3, .N = 1, .C = 4, .M = 4, .group = 2, .in = {4, 5, 6},
         .k = {2, 2, 2}, .s = {2, 1, 2}, .out = {2, 4, 3}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_conv (&cases[i]);
    }
}

Test (ops_nn, conv_auto_pad)
{
    tconv_t cases[] = {
        //  SAME_UPPER, in 7, k 3, s 2: out 4, total pad 2 -> 1 / 1
        {.nd = 2, .N = 1, .C = 2, .M = 3, .group = 1, .in = {7, 7},
         .k = {3, 3}, .s = {2, 2}, .auto_pad = "SAME_UPPER", .out = {4, 4},
         .pb = {1, 1}},
        //  in 6, k 4, s 2 -> out 3, total 2 -> 1 / 1; in 5, k 2 s 1 -> 5,
        //  total 1: SAME_UPPER puts it at the end (pb 0), LOWER at the start
        {.nd = 2, .N = 1, .C = 1, .M = 2, .group = 1, .in = {6, 5},
         .k = {4, 2}, .s = {2, 1}, .auto_pad = "SAME_UPPER", .out = {3, 5},
         .pb = {1, 0}},
        {.nd = 2, .N = 1, .C = 1, .M = 2, .group = 1, .in = {6, 5},
         .k = {4, 2}, .s = {2, 1}, .auto_pad = "SAME_LOWER", .out = {3, 5},
         .pb = {1, 1}},
        //  VALID ignores pads
        {.nd = 2, .N = 1, .C = 2, .M = 2, .group = 1, .in = {7, 6},
         .k = {3, 2}, .s = {2, 2}, .pads = {1, 1, 1, 1},
         .auto_pad = "VALID", .out = {3, 3}},
        //  depthwise under SAME_LOWER
        {.nd = 2, .N = 1, .C = 3, .M = 3, .group = 3, .in = {5, 5},
         .k = {2, 2}, .auto_pad = "SAME_LOWER", .out = {5, 5},
         .pb = {1, 1}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_conv (&cases[i]);
    }
}

Test (ops_nn, conv_large_image_is_tiled)
{
    //  Kc = 64*9 = 576, oW = 64: a tile holds ~56 of the 64 output rows, so
    //  the im2col buffer is filled twice per image.
    tconv_t c = {.nd = 2, .N = 1, .C = 64, .M = 8, .group = 1,
                 .in = {64, 64}, .k = {3, 3}, .pads = {1, 1, 1, 1},
                 .bias = true, .out = {64, 64}, .pb = {1, 1}};
    check_conv (&c);
}

Test (ops_nn, conv_fused_activation)
{
    zi_nn_act_t relu = {ZI_NN_ACT_RELU, 0, 0};
    zi_nn_act_t clip = {ZI_NN_ACT_CLIP, 0.0f, 0.3f};
    zi_nn_act_t sig = {ZI_NN_ACT_SIGMOID, 0, 0};
    tconv_t cases[] = {
        {.nd = 2, .N = 2, .C = 3, .M = 4, .group = 1, .in = {7, 8},
         .k = {3, 3}, .pads = {1, 1, 1, 1}, .bias = true, .out = {7, 8},
         .pb = {1, 1}, .act = relu},
        {.nd = 2, .N = 1, .C = 4, .M = 4, .group = 4, .in = {6, 6},
         .k = {3, 3}, .bias = true, .out = {4, 4}, .act = clip},
        {.nd = 2, .N = 1, .C = 4, .M = 6, .group = 1, .in = {3, 5},
         .k = {1, 1}, .bias = true, .out = {3, 5}, .act = sig},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_conv (&cases[i]);
    }
}

static int
conv_expect_error (int nd, const int64_t *xs, const int64_t *ws,
                   void (*setup) (zt_node_t *))
{
    zi_tensor_t *x = zt_lcg_tensor (&s_seed, nd + 2, xs), *w = zt_lcg_tensor (&s_seed, nd + 2, ws);
    zt_node_t t;
    zt_node_init (&t, "Conv", 2, 1);
    if (setup) {
        setup (&t);
    }
    zi_tensor_t *in[] = {x, w}, *out[1];
    int rc = zt_run (&t, in, out, NULL);
    cr_assert (rc < 0, "expected an error");
    cr_assert (strstr (t.err, "Conv"), "message '%s' names the op", t.err);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&w);
    return rc;
}

static void
setup_bad_autopad (zt_node_t *t)
{
    zt_str (t, "auto_pad", "SAME");
}

static void
setup_group3 (zt_node_t *t)
{
    zt_int (t, "group", 3);
}

static void
setup_group0 (zt_node_t *t)
{
    zt_int (t, "group", 0);
}

static void
setup_kernel_mismatch (zt_node_t *t)
{
    zt_ints (t, "kernel_shape", INTS (2, 2));
}

static void
setup_neg_pads (zt_node_t *t)
{
    zt_ints (t, "pads", INTS (-1, 0, 0, 0));
}

static void
setup_zero_stride (zt_node_t *t)
{
    zt_ints (t, "strides", INTS (0, 1));
}

static void
setup_short_strides (zt_node_t *t)
{
    zt_ints (t, "strides", INTS (1));
}

Test (ops_nn, conv_rejects_bad_models)
{
    int64_t x[] = {1, 4, 5, 5}, w[] = {2, 4, 3, 3};
    cr_assert_eq (conv_expect_error (2, x, w, setup_bad_autopad),
                  ZI_ERR_MALFORMED);
    cr_assert_eq (conv_expect_error (2, x, (int64_t[]){2, 3, 3, 3}, NULL),
                  ZI_ERR_SHAPE);                    //  channels differ
    cr_assert_eq (conv_expect_error (2, x, w, setup_group3), ZI_ERR_SHAPE);
    cr_assert_eq (conv_expect_error (2, x, w, setup_group0),
                  ZI_ERR_MALFORMED);
    cr_assert_eq (conv_expect_error (2, x, w, setup_kernel_mismatch),
                  ZI_ERR_SHAPE);
    cr_assert_eq (conv_expect_error (2, x, w, setup_neg_pads),
                  ZI_ERR_MALFORMED);
    cr_assert_eq (conv_expect_error (2, x, w, setup_zero_stride),
                  ZI_ERR_MALFORMED);
    cr_assert_eq (conv_expect_error (2, x, w, setup_short_strides),
                  ZI_ERR_SHAPE);
    //  window larger than the input
    cr_assert_eq (conv_expect_error (2, x, (int64_t[]){2, 4, 6, 3}, NULL),
                  ZI_ERR_SHAPE);
    //  W rank differs from X rank
    zi_tensor_t *xx = zt_lcg_tensor (&s_seed, 4, x), *ww = RT (2, 4, 3);
    zt_node_t t;
    zt_node_init (&t, "Conv", 2, 1);
    zi_tensor_t *in[] = {xx, ww}, *out[1];
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_SHAPE);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&xx);
    zi_tensor_destroy (&ww);
}

//  ConvTranspose -----------------------------------------------------------------

//  x (N,C,in) -> y (N,M,out): every x element scattered through w
//  (C, M/group, k) at out position i*s - pb + k*d.
static double *
ref_convt (const zi_tensor_t *x, const zi_tensor_t *w, const zi_tensor_t *b,
           int64_t group, const zt_geom_t *g)
{
    int64_t N = x->ne[0], C = x->ne[1], Mg = w->ne[1], M = Mg * group;
    int64_t Cg = C / group;
    int64_t isz = g->in[0] * g->in[1] * g->in[2];
    int64_t osz = g->out[0] * g->out[1] * g->out[2];
    int64_t ksz = g->k[0] * g->k[1] * g->k[2];
    double *y = zt_dalloc (N * M * osz);
    const float *X = x->data, *W = w->data, *B = b ? b->data : NULL;
    for (int64_t xi = 0; xi < N * C * isz; xi++) {
        int64_t n = xi / (C * isz), c = (xi / isz) % C, i0, i1, i2;
        zt_split3 (xi % isz, g->in, &i0, &i1, &i2);
        double xv = X[xi];
        int64_t grp = c / Cg;
        for (int64_t t = 0; t < Mg * ksz; t++) {
            int64_t mg = t / ksz, k0, k1, k2;
            zt_split3 (t % ksz, g->k, &k0, &k1, &k2);
            int64_t o0 = i0 * g->s[0] - g->pb[0] + k0 * g->d[0];
            int64_t o1 = i1 * g->s[1] - g->pb[1] + k1 * g->d[1];
            int64_t o2 = i2 * g->s[2] - g->pb[2] + k2 * g->d[2];
            if (o0 < 0 || o0 >= g->out[0] || o1 < 0 || o1 >= g->out[1]
                || o2 < 0 || o2 >= g->out[2]) {
                continue;
            }
            int64_t m = grp * Mg + mg;
            y[(n * M + m) * osz + (o0 * g->out[1] + o1) * g->out[2] + o2]
                += xv * W[(c * Mg + mg) * ksz + t % ksz];
        }
    }
    for (int64_t n = 0; n < N; n++) {
        for (int64_t m = 0; m < M && B; m++) {
            for (int64_t i = 0; i < osz; i++) {
                y[(n * M + m) * osz + i] += B[m];
            }
        }
    }
    return y;
}

typedef struct {
    int nd;
    int64_t N, C, Mg, group;
    int64_t in[3], k[3];
    int64_t s[3], d[3], pads[6], opad[3], oshape[3];
    const char *auto_pad;
    bool bias;
    int64_t out[3], pb[3];
} tconvt_t;

static void
check_convt (const tconvt_t *c)
{
    int nd = c->nd;
    int64_t xs[5] = {c->N, c->C}, ws[5] = {c->C, c->Mg};
    int64_t M = c->Mg * c->group;
    for (int i = 0; i < nd; i++) {
        xs[2 + i] = c->in[i];
        ws[2 + i] = c->k[i];
    }
    zi_tensor_t *x = zt_lcg_tensor (&s_seed, nd + 2, xs), *w = zt_lcg_tensor (&s_seed, nd + 2, ws);
    zi_tensor_t *b = c->bias ? zt_lcg_tensor (&s_seed, 1, &M) : NULL;
    zt_node_t t;
    zt_node_init (&t, "ConvTranspose", c->bias ? 3 : 2, 1);
    if (c->group != 1) {
        zt_int (&t, "group", c->group);
    }
    if (c->s[0]) {
        zt_ints (&t, "strides", nd, c->s);
    }
    if (c->d[0]) {
        zt_ints (&t, "dilations", nd, c->d);
    }
    if (c->pads[0] || c->pads[1] || c->pads[nd]) {
        zt_ints (&t, "pads", 2 * nd, c->pads);
    }
    if (c->opad[0] || c->opad[1]) {
        zt_ints (&t, "output_padding", nd, c->opad);
    }
    if (c->oshape[0]) {
        zt_ints (&t, "output_shape", nd, c->oshape);
    }
    if (c->auto_pad) {
        zt_str (&t, "auto_pad", c->auto_pad);
    }
    zi_tensor_t *in[] = {x, w, b}, *out[1];
    int rc = zt_run (&t, in, out, NULL);
    cr_assert_eq (rc, 0, "ConvTranspose failed: %s", t.err);
    int64_t ys[5] = {c->N, M};
    for (int i = 0; i < nd; i++) {
        ys[2 + i] = c->out[i];
    }
    zt_expect_shape (out[0], nd + 2, ys);
    //  The reference's "in" is X's grid and "out" Y's.
    zt_geom_t g = zt_geom (nd, c->in, c->k, c->s[0] ? c->s : NULL,
                        c->d[0] ? c->d : NULL, c->pb, c->out);
    double *want = ref_convt (x, w, b, c->group, &g);
    expect_close (out[0]->data, want, zi_tensor_count (out[0]),
                  "ConvTranspose");
    free (want);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&w);
    zi_tensor_destroy (&b);
}

Test (ops_nn, convtranspose_onnx_basic)
{
    //  ONNX "convtranspose": x (1,1,3,3) = 0..8, W (1,2,3,3) ones -> 5x5.
    float xv[9], wv[18];
    for (int i = 0; i < 9; i++) {
        xv[i] = (float) i;
    }
    for (int i = 0; i < 18; i++) {
        wv[i] = 1.0f;
    }
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, INTS (1, 1, 3, 3), xv);
    zi_tensor_t *w = zt_tensor_of (ZI_DT_F32, INTS (1, 2, 3, 3), wv);
    zt_node_t t;
    zt_node_init (&t, "ConvTranspose", 2, 1);
    zi_tensor_t *in[] = {x, w}, *out[1];
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    EXPECT_SHAPE (out[0], 1, 2, 5, 5);
    static const double plane[] = {
        0, 1, 3, 3, 2, 3, 8, 15, 12, 7, 9, 21, 36, 27, 15,
        9, 20, 33, 24, 13, 6, 13, 21, 15, 8,
    };
    double want[50];
    for (int i = 0; i < 50; i++) {
        want[i] = plane[i % 25];
    }
    expect_close (out[0]->data, want, 50, "convtranspose");
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&w);
}

Test (ops_nn, convtranspose_attributes)
{
    tconvt_t cases[] = {
        //  strides + pads + bias: out = 2*(4-1) + 3 - 1 - 1 = 7
        {.nd = 2, .N = 2, .C = 3, .Mg = 2, .group = 1, .in = {4, 4},
         .k = {3, 3}, .s = {2, 2}, .pads = {1, 1, 1, 1}, .bias = true,
         .out = {7, 7}, .pb = {1, 1}},
        //  output_padding: ONNX convtranspose_pad (s 3,2; op 1,1) -> 10x8
        {.nd = 2, .N = 1, .C = 1, .Mg = 2, .group = 1, .in = {3, 3},
         .k = {3, 3}, .s = {3, 2}, .opad = {1, 1}, .out = {10, 8}},
        //  output_shape bigger than the full output (total pad clamped 0)
        {.nd = 2, .N = 1, .C = 1, .Mg = 2, .group = 1, .in = {3, 3},
         .k = {3, 3}, .s = {3, 2}, .oshape = {10, 8}, .out = {10, 8}},
        //  output_shape that crops: full 9, want 7 -> pads 1 / 1
        {.nd = 2, .N = 1, .C = 2, .Mg = 1, .group = 1, .in = {4, 4},
         .k = {3, 3}, .s = {2, 2}, .oshape = {7, 8}, .out = {7, 8},
         .pb = {1, 1}},
        //  dilations
        {.nd = 2, .N = 1, .C = 1, .Mg = 1, .group = 1, .in = {3, 3},
         .k = {2, 2}, .d = {2, 2}, .out = {5, 5}},
        //  groups
        {.nd = 2, .N = 1, .C = 4, .Mg = 3, .group = 2, .in = {3, 4},
         .k = {2, 3}, .s = {2, 1}, .bias = true, .out = {6, 6}},
        //  SAME_UPPER: out = in * s, total 1 cropped at the end
        {.nd = 2, .N = 1, .C = 1, .Mg = 2, .group = 1, .in = {3, 3},
         .k = {3, 3}, .s = {2, 2}, .auto_pad = "SAME_UPPER", .out = {6, 6}},
        {.nd = 2, .N = 1, .C = 1, .Mg = 2, .group = 1, .in = {3, 3},
         .k = {3, 3}, .s = {2, 2}, .auto_pad = "SAME_LOWER", .out = {6, 6},
         .pb = {1, 1}},
        //  1-D and 3-D
        {.nd = 1, .N = 1, .C = 2, .Mg = 3, .group = 1, .in = {5}, .k = {3},
         .s = {2}, .pads = {1, 0}, .bias = true, .out = {10}, .pb = {1}},
        {.nd = 3, .N = 1, .C = 2, .Mg = 2, .group = 1, .in = {3, 4, 3},
         .k = {3, 3, 2}, .s = {1, 2, 1}, .out = {5, 9, 4}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_convt (&cases[i]);
    }
}

Test (ops_nn, convtranspose_rejects_bad_models)
{
    zt_node_t t;
    zi_tensor_t *out[1];
    zi_tensor_t *x = RT (1, 2, 3, 3), *w = RT (3, 2, 3, 3);
    zt_node_init (&t, "ConvTranspose", 2, 1);
    zi_tensor_t *in[] = {x, w};
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_SHAPE);
    zt_free_outs (out, 1);
    zi_tensor_t *w2 = RT (2, 2, 3, 3), *in2[] = {x, w2};
    zt_node_init (&t, "ConvTranspose", 2, 1);
    zt_ints (&t, "pads", INTS (4, 4, 4, 4));   //  crops more than exists
    cr_assert_eq (zt_run (&t, in2, out, NULL), ZI_ERR_SHAPE, "%s", t.err);
    zt_free_outs (out, 1);
    zt_node_init (&t, "ConvTranspose", 2, 1);
    zt_ints (&t, "output_shape", INTS (5, 5, 5));
    cr_assert_eq (zt_run (&t, in2, out, NULL), ZI_ERR_SHAPE, "%s", t.err);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&w);
    zi_tensor_destroy (&w2);
}

//  Pools --------------------------------------------------------------------------

typedef struct {
    const char *op;
    int nd;
    int64_t N, C, in[3], k[3];
    int64_t s[3], d[3], pads[6];
    const char *auto_pad;
    int ceil, include_pad;
    int64_t out[3], pb[3], pe[3];
} tpool_t;

//  Reference pool with explicit geometry. Average divisor: taps inside the
//  input, or with count_include_pad those inside [-pb, in + pe).
static double *
ref_pool (const zi_tensor_t *x, const tpool_t *p, bool max, int64_t *argmax)
{
    int64_t in[3], k[3], s[3], d[3], pb[3], pe[3], out[3];
    for (int i = 0; i < 3; i++) {
        int j = i - (3 - p->nd);
        in[i] = j >= 0 ? p->in[j] : 1;
        k[i] = j >= 0 ? p->k[j] : 1;
        s[i] = j >= 0 && p->s[0] ? p->s[j] : 1;
        d[i] = j >= 0 && p->d[0] ? p->d[j] : 1;
        pb[i] = j >= 0 ? p->pb[j] : 0;
        pe[i] = j >= 0 ? p->pe[j] : 0;
        out[i] = j >= 0 ? p->out[j] : 1;
    }
    int64_t planes = p->N * p->C, isz = in[0] * in[1] * in[2];
    int64_t osz = out[0] * out[1] * out[2];
    double *y = zt_dalloc (planes * osz);
    const float *X = x->data;
    int64_t ksz = k[0] * k[1] * k[2];
    for (int64_t oi = 0; oi < planes * osz; oi++) {
        int64_t pl = oi / osz, o0, o1, o2;
        zt_split3 (oi % osz, out, &o0, &o1, &o2);
        double acc = max ? -INFINITY : 0.0;
        int64_t cnt = 0, cntpad = 0, best = -1;
        for (int64_t t = 0; t < ksz; t++) {
            int64_t k0, k1, k2;
            zt_split3 (t, k, &k0, &k1, &k2);
            int64_t i0 = o0 * s[0] - pb[0] + k0 * d[0];
            int64_t i1 = o1 * s[1] - pb[1] + k1 * d[1];
            int64_t i2 = o2 * s[2] - pb[2] + k2 * d[2];
            if (i0 >= -pb[0] && i0 < in[0] + pe[0] && i1 >= -pb[1]
                && i1 < in[1] + pe[1] && i2 >= -pb[2] && i2 < in[2] + pe[2]) {
                cntpad++;
            }
            if (i0 < 0 || i0 >= in[0] || i1 < 0 || i1 >= in[1] || i2 < 0
                || i2 >= in[2]) {
                continue;
            }
            int64_t idx = (i0 * in[1] + i1) * in[2] + i2;
            double v = X[pl * isz + idx];
            cnt++;
            if (max) {
                if (v > acc) {
                    acc = v;
                    best = pl * isz + idx;
                }
            }
            else {
                acc += v;
            }
        }
        if (max) {
            y[oi] = acc;
            if (argmax) {
                argmax[oi] = best;
            }
        }
        else {
            int64_t div = p->include_pad ? cntpad : cnt;
            y[oi] = div ? acc / (double) div : 0.0;
        }
    }
    return y;
}

static void
check_pool (const tpool_t *p)
{
    bool max = strcmp (p->op, "MaxPool") == 0;
    int nd = p->nd;
    int64_t xs[5] = {p->N, p->C};
    for (int i = 0; i < nd; i++) {
        xs[2 + i] = p->in[i];
    }
    zi_tensor_t *x = zt_lcg_tensor (&s_seed, nd + 2, xs);
    zt_node_t t;
    zt_node_init (&t, p->op, 1, max ? 2 : 1);
    zt_ints (&t, "kernel_shape", nd, p->k);
    if (p->s[0]) {
        zt_ints (&t, "strides", nd, p->s);
    }
    if (p->d[0]) {
        zt_ints (&t, "dilations", nd, p->d);
    }
    if (p->pads[0] || p->pads[1] || p->pads[nd] || p->pads[nd + 1]) {
        zt_ints (&t, "pads", 2 * nd, p->pads);
    }
    if (p->auto_pad) {
        zt_str (&t, "auto_pad", p->auto_pad);
    }
    if (p->ceil) {
        zt_int (&t, "ceil_mode", 1);
    }
    if (p->include_pad) {
        zt_int (&t, "count_include_pad", 1);
    }
    zi_tensor_t *in[] = {x}, *out[2];
    bool want_out[] = {true, max};
    int rc = zt_run (&t, in, out, want_out);
    cr_assert_eq (rc, 0, "%s failed: %s", p->op, t.err);
    int64_t ys[5] = {p->N, p->C};
    for (int i = 0; i < nd; i++) {
        ys[2 + i] = p->out[i];
    }
    zt_expect_shape (out[0], nd + 2, ys);
    int64_t n = zi_tensor_count (out[0]);
    int64_t *argmax = (int64_t *) calloc ((size_t) n + 1, sizeof *argmax);
    double *want = ref_pool (x, p, max, argmax);
    expect_close (out[0]->data, want, n, p->op);
    if (max) {
        zt_expect_shape (out[1], nd + 2, ys);
        cr_assert_eq (out[1]->dtype, ZI_DT_I64);
        for (int64_t i = 0; i < n; i++) {
            cr_assert_eq (((int64_t *) out[1]->data)[i], argmax[i],
                          "Indices[%lld]", (long long) i);
        }
    }
    free (argmax);
    free (want);
    zt_free_outs (out, max ? 2 : 1);
    zi_tensor_destroy (&x);
}

Test (ops_nn, maxpool_onnx_ceil)
{
    //  ONNX maxpool_2d_ceil: 1..16 in 4x4, k 3, s 2, ceil -> [[11,12],[15,16]]
    float xv[16];
    for (int i = 0; i < 16; i++) {
        xv[i] = (float) (i + 1);
    }
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, INTS (1, 1, 4, 4), xv);
    zt_node_t t;
    zt_node_init (&t, "MaxPool", 1, 1);
    zt_ints (&t, "kernel_shape", INTS (3, 3));
    zt_ints (&t, "strides", INTS (2, 2));
    zt_int (&t, "ceil_mode", 1);
    zi_tensor_t *in[] = {x}, *out[1];
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    EXPECT_SHAPE (out[0], 1, 1, 2, 2);
    double want[] = {11, 12, 15, 16};
    expect_close (out[0]->data, want, 4, "maxpool_2d_ceil");
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
}

Test (ops_nn, pools_geometry)
{
    tpool_t cases[] = {
        {"MaxPool", 2, 2, 3, {6, 7}, {2, 2}, .out = {5, 6}},
        {"MaxPool", 2, 1, 2, {7, 7}, {3, 3}, .s = {2, 2},
         .pads = {1, 1, 1, 1}, .out = {4, 4}, .pb = {1, 1}, .pe = {1, 1}},
        {"MaxPool", 2, 1, 2, {9, 8}, {2, 3}, .d = {2, 2},
         .pads = {1, 0, 1, 2}, .out = {9, 6}, .pb = {1, 0}, .pe = {1, 2}},
        {"MaxPool", 2, 1, 1, {5, 6}, {3, 3}, .s = {2, 2}, .ceil = 1,
         .out = {2, 3}},
        //  ceil with pads: in 5, k 2, s 2, pads 1/1 gives ceil(5/2)+1 = 4
        //  windows, but the 4th would start at 6 - 1 = 5, inside the end
        //  pad, so it is dropped
        {"MaxPool", 1, 1, 2, {5}, {2}, .s = {2}, .pads = {1, 1}, .ceil = 1,
         .out = {3}, .pb = {1}, .pe = {1}},
        {"AveragePool", 1, 1, 2, {5}, {2}, .s = {2}, .pads = {1, 1},
         .ceil = 1, .include_pad = 1, .out = {3}, .pb = {1}, .pe = {1}},
        {"MaxPool", 2, 1, 2, {5, 5}, {3, 3}, .s = {2, 2},
         .auto_pad = "SAME_UPPER", .out = {3, 3}, .pb = {1, 1},
         .pe = {1, 1}},
        {"MaxPool", 2, 1, 2, {6, 6}, {3, 3}, .s = {2, 2},
         .auto_pad = "SAME_UPPER", .out = {3, 3}, .pb = {0, 0},
         .pe = {1, 1}},
        {"MaxPool", 2, 1, 2, {6, 6}, {3, 3}, .s = {2, 2},
         .auto_pad = "SAME_LOWER", .out = {3, 3}, .pb = {1, 1},
         .pe = {0, 0}},
        {"MaxPool", 1, 2, 3, {10}, {3}, .s = {3}, .out = {3}},
        {"MaxPool", 3, 1, 2, {4, 5, 6}, {2, 2, 3}, .s = {2, 1, 2},
         .out = {2, 4, 2}},
        {"AveragePool", 2, 2, 3, {6, 7}, {3, 3}, .out = {4, 5}},
        {"AveragePool", 2, 1, 2, {7, 7}, {3, 3}, .s = {2, 2},
         .pads = {1, 1, 1, 1}, .out = {4, 4}, .pb = {1, 1}, .pe = {1, 1}},
        {"AveragePool", 2, 1, 2, {7, 7}, {3, 3}, .s = {2, 2},
         .pads = {1, 1, 1, 1}, .include_pad = 1, .out = {4, 4},
         .pb = {1, 1}, .pe = {1, 1}},
        {"AveragePool", 2, 1, 2, {5, 6}, {3, 3}, .s = {2, 2}, .ceil = 1,
         .out = {2, 3}},
        //  ceil + count_include_pad: the divisor stops at in + pad_end
        {"AveragePool", 2, 1, 1, {6, 6}, {3, 3}, .s = {2, 2},
         .pads = {1, 1, 1, 1}, .ceil = 1, .include_pad = 1, .out = {4, 4},
         .pb = {1, 1}, .pe = {1, 1}},
        {"AveragePool", 2, 1, 2, {5, 5}, {2, 2}, .auto_pad = "SAME_LOWER",
         .out = {5, 5}, .pb = {1, 1}, .pe = {0, 0}},
        {"AveragePool", 2, 1, 2, {5, 5}, {2, 2}, .auto_pad = "SAME_UPPER",
         .include_pad = 1, .out = {5, 5}, .pe = {1, 1}},
        {"AveragePool", 1, 1, 2, {9}, {4}, .s = {2}, .out = {3}},
        {"AveragePool", 3, 1, 2, {4, 4, 4}, {2, 2, 2}, .s = {2, 2, 2},
         .out = {2, 2, 2}},
        {"AveragePool", 2, 1, 2, {8, 8}, {2, 2}, .d = {2, 3},
         .pads = {1, 1, 1, 1}, .out = {8, 7}, .pb = {1, 1}, .pe = {1, 1}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_pool (&cases[i]);
    }
}

Test (ops_nn, maxpool_indices_storage_order)
{
    //  ONNX maxpool_with_argmax_2d_precomputed_strides: 5x5 = 1..25,
    //  k 2, s 2; column-major indices [[6,16],[8,18]].
    float xv[25];
    for (int i = 0; i < 25; i++) {
        xv[i] = (float) (i + 1);
    }
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, INTS (1, 1, 5, 5), xv);
    zt_node_t t;
    zt_node_init (&t, "MaxPool", 1, 2);
    zt_ints (&t, "kernel_shape", INTS (2, 2));
    zt_ints (&t, "strides", INTS (2, 2));
    zt_int (&t, "storage_order", 1);
    zi_tensor_t *in[] = {x}, *out[2];
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    double want[] = {7, 9, 17, 19};
    expect_close (out[0]->data, want, 4, "values");
    int64_t wi[] = {6, 16, 8, 18};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq (((int64_t *) out[1]->data)[i], wi[i]);
    }
    zt_free_outs (out, 2);
    zt_node_init (&t, "MaxPool", 1, 2);
    zt_ints (&t, "kernel_shape", INTS (2, 2));
    zt_int (&t, "storage_order", 2);
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_MALFORMED);
    zt_free_outs (out, 2);
    zi_tensor_destroy (&x);
}

Test (ops_nn, maxpool_uint8)
{
    uint8_t xv[] = {1, 200, 3, 4, 5, 6, 7, 8, 250};
    zi_tensor_t *x = zi_tensor_new (ZI_DT_U8, 4, (int64_t[]){1, 1, 3, 3});
    memcpy (x->data, xv, 9);
    zt_node_t t;
    zt_node_init (&t, "MaxPool", 1, 1);
    zt_ints (&t, "kernel_shape", INTS (2, 2));
    zi_tensor_t *in[] = {x}, *out[1];
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    cr_assert_eq (out[0]->dtype, ZI_DT_U8);
    uint8_t want[] = {200, 200, 8, 250};
    cr_assert_arr_eq (out[0]->data, want, 4);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
}

Test (ops_nn, pools_reject_bad_models)
{
    zi_tensor_t *x = RT (1, 1, 4, 4), *in[] = {x}, *out[2];
    zt_node_t t;
    zt_node_init (&t, "MaxPool", 1, 1);      //  no kernel_shape
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_MALFORMED);
    zt_free_outs (out, 1);
    zt_node_init (&t, "AveragePool", 1, 1);
    zt_ints (&t, "kernel_shape", INTS (5, 5));   //  larger than the input
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_SHAPE, "%s", t.err);
    zt_free_outs (out, 1);
    zt_node_init (&t, "AveragePool", 1, 1);
    zt_ints (&t, "kernel_shape", INTS (2, 2, 2));  //  wrong count
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_SHAPE, "%s", t.err);
    zt_free_outs (out, 1);
    zi_tensor_t *x2 = RT (4, 4), *in2[] = {x2};
    zt_node_init (&t, "MaxPool", 1, 1);
    zt_ints (&t, "kernel_shape", INTS (2));
    cr_assert_eq (zt_run (&t, in2, out, NULL), ZI_ERR_UNSUPPORTED);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&x2);
}

Test (ops_nn, global_pools)
{
    zi_tensor_t *x = RT (2, 3, 4, 5), *in[] = {x}, *out[1];
    const float *X = x->data;
    for (int mx = 0; mx < 2; mx++) {
        zt_node_t t;
        zt_node_init (&t, mx ? "GlobalMaxPool" : "GlobalAveragePool", 1, 1);
        cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
        EXPECT_SHAPE (out[0], 2, 3, 1, 1);
        double want[6];
        for (int p = 0; p < 6; p++) {
            double acc = mx ? -INFINITY : 0;
            for (int i = 0; i < 20; i++) {
                double v = X[p * 20 + i];
                acc = mx ? (v > acc ? v : acc) : acc + v;
            }
            want[p] = mx ? acc : acc / 20;
        }
        expect_close (out[0]->data, want, 6, t.node.op_type);
        zt_free_outs (out, 1);
    }
    zi_tensor_t *x3 = RT (1, 2, 7), *in3[] = {x3};
    zt_node_t t;
    zt_node_init (&t, "GlobalAveragePool", 1, 1);
    cr_assert_eq (zt_run (&t, in3, out, NULL), 0);
    EXPECT_SHAPE (out[0], 1, 2, 1);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&x3);
}

Test (ops_nn, lrn)
{
    zi_tensor_t *x = RT (2, 7, 3, 4), *in[] = {x}, *out[1];
    zt_node_t t;
    zt_node_init (&t, "LRN", 1, 1);
    zt_int (&t, "size", 4);
    zt_float (&t, "alpha", 0.02f);
    zt_float (&t, "beta", 0.6f);
    zt_float (&t, "bias", 1.5f);
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    const float *X = x->data;
    double *want = zt_dalloc (2 * 7 * 12);
    for (int n = 0; n < 2; n++) {
        for (int c = 0; c < 7; c++) {
            for (int i = 0; i < 12; i++) {
                //  window [c - floor((size-1)/2), c + ceil((size-1)/2)]
                double sq = 0;
                for (int cc = c - 1; cc <= c + 2; cc++) {
                    if (cc >= 0 && cc < 7) {
                        double v = X[(n * 7 + cc) * 12 + i];
                        sq += v * v;
                    }
                }
                double v = X[(n * 7 + c) * 12 + i];
                want[(n * 7 + c) * 12 + i]
                    = v / pow (1.5 + 0.02 / 4 * sq, 0.6);
            }
        }
    }
    expect_close (out[0]->data, want, 2 * 7 * 12, "LRN");
    free (want);
    zt_free_outs (out, 1);
    zt_node_init (&t, "LRN", 1, 1);  //  size is required
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_MALFORMED);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
}

//  Normalisations -------------------------------------------------------------------

Test (ops_nn, batchnorm_inference)
{
    zi_tensor_t *x = RT (2, 3, 4, 5), *sc = RT (3), *b = RT (3), *mu = RT (3);
    zi_tensor_t *var = RT (3);
    for (int i = 0; i < 3; i++) {
        ((float *) var->data)[i] = fabsf (((float *) var->data)[i]) + 0.1f;
    }
    zt_node_t t;
    zt_node_init (&t, "BatchNormalization", 5, 1);
    zt_float (&t, "epsilon", 1e-2f);
    zi_tensor_t *in[] = {x, sc, b, mu, var}, *out[1];
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    EXPECT_SHAPE (out[0], 2, 3, 4, 5);
    double want[120];
    const float *X = x->data, *S = sc->data, *B = b->data, *M = mu->data;
    const float *V = var->data;
    for (int i = 0; i < 120; i++) {
        int c = (i / 20) % 3;
        want[i] = (X[i] - M[c]) / sqrt (V[c] + 1e-2) * S[c] + B[c];
    }
    expect_close (out[0]->data, want, 120, "BatchNormalization");
    zt_free_outs (out, 1);
    //  rank-2 input (N, C)
    zi_tensor_t *x2 = RT (4, 3), *in2[] = {x2, sc, b, mu, var};
    cr_assert_eq (zt_run (&t, in2, out, NULL), 0, "%s", t.err);
    zt_free_outs (out, 1);
    //  training_mode is rejected at load time, as are training outputs
    zt_node_init (&t, "BatchNormalization", 5, 1);
    zt_int (&t, "training_mode", 1);
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_UNSUPPORTED);
    cr_assert (strstr (t.err, "training_mode"), "%s", t.err);
    zt_free_outs (out, 1);
    zt_node_init (&t, "BatchNormalization", 5, 3);
    zi_tensor_t *out3[3];
    cr_assert_eq (zt_run (&t, in, out3, NULL), ZI_ERR_UNSUPPORTED);
    zt_free_outs (out3, 3);
    //  statistics of the wrong length
    zi_tensor_t *bad = RT (4), *in4[] = {x, sc, b, bad, var};
    zt_node_init (&t, "BatchNormalization", 5, 1);
    cr_assert_eq (zt_run (&t, in4, out, NULL), ZI_ERR_SHAPE);
    zt_free_outs (out, 1);
    zi_tensor_t *tensors[] = {x, sc, b, mu, var, x2, bad};
    for (int i = 0; i < 7; i++) {
        zi_tensor_destroy (&tensors[i]);
    }
}

Test (ops_nn, instancenorm)
{
    zi_tensor_t *x = RT (2, 3, 4, 5), *sc = RT (3), *b = RT (3);
    zt_node_t t;
    zt_node_init (&t, "InstanceNormalization", 3, 1);
    zt_float (&t, "epsilon", 1e-3f);
    zi_tensor_t *in[] = {x, sc, b}, *out[1];
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    double want[120];
    const float *X = x->data, *S = sc->data, *B = b->data;
    for (int p = 0; p < 6; p++) {
        double m = 0, v = 0;
        for (int i = 0; i < 20; i++) {
            m += X[p * 20 + i];
        }
        m /= 20;
        for (int i = 0; i < 20; i++) {
            v += (X[p * 20 + i] - m) * (X[p * 20 + i] - m);
        }
        v /= 20;
        for (int i = 0; i < 20; i++) {
            want[p * 20 + i]
                = (X[p * 20 + i] - m) / sqrt (v + 1e-3) * S[p % 3] + B[p % 3];
        }
    }
    expect_close (out[0]->data, want, 120, "InstanceNormalization");
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&sc);
    zi_tensor_destroy (&b);
}

static void
check_layernorm (int rank, const int64_t *shape, int64_t axis, int srank,
                 const int64_t *sshape, bool bias, bool stats)
{
    zi_tensor_t *x = zt_lcg_tensor (&s_seed, rank, shape);
    zi_tensor_t *sc = zt_lcg_tensor (&s_seed, srank, sshape);
    zi_tensor_t *b = bias ? zt_lcg_tensor (&s_seed, srank, sshape) : NULL;
    zt_node_t t;
    zt_node_init (&t, "LayerNormalization", bias ? 3 : 2, stats ? 3 : 1);
    zt_int (&t, "axis", axis);
    zt_float (&t, "epsilon", 1e-3f);
    zi_tensor_t *in[] = {x, sc, b}, *out[3];
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    int ax = (int) (axis < 0 ? axis + rank : axis);
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < rank; i++) {
        *(i < ax ? &outer : &inner) *= shape[i];
    }
    //  scale / bias broadcast over the normalised dims
    double *S = zt_dalloc (inner), *B = zt_dalloc (inner);
    for (int64_t i = 0; i < inner; i++) {
        int64_t rem = i, si = 0, stride = 1;
        for (int d = rank - 1; d >= ax; d--) {
            int64_t idx = rem % shape[d];
            rem /= shape[d];
            int sd = d - (rank - srank);
            if (sd >= 0) {
                si += (sshape[sd] == 1 ? 0 : idx) * stride;
                stride *= sshape[sd];
            }
        }
        S[i] = ((float *) sc->data)[si];
        B[i] = b ? ((float *) b->data)[si] : 0.0;
    }
    double *want = zt_dalloc (outer * inner), *wm = zt_dalloc (outer);
    double *wi = zt_dalloc (outer);
    const float *X = x->data;
    for (int64_t o = 0; o < outer; o++) {
        double m = 0, v = 0;
        for (int64_t i = 0; i < inner; i++) {
            m += X[o * inner + i];
        }
        m /= (double) inner;
        for (int64_t i = 0; i < inner; i++) {
            v += (X[o * inner + i] - m) * (X[o * inner + i] - m);
        }
        v /= (double) inner;
        wm[o] = m;
        wi[o] = 1.0 / sqrt (v + 1e-3);
        for (int64_t i = 0; i < inner; i++) {
            want[o * inner + i] = (X[o * inner + i] - m) * wi[o] * S[i] + B[i];
        }
    }
    expect_close (out[0]->data, want, outer * inner, "LayerNormalization");
    if (stats) {
        int64_t ss[8];
        for (int i = 0; i < rank; i++) {
            ss[i] = i < ax ? shape[i] : 1;
        }
        zt_expect_shape (out[1], rank, ss);
        zt_expect_shape (out[2], rank, ss);
        expect_close (out[1]->data, wm, outer, "Mean");
        expect_close (out[2]->data, wi, outer, "InvStdDev");
    }
    free (S);
    free (B);
    free (want);
    free (wm);
    free (wi);
    zt_free_outs (out, stats ? 3 : 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&sc);
    zi_tensor_destroy (&b);
}

Test (ops_nn, layernorm_axes_and_stats)
{
    check_layernorm (INTS (2, 3, 4), -1, INTS (4), true, true);
    check_layernorm (INTS (2, 3, 4), 1, INTS (3, 4), true, true);
    check_layernorm (INTS (2, 3, 4), 0, INTS (2, 3, 4), false, true);
    check_layernorm (INTS (2, 3, 4), -2, INTS (3, 4), false, false);
    check_layernorm (INTS (3, 5, 2, 6), 2, INTS (1, 6), true, true);  //  bcast
    check_layernorm (INTS (4, 64), -1, INTS (64), true, false);
}

Test (ops_nn, layernorm_rejects_bad_inputs)
{
    zi_tensor_t *x = RT (2, 3, 4), *sc = RT (3), *out[1];
    zi_tensor_t *in[] = {x, sc};
    zt_node_t t;
    zt_node_init (&t, "LayerNormalization", 2, 1);
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_SHAPE);  //  4 != 3
    zt_free_outs (out, 1);
    zt_node_init (&t, "LayerNormalization", 2, 1);
    zt_int (&t, "axis", 3);
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_INVALID);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&sc);
}

//  Softmax ---------------------------------------------------------------------------

//  Softmax over dims [a0, a1) of x, the rest independent (a1 = a0 + 1 for
//  opset 13, a1 = rank for the older 2-D coercion).
static double *
ref_softmax (const zi_tensor_t *x, int a0, int a1, bool logsm)
{
    int64_t outer = 1, n = 1, inner = 1;
    for (int i = 0; i < x->rank; i++) {
        *(i < a0 ? &outer : i < a1 ? &n : &inner) *= x->ne[i];
    }
    double *y = zt_dalloc (outer * n * inner);
    const float *X = x->data;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < inner; i++) {
            double mx = -INFINITY, s = 0;
            for (int64_t j = 0; j < n; j++) {
                double v = X[(o * n + j) * inner + i];
                mx = v > mx ? v : mx;
            }
            for (int64_t j = 0; j < n; j++) {
                s += exp (X[(o * n + j) * inner + i] - mx);
            }
            for (int64_t j = 0; j < n; j++) {
                double v = X[(o * n + j) * inner + i] - mx;
                y[(o * n + j) * inner + i] = logsm ? v - log (s) : exp (v) / s;
            }
        }
    }
    return y;
}

static void
check_softmax (const char *op, int opset, bool has_axis, int64_t axis,
               zi_tensor_t *x, float scale)
{
    float *X = x->data;
    for (int64_t i = 0; i < zi_tensor_count (x); i++) {
        X[i] *= scale;
    }
    zt_node_t t;
    zt_node_init (&t, op, 1, 1);
    zt_int (&t, "__opset", opset);
    if (has_axis) {
        zt_int (&t, "axis", axis);
    }
    zi_tensor_t *in[] = {x}, *out[1];
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    int64_t a = has_axis ? axis : opset < 13 ? 1 : -1;
    int a0 = (int) (a < 0 ? a + x->rank : a);
    int a1 = opset < 13 ? x->rank : a0 + 1;
    double *want = ref_softmax (x, a0, a1, strcmp (op, "LogSoftmax") == 0);
    expect_close (out[0]->data, want, zi_tensor_count (x), op);
    free (want);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
}

Test (ops_nn, softmax_opset13_axes)
{
    const char *ops[] = {"Softmax", "LogSoftmax"};
    for (int o = 0; o < 2; o++) {
        check_softmax (ops[o], 13, false, 0, RT (3, 4, 5), 1.0f);
        check_softmax (ops[o], 13, true, 0, RT (3, 4, 5), 1.0f);
        check_softmax (ops[o], 13, true, 1, RT (3, 4, 5), 1.0f);
        check_softmax (ops[o], 13, true, -2, RT (3, 4, 5), 1.0f);
        check_softmax (ops[o], 18, true, 2, RT (3, 4, 5), 1.0f);
        check_softmax (ops[o], 13, false, 0, RT (2, 7), 1000.0f);  //  large
        check_softmax (ops[o], 13, false, 0, RT (6), 1.0f);
    }
}

Test (ops_nn, softmax_opset11_coerces_to_2d)
{
    const char *ops[] = {"Softmax", "LogSoftmax"};
    for (int o = 0; o < 2; o++) {
        check_softmax (ops[o], 11, false, 0, RT (3, 4, 5), 1.0f);
        check_softmax (ops[o], 11, true, 0, RT (3, 4, 5), 1.0f);
        check_softmax (ops[o], 11, true, 2, RT (3, 4, 5), 1.0f);
        check_softmax (ops[o], 9, true, -1, RT (3, 4, 5), 1.0f);
    }
}

Test (ops_nn, softmax_scalar_and_errors)
{
    zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 0, NULL), *in[] = {x}, *out[1];
    ((float *) x->data)[0] = 3.0f;
    zt_node_t t;
    zt_node_init (&t, "Softmax", 1, 1);
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    cr_assert_float_eq (((float *) out[0]->data)[0], 1.0f, 1e-6);
    zt_free_outs (out, 1);
    zi_tensor_t *x2 = RT (3, 4), *in2[] = {x2};
    zt_node_init (&t, "Softmax", 1, 1);
    zt_int (&t, "axis", 2);
    cr_assert_eq (zt_run (&t, in2, out, NULL), ZI_ERR_INVALID);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&x2);
}

Test (ops_nn, hardmax_first_maximum)
{
    //  ties: the first maximum wins; opset 13 axis 0 vs opset 11 coercion
    float xv[] = {1, 3, 3, 0, 2, 5, 5, 1};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, INTS (2, 4), xv), *in[] = {x}, *out[1];
    zt_node_t t;
    zt_node_init (&t, "Hardmax", 1, 1);
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    double want[] = {0, 1, 0, 0, 0, 1, 0, 0};
    expect_close (out[0]->data, want, 8, "Hardmax axis -1");
    zt_free_outs (out, 1);
    zt_node_init (&t, "Hardmax", 1, 1);
    zt_int (&t, "axis", 0);
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    double want0[] = {0, 0, 0, 0, 1, 1, 1, 1};
    expect_close (out[0]->data, want0, 8, "Hardmax axis 0");
    zt_free_outs (out, 1);
    zt_node_init (&t, "Hardmax", 1, 1);
    zt_int (&t, "__opset", 11);
    zt_int (&t, "axis", 0);     //  whole tensor is one row
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    double wantc[] = {0, 0, 0, 0, 0, 1, 0, 0};
    expect_close (out[0]->data, wantc, 8, "Hardmax opset 11");
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
}

//  PRelu -------------------------------------------------------------------------------

static void
check_prelu (zi_tensor_t *x, zi_tensor_t *slope)
{
    zt_node_t t;
    zt_node_init (&t, "PRelu", 2, 1);
    zi_tensor_t *in[] = {x, slope}, *out[1];
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
    int64_t n = zi_tensor_count (x);
    double *want = zt_dalloc (n);
    const float *X = x->data, *S = slope->data;
    for (int64_t i = 0; i < n; i++) {
        //  slope index by broadcasting i's coordinates
        int64_t rem = i, si = 0, stride = 1;
        for (int d = x->rank - 1; d >= 0; d--) {
            int64_t idx = rem % x->ne[d];
            rem /= x->ne[d];
            int sd = d - (x->rank - slope->rank);
            if (sd >= 0) {
                si += (slope->ne[sd] == 1 ? 0 : idx) * stride;
                stride *= slope->ne[sd];
            }
        }
        want[i] = X[i] < 0 ? (double) X[i] * S[si] : X[i];
    }
    expect_close (out[0]->data, want, n, "PRelu");
    free (want);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&slope);
}

Test (ops_nn, prelu_broadcasts)
{
    check_prelu (RT (3, 4, 5), RT (3, 4, 5));
    check_prelu (RT (3, 4, 5), RT (5));
    check_prelu (RT (2, 3, 4, 5), RT (3, 1, 1));
    check_prelu (RT (2, 3, 4, 5), RT (1));
    check_prelu (RT (2, 3, 4, 5), RT (3, 1, 5));
    zi_tensor_t *x = RT (2, 3), *s = RT (4), *in[] = {x, s}, *out[1];
    zt_node_t t;
    zt_node_init (&t, "PRelu", 2, 1);
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_SHAPE);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&s);
}

Test (ops_nn, registry_has_every_op)
{
    const char *ops[] = {
        "MatMul", "Gemm", "Conv", "ConvTranspose", "BatchNormalization",
        "InstanceNormalization", "LayerNormalization", "MaxPool",
        "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LRN",
        "Softmax", "LogSoftmax", "Hardmax", "PRelu",
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        cr_assert_not_null (zi_op_find (ops[i], ""), "%s", ops[i]);
    }
}

Test (ops_nn, vectorised_exp_matches_libm)
{
    //  n = 1003: full vectors, a fold into double at 1024 is not reached,
    //  and a 3-element tail; then a long row that crosses the fold.
    int64_t sizes[] = {1, 3, 4, 1003, 5000};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int64_t n = sizes[si];
        float *x = (float *) malloc ((size_t) n * sizeof *x);
        float *sh = (float *) malloc ((size_t) n * sizeof *sh);
        float *y = (float *) malloc ((size_t) n * sizeof *y);
        double *want = zt_dalloc (n), sum = 0.0;
        for (int64_t i = 0; i < n; i++) {
            x[i] = -80.0f + 160.0f * (float) i / (float) n;
            sh[i] = zt_lcg_frand (&s_seed);
            //  the float argument x - shift is what the kernel exponentiates
            want[i] = exp ((double) (x[i] - 1.5f));
            sum += want[i];
        }
        double got = zi_nn_exp_sum (y, x, NULL, 1.5f, n);
        expect_close_tol (y, want, n, 1e-6, 0.0, "exp");
        cr_assert (fabs (got - sum) <= 1e-6 * sum, "sum %g vs %g", got, sum);
        for (int64_t i = 0; i < n; i++) {
            want[i] = exp ((double) (x[i] - sh[i]));
        }
        zi_nn_exp_sum (y, x, sh, 0.0f, n);
        expect_close_tol (y, want, n, 1e-6, 0.0, "exp, vector shift");
        free (x);
        free (sh);
        free (y);
        free (want);
    }
    float x[] = {-1000.0f, 1000.0f, NAN, 0.0f, -INFINITY}, y[5];
    zi_nn_exp_sum (y, x, NULL, 0.0f, 5);
    cr_assert (y[0] >= 0.0f && y[0] < 1e-37f, "exp(-1000) = %g", y[0]);
    cr_assert (y[1] > 1e38f, "exp(1000) = %g", y[1]);
    cr_assert (isnan (y[2]));
    cr_assert_float_eq (y[3], 1.0f, 1e-7);
    cr_assert (y[4] >= 0.0f && y[4] < 1e-37f, "exp(-inf) = %g", y[4]);
}

Test (ops_nn, absurd_attributes_fail_cleanly)
{
    //  Sizes from an untrusted model: every one must end in an error (or a
    //  well-defined empty result), never in a huge allocation or a crash.
    const int64_t big = INT32_MAX;
    zi_tensor_t *x = RT (1, 2, 4, 4), *w = RT (2, 2, 3, 3), *out[2];
    zi_tensor_t *in[] = {x, w};
    zt_node_t t;
    zt_node_init (&t, "Conv", 2, 1);
    zt_ints (&t, "pads", INTS (big, big, big, big));
    cr_assert_lt (zt_run (&t, in, out, NULL), 0);
    zt_free_outs (out, 1);
    zt_node_init (&t, "Conv", 2, 1);
    zt_ints (&t, "dilations", INTS (big, 1));
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_SHAPE);
    zt_free_outs (out, 1);
    zt_node_init (&t, "Conv", 2, 1);
    zt_ints (&t, "strides", INTS (big, big));
    cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);   //  1x1 out
    EXPECT_SHAPE (out[0], 1, 2, 1, 1);
    zt_free_outs (out, 1);
    zt_node_init (&t, "Conv", 2, 1);
    zt_ints (&t, "pads", INTS ((int64_t) 1 << 40, 0, 0, 0));
    cr_assert_eq (zt_run (&t, in, out, NULL), ZI_ERR_MALFORMED);
    zt_free_outs (out, 1);
    zi_tensor_t *wt = RT (2, 1, 3, 3), *int_[] = {x, wt};
    zt_node_init (&t, "ConvTranspose", 2, 1);
    zt_ints (&t, "strides", INTS (big, big));
    cr_assert_lt (zt_run (&t, int_, out, NULL), 0);
    zt_free_outs (out, 1);
    zt_node_init (&t, "ConvTranspose", 2, 1);
    zt_ints (&t, "output_shape", INTS (big, big));
    cr_assert_lt (zt_run (&t, int_, out, NULL), 0);
    zt_free_outs (out, 1);
    zi_tensor_t *xp[] = {x};
    zt_node_init (&t, "MaxPool", 1, 2);
    zt_ints (&t, "kernel_shape", INTS (2, 2));
    zt_ints (&t, "pads", INTS (big, big, big, big));  //  2^64 elements
    cr_assert_lt (zt_run (&t, xp, out, NULL), 0);
    zt_free_outs (out, 2);
    //  an empty batch with huge pads: an empty output, nothing to compute
    zi_tensor_t *x0 = RT (0, 2, 4, 4), *xp0[] = {x0};
    zt_node_init (&t, "AveragePool", 1, 1);
    zt_ints (&t, "kernel_shape", INTS (2, 2));
    zt_ints (&t, "pads", INTS (0, big, 0, big));
    cr_assert_eq (zt_run (&t, xp0, out, NULL), 0, "%s", t.err);
    cr_assert_eq (zi_tensor_count (out[0]), 0);
    zt_free_outs (out, 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&w);
    zi_tensor_destroy (&wt);
    zi_tensor_destroy (&x0);
}
