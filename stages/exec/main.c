/*  zinfer-exec - the exec stage: runs one model segment for the broker.

        zinfer-exec --plan PLAN.json --name s0r1 [--log-level L]

    The work is in lib/zi_worker.c; this file parses options and exits with
    2 for a usage error (unknown option, unreadable plan, a name that is not
    an exec replica of the plan), 1 when the worker cannot start (model
    missing or not the plan's, segment mismatch) or fails, 0 after a clean
    stop on SIGINT / SIGTERM.
*/
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "zi_blas.h"
#include "zi_log.h"
#include "zi_plan.h"
#include "zi_version.h"
#include "zi_worker.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: zinfer-exec --plan PLAN --name REPLICA [--log-level LEVEL]\n"
             "\n"
             "The zinfer exec stage: runs one model segment (the one replica REPLICA of\n"
             "the plan serves) on OpenBLAS-backed kernels, for the broker.\n"
             "\n"
             "  --plan PLAN        the plan file (as written by `zinfer plan`)\n"
             "  --name REPLICA     this process's replica name in the plan (e.g. s0r1)\n"
             "  --log-level LEVEL  debug, info, warn, error or off (default: info,\n"
             "                     or $ZI_LOG_LEVEL)\n"
             "  -h, --help         show this help\n"
             "  -V, --version      show the version\n");
}

static int
s_parse_level (const char *text, zi_log_level_t *level)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++) {
        if (strcasecmp (text, names[i]) == 0) {
            *level = (zi_log_level_t) i;
            return 0;
        }
    }
    return -1;
}

//  "--opt VALUE" or "--opt=VALUE": the value, advancing *i; NULL if absent.
static const char *
s_value (int argc, char **argv, int *i, const char *opt)
{
    size_t len = strlen (opt);
    if (strncmp (argv[*i], opt, len) == 0 && argv[*i][len] == '=') {
        return argv[*i] + len + 1;
    }
    if (strcmp (argv[*i], opt) == 0 && *i + 1 < argc) {
        return argv[++*i];
    }
    return NULL;
}

int
main (int argc, char **argv)
{
    zi_blas_init (argc, argv);
    zi_log_set_ident ("zinfer-exec", NULL);
    const char *plan_path = NULL, *name = NULL;
    for (int i = 1; i < argc; i++) {
        const char *value;
        if (strcmp (argv[i], "-h") == 0 || strcmp (argv[i], "--help") == 0) {
            s_usage (stdout);
            return 0;
        }
        if (strcmp (argv[i], "-V") == 0 || strcmp (argv[i], "--version") == 0) {
            printf ("zinfer-exec %s (OpenBLAS core: %s)\n", ZINFER_VERSION,
                    zi_blas_corename ());
            return 0;
        }
        if ((value = s_value (argc, argv, &i, "--plan"))) {
            plan_path = value;
        }
        else if ((value = s_value (argc, argv, &i, "--name"))) {
            name = value;
        }
        else if ((value = s_value (argc, argv, &i, "--log-level"))) {
            zi_log_level_t level;
            if (s_parse_level (value, &level)) {
                fprintf (stderr, "zinfer-exec: --log-level: '%s' is not one of debug, "
                         "info, warn, error, off\n", value);
                return 2;
            }
            zi_log_set_level (level);
        }
        else {
            fprintf (stderr, "zinfer-exec: unknown or incomplete option '%s'\n\n", argv[i]);
            s_usage (stderr);
            return 2;
        }
    }
    if (!plan_path || !name) {
        fprintf (stderr, "zinfer-exec: %s is required\n\n", !plan_path ? "--plan" : "--name");
        s_usage (stderr);
        return 2;
    }
    zi_log_set_ident ("zinfer-exec", name);
    //  CZMQ's signal handler, before the (possibly long) model load: a
    //  SIGTERM then only sets zsys_interrupted and the worker leaves cleanly.
    zsys_init ();

    char err[1024];
    zi_plan_t *plan = zi_plan_load (plan_path, err, sizeof err);
    if (!plan) {
        fprintf (stderr, "zinfer-exec: %s\n", err);
        return 2;
    }
    if (!zi_worker_find_replica (plan, name, NULL, err, sizeof err)) {
        fprintf (stderr, "zinfer-exec: %s: %s\n", plan_path, err);
        zi_plan_destroy (&plan);
        return 2;
    }
    zi_worker_t *worker = zi_worker_new (plan, name, err, sizeof err);
    if (!worker) {
        zi_log_error ("EXEC-START-FAILED", "%s", err);
        zi_plan_destroy (&plan);
        return 1;
    }
    int rc = zi_worker_run (worker, err, sizeof err);
    if (rc) {
        zi_log_error ("EXEC-FAILED", "%s", err);
    }
    zi_worker_destroy (&worker);
    zi_plan_destroy (&plan);
    return rc ? 1 : 0;
}
