/*  zi_plan.h - the plan file: load, validate, build and write it.

    A plan is what `zinfer plan` writes and what every process of a pipeline
    starts from, on whichever host it runs: the model and its tensors, the
    hosts, the broker's endpoints and settings, the model cut into segments
    with the exec replicas serving each, the partition and aggregate stages
    and an optional preprocess stage (built in or custom), priority classes
    and security.
    schemas/PLAN.md describes every field; schemas/plan.schema.json is the
    machine-readable form and is compiled into the library
    (lib/zi_plan_schema.c, made by tools/embed-schema.sh).

    Loading checks the file in three steps, and stops at the first problem
    with a message that names the file and the JSON path:

        1. JSON syntax            plan.json:12:5: expected ',' or '}' ...
        2. the schema             plan.json: segments[1].replicas[0].capacity:
                                      must be > 0 (got -1)
        3. cross-field rules      plan.json: segments[1].replicas[0].host:
                                      unknown host "h9"

        char err[512];
        zi_plan_t *plan = zi_plan_load ("plan.json", err, sizeof err);
        if (!plan) {
            fprintf (stderr, "PLAN-INVALID: %s\n", err);
            return 1;
        }
        const zi_plan_segment_t *segment = NULL;
        const zi_plan_replica_t *me =
            zi_plan_find_replica (plan, "s0r1", &segment, NULL);
        ...
        zi_plan_destroy (&plan);

    The plan is a transparent, read-only-by-convention struct of arrays (an
    array `x` always comes with its length `n_x`). A planner builds one
    with zi_plan_new, the add helpers and ZI_PLAN_PUSH, then writes it; the
    writer runs the same schema and rules as the loader, so it never writes
    a plan that would not load:

        zi_plan_t *plan = zi_plan_new ();
        plan->model.path = strdup ("model.onnx");
        zi_plan_add_host (plan, "h1", "10.0.0.1");
        zi_plan_segment_t *seg = ZI_PLAN_PUSH (plan->segments, plan->n_segments);
        zi_plan_add_replica (&seg->replicas, &seg->n_replicas, "s0r0", "h1", 1.0);
        ...
        if (zi_plan_write (plan, "plan.json", err, sizeof err)) { ... }

    Every pointer in the struct is owned by the plan and released by
    zi_plan_destroy with free(): fill it with malloc'ed memory (strdup).
*/
#ifndef ZI_PLAN_H_INCLUDED
#define ZI_PLAN_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zi_error.h"
#include "zi_json.h"
#include "zi_split.h"
#include "zi_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ZI_PLAN_VERSION 1

//  Plan files larger than this are refused before parsing.
#define ZI_PLAN_MAX_BYTES (4u << 20)

//  Defaults the loader fills in for optional fields (see PLAN.md).
#define ZI_PLAN_DEFAULT_HEARTBEAT_MS 1000
#define ZI_PLAN_DEFAULT_LIVENESS 3
#define ZI_PLAN_DEFAULT_QUEUE_LIMIT 1024
#define ZI_PLAN_DEFAULT_DEADLINE_MS 5000
#define ZI_PLAN_DEFAULT_STAGE_TIMEOUT_MS 2000
#define ZI_PLAN_DEFAULT_MAX_ATTEMPTS 3
#define ZI_PLAN_DEFAULT_MAX_MESSAGE_BYTES (256ll << 20)

//  A tensor as the plan declares it.
typedef struct {
    char *name;
    zi_dtype_t dtype;
    int rank;                       //  0..ZI_MAX_RANK
    int64_t shape[ZI_MAX_RANK];     //  outermost first; -1 = symbolic (batch)
} zi_plan_tensor_t;

typedef struct {
    char *path;                     //  as written; see zi_plan_path
    char *sha256;                   //  64 lower-case hex digits, or NULL
    int64_t node_count;             //  nodes in topological order, after the splits
    zi_split_t *splits;             //  layers split along their output channels
    size_t n_splits;                //  (zi_split.h), applied in order at load
    zi_plan_tensor_t *inputs;
    size_t n_inputs;
    zi_plan_tensor_t *outputs;
    size_t n_outputs;
} zi_plan_model_t;

typedef struct {
    char *name;
    char *address;
} zi_plan_host_t;

