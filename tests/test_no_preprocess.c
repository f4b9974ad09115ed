/*  test_no_preprocess.c - pipelines whose plan has no preprocess stage,
    with the real programs under `zinfer up` on ipc endpoints.

    A model whose clients already send its dtype and shape needs no
    preprocess process: `zinfer plan` writes none unless --pre,
    --input-dtype or --input-shape ask for work, and the broker then checks
    every REQUEST against model.inputs itself and sends it straight to
    partition. What is checked:

    - the same plan with and without a (pass-through) preprocess stage
      answers the same requests with bit-identical outputs, and only the
      plan with the stage runs a preprocess process (STATS, `ready (N
      processes)`);
    - without preprocess, bad requests (wrong dtype, wrong shape, wrong rank,
      a fixed batch dimension not met, a missing or an extra tensor, inputs
      whose batch sizes disagree, a tensor frame shorter than its header
      says) get BAD_REQUEST from the broker naming the tensor and what is
      wrong, are never admitted, and a good request is answered afterwards.

    (A request lost in the partition stage of such a plan is re-injected:
    tests/test_broker.c, lost_in_partition_reinjected_without_preprocess.)
    // ctest-timeout: 180
*/
#include "zt_procs.h"

#define S_ADD "/usr/share/libonnx-testdata/data/node/test_add/model.onnx"

TestSuite (no_preprocess, .init = zt_setup, .fini = zt_teardown, .timeout = 120);

//  ---------------------------------------------------------------------
//  Helpers

static char s_log[256];

//  `zinfer up PLAN` (log in zt_dir/up.log, appended); returns its pid once
//  it printed "zinfer up: ready (N processes)", with that line in *ready.
static pid_t
s_up (const char *plan_path, char *ready, size_t len)
{
    snprintf (s_log, sizeof s_log, "%s/up.log", zt_dir);
    //  Only this run's line counts: the log keeps earlier runs.
    FILE *f = fopen (s_log, "a");
    cr_assert_not_null (f);
    fprintf (f, "---- zinfer up %s\n", plan_path);
    long from = ftell (f);
    fclose (f);
    pid_t pid = zt_spawn_prog (s_log, "zinfer", "up", plan_path, NULL, NULL, NULL);
    int64_t end = zt_now_ms () + 30000;
    for (;;) {
        cr_assert (zt_alive (pid), "zinfer up exited:\n%s", zt_tail (s_log, 3000));
        cr_assert (zt_now_ms () < end, "zinfer up not ready after 30 s:\n%s",
                   zt_tail (s_log, 3000));
        f = fopen (s_log, "r");
        cr_assert_not_null (f);
        fseek (f, from, SEEK_SET);
        char line[1024];
        bool found = false;
        while (!found && fgets (line, sizeof line, f)) {
            found = strncmp (line, "zinfer up: ready", 16) == 0;
        }
        fclose (f);
        if (found) {
            snprintf (ready, len, "%.200s", line);
            return pid;
        }
        usleep (20000);
    }
}

static void
s_down (pid_t pid)
{
    int status = 0;
    cr_assert_geq (zt_stop (pid, SIGTERM, 15000, &status), 0,
                   "zinfer up did not stop on SIGTERM:\n%s", zt_tail (s_log, 3000));
}

//  A client of the plan's broker, once every exec replica and stage
//  replica is live.
static zi_client_t *
s_client (const zi_plan_t *plan, int replicas, int stages)
{
    char err[512];
    zi_client_t *client = zi_client_new_plan (plan, err, sizeof err);
    cr_assert_not_null (client, "%s", err);
    cr_assert_eq (zi_client_wait_ready (client, 20000), 0, "the broker is not ready:\n%s",
                  zt_tail (s_log, 3000));
    zt_wait_all_live (client, replicas, stages, 20000, s_log);
    return client;
}

//  A tensor of the given shape, filled from seed (no two seeds alike).
static zi_tensor_t *
s_tensor (zi_dtype_t dtype, int rank, const int64_t *shape, uint32_t seed)
{
    zi_tensor_t *t = zi_tensor_new (dtype, rank, shape);
    cr_assert_not_null (t);
    uint32_t x = 2654435761u * (seed + 1);
    for (size_t i = 0; i < t->nbytes / zi_dtype_size (dtype); i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        if (dtype == ZI_DT_F32) {
            ((float *)t->data)[i] = (float)(x % 20001) / 10000.0f - 1.0f;
        }
        else if (dtype == ZI_DT_F64) {
            ((double *)t->data)[i] = (double)(x % 20001) / 10000.0 - 1.0;
        }
        else {
            memset ((uint8_t *)t->data + i * zi_dtype_size (dtype), (int)(x & 0xff),
                    zi_dtype_size (dtype));
        }
    }
    return t;
}

