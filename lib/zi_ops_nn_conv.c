/*  zi_ops_nn_conv.c - Conv and ConvTranspose (1-D, 2-D, 3-D), float32.

    Conv picks one path per node from its shape alone (never from the
    thread count, so a node computes the same bits however it is split):

      * AVX-512, stride 1 in H, 1-D / 2-D (the bulk of a CNN): the
        shifted-copy engine of zi_conv.h. Each chunk of output rows gets
        one copy of the input rows it reads per kernel column, shifted and
        zero-padded, and a microkernel of 8 output channels x 48 pixels
        reads its columns straight from them (no im2col), with bias and
        activation applied in registers; a fused 2x2 MaxPool pools each
        chunk while it is in cache;
      * AVX-512, other strides / 3-D: im2col packed into 16-pixel panels
        per chunk of output pixels (zi_conv_pack) and the same microkernel;
      * depthwise (groups of one input channel, also with a channel
        multiplier): a direct loop, since a GEMM per group with M = the
        multiplier and K = kernel size (9 for 3x3) spends more time packing
        than multiplying. (A plain conv of one input channel, group 1, is a
        GEMM with M = all output channels and goes the ways below: 5x
        faster than the direct loop for Fashion-MNIST's first layer.)
      * portable 1x1 / stride 1 / no pads: one sgemm per (image, group) on
        the input as it lies in memory;
      * portable, everything else: im2col + sgemm, tiled over output rows so
        the column buffer stays near 8 MB however large the image.

    Every path cuts the node into tasks over ctx->pool: (image, group,
    pixel chunk, output-channel part) for the AVX-512 paths, (image, group,
    row chunk), (image, group) or (image, output channel) for the others.
    Each output element is computed by one task, the same way whatever the
    split (one fma chain over k, then bias, then activation), so results
    are bit-identical for any number of threads. Small convs run on fewer
    threads (zi_conv_min_flops): waking a helper costs more than they take.

    The im2col and col2im inner loops run over one output row with the valid
    range of positions computed up front (zi_nn_valid_range), so there is no
    bounds branch per element and stride-1 rows are plain memcpy.

    Spatial ranks 1 and 2 are handled as 3-D with leading size-1 dims (see
    zi_nn_geom_t), which costs nothing and keeps one code path.
*/
#include "zi_ops_nn.h"

#include "zi_conv.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define S_COL_TARGET ((int64_t) 1 << 21)   //  floats per column tile (8 MB)

//  Rows of the spatial grid one im2col tile holds: a column row costs
//  kc * w floats and a tile aims at S_COL_TARGET floats, at least one row,
//  at most nq. Conv and ConvTranspose tile the same way. Returns 0, or -1
//  when kc * w overflows; stores the row cost too.
static int
s_col_tile_rows (int64_t kc, int64_t w, int64_t nq, int64_t *rowcost, int64_t *tq)
{
    if (__builtin_mul_overflow (kc, w, rowcost)) {
        return -1;
    }
    int64_t t = S_COL_TARGET / (*rowcost > 0 ? *rowcost : 1);
    *tq = t < 1 ? 1 : t > nq ? nq : t;
    return 0;
}
#define S_PACK_TARGET ((int64_t) 1 << 17)  //  floats per packed tile (512 KB)

//  Conv geometry ------------------------------------------------------------------

typedef struct {
    zi_nn_geom_t g;
    int64_t N, C, M;        //  batch, input channels, output channels
    int64_t group, Cg, Mg;  //  groups, channels per group in / out
    int64_t kprod;          //  kernel elements (spatial)
    int64_t isz, osz;       //  spatial elements of one input / output plane
    int64_t Kc;             //  Cg * kprod: rows of a group's column buffer
} s_conv_t;

static int
s_check_common (const zi_node_t *node, char *err, size_t errlen)
{
    int rc = zi_nn_check_window_attrs (node, err, errlen);
    if (rc) {
        return rc;
    }
    if ((rc = zi_nn_check_attr_type (node, "group", ZI_ATTR_INT, err,
                                     errlen))) {
        return rc;
    }
    int64_t group = zi_node_attr_int (node, "group", 1);
    if (group < 1 || group > INT32_MAX) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "node '%s' (%s): group %lld is out of range",
                        node->name, node->op_type, (long long) group);
    }
    return ZI_OK;
}

int
zi_nn_conv_check (const zi_node_t *node, char *err, size_t errlen)
{
    return s_check_common (node, err, errlen);
}

//  Check X, W, B dtypes and ranks, read the group; shared by both ops.
static int
s_conv_inputs (zi_kctx_t *ctx, int64_t *group)
{
    const zi_tensor_t *x = ctx->in[0], *w = ctx->in[1];
    const zi_tensor_t *b = ctx->n_in > 2 ? ctx->in[2] : NULL;
    int rc;
    if ((rc = zi_nn_require_f32 (ctx, x, "X"))
        || (rc = zi_nn_require_f32 (ctx, w, "W"))
        || (b && (rc = zi_nn_require_f32 (ctx, b, "B")))) {
        return rc;
    }
    if (x->rank < 3 || x->rank > 2 + ZI_NN_MAX_SPATIAL) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED,
                           "X has rank %d, supported: 3 to %d", x->rank,
                           2 + ZI_NN_MAX_SPATIAL);
    }
    if (w->rank != x->rank) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "W has rank %d but X has rank %d", w->rank,
                           x->rank);
    }
    *group = zi_node_attr_int (ctx->node, "group", 1);
    if (*group < 1 || *group > INT32_MAX) {
        return zi_op_fail (ctx, ZI_ERR_MALFORMED, "group %lld is out of range",
                           (long long) *group);
    }
    return ZI_OK;
}

