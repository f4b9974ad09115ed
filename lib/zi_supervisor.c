/*  zi_supervisor.c - see zi_supervisor.h.

    Waiting for children: each running child has a pidfd (Linux >= 5.3),
    which becomes readable when the child exits, so one poll() waits for
    "a child exited, or the next restart is due, or a signal arrived"
    without a SIGCHLD handler (a library should not own process-wide
    signal handlers). Where pidfd_open is missing the wait is sliced into
    20 ms naps with a waitpid(WNOHANG) sweep after each.

    Exec failures are reported through a close-on-exec pipe: the child
    writes errno into it if execvp fails; EOF means the exec succeeded.
    So "zinfer-brokr: not found" is an error at start, not a crash loop.
*/
#define _GNU_SOURCE //  pipe2, close_range, strsignal
#include "zi_supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zi_log.h"

typedef struct {
    char *name;
    char **argv;           //  NULL-terminated, owned
    char *cwd;             //  or NULL
    pid_t pid;             //  0 when not running
    int pidfd;             //  -1 when none
    int64_t started_ms;    //  when the current run started
    int64_t restart_at_ms; //  0: no restart pending
    int64_t backoff_ms;    //  delay of the next restart
    unsigned restarts;
    int last_status; //  -1: never exited
    int stop_order;  //  lower orders are stopped first
} s_child_t;

struct zi_supervisor {
    s_child_t *children;
    size_t n_children;
    int64_t min_ms, max_ms, healthy_ms;
};

static int64_t
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_child_free (s_child_t *c)
{
    free (c->name);
    if (c->argv) {
        for (char **a = c->argv; *a; a++) {
            free (*a);
        }
        free (c->argv);
    }
    free (c->cwd);
    if (c->pidfd >= 0) {
        close (c->pidfd);
    }
}

zi_supervisor_t *
zi_supervisor_new (void)
{
    zi_supervisor_t *self = (zi_supervisor_t *)calloc (1, sizeof *self);
    if (self) {
        self->min_ms = ZI_SUPERVISOR_BACKOFF_MIN_MS;
        self->max_ms = ZI_SUPERVISOR_BACKOFF_MAX_MS;
        self->healthy_ms = ZI_SUPERVISOR_HEALTHY_MS;
    }
    return self;
}

void
zi_supervisor_destroy (zi_supervisor_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zi_supervisor_t *self = *self_p;
    if (zi_supervisor_running (self)) {
        zi_supervisor_stop (self, ZI_SUPERVISOR_GRACE_MS);
    }
    for (size_t i = 0; i < self->n_children; i++) {
        s_child_free (&self->children[i]);
    }
    free (self->children);
    free (self);
    *self_p = NULL;
}

void
zi_supervisor_set_backoff (zi_supervisor_t *self, int64_t min_ms, int64_t max_ms,
                           int64_t healthy_ms)
{
    self->min_ms = min_ms > 0 ? min_ms : 1;
    self->max_ms = max_ms >= self->min_ms ? max_ms : self->min_ms;
    self->healthy_ms = healthy_ms > 0 ? healthy_ms : 1;
    for (size_t i = 0; i < self->n_children; i++) {
        self->children[i].backoff_ms = self->min_ms;
    }
}

int64_t
zi_supervisor_backoff (int64_t backoff_ms, int64_t uptime_ms, int64_t min_ms,
                       int64_t max_ms, int64_t healthy_ms, int64_t *next_ms)
{
    //  A child that ran long enough was healthy: this failure starts a
    //  new series instead of continuing a crash loop's.
    int64_t delay = uptime_ms >= healthy_ms || backoff_ms < min_ms ? min_ms : backoff_ms;
    if (delay > max_ms) {
        delay = max_ms;
    }
    if (next_ms) {
        *next_ms = delay > max_ms / 2 ? max_ms : delay * 2;
    }
    return delay;
}

