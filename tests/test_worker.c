/*  test_worker.c - the exec worker: in-process checks of its parts, then the
    real zinfer-exec binary against a fake broker ROUTER written here.

    Every process test builds its plan with the zi_plan API (a model cut in
    two at a node boundary, ipc:// endpoints in a fresh temporary
    directory), starts zinfer-exec (s_spawn), and waits on events (a
    message, a log line, the child's exit) with deadlines, never on fixed
    sleeps. Children are killed and reaped by the suite's fini hook, which
    Criterion runs also when an assertion fails, and get SIGKILL
    (PR_SET_PDEATHSIG) when the test process dies in any other way.
    // ctest-timeout: 180
*/
#define _GNU_SOURCE        //  nftw
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zi_exec.h"
#include "zi_msg.h"
#include "zi_onnx.h"
#include "zi_plan.h"
#include "zi_planner.h"
#include "zi_worker.h"
#include "zt_spawn.h"

#define EXEC_BINARY ZI_BINARY_DIR "/zinfer-exec"
#define SMALL_MLP "tests/models/small_mlp"
#define MLP "tests/models/mlp"

//  ---------------------------------------------------------------------
//  Fixture: a temporary directory and the children to kill

static char s_dir[64];
static pid_t s_children[8];
static int s_n_children;

//  Messages from one worker that arrived while the test waited for
//  another's, kept for later (heartbeats are not kept).
static struct {
    char *from;
    zi_msg_t *msg;
} s_stash[16];
static int s_n_stash;


