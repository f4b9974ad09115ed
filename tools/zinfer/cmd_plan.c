/*  zinfer plan - cut a model into segments for the replicas that will serve
    them, and write the plan file every process of the pipeline starts from.

        zinfer plan MODEL.onnx -o plan.json
            [--replica SEG@HOST:R[:CREDIT[:THREADS]]]...   exec replicas
            [--segments K]                  K segments, one replica each
            [--host NAME=ADDRESS]...        hosts (default local=127.0.0.1)
            [--broker-host NAME] [--port BASE | --ipc DIR]
            [--batch N]                     batch the costs are estimated at
            [--calibrate RUNS]              measure node times instead
            [--input-dtype DT] [--input-shape D,D,...]   what clients send
            [--pre OP]... [--post OP]...    preprocess / aggregate ops
            [--micro-batch N] [--max-batch N] [--max-delay-us N]
            [--tolerance F] [--explain]
            [--client-shm]                  local clients' inputs by reference

    Cuts are chosen so that each segment's cost is proportional to the summed
    capacity of its replicas (zi_planner.h), and only where every tensor
    that crosses the cut carries the batch axis (zi_planner_safe_cuts). --explain prints the segments
    as a table with their cost shares.
*/
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zi_exec.h"
#include "zi_onnx.h"
#include "zi_plan.h"
#include "zi_planner.h"
#include "zi_split.h"
#include "zinfer.h"

#define S_MAX 256
//  Tasks an exec replica holds in flight unless --replica says otherwise.
#define S_DEFAULT_CREDIT 2
//  A split is kept when it lowers the bottleneck's share of the work by more than this.
#define S_SPLIT_GAIN 0.03

typedef struct {
    int seg;
    char host[65];
    double capacity;
    long credit;
    long threads;
} s_replica_arg_t;

static void
s_plan_usage (FILE *out)
{
    fprintf (out,
"usage: zinfer plan MODEL.onnx -o PLAN.json [options]\n"
"\n"
"Cuts MODEL into segments balanced for the capacities of the replicas that\n"
"serve them, and writes the plan file every pipeline process starts from.\n"
"\n"
"  --replica SEG@HOST:R[:CREDIT[:THREADS]]\n"
"                        an exec replica of segment SEG on HOST with capacity R\n"
"                        (repeat; segments are 0..K-1); CREDIT defaults to 2\n"
"                        (the next task waits at the worker while it runs one)\n"
"  --segments K          K segments with one replica of capacity 1 each\n"
"  --host NAME=ADDRESS   a host (repeat; default local=127.0.0.1)\n"
"  --broker-host NAME    where the broker runs (default: the first host)\n"
"  --port BASE           tcp endpoints on ports BASE..BASE+7 (default 5555)\n"
"  --ipc DIR             ipc endpoints in DIR (all processes on one host)\n"
"  --batch N             batch size for the cost estimates (default 16)\n"
"  --calibrate RUNS      time every node over RUNS runs and cut on that\n"
"  --input-dtype DT      dtype clients send (default: the model's)\n"
"  --input-shape D,...   shape clients send, -1 for the batch (default: model's)\n"
"  --pre OP              preprocess op: cast=DT, scale=F, normalize=M,M/S,S,\n"
"                        hwc_to_chw, resize=HxW[:nearest], pad=P,P,...[:V]\n"
"                        (without --pre, and with the model's dtype and\n"
"                        shape, the plan has no preprocess stage: the\n"
"                        broker checks requests against the model itself)\n"
"  --post OP             aggregate op: softmax, argmax, topk=K\n"
"  --micro-batch N       rows per task when splitting a batch (default 16)\n"
"  --client-shm          let clients on this host send their inputs as\n"
"                        references to their own shared memory (with --ipc;\n"
"                        see broker.client_shm in schemas/PLAN.md: only when\n"
"                        every process that can reach the front is trusted)\n"
"  --shm MB              shared-memory arena per exec worker for the tensors it\n"
"                        hands to the next segment (with --ipc; default 64,\n"
"                        0 = through the sockets)\n"
"  --max-batch N         rows per task when coalescing (default 64)\n"
"  --max-delay-us N      longest wait to coalesce requests (default 2000)\n"
"  --tolerance F         accept cuts F worse than the best for smaller\n"
"                        crossing tensors (default 0.05)\n"
"  --no-split            cut between whole layers only (default: a layer the\n"
"                        cuts cannot balance is split along its output\n"
"                        channels across the boundary, see model.splits)\n"
"  --split-axis A        auto (default: for a convolution, channels or rows,\n"
"                        whichever gives the lower bottleneck), channels, rows\n"
"  --explain             print the segments as a table\n");
}

static int
s_parse_long (const char *text, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol (text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

static int
s_parse_double (const char *text, double *out)
{
    char *end;
    errno = 0;
    double v = strtod (text, &end);
    if (errno || end == text || *end || !isfinite (v)) {
        return -1;
    }
    *out = v;
    return 0;
}

//  "SEG@HOST:R[:CREDIT[:THREADS]]"
static int
s_parse_replica (const char *text, s_replica_arg_t *r, char *err, size_t errlen)
{
    char buf[256];
    snprintf (buf, sizeof buf, "%s", text);
    char *at = strchr (buf, '@');
    char *colon = at ? strchr (at, ':') : NULL;
    if (!at || !colon) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "--replica '%s': expected "
                        "SEG@HOST:CAPACITY[:CREDIT[:THREADS]]", text);
    }
    *at = 0;
    *colon = 0;
    long seg;
    if (s_parse_long (buf, 0, S_MAX - 1, &seg)) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "--replica '%s': segment '%s' is not "
                        "an integer in 0..%d", text, buf, S_MAX - 1);
    }
    if (!at[1] || strlen (at + 1) > 64) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "--replica '%s': bad host name", text);
    }
    snprintf (r->host, sizeof r->host, "%s", at + 1);
    char *fields[3] = {colon + 1, NULL, NULL};
    for (int i = 0; i < 2; i++) {
        char *c = strchr (fields[i], ':');
        if (!c) {
            break;
        }
        *c = 0;
        fields[i + 1] = c + 1;
    }
    r->seg = (int) seg;
    //  Credit 2 by default: a worker holds its next task while it runs one,
    //  so it never idles for a round trip through the broker (with credit
    //  1 a segment-bound pipeline lost ~25% of its throughput that way).
    r->credit = S_DEFAULT_CREDIT;
    r->threads = 1;
    if (s_parse_double (fields[0], &r->capacity) || !(r->capacity > 0)) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "--replica '%s': capacity '%s' must be "
                        "a positive number", text, fields[0]);
    }
    if (fields[1] && s_parse_long (fields[1], 1, 1024, &r->credit)) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "--replica '%s': credit '%s' must be "
                        "an integer in 1..1024", text, fields[1]);
    }
    if (fields[2] && s_parse_long (fields[2], 1, 256, &r->threads)) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "--replica '%s': threads '%s' must be "
                        "an integer in 1..256", text, fields[2]);
    }
    return ZI_OK;
}

