/*  zi_ops_reduce.c - reductions: Reduce*, ArgMax / ArgMin, TopK, CumSum.

    Reduce* over any set of axes walks the input once in memory order. The
    dims are first merged into runs of "kept" and "reduced" dims, so that the
    innermost loop either folds a contiguous row into one accumulator
    (reducing the last axis) or adds a row into a row of accumulators
    (reducing an outer axis):

        x (a, r, b) reduce axis 1:  for a: for r: acc[a, :] op= x[a, r, :]
        x (a, r)    reduce axis 1:  for a: acc[a] op= fold(x[a, :])

    Accumulators are double for float inputs and int64 for integer inputs
    (int32 sums do not wrap early). Axes come from the input when the node
    has it (ReduceSum from opset 13, the others from 18) and from the
    attribute otherwise. An empty reduction gives the identity of the op
    (0 for sums, 1 for products, -inf / the dtype's lowest value for max).

    Supported dtypes: float32, float64, float16, bfloat16, int8, uint8,
    int16, uint16, int32, uint32, int64 (ArgMax/ArgMin/TopK: the same;
    CumSum: float32, float64, int32, int64).
*/
#include "zi_ops.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

//  Helpers -------------------------------------------------------------------------

static const zi_tensor_t *
s_in (const zi_kctx_t *ctx, int i)
{
    return i < ctx->n_in ? ctx->in[i] : NULL;
}

static int
s_set_out (zi_kctx_t *ctx, int i, zi_dtype_t dtype, int rank,
           const int64_t *shape)
{
    zi_tensor_t *t = i < ctx->n_out ? ctx->out[i] : NULL;
    if (!t) {
        return ZI_OK;
    }
    int rc = zi_tensor_set_shape (t, dtype, rank, shape);
    if (rc) {
        char buf[128];
        return zi_op_fail (ctx, rc, "bad output shape %s",
                           zi_shape_str (rank, shape, buf, sizeof buf));
    }
    return ZI_OK;
}

static int
s_check_attr (const zi_node_t *node, const char *name, zi_attr_type_t type,
              char *err, size_t errlen)
{
    const zi_attr_t *a = zi_node_attr (node, name);
    if (a && a->type != type) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "node '%s' (%s): attribute '%s' has type %d, "
                        "expected %d", node->name, node->op_type, name,
                        (int) a->type, (int) type);
    }
    return ZI_OK;
}

static bool
s_is_float (zi_dtype_t dt)
{
    return dt == ZI_DT_F32 || dt == ZI_DT_F64 || dt == ZI_DT_F16
           || dt == ZI_DT_BF16;
}

static bool
s_is_int (zi_dtype_t dt)
{
    return dt == ZI_DT_I8 || dt == ZI_DT_U8 || dt == ZI_DT_I16
           || dt == ZI_DT_U16 || dt == ZI_DT_I32 || dt == ZI_DT_U32
           || dt == ZI_DT_I64;
}

static int
s_check_dtype (zi_kctx_t *ctx, zi_dtype_t dt)
{
    if (!s_is_float (dt) && !s_is_int (dt)) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "dtype %s is not "
                           "supported", zi_dtype_name (dt));
    }
    return ZI_OK;
}

static double
s_load_f (zi_dtype_t dt, const void *p, int64_t i)
{
    switch (dt) {
        case ZI_DT_F32: return ((const float *) p)[i];
        case ZI_DT_F64: return ((const double *) p)[i];
        case ZI_DT_F16: return zi_f16_to_f32 (((const uint16_t *) p)[i]);
        case ZI_DT_BF16: return zi_bf16_to_f32 (((const uint16_t *) p)[i]);
        default: return 0;
    }
}

static int64_t
s_load_i (zi_dtype_t dt, const void *p, int64_t i)
{
    switch (dt) {
        case ZI_DT_I8: return ((const int8_t *) p)[i];
        case ZI_DT_U8: return ((const uint8_t *) p)[i];
        case ZI_DT_I16: return ((const int16_t *) p)[i];
        case ZI_DT_U16: return ((const uint16_t *) p)[i];
        case ZI_DT_I32: return ((const int32_t *) p)[i];
        case ZI_DT_U32: return ((const uint32_t *) p)[i];
        case ZI_DT_I64: return ((const int64_t *) p)[i];
        default: return 0;
    }
}

