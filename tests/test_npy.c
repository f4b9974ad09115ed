/*  test_npy.c - numpy .npy reading and writing (lib/zi_npy.c).

    Files under tests/data/npy/ were written by numpy itself
    (tests/data/npy/make_npy.py); the malformed cases are built here.
*/
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zi_npy.h"

#define NPY_DIR ZI_SOURCE_DIR "/tests/data/npy/"

static zi_tensor_t *
s_read_ok (const char *name)
{
    char err[256] = "";
    zi_tensor_t *t = NULL;
    int rc = zi_npy_read (name, &t, err, sizeof err);
    cr_assert_eq (rc, 0, "%s: %s", name, err);
    cr_assert_not_null (t);
    return t;
}

//  Decode a buffer that must fail; returns the code and leaves the message.
static int
s_decode_fails (const void *buf, size_t len, char *err, size_t errlen)
{
    zi_tensor_t *t = (zi_tensor_t *) 1;
    int rc = zi_npy_read_buffer (buf, len, "case.npy", &t, err, errlen);
    cr_assert_lt (rc, 0, "decoded unexpectedly (len %zu)", len);
    cr_assert_null (t);
    return rc;
}

//  Build a version 1.0 file from a header dict text and `ndata` data bytes.
static size_t
s_make_file (uint8_t *out, size_t cap, const char *dict, size_t ndata)
{
    size_t dlen = strlen (dict);
    size_t hlen = dlen + 1;
    size_t total = 10 + hlen + ndata;
    cr_assert_leq (total, cap);
    memcpy (out, "\x93NUMPY\x01\x00", 8);
    out[8] = (uint8_t) (hlen & 0xff);
    out[9] = (uint8_t) (hlen >> 8);
    memcpy (out + 10, dict, dlen);
    out[10 + dlen] = '\n';
    memset (out + 10 + hlen, 0, ndata);
    return total;
}

Test (npy, reads_files_written_by_numpy)
{
    zi_tensor_t *t = s_read_ok (NPY_DIR "f32_2x3.npy");
    cr_assert_eq (t->dtype, ZI_DT_F32);
    cr_assert_eq (t->rank, 2);
    cr_assert (t->ne[0] == 2 && t->ne[1] == 3);
    for (int i = 0; i < 6; i++) {
        cr_assert_float_eq (((float *) t->data)[i], i * 0.5f, 1e-7);
    }
    zi_tensor_destroy (&t);

    t = s_read_ok (NPY_DIR "f64_scalar.npy");
    cr_assert_eq (t->dtype, ZI_DT_F64);
    cr_assert_eq (t->rank, 0);
    cr_assert_eq (*(double *) t->data, 3.25);
    zi_tensor_destroy (&t);

    t = s_read_ok (NPY_DIR "f16_vec.npy");
    cr_assert_eq (t->dtype, ZI_DT_F16);
    cr_assert_eq (t->ne[0], 4);
    const uint16_t *h = (const uint16_t *) t->data;
    cr_assert_eq (zi_f16_to_f32 (h[0]), 1.0f);
    cr_assert_eq (zi_f16_to_f32 (h[1]), -2.5f);
    cr_assert_eq (zi_f16_to_f32 (h[3]), 65504.0f);
    zi_tensor_destroy (&t);

    t = s_read_ok (NPY_DIR "i64_vec.npy");
    cr_assert_eq (t->dtype, ZI_DT_I64);
    cr_assert (t->rank == 1 && t->ne[0] == 5);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq (((int64_t *) t->data)[i], i - 2);
    }
    zi_tensor_destroy (&t);

    t = s_read_ok (NPY_DIR "i32_2x2x2.npy");
    cr_assert (t->dtype == ZI_DT_I32 && t->rank == 3);
    for (int i = 0; i < 8; i++) {
        cr_assert_eq (((int32_t *) t->data)[i], i - 4);
    }
    zi_tensor_destroy (&t);

    t = s_read_ok (NPY_DIR "i16_vec.npy");
    cr_assert_eq (t->dtype, ZI_DT_I16);
    cr_assert_eq (((int16_t *) t->data)[0], -32768);
    cr_assert_eq (((int16_t *) t->data)[2], 32767);
    zi_tensor_destroy (&t);

    t = s_read_ok (NPY_DIR "i8_vec.npy");
    cr_assert_eq (t->dtype, ZI_DT_I8);
    cr_assert_eq (((int8_t *) t->data)[0], -128);
    cr_assert_eq (((int8_t *) t->data)[3], 127);
    zi_tensor_destroy (&t);

    t = s_read_ok (NPY_DIR "u8_3x4.npy");
    cr_assert (t->dtype == ZI_DT_U8 && t->ne[0] == 3 && t->ne[1] == 4);
    cr_assert_eq (((uint8_t *) t->data)[11], 220);
    zi_tensor_destroy (&t);

    t = s_read_ok (NPY_DIR "u16_vec.npy");
    cr_assert_eq (t->dtype, ZI_DT_U16);
    cr_assert_eq (((uint16_t *) t->data)[2], 65535);
    zi_tensor_destroy (&t);

    t = s_read_ok (NPY_DIR "bool_vec.npy");
    cr_assert_eq (t->dtype, ZI_DT_BOOL);
    cr_assert (memcmp (t->data, "\1\0\1", 3) == 0);
    zi_tensor_destroy (&t);

    t = s_read_ok (NPY_DIR "f32_empty_0x3.npy");
    cr_assert (t->rank == 2 && t->ne[0] == 0 && t->ne[1] == 3 && t->nbytes == 0);
    zi_tensor_destroy (&t);
}

