/*  zt_procs.h - process-level test helpers shared by test_reliability.c and
    test_security.c (header only: every function is static, each test
    file is its own executable).

    Children are started with PR_SET_PDEATHSIG (a crashed test leaves none
    behind), logged into a file, and recorded, so zt_kill_all () in a
    Criterion fini hook kills and reaps every one of them, also after a
    failed assertion. Waits are on events (a pid gone, an answer, STATS),
    polled every few ms, never fixed sleeps.
*/
#ifndef ZT_PROCS_H_INCLUDED
#define ZT_PROCS_H_INCLUDED

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <msgpack.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zi_client.h"
#include "zi_exec.h"
#include "zi_msg.h"
#include "zi_onnx.h"
#include "zi_plan.h"
#include "zi_split.h"
#include "zi_transform.h"
#include "zt_spawn.h"

#define ZT_UNUSED __attribute__ ((unused))
//  Under AddressSanitizer every process keeps freed memory in quarantine
//  (256 MiB by default) and mallinfo is not its allocator's: memory
//  bounds are measured and printed, but only checked in a normal build.
#ifdef __SANITIZE_ADDRESS__
#define ZT_MEMORY_CHECKED false
#else
#define ZT_MEMORY_CHECKED true
#endif
#define ZT_MAX_CHILDREN 64
#define ZT_FASHION ZI_SOURCE_DIR "/examples/fashion-mnist/model.onnx"
#define ZT_FASHION_PRE                                                                   \
    "--input-dtype uint8 --input-shape -1,28,28,1 --pre cast=float32 "                   \
    "--pre scale=0.00392156862745098 --pre hwc_to_chw"

static pid_t zt_children[ZT_MAX_CHILDREN];
static int zt_nchildren;
static char zt_dir[128];

static ZT_UNUSED int64_t
zt_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static ZT_UNUSED void
zt_forget (pid_t pid)
{
    for (int i = 0; i < zt_nchildren; i++) {
        if (zt_children[i] == pid) {
            zt_children[i] = zt_children[--zt_nchildren];
            return;
        }
    }
}

//  Start argv (NULL-terminated) with stdout and stderr appended to log.
static ZT_UNUSED pid_t
zt_spawn (const char *log, char *const argv[])
{
    cr_assert_lt (zt_nchildren, ZT_MAX_CHILDREN);
    pid_t pid = zt_fork_exec (log, true, argv);
    zt_children[zt_nchildren++] = pid;
    return pid;
}

//  One of the built programs: zinfer-broker, zinfer-exec, ..., zinfer.
static ZT_UNUSED pid_t
zt_spawn_prog (const char *log, const char *prog, const char *a1, const char *a2,
               const char *a3, const char *a4, const char *a5)
{
    char exe[512];
    snprintf (exe, sizeof exe, "%s/%s", ZI_BINARY_DIR, prog);
    char *argv[]
        = { exe, (char *)a1, (char *)a2, (char *)a3, (char *)a4, (char *)a5, NULL };
    return zt_spawn (log, argv);
}

//  Wait up to ms for pid to exit; its wait status in *status. True when
//  it exited (and was reaped).
static ZT_UNUSED bool
zt_wait_exit (pid_t pid, int ms, int *status)
{
    int64_t end = zt_now_ms () + ms;
    do {
        int st = 0;
        pid_t r = waitpid (pid, &st, WNOHANG);
        if (r == pid) {
            zt_forget (pid);
            if (status) {
                *status = st;
            }
            return true;
        }
        if (r < 0 && errno == ECHILD) {
            zt_forget (pid);
            return true;
        }
        usleep (2000);
    } while (zt_now_ms () < end);
    return false;
}

//  Signal pid and measure how long it takes to exit (ms), up to limit_ms;
//  -1 when it did not (it is then killed). Its status in *status.
static ZT_UNUSED int64_t
zt_stop (pid_t pid, int sig, int limit_ms, int *status)
{
    int64_t t0 = zt_now_ms ();
    kill (pid, sig);
    if (zt_wait_exit (pid, limit_ms, status)) {
        return zt_now_ms () - t0;
    }
    kill (pid, SIGKILL);
    zt_wait_exit (pid, 5000, status);
    return -1;
}

