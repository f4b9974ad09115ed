/*  test_up.c - the supervisor behind `zinfer up` (lib/zi_supervisor.h), on
    fake children (/bin/sleep, sh), and `zinfer up` itself with fake
    pipeline programs (--bin DIR of shell scripts that record their
    arguments and sleep): it starts a plan's share for a host, restarts a
    child that is killed, stops every child on SIGTERM, and leaves no
    orphan when it is itself SIGKILLed.
    // ctest-timeout: 120
*/
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zi_plan.h"
#include "zi_supervisor.h"
#include "zt_spawn.h"

static int64_t
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

//  True while pid is a live process (a zombie counts as gone).
static bool
s_alive (pid_t pid)
{
    char path[64], buf[256];
    snprintf (path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen (path, "r");
    if (!f) {
        return false;
    }
    size_t n = fread (buf, 1, sizeof buf - 1, f);
    fclose (f);
    buf[n] = 0;
    const char *paren = strrchr (buf, ')');
    return paren && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
}

//  ---------------------------------------------------------------------
//  The supervisor on fake children

Test (supervisor, backoff_doubles_to_the_cap_and_resets_after_a_healthy_run)
{
    int64_t b = ZI_SUPERVISOR_BACKOFF_MIN_MS, next;
    int64_t expect[] = { 100, 200, 400, 800, 1600, 3200, 5000, 5000 };
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        int64_t d = zi_supervisor_backoff (b, 50, 100, 5000, 10000, &next);
        cr_assert_eq (d, expect[i], "restart %zu: %lld", i, (long long)d);
        b = next;
    }
    //  ten seconds of uptime: the next failure starts from the bottom again
    cr_assert_eq (zi_supervisor_backoff (b, 10000, 100, 5000, 10000, &next), 100);
    cr_assert_eq (next, 200);
    cr_assert_eq (zi_supervisor_backoff (b, 9999, 100, 5000, 10000, &next), 5000);
}

Test (supervisor, restarts_a_killed_child_and_stops_all)
{
    zi_supervisor_t *sup = zi_supervisor_new ();
    cr_assert_not_null (sup);
    zi_supervisor_set_backoff (sup, 20, 200, 10000);
    const char *sleeper[] = { "sleep", "100", NULL };
    cr_assert_eq (zi_supervisor_add (sup, "a", sleeper, NULL), 0);
    cr_assert_eq (zi_supervisor_add (sup, "b", sleeper, "/"), 1);
    cr_assert_eq (zi_supervisor_add (sup, "a", sleeper, NULL), ZI_ERR_INVALID,
                  "names are unique");
    char err[512];
    cr_assert_eq (zi_supervisor_start (sup, err, sizeof err), 0, "%s", err);
    cr_assert_eq (zi_supervisor_running (sup), 2);
    pid_t a = zi_supervisor_pid (sup, 0);
    cr_assert_gt (a, 0);
    kill (a, SIGKILL);
    int64_t end = s_now_ms () + 5000;
    while (zi_supervisor_restarts (sup, 0) == 0 && s_now_ms () < end) {
        zi_supervisor_tick (sup, 100);
    }
    cr_assert_eq (zi_supervisor_restarts (sup, 0), 1);
    cr_assert_neq (zi_supervisor_pid (sup, 0), a);
    cr_assert (s_alive (zi_supervisor_pid (sup, 0)));
    int st = zi_supervisor_last_status (sup, 0);
    cr_assert (WIFSIGNALED (st) && WTERMSIG (st) == SIGKILL);
    cr_assert_eq (zi_supervisor_restarts (sup, 1), 0, "the other child is untouched");
    pid_t pa = zi_supervisor_pid (sup, 0), pb = zi_supervisor_pid (sup, 1);
    cr_assert_eq (zi_supervisor_stop (sup, 2000), 0, "sleep stops on SIGTERM");
    cr_assert_eq (zi_supervisor_running (sup), 0);
    cr_assert (!s_alive (pa) && !s_alive (pb));
    //  stopped: nothing restarts any more
    zi_supervisor_tick (sup, 50);
    cr_assert_eq (zi_supervisor_running (sup), 0);
    zi_supervisor_destroy (&sup);
    cr_assert_null (sup);
}

