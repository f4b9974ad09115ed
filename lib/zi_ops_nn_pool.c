/*  zi_ops_nn_pool.c - MaxPool, AveragePool, GlobalAveragePool,
    GlobalMaxPool and LRN.

    Pools run over 1-3 spatial dims padded to 3 (zi_nn_geom_t). For each
    output position the range of kernel taps that land inside the input is
    computed once per axis (per output column for the innermost axis, before
    the planes are walked), so the tap loops have no bounds tests: padding is
    never materialised and never compared against.

    MaxPool supports float32, float64, int8 and uint8 (the ONNX tests use
    uint8) and the optional Indices output (flat indices into X, row-major or
    column-major per storage_order). The other pools are float32 only.

    MaxPool without Indices splits its planes over ctx->pool; float32 2x2 /
    stride 2 without padding (the CNN case) has its own loop, AVX-512 when
    zi_conv_avx512 () says so (same env switch as Conv), with exactly the
    generic loop's results. The other pools and LRN run on the caller.
*/
#include "zi_ops_nn.h"

#include "zi_conv.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

//  Taps t in [0, k) of a window starting at o*s - pb with dilation d that
//  land in [0, in): [*lo, *hi).
static void
s_tap_range (int64_t o, int64_t s, int64_t pb, int64_t d, int64_t k,
             int64_t in, int64_t *lo, int64_t *hi)
{
    int64_t base = o * s - pb;
    int64_t l = base >= 0 ? 0 : (-base + d - 1) / d;
    int64_t h = in - base <= 0 ? 0 : (in - base + d - 1) / d;
    if (h > k) {
        h = k;
    }
    if (l > h) {
        l = h;
    }
    *lo = l;
    *hi = h;
}

//  Per-output-column tap ranges of the innermost axis: r (oW, 2).
static int64_t *
s_col_ranges (const zi_nn_geom_t *g)
{
    int64_t oW = g->out[2];
    int64_t *r = (int64_t *) malloc ((size_t) (oW > 0 ? oW : 1) * 2
                                     * sizeof *r);
    if (!r) {
        return NULL;
    }
    for (int64_t o = 0; o < oW; o++) {
        s_tap_range (o, g->s[2], g->pb[2], g->d[2], g->k[2], g->in[2],
                     &r[2 * o], &r[2 * o + 1]);
    }
    return r;
}

//  Per-kernel-column valid output ranges of the innermost axis:
//  kr (kW, 2), for the row-wise loops (taps outside, output columns inside).
static int64_t *
s_kcol_ranges (const zi_nn_geom_t *g)
{
    int64_t kW = g->k[2];
    int64_t *r = (int64_t *) malloc ((size_t) kW * 2 * sizeof *r);
    if (!r) {
        return NULL;
    }
    for (int64_t kw = 0; kw < kW; kw++) {
        zi_nn_valid_range (g->out[2], g->in[2], g->s[2],
                           kw * g->d[2] - g->pb[2], &r[2 * kw], &r[2 * kw + 1]);
    }
    return r;
}

static int
s_pool_check (const zi_node_t *node, char *err, size_t errlen)
{
    int rc = zi_nn_check_window_attrs (node, err, errlen);
    if (rc) {
        return rc;
    }
    if ((rc = zi_nn_check_attr_type (node, "ceil_mode", ZI_ATTR_INT, err,
                                     errlen))) {
        return rc;
    }
    if (!zi_node_attr (node, "kernel_shape")) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "node '%s' (%s): kernel_shape is required",
                        node->name, node->op_type);
    }
    return ZI_OK;
}

//  Geometry + output shape (N, C, out...) shared by both pools.
static int
s_pool_geom (zi_kctx_t *ctx, zi_nn_geom_t *g, int64_t *planes,
             int64_t *shape)
{
    const zi_tensor_t *x = ctx->in[0];
    bool ceil_mode = zi_node_attr_int (ctx->node, "ceil_mode", 0) != 0;
    int rc = zi_nn_geom_forward (ctx, x, NULL, ceil_mode, g);
    if (rc) {
        return rc;
    }
    shape[0] = x->ne[0];
    shape[1] = x->ne[1];
    for (int i = 0; i < g->nd; i++) {
        shape[2 + i] = g->out[ZI_NN_MAX_SPATIAL - g->nd + i];
    }
    *planes = x->ne[0] * x->ne[1];  //  bounded by x's element count
    return ZI_OK;
}