int
zi_supervisor_add (zi_supervisor_t *self, const char *name, const char *const *argv,
                   const char *cwd)
{
    if (!name || !*name || !argv || !argv[0] || !*argv[0]
        || zi_supervisor_find (self, name) >= 0) {
        return ZI_ERR_INVALID;
    }
    size_t argc = 0;
    while (argv[argc]) {
        argc++;
    }
    s_child_t *grown
        = (s_child_t *)realloc (self->children, (self->n_children + 1) * sizeof *grown);
    if (!grown) {
        return ZI_ERR_NOMEM;
    }
    self->children = grown;
    s_child_t *c = &self->children[self->n_children];
    memset (c, 0, sizeof *c);
    c->pidfd = -1;
    c->last_status = -1;
    c->backoff_ms = self->min_ms;
    c->name = strdup (name);
    c->argv = (char **)calloc (argc + 1, sizeof *c->argv);
    c->cwd = cwd ? strdup (cwd) : NULL;
    bool ok = c->name && c->argv && (!cwd || c->cwd);
    for (size_t i = 0; ok && i < argc; i++) {
        ok = (c->argv[i] = strdup (argv[i])) != NULL;
    }
    if (!ok) {
        s_child_free (c);
        return ZI_ERR_NOMEM;
    }
    return (int)self->n_children++;
}

//  Close every descriptor from `from` up except `keep`.
static void
s_close_from (int from, int keep)
{
#ifdef SYS_close_range
    if (keep > from) {
        syscall (SYS_close_range, (unsigned)from, (unsigned)keep - 1, 0);
    }
    if (syscall (SYS_close_range, (unsigned)(keep >= from ? keep + 1 : from), ~0u, 0)
        == 0) {
        return;
    }
#endif
    long max = sysconf (_SC_OPEN_MAX);
    for (long fd = from; fd < (max > 0 && max < 65536 ? max : 65536); fd++) {
        if (fd != keep) {
            close ((int)fd);
        }
    }
}

//  In the child between fork and exec: async-signal-safe calls only.
static void
s_child_exec (const s_child_t *c, pid_t parent, int errfd)
{
    int e[2];
    //  Die with the supervisor, even if it is SIGKILLed; and if it died
    //  before prctl took effect, do not run as an orphan at all.
    prctl (PR_SET_PDEATHSIG, SIGKILL);
    if (getppid () != parent) {
        _exit (127);
    }
    setpgid (0, 0);
    struct sigaction dfl;
    memset (&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < 32; s++) {
        if (s != SIGKILL && s != SIGSTOP) {
            sigaction (s, &dfl, NULL);
        }
    }
    sigset_t none;
    sigemptyset (&none);
    sigprocmask (SIG_SETMASK, &none, NULL);
    int devnull = open ("/dev/null", O_RDONLY);
    if (devnull >= 0 && devnull != 0) {
        dup2 (devnull, 0);
        close (devnull);
    }
    s_close_from (3, errfd);
    //  e = {what failed: 1 chdir, 2 exec; errno}
    if (c->cwd && chdir (c->cwd) != 0) {
        e[0] = 1;
        e[1] = errno;
        if (write (errfd, e, sizeof e) < 0) {
            //  nothing else to tell: the exit status says it failed
        }
        _exit (127);
    }
    execvp (c->argv[0], c->argv);
    e[0] = 2;
    e[1] = errno;
    if (write (errfd, e, sizeof e) < 0) {
        //  as above
    }
    _exit (127);
}

//  Start one child. Returns 0, ZI_ERR_NOTFOUND (exec or chdir failed,
//  child reaped) or ZI_ERR_IO (no pipe / fork).
static int
s_spawn (s_child_t *c, char *err, size_t errlen)
{
    int pipefd[2];
    if (pipe2 (pipefd, O_CLOEXEC) != 0) {
        return zi_fail (err, errlen, ZI_ERR_IO, "%s: pipe: %s", c->name,
                        strerror (errno));
    }
    pid_t parent = getpid ();
    pid_t pid = fork ();
    if (pid < 0) {
        int e = errno;
        close (pipefd[0]);
        close (pipefd[1]);
        return zi_fail (err, errlen, ZI_ERR_IO, "%s: fork: %s", c->name, strerror (e));
    }
    if (pid == 0) {
        close (pipefd[0]);
        s_child_exec (c, parent, pipefd[1]);
    }
    close (pipefd[1]);
    //  Also from this side, so a kill (-pid) right after this call cannot
    //  miss the group (EACCES once the child has exec'ed is harmless).
    setpgid (pid, pid);
    int child_err[2] = { 0, 0 }; //  see s_child_exec
    ssize_t n;
    do {
        n = read (pipefd[0], child_err, sizeof child_err);
    } while (n < 0 && errno == EINTR);
    close (pipefd[0]);
    if (n == (ssize_t)sizeof child_err) {
        int status;
        while (waitpid (pid, &status, 0) < 0 && errno == EINTR) {
        }
        c->last_status = status;
        if (child_err[0] == 1) {
            return zi_fail (err, errlen, ZI_ERR_NOTFOUND, "%s: cannot enter '%s': %s",
                            c->name, c->cwd, strerror (child_err[1]));
        }
        return zi_fail (err, errlen, ZI_ERR_NOTFOUND, "%s: cannot run '%s': %s", c->name,
                        c->argv[0], strerror (child_err[1]));
    }
    c->pid = pid;
    c->started_ms = s_now_ms ();
    c->restart_at_ms = 0;
#ifdef SYS_pidfd_open
    c->pidfd = (int)syscall (SYS_pidfd_open, pid, 0);
#else
    c->pidfd = -1;
#endif
    return 0;
}

