/*  zi_transform.c - preprocess and post-process ops; see zi_transform.h. */
#include "zi_transform.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
zi_transform_check (const zi_plan_tensor_t *decl, const zi_tensor_t *t, char *err,
                    size_t errlen)
{
    char got[96], want[96];
    if (decl->dtype != ZI_DT_UNDEFINED && t->dtype != decl->dtype) {
        return zi_fail (err, errlen, ZI_ERR_SHAPE, "input '%s': dtype %s, expected %s",
                        decl->name, zi_dtype_name (t->dtype), zi_dtype_name (decl->dtype));
    }
    bool ok = t->rank == decl->rank;
    for (int i = 0; ok && i < decl->rank; i++) {
        ok = decl->shape[i] < 0 || decl->shape[i] == t->ne[i];
    }
    if (!ok) {
        size_t pos = (size_t) snprintf (want, sizeof want, "[");
        for (int i = 0; i < decl->rank && pos < sizeof want; i++) {
            pos += decl->shape[i] < 0
                       ? (size_t) snprintf (want + pos, sizeof want - pos, "%s?", i ? "," : "")
                       : (size_t) snprintf (want + pos, sizeof want - pos, "%s%lld",
                                            i ? "," : "", (long long) decl->shape[i]);
        }
        if (pos < sizeof want) {
            snprintf (want + pos, sizeof want - pos, "]");
        }
        return zi_fail (err, errlen, ZI_ERR_SHAPE, "input '%s': shape %s, expected %s",
                        decl->name, zi_tensor_shape_str (t, got, sizeof got), want);
    }
    return ZI_OK;
}

//  Read element i of any numeric tensor as a double.
static double
s_get (const zi_tensor_t *t, int64_t i)
{
    const void *d = t->data;
    switch (t->dtype) {
        case ZI_DT_F32: return ((const float *) d)[i];
        case ZI_DT_F64: return ((const double *) d)[i];
        case ZI_DT_F16: return zi_f16_to_f32 (((const uint16_t *) d)[i]);
        case ZI_DT_BF16: return zi_bf16_to_f32 (((const uint16_t *) d)[i]);
        case ZI_DT_U8: case ZI_DT_BOOL: return ((const uint8_t *) d)[i];
        case ZI_DT_I8: return ((const int8_t *) d)[i];
        case ZI_DT_U16: return ((const uint16_t *) d)[i];
        case ZI_DT_I16: return ((const int16_t *) d)[i];
        case ZI_DT_I32: return ((const int32_t *) d)[i];
        case ZI_DT_U32: return ((const uint32_t *) d)[i];
        case ZI_DT_I64: return (double) ((const int64_t *) d)[i];
        case ZI_DT_U64: return (double) ((const uint64_t *) d)[i];
        default: return 0;
    }
}

static void
s_set (zi_tensor_t *t, int64_t i, double v)
{
    void *d = t->data;
    switch (t->dtype) {
        case ZI_DT_F32: ((float *) d)[i] = (float) v; break;
        case ZI_DT_F64: ((double *) d)[i] = v; break;
        case ZI_DT_F16: ((uint16_t *) d)[i] = zi_f32_to_f16 ((float) v); break;
        case ZI_DT_BF16: {
            float f = (float) v;
            uint32_t bits;
            memcpy (&bits, &f, 4);
            ((uint16_t *) d)[i] = (uint16_t) (bits >> 16);
            break;
        }
        //  Integer casts saturate: a pixel value of 300 becomes 255, not 44.
        case ZI_DT_U8: ((uint8_t *) d)[i] = (uint8_t) (v < 0 ? 0 : v > 255 ? 255 : v); break;
        case ZI_DT_BOOL: ((uint8_t *) d)[i] = v != 0; break;
        case ZI_DT_I8: ((int8_t *) d)[i] = (int8_t) (v < -128 ? -128 : v > 127 ? 127 : v); break;
        case ZI_DT_U16: ((uint16_t *) d)[i] = (uint16_t) (v < 0 ? 0 : v > 65535 ? 65535 : v); break;
        case ZI_DT_I16:
            ((int16_t *) d)[i] = (int16_t) (v < -32768 ? -32768 : v > 32767 ? 32767 : v);
            break;
        case ZI_DT_I32:
            ((int32_t *) d)[i] = (int32_t) (v < -2147483648.0 ? -2147483648.0
                                            : v > 2147483647.0 ? 2147483647.0 : v);
            break;
        case ZI_DT_U32: ((uint32_t *) d)[i] = (uint32_t) (v < 0 ? 0 : v > 4294967295.0 ? 4294967295.0 : v); break;
        case ZI_DT_I64:
            ((int64_t *) d)[i] = (int64_t) (v < -9.2e18 ? -9.2e18 : v > 9.2e18 ? 9.2e18 : v);
            break;
        case ZI_DT_U64: ((uint64_t *) d)[i] = (uint64_t) (v < 0 ? 0 : v > 1.8e19 ? 1.8e19 : v); break;
        default: break;
    }
}

