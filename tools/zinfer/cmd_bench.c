/*  zinfer bench - drive load through a running pipeline, or measure the
    single-process engine (the limit the pipeline is measured against).

        zinfer bench (--plan PLAN | --endpoint EP) [--concurrency 8]
                     [--duration 10 | --count N] [--batch 1]
                     [--input NAME=FILE.npy]... | [--idx IMAGES [--idx-name N]]
                     [--prio P] [--deadline MS] [--timeout MS] [--csv]

    keeps C requests in flight (asynchronous zi_client_send / _recv) with
    random inputs of the shapes clients send in the plan (the batch
    dimension bound to --batch), or the given .npy inputs, or batches of
    an IDX data set; shows a progress line on stderr; prints throughput
    (requests/s, samples/s), latency p50/p90/p99/max and errors by code.

        zinfer bench --model MODEL.onnx [--batch 64] [--threads N]
                     [--seconds 5] [--warmup 3] [--csv]

    runs the model in this process. Inputs are random (uniform [0,1)
    floats, zero integers), with the first symbolic dimension of every
    input bound to --batch (others to 1). Prints samples/s and per-batch
    latency percentiles.
*/
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zi_blas.h"
#include "zi_client.h"
#include "zi_exec.h"
#include "zi_idx.h"
#include "zi_onnx.h"
#include "zinfer.h"

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static int
s_cmp_double (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

static void
s_bench_usage (FILE *out)
{
    fprintf (out,
             "usage: zinfer bench (--plan PLAN | --endpoint EP) [--concurrency C]\n"
             "                    [--duration S | --count N] [--batch B]\n"
             "                    [--input NAME=FILE.npy]... | [--idx IMAGES [--idx-name N]]\n"
             "                    [--prio P] [--deadline MS] [--timeout MS] [--csv]\n"
             "       zinfer bench --model MODEL.onnx [--batch N] [--threads N]\n"
             "                    [--seconds S] [--warmup N] [--csv]\n"
             "\n"
             "With --plan or --endpoint: drives load through a running pipeline, C\n"
             "requests in flight (default 8) for S seconds (default 10) or N requests,\n"
             "and prints throughput, latency percentiles and errors by code. Inputs are\n"
             "random, of the shapes the plan's clients send with batch B (default 1),\n"
             "unless --input or --idx gives them.\n"
             "\n"
             "With --model: measures the single-process engine: samples/s and latency\n"
             "per batch.\n");
}

//  Percentile p (0..100) of sorted values, nearest-rank.
static double
s_pct (const double *sorted, int n, double p)
{
    if (n == 0) {
        return 0;
    }
    int idx = (int) ceil (p / 100.0 * n) - 1;
    return sorted[idx < 0 ? 0 : (idx >= n ? n - 1 : idx)];
}

static int s_bench_pipeline (int argc, char **argv);

int
zi_cmd_bench (int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv[i], "--plan") == 0 || strcmp (argv[i], "--endpoint") == 0) {
            return s_bench_pipeline (argc, argv);
        }
    }
    const char *model = NULL;
    long batch = 64, threads = 0, warmup = 3;
    double seconds = 5.0;
    bool csv = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp (a, "-h") == 0 || strcmp (a, "--help") == 0) {
            s_bench_usage (stdout);
            return 0;
        }
        if (strcmp (a, "--csv") == 0) {
            csv = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf (stderr, "zinfer bench: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        char *end;
        errno = 0;
        if (strcmp (a, "--model") == 0) {
            model = v;
        }
        else if (strcmp (a, "--seconds") == 0) {
            seconds = strtod (v, &end);
            if (*end || !(seconds > 0) || seconds > 86400) {
                fprintf (stderr, "zinfer bench: --seconds needs a number in (0, 86400]\n");
                return 2;
            }
        }
        else if (strcmp (a, "--batch") == 0 || strcmp (a, "--threads") == 0
                 || strcmp (a, "--warmup") == 0) {
            long x = strtol (v, &end, 10);
            long lo = strcmp (a, "--warmup") == 0 ? 0 : 1;
            if (errno || *end || end == v || x < lo || x > 1000000) {
                fprintf (stderr, "zinfer bench: %s needs an integer >= %ld\n", a, lo);
                return 2;
            }
            *(strcmp (a, "--batch") == 0 ? &batch : strcmp (a, "--threads") == 0 ? &threads
                                                                                 : &warmup) = x;
        }
        else {
            fprintf (stderr, "zinfer bench: unknown option '%s'\n", a);
            s_bench_usage (stderr);
            return 2;
        }
    }
    if (!model) {
        fprintf (stderr, "zinfer bench: give --plan or --endpoint (a running pipeline), "
                 "or --model (this process)\n\n");
        s_bench_usage (stderr);
        return 2;
    }
    char err[1024];
    int status = 1;
    zi_graph_t *g = zi_onnx_load (model, err, sizeof err);
    if (!g) {
        fprintf (stderr, "zinfer bench: %s\n", err);
        return 1;
    }
    zi_exec_opts_t opts = {.nthreads = (int) threads};
    zi_exec_t *ex = zi_exec_new (g, 0, -1, &opts, err, sizeof err);
    int n_in = ex ? zi_exec_n_inputs (ex) : 0;
    int n_out = ex ? zi_exec_n_outputs (ex) : 0;
    zi_tensor_t **ins = (zi_tensor_t **) calloc ((size_t) n_in + 1, sizeof *ins);
    zi_tensor_t **outs = (zi_tensor_t **) calloc ((size_t) n_out + 1, sizeof *outs);
    double *lat = NULL;
    int n_lat = 0, cap_lat = 0;
    if (!ex) {
        fprintf (stderr, "zinfer bench: %s\n", err);
        goto done;
    }
    srand (1);
    for (int i = 0; i < n_in; i++) {
        const zi_value_t *v = zi_exec_input (ex, i);
        int64_t shape[ZI_MAX_RANK];
        if (v->rank < 0) {
            fprintf (stderr, "zinfer bench: input '%s' has no declared shape\n", v->name);
            goto done;
        }
        bool bound = false;
        for (int d = 0; d < v->rank; d++) {
            shape[d] = v->shape[d] >= 0 ? v->shape[d] : (bound ? 1 : batch);
            bound |= v->shape[d] < 0;
        }
        ins[i] = zi_tensor_new (v->dtype ? v->dtype : ZI_DT_F32, v->rank, shape);
        if (!ins[i]) {
            fprintf (stderr, "zinfer bench: cannot allocate input '%s'\n", v->name);
            goto done;
        }
        if (ins[i]->dtype == ZI_DT_F32) {
            float *x = (float *) ins[i]->data;
            for (int64_t k = 0; k < zi_tensor_count (ins[i]); k++) {
                x[k] = (float) rand () / (float) RAND_MAX;
            }
        }
    }
    for (long w = 0; w < warmup + 1; w++) {
        if (zi_exec_run (ex, (const zi_tensor_t *const *) ins, outs, err, sizeof err)) {
            fprintf (stderr, "zinfer bench: %s\n", err);
            goto done;
        }
        for (int k = 0; k < n_out; k++) {
            zi_tensor_destroy (&outs[k]);
        }
    }
    double t0 = s_now (), t;
    do {
        double t1 = s_now ();
        if (zi_exec_run (ex, (const zi_tensor_t *const *) ins, outs, err, sizeof err)) {
            fprintf (stderr, "zinfer bench: %s\n", err);
            goto done;
        }
        t = s_now ();
        for (int k = 0; k < n_out; k++) {
            zi_tensor_destroy (&outs[k]);
        }
        if (n_lat == cap_lat) {
            cap_lat = cap_lat ? cap_lat * 2 : 1024;
            double *grown = (double *) realloc (lat, (size_t) cap_lat * sizeof *lat);
            if (!grown) {
                fprintf (stderr, "zinfer bench: out of memory\n");
                goto done;
            }
            lat = grown;
        }
        lat[n_lat++] = t - t1;
    } while (t - t0 < seconds);
    double total = t - t0;
    qsort (lat, (size_t) n_lat, sizeof *lat, s_cmp_double);
    double sps = (double) n_lat * (double) batch / total;
    if (csv) {
        printf ("zinfer-engine,%s,%ld,%ld,%.1f,%.3f,%.3f\n", model, batch, threads, sps,
                1e3 * s_pct (lat, n_lat, 50), 1e3 * s_pct (lat, n_lat, 99));
    }
    else {
        printf ("model %s: batch %ld, threads %ld, BLAS core %s\n", model, batch, threads,
                zi_blas_corename ());
        printf ("%.1f samples/s over %d runs in %.2f s; latency per batch p50 %.3f ms, "
                "p99 %.3f ms\n", sps, n_lat, total, 1e3 * s_pct (lat, n_lat, 50),
                1e3 * s_pct (lat, n_lat, 99));
    }
    status = 0;
done:
    for (int i = 0; i < n_in; i++) {
        zi_tensor_destroy (&ins[i]);
    }
    free (ins);
    free (outs);
    free (lat);
    zi_exec_destroy (&ex);
    zi_graph_destroy (&g);
    return status;
}

