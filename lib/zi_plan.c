/*  zi_plan.c - plan files; see zi_plan.h and schemas/PLAN.md.

    A document becomes a plan in three steps: the embedded schema (types,
    ranges, required and unknown fields), conversion into the struct
    (trusting only what the schema guaranteed, and defensive even so), and
    the cross-field rules below, which a schema cannot express. A plan built
    in memory goes the other way for zi_plan_validate / zi_plan_write: to
    JSON, the same schema, the same rules.
*/
#include "zi_plan.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  =====================================================================
//  Names

static const char *s_ep_names[ZI_PLAN_EP_COUNT] = {
    "front", "to_preprocess", "preprocessed", "to_partition",
    "intake", "work", "to_aggregate", "results",
};

static const char *s_stage_names[] = {
    NULL, "preprocess", "partition", "aggregate", "custom",
};

static const char *s_op_names[] = {
    NULL, "cast", "scale", "normalize", "hwc_to_chw", "resize", "pad",
    "softmax", "argmax", "topk",
};

static const char *s_resize_names[] = {"bilinear", "nearest"};
static const char *s_mode_names[] = {"weighted", "strict"};

#define S_COUNT(a) (sizeof (a) / sizeof ((a)[0]))

static const char *
s_name_of (const char **names, size_t count, int value)
{
    if (value < 0 || (size_t) value >= count || !names[value]) {
        return "?";
    }
    return names[value];
}

//  Index of name in names, or fallback when absent.
static int
s_lookup (const char **names, size_t count, const char *name, int fallback)
{
    for (size_t i = 0; name && i < count; i++) {
        if (names[i] && strcmp (names[i], name) == 0) {
            return (int) i;
        }
    }
    return fallback;
}

const char *
zi_plan_endpoint_name (zi_plan_ep_t which)
{
    return s_name_of (s_ep_names, ZI_PLAN_EP_COUNT, (int) which);
}

const char *
zi_plan_stage_kind_name (zi_plan_stage_kind_t kind)
{
    return s_name_of (s_stage_names, S_COUNT (s_stage_names), (int) kind);
}

const char *
zi_plan_op_name (zi_plan_op_kind_t kind)
{
    return s_name_of (s_op_names, S_COUNT (s_op_names), (int) kind);
}

const char *
zi_plan_resize_name (zi_plan_resize_t mode)
{
    return s_name_of (s_resize_names, S_COUNT (s_resize_names), (int) mode);
}

const char *
zi_plan_priority_mode_name (zi_plan_priority_mode_t mode)
{
    return s_name_of (s_mode_names, S_COUNT (s_mode_names), (int) mode);
}

//  =====================================================================
//  Life cycle

static void
s_strv_free (char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free (v[i]);
    }
    free (v);
}

static void
s_tensors_free (zi_plan_tensor_t *t, size_t n)
{
    for (size_t i = 0; t && i < n; i++) {
        free (t[i].name);
    }
    free (t);
}

static void
s_replicas_free (zi_plan_replica_t *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        free (r[i].name);
        free (r[i].host);
    }
    free (r);
}

static void
s_ops_free (zi_plan_op_t *ops, size_t n)
{
    for (size_t i = 0; ops && i < n; i++) {
        free (ops[i].mean);
        free (ops[i].std);
        free (ops[i].pads);
    }
    free (ops);
}

void
zi_plan_destroy (zi_plan_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zi_plan_t *self = *self_p;
    free (self->name);
    free (self->dir);
    free (self->model.path);
    free (self->model.sha256);
    free (self->model.splits);
    s_tensors_free (self->model.inputs, self->model.n_inputs);
    s_tensors_free (self->model.outputs, self->model.n_outputs);
    for (size_t i = 0; self->hosts && i < self->n_hosts; i++) {
        free (self->hosts[i].name);
        free (self->hosts[i].address);
    }
    free (self->hosts);
    free (self->broker.host);
    for (int e = 0; e < ZI_PLAN_EP_COUNT; e++) {
        free (self->broker.endpoints[e].bind);
        free (self->broker.endpoints[e].connect);
    }
    for (size_t i = 0; self->segments && i < self->n_segments; i++) {
        zi_plan_segment_t *s = &self->segments[i];
        s_strv_free (s->inputs, s->n_inputs);
        s_strv_free (s->outputs, s->n_outputs);
        s_replicas_free (s->replicas, s->n_replicas);
    }
    free (self->segments);
    for (size_t i = 0; self->stages && i < self->n_stages; i++) {
        zi_plan_stage_t *s = &self->stages[i];
        s_replicas_free (s->replicas, s->n_replicas);
        for (size_t k = 0; s->tensors && k < s->n_tensors; k++) {
            free (s->tensors[k].tensor.name);
            s_ops_free (s->tensors[k].ops, s->tensors[k].n_ops);
        }
        free (s->tensors);
        s_strv_free (s->command, s->n_command);
    }
    free (self->stages);
    for (size_t i = 0; self->priorities.classes && i < self->priorities.n_classes; i++) {
        free (self->priorities.classes[i].name);
    }
    free (self->priorities.classes);
    free (self->priorities.default_class);
    free (self->security.server_public_key);
    free (self->security.server_secret_file);
    free (self->security.client_secret_file);
    s_strv_free (self->security.allowed_keys, self->security.n_allowed_keys);
    free (self);
    *self_p = NULL;
}

static void
s_broker_defaults (zi_plan_broker_t *broker)
{
    broker->heartbeat_interval_ms = ZI_PLAN_DEFAULT_HEARTBEAT_MS;
    broker->heartbeat_liveness = ZI_PLAN_DEFAULT_LIVENESS;
    broker->queue_limit = ZI_PLAN_DEFAULT_QUEUE_LIMIT;
    broker->default_deadline_ms = ZI_PLAN_DEFAULT_DEADLINE_MS;
    broker->stage_timeout_ms = ZI_PLAN_DEFAULT_STAGE_TIMEOUT_MS;
    broker->max_attempts = ZI_PLAN_DEFAULT_MAX_ATTEMPTS;
    broker->max_message_bytes = ZI_PLAN_DEFAULT_MAX_MESSAGE_BYTES;
    broker->skip_stages = true;
    broker->shm_bytes = 0;
}

zi_plan_t *
zi_plan_new (void)
{
    zi_plan_t *self = (zi_plan_t *) calloc (1, sizeof *self);
    if (self) {
        self->version = ZI_PLAN_VERSION;
        s_broker_defaults (&self->broker);
    }
    return self;
}

void *
zi_plan_push_ (void *array_p, size_t *count, size_t size)
{
    if (!array_p || !count || size == 0 || *count >= SIZE_MAX / size - 1) {
        return NULL;
    }
    //  array_p is the address of some T *; copy it through memcpy so no
    //  T ** is ever read as a void **.
    void *old;
    memcpy (&old, array_p, sizeof old);
    char *grown = (char *) realloc (old, (*count + 1) * size);
    if (!grown) {
        return NULL;
    }
    memset (grown + *count * size, 0, size);
    memcpy (array_p, &grown, sizeof grown);
    return grown + (*count)++ * size;
}

zi_plan_host_t *
zi_plan_add_host (zi_plan_t *self, const char *name, const char *address)
{
    if (!self || !name || !address) {
        return NULL;
    }
    char *n = strdup (name);
    char *a = strdup (address);
    zi_plan_host_t *host = n && a ? ZI_PLAN_PUSH (self->hosts, self->n_hosts) : NULL;
    if (!host) {
        free (n);
        free (a);
        return NULL;
    }
    host->name = n;
    host->address = a;
    return host;
}

zi_plan_replica_t *
zi_plan_add_replica (zi_plan_replica_t **array, size_t *count, const char *name,
                     const char *host, double capacity)
{
    if (!array || !count || !name || !host) {
        return NULL;
    }
    char *n = strdup (name);
    char *h = strdup (host);
    zi_plan_replica_t *replica = n && h ? ZI_PLAN_PUSH (*array, *count) : NULL;
    if (!replica) {
        free (n);
        free (h);
        return NULL;
    }
    replica->name = n;
    replica->host = h;
    replica->capacity = capacity;
    replica->credit = 1;
    replica->threads = 1;
    return replica;
}

int
zi_plan_set_endpoint (zi_plan_t *self, zi_plan_ep_t which, const char *bind,
                      const char *connect)
{
    if (!self || (int) which < 0 || which >= ZI_PLAN_EP_COUNT || !bind || !connect) {
        return ZI_ERR_INVALID;
    }
    char *b = strdup (bind);
    char *c = strdup (connect);
    if (!b || !c) {
        free (b);
        free (c);
        return ZI_ERR_NOMEM;
    }
    zi_plan_endpoint_t *ep = &self->broker.endpoints[which];
    free (ep->bind);
    free (ep->connect);
    ep->bind = b;
    ep->connect = c;
    return 0;
}