static uint16_t
s_f32_to_bf16 (float f)
{
    uint32_t u;
    memcpy (&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) {
        return (uint16_t) ((u >> 16) | 0x40);      //  keep NaN a NaN
    }
    return (uint16_t) ((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static void
s_store_f (zi_dtype_t dt, void *p, int64_t i, double v)
{
    switch (dt) {
        case ZI_DT_F32: ((float *) p)[i] = (float) v; break;
        case ZI_DT_F64: ((double *) p)[i] = v; break;
        case ZI_DT_F16: ((uint16_t *) p)[i] = zi_f32_to_f16 ((float) v); break;
        case ZI_DT_BF16: ((uint16_t *) p)[i] = s_f32_to_bf16 ((float) v); break;
        default: break;
    }
}

//  Store an integer, saturating to the dtype's range (so an empty ReduceMax
//  gives the dtype's lowest value, not a wrapped one).
static void
s_store_i (zi_dtype_t dt, void *p, int64_t i, int64_t v)
{
#define S_SAT(T, lo, hi) ((T) (v < (lo) ? (lo) : (v > (hi) ? (hi) : v)))
    switch (dt) {
        case ZI_DT_I8: ((int8_t *) p)[i] = S_SAT (int8_t, INT8_MIN, INT8_MAX); break;
        case ZI_DT_U8: ((uint8_t *) p)[i] = S_SAT (uint8_t, 0, UINT8_MAX); break;
        case ZI_DT_I16: ((int16_t *) p)[i] = S_SAT (int16_t, INT16_MIN, INT16_MAX); break;
        case ZI_DT_U16: ((uint16_t *) p)[i] = S_SAT (uint16_t, 0, UINT16_MAX); break;
        case ZI_DT_I32: ((int32_t *) p)[i] = S_SAT (int32_t, INT32_MIN, INT32_MAX); break;
        case ZI_DT_U32: ((uint32_t *) p)[i] = S_SAT (uint32_t, 0, (int64_t) UINT32_MAX); break;
        case ZI_DT_I64: ((int64_t *) p)[i] = v; break;
        default: break;
    }
#undef S_SAT
}

//  Reduce* -----------------------------------------------------------------------------

typedef enum {
    S_SUM, S_MEAN, S_MAX, S_MIN, S_PROD, S_L1, S_L2, S_SUMSQ, S_LOGSUM,
    S_LOGSUMEXP,
} s_rop_t;

static const struct {
    const char *name;
    s_rop_t op;
} s_rops[] = {
    {"ReduceSum", S_SUM}, {"ReduceMean", S_MEAN}, {"ReduceMax", S_MAX},
    {"ReduceMin", S_MIN}, {"ReduceProd", S_PROD}, {"ReduceL1", S_L1},
    {"ReduceL2", S_L2}, {"ReduceSumSquare", S_SUMSQ},
    {"ReduceLogSum", S_LOGSUM}, {"ReduceLogSumExp", S_LOGSUMEXP},
};

static s_rop_t
s_rop_of (const zi_node_t *node)
{
    for (size_t i = 0; i < sizeof s_rops / sizeof s_rops[0]; i++) {
        if (strcmp (node->op_type, s_rops[i].name) == 0) {
            return s_rops[i].op;
        }
    }
    return S_SUM;
}

//  What the accumulation loop does per element: a op= f(v).
typedef enum { S_ACC_SUM, S_ACC_ABS, S_ACC_SQ, S_ACC_PROD, S_ACC_MAX, S_ACC_MIN,
               S_ACC_EXP } s_acc_t;

//  The reduction, resolved: merged dims of the input, which are reduced, and
//  the output stride of each (0 for reduced dims).
typedef struct {
    int r;
    int64_t ne[ZI_MAX_RANK];
    bool red[ZI_MAX_RANK];
    int64_t ost[ZI_MAX_RANK];
    int64_t n_out;          //  output elements
    int64_t n_red;          //  elements folded into each output
    bool noop;              //  noop_with_empty_axes with no axes: a copy
    int out_rank;
    int64_t out_shape[ZI_MAX_RANK];
} s_rgeom_t;

static int
s_reduce_geom (zi_kctx_t *ctx, s_rgeom_t *g)
{
    const zi_tensor_t *x = ctx->in[0];
    const zi_node_t *node = ctx->node;
    int rank = x->rank, n = 0;
    int64_t axes[ZI_MAX_RANK];
    const zi_tensor_t *at = s_in (ctx, 1);
    if (at) {
        if (at->dtype != ZI_DT_I64 && at->dtype != ZI_DT_I32) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "axes must be int64");
        }
        int64_t cnt = zi_tensor_count (at);
        if (cnt > ZI_MAX_RANK) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "axes has %lld values",
                               (long long) cnt);
        }
        if (cnt > 0) {
            if (!at->data) {
                return ZI_OP_NEEDS_VALUE;
            }
            int rc = zi_op_read_ints (at, axes, ZI_MAX_RANK, &n);
            if (rc) {
                return zi_op_fail (ctx, rc < 0 ? rc : ZI_ERR_SHAPE, "cannot "
                                   "read axes");
            }
        }
    }
    else {
        const int64_t *a = zi_node_attr_ints (node, "axes", &n);
        if (n > ZI_MAX_RANK) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "too many axes");
        }
        if (n > 0) {
            memcpy (axes, a, (size_t) n * sizeof *a);
        }
    }
    bool keep = zi_node_attr_int (node, "keepdims", 1) != 0;
    bool noop = zi_node_attr_int (node, "noop_with_empty_axes", 0) != 0;
    bool mask[ZI_MAX_RANK];
    for (int d = 0; d < rank; d++) {
        mask[d] = n == 0;       //  no axes: reduce them all
    }
    g->noop = n == 0 && noop;
    if (g->noop) {
        for (int d = 0; d < rank; d++) {
            mask[d] = false;
        }
    }
    for (int i = 0; i < n; i++) {
        int a;
        if (zi_axis_normalize (axes[i], rank, &a) || a >= rank) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis %lld out of range for "
                               "rank %d", (long long) axes[i], rank);
        }
        //  Repeated axes are tolerated: reducing an axis twice is once.
        mask[a] = true;
    }
    g->out_rank = 0;
    g->n_out = 1;
    g->n_red = 1;
    for (int d = 0; d < rank; d++) {
        if (mask[d]) {
            g->n_red *= x->ne[d];
            if (keep) {
                g->out_shape[g->out_rank++] = 1;
            }
        }
        else {
            g->n_out *= x->ne[d];
            g->out_shape[g->out_rank++] = x->ne[d];
        }
    }
    //  Merge adjacent dims of the same kind; drop size-1 dims.
    int64_t ost[ZI_MAX_RANK], s = 1;
    for (int d = rank - 1; d >= 0; d--) {
        ost[d] = mask[d] ? 0 : s;
        if (!mask[d]) {
            s *= x->ne[d];
        }
    }
    g->r = 0;
    for (int d = 0; d < rank; d++) {
        if (x->ne[d] == 1) {
            continue;
        }
        if (g->r > 0 && g->red[g->r - 1] == mask[d]) {
            g->ne[g->r - 1] *= x->ne[d];
            g->ost[g->r - 1] = ost[d];
            continue;
        }
        g->ne[g->r] = x->ne[d];
        g->red[g->r] = mask[d];
        g->ost[g->r] = ost[d];
        g->r++;
    }
    return ZI_OK;
}

