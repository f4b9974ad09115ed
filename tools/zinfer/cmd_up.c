/*  zinfer up - start this host's share of a plan and supervise it.

        zinfer up PLAN.json [--host NAME] [--bin DIR] [--log-level LEVEL]

    Starts the broker (if it runs on this host), every exec replica and
    every stage replica placed on this host, restarts any that exits (with
    a backoff, zi_supervisor.h), and on Ctrl-C / SIGTERM / SIGHUP stops them
    all (SIGTERM, 5 s, SIGKILL) and exits 0. Once the broker answers HEALTH
    ready it prints "zinfer up: ready (N processes)" on stdout, so a script
    can wait for that line.

    Log lines (stderr; the children's own lines pass through unchanged):
        UP-STARTED      a child started (pid, restart count)
        UP-RESTART      a child exited unexpectedly: status or signal, uptime,
                        the delay before it starts again
        UP-RESTART-FAILED  it could not be started again (tried later)
        UP-RUNNING      every child of this host started
        UP-NOT-READY    the broker is not ready after 30 s (still waiting)
        UP-NO-HEALTH    the broker's health cannot be watched
        UP-IPC-DIR      a missing directory of an ipc endpoint was created
        UP-CORES        this host's exec threads and cores; UP-OVERSUBSCRIBED
                        when the threads outnumber the cores
        UP-STOPPING, UP-EXITED, UP-KILLED, UP-STOPPED   the shutdown: each
                        child's exit, SIGKILL after the grace time, done
*/
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zi_client.h"
#include "zi_log.h"
#include "zi_plan.h"
#include "zi_supervisor.h"
#include "zinfer.h"

//  How long to wait for HEALTH ready before warning (the wait goes on).
#define S_READY_WARN_MS 30000

static volatile sig_atomic_t s_stop = 0;

static void
s_on_signal (int sig)
{
    s_stop = sig;
}

static void
s_up_usage (FILE *out)
{
    fprintf (
        out,
        "usage: zinfer up PLAN.json [--host NAME] [--bin DIR] [--log-level LEVEL]\n"
        "\n"
        "Starts this host's share of the plan (the broker if it runs here, every\n"
        "exec and stage replica placed on this host), restarts any process that\n"
        "dies, and stops them all on Ctrl-C or SIGTERM.\n"
        "\n"
        "  --host NAME        which host of the plan this is (default: the only host,\n"
        "                     or the one whose address is this machine's)\n"
        "  --bin DIR          where zinfer-broker, zinfer-exec, ... are (default: the\n"
        "                     directory of this zinfer)\n"
        "  --log-level LEVEL  passed to the built-in programs (debug, info, warn,\n"
        "                     error, off)\n");
}

//  The directory of the running executable, into buf.
static int
s_self_dir (char *buf, size_t len)
{
    ssize_t n = readlink ("/proc/self/exe", buf, len - 1);
    if (n <= 0) {
        return -1;
    }
    buf[n] = 0;
    char *slash = strrchr (buf, '/');
    if (!slash) {
        return -1;
    }
    *slash = 0;
    return 0;
}

//  Create the directories of the plan's ipc endpoints that do not exist
//  (the broker binds them; a temporary directory may have been cleaned).
static int
s_make_ipc_dirs (const zi_plan_t *plan)
{
    for (int e = 0; e < ZI_PLAN_EP_COUNT; e++) {
        const char *bind = plan->broker.endpoints[e].bind;
        if (!bind || strncmp (bind, "ipc://", 6) != 0) {
            continue;
        }
        char dir[PATH_MAX];
        snprintf (dir, sizeof dir, "%s", bind + 6);
        char *slash = strrchr (dir, '/');
        if (!slash || slash == dir) {
            continue;
        }
        *slash = 0;
        //  mkdir -p, one level at a time
        for (char *p = dir + 1;; p++) {
            if (*p == '/' || *p == 0) {
                char c = *p;
                *p = 0;
                if (mkdir (dir, 0700) == 0) {
                    zi_log_info ("UP-IPC-DIR", "created %s for the ipc endpoints", dir);
                }
                else if (errno != EEXIST) {
                    fprintf (
                        stderr, "zinfer up: cannot create %s (for the %s endpoint): %s\n",
                        dir, zi_plan_endpoint_name ((zi_plan_ep_t)e), strerror (errno));
                    return -1;
                }
                *p = c;
                if (!c) {
                    break;
                }
            }
        }
    }
    return 0;
}

