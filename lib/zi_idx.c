/*  zi_idx.c - IDX reader; the format is described in zi_idx.h. */
#include "zi_idx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
zi_idx_parse (const void *buf, size_t len, zi_tensor_t **out, char *err, size_t errlen)
{
    const uint8_t *p = (const uint8_t *) buf;
    if (len < 4 || p[0] != 0 || p[1] != 0) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "not an IDX file (bad magic)");
    }
    zi_dtype_t dtype;
    switch (p[2]) {
        case 0x08: dtype = ZI_DT_U8; break;
        case 0x09: dtype = ZI_DT_I8; break;
        case 0x0B: dtype = ZI_DT_I16; break;
        case 0x0C: dtype = ZI_DT_I32; break;
        case 0x0D: dtype = ZI_DT_F32; break;
        case 0x0E: dtype = ZI_DT_F64; break;
        default:
            return zi_fail (err, errlen, ZI_ERR_MALFORMED, "unknown IDX element type 0x%02x",
                            p[2]);
    }
    int rank = p[3];
    if (rank < 1 || rank > ZI_MAX_RANK) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "IDX rank %d out of 1..%d", rank,
                        ZI_MAX_RANK);
    }
    size_t header = 4 + 4 * (size_t) rank;
    if (len < header) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "IDX header truncated (%zu bytes)",
                        len);
    }
    int64_t shape[ZI_MAX_RANK];
    for (int i = 0; i < rank; i++) {
        const uint8_t *d = p + 4 + 4 * i;
        shape[i] = ((int64_t) d[0] << 24) | ((int64_t) d[1] << 16) | ((int64_t) d[2] << 8) | d[3];
    }
    size_t nbytes;
    if (zi_shape_nbytes (dtype, rank, shape, &nbytes) || nbytes != len - header) {
        char s[128];
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "IDX shape %s of %s needs %s bytes of data, the file has %zu",
                        zi_shape_str (rank, shape, s, sizeof s), zi_dtype_name (dtype),
                        "a different number of", len - header);
    }
    zi_tensor_t *t = zi_tensor_new (dtype, rank, shape);
    if (!t) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    memcpy (t->data, p + header, nbytes);
    //  IDX is big-endian: swap multi-byte elements.
    size_t es = zi_dtype_size (dtype);
    if (es > 1) {
        uint8_t *q = (uint8_t *) t->data;
        for (size_t i = 0; i < nbytes; i += es) {
            for (size_t a = 0, b = es - 1; a < b; a++, b--) {
                uint8_t tmp = q[i + a];
                q[i + a] = q[i + b];
                q[i + b] = tmp;
            }
        }
    }
    *out = t;
    return ZI_OK;
}

int
zi_idx_read (const char *path, zi_tensor_t **out, char *err, size_t errlen)
{
    FILE *f = fopen (path, "rb");
    if (!f) {
        return zi_fail (err, errlen, ZI_ERR_IO, "%s: %s", path, strerror (errno));
    }
    //  Size the buffer by what the file actually holds, never by its header.
    if (fseek (f, 0, SEEK_END) != 0) {
        fclose (f);
        return zi_fail (err, errlen, ZI_ERR_IO, "%s: cannot seek", path);
    }
    long size = ftell (f);
    rewind (f);
    if (size < 0 || (unsigned long) size > (1ul << 34)) {
        fclose (f);
        return zi_fail (err, errlen, ZI_ERR_LIMIT, "%s: unreadable or larger than 16 GiB",
                        path);
    }
    void *buf = malloc ((size_t) size + 1);
    if (!buf) {
        fclose (f);
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = fread (buf, 1, (size_t) size, f);
    fclose (f);
    int rc;
    if (got != (size_t) size) {
        rc = zi_fail (err, errlen, ZI_ERR_IO, "%s: short read", path);
    }
    else {
        char inner[256];
        rc = zi_idx_parse (buf, got, out, inner, sizeof inner);
        if (rc) {
            zi_fail (err, errlen, rc, "%s: %s", path, inner);
        }
    }
    free (buf);
    return rc;
}
