/*  zi_ops_shape.c - data-movement operators.

    These kernels move bytes and never compute with them, so each one is
    generic over dtypes by element size (float32, int64, bool, float16, ...):

        Reshape Flatten Squeeze Unsqueeze Identity Dropout   one memcpy
        Transpose Slice Expand Tile                          s_copy_strided
        Concat Split Gather GatherElements GatherND Pad      row copies
        ScatterElements ScatterND Trilu
        DepthToSpace SpaceToDepth                            s_copy_strided
        Shape Size ConstantOfShape Range Constant            make values

    Resize and Upsample (which do compute) live in zi_ops_shape_resize.c;
    NonZero, Compress, OneHot and EyeLike in zi_ops_shape_select.c.

    Several infer functions need the VALUE of an input (Reshape's shape,
    Slice's starts, ...). While the model is planned statically that value
    may be unknown (data NULL): infer then answers ZI_OP_NEEDS_VALUE. An
    empty tensor is always "known", even with data == NULL.

    Where ONNX moved an attribute to an input (Squeeze's axes at opset 13,
    Pad's pads at 11, ...), the kernels take the input when the node has it
    and the attribute otherwise, so they serve every opset without asking
    which one the model declares.
*/
#include "zi_ops.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

//  Resize / Upsample, in zi_ops_shape_resize.c.
int zi_ops_shape_resize_check (const zi_node_t *node, char *err, size_t errlen);
int zi_ops_shape_resize_infer (zi_kctx_t *ctx);
int zi_ops_shape_resize_run (zi_kctx_t *ctx);
int zi_ops_shape_upsample_check (const zi_node_t *node, char *err,
                                 size_t errlen);

//  Value-selecting ops, in zi_ops_shape_select.c.
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

//  Tile doubles the rank inside the strided copy.
#define S_RANK2 (2 * ZI_MAX_RANK)

//  Upper bound on the elements an op may create from input VALUES (Range,
//  ConstantOfShape, Expand, Tile): a model file must not make us allocate
//  whatever it claims. 2^32 elements is far above any real use.
#define S_MAX_MADE ((int64_t) 1 << 32)

//  Helpers ---------------------------------------------------------------------

static const zi_tensor_t *
s_in (const zi_kctx_t *ctx, int i)
{
    return i < ctx->n_in ? ctx->in[i] : NULL;
}

static zi_tensor_t *
s_out (const zi_kctx_t *ctx, int i)
{
    return i < ctx->n_out ? ctx->out[i] : NULL;
}

static int64_t
s_opset (const zi_node_t *node)
{
    return zi_node_attr_int (node, "__opset", 13);
}

//  Read an int32/int64 input of at most `cap` values (a scalar counts as
//  one). Answers ZI_OP_NEEDS_VALUE when the value is unknown.
static int
s_input_ints (zi_kctx_t *ctx, int idx, const char *what, int64_t *out,
              int cap, int *n)
{
    const zi_tensor_t *t = s_in (ctx, idx);
    *n = 0;
    if (!t) {
        return zi_op_fail (ctx, ZI_ERR_MALFORMED, "input '%s' is missing", what);
    }
    if (t->dtype != ZI_DT_I64 && t->dtype != ZI_DT_I32) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "input '%s' must be int64 or "
                           "int32, not %s", what, zi_dtype_name (t->dtype));
    }
    if (t->rank > 1) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "input '%s' must be 1-D, has "
                           "rank %d", what, t->rank);
    }
    int64_t count = zi_tensor_count (t);
    if (count > cap) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "input '%s' has %lld values, "
                           "at most %d allowed", what, (long long) count, cap);
    }
    if (count == 0) {
        return ZI_OK;
    }
    if (!t->data) {
        return ZI_OP_NEEDS_VALUE;
    }
    int rc = zi_op_read_ints (t, out, cap, n);
    if (rc < 0) {
        return zi_op_fail (ctx, rc, "cannot read input '%s'", what);
    }
    return rc;
}

//  Set an output's shape, with a message naming the problem.
static int
s_set_out (zi_kctx_t *ctx, int i, zi_dtype_t dtype, int rank,
           const int64_t *shape)
{
    zi_tensor_t *t = s_out (ctx, i);
    if (!t) {
        return ZI_OK;       //  omitted optional output
    }
    if (rank > ZI_MAX_RANK) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "output rank %d exceeds %d",
                           rank, ZI_MAX_RANK);
    }
    int rc = zi_tensor_set_shape (t, dtype, rank, shape);
    if (rc) {
        char buf[128];
        return zi_op_fail (ctx, rc, "bad output shape %s (%s)",
                           zi_shape_str (rank, shape, buf, sizeof buf),
                           zi_strerror (rc));
    }
    return ZI_OK;
}

//  Reject a present attribute of the wrong type (the getters would silently
//  fall back to the default).
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

//  Product that cannot overflow: the tensor's byte size was checked when it
//  was shaped.
static int64_t
s_span (const zi_tensor_t *t, int from, int to)
{
    int64_t p = 1;
    for (int i = from; i < to; i++) {
        p *= t->ne[i];
    }
    return p;
}

//  memcpy that tolerates NULL pointers for empty copies (UB otherwise).
static void
s_copy (void *dst, const void *src, size_t n)
{
    if (n > 0) {
        memcpy (dst, src, n);
    }
}

//  Fill n elements of esz bytes with the pattern in `val` by doubling.
static void
s_fill (uint8_t *dst, const void *val, size_t esz, int64_t n)
{
    if (n <= 0) {
        return;
    }
    memcpy (dst, val, esz);
    size_t have = esz, total = (size_t) n * esz;
    while (have < total) {
        size_t chunk = have < total - have ? have : total - have;
        memcpy (dst + have, dst, chunk);
        have += chunk;
    }
}

//  Store a double into one element of dtype (ConstantOfShape defaults,
//  Pad's attribute value, Dropout's mask before opset 10).
static int
s_store (zi_dtype_t dtype, void *dst, double v)
{
    switch (dtype) {
        case ZI_DT_F32: { float x = (float) v; memcpy (dst, &x, 4); break; }
        case ZI_DT_F64: memcpy (dst, &v, 8); break;
        case ZI_DT_F16: {
            uint16_t h = zi_f32_to_f16 ((float) v);
            memcpy (dst, &h, 2);
            break;
        }
        case ZI_DT_BF16: {
            float f = (float) v;
            uint32_t u;
            memcpy (&u, &f, 4);
            uint16_t h = (uint16_t) ((u + 0x7fff + ((u >> 16) & 1)) >> 16);
            memcpy (dst, &h, 2);
            break;
        }
        case ZI_DT_I8: { int8_t x = (int8_t) v; memcpy (dst, &x, 1); break; }
        case ZI_DT_U8: { uint8_t x = (uint8_t) v; memcpy (dst, &x, 1); break; }
        case ZI_DT_BOOL: { uint8_t x = v != 0; memcpy (dst, &x, 1); break; }
        case ZI_DT_I16: { int16_t x = (int16_t) v; memcpy (dst, &x, 2); break; }
        case ZI_DT_U16: { uint16_t x = (uint16_t) v; memcpy (dst, &x, 2); break; }
        case ZI_DT_I32: { int32_t x = (int32_t) v; memcpy (dst, &x, 4); break; }
        case ZI_DT_U32: { uint32_t x = (uint32_t) v; memcpy (dst, &x, 4); break; }
        case ZI_DT_I64: { int64_t x = (int64_t) v; memcpy (dst, &x, 8); break; }
        case ZI_DT_U64: { uint64_t x = (uint64_t) v; memcpy (dst, &x, 8); break; }
        default: return ZI_ERR_UNSUPPORTED;
    }
    return ZI_OK;
}

//  Read element i of an int32/int64 tensor.
static int64_t
s_index_at (const zi_tensor_t *t, int64_t i)
{
    return t->dtype == ZI_DT_I64 ? ((const int64_t *) t->data)[i]
                                 : ((const int32_t *) t->data)[i];
}

static int
s_check_index_dtype (zi_kctx_t *ctx, const zi_tensor_t *t, const char *what)
{
    if (t->dtype != ZI_DT_I64 && t->dtype != ZI_DT_I32) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "%s must be int64 or int32, "
                           "not %s", what, zi_dtype_name (t->dtype));
    }
    return ZI_OK;
}

//  Row-major element strides of a tensor (in elements, not bytes).
static void
s_elem_strides (const zi_tensor_t *t, int64_t *st)
{
    int64_t s = 1;
    for (int d = t->rank - 1; d >= 0; d--) {
        st[d] = s;
        s *= t->ne[d] ? t->ne[d] : 1;
    }
}

//  The strided copy -------------------------------------------------------------

//  Copy one element of esz bytes; constant sizes become plain loads.
#define S_COPY_ELEMS(T, dst, src, n, step)                                     \
    do {                                                                       \
        for (int64_t k_ = 0; k_ < (n); k_++) {                                 \
            memcpy ((dst) + k_ * (int64_t) sizeof (T),                         \
                    (src) + k_ * (step) * (int64_t) sizeof (T), sizeof (T));   \
        }                                                                      \
    } while (0)

//  dst (n,) <- src[k * step] for k < n, step in elements (may be 0 or < 0)
static void
s_copy_row (uint8_t *dst, const uint8_t *src, size_t esz, int64_t n,
            int64_t step)
{
    if (step == 1) {
        memcpy (dst, src, (size_t) n * esz);
        return;
    }
    if (step == 0) {
        s_fill (dst, src, esz, n);
        return;
    }
    switch (esz) {
        case 1: S_COPY_ELEMS (uint8_t, dst, src, n, step); break;
        case 2: S_COPY_ELEMS (uint16_t, dst, src, n, step); break;
        case 4: S_COPY_ELEMS (uint32_t, dst, src, n, step); break;
        case 8: S_COPY_ELEMS (uint64_t, dst, src, n, step); break;
        default:
            for (int64_t k = 0; k < n; k++) {
                memcpy (dst + k * (int64_t) esz, src + k * step * (int64_t) esz,
                        esz);
            }
    }
}

//  dst (a,b) <- src[i + j * sb]: a transposed block, done in small tiles so
//  that both the reads and the writes stay in cache. Tiles are 8 rows: with
//  power-of-two strides every row of a tile maps to the same cache set, and
//  L1 is typically 8-way.
#define S_TILE 8
#define S_TILE_LOOP(T)                                                         \
    do {                                                                       \
        for (int64_t i0 = 0; i0 < a; i0 += S_TILE) {                           \
            int64_t i1 = i0 + S_TILE < a ? i0 + S_TILE : a;                    \
            for (int64_t j0 = 0; j0 < b; j0 += S_TILE) {                       \
                int64_t j1 = j0 + S_TILE < b ? j0 + S_TILE : b;                \
                for (int64_t i = i0; i < i1; i++) {                            \
                    for (int64_t j = j0; j < j1; j++) {                        \
                        memcpy (dst + (i * b + j) * (int64_t) sizeof (T),      \
                                src + (i + j * sb) * (int64_t) sizeof (T),     \
                                sizeof (T));                                   \
                    }                                                          \
                }                                                              \
            }                                                                  \
        }                                                                      \
    } while (0)

static void
s_copy_tile (uint8_t *dst, const uint8_t *src, size_t esz, int64_t a,
             int64_t b, int64_t sb)
{
    //  Fixed-size memcpys compile to plain moves and stay correct on
    //  misaligned views (weights mapped from a file).
    switch (esz) {
        case 1: S_TILE_LOOP (uint8_t); return;
        case 2: S_TILE_LOOP (uint16_t); return;
        case 4: S_TILE_LOOP (uint32_t); return;
        case 8: S_TILE_LOOP (uint64_t); return;
        default: break;
    }
    int64_t e = (int64_t) esz;
    for (int64_t i0 = 0; i0 < a; i0 += S_TILE) {
        int64_t i1 = i0 + S_TILE < a ? i0 + S_TILE : a;
        for (int64_t j0 = 0; j0 < b; j0 += S_TILE) {
            int64_t j1 = j0 + S_TILE < b ? j0 + S_TILE : b;
            for (int64_t i = i0; i < i1; i++) {
                s_copy_row (dst + (i * b + j0) * e, src + (i + j0 * sb) * e,
                            esz, j1 - j0, sb);
            }
        }
    }
}

