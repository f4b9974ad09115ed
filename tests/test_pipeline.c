/*  test_pipeline.c - the whole pipeline, end to end, with the real
    programs: each test plans a model (`zinfer plan`, ipc endpoints in a
    fresh temporary directory), edits the plan where it needs other
    settings, starts it with `zinfer up` and waits for HEALTH ready, then
    talks to the broker's front with the C client (or a raw DEALER).

    What is checked: outputs equal the single-process engine's (zi_exec in
    this process, with the same pre- and post-processing) bit for bit, for
    Fashion-MNIST and for the transformer block cut into 2 segments, also
    when a batch is split into micro-batches and when batch-1 requests are
    coalesced; replica shares of tasks follow capacity (3:1 over 2,000
    tasks); priority classes of weights 4:1 share dispatch 16:1; BUSY under
    overload with exactly one answer per request; TIMEOUT past a deadline;
    BAD_REQUEST for a wrong shape, a wrong dtype and a malformed header,
    with correct answers afterwards; and `zinfer up` restarting a SIGKILLed
    exec worker while requests keep completing.

    Every test's fini stops `zinfer up` (SIGTERM, then SIGKILL) and reaps
    it, also after a failed assertion; `zinfer up` was started with
    PR_SET_PDEATHSIG and starts its children so, so even a crashed test
    leaves no process behind.
    // ctest-timeout: 180
*/
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zi_client.h"
#include "zi_exec.h"
#include "zi_json.h"
#include "zi_msg.h"
#include "zi_npy.h"
#include "zi_onnx.h"
#include "zi_split.h"
#include "zi_plan.h"
#include "zi_transform.h"
#include "zt_spawn.h"

#define S_FASHION ZI_SOURCE_DIR "/examples/fashion-mnist/model.onnx"
#define S_TRANSFORMER ZI_SOURCE_DIR "/tests/models/transformer_block"
#define S_MLP ZI_SOURCE_DIR "/tests/models/mlp"
#define S_FASHION_PRE                                                                    \
    "--input-dtype uint8 --input-shape -1,28,28,1 --pre cast=float32 "                   \
    "--pre scale=0.00392156862745098 --pre hwc_to_chw"

static char s_tmp[128];
static char s_plan_path[256];
static pid_t s_up;
static zi_plan_t *s_plan;
static zi_client_t *s_client;

static int64_t
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_setup (void)
{
    snprintf (s_tmp, sizeof s_tmp, "/tmp/zi-pipe-XXXXXX");
    cr_assert_not_null (mkdtemp (s_tmp));
    snprintf (s_plan_path, sizeof s_plan_path, "%s/plan.json", s_tmp);
    s_up = 0;
    s_plan = NULL;
    s_client = NULL;
}

static void
s_teardown (void)
{
    zi_client_destroy (&s_client);
    if (s_up > 0) {
        //  The orderly way first (its children drain and leave), then
        //  the sure way.
        kill (s_up, SIGTERM);
        int64_t end = s_now_ms () + 12000;
        while (waitpid (s_up, NULL, WNOHANG) == 0 && s_now_ms () < end) {
            usleep (20000);
        }
        if (kill (s_up, 0) == 0) {
            kill (s_up, SIGKILL);
            waitpid (s_up, NULL, 0);
        }
        s_up = 0;
    }
    zi_plan_destroy (&s_plan);
    char cmd[256];
    snprintf (cmd, sizeof cmd, "rm -rf %s", s_tmp);
    if (system (cmd) != 0) {
        fprintf (stderr, "cannot remove %s\n", s_tmp);
    }
}

TestSuite (pipeline, .init = s_setup, .fini = s_teardown, .timeout = 90);

//  `zinfer plan MODEL --ipc TMP ARGS -o TMP/plan.json`, then load it into
//  s_plan for the test to edit (s_save_plan) if it wants.
static void
s_make_plan (const char *model, const char *fmt, ...)
{
    char args[1024], cmd[2048], log[256];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (args, sizeof args, fmt, ap);
    va_end (ap);
    snprintf (log, sizeof log, "%s/plan.log", s_tmp);
    snprintf (cmd, sizeof cmd, "%s/zinfer plan %s --ipc %s %s -o %s > %s 2>&1",
              ZI_BINARY_DIR, model, s_tmp, args, s_plan_path, log);
    cr_assert_eq (system (cmd), 0, "%s failed (see %s)", cmd, log);
    char err[1024];
    s_plan = zi_plan_load (s_plan_path, err, sizeof err);
    cr_assert_not_null (s_plan, "%s", err);
}

static void
s_save_plan (void)
{
    char err[1024];
    cr_assert_eq (zi_plan_write (s_plan, s_plan_path, err, sizeof err), 0, "%s", err);
}

static char *
s_slurp (const char *path)
{
    static char buf[1 << 16];
    FILE *f = fopen (path, "r");
    if (!f) {
        buf[0] = 0;
        return buf;
    }
    size_t n = fread (buf, 1, sizeof buf - 1, f);
    fclose (f);
    buf[n] = 0;
    //  the end of a long log is what explains a failure
    return n > 6000 ? buf + n - 6000 : buf;
}

static bool s_all_live (void);

//  Start `zinfer up` on the plan (stdout + stderr into TMP/up.log) and
//  wait until the broker reports ready; connect s_client.
static void
s_up_start (void)
{
    char log[256], exe[512];
    snprintf (log, sizeof log, "%s/up.log", s_tmp);
    snprintf (exe, sizeof exe, "%s/zinfer", ZI_BINARY_DIR);
    char *argv[] = { exe, (char *)"up", s_plan_path, NULL };
    s_up = zt_fork_exec (log, true, argv);
    char err[512];
    s_client = zi_client_new (s_plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect, err,
                              sizeof err);
    cr_assert_not_null (s_client, "%s", err);
    int64_t end = s_now_ms () + 30000;
    while (s_now_ms () < end) {
        cr_assert_eq (waitpid (s_up, NULL, WNOHANG), 0, "zinfer up exited:\n%s",
                      s_slurp (log));
        if (zi_client_wait_ready (s_client, 500) == 0) {
            break;
        }
    }
    cr_assert (s_now_ms () < end, "the pipeline is not ready after 30 s:\n%s",
               s_slurp (log));
    //  Ready means every segment has a live replica; a test of shares
    //  needs all of them (one that joins late misses the first tasks).
    while (!s_all_live ()) {
        cr_assert (s_now_ms () < end, "not every replica is live after 30 s:\n%s",
                   s_slurp (log));
        usleep (50000);
    }
}

