/*  zi_ops_nn.c - the nn family's op table, MatMul, Gemm, fused GEMM entry
    points, activations and the helpers the family's other files share.

    MatMul and Gemm run on zi_gemm (packed B, an AVX-512 kernel with the
    bias and activation in its store, split over the executor's pool; or
    OpenBLAS where AVX-512 is missing). MatMul folds A's batch dims into M
    when B has none, so "activations (B,S,K) @ weight (K,N)" is ONE product,
    not B*S/M of them. zi_nn_sgemm, the single-threaded OpenBLAS call, is
    what Conv and the portable GEMM path use.

    Conv / ConvTranspose live in zi_ops_nn_conv.c, pools and LRN in
    zi_ops_nn_pool.c, normalisations / softmax / PRelu in zi_ops_nn_norm.c.
*/
#include "zi_ops_nn.h"

#include "zi_gemm.h"

#include <cblas.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

//  Vectorised exp ---------------------------------------------------------------

//  exp() on 4 floats at a time with GCC vector extensions (one SSE register,
//  the width every x86-64 has; 8 would need AVX to be one register and
//  changes the calling convention of vector values). A loop calling expf is
//  never vectorised without -ffast-math, and softmax / sigmoid are
//  dominated by it. Cephes' expf: range reduction x = n ln2 + r, a degree-6
//  polynomial on |r| <= ln2/2, then scale by 2^n through the exponent bits.
//  Max relative error 1e-7 over the clamped range [-87, 88]; below -87 the
//  result is exp(-87) ~ 1.6e-38 rather than 0, which no sum or sigmoid can
//  tell apart. NaN stays NaN.
typedef float s_vf __attribute__ ((vector_size (16)));
typedef int32_t s_vi __attribute__ ((vector_size (16)));
#define S_VL 4
#define S_VSET(v) ((s_vf) {v, v, v, v})

static inline s_vf
s_vexp (s_vf x)
{
    const s_vf lo = S_VSET (-87.0f), hi = S_VSET (88.0f);
    s_vi m = x < lo;
    x = (s_vf) ((m & (s_vi) lo) | (~m & (s_vi) x));
    m = x > hi;
    x = (s_vf) ((m & (s_vi) hi) | (~m & (s_vi) x));
    //  n = round (x / ln2), by adding and removing 1.5 * 2^23
    s_vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    s_vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
    s_vf p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    s_vi e = (__builtin_convertvector (n, s_vi) + 127) << 23;
    return p * (s_vf) e;
}

double
zi_nn_exp_sum (float *y, const float *x, const float *shiftv, float shift,
               int64_t n)
{
    double total = 0.0;
    s_vf acc = S_VSET (0.0f);
    int64_t i = 0;
    for (; i + S_VL <= n; i += S_VL) {
        s_vf v, sh = S_VSET (shift);
        memcpy (&v, x + i, sizeof v);
        if (shiftv) {
            memcpy (&sh, shiftv + i, sizeof sh);
        }
        v = s_vexp (v - sh);
        memcpy (y + i, &v, sizeof v);
        acc += v;
        if ((i & 1023) == 1024 - S_VL) {
            //  fold into double every 256 vectors: float lanes stay short
            total += (double) acc[0] + acc[1] + acc[2] + acc[3];
            acc = S_VSET (0.0f);
        }
    }
    total += (double) acc[0] + acc[1] + acc[2] + acc[3];
    if (i < n) {
        //  tail: pad a vector, keep only the live lanes
        s_vf v = S_VSET (0.0f);
        for (int64_t j = i; j < n; j++) {
            v[j - i] = x[j] - (shiftv ? shiftv[j] : shift);
        }
        v = s_vexp (v);
        for (int64_t j = i; j < n; j++) {
            y[j] = v[j - i];
            total += v[j - i];
        }
    }
    return total;
}

//  y (n,) -> 1 / (1 + exp (-y))
static void
s_sigmoid (float *y, int64_t n)
{
    int64_t i = 0;
    for (; i + S_VL <= n; i += S_VL) {
        s_vf v;
        memcpy (&v, y + i, sizeof v);
        v = 1.0f / (1.0f + s_vexp (-v));
        memcpy (y + i, &v, sizeof v);
    }
    if (i < n) {
        s_vf v = S_VSET (0.0f);
        for (int64_t j = i; j < n; j++) {
            v[j - i] = -y[j];
        }
        v = 1.0f / (1.0f + s_vexp (v));
        for (int64_t j = i; j < n; j++) {
            y[j] = v[j - i];
        }
    }
}

//  Activations ----------------------------------------------------------------

