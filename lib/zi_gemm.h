/*  zi_gemm.h - the engine's GEMM: packed weights, an AVX-512 microkernel
    with bias and activation fused into its store, split over a zi_pool.

    Every MatMul and Gemm of the executor lands here. Two paths, chosen per
    process (never per call, so results never depend on it):

      * AVX-512F (when the CPU has it and ZI_NN_NO_AVX512 is unset): op(B)
        is packed into panels of 32 columns (16 when N <= 16): K rows of
        32 floats, zero padded. A kernel of up to 8 rows x 32 columns keeps
        its accumulators in 16 zmm registers over the whole K, then applies
        alpha, the addend, the activation and stores (masked at the right
        edge). A constant B is packed once into a zi_gemm_pack_t that the
        caller keeps (the executor: one per node, freed with it); any other
        B is packed per call into a scratch buffer, or read in place when
        it is not transposed and M is small (masked loads, same bits).
        N == 1 (a matrix-vector product) stays with sgemv.
      * portable: OpenBLAS sgemm / sgemv, one single-threaded call per
        chunk of columns (or rows), then the epilogue on that chunk.

    Threads: the pool's threads take contiguous ranges of column panels
    (or of 8-row blocks when there are too few panels); a product of less
    than about a million multiply-adds stays on the calling thread, where a
    pool round trip would cost more than it saves. Each output element
    is one fma chain over k = 0..K-1 followed by the same epilogue whatever
    range computes it, and the chunks of the portable path are fixed by the
    shape alone, so results are bit-identical for any thread count and
    whether or not B was cached.

        zi_gemm_t g = {.M = m, .N = n, .K = k, .A = x, .lda = k,
                       .B = w, .ldb = k, .tb = true,       //  w (n,k)
                       .Y = y, .ldy = n, .alpha = 1.0f,
                       .C = bias, .c_cs = 1, .beta = 1.0f,  //  bias (n,)
                       .act = {ZI_NN_ACT_RELU}};
        zi_gemm_run (&g, &pack, pool);   //  y (m,n) = relu (x w^T + bias)
        ...
        zi_gemm_pack_destroy (&pack);
*/
#ifndef ZI_GEMM_H_INCLUDED
#define ZI_GEMM_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zi_ops_nn.h"
#include "zi_pool.h"

#ifdef __cplusplus
extern "C" {
#endif

//  One product:
//    Y (M,N) = act (alpha * op(A) @ op(B) + beta * C)
//  op(A) (M,K) is A (M,K) with row stride lda, or when ta A^T of A (K,M);
//  likewise op(B) (K,N) from B (K,N) or, when tb, B (N,K). Y has row stride
//  ldy and must not alias A, B or C. C may be NULL (no addend); element
//  (i,j) of the addend is C[i * c_rs + j * c_cs] with c_cs 0 or 1, so a
//  bias row is c_rs 0, c_cs 1; a column c_rs 1, c_cs 0; a scalar 0, 0.
typedef struct {
    int64_t M, N, K;
    const float *A;
    int64_t lda;
    bool ta;
    const float *B;
    int64_t ldb;
    bool tb;
    float *Y;
    int64_t ldy;
    float alpha;
    const float *C;
    int64_t c_rs, c_cs;
    float beta;
    zi_nn_act_t act;
} zi_gemm_t;

//  op(B) packed for the AVX-512 kernel, with what it was packed from so a
//  cache can tell whether it still fits.
typedef struct zi_gemm_pack zi_gemm_pack_t;

//  Compute g. When `cache` is not NULL the caller promises that B's
//  contents never change while it holds *cache: a pack that matches g's B
//  (same pointer, ldb, tb, K, N) is reused, any other is replaced; *cache
//  then belongs to the caller (zi_gemm_pack_destroy). pool may be NULL.
//  Returns 0, ZI_ERR_INVALID for negative sizes or a bad c_cs, ZI_ERR_LIMIT
//  for dims above INT_MAX, ZI_ERR_NOMEM.
int zi_gemm_run (const zi_gemm_t *g, zi_gemm_pack_t **cache, zi_pool_t *pool);

//  nbatch independent products that share g's shapes, strides and epilogue:
//  product t uses A + a_off[t], B + b_off[t], Y + t * y_step (offsets in
//  floats; C is the same for all). Batches are split over the pool; B is
//  packed per batch. Returns as zi_gemm_run.
int zi_gemm_run_batch (const zi_gemm_t *g, int64_t nbatch, const int64_t *a_off,
                       const int64_t *b_off, int64_t y_step, zi_pool_t *pool);

//  Free a pack; safe on NULL; sets *self_p to NULL.
void zi_gemm_pack_destroy (zi_gemm_pack_t **self_p);

//  Bytes a pack holds (for the executor's memory report); 0 for NULL.
size_t zi_gemm_pack_bytes (const zi_gemm_pack_t *self);

//  True when the AVX-512 path is in use: the CPU has AVX-512F and
//  ZI_NN_NO_AVX512 was not set to a non-empty value other than "0" when
//  the first product ran.
bool zi_gemm_avx512 (void);

//  For tests: force the path (1 = AVX-512 if the CPU has it, 0 = portable,
//  -1 = decide again from the CPU and the environment).
void zi_gemm_set_avx512 (int mode);

#ifdef __cplusplus
}
#endif

#endif