Test (supervisor, a_crash_loop_backs_off)
{
    zi_supervisor_t *sup = zi_supervisor_new ();
    zi_supervisor_set_backoff (sup, 40, 320, 10000);
    const char *crash[] = { "/bin/sh", "-c", "exit 3", NULL };
    cr_assert_eq (zi_supervisor_add (sup, "crash", crash, NULL), 0);
    char err[512];
    cr_assert_eq (zi_supervisor_start (sup, err, sizeof err), 0, "%s", err);
    int64_t t0 = s_now_ms ();
    while (zi_supervisor_restarts (sup, 0) < 4 && s_now_ms () - t0 < 5000) {
        zi_supervisor_tick (sup, 100);
    }
    int64_t took = s_now_ms () - t0;
    cr_assert_eq (zi_supervisor_restarts (sup, 0), 4);
    //  delays 40 + 80 + 160 + 320 before the 4th restart
    cr_assert_geq (took, 600, "restarted too fast: %lld ms", (long long)took);
    cr_assert_lt (took, 2500, "restarted too slowly: %lld ms", (long long)took);
    int st = zi_supervisor_last_status (sup, 0);
    cr_assert (WIFEXITED (st) && WEXITSTATUS (st) == 3);
    zi_supervisor_destroy (&sup);
}

Test (supervisor, a_program_that_cannot_run_fails_start)
{
    zi_supervisor_t *sup = zi_supervisor_new ();
    const char *missing[] = { "/nonexistent/zinfer-exec", "--plan", "p.json", NULL };
    cr_assert_eq (zi_supervisor_add (sup, "s0r0", missing, NULL), 0);
    char err[512] = "";
    cr_assert_eq (zi_supervisor_start (sup, err, sizeof err), ZI_ERR_NOTFOUND);
    cr_assert (strstr (err, "s0r0: cannot run '/nonexistent/zinfer-exec'"), "%s", err);
    cr_assert_eq (zi_supervisor_running (sup), 0);
    zi_supervisor_destroy (&sup);

    sup = zi_supervisor_new ();
    const char *ok[] = { "true", NULL };
    cr_assert_eq (zi_supervisor_add (sup, "x", ok, "/nonexistent-dir"), 0);
    cr_assert_eq (zi_supervisor_start (sup, err, sizeof err), ZI_ERR_NOTFOUND);
    cr_assert (strstr (err, "cannot enter '/nonexistent-dir'"), "%s", err);
    zi_supervisor_destroy (&sup);
}

Test (supervisor, a_child_that_ignores_sigterm_is_killed_after_the_grace)
{
    zi_supervisor_t *sup = zi_supervisor_new ();
    //  `exec` so the pid is sleep's and the trap's SIG_IGN carries over
    const char *stubborn[] = { "/bin/sh", "-c", "trap '' TERM; exec sleep 100", NULL };
    cr_assert_eq (zi_supervisor_add (sup, "stubborn", stubborn, NULL), 0);
    char err[512];
    cr_assert_eq (zi_supervisor_start (sup, err, sizeof err), 0, "%s", err);
    pid_t pid = zi_supervisor_pid (sup, 0);
    //  let the shell install its trap and exec
    int64_t end = s_now_ms () + 3000;
    char exe[256] = "";
    while (s_now_ms () < end && !strstr (exe, "sleep")) {
        char path[64];
        snprintf (path, sizeof path, "/proc/%d/exe", (int)pid);
        ssize_t n = readlink (path, exe, sizeof exe - 1);
        exe[n > 0 ? n : 0] = 0;
        usleep (10000);
    }
    int64_t t0 = s_now_ms ();
    cr_assert_eq (zi_supervisor_stop (sup, 300), 1);
    cr_assert_geq (s_now_ms () - t0, 290);
    cr_assert (!s_alive (pid));
    zi_supervisor_destroy (&sup);
}

