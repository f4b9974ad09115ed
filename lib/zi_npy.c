/*  zi_npy.c - numpy .npy files; see zi_npy.h.

    File format (numpy's NEP 1, "format.py"), every multi-byte field
    little-endian:

      offset  size  field
      0       6     magic "\x93NUMPY"
      6       1     major version: 1, 2 or 3
      7       1     minor version: 0
      8       2|4   header length H: uint16 for 1.0, uint32 for 2.0 and 3.0
      10|12   H     header: a Python dict literal, ASCII (latin-1 for 1.0 /
                    2.0, UTF-8 for 3.0), padded with spaces and ending in
                    '\n'; numpy pads so the data starts 64-byte aligned
                    (older files: 16), which we do not require on read:
                      {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
                    descr          a dtype string; we take the ones in s_dtypes
                    fortran_order  True / False; True is refused
                    shape          a tuple of non-negative ints: () is a
                                   scalar, (N,) one dimension; Python 2 wrote
                                   longs as "3L", accepted
      10|12+H ...   data: count * itemsize bytes in C order, nothing after

    The header is untrusted: its length is bounded (ZI_NPY_MAX_HEADER), every
    key must appear exactly once and nothing else may, every number is
    checked for overflow, and the data length must match exactly.
*/
#include "zi_npy.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

_Static_assert (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
                "zinfer assumes a little-endian host");

static const uint8_t s_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

//  descr spellings we read; the first one of a dtype is what we write.
static const struct {
    const char *descr;
    zi_dtype_t dtype;
} s_dtypes[] = {
    {"<f4", ZI_DT_F32}, {"<f8", ZI_DT_F64}, {"<f2", ZI_DT_F16},
    {"<i8", ZI_DT_I64}, {"<i4", ZI_DT_I32}, {"<i2", ZI_DT_I16},
    {"|i1", ZI_DT_I8},  {"<u8", ZI_DT_U64}, {"<u4", ZI_DT_U32},
    {"<u2", ZI_DT_U16}, {"|u1", ZI_DT_U8},  {"|b1", ZI_DT_BOOL},
    //  one-byte types have no byte order; '<' is equivalent and valid
    {"<i1", ZI_DT_I8},  {"<u1", ZI_DT_U8},  {"<b1", ZI_DT_BOOL},
};
#define S_NDTYPES (sizeof s_dtypes / sizeof s_dtypes[0])

typedef struct {
    zi_dtype_t dtype;
    int rank;
    int64_t shape[ZI_MAX_RANK];
} s_header_t;

//  -------------------------------------------------------------------------
//  Header parsing: a tiny recursive-descent reader for the one dict shape
//  numpy writes. `p` walks [p, end); every read checks against end.

typedef struct {
    const char *p;
    const char *end;
    const char *label;
    char *err;
    size_t errlen;
} s_parser_t;

static void
s_skip_ws (s_parser_t *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t')) {
        ps->p++;
    }
}

static bool
s_accept (s_parser_t *ps, char c)
{
    s_skip_ws (ps);
    if (ps->p < ps->end && *ps->p == c) {
        ps->p++;
        return true;
    }
    return false;
}

//  A quoted string without escapes into buf (NUL-terminated).
static int
s_parse_string (s_parser_t *ps, char *buf, size_t buflen, const char *what)
{
    s_skip_ws (ps);
    if (ps->p >= ps->end || (*ps->p != '\'' && *ps->p != '"')) {
        return zi_fail (ps->err, ps->errlen, ZI_ERR_MALFORMED,
                        "%s: npy header: %s is not a quoted string", ps->label, what);
    }
    char quote = *ps->p++;
    size_t n = 0;
    while (ps->p < ps->end && *ps->p != quote) {
        if (*ps->p == '\\' || *ps->p == '\n' || n + 1 >= buflen) {
            return zi_fail (ps->err, ps->errlen, ZI_ERR_MALFORMED,
                            "%s: npy header: %s is too long or has escapes", ps->label,
                            what);
        }
        buf[n++] = *ps->p++;
    }
    if (ps->p >= ps->end) {
        return zi_fail (ps->err, ps->errlen, ZI_ERR_MALFORMED,
                        "%s: npy header: unterminated string in %s", ps->label, what);
    }
    ps->p++;
    buf[n] = 0;
    return ZI_OK;
}

