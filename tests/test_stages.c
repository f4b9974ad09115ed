/*  test_stages.c - the real zinfer-preprocess, zinfer-partition and
    zinfer-aggregate binaries against fake broker sockets bound here.

    Each test writes a plan (zi_plan API, ipc endpoints in a fresh temp
    directory), binds the broker's side of the links the stage uses, starts
    the stage from ZI_BINARY_DIR and talks to it: what goes in, what comes
    out, errors that name the problem while the stage keeps serving, and a
    SIGTERM that ends it with status 0 within 2 s. Waits are on events (a
    message, a child's exit) with timeouts, never fixed sleeps. Children are
    killed and reaped by the suite's fini hook (and an atexit hook), also
    when an assertion fails, and die with the test process (PDEATHSIG).
*/
// ctest-timeout: 180
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zi_msg.h"
#include "zi_plan.h"
#include "zi_stage.h"
#include "zt_spawn.h"

//  ---------------------------------------------------------------------
//  Children and the temp directory

#define S_MAX_CHILDREN 8

static pid_t s_children[S_MAX_CHILDREN];
static char s_dir[64];

static void
s_cleanup (void)
{
    for (int i = 0; i < S_MAX_CHILDREN; i++) {
        if (s_children[i] > 0) {
            kill (s_children[i], SIGKILL);
            waitpid (s_children[i], NULL, 0);
            s_children[i] = 0;
        }
    }
    if (*s_dir) {
        DIR *d = opendir (s_dir);
        struct dirent *entry;
        while (d && (entry = readdir (d))) {
            if (strcmp (entry->d_name, ".") && strcmp (entry->d_name, "..")) {
                char path[400];
                snprintf (path, sizeof path, "%s/%s", s_dir, entry->d_name);
                unlink (path);
            }
        }
        if (d) {
            closedir (d);
        }
        rmdir (s_dir);
        *s_dir = 0;
    }
}

static void
s_init (void)
{
    snprintf (s_dir, sizeof s_dir, "/tmp/zi-stages-XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    atexit (s_cleanup);
}

TestSuite (stages, .init = s_init, .fini = s_cleanup);

//  Start a stage binary as replica `name`; stderr goes to <dir>/<name>.log.
//  extra: one more argument or NULL.
static pid_t
s_spawn (const char *program, const char *plan, const char *name, const char *extra,
         const char *log_name)
{
    char bin[512], log[256];
    snprintf (bin, sizeof bin, "%s/%s", ZI_BINARY_DIR, program);
    snprintf (log, sizeof log, "%s/%s.log", s_dir, log_name);
    //  A slot first: a child is recorded (for s_cleanup, the fini hook) as
    //  soon as it exists, and PDEATHSIG covers a test process that dies.
    int slot = 0;
    while (slot < S_MAX_CHILDREN && s_children[slot] != 0) {
        slot++;
    }
    cr_assert_lt (slot, S_MAX_CHILDREN, "too many children");
    const char *argv[12];
    int n = 0;
    argv[n++] = bin;
    if (plan) {
        argv[n++] = "--plan";
        argv[n++] = plan;
    }
    if (name) {
        argv[n++] = "--name";
        argv[n++] = name;
    }
    argv[n++] = "--log-level";
    argv[n++] = "debug";
    if (extra) {
        argv[n++] = extra;
    }
    argv[n] = NULL;
    pid_t pid = zt_fork_exec (log, false, (char *const *) argv);
    s_children[slot] = pid;
    return pid;
}

static pid_t
s_start (const char *program, const char *plan, const char *name)
{
    return s_spawn (program, plan, name, NULL, name);
}

//  Wait up to timeout_ms for pid to exit; returns its status, or -1.
static int
s_wait_exit (pid_t pid, int timeout_ms, int64_t *elapsed_ms)
{
    int64_t start = zclock_mono ();
    while (zclock_mono () - start <= timeout_ms) {
        int status;
        pid_t done = waitpid (pid, &status, WNOHANG);
        if (done == pid) {
            for (int i = 0; i < S_MAX_CHILDREN; i++) {
                if (s_children[i] == pid) {
                    s_children[i] = 0;
                }
            }
            if (elapsed_ms) {
                *elapsed_ms = zclock_mono () - start;
            }
            return status;
        }
        //  a short nap between checks of an event we cannot poll on
        usleep (5000);
    }
    return -1;
}

//  SIGTERM: the stage must exit with status 0 within 2 s.
static void
s_stop (pid_t pid, const char *name)
{
    cr_assert_eq (kill (pid, SIGTERM), 0);
    int64_t elapsed = 0;
    int status = s_wait_exit (pid, 2000, &elapsed);
    cr_assert_neq (status, -1, "%s did not exit within 2 s of SIGTERM", name);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0,
               "%s: exit status %d (signal %d)", name,
               WIFEXITED (status) ? WEXITSTATUS (status) : -1,
               WIFSIGNALED (status) ? WTERMSIG (status) : 0);
}