int
zi_supervisor_start (zi_supervisor_t *self, char *err, size_t errlen)
{
    for (size_t i = 0; i < self->n_children; i++) {
        s_child_t *c = &self->children[i];
        if (c->pid || c->restart_at_ms) {
            continue;
        }
        int rc = s_spawn (c, err, errlen);
        if (rc) {
            return rc;
        }
        zi_log_info ("UP-STARTED", "%s: pid %d: %s", c->name, (int)c->pid, c->argv[0]);
    }
    return 0;
}

static void
s_describe_status (int status, char *buf, size_t len)
{
    if (WIFEXITED (status)) {
        snprintf (buf, len, "exited with status %d", WEXITSTATUS (status));
    }
    else if (WIFSIGNALED (status)) {
        snprintf (buf, len, "killed by signal %d (%s)", WTERMSIG (status),
                  strsignal (WTERMSIG (status)));
    }
    else {
        snprintf (buf, len, "ended with wait status 0x%x", (unsigned)status);
    }
}

//  The child has exited with status: forget its process, clean up what
//  it left in its group.
static void
s_reaped (s_child_t *c, int status)
{
    //  Anything it started (a custom stage's interpreter behind a shell)
    //  must not outlive it: it would hold the stage's sockets.
    kill (-c->pid, SIGKILL);
    c->pid = 0;
    c->last_status = status;
    if (c->pidfd >= 0) {
        close (c->pidfd);
        c->pidfd = -1;
    }
}

//  Reap every child that has exited; schedule restarts. Returns how many.
static int
s_reap (zi_supervisor_t *self, bool restart)
{
    int exited = 0;
    int64_t now = s_now_ms ();
    for (size_t i = 0; i < self->n_children; i++) {
        s_child_t *c = &self->children[i];
        int status;
        if (!c->pid || waitpid (c->pid, &status, WNOHANG) != c->pid) {
            continue;
        }
        exited++;
        pid_t pid = c->pid;
        s_reaped (c, status);
        char how[128];
        s_describe_status (status, how, sizeof how);
        if (!restart) {
            zi_log_info ("UP-EXITED", "%s (pid %d) %s", c->name, (int)pid, how);
            continue;
        }
        int64_t uptime = now - c->started_ms;
        int64_t next;
        int64_t delay = zi_supervisor_backoff (c->backoff_ms, uptime, self->min_ms,
                                               self->max_ms, self->healthy_ms, &next);
        c->backoff_ms = next;
        c->restart_at_ms = now + delay;
        zi_log_warn ("UP-RESTART", "%s (pid %d) %s after %.1f s; restarting in %lld ms",
                     c->name, (int)pid, how, (double)uptime / 1000.0, (long long)delay);
    }
    return exited;
}

//  Start the children whose restart is due.
static void
s_restart_due (zi_supervisor_t *self)
{
    int64_t now = s_now_ms ();
    for (size_t i = 0; i < self->n_children; i++) {
        s_child_t *c = &self->children[i];
        if (c->pid || !c->restart_at_ms || c->restart_at_ms > now) {
            continue;
        }
        char err[512];
        if (s_spawn (c, err, sizeof err)) {
            //  Try again later, further apart: the binary may be being
            //  replaced by an install, or the directory remounted.
            int64_t next;
            int64_t delay = zi_supervisor_backoff (c->backoff_ms, 0, self->min_ms,
                                                   self->max_ms, self->healthy_ms, &next);
            c->backoff_ms = next;
            c->restart_at_ms = now + delay;
            zi_log_error ("UP-RESTART-FAILED", "%s; trying again in %lld ms", err,
                          (long long)delay);
            continue;
        }
        c->restarts++;
        zi_log_info ("UP-STARTED", "%s: pid %d (restart %u)", c->name, (int)c->pid,
                     c->restarts);
    }
}