//  Accumulate x (input, memory order) into acc (n_out) following g.
//  For S_ACC_EXP, m holds the per-output max subtracted before exp().
#define S_ROW(ACC, EXPR)                                                       \
    do {                                                                       \
        if (red_inner) {                                                       \
            ACC a = acc[o];                                                    \
            for (int64_t j = 0; j < w; j++) {                                  \
                ACC v = (ACC) xr[j];                                           \
                a = (EXPR);                                                    \
            }                                                                  \
            acc[o] = a;                                                        \
        }                                                                      \
        else {                                                                 \
            for (int64_t j = 0; j < w; j++) {                                  \
                ACC v = (ACC) xr[j];                                           \
                ACC a = acc[o + j];                                            \
                acc[o + j] = (EXPR);                                           \
            }                                                                  \
        }                                                                      \
    } while (0)

#define S_DEFINE_ACCUMULATE(NAME, T, ACC, IS_FLOAT)                            \
    static void NAME (ACC *acc, const T *x, const s_rgeom_t *g, s_acc_t f,     \
                      const double *m)                                         \
    {                                                                          \
        if (g->r == 0) {                                                       \
            /* a scalar, or only size-1 dims */                                \
            int64_t w = 1, o = 0;                                              \
            const T *xr = x;                                                   \
            bool red_inner = true;                                             \
            (void) m;                                                          \
            switch (f) {                                                       \
                case S_ACC_SUM: S_ROW (ACC, a + v); break;                     \
                case S_ACC_ABS: S_ROW (ACC, v < 0 ? a - v : a + v); break;     \
                case S_ACC_SQ: S_ROW (ACC, a + v * v); break;                  \
                case S_ACC_PROD: S_ROW (ACC, a * v); break;                    \
                case S_ACC_MAX: S_ROW (ACC, (v > a || v != v) ? v : a); break; \
                case S_ACC_MIN: S_ROW (ACC, (v < a || v != v) ? v : a); break; \
                case S_ACC_EXP:                                                \
                    S_ROW (ACC, a + (ACC) exp ((double) v - m[o])); break;     \
            }                                                                  \
            return;                                                            \
        }                                                                      \
        int r = g->r;                                                          \
        int64_t w = g->ne[r - 1];                                              \
        bool red_inner = g->red[r - 1];                                        \
        int64_t pos[ZI_MAX_RANK] = {0}, o = 0;                                 \
        const T *xr = x;                                                       \
        for (;;) {                                                             \
            switch (f) {                                                       \
                case S_ACC_SUM: S_ROW (ACC, a + v); break;                     \
                case S_ACC_ABS: S_ROW (ACC, v < 0 ? a - v : a + v); break;     \
                case S_ACC_SQ: S_ROW (ACC, a + v * v); break;                  \
                case S_ACC_PROD: S_ROW (ACC, a * v); break;                    \
                case S_ACC_MAX: S_ROW (ACC, (v > a || v != v) ? v : a); break; \
                case S_ACC_MIN: S_ROW (ACC, (v < a || v != v) ? v : a); break; \
                case S_ACC_EXP:                                                \
                    if (red_inner) {                                           \
                        ACC a = acc[o];                                        \
                        for (int64_t j = 0; j < w; j++) {                      \
                            a += (ACC) exp ((double) xr[j] - m[o]);            \
                        }                                                      \
                        acc[o] = a;                                            \
                    }                                                          \
                    else {                                                     \
                        for (int64_t j = 0; j < w; j++) {                      \
                            acc[o + j] += (ACC) exp ((double) xr[j]            \
                                                     - m[o + j]);              \
                        }                                                      \
                    }                                                          \
                    break;                                                     \
            }                                                                  \
            xr += w;                                                           \
            int d = r - 2;                                                     \
            for (; d >= 0; d--) {                                              \
                pos[d]++;                                                      \
                o += g->ost[d];                                                \
                if (pos[d] < g->ne[d]) {                                       \
                    break;                                                     \
                }                                                              \
                o -= g->ost[d] * g->ne[d];                                     \
                pos[d] = 0;                                                    \
            }                                                                  \
            if (d < 0) {                                                       \
                break;                                                         \
            }                                                                  \
        }                                                                      \
        (void) (IS_FLOAT);                                                     \
    }

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wfloat-equal"
S_DEFINE_ACCUMULATE (s_acc_f32, float, double, 1)
S_DEFINE_ACCUMULATE (s_acc_f64, double, double, 1)
S_DEFINE_ACCUMULATE (s_acc_i64, int64_t, int64_t, 0)
#pragma GCC diagnostic pop