static int
s_conv_geom (zi_kctx_t *ctx, s_conv_t *cv)
{
    const zi_tensor_t *x = ctx->in[0], *w = ctx->in[1];
    const zi_tensor_t *b = ctx->n_in > 2 ? ctx->in[2] : NULL;
    int rc = s_conv_inputs (ctx, &cv->group);
    if (rc) {
        return rc;
    }
    cv->N = x->ne[0];
    cv->C = x->ne[1];
    cv->M = w->ne[0];
    cv->Cg = w->ne[1];
    //  W (M, C/group, k...): the division is checked as a product.
    if (cv->C % cv->group != 0 || cv->C / cv->group != cv->Cg) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "X has %lld channels but W expects %lld x group "
                           "%lld",
                           (long long) cv->C, (long long) cv->Cg,
                           (long long) cv->group);
    }
    if (cv->M % cv->group != 0) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "%lld output channels are not divisible by group "
                           "%lld",
                           (long long) cv->M, (long long) cv->group);
    }
    cv->Mg = cv->M / cv->group;
    if (b && (b->rank != 1 || b->ne[0] != cv->M)) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "B must have shape (%lld)",
                           (long long) cv->M);
    }
    if ((rc = zi_nn_geom_forward (ctx, x, w->ne + 2, false, &cv->g))) {
        return rc;
    }
    const zi_nn_geom_t *g = &cv->g;
    //  Each product is bounded by a tensor's element count (checked when
    //  the tensor was shaped) except osz, which infer checks via set_shape
    //  and run recomputes identically; check all of them anyway.
    cv->kprod = 1;
    cv->isz = 1;
    cv->osz = 1;
    for (int i = 0; i < ZI_NN_MAX_SPATIAL; i++) {
        if (__builtin_mul_overflow (cv->kprod, g->k[i], &cv->kprod)
            || __builtin_mul_overflow (cv->isz, g->in[i], &cv->isz)
            || __builtin_mul_overflow (cv->osz, g->out[i], &cv->osz)) {
            return zi_op_fail (ctx, ZI_ERR_OVERFLOW, "sizes overflow");
        }
    }
    if (__builtin_mul_overflow (cv->Cg, cv->kprod, &cv->Kc)
        || cv->Kc > INT_MAX || cv->Mg > INT_MAX || cv->osz > INT_MAX) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT,
                           "GEMM dims exceed INT_MAX (%lld x %lld x %lld)",
                           (long long) cv->Mg, (long long) cv->Kc,
                           (long long) cv->osz);
    }
    return ZI_OK;
}

int
zi_nn_conv_infer (zi_kctx_t *ctx)
{
    s_conv_t cv;
    int rc = s_conv_geom (ctx, &cv);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0];
    int64_t shape[ZI_MAX_RANK] = {cv.N, cv.M};
    int nd = cv.g.nd;
    for (int i = 0; i < nd; i++) {
        shape[2 + i] = cv.g.out[ZI_NN_MAX_SPATIAL - nd + i];
    }
    rc = zi_tensor_set_shape (ctx->out[0], ZI_DT_F32, x->rank, shape);
    return rc ? zi_op_fail (ctx, rc, "output shape is too large") : ZI_OK;
}

//  Conv kernels ---------------------------------------------------------------------

//  x (C, iD, iH, iW) -> col (Cg*kD*kH*kW, (q1-q0)*oW) for output rows
//  q in [q0, q1), q = od*oH + oh; x points at the group's first channel.
static void
s_im2col (float *col, const float *x, int64_t Cg, const zi_nn_geom_t *g,
          int64_t q0, int64_t q1)
{
    const int64_t iD = g->in[0], iH = g->in[1], iW = g->in[2];
    const int64_t oH = g->out[1], oW = g->out[2];
    const int64_t T = (q1 - q0) * oW;
    const int64_t isz = iD * iH * iW;
    float *row = col;
    for (int64_t c = 0; c < Cg; c++) {
        const float *xc = x + c * isz;
        for (int64_t kd = 0; kd < g->k[0]; kd++) {
            for (int64_t kh = 0; kh < g->k[1]; kh++) {
                for (int64_t kw = 0; kw < g->k[2]; kw++, row += T) {
                    int64_t offw = kw * g->d[2] - g->pb[2];
                    int64_t lo, hi;
                    zi_nn_valid_range (oW, iW, g->s[2], offw, &lo, &hi);
                    for (int64_t q = q0; q < q1; q++) {
                        int64_t od = q / oH, oh = q % oH;
                        int64_t id = od * g->s[0] + kd * g->d[0] - g->pb[0];
                        int64_t ih = oh * g->s[1] + kh * g->d[1] - g->pb[1];
                        float *dst = row + (q - q0) * oW;
                        if (id < 0 || id >= iD || ih < 0 || ih >= iH) {
                            memset (dst, 0, (size_t) oW * sizeof *dst);
                            continue;
                        }
                        const float *src = xc + (id * iH + ih) * iW + offw;
                        memset (dst, 0, (size_t) lo * sizeof *dst);
                        if (g->s[2] == 1) {
                            memcpy (dst + lo, src + lo,
                                    (size_t) (hi - lo) * sizeof *dst);
                        }
                        else {
                            const int64_t sw = g->s[2];
                            for (int64_t o = lo; o < hi; o++) {
                                dst[o] = src[o * sw];
                            }
                        }
                        memset (dst + hi, 0, (size_t) (oW - hi) * sizeof *dst);
                    }
                }
            }
        }
    }
}

