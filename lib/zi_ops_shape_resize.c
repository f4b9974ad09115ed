/*  zi_ops_shape_resize.c - Resize (opsets 10, 11, 13, 18) and the deprecated
    Upsample (opsets 7 and 9); their table entries are in zi_ops_shape.c.

    Each output coordinate x along an axis maps back to an input coordinate
    by the coordinate_transformation_mode:

        half_pixel            (x + 0.5) / scale - 0.5
        pytorch_half_pixel    the same, or 0 when the output length is 1
        align_corners         x * (in - 1) / (out - 1), or 0 when out == 1
        asymmetric            x / scale      (the only mode before opset 11)
        tf_half_pixel_for_nn  (x + 0.5) / scale

    "nearest" then rounds that coordinate (nearest_mode), "linear" blends the
    two neighbours on every axis whose weights are not all zero (so NCHW
    bilinear touches 4 inputs per output, a 1-D resize 2). Nearest works on
    any dtype by element size; linear on float32. Cubic, tf_crop_and_resize
    and antialias are rejected when the model is loaded.

    Before opset 11 (Resize-10, Upsample) nearest uses ONNX Runtime's rule:
    truncate when upsampling, ceil when downsampling.
*/
#include "zi_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int zi_ops_shape_resize_check (const zi_node_t *node, char *err, size_t errlen);
int zi_ops_shape_resize_infer (zi_kctx_t *ctx);
int zi_ops_shape_resize_run (zi_kctx_t *ctx);
int zi_ops_shape_upsample_check (const zi_node_t *node, char *err,
                                 size_t errlen);

//  Bound on the output elements: scales come from the model file.
#define S_MAX_MADE ((int64_t) 1 << 32)

typedef enum { S_NEAREST, S_LINEAR } s_mode_t;

typedef enum {
    S_HALF_PIXEL, S_PYTORCH_HALF_PIXEL, S_ALIGN_CORNERS, S_ASYMMETRIC,
    S_TF_HALF_PIXEL_FOR_NN,
} s_ctm_t;

typedef enum {
    S_ROUND_SIMPLE, S_ROUND_PREFER_FLOOR, S_ROUND_PREFER_CEIL, S_FLOOR, S_CEIL,
} s_round_t;

typedef struct {
    s_mode_t mode;
    s_ctm_t ctm;
    s_round_t round;
    int rank;
    int64_t in[ZI_MAX_RANK];
    int64_t out[ZI_MAX_RANK];
    double scale[ZI_MAX_RANK];
    //  The resized length the transforms divide by: the output dim for
    //  sizes, but scale * in (not floored) for scales, as the ONNX reference
    //  computes it (align_corners differs when scale * in is fractional).
    double len[ZI_MAX_RANK];
} s_plan_t;

static const char *const s_ctm_names[] = {
    "half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
    "tf_half_pixel_for_nn",
};
static const char *const s_round_names[] = {
    "", "round_prefer_floor", "round_prefer_ceil", "floor", "ceil",
};

static bool
s_is_upsample (const zi_node_t *node)
{
    return strcmp (node->op_type, "Upsample") == 0;
}

static int64_t
s_opset (const zi_node_t *node)
{
    if (s_is_upsample (node)) {
        return 9;
    }
    return zi_node_attr_int (node, "__opset", 13);
}

