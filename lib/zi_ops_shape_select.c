/*  zi_ops_shape_select.c - NonZero, Compress, OneHot, EyeLike; their table
    entries are in zi_ops_shape.c.

    NonZero and Compress have output shapes that depend on the input VALUES
    (how many elements are non-zero / selected), OneHot on its depth value:
    their infer answers ZI_OP_NEEDS_VALUE while that value is unknown. Like
    the other shape ops they copy elements by size, whatever the dtype.
*/
#include "zi_ops.h"

#include <math.h>
#include <string.h>

int zi_ops_shape_nonzero_infer (zi_kctx_t *ctx);
int zi_ops_shape_nonzero_run (zi_kctx_t *ctx);
int zi_ops_shape_compress_check (const zi_node_t *node, char *err,
                                 size_t errlen);
int zi_ops_shape_compress_infer (zi_kctx_t *ctx);
int zi_ops_shape_compress_run (zi_kctx_t *ctx);
int zi_ops_shape_onehot_check (const zi_node_t *node, char *err, size_t errlen);
int zi_ops_shape_onehot_infer (zi_kctx_t *ctx);
int zi_ops_shape_onehot_run (zi_kctx_t *ctx);
int zi_ops_shape_eyelike_check (const zi_node_t *node, char *err, size_t errlen);
int zi_ops_shape_eyelike_infer (zi_kctx_t *ctx);
int zi_ops_shape_eyelike_run (zi_kctx_t *ctx);

//  Bound on the elements OneHot may create from its depth VALUE.
#define S_MAX_MADE ((int64_t) 1 << 32)

static int
s_set_out (zi_kctx_t *ctx, zi_dtype_t dtype, int rank, const int64_t *shape)
{
    int rc = zi_tensor_set_shape (ctx->out[0], dtype, rank, shape);
    if (rc) {
        char buf[128];
        return zi_op_fail (ctx, rc, "bad output shape %s",
                           zi_shape_str (rank, shape, buf, sizeof buf));
    }
    return ZI_OK;
}

//  Element i as an integer (floats truncate); false for dtypes without a
//  numeric reading.
static bool
s_load_int (const zi_tensor_t *t, int64_t i, int64_t *v)
{
    const void *p = t->data;
    switch (t->dtype) {
        case ZI_DT_F32: {
            float f = ((const float *) p)[i];
            *v = isfinite (f) && fabsf (f) < 9e18f ? (int64_t) f : INT64_MIN;
            return true;
        }
        case ZI_DT_F64: {
            double f = ((const double *) p)[i];
            *v = isfinite (f) && fabs (f) < 9e18 ? (int64_t) f : INT64_MIN;
            return true;
        }
        case ZI_DT_I8: *v = ((const int8_t *) p)[i]; return true;
        case ZI_DT_U8: *v = ((const uint8_t *) p)[i]; return true;
        case ZI_DT_I16: *v = ((const int16_t *) p)[i]; return true;
        case ZI_DT_U16: *v = ((const uint16_t *) p)[i]; return true;
        case ZI_DT_I32: *v = ((const int32_t *) p)[i]; return true;
        case ZI_DT_U32: *v = ((const uint32_t *) p)[i]; return true;
        case ZI_DT_I64: *v = ((const int64_t *) p)[i]; return true;
        case ZI_DT_U64: {
            uint64_t u = ((const uint64_t *) p)[i];
            *v = u > INT64_MAX ? INT64_MAX : (int64_t) u;
            return true;
        }
        default: return false;
    }
}

//  Is element i non-zero? Floats by value (-0.0 is zero), the rest by bytes.
static bool
s_nonzero_at (const zi_tensor_t *t, int64_t i, size_t esz)
{
    const uint8_t *p = (const uint8_t *) t->data + (size_t) i * esz;
    switch (t->dtype) {
        case ZI_DT_F32: { float f; memcpy (&f, p, 4); return f != 0; }
        case ZI_DT_F64: { double f; memcpy (&f, p, 8); return f != 0; }
        case ZI_DT_F16: case ZI_DT_BF16: {
            uint16_t h;
            memcpy (&h, p, 2);
            return (h & 0x7fff) != 0;
        }
        default:
            for (size_t b = 0; b < esz; b++) {
                if (p[b]) {
                    return true;
                }
            }
            return false;
    }
}