//  The broker's sockets. The broker binds every one; all other processes
//  connect. Stage links pass through the broker: it PUSHes requests to
//  preprocess, relays what comes back on `preprocessed` to partition, and
//  so on (see PLAN.md for socket types).
typedef enum {
    ZI_PLAN_EP_FRONT = 0,           //  ROUTER  <- clients
    ZI_PLAN_EP_TO_PREPROCESS,       //  PUSH    -> preprocess
    ZI_PLAN_EP_PREPROCESSED,        //  PULL    <- preprocess
    ZI_PLAN_EP_TO_PARTITION,        //  PUSH    -> partition
    ZI_PLAN_EP_INTAKE,              //  PULL    <- partition
    ZI_PLAN_EP_WORK,                //  ROUTER <-> exec workers
    ZI_PLAN_EP_TO_AGGREGATE,        //  ROUTER  -> aggregate (by request hash)
    ZI_PLAN_EP_RESULTS,             //  PULL    <- aggregate
    ZI_PLAN_EP_COUNT
} zi_plan_ep_t;

typedef struct {
    char *bind;                     //  what the broker binds
    char *connect;                  //  what everyone else connects to
} zi_plan_endpoint_t;

typedef struct {
    char *host;                     //  a host name from hosts[]
    zi_plan_endpoint_t endpoints[ZI_PLAN_EP_COUNT];
    int64_t heartbeat_interval_ms;
    int64_t heartbeat_liveness;     //  beats missed before a peer is dead
    int64_t queue_limit;            //  admitted requests before BUSY
    int64_t default_deadline_ms;    //  for requests that carry none
    int64_t stage_timeout_ms;       //  re-inject work lost in a stage after
    int64_t max_attempts;           //  dispatches of one task before an error
    int64_t max_message_bytes;      //  ZMQ_MAXMSGSIZE on every socket
    bool skip_stages;               //  send tasks past built-in stages with nothing to do
    bool client_shm;                //  accept clients' inputs as shared-memory references
    int64_t shm_bytes;              //  exec workers' shared-memory arenas (0: off)
} zi_plan_broker_t;

//  One process: an exec worker of a segment, or a process of a stage.
typedef struct {
    char *name;                     //  unique in the plan; the ZeroMQ identity
    char *host;                     //  a host name from hosts[]
    double capacity;                //  relative weight R; > 0 (default 1)
    int64_t credit;                 //  exec only: tasks in flight (default 1)
    int64_t threads;                //  kernel threads (default 1)
} zi_plan_replica_t;

typedef struct {
    int64_t index;                  //  == position in segments[]
    int64_t first_node;             //  inclusive
    int64_t last_node;              //  inclusive
    char **inputs;                  //  tensors it receives
    size_t n_inputs;
    char **outputs;                 //  tensors it sends on
    size_t n_outputs;
    double cost_flops;              //  the planner's estimates (informative)
    int64_t weight_bytes;
    int64_t activation_bytes;
    double cost_share;              //  share of the model's cost, 0..1
    zi_plan_replica_t *replicas;
    size_t n_replicas;
} zi_plan_segment_t;

typedef enum {
    ZI_PLAN_OP_CAST = 1,            //  preprocess ops
    ZI_PLAN_OP_SCALE,
    ZI_PLAN_OP_NORMALIZE,
    ZI_PLAN_OP_HWC_TO_CHW,
    ZI_PLAN_OP_RESIZE,
    ZI_PLAN_OP_PAD,
    ZI_PLAN_OP_SOFTMAX,             //  aggregate (post-processing) ops
    ZI_PLAN_OP_ARGMAX,
    ZI_PLAN_OP_TOPK,
} zi_plan_op_kind_t;

typedef enum {
    ZI_PLAN_RESIZE_BILINEAR = 0,    //  the default
    ZI_PLAN_RESIZE_NEAREST,
} zi_plan_resize_t;

//  One transform; which fields matter depends on kind.
typedef struct {
    zi_plan_op_kind_t kind;
    zi_dtype_t to;                  //  CAST
    double factor;                  //  SCALE: x * factor
    double *mean;                   //  NORMALIZE: (x - mean[c]) / std[c]
    size_t n_mean;
    double *std;
    size_t n_std;
    int64_t height;                 //  RESIZE
    int64_t width;
    zi_plan_resize_t mode;
    int64_t *pads;                  //  PAD: begins then ends, ONNX order,
    size_t n_pads;                  //  for the dimensions after the batch
    double value;                   //  PAD: fill value
    int64_t axis;                   //  SOFTMAX, ARGMAX, TOPK (default -1)
    int64_t k;                      //  TOPK
} zi_plan_op_t;