int
zi_plan_set_endpoints_tcp (zi_plan_t *self, const char *bind_host,
                           const char *connect_host, int base_port)
{
    if (!self || !bind_host || !connect_host || base_port < 1
        || base_port > 65535 - (ZI_PLAN_EP_COUNT - 1)) {
        return ZI_ERR_INVALID;
    }
    for (int e = 0; e < ZI_PLAN_EP_COUNT; e++) {
        char bind[300], connect[300];
        snprintf (bind, sizeof bind, "tcp://%s:%d", bind_host, base_port + e);
        snprintf (connect, sizeof connect, "tcp://%s:%d", connect_host, base_port + e);
        int rc = zi_plan_set_endpoint (self, (zi_plan_ep_t) e, bind, connect);
        if (rc) {
            return rc;
        }
    }
    return 0;
}

int
zi_plan_set_endpoints_ipc (zi_plan_t *self, const char *dir)
{
    if (!self || !dir) {
        return ZI_ERR_INVALID;
    }
    for (int e = 0; e < ZI_PLAN_EP_COUNT; e++) {
        char url[300];
        snprintf (url, sizeof url, "ipc://%s/zinfer-%s.sock", dir, s_ep_names[e]);
        int rc = zi_plan_set_endpoint (self, (zi_plan_ep_t) e, url, url);
        if (rc) {
            return rc;
        }
    }
    return 0;
}

//  =====================================================================
//  Lookups

const zi_plan_host_t *
zi_plan_find_host (const zi_plan_t *self, const char *name)
{
    for (size_t i = 0; self && name && i < self->n_hosts; i++) {
        if (self->hosts[i].name && strcmp (self->hosts[i].name, name) == 0) {
            return &self->hosts[i];
        }
    }
    return NULL;
}

const zi_plan_replica_t *
zi_plan_find_replica (const zi_plan_t *self, const char *name,
                      const zi_plan_segment_t **segment,
                      const zi_plan_stage_t **stage)
{
    if (segment) {
        *segment = NULL;
    }
    if (stage) {
        *stage = NULL;
    }
    for (size_t i = 0; self && name && i < self->n_segments; i++) {
        const zi_plan_segment_t *s = &self->segments[i];
        for (size_t j = 0; j < s->n_replicas; j++) {
            if (s->replicas[j].name && strcmp (s->replicas[j].name, name) == 0) {
                if (segment) {
                    *segment = s;
                }
                return &s->replicas[j];
            }
        }
    }
    for (size_t i = 0; self && name && i < self->n_stages; i++) {
        const zi_plan_stage_t *s = &self->stages[i];
        for (size_t j = 0; j < s->n_replicas; j++) {
            if (s->replicas[j].name && strcmp (s->replicas[j].name, name) == 0) {
                if (stage) {
                    *stage = s;
                }
                return &s->replicas[j];
            }
        }
    }
    return NULL;
}

zi_plan_stage_kind_t
zi_plan_stage_role (const zi_plan_stage_t *stage)
{
    if (!stage) {
        return (zi_plan_stage_kind_t) 0;
    }
    return stage->kind == ZI_PLAN_STAGE_CUSTOM ? stage->replaces : stage->kind;
}

const zi_plan_stage_t *
zi_plan_find_stage (const zi_plan_t *self, zi_plan_stage_kind_t role)
{
    for (size_t i = 0; self && i < self->n_stages; i++) {
        if (zi_plan_stage_role (&self->stages[i]) == role) {
            return &self->stages[i];
        }
    }
    return NULL;
}

int
zi_plan_path (const zi_plan_t *self, const char *path, char *buf, size_t len)
{
    if (!self || !path || !buf || len == 0) {
        return ZI_ERR_INVALID;
    }
    int n;
    if (path[0] == '/' || !self->dir) {
        n = snprintf (buf, len, "%s", path);
    }
    else {
        n = snprintf (buf, len, "%s/%s", self->dir, path);
    }
    return n < 0 || (size_t) n >= len ? ZI_ERR_LIMIT : 0;
}

//  =====================================================================
//  JSON -> struct (the document already passed the schema)

typedef struct {
    bool nomem;
} s_conv_t;

static char *
s_dup (s_conv_t *c, const zi_json_t *value)
{
    const char *s = zi_json_str (value);
    if (!s) {
        return NULL;
    }
    char *copy = strdup (s);
    if (!copy) {
        c->nomem = true;
    }
    return copy;
}

static int64_t
s_int (const zi_json_t *value, int64_t fallback)
{
    int64_t v;
    return zi_json_int (value, INT64_MIN, INT64_MAX, &v) == 0 ? v : fallback;
}

static double
s_num (const zi_json_t *value, double fallback)
{
    return zi_json_type (value) == ZI_JSON_NUMBER ? zi_json_num (value) : fallback;
}

//  calloc for n elements of a JSON array: n is bounded by the document, so
//  by the bytes of the file.
static void *
s_array (s_conv_t *c, size_t n, size_t size)
{
    if (n == 0) {
        return NULL;
    }
    void *p = calloc (n, size);
    if (!p) {
        c->nomem = true;
    }
    return p;
}

static char **
s_strv (s_conv_t *c, const zi_json_t *array, size_t *n)
{
    size_t count = zi_json_size (array);
    char **v = (char **) s_array (c, count, sizeof *v);
    *n = v ? count : 0;
    for (size_t i = 0; i < *n; i++) {
        v[i] = s_dup (c, zi_json_at (array, i));
    }
    return v;
}

static void
s_tensor (s_conv_t *c, const zi_json_t *j, zi_plan_tensor_t *t)
{
    t->name = s_dup (c, zi_json_get (j, "name"));
    const char *dtype = zi_json_str (zi_json_get (j, "dtype"));
    t->dtype = dtype ? zi_dtype_from_name (dtype) : ZI_DT_UNDEFINED;
    const zi_json_t *shape = zi_json_get (j, "shape");
    size_t rank = zi_json_size (shape);
    t->rank = (int) (rank < ZI_MAX_RANK ? rank : ZI_MAX_RANK);
    for (int d = 0; d < t->rank; d++) {
        t->shape[d] = s_int (zi_json_at (shape, (size_t) d), -1);
    }
}

static zi_plan_tensor_t *
s_tensors (s_conv_t *c, const zi_json_t *array, size_t *n)
{
    size_t count = zi_json_size (array);
    zi_plan_tensor_t *t = (zi_plan_tensor_t *) s_array (c, count, sizeof *t);
    *n = t ? count : 0;
    for (size_t i = 0; i < *n; i++) {
        s_tensor (c, zi_json_at (array, i), &t[i]);
    }
    return t;
}

static zi_plan_replica_t *
s_replicas (s_conv_t *c, const zi_json_t *array, size_t *n)
{
    size_t count = zi_json_size (array);
    zi_plan_replica_t *r = (zi_plan_replica_t *) s_array (c, count, sizeof *r);
    *n = r ? count : 0;
    for (size_t i = 0; i < *n; i++) {
        const zi_json_t *j = zi_json_at (array, i);
        r[i].name = s_dup (c, zi_json_get (j, "name"));
        r[i].host = s_dup (c, zi_json_get (j, "host"));
        r[i].capacity = s_num (zi_json_get (j, "capacity"), 1.0);
        r[i].credit = s_int (zi_json_get (j, "credit"), 1);
        r[i].threads = s_int (zi_json_get (j, "threads"), 1);
    }
    return r;
}

static double *
s_numbers (s_conv_t *c, const zi_json_t *array, size_t *n)
{
    size_t count = zi_json_size (array);
    double *v = (double *) s_array (c, count, sizeof *v);
    *n = v ? count : 0;
    for (size_t i = 0; i < *n; i++) {
        v[i] = s_num (zi_json_at (array, i), 0);
    }
    return v;
}

static void
s_op (s_conv_t *c, const zi_json_t *j, zi_plan_op_t *op)
{
    op->kind = (zi_plan_op_kind_t) s_lookup (s_op_names, S_COUNT (s_op_names),
                                             zi_json_str (zi_json_get (j, "op")), 0);
    op->axis = s_int (zi_json_get (j, "axis"), -1);
    switch (op->kind) {
        case ZI_PLAN_OP_CAST: {
            const char *to = zi_json_str (zi_json_get (j, "to"));
            op->to = to ? zi_dtype_from_name (to) : ZI_DT_UNDEFINED;
            break;
        }
        case ZI_PLAN_OP_SCALE:
            op->factor = s_num (zi_json_get (j, "factor"), 1.0);
            break;
        case ZI_PLAN_OP_NORMALIZE:
            op->mean = s_numbers (c, zi_json_get (j, "mean"), &op->n_mean);
            op->std = s_numbers (c, zi_json_get (j, "std"), &op->n_std);
            break;
        case ZI_PLAN_OP_RESIZE:
            op->height = s_int (zi_json_get (j, "height"), 0);
            op->width = s_int (zi_json_get (j, "width"), 0);
            op->mode = (zi_plan_resize_t) s_lookup (
                s_resize_names, S_COUNT (s_resize_names),
                zi_json_str (zi_json_get (j, "mode")), ZI_PLAN_RESIZE_BILINEAR);
            break;
        case ZI_PLAN_OP_PAD: {
            const zi_json_t *pads = zi_json_get (j, "pads");
            size_t count = zi_json_size (pads);
            op->pads = (int64_t *) s_array (c, count, sizeof *op->pads);
            op->n_pads = op->pads ? count : 0;
            for (size_t i = 0; i < op->n_pads; i++) {
                op->pads[i] = s_int (zi_json_at (pads, i), 0);
            }
            op->value = s_num (zi_json_get (j, "value"), 0);
            break;
        }
        case ZI_PLAN_OP_TOPK:
            op->k = s_int (zi_json_get (j, "k"), 1);
            break;
        default:
            break;
    }
}

