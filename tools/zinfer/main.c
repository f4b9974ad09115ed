/*  zinfer - the operator command: one entry point, one subcommand per job. */
#include <stdio.h>
#include <string.h>

#include "zi_blas.h"
#include "zi_log.h"
#include "zi_version.h"
#include "zinfer.h"

typedef struct {
    const char *name;
    int (*fn) (int argc, char **argv);
    const char *help;
} s_command_t;

static const s_command_t s_commands[] = {
    {"plan", zi_cmd_plan, "cut a model into segments for its replicas and write the plan file"},
    {"run", zi_cmd_run, "run a model (or one segment of it) in this process on .npy inputs"},
    {"info", zi_cmd_info, "list a model's inputs, outputs and nodes in topological order"},
    {"eval", zi_cmd_eval, "accuracy and speed of a classifier on an IDX data set, in this process"},
    {"bench", zi_cmd_bench, "drive load through a pipeline, or measure the engine (--model)"},
    {"up", zi_cmd_up, "start this host's share of a plan and supervise it (Ctrl-C stops it)"},
    {"infer", zi_cmd_infer, "send inputs (.npy, raw, an IDX data set) to a pipeline, print answers"},
    {"stats", zi_cmd_stats, "print a running broker's statistics as tables (or --json)"},
    {"keys", zi_cmd_keys, "make CURVE certificates for the broker and the other processes"},
    {"conformance", zi_cmd_conformance, "run ONNX backend test directories and report pass/fail"},
    {NULL, NULL, NULL},
};

static void
s_usage (FILE *out)
{
    fprintf (out, "usage: zinfer COMMAND [options]   (zinfer COMMAND --help for details)\n\n"
                  "zinfer %s: distributed pipeline-parallel ONNX inference over ZeroMQ.\n\n"
                  "commands:\n", ZINFER_VERSION);
    for (const s_command_t *c = s_commands; c->name; c++) {
        fprintf (out, "  %-13s %s\n", c->name, c->help);
    }
    fprintf (out, "  %-13s %s\n", "version", "print the version and the BLAS kernel in use");
}

int
main (int argc, char **argv)
{
    zi_blas_init (argc, argv);
    zi_log_set_ident ("zinfer", NULL);
    if (argc < 2 || strcmp (argv[1], "-h") == 0 || strcmp (argv[1], "--help") == 0
        || strcmp (argv[1], "help") == 0) {
        s_usage (argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp (argv[1], "version") == 0 || strcmp (argv[1], "--version") == 0
        || strcmp (argv[1], "-V") == 0) {
        printf ("zinfer %s (OpenBLAS core: %s)\n", ZINFER_VERSION, zi_blas_corename ());
        return 0;
    }
    for (const s_command_t *c = s_commands; c->name; c++) {
        if (strcmp (argv[1], c->name) == 0) {
            return c->fn (argc - 1, argv + 1);
        }
    }
    fprintf (stderr, "zinfer: unknown command '%s'\n\n", argv[1]);
    s_usage (stderr);
    return 2;
}
