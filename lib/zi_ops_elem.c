/*  zi_ops_elem.c - element-wise operators: arithmetic, comparison and logic
    with numpy broadcasting, variadic Sum/Mean/Min/Max, Where, unary maths
    and activations, Clip, Cast / CastLike.

    How broadcasting runs. Every broadcasting op builds an s_plan_t that maps
    the output shape onto each input with element strides (0 on a broadcast
    dimension), drops size-1 output dimensions and merges adjacent dimensions
    that every operand walks the same way. What is left is a loop over rows of
    the innermost dimension in which each operand's inner stride is 1 (it
    varies along the row) or 0 (it is constant along the row):

        a (2,3,4)   + b (2,3,4)    -> 1 row of 24,      strides (1,1)  flat
        a (2,3,4)   + b ()         -> 1 row of 24,      strides (1,0)  scalar
        a (6,4)     + b (4,)       -> 6 rows of 4,      strides (1,1)  bias
        a (N,C,H,W) + b (1,C,1,1)  -> N*C rows of H*W,  strides (1,0)

    Row kernels are one small function per (op, dtype) with one loop per
    stride pair, simple enough for the compiler to vectorise; the driver calls
    them once per row, never per element. Unary kernels switch on the op
    outside their loops for the same reason.

    float16 / bfloat16 are storage types in zinfer: such inputs are converted
    to float32 scratch, computed in float32 and the result converted back.

    Sigmoid and Tanh (also inside Gelu's tanh form) use a vectorisable exp
    polynomial for float32 (max relative error 3e-7); the other
    transcendental functions are libm's (Erf, so Gelu, is erff).

    Legacy (opset < 7) binary nodes with broadcast = 1 and an axis are run by
    reshaping B to A's rank around that axis, then broadcasting as numpy.

    Integer arithmetic wraps (two's complement) instead of trapping: models
    are untrusted, so integer division by zero yields 0 and INT_MIN / -1
    wraps, rather than raising SIGFPE.
*/
#include "zi_ops.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Dtype classes, as bit masks over ONNX dtype numbers ----------------------

#define S_M(dt) (1u << (dt))
#define S_M_HALF (S_M (ZI_DT_F16) | S_M (ZI_DT_BF16))
#define S_M_FLOAT (S_M_HALF | S_M (ZI_DT_F32) | S_M (ZI_DT_F64))
#define S_M_SINT \
    (S_M (ZI_DT_I8) | S_M (ZI_DT_I16) | S_M (ZI_DT_I32) | S_M (ZI_DT_I64))
#define S_M_UINT \
    (S_M (ZI_DT_U8) | S_M (ZI_DT_U16) | S_M (ZI_DT_U32) | S_M (ZI_DT_U64))
#define S_M_INT (S_M_SINT | S_M_UINT)
#define S_M_NUM (S_M_FLOAT | S_M_INT)
#define S_M_BOOL S_M (ZI_DT_BOOL)

static bool
s_in (unsigned mask, zi_dtype_t dtype)
{
    int d = (int) dtype;
    return d >= 0 && d < 32 && (mask & S_M (d)) != 0;
}

static char *
s_shape (const zi_tensor_t *t, char *buf, size_t len)
{
    return zi_tensor_shape_str (t, buf, len);
}

//  Conversions between dtypes (Cast, float16 promotion, mixed-type Pow) -----

//  float -> int64, truncating toward zero and saturating instead of the
//  undefined behaviour C gives out-of-range conversions; NaN -> 0.
static inline int64_t
s_f64_to_i64 (double d)
{
    if (!(d > -9223372036854775808.0)) {
        return d != d ? 0 : INT64_MIN;
    }
    if (d >= 9223372036854775808.0) {
        return INT64_MAX;
    }
    return (int64_t) d;
}

static inline uint64_t
s_f64_to_u64 (double d)
{
    if (d >= 18446744073709551616.0) {
        return UINT64_MAX;
    }
    if (d >= 9223372036854775808.0) {
        return (uint64_t) d;
    }
    //  Below 2^63: as numpy does on x86, negative values wrap modulo 2^64.
    return (uint64_t) s_f64_to_i64 (d);
}

//  float32 -> bfloat16, rounding to nearest even; NaN stays a (quiet) NaN.
static inline uint16_t
s_f32_to_bf16 (float f)
{
    uint32_t u;
    memcpy (&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t) ((u >> 16) | 0x40u);
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t) (u >> 16);
}

//  Load m elements of a float-typed source (from element off) as double.
static void
s_load_f64 (double *d, const void *src, zi_dtype_t st, int64_t off, int64_t m)
{
    switch (st) {
        case ZI_DT_F32: {
            const float *s = (const float *) src + off;
            for (int64_t i = 0; i < m; i++) {
                d[i] = s[i];
            }
            break;
        }
        case ZI_DT_F64: {
            const double *s = (const double *) src + off;
            for (int64_t i = 0; i < m; i++) {
                d[i] = s[i];
            }
            break;
        }
        case ZI_DT_F16: {
            const uint16_t *s = (const uint16_t *) src + off;
            for (int64_t i = 0; i < m; i++) {
                d[i] = zi_f16_to_f32 (s[i]);
            }
            break;
        }
        case ZI_DT_BF16: {
            const uint16_t *s = (const uint16_t *) src + off;
            for (int64_t i = 0; i < m; i++) {
                d[i] = zi_bf16_to_f32 (s[i]);
            }
            break;
        }
        default:
            break;
    }
}

//  Load m elements of an integer or bool source as int64 (uint64 keeps its
//  bits; the store side knows to read them back as unsigned).
static void
s_load_i64 (int64_t *d, const void *src, zi_dtype_t st, int64_t off, int64_t m)
{
#define S_LOAD(DT, T)                                    \
    case DT: {                                           \
        const T *s = (const T *) src + off;              \
        for (int64_t i = 0; i < m; i++) {                \
            d[i] = (int64_t) s[i];                       \
        }                                                \
        break;                                           \
    }
    switch (st) {
        S_LOAD (ZI_DT_I8, int8_t)
        S_LOAD (ZI_DT_I16, int16_t)
        S_LOAD (ZI_DT_I32, int32_t)
        S_LOAD (ZI_DT_I64, int64_t)
        S_LOAD (ZI_DT_U8, uint8_t)
        S_LOAD (ZI_DT_U16, uint16_t)
        S_LOAD (ZI_DT_U32, uint32_t)
        S_LOAD (ZI_DT_U64, uint64_t)
        case ZI_DT_BOOL: {
            const uint8_t *s = (const uint8_t *) src + off;
            for (int64_t i = 0; i < m; i++) {
                d[i] = s[i] != 0;
            }
            break;
        }
        default:
            break;
    }
#undef S_LOAD
}

//  Store m doubles into dst (from element off) as dtype dt.
static void
s_store_f64 (void *dst, zi_dtype_t dt, int64_t off, const double *s, int64_t m)
{
#define S_STORE(DT, T, EXPR)                             \
    case DT: {                                           \
        T *d = (T *) dst + off;                          \
        for (int64_t i = 0; i < m; i++) {                \
            d[i] = (T) (EXPR);                           \
        }                                                \
        break;                                           \
    }
    switch (dt) {
        S_STORE (ZI_DT_F32, float, s[i])
        S_STORE (ZI_DT_F64, double, s[i])
        S_STORE (ZI_DT_F16, uint16_t, zi_f32_to_f16 ((float) s[i]))
        S_STORE (ZI_DT_BF16, uint16_t, s_f32_to_bf16 ((float) s[i]))
        S_STORE (ZI_DT_BOOL, uint8_t, s[i] != 0)
        S_STORE (ZI_DT_I8, int8_t, (uint64_t) s_f64_to_i64 (s[i]))
        S_STORE (ZI_DT_I16, int16_t, (uint64_t) s_f64_to_i64 (s[i]))
        S_STORE (ZI_DT_I32, int32_t, (uint64_t) s_f64_to_i64 (s[i]))
        S_STORE (ZI_DT_I64, int64_t, s_f64_to_i64 (s[i]))
        S_STORE (ZI_DT_U8, uint8_t, (uint64_t) s_f64_to_i64 (s[i]))
        S_STORE (ZI_DT_U16, uint16_t, (uint64_t) s_f64_to_i64 (s[i]))
        S_STORE (ZI_DT_U32, uint32_t, (uint64_t) s_f64_to_i64 (s[i]))
        S_STORE (ZI_DT_U64, uint64_t, s_f64_to_u64 (s[i]))
        default:
            break;
    }
}

//  Store m int64s (uint64 bits when is_u64) into dst as dtype dt. Integer
//  targets wrap modulo 2^bits, as numpy's astype does.
static void
s_store_i64 (void *dst, zi_dtype_t dt, int64_t off, const int64_t *s,
             int64_t m, bool is_u64)
{
    if (is_u64 && (dt == ZI_DT_F32 || dt == ZI_DT_F64 || dt == ZI_DT_F16
                   || dt == ZI_DT_BF16)) {
        switch (dt) {
            S_STORE (ZI_DT_F32, float, (uint64_t) s[i])
            S_STORE (ZI_DT_F64, double, (uint64_t) s[i])
            S_STORE (ZI_DT_F16, uint16_t, zi_f32_to_f16 ((float) (uint64_t) s[i]))
            S_STORE (ZI_DT_BF16, uint16_t, s_f32_to_bf16 ((float) (uint64_t) s[i]))
            default:
                break;
        }
        return;
    }
    switch (dt) {
        S_STORE (ZI_DT_F32, float, s[i])
        S_STORE (ZI_DT_F64, double, s[i])
        S_STORE (ZI_DT_F16, uint16_t, zi_f32_to_f16 ((float) s[i]))
        S_STORE (ZI_DT_BF16, uint16_t, s_f32_to_bf16 ((float) s[i]))
        S_STORE (ZI_DT_BOOL, uint8_t, s[i] != 0)
        S_STORE (ZI_DT_I8, int8_t, (uint64_t) s[i])
        S_STORE (ZI_DT_I16, int16_t, (uint64_t) s[i])
        S_STORE (ZI_DT_I32, int32_t, (uint64_t) s[i])
        S_STORE (ZI_DT_I64, int64_t, s[i])
        S_STORE (ZI_DT_U8, uint8_t, (uint64_t) s[i])
        S_STORE (ZI_DT_U16, uint16_t, (uint64_t) s[i])
        S_STORE (ZI_DT_U32, uint32_t, (uint64_t) s[i])
        S_STORE (ZI_DT_U64, uint64_t, (uint64_t) s[i])
        default:
            break;
    }
#undef S_STORE
}

//  Convert n elements of dtype st at src into dtype dt at dst. Both dtypes
//  must be valid (zi_dtype_size > 0). Goes through small on-stack chunks of
//  double (float sources) or int64 (integer sources), so each pass is a
//  simple loop with the dtype switch outside it.
#define S_CHUNK 256
static void
s_convert (void *dst, zi_dtype_t dt, const void *src, zi_dtype_t st, int64_t n)
{
    if (dt == st) {
        memcpy (dst, src, (size_t) n * zi_dtype_size (dt));
        return;
    }
    //  The commonest casts in exported graphs get a direct loop.
    if (st == ZI_DT_F32 && dt == ZI_DT_F16) {
        const float *s = (const float *) src;
        uint16_t *d = (uint16_t *) dst;
        for (int64_t i = 0; i < n; i++) {
            d[i] = zi_f32_to_f16 (s[i]);
        }
        return;
    }
    if (st == ZI_DT_I64 && dt == ZI_DT_F32) {
        const int64_t *s = (const int64_t *) src;
        float *d = (float *) dst;
        for (int64_t i = 0; i < n; i++) {
            d[i] = (float) s[i];
        }
        return;
    }
    bool src_float = s_in (S_M_FLOAT, st);
    double fb[S_CHUNK];
    int64_t ib[S_CHUNK];
    for (int64_t base = 0; base < n; base += S_CHUNK) {
        int64_t m = n - base < S_CHUNK ? n - base : S_CHUNK;
        if (src_float) {
            s_load_f64 (fb, src, st, base, m);
            s_store_f64 (dst, dt, base, fb, m);
        }
        else {
            s_load_i64 (ib, src, st, base, m);
            s_store_i64 (dst, dt, base, ib, m, st == ZI_DT_U64);
        }
    }
}

