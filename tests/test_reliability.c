/*  test_reliability.c - issue #5, reliability: no request lost, none
    answered twice, nothing hangs, bounded memory under overload.

    The client's retry helper against a scripted fake broker (same id on
    every attempt, backoff, a lost answer, a non-retryable error, the
    total bound); then the real programs on ipc endpoints, Fashion-MNIST
    in 2 segments x 2 replicas, started by `zinfer up` (which restarts
    what dies):

      * answers kept by the broker are sent again to a client that retries
        with the same id (also on a new connection), not run again;
      * (a) >= 2,000 requests while exec workers are SIGKILLed at random
        moments: 0 lost, 0 duplicated, every answer bit-identical to the
        single-process engine at the same batch size;
      * (b) the broker SIGKILLed and restarted mid-run, clients retrying
        with the same ids: 0 lost, 0 duplicated; every worker, stage and
        aggregator registers again;
      * 3x sustained overload: BUSY answers, every request answered, the
        broker's and workers' RSS bounded, latency back to normal after;
      * SIGTERM: every process kind exits 0 within 2 s, with and without a
        broker, and a worker stopped under load loses no request;
      * no live replica: requests end UNAVAILABLE at their deadline.

    Every test prints its counts (sent, answered, lost, duplicated, ...).
    Children are killed and reaped by the fini hook even after a failed
    assertion (zt_procs.h).
    // ctest-timeout: 300
*/
#include <pthread.h>

#include "zt_procs.h"

TestSuite (reliability, .init = zt_setup, .fini = zt_teardown, .timeout = 90);

//  ---------------------------------------------------------------------
//  The retry helper against a scripted fake broker

typedef enum { S_BUSY, S_DROP, S_REPLY, S_REPLY_TWICE, S_BAD } s_act_t;

typedef struct {
    const char *endpoint;
    s_act_t script[16];
    int nscript;
    //  what the fake saw
    uint64_t ids[32];
    uint32_t attempts[32];
    int64_t at_ms[32];
    int seen;
} s_fake_t;

static void
s_fake_actor (zsock_t *pipe, void *args)
{
    s_fake_t *f = (s_fake_t *)args;
    zsock_t *router = zsock_new_router (f->endpoint);
    zsock_signal (pipe, 0);
    zpoller_t *poller = zpoller_new (pipe, router, NULL);
    while (true) {
        void *which = zpoller_wait (poller, -1);
        if (which == pipe || !which) {
            break;
        }
        zmsg_t *env = NULL;
        zi_msg_t *req = NULL;
        if (zi_msg_recv_from (router, &env, &req, NULL, 0)) {
            zmsg_destroy (&env);
            continue;
        }
        int k = f->seen < 32 ? f->seen : 31;
        f->ids[k] = zi_msg_id (req);
        f->attempts[k] = zi_msg_attempt (req);
        f->at_ms[k] = zt_now_ms ();
        s_act_t act = f->seen < f->nscript ? f->script[f->seen] : S_DROP;
        f->seen++;
        zi_msg_t *answer = NULL;
        if (act == S_BUSY || act == S_BAD) {
            answer = zi_msg_new_error (act == S_BUSY ? ZI_CODE_BUSY : ZI_CODE_BAD_REQUEST,
                                       act == S_BUSY ? "pipeline full" : "wrong shape");
        }
        else if (act == S_REPLY || act == S_REPLY_TWICE) {
            answer = zi_msg_new (ZI_CMD_REPLY);
            zi_msg_add_tensor_copy (answer, "y", zi_msg_tensor (req, 0));
        }
        if (answer) {
            zi_msg_set_id (answer, zi_msg_id (req));
            if (act == S_REPLY_TWICE) {
                zi_msg_t *again = zi_msg_new (ZI_CMD_REPLY);
                zi_msg_add_tensor_copy (again, "y", zi_msg_tensor (req, 0));
                zi_msg_set_id (again, zi_msg_id (req));
                zi_msg_send_to (&answer, router, env);
                answer = again;
            }
            zi_msg_send_to (&answer, router, env);
        }
        zmsg_destroy (&env);
        zi_msg_destroy (&req);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&router);
}

static zi_tensor_t *
s_small_input (void)
{
    zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){ 1, 3 });
    for (int i = 0; i < 3; i++) {
        ((float *)x->data)[i] = (float)i;
    }
    return x;
}