//  MaxPool ----------------------------------------------------------------------------

int
zi_nn_maxpool_check (const zi_node_t *node, char *err, size_t errlen)
{
    int rc = s_pool_check (node, err, errlen);
    if (rc) {
        return rc;
    }
    if ((rc = zi_nn_check_attr_type (node, "storage_order", ZI_ATTR_INT, err,
                                     errlen))) {
        return rc;
    }
    int64_t so = zi_node_attr_int (node, "storage_order", 0);
    if (so != 0 && so != 1) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "node '%s' (%s): storage_order %lld is not 0 or 1",
                        node->name, node->op_type, (long long) so);
    }
    return ZI_OK;
}

static bool
s_maxpool_dtype_ok (zi_dtype_t dt)
{
    return dt == ZI_DT_F32 || dt == ZI_DT_F64 || dt == ZI_DT_I8
           || dt == ZI_DT_U8;
}

int
zi_nn_maxpool_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    if (!s_maxpool_dtype_ok (x->dtype)) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED,
                           "X has dtype %s; supported: float32, float64, "
                           "int8, uint8",
                           zi_dtype_name (x->dtype));
    }
    zi_nn_geom_t g;
    int64_t planes, shape[ZI_MAX_RANK];
    int rc = s_pool_geom (ctx, &g, &planes, shape);
    if (rc) {
        return rc;
    }
    if ((rc = zi_tensor_set_shape (ctx->out[0], x->dtype, x->rank, shape))) {
        return zi_op_fail (ctx, rc, "output shape is too large");
    }
    if (ctx->n_out > 1 && ctx->out[1]
        && (rc = zi_tensor_set_shape (ctx->out[1], ZI_DT_I64, x->rank,
                                      shape))) {
        return zi_op_fail (ctx, rc, "indices shape is too large");
    }
    return ZI_OK;
}