//  dst (shape) <- src[off + sum_d i_d * st[d]]: the one loop behind
//  Transpose, Slice, Expand and Tile. Strides are in elements and may be 0
//  (broadcast) or negative (reversed slice). Dims that are contiguous with
//  their neighbour are merged first, so e.g. a Transpose that keeps the
//  innermost dims becomes a few large memcpys.
static void
s_copy_strided (uint8_t *dst, const uint8_t *src, size_t esz, int rank,
                const int64_t *shape, const int64_t *st, int64_t off)
{
    int64_t ne[S_RANK2], sd[S_RANK2];
    int r = 0;
    for (int d = 0; d < rank; d++) {
        if (shape[d] == 0) {
            return;
        }
        if (shape[d] == 1) {
            continue;
        }
        if (r > 0 && sd[r - 1] == st[d] * shape[d]) {
            ne[r - 1] *= shape[d];
            sd[r - 1] = st[d];
            continue;
        }
        ne[r] = shape[d];
        sd[r] = st[d];
        r++;
    }
    int64_t e = (int64_t) esz;
    if (r == 0) {
        memcpy (dst, src + off * e, esz);
        return;
    }
    //  A transposed pair of innermost dims: copy in tiles.
    bool tile = r >= 2 && sd[r - 2] == 1 && sd[r - 1] != 1 && sd[r - 1] != 0
                && ne[r - 2] >= 8 && ne[r - 1] >= 8;
    int outer = tile ? r - 2 : r - 1;
    int64_t inner = tile ? ne[r - 2] * ne[r - 1] : ne[r - 1];
    int64_t idx[S_RANK2] = {0};
    int64_t o = off;
    for (;;) {
        if (tile) {
            s_copy_tile (dst, src + o * e, esz, ne[r - 2], ne[r - 1], sd[r - 1]);
        }
        else {
            s_copy_row (dst, src + o * e, esz, ne[r - 1], sd[r - 1]);
        }
        dst += inner * e;
        int d = outer - 1;
        for (; d >= 0; d--) {
            idx[d]++;
            o += sd[d];
            if (idx[d] < ne[d]) {
                break;
            }
            o -= sd[d] * ne[d];
            idx[d] = 0;
        }
        if (d < 0) {
            break;
        }
    }
}

//  Copy-only ops: Identity, Reshape, Flatten, Squeeze, Unsqueeze ---------------

static int
s_copy_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *y = ctx->out[0];
    s_copy (y->data, x->data, x->nbytes);
    return ZI_OK;
}

static int
s_identity_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    return s_set_out (ctx, 0, x->dtype, x->rank, x->ne);
}

//  Dropout at inference copies its input; the optional mask is all true.
//  Training mode (opset 12 input 2) is only accepted with ratio 0, where it
//  is the same thing.
static int
s_dropout_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int rc = s_set_out (ctx, 0, x->dtype, x->rank, x->ne);
    if (rc) {
        return rc;
    }
    zi_dtype_t mdt = s_opset (ctx->node) < 10 ? x->dtype : ZI_DT_BOOL;
    return s_set_out (ctx, 1, mdt, x->rank, x->ne);
}

static int
s_dropout_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *training = s_in (ctx, 2);
    if (training && zi_tensor_count (training) > 0) {
        if (training->dtype != ZI_DT_BOOL || !training->data) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "training_mode must be a "
                               "bool scalar");
        }
        bool train = *(const uint8_t *) training->data != 0;
        const zi_tensor_t *ratio = s_in (ctx, 1);
        double r = 0.5;
        if (ratio && zi_tensor_count (ratio) > 0 && ratio->data) {
            if (ratio->dtype == ZI_DT_F32) {
                r = *(const float *) ratio->data;
            }
            else if (ratio->dtype == ZI_DT_F64) {
                r = *(const double *) ratio->data;
            }
            else if (ratio->dtype == ZI_DT_F16) {
                r = zi_f16_to_f32 (*(const uint16_t *) ratio->data);
            }
        }
        if (train && r != 0) {
            return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "training mode "
                               "(random dropout) is not supported");
        }
    }
    s_copy_run (ctx);
    zi_tensor_t *mask = s_out (ctx, 1);
    if (mask && mask->nbytes > 0) {
        uint8_t one[8];
        s_store (mask->dtype, one, 1.0);
        s_fill ((uint8_t *) mask->data, one, zi_dtype_size (mask->dtype),
                zi_tensor_count (mask));
    }
    return ZI_OK;
}

static int
s_reshape_check (const zi_node_t *node, char *err, size_t errlen)
{
    int rc = s_check_attr (node, "allowzero", ZI_ATTR_INT, err, errlen);
    if (!rc) {
        rc = s_check_attr (node, "shape", ZI_ATTR_INTS, err, errlen);
    }
    if (!rc && node->n_in < 2 && !zi_node_attr (node, "shape")) {
        rc = zi_fail (err, errlen, ZI_ERR_MALFORMED, "node '%s' (Reshape): "
                      "no shape input or attribute", node->name);
    }
    return rc;
}

static int
s_reshape_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t req[ZI_MAX_RANK];
    int n = 0, rc;
    if (s_in (ctx, 1)) {
        rc = s_input_ints (ctx, 1, "shape", req, ZI_MAX_RANK, &n);
        if (rc) {
            return rc;
        }
    }
    else {
        //  Reshape-1 (opset < 5) had the shape as an attribute.
        const int64_t *a = zi_node_attr_ints (ctx->node, "shape", &n);
        if (n > ZI_MAX_RANK) {
            return zi_op_fail (ctx, ZI_ERR_LIMIT, "shape has %d dims, at "
                               "most %d allowed", n, ZI_MAX_RANK);
        }
        s_copy (req, a, (size_t) n * sizeof *req);
    }
    bool allowzero = zi_node_attr_int (ctx->node, "allowzero", 0) != 0;
    int64_t shape[ZI_MAX_RANK];
    int infer_at = -1;
    int64_t known = 1;
    for (int i = 0; i < n; i++) {
        int64_t d = req[i];
        if (d == 0 && !allowzero) {
            if (i >= x->rank) {
                return zi_op_fail (ctx, ZI_ERR_SHAPE, "shape[%d] is 0 (copy) "
                                   "but the input has rank %d", i, x->rank);
            }
            d = x->ne[i];
        }
        if (d == -1) {
            if (infer_at >= 0) {
                return zi_op_fail (ctx, ZI_ERR_SHAPE, "shape has more than "
                                   "one -1");
            }
            infer_at = i;
            shape[i] = 1;
            continue;
        }
        if (d < 0) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "shape[%d] is %lld", i,
                               (long long) d);
        }
        shape[i] = d;
        if (__builtin_mul_overflow (known, d, &known)) {
            return zi_op_fail (ctx, ZI_ERR_OVERFLOW, "shape overflows");
        }
    }
    int64_t count = zi_tensor_count (x);
    if (infer_at >= 0) {
        if (known == 0) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "cannot infer the -1 dim "
                               "next to a 0 dim");
        }
        if (count % known != 0) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "cannot reshape %lld "
                               "elements with %lld per -1 step",
                               (long long) count, (long long) known);
        }
        shape[infer_at] = count / known;
        known = count;
    }
    if (known != count) {
        char a[128], b[128];
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "cannot reshape %s into %s",
                           zi_tensor_shape_str (x, a, sizeof a),
                           zi_shape_str (n, shape, b, sizeof b));
    }
    return s_set_out (ctx, 0, x->dtype, n, shape);
}

static int
s_flatten_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t axis = zi_node_attr_int (ctx->node, "axis", 1);
    if (axis < -x->rank || axis > x->rank) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis %lld out of range for "
                           "rank %d", (long long) axis, x->rank);
    }
    if (axis < 0) {
        axis += x->rank;
    }
    int64_t shape[2] = {s_span (x, 0, (int) axis),
                        s_span (x, (int) axis, x->rank)};
    return s_set_out (ctx, 0, x->dtype, 2, shape);
}

//  Axes from input idx when the node has it, else from attribute "axes".
//  Returns 0 with *present telling whether any were given.
static int
s_axes_arg (zi_kctx_t *ctx, int idx, int64_t *axes, int cap, int *n,
            bool *present)
{
    *n = 0;
    *present = false;
    if (s_in (ctx, idx)) {
        *present = true;
        return s_input_ints (ctx, idx, "axes", axes, cap, n);
    }
    const zi_attr_t *a = zi_node_attr (ctx->node, "axes");
    if (a) {
        if (a->type != ZI_ATTR_INTS || a->n > cap) {
            return zi_op_fail (ctx, ZI_ERR_MALFORMED, "bad axes attribute");
        }
        *present = true;
        *n = a->n;
        s_copy (axes, a->ints, (size_t) a->n * sizeof *axes);
    }
    return ZI_OK;
}

//  Normalise axes against rank into a mask; duplicates are an error.
static int
s_axes_mask (zi_kctx_t *ctx, const int64_t *axes, int n, int rank,
             bool *mask)
{
    for (int i = 0; i < rank; i++) {
        mask[i] = false;
    }
    for (int i = 0; i < n; i++) {
        int a;
        if (zi_axis_normalize (axes[i], rank, &a) || a >= rank) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis %lld out of range "
                               "for rank %d", (long long) axes[i], rank);
        }
        if (mask[a]) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis %lld repeated",
                               (long long) axes[i]);
        }
        mask[a] = true;
    }
    return ZI_OK;
}

static int
s_squeeze_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t axes[ZI_MAX_RANK];
    int n;
    bool present, mask[ZI_MAX_RANK];
    int rc = s_axes_arg (ctx, 1, axes, ZI_MAX_RANK, &n, &present);
    if (rc) {
        return rc;
    }
    if (n > 0) {
        rc = s_axes_mask (ctx, axes, n, x->rank, mask);
        if (rc) {
            return rc;
        }
    }
    int64_t shape[ZI_MAX_RANK];
    int r = 0;
    for (int d = 0; d < x->rank; d++) {
        bool drop = n > 0 ? mask[d] : x->ne[d] == 1;
        if (drop && x->ne[d] != 1) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "cannot squeeze axis %d of "
                               "size %lld", d, (long long) x->ne[d]);
        }
        if (!drop) {
            shape[r++] = x->ne[d];
        }
    }
    return s_set_out (ctx, 0, x->dtype, r, shape);
}

static int
s_unsqueeze_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t axes[ZI_MAX_RANK];
    int n;
    bool present, mask[ZI_MAX_RANK];
    int rc = s_axes_arg (ctx, 1, axes, ZI_MAX_RANK, &n, &present);
    if (rc) {
        return rc;
    }
    if (!present) {
        return zi_op_fail (ctx, ZI_ERR_MALFORMED, "no axes given");
    }
    int r = x->rank + n;
    if (r > ZI_MAX_RANK) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "output rank %d exceeds %d", r,
                           ZI_MAX_RANK);
    }
    rc = s_axes_mask (ctx, axes, n, r, mask);
    if (rc) {
        return rc;
    }
    int64_t shape[ZI_MAX_RANK];
    for (int d = 0, k = 0; d < r; d++) {
        shape[d] = mask[d] ? 1 : x->ne[k++];
    }
    return s_set_out (ctx, 0, x->dtype, r, shape);
}

//  Transpose ------------------------------------------------------------------