static zi_plan_io_t *
s_ios (s_conv_t *c, const zi_json_t *array, bool with_spec, size_t *n)
{
    size_t count = zi_json_size (array);
    zi_plan_io_t *io = (zi_plan_io_t *) s_array (c, count, sizeof *io);
    *n = io ? count : 0;
    for (size_t i = 0; i < *n; i++) {
        const zi_json_t *j = zi_json_at (array, i);
        if (with_spec) {
            s_tensor (c, j, &io[i].tensor);
        }
        else {
            io[i].tensor.name = s_dup (c, zi_json_get (j, "name"));
        }
        const zi_json_t *ops = zi_json_get (j, "ops");
        size_t n_ops = zi_json_size (ops);
        io[i].ops = (zi_plan_op_t *) s_array (c, n_ops, sizeof *io[i].ops);
        io[i].n_ops = io[i].ops ? n_ops : 0;
        for (size_t k = 0; k < io[i].n_ops; k++) {
            s_op (c, zi_json_at (ops, k), &io[i].ops[k]);
        }
    }
    return io;
}

static void
s_stage (s_conv_t *c, const zi_json_t *j, zi_plan_stage_t *s)
{
    s->kind = (zi_plan_stage_kind_t) s_lookup (s_stage_names, S_COUNT (s_stage_names),
                                               zi_json_str (zi_json_get (j, "kind")), 0);
    s->replicas = s_replicas (c, zi_json_get (j, "replicas"), &s->n_replicas);
    switch (s->kind) {
        case ZI_PLAN_STAGE_PREPROCESS:
            s->tensors = s_ios (c, zi_json_get (j, "inputs"), true, &s->n_tensors);
            break;
        case ZI_PLAN_STAGE_AGGREGATE:
            s->tensors = s_ios (c, zi_json_get (j, "outputs"), false, &s->n_tensors);
            break;
        case ZI_PLAN_STAGE_PARTITION:
            s->micro_batch = s_int (zi_json_get (j, "micro_batch"), 1);
            s->max_batch = s_int (zi_json_get (j, "max_batch"), 1);
            s->max_delay_us = s_int (zi_json_get (j, "max_delay_us"), 0);
            break;
        case ZI_PLAN_STAGE_CUSTOM:
            //  A custom stage may only replace a built-in kind, never itself.
            s->replaces = (zi_plan_stage_kind_t) s_lookup (
                s_stage_names, ZI_PLAN_STAGE_CUSTOM,
                zi_json_str (zi_json_get (j, "replaces")), 0);
            s->command = s_strv (c, zi_json_get (j, "command"), &s->n_command);
            break;
        default:
            break;
    }
}

static void
s_convert (s_conv_t *c, const zi_json_t *doc, zi_plan_t *plan)
{
    plan->version = s_int (zi_json_get (doc, "zinfer_plan"), ZI_PLAN_VERSION);
    plan->name = s_dup (c, zi_json_get (doc, "name"));

    const zi_json_t *model = zi_json_get (doc, "model");
    plan->model.path = s_dup (c, zi_json_get (model, "path"));
    plan->model.sha256 = s_dup (c, zi_json_get (model, "sha256"));
    plan->model.node_count = s_int (zi_json_get (model, "node_count"), 0);
    const zi_json_t *splits = zi_json_get (model, "splits");
    size_t n_splits = zi_json_size (splits);
    plan->model.splits = (zi_split_t *) s_array (c, n_splits, sizeof (zi_split_t));
    plan->model.n_splits = plan->model.splits ? n_splits : 0;
    for (size_t i = 0; i < plan->model.n_splits; i++) {
        const zi_json_t *j = zi_json_at (splits, i);
        plan->model.splits[i].node = s_int (zi_json_get (j, "node"), -1);
        plan->model.splits[i].at = s_int (zi_json_get (j, "at"), 0);
        const char *axis = zi_json_str (zi_json_get (j, "axis"));
        plan->model.splits[i].axis = axis && strcmp (axis, "rows") == 0 ? ZI_SPLIT_ROWS
                                                                        : ZI_SPLIT_CHANNELS;
    }
    plan->model.inputs = s_tensors (c, zi_json_get (model, "inputs"),
                                    &plan->model.n_inputs);
    plan->model.outputs = s_tensors (c, zi_json_get (model, "outputs"),
                                     &plan->model.n_outputs);

    const zi_json_t *hosts = zi_json_get (doc, "hosts");
    size_t n_hosts = zi_json_size (hosts);
    plan->hosts = (zi_plan_host_t *) s_array (c, n_hosts, sizeof *plan->hosts);
    plan->n_hosts = plan->hosts ? n_hosts : 0;
    for (size_t i = 0; i < plan->n_hosts; i++) {
        const zi_json_t *h = zi_json_at (hosts, i);
        plan->hosts[i].name = s_dup (c, zi_json_get (h, "name"));
        plan->hosts[i].address = s_dup (c, zi_json_get (h, "address"));
    }

    const zi_json_t *broker = zi_json_get (doc, "broker");
    zi_plan_broker_t *b = &plan->broker;
    b->host = s_dup (c, zi_json_get (broker, "host"));
    const zi_json_t *endpoints = zi_json_get (broker, "endpoints");
    for (int e = 0; e < ZI_PLAN_EP_COUNT; e++) {
        const zi_json_t *ep = zi_json_get (endpoints, s_ep_names[e]);
        b->endpoints[e].bind = s_dup (c, zi_json_get (ep, "bind"));
        b->endpoints[e].connect = s_dup (c, zi_json_get (ep, "connect"));
    }
    const zi_json_t *heartbeat = zi_json_get (broker, "heartbeat");
    b->heartbeat_interval_ms = s_int (zi_json_get (heartbeat, "interval_ms"),
                                      ZI_PLAN_DEFAULT_HEARTBEAT_MS);
    b->heartbeat_liveness = s_int (zi_json_get (heartbeat, "liveness"),
                                   ZI_PLAN_DEFAULT_LIVENESS);
    b->queue_limit = s_int (zi_json_get (broker, "queue_limit"),
                            ZI_PLAN_DEFAULT_QUEUE_LIMIT);
    b->default_deadline_ms = s_int (zi_json_get (broker, "default_deadline_ms"),
                                    ZI_PLAN_DEFAULT_DEADLINE_MS);
    b->stage_timeout_ms = s_int (zi_json_get (broker, "stage_timeout_ms"),
                                 ZI_PLAN_DEFAULT_STAGE_TIMEOUT_MS);
    b->max_attempts = s_int (zi_json_get (broker, "max_attempts"),
                             ZI_PLAN_DEFAULT_MAX_ATTEMPTS);
    b->max_message_bytes = s_int (zi_json_get (broker, "max_message_bytes"),
                                  ZI_PLAN_DEFAULT_MAX_MESSAGE_BYTES);
    const zi_json_t *skip = zi_json_get (broker, "skip_stages");
    b->skip_stages = skip ? zi_json_bool (skip) : true;
    b->shm_bytes = s_int (zi_json_get (broker, "shm_bytes"), 0);
    const zi_json_t *client_shm = zi_json_get (broker, "client_shm");
    b->client_shm = client_shm ? zi_json_bool (client_shm) : false;

    const zi_json_t *segments = zi_json_get (doc, "segments");
    size_t n_segments = zi_json_size (segments);
    plan->segments = (zi_plan_segment_t *) s_array (c, n_segments, sizeof *plan->segments);
    plan->n_segments = plan->segments ? n_segments : 0;
    for (size_t i = 0; i < plan->n_segments; i++) {
        const zi_json_t *j = zi_json_at (segments, i);
        zi_plan_segment_t *s = &plan->segments[i];
        s->index = s_int (zi_json_get (j, "index"), -1);
        s->first_node = s_int (zi_json_get (j, "first_node"), -1);
        s->last_node = s_int (zi_json_get (j, "last_node"), -1);
        s->inputs = s_strv (c, zi_json_get (j, "inputs"), &s->n_inputs);
        s->outputs = s_strv (c, zi_json_get (j, "outputs"), &s->n_outputs);
        s->cost_flops = s_num (zi_json_get (j, "cost_flops"), 0);
        s->weight_bytes = s_int (zi_json_get (j, "weight_bytes"), 0);
        s->activation_bytes = s_int (zi_json_get (j, "activation_bytes"), 0);
        s->cost_share = s_num (zi_json_get (j, "cost_share"), 0);
        s->replicas = s_replicas (c, zi_json_get (j, "replicas"), &s->n_replicas);
    }

    const zi_json_t *stages = zi_json_get (doc, "stages");
    size_t n_stages = zi_json_size (stages);
    plan->stages = (zi_plan_stage_t *) s_array (c, n_stages, sizeof *plan->stages);
    plan->n_stages = plan->stages ? n_stages : 0;
    for (size_t i = 0; i < plan->n_stages; i++) {
        s_stage (c, zi_json_at (stages, i), &plan->stages[i]);
    }

    const zi_json_t *priorities = zi_json_get (doc, "priorities");
    zi_plan_priorities_t *p = &plan->priorities;
    p->mode = (zi_plan_priority_mode_t) s_lookup (
        s_mode_names, S_COUNT (s_mode_names),
        zi_json_str (zi_json_get (priorities, "mode")), ZI_PLAN_PRIORITY_WEIGHTED);
    const zi_json_t *classes = zi_json_get (priorities, "classes");
    if (zi_json_size (classes) > 0) {
        size_t n = zi_json_size (classes);
        p->classes = (zi_plan_class_t *) s_array (c, n, sizeof *p->classes);
        p->n_classes = p->classes ? n : 0;
        for (size_t i = 0; i < p->n_classes; i++) {
            const zi_json_t *j = zi_json_at (classes, i);
            p->classes[i].name = s_dup (c, zi_json_get (j, "name"));
            p->classes[i].weight = s_num (zi_json_get (j, "weight"), 1.0);
        }
    }
    else {
        //  No priorities section: every request is in one class.
        p->classes = (zi_plan_class_t *) s_array (c, 1, sizeof *p->classes);
        if (p->classes) {
            p->n_classes = 1;
            p->classes[0].name = strdup ("normal");
            p->classes[0].weight = 1.0;
            c->nomem |= !p->classes[0].name;
        }
    }
    p->default_class = s_dup (c, zi_json_get (priorities, "default_class"));
    if (!p->default_class && p->n_classes > 0 && p->classes[0].name) {
        p->default_class = strdup (p->classes[0].name);
        c->nomem |= !p->default_class;
    }

    const zi_json_t *security = zi_json_get (doc, "security");
    plan->security.curve = zi_json_bool (zi_json_get (security, "curve"));
    plan->security.server_public_key = s_dup (c, zi_json_get (security, "server_public_key"));
    plan->security.server_secret_file = s_dup (c, zi_json_get (security, "server_secret_file"));
    plan->security.client_secret_file = s_dup (c, zi_json_get (security, "client_secret_file"));
    plan->security.allowed_keys = s_strv (c, zi_json_get (security, "allowed_keys"),
                                          &plan->security.n_allowed_keys);
}