static int
s_parse_shape (s_parser_t *ps, s_header_t *h)
{
    if (!s_accept (ps, '(')) {
        return zi_fail (ps->err, ps->errlen, ZI_ERR_MALFORMED,
                        "%s: npy header: shape is not a tuple", ps->label);
    }
    h->rank = 0;
    bool trailing_comma = false;
    while (!s_accept (ps, ')')) {
        s_skip_ws (ps);
        if (ps->p < ps->end && *ps->p == '-') {
            return zi_fail (ps->err, ps->errlen, ZI_ERR_MALFORMED,
                            "%s: npy header: shape has a negative dimension", ps->label);
        }
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') {
            return zi_fail (ps->err, ps->errlen, ZI_ERR_MALFORMED,
                            "%s: npy header: shape is not a tuple of integers",
                            ps->label);
        }
        if (h->rank == ZI_MAX_RANK) {
            return zi_fail (ps->err, ps->errlen, ZI_ERR_LIMIT,
                            "%s: npy header: shape has more than %d dimensions",
                            ps->label, ZI_MAX_RANK);
        }
        int64_t v = 0;
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
            int d = *ps->p++ - '0';
            if (v > (INT64_MAX - d) / 10) {
                return zi_fail (ps->err, ps->errlen, ZI_ERR_OVERFLOW,
                                "%s: npy header: shape dimension is too large",
                                ps->label);
            }
            v = v * 10 + d;
        }
        if (ps->p < ps->end && *ps->p == 'L') {
            ps->p++;            //  Python 2 long suffix
        }
        h->shape[h->rank++] = v;
        trailing_comma = s_accept (ps, ',');
        if (!trailing_comma) {
            if (!s_accept (ps, ')')) {
                return zi_fail (ps->err, ps->errlen, ZI_ERR_MALFORMED,
                                "%s: npy header: shape tuple is not closed", ps->label);
            }
            break;
        }
    }
    //  "(3)" is the integer 3 in Python, not a tuple: numpy refuses it too.
    if (h->rank == 1 && !trailing_comma) {
        return zi_fail (ps->err, ps->errlen, ZI_ERR_MALFORMED,
                        "%s: npy header: shape (N) is not a tuple (want (N,))",
                        ps->label);
    }
    return ZI_OK;
}

//  Parse the dict text [text, text+len). Fills h.
static int
s_parse_dict (const char *text, size_t len, const char *label, s_header_t *h,
              char *err, size_t errlen)
{
    s_parser_t ps = {text, text + len, label, err, errlen};
    if (len == 0 || text[len - 1] != '\n') {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: npy header does not end with a newline", label);
    }
    ps.end = text + len - 1;
    if (!s_accept (&ps, '{')) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: npy header is not a dict",
                        label);
    }
    bool have_descr = false, have_order = false, have_shape = false;
    while (!s_accept (&ps, '}')) {
        char key[32];
        int rc = s_parse_string (&ps, key, sizeof key, "a key");
        if (rc) {
            return rc;
        }
        if (!s_accept (&ps, ':')) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "%s: npy header: no ':' after key '%s'", label, key);
        }
        if (strcmp (key, "descr") == 0 && !have_descr) {
            char descr[32];
            rc = s_parse_string (&ps, descr, sizeof descr, "descr");
            if (rc) {
                return rc;
            }
            h->dtype = ZI_DT_UNDEFINED;
            for (size_t i = 0; i < S_NDTYPES; i++) {
                if (strcmp (descr, s_dtypes[i].descr) == 0) {
                    h->dtype = s_dtypes[i].dtype;
                }
            }
            if (h->dtype == ZI_DT_UNDEFINED) {
                return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                                "%s: npy dtype '%s' is unsupported%s", label, descr,
                                descr[0] == '>' ? " (big-endian)" : "");
            }
            have_descr = true;
        }
        else if (strcmp (key, "fortran_order") == 0 && !have_order) {
            s_skip_ws (&ps);
            size_t left = (size_t) (ps.end - ps.p);
            if (left >= 5 && memcmp (ps.p, "False", 5) == 0) {
                ps.p += 5;
            }
            else if (left >= 4 && memcmp (ps.p, "True", 4) == 0) {
                return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                                "%s: npy file is in Fortran order (save a C-ordered "
                                "array, e.g. numpy.ascontiguousarray)",
                                label);
            }
            else {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "%s: npy header: fortran_order is not True or False",
                                label);
            }
            have_order = true;
        }
        else if (strcmp (key, "shape") == 0 && !have_shape) {
            rc = s_parse_shape (&ps, h);
            if (rc) {
                return rc;
            }
            have_shape = true;
        }
        else {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "%s: npy header: key '%s' is unknown or repeated", label,
                            key);
        }
        if (!s_accept (&ps, ',')) {
            if (!s_accept (&ps, '}')) {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "%s: npy header: expected ',' or '}'", label);
            }
            break;
        }
    }
    s_skip_ws (&ps);
    if (ps.p != ps.end) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: npy header: text after the dict", label);
    }
    if (!have_descr || !have_order || !have_shape) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: npy header: missing '%s'",
                        label,
                        !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    }
    return ZI_OK;
}