static int
s_reduce_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int rc = s_check_dtype (ctx, x->dtype);
    if (rc) {
        return rc;
    }
    s_rgeom_t g;
    rc = s_reduce_geom (ctx, &g);
    if (rc) {
        return rc;
    }
    if (g.noop) {
        return s_set_out (ctx, 0, x->dtype, x->rank, x->ne);
    }
    return s_set_out (ctx, 0, x->dtype, g.out_rank, g.out_shape);
}

//  Run the accumulation on whatever representation x has: float32 / float64
//  / int64 directly, anything else through a converted copy.
static int
s_accumulate (zi_kctx_t *ctx, const zi_tensor_t *x, bool as_float, void *acc,
              const s_rgeom_t *g, s_acc_t f, const double *m)
{
    int64_t count = zi_tensor_count (x);
    if (count == 0) {
        return ZI_OK;
    }
    if (as_float && x->dtype == ZI_DT_F32) {
        s_acc_f32 ((double *) acc, (const float *) x->data, g, f, m);
        return ZI_OK;
    }
    if (as_float && x->dtype == ZI_DT_F64) {
        s_acc_f64 ((double *) acc, (const double *) x->data, g, f, m);
        return ZI_OK;
    }
    if (!as_float && x->dtype == ZI_DT_I64) {
        s_acc_i64 ((int64_t *) acc, (const int64_t *) x->data, g, f, m);
        return ZI_OK;
    }
    void *tmp = malloc ((size_t) count * 8);
    if (!tmp) {
        return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
    }
    for (int64_t i = 0; i < count; i++) {
        if (as_float) {
            ((double *) tmp)[i] = s_is_float (x->dtype)
                                      ? s_load_f (x->dtype, x->data, i)
                                      : (double) s_load_i (x->dtype, x->data, i);
        }
        else {
            ((int64_t *) tmp)[i] = s_load_i (x->dtype, x->data, i);
        }
    }
    if (as_float) {
        s_acc_f64 ((double *) acc, (const double *) tmp, g, f, m);
    }
    else {
        s_acc_i64 ((int64_t *) acc, (const int64_t *) tmp, g, f, m);
    }
    free (tmp);
    return ZI_OK;
}

