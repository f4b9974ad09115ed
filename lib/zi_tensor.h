/*  zi_tensor.h - n-dimensional tensors: dtype, shape, byte strides, data.

    A tensor is a plain struct (ggml habit) so kernels can read it directly:

        zi_tensor_t *t = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){2, 3});
        float *x = (float *) t->data;          //  x (2,3), row-major
        x[1 * 3 + 2] = 1.0f;                    //  element [1][2]
        zi_tensor_destroy (&t);                 //  t is NULL afterwards

    Shapes are in numpy order: ne[0] is the OUTERMOST dimension and
    ne[rank-1] the innermost (contiguous) one; nb[i] is the byte stride of
    dimension i. A rank-0 tensor is a scalar with one element. Dimensions may
    be 0 (an empty tensor, nbytes == 0).

    Owning tensors allocate and free their data; views borrow memory that
    someone else keeps alive (a received ZeroMQ frame, an mmap'ed weight file,
    a slice of a larger tensor). Every size computation is checked for
    overflow; bad sizes return NULL / an error, never wrap around.

    dtype numbers are those of ONNX TensorProto.DataType, so a model file's
    data_type maps to a zi_dtype_t without a table.
*/
#ifndef ZI_TENSOR_H_INCLUDED
#define ZI_TENSOR_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zi_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ZI_MAX_RANK 8

typedef enum {
    ZI_DT_UNDEFINED = 0,
    ZI_DT_F32 = 1,
    ZI_DT_U8 = 2,
    ZI_DT_I8 = 3,
    ZI_DT_U16 = 4,
    ZI_DT_I16 = 5,
    ZI_DT_I32 = 6,
    ZI_DT_I64 = 7,
    ZI_DT_STRING = 8,   //  recognised so it can be rejected by name
    ZI_DT_BOOL = 9,     //  one byte per element, 0 or 1
    ZI_DT_F16 = 10,     //  storage only: IEEE half, converted on load
    ZI_DT_F64 = 11,
    ZI_DT_U32 = 12,
    ZI_DT_U64 = 13,
    ZI_DT_BF16 = 16,
} zi_dtype_t;

typedef struct zi_tensor {
    zi_dtype_t dtype;
    int rank;                   //  0..ZI_MAX_RANK
    int64_t ne[ZI_MAX_RANK];    //  sizes, outermost first
    int64_t nb[ZI_MAX_RANK];    //  byte strides
    void *data;                 //  first element (may be NULL if nbytes==0)
    size_t nbytes;              //  bytes spanned when contiguous
    bool owns_data;             //  free(data) on destroy
} zi_tensor_t;

//  Size in bytes of one element, or 0 for an unknown / non-numeric dtype
//  (UNDEFINED, STRING).
size_t zi_dtype_size (zi_dtype_t dtype);

//  Short lower-case name ("float32", "int64", ...); "?" when unknown.
const char *zi_dtype_name (zi_dtype_t dtype);

//  Parse a name from zi_dtype_name (also accepts numpy spellings such as
//  "f4", "<f4", "uint8"). Returns ZI_DT_UNDEFINED when not recognised.
zi_dtype_t zi_dtype_from_name (const char *name);

//  True for the dtypes tensors may carry: every value above except
//  UNDEFINED and STRING.
bool zi_dtype_valid (int dtype);

//  Number of elements of a shape, checked: returns 0 on success and stores
//  the count in *count, or ZI_ERR_OVERFLOW / ZI_ERR_INVALID (negative dim,
//  rank out of range). A shape with a 0 dim has count 0.
int zi_shape_count (int rank, const int64_t *shape, int64_t *count);

//  Bytes needed for a contiguous tensor of this dtype and shape, checked
//  for overflow against SIZE_MAX and INT64_MAX.
int zi_shape_nbytes (zi_dtype_t dtype, int rank, const int64_t *shape,
                     size_t *nbytes);

//  Create an owning, zero-filled, contiguous tensor. Returns NULL on a bad
//  dtype, rank or shape, on overflow, or when memory is exhausted.
zi_tensor_t *zi_tensor_new (zi_dtype_t dtype, int rank, const int64_t *shape);

//  Create a tensor that borrows `data` (nbytes long, contiguous). Checks that
//  the shape needs exactly nbytes. The caller keeps `data` alive for the
//  life of the tensor. Returns NULL on mismatch.
zi_tensor_t *zi_tensor_new_view (zi_dtype_t dtype, int rank,
                                 const int64_t *shape, void *data,
                                 size_t nbytes);

//  Destroy a tensor (freeing data if it owns it) and set *self_p to NULL.
//  Safe on NULL and on *self_p == NULL.
void zi_tensor_destroy (zi_tensor_t **self_p);

//  Fill a caller-provided struct as a contiguous view (no allocation); for
//  tensors on the stack or embedded in other structs. Returns 0, or an error
//  if the shape is bad or does not need exactly nbytes.
int zi_tensor_init_view (zi_tensor_t *self, zi_dtype_t dtype, int rank,
                         const int64_t *shape, void *data, size_t nbytes);

//  Set shape and contiguous strides of a tensor struct without touching its
//  data; used by kernels that size their outputs. Returns 0 or an error.
int zi_tensor_set_shape (zi_tensor_t *self, zi_dtype_t dtype, int rank,
                         const int64_t *shape);

//  Deep copy into a new owning contiguous tensor (strided sources allowed).
zi_tensor_t *zi_tensor_dup (const zi_tensor_t *self);

//  Number of elements (product of ne[]); the shape was checked when the
//  tensor was made, so this cannot overflow.
int64_t zi_tensor_count (const zi_tensor_t *self);

//  True when the strides are the row-major contiguous ones.
bool zi_tensor_is_contiguous (const zi_tensor_t *self);

//  True when both tensors have the same dtype and shape.
bool zi_tensor_same_shape (const zi_tensor_t *a, const zi_tensor_t *b);

//  A view of the rows [first, first+count) along dimension 0 (a micro-batch
//  of a batch). The view borrows self->data. Returns 0 or an error.
int zi_tensor_slice_rows (const zi_tensor_t *self, int64_t first,
                          int64_t count, zi_tensor_t *view);

//  Format the shape as "[2,3,4]" into buf; returns buf.
char *zi_tensor_shape_str (const zi_tensor_t *self, char *buf, size_t len);
char *zi_shape_str (int rank, const int64_t *shape, char *buf, size_t len);

//  IEEE half <-> float conversions (round to nearest even).
float zi_f16_to_f32 (uint16_t h);
uint16_t zi_f32_to_f16 (float f);
float zi_bf16_to_f32 (uint16_t h);

#ifdef __cplusplus
}
#endif

#endif