//  ---------------------------------------------------------------------
//  Requests and answers

static zi_tensor_t *
s_random_u8 (int64_t n, unsigned seed)
{
    zi_tensor_t *t = zi_tensor_new (ZI_DT_U8, 4, (int64_t[]){ n, 28, 28, 1 });
    cr_assert_not_null (t);
    srand (seed);
    for (int64_t i = 0; i < n * 28 * 28; i++) {
        ((uint8_t *)t->data)[i] = (uint8_t)(rand () & 0xff);
    }
    return t;
}

//  Send a REQUEST with one tensor (copied); returns its id.
static uint64_t
s_send (const char *name, const zi_tensor_t *x, int prio, uint32_t deadline)
{
    zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
    cr_assert_eq (zi_msg_add_tensor_copy (req, name, x), 0);
    cr_assert_eq (zi_msg_set_prio (req, (uint8_t)prio), 0);
    if (deadline) {
        zi_msg_set_deadline_ms (req, deadline);
    }
    uint64_t id;
    cr_assert_eq (zi_client_send (s_client, &req, &id), 0);
    return id;
}

//  The next answer (any request), within timeout_ms.
static zi_msg_t *
s_recv (int timeout_ms)
{
    zi_msg_t *m = NULL;
    char err[512];
    int rc = zi_client_recv (s_client, timeout_ms, &m, err, sizeof err);
    cr_assert_eq (rc, 0, "no answer: %s", err);
    return m;
}

//  Send one request and wait for its answer (any other is a failure).
static zi_msg_t *
s_ask (const char *name, const zi_tensor_t *x, uint32_t deadline)
{
    uint64_t id = s_send (name, x, 0, deadline);
    zi_msg_t *m = s_recv (20000);
    cr_assert_eq (zi_msg_id (m), id);
    return m;
}

static void
s_assert_reply (const zi_msg_t *m)
{
    cr_assert_eq (zi_msg_cmd (m), ZI_CMD_REPLY, "expected a REPLY, got %s %d %s",
                  zi_cmd_name (zi_msg_cmd (m)), zi_msg_code (m),
                  zi_msg_reason (m) ? zi_msg_reason (m) : "");
}

static void
s_assert_error (const zi_msg_t *m, int code, const char *says)
{
    cr_assert_eq (zi_msg_cmd (m), ZI_CMD_ERROR, "expected an ERROR, got %s",
                  zi_cmd_name (zi_msg_cmd (m)));
    cr_assert_eq (zi_msg_code (m), code, "code %d (%s)", zi_msg_code (m),
                  zi_msg_reason (m) ? zi_msg_reason (m) : "");
    if (says) {
        cr_assert (zi_msg_reason (m) && strstr (zi_msg_reason (m), says), "reason: %s",
                   zi_msg_reason (m) ? zi_msg_reason (m) : "(none)");
    }
}

static void
s_assert_same_bits (const zi_tensor_t *got, const zi_tensor_t *want, const char *what)
{
    char a[64], b[64];
    cr_assert (zi_tensor_same_shape (got, want), "%s: %s %s, expected %s %s", what,
               zi_dtype_name (got->dtype), zi_tensor_shape_str (got, a, sizeof a),
               zi_dtype_name (want->dtype), zi_tensor_shape_str (want, b, sizeof b));
    size_t n = got->nbytes;
    if (memcmp (got->data, want->data, n) != 0) {
        size_t at = 0;
        while (((const uint8_t *)got->data)[at] == ((const uint8_t *)want->data)[at]) {
            at++;
        }
        size_t el = zi_dtype_size (got->dtype);
        size_t i = at / el;
        cr_assert_fail (
            "%s: element %zu differs: %.9g vs %.9g", what, i,
            got->dtype == ZI_DT_F32 ? (double)((const float *)got->data)[i] : 0.0,
            want->dtype == ZI_DT_F32 ? (double)((const float *)want->data)[i] : 0.0);
    }
}

//  ---------------------------------------------------------------------
//  The single-process reference: the plan's pre-processing, the whole
//  graph in one executor, the plan's post-processing.

typedef struct {
    zi_graph_t *graph;
    zi_exec_t *exec;
} s_engine_t;

static void
s_engine_open (s_engine_t *e, const char *model)
{
    char err[1024];
    e->graph = zi_onnx_load (model, err, sizeof err);
    cr_assert_not_null (e->graph, "%s", err);
    //  The model as the plan runs it: with the layers it splits split.
    cr_assert_eq (zi_split_apply_all (e->graph, s_plan->model.splits, s_plan->model.n_splits,
                                      err, sizeof err), 0, "%s", err);
    e->exec = zi_exec_new (e->graph, 0, -1, NULL, err, sizeof err);
    cr_assert_not_null (e->exec, "%s", err);
}

static void
s_engine_close (s_engine_t *e)
{
    zi_exec_destroy (&e->exec);
    zi_graph_destroy (&e->graph);
}

//  Output 0 of the model for client input x, pre/post-processed as the
//  plan says.
static zi_tensor_t *
s_engine_run (s_engine_t *e, const zi_tensor_t *x)
{
    char err[1024];
    const zi_plan_stage_t *pre = zi_plan_find_stage (s_plan, ZI_PLAN_STAGE_PREPROCESS);
    const zi_plan_stage_t *post = zi_plan_find_stage (s_plan, ZI_PLAN_STAGE_AGGREGATE);
    zi_tensor_t *in = NULL;
    if (pre && pre->n_tensors) {
        cr_assert_eq (zi_transform_pre (&pre->tensors[0], x, &in, err, sizeof err), 0,
                      "%s", err);
    }
    else {
        in = zi_tensor_dup (x);
    }
    zi_tensor_t *out[8] = { NULL };
    const zi_tensor_t *ins[1] = { in };
    cr_assert_eq (zi_exec_run (e->exec, ins, out, err, sizeof err), 0, "%s", err);
    zi_tensor_destroy (&in);
    for (int i = 1; i < zi_exec_n_outputs (e->exec); i++) {
        zi_tensor_destroy (&out[i]);
    }
    if (post && post->n_tensors) {
        zi_tensor_t *y = NULL, *extra = NULL;
        cr_assert_eq (
            zi_transform_post (&post->tensors[0], out[0], &y, &extra, err, sizeof err), 0,
            "%s", err);
        zi_tensor_destroy (&extra);
        zi_tensor_destroy (&out[0]);
        return y;
    }
    return out[0];
}

