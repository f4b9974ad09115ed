/*  zi_onnx.h - load an ONNX model file into a zi_graph_t.

    The loader reads a ModelProto (the C bindings are generated from the
    system's onnx.proto by protoc-c), turns it into a sorted zi_graph_t and
    resolves every node's kernel. A model we cannot run is refused at load
    time with ONE message that lists every problem, so an operator learns
    everything that is missing in one go:

        char err[1024];
        zi_graph_t *g = zi_onnx_load ("model.onnx", err, sizeof err);
        if (!g) {
            //  "model.onnx: 2 unsupported: node 'lstm1' (LSTM): unsupported
            //   op LSTM; initializer 'vocab': unsupported dtype string"
            fprintf (stderr, "%s\n", err);
        }
        ...                             //  g->nodes[i].op is set for every node
        zi_graph_destroy (&g);

    What the loaded graph looks like:
      - g->opset is the version of the default domain ("" / "ai.onnx"); every
        node also carries it as the INT attribute "__opset" (kernels read it).
      - Initializers and Constant nodes become value->init tensors; Constant
        nodes are folded away. A graph input that also has an initializer is a
        constant (IR >= 4 semantics), not an input the caller feeds:
        g->inputs lists only the inputs the caller must feed, in file order.
      - Declared types: value->dtype / rank / shape from the graph inputs,
        outputs and value_info (-1 for a symbolic or missing dimension, rank
        -1 when no shape is declared).
      - External data (data_location EXTERNAL) is memory-mapped from files
        relative to the model's directory and the weights are views into the
        mapping, kept alive by the graph (g->mapping). A location that is
        absolute or has a ".." component is refused: a model file must not
        make us read arbitrary files. Symlinks inside the model directory are
        followed (the directory's owner chose them).
      - Nodes are in topological order (zi_graph_sort).

    Everything in the file is untrusted: sizes and counts are checked against
    the bytes present and for overflow; a bad file is an error, never a crash.
    The model file is capped at ZI_ONNX_MAX_FILE bytes (protobuf's own limit).
*/
#ifndef ZI_ONNX_H_INCLUDED
#define ZI_ONNX_H_INCLUDED

#include <stddef.h>

#include "zi_graph.h"
#include "zi_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Largest model (or tensor) file we read: protobuf messages cannot exceed
//  2 GiB, and this bounds what a file can make protobuf-c allocate.
#define ZI_ONNX_MAX_FILE ((size_t) 2 << 30)

//  Load a model file. Returns a sorted graph whose nodes all have a kernel,
//  or NULL with a one-line message in err (which names the file).
zi_graph_t *zi_onnx_load (const char *path, char *err, size_t errlen);

//  Load a model from memory (the bytes of a model.onnx). External data
//  files are looked up relative to base_dir; base_dir NULL refuses external
//  data. The buffer is only read during the call.
zi_graph_t *zi_onnx_load_buffer (const void *buf, size_t len,
                                 const char *base_dir, char *err, size_t errlen);

//  As zi_onnx_load / zi_onnx_load_buffer, but return the error code: 0 and
//  the graph in *graph_p, or ZI_ERR_UNSUPPORTED (the model is well formed
//  but needs an op, dtype or attribute we lack), ZI_ERR_MALFORMED, ZI_ERR_IO,
//  ZI_ERR_LIMIT, ZI_ERR_NOMEM... with *graph_p NULL.
int zi_onnx_read (const char *path, zi_graph_t **graph_p, char *err,
                  size_t errlen);
int zi_onnx_read_buffer (const void *buf, size_t len, const char *base_dir,
                         zi_graph_t **graph_p, char *err, size_t errlen);

//  Read a file holding one serialized TensorProto (the ONNX backend tests'
//  input_N.pb / output_N.pb). Returns a new owning tensor or NULL with a
//  message. If name_out is not NULL it receives a malloc'ed copy of the
//  tensor's name ("" when the file has none), which the caller frees.
//  External data is read relative to the file's directory and copied.
zi_tensor_t *zi_onnx_load_tensor (const char *path, char **name_out, char *err,
                                  size_t errlen);

//  As zi_onnx_load_tensor from memory; external data is refused.
zi_tensor_t *zi_onnx_load_tensor_buffer (const void *buf, size_t len,
                                         char **name_out, char *err,
                                         size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
