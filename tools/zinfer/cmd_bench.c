/*  zinfer bench --model - the single-process engine's speed: the limit the
    pipeline is measured against.

        zinfer bench --model MODEL.onnx [--batch 64] [--threads N]
                     [--seconds 5] [--warmup 3] [--csv]

    Inputs are random (uniform [0,1) floats, zero integers), with the first
    symbolic dimension of every input bound to --batch (others to 1). Prints
    samples/s and per-batch latency percentiles.
*/
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zi_blas.h"
#include "zi_exec.h"
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
             "usage: zinfer bench --model MODEL.onnx [--batch N] [--threads N]\n"
             "                    [--seconds S] [--warmup N] [--csv]\n"
             "\n"
             "Measures the single-process engine: samples/s and latency per batch.\n");
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

int
zi_cmd_bench (int argc, char **argv)
{
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
        fprintf (stderr, "zinfer bench: --model is required (the pipeline benchmark "
                 "arrives with the broker, issue #4)\n");
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