static void
s_setup (void)
{
    strcpy (s_dir, "/tmp/zi_worker_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    s_n_children = 0;
}

static void
s_teardown (void)
{
    for (int i = 0; i < s_n_children; i++) {
        if (s_children[i] > 0) {
            kill (s_children[i], SIGKILL);
            waitpid (s_children[i], NULL, 0);
            s_children[i] = 0;
        }
    }
    s_n_children = 0;
    for (int i = 0; i < s_n_stash; i++) {
        free (s_stash[i].from);
        zi_msg_destroy (&s_stash[i].msg);
    }
    s_n_stash = 0;
    if (*s_dir) {
        zt_rm_tree (s_dir);
        *s_dir = 0;
    }
}

TestSuite (worker, .init = s_setup, .fini = s_teardown);

//  ---------------------------------------------------------------------
//  Helpers: models, plans, processes, the fake broker

static char *
s_read_text (const char *path)
{
    FILE *file = fopen (path, "rb");
    if (!file) {
        return strdup ("");
    }
    size_t cap = 4096, len = 0;
    char *buf = (char *) malloc (cap);
    size_t n;
    while ((n = fread (buf + len, 1, cap - len - 1, file)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            buf = (char *) realloc (buf, cap);
        }
    }
    buf[len] = 0;
    fclose (file);
    return buf;
}

static zi_graph_t *
s_load_model (const char *dir)
{
    char path[512], err[1024];
    snprintf (path, sizeof path, "%s/%s/model.onnx", ZI_SOURCE_DIR, dir);
    zi_graph_t *g = zi_onnx_load (path, err, sizeof err);
    cr_assert_not_null (g, "%s", err);
    return g;
}

static zi_tensor_t *
s_load_pb (const char *dir, const char *file)
{
    char path[512], err[1024];
    snprintf (path, sizeof path, "%s/%s/test_data_set_0/%s", ZI_SOURCE_DIR, dir, file);
    zi_tensor_t *t = zi_onnx_load_tensor (path, NULL, err, sizeof err);
    cr_assert_not_null (t, "%s", err);
    return t;
}

static void
s_plan_tensor (zi_plan_tensor_t *p, const zi_value_t *v)
{
    p->name = strdup (v->name);
    p->dtype = v->dtype;
    p->rank = v->rank;
    memcpy (p->shape, v->shape, sizeof p->shape);
}

typedef struct {
    const char *model;          //  a directory under the source tree
    int cut;                    //  last node of segment 0
    int64_t interval_ms;        //  heartbeat interval
    int64_t liveness;
    const char *sha256;         //  model.sha256, or NULL
} s_plan_opts_t;

//  A plan for the model cut after node `cut`: segment 0 served by s0r0
//  (capacity 1.5, credit 2), segment 1 by s1r0 (capacity 1, credit 1); the
//  segments' tensors are what the executor says crosses the cut. Written
//  to <dir>/plan.json unless path_out is NULL.
static zi_plan_t *
s_make_plan (const s_plan_opts_t *o, char *path_out, size_t path_len)
{
    zi_graph_t *g = s_load_model (o->model);
    zi_plan_t *plan = zi_plan_new ();
    cr_assert_not_null (plan);
    char path[512], err[1024];
    snprintf (path, sizeof path, "%s/%s/model.onnx", ZI_SOURCE_DIR, o->model);
    plan->model.path = strdup (path);
    plan->model.sha256 = o->sha256 ? strdup (o->sha256) : NULL;
    plan->model.node_count = g->n_nodes;
    for (int i = 0; i < g->n_inputs; i++) {
        s_plan_tensor (ZI_PLAN_PUSH (plan->model.inputs, plan->model.n_inputs),
                       &g->values[g->inputs[i]]);
    }
    for (int i = 0; i < g->n_outputs; i++) {
        s_plan_tensor (ZI_PLAN_PUSH (plan->model.outputs, plan->model.n_outputs),
                       &g->values[g->outputs[i]]);
    }
    cr_assert_not_null (zi_plan_add_host (plan, "local", "127.0.0.1"));
    plan->broker.host = strdup ("local");
    cr_assert_eq (zi_plan_set_endpoints_ipc (plan, s_dir), 0);
    plan->broker.heartbeat_interval_ms = o->interval_ms ? o->interval_ms : 1000;
    plan->broker.heartbeat_liveness = o->liveness ? o->liveness : 10;
    const int range[2][2] = {{0, o->cut}, {o->cut + 1, g->n_nodes - 1}};
    for (int s = 0; s < 2; s++) {
        zi_plan_segment_t *seg = ZI_PLAN_PUSH (plan->segments, plan->n_segments);
        seg->index = s;
        seg->first_node = range[s][0];
        seg->last_node = range[s][1];
        zi_exec_t *ex = zi_exec_new (g, range[s][0], range[s][1], NULL, err, sizeof err);
        cr_assert_not_null (ex, "%s", err);
        for (int i = 0; i < zi_exec_n_inputs (ex); i++) {
            *(char **) ZI_PLAN_PUSH (seg->inputs, seg->n_inputs) =
                strdup (zi_exec_input (ex, i)->name);
        }
        for (int i = 0; i < zi_exec_n_outputs (ex); i++) {
            *(char **) ZI_PLAN_PUSH (seg->outputs, seg->n_outputs) =
                strdup (zi_exec_output (ex, i)->name);
        }
        zi_exec_destroy (&ex);
        char name[16];
        snprintf (name, sizeof name, "s%dr0", s);
        zi_plan_replica_t *r = zi_plan_add_replica (&seg->replicas, &seg->n_replicas, name,
                                                    "local", s == 0 ? 1.5 : 1.0);
        cr_assert_not_null (r);
        r->credit = s == 0 ? 2 : 1;
    }
    const zi_plan_stage_kind_t kinds[] = {ZI_PLAN_STAGE_PREPROCESS, ZI_PLAN_STAGE_PARTITION,
                                          ZI_PLAN_STAGE_AGGREGATE};
    const char *names[] = {"pre0", "part0", "agg0"};
    for (int i = 0; i < 3; i++) {
        zi_plan_stage_t *stage = ZI_PLAN_PUSH (plan->stages, plan->n_stages);
        stage->kind = kinds[i];
        zi_plan_add_replica (&stage->replicas, &stage->n_replicas, names[i], "local", 1.0);
    }
    plan->stages[1].micro_batch = 4;
    plan->stages[1].max_batch = 4;
    zi_graph_destroy (&g);
    if (path_out) {
        snprintf (path_out, path_len, "%s/plan.json", s_dir);
        cr_assert_eq (zi_plan_write (plan, path_out, err, sizeof err), 0, "%s", err);
    }
    return plan;
}

//  Start zinfer-exec with these arguments; stderr and stdout go to
//  <dir>/<log>. The child is recorded before anything can fail, so that
//  s_teardown (the fini hook, which also runs after a failed assertion)
//  kills and reaps it; and it gets SIGKILL when this process dies, so that
//  not even a test killed by a timeout or a crash leaves a worker running.
static pid_t
s_spawn (const char *log, const char *const *args)
{
    char log_path[256];
    snprintf (log_path, sizeof log_path, "%s/%s", s_dir, log);
    char *argv[16] = {(char *) EXEC_BINARY};
    int argc = 1;
    for (; args[argc - 1] && argc < 15; argc++) {
        argv[argc] = (char *) args[argc - 1];
    }
    argv[argc] = NULL;
    int slot = 0;
    while (slot < s_n_children && s_children[slot] > 0) {
        slot++;
    }
    cr_assert_lt (slot, 8, "too many children");
    pid_t pid = zt_fork_exec (log_path, false, argv);
    s_children[slot] = pid;
    if (slot == s_n_children) {
        s_n_children++;
    }
    return pid;
}

static pid_t
s_spawn_worker (const char *plan_path, const char *name, const char *level)
{
    char log[64];
    snprintf (log, sizeof log, "%s.log", name);
    const char *args[] = {"--plan", plan_path, "--name", name, "--log-level", level, NULL};
    return s_spawn (log, args);
}

//  Wait for a child to exit, up to timeout_ms. Returns its wait status, or
//  -1 on timeout (the child is then left for the fini hook).
static int
s_wait_exit (pid_t pid, int timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (zclock_mono () < deadline) {
        int status = 0;
        pid_t got = waitpid (pid, &status, WNOHANG);
        if (got == pid) {
            for (int i = 0; i < s_n_children; i++) {
                if (s_children[i] == pid) {
                    s_children[i] = 0;
                }
            }
            return status;
        }
        zclock_sleep (5);
    }
    return -1;
}

//  Wait until the child's log holds `needle`; returns the log (to free).
static char *
s_wait_log (const char *name, const char *needle, int timeout_ms)
{
    char path[256];
    snprintf (path, sizeof path, "%s/%s.log", s_dir, name);
    int64_t deadline = zclock_mono () + timeout_ms;
    for (;;) {
        char *text = s_read_text (path);
        if (strstr (text, needle)) {
            return text;
        }
        if (zclock_mono () >= deadline) {
            cr_assert_fail ("no '%s' in %s within %d ms; it holds:\n%s", needle, path,
                            timeout_ms, text);
        }
        free (text);
        zclock_sleep (10);
    }
}

static zsock_t *
s_fake_broker (const zi_plan_t *plan)
{
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    cr_assert_not_null (router);
    //  A worker that starts over with a new socket keeps its routing id:
    //  the new connection must take the name over from the old one.
    zsock_set_router_handover (router, 1);
    zsock_set_linger (router, 0);
    cr_assert_eq (zsock_bind (router, "%s", plan->broker.endpoints[ZI_PLAN_EP_WORK].bind),
                  0);
    return router;
}

//  The next message from worker `from` (any worker if NULL), skipping
//  HEARTBEATs unless keep_heartbeats; NULL after timeout_ms. Other
//  workers' messages are stashed, not lost.
static zi_msg_t *
s_next (zsock_t *router, const char *from, int timeout_ms, bool keep_heartbeats)
{
    for (int i = 0; i < s_n_stash; i++) {
        if (!from || strcmp (s_stash[i].from, from) == 0) {
            zi_msg_t *msg = s_stash[i].msg;
            free (s_stash[i].from);
            s_stash[i] = s_stash[--s_n_stash];
            return msg;
        }
    }
    int64_t deadline = zclock_mono () + timeout_ms;
    for (int64_t now = zclock_mono (); now < deadline; now = zclock_mono ()) {
        zsock_set_rcvtimeo (router, (int) (deadline - now));
        zmsg_t *env = NULL;
        zi_msg_t *msg = NULL;
        char err[256];
        int rc = zi_msg_recv_from (router, &env, &msg, err, sizeof err);
        if (rc == ZI_ERR_IO) {
            zmsg_destroy (&env);
            continue;
        }
        cr_assert_eq (rc, 0, "a worker sent a bad message: %s", err);
        char *id = zframe_strdup (zmsg_first (env));
        zmsg_destroy (&env);
        bool heartbeat = zi_msg_cmd (msg) == ZI_CMD_HEARTBEAT;
        if ((!from || strcmp (id, from) == 0) && (keep_heartbeats || !heartbeat)) {
            free (id);
            return msg;
        }
        if (!heartbeat && s_n_stash < 16) {
            s_stash[s_n_stash].from = id;
            s_stash[s_n_stash++].msg = msg;
        }
        else {
            free (id);
            zi_msg_destroy (&msg);
        }
    }
    return NULL;
}

static zi_msg_t *
s_expect (zsock_t *router, const char *from, zi_cmd_t cmd, int timeout_ms)
{
    zi_msg_t *msg = s_next (router, from, timeout_ms, false);
    cr_assert_not_null (msg, "no %s from %s within %d ms", zi_cmd_name (cmd),
                        from ? from : "any worker", timeout_ms);
    if (zi_msg_cmd (msg) != cmd) {
        char buf[256];
        cr_assert_fail ("expected %s from %s, got %s (%s)", zi_cmd_name (cmd),
                        from ? from : "any worker", zi_msg_summary (msg, buf, sizeof buf),
                        zi_msg_reason (msg) ? zi_msg_reason (msg) : "");
    }
    return msg;
}

static void
s_send_to (zsock_t *router, const char *to, zi_msg_t **msg_p)
{
    zmsg_t *env = zmsg_new ();
    zmsg_addstr (env, to);
    cr_assert_eq (zi_msg_send_to (msg_p, router, env), 0);
    zmsg_destroy (&env);
}

static zi_msg_t *
s_task (uint64_t id, uint32_t seg)
{
    zi_msg_t *task = zi_msg_new (ZI_CMD_TASK);
    zi_msg_set_id (task, id);
    zi_msg_set_seg (task, seg);
    zi_msg_add_req (task, 100 + id, 0, 4);
    return task;
}

//  Run nodes [first, last] of g in this process on named inputs; the
//  outputs come back in executor order with their names.
static int
s_run_here (const zi_graph_t *g, int first, int last, int n, const char *const *names,
            const zi_tensor_t *const *ins, zi_tensor_t **outs, const char **out_names)
{
    char err[1024];
    zi_exec_t *ex = zi_exec_new (g, first, last, NULL, err, sizeof err);
    cr_assert_not_null (ex, "%s", err);
    int rc = zi_exec_run_named (ex, n, names, ins, outs, err, sizeof err);
    cr_assert_eq (rc, 0, "%s", err);
    int n_out = zi_exec_n_outputs (ex);
    for (int i = 0; i < n_out; i++) {
        out_names[i] = zi_exec_output (ex, i)->name;
    }
    zi_exec_destroy (&ex);
    return n_out;
}

static void
s_assert_bits_equal (const zi_tensor_t *a, const zi_tensor_t *b, const char *what)
{
    cr_assert (zi_tensor_same_shape (a, b), "%s: dtype or shape differ", what);
    cr_assert_eq (memcmp (a->data, b->data, a->nbytes), 0, "%s: not bit for bit equal",
                  what);
}

static long
s_vm_rss_kb (pid_t pid)
{
    char path[64];
    snprintf (path, sizeof path, "/proc/%d/status", (int) pid);
    char *text = s_read_text (path);
    const char *line = strstr (text, "VmRSS:");
    long kb = line ? strtol (line + 6, NULL, 10) : -1;
    free (text);
    return kb;
}

//  ---------------------------------------------------------------------
//  In process: the parts

Test (worker, sha256_of_known_strings)
{
    const struct {
        const char *text;
        const char *hex;
    } cases[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char path[256], hex[65], err[256];
    snprintf (path, sizeof path, "%s/data", s_dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *file = fopen (path, "wb");
        fputs (cases[i].text, file);
        fclose (file);
        cr_assert_eq (zi_worker_file_sha256 (path, hex, err, sizeof err), 0, "%s", err);
        cr_assert_str_eq (hex, cases[i].hex, "sha256 of '%s'", cases[i].text);
    }
    //  A million 'a's crosses every block boundary case.
    FILE *file = fopen (path, "wb");
    for (int i = 0; i < 1000000; i++) {
        fputc ('a', file);
    }
    fclose (file);
    cr_assert_eq (zi_worker_file_sha256 (path, hex, err, sizeof err), 0);
    cr_assert_str_eq (hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    snprintf (path, sizeof path, "%s/absent", s_dir);
    cr_assert_eq (zi_worker_file_sha256 (path, hex, err, sizeof err), ZI_ERR_IO);
    cr_assert (strstr (err, "absent"), "%s", err);
}

Test (worker, drop_weights_keeps_what_the_range_reads)
{
    zi_graph_t *g = s_load_model (MLP);
    size_t kept = 0, total = 0;
    cr_assert_eq (zi_worker_drop_weights (g, 6, 6, &kept, &total), 0);
    //  mlp: 784-1024-1024-1024-10; the last Gemm holds 1024x10 + 10 floats.
    cr_assert_eq (kept, (1024 * 10 + 10) * 4);
    cr_assert_gt (total, 11000000);
    size_t left = 0;
    for (int v = 0; v < g->n_values; v++) {
        left += g->values[v].init ? g->values[v].init->nbytes : 0;
    }
    cr_assert_eq (left, kept);
    cr_assert_eq (zi_worker_drop_weights (g, 3, 2, NULL, NULL), ZI_ERR_INVALID);
    cr_assert_eq (zi_worker_drop_weights (g, 0, 7, NULL, NULL), ZI_ERR_INVALID);
    zi_graph_destroy (&g);
}

Test (worker, replicas_are_found_by_name)
{
    s_plan_opts_t o = {SMALL_MLP, 1, 0, 0, NULL};
    zi_plan_t *plan = s_make_plan (&o, NULL, 0);
    char err[512];
    const zi_plan_segment_t *seg = NULL;
    const zi_plan_replica_t *r = zi_worker_find_replica (plan, "s1r0", &seg, err, sizeof err);
    cr_assert_not_null (r);
    cr_assert_eq (seg, &plan->segments[1]);
    cr_assert_null (zi_worker_find_replica (plan, "nosuch", NULL, err, sizeof err));
    cr_assert (strstr (err, "no replica called 'nosuch'") && strstr (err, "s0r0, s1r0"),
               "%s", err);
    cr_assert_null (zi_worker_find_replica (plan, "agg0", NULL, err, sizeof err));
    cr_assert (strstr (err, "aggregate stage"), "%s", err);
    zi_plan_destroy (&plan);
}

Test (worker, start_up_refuses_a_plan_that_does_not_fit_the_model)
{
    char err[1024];
    s_plan_opts_t o = {SMALL_MLP, 1, 0, 0,
                       "0000000000000000000000000000000000000000000000000000000000000000"};
    zi_plan_t *plan = s_make_plan (&o, NULL, 0);
    cr_assert_null (zi_worker_new (plan, "s0r0", err, sizeof err));
    cr_assert (strstr (err, "sha256") && strstr (err, "not the model"), "%s", err);

    //  The right digest passes.
    char hex[65];
    cr_assert_eq (zi_worker_file_sha256 (plan->model.path, hex, err, sizeof err), 0);
    free (plan->model.sha256);
    plan->model.sha256 = strdup (hex);
    zi_worker_t *worker = zi_worker_new (plan, "s0r0", err, sizeof err);
    cr_assert_not_null (worker, "%s", err);
    zi_worker_destroy (&worker);
    cr_assert_null (worker);

    plan->model.node_count = 4;
    cr_assert_null (zi_worker_new (plan, "s0r0", err, sizeof err));
    cr_assert (strstr (err, "3 nodes") && strstr (err, "node_count"), "%s", err);
    plan->model.node_count = 3;

    //  A plan whose segment names a tensor the nodes do not send on.
    char *keep = plan->segments[0].outputs[0];
    plan->segments[0].outputs[0] = strdup ("bogus");
    cr_assert_null (zi_worker_new (plan, "s0r0", err, sizeof err));
    cr_assert (strstr (err, "'bogus' is not one") && strstr (err, keep), "%s", err);
    free (plan->segments[0].outputs[0]);
    plan->segments[0].outputs[0] = keep;

    //  ... or leaves out one they read.
    char *in = plan->segments[1].inputs[0];
    plan->segments[1].n_inputs = 0;
    cr_assert_null (zi_worker_new (plan, "s1r0", err, sizeof err));
    cr_assert (strstr (err, in) && strstr (err, "missing from the plan"), "%s", err);
    plan->segments[1].n_inputs = 1;
    zi_plan_destroy (&plan);
}

//  The answer to one task, in process.
static zi_msg_t *
s_process (zi_worker_t *worker, zi_msg_t *task)
{
    zi_msg_t *answer = zi_worker_process (worker, &task);
    cr_assert_null (task);
    cr_assert_not_null (answer);
    return answer;
}

static void
s_assert_bad_request (zi_msg_t **answer_p, uint64_t id, const char *a, const char *b)
{
    zi_msg_t *answer = *answer_p;
    cr_assert_eq (zi_msg_cmd (answer), ZI_CMD_ERROR);
    cr_assert_eq (zi_msg_code (answer), ZI_CODE_BAD_REQUEST);
    cr_assert_eq (zi_msg_id (answer), id);
    const char *reason = zi_msg_reason (answer);
    cr_assert (strstr (reason, a) && (!b || strstr (reason, b)), "reason: %s", reason);
    zi_msg_destroy (answer_p);
}

Test (worker, process_checks_tasks_then_runs_them)
{
    //  Segment 1 of small_mlp cut after the first Gemm: it takes the cut
    //  tensor, whose type the model does not declare (it is inferred).
    s_plan_opts_t o = {SMALL_MLP, 0, 0, 0, NULL};
    zi_plan_t *plan = s_make_plan (&o, NULL, 0);
    char err[1024];
    zi_worker_t *worker = zi_worker_new (plan, "s1r0", err, sizeof err);
    cr_assert_not_null (worker, "%s", err);
    const char *cut = plan->segments[1].inputs[0];

    zi_msg_t *task = s_task (1, 1);
    zi_tensor_t *h = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]) {4, 32});
    cr_assert_eq (zi_msg_add_tensor (task, cut, &h), 0);
    zi_msg_t *answer = s_process (worker, task);
    cr_assert_eq (zi_msg_cmd (answer), ZI_CMD_RESULT, "%s", zi_msg_reason (answer));
    cr_assert_eq (zi_msg_id (answer), 1);
    cr_assert_eq (zi_msg_seg (answer), 1);
    cr_assert_eq (zi_msg_tensor_count (answer), 1);
    cr_assert_str_eq (zi_msg_tensor_name (answer, 0), "output");
    size_t nreqs = 0;
    cr_assert_eq (zi_msg_reqs (answer, &nreqs)[0].id, 101, "reqs are echoed");
    zi_msg_destroy (&answer);

    //  A wrong shape (the batch dimension may vary, the other may not).
    task = s_task (2, 1);
    h = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]) {4, 31});
    zi_msg_add_tensor (task, cut, &h);
    answer = s_process (worker, task);
    s_assert_bad_request (&answer, 2, cut, "shape [4,31], segment 1 expects [?,32]");

    //  A wrong dtype.
    task = s_task (3, 1);
    h = zi_tensor_new (ZI_DT_F64, 2, (int64_t[]) {4, 32});
    zi_msg_add_tensor (task, cut, &h);
    answer = s_process (worker, task);
    s_assert_bad_request (&answer, 3, cut, "dtype float64, segment 1 expects float32");

    //  A wrong name: the extra tensor is named, then the missing one.
    task = s_task (4, 1);
    h = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]) {4, 32});
    zi_msg_add_tensor (task, "nope", &h);
    answer = s_process (worker, task);
    s_assert_bad_request (&answer, 4, "tensor 'nope' is not an input of segment 1", cut);
    task = s_task (5, 1);
    answer = s_process (worker, task);
    s_assert_bad_request (&answer, 5, "is missing", cut);

    //  Another segment's task, and a task without id.
    task = s_task (6, 0);
    answer = s_process (worker, task);
    s_assert_bad_request (&answer, 6, "TASK for segment 0", "serves segment 1");
    task = zi_msg_new (ZI_CMD_TASK);
    answer = s_process (worker, task);
    cr_assert_eq (zi_msg_code (answer), ZI_CODE_BAD_REQUEST);
    cr_assert_not (zi_msg_has (answer, "id"));
    zi_msg_destroy (&answer);

    //  Still serving.
    task = s_task (7, 1);
    h = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]) {1, 32});
    zi_msg_add_tensor (task, cut, &h);
    answer = s_process (worker, task);
    cr_assert_eq (zi_msg_cmd (answer), ZI_CMD_RESULT);
    zi_msg_destroy (&answer);

    //  An output larger than a frame may be (64 x 10 floats > 1 KiB) is an
    //  error, not a RESULT that would make libzmq drop the connection.
    plan->broker.max_message_bytes = 1024;
    task = s_task (8, 1);
    h = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]) {64, 32});
    zi_msg_add_tensor (task, cut, &h);
    answer = s_process (worker, task);
    cr_assert_eq (zi_msg_code (answer), ZI_CODE_TOO_LARGE);
    cr_assert (strstr (zi_msg_reason (answer), "'output' is 2560 bytes"), "%s",
               zi_msg_reason (answer));
    zi_msg_destroy (&answer);
    zi_worker_destroy (&worker);
    zi_plan_destroy (&plan);
}