//  ---------------------------------------------------------------------
//  The pipeline benchmark

typedef struct {
    //  fixed inputs (random or --input): copied into every request
    char names[ZI_MSG_MAX_TENSORS][ZI_MSG_MAX_NAME + 1];
    zi_tensor_t *inputs[ZI_MSG_MAX_TENSORS];
    int n_inputs;
    int64_t rows;
    //  the inputs once, in a message every request shares them from by
    //  reference: a load generator should not spend the cores it measures
    //  on copying the same bytes for every request
    zi_msg_t *shared;
    zi_client_t *client;    //  writes them into its shared memory when it has some
    //  or batches of an IDX data set
    zi_tensor_t *images;
    const zi_plan_tensor_t *decl;
    const char *idx_name;
    int64_t batch;
} s_load_t;

static zi_msg_t *
s_load_make (void *arg, int64_t k, int64_t *rows)
{
    s_load_t *ld = (s_load_t *) arg;
    zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
    if (!req) {
        return NULL;
    }
    if (ld->images) {
        int64_t n = ld->images->ne[0];
        int64_t first = (k * ld->batch) % n;
        int64_t b = n - first < ld->batch ? n - first : ld->batch;
        zi_tensor_t *x = zi_cli_idx_batch (ld->images, first, b, ld->decl);
        if (!x || zi_msg_add_tensor (req, ld->idx_name, &x)) {
            zi_tensor_destroy (&x);
            zi_msg_destroy (&req);
            return NULL;
        }
        *rows = b;
        return req;
    }
    if (!ld->shared) {
        ld->shared = zi_msg_new (ZI_CMD_REQUEST);
        for (int i = 0; ld->shared && i < ld->n_inputs; i++) {
            if (zi_client_add_input (ld->client, ld->shared, ld->names[i], ld->inputs[i])) {
                zi_msg_destroy (&ld->shared);
            }
        }
        if (!ld->shared) {
            zi_msg_destroy (&req);
            return NULL;
        }
    }
    for (int i = 0; i < ld->n_inputs; i++) {
        if (zi_msg_add_tensor_ref (req, ld->names[i], ld->shared, (size_t) i)) {
            zi_msg_destroy (&req);
            return NULL;
        }
    }
    *rows = ld->rows;
    return req;
}

