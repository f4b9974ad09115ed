/*  test_ops_elem.c - element-wise kernels against naive references.

    Every op is called the way the executor calls it: zi_op_find, check,
    infer into an empty tensor, allocate the inferred shape, run. References
    are simple loops in double precision with numpy broadcasting done by
    index arithmetic. Float32 tolerance: |got - want| <= 1e-5 + 1e-4 * |want|
    unless a test says otherwise.
*/
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "zi_ops.h"

#define ZT_NODE_NAME "t"
#include "ops_testutil.h"

//  Building nodes and running ops ---------------------------------------------

static zi_attr_t
attr_f (const char *name, float v)
{
    zi_attr_t a = {0};
    a.name = (char *) name;
    a.type = ZI_ATTR_FLOAT;
    a.f = v;
    return a;
}

static zi_attr_t
attr_i (const char *name, int64_t v)
{
    zi_attr_t a = {0};
    a.name = (char *) name;
    a.type = ZI_ATTR_INT;
    a.i = v;
    return a;
}

static zi_attr_t
attr_s (const char *name, const char *v)
{
    zi_attr_t a = {0};
    a.name = (char *) name;
    a.type = ZI_ATTR_STRING;
    a.s = (char *) v;
    a.s_len = strlen (v);
    return a;
}

static char s_err[256];

//  Check, infer and run op on the inputs (in[i] may be NULL for an omitted
//  optional input). Returns the output, or NULL with *rc set to the error.
static zi_tensor_t *
run_op_rc (const char *op, zi_attr_t *attrs, int n_attr, int n_in,
           const zi_tensor_t **in, int *rc)
{
    zt_node_t t;
    zt_node_init (&t, op, n_in, 1);
    cr_assert_leq (n_attr, ZT_MAXATTR);
    if (n_attr > 0) {
        memcpy (t.attrs, attrs, (size_t) n_attr * sizeof *attrs);
    }
    t.node.n_attr = n_attr;
    zi_tensor_t *out[1];
    *rc = zt_run (&t, (zi_tensor_t *const *) in, out, NULL);
    memcpy (s_err, t.err, sizeof s_err);
    return out[0];
}

static zi_tensor_t *
run_op (const char *op, zi_attr_t *attrs, int n_attr, int n_in,
        const zi_tensor_t **in)
{
    int rc;
    zi_tensor_t *out = run_op_rc (op, attrs, n_attr, n_in, in, &rc);
    cr_assert_eq (rc, 0, "%s failed: %s", op, s_err);
    return out;
}

static zi_tensor_t *
run2 (const char *op, const zi_tensor_t *a, const zi_tensor_t *b)
{
    const zi_tensor_t *in[2] = {a, b};
    return run_op (op, NULL, 0, 2, in);
}

static zi_tensor_t *
run1 (const char *op, zi_attr_t *attrs, int n_attr, const zi_tensor_t *a)
{
    const zi_tensor_t *in[1] = {a};
    return run_op (op, attrs, n_attr, 1, in);
}

//  Tensors --------------------------------------------------------------------

//  Random data: this file's own sequence.
static uint64_t s_rng = 88172645463325252ull;

//  uniform in [0, 1)
static double
rnd (void)
{
    return (double) (zt_xorshift (&s_rng) >> 11) / 9007199254740992.0;
}

//  float32 tensor with uniform values in [lo, hi)
static zi_tensor_t *
rand_f32 (int rank, const int64_t *shape, double lo, double hi)
{
    zi_tensor_t *t = zt_tensor_of (ZI_DT_F32, rank, shape, NULL);
    float *x = (float *) t->data;
    for (int64_t i = 0; i < zi_tensor_count (t); i++) {
        x[i] = (float) (lo + (hi - lo) * rnd ());
    }
    return t;
}

//  Element of t as double, whatever its dtype.
static double
get (const zi_tensor_t *t, int64_t i)
{
    switch (t->dtype) {
        case ZI_DT_F32: return ((const float *) t->data)[i];
        case ZI_DT_F64: return ((const double *) t->data)[i];
        case ZI_DT_I32: return ((const int32_t *) t->data)[i];
        case ZI_DT_I64: return (double) ((const int64_t *) t->data)[i];
        case ZI_DT_BOOL: case ZI_DT_U8: return ((const uint8_t *) t->data)[i];
        case ZI_DT_I8: return ((const int8_t *) t->data)[i];
        case ZI_DT_U16: return ((const uint16_t *) t->data)[i];
        case ZI_DT_U32: return ((const uint32_t *) t->data)[i];
        case ZI_DT_F16: return zi_f16_to_f32 (((const uint16_t *) t->data)[i]);
        default: cr_assert_fail ("dtype %d in get", t->dtype); return 0;
    }
}

//  Index into input t of the output element whose multi-index is idx (of
//  an output of rank r): the naive numpy broadcasting rule.
static int64_t
bidx (const zi_tensor_t *t, int r, const int64_t *idx)
{
    int64_t off = 0;
    for (int d = 0; d < t->rank; d++) {
        int od = d + (r - t->rank);
        int64_t i = t->ne[d] == 1 ? 0 : idx[od];
        off = off * t->ne[d] + i;
    }
    return off;
}

static void
unravel (const zi_tensor_t *out, int64_t flat, int64_t *idx)
{
    for (int d = out->rank - 1; d >= 0; d--) {
        idx[d] = flat % out->ne[d];
        flat /= out->ne[d];
    }
}

static bool
close_to (double got, double want, double atol, double rtol)
{
    if (isnan (want)) {
        return isnan (got);
    }
    if (isinf (want)) {
        return got == want;
    }
    return fabs (got - want) <= atol + rtol * fabs (want);
}

static void
expect_shape (const zi_tensor_t *t, int rank, const int64_t *shape)
{
    cr_assert_eq (t->rank, rank, "rank %d, want %d", t->rank, rank);
    for (int i = 0; i < rank; i++) {
        cr_assert_eq (t->ne[i], shape[i], "dim %d is %lld, want %lld", i,
                      (long long) t->ne[i], (long long) shape[i]);
    }
}

//  Binary ops against a reference, over many broadcast shape pairs -----------

typedef double (*ref2_fn) (double, double);

static double r_add (double a, double b) { return a + b; }
static double r_sub (double a, double b) { return a - b; }
static double r_mul (double a, double b) { return a * b; }
static double r_div (double a, double b) { return a / b; }
static double r_pow (double a, double b) { return pow (a, b); }
static double r_max (double a, double b) { return a > b ? a : b; }
static double r_min (double a, double b) { return a < b ? a : b; }
static double r_eq (double a, double b) { return a == b; }
static double r_lt (double a, double b) { return a < b; }
static double r_gt (double a, double b) { return a > b; }
static double r_le (double a, double b) { return a <= b; }
static double r_ge (double a, double b) { return a >= b; }
static double r_prelu (double a, double b) { return a < 0 ? a * b : a; }

static void
check_binary (const char *op, ref2_fn ref, const zi_tensor_t *a,
              const zi_tensor_t *b, const zi_tensor_t *out)
{
    int64_t idx[ZI_MAX_RANK];
    for (int64_t i = 0; i < zi_tensor_count (out); i++) {
        unravel (out, i, idx);
        double want = ref (get (a, bidx (a, out->rank, idx)),
                           get (b, bidx (b, out->rank, idx)));
        if (out->dtype == ZI_DT_F32) {
            want = (float) want;
        }
        cr_assert (close_to (get (out, i), want, 1e-5, 1e-4),
                   "%s element %lld: got %g want %g", op, (long long) i,
                   get (out, i), want);
    }
}

typedef struct {
    int ra;
    int64_t a[4];
    int rb;
    int64_t b[4];
    int ro;
    int64_t o[4];
} bcase_t;