//  One row: y[i] = act (y[i] + b_i), with b_i = bvec[i] or bconst. The kind
//  switch is outside the loops so each loop is branch-free and vectorises
//  (both arms of every select are computed: LeakyRelu is written as
//  max (v, 0) + alpha min (v, 0) for that reason).
#define S_ACT_LOOPS(BIAS)                                                     \
    switch (act.kind) {                                                       \
        case ZI_NN_ACT_NONE:                                                  \
            for (int64_t i = 0; i < n; i++) {                                 \
                y[i] = y[i] + (BIAS);                                         \
            }                                                                 \
            break;                                                            \
        case ZI_NN_ACT_RELU:                                                  \
            for (int64_t i = 0; i < n; i++) {                                 \
                float v = y[i] + (BIAS);                                      \
                y[i] = v > 0.0f ? v : 0.0f;                                   \
            }                                                                 \
            break;                                                            \
        case ZI_NN_ACT_LEAKY_RELU:                                            \
            for (int64_t i = 0; i < n; i++) {                                 \
                float v = y[i] + (BIAS);                                      \
                float pos = v > 0.0f ? v : 0.0f, neg = v < 0.0f ? v : 0.0f;   \
                y[i] = pos + act.alpha * neg;                                 \
            }                                                                 \
            break;                                                            \
        case ZI_NN_ACT_SIGMOID:                                               \
            for (int64_t i = 0; i < n; i++) {                                 \
                y[i] = y[i] + (BIAS);                                         \
            }                                                                 \
            s_sigmoid (y, n);                                                 \
            break;                                                            \
        case ZI_NN_ACT_TANH:                                                  \
            for (int64_t i = 0; i < n; i++) {                                 \
                y[i] = tanhf (y[i] + (BIAS));                                 \
            }                                                                 \
            break;                                                            \
        case ZI_NN_ACT_GELU:                                                  \
            for (int64_t i = 0; i < n; i++) {                                 \
                float v = y[i] + (BIAS);                                      \
                y[i] = 0.5f * v * (1.0f + erff (v * (float) M_SQRT1_2));      \
            }                                                                 \
            break;                                                            \
        case ZI_NN_ACT_CLIP:                                                  \
            for (int64_t i = 0; i < n; i++) {                                 \
                float v = y[i] + (BIAS);                                      \
                v = v < act.alpha ? act.alpha : v;                            \
                y[i] = v > act.beta ? act.beta : v;                           \
            }                                                                 \
            break;                                                            \
    }

//  y (n,) -> act (y + bconst)
static void
s_act_row_const (float *y, int64_t n, float bconst, zi_nn_act_t act)
{
    if (act.kind == ZI_NN_ACT_NONE && bconst == 0.0f) {
        return;
    }
    S_ACT_LOOPS (bconst)
}

//  y (n,) -> act (y + bvec (n,))
static void
s_act_row_vec (float *y, int64_t n, const float *bvec, zi_nn_act_t act)
{
    S_ACT_LOOPS (bvec[i])
}

void
zi_nn_act_apply (float *y, int64_t n, zi_nn_act_t act)
{
    s_act_row_const (y, n, 0.0f, act);
}

void
zi_nn_rows_bias_act (float *y, int64_t rows, int64_t n, int64_t ld,
                     const float *bias, zi_nn_act_t act)
{
    for (int64_t r = 0; r < rows; r++) {
        s_act_row_const (y + r * ld, n, bias ? bias[r] : 0.0f, act);
    }
}

//  y (rows, n) -> act (y + bias (n,)); bias NULL = none.
static void
s_cols_bias_act (float *y, int64_t rows, int64_t n, const float *bias,
                 zi_nn_act_t act)
{
    if (!bias) {
        if (act.kind != ZI_NN_ACT_NONE) {
            s_act_row_const (y, rows * n, 0.0f, act);
        }
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        s_act_row_vec (y + r * n, n, bias, act);
    }
}

int
zi_nn_act_from_node (const zi_node_t *node, zi_nn_act_t *act)
{
    if (!node || !act || (node->domain && *node->domain
                          && strcmp (node->domain, "ai.onnx") != 0)) {
        return ZI_ERR_UNSUPPORTED;
    }
    const char *op = node->op_type;
    *act = (zi_nn_act_t){ZI_NN_ACT_NONE, 0.0f, 0.0f};
    if (strcmp (op, "Relu") == 0) {
        act->kind = ZI_NN_ACT_RELU;
    }
    else if (strcmp (op, "LeakyRelu") == 0) {
        act->kind = ZI_NN_ACT_LEAKY_RELU;
        act->alpha = zi_node_attr_float (node, "alpha", 0.01f);
    }
    else if (strcmp (op, "Sigmoid") == 0) {
        act->kind = ZI_NN_ACT_SIGMOID;
    }
    else if (strcmp (op, "Tanh") == 0) {
        act->kind = ZI_NN_ACT_TANH;
    }
    else if (strcmp (op, "Gelu") == 0
             && strcmp (zi_node_attr_string (node, "approximate", "none"),
                        "none") == 0) {
        act->kind = ZI_NN_ACT_GELU;
    }
    else if (strcmp (op, "Clip") == 0 && node->n_in <= 1) {
        //  opset < 11: bounds are attributes (defaults: the float range)
        act->kind = ZI_NN_ACT_CLIP;
        act->alpha = zi_node_attr_float (node, "min", -FLT_MAX);
        act->beta = zi_node_attr_float (node, "max", FLT_MAX);
    }
    else {
        return ZI_ERR_UNSUPPORTED;
    }
    return ZI_OK;
}