//  Rows [first, first+n) of x as a new tensor.
static zi_tensor_t *
s_rows (const zi_tensor_t *x, int64_t first, int64_t n)
{
    zi_tensor_t view;
    cr_assert_eq (zi_tensor_slice_rows (x, first, n, &view), 0);
    return zi_tensor_dup (&view);
}

//  The engine on rows [0, chunk), [chunk, 2 chunk), ... of x, each run as
//  one batch, the outputs stacked: what the pipeline computes when its
//  tasks hold those rows. (The engine's rows are not independent of the
//  batch they run in: OpenBLAS takes other code paths for other M, so the
//  reference runs the same batches as the pipeline.)
static zi_tensor_t *
s_engine_run_chunks (s_engine_t *e, const zi_tensor_t *x, int64_t chunk)
{
    zi_tensor_t *all = NULL;
    size_t at = 0;
    for (int64_t first = 0; first < x->ne[0]; first += chunk) {
        int64_t n = x->ne[0] - first < chunk ? x->ne[0] - first : chunk;
        zi_tensor_t *part = s_rows (x, first, n);
        zi_tensor_t *y = s_engine_run (e, part);
        if (!all) {
            int64_t shape[ZI_MAX_RANK];
            memcpy (shape, y->ne, sizeof shape);
            shape[0] = x->ne[0];
            all = zi_tensor_new (y->dtype, y->rank, shape);
            cr_assert_not_null (all);
        }
        cr_assert_leq (at + y->nbytes, all->nbytes);
        memcpy ((uint8_t *)all->data + at, y->data, y->nbytes);
        at += y->nbytes;
        zi_tensor_destroy (&y);
        zi_tensor_destroy (&part);
    }
    return all;
}

//  ---------------------------------------------------------------------
//  STATS, read through `zinfer stats --json`

static zi_json_t *
s_stats (void)
{
    char cmd[512];
    snprintf (cmd, sizeof cmd, "%s/zinfer stats --plan %s --json", ZI_BINARY_DIR,
              s_plan_path);
    FILE *p = popen (cmd, "r");
    cr_assert_not_null (p);
    static char buf[1 << 18];
    size_t n = fread (buf, 1, sizeof buf - 1, p);
    cr_assert_eq (pclose (p), 0, "%s failed: %.*s", cmd, (int)n, buf);
    zi_json_t *doc = NULL;
    char err[256];
    cr_assert_eq (zi_json_parse (buf, n, NULL, &doc, err, sizeof err), 0, "%s", err);
    return doc;
}

//  segments[seg].replicas[name].key, or -1 when absent.
static double
s_replica_stat (const zi_json_t *stats, int seg, const char *name, const char *key)
{
    const zi_json_t *reps = zi_json_get (
        zi_json_at (zi_json_get (stats, "segments"), (size_t)seg), "replicas");
    for (size_t i = 0; i < zi_json_size (reps); i++) {
        const zi_json_t *r = zi_json_at (reps, i);
        if (strcmp (zi_json_str (zi_json_get (r, "name")), name) == 0) {
            const zi_json_t *v = zi_json_get (r, key);
            return zi_json_type (v) == ZI_JSON_BOOL ? (double)zi_json_bool (v)
                                                    : zi_json_num (v);
        }
    }
    return -1;
}

//  True when the broker sees every exec replica and aggregator of the plan
//  live.
static bool
s_all_live (void)
{
    zi_json_t *stats = s_stats ();
    size_t live = 0, want = 0;
    const zi_json_t *segs = zi_json_get (stats, "segments");
    for (size_t s = 0; s < s_plan->n_segments; s++) {
        want += s_plan->segments[s].n_replicas;
        const zi_json_t *reps = zi_json_get (zi_json_at (segs, s), "replicas");
        for (size_t i = 0; i < zi_json_size (reps); i++) {
            live += zi_json_bool (zi_json_get (zi_json_at (reps, i), "live"));
        }
    }
    const zi_plan_stage_t *agg = zi_plan_find_stage (s_plan, ZI_PLAN_STAGE_AGGREGATE);
    want += agg ? agg->n_replicas : 0;
    const zi_json_t *aggs = zi_json_get (stats, "aggregators");
    for (size_t i = 0; i < zi_json_size (aggs); i++) {
        live += zi_json_bool (zi_json_get (zi_json_at (aggs, i), "live"));
    }
    zi_json_destroy (&stats);
    return live == want;
}

//  ---------------------------------------------------------------------
//  Tests

Test (pipeline, fashion_mnist_answers_equal_the_engine_bit_for_bit)
{
    //  2 segments, replicas of unequal capacity, micro-batches of 16,
    //  softmax after.
    s_make_plan (S_FASHION, "--replica 0@local:3:3 --replica 0@local:1:1 "
                            "--replica 1@local:2:2 --replica 1@local:1:1 " S_FASHION_PRE
                            " --post softmax "
                            "--micro-batch 16 --max-batch 64 --max-delay-us 0");
    s_up_start ();
    s_engine_t e;
    s_engine_open (&e, S_FASHION);

    //  a request of 12 rows: one task
    zi_tensor_t *x = s_random_u8 (12, 1);
    zi_tensor_t *want = s_engine_run (&e, x);
    zi_msg_t *m = s_ask ("input", x, 0);
    s_assert_reply (m);
    cr_assert_eq (zi_msg_tensor_count (m), 1);
    cr_assert_str_eq (zi_msg_tensor_name (m, 0), "logits");
    s_assert_same_bits (zi_msg_tensor (m, 0), want, "batch 12");
    zi_msg_destroy (&m);
    zi_tensor_destroy (&want);
    zi_tensor_destroy (&x);

    //  a request of 40 rows: micro-batches of rows 0-15, 16-31, 32-39 on
    //  both replicas of each segment, reassembled in order
    x = s_random_u8 (40, 2);
    want = s_engine_run_chunks (&e, x, 16);
    m = s_ask ("input", x, 0);
    s_assert_reply (m);
    s_assert_same_bits (zi_msg_tensor (m, 0), want, "batch 40 in micro-batches of 16");
    zi_msg_destroy (&m);
    zi_json_t *stats = s_stats ();
    double tasks = zi_json_num (
        zi_json_get (zi_json_at (zi_json_get (stats, "segments"), 0), "tasks"));
    cr_assert_eq (tasks, 1 + 3, "%g segment-0 tasks for a batch of 12 and one of 40",
                  tasks);
    zi_json_destroy (&stats);
    zi_tensor_destroy (&want);
    zi_tensor_destroy (&x);
    s_engine_close (&e);
}