Test (reliability, retry_sends_the_same_id_again_with_backoff_until_answered)
{
    s_fake_t f = { .endpoint = "inproc://fake-front",
                   .script = { S_BUSY, S_DROP, S_BUSY, S_REPLY_TWICE, S_BAD },
                   .nscript = 5 };
    zactor_t *fake = zactor_new (s_fake_actor, &f);
    char err[512];
    zi_client_t *c = zi_client_new ("inproc://fake-front", err, sizeof err);
    cr_assert_not_null (c, "%s", err);
    zi_tensor_t *x = s_small_input ();
    const char *names[] = { "x" };
    const zi_tensor_t *ins[] = { x };
    zi_client_retry_t retry = ZI_CLIENT_RETRY_DEFAULTS;
    retry.attempt_ms = 300;
    retry.backoff_ms = 40;
    retry.backoff_max_ms = 200;
    retry.total_ms = 10000;
    zi_msg_t *reply = NULL;
    int64_t t0 = zt_now_ms ();
    int rc = zi_client_infer_retry (c, 1, names, ins, &retry, &reply, err, sizeof err);
    int64_t took = zt_now_ms () - t0;
    cr_assert_eq (rc, 0, "%s", err);
    cr_assert_eq (zi_msg_cmd (reply), ZI_CMD_REPLY);
    zi_msg_destroy (&reply);
    //  BUSY, lost, BUSY, answered: four sends of ONE id, attempts 0..3.
    cr_assert_eq (f.seen, 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq (f.ids[i], f.ids[0], "attempt %d has another id", i);
        cr_assert_eq (f.attempts[i], (uint32_t)i);
    }
    //  Backoff after each BUSY drawn from [b/2, b]: >= 20 ms, then >= 20
    //  ms again (40 after the lost one? no: a lost answer is sent again at
    //  once, after its attempt time of 300 ms).
    cr_assert_geq (f.at_ms[1] - f.at_ms[0], 20, "no backoff after BUSY");
    cr_assert_geq (f.at_ms[2] - f.at_ms[1], 290, "resent before the attempt time");
    cr_assert_geq (f.at_ms[3] - f.at_ms[2], 40, "backoff did not double");
    cr_assert_lt (took, 2000);
    zi_client_counts_t counts;
    zi_client_counts (c, &counts);
    cr_assert_eq (counts.sent, 1);
    cr_assert_eq (counts.resent, 3);
    //  The second copy of the answer is dropped by the next call (stale),
    //  which then gets a BAD_REQUEST: not retried.
    rc = zi_client_infer_retry (c, 1, names, ins, &retry, &reply, err, sizeof err);
    cr_assert_eq (rc, ZI_ERR_INVALID);
    cr_assert (strstr (err, "BAD_REQUEST"), "%s", err);
    cr_assert_eq (zi_msg_code (reply), ZI_CODE_BAD_REQUEST);
    zi_msg_destroy (&reply);
    cr_assert_eq (f.seen, 5, "a BAD_REQUEST is not retried");
    zi_client_counts (c, &counts);
    cr_assert_eq (counts.stale, 1, "the duplicate answer was not dropped");
    //  Nobody answers: the total bound ends it.
    retry.total_ms = 700;
    retry.attempt_ms = 200;
    t0 = zt_now_ms ();
    rc = zi_client_infer_retry (c, 1, names, ins, &retry, &reply, err, sizeof err);
    took = zt_now_ms () - t0;
    cr_assert_eq (rc, ZI_ERR_TIMEOUT, "%s", err);
    cr_assert_null (reply);
    cr_assert (took >= 650 && took < 1500, "took %lld ms", (long long)took);
    cr_assert_geq (f.seen, 5 + 3, "sent %d times in 700 ms", f.seen - 5);
    printf ("retry helper: 4 sends of one id (BUSY, lost, BUSY, reply), 1 stale copy "
            "dropped, BAD_REQUEST not retried, %d sends before the 700 ms bound\n",
            f.seen - 5);
    zi_tensor_destroy (&x);
    zi_client_destroy (&c);
    zactor_destroy (&fake);
}

//  ---------------------------------------------------------------------
//  The pipeline

typedef struct {
    int queue_limit;
    int credit;
    int deadline_ms;
    int replicas; //  per segment
} s_opts_t;

typedef struct {
    char plan_path[256];
    char log[256];
    zi_plan_t *plan;
    pid_t up;
    zi_client_t *client; //  for STATS / HEALTH
    int nreplicas;
} s_pipe_t;

static s_pipe_t s_p;

//  Plan Fashion-MNIST in 2 segments x R replicas, 4-row tasks (4-row
//  requests are never split nor coalesced: the reference engine runs the
//  same batches), and start it under `zinfer up`.
static void s_pipe_plan (const s_opts_t *o);

static void
s_pipe_start (const s_opts_t *o)
{
    s_pipe_plan (o);
    snprintf (s_p.log, sizeof s_p.log, "%s/up.log", zt_dir);
    char exe[512];
    snprintf (exe, sizeof exe, "%s/zinfer", ZI_BINARY_DIR);
    char *argv[] = { exe, "up", s_p.plan_path, NULL };
    s_p.up = zt_spawn (s_p.log, argv);
    char err[512];
    s_p.client = zi_client_new_plan (s_p.plan, err, sizeof err);
    cr_assert_not_null (s_p.client, "%s", err);
    int64_t end = zt_now_ms () + 30000;
    while (zi_client_wait_ready (s_p.client, 500) != 0) {
        cr_assert (zt_now_ms () < end && zt_alive (s_p.up), "not ready:\n%s",
                   zt_tail (s_p.log, 3000));
    }
    zt_wait_all_live (s_p.client, s_p.nreplicas, 3, 30000, s_p.log);
}

static void
s_pipe_plan (const s_opts_t *o)
{
    int r = o->replicas ? o->replicas : 2;
    int credit = o->credit ? o->credit : 2;
    char reps[512] = "";
    for (int seg = 0; seg < 2; seg++) {
        for (int i = 0; i < r; i++) {
            char one[64];
            snprintf (one, sizeof one, " --replica %d@local:1:%d", seg, credit);
            strcat (reps, one);
        }
    }
    s_p.plan = zt_plan_make (
        s_p.plan_path, sizeof s_p.plan_path, ZT_FASHION,
        "%s " ZT_FASHION_PRE " --micro-batch 4 --max-batch 4 --max-delay-us 0", reps);
    zi_plan_broker_t *b = &s_p.plan->broker;
    b->heartbeat_interval_ms = 100; //  a dead peer is noticed in 300 ms
    b->heartbeat_liveness = 3;
    b->stage_timeout_ms = 1000;
    b->default_deadline_ms = o->deadline_ms ? o->deadline_ms : 5000;
    b->max_attempts = 5;
    b->queue_limit = o->queue_limit ? o->queue_limit : 256;
    b->max_message_bytes = 1 << 20;
    zt_plan_save (s_p.plan, s_p.plan_path);
    s_p.nreplicas = 2 * r;
}

static void
s_pipe_stop (void)
{
    zi_client_destroy (&s_p.client);
    if (s_p.up > 0) {
        int st = 0;
        int64_t ms = zt_stop (s_p.up, SIGTERM, 10000, &st);
        cr_assert_geq (ms, 0, "zinfer up did not stop:\n%s", zt_tail (s_p.log, 3000));
        s_p.up = 0;
    }
    zi_plan_destroy (&s_p.plan);
    zt_stop_and_check_logs ();
}

