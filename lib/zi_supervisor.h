/*  zi_supervisor.h - run a host's share of a plan: start its processes,
    restart the ones that die, stop them all on request.

    `zinfer up` is a thin loop around this module:

        zi_supervisor_t *sup = zi_supervisor_new ();
        const char *host = zi_supervisor_pick_host (plan, NULL, err, sizeof err);
        if (!host || zi_supervisor_add_plan (sup, plan, "plan.json", host,
                                             "/usr/bin", NULL, err, sizeof err)
            || zi_supervisor_start (sup, err, sizeof err)) {
            ...                                  //  err says why
        }
        while (!stop_requested) {
            zi_supervisor_tick (sup, 200);       //  reap, restart, wait <= 200 ms
        }
        zi_supervisor_stop (sup, 5000);          //  SIGTERM, 5 s, SIGKILL, reap
        zi_supervisor_destroy (&sup);

    Children. Each child runs in its own process group (so a terminal's
    Ctrl-C reaches only the supervisor, which then stops the children in
    order), with stdin on /dev/null, stdout and stderr inherited, every
    other descriptor closed, and PR_SET_PDEATHSIG = SIGKILL: a supervisor
    that dies, even by SIGKILL, leaves no orphans behind. The pipeline's
    programs log one line per event to stderr with their own identity, so
    their output needs no prefix.

    Restarts. A child that exits while the supervisor is not stopping is
    restarted after a backoff that starts at 100 ms and doubles up to 5 s;
    a child that had run for 10 s or more starts again from 100 ms (it was
    healthy; this is a new failure, not a crash loop). Each exit is logged
    as UP-RESTART with the exit status or signal. A program that cannot be
    executed at all (not found, not executable) fails zi_supervisor_start
    with a message, instead of restarting for ever.
*/
#ifndef ZI_SUPERVISOR_H_INCLUDED
#define ZI_SUPERVISOR_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "zi_error.h"
#include "zi_plan.h"

#ifdef __cplusplus
extern "C" {
#endif

//  The restart policy (zi_supervisor_set_backoff changes it, for tests).
#define ZI_SUPERVISOR_BACKOFF_MIN_MS 100
#define ZI_SUPERVISOR_BACKOFF_MAX_MS 5000
#define ZI_SUPERVISOR_HEALTHY_MS 10000

//  How long zi_supervisor_stop waits after SIGTERM by default (zinfer up).
#define ZI_SUPERVISOR_GRACE_MS 5000

typedef struct zi_supervisor zi_supervisor_t;

//  Create an empty supervisor. NULL when out of memory.
zi_supervisor_t *zi_supervisor_new (void);

//  Stop every running child (zi_supervisor_stop with the default grace),
//  free everything and set *self_p to NULL. Safe on NULL.
void zi_supervisor_destroy (zi_supervisor_t **self_p);

//  Change the restart policy: first delay, its cap, and the uptime after
//  which a child counts as healthy (its next delay is min_ms again).
void zi_supervisor_set_backoff (zi_supervisor_t *self, int64_t min_ms, int64_t max_ms,
                                int64_t healthy_ms);

//  The delay before the next restart after one of `backoff_ms`, given how
//  long the child ran: pure, for the policy above. *next_ms receives the
//  delay that follows this one.
int64_t zi_supervisor_backoff (int64_t backoff_ms, int64_t uptime_ms, int64_t min_ms,
                               int64_t max_ms, int64_t healthy_ms, int64_t *next_ms);

//  Add a child: name (for logs, unique), argv (NULL-terminated; argv[0] is
//  looked up in PATH when it holds no '/'), and the directory it runs in
//  (NULL: the supervisor's). Everything is copied. Not started yet.
//  Returns its index (>= 0), or ZI_ERR_INVALID / ZI_ERR_NOMEM.
int zi_supervisor_add (zi_supervisor_t *self, const char *name, const char *const *argv,
                       const char *cwd);

//  Start every child that is not running (and has no restart pending).
//  A child that cannot be executed fails the call with "NAME: cannot run
//  'PROG': REASON" in err; the children already started keep running.
//  Returns 0, ZI_ERR_NOTFOUND (exec failed) or ZI_ERR_IO (fork failed).
int zi_supervisor_start (zi_supervisor_t *self, char *err, size_t errlen);

//  Wait up to timeout_ms (0: do not wait) for a child to exit, reap the
//  children that exited (logging UP-RESTART and scheduling their restart)
//  and start those whose restart is due. Returns early when a signal
//  interrupts the wait. Returns the number of children that exited.
int zi_supervisor_tick (zi_supervisor_t *self, int timeout_ms);

//  Stop: cancel pending restarts; then, one stop order at a time, lowest
//  first: SIGTERM its running children, wait up to grace_ms for them to
//  exit, SIGKILL the rest, reap all. Returns the number of children that
//  had to be killed.
int zi_supervisor_stop (zi_supervisor_t *self, int grace_ms);

//  Children stop in waves by increasing order (default 0: all at once).
//  zi_supervisor_add_plan gives the broker 0 and every other process 1:
//  the broker drains the requests in flight while the stages and workers
//  that finish them still run.
void zi_supervisor_set_stop_order (zi_supervisor_t *self, size_t i, int order);

//  Children, by index 0 .. size-1.
size_t zi_supervisor_size (const zi_supervisor_t *self);
const char *zi_supervisor_name (const zi_supervisor_t *self, size_t i);
//  Its process id, or 0 while it is not running.
pid_t zi_supervisor_pid (const zi_supervisor_t *self, size_t i);
//  How many times it was restarted.
unsigned zi_supervisor_restarts (const zi_supervisor_t *self, size_t i);
//  Its last wait() status, or -1 if it never exited.
int zi_supervisor_last_status (const zi_supervisor_t *self, size_t i);
//  The index of the child called name, or -1.
int zi_supervisor_find (const zi_supervisor_t *self, const char *name);
//  Children running now.
size_t zi_supervisor_running (const zi_supervisor_t *self);

//  ---------------------------------------------------------------------
//  A plan's share for one host

//  The host of the plan this machine is: `requested` if given (it must be
//  in the plan); else the plan's only host; else the one host whose
//  address is an address of this machine (an interface address, loopback
//  included, or the host name). Returns the plan's host name, or NULL with
//  a message listing the hosts in err.
const char *zi_supervisor_pick_host (const zi_plan_t *plan, const char *requested,
                                     char *err, size_t errlen);

//  Add the processes of the plan that run on host: the broker if it runs
//  there, every exec replica and every stage replica placed there.
//  Built-in programs are bindir/zinfer-KIND started as `--plan PLAN --name
//  NAME` (the broker: `--plan PLAN`); a custom stage runs its command with
//  `--plan PLAN --name NAME` appended, in the plan file's directory.
//  plan_path is made absolute so every child finds it. extra_args
//  (NULL-terminated, may be NULL) are appended to the built-in programs'
//  arguments (e.g. "--log-level", "debug"). Returns the number of
//  processes added (0 when the host has none), or an error.
int zi_supervisor_add_plan (zi_supervisor_t *self, const zi_plan_t *plan,
                            const char *plan_path, const char *host, const char *bindir,
                            const char *const *extra_args, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
