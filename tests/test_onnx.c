/*  test_onnx.c - the ONNX loader (lib/zi_onnx.c).

    Real files come from the ONNX backend tests (Debian libonnx-testdata);
    the odd cases are models built here with the protobuf-c bindings and
    packed to bytes or to a temporary directory.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "onnx.pb-c.h"
#include "zi_onnx.h"

#define NODE_DIR "/usr/share/libonnx-testdata/data/node/"
#define PYTORCH_DIR "/usr/share/libonnx-testdata/data/pytorch-converted/"

//  -------------------------------------------------------------------------
//  A tiny model builder. Every allocation goes to a pool freed after the
//  test, so the builders can hand out pointers freely.

static void *s_pool[4096];
static int s_npool;

static void *
s_alloc (size_t size)
{
    cr_assert_lt (s_npool, 4096);
    void *p = calloc (1, size);
    cr_assert_not_null (p);
    s_pool[s_npool++] = p;
    return p;
}

static char *
s_str (const char *s)
{
    char *c = (char *) s_alloc (strlen (s) + 1);
    strcpy (c, s);
    return c;
}

static void
s_pool_free (void)
{
    for (int i = 0; i < s_npool; i++) {
        free (s_pool[i]);
    }
    s_npool = 0;
}

typedef struct {
    Onnx__ModelProto m;
    Onnx__GraphProto g;
    Onnx__OperatorSetIdProto opsets[4];
    Onnx__OperatorSetIdProto *opset_p[4];
    Onnx__NodeProto *nodes[32];
    Onnx__TensorProto *inits[32];
    Onnx__ValueInfoProto *ins[16];
    Onnx__ValueInfoProto *outs[16];
} s_model_t;

static s_model_t *
s_model_new (int64_t opset)
{
    s_model_t *b = (s_model_t *) s_alloc (sizeof *b);
    onnx__model_proto__init (&b->m);
    onnx__graph_proto__init (&b->g);
    onnx__operator_set_id_proto__init (&b->opsets[0]);
    b->opsets[0].domain = s_str ("");
    b->opsets[0].has_version = 1;
    b->opsets[0].version = opset;
    b->opset_p[0] = &b->opsets[0];
    b->m.has_ir_version = 1;
    b->m.ir_version = 8;
    b->m.n_opset_import = 1;
    b->m.opset_import = b->opset_p;
    b->m.graph = &b->g;
    b->g.name = s_str ("built");
    b->g.node = b->nodes;
    b->g.initializer = b->inits;
    b->g.input = b->ins;
    b->g.output = b->outs;
    return b;
}

static void
s_model_import (s_model_t *b, const char *domain, int64_t version)
{
    size_t i = b->m.n_opset_import++;
    onnx__operator_set_id_proto__init (&b->opsets[i]);
    b->opsets[i].domain = s_str (domain);
    b->opsets[i].has_version = 1;
    b->opsets[i].version = version;
    b->opset_p[i] = &b->opsets[i];
}

//  dims: -1 becomes the symbolic dimension "N"
static Onnx__ValueInfoProto *
s_value_info (const char *name, int elem_type, int rank, const int64_t *dims)
{
    Onnx__ValueInfoProto *vi = (Onnx__ValueInfoProto *) s_alloc (sizeof *vi);
    onnx__value_info_proto__init (vi);
    vi->name = s_str (name);
    Onnx__TypeProto *tp = (Onnx__TypeProto *) s_alloc (sizeof *tp);
    onnx__type_proto__init (tp);
    Onnx__TypeProto__Tensor *tt = (Onnx__TypeProto__Tensor *) s_alloc (sizeof *tt);
    onnx__type_proto__tensor__init (tt);
    tt->has_elem_type = 1;
    tt->elem_type = elem_type;
    if (rank >= 0) {
        Onnx__TensorShapeProto *sp = (Onnx__TensorShapeProto *) s_alloc (sizeof *sp);
        onnx__tensor_shape_proto__init (sp);
        sp->n_dim = (size_t) rank;
        sp->dim = (Onnx__TensorShapeProto__Dimension **) s_alloc (
            (size_t) (rank ? rank : 1) * sizeof (void *));
        for (int i = 0; i < rank; i++) {
            Onnx__TensorShapeProto__Dimension *d =
                (Onnx__TensorShapeProto__Dimension *) s_alloc (sizeof *d);
            onnx__tensor_shape_proto__dimension__init (d);
            if (dims[i] < 0) {
                d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
                d->dim_param = s_str ("N");
            }
            else {
                d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
                d->dim_value = dims[i];
            }
            sp->dim[i] = d;
        }
        tt->shape = sp;
    }
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->type = tp;
    return vi;
}

static void
s_input (s_model_t *b, const char *name, int elem_type, int rank, const int64_t *dims)
{
    b->ins[b->g.n_input++] = s_value_info (name, elem_type, rank, dims);
}

static void
s_output (s_model_t *b, const char *name, int elem_type, int rank, const int64_t *dims)
{
    b->outs[b->g.n_output++] = s_value_info (name, elem_type, rank, dims);
}

//  A tensor with raw_data (raw may be NULL: no data fields at all).
static Onnx__TensorProto *
s_tensor (const char *name, int dtype, int rank, const int64_t *dims, const void *raw,
          size_t rawlen)
{
    Onnx__TensorProto *t = (Onnx__TensorProto *) s_alloc (sizeof *t);
    onnx__tensor_proto__init (t);
    t->name = s_str (name);
    t->has_data_type = 1;
    t->data_type = dtype;
    t->n_dims = (size_t) rank;
    t->dims = (int64_t *) s_alloc ((size_t) (rank ? rank : 1) * sizeof (int64_t));
    if (rank > 0) {
        memcpy (t->dims, dims, (size_t) rank * sizeof (int64_t));
    }
    if (raw) {
        t->has_raw_data = 1;
        t->raw_data.len = rawlen;
        t->raw_data.data = (uint8_t *) s_alloc (rawlen ? rawlen : 1);
        memcpy (t->raw_data.data, raw, rawlen);
    }
    return t;
}

static void
s_init (s_model_t *b, Onnx__TensorProto *t)
{
    b->inits[b->g.n_initializer++] = t;
}

//  A node; ins/outs are comma-separated value names ("" items allowed).
static Onnx__NodeProto *
s_node (s_model_t *b, const char *op, const char *name, const char *ins,
        const char *outs)
{
    Onnx__NodeProto *n = (Onnx__NodeProto *) s_alloc (sizeof *n);
    onnx__node_proto__init (n);
    n->op_type = s_str (op);
    n->name = s_str (name);
    const char *lists[2] = {ins, outs};
    for (int k = 0; k < 2; k++) {
        char **arr = (char **) s_alloc (16 * sizeof (char *));
        size_t count = 0;
        const char *p = lists[k];
        while (p && *p) {
            size_t len = strcspn (p, ",");
            char *s = (char *) s_alloc (len + 1);
            memcpy (s, p, len);
            arr[count++] = s;
            p += len;
            if (*p == ',') {
                p++;
                if (!*p) {
                    arr[count++] = s_str ("");
                }
            }
        }
        if (k == 0) {
            n->n_input = count;
            n->input = arr;
        }
        else {
            n->n_output = count;
            n->output = arr;
        }
    }
    n->attribute = (Onnx__AttributeProto **) s_alloc (16 * sizeof (void *));
    b->nodes[b->g.n_node++] = n;
    return n;
}

static Onnx__AttributeProto *
s_attr (Onnx__NodeProto *n, const char *name, int type)
{
    Onnx__AttributeProto *a = (Onnx__AttributeProto *) s_alloc (sizeof *a);
    onnx__attribute_proto__init (a);
    a->name = s_str (name);
    a->has_type = 1;
    a->type = (Onnx__AttributeProto__AttributeType) type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

//  Pack a model into malloc'ed bytes.
static uint8_t *
s_pack (s_model_t *b, size_t *len)
{
    *len = onnx__model_proto__get_packed_size (&b->m);
    uint8_t *buf = (uint8_t *) malloc (*len ? *len : 1);
    cr_assert_not_null (buf);
    cr_assert_eq (onnx__model_proto__pack (&b->m, buf), *len);
    return buf;
}

static int
s_load (s_model_t *b, const char *base_dir, zi_graph_t **g, char *err, size_t errlen)
{
    size_t len;
    uint8_t *buf = s_pack (b, &len);
    int rc = zi_onnx_read_buffer (buf, len, base_dir, g, err, errlen);
    free (buf);
    return rc;
}

static void
s_write_file (const char *path, const void *data, size_t len)
{
    FILE *f = fopen (path, "wb");
    cr_assert_not_null (f, "%s", path);
    cr_assert_eq (fwrite (data, 1, len, f), len);
    fclose (f);
}

static const zi_attr_t *
s_find_attr (const zi_node_t *n, const char *name)
{
    const zi_attr_t *a = zi_node_attr (n, name);
    cr_assert_not_null (a, "node %s has no attribute %s", n->op_type, name);
    return a;
}

//  A one-node model: y = Relu (x) with x (N,3), the base of many cases.
static s_model_t *
s_relu_model (void)
{
    s_model_t *b = s_model_new (14);
    s_input (b, "x", 1, 2, (int64_t[]){-1, 3});
    s_output (b, "y", 1, 2, (int64_t[]){-1, 3});
    s_node (b, "Relu", "relu1", "x", "y");
    return b;
}

TestSuite (onnx, .fini = s_pool_free);

//  -------------------------------------------------------------------------
//  Backend-test models

Test (onnx, loads_backend_relu)
{
    char err[512];
    zi_graph_t *g = zi_onnx_load (NODE_DIR "test_relu/model.onnx", err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    cr_assert_eq (g->opset, 14);
    cr_assert_str_eq (g->name, "test_relu");
    cr_assert_eq (g->n_nodes, 1);
    const zi_node_t *n = &g->nodes[0];
    cr_assert_str_eq (n->op_type, "Relu");
    cr_assert_str_eq (n->domain, "");
    cr_assert_not_null (n->op, "the kernel is resolved at load");
    cr_assert_eq (zi_node_attr_int (n, "__opset", -1), 14);
    cr_assert_eq (g->n_inputs, 1);
    const zi_value_t *x = &g->values[g->inputs[0]];
    cr_assert_str_eq (x->name, "x");
    cr_assert (x->is_input && !x->init);
    cr_assert_eq (x->dtype, ZI_DT_F32);
    cr_assert_eq (x->rank, 3);
    cr_assert (x->shape[0] == 3 && x->shape[1] == 4 && x->shape[2] == 5);
    cr_assert_eq (g->n_outputs, 1);
    const zi_value_t *y = &g->values[g->outputs[0]];
    cr_assert_str_eq (y->name, "y");
    cr_assert (y->is_output);
    cr_assert_eq (y->producer, 0);
    zi_graph_destroy (&g);
    cr_assert_null (g);
}

Test (onnx, loads_backend_conv_attributes)
{
    char err[512];
    zi_graph_t *g = zi_onnx_load (NODE_DIR "test_conv_with_strides_padding/model.onnx",
                                  err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    cr_assert_eq (g->n_nodes, 1);
    const zi_node_t *n = &g->nodes[0];
    cr_assert_str_eq (n->op_type, "Conv");
    const zi_attr_t *a = s_find_attr (n, "kernel_shape");
    cr_assert_eq (a->type, ZI_ATTR_INTS);
    cr_assert (a->n == 2 && a->ints[0] == 3 && a->ints[1] == 3);
    int np;
    const int64_t *pads = zi_node_attr_ints (n, "pads", &np);
    cr_assert (np == 4 && pads[0] == 1 && pads[3] == 1);
    const int64_t *strides = zi_node_attr_ints (n, "strides", &np);
    cr_assert (np == 2 && strides[0] == 2 && strides[1] == 2);
    //  x and W are both fed by the caller in this test
    cr_assert_eq (g->n_inputs, 2);
    zi_graph_destroy (&g);
}

//  IR 3 files list initializers among the graph inputs: those are constants,
//  not inputs the caller feeds.
Test (onnx, initializer_inputs_are_constants)
{
    char err[512];
    zi_graph_t *g = zi_onnx_load (PYTORCH_DIR "test_Conv2d/model.onnx", err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    cr_assert_eq (g->opset, 6);
    cr_assert_eq (g->n_inputs, 1);
    cr_assert_str_eq (g->values[g->inputs[0]].name, "0");
    const zi_node_t *n = &g->nodes[0];
    cr_assert_eq (n->n_in, 3);
    const zi_value_t *w = &g->values[n->in[1]];
    cr_assert_not_null (w->init);
    cr_assert (!w->is_input);
    cr_assert_eq (w->init->dtype, ZI_DT_F32);
    cr_assert (w->init->rank == 4 && w->init->ne[0] == 4 && w->init->ne[3] == 2);
    cr_assert (w->init->owns_data);
    //  weights are finite numbers (raw_data was decoded, not garbage)
    for (int64_t i = 0; i < zi_tensor_count (w->init); i++) {
        cr_assert (isfinite (((float *) w->init->data)[i]));
    }
    zi_graph_destroy (&g);
}

Test (onnx, folds_backend_constant_node)
{
    char err[512];
    zi_graph_t *g = zi_onnx_load (NODE_DIR "test_constant/model.onnx", err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    cr_assert_eq (g->n_nodes, 0, "the Constant node is folded away");
    cr_assert_eq (g->n_outputs, 1);
    const zi_value_t *v = &g->values[g->outputs[0]];
    cr_assert_not_null (v->init);
    cr_assert (v->init->rank == 2 && v->init->ne[0] == 5 && v->init->ne[1] == 5);
    zi_graph_destroy (&g);
}

Test (onnx, loads_backend_tensor_files)
{
    char err[512];
    char *name = NULL;
    zi_tensor_t *t = zi_onnx_load_tensor (NODE_DIR "test_relu/test_data_set_0/input_0.pb",
                                          &name, err, sizeof err);
    cr_assert_not_null (t, "%s", err);
    cr_assert_str_eq (name, "x");
    cr_assert_eq (t->dtype, ZI_DT_F32);
    cr_assert (t->rank == 3 && t->ne[0] == 3 && t->ne[1] == 4 && t->ne[2] == 5);
    free (name);
    zi_tensor_destroy (&t);

    t = zi_onnx_load_tensor (NODE_DIR "no_such_test/input_0.pb", &name, err, sizeof err);
    cr_assert_null (t);
    cr_assert_null (name);
    cr_assert (strstr (err, "no_such_test"), "%s", err);
}

Test (onnx, missing_file_and_directory_are_errors)
{
    char err[512];
    zi_graph_t *g = NULL;
    cr_assert_eq (zi_onnx_read ("/nonexistent/model.onnx", &g, err, sizeof err),
                  ZI_ERR_NOTFOUND);
    cr_assert_null (g);
    cr_assert (strstr (err, "/nonexistent/model.onnx"), "%s", err);
    cr_assert_eq (zi_onnx_read (NODE_DIR, &g, err, sizeof err), ZI_ERR_IO);
    cr_assert (strstr (err, "not a regular file"), "%s", err);
}

//  -------------------------------------------------------------------------
//  Built models

Test (onnx, symbolic_dims_and_opset_attribute)
{
    s_model_t *b = s_relu_model ();
    char err[512];
    zi_graph_t *g = NULL;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), 0, "%s", err);
    const zi_value_t *x = &g->values[g->inputs[0]];
    cr_assert (x->rank == 2 && x->shape[0] == -1 && x->shape[1] == 3);
    cr_assert_str_eq (g->nodes[0].name, "relu1");
    cr_assert_eq (zi_node_attr_int (&g->nodes[0], "__opset", 0), 14);
    zi_graph_destroy (&g);
}

Test (onnx, folds_constant_nodes_of_every_kind)
{
    s_model_t *b = s_model_new (13);
    s_input (b, "x", 1, 1, (int64_t[]){3});
    s_output (b, "y", 1, 1, (int64_t[]){3});
    s_output (b, "k", 7, 1, (int64_t[]){2});
    s_output (b, "f", 1, 0, NULL);
    s_output (b, "i", 7, 0, NULL);
    Onnx__NodeProto *c = s_node (b, "Constant", "c_floats", "", "c");
    Onnx__AttributeProto *a = s_attr (c, "value_floats", 6);
    float fl[3] = {1.5f, -2.0f, 4.0f};
    a->n_floats = 3;
    a->floats = fl;
    s_node (b, "Add", "add", "x,c", "y");
    c = s_node (b, "Constant", "c_ints", "", "k");
    a = s_attr (c, "value_ints", 7);
    int64_t in[2] = {7, -9};
    a->n_ints = 2;
    a->ints = in;
    c = s_node (b, "Constant", "c_float", "", "f");
    a = s_attr (c, "value_float", 1);
    a->has_f = 1;
    a->f = 0.25f;
    c = s_node (b, "Constant", "c_int", "", "i");
    a = s_attr (c, "value_int", 2);
    a->has_i = 1;
    a->i = 42;
    char err[512];
    zi_graph_t *g = NULL;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), 0, "%s", err);
    cr_assert_eq (g->n_nodes, 1, "only Add is left");
    cr_assert_str_eq (g->nodes[0].op_type, "Add");
    const zi_tensor_t *t = g->values[zi_graph_find_value (g, "c")].init;
    cr_assert (t && t->dtype == ZI_DT_F32 && t->rank == 1 && t->ne[0] == 3);
    cr_assert_eq (((float *) t->data)[1], -2.0f);
    t = g->values[zi_graph_find_value (g, "k")].init;
    cr_assert (t && t->dtype == ZI_DT_I64 && t->ne[0] == 2);
    cr_assert_eq (((int64_t *) t->data)[1], -9);
    t = g->values[zi_graph_find_value (g, "f")].init;
    cr_assert (t && t->dtype == ZI_DT_F32 && t->rank == 0);
    cr_assert_eq (*(float *) t->data, 0.25f);
    t = g->values[zi_graph_find_value (g, "i")].init;
    cr_assert (t && t->dtype == ZI_DT_I64 && t->rank == 0);
    cr_assert_eq (*(int64_t *) t->data, 42);
    zi_graph_destroy (&g);
}

//  Bytes of all constants in a graph.
static size_t
s_const_bytes (const zi_graph_t *g)
{
    size_t n = 0;
    for (int v = 0; v < g->n_values; v++) {
        n += g->values[v].init ? g->values[v].init->nbytes : 0;
    }
    return n;
}

//  y = x + ReduceSum (Conv (c, c)), c = ConstantOfShape ([1, 1, side, side])
//  and pads side / 2: a model of a few hundred bytes whose constant part
//  asks for side^4 multiply-adds.
static s_model_t *
s_conv_of_constants_model (int64_t side)
{
    s_model_t *b = s_model_new (13);
    s_input (b, "x", 1, 1, (int64_t[]){1});
    s_output (b, "y", 1, -1, NULL);
    int64_t dims[4] = {1, 1, side, side};
    s_init (b, s_tensor ("dims", 7, 1, (int64_t[]){4}, dims, sizeof dims));
    Onnx__NodeProto *n = s_node (b, "ConstantOfShape", "fill", "dims", "c");
    Onnx__AttributeProto *a = s_attr (n, "value", 4);
    float one = 1.0f;
    a->t = s_tensor ("one", 1, 1, (int64_t[]){1}, &one, sizeof one);
    n = s_node (b, "Conv", "conv", "c,c", "cc");
    a = s_attr (n, "pads", 7);
    a->n_ints = 4;
    a->ints = (int64_t *) s_alloc (4 * sizeof (int64_t));
    for (int i = 0; i < 4; i++) {
        a->ints[i] = side / 2;
    }
    s_node (b, "ReduceSum", "sum", "cc", "s");
    s_node (b, "Add", "add", "x,s", "y");
    return b;
}

//  Found by fuzz_onnx (tests/corpus/onnx/fold_timeout_wide_conv.onnx): the
//  loader ran a Conv of constants at load time; with both its input and its
//  kernel 1024x1024 and pads 512 that is 1e12 multiply-adds (the load never
//  ended). Only operators linear in their bytes fold; the Conv stays a node.
Test (onnx, folding_leaves_costly_operators_to_the_executor, .timeout = 20)
{
    s_model_t *b = s_conv_of_constants_model (1024);
    char err[512];
    zi_graph_t *g = NULL;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), 0, "%s", err);
    cr_assert_eq (g->n_nodes, 3, "Conv, ReduceSum and Add stay: %d", g->n_nodes);
    cr_assert_str_eq (g->nodes[0].op_type, "Conv");
    const zi_tensor_t *c = g->values[zi_graph_find_value (g, "c")].init;
    cr_assert (c && c->rank == 4 && c->ne[3] == 1024, "ConstantOfShape is folded");
    zi_graph_destroy (&g);
}

//  tests/corpus/onnx/fold_hostile_growth.onnx: 4 MiB of ConstantOfShape,
//  then a chain of Pads, each 12 MiB larger than the one before (each within
//  ZI_GRAPH_FOLD_GROWTH of its input). Folding the 20 here would hold 2.6 GB
//  (the 60 of the corpus file 22 GB); the fold budget stops the chain early.
Test (onnx, folding_a_growing_chain_stops_at_the_budget, .timeout = 20)
{
    s_model_t *b = s_model_new (13);
    s_input (b, "x", 1, 1, (int64_t[]){1});
    s_output (b, "y", 1, -1, NULL);
    int64_t dims[1] = {1 << 20}, pads[2] = {0, 3 << 20};
    s_init (b, s_tensor ("dims", 7, 1, (int64_t[]){1}, dims, sizeof dims));
    s_init (b, s_tensor ("pads", 7, 1, (int64_t[]){2}, pads, sizeof pads));
    Onnx__NodeProto *n = s_node (b, "ConstantOfShape", "fill", "dims", "c0");
    Onnx__AttributeProto *a = s_attr (n, "value", 4);
    float one = 1.0f;
    a->t = s_tensor ("one", 1, 1, (int64_t[]){1}, &one, sizeof one);
    char ins[32], outs[32];
    for (int k = 1; k <= 20; k++) {
        snprintf (ins, sizeof ins, "c%d,pads", k - 1);
        snprintf (outs, sizeof outs, "c%d", k);
        s_node (b, "Pad", outs, ins, outs);
    }
    s_node (b, "ReduceSum", "sum", "c20", "s");
    s_node (b, "Add", "add", "x,s", "y");
    char err[512];
    zi_graph_t *g = NULL;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), 0, "%s", err);
    cr_assert_gt (g->n_nodes, 15, "most Pads stay nodes: %d", g->n_nodes);
    cr_assert_lt (g->n_nodes, 23, "the first nodes of the chain fold");
    cr_assert_lt (s_const_bytes (g), (size_t) 128 << 20, "constants: %zu bytes",
                  s_const_bytes (g));
    zi_graph_destroy (&g);
}

Test (onnx, constant_value_tensor_and_unsupported_kinds)
{
    s_model_t *b = s_relu_model ();
    b->g.n_node = 0;
    Onnx__NodeProto *c = s_node (b, "Constant", "c", "", "x2");
    Onnx__AttributeProto *a = s_attr (c, "value", 4);
    int32_t raw[2] = {5, 6};
    a->t = s_tensor ("", 6, 1, (int64_t[]){2}, raw, sizeof raw);
    s_node (b, "Relu", "relu1", "x", "y");
    b->outs[b->g.n_output++] = s_value_info ("x2", 6, 1, (int64_t[]){2});
    char err[512];
    zi_graph_t *g = NULL;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), 0, "%s", err);
    const zi_tensor_t *t = g->values[zi_graph_find_value (g, "x2")].init;
    cr_assert (t && t->dtype == ZI_DT_I32 && ((int32_t *) t->data)[1] == 6);
    zi_graph_destroy (&g);

    //  value_string and sparse_value are not supported
    a->name = s_str ("value_string");
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
    a->t = NULL;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_UNSUPPORTED);
    cr_assert (strstr (err, "'value_string'"), "%s", err);
}

Test (onnx, typed_data_fields_of_every_dtype)
{
    s_model_t *b = s_relu_model ();
    //  int32_data carries the narrow types, one element per entry
    struct {
        const char *name;
        int dtype;
    } narrow[] = {{"i8", 3}, {"u8", 2}, {"i16", 5}, {"u16", 4}, {"b", 9}, {"h", 10},
                  {"i32", 6}, {"bf", 16}};
    int32_t vals[3] = {-1, 2, 0x3c00};
    for (size_t i = 0; i < sizeof narrow / sizeof narrow[0]; i++) {
        Onnx__TensorProto *t = s_tensor (narrow[i].name, narrow[i].dtype, 1,
                                         (int64_t[]){3}, NULL, 0);
        t->n_int32_data = 3;
        t->int32_data = vals;
        s_init (b, t);
    }
    Onnx__TensorProto *t = s_tensor ("f32", 1, 2, (int64_t[]){1, 2}, NULL, 0);
    float fv[2] = {0.5f, -0.5f};
    t->n_float_data = 2;
    t->float_data = fv;
    s_init (b, t);
    t = s_tensor ("i64", 7, 1, (int64_t[]){1}, NULL, 0);
    int64_t lv[1] = {-5000000000LL};
    t->n_int64_data = 1;
    t->int64_data = lv;
    s_init (b, t);
    t = s_tensor ("f64", 11, 0, NULL, NULL, 0);
    double dv[1] = {2.5};
    t->n_double_data = 1;
    t->double_data = dv;
    s_init (b, t);
    uint64_t uv[2] = {4000000000ULL, 1};
    t = s_tensor ("u32", 12, 1, (int64_t[]){2}, NULL, 0);
    t->n_uint64_data = 2;
    t->uint64_data = uv;
    s_init (b, t);
    t = s_tensor ("u64", 13, 1, (int64_t[]){2}, NULL, 0);
    t->n_uint64_data = 2;
    t->uint64_data = uv;
    s_init (b, t);
    s_init (b, s_tensor ("empty", 1, 2, (int64_t[]){0, 4}, NULL, 0));

    char err[512];
    zi_graph_t *g = NULL;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), 0, "%s", err);
#define INIT(n) (g->values[zi_graph_find_value (g, n)].init)
    cr_assert_eq (((int8_t *) INIT ("i8")->data)[0], -1);
    cr_assert_eq (((uint8_t *) INIT ("u8")->data)[0], 255);
    cr_assert_eq (((int16_t *) INIT ("i16")->data)[1], 2);
    cr_assert_eq (((uint16_t *) INIT ("u16")->data)[0], 65535);
    cr_assert (memcmp (INIT ("b")->data, "\1\1\1", 3) == 0, "bools are 0/1");
    cr_assert_eq (zi_f16_to_f32 (((uint16_t *) INIT ("h")->data)[2]), 1.0f);
    cr_assert_eq (((int32_t *) INIT ("i32")->data)[0], -1);
    cr_assert_eq (INIT ("bf")->dtype, ZI_DT_BF16);
    cr_assert_eq (((float *) INIT ("f32")->data)[1], -0.5f);
    cr_assert_eq (((int64_t *) INIT ("i64")->data)[0], -5000000000LL);
    cr_assert_eq (*(double *) INIT ("f64")->data, 2.5);
    cr_assert_eq (((uint32_t *) INIT ("u32")->data)[0], 4000000000U);
    cr_assert_eq (((uint64_t *) INIT ("u64")->data)[0], 4000000000ULL);
    cr_assert (INIT ("empty")->data != NULL && INIT ("empty")->nbytes == 0);
#undef INIT
    zi_graph_destroy (&g);
}

Test (onnx, raw_data_length_mismatch_names_the_tensor)
{
    s_model_t *b = s_relu_model ();
    float w[5] = {0};
    s_init (b, s_tensor ("conv.weight", 1, 2, (int64_t[]){2, 3}, w, sizeof w));
    char err[512];
    zi_graph_t *g = NULL;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert_null (g);
    cr_assert (strstr (err, "initializer 'conv.weight'") && strstr (err, "raw_data has 20 bytes")
                   && strstr (err, "needs 24"),
               "%s", err);
}

Test (onnx, typed_data_count_mismatch_is_an_error)
{
    s_model_t *b = s_relu_model ();
    Onnx__TensorProto *t = s_tensor ("idx", 6, 1, (int64_t[]){4}, NULL, 0);
    int32_t v[3] = {1, 2, 3};
    t->n_int32_data = 3;
    t->int32_data = v;
    s_init (b, t);
    char err[512];
    zi_graph_t *g = NULL;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "'idx'") && strstr (err, "int32_data has 3 elements"), "%s",
               err);

    //  data in the wrong field for the dtype
    t->data_type = 1;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "float_data"), "%s", err);

    //  no data at all for 4 elements
    t->n_int32_data = 0;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);

    //  raw_data and a typed field at once
    t->data_type = 6;
    t->n_int32_data = 3;
    t->has_raw_data = 1;
    t->raw_data.len = 16;
    t->raw_data.data = (uint8_t *) s_alloc (16);
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "both"), "%s", err);
}

Test (onnx, bad_dims_are_errors)
{
    s_model_t *b = s_relu_model ();
    Onnx__TensorProto *t = s_tensor ("neg", 1, 2, (int64_t[]){2, -3}, NULL, 0);
    s_init (b, t);
    char err[512];
    zi_graph_t *g = NULL;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "'neg'") && strstr (err, "negative"), "%s", err);
    //  a product that overflows, with no data behind it
    t->dims[0] = INT64_MAX / 2;
    t->dims[1] = 4;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_OVERFLOW);
    //  a huge claimed size with 4 bytes of raw data: refused, not allocated
    t->dims[0] = 1 << 30;
    t->dims[1] = 1 << 20;
    t->has_raw_data = 1;
    t->raw_data.len = 4;
    t->raw_data.data = (uint8_t *) s_alloc (4);
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    //  empty, but with byte strides that overflow int64
    t->dims[0] = 0;
    t->dims[1] = INT64_MAX / 2;
    t->raw_data.len = 0;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_OVERFLOW);
    //  rank 9
    t = s_tensor ("deep", 1, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, "\0\0\0\0", 4);
    b->inits[0] = t;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_UNSUPPORTED);
    cr_assert (strstr (err, "'deep'") && strstr (err, "rank 9"), "%s", err);
}

Test (onnx, several_problems_make_one_message)
{
    s_model_t *b = s_model_new (13);
    s_input (b, "x", 1, 1, (int64_t[]){4});
    s_input (b, "names", 8, 1, (int64_t[]){4});
    s_output (b, "y", 1, 1, (int64_t[]){4});
    s_node (b, "NoSuchOpA", "a1", "x", "t1");
    s_node (b, "NoSuchOpB", "b1", "t1", "t2");
    s_node (b, "NoSuchOpA", "a2", "t2", "t3");
    s_node (b, "NoSuchOpA", "a3", "t3", "t4");
    Onnx__NodeProto *r = s_node (b, "Relu", "relu_g", "t4", "y");
    Onnx__AttributeProto *a = s_attr (r, "body", 5);
    a->g = (Onnx__GraphProto *) s_alloc (sizeof (Onnx__GraphProto));
    onnx__graph_proto__init (a->g);
    Onnx__TensorProto *vocab = s_tensor ("vocab", 8, 1, (int64_t[]){0}, NULL, 0);
    s_init (b, vocab);
    char err[1024];
    zi_graph_t *g = NULL;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_UNSUPPORTED);
    cr_assert_null (g);
    cr_assert (strstr (err, "<memory>: 7 unsupported: "), "%s", err);
    cr_assert (strstr (err, "node 'a1' (NoSuchOpA): unsupported op NoSuchOpA (and 2 more nodes)"),
               "%s", err);
    cr_assert (strstr (err, "node 'b1' (NoSuchOpB): unsupported op NoSuchOpB"), "%s", err);
    cr_assert (strstr (err, "node 'relu_g' (Relu): attribute 'body' of type GRAPH"), "%s",
               err);
    cr_assert (strstr (err, "graph input 'names': unsupported dtype string"), "%s", err);
    cr_assert (strstr (err, "initializer 'vocab': unsupported dtype string"), "%s", err);

    //  a small buffer gets a truncated, terminated message
    char small[40];
    cr_assert_eq (s_load (b, NULL, &g, small, sizeof small), ZI_ERR_UNSUPPORTED);
    cr_assert_eq (strlen (small), sizeof small - 1);
    cr_assert_str_eq (small + sizeof small - 4, "...");
}

Test (onnx, domains_must_be_imported)
{
    s_model_t *b = s_relu_model ();
    s_node (b, "Fancy", "f", "y", "z")->domain = s_str ("com.example");
    b->outs[0]->name = s_str ("z");
    char err[512];
    zi_graph_t *g = NULL;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "domain 'com.example' is not imported"), "%s", err);
    s_model_import (b, "com.example", 1);
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_UNSUPPORTED);
    cr_assert (strstr (err, "unsupported op com.example.Fancy"), "%s", err);
    //  "ai.onnx" is the default domain under another name
    b->nodes[1]->domain = s_str ("ai.onnx");
    b->nodes[1]->op_type = s_str ("Relu");
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq (g->nodes[1].domain, "");
    zi_graph_destroy (&g);
}

Test (onnx, malformed_graphs_are_errors)
{
    char err[512];
    zi_graph_t *g = NULL;
    //  an input nobody produces
    s_model_t *b = s_relu_model ();
    b->nodes[0]->input[0] = s_str ("ghost");
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "'ghost'"), "%s", err);
    //  a graph output nobody produces
    b = s_relu_model ();
    b->outs[0]->name = s_str ("nowhere");
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "graph output 'nowhere'"), "%s", err);
    //  two producers of one value
    b = s_relu_model ();
    s_node (b, "Relu", "again", "x", "y");
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "already defined"), "%s", err);
    //  an initializer given twice
    b = s_relu_model ();
    s_init (b, s_tensor ("w", 1, 0, NULL, "\0\0\0\0", 4));
    s_init (b, s_tensor ("w", 1, 0, NULL, "\0\0\0\0", 4));
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "'w' is given twice"), "%s", err);
    //  a cycle
    b = s_relu_model ();
    b->nodes[0]->input[0] = s_str ("z");
    s_node (b, "Relu", "back", "y", "z");
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "cycle"), "%s", err);
    //  no graph, no default opset
    b = s_relu_model ();
    b->m.graph = NULL;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "no graph"), "%s", err);
    b = s_relu_model ();
    b->m.n_opset_import = 0;
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "opset"), "%s", err);
    //  a duplicate attribute and the reserved name
    b = s_relu_model ();
    s_attr (b->nodes[0], "alpha", 1);
    s_attr (b->nodes[0], "alpha", 1);
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "'alpha' is given twice"), "%s", err);
    b = s_relu_model ();
    s_attr (b->nodes[0], "__opset", 2);
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "reserved"), "%s", err);
    //  a required output left empty (""), on a node constant folding would
    //  run at load time (found by fuzz_onnx: the copy kernel wrote to it)
    b = s_relu_model ();
    s_init (b, s_tensor ("w", 1, 0, NULL, "\0\0\0\0", 4));
    s_node (b, "Identity", "blank", "w", "unnamed")->output[0] = s_str ("");
    cr_assert_eq (s_load (b, NULL, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "node 'blank' (Identity): required output 0 is empty"), "%s", err);
    cr_assert_null (g);
}

Test (onnx, truncated_models_are_errors_not_crashes)
{
    FILE *f = fopen (PYTORCH_DIR "test_Conv2d/model.onnx", "rb");
    cr_assert_not_null (f);
    static uint8_t buf[1 << 16];
    size_t len = fread (buf, 1, sizeof buf, f);
    fclose (f);
    cr_assert (len > 100 && len < sizeof buf);
    char err[512];
    zi_graph_t *g = NULL;
    cr_assert_eq (zi_onnx_read_buffer (buf, len, NULL, &g, err, sizeof err), 0, "%s", err);
    zi_graph_destroy (&g);
    int failed = 0;
    for (size_t n = 0; n < len; n++) {
        int rc = zi_onnx_read_buffer (buf, n, NULL, &g, err, sizeof err);
        if (rc == 0) {
            //  a cut at a field boundary can still be a whole, valid model
            zi_graph_destroy (&g);
            continue;
        }
        cr_assert_null (g);
        cr_assert (strstr (err, "<memory>"), "%s", err);
        failed++;
    }
    cr_assert_gt (failed, (int) len - 8, "%d of %zu prefixes failed", failed, len);
}

Test (onnx, random_bytes_are_errors)
{
    srand (1234);
    uint8_t buf[512];
    for (int round = 0; round < 2000; round++) {
        size_t len = (size_t) (rand () % (int) sizeof buf);
        for (size_t i = 0; i < len; i++) {
            buf[i] = (uint8_t) rand ();
        }
        char err[256];
        zi_graph_t *g = zi_onnx_load_buffer (buf, len, NULL, err, sizeof err);
        cr_assert_null (g, "random bytes made a model (round %d)", round);
        zi_tensor_t *t = zi_onnx_load_tensor_buffer (buf, len, NULL, err, sizeof err);
        zi_tensor_destroy (&t);
    }
    char err[256];
    cr_assert_null (zi_onnx_load_buffer ("\xff\xff\xff", 3, NULL, err, sizeof err));
    cr_assert (strstr (err, "not a valid ONNX protobuf"), "%s", err);
}

//  protobuf-c allocates ~240 bytes per 2-byte empty AttributeProto; the
//  loader's decoding budget turns such a file into an error, not an OOM.
Test (onnx, many_tiny_messages_hit_the_decoding_budget)
{
    //  ModelProto { graph { node { attribute {} x n } } }
    size_t n = 500000, node_len = 2 * n, graph_len = 1 + 4 + node_len;
    uint8_t *buf = (uint8_t *) malloc (node_len + 16);
    cr_assert_not_null (buf);
    size_t p = 0;
    buf[p++] = 0x3a;            //  field 7 (graph), length-delimited
    for (int k = 0; k < 4; k++) {
        buf[p++] = (uint8_t) (((graph_len >> (7 * k)) & 0x7f) | (k < 3 ? 0x80 : 0));
    }
    buf[p++] = 0x0a;            //  field 1 (node)
    for (int k = 0; k < 4; k++) {
        buf[p++] = (uint8_t) (((node_len >> (7 * k)) & 0x7f) | (k < 3 ? 0x80 : 0));
    }
    for (size_t i = 0; i < n; i++) {
        buf[p++] = 0x2a;        //  field 5 (attribute), empty
        buf[p++] = 0x00;
    }
    char err[512];
    zi_graph_t *g = NULL;
    cr_assert_eq (zi_onnx_read_buffer (buf, p, NULL, &g, err, sizeof err), ZI_ERR_LIMIT,
                  "%s", err);
    cr_assert (strstr (err, "too many small messages"), "%s", err);
    free (buf);
}

//  -------------------------------------------------------------------------
//  External data

typedef struct {
    char dir[64];
    char weights[128];
    char model[128];
} s_tmp_t;

static void
s_tmp_make (s_tmp_t *tmp)
{
    strcpy (tmp->dir, "/tmp/zi_onnx_XXXXXX");
    cr_assert_not_null (mkdtemp (tmp->dir));
    snprintf (tmp->weights, sizeof tmp->weights, "%s/w.bin", tmp->dir);
    snprintf (tmp->model, sizeof tmp->model, "%s/model.onnx", tmp->dir);
}

static void
s_tmp_remove (s_tmp_t *tmp)
{
    unlink (tmp->weights);
    unlink (tmp->model);
    rmdir (tmp->dir);
}

//  An initializer "w" (2,3) float kept in an external file.
static Onnx__TensorProto *
s_external (s_model_t *b, const char *location, const char *offset, const char *length)
{
    Onnx__TensorProto *t = s_tensor ("w", 1, 2, (int64_t[]){2, 3}, NULL, 0);
    t->has_data_location = 1;
    t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    t->external_data = (Onnx__StringStringEntryProto **) s_alloc (4 * sizeof (void *));
    const char *keys[3] = {"location", "offset", "length"};
    const char *vals[3] = {location, offset, length};
    for (int i = 0; i < 3; i++) {
        if (!vals[i]) {
            continue;
        }
        Onnx__StringStringEntryProto *e =
            (Onnx__StringStringEntryProto *) s_alloc (sizeof *e);
        onnx__string_string_entry_proto__init (e);
        e->key = s_str (keys[i]);
        e->value = s_str (vals[i]);
        t->external_data[t->n_external_data++] = e;
    }
    s_init (b, t);
    return t;
}

static void
s_write_model (s_model_t *b, const char *path)
{
    size_t len;
    uint8_t *buf = s_pack (b, &len);
    s_write_file (path, buf, len);
    free (buf);
}

Test (onnx, external_data_is_a_view_into_the_mapping)
{
    s_tmp_t tmp;
    s_tmp_make (&tmp);
    //  16 bytes of something else, then the 6 floats
    float file[4 + 6] = {9, 9, 9, 9, 1, 2, 3, 4, 5, 6};
    s_write_file (tmp.weights, file, sizeof file);
    s_model_t *b = s_relu_model ();
    s_external (b, "w.bin", "16", "24");
    s_write_model (b, tmp.model);
    char err[512];
    zi_graph_t *g = zi_onnx_load (tmp.model, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    const zi_tensor_t *w = g->values[zi_graph_find_value (g, "w")].init;
    cr_assert_not_null (w);
    cr_assert (!w->owns_data, "a view, not a copy");
    cr_assert_not_null (g->mapping);
    cr_assert (w->ne[0] == 2 && w->ne[1] == 3);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq (((float *) w->data)[i], (float) (i + 1));
    }
    //  the mapping outlives the file's name
    unlink (tmp.weights);
    cr_assert_eq (((float *) w->data)[5], 6.0f);
    zi_graph_destroy (&g);
    s_tmp_remove (&tmp);
}

Test (onnx, external_data_defaults_and_unaligned_offsets)
{
    s_tmp_t tmp;
    s_tmp_make (&tmp);
    uint8_t file[2 + 24];
    float v[6] = {1, 2, 3, 4, 5, 6};
    memcpy (file + 2, v, sizeof v);
    s_write_file (tmp.weights, file, sizeof file);
    s_model_t *b = s_relu_model ();
    //  no length: to the end of the file; offset 2 is misaligned for float
    s_external (b, "w.bin", "2", NULL);
    s_write_model (b, tmp.model);
    char err[512];
    zi_graph_t *g = zi_onnx_load (tmp.model, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    const zi_tensor_t *w = g->values[zi_graph_find_value (g, "w")].init;
    cr_assert (w->owns_data, "misaligned data is copied");
    cr_assert_eq (((float *) w->data)[0], 1.0f);
    cr_assert_eq (((float *) w->data)[5], 6.0f);
    zi_graph_destroy (&g);

    //  loaded from memory, the directory is given explicitly, or refused
    size_t len;
    uint8_t *buf = s_pack (b, &len);
    g = zi_onnx_load_buffer (buf, len, tmp.dir, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    zi_graph_destroy (&g);
    g = zi_onnx_load_buffer (buf, len, NULL, err, sizeof err);
    cr_assert_null (g);
    cr_assert (strstr (err, "needs a model directory"), "%s", err);
    free (buf);
    s_tmp_remove (&tmp);
}

Test (onnx, external_paths_outside_the_model_dir_are_refused)
{
    s_tmp_t tmp;
    s_tmp_make (&tmp);
    const char *bad[] = {"../w.bin", "/etc/passwd", "sub/../../w.bin", "a/..", "..",
                         "..\\w.bin", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_model_t *b = s_relu_model ();
        s_external (b, bad[i], "0", "24");
        s_write_model (b, tmp.model);
        char err[512];
        zi_graph_t *g = NULL;
        int rc = zi_onnx_read (tmp.model, &g, err, sizeof err);
        cr_assert_eq (rc, ZI_ERR_MALFORMED, "'%s' was accepted (%d)", bad[i], rc);
        cr_assert_null (g);
        cr_assert (strstr (err, "initializer 'w'"), "%s", err);
    }
    //  a name that merely contains dots is fine
    float v[6] = {0};
    snprintf (tmp.weights, sizeof tmp.weights, "%s/w..bin", tmp.dir);
    s_write_file (tmp.weights, v, sizeof v);
    s_model_t *b = s_relu_model ();
    s_external (b, "./w..bin", NULL, NULL);
    s_write_model (b, tmp.model);
    char err[512];
    zi_graph_t *g = zi_onnx_load (tmp.model, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    zi_graph_destroy (&g);
    s_tmp_remove (&tmp);
}

Test (onnx, external_ranges_are_checked)
{
    s_tmp_t tmp;
    s_tmp_make (&tmp);
    float v[6] = {0};
    s_write_file (tmp.weights, v, sizeof v);
    struct {
        const char *offset, *length, *why;
        int code;
    } cases[] = {
        {"4", "24", "past the end", ZI_ERR_MALFORMED},
        {"25", NULL, "past the end", ZI_ERR_MALFORMED},
        {"0", "20", "needs 24", ZI_ERR_MALFORMED},
        {"0", "18446744073709551615", "past the end", ZI_ERR_MALFORMED},
        {"18446744073709551615", "24", "past the end", ZI_ERR_MALFORMED},
        {"-1", "24", "not a non-negative integer", ZI_ERR_MALFORMED},
        {"0", "24x", "not a non-negative integer", ZI_ERR_MALFORMED},
        {"0", "99999999999999999999999", "not a non-negative integer", ZI_ERR_MALFORMED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_model_t *b = s_relu_model ();
        s_external (b, "w.bin", cases[i].offset, cases[i].length);
        s_write_model (b, tmp.model);
        char err[512];
        zi_graph_t *g = NULL;
        int rc = zi_onnx_read (tmp.model, &g, err, sizeof err);
        cr_assert_eq (rc, cases[i].code, "case %zu: %d %s", i, rc, err);
        cr_assert (strstr (err, cases[i].why), "case %zu: %s", i, err);
    }
    //  a missing file
    s_model_t *b = s_relu_model ();
    s_external (b, "missing.bin", "0", "24");
    s_write_model (b, tmp.model);
    char err[512];
    zi_graph_t *g = NULL;
    cr_assert_eq (zi_onnx_read (tmp.model, &g, err, sizeof err), ZI_ERR_NOTFOUND);
    cr_assert (strstr (err, "missing.bin"), "%s", err);
    //  external and inline data at once
    b = s_relu_model ();
    Onnx__TensorProto *t = s_external (b, "w.bin", "0", "24");
    t->has_raw_data = 1;
    t->raw_data.len = 24;
    t->raw_data.data = (uint8_t *) s_alloc (24);
    s_write_model (b, tmp.model);
    cr_assert_eq (zi_onnx_read (tmp.model, &g, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "both external and inline"), "%s", err);
    s_tmp_remove (&tmp);
}

Test (onnx, external_tensor_files_are_copied)
{
    s_tmp_t tmp;
    s_tmp_make (&tmp);
    float v[6] = {1, 2, 3, 4, 5, 6};
    s_write_file (tmp.weights, v, sizeof v);
    s_model_t *b = s_model_new (13);
    Onnx__TensorProto *t = s_external (b, "w.bin", NULL, NULL);
    size_t len = onnx__tensor_proto__get_packed_size (t);
    uint8_t *buf = (uint8_t *) malloc (len);
    onnx__tensor_proto__pack (t, buf);
    s_write_file (tmp.model, buf, len);
    char err[512];
    char *name = NULL;
    zi_tensor_t *w = zi_onnx_load_tensor (tmp.model, &name, err, sizeof err);
    cr_assert_not_null (w, "%s", err);
    cr_assert_str_eq (name, "w");
    cr_assert (w->owns_data, "a stand-alone tensor cannot keep a mapping");
    cr_assert_eq (((float *) w->data)[5], 6.0f);
    free (name);
    zi_tensor_destroy (&w);
    //  from memory there is no directory to read it from
    w = zi_onnx_load_tensor_buffer (buf, len, NULL, err, sizeof err);
    cr_assert_null (w);
    free (buf);
    s_tmp_remove (&tmp);
}