static int
s_cast (const zi_tensor_t *t, zi_dtype_t to, zi_tensor_t **out, char *err, size_t errlen)
{
    zi_tensor_t *y = zi_tensor_new (to, t->rank, t->ne);
    if (!y) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "cast: out of memory");
    }
    int64_t n = zi_tensor_count (t);
    if (t->dtype == ZI_DT_U8 && to == ZI_DT_F32) {
        //  the common image path, kept tight
        const uint8_t *x = (const uint8_t *) t->data;
        float *f = (float *) y->data;
        for (int64_t i = 0; i < n; i++) {
            f[i] = (float) x[i];
        }
    }
    else {
        for (int64_t i = 0; i < n; i++) {
            s_set (y, i, s_get (t, i));
        }
    }
    *out = y;
    return ZI_OK;
}

//  The dims of a layout-aware image tensor: batch n, channels c, height h,
//  width w, and whether channels are last.
typedef struct {
    int64_t n, c, h, w;
    bool channels_last;
} s_image_t;

static int
s_image (const zi_tensor_t *t, bool hwc, const char *op, s_image_t *im, char *err,
         size_t errlen)
{
    if (t->rank == 3) {
        *im = (s_image_t){t->ne[0], 1, t->ne[1], t->ne[2], false};
        return ZI_OK;
    }
    if (t->rank == 4) {
        *im = hwc ? (s_image_t){t->ne[0], t->ne[3], t->ne[1], t->ne[2], true}
                  : (s_image_t){t->ne[0], t->ne[1], t->ne[2], t->ne[3], false};
        return ZI_OK;
    }
    char s[96];
    return zi_fail (err, errlen, ZI_ERR_SHAPE, "%s: needs an image tensor [N,H,W], [N,H,W,C] "
                    "or [N,C,H,W], got %s", op, zi_tensor_shape_str (t, s, sizeof s));
}

static size_t
s_index (const s_image_t *im, int64_t n, int64_t c, int64_t y, int64_t x)
{
    return im->channels_last
               ? (size_t) (((n * im->h + y) * im->w + x) * im->c + c)
               : (size_t) (((n * im->c + c) * im->h + y) * im->w + x);
}