#define s_input zt_input

//  ---------------------------------------------------------------------
//  Load: T client threads, each with its own client, take requests
//  0..N-1 in turn and send each with zi_client_infer_retry.

typedef struct {
    int n;
    zi_tensor_t **inputs;
    zi_tensor_t **want; //  NULL: any REPLY will do
    int next;           //  atomically taken
    int done;           //  atomically counted
    //  per request: 0 = no answer, 1 = right answer, 2 = wrong answer,
    //  3 = an error; how many answers the caller got (must be 1)
    uint8_t *outcome;
    uint8_t *answers;
    int *codes;
    int64_t *latency_us;
    zi_client_retry_t retry;
    uint64_t resent, stale;
    char first_error[512];
} s_load_t;

static void *
s_load_thread (void *arg)
{
    s_load_t *l = (s_load_t *)arg;
    char err[512];
    zi_client_t *c = zi_client_new_plan (s_p.plan, err, sizeof err);
    if (!c) {
        snprintf (l->first_error, sizeof l->first_error, "%s", err);
        return NULL;
    }
    const char *names[] = { "input" };
    int k;
    while ((k = __atomic_fetch_add (&l->next, 1, __ATOMIC_SEQ_CST)) < l->n) {
        const zi_tensor_t *ins[] = { l->inputs[k] };
        zi_msg_t *reply = NULL;
        int64_t t0 = zclock_usecs ();
        int rc = zi_client_infer_retry (c, 1, names, ins, &l->retry, &reply, err,
                                        sizeof err);
        l->latency_us[k] = zclock_usecs () - t0;
        if (rc == 0) {
            l->answers[k]++;
            const zi_tensor_t *y = zi_msg_tensor (reply, 0);
            const zi_tensor_t *w = l->want ? l->want[k] : NULL;
            bool same = !w
                        || (y && y->nbytes == w->nbytes && zi_tensor_same_shape (y, w)
                            && memcmp (y->data, w->data, w->nbytes) == 0);
            l->outcome[k] = same ? 1 : 2;
        }
        else {
            l->answers[k] += reply != NULL;
            l->outcome[k] = 3;
            l->codes[k] = reply ? zi_msg_code (reply) : rc;
            if (!l->first_error[0]) {
                snprintf (l->first_error, sizeof l->first_error, "request %d: %.400s", k,
                          err);
            }
        }
        zi_msg_destroy (&reply);
        __atomic_fetch_add (&l->done, 1, __ATOMIC_SEQ_CST);
    }
    zi_client_counts_t counts;
    zi_client_counts (c, &counts);
    __atomic_fetch_add (&l->resent, counts.resent, __ATOMIC_SEQ_CST);
    __atomic_fetch_add (&l->stale, counts.stale, __ATOMIC_SEQ_CST);
    zi_client_destroy (&c);
    return NULL;
}

static void
s_load_init (s_load_t *l, int n, bool reference)
{
    memset (l, 0, sizeof *l);
    l->n = n;
    l->inputs = (zi_tensor_t **)calloc ((size_t)n, sizeof *l->inputs);
    l->outcome = (uint8_t *)calloc ((size_t)n, 1);
    l->answers = (uint8_t *)calloc ((size_t)n, 1);
    l->codes = (int *)calloc ((size_t)n, sizeof (int));
    l->latency_us = (int64_t *)calloc ((size_t)n, sizeof (int64_t));
    for (int k = 0; k < n; k++) {
        l->inputs[k] = s_input (k);
    }
    if (reference) {
        zt_engine_t e;
        zt_engine_open (&e, ZT_FASHION, s_p.plan);
        l->want = (zi_tensor_t **)calloc ((size_t)n, sizeof *l->want);
        for (int k = 0; k < n; k++) {
            l->want[k] = zt_engine_run (&e, s_p.plan, l->inputs[k]);
        }
        zt_engine_close (&e);
    }
    zi_client_retry_t retry = ZI_CLIENT_RETRY_DEFAULTS;
    retry.attempt_ms = 1000;
    retry.total_ms = 40000;
    retry.backoff_ms = 20;
    retry.backoff_max_ms = 500;
    l->retry = retry;
}

static void
s_load_free (s_load_t *l)
{
    for (int k = 0; k < l->n; k++) {
        zi_tensor_destroy (&l->inputs[k]);
        if (l->want) {
            zi_tensor_destroy (&l->want[k]);
        }
    }
    free (l->inputs);
    free (l->want);
    free (l->outcome);
    free (l->answers);
    free (l->codes);
    free (l->latency_us);
}

typedef struct {
    int answered, right, wrong, errors, lost, duplicated;
} s_tally_t;

static s_tally_t
s_tally (const s_load_t *l)
{
    s_tally_t t = { 0 };
    for (int k = 0; k < l->n; k++) {
        t.answered += l->answers[k] > 0;
        t.duplicated += l->answers[k] > 1;
        t.lost += l->outcome[k] == 0 || (l->outcome[k] == 3 && l->answers[k] == 0);
        t.right += l->outcome[k] == 1;
        t.wrong += l->outcome[k] == 2;
        t.errors += l->outcome[k] == 3;
    }
    return t;
}

//  ---------------------------------------------------------------------