//  For every cut of every model in the repo, the segment-1 worker accepts
//  the tensors segment 0 really produces (the types it inferred for them
//  are right, batch dimension free) and its result is the whole model's,
//  bit for bit, for both saved batch sizes.
Test (worker, every_cut_accepts_what_the_segment_before_sends)
{
    const char *models[] = {SMALL_MLP, "examples/fashion-mnist", "tests/models/resnet_tiny",
                            "tests/models/transformer_block"};
    char err[1024];
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        zi_graph_t *g = s_load_model (models[m]);
        zi_tensor_t *x[2], *want[2];
        const char *in_names[] = {g->values[g->inputs[0]].name};
        const char *out_name = g->values[g->outputs[0]].name;
        //  The saved batch, and its first row alone.
        x[0] = s_load_pb (models[m], "input_0.pb");
        zi_tensor_t row;
        cr_assert_eq (zi_tensor_slice_rows (x[0], 0, 1, &row), 0);
        x[1] = zi_tensor_dup (&row);
        cr_assert_neq (x[0]->ne[0], x[1]->ne[0]);
        for (int set = 0; set < 2; set++) {
            const zi_tensor_t *ins[] = {x[set]};
            const char *names[8];
            zi_tensor_t *outs[8];
            cr_assert_eq (s_run_here (g, 0, -1, 1, in_names, ins, outs, names), 1);
            want[set] = outs[0];
        }
        //  The cuts zinfer plan may make: every crossing tensor carries the
        //  batch. A cut that would pass a tensor without it (the
        //  transformer's Shape -> Gather -> Concat results) is refused by
        //  the worker at start-up, naming the tensor.
        int *bad = (int *) calloc ((size_t) g->n_nodes, sizeof (int));
        cr_assert_not_null (bad);
        cr_assert_geq (zi_planner_safe_cuts (g, (const zi_tensor_t *const *) x, bad, err,
                                             sizeof err), 0, "%s", err);
        for (int cut = 0; cut + 1 < g->n_nodes; cut++) {
            s_plan_opts_t o = {models[m], cut, 0, 0, NULL};
            zi_plan_t *plan = s_make_plan (&o, NULL, 0);
            zi_worker_t *worker = zi_worker_new (plan, "s1r0", err, sizeof err);
            if (bad[cut] >= 0) {
                cr_assert_null (worker, "%s cut %d: '%s' crosses without a batch axis",
                                models[m], cut, g->values[bad[cut]].name);
                cr_assert (strstr (err, "has no batch axis"), "%s", err);
                zi_plan_destroy (&plan);
                continue;
            }
            cr_assert_not_null (worker, "%s cut %d: %s", models[m], cut, err);
            for (int set = 0; set < 2; set++) {
                const zi_tensor_t *ins[] = {x[set]};
                const char *names[64];
                zi_tensor_t *outs[64];
                int n = s_run_here (g, 0, cut, 1, in_names, ins, outs, names);
                zi_msg_t *task = s_task ((uint64_t) cut, 1);
                for (size_t k = 0; k < plan->segments[1].n_inputs; k++) {
                    const char *name = plan->segments[1].inputs[k];
                    const zi_tensor_t *t = strcmp (name, in_names[0]) == 0 ? x[set] : NULL;
                    for (int i = 0; i < n && !t; i++) {
                        t = strcmp (names[i], name) == 0 ? outs[i] : NULL;
                    }
                    cr_assert_not_null (t, "%s cut %d: nothing for '%s'", models[m], cut,
                                        name);
                    cr_assert_eq (zi_msg_add_tensor_copy (task, name, t), 0);
                }
                for (int i = 0; i < n; i++) {
                    zi_tensor_destroy (&outs[i]);
                }
                zi_msg_t *answer = s_process (worker, task);
                cr_assert_eq (zi_msg_cmd (answer), ZI_CMD_RESULT, "%s cut %d set %d: %s",
                              models[m], cut, set, zi_msg_reason (answer));
                const zi_tensor_t *y = zi_msg_tensor_find (answer, out_name);
                cr_assert_not_null (y);
                s_assert_bits_equal (y, want[set], models[m]);
                zi_msg_destroy (&answer);
            }
            zi_worker_destroy (&worker);
            zi_plan_destroy (&plan);
        }
        free (bad);
        for (int set = 0; set < 2; set++) {
            zi_tensor_destroy (&x[set]);
            zi_tensor_destroy (&want[set]);
        }
        zi_graph_destroy (&g);
    }
}

