/*  ops_testutil.h - what the kernel tests (tests/test_ops_*.c) share: a
    hand-built node run the way the executor runs it, tensors of given or
    random values, shape checks and the naive Conv reference.

        #define ZT_NODE_NAME "r"        //  optional, before the include
        #include "ops_testutil.h"

        zt_node_t t;
        zt_node_init (&t, "Transpose", 1, 1);
        zt_ints (&t, "perm", INTS (1, 0));
        zi_tensor_t *in[] = {x}, *out[1];
        cr_assert_eq (zt_run (&t, in, out, NULL), 0, "%s", t.err);
        zt_expect_shape (out[0], INTS (3, 2));
        zt_free_outs (out, 1);

    Header only (static inline), so each test stays one source file. Random
    generators take their state from the caller: every test file keeps its
    own seed and so its own sequence of values.
*/
#ifndef OPS_TESTUTIL_H_INCLUDED
#define OPS_TESTUTIL_H_INCLUDED

#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "zi_ops.h"
#include "zi_ops_nn.h"

//  The node's name, as kernel error messages quote it ("node 'n0' (Add)").
#ifndef ZT_NODE_NAME
#define ZT_NODE_NAME "n0"
#endif

#define ZT_MAXIO   16       //  inputs, and outputs, of a node
#define ZT_MAXATTR 16
#define ZT_MAXINTS 16       //  longer INTS attributes are referenced, not copied

//  INTS (1, 2, 3) -> 3, (int64_t[]){1, 2, 3}: a count and an array argument.
#define INTS(...) (sizeof ((int64_t[]){__VA_ARGS__}) / sizeof (int64_t)), \
                  ((int64_t[]){__VA_ARGS__})

//  Nodes -----------------------------------------------------------------------

typedef struct {
    zi_node_t node;
    zi_attr_t attrs[ZT_MAXATTR];
    int64_t ints[ZT_MAXATTR][ZT_MAXINTS];
    int ins[ZT_MAXIO], outs[ZT_MAXIO];
    char err[256];
} zt_node_t;

//  A node of op with n_in inputs and n_out outputs and no attributes yet.
static inline void
zt_node_init (zt_node_t *t, const char *op, int n_in, int n_out)
{
    cr_assert (n_in <= ZT_MAXIO && n_out <= ZT_MAXIO);
    memset (t, 0, sizeof *t);
    t->node.name = (char *) ZT_NODE_NAME;
    t->node.op_type = (char *) op;
    t->node.domain = (char *) "";
    t->node.n_in = n_in;
    t->node.in = t->ins;
    t->node.n_out = n_out;
    t->node.out = t->outs;
    t->node.attr = t->attrs;
    for (int i = 0; i < ZT_MAXIO; i++) {
        t->ins[i] = i;
        t->outs[i] = ZT_MAXIO + i;
    }
}

static inline zi_attr_t *
zt_attr (zt_node_t *t, const char *name, zi_attr_type_t type)
{
    cr_assert_lt (t->node.n_attr, ZT_MAXATTR);
    zi_attr_t *a = &t->attrs[t->node.n_attr++];
    a->name = (char *) name;
    a->type = type;
    return a;
}

static inline void
zt_int (zt_node_t *t, const char *name, int64_t v)
{
    zt_attr (t, name, ZI_ATTR_INT)->i = v;
}

static inline void
zt_float (zt_node_t *t, const char *name, float v)
{
    zt_attr (t, name, ZI_ATTR_FLOAT)->f = v;
}

static inline void
zt_str (zt_node_t *t, const char *name, const char *s)
{
    zi_attr_t *a = zt_attr (t, name, ZI_ATTR_STRING);
    a->s = (char *) s;
    a->s_len = strlen (s);
}

