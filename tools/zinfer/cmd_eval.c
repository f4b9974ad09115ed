/*  zinfer eval - classification accuracy and speed of a model in this
    process, on an IDX data set (Fashion-MNIST's format).

        zinfer eval MODEL.onnx --images t10k-images-idx3-ubyte
                    --labels t10k-labels-idx1-ubyte [--batch 64]
                    [--scale 0.00392156862745098] [--limit N]
                    [--predictions FILE] [--threads N]

    Images (u8 [N,H,W]) become float32 [B,1,H,W] multiplied by --scale
    (default 1/255); the predicted class is the argmax of the first output.
    --predictions writes one predicted class per line, so the pipeline's
    answers can be compared with the single-process engine's.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "zi_blas.h"
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

static void
s_eval_usage (FILE *out)
{
    fprintf (out,
             "usage: zinfer eval MODEL.onnx --images IDX --labels IDX [--batch N]\n"
             "                   [--scale S] [--limit N] [--predictions FILE]\n"
             "                   [--threads N]\n"
             "\n"
             "Runs an image classifier in this process over an IDX data set and\n"
             "prints accuracy, throughput and per-batch latency.\n");
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

int
zi_cmd_eval (int argc, char **argv)
{
    const char *model = NULL, *images = NULL, *labels = NULL, *pred_path = NULL;
    long batch = 64, limit = -1, threads = 0;
    double scale = 1.0 / 255.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp (a, "-h") == 0 || strcmp (a, "--help") == 0) {
            s_eval_usage (stdout);
            return 0;
        }
        if (a[0] == '-' && !v) {
            fprintf (stderr, "zinfer eval: %s needs a value\n", a);
            return 2;
        }
        if (strcmp (a, "--images") == 0) {
            images = argv[++i];
        }
        else if (strcmp (a, "--labels") == 0) {
            labels = argv[++i];
        }
        else if (strcmp (a, "--predictions") == 0) {
            pred_path = argv[++i];
        }
        else if (strcmp (a, "--batch") == 0) {
            if (s_parse_long (argv[++i], 1, 1 << 20, &batch)) {
                fprintf (stderr, "zinfer eval: --batch needs an integer in 1..%d\n", 1 << 20);
                return 2;
            }
        }
        else if (strcmp (a, "--limit") == 0) {
            if (s_parse_long (argv[++i], 1, 1L << 40, &limit)) {
                fprintf (stderr, "zinfer eval: --limit needs a positive integer\n");
                return 2;
            }
        }
        else if (strcmp (a, "--threads") == 0) {
            if (s_parse_long (argv[++i], 1, 1024, &threads)) {
                fprintf (stderr, "zinfer eval: --threads needs an integer in 1..1024\n");
                return 2;
            }
        }
        else if (strcmp (a, "--scale") == 0) {
            char *end;
            scale = strtod (argv[++i], &end);
            if (*end || end == argv[i]) {
                fprintf (stderr, "zinfer eval: --scale needs a number\n");
                return 2;
            }
        }
        else if (a[0] == '-') {
            fprintf (stderr, "zinfer eval: unknown option '%s'\n", a);
            return 2;
        }
        else if (!model) {
            model = a;
        }
        else {
            fprintf (stderr, "zinfer eval: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (!model || !images) {
        s_eval_usage (stderr);
        return 2;
    }
    char err[1024];
    int status = 1;
    zi_tensor_t *img = NULL, *lab = NULL, *x = NULL;
    zi_graph_t *g = NULL;
    zi_exec_t *ex = NULL;
    FILE *pred = NULL;
    if (zi_idx_read (images, &img, err, sizeof err)
        || (labels && zi_idx_read (labels, &lab, err, sizeof err))) {
        fprintf (stderr, "zinfer eval: %s\n", err);
        goto done;
    }
    if (img->dtype != ZI_DT_U8 || img->rank != 3) {
        fprintf (stderr, "zinfer eval: %s: expected u8 images [N,H,W]\n", images);
        goto done;
    }
    int64_t n = img->ne[0], h = img->ne[1], w = img->ne[2];
    if (lab && (lab->rank != 1 || lab->ne[0] != n || lab->dtype != ZI_DT_U8)) {
        fprintf (stderr, "zinfer eval: %s: expected %lld u8 labels\n", labels, (long long) n);
        goto done;
    }
    if (limit > 0 && limit < n) {
        n = limit;
    }
    g = zi_onnx_load (model, err, sizeof err);
    if (!g) {
        fprintf (stderr, "zinfer eval: %s\n", err);
        goto done;
    }
    zi_exec_opts_t opts = {.nthreads = (int) threads};
    ex = zi_exec_new (g, 0, -1, &opts, err, sizeof err);
    if (!ex || zi_exec_n_inputs (ex) != 1 || zi_exec_n_outputs (ex) < 1) {
        fprintf (stderr, "zinfer eval: %s\n", ex ? "the model must have one input" : err);
        goto done;
    }
    if (pred_path && !(pred = fopen (pred_path, "w"))) {
        fprintf (stderr, "zinfer eval: %s: %s\n", pred_path, strerror (errno));
        goto done;
    }
    int64_t correct = 0, done_n = 0;
    double t0 = s_now (), lat_sum = 0, lat_max = 0;
    for (int64_t first = 0; first < n; first += batch) {
        int64_t b = n - first < batch ? n - first : batch;
        int64_t shape[4] = {b, 1, h, w};
        zi_tensor_destroy (&x);
        x = zi_tensor_new (ZI_DT_F32, 4, shape);
        if (!x) {
            fprintf (stderr, "zinfer eval: out of memory\n");
            goto done;
        }
        //  x (b,1,h,w) = img[first:first+b] * scale
        const uint8_t *src = (const uint8_t *) img->data + first * h * w;
        float *dst = (float *) x->data;
        for (int64_t i = 0; i < b * h * w; i++) {
            dst[i] = (float) (src[i] * scale);
        }
        zi_tensor_t **outs = (zi_tensor_t **) calloc ((size_t) zi_exec_n_outputs (ex),
                                                      sizeof *outs);
        double t1 = s_now ();
        const zi_tensor_t *in[1] = {x};
        int rc = outs ? zi_exec_run (ex, in, outs, err, sizeof err) : ZI_ERR_NOMEM;
        double dt = s_now () - t1;
        if (rc) {
            fprintf (stderr, "zinfer eval: %s\n", err);
            free (outs);
            goto done;
        }
        lat_sum += dt;
        lat_max = dt > lat_max ? dt : lat_max;
        const zi_tensor_t *y = outs[0];
        if (y->dtype != ZI_DT_F32 || y->rank != 2 || y->ne[0] != b) {
            fprintf (stderr, "zinfer eval: the first output must be float32 [N,classes]\n");
            for (int k = 0; k < zi_exec_n_outputs (ex); k++) {
                zi_tensor_destroy (&outs[k]);
            }
            free (outs);
            goto done;
        }
        int64_t classes = y->ne[1];
        for (int64_t r = 0; r < b; r++) {
            const float *row = (const float *) y->data + r * classes;
            int64_t arg = 0;
            for (int64_t c = 1; c < classes; c++) {
                if (row[c] > row[arg]) {
                    arg = c;
                }
            }
            if (lab && arg == ((const uint8_t *) lab->data)[first + r]) {
                correct++;
            }
            if (pred) {
                fprintf (pred, "%lld\n", (long long) arg);
            }
        }
        done_n += b;
        for (int k = 0; k < zi_exec_n_outputs (ex); k++) {
            zi_tensor_destroy (&outs[k]);
        }
        free (outs);
        if (isatty (2)) {
            fprintf (stderr, "\r%lld / %lld images", (long long) done_n, (long long) n);
        }
    }
    double total = s_now () - t0;
    if (isatty (2)) {
        fprintf (stderr, "\n");
    }
    printf ("images: %lld, batch %ld, BLAS core %s\n", (long long) done_n, batch,
            zi_blas_corename ());
    if (lab) {
        printf ("accuracy: %.2f%% (%lld / %lld)\n", 100.0 * (double) correct / (double) done_n,
                (long long) correct, (long long) done_n);
    }
    printf ("throughput: %.0f images/s; latency per batch: mean %.3f ms, max %.3f ms\n",
            (double) done_n / total, 1e3 * lat_sum / (double) ((done_n + batch - 1) / batch),
            1e3 * lat_max);
    status = 0;
done:
    if (pred) {
        fclose (pred);
    }
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&img);
    zi_tensor_destroy (&lab);
    zi_exec_destroy (&ex);
    zi_graph_destroy (&g);
    return status;
}