//  A tensor a stage transforms, with its ops in order. For preprocess it
//  is what clients send (name, dtype, shape); for aggregate only the name
//  of a model output is set (dtype UNDEFINED, rank 0).
typedef struct {
    zi_plan_tensor_t tensor;
    zi_plan_op_t *ops;
    size_t n_ops;
} zi_plan_io_t;

typedef enum {
    ZI_PLAN_STAGE_PREPROCESS = 1,
    ZI_PLAN_STAGE_PARTITION,
    ZI_PLAN_STAGE_AGGREGATE,
    ZI_PLAN_STAGE_CUSTOM,
} zi_plan_stage_kind_t;

typedef struct {
    zi_plan_stage_kind_t kind;
    zi_plan_stage_kind_t replaces;  //  CUSTOM: the built-in kind it stands in for
    zi_plan_replica_t *replicas;
    size_t n_replicas;
    zi_plan_io_t *tensors;          //  PREPROCESS: "inputs"; AGGREGATE: "outputs"
    size_t n_tensors;
    int64_t micro_batch;            //  PARTITION: rows per task when splitting
    int64_t max_batch;              //  PARTITION: rows per task when coalescing
    int64_t max_delay_us;           //  PARTITION: longest wait to coalesce
    char **command;                 //  CUSTOM: argv
    size_t n_command;
} zi_plan_stage_t;

typedef enum {
    ZI_PLAN_PRIORITY_WEIGHTED = 0,
    ZI_PLAN_PRIORITY_STRICT,
} zi_plan_priority_mode_t;

typedef struct {
    char *name;
    double weight;                  //  W > 0
} zi_plan_class_t;

//  n_classes == 0 (only in a plan being built) means the default: one
//  class "normal" of weight 1; a loaded plan always has at least one class.
typedef struct {
    zi_plan_priority_mode_t mode;
    zi_plan_class_t *classes;
    size_t n_classes;
    char *default_class;            //  NULL: the first class
} zi_plan_priorities_t;

typedef struct {
    bool curve;                     //  CURVE + ZAP allow-list on every socket
    char *server_public_key;        //  Z85, 40 characters
    char *server_secret_file;       //  on the broker's host
    char *client_secret_file;       //  on every other host
    char **allowed_keys;            //  Z85 public keys that may connect
    size_t n_allowed_keys;
} zi_plan_security_t;

typedef struct zi_plan {
    int64_t version;                //  ZI_PLAN_VERSION
    char *name;                     //  or NULL
    char *dir;                      //  directory of the loaded file, or NULL;
                                    //  not part of the format
    zi_plan_model_t model;
    zi_plan_host_t *hosts;
    size_t n_hosts;
    zi_plan_broker_t broker;
    zi_plan_segment_t *segments;
    size_t n_segments;
    zi_plan_stage_t *stages;
    size_t n_stages;
    zi_plan_priorities_t priorities;
    zi_plan_security_t security;
} zi_plan_t;

//  ---------------------------------------------------------------------
//  Loading

//  Read, parse and check a plan file (at most ZI_PLAN_MAX_BYTES). Returns
//  a new plan, or NULL with "path: ..." in err.
zi_plan_t *zi_plan_load (const char *path, char *err, size_t errlen);

//  The same from a buffer; source names it in messages (NULL: "plan").
zi_plan_t *zi_plan_parse (const char *buf, size_t len, const char *source,
                          char *err, size_t errlen);

//  The same from a parsed document (not taken over). Returns 0 and a new
//  plan in *out, or an error with "source: ..." in err.
int zi_plan_from_json (const zi_json_t *doc, const char *source,
                       zi_plan_t **out, char *err, size_t errlen);

//  Destroy a plan and everything it points to; sets *self_p to NULL.
void zi_plan_destroy (zi_plan_t **self_p);

//  ---------------------------------------------------------------------
//  Checking and writing

//  Apply the schema and the cross-field rules to a plan (as zi_plan_write
//  would). Returns 0, or ZI_ERR_MALFORMED with "source: path: problem".
int zi_plan_validate (const zi_plan_t *self, const char *source, char *err,
                      size_t errlen);