//  Up to ZT_MAXINTS values are copied into the node; a longer array is
//  referenced and must outlive the node.
static inline void
zt_ints (zt_node_t *t, const char *name, int n, const int64_t *v)
{
    int slot = t->node.n_attr;
    zi_attr_t *a = zt_attr (t, name, ZI_ATTR_INTS);
    a->n = n;
    if (n <= ZT_MAXINTS) {
        if (n > 0) {
            memcpy (t->ints[slot], v, (size_t) n * sizeof *v);
        }
        a->ints = t->ints[slot];
    }
    else {
        a->ints = (int64_t *) v;
    }
}

//  The array must outlive the node.
static inline void
zt_floats (zt_node_t *t, const char *name, int n, const float *v)
{
    zi_attr_t *a = zt_attr (t, name, ZI_ATTR_FLOATS);
    a->n = n;
    a->floats = (float *) v;
}

//  v stays the caller's.
static inline void
zt_tensor_attr (zt_node_t *t, const char *name, zi_tensor_t *v)
{
    zt_attr (t, name, ZI_ATTR_TENSOR)->t = v;
}

//  zi_op_find -> check -> infer -> allocate outputs -> run, as the executor
//  does. in[i] NULL = an omitted input; out[i] receives a new tensor, or
//  NULL when want_out (optional) says the output is omitted. Outputs are
//  poisoned (0xff bytes) before the run: a kernel must write every element.
//  Returns the first failing step's code (ZI_OP_NEEDS_VALUE included); on
//  failure every out[i] is NULL.
static inline int
zt_run (zt_node_t *t, zi_tensor_t *const *in, zi_tensor_t **out,
        const bool *want_out)
{
    const int n_in = t->node.n_in, n_out = t->node.n_out;
    for (int i = 0; i < n_in; i++) {
        t->ins[i] = in[i] ? i : -1;
    }
    zi_tensor_t shells[ZT_MAXIO];
    zi_tensor_t *outs[ZT_MAXIO];
    memset (shells, 0, sizeof shells);
    for (int i = 0; i < n_out; i++) {
        out[i] = NULL;
        bool wanted = !want_out || want_out[i];
        t->outs[i] = wanted ? ZT_MAXIO + i : -1;
        outs[i] = wanted ? &shells[i] : NULL;
    }
    const zi_op_def_t *op = zi_op_find (t->node.op_type, "");
    cr_assert_not_null (op, "op %s not registered", t->node.op_type);
    t->node.op = op;
    int rc = zi_op_check_node (&t->node, t->err, sizeof t->err);
    if (rc) {
        return rc;
    }
    zi_kctx_t ctx = {
        .node = &t->node, .n_in = n_in, .in = (const zi_tensor_t *const *) in,
        .n_out = n_out, .out = outs, .nthreads = 1, .err = t->err,
        .errlen = sizeof t->err,
    };
    rc = op->infer (&ctx);
    if (rc) {
        return rc;
    }
    for (int i = 0; i < n_out; i++) {
        if (outs[i]) {
            out[i] = zi_tensor_new (shells[i].dtype, shells[i].rank, shells[i].ne);
            cr_assert_not_null (out[i]);
            memset (out[i]->data, 0xff, out[i]->nbytes);
            outs[i] = out[i];
        }
    }
    rc = op->run (&ctx);
    if (rc) {
        for (int i = 0; i < n_out; i++) {
            zi_tensor_destroy (&out[i]);
        }
    }
    return rc;
}

//  zt_run with the node's input and output counts set here.
static inline int
zt_run_n (zt_node_t *t, int n_in, zi_tensor_t *const *in, int n_out, zi_tensor_t **out)
{
    cr_assert (n_in <= ZT_MAXIO && n_out <= ZT_MAXIO);
    t->node.n_in = n_in;
    t->node.n_out = n_out;
    return zt_run (t, in, out, NULL);
}

static inline void
zt_free_outs (zi_tensor_t **out, int n)
{
    for (int i = 0; i < n; i++) {
        zi_tensor_destroy (&out[i]);
    }
}

//  Tensors ---------------------------------------------------------------------