static int
s_transpose_perm (zi_kctx_t *ctx, int rank, int *perm)
{
    int n;
    const int64_t *p = zi_node_attr_ints (ctx->node, "perm", &n);
    if (!p) {
        for (int i = 0; i < rank; i++) {
            perm[i] = rank - 1 - i;     //  default: reverse the dims
        }
        return ZI_OK;
    }
    if (n != rank) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "perm has %d entries for rank "
                           "%d", n, rank);
    }
    bool seen[ZI_MAX_RANK] = {false};
    for (int i = 0; i < n; i++) {
        if (p[i] < 0 || p[i] >= rank || seen[p[i]]) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "perm is not a permutation "
                               "of 0..%d", rank - 1);
        }
        seen[p[i]] = true;
        perm[i] = (int) p[i];
    }
    return ZI_OK;
}

static int
s_transpose_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int perm[ZI_MAX_RANK];
    int rc = s_transpose_perm (ctx, x->rank, perm);
    if (rc) {
        return rc;
    }
    int64_t shape[ZI_MAX_RANK];
    for (int i = 0; i < x->rank; i++) {
        shape[i] = x->ne[perm[i]];
    }
    return s_set_out (ctx, 0, x->dtype, x->rank, shape);
}

//  x (d0..dn) -> y (d_perm0 .. d_permn)
static int
s_transpose_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *y = ctx->out[0];
    int perm[ZI_MAX_RANK];
    int rc = s_transpose_perm (ctx, x->rank, perm);
    if (rc) {
        return rc;
    }
    int64_t xs[ZI_MAX_RANK], st[ZI_MAX_RANK];
    s_elem_strides (x, xs);
    for (int i = 0; i < x->rank; i++) {
        st[i] = xs[perm[i]];
    }
    s_copy_strided ((uint8_t *) y->data, (const uint8_t *) x->data,
                    zi_dtype_size (x->dtype), y->rank, y->ne, st, 0);
    return ZI_OK;
}

//  Concat and Split ---------------------------------------------------------------

static int
s_concat_axis (zi_kctx_t *ctx, int *axis)
{
    const zi_tensor_t *x0 = ctx->in[0];
    if (!zi_node_attr (ctx->node, "axis")) {
        return zi_op_fail (ctx, ZI_ERR_MALFORMED, "attribute axis is "
                           "required");
    }
    int64_t a = zi_node_attr_int (ctx->node, "axis", 0);
    if (x0->rank == 0 || zi_axis_normalize (a, x0->rank, axis)) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis %lld out of range for "
                           "rank %d", (long long) a, x0->rank);
    }
    return ZI_OK;
}

static int
s_concat_infer (zi_kctx_t *ctx)
{
    int axis;
    int rc = s_concat_axis (ctx, &axis);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *x0 = ctx->in[0];
    int64_t shape[ZI_MAX_RANK];
    memcpy (shape, x0->ne, sizeof shape);
    shape[axis] = 0;
    for (int i = 0; i < ctx->n_in; i++) {
        const zi_tensor_t *x = ctx->in[i];
        if (!x) {
            return zi_op_fail (ctx, ZI_ERR_MALFORMED, "input %d is empty", i);
        }
        if (x->dtype != x0->dtype || x->rank != x0->rank) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "input %d is %s rank %d, "
                               "input 0 is %s rank %d", i,
                               zi_dtype_name (x->dtype), x->rank,
                               zi_dtype_name (x0->dtype), x0->rank);
        }
        for (int d = 0; d < x->rank; d++) {
            if (d != axis && x->ne[d] != x0->ne[d]) {
                return zi_op_fail (ctx, ZI_ERR_SHAPE, "input %d has dim %d = "
                                   "%lld, input 0 has %lld", i, d,
                                   (long long) x->ne[d],
                                   (long long) x0->ne[d]);
            }
        }
        if (__builtin_add_overflow (shape[axis], x->ne[axis], &shape[axis])) {
            return zi_op_fail (ctx, ZI_ERR_OVERFLOW, "concat size overflows");
        }
    }
    return s_set_out (ctx, 0, x0->dtype, x0->rank, shape);
}

//  x_i (outer, n_i, inner) ... -> y (outer, sum n_i, inner)
static int
s_concat_run (zi_kctx_t *ctx)
{
    int axis;
    int rc = s_concat_axis (ctx, &axis);
    if (rc) {
        return rc;
    }
    zi_tensor_t *y = ctx->out[0];
    size_t esz = zi_dtype_size (y->dtype);
    int64_t outer = s_span (y, 0, axis);
    int64_t inner = s_span (y, axis + 1, y->rank);
    uint8_t *dst = (uint8_t *) y->data;
    for (int64_t o = 0; o < outer; o++) {
        for (int i = 0; i < ctx->n_in; i++) {
            const zi_tensor_t *x = ctx->in[i];
            size_t chunk = (size_t) (x->ne[axis] * inner) * esz;
            s_copy (dst, (const uint8_t *) x->data + (size_t) o * chunk, chunk);
            dst += chunk;
        }
    }
    return ZI_OK;
}

static int
s_split_check (const zi_node_t *node, char *err, size_t errlen)
{
    int rc = s_check_attr (node, "axis", ZI_ATTR_INT, err, errlen);
    if (!rc) {
        rc = s_check_attr (node, "split", ZI_ATTR_INTS, err, errlen);
    }
    if (!rc) {
        rc = s_check_attr (node, "num_outputs", ZI_ATTR_INT, err, errlen);
    }
    return rc;
}

//  Sizes of the Split outputs along axis: from the split input (opset 13),
//  the split attribute (older), num_outputs (opset 18, last part may be
//  smaller), or equal parts.
static int
s_split_sizes (zi_kctx_t *ctx, int *axis_out, int64_t *sizes)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t a = zi_node_attr_int (ctx->node, "axis", 0);
    int axis;
    if (x->rank == 0 || zi_axis_normalize (a, x->rank, &axis)) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis %lld out of range for "
                           "rank %d", (long long) a, x->rank);
    }
    *axis_out = axis;
    int nout = ctx->n_out, n = 0;
    int64_t dim = x->ne[axis];
    const zi_tensor_t *sp = s_in (ctx, 1);
    const zi_attr_t *sa = zi_node_attr (ctx->node, "split");
    if ((sp && zi_tensor_count (sp) > 0) || (!sp && sa && sa->n > 0)) {
        if (sp) {
            int rc = s_input_ints (ctx, 1, "split", sizes, nout, &n);
            if (rc) {
                return rc;
            }
        }
        else {
            n = sa->n;
            if (n > nout) {
                n = -1;
            }
            else {
                memcpy (sizes, sa->ints, (size_t) n * sizeof *sizes);
            }
        }
        if (n != nout) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "split has %d entries for "
                               "%d outputs", n, nout);
        }
        int64_t sum = 0;
        for (int i = 0; i < n; i++) {
            if (sizes[i] < 0 || __builtin_add_overflow (sum, sizes[i], &sum)) {
                return zi_op_fail (ctx, ZI_ERR_SHAPE, "split[%d] = %lld is "
                                   "invalid", i, (long long) sizes[i]);
            }
        }
        if (sum != dim) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "split sums to %lld, axis "
                               "has %lld", (long long) sum, (long long) dim);
        }
        return ZI_OK;
    }
    const zi_attr_t *na = zi_node_attr (ctx->node, "num_outputs");
    if (na) {
        if (na->i != nout) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "num_outputs is %lld but "
                               "the node has %d outputs", (long long) na->i,
                               nout);
        }
        int64_t chunk = (dim + nout - 1) / nout, left = dim;
        for (int i = 0; i < nout; i++) {
            sizes[i] = chunk < left ? chunk : left;
            left -= sizes[i];
        }
        return ZI_OK;
    }
    if (dim % nout != 0) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis of size %lld does not "
                           "split into %d equal parts", (long long) dim, nout);
    }
    for (int i = 0; i < nout; i++) {
        sizes[i] = dim / nout;
    }
    return ZI_OK;
}

static int
s_split_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t *sizes = (int64_t *) malloc ((size_t) ctx->n_out * sizeof *sizes);
    if (!sizes) {
        return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
    }
    int axis;
    int rc = s_split_sizes (ctx, &axis, sizes);
    for (int i = 0; rc == 0 && i < ctx->n_out; i++) {
        int64_t shape[ZI_MAX_RANK];
        memcpy (shape, x->ne, sizeof shape);
        shape[axis] = sizes[i];
        rc = s_set_out (ctx, i, x->dtype, x->rank, shape);
    }
    free (sizes);
    return rc;
}

//  x (outer, sum n_i, inner) -> y_i (outer, n_i, inner)
static int
s_split_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t *sizes = (int64_t *) malloc ((size_t) ctx->n_out * sizeof *sizes);
    if (!sizes) {
        return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
    }
    int axis;
    int rc = s_split_sizes (ctx, &axis, sizes);
    if (rc) {
        free (sizes);
        return rc < 0 ? rc : zi_op_fail (ctx, ZI_ERR_INVALID, "split value "
                                         "unknown at run time");
    }
    size_t esz = zi_dtype_size (x->dtype);
    int64_t outer = s_span (x, 0, axis);
    int64_t inner = s_span (x, axis + 1, x->rank);
    size_t row = (size_t) (x->ne[axis] * inner) * esz;
    size_t at = 0;
    for (int i = 0; i < ctx->n_out; i++) {
        zi_tensor_t *y = ctx->out[i];
        size_t chunk = (size_t) (sizes[i] * inner) * esz;
        if (y) {
            for (int64_t o = 0; o < outer; o++) {
                s_copy ((uint8_t *) y->data + (size_t) o * chunk,
                        (const uint8_t *) x->data + (size_t) o * row + at,
                        chunk);
            }
        }
        at += chunk;
    }
    free (sizes);
    return ZI_OK;
}

//  Slice -------------------------------------------------------------------------

typedef struct {
    int64_t start[ZI_MAX_RANK];
    int64_t step[ZI_MAX_RANK];
    int64_t len[ZI_MAX_RANK];
} s_slice_t;

