/*  zi_graph.h - the in-memory model graph: values, nodes, attributes.

    A model file (ONNX, see zi_onnx.h) is loaded into a zi_graph_t. Values are
    every named tensor of the graph (graph inputs, initializers, node outputs);
    nodes refer to values by index. After zi_graph_sort() the nodes are in
    topological order, and a "segment" is any contiguous range [first, last]
    of that order (see zi_exec.h).

        value 0 "input"   (graph input, shape [-1,1,28,28])
        value 1 "conv.w"  (initializer, init != NULL)
        node  0 Conv  in {0,1}  out {2}
        ...

    Declared shapes use -1 for an unknown or symbolic dimension (the batch
    dimension, bound at run time).
*/
#ifndef ZI_GRAPH_H_INCLUDED
#define ZI_GRAPH_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "zi_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Attribute types, numbered as ONNX AttributeProto.AttributeType.
typedef enum {
    ZI_ATTR_UNDEFINED = 0,
    ZI_ATTR_FLOAT = 1,
    ZI_ATTR_INT = 2,
    ZI_ATTR_STRING = 3,
    ZI_ATTR_TENSOR = 4,
    ZI_ATTR_GRAPH = 5,      //  recognised so it can be rejected by name
    ZI_ATTR_FLOATS = 6,
    ZI_ATTR_INTS = 7,
    ZI_ATTR_STRINGS = 8,
} zi_attr_type_t;

typedef struct zi_attr {
    char *name;
    zi_attr_type_t type;
    float f;                //  FLOAT
    int64_t i;              //  INT
    char *s;                //  STRING (NUL-terminated copy)
    size_t s_len;           //  STRING length in bytes
    zi_tensor_t *t;         //  TENSOR (owned)
    int n;                  //  number of FLOATS / INTS / STRINGS
    float *floats;
    int64_t *ints;
    char **strings;
} zi_attr_t;

typedef struct zi_value {
    char *name;
    zi_dtype_t dtype;               //  UNDEFINED when not declared
    int rank;                       //  -1 when not declared
    int64_t shape[ZI_MAX_RANK];     //  -1 for unknown / symbolic dims
    zi_tensor_t *init;              //  constant value (initializer, Constant
                                    //  node or folded), owned; else NULL
    int producer;                   //  index of the producing node, or -1
    bool is_input;                  //  a graph input the caller feeds
    bool is_output;                 //  a graph output
} zi_value_t;

typedef struct zi_node {
    char *name;             //  may be "" in the file; never NULL here
    char *op_type;
    char *domain;           //  "" for the default ONNX domain
    int n_in;
    int *in;                //  value indices; -1 = omitted optional input
    int n_out;
    int *out;               //  value indices; -1 = omitted optional output
    int n_attr;
    zi_attr_t *attr;
    const struct zi_op_def *op;     //  resolved kernel (zi_ops.h), or NULL
} zi_node_t;

typedef struct zi_graph {
    char *name;
    int64_t opset;          //  version of the default domain ("" / ai.onnx)
    int n_values;
    int cap_values;
    zi_value_t *values;
    int n_nodes;
    int cap_nodes;
    zi_node_t *nodes;
    int n_inputs;
    int *inputs;            //  graph inputs without an initializer
    int n_outputs;
    int *outputs;
    void *mapping;          //  external data mapping kept alive (zi_onnx)
    void (*mapping_free) (void *mapping);
} zi_graph_t;

//  Create an empty graph. Returns NULL when memory is exhausted.
zi_graph_t *zi_graph_new (void);

//  Destroy a graph with all its values, nodes and attributes; NULLs *self_p.
void zi_graph_destroy (zi_graph_t **self_p);

//  Find a value by name; returns its index or -1.
int zi_graph_find_value (const zi_graph_t *self, const char *name);

//  Add a value (name copied). Returns its index, or a negative error code.
//  Names must be unique: a second value of the same name is ZI_ERR_MALFORMED.
int zi_graph_add_value (zi_graph_t *self, const char *name);