//  The contents of <dir>/<name>.log (static buffer).
static const char *
s_log (const char *name)
{
    static char buf[65536];
    char path[256];
    snprintf (path, sizeof path, "%s/%s.log", s_dir, name);
    FILE *f = fopen (path, "r");
    size_t n = f ? fread (buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = 0;
    if (f) {
        fclose (f);
    }
    return buf;
}

//  ---------------------------------------------------------------------
//  The plan and the fake broker

typedef struct {
    int64_t micro_batch, max_batch, max_delay_us;
    bool argmax;                    //  aggregate: argmax on "y"
    int64_t heartbeat_ms;
} s_opts_t;

//  A one-segment plan: clients send "x" uint8 (?, 4), preprocess casts it
//  to float32 and scales it by 0.5 (the model input "x" float32 (?, 4)),
//  the model outputs "y" float32 (?, 4). Written to <dir>/plan.json.
static zi_plan_t *
s_plan (const s_opts_t *o, char *path, size_t len)
{
    zi_plan_t *plan = zi_plan_new ();
    cr_assert_not_null (plan);
    plan->name = strdup ("stages test");
    plan->model.path = strdup ("model.onnx");
    plan->model.node_count = 2;
    zi_plan_tensor_t *in = ZI_PLAN_PUSH (plan->model.inputs, plan->model.n_inputs);
    *in = (zi_plan_tensor_t) {strdup ("x"), ZI_DT_F32, 2, {-1, 4}};
    zi_plan_tensor_t *out = ZI_PLAN_PUSH (plan->model.outputs, plan->model.n_outputs);
    *out = (zi_plan_tensor_t) {strdup ("y"), ZI_DT_F32, 2, {-1, 4}};
    cr_assert_not_null (zi_plan_add_host (plan, "local", "127.0.0.1"));
    plan->broker.host = strdup ("local");
    plan->broker.heartbeat_interval_ms = o->heartbeat_ms ? o->heartbeat_ms : 1000;
    cr_assert_eq (zi_plan_set_endpoints_ipc (plan, s_dir), 0);
    zi_plan_segment_t *seg = ZI_PLAN_PUSH (plan->segments, plan->n_segments);
    seg->index = 0;
    seg->first_node = 0;
    seg->last_node = 1;
    *(char **) ZI_PLAN_PUSH (seg->inputs, seg->n_inputs) = strdup ("x");
    *(char **) ZI_PLAN_PUSH (seg->outputs, seg->n_outputs) = strdup ("y");
    zi_plan_add_replica (&seg->replicas, &seg->n_replicas, "exec0", "local", 1.0);
    const zi_plan_stage_kind_t kinds[]
        = {ZI_PLAN_STAGE_PREPROCESS, ZI_PLAN_STAGE_PARTITION, ZI_PLAN_STAGE_AGGREGATE};
    const char *names[] = {"pre0", "part0", "agg0"};
    for (int i = 0; i < 3; i++) {
        zi_plan_stage_t *stage = ZI_PLAN_PUSH (plan->stages, plan->n_stages);
        stage->kind = kinds[i];
        zi_plan_add_replica (&stage->replicas, &stage->n_replicas, names[i], "local",
                             1.0);
    }
    zi_plan_stage_t *pre = &plan->stages[0];
    zi_plan_io_t *io = ZI_PLAN_PUSH (pre->tensors, pre->n_tensors);
    io->tensor = (zi_plan_tensor_t) {strdup ("x"), ZI_DT_U8, 2, {-1, 4}};
    zi_plan_op_t *op = ZI_PLAN_PUSH (io->ops, io->n_ops);
    op->kind = ZI_PLAN_OP_CAST;
    op->to = ZI_DT_F32;
    op = ZI_PLAN_PUSH (io->ops, io->n_ops);
    op->kind = ZI_PLAN_OP_SCALE;
    op->factor = 0.5;
    plan->stages[1].micro_batch = o->micro_batch ? o->micro_batch : 4;
    plan->stages[1].max_batch = o->max_batch ? o->max_batch : 8;
    plan->stages[1].max_delay_us = o->max_delay_us;
    if (o->argmax) {
        zi_plan_stage_t *agg = &plan->stages[2];
        io = ZI_PLAN_PUSH (agg->tensors, agg->n_tensors);
        io->tensor.name = strdup ("y");
        op = ZI_PLAN_PUSH (io->ops, io->n_ops);
        op->kind = ZI_PLAN_OP_ARGMAX;
        op->axis = -1;
    }
    snprintf (path, len, "%s/plan.json", s_dir);
    char err[512];
    cr_assert_eq (zi_plan_write (plan, path, err, sizeof err), 0, "%s", err);
    return plan;
}

//  The broker's side of a link: bound, with timeouts so a test never hangs.
static zsock_t *
s_bind (int type, const zi_plan_t *plan, zi_plan_ep_t ep)
{
    zsock_t *sock = zsock_new (type);
    cr_assert_not_null (sock);
    zsock_set_sndtimeo (sock, 5000);
    zsock_set_rcvtimeo (sock, 5000);
    zsock_set_linger (sock, 0);
    cr_assert_neq (zsock_bind (sock, "%s", plan->broker.endpoints[ep].bind), -1,
                   "cannot bind %s", plan->broker.endpoints[ep].bind);
    return sock;
}

//  The next message on sock within timeout_ms, or NULL. On a PULL link the
//  stages' own HEARTBEAT / DISCONNECT {name} (their liveness, for the
//  broker) are skipped.
static zi_msg_t *
s_recv (zsock_t *sock, int timeout_ms, zmsg_t **envelope)
{
    int64_t until = zclock_mono () + timeout_ms;
    while (true) {
        int64_t left = until - zclock_mono ();
        zmq_pollitem_t item = {zsock_resolve (sock), 0, ZMQ_POLLIN, 0};
        if (zmq_poll (&item, 1, left > 0 ? left : 0) <= 0) {
            return NULL;
        }
        zi_msg_t *msg = NULL;
        char err[256];
        int rc = envelope ? zi_msg_recv_from (sock, envelope, &msg, err, sizeof err)
                          : zi_msg_recv (sock, &msg, err, sizeof err);
        cr_assert_eq (rc, 0, "a stage sent something that does not decode: %s", err);
        if (!envelope && zi_msg_name (msg)
            && (zi_msg_cmd (msg) == ZI_CMD_HEARTBEAT
                || zi_msg_cmd (msg) == ZI_CMD_DISCONNECT)) {
            zi_msg_destroy (&msg);
            continue;
        }
        return msg;
    }
}

//  The next message on the aggregate ROUTER that is not a HEARTBEAT.
static zi_msg_t *
s_recv_agg (zsock_t *router, int timeout_ms, zmsg_t **envelope)
{
    int64_t until = zclock_mono () + timeout_ms;
    while (zclock_mono () < until) {
        zmsg_t *env = NULL;
        zi_msg_t *msg = s_recv (router, (int) (until - zclock_mono ()), &env);
        if (msg && zi_msg_cmd (msg) != ZI_CMD_HEARTBEAT) {
            if (envelope) {
                *envelope = env;
            }
            else {
                zmsg_destroy (&env);
            }
            return msg;
        }
        zi_msg_destroy (&msg);
        zmsg_destroy (&env);
    }
    return NULL;
}

static void
s_send (zsock_t *sock, zi_msg_t *msg)
{
    cr_assert_eq (zi_msg_send (&msg, sock), 0, "send failed: %s", zmq_strerror (errno));
}

//  A request TASK as the broker sends it to preprocess: "x" (rows, cols)
//  of dtype dt, element (r, c) = (rid + r * cols + c) % 200.
static zi_msg_t *
s_request (uint64_t rid, const char *name, zi_dtype_t dt, int64_t rows, int64_t cols,
           uint8_t prio, uint32_t deadline)
{
    zi_msg_t *task = zi_msg_new (ZI_CMD_TASK);
    zi_msg_add_req (task, rid, 0, (uint32_t) rows);
    zi_msg_set_mb (task, 0, 1);
    zi_msg_set_seg (task, 0);
    zi_msg_set_prio (task, prio);
    if (deadline) {
        zi_msg_set_deadline_ms (task, deadline);
    }
    zi_tensor_t *x = zi_tensor_new (dt, 2, (int64_t[]){rows, cols});
    for (int64_t i = 0; i < rows * cols; i++) {
        uint8_t v = (uint8_t) ((rid + (uint64_t) i) % 200);
        if (dt == ZI_DT_U8) {
            ((uint8_t *) x->data)[i] = v;
        }
        else if (dt == ZI_DT_F32) {
            ((float *) x->data)[i] = v;
        }
    }
    cr_assert_eq (zi_msg_add_tensor (task, name, &x), 0);
    return task;
}

static void
s_check_error (const zi_msg_t *msg, uint64_t rid, int code, const char *text)
{
    cr_assert_not_null (msg, "no answer for request %llu", (unsigned long long) rid);
    cr_assert_eq (zi_msg_cmd (msg), ZI_CMD_ERROR, "request %llu: got %s",
                  (unsigned long long) rid, zi_cmd_name (zi_msg_cmd (msg)));
    cr_assert_eq (zi_msg_id (msg), rid);
    cr_assert_eq (zi_msg_code (msg), code, "code %d", zi_msg_code (msg));
    cr_assert (strstr (zi_msg_reason (msg), text), "reason '%s' lacks '%s'",
               zi_msg_reason (msg), text);
}

//  ---------------------------------------------------------------------
//  zinfer-preprocess

Test (stages, preprocess_transforms_inputs_and_rejects_bad_ones_by_name)
{
    char path[256];
    s_opts_t o = {0};
    zi_plan_t *plan = s_plan (&o, path, sizeof path);
    zsock_t *to_pre = s_bind (ZMQ_PUSH, plan, ZI_PLAN_EP_TO_PREPROCESS);
    zsock_t *from_pre = s_bind (ZMQ_PULL, plan, ZI_PLAN_EP_PREPROCESSED);
    pid_t pid = s_start ("zinfer-preprocess", path, "pre0");

    //  A good request: cast to float32 and scaled, the header kept.
    s_send (to_pre, s_request (1, "x", ZI_DT_U8, 2, 4, 3, 300));
    zi_msg_t *msg = s_recv (from_pre, 5000, NULL);
    cr_assert_not_null (msg, "no TASK from preprocess");
    cr_assert_eq (zi_msg_cmd (msg), ZI_CMD_TASK);
    size_t nreqs;
    const zi_msg_req_t *req = zi_msg_reqs (msg, &nreqs);
    cr_assert_eq (nreqs, 1);
    cr_assert_eq (req->id, 1);
    cr_assert_eq (req->count, 2);
    cr_assert_eq (zi_msg_prio (msg), 3);
    cr_assert_eq (zi_msg_deadline_ms (msg), 300);
    cr_assert_eq (zi_msg_nmb (msg), 1);
    const zi_tensor_t *x = zi_msg_tensor_find (msg, "x");
    cr_assert_not_null (x);
    cr_assert_eq (x->dtype, ZI_DT_F32);
    cr_assert_eq (x->ne[0], 2);
    cr_assert_eq (x->ne[1], 4);
    for (int i = 0; i < 8; i++) {
        cr_assert_eq (((const float *) x->data)[i], (float) ((1 + i) % 200) * 0.5f);
    }
    zi_msg_destroy (&msg);

    //  Wrong shape, wrong dtype, wrong name, an extra tensor: each is an
    //  ERROR BAD_REQUEST for its request that names the problem.
    s_send (to_pre, s_request (2, "x", ZI_DT_U8, 2, 5, 0, 0));
    msg = s_recv (from_pre, 5000, NULL);
    s_check_error (msg, 2, ZI_CODE_BAD_REQUEST, "input 'x': shape [2,5], expected [?,4]");
    zi_msg_destroy (&msg);
    s_send (to_pre, s_request (3, "x", ZI_DT_F32, 2, 4, 0, 0));
    msg = s_recv (from_pre, 5000, NULL);
    s_check_error (msg, 3, ZI_CODE_BAD_REQUEST,
                   "input 'x': dtype float32, expected uint8");
    zi_msg_destroy (&msg);
    s_send (to_pre, s_request (4, "image", ZI_DT_U8, 2, 4, 0, 0));
    msg = s_recv (from_pre, 5000, NULL);
    s_check_error (msg, 4, ZI_CODE_BAD_REQUEST,
                   "input 'image': not an input of the model");
    zi_msg_destroy (&msg);
    zi_msg_t *task = s_request (5, "x", ZI_DT_U8, 1, 4, 0, 0);
    zi_tensor_t *extra = zi_tensor_new (ZI_DT_F32, 1, (int64_t[]){1});
    zi_msg_add_tensor (task, "mask", &extra);
    s_send (to_pre, task);
    msg = s_recv (from_pre, 5000, NULL);
    s_check_error (msg, 5, ZI_CODE_BAD_REQUEST, "input 'mask': not an input");
    zi_msg_destroy (&msg);

    //  Bytes that are no message at all: dropped (nobody to answer), and
    //  the stage serves the next request.
    zstr_send (to_pre, "this is not msgpack");
    zmsg_t *bogus = zmsg_new ();
    zmsg_addmem (bogus, "\x81\xa1v\x01", 4);    //  {"v":1}: no cmd
    zmsg_addmem (bogus, "xx", 2);
    zmsg_send (&bogus, to_pre);
    s_send (to_pre, s_request (6, "x", ZI_DT_U8, 1, 4, 0, 0));
    msg = s_recv (from_pre, 5000, NULL);
    cr_assert_not_null (msg);
    cr_assert_eq (zi_msg_cmd (msg), ZI_CMD_TASK);
    cr_assert_eq (zi_msg_reqs (msg, &nreqs)->id, 6);
    zi_msg_destroy (&msg);

    s_stop (pid, "zinfer-preprocess");
    const char *log = s_log ("pre0");
    cr_assert (strstr (log, "PRE-START"), "%s", log);
    cr_assert (strstr (log, "PRE-DECODE-DROPPED"), "%s", log);
    cr_assert (strstr (log, "PRE-REJECTED: request 2: BAD_REQUEST"), "%s", log);
    cr_assert (strstr (log, "PRE-STOP"), "%s", log);
    cr_assert (strstr (log, "2 dropped"), "%s", log);
    zsock_destroy (&to_pre);
    zsock_destroy (&from_pre);
    zi_plan_destroy (&plan);
}

//  ---------------------------------------------------------------------
//  zinfer-partition

Test (stages, partition_splits_coalesces_and_forwards_errors)
{
    char path[256];
    s_opts_t o = {.micro_batch = 4, .max_batch = 8, .max_delay_us = 200000};
    zi_plan_t *plan = s_plan (&o, path, sizeof path);
    zsock_t *to_part = s_bind (ZMQ_PUSH, plan, ZI_PLAN_EP_TO_PARTITION);
    zsock_t *intake = s_bind (ZMQ_PULL, plan, ZI_PLAN_EP_INTAKE);
    pid_t pid = s_start ("zinfer-partition", path, "part0");

    //  10 rows, micro_batch 4: micro-batches of 4, 4 and 2 rows, at once.
    s_send (to_part, s_request (1, "x", ZI_DT_F32, 10, 4, 2, 500));
    for (uint32_t k = 0; k < 3; k++) {
        zi_msg_t *msg = s_recv (intake, 5000, NULL);
        cr_assert_not_null (msg, "micro-batch %u missing", k);
        size_t nreqs;
        const zi_msg_req_t *req = zi_msg_reqs (msg, &nreqs);
        cr_assert_eq (nreqs, 1);
        cr_assert_eq (req->id, 1);
        cr_assert_eq (req->first, 4 * k);
        cr_assert_eq (req->count, k < 2 ? 4 : 2);
        cr_assert_eq (zi_msg_mb (msg), k);
        cr_assert_eq (zi_msg_nmb (msg), 3);
        cr_assert_eq (zi_msg_prio (msg), 2);
        const zi_tensor_t *x = zi_msg_tensor_find (msg, "x");
        cr_assert_eq (x->ne[0], req->count);
        for (int64_t i = 0; i < x->ne[0] * 4; i++) {
            cr_assert_eq (((const float *) x->data)[i],
                          (float) ((1 + 4 * 4 * k + (uint64_t) i) % 200));
        }
        zi_msg_destroy (&msg);
    }

    //  Small requests wait up to max_delay_us and go out stacked, one
    //  batch per class.
    int64_t sent = zclock_usecs ();
    s_send (to_part, s_request (2, "x", ZI_DT_F32, 2, 4, 0, 0));
    s_send (to_part, s_request (3, "x", ZI_DT_F32, 3, 4, 0, 0));
    s_send (to_part, s_request (4, "x", ZI_DT_F32, 1, 4, 1, 0));
    zi_msg_t *batch[2];
    for (int i = 0; i < 2; i++) {
        batch[i] = s_recv (intake, 3000, NULL);
        cr_assert_not_null (batch[i], "batch %d missing", i);
    }
    int64_t waited = zclock_usecs () - sent;
    cr_assert_geq (waited, 200000, "a batch below max_batch left before max_delay_us");
    cr_assert_lt (waited, 2200000);
    if (zi_msg_prio (batch[0]) == 1) {
        zi_msg_t *t = batch[0];
        batch[0] = batch[1];
        batch[1] = t;
    }
    size_t nreqs;
    const zi_msg_req_t *reqs = zi_msg_reqs (batch[0], &nreqs);
    cr_assert_eq (nreqs, 2);
    cr_assert_eq (reqs[0].id, 2);
    cr_assert_eq (reqs[0].count, 2);
    cr_assert_eq (reqs[1].id, 3);
    cr_assert_eq (reqs[1].count, 3);
    cr_assert_eq (zi_msg_nmb (batch[0]), 1);
    const zi_tensor_t *x = zi_msg_tensor_find (batch[0], "x");
    cr_assert_eq (x->ne[0], 5);
    cr_assert_eq (((const float *) x->data)[0], 2.0f);           //  request 2, row 0
    cr_assert_eq (((const float *) x->data)[2 * 4], 3.0f);       //  request 3, row 0
    reqs = zi_msg_reqs (batch[1], &nreqs);
    cr_assert_eq (nreqs, 1);
    cr_assert_eq (reqs[0].id, 4);
    cr_assert_eq (zi_msg_prio (batch[1]), 1);
    zi_msg_destroy (&batch[0]);
    zi_msg_destroy (&batch[1]);

    //  8 rows in two requests fill max_batch: out without the delay.
    sent = zclock_usecs ();
    s_send (to_part, s_request (5, "x", ZI_DT_F32, 4, 4, 0, 0));
    s_send (to_part, s_request (6, "x", ZI_DT_F32, 4, 4, 0, 0));
    zi_msg_t *msg = s_recv (intake, 3000, NULL);
    cr_assert_not_null (msg);
    cr_assert_lt (zclock_usecs () - sent, 200000, "a full batch waited for the delay");
    cr_assert_eq (zi_msg_tensor_find (msg, "x")->ne[0], 8);
    zi_msg_destroy (&msg);

    //  ERRORs from preprocess pass through unchanged.
    zi_msg_t *error = zi_stage_error (7, ZI_CODE_BAD_REQUEST, "input 'x': shape [1,5]");
    s_send (to_part, error);
    msg = s_recv (intake, 3000, NULL);
    s_check_error (msg, 7, ZI_CODE_BAD_REQUEST, "input 'x': shape [1,5]");
    zi_msg_destroy (&msg);

    //  Inputs that disagree on rows: BAD_REQUEST naming them.
    zi_msg_t *task = s_request (8, "x", ZI_DT_F32, 2, 4, 0, 0);
    zi_tensor_t *m = zi_tensor_new (ZI_DT_F32, 1, (int64_t[]){3});
    zi_msg_add_tensor (task, "m", &m);
    s_send (to_part, task);
    msg = s_recv (intake, 3000, NULL);
    s_check_error (msg, 8, ZI_CODE_BAD_REQUEST, "input 'm': 3 rows, but input 'x' has 2");
    zi_msg_destroy (&msg);

    s_stop (pid, "zinfer-partition");
    const char *log = s_log ("part0");
    cr_assert (strstr (log, "PART-START"), "%s", log);
    cr_assert (strstr (log, "PART-FLUSH"), "%s", log);
    cr_assert (strstr (log, "PART-STOP"), "%s", log);
    zsock_destroy (&to_part);
    zsock_destroy (&intake);
    zi_plan_destroy (&plan);
}

Test (stages, partition_never_holds_a_request_while_segment_0_has_room)
{
    char path[256];
    //  A delay long enough that waiting for it would fail the test.
    s_opts_t o = {.micro_batch = 4, .max_batch = 8, .max_delay_us = 5000000};
    zi_plan_t *plan = s_plan (&o, path, sizeof path);
    zsock_t *to_part = s_bind (ZMQ_PUSH, plan, ZI_PLAN_EP_TO_PARTITION);
    zsock_t *intake = s_bind (ZMQ_PULL, plan, ZI_PLAN_EP_INTAKE);
    pid_t pid = s_start ("zinfer-partition", path, "part0");

    //  The broker says segment 0 has a free slot: the lone request goes
    //  at once, as a batch of one.
    zi_msg_t *task = s_request (1, "x", ZI_DT_F32, 1, 4, 0, 0);
    zi_msg_set_credit (task, 1);
    int64_t sent = zclock_usecs ();
    s_send (to_part, task);
    zi_msg_t *msg = s_recv (intake, 3000, NULL);
    cr_assert_not_null (msg, "an idle pipeline held the request");
    cr_assert_lt (zclock_usecs () - sent, 2000000, "the request waited for company");
    size_t nreqs;
    cr_assert_eq (zi_msg_reqs (msg, &nreqs)->id, 1);
    zi_msg_destroy (&msg);

    //  Segment 0 is busy (credit 0): requests are held and coalesce ...
    for (uint64_t rid = 2; rid <= 3; rid++) {
        task = s_request (rid, "x", ZI_DT_F32, 1, 4, 0, 0);
        zi_msg_set_credit (task, 0);
        s_send (to_part, task);
    }
    //  (an ERROR behind them comes back first: they have been read)
    s_send (to_part, zi_stage_error (98, ZI_CODE_BAD_REQUEST, "marker"));
    msg = s_recv (intake, 3000, NULL);
    s_check_error (msg, 98, ZI_CODE_BAD_REQUEST, "marker");
    zi_msg_destroy (&msg);
    //  ... until the broker's HEARTBEAT {credit} says it has room again.
    zi_msg_t *beat = zi_msg_new (ZI_CMD_HEARTBEAT);
    zi_msg_set_credit (beat, 1);
    s_send (to_part, beat);
    msg = s_recv (intake, 3000, NULL);
    cr_assert_not_null (msg, "the held batch did not go when segment 0 had room");
    const zi_msg_req_t *reqs = zi_msg_reqs (msg, &nreqs);
    cr_assert_eq (nreqs, 2);
    cr_assert_eq (reqs[0].id, 2);
    cr_assert_eq (reqs[1].id, 3);
    zi_msg_destroy (&msg);

    s_stop (pid, "zinfer-partition");
    cr_assert (strstr (s_log ("part0"), "(2 at once: segment 0 had room)"), "%s",
               s_log ("part0"));
    zsock_destroy (&to_part);
    zsock_destroy (&intake);
    zi_plan_destroy (&plan);
}

Test (stages, partition_flushes_queued_requests_on_sigterm)
{
    char path[256];
    s_opts_t o = {.micro_batch = 4, .max_batch = 8, .max_delay_us = 10000000};
    zi_plan_t *plan = s_plan (&o, path, sizeof path);
    zsock_t *to_part = s_bind (ZMQ_PUSH, plan, ZI_PLAN_EP_TO_PARTITION);
    zsock_t *intake = s_bind (ZMQ_PULL, plan, ZI_PLAN_EP_INTAKE);
    pid_t pid = s_start ("zinfer-partition", path, "part0");
    //  The request would wait 10 s. The ERROR behind it comes back at once,
    //  which proves the request has been read (one link delivers in order).
    s_send (to_part, s_request (1, "x", ZI_DT_F32, 1, 4, 0, 0));
    s_send (to_part, zi_stage_error (99, ZI_CODE_BAD_REQUEST, "marker"));
    zi_msg_t *msg = s_recv (intake, 5000, NULL);
    s_check_error (msg, 99, ZI_CODE_BAD_REQUEST, "marker");
    zi_msg_destroy (&msg);
    s_stop (pid, "zinfer-partition");
    msg = s_recv (intake, 1000, NULL);
    cr_assert_not_null (msg, "the queued request was not flushed at exit");
    size_t nreqs;
    cr_assert_eq (zi_msg_reqs (msg, &nreqs)->id, 1);
    zi_msg_destroy (&msg);
    cr_assert (strstr (s_log ("part0"), "after flushing 1 queued request"), "%s",
               s_log ("part0"));
    zsock_destroy (&to_part);
    zsock_destroy (&intake);
    zi_plan_destroy (&plan);
}

//  ---------------------------------------------------------------------
//  zinfer-aggregate

//  A TASK as the broker sends it to an aggregator: "y" float32 (rows, 4),
//  element (g, c) = (g + c) % 4 for global row g of the task, so the
//  argmax of row g is (3 - g) mod 4.
static zi_msg_t *
s_output (const zi_msg_req_t *reqs, size_t nreqs, uint32_t mb, uint32_t nmb, int64_t g0)
{
    zi_msg_t *task = zi_msg_new (ZI_CMD_TASK);
    zi_msg_set_reqs (task, reqs, nreqs);
    zi_msg_set_mb (task, mb, nmb);
    zi_msg_set_seg (task, 1);
    int64_t rows = 0;
    for (size_t k = 0; k < nreqs; k++) {
        rows += reqs[k].count;
    }
    zi_tensor_t *y = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){rows, 4});
    for (int64_t g = 0; g < rows; g++) {
        for (int c = 0; c < 4; c++) {
            ((float *) y->data)[g * 4 + c] = (float) ((g0 + g + c) % 4);
        }
    }
    zi_msg_add_tensor (task, "y", &y);
    return task;
}