static int
s_reduce_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *y = ctx->out[0];
    s_rgeom_t g;
    int rc = s_reduce_geom (ctx, &g);
    if (rc) {
        return rc < 0 ? rc : zi_op_fail (ctx, ZI_ERR_INVALID, "axes unknown "
                                         "at run time");
    }
    if (g.noop) {
        if (x->nbytes > 0) {
            memcpy (y->data, x->data, x->nbytes);
        }
        return ZI_OK;
    }
    s_rop_t op = s_rop_of (ctx->node);
    //  Integer inputs keep exact int64 sums and products; the ops that end
    //  in sqrt / log go through doubles.
    bool as_float = s_is_float (x->dtype) || op == S_L2 || op == S_LOGSUM
                    || op == S_LOGSUMEXP;
    int64_t n = g.n_out;
    if (n == 0) {
        return ZI_OK;
    }
    void *acc = malloc ((size_t) n * 8);
    double *m = NULL;
    if (!acc) {
        return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
    }
    double *af = (double *) acc;
    int64_t *ai = (int64_t *) acc;
    s_acc_t f;
    double init_f = 0;
    int64_t init_i = 0;
    switch (op) {
        case S_MAX: f = S_ACC_MAX; init_f = -INFINITY; init_i = INT64_MIN; break;
        case S_MIN: f = S_ACC_MIN; init_f = INFINITY; init_i = INT64_MAX; break;
        case S_PROD: f = S_ACC_PROD; init_f = 1; init_i = 1; break;
        case S_L1: f = S_ACC_ABS; break;
        case S_L2: case S_SUMSQ: f = S_ACC_SQ; break;
        default: f = S_ACC_SUM; break;
    }
    for (int64_t i = 0; i < n; i++) {
        if (as_float) {
            af[i] = init_f;
        }
        else {
            ai[i] = init_i;
        }
    }
    if (op == S_LOGSUMEXP) {
        //  Two passes: the max, then sum(exp(x - max)), so large inputs do
        //  not overflow.
        m = (double *) malloc ((size_t) n * sizeof *m);
        if (!m) {
            free (acc);
            return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
        }
        for (int64_t i = 0; i < n; i++) {
            m[i] = -INFINITY;
        }
        rc = s_accumulate (ctx, x, true, m, &g, S_ACC_MAX, NULL);
        for (int64_t i = 0; i < n; i++) {
            //  An infinite max cannot be subtracted; the result is the max.
            if (!isfinite (m[i])) {
                m[i] = 0;
            }
        }
        if (!rc) {
            rc = s_accumulate (ctx, x, true, acc, &g, S_ACC_EXP, m);
        }
    }
    else {
        rc = s_accumulate (ctx, x, as_float, acc, &g, f, NULL);
    }
    if (rc) {
        free (acc);
        free (m);
        return rc;
    }
    double cnt = (double) g.n_red;
    for (int64_t i = 0; i < n; i++) {
        if (as_float) {
            double v = af[i];
            switch (op) {
                case S_MEAN: v = v / cnt; break;
                case S_L2: v = sqrt (v); break;
                case S_LOGSUM: v = log (v); break;
                case S_LOGSUMEXP: v = m[i] + log (v); break;
                default: break;
            }
            if (s_is_float (y->dtype)) {
                s_store_f (y->dtype, y->data, i, v);
            }
            else {
                s_store_i (y->dtype, y->data, i,
                           isnan (v) ? 0 : (v >= 9.2e18 ? INT64_MAX
                                            : (v <= -9.2e18 ? INT64_MIN
                                               : (int64_t) v)));
            }
        }
        else {
            int64_t v = ai[i];
            if (op == S_MEAN) {
                v = g.n_red > 0 ? v / g.n_red : 0;
            }
            s_store_i (y->dtype, y->data, i, v);
        }
    }
    free (acc);
    free (m);
    return ZI_OK;
}

static int
s_reduce_check (const zi_node_t *node, char *err, size_t errlen)
{
    int rc = s_check_attr (node, "axes", ZI_ATTR_INTS, err, errlen);
    if (!rc) {
        rc = s_check_attr (node, "keepdims", ZI_ATTR_INT, err, errlen);
    }
    if (!rc) {
        rc = s_check_attr (node, "noop_with_empty_axes", ZI_ATTR_INT, err,
                           errlen);
    }
    return rc;
}

//  ArgMax / ArgMin --------------------------------------------------------------------

static int
s_arg_geom (zi_kctx_t *ctx, int *axis, int64_t *outer, int64_t *n,
            int64_t *inner)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t a = zi_node_attr_int (ctx->node, "axis", 0);
    if (x->rank == 0 || zi_axis_normalize (a, x->rank, axis)) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis %lld out of range for "
                           "rank %d", (long long) a, x->rank);
    }
    *outer = 1;
    *inner = 1;
    for (int d = 0; d < *axis; d++) {
        *outer *= x->ne[d];
    }
    for (int d = *axis + 1; d < x->rank; d++) {
        *inner *= x->ne[d];
    }
    *n = x->ne[*axis];
    return ZI_OK;
}

static int
s_arg_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int axis;
    int64_t outer, n, inner;
    int rc = s_check_dtype (ctx, x->dtype);
    if (!rc) {
        rc = s_arg_geom (ctx, &axis, &outer, &n, &inner);
    }
    if (rc) {
        return rc;
    }
    if (n == 0 && outer * inner > 0) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "cannot take the arg of an "
                           "empty axis");
    }
    int64_t shape[ZI_MAX_RANK];
    int r = 0;
    bool keep = zi_node_attr_int (ctx->node, "keepdims", 1) != 0;
    for (int d = 0; d < x->rank; d++) {
        if (d != axis) {
            shape[r++] = x->ne[d];
        }
        else if (keep) {
            shape[r++] = 1;
        }
    }
    return s_set_out (ctx, 0, ZI_DT_I64, r, shape);
}