//  Allocate a contiguous scratch copy of t converted to dtype `to`, described
//  by *view. Returns the buffer to free, or NULL (too large / no memory).
static void *
s_scratch_convert (const zi_tensor_t *t, zi_dtype_t to, zi_tensor_t *view)
{
    size_t nbytes;
    if (zi_shape_nbytes (to, t->rank, t->ne, &nbytes)) {
        return NULL;
    }
    void *buf = malloc (nbytes ? nbytes : 1);
    if (!buf) {
        return NULL;
    }
    if (zi_tensor_init_view (view, to, t->rank, t->ne, buf, nbytes)) {
        free (buf);
        return NULL;
    }
    s_convert (buf, to, t->data, t->dtype, zi_tensor_count (t));
    return buf;
}

//  Allocate an uninitialised scratch tensor with t's shape and dtype `to`.
static void *
s_scratch_like (const zi_tensor_t *t, zi_dtype_t to, zi_tensor_t *view)
{
    size_t nbytes;
    if (zi_shape_nbytes (to, t->rank, t->ne, &nbytes)) {
        return NULL;
    }
    void *buf = malloc (nbytes ? nbytes : 1);
    if (!buf) {
        return NULL;
    }
    if (zi_tensor_init_view (view, to, t->rank, t->ne, buf, nbytes)) {
        free (buf);
        return NULL;
    }
    return buf;
}

//  Run `core` with every float16 / bfloat16 input and output replaced by a
//  float32 scratch copy; converts the outputs back afterwards. Without half
//  tensors it simply calls core.
static int
s_run_promoted (zi_kctx_t *ctx, int (*core) (zi_kctx_t *, int), int code)
{
    bool any = false;
    for (int i = 0; i < ctx->n_in; i++) {
        any = any || (ctx->in[i] && s_in (S_M_HALF, ctx->in[i]->dtype));
    }
    for (int i = 0; i < ctx->n_out; i++) {
        any = any || (ctx->out[i] && s_in (S_M_HALF, ctx->out[i]->dtype));
    }
    if (!any) {
        return core (ctx, code);
    }
    int nt = ctx->n_in + ctx->n_out;
    zi_tensor_t *tmp = (zi_tensor_t *) calloc ((size_t) nt, sizeof *tmp);
    void **bufs = (void **) calloc ((size_t) nt, sizeof *bufs);
    const zi_tensor_t **pin = (const zi_tensor_t **) calloc (
        (size_t) ctx->n_in + 1, sizeof *pin);
    zi_tensor_t **pout = (zi_tensor_t **) calloc ((size_t) ctx->n_out + 1,
                                                  sizeof *pout);
    int rc = ZI_OK;
    if (!tmp || !bufs || !pin || !pout) {
        rc = zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory for float16 scratch");
        goto done;
    }
    for (int i = 0; i < ctx->n_in && rc == ZI_OK; i++) {
        const zi_tensor_t *t = ctx->in[i];
        pin[i] = t;
        if (t && s_in (S_M_HALF, t->dtype)) {
            bufs[i] = s_scratch_convert (t, ZI_DT_F32, &tmp[i]);
            if (!bufs[i]) {
                rc = zi_op_fail (ctx, ZI_ERR_NOMEM,
                                 "out of memory for float16 scratch");
            }
            pin[i] = &tmp[i];
        }
    }
    for (int i = 0; i < ctx->n_out && rc == ZI_OK; i++) {
        zi_tensor_t *t = ctx->out[i];
        int k = ctx->n_in + i;
        pout[i] = t;
        if (t && s_in (S_M_HALF, t->dtype)) {
            bufs[k] = s_scratch_like (t, ZI_DT_F32, &tmp[k]);
            if (!bufs[k]) {
                rc = zi_op_fail (ctx, ZI_ERR_NOMEM,
                                 "out of memory for float16 scratch");
            }
            pout[i] = &tmp[k];
        }
    }
    if (rc == ZI_OK) {
        zi_kctx_t c2 = *ctx;
        c2.in = pin;
        c2.out = pout;
        rc = core (&c2, code);
    }
    for (int i = 0; i < ctx->n_out && rc == ZI_OK; i++) {
        zi_tensor_t *t = ctx->out[i];
        if (t && pout[i] != t) {
            s_convert (t->data, t->dtype, pout[i]->data, ZI_DT_F32,
                       zi_tensor_count (t));
        }
    }
done:
    if (bufs) {
        for (int i = 0; i < nt; i++) {
            free (bufs[i]);
        }
    }
    free (bufs);
    free (tmp);
    free (pin);
    free (pout);
    return rc;
}

//  Broadcast plans ------------------------------------------------------------

#define S_MAXK 3    //  operands of one plan (Where has three)

typedef struct {
    int rank;                           //  >= 1 after coalescing
    int64_t ne[ZI_MAX_RANK];            //  output dims, outermost first
    int64_t st[S_MAXK][ZI_MAX_RANK];    //  element strides, 0 = broadcast
} s_plan_t;

typedef struct {
    void *o;                    //  output row (contiguous)
    const void *in[S_MAXK];     //  first element of each operand's row
    int64_t s[S_MAXK];          //  inner stride of each operand: 0 or 1
    int64_t n;                  //  row length
} s_row_t;

typedef void (*s_row_fn) (const s_row_t *row, const void *arg);

//  Map out's shape onto k inputs. Fails with ZI_ERR_SHAPE when an input does
//  not broadcast to out (a caller that skipped infer).
static int
s_plan_make (s_plan_t *p, const zi_tensor_t *out, int k,
             const zi_tensor_t *const *in)
{
    int r = out->rank;
    int n = 0;
    for (int j = 0; j < k; j++) {
        if (in[j]->rank > r) {
            return ZI_ERR_SHAPE;
        }
    }
    for (int d = 0; d < r; d++) {
        int64_t od = out->ne[d];
        for (int j = 0; j < k; j++) {
            const zi_tensor_t *t = in[j];
            int td = d - (r - t->rank);
            int64_t s = 0;
            if (td >= 0) {
                if (t->ne[td] == od) {
                    //  contiguous element stride of dim td; the product is
                    //  bounded by t's element count, already checked.
                    s = 1;
                    for (int e = td + 1; e < t->rank; e++) {
                        s *= t->ne[e];
                    }
                }
                else if (t->ne[td] != 1) {
                    return ZI_ERR_SHAPE;
                }
            }
            p->st[j][n] = od == 1 ? 0 : s;
        }
        if (od != 1) {
            p->ne[n++] = od;
        }
    }
    //  Merge dim d into the kept dim before it when every operand steps
    //  through the pair as through one dimension (stride 0 stays 0).
    int m = 0;
    for (int d = 0; d < n; d++) {
        if (m > 0) {
            bool merge = true;
            for (int j = 0; j < k; j++) {
                merge = merge && p->st[j][m - 1] == p->st[j][d] * p->ne[d];
            }
            if (merge) {
                p->ne[m - 1] *= p->ne[d];
                for (int j = 0; j < k; j++) {
                    p->st[j][m - 1] = p->st[j][d];
                }
                continue;
            }
        }
        p->ne[m] = p->ne[d];
        for (int j = 0; j < k; j++) {
            p->st[j][m] = p->st[j][d];
        }
        m++;
    }
    if (m == 0) {
        p->ne[0] = 1;
        for (int j = 0; j < k; j++) {
            p->st[j][0] = 0;
        }
        m = 1;
    }
    p->rank = m;
    return ZI_OK;
}

//  Walk the plan row by row, calling fn on each row. out is contiguous with
//  element size osz; operand j has element size isz[j].
static void
s_plan_run (const s_plan_t *p, int k, void *out, size_t osz,
            const void *const *in, const size_t *isz, s_row_fn fn,
            const void *arg)
{
    int r = p->rank;
    int64_t rows = 1;
    for (int d = 0; d < r - 1; d++) {
        rows *= p->ne[d];
    }
    int64_t idx[ZI_MAX_RANK] = {0};
    int64_t off[S_MAXK] = {0};
    s_row_t row;
    row.n = p->ne[r - 1];
    for (int j = 0; j < k; j++) {
        row.s[j] = p->st[j][r - 1];
    }
    for (int64_t rr = 0; rr < rows; rr++) {
        row.o = (char *) out + (size_t) (rr * row.n) * osz;
        for (int j = 0; j < k; j++) {
            row.in[j] = (const char *) in[j] + (size_t) off[j] * isz[j];
        }
        fn (&row, arg);
        for (int d = r - 2; d >= 0; d--) {
            idx[d]++;
            for (int j = 0; j < k; j++) {
                off[j] += p->st[j][d];
            }
            if (idx[d] < p->ne[d]) {
                break;
            }
            for (int j = 0; j < k; j++) {
                off[j] -= p->st[j][d] * p->ne[d];
            }
            idx[d] = 0;
        }
    }
}

//  Apply a row kernel over k broadcast operands into out.
static int
s_apply (zi_kctx_t *ctx, s_row_fn fn, const void *arg, zi_tensor_t *out,
         int k, const zi_tensor_t *const *in)
{
    if (zi_tensor_count (out) == 0) {
        return ZI_OK;
    }
    if (!out->data) {
        return zi_op_fail (ctx, ZI_ERR_INVALID, "output has no storage");
    }
    s_plan_t p;
    if (s_plan_make (&p, out, k, in)) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "inputs do not broadcast to the output shape");
    }
    const void *src[S_MAXK];
    size_t isz[S_MAXK];
    for (int j = 0; j < k; j++) {
        if (!in[j]->data) {
            return zi_op_fail (ctx, ZI_ERR_INVALID, "input %d has no data", j);
        }
        src[j] = in[j]->data;
        isz[j] = zi_dtype_size (in[j]->dtype);
    }
    s_plan_run (&p, k, out->data, zi_dtype_size (out->dtype), src, isz, fn,
                arg);
    return ZI_OK;
}

//  Binary row kernels ---------------------------------------------------------

//  One kernel per (op, dtype): o = EXPR (x, y) with x from in[0], y from
//  in[1]; T_ / U_ name the element type and its wide unsigned type inside
//  EXPR. The four loops cover the four inner-stride pairs. No restrict: the
//  variadic ops accumulate in place (o == in[0]).
#define S_BIN_ROW(name, T, U, TO, ...)                                      \
    static void name (const s_row_t *r, const void *arg)                    \
    {                                                                       \
        typedef T T_;                                                       \
        typedef U U_;                                                       \
        (void) sizeof (T_);                                                 \
        (void) sizeof (U_);                                                 \
        (void) arg;                                                         \
        TO *o = (TO *) r->o;                                                \
        const T *a = (const T *) r->in[0];                                  \
        const T *b = (const T *) r->in[1];                                  \
        const int64_t n = r->n;                                             \
        if (r->s[0] && r->s[1]) {                                           \
            for (int64_t i = 0; i < n; i++) {                               \
                const T x = a[i], y = b[i];                                 \
                o[i] = (TO) (__VA_ARGS__);                                  \
            }                                                               \
        }                                                                   \
        else if (r->s[0]) {                                                 \
            const T y = b[0];                                               \
            for (int64_t i = 0; i < n; i++) {                               \
                const T x = a[i];                                           \
                o[i] = (TO) (__VA_ARGS__);                                  \
            }                                                               \
        }                                                                   \
        else if (r->s[1]) {                                                 \
            const T x = a[0];                                               \
            for (int64_t i = 0; i < n; i++) {                               \
                const T y = b[i];                                           \
                o[i] = (TO) (__VA_ARGS__);                                  \
            }                                                               \
        }                                                                   \
        else {                                                              \
            const T x = a[0], y = b[0];                                     \
            const TO v = (TO) (__VA_ARGS__);                                \
            for (int64_t i = 0; i < n; i++) {                               \
                o[i] = v;                                                   \
            }                                                               \
        }                                                                   \
    }

