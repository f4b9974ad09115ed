/*  zinfer.h - the umbrella header of libzinfer.

    zinfer serves a neural network split into pipeline-parallel segments
    that run as separate processes, linked by ZeroMQ. The library holds
    everything those processes share and everything a client needs:

        zi_tensor.h     tensors: dtype, shape, byte strides, views
        zi_msg.h        the ZIP/1 wire protocol codec (schemas/PROTOCOL.md)
        zi_client.h     a C client: send requests to a broker, get replies
        zi_onnx.h       loading ONNX models (protobuf-c bindings)
        zi_graph.h      the model graph
        zi_exec.h       running a graph or one segment of it
        zi_planner.h    node costs and the choice of cut points
        zi_plan.h       the plan file every process starts from
        zi_npy.h        numpy .npy files; zi_idx.h: IDX data sets

    A minimal client:

        #include <zinfer.h>
        char err[256];
        zi_client_t *c = zi_client_new ("tcp://127.0.0.1:5555", err, sizeof err);
        const char *names[] = {"input"};
        const zi_tensor_t *in[] = {x};
        zi_msg_t *reply = NULL;
        if (zi_client_infer (c, 1, names, in, 5000, &reply, err, sizeof err) == 0) {
            const zi_tensor_t *y = zi_msg_tensor (reply, 0);
            ...
        }
        zi_msg_destroy (&reply);
        zi_client_destroy (&c);

    Programs that run models should call zi_blas_init (argc, argv) first in
    main() so that OpenBLAS uses the right kernels for the CPU (zi_blas.h).
*/
#ifndef ZINFER_H_INCLUDED
#define ZINFER_H_INCLUDED

#include "zi_version.h"
#include "zi_error.h"
#include "zi_log.h"
#include "zi_blas.h"
#include "zi_tensor.h"
#include "zi_graph.h"
#include "zi_ops.h"
#include "zi_onnx.h"
#include "zi_exec.h"
#include "zi_planner.h"
#include "zi_json.h"
#include "zi_plan.h"
#include "zi_msg.h"
#include "zi_client.h"
#include "zi_npy.h"
#include "zi_idx.h"

#endif