Test (supervisor, stops_in_waves_by_stop_order)
{
    char dir[] = "/tmp/zi-waves-XXXXXX";
    cr_assert_not_null (mkdtemp (dir));
    char first[512], second[512];
    //  "first" takes 300 ms to leave; "second" must get SIGTERM only then
    snprintf (first, sizeof first,
              "trap 'sleep 0.3; date +%%s%%N > %s/first; exit 0' TERM; "
              "while :; do sleep 0.02; done",
              dir);
    snprintf (second, sizeof second,
              "trap 'date +%%s%%N > %s/second; exit 0' TERM; "
              "while :; do sleep 0.02; done",
              dir);
    const char *a[] = { "/bin/sh", "-c", first, NULL };
    const char *b[] = { "/bin/sh", "-c", second, NULL };
    zi_supervisor_t *sup = zi_supervisor_new ();
    cr_assert_eq (zi_supervisor_add (sup, "second", b, NULL), 0);
    cr_assert_eq (zi_supervisor_add (sup, "first", a, NULL), 1);
    zi_supervisor_set_stop_order (sup, 0, 1);
    zi_supervisor_set_stop_order (sup, 1, 0);
    char err[512];
    cr_assert_eq (zi_supervisor_start (sup, err, sizeof err), 0, "%s", err);
    usleep (200000); //  the shells install their traps
    cr_assert_eq (zi_supervisor_stop (sup, 3000), 0);
    char path[600];
    long long t[2];
    for (int i = 0; i < 2; i++) {
        snprintf (path, sizeof path, "%s/%s", dir, i ? "second" : "first");
        FILE *f = fopen (path, "r");
        cr_assert_not_null (f, "%s was not written", path);
        cr_assert_eq (fscanf (f, "%lld", &t[i]), 1);
        fclose (f);
        unlink (path);
    }
    rmdir (dir);
    cr_assert_geq (t[1], t[0], "second stopped before first was gone");
    zi_supervisor_destroy (&sup);
}

//  ---------------------------------------------------------------------
//  Which host, which processes

static zi_plan_t *
s_load (const char *rel)
{
    char path[1024], err[1024];
    snprintf (path, sizeof path, "%s/%s", ZI_SOURCE_DIR, rel);
    zi_plan_t *plan = zi_plan_load (path, err, sizeof err);
    cr_assert_not_null (plan, "%s", err);
    return plan;
}

Test (supervisor, picks_the_host_of_this_machine)
{
    char err[1024];
    zi_plan_t *plan = s_load ("schemas/examples/minimal-ipc.json");
    cr_assert_str_eq (zi_supervisor_pick_host (plan, NULL, err, sizeof err), "local",
                      "the only host");
    cr_assert_null (zi_supervisor_pick_host (plan, "h9", err, sizeof err));
    cr_assert (
        strstr (err, "host 'h9' is not in the plan; its hosts are: local (localhost)"),
        "%s", err);
    zi_plan_destroy (&plan);

    //  two hosts (documentation addresses, never contacted): neither is here
    plan = s_load ("schemas/examples/fashion-mnist-two-hosts.json");
    free (plan->hosts[0].address);
    plan->hosts[0].address = strdup ("203.0.113.11");
    free (plan->hosts[1].address);
    plan->hosts[1].address = strdup ("203.0.113.12");
    cr_assert_null (zi_supervisor_pick_host (plan, NULL, err, sizeof err));
    cr_assert (
        strstr (err,
                "choose one with --host: gpu-a (203.0.113.11), cpu-b (203.0.113.12)"),
        "%s", err);
    cr_assert_str_eq (zi_supervisor_pick_host (plan, "cpu-b", err, sizeof err), "cpu-b");
    //  one of them is this machine
    free (plan->hosts[1].address);
    plan->hosts[1].address = strdup ("127.0.0.1");
    cr_assert_str_eq (zi_supervisor_pick_host (plan, NULL, err, sizeof err), "cpu-b");
    //  both are: ambiguous
    free (plan->hosts[0].address);
    plan->hosts[0].address = strdup ("localhost");
    cr_assert_null (zi_supervisor_pick_host (plan, NULL, err, sizeof err));
    cr_assert (strstr (err, "several hosts of the plan are this machine (gpu-a, cpu-b)"),
               "%s", err);
    zi_plan_destroy (&plan);
}

