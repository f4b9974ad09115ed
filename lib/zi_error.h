/*  zi_error.h - error codes shared by every libzinfer module.

    Every fallible call returns 0 on success or one of these negative codes.
    Add a code only when a caller would act differently on it (nng habit).
    Functions that can explain themselves also take `char *err, size_t errlen`
    and write a one-line message naming what is wrong.
*/
#ifndef ZI_ERROR_H_INCLUDED
#define ZI_ERROR_H_INCLUDED

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    ZI_OK = 0,
    ZI_ERR_NOMEM = -1,       //  allocation failed
    ZI_ERR_INVALID = -2,     //  bad argument from the caller (CLI, API)
    ZI_ERR_MALFORMED = -3,   //  untrusted input does not parse
    ZI_ERR_UNSUPPORTED = -4, //  well-formed but not supported (op, dtype, attr)
    ZI_ERR_SHAPE = -5,       //  shapes or dtypes do not agree
    ZI_ERR_OVERFLOW = -6,    //  a size computation would overflow
    ZI_ERR_IO = -7,          //  file or socket I/O failed
    ZI_ERR_VERSION = -8,     //  protocol / file version mismatch
    ZI_ERR_LIMIT = -9,       //  a configured limit (rank, size, count) exceeded
    ZI_ERR_NOTFOUND = -10,   //  a named thing (tensor, file, key) is absent
    ZI_ERR_TIMEOUT = -11,    //  no answer within the time allowed
} zi_err_t;

//  Return a static, human-readable name for an error code.
const char *zi_strerror (int code);

//  Format a message into err (if not NULL) and return code. Lets callers
//  write `return zi_fail (err, errlen, ZI_ERR_SHAPE, "x: %d", n);`.
int zi_fail (char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));

#ifdef __cplusplus
}
#endif

#endif