//  x (planes, iD, iH, iW) -> y (planes, oD, oH, oW) [, ind (same)]
//  The plain variant's tap loop is a branch-free max; the indexed one
//  compares to remember the first position of the maximum.
#define S_MAXPOOL_FNS(SUFFIX, T, LOWEST)                                      \
    static void s_maxpool_##SUFFIX (T *y, const T *x, int64_t planes,         \
                                    const zi_nn_geom_t *g, const int64_t *kr) \
    {                                                                         \
        const int64_t iD = g->in[0], iH = g->in[1], iW = g->in[2];            \
        const int64_t isz = iD * iH * iW, oW = g->out[2];                     \
        const int64_t dw = g->d[2], sw = g->s[2], pbw = g->pb[2];             \
        for (int64_t p = 0; p < planes; p++) {                                \
            const T *xp = x + p * isz;                                        \
            for (int64_t od = 0; od < g->out[0]; od++) {                      \
                int64_t dlo, dhi;                                             \
                s_tap_range (od, g->s[0], g->pb[0], g->d[0], g->k[0], iD,     \
                             &dlo, &dhi);                                     \
                for (int64_t oh = 0; oh < g->out[1]; oh++, y += oW) {         \
                    int64_t hlo, hhi;                                         \
                    s_tap_range (oh, g->s[1], g->pb[1], g->d[1], g->k[1], iH, \
                                 &hlo, &hhi);                                 \
                    for (int64_t o = 0; o < oW; o++) {                        \
                        y[o] = LOWEST;                                        \
                    }                                                         \
                    for (int64_t kd = dlo; kd < dhi; kd++) {                  \
                        int64_t id = od * g->s[0] - g->pb[0] + kd * g->d[0];  \
                        for (int64_t kh = hlo; kh < hhi; kh++) {              \
                            int64_t ih = oh * g->s[1] - g->pb[1]              \
                                         + kh * g->d[1];                      \
                            const T *xr = xp + (id * iH + ih) * iW;           \
                            for (int64_t kw = 0; kw < g->k[2]; kw++) {        \
                                const T *src = xr + kw * dw - pbw;            \
                                const int64_t lo = kr[2 * kw];                \
                                const int64_t hi = kr[2 * kw + 1];            \
                                if (sw == 1) {                                \
                                    for (int64_t o = lo; o < hi; o++) {       \
                                        T e = src[o];                         \
                                        y[o] = e > y[o] ? e : y[o];           \
                                    }                                         \
                                }                                             \
                                else {                                        \
                                    for (int64_t o = lo; o < hi; o++) {       \
                                        T e = src[o * sw];                    \
                                        y[o] = e > y[o] ? e : y[o];           \
                                    }                                         \
                                }                                             \
                            }                                                 \
                        }                                                     \
                    }                                                         \
                }                                                             \
            }                                                                 \
        }                                                                     \
    }                                                                         \
    static void s_maxpool_ind_##SUFFIX (T *y, int64_t *ind, const T *x,       \
                                        int64_t planes,                       \
                                        const zi_nn_geom_t *g,                \
                                        const int64_t *wr, bool colmajor)     \
    {                                                                         \
        const int64_t iD = g->in[0], iH = g->in[1], iW = g->in[2];            \
        const int64_t isz = iD * iH * iW;                                     \
        for (int64_t p = 0; p < planes; p++) {                                \
            const T *xp = x + p * isz;                                        \
            for (int64_t od = 0; od < g->out[0]; od++) {                      \
                int64_t dlo, dhi;                                             \
                s_tap_range (od, g->s[0], g->pb[0], g->d[0], g->k[0], iD,     \
                             &dlo, &dhi);                                     \
                for (int64_t oh = 0; oh < g->out[1]; oh++) {                  \
                    int64_t hlo, hhi;                                         \
                    s_tap_range (oh, g->s[1], g->pb[1], g->d[1], g->k[1], iH, \
                                 &hlo, &hhi);                                 \
                    for (int64_t ow = 0; ow < g->out[2]; ow++) {              \
                        T v = LOWEST;                                         \
                        int64_t bd = -1, bh = 0, bw = 0;                      \
                        for (int64_t kd = dlo; kd < dhi; kd++) {              \
                            int64_t id = od * g->s[0] - g->pb[0]              \
                                         + kd * g->d[0];                      \
                            for (int64_t kh = hlo; kh < hhi; kh++) {          \
                                int64_t ih = oh * g->s[1] - g->pb[1]          \
                                             + kh * g->d[1];                  \
                                for (int64_t kw = wr[2 * ow];                 \
                                     kw < wr[2 * ow + 1]; kw++) {             \
                                    int64_t iw = ow * g->s[2] - g->pb[2]      \
                                                 + kw * g->d[2];              \
                                    T e = xp[(id * iH + ih) * iW + iw];       \
                                    if (bd < 0 || e > v) {                    \
                                        v = e;                                \
                                        bd = id;                              \
                                        bh = ih;                              \
                                        bw = iw;                              \
                                    }                                         \
                                }                                             \
                            }                                                 \
                        }                                                     \
                        *y++ = v;                                             \
                        if (bd < 0) {                                         \
                            *ind++ = -1;                                      \
                        }                                                     \
                        else if (colmajor) {                                  \
                            *ind++ = p * isz + bd + iD * (bh + iH * bw);      \
                        }                                                     \
                        else {                                                \
                            *ind++ = p * isz + (bd * iH + bh) * iW + bw;      \
                        }                                                     \
                    }                                                         \
                }                                                             \
            }                                                                 \
        }                                                                     \
    }

S_MAXPOOL_FNS (f32, float, -INFINITY)
S_MAXPOOL_FNS (f64, double, -INFINITY)
S_MAXPOOL_FNS (i8, int8_t, INT8_MIN)
S_MAXPOOL_FNS (u8, uint8_t, 0)

//  MaxPool 2x2 / stride 2 without padding (the CNN case) ---------------------

//  Each output is the running max over its 4 taps in the generic order
//  (kh, kw), y = e > y ? e : y from -inf, so both variants give exactly the
//  generic loop's result, NaN inputs included (a NaN tap is skipped).
static bool
s_maxpool_is_2x2 (const zi_nn_geom_t *g)
{
    return g->in[0] == 1 && g->out[0] == 1 && g->k[0] == 1 && g->k[1] == 2
           && g->k[2] == 2 && g->s[1] == 2 && g->s[2] == 2 && g->d[1] == 1
           && g->d[2] == 1
           && g->pb[1] == 0 && g->pb[2] == 0 && 2 * g->out[1] <= g->in[1]
           && 2 * g->out[2] <= g->in[2];
}