//  ---------------------------------------------------------------------
//  The real binary against a fake broker

Test (worker, results_equal_the_engine_bit_for_bit)
{
    char plan_path[256];
    s_plan_opts_t o = {SMALL_MLP, 1, 0, 0, NULL};
    zi_plan_t *plan = s_make_plan (&o, plan_path, sizeof plan_path);
    zsock_t *router = s_fake_broker (plan);
    s_spawn_worker (plan_path, "s0r0", "info");
    s_spawn_worker (plan_path, "s1r0", "info");

    //  READY from each, with the plan's values.
    for (int s = 0; s < 2; s++) {
        const char *name = s ? "s1r0" : "s0r0";
        zi_msg_t *ready = s_expect (router, name, ZI_CMD_READY, 20000);
        cr_assert_eq (zi_msg_seg (ready), (uint32_t) s);
        cr_assert_eq (zi_msg_capacity (ready), s ? 1.0 : 1.5);
        cr_assert_eq (zi_msg_credit (ready), s ? 1u : 2u);
        cr_assert_str_eq (zi_msg_name (ready), name);
        zi_msg_destroy (&ready);
    }

    //  Segment 0 on the saved input, against the engine in this process.
    zi_graph_t *g = s_load_model (SMALL_MLP);
    zi_tensor_t *x = s_load_pb (SMALL_MLP, "input_0.pb");
    zi_msg_t *task = s_task (11, 0);
    zi_msg_add_tensor_copy (task, "input", x);
    s_send_to (router, "s0r0", &task);
    zi_msg_t *r0 = s_expect (router, "s0r0", ZI_CMD_RESULT, 5000);
    cr_assert_eq (zi_msg_id (r0), 11);
    cr_assert_eq (zi_msg_seg (r0), 0);
    const char *in_names[] = {"input"};
    const zi_tensor_t *ins[] = {x};
    zi_tensor_t *here[8];
    const char *here_names[8];
    int n = s_run_here (g, 0, 1, 1, in_names, ins, here, here_names);
    cr_assert_eq (zi_msg_tensor_count (r0), (size_t) n);
    for (int i = 0; i < n; i++) {
        cr_assert_str_eq (zi_msg_tensor_name (r0, (size_t) i), plan->segments[0].outputs[i],
                          "outputs come in the plan's order");
        const zi_tensor_t *t = zi_msg_tensor_find (r0, here_names[i]);
        cr_assert_not_null (t, "RESULT lacks '%s'", here_names[i]);
        s_assert_bits_equal (t, here[i], here_names[i]);
        zi_tensor_destroy (&here[i]);
    }

    //  Chained into segment 1: the whole model, bit for bit, and torch's
    //  saved output within 1e-4. The cut tensors travel as received.
    task = s_task (12, 1);
    cr_assert_eq (zi_msg_move_tensors (task, r0), 0);
    zi_msg_destroy (&r0);
    s_send_to (router, "s1r0", &task);
    zi_msg_t *r1 = s_expect (router, "s1r0", ZI_CMD_RESULT, 5000);
    cr_assert_eq (zi_msg_id (r1), 12);
    cr_assert_eq (zi_msg_seg (r1), 1);
    n = s_run_here (g, 0, -1, 1, in_names, ins, here, here_names);
    cr_assert_eq (n, 1);
    const zi_tensor_t *y = zi_msg_tensor_find (r1, "output");
    cr_assert_not_null (y);
    s_assert_bits_equal (y, here[0], "output (whole model)");
    zi_tensor_t *ref = s_load_pb (SMALL_MLP, "output_0.pb");
    cr_assert (zi_tensor_same_shape (y, ref));
    for (int64_t i = 0; i < zi_tensor_count (ref); i++) {
        float a = ((const float *) y->data)[i], b = ((const float *) ref->data)[i];
        cr_assert_leq (fabsf (a - b), 1e-4f, "output[%ld]: %g vs torch %g", (long) i, a, b);
    }
    zi_tensor_destroy (&ref);
    zi_tensor_destroy (&here[0]);
    zi_msg_destroy (&r1);
    zi_tensor_destroy (&x);
    zi_graph_destroy (&g);
    zsock_destroy (&router);
    zi_plan_destroy (&plan);
}