//  Shared helpers -------------------------------------------------------------

int
zi_nn_check_attr_type (const zi_node_t *node, const char *name,
                       zi_attr_type_t type, char *err, size_t errlen)
{
    const zi_attr_t *a = zi_node_attr (node, name);
    if (a && a->type != type) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "node '%s' (%s): attribute '%s' has type %d, "
                        "expects %d",
                        node->name, node->op_type, name, (int) a->type,
                        (int) type);
    }
    return ZI_OK;
}

int
zi_nn_require_f32 (zi_kctx_t *ctx, const zi_tensor_t *t, const char *what)
{
    if (t->dtype != ZI_DT_F32) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED,
                           "%s has dtype %s, only float32 is supported",
                           what, zi_dtype_name (t->dtype));
    }
    return ZI_OK;
}

void
zi_nn_valid_range (int64_t out, int64_t in, int64_t s, int64_t off,
                   int64_t *lo, int64_t *hi)
{
    //  i = o*s + off in [0, in)  <=>  o >= ceil (-off / s),
    //                                 o <  ceil ((in - off) / s)
    int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t h = in - off <= 0 ? 0 : (in - off + s - 1) / s;
    if (h > out) {
        h = out;
    }
    if (l > h) {
        l = h;
    }
    *lo = l;
    *hi = h;
}

//  Attributes bounded so every geometry product below fits in int64.
#define S_ATTR_MAX ((int64_t) INT32_MAX)

int
zi_nn_check_window_attrs (const zi_node_t *node, char *err, size_t errlen)
{
    static const char *const ints_names[] = {
        "kernel_shape", "strides", "dilations", "pads", "output_padding",
        "output_shape",
    };
    for (size_t i = 0; i < sizeof ints_names / sizeof ints_names[0]; i++) {
        int rc = zi_nn_check_attr_type (node, ints_names[i], ZI_ATTR_INTS,
                                        err, errlen);
        if (rc) {
            return rc;
        }
    }
    int rc = zi_nn_check_attr_type (node, "auto_pad", ZI_ATTR_STRING, err,
                                    errlen);
    if (rc) {
        return rc;
    }
    const char *ap = zi_node_attr_string (node, "auto_pad", "NOTSET");
    if (strcmp (ap, "NOTSET") != 0 && strcmp (ap, "SAME_UPPER") != 0
        && strcmp (ap, "SAME_LOWER") != 0 && strcmp (ap, "VALID") != 0) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "node '%s' (%s): auto_pad '%s' is not one of NOTSET, "
                        "SAME_UPPER, SAME_LOWER, VALID",
                        node->name, node->op_type, ap);
    }
    struct {
        const char *name;
        int64_t min;
    } bounds[] = {
        {"kernel_shape", 1}, {"strides", 1}, {"dilations", 1}, {"pads", 0},
        {"output_padding", 0}, {"output_shape", 0},
    };
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
        int n = 0;
        const int64_t *v = zi_node_attr_ints (node, bounds[i].name, &n);
        if (n > 2 * ZI_MAX_RANK) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "node '%s' (%s): %s has %d values", node->name,
                            node->op_type, bounds[i].name, n);
        }
        for (int j = 0; j < n; j++) {
            if (v[j] < bounds[i].min || v[j] > S_ATTR_MAX) {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "node '%s' (%s): %s[%d] = %lld is out of "
                                "range [%lld, %lld]",
                                node->name, node->op_type, bounds[i].name, j,
                                (long long) v[j], (long long) bounds[i].min,
                                (long long) S_ATTR_MAX);
            }
        }
    }
    return ZI_OK;
}

//  Read an optional INTS attribute of exactly n values (within bounds, as
//  check verified, but infer re-checks: check may not have run in tests).
static int
s_read_spatial (zi_kctx_t *ctx, const char *name, int n, int64_t dflt,
                int64_t min, int64_t *out)
{
    int cnt = 0;
    const int64_t *v = zi_node_attr_ints (ctx->node, name, &cnt);
    if (!v) {
        for (int i = 0; i < n; i++) {
            out[i] = dflt;
        }
        return ZI_OK;
    }
    if (cnt != n) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "%s has %d values, expects %d",
                           name, cnt, n);
    }
    for (int i = 0; i < n; i++) {
        if (v[i] < min || v[i] > S_ATTR_MAX) {
            return zi_op_fail (ctx, ZI_ERR_MALFORMED,
                               "%s[%d] = %lld is out of range", name, i,
                               (long long) v[i]);
        }
        out[i] = v[i];
    }
    return ZI_OK;
}