//  Resolve starts/ends/axes/steps (inputs from opset 10, attributes before)
//  into a start, step and length per dimension, clamped as the spec says.
static int
s_slice_plan (zi_kctx_t *ctx, s_slice_t *sl)
{
    const zi_tensor_t *x = ctx->in[0];
    int r = x->rank;
    int64_t starts[ZI_MAX_RANK], ends[ZI_MAX_RANK], axes[ZI_MAX_RANK],
        steps[ZI_MAX_RANK];
    int ns, ne, na = -1, nst = -1, rc;
    if (ctx->n_in >= 3) {
        rc = s_input_ints (ctx, 1, "starts", starts, ZI_MAX_RANK, &ns);
        if (!rc) {
            rc = s_input_ints (ctx, 2, "ends", ends, ZI_MAX_RANK, &ne);
        }
        if (!rc && s_in (ctx, 3)) {
            rc = s_input_ints (ctx, 3, "axes", axes, ZI_MAX_RANK, &na);
        }
        if (!rc && s_in (ctx, 4)) {
            rc = s_input_ints (ctx, 4, "steps", steps, ZI_MAX_RANK, &nst);
        }
        if (rc) {
            return rc;
        }
    }
    else {
        const int64_t *a = zi_node_attr_ints (ctx->node, "starts", &ns);
        const int64_t *b = zi_node_attr_ints (ctx->node, "ends", &ne);
        if (!a || !b || ns > ZI_MAX_RANK || ne > ZI_MAX_RANK) {
            return zi_op_fail (ctx, ZI_ERR_MALFORMED, "needs starts and ends "
                               "(inputs, or attributes before opset 10)");
        }
        memcpy (starts, a, (size_t) ns * sizeof *a);
        memcpy (ends, b, (size_t) ne * sizeof *b);
        const int64_t *c = zi_node_attr_ints (ctx->node, "axes", &na);
        if (c) {
            if (na > ZI_MAX_RANK) {
                return zi_op_fail (ctx, ZI_ERR_LIMIT, "too many axes");
            }
            memcpy (axes, c, (size_t) na * sizeof *c);
        }
        else {
            na = -1;
        }
    }
    if (ne != ns || (na >= 0 && na != ns) || (nst >= 0 && nst != ns)) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "starts, ends, axes and steps "
                           "differ in length");
    }
    for (int d = 0; d < r; d++) {
        sl->start[d] = 0;
        sl->step[d] = 1;
        sl->len[d] = x->ne[d];
    }
    bool seen[ZI_MAX_RANK] = {false};
    for (int i = 0; i < ns; i++) {
        int a;
        int64_t ax = na >= 0 ? axes[i] : i;
        if (zi_axis_normalize (ax, r, &a) || a >= r) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis %lld out of range for "
                               "rank %d", (long long) ax, r);
        }
        if (seen[a]) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis %lld repeated",
                               (long long) ax);
        }
        seen[a] = true;
        int64_t dim = x->ne[a];
        int64_t step = nst >= 0 ? steps[i] : 1;
        if (step == 0) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "step is 0 on axis %d", a);
        }
        if (step == INT64_MIN) {
            step = -INT64_MAX;      //  same slice after clamping, negatable
        }
        int64_t s = starts[i], e = ends[i];
        //  Adding a dim (>= 0) to a negative value cannot overflow.
        if (s < 0) {
            s += dim;
        }
        if (e < 0) {
            e += dim;
        }
        int64_t len;
        if (step > 0) {
            s = s < 0 ? 0 : (s > dim ? dim : s);
            e = e < 0 ? 0 : (e > dim ? dim : e);
            len = e > s ? (e - s - 1) / step + 1 : 0;
        }
        else {
            s = s < 0 ? 0 : (s > dim - 1 ? dim - 1 : s);
            e = e < -1 ? -1 : (e > dim - 1 ? dim - 1 : e);
            len = s > e ? (s - e - 1) / (-step) + 1 : 0;
        }
        if (dim == 0) {
            s = 0;
            len = 0;
        }
        if (len <= 1) {
            step = 1;       //  unused, and step * stride must not overflow
        }
        sl->start[a] = s;
        sl->step[a] = step;
        sl->len[a] = len;
    }
    return ZI_OK;
}

static int
s_slice_infer (zi_kctx_t *ctx)
{
    s_slice_t sl;
    int rc = s_slice_plan (ctx, &sl);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0];
    return s_set_out (ctx, 0, x->dtype, x->rank, sl.len);
}

//  x (d..) -> y (len..): y[i] = x[start + i * step] per dim
static int
s_slice_run (zi_kctx_t *ctx)
{
    s_slice_t sl;
    int rc = s_slice_plan (ctx, &sl);
    if (rc) {
        return rc < 0 ? rc : zi_op_fail (ctx, ZI_ERR_INVALID, "slice "
                                         "parameters unknown at run time");
    }
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *y = ctx->out[0];
    if (zi_tensor_count (y) == 0) {
        return ZI_OK;
    }
    int64_t xs[ZI_MAX_RANK], st[ZI_MAX_RANK], off = 0;
    s_elem_strides (x, xs);
    for (int d = 0; d < x->rank; d++) {
        st[d] = sl.step[d] * xs[d];
        off += sl.start[d] * xs[d];
    }
    s_copy_strided ((uint8_t *) y->data, (const uint8_t *) x->data,
                    zi_dtype_size (x->dtype), y->rank, y->ne, st, off);
    return ZI_OK;
}

//  Gather family -----------------------------------------------------------------

static int
s_gather_axis (zi_kctx_t *ctx, const zi_tensor_t *x, int *axis)
{
    int64_t a = zi_node_attr_int (ctx->node, "axis", 0);
    if (x->rank == 0 || zi_axis_normalize (a, x->rank, axis)) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "axis %lld out of range for "
                           "rank %d", (long long) a, x->rank);
    }
    return ZI_OK;
}

static int
s_gather_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0], *idx = ctx->in[1];
    int axis;
    int rc = s_gather_axis (ctx, x, &axis);
    if (!rc) {
        rc = s_check_index_dtype (ctx, idx, "indices");
    }
    if (rc) {
        return rc;
    }
    int r = x->rank - 1 + idx->rank;
    if (r > ZI_MAX_RANK) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "output rank %d exceeds %d", r,
                           ZI_MAX_RANK);
    }
    int64_t shape[ZI_MAX_RANK];
    int k = 0;
    for (int d = 0; d < axis; d++) {
        shape[k++] = x->ne[d];
    }
    for (int d = 0; d < idx->rank; d++) {
        shape[k++] = idx->ne[d];
    }
    for (int d = axis + 1; d < x->rank; d++) {
        shape[k++] = x->ne[d];
    }
    return s_set_out (ctx, 0, x->dtype, r, shape);
}

//  x (outer, n, inner), idx (m..) -> y (outer, m.., inner)
static int
s_gather_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0], *idx = ctx->in[1];
    zi_tensor_t *y = ctx->out[0];
    int axis;
    int rc = s_gather_axis (ctx, x, &axis);
    if (rc) {
        return rc;
    }
    size_t esz = zi_dtype_size (x->dtype);
    int64_t n = x->ne[axis];
    int64_t outer = s_span (x, 0, axis);
    size_t block = (size_t) s_span (x, axis + 1, x->rank) * esz;
    int64_t m = zi_tensor_count (idx);
    //  Check every index first: an empty output must still reject a bad one.
    for (int64_t j = 0; j < m; j++) {
        int64_t i = s_index_at (idx, j);
        if (i < -n || i >= n) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "index %lld out of range for "
                               "axis of size %lld", (long long) i, (long long) n);
        }
    }
    if (zi_tensor_count (y) == 0) {
        return ZI_OK;
    }
    uint8_t *dst = (uint8_t *) y->data;
    for (int64_t o = 0; o < outer; o++) {
        const uint8_t *src = (const uint8_t *) x->data + (size_t) (o * n) * block;
        for (int64_t j = 0; j < m; j++) {
            int64_t i = s_index_at (idx, j);
            s_copy (dst, src + (size_t) (i < 0 ? i + n : i) * block, block);
            dst += block;
        }
    }
    return ZI_OK;
}

static int
s_gather_elements_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0], *idx = ctx->in[1];
    int axis;
    int rc = s_gather_axis (ctx, x, &axis);
    if (!rc) {
        rc = s_check_index_dtype (ctx, idx, "indices");
    }
    if (rc) {
        return rc;
    }
    if (idx->rank != x->rank) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "indices have rank %d, data "
                           "rank %d", idx->rank, x->rank);
    }
    for (int d = 0; d < x->rank; d++) {
        //  Other dims of indices may be smaller than the data's, never larger.
        if (d != axis && idx->ne[d] > x->ne[d]) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "indices dim %d (%lld) "
                               "exceeds data dim (%lld)", d,
                               (long long) idx->ne[d], (long long) x->ne[d]);
        }
    }
    return s_set_out (ctx, 0, x->dtype, idx->rank, idx->ne);
}

//  Walk every element of `shape` in row-major order, keeping the flat offset
//  into a tensor with element strides xs (with axis excluded) in *off.
static bool
s_next_index (int rank, const int64_t *shape, int64_t *pos, const int64_t *xs,
              int skip_axis, int64_t *off)
{
    for (int d = rank - 1; d >= 0; d--) {
        pos[d]++;
        if (d != skip_axis) {
            *off += xs[d];
        }
        if (pos[d] < shape[d]) {
            return true;
        }
        if (d != skip_axis) {
            *off -= xs[d] * shape[d];
        }
        pos[d] = 0;
    }
    return false;
}

//  x (d..), idx (e..) -> y (e..): y[p] = x[p with p[axis] = idx[p]]
static int
s_gather_elements_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0], *idx = ctx->in[1];
    zi_tensor_t *y = ctx->out[0];
    int axis;
    int rc = s_gather_axis (ctx, x, &axis);
    if (rc) {
        return rc;
    }
    int64_t count = zi_tensor_count (idx);
    if (count == 0) {
        return ZI_OK;
    }
    size_t esz = zi_dtype_size (x->dtype);
    int64_t xs[ZI_MAX_RANK], pos[ZI_MAX_RANK] = {0}, off = 0;
    s_elem_strides (x, xs);
    int64_t n = x->ne[axis];
    for (int64_t j = 0; j < count; j++) {
        int64_t i = s_index_at (idx, j);
        if (i < -n || i >= n) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "index %lld out of range for "
                               "axis of size %lld", (long long) i, (long long) n);
        }
        if (i < 0) {
            i += n;
        }
        memcpy ((uint8_t *) y->data + (size_t) j * esz,
                (const uint8_t *) x->data + (size_t) (off + i * xs[axis]) * esz,
                esz);
        s_next_index (idx->rank, idx->ne, pos, xs, axis, &off);
    }
    return ZI_OK;
}

static int
s_gather_nd_shape (zi_kctx_t *ctx, int *b_out, int *k_out, int *r_out,
                   int64_t *shape)
{
    const zi_tensor_t *x = ctx->in[0], *idx = ctx->in[1];
    int rc = s_check_index_dtype (ctx, idx, "indices");
    if (rc) {
        return rc;
    }
    int64_t b = zi_node_attr_int (ctx->node, "batch_dims", 0);
    if (x->rank < 1 || idx->rank < 1 || b < 0 || b >= x->rank
        || b >= idx->rank) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "bad ranks (data %d, indices "
                           "%d, batch_dims %lld)", x->rank, idx->rank,
                           (long long) b);
    }
    int64_t k = idx->ne[idx->rank - 1];
    if (k < 1 || k > x->rank - b) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "indices' last dim %lld must be "
                           "in 1..%lld", (long long) k, (long long) (x->rank - b));
    }
    for (int d = 0; d < b; d++) {
        if (x->ne[d] != idx->ne[d]) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "batch dim %d differs", d);
        }
    }
    int r = 0;
    for (int d = 0; d < idx->rank - 1; d++) {
        shape[r++] = idx->ne[d];
    }
    for (int d = (int) (b + k); d < x->rank; d++) {
        if (r >= ZI_MAX_RANK) {
            return zi_op_fail (ctx, ZI_ERR_LIMIT, "output rank exceeds %d",
                               ZI_MAX_RANK);
        }
        shape[r++] = x->ne[d];
    }
    *b_out = (int) b;
    *k_out = (int) k;
    *r_out = r;
    return ZI_OK;
}

static int
s_gather_nd_infer (zi_kctx_t *ctx)
{
    int b = 0, k = 0, r = 0;
    int64_t shape[ZI_MAX_RANK];
    int rc = s_gather_nd_shape (ctx, &b, &k, &r, shape);
    return rc ? rc : s_set_out (ctx, 0, ctx->in[0]->dtype, r, shape);
}

//  x (B.., D_k.., rest..), idx (B.., m.., k) -> y (B.., m.., rest..)
static int
s_gather_nd_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0], *idx = ctx->in[1];
    zi_tensor_t *y = ctx->out[0];
    int b = 0, k = 0, r = 0;
    int64_t shape[ZI_MAX_RANK];
    int rc = s_gather_nd_shape (ctx, &b, &k, &r, shape);
    if (rc) {
        return rc;
    }
    if (zi_tensor_count (y) == 0) {
        return ZI_OK;
    }
    size_t esz = zi_dtype_size (x->dtype);
    int64_t xs[ZI_MAX_RANK];
    s_elem_strides (x, xs);
    int64_t batch = s_span (idx, 0, b);
    int64_t per_batch = s_span (idx, b, idx->rank - 1);    //  index tuples
    int64_t slice = s_span (x, b + k, x->rank);            //  elements each
    int64_t xbatch = b > 0 ? xs[b - 1] : 0;
    uint8_t *dst = (uint8_t *) y->data;
    int64_t t = 0;
    for (int64_t bi = 0; bi < batch; bi++) {
        for (int64_t j = 0; j < per_batch; j++, t++) {
            int64_t off = bi * xbatch;
            for (int c = 0; c < k; c++) {
                int64_t i = s_index_at (idx, t * k + c), n = x->ne[b + c];
                if (i < -n || i >= n) {
                    return zi_op_fail (ctx, ZI_ERR_SHAPE, "index %lld out of "
                                       "range for dim of size %lld",
                                       (long long) i, (long long) n);
                }
                off += (i < 0 ? i + n : i) * xs[b + c];
            }
            s_copy (dst, (const uint8_t *) x->data + (size_t) off * esz,
                    (size_t) slice * esz);
            dst += (size_t) slice * esz;
        }
    }
    return ZI_OK;
}