Test (npy, reads_versions_2_and_3)
{
    const char *names[] = {NPY_DIR "f32_v2.npy", NPY_DIR "f32_v3.npy"};
    for (int k = 0; k < 2; k++) {
        zi_tensor_t *t = s_read_ok (names[k]);
        cr_assert (t->dtype == ZI_DT_F32 && t->rank == 1 && t->ne[0] == 4);
        cr_assert_eq (((float *) t->data)[3], 3.0f);
        zi_tensor_destroy (&t);
    }
}

Test (npy, refuses_fortran_order_and_big_endian_by_name)
{
    char err[256];
    zi_tensor_t *t = NULL;
    int rc = zi_npy_read (NPY_DIR "f32_fortran.npy", &t, err, sizeof err);
    cr_assert_eq (rc, ZI_ERR_UNSUPPORTED);
    cr_assert_null (t);
    cr_assert (strstr (err, "f32_fortran.npy") && strstr (err, "Fortran"), "%s", err);

    rc = zi_npy_read (NPY_DIR "f32_bigendian.npy", &t, err, sizeof err);
    cr_assert_eq (rc, ZI_ERR_UNSUPPORTED);
    cr_assert (strstr (err, "'>f4'") && strstr (err, "big-endian"), "%s", err);

    rc = zi_npy_read (NPY_DIR "no_such_file.npy", &t, err, sizeof err);
    cr_assert_eq (rc, ZI_ERR_NOTFOUND);
    cr_assert (strstr (err, "no_such_file.npy"), "%s", err);
}