//  Send a REQUEST of n named tensors (copied) and wait for its answer.
static zi_msg_t *
s_ask (zi_client_t *client, int n, const char *const *names, zi_tensor_t *const *ts)
{
    zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
    cr_assert_not_null (req);
    for (int i = 0; i < n; i++) {
        cr_assert_eq (zi_msg_add_tensor_copy (req, names[i], ts[i]), 0);
    }
    uint64_t id = 0;
    cr_assert_eq (zi_client_send (client, &req, &id), 0);
    zi_msg_t *answer = NULL;
    char err[512];
    cr_assert_eq (zi_client_recv (client, 20000, &answer, err, sizeof err), 0,
                  "no answer: %s\n%s", err, zt_tail (s_log, 3000));
    cr_assert_eq (zi_msg_id (answer), id);
    return answer;
}

static void
s_assert_bad_request (zi_msg_t **answer_p, const char *says, const char *what)
{
    zi_msg_t *m = *answer_p;
    cr_assert_eq (zi_msg_cmd (m), ZI_CMD_ERROR, "%s: expected an ERROR, got %s", what,
                  zi_cmd_name (zi_msg_cmd (m)));
    const char *reason = zi_msg_reason (m) ? zi_msg_reason (m) : "";
    cr_assert_eq (zi_msg_code (m), ZI_CODE_BAD_REQUEST, "%s: code %d (%s)", what,
                  zi_msg_code (m), reason);
    cr_assert (strstr (reason, says), "%s:\n  reason %s\n  wanted %s", what, reason,
               says);
    cr_log_info ("%s: 400 BAD_REQUEST: %s", what, reason);
    zi_msg_destroy (answer_p);
}

//  ---------------------------------------------------------------------
//  The same answers with and without a preprocess stage

#define S_ROUNDS 4

Test (no_preprocess, answers_are_bit_identical_with_and_without_a_preprocess_stage)
{
    //  Fashion-MNIST takes float32 [N,1,28,28]: clients that send that need
    //  no preprocess, and `zinfer plan` writes none. Micro-batches of 16
    //  and no coalescing, so both runs compute the same row groups; two
    //  replicas of one segment, which compute alike.
    char path[256];
    zi_plan_t *plan = zt_plan_make (path, sizeof path, ZT_FASHION,
                                    "--replica 0@local:1:2 --replica 0@local:1:2 "
                                    "--micro-batch 16 --max-batch 16 --max-delay-us 0 "
                                    "--post softmax");
    cr_assert_null (zi_plan_find_stage (plan, ZI_PLAN_STAGE_PREPROCESS),
                    "zinfer plan wrote a preprocess stage that has nothing to do");
    cr_assert_eq (plan->n_stages, 2);
    const int64_t rows[S_ROUNDS] = { 1, 12, 40, 16 };
    zi_tensor_t *inputs[S_ROUNDS];
    for (int k = 0; k < S_ROUNDS; k++) {
        inputs[k]
            = s_tensor (ZI_DT_F32, 4, (int64_t[]){ rows[k], 1, 28, 28 }, (uint32_t)k);
    }
    zi_tensor_t *answers[2][S_ROUNDS] = { { NULL } };
    const char *names[1] = { "input" };
    for (int with_pre = 0; with_pre < 2; with_pre++) {
        if (with_pre) {
            //  The plan as `zinfer plan` wrote it before: a built-in
            //  preprocess stage that declares the model's inputs as they
            //  are and transforms nothing.
            zi_plan_stage_t *pre = ZI_PLAN_PUSH (plan->stages, plan->n_stages);
            cr_assert_not_null (pre);
            pre->kind = ZI_PLAN_STAGE_PREPROCESS;
            cr_assert_not_null (zi_plan_add_replica (&pre->replicas, &pre->n_replicas,
                                                     "pre0", "local", 1));
            zi_plan_io_t *io = ZI_PLAN_PUSH (pre->tensors, pre->n_tensors);
            cr_assert_not_null (io);
            io->tensor = plan->model.inputs[0];
            io->tensor.name = strdup (plan->model.inputs[0].name);
            zt_plan_save (plan, path);
        }
        char ready[256];
        pid_t up = s_up (path, ready, sizeof ready);
        //  broker, 2 exec workers, partition, aggregate (+ preprocess)
        const char *want = with_pre ? "zinfer up: ready (6 processes)"
                                    : "zinfer up: ready (5 processes)";
        cr_assert (strncmp (ready, want, strlen (want)) == 0, "%s, expected %s", ready,
                   want);
        zi_client_t *client = s_client (plan, 2, with_pre ? 3 : 2);
        for (int k = 0; k < S_ROUNDS; k++) {
            zi_msg_t *m = s_ask (client, 1, names, &inputs[k]);
            cr_assert_eq (zi_msg_cmd (m), ZI_CMD_REPLY, "%s: request %d: %s %s",
                          with_pre ? "with preprocess" : "without", k,
                          zi_cmd_name (zi_msg_cmd (m)),
                          zi_msg_reason (m) ? zi_msg_reason (m) : "");
            const zi_tensor_t *y = zi_msg_tensor_find (m, "logits");
            cr_assert_not_null (y);
            cr_assert_eq (y->ne[0], rows[k]);
            answers[with_pre][k] = zi_tensor_dup (y);
            zi_msg_destroy (&m);
        }
        //  Which way the requests went: through a preprocess process, or
        //  from the broker straight on (to partition, or to segment 0 when
        //  partition has nothing to do for them).
        zt_stats_t s;
        cr_assert (zt_stats (client, &s, 5000));
        int64_t pre_sent = zt_stat (&s, "stages.preprocess.sent");
        int64_t pre_back = zt_stat (&s, "stages.preprocess.received");
        int64_t admitted = zt_stat (&s, "requests.admitted");
        zt_stats_done (&s);
        cr_assert_eq (admitted, S_ROUNDS);
        if (with_pre) {
            cr_assert (pre_sent == S_ROUNDS && pre_back == S_ROUNDS,
                       "preprocess got %lld requests and sent %lld back",
                       (long long)pre_sent, (long long)pre_back);
        }
        else {
            cr_assert (pre_sent == 0 && pre_back == 0,
                       "preprocess got %lld requests and sent %lld back",
                       (long long)pre_sent, (long long)pre_back);
            cr_assert_eq (zt_child (up, "zinfer-preprocess", NULL), 0,
                          "a preprocess process runs for a plan without one");
        }
        zi_client_destroy (&client);
        s_down (up);
    }
    for (int k = 0; k < S_ROUNDS; k++) {
        cr_assert (
            zt_same_bits (answers[0][k], answers[1][k]),
            "request %d (%lld rows): the answers with and without preprocess differ", k,
            (long long)rows[k]);
        zi_tensor_destroy (&answers[0][k]);
        zi_tensor_destroy (&answers[1][k]);
        zi_tensor_destroy (&inputs[k]);
    }
    zi_plan_destroy (&plan);
}