Test (pipeline, coalesced_requests_equal_the_engine_bit_for_bit)
{
    //  batch-1 requests coalesced up to 8 at a time (the delay is long, so
    //  a batch leaves full, or at once while segment 0 has room)
    s_make_plan (S_FASHION,
                 "--replica 0@local:1:2 --replica 1@local:1:2 " S_FASHION_PRE
                 " --post softmax --micro-batch 8 --max-batch 8 --max-delay-us 1000000");
    s_up_start ();
    s_engine_t e;
    s_engine_open (&e, S_FASHION);
    zi_tensor_t *x = s_random_u8 (40, 3);
    //  the engine on the same batches of 8 rows
    zi_tensor_t *want = s_engine_run_chunks (&e, x, 8);
    uint64_t ids[40];
    for (int i = 0; i < 40; i++) {
        zi_tensor_t *row = s_rows (x, i, 1);
        ids[i] = s_send ("input", row, 0, 30000);
        zi_tensor_destroy (&row);
    }
    for (int k = 0; k < 40; k++) {
        zi_msg_t *m = s_recv (20000);
        s_assert_reply (m);
        int i = 0;
        while (i < 40 && ids[i] != zi_msg_id (m)) {
            i++;
        }
        cr_assert_lt (i, 40, "an answer to a request never sent");
        ids[i] = 0;
        zi_tensor_t *want1 = s_rows (want, i, 1);
        char what[64];
        snprintf (what, sizeof what, "coalesced batch-1 request %d", i);
        s_assert_same_bits (zi_msg_tensor (m, 0), want1, what);
        zi_tensor_destroy (&want1);
        zi_msg_destroy (&m);
    }
    zi_json_t *stats = s_stats ();
    double tasks = zi_json_num (
        zi_json_get (zi_json_at (zi_json_get (stats, "segments"), 0), "tasks"));
    //  While segment 0 has room a request never waits (the first ones go at
    //  once, and held ones when it frees up); what queues while it is busy
    //  is coalesced: 5 full batches, plus those sent at once.
    cr_assert (tasks >= 5 && tasks <= 20,
               "%g segment-0 tasks for 40 requests coalesced by 8", tasks);
    zi_json_destroy (&stats);
    zi_tensor_destroy (&want);
    zi_tensor_destroy (&x);
    s_engine_close (&e);
}

Test (pipeline, transformer_block_in_two_segments_equals_the_engine_bit_for_bit)
{
    s_make_plan (S_TRANSFORMER "/model.onnx",
                 "--segments 2 --micro-batch 2 --max-batch 4 "
                 "--max-delay-us 0");
    cr_assert_eq (s_plan->n_segments, 2);
    s_up_start ();
    s_engine_t e;
    s_engine_open (&e, S_TRANSFORMER "/model.onnx");
    for (int set = 0; set < 2; set++) {
        char path[512], err[512];
        snprintf (path, sizeof path, "%s/test_data_set_%d/input_0.pb", S_TRANSFORMER,
                  set);
        zi_tensor_t *x = zi_onnx_load_tensor (path, NULL, err, sizeof err);
        cr_assert_not_null (x, "%s", err);
        //  micro-batches of 2 rows
        zi_tensor_t *want = s_engine_run_chunks (&e, x, 2);
        zi_msg_t *m = s_ask ("input", x, 0);
        s_assert_reply (m);
        cr_assert_str_eq (zi_msg_tensor_name (m, 0), "output");
        s_assert_same_bits (zi_msg_tensor (m, 0), want, path);
        zi_msg_destroy (&m);
        zi_tensor_destroy (&want);
        zi_tensor_destroy (&x);
    }
    s_engine_close (&e);
}

//  A batch of MLP inputs, different for each round.
static zi_tensor_t *
s_mlp_input (int round)
{
    zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){ 64, 784 });
    cr_assert_not_null (x);
    float *xf = (float *) x->data;
    for (int64_t i = 0; i < 64 * 784; i++) {
        xf[i] = (float) ((i * 7919 + round * 104729) % 1000) / 500.0f - 1.0f;
    }
    return x;
}

//  The broker's shared-memory counters: references it decoded, blocks it
//  released.
static void
s_shm_counts (double *refs, double *released)
{
    zi_json_t *stats = s_stats ();
    const zi_json_t *tasks = zi_json_get (stats, "tasks");
    *refs = zi_json_num (zi_json_get (tasks, "shm_refs"));
    *released = zi_json_num (zi_json_get (tasks, "shm_released"));
    zi_json_destroy (&stats);
}

Test (pipeline, a_layer_split_across_two_segments_equals_the_engine_bit_for_bit)
{
    //  Whole-layer cuts leave this MLP 63 / 37; the planner splits the
    //  second Gemm across the boundary instead.
    s_make_plan (S_MLP "/model.onnx",
                 "--segments 2 --batch 64 --micro-batch 64 --max-batch 64 "
                 "--max-delay-us 0");
    cr_assert_eq (s_plan->n_segments, 2);
    cr_assert_eq (s_plan->model.n_splits, 1, "the planner did not split a layer");
    s_up_start ();
    s_engine_t e, plain;
    s_engine_open (&e, S_MLP "/model.onnx");
    char err[512];
    plain.graph = zi_onnx_load (S_MLP "/model.onnx", err, sizeof err);
    cr_assert_not_null (plain.graph, "%s", err);
    plain.exec = zi_exec_new (plain.graph, 0, -1, NULL, err, sizeof err);
    cr_assert_not_null (plain.exec, "%s", err);
    for (int round = 0; round < 3; round++) {
        zi_tensor_t *x = s_mlp_input (round);
        zi_tensor_t *want = s_engine_run_chunks (&e, x, 64);
        zi_msg_t *m = s_ask ("input", x, 0);
        s_assert_reply (m);
        s_assert_same_bits (zi_msg_tensor (m, 0), want, "split mlp");
        //  and the unsplit model to rounding
        zi_tensor_t *ref = NULL;
        const zi_tensor_t *ins[1] = { x };
        cr_assert_eq (zi_exec_run (plain.exec, ins, &ref, err, sizeof err), 0, "%s", err);
        const float *a = (const float *) zi_msg_tensor (m, 0)->data, *b = (const float *) ref->data;
        for (int64_t i = 0; i < zi_tensor_count (ref); i++) {
            cr_assert (fabs ((double) a[i] - b[i]) <= 1e-6 + 1e-5 * fabs ((double) b[i]),
                       "element %lld: split %.9g, unsplit %.9g", (long long) i, a[i], b[i]);
        }
        zi_tensor_destroy (&ref);
        zi_msg_destroy (&m);
        zi_tensor_destroy (&want);
        zi_tensor_destroy (&x);
    }
    //  The cut tensors (64 x 1024 and 64 x 640 floats) went through the
    //  workers' shared-memory arenas (zinfer plan --ipc: broker.shm_bytes),
    //  two per request, and each request's input through the broker's: it
    //  released every block (3 x 2 cut tensors + 3 inputs).
    cr_assert_gt (s_plan->broker.shm_bytes, 0);
    double refs, released;
    s_shm_counts (&refs, &released);
    cr_assert_eq (refs, 6, "shared-memory references received: %g (3 requests x 2 cut tensors)",
                  refs);
    cr_assert_eq (released, 9, "blocks released: %g of 9", released);
    s_engine_close (&plain);
    s_engine_close (&e);
}