//  Type lists: (suffix, C type, wide unsigned type for wrapping arithmetic;
//  uint32_t for the narrow ones so that promotion never reaches signed int).
#define S_FLOATS(X, ...) \
    X (f32, float, float, __VA_ARGS__) X (f64, double, double, __VA_ARGS__)
#define S_SINTS(X, ...)                                                      \
    X (i8, int8_t, uint32_t, __VA_ARGS__) X (i16, int16_t, uint32_t, __VA_ARGS__) \
    X (i32, int32_t, uint32_t, __VA_ARGS__) X (i64, int64_t, uint64_t, __VA_ARGS__)
#define S_UINTS(X, ...)                                                       \
    X (u8, uint8_t, uint32_t, __VA_ARGS__) X (u16, uint16_t, uint32_t, __VA_ARGS__) \
    X (u32, uint32_t, uint32_t, __VA_ARGS__) X (u64, uint64_t, uint64_t, __VA_ARGS__)

#define S_DT_f32 ZI_DT_F32
#define S_DT_f64 ZI_DT_F64
#define S_DT_i8 ZI_DT_I8
#define S_DT_i16 ZI_DT_I16
#define S_DT_i32 ZI_DT_I32
#define S_DT_i64 ZI_DT_I64
#define S_DT_u8 ZI_DT_U8
#define S_DT_u16 ZI_DT_U16
#define S_DT_u32 ZI_DT_U32
#define S_DT_u64 ZI_DT_U64

#define S_KBIN(sfx, T, U, op, ...) \
    S_BIN_ROW (s_k_##op##_##sfx, T, U, T, __VA_ARGS__)
#define S_KCMP(sfx, T, U, op, ...) \
    S_BIN_ROW (s_k_##op##_##sfx, T, U, uint8_t, __VA_ARGS__)
#define S_PICK(sfx, T, U, op) \
    case S_DT_##sfx:          \
        return s_k_##op##_##sfx;

//  c ? a : b on the bits. GCC (with -ftrapping-math, the default) will not
//  if-convert "x < 0 ? x * y : x" because the multiply might trap, and a
//  loop with a branch is not vectorised; a select on bits has no branch.
static inline float
s_self (bool c, float a, float b)
{
    uint32_t ab, bb;
    memcpy (&ab, &a, sizeof ab);
    memcpy (&bb, &b, sizeof bb);
    const uint32_t m = 0u - (uint32_t) c;
    const uint32_t rb = (ab & m) | (bb & ~m);
    float r;
    memcpy (&r, &rb, sizeof r);
    return r;
}

static inline double
s_seld (bool c, double a, double b)
{
    uint64_t ab, bb;
    memcpy (&ab, &a, sizeof ab);
    memcpy (&bb, &b, sizeof bb);
    const uint64_t m = 0u - (uint64_t) c;
    const uint64_t rb = (ab & m) | (bb & ~m);
    double r;
    memcpy (&r, &rb, sizeof r);
    return r;
}

#define S_SEL(c, a, b) _Generic ((a), float: s_self, double: s_seld) (c, a, b)

//  Python-style modulo (result has the divisor's sign), for fmod = 0.
static inline float
s_pymodf (float x, float y)
{
    float r = fmodf (x, y);
    return (r != 0 && ((r < 0) != (y < 0))) ? r + y : r;
}

static inline double
s_pymod (double x, double y)
{
    double r = fmod (x, y);
    return (r != 0 && ((r < 0) != (y < 0))) ? r + y : r;
}

//  Integer power by squaring, wrapping modulo 2^64.
static inline uint64_t
s_upow (uint64_t x, uint64_t e)
{
    uint64_t r = 1;
    while (e) {
        if (e & 1) {
            r *= x;
        }
        x *= x;
        e >>= 1;
    }
    return r;
}

//  x ** e for a negative integer exponent: only +-1 have integer results;
//  everything else truncates to 0 (0 ** -n is undefined; we say 0).
static inline int64_t
s_ipow_neg (int64_t x, int64_t e)
{
    if (x == 1) {
        return 1;
    }
    if (x == -1) {
        return (e & 1) ? -1 : 1;
    }
    return 0;
}

S_FLOATS (S_KBIN, add, x + y)
S_SINTS (S_KBIN, add, (T_) ((U_) x + (U_) y))
S_UINTS (S_KBIN, add, (T_) ((U_) x + (U_) y))
S_FLOATS (S_KBIN, sub, x - y)
S_SINTS (S_KBIN, sub, (T_) ((U_) x - (U_) y))
S_UINTS (S_KBIN, sub, (T_) ((U_) x - (U_) y))
S_FLOATS (S_KBIN, mul, x * y)
S_SINTS (S_KBIN, mul, (T_) ((U_) x * (U_) y))
S_UINTS (S_KBIN, mul, (T_) ((U_) x * (U_) y))
S_FLOATS (S_KBIN, div, x / y)
S_SINTS (S_KBIN, div,
         y == 0 ? (T_) 0 : (y == -1 ? (T_) (0u - (U_) x) : (T_) (x / y)))
S_UINTS (S_KBIN, div, y == 0 ? (T_) 0 : (T_) (x / y))
S_BIN_ROW (s_k_mod_f32, float, float, float, s_pymodf (x, y))
S_BIN_ROW (s_k_mod_f64, double, double, double, s_pymod (x, y))
S_SINTS (S_KBIN, mod,
         (y == 0 || y == -1) ? (T_) 0
         : (x % y != 0 && ((x % y < 0) != (y < 0))) ? (T_) (x % y + y)
                                                    : (T_) (x % y))
S_UINTS (S_KBIN, mod, y == 0 ? (T_) 0 : (T_) (x % y))
S_BIN_ROW (s_k_fmod_f32, float, float, float, fmodf (x, y))
S_BIN_ROW (s_k_fmod_f64, double, double, double, fmod (x, y))
S_SINTS (S_KBIN, fmod, (y == 0 || y == -1) ? (T_) 0 : (T_) (x % y))
S_UINTS (S_KBIN, fmod, y == 0 ? (T_) 0 : (T_) (x % y))
S_BIN_ROW (s_k_pow_f32, float, float, float, powf (x, y))
S_BIN_ROW (s_k_pow_f64, double, double, double, pow (x, y))
S_SINTS (S_KBIN, pow,
         y < 0 ? (T_) s_ipow_neg (x, y)
               : (T_) s_upow ((uint64_t) (int64_t) x, (uint64_t) y))
S_UINTS (S_KBIN, pow, (T_) s_upow (x, y))
//  Max / Min propagate NaN like numpy's maximum / minimum.
S_FLOATS (S_KBIN, max, (x > y || x != x) ? x : y)
S_SINTS (S_KBIN, max, x > y ? x : y)
S_UINTS (S_KBIN, max, x > y ? x : y)
S_FLOATS (S_KBIN, min, (x < y || x != x) ? x : y)
S_SINTS (S_KBIN, min, x < y ? x : y)
S_UINTS (S_KBIN, min, x < y ? x : y)
S_UINTS (S_KBIN, shl, y >= 8 * sizeof (T_) ? (T_) 0 : (T_) ((uint64_t) x << y))
S_UINTS (S_KBIN, shr, y >= 8 * sizeof (T_) ? (T_) 0 : (T_) (x >> y))
S_FLOATS (S_KBIN, prelu, S_SEL (x < 0, x * y, x))
S_SINTS (S_KBIN, prelu, x < 0 ? (T_) ((U_) x * (U_) y) : x)
S_UINTS (S_KBIN, prelu, ((void) y, x))
S_FLOATS (S_KCMP, eq, x == y)
S_SINTS (S_KCMP, eq, x == y)
S_UINTS (S_KCMP, eq, x == y)
S_FLOATS (S_KCMP, lt, x < y)
S_SINTS (S_KCMP, lt, x < y)
S_UINTS (S_KCMP, lt, x < y)
S_FLOATS (S_KCMP, gt, x > y)
S_SINTS (S_KCMP, gt, x > y)
S_UINTS (S_KCMP, gt, x > y)
S_FLOATS (S_KCMP, le, x <= y)
S_SINTS (S_KCMP, le, x <= y)
S_UINTS (S_KCMP, le, x <= y)
S_FLOATS (S_KCMP, ge, x >= y)
S_SINTS (S_KCMP, ge, x >= y)
S_UINTS (S_KCMP, ge, x >= y)
//  bool tensors hold 0 / 1, but normalise anyway: data is untrusted.
S_BIN_ROW (s_k_eq_b, uint8_t, uint32_t, uint8_t, (x != 0) == (y != 0))
S_BIN_ROW (s_k_and_b, uint8_t, uint32_t, uint8_t, (x != 0) & (y != 0))
S_BIN_ROW (s_k_or_b, uint8_t, uint32_t, uint8_t, (x != 0) | (y != 0))
S_BIN_ROW (s_k_xor_b, uint8_t, uint32_t, uint8_t, (x != 0) ^ (y != 0))

typedef enum {
    S_B_ADD, S_B_SUB, S_B_MUL, S_B_DIV, S_B_MOD, S_B_FMOD, S_B_POW,
    S_B_MAX, S_B_MIN, S_B_SHL, S_B_SHR, S_B_PRELU,
    S_B_EQ, S_B_LT, S_B_GT, S_B_LE, S_B_GE, S_B_AND, S_B_OR, S_B_XOR,
    S_B_SUM, S_B_MEAN,      //  variadic only; computed with S_B_ADD
    S_B_BITSHIFT,           //  resolved to SHL / SHR from the attribute
} s_binop_t;

#define S_PICK_NUM(op)                    \
    switch (dt) {                         \
        S_FLOATS (S_PICK, op)             \
        S_SINTS (S_PICK, op)              \
        S_UINTS (S_PICK, op)              \
        default:                          \
            return NULL;                  \
    }

//  The row kernel of op for dtype dt, or NULL when not supported (half types
//  never reach here: they are promoted to float32 first).
static s_row_fn
s_bin_kernel (s_binop_t op, zi_dtype_t dt)
{
    switch (op) {
        case S_B_ADD: S_PICK_NUM (add)
        case S_B_SUB: S_PICK_NUM (sub)
        case S_B_MUL: S_PICK_NUM (mul)
        case S_B_DIV: S_PICK_NUM (div)
        case S_B_MOD: S_PICK_NUM (mod)
        case S_B_FMOD: S_PICK_NUM (fmod)
        case S_B_POW: S_PICK_NUM (pow)
        case S_B_MAX: S_PICK_NUM (max)
        case S_B_MIN: S_PICK_NUM (min)
        case S_B_PRELU: S_PICK_NUM (prelu)
        case S_B_LT: S_PICK_NUM (lt)
        case S_B_GT: S_PICK_NUM (gt)
        case S_B_LE: S_PICK_NUM (le)
        case S_B_GE: S_PICK_NUM (ge)
        case S_B_SHL:
            switch (dt) {
                S_UINTS (S_PICK, shl)
                default:
                    return NULL;
            }
        case S_B_SHR:
            switch (dt) {
                S_UINTS (S_PICK, shr)
                default:
                    return NULL;
            }
        case S_B_EQ:
            if (dt == ZI_DT_BOOL) {
                return s_k_eq_b;
            }
            S_PICK_NUM (eq)
        case S_B_AND:
            return dt == ZI_DT_BOOL ? s_k_and_b : NULL;
        case S_B_OR:
            return dt == ZI_DT_BOOL ? s_k_or_b : NULL;
        case S_B_XOR:
            return dt == ZI_DT_BOOL ? s_k_xor_b : NULL;
        default:
            return NULL;
    }
}

//  Copy (k = 1) and Where (k = 3) rows, by element size -----------------------

#define S_COPY_ROW(name, T)                                                 \
    static void name (const s_row_t *r, const void *arg)                    \
    {                                                                       \
        (void) arg;                                                         \
        T *o = (T *) r->o;                                                  \
        const T *a = (const T *) r->in[0];                                  \
        if (r->s[0]) {                                                      \
            memcpy (o, a, (size_t) r->n * sizeof (T));                      \
        }                                                                   \
        else {                                                              \
            const T v = a[0];                                               \
            for (int64_t i = 0; i < r->n; i++) {                            \
                o[i] = v;                                                   \
            }                                                               \
        }                                                                   \
    }
S_COPY_ROW (s_k_copy_1, uint8_t)
S_COPY_ROW (s_k_copy_2, uint16_t)
S_COPY_ROW (s_k_copy_4, uint32_t)
S_COPY_ROW (s_k_copy_8, uint64_t)

#define S_WHERE_ROW(name, T)                                                \
    static void name (const s_row_t *r, const void *arg)                    \
    {                                                                       \
        (void) arg;                                                         \
        T *o = (T *) r->o;                                                  \
        const uint8_t *c = (const uint8_t *) r->in[0];                      \
        const T *x = (const T *) r->in[1];                                  \
        const T *y = (const T *) r->in[2];                                  \
        const int64_t sc = r->s[0], sx = r->s[1], sy = r->s[2];             \
        if (sc && sx && sy) {                                               \
            /* both loads unconditional, so the loop can be vectorised */ \
            for (int64_t i = 0; i < r->n; i++) {                            \
                const T xv = x[i], yv = y[i];                               \
                o[i] = c[i] ? xv : yv;                                      \
            }                                                               \
        }                                                                   \
        else {                                                              \
            for (int64_t i = 0; i < r->n; i++) {                            \
                o[i] = c[i * sc] ? x[i * sx] : y[i * sy];                   \
            }                                                               \
        }                                                                   \
    }
S_WHERE_ROW (s_k_where_1, uint8_t)
S_WHERE_ROW (s_k_where_2, uint16_t)
S_WHERE_ROW (s_k_where_4, uint32_t)
S_WHERE_ROW (s_k_where_8, uint64_t)

static s_row_fn
s_copy_kernel (size_t esz)
{
    switch (esz) {
        case 1: return s_k_copy_1;
        case 2: return s_k_copy_2;
        case 4: return s_k_copy_4;
        case 8: return s_k_copy_8;
        default: return NULL;
    }
}

//  Binary ops: check / infer / run ---------------------------------------------

//  dtypes each binary op accepts (the union over opsets 7..18).
static unsigned
s_bin_mask (s_binop_t op)
{
    switch (op) {
        case S_B_EQ: return S_M_NUM | S_M_BOOL;
        case S_B_AND: case S_B_OR: case S_B_XOR: return S_M_BOOL;
        case S_B_BITSHIFT: case S_B_SHL: case S_B_SHR: return S_M_UINT;
        case S_B_MEAN: return S_M_FLOAT;
        default: return S_M_NUM;
    }
}

static bool
s_bin_is_compare (s_binop_t op)
{
    return op == S_B_EQ || op == S_B_LT || op == S_B_GT || op == S_B_LE
           || op == S_B_GE || op == S_B_AND || op == S_B_OR || op == S_B_XOR;
}

//  Opsets 1..6 broadcast only when the node says broadcast = 1, and then B
//  aligns with A at dimension `axis` (or at the right end when axis is
//  absent) instead of numpy's right-alignment. Both attributes must be ints.
static int
s_check_binary (const zi_node_t *node, char *err, size_t errlen)
{
    static const char *const names[] = {"broadcast", "axis"};
    for (int i = 0; i < 2; i++) {
        const zi_attr_t *a = zi_node_attr (node, names[i]);
        if (a && a->type != ZI_ATTR_INT) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "node '%s' (%s): attribute %s must be an int",
                            node->name, node->op_type, names[i]);
        }
    }
    return ZI_OK;
}