Test (worker, bad_tasks_get_bad_request_and_the_worker_goes_on)
{
    char plan_path[256];
    s_plan_opts_t o = {SMALL_MLP, 1, 0, 0, NULL};
    zi_plan_t *plan = s_make_plan (&o, plan_path, sizeof plan_path);
    zsock_t *router = s_fake_broker (plan);
    s_spawn_worker (plan_path, "s0r0", "info");
    zi_msg_t *msg = s_expect (router, "s0r0", ZI_CMD_READY, 20000);
    zi_msg_destroy (&msg);

    const struct {
        const char *name;
        zi_dtype_t dtype;
        int64_t shape[2];
        const char *a, *b;      //  what the reason must say
    } bad[] = {
        {"inputx", ZI_DT_F32, {4, 16}, "'inputx' is not an input of segment 0", "'input'"},
        {"input", ZI_DT_F32, {4, 17}, "'input'", "shape [4,17], segment 0 expects [?,16]"},
        {"input", ZI_DT_I32, {4, 16}, "'input'", "dtype int32, segment 0 expects float32"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        zi_msg_t *task = s_task (20 + i, 0);
        zi_tensor_t *t = zi_tensor_new (bad[i].dtype, 2, bad[i].shape);
        zi_msg_add_tensor (task, bad[i].name, &t);
        s_send_to (router, "s0r0", &task);
        msg = s_expect (router, "s0r0", ZI_CMD_ERROR, 5000);
        s_assert_bad_request (&msg, 20 + i, bad[i].a, bad[i].b);
    }
    //  The worker is still there and answers a good task.
    zi_msg_t *task = s_task (30, 0);
    zi_tensor_t *t = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]) {3, 16});
    zi_msg_add_tensor (task, "input", &t);
    s_send_to (router, "s0r0", &task);
    msg = s_expect (router, "s0r0", ZI_CMD_RESULT, 5000);
    cr_assert_eq (zi_msg_id (msg), 30);
    zi_msg_destroy (&msg);
    zsock_destroy (&router);
    zi_plan_destroy (&plan);
}