static const bcase_t s_bcases[] = {
    {3, {2, 3, 4}, 3, {2, 3, 4}, 3, {2, 3, 4}},     //  same shape
    {3, {2, 3, 4}, 0, {0}, 3, {2, 3, 4}},           //  scalar
    {0, {0}, 2, {3, 5}, 2, {3, 5}},                 //  scalar first
    {2, {6, 4}, 1, {4}, 2, {6, 4}},                 //  row bias
    {1, {4}, 2, {6, 4}, 2, {6, 4}},                 //  row bias first
    {4, {2, 3, 4, 5}, 4, {1, 3, 1, 1}, 4, {2, 3, 4, 5}},   //  channel bias
    {3, {2, 1, 4}, 2, {3, 1}, 3, {2, 3, 4}},        //  both broadcast
    {2, {6, 1}, 2, {1, 7}, 2, {6, 7}},              //  outer product
    {4, {5, 1, 1, 3}, 4, {1, 4, 2, 1}, 4, {5, 4, 2, 3}},
    {3, {2, 3, 4}, 3, {2, 1, 4}, 3, {2, 3, 4}},     //  middle broadcast
    {3, {1, 1, 1}, 1, {3}, 3, {1, 1, 3}},
    {2, {1, 1}, 0, {0}, 2, {1, 1}},
    {2, {0, 3}, 2, {1, 3}, 2, {0, 3}},              //  empty
    {2, {3, 0}, 2, {3, 1}, 2, {3, 0}},              //  empty inner
    {1, {1}, 1, {1}, 1, {1}},
    {3, {4, 1, 6}, 1, {1}, 3, {4, 1, 6}},
};

Test (ops_elem, arithmetic_and_comparison_broadcast_float32)
{
    struct {
        const char *op;
        ref2_fn ref;
        double lo, hi;  //  value range (Pow needs a positive base)
    } ops[] = {
        {"Add", r_add, -2, 2},         {"Sub", r_sub, -2, 2},
        {"Mul", r_mul, -2, 2},         {"Div", r_div, 0.5, 2},
        {"Pow", r_pow, 0.5, 2},        {"Equal", r_eq, -2, 2},
        {"Less", r_lt, -2, 2},         {"Greater", r_gt, -2, 2},
        {"LessOrEqual", r_le, -2, 2},  {"GreaterOrEqual", r_ge, -2, 2},
        {"Max", r_max, -2, 2},         {"Min", r_min, -2, 2},
    };
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        for (size_t c = 0; c < sizeof s_bcases / sizeof s_bcases[0]; c++) {
            const bcase_t *bc = &s_bcases[c];
            zi_tensor_t *a = rand_f32 (bc->ra, bc->a, ops[o].lo, ops[o].hi);
            zi_tensor_t *b = rand_f32 (bc->rb, bc->b, ops[o].lo, ops[o].hi);
            //  make some values equal so comparisons see ties
            float *av = (float *) a->data, *bv = (float *) b->data;
            if (zi_tensor_count (a) && zi_tensor_count (b)) {
                av[0] = bv[0];
            }
            zi_tensor_t *out = run2 (ops[o].op, a, b);
            expect_shape (out, bc->ro, bc->o);
            bool cmp = ops[o].ref == r_eq || ops[o].ref == r_lt
                       || ops[o].ref == r_gt || ops[o].ref == r_le
                       || ops[o].ref == r_ge;
            cr_assert_eq (out->dtype, cmp ? ZI_DT_BOOL : ZI_DT_F32);
            check_binary (ops[o].op, ops[o].ref, a, b, out);
            zi_tensor_destroy (&a);
            zi_tensor_destroy (&b);
            zi_tensor_destroy (&out);
        }
    }
}

Test (ops_elem, random_broadcast_shapes_add)
{
    //  Random shapes of rank 0..8 (ZI_MAX_RANK) with random size-1 dims on
    //  either side: exercises the plan's dim dropping and merging.
    for (int iter = 0; iter < 400; iter++) {
        int r = (int) (rnd () * (ZI_MAX_RANK + 1));
        int64_t full[ZI_MAX_RANK];
        for (int d = 0; d < r; d++) {
            full[d] = 1 + (int64_t) (rnd () * (r > 5 ? 3 : 5));
        }
        int ra = (int) (rnd () * (r + 1)), rb = r;
        if (rnd () < 0.5) {
            rb = ra;
            ra = r;
        }
        int64_t a[ZI_MAX_RANK], b[ZI_MAX_RANK];
        for (int d = 0; d < ra; d++) {
            a[d] = rnd () < 0.3 ? 1 : full[d + r - ra];
        }
        for (int d = 0; d < rb; d++) {
            b[d] = rnd () < 0.3 ? 1 : full[d + r - rb];
        }
        zi_tensor_t *ta = rand_f32 (ra, a, -1, 1);
        zi_tensor_t *tb = rand_f32 (rb, b, -1, 1);
        zi_tensor_t *out = run2 ("Add", ta, tb);
        check_binary ("Add", r_add, ta, tb, out);
        zi_tensor_t *out2 = run2 ("Sub", tb, ta);
        check_binary ("Sub", r_sub, tb, ta, out2);
        zi_tensor_destroy (&ta);
        zi_tensor_destroy (&tb);
        zi_tensor_destroy (&out);
        zi_tensor_destroy (&out2);
    }
}

Test (ops_elem, legacy_broadcast_with_axis_before_opset_7)
{
    //  opset 6: B (3,4) broadcast into A (2,3,4,5) from axis 1
    zi_tensor_t *a = rand_f32 (4, (int64_t[]){2, 3, 4, 5}, -1, 1);
    zi_tensor_t *b = rand_f32 (2, (int64_t[]){3, 4}, -1, 1);
    zi_attr_t at[] = {attr_i ("__opset", 6), attr_i ("broadcast", 1),
                      attr_i ("axis", 1)};
    const zi_tensor_t *in[2] = {a, b};
    zi_tensor_t *out = run_op ("Mul", at, 3, 2, in);
    expect_shape (out, 4, (int64_t[]){2, 3, 4, 5});
    for (int64_t i = 0; i < 120; i++) {
        int64_t j = (i / 5) % 12;   //  (c, h) of element i
        cr_assert (close_to (get (out, i), (float) (get (a, i) * get (b, j)), 0, 1e-6));
    }
    zi_tensor_destroy (&out);
    //  broadcast = 1 without axis: right-aligned, as numpy
    zi_tensor_t *c = rand_f32 (1, (int64_t[]){5}, -1, 1);
    const zi_tensor_t *in2[2] = {a, c};
    out = run_op ("Add", at, 2, 2, in2);
    check_binary ("Add", r_add, a, c, out);
    zi_tensor_destroy (&out);
    //  an axis that does not fit is an error
    zi_attr_t bad[] = {attr_i ("broadcast", 1), attr_i ("axis", 3)};
    int rc;
    cr_assert_null (run_op_rc ("Add", bad, 2, 2, in, &rc));
    cr_assert_eq (rc, ZI_ERR_SHAPE);
    zi_attr_t badt[] = {attr_f ("broadcast", 1)};
    cr_assert_null (run_op_rc ("Add", badt, 1, 2, in, &rc));
    cr_assert_eq (rc, ZI_ERR_MALFORMED);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&c);
}

Test (ops_elem, int64_div_truncates_toward_zero_and_never_traps)
{
    int64_t av[] = {-7, 7, -7, 7, 5, INT64_MIN, 3, 0};
    int64_t bv[] = {2, -2, -2, 2, 0, -1, 3, 5};
    int64_t want[] = {-3, -3, 3, 3, 0, INT64_MIN, 1, 0};
    zi_tensor_t *a = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){8}, av);
    zi_tensor_t *b = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){8}, bv);
    zi_tensor_t *out = run2 ("Div", a, b);
    cr_assert_eq (out->dtype, ZI_DT_I64);
    for (int i = 0; i < 8; i++) {
        cr_assert_eq (((int64_t *) out->data)[i], want[i], "element %d", i);
    }
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&out);
}

