/*  test_idx.c - IDX files: the Fashion-MNIST layout, byte order, bad input. */
#include <criterion/criterion.h>
#include <string.h>

#include "zi_idx.h"

Test (idx, reads_u8_images)
{
    //  2 images of 2x3, u8
    uint8_t buf[4 + 12 + 12] = {0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3};
    for (int i = 0; i < 12; i++) {
        buf[16 + i] = (uint8_t) (i * 20);
    }
    zi_tensor_t *t = NULL;
    char err[256];
    cr_assert_eq (zi_idx_parse (buf, sizeof buf, &t, err, sizeof err), 0, "%s", err);
    cr_assert_eq (t->dtype, ZI_DT_U8);
    cr_assert_eq (t->rank, 3);
    cr_assert_eq (t->ne[0], 2);
    cr_assert_eq (t->ne[2], 3);
    cr_assert_eq (((uint8_t *) t->data)[11], 220);
    zi_tensor_destroy (&t);
}

Test (idx, swaps_big_endian_int32)
{
    uint8_t buf[] = {0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 1, 2, 0xff, 0xff, 0xff, 0xfe};
    zi_tensor_t *t = NULL;
    char err[256];
    cr_assert_eq (zi_idx_parse (buf, sizeof buf, &t, err, sizeof err), 0, "%s", err);
    cr_assert_eq (((int32_t *) t->data)[0], 258);
    cr_assert_eq (((int32_t *) t->data)[1], -2);
    zi_tensor_destroy (&t);
}

Test (idx, every_truncation_and_lie_is_an_error)
{
    uint8_t good[] = {0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4};
    char err[256];
    zi_tensor_t *t = NULL;
    for (size_t len = 0; len < sizeof good; len++) {
        cr_assert_neq (zi_idx_parse (good, len, &t, err, sizeof err), 0, "len %zu", len);
        cr_assert_null (t);
    }
    //  a header claiming 2^32-1 x 2^32-1 elements with 4 bytes of data
    uint8_t liar[] = {0, 0, 0x08, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4};
    cr_assert_eq (zi_idx_parse (liar, sizeof liar, &t, err, sizeof err), ZI_ERR_MALFORMED);
    uint8_t badtype[] = {0, 0, 0x07, 1, 0, 0, 0, 1, 0};
    cr_assert_eq (zi_idx_parse (badtype, sizeof badtype, &t, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "element type"), "%s", err);
    uint8_t rank0[] = {0, 0, 0x08, 0};
    cr_assert_eq (zi_idx_parse (rank0, sizeof rank0, &t, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert_eq (zi_idx_read ("/nonexistent/file", &t, err, sizeof err), ZI_ERR_IO);
    cr_assert (strstr (err, "/nonexistent/file"), "%s", err);
}