Test (worker, heartbeats_when_idle_and_ready_again_after_disconnect)
{
    char plan_path[256];
    s_plan_opts_t o = {SMALL_MLP, 1, 100, 50, NULL};
    zi_plan_t *plan = s_make_plan (&o, plan_path, sizeof plan_path);
    zsock_t *router = s_fake_broker (plan);
    s_spawn_worker (plan_path, "s1r0", "info");
    zi_msg_t *msg = s_expect (router, "s1r0", ZI_CMD_READY, 20000);
    zi_msg_destroy (&msg);
    //  Idle: a HEARTBEAT every interval (100 ms), no flood.
    int64_t start = zclock_mono ();
    int beats = 0;
    while (zclock_mono () - start < 1000) {
        msg = s_next (router, "s1r0", (int) (1000 - (zclock_mono () - start)) + 1, true);
        if (msg) {
            cr_assert_eq (zi_msg_cmd (msg), ZI_CMD_HEARTBEAT);
            beats++;
            zi_msg_destroy (&msg);
        }
    }
    cr_assert (beats >= 5 && beats <= 12, "%d heartbeats in 1 s at 100 ms", beats);

    //  The broker forgot us: READY again.
    msg = zi_msg_new (ZI_CMD_DISCONNECT);
    zi_msg_set_reason (msg, "unknown worker");
    s_send_to (router, "s1r0", &msg);
    msg = s_expect (router, "s1r0", ZI_CMD_READY, 2000);
    cr_assert_eq (zi_msg_seg (msg), 1);
    zi_msg_destroy (&msg);
    zsock_destroy (&router);
    zi_plan_destroy (&plan);
}