//  Parse the fixed prefix: returns the offset of the header text in
//  *hdr_off and its length in *hdr_len. Needs 12 bytes (10 for 1.0).
static int
s_parse_prefix (const uint8_t *buf, size_t len, const char *label, size_t *hdr_off,
                size_t *hdr_len, char *err, size_t errlen)
{
    if (len < 10 || memcmp (buf, s_magic, sizeof s_magic) != 0) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: not a .npy file (bad magic)",
                        label);
    }
    int major = buf[6], minor = buf[7];
    if (major < 1 || major > 3 || minor != 0) {
        return zi_fail (err, errlen, ZI_ERR_VERSION,
                        "%s: npy version %d.%d is unsupported (1.0, 2.0, 3.0)", label,
                        major, minor);
    }
    if (major == 1) {
        *hdr_off = 10;
        *hdr_len = (size_t) buf[8] | (size_t) buf[9] << 8;
    }
    else {
        if (len < 12) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: npy file is truncated",
                            label);
        }
        *hdr_off = 12;
        *hdr_len = (size_t) buf[8] | (size_t) buf[9] << 8 | (size_t) buf[10] << 16
                   | (size_t) buf[11] << 24;
    }
    if (*hdr_len > ZI_NPY_MAX_HEADER) {
        return zi_fail (err, errlen, ZI_ERR_LIMIT,
                        "%s: npy header is %zu bytes, more than %d", label, *hdr_len,
                        ZI_NPY_MAX_HEADER);
    }
    return ZI_OK;
}

static int
s_header_nbytes (const s_header_t *h, const char *label, size_t *nbytes, char *err,
                 size_t errlen)
{
    //  Also refuse empty shapes such as (0, 2^40, 2^40): no bytes, but
    //  byte strides that overflow int64.
    int64_t stride = (int64_t) zi_dtype_size (h->dtype);
    for (int i = h->rank - 1; i >= 0; i--) {
        int64_t d = h->shape[i] > 1 ? h->shape[i] : 1;
        if (stride > INT64_MAX / d) {
            return zi_fail (err, errlen, ZI_ERR_OVERFLOW,
                            "%s: npy shape is too large", label);
        }
        stride *= d;
    }
    if (zi_shape_nbytes (h->dtype, h->rank, h->shape, nbytes)) {
        return zi_fail (err, errlen, ZI_ERR_OVERFLOW,
                        "%s: npy shape is too large", label);
    }
    return ZI_OK;
}

static void
s_bool_normalize (zi_tensor_t *t)
{
    uint8_t *p = (uint8_t *) t->data;
    for (size_t i = 0; i < t->nbytes; i++) {
        p[i] = p[i] != 0;
    }
}

int
zi_npy_read_buffer (const void *buf_, size_t len, const char *label, zi_tensor_t **out,
                    char *err, size_t errlen)
{
    if (!out || (!buf_ && len)) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "zi_npy_read_buffer: bad arguments");
    }
    *out = NULL;
    const uint8_t *buf = (const uint8_t *) buf_;
    label = label ? label : "<memory>";
    size_t off = 0, hlen = 0;
    int rc = s_parse_prefix (buf, len, label, &off, &hlen, err, errlen);
    if (rc) {
        return rc;
    }
    if (hlen > len - off) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: npy header is truncated (%zu of %zu bytes)", label,
                        len - off, hlen);
    }
    s_header_t h;
    rc = s_parse_dict ((const char *) buf + off, hlen, label, &h, err, errlen);
    if (rc) {
        return rc;
    }
    size_t nbytes;
    rc = s_header_nbytes (&h, label, &nbytes, err, errlen);
    if (rc) {
        return rc;
    }
    size_t have = len - off - hlen;
    if (have != nbytes) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: npy data is %zu bytes, dtype %s shape needs %zu (%s)", label,
                        have, zi_dtype_name (h.dtype), nbytes,
                        have < nbytes ? "truncated" : "trailing bytes");
    }
    zi_tensor_t *t = zi_tensor_new (h.dtype, h.rank, h.shape);
    if (!t) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", label);
    }
    if (nbytes) {
        memcpy (t->data, buf + off + hlen, nbytes);
    }
    if (h.dtype == ZI_DT_BOOL) {
        s_bool_normalize (t);
    }
    *out = t;
    return ZI_OK;
}