//  Wait up to timeout_ms for a child to exit (or a signal). Returns false
//  when the wait was cut short by a signal.
static bool
s_wait (zi_supervisor_t *self, int timeout_ms)
{
    struct pollfd fds[256];
    nfds_t n = 0;
    bool all_fds = true;
    for (size_t i = 0; i < self->n_children; i++) {
        const s_child_t *c = &self->children[i];
        if (!c->pid) {
            continue;
        }
        if (c->pidfd < 0 || n == sizeof fds / sizeof fds[0]) {
            all_fds = false;
            continue;
        }
        fds[n].fd = c->pidfd;
        fds[n].events = POLLIN;
        fds[n].revents = 0;
        n++;
    }
    //  Without a pidfd for every child, nap in short slices: the caller's
    //  sweep then finds exits within 20 ms.
    if (!all_fds && timeout_ms > 20) {
        timeout_ms = 20;
    }
    int rc = poll (n ? fds : NULL, n, timeout_ms);
    return !(rc < 0 && errno == EINTR);
}

int
zi_supervisor_tick (zi_supervisor_t *self, int timeout_ms)
{
    int exited = s_reap (self, true);
    if (!exited && timeout_ms > 0) {
        int64_t now = s_now_ms ();
        int64_t wait = timeout_ms;
        for (size_t i = 0; i < self->n_children; i++) {
            const s_child_t *c = &self->children[i];
            if (!c->pid && c->restart_at_ms) {
                int64_t due = c->restart_at_ms - now;
                wait = due < wait ? (due > 0 ? due : 0) : wait;
            }
        }
        s_wait (self, (int)wait);
        exited = s_reap (self, true);
    }
    s_restart_due (self);
    return exited;
}

//  Stop the running children of one stop order: SIGTERM, wait up to
//  grace_ms, SIGKILL the rest. Returns how many had to be killed.
static int
s_stop_wave (zi_supervisor_t *self, int order, int grace_ms)
{
    size_t running = 0;
    for (size_t i = 0; i < self->n_children; i++) {
        s_child_t *c = &self->children[i];
        if (c->pid && c->stop_order == order) {
            kill (-c->pid, SIGTERM);
            kill (c->pid, SIGTERM);
            running++;
        }
    }
    int64_t end = s_now_ms () + (grace_ms > 0 ? grace_ms : 0);
    while (running) {
        s_reap (self, false);
        running = 0;
        for (size_t i = 0; i < self->n_children; i++) {
            running += self->children[i].pid && self->children[i].stop_order == order;
        }
        int64_t left = end - s_now_ms ();
        if (!running || left <= 0) {
            break;
        }
        //  Signals (a second Ctrl-C) must not cut the grace period short
        //  into a busy loop: just wait again.
        s_wait (self, (int)(left < 100 ? left : 100));
    }
    int killed = 0;
    for (size_t i = 0; i < self->n_children; i++) {
        s_child_t *c = &self->children[i];
        if (!c->pid || c->stop_order != order) {
            continue;
        }
        zi_log_warn ("UP-KILLED", "%s (pid %d) did not stop within %d ms: SIGKILL",
                     c->name, (int)c->pid, grace_ms);
        kill (-c->pid, SIGKILL);
        kill (c->pid, SIGKILL);
        int status = 0;
        while (waitpid (c->pid, &status, 0) < 0 && errno == EINTR) {
        }
        s_reaped (c, status);
        killed++;
    }
    return killed;
}

int
zi_supervisor_stop (zi_supervisor_t *self, int grace_ms)
{
    for (size_t i = 0; i < self->n_children; i++) {
        self->children[i].restart_at_ms = 0;
    }
    int killed = 0;
    //  Waves in increasing stop order (the broker drains its requests
    //  while the workers and stages that finish them still run).
    bool first = true;
    int order = 0;
    while (true) {
        bool found = false;
        int next = 0;
        for (size_t i = 0; i < self->n_children; i++) {
            int o = self->children[i].stop_order;
            if ((first || o > order) && (!found || o < next)) {
                next = o;
                found = true;
            }
        }
        if (!found) {
            break;
        }
        order = next;
        first = false;
        killed += s_stop_wave (self, order, grace_ms);
    }
    return killed;
}

void
zi_supervisor_set_stop_order (zi_supervisor_t *self, size_t i, int order)
{
    if (i < self->n_children) {
        self->children[i].stop_order = order;
    }
}

size_t
zi_supervisor_size (const zi_supervisor_t *self)
{
    return self->n_children;
}

const char *
zi_supervisor_name (const zi_supervisor_t *self, size_t i)
{
    return i < self->n_children ? self->children[i].name : NULL;
}