//  Scatter ------------------------------------------------------------------------

typedef enum { S_RED_NONE, S_RED_ADD, S_RED_MUL, S_RED_MAX, S_RED_MIN } s_red_t;

static int
s_reduction_of (const zi_node_t *node, s_red_t *red)
{
    const char *s = zi_node_attr_string (node, "reduction", "none");
    static const char *names[] = {"none", "add", "mul", "max", "min"};
    for (int i = 0; i < 5; i++) {
        if (strcmp (s, names[i]) == 0) {
            *red = (s_red_t) i;
            return ZI_OK;
        }
    }
    return ZI_ERR_UNSUPPORTED;
}

static int
s_scatter_check (const zi_node_t *node, char *err, size_t errlen)
{
    s_red_t red;
    int rc = s_check_attr (node, "reduction", ZI_ATTR_STRING, err, errlen);
    if (!rc && s_reduction_of (node, &red)) {
        rc = zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node '%s' (%s): "
                      "reduction '%s' is not supported", node->name,
                      node->op_type, zi_node_attr_string (node, "reduction", ""));
    }
    return rc;
}

#define S_APPLY_RED(T, dst, src, red)                                          \
    do {                                                                       \
        T a_, b_;                                                              \
        memcpy (&a_, (dst), sizeof (T));                                       \
        memcpy (&b_, (src), sizeof (T));                                       \
        switch (red) {                                                         \
            case S_RED_ADD: a_ = a_ + b_; break;                               \
            case S_RED_MUL: a_ = a_ * b_; break;                               \
            case S_RED_MAX: a_ = b_ > a_ ? b_ : a_; break;                     \
            case S_RED_MIN: a_ = b_ < a_ ? b_ : a_; break;                     \
            default: a_ = b_;                                                  \
        }                                                                      \
        memcpy ((dst), &a_, sizeof (T));                                       \
    } while (0)

//  *dst = red(*dst, *src) for one element.
static int
s_scatter_one (zi_dtype_t dt, uint8_t *dst, const uint8_t *src, size_t esz,
               s_red_t red)
{
    if (red == S_RED_NONE) {
        memcpy (dst, src, esz);
        return ZI_OK;
    }
    switch (dt) {
        case ZI_DT_F32: S_APPLY_RED (float, dst, src, red); break;
        case ZI_DT_F64: S_APPLY_RED (double, dst, src, red); break;
        case ZI_DT_I32: S_APPLY_RED (int32_t, dst, src, red); break;
        case ZI_DT_I64: S_APPLY_RED (int64_t, dst, src, red); break;
        default: return ZI_ERR_UNSUPPORTED;
    }
    return ZI_OK;
}

static int
s_scatter_red_dtype (zi_kctx_t *ctx, zi_dtype_t dt)
{
    s_red_t red;
    if (s_reduction_of (ctx->node, &red)) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "unsupported reduction");
    }
    if (red != S_RED_NONE && dt != ZI_DT_F32 && dt != ZI_DT_F64
        && dt != ZI_DT_I32 && dt != ZI_DT_I64) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "reduction on %s is not "
                           "supported", zi_dtype_name (dt));
    }
    return ZI_OK;
}

static int
s_scatter_elements_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0], *idx = ctx->in[1], *upd = ctx->in[2];
    int axis;
    int rc = s_gather_axis (ctx, x, &axis);
    if (!rc) {
        rc = s_check_index_dtype (ctx, idx, "indices");
    }
    if (!rc) {
        rc = s_scatter_red_dtype (ctx, x->dtype);
    }
    if (rc) {
        return rc;
    }
    bool same = idx->rank == x->rank && upd->rank == idx->rank;
    for (int d = 0; same && d < idx->rank; d++) {
        same = idx->ne[d] == upd->ne[d];
    }
    if (!same) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "indices and updates must have "
                           "the same shape and the data's rank");
    }
    if (upd->dtype != x->dtype) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "updates are %s, data %s",
                           zi_dtype_name (upd->dtype), zi_dtype_name (x->dtype));
    }
    for (int d = 0; d < x->rank; d++) {
        if (d != axis && idx->ne[d] > x->ne[d]) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "indices dim %d exceeds "
                               "data dim", d);
        }
    }
    return s_set_out (ctx, 0, x->dtype, x->rank, x->ne);
}

//  y = x; y[p with p[axis] = idx[p]] (red)= upd[p] for every p of idx
static int
s_scatter_elements_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0], *idx = ctx->in[1], *upd = ctx->in[2];
    zi_tensor_t *y = ctx->out[0];
    int axis;
    s_red_t red = S_RED_NONE;
    int rc = s_gather_axis (ctx, x, &axis);
    if (rc) {
        return rc;
    }
    s_reduction_of (ctx->node, &red);
    s_copy (y->data, x->data, x->nbytes);
    int64_t count = zi_tensor_count (idx);
    if (count == 0) {
        return ZI_OK;
    }
    size_t esz = zi_dtype_size (x->dtype);
    int64_t xs[ZI_MAX_RANK], pos[ZI_MAX_RANK] = {0}, off = 0;
    s_elem_strides (x, xs);
    int64_t n = x->ne[axis];
    for (int64_t j = 0; j < count; j++) {
        int64_t i = s_index_at (idx, j);
        if (i < -n || i >= n) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "index %lld out of range for "
                               "axis of size %lld", (long long) i, (long long) n);
        }
        if (i < 0) {
            i += n;
        }
        s_scatter_one (x->dtype,
                       (uint8_t *) y->data + (size_t) (off + i * xs[axis]) * esz,
                       (const uint8_t *) upd->data + (size_t) j * esz, esz, red);
        s_next_index (idx->rank, idx->ne, pos, xs, axis, &off);
    }
    return ZI_OK;
}

static int
s_scatter_nd_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0], *idx = ctx->in[1], *upd = ctx->in[2];
    int rc = s_check_index_dtype (ctx, idx, "indices");
    if (!rc) {
        rc = s_scatter_red_dtype (ctx, x->dtype);
    }
    if (rc) {
        return rc;
    }
    if (idx->rank < 1 || x->rank < 1) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "data and indices need rank >= 1");
    }
    int64_t k = idx->ne[idx->rank - 1];
    //  updates = indices.shape[:-1] + data.shape[k:]
    int ur = idx->rank - 1 + x->rank - (int) k;
    bool ok = k >= 1 && k <= x->rank && upd->rank == ur
              && upd->dtype == x->dtype;
    for (int d = 0; ok && d < idx->rank - 1; d++) {
        ok = upd->ne[d] == idx->ne[d];
    }
    for (int d = (int) k; ok && d < x->rank; d++) {
        ok = upd->ne[idx->rank - 1 + d - k] == x->ne[d];
    }
    if (!ok) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "updates do not match indices "
                           "and data");
    }
    return s_set_out (ctx, 0, x->dtype, x->rank, x->ne);
}

//  y = x; y[idx[j]] (red)= upd[j] (a slice of data.shape[k:] each)
static int
s_scatter_nd_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0], *idx = ctx->in[1], *upd = ctx->in[2];
    zi_tensor_t *y = ctx->out[0];
    s_red_t red = S_RED_NONE;
    s_reduction_of (ctx->node, &red);
    if (x->nbytes == 0) {
        return ZI_OK;
    }
    s_copy (y->data, x->data, x->nbytes);
    size_t esz = zi_dtype_size (x->dtype);
    int k = (int) idx->ne[idx->rank - 1];
    int64_t xs[ZI_MAX_RANK];
    s_elem_strides (x, xs);
    int64_t tuples = s_span (idx, 0, idx->rank - 1);
    int64_t slice = s_span (x, k, x->rank);
    for (int64_t j = 0; j < tuples; j++) {
        int64_t off = 0;
        for (int c = 0; c < k; c++) {
            int64_t i = s_index_at (idx, j * k + c), n = x->ne[c];
            if (i < -n || i >= n) {
                return zi_op_fail (ctx, ZI_ERR_SHAPE, "index %lld out of range "
                                   "for dim of size %lld", (long long) i,
                                   (long long) n);
            }
            off += (i < 0 ? i + n : i) * xs[c];
        }
        uint8_t *dst = (uint8_t *) y->data + (size_t) off * esz;
        const uint8_t *src = (const uint8_t *) upd->data + (size_t) (j * slice) * esz;
        if (red == S_RED_NONE) {
            s_copy (dst, src, (size_t) slice * esz);
            continue;
        }
        for (int64_t e = 0; e < slice; e++) {
            s_scatter_one (x->dtype, dst + e * (int64_t) esz,
                           src + e * (int64_t) esz, esz, red);
        }
    }
    return ZI_OK;
}

//  Expand and Tile -----------------------------------------------------------------

static int
s_expand_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t req[ZI_MAX_RANK], shape[ZI_MAX_RANK], count;
    int n, r;
    int rc = s_input_ints (ctx, 1, "shape", req, ZI_MAX_RANK, &n);
    if (rc) {
        return rc;
    }
    for (int i = 0; i < n; i++) {
        if (req[i] < 0) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "shape[%d] is %lld", i,
                               (long long) req[i]);
        }
    }
    if (zi_broadcast_shape (x->rank, x->ne, n, req, &r, shape)) {
        char a[128], b[128];
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "cannot expand %s to %s",
                           zi_tensor_shape_str (x, a, sizeof a),
                           zi_shape_str (n, req, b, sizeof b));
    }
    if (zi_shape_count (r, shape, &count) || count > S_MAX_MADE) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "expanded tensor too large");
    }
    return s_set_out (ctx, 0, x->dtype, r, shape);
}

//  x (d..) -> y (broadcast d..): size-1 (and missing) dims get stride 0
static int
s_expand_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *y = ctx->out[0];
    if (zi_tensor_count (y) == 0) {
        return ZI_OK;
    }
    int64_t xs[ZI_MAX_RANK], st[ZI_MAX_RANK];
    s_elem_strides (x, xs);
    int lead = y->rank - x->rank;
    for (int d = 0; d < y->rank; d++) {
        int xd = d - lead;
        st[d] = xd < 0 || x->ne[xd] == 1 ? 0 : xs[xd];
    }
    s_copy_strided ((uint8_t *) y->data, (const uint8_t *) x->data,
                    zi_dtype_size (x->dtype), y->rank, y->ne, st, 0);
    return ZI_OK;
}

static int
s_tile_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t rep[ZI_MAX_RANK], shape[ZI_MAX_RANK], count;
    int n;
    int rc = s_input_ints (ctx, 1, "repeats", rep, ZI_MAX_RANK, &n);
    if (rc) {
        return rc;
    }
    if (n != x->rank) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "repeats has %d values for "
                           "rank %d", n, x->rank);
    }
    for (int d = 0; d < n; d++) {
        if (rep[d] < 0 || __builtin_mul_overflow (x->ne[d], rep[d], &shape[d])) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "repeats[%d] = %lld is "
                               "invalid", d, (long long) rep[d]);
        }
    }
    if (zi_shape_count (n, shape, &count) || count > S_MAX_MADE) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "tiled tensor too large");
    }
    return s_set_out (ctx, 0, x->dtype, n, shape);
}