Test (worker, a_silent_broker_gets_ready_again_with_backoff)
{
    char plan_path[256];
    s_plan_opts_t o = {SMALL_MLP, 1, 100, 3, NULL};
    zi_plan_t *plan = s_make_plan (&o, plan_path, sizeof plan_path);
    zsock_t *router = s_fake_broker (plan);
    s_spawn_worker (plan_path, "s0r0", "info");
    zi_msg_t *msg = s_expect (router, "s0r0", ZI_CMD_READY, 20000);
    zi_msg_destroy (&msg);
    //  Say nothing: after liveness x interval = 300 ms the worker starts
    //  over and says READY again; each further attempt waits longer
    //  (+100, +200 ms).
    int64_t t[4] = {zclock_mono ()};
    for (int i = 1; i < 4; i++) {
        msg = s_expect (router, "s0r0", ZI_CMD_READY, 3000);
        t[i] = zclock_mono ();
        zi_msg_destroy (&msg);
    }
    int64_t gap1 = t[1] - t[0], gap2 = t[2] - t[1], gap3 = t[3] - t[2];
    cr_log_info ("READY again after %ld, %ld, %ld ms of silence", (long) gap1, (long) gap2,
                 (long) gap3);
    cr_assert (gap1 >= 250 && gap1 < 1500, "first READY again after %ld ms", (long) gap1);
    cr_assert (gap2 >= 350 && gap3 >= 450 && gap3 > gap1,
               "backoff: gaps %ld, %ld, %ld ms", (long) gap1, (long) gap2, (long) gap3);
    char *log = s_wait_log ("s0r0", "EXEC-BROKER-LOST", 1000);
    free (log);

    //  Talking again resets the backoff, and the worker serves.
    msg = zi_msg_new (ZI_CMD_HEARTBEAT);
    s_send_to (router, "s0r0", &msg);
    zi_msg_t *task = s_task (40, 0);
    zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]) {2, 16});
    zi_msg_add_tensor (task, "input", &x);
    s_send_to (router, "s0r0", &task);
    msg = s_expect (router, "s0r0", ZI_CMD_RESULT, 3000);
    cr_assert_eq (zi_msg_id (msg), 40);
    zi_msg_destroy (&msg);
    int64_t t4 = zclock_mono ();
    msg = s_expect (router, "s0r0", ZI_CMD_READY, 3000);
    int64_t gap4 = zclock_mono () - t4;
    //  300 ms again; without the reset it would be 300 + 400.
    cr_assert (gap4 >= 250 && gap4 < 600, "after a good exchange: %ld ms", (long) gap4);
    zi_msg_destroy (&msg);
    zsock_destroy (&router);
    zi_plan_destroy (&plan);
}

Test (worker, sigterm_finishes_the_task_then_disconnects)
{
    //  mlp segment 0 (three 1024-wide Gemms) on a batch of 2048 takes a
    //  few hundred ms: long enough to signal the worker in mid-task.
    char plan_path[256];
    s_plan_opts_t o = {MLP, 5, 0, 0, NULL};
    zi_plan_t *plan = s_make_plan (&o, plan_path, sizeof plan_path);
    zsock_t *router = s_fake_broker (plan);
    pid_t pid = s_spawn_worker (plan_path, "s0r0", "debug");
    zi_msg_t *msg = s_expect (router, "s0r0", ZI_CMD_READY, 20000);
    zi_msg_destroy (&msg);
    zi_msg_t *task = s_task (50, 0);
    zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]) {2048, 784});
    for (int64_t i = 0; i < 2048 * 784; i++) {
        ((float *) x->data)[i] = (float) (i % 13) * 0.01f;
    }
    zi_msg_add_tensor (task, "input", &x);
    s_send_to (router, "s0r0", &task);
    char *log = s_wait_log ("s0r0", "EXEC-TASK-START: task 50", 5000);
    free (log);
    int64_t t0 = zclock_mono ();
    cr_assert_eq (kill (pid, SIGTERM), 0);
    msg = s_expect (router, "s0r0", ZI_CMD_RESULT, 2000);
    cr_assert_eq (zi_msg_id (msg), 50, "the task in hand is finished");
    zi_msg_destroy (&msg);
    msg = s_expect (router, "s0r0", ZI_CMD_DISCONNECT, 2000);
    cr_assert (zi_msg_reason (msg) && *zi_msg_reason (msg));
    zi_msg_destroy (&msg);
    //  The probe: answer it as a broker that forgot the worker does.
    msg = s_next (router, "s0r0", 1000, true);
    cr_assert (msg && zi_msg_cmd (msg) == ZI_CMD_HEARTBEAT);
    zi_msg_destroy (&msg);
    msg = zi_msg_new (ZI_CMD_DISCONNECT);
    s_send_to (router, "s0r0", &msg);
    int status = s_wait_exit (pid, 2000);
    int64_t took = zclock_mono () - t0;
    cr_assert_neq (status, -1, "still running 2 s after SIGTERM");
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "status %d", status);
    cr_assert_lt (took, 2000);
    cr_log_info ("exit %ld ms after SIGTERM (task in hand included)", (long) took);
    log = s_wait_log ("s0r0", "EXEC-STOPPED", 100);
    cr_assert_null (strstr (log, "EXEC-LEAVE-UNCONFIRMED"), "%s", log);
    free (log);
    zsock_destroy (&router);
    zi_plan_destroy (&plan);
}