//  Find or add a value by name; returns its index or a negative error.
int zi_graph_intern_value (zi_graph_t *self, const char *name);

//  Append a node. Copies op_type/domain/name; the in/out index arrays are
//  copied too. Attributes are added with zi_graph_node_add_attr. Returns the
//  node index or a negative error code.
int zi_graph_add_node (zi_graph_t *self, const char *op_type,
                       const char *domain, const char *name, int n_in,
                       const int *in, int n_out, const int *out);

//  Add an attribute to node `node`, taking ownership of *attr's heap members
//  on success (the struct itself is copied and zeroed). Returns 0 or error.
int zi_graph_node_add_attr (zi_graph_t *self, int node, zi_attr_t *attr);

//  Free an attribute's heap members and zero it.
void zi_attr_clear (zi_attr_t *attr);

//  Free a node's heap members (names, index arrays, attributes) and zero it;
//  for code that removes nodes from self->nodes.
void zi_graph_node_clear (zi_node_t *node);

//  Sort nodes topologically (stable: keeps file order where it can) and set
//  every value's producer. Fails with ZI_ERR_MALFORMED naming a node whose
//  input is never produced, or a cycle.
int zi_graph_sort (zi_graph_t *self, char *err, size_t errlen);

//  Constant folding at load time: every node whose inputs are all constants
//  (initializers, folded Constant nodes, outputs of nodes folded before it)
//  runs once here, its outputs become initializers and the node leaves the
//  graph; chains (Identity of a weight, Reshape / Cast / Transpose of one,
//  Shape of one and what follows) fold in one pass. Why: torch exports
//  shared weights as Identity(initializer) at the start of the graph, and
//  an unfolded constant would cross a segment cut as if it were an
//  activation, without a batch axis; as an initializer it belongs to the
//  segments that read it, like any weight.
//  Only operators whose cost is linear in their input and output bytes
//  are folded (Identity, Reshape, Cast, Shape, Transpose, Concat, Gather,
//  Slice, Expand, Tile, Pad, Range, element-wise ops, reductions, ...;
//  never Conv, MatMul, Gemm or the pools, which stay nodes for the
//  executor), and all folds of one model together read and write at most
//  8x the model's constant bytes + 64 MiB: a hostile file cannot make the
//  loader compute or allocate without bound.
//  Not folded: nodes without inputs, nodes producing a graph output, nodes
//  whose outputs would exceed their inputs' bytes by more than
//  ZI_GRAPH_FOLD_GROWTH (an Expand / ConstantOfShape stays a node: the
//  executor folds it per plan), and nodes whose kernel fails (the executor
//  reports that error when it runs them). Initializers that only folded
//  nodes read are freed. The graph must be sorted with kernels resolved;
//  it stays sorted. *n_folded (optional) receives the count. Returns 0, or
//  ZI_ERR_NOMEM (the graph is then still valid, partly folded).
#define ZI_GRAPH_FOLD_GROWTH ((size_t) 16 << 20)
int zi_graph_fold_constants (zi_graph_t *self, int *n_folded, char *err, size_t errlen);

//  Attribute lookup on a node: returns the attribute or NULL.
const zi_attr_t *zi_node_attr (const zi_node_t *node, const char *name);

//  Typed attribute getters with a default when absent. A present attribute
//  of the wrong type also yields the default (zi_op checks reject those).
int64_t zi_node_attr_int (const zi_node_t *node, const char *name, int64_t dflt);
float zi_node_attr_float (const zi_node_t *node, const char *name, float dflt);
const char *zi_node_attr_string (const zi_node_t *node, const char *name,
                                 const char *dflt);
//  INTS / FLOATS: returns the array and stores the count in *n (0 / NULL
//  when absent).
const int64_t *zi_node_attr_ints (const zi_node_t *node, const char *name, int *n);
const float *zi_node_attr_floats (const zi_node_t *node, const char *name, int *n);

#ifdef __cplusplus
}
#endif

#endif
