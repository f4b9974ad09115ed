/*  zi_ops_nn.h - neural-network kernels: MatMul, Gemm, Conv, pools, norms.

    The ONNX operators of this family are registered through the table
    zi_ops_nn[] (zi_ops.h); the executor reaches them with zi_op_find. This
    header adds what an executor's FUSION pass needs on top of the table:

      * an activation descriptor (zi_nn_act_t) and its element-wise apply;
      * zi_nn_gemm_bias_act, a raw GEMM + row-bias + activation kernel on
        float pointers (the fused form of Gemm / MatMul + Add + Relu);
      * zi_nn_conv_act / zi_nn_gemm_act / zi_nn_matmul_bias_act: run a Conv,
        Gemm or MatMul node exactly as its op's run() would, but apply the
        activation (and for MatMul an extra bias) in the same pass over the
        output that adds the bias, instead of a second node and a second
        sweep through memory.

    Example, fusing "Conv -> Relu" into one step at run time:

        zi_nn_act_t act;
        if (zi_nn_act_from_node (relu_node, &act) == 0) {
            //  ctx: the Conv node's context, out[0] = the Relu's output
            rc = zi_nn_conv_act (&ctx, act);
        }

    All tensors here are float32, contiguous, in numpy order (outermost
    dimension first). MatMul and Gemm split their work over ctx->pool and
    run on zi_gemm (zi_gemm.h); the *_cached forms let the executor keep a
    constant B packed between runs. Conv splits over the pool itself and
    calls zi_nn_sgemm, a single-threaded OpenBLAS call, inside its tasks.

    The second half of this header is internal to the nn family (the files
    lib/zi_ops_nn*.c share spatial-geometry helpers); other modules should
    not call it.
*/
#ifndef ZI_OPS_NN_H_INCLUDED
#define ZI_OPS_NN_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "zi_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Activations a fusion pass may fold into the producer's output pass.
typedef enum {
    ZI_NN_ACT_NONE = 0,
    ZI_NN_ACT_RELU,         //  max (x, 0)
    ZI_NN_ACT_LEAKY_RELU,   //  x < 0 ? alpha * x : x
    ZI_NN_ACT_SIGMOID,      //  1 / (1 + exp (-x))
    ZI_NN_ACT_TANH,
    ZI_NN_ACT_GELU,         //  exact: 0.5 x (1 + erf (x / sqrt 2))
    ZI_NN_ACT_CLIP,         //  min (max (x, alpha), beta)
} zi_nn_act_kind_t;

typedef struct {
    zi_nn_act_kind_t kind;
    float alpha;            //  LEAKY_RELU slope; CLIP lower bound
    float beta;             //  CLIP upper bound
} zi_nn_act_t;

//  Map an activation node (Relu, LeakyRelu, Sigmoid, Tanh, Gelu with
//  approximate="none", Clip with min/max ATTRIBUTES as in opset < 11) to a
//  descriptor. Returns 0, or ZI_ERR_UNSUPPORTED when the node is not an
//  activation that can be fused this way (the caller then does not fuse).
//  Clip of opset >= 11 carries min/max as inputs: build the descriptor with
//  kind ZI_NN_ACT_CLIP yourself from their values.
int zi_nn_act_from_node (const zi_node_t *node, zi_nn_act_t *act);

//  x (n,) -> x (n,), in place.
void zi_nn_act_apply (float *x, int64_t n, zi_nn_act_t act);

//  Y (M,N) = act (A (M,K) @ B (K,N) + bias (N,))           trans_b false
//  Y (M,N) = act (A (M,K) @ B (N,K)^T + bias (N,))         trans_b true
//  bias may be NULL (no bias); it is added to every row. Y must not alias
//  A, B or bias. Runs zi_gemm_run on the calling thread alone. Any of
//  M, N, K may be 0 (K == 0 gives act (bias)). Returns 0, or ZI_ERR_LIMIT
//  when a dimension exceeds what the BLAS interface takes (INT_MAX), or
//  ZI_ERR_INVALID for negative sizes.
int zi_nn_gemm_bias_act (float *Y, const float *A, const float *B,
                         bool trans_b, const float *bias, int64_t M,
                         int64_t N, int64_t K, zi_nn_act_t act);

//  Run a Conv node (ctx exactly as for the Conv op's run: in = X, W, B?,
//  out = Y sized by the Conv's infer) and apply act after the bias, in the
//  same pass over each block of output. act NONE is the plain Conv.
int zi_nn_conv_act (zi_kctx_t *ctx, zi_nn_act_t act);