Test (ops_elem, int_arithmetic_shape_math)
{
    //  What PyTorch exports do with shapes: int64 (4,) * scalar, / scalar,
    //  + (1,), - (4,).
    int64_t sv[] = {2, 3, 40, 7};
    zi_tensor_t *s = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){4}, sv);
    zi_tensor_t *k = zt_tensor_of (ZI_DT_I64, 0, NULL, (int64_t[]){3});
    zi_tensor_t *one = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){1}, (int64_t[]){1});
    zi_tensor_t *m = run2 ("Mul", s, k);
    zi_tensor_t *d = run2 ("Div", s, k);
    zi_tensor_t *a = run2 ("Add", s, one);
    zi_tensor_t *b = run2 ("Sub", one, s);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq (((int64_t *) m->data)[i], sv[i] * 3);
        cr_assert_eq (((int64_t *) d->data)[i], sv[i] / 3);
        cr_assert_eq (((int64_t *) a->data)[i], sv[i] + 1);
        cr_assert_eq (((int64_t *) b->data)[i], 1 - sv[i]);
    }
    //  int32 with broadcasting and wrap-around instead of UB
    int32_t xv[] = {INT32_MAX, -5, 6, 100000, -100000, 0};
    int32_t yv[] = {2, -3};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_I32, 2, (int64_t[]){3, 2}, xv);
    zi_tensor_t *y = zt_tensor_of (ZI_DT_I32, 1, (int64_t[]){2}, yv);
    zi_tensor_t *xm = run2 ("Mul", x, y);
    zi_tensor_t *xa = run2 ("Add", x, y);
    for (int i = 0; i < 6; i++) {
        int32_t want_m = (int32_t) (uint32_t) ((int64_t) xv[i] * yv[i % 2]);
        int32_t want_a = (int32_t) (uint32_t) ((int64_t) xv[i] + yv[i % 2]);
        cr_assert_eq (((int32_t *) xm->data)[i], want_m, "mul %d", i);
        cr_assert_eq (((int32_t *) xa->data)[i], want_a, "add %d", i);
    }
    zi_tensor_destroy (&s);
    zi_tensor_destroy (&k);
    zi_tensor_destroy (&one);
    zi_tensor_destroy (&m);
    zi_tensor_destroy (&d);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&y);
    zi_tensor_destroy (&xm);
    zi_tensor_destroy (&xa);
}

Test (ops_elem, mod_python_and_c_style)
{
    int64_t av[] = {-4, 7, -7, 4, 5, 3};
    int64_t bv[] = {3, -3, -3, 3, 0, -1};
    int64_t want_py[] = {2, -2, -1, 1, 0, 0};
    int64_t want_c[] = {-1, 1, -1, 1, 0, 0};
    zi_tensor_t *a = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){6}, av);
    zi_tensor_t *b = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){6}, bv);
    const zi_tensor_t *in[2] = {a, b};
    zi_tensor_t *py = run_op ("Mod", NULL, 0, 2, in);
    zi_attr_t fm[] = {attr_i ("fmod", 1)};
    zi_tensor_t *c = run_op ("Mod", fm, 1, 2, in);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq (((int64_t *) py->data)[i], want_py[i], "py %d", i);
        cr_assert_eq (((int64_t *) c->data)[i], want_c[i], "c %d", i);
    }
    float fa[] = {-4.3f, 7.5f, -7.5f};
    float fb[] = {3.0f, -2.0f, 2.0f};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){3}, fa);
    zi_tensor_t *y = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){3}, fb);
    const zi_tensor_t *fin[2] = {x, y};
    zi_tensor_t *f = run_op ("Mod", fm, 1, 2, fin);
    for (int i = 0; i < 3; i++) {
        cr_assert (close_to (get (f, i), fmod (fa[i], fb[i]), 1e-6, 1e-6));
    }
    zi_attr_t bad[] = {attr_i ("fmod", 2)};
    int rc;
    cr_assert_null (run_op_rc ("Mod", bad, 1, 2, fin, &rc));
    cr_assert_eq (rc, ZI_ERR_MALFORMED);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&py);
    zi_tensor_destroy (&c);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&y);
    zi_tensor_destroy (&f);
}

Test (ops_elem, pow_mixed_dtypes)
{
    float xv[] = {1.5f, -2.0f, 3.0f, 0.25f};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){4}, xv);
    //  float ** int64 scalar
    zi_tensor_t *e3 = zt_tensor_of (ZI_DT_I64, 0, NULL, (int64_t[]){3});
    zi_tensor_t *p3 = run2 ("Pow", x, e3);
    cr_assert_eq (p3->dtype, ZI_DT_F32);
    for (int i = 0; i < 4; i++) {
        cr_assert (close_to (get (p3, i), pow (xv[i], 3), 1e-6, 1e-6));
    }
    //  x ** 2.0 (fast path), with the exponent as a (1,1) tensor
    zi_tensor_t *e2 = zt_tensor_of (ZI_DT_F32, 2, (int64_t[]){1, 1}, (float[]){2.0f});
    zi_tensor_t *p2 = run2 ("Pow", x, e2);
    expect_shape (p2, 2, (int64_t[]){1, 4});
    for (int i = 0; i < 4; i++) {
        cr_assert_eq (((float *) p2->data)[i], xv[i] * xv[i]);
    }
    //  int32 ** float32 -> int32
    zi_tensor_t *ib = zt_tensor_of (ZI_DT_I32, 1, (int64_t[]){3}, (int32_t[]){1, 2, 3});
    zi_tensor_t *fe = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){3}, (float[]){4, 5, 6});
    zi_tensor_t *pi = run2 ("Pow", ib, fe);
    cr_assert_eq (pi->dtype, ZI_DT_I32);
    cr_assert_eq (((int32_t *) pi->data)[0], 1);
    cr_assert_eq (((int32_t *) pi->data)[1], 32);
    cr_assert_eq (((int32_t *) pi->data)[2], 729);
    //  int64 ** int64, exact
    zi_tensor_t *lb = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){4}, (int64_t[]){3, -2, 2, 5});
    zi_tensor_t *le = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){4}, (int64_t[]){39, 3, -1, 0});
    zi_tensor_t *pl = run2 ("Pow", lb, le);
    cr_assert_eq (((int64_t *) pl->data)[0], 4052555153018976267LL);
    cr_assert_eq (((int64_t *) pl->data)[1], -8);
    cr_assert_eq (((int64_t *) pl->data)[2], 0);
    cr_assert_eq (((int64_t *) pl->data)[3], 1);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&e3);
    zi_tensor_destroy (&p3);
    zi_tensor_destroy (&e2);
    zi_tensor_destroy (&p2);
    zi_tensor_destroy (&ib);
    zi_tensor_destroy (&fe);
    zi_tensor_destroy (&pi);
    zi_tensor_destroy (&lb);
    zi_tensor_destroy (&le);
    zi_tensor_destroy (&pl);
}