Test (supervisor, adds_a_hosts_share_of_the_plan)
{
    char err[1024];
    zi_plan_t *plan = s_load ("schemas/examples/fashion-mnist-two-hosts.json");
    char plan_path[1024];
    snprintf (plan_path, sizeof plan_path,
              "%s/schemas/examples/fashion-mnist-two-hosts.json", ZI_SOURCE_DIR);
    //  gpu-a: the broker, s1-a0, s1-a1, part-a0, agg-a0
    zi_supervisor_t *sup = zi_supervisor_new ();
    const char *extra[] = { "--log-level", "debug", NULL };
    cr_assert_eq (zi_supervisor_add_plan (sup, plan, plan_path, "gpu-a", "/opt/zi/bin",
                                          extra, err, sizeof err),
                  5, "%s", err);
    const char *names[] = { "broker", "s1-a0", "s1-a1", "part-a0", "agg-a0" };
    for (size_t i = 0; i < 5; i++) {
        cr_assert_str_eq (zi_supervisor_name (sup, i), names[i]);
    }
    zi_supervisor_destroy (&sup);
    //  cpu-b: s0-b0, s1-b0, s2-b0, the custom pre-b0 and pre-b1, agg-b0
    sup = zi_supervisor_new ();
    cr_assert_eq (zi_supervisor_add_plan (sup, plan, plan_path, "cpu-b", "/opt/zi/bin",
                                          NULL, err, sizeof err),
                  6, "%s", err);
    cr_assert_eq (zi_supervisor_find (sup, "broker"), -1);
    cr_assert_geq (zi_supervisor_find (sup, "pre-b1"), 0);
    cr_assert_geq (zi_supervisor_find (sup, "agg-b0"), 0);
    zi_supervisor_destroy (&sup);
    sup = zi_supervisor_new ();
    cr_assert_lt (zi_supervisor_add_plan (sup, plan, "/nonexistent/plan.json", "gpu-a",
                                          "/bin", NULL, err, sizeof err),
                  0);
    zi_supervisor_destroy (&sup);
    zi_plan_destroy (&plan);
}

//  ---------------------------------------------------------------------
//  zinfer up with fake programs

static char s_tmp[256];
static pid_t s_up_pid;

static void
s_setup (void)
{
    snprintf (s_tmp, sizeof s_tmp, "/tmp/zi-up-XXXXXX");
    cr_assert_not_null (mkdtemp (s_tmp));
    s_up_pid = 0;
}

static void
s_teardown (void)
{
    //  Whatever happened in the test: no zinfer up (and so, by
    //  PDEATHSIG, no child of it) outlives it.
    if (s_up_pid > 0) {
        kill (s_up_pid, SIGKILL);
        waitpid (s_up_pid, NULL, 0);
        s_up_pid = 0;
    }
    char cmd[300];
    snprintf (cmd, sizeof cmd, "rm -rf %s", s_tmp);
    if (system (cmd) != 0) {
        fprintf (stderr, "cannot remove %s\n", s_tmp);
    }
}

TestSuite (up, .init = s_setup, .fini = s_teardown);