static int
s_resize (const zi_tensor_t *t, const zi_plan_op_t *op, bool hwc, zi_tensor_t **out,
          char *err, size_t errlen)
{
    s_image_t im;
    int rc = s_image (t, hwc, "resize", &im, err, errlen);
    if (rc) {
        return rc;
    }
    int64_t shape[4];
    int rank = t->rank;
    memcpy (shape, t->ne, sizeof (int64_t) * (size_t) rank);
    if (rank == 3) {
        shape[1] = op->height, shape[2] = op->width;
    }
    else if (im.channels_last) {
        shape[1] = op->height, shape[2] = op->width;
    }
    else {
        shape[2] = op->height, shape[3] = op->width;
    }
    zi_tensor_t *y = zi_tensor_new (ZI_DT_F32, rank, shape);
    if (!y) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "resize: out of memory");
    }
    s_image_t om = im;
    om.h = op->height;
    om.w = op->width;
    const float *x = (const float *) t->data;
    float *o = (float *) y->data;
    double sy = (double) im.h / (double) om.h, sx = (double) im.w / (double) om.w;
    for (int64_t n = 0; n < im.n; n++) {
        for (int64_t c = 0; c < im.c; c++) {
            for (int64_t oy = 0; oy < om.h; oy++) {
                for (int64_t ox = 0; ox < om.w; ox++) {
                    float v;
                    if (op->mode == ZI_PLAN_RESIZE_NEAREST) {
                        int64_t iy = (int64_t) floor ((oy + 0.5) * sy);
                        int64_t ix = (int64_t) floor ((ox + 0.5) * sx);
                        iy = iy < im.h ? iy : im.h - 1;
                        ix = ix < im.w ? ix : im.w - 1;
                        v = x[s_index (&im, n, c, iy, ix)];
                    }
                    else {
                        //  half-pixel centres, clamped at the borders
                        double fy = (oy + 0.5) * sy - 0.5, fx = (ox + 0.5) * sx - 0.5;
                        fy = fy < 0 ? 0 : fy;
                        fx = fx < 0 ? 0 : fx;
                        int64_t y0 = (int64_t) fy, x0 = (int64_t) fx;
                        y0 = y0 < im.h - 1 ? y0 : im.h - 1;
                        x0 = x0 < im.w - 1 ? x0 : im.w - 1;
                        int64_t y1 = y0 + 1 < im.h ? y0 + 1 : y0;
                        int64_t x1 = x0 + 1 < im.w ? x0 + 1 : x0;
                        double wy = fy - (double) y0, wx = fx - (double) x0;
                        wy = wy > 1 ? 1 : wy;
                        wx = wx > 1 ? 1 : wx;
                        double a = x[s_index (&im, n, c, y0, x0)];
                        double b = x[s_index (&im, n, c, y0, x1)];
                        double cc = x[s_index (&im, n, c, y1, x0)];
                        double d = x[s_index (&im, n, c, y1, x1)];
                        v = (float) ((a * (1 - wx) + b * wx) * (1 - wy)
                                     + (cc * (1 - wx) + d * wx) * wy);
                    }
                    o[s_index (&om, n, c, oy, ox)] = v;
                }
            }
        }
    }
    *out = y;
    return ZI_OK;
}

static int
s_pad (const zi_tensor_t *t, const zi_plan_op_t *op, zi_tensor_t **out, char *err,
       size_t errlen)
{
    int inner = t->rank - 1;
    if ((int64_t) op->n_pads != 2 * (int64_t) inner) {
        return zi_fail (err, errlen, ZI_ERR_SHAPE, "pad: %zu pads for a rank-%d tensor (needs "
                        "%d: begins then ends for the dims after the batch)", op->n_pads,
                        t->rank, 2 * inner);
    }
    int64_t shape[ZI_MAX_RANK];
    shape[0] = t->ne[0];
    for (int d = 0; d < inner; d++) {
        int64_t b = op->pads[d], e = op->pads[d + inner];
        if (b < 0 || e < 0 || b > (1 << 20) || e > (1 << 20)) {
            return zi_fail (err, errlen, ZI_ERR_INVALID, "pad: pads must be in 0..%d", 1 << 20);
        }
        shape[d + 1] = t->ne[d + 1] + b + e;
    }
    zi_tensor_t *y = zi_tensor_new (t->dtype, t->rank, shape);
    if (!y) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "pad: output too large or out of memory");
    }
    int64_t total = zi_tensor_count (y);
    for (int64_t i = 0; i < total; i++) {
        s_set (y, i, op->value);
    }
    //  copy each input element to its shifted position
    int64_t n = zi_tensor_count (t);
    size_t es = zi_dtype_size (t->dtype);
    int64_t idx[ZI_MAX_RANK] = {0};
    for (int64_t i = 0; i < n; i++) {
        int64_t off = 0;
        for (int d = 0; d < t->rank; d++) {
            int64_t pos = idx[d] + (d == 0 ? 0 : op->pads[d - 1]);
            off = off * shape[d] + pos;
        }
        memcpy ((uint8_t *) y->data + (size_t) off * es, (const uint8_t *) t->data + (size_t) i * es,
                es);
        for (int d = t->rank - 1; d >= 0; d--) {
            if (++idx[d] < t->ne[d]) {
                break;
            }
            idx[d] = 0;
        }
    }
    *out = y;
    return ZI_OK;
}

static bool
s_has_hwc_op (const zi_plan_io_t *io)
{
    for (size_t i = 0; i < io->n_ops; i++) {
        if (io->ops[i].kind == ZI_PLAN_OP_HWC_TO_CHW) {
            return true;
        }
    }
    return false;
}