Test (ops_elem, variadic_sum_mean_max_min)
{
    zi_tensor_t *a = rand_f32 (2, (int64_t[]){3, 4}, -1, 1);
    zi_tensor_t *b = rand_f32 (1, (int64_t[]){4}, -1, 1);
    zi_tensor_t *c = rand_f32 (3, (int64_t[]){2, 1, 4}, -1, 1);
    const zi_tensor_t *in[3] = {a, b, c};
    const char *ops[] = {"Sum", "Mean", "Max", "Min"};
    for (int o = 0; o < 4; o++) {
        for (int n = 1; n <= 3; n++) {
            zi_tensor_t *out = run_op (ops[o], NULL, 0, n, in);
            int64_t idx[ZI_MAX_RANK];
            for (int64_t i = 0; i < zi_tensor_count (out); i++) {
                unravel (out, i, idx);
                double acc = get (in[0], bidx (in[0], out->rank, idx));
                for (int k = 1; k < n; k++) {
                    double v = get (in[k], bidx (in[k], out->rank, idx));
                    acc = o < 2 ? acc + v : (o == 2 ? fmax (acc, v) : fmin (acc, v));
                }
                if (o == 1) {
                    acc /= n;
                }
                cr_assert (close_to (get (out, i), acc, 1e-6, 1e-5),
                           "%s n=%d element %lld", ops[o], n, (long long) i);
            }
            int64_t want1[] = {3, 4}, want3[] = {2, 3, 4};
            if (n == 3) {
                expect_shape (out, 3, want3);
            }
            else {
                expect_shape (out, 2, want1);
            }
            zi_tensor_destroy (&out);
        }
    }
    //  Max propagates NaN like numpy.maximum
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){2}, (float[]){NAN, 1.0f});
    zi_tensor_t *y = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){2}, (float[]){0.0f, NAN});
    zi_tensor_t *mx = run2 ("Max", x, y);
    cr_assert (isnan (get (mx, 0)) && isnan (get (mx, 1)));
    //  int64 Max
    zi_tensor_t *i1 = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){3}, (int64_t[]){1, -5, 9});
    zi_tensor_t *i2 = zt_tensor_of (ZI_DT_I64, 0, NULL, (int64_t[]){2});
    zi_tensor_t *im = run2 ("Max", i1, i2);
    cr_assert_eq (((int64_t *) im->data)[0], 2);
    cr_assert_eq (((int64_t *) im->data)[1], 2);
    cr_assert_eq (((int64_t *) im->data)[2], 9);
    //  Mean of ints is not in the spec
    const zi_tensor_t *iin[2] = {i1, i2};
    int rc;
    cr_assert_null (run_op_rc ("Mean", NULL, 0, 2, iin, &rc));
    cr_assert_eq (rc, ZI_ERR_UNSUPPORTED);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&c);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&y);
    zi_tensor_destroy (&mx);
    zi_tensor_destroy (&i1);
    zi_tensor_destroy (&i2);
    zi_tensor_destroy (&im);
}

Test (ops_elem, where_broadcasts_three_ways)
{
    uint8_t cv[] = {1, 0, 1};
    zi_tensor_t *c = zt_tensor_of (ZI_DT_BOOL, 2, (int64_t[]){3, 1}, cv);
    zi_tensor_t *x = rand_f32 (2, (int64_t[]){1, 4}, -1, 1);
    zi_tensor_t *y = rand_f32 (0, NULL, -1, 1);
    const zi_tensor_t *in[3] = {c, x, y};
    zi_tensor_t *out = run_op ("Where", NULL, 0, 3, in);
    expect_shape (out, 2, (int64_t[]){3, 4});
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 4; j++) {
            double want = cv[i] ? get (x, j) : get (y, 0);
            cr_assert_eq (get (out, i * 4 + j), want);
        }
    }
    //  same shapes, int64
    zi_tensor_t *c2 = zt_tensor_of (ZI_DT_BOOL, 1, (int64_t[]){4}, (uint8_t[]){1, 0, 0, 1});
    zi_tensor_t *x2 = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){4}, (int64_t[]){1, 2, 3, 4});
    zi_tensor_t *y2 = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){4}, (int64_t[]){-1, -2, -3, -4});
    const zi_tensor_t *in2[3] = {c2, x2, y2};
    zi_tensor_t *o2 = run_op ("Where", NULL, 0, 3, in2);
    int64_t want2[] = {1, -2, -3, 4};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq (((int64_t *) o2->data)[i], want2[i]);
    }
    //  a float condition is an error, not a crash
    const zi_tensor_t *bad[3] = {x, x, y};
    int rc;
    cr_assert_null (run_op_rc ("Where", NULL, 0, 3, bad, &rc));
    cr_assert_eq (rc, ZI_ERR_SHAPE);
    zi_tensor_destroy (&c);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&y);
    zi_tensor_destroy (&out);
    zi_tensor_destroy (&c2);
    zi_tensor_destroy (&x2);
    zi_tensor_destroy (&y2);
    zi_tensor_destroy (&o2);
}

Test (ops_elem, where_random_three_way_broadcast)
{
    for (int iter = 0; iter < 200; iter++) {
        int r = (int) (rnd () * 6);
        int64_t full[6], sh[3][6];
        int rk[3];
        for (int d = 0; d < r; d++) {
            full[d] = 1 + (int64_t) (rnd () * 4);
        }
        for (int k = 0; k < 3; k++) {
            rk[k] = (int) (rnd () * (r + 1));
            for (int d = 0; d < rk[k]; d++) {
                sh[k][d] = rnd () < 0.4 ? 1 : full[d + r - rk[k]];
            }
        }
        rk[(int) (rnd () * 3)] = r;     //  one operand has the full rank
        for (int k = 0; k < 3; k++) {
            for (int d = 0; d < rk[k]; d++) {
                sh[k][d] = rnd () < 0.4 ? 1 : full[d + r - rk[k]];
            }
        }
        zi_tensor_t *c = zt_tensor_of (ZI_DT_BOOL, rk[0], sh[0], NULL);
        for (int64_t i = 0; i < zi_tensor_count (c); i++) {
            ((uint8_t *) c->data)[i] = rnd () < 0.5;
        }
        zi_tensor_t *x = rand_f32 (rk[1], sh[1], -1, 1);
        zi_tensor_t *y = rand_f32 (rk[2], sh[2], -1, 1);
        const zi_tensor_t *in[3] = {c, x, y};
        zi_tensor_t *out = run_op ("Where", NULL, 0, 3, in);
        int64_t idx[ZI_MAX_RANK];
        for (int64_t i = 0; i < zi_tensor_count (out); i++) {
            unravel (out, i, idx);
            double want = get (c, bidx (c, out->rank, idx))
                              ? get (x, bidx (x, out->rank, idx))
                              : get (y, bidx (y, out->rank, idx));
            cr_assert_eq (get (out, i), want, "iter %d element %lld", iter,
                          (long long) i);
        }
        zi_tensor_destroy (&c);
        zi_tensor_destroy (&x);
        zi_tensor_destroy (&y);
        zi_tensor_destroy (&out);
    }
}

//  Unary ops -------------------------------------------------------------------

typedef double (*ref1_fn) (double);

static double r_neg (double x) { return -x; }
static double r_recip (double x) { return 1 / x; }
static double r_sign (double x) { return x > 0 ? 1 : (x < 0 ? -1 : 0); }
static double r_relu (double x) { return x > 0 ? x : 0; }
static double r_sigmoid (double x) { return 1 / (1 + exp (-x)); }
static double r_softplus (double x) { return log (1 + exp (x)); }
static double r_softsign (double x) { return x / (1 + fabs (x)); }
static double r_hswish (double x) { return x * fmax (0, fmin (1, x / 6 + 0.5)); }
static double r_gelu (double x) { return 0.5 * x * (1 + erf (x / sqrt (2))); }
static double r_mish (double x) { return x * tanh (log (1 + exp (x))); }
static double r_round (double x) { return nearbyint (x); }