//  Is v a better pick than the current best b? NaN counts as the extreme
//  (the first NaN wins, as in numpy).
#define S_ARG_LOOP(T, LOAD)                                                    \
    for (int64_t o = 0; o < outer; o++) {                                      \
        for (int64_t i = 0; i < inner; i++) {                                  \
            int64_t base = o * n * inner + i;                                  \
            T b = LOAD (base);                                                 \
            int64_t bi = 0;                                                    \
            for (int64_t k = 1; k < n; k++) {                                  \
                T v = LOAD (base + k * inner);                                 \
                bool better;                                                   \
                if (b != b) {                                                  \
                    better = false;                                            \
                }                                                              \
                else if (v != v) {                                             \
                    better = true;                                             \
                }                                                              \
                else if (is_max) {                                             \
                    better = last ? v >= b : v > b;                            \
                }                                                              \
                else {                                                         \
                    better = last ? v <= b : v < b;                            \
                }                                                              \
                if (better) {                                                  \
                    b = v;                                                     \
                    bi = k;                                                    \
                }                                                              \
            }                                                                  \
            y[o * inner + i] = bi;                                             \
        }                                                                      \
    }

//  x (outer, n, inner) -> y (outer, inner) int64 positions along n
static int
s_arg_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int axis;
    int64_t outer, n, inner;
    int rc = s_arg_geom (ctx, &axis, &outer, &n, &inner);
    if (rc) {
        return rc;
    }
    if (outer * inner == 0) {
        return ZI_OK;
    }
    bool is_max = strcmp (ctx->node->op_type, "ArgMax") == 0;
    bool last = zi_node_attr_int (ctx->node, "select_last_index", 0) != 0;
    int64_t *y = (int64_t *) ctx->out[0]->data;
    zi_dtype_t dt = x->dtype;
    const void *p = x->data;
#define S_LOAD_F32(i) (((const float *) p)[i])
#define S_LOAD_F(i) s_load_f (dt, p, i)
#define S_LOAD_I(i) s_load_i (dt, p, i)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wfloat-equal"
    if (dt == ZI_DT_F32) {
        S_ARG_LOOP (float, S_LOAD_F32)
    }
    else if (s_is_float (dt)) {
        S_ARG_LOOP (double, S_LOAD_F)
    }
    else {
        S_ARG_LOOP (int64_t, S_LOAD_I)
    }
#pragma GCC diagnostic pop
#undef S_LOAD_F32
#undef S_LOAD_F
#undef S_LOAD_I
    return ZI_OK;
}

static int
s_arg_check (const zi_node_t *node, char *err, size_t errlen)
{
    int rc = s_check_attr (node, "axis", ZI_ATTR_INT, err, errlen);
    if (!rc) {
        rc = s_check_attr (node, "keepdims", ZI_ATTR_INT, err, errlen);
    }
    if (!rc) {
        rc = s_check_attr (node, "select_last_index", ZI_ATTR_INT, err,
                           errlen);
    }
    return rc;
}

//  TopK ------------------------------------------------------------------------------------

typedef struct {
    double f;
    int64_t i;
    int64_t idx;
} s_key_t;

//  Order: the better value first, ties by the lower index. NaN is the
//  largest value (numpy's order).
static int
s_cmp_f_desc (const void *pa, const void *pb)
{
    const s_key_t *a = (const s_key_t *) pa, *b = (const s_key_t *) pb;
    bool na = isnan (a->f), nb = isnan (b->f);
    if (na != nb) {
        return na ? -1 : 1;
    }
    if (!na && a->f != b->f) {
        return a->f > b->f ? -1 : 1;
    }
    return a->idx < b->idx ? -1 : (a->idx > b->idx);
}

static int
s_cmp_f_asc (const void *pa, const void *pb)
{
    const s_key_t *a = (const s_key_t *) pa, *b = (const s_key_t *) pb;
    bool na = isnan (a->f), nb = isnan (b->f);
    if (na != nb) {
        return na ? 1 : -1;
    }
    if (!na && a->f != b->f) {
        return a->f < b->f ? -1 : 1;
    }
    return a->idx < b->idx ? -1 : (a->idx > b->idx);
}

static int
s_cmp_i_desc (const void *pa, const void *pb)
{
    const s_key_t *a = (const s_key_t *) pa, *b = (const s_key_t *) pb;
    if (a->i != b->i) {
        return a->i > b->i ? -1 : 1;
    }
    return a->idx < b->idx ? -1 : (a->idx > b->idx);
}

static int
s_cmp_i_asc (const void *pa, const void *pb)
{
    const s_key_t *a = (const s_key_t *) pa, *b = (const s_key_t *) pb;
    if (a->i != b->i) {
        return a->i < b->i ? -1 : 1;
    }
    return a->idx < b->idx ? -1 : (a->idx > b->idx);
}