int
zi_nn_geom_forward (zi_kctx_t *ctx, const zi_tensor_t *x,
                    const int64_t *kernel, bool ceil_mode, zi_nn_geom_t *g)
{
    int nd = x->rank - 2;
    if (nd < 1 || nd > ZI_NN_MAX_SPATIAL) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED,
                           "input rank %d: only 1 to 3 spatial dims are "
                           "supported",
                           x->rank);
    }
    int64_t k[ZI_NN_MAX_SPATIAL], s[ZI_NN_MAX_SPATIAL], d[ZI_NN_MAX_SPATIAL];
    int64_t pads[2 * ZI_NN_MAX_SPATIAL];
    int rc;
    int kn = 0;
    const int64_t *kattr = zi_node_attr_ints (ctx->node, "kernel_shape", &kn);
    if (!kernel && !kattr) {
        return zi_op_fail (ctx, ZI_ERR_MALFORMED, "kernel_shape is required");
    }
    if ((rc = s_read_spatial (ctx, "kernel_shape", nd, 1, 1, k))) {
        return rc;
    }
    if (kernel) {
        for (int i = 0; i < nd; i++) {
            if (kattr && k[i] != kernel[i]) {
                return zi_op_fail (ctx, ZI_ERR_SHAPE,
                                   "kernel_shape[%d] = %lld but the weight "
                                   "has %lld",
                                   i, (long long) k[i], (long long) kernel[i]);
            }
            if (kernel[i] < 1 || kernel[i] > S_ATTR_MAX) {
                return zi_op_fail (ctx, ZI_ERR_SHAPE,
                                   "kernel dim %d is %lld", i,
                                   (long long) kernel[i]);
            }
            k[i] = kernel[i];
        }
    }
    if ((rc = s_read_spatial (ctx, "strides", nd, 1, 1, s))
        || (rc = s_read_spatial (ctx, "dilations", nd, 1, 1, d))
        || (rc = s_read_spatial (ctx, "pads", 2 * nd, 0, 0, pads))) {
        return rc;
    }
    const char *ap = zi_node_attr_string (ctx->node, "auto_pad", "NOTSET");
    bool same_upper = strcmp (ap, "SAME_UPPER") == 0;
    bool same_lower = strcmp (ap, "SAME_LOWER") == 0;
    bool valid = strcmp (ap, "VALID") == 0;
    if (!same_upper && !same_lower && !valid && strcmp (ap, "NOTSET") != 0) {
        return zi_op_fail (ctx, ZI_ERR_MALFORMED, "bad auto_pad '%s'", ap);
    }
    g->nd = nd;
    int off = ZI_NN_MAX_SPATIAL - nd;
    for (int i = 0; i < off; i++) {
        g->in[i] = g->out[i] = g->k[i] = g->s[i] = g->d[i] = 1;
        g->pb[i] = g->pe[i] = 0;
    }
    for (int i = 0; i < nd; i++) {
        int j = off + i;
        int64_t in = x->ne[2 + i];
        int64_t ek = (k[i] - 1) * d[i] + 1;
        int64_t pb = pads[i], pe = pads[nd + i], out;
        if (same_upper || same_lower) {
            out = (in + s[i] - 1) / s[i];
            int64_t total = out > 0 ? (out - 1) * s[i] + ek - in : 0;
            if (total < 0) {
                total = 0;
            }
            pb = same_upper ? total / 2 : total - total / 2;
            pe = total - pb;
        }
        else {
            if (valid) {
                pb = pe = 0;
            }
            int64_t span = in + pb + pe - ek;
            if (span < 0) {
                return zi_op_fail (ctx, ZI_ERR_SHAPE,
                                   "spatial dim %d: input %lld (+ pads "
                                   "%lld, %lld) is smaller than the window "
                                   "%lld",
                                   i, (long long) in, (long long) pb,
                                   (long long) pe, (long long) ek);
            }
            out = span / s[i] + 1;
            if (ceil_mode && span % s[i] != 0) {
                out++;
                //  A last window that would start inside the end padding
                //  sees no input at all: drop it (PyTorch, onnxruntime).
                if ((out - 1) * s[i] >= in + pb) {
                    out--;
                }
            }
        }
        g->in[j] = in;
        g->out[j] = out;
        g->k[j] = k[i];
        g->s[j] = s[i];
        g->d[j] = d[i];
        g->pb[j] = pb;
        g->pe[j] = pe;
    }
    return ZI_OK;
}

//  GEMM ------------------------------------------------------------------------

static bool
s_blas_ok (int64_t v)
{
    return v >= 0 && v <= INT_MAX;
}

