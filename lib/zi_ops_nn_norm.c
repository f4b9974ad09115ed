/*  zi_ops_nn_norm.c - BatchNormalization (inference), InstanceNormalization,
    LayerNormalization, Softmax, LogSoftmax, Hardmax and PRelu; float32.

    Reductions (means, variances) accumulate in double: the rows are short
    enough that the cost does not show, and float sums of a few thousand
    values already drift past the tolerance the ONNX tests use.

    Softmax / LogSoftmax / Hardmax changed meaning at opset 13 (coerce to 2-D at
    `axis`, default 1, before; one axis, default -1, from 13 on). A node does
    not carry its opset, so the loader stores the model's default-domain
    opset in an INT attribute "__opset" on every node; absent, 13 is assumed.
*/
#include "zi_ops_nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

//  Broadcast src unidirectionally into dst (drank, dshape): src's dims,
//  aligned right, must each equal dst's or be 1 (the caller checked).
//  dst (dshape) <- src (src->ne)
static void
s_expand (float *dst, int drank, const int64_t *dshape, const zi_tensor_t *src)
{
    const float *s = (const float *) src->data;
    int64_t sstr[ZI_MAX_RANK], idx[ZI_MAX_RANK] = {0};
    int64_t stride = 1, total = 1;
    for (int i = drank - 1; i >= 0; i--) {
        int is = i - (drank - src->rank);
        int64_t sd = is >= 0 ? src->ne[is] : 1;
        sstr[i] = sd == 1 ? 0 : stride;
        stride *= sd;
        total *= dshape[i];
    }
    int64_t off = 0;
    for (int64_t t = 0; t < total; t++) {
        dst[t] = s[off];
        for (int i = drank - 1; i >= 0; i--) {
            off += sstr[i];
            if (++idx[i] < dshape[i]) {
                break;
            }
            off -= sstr[i] * dshape[i];
            idx[i] = 0;
        }
    }
}

//  True if t broadcasts unidirectionally to (rank, shape).
static bool
s_broadcasts_to (const zi_tensor_t *t, int rank, const int64_t *shape)
{
    if (t->rank > rank) {
        return false;
    }
    for (int i = 0; i < t->rank; i++) {
        int64_t d = t->ne[t->rank - 1 - i], target = shape[rank - 1 - i];
        if (d != 1 && d != target) {
            return false;
        }
    }
    return true;
}

//  BatchNormalization -------------------------------------------------------------------

int
zi_nn_batchnorm_check (const zi_node_t *node, char *err, size_t errlen)
{
    int rc;
    if ((rc = zi_nn_check_attr_type (node, "epsilon", ZI_ATTR_FLOAT, err,
                                     errlen))
        || (rc = zi_nn_check_attr_type (node, "momentum", ZI_ATTR_FLOAT, err,
                                        errlen))
        || (rc = zi_nn_check_attr_type (node, "training_mode", ZI_ATTR_INT,
                                        err, errlen))
        || (rc = zi_nn_check_attr_type (node, "spatial", ZI_ATTR_INT, err,
                                        errlen))) {
        return rc;
    }
    if (zi_node_attr_int (node, "training_mode", 0) != 0) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                        "node '%s' (%s): training_mode=1 is not supported "
                        "(inference only)",
                        node->name, node->op_type);
    }
    if (zi_node_attr_int (node, "spatial", 1) == 0) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                        "node '%s' (%s): spatial=0 (per-element statistics, "
                        "opset 7-8) is not supported",
                        node->name, node->op_type);
    }
    for (int i = 1; i < node->n_out; i++) {
        if (node->out[i] >= 0) {
            return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                            "node '%s' (%s): output %d (a training "
                            "statistic) is not supported",
                            node->name, node->op_type, i);
        }
    }
    return ZI_OK;
}

int
zi_nn_batchnorm_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    static const char *const names[] = {"X", "scale", "B", "mean", "var"};
    for (int i = 0; i < 5; i++) {
        int rc = zi_nn_require_f32 (ctx, ctx->in[i], names[i]);
        if (rc) {
            return rc;
        }
    }
    if (x->rank < 2) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "X has rank %d, expects >= 2",
                           x->rank);
    }
    for (int i = 1; i < 5; i++) {
        if (ctx->in[i]->rank != 1 || ctx->in[i]->ne[0] != x->ne[1]) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE,
                               "%s must have shape (%lld)", names[i],
                               (long long) x->ne[1]);
        }
    }
    for (int i = 1; i < ctx->n_out; i++) {
        if (ctx->out[i]) {
            return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED,
                               "training outputs are not supported");
        }
    }
    int rc = zi_tensor_set_shape (ctx->out[0], ZI_DT_F32, x->rank, x->ne);
    return rc ? zi_op_fail (ctx, rc, "bad output shape") : ZI_OK;
}

