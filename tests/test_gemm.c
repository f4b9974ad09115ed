/*  test_gemm.c - zi_gemm against a naive double-precision reference, on
    awkward shapes, both paths (AVX-512 and portable OpenBLAS), 1-3 pool
    threads; results must be bit-identical across thread counts and with or
    without a cached pack.
    // ctest-timeout: 300

    Tolerance: a float dot product of length K summed in any order is within
    gamma_K = K u / (1 - K u) (u = 2^-24) of the exact value, relative to
    sum |a_k b_k|; the epilogue adds a few roundings, and the activations'
    float implementations (exp, erf, tanh) about 1e-6 relative. The test
    allows (K + 4) u (|alpha| sum |a_k b_k| + |beta c|) + 2e-6 |y| + 1e-30.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zi_gemm.h"
#include "zi_pool.h"

#define S_U (1.0 / 16777216.0)

//  Deterministic values in [-1, 1) with some exact zeros, for ReLU's sake.
static void
s_fill (float *x, int64_t n, unsigned seed)
{
    unsigned s = seed * 2654435761u + 1;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (s >> 8) % 17 == 0 ? 0.0f : (float) ((double) (s >> 8) / 8388608.0 - 1.0);
    }
}

static double
s_act_ref (double v, zi_nn_act_t act)
{
    switch (act.kind) {
        case ZI_NN_ACT_RELU: return v > 0 ? v : 0;
        case ZI_NN_ACT_LEAKY_RELU: return v > 0 ? v : act.alpha * v;
        case ZI_NN_ACT_SIGMOID: return 1.0 / (1.0 + exp (-v));
        case ZI_NN_ACT_TANH: return tanh (v);
        case ZI_NN_ACT_GELU: return 0.5 * v * (1.0 + erf (v / sqrt (2.0)));
        case ZI_NN_ACT_CLIP: return v < act.alpha ? act.alpha : v > act.beta ? act.beta : v;
        default: return v;
    }
}

//  Check g's Y against the reference computed from g's operands.
static void
s_check_ref (const zi_gemm_t *g, const char *what)
{
    for (int64_t i = 0; i < g->M; i++) {
        for (int64_t j = 0; j < g->N; j++) {
            double acc = 0, mag = 0;
            for (int64_t k = 0; k < g->K; k++) {
                double a = g->ta ? g->A[k * g->lda + i] : g->A[i * g->lda + k];
                double b = g->tb ? g->B[j * g->ldb + k] : g->B[k * g->ldb + j];
                acc += a * b;
                mag += fabs (a * b);
            }
            double c = g->C ? g->C[i * g->c_rs + j * g->c_cs] : 0.0;
            double pre = g->alpha * acc + g->beta * c;
            double ref = s_act_ref (pre, g->act);
            double got = g->Y[i * g->ldy + j];
            double tol = (double) (g->K + 4) * S_U * (fabs (g->alpha) * mag + fabs (g->beta * c))
                         + 2e-6 * fabs (ref) + 1e-30;
            if (!(fabs (got - ref) <= tol)) {
                cr_assert_fail ("%s: M=%lld N=%lld K=%lld ta=%d tb=%d act=%d: Y[%lld,%lld] = %.9g, "
                                "reference %.9g (tolerance %.3g)",
                                what, (long long) g->M, (long long) g->N, (long long) g->K, g->ta,
                                g->tb, g->act.kind, (long long) i, (long long) j, got, ref, tol);
            }
        }
    }
}

static const int64_t s_dims[] = {1, 7, 31, 33, 64, 100};
#define S_NDIMS (sizeof s_dims / sizeof s_dims[0])

static const zi_nn_act_t s_acts[] = {
    {ZI_NN_ACT_NONE, 0, 0},       {ZI_NN_ACT_RELU, 0, 0},    {ZI_NN_ACT_LEAKY_RELU, 0.1f, 0},
    {ZI_NN_ACT_CLIP, -0.5f, 0.5f}, {ZI_NN_ACT_SIGMOID, 0, 0}, {ZI_NN_ACT_TANH, 0, 0},
    {ZI_NN_ACT_GELU, 0, 0},
};
#define S_NACTS (sizeof s_acts / sizeof s_acts[0])

//  One product on every path and thread count: checked against the
//  reference once per path, and bit-identical across 1, 2 and 3 threads
//  and with a cached pack.
static void
s_run_all (zi_gemm_t *g, zi_pool_t *pools[4])
{
    size_t ny = (size_t) (g->M * g->ldy);
    float *first = (float *) malloc (ny * sizeof (float) + 1);
    cr_assert_not_null (first);
    for (int avx = 0; avx <= 1; avx++) {
        zi_gemm_set_avx512 (avx);
        if (avx && !zi_gemm_avx512 ()) {
            continue;       //  this CPU has no AVX-512: the portable path only
        }
        zi_gemm_pack_t *pack = NULL;
        for (int t = 1; t <= 3; t++) {
            for (int cached = 0; cached <= 1; cached++) {
                memset (g->Y, 0x7f, ny * sizeof (float));
                cr_assert_eq (zi_gemm_run (g, cached ? &pack : NULL, pools[t]), 0);
                if (t == 1 && !cached) {
                    s_check_ref (g, avx ? "avx512" : "portable");
                    memcpy (first, g->Y, ny * sizeof (float));
                }
                else {
                    cr_assert (memcmp (first, g->Y, ny * sizeof (float)) == 0,
                               "M=%lld N=%lld K=%lld avx=%d: %d threads%s differ from 1",
                               (long long) g->M, (long long) g->N, (long long) g->K, avx, t,
                               cached ? " (cached pack)" : "");
                }
            }
        }
        //  A single column stays with sgemv: nothing to pack then.
        cr_assert_eq (pack != NULL, avx == 1 && g->N > 1);
        zi_gemm_pack_destroy (&pack);
        cr_assert_null (pack);
    }
    zi_gemm_set_avx512 (-1);
    free (first);
}

typedef struct {
    float *A, *B, *C, *Y;
} s_bufs_t;

static s_bufs_t
s_bufs (int64_t M, int64_t N, int64_t K, unsigned seed)
{
    s_bufs_t b;
    b.A = (float *) malloc ((size_t) (M * K + 1) * sizeof (float));
    b.B = (float *) malloc ((size_t) (K * N + 1) * sizeof (float));
    b.C = (float *) malloc ((size_t) (M * N + 1) * sizeof (float));
    b.Y = (float *) malloc ((size_t) (M * N + 1) * sizeof (float));
    cr_assert (b.A && b.B && b.C && b.Y);
    s_fill (b.A, M * K, seed);
    s_fill (b.B, K * N, seed + 1);
    s_fill (b.C, M * N, seed + 2);
    return b;
}

static void
s_bufs_free (s_bufs_t *b)
{
    free (b->A);
    free (b->B);
    free (b->C);
    free (b->Y);
}

static void
s_pools (zi_pool_t *pools[4])
{
    pools[0] = pools[1] = NULL;
    pools[2] = zi_pool_new (2);
    pools[3] = zi_pool_new (3);
    cr_assert (pools[2] && pools[3]);
}

static void
s_pools_free (zi_pool_t *pools[4])
{
    zi_pool_destroy (&pools[2]);
    zi_pool_destroy (&pools[3]);
}

//  Every (M, N, K) from the small set, B both ways, with and without a bias
//  row, each activation in turn.
Test (gemm, small_shapes_match_reference)
{
    zi_pool_t *pools[4];
    s_pools (pools);
    int variant = 0;
    for (size_t im = 0; im < S_NDIMS; im++) {
        for (size_t in = 0; in < S_NDIMS; in++) {
            for (size_t ik = 0; ik < S_NDIMS; ik++) {
                int64_t M = s_dims[im], N = s_dims[in], K = s_dims[ik];
                s_bufs_t b = s_bufs (M, N, K, (unsigned) variant);
                for (int tb = 0; tb <= 1; tb++) {
                    for (int bias = 0; bias <= 1; bias++) {
                        zi_gemm_t g = {.M = M, .N = N, .K = K, .A = b.A, .lda = K, .B = b.B,
                                       .ldb = tb ? K : N, .tb = tb, .Y = b.Y, .ldy = N,
                                       .alpha = 1.0f, .C = bias ? b.C : NULL, .c_rs = 0,
                                       .c_cs = 1, .beta = 1.0f,
                                       .act = s_acts[variant++ % S_NACTS]};
                        s_run_all (&g, pools);
                    }
                }
                s_bufs_free (&b);
            }
        }
    }
    s_pools_free (pools);
}

//  1000 in each position; products big enough for the pool: tall ones it
//  splits by rows (a ragged last panel; 16-wide panels), wide ones by
//  panels (one row, a lone last row); the MLP's shapes.
Test (gemm, large_shapes_match_reference)
{
    static const int64_t shapes[][3] = {
        {1000, 33, 7}, {7, 1000, 33}, {33, 7, 1000}, {1000, 100, 31},
        {64, 1000, 100}, {1, 1000, 64}, {100, 1, 1000}, {64, 10, 1024},
        {16, 1024, 784}, {1000, 33, 64}, {2000, 10, 64}, {1, 1024, 1024}, {9, 300, 500},
    };
    zi_pool_t *pools[4];
    s_pools (pools);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        s_bufs_t b = s_bufs (M, N, K, (unsigned) s);
        for (int tb = 0; tb <= 1; tb++) {
            zi_gemm_t g = {.M = M, .N = N, .K = K, .A = b.A, .lda = K, .B = b.B,
                           .ldb = tb ? K : N, .tb = tb, .Y = b.Y, .ldy = N, .alpha = 1.0f,
                           .C = b.C, .c_rs = 0, .c_cs = 1, .beta = 1.0f,
                           .act = s_acts[(s + (size_t) tb) % S_NACTS]};
            s_run_all (&g, pools);
        }
        s_bufs_free (&b);
    }
    s_pools_free (pools);
}

//  Gemm's general form: transA, alpha, beta and C as a full matrix, a
//  column, a row and a scalar; K = 0 gives act (beta C).
Test (gemm, gemm_attributes_match_reference)
{
    zi_pool_t *pools[4];
    s_pools (pools);
    static const int64_t shapes[][3] = {{33, 31, 7}, {7, 100, 64}, {64, 33, 0}, {100, 64, 31}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        s_bufs_t b = s_bufs (M, N, K, 40 + (unsigned) s);
        for (int form = 0; form < 4; form++) {
            int64_t rs = form == 0 ? N : form == 1 ? 1 : 0;
            int64_t cs = form == 0 || form == 2 ? 1 : 0;
            zi_gemm_t g = {.M = M, .N = N, .K = K, .A = b.A, .lda = M, .ta = true, .B = b.B,
                           .ldb = K, .tb = true, .Y = b.Y, .ldy = N, .alpha = 0.75f,
                           .C = b.C, .c_rs = rs, .c_cs = cs, .beta = -1.5f,
                           .act = s_acts[(size_t) form % S_NACTS]};
            s_run_all (&g, pools);
        }
        s_bufs_free (&b);
    }
    s_pools_free (pools);
}

//  A batch of products (MatMul with batch dims on both sides, B broadcast
//  along one of them) equals the products one by one, for any thread count:
//  small ones (B read in place, one thread) and 64x64x64 ones (packed per
//  batch, batches split over the pool).
static void
s_check_batch (int64_t M, int64_t N, int64_t K, zi_pool_t *pools[4])
{
    int64_t nb = 6;
    s_bufs_t b = s_bufs (nb * M, N * 3, K, 77);
    int64_t a_off[6], b_off[6];
    for (int64_t t = 0; t < nb; t++) {
        a_off[t] = t * M * K;
        b_off[t] = (t % 3) * K * N;
    }
    float *one = (float *) malloc ((size_t) (nb * M * N) * sizeof (float));
    cr_assert_not_null (one);
    for (int avx = 0; avx <= 1; avx++) {
        zi_gemm_set_avx512 (avx);
        zi_gemm_t g = {.M = M, .N = N, .K = K, .A = b.A, .lda = K, .B = b.B, .ldb = N,
                       .Y = one, .ldy = N, .alpha = 1.0f, .C = b.C, .c_cs = 1, .beta = 1.0f,
                       .act = {ZI_NN_ACT_RELU, 0, 0}};
        for (int64_t t = 0; t < nb; t++) {
            zi_gemm_t gt = g;
            gt.A += a_off[t];
            gt.B += b_off[t];
            gt.Y += t * M * N;
            cr_assert_eq (zi_gemm_run (&gt, NULL, NULL), 0);
            s_check_ref (&gt, "batch");
        }
        for (int t = 1; t <= 3; t++) {
            g.Y = b.Y;
            memset (b.Y, 0, (size_t) (nb * M * N) * sizeof (float));
            cr_assert_eq (zi_gemm_run_batch (&g, nb, a_off, b_off, M * N, pools[t]), 0);
            cr_assert (memcmp (one, b.Y, (size_t) (nb * M * N) * sizeof (float)) == 0,
                       "%lldx%lldx%lld, avx=%d, %d threads", (long long) M, (long long) N,
                       (long long) K, avx, t);
        }
    }
    zi_gemm_set_avx512 (-1);
    free (one);
    s_bufs_free (&b);
}

Test (gemm, batch_equals_one_by_one)
{
    zi_pool_t *pools[4];
    s_pools (pools);
    s_check_batch (8, 8, 8, pools);
    s_check_batch (64, 64, 64, pools);
    s_check_batch (7, 40, 33, pools);
    s_pools_free (pools);
}

//  A pack is reused only for the B it was made from: a new pointer or
//  shape repacks, so a stale cache cannot give wrong answers.
Test (gemm, cache_follows_b)
{
    zi_gemm_set_avx512 (1);
    if (!zi_gemm_avx512 ()) {
        cr_skip_test ("no AVX-512 on this CPU");
    }
    s_bufs_t b1 = s_bufs (9, 40, 17, 5), b2 = s_bufs (9, 40, 17, 6);
    zi_gemm_pack_t *pack = NULL;
    zi_gemm_t g = {.M = 9, .N = 40, .K = 17, .A = b1.A, .lda = 17, .B = b1.B, .ldb = 40,
                   .Y = b1.Y, .ldy = 40, .alpha = 1.0f, .beta = 1.0f};
    cr_assert_eq (zi_gemm_run (&g, &pack, NULL), 0);
    cr_assert_not_null (pack);
    cr_assert_geq (zi_gemm_pack_bytes (pack), (size_t) (2 * 32 * 17) * sizeof (float));
    g.B = b2.B;
    cr_assert_eq (zi_gemm_run (&g, &pack, NULL), 0);
    s_check_ref (&g, "new B");
    g.N = 33;
    g.ldy = 33;
    cr_assert_eq (zi_gemm_run (&g, &pack, NULL), 0);
    s_check_ref (&g, "new N");
    zi_gemm_pack_destroy (&pack);
    zi_gemm_pack_destroy (&pack);       //  safe twice
    s_bufs_free (&b1);
    s_bufs_free (&b2);
    zi_gemm_set_avx512 (-1);
}

Test (gemm, env_forces_portable)
{
    setenv ("ZI_NN_NO_AVX512", "1", 1);
    zi_gemm_set_avx512 (-1);
    cr_assert_not (zi_gemm_avx512 ());
    setenv ("ZI_NN_NO_AVX512", "0", 1);
    zi_gemm_set_avx512 (-1);
    __builtin_cpu_init ();
    cr_assert_eq (zi_gemm_avx512 (), (bool) __builtin_cpu_supports ("avx512f"));
    unsetenv ("ZI_NN_NO_AVX512");
}

Test (gemm, bad_arguments)
{
    float x[4] = {0};
    zi_gemm_t g = {.M = -1, .N = 2, .K = 2, .A = x, .lda = 2, .B = x, .ldb = 2, .Y = x,
                   .ldy = 2, .alpha = 1.0f};
    cr_assert_eq (zi_gemm_run (&g, NULL, NULL), ZI_ERR_INVALID);
    g.M = (int64_t) 1 << 40;
    cr_assert_eq (zi_gemm_run (&g, NULL, NULL), ZI_ERR_LIMIT);
    g.M = 2;
    g.C = x;
    g.c_cs = 2;
    cr_assert_eq (zi_gemm_run (&g, NULL, NULL), ZI_ERR_INVALID);
    g.c_cs = 1;
    g.M = 0;
    cr_assert_eq (zi_gemm_run (&g, NULL, NULL), 0);     //  nothing to do
}