//  For a legacy (opset < 7) node with broadcast = 1 and an axis, return a
//  view of b (in *view) reshaped to a's rank with b's dims placed at axis
//  and 1 elsewhere, so numpy broadcasting gives the legacy result; else b.
//  NULL (with ctx->err set) when the axis does not fit.
static const zi_tensor_t *
s_legacy_b (zi_kctx_t *ctx, const zi_tensor_t *a, const zi_tensor_t *b,
            zi_tensor_t *view)
{
    const zi_attr_t *ax = zi_node_attr (ctx->node, "axis");
    if (zi_node_attr_int (ctx->node, "broadcast", 0) != 1 || !ax
        || ax->type != ZI_ATTR_INT) {
        return b;
    }
    int64_t axis = ax->i < 0 ? ax->i + a->rank : ax->i;
    if (axis < 0 || axis > a->rank - b->rank) {
        zi_op_fail (ctx, ZI_ERR_SHAPE, "legacy broadcast axis %lld does not "
                    "fit B (rank %d) into A (rank %d)", (long long) ax->i,
                    b->rank, a->rank);
        return NULL;
    }
    int64_t shape[ZI_MAX_RANK];
    for (int d = 0; d < a->rank; d++) {
        shape[d] = 1;
    }
    for (int d = 0; d < b->rank; d++) {
        shape[axis + d] = b->ne[d];
    }
    memset (view, 0, sizeof *view);
    if (zi_tensor_set_shape (view, b->dtype, a->rank, shape)
        || view->nbytes != b->nbytes) {
        zi_op_fail (ctx, ZI_ERR_SHAPE, "legacy broadcast reshape failed");
        return NULL;
    }
    view->data = b->data;
    return view;
}

static int
s_check_mod (const zi_node_t *node, char *err, size_t errlen)
{
    const zi_attr_t *a = zi_node_attr (node, "fmod");
    if (a && (a->type != ZI_ATTR_INT || (a->i != 0 && a->i != 1))) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "node '%s' (Mod): attribute fmod must be the int 0 or 1",
                        node->name);
    }
    return ZI_OK;
}

static int
s_check_bitshift (const zi_node_t *node, char *err, size_t errlen)
{
    const zi_attr_t *a = zi_node_attr (node, "direction");
    if (!a || a->type != ZI_ATTR_STRING
        || (strcmp (a->s, "LEFT") != 0 && strcmp (a->s, "RIGHT") != 0)) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "node '%s' (BitShift): attribute direction must be "
                        "\"LEFT\" or \"RIGHT\"",
                        node->name);
    }
    return ZI_OK;
}

//  Broadcast the shapes of in[first .. first+k-1] into rank/shape.
static int
s_infer_broadcast (zi_kctx_t *ctx, int first, int k, int *rank,
                   int64_t *shape)
{
    const zi_tensor_t *t0 = ctx->in[first];
    *rank = t0->rank;
    memcpy (shape, t0->ne, sizeof (int64_t) * (size_t) t0->rank);
    for (int i = first + 1; i < first + k; i++) {
        const zi_tensor_t *t = ctx->in[i];
        int64_t tmp[ZI_MAX_RANK];
        int r;
        if (zi_broadcast_shape (*rank, shape, t->rank, t->ne, &r, tmp)) {
            char b1[96], b2[96];
            zi_shape_str (*rank, shape, b1, sizeof b1);
            return zi_op_fail (ctx, ZI_ERR_SHAPE,
                               "shapes %s and %s (input %d) do not broadcast",
                               b1, s_shape (t, b2, sizeof b2), i);
        }
        *rank = r;
        memcpy (shape, tmp, sizeof (int64_t) * (size_t) r);
    }
    return ZI_OK;
}

static int
s_need_inputs (zi_kctx_t *ctx, int k)
{
    if (ctx->n_in < k || ctx->n_out < 1 || !ctx->out[0]) {
        return zi_op_fail (ctx, ZI_ERR_MALFORMED, "missing inputs or output");
    }
    for (int i = 0; i < k; i++) {
        if (!ctx->in[i]) {
            return zi_op_fail (ctx, ZI_ERR_MALFORMED, "input %d is missing", i);
        }
    }
    return ZI_OK;
}

static int
s_infer_binary (zi_kctx_t *ctx, s_binop_t op)
{
    int rc = s_need_inputs (ctx, 2);
    if (rc) {
        return rc;
    }
    zi_tensor_t bview;
    const zi_tensor_t *a = ctx->in[0];
    const zi_tensor_t *b = s_legacy_b (ctx, a, ctx->in[1], &bview);
    if (!b) {
        return ZI_ERR_SHAPE;
    }
    unsigned mask = s_bin_mask (op);
    if (!s_in (mask, a->dtype)) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "dtype %s is not supported",
                           zi_dtype_name (a->dtype));
    }
    if (op == S_B_POW ? !s_in (S_M_NUM, b->dtype) : b->dtype != a->dtype) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "input dtypes %s and %s do not match",
                           zi_dtype_name (a->dtype), zi_dtype_name (b->dtype));
    }
    int r;
    int64_t shape[ZI_MAX_RANK];
    if (zi_broadcast_shape (a->rank, a->ne, b->rank, b->ne, &r, shape)) {
        char b1[96], b2[96];
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "shapes %s and %s do not broadcast",
                           s_shape (a, b1, sizeof b1), s_shape (b, b2, sizeof b2));
    }
    if (op == S_B_PRELU) {
        //  slope broadcasts to X, never the other way (unidirectional)
        bool same = r == a->rank;
        for (int i = 0; same && i < r; i++) {
            same = shape[i] == a->ne[i];
        }
        if (!same) {
            char b1[96], b2[96];
            return zi_op_fail (ctx, ZI_ERR_SHAPE,
                               "slope %s does not broadcast to X %s",
                               s_shape (b, b1, sizeof b1),
                               s_shape (a, b2, sizeof b2));
        }
    }
    zi_dtype_t odt = s_bin_is_compare (op) ? ZI_DT_BOOL : a->dtype;
    rc = zi_tensor_set_shape (ctx->out[0], odt, r, shape);
    if (rc) {
        return zi_op_fail (ctx, rc, "output is too large");
    }
    return ZI_OK;
}

//  Read a one-element tensor as double (any numeric dtype).
static bool
s_scalar_f64 (const zi_tensor_t *t, double *v)
{
    if (!t || !t->data || zi_tensor_count (t) != 1 || !s_in (S_M_NUM, t->dtype)) {
        return false;
    }
    s_convert (v, ZI_DT_F64, t->data, t->dtype, 1);
    return true;
}