//  x (N, C, S) -> y = x * a[c] + b[c], a = scale / sqrt (var + eps),
//  b = B - mean * a
int
zi_nn_batchnorm_run (zi_kctx_t *ctx)
{
    int rc = zi_nn_batchnorm_infer (ctx);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0];
    const float *X = (const float *) x->data;
    const float *sc = (const float *) ctx->in[1]->data;
    const float *bi = (const float *) ctx->in[2]->data;
    const float *mu = (const float *) ctx->in[3]->data;
    const float *va = (const float *) ctx->in[4]->data;
    float *Y = (float *) ctx->out[0]->data;
    float eps = zi_node_attr_float (ctx->node, "epsilon", 1e-5f);
    int64_t N = x->ne[0], C = x->ne[1];
    int64_t S = N > 0 && C > 0 ? zi_tensor_count (x) / (N * C) : 0;
    for (int64_t c = 0; c < C; c++) {
        double a = (double) sc[c] / sqrt ((double) va[c] + (double) eps);
        float af = (float) a, bf = (float) ((double) bi[c] - mu[c] * a);
        for (int64_t n = 0; n < N; n++) {
            const float *xp = X + (n * C + c) * S;
            float *yp = Y + (n * C + c) * S;
            for (int64_t i = 0; i < S; i++) {
                yp[i] = xp[i] * af + bf;
            }
        }
    }
    return ZI_OK;
}

//  InstanceNormalization ----------------------------------------------------------------

int
zi_nn_instnorm_check (const zi_node_t *node, char *err, size_t errlen)
{
    return zi_nn_check_attr_type (node, "epsilon", ZI_ATTR_FLOAT, err, errlen);
}

int
zi_nn_instnorm_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    static const char *const names[] = {"input", "scale", "B"};
    for (int i = 0; i < 3; i++) {
        int rc = zi_nn_require_f32 (ctx, ctx->in[i], names[i]);
        if (rc) {
            return rc;
        }
    }
    if (x->rank < 2) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "input has rank %d", x->rank);
    }
    for (int i = 1; i < 3; i++) {
        if (ctx->in[i]->rank != 1 || ctx->in[i]->ne[0] != x->ne[1]) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE,
                               "%s must have shape (%lld)", names[i],
                               (long long) x->ne[1]);
        }
    }
    int rc = zi_tensor_set_shape (ctx->out[0], ZI_DT_F32, x->rank, x->ne);
    return rc ? zi_op_fail (ctx, rc, "bad output shape") : ZI_OK;
}

//  Sums of x (n,) and of (x - m)^2: 16 float lanes (vectorised; a plain
//  float reduction is not, without -ffast-math), folded into a double every
//  1024 elements so no float partial sum grows long enough to lose digits.
#define S_LANES 16
#define S_BLOCK 1024

static double
s_sum (const float *x, int64_t n, float m, bool sq)
{
    double total = 0.0;
    int64_t i = 0;
    while (i + S_LANES <= n) {
        float acc[S_LANES] = {0};
        int64_t end = i + S_BLOCK < n ? i + S_BLOCK : n;
        for (; i + S_LANES <= end; i += S_LANES) {
            for (int j = 0; j < S_LANES; j++) {
                float d = x[i + j] - m;
                acc[j] += sq ? d * d : d;
            }
        }
        for (int j = 0; j < S_LANES; j++) {
            total += acc[j];
        }
    }
    for (; i < n; i++) {
        double d = (double) x[i] - m;
        total += sq ? d * d : d;
    }
    return total;
}

//  Mean and 1/sqrt(var + eps) of x (n,), population variance, two passes.
static void
s_moments (const float *x, int64_t n, float eps, float *mean, float *inv)
{
    double m = n ? s_sum (x, n, 0.0f, false) / (double) n : 0.0;
    double v = n ? s_sum (x, n, (float) m, true) / (double) n : 0.0;
    *mean = (float) m;
    *inv = (float) (1.0 / sqrt (v + (double) eps));
}

