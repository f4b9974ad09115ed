/*  zi_ops.c - operator registry and helpers shared by the kernels. */
#include "zi_ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const zi_op_def_t *const s_tables[] = {
    zi_ops_nn, zi_ops_elem, zi_ops_shape, zi_ops_reduce,
};
#define S_NTABLES (sizeof s_tables / sizeof s_tables[0])

static bool
s_domain_is_default (const char *domain)
{
    return !domain || !*domain || strcmp (domain, "ai.onnx") == 0;
}

const zi_op_def_t *
zi_op_find (const char *op_type, const char *domain)
{
    if (!op_type) {
        return NULL;
    }
    bool dflt = s_domain_is_default (domain);
    for (size_t t = 0; t < S_NTABLES; t++) {
        for (const zi_op_def_t *op = s_tables[t]; op->name; op++) {
            bool op_dflt = s_domain_is_default (op->domain);
            if (strcmp (op->name, op_type) == 0
                && (dflt ? op_dflt : (!op_dflt && strcmp (op->domain, domain) == 0))) {
                return op;
            }
        }
    }
    return NULL;
}

void
zi_op_foreach (void (*fn) (const zi_op_def_t *op, void *arg), void *arg)
{
    for (size_t t = 0; t < S_NTABLES; t++) {
        for (const zi_op_def_t *op = s_tables[t]; op->name; op++) {
            fn (op, arg);
        }
    }
}

int
zi_op_check_node (const zi_node_t *node, char *err, size_t errlen)
{
    const zi_op_def_t *op = node->op ? node->op
                                     : zi_op_find (node->op_type, node->domain);
    if (!op) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                        "node '%s': unsupported op %s%s%s", node->name,
                        *node->domain ? node->domain : "",
                        *node->domain ? "." : "", node->op_type);
    }
    //  ONNX lets trailing optional inputs be absent and middle ones be "".
    if (node->n_in < op->min_inputs || node->n_in > op->max_inputs) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "node '%s' (%s): has %d inputs, expects %d to %d",
                        node->name, node->op_type, node->n_in, op->min_inputs,
                        op->max_inputs);
    }
    for (int i = 0; i < op->min_inputs; i++) {
        if (node->in[i] < 0) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "node '%s' (%s): required input %d is empty",
                            node->name, node->op_type, i);
        }
    }
    if (node->n_out < op->min_outputs || node->n_out > op->max_outputs) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "node '%s' (%s): has %d outputs, expects %d to %d",
                        node->name, node->op_type, node->n_out,
                        op->min_outputs, op->max_outputs);
    }
    //  "" names an omitted output: only optional ones may be (the kernels
    //  write the required ones without looking).
    for (int i = 0; i < op->min_outputs; i++) {
        if (node->out[i] < 0) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "node '%s' (%s): required output %d is empty",
                            node->name, node->op_type, i);
        }
    }
    if (op->check) {
        return op->check (node, err, errlen);
    }
    return ZI_OK;
}

int
zi_op_fail (zi_kctx_t *ctx, int code, const char *fmt, ...)
{
    if (ctx->err && ctx->errlen > 0) {
        int pos = snprintf (ctx->err, ctx->errlen, "node '%s' (%s): ",
                            ctx->node ? ctx->node->name : "?",
                            ctx->node ? ctx->node->op_type : "?");
        if (pos >= 0 && (size_t) pos < ctx->errlen) {
            va_list ap;
            va_start (ap, fmt);
            vsnprintf (ctx->err + pos, ctx->errlen - (size_t) pos, fmt, ap);
            va_end (ap);
        }
    }
    return code;
}

int
zi_op_read_ints (const zi_tensor_t *t, int64_t *out, int cap, int *n)
{
    if (!t) {
        return ZI_OP_NEEDS_VALUE;
    }
    int64_t count = zi_tensor_count (t);
    if (count == 0) {
        *n = 0;         //  an empty tensor's value is known without data
        return ZI_OK;
    }
    if (!t->data) {
        return ZI_OP_NEEDS_VALUE;
    }
    if (count > cap) {
        return ZI_ERR_LIMIT;
    }
    for (int64_t i = 0; i < count; i++) {
        if (t->dtype == ZI_DT_I64) {
            out[i] = ((const int64_t *) t->data)[i];
        }
        else if (t->dtype == ZI_DT_I32) {
            out[i] = ((const int32_t *) t->data)[i];
        }
        else {
            return ZI_ERR_SHAPE;
        }
    }
    *n = (int) count;
    return ZI_OK;
}

int
zi_broadcast_shape (int ra, const int64_t *a, int rb, const int64_t *b,
                    int *rout, int64_t *out)
{
    int r = ra > rb ? ra : rb;
    if (r > ZI_MAX_RANK) {
        return ZI_ERR_LIMIT;
    }
    for (int i = 0; i < r; i++) {
        //  align from the innermost dimension, as numpy does
        int ia = i - (r - ra), ib = i - (r - rb);
        int64_t da = ia >= 0 ? a[ia] : 1;
        int64_t db = ib >= 0 ? b[ib] : 1;
        if (da == db || db == 1) {
            out[i] = da;
        }
        else if (da == 1) {
            out[i] = db;
        }
        else {
            return ZI_ERR_SHAPE;
        }
    }
    *rout = r;
    return ZI_OK;
}

int
zi_axis_normalize (int64_t axis, int rank, int *out)
{
    if (axis < -rank || axis >= (rank > 0 ? rank : 1)) {
        return ZI_ERR_INVALID;
    }
    *out = (int) (axis < 0 ? axis + rank : axis);
    return ZI_OK;
}