//  x (planes, iH, iW) -> y (planes, oH, oW), y's planes ystride floats
//  apart
static void
s_maxpool_2x2 (float *y, int64_t ystride, const float *x, int64_t planes,
               const zi_nn_geom_t *g)
{
    const int64_t iH = g->in[1], iW = g->in[2];
    const int64_t oH = g->out[1], oW = g->out[2];
    for (int64_t p = 0; p < planes; p++, y += ystride - oH * oW) {
        for (int64_t oh = 0; oh < oH; oh++, y += oW) {
            const float *r0 = x + (p * iH + 2 * oh) * iW, *r1 = r0 + iW;
            for (int64_t o = 0; o < oW; o++) {
                float v = -INFINITY, e;
                e = r0[2 * o], v = e > v ? e : v;
                e = r0[2 * o + 1], v = e > v ? e : v;
                e = r1[2 * o], v = e > v ? e : v;
                e = r1[2 * o + 1], v = e > v ? e : v;
                y[o] = v;
            }
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

//  As s_maxpool_2x2, 16 outputs per step: the even and odd taps of 32
//  inputs are split with one permute each.
__attribute__ ((target ("avx512f"))) static void
s_maxpool_2x2_avx512 (float *y, int64_t ystride, const float *x,
                      int64_t planes, const zi_nn_geom_t *g)
{
    const int64_t iH = g->in[1], iW = g->in[2];
    const int64_t oH = g->out[1], oW = g->out[2];
    const __m512i even = _mm512_set_epi32 (30, 28, 26, 24, 22, 20, 18, 16, 14,
                                           12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32 (31, 29, 27, 25, 23, 21, 19, 17, 15,
                                          13, 11, 9, 7, 5, 3, 1);
    const __m512 lowest = _mm512_set1_ps (-INFINITY);
    for (int64_t p = 0; p < planes; p++, y += ystride - oH * oW) {
        for (int64_t oh = 0; oh < oH; oh++, y += oW) {
            const float *r0 = x + (p * iH + 2 * oh) * iW, *r1 = r0 + iW;
            for (int64_t o = 0; o < oW; o += 16) {
                int64_t n = oW - o < 16 ? oW - o : 16;
                //  2n inputs per row: lanes of the low and high halves.
                __mmask16 ml = (__mmask16) (n >= 8 ? 0xFFFF
                                                   : (1u << (2 * n)) - 1u);
                __mmask16 mh = (__mmask16) (n <= 8 ? 0
                                            : n >= 16 ? 0xFFFF
                                                      : (1u << (2 * n - 16))
                                                            - 1u);
                __m512 a0 = _mm512_maskz_loadu_ps (ml, r0 + 2 * o);
                __m512 b0 = _mm512_maskz_loadu_ps (mh, r0 + 2 * o + 16);
                __m512 a1 = _mm512_maskz_loadu_ps (ml, r1 + 2 * o);
                __m512 b1 = _mm512_maskz_loadu_ps (mh, r1 + 2 * o + 16);
                __m512 v = lowest;
                v = _mm512_max_ps (_mm512_permutex2var_ps (a0, even, b0), v);
                v = _mm512_max_ps (_mm512_permutex2var_ps (a0, odd, b0), v);
                v = _mm512_max_ps (_mm512_permutex2var_ps (a1, even, b1), v);
                v = _mm512_max_ps (_mm512_permutex2var_ps (a1, odd, b1), v);
                _mm512_mask_storeu_ps (y + o, (__mmask16) ((1u << n) - 1u), v);
            }
        }
    }
}
#define S_HAVE_AVX512_POOL 1
#else
#define S_HAVE_AVX512_POOL 0
#endif

bool
zi_nn_maxpool_fusable (const zi_node_t *node)
{
    if (strcmp (node->op_type, "MaxPool") != 0 || *node->domain
        || node->n_in != 1 || node->n_out < 1
        || (node->n_out > 1 && node->out[1] >= 0)) {
        return false;
    }
    int n;
    const int64_t *k = zi_node_attr_ints (node, "kernel_shape", &n);
    if (!k || n != 2 || k[0] != 2 || k[1] != 2) {
        return false;
    }
    const int64_t *st = zi_node_attr_ints (node, "strides", &n);
    if (!st || n != 2 || st[0] != 2 || st[1] != 2) {
        return false;
    }
    const int64_t *p = zi_node_attr_ints (node, "pads", &n);
    for (int i = 0; p && i < n; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    const int64_t *d = zi_node_attr_ints (node, "dilations", &n);
    for (int i = 0; d && i < n; i++) {
        if (d[i] != 1) {
            return false;
        }
    }
    const char *ap = zi_node_attr_string (node, "auto_pad", "NOTSET");
    return zi_node_attr_int (node, "ceil_mode", 0) == 0
           && (strcmp (ap, "NOTSET") == 0 || strcmp (ap, "VALID") == 0);
}

void
zi_nn_maxpool_2x2_f32 (float *y, int64_t ystride, const float *x,
                       int64_t planes, int64_t iH, int64_t iW)
{
    zi_nn_geom_t g = {.nd = 2,
                      .in = {1, iH, iW},
                      .out = {1, iH / 2, iW / 2},
                      .k = {1, 2, 2},
                      .s = {1, 2, 2},
                      .d = {1, 1, 1}};
#if S_HAVE_AVX512_POOL
    if (zi_conv_avx512 ()) {
        s_maxpool_2x2_avx512 (y, ystride, x, planes, &g);
        return;
    }
#endif
    s_maxpool_2x2 (y, ystride, x, planes, &g);
}

//  Plane ranges of a MaxPool over the pool's threads.
typedef struct {
    zi_dtype_t dtype;
    void *y;
    const void *x;
    const zi_nn_geom_t *g;
    const int64_t *kr;
    bool fast;                  //  2x2 / stride 2 float32
} s_maxpool_job_t;

static void
s_maxpool_task (void *arg, int64_t p0, int64_t p1, int thread)
{
    const s_maxpool_job_t *job = (const s_maxpool_job_t *) arg;
    const zi_nn_geom_t *g = job->g;
    const int64_t isz = g->in[0] * g->in[1] * g->in[2];
    const int64_t osz = g->out[0] * g->out[1] * g->out[2];
    int64_t np = p1 - p0;
    switch (job->dtype) {
        case ZI_DT_F64:
            s_maxpool_f64 ((double *) job->y + p0 * osz,
                           (const double *) job->x + p0 * isz, np, g, job->kr);
            break;
        case ZI_DT_I8:
            s_maxpool_i8 ((int8_t *) job->y + p0 * osz,
                          (const int8_t *) job->x + p0 * isz, np, g, job->kr);
            break;
        case ZI_DT_U8:
            s_maxpool_u8 ((uint8_t *) job->y + p0 * osz,
                          (const uint8_t *) job->x + p0 * isz, np, g, job->kr);
            break;
        default: {
            float *y = (float *) job->y + p0 * osz;
            const float *x = (const float *) job->x + p0 * isz;
            if (!job->fast) {
                s_maxpool_f32 (y, x, np, g, job->kr);
            }
#if S_HAVE_AVX512_POOL
            else if (zi_conv_avx512 ()) {
                s_maxpool_2x2_avx512 (y, osz, x, np, g);
            }
#endif
            else {
                s_maxpool_2x2 (y, osz, x, np, g);
            }
            break;
        }
    }
}

int
zi_nn_maxpool_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *yt = ctx->out[0];
    zi_tensor_t *it = ctx->n_out > 1 ? ctx->out[1] : NULL;
    if (!s_maxpool_dtype_ok (x->dtype)) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "X has dtype %s",
                           zi_dtype_name (x->dtype));
    }
    zi_nn_geom_t g;
    int64_t planes, shape[ZI_MAX_RANK];
    int rc = s_pool_geom (ctx, &g, &planes, shape);
    if (rc) {
        return rc;
    }
    if (zi_tensor_count (yt) == 0) {
        return ZI_OK;
    }
    int64_t *ind = it ? (int64_t *) it->data : NULL;
    //  wr: per output column (indexed variant), else per kernel column
    int64_t *wr = ind ? s_col_ranges (&g) : s_kcol_ranges (&g);
    if (!wr) {
        return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
    }
    if (!ind) {
        s_maxpool_job_t job = {x->dtype, yt->data, x->data, &g, wr,
                               x->dtype == ZI_DT_F32 && s_maxpool_is_2x2 (&g)};
        //  Planes of at least ~16 K inputs per thread: below that the
        //  hand-off costs more than it saves.
        int64_t isz = g.in[0] * g.in[1] * g.in[2];
        int64_t grain = isz > 0 ? 16384 / isz : 1;
        zi_pool_for (ctx->pool, planes, grain > 1 ? grain : 1,
                     s_maxpool_task, &job);
        free (wr);
        return ZI_OK;
    }
    bool colmajor = zi_node_attr_int (ctx->node, "storage_order", 0) == 1;
    switch (x->dtype) {
        case ZI_DT_F64:
            s_maxpool_ind_f64 (yt->data, ind, x->data, planes, &g, wr,
                               colmajor);
            break;
        case ZI_DT_I8:
            s_maxpool_ind_i8 (yt->data, ind, x->data, planes, &g, wr,
                              colmajor);
            break;
        case ZI_DT_U8:
            s_maxpool_ind_u8 (yt->data, ind, x->data, planes, &g, wr,
                              colmajor);
            break;
        default:
            s_maxpool_ind_f32 (yt->data, ind, x->data, planes, &g, wr,
                               colmajor);
            break;
    }
    free (wr);
    return ZI_OK;
}

//  AveragePool ------------------------------------------------------------------------

int
zi_nn_avgpool_check (const zi_node_t *node, char *err, size_t errlen)
{
    int rc = s_pool_check (node, err, errlen);
    if (rc) {
        return rc;
    }
    return zi_nn_check_attr_type (node, "count_include_pad", ZI_ATTR_INT, err,
                                  errlen);
}

int
zi_nn_avgpool_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int rc = zi_nn_require_f32 (ctx, x, "X");
    if (rc) {
        return rc;
    }
    zi_nn_geom_t g;
    int64_t planes, shape[ZI_MAX_RANK];
    if ((rc = s_pool_geom (ctx, &g, &planes, shape))) {
        return rc;
    }
    rc = zi_tensor_set_shape (ctx->out[0], ZI_DT_F32, x->rank, shape);
    return rc ? zi_op_fail (ctx, rc, "output shape is too large") : ZI_OK;
}

//  Number of taps of the window at o that fall in the padded extent
//  [-pb, in + pe): the divisor with count_include_pad.
static int64_t
s_padded_taps (int64_t o, const zi_nn_geom_t *g, int i)
{
    int64_t lo, hi;
    s_tap_range (o, g->s[i], 0, g->d[i], g->k[i], g->in[i] + g->pb[i]
                 + g->pe[i], &lo, &hi);
    return hi - lo;
}

int
zi_nn_avgpool_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *yt = ctx->out[0];
    int rc = zi_nn_require_f32 (ctx, x, "X");
    if (rc) {
        return rc;
    }
    zi_nn_geom_t g;
    int64_t planes, shape[ZI_MAX_RANK];
    if ((rc = s_pool_geom (ctx, &g, &planes, shape))) {
        return rc;
    }
    if (zi_tensor_count (yt) == 0) {
        return ZI_OK;
    }
    bool incl = zi_node_attr_int (ctx->node, "count_include_pad", 0) != 0;
    const int64_t oW = g.out[2];
    int64_t *kr = s_kcol_ranges (&g);
    float *invw = (float *) malloc ((size_t) (oW > 0 ? oW : 1) * sizeof *invw);
    if (!kr || !invw) {
        free (kr);
        free (invw);
        return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
    }
    //  The divisor is a product of per-axis tap counts; the innermost
    //  axis' factor is precomputed per output column as a reciprocal.
    for (int64_t o = 0; o < oW; o++) {
        int64_t lo, hi;
        s_tap_range (o, g.s[2], g.pb[2], g.d[2], g.k[2], g.in[2], &lo, &hi);
        int64_t cw = incl ? s_padded_taps (o, &g, 2) : hi - lo;
        invw[o] = cw > 0 ? 1.0f / (float) cw : 0.0f;
    }
    const float *X = (const float *) x->data;
    float *Y = (float *) yt->data;
    const int64_t iD = g.in[0], iH = g.in[1], iW = g.in[2];
    const int64_t isz = iD * iH * iW;
    const int64_t dw = g.d[2], sw = g.s[2], pbw = g.pb[2];
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = X + p * isz;
        for (int64_t od = 0; od < g.out[0]; od++) {
            int64_t dlo, dhi;
            s_tap_range (od, g.s[0], g.pb[0], g.d[0], g.k[0], iD, &dlo, &dhi);
            int64_t cd = incl ? s_padded_taps (od, &g, 0) : dhi - dlo;
            for (int64_t oh = 0; oh < g.out[1]; oh++, Y += oW) {
                int64_t hlo, hhi;
                s_tap_range (oh, g.s[1], g.pb[1], g.d[1], g.k[1], iH, &hlo,
                             &hhi);
                int64_t ch = incl ? s_padded_taps (oh, &g, 1) : hhi - hlo;
                memset (Y, 0, (size_t) oW * sizeof *Y);
                for (int64_t kd = dlo; kd < dhi; kd++) {
                    int64_t id = od * g.s[0] - g.pb[0] + kd * g.d[0];
                    for (int64_t kh = hlo; kh < hhi; kh++) {
                        int64_t ih = oh * g.s[1] - g.pb[1] + kh * g.d[1];
                        const float *xr = xp + (id * iH + ih) * iW;
                        for (int64_t kw = 0; kw < g.k[2]; kw++) {
                            const float *src = xr + kw * dw - pbw;
                            const int64_t lo = kr[2 * kw], hi = kr[2 * kw + 1];
                            if (sw == 1) {
                                for (int64_t o = lo; o < hi; o++) {
                                    Y[o] += src[o];
                                }
                            }
                            else {
                                for (int64_t o = lo; o < hi; o++) {
                                    Y[o] += src[o * sw];
                                }
                            }
                        }
                    }
                }
                float rs = cd * ch > 0 ? 1.0f / (float) (cd * ch) : 0.0f;
                for (int64_t o = 0; o < oW; o++) {
                    Y[o] *= rs * invw[o];
                }
            }
        }
    }
    free (kr);
    free (invw);
    return ZI_OK;
}