static void
s_check_labels (const zi_msg_t *reply, uint64_t rid, const int64_t *labels, int64_t n)
{
    cr_assert_not_null (reply, "no reply for request %llu", (unsigned long long) rid);
    cr_assert_eq (zi_msg_cmd (reply), ZI_CMD_REPLY, "got %s %s",
                  zi_cmd_name (zi_msg_cmd (reply)),
                  zi_msg_reason (reply) ? zi_msg_reason (reply) : "");
    cr_assert_eq (zi_msg_id (reply), rid);
    const zi_tensor_t *y = zi_msg_tensor_find (reply, "y");
    cr_assert_not_null (y);
    cr_assert_eq (y->dtype, ZI_DT_I64, "argmax applied");
    cr_assert_eq (y->ne[0], n);
    for (int64_t i = 0; i < n; i++) {
        cr_assert_eq (((const int64_t *) y->data)[i], labels[i], "row %lld",
                      (long long) i);
    }
}

Test (stages, aggregate_announces_itself_and_replies_per_request)
{
    char path[256];
    s_opts_t o = {.argmax = true, .heartbeat_ms = 100};
    zi_plan_t *plan = s_plan (&o, path, sizeof path);
    zsock_t *router = s_bind (ZMQ_ROUTER, plan, ZI_PLAN_EP_TO_AGGREGATE);
    zsock_t *results = s_bind (ZMQ_PULL, plan, ZI_PLAN_EP_RESULTS);
    pid_t pid = s_start ("zinfer-aggregate", path, "agg0");

    //  READY from routing id "agg0", then heartbeats.
    zmsg_t *env = NULL;
    zi_msg_t *msg = s_recv (router, 5000, &env);
    cr_assert_not_null (msg, "no READY");
    cr_assert_eq (zi_msg_cmd (msg), ZI_CMD_READY);
    cr_assert_str_eq (zi_msg_name (msg), "agg0");
    cr_assert_eq (zi_msg_seg (msg), 1, "the segment past the last one");
    cr_assert_eq (zi_msg_capacity (msg), 1.0);
    cr_assert (zframe_streq (zmsg_first (env), "agg0"), "routing id = the replica name");
    zi_msg_destroy (&msg);
    for (int beats = 0; beats < 2; beats++) {
        zmsg_t *e = NULL;
        msg = s_recv (router, 2000, &e);
        cr_assert_not_null (msg, "no HEARTBEAT");
        cr_assert_eq (zi_msg_cmd (msg), ZI_CMD_HEARTBEAT);
        cr_assert_str_eq (zi_msg_name (msg), "agg0");
        zi_msg_destroy (&msg);
        zmsg_destroy (&e);
    }

    //  A coalesced task: one REPLY per request, post-processed.
    zi_msg_req_t reqs[] = {{11, 0, 2}, {12, 0, 1}};
    zi_msg_t *task = s_output (reqs, 2, 0, 1, 0);
    cr_assert_eq (zi_msg_send_to (&task, router, env), 0);
    msg = s_recv (results, 5000, NULL);
    s_check_labels (msg, 11, (int64_t[]){3, 2}, 2);
    zi_msg_destroy (&msg);
    msg = s_recv (results, 5000, NULL);
    s_check_labels (msg, 12, (int64_t[]){1}, 1);
    zi_msg_destroy (&msg);

    //  Micro-batches out of order, one twice: one REPLY, rows in order.
    zi_msg_req_t m1 = {13, 2, 2}, m0 = {13, 0, 2};
    task = s_output (&m1, 1, 1, 2, 2);
    cr_assert_eq (zi_msg_send_to (&task, router, env), 0);
    task = s_output (&m1, 1, 1, 2, 2);
    cr_assert_eq (zi_msg_send_to (&task, router, env), 0);
    task = s_output (&m0, 1, 0, 2, 0);
    cr_assert_eq (zi_msg_send_to (&task, router, env), 0);
    msg = s_recv (results, 5000, NULL);
    s_check_labels (msg, 13, (int64_t[]){3, 2, 1, 0}, 4);
    zi_msg_destroy (&msg);
    cr_assert_null (s_recv (results, 300, NULL), "the duplicate made no second reply");

    //  A broker that has forgotten us says DISCONNECT: READY again.
    zi_msg_t *bye = zi_msg_new (ZI_CMD_DISCONNECT);
    zi_msg_set_reason (bye, "unknown aggregator");
    cr_assert_eq (zi_msg_send_to (&bye, router, env), 0);
    msg = s_recv_agg (router, 3000, NULL);
    cr_assert_not_null (msg);
    cr_assert_eq (zi_msg_cmd (msg), ZI_CMD_READY);
    zi_msg_destroy (&msg);

    //  SIGTERM: DISCONNECT, then exit 0 within 2 s.
    s_stop (pid, "zinfer-aggregate");
    msg = s_recv_agg (router, 1000, NULL);
    cr_assert_not_null (msg, "no DISCONNECT when leaving");
    cr_assert_eq (zi_msg_cmd (msg), ZI_CMD_DISCONNECT);
    zi_msg_destroy (&msg);
    const char *log = s_log ("agg0");
    cr_assert (strstr (log, "AGG-START"), "%s", log);
    cr_assert (strstr (log, "AGG-REPLY"), "%s", log);
    cr_assert (strstr (log, "AGG-STOP"), "%s", log);
    cr_assert (strstr (log, "3 replies"), "%s", log);
    cr_assert (strstr (log, "1 duplicates"), "%s", log);
    zmsg_destroy (&env);
    zsock_destroy (&router);
    zsock_destroy (&results);
    zi_plan_destroy (&plan);
}