//  Pow: the base's dtype is the output's; the exponent may be any numeric.
static int
s_run_pow (zi_kctx_t *ctx)
{
    zi_tensor_t bview;
    const zi_tensor_t *a = ctx->in[0];
    const zi_tensor_t *b = s_legacy_b (ctx, a, ctx->in[1], &bview);
    if (!b) {
        return ZI_ERR_SHAPE;
    }
    zi_tensor_t *out = ctx->out[0];
    if (zi_tensor_count (out) == 0) {
        return ZI_OK;
    }
    bool fbase = a->dtype == ZI_DT_F32 || a->dtype == ZI_DT_F64;
    double e;
    if (fbase && s_scalar_f64 (b, &e) && e == 2.0) {
        //  x ** 2 (LayerNorm / variance graphs): x * x is exact and what
        //  powf returns, without the libm call.
        const zi_tensor_t *ops[2] = {a, a};
        return s_apply (ctx, s_bin_kernel (S_B_MUL, a->dtype), NULL, out, 2,
                        ops);
    }
    if (a->dtype == b->dtype) {
        s_row_fn fn = s_bin_kernel (S_B_POW, a->dtype);
        if (!fn) {
            return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED,
                               "dtype %s is not supported",
                               zi_dtype_name (a->dtype));
        }
        const zi_tensor_t *ops[2] = {a, b};
        return s_apply (ctx, fn, NULL, out, 2, ops);
    }
    int rc;
    zi_tensor_t ta, tb, to;
    if (fbase) {
        //  float base, other exponent: convert the exponent to the base type
        void *bb = s_scratch_convert (b, a->dtype, &tb);
        if (!bb) {
            return zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
        }
        const zi_tensor_t *ops[2] = {a, &tb};
        rc = s_apply (ctx, s_bin_kernel (S_B_POW, a->dtype), NULL, out, 2, ops);
        free (bb);
        return rc;
    }
    //  integer base with a float or other-integer exponent: compute in
    //  double, truncate into the base's dtype.
    void *ba = s_scratch_convert (a, ZI_DT_F64, &ta);
    void *bb = s_scratch_convert (b, ZI_DT_F64, &tb);
    void *bo = s_scratch_like (out, ZI_DT_F64, &to);
    if (!ba || !bb || !bo) {
        rc = zi_op_fail (ctx, ZI_ERR_NOMEM, "out of memory");
    }
    else {
        const zi_tensor_t *ops[2] = {&ta, &tb};
        rc = s_apply (ctx, s_k_pow_f64, NULL, &to, 2, ops);
        if (rc == ZI_OK) {
            s_convert (out->data, out->dtype, bo, ZI_DT_F64,
                       zi_tensor_count (out));
        }
    }
    free (ba);
    free (bb);
    free (bo);
    return rc;
}

static int
s_run_binary_core (zi_kctx_t *ctx, int code)
{
    s_binop_t op = (s_binop_t) code;
    int rc = s_need_inputs (ctx, 2);
    if (rc) {
        return rc;
    }
    if (op == S_B_POW) {
        return s_run_pow (ctx);
    }
    if (op == S_B_MOD && zi_node_attr_int (ctx->node, "fmod", 0) == 1) {
        op = S_B_FMOD;
    }
    if (op == S_B_BITSHIFT) {
        const char *dir = zi_node_attr_string (ctx->node, "direction", "");
        op = strcmp (dir, "RIGHT") == 0 ? S_B_SHR : S_B_SHL;
    }
    zi_tensor_t bview;
    const zi_tensor_t *a = ctx->in[0];
    const zi_tensor_t *b = s_legacy_b (ctx, a, ctx->in[1], &bview);
    if (!b) {
        return ZI_ERR_SHAPE;
    }
    s_row_fn fn = s_bin_kernel (op, a->dtype);
    if (!fn || a->dtype != b->dtype) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED,
                           "dtypes %s, %s are not supported",
                           zi_dtype_name (a->dtype), zi_dtype_name (b->dtype));
    }
    const zi_tensor_t *ops[2] = {a, b};
    return s_apply (ctx, fn, NULL, ctx->out[0], 2, ops);
}

#define S_BIN_OP(Name, code)                                         \
    static int s_infer_##Name (zi_kctx_t *ctx)                       \
    {                                                                \
        return s_infer_binary (ctx, code);                           \
    }                                                                \
    static int s_run_##Name (zi_kctx_t *ctx)                         \
    {                                                                \
        return s_run_promoted (ctx, s_run_binary_core, code);        \
    }

S_BIN_OP (Add, S_B_ADD)
S_BIN_OP (Sub, S_B_SUB)
S_BIN_OP (Mul, S_B_MUL)
S_BIN_OP (Div, S_B_DIV)
S_BIN_OP (Mod, S_B_MOD)
S_BIN_OP (Pow, S_B_POW)
S_BIN_OP (BitShift, S_B_BITSHIFT)
S_BIN_OP (PRelu, S_B_PRELU)
S_BIN_OP (Equal, S_B_EQ)
S_BIN_OP (Less, S_B_LT)
S_BIN_OP (Greater, S_B_GT)
S_BIN_OP (LessOrEqual, S_B_LE)
S_BIN_OP (GreaterOrEqual, S_B_GE)
S_BIN_OP (And, S_B_AND)
S_BIN_OP (Or, S_B_OR)
S_BIN_OP (Xor, S_B_XOR)

//  Variadic Sum / Mean / Max / Min -------------------------------------------

static int
s_infer_variadic (zi_kctx_t *ctx, s_binop_t op)
{
    int n = ctx->n_in;
    int rc = s_need_inputs (ctx, n);
    if (rc) {
        return rc;
    }
    if (n < 1) {
        return zi_op_fail (ctx, ZI_ERR_MALFORMED, "needs at least one input");
    }
    zi_dtype_t dt = ctx->in[0]->dtype;
    if (!s_in (s_bin_mask (op), dt)) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "dtype %s is not supported",
                           zi_dtype_name (dt));
    }
    for (int i = 1; i < n; i++) {
        if (ctx->in[i]->dtype != dt) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE,
                               "input %d has dtype %s, input 0 %s", i,
                               zi_dtype_name (ctx->in[i]->dtype),
                               zi_dtype_name (dt));
        }
    }
    int r;
    int64_t shape[ZI_MAX_RANK];
    if ((rc = s_infer_broadcast (ctx, 0, n, &r, shape))) {
        return rc;
    }
    rc = zi_tensor_set_shape (ctx->out[0], dt, r, shape);
    if (rc) {
        return zi_op_fail (ctx, rc, "output is too large");
    }
    return ZI_OK;
}

static bool
s_same_shape (int r, const int64_t *shape, const zi_tensor_t *t)
{
    if (r != t->rank) {
        return false;
    }
    for (int i = 0; i < r; i++) {
        if (shape[i] != t->ne[i]) {
            return false;
        }
    }
    return true;
}

static int
s_run_variadic_core (zi_kctx_t *ctx, int code)
{
    s_binop_t op = (s_binop_t) code;
    int n = ctx->n_in;
    int rc = s_need_inputs (ctx, n);
    if (rc) {
        return rc;
    }
    zi_tensor_t *out = ctx->out[0];
    if (n < 1 || zi_tensor_count (out) == 0) {
        return ZI_OK;
    }
    zi_dtype_t dt = ctx->in[0]->dtype;
    s_row_fn fn = s_bin_kernel (op == S_B_SUM || op == S_B_MEAN ? S_B_ADD : op,
                                dt);
    if (!fn || dt != out->dtype) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "dtype %s is not supported",
                           zi_dtype_name (dt));
    }
    int first = 1;
    int64_t shape01[ZI_MAX_RANK];
    int r01 = 0;
    if (n >= 2
        && zi_broadcast_shape (ctx->in[0]->rank, ctx->in[0]->ne,
                               ctx->in[1]->rank, ctx->in[1]->ne, &r01, shape01)
               == ZI_OK
        && s_same_shape (r01, shape01, out)) {
        //  out = in0 op in1 directly, saving a pass over out
        const zi_tensor_t *ops[2] = {ctx->in[0], ctx->in[1]};
        rc = s_apply (ctx, fn, NULL, out, 2, ops);
        first = 2;
    }
    else {
        const zi_tensor_t *ops[1] = {ctx->in[0]};
        rc = s_apply (ctx, s_copy_kernel (zi_dtype_size (dt)), NULL, out, 1,
                      ops);
    }
    for (int i = first; i < n && rc == ZI_OK; i++) {
        if (ctx->in[i]->dtype != dt) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE, "input dtypes differ");
        }
        const zi_tensor_t *ops[2] = {out, ctx->in[i]};
        rc = s_apply (ctx, fn, NULL, out, 2, ops);
    }
    if (rc == ZI_OK && op == S_B_MEAN) {
        int64_t cnt = zi_tensor_count (out);
        if (dt == ZI_DT_F32) {
            float *o = (float *) out->data;
            const float dn = (float) n;
            for (int64_t i = 0; i < cnt; i++) {
                o[i] /= dn;
            }
        }
        else if (dt == ZI_DT_F64) {
            double *o = (double *) out->data;
            const double dn = (double) n;
            for (int64_t i = 0; i < cnt; i++) {
                o[i] /= dn;
            }
        }
    }
    return rc;
}

#define S_VAR_OP(Name, code)                                         \
    static int s_infer_##Name (zi_kctx_t *ctx)                       \
    {                                                                \
        return s_infer_variadic (ctx, code);                         \
    }                                                                \
    static int s_run_##Name (zi_kctx_t *ctx)                         \
    {                                                                \
        return s_run_promoted (ctx, s_run_variadic_core, code);      \
    }

S_VAR_OP (Sum, S_B_SUM)
S_VAR_OP (Mean, S_B_MEAN)
S_VAR_OP (Max, S_B_MAX)
S_VAR_OP (Min, S_B_MIN)

//  Where ----------------------------------------------------------------------

static int
s_infer_where (zi_kctx_t *ctx)
{
    int rc = s_need_inputs (ctx, 3);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *c = ctx->in[0], *x = ctx->in[1], *y = ctx->in[2];
    if (c->dtype != ZI_DT_BOOL) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "condition has dtype %s, not bool",
                           zi_dtype_name (c->dtype));
    }
    if (x->dtype != y->dtype || zi_dtype_size (x->dtype) == 0) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE,
                           "X (%s) and Y (%s) need the same numeric dtype",
                           zi_dtype_name (x->dtype), zi_dtype_name (y->dtype));
    }
    int r;
    int64_t shape[ZI_MAX_RANK];
    if ((rc = s_infer_broadcast (ctx, 0, 3, &r, shape))) {
        return rc;
    }
    rc = zi_tensor_set_shape (ctx->out[0], x->dtype, r, shape);
    if (rc) {
        return zi_op_fail (ctx, rc, "output is too large");
    }
    return ZI_OK;
}

static int
s_run_where (zi_kctx_t *ctx)
{
    int rc = s_need_inputs (ctx, 3);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[1];
    s_row_fn fn = NULL;
    switch (zi_dtype_size (x->dtype)) {
        case 1: fn = s_k_where_1; break;
        case 2: fn = s_k_where_2; break;
        case 4: fn = s_k_where_4; break;
        case 8: fn = s_k_where_8; break;
        default: break;
    }
    if (!fn || ctx->in[0]->dtype != ZI_DT_BOOL || ctx->in[2]->dtype != x->dtype
        || ctx->out[0]->dtype != x->dtype) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "dtypes are not supported");
    }
    return s_apply (ctx, fn, NULL, ctx->out[0], 3, ctx->in);
}

//  Unary maths and activations --------------------------------------------------

typedef enum {
    S_U_ABS, S_U_NEG, S_U_SIGN, S_U_RELU,   //  these four also on integers
    S_U_SQRT, S_U_EXP, S_U_LOG, S_U_RECIP, S_U_FLOOR, S_U_CEIL, S_U_ROUND,
    S_U_SIN, S_U_COS, S_U_TAN, S_U_ASIN, S_U_ACOS, S_U_ATAN, S_U_SINH,
    S_U_COSH, S_U_ASINH, S_U_ACOSH, S_U_ATANH, S_U_ERF,
    S_U_LEAKY, S_U_SIGMOID, S_U_HSIGMOID, S_U_HSWISH, S_U_TANH, S_U_ELU,
    S_U_SELU, S_U_CELU, S_U_GELU, S_U_GELU_TANH, S_U_SOFTPLUS, S_U_SOFTSIGN,
    S_U_THRELU, S_U_SHRINK, S_U_MISH,
} s_unop_t;

typedef struct {
    float alpha, beta, gamma;
} s_uparams_t;