//  =====================================================================
//  struct -> JSON

typedef struct {
    int rc;             //  first failure; later calls are harmless no-ops
} s_out_t;

static void
s_keep (s_out_t *o, int rc)
{
    if (o->rc == 0 && rc != 0) {
        o->rc = rc;
    }
}

static zi_json_t *
s_put_object (s_out_t *o, zi_json_t *parent, const char *key)
{
    zi_json_t *child = key ? zi_json_set_object (parent, key) : zi_json_append_object (parent);
    if (!child) {
        s_keep (o, ZI_ERR_NOMEM);
    }
    return child;
}

static zi_json_t *
s_put_array (s_out_t *o, zi_json_t *parent, const char *key)
{
    zi_json_t *child = zi_json_set_array (parent, key);
    if (!child) {
        s_keep (o, ZI_ERR_NOMEM);
    }
    return child;
}

//  NULL strings are left out: the schema then reports the missing field.
static void
s_put_str (s_out_t *o, zi_json_t *obj, const char *key, const char *value)
{
    if (value) {
        s_keep (o, zi_json_set_str (obj, key, value));
    }
}

static void
s_put_int (s_out_t *o, zi_json_t *obj, const char *key, int64_t value)
{
    s_keep (o, zi_json_set_int (obj, key, value));
}

//  NaN and infinities become null, which the schema rejects with the path.
static void
s_put_num (s_out_t *o, zi_json_t *obj, const char *key, double value)
{
    if (isfinite (value)) {
        s_keep (o, zi_json_set_double (obj, key, value));
    }
    else {
        zi_json_t *null = zi_json_new_null ();
        s_keep (o, null ? zi_json_set (obj, key, &null) : ZI_ERR_NOMEM);
        zi_json_destroy (&null);
    }
}

static void
s_put_strv (s_out_t *o, zi_json_t *obj, const char *key, char **v, size_t n)
{
    zi_json_t *array = s_put_array (o, obj, key);
    for (size_t i = 0; array && i < n; i++) {
        if (v[i]) {
            s_keep (o, zi_json_append_str (array, v[i]));
        }
    }
}

static void
s_put_numbers (s_out_t *o, zi_json_t *obj, const char *key, const double *v, size_t n)
{
    zi_json_t *array = s_put_array (o, obj, key);
    for (size_t i = 0; array && i < n; i++) {
        if (isfinite (v[i])) {
            s_keep (o, zi_json_append_double (array, v[i]));
        }
        else {
            zi_json_t *null = zi_json_new_null ();
            s_keep (o, null ? zi_json_append (array, &null) : ZI_ERR_NOMEM);
            zi_json_destroy (&null);
        }
    }
}

static void
s_put_tensor (s_out_t *o, zi_json_t *obj, const zi_plan_tensor_t *t)
{
    s_put_str (o, obj, "name", t->name);
    s_put_str (o, obj, "dtype", zi_dtype_name (t->dtype));
    zi_json_t *shape = s_put_array (o, obj, "shape");
    //  A rank outside 0..ZI_MAX_RANK is reported by the rules; never read
    //  past shape[] meanwhile.
    int rank = t->rank < 0 ? 0 : t->rank > ZI_MAX_RANK ? ZI_MAX_RANK : t->rank;
    for (int d = 0; shape && d < rank; d++) {
        s_keep (o, zi_json_append_int (shape, t->shape[d]));
    }
}

static void
s_put_replicas (s_out_t *o, zi_json_t *obj, const zi_plan_replica_t *r, size_t n,
                bool exec)
{
    zi_json_t *array = s_put_array (o, obj, "replicas");
    for (size_t i = 0; array && i < n; i++) {
        zi_json_t *j = s_put_object (o, array, NULL);
        s_put_str (o, j, "name", r[i].name);
        s_put_str (o, j, "host", r[i].host);
        s_put_num (o, j, "capacity", r[i].capacity);
        if (exec) {
            s_put_int (o, j, "credit", r[i].credit);
        }
        s_put_int (o, j, "threads", r[i].threads);
    }
}

static void
s_put_op (s_out_t *o, zi_json_t *j, const zi_plan_op_t *op)
{
    s_put_str (o, j, "op", zi_plan_op_name (op->kind));
    switch (op->kind) {
        case ZI_PLAN_OP_CAST:
            s_put_str (o, j, "to", zi_dtype_name (op->to));
            break;
        case ZI_PLAN_OP_SCALE:
            s_put_num (o, j, "factor", op->factor);
            break;
        case ZI_PLAN_OP_NORMALIZE:
            s_put_numbers (o, j, "mean", op->mean, op->n_mean);
            s_put_numbers (o, j, "std", op->std, op->n_std);
            break;
        case ZI_PLAN_OP_RESIZE:
            s_put_int (o, j, "height", op->height);
            s_put_int (o, j, "width", op->width);
            s_put_str (o, j, "mode", zi_plan_resize_name (op->mode));
            break;
        case ZI_PLAN_OP_PAD: {
            zi_json_t *pads = s_put_array (o, j, "pads");
            for (size_t i = 0; pads && i < op->n_pads; i++) {
                s_keep (o, zi_json_append_int (pads, op->pads[i]));
            }
            s_put_num (o, j, "value", op->value);
            break;
        }
        case ZI_PLAN_OP_SOFTMAX:
        case ZI_PLAN_OP_ARGMAX:
            s_put_int (o, j, "axis", op->axis);
            break;
        case ZI_PLAN_OP_TOPK:
            s_put_int (o, j, "k", op->k);
            s_put_int (o, j, "axis", op->axis);
            break;
        default:
            break;
    }
}

static void
s_put_ios (s_out_t *o, zi_json_t *obj, const char *key, const zi_plan_io_t *io,
           size_t n, bool with_spec)
{
    zi_json_t *array = s_put_array (o, obj, key);
    for (size_t i = 0; array && i < n; i++) {
        zi_json_t *j = s_put_object (o, array, NULL);
        if (with_spec) {
            s_put_tensor (o, j, &io[i].tensor);
        }
        else {
            s_put_str (o, j, "name", io[i].tensor.name);
        }
        zi_json_t *ops = s_put_array (o, j, "ops");
        for (size_t k = 0; ops && k < io[i].n_ops; k++) {
            s_put_op (o, s_put_object (o, ops, NULL), &io[i].ops[k]);
        }
    }
}

static void
s_put_stage (s_out_t *o, zi_json_t *j, const zi_plan_stage_t *s)
{
    s_put_str (o, j, "kind", zi_plan_stage_kind_name (s->kind));
    if (s->kind == ZI_PLAN_STAGE_CUSTOM) {
        s_put_str (o, j, "replaces", zi_plan_stage_kind_name (s->replaces));
        s_put_strv (o, j, "command", s->command, s->n_command);
    }
    s_put_replicas (o, j, s->replicas, s->n_replicas, false);
    if (s->kind == ZI_PLAN_STAGE_PREPROCESS) {
        s_put_ios (o, j, "inputs", s->tensors, s->n_tensors, true);
    }
    else if (s->kind == ZI_PLAN_STAGE_AGGREGATE) {
        s_put_ios (o, j, "outputs", s->tensors, s->n_tensors, false);
    }
    else if (s->kind == ZI_PLAN_STAGE_PARTITION) {
        s_put_int (o, j, "micro_batch", s->micro_batch);
        s_put_int (o, j, "max_batch", s->max_batch);
        s_put_int (o, j, "max_delay_us", s->max_delay_us);
    }
}