//  NonZero -------------------------------------------------------------------------

static int
s_nonzero_count (zi_kctx_t *ctx, int64_t *nnz)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t count = zi_tensor_count (x);
    *nnz = 0;
    if (count == 0) {
        return ZI_OK;
    }
    if (!x->data) {
        return ZI_OP_NEEDS_VALUE;
    }
    size_t esz = zi_dtype_size (x->dtype);
    for (int64_t i = 0; i < count; i++) {
        *nnz += s_nonzero_at (x, i, esz);
    }
    return ZI_OK;
}

int
zi_ops_shape_nonzero_infer (zi_kctx_t *ctx)
{
    int64_t nnz;
    int rc = s_nonzero_count (ctx, &nnz);
    if (rc) {
        return rc;
    }
    //  A scalar reports one coordinate (0), as ONNX Runtime does.
    int r = ctx->in[0]->rank;
    int64_t shape[2] = {r ? r : 1, nnz};
    return s_set_out (ctx, ZI_DT_I64, 2, shape);
}

//  x (d..) -> y (rank, nnz) int64: the coordinates of each non-zero, in
//  row-major order
int
zi_ops_shape_nonzero_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t nnz;
    int rc = s_nonzero_count (ctx, &nnz);
    if (rc) {
        return rc < 0 ? rc : zi_op_fail (ctx, ZI_ERR_INVALID, "input unknown");
    }
    if (nnz == 0) {
        return ZI_OK;
    }
    int64_t *y = (int64_t *) ctx->out[0]->data;
    size_t esz = zi_dtype_size (x->dtype);
    int64_t pos[ZI_MAX_RANK] = {0}, j = 0, count = zi_tensor_count (x);
    for (int64_t i = 0; i < count; i++) {
        if (s_nonzero_at (x, i, esz)) {
            for (int d = 0; d < x->rank; d++) {
                y[d * nnz + j] = pos[d];
            }
            if (x->rank == 0) {
                y[j] = 0;
            }
            j++;
        }
        for (int d = x->rank - 1; d >= 0; d--) {
            if (++pos[d] < x->ne[d]) {
                break;
            }
            pos[d] = 0;
        }
    }
    return ZI_OK;
}

//  Compress ------------------------------------------------------------------------

int
zi_ops_shape_compress_check (const zi_node_t *node, char *err, size_t errlen)
{
    const zi_attr_t *a = zi_node_attr (node, "axis");
    if (a && a->type != ZI_ATTR_INT) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "node '%s' (Compress): "
                        "axis must be an int", node->name);
    }
    return ZI_OK;
}

//  Resolve the axis (-1 = the flattened input), the selected count, and the
//  (outer, n, inner) view of the input.
static int
s_compress_plan (zi_kctx_t *ctx, int64_t *sel, int64_t *outer, int64_t *n,
                 int64_t *inner, int *axis)
{
    const zi_tensor_t *x = ctx->in[0], *c = ctx->in[1];
    if (c->dtype != ZI_DT_BOOL || c->rank != 1) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "condition must be a 1-D bool "
                           "tensor");
    }
    *outer = 1;
    *inner = 1;
    *axis = -1;
    *n = zi_tensor_count (x);
    const zi_attr_t *a = zi_node_attr (ctx->node, "axis");
    if (a) {
        if (x->rank == 0 || zi_axis_normalize (a->i, x->rank, axis)) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis %lld out of range for "
                               "rank %d", (long long) a->i, x->rank);
        }
        *n = x->ne[*axis];
        for (int d = 0; d < *axis; d++) {
            *outer *= x->ne[d];
        }
        for (int d = *axis + 1; d < x->rank; d++) {
            *inner *= x->ne[d];
        }
    }
    int64_t len = c->ne[0];
    if (len > *n) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "condition has %lld entries for "
                           "%lld elements", (long long) len, (long long) *n);
    }
    *sel = 0;
    if (len == 0) {
        return ZI_OK;
    }
    if (!c->data) {
        return ZI_OP_NEEDS_VALUE;
    }
    //  Entries past the end of a short condition count as false.
    for (int64_t i = 0; i < len; i++) {
        *sel += ((const uint8_t *) c->data)[i] != 0;
    }
    return ZI_OK;
}