int
zi_npy_read (const char *path, zi_tensor_t **out, char *err, size_t errlen)
{
    if (!out || !path) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "zi_npy_read: bad arguments");
    }
    *out = NULL;
    FILE *f = fopen (path, "rb");
    if (!f) {
        return zi_fail (err, errlen, errno == ENOENT ? ZI_ERR_NOTFOUND : ZI_ERR_IO,
                        "%s: %s", path, strerror (errno));
    }
    struct stat st;
    if (fstat (fileno (f), &st) != 0 || !S_ISREG (st.st_mode) || st.st_size < 0) {
        fclose (f);
        return zi_fail (err, errlen, ZI_ERR_IO, "%s: not a regular file", path);
    }
    uint64_t fsize = (uint64_t) st.st_size;
    //  Read the prefix and header first, then check the file holds exactly
    //  the data they announce before allocating for it.
    uint8_t prefix[12];
    size_t got = fread (prefix, 1, sizeof prefix, f);
    size_t off = 0, hlen = 0;
    int rc = s_parse_prefix (prefix, got, path, &off, &hlen, err, errlen);
    if (rc) {
        fclose (f);
        return rc;
    }
    if ((uint64_t) off + hlen > fsize) {
        fclose (f);
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: npy header is truncated (%llu of %zu bytes)", path,
                        (unsigned long long) (fsize > off ? fsize - off : 0), hlen);
    }
    char *text = (char *) malloc (hlen ? hlen : 1);
    if (!text) {
        fclose (f);
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", path);
    }
    //  The 1.0 prefix is 10 bytes: two header bytes may already be read.
    size_t early = got > off ? got - off : 0;
    if (early > hlen) {
        early = hlen;
    }
    memcpy (text, prefix + off, early);
    if (fseek (f, (long) (off + early), SEEK_SET) != 0
        || fread (text + early, 1, hlen - early, f) != hlen - early) {
        free (text);
        fclose (f);
        return zi_fail (err, errlen, ZI_ERR_IO, "%s: read error", path);
    }
    s_header_t h;
    rc = s_parse_dict (text, hlen, path, &h, err, errlen);
    free (text);
    size_t nbytes = 0;
    if (rc == ZI_OK) {
        rc = s_header_nbytes (&h, path, &nbytes, err, errlen);
    }
    if (rc) {
        fclose (f);
        return rc;
    }
    uint64_t have = fsize - off - hlen;
    if (have != (uint64_t) nbytes) {
        fclose (f);
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: npy data is %llu bytes, dtype %s shape needs %zu (%s)", path,
                        (unsigned long long) have, zi_dtype_name (h.dtype), nbytes,
                        have < nbytes ? "truncated" : "trailing bytes");
    }
    zi_tensor_t *t = zi_tensor_new (h.dtype, h.rank, h.shape);
    if (!t) {
        fclose (f);
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", path);
    }
    if (fseek (f, (long) (off + hlen), SEEK_SET) != 0
        || fread (t->data, 1, nbytes, f) != nbytes) {
        zi_tensor_destroy (&t);
        fclose (f);
        return zi_fail (err, errlen, ZI_ERR_IO, "%s: read error", path);
    }
    fclose (f);
    if (h.dtype == ZI_DT_BOOL) {
        s_bool_normalize (t);
    }
    *out = t;
    return ZI_OK;
}

//  -------------------------------------------------------------------------
//  Writing