//  Every dtype through memory and through a file, with a rank-3 shape,
//  a scalar, a vector and an empty tensor.
Test (npy, round_trips_every_dtype)
{
    const zi_dtype_t dtypes[] = {ZI_DT_F32, ZI_DT_F64, ZI_DT_F16, ZI_DT_I64,
                                 ZI_DT_I32, ZI_DT_I16, ZI_DT_I8,  ZI_DT_U64,
                                 ZI_DT_U32, ZI_DT_U16, ZI_DT_U8,  ZI_DT_BOOL};
    const int64_t shapes[][3] = {{2, 3, 4}, {0, 0, 0}, {7, 0, 0}, {0, 5, 0}};
    const int ranks[] = {3, 0, 1, 2};
    char dir[] = "/tmp/zi_npy_XXXXXX";
    cr_assert_not_null (mkdtemp (dir));
    char path[256];
    snprintf (path, sizeof path, "%s/t.npy", dir);
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        for (int s = 0; s < 4; s++) {
            zi_tensor_t *t = zi_tensor_new (dtypes[d], ranks[s], shapes[s]);
            cr_assert_not_null (t);
            uint8_t *p = (uint8_t *) t->data;
            for (size_t i = 0; i < t->nbytes; i++) {
                p[i] = dtypes[d] == ZI_DT_BOOL ? (uint8_t) (i % 2)
                                               : (uint8_t) (i * 37 + 11);
            }
            void *buf;
            size_t len;
            char err[256];
            cr_assert_eq (zi_npy_write_buffer (t, &buf, &len, err, sizeof err), 0, "%s",
                          err);
            zi_tensor_t *back = NULL;
            cr_assert_eq (zi_npy_read_buffer (buf, len, NULL, &back, err, sizeof err), 0,
                          "%s", err);
            cr_assert (zi_tensor_same_shape (t, back), "dtype %s", zi_dtype_name (dtypes[d]));
            cr_assert (t->nbytes == 0 || memcmp (t->data, back->data, t->nbytes) == 0);
            //  numpy aligns the data to 64 bytes; so do we
            cr_assert_eq ((len - t->nbytes) % 64, 0);
            free (buf);
            zi_tensor_destroy (&back);

            cr_assert_eq (zi_npy_write (path, t, err, sizeof err), 0, "%s", err);
            cr_assert_eq (zi_npy_read (path, &back, err, sizeof err), 0, "%s", err);
            cr_assert (zi_tensor_same_shape (t, back));
            cr_assert (t->nbytes == 0 || memcmp (t->data, back->data, t->nbytes) == 0);
            zi_tensor_destroy (&back);
            zi_tensor_destroy (&t);
        }
    }
    unlink (path);
    rmdir (dir);
}

Test (npy, writes_strided_tensors_in_c_order)
{
    //  A transposed view of x (2,3): element [i][j] of the view is x[j][i].
    float x[6] = {0, 1, 2, 3, 4, 5};
    zi_tensor_t v;
    cr_assert_eq (zi_tensor_init_view (&v, ZI_DT_F32, 2, (int64_t[]){3, 2}, x, sizeof x), 0);
    v.nb[0] = 4;
    v.nb[1] = 12;
    void *buf;
    size_t len;
    char err[256];
    cr_assert_eq (zi_npy_write_buffer (&v, &buf, &len, err, sizeof err), 0, "%s", err);
    zi_tensor_t *back = NULL;
    cr_assert_eq (zi_npy_read_buffer (buf, len, NULL, &back, err, sizeof err), 0, "%s", err);
    const float want[6] = {0, 3, 1, 4, 2, 5};
    cr_assert (memcmp (back->data, want, sizeof want) == 0);
    free (buf);
    zi_tensor_destroy (&back);
}

