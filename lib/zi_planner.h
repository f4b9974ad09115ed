/*  zi_planner.h - cost per node and the choice of cut points.

    The planner cuts a model's topological order into K contiguous segments
    so that each segment's cost is proportional to the capacity that serves
    it: it minimises

        max over segments s of  cost(s) / capacity(s)

    where capacity(s) is the sum of the capacities R_i of the replicas that
    serve s. This is the load-balancing rule T_i = T * R_i / sum(R) applied
    to the model: a segment served by twice the capacity gets twice the work.
    Among the cuts whose bottleneck is within `tolerance` of the best, it
    takes the one that sends the fewest bytes across cuts.

    Cost of a node: FLOPs for the planned input shapes plus the bytes it
    touches (weights read, activations read and written) weighted by
    ZI_COST_FLOPS_PER_BYTE, or measured seconds from a calibration run.
*/
#ifndef ZI_PLANNER_H_INCLUDED
#define ZI_PLANNER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include "zi_exec.h"
#include "zi_graph.h"

#ifdef __cplusplus
extern "C" {
#endif

//  A byte moved costs about this many FLOPs on a CPU core (roughly the ratio
//  of a core's GEMM FLOP rate to its sustained memory bandwidth).
#define ZI_COST_FLOPS_PER_BYTE 4.0

typedef struct zi_node_cost {
    double flops;           //  multiply-adds count 2
    double weight_bytes;    //  constant inputs read
    double act_bytes;       //  non-constant inputs read + outputs written
    double cost;            //  flops + ZI_COST_FLOPS_PER_BYTE * bytes
} zi_node_cost_t;

//  Estimate the cost of every node for the given input shapes (whole graph,
//  inputs in graph order; their data is not read). costs has g->n_nodes
//  entries. cross_bytes (optional, g->n_nodes entries) receives for each j
//  the bytes of tensors that would cross a cut after node j.
int zi_planner_costs (const zi_graph_t *g, const zi_tensor_t *const *inputs,
                      zi_node_cost_t *costs, double *cross_bytes, char *err,
                      size_t errlen);

//  Which values carry the batch axis. A tensor that crosses a cut travels
//  with its micro-batch through the broker, which splits, coalesces and
//  re-joins tasks along axis 0: it must have the batch as its dim 0, or a
//  coalesced task would join, say, two copies of a [8] bias into a [16].
//  inputs are the graph inputs as for zi_planner_costs, batch B in dim 0 of
//  those whose declared dim 0 is symbolic; the graph is planned again at
//  batch B+1, and a value is batched when its dim 0 is B, then B+1.
//  (Without a symbolic dim 0 the batch cannot vary: a value is batched when
//  its dim 0 equals the first input's.) batched[v] (g->n_values entries)
//  receives 1 (batched, or a graph input or constant: never a cut tensor),
//  0 (no batch axis: a Shape -> Gather -> Concat result, a constant the
//  loader did not fold) or -1 (shape known only at run time). Returns 0 or
//  an error naming the node that cannot be planned.
int zi_planner_batched (const zi_graph_t *g, const zi_tensor_t *const *inputs,
                        signed char *batched, char *err, size_t errlen);

//  The cuts that may be made: for each j in 0..g->n_nodes-1, bad[j] = -1
//  when a cut after node j only moves batched tensors (or unknown-shaped
//  ones; the exec worker checks those per task), else the index of a value
//  with no batch axis that would cross it (bad[n_nodes-1] is always -1).
//  Returns the number of forbidden cuts, or a negative error code.
int zi_planner_safe_cuts (const zi_graph_t *g, const zi_tensor_t *const *inputs, int *bad,
                          char *err, size_t errlen);

//  Choose cut points. n nodes with cost[n] (and cross_bytes[n], may be NULL),
//  k segments with capacity[k] > 0. On success seg_last[s] is the last node
//  of segment s (seg_last[k-1] == n-1) and *bottleneck the achieved
//  max cost/capacity. Fails with ZI_ERR_INVALID when k > n or k < 1.
int zi_planner_cut (int n, const double *cost, const double *cross_bytes, int k,
                    const double *capacity, double tolerance, int *seg_last,
                    double *bottleneck, char *err, size_t errlen);

//  As zi_planner_cut, cutting only after the nodes j with allowed[j] true
//  (allowed NULL: anywhere; see zi_planner_safe_cuts). Fails with
//  ZI_ERR_INVALID, saying how many places may be cut, when fewer than k-1
//  are allowed.
int zi_planner_cut_allowed (int n, const double *cost, const double *cross_bytes, int k,
                            const double *capacity, const bool *allowed, double tolerance,
                            int *seg_last, double *bottleneck, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
