/*  zinfer-broker - the broker: admits requests, dispatches micro-batches to
    segment replicas by weight and priority, re-dispatches the work of dead
    workers, answers every client exactly once.

        zinfer-broker --plan PLAN.json [--name NAME] [--log-level L]

    The work is in lib/zi_broker.c; this file parses options and exits with
    2 for a usage error (unknown option, missing or unreadable plan), 1 when
    the broker cannot start (an endpoint cannot be bound) or fails, 0 after
    a clean stop on SIGINT / SIGTERM (it drains the requests in flight for
    up to two seconds first).
*/
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "zi_blas.h"
#include "zi_broker.h"
#include "zi_log.h"
#include "zi_plan.h"
#include "zi_version.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: zinfer-broker --plan PLAN [--name NAME] [--log-level LEVEL]\n"
             "\n"
             "The zinfer broker: the one process every other connects to. It binds\n"
             "the plan's broker endpoints, admits requests, balances tasks across the\n"
             "segment replicas by capacity and priority, and answers STATS and HEALTH.\n"
             "\n"
             "  --plan PLAN        the plan file (as written by `zinfer plan`)\n"
             "  --name NAME        a name for the logs (optional; default: none)\n"
             "  --log-level LEVEL  debug, info, warn, error or off (default: info,\n"
             "                     or $ZI_LOG_LEVEL)\n"
             "  -h, --help         show this help\n"
             "  -V, --version      show the version\n");
}

static int
s_parse_level (const char *text, zi_log_level_t *level)
{
    static const char *names[] = { "debug", "info", "warn", "error", "off" };
    for (int i = 0; i < 5; i++) {
        if (strcasecmp (text, names[i]) == 0) {
            *level = (zi_log_level_t)i;
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
    zi_log_set_ident ("zinfer-broker", NULL);
    const char *plan_path = NULL, *name = NULL;
    for (int i = 1; i < argc; i++) {
        const char *value;
        if (strcmp (argv[i], "-h") == 0 || strcmp (argv[i], "--help") == 0) {
            s_usage (stdout);
            return 0;
        }
        if (strcmp (argv[i], "-V") == 0 || strcmp (argv[i], "--version") == 0) {
            printf ("zinfer-broker %s\n", ZINFER_VERSION);
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
                fprintf (stderr,
                         "zinfer-broker: --log-level: '%s' is not one of "
                         "debug, info, warn, error, off\n",
                         value);
                return 2;
            }
            zi_log_set_level (level);
        }
        else {
            fprintf (stderr, "zinfer-broker: unknown or incomplete option '%s'\n\n",
                     argv[i]);
            s_usage (stderr);
            return 2;
        }
    }
    if (!plan_path) {
        fprintf (stderr, "zinfer-broker: --plan is required\n\n");
        s_usage (stderr);
        return 2;
    }
    if (name) {
        zi_log_set_ident ("zinfer-broker", name);
    }
    //  CZMQ's handler: SIGINT / SIGTERM only set zsys_interrupted, and the
    //  loop drains and leaves on its own.
    zsys_init ();

    char err[1024];
    zi_plan_t *plan = zi_plan_load (plan_path, err, sizeof err);
    if (!plan) {
        fprintf (stderr, "zinfer-broker: %s\n", err);
        return 2;
    }
    zi_broker_t *broker = zi_broker_new (plan, err, sizeof err);
    if (!broker) {
        zi_log_error ("BROKER-START-FAILED", "%s", err);
        zi_plan_destroy (&plan);
        return 1;
    }
    int rc = zi_broker_run (broker);
    zi_broker_destroy (&broker);
    zi_plan_destroy (&plan);
    return rc ? 1 : 0;
}
