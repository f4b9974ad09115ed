/*  zi_split.h - split one layer of a model across two segments.

    A pipeline of whole layers cannot always be balanced: an MLP
    784-1024-1024-1024-10 cut after its second layer is 64 / 36, and a CNN
    whose second convolution is 74 % of the work leaves one segment three
    times busier than the other. zi_split cuts one layer along its output
    channels instead, so a cut may fall inside it:

        X -> Gemm(W, b) -> Relu -> Y              (before; W is [N, K])

        X -> Gemm(W[0:at], b[0:at])  -> Relu -> Y.zsplit0  \
        X -> Gemm(W[at:N], b[at:N])  -> Relu -> Y.zsplit1  -> Concat -> Y

    The node's channel-wise successors (the "chain": activations, pools,
    BatchNormalization, Add / Mul of a per-channel constant) are copied
    into both parts, so each part stays fusable (Conv + Relu + MaxPool).
    Every output element is computed by the same operator over the same
    inputs, only in a smaller layer: results agree with the unsplit model
    to rounding (the GEMM may block a narrower layer differently).

    Splittable: Gemm and MatMul with a constant 2-D weight, Conv with a
    constant weight and group 1. The new nodes take the place of the old
    ones in the topological order:

        node       part A (channels 0..at-1)
        node+1..   part A's chain (c nodes)
        node+c+1   part B (channels at..N-1)
        ...        part B's chain
        node+2c+2  Concat -> the original output value

    so a cut after node + c puts part A in one segment and part B with the
    rest of the model in the next. A plan lists its splits (model.splits,
    see schemas/PLAN.md) and every process applies them right after loading
    the model, before the node numbering of the segments is used.
*/
#ifndef ZI_SPLIT_H_INCLUDED
#define ZI_SPLIT_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "zi_graph.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Longest chain of channel-wise successors copied into both parts.
#define ZI_SPLIT_CHAIN_MAX 8

typedef enum {
    ZI_SPLIT_CHANNELS = 0,      //  along the output channels (Gemm, MatMul, Conv)
    ZI_SPLIT_ROWS = 1,          //  along the output rows (2-D Conv)
} zi_split_axis_t;

typedef struct zi_split {
    int64_t node;   //  node index in the graph as it is when this split is applied
    int64_t at;     //  first output channel (row) of part B: 0 < at < channels (rows)
    int axis;       //  zi_split_axis_t
} zi_split_t;

//  Can node `node` be split? On success returns 0 with *channels (N, its
//  output channels) and *chain (successors copied into both parts);
//  otherwise an error saying why not. g sorted, kernels resolved.
int zi_split_probe (const zi_graph_t *g, int node, int64_t *channels, int *chain,
                    char *err, size_t errlen);

//  Rows instead of channels (ZI_SPLIT_ROWS), for a 2-D Conv with explicit
//  pads: part A computes output rows 0..at-1 for all channels, part B rows
//  at..H-1, each from a Slice of the input rows it reads (with the halo of
//  the kernel; a Slice that would take all rows is left out):
//      X -> Slice(rows a0..a1) -> Conv(pads top, bottom') -> chain -> Y.zsplit0
//      X -> Slice(rows b0..H)  -> Conv(pads top', bottom) -> chain -> Y.zsplit1
//      Concat(axis 2) -> Y
//  Unlike a channel split, no input is packed twice: the parts share the
//  work of one convolution, at the cost of copying the input rows once.
//  The chain may hold row-wise ops (activations, BN, per-channel constants)
//  and pools whose window along H equals their stride with no H padding;
//  `at` must be a multiple of the product of those strides (*step). The
//  layout is as above with the Slices first in each part. The input height
//  must be fixed by the model's declared input shapes. *rows: output rows
//  of the Conv.
int zi_split_probe_rows (const zi_graph_t *g, int node, int64_t *rows, int64_t *step,
                         int *chain, char *err, size_t errlen);
int zi_split_apply_rows (zi_graph_t *g, int node, int64_t at, char *err, size_t errlen);

//  Split node `node` at channel `at` (layout above). The graph stays sorted
//  with kernels resolved; weights no longer read are freed. On failure the
//  graph is unchanged (except on ZI_ERR_NOMEM, where it may be partly
//  rewritten and must be discarded).
int zi_split_apply (zi_graph_t *g, int node, int64_t at, char *err, size_t errlen);

//  Apply n splits in order, each along its axis (each node index refers to
//  the graph after the splits before it). Errors name the split: "split 1
//  (node 7 at 640): ...".
int zi_split_apply_all (zi_graph_t *g, const zi_split_t *splits, size_t n, char *err,
                        size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
