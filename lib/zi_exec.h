/*  zi_exec.h - run a graph, or one contiguous segment of it, on tensors.

    An executor is built for the node range [first, last] of a sorted graph
    (the whole graph is [0, n_nodes-1]). Its inputs are the values that the
    range reads but does not produce and that are not constants (graph inputs
    or tensors produced by an earlier segment); its outputs are the values it
    produces that a later node reads or that are graph outputs. Running the
    segments of any cut one after another gives bit-identical results to
    running the whole graph: the same kernels run in the same order.

        char err[256];
        zi_exec_t *ex = zi_exec_new (graph, 0, -1, NULL, err, sizeof err);
        const zi_tensor_t *in[] = {x};                 //  x (N,1,28,28)
        zi_tensor_t *out[1];
        if (zi_exec_run (ex, in, out, err, sizeof err) == 0) {
            ...                                        //  out[0] (N,10)
            zi_tensor_destroy (&out[0]);
        }
        zi_exec_destroy (&ex);

    Planning: for each distinct set of input shapes the executor infers every
    shape, folds constants (including the Shape -> Gather -> Unsqueeze ->
    Concat -> Reshape chains PyTorch exports), and lays intermediates out in
    one arena that reuses the memory of dead tensors; zi_exec_peak_bytes
    reports its size. Shapes that depend on run-time values fall back to
    per-tensor allocation.

    Threads: with opts.nthreads > 1 the executor owns a zi_pool that the
    kernels split their loops over (OpenBLAS then stays on one thread).
    Results are bit-identical for any thread count. Gemm / MatMul nodes
    with a constant B keep it packed for the AVX-512 GEMM (zi_gemm.h) from
    their first run until the executor is destroyed: about one more copy
    of those weights, reported by zi_exec_packed_bytes.
*/
#ifndef ZI_EXEC_H_INCLUDED
#define ZI_EXEC_H_INCLUDED

#include "zi_graph.h"
#include "zi_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zi_exec zi_exec_t;

//  A model file can make a kernel size an enormous output from small inputs
//  (pads of 2^31, a Range of 2^40 elements): the executor refuses tensors
//  above this many bytes unless the caller sets its own limit.
#define ZI_EXEC_DEFAULT_MAX_TENSOR_BYTES ((size_t) 4 << 30)

typedef struct zi_exec_opts {
    int nthreads;           //  threads kernels may use (0 = leave BLAS as is)
    bool no_fuse;           //  disable operator fusion (for testing)
    bool profile;           //  time every node (zi_exec_node_seconds)
    size_t max_tensor_bytes;    //  refuse any tensor larger than this
                                //  (0: ZI_EXEC_DEFAULT_MAX_TENSOR_BYTES)
} zi_exec_opts_t;

//  Create an executor for nodes [first, last] (last = -1: to the end) of a
//  sorted graph. The graph must outlive the executor. opts may be NULL.
//  Returns NULL with a message in err on a bad range or an unsupported node.
zi_exec_t *zi_exec_new (const zi_graph_t *graph, int first, int last,
                        const zi_exec_opts_t *opts, char *err, size_t errlen);

//  Destroy an executor; NULLs *self_p.
void zi_exec_destroy (zi_exec_t **self_p);

//  Inputs and outputs of the range, by position.
int zi_exec_n_inputs (const zi_exec_t *self);
int zi_exec_n_outputs (const zi_exec_t *self);
const zi_value_t *zi_exec_input (const zi_exec_t *self, int i);
const zi_value_t *zi_exec_output (const zi_exec_t *self, int i);

//  Run on inputs given in zi_exec_input order (contiguous tensors; they are
//  only read). On success out[i] receives a new owning tensor for each
//  output, which the caller destroys. On failure nothing is stored in out
//  and err names the node and the problem; the executor stays usable.
int zi_exec_run (zi_exec_t *self, const zi_tensor_t *const *inputs,
                 zi_tensor_t **out, char *err, size_t errlen);

//  Where outputs are written. When set, zi_exec_run calls fn(arg, i, nbytes)
//  once for output i (zi_exec_output order) when its size is known and
//  before it is computed; fn returns memory of at least nbytes (64-byte
//  aligned is best) that the output is then computed into, or NULL for the
//  executor's own. Such an output comes back from zi_exec_run as a view of
//  that memory (owns_data false): the bytes are written once, where the
//  caller sends them from (a shared-memory block, a message buffer). The
//  memory stays the caller's, also when the run fails after fn gave it.
//  An output that is an input or a constant is never asked for. fn NULL:
//  back to the default.
typedef void *(zi_exec_out_alloc_fn) (void *arg, int output, size_t nbytes);
void zi_exec_set_output_alloc (zi_exec_t *self, zi_exec_out_alloc_fn *fn, void *arg);

//  As zi_exec_run with inputs matched by name (n pairs, any order).
int zi_exec_run_named (zi_exec_t *self, int n, const char *const *names,
                       const zi_tensor_t *const *inputs, zi_tensor_t **out,
                       char *err, size_t errlen);

//  Plan for these input shapes without running (tensors' data may be NULL;
//  only dtype and shape are read). Afterwards zi_exec_value gives every
//  value's inferred dtype and shape. Returns 0 or an error naming the node.
int zi_exec_prepare (zi_exec_t *self, const zi_tensor_t *const *inputs, char *err,
                     size_t errlen);

//  The dtype and shape of graph value `v` as planned (rank -1 when it
//  depends on run-time values or lies outside the range); data is not valid.
const zi_tensor_t *zi_exec_value (const zi_exec_t *self, int v);

//  Per-node profiling: when opts.profile is set, zi_exec_run adds each
//  node's wall time to a counter; this returns the accumulated seconds for
//  node n (absolute index) and how many runs were counted.
double zi_exec_node_seconds (const zi_exec_t *self, int n);

//  Reset node n's profile counter (all nodes when n < 0).
void zi_exec_node_seconds_reset (zi_exec_t *self, int n);

//  Number of nodes that run fused into their producer (Conv/Gemm/MatMul
//  followed by a bias Add and/or an activation) in the current plan.
int zi_exec_n_fused (const zi_exec_t *self);

//  Bytes of the intermediate arena planned for the last input shapes, and
//  what the same tensors would take without reuse (for the report).
size_t zi_exec_peak_bytes (const zi_exec_t *self);
size_t zi_exec_naive_bytes (const zi_exec_t *self);

//  Bytes held by packed copies of constant GEMM weights (Gemm / MatMul B
//  operands, packed at their first run for the AVX-512 kernel; about the
//  size of the weights themselves). 0 before the first run or when the
//  portable GEMM path is in use.
size_t zi_exec_packed_bytes (const zi_exec_t *self);

#ifdef __cplusplus
}
#endif

#endif