Test (pipeline, client_inputs_in_shared_memory_are_read_in_place)
{
    //  broker.client_shm: a client of the plan writes each request's input
    //  (64 x 784 floats) into its own arena and sends a reference; segment
    //  0 reads it there. Answers equal the engine's bit for bit, the
    //  client's blocks are free once each answer is in, and the broker
    //  copied no input into its own arena.
    s_make_plan (S_MLP "/model.onnx",
                 "--segments 2 --batch 64 --micro-batch 64 --max-batch 64 --max-delay-us 0");
    s_plan->broker.client_shm = true;
    s_save_plan ();
    s_up_start ();
    char err[512];
    zi_client_t *c = zi_client_new_plan (s_plan, err, sizeof err);
    cr_assert_not_null (c, "%s", err);
    s_engine_t e;
    s_engine_open (&e, S_MLP "/model.onnx");
    const char *names[] = { "input" };
    for (int round = 0; round < 3; round++) {
        zi_tensor_t *x = s_mlp_input (round);
        zi_tensor_t *want = s_engine_run_chunks (&e, x, 64);
        //  Asynchronous: the block is the request's until its answer.
        zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
        cr_assert_eq (zi_client_add_input (c, req, "input", x), 0);
        cr_assert (zi_msg_tensor_shm (req, 0), "the input is not in shared memory");
        uint64_t id = 0;
        cr_assert_eq (zi_client_send (c, &req, &id), 0);
        cr_assert_eq (zi_client_shm_blocks (c), 1);
        zi_msg_t *m = NULL;
        cr_assert_eq (zi_client_recv (c, 20000, &m, err, sizeof err), 0, "%s", err);
        cr_assert_eq (zi_msg_id (m), id);
        s_assert_reply (m);
        s_assert_same_bits (zi_msg_tensor (m, 0), want, "input by reference");
        cr_assert_eq (zi_client_shm_blocks (c), 0, "the block outlived the answer");
        zi_msg_destroy (&m);
        //  Synchronous, the same input: the same answer.
        const zi_tensor_t *ins[] = { x };
        cr_assert_eq (zi_client_infer (c, 1, names, ins, 20000, &m, err, sizeof err), 0, "%s",
                      err);
        s_assert_same_bits (zi_msg_tensor (m, 0), want, "zi_client_infer by reference");
        cr_assert_eq (zi_client_shm_blocks (c), 0);
        zi_msg_destroy (&m);
        zi_tensor_destroy (&want);
        zi_tensor_destroy (&x);
    }
    //  The broker decoded 6 client references and 12 cut tensors, and
    //  released only the cut tensors: without client_shm it would have
    //  copied each input into its own arena and released that too.
    double refs, released;
    s_shm_counts (&refs, &released);
    cr_assert_eq (refs, 18, "references decoded: %g (6 requests x (1 input + 2 cut tensors))",
                  refs);
    cr_assert_eq (released, 12, "blocks released: %g, expected the 12 cut tensors", released);
    zi_client_destroy (&c);
    s_engine_close (&e);
}

Test (pipeline, a_broker_without_client_shm_refuses_client_references)
{
    s_make_plan (S_MLP "/model.onnx",
                 "--segments 2 --batch 64 --micro-batch 64 --max-batch 64 --max-delay-us 0");
    cr_assert (!s_plan->broker.client_shm, "client_shm is opt-in");
    s_up_start ();
    char err[512];
    zi_client_opts_t opts = { .shm_bytes = 1 << 20 };
    zi_client_t *c = zi_client_new_opts (s_plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect,
                                         &opts, err, sizeof err);
    cr_assert_not_null (c, "%s", err);
    zi_tensor_t *x = s_mlp_input (0);
    const char *names[] = { "input" };
    const zi_tensor_t *ins[] = { x };
    zi_msg_t *m = NULL;
    cr_assert_eq (zi_client_infer (c, 1, names, ins, 20000, &m, err, sizeof err),
                  ZI_ERR_INVALID, "%s", err);
    s_assert_error (m, ZI_CODE_BAD_REQUEST, "shared-memory reference is not accepted here");
    cr_assert_eq (zi_client_shm_blocks (c), 0, "the refused request's block is free again");
    zi_msg_destroy (&m);
    zi_client_destroy (&c);
    //  The pipeline goes on serving requests that carry their bytes.
    m = s_ask ("input", x, 0);
    s_assert_reply (m);
    zi_msg_destroy (&m);
    zi_tensor_destroy (&x);
    //  A client that asks for shared memory over tcp is refused at once.
    opts.shm_bytes = 1 << 20;
    cr_assert_null (zi_client_new_opts ("tcp://127.0.0.1:5555", &opts, err, sizeof err));
    cr_assert (strstr (err, "shared memory needs an ipc:// endpoint"), "%s", err);
}

Test (pipeline, a_convolution_split_along_its_rows_equals_the_engine_bit_for_bit)
{
    //  Fashion-MNIST's second convolution split at output row 6 of 14
    //  (--split-axis rows): part A (rows 0-5 and their MaxPool) in segment
    //  0, part B (from its Slice of the input rows it reads) in segment 1.
    //  A row split computes every pixel as the unsplit conv does, so the
    //  pipeline equals the plain model bit for bit.
    s_make_plan (S_FASHION, "--segments 2 --batch 16 --micro-batch 16 --max-batch 16 "
                            "--max-delay-us 0 --split-axis rows " S_FASHION_PRE);
    cr_assert_eq (s_plan->n_segments, 2);
    cr_assert_eq (s_plan->model.n_splits, 1, "the planner did not split a layer");
    cr_assert_eq (s_plan->model.splits[0].axis, ZI_SPLIT_ROWS);
    s_up_start ();
    s_engine_t e;
    char err[512];
    e.graph = zi_onnx_load (S_FASHION, err, sizeof err);      //  unsplit
    cr_assert_not_null (e.graph, "%s", err);
    e.exec = zi_exec_new (e.graph, 0, -1, NULL, err, sizeof err);
    cr_assert_not_null (e.exec, "%s", err);
    for (int round = 0; round < 3; round++) {
        zi_tensor_t *x = s_random_u8 (16, 7 + (unsigned) round);
        zi_tensor_t *want = s_engine_run_chunks (&e, x, 16);
        zi_msg_t *m = s_ask ("input", x, 0);
        s_assert_reply (m);
        s_assert_same_bits (zi_msg_tensor (m, 0), want, "fashion split along rows");
        zi_msg_destroy (&m);
        zi_tensor_destroy (&want);
        zi_tensor_destroy (&x);
    }
    s_engine_close (&e);
}