int
zi_ops_shape_compress_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t sel = 0, outer = 1, n = 0, inner = 1;
    int axis = -1;
    int rc = s_compress_plan (ctx, &sel, &outer, &n, &inner, &axis);
    if (rc) {
        return rc;
    }
    if (axis < 0) {
        return s_set_out (ctx, x->dtype, 1, &sel);
    }
    int64_t shape[ZI_MAX_RANK];
    memcpy (shape, x->ne, sizeof shape);
    shape[axis] = sel;
    return s_set_out (ctx, x->dtype, x->rank, shape);
}

//  x (outer, n, inner), cond (<= n,) -> y (outer, selected, inner)
int
zi_ops_shape_compress_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0], *c = ctx->in[1];
    int64_t sel = 0, outer = 1, n = 0, inner = 1;
    int axis = -1;
    int rc = s_compress_plan (ctx, &sel, &outer, &n, &inner, &axis);
    if (rc) {
        return rc < 0 ? rc : zi_op_fail (ctx, ZI_ERR_INVALID, "condition "
                                         "unknown");
    }
    if (zi_tensor_count (ctx->out[0]) == 0) {
        return ZI_OK;
    }
    size_t block = (size_t) inner * zi_dtype_size (x->dtype);
    const uint8_t *cond = (const uint8_t *) c->data;
    uint8_t *dst = (uint8_t *) ctx->out[0]->data;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t j = 0; j < c->ne[0]; j++) {
            if (cond[j]) {
                memcpy (dst, (const uint8_t *) x->data + (size_t) (o * n + j) * block,
                        block);
                dst += block;
            }
        }
    }
    return ZI_OK;
}

//  OneHot ------------------------------------------------------------------------------

int
zi_ops_shape_onehot_check (const zi_node_t *node, char *err, size_t errlen)
{
    const zi_attr_t *a = zi_node_attr (node, "axis");
    if (a && a->type != ZI_ATTR_INT) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "node '%s' (OneHot): "
                        "axis must be an int", node->name);
    }
    return ZI_OK;
}

static int
s_onehot_plan (zi_kctx_t *ctx, int64_t *depth, int *axis)
{
    const zi_tensor_t *idx = ctx->in[0], *d = ctx->in[1], *v = ctx->in[2];
    if (zi_tensor_count (v) != 2) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "values must hold [off, on]");
    }
    if (zi_tensor_count (d) != 1) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "depth must be one value");
    }
    int r = idx->rank + 1;
    if (r > ZI_MAX_RANK) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "output rank %d exceeds %d", r,
                           ZI_MAX_RANK);
    }
    int64_t a = zi_node_attr_int (ctx->node, "axis", -1);
    if (zi_axis_normalize (a, r, axis)) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis %lld out of range for "
                           "rank %d", (long long) a, r);
    }
    if (!d->data) {
        return ZI_OP_NEEDS_VALUE;
    }
    if (!s_load_int (d, 0, depth) || *depth < 1) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "depth must be a positive "
                           "number");
    }
    int64_t count = zi_tensor_count (idx);
    if (*depth > S_MAX_MADE || (count > 0 && *depth > S_MAX_MADE / count)) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "one-hot output too large");
    }
    return ZI_OK;
}

int
zi_ops_shape_onehot_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *idx = ctx->in[0];
    int64_t depth;
    int axis = -1;
    int rc = s_onehot_plan (ctx, &depth, &axis);
    if (rc) {
        return rc;
    }
    int64_t shape[ZI_MAX_RANK];
    for (int d = 0, k = 0; d <= idx->rank; d++) {
        shape[d] = d == axis ? depth : idx->ne[k++];
    }
    return s_set_out (ctx, ctx->in[2]->dtype, idx->rank + 1, shape);
}