//  One input channel per group: y (M, osz) from x (C, isz), w (M, kprod),
//  output channels [m0, m1); output channel m reads input channel m / Mg.
//  Bias + act per row. kr (kW, 2): the valid output-column range of each
//  kernel column.
static void
s_conv_direct (float *y, const float *x, const float *w, const float *bias,
               int64_t m0, int64_t m1, int64_t Mg, const zi_nn_geom_t *g,
               const int64_t *kr, zi_nn_act_t act)
{
    const int64_t iD = g->in[0], iH = g->in[1], iW = g->in[2];
    const int64_t oD = g->out[0], oH = g->out[1], oW = g->out[2];
    const int64_t kD = g->k[0], kH = g->k[1], kW = g->k[2];
    const int64_t sw = g->s[2];
    const int64_t isz = iD * iH * iW, osz = oD * oH * oW;
    for (int64_t m = m0; m < m1; m++) {
        const float *xc = x + (m / Mg) * isz;
        const float *wm = w + m * kD * kH * kW;
        float *ym = y + m * osz;
        for (int64_t od = 0; od < oD; od++) {
            for (int64_t oh = 0; oh < oH; oh++) {
                float *yr = ym + (od * oH + oh) * oW;
                memset (yr, 0, (size_t) oW * sizeof *yr);
                for (int64_t kd = 0; kd < kD; kd++) {
                    int64_t id = od * g->s[0] + kd * g->d[0] - g->pb[0];
                    if (id < 0 || id >= iD) {
                        continue;
                    }
                    for (int64_t kh = 0; kh < kH; kh++) {
                        int64_t ih = oh * g->s[1] + kh * g->d[1] - g->pb[1];
                        if (ih < 0 || ih >= iH) {
                            continue;
                        }
                        const float *xr = xc + (id * iH + ih) * iW;
                        const float *wk = wm + (kd * kH + kh) * kW;
                        for (int64_t kw = 0; kw < kW; kw++) {
                            int64_t offw = kw * g->d[2] - g->pb[2];
                            const int64_t lo = kr[2 * kw], hi = kr[2 * kw + 1];
                            const float wv = wk[kw];
                            const float *src = xr + offw;
                            if (sw == 1) {
                                for (int64_t o = lo; o < hi; o++) {
                                    yr[o] += wv * src[o];
                                }
                            }
                            else {
                                for (int64_t o = lo; o < hi; o++) {
                                    yr[o] += wv * src[o * sw];
                                }
                            }
                        }
                    }
                }
            }
        }
        zi_nn_rows_bias_act (ym, 1, osz, osz, bias ? bias + m : NULL, act);
    }
}

//  Running a Conv over the pool ----------------------------------------------

//  How a Conv run is cut into tasks: every task writes a disjoint block of
//  Y and computes each element the same way whatever the split, so the
//  result does not depend on the number of threads.
typedef enum {
    S_PATH_VIRT,        //  AVX-512, stride 1 in H: shifted copies
    S_PATH_PACKED,      //  AVX-512: (image, group, pixel chunk, channel part)
    S_PATH_IM2COL,      //  portable: (image, group, output-row chunk)
    S_PATH_POINTWISE,   //  portable 1x1: (image, group), one sgemm
    S_PATH_DIRECT,      //  one input channel per group: (image, channel)
} s_path_t;

typedef struct {
    s_path_t path;
    const s_conv_t *cv;
    zi_conv_shape_t sh;         //  VIRT, PACKED
    const float *X, *W, *B;
    float *Y;
    zi_nn_act_t act;
    int64_t nchunk, chunk;      //  chunks per (image, group) and their size:
                                //  pixels (VIRT, PACKED)
                                //  or output rows q (IM2COL)
    int64_t nm, mstep;          //  VIRT, PACKED: channel parts, and
                                //  channels per part
    const int64_t *kr;          //  DIRECT: valid column range per kw
    int32_t *koff;              //  VIRT: offset of each k into the copies
    int64_t npix;               //  VIRT: pixels computed per (image, group)
    bool pool;                  //  VIRT: Y is the 2x2-max-pooled output;
                                //  chunks are whole pairs of rows
    float *scratch;             //  thread t's block: scratch + t * stride
    int64_t stride;             //  floats
} s_job_t;

//  Cut each of `base` (image, group) pairs' npix pixels into chunks of at
//  most maxtiles microkernel tiles (3 panels; at least one), and its Mg
//  output channels into parts, so that nthr threads get even shares: split
//  the channels first when the pairs alone give too few tasks (they share
//  one pack or copy), then add chunks until the task count is a
//  multiple of nthr or at least 8 per thread.
static void
s_split (s_job_t *job, int64_t base, int64_t npix, int64_t maxtiles,
         int64_t Mg, int nthr)
{
    const int64_t unit = 3 * ZI_CONV_PANEL;
    const int64_t ntile = (npix + unit - 1) / unit;
    maxtiles = maxtiles < 1 ? 1 : maxtiles;
    int64_t nchunk = (ntile + maxtiles - 1) / maxtiles;
    int64_t nm = 1;
    if (base * nchunk < 2 * nthr && Mg >= 32) {
        int64_t want = (2 * nthr + base * nchunk - 1) / (base * nchunk);
        nm = want < Mg / 16 ? want : Mg / 16;
    }
    int64_t step = (Mg + nm - 1) / nm;
    step = (step + 7) / 8 * 8;
    nm = (Mg + step - 1) / step;
    while (nchunk < ntile) {
        int64_t t = base * nm * nchunk;
        if (t % nthr == 0 || t >= 8 * nthr) {
            break;
        }
        nchunk++;
    }
    int64_t per = (ntile + nchunk - 1) / nchunk;
    job->chunk = per * unit;
    job->nchunk = (ntile + per - 1) / per;
    job->nm = nm;
    job->mstep = step;
}