static void
s_write (const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen (path, "w");
    cr_assert_not_null (f, "%s", path);
    fputs (text, f);
    fclose (f);
    chmod (path, mode);
}

//  A plan for host "local": the broker, exec e0 and e1, a custom
//  preprocess (sh fake-stage.sh, run from the plan's directory), part0
//  and agg0; and fake zinfer-* programs in s_tmp/bin that record
//  "ARGS|CWD" in s_tmp/started.NAME.PID and sleep.
static void
s_fake_pipeline_threads (char *plan_path, size_t len, int e1_threads);

static void
s_fake_pipeline (char *plan_path, size_t len)
{
    s_fake_pipeline_threads (plan_path, len, 1);
}

//  As s_fake_pipeline, exec e1 with e1_threads kernel threads.
static void
s_fake_pipeline_threads (char *plan_path, size_t len, int e1_threads)
{
    char path[512], text[8192];
    snprintf (path, sizeof path, "%s/bin", s_tmp);
    cr_assert_eq (mkdir (path, 0755), 0);
    const char *script
        = "#!/bin/sh\n"
          "name=broker\n"
          "for a in \"$@\"; do [ \"$prev\" = --name ] && name=$a; prev=$a; done\n"
          "echo \"$*|$(pwd)\" > %s/started.$name.$$.tmp\n"
          "mv %s/started.$name.$$.tmp %s/started.$name.$$\n"
          "exec sleep 1000\n";
    char body[2048];
    snprintf (body, sizeof body, script, s_tmp, s_tmp, s_tmp);
    const char *progs[] = { "broker", "exec", "preprocess", "partition", "aggregate" };
    for (size_t i = 0; i < 5; i++) {
        snprintf (path, sizeof path, "%s/bin/zinfer-%s", s_tmp, progs[i]);
        s_write (path, body, 0755);
    }
    snprintf (path, sizeof path, "%s/fake-stage.sh", s_tmp);
    s_write (path, body, 0644);
    snprintf (
        text, sizeof text,
        "{\"zinfer_plan\": 1,\n"
        " \"model\": {\"path\": \"model.onnx\", \"node_count\": 2,\n"
        "   \"inputs\": [{\"name\": \"x\", \"dtype\": \"float32\", \"shape\": [-1, "
        "4]}],\n"
        "   \"outputs\": [{\"name\": \"y\", \"dtype\": \"float32\", \"shape\": [-1, "
        "4]}]},\n"
        " \"hosts\": [{\"name\": \"local\", \"address\": \"127.0.0.1\"},\n"
        "           {\"name\": \"other\", \"address\": \"203.0.113.7\"}],\n"
        " \"broker\": {\"host\": \"local\", \"endpoints\": {\n"
        "   \"front\": {\"bind\": \"ipc://%s/f\", \"connect\": \"ipc://%s/f\"},\n"
        "   \"to_preprocess\": {\"bind\": \"ipc://%s/a\", \"connect\": \"ipc://%s/a\"},\n"
        "   \"preprocessed\": {\"bind\": \"ipc://%s/b\", \"connect\": \"ipc://%s/b\"},\n"
        "   \"to_partition\": {\"bind\": \"ipc://%s/c\", \"connect\": \"ipc://%s/c\"},\n"
        "   \"intake\": {\"bind\": \"ipc://%s/d\", \"connect\": \"ipc://%s/d\"},\n"
        "   \"work\": {\"bind\": \"ipc://%s/e\", \"connect\": \"ipc://%s/e\"},\n"
        "   \"to_aggregate\": {\"bind\": \"ipc://%s/g\", \"connect\": \"ipc://%s/g\"},\n"
        "   \"results\": {\"bind\": \"ipc://%s/h\", \"connect\": \"ipc://%s/h\"}}},\n"
        " \"segments\": [{\"index\": 0, \"first_node\": 0, \"last_node\": 1,\n"
        "   \"inputs\": [\"x\"], \"outputs\": [\"y\"],\n"
        "   \"replicas\": [{\"name\": \"e0\", \"host\": \"local\"},\n"
        "                {\"name\": \"e1\", \"host\": \"local\", \"capacity\": 2, "
        "\"threads\": %d},\n"
        "                {\"name\": \"e2\", \"host\": \"other\"}]}],\n"
        " \"stages\": [\n"
        "   {\"kind\": \"custom\", \"replaces\": \"preprocess\",\n"
        "    \"command\": [\"sh\", \"fake-stage.sh\"],\n"
        "    \"replicas\": [{\"name\": \"pre0\", \"host\": \"local\"}]},\n"
        "   {\"kind\": \"partition\", \"replicas\": [{\"name\": \"part0\", \"host\": "
        "\"local\"}],\n"
        "    \"micro_batch\": 4, \"max_batch\": 8, \"max_delay_us\": 0},\n"
        "   {\"kind\": \"aggregate\", \"replicas\": [{\"name\": \"agg0\", \"host\": "
        "\"local\"}]}]}\n",
        s_tmp, s_tmp, s_tmp, s_tmp, s_tmp, s_tmp, s_tmp, s_tmp, s_tmp, s_tmp, s_tmp,
        s_tmp, s_tmp, s_tmp, s_tmp, s_tmp, e1_threads);
    snprintf (plan_path, len, "%s/plan.json", s_tmp);
    s_write (plan_path, text, 0644);
}

