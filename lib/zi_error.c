/*  zi_error.c - error names and the zi_fail helper. */
#include "zi_error.h"

#include <stdarg.h>
#include <stdio.h>

const char *
zi_strerror (int code)
{
    switch (code) {
        case ZI_OK: return "ok";
        case ZI_ERR_NOMEM: return "out of memory";
        case ZI_ERR_INVALID: return "invalid argument";
        case ZI_ERR_MALFORMED: return "malformed input";
        case ZI_ERR_UNSUPPORTED: return "unsupported";
        case ZI_ERR_SHAPE: return "shape or dtype mismatch";
        case ZI_ERR_OVERFLOW: return "size overflow";
        case ZI_ERR_IO: return "I/O error";
        case ZI_ERR_VERSION: return "version mismatch";
        case ZI_ERR_LIMIT: return "limit exceeded";
        case ZI_ERR_NOTFOUND: return "not found";
        case ZI_ERR_TIMEOUT: return "timed out";
        default: return "unknown error";
    }
}

int
zi_fail (char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start (ap, fmt);
        vsnprintf (err, errlen, fmt, ap);
        va_end (ap);
    }
    return code;
}