//  The shifted-copy path when the shape allows it: chunks of output pixels
//  of about 16 microkernel tiles, each copied per task into the thread's
//  scratch (so the copy is still in cache when it is read).
//  With a fused 2x2 MaxPool, only the 2 (oH / 2) rows the pool reads are
//  computed, in chunks of whole row pairs.
static bool
s_plan_virt (s_job_t *job, int64_t base, int nthr)
{
    if (!zi_conv_direct_init (&job->sh)) {
        return false;
    }
    const int64_t oW = job->sh.Wp;
    job->npix = job->pool ? job->cv->g.out[1] / 2 * 2 * oW : job->sh.nvirt;
    s_split (job, base, job->npix, 16, job->cv->Mg, nthr);
    if (job->pool) {
        int64_t pair = 2 * oW;
        job->chunk = (job->chunk + pair - 1) / pair * pair;
        job->nchunk = (job->npix + job->chunk - 1) / job->chunk;
    }
    return zi_conv_direct_plan (&job->sh, job->chunk);
}

static void
s_conv_task (void *arg, int64_t t0, int64_t t1, int thread)
{
    const s_job_t *job = (const s_job_t *) arg;
    const s_conv_t *cv = job->cv;
    const zi_nn_geom_t *g = &cv->g;
    float *scratch = job->scratch ? job->scratch + thread * job->stride : NULL;
    int64_t packed = -1;    //  (image-group, chunk) now in scratch
    for (int64_t t = t0; t < t1; t++) {
        if (job->path == S_PATH_DIRECT) {
            int64_t n = t / cv->M, m = t % cv->M;
            s_conv_direct (job->Y + n * cv->M * cv->osz,
                           job->X + n * cv->C * cv->isz, job->W, job->B, m,
                           m + 1, cv->Mg, g, job->kr, job->act);
            continue;
        }
        int64_t per = job->path == S_PATH_POINTWISE ? 1
                                                      : job->nchunk * job->nm;
        int64_t ng = t / per, r = t % per;
        int64_t n = ng / cv->group, gi = ng % cv->group;
        const float *xg = job->X + (n * cv->C + gi * cv->Cg) * cv->isz;
        const float *wg = job->W + gi * cv->Mg * cv->Kc;
        const float *bg = job->B ? job->B + gi * cv->Mg : NULL;
        float *yg = job->Y + (n * cv->M + gi * cv->Mg) * cv->osz;
        if (job->path == S_PATH_POINTWISE) {
            //  Y_g (Mg, osz) = W_g (Mg, Cg) @ X_g (Cg, isz), osz == isz
            zi_nn_sgemm (yg, cv->osz, false, false, cv->Mg, cv->osz, cv->Cg,
                         1.0f, wg, cv->Cg, xg, cv->isz, 0.0f);
            zi_nn_rows_bias_act (yg, cv->Mg, cv->osz, cv->osz, bg, job->act);
        }
        else if (job->path == S_PATH_IM2COL) {
            const int64_t oW = g->out[2], nq = g->out[0] * g->out[1];
            int64_t q0 = r * job->chunk;
            int64_t q1 = q0 + job->chunk < nq ? q0 + job->chunk : nq;
            int64_t T = (q1 - q0) * oW;
            s_im2col (scratch, xg, cv->Cg, g, q0, q1);
            //  Y_g[:, tile] (Mg, T) = W_g (Mg, Kc) @ col (Kc, T)
            zi_nn_sgemm (yg + q0 * oW, cv->osz, false, false, cv->Mg, T,
                         cv->Kc, 1.0f, wg, cv->Kc, scratch, T, 0.0f);
            zi_nn_rows_bias_act (yg + q0 * oW, cv->Mg, T, cv->osz, bg,
                                 job->act);
        }
        else if (job->path == S_PATH_VIRT) {
            int64_t c = r / job->nm, part = r % job->nm;
            int64_t v0 = c * job->chunk;
            int64_t v1 = v0 + job->chunk < job->npix ? v0 + job->chunk
                                                     : job->npix;
            int64_t m0 = part * job->mstep;
            int64_t m1 = m0 + job->mstep < cv->Mg ? m0 + job->mstep : cv->Mg;
            //  Consecutive channel parts of one chunk share its copy.
            if (packed != t / job->nm) {
                zi_conv_pad (scratch, xg, &job->sh, v0, v1);
                packed = t / job->nm;
            }
            if (!job->pool) {
                zi_conv_direct (yg + m0 * cv->osz + v0, cv->osz, scratch,
                                job->koff, wg, bg, m0, m1, &job->sh, v0, v1,
                                job->act);
                continue;
            }
            //  Conv rows [v0, v1) / oW of channels [m0, m1) into the
            //  thread's block after its copy, then pooled into Y while
            //  they are in cache.
            const int64_t oW = g->out[2], pW = oW / 2;
            const int64_t psz = g->out[1] / 2 * pW;
            float *tmp = scratch + job->sh.xpsz;
            zi_conv_direct (tmp, v1 - v0, scratch, job->koff, wg, bg, m0, m1,
                            &job->sh, v0, v1, job->act);
            float *yp = job->Y + (n * cv->M + gi * cv->Mg + m0) * psz
                        + v0 / oW / 2 * pW;
            zi_nn_maxpool_2x2_f32 (yp, psz, tmp, m1 - m0, (v1 - v0) / oW,
                                   oW);
        }
        else {
            int64_t c = r / job->nm, part = r % job->nm;
            int64_t p0 = c * job->chunk;
            int64_t p1 = p0 + job->chunk < cv->osz ? p0 + job->chunk : cv->osz;
            int64_t m0 = part * job->mstep;
            int64_t m1 = m0 + job->mstep < cv->Mg ? m0 + job->mstep : cv->Mg;
            //  Consecutive channel parts of one chunk share its pack.
            if (packed != t / job->nm) {
                zi_conv_pack (scratch, xg, &job->sh, p0, p1);
                packed = t / job->nm;
            }
            zi_conv_gemm (yg, scratch, wg, bg, m0, m1, &job->sh, p0, p1,
                          job->act);
        }
    }
}