//  x (d..) -> y (r_i * d_i ..), seen as (r_0, d_0, r_1, d_1, ...) with the
//  repeat dims at stride 0.
static int
s_tile_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *y = ctx->out[0];
    if (zi_tensor_count (y) == 0) {
        return ZI_OK;
    }
    int64_t xs[ZI_MAX_RANK], shape[S_RANK2], st[S_RANK2];
    s_elem_strides (x, xs);
    for (int d = 0; d < x->rank; d++) {
        shape[2 * d] = y->ne[d] / x->ne[d];
        st[2 * d] = 0;
        shape[2 * d + 1] = x->ne[d];
        st[2 * d + 1] = xs[d];
    }
    s_copy_strided ((uint8_t *) y->data, (const uint8_t *) x->data,
                    zi_dtype_size (x->dtype), 2 * x->rank, shape, st, 0);
    return ZI_OK;
}

//  Pad -----------------------------------------------------------------------------

typedef enum { S_PAD_CONSTANT, S_PAD_REFLECT, S_PAD_EDGE } s_pad_mode_t;

static int
s_pad_mode (const zi_node_t *node, s_pad_mode_t *mode)
{
    const char *m = zi_node_attr_string (node, "mode", "constant");
    if (strcmp (m, "constant") == 0) {
        *mode = S_PAD_CONSTANT;
    }
    else if (strcmp (m, "reflect") == 0) {
        *mode = S_PAD_REFLECT;
    }
    else if (strcmp (m, "edge") == 0) {
        *mode = S_PAD_EDGE;
    }
    else {
        return ZI_ERR_UNSUPPORTED;
    }
    return ZI_OK;
}

static int
s_pad_check (const zi_node_t *node, char *err, size_t errlen)
{
    s_pad_mode_t mode = S_PAD_CONSTANT;
    int rc = s_check_attr (node, "mode", ZI_ATTR_STRING, err, errlen);
    if (!rc) {
        rc = s_check_attr (node, "pads", ZI_ATTR_INTS, err, errlen);
    }
    if (!rc) {
        rc = s_check_attr (node, "value", ZI_ATTR_FLOAT, err, errlen);
    }
    if (!rc && s_pad_mode (node, &mode)) {
        rc = zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node '%s' (Pad): mode "
                      "'%s' is not supported (constant, reflect, edge)",
                      node->name, zi_node_attr_string (node, "mode", ""));
    }
    return rc;
}

//  Begin/end pads per dim from the pads input (opset 11; axes from 18) or
//  the pads / paddings attribute.
static int
s_pad_amounts (zi_kctx_t *ctx, int64_t *begin, int64_t *end)
{
    const zi_tensor_t *x = ctx->in[0];
    int r = x->rank, n = 0;
    int64_t pads[2 * ZI_MAX_RANK], axes[ZI_MAX_RANK];
    if (s_in (ctx, 1)) {
        int rc = s_input_ints (ctx, 1, "pads", pads, 2 * ZI_MAX_RANK, &n);
        if (rc) {
            return rc;
        }
    }
    else {
        const int64_t *p = zi_node_attr_ints (ctx->node, "pads", &n);
        if (!p) {
            p = zi_node_attr_ints (ctx->node, "paddings", &n);
        }
        if (n > 2 * ZI_MAX_RANK) {
            return zi_op_fail (ctx, ZI_ERR_LIMIT, "too many pads");
        }
        s_copy (pads, p, (size_t) n * sizeof *pads);
    }
    int na = r;
    if (s_in (ctx, 3)) {
        int rc = s_input_ints (ctx, 3, "axes", axes, ZI_MAX_RANK, &na);
        if (rc) {
            return rc;
        }
    }
    else {
        for (int d = 0; d < r; d++) {
            axes[d] = d;
        }
    }
    if (n != 2 * na) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "pads has %d values, expected "
                           "%d", n, 2 * na);
    }
    for (int d = 0; d < r; d++) {
        begin[d] = end[d] = 0;
    }
    bool mask[ZI_MAX_RANK];
    int rc = s_axes_mask (ctx, axes, na, r, mask);
    if (rc) {
        return rc;
    }
    for (int i = 0; i < na; i++) {
        int a = (int) (axes[i] < 0 ? axes[i] + r : axes[i]);
        begin[a] = pads[i];
        end[a] = pads[na + i];
        int64_t out;
        if (__builtin_add_overflow (x->ne[a], begin[a], &out)
            || __builtin_add_overflow (out, end[a], &out) || out < 0) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "pads on axis %d give a bad "
                               "size", a);
        }
    }
    return ZI_OK;
}

static int
s_pad_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t begin[ZI_MAX_RANK], end[ZI_MAX_RANK], shape[ZI_MAX_RANK], count;
    int rc = s_pad_amounts (ctx, begin, end);
    if (rc) {
        return rc;
    }
    s_pad_mode_t mode = S_PAD_CONSTANT;
    s_pad_mode (ctx->node, &mode);
    for (int d = 0; d < x->rank; d++) {
        shape[d] = x->ne[d] + begin[d] + end[d];
        if (x->ne[d] == 0 && shape[d] > 0 && mode != S_PAD_CONSTANT) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "cannot %s-pad an empty "
                               "axis %d", mode == S_PAD_EDGE ? "edge"
                                                             : "reflect", d);
        }
    }
    if (zi_shape_count (x->rank, shape, &count) || count > S_MAX_MADE) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "padded tensor too large");
    }
    return s_set_out (ctx, 0, x->dtype, x->rank, shape);
}

//  Source index along one axis for output index o, or -1 for "pad value".
static int64_t
s_pad_src (int64_t o, int64_t begin, int64_t n, s_pad_mode_t mode)
{
    int64_t i = o - begin;
    if (i >= 0 && i < n) {
        return i;
    }
    if (mode == S_PAD_CONSTANT) {
        return -1;
    }
    if (mode == S_PAD_EDGE || n == 1) {
        return i < 0 ? 0 : n - 1;
    }
    //  reflect (mirror without repeating the edge), periodic with 2(n-1)
    int64_t p = 2 * (n - 1);
    i %= p;
    if (i < 0) {
        i += p;
    }
    return i < n ? i : p - i;
}

//  x (d..) -> y (b + d + e ..), one output row (innermost dim) at a time
static int
s_pad_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *y = ctx->out[0];
    int64_t begin[ZI_MAX_RANK], end[ZI_MAX_RANK];
    int rc = s_pad_amounts (ctx, begin, end);
    if (rc) {
        return rc < 0 ? rc : zi_op_fail (ctx, ZI_ERR_INVALID, "pads unknown "
                                         "at run time");
    }
    s_pad_mode_t mode = S_PAD_CONSTANT;
    s_pad_mode (ctx->node, &mode);
    size_t esz = zi_dtype_size (x->dtype);
    uint8_t val[8] = {0};
    const zi_tensor_t *cv = s_in (ctx, 2);
    if (cv && zi_tensor_count (cv) > 0 && cv->data) {
        if (cv->dtype != x->dtype) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "constant_value is %s, data "
                               "%s", zi_dtype_name (cv->dtype),
                               zi_dtype_name (x->dtype));
        }
        memcpy (val, cv->data, esz);
    }
    else if (!s_in (ctx, 1)) {
        s_store (x->dtype, val, zi_node_attr_float (ctx->node, "value", 0.0f));
    }
    int64_t count = zi_tensor_count (y);
    if (count == 0) {
        return ZI_OK;
    }
    if (x->rank == 0) {
        memcpy (y->data, x->data, esz);
        return ZI_OK;
    }
    //  Source index maps, one per axis (sum of the output dims long).
    int r = x->rank;
    int64_t total = 0, at[ZI_MAX_RANK];
    for (int d = 0; d < r; d++) {
        at[d] = total;
        total += y->ne[d];
    }
    int64_t *map = (int64_t *) malloc ((size_t) total * sizeof *map);
    if (!map) {
        return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
    }
    for (int d = 0; d < r; d++) {
        for (int64_t o = 0; o < y->ne[d]; o++) {
            map[at[d] + o] = s_pad_src (o, begin[d], x->ne[d], mode);
        }
    }
    int64_t xs[ZI_MAX_RANK], pos[ZI_MAX_RANK] = {0};
    s_elem_strides (x, xs);
    int64_t w = y->ne[r - 1], nx = x->ne[r - 1];
    const int64_t *lmap = map + at[r - 1];
    uint8_t *dst = (uint8_t *) y->data;
    const uint8_t *src = (const uint8_t *) x->data;
    for (int64_t row = 0; row < count / w; row++) {
        int64_t off = 0;
        bool pad = false;
        for (int d = 0; d < r - 1; d++) {
            int64_t s = map[at[d] + pos[d]];
            pad |= s < 0;
            off += s * xs[d];
        }
        if (pad) {
            s_fill (dst, val, esz, w);
        }
        else {
            //  The interior [lo, hi) of a row is a single copy; the borders
            //  go element by element.
            int64_t b = begin[r - 1];
            int64_t lo = b > 0 ? b : 0, hi = b + nx < w ? b + nx : w;
            for (int64_t o = 0; o < w; o++) {
                if (o == lo && hi > lo) {
                    memcpy (dst + o * (int64_t) esz,
                            src + (off + lo - b) * (int64_t) esz,
                            (size_t) (hi - lo) * esz);
                    o = hi - 1;
                }
                else if (lmap[o] < 0) {
                    memcpy (dst + o * (int64_t) esz, val, esz);
                }
                else {
                    memcpy (dst + o * (int64_t) esz,
                            src + (off + lmap[o]) * (int64_t) esz, esz);
                }
            }
        }
        dst += w * (int64_t) esz;
        for (int d = r - 2; d >= 0; d--) {
            if (++pos[d] < y->ne[d]) {
                break;
            }
            pos[d] = 0;
        }
    }
    free (map);
    return ZI_OK;
}

//  Shape, Size, ConstantOfShape, Range, Constant ------------------------------------

//  Shape's [start, end) (opset 15), clamped to [0, rank].
static void
s_shape_range (const zi_node_t *node, int rank, int64_t *s, int64_t *e)
{
    int64_t a = zi_node_attr_int (node, "start", 0);
    int64_t b = zi_node_attr_int (node, "end", rank);
    if (a < 0) {
        a += rank;
    }
    if (b < 0) {
        b += rank;
    }
    *s = a < 0 ? 0 : (a > rank ? rank : a);
    *e = b < 0 ? 0 : (b > rank ? rank : b);
    if (*e < *s) {
        *e = *s;
    }
}

static int
s_shape_infer (zi_kctx_t *ctx)
{
    int64_t s, e;
    s_shape_range (ctx->node, ctx->in[0]->rank, &s, &e);
    int64_t n = e - s;
    return s_set_out (ctx, 0, ZI_DT_I64, 1, &n);
}

//  Reads only in[0]'s rank and dims, never its data: constant folding runs
//  this on inputs whose value is unknown.
static int
s_shape_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t s, e;
    s_shape_range (ctx->node, x->rank, &s, &e);
    int64_t *y = (int64_t *) ctx->out[0]->data;
    for (int64_t i = s; i < e; i++) {
        y[i - s] = x->ne[i];
    }
    return ZI_OK;
}

static int
s_size_infer (zi_kctx_t *ctx)
{
    return s_set_out (ctx, 0, ZI_DT_I64, 0, NULL);
}

//  Reads only in[0]'s dims (see s_shape_run).
static int
s_size_run (zi_kctx_t *ctx)
{
    *(int64_t *) ctx->out[0]->data = zi_tensor_count (ctx->in[0]);
    return ZI_OK;
}

static int
s_cos_check (const zi_node_t *node, char *err, size_t errlen)
{
    const zi_attr_t *a = zi_node_attr (node, "value");
    if (a && (a->type != ZI_ATTR_TENSOR || !a->t || !zi_dtype_valid (a->t->dtype)
              || zi_tensor_count (a->t) != 1 || !a->t->data)) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "node '%s' "
                        "(ConstantOfShape): value must be a one-element "
                        "numeric tensor", node->name);
    }
    return ZI_OK;
}

