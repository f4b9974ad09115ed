/*  zinfer run - run a model, or one segment of it, in this process.

        zinfer run MODEL.onnx --input NAME=FILE.npy [--input ...]
                   [--segment FIRST:LAST] [--out DIR] [--threads N]

    Inputs and outputs are numpy .npy files, so any user can prepare inputs
    and check outputs with numpy (an input may also be an ONNX TensorProto
    .pb file, the backend tests' format). Each output is written as DIR/<name>.npy,
    with characters other than [A-Za-z0-9._-] in the name replaced by '_'
    (PyTorch names tensors like "/conv1/Conv_output_0").

        zinfer info MODEL.onnx      lists inputs, outputs and the nodes in
                                    topological order (to choose segments)
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "zi_blas.h"
#include "zi_exec.h"
#include "zi_npy.h"
#include "zi_onnx.h"
#include "zinfer.h"

#define S_MAX_INPUTS 64

static void
s_run_usage (FILE *out)
{
    fprintf (out,
             "usage: zinfer run MODEL.onnx --input NAME=FILE.npy [--input ...]\n"
             "                  [--segment FIRST:LAST] [--out DIR] [--threads N]\n"
             "                  [--repeat N] [--profile]\n"
             "\n"
             "Runs the model (or nodes FIRST..LAST of its topological order, see\n"
             "`zinfer info`) in this process. Every output is printed and, with\n"
             "--out, written as DIR/<output name>.npy.\n");
}

//  Parse "FIRST:LAST" (LAST may be empty or -1 for "to the end").
static int
s_parse_segment (const char *text, int *first, int *last)
{
    char *end;
    errno = 0;
    long a = strtol (text, &end, 10);
    if (errno || end == text || *end != ':' || a < 0 || a > 1000000000) {
        return -1;
    }
    const char *b_text = end + 1;
    if (*b_text == 0) {
        *first = (int) a;
        *last = -1;
        return 0;
    }
    long b = strtol (b_text, &end, 10);
    if (errno || end == b_text || *end != 0 || b < -1 || b > 1000000000) {
        return -1;
    }
    *first = (int) a;
    *last = (int) b;
    return 0;
}

static void
s_safe_name (const char *name, char *buf, size_t len)
{
    size_t i = 0;
    for (; name[i] && i + 1 < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                  || c == '.' || c == '_' || c == '-';
        buf[i] = ok ? c : '_';
    }
    buf[i] = 0;
    if (i == 0 || strcmp (buf, ".") == 0 || strcmp (buf, "..") == 0) {
        snprintf (buf, len, "output");
    }
}

static void
s_print_tensor (const char *name, const zi_tensor_t *t)
{
    char shape[96];
    printf ("%s: %s%s", name, zi_dtype_name (t->dtype),
            zi_tensor_shape_str (t, shape, sizeof shape));
    int64_t n = zi_tensor_count (t);
    int show = n < 8 ? (int) n : 8;
    printf (" [");
    for (int i = 0; i < show; i++) {
        switch (t->dtype) {
            case ZI_DT_F32: printf ("%s%g", i ? " " : "", ((const float *) t->data)[i]); break;
            case ZI_DT_I64: printf ("%s%lld", i ? " " : "",
                                    (long long) ((const int64_t *) t->data)[i]); break;
            case ZI_DT_I32: printf ("%s%d", i ? " " : "", ((const int32_t *) t->data)[i]); break;
            case ZI_DT_BOOL:
            case ZI_DT_U8: printf ("%s%u", i ? " " : "", ((const uint8_t *) t->data)[i]); break;
            default: printf ("%s?", i ? " " : ""); break;
        }
    }
    printf ("%s]\n", n > show ? " ..." : "");
}

int
zi_cmd_run (int argc, char **argv)
{
    const char *model = NULL, *out_dir = NULL;
    const char *in_names[S_MAX_INPUTS];
    const char *in_files[S_MAX_INPUTS];
    int n_in = 0, first = 0, last = -1, threads = 0, repeat = 1;
    bool profile = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (strcmp (a, "-h") == 0 || strcmp (a, "--help") == 0) {
            s_run_usage (stdout);
            return 0;
        }
        else if (strcmp (a, "--input") == 0 || strcmp (a, "-i") == 0) {
            if (!has_val) {
                fprintf (stderr, "zinfer run: --input needs NAME=FILE.npy\n");
                return 2;
            }
            char *spec = argv[++i];
            char *eq = strchr (spec, '=');
            if (!eq || eq == spec || !eq[1]) {
                fprintf (stderr, "zinfer run: --input '%s' is not NAME=FILE.npy\n", spec);
                return 2;
            }
            if (n_in == S_MAX_INPUTS) {
                fprintf (stderr, "zinfer run: more than %d inputs\n", S_MAX_INPUTS);
                return 2;
            }
            *eq = 0;
            in_names[n_in] = spec;
            in_files[n_in++] = eq + 1;
        }
        else if (strcmp (a, "--profile") == 0) {
            profile = true;
        }
        else if (strcmp (a, "--segment") == 0) {
            if (!has_val || s_parse_segment (argv[++i], &first, &last)) {
                fprintf (stderr, "zinfer run: --segment needs FIRST:LAST node indices "
                         "(e.g. 0:7, or 8: for the rest)\n");
                return 2;
            }
        }
        else if (strcmp (a, "--out") == 0 || strcmp (a, "-o") == 0) {
            if (!has_val) {
                fprintf (stderr, "zinfer run: --out needs a directory\n");
                return 2;
            }
            out_dir = argv[++i];
        }
        else if (strcmp (a, "--threads") == 0 || strcmp (a, "--repeat") == 0) {
            char *end;
            long v = has_val ? strtol (argv[i + 1], &end, 10) : 0;
            if (!has_val || *end || v < 1 || v > 1000000) {
                fprintf (stderr, "zinfer run: %s needs a positive integer\n", a);
                return 2;
            }
            i++;
            if (strcmp (a, "--threads") == 0) {
                threads = (int) v;
            }
            else {
                repeat = (int) v;
            }
        }
        else if (a[0] == '-') {
            fprintf (stderr, "zinfer run: unknown option '%s'\n", a);
            s_run_usage (stderr);
            return 2;
        }
        else if (!model) {
            model = a;
        }
        else {
            fprintf (stderr, "zinfer run: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (!model) {
        s_run_usage (stderr);
        return 2;
    }
    char err[1024];
    zi_graph_t *g = zi_onnx_load (model, err, sizeof err);
    if (!g) {
        fprintf (stderr, "zinfer run: %s\n", err);
        return 1;
    }
    zi_exec_opts_t opts = {.nthreads = threads, .profile = profile};
    zi_exec_t *ex = zi_exec_new (g, first, last, &opts, err, sizeof err);
    if (!ex) {
        fprintf (stderr, "zinfer run: %s\n", err);
        zi_graph_destroy (&g);
        return 1;
    }
    int status = 1;
    zi_tensor_t *inputs[S_MAX_INPUTS] = {0};
    int n_out = zi_exec_n_outputs (ex);
    zi_tensor_t **outs = (zi_tensor_t **) calloc ((size_t) (n_out > 0 ? n_out : 1),
                                                  sizeof *outs);
    if (!outs) {
        goto done;
    }
    for (int i = 0; i < n_in; i++) {
        //  .pb: a serialized ONNX TensorProto (the backend tests' format);
        //  anything else is read as .npy.
        size_t len = strlen (in_files[i]);
        bool pb = len > 3 && strcmp (in_files[i] + len - 3, ".pb") == 0;
        if (pb) {
            inputs[i] = zi_onnx_load_tensor (in_files[i], NULL, err, sizeof err);
        }
        if (pb ? !inputs[i] : zi_npy_read (in_files[i], &inputs[i], err, sizeof err) != 0) {
            fprintf (stderr, "zinfer run: input '%s': %s\n", in_names[i], err);
            goto done;
        }
    }
    struct timespec t0, t1;
    clock_gettime (CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < repeat; r++) {
        if (r > 0) {
            for (int i = 0; i < n_out; i++) {
                zi_tensor_destroy (&outs[i]);
            }
        }
        if (zi_exec_run_named (ex, n_in, in_names, (const zi_tensor_t *const *) inputs,
                               outs, err, sizeof err)) {
            fprintf (stderr, "zinfer run: %s\n", err);
            goto done;
        }
    }
    clock_gettime (CLOCK_MONOTONIC, &t1);
    double ms = ((double) (t1.tv_sec - t0.tv_sec) * 1e3
                 + (double) (t1.tv_nsec - t0.tv_nsec) / 1e6) / repeat;
    if (out_dir && mkdir (out_dir, 0777) && errno != EEXIST) {
        fprintf (stderr, "zinfer run: cannot create '%s': %s\n", out_dir, strerror (errno));
        goto done;
    }
    for (int i = 0; i < n_out; i++) {
        const char *name = zi_exec_output (ex, i)->name;
        s_print_tensor (name, outs[i]);
        if (out_dir) {
            char safe[256], path[4096];
            s_safe_name (name, safe, sizeof safe);
            snprintf (path, sizeof path, "%s/%s.npy", out_dir, safe);
            if (zi_npy_write (path, outs[i], err, sizeof err)) {
                fprintf (stderr, "zinfer run: %s\n", err);
                goto done;
            }
        }
    }
    if (profile) {
        //  nodes by time spent, with their share of the total
        int hi = last < 0 ? g->n_nodes - 1 : last;
        double total = 0;
        for (int n = first; n <= hi; n++) {
            total += zi_exec_node_seconds (ex, n);
        }
        printf ("profile (%d runs; fused nodes count in their producer):\n", repeat);
        for (int shown = 0; shown < 15; shown++) {
            int best = -1;
            for (int n = first; n <= hi; n++) {
                double t = zi_exec_node_seconds (ex, n);
                if (t > 0 && (best < 0 || t > zi_exec_node_seconds (ex, best))) {
                    best = n;
                }
            }
            if (best < 0) {
                break;
            }
            double t = zi_exec_node_seconds (ex, best);
            printf ("  %4d %-20s %-28.28s %9.3f ms %5.1f%%\n", best, g->nodes[best].op_type,
                    g->nodes[best].name, 1e3 * t / repeat, total > 0 ? 100 * t / total : 0);
            //  mark as printed: profile counters are only read from here on
            zi_exec_node_seconds_reset (ex, best);
        }
    }
    fflush (stdout);
    fprintf (stderr, "zinfer run: %d nodes, %.3f ms per run (%d runs, BLAS core %s), "
             "activation arena %zu bytes (%zu without reuse)\n",
             (last < 0 ? g->n_nodes - 1 : last) - first + 1, ms, repeat,
             zi_blas_corename (), zi_exec_peak_bytes (ex), zi_exec_naive_bytes (ex));
    status = 0;
done:
    for (int i = 0; i < n_in; i++) {
        zi_tensor_destroy (&inputs[i]);
    }
    if (outs) {
        for (int i = 0; i < n_out; i++) {
            zi_tensor_destroy (&outs[i]);
        }
        free (outs);
    }
    zi_exec_destroy (&ex);
    zi_graph_destroy (&g);
    return status;
}

static void
s_print_value (const zi_value_t *v)
{
    printf ("  %-32s %s", v->name, v->dtype ? zi_dtype_name (v->dtype) : "?");
    if (v->rank >= 0) {
        printf ("[");
        for (int i = 0; i < v->rank; i++) {
            if (v->shape[i] < 0) {
                printf ("%s?", i ? "," : "");
            }
            else {
                printf ("%s%lld", i ? "," : "", (long long) v->shape[i]);
            }
        }
        printf ("]");
    }
    printf ("\n");
}

int
zi_cmd_info (int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        fprintf (argc == 2 && strcmp (argv[1], "--help") == 0 ? stdout : stderr,
                 "usage: zinfer info MODEL.onnx\n\nLists the model's inputs, outputs "
                 "and nodes in topological order (the indices --segment uses).\n");
        return argc == 2 && strcmp (argv[1], "--help") == 0 ? 0 : 2;
    }
    char err[1024];
    zi_graph_t *g = zi_onnx_load (argv[1], err, sizeof err);
    if (!g) {
        fprintf (stderr, "zinfer info: %s\n", err);
        return 1;
    }
    size_t weights = 0;
    for (int v = 0; v < g->n_values; v++) {
        if (g->values[v].init) {
            weights += g->values[v].init->nbytes;
        }
    }
    printf ("model %s: opset %lld, %d nodes, %zu weight bytes\ninputs:\n", argv[1],
            (long long) g->opset, g->n_nodes, weights);
    for (int i = 0; i < g->n_inputs; i++) {
        s_print_value (&g->values[g->inputs[i]]);
    }
    printf ("outputs:\n");
    for (int i = 0; i < g->n_outputs; i++) {
        s_print_value (&g->values[g->outputs[i]]);
    }
    printf ("nodes:\n");
    for (int n = 0; n < g->n_nodes; n++) {
        const zi_node_t *node = &g->nodes[n];
        printf ("  %4d  %-20s %s\n", n, node->op_type, node->name);
    }
    zi_graph_destroy (&g);
    return 0;
}