//  Global pools ------------------------------------------------------------------------

int
zi_nn_gpool_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int rc = zi_nn_require_f32 (ctx, x, "X");
    if (rc) {
        return rc;
    }
    if (x->rank < 3) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "X has rank %d, expects (N, C, spatial...)",
                           x->rank);
    }
    int64_t shape[ZI_MAX_RANK];
    for (int i = 0; i < x->rank; i++) {
        shape[i] = i < 2 ? x->ne[i] : 1;
    }
    rc = zi_tensor_set_shape (ctx->out[0], ZI_DT_F32, x->rank, shape);
    return rc ? zi_op_fail (ctx, rc, "bad output shape") : ZI_OK;
}

static int
s_gpool_run (zi_kctx_t *ctx, bool max)
{
    const zi_tensor_t *x = ctx->in[0];
    int rc = zi_nn_require_f32 (ctx, x, "X");
    if (rc) {
        return rc;
    }
    int64_t planes = x->ne[0] * x->ne[1];
    int64_t sz = planes ? zi_tensor_count (x) / planes : 0;
    const float *X = (const float *) x->data;
    float *Y = (float *) ctx->out[0]->data;
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = X + p * sz;
        if (max) {
            float v = -INFINITY;
            for (int64_t i = 0; i < sz; i++) {
                v = xp[i] > v ? xp[i] : v;
            }
            Y[p] = v;
        }
        else {
            //  Several float partial sums: vectorises, and keeps more
            //  precision than one running float sum on large planes.
            float acc[8] = {0};
            int64_t i = 0;
            for (; i + 8 <= sz; i += 8) {
                for (int j = 0; j < 8; j++) {
                    acc[j] += xp[i + j];
                }
            }
            double sum = 0.0;
            for (; i < sz; i++) {
                sum += xp[i];
            }
            for (int j = 0; j < 8; j++) {
                sum += acc[j];
            }
            Y[p] = sz > 0 ? (float) (sum / (double) sz) : 0.0f;
        }
    }
    return ZI_OK;
}