Test (ops_elem, unary_float32_against_libm_double)
{
    struct {
        const char *op;
        ref1_fn ref;
        double lo, hi;
    } ops[] = {
        {"Abs", fabs, -5, 5},         {"Neg", r_neg, -5, 5},
        {"Sqrt", sqrt, 0, 10},        {"Exp", exp, -10, 10},
        {"Log", log, 0.01, 100},      {"Reciprocal", r_recip, 0.1, 10},
        {"Floor", floor, -5, 5},      {"Ceil", ceil, -5, 5},
        {"Round", r_round, -5, 5},    {"Sign", r_sign, -5, 5},
        {"Sin", sin, -6, 6},          {"Cos", cos, -6, 6},
        {"Tan", tan, -1.5, 1.5},      {"Asin", asin, -1, 1},
        {"Acos", acos, -1, 1},        {"Atan", atan, -10, 10},
        {"Sinh", sinh, -5, 5},        {"Cosh", cosh, -5, 5},
        {"Asinh", asinh, -5, 5},      {"Acosh", acosh, 1, 10},
        {"Atanh", atanh, -0.99, 0.99}, {"Erf", erf, -4, 4},
        {"Relu", r_relu, -5, 5},      {"Sigmoid", r_sigmoid, -20, 20},
        {"Tanh", tanh, -10, 10},      {"Softplus", r_softplus, -20, 20},
        {"Softsign", r_softsign, -5, 5}, {"HardSwish", r_hswish, -5, 5},
        {"Gelu", r_gelu, -6, 6},      {"Mish", r_mish, -10, 10},
    };
    int64_t shape[] = {7, 33};  //  odd sizes: vector loops' tails
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        zi_tensor_t *x = rand_f32 (2, shape, ops[o].lo, ops[o].hi);
        ((float *) x->data)[0] = 0.0f;
        if (strcmp (ops[o].op, "Round") == 0) {
            float *v = (float *) x->data;
            v[1] = 2.5f, v[2] = -2.5f, v[3] = 1.5f, v[4] = 0.5f;
        }
        if (ops[o].lo > 0) {
            ((float *) x->data)[0] = (float) ops[o].lo;
        }
        zi_tensor_t *out = run1 (ops[o].op, NULL, 0, x);
        expect_shape (out, 2, shape);
        cr_assert_eq (out->dtype, ZI_DT_F32);
        for (int64_t i = 0; i < zi_tensor_count (x); i++) {
            double want = ops[o].ref (get (x, i));
            cr_assert (close_to (get (out, i), want, 1e-5, 1e-5),
                       "%s(%.9g): got %.9g want %.9g", ops[o].op, get (x, i),
                       get (out, i), want);
        }
        zi_tensor_destroy (&x);
        zi_tensor_destroy (&out);
    }
}

Test (ops_elem, softplus_and_sigmoid_do_not_overflow)
{
    float xv[] = {-200.0f, 200.0f, 88.0f, -88.0f};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){4}, xv);
    zi_tensor_t *sp = run1 ("Softplus", NULL, 0, x);
    zi_tensor_t *sg = run1 ("Sigmoid", NULL, 0, x);
    cr_assert (close_to (get (sp, 0), 0, 1e-30, 0));
    cr_assert_eq (get (sp, 1), 200.0);
    cr_assert (close_to (get (sg, 0), 0, 1e-30, 0));
    cr_assert_eq (get (sg, 1), 1.0);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&sp);
    zi_tensor_destroy (&sg);
}

Test (ops_elem, activations_with_attributes)
{
    float xv[] = {-3.0f, -1.0f, -0.25f, 0.0f, 0.4f, 1.0f, 2.5f, 7.0f};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){8}, xv);
    struct {
        const char *op;
        zi_attr_t attrs[2];
        int n_attr;
    } cases[] = {
        {"LeakyRelu", {attr_f ("alpha", 0.1f)}, 1},
        {"LeakyRelu", {{0}}, 0},
        {"HardSigmoid", {attr_f ("alpha", 0.3f), attr_f ("beta", 0.4f)}, 2},
        {"HardSigmoid", {{0}}, 0},
        {"Elu", {attr_f ("alpha", 2.0f)}, 1},
        {"Selu", {{0}}, 0},
        {"Selu", {attr_f ("alpha", 2.0f), attr_f ("gamma", 3.0f)}, 2},
        {"Celu", {attr_f ("alpha", 2.0f)}, 1},
        {"ThresholdedRelu", {attr_f ("alpha", 0.5f)}, 1},
        {"ThresholdedRelu", {{0}}, 0},
        {"Shrink", {attr_f ("lambd", 1.5f), attr_f ("bias", 0.5f)}, 2},
        {"Gelu", {attr_s ("approximate", "tanh")}, 1},
        {"Gelu", {attr_s ("approximate", "none")}, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        zi_tensor_t *out = run1 (cases[c].op, cases[c].attrs, cases[c].n_attr, x);
        for (int i = 0; i < 8; i++) {
            double v = xv[i], w = 0;
            const char *op = cases[c].op;
            bool has = cases[c].n_attr > 0;
            double a0 = has ? cases[c].attrs[0].f : 0;
            double a1 = cases[c].n_attr > 1 ? cases[c].attrs[1].f : 0;
            if (strcmp (op, "LeakyRelu") == 0) {
                double al = has ? a0 : 0.01;
                w = v < 0 ? al * v : v;
            }
            else if (strcmp (op, "HardSigmoid") == 0) {
                double al = has ? a0 : 0.2, be = has ? a1 : 0.5;
                w = fmax (0, fmin (1, al * v + be));
            }
            else if (strcmp (op, "Elu") == 0) {
                w = v < 0 ? a0 * (exp (v) - 1) : v;
            }
            else if (strcmp (op, "Selu") == 0) {
                double al = has ? a0 : 1.6732632423543772848170429916717;
                double ga = has ? a1 : 1.0507009873554804934193349852946;
                w = v <= 0 ? ga * (al * exp (v) - al) : ga * v;
            }
            else if (strcmp (op, "Celu") == 0) {
                w = fmax (0, v) + fmin (0, a0 * (exp (v / a0) - 1));
            }
            else if (strcmp (op, "ThresholdedRelu") == 0) {
                double al = has ? a0 : 1.0;
                w = v > al ? v : 0;
            }
            else if (strcmp (op, "Shrink") == 0) {
                w = v < -a0 ? v + a1 : (v > a0 ? v - a1 : 0);
            }
            else if (strcmp (op, "Gelu") == 0) {
                if (strcmp (cases[c].attrs[0].s, "tanh") == 0) {
                    w = 0.5 * v
                        * (1 + tanh (sqrt (2 / M_PI) * (v + 0.044715 * v * v * v)));
                }
                else {
                    w = r_gelu (v);
                }
            }
            cr_assert (close_to (get (out, i), w, 1e-5, 1e-5),
                       "%s case %zu (%g): got %.9g want %.9g", op, c, v,
                       get (out, i), w);
        }
        zi_tensor_destroy (&out);
    }
    //  bad attributes are refused at check time
    zi_attr_t g[] = {attr_s ("approximate", "erf")};
    zi_attr_t cz[] = {attr_f ("alpha", 0.0f)};
    zi_attr_t wrong[] = {attr_i ("alpha", 1)};
    const zi_tensor_t *in[1] = {x};
    int rc;
    cr_assert_null (run_op_rc ("Gelu", g, 1, 1, in, &rc));
    cr_assert_eq (rc, ZI_ERR_UNSUPPORTED);
    cr_assert_null (run_op_rc ("Celu", cz, 1, 1, in, &rc));
    cr_assert_eq (rc, ZI_ERR_MALFORMED);
    cr_assert_null (run_op_rc ("LeakyRelu", wrong, 1, 1, in, &rc));
    cr_assert_eq (rc, ZI_ERR_MALFORMED);
    cr_assert (strstr (s_err, "alpha") != NULL, "message names it: %s", s_err);
    zi_tensor_destroy (&x);
}

