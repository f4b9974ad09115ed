/*  test_tensor.c - tensors: sizes, overflow, views, slices, dtypes, f16. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "zi_tensor.h"

Test (tensor, new_is_zeroed_contiguous_row_major)
{
    zi_tensor_t *t = zi_tensor_new (ZI_DT_F32, 3, (int64_t[]){2, 3, 4});
    cr_assert_not_null (t);
    cr_assert_eq (t->rank, 3);
    cr_assert_eq (t->nbytes, 2 * 3 * 4 * sizeof (float));
    //  byte strides, innermost contiguous
    cr_assert_eq (t->nb[2], 4);
    cr_assert_eq (t->nb[1], 16);
    cr_assert_eq (t->nb[0], 48);
    cr_assert (zi_tensor_is_contiguous (t));
    cr_assert_eq (zi_tensor_count (t), 24);
    const float *x = (const float *) t->data;
    for (int i = 0; i < 24; i++) {
        cr_assert_eq (x[i], 0.0f);
    }
    zi_tensor_destroy (&t);
    cr_assert_null (t);
    zi_tensor_destroy (&t);     //  safe twice
    zi_tensor_destroy (NULL);
}

Test (tensor, every_dtype_has_its_size)
{
    struct { zi_dtype_t dt; size_t size; const char *name; } cases[] = {
        {ZI_DT_F32, 4, "float32"}, {ZI_DT_F16, 2, "float16"}, {ZI_DT_I64, 8, "int64"},
        {ZI_DT_I32, 4, "int32"},   {ZI_DT_I8, 1, "int8"},     {ZI_DT_U8, 1, "uint8"},
        {ZI_DT_BOOL, 1, "bool"},   {ZI_DT_F64, 8, "float64"}, {ZI_DT_I16, 2, "int16"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_eq (zi_dtype_size (cases[i].dt), cases[i].size, "%s", cases[i].name);
        cr_assert_str_eq (zi_dtype_name (cases[i].dt), cases[i].name);
        cr_assert_eq (zi_dtype_from_name (cases[i].name), cases[i].dt);
        cr_assert (zi_dtype_valid (cases[i].dt));
    }
    cr_assert_eq (zi_dtype_from_name ("<f4"), ZI_DT_F32);
    cr_assert_eq (zi_dtype_from_name ("|u1"), ZI_DT_U8);
    cr_assert_eq (zi_dtype_from_name (">f4"), ZI_DT_UNDEFINED);
    cr_assert_eq (zi_dtype_from_name ("complex64"), ZI_DT_UNDEFINED);
    cr_assert_eq (zi_dtype_size (ZI_DT_STRING), 0);
    cr_assert_not (zi_dtype_valid (ZI_DT_STRING));
    cr_assert_not (zi_dtype_valid (99));
    cr_assert_not (zi_dtype_valid (-1));
}

Test (tensor, scalar_and_empty_tensors)
{
    zi_tensor_t *s = zi_tensor_new (ZI_DT_I64, 0, NULL);
    cr_assert_not_null (s);
    cr_assert_eq (zi_tensor_count (s), 1);
    cr_assert_eq (s->nbytes, 8);
    zi_tensor_destroy (&s);

    zi_tensor_t *e = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){0, 5});
    cr_assert_not_null (e);
    cr_assert_eq (zi_tensor_count (e), 0);
    cr_assert_eq (e->nbytes, 0);
    cr_assert_not_null (e->data);   //  always has storage
    zi_tensor_destroy (&e);
}

Test (tensor, bad_shapes_are_refused)
{
    cr_assert_null (zi_tensor_new (ZI_DT_F32, 1, (int64_t[]){-1}));
    cr_assert_null (zi_tensor_new (ZI_DT_F32, ZI_MAX_RANK + 1,
                                   (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}));
    cr_assert_null (zi_tensor_new (ZI_DT_F32, -1, NULL));
    cr_assert_null (zi_tensor_new (ZI_DT_STRING, 1, (int64_t[]){4}));
    cr_assert_null (zi_tensor_new ((zi_dtype_t) 42, 1, (int64_t[]){4}));
}

Test (tensor, size_overflow_is_detected_not_wrapped)
{
    int64_t count;
    size_t nbytes;
    //  2^62 elements: the count fits int64, the bytes do not
    int64_t big[] = {INT64_C (1) << 31, INT64_C (1) << 31};
    cr_assert_eq (zi_shape_count (2, big, &count), ZI_OK);
    cr_assert_eq (zi_shape_nbytes (ZI_DT_F32, 2, big, &nbytes), ZI_ERR_OVERFLOW);
    //  the count itself overflows
    int64_t huge[] = {INT64_C (1) << 40, INT64_C (1) << 40};
    cr_assert_eq (zi_shape_count (2, huge, &count), ZI_ERR_OVERFLOW);
    cr_assert_null (zi_tensor_new (ZI_DT_F32, 2, huge));
    //  a 0 dim anywhere makes the tensor empty, but a huge pair still overflows
    int64_t zero_then_huge[] = {0, INT64_C (1) << 40, INT64_C (1) << 40};
    cr_assert_eq (zi_shape_count (3, zero_then_huge, &count), ZI_ERR_OVERFLOW);
    int64_t zero_ok[] = {0, INT64_C (1) << 40};
    cr_assert_eq (zi_shape_count (2, zero_ok, &count), ZI_OK);
    cr_assert_eq (count, 0);
    //  exactly at the int64 byte limit
    int64_t edge[] = {INT64_MAX / 8 + 1};
    cr_assert_eq (zi_shape_nbytes (ZI_DT_I64, 1, edge, &nbytes), ZI_ERR_OVERFLOW);
}

Test (tensor, views_borrow_and_check_length)
{
    float buf[6] = {1, 2, 3, 4, 5, 6};
    zi_tensor_t *v = zi_tensor_new_view (ZI_DT_F32, 2, (int64_t[]){2, 3}, buf, sizeof buf);
    cr_assert_not_null (v);
    cr_assert_eq (v->data, (void *) buf);
    cr_assert_not (v->owns_data);
    zi_tensor_destroy (&v);         //  must not free buf
    cr_assert_eq (buf[5], 6.0f);

    //  wrong length for the shape
    cr_assert_null (zi_tensor_new_view (ZI_DT_F32, 2, (int64_t[]){2, 4}, buf, sizeof buf));
    zi_tensor_t on_stack;
    cr_assert_eq (zi_tensor_init_view (&on_stack, ZI_DT_F32, 1, (int64_t[]){6}, buf,
                                       sizeof buf), ZI_OK);
    cr_assert_eq (zi_tensor_init_view (&on_stack, ZI_DT_F32, 1, (int64_t[]){7}, buf,
                                       sizeof buf), ZI_ERR_SHAPE);
}

Test (tensor, slice_rows_is_a_micro_batch_view)
{
    zi_tensor_t *t = zi_tensor_new (ZI_DT_I32, 2, (int64_t[]){4, 3});
    int32_t *x = (int32_t *) t->data;
    for (int i = 0; i < 12; i++) {
        x[i] = i;
    }
    zi_tensor_t mb;
    cr_assert_eq (zi_tensor_slice_rows (t, 1, 2, &mb), ZI_OK);
    cr_assert_eq (mb.ne[0], 2);
    cr_assert_eq (mb.ne[1], 3);
    cr_assert_eq (mb.nbytes, 2 * 3 * 4);
    cr_assert_eq (((int32_t *) mb.data)[0], 3);
    cr_assert_not (mb.owns_data);
    cr_assert_eq (zi_tensor_slice_rows (t, 3, 2, &mb), ZI_ERR_INVALID);
    cr_assert_eq (zi_tensor_slice_rows (t, -1, 1, &mb), ZI_ERR_INVALID);
    cr_assert_eq (zi_tensor_slice_rows (t, 4, 0, &mb), ZI_OK);
    cr_assert_eq (mb.nbytes, 0);
    zi_tensor_destroy (&t);
}

Test (tensor, dup_copies_strided_views)
{
    zi_tensor_t *t = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){2, 3});
    float *x = (float *) t->data;
    for (int i = 0; i < 6; i++) {
        x[i] = (float) i;
    }
    //  a transposed view: (3,2) with swapped strides
    zi_tensor_t tr = *t;
    tr.owns_data = false;
    tr.ne[0] = 3;
    tr.ne[1] = 2;
    tr.nb[0] = 4;
    tr.nb[1] = 12;
    cr_assert_not (zi_tensor_is_contiguous (&tr));
    zi_tensor_t *c = zi_tensor_dup (&tr);
    cr_assert (zi_tensor_is_contiguous (c));
    const float *y = (const float *) c->data;
    //  y[i][j] == x[j][i]
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 2; j++) {
            cr_assert_eq (y[i * 2 + j], x[j * 3 + i]);
        }
    }
    zi_tensor_destroy (&c);
    zi_tensor_destroy (&t);
}

Test (tensor, shape_strings)
{
    char buf[64];
    zi_tensor_t *t = zi_tensor_new (ZI_DT_U8, 3, (int64_t[]){1, 28, 28});
    cr_assert_str_eq (zi_tensor_shape_str (t, buf, sizeof buf), "[1,28,28]");
    cr_assert_str_eq (zi_shape_str (0, NULL, buf, sizeof buf), "[]");
    zi_tensor_destroy (&t);
}

Test (tensor, half_precision_round_trips)
{
    //  every finite half converts to float and back exactly
    for (uint32_t h = 0; h < 0x10000; h++) {
        uint16_t x = (uint16_t) h;
        if ((x & 0x7c00) == 0x7c00) {
            continue;       //  inf / nan checked below
        }
        float f = zi_f16_to_f32 (x);
        cr_assert_eq (zi_f32_to_f16 (f), x, "half 0x%04x -> %g", x, f);
    }
    cr_assert_eq (zi_f16_to_f32 (0x3c00), 1.0f);
    cr_assert_eq (zi_f16_to_f32 (0xc000), -2.0f);
    cr_assert (isinf (zi_f16_to_f32 (0x7c00)));
    cr_assert (isnan (zi_f16_to_f32 (0x7e00)));
    cr_assert_eq (zi_f32_to_f16 (65520.0f), 0x7c00);   //  rounds to inf
    cr_assert_eq (zi_f32_to_f16 (1.0f + 1.0f / 4096), 0x3c00);  //  ties to even
    cr_assert_eq (zi_bf16_to_f32 (0x3f80), 1.0f);
}

Test (tensor, empty_shapes_with_overflowing_strides_are_refused)
{
    //  0 bytes in all, but the strides of the other dims would overflow
    int64_t shape[] = {0, INT64_C (1) << 40, INT64_C (1) << 40};
    size_t nbytes;
    cr_assert_eq (zi_shape_nbytes (ZI_DT_F32, 3, shape, &nbytes), ZI_ERR_OVERFLOW);
    cr_assert_null (zi_tensor_new (ZI_DT_F32, 3, shape));
}