//  max of x (n,), n >= 1
static float
s_max (const float *x, int64_t n)
{
    float acc[S_LANES];
    for (int j = 0; j < S_LANES; j++) {
        acc[j] = x[0];
    }
    int64_t i = 0;
    for (; i + S_LANES <= n; i += S_LANES) {
        for (int j = 0; j < S_LANES; j++) {
            acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
        }
    }
    float mx = acc[0];
    for (int j = 1; j < S_LANES; j++) {
        mx = acc[j] > mx ? acc[j] : mx;
    }
    for (; i < n; i++) {
        mx = x[i] > mx ? x[i] : mx;
    }
    return mx;
}

int
zi_nn_instnorm_run (zi_kctx_t *ctx)
{
    int rc = zi_nn_instnorm_infer (ctx);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0];
    const float *X = (const float *) x->data;
    const float *sc = (const float *) ctx->in[1]->data;
    const float *bi = (const float *) ctx->in[2]->data;
    float *Y = (float *) ctx->out[0]->data;
    float eps = zi_node_attr_float (ctx->node, "epsilon", 1e-5f);
    int64_t N = x->ne[0], C = x->ne[1];
    int64_t S = N > 0 && C > 0 ? zi_tensor_count (x) / (N * C) : 0;
    for (int64_t p = 0; p < N * C; p++) {
        int64_t c = p % C;
        float mean, inv;
        s_moments (X + p * S, S, eps, &mean, &inv);
        float a = sc[c] * inv, b = bi[c] - mean * a;
        const float *xp = X + p * S;
        float *yp = Y + p * S;
        for (int64_t i = 0; i < S; i++) {
            yp[i] = xp[i] * a + b;
        }
    }
    return ZI_OK;
}

//  LayerNormalization -----------------------------------------------------------------

int
zi_nn_layernorm_check (const zi_node_t *node, char *err, size_t errlen)
{
    int rc;
    if ((rc = zi_nn_check_attr_type (node, "axis", ZI_ATTR_INT, err, errlen))
        || (rc = zi_nn_check_attr_type (node, "epsilon", ZI_ATTR_FLOAT, err,
                                        errlen))
        || (rc = zi_nn_check_attr_type (node, "stash_type", ZI_ATTR_INT, err,
                                        errlen))) {
        return rc;
    }
    return ZI_OK;
}

static int
s_layernorm_geom (zi_kctx_t *ctx, int *axis, int64_t *outer, int64_t *inner)
{
    const zi_tensor_t *x = ctx->in[0], *sc = ctx->in[1];
    const zi_tensor_t *b = ctx->n_in > 2 ? ctx->in[2] : NULL;
    int rc;
    if ((rc = zi_nn_require_f32 (ctx, x, "X"))
        || (rc = zi_nn_require_f32 (ctx, sc, "Scale"))
        || (b && (rc = zi_nn_require_f32 (ctx, b, "B")))) {
        return rc;
    }
    int64_t a = zi_node_attr_int (ctx->node, "axis", -1);
    if (x->rank < 1 || zi_axis_normalize (a, x->rank, axis)) {
        return zi_op_fail (ctx, ZI_ERR_INVALID,
                           "axis %lld is out of range for rank %d",
                           (long long) a, x->rank);
    }
    int nr = x->rank - *axis;
    const int64_t *ns = x->ne + *axis;
    if (!s_broadcasts_to (sc, nr, ns) || (b && !s_broadcasts_to (b, nr, ns))) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "Scale / B do not broadcast to the normalised "
                           "dims");
    }
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < x->rank; i++) {
        *(i < *axis ? outer : inner) *= x->ne[i];
    }
    return ZI_OK;
}

int
zi_nn_layernorm_infer (zi_kctx_t *ctx)
{
    int axis;
    int64_t outer, inner;
    int rc = s_layernorm_geom (ctx, &axis, &outer, &inner);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0];
    if ((rc = zi_tensor_set_shape (ctx->out[0], ZI_DT_F32, x->rank, x->ne))) {
        return zi_op_fail (ctx, rc, "bad output shape");
    }
    //  Mean, InvStdDev: X's shape with the normalised dims set to 1.
    int64_t shape[ZI_MAX_RANK];
    for (int i = 0; i < x->rank; i++) {
        shape[i] = i < axis ? x->ne[i] : 1;
    }
    for (int i = 1; i < ctx->n_out && i < 3; i++) {
        if (ctx->out[i]
            && (rc = zi_tensor_set_shape (ctx->out[i], ZI_DT_F32, x->rank,
                                          shape))) {
            return zi_op_fail (ctx, rc, "bad output shape");
        }
    }
    return ZI_OK;
}