//  ---------------------------------------------------------------------
//  The three stages together, the broker faked by this test: it relays
//  preprocessed -> to_partition unchanged, runs an identity "model" on
//  intake TASKs (x -> y) and hands them to the aggregator.

Test (stages, the_three_stages_answer_every_request_once)
{
    char path[256];
    s_opts_t o = {.micro_batch = 4, .max_batch = 8, .max_delay_us = 50000,
                  .heartbeat_ms = 200};
    zi_plan_t *plan = s_plan (&o, path, sizeof path);
    zsock_t *to_pre = s_bind (ZMQ_PUSH, plan, ZI_PLAN_EP_TO_PREPROCESS);
    zsock_t *preprocessed = s_bind (ZMQ_PULL, plan, ZI_PLAN_EP_PREPROCESSED);
    zsock_t *to_part = s_bind (ZMQ_PUSH, plan, ZI_PLAN_EP_TO_PARTITION);
    zsock_t *intake = s_bind (ZMQ_PULL, plan, ZI_PLAN_EP_INTAKE);
    zsock_t *to_agg = s_bind (ZMQ_ROUTER, plan, ZI_PLAN_EP_TO_AGGREGATE);
    zsock_t *results = s_bind (ZMQ_PULL, plan, ZI_PLAN_EP_RESULTS);
    pid_t pre = s_start ("zinfer-preprocess", path, "pre0");
    pid_t part = s_start ("zinfer-partition", path, "part0");
    pid_t agg = s_start ("zinfer-aggregate", path, "agg0");
    zmsg_t *agg_env = NULL;
    zi_msg_t *msg = s_recv_agg (to_agg, 5000, &agg_env);
    cr_assert_not_null (msg);
    cr_assert_eq (zi_msg_cmd (msg), ZI_CMD_READY);
    zi_msg_destroy (&msg);

    enum { N = 12 };
    int64_t rows[N + 1];
    for (uint64_t rid = 1; rid <= N; rid++) {
        rows[rid] = rid == 5 ? 11 : 1 + (int64_t) (rid % 3);
        int64_t cols = rid == 7 ? 3 : 4;                    //  7 is malformed
        s_send (to_pre, s_request (rid, "x", ZI_DT_U8, rows[rid], cols, 0, 0));
    }
    int answers[N + 1];
    memset (answers, 0, sizeof answers);
    int answered = 0;
    int64_t until = zclock_mono () + 10000;
    while (answered < N && zclock_mono () < until) {
        zmq_pollitem_t items[] = {{zsock_resolve (preprocessed), 0, ZMQ_POLLIN, 0},
                                  {zsock_resolve (intake), 0, ZMQ_POLLIN, 0},
                                  {zsock_resolve (to_agg), 0, ZMQ_POLLIN, 0},
                                  {zsock_resolve (results), 0, ZMQ_POLLIN, 0}};
        if (zmq_poll (items, 4, 100) <= 0) {
            continue;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            zmsg_t *raw = zmsg_recv (preprocessed);     //  relayed, not decoded
            cr_assert_eq (zmsg_send (&raw, to_part), 0);
        }
        if (items[1].revents & ZMQ_POLLIN) {
            msg = s_recv (intake, 0, NULL);
            if (!msg) {
                continue; //  only a HEARTBEAT of the partition stage
            }
            if (zi_msg_cmd (msg) == ZI_CMD_ERROR) {
                uint64_t rid = zi_msg_id (msg);
                s_check_error (msg, 7, ZI_CODE_BAD_REQUEST,
                               "input 'x': shape [2,3], expected [?,4]");
                answers[rid]++;
                answered++;
                zi_msg_destroy (&msg);
            }
            else {
                zi_msg_t *out = zi_msg_new (ZI_CMD_TASK);
                size_t nreqs;
                const zi_msg_req_t *reqs = zi_msg_reqs (msg, &nreqs);
                zi_msg_set_reqs (out, reqs, nreqs);
                zi_msg_set_mb (out, zi_msg_mb (msg), zi_msg_nmb (msg));
                zi_msg_set_seg (out, 1);
                zi_msg_add_tensor_copy (out, "y", zi_msg_tensor_find (msg, "x"));
                cr_assert_eq (zi_msg_send_to (&out, to_agg, agg_env), 0);
                zi_msg_destroy (&msg);
            }
        }
        if (items[2].revents & ZMQ_POLLIN) {
            zmsg_t *e = NULL;
            msg = s_recv (to_agg, 0, &e);
            zi_msg_destroy (&msg);                      //  heartbeats
            zmsg_destroy (&e);
        }
        if (items[3].revents & ZMQ_POLLIN) {
            msg = s_recv (results, 0, NULL);
            cr_assert_not_null (msg);
            cr_assert_eq (zi_msg_cmd (msg), ZI_CMD_REPLY, "%s",
                          zi_msg_reason (msg) ? zi_msg_reason (msg) : "");
            uint64_t rid = zi_msg_id (msg);
            cr_assert (rid >= 1 && rid <= N);
            const zi_tensor_t *y = zi_msg_tensor_find (msg, "y");
            cr_assert_eq (y->dtype, ZI_DT_F32);
            cr_assert_eq (y->ne[0], rows[rid]);
            for (int64_t i = 0; i < rows[rid] * 4; i++) {
                cr_assert_eq (((const float *) y->data)[i],
                              (float) ((rid + (uint64_t) i) % 200) * 0.5f,
                              "request %llu element %lld", (unsigned long long) rid,
                              (long long) i);
            }
            answers[rid]++;
            answered++;
            zi_msg_destroy (&msg);
        }
    }
    for (uint64_t rid = 1; rid <= N; rid++) {
        cr_assert_eq (answers[rid], 1, "request %llu: %d answers",
                      (unsigned long long) rid, answers[rid]);
    }
    s_stop (agg, "zinfer-aggregate");
    s_stop (part, "zinfer-partition");
    s_stop (pre, "zinfer-preprocess");
    zmsg_destroy (&agg_env);
    zsock_destroy (&to_pre);
    zsock_destroy (&preprocessed);
    zsock_destroy (&to_part);
    zsock_destroy (&intake);
    zsock_destroy (&to_agg);
    zsock_destroy (&results);
    zi_plan_destroy (&plan);
}