Test (reliability, a_retry_gets_the_kept_answer_also_on_a_new_connection)
{
    s_pipe_start (&(s_opts_t){ 0 });
    zsock_t *raw = zsock_new (ZMQ_DEALER);
    zsock_set_identity (raw, "retrying-client");
    zsock_connect (raw, "%s", s_p.plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect);
    zi_tensor_t *x = s_input (7);
    zi_msg_t *answers[3] = { NULL };
    for (int i = 0; i < 3; i++) {
        if (i == 2) {
            //  A new connection under the same routing id (a client that
            //  reconnected) is recognised too.
            zsock_destroy (&raw);
            raw = zsock_new (ZMQ_DEALER);
            zsock_set_identity (raw, "retrying-client");
            zsock_connect (raw, "%s",
                           s_p.plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect);
        }
        zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
        zi_msg_set_id (req, 4242);
        zi_msg_set_attempt (req, (uint32_t)i);
        cr_assert_eq (zi_msg_add_tensor_copy (req, "input", x), 0);
        cr_assert_eq (zi_msg_send (&req, raw), 0);
        zsock_set_rcvtimeo (raw, 10000);
        char err[256];
        cr_assert_eq (zi_msg_recv (raw, &answers[i], err, sizeof err), 0, "%s", err);
        cr_assert_eq (zi_msg_cmd (answers[i]), ZI_CMD_REPLY);
        cr_assert_eq (zi_msg_id (answers[i]), 4242);
    }
    const zi_tensor_t *y0 = zi_msg_tensor (answers[0], 0);
    for (int i = 1; i < 3; i++) {
        const zi_tensor_t *y = zi_msg_tensor (answers[i], 0);
        cr_assert (y->nbytes == y0->nbytes && memcmp (y->data, y0->data, y->nbytes) == 0,
                   "answer %d differs", i);
    }
    zt_stats_t s;
    cr_assert (zt_stats (s_p.client, &s, 5000));
    int64_t admitted = zt_stat (&s, "requests.admitted");
    int64_t replayed = zt_stat (&s, "requests.replayed");
    int64_t kept = zt_stat (&s, "requests.answers_kept");
    zt_stats_done (&s);
    printf ("kept answers: 3 REQUESTs with one id -> admitted %lld, replayed %lld, "
            "answers kept %lld\n",
            (long long)admitted, (long long)replayed, (long long)kept);
    cr_assert_eq (admitted, 1, "the request ran again");
    cr_assert_eq (replayed, 2);
    cr_assert_geq (kept, 1);
    for (int i = 0; i < 3; i++) {
        zi_msg_destroy (&answers[i]);
    }
    zi_tensor_destroy (&x);
    zsock_destroy (&raw);
    s_pipe_stop ();
}

//  The exec children of zinfer up (replica names s0r0, s0r1, s1r0, s1r1).
static const char *
s_replica_name (int i)
{
    static char name[16];
    snprintf (name, sizeof name, "s%dr%d", i / 2, i % 2);
    return name;
}

Test (reliability, exec_workers_sigkilled_at_random_lose_and_duplicate_nothing,
      .timeout = 120)
{
    s_pipe_start (&(s_opts_t){ 0 });
    enum { N = 2000, T = 4 };
    s_load_t l;
    s_load_init (&l, N, true);
    pthread_t th[T];
    int64_t t0 = zt_now_ms ();
    for (int i = 0; i < T; i++) {
        pthread_create (&th[i], NULL, s_load_thread, &l);
    }
    //  SIGKILL a random worker after every 100..250 answers (paced by the
    //  requests, not the clock: a faster pipeline still sees ~10 kills)
    //  while requests flow (zinfer up restarts it); at least 8 kills.
    srand ((unsigned)getpid ());
    int kills = 0;
    int next = 50;
    while (__atomic_load_n (&l.done, __ATOMIC_SEQ_CST) < N || kills < 8) {
        if (zt_now_ms () - t0 > 90000) {
            break;
        }
        if (__atomic_load_n (&l.done, __ATOMIC_SEQ_CST) < next) {
            usleep (1000);
            continue;
        }
        next = __atomic_load_n (&l.done, __ATOMIC_SEQ_CST) + 100 + rand () % 150;
        if (__atomic_load_n (&l.done, __ATOMIC_SEQ_CST) >= N) {
            //  All answered before 8 kills: the rest of the kills would
            //  prove nothing about requests. Count what happened.
            break;
        }
        pid_t victim = zt_child (s_p.up, "zinfer-exec", s_replica_name (rand () % 4));
        if (victim > 0 && kill (victim, SIGKILL) == 0) {
            kills++;
        }
    }
    for (int i = 0; i < T; i++) {
        pthread_join (th[i], NULL);
    }
    int64_t took = zt_now_ms () - t0;
    s_tally_t t = s_tally (&l);
    zt_stats_t s;
    cr_assert (zt_stats (s_p.client, &s, 5000));
    int64_t redispatched = zt_stat (&s, "tasks.redispatched");
    int64_t replayed = zt_stat (&s, "requests.replayed");
    int64_t dups = zt_stat (&s, "requests.duplicates");
    zt_stats_done (&s);
    int restarts = 0;
    FILE *f = fopen (s_p.log, "r");
    char line[1024];
    while (f && fgets (line, sizeof line, f)) {
        restarts += strstr (line, "UP-RESTART") != NULL;
    }
    if (f) {
        fclose (f);
    }
    printf (
        "(a) workers SIGKILLed: %d requests sent in %lld ms, %d answered, %d lost, "
        "%d duplicated, %d correct (bit-identical to the engine), %d wrong, %d errors; "
        "%d kills, %d restarts by zinfer up, %lld tasks re-dispatched, %llu sent "
        "again by clients, %llu extra copies dropped, broker: %lld replayed, %lld "
        "in-flight duplicates ignored\n",
        N, (long long)took, t.answered, t.lost, t.duplicated, t.right, t.wrong, t.errors,
        kills, restarts, (long long)redispatched, (unsigned long long)l.resent,
        (unsigned long long)l.stale, (long long)replayed, (long long)dups);
    cr_assert_geq (kills, 5, "only %d kills: the run was too short to test anything",
                   kills);
    cr_assert_eq (t.lost, 0, "%s", l.first_error);
    cr_assert_eq (t.duplicated, 0);
    cr_assert_eq (t.errors, 0, "%s", l.first_error);
    cr_assert_eq (t.wrong, 0);
    cr_assert_eq (t.right, N);
    cr_assert_gt (redispatched, 0,
                  "no task was ever re-dispatched: the kills hit nothing");
    s_load_free (&l);
    s_pipe_stop ();
}