//  A 2-D Conv (+ act) followed by a MaxPool that zi_nn_maxpool_fusable
//  accepts, in one node: ctx as for zi_nn_conv_act except that out = the
//  pooled Y (N, M, oH / 2, oW / 2). Bit-identical to running the Conv and
//  then the MaxPool, but each chunk of conv output is pooled while it is
//  still in cache (AVX-512 stride-1 path) instead of going through memory.
int zi_nn_conv_act_maxpool (zi_kctx_t *ctx, zi_nn_act_t act);

//  True when a MaxPool node is the 2x2 / stride 2 / no padding / floor /
//  dilation 1 kind, without Indices, that zi_nn_conv_act_maxpool fuses.
bool zi_nn_maxpool_fusable (const zi_node_t *node);

//  x (planes, iH, iW) -> y (planes, iH / 2, iW / 2), y's planes ystride
//  floats apart: float32 2x2 / stride 2 max pooling, exactly as the
//  MaxPool op computes it.
void zi_nn_maxpool_2x2_f32 (float *y, int64_t ystride, const float *x,
                            int64_t planes, int64_t iH, int64_t iW);

//  Same for a Gemm node: Y = act (alpha A' B' + beta C).
int zi_nn_gemm_act (zi_kctx_t *ctx, zi_nn_act_t act);

//  Packed form of a GEMM's B operand (zi_gemm.h).
typedef struct zi_gemm_pack zi_gemm_pack_t;

//  zi_nn_gemm_act with a pack cache for B (ctx->in[1]): pass a slot only
//  when B's data never changes while the slot holds a pack (an initializer
//  or a folded constant); see zi_gemm_run. cache NULL = pack per call. The
//  result is bit-identical either way.
int zi_nn_gemm_act_cached (zi_kctx_t *ctx, zi_nn_act_t act,
                           zi_gemm_pack_t **cache);

//  Run a MatMul node and add `bias` then apply act in one pass: Y = act
//  (A @ B + bias). bias (NULL allowed) is the other operand of the folded
//  Add and must broadcast along rows only: a float32 tensor with N elements
//  whose dims are all 1 except the last (shape (N,), (1,N), ...), or one
//  element. The Add's output shape must equal the MatMul's (the caller
//  checks that with zi_nn_matmul_bias_fusable before fusing).
int zi_nn_matmul_bias_act (zi_kctx_t *ctx, const zi_tensor_t *bias,
                           zi_nn_act_t act);

//  zi_nn_matmul_bias_act with a pack cache for B, as zi_nn_gemm_act_cached
//  (used only when B has no batch dims; a batched B is packed per call).
int zi_nn_matmul_bias_act_cached (zi_kctx_t *ctx, const zi_tensor_t *bias,
                                  zi_nn_act_t act, zi_gemm_pack_t **cache);

//  True when `bias` may be folded into a MatMul whose output has the given
//  shape by zi_nn_matmul_bias_act (see its contract).
bool zi_nn_matmul_bias_fusable (int out_rank, const int64_t *out_shape,
                                const zi_tensor_t *bias);

//  ---------------------------------------------------------------------------
//  Internal to the nn family (lib/zi_ops_nn*.c). Not a stable API.

//  Spatial geometry of a convolution or pooling window. Spatial ranks 1..3
//  are padded to 3 with size-1 dims (k=1, s=1, d=1, pads 0) in front, so
//  every kernel is a single 3-deep loop nest.
#define ZI_NN_MAX_SPATIAL 3
typedef struct {
    int nd;                             //  real spatial rank, 1..3
    int64_t in[ZI_NN_MAX_SPATIAL];      //  input spatial dims
    int64_t out[ZI_NN_MAX_SPATIAL];     //  output spatial dims
    int64_t k[ZI_NN_MAX_SPATIAL];       //  kernel
    int64_t s[ZI_NN_MAX_SPATIAL];       //  strides
    int64_t d[ZI_NN_MAX_SPATIAL];       //  dilations
    int64_t pb[ZI_NN_MAX_SPATIAL];      //  pads at the beginning
    int64_t pe[ZI_NN_MAX_SPATIAL];      //  pads at the end
} zi_nn_geom_t;

//  Load-time check of the attributes shared by Conv, ConvTranspose and the
//  pools: types of kernel_shape/strides/dilations/pads (INTS), auto_pad
//  value, ranges. Returns 0 or an error with a message.
int zi_nn_check_window_attrs (const zi_node_t *node, char *err, size_t errlen);

//  Fill g from the node's attributes for a forward window over x's spatial
//  dims (x rank nd+2). `kernel` is the kernel's spatial shape when known
//  from a weight (Conv), else NULL (pools: kernel_shape is required).
//  `ceil_mode` applies to explicit pads only. Returns 0 or an error.
int zi_nn_geom_forward (zi_kctx_t *ctx, const zi_tensor_t *x,
                        const int64_t *kernel, bool ceil_mode,
                        zi_nn_geom_t *g);