//  Vectorisable float32 exp / tanh / sigmoid ----------------------------------
//
//  libm's expf / tanhf calls stop a loop from being vectorised and cost
//  5-20 ns each; these are plain arithmetic. Two habits keep GCC (which has
//  -ftrapping-math on) from splitting the loop into branches: the clamp
//  bound is read from a volatile at run time, so the clamped path is not
//  constant-folded into a separate branch, and selects are done on bits.

static volatile const float s_exp_clamp = 88.3762626647949f;

//  e^x for |x| clamped to hi (s_exp_clamp): Cephes' range reduction and
//  degree-6 polynomial, within 1.5 ulp of exp (checked against double exp
//  over [-87, 87]). Huge x gives a huge finite value and very negative x
//  gives 0 instead of a denormal: only for callers that saturate anyway.
//  NaN stays NaN (no float -> int conversion: 2^n comes from the bits of
//  the rounding constant).
static inline float
s_expf_sat (float x, float hi)
{
    x = x > hi ? hi : x;
    x = x < -hi ? -hi : x;
    const float t = x * 1.44269504088896341f + 12582912.0f;  //  1.5 * 2^23
    const float fx = t - 12582912.0f;       //  round (x / ln 2)
    const float r = x - fx * 0.693359375f + fx * 2.12194440e-4f;
    const float z = r * r;
    float y = 1.9875691500E-4f;
    y = y * r + 1.3981999507E-3f;
    y = y * r + 8.3334519073E-3f;
    y = y * r + 4.1665795894E-2f;
    y = y * r + 1.6666665459E-1f;
    y = y * r + 5.0000001201E-1f;
    y = y * z + r + 1.0f;
    uint32_t tb;
    memcpy (&tb, &t, sizeof tb);
    const uint32_t bits = (tb - 0x4B400000u + 127u) << 23;  //  2^fx
    float scale;
    memcpy (&scale, &bits, sizeof scale);
    return y * scale;
}

//  tanh, max relative error 3e-7: the odd Taylor series below |x| = 0.25
//  (where 1 - 2/(e^2x + 1) would cancel), the exp identity above; it
//  saturates to +-1 by itself.
static inline float
s_tanh_kf (float x, float hi)
{
    const float ax = fabsf (x), z = x * x;
    const float p = x * (1.0f + z * (-0.333333333f + z * (0.133333333f
                    + z * (-0.0539682540f + z * 0.0218694885f))));
    const float e = s_expf_sat (2.0f * ax, hi);
    const float t = copysignf (1.0f - 2.0f / (e + 1.0f), x);
    uint32_t pb, tb;
    memcpy (&pb, &p, sizeof pb);
    memcpy (&tb, &t, sizeof tb);
    const uint32_t m = 0u - (uint32_t) (ax < 0.25f);
    const uint32_t rb = (pb & m) | (tb & ~m);
    float r;
    memcpy (&r, &rb, sizeof r);
    return r;
}

static inline float
s_sigmoid_kf (float x, float hi)
{
    return 1.0f / (1.0f + s_expf_sat (-x, hi));
}

//  float64 keeps libm.
static inline double
s_tanh_k (double x, float hi)
{
    (void) hi;
    return tanh (x);
}

static inline double
s_sigmoid_k (double x, float hi)
{
    (void) hi;
    return 1.0 / (1.0 + exp (-x));
}

#define S_LOOP(...)                       \
    for (int64_t i = 0; i < n; i++) {     \
        __VA_ARGS__;                      \
    }                                     \
    break

#define S_MF32(fn) fn##f
#define S_MF64(fn) fn

//  o (n,) = op (x (n,)) for a float type T; MF names T's libm functions.
#define S_UNARY_FLOAT(name, T, MF)                                            \
    static void name (T *o, const T *x, int64_t n, s_unop_t op,               \
                      const s_uparams_t *p)                                   \
    {                                                                         \
        const T al = (T) p->alpha, be = (T) p->beta, ga = (T) p->gamma;       \
        const T one = 1, zero = 0, half = (T) 0.5;                            \
        const float ehi = s_exp_clamp;                                        \
        switch (op) {                                                         \
            case S_U_ABS: S_LOOP (o[i] = MF (fabs) (x[i]));                   \
            case S_U_NEG: S_LOOP (o[i] = -x[i]);                              \
            case S_U_SIGN:                                                    \
                S_LOOP (o[i] = x[i] > 0 ? one : (x[i] < 0 ? -one : x[i]));    \
            case S_U_RELU: S_LOOP (o[i] = x[i] < 0 ? zero : x[i]);            \
            case S_U_SQRT: S_LOOP (o[i] = MF (sqrt) (x[i]));                  \
            case S_U_EXP: S_LOOP (o[i] = MF (exp) (x[i]));                    \
            case S_U_LOG: S_LOOP (o[i] = MF (log) (x[i]));                    \
            case S_U_RECIP: S_LOOP (o[i] = one / x[i]);                       \
            case S_U_FLOOR: S_LOOP (o[i] = MF (floor) (x[i]));                \
            case S_U_CEIL: S_LOOP (o[i] = MF (ceil) (x[i]));                  \
            /* rint rounds half to even in the default rounding mode */       \
            case S_U_ROUND: S_LOOP (o[i] = MF (rint) (x[i]));                 \
            case S_U_SIN: S_LOOP (o[i] = MF (sin) (x[i]));                    \
            case S_U_COS: S_LOOP (o[i] = MF (cos) (x[i]));                    \
            case S_U_TAN: S_LOOP (o[i] = MF (tan) (x[i]));                    \
            case S_U_ASIN: S_LOOP (o[i] = MF (asin) (x[i]));                  \
            case S_U_ACOS: S_LOOP (o[i] = MF (acos) (x[i]));                  \
            case S_U_ATAN: S_LOOP (o[i] = MF (atan) (x[i]));                  \
            case S_U_SINH: S_LOOP (o[i] = MF (sinh) (x[i]));                  \
            case S_U_COSH: S_LOOP (o[i] = MF (cosh) (x[i]));                  \
            case S_U_ASINH: S_LOOP (o[i] = MF (asinh) (x[i]));                \
            case S_U_ACOSH: S_LOOP (o[i] = MF (acosh) (x[i]));                \
            case S_U_ATANH: S_LOOP (o[i] = MF (atanh) (x[i]));                \
            case S_U_ERF: S_LOOP (o[i] = MF (erf) (x[i]));                    \
            case S_U_LEAKY:                                                   \
                S_LOOP (const T v = x[i]; o[i] = S_SEL (v < 0, al * v, v));   \
            case S_U_SIGMOID: S_LOOP (o[i] = MF (s_sigmoid_k) (x[i], ehi));        \
            case S_U_HSIGMOID:                                                \
                S_LOOP (const T v = al * x[i] + be;                           \
                        o[i] = v < zero ? zero : (v > one ? one : v));        \
            case S_U_HSWISH:                                                  \
                S_LOOP (const T v = x[i] * (T) (1.0 / 6.0) + half;            \
                        o[i] = x[i] * S_SEL (v < zero, zero,                  \
                                             S_SEL (v > one, one, v)));       \
            case S_U_TANH: S_LOOP (o[i] = MF (s_tanh_k) (x[i], ehi));              \
            case S_U_ELU:                                                     \
                S_LOOP (o[i] = x[i] < 0 ? al * MF (expm1) (x[i]) : x[i]);     \
            case S_U_SELU:                                                    \
                S_LOOP (o[i] = x[i] <= 0 ? ga * (al * MF (exp) (x[i]) - al)   \
                                         : ga * x[i]);                        \
            case S_U_CELU:                                                    \
                S_LOOP (o[i] = x[i] > 0 ? x[i]                                \
                                        : al * MF (expm1) (x[i] / al));       \
            case S_U_GELU:                                                    \
                S_LOOP (o[i] = half * x[i]                                    \
                               * (one + MF (erf) (x[i] * (T) 0.70710678118654752440))); \
            case S_U_GELU_TANH:                                               \
                S_LOOP (const T v = x[i];                                     \
                        o[i] = half * v                                       \
                               * (one + MF (s_tanh_k) ((T) 0.79788456080286535588 \
                                                   * (v + (T) 0.044715 * v * v * v), \
                                                  ehi)));                     \
            case S_U_SOFTPLUS:                                                \
                /* log(1 + e^x) without overflowing e^x for large x */        \
                S_LOOP (const T v = x[i];                                     \
                        o[i] = v > 0 ? v + MF (log1p) (MF (exp) (-v))         \
                                     : MF (log1p) (MF (exp) (v)));            \
            case S_U_SOFTSIGN: S_LOOP (o[i] = x[i] / (one + MF (fabs) (x[i]))); \
            case S_U_THRELU: S_LOOP (o[i] = x[i] > al ? x[i] : zero);         \
            case S_U_SHRINK:                                                  \
                S_LOOP (const T v = x[i];                                     \
                        o[i] = S_SEL (v < -al, v + be,                        \
                                      S_SEL (v > al, v - be, zero)));         \
            case S_U_MISH:                                                    \
                S_LOOP (const T v = x[i];                                     \
                        const T sp = v > 0 ? v + MF (log1p) (MF (exp) (-v))   \
                                           : MF (log1p) (MF (exp) (v));       \
                        o[i] = v * MF (tanh) (sp));                           \
        }                                                                     \
    }

S_UNARY_FLOAT (s_unary_f32, float, S_MF32)
S_UNARY_FLOAT (s_unary_f64, double, S_MF64)

//  Integer Abs / Neg / Sign / Relu; negation wraps (abs(INT_MIN) = INT_MIN).
#define S_UNARY_SINT(sfx, T, U, unused)                                       \
    static void s_unary_##sfx (T *o, const T *x, int64_t n, s_unop_t op)     \
    {                                                                         \
        switch (op) {                                                         \
            case S_U_ABS:                                                     \
                S_LOOP (o[i] = x[i] < 0 ? (T) (0u - (U) x[i]) : x[i]);        \
            case S_U_NEG: S_LOOP (o[i] = (T) (0u - (U) x[i]));                \
            case S_U_SIGN: S_LOOP (o[i] = (T) ((x[i] > 0) - (x[i] < 0)));     \
            case S_U_RELU: S_LOOP (o[i] = x[i] < 0 ? (T) 0 : x[i]);           \
            default: break;                                                   \
        }                                                                     \
    }
#define S_UNARY_UINT(sfx, T, U, unused)                                       \
    static void s_unary_##sfx (T *o, const T *x, int64_t n, s_unop_t op)     \
    {                                                                         \
        switch (op) {                                                         \
            case S_U_ABS: S_LOOP (o[i] = x[i]);                               \
            case S_U_NEG: S_LOOP (o[i] = (T) (0u - (U) x[i]));                \
            case S_U_SIGN: S_LOOP (o[i] = (T) (x[i] > 0));                    \
            case S_U_RELU: S_LOOP (o[i] = x[i]);                              \
            default: break;                                                   \
        }                                                                     \
    }
S_SINTS (S_UNARY_SINT, 0)
S_UINTS (S_UNARY_UINT, 0)

//  dtypes each unary op accepts.
static unsigned
s_unary_mask (s_unop_t op)
{
    switch (op) {
        case S_U_ABS: case S_U_SIGN: case S_U_RELU: case S_U_NEG:
            return S_M_NUM;
        default:
            return S_M_FLOAT;
    }
}

static void
s_unary_params (const zi_node_t *node, s_unop_t op, s_uparams_t *p)
{
    p->alpha = p->beta = p->gamma = 0;
    switch (op) {
        case S_U_LEAKY:
            p->alpha = zi_node_attr_float (node, "alpha", 0.01f);
            break;
        case S_U_HSIGMOID:
            p->alpha = zi_node_attr_float (node, "alpha", 0.2f);
            p->beta = zi_node_attr_float (node, "beta", 0.5f);
            break;
        case S_U_ELU: case S_U_CELU: case S_U_THRELU:
            p->alpha = zi_node_attr_float (node, "alpha", 1.0f);
            break;
        case S_U_SELU:
            p->alpha = zi_node_attr_float (node, "alpha",
                                           1.67326319217681884765625f);
            p->gamma = zi_node_attr_float (node, "gamma",
                                           1.05070102214813232421875f);
            break;
        case S_U_SHRINK:
            p->alpha = zi_node_attr_float (node, "lambd", 0.5f);
            p->beta = zi_node_attr_float (node, "bias", 0.0f);
            break;
        default:
            break;
    }
}