//  Parse the attributes into plan (mode, transform, rounding). Returns 0 or
//  ZI_ERR_UNSUPPORTED / ZI_ERR_MALFORMED with a message in err.
static int
s_parse_attrs (const zi_node_t *node, s_plan_t *p, char *err, size_t errlen)
{
    const char *mode = zi_node_attr_string (node, "mode", "nearest");
    if (strcmp (mode, "nearest") == 0) {
        p->mode = S_NEAREST;
    }
    else if (strcmp (mode, "linear") == 0 || strcmp (mode, "bilinear") == 0) {
        p->mode = S_LINEAR;
    }
    else {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node '%s' (%s): mode "
                        "'%s' is not supported (nearest and linear are)",
                        node->name, node->op_type, mode);
    }
    bool old = s_opset (node) < 11;
    p->ctm = S_ASYMMETRIC;
    p->round = S_ROUND_SIMPLE;
    if (old) {
        return ZI_OK;
    }
    const char *ctm = zi_node_attr_string (node, "coordinate_transformation_mode",
                                           "half_pixel");
    int i;
    for (i = 0; i < 5 && strcmp (ctm, s_ctm_names[i]) != 0; i++) {
    }
    if (i == 5) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node '%s' (%s): "
                        "coordinate_transformation_mode '%s' is not supported",
                        node->name, node->op_type, ctm);
    }
    p->ctm = (s_ctm_t) i;
    const char *rn = zi_node_attr_string (node, "nearest_mode",
                                          "round_prefer_floor");
    for (i = 1; i < 5 && strcmp (rn, s_round_names[i]) != 0; i++) {
    }
    if (i == 5) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node '%s' (%s): "
                        "nearest_mode '%s' is not supported", node->name,
                        node->op_type, rn);
    }
    p->round = (s_round_t) i;
    if (zi_node_attr_int (node, "antialias", 0) != 0) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node '%s' (%s): "
                        "antialias is not supported", node->name,
                        node->op_type);
    }
    const char *kp = zi_node_attr_string (node, "keep_aspect_ratio_policy",
                                          "stretch");
    if (strcmp (kp, "stretch") != 0 && strcmp (kp, "not_larger") != 0
        && strcmp (kp, "not_smaller") != 0) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node '%s' (%s): "
                        "keep_aspect_ratio_policy '%s' is not supported",
                        node->name, node->op_type, kp);
    }
    return ZI_OK;
}

int
zi_ops_shape_resize_check (const zi_node_t *node, char *err, size_t errlen)
{
    const char *mode = zi_node_attr_string (node, "mode", "nearest");
    if (strcmp (mode, "cubic") == 0) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node '%s' (%s): "
                        "mode 'cubic' is not supported (nearest and linear "
                        "are)", node->name, node->op_type);
    }
    const char *ctm = zi_node_attr_string (node, "coordinate_transformation_mode",
                                           "half_pixel");
    if (strcmp (ctm, "tf_crop_and_resize") == 0) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node '%s' (%s): "
                        "coordinate_transformation_mode 'tf_crop_and_resize' "
                        "is not supported", node->name, node->op_type);
    }
    static const char *const strs[] = {
        "mode", "coordinate_transformation_mode", "nearest_mode",
        "keep_aspect_ratio_policy",
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        const zi_attr_t *a = zi_node_attr (node, strs[i]);
        if (a && a->type != ZI_ATTR_STRING) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED, "node '%s' (%s): "
                            "attribute '%s' must be a string", node->name,
                            node->op_type, strs[i]);
        }
    }
    s_plan_t p;
    return s_parse_attrs (node, &p, err, errlen);
}

int
zi_ops_shape_upsample_check (const zi_node_t *node, char *err, size_t errlen)
{
    const zi_attr_t *a = zi_node_attr (node, "scales");
    if (node->n_in < 2 && (!a || a->type != ZI_ATTR_FLOATS)) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "node '%s' (Upsample): "
                        "needs scales (attribute or input)", node->name);
    }
    s_plan_t p;
    return s_parse_attrs (node, &p, err, errlen);
}

static const zi_tensor_t *
s_in (const zi_kctx_t *ctx, int i)
{
    const zi_tensor_t *t = i < ctx->n_in ? ctx->in[i] : NULL;
    //  An empty tensor stands for "not given" (scales with sizes, roi).
    return t && zi_tensor_count (t) > 0 ? t : NULL;
}

static double
s_round_half_up (double v)
{
    return floor (v + 0.5);
}