//  A random tensor as clients send it: the batch dim (the first -1) bound
//  to batch, other -1 dims to 1; u8 uniform 0..255, floats uniform [0,1).
static zi_tensor_t *
s_random_input (const zi_plan_tensor_t *decl, int64_t batch)
{
    int64_t shape[ZI_MAX_RANK];
    bool bound = false;
    for (int d = 0; d < decl->rank; d++) {
        shape[d] = decl->shape[d] >= 0 ? decl->shape[d] : (bound ? 1 : batch);
        bound |= decl->shape[d] < 0;
    }
    zi_tensor_t *t = zi_tensor_new (decl->dtype, decl->rank, shape);
    int64_t n = t ? zi_tensor_count (t) : 0;
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == ZI_DT_F32) {
            ((float *) t->data)[i] = (float) rand () / ((float) RAND_MAX + 1.0f);
        }
        else if (t->dtype == ZI_DT_F64) {
            ((double *) t->data)[i] = (double) rand () / ((double) RAND_MAX + 1.0);
        }
        else if (t->dtype == ZI_DT_U8) {
            ((uint8_t *) t->data)[i] = (uint8_t) (rand () & 0xff);
        }
    }
    return t;
}

static int
s_bench_pipeline (int argc, char **argv)
{
    const char *plan_path = NULL, *endpoint = NULL, *idx = NULL, *idx_name = NULL;
    const char *specs[ZI_MSG_MAX_TENSORS];
    int n_specs = 0;
    long conc = 8, count = 0, batch = 1, prio = 0, deadline = 0, timeout = 30000;
    double duration = 10;
    bool csv = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp (a, "-h") == 0 || strcmp (a, "--help") == 0) {
            s_bench_usage (stdout);
            return 0;
        }
        if (strcmp (a, "--csv") == 0) {
            csv = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf (stderr, "zinfer bench: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        struct {
            const char *opt;
            long *dst;
            long lo, hi;
        } nums[] = {{"--concurrency", &conc, 1, 4096}, {"--count", &count, 1, 1L << 40},
                    {"--batch", &batch, 1, 1 << 20},   {"--prio", &prio, 0, ZI_MSG_MAX_PRIO},
                    {"--deadline", &deadline, 0, UINT32_MAX},
                    {"--timeout", &timeout, 1, 86400000}};
        bool matched = false;
        for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
            if (strcmp (a, nums[k].opt) == 0) {
                matched = true;
                if (zi_cli_parse_long (v, nums[k].lo, nums[k].hi, nums[k].dst)) {
                    fprintf (stderr, "zinfer bench: %s needs an integer in %ld..%ld\n", a,
                             nums[k].lo, nums[k].hi);
                    return 2;
                }
            }
        }
        if (matched) {
            continue;
        }
        if (strcmp (a, "--plan") == 0) {
            plan_path = v;
        }
        else if (strcmp (a, "--endpoint") == 0) {
            endpoint = v;
        }
        else if (strcmp (a, "--duration") == 0 || strcmp (a, "--seconds") == 0) {
            char *end;
            duration = strtod (v, &end);
            if (*end || end == v || !(duration > 0) || duration > 86400) {
                fprintf (stderr, "zinfer bench: --duration needs seconds in (0, 86400]\n");
                return 2;
            }
        }
        else if (strcmp (a, "--input") == 0) {
            if (n_specs == ZI_MSG_MAX_TENSORS) {
                fprintf (stderr, "zinfer bench: at most %d inputs\n", ZI_MSG_MAX_TENSORS);
                return 2;
            }
            specs[n_specs++] = v;
        }
        else if (strcmp (a, "--idx") == 0) {
            idx = v;
        }
        else if (strcmp (a, "--idx-name") == 0) {
            idx_name = v;
        }
        else {
            fprintf (stderr, "zinfer bench: unknown option '%s'\n\n", a);
            s_bench_usage (stderr);
            return 2;
        }
    }
    if (idx && n_specs) {
        fprintf (stderr, "zinfer bench: give --input or --idx, not both\n");
        return 2;
    }
    zi_plan_t *plan = NULL;
    const char *ep = NULL;
    int status = zi_cli_target ("bench", plan_path, endpoint, &plan, &ep);
    if (status) {
        return status;
    }
    status = 1;
    char err[1024];
    s_load_t ld;
    memset (&ld, 0, sizeof ld);
    ld.batch = batch;
    zi_client_t *client = NULL;
    srand (1);
    if (n_specs) {
        for (int i = 0; i < n_specs; i++) {
            if (zi_cli_parse_input (specs[i], ld.names[i], sizeof ld.names[i], &ld.inputs[i],
                                    err, sizeof err)) {
                fprintf (stderr, "zinfer bench: %s\n", err);
                status = 2;
                goto done;
            }
            ld.n_inputs++;
        }
        ld.rows = ld.inputs[0]->rank > 0 ? ld.inputs[0]->ne[0] : 1;
    }
    else if (idx) {
        if (zi_idx_read (idx, &ld.images, err, sizeof err)) {
            fprintf (stderr, "zinfer bench: %s\n", err);
            goto done;
        }
        if (ld.images->dtype != ZI_DT_U8 || ld.images->rank != 3 || ld.images->ne[0] < 1) {
            fprintf (stderr, "zinfer bench: %s: expected u8 images [N,H,W]\n", idx);
            goto done;
        }
        if (idx_name) {
            ld.idx_name = idx_name;
            for (size_t i = 0; plan && i < plan->model.n_inputs; i++) {
                const zi_plan_tensor_t *d = zi_cli_client_input (plan, i);
                ld.decl = strcmp (d->name, idx_name) == 0 ? d : ld.decl;
            }
        }
        else if (plan) {
            ld.decl = zi_cli_client_input (plan, 0);
            ld.idx_name = ld.decl->name;
        }
        else {
            fprintf (stderr, "zinfer bench: with --endpoint, --idx needs --idx-name NAME\n");
            status = 2;
            goto done;
        }
    }
    else if (plan) {
        for (size_t i = 0; i < plan->model.n_inputs && i < ZI_MSG_MAX_TENSORS; i++) {
            const zi_plan_tensor_t *d = zi_cli_client_input (plan, i);
            ld.inputs[i] = s_random_input (d, batch);
            if (!ld.inputs[i]) {
                fprintf (stderr, "zinfer bench: cannot make a random input '%s'\n", d->name);
                goto done;
            }
            snprintf (ld.names[i], sizeof ld.names[i], "%s", d->name);
            ld.n_inputs++;
        }
        ld.rows = batch;
    }
    else {
        fprintf (stderr, "zinfer bench: with --endpoint, give the inputs (--input or --idx): "
                 "without a plan their shapes are unknown\n");
        status = 2;
        goto done;
    }
    client = plan ? zi_client_new_plan (plan, err, sizeof err)
                  : zi_client_new (ep, err, sizeof err);
    if (!client) {
        fprintf (stderr, "zinfer bench: %s\n", err);
        goto done;
    }
    ld.client = client;
    zi_cli_load_t cfg = {
        .cmd = "bench",
        .unit = "samples",
        .concurrency = (int) conc,
        .timeout_ms = (int) timeout,
        .prio = (int) prio,
        .deadline_ms = (uint32_t) deadline,
        .total = count,
        .duration = duration,
        .make = s_load_make,
        .arg = &ld,
        .progress = true,
    };
    zi_cli_result_t res;
    int rc = zi_cli_drive (client, &cfg, &res);
    if (csv) {
        printf ("zinfer-pipeline,%s,%ld,%ld,%.1f,%.1f,%.3f,%.3f,%.3f,%lld\n", ep, batch, conc,
                (double) res.ok / (res.seconds > 0 ? res.seconds : 1e-9),
                (double) res.samples / (res.seconds > 0 ? res.seconds : 1e-9),
                1e3 * zi_cli_pct (res.latency, res.n_latency, 50),
                1e3 * zi_cli_pct (res.latency, res.n_latency, 99),
                res.n_latency ? 1e3 * res.latency[res.n_latency - 1] : 0.0,
                (long long) res.failed);
    }
    else {
        printf ("pipeline %s: batch %lld, concurrency %ld\n", ep,
                (long long) (ld.images ? batch : ld.rows), conc);
        zi_cli_print_result (&cfg, &res);
    }
    status = rc == 0 && res.ok > 0 ? 0 : 1;
    zi_cli_result_free (&res);
done:
    for (int i = 0; i < ld.n_inputs; i++) {
        zi_tensor_destroy (&ld.inputs[i]);
    }
    zi_tensor_destroy (&ld.images);
    zi_msg_destroy (&ld.shared);
    zi_client_destroy (&client);
    zi_plan_destroy (&plan);
    return status;
}