Test (pipeline, replica_shares_follow_capacity)
{
    //  one segment, R = 3:1 (credits 3:1); batch-1 requests, no coalescing:
    //  one task per request
    s_make_plan (S_FASHION, "--replica 0@local:3:3 --replica 0@local:1:1 " S_FASHION_PRE
                            " --micro-batch 1 --max-batch 1 --max-delay-us 0");
    s_up_start ();
    zi_tensor_t *x = s_random_u8 (1, 2);
    const int total = 2000, window = 32;
    int sent = 0, answered = 0;
    while (answered < total) {
        while (sent < total && sent - answered < window) {
            s_send ("input", x, 0, 30000);
            sent++;
        }
        zi_msg_t *m = s_recv (20000);
        s_assert_reply (m);
        zi_msg_destroy (&m);
        answered++;
    }
    zi_json_t *stats = s_stats ();
    double a = s_replica_stat (stats, 0, "s0r0", "tasks");
    double b = s_replica_stat (stats, 0, "s0r1", "tasks");
    double t = a + b;
    cr_assert_geq (t, total, "%g tasks", t);
    //  within 2% of T * R_i / sum(R)
    cr_assert_leq (fabs (a - t * 0.75), 0.02 * t, "R=3: %g of %g tasks", a, t);
    cr_assert_leq (fabs (b - t * 0.25), 0.02 * t, "R=1: %g of %g tasks", b, t);
    zi_json_destroy (&stats);
    zi_tensor_destroy (&x);
}

Test (pipeline, priority_classes_share_dispatch_by_weight)
{
    //  one replica, credit 1: every dispatch is contended. Classes 4:1
    //  get P = W^2 / sum W^2 = 16/17 and 1/17 while both have work.
    s_make_plan (S_FASHION, "--segments 1 " S_FASHION_PRE
                            " --micro-batch 8 --max-batch 8 --max-delay-us 0");
    for (size_t i = 0; i < s_plan->priorities.n_classes; i++) {
        free (s_plan->priorities.classes[i].name);
    }
    free (s_plan->priorities.classes);
    free (s_plan->priorities.default_class);
    s_plan->priorities.default_class = NULL;
    s_plan->priorities.mode = ZI_PLAN_PRIORITY_WEIGHTED;
    s_plan->priorities.classes = calloc (2, sizeof *s_plan->priorities.classes);
    s_plan->priorities.n_classes = 2;
    s_plan->priorities.classes[0] = (zi_plan_class_t){ strdup ("high"), 4.0 };
    s_plan->priorities.classes[1] = (zi_plan_class_t){ strdup ("low"), 1.0 };
    s_save_plan ();
    s_up_start ();
    //  both classes flood: all requests sent at once, alternating
    const int per_class = 300;
    zi_tensor_t *x = s_random_u8 (8, 3);
    uint64_t first_id = 0;
    for (int i = 0; i < 2 * per_class; i++) {
        uint64_t id = s_send ("input", x, i % 2, 60000);
        first_id = i == 0 ? id : first_id;
    }
    //  Completion order. Ids are consecutive, so id parity is the class.
    //  Count while both classes have work queued: after the first 30
    //  answers (requests that found the pipeline idle go straight through,
    //  in arrival order, before any queue builds up) and until 90% of the
    //  high class is answered.
    int high = 0, low = 0, answered = 0;
    while (answered < 2 * per_class) {
        zi_msg_t *m = s_recv (30000);
        s_assert_reply (m);
        bool is_high = (zi_msg_id (m) - first_id) % 2 == 0;
        zi_msg_destroy (&m);
        answered++;
        if (answered > 30 && high < per_class * 9 / 10) {
            high += is_high;
            low += !is_high;
        }
    }
    double share = (double)high / (double)(high + low);
    cr_log_info ("high class share %.4f (%d high, %d low); 16/17 = 0.9412", share, high,
                 low);
    cr_assert (fabs (share - 16.0 / 17.0) <= 0.03,
               "high class share %.3f (%d high, %d low), "
               "expected 16/17 = 0.941",
               share, high, low);
    zi_tensor_destroy (&x);
}