Test (reliability,
      broker_sigkilled_and_restarted_clients_retry_lose_and_duplicate_nothing,
      .timeout = 120)
{
    s_pipe_start (&(s_opts_t){ 0 });
    enum { N = 2000, T = 4 };
    s_load_t l;
    s_load_init (&l, N, true);
    pthread_t th[T];
    int64_t t0 = zt_now_ms ();
    for (int i = 0; i < T; i++) {
        pthread_create (&th[i], NULL, s_load_thread, &l);
    }
    //  Twice: SIGKILL the broker once a third (two thirds) of the requests
    //  are answered; zinfer up starts it again.
    int64_t recovery[2] = { -1, -1 }, ready_ms[2] = { -1, -1 };
    for (int round = 0; round < 2; round++) {
        while (__atomic_load_n (&l.done, __ATOMIC_SEQ_CST) < N * (round + 1) / 3) {
            cr_assert (zt_now_ms () - t0 < 60000, "stuck at %d answers", l.done);
            usleep (2000);
        }
        pid_t broker = zt_child (s_p.up, "zinfer-broker", NULL);
        cr_assert_gt (broker, 0);
        int before = __atomic_load_n (&l.done, __ATOMIC_SEQ_CST);
        int64_t killed_at = zt_now_ms ();
        cr_assert_eq (kill (broker, SIGKILL), 0);
        //  The new broker: bound, and every segment served again (the
        //  workers noticed the silence, or were told DISCONNECT, and
        //  said READY).
        while (true) {
            bool live = false, ready = false;
            if (zi_client_health (s_p.client, 100, &live, &ready, NULL, 0) == 0 && ready
                && zt_child (s_p.up, "zinfer-broker", NULL) != broker) {
                break;
            }
            cr_assert (zt_now_ms () - killed_at < 30000,
                       "no broker 30 s after the kill:\n%s", zt_tail (s_p.log, 3000));
        }
        ready_ms[round] = zt_now_ms () - killed_at;
        //  Recovery: until the first request completes after the kill.
        while (__atomic_load_n (&l.done, __ATOMIC_SEQ_CST) <= before + T) {
            cr_assert (zt_now_ms () - killed_at < 30000,
                       "no answer 30 s after the kill:\n%s", zt_tail (s_p.log, 3000));
            usleep (1000);
        }
        recovery[round] = zt_now_ms () - killed_at;
    }
    for (int i = 0; i < T; i++) {
        pthread_join (th[i], NULL);
    }
    int64_t took = zt_now_ms () - t0;
    s_tally_t t = s_tally (&l);
    //  Everything registered again with the new broker: every replica,
    //  both PUSH stages (their HEARTBEATs) and the aggregator (READY).
    zt_wait_all_live (s_p.client, s_p.nreplicas, 3, 10000, s_p.log);
    zt_stats_t s;
    cr_assert (zt_stats (s_p.client, &s, 5000));
    int64_t pre_live = zt_stat (&s, "stages.preprocess.live");
    int64_t part_live = zt_stat (&s, "stages.partition.live");
    int64_t agg_live = zt_stat (&s, "stages.aggregate.live");
    int64_t admitted = zt_stat (&s, "requests.admitted");
    zt_stats_done (&s);
    printf (
        "(b) broker SIGKILLed twice: %d requests sent in %lld ms, %d answered, %d lost, "
        "%d duplicated, %d correct, %d wrong, %d errors; kill -> new broker ready %lld "
        "and %lld ms, -> next answer %lld and %lld ms (clients resend after %d ms "
        "without an answer); %llu sent again by clients, %llu extra copies dropped; "
        "after: preprocess %lld live, partition %lld live, aggregate %lld live, %lld "
        "admitted by the last broker\n",
        N, (long long)took, t.answered, t.lost, t.duplicated, t.right, t.wrong, t.errors,
        (long long)ready_ms[0], (long long)ready_ms[1], (long long)recovery[0],
        (long long)recovery[1], l.retry.attempt_ms, (unsigned long long)l.resent,
        (unsigned long long)l.stale, (long long)pre_live, (long long)part_live,
        (long long)agg_live, (long long)admitted);
    cr_assert (zt_file_has (s_p.log, "UP-RESTART: broker"), "%s",
               zt_tail (s_p.log, 3000));
    cr_assert_eq (t.lost, 0, "%s", l.first_error);
    cr_assert_eq (t.duplicated, 0);
    cr_assert_eq (t.errors, 0, "%s", l.first_error);
    cr_assert_eq (t.wrong, 0);
    cr_assert_eq (t.right, N);
    cr_assert_gt (l.resent, 0, "no client had to retry: the kills hit nothing");
    cr_assert_eq (pre_live, 1);
    cr_assert_eq (part_live, 1);
    cr_assert_eq (agg_live, 1);
    s_load_free (&l);
    s_pipe_stop ();
}

//  ---------------------------------------------------------------------
//  Overload

static int
s_cmp_i64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