//  Build the JSON form of a plan, fields in the order of PLAN.md, every
//  optional setting written out. Does not validate. Returns 0 and a new
//  document in *out, or ZI_ERR_NOMEM.
int zi_plan_to_json (const zi_plan_t *self, zi_json_t **out);

//  Validate, then write the plan atomically to path. Returns 0, or an
//  error with a message in err; nothing is written on error.
int zi_plan_write (const zi_plan_t *self, const char *path, char *err,
                   size_t errlen);

//  The plan schema compiled into the library (NUL-terminated JSON text),
//  and its length in *len if not NULL.
const char *zi_plan_schema_text (size_t *len);

//  ---------------------------------------------------------------------
//  Building

//  A new, empty plan: version set and broker settings at their defaults;
//  everything else zero. NULL when out of memory.
zi_plan_t *zi_plan_new (void);

//  Grow `array` (an element pointer of the plan, with its `count`) by one
//  zeroed element and return it, or NULL when out of memory. Pointers to
//  earlier elements of that array are invalid afterwards.
#define ZI_PLAN_PUSH(array, count) \
    zi_plan_push_ ((void *) &(array), &(count), sizeof *(array))
void *zi_plan_push_ (void *array_p, size_t *count, size_t size);

//  Append a host (strings copied). Returns it, or NULL when out of memory.
zi_plan_host_t *zi_plan_add_host (zi_plan_t *self, const char *name,
                                  const char *address);

//  Append a replica to a segment's or a stage's replica array (strings
//  copied; credit and threads 1). Returns it, or NULL.
zi_plan_replica_t *zi_plan_add_replica (zi_plan_replica_t **array,
                                        size_t *count, const char *name,
                                        const char *host, double capacity);

//  Set one broker endpoint (strings copied). Returns 0 or ZI_ERR_NOMEM.
int zi_plan_set_endpoint (zi_plan_t *self, zi_plan_ep_t which,
                          const char *bind, const char *connect);

//  Set every endpoint to tcp: the broker binds bind_host:port and peers
//  connect to connect_host:port, with ports base_port, base_port+1, ... in
//  zi_plan_ep_t order. Returns 0, ZI_ERR_INVALID or ZI_ERR_NOMEM.
int zi_plan_set_endpoints_tcp (zi_plan_t *self, const char *bind_host,
                               const char *connect_host, int base_port);

//  Set every endpoint to ipc://dir/zinfer-<name>.sock (one host only).
int zi_plan_set_endpoints_ipc (zi_plan_t *self, const char *dir);

//  ---------------------------------------------------------------------
//  Lookups and names

//  The host called name, or NULL.
const zi_plan_host_t *zi_plan_find_host (const zi_plan_t *self,
                                         const char *name);

//  The replica called name, or NULL. Sets *segment (if not NULL) to its
//  segment or NULL, and *stage (if not NULL) to its stage or NULL.
const zi_plan_replica_t *zi_plan_find_replica (const zi_plan_t *self,
                                               const char *name,
                                               const zi_plan_segment_t **segment,
                                               const zi_plan_stage_t **stage);

//  The built-in kind a stage does: its kind, or what a custom one replaces.
zi_plan_stage_kind_t zi_plan_stage_role (const zi_plan_stage_t *stage);

//  The stage that does role (PREPROCESS, PARTITION or AGGREGATE), or NULL.
const zi_plan_stage_t *zi_plan_find_stage (const zi_plan_t *self,
                                           zi_plan_stage_kind_t role);

//  Resolve a path from the plan (model.path, a custom command) against the
//  plan file's directory into buf. Absolute paths and plans without a
//  directory pass through. Returns 0 or ZI_ERR_LIMIT when buf is too small.
int zi_plan_path (const zi_plan_t *self, const char *path, char *buf,
                  size_t len);

//  Names as the file spells them ("to_preprocess", "custom", "topk",
//  "bilinear", "strict"); "?" when unknown.
const char *zi_plan_endpoint_name (zi_plan_ep_t which);
const char *zi_plan_stage_kind_name (zi_plan_stage_kind_t kind);
const char *zi_plan_op_name (zi_plan_op_kind_t kind);
const char *zi_plan_resize_name (zi_plan_resize_t mode);
const char *zi_plan_priority_mode_name (zi_plan_priority_mode_t mode);

#ifdef __cplusplus
}
#endif

#endif