//  ---------------------------------------------------------------------
//  Bad requests, judged by the broker

Test (no_preprocess, the_broker_rejects_bad_requests_by_name_and_keeps_serving)
{
    //  ONNX's test_add: sum = x + y, both float32 [3,4,5] (a fixed batch of
    //  3), so a missing tensor, disagreeing batches and a fixed dimension
    //  can all be tried.
    if (access (S_ADD, R_OK) != 0) {
        cr_skip_test ("%s is not installed (Debian libonnx-testdata)", S_ADD);
    }
    char path[256];
    zi_plan_t *plan = zt_plan_make (path, sizeof path, S_ADD,
                                    "--segments 1 --micro-batch 16 --max-batch 16 "
                                    "--max-delay-us 0");
    cr_assert_null (zi_plan_find_stage (plan, ZI_PLAN_STAGE_PREPROCESS));
    char ready[256];
    pid_t up = s_up (path, ready, sizeof ready);
    zi_client_t *client = s_client (plan, 1, 2);
    const int64_t good[3] = { 3, 4, 5 };
    zi_tensor_t *x = s_tensor (ZI_DT_F32, 3, good, 1);
    zi_tensor_t *y = s_tensor (ZI_DT_F32, 3, good, 2);
    zi_tensor_t *x64 = s_tensor (ZI_DT_F64, 3, good, 3);
    zi_tensor_t *wide = s_tensor (ZI_DT_F32, 3, (int64_t[]){ 3, 4, 6 }, 4);
    zi_tensor_t *flat = s_tensor (ZI_DT_F32, 2, (int64_t[]){ 3, 20 }, 5);
    zi_tensor_t *x2 = s_tensor (ZI_DT_F32, 3, (int64_t[]){ 2, 4, 5 }, 6);
    zi_tensor_t *y2 = s_tensor (ZI_DT_F32, 3, (int64_t[]){ 2, 4, 5 }, 7);
    const struct {
        int n;
        const char *names[3];
        zi_tensor_t *ts[3];
        const char *says;
        const char *what;
    } bad[] = {
        { 2,
          { "x", "y" },
          { x64, y },
          "input 'x': dtype float64, the model takes float32",
          "wrong dtype" },
        { 2,
          { "x", "y" },
          { x, wide },
          "input 'y': shape [3,4,6], the model takes [3,4,5]",
          "wrong shape" },
        { 2,
          { "x", "y" },
          { flat, y },
          "input 'x': shape [3,20], the model takes [3,4,5]",
          "wrong rank" },
        { 2,
          { "x", "y" },
          { x2, y2 },
          "input 'x': shape [2,4,5], the model takes [3,4,5]",
          "a fixed batch dimension not met" },
        { 1,
          { "x" },
          { x },
          "missing input 'y' (the model takes 'x', 'y')",
          "a missing tensor" },
        { 3,
          { "x", "y", "z" },
          { x, y, y },
          "unknown input 'z' (the model takes 'x', 'y')",
          "an extra tensor" },
        { 2,
          { "x", "y" },
          { x, y2 },
          "tensor 'y' has 2 rows but 'x' has 3",
          "batch sizes that disagree" },
    };
    const int nbad = (int)(sizeof bad / sizeof bad[0]);
    for (int i = 0; i < nbad; i++) {
        zi_msg_t *m = s_ask (client, bad[i].n, bad[i].names, bad[i].ts);
        s_assert_bad_request (&m, bad[i].says, bad[i].what);
    }
    //  A REQUEST whose header announces a [3,4,5] float32 frame that holds
    //  fewer bytes: the decoder refuses it before anything is allocated.
    zsock_t *raw = zsock_new_dealer (plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect);
    cr_assert_not_null (raw);
    zsock_set_rcvtimeo (raw, 10000);
    zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
    zi_msg_set_id (req, 99);
    cr_assert_eq (zi_msg_add_tensor_copy (req, "x", x), 0);
    cr_assert_eq (zi_msg_add_tensor_copy (req, "y", y), 0);
    zmsg_t *frames = NULL;
    cr_assert_eq (zi_msg_encode (&req, &frames), 0);
    zframe_t *last = zmsg_last (frames);
    zmsg_remove (frames, last);
    zframe_destroy (&last);
    zmsg_addmem (frames, "short", 5);
    cr_assert_eq (zmsg_send (&frames, raw), 0);
    zi_msg_t *answer = NULL;
    char err[512];
    cr_assert_eq (zi_msg_recv (raw, &answer, err, sizeof err), 0, "%s", err);
    cr_assert_eq (zi_msg_cmd (answer), ZI_CMD_ERROR);
    cr_assert_eq (zi_msg_code (answer), ZI_CODE_BAD_REQUEST, "%s",
                  zi_msg_reason (answer) ? zi_msg_reason (answer) : "");
    cr_log_info ("a short tensor frame: 400 BAD_REQUEST: %s", zi_msg_reason (answer));
    zi_msg_destroy (&answer);
    zsock_destroy (&raw);

    //  ... and the pipeline still serves: x + y, exactly.
    const char *names[2] = { "x", "y" };
    zi_tensor_t *xy[2] = { x, y };
    zi_msg_t *m = s_ask (client, 2, names, xy);
    cr_assert_eq (zi_msg_cmd (m), ZI_CMD_REPLY, "%s %s", zi_cmd_name (zi_msg_cmd (m)),
                  zi_msg_reason (m) ? zi_msg_reason (m) : "");
    const zi_tensor_t *sum = zi_msg_tensor_find (m, "sum");
    cr_assert (sum && sum->dtype == ZI_DT_F32 && zi_tensor_same_shape (sum, x));
    for (int i = 0; i < 60; i++) {
        float want = ((const float *)x->data)[i] + ((const float *)y->data)[i];
        cr_assert_eq (((const float *)sum->data)[i], want, "element %d", i);
    }
    zi_msg_destroy (&m);
    //  The broker judged them all: nothing bad was admitted into the pipeline.
    zt_stats_t s;
    cr_assert (zt_stats (client, &s, 5000));
    cr_assert_eq (zt_stat (&s, "requests.admitted"), 1);
    cr_assert_eq (zt_stat (&s, "requests.errors.BAD_REQUEST"), nbad + 1);
    zt_stats_done (&s);

    zi_tensor_destroy (&x);
    zi_tensor_destroy (&y);
    zi_tensor_destroy (&x64);
    zi_tensor_destroy (&wide);
    zi_tensor_destroy (&flat);
    zi_tensor_destroy (&x2);
    zi_tensor_destroy (&y2);
    zi_client_destroy (&client);
    s_down (up);
    zi_plan_destroy (&plan);
}