static int
s_topk_plan (zi_kctx_t *ctx, int *axis, int64_t *k)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t a = zi_node_attr_int (ctx->node, "axis", -1);
    if (x->rank == 0 || zi_axis_normalize (a, x->rank, axis)) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis %lld out of range for "
                           "rank %d", (long long) a, x->rank);
    }
    const zi_tensor_t *kt = s_in (ctx, 1);
    if (kt) {
        if ((kt->dtype != ZI_DT_I64 && kt->dtype != ZI_DT_I32)
            || zi_tensor_count (kt) != 1) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "K must be one int64");
        }
        if (!kt->data) {
            return ZI_OP_NEEDS_VALUE;
        }
        *k = kt->dtype == ZI_DT_I64 ? *(const int64_t *) kt->data
                                    : *(const int32_t *) kt->data;
    }
    else {
        //  TopK-1 had k as an attribute.
        const zi_attr_t *ka = zi_node_attr (ctx->node, "k");
        if (!ka || ka->type != ZI_ATTR_INT) {
            return zi_op_fail (ctx, ZI_ERR_MALFORMED, "needs K");
        }
        *k = ka->i;
    }
    if (*k < 0 || *k > x->ne[*axis]) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "K = %lld out of range for an "
                           "axis of %lld", (long long) *k,
                           (long long) x->ne[*axis]);
    }
    return ZI_OK;
}

static int
s_topk_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int axis;
    int64_t k;
    int rc = s_check_dtype (ctx, x->dtype);
    if (!rc) {
        rc = s_topk_plan (ctx, &axis, &k);
    }
    if (rc) {
        return rc;
    }
    int64_t shape[ZI_MAX_RANK];
    memcpy (shape, x->ne, sizeof shape);
    shape[axis] = k;
    rc = s_set_out (ctx, 0, x->dtype, x->rank, shape);
    return rc ? rc : s_set_out (ctx, 1, ZI_DT_I64, x->rank, shape);
}

//  x (outer, n, inner) -> values (outer, k, inner), indices (outer, k, inner)
static int
s_topk_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *yv = ctx->out[0];
    zi_tensor_t *yi = ctx->n_out > 1 ? ctx->out[1] : NULL;
    int axis;
    int64_t k;
    int rc = s_topk_plan (ctx, &axis, &k);
    if (rc) {
        return rc < 0 ? rc : zi_op_fail (ctx, ZI_ERR_INVALID, "K unknown");
    }
    int64_t n = x->ne[axis], outer = 1, inner = 1;
    for (int d = 0; d < axis; d++) {
        outer *= x->ne[d];
    }
    for (int d = axis + 1; d < x->rank; d++) {
        inner *= x->ne[d];
    }
    if (k == 0 || outer * inner == 0) {
        return ZI_OK;
    }
    bool largest = zi_node_attr_int (ctx->node, "largest", 1) != 0;
    bool fl = s_is_float (x->dtype);
    int (*cmp) (const void *, const void *) =
        fl ? (largest ? s_cmp_f_desc : s_cmp_f_asc)
           : (largest ? s_cmp_i_desc : s_cmp_i_asc);
    s_key_t *keys = (s_key_t *) malloc ((size_t) n * sizeof *keys);
    if (!keys) {
        return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
    }
    size_t esz = zi_dtype_size (x->dtype);
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < inner; i++) {
            int64_t base = o * n * inner + i;
            for (int64_t j = 0; j < n; j++) {
                int64_t at = base + j * inner;
                keys[j].idx = j;
                if (fl) {
                    keys[j].f = s_load_f (x->dtype, x->data, at);
                }
                else {
                    keys[j].i = s_load_i (x->dtype, x->data, at);
                }
            }
            //  Sorting everything also gives the sorted=0 case a
            //  deterministic answer.
            qsort (keys, (size_t) n, sizeof *keys, cmp);
            int64_t obase = o * k * inner + i;
            for (int64_t j = 0; j < k; j++) {
                int64_t dst = obase + j * inner;
                memcpy ((uint8_t *) yv->data + (size_t) dst * esz,
                        (const uint8_t *) x->data
                            + (size_t) (base + keys[j].idx * inner) * esz,
                        esz);
                if (yi) {
                    ((int64_t *) yi->data)[dst] = keys[j].idx;
                }
            }
        }
    }
    free (keys);
    return ZI_OK;
}

static int
s_topk_check (const zi_node_t *node, char *err, size_t errlen)
{
    int rc = s_check_attr (node, "axis", ZI_ATTR_INT, err, errlen);
    if (!rc) {
        rc = s_check_attr (node, "largest", ZI_ATTR_INT, err, errlen);
    }
    if (!rc) {
        rc = s_check_attr (node, "sorted", ZI_ATTR_INT, err, errlen);
    }
    if (!rc && node->n_in < 2 && !zi_node_attr (node, "k")) {
        rc = zi_fail (err, errlen, ZI_ERR_MALFORMED, "node '%s' (TopK): needs "
                      "K", node->name);
    }
    return rc;
}