//  A tensor of dt and shape holding a copy of data (zeros when data is NULL).
static inline zi_tensor_t *
zt_tensor_of (zi_dtype_t dt, int rank, const int64_t *shape, const void *data)
{
    zi_tensor_t *x = zi_tensor_new (dt, rank, shape);
    cr_assert_not_null (x);
    if (data && x->nbytes) {
        memcpy (x->data, data, x->nbytes);
    }
    return x;
}

//  int64 vector [n] of v.
static inline zi_tensor_t *
zt_i64_vec (int n, const int64_t *v)
{
    int64_t shape[1] = {n};
    return zt_tensor_of (ZI_DT_I64, 1, shape, v);
}

//  Linear congruential generator: uniform in [-1, 1) in steps of 2^-15.
static inline float
zt_lcg_frand (uint32_t *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return (float) ((*seed >> 8) & 0xffff) / 32768.0f - 1.0f;
}

//  float32 tensor of zt_lcg_frand values.
static inline zi_tensor_t *
zt_lcg_tensor (uint32_t *seed, int rank, const int64_t *shape)
{
    zi_tensor_t *t = zi_tensor_new (ZI_DT_F32, rank, shape);
    cr_assert_not_null (t);
    float *d = (float *) t->data;
    for (int64_t i = 0; i < zi_tensor_count (t); i++) {
        d[i] = zt_lcg_frand (seed);
    }
    return t;
}