//  Kill and reap every child still recorded: SIGTERM first (zinfer up
//  stops its own children), then SIGKILL.
static ZT_UNUSED void
zt_kill_all (void)
{
    for (int i = 0; i < zt_nchildren; i++) {
        kill (zt_children[i], SIGTERM);
    }
    int64_t end = zt_now_ms () + 5000;
    while (zt_nchildren > 0 && zt_now_ms () < end) {
        pid_t pid = zt_children[0];
        if (!zt_wait_exit (pid, 20, NULL)) {
            //  rotate so every child gets its turn
            zt_children[0] = zt_children[zt_nchildren - 1];
            zt_children[zt_nchildren - 1] = pid;
        }
    }
    while (zt_nchildren > 0) {
        pid_t pid = zt_children[0];
        kill (pid, SIGKILL);
        waitpid (pid, NULL, 0);
        zt_forget (pid);
    }
}

static ZT_UNUSED void
zt_rm_rf (const char *path)
{
    DIR *d = opendir (path);
    if (d) {
        struct dirent *e;
        while ((e = readdir (d))) {
            if (strcmp (e->d_name, ".") == 0 || strcmp (e->d_name, "..") == 0) {
                continue;
            }
            char sub[1024];
            snprintf (sub, sizeof sub, "%s/%s", path, e->d_name);
            struct stat st;
            if (lstat (sub, &st) == 0 && S_ISDIR (st.st_mode)) {
                zt_rm_rf (sub);
            }
            else {
                unlink (sub);
            }
        }
        closedir (d);
    }
    rmdir (path);
}

static ZT_UNUSED void
zt_setup (void)
{
    snprintf (zt_dir, sizeof zt_dir, "/tmp/zi-rel-XXXXXX");
    cr_assert_not_null (mkdtemp (zt_dir));
    zt_nchildren = 0;
}

static ZT_UNUSED void
zt_teardown (void)
{
    zt_kill_all ();
    if (zt_dir[0] && !getenv ("ZT_KEEP")) {
        zt_rm_rf (zt_dir);
    }
    zt_dir[0] = 0;
}

//  The last n bytes of a file (for failure messages).
static ZT_UNUSED const char *
zt_tail (const char *path, size_t n)
{
    static char buf[8192];
    if (n >= sizeof buf) {
        n = sizeof buf - 1;
    }
    buf[0] = 0;
    FILE *f = fopen (path, "r");
    if (!f) {
        return buf;
    }
    fseek (f, 0, SEEK_END);
    long size = ftell (f);
    fseek (f, size > (long)n ? size - (long)n : 0, SEEK_SET);
    size_t got = fread (buf, 1, n, f);
    fclose (f);
    buf[got] = 0;
    return buf;
}

static ZT_UNUSED bool
zt_file_has (const char *path, const char *text)
{
    FILE *f = fopen (path, "r");
    if (!f) {
        return false;
    }
    char line[4096];
    bool found = false;
    while (!found && fgets (line, sizeof line, f)) {
        found = strstr (line, text) != NULL;
    }
    fclose (f);
    return found;
}