//  Start `zinfer ARGS...` with stdout and stderr into s_tmp/up.log; it dies
//  with this process.
static pid_t
s_spawn_zinfer (const char *const *args)
{
    char log[512];
    snprintf (log, sizeof log, "%s/up.log", s_tmp);
    char exe[512];
    snprintf (exe, sizeof exe, "%s/zinfer", ZI_BINARY_DIR);
    const char *argv[32] = { exe };
    int n = 1;
    while (args[n - 1] && n < 31) {
        argv[n] = args[n - 1];
        n++;
    }
    argv[n] = NULL;
    pid_t pid = zt_fork_exec (log, true, (char *const *)argv);
    return pid;
}

//  The pids of the started.NAME.* files (up to max), in no order.
static int
s_started (const char *name, pid_t *pids, int max)
{
    DIR *d = opendir (s_tmp);
    cr_assert_not_null (d);
    char prefix[128];
    snprintf (prefix, sizeof prefix, "started.%s.", name);
    int n = 0;
    struct dirent *e;
    while ((e = readdir (d))) {
        if (strncmp (e->d_name, prefix, strlen (prefix)) == 0
            && !strstr (e->d_name, ".tmp") && n < max) {
            pids[n++] = (pid_t)atoi (e->d_name + strlen (prefix));
        }
    }
    closedir (d);
    return n;
}

static void
s_wait_started (const char *name, int count)
{
    pid_t pids[16];
    int64_t end = s_now_ms () + 10000;
    while (s_started (name, pids, 16) < count && s_now_ms () < end) {
        usleep (20000);
    }
    cr_assert_geq (s_started (name, pids, 16), count, "%s not started %d times", name,
                   count);
}

static char *
s_slurp (const char *path)
{
    static char buf[65536];
    FILE *f = fopen (path, "r");
    if (!f) {
        buf[0] = 0;
        return buf;
    }
    size_t n = fread (buf, 1, sizeof buf - 1, f);
    fclose (f);
    buf[n] = 0;
    return buf;
}

static int
s_wait_exit (pid_t pid, int timeout_ms)
{
    int64_t end = s_now_ms () + timeout_ms;
    int status;
    while (s_now_ms () < end) {
        pid_t r = waitpid (pid, &status, WNOHANG);
        if (r == pid) {
            return status;
        }
        usleep (10000);
    }
    return -1;
}