//  Keep `conc` requests in flight for ms; returns answers per second and
//  the median latency in *p50_us. Every answer must be a REPLY.
static double
s_closed_loop (zi_client_t *c, zi_tensor_t *x, int conc, int ms, int64_t *p50_us)
{
    enum { MAXN = 100000 };
    static int64_t sent_at[MAXN], lat[MAXN];
    uint64_t first = 0;
    int sent = 0, got = 0;
    int64_t t0 = zt_now_ms ();
    while (true) {
        bool more = zt_now_ms () - t0 < ms;
        while (more && sent - got < conc && sent < MAXN) {
            zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
            zi_msg_add_tensor_copy (req, "input", x);
            uint64_t id;
            cr_assert_eq (zi_client_send (c, &req, &id), 0);
            if (sent == 0) {
                first = id;
            }
            sent_at[sent++] = zclock_usecs ();
        }
        if (got == sent) {
            break;
        }
        zi_msg_t *m = NULL;
        char err[256];
        cr_assert_eq (zi_client_recv (c, 10000, &m, err, sizeof err), 0, "%s", err);
        cr_assert_eq (zi_msg_cmd (m), ZI_CMD_REPLY, "%s %s", zi_cmd_name (zi_msg_cmd (m)),
                      zi_msg_reason (m) ? zi_msg_reason (m) : "");
        uint64_t k = zi_msg_id (m) - first;
        cr_assert_lt (k, (uint64_t)sent);
        lat[got++] = zclock_usecs () - sent_at[k];
        zi_msg_destroy (&m);
    }
    double secs = (double)(zt_now_ms () - t0) / 1000.0;
    qsort (lat, (size_t)got, sizeof lat[0], s_cmp_i64);
    *p50_us = got ? lat[got / 2] : 0;
    return got / secs;
}

typedef struct {
    pid_t pid[8];
    const char *name[8];
    long base[8], max[8];
    int n;
} s_rss_t;

static void
s_rss_find (s_rss_t *r)
{
    static const char *progs[] = { "zinfer-broker",    "zinfer-exec",
                                   "zinfer-exec",      "zinfer-exec",
                                   "zinfer-exec",      "zinfer-preprocess",
                                   "zinfer-partition", "zinfer-aggregate" };
    static const char *names[]
        = { NULL, "s0r0", "s0r1", "s1r0", "s1r1", NULL, NULL, NULL };
    r->n = 0;
    for (int i = 0; i < 8; i++) {
        pid_t pid = zt_child (s_p.up, progs[i], names[i]);
        cr_assert_gt (pid, 0, "no %s %s", progs[i], names[i] ? names[i] : "");
        r->pid[r->n] = pid;
        r->name[r->n] = names[i] ? names[i] : progs[i] + 7;
        r->base[r->n] = r->max[r->n] = zt_rss_kb (pid);
        r->n++;
    }
}

static void
s_rss_sample (s_rss_t *r)
{
    for (int i = 0; i < r->n; i++) {
        long kb = zt_rss_kb (r->pid[i]);
        if (kb > r->max[i]) {
            r->max[i] = kb;
        }
    }
}

Test (reliability, overload_3x_busy_bounded_memory_and_latency_recovers, .timeout = 120)
{
    s_pipe_start (&(s_opts_t){ .queue_limit = 64, .deadline_ms = 2000 });
    char err[512];
    zi_client_t *c = zi_client_new_plan (s_p.plan, err, sizeof err);
    cr_assert_not_null (c, "%s", err);
    zi_tensor_t *x = s_input (1);
    //  Warm up, then the capacity and the latency at a normal load.
    int64_t p50_before = 0, p50_after = 0;
    s_closed_loop (c, x, 8, 300, &p50_before);
    double capacity = s_closed_loop (c, x, 16, 1500, &p50_before);
    s_closed_loop (c, x, 2, 500, &p50_before);
    s_rss_t rss;
    s_rss_find (&rss);
    int64_t heap0 = zt_stat1 (s_p.client, "memory.heap_bytes");
    //  Overload: 3 x capacity, open loop, for 5 s.
    double rate = 3 * capacity;
    enum { MAXN = 200000 };
    static uint8_t answered[MAXN];
    memset (answered, 0, sizeof answered);
    int64_t codes[1000] = { 0 };
    int sent = 0, got = 0, replies = 0, twice = 0;
    uint64_t first = 0;
    int64_t t0 = zt_now_ms (), last_sample = 0;
    int duration = 5000;
    while (true) {
        int64_t now = zt_now_ms ();
        int due = now - t0 < duration ? (int)((double)(now - t0) * rate / 1000.0) : sent;
        while (sent < due && sent < MAXN) {
            zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
            zi_msg_add_tensor_copy (req, "input", x);
            uint64_t id;
            cr_assert_eq (zi_client_send (c, &req, &id), 0);
            if (sent == 0) {
                first = id;
            }
            sent++;
        }
        if (now - last_sample >= 50) {
            s_rss_sample (&rss);
            last_sample = now;
        }
        if (now - t0 >= duration && got == sent) {
            break;
        }
        cr_assert (now - t0 < duration + 15000, "%d requests never answered", sent - got);
        zi_msg_t *m = NULL;
        int rc = zi_client_recv (c, 1, &m, err, sizeof err);
        if (rc == ZI_ERR_TIMEOUT) {
            continue;
        }
        cr_assert_eq (rc, 0, "%s", err);
        uint64_t k = zi_msg_id (m) - first;
        cr_assert_lt (k, (uint64_t)sent, "an answer to a request never sent");
        twice += answered[k]++ > 0;
        got++;
        if (zi_msg_cmd (m) == ZI_CMD_REPLY) {
            replies++;
        }
        else {
            int code = zi_msg_code (m);
            codes[code >= 0 && code < 1000 ? code : 0]++;
        }
        zi_msg_destroy (&m);
    }
    int64_t overload_ms = zt_now_ms () - t0;
    //  After: the latency at a normal load again.
    s_closed_loop (c, x, 2, 300, &p50_after);
    double after = s_closed_loop (c, x, 2, 1000, &p50_after);
    zt_stats_t s;
    cr_assert (zt_stats (s_p.client, &s, 5000));
    int64_t busy = zt_stat (&s, "requests.busy");
    int64_t kept = zt_stat (&s, "requests.answers_kept");
    int64_t kept_bytes = zt_stat (&s, "requests.answers_bytes");
    int64_t heap1 = zt_stat (&s, "memory.heap_bytes");
    zt_stats_done (&s);
    printf (
        "overload: broker heap in use %lld -> %lld bytes; %lld answers kept for retries "
        "(%lld tensor bytes)\n",
        (long long)heap0, (long long)heap1, (long long)kept, (long long)kept_bytes);
    printf (
        "overload: capacity %.0f req/s (4 images each), p50 %.2f ms; offered %.0f req/s "
        "for %d ms: %d sent, %d answered (%d REPLY, %lld BUSY, %lld TIMEOUT, %lld "
        "UNAVAILABLE), %d lost, %d duplicated, in %lld ms; after: %.0f req/s, p50 "
        "%.2f ms\n",
        capacity, (double)p50_before / 1000.0, rate, duration, sent, got, replies,
        (long long)codes[ZI_CODE_BUSY], (long long)codes[ZI_CODE_TIMEOUT],
        (long long)codes[ZI_CODE_UNAVAILABLE], sent - got, twice, (long long)overload_ms,
        after, (double)p50_after / 1000.0);
    for (int i = 0; i < rss.n; i++) {
        printf ("  RSS %-10s before %6ld KiB, max %6ld KiB (+%ld KiB)\n", rss.name[i],
                rss.base[i], rss.max[i], rss.max[i] - rss.base[i]);
    }
    cr_assert_eq (got, sent, "requests without an answer");
    cr_assert_eq (twice, 0);
    cr_assert_gt (codes[ZI_CODE_BUSY], 0, "3x overload and no BUSY?");
    cr_assert_eq (busy, codes[ZI_CODE_BUSY]);
    cr_assert_eq (replies + codes[ZI_CODE_BUSY] + codes[ZI_CODE_TIMEOUT], sent,
                  "answers other than REPLY, BUSY, TIMEOUT");
    //  The bound (README "Reliability"): queue_limit requests held, the
    //  socket queues (HWM messages of a request's size) and the allocator's
    //  slack: far under 32 MiB per process for 3 KiB requests.
    for (int i = 0; ZT_MEMORY_CHECKED && i < rss.n; i++) {
        cr_assert_lt (rss.max[i] - rss.base[i], 32 * 1024, "%s grew by %ld KiB",
                      rss.name[i], rss.max[i] - rss.base[i]);
    }
    cr_assert_leq (p50_after, 2 * p50_before + 5000,
                   "latency after the overload: %lld us, "
                   "before: %lld us",
                   (long long)p50_after, (long long)p50_before);
    zi_tensor_destroy (&x);
    zi_client_destroy (&c);
    s_pipe_stop ();
}