//  Build the prefix + header for t into a malloc'ed buffer.
static int
s_make_header (const zi_tensor_t *t, uint8_t **hdr_p, size_t *len_p, char *err,
               size_t errlen)
{
    const char *descr = NULL;
    for (size_t i = 0; i < S_NDTYPES; i++) {
        if (s_dtypes[i].dtype == t->dtype) {
            descr = s_dtypes[i].descr;
            break;
        }
    }
    if (!descr) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                        "npy: dtype %s has no numpy equivalent", zi_dtype_name (t->dtype));
    }
    if (t->rank < 0 || t->rank > ZI_MAX_RANK) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "npy: bad rank %d", t->rank);
    }
    char dict[512];
    size_t n = (size_t) snprintf (dict, sizeof dict,
                                  "{'descr': '%s', 'fortran_order': False, 'shape': (",
                                  descr);
    for (int i = 0; i < t->rank; i++) {
        n += (size_t) snprintf (dict + n, sizeof dict - n, "%s%lld", i ? ", " : "",
                                (long long) t->ne[i]);
    }
    n += (size_t) snprintf (dict + n, sizeof dict - n, "%s), }",
                            t->rank == 1 ? "," : "");
    //  Pad with spaces + '\n' so the data starts 64-byte aligned, as numpy
    //  does. At most ~8*20 + 80 bytes: version 1.0 always suffices.
    size_t total = 10 + n + 1;
    total = (total + 63) / 64 * 64;
    uint8_t *hdr = (uint8_t *) malloc (total);
    if (!hdr) {
        return ZI_ERR_NOMEM;
    }
    size_t hlen = total - 10;
    memcpy (hdr, s_magic, sizeof s_magic);
    hdr[6] = 1;
    hdr[7] = 0;
    hdr[8] = (uint8_t) (hlen & 0xff);
    hdr[9] = (uint8_t) (hlen >> 8);
    memcpy (hdr + 10, dict, n);
    memset (hdr + 10 + n, ' ', total - 10 - n - 1);
    hdr[total - 1] = '\n';
    *hdr_p = hdr;
    *len_p = total;
    return ZI_OK;
}

int
zi_npy_write_buffer (const zi_tensor_t *t, void **buf_p, size_t *len_p, char *err,
                     size_t errlen)
{
    if (!t || !buf_p || !len_p) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "zi_npy_write_buffer: bad arguments");
    }
    *buf_p = NULL;
    *len_p = 0;
    uint8_t *hdr;
    size_t hlen;
    int rc = s_make_header (t, &hdr, &hlen, err, errlen);
    if (rc) {
        return rc;
    }
    //  Strided tensors are written through a contiguous copy.
    zi_tensor_t *copy = NULL;
    const zi_tensor_t *src = t;
    if (!zi_tensor_is_contiguous (t)) {
        copy = zi_tensor_dup (t);
        if (!copy) {
            free (hdr);
            return zi_fail (err, errlen, ZI_ERR_NOMEM, "npy: out of memory");
        }
        src = copy;
    }
    size_t nbytes;
    if (zi_shape_nbytes (src->dtype, src->rank, src->ne, &nbytes)
        || nbytes > SIZE_MAX - hlen) {
        free (hdr);
        zi_tensor_destroy (&copy);
        return zi_fail (err, errlen, ZI_ERR_OVERFLOW, "npy: tensor is too large");
    }
    uint8_t *buf = (uint8_t *) realloc (hdr, hlen + nbytes);
    if (!buf) {
        free (hdr);
        zi_tensor_destroy (&copy);
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "npy: out of memory");
    }
    if (nbytes) {
        memcpy (buf + hlen, src->data, nbytes);
    }
    zi_tensor_destroy (&copy);
    *buf_p = buf;
    *len_p = hlen + nbytes;
    return ZI_OK;
}

int
zi_npy_write (const char *path, const zi_tensor_t *t, char *err, size_t errlen)
{
    if (!path || !t) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "zi_npy_write: bad arguments");
    }
    uint8_t *hdr;
    size_t hlen;
    char why[256];
    int rc = s_make_header (t, &hdr, &hlen, why, sizeof why);
    if (rc) {
        return zi_fail (err, errlen, rc, "%s: %s", path, why);
    }
    //  Stream the data after the header rather than building the whole file
    //  in memory: weights and batches can be large.
    zi_tensor_t *copy = NULL;
    const zi_tensor_t *src = t;
    if (!zi_tensor_is_contiguous (t)) {
        copy = zi_tensor_dup (t);
        if (!copy) {
            free (hdr);
            return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", path);
        }
        src = copy;
    }
    size_t nbytes;
    if (zi_shape_nbytes (src->dtype, src->rank, src->ne, &nbytes)) {
        free (hdr);
        zi_tensor_destroy (&copy);
        return zi_fail (err, errlen, ZI_ERR_OVERFLOW, "%s: tensor is too large", path);
    }
    FILE *f = fopen (path, "wb");
    if (!f) {
        rc = zi_fail (err, errlen, ZI_ERR_IO, "%s: %s", path, strerror (errno));
        free (hdr);
        zi_tensor_destroy (&copy);
        return rc;
    }
    bool ok = fwrite (hdr, 1, hlen, f) == hlen
              && (nbytes == 0 || fwrite (src->data, 1, nbytes, f) == nbytes);
    free (hdr);
    zi_tensor_destroy (&copy);
    if (fclose (f) != 0) {
        ok = false;
    }
    if (!ok) {
        return zi_fail (err, errlen, ZI_ERR_IO, "%s: write error", path);
    }
    return ZI_OK;
}