static const char *s_names[] = { "broker", "e0", "e1", "pre0", "part0", "agg0" };

Test (up, starts_the_hosts_share_restarts_and_stops_on_sigterm)
{
    char plan[512], bin[512];
    s_fake_pipeline (plan, sizeof plan);
    snprintf (bin, sizeof bin, "%s/bin", s_tmp);
    const char *args[] = { "up", plan, "--host", "local", "--bin", bin, NULL };
    s_up_pid = s_spawn_zinfer (args);
    for (size_t i = 0; i < 6; i++) {
        s_wait_started (s_names[i], 1);
    }
    pid_t e2[4];
    cr_assert_eq (s_started ("e2", e2, 4), 0, "e2 runs on the other host");
    //  the arguments each got
    pid_t pid;
    char path[512], expect[1024];
    s_started ("e1", &pid, 1);
    snprintf (path, sizeof path, "%s/started.e1.%d", s_tmp, (int)pid);
    snprintf (expect, sizeof expect, "--plan %s --name e1|", plan);
    cr_assert (strstr (s_slurp (path), expect), "%s", s_slurp (path));
    s_started ("broker", &pid, 1);
    snprintf (path, sizeof path, "%s/started.broker.%d", s_tmp, (int)pid);
    snprintf (expect, sizeof expect, "--plan %s|", plan);
    cr_assert (strstr (s_slurp (path), expect), "%s", s_slurp (path));
    //  the custom stage ran its command in the plan's directory
    s_started ("pre0", &pid, 1);
    snprintf (path, sizeof path, "%s/started.pre0.%d", s_tmp, (int)pid);
    snprintf (expect, sizeof expect, "--plan %s --name pre0|%s\n", plan, s_tmp);
    cr_assert (strstr (s_slurp (path), expect), "%s", s_slurp (path));

    //  kill e0: it comes back, and the log says why it went
    pid_t e0;
    s_started ("e0", &e0, 1);
    cr_assert_eq (kill (e0, SIGKILL), 0);
    s_wait_started ("e0", 2);
    snprintf (path, sizeof path, "%s/up.log", s_tmp);
    cr_assert (strstr (s_slurp (path), "UP-RESTART: e0 (pid"), "%s", s_slurp (path));
    cr_assert (strstr (s_slurp (path), "killed by signal 9"), "%s", s_slurp (path));

    //  SIGTERM: every child stops, zinfer up exits 0
    pid_t all[16];
    int n_all = 0;
    for (size_t i = 0; i < 6; i++) {
        n_all += s_started (s_names[i], all + n_all, 16 - n_all);
    }
    cr_assert_eq (kill (s_up_pid, SIGTERM), 0);
    int status = s_wait_exit (s_up_pid, 8000);
    cr_assert (status != -1, "zinfer up did not exit");
    s_up_pid = 0;
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "status 0x%x: %s", status,
               s_slurp (path));
    for (int i = 0; i < n_all; i++) {
        cr_assert (!s_alive (all[i]), "pid %d survived", (int)all[i]);
    }
    cr_assert (strstr (s_slurp (path), "UP-STOPPED"), "%s", s_slurp (path));
}