pid_t
zi_supervisor_pid (const zi_supervisor_t *self, size_t i)
{
    return i < self->n_children ? self->children[i].pid : 0;
}

unsigned
zi_supervisor_restarts (const zi_supervisor_t *self, size_t i)
{
    return i < self->n_children ? self->children[i].restarts : 0;
}

int
zi_supervisor_last_status (const zi_supervisor_t *self, size_t i)
{
    return i < self->n_children ? self->children[i].last_status : -1;
}

int
zi_supervisor_find (const zi_supervisor_t *self, const char *name)
{
    for (size_t i = 0; name && i < self->n_children; i++) {
        if (strcmp (self->children[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

size_t
zi_supervisor_running (const zi_supervisor_t *self)
{
    size_t n = 0;
    for (size_t i = 0; i < self->n_children; i++) {
        n += self->children[i].pid != 0;
    }
    return n;
}

//  ---------------------------------------------------------------------
//  A plan's share for one host

//  True when two socket addresses name the same IP address.
static bool
s_same_ip (const struct sockaddr *a, const struct sockaddr *b)
{
    if (!a || !b || a->sa_family != b->sa_family) {
        return false;
    }
    if (a->sa_family == AF_INET) {
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr
               == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        return memcmp (&((const struct sockaddr_in6 *)a)->sin6_addr,
                       &((const struct sockaddr_in6 *)b)->sin6_addr, 16)
               == 0;
    }
    return false;
}

static bool
s_is_loopback (const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        return (ntohl (((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        static const unsigned char one[16] = { [15] = 1 };
        return memcmp (&((const struct sockaddr_in6 *)sa)->sin6_addr, one, 16) == 0;
    }
    return false;
}

//  True when address (a name or an IP) is one of this machine's.
static bool
s_address_is_local (const char *address, const struct ifaddrs *ifs)
{
    char hostname[256] = "";
    if (gethostname (hostname, sizeof hostname - 1) == 0
        && strcmp (hostname, address) == 0) {
        return true;
    }
    struct addrinfo hints;
    memset (&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo *res = NULL;
    if (getaddrinfo (address, NULL, &hints, &res) != 0) {
        return false;
    }
    bool local = false;
    for (const struct addrinfo *ai = res; ai && !local; ai = ai->ai_next) {
        if (s_is_loopback (ai->ai_addr)) {
            local = true;
        }
        for (const struct ifaddrs *it = ifs; it && !local; it = it->ifa_next) {
            local = s_same_ip (ai->ai_addr, it->ifa_addr);
        }
    }
    freeaddrinfo (res);
    return local;
}

static void
s_list_hosts (const zi_plan_t *plan, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = 0;
    for (size_t i = 0; i < plan->n_hosts && used < len; i++) {
        int n = snprintf (buf + used, len - used, "%s%s (%s)", i ? ", " : "",
                          plan->hosts[i].name, plan->hosts[i].address);
        used += n > 0 ? (size_t)n : 0;
    }
}

const char *
zi_supervisor_pick_host (const zi_plan_t *plan, const char *requested, char *err,
                         size_t errlen)
{
    char hosts[1024];
    s_list_hosts (plan, hosts, sizeof hosts);
    if (requested) {
        const zi_plan_host_t *h = zi_plan_find_host (plan, requested);
        if (!h) {
            zi_fail (err, errlen, ZI_ERR_NOTFOUND,
                     "host '%s' is not in the plan; its hosts "
                     "are: %s",
                     requested, hosts);
            return NULL;
        }
        return h->name;
    }
    if (plan->n_hosts == 1) {
        return plan->hosts[0].name;
    }
    struct ifaddrs *ifs = NULL;
    if (getifaddrs (&ifs) != 0) {
        ifs = NULL;
    }
    const char *found = NULL;
    size_t matches = 0;
    char names[1024] = "";
    for (size_t i = 0; i < plan->n_hosts; i++) {
        if (s_address_is_local (plan->hosts[i].address, ifs)) {
            if (!found) {
                found = plan->hosts[i].name;
            }
            size_t used = strlen (names);
            snprintf (names + used, sizeof names - used, "%s%s", matches ? ", " : "",
                      plan->hosts[i].name);
            matches++;
        }
    }
    if (ifs) {
        freeifaddrs (ifs);
    }
    if (matches == 1) {
        return found;
    }
    if (matches > 1) {
        zi_fail (err, errlen, ZI_ERR_INVALID,
                 "several hosts of the plan are this machine "
                 "(%s); choose one with --host",
                 names);
        return NULL;
    }
    zi_fail (err, errlen, ZI_ERR_NOTFOUND,
             "no host of the plan has an address of this "
             "machine; choose one with --host: %s",
             hosts);
    return NULL;
}

//  argv = prefix..., "--plan", plan, ["--name", name], extra...; added.
static int
s_add_proc (zi_supervisor_t *self, const char *name, const char *const *prefix,
            size_t n_prefix, const char *plan_abs, const char *replica,
            const char *const *extra, const char *cwd, char *err, size_t errlen)
{
    const char *argv[96];
    size_t n = 0;
    for (size_t i = 0; i < n_prefix && n < 80; i++) {
        argv[n++] = prefix[i];
    }
    argv[n++] = "--plan";
    argv[n++] = plan_abs;
    if (replica) {
        argv[n++] = "--name";
        argv[n++] = replica;
    }
    for (size_t i = 0; extra && extra[i] && n < 95; i++) {
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    int rc = zi_supervisor_add (self, name, argv, cwd);
    if (rc < 0) {
        return zi_fail (err, errlen, rc, "%s: cannot add the process (%s)", name,
                        rc == ZI_ERR_INVALID ? "duplicate name" : zi_strerror (rc));
    }
    zi_supervisor_set_stop_order (self, (size_t)rc, 1);
    return 0;
}

int
zi_supervisor_add_plan (zi_supervisor_t *self, const zi_plan_t *plan,
                        const char *plan_path, const char *host, const char *bindir,
                        const char *const *extra_args, char *err, size_t errlen)
{
    char plan_abs[PATH_MAX];
    if (!realpath (plan_path, plan_abs)) {
        return zi_fail (err, errlen, ZI_ERR_NOTFOUND, "%s: %s", plan_path,
                        strerror (errno));
    }
    //  Custom stages run in the plan file's directory (PLAN.md), which
    //  is the directory of the absolute path, whatever our own cwd.
    char plan_dir[PATH_MAX];
    snprintf (plan_dir, sizeof plan_dir, "%s", plan_abs);
    char *slash = strrchr (plan_dir, '/');
    if (slash) {
        slash[slash == plan_dir ? 1 : 0] = 0;
    }
    char prog[PATH_MAX];
    int added = 0, rc;
    const char *prefix[1] = { prog };
    if (strcmp (plan->broker.host, host) == 0) {
        snprintf (prog, sizeof prog, "%s/zinfer-broker", bindir);
        rc = s_add_proc (self, "broker", prefix, 1, plan_abs, NULL, extra_args, NULL, err,
                         errlen);
        if (rc) {
            return rc;
        }
        //  Stopped first, the others after it: it drains the requests in
        //  flight, which needs the stages and workers still running.
        zi_supervisor_set_stop_order (self, self->n_children - 1, 0);
        added++;
    }
    for (size_t s = 0; s < plan->n_segments; s++) {
        const zi_plan_segment_t *seg = &plan->segments[s];
        for (size_t r = 0; r < seg->n_replicas; r++) {
            if (strcmp (seg->replicas[r].host, host) != 0) {
                continue;
            }
            snprintf (prog, sizeof prog, "%s/zinfer-exec", bindir);
            rc = s_add_proc (self, seg->replicas[r].name, prefix, 1, plan_abs,
                             seg->replicas[r].name, extra_args, NULL, err, errlen);
            if (rc) {
                return rc;
            }
            added++;
        }
    }
    for (size_t s = 0; s < plan->n_stages; s++) {
        const zi_plan_stage_t *st = &plan->stages[s];
        for (size_t r = 0; r < st->n_replicas; r++) {
            const char *name = st->replicas[r].name;
            if (strcmp (st->replicas[r].host, host) != 0) {
                continue;
            }
            if (st->kind == ZI_PLAN_STAGE_CUSTOM) {
                //  A user's program: its own options are its business, so
                //  only the two every stage takes are appended.
                rc = s_add_proc (self, name, (const char *const *)st->command,
                                 st->n_command, plan_abs, name, NULL, plan_dir, err,
                                 errlen);
            }
            else {
                snprintf (prog, sizeof prog, "%s/zinfer-%s", bindir,
                          zi_plan_stage_kind_name (st->kind));
                rc = s_add_proc (self, name, prefix, 1, plan_abs, name, extra_args, NULL,
                                 err, errlen);
            }
            if (rc) {
                return rc;
            }
            added++;
        }
    }
    return added;
}