Test (npy, numpy_reads_what_we_write)
{
    if (access ("/usr/bin/python3", X_OK) != 0
        || system ("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0) {
        cr_skip_test ("python3-numpy is not installed");
    }
    char dir[] = "/tmp/zi_npy_XXXXXX";
    cr_assert_not_null (mkdtemp (dir));
    char path[256], cmd[1024], err[256];
    snprintf (path, sizeof path, "%s/w.npy", dir);
    zi_tensor_t *t = zi_tensor_new (ZI_DT_I16, 2, (int64_t[]){2, 3});
    for (int i = 0; i < 6; i++) {
        ((int16_t *) t->data)[i] = (int16_t) (i * 100 - 250);
    }
    cr_assert_eq (zi_npy_write (path, t, err, sizeof err), 0, "%s", err);
    snprintf (cmd, sizeof cmd,
              "/usr/bin/python3 -c \"import numpy as np; a = np.load('%s'); "
              "assert a.dtype == np.int16 and a.shape == (2, 3), a; "
              "assert (a.ravel() == np.arange(6) * 100 - 250).all(), a\"",
              path);
    cr_assert_eq (system (cmd), 0, "numpy could not read %s", path);
    zi_tensor_destroy (&t);
    unlink (path);
    rmdir (dir);
}

Test (npy, truncation_at_every_byte_is_an_error)
{
    FILE *f = fopen (NPY_DIR "i32_2x2x2.npy", "rb");
    cr_assert_not_null (f);
    uint8_t buf[512];
    size_t len = fread (buf, 1, sizeof buf, f);
    fclose (f);
    for (size_t n = 0; n < len; n++) {
        char err[256];
        s_decode_fails (buf, n, err, sizeof err);
        cr_assert (strstr (err, "case.npy"), "%s", err);
    }
    //  and one byte too many
    buf[len] = 0;
    char err[256];
    s_decode_fails (buf, len + 1, err, sizeof err);
    cr_assert (strstr (err, "trailing"), "%s", err);
}

Test (npy, malformed_headers_are_refused_with_a_reason)
{
    static const struct {
        const char *dict;
        size_t ndata;
        int code;
        const char *why;
    } cases[] = {
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8, 0, NULL},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 4, ZI_ERR_MALFORMED, "truncated"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 12, ZI_ERR_MALFORMED, "trailing"},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", 8, ZI_ERR_UNSUPPORTED, "Fortran"},
        {"{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", 16, ZI_ERR_UNSUPPORTED, "'<c8'"},
        {"{'descr': 'O', 'fortran_order': False, 'shape': (2,), }", 16, ZI_ERR_UNSUPPORTED, "'O'"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8, ZI_ERR_MALFORMED, "descr"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", 8, ZI_ERR_MALFORMED, "negative"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2), }", 8, ZI_ERR_MALFORMED, "tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': [2], }", 8, ZI_ERR_MALFORMED, "tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,3, }", 8, ZI_ERR_MALFORMED, "shape"},
        {"{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", 8, ZI_ERR_MALFORMED, "fortran_order"},
        {"{'descr': '<f4', 'shape': (2,), }", 8, ZI_ERR_MALFORMED, "fortran_order"},
        {"{'fortran_order': False, 'shape': (2,), }", 8, ZI_ERR_MALFORMED, "descr"},
        {"{'descr': '<f4', 'fortran_order': False, }", 8, ZI_ERR_MALFORMED, "shape"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8, ZI_ERR_MALFORMED, "repeated"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", 8, ZI_ERR_MALFORMED, "'x'"},
        {"{'descr': '<f4' 'fortran_order': False, 'shape': (2,), }", 8, ZI_ERR_MALFORMED, "','"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } x", 8, ZI_ERR_MALFORMED, "after"},
        {"['descr', '<f4']", 8, ZI_ERR_MALFORMED, "dict"},
        {"{'descr': '<f4, 'fortran_order': False, 'shape': (2,), }", 8, ZI_ERR_UNSUPPORTED, "'<f4, '"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 4, ZI_ERR_LIMIT, "dimensions"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", 4, ZI_ERR_OVERFLOW, NULL},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,4), }", 4, ZI_ERR_OVERFLOW, NULL},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (0,4611686018427387904,4), }", 0, ZI_ERR_OVERFLOW, NULL},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (0,3), }", 0, 0, NULL},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 1L), }", 8, 0, NULL},
        {"{'descr': '|b1', 'fortran_order': False, 'shape': (), }", 1, 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t buf[512];
        size_t len = s_make_file (buf, sizeof buf, cases[i].dict, cases[i].ndata);
        char err[256] = "";
        zi_tensor_t *t = NULL;
        int rc = zi_npy_read_buffer (buf, len, "case.npy", &t, err, sizeof err);
        cr_assert_eq (rc, cases[i].code, "case %zu (%s): rc %d: %s", i, cases[i].dict, rc,
                      err);
        if (rc == 0) {
            cr_assert_not_null (t);
            zi_tensor_destroy (&t);
            continue;
        }
        cr_assert_null (t);
        cr_assert (strstr (err, "case.npy"), "case %zu: %s", i, err);
        if (cases[i].why) {
            cr_assert (strstr (err, cases[i].why), "case %zu: '%s' not in: %s", i,
                       cases[i].why, err);
        }
    }
}