int
zi_cli_cores (void)
{
    cpu_set_t set;
    CPU_ZERO (&set);
    if (sched_getaffinity (0, sizeof set, &set) == 0 && CPU_COUNT (&set) > 0) {
        return CPU_COUNT (&set);
    }
    long n = sysconf (_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int) n : 1;
}

//  More exec threads on this host than it has cores and the workers
//  preempt each other, and the broker and stages preempt them, on every
//  task: each runs slower than it would alone. Said once, at start.
static void
s_check_cores (const zi_plan_t *plan, const char *host)
{
    int64_t threads = 0, replicas = 0;
    for (size_t s = 0; s < plan->n_segments; s++) {
        for (size_t r = 0; r < plan->segments[s].n_replicas; r++) {
            const zi_plan_replica_t *rep = &plan->segments[s].replicas[r];
            if (rep->host && strcmp (rep->host, host) == 0) {
                threads += rep->threads > 0 ? rep->threads : 1;
                replicas++;
            }
        }
    }
    int cores = zi_cli_cores ();
    if (threads > cores) {
        zi_log_warn ("UP-OVERSUBSCRIBED",
                     "host %s runs %" PRId64 " exec threads (%" PRId64 " replicas) on %d "
                     "cores: the workers will take turns on them and each run slower; give "
                     "this host fewer replicas or threads (zinfer plan --replica "
                     "SEG@HOST:R:CREDIT:THREADS)",
                     host, threads, replicas, cores);
    }
    else if (replicas > 0) {
        zi_log_info ("UP-CORES", "host %s: %" PRId64 " exec threads (%" PRId64 " replicas) on "
                     "%d cores", host, threads, replicas, cores);
    }
}