//  x (outer, inner) -> y = (x - mean) * invstd * scale (inner) + b (inner)
int
zi_nn_layernorm_run (zi_kctx_t *ctx)
{
    int axis;
    int64_t outer, inner;
    int rc = s_layernorm_geom (ctx, &axis, &outer, &inner);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0], *sc = ctx->in[1];
    const zi_tensor_t *b = ctx->n_in > 2 ? ctx->in[2] : NULL;
    float *mean_out = ctx->n_out > 1 && ctx->out[1]
                          ? (float *) ctx->out[1]->data : NULL;
    float *inv_out = ctx->n_out > 2 && ctx->out[2]
                         ? (float *) ctx->out[2]->data : NULL;
    float eps = zi_node_attr_float (ctx->node, "epsilon", 1e-5f);
    if (outer * inner == 0) {
        //  inner == 0: the mean of nothing; report 0 / 1/sqrt(eps).
        for (int64_t o = 0; o < outer; o++) {
            if (mean_out) {
                mean_out[o] = 0.0f;
            }
            if (inv_out) {
                inv_out[o] = 1.0f / sqrtf (eps);
            }
        }
        return ZI_OK;
    }
    //  Scale and B as full (inner,) vectors; expand them only if they are
    //  broadcast (rare: they normally have the normalised shape).
    float *tmp = NULL;
    const float *S = (const float *) sc->data;
    const float *Bv = b ? (const float *) b->data : NULL;
    bool sfull = zi_tensor_count (sc) == inner;
    bool bfull = !b || zi_tensor_count (b) == inner;
    if (!sfull || !bfull) {
        tmp = (float *) malloc ((size_t) inner * 2 * sizeof *tmp);
        if (!tmp) {
            return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
        }
        if (!sfull) {
            s_expand (tmp, x->rank - axis, x->ne + axis, sc);
            S = tmp;
        }
        if (!bfull) {
            s_expand (tmp + inner, x->rank - axis, x->ne + axis, b);
            Bv = tmp + inner;
        }
    }
    const float *X = (const float *) x->data;
    float *Y = (float *) ctx->out[0]->data;
    for (int64_t o = 0; o < outer; o++) {
        const float *xr = X + o * inner;
        float *yr = Y + o * inner;
        float mean, inv;
        s_moments (xr, inner, eps, &mean, &inv);
        if (Bv) {
            for (int64_t i = 0; i < inner; i++) {
                yr[i] = (xr[i] - mean) * inv * S[i] + Bv[i];
            }
        }
        else {
            for (int64_t i = 0; i < inner; i++) {
                yr[i] = (xr[i] - mean) * inv * S[i];
            }
        }
        if (mean_out) {
            mean_out[o] = mean;
        }
        if (inv_out) {
            inv_out[o] = inv;
        }
    }
    free (tmp);
    return ZI_OK;
}

//  Softmax / LogSoftmax ---------------------------------------------------------------

int
zi_nn_softmax_check (const zi_node_t *node, char *err, size_t errlen)
{
    return zi_nn_check_attr_type (node, "axis", ZI_ATTR_INT, err, errlen);
}

//  The reduction as (outer, n, inner): reduce over n, inner contiguous.
static int
s_softmax_geom (zi_kctx_t *ctx, int64_t *outer, int64_t *n, int64_t *inner)
{
    const zi_tensor_t *x = ctx->in[0];
    int rc = zi_nn_require_f32 (ctx, x, "input");
    if (rc) {
        return rc;
    }
    int64_t opset = zi_node_attr_int (ctx->node, "__opset", 13);
    bool coerce = opset < 13;
    int64_t a = zi_node_attr_int (ctx->node, "axis", coerce ? 1 : -1);
    *outer = *n = *inner = 1;
    if (x->rank == 0) {
        //  A scalar is its own (1,1) row whatever the axis.
        return ZI_OK;
    }
    int axis;
    //  Coercion to 2-D accepts axis == rank (everything in the outer part).
    if (coerce && a == x->rank) {
        axis = x->rank;
    }
    else if (zi_axis_normalize (a, x->rank, &axis)) {
        return zi_op_fail (ctx, ZI_ERR_INVALID,
                           "axis %lld is out of range for rank %d",
                           (long long) a, x->rank);
    }
    for (int i = 0; i < x->rank; i++) {
        if (i < axis) {
            *outer *= x->ne[i];
        }
        else if (coerce || i == axis) {
            *n *= x->ne[i];
        }
        else {
            *inner *= x->ne[i];
        }
    }
    return ZI_OK;
}