int
zi_transform_pre (const zi_plan_io_t *io, const zi_tensor_t *t, zi_tensor_t **out, char *err,
                  size_t errlen)
{
    zi_tensor_t *cur = zi_tensor_dup (t);
    if (!cur) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    bool hwc = s_has_hwc_op (io);
    for (size_t k = 0; k < io->n_ops; k++) {
        const zi_plan_op_t *op = &io->ops[k];
        zi_tensor_t *next = NULL;
        int rc = ZI_OK;
        int64_t n = zi_tensor_count (cur);
        bool needs_f32 = op->kind == ZI_PLAN_OP_SCALE || op->kind == ZI_PLAN_OP_NORMALIZE
                         || op->kind == ZI_PLAN_OP_RESIZE;
        if (needs_f32 && cur->dtype != ZI_DT_F32) {
            rc = zi_fail (err, errlen, ZI_ERR_SHAPE, "input '%s': op %zu (%s) needs float32, "
                          "the tensor is %s here (add cast=float32 before it)",
                          io->tensor.name, k, zi_plan_op_name (op->kind),
                          zi_dtype_name (cur->dtype));
        }
        else if (op->kind == ZI_PLAN_OP_CAST) {
            rc = s_cast (cur, op->to, &next, err, errlen);
        }
        else if (op->kind == ZI_PLAN_OP_SCALE) {
            float *x = (float *) cur->data;
            float f = (float) op->factor;
            for (int64_t i = 0; i < n; i++) {
                x[i] *= f;
            }
        }
        else if (op->kind == ZI_PLAN_OP_NORMALIZE) {
            s_image_t im = {0, 0, 0, 0, false};
            rc = s_image (cur, hwc, "normalize", &im, err, errlen);
            if (rc == 0 && (int64_t) op->n_mean != im.c) {
                rc = zi_fail (err, errlen, ZI_ERR_SHAPE, "input '%s': normalize has %zu means, "
                              "the tensor has %lld channels", io->tensor.name, op->n_mean,
                              (long long) im.c);
            }
            float *x = (float *) cur->data;
            for (int64_t b = 0; rc == 0 && b < im.n; b++) {
                for (int64_t c = 0; c < im.c; c++) {
                    float m = (float) op->mean[c], inv = (float) (1.0 / op->std[c]);
                    for (int64_t y = 0; y < im.h; y++) {
                        for (int64_t xx = 0; xx < im.w; xx++) {
                            size_t i = s_index (&im, b, c, y, xx);
                            x[i] = (x[i] - m) * inv;
                        }
                    }
                }
            }
        }
        else if (op->kind == ZI_PLAN_OP_HWC_TO_CHW) {
            if (cur->rank != 4) {
                char s[96];
                rc = zi_fail (err, errlen, ZI_ERR_SHAPE, "input '%s': hwc_to_chw needs "
                              "[N,H,W,C], got %s", io->tensor.name,
                              zi_tensor_shape_str (cur, s, sizeof s));
            }
            else {
                int64_t N = cur->ne[0], H = cur->ne[1], W = cur->ne[2], C = cur->ne[3];
                next = zi_tensor_new (cur->dtype, 4, (int64_t[]){N, C, H, W});
                if (!next) {
                    rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
                }
                size_t es = zi_dtype_size (cur->dtype);
                for (int64_t b = 0; next && b < N; b++) {
                    for (int64_t y = 0; y < H; y++) {
                        for (int64_t x = 0; x < W; x++) {
                            for (int64_t c = 0; c < C; c++) {
                                memcpy ((uint8_t *) next->data
                                            + (size_t) (((b * C + c) * H + y) * W + x) * es,
                                        (const uint8_t *) cur->data
                                            + (size_t) (((b * H + y) * W + x) * C + c) * es,
                                        es);
                            }
                        }
                    }
                }
                hwc = false;
            }
        }
        else if (op->kind == ZI_PLAN_OP_RESIZE) {
            rc = s_resize (cur, op, hwc, &next, err, errlen);
        }
        else if (op->kind == ZI_PLAN_OP_PAD) {
            rc = s_pad (cur, op, &next, err, errlen);
        }
        else {
            rc = zi_fail (err, errlen, ZI_ERR_INVALID, "op %zu (%s) is not a preprocess op", k,
                          zi_plan_op_name (op->kind));
        }
        if (rc) {
            zi_tensor_destroy (&cur);
            zi_tensor_destroy (&next);
            return rc;
        }
        if (next) {
            zi_tensor_destroy (&cur);
            cur = next;
        }
    }
    *out = cur;
    return ZI_OK;
}