Test (ops_elem, prelu_slope_broadcasts_unidirectionally)
{
    int64_t xs[] = {2, 3, 2, 2};
    zi_tensor_t *x = rand_f32 (4, xs, -1, 1);
    zi_tensor_t *s = zt_tensor_of (ZI_DT_F32, 3, (int64_t[]){3, 1, 1}, (float[]){0.1f, 0.2f, 0.3f});
    zi_tensor_t *out = run2 ("PRelu", x, s);
    expect_shape (out, 4, xs);
    check_binary ("PRelu", r_prelu, x, s, out);
    //  a slope that would grow X is an error
    zi_tensor_t *big = rand_f32 (5, (int64_t[]){2, 2, 3, 2, 2}, -1, 1);
    const zi_tensor_t *in[2] = {x, big};
    int rc;
    cr_assert_null (run_op_rc ("PRelu", NULL, 0, 2, in, &rc));
    cr_assert_eq (rc, ZI_ERR_SHAPE);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&s);
    zi_tensor_destroy (&out);
    zi_tensor_destroy (&big);
}

Test (ops_elem, integer_unary_ops)
{
    int32_t xv[] = {-7, 0, 5, INT32_MIN, INT32_MAX};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_I32, 1, (int64_t[]){5}, xv);
    zi_tensor_t *ab = run1 ("Abs", NULL, 0, x);
    zi_tensor_t *ng = run1 ("Neg", NULL, 0, x);
    zi_tensor_t *sg = run1 ("Sign", NULL, 0, x);
    zi_tensor_t *re = run1 ("Relu", NULL, 0, x);
    int32_t w_abs[] = {7, 0, 5, INT32_MIN, INT32_MAX};
    int32_t w_neg[] = {7, 0, -5, INT32_MIN, -INT32_MAX};
    int32_t w_sign[] = {-1, 0, 1, -1, 1};
    int32_t w_relu[] = {0, 0, 5, 0, INT32_MAX};
    for (int i = 0; i < 5; i++) {
        cr_assert_eq (((int32_t *) ab->data)[i], w_abs[i]);
        cr_assert_eq (((int32_t *) ng->data)[i], w_neg[i]);
        cr_assert_eq (((int32_t *) sg->data)[i], w_sign[i]);
        cr_assert_eq (((int32_t *) re->data)[i], w_relu[i]);
    }
    //  float-only ops refuse integers by name
    const zi_tensor_t *in[1] = {x};
    int rc;
    cr_assert_null (run_op_rc ("Sqrt", NULL, 0, 1, in, &rc));
    cr_assert_eq (rc, ZI_ERR_UNSUPPORTED);
    cr_assert (strstr (s_err, "int32") != NULL, "%s", s_err);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&ab);
    zi_tensor_destroy (&ng);
    zi_tensor_destroy (&sg);
    zi_tensor_destroy (&re);
}

//  Clip --------------------------------------------------------------------------

Test (ops_elem, clip_attributes_before_opset_11)
{
    float xv[] = {-3, -1, 0, 1, 3, INFINITY};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){6}, xv);
    zi_attr_t at[] = {attr_i ("__opset", 6), attr_f ("min", -1.5f),
                      attr_f ("max", 2.0f)};
    zi_tensor_t *out = run1 ("Clip", at, 3, x);
    float want[] = {-1.5f, -1, 0, 1, 2, 2};
    for (int i = 0; i < 6; i++) {
        cr_assert_eq (get (out, i), want[i]);
    }
    zi_tensor_destroy (&out);
    //  without attributes: the float limits
    zi_tensor_t *o2 = run1 ("Clip", at, 1, x);
    cr_assert_eq (get (o2, 5), FLT_MAX);
    cr_assert_eq (get (o2, 0), -3);
    zi_tensor_destroy (&o2);
    zi_tensor_destroy (&x);
}

Test (ops_elem, clip_inputs_from_opset_11)
{
    float xv[] = {-3, -1, 0, 1, 3, NAN};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){6}, xv);
    zi_tensor_t *lo = zt_tensor_of (ZI_DT_F32, 0, NULL, (float[]){-2});
    zi_tensor_t *hi = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){1}, (float[]){0.5f});
    zi_attr_t at[] = {attr_i ("__opset", 13)};
    //  both bounds
    const zi_tensor_t *in3[3] = {x, lo, hi};
    zi_tensor_t *o = run_op ("Clip", at, 1, 3, in3);
    float w[] = {-2, -1, 0, 0.5f, 0.5f};
    for (int i = 0; i < 5; i++) {
        cr_assert_eq (get (o, i), w[i]);
    }
    cr_assert (isnan (get (o, 5)));
    zi_tensor_destroy (&o);
    //  only max (min omitted with "")
    const zi_tensor_t *in_max[3] = {x, NULL, hi};
    o = run_op ("Clip", at, 1, 3, in_max);
    cr_assert_eq (get (o, 0), -3);
    cr_assert_eq (get (o, 4), 0.5f);
    zi_tensor_destroy (&o);
    //  no bounds: identity
    const zi_tensor_t *in1[1] = {x};
    o = run_op ("Clip", at, 1, 1, in1);
    cr_assert_eq (get (o, 0), -3);
    cr_assert_eq (get (o, 4), 3);
    zi_tensor_destroy (&o);
    //  min > max: everything becomes max
    const zi_tensor_t *swapped[3] = {x, hi, lo};
    o = run_op ("Clip", at, 1, 3, swapped);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq (get (o, i), -2);
    }
    zi_tensor_destroy (&o);
    //  integer Clip
    zi_tensor_t *xi = zt_tensor_of (ZI_DT_I32, 1, (int64_t[]){4}, (int32_t[]){-100, -5, 5, 100});
    zi_tensor_t *li = zt_tensor_of (ZI_DT_I32, 0, NULL, (int32_t[]){-10});
    const zi_tensor_t *ini[2] = {xi, li};
    o = run_op ("Clip", at, 1, 2, ini);
    int32_t wi[] = {-10, -5, 5, 100};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq (((int32_t *) o->data)[i], wi[i]);
    }
    zi_tensor_destroy (&o);
    //  a non-scalar bound or a dtype mismatch is an error
    zi_tensor_t *vec = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){2}, (float[]){0, 1});
    const zi_tensor_t *badv[2] = {x, vec};
    const zi_tensor_t *badt[2] = {x, li};
    int rc;
    cr_assert_null (run_op_rc ("Clip", at, 1, 2, badv, &rc));
    cr_assert_eq (rc, ZI_ERR_SHAPE);
    cr_assert_null (run_op_rc ("Clip", at, 1, 2, badt, &rc));
    cr_assert_eq (rc, ZI_ERR_SHAPE);
    zi_tensor_destroy (&vec);
    zi_tensor_destroy (&xi);
    zi_tensor_destroy (&li);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&lo);
    zi_tensor_destroy (&hi);
}

//  Logic and comparisons -----------------------------------------------------------