//  Work out the output shape and per-axis scales.
static int
s_plan (zi_kctx_t *ctx, s_plan_t *p)
{
    const zi_node_t *node = ctx->node;
    const zi_tensor_t *x = ctx->in[0];
    char msg[200];
    int rc = s_parse_attrs (node, p, msg, sizeof msg);
    if (rc) {
        return zi_op_fail (ctx, rc, "%s", msg);
    }
    int r = x->rank;
    p->rank = r;
    //  Which axes the scales / sizes talk about (opset 18 "axes").
    int naxes = r, axes[ZI_MAX_RANK];
    int na;
    const int64_t *aa = zi_node_attr_ints (node, "axes", &na);
    bool seen[ZI_MAX_RANK] = {false};
    if (aa) {
        if (na > r) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "too many axes");
        }
        naxes = na;
        for (int i = 0; i < na; i++) {
            if (zi_axis_normalize (aa[i], r, &axes[i]) || axes[i] >= r
                || seen[axes[i]]) {
                return zi_op_fail (ctx, ZI_ERR_SHAPE, "bad axis %lld",
                                   (long long) aa[i]);
            }
            seen[axes[i]] = true;
        }
    }
    else {
        for (int i = 0; i < r; i++) {
            axes[i] = i;
        }
    }
    for (int d = 0; d < r; d++) {
        p->in[d] = p->out[d] = x->ne[d];
        p->scale[d] = 1.0;
        p->len[d] = (double) x->ne[d];
    }
    const zi_tensor_t *scales = NULL, *sizes = NULL;
    const float *attr_scales = NULL;
    int n_attr = 0;
    if (s_is_upsample (node) && ctx->n_in < 2) {
        attr_scales = zi_node_attr_floats (node, "scales", &n_attr);
    }
    else if (s_opset (node) < 11 || ctx->n_in == 2) {
        scales = s_in (ctx, 1);
    }
    else {
        scales = s_in (ctx, 2);
        sizes = s_in (ctx, 3);
    }
    if (scales && sizes) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "give scales or sizes, not both");
    }
    if (sizes) {
        if (sizes->dtype != ZI_DT_I64 || zi_tensor_count (sizes) != naxes) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "sizes must be int64 with %d "
                               "values", naxes);
        }
        if (!sizes->data) {
            return ZI_OP_NEEDS_VALUE;
        }
        const int64_t *sz = (const int64_t *) sizes->data;
        const char *kp = zi_node_attr_string (node, "keep_aspect_ratio_policy",
                                              "stretch");
        double ks = 0;
        bool keep = strcmp (kp, "stretch") != 0;
        bool larger = strcmp (kp, "not_smaller") == 0;
        for (int i = 0; i < naxes; i++) {
            int d = axes[i];
            if (sz[i] < 0 || sz[i] > S_MAX_MADE) {
                return zi_op_fail (ctx, ZI_ERR_SHAPE, "sizes[%d] = %lld is "
                                   "invalid", i, (long long) sz[i]);
            }
            if (x->ne[d] == 0 && sz[i] != 0) {
                return zi_op_fail (ctx, ZI_ERR_SHAPE, "cannot resize an empty "
                                   "axis %d to %lld", d, (long long) sz[i]);
            }
            p->out[d] = sz[i];
            p->len[d] = (double) sz[i];
            p->scale[d] = x->ne[d] ? (double) sz[i] / (double) x->ne[d] : 1.0;
            if (keep && x->ne[d]) {
                if (ks == 0 || (larger ? p->scale[d] > ks : p->scale[d] < ks)) {
                    ks = p->scale[d];
                }
            }
        }
        if (keep && ks > 0) {
            for (int i = 0; i < naxes; i++) {
                int d = axes[i];
                p->scale[d] = ks;
                p->out[d] = (int64_t) s_round_half_up (ks * (double) x->ne[d]);
                p->len[d] = (double) p->out[d];
            }
        }
    }
    else if (scales || attr_scales) {
        int n = attr_scales ? n_attr : (int) zi_tensor_count (scales);
        if (scales && scales->dtype != ZI_DT_F32) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "scales must be float32, "
                               "not %s", zi_dtype_name (scales->dtype));
        }
        if (n != naxes) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "scales has %d values for "
                               "%d axes", n, naxes);
        }
        if (scales && !scales->data) {
            return ZI_OP_NEEDS_VALUE;
        }
        const float *sc = attr_scales ? attr_scales
                                      : (const float *) scales->data;
        for (int i = 0; i < naxes; i++) {
            int d = axes[i];
            double s = sc[i];
            double o = floor (s * (double) x->ne[d]);
            if (!(s > 0) || !(o <= (double) S_MAX_MADE)) {
                return zi_op_fail (ctx, ZI_ERR_SHAPE, "scale %g on axis %d is "
                                   "invalid", s, d);
            }
            p->scale[d] = s;
            p->out[d] = (int64_t) o;
            p->len[d] = s * (double) x->ne[d];
        }
    }
    else {
        return zi_op_fail (ctx, ZI_ERR_MALFORMED, "needs scales or sizes");
    }
    int64_t count;
    if (zi_shape_count (r, p->out, &count) || count > S_MAX_MADE) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "resized tensor too large");
    }
    return ZI_OK;
}