void
zi_nn_sgemm (float *Y, int64_t ldc, bool ta, bool tb, int64_t M, int64_t N,
             int64_t K, float alpha, const float *A, int64_t lda,
             const float *B, int64_t ldb, float beta)
{
    if (M == 0 || N == 0) {
        return;
    }
    if (K == 0 || alpha == 0.0f) {
        //  Nothing to multiply; BLAS would also reject lda = 0.
        for (int64_t i = 0; i < M; i++) {
            for (int64_t j = 0; j < N; j++) {
                float *y = Y + i * ldc + j;
                *y = beta == 0.0f ? 0.0f : beta * *y;
            }
        }
        return;
    }
    if (beta == 0.0f && (M == 1 || N == 1)) {
        //  sgemv scales y by beta rather than overwriting it: 0 * NaN from
        //  a reused buffer would stay NaN.
        for (int64_t i = 0; i < M; i++) {
            for (int64_t j = 0; j < N; j++) {
                Y[i * ldc + j] = 0.0f;
            }
        }
    }
    if (M == 1) {
        //  y (N) = op(B)^T a (K); a is A's only row (or column if ta)
        blasint inca = ta ? (blasint) lda : 1;
        if (tb) {
            cblas_sgemv (CblasRowMajor, CblasNoTrans, (blasint) N,
                         (blasint) K, alpha, B, (blasint) ldb, A, inca, beta,
                         Y, 1);
        }
        else {
            cblas_sgemv (CblasRowMajor, CblasTrans, (blasint) K, (blasint) N,
                         alpha, B, (blasint) ldb, A, inca, beta, Y, 1);
        }
    }
    else if (N == 1) {
        //  y (M) = op(A) (M,K) b (K); y is a column of Y
        blasint incb = tb ? 1 : (blasint) ldb;
        if (ta) {
            cblas_sgemv (CblasRowMajor, CblasTrans, (blasint) K, (blasint) M,
                         alpha, A, (blasint) lda, B, incb, beta, Y,
                         (blasint) ldc);
        }
        else {
            cblas_sgemv (CblasRowMajor, CblasNoTrans, (blasint) M,
                         (blasint) K, alpha, A, (blasint) lda, B, incb, beta,
                         Y, (blasint) ldc);
        }
    }
    else {
        cblas_sgemm (CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                     tb ? CblasTrans : CblasNoTrans, (blasint) M, (blasint) N,
                     (blasint) K, alpha, A, (blasint) lda, B, (blasint) ldb,
                     beta, Y, (blasint) ldc);
    }
}

int
zi_nn_gemm_bias_act (float *Y, const float *A, const float *B, bool trans_b,
                     const float *bias, int64_t M, int64_t N, int64_t K,
                     zi_nn_act_t act)
{
    zi_gemm_t g = {.M = M, .N = N, .K = K, .A = A, .lda = K, .B = B,
                   .ldb = trans_b ? K : N, .tb = trans_b, .Y = Y, .ldy = N,
                   .alpha = 1.0f, .C = bias, .c_rs = 0, .c_cs = 1,
                   .beta = 1.0f, .act = act};
    return zi_gemm_run (&g, NULL, NULL);
}

//  MatMul ----------------------------------------------------------------------

//  numpy matmul geometry: A (batchA..., M, K) @ B (batchB..., K, N), with a
//  1-D A promoted to (1,K) and a 1-D B to (K,1), the promoted dims dropped
//  from the output.
typedef struct {
    int64_t M, N, K;
    int br;                         //  broadcast batch rank
    int64_t bshape[ZI_MAX_RANK];    //  output batch dims
    int64_t astr[ZI_MAX_RANK];      //  A's matrix stride per batch dim (0 =
    int64_t bstr[ZI_MAX_RANK];      //  broadcast), likewise B's
    int64_t nbatch;
    bool fold;                      //  B has no batch: fold A's into M
    int orank;
    int64_t oshape[ZI_MAX_RANK];
} s_mm_t;

static int
s_matmul_geom (zi_kctx_t *ctx, const zi_tensor_t *a, const zi_tensor_t *b,
               s_mm_t *mm)
{
    int rc;
    if ((rc = zi_nn_require_f32 (ctx, a, "A"))
        || (rc = zi_nn_require_f32 (ctx, b, "B"))) {
        return rc;
    }
    if (a->rank < 1 || b->rank < 1) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "operands must have rank >= 1 (got %d and %d)",
                           a->rank, b->rank);
    }
    int ra = a->rank, rb = b->rank;
    mm->M = ra == 1 ? 1 : a->ne[ra - 2];
    mm->K = a->ne[ra - 1];
    int64_t kb = rb == 1 ? b->ne[0] : b->ne[rb - 2];
    mm->N = rb == 1 ? 1 : b->ne[rb - 1];
    if (kb != mm->K) {
        char sa[96], sb[96];
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "inner dims differ: A %s, B %s",
                           zi_tensor_shape_str (a, sa, sizeof sa),
                           zi_tensor_shape_str (b, sb, sizeof sb));
    }
    if (!s_blas_ok (mm->M) || !s_blas_ok (mm->N) || !s_blas_ok (mm->K)) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "matrix dims exceed INT_MAX");
    }
    int rab = ra > 2 ? ra - 2 : 0, rbb = rb > 2 ? rb - 2 : 0;
    if (zi_broadcast_shape (rab, a->ne, rbb, b->ne, &mm->br, mm->bshape)) {
        char sa[96], sb[96];
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "batch dims do not broadcast: A %s, B %s",
                           zi_tensor_shape_str (a, sa, sizeof sa),
                           zi_tensor_shape_str (b, sb, sizeof sb));
    }
    //  Strides in whole matrices, innermost batch dim first.
    int64_t sa = 1, sb = 1;
    for (int i = mm->br - 1; i >= 0; i--) {
        int ia = i - (mm->br - rab), ib = i - (mm->br - rbb);
        int64_t da = ia >= 0 ? a->ne[ia] : 1, db = ib >= 0 ? b->ne[ib] : 1;
        mm->astr[i] = da == 1 ? 0 : sa;
        mm->bstr[i] = db == 1 ? 0 : sb;
        sa *= da;
        sb *= db;
    }
    mm->fold = rbb == 0;
    mm->orank = 0;
    for (int i = 0; i < mm->br; i++) {
        mm->oshape[mm->orank++] = mm->bshape[i];
    }
    if (ra > 1) {
        mm->oshape[mm->orank++] = mm->M;
    }
    if (rb > 1) {
        mm->oshape[mm->orank++] = mm->N;
    }
    int64_t nbatch;
    if (zi_shape_count (mm->br, mm->bshape, &nbatch)) {
        return zi_op_fail (ctx, ZI_ERR_OVERFLOW, "batch size overflows");
    }
    mm->nbatch = nbatch;
    return ZI_OK;
}

