/*  zi_transform.h - the preprocess and post-process operations a plan lists.

    Preprocess (the plan's preprocess stage, per input tensor, in order):

        cast=DT         convert every element to dtype DT
        scale=F         x * F                                   (float32)
        normalize       (x - mean[c]) / std[c] per channel c    (float32)
        hwc_to_chw      [N,H,W,C] -> [N,C,H,W]                  (any dtype)
        resize          spatial dims to height x width, bilinear
                        (half-pixel centres, as PIL / OpenCV) or nearest
        pad             pads for the dims after the batch: begins, then
                        ends (ONNX order), filled with value

    Layout: a rank-4 tensor is NHWC until a hwc_to_chw op has run if the
    list has one, and NCHW otherwise; a rank-3 tensor [N,H,W] is one
    channel. normalize and resize use that to find the channel and spatial
    dimensions.

    Post-process (the aggregate stage, on one model output [N, ..., C]):

        softmax         along the last axis                     (float32)
        argmax          the index of the largest value of the last axis:
                        [N, ..., C] -> int64 [N, ...]
        topk=K          the K largest values of the last axis, sorted:
                        values float32 [N, ..., K] and indices int64; the
                        indices replace the output, the values are added as
                        "<name>.values"

    All functions validate first and allocate only from sizes already
    checked; errors name the op and what is wrong.
*/
#ifndef ZI_TRANSFORM_H_INCLUDED
#define ZI_TRANSFORM_H_INCLUDED

#include "zi_plan.h"
#include "zi_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Check a client tensor against the plan's declaration (dtype; rank; every
//  dim that is not -1). Returns 0 or ZI_ERR_SHAPE with a message like
//  "input 'x': shape [2,28,28], expected [?,28,28,1]".
int zi_transform_check (const zi_plan_tensor_t *decl, const zi_tensor_t *t, char *err,
                        size_t errlen);

//  Apply the ops of io in order to t. Returns 0 with a new owning tensor in
//  *out (a copy when there are no ops), or an error naming the op.
int zi_transform_pre (const zi_plan_io_t *io, const zi_tensor_t *t, zi_tensor_t **out,
                      char *err, size_t errlen);

//  Apply post-processing ops to one output. *out receives the transformed
//  tensor; *extra (may be set to NULL) receives topk's values tensor.
int zi_transform_post (const zi_plan_io_t *io, const zi_tensor_t *t, zi_tensor_t **out,
                       zi_tensor_t **extra, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