int
zi_nn_gavgpool_run (zi_kctx_t *ctx)
{
    return s_gpool_run (ctx, false);
}

int
zi_nn_gmaxpool_run (zi_kctx_t *ctx)
{
    return s_gpool_run (ctx, true);
}

//  LRN -------------------------------------------------------------------------------

int
zi_nn_lrn_check (const zi_node_t *node, char *err, size_t errlen)
{
    int rc;
    if ((rc = zi_nn_check_attr_type (node, "size", ZI_ATTR_INT, err, errlen))
        || (rc = zi_nn_check_attr_type (node, "alpha", ZI_ATTR_FLOAT, err,
                                        errlen))
        || (rc = zi_nn_check_attr_type (node, "beta", ZI_ATTR_FLOAT, err,
                                        errlen))
        || (rc = zi_nn_check_attr_type (node, "bias", ZI_ATTR_FLOAT, err,
                                        errlen))) {
        return rc;
    }
    int64_t size = zi_node_attr_int (node, "size", 0);
    if (size < 1 || size > INT32_MAX) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "node '%s' (%s): size %lld must be >= 1 (it is "
                        "required)",
                        node->name, node->op_type, (long long) size);
    }
    return ZI_OK;
}

int
zi_nn_lrn_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int rc = zi_nn_require_f32 (ctx, x, "X");
    if (rc) {
        return rc;
    }
    if (x->rank < 2) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "X has rank %d, expects >= 2",
                           x->rank);
    }
    int64_t size = zi_node_attr_int (ctx->node, "size", 0);
    if (size < 1 || size > INT32_MAX) {
        return zi_op_fail (ctx, ZI_ERR_MALFORMED, "size %lld must be >= 1",
                           (long long) size);
    }
    rc = zi_tensor_set_shape (ctx->out[0], ZI_DT_F32, x->rank, x->ne);
    return rc ? zi_op_fail (ctx, rc, "bad output shape") : ZI_OK;
}