Test (worker, sigterm_without_a_broker_answer_still_exits_in_time)
{
    char plan_path[256];
    s_plan_opts_t o = {SMALL_MLP, 1, 0, 0, NULL};
    zi_plan_t *plan = s_make_plan (&o, plan_path, sizeof plan_path);
    zsock_t *router = s_fake_broker (plan);
    pid_t pid = s_spawn_worker (plan_path, "s1r0", "info");
    zi_msg_t *msg = s_expect (router, "s1r0", ZI_CMD_READY, 20000);
    zi_msg_destroy (&msg);
    int64_t t0 = zclock_mono ();
    cr_assert_eq (kill (pid, SIGINT), 0);
    msg = s_expect (router, "s1r0", ZI_CMD_DISCONNECT, 2000);
    zi_msg_destroy (&msg);
    int status = s_wait_exit (pid, 2000);
    cr_assert_neq (status, -1, "still running 2 s after SIGINT");
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "status %d", status);
    cr_assert_lt (zclock_mono () - t0, 2000);
    char *log = s_wait_log ("s1r0", "EXEC-LEAVE-UNCONFIRMED", 100);
    free (log);
    zsock_destroy (&router);
    zi_plan_destroy (&plan);
}

Test (worker, bad_names_and_options_exit_2)
{
    char plan_path[256];
    s_plan_opts_t o = {SMALL_MLP, 1, 0, 0, NULL};
    zi_plan_t *plan = s_make_plan (&o, plan_path, sizeof plan_path);
    const struct {
        const char *args[8];
        const char *says;
    } cases[] = {
        {{"--plan", plan_path, "--name", "nosuch", NULL}, "no replica called 'nosuch'"},
        {{"--plan", plan_path, "--name", "pre0", NULL}, "preprocess stage"},
        {{"--plan", plan_path, NULL}, "--name is required"},
        {{"--plan", "/nonexistent/plan.json", "--name", "s0r0", NULL}, "/nonexistent/plan.json"},
        {{"--plan", plan_path, "--name", "s0r0", "--frobnicate", NULL}, "--frobnicate"},
        {{"--plan", plan_path, "--name", "s0r0", "--log-level", "loud", NULL}, "loud"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pid_t pid = s_spawn ("bad.log", cases[i].args);
        int status = s_wait_exit (pid, 10000);
        cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 2, "case %zu: status %d",
                   i, status);
        char path[256];
        snprintf (path, sizeof path, "%s/bad.log", s_dir);
        char *text = s_read_text (path);
        cr_assert (strstr (text, cases[i].says), "case %zu says: %s", i, text);
        free (text);
    }
    zi_plan_destroy (&plan);
}

Test (worker, a_worker_keeps_only_its_segments_weights)
{
    //  mlp (11.6 MB of weights) cut so that segment 1 is the last Gemm only.
    char plan_path[256];
    s_plan_opts_t o = {MLP, 5, 0, 0, NULL};
    zi_plan_t *plan = s_make_plan (&o, plan_path, sizeof plan_path);
    zsock_t *router = s_fake_broker (plan);
    pid_t p0 = s_spawn_worker (plan_path, "s0r0", "info");
    pid_t p1 = s_spawn_worker (plan_path, "s1r0", "info");
    zi_msg_t *msg = s_expect (router, "s1r0", ZI_CMD_READY, 20000);
    zi_msg_destroy (&msg);
    msg = s_expect (router, "s0r0", ZI_CMD_READY, 20000);
    zi_msg_destroy (&msg);
    char *log = s_wait_log ("s1r0", "EXEC-READY", 100);
    const char *at = strstr (strstr (log, "EXEC-READY"), "weights ");
    cr_assert_not_null (at, "%s", log);
    size_t kept = 0, total = 0;
    cr_assert_eq (sscanf (at, "weights %zu/%zu bytes", &kept, &total), 2, "%s", at);
    cr_assert_lt (kept, 1000000, "segment 1 keeps %zu bytes", kept);
    cr_assert_gt (total, 11000000);
    free (log);
    //  And it shows in memory: the segment-0 worker holds ~11.5 MB more.
    //  (Not under AddressSanitizer, whose allocator keeps freed memory in
    //  quarantine instead of giving it back.)
    long rss0 = s_vm_rss_kb (p0), rss1 = s_vm_rss_kb (p1);
    cr_assert (rss0 > 0 && rss1 > 0);
    cr_log_info ("VmRSS: segment 0 worker %ld kB, segment 1 worker %ld kB", rss0, rss1);
#ifndef __SANITIZE_ADDRESS__
    cr_assert_gt (rss0 - rss1, 8000, "VmRSS: segment 0 %ld kB, segment 1 %ld kB", rss0, rss1);
#endif
    zsock_destroy (&router);
    zi_plan_destroy (&plan);
}
