/*  zi_ops.h - the kernel interface and the operator registry.

    Each supported ONNX operator is a zi_op_def_t: a name, an optional load-
    time check of its attributes and dtypes, a shape-inference function and a
    run function. Kernels live in lib/zi_ops_<family>.c, each exporting one
    table terminated by an entry with name == NULL; zi_ops.c joins the tables.

    How the executor uses a kernel (zi_exec.c):

        1. check (node)            once, when the model is loaded: reject
                                   unsupported attributes / dtypes by name.
        2. infer (ctx)             inputs have dtype + shape; in[i]->data is
                                   non-NULL when the value is known (always at
                                   run time; for constants while planning).
                                   Sets every out[i]'s dtype and shape with
                                   zi_tensor_set_shape (data untouched).
                                   Returns ZI_OP_NEEDS_VALUE if it needs the
                                   value of an input whose data is NULL (e.g.
                                   Reshape's shape while planning statically).
        3. run (ctx)               out[i]->data is allocated with the inferred
                                   size (never aliasing an input); fills it.

    Inputs are contiguous (the executor guarantees it). An omitted optional
    input or output is NULL in in[] / out[]. Kernels never allocate outputs
    and never keep pointers past the call. Errors: return a negative zi_err_t
    and write a message into ctx->err naming the node and the problem.

    Kernel functions follow llama2.c's habit: small, pure, output first, with
    the shape in a comment: // W (d,n) @ x (n,) -> xout (d,)
*/
#ifndef ZI_OPS_H_INCLUDED
#define ZI_OPS_H_INCLUDED

#include "zi_graph.h"
#include "zi_pool.h"
#include "zi_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

//  infer's "I need an input's value to know my output shape" answer.
#define ZI_OP_NEEDS_VALUE 1

typedef struct zi_kctx {
    const zi_node_t *node;
    int n_in;
    const zi_tensor_t *const *in;   //  in[i] NULL for an omitted input
    int n_out;
    zi_tensor_t *const *out;        //  out[i] NULL for an omitted output
    int nthreads;                   //  threads the kernel may use
    zi_pool_t *pool;                //  the executor's threads (NULL = caller only)
    char *err;
    size_t errlen;
} zi_kctx_t;

typedef struct zi_op_def {
    const char *name;               //  ONNX op_type, NULL ends a table
    const char *domain;             //  NULL or "" = default ONNX domain
    int min_inputs, max_inputs;     //  checked before check() is called
    int min_outputs, max_outputs;
    //  Load-time check of attributes and (declared) dtypes. NULL = none.
    int (*check) (const zi_node_t *node, char *err, size_t errlen);
    int (*infer) (zi_kctx_t *ctx);
    int (*run) (zi_kctx_t *ctx);
} zi_op_def_t;

//  Look an operator up by op_type and domain ("" or NULL for ONNX's).
//  Returns NULL when it is not supported.
const zi_op_def_t *zi_op_find (const char *op_type, const char *domain);

//  Check a node against its operator: input/output counts, then its check
//  function. Returns 0, ZI_ERR_UNSUPPORTED or ZI_ERR_MALFORMED with a
//  message naming the node ("node 'conv1' (Conv): auto_pad 'FOO' ...").
int zi_op_check_node (const zi_node_t *node, char *err, size_t errlen);

//  Call the names of every supported operator, in registry order.
void zi_op_foreach (void (*fn) (const zi_op_def_t *op, void *arg), void *arg);

//  Helpers for kernels --------------------------------------------------------

//  Write "node 'NAME' (OP): <message>" into ctx->err and return code.
int zi_op_fail (zi_kctx_t *ctx, int code, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

//  Read an integer-valued input (int64 or int32 tensor) into out[0..n-1];
//  fails if the tensor has more than `cap` elements. Stores the count in *n.
int zi_op_read_ints (const zi_tensor_t *t, int64_t *out, int cap, int *n);

//  Numpy-style broadcast of two shapes into out (rank = max). Returns 0 or
//  ZI_ERR_SHAPE when a pair of dims is neither equal nor 1.
int zi_broadcast_shape (int ra, const int64_t *a, int rb, const int64_t *b,
                        int *rout, int64_t *out);

//  Normalise a possibly-negative axis for a tensor of this rank; returns 0
//  and stores it, or ZI_ERR_INVALID when out of [-rank, rank-1].
int zi_axis_normalize (int64_t axis, int rank, int *out);

//  The kernel tables, one per family (lib/zi_ops_<family>.c).
extern const zi_op_def_t zi_ops_nn[];       //  MatMul, Gemm, Conv, pools, norms
extern const zi_op_def_t zi_ops_elem[];     //  element-wise, broadcasting, Cast
extern const zi_op_def_t zi_ops_shape[];    //  reshape, gather, slice, ...
extern const zi_op_def_t zi_ops_reduce[];   //  Reduce*, ArgMax, TopK, CumSum

#ifdef __cplusplus
}
#endif

#endif