//  x (N, C, S) -> y (N, C, S):
//  y = x / (bias + alpha / size * sum_{c' in window(c)} x[c']^2) ^ beta
int
zi_nn_lrn_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int rc = zi_nn_require_f32 (ctx, x, "X");
    if (rc) {
        return rc;
    }
    int64_t size = zi_node_attr_int (ctx->node, "size", 0);
    if (size < 1 || size > INT32_MAX) {
        return zi_op_fail (ctx, ZI_ERR_MALFORMED, "size %lld must be >= 1",
                           (long long) size);
    }
    float alpha = zi_node_attr_float (ctx->node, "alpha", 1e-4f);
    float beta = zi_node_attr_float (ctx->node, "beta", 0.75f);
    float bias = zi_node_attr_float (ctx->node, "bias", 1.0f);
    int64_t N = x->ne[0], C = x->ne[1];
    int64_t S = N > 0 && C > 0 ? zi_tensor_count (x) / (N * C) : 0;
    if (N * C * S == 0) {
        return ZI_OK;
    }
    const float *X = (const float *) x->data;
    float *Y = (float *) ctx->out[0]->data;
    float *acc = (float *) malloc ((size_t) S * sizeof *acc);
    if (!acc) {
        return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
    }
    int64_t before = (size - 1) / 2, after = size - 1 - before;
    float scale = alpha / (float) size;
    for (int64_t n = 0; n < N; n++) {
        const float *xn = X + n * C * S;
        float *yn = Y + n * C * S;
        for (int64_t c = 0; c < C; c++) {
            int64_t c0 = c - before < 0 ? 0 : c - before;
            int64_t c1 = c + after >= C ? C - 1 : c + after;
            memset (acc, 0, (size_t) S * sizeof *acc);
            for (int64_t cc = c0; cc <= c1; cc++) {
                const float *xc = xn + cc * S;
                for (int64_t i = 0; i < S; i++) {
                    acc[i] += xc[i] * xc[i];
                }
            }
            const float *xc = xn + c * S;
            float *yc = yn + c * S;
            for (int64_t i = 0; i < S; i++) {
                yc[i] = xc[i] / powf (bias + scale * acc[i], beta);
            }
        }
    }
    free (acc);
    return ZI_OK;
}