//  ---------------------------------------------------------------------
//  Usage errors: exit 2 with a message

//  Run a stage to its end; returns its exit status, output in the log.
static int
s_run (const char *program, const char *plan, const char *name, const char *extra)
{
    pid_t pid = s_spawn (program, plan, name, extra, "usage");
    int status = s_wait_exit (pid, 10000, NULL);
    cr_assert_neq (status, -1, "%s did not exit", program);
    cr_assert (WIFEXITED (status));
    return WEXITSTATUS (status);
}

Test (stages, bad_arguments_exit_2_with_a_clear_message)
{
    char path[256];
    s_opts_t o = {0};
    zi_plan_t *plan = s_plan (&o, path, sizeof path);
    const char *programs[]
        = {"zinfer-preprocess", "zinfer-partition", "zinfer-aggregate"};
    const char *mine[] = {"pre0", "part0", "agg0"};
    const char *other[] = {"agg0", "pre0", "part0"};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq (s_run (programs[i], path, mine[i], "--bogus"), 2);
        cr_assert (strstr (s_log ("usage"), "unknown option '--bogus'"), "%s",
                   s_log ("usage"));
        cr_assert_eq (s_run (programs[i], NULL, mine[i], NULL), 2);
        cr_assert (
            strstr (s_log ("usage"), "--plan PLAN and --name REPLICA are required"));
        cr_assert_eq (s_run (programs[i], "/nonexistent/plan.json", mine[i], NULL), 2);
        cr_assert (strstr (s_log ("usage"), "cannot load the plan"), "%s",
                   s_log ("usage"));
        cr_assert_eq (s_run (programs[i], path, "nobody", NULL), 2);
        cr_assert (strstr (s_log ("usage"), "has no replica 'nobody'"), "%s",
                   s_log ("usage"));
        cr_assert_eq (s_run (programs[i], path, other[i], NULL), 2);
        cr_assert (strstr (s_log ("usage"), "belongs to the"), "%s", s_log ("usage"));
        cr_assert_eq (s_run (programs[i], path, "exec0", NULL), 2);
        cr_assert (strstr (s_log ("usage"), "is an exec worker of segment 0"), "%s",
                   s_log ("usage"));
        cr_assert_eq (s_run (programs[i], NULL, NULL, "--help"), 0);
        cr_assert (strstr (s_log ("usage"), "--plan PLAN --name REPLICA"), "%s",
                   s_log ("usage"));
    }
    zi_plan_destroy (&plan);
}