Test (pipeline, overload_deadlines_and_bad_requests_get_their_errors)
{
    s_make_plan (S_FASHION, "--replica 0@local:1:1 --replica 1@local:1:1 " S_FASHION_PRE
                            " --micro-batch 16 --max-batch 64 --max-delay-us 1000");
    s_plan->broker.queue_limit = 4;
    s_save_plan ();
    s_up_start ();
    s_engine_t e;
    s_engine_open (&e, S_FASHION);

    //  BUSY: a burst of 60 requests of 64 rows against a limit of 4 in
    //  flight. Every request gets exactly one answer.
    zi_tensor_t *x = s_random_u8 (64, 4);
    const int burst = 60;
    uint64_t ids[60];
    int answers[60] = { 0 };
    for (int i = 0; i < burst; i++) {
        ids[i] = s_send ("input", x, 0, 30000);
    }
    int busy = 0, ok = 0;
    for (int k = 0; k < burst; k++) {
        zi_msg_t *m = s_recv (20000);
        int i = 0;
        while (i < burst && ids[i] != zi_msg_id (m)) {
            i++;
        }
        cr_assert_lt (i, burst, "an answer to a request never sent");
        answers[i]++;
        if (zi_msg_cmd (m) == ZI_CMD_REPLY) {
            ok++;
        }
        else {
            s_assert_error (m, ZI_CODE_BUSY, NULL);
            busy++;
        }
        zi_msg_destroy (&m);
    }
    for (int i = 0; i < burst; i++) {
        cr_assert_eq (answers[i], 1, "request %d got %d answers", i, answers[i]);
    }
    cr_log_info ("burst of %d: %d answered, %d BUSY", burst, ok, busy);
    cr_assert_gt (busy, 0, "no BUSY under overload");
    cr_assert_gt (ok, 0, "nothing admitted");
    zi_msg_t *extra = NULL;
    cr_assert_eq (zi_client_recv (s_client, 300, &extra, NULL, 0), ZI_ERR_TIMEOUT,
                  "a second answer arrived");

    //  TIMEOUT: a 1 ms deadline on a batch that takes far longer
    zi_tensor_t *big = s_random_u8 (2048, 5);
    zi_msg_t *m = s_ask ("input", big, 1);
    s_assert_error (m, ZI_CODE_TIMEOUT, NULL);
    zi_msg_destroy (&m);
    zi_tensor_destroy (&big);

    //  BAD_REQUEST: a wrong shape, a wrong dtype, a wrong name
    zi_tensor_t *shape = zi_tensor_new (ZI_DT_U8, 3, (int64_t[]){ 2, 28, 28 });
    m = s_ask ("input", shape, 0);
    s_assert_error (m, ZI_CODE_BAD_REQUEST, "shape");
    zi_msg_destroy (&m);
    zi_tensor_destroy (&shape);
    zi_tensor_t *dtype = zi_tensor_new (ZI_DT_F32, 4, (int64_t[]){ 2, 28, 28, 1 });
    m = s_ask ("input", dtype, 0);
    s_assert_error (m, ZI_CODE_BAD_REQUEST, "dtype");
    zi_msg_destroy (&m);
    zi_tensor_destroy (&dtype);

    //  a malformed header from a raw DEALER: not msgpack at all, and a
    //  REQUEST whose header announces a tensor frame that is not there
    zsock_t *raw = zsock_new_dealer (s_plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect);
    cr_assert_not_null (raw);
    zsock_set_rcvtimeo (raw, 10000);
    zstr_send (raw, "this is not msgpack");
    zi_msg_t *answer = NULL;
    char err[512];
    cr_assert_eq (zi_msg_recv (raw, &answer, err, sizeof err), 0, "%s", err);
    s_assert_error (answer, ZI_CODE_BAD_REQUEST, NULL);
    zi_msg_destroy (&answer);
    zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
    zi_msg_set_id (req, 7);
    cr_assert_eq (zi_msg_add_tensor_copy (req, "input", x), 0);
    zmsg_t *frames = NULL;
    cr_assert_eq (zi_msg_encode (&req, &frames), 0);
    zframe_t *data = zmsg_last (frames);
    zmsg_remove (frames, data);
    zframe_destroy (&data);
    cr_assert_eq (zmsg_send (&frames, raw), 0);
    cr_assert_eq (zi_msg_recv (raw, &answer, err, sizeof err), 0, "%s", err);
    s_assert_error (answer, ZI_CODE_BAD_REQUEST, NULL);
    zi_msg_destroy (&answer);
    zsock_destroy (&raw);

    //  ... and the broker still answers correctly
    zi_tensor_t *want = s_engine_run (&e, x);
    m = s_ask ("input", x, 0);
    s_assert_reply (m);
    s_assert_same_bits (zi_msg_tensor (m, 0), want, "after the bad requests");
    zi_msg_destroy (&m);
    zi_tensor_destroy (&want);
    zi_tensor_destroy (&x);
    s_engine_close (&e);
}