int
zi_plan_to_json (const zi_plan_t *self, zi_json_t **out)
{
    if (!self || !out) {
        return ZI_ERR_INVALID;
    }
    *out = NULL;
    s_out_t o = {0};
    zi_json_t *root = zi_json_new_object ();
    if (!root) {
        return ZI_ERR_NOMEM;
    }
    s_put_int (&o, root, "zinfer_plan", self->version);
    s_put_str (&o, root, "name", self->name);

    zi_json_t *model = s_put_object (&o, root, "model");
    s_put_str (&o, model, "path", self->model.path);
    s_put_str (&o, model, "sha256", self->model.sha256);
    s_put_int (&o, model, "node_count", self->model.node_count);
    if (self->model.n_splits > 0) {
        zi_json_t *splits = s_put_array (&o, model, "splits");
        for (size_t i = 0; splits && i < self->model.n_splits; i++) {
            zi_json_t *sp = s_put_object (&o, splits, NULL);
            s_put_int (&o, sp, "node", self->model.splits[i].node);
            s_put_int (&o, sp, "at", self->model.splits[i].at);
            if (self->model.splits[i].axis == ZI_SPLIT_ROWS) {
                s_put_str (&o, sp, "axis", "rows");
            }
        }
    }
    zi_json_t *inputs = s_put_array (&o, model, "inputs");
    for (size_t i = 0; inputs && i < self->model.n_inputs; i++) {
        s_put_tensor (&o, s_put_object (&o, inputs, NULL), &self->model.inputs[i]);
    }
    zi_json_t *outputs = s_put_array (&o, model, "outputs");
    for (size_t i = 0; outputs && i < self->model.n_outputs; i++) {
        s_put_tensor (&o, s_put_object (&o, outputs, NULL), &self->model.outputs[i]);
    }

    zi_json_t *hosts = s_put_array (&o, root, "hosts");
    for (size_t i = 0; hosts && i < self->n_hosts; i++) {
        zi_json_t *h = s_put_object (&o, hosts, NULL);
        s_put_str (&o, h, "name", self->hosts[i].name);
        s_put_str (&o, h, "address", self->hosts[i].address);
    }

    const zi_plan_broker_t *b = &self->broker;
    zi_json_t *broker = s_put_object (&o, root, "broker");
    s_put_str (&o, broker, "host", b->host);
    zi_json_t *endpoints = s_put_object (&o, broker, "endpoints");
    for (int e = 0; endpoints && e < ZI_PLAN_EP_COUNT; e++) {
        if (!b->endpoints[e].bind && !b->endpoints[e].connect) {
            continue;
        }
        zi_json_t *ep = s_put_object (&o, endpoints, s_ep_names[e]);
        s_put_str (&o, ep, "bind", b->endpoints[e].bind);
        s_put_str (&o, ep, "connect", b->endpoints[e].connect);
    }
    zi_json_t *heartbeat = s_put_object (&o, broker, "heartbeat");
    s_put_int (&o, heartbeat, "interval_ms", b->heartbeat_interval_ms);
    s_put_int (&o, heartbeat, "liveness", b->heartbeat_liveness);
    s_put_int (&o, broker, "queue_limit", b->queue_limit);
    s_put_int (&o, broker, "default_deadline_ms", b->default_deadline_ms);
    s_put_int (&o, broker, "stage_timeout_ms", b->stage_timeout_ms);
    s_put_int (&o, broker, "max_attempts", b->max_attempts);
    s_put_int (&o, broker, "max_message_bytes", b->max_message_bytes);
    if (broker) {
        s_keep (&o, zi_json_set_bool (broker, "skip_stages", b->skip_stages));
    }
    s_put_int (&o, broker, "shm_bytes", b->shm_bytes);
    if (broker && b->client_shm) {
        s_keep (&o, zi_json_set_bool (broker, "client_shm", true));
    }

    zi_json_t *segments = s_put_array (&o, root, "segments");
    for (size_t i = 0; segments && i < self->n_segments; i++) {
        const zi_plan_segment_t *s = &self->segments[i];
        zi_json_t *j = s_put_object (&o, segments, NULL);
        s_put_int (&o, j, "index", s->index);
        s_put_int (&o, j, "first_node", s->first_node);
        s_put_int (&o, j, "last_node", s->last_node);
        s_put_strv (&o, j, "inputs", s->inputs, s->n_inputs);
        s_put_strv (&o, j, "outputs", s->outputs, s->n_outputs);
        s_put_num (&o, j, "cost_flops", s->cost_flops);
        s_put_int (&o, j, "weight_bytes", s->weight_bytes);
        s_put_int (&o, j, "activation_bytes", s->activation_bytes);
        s_put_num (&o, j, "cost_share", s->cost_share);
        s_put_replicas (&o, j, s->replicas, s->n_replicas, true);
    }

    zi_json_t *stages = s_put_array (&o, root, "stages");
    for (size_t i = 0; stages && i < self->n_stages; i++) {
        s_put_stage (&o, s_put_object (&o, stages, NULL), &self->stages[i]);
    }

    const zi_plan_priorities_t *p = &self->priorities;
    if (p->n_classes > 0) {
        zi_json_t *priorities = s_put_object (&o, root, "priorities");
        s_put_str (&o, priorities, "mode", zi_plan_priority_mode_name (p->mode));
        zi_json_t *classes = s_put_array (&o, priorities, "classes");
        for (size_t i = 0; classes && i < p->n_classes; i++) {
            zi_json_t *j = s_put_object (&o, classes, NULL);
            s_put_str (&o, j, "name", p->classes[i].name);
            s_put_num (&o, j, "weight", p->classes[i].weight);
        }
        s_put_str (&o, priorities, "default_class", p->default_class);
    }

    const zi_plan_security_t *sec = &self->security;
    zi_json_t *security = s_put_object (&o, root, "security");
    s_keep (&o, zi_json_set_bool (security, "curve", sec->curve));
    s_put_str (&o, security, "server_public_key", sec->server_public_key);
    s_put_str (&o, security, "server_secret_file", sec->server_secret_file);
    s_put_str (&o, security, "client_secret_file", sec->client_secret_file);
    if (sec->n_allowed_keys > 0) {
        s_put_strv (&o, security, "allowed_keys", sec->allowed_keys, sec->n_allowed_keys);
    }

    if (o.rc) {
        zi_json_destroy (&root);
        return o.rc;
    }
    *out = root;
    return 0;
}

//  =====================================================================
//  Cross-field rules

typedef struct {
    const char *source;
    char *err;
    size_t errlen;
    zi_json_t *host_names;      //  name -> path where first seen
    zi_json_t *replica_names;   //  likewise; both keep lookups O(1)
} s_rules_t;