//  xorshift64: the next state, which is also the value.
static inline uint64_t
zt_xorshift (uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

//  n doubles, zeroed (at least one is allocated).
static inline double *
zt_dalloc (int64_t n)
{
    double *p = (double *) calloc ((size_t) (n > 0 ? n : 1), sizeof *p);
    cr_assert_not_null (p);
    return p;
}

//  Advance pos (rank coordinates) through shape in row-major order; false
//  after the last position.
static inline bool
zt_next (int rank, const int64_t *shape, int64_t *pos)
{
    for (int d = rank - 1; d >= 0; d--) {
        if (++pos[d] < shape[d]) {
            return true;
        }
        pos[d] = 0;
    }
    return false;
}

//  Checks ----------------------------------------------------------------------

static inline void
zt_expect_shape (const zi_tensor_t *y, int rank, const int64_t *shape)
{
    char a[128], b[128];
    cr_assert_not_null (y);
    cr_assert_eq (y->rank, rank, "rank %d, expected %d (%s vs %s)", y->rank, rank,
                  zi_tensor_shape_str (y, a, sizeof a),
                  zi_shape_str (rank, shape, b, sizeof b));
    for (int d = 0; d < rank; d++) {
        cr_assert_eq (y->ne[d], shape[d], "dim %d: %s, expected %s", d,
                      zi_tensor_shape_str (y, a, sizeof a),
                      zi_shape_str (rank, shape, b, sizeof b));
    }
}

//  References ------------------------------------------------------------------

//  An activation fused into Conv / Gemm, in double.
static inline double
zt_ref_act (double v, zi_nn_act_t act)
{
    switch (act.kind) {
        case ZI_NN_ACT_RELU: return v > 0 ? v : 0;
        case ZI_NN_ACT_LEAKY_RELU: return v < 0 ? v * act.alpha : v;
        case ZI_NN_ACT_SIGMOID: return 1.0 / (1.0 + exp (-v));
        case ZI_NN_ACT_TANH: return tanh (v);
        case ZI_NN_ACT_GELU: return 0.5 * v * (1.0 + erf (v / sqrt (2.0)));
        case ZI_NN_ACT_CLIP:
            return v < act.alpha ? act.alpha : v > act.beta ? act.beta : v;
        default: return v;
    }
}

//  Conv geometry with the spatial dims padded to 3 (leading 1s), as the
//  kernels do; pb = begin pads.
typedef struct {
    int nd;
    int64_t in[3], k[3], s[3], d[3], pb[3], out[3];
} zt_geom_t;

//  A zt_geom_t from per-real-dim values (nd of them); s, d, pb may be NULL
//  (1, 1, 0).
static inline zt_geom_t
zt_geom (int nd, const int64_t *in, const int64_t *k, const int64_t *s,
         const int64_t *d, const int64_t *pb, const int64_t *out)
{
    zt_geom_t g;
    g.nd = nd;
    for (int i = 0; i < 3; i++) {
        int j = i - (3 - nd);
        g.in[i] = j >= 0 ? in[j] : 1;
        g.k[i] = j >= 0 ? k[j] : 1;
        g.s[i] = j >= 0 && s ? s[j] : 1;
        g.d[i] = j >= 0 && d ? d[j] : 1;
        g.pb[i] = j >= 0 && pb ? pb[j] : 0;
        g.out[i] = j >= 0 ? out[j] : 1;
    }
    return g;
}

//  Split a flat index over dims (a, b, c) into its three coordinates.
static inline void
zt_split3 (int64_t idx, const int64_t *dims, int64_t *i0, int64_t *i1, int64_t *i2)
{
    *i2 = idx % dims[2];
    idx /= dims[2];
    *i1 = idx % dims[1];
    *i0 = idx / dims[1];
}

//  Naive Conv in double: x (N,C,in) * w (M,C/group,k) + b -> y (N,M,out),
//  returned (caller frees). Taps outside the input are skipped; the bias
//  is added after the taps. abs (optional) receives per output element the
//  sum of |x w| over its taps plus |b|, the scale of its rounding error
//  (caller frees).
static inline double *
zt_ref_conv (const zi_tensor_t *x, const zi_tensor_t *w, const zi_tensor_t *b,
             int64_t group, const zt_geom_t *g, double **abs)
{
    int64_t N = x->ne[0], C = x->ne[1], M = w->ne[0];
    int64_t Cg = C / group, Mg = M / group;
    int64_t isz = g->in[0] * g->in[1] * g->in[2];
    int64_t osz = g->out[0] * g->out[1] * g->out[2];
    int64_t ksz = g->k[0] * g->k[1] * g->k[2];
    double *y = zt_dalloc (N * M * osz);
    double *a = abs ? zt_dalloc (N * M * osz) : NULL;
    const float *X = x->data, *W = w->data, *B = b ? b->data : NULL;
    //  y index = (n, m, o) with o flat over out; taps t = (c, k) flat
    for (int64_t yi = 0; yi < N * M * osz; yi++) {
        int64_t n = yi / (M * osz), m = (yi / osz) % M, o0, o1, o2;
        zt_split3 (yi % osz, g->out, &o0, &o1, &o2);
        double s = 0.0, sa = 0.0;
        int64_t grp = m / Mg;
        for (int64_t t = 0; t < Cg * ksz; t++) {
            int64_t c = t / ksz, k0, k1, k2;
            zt_split3 (t % ksz, g->k, &k0, &k1, &k2);
            int64_t i0 = o0 * g->s[0] - g->pb[0] + k0 * g->d[0];
            int64_t i1 = o1 * g->s[1] - g->pb[1] + k1 * g->d[1];
            int64_t i2 = o2 * g->s[2] - g->pb[2] + k2 * g->d[2];
            if (i0 < 0 || i0 >= g->in[0] || i1 < 0 || i1 >= g->in[1] || i2 < 0
                || i2 >= g->in[2]) {
                continue;
            }
            double p = (double) X[(n * C + grp * Cg + c) * isz
                                  + (i0 * g->in[1] + i1) * g->in[2] + i2]
                       * W[(m * Cg + c) * ksz + t % ksz];
            s += p;
            sa += fabs (p);
        }
        if (B) {
            s += B[m];
            sa += fabs (B[m]);
        }
        y[yi] = s;
        if (a) {
            a[yi] = sa;
        }
    }
    if (abs) {
        *abs = a;
    }
    return y;
}

#endif