int
zi_nn_softmax_infer (zi_kctx_t *ctx)
{
    int64_t outer, n, inner;
    int rc = s_softmax_geom (ctx, &outer, &n, &inner);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0];
    rc = zi_tensor_set_shape (ctx->out[0], ZI_DT_F32, x->rank, x->ne);
    return rc ? zi_op_fail (ctx, rc, "bad output shape") : ZI_OK;
}

//  x (outer, n, inner) -> y, (log-)softmax over n.
static int
s_softmax_run (zi_kctx_t *ctx, bool logsm)
{
    int64_t outer, n, inner;
    int rc = s_softmax_geom (ctx, &outer, &n, &inner);
    if (rc) {
        return rc;
    }
    const float *X = (const float *) ctx->in[0]->data;
    float *Y = (float *) ctx->out[0]->data;
    if (outer * n * inner == 0) {
        return ZI_OK;
    }
    if (inner == 1) {
        for (int64_t o = 0; o < outer; o++) {
            const float *xr = X + o * n;
            float *yr = Y + o * n;
            float mx = s_max (xr, n);
            float sum = (float) zi_nn_exp_sum (yr, xr, NULL, mx, n);
            if (logsm) {
                float ls = mx + logf (sum);
                for (int64_t i = 0; i < n; i++) {
                    yr[i] = xr[i] - ls;
                }
            }
            else {
                float inv = 1.0f / sum;
                for (int64_t i = 0; i < n; i++) {
                    yr[i] *= inv;
                }
            }
        }
        return ZI_OK;
    }
    //  Strided axis: work on whole (inner,) slices so every loop is
    //  contiguous; mx and sum hold one value per inner position.
    float *buf = (float *) malloc ((size_t) inner * 2 * sizeof *buf);
    if (!buf) {
        return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
    }
    float *mx = buf, *sum = buf + inner;
    for (int64_t o = 0; o < outer; o++) {
        const float *xb = X + o * n * inner;
        float *yb = Y + o * n * inner;
        memcpy (mx, xb, (size_t) inner * sizeof *mx);
        for (int64_t j = 1; j < n; j++) {
            const float *xr = xb + j * inner;
            for (int64_t i = 0; i < inner; i++) {
                mx[i] = xr[i] > mx[i] ? xr[i] : mx[i];
            }
        }
        memset (sum, 0, (size_t) inner * sizeof *sum);
        for (int64_t j = 0; j < n; j++) {
            float *yr = yb + j * inner;
            zi_nn_exp_sum (yr, xb + j * inner, mx, 0.0f, inner);
            for (int64_t i = 0; i < inner; i++) {
                sum[i] += yr[i];
            }
        }
        if (logsm) {
            for (int64_t i = 0; i < inner; i++) {
                sum[i] = mx[i] + logf (sum[i]);
            }
            for (int64_t j = 0; j < n; j++) {
                const float *xr = xb + j * inner;
                float *yr = yb + j * inner;
                for (int64_t i = 0; i < inner; i++) {
                    yr[i] = xr[i] - sum[i];
                }
            }
        }
        else {
            for (int64_t i = 0; i < inner; i++) {
                sum[i] = 1.0f / sum[i];
            }
            for (int64_t j = 0; j < n; j++) {
                float *yr = yb + j * inner;
                for (int64_t i = 0; i < inner; i++) {
                    yr[i] *= sum[i];
                }
            }
        }
    }
    free (buf);
    return ZI_OK;
}

int
zi_nn_softmax_run (zi_kctx_t *ctx)
{
    return s_softmax_run (ctx, false);
}

int
zi_nn_logsoftmax_run (zi_kctx_t *ctx)
{
    return s_softmax_run (ctx, true);
}