static int
s_matmul_infer (zi_kctx_t *ctx)
{
    s_mm_t mm = {0};
    int rc = s_matmul_geom (ctx, ctx->in[0], ctx->in[1], &mm);
    if (rc) {
        return rc;
    }
    if (mm.orank > ZI_MAX_RANK) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "output rank exceeds %d",
                           ZI_MAX_RANK);
    }
    rc = zi_tensor_set_shape (ctx->out[0], ZI_DT_F32, mm.orank, mm.oshape);
    if (rc) {
        return zi_op_fail (ctx, rc, "output shape is too large");
    }
    return ZI_OK;
}

bool
zi_nn_matmul_bias_fusable (int out_rank, const int64_t *out_shape,
                           const zi_tensor_t *bias)
{
    if (!bias || bias->dtype != ZI_DT_F32 || bias->rank > out_rank) {
        return false;
    }
    int64_t n = zi_tensor_count (bias);
    if (n == 1) {
        return true;
    }
    if (out_rank < 1 || bias->rank < 1
        || bias->ne[bias->rank - 1] != out_shape[out_rank - 1]) {
        return false;
    }
    for (int i = 0; i + 1 < bias->rank; i++) {
        if (bias->ne[i] != 1) {
            return false;
        }
    }
    return true;
}

int
zi_nn_matmul_bias_act (zi_kctx_t *ctx, const zi_tensor_t *bias,
                       zi_nn_act_t act)
{
    return zi_nn_matmul_bias_act_cached (ctx, bias, act, NULL);
}

int
zi_nn_matmul_bias_act_cached (zi_kctx_t *ctx, const zi_tensor_t *bias,
                              zi_nn_act_t act, zi_gemm_pack_t **cache)
{
    const zi_tensor_t *a = ctx->in[0], *b = ctx->in[1];
    zi_tensor_t *y = ctx->out[0];
    s_mm_t mm = {0};
    int rc = s_matmul_geom (ctx, a, b, &mm);
    if (rc) {
        return rc;
    }
    if (bias && !zi_nn_matmul_bias_fusable (y->rank, y->ne, bias)) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "bias does not broadcast along the last dim");
    }
    //  L: length of the output's last dim, along which bias runs.
    int64_t L = y->rank > 0 ? y->ne[y->rank - 1] : 1;
    const float *bv = bias ? (const float *) bias->data : NULL;
    float bconst[1] = {0.0f};
    if (bias && zi_tensor_count (bias) == 1 && L != 1) {
        bconst[0] = bv[0];
        bv = NULL;
    }
    const float *A = (const float *) a->data, *B = (const float *) b->data;
    float *Y = (float *) y->data;
    int64_t mn = mm.M * mm.N;
    if (mm.nbatch == 0 || mn == 0) {
        return ZI_OK;
    }
    //  The bias goes into the GEMM's store when it runs along N (or is one
    //  value); a 1-D B makes the output's last dim M, and then the bias is
    //  added in a pass of its own, as Add would.
    zi_gemm_t g = {.M = mm.M, .N = mm.N, .K = mm.K, .A = A, .lda = mm.K,
                   .B = B, .ldb = mm.N, .Y = Y, .ldy = mm.N, .alpha = 1.0f,
                   .beta = 1.0f, .act = act};
    bool post = false;
    if (bv && L == mm.N) {
        g.C = bv;
        g.c_cs = 1;
    }
    else if (bias && !bv) {
        g.C = bconst;
    }
    else if (bv) {
        g.act.kind = ZI_NN_ACT_NONE;
        post = true;
    }
    if (mm.fold) {
        //  A (nbatch*M, K) @ B (K, N) -> Y (nbatch*M, N): one product.
        g.M = mm.nbatch * mm.M;
        if (!s_blas_ok (g.M)) {
            return zi_op_fail (ctx, ZI_ERR_LIMIT, "rows exceed INT_MAX");
        }
        rc = zi_gemm_run (&g, cache, ctx->pool);
    }
    else {
        //  Y_t (M,N) = A_t (M,K) @ B_t (K,N), over the broadcast batch.
        int64_t *off = (int64_t *) malloc ((size_t) mm.nbatch * 2 * sizeof *off);
        if (!off) {
            return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
        }
        int64_t idx[ZI_MAX_RANK] = {0};
        int64_t aoff = 0, boff = 0;
        for (int64_t t = 0; t < mm.nbatch; t++) {
            off[t] = aoff * mm.M * mm.K;
            off[mm.nbatch + t] = boff * mm.K * mm.N;
            //  odometer over the broadcast batch dims
            for (int i = mm.br - 1; i >= 0; i--) {
                aoff += mm.astr[i];
                boff += mm.bstr[i];
                if (++idx[i] < mm.bshape[i]) {
                    break;
                }
                aoff -= mm.astr[i] * mm.bshape[i];
                boff -= mm.bstr[i] * mm.bshape[i];
                idx[i] = 0;
            }
        }
        rc = zi_gemm_run_batch (&g, mm.nbatch, off, off + mm.nbatch, mn, ctx->pool);
        free (off);
    }
    if (rc) {
        return zi_op_fail (ctx, rc, "GEMM failed (%s)", zi_strerror (rc));
    }
    if (post) {
        for (int64_t t = 0; t < mm.nbatch; t++) {
            s_cols_bias_act (Y + t * mn, mn / L, L, bv, act);
        }
    }
    return ZI_OK;
}