//  Parse a comma-separated list of numbers into a malloc'ed array.
static int
s_parse_list (const char *text, double **out, size_t *n)
{
    size_t cap = 1;
    for (const char *p = text; *p; p++) {
        cap += *p == ',';
    }
    double *v = (double *) calloc (cap, sizeof *v);
    if (!v) {
        return -1;
    }
    char buf[1024];
    snprintf (buf, sizeof buf, "%s", text);
    size_t k = 0;
    char *save = NULL;
    for (char *tok = strtok_r (buf, ",", &save); tok; tok = strtok_r (NULL, ",", &save)) {
        if (k == cap || s_parse_double (tok, &v[k])) {
            free (v);
            return -1;
        }
        k++;
    }
    if (k == 0) {
        free (v);
        return -1;
    }
    *out = v;
    *n = k;
    return 0;
}

//  One --pre / --post op into a plan op.
static int
s_parse_op (const char *text, bool post, zi_plan_op_t *op, char *err, size_t errlen)
{
    memset (op, 0, sizeof *op);
    op->axis = -1;
    char name[64];
    const char *eq = strchr (text, '=');
    size_t nlen = eq ? (size_t) (eq - text) : strlen (text);
    if (nlen >= sizeof name) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "op '%s': unknown", text);
    }
    memcpy (name, text, nlen);
    name[nlen] = 0;
    const char *arg = eq ? eq + 1 : NULL;
    if (post) {
        if (strcmp (name, "softmax") == 0 && !arg) {
            op->kind = ZI_PLAN_OP_SOFTMAX;
        }
        else if (strcmp (name, "argmax") == 0 && !arg) {
            op->kind = ZI_PLAN_OP_ARGMAX;
        }
        else if (strcmp (name, "topk") == 0 && arg) {
            long k;
            if (s_parse_long (arg, 1, 1 << 20, &k)) {
                return zi_fail (err, errlen, ZI_ERR_INVALID, "--post topk=K: K must be a "
                                "positive integer");
            }
            op->kind = ZI_PLAN_OP_TOPK;
            op->k = k;
        }
        else {
            return zi_fail (err, errlen, ZI_ERR_INVALID, "--post '%s': expected softmax, "
                            "argmax or topk=K", text);
        }
        return ZI_OK;
    }
    if (strcmp (name, "cast") == 0 && arg) {
        op->kind = ZI_PLAN_OP_CAST;
        op->to = zi_dtype_from_name (arg);
        if (!zi_dtype_valid (op->to)) {
            return zi_fail (err, errlen, ZI_ERR_INVALID, "--pre cast=%s: unknown dtype", arg);
        }
    }
    else if (strcmp (name, "scale") == 0 && arg) {
        op->kind = ZI_PLAN_OP_SCALE;
        if (s_parse_double (arg, &op->factor)) {
            return zi_fail (err, errlen, ZI_ERR_INVALID, "--pre scale=%s: not a number", arg);
        }
    }
    else if (strcmp (name, "normalize") == 0 && arg && strchr (arg, '/')) {
        op->kind = ZI_PLAN_OP_NORMALIZE;
        char buf[1024];
        snprintf (buf, sizeof buf, "%s", arg);
        char *slash = strchr (buf, '/');
        *slash = 0;
        if (s_parse_list (buf, &op->mean, &op->n_mean)
            || s_parse_list (slash + 1, &op->std, &op->n_std) || op->n_mean != op->n_std) {
            return zi_fail (err, errlen, ZI_ERR_INVALID, "--pre normalize=%s: expected "
                            "MEAN,MEAN,.../STD,STD,... of equal length", arg);
        }
    }
    else if (strcmp (name, "hwc_to_chw") == 0 && !arg) {
        op->kind = ZI_PLAN_OP_HWC_TO_CHW;
    }
    else if (strcmp (name, "resize") == 0 && arg) {
        op->kind = ZI_PLAN_OP_RESIZE;
        char mode[32] = "";
        long h, w;
        char buf[128];
        snprintf (buf, sizeof buf, "%s", arg);
        char *colon = strchr (buf, ':');
        if (colon) {
            snprintf (mode, sizeof mode, "%s", colon + 1);
            *colon = 0;
        }
        char *x = strchr (buf, 'x');
        if (!x) {
            return zi_fail (err, errlen, ZI_ERR_INVALID, "--pre resize=%s: expected HxW", arg);
        }
        *x = 0;
        if (s_parse_long (buf, 1, 1 << 16, &h) || s_parse_long (x + 1, 1, 1 << 16, &w)) {
            return zi_fail (err, errlen, ZI_ERR_INVALID, "--pre resize=%s: expected HxW", arg);
        }
        op->height = h;
        op->width = w;
        op->mode = strcmp (mode, "nearest") == 0 ? ZI_PLAN_RESIZE_NEAREST
                                                 : ZI_PLAN_RESIZE_BILINEAR;
        if (*mode && strcmp (mode, "nearest") && strcmp (mode, "bilinear")) {
            return zi_fail (err, errlen, ZI_ERR_INVALID, "--pre resize: mode '%s' is not "
                            "bilinear or nearest", mode);
        }
    }
    else if (strcmp (name, "pad") == 0 && arg) {
        op->kind = ZI_PLAN_OP_PAD;
        char buf[1024];
        snprintf (buf, sizeof buf, "%s", arg);
        char *colon = strchr (buf, ':');
        if (colon) {
            *colon = 0;
            if (s_parse_double (colon + 1, &op->value)) {
                return zi_fail (err, errlen, ZI_ERR_INVALID, "--pre pad: bad fill value");
            }
        }
        double *p = NULL;
        size_t n = 0;
        if (s_parse_list (buf, &p, &n) || n % 2) {
            free (p);
            return zi_fail (err, errlen, ZI_ERR_INVALID, "--pre pad=%s: expected an even "
                            "number of pads (begins then ends)", arg);
        }
        op->pads = (int64_t *) calloc (n, sizeof (int64_t));
        if (!op->pads) {
            free (p);
            return ZI_ERR_NOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            op->pads[i] = (int64_t) p[i];
        }
        op->n_pads = n;
        free (p);
    }
    else {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "--pre '%s': expected cast=DT, scale=F, "
                        "normalize=M,../S,.., hwc_to_chw, resize=HxW[:mode] or pad=P,..[:V]",
                        text);
    }
    return ZI_OK;
}

