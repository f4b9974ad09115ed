/*  zi_idx.h - read IDX files (the MNIST / Fashion-MNIST data set format).

    An IDX file is a big-endian header followed by raw data:

        offset  size  field
        0       2     zero
        2       1     element type: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32,
                      0x0D f32, 0x0E f64
        3       1     number of dimensions d (1..8 here)
        4       4*d   each dimension, big-endian uint32
        4+4d    ...   the elements, big-endian, row-major

    The reader trusts nothing: the dims' product times the element size must
    equal the bytes that follow the header exactly.
*/
#ifndef ZI_IDX_H_INCLUDED
#define ZI_IDX_H_INCLUDED

#include "zi_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Read an uncompressed IDX file into a new owning tensor (converted to host
//  byte order). Returns 0, or an error with a message naming the file.
int zi_idx_read (const char *path, zi_tensor_t **out, char *err, size_t errlen);

//  The same from a buffer.
int zi_idx_parse (const void *buf, size_t len, zi_tensor_t **out, char *err,
                  size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