//  Valid output range [*lo, *hi) of an output axis of length `out` for
//  which i = o * s + off lies in [0, in).
void zi_nn_valid_range (int64_t out, int64_t in, int64_t s, int64_t off,
                        int64_t *lo, int64_t *hi);

//  Check an attribute's type when present. Returns 0 or an error.
int zi_nn_check_attr_type (const zi_node_t *node, const char *name,
                           zi_attr_type_t type, char *err, size_t errlen);

//  Require a float32 input (with a message naming it). Returns 0 or error.
int zi_nn_require_f32 (zi_kctx_t *ctx, const zi_tensor_t *t,
                       const char *what);

//  Apply bias (one value per row, or NULL) and act to rows of y:
//  y (rows, n) with row stride ld -> y.
void zi_nn_rows_bias_act (float *y, int64_t rows, int64_t n, int64_t ld,
                          const float *bias, zi_nn_act_t act);

//  Y (M,N) with row stride ldc = alpha op(A) op(B) + beta Y, row-major:
//  op(A) = A (M,K) or, when ta, A^T of A (K,M); likewise B; lda / ldb are
//  the row strides of A and B as stored. Dispatches to sgemv when M == 1
//  or N == 1. Dims must be <= INT_MAX (the caller checks); beta == 0
//  overwrites Y even if it holds NaNs.
void zi_nn_sgemm (float *Y, int64_t ldc, bool ta, bool tb, int64_t M,
                  int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta);

//  y (n,) = exp (x - shift), shift = shiftv[i] or, when shiftv is NULL,
//  the scalar; returns the sum of y. Vectorised (rel. error ~1e-7). y may
//  equal x.
double zi_nn_exp_sum (float *y, const float *x, const float *shiftv,
                      float shift, int64_t n);

//  Op entry points of the family's other files, for the table in zi_ops_nn.c.
int zi_nn_conv_check (const zi_node_t *node, char *err, size_t errlen);
int zi_nn_conv_infer (zi_kctx_t *ctx);
int zi_nn_conv_run (zi_kctx_t *ctx);
int zi_nn_convt_check (const zi_node_t *node, char *err, size_t errlen);
int zi_nn_convt_infer (zi_kctx_t *ctx);
int zi_nn_convt_run (zi_kctx_t *ctx);

int zi_nn_maxpool_check (const zi_node_t *node, char *err, size_t errlen);
int zi_nn_maxpool_infer (zi_kctx_t *ctx);
int zi_nn_maxpool_run (zi_kctx_t *ctx);
int zi_nn_avgpool_check (const zi_node_t *node, char *err, size_t errlen);
int zi_nn_avgpool_infer (zi_kctx_t *ctx);
int zi_nn_avgpool_run (zi_kctx_t *ctx);
int zi_nn_gpool_infer (zi_kctx_t *ctx);
int zi_nn_gavgpool_run (zi_kctx_t *ctx);
int zi_nn_gmaxpool_run (zi_kctx_t *ctx);
int zi_nn_lrn_check (const zi_node_t *node, char *err, size_t errlen);
int zi_nn_lrn_infer (zi_kctx_t *ctx);
int zi_nn_lrn_run (zi_kctx_t *ctx);

int zi_nn_batchnorm_check (const zi_node_t *node, char *err, size_t errlen);
int zi_nn_batchnorm_infer (zi_kctx_t *ctx);
int zi_nn_batchnorm_run (zi_kctx_t *ctx);
int zi_nn_instnorm_check (const zi_node_t *node, char *err, size_t errlen);
int zi_nn_instnorm_infer (zi_kctx_t *ctx);
int zi_nn_instnorm_run (zi_kctx_t *ctx);
int zi_nn_layernorm_check (const zi_node_t *node, char *err, size_t errlen);
int zi_nn_layernorm_infer (zi_kctx_t *ctx);
int zi_nn_layernorm_run (zi_kctx_t *ctx);
int zi_nn_softmax_check (const zi_node_t *node, char *err, size_t errlen);
int zi_nn_softmax_infer (zi_kctx_t *ctx);
int zi_nn_softmax_run (zi_kctx_t *ctx);
int zi_nn_logsoftmax_run (zi_kctx_t *ctx);
int zi_nn_hardmax_run (zi_kctx_t *ctx);
int zi_nn_prelu_infer (zi_kctx_t *ctx);
int zi_nn_prelu_run (zi_kctx_t *ctx);

#ifdef __cplusplus
}
#endif

#endif