//  Planes [p0, p1) of a conv output (planes, iH, iW) max-pooled 2x2.
typedef struct {
    float *y;
    const float *x;
    int64_t iH, iW;
} s_pool_job_t;

static void
s_pool_task (void *arg, int64_t p0, int64_t p1, int thread)
{
    (void) thread;
    const s_pool_job_t *j = (const s_pool_job_t *) arg;
    const int64_t psz = j->iH / 2 * (j->iW / 2);
    zi_nn_maxpool_2x2_f32 (j->y + p0 * psz, psz, j->x + p0 * j->iH * j->iW,
                           p1 - p0, j->iH, j->iW);
}

//  The Conv (+ act) into Y, or with `pool` into the 2x2-max-pooled Y:
//  fused per chunk on the AVX-512 stride-1 path, else through a whole
//  conv output buffer then zi_nn_maxpool_2x2_f32.
static int
s_conv_run (zi_kctx_t *ctx, zi_nn_act_t act, bool pool)
{
    s_conv_t cv;
    int rc = s_conv_geom (ctx, &cv);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *b = ctx->n_in > 2 ? ctx->in[2] : NULL;
    const float *X = (const float *) ctx->in[0]->data;
    const float *W = (const float *) ctx->in[1]->data;
    const float *B = b ? (const float *) b->data : NULL;
    float *Y = (float *) ctx->out[0]->data;
    const zi_nn_geom_t *g = &cv.g;
    if (pool && (g->nd != 2 || g->out[1] / 2 == 0 || g->out[2] / 2 == 0)) {
        if (g->nd != 2) {
            return zi_op_fail (ctx, ZI_ERR_INVALID,
                               "a fused MaxPool needs a 2-D Conv");
        }
        return ZI_OK;   //  the pooled output is empty
    }
    if (cv.N == 0 || cv.M == 0 || cv.osz == 0) {
        return ZI_OK;
    }
    if (cv.Cg == 0) {
        //  No input channels: the sum is empty, Y = act (bias).
        for (int64_t n = 0; n < cv.N; n++) {
            float *yn = Y + n * cv.M * cv.osz;
            memset (yn, 0, (size_t) (cv.M * cv.osz) * sizeof *yn);
            zi_nn_rows_bias_act (yn, cv.M, cv.osz, cv.osz, B, act);
        }
        return ZI_OK;
    }
    bool pointwise = true;
    for (int i = 0; i < ZI_NN_MAX_SPATIAL; i++) {
        if (g->k[i] != 1 || g->s[i] != 1 || g->pb[i] != 0 || g->pe[i] != 0) {
            pointwise = false;
        }
    }
    const int nthr = zi_pool_size (ctx->pool);
    //  The AVX-512 pack addresses input columns with int32 lanes.
    const bool avx = zi_conv_avx512 ()
                     && (g->out[2] + 2 * ZI_CONV_PANEL) * g->s[2]
                                + g->k[2] * g->d[2] + g->pb[2] + g->in[2]
                            < INT32_MAX;
    s_job_t job = {.cv = &cv, .X = X, .W = W, .B = B, .Y = Y, .act = act,
                   .nm = 1, .pool = pool};
    job.sh = (zi_conv_shape_t){.g = *g, .Cg = cv.Cg, .Kc = cv.Kc,
                               .isz = cv.isz, .osz = cv.osz};
    int64_t ntask = cv.N * cv.group;
    if (cv.Cg == 1 && !pointwise && cv.group > 1) {
        //  Depthwise: a GEMM with one row per group would waste the
        //  microkernel's 8 rows.
        job.path = S_PATH_DIRECT;
        ntask = cv.N * cv.M;
    }
    else if (avx && s_plan_virt (&job, ntask, nthr)) {
        job.path = S_PATH_VIRT;
        ntask *= job.nchunk * job.nm;
        job.stride = job.sh.xpsz;
        if (pool) {
            //  plus the conv rows of one task, before pooling
            job.stride += (job.mstep * job.chunk + ZI_CONV_PANEL - 1)
                          / ZI_CONV_PANEL * ZI_CONV_PANEL;
        }
    }
    else if (avx) {
        job.path = S_PATH_PACKED;
        //  Pixel chunks whose pack stays near S_PACK_TARGET (L2).
        int64_t tiles = S_PACK_TARGET / cv.Kc / (3 * ZI_CONV_PANEL);
        s_split (&job, ntask, cv.osz, tiles, cv.Mg, nthr);
        ntask *= job.nchunk * job.nm;
        int64_t px = job.chunk < cv.osz ? job.chunk : cv.osz;
        job.stride = cv.Kc * ((px + ZI_CONV_PANEL - 1) / ZI_CONV_PANEL
                              * ZI_CONV_PANEL);
    }
    else if (pointwise) {
        job.path = S_PATH_POINTWISE;
    }
    else {
        //  im2col + sgemm, tiled over output rows q = (od, oh).
        job.path = S_PATH_IM2COL;
        const int64_t oW = g->out[2], nq = g->out[0] * g->out[1];
        int64_t rowcost, tq;
        if (s_col_tile_rows (cv.Kc, oW, nq, &rowcost, &tq) != 0) {
            return zi_op_fail (ctx, ZI_ERR_OVERFLOW, "column buffer overflows");
        }
        job.chunk = tq;
        job.nchunk = (nq + tq - 1) / tq;
        ntask *= job.nchunk;
        if (__builtin_mul_overflow (rowcost, tq, &job.stride)) {
            return zi_op_fail (ctx, ZI_ERR_OVERFLOW, "column buffer overflows");
        }
    }
    float *full = NULL;     //  pool off the fused path: the conv output
    if (pool && job.path != S_PATH_VIRT) {
        job.pool = false;
        int64_t count;
        if (__builtin_mul_overflow (cv.N, cv.M, &count)
            || __builtin_mul_overflow (count, cv.osz, &count)
            || (uint64_t) count > SIZE_MAX / sizeof (float)) {
            return zi_op_fail (ctx, ZI_ERR_OVERFLOW, "conv output overflows");
        }
        full = (float *) malloc ((size_t) count * sizeof (float));
        if (!full) {
            return zi_op_fail (ctx, ZI_ERR_NOMEM,
                               "cannot allocate the %lld-float conv output",
                               (long long) count);
        }
        job.Y = full;
    }
    if (job.path == S_PATH_DIRECT) {
        //  The column ranges depend on kw only: compute them once, not per
        //  row (two integer divisions each would cost more than the row).
        int64_t *kr = (int64_t *) malloc ((size_t) g->k[2] * 2 * sizeof *kr);
        if (!kr) {
            rc = zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (int64_t kw = 0; kw < g->k[2]; kw++) {
            zi_nn_valid_range (g->out[2], g->in[2], g->s[2],
                               kw * g->d[2] - g->pb[2], &kr[2 * kw],
                               &kr[2 * kw + 1]);
        }
        job.kr = kr;
    }
    if (job.stride > 0) {
        //  One scratch block per thread, 64-byte aligned for the panels.
        int64_t total;
        if (__builtin_mul_overflow (job.stride, (int64_t) nthr, &total)
            || (uint64_t) total > (SIZE_MAX - 64) / sizeof (float)) {
            rc = zi_op_fail (ctx, ZI_ERR_OVERFLOW, "column buffer overflows");
            goto out;
        }
        size_t bytes = ((size_t) total * sizeof (float) + 63) / 64 * 64;
        job.scratch = (float *) aligned_alloc (64, bytes);
        if (!job.scratch) {
            rc = zi_op_fail (ctx, ZI_ERR_NOMEM,
                             "cannot allocate a %lld-float column buffer",
                             (long long) total);
            goto out;
        }
        if (job.path == S_PATH_VIRT) {
            //  zi_conv_pad wants its copies zeroed once (see zi_conv.h).
            memset (job.scratch, 0, bytes);
        }
    }
    if (job.path == S_PATH_VIRT) {
        job.koff = (int32_t *) malloc ((size_t) cv.Kc * sizeof *job.koff);
        if (!job.koff) {
            rc = zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
            goto out;
        }
        zi_conv_direct_offsets (job.koff, &job.sh);
    }
    //  Flops of one task, for a grain that gives each thread at least
    //  zi_conv_min_flops (): waking a helper costs microseconds, more than
    //  a small conv (a batch-1 layer of a tiny model) takes on one thread.
    double work = 2.0 * (double) cv.kprod * (double) cv.Cg;
    switch (job.path) {
        case S_PATH_DIRECT:
            work = 2.0 * (double) cv.kprod * (double) cv.osz;
            break;
        case S_PATH_POINTWISE:
            work *= (double) cv.Mg * (double) cv.osz;
            break;
        case S_PATH_IM2COL:
            work *= (double) cv.Mg * (double) job.chunk * (double) g->out[2];
            break;
        default:
            work *= (double) job.mstep * (double) job.chunk;
            break;
    }
    const double least = zi_conv_min_flops ();
    int64_t grain = work >= least ? 1 : (int64_t) (least / work);
    zi_pool_for (ctx->pool, ntask, grain, s_conv_task, &job);
    if (full) {
        s_pool_job_t pj = {Y, full, g->out[1], g->out[2]};
        zi_pool_for (ctx->pool, cv.N * cv.M, 1, s_pool_task, &pj);
    }
    rc = ZI_OK;
out:
    free (full);
    free (job.koff);
    free (job.scratch);
    free ((void *) job.kr);
    return rc;
}

int
zi_nn_conv_act (zi_kctx_t *ctx, zi_nn_act_t act)
{
    return s_conv_run (ctx, act, false);
}

int
zi_nn_conv_act_maxpool (zi_kctx_t *ctx, zi_nn_act_t act)
{
    return s_conv_run (ctx, act, true);
}



//  ConvTranspose ----------------------------------------------------------------------

int
zi_nn_convt_check (const zi_node_t *node, char *err, size_t errlen)
{
    return s_check_common (node, err, errlen);
}

//  Geometry of ConvTranspose, expressed as the forward conv it is the
//  adjoint of: g.in is ConvTranspose's OUTPUT (the forward conv's input)
//  and g.out its INPUT, so col2im below mirrors s_im2col.
static int
s_convt_geom (zi_kctx_t *ctx, s_conv_t *cv)
{
    const zi_tensor_t *x = ctx->in[0], *w = ctx->in[1];
    const zi_tensor_t *b = ctx->n_in > 2 ? ctx->in[2] : NULL;
    int rc = s_conv_inputs (ctx, &cv->group);
    if (rc) {
        return rc;
    }
    int nd = x->rank - 2;
    cv->N = x->ne[0];
    cv->C = x->ne[1];
    //  W (C, M/group, k...)
    if (w->ne[0] != cv->C || cv->C % cv->group != 0) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "W has %lld input channels, X %lld (group %lld)",
                           (long long) w->ne[0], (long long) cv->C,
                           (long long) cv->group);
    }
    cv->Cg = cv->C / cv->group;
    cv->Mg = w->ne[1];
    if (__builtin_mul_overflow (cv->Mg, cv->group, &cv->M)) {
        return zi_op_fail (ctx, ZI_ERR_OVERFLOW, "output channels overflow");
    }
    if (b && (b->rank != 1 || b->ne[0] != cv->M)) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "B must have shape (%lld)",
                           (long long) cv->M);
    }
    int64_t s[ZI_NN_MAX_SPATIAL], d[ZI_NN_MAX_SPATIAL];
    int64_t pads[2 * ZI_NN_MAX_SPATIAL], opad[ZI_NN_MAX_SPATIAL];
    struct {
        const char *name;
        int n;
        int64_t dflt, min;
        int64_t *dst;
    } attrs[] = {
        {"strides", nd, 1, 1, s}, {"dilations", nd, 1, 1, d},
        {"pads", 2 * nd, 0, 0, pads}, {"output_padding", nd, 0, 0, opad},
    };
    for (size_t a = 0; a < sizeof attrs / sizeof attrs[0]; a++) {
        int cnt = 0;
        const int64_t *v = zi_node_attr_ints (ctx->node, attrs[a].name, &cnt);
        if (v && cnt != attrs[a].n) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE,
                               "%s has %d values, expects %d", attrs[a].name,
                               cnt, attrs[a].n);
        }
        for (int i = 0; i < attrs[a].n; i++) {
            int64_t val = v ? v[i] : attrs[a].dflt;
            if (val < attrs[a].min || val > INT32_MAX) {
                return zi_op_fail (ctx, ZI_ERR_MALFORMED,
                                   "%s[%d] = %lld is out of range",
                                   attrs[a].name, i, (long long) val);
            }
            attrs[a].dst[i] = val;
        }
    }
    int kn = 0, osn = 0;
    const int64_t *kattr = zi_node_attr_ints (ctx->node, "kernel_shape", &kn);
    const int64_t *os = zi_node_attr_ints (ctx->node, "output_shape", &osn);
    if (kattr && kn != nd) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "kernel_shape has %d values",
                           kn);
    }
    //  output_shape may also be given with the (N, C) dims in front.
    if (os && osn != nd && osn != nd + 2) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "output_shape has %d values",
                           osn);
    }
    if (os && osn == nd + 2) {
        os += 2;
    }
    const char *ap = zi_node_attr_string (ctx->node, "auto_pad", "NOTSET");
    bool same_upper = strcmp (ap, "SAME_UPPER") == 0;
    bool same_lower = strcmp (ap, "SAME_LOWER") == 0;
    bool valid = strcmp (ap, "VALID") == 0;
    if (!same_upper && !same_lower && !valid && strcmp (ap, "NOTSET") != 0) {
        return zi_op_fail (ctx, ZI_ERR_MALFORMED, "bad auto_pad '%s'", ap);
    }
    zi_nn_geom_t *g = &cv->g;
    g->nd = nd;
    int off = ZI_NN_MAX_SPATIAL - nd;
    for (int i = 0; i < off; i++) {
        g->in[i] = g->out[i] = g->k[i] = g->s[i] = g->d[i] = 1;
        g->pb[i] = g->pe[i] = 0;
    }
    for (int i = 0; i < nd; i++) {
        int j = off + i;
        int64_t in = x->ne[2 + i], k = w->ne[2 + i];
        if (kattr && kattr[i] != k) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE,
                               "kernel_shape[%d] = %lld but W has %lld", i,
                               (long long) kattr[i], (long long) k);
        }
        if (in < 1 || k < 1 || k > INT32_MAX) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE,
                               "spatial dim %d: input %lld, kernel %lld", i,
                               (long long) in, (long long) k);
        }
        //  full = s (in - 1) + output_padding + (k - 1) d + 1; every term
        //  is < 2^31 except in, so only the first product can overflow.
        int64_t full;
        if (__builtin_mul_overflow (s[i], in - 1, &full)
            || full > INT64_MAX / 4) {
            return zi_op_fail (ctx, ZI_ERR_OVERFLOW, "output size overflows");
        }
        full += opad[i] + (k - 1) * d[i] + 1;
        int64_t out, pb, pe;
        if (os || same_upper || same_lower) {
            if (os) {
                if (os[i] < 0 || os[i] > INT64_MAX / 4) {
                    return zi_op_fail (ctx, ZI_ERR_MALFORMED,
                                       "output_shape[%d] = %lld", i,
                                       (long long) os[i]);
                }
                out = os[i];
            }
            else if (__builtin_mul_overflow (in, s[i], &out)) {
                return zi_op_fail (ctx, ZI_ERR_OVERFLOW,
                                   "output size overflows");
            }
            //  Padding that crops `full` down to `out`; a larger `out` is
            //  filled with zeros (+ bias) at the end, as onnxruntime does.
            int64_t total = full - out > 0 ? full - out : 0;
            pb = same_upper ? total / 2 : total - total / 2;
            pe = total - pb;
        }
        else {
            pb = valid ? 0 : pads[i];
            pe = valid ? 0 : pads[nd + i];
            out = full - pb - pe;
            if (out < 0) {
                return zi_op_fail (ctx, ZI_ERR_SHAPE,
                                   "spatial dim %d: pads %lld + %lld exceed "
                                   "the output %lld",
                                   i, (long long) pb, (long long) pe,
                                   (long long) full);
            }
        }
        g->in[j] = out;     //  the forward conv's input is our output
        g->out[j] = in;
        g->k[j] = k;
        g->s[j] = s[i];
        g->d[j] = d[i];
        g->pb[j] = pb;
        g->pe[j] = pe;
    }
    cv->kprod = cv->isz = cv->osz = 1;
    for (int i = 0; i < ZI_NN_MAX_SPATIAL; i++) {
        if (__builtin_mul_overflow (cv->kprod, g->k[i], &cv->kprod)
            || __builtin_mul_overflow (cv->isz, g->out[i], &cv->isz)
            || __builtin_mul_overflow (cv->osz, g->in[i], &cv->osz)) {
            return zi_op_fail (ctx, ZI_ERR_OVERFLOW, "sizes overflow");
        }
    }
    //  isz: input plane (ConvTranspose's X), osz: output plane (Y)
    if (__builtin_mul_overflow (cv->Mg, cv->kprod, &cv->Kc)
        || cv->Kc > INT_MAX || cv->Cg > INT_MAX || cv->isz > INT_MAX) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "GEMM dims exceed INT_MAX");
    }
    return ZI_OK;
}

