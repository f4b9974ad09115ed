/*  test_transform.c - preprocess / post-process ops against naive loops. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "zi_transform.h"

static zi_plan_io_t
s_io (zi_plan_op_t *ops, size_t n)
{
    zi_plan_io_t io;
    memset (&io, 0, sizeof io);
    io.tensor.name = (char *) "x";
    io.ops = ops;
    io.n_ops = n;
    return io;
}

Test (transform, check_names_dtype_and_shape)
{
    zi_plan_tensor_t decl = {(char *) "image", ZI_DT_U8, 4, {-1, 28, 28, 1}};
    char err[256];
    zi_tensor_t *t = zi_tensor_new (ZI_DT_U8, 4, (int64_t[]){5, 28, 28, 1});
    cr_assert_eq (zi_transform_check (&decl, t, err, sizeof err), 0);
    zi_tensor_destroy (&t);
    t = zi_tensor_new (ZI_DT_U8, 3, (int64_t[]){5, 28, 28});
    cr_assert_eq (zi_transform_check (&decl, t, err, sizeof err), ZI_ERR_SHAPE);
    cr_assert (strstr (err, "input 'image': shape [5,28,28], expected [?,28,28,1]"), "%s", err);
    zi_tensor_destroy (&t);
    t = zi_tensor_new (ZI_DT_F32, 4, (int64_t[]){5, 28, 28, 1});
    cr_assert_eq (zi_transform_check (&decl, t, err, sizeof err), ZI_ERR_SHAPE);
    cr_assert (strstr (err, "dtype float32, expected uint8"), "%s", err);
    zi_tensor_destroy (&t);
}

Test (transform, cast_scale_hwc_to_chw_like_numpy)
{
    //  x u8 (2,3,4,2) -> float32 (2,2,3,4) = x.transpose(0,3,1,2) / 255
    zi_tensor_t *x = zi_tensor_new (ZI_DT_U8, 4, (int64_t[]){2, 3, 4, 2});
    uint8_t *px = (uint8_t *) x->data;
    for (int i = 0; i < 48; i++) {
        px[i] = (uint8_t) (i * 5);
    }
    zi_plan_op_t ops[3] = {{.kind = ZI_PLAN_OP_CAST, .to = ZI_DT_F32},
                           {.kind = ZI_PLAN_OP_SCALE, .factor = 1.0 / 255},
                           {.kind = ZI_PLAN_OP_HWC_TO_CHW}};
    zi_plan_io_t io = s_io (ops, 3);
    zi_tensor_t *y = NULL;
    char err[256];
    cr_assert_eq (zi_transform_pre (&io, x, &y, err, sizeof err), 0, "%s", err);
    cr_assert_eq (y->dtype, ZI_DT_F32);
    cr_assert_eq (y->ne[1], 2);
    cr_assert_eq (y->ne[2], 3);
    cr_assert_eq (y->ne[3], 4);
    const float *py = (const float *) y->data;
    for (int n = 0; n < 2; n++)
        for (int c = 0; c < 2; c++)
            for (int h = 0; h < 3; h++)
                for (int w = 0; w < 4; w++) {
                    float want = (float) px[((n * 3 + h) * 4 + w) * 2 + c] * (float) (1.0 / 255);
                    cr_assert_float_eq (py[((n * 2 + c) * 3 + h) * 4 + w], want, 1e-7);
                }
    zi_tensor_destroy (&y);
    zi_tensor_destroy (&x);
}

Test (transform, normalize_per_channel_in_both_layouts)
{
    double mean[3] = {0.5, 1.0, -1.0}, std[3] = {2.0, 0.5, 4.0};
    zi_plan_op_t op = {.kind = ZI_PLAN_OP_NORMALIZE, .mean = mean, .n_mean = 3, .std = std,
                       .n_std = 3};
    zi_plan_io_t io = s_io (&op, 1);
    char err[256];
    //  NCHW (no hwc_to_chw in the list): channel is dim 1
    zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 4, (int64_t[]){1, 3, 2, 2});
    float *px = (float *) x->data;
    for (int i = 0; i < 12; i++) {
        px[i] = (float) i;
    }
    zi_tensor_t *y = NULL;
    cr_assert_eq (zi_transform_pre (&io, x, &y, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < 12; i++) {
        int c = i / 4;
        cr_assert_float_eq (((float *) y->data)[i], (float) ((i - mean[c]) / std[c]), 1e-6);
    }
    zi_tensor_destroy (&y);
    //  wrong channel count
    double m1[2] = {0, 0}, s1[2] = {1, 1};
    zi_plan_op_t bad = {.kind = ZI_PLAN_OP_NORMALIZE, .mean = m1, .n_mean = 2, .std = s1,
                        .n_std = 2};
    io = s_io (&bad, 1);
    cr_assert_eq (zi_transform_pre (&io, x, &y, err, sizeof err), ZI_ERR_SHAPE);
    cr_assert (strstr (err, "2 means, the tensor has 3 channels"), "%s", err);
    zi_tensor_destroy (&x);
}

Test (transform, resize_bilinear_and_nearest)
{
    char err[256];
    //  2x2 -> 4x4 bilinear with half-pixel centres: row 0 = a, .75a+.25b, ...
    zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 4, (int64_t[]){1, 1, 2, 2});
    float *px = (float *) x->data;
    px[0] = 0, px[1] = 4, px[2] = 8, px[3] = 12;
    zi_plan_op_t op = {.kind = ZI_PLAN_OP_RESIZE, .height = 4, .width = 4,
                       .mode = ZI_PLAN_RESIZE_BILINEAR};
    zi_plan_io_t io = s_io (&op, 1);
    zi_tensor_t *y = NULL;
    cr_assert_eq (zi_transform_pre (&io, x, &y, err, sizeof err), 0, "%s", err);
    const float want_row0[4] = {0, 1, 3, 4};
    const float want_col0[4] = {0, 2, 6, 8};
    for (int i = 0; i < 4; i++) {
        cr_assert_float_eq (((float *) y->data)[i], want_row0[i], 1e-6);
        cr_assert_float_eq (((float *) y->data)[i * 4], want_col0[i], 1e-6);
    }
    zi_tensor_destroy (&y);
    //  4x4 -> 2x2 bilinear averages each 2x2 block (half-pixel centres)
    zi_tensor_t *big = zi_tensor_new (ZI_DT_F32, 3, (int64_t[]){1, 4, 4});
    for (int i = 0; i < 16; i++) {
        ((float *) big->data)[i] = (float) i;
    }
    op.height = 2, op.width = 2;
    cr_assert_eq (zi_transform_pre (&io, big, &y, err, sizeof err), 0, "%s", err);
    cr_assert_float_eq (((float *) y->data)[0], (0 + 1 + 4 + 5) / 4.0f, 1e-6);
    cr_assert_float_eq (((float *) y->data)[3], (10 + 11 + 14 + 15) / 4.0f, 1e-6);
    zi_tensor_destroy (&y);
    //  nearest 2x2 -> 4x4 repeats pixels
    op.mode = ZI_PLAN_RESIZE_NEAREST, op.height = 4, op.width = 4;
    cr_assert_eq (zi_transform_pre (&io, x, &y, err, sizeof err), 0, "%s", err);
    cr_assert_float_eq (((float *) y->data)[1], 0, 1e-6);
    cr_assert_float_eq (((float *) y->data)[2], 4, 1e-6);
    cr_assert_float_eq (((float *) y->data)[15], 12, 1e-6);
    zi_tensor_destroy (&y);
    zi_tensor_destroy (&big);
    zi_tensor_destroy (&x);
}

Test (transform, pad_and_errors)
{
    char err[256];
    zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 3, (int64_t[]){1, 2, 2});
    for (int i = 0; i < 4; i++) {
        ((float *) x->data)[i] = (float) (i + 1);
    }
    int64_t pads[4] = {1, 0, 0, 1};     //  H begin 1, W end 1
    zi_plan_op_t op = {.kind = ZI_PLAN_OP_PAD, .pads = pads, .n_pads = 4, .value = -1};
    zi_plan_io_t io = s_io (&op, 1);
    zi_tensor_t *y = NULL;
    cr_assert_eq (zi_transform_pre (&io, x, &y, err, sizeof err), 0, "%s", err);
    cr_assert_eq (y->ne[1], 3);
    cr_assert_eq (y->ne[2], 3);
    const float want[9] = {-1, -1, -1, 1, 2, -1, 3, 4, -1};
    cr_assert_eq (memcmp (y->data, want, sizeof want), 0);
    zi_tensor_destroy (&y);
    //  scale on uint8 asks for a cast first
    zi_tensor_t *u = zi_tensor_new (ZI_DT_U8, 2, (int64_t[]){1, 4});
    zi_plan_op_t sc = {.kind = ZI_PLAN_OP_SCALE, .factor = 2};
    io = s_io (&sc, 1);
    cr_assert_eq (zi_transform_pre (&io, u, &y, err, sizeof err), ZI_ERR_SHAPE);
    cr_assert (strstr (err, "add cast=float32 before it"), "%s", err);
    //  hwc_to_chw needs rank 4
    zi_plan_op_t hc = {.kind = ZI_PLAN_OP_HWC_TO_CHW};
    io = s_io (&hc, 1);
    cr_assert_eq (zi_transform_pre (&io, u, &y, err, sizeof err), ZI_ERR_SHAPE);
    zi_tensor_destroy (&u);
    zi_tensor_destroy (&x);
}

Test (transform, post_softmax_argmax_topk)
{
    char err[256];
    zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){2, 4});
    const float v[8] = {1, 3, 2, 0, -1, -5, 7, 7};
    memcpy (x->data, v, sizeof v);
    zi_plan_op_t ops[2] = {{.kind = ZI_PLAN_OP_SOFTMAX}, {.kind = ZI_PLAN_OP_ARGMAX}};
    zi_plan_io_t io = s_io (ops, 2);
    zi_tensor_t *y = NULL, *extra = NULL;
    cr_assert_eq (zi_transform_post (&io, x, &y, &extra, err, sizeof err), 0, "%s", err);
    cr_assert_eq (y->dtype, ZI_DT_I64);
    cr_assert_eq (y->rank, 1);
    cr_assert_eq (((int64_t *) y->data)[0], 1);
    cr_assert_eq (((int64_t *) y->data)[1], 2);     //  ties: first index
    cr_assert_null (extra);
    zi_tensor_destroy (&y);
    //  softmax alone: rows sum to 1 and match exp(x)/sum
    io = s_io (ops, 1);
    cr_assert_eq (zi_transform_post (&io, x, &y, &extra, err, sizeof err), 0);
    double sum = 0;
    for (int j = 0; j < 4; j++) {
        sum += exp (v[j]);
    }
    for (int j = 0; j < 4; j++) {
        cr_assert_float_eq (((float *) y->data)[j], exp (v[j]) / sum, 1e-6);
    }
    zi_tensor_destroy (&y);
    zi_plan_op_t topk = {.kind = ZI_PLAN_OP_TOPK, .k = 2};
    io = s_io (&topk, 1);
    cr_assert_eq (zi_transform_post (&io, x, &y, &extra, err, sizeof err), 0);
    cr_assert_eq (((int64_t *) y->data)[0], 1);
    cr_assert_eq (((int64_t *) y->data)[1], 2);
    cr_assert_eq (((int64_t *) y->data)[2], 2);
    cr_assert_eq (((int64_t *) y->data)[3], 3);
    cr_assert_float_eq (((float *) extra->data)[0], 3, 0);
    zi_tensor_destroy (&y);
    zi_tensor_destroy (&extra);
    //  argmax must be last
    zi_plan_op_t bad[2] = {{.kind = ZI_PLAN_OP_ARGMAX}, {.kind = ZI_PLAN_OP_SOFTMAX}};
    io = s_io (bad, 2);
    cr_assert_neq (zi_transform_post (&io, x, &y, &extra, err, sizeof err), 0);
    zi_tensor_destroy (&x);
}