Test (ops_elem, logic_ops_on_bool_with_broadcast)
{
    zi_tensor_t *a = zt_tensor_of (ZI_DT_BOOL, 2, (int64_t[]){2, 2}, (uint8_t[]){0, 0, 1, 1});
    zi_tensor_t *b = zt_tensor_of (ZI_DT_BOOL, 1, (int64_t[]){2}, (uint8_t[]){0, 1});
    zi_tensor_t *an = run2 ("And", a, b);
    zi_tensor_t *orr = run2 ("Or", a, b);
    zi_tensor_t *xr = run2 ("Xor", a, b);
    zi_tensor_t *no = run1 ("Not", NULL, 0, a);
    zi_tensor_t *eq = run2 ("Equal", a, b);
    uint8_t w_and[] = {0, 0, 0, 1}, w_or[] = {0, 1, 1, 1}, w_xor[] = {0, 1, 1, 0};
    uint8_t w_not[] = {1, 1, 0, 0}, w_eq[] = {1, 0, 0, 1};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq (((uint8_t *) an->data)[i], w_and[i]);
        cr_assert_eq (((uint8_t *) orr->data)[i], w_or[i]);
        cr_assert_eq (((uint8_t *) xr->data)[i], w_xor[i]);
        cr_assert_eq (((uint8_t *) no->data)[i], w_not[i]);
        cr_assert_eq (((uint8_t *) eq->data)[i], w_eq[i]);
    }
    cr_assert_eq (an->dtype, ZI_DT_BOOL);
    //  And on floats is refused
    zi_tensor_t *f = rand_f32 (1, (int64_t[]){2}, 0, 1);
    const zi_tensor_t *in[2] = {f, f};
    int rc;
    cr_assert_null (run_op_rc ("And", NULL, 0, 2, in, &rc));
    cr_assert_eq (rc, ZI_ERR_UNSUPPORTED);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&an);
    zi_tensor_destroy (&orr);
    zi_tensor_destroy (&xr);
    zi_tensor_destroy (&no);
    zi_tensor_destroy (&eq);
    zi_tensor_destroy (&f);
}

Test (ops_elem, int64_comparisons)
{
    zi_tensor_t *a = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){4}, (int64_t[]){1, 5, -3, INT64_MAX});
    zi_tensor_t *b = zt_tensor_of (ZI_DT_I64, 0, NULL, (int64_t[]){1});
    zi_tensor_t *lt = run2 ("Less", a, b);
    zi_tensor_t *ge = run2 ("GreaterOrEqual", a, b);
    zi_tensor_t *eq = run2 ("Equal", a, b);
    uint8_t w_lt[] = {0, 0, 1, 0}, w_ge[] = {1, 1, 0, 1}, w_eq[] = {1, 0, 0, 0};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq (((uint8_t *) lt->data)[i], w_lt[i]);
        cr_assert_eq (((uint8_t *) ge->data)[i], w_ge[i]);
        cr_assert_eq (((uint8_t *) eq->data)[i], w_eq[i]);
    }
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&lt);
    zi_tensor_destroy (&ge);
    zi_tensor_destroy (&eq);
}

Test (ops_elem, bitshift_unsigned)
{
    zi_tensor_t *a = zt_tensor_of (ZI_DT_U8, 1, (int64_t[]){4}, NULL);
    zi_tensor_t *b = zt_tensor_of (ZI_DT_U8, 1, (int64_t[]){4}, NULL);
    uint8_t av[] = {16, 4, 1, 255}, bv[] = {1, 2, 3, 9};
    memcpy (a->data, av, 4);
    memcpy (b->data, bv, 4);
    zi_attr_t l[] = {attr_s ("direction", "LEFT")};
    zi_attr_t r[] = {attr_s ("direction", "RIGHT")};
    const zi_tensor_t *in[2] = {a, b};
    zi_tensor_t *ol = run_op ("BitShift", l, 1, 2, in);
    zi_tensor_t *orr = run_op ("BitShift", r, 1, 2, in);
    uint8_t wl[] = {32, 16, 8, 0}, wr[] = {8, 1, 0, 0};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq (((uint8_t *) ol->data)[i], wl[i]);
        cr_assert_eq (((uint8_t *) orr->data)[i], wr[i]);
    }
    int rc;
    cr_assert_null (run_op_rc ("BitShift", NULL, 0, 2, in, &rc));
    cr_assert_eq (rc, ZI_ERR_MALFORMED);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&ol);
    zi_tensor_destroy (&orr);
}

Test (ops_elem, isnan_isinf)
{
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){4}, (float[]){NAN, INFINITY, -INFINITY, 1});
    zi_tensor_t *n = run1 ("IsNaN", NULL, 0, x);
    zi_tensor_t *i = run1 ("IsInf", NULL, 0, x);
    zi_attr_t pos[] = {attr_i ("detect_negative", 0)};
    zi_tensor_t *ip = run1 ("IsInf", pos, 1, x);
    uint8_t wn[] = {1, 0, 0, 0}, wi[] = {0, 1, 1, 0}, wp[] = {0, 1, 0, 0};
    for (int k = 0; k < 4; k++) {
        cr_assert_eq (((uint8_t *) n->data)[k], wn[k]);
        cr_assert_eq (((uint8_t *) i->data)[k], wi[k]);
        cr_assert_eq (((uint8_t *) ip->data)[k], wp[k]);
    }
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&n);
    zi_tensor_destroy (&i);
    zi_tensor_destroy (&ip);
}

//  Cast ---------------------------------------------------------------------------

static zi_tensor_t *
cast (const zi_tensor_t *x, zi_dtype_t to)
{
    zi_attr_t at[] = {attr_i ("to", to)};
    return run1 ("Cast", at, 1, x);
}

Test (ops_elem, cast_float_to_int_truncates_and_saturates)
{
    float xv[] = {1.9f, -1.9f, 0.5f, -0.5f, 1e20f, -1e20f, NAN, 300.0f};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){8}, xv);
    zi_tensor_t *i64 = cast (x, ZI_DT_I64);
    cr_assert_eq (i64->dtype, ZI_DT_I64);
    int64_t w[] = {1, -1, 0, 0, INT64_MAX, INT64_MIN, 0, 300};
    for (int i = 0; i < 8; i++) {
        cr_assert_eq (((int64_t *) i64->data)[i], w[i], "element %d", i);
    }
    zi_tensor_t *i32 = cast (x, ZI_DT_I32);
    cr_assert_eq (((int32_t *) i32->data)[0], 1);
    cr_assert_eq (((int32_t *) i32->data)[1], -1);
    zi_tensor_t *u8 = cast (x, ZI_DT_U8);
    cr_assert_eq (((uint8_t *) u8->data)[1], 255);    //  -1 wraps
    cr_assert_eq (((uint8_t *) u8->data)[7], 44);     //  300 wraps
    zi_tensor_t *b = cast (x, ZI_DT_BOOL);
    uint8_t wb[] = {1, 1, 1, 1, 1, 1, 1, 1};
    for (int i = 0; i < 8; i++) {
        cr_assert_eq (((uint8_t *) b->data)[i], wb[i]);
    }
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&i64);
    zi_tensor_destroy (&i32);
    zi_tensor_destroy (&u8);
    zi_tensor_destroy (&b);
}

Test (ops_elem, cast_round_trips_between_all_dtypes)
{
    //  small integers survive every dtype
    float xv[] = {0, 1, 2, 3, 7, 100, 127, 0};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 2, (int64_t[]){2, 4}, xv);
    zi_dtype_t dts[] = {ZI_DT_F32, ZI_DT_F64, ZI_DT_F16, ZI_DT_BF16,
                        ZI_DT_I8,  ZI_DT_U8,  ZI_DT_I16, ZI_DT_U16,
                        ZI_DT_I32, ZI_DT_U32, ZI_DT_I64, ZI_DT_U64};
    size_t nd = sizeof dts / sizeof dts[0];
    for (size_t i = 0; i < nd; i++) {
        for (size_t j = 0; j < nd; j++) {
            zi_tensor_t *a = cast (x, dts[i]);
            zi_tensor_t *b = cast (a, dts[j]);
            zi_tensor_t *c = cast (b, ZI_DT_F32);
            expect_shape (b, 2, (int64_t[]){2, 4});
            cr_assert_eq (b->dtype, dts[j]);
            for (int k = 0; k < 8; k++) {
                cr_assert_eq (((float *) c->data)[k], xv[k], "%s -> %s",
                              zi_dtype_name (dts[i]), zi_dtype_name (dts[j]));
            }
            zi_tensor_destroy (&a);
            zi_tensor_destroy (&b);
            zi_tensor_destroy (&c);
        }
    }
    zi_tensor_destroy (&x);
}