static int
s_rfail (s_rules_t *r, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static int
s_rfail (s_rules_t *r, const char *fmt, ...)
{
    if (r->err && r->errlen) {
        int n = snprintf (r->err, r->errlen, "%s: ", r->source);
        if (n >= 0 && (size_t) n < r->errlen) {
            va_list ap;
            va_start (ap, fmt);
            vsnprintf (r->err + n, r->errlen - (size_t) n, fmt, ap);
            va_end (ap);
        }
    }
    return ZI_ERR_MALFORMED;
}

//  Quote a string from the plan for a message: printable ASCII only, cut
//  short, so a hostile name cannot garble a terminal or a log line.
static const char *
s_q (const char *s, char *buf, size_t size)
{
    if (!s) {
        snprintf (buf, size, "(none)");
        return buf;
    }
    size_t o = 0;
    buf[o++] = '"';
    for (; *s && o + 6 < size; s++) {
        unsigned char c = (unsigned char) *s;
        buf[o++] = c >= 0x20 && c < 0x7F ? (char) c : '?';
    }
    if (*s) {
        memcpy (buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = 0;
    return buf;
}

static bool
s_name_ok (const char *s)
{
    if (!s || !*s) {
        return false;
    }
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
              || c == '.' || c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

static int
s_check_name (s_rules_t *r, const char *name, const char *path)
{
    if (name && !s_name_ok (name)) {
        char q[96];
        return s_rfail (r, "%s: %s may only hold letters, digits, '.', '_' and '-'",
                        path, s_q (name, q, sizeof q));
    }
    return 0;
}

//  Record name (first seen at path) in set, failing if it is there already.
static int
s_unique (s_rules_t *r, zi_json_t *set, const char *name, const char *path)
{
    if (!name) {
        return 0;
    }
    const char *first = zi_json_str (zi_json_get (set, name));
    if (first) {
        char q[96];
        return s_rfail (r, "%s: %s is already the name of %s", path,
                        s_q (name, q, sizeof q), first);
    }
    int rc = zi_json_set_str (set, name, path);
    return rc ? zi_fail (r->err, r->errlen, rc, "%s: out of memory", r->source) : 0;
}

static int
s_check_host_ref (s_rules_t *r, const char *host, const char *path)
{
    if (host && !zi_json_get (r->host_names, host)) {
        char q[96];
        return s_rfail (r, "%s: unknown host %s (not in hosts)", path,
                        s_q (host, q, sizeof q));
    }
    return 0;
}

static int
s_check_replicas (s_rules_t *r, const zi_plan_replica_t *reps, size_t n, const char *owner)
{
    for (size_t j = 0; j < n; j++) {
        char path[128];
        snprintf (path, sizeof path, "%s.replicas[%zu].name", owner, j);
        int rc = s_check_name (r, reps[j].name, path);
        if (rc == 0) {
            snprintf (path, sizeof path, "%s.replicas[%zu]", owner, j);
            rc = s_unique (r, r->replica_names, reps[j].name, path);
        }
        if (rc == 0) {
            snprintf (path, sizeof path, "%s.replicas[%zu].host", owner, j);
            rc = s_check_host_ref (r, reps[j].host, path);
        }
        if (rc) {
            return rc;
        }
    }
    return 0;
}

static int
s_check_tensor_names (s_rules_t *r, const zi_plan_tensor_t *t, size_t n, const char *owner)
{
    zi_json_t *seen = zi_json_new_object ();
    if (!seen) {
        return zi_fail (r->err, r->errlen, ZI_ERR_NOMEM, "%s: out of memory", r->source);
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char path[96];
        if (t[i].rank < 0 || t[i].rank > ZI_MAX_RANK) {
            snprintf (path, sizeof path, "%s[%zu].shape", owner, i);
            rc = s_rfail (r, "%s: rank %d is outside 0..%d", path, t[i].rank, ZI_MAX_RANK);
            break;
        }
        snprintf (path, sizeof path, "%s[%zu]", owner, i);
        rc = s_unique (r, seen, t[i].name, path);
    }
    zi_json_destroy (&seen);
    return rc;
}

//  ---------------------------------------------------------------------
//  Endpoints

typedef enum {
    S_EP_BAD = 0,
    S_EP_TCP,
    S_EP_IPC,
    S_EP_INPROC,
} s_transport_t;

//  Parse a ZeroMQ endpoint as the broker binds it or peers connect to it.
//  On failure returns S_EP_BAD and a reason in *why.
static s_transport_t
s_endpoint_parse (const char *url, bool bind, long *port, const char **why)
{
    *port = 0;
    if (strncmp (url, "tcp://", 6) == 0) {
        const char *rest = url + 6;
        const char *colon = strrchr (rest, ':');
        if (!colon) {
            *why = "needs a port (tcp://host:port)";
            return S_EP_BAD;
        }
        size_t host_len = (size_t) (colon - rest);
        if (host_len == 0) {
            *why = "needs a host (tcp://host:port)";
            return S_EP_BAD;
        }
        if (rest[0] == '[' && rest[host_len - 1] != ']') {
            *why = "has an IPv6 address without its closing ']'";
            return S_EP_BAD;
        }
        if (!bind && host_len == 1 && rest[0] == '*') {
            *why = "needs a host name or address to connect to, not '*'";
            return S_EP_BAD;
        }
        const char *p = colon + 1;
        long value = 0;
        size_t digits = 0;
        for (; *p >= '0' && *p <= '9' && digits < 6; p++, digits++) {
            value = value * 10 + (*p - '0');
        }
        if (digits == 0 || *p || value < 1 || value > 65535) {
            *why = "needs a port number from 1 to 65535";
            return S_EP_BAD;
        }
        *port = value;
        return S_EP_TCP;
    }
    if (strncmp (url, "ipc://", 6) == 0) {
        const char *path = url + 6;
        //  sun_path holds 108 bytes with the NUL; "*" asks for a random path
        //  that nobody else could know.
        if (!*path || strcmp (path, "*") == 0) {
            *why = "needs a path (ipc:///run/zinfer/front.sock)";
            return S_EP_BAD;
        }
        if (strlen (path) > 107) {
            *why = "has a path longer than 107 bytes (the socket address limit)";
            return S_EP_BAD;
        }
        return S_EP_IPC;
    }
    if (strncmp (url, "inproc://", 9) == 0) {
        if (!url[9]) {
            *why = "needs a name (inproc://name)";
            return S_EP_BAD;
        }
        return S_EP_INPROC;
    }
    *why = "is not a ZeroMQ endpoint: expected tcp://host:port, ipc://path or inproc://name";
    return S_EP_BAD;
}

static int
s_check_endpoints (s_rules_t *r, const zi_plan_broker_t *b)
{
    s_transport_t transport[ZI_PLAN_EP_COUNT] = {S_EP_BAD};
    long port[ZI_PLAN_EP_COUNT] = {0};
    for (int e = 0; e < ZI_PLAN_EP_COUNT; e++) {
        const zi_plan_endpoint_t *ep = &b->endpoints[e];
        const char *name = s_ep_names[e];
        const char *why = NULL;
        char q1[96], q2[96];
        if (!ep->bind || !ep->connect) {
            continue;       //  the schema reported it
        }
        transport[e] = s_endpoint_parse (ep->bind, true, &port[e], &why);
        if (transport[e] == S_EP_BAD) {
            return s_rfail (r, "broker.endpoints.%s.bind: %s %s", name,
                            s_q (ep->bind, q1, sizeof q1), why);
        }
        long connect_port;
        s_transport_t t = s_endpoint_parse (ep->connect, false, &connect_port, &why);
        if (t == S_EP_BAD) {
            return s_rfail (r, "broker.endpoints.%s.connect: %s %s", name,
                            s_q (ep->connect, q1, sizeof q1), why);
        }
        if (t != transport[e]) {
            return s_rfail (r, "broker.endpoints.%s.connect: %s uses another transport "
                            "than bind %s", name, s_q (ep->connect, q1, sizeof q1),
                            s_q (ep->bind, q2, sizeof q2));
        }
        if (t == S_EP_TCP && connect_port != port[e]) {
            return s_rfail (r, "broker.endpoints.%s.connect: port %ld differs from the "
                            "port bound, %ld", name, connect_port, port[e]);
        }
        if (t != S_EP_TCP && strcmp (ep->bind, ep->connect) != 0) {
            return s_rfail (r, "broker.endpoints.%s.connect: must equal bind for ipc:// "
                            "and inproc:// endpoints (got %s, bind is %s)", name,
                            s_q (ep->connect, q1, sizeof q1), s_q (ep->bind, q2, sizeof q2));
        }
        //  Two sockets of one broker cannot bind the same address. For tcp
        //  compare ports: "*:5555" and "127.0.0.1:5555" collide too.
        for (int f = 0; f < e; f++) {
            if (transport[f] != transport[e] || !b->endpoints[f].bind) {
                continue;
            }
            bool clash = transport[e] == S_EP_TCP
                             ? port[f] == port[e]
                             : strcmp (b->endpoints[f].bind, ep->bind) == 0;
            if (clash) {
                return s_rfail (r, "broker.endpoints.%s.bind: %s collides with "
                                "broker.endpoints.%s.bind %s (each socket needs its own "
                                "%s)", name, s_q (ep->bind, q1, sizeof q1), s_ep_names[f],
                                s_q (b->endpoints[f].bind, q2, sizeof q2),
                                transport[e] == S_EP_TCP ? "port" : "address");
            }
        }
    }
    //  Shared memory is one host's: a client's blocks can only be named
    //  to a broker it reaches over ipc.
    if (b->client_shm && transport[ZI_PLAN_EP_FRONT] != S_EP_IPC) {
        char q[96];
        return s_rfail (r, "broker.client_shm: needs an ipc:// front endpoint (clients' "
                        "shared memory is on the broker's host), front binds %s",
                        s_q (b->endpoints[ZI_PLAN_EP_FRONT].bind, q, sizeof q));
    }
    return 0;
}

//  ---------------------------------------------------------------------
//  Segments, stages, priorities, security

static int
s_check_segments (s_rules_t *r, const zi_plan_t *plan)
{
    //  Tensors available to a segment: the model's inputs and whatever an
    //  earlier segment sends on (the broker keeps them for the request).
    zi_json_t *available = zi_json_new_object ();
    if (!available) {
        return zi_fail (r->err, r->errlen, ZI_ERR_NOMEM, "%s: out of memory", r->source);
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < plan->model.n_inputs; i++) {
        if (plan->model.inputs[i].name) {
            rc = zi_json_set_str (available, plan->model.inputs[i].name, "model input");
        }
    }
    int64_t last = plan->model.node_count - 1;
    char q[96];
    for (size_t i = 0; rc == 0 && i < plan->n_segments; i++) {
        const zi_plan_segment_t *s = &plan->segments[i];
        if (s->index != (int64_t) i) {
            rc = s_rfail (r, "segments[%zu].index: must be %zu: segments are listed in "
                          "pipeline order from 0 (got %" PRId64 ")", i, i, s->index);
            break;
        }
        if (s->first_node > s->last_node) {
            rc = s_rfail (r, "segments[%zu]: first_node %" PRId64 " is after last_node %"
                          PRId64, i, s->first_node, s->last_node);
            break;
        }
        int64_t expect = i == 0 ? 0 : plan->segments[i - 1].last_node + 1;
        if (s->first_node != expect) {
            if (i == 0) {
                rc = s_rfail (r, "segments[0].first_node: must be 0, the model's first "
                              "node (got %" PRId64 ")", s->first_node);
            }
            else {
                rc = s_rfail (r, "segments[%zu].first_node: must be %" PRId64 ", right "
                              "after segments[%zu].last_node (got %" PRId64 ": %s)",
                              i, expect, i - 1, s->first_node,
                              s->first_node > expect ? "nodes left out" : "an overlap");
            }
            break;
        }
        if (s->last_node > last) {
            rc = s_rfail (r, "segments[%zu].last_node: %" PRId64 " is past the model's "
                          "last node %" PRId64 " (node_count %" PRId64 ")", i,
                          s->last_node, last, plan->model.node_count);
            break;
        }
        if (i + 1 == plan->n_segments && s->last_node != last) {
            char left[64];
            if (s->last_node + 1 == last) {
                snprintf (left, sizeof left, "node %" PRId64 " is", last);
            }
            else {
                snprintf (left, sizeof left, "nodes %" PRId64 "..%" PRId64 " are",
                          s->last_node + 1, last);
            }
            rc = s_rfail (r, "segments[%zu].last_node: must be %" PRId64 ", the model's "
                          "last node: %s in no segment (got %" PRId64 ")", i, last, left,
                          s->last_node);
            break;
        }
        char owner[48];
        snprintf (owner, sizeof owner, "segments[%zu]", i);
        rc = s_check_replicas (r, s->replicas, s->n_replicas, owner);
        for (size_t k = 0; rc == 0 && k < s->n_inputs; k++) {
            if (s->inputs[k] && !zi_json_get (available, s->inputs[k])) {
                rc = s_rfail (r, "segments[%zu].inputs[%zu]: tensor %s is neither a model "
                              "input nor an output of an earlier segment", i, k,
                              s_q (s->inputs[k], q, sizeof q));
            }
        }
        for (size_t k = 0; rc == 0 && k < s->n_outputs; k++) {
            if (s->outputs[k]) {
                rc = zi_json_set_str (available, s->outputs[k], "segment output");
                if (rc) {
                    rc = zi_fail (r->err, r->errlen, rc, "%s: out of memory", r->source);
                }
            }
        }
    }
    //  Only segments produce the model's outputs; anything else means a cut
    //  dropped one.
    for (size_t i = 0; rc == 0 && i < plan->model.n_outputs; i++) {
        const char *name = plan->model.outputs[i].name;
        const char *from = zi_json_str (zi_json_get (available, name));
        if (name && (!from || strcmp (from, "segment output") != 0)) {
            rc = s_rfail (r, "model.outputs[%zu]: tensor %s is not an output of any "
                          "segment", i, s_q (name, q, sizeof q));
        }
    }
    zi_json_destroy (&available);
    return rc;
}

static const zi_plan_tensor_t *
s_find_tensor (const zi_plan_tensor_t *t, size_t n, const char *name)
{
    for (size_t i = 0; name && i < n; i++) {
        if (t[i].name && strcmp (t[i].name, name) == 0) {
            return &t[i];
        }
    }
    return NULL;
}

static int
s_check_ios (s_rules_t *r, const zi_plan_t *plan, const zi_plan_stage_t *s, size_t i)
{
    bool pre = s->kind == ZI_PLAN_STAGE_PREPROCESS;
    const char *field = pre ? "inputs" : "outputs";
    const zi_plan_tensor_t *model = pre ? plan->model.inputs : plan->model.outputs;
    size_t n_model = pre ? plan->model.n_inputs : plan->model.n_outputs;
    char q[96];
    for (size_t k = 0; k < s->n_tensors; k++) {
        const zi_plan_io_t *io = &s->tensors[k];
        const char *name = io->tensor.name;
        if (name && !s_find_tensor (model, n_model, name)) {
            return s_rfail (r, "stages[%zu].%s[%zu].name: %s is not one of the model's %s",
                            i, field, k, s_q (name, q, sizeof q), field);
        }
        for (size_t m = 0; name && m < k; m++) {
            if (s->tensors[m].tensor.name && strcmp (s->tensors[m].tensor.name, name) == 0) {
                return s_rfail (r, "stages[%zu].%s[%zu].name: %s is already handled by "
                                "stages[%zu].%s[%zu]", i, field, k, s_q (name, q, sizeof q),
                                i, field, m);
            }
        }
        if (pre && (io->tensor.rank < 0 || io->tensor.rank > ZI_MAX_RANK)) {
            return s_rfail (r, "stages[%zu].inputs[%zu].shape: rank %d is outside 0..%d",
                            i, k, io->tensor.rank, ZI_MAX_RANK);
        }
        for (size_t o = 0; o < io->n_ops; o++) {
            const zi_plan_op_t *op = &io->ops[o];
            if (op->kind == ZI_PLAN_OP_NORMALIZE && op->n_mean != op->n_std) {
                return s_rfail (r, "stages[%zu].%s[%zu].ops[%zu]: mean has %zu values but "
                                "std has %zu (one of each per channel)", i, field, k, o,
                                op->n_mean, op->n_std);
            }
            if (op->kind == ZI_PLAN_OP_PAD && op->n_pads % 2) {
                return s_rfail (r, "stages[%zu].%s[%zu].ops[%zu].pads: needs an even count, "
                                "all begins then all ends (got %zu)", i, field, k, o,
                                op->n_pads);
            }
            if ((op->kind == ZI_PLAN_OP_ARGMAX || op->kind == ZI_PLAN_OP_TOPK)
                && o + 1 < io->n_ops) {
                return s_rfail (r, "stages[%zu].%s[%zu].ops[%zu]: %s must be the last op "
                                "(it turns the tensor into indices)", i, field, k, o,
                                zi_plan_op_name (op->kind));
            }
        }
    }
    return 0;
}

static int
s_check_stages (s_rules_t *r, const zi_plan_t *plan)
{
    //  Per role (preprocess, partition, aggregate): which stage does it.
    long builtin_at[ZI_PLAN_STAGE_CUSTOM] = {-1, -1, -1, -1};
    long custom_at[ZI_PLAN_STAGE_CUSTOM] = {-1, -1, -1, -1};
    for (size_t i = 0; i < plan->n_stages; i++) {
        const zi_plan_stage_t *s = &plan->stages[i];
        char owner[48];
        snprintf (owner, sizeof owner, "stages[%zu]", i);
        int rc = s_check_replicas (r, s->replicas, s->n_replicas, owner);
        if (rc) {
            return rc;
        }
        zi_plan_stage_kind_t role = zi_plan_stage_role (s);
        if (role < ZI_PLAN_STAGE_PREPROCESS || role > ZI_PLAN_STAGE_AGGREGATE) {
            continue;       //  the schema reported it
        }
        const char *rname = zi_plan_stage_kind_name (role);
        if (s->kind == ZI_PLAN_STAGE_CUSTOM) {
            if (custom_at[role] >= 0) {
                return s_rfail (r, "stages[%zu].replaces: a second custom stage replaces "
                                "%s (stages[%ld] does already)", i, rname, custom_at[role]);
            }
            if (builtin_at[role] >= 0) {
                return s_rfail (r, "stages[%zu].replaces: %s is done by the built-in "
                                "stages[%ld] already; keep one of the two", i, rname,
                                builtin_at[role]);
            }
            custom_at[role] = (long) i;
            continue;
        }
        if (builtin_at[role] >= 0) {
            return s_rfail (r, "stages[%zu].kind: a second %s stage (stages[%ld] is one "
                            "already)", i, rname, builtin_at[role]);
        }
        if (custom_at[role] >= 0) {
            return s_rfail (r, "stages[%zu].kind: %s is done by the custom stages[%ld] "
                            "already; keep one of the two", i, rname, custom_at[role]);
        }
        builtin_at[role] = (long) i;
        if (s->kind == ZI_PLAN_STAGE_PARTITION && s->micro_batch > s->max_batch) {
            return s_rfail (r, "stages[%zu].micro_batch: must be <= max_batch %" PRId64
                            " (got %" PRId64 ")", i, s->max_batch, s->micro_batch);
        }
        if (s->kind == ZI_PLAN_STAGE_PREPROCESS || s->kind == ZI_PLAN_STAGE_AGGREGATE) {
            rc = s_check_ios (r, plan, s, i);
            if (rc) {
                return rc;
            }
        }
    }
    //  Preprocess is optional: without it the broker checks requests
    //  against model.inputs itself and sends them straight to partition
    //  (two socket crossings and one process fewer per request).
    for (int role = ZI_PLAN_STAGE_PARTITION; role <= ZI_PLAN_STAGE_AGGREGATE; role++) {
        if (builtin_at[role] < 0 && custom_at[role] < 0) {
            const char *rname = zi_plan_stage_kind_name ((zi_plan_stage_kind_t) role);
            return s_rfail (r, "stages: no stage does %s: add a stage of kind \"%s\", "
                            "or a \"custom\" one that replaces it", rname, rname);
        }
    }
    return 0;
}

static int
s_check_priorities (s_rules_t *r, const zi_plan_t *plan)
{
    const zi_plan_priorities_t *p = &plan->priorities;
    zi_json_t *seen = zi_json_new_object ();
    if (!seen) {
        return zi_fail (r->err, r->errlen, ZI_ERR_NOMEM, "%s: out of memory", r->source);
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < p->n_classes; i++) {
        char path[64];
        snprintf (path, sizeof path, "priorities.classes[%zu].name", i);
        rc = s_check_name (r, p->classes[i].name, path);
        if (rc == 0) {
            snprintf (path, sizeof path, "priorities.classes[%zu]", i);
            rc = s_unique (r, seen, p->classes[i].name, path);
        }
        //  The schema says so too; kept for plans built in memory, whose
        //  weights the scheduler divides by.
        if (rc == 0 && !(p->classes[i].weight > 0)) {
            rc = s_rfail (r, "priorities.classes[%zu].weight: must be > 0 (got %g)", i,
                          p->classes[i].weight);
        }
    }
    if (rc == 0 && p->default_class && p->n_classes > 0
        && !zi_json_get (seen, p->default_class)) {
        char q[96];
        rc = s_rfail (r, "priorities.default_class: unknown class %s (not in "
                      "priorities.classes)", s_q (p->default_class, q, sizeof q));
    }
    zi_json_destroy (&seen);
    return rc;
}

static bool
s_z85_ok (const char *key)
{
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz"
                                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    if (!key || strlen (key) != 40) {
        return false;
    }
    for (; *key; key++) {
        if (!strchr (alphabet, *key)) {
            return false;
        }
    }
    return true;
}

static int
s_check_security (s_rules_t *r, const zi_plan_security_t *sec)
{
    if (sec->server_public_key && !s_z85_ok (sec->server_public_key)) {
        return s_rfail (r, "security.server_public_key: not a Z85 key (40 characters of "
                        "the Z85 alphabet, as zmq_curve_keypair makes)");
    }
    for (size_t i = 0; i < sec->n_allowed_keys; i++) {
        if (sec->allowed_keys[i] && !s_z85_ok (sec->allowed_keys[i])) {
            return s_rfail (r, "security.allowed_keys[%zu]: not a Z85 key (40 characters "
                            "of the Z85 alphabet)", i);
        }
    }
    return 0;
}

static int
s_check_rules (const zi_plan_t *plan, const char *source, char *err, size_t errlen)
{
    s_rules_t r = {.source = source, .err = err, .errlen = errlen};
    //  In file order, so the first complaint is the first problem in it.
    if (plan->model.sha256) {
        const char *h = plan->model.sha256;
        size_t n = strspn (h, "0123456789abcdef");
        if (n != 64 || h[n]) {
            return s_rfail (&r, "model.sha256: must be 64 lower-case hex digits");
        }
    }
    int rc = s_check_tensor_names (&r, plan->model.inputs, plan->model.n_inputs,
                                   "model.inputs");
    if (rc == 0) {
        rc = s_check_tensor_names (&r, plan->model.outputs, plan->model.n_outputs,
                                   "model.outputs");
    }
    r.host_names = zi_json_new_object ();
    r.replica_names = zi_json_new_object ();
    if (rc == 0 && (!r.host_names || !r.replica_names)) {
        rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", source);
    }
    for (size_t i = 0; rc == 0 && i < plan->n_hosts; i++) {
        char path[48];
        snprintf (path, sizeof path, "hosts[%zu].name", i);
        rc = s_check_name (&r, plan->hosts[i].name, path);
        if (rc == 0) {
            snprintf (path, sizeof path, "hosts[%zu]", i);
            rc = s_unique (&r, r.host_names, plan->hosts[i].name, path);
        }
    }
    if (rc == 0) {
        rc = s_check_host_ref (&r, plan->broker.host, "broker.host");
    }
    if (rc == 0) {
        rc = s_check_endpoints (&r, &plan->broker);
    }
    if (rc == 0) {
        rc = s_check_segments (&r, plan);
    }
    if (rc == 0) {
        rc = s_check_stages (&r, plan);
    }
    zi_json_destroy (&r.host_names);
    zi_json_destroy (&r.replica_names);
    if (rc == 0) {
        rc = s_check_priorities (&r, plan);
    }
    if (rc == 0) {
        rc = s_check_security (&r, &plan->security);
    }
    return rc;
}

//  =====================================================================
//  Entry points

//  The embedded schema, parsed. A failure here is a build defect, but it
//  is still reported, not asserted.
static int
s_schema (zi_json_t **schema, char *err, size_t errlen)
{
    size_t len = 0;
    const char *text = zi_plan_schema_text (&len);
    char why[256];
    zi_json_opts_t opts = {.source = "plan.schema.json (built in)"};
    int rc = zi_json_parse (text, len, &opts, schema, why, sizeof why);
    if (rc) {
        return zi_fail (err, errlen, rc, "%s", why);
    }
    return 0;
}

static int
s_apply_schema (const zi_json_t *doc, const char *source, char *err, size_t errlen)
{
    zi_json_t *schema = NULL;
    int rc = s_schema (&schema, err, errlen);
    if (rc) {
        return rc;
    }
    char why[512];
    rc = zi_json_schema_validate (schema, doc, why, sizeof why);
    zi_json_destroy (&schema);
    if (rc) {
        return zi_fail (err, errlen, rc, "%s: %s", source, why);
    }
    return 0;
}

int
zi_plan_from_json (const zi_json_t *doc, const char *source, zi_plan_t **out,
                   char *err, size_t errlen)
{
    if (err && errlen) {
        err[0] = 0;
    }
    if (!out) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "zi_plan_from_json: out is NULL");
    }
    *out = NULL;
    source = source ? source : "plan";
    //  A version mismatch is worth its own code: the remedy is another
    //  build, not an edit of the file.
    const zi_json_t *version = zi_json_get (doc, "zinfer_plan");
    if (zi_json_is_int (version) && zi_json_num (version) != ZI_PLAN_VERSION) {
        return zi_fail (err, errlen, ZI_ERR_VERSION,
                        "%s: zinfer_plan: format version %.0f is not supported (this build "
                        "reads version %d)", source, zi_json_num (version), ZI_PLAN_VERSION);
    }
    int rc = s_apply_schema (doc, source, err, errlen);
    if (rc) {
        return rc;
    }
    zi_plan_t *plan = zi_plan_new ();
    if (!plan) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", source);
    }
    s_conv_t c = {0};
    s_convert (&c, doc, plan);
    if (c.nomem) {
        zi_plan_destroy (&plan);
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", source);
    }
    rc = s_check_rules (plan, source, err, errlen);
    if (rc) {
        zi_plan_destroy (&plan);
        return rc;
    }
    *out = plan;
    return 0;
}

zi_plan_t *
zi_plan_parse (const char *buf, size_t len, const char *source, char *err,
               size_t errlen)
{
    source = source ? source : "plan";
    zi_json_opts_t opts = {.source = source, .max_input = ZI_PLAN_MAX_BYTES};
    zi_json_t *doc = NULL;
    if (zi_json_parse (buf, len, &opts, &doc, err, errlen)) {
        return NULL;
    }
    zi_plan_t *plan = NULL;
    zi_plan_from_json (doc, source, &plan, err, errlen);
    zi_json_destroy (&doc);
    return plan;
}

zi_plan_t *
zi_plan_load (const char *path, char *err, size_t errlen)
{
    if (!path) {
        zi_fail (err, errlen, ZI_ERR_INVALID, "zi_plan_load: path is NULL");
        return NULL;
    }
    zi_json_opts_t opts = {.source = path, .max_input = ZI_PLAN_MAX_BYTES};
    zi_json_t *doc = NULL;
    if (zi_json_parse_file (path, &opts, &doc, err, errlen)) {
        return NULL;
    }
    zi_plan_t *plan = NULL;
    zi_plan_from_json (doc, path, &plan, err, errlen);
    zi_json_destroy (&doc);
    if (plan) {
        //  Paths in the plan are relative to the plan file, so the same
        //  plan works from any working directory on any host.
        const char *slash = strrchr (path, '/');
        plan->dir = slash == path ? strdup ("/")
                    : slash       ? strndup (path, (size_t) (slash - path))
                                  : strdup (".");
        if (!plan->dir) {
            zi_plan_destroy (&plan);
            zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", path);
        }
    }
    return plan;
}

int
zi_plan_validate (const zi_plan_t *self, const char *source, char *err,
                  size_t errlen)
{
    if (!self) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "zi_plan_validate: plan is NULL");
    }
    source = source ? source : "plan";
    zi_json_t *doc = NULL;
    int rc = zi_plan_to_json (self, &doc);
    if (rc) {
        return zi_fail (err, errlen, rc, "%s: %s", source, zi_strerror (rc));
    }
    rc = s_apply_schema (doc, source, err, errlen);
    zi_json_destroy (&doc);
    if (rc == 0) {
        rc = s_check_rules (self, source, err, errlen);
    }
    return rc;
}

int
zi_plan_write (const zi_plan_t *self, const char *path, char *err, size_t errlen)
{
    if (!self || !path) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "zi_plan_write: NULL argument");
    }
    int rc = zi_plan_validate (self, path, err, errlen);
    if (rc) {
        return rc;
    }
    zi_json_t *doc = NULL;
    rc = zi_plan_to_json (self, &doc);
    if (rc) {
        return zi_fail (err, errlen, rc, "%s: %s", path, zi_strerror (rc));
    }
    rc = zi_json_write_file (doc, path, err, errlen);
    zi_json_destroy (&doc);
    return rc;
}