Test (up, says_when_exec_threads_outnumber_the_cores)
{
    //  e0 (1 thread) and e1 on this host; e2 is on another host and does
    //  not count. First as many threads as cores, then one more.
    cpu_set_t set;
    CPU_ZERO (&set);
    cr_assert_eq (sched_getaffinity (0, sizeof set, &set), 0);
    int cores = CPU_COUNT (&set);
    char plan[512], bin[512], log[512];
    for (int extra = 0; extra <= 1; extra++) {
        if (extra) {
            s_teardown ();      //  a fresh directory for the second run
            s_setup ();
        }
        snprintf (bin, sizeof bin, "%s/bin", s_tmp);
        snprintf (log, sizeof log, "%s/up.log", s_tmp);
        int e1 = cores - 1 + extra;
        s_fake_pipeline_threads (plan, sizeof plan, e1 > 0 ? e1 : 1);
        const char *args[] = { "up", plan, "--host", "local", "--bin", bin, NULL };
        s_up_pid = s_spawn_zinfer (args);
        for (size_t i = 0; i < 6; i++) {
            s_wait_started (s_names[i], 1);
        }
        int64_t end = s_now_ms () + 5000;
        while (!strstr (s_slurp (log), "UP-RUNNING") && s_now_ms () < end) {
            usleep (20000);
        }
        const char *text = s_slurp (log);
        char want[128];
        int threads = 1 + (e1 > 0 ? e1 : 1);
        snprintf (want, sizeof want, "runs %d exec threads (2 replicas) on %d cores", threads,
                  cores);
        if (threads > cores) {
            cr_assert (strstr (text, "UP-OVERSUBSCRIBED") && strstr (text, want), "%s", text);
        }
        else {
            cr_assert_null (strstr (text, "UP-OVERSUBSCRIBED"), "%s", text);
            snprintf (want, sizeof want, "%d exec threads (2 replicas) on %d cores", threads,
                      cores);
            cr_assert (strstr (text, want), "%s", text);
        }
        kill (s_up_pid, SIGTERM);
        cr_assert_neq (s_wait_exit (s_up_pid, 10000), -1, "zinfer up did not stop");
        s_up_pid = 0;
    }
}

Test (up, leaves_no_orphans_when_killed)
{
    char plan[512], bin[512];
    s_fake_pipeline (plan, sizeof plan);
    snprintf (bin, sizeof bin, "%s/bin", s_tmp);
    const char *args[] = { "up", plan, "--host", "local", "--bin", bin, NULL };
    s_up_pid = s_spawn_zinfer (args);
    pid_t all[16];
    int n_all = 0;
    for (size_t i = 0; i < 6; i++) {
        s_wait_started (s_names[i], 1);
        n_all += s_started (s_names[i], all + n_all, 16 - n_all);
    }
    kill (s_up_pid, SIGKILL);
    waitpid (s_up_pid, NULL, 0);
    s_up_pid = 0;
    int64_t end = s_now_ms () + 5000;
    for (int i = 0; i < n_all; i++) {
        while (s_alive (all[i]) && s_now_ms () < end) {
            usleep (10000);
        }
        cr_assert (!s_alive (all[i]), "pid %d outlived its supervisor", (int)all[i]);
    }
}

Test (up, explains_what_is_wrong)
{
    char plan[512], out[512];
    s_fake_pipeline (plan, sizeof plan);
    snprintf (out, sizeof out, "%s/up.log", s_tmp);
    struct {
        const char *args[8];
        int code;
        const char *says;
    } cases[] = {
        { { "up", plan, "--host", "h9", NULL },
          2,
          "host 'h9' is not in the plan; its hosts are: "
          "local (127.0.0.1), other (203.0.113.7)" },
        { { "up", plan, "--host", "local", "--bin", "/nonexistent", NULL },
          1,
          "broker: cannot run '/nonexistent/zinfer-broker'" },
        { { "up", "/nonexistent/plan.json", NULL }, 2, "/nonexistent/plan.json" },
        { { "up", plan, "--frobnicate", NULL }, 2, "unknown option '--frobnicate'" },
        { { "up", plan, "--log-level", "loud", NULL }, 2, "'loud' is not one of" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unlink (out);
        s_up_pid = s_spawn_zinfer (cases[i].args);
        int status = s_wait_exit (s_up_pid, 8000);
        s_up_pid = 0;
        cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == cases[i].code,
                   "case %zu: status 0x%x: %s", i, status, s_slurp (out));
        cr_assert (strstr (s_slurp (out), cases[i].says), "case %zu: %s", i,
                   s_slurp (out));
    }
}