Test (ops_elem, cast_halves_bool_and_large_ints)
{
    float xv[] = {0.1f, 65504.0f, 1e6f, -2.5f};
    zi_tensor_t *x = zt_tensor_of (ZI_DT_F32, 1, (int64_t[]){4}, xv);
    zi_tensor_t *h = cast (x, ZI_DT_F16);
    cr_assert_eq (((uint16_t *) h->data)[0], zi_f32_to_f16 (0.1f));
    cr_assert_eq (((uint16_t *) h->data)[2], 0x7c00);     //  +inf
    zi_tensor_t *bf = cast (x, ZI_DT_BF16);
    //  0.1f = 0x3dcccccd: rounds up to 0x3dcd
    cr_assert_eq (((uint16_t *) bf->data)[0], 0x3dcd);
    cr_assert_eq (((uint16_t *) bf->data)[3], 0xc020);
    //  int64 beyond 2^53 keeps its bits through int64 / uint64
    int64_t big = (1LL << 62) + 1;
    zi_tensor_t *l = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){1}, &big);
    zi_tensor_t *u = cast (l, ZI_DT_U64);
    zi_tensor_t *back = cast (u, ZI_DT_I64);
    cr_assert_eq (((int64_t *) back->data)[0], big);
    //  bool -> float, int -> bool
    zi_tensor_t *bb = zt_tensor_of (ZI_DT_BOOL, 1, (int64_t[]){2}, (uint8_t[]){0, 1});
    zi_tensor_t *bf32 = cast (bb, ZI_DT_F32);
    cr_assert_eq (get (bf32, 0), 0);
    cr_assert_eq (get (bf32, 1), 1);
    zi_tensor_t *ib = cast (l, ZI_DT_BOOL);
    cr_assert_eq (((uint8_t *) ib->data)[0], 1);
    //  CastLike takes the dtype from its second input
    const zi_tensor_t *in[2] = {x, l};
    zi_tensor_t *cl = run_op ("CastLike", NULL, 0, 2, in);
    cr_assert_eq (cl->dtype, ZI_DT_I64);
    cr_assert_eq (((int64_t *) cl->data)[3], -2);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&h);
    zi_tensor_destroy (&bf);
    zi_tensor_destroy (&l);
    zi_tensor_destroy (&u);
    zi_tensor_destroy (&back);
    zi_tensor_destroy (&bb);
    zi_tensor_destroy (&bf32);
    zi_tensor_destroy (&ib);
    zi_tensor_destroy (&cl);
}

Test (ops_elem, cast_rejects_string_and_unknown_targets)
{
    zi_tensor_t *x = rand_f32 (1, (int64_t[]){2}, 0, 1);
    const zi_tensor_t *in[1] = {x};
    int64_t bad[] = {ZI_DT_STRING, 0, 999, -1, 17};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        zi_attr_t at[] = {attr_i ("to", bad[i])};
        int rc;
        cr_assert_null (run_op_rc ("Cast", at, 1, 1, in, &rc));
        cr_assert_eq (rc, ZI_ERR_UNSUPPORTED, "to=%lld", (long long) bad[i]);
    }
    zi_attr_t at[] = {attr_i ("to", ZI_DT_STRING)};
    int rc;
    run_op_rc ("Cast", at, 1, 1, in, &rc);
    cr_assert (strstr (s_err, "string") != NULL, "%s", s_err);
    cr_assert_null (run_op_rc ("Cast", NULL, 0, 1, in, &rc));
    cr_assert_eq (rc, ZI_ERR_MALFORMED);
    zi_tensor_destroy (&x);
}

//  float16 inputs, errors ------------------------------------------------------------

Test (ops_elem, float16_inputs_compute_in_float32)
{
    zi_tensor_t *a = zt_tensor_of (ZI_DT_F16, 2, (int64_t[]){2, 3}, NULL);
    zi_tensor_t *b = zt_tensor_of (ZI_DT_F16, 1, (int64_t[]){3}, NULL);
    float av[] = {1, 2, 3, -4, 0.5f, 6}, bv[] = {0.25f, 10, -1};
    for (int i = 0; i < 6; i++) {
        ((uint16_t *) a->data)[i] = zi_f32_to_f16 (av[i]);
    }
    for (int i = 0; i < 3; i++) {
        ((uint16_t *) b->data)[i] = zi_f32_to_f16 (bv[i]);
    }
    zi_tensor_t *s = run2 ("Add", a, b);
    cr_assert_eq (s->dtype, ZI_DT_F16);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq (get (s, i), av[i] + bv[i % 3]);
    }
    zi_tensor_t *mx = run2 ("Max", a, b);
    cr_assert_eq (mx->dtype, ZI_DT_F16);
    cr_assert_eq (get (mx, 3), 0.25);
    zi_tensor_t *lt = run2 ("Less", a, b);
    cr_assert_eq (lt->dtype, ZI_DT_BOOL);
    cr_assert_eq (get (lt, 2), 0);
    cr_assert_eq (get (lt, 3), 1);
    zi_tensor_t *r = run1 ("Relu", NULL, 0, a);
    cr_assert_eq (get (r, 3), 0);
    cr_assert_eq (get (r, 4), 0.5);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&s);
    zi_tensor_destroy (&mx);
    zi_tensor_destroy (&lt);
    zi_tensor_destroy (&r);
}

Test (ops_elem, bad_shapes_and_dtypes_are_errors)
{
    zi_tensor_t *a = rand_f32 (1, (int64_t[]){3}, 0, 1);
    zi_tensor_t *b = rand_f32 (1, (int64_t[]){4}, 0, 1);
    zi_tensor_t *c = zt_tensor_of (ZI_DT_I64, 1, (int64_t[]){3}, (int64_t[]){1, 2, 3});
    const zi_tensor_t *ab[2] = {a, b};
    const zi_tensor_t *ac[2] = {a, c};
    int rc;
    cr_assert_null (run_op_rc ("Add", NULL, 0, 2, ab, &rc));
    cr_assert_eq (rc, ZI_ERR_SHAPE);
    cr_assert (strstr (s_err, "[3]") && strstr (s_err, "[4]"), "%s", s_err);
    cr_assert (strstr (s_err, "node 't' (Add)") != NULL, "%s", s_err);
    cr_assert_null (run_op_rc ("Mul", NULL, 0, 2, ac, &rc));
    cr_assert_eq (rc, ZI_ERR_SHAPE);
    const zi_tensor_t *abb[3] = {a, b, b};
    cr_assert_null (run_op_rc ("Sum", NULL, 0, 3, abb, &rc));
    cr_assert_eq (rc, ZI_ERR_SHAPE);
    //  wrong input count is caught before the kernel
    const zi_tensor_t *aa[2] = {a, a};
    cr_assert_null (run_op_rc ("Add", NULL, 0, 1, aa, &rc));
    cr_assert_eq (rc, ZI_ERR_MALFORMED);
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&c);
}

Test (ops_elem, empty_tensors_run_without_touching_data)
{
    zi_tensor_t *a = rand_f32 (2, (int64_t[]){0, 4}, 0, 1);
    zi_tensor_t *b = rand_f32 (1, (int64_t[]){4}, 0, 1);
    zi_tensor_t *s = run2 ("Add", a, b);
    expect_shape (s, 2, (int64_t[]){0, 4});
    zi_tensor_t *e = run1 ("Exp", NULL, 0, a);
    expect_shape (e, 2, (int64_t[]){0, 4});
    zi_tensor_t *c = cast (a, ZI_DT_I64);
    expect_shape (c, 2, (int64_t[]){0, 4});
    zi_tensor_destroy (&a);
    zi_tensor_destroy (&b);
    zi_tensor_destroy (&s);
    zi_tensor_destroy (&e);
    zi_tensor_destroy (&c);
}