//  The model path as the plan must hold it: relative to the plan file's
//  directory (so the same plan works on every host that lays files out
//  alike), or absolute when no relative path can be formed.
static char *
s_model_path_for_plan (const char *model, const char *plan_path)
{
    char model_abs[PATH_MAX], dir_abs[PATH_MAX], dir[PATH_MAX];
    if (!plan_path || !realpath (model, model_abs)) {
        return strdup (model);
    }
    snprintf (dir, sizeof dir, "%s", plan_path);
    char *slash = strrchr (dir, '/');
    if (slash) {
        *slash = 0;
    }
    if (!realpath (slash ? (dir[0] ? dir : "/") : ".", dir_abs)) {
        return strdup (model_abs);
    }
    //  common leading directories, then one ".." per remaining one
    size_t common = 0;
    for (size_t i = 0; model_abs[i] && model_abs[i] == dir_abs[i]; i++) {
        if (model_abs[i] == '/') {
            common = i;
        }
    }
    if (strncmp (model_abs, dir_abs, strlen (dir_abs)) == 0 && model_abs[strlen (dir_abs)] == '/') {
        return strdup (model_abs + strlen (dir_abs) + 1);
    }
    char rel[PATH_MAX] = "";
    size_t pos = 0;
    for (const char *p = dir_abs + common; *p; p++) {
        if (*p == '/' && pos + 4 < sizeof rel) {
            pos += (size_t) snprintf (rel + pos, sizeof rel - pos, "../");
        }
    }
    snprintf (rel + pos, sizeof rel - pos, "%s", model_abs + common + 1);
    return strdup (rel);
}

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static void
s_plan_tensor_from_value (zi_plan_tensor_t *t, const zi_value_t *v)
{
    t->name = strdup (v->name);
    t->dtype = v->dtype ? v->dtype : ZI_DT_F32;
    t->rank = v->rank < 0 ? 0 : v->rank;
    for (int i = 0; i < t->rank; i++) {
        t->shape[i] = v->shape[i] < 0 ? -1 : v->shape[i];
    }
}

//  Whether a preprocess stage would do anything for the model's input v:
//  an op, or clients that send another dtype or shape than the model
//  takes. Without work the plan gets no preprocess stage: the broker checks
//  requests against model.inputs itself, and each request saves a process
//  and two socket crossings. An option that does not parse counts as work,
//  so that building the stage reports it.
static bool
s_pre_has_work (const zi_value_t *v, const char *input_dtype, const char *input_shape,
                int n_pre)
{
    if (n_pre > 0) {
        return true;
    }
    zi_plan_tensor_t model = {0};
    s_plan_tensor_from_value (&model, v);
    free (model.name);
    if (input_dtype && zi_dtype_from_name (input_dtype) != model.dtype) {
        return true;
    }
    bool differs = false;
    if (input_shape) {
        double *dims = NULL;
        size_t nd = 0;
        differs = s_parse_list (input_shape, &dims, &nd) || nd != (size_t) model.rank;
        for (size_t d = 0; !differs && d < nd; d++) {
            differs = (int64_t) dims[d] != model.shape[d];
        }
        free (dims);
    }
    return differs;
}


//  The cut of one graph: node costs (estimated, or measured when
//  calibrate > 0), the places that may be cut, and the best cut.
typedef struct {
    zi_node_cost_t *costs;
    double *cross;          //  bytes crossing a cut after node j
    double *cost;           //  the cost the cut balances
    int *bad;
    bool *allowed;
    int forbidden;
    int seg_last[S_MAX];
    double bottleneck;      //  max cost / capacity
    double total;           //  sum of cost
} s_cuts_t;

static void
s_cuts_free (s_cuts_t *c)
{
    free (c->costs);
    free (c->cross);
    free (c->cost);
    free (c->bad);
    free (c->allowed);
    memset (c, 0, sizeof *c);
}