//  idx (A.., B..) -> y (A.., depth, B..): on where the index (plus depth
//  when negative) equals the position along depth, off elsewhere
int
zi_ops_shape_onehot_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *idx = ctx->in[0], *v = ctx->in[2];
    zi_tensor_t *y = ctx->out[0];
    int64_t depth;
    int axis = -1;
    int rc = s_onehot_plan (ctx, &depth, &axis);
    if (rc) {
        return rc < 0 ? rc : zi_op_fail (ctx, ZI_ERR_INVALID, "depth unknown");
    }
    int64_t count = zi_tensor_count (idx);
    if (count == 0) {
        return ZI_OK;
    }
    size_t esz = zi_dtype_size (v->dtype);
    const uint8_t *off = (const uint8_t *) v->data, *on = off + esz;
    uint8_t *dst = (uint8_t *) y->data;
    int64_t total = zi_tensor_count (y);
    for (int64_t i = 0; i < total; i++) {
        memcpy (dst + (size_t) i * esz, off, esz);
    }
    int64_t inner = 1;
    for (int d = axis; d < idx->rank; d++) {
        inner *= idx->ne[d];
    }
    for (int64_t i = 0; i < count; i++) {
        int64_t k;
        if (!s_load_int (idx, i, &k)) {
            return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "indices of dtype %s",
                               zi_dtype_name (idx->dtype));
        }
        if (k < 0 && k >= -depth) {
            k += depth;
        }
        if (k < 0 || k >= depth) {
            continue;       //  out of range: the whole line stays off
        }
        int64_t a = i / inner, b = i % inner;
        memcpy (dst + (size_t) ((a * depth + k) * inner + b) * esz, on, esz);
    }
    return ZI_OK;
}

//  EyeLike ------------------------------------------------------------------------------

int
zi_ops_shape_eyelike_check (const zi_node_t *node, char *err, size_t errlen)
{
    const zi_attr_t *dt = zi_node_attr (node, "dtype");
    const zi_attr_t *k = zi_node_attr (node, "k");
    if ((dt && (dt->type != ZI_ATTR_INT || !zi_dtype_valid ((int) dt->i)))
        || (k && k->type != ZI_ATTR_INT)) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node '%s' (EyeLike): "
                        "bad dtype or k attribute", node->name);
    }
    return ZI_OK;
}

int
zi_ops_shape_eyelike_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    if (x->rank != 2) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "input must be 2-D");
    }
    zi_dtype_t dt = (zi_dtype_t) zi_node_attr_int (ctx->node, "dtype", x->dtype);
    if (!zi_dtype_valid (dt)) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "dtype %d", (int) dt);
    }
    return s_set_out (ctx, dt, 2, x->ne);
}

//  y (n, m): 1 where j - i == k, else 0
int
zi_ops_shape_eyelike_run (zi_kctx_t *ctx)
{
    zi_tensor_t *y = ctx->out[0];
    int64_t n = y->ne[0], m = y->ne[1];
    int64_t k = zi_node_attr_int (ctx->node, "k", 0);
    if (n * m == 0) {
        return ZI_OK;
    }
    size_t esz = zi_dtype_size (y->dtype);
    memset (y->data, 0, y->nbytes);
    uint8_t one[8] = {0};
    switch (y->dtype) {
        case ZI_DT_F32: { float f = 1; memcpy (one, &f, 4); break; }
        case ZI_DT_F64: { double f = 1; memcpy (one, &f, 8); break; }
        case ZI_DT_F16: { uint16_t h = 0x3c00; memcpy (one, &h, 2); break; }
        case ZI_DT_BF16: { uint16_t h = 0x3f80; memcpy (one, &h, 2); break; }
        default: one[0] = 1; break;      //  little-endian integers and bool
    }
    for (int64_t i = 0; i < n; i++) {
        //  |k| beyond the matrix leaves it all zero; no overflow in i + k
        if (k >= m || k <= -n) {
            break;
        }
        int64_t j = i + k;
        if (j >= 0 && j < m) {
            memcpy ((uint8_t *) y->data + (size_t) (i * m + j) * esz, one, esz);
        }
    }
    return ZI_OK;
}