//  Float attributes must be FLOATs; Celu's alpha divides; Gelu's approximate
//  is "none" or "tanh".
static int
s_check_unary (const zi_node_t *node, char *err, size_t errlen)
{
    static const char *const fnames[] = {"alpha", "beta", "gamma", "lambd",
                                         "bias"};
    for (size_t i = 0; i < sizeof fnames / sizeof fnames[0]; i++) {
        const zi_attr_t *a = zi_node_attr (node, fnames[i]);
        if (a && a->type != ZI_ATTR_FLOAT) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "node '%s' (%s): attribute %s must be a float",
                            node->name, node->op_type, fnames[i]);
        }
    }
    if (strcmp (node->op_type, "Celu") == 0
        && zi_node_attr_float (node, "alpha", 1.0f) == 0.0f) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "node '%s' (Celu): alpha must not be 0", node->name);
    }
    if (strcmp (node->op_type, "Gelu") == 0) {
        const zi_attr_t *a = zi_node_attr (node, "approximate");
        if (a && (a->type != ZI_ATTR_STRING
                  || (strcmp (a->s, "none") != 0 && strcmp (a->s, "tanh") != 0))) {
            return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                            "node '%s' (Gelu): approximate must be \"none\" or "
                            "\"tanh\"",
                            node->name);
        }
    }
    return ZI_OK;
}

static int
s_infer_same (zi_kctx_t *ctx, unsigned mask, zi_dtype_t odt)
{
    int rc = s_need_inputs (ctx, 1);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0];
    if (!s_in (mask, x->dtype)) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "dtype %s is not supported",
                           zi_dtype_name (x->dtype));
    }
    rc = zi_tensor_set_shape (ctx->out[0],
                              odt == ZI_DT_UNDEFINED ? x->dtype : odt, x->rank,
                              x->ne);
    if (rc) {
        return zi_op_fail (ctx, rc, "output is too large");
    }
    return ZI_OK;
}

//  Checks shared by the run functions of one-input, same-shape ops.
static int
s_run_same_check (zi_kctx_t *ctx, int64_t *n)
{
    int rc = s_need_inputs (ctx, 1);
    if (rc) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0];
    *n = zi_tensor_count (x);
    if (*n != zi_tensor_count (ctx->out[0])) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "output size does not match input");
    }
    if (*n > 0 && (!x->data || !ctx->out[0]->data)) {
        return zi_op_fail (ctx, ZI_ERR_INVALID, "tensor without data");
    }
    return ZI_OK;
}

static int
s_run_unary_core (zi_kctx_t *ctx, int code)
{
    s_unop_t op = (s_unop_t) code;
    int64_t n;
    int rc = s_run_same_check (ctx, &n);
    if (rc || n == 0) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *out = ctx->out[0];
    if (x->dtype != out->dtype || !s_in (s_unary_mask (op), x->dtype)) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "dtype %s is not supported",
                           zi_dtype_name (x->dtype));
    }
    if (op == S_U_GELU
        && strcmp (zi_node_attr_string (ctx->node, "approximate", "none"),
                   "tanh") == 0) {
        op = S_U_GELU_TANH;
    }
    s_uparams_t p;
    s_unary_params (ctx->node, op, &p);
    switch (x->dtype) {
        case ZI_DT_F32:
            s_unary_f32 ((float *) out->data, (const float *) x->data, n, op, &p);
            break;
        case ZI_DT_F64:
            s_unary_f64 ((double *) out->data, (const double *) x->data, n, op,
                         &p);
            break;
#define S_UCASE(sfx, T, U, unused)                                            \
        case S_DT_##sfx:                                                      \
            s_unary_##sfx ((T *) out->data, (const T *) x->data, n, op);      \
            break;
        S_SINTS (S_UCASE, 0)
        S_UINTS (S_UCASE, 0)
#undef S_UCASE
        default:
            return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED,
                               "dtype %s is not supported",
                               zi_dtype_name (x->dtype));
    }
    return ZI_OK;
}

#define S_UN_OP(Name, code)                                          \
    static int s_infer_##Name (zi_kctx_t *ctx)                       \
    {                                                                \
        return s_infer_same (ctx, s_unary_mask (code), ZI_DT_UNDEFINED); \
    }                                                                \
    static int s_run_##Name (zi_kctx_t *ctx)                         \
    {                                                                \
        return s_run_promoted (ctx, s_run_unary_core, code);         \
    }

S_UN_OP (Abs, S_U_ABS)
S_UN_OP (Neg, S_U_NEG)
S_UN_OP (Sign, S_U_SIGN)
S_UN_OP (Relu, S_U_RELU)
S_UN_OP (Sqrt, S_U_SQRT)
S_UN_OP (Exp, S_U_EXP)
S_UN_OP (Log, S_U_LOG)
S_UN_OP (Reciprocal, S_U_RECIP)
S_UN_OP (Floor, S_U_FLOOR)
S_UN_OP (Ceil, S_U_CEIL)
S_UN_OP (Round, S_U_ROUND)
S_UN_OP (Sin, S_U_SIN)
S_UN_OP (Cos, S_U_COS)
S_UN_OP (Tan, S_U_TAN)
S_UN_OP (Asin, S_U_ASIN)
S_UN_OP (Acos, S_U_ACOS)
S_UN_OP (Atan, S_U_ATAN)
S_UN_OP (Sinh, S_U_SINH)
S_UN_OP (Cosh, S_U_COSH)
S_UN_OP (Asinh, S_U_ASINH)
S_UN_OP (Acosh, S_U_ACOSH)
S_UN_OP (Atanh, S_U_ATANH)
S_UN_OP (Erf, S_U_ERF)
S_UN_OP (LeakyRelu, S_U_LEAKY)
S_UN_OP (Sigmoid, S_U_SIGMOID)
S_UN_OP (HardSigmoid, S_U_HSIGMOID)
S_UN_OP (HardSwish, S_U_HSWISH)
S_UN_OP (Tanh, S_U_TANH)
S_UN_OP (Elu, S_U_ELU)
S_UN_OP (Selu, S_U_SELU)
S_UN_OP (Celu, S_U_CELU)
S_UN_OP (Gelu, S_U_GELU)
S_UN_OP (Softplus, S_U_SOFTPLUS)
S_UN_OP (Softsign, S_U_SOFTSIGN)
S_UN_OP (ThresholdedRelu, S_U_THRELU)
S_UN_OP (Shrink, S_U_SHRINK)
S_UN_OP (Mish, S_U_MISH)

//  Not, IsNaN, IsInf ------------------------------------------------------------

static int
s_infer_not (zi_kctx_t *ctx)
{
    return s_infer_same (ctx, S_M_BOOL, ZI_DT_BOOL);
}

static int
s_run_not (zi_kctx_t *ctx)
{
    int64_t n;
    int rc = s_run_same_check (ctx, &n);
    if (rc || n == 0) {
        return rc;
    }
    if (ctx->in[0]->dtype != ZI_DT_BOOL || ctx->out[0]->dtype != ZI_DT_BOOL) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "Not needs bool tensors");
    }
    const uint8_t *x = (const uint8_t *) ctx->in[0]->data;
    uint8_t *o = (uint8_t *) ctx->out[0]->data;
    for (int64_t i = 0; i < n; i++) {
        o[i] = x[i] == 0;
    }
    return ZI_OK;
}

static int
s_infer_isx (zi_kctx_t *ctx)
{
    return s_infer_same (ctx, S_M_FLOAT, ZI_DT_BOOL);
}

static int
s_check_isinf (const zi_node_t *node, char *err, size_t errlen)
{
    static const char *const names[] = {"detect_negative", "detect_positive"};
    for (int i = 0; i < 2; i++) {
        const zi_attr_t *a = zi_node_attr (node, names[i]);
        if (a && a->type != ZI_ATTR_INT) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "node '%s' (IsInf): attribute %s must be an int",
                            node->name, names[i]);
        }
    }
    return ZI_OK;
}

//  code 0 = IsNaN, 1 = IsInf
static int
s_run_isx_core (zi_kctx_t *ctx, int code)
{
    int64_t n;
    int rc = s_run_same_check (ctx, &n);
    if (rc || n == 0) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0];
    uint8_t *o = (uint8_t *) ctx->out[0]->data;
    bool neg = zi_node_attr_int (ctx->node, "detect_negative", 1) != 0;
    bool pos = zi_node_attr_int (ctx->node, "detect_positive", 1) != 0;
    if (ctx->out[0]->dtype != ZI_DT_BOOL) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "output must be bool");
    }
#define S_ISX(T)                                                      \
    {                                                                 \
        const T *v = (const T *) x->data;                             \
        if (code == 0) {                                              \
            for (int64_t i = 0; i < n; i++) {                         \
                o[i] = v[i] != v[i];                                  \
            }                                                         \
        }                                                             \
        else {                                                        \
            for (int64_t i = 0; i < n; i++) {                         \
                o[i] = (pos && v[i] == (T) INFINITY)                  \
                       || (neg && v[i] == (T) -INFINITY);             \
            }                                                         \
        }                                                             \
    }
    if (x->dtype == ZI_DT_F32) {
        S_ISX (float)
    }
    else if (x->dtype == ZI_DT_F64) {
        S_ISX (double)
    }
    else {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "dtype %s is not supported",
                           zi_dtype_name (x->dtype));
    }
#undef S_ISX
    return ZI_OK;
}

static int
s_run_isnan (zi_kctx_t *ctx)
{
    return s_run_promoted (ctx, s_run_isx_core, 0);
}

static int
s_run_isinf (zi_kctx_t *ctx)
{
    return s_run_promoted (ctx, s_run_isx_core, 1);
}

//  Clip -------------------------------------------------------------------------

static int
s_check_clip (const zi_node_t *node, char *err, size_t errlen)
{
    static const char *const names[] = {"min", "max"};
    for (int i = 0; i < 2; i++) {
        const zi_attr_t *a = zi_node_attr (node, names[i]);
        if (a && a->type != ZI_ATTR_FLOAT) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "node '%s' (Clip): attribute %s must be a float",
                            node->name, names[i]);
        }
    }
    return ZI_OK;
}

static int
s_infer_clip (zi_kctx_t *ctx)
{
    int rc = s_infer_same (ctx, S_M_NUM, ZI_DT_UNDEFINED);
    if (rc) {
        return rc;
    }
    for (int i = 1; i < ctx->n_in && i < 3; i++) {
        const zi_tensor_t *t = ctx->in[i];
        if (t && t->dtype != ctx->in[0]->dtype) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE,
                               "%s has dtype %s, input %s", i == 1 ? "min" : "max",
                               zi_dtype_name (t->dtype),
                               zi_dtype_name (ctx->in[0]->dtype));
        }
        int64_t cnt = zi_tensor_count (t ? t : ctx->in[0]);
        if (t && cnt != 1) {
            return zi_op_fail (ctx, ZI_ERR_SHAPE,
                               "%s must be a scalar, has %lld elements",
                               i == 1 ? "min" : "max", (long long) cnt);
        }
    }
    return ZI_OK;
}

//  o (n,) = min (max (x, lo), hi): with lo > hi every element becomes hi, as
//  the spec says; NaN stays NaN.
#define S_CLIP_FN(sfx, T, U, unused)                                          \
    static void s_clip_##sfx (T *o, const T *x, int64_t n, T lo, T hi)       \
    {                                                                         \
        for (int64_t i = 0; i < n; i++) {                                     \
            const T v = x[i] < lo ? lo : x[i];                                \
            o[i] = v > hi ? hi : v;                                           \
        }                                                                     \
    }
