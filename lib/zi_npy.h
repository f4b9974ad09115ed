/*  zi_npy.h - read and write numpy .npy files (one tensor per file).

    The format numpy.save writes and numpy.load reads, versions 1.0, 2.0 and
    3.0, little-endian, C order:

        zi_tensor_t *t = NULL;
        char err[256];
        if (zi_npy_read ("input.npy", &t, err, sizeof err) == 0) {
            ...                                 //  t owns its data
            zi_npy_write ("copy.npy", t, err, sizeof err);
            zi_tensor_destroy (&t);
        }

    dtypes: '<f4' '<f8' '<f2' '<i8' '<i4' '<i2' '|i1' '<u8' '<u4' '<u2' '|u1'
    '|b1' (bfloat16 has no numpy spelling and cannot be written). Files in
    Fortran order, big-endian, structured or object dtypes are refused with a
    message that names the file and the problem. The header is checked field
    by field and the data must be exactly dtype size * element count bytes.
*/
#ifndef ZI_NPY_H_INCLUDED
#define ZI_NPY_H_INCLUDED

#include <stddef.h>

#include "zi_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Largest header we accept, in bytes (numpy itself refuses more than
//  10000 by default; we allow headroom for rank-8 shapes with big dims).
#define ZI_NPY_MAX_HEADER 65536

//  Read a .npy file into a new owning tensor stored in *out. Returns 0, or a
//  negative zi_err_t with a message naming the file (ZI_ERR_MALFORMED,
//  ZI_ERR_UNSUPPORTED, ZI_ERR_IO, ZI_ERR_NOTFOUND, ...); *out is then NULL.
int zi_npy_read (const char *path, zi_tensor_t **out, char *err, size_t errlen);

//  Write a tensor (any strides) as a version 1.0 .npy file (2.0 when the
//  header does not fit 1.0). Returns 0 or a negative zi_err_t.
int zi_npy_write (const char *path, const zi_tensor_t *t, char *err, size_t errlen);

//  Decode .npy bytes from memory into a new owning tensor (the buffer is
//  only read). Messages name `label` (e.g. a frame name; NULL: "<memory>").
int zi_npy_read_buffer (const void *buf, size_t len, const char *label,
                        zi_tensor_t **out, char *err, size_t errlen);

//  Encode a tensor as .npy bytes in a new malloc'ed buffer stored in *buf_p
//  with its length in *len_p; the caller frees it. Returns 0 or an error.
int zi_npy_write_buffer (const zi_tensor_t *t, void **buf_p, size_t *len_p,
                         char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