//  CumSum -------------------------------------------------------------------------------------

static int
s_cumsum_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0], *ax = ctx->in[1];
    zi_dtype_t dt = x->dtype;
    if (dt != ZI_DT_F32 && dt != ZI_DT_F64 && dt != ZI_DT_I32
        && dt != ZI_DT_I64) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "dtype %s is not "
                           "supported", zi_dtype_name (dt));
    }
    if ((ax->dtype != ZI_DT_I64 && ax->dtype != ZI_DT_I32)
        || zi_tensor_count (ax) != 1) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis must be one int64");
    }
    return s_set_out (ctx, 0, dt, x->rank, x->ne);
}

//  y[.., j, ..] = sum of x[.., i, ..] for i <= j (exclusive: i < j; reverse:
//  from the end), each row built on the previous output row.
#define S_CUMSUM(T)                                                            \
    do {                                                                       \
        const T *xp = (const T *) x->data;                                     \
        T *yp = (T *) y->data;                                                 \
        for (int64_t o = 0; o < outer; o++) {                                  \
            for (int64_t s = 0; s < n; s++) {                                  \
                int64_t j = rev ? n - 1 - s : s;                               \
                int64_t prev = rev ? j + 1 : j - 1;                            \
                T *row = yp + (o * n + j) * inner;                             \
                const T *prow = yp + (o * n + prev) * inner;                   \
                const T *xrow = xp + (o * n + (excl ? prev : j)) * inner;      \
                for (int64_t i = 0; i < inner; i++) {                          \
                    T acc = s == 0 ? (T) 0 : prow[i];                          \
                    row[i] = excl && s == 0 ? (T) 0 : acc + xrow[i];           \
                }                                                              \
            }                                                                  \
        }                                                                      \
    } while (0)

static int
s_cumsum_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0], *ax = ctx->in[1];
    zi_tensor_t *y = ctx->out[0];
    if (!ax->data) {
        return zi_op_fail (ctx, ZI_ERR_INVALID, "axis unknown at run time");
    }
    int64_t a = ax->dtype == ZI_DT_I64 ? *(const int64_t *) ax->data
                                       : *(const int32_t *) ax->data;
    int axis;
    if (x->rank == 0 || zi_axis_normalize (a, x->rank, &axis)) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis %lld out of range for "
                           "rank %d", (long long) a, x->rank);
    }
    bool excl = zi_node_attr_int (ctx->node, "exclusive", 0) != 0;
    bool rev = zi_node_attr_int (ctx->node, "reverse", 0) != 0;
    int64_t n = x->ne[axis], outer = 1, inner = 1;
    for (int d = 0; d < axis; d++) {
        outer *= x->ne[d];
    }
    for (int d = axis + 1; d < x->rank; d++) {
        inner *= x->ne[d];
    }
    if (zi_tensor_count (x) == 0) {
        return ZI_OK;
    }
    switch (x->dtype) {
        case ZI_DT_F32: S_CUMSUM (float); break;
        case ZI_DT_F64: S_CUMSUM (double); break;
        case ZI_DT_I32: S_CUMSUM (int32_t); break;
        default: S_CUMSUM (int64_t); break;
    }
    return ZI_OK;
}

static int
s_cumsum_check (const zi_node_t *node, char *err, size_t errlen)
{
    int rc = s_check_attr (node, "exclusive", ZI_ATTR_INT, err, errlen);
    return rc ? rc : s_check_attr (node, "reverse", ZI_ATTR_INT, err, errlen);
}

//  The table -----------------------------------------------------------------------------------

#define S_REDUCE(name)                                                         \
    {name, NULL, 1, 2, 1, 1, s_reduce_check, s_reduce_infer, s_reduce_run}

const zi_op_def_t zi_ops_reduce[] = {
    S_REDUCE ("ReduceSum"),
    S_REDUCE ("ReduceMean"),
    S_REDUCE ("ReduceMax"),
    S_REDUCE ("ReduceMin"),
    S_REDUCE ("ReduceProd"),
    S_REDUCE ("ReduceL1"),
    S_REDUCE ("ReduceL2"),
    S_REDUCE ("ReduceSumSquare"),
    S_REDUCE ("ReduceLogSum"),
    S_REDUCE ("ReduceLogSumExp"),
    {"ArgMax", NULL, 1, 1, 1, 1, s_arg_check, s_arg_infer, s_arg_run},
    {"ArgMin", NULL, 1, 1, 1, 1, s_arg_check, s_arg_infer, s_arg_run},
    {"TopK", NULL, 1, 2, 2, 2, s_topk_check, s_topk_infer, s_topk_run},
    {"CumSum", NULL, 2, 2, 1, 1, s_cumsum_check, s_cumsum_infer, s_cumsum_run},
    {NULL},
};