S_FLOATS (S_CLIP_FN, 0)
S_SINTS (S_CLIP_FN, 0)
S_UINTS (S_CLIP_FN, 0)

//  Fetch Clip's bound i (1 = min, 2 = max) into *dst when given.
static int
s_clip_bound (zi_kctx_t *ctx, int i, void *dst)
{
    const zi_tensor_t *t = i < ctx->n_in ? ctx->in[i] : NULL;
    if (!t) {
        return ZI_OK;
    }
    if (t->dtype != ctx->in[0]->dtype || zi_tensor_count (t) != 1 || !t->data) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "%s must be a scalar of the "
                           "input's dtype", i == 1 ? "min" : "max");
    }
    memcpy (dst, t->data, zi_dtype_size (t->dtype));
    return ZI_OK;
}

static int
s_run_clip_core (zi_kctx_t *ctx, int code)
{
    (void) code;
    int64_t n;
    int rc = s_run_same_check (ctx, &n);
    if (rc || n == 0) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *out = ctx->out[0];
    if (x->dtype != out->dtype) {
        return zi_op_fail (ctx, ZI_ERR_SHAPE, "output dtype differs from input");
    }
    bool legacy = zi_node_attr_int (ctx->node, "__opset", 13) < 11;
    if (legacy && ctx->n_in > 1) {
        return zi_op_fail (ctx, ZI_ERR_MALFORMED,
                           "min/max inputs need opset >= 11");
    }
    switch (x->dtype) {
        case ZI_DT_F32: {
            float lo = legacy ? zi_node_attr_float (ctx->node, "min", -FLT_MAX)
                              : -INFINITY;
            float hi = legacy ? zi_node_attr_float (ctx->node, "max", FLT_MAX)
                              : INFINITY;
            if ((rc = s_clip_bound (ctx, 1, &lo))
                || (rc = s_clip_bound (ctx, 2, &hi))) {
                return rc;
            }
            s_clip_f32 ((float *) out->data, (const float *) x->data, n, lo, hi);
            break;
        }
        case ZI_DT_F64: {
            double lo = legacy ? zi_node_attr_float (ctx->node, "min", -FLT_MAX)
                               : -INFINITY;
            double hi = legacy ? zi_node_attr_float (ctx->node, "max", FLT_MAX)
                               : INFINITY;
            if (legacy && !zi_node_attr (ctx->node, "min")) {
                lo = -DBL_MAX;
            }
            if (legacy && !zi_node_attr (ctx->node, "max")) {
                hi = DBL_MAX;
            }
            if ((rc = s_clip_bound (ctx, 1, &lo))
                || (rc = s_clip_bound (ctx, 2, &hi))) {
                return rc;
            }
            s_clip_f64 ((double *) out->data, (const double *) x->data, n, lo,
                        hi);
            break;
        }
#define S_CLIP_CASE(sfx, T, LO, HI)                                           \
        case S_DT_##sfx: {                                                    \
            T lo = LO, hi = HI;                                               \
            if ((rc = s_clip_bound (ctx, 1, &lo))                             \
                || (rc = s_clip_bound (ctx, 2, &hi))) {                       \
                return rc;                                                    \
            }                                                                 \
            s_clip_##sfx ((T *) out->data, (const T *) x->data, n, lo, hi);   \
            break;                                                            \
        }
        S_CLIP_CASE (i8, int8_t, INT8_MIN, INT8_MAX)
        S_CLIP_CASE (i16, int16_t, INT16_MIN, INT16_MAX)
        S_CLIP_CASE (i32, int32_t, INT32_MIN, INT32_MAX)
        S_CLIP_CASE (i64, int64_t, INT64_MIN, INT64_MAX)
        S_CLIP_CASE (u8, uint8_t, 0, UINT8_MAX)
        S_CLIP_CASE (u16, uint16_t, 0, UINT16_MAX)
        S_CLIP_CASE (u32, uint32_t, 0, UINT32_MAX)
        S_CLIP_CASE (u64, uint64_t, 0, UINT64_MAX)
#undef S_CLIP_CASE
        default:
            return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED,
                               "dtype %s is not supported",
                               zi_dtype_name (x->dtype));
    }
    return ZI_OK;
}

static int
s_run_clip (zi_kctx_t *ctx)
{
    return s_run_promoted (ctx, s_run_clip_core, 0);
}

//  Cast / CastLike ----------------------------------------------------------------

static int
s_check_cast (const zi_node_t *node, char *err, size_t errlen)
{
    const zi_attr_t *a = zi_node_attr (node, "to");
    if (!a || a->type != ZI_ATTR_INT) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "node '%s' (Cast): needs an int attribute 'to'",
                        node->name);
    }
    if (a->i == ZI_DT_STRING) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                        "node '%s' (Cast): casting to string is not supported",
                        node->name);
    }
    if (a->i < 0 || a->i > INT_MAX || !zi_dtype_valid ((int) a->i)) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                        "node '%s' (Cast): target dtype %lld is not supported",
                        node->name, (long long) a->i);
    }
    return ZI_OK;
}

static int
s_infer_cast_to (zi_kctx_t *ctx, zi_dtype_t to)
{
    const zi_tensor_t *x = ctx->in[0];
    if (zi_dtype_size (x->dtype) == 0) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED,
                           "casting from %s is not supported",
                           x->dtype == ZI_DT_STRING ? "string"
                                                    : zi_dtype_name (x->dtype));
    }
    if (zi_dtype_size (to) == 0) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED,
                           "casting to %s is not supported",
                           to == ZI_DT_STRING ? "string" : zi_dtype_name (to));
    }
    int rc = zi_tensor_set_shape (ctx->out[0], to, x->rank, x->ne);
    if (rc) {
        return zi_op_fail (ctx, rc, "output is too large");
    }
    return ZI_OK;
}

static int
s_infer_cast (zi_kctx_t *ctx)
{
    int rc = s_need_inputs (ctx, 1);
    if (rc) {
        return rc;
    }
    int64_t to = zi_node_attr_int (ctx->node, "to", 0);
    if (to < 0 || to > INT_MAX || !zi_dtype_valid ((int) to)) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED,
                           "target dtype %lld is not supported", (long long) to);
    }
    return s_infer_cast_to (ctx, (zi_dtype_t) to);
}

static int
s_infer_castlike (zi_kctx_t *ctx)
{
    int rc = s_need_inputs (ctx, 2);
    if (rc) {
        return rc;
    }
    return s_infer_cast_to (ctx, ctx->in[1]->dtype);
}

static int
s_run_cast (zi_kctx_t *ctx)
{
    int64_t n;
    int rc = s_run_same_check (ctx, &n);
    if (rc || n == 0) {
        return rc;
    }
    const zi_tensor_t *x = ctx->in[0];
    zi_tensor_t *out = ctx->out[0];
    if (zi_dtype_size (x->dtype) == 0 || zi_dtype_size (out->dtype) == 0) {
        return zi_op_fail (ctx, ZI_ERR_UNSUPPORTED, "cast %s -> %s is not "
                           "supported", zi_dtype_name (x->dtype),
                           zi_dtype_name (out->dtype));
    }
    s_convert (out->data, out->dtype, x->data, x->dtype, n);
    return ZI_OK;
}

//  The table ----------------------------------------------------------------------

#define S_UNARY_ENTRY(Name) \
    {#Name, NULL, 1, 1, 1, 1, s_check_unary, s_infer_##Name, s_run_##Name}
#define S_BINARY_ENTRY(Name, check) \
    {#Name, NULL, 2, 2, 1, 1, check, s_infer_##Name, s_run_##Name}
#define S_VARIADIC_ENTRY(Name) \
    {#Name, NULL, 1, INT_MAX, 1, 1, NULL, s_infer_##Name, s_run_##Name}

const zi_op_def_t zi_ops_elem[] = {
    S_BINARY_ENTRY (Add, s_check_binary),
    S_BINARY_ENTRY (Sub, s_check_binary),
    S_BINARY_ENTRY (Mul, s_check_binary),
    S_BINARY_ENTRY (Div, s_check_binary),
    S_BINARY_ENTRY (Pow, s_check_binary),
    S_BINARY_ENTRY (Mod, s_check_mod),
    S_BINARY_ENTRY (BitShift, s_check_bitshift),
    S_BINARY_ENTRY (PRelu, NULL),
    S_BINARY_ENTRY (Equal, s_check_binary),
    S_BINARY_ENTRY (Less, s_check_binary),
    S_BINARY_ENTRY (Greater, s_check_binary),
    S_BINARY_ENTRY (LessOrEqual, NULL),
    S_BINARY_ENTRY (GreaterOrEqual, NULL),
    S_BINARY_ENTRY (And, s_check_binary),
    S_BINARY_ENTRY (Or, s_check_binary),
    S_BINARY_ENTRY (Xor, s_check_binary),
    S_VARIADIC_ENTRY (Sum),
    S_VARIADIC_ENTRY (Mean),
    S_VARIADIC_ENTRY (Max),
    S_VARIADIC_ENTRY (Min),
    {"Where", NULL, 3, 3, 1, 1, NULL, s_infer_where, s_run_where},
    S_UNARY_ENTRY (Abs),
    S_UNARY_ENTRY (Neg),
    S_UNARY_ENTRY (Sign),
    S_UNARY_ENTRY (Relu),
    S_UNARY_ENTRY (Sqrt),
    S_UNARY_ENTRY (Exp),
    S_UNARY_ENTRY (Log),
    S_UNARY_ENTRY (Reciprocal),
    S_UNARY_ENTRY (Floor),
    S_UNARY_ENTRY (Ceil),
    S_UNARY_ENTRY (Round),
    S_UNARY_ENTRY (Sin),
    S_UNARY_ENTRY (Cos),
    S_UNARY_ENTRY (Tan),
    S_UNARY_ENTRY (Asin),
    S_UNARY_ENTRY (Acos),
    S_UNARY_ENTRY (Atan),
    S_UNARY_ENTRY (Sinh),
    S_UNARY_ENTRY (Cosh),
    S_UNARY_ENTRY (Asinh),
    S_UNARY_ENTRY (Acosh),
    S_UNARY_ENTRY (Atanh),
    S_UNARY_ENTRY (Erf),
    S_UNARY_ENTRY (LeakyRelu),
    S_UNARY_ENTRY (Sigmoid),
    S_UNARY_ENTRY (HardSigmoid),
    S_UNARY_ENTRY (HardSwish),
    S_UNARY_ENTRY (Tanh),
    S_UNARY_ENTRY (Elu),
    S_UNARY_ENTRY (Selu),
    S_UNARY_ENTRY (Celu),
    S_UNARY_ENTRY (Gelu),
    S_UNARY_ENTRY (Softplus),
    S_UNARY_ENTRY (Softsign),
    S_UNARY_ENTRY (ThresholdedRelu),
    S_UNARY_ENTRY (Shrink),
    S_UNARY_ENTRY (Mish),
    {"Not", NULL, 1, 1, 1, 1, NULL, s_infer_not, s_run_not},
    {"IsNaN", NULL, 1, 1, 1, 1, NULL, s_infer_isx, s_run_isnan},
    {"IsInf", NULL, 1, 1, 1, 1, s_check_isinf, s_infer_isx, s_run_isinf},
    {"Clip", NULL, 1, 3, 1, 1, s_check_clip, s_infer_clip, s_run_clip},
    {"Cast", NULL, 1, 1, 1, 1, s_check_cast, s_infer_cast, s_run_cast},
    {"CastLike", NULL, 2, 2, 1, 1, NULL, s_infer_castlike, s_run_cast},
    {NULL},
};