static int
s_matmul_run (zi_kctx_t *ctx)
{
    return zi_nn_matmul_bias_act (ctx, NULL,
                                  (zi_nn_act_t){ZI_NN_ACT_NONE, 0.0f, 0.0f});
}

//  Gemm ------------------------------------------------------------------------

static int
s_gemm_check (const zi_node_t *node, char *err, size_t errlen)
{
    int rc;
    if ((rc = zi_nn_check_attr_type (node, "alpha", ZI_ATTR_FLOAT, err, errlen))
        || (rc = zi_nn_check_attr_type (node, "beta", ZI_ATTR_FLOAT, err,
                                        errlen))
        || (rc = zi_nn_check_attr_type (node, "transA", ZI_ATTR_INT, err,
                                        errlen))
        || (rc = zi_nn_check_attr_type (node, "transB", ZI_ATTR_INT, err,
                                        errlen))) {
        return rc;
    }
    //  "broadcast" (opset < 7) is ignored: we always broadcast C, a superset.
    return ZI_OK;
}

typedef struct {
    int64_t M, N, K;
    bool ta, tb;
    int64_t c0, c1;     //  C's dims as (rows, cols), each M/N or 1
} s_gemm_t;

static int
s_gemm_geom (zi_kctx_t *ctx, s_gemm_t *g)
{
    const zi_tensor_t *a = ctx->in[0], *b = ctx->in[1];
    const zi_tensor_t *c = ctx->n_in > 2 ? ctx->in[2] : NULL;
    int rc;
    if ((rc = zi_nn_require_f32 (ctx, a, "A"))
        || (rc = zi_nn_require_f32 (ctx, b, "B"))
        || (c && (rc = zi_nn_require_f32 (ctx, c, "C")))) {
        return rc;
    }
    if (a->rank != 2 || b->rank != 2) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "A and B must be 2-D (got rank %d and %d)",
                           a->rank, b->rank);
    }
    g->ta = zi_node_attr_int (ctx->node, "transA", 0) != 0;
    g->tb = zi_node_attr_int (ctx->node, "transB", 0) != 0;
    g->M = g->ta ? a->ne[1] : a->ne[0];
    g->K = g->ta ? a->ne[0] : a->ne[1];
    int64_t kb = g->tb ? b->ne[1] : b->ne[0];
    g->N = g->tb ? b->ne[0] : b->ne[1];
    if (kb != g->K) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "inner dims differ: %lld vs %lld",
                           (long long) g->K, (long long) kb);
    }
    if (!s_blas_ok (g->M) || !s_blas_ok (g->N) || !s_blas_ok (g->K)) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "matrix dims exceed INT_MAX");
    }
    g->c0 = g->c1 = 0;
    if (c) {
        if (c->rank > 2) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "C has rank %d (max 2)",
                               c->rank);
        }
        g->c0 = c->rank == 2 ? c->ne[0] : 1;
        g->c1 = c->rank >= 1 ? c->ne[c->rank - 1] : 1;
        if ((g->c0 != 1 && g->c0 != g->M) || (g->c1 != 1 && g->c1 != g->N)) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE,
                               "C (%lld,%lld) does not broadcast to "
                               "(%lld,%lld)",
                               (long long) g->c0, (long long) g->c1,
                               (long long) g->M, (long long) g->N);
        }
    }
    return ZI_OK;
}