int
zi_ops_shape_resize_infer (zi_kctx_t *ctx)
{
    s_plan_t p;
    int rc = s_plan (ctx, &p);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0];
    if (p.mode == S_LINEAR && x->dtype != ZI_DT_F32) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "linear mode supports "
                           "float32 only, not %s", zi_dtype_name (x->dtype));
    }
    rc = zi_tensor_set_shape (ctx->out[0], x->dtype, p.rank, p.out);
    if (rc) {
        return zi_op_fail (ctx, rc, "bad output shape");
    }
    return ZI_OK;
}

//  Input coordinate of output coordinate o on one axis.
static double
s_orig (const s_plan_t *p, int d, int64_t o)
{
    double x = (double) o, s = p->scale[d];
    double lin = (double) p->in[d], lout = p->len[d];
    switch (p->ctm) {
        case S_PYTORCH_HALF_PIXEL: return lout > 1 ? (x + 0.5) / s - 0.5 : 0.0;
        case S_ALIGN_CORNERS:
            return lout == 1 ? 0.0 : x * (lin - 1) / (lout - 1);
        case S_ASYMMETRIC: return x / s;
        case S_TF_HALF_PIXEL_FOR_NN: return (x + 0.5) / s;
        default: return (x + 0.5) / s - 0.5;
    }
}

static int64_t
s_nearest (const s_plan_t *p, int d, double x)
{
    double v;
    switch (p->round) {
        case S_ROUND_SIMPLE: v = p->scale[d] < 1 ? ceil (x) : trunc (x); break;
        case S_ROUND_PREFER_CEIL: v = round (x); break;
        case S_FLOOR: v = floor (x); break;
        case S_CEIL: v = ceil (x); break;
        default:
            v = x == floor (x) + 0.5 ? floor (x) : round (x);
    }
    int64_t n = p->in[d];
    if (!(v > 0)) {         //  also NaN
        return 0;
    }
    return v >= (double) (n - 1) ? n - 1 : (int64_t) v;
}

//  x (in..) -> y (out..), y[o] = x[near(o_0), near(o_1), ...]
static int
s_run_nearest (const s_plan_t *p, const zi_tensor_t *x, zi_tensor_t *y,
               int64_t *map, const int64_t *at)
{
    int r = p->rank;
    size_t esz = zi_dtype_size (x->dtype);
    int64_t xs[ZI_MAX_RANK], s = 1;
    for (int d = r - 1; d >= 0; d--) {
        xs[d] = s;
        s *= x->ne[d];
    }
    //  Premultiply the maps by the strides.
    for (int d = 0; d < r; d++) {
        for (int64_t o = 0; o < p->out[d]; o++) {
            map[at[d] + o] = s_nearest (p, d, s_orig (p, d, o)) * xs[d];
        }
    }
    int64_t count = zi_tensor_count (y);
    if (r == 0) {
        memcpy (y->data, x->data, esz);
        return ZI_OK;
    }
    int64_t w = p->out[r - 1], pos[ZI_MAX_RANK] = {0};
    const int64_t *lmap = map + at[r - 1];
    uint8_t *dst = (uint8_t *) y->data;
    const uint8_t *src = (const uint8_t *) x->data;
    for (int64_t row = 0; row < count / w; row++) {
        int64_t off = 0;
        for (int d = 0; d < r - 1; d++) {
            off += map[at[d] + pos[d]];
        }
        if (esz == 4) {
            for (int64_t o = 0; o < w; o++) {
                memcpy (dst + 4 * o, src + 4 * (off + lmap[o]), 4);
            }
        }
        else {
            for (int64_t o = 0; o < w; o++) {
                memcpy (dst + (int64_t) esz * o,
                        src + (int64_t) esz * (off + lmap[o]), esz);
            }
        }
        dst += w * (int64_t) esz;
        for (int d = r - 2; d >= 0; d--) {
            if (++pos[d] < p->out[d]) {
                break;
            }
            pos[d] = 0;
        }
    }
    return ZI_OK;
}