//  Stop every child (SIGTERM: each drains and exits, and a sanitizer
//  build reports leaks then), and fail if any log holds a sanitizer
//  report or a crash.
static ZT_UNUSED void
zt_stop_and_check_logs (void)
{
    zt_kill_all ();
    DIR *d = opendir (zt_dir);
    cr_assert_not_null (d);
    struct dirent *e;
    static const char *bad[] = { "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                 "runtime error:", "Assertion `", NULL };
    while ((e = readdir (d))) {
        size_t n = strlen (e->d_name);
        if (n < 4 || strcmp (e->d_name + n - 4, ".log") != 0) {
            continue;
        }
        char path[512];
        snprintf (path, sizeof path, "%s/%s", zt_dir, e->d_name);
        for (int i = 0; bad[i]; i++) {
            cr_assert (!zt_file_has (path, bad[i]), "%s: '%s':\n%s", path, bad[i],
                       zt_tail (path, 4000));
        }
    }
    closedir (d);
}

//  ---------------------------------------------------------------------
//  /proc

//  Resident set size of pid in KiB (VmRSS), or -1.
static ZT_UNUSED long
zt_rss_kb (pid_t pid)
{
    char path[64], line[256];
    snprintf (path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen (path, "r");
    if (!f) {
        return -1;
    }
    long kb = -1;
    while (fgets (line, sizeof line, f)) {
        if (strncmp (line, "VmRSS:", 6) == 0) {
            kb = strtol (line + 6, NULL, 10);
            break;
        }
    }
    fclose (f);
    return kb;
}

//  True while pid is a live process (a zombie counts as gone).
static ZT_UNUSED bool
zt_alive (pid_t pid)
{
    char path[64], buf[512];
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

//  A live child of parent running program prog (its argv[0] ends with
//  it), with "--name name" in its arguments if name is not NULL; 0 if none.
static ZT_UNUSED pid_t
zt_child (pid_t parent, const char *prog, const char *name)
{
    DIR *d = opendir ("/proc");
    if (!d) {
        return 0;
    }
    pid_t found = 0;
    struct dirent *e;
    while (!found && (e = readdir (d))) {
        pid_t pid = (pid_t)atoi (e->d_name);
        if (pid <= 0) {
            continue;
        }
        char path[64], buf[4096];
        snprintf (path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *f = fopen (path, "r");
        if (!f) {
            continue;
        }
        size_t n = fread (buf, 1, sizeof buf - 1, f);
        fclose (f);
        buf[n] = 0;
        const char *paren = strrchr (buf, ')');
        int ppid = 0;
        char state = 0;
        if (!paren || sscanf (paren + 1, " %c %d", &state, &ppid) != 2 || ppid != parent
            || state == 'Z') {
            continue;
        }
        snprintf (path, sizeof path, "/proc/%d/cmdline", (int)pid);
        f = fopen (path, "r");
        if (!f) {
            continue;
        }
        n = fread (buf, 1, sizeof buf - 1, f);
        fclose (f);
        buf[n] = 0;
        size_t la = strlen (buf), lp = strlen (prog);
        if (la < lp || strcmp (buf + la - lp, prog) != 0) {
            continue;
        }
        if (!name) {
            found = pid;
            break;
        }
        for (size_t i = 0; i + 7 < n; i++) {
            if (memcmp (buf + i, "--name", 7) == 0 && strcmp (buf + i + 7, name) == 0) {
                found = pid;
                break;
            }
        }
    }
    closedir (d);
    return found;
}

//  ---------------------------------------------------------------------
//  Plans

//  `zinfer plan MODEL --ipc zt_dir ARGS -o zt_dir/plan.json`; the plan,
//  loaded, for the caller to edit and zt_plan_save.
static ZT_UNUSED zi_plan_t *
zt_plan_make (char *path, size_t len, const char *model, const char *fmt, ...)
{
    char args[1024], cmd[4096], log[256];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (args, sizeof args, fmt, ap);
    va_end (ap);
    snprintf (path, len, "%s/plan.json", zt_dir);
    snprintf (log, sizeof log, "%s/plan.log", zt_dir);
    snprintf (cmd, sizeof cmd, "%s/zinfer plan %s --ipc %s %s -o %s > %s 2>&1",
              ZI_BINARY_DIR, model, zt_dir, args, path, log);
    cr_assert_eq (system (cmd), 0, "%s failed:\n%s", cmd, zt_tail (log, 2000));
    char err[1024];
    zi_plan_t *plan = zi_plan_load (path, err, sizeof err);
    cr_assert_not_null (plan, "%s", err);
    return plan;
}

static ZT_UNUSED void
zt_plan_save (zi_plan_t *plan, const char *path)
{
    char err[1024];
    cr_assert_eq (zi_plan_write (plan, path, err, sizeof err), 0, "%s", err);
}

//  ---------------------------------------------------------------------
//  STATS

typedef struct {
    msgpack_unpacked up;
    char *data; //  the map's bytes: the unpacked strings point into them
    bool ok;
} zt_stats_t;

static ZT_UNUSED const msgpack_object *
zt_path (const msgpack_object *o, const char *path)
{
    char buf[256];
    snprintf (buf, sizeof buf, "%s", path);
    char *save = NULL;
    for (char *tok = strtok_r (buf, ".", &save); o && tok;
         tok = strtok_r (NULL, ".", &save)) {
        const msgpack_object *next = NULL;
        if (o->type == MSGPACK_OBJECT_MAP) {
            for (uint32_t i = 0; i < o->via.map.size; i++) {
                const msgpack_object *k = &o->via.map.ptr[i].key;
                if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen (tok)
                    && memcmp (k->via.str.ptr, tok, k->via.str.size) == 0) {
                    next = &o->via.map.ptr[i].val;
                }
            }
        }
        else if (o->type == MSGPACK_OBJECT_ARRAY) {
            uint32_t i = (uint32_t)atoi (tok);
            next = i < o->via.array.size ? &o->via.array.ptr[i] : NULL;
        }
        o = next;
    }
    return o;
}

static ZT_UNUSED void
zt_stats_done (zt_stats_t *s)
{
    msgpack_unpacked_destroy (&s->up);
    free (s->data);
    s->data = NULL;
}

//  Ask the broker for STATS; false when it does not answer in ms.
static ZT_UNUSED bool
zt_stats (zi_client_t *client, zt_stats_t *s, int ms)
{
    zi_msg_t *reply = NULL;
    char err[512];
    s->ok = false;
    s->data = NULL;
    if (zi_client_stats (client, ms, &reply, err, sizeof err)) {
        zi_msg_destroy (&reply);
        return false;
    }
    size_t size = 0;
    const uint8_t *data = zi_msg_stats (reply, &size);
    s->data = (char *)malloc (size ? size : 1);
    memcpy (s->data, data, size);
    zi_msg_destroy (&reply);
    msgpack_unpacked_init (&s->up);
    s->ok = msgpack_unpack_next (&s->up, s->data, size, NULL) == MSGPACK_UNPACK_SUCCESS;
    if (!s->ok) {
        zt_stats_done (s);
    }
    return s->ok;
}

//  A number in the stats (-1 when absent; bools as 0 / 1).
static ZT_UNUSED int64_t
zt_stat (zt_stats_t *s, const char *path)
{
    const msgpack_object *o = zt_path (&s->up.data, path);
    if (!o) {
        return -1;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return (int64_t)o->via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return o->via.i64;
    case MSGPACK_OBJECT_BOOLEAN:
        return o->via.boolean;
    default:
        return -1;
    }
}

//  Fetch STATS afresh and read one value (-1 when the broker is silent).
static ZT_UNUSED int64_t
zt_stat1 (zi_client_t *client, const char *path)
{
    zt_stats_t s;
    if (!zt_stats (client, &s, 2000)) {
        return -1;
    }
    int64_t v = zt_stat (&s, path);
    zt_stats_done (&s);
    return v;
}

//  Live replicas over every segment, and live aggregators and stages.
static ZT_UNUSED bool
zt_all_live (zi_client_t *client, int replicas, int stages)
{
    zt_stats_t s;
    if (!zt_stats (client, &s, 1000)) {
        return false;
    }
    int live = 0;
    for (int seg = 0; seg < 8; seg++) {
        for (int r = 0; r < 16; r++) {
            char path[64];
            snprintf (path, sizeof path, "segments.%d.replicas.%d.live", seg, r);
            live += zt_stat (&s, path) == 1;
        }
    }
    int64_t st = zt_stat (&s, "stages.preprocess.live")
                 + zt_stat (&s, "stages.partition.live")
                 + zt_stat (&s, "stages.aggregate.live");
    zt_stats_done (&s);
    return live >= replicas && st >= stages;
}

//  Wait until every replica and stage is live (or fail after ms).
static ZT_UNUSED void
zt_wait_all_live (zi_client_t *client, int replicas, int stages, int ms, const char *log)
{
    int64_t end = zt_now_ms () + ms;
    while (!zt_all_live (client, replicas, stages)) {
        cr_assert (zt_now_ms () < end, "not every process is live after %d ms:\n%s", ms,
                   zt_tail (log, 3000));
        usleep (20000);
    }
}

//  ---------------------------------------------------------------------
//  Requests and the single-process reference

//  Request k's input: 4 images of random bytes, uint8 [4,28,28,1].
static ZT_UNUSED zi_tensor_t *
zt_input (int k)
{
    zi_tensor_t *t = zi_tensor_new (ZI_DT_U8, 4, (int64_t[]){ 4, 28, 28, 1 });
    uint32_t x = 2654435761u * (uint32_t)(k + 1);
    for (int64_t i = 0; i < 4 * 28 * 28; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        ((uint8_t *)t->data)[i] = (uint8_t)x;
    }
    return t;
}

//  The single-process engine (the plan's preprocessing, the whole model
//  in one executor) on one input, as one batch: what the pipeline must
//  answer, bit for bit, when its tasks hold the same rows.
typedef struct {
    zi_graph_t *graph;
    zi_exec_t *exec;
} zt_engine_t;

static ZT_UNUSED void
zt_engine_open (zt_engine_t *e, const char *model, const zi_plan_t *plan)
{
    char err[1024];
    e->graph = zi_onnx_load (model, err, sizeof err);
    cr_assert_not_null (e->graph, "%s", err);
    //  The model as the plan runs it: with the layers it splits split.
    if (plan) {
        cr_assert_eq (zi_split_apply_all (e->graph, plan->model.splits, plan->model.n_splits,
                                          err, sizeof err), 0, "%s", err);
    }
    e->exec = zi_exec_new (e->graph, 0, -1, NULL, err, sizeof err);
    cr_assert_not_null (e->exec, "%s", err);
}

static ZT_UNUSED void
zt_engine_close (zt_engine_t *e)
{
    zi_exec_destroy (&e->exec);
    zi_graph_destroy (&e->graph);
}

static ZT_UNUSED zi_tensor_t *
zt_engine_run (zt_engine_t *e, const zi_plan_t *plan, const zi_tensor_t *x)
{
    char err[1024];
    const zi_plan_stage_t *pre = zi_plan_find_stage (plan, ZI_PLAN_STAGE_PREPROCESS);
    zi_tensor_t *in = NULL;
    if (pre && pre->n_tensors) {
        cr_assert_eq (zi_transform_pre (&pre->tensors[0], x, &in, err, sizeof err), 0,
                      "%s", err);
    }
    else {
        in = zi_tensor_dup (x); //  a plan without preprocess: taken as it is
    }
    zi_tensor_t *out[8] = { NULL };
    const zi_tensor_t *ins[1] = { in };
    cr_assert_eq (zi_exec_run (e->exec, ins, out, err, sizeof err), 0, "%s", err);
    zi_tensor_destroy (&in);
    for (int i = 1; i < zi_exec_n_outputs (e->exec); i++) {
        zi_tensor_destroy (&out[i]);
    }
    return out[0];
}

static ZT_UNUSED bool
zt_same_bits (const zi_tensor_t *a, const zi_tensor_t *b)
{
    return a && b && zi_tensor_same_shape (a, b) && a->nbytes == b->nbytes
           && memcmp (a->data, b->data, a->nbytes) == 0;
}

//  ---------------------------------------------------------------------
//  The test runner: one test at a time. Each test starts a whole pipeline
//  and measures its memory, latency and exit times; a second pipeline on
//  the same two cores would distort every figure. (ctest passes --jobs 2;
//  it still runs two test programs at once.)

int
main (int argc, char *argv[])
{
    struct criterion_test_set *tests = criterion_initialize ();
    int result = 0;
    int rc = criterion_handle_args (argc, argv, true);
    if (rc > 0) {
        criterion_options.jobs = 1;
        result = !criterion_run_all_tests (tests);
    }
    else if (rc < 0) {
        result = 1;
    }
    criterion_finalize (tests);
    return result;
}

#endif
