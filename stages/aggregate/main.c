/*  zinfer-aggregate - the aggregate stage: reassembles micro-batch outputs and post-processes them.

    The stage loop arrives with the pipeline (issue #4); today the program
    answers --help and --version so launchers and packaging can rely on it.
*/
#include <stdio.h>
#include <string.h>

#include "zi_blas.h"
#include "zi_log.h"
#include "zi_version.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: zinfer-aggregate --plan PLAN [--replica N] [options]\n"
             "\n"
             "The zinfer aggregate stage: reassembles micro-batch outputs and post-processes them.\n"
             "\n"
             "  -h, --help       show this help\n"
             "  -V, --version    show the version\n");
}

int
main (int argc, char **argv)
{
    zi_blas_init (argc, argv);
    zi_log_set_ident ("zinfer-aggregate", NULL);
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv[i], "-h") == 0 || strcmp (argv[i], "--help") == 0) {
            s_usage (stdout);
            return 0;
        }
        if (strcmp (argv[i], "-V") == 0 || strcmp (argv[i], "--version") == 0) {
            printf ("zinfer-aggregate %s\n", ZINFER_VERSION);
            return 0;
        }
    }
    fprintf (stderr, "zinfer-aggregate: the stage loop is not available in this "
             "version yet (see issue #4); try --help\n");
    return 2;
}