//  The pid of the child of zinfer up started with --name name, or 0.
static pid_t
s_child_pid (const char *name)
{
    DIR *d = opendir ("/proc");
    cr_assert_not_null (d);
    struct dirent *ent;
    pid_t found = 0;
    while (!found && (ent = readdir (d))) {
        pid_t pid = (pid_t)atoi (ent->d_name);
        char path[64], buf[4096];
        if (pid <= 0) {
            continue;
        }
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
        if (!paren || sscanf (paren + 1, " %c %d", &state, &ppid) != 2 || ppid != s_up
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
        //  argv is NUL-separated: look for "--name" NUL name NUL
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

Test (pipeline, up_restarts_a_killed_worker_and_requests_keep_completing)
{
    s_make_plan (S_FASHION, "--replica 0@local:1:1 --replica 0@local:1:1 "
                            "--replica 1@local:1:1 " S_FASHION_PRE
                            " --micro-batch 16 --max-batch 16 --max-delay-us 0");
    //  a dead worker is noticed after 3 x 100 ms
    s_plan->broker.heartbeat_interval_ms = 100;
    s_save_plan ();
    s_up_start ();
    zi_tensor_t *x = s_random_u8 (16, 6);
    for (int i = 0; i < 10; i++) {
        zi_msg_t *m = s_ask ("input", x, 20000);
        s_assert_reply (m);
        zi_msg_destroy (&m);
    }
    pid_t victim = s_child_pid ("s0r1");
    cr_assert_gt (victim, 0, "no s0r1 under zinfer up");
    zi_json_t *stats = s_stats ();
    double before = s_replica_stat (stats, 0, "s0r1", "tasks");
    zi_json_destroy (&stats);
    cr_assert_eq (kill (victim, SIGKILL), 0);

    //  requests go on: 4 in flight, 60 in all, every one answered
    int sent = 0, answered = 0;
    while (answered < 60) {
        while (sent < 60 && sent - answered < 4) {
            s_send ("input", x, 0, 20000);
            sent++;
        }
        zi_msg_t *m = s_recv (20000);
        s_assert_reply (m);
        zi_msg_destroy (&m);
        answered++;
    }
    //  the worker is back, under a new pid, and takes its share again
    char log[256];
    snprintf (log, sizeof log, "%s/up.log", s_tmp);
    int64_t end = s_now_ms () + 15000;
    pid_t reborn = 0;
    double after = before, live = 0;
    while (s_now_ms () < end && !(reborn && live > 0 && after > before)) {
        reborn = s_child_pid ("s0r1");
        zi_msg_t *m = s_ask ("input", x, 20000);
        s_assert_reply (m);
        zi_msg_destroy (&m);
        stats = s_stats ();
        after = s_replica_stat (stats, 0, "s0r1", "tasks");
        live = s_replica_stat (stats, 0, "s0r1", "live");
        zi_json_destroy (&stats);
    }
    cr_assert (reborn > 0 && reborn != victim, "s0r1 was not restarted:\n%s",
               s_slurp (log));
    cr_assert (strstr (s_slurp (log), "UP-RESTART: s0r1"), "%s", s_slurp (log));
    cr_assert_gt (live, 0, "the restarted s0r1 is not live at the broker");
    cr_assert_gt (after, before, "the restarted s0r1 takes no tasks");
    zi_tensor_destroy (&x);
}

//  Run `zinfer ARGS` (a shell command line after the program name), with
//  its stdout + stderr into out; returns the exit status.
static int
s_zinfer (char *out, size_t outlen, const char *fmt, ...)
{
    char args[2048], cmd[2600];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (args, sizeof args, fmt, ap);
    va_end (ap);
    snprintf (cmd, sizeof cmd, "%s/zinfer %s 2>&1", ZI_BINARY_DIR, args);
    FILE *p = popen (cmd, "r");
    cr_assert_not_null (p);
    size_t n = fread (out, 1, outlen - 1, p);
    out[n] = 0;
    int status = pclose (p);
    return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

//  An IDX file: magic 0 0 0x08 (u8) rank, then the dims big-endian, then
//  the bytes.
static void
s_write_idx (const char *path, const zi_tensor_t *t)
{
    FILE *f = fopen (path, "wb");
    cr_assert_not_null (f);
    uint8_t head[4] = { 0, 0, 0x08, (uint8_t)t->rank };
    fwrite (head, 1, 4, f);
    for (int d = 0; d < t->rank; d++) {
        uint32_t v = (uint32_t)t->ne[d];
        uint8_t be[4]
            = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
        fwrite (be, 1, 4, f);
    }
    fwrite (t->data, 1, t->nbytes, f);
    fclose (f);
}

Test (pipeline, the_operator_commands_talk_to_the_pipeline)
{
    s_make_plan (
        S_FASHION,
        "--replica 0@local:3:3 --replica 0@local:1:1 --replica 1@local:1:1 " S_FASHION_PRE
        " --micro-batch 16 --max-batch 16 --max-delay-us 0");
    s_up_start ();
    s_engine_t e;
    s_engine_open (&e, S_FASHION);
    static char out[1 << 16];
    char path[512], err[512];

    //  infer: a raw file in, the outputs printed and written as .npy
    zi_tensor_t *x = s_random_u8 (2, 7);
    snprintf (path, sizeof path, "%s/x.raw", s_tmp);
    FILE *f = fopen (path, "wb");
    fwrite (x->data, 1, x->nbytes, f);
    fclose (f);
    cr_assert_eq (s_zinfer (out, sizeof out,
                            "infer --plan %s input=%s:uint8:2,28,28,1 --out %s/o",
                            s_plan_path, path, s_tmp),
                  0, "%s", out);
    cr_assert (strstr (out, "logits: float32 [2,10] = ["), "%s", out);
    zi_tensor_t *want = s_engine_run (&e, x);
    zi_tensor_t *got = NULL;
    snprintf (path, sizeof path, "%s/o/logits.npy", s_tmp);
    cr_assert_eq (zi_npy_read (path, &got, err, sizeof err), 0, "%s", err);
    s_assert_same_bits (got, want, "zinfer infer --out");
    zi_tensor_destroy (&got);
    zi_tensor_destroy (&want);
    //  ... and an error: the wrong dtype, exit status 1
    snprintf (path, sizeof path, "%s/x.raw", s_tmp);
    cr_assert_eq (s_zinfer (out, sizeof out, "infer --plan %s input=%s:int8:2,28,28,1",
                            s_plan_path, path),
                  1, "%s", out);
    cr_assert (strstr (out, "error 400 BAD_REQUEST: "), "%s", out);
    zi_tensor_destroy (&x);

    //  infer --idx: 100 images, 16 a request; labels = the engine's classes
    zi_tensor_t *images = zi_tensor_new (ZI_DT_U8, 3, (int64_t[]){ 100, 28, 28 });
    zi_tensor_t *labels = zi_tensor_new (ZI_DT_U8, 1, (int64_t[]){ 100 });
    x = s_random_u8 (100, 8);
    memcpy (images->data, x->data, x->nbytes);
    want = s_engine_run_chunks (&e, x, 16);
    for (int i = 0; i < 100; i++) {
        const float *row = (const float *)want->data + i * 10;
        int arg = 0;
        for (int c = 1; c < 10; c++) {
            arg = row[c] > row[arg] ? c : arg;
        }
        ((uint8_t *)labels->data)[i] = (uint8_t)arg;
    }
    snprintf (path, sizeof path, "%s/images.idx", s_tmp);
    s_write_idx (path, images);
    snprintf (path, sizeof path, "%s/labels.idx", s_tmp);
    s_write_idx (path, labels);
    cr_assert_eq (
        s_zinfer (out, sizeof out,
                  "infer --plan %s --idx %s/images.idx --labels "
                  "%s/labels.idx --batch 16 --concurrency 3 --predictions %s/pred.txt",
                  s_plan_path, s_tmp, s_tmp, s_tmp),
        0, "%s", out);
    cr_assert (strstr (out, "accuracy: 100.00% (100 / 100)"), "%s", out);
    cr_assert (strstr (out, "requests: 7 answered"), "%s", out);
    snprintf (path, sizeof path, "%s/pred.txt", s_tmp);
    f = fopen (path, "r");
    cr_assert_not_null (f);
    for (int i = 0; i < 100; i++) {
        int c = -1;
        cr_assert_eq (fscanf (f, "%d", &c), 1);
        cr_assert_eq (c, ((uint8_t *)labels->data)[i], "image %d", i);
    }
    fclose (f);

    //  bench: a count of requests, random inputs of the plan's shape
    cr_assert_eq (s_zinfer (out, sizeof out,
                            "bench --plan %s --count 60 --concurrency 4 "
                            "--batch 2",
                            s_plan_path),
                  0, "%s", out);
    cr_assert (strstr (out, "requests: 60 answered"), "%s", out);
    cr_assert (strstr (out, "throughput: "), "%s", out);
    cr_assert (strstr (out, "latency: p50 "), "%s", out);

    //  stats: the replica table with the predicted shares
    cr_assert_eq (s_zinfer (out, sizeof out, "stats --plan %s", s_plan_path), 0, "%s",
                  out);
    cr_assert (strstr (out, "segments[0].replicas:"), "%s", out);
    cr_assert (strstr (out, "R/sum(R)"), "%s", out);
    cr_assert (strstr (out, "75.0%"), "%s", out);
    cr_assert_eq (s_zinfer (out, sizeof out,
                            "stats --endpoint ipc://%s/nothing-here "
                            "--timeout 300",
                            s_tmp),
                  1, "%s", out);
    cr_assert (strstr (out, "no answer (is the broker up?)"), "%s", out);

    zi_tensor_destroy (&want);
    zi_tensor_destroy (&x);
    zi_tensor_destroy (&images);
    zi_tensor_destroy (&labels);
    s_engine_close (&e);
}