static int
s_cos_infer (zi_kctx_t *ctx)
{
    int64_t shape[ZI_MAX_RANK], count;
    int n;
    const zi_tensor_t *sh = ctx->in[0];
    if (sh->rank != 1) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "input must be 1-D, has rank "
                           "%d", sh->rank);
    }
    int rc = s_input_ints (ctx, 0, "input", shape, ZI_MAX_RANK, &n);
    if (rc) {
        return rc;
    }
    for (int i = 0; i < n; i++) {
        if (shape[i] < 0) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "shape[%d] is %lld", i,
                               (long long) shape[i]);
        }
    }
    if (zi_shape_count (n, shape, &count) || count > S_MAX_MADE) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "constant too large");
    }
    const zi_attr_t *a = zi_node_attr (ctx->node, "value");
    zi_dtype_t dt = a && a->type == ZI_ATTR_TENSOR && a->t ? a->t->dtype
                                                           : ZI_DT_F32;
    return s_set_out (ctx, 0, dt, n, shape);
}

static int
s_cos_run (zi_kctx_t *ctx)
{
    zi_tensor_t *y = ctx->out[0];
    const zi_attr_t *a = zi_node_attr (ctx->node, "value");
    uint8_t zero[8] = {0};
    const void *val = a && a->type == ZI_ATTR_TENSOR && a->t && a->t->data
                          ? a->t->data : zero;
    if (zi_tensor_count (y) > 0) {
        s_fill ((uint8_t *) y->data, val, zi_dtype_size (y->dtype),
                zi_tensor_count (y));
    }
    return ZI_OK;
}

static double
s_scalar_f (const zi_tensor_t *t)
{
    switch (t->dtype) {
        case ZI_DT_F32: return *(const float *) t->data;
        case ZI_DT_F64: return *(const double *) t->data;
        case ZI_DT_I16: return *(const int16_t *) t->data;
        case ZI_DT_I32: return *(const int32_t *) t->data;
        case ZI_DT_I64: return (double) *(const int64_t *) t->data;
        default: return 0;
    }
}

static int64_t
s_scalar_i (const zi_tensor_t *t)
{
    switch (t->dtype) {
        case ZI_DT_I16: return *(const int16_t *) t->data;
        case ZI_DT_I32: return *(const int32_t *) t->data;
        case ZI_DT_I64: return *(const int64_t *) t->data;
        default: return 0;
    }
}

//  Number of Range elements: max(ceil((limit - start) / delta), 0), exact
//  for integers, checked against S_MAX_MADE before anything is allocated.
static int
s_range_count (zi_kctx_t *ctx, int64_t *count)
{
    const zi_tensor_t *a = ctx->in[0], *b = ctx->in[1], *c = ctx->in[2];
    zi_dtype_t dt = a->dtype;
    if (b->dtype != dt || c->dtype != dt) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "start, limit and delta must "
                           "have the same dtype");
    }
    if (dt != ZI_DT_F32 && dt != ZI_DT_F64 && dt != ZI_DT_I16
        && dt != ZI_DT_I32 && dt != ZI_DT_I64) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "dtype %s is not "
                           "supported", zi_dtype_name (dt));
    }
    if (zi_tensor_count (a) != 1 || zi_tensor_count (b) != 1
        || zi_tensor_count (c) != 1) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "start, limit and delta must "
                           "be scalars");
    }
    if (!a->data || !b->data || !c->data) {
        return ZI_OP_NEEDS_VALUE;
    }
    if (dt == ZI_DT_F32 || dt == ZI_DT_F64) {
        double s = s_scalar_f (a), l = s_scalar_f (b), d = s_scalar_f (c);
        if (dt == ZI_DT_F32) {
            //  compute with the float32 values the spec uses
            d = (float) d;
        }
        double n = ceil ((l - s) / d);
        if (d == 0 || !isfinite (n)) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "bad range (start %g, limit "
                               "%g, delta %g)", s, l, d);
        }
        if (n > (double) S_MAX_MADE) {
            return zi_op_fail (ctx, ZI_ERR_LIMIT, "range of %g elements is "
                               "too large", n);
        }
        *count = n > 0 ? (int64_t) n : 0;
        return ZI_OK;
    }
    __int128 s = s_scalar_i (a), l = s_scalar_i (b), d = s_scalar_i (c);
    if (d == 0) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "delta is 0");
    }
    __int128 span = l - s, n;
    if ((span > 0) != (d > 0) || span == 0) {
        n = 0;
    }
    else {
        if (d < 0) {
            span = -span;
            d = -d;
        }
        n = (span + d - 1) / d;
    }
    if (n > S_MAX_MADE) {
        return zi_op_fail (ctx, ZI_ERR_LIMIT, "range of %lld elements is too "
                           "large", (long long) (n > INT64_MAX ? INT64_MAX : n));
    }
    *count = (int64_t) n;
    return ZI_OK;
}

static int
s_range_infer (zi_kctx_t *ctx)
{
    int64_t n;
    int rc = s_range_count (ctx, &n);
    return rc ? rc : s_set_out (ctx, 0, ctx->in[0]->dtype, 1, &n);
}

//  y (n,) = start + i * delta
static int
s_range_run (zi_kctx_t *ctx)
{
    int64_t n;
    int rc = s_range_count (ctx, &n);
    if (rc) {
        return rc < 0 ? rc : zi_op_fail (ctx, ZI_ERR_INVALID, "range unknown "
                                         "at run time");
    }
    const zi_tensor_t *a = ctx->in[0], *c = ctx->in[2];
    void *y = ctx->out[0]->data;
    switch (a->dtype) {
        case ZI_DT_F32: {
            float s = *(const float *) a->data, d = *(const float *) c->data;
            for (int64_t i = 0; i < n; i++) {
                ((float *) y)[i] = s + (float) i * d;
            }
            break;
        }
        case ZI_DT_F64: {
            double s = *(const double *) a->data, d = *(const double *) c->data;
            for (int64_t i = 0; i < n; i++) {
                ((double *) y)[i] = s + (double) i * d;
            }
            break;
        }
        default: {
            //  Every value lies between start and limit: no overflow.
            int64_t s = s_scalar_i (a), d = s_scalar_i (c);
            for (int64_t i = 0; i < n; i++) {
                int64_t v = s + i * d;
                if (a->dtype == ZI_DT_I64) {
                    ((int64_t *) y)[i] = v;
                }
                else if (a->dtype == ZI_DT_I32) {
                    ((int32_t *) y)[i] = (int32_t) v;
                }
                else {
                    ((int16_t *) y)[i] = (int16_t) v;
                }
            }
        }
    }
    return ZI_OK;
}

static const char *const s_constant_attrs[] = {
    "value", "value_float", "value_floats", "value_int", "value_ints",
};

static int
s_constant_check (const zi_node_t *node, char *err, size_t errlen)
{
    static const zi_attr_type_t types[] = {
        ZI_ATTR_TENSOR, ZI_ATTR_FLOAT, ZI_ATTR_FLOATS, ZI_ATTR_INT,
        ZI_ATTR_INTS,
    };
    int found = 0;
    for (int i = 0; i < 5; i++) {
        const zi_attr_t *a = zi_node_attr (node, s_constant_attrs[i]);
        if (!a) {
            continue;
        }
        found++;
        if (a->type != types[i] || (i == 0 && (!a->t || a->t->rank > ZI_MAX_RANK
                                               || !zi_dtype_valid (a->t->dtype)))) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED, "node '%s' "
                            "(Constant): bad attribute '%s'", node->name,
                            s_constant_attrs[i]);
        }
    }
    if (zi_node_attr (node, "sparse_value") || zi_node_attr (node, "value_string")
        || zi_node_attr (node, "value_strings")) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node '%s' "
                        "(Constant): sparse and string values are not "
                        "supported", node->name);
    }
    if (found != 1) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "node '%s' (Constant): "
                        "needs exactly one value attribute, has %d",
                        node->name, found);
    }
    return ZI_OK;
}

static int
s_constant_infer (zi_kctx_t *ctx)
{
    const zi_node_t *node = ctx->node;
    const zi_attr_t *a;
    if ((a = zi_node_attr (node, "value")) && a->type == ZI_ATTR_TENSOR && a->t) {
        return s_set_out (ctx, 0, a->t->dtype, a->t->rank, a->t->ne);
    }
    if ((a = zi_node_attr (node, "value_float")) && a->type == ZI_ATTR_FLOAT) {
        return s_set_out (ctx, 0, ZI_DT_F32, 0, NULL);
    }
    if ((a = zi_node_attr (node, "value_int")) && a->type == ZI_ATTR_INT) {
        return s_set_out (ctx, 0, ZI_DT_I64, 0, NULL);
    }
    int64_t n;
    if ((a = zi_node_attr (node, "value_floats")) && a->type == ZI_ATTR_FLOATS) {
        n = a->n;
        return s_set_out (ctx, 0, ZI_DT_F32, 1, &n);
    }
    if ((a = zi_node_attr (node, "value_ints")) && a->type == ZI_ATTR_INTS) {
        n = a->n;
        return s_set_out (ctx, 0, ZI_DT_I64, 1, &n);
    }
    return zi_op_fail (ctx, ZI_ERR_MALFORMED, "no value attribute");
}

static int
s_constant_run (zi_kctx_t *ctx)
{
    const zi_node_t *node = ctx->node;
    zi_tensor_t *y = ctx->out[0];
    const zi_attr_t *a;
    if ((a = zi_node_attr (node, "value")) && a->type == ZI_ATTR_TENSOR && a->t) {
        if (a->t->nbytes != y->nbytes || !zi_tensor_is_contiguous (a->t)) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "value tensor is malformed");
        }
        s_copy (y->data, a->t->data, y->nbytes);
    }
    else if ((a = zi_node_attr (node, "value_float")) && a->type == ZI_ATTR_FLOAT) {
        memcpy (y->data, &a->f, sizeof a->f);
    }
    else if ((a = zi_node_attr (node, "value_int")) && a->type == ZI_ATTR_INT) {
        memcpy (y->data, &a->i, sizeof a->i);
    }
    else if ((a = zi_node_attr (node, "value_floats")) && a->type == ZI_ATTR_FLOATS) {
        s_copy (y->data, a->floats, (size_t) a->n * sizeof (float));
    }
    else if ((a = zi_node_attr (node, "value_ints")) && a->type == ZI_ATTR_INTS) {
        s_copy (y->data, a->ints, (size_t) a->n * sizeof (int64_t));
    }
    return ZI_OK;
}

//  Trilu ---------------------------------------------------------------------------

static int
s_trilu_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    if (x->rank < 2) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "input needs rank >= 2, has %d",
                           x->rank);
    }
    return s_set_out (ctx, 0, x->dtype, x->rank, x->ne);
}