//  ---------------------------------------------------------------------
//  Graceful shutdown

//  Start one program of the plan with its own log; wait for its start
//  line.
static pid_t
s_start_one (const char *prog, const char *name, const char *ready_line, char *log,
             size_t loglen)
{
    snprintf (log, loglen, "%s/%s-%s.log", zt_dir, prog, name ? name : "main");
    pid_t pid
        = name ? zt_spawn_prog (log, prog, "--plan", s_p.plan_path, "--name", name, NULL)
               : zt_spawn_prog (log, prog, "--plan", s_p.plan_path, NULL, NULL, NULL);
    int64_t end = zt_now_ms () + 20000;
    while (!zt_file_has (log, ready_line)) {
        cr_assert (zt_now_ms () < end && zt_alive (pid), "%s did not start:\n%s", prog,
                   zt_tail (log, 2000));
        usleep (5000);
    }
    return pid;
}

//  Poll until pid (not our child) is gone; ms taken, or -1 after limit.
static int64_t
s_gone_within (pid_t pid, int limit)
{
    int64_t t0 = zt_now_ms ();
    while (zt_alive (pid)) {
        if (zt_now_ms () - t0 > limit) {
            return -1;
        }
        usleep (2000);
    }
    return zt_now_ms () - t0;
}

Test (reliability, sigterm_every_process_exits_0_within_2s, .timeout = 120)
{
    s_pipe_plan (&(s_opts_t){ 0 });
    //  1. Each kind alone, nobody to talk to (the worst case: nothing
    //  confirms a DISCONNECT, every send waits for a peer that is not there).
    static const struct {
        const char *prog, *name, *line;
    } kinds[] = {
        { "zinfer-preprocess", "pre0", "PRE-START" },
        { "zinfer-partition", "part0", "PART-START" },
        { "zinfer-aggregate", "agg0", "AGG-START" },
        { "zinfer-exec", "s0r0", "EXEC-SERVING" },
        { "zinfer-broker", NULL, "BROKER-START" },
    };
    char log[256];
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        pid_t pid
            = s_start_one (kinds[i].prog, kinds[i].name, kinds[i].line, log, sizeof log);
        int st = -1;
        int64_t ms = zt_stop (pid, SIGTERM, 5000, &st);
        printf ("SIGTERM, alone: %-17s exited %s %d in %lld ms\n", kinds[i].prog,
                WIFEXITED (st) ? "with status" : "by signal",
                WIFEXITED (st) ? WEXITSTATUS (st) : WTERMSIG (st), (long long)ms);
        cr_assert (ms >= 0 && ms < 2000, "%s took %lld ms:\n%s", kinds[i].prog,
                   (long long)ms, zt_tail (log, 2000));
        cr_assert (WIFEXITED (st) && WEXITSTATUS (st) == 0, "%s: status %d",
                   kinds[i].prog, st);
    }
    //  2. Under load, in a running pipeline (zinfer up starts each again):
    //  a worker, each stage, then the broker. The clients retry; nothing
    //  may be lost.
    zi_plan_destroy (&s_p.plan);
    s_pipe_start (&(s_opts_t){ 0 });
    enum { N = 1500, T = 2 };
    s_load_t l;
    s_load_init (&l, N, false);
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        pthread_create (&th[i], NULL, s_load_thread, &l);
    }
    static const struct {
        const char *prog, *name;
    } victims[] = {
        { "zinfer-exec", "s0r1" },       { "zinfer-preprocess", "pre0" },
        { "zinfer-partition", "part0" }, { "zinfer-aggregate", "agg0" },
        { "zinfer-exec", "s1r0" },       { "zinfer-broker", NULL },
    };
    for (size_t i = 0; i < sizeof victims / sizeof victims[0]; i++) {
        //  Under load: wait for some answers since the last one.
        int mark = __atomic_load_n (&l.done, __ATOMIC_SEQ_CST) + 100;
        int64_t end = zt_now_ms () + 30000;
        while (__atomic_load_n (&l.done, __ATOMIC_SEQ_CST) < mark && l.done < N) {
            cr_assert (zt_now_ms () < end, "the load stalled:\n%s",
                       zt_tail (s_p.log, 3000));
            usleep (2000);
        }
        pid_t pid = zt_child (s_p.up, victims[i].prog, victims[i].name);
        cr_assert_gt (pid, 0, "no %s", victims[i].prog);
        kill (pid, SIGTERM);
        int64_t ms = s_gone_within (pid, 5000);
        char line[128];
        snprintf (line, sizeof line, "(pid %d) exited with status 0", (int)pid);
        int64_t seen_end = zt_now_ms () + 2000;
        while (!zt_file_has (s_p.log, line) && zt_now_ms () < seen_end) {
            usleep (5000);
        }
        printf ("SIGTERM, under load: %-17s %-5s exited in %lld ms\n", victims[i].prog,
                victims[i].name ? victims[i].name : "", (long long)ms);
        cr_assert (ms >= 0 && ms < 2000, "%s took %lld ms", victims[i].prog,
                   (long long)ms);
        cr_assert (zt_file_has (s_p.log, line),
                   "%s (pid %d) did not exit with status 0:\n%s", victims[i].prog,
                   (int)pid, zt_tail (s_p.log, 3000));
    }
    for (int i = 0; i < T; i++) {
        pthread_join (th[i], NULL);
    }
    s_tally_t t = s_tally (&l);
    printf ("SIGTERM under load: %d requests sent, %d answered, %d lost, %d duplicated, "
            "%d errors, %llu sent again by clients\n",
            N, t.answered, t.lost, t.duplicated, t.errors, (unsigned long long)l.resent);
    cr_assert_eq (t.lost, 0, "%s", l.first_error);
    cr_assert_eq (t.errors, 0, "%s", l.first_error);
    cr_assert_eq (t.duplicated, 0);
    s_load_free (&l);
    s_pipe_stop ();
}