//  ---------------------------------------------------------------------
//  The preprocess logic on its own

Test (stages, preprocess_logic_checks_names_before_shapes_and_keeps_the_header)
{
    char path[256];
    s_opts_t o = {0};
    zi_plan_t *plan = s_plan (&o, path, sizeof path);
    const zi_plan_stage_t *pre = zi_plan_find_stage (plan, ZI_PLAN_STAGE_PREPROCESS);
    char err[512];
    zi_msg_t *out = NULL;
    //  Missing: a task with no tensors at all.
    zi_msg_t *task = zi_msg_new (ZI_CMD_TASK);
    zi_msg_add_req (task, 1, 0, 1);
    cr_assert_eq (zi_stage_preprocess (plan, pre, task, &out, err, sizeof err),
                  ZI_ERR_NOTFOUND);
    cr_assert (strstr (err, "input 'x': missing (expected uint8[?,4])"), "%s", err);
    cr_assert_null (out);
    zi_msg_destroy (&task);
    //  The header goes on unchanged.
    task = s_request (9, "x", ZI_DT_U8, 3, 4, 5, 77);
    zi_msg_set_attempt (task, 2);
    cr_assert_eq (zi_stage_preprocess (plan, pre, task, &out, err, sizeof err), 0, "%s",
                  err);
    size_t nreqs;
    const zi_msg_req_t *req = zi_msg_reqs (out, &nreqs);
    cr_assert_eq (nreqs, 1);
    cr_assert_eq (req->id, 9);
    cr_assert_eq (req->count, 3);
    cr_assert_eq (zi_msg_prio (out), 5);
    cr_assert_eq (zi_msg_deadline_ms (out), 77);
    cr_assert_eq (zi_msg_attempt (out), 2);
    cr_assert_eq (zi_msg_tensor_find (out, "x")->dtype, ZI_DT_F32);
    zi_msg_destroy (&out);
    zi_msg_destroy (&task);
    //  A stage without declarations checks against the model's inputs.
    zi_plan_stage_t bare = *pre;
    bare.tensors = NULL;
    bare.n_tensors = 0;
    task = s_request (10, "x", ZI_DT_U8, 1, 4, 0, 0);
    cr_assert_eq (zi_stage_preprocess (plan, &bare, task, &out, err, sizeof err),
                  ZI_ERR_SHAPE);
    cr_assert (strstr (err, "input 'x': dtype uint8, expected float32"), "%s", err);
    zi_msg_destroy (&task);
    task = s_request (11, "x", ZI_DT_F32, 1, 4, 0, 0);
    cr_assert_eq (zi_stage_preprocess (plan, &bare, task, &out, err, sizeof err), 0, "%s",
                  err);
    cr_assert_eq (((const float *) zi_msg_tensor_find (out, "x")->data)[1], 12.0f);
    zi_msg_destroy (&out);
    zi_msg_destroy (&task);
    zi_plan_destroy (&plan);
}