//  x (..., n, m) -> y: keeps j - i >= k (upper) or j - i <= k (lower); the
//  rest becomes 0 (all-zero bytes are 0 in every numeric dtype).
static int
s_trilu_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *y = ctx->out[0];
    int64_t k = 0;
    const zi_tensor_t *kt = s_in (ctx, 1);
    if (kt && zi_tensor_count (kt) > 0) {
        int64_t v[1];
        int n;
        int rc = s_input_ints (ctx, 1, "k", v, 1, &n);
        if (rc) {
            return rc < 0 ? rc : zi_op_fail (ctx, ZI_ERR_INVALID, "k unknown");
        }
        k = v[0];
    }
    bool upper = zi_node_attr_int (ctx->node, "upper", 1) != 0;
    size_t esz = zi_dtype_size (x->dtype);
    int64_t rows = x->ne[x->rank - 2], cols = x->ne[x->rank - 1];
    int64_t mats = s_span (x, 0, x->rank - 2);
    if (zi_tensor_count (y) == 0) {
        return ZI_OK;
    }
    s_copy (y->data, x->data, x->nbytes);
    uint8_t *p = (uint8_t *) y->data;
    for (int64_t b = 0; b < mats; b++) {
        for (int64_t i = 0; i < rows; i++) {
            uint8_t *row = p + (size_t) ((b * rows + i) * cols) * esz;
            //  columns kept: upper j >= i + k, lower j <= i + k
            int64_t lo, hi;     //  zero the columns [lo, hi)
            int64_t edge;
            if (__builtin_add_overflow (i, k, &edge)) {
                edge = k > 0 ? INT64_MAX : INT64_MIN;
            }
            if (upper) {
                lo = 0;
                hi = edge < 0 ? 0 : (edge > cols ? cols : edge);
            }
            else {
                lo = edge < -1 ? 0 : (edge >= cols ? cols : edge + 1);
                hi = cols;
            }
            if (hi > lo) {
                memset (row + lo * (int64_t) esz, 0, (size_t) (hi - lo) * esz);
            }
        }
    }
    return ZI_OK;
}

//  DepthToSpace and SpaceToDepth ---------------------------------------------------

static int
s_d2s_check (const zi_node_t *node, char *err, size_t errlen)
{
    const zi_attr_t *b = zi_node_attr (node, "blocksize");
    if (!b || b->type != ZI_ATTR_INT || b->i < 1 || b->i > (1 << 20)) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "node '%s' (%s): needs "
                        "a positive int blocksize", node->name, node->op_type);
    }
    const char *mode = zi_node_attr_string (node, "mode", "DCR");
    if (strcmp (mode, "DCR") != 0 && strcmp (mode, "CRD") != 0) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node '%s' (%s): mode "
                        "'%s' is not supported (DCR, CRD)", node->name,
                        node->op_type, mode);
    }
    return ZI_OK;
}

static bool
s_is_d2s (const zi_node_t *node)
{
    return strcmp (node->op_type, "DepthToSpace") == 0;
}

static int
s_d2s_infer (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    int64_t b = zi_node_attr_int (ctx->node, "blocksize", 1);
    if (x->rank != 4 || b < 1) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "input must be 4-D (N,C,H,W)");
    }
    int64_t shape[4] = {x->ne[0], x->ne[1], x->ne[2], x->ne[3]};
    if (s_is_d2s (ctx->node)) {
        if (x->ne[1] % (b * b) != 0) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "channels %lld not divisible "
                               "by blocksize^2", (long long) x->ne[1]);
        }
        shape[1] /= b * b;
        shape[2] *= b;      //  same element count: cannot overflow
        shape[3] *= b;
    }
    else {
        if (x->ne[2] % b != 0 || x->ne[3] % b != 0) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "H and W must be divisible "
                               "by the blocksize");
        }
        shape[1] *= b * b;
        shape[2] /= b;
        shape[3] /= b;
    }
    return s_set_out (ctx, 0, x->dtype, 4, shape);
}

//  DepthToSpace: x (N, C, H, W) seen as (N, b, b, C', H, W) (DCR) or
//  (N, C', b, b, H, W) (CRD) -> y (N, C', H, b, W, b).
//  SpaceToDepth: x seen as (N, C, H', b, W', b) -> y (N, b, b, C, H', W').
static int
s_d2s_run (zi_kctx_t *ctx)
{
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *y = ctx->out[0];
    if (zi_tensor_count (y) == 0) {
        return ZI_OK;
    }
    int64_t b = zi_node_attr_int (ctx->node, "blocksize", 1);
    int64_t n = x->ne[0], c = x->ne[1], h = x->ne[2], w = x->ne[3];
    int64_t shape[6], st[6];
    if (s_is_d2s (ctx->node)) {
        int64_t c2 = c / (b * b), hw = h * w;
        bool crd = strcmp (zi_node_attr_string (ctx->node, "mode", "DCR"),
                           "CRD") == 0;
        //  strides of the input's 6-D view, in y's dim order
        int64_t s_c2 = crd ? b * b * hw : hw;
        int64_t s_b1 = crd ? b * hw : b * c2 * hw;
        int64_t s_b2 = crd ? hw : c2 * hw;
        int64_t sh[6] = {n, c2, h, b, w, b};
        int64_t ss[6] = {c * hw, s_c2, w, s_b1, 1, s_b2};
        memcpy (shape, sh, sizeof sh);
        memcpy (st, ss, sizeof ss);
    }
    else {
        int64_t h2 = h / b, w2 = w / b;
        int64_t sh[6] = {n, b, b, c, h2, w2};
        int64_t ss[6] = {c * h * w, w, 1, h * w, b * w, b};
        memcpy (shape, sh, sizeof sh);
        memcpy (st, ss, sizeof ss);
    }
    s_copy_strided ((uint8_t *) y->data, (const uint8_t *) x->data,
                    zi_dtype_size (x->dtype), 6, shape, st, 0);
    return ZI_OK;
}

//  Generic checks -------------------------------------------------------------------

static int
s_axis_check (const zi_node_t *node, char *err, size_t errlen)
{
    return s_check_attr (node, "axis", ZI_ATTR_INT, err, errlen);
}

static int
s_axes_check (const zi_node_t *node, char *err, size_t errlen)
{
    return s_check_attr (node, "axes", ZI_ATTR_INTS, err, errlen);
}

static int
s_concat_check (const zi_node_t *node, char *err, size_t errlen)
{
    if (!zi_node_attr (node, "axis")) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "node '%s' (Concat): "
                        "attribute axis is required", node->name);
    }
    return s_axis_check (node, err, errlen);
}

static int
s_transpose_check (const zi_node_t *node, char *err, size_t errlen)
{
    return s_check_attr (node, "perm", ZI_ATTR_INTS, err, errlen);
}

static int
s_slice_check (const zi_node_t *node, char *err, size_t errlen)
{
    if (node->n_in < 3 && (!zi_node_attr (node, "starts")
                           || !zi_node_attr (node, "ends"))) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "node '%s' (Slice): "
                        "needs starts and ends", node->name);
    }
    int rc = s_check_attr (node, "starts", ZI_ATTR_INTS, err, errlen);
    if (!rc) {
        rc = s_check_attr (node, "ends", ZI_ATTR_INTS, err, errlen);
    }
    if (!rc) {
        rc = s_axes_check (node, err, errlen);
    }
    return rc;
}

static int
s_shape_check (const zi_node_t *node, char *err, size_t errlen)
{
    int rc = s_check_attr (node, "start", ZI_ATTR_INT, err, errlen);
    return rc ? rc : s_check_attr (node, "end", ZI_ATTR_INT, err, errlen);
}

static int
s_unsqueeze_check (const zi_node_t *node, char *err, size_t errlen)
{
    if (node->n_in < 2 && !zi_node_attr (node, "axes")) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "node '%s' (Unsqueeze): "
                        "needs axes", node->name);
    }
    return s_axes_check (node, err, errlen);
}

static int
s_tile_check (const zi_node_t *node, char *err, size_t errlen)
{
    if (node->n_in < 2) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "node '%s' (Tile): "
                        "Tile-1 (tiles/axis inputs) is not supported",
                        node->name);
    }
    return ZI_OK;
}

static int
s_trilu_check (const zi_node_t *node, char *err, size_t errlen)
{
    return s_check_attr (node, "upper", ZI_ATTR_INT, err, errlen);
}

//  The table --------------------------------------------------------------------------

#define S_MANY INT_MAX

const zi_op_def_t zi_ops_shape[] = {
    {"Identity", NULL, 1, 1, 1, 1, NULL, s_identity_infer, s_copy_run},
    {"Dropout", NULL, 1, 3, 1, 2, NULL, s_dropout_infer, s_dropout_run},
    {"Reshape", NULL, 1, 2, 1, 1, s_reshape_check, s_reshape_infer, s_copy_run},
    {"Flatten", NULL, 1, 1, 1, 1, s_axis_check, s_flatten_infer, s_copy_run},
    {"Squeeze", NULL, 1, 2, 1, 1, s_axes_check, s_squeeze_infer, s_copy_run},
    {"Unsqueeze", NULL, 1, 2, 1, 1, s_unsqueeze_check, s_unsqueeze_infer,
     s_copy_run},
    {"Transpose", NULL, 1, 1, 1, 1, s_transpose_check, s_transpose_infer,
     s_transpose_run},
    {"Concat", NULL, 1, S_MANY, 1, 1, s_concat_check, s_concat_infer,
     s_concat_run},
    {"Split", NULL, 1, 2, 1, S_MANY, s_split_check, s_split_infer, s_split_run},
    {"Slice", NULL, 1, 5, 1, 1, s_slice_check, s_slice_infer, s_slice_run},
    {"Gather", NULL, 2, 2, 1, 1, s_axis_check, s_gather_infer, s_gather_run},
    {"GatherElements", NULL, 2, 2, 1, 1, s_axis_check, s_gather_elements_infer,
     s_gather_elements_run},
    {"GatherND", NULL, 2, 2, 1, 1, NULL, s_gather_nd_infer, s_gather_nd_run},
    {"ScatterElements", NULL, 3, 3, 1, 1, s_scatter_check,
     s_scatter_elements_infer, s_scatter_elements_run},
    {"Scatter", NULL, 3, 3, 1, 1, s_scatter_check, s_scatter_elements_infer,
     s_scatter_elements_run},
    {"ScatterND", NULL, 3, 3, 1, 1, s_scatter_check, s_scatter_nd_infer,
     s_scatter_nd_run},
    {"Expand", NULL, 2, 2, 1, 1, NULL, s_expand_infer, s_expand_run},
    {"Tile", NULL, 2, 3, 1, 1, s_tile_check, s_tile_infer, s_tile_run},
    {"Pad", NULL, 1, 4, 1, 1, s_pad_check, s_pad_infer, s_pad_run},
    {"Shape", NULL, 1, 1, 1, 1, s_shape_check, s_shape_infer, s_shape_run},
    {"Size", NULL, 1, 1, 1, 1, NULL, s_size_infer, s_size_run},
    {"ConstantOfShape", NULL, 1, 1, 1, 1, s_cos_check, s_cos_infer, s_cos_run},
    {"Range", NULL, 3, 3, 1, 1, NULL, s_range_infer, s_range_run},
    {"Constant", NULL, 0, 0, 1, 1, s_constant_check, s_constant_infer,
     s_constant_run},
    {"Trilu", NULL, 1, 2, 1, 1, s_trilu_check, s_trilu_infer, s_trilu_run},
    {"DepthToSpace", NULL, 1, 1, 1, 1, s_d2s_check, s_d2s_infer, s_d2s_run},
    {"SpaceToDepth", NULL, 1, 1, 1, 1, s_d2s_check, s_d2s_infer, s_d2s_run},
    {"NonZero", NULL, 1, 1, 1, 1, NULL, zi_ops_shape_nonzero_infer,
     zi_ops_shape_nonzero_run},
    {"Compress", NULL, 2, 2, 1, 1, zi_ops_shape_compress_check,
     zi_ops_shape_compress_infer, zi_ops_shape_compress_run},
    {"OneHot", NULL, 3, 3, 1, 1, zi_ops_shape_onehot_check,
     zi_ops_shape_onehot_infer, zi_ops_shape_onehot_run},
    {"EyeLike", NULL, 1, 1, 1, 1, zi_ops_shape_eyelike_check,
     zi_ops_shape_eyelike_infer, zi_ops_shape_eyelike_run},
    {"Resize", NULL, 1, 4, 1, 1, zi_ops_shape_resize_check,
     zi_ops_shape_resize_infer, zi_ops_shape_resize_run},
    {"Upsample", NULL, 1, 2, 1, 1, zi_ops_shape_upsample_check,
     zi_ops_shape_resize_infer, zi_ops_shape_resize_run},
    {NULL},
};