static int
s_gemm_infer (zi_kctx_t *ctx)
{
    s_gemm_t g = {0};
    int rc = s_gemm_geom (ctx, &g);
    if (rc) {
        return rc;
    }
    rc = zi_tensor_set_shape (ctx->out[0], ZI_DT_F32, 2,
                              (int64_t[]){g.M, g.N});
    return rc ? zi_op_fail (ctx, rc, "output shape is too large") : ZI_OK;
}

int
zi_nn_gemm_act (zi_kctx_t *ctx, zi_nn_act_t act)
{
    return zi_nn_gemm_act_cached (ctx, act, NULL);
}

int
zi_nn_gemm_act_cached (zi_kctx_t *ctx, zi_nn_act_t act, zi_gemm_pack_t **cache)
{
    s_gemm_t g = {0};
    int rc = s_gemm_geom (ctx, &g);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *c = ctx->n_in > 2 ? ctx->in[2] : NULL;
    float beta = zi_node_attr_float (ctx->node, "beta", 1.0f);
    zi_gemm_t p = {.M = g.M, .N = g.N, .K = g.K,
                   .A = (const float *) ctx->in[0]->data,
                   .lda = g.ta ? g.M : g.K, .ta = g.ta,
                   .B = (const float *) ctx->in[1]->data,
                   .ldb = g.tb ? g.K : g.N, .tb = g.tb,
                   .Y = (float *) ctx->out[0]->data, .ldy = g.N,
                   .alpha = zi_node_attr_float (ctx->node, "alpha", 1.0f),
                   .beta = beta, .act = act};
    //  beta == 0 drops C altogether (as BLAS does), NaNs in it included.
    if (c && beta != 0.0f) {
        //  C (c0, c1) broadcast to (M, N): strides 0 along its 1-dims.
        p.C = (const float *) c->data;
        p.c_rs = g.c0 == 1 ? 0 : g.c1;
        p.c_cs = g.c1 == 1 ? 0 : 1;
    }
    rc = zi_gemm_run (&p, cache, ctx->pool);
    return rc ? zi_op_fail (ctx, rc, "GEMM failed (%s)", zi_strerror (rc)) : ZI_OK;
}

static int
s_gemm_run (zi_kctx_t *ctx)
{
    return zi_nn_gemm_act (ctx, (zi_nn_act_t){ZI_NN_ACT_NONE, 0.0f, 0.0f});
}

static int
s_conv_run (zi_kctx_t *ctx)
{
    return zi_nn_conv_act (ctx, (zi_nn_act_t){ZI_NN_ACT_NONE, 0.0f, 0.0f});
}

//  The table -------------------------------------------------------------------

const zi_op_def_t zi_ops_nn[] = {
    {"MatMul", "", 2, 2, 1, 1, NULL, s_matmul_infer, s_matmul_run},
    {"Gemm", "", 2, 3, 1, 1, s_gemm_check, s_gemm_infer, s_gemm_run},
    {"Conv", "", 2, 3, 1, 1, zi_nn_conv_check, zi_nn_conv_infer, s_conv_run},
    {"ConvTranspose", "", 2, 3, 1, 1, zi_nn_convt_check, zi_nn_convt_infer,
     zi_nn_convt_run},
    {"BatchNormalization", "", 5, 5, 1, 5, zi_nn_batchnorm_check,
     zi_nn_batchnorm_infer, zi_nn_batchnorm_run},
    {"InstanceNormalization", "", 3, 3, 1, 1, zi_nn_instnorm_check,
     zi_nn_instnorm_infer, zi_nn_instnorm_run},
    {"LayerNormalization", "", 2, 3, 1, 3, zi_nn_layernorm_check,
     zi_nn_layernorm_infer, zi_nn_layernorm_run},
    {"MaxPool", "", 1, 1, 1, 2, zi_nn_maxpool_check, zi_nn_maxpool_infer,
     zi_nn_maxpool_run},
    {"AveragePool", "", 1, 1, 1, 1, zi_nn_avgpool_check, zi_nn_avgpool_infer,
     zi_nn_avgpool_run},
    {"GlobalAveragePool", "", 1, 1, 1, 1, NULL, zi_nn_gpool_infer,
     zi_nn_gavgpool_run},
    {"GlobalMaxPool", "", 1, 1, 1, 1, NULL, zi_nn_gpool_infer,
     zi_nn_gmaxpool_run},
    {"LRN", "", 1, 1, 1, 1, zi_nn_lrn_check, zi_nn_lrn_infer, zi_nn_lrn_run},
    {"Softmax", "", 1, 1, 1, 1, zi_nn_softmax_check, zi_nn_softmax_infer,
     zi_nn_softmax_run},
    {"LogSoftmax", "", 1, 1, 1, 1, zi_nn_softmax_check, zi_nn_softmax_infer,
     zi_nn_logsoftmax_run},
    {"Hardmax", "", 1, 1, 1, 1, zi_nn_softmax_check, zi_nn_softmax_infer,
     zi_nn_hardmax_run},
    {"PRelu", "", 2, 2, 1, 1, NULL, zi_nn_prelu_infer, zi_nn_prelu_run},
    {NULL},
};