Test (npy, bad_magic_version_and_header_length)
{
    uint8_t buf[512];
    size_t len = s_make_file (buf, sizeof buf,
                              "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8);
    char err[256];
    buf[1] = 'X';
    cr_assert_eq (s_decode_fails (buf, len, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "magic"), "%s", err);
    buf[1] = 'N';
    buf[6] = 4;
    cr_assert_eq (s_decode_fails (buf, len, err, sizeof err), ZI_ERR_VERSION);
    buf[6] = 1;
    buf[7] = 1;
    cr_assert_eq (s_decode_fails (buf, len, err, sizeof err), ZI_ERR_VERSION);
    buf[7] = 0;
    //  a header length larger than the buffer
    buf[8] = 0xff;
    buf[9] = 0x7f;
    cr_assert_eq (s_decode_fails (buf, len, err, sizeof err), ZI_ERR_MALFORMED);
    //  version 2.0 with a 4 GiB header length: refused before reading it
    uint8_t v2[16] = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0xff, 0xff, 0xff, 0xff};
    cr_assert_eq (s_decode_fails (v2, sizeof v2, err, sizeof err), ZI_ERR_LIMIT);
    //  header not ending in a newline
    len = s_make_file (buf, sizeof buf,
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8);
    buf[10 + buf[8] - 1] = ' ';
    cr_assert_eq (s_decode_fails (buf, len, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "newline"), "%s", err);
}

Test (npy, file_data_length_is_checked_before_allocating)
{
    //  A header claiming 2^40 floats over a 4-byte body must fail cleanly,
    //  without allocating 4 TiB.
    char dir[] = "/tmp/zi_npy_XXXXXX";
    cr_assert_not_null (mkdtemp (dir));
    char path[256];
    snprintf (path, sizeof path, "%s/big.npy", dir);
    uint8_t buf[512];
    size_t len = s_make_file (
        buf, sizeof buf,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }", 4);
    FILE *f = fopen (path, "wb");
    cr_assert_not_null (f);
    fwrite (buf, 1, len, f);
    fclose (f);
    zi_tensor_t *t = NULL;
    char err[256];
    cr_assert_eq (zi_npy_read (path, &t, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "big.npy") && strstr (err, "truncated"), "%s", err);
    //  and truncated inside the header
    f = fopen (path, "wb");
    fwrite (buf, 1, 40, f);
    fclose (f);
    cr_assert_eq (zi_npy_read (path, &t, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "header is truncated"), "%s", err);
    unlink (path);
    rmdir (dir);
}

Test (npy, bfloat16_cannot_be_written)
{
    zi_tensor_t *t = zi_tensor_new (ZI_DT_BF16, 1, (int64_t[]){2});
    void *buf = NULL;
    size_t len;
    char err[256];
    cr_assert_eq (zi_npy_write_buffer (t, &buf, &len, err, sizeof err), ZI_ERR_UNSUPPORTED);
    cr_assert (strstr (err, "bfloat16"), "%s", err);
    cr_assert_null (buf);
    cr_assert_eq (zi_npy_write ("/tmp/never_written.npy", t, err, sizeof err),
                  ZI_ERR_UNSUPPORTED);
    cr_assert_neq (access ("/tmp/never_written.npy", F_OK), 0);
    zi_tensor_destroy (&t);
}