int
zi_cmd_up (int argc, char **argv)
{
    const char *plan_path = NULL, *host_arg = NULL, *bindir_arg = NULL, *level = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp (a, "-h") == 0 || strcmp (a, "--help") == 0) {
            s_up_usage (stdout);
            return 0;
        }
        if (strcmp (a, "--host") == 0 || strcmp (a, "--bin") == 0
            || strcmp (a, "--log-level") == 0) {
            if (i + 1 >= argc) {
                fprintf (stderr, "zinfer up: %s needs a value\n", a);
                return 2;
            }
            const char **slot = strcmp (a, "--host") == 0  ? &host_arg
                                : strcmp (a, "--bin") == 0 ? &bindir_arg
                                                           : &level;
            *slot = argv[++i];
        }
        else if (a[0] == '-') {
            fprintf (stderr, "zinfer up: unknown option '%s'\n\n", a);
            s_up_usage (stderr);
            return 2;
        }
        else if (!plan_path) {
            plan_path = a;
        }
        else {
            fprintf (stderr, "zinfer up: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (!plan_path) {
        s_up_usage (stderr);
        return 2;
    }
    if (level) {
        static const char *levels[] = { "debug", "info", "warn", "error", "off" };
        int found = -1;
        for (int l = 0; l < 5; l++) {
            found = strcasecmp (level, levels[l]) == 0 ? l : found;
        }
        if (found < 0) {
            fprintf (stderr,
                     "zinfer up: --log-level: '%s' is not one of debug, info, warn, "
                     "error, off\n",
                     level);
            return 2;
        }
        zi_log_set_level ((zi_log_level_t)found);
    }
    char err[1024];
    zi_plan_t *plan = zi_plan_load (plan_path, err, sizeof err);
    if (!plan) {
        fprintf (stderr, "zinfer up: %s\n", err);
        return 2;
    }
    const char *host = zi_supervisor_pick_host (plan, host_arg, err, sizeof err);
    if (!host) {
        fprintf (stderr, "zinfer up: %s: %s\n", plan_path, err);
        zi_plan_destroy (&plan);
        return 2;
    }
    zi_log_set_ident ("zinfer-up", host);
    char bindir[PATH_MAX];
    if (bindir_arg) {
        snprintf (bindir, sizeof bindir, "%s", bindir_arg);
    }
    else if (s_self_dir (bindir, sizeof bindir)) {
        fprintf (stderr,
                 "zinfer up: cannot find the directory of this program; use --bin\n");
        zi_plan_destroy (&plan);
        return 2;
    }
    const char *extra[3] = { level ? "--log-level" : NULL, level, NULL };
    int status = 1;
    zi_client_t *client = NULL;
    zi_supervisor_t *sup = zi_supervisor_new ();
    int n = sup ? zi_supervisor_add_plan (sup, plan, plan_path, host, bindir, extra, err,
                                          sizeof err)
                : ZI_ERR_NOMEM;
    if (n < 0) {
        fprintf (stderr, "zinfer up: %s\n", n == ZI_ERR_NOMEM ? "out of memory" : err);
        goto done;
    }
    if (n == 0) {
        fprintf (stderr, "zinfer up: host '%s' runs none of the plan's processes\n",
                 host);
        goto done;
    }
    if (strcmp (plan->broker.host, host) == 0 && s_make_ipc_dirs (plan)) {
        goto done;
    }
    s_check_cores (plan, host);
    //  CZMQ installs its own SIGINT/SIGTERM handler when it first starts;
    //  start it now so that ours, installed after, is the one in force.
    zsys_init ();
    struct sigaction sa;
    memset (&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset (&sa.sa_mask);
    //  No SA_RESTART: a signal must cut the supervisor's wait short.
    sigaction (SIGINT, &sa, NULL);
    sigaction (SIGTERM, &sa, NULL);
    sigaction (SIGHUP, &sa, NULL);
    //  A closed terminal or log pipe must not kill the supervisor (and so,
    //  by PDEATHSIG, the pipeline); children get the default back.
    signal (SIGPIPE, SIG_IGN);

    if (zi_supervisor_start (sup, err, sizeof err)) {
        fprintf (stderr, "zinfer up: %s\n", err);
        zi_supervisor_stop (sup, ZI_SUPERVISOR_GRACE_MS);
        goto done;
    }
    zi_log_info ("UP-RUNNING", "host %s: %d processes from %s", host, n, plan_path);
    const char *front = plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect;
    //  zi_client_new_plan uses CURVE when the plan says so
    client = zi_client_new_plan (plan, err, sizeof err);
    if (!client) {
        zi_log_warn ("UP-NO-HEALTH", "cannot watch the broker's health: %s", err);
    }
    bool ready = false, warned = false;
    int64_t started = zclock_mono ();
    while (!s_stop) {
        zi_supervisor_tick (sup, ready || !client ? 200 : 0);
        if (!ready && client && !s_stop) {
            //  Short slices, so a crashing child is restarted and a
            //  Ctrl-C noticed while the pipeline comes up.
            if (zi_client_wait_ready (client, 200) == 0) {
                ready = true;
                printf ("zinfer up: ready (%d processes)\n", n);
                fflush (stdout);
            }
            else if (!warned && zclock_mono () - started > S_READY_WARN_MS) {
                warned = true;
                zi_log_warn (
                    "UP-NOT-READY",
                    "the broker at %s is not ready after %d s (is "
                    "every segment served? are the other hosts up?); still waiting",
                    front, S_READY_WARN_MS / 1000);
            }
        }
    }
    zi_log_info ("UP-STOPPING", "%s: stopping %zu processes", strsignal (s_stop),
                 zi_supervisor_running (sup));
    zi_client_destroy (&client);
    zi_supervisor_stop (sup, ZI_SUPERVISOR_GRACE_MS);
    zi_log_info ("UP-STOPPED", "every process stopped");
    status = 0;
done:
    zi_client_destroy (&client);
    zi_supervisor_destroy (&sup);
    zi_plan_destroy (&plan);
    return status;
}
