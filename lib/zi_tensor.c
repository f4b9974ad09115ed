/*  zi_tensor.c - tensors; see zi_tensor.h. */
#include "zi_tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

size_t
zi_dtype_size (zi_dtype_t dtype)
{
    switch (dtype) {
        case ZI_DT_F32: case ZI_DT_I32: case ZI_DT_U32: return 4;
        case ZI_DT_U8: case ZI_DT_I8: case ZI_DT_BOOL: return 1;
        case ZI_DT_U16: case ZI_DT_I16: case ZI_DT_F16: case ZI_DT_BF16:
            return 2;
        case ZI_DT_I64: case ZI_DT_F64: case ZI_DT_U64: return 8;
        default: return 0;
    }
}

bool
zi_dtype_valid (int dtype)
{
    return zi_dtype_size ((zi_dtype_t) dtype) > 0;
}

static const struct {
    zi_dtype_t dtype;
    const char *name;
    const char *alias1;
    const char *alias2;
} s_dtype_names[] = {
    {ZI_DT_F32, "float32", "f4", "float"},
    {ZI_DT_U8, "uint8", "u1", "B"},
    {ZI_DT_I8, "int8", "i1", "b"},
    {ZI_DT_U16, "uint16", "u2", NULL},
    {ZI_DT_I16, "int16", "i2", NULL},
    {ZI_DT_I32, "int32", "i4", NULL},
    {ZI_DT_I64, "int64", "i8", NULL},
    {ZI_DT_STRING, "string", NULL, NULL},
    {ZI_DT_BOOL, "bool", "b1", "?"},
    {ZI_DT_F16, "float16", "f2", NULL},
    {ZI_DT_F64, "float64", "f8", "double"},
    {ZI_DT_U32, "uint32", "u4", NULL},
    {ZI_DT_U64, "uint64", "u8", NULL},
    {ZI_DT_BF16, "bfloat16", NULL, NULL},
};

const char *
zi_dtype_name (zi_dtype_t dtype)
{
    for (size_t i = 0; i < sizeof s_dtype_names / sizeof s_dtype_names[0]; i++) {
        if (s_dtype_names[i].dtype == dtype) {
            return s_dtype_names[i].name;
        }
    }
    return "?";
}

zi_dtype_t
zi_dtype_from_name (const char *name)
{
    if (!name) {
        return ZI_DT_UNDEFINED;
    }
    //  numpy descr strings carry a byte-order mark: '<' little, '|' n/a.
    //  '>' (big-endian) is not accepted: we only speak little-endian.
    if (name[0] == '<' || name[0] == '|' || name[0] == '=') {
        name++;
    }
    for (size_t i = 0; i < sizeof s_dtype_names / sizeof s_dtype_names[0]; i++) {
        if (strcmp (name, s_dtype_names[i].name) == 0
            || (s_dtype_names[i].alias1 && strcmp (name, s_dtype_names[i].alias1) == 0)
            || (s_dtype_names[i].alias2 && strcmp (name, s_dtype_names[i].alias2) == 0)) {
            return s_dtype_names[i].dtype;
        }
    }
    return ZI_DT_UNDEFINED;
}

int
zi_shape_count (int rank, const int64_t *shape, int64_t *count)
{
    if (rank < 0 || rank > ZI_MAX_RANK || (rank > 0 && !shape)) {
        return ZI_ERR_INVALID;
    }
    int64_t n = 1;
    bool zero = false;
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0) {
            return ZI_ERR_INVALID;
        }
        if (shape[i] == 0) {
            zero = true;        //  keep checking the other dims
            continue;
        }
        if (n > INT64_MAX / shape[i]) {
            return ZI_ERR_OVERFLOW;
        }
        n *= shape[i];
    }
    *count = zero ? 0 : n;
    return ZI_OK;
}