static int
s_cuts (const zi_graph_t *g, zi_tensor_t **probe, long calibrate, int threads, int k,
        const double *capacity, double tolerance, s_cuts_t *c)
{
    char err[1024];
    size_t n = (size_t) g->n_nodes + 1;
    c->costs = (zi_node_cost_t *) calloc (n, sizeof *c->costs);
    c->cross = (double *) calloc (n, sizeof *c->cross);
    c->cost = (double *) calloc (n, sizeof *c->cost);
    c->bad = (int *) calloc (n, sizeof *c->bad);
    c->allowed = (bool *) calloc (n, sizeof *c->allowed);
    if (!c->costs || !c->cross || !c->cost || !c->bad || !c->allowed) {
        fprintf (stderr, "zinfer plan: out of memory\n");
        return -1;
    }
    if (zi_planner_costs (g, (const zi_tensor_t *const *) probe, c->costs, c->cross, err,
                          sizeof err)) {
        fprintf (stderr, "zinfer plan: %s\n", err);
        return -1;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        c->cost[i] = c->costs[i].cost;
    }
    if (calibrate) {
        //  Measured seconds per node replace the estimates, timed as the exec
        //  workers will run them: fused (a Conv's Relu and MaxPool cost what
        //  the fused kernel adds, charged to the Conv; a cut inside such a
        //  group moves nothing the tie-break would prefer) and with the
        //  replicas' thread count (a layer's share of the time depends on it).
        zi_exec_opts_t opts = {.profile = true, .nthreads = threads};
        zi_exec_t *whole = zi_exec_new (g, 0, -1, &opts, err, sizeof err);
        zi_tensor_t **outs = (zi_tensor_t **) calloc ((size_t) g->n_outputs + 1, sizeof *outs);
        if (!whole || !outs) {
            fprintf (stderr, "zinfer plan: %s\n", whole ? "out of memory" : err);
            free (outs);
            zi_exec_destroy (&whole);
            return -1;
        }
        double t0 = s_now ();
        for (long r = 0; r < calibrate; r++) {
            if (zi_exec_run (whole, (const zi_tensor_t *const *) probe, outs, err, sizeof err)) {
                fprintf (stderr, "zinfer plan: calibration run: %s\n", err);
                free (outs);
                zi_exec_destroy (&whole);
                return -1;
            }
            for (int o = 0; o < zi_exec_n_outputs (whole); o++) {
                zi_tensor_destroy (&outs[o]);
            }
        }
        free (outs);
        fprintf (stderr, "zinfer plan: calibrated on %ld runs (%.1f ms each)\n", calibrate,
                 1e3 * (s_now () - t0) / (double) calibrate);
        for (int i = 0; i < g->n_nodes; i++) {
            c->cost[i] = zi_exec_node_seconds (whole, i);
        }
        zi_exec_destroy (&whole);
    }
    //  Only cuts whose crossing tensors carry the batch axis: a weight or a
    //  shape computed from one must stay with the segment that reads it.
    c->forbidden = zi_planner_safe_cuts (g, (const zi_tensor_t *const *) probe, c->bad, err,
                                         sizeof err);
    if (c->forbidden < 0) {
        fprintf (stderr, "zinfer plan: %s\n", err);
        return -1;
    }
    c->total = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        c->allowed[i] = c->bad[i] < 0;
        c->total += c->cost[i] > 0 ? c->cost[i] : 0;
    }
    if (zi_planner_cut_allowed (g->n_nodes, c->cost, c->cross, k, capacity, c->allowed,
                                tolerance, c->seg_last, &c->bottleneck, err, sizeof err)) {
        fprintf (stderr, "zinfer plan: %s\n", err);
        for (int i = 0, shown = 0; i + 1 < g->n_nodes && shown < 5; i++) {
            if (c->bad[i] >= 0) {
                fprintf (stderr, "zinfer plan:   not after node %d (%s): tensor '%s' has no "
                         "batch axis\n", i, g->nodes[i].name, g->values[c->bad[i]].name);
                shown++;
            }
        }
        return -1;
    }
    if (!(c->total > 0)) {
        c->total = 1;
    }
    return 0;
}

//  Splits that would let each boundary fall where the capacities want it:
//  for boundary b the cost before it should be total * (cap_0 + .. + cap_b)
//  / sum(cap). When that point falls inside a splittable layer (or inside
//  the channel-wise chain after one), the layer is split so that part A
//  (with its chain) carries the cost up to the point. Channel counts are
//  rounded to multiples of 16 (whole SIMD panels). With rows, a 2-D Conv
//  is split along its output rows instead where it can be (no input packed
//  twice; rows in multiples of its pools' strides). Returned in descending
//  node order, so every index refers to the unsplit graph.
static int
s_choose_splits (const zi_graph_t *g, const s_cuts_t *c, int k, const double *capacity,
                 bool rows, zi_split_t *out)
{
    int n = 0;
    double cap_total = 0;
    for (int s = 0; s < k; s++) {
        cap_total += capacity[s];
    }
    double before = 0;
    for (int b = 0; b + 1 < k; b++) {
        before += capacity[b];
        double target = c->total * before / cap_total;
        //  the node whose cost spans the target
        double prefix = 0;
        int j = 0;
        for (; j < g->n_nodes; j++) {
            double cj = c->cost[j] > 0 ? c->cost[j] : 0;
            if (prefix + cj > target) {
                break;
            }
            prefix += cj;
        }
        if (j >= g->n_nodes) {
            continue;
        }
        //  the splittable layer whose chain covers node j
        for (int l = j; l >= 0 && l > j - ZI_SPLIT_CHAIN_MAX - 1; l--) {
            int64_t channels, step = 0;
            int chain, axis = ZI_SPLIT_CHANNELS;
            char why[256];
            if (rows && zi_split_probe_rows (g, l, &channels, &step, &chain, why,
                                             sizeof why) == 0 && l + chain >= j) {
                axis = ZI_SPLIT_ROWS;
            }
            else if (zi_split_probe (g, l, &channels, &chain, why, sizeof why)
                     || l + chain < j) {
                continue;
            }
            double start = prefix, span = 0;
            for (int i = j - 1; i >= l; i--) {
                start -= c->cost[i] > 0 ? c->cost[i] : 0;
            }
            for (int i = l; i <= l + chain; i++) {
                span += c->cost[i] > 0 ? c->cost[i] : 0;
            }
            if (!(span > 0)) {
                break;
            }
            double f = (target - start) / span;
            if (axis == ZI_SPLIT_CHANNELS) {
                step = channels >= 64 ? 16 : 1;
            }
            int64_t at = (int64_t) (f * (double) channels / (double) step + 0.5) * step;
            if (at >= step && at <= channels - step) {
                bool dup = false;
                for (int i = 0; i < n; i++) {
                    dup |= out[i].node == l;
                }
                if (!dup) {
                    out[n].node = l;
                    out[n].at = at;
                    out[n].axis = axis;
                    n++;
                }
            }
            break;
        }
    }
    //  descending node order
    for (int i = 1; i < n; i++) {
        for (int m = i; m > 0 && out[m].node > out[m - 1].node; m--) {
            zi_split_t t = out[m];
            out[m] = out[m - 1];
            out[m - 1] = t;
        }
    }
    return n;
}