int
zi_nn_convt_infer (zi_kctx_t *ctx)
{
    s_conv_t cv;
    int rc = s_convt_geom (ctx, &cv);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0];
    int64_t shape[ZI_MAX_RANK] = {cv.N, cv.M};
    int nd = cv.g.nd;
    for (int i = 0; i < nd; i++) {
        shape[2 + i] = cv.g.in[ZI_NN_MAX_SPATIAL - nd + i];
    }
    rc = zi_tensor_set_shape (ctx->out[0], ZI_DT_F32, x->rank, shape);
    return rc ? zi_op_fail (ctx, rc, "output shape is too large") : ZI_OK;
}

//  col (Mg*kD*kH*kW, (q1-q0)*xW) accumulated into y (Mg, yD, yH, yW) for
//  ConvTranspose input rows q in [q0, q1), q = xd*xH + xh. In g's forward
//  terms: y is g->in, the input grid is g->out.
static void
s_col2im (float *y, const float *col, int64_t Mg, const zi_nn_geom_t *g,
          int64_t q0, int64_t q1)
{
    const int64_t yD = g->in[0], yH = g->in[1], yW = g->in[2];
    const int64_t xH = g->out[1], xW = g->out[2];
    const int64_t T = (q1 - q0) * xW;
    const int64_t ysz = yD * yH * yW;
    const float *row = col;
    for (int64_t m = 0; m < Mg; m++) {
        float *ym = y + m * ysz;
        for (int64_t kd = 0; kd < g->k[0]; kd++) {
            for (int64_t kh = 0; kh < g->k[1]; kh++) {
                for (int64_t kw = 0; kw < g->k[2]; kw++, row += T) {
                    int64_t offw = kw * g->d[2] - g->pb[2];
                    int64_t lo, hi;
                    zi_nn_valid_range (xW, yW, g->s[2], offw, &lo, &hi);
                    for (int64_t q = q0; q < q1; q++) {
                        int64_t xd = q / xH, xh = q % xH;
                        int64_t yd = xd * g->s[0] + kd * g->d[0] - g->pb[0];
                        int64_t yh = xh * g->s[1] + kh * g->d[1] - g->pb[1];
                        if (yd < 0 || yd >= yD || yh < 0 || yh >= yH) {
                            continue;
                        }
                        const float *src = row + (q - q0) * xW;
                        float *dst = ym + (yd * yH + yh) * yW + offw;
                        const int64_t sw = g->s[2];
                        for (int64_t o = lo; o < hi; o++) {
                            dst[o * sw] += src[o];
                        }
                    }
                }
            }
        }
    }
}