int
zi_shape_nbytes (zi_dtype_t dtype, int rank, const int64_t *shape,
                 size_t *nbytes)
{
    size_t esize = zi_dtype_size (dtype);
    if (esize == 0) {
        return ZI_ERR_INVALID;
    }
    int64_t count;
    int rc = zi_shape_count (rank, shape, &count);
    if (rc) {
        return rc;
    }
    if ((uint64_t) count > (uint64_t) INT64_MAX / esize
        || (uint64_t) count * esize > SIZE_MAX) {
        return ZI_ERR_OVERFLOW;
    }
    //  Byte strides skip 0 dims, so a shape like (0, 2^40, 2^40) holds no
    //  bytes yet has strides that overflow: the product of the non-zero
    //  dims times the element size must fit as well.
    int64_t span = (int64_t) esize;
    for (int i = 0; i < rank; i++) {
        if (shape[i] > 0) {
            if (span > INT64_MAX / shape[i]) {
                return ZI_ERR_OVERFLOW;
            }
            span *= shape[i];
        }
    }
    *nbytes = (size_t) count * esize;
    return ZI_OK;
}

int
zi_tensor_set_shape (zi_tensor_t *self, zi_dtype_t dtype, int rank,
                     const int64_t *shape)
{
    size_t nbytes;
    int rc = zi_shape_nbytes (dtype, rank, shape, &nbytes);
    if (rc) {
        return rc;
    }
    self->dtype = dtype;
    self->rank = rank;
    int64_t stride = (int64_t) zi_dtype_size (dtype);
    for (int i = ZI_MAX_RANK - 1; i >= 0; i--) {
        if (i >= rank) {
            self->ne[i] = 1;
            self->nb[i] = stride;
            continue;
        }
        self->ne[i] = shape[i];
        self->nb[i] = stride;
        //  Cannot overflow: zi_shape_nbytes checked the product of the
        //  non-zero dims times the element size.
        stride *= shape[i] ? shape[i] : 1;
    }
    self->nbytes = nbytes;
    return ZI_OK;
}

int
zi_tensor_init_view (zi_tensor_t *self, zi_dtype_t dtype, int rank,
                     const int64_t *shape, void *data, size_t nbytes)
{
    memset (self, 0, sizeof *self);
    int rc = zi_tensor_set_shape (self, dtype, rank, shape);
    if (rc) {
        return rc;
    }
    if (self->nbytes != nbytes) {
        return ZI_ERR_SHAPE;
    }
    self->data = data;
    self->owns_data = false;
    return ZI_OK;
}

zi_tensor_t *
zi_tensor_new (zi_dtype_t dtype, int rank, const int64_t *shape)
{
    zi_tensor_t *self = (zi_tensor_t *) calloc (1, sizeof *self);
    if (!self) {
        return NULL;
    }
    if (zi_tensor_set_shape (self, dtype, rank, shape)) {
        free (self);
        return NULL;
    }
    //  calloc(1, 0) may return NULL; always allocate at least one byte so
    //  that data != NULL means "has storage".
    self->data = calloc (1, self->nbytes ? self->nbytes : 1);
    if (!self->data) {
        free (self);
        return NULL;
    }
    self->owns_data = true;
    return self;
}

zi_tensor_t *
zi_tensor_new_view (zi_dtype_t dtype, int rank, const int64_t *shape,
                    void *data, size_t nbytes)
{
    zi_tensor_t *self = (zi_tensor_t *) calloc (1, sizeof *self);
    if (!self) {
        return NULL;
    }
    if (zi_tensor_init_view (self, dtype, rank, shape, data, nbytes)) {
        free (self);
        return NULL;
    }
    return self;
}

void
zi_tensor_destroy (zi_tensor_t **self_p)
{
    if (self_p && *self_p) {
        zi_tensor_t *self = *self_p;
        if (self->owns_data) {
            free (self->data);
        }
        free (self);
        *self_p = NULL;
    }
}

int64_t
zi_tensor_count (const zi_tensor_t *self)
{
    int64_t n = 1;
    for (int i = 0; i < self->rank; i++) {
        n *= self->ne[i];
    }
    return n;
}

bool
zi_tensor_is_contiguous (const zi_tensor_t *self)
{
    int64_t stride = (int64_t) zi_dtype_size (self->dtype);
    for (int i = self->rank - 1; i >= 0; i--) {
        if (self->ne[i] != 1 && self->nb[i] != stride) {
            return false;
        }
        //  same rule as zi_tensor_set_shape: a 0 dim does not shrink strides
        stride *= self->ne[i] ? self->ne[i] : 1;
    }
    return true;
}