int
zi_transform_post (const zi_plan_io_t *io, const zi_tensor_t *t, zi_tensor_t **out,
                   zi_tensor_t **extra, char *err, size_t errlen)
{
    *extra = NULL;
    zi_tensor_t *cur = zi_tensor_dup (t);
    if (!cur) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    for (size_t k = 0; k < io->n_ops; k++) {
        const zi_plan_op_t *op = &io->ops[k];
        if (cur->rank < 1 || cur->dtype != ZI_DT_F32) {
            char s[96];
            zi_tensor_destroy (&cur);
            return zi_fail (err, errlen, ZI_ERR_SHAPE, "output '%s': %s needs float32 with at "
                            "least one dim, got %s%s", io->tensor.name,
                            zi_plan_op_name (op->kind), zi_dtype_name (t->dtype),
                            zi_tensor_shape_str (t, s, sizeof s));
        }
        int64_t c = cur->ne[cur->rank - 1];
        int64_t rows = c ? zi_tensor_count (cur) / c : 0;
        const float *x = (const float *) cur->data;
        zi_tensor_t *next = NULL, *vals = NULL;
        if (op->kind == ZI_PLAN_OP_SOFTMAX) {
            float *y = (float *) cur->data;
            for (int64_t r = 0; r < rows; r++) {
                float *row = y + r * c;
                float m = row[0];
                for (int64_t j = 1; j < c; j++) {
                    m = row[j] > m ? row[j] : m;
                }
                double sum = 0;
                for (int64_t j = 0; j < c; j++) {
                    row[j] = expf (row[j] - m);
                    sum += row[j];
                }
                for (int64_t j = 0; j < c; j++) {
                    row[j] = (float) (row[j] / sum);
                }
            }
            continue;
        }
        if (op->kind == ZI_PLAN_OP_ARGMAX) {
            next = zi_tensor_new (ZI_DT_I64, cur->rank - 1, cur->ne);
            if (next) {
                int64_t *y = (int64_t *) next->data;
                for (int64_t r = 0; r < rows; r++) {
                    int64_t arg = 0;
                    for (int64_t j = 1; j < c; j++) {
                        arg = x[r * c + j] > x[r * c + arg] ? j : arg;
                    }
                    y[r] = arg;
                }
            }
        }
        else if (op->kind == ZI_PLAN_OP_TOPK) {
            int64_t kk = op->k < c ? op->k : c;
            int64_t shape[ZI_MAX_RANK];
            memcpy (shape, cur->ne, sizeof shape);
            shape[cur->rank - 1] = kk;
            next = zi_tensor_new (ZI_DT_I64, cur->rank, shape);
            vals = zi_tensor_new (ZI_DT_F32, cur->rank, shape);
            if (next && vals) {
                int64_t *yi = (int64_t *) next->data;
                float *yv = (float *) vals->data;
                //  selection by repeated max: K is small (top-5 of classes)
                for (int64_t r = 0; r < rows; r++) {
                    for (int64_t j = 0; j < kk; j++) {
                        int64_t best = -1;
                        for (int64_t q = 0; q < c; q++) {
                            bool taken = false;
                            for (int64_t p = 0; p < j && !taken; p++) {
                                taken = yi[r * kk + p] == q;
                            }
                            if (!taken && (best < 0 || x[r * c + q] > x[r * c + best])) {
                                best = q;
                            }
                        }
                        yi[r * kk + j] = best;
                        yv[r * kk + j] = x[r * c + best];
                    }
                }
            }
        }
        else {
            zi_tensor_destroy (&cur);
            return zi_fail (err, errlen, ZI_ERR_INVALID, "op %zu (%s) is not a post-process op",
                            k, zi_plan_op_name (op->kind));
        }
        if (!next || (op->kind == ZI_PLAN_OP_TOPK && !vals)) {
            zi_tensor_destroy (&next);
            zi_tensor_destroy (&vals);
            zi_tensor_destroy (&cur);
            return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        }
        zi_tensor_destroy (&cur);
        cur = next;
        if (vals) {
            zi_tensor_destroy (extra);
            *extra = vals;
        }
        if (k + 1 < io->n_ops) {
            //  argmax / topk produce indices: nothing float follows them
            zi_tensor_destroy (&cur);
            zi_tensor_destroy (extra);
            return zi_fail (err, errlen, ZI_ERR_INVALID, "output '%s': %s must be the last "
                            "post-process op", io->tensor.name, zi_plan_op_name (op->kind));
        }
    }
    *out = cur;
    return ZI_OK;
}