//  x (outer, n, inner) -> y: 1 at the first maximum along n, else 0.
int
zi_nn_hardmax_run (zi_kctx_t *ctx)
{
    int64_t outer, n, inner;
    int rc = s_softmax_geom (ctx, &outer, &n, &inner);
    if (rc) {
        return rc;
    }
    const float *X = (const float *) ctx->in[0]->data;
    float *Y = (float *) ctx->out[0]->data;
    int64_t total = outer * n * inner;
    if (total == 0) {
        return ZI_OK;
    }
    memset (Y, 0, (size_t) total * sizeof *Y);
    for (int64_t o = 0; o < outer; o++) {
        const float *xb = X + o * n * inner;
        for (int64_t i = 0; i < inner; i++) {
            int64_t best = 0;
            for (int64_t j = 1; j < n; j++) {
                if (xb[j * inner + i] > xb[best * inner + i]) {
                    best = j;
                }
            }
            Y[(o * n + best) * inner + i] = 1.0f;
        }
    }
    return ZI_OK;
}

//  PRelu ------------------------------------------------------------------------------

//  Opset < 7 (before numpy broadcasting) gave a per-channel slope as (C,):
//  view it as (C, 1, ..., 1) so the broadcasting code below applies.
static const zi_tensor_t *
s_prelu_slope (zi_kctx_t *ctx, zi_tensor_t *legacy)
{
    const zi_tensor_t *x = ctx->in[0], *sl = ctx->in[1];
    if (zi_node_attr_int (ctx->node, "__opset", 13) < 7 && sl->rank == 1
        && x->rank >= 2 && sl->ne[0] == x->ne[1] && sl->ne[0] != 1) {
        int64_t shape[ZI_MAX_RANK];
        for (int i = 1; i < x->rank; i++) {
            shape[i - 1] = i == 1 ? sl->ne[0] : 1;
        }
        if (zi_tensor_init_view (legacy, sl->dtype, x->rank - 1, shape,
                                 sl->data, sl->nbytes) == 0) {
            return legacy;
        }
    }
    return sl;
}

int
zi_nn_prelu_infer (zi_kctx_t *ctx)
{
    zi_tensor_t legacy;
    const zi_tensor_t *x = ctx->in[0], *sl = s_prelu_slope (ctx, &legacy);
    int rc;
    if ((rc = zi_nn_require_f32 (ctx, x, "X"))
        || (rc = zi_nn_require_f32 (ctx, sl, "slope"))) {
        return rc;
    }
    if (!s_broadcasts_to (sl, x->rank, x->ne)) {
        char sx[96], ss[96];
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "slope %s does not broadcast to X %s",
                           zi_tensor_shape_str (sl, ss, sizeof ss),
                           zi_tensor_shape_str (x, sx, sizeof sx));
    }
    rc = zi_tensor_set_shape (ctx->out[0], ZI_DT_F32, x->rank, x->ne);
    return rc ? zi_op_fail (ctx, rc, "bad output shape") : ZI_OK;
}

//  x (total) -> y = x < 0 ? x * slope : x, slope repeating every `period`
int
zi_nn_prelu_run (zi_kctx_t *ctx)
{
    int rc = zi_nn_prelu_infer (ctx);
    if (rc) {
        return rc;
    }
    zi_tensor_t legacy;
    const zi_tensor_t *x = ctx->in[0], *sl = s_prelu_slope (ctx, &legacy);
    const float *X = (const float *) x->data;
    const float *Sv = (const float *) sl->data;
    float *Y = (float *) ctx->out[0]->data;
    int64_t total = zi_tensor_count (x);
    if (total == 0) {
        return ZI_OK;
    }
    if (zi_tensor_count (sl) == 1) {
        float s = Sv[0];
        for (int64_t i = 0; i < total; i++) {
            Y[i] = X[i] < 0.0f ? X[i] * s : X[i];
        }
        return ZI_OK;
    }
    //  j: the outermost X dim (right-aligned) where slope is not 1. The
    //  slope pattern then repeats every prod (X.ne[j:]) elements.
    int j = x->rank - sl->rank;
    while (j < x->rank && sl->ne[j - (x->rank - sl->rank)] == 1) {
        j++;
    }
    int64_t period = 1;
    for (int i = j; i < x->rank; i++) {
        period *= x->ne[i];
    }
    float *tmp = NULL;
    if (zi_tensor_count (sl) != period) {
        tmp = (float *) malloc ((size_t) period * sizeof *tmp);
        if (!tmp) {
            return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
        }
        s_expand (tmp, x->rank - j, x->ne + j, sl);
        Sv = tmp;
    }
    for (int64_t o = 0; o < total; o += period) {
        const float *xr = X + o;
        float *yr = Y + o;
        for (int64_t i = 0; i < period; i++) {
            yr[i] = xr[i] < 0.0f ? xr[i] * Sv[i] : xr[i];
        }
    }
    free (tmp);
    return ZI_OK;
}