//  x (in..) -> y (out..): n-linear over the axes whose weights are not all 0
static int
s_run_linear (const s_plan_t *p, const zi_tensor_t *x, zi_tensor_t *y,
              int64_t *i0, int64_t *i1, float *w, const int64_t *at)
{
    int r = p->rank;
    int64_t xs[ZI_MAX_RANK], s = 1;
    for (int d = r - 1; d >= 0; d--) {
        xs[d] = s;
        s *= x->ne[d];
    }
    int active[ZI_MAX_RANK], k = 0;
    for (int d = 0; d < r; d++) {
        bool any = false;
        for (int64_t o = 0; o < p->out[d]; o++) {
            double c = s_orig (p, d, o);
            double hi = (double) (p->in[d] - 1);
            c = c < 0 ? 0 : (c > hi ? hi : c);
            int64_t f = (int64_t) floor (c);
            i0[at[d] + o] = f * xs[d];
            i1[at[d] + o] = (f + 1 < p->in[d] ? f + 1 : f) * xs[d];
            w[at[d] + o] = (float) (c - (double) f);
            any |= w[at[d] + o] != 0;
        }
        if (any) {
            active[k++] = d;
        }
    }
    int64_t count = zi_tensor_count (y);
    const float *src = (const float *) x->data;
    float *dst = (float *) y->data;
    int64_t pos[ZI_MAX_RANK] = {0};
    for (int64_t e = 0; e < count; e++) {
        int64_t base = 0;
        for (int d = 0; d < r; d++) {
            base += i0[at[d] + pos[d]];
        }
        float acc = 0;
        for (int c = 0; c < (1 << k); c++) {
            int64_t off = base;
            float wt = 1;
            for (int j = 0; j < k; j++) {
                int d = active[j];
                int64_t q = at[d] + pos[d];
                if (c & (1 << j)) {
                    off += i1[q] - i0[q];
                    wt *= w[q];
                }
                else {
                    wt *= 1 - w[q];
                }
            }
            acc += wt * src[off];
        }
        dst[e] = acc;
        for (int d = r - 1; d >= 0; d--) {
            if (++pos[d] < p->out[d]) {
                break;
            }
            pos[d] = 0;
        }
    }
    return ZI_OK;
}

int
zi_ops_shape_resize_run (zi_kctx_t *ctx)
{
    s_plan_t p;
    int rc = s_plan (ctx, &p);
    if (rc) {
        return rc < 0 ? rc : zi_op_fail (ctx, ZI_ERR_INVALID, "scales or "
                                         "sizes unknown at run time");
    }
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *y = ctx->out[0];
    if (zi_tensor_count (y) == 0) {
        return ZI_OK;
    }
    //  Per-axis tables laid end to end: axis d's start at at[d].
    int64_t at[ZI_MAX_RANK], total = 0;
    for (int d = 0; d < p.rank; d++) {
        at[d] = total;
        total += p.out[d];
    }
    size_t n = (size_t) (total ? total : 1);
    if (p.mode == S_NEAREST) {
        int64_t *map = (int64_t *) malloc (n * sizeof *map);
        if (!map) {
            return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
        }
        rc = s_run_nearest (&p, x, y, map, at);
        free (map);
        return rc;
    }
    if (x->dtype != ZI_DT_F32) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "linear mode supports "
                           "float32 only");
    }
    int64_t *i0 = (int64_t *) malloc (n * sizeof *i0);
    int64_t *i1 = (int64_t *) malloc (n * sizeof *i1);
    float *w = (float *) malloc (n * sizeof *w);
    if (i0 && i1 && w) {
        rc = s_run_linear (&p, x, y, i0, i1, w, at);
    }
    else {
        rc = zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
    }
    free (i0);
    free (i1);
    free (w);
    return rc;
}
