/*  zt_models.h - the models shipped in the repo, for tests that run them
    all: each directory has model.onnx and test_data_set_N/{input_0,
    output_0}.pb saved by torch when it was exported.
*/
#ifndef ZT_MODELS_H_INCLUDED
#define ZT_MODELS_H_INCLUDED

#include <criterion/criterion.h>
#include <stdio.h>

#include "zi_onnx.h"

static const char *zt_models[] = {
    "examples/fashion-mnist",
    "tests/models/small_mlp",
    "tests/models/resnet_tiny",
    "tests/models/transformer_block",
    "tests/models/mlp",
};
#define ZT_NMODELS (sizeof zt_models / sizeof zt_models[0])

//  dir/model.onnx of a repo model directory (relative to the source tree).
static inline zi_graph_t *
zt_model_load (const char *dir)
{
    char path[1024], err[1024];
    snprintf (path, sizeof path, "%s/%s/model.onnx", ZI_SOURCE_DIR, dir);
    zi_graph_t *g = zi_onnx_load (path, err, sizeof err);
    cr_assert_not_null (g, "%s: %s", path, err);
    return g;
}

//  dir/test_data_set_<set>/<file>, a tensor saved by torch.
static inline zi_tensor_t *
zt_model_pb (const char *dir, int set, const char *file)
{
    char path[1024], err[1024];
    snprintf (path, sizeof path, "%s/%s/test_data_set_%d/%s", ZI_SOURCE_DIR, dir, set, file);
    zi_tensor_t *t = zi_onnx_load_tensor (path, NULL, err, sizeof err);
    cr_assert_not_null (t, "%s: %s", path, err);
    return t;
}

#endif