int
zi_cmd_plan (int argc, char **argv)
{
    const char *model = NULL, *out_path = NULL, *broker_host = NULL, *ipc_dir = NULL;
    const char *input_dtype = NULL, *input_shape = NULL;
    s_replica_arg_t replicas[S_MAX];
    int n_replicas = 0;
    const char *host_names[S_MAX], *host_addrs[S_MAX];
    char host_buf[S_MAX][300];
    int n_hosts = 0;
    const char *pre[S_MAX], *post[S_MAX];
    int n_pre = 0, n_post = 0;
    long segments = 0, port = 5555, batch = 16, calibrate = 0;
    long micro = 16, max_batch = 64, max_delay = 2000, shm_mb = -1;
    double tolerance = 0.05;
    bool explain = false, split = true, client_shm = false;
    int split_axis = 0;     //  0 auto, 1 channels only, 2 rows where possible
    char err[1024];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp (a, "-h") == 0 || strcmp (a, "--help") == 0) {
            s_plan_usage (stdout);
            return 0;
        }
        if (strcmp (a, "--explain") == 0) {
            explain = true;
            continue;
        }
        if (strcmp (a, "--no-split") == 0) {
            split = false;
            continue;
        }
        if (strcmp (a, "--client-shm") == 0) {
            client_shm = true;
            continue;
        }
        if (a[0] != '-') {
            if (model) {
                fprintf (stderr, "zinfer plan: unexpected argument '%s'\n", a);
                return 2;
            }
            model = a;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf (stderr, "zinfer plan: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (strcmp (a, "-o") == 0 || strcmp (a, "--out") == 0) {
            out_path = v;
        }
        else if (strcmp (a, "--replica") == 0) {
            if (n_replicas == S_MAX) {
                fprintf (stderr, "zinfer plan: more than %d replicas\n", S_MAX);
                return 2;
            }
            if (s_parse_replica (v, &replicas[n_replicas], err, sizeof err)) {
                fprintf (stderr, "zinfer plan: %s\n", err);
                return 2;
            }
            n_replicas++;
        }
        else if (strcmp (a, "--host") == 0) {
            const char *eq = strchr (v, '=');
            if (!eq || eq == v || !eq[1] || strlen (v) >= sizeof host_buf[0] || n_hosts == S_MAX) {
                fprintf (stderr, "zinfer plan: --host '%s': expected NAME=ADDRESS\n", v);
                return 2;
            }
            snprintf (host_buf[n_hosts], sizeof host_buf[0], "%s", v);
            host_buf[n_hosts][eq - v] = 0;
            host_names[n_hosts] = host_buf[n_hosts];
            host_addrs[n_hosts] = host_buf[n_hosts] + (eq - v) + 1;
            n_hosts++;
        }
        else if (strcmp (a, "--broker-host") == 0) {
            broker_host = v;
        }
        else if (strcmp (a, "--ipc") == 0) {
            ipc_dir = v;
        }
        else if (strcmp (a, "--input-dtype") == 0) {
            input_dtype = v;
        }
        else if (strcmp (a, "--input-shape") == 0) {
            input_shape = v;
        }
        else if (strcmp (a, "--pre") == 0 && n_pre < S_MAX) {
            pre[n_pre++] = v;
        }
        else if (strcmp (a, "--post") == 0 && n_post < S_MAX) {
            post[n_post++] = v;
        }
        else if (strcmp (a, "--segments") == 0) {
            bad = s_parse_long (v, 1, S_MAX, &segments);
        }
        else if (strcmp (a, "--port") == 0) {
            bad = s_parse_long (v, 1, 65535 - 8, &port);
        }
        else if (strcmp (a, "--batch") == 0) {
            bad = s_parse_long (v, 1, 1 << 20, &batch);
        }
        else if (strcmp (a, "--calibrate") == 0) {
            bad = s_parse_long (v, 1, 100000, &calibrate);
        }
        else if (strcmp (a, "--shm") == 0) {
            bad = s_parse_long (v, 0, 65536, &shm_mb);
        }
        else if (strcmp (a, "--micro-batch") == 0) {
            bad = s_parse_long (v, 1, 1 << 20, &micro);
        }
        else if (strcmp (a, "--max-batch") == 0) {
            bad = s_parse_long (v, 1, 1 << 20, &max_batch);
        }
        else if (strcmp (a, "--max-delay-us") == 0) {
            bad = s_parse_long (v, 0, 10000000, &max_delay);
        }
        else if (strcmp (a, "--tolerance") == 0) {
            bad = s_parse_double (v, &tolerance) || tolerance < 0 || tolerance > 10;
        }
        else if (strcmp (a, "--split-axis") == 0) {
            split_axis = strcmp (v, "auto") == 0 ? 0 : strcmp (v, "channels") == 0 ? 1
                         : strcmp (v, "rows") == 0 ? 2 : -1;
            bad = split_axis < 0;
        }
        else {
            fprintf (stderr, "zinfer plan: unknown option '%s'\n", a);
            s_plan_usage (stderr);
            return 2;
        }
        if (bad) {
            fprintf (stderr, "zinfer plan: %s: bad value '%s'\n", a, v);
            return 2;
        }
    }
    if (!model || (!out_path && !explain)) {
        s_plan_usage (stderr);
        return 2;
    }
    if (n_hosts == 0) {
        host_names[0] = "local";
        host_addrs[0] = "127.0.0.1";
        n_hosts = 1;
    }
    //  Segments: from the replicas, or --segments with one replica each.
    int k = 0;
    for (int r = 0; r < n_replicas; r++) {
        k = replicas[r].seg + 1 > k ? replicas[r].seg + 1 : k;
    }
    if (segments && n_replicas && segments != k) {
        fprintf (stderr, "zinfer plan: --segments %ld but the replicas name %d segments\n",
                 segments, k);
        return 2;
    }
    if (!n_replicas) {
        k = segments ? (int) segments : 1;
        for (int s = 0; s < k; s++) {
            replicas[n_replicas] = (s_replica_arg_t){s, "", 1.0, S_DEFAULT_CREDIT, 1};
            snprintf (replicas[n_replicas].host, sizeof replicas[0].host, "%s", host_names[0]);
            n_replicas++;
        }
    }
    double capacity[S_MAX] = {0};
    for (int r = 0; r < n_replicas; r++) {
        bool known = false;
        for (int h = 0; h < n_hosts; h++) {
            known |= strcmp (host_names[h], replicas[r].host) == 0;
        }
        if (!known) {
            fprintf (stderr, "zinfer plan: --replica %d@%s: unknown host '%s' (hosts: "
                     "--host NAME=ADDRESS; default 'local')\n", replicas[r].seg,
                     replicas[r].host, replicas[r].host);
            return 2;
        }
        capacity[replicas[r].seg] += replicas[r].capacity;
    }
    for (int s = 0; s < k; s++) {
        if (capacity[s] <= 0) {
            fprintf (stderr, "zinfer plan: segment %d has no replica (segments must be "
                     "numbered 0..%d without gaps)\n", s, k - 1);
            return 2;
        }
    }
    zi_graph_t *g = zi_onnx_load (model, err, sizeof err);
    if (!g) {
        fprintf (stderr, "zinfer plan: %s\n", err);
        return 1;
    }
    int status = 1;
    zi_plan_t *plan = NULL;
    zi_tensor_t **probe = (zi_tensor_t **) calloc ((size_t) g->n_inputs + 1, sizeof *probe);
    s_cuts_t cuts = {0}, trial = {0};
    zi_split_t splits[S_MAX];
    int n_splits = 0;
    if (!probe) {
        fprintf (stderr, "zinfer plan: out of memory\n");
        goto done;
    }
    //  Input shapes for the estimate: the symbolic batch bound to --batch.
    for (int i = 0; i < g->n_inputs; i++) {
        const zi_value_t *v = &g->values[g->inputs[i]];
        int64_t shape[ZI_MAX_RANK];
        if (v->rank < 0) {
            fprintf (stderr, "zinfer plan: input '%s' declares no shape\n", v->name);
            goto done;
        }
        for (int d = 0; d < v->rank; d++) {
            shape[d] = v->shape[d] >= 0 ? v->shape[d] : (d == 0 ? batch : 1);
        }
        probe[i] = zi_tensor_new (v->dtype ? v->dtype : ZI_DT_F32, v->rank, shape);
        if (!probe[i]) {
            fprintf (stderr, "zinfer plan: cannot allocate input '%s'\n", v->name);
            goto done;
        }
    }
    //  Calibration threads: those of the first replica (bench and launcher
    //  plans give every replica the same).
    int cal_threads = n_replicas > 0 && replicas[0].threads > 0 ? (int) replicas[0].threads : 1;
    if (s_cuts (g, probe, calibrate, cal_threads, k, capacity, tolerance, &cuts)) {
        goto done;
    }
    //  A layer that whole-layer cuts cannot balance is split across the
    //  boundary (zi_split.h) when that lowers the bottleneck share by more
    //  than S_SPLIT_GAIN: the model is loaded again, split, and planned
    //  (and calibrated) anew, and the better of the two plans is kept.
    if (k > 1 && split) {
        //  Two candidates: channel splits everywhere, and row splits for the
        //  convolutions that allow them; the one with the lower bottleneck
        //  (measured with --calibrate) wins.
        zi_split_t cand[2][S_MAX];
        int ncand[2];
        ncand[0] = s_choose_splits (g, &cuts, k, capacity, false, cand[0]);
        ncand[1] = s_choose_splits (g, &cuts, k, capacity, true, cand[1]);
        bool differ = ncand[1] != ncand[0];
        for (int i = 0; !differ && i < ncand[0]; i++) {
            differ = cand[0][i].axis != cand[1][i].axis || cand[0][i].at != cand[1][i].at;
        }
        double before = cuts.bottleneck / cuts.total;
        int best = -1;
        zi_graph_t *best_g = NULL;
        s_cuts_t best_cuts = {0};
        for (int ci = 0; ci < (differ ? 2 : 1); ci++) {
            if (ncand[ci] == 0 || (split_axis == 1 && ci == 1) || (split_axis == 2 && ci == 0
                                                                   && differ)) {
                continue;
            }
            zi_graph_t *g2 = zi_onnx_load (model, err, sizeof err);
            if (!g2 || zi_split_apply_all (g2, cand[ci], (size_t) ncand[ci], err, sizeof err)) {
                fprintf (stderr, "zinfer plan: %s\n", err);
                zi_graph_destroy (&g2);
                zi_graph_destroy (&best_g);
                s_cuts_free (&best_cuts);
                goto done;
            }
            if (s_cuts (g2, probe, calibrate, cal_threads, k, capacity, tolerance, &trial)) {
                zi_graph_destroy (&g2);
                zi_graph_destroy (&best_g);
                s_cuts_free (&best_cuts);
                goto done;
            }
            double after = trial.bottleneck / trial.total;
            bool gain = after < before * (1 - S_SPLIT_GAIN);
            bool better = gain && (best < 0 || trial.bottleneck < best_cuts.bottleneck);
            if (explain) {
                for (int i = 0; i < ncand[ci]; i++) {
                    fprintf (stderr, "zinfer plan: split node %d (%s) at %s %lld\n",
                             (int) cand[ci][i].node, g->nodes[cand[ci][i].node].name,
                             cand[ci][i].axis == ZI_SPLIT_ROWS ? "row" : "channel",
                             (long long) cand[ci][i].at);
                }
                fprintf (stderr, "zinfer plan: bottleneck share %.1f%% whole layers, %.1f%% "
                         "with the split%s (bottleneck %.4g): %s\n", 100 * before,
                         100 * after, ncand[ci] > 1 ? "s" : "", trial.bottleneck,
                         better ? "best so far" : gain ? "not better" : "not split");
            }
            if (better) {
                zi_graph_destroy (&best_g);
                s_cuts_free (&best_cuts);
                best_g = g2;
                best_cuts = trial;
                memset (&trial, 0, sizeof trial);
                best = ci;
            }
            else {
                zi_graph_destroy (&g2);
                s_cuts_free (&trial);
            }
        }
        if (best >= 0) {
            zi_graph_destroy (&g);
            g = best_g;
            s_cuts_free (&cuts);
            cuts = best_cuts;
            n_splits = ncand[best];
            memcpy (splits, cand[best], (size_t) n_splits * sizeof *splits);
        }
    }
    const zi_node_cost_t *costs = cuts.costs;
    const double *cross = cuts.cross, *cost = cuts.cost;
    const int *seg_last = cuts.seg_last;
    double bottleneck = cuts.bottleneck;
    if (cuts.forbidden > 0 && explain) {
        fprintf (stderr, "zinfer plan: %d of %d places between nodes not cut: a tensor "
                 "without the batch axis would cross them\n", cuts.forbidden, g->n_nodes - 1);
    }
    //  Build the plan.
    plan = zi_plan_new ();
    if (!plan) {
        fprintf (stderr, "zinfer plan: out of memory\n");
        goto done;
    }
    plan->model.path = s_model_path_for_plan (model, out_path);
    plan->model.node_count = g->n_nodes;
    if (n_splits > 0) {
        plan->model.splits = (zi_split_t *) malloc ((size_t) n_splits * sizeof (zi_split_t));
        if (!plan->model.splits) {
            fprintf (stderr, "zinfer plan: out of memory\n");
            goto done;
        }
        memcpy (plan->model.splits, splits, (size_t) n_splits * sizeof (zi_split_t));
        plan->model.n_splits = (size_t) n_splits;
    }
    for (int i = 0; i < g->n_inputs; i++) {
        zi_plan_tensor_t *t = ZI_PLAN_PUSH (plan->model.inputs, plan->model.n_inputs);
        s_plan_tensor_from_value (t, &g->values[g->inputs[i]]);
    }
    for (int i = 0; i < g->n_outputs; i++) {
        zi_plan_tensor_t *t = ZI_PLAN_PUSH (plan->model.outputs, plan->model.n_outputs);
        s_plan_tensor_from_value (t, &g->values[g->outputs[i]]);
    }
    for (int h = 0; h < n_hosts; h++) {
        zi_plan_add_host (plan, host_names[h], host_addrs[h]);
    }
    const char *bhost = broker_host ? broker_host : host_names[0];
    const char *baddr = NULL;
    for (int h = 0; h < n_hosts; h++) {
        if (strcmp (host_names[h], bhost) == 0) {
            baddr = host_addrs[h];
        }
    }
    if (!baddr) {
        fprintf (stderr, "zinfer plan: --broker-host '%s' is not a host\n", bhost);
        goto done;
    }
    plan->broker.host = strdup (bhost);
    //  Shared-memory arenas for cut tensors: on by default when every
    //  process is on this host (ipc), 64 MiB per exec worker.
    if (shm_mb < 0) {
        shm_mb = ipc_dir ? 64 : 0;
    }
    if (shm_mb > 0 && !ipc_dir) {
        fprintf (stderr, "zinfer plan: --shm needs --ipc (shared memory works on one host)\n");
        goto done;
    }
    plan->broker.shm_bytes = (int64_t) shm_mb << 20;
    if (client_shm && !ipc_dir) {
        fprintf (stderr, "zinfer plan: --client-shm needs --ipc (shared memory works on one "
                 "host)\n");
        goto done;
    }
    plan->broker.client_shm = client_shm;
    if (ipc_dir ? zi_plan_set_endpoints_ipc (plan, ipc_dir)
                : zi_plan_set_endpoints_tcp (plan, n_hosts > 1 ? "*" : baddr, baddr,
                                             (int) port)) {
        fprintf (stderr, "zinfer plan: cannot set the broker's endpoints\n");
        goto done;
    }
    double total_cost = 0;
    for (int n = 0; n < g->n_nodes; n++) {
        total_cost += cost[n];
    }
    int first = 0;
    for (int s = 0; s < k; s++) {
        zi_plan_segment_t *seg = ZI_PLAN_PUSH (plan->segments, plan->n_segments);
        if (!seg) {
            fprintf (stderr, "zinfer plan: out of memory\n");
            goto done;
        }
        seg->index = s;
        seg->first_node = first;
        seg->last_node = seg_last[s];
        double seg_cost = 0, flops = 0, wbytes = 0;
        for (int n = first; n <= seg_last[s]; n++) {
            seg_cost += cost[n];
            flops += costs[n].flops;
            wbytes += costs[n].weight_bytes;
        }
        seg->cost_flops = flops;
        seg->weight_bytes = (int64_t) wbytes;
        seg->cost_share = total_cost > 0 ? seg_cost / total_cost : 0;
        zi_exec_t *sx = zi_exec_new (g, first, seg_last[s], NULL, err, sizeof err);
        if (!sx) {
            fprintf (stderr, "zinfer plan: segment %d: %s\n", s, err);
            goto done;
        }
        for (int i = 0; i < zi_exec_n_inputs (sx); i++) {
            char **p = ZI_PLAN_PUSH (seg->inputs, seg->n_inputs);
            *p = strdup (zi_exec_input (sx, i)->name);
        }
        for (int i = 0; i < zi_exec_n_outputs (sx); i++) {
            char **p = ZI_PLAN_PUSH (seg->outputs, seg->n_outputs);
            *p = strdup (zi_exec_output (sx, i)->name);
        }
        zi_exec_destroy (&sx);
        //  Activation memory: the crossing tensors of its cut plus its own
        //  largest activations are bounded by the node estimates.
        double act = 0;
        for (int n = first; n <= seg_last[s]; n++) {
            act = costs[n].act_bytes > act ? costs[n].act_bytes : act;
        }
        seg->activation_bytes = (int64_t) act;
        int idx = 0;
        for (int r = 0; r < n_replicas; r++) {
            if (replicas[r].seg != s) {
                continue;
            }
            char name[64];
            snprintf (name, sizeof name, "s%dr%d", s, idx++);
            zi_plan_replica_t *rep = zi_plan_add_replica (&seg->replicas, &seg->n_replicas,
                                                          name, replicas[r].host,
                                                          replicas[r].capacity);
            if (!rep) {
                fprintf (stderr, "zinfer plan: out of memory\n");
                goto done;
            }
            rep->credit = replicas[r].credit;
            rep->threads = replicas[r].threads;
        }
        first = seg_last[s] + 1;
    }
    //  Stages: preprocess (validation + ops) only when it has work (an op,
    //  or clients that send another dtype or shape than the model takes),
    //  partition, aggregate.
    {
        zi_plan_stage_t *st = NULL;
        if (g->n_inputs > 0
            && s_pre_has_work (&g->values[g->inputs[0]], input_dtype, input_shape, n_pre)) {
            st = ZI_PLAN_PUSH (plan->stages, plan->n_stages);
            st->kind = ZI_PLAN_STAGE_PREPROCESS;
            zi_plan_add_replica (&st->replicas, &st->n_replicas, "pre0", bhost, 1.0);
            for (int i = 0; i < g->n_inputs; i++) {
                zi_plan_io_t *io = ZI_PLAN_PUSH (st->tensors, st->n_tensors);
                s_plan_tensor_from_value (&io->tensor, &g->values[g->inputs[i]]);
                if (i == 0 && input_dtype) {
                    io->tensor.dtype = zi_dtype_from_name (input_dtype);
                    if (!zi_dtype_valid (io->tensor.dtype)) {
                        fprintf (stderr,
                                 "zinfer plan: --input-dtype '%s' is not a dtype\n",
                                 input_dtype);
                        goto done;
                    }
                }
                if (i == 0 && input_shape) {
                    double *dims = NULL;
                    size_t nd = 0;
                    if (s_parse_list (input_shape, &dims, &nd) || nd > ZI_MAX_RANK) {
                        free (dims);
                        fprintf (stderr,
                                 "zinfer plan: --input-shape '%s': expected up to %d "
                                 "comma-separated dims (-1 for the batch)\n",
                                 input_shape, ZI_MAX_RANK);
                        goto done;
                    }
                    io->tensor.rank = (int) nd;
                    for (size_t d = 0; d < nd; d++) {
                        io->tensor.shape[d] = (int64_t) dims[d];
                    }
                    free (dims);
                }
                if (i == 0) {
                    for (int p = 0; p < n_pre; p++) {
                        zi_plan_op_t *op = ZI_PLAN_PUSH (io->ops, io->n_ops);
                        if (!op || s_parse_op (pre[p], false, op, err, sizeof err)) {
                            fprintf (stderr, "zinfer plan: %s\n",
                                     op ? err : "out of memory");
                            goto done;
                        }
                    }
                }
            }
        }
        st = ZI_PLAN_PUSH (plan->stages, plan->n_stages);
        st->kind = ZI_PLAN_STAGE_PARTITION;
        st->micro_batch = micro;
        st->max_batch = max_batch;
        st->max_delay_us = max_delay;
        zi_plan_add_replica (&st->replicas, &st->n_replicas, "part0", bhost, 1.0);
        st = ZI_PLAN_PUSH (plan->stages, plan->n_stages);
        st->kind = ZI_PLAN_STAGE_AGGREGATE;
        zi_plan_add_replica (&st->replicas, &st->n_replicas, "agg0", bhost, 1.0);
        if (n_post) {
            zi_plan_io_t *io = ZI_PLAN_PUSH (st->tensors, st->n_tensors);
            io->tensor.name = strdup (g->values[g->outputs[0]].name);
            for (int p = 0; p < n_post; p++) {
                zi_plan_op_t *op = ZI_PLAN_PUSH (io->ops, io->n_ops);
                if (!op || s_parse_op (post[p], true, op, err, sizeof err)) {
                    fprintf (stderr, "zinfer plan: %s\n", op ? err : "out of memory");
                    goto done;
                }
            }
        }
    }
    if (explain) {
        printf ("model %s: %d nodes, batch %ld, costs %s; bottleneck %.4g per unit of "
                "capacity\n", model, g->n_nodes, batch,
                calibrate ? "measured (seconds)" : "estimated (FLOPs + 4/byte)", bottleneck);
        printf ("%-4s %-11s %8s %12s %10s %12s %9s  %s\n", "seg", "nodes", "share", "GFLOP",
                "weights", "cut bytes", "capacity", "replicas");
        for (size_t s = 0; s < plan->n_segments; s++) {
            const zi_plan_segment_t *seg = &plan->segments[s];
            char nodes[32], reps[512] = "";
            snprintf (nodes, sizeof nodes, "%lld-%lld", (long long) seg->first_node,
                      (long long) seg->last_node);
            size_t pos = 0;
            for (size_t r = 0; r < seg->n_replicas && pos < sizeof reps; r++) {
                pos += (size_t) snprintf (reps + pos, sizeof reps - pos, "%s%s@%s:R=%g",
                                          r ? " " : "", seg->replicas[r].name,
                                          seg->replicas[r].host, seg->replicas[r].capacity);
            }
            double cut = s + 1 < plan->n_segments ? cross[seg->last_node] : 0;
            printf ("%-4zu %-11s %7.1f%% %12.4f %10lld %12.0f %9g  %s\n", s, nodes,
                    100 * seg->cost_share, seg->cost_flops / 1e9,
                    (long long) seg->weight_bytes, cut, capacity[s], reps);
        }
    }
    if (out_path) {
        if (zi_plan_write (plan, out_path, err, sizeof err)) {
            fprintf (stderr, "zinfer plan: %s\n", err);
            goto done;
        }
        fprintf (stderr, "zinfer plan: wrote %s (%d segments)\n", out_path, k);
    }
    //  An ipc plan runs on this host: say so when its exec threads
    //  outnumber the cores (zinfer up says it again on start).
    if (ipc_dir) {
        int64_t threads = 0;
        for (size_t s = 0; s < plan->n_segments; s++) {
            for (size_t r = 0; r < plan->segments[s].n_replicas; r++) {
                int64_t t = plan->segments[s].replicas[r].threads;
                threads += t > 0 ? t : 1;
            }
        }
        int cores = zi_cli_cores ();
        if (threads > cores) {
            fprintf (stderr, "zinfer plan: note: %lld exec threads on this host's %d cores: "
                     "oversubscribed, each worker will run slower than alone\n",
                     (long long) threads, cores);
        }
    }
    status = 0;
done:
    if (probe) {
        for (int i = 0; i < g->n_inputs; i++) {
            zi_tensor_destroy (&probe[i]);
        }
    }
    free (probe);
    s_cuts_free (&cuts);
    s_cuts_free (&trial);
    zi_plan_destroy (&plan);
    zi_graph_destroy (&g);
    return status;
}