int
zi_nn_convt_run (zi_kctx_t *ctx)
{
    s_conv_t cv;
    int rc = s_convt_geom (ctx, &cv);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *b = ctx->n_in > 2 ? ctx->in[2] : NULL;
    const float *X = (const float *) ctx->in[0]->data;
    const float *W = (const float *) ctx->in[1]->data;
    const float *B = b ? (const float *) b->data : NULL;
    float *Y = (float *) ctx->out[0]->data;
    const zi_nn_geom_t *g = &cv.g;
    int64_t ytotal = cv.N * cv.M * cv.osz;
    if (ytotal == 0) {
        return ZI_OK;
    }
    memset (Y, 0, (size_t) ytotal * sizeof *Y);
    zi_nn_act_t none = {ZI_NN_ACT_NONE, 0.0f, 0.0f};
    //  Tile over rows of the input grid q = (xd, xh), like Conv's im2col.
    const int64_t xW = g->out[2], nq = g->out[0] * g->out[1];
    int64_t rowcost, tq;
    if (s_col_tile_rows (cv.Kc, xW, nq, &rowcost, &tq) != 0) {
        return zi_op_fail (ctx, ZI_ERR_OVERFLOW, "column buffer overflows");
    }
    int64_t colsz;
    if (__builtin_mul_overflow (rowcost, tq, &colsz)
        || (uint64_t) colsz > SIZE_MAX / sizeof (float)) {
        return zi_op_fail (ctx, ZI_ERR_OVERFLOW, "column buffer overflows");
    }
    float *col = (float *) malloc ((size_t) (colsz > 0 ? colsz : 1)
                                   * sizeof *col);
    if (!col) {
        return zi_op_fail (ctx, ZI_ERR_NOMEM,
                           "cannot allocate a %lld-float column buffer",
                           (long long) colsz);
    }
    for (int64_t n = 0; n < cv.N && cv.Cg > 0; n++) {
        for (int64_t gi = 0; gi < cv.group; gi++) {
            const float *xg = X + (n * cv.C + gi * cv.Cg) * cv.isz;
            //  W_g (Cg, Mg*kprod)
            const float *wg = W + gi * cv.Cg * cv.Kc;
            float *yg = Y + (n * cv.M + gi * cv.Mg) * cv.osz;
            for (int64_t q0 = 0; q0 < nq; q0 += tq) {
                int64_t q1 = q0 + tq < nq ? q0 + tq : nq;
                int64_t T = (q1 - q0) * xW;
                //  col (Mg*kprod, T) = W_g^T @ X_g[:, tile] (Cg, T)
                zi_nn_sgemm (col, T, true, false, cv.Kc, T, cv.Cg, 1.0f, wg,
                             cv.Kc, xg + q0 * xW, cv.isz, 0.0f);
                s_col2im (yg, col, cv.Mg, g, q0, q1);
            }
        }
    }
    free (col);
    if (B) {
        for (int64_t n = 0; n < cv.N; n++) {
            zi_nn_rows_bias_act (Y + n * cv.M * cv.osz, cv.M, cv.osz, cv.osz,
                                 B, none);
        }
    }
    return ZI_OK;
}