//  ---------------------------------------------------------------------
//  No live replica: nothing hangs

Test (reliability, without_a_live_replica_requests_end_unavailable_at_their_deadline)
{
    s_pipe_plan (&(s_opts_t){ 0 });
    char log[256];
    s_start_one ("zinfer-broker", NULL, "BROKER-START", log, sizeof log);
    char err[512];
    zi_client_t *c = zi_client_new_plan (s_p.plan, err, sizeof err);
    cr_assert_not_null (c, "%s", err);
    zi_tensor_t *x = s_input (3);
    const char *names[] = { "input" };
    const zi_tensor_t *ins[] = { x };
    //  1. No stage at all: the request cannot even enter the pipeline.
    zi_client_retry_t once = { .attempt_ms = 5000,
                               .total_ms = 3000,
                               .backoff_ms = 5000,
                               .backoff_max_ms = 5000,
                               .deadline_ms = 300 };
    zi_msg_t *reply = NULL;
    int64_t t0 = zt_now_ms ();
    int rc = zi_client_infer_retry (c, 1, names, ins, &once, &reply, err, sizeof err);
    int64_t took = zt_now_ms () - t0;
    printf ("no stage: %s after %lld ms\n", err, (long long)took);
    cr_assert_eq (rc, ZI_ERR_TIMEOUT, "%s", err);
    cr_assert (strstr (err, "UNAVAILABLE") && strstr (err, "did not take the request"),
               "%s", err);
    //  2. The stages and segment 0, but no replica of segment 1.
    s_start_one ("zinfer-preprocess", "pre0", "PRE-START", log, sizeof log);
    s_start_one ("zinfer-partition", "part0", "PART-START", log, sizeof log);
    s_start_one ("zinfer-aggregate", "agg0", "AGG-START", log, sizeof log);
    s_start_one ("zinfer-exec", "s0r0", "EXEC-SERVING", log, sizeof log);
    zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
    zi_msg_add_tensor_copy (req, "input", x);
    zi_msg_set_deadline_ms (req, 400);
    uint64_t id;
    t0 = zt_now_ms ();
    cr_assert_eq (zi_client_send (c, &req, &id), 0);
    cr_assert_eq (zi_client_recv (c, 5000, &reply, err, sizeof err), 0, "%s", err);
    took = zt_now_ms () - t0;
    printf ("no replica of segment 1: %s %d '%s' after %lld ms\n",
            zi_cmd_name (zi_msg_cmd (reply)), zi_msg_code (reply),
            zi_msg_reason (reply) ? zi_msg_reason (reply) : "", (long long)took);
    cr_assert_eq (zi_msg_code (reply), ZI_CODE_UNAVAILABLE);
    cr_assert (strstr (zi_msg_reason (reply), "no live replica of segment 1"), "%s",
               zi_msg_reason (reply));
    cr_assert (took >= 390 && took < 2000, "%lld ms", (long long)took);
    zi_msg_destroy (&reply);
    //  3. A replica of segment 1 arrives: the same client gets answers.
    s_start_one ("zinfer-exec", "s1r0", "EXEC-SERVING", log, sizeof log);
    zi_client_retry_t retry = ZI_CLIENT_RETRY_DEFAULTS;
    rc = zi_client_infer_retry (c, 1, names, ins, &retry, &reply, err, sizeof err);
    cr_assert_eq (rc, 0, "%s", err);
    zi_msg_destroy (&reply);
    zi_tensor_destroy (&x);
    zi_client_destroy (&c);
    zi_plan_destroy (&s_p.plan);
    zt_stop_and_check_logs ();
}