bool
zi_tensor_same_shape (const zi_tensor_t *a, const zi_tensor_t *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank) {
        return false;
    }
    for (int i = 0; i < a->rank; i++) {
        if (a->ne[i] != b->ne[i]) {
            return false;
        }
    }
    return true;
}

//  Copy a strided tensor element by element into contiguous dst.
static void
s_copy_strided (const zi_tensor_t *src, uint8_t *dst)
{
    size_t esize = zi_dtype_size (src->dtype);
    int64_t count = zi_tensor_count (src);
    int64_t idx[ZI_MAX_RANK] = {0};
    for (int64_t n = 0; n < count; n++) {
        const uint8_t *p = (const uint8_t *) src->data;
        for (int i = 0; i < src->rank; i++) {
            p += idx[i] * src->nb[i];
        }
        memcpy (dst + (size_t) n * esize, p, esize);
        for (int i = src->rank - 1; i >= 0; i--) {
            if (++idx[i] < src->ne[i]) {
                break;
            }
            idx[i] = 0;
        }
    }
}

zi_tensor_t *
zi_tensor_dup (const zi_tensor_t *self)
{
    zi_tensor_t *copy = zi_tensor_new (self->dtype, self->rank, self->ne);
    if (!copy) {
        return NULL;
    }
    if (copy->nbytes == 0) {
        return copy;
    }
    if (zi_tensor_is_contiguous (self)) {
        memcpy (copy->data, self->data, copy->nbytes);
    }
    else {
        s_copy_strided (self, (uint8_t *) copy->data);
    }
    return copy;
}

int
zi_tensor_slice_rows (const zi_tensor_t *self, int64_t first, int64_t count,
                      zi_tensor_t *view)
{
    if (self->rank < 1 || first < 0 || count < 0 || first > self->ne[0]
        || count > self->ne[0] - first) {
        return ZI_ERR_INVALID;
    }
    *view = *self;
    view->owns_data = false;
    view->ne[0] = count;
    view->data = self->data ? (uint8_t *) self->data + first * self->nb[0] : NULL;
    //  nbytes of a row range: the per-row size is nb[0] for contiguous data.
    view->nbytes = (size_t) (count * self->nb[0]);
    return ZI_OK;
}

char *
zi_shape_str (int rank, const int64_t *shape, char *buf, size_t len)
{
    size_t pos = 0;
    if (len == 0) {
        return buf;
    }
    buf[0] = 0;
    pos += (size_t) snprintf (buf + pos, len - pos, "[");
    for (int i = 0; i < rank && pos < len; i++) {
        pos += (size_t) snprintf (buf + pos, len - pos, i ? ",%lld" : "%lld",
                                  (long long) shape[i]);
    }
    if (pos < len) {
        snprintf (buf + pos, len - pos, "]");
    }
    return buf;
}

char *
zi_tensor_shape_str (const zi_tensor_t *self, char *buf, size_t len)
{
    return zi_shape_str (self->rank, self->ne, buf, len);
}

float
zi_f16_to_f32 (uint16_t h)
{
    uint32_t sign = (uint32_t) (h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        }
        else {
            //  subnormal half: normalise into a float
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ff;
            bits = sign | (exp << 23) | (mant << 13);
        }
    }
    else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    }
    else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy (&f, &bits, sizeof f);
    return f;
}

uint16_t
zi_f32_to_f16 (float f)
{
    uint32_t x;
    memcpy (&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t) ((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) {
        return (uint16_t) (sign | 0x7c00 | (mant ? 0x200 : 0));
    }
    if (exp >= 31) {
        return (uint16_t) (sign | 0x7c00);
    }
    if (exp <= 0) {
        if (exp < -10) {
            return (uint16_t) sign;
        }
        mant |= 0x800000;
        uint32_t shift = (uint32_t) (14 - exp);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) {
            half++;
        }
        return (uint16_t) (sign | half);
    }
    uint32_t half = sign | ((uint32_t) exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) {
        half++;     //  may carry into the exponent: that is correct rounding
    }
    return (uint16_t) half;
}

float
zi_bf16_to_f32 (uint16_t h)
{
    uint32_t bits = (uint32_t) h << 16;
    float f;
    memcpy (&f, &bits, sizeof f);
    return f;
}
