/*  bench_broker.c - what the broker adds to a task: latency per hop and
    forwarding rate.

        zi_bench_broker [--seconds S] [--inflight N] [--in-process] [--csv]

    A real broker (zi_broker_run, the library the zinfer-broker binary
    runs) serves a one-segment plan with no stages on ipc endpoints in a
    fresh directory under /tmp, in a child process of its own (its own
    ZeroMQ context and I/O thread, as zinfer-broker has), or with
    --in-process as an actor sharing this process's ZeroMQ I/O thread with
    the fake peers (how the first version of this bench ran it). Fake peers speak the real
    protocol (zi_msg): a client DEALER on `front` sends REQUEST {id, t: x
    float32 [1,16]} (64 tensor bytes), a worker DEALER on `work` (READY,
    then RESULT {id, seg, t: y} for every TASK), and the broker answers the
    client REPLY {id, t: y}. So a round trip is

        client -> broker -> worker -> broker -> client

    (a) Latency, one request in flight, for the first half of S: each
        round trip through the broker is followed by one on a direct
        client <-> echo link (a ROUTER thread that decodes the REQUEST and
        answers a REPLY of the same size, as the fake worker does), so both
        see the same machine noise. broker added = via broker - direct: the
        two extra ZeroMQ transfers plus the broker's work, both ways; per
        hop is half of it (percentiles subtracted percentile by percentile:
        an estimate, not the distribution of the difference).
    (b) Forwarding rate, the second half of S: the client keeps N requests
        in flight (default 256), the worker has credit min(N, 1024), and
        completed round trips per second are counted after a warm-up.

    Prints a small table, or with --csv one line per figure: name,value,unit.
    Every thread competes for the same cores: on a loaded machine compare
    runs made at the same time.
*/
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <czmq.h>

#include "zi_broker.h"
#include "zi_log.h"
#include "zi_msg.h"
#include "zi_plan.h"

#define S_COLS 16          //  the tensor: float32 [1, S_COLS]
#define S_WARMUP_US 250000 //  before the rate is counted
#define S_MAX_SAMPLES 1000000

static int64_t
s_now_us (void)
{
    return zclock_usecs ();
}

//  ---------------------------------------------------------------------
//  The plan: one segment x -> y, no stages, ipc endpoints in dir

static char **
s_names (const char *name, size_t *n)
{
    char **names = (char **) calloc (1, sizeof *names);
    names[0] = strdup (name);
    *n = 1;
    return names;
}

static void
s_tensor (zi_plan_tensor_t *t, const char *name)
{
    t->name = strdup (name);
    t->dtype = ZI_DT_F32;
    t->rank = 2;
    t->shape[0] = -1;
    t->shape[1] = S_COLS;
}

static zi_plan_t *
s_plan_new (const char *dir, int64_t queue_limit)
{
    zi_plan_t *plan = zi_plan_new ();
    if (!plan) {
        return NULL;
    }
    plan->name = strdup ("bench-broker");
    plan->model.path = strdup ("none.onnx");    //  the broker never opens it
    plan->model.node_count = 1;
    s_tensor (ZI_PLAN_PUSH (plan->model.inputs, plan->model.n_inputs), "x");
    s_tensor (ZI_PLAN_PUSH (plan->model.outputs, plan->model.n_outputs), "y");
    zi_plan_add_host (plan, "local", "localhost");
    plan->broker.host = strdup ("local");
    if (zi_plan_set_endpoints_ipc (plan, dir)) {
        zi_plan_destroy (&plan);
        return NULL;
    }
    plan->broker.heartbeat_interval_ms = 1000;
    plan->broker.heartbeat_liveness = 30;
    plan->broker.queue_limit = queue_limit;
    plan->broker.default_deadline_ms = 60000;
    plan->broker.stage_timeout_ms = 60000;
    plan->broker.max_attempts = 3;
    zi_plan_segment_t *seg = ZI_PLAN_PUSH (plan->segments, plan->n_segments);
    seg->index = 0;
    seg->first_node = 0;
    seg->last_node = 0;
    seg->inputs = s_names ("x", &seg->n_inputs);
    seg->outputs = s_names ("y", &seg->n_outputs);
    zi_plan_add_replica (&seg->replicas, &seg->n_replicas, "w0", "local", 1);
    return plan;
}

//  ---------------------------------------------------------------------
//  Fake peers (actors)

typedef struct {
    const char *endpoint;
    uint32_t credit;
} s_peer_args_t;

//  A message of `cmd` answering `in`: same id, its tensor (copied out of
//  the received frame, 64 bytes) renamed y.
static zi_msg_t *
s_answer (zi_cmd_t cmd, zi_msg_t *in)
{
    zi_msg_t *out = zi_msg_new (cmd);
    zi_tensor_t *t = zi_msg_tensor_count (in) ? zi_msg_take_tensor (in, 0) : NULL;
    if (!out || !t || zi_msg_add_tensor (out, "y", &t)) {
        zi_tensor_destroy (&t);
        zi_msg_destroy (&out);
        return NULL;
    }
    zi_msg_set_id (out, zi_msg_id (in));
    return out;
}

static void
s_send_ready (zsock_t *sock, uint32_t credit)
{
    zi_msg_t *ready = zi_msg_new (ZI_CMD_READY);
    zi_msg_set_seg (ready, 0);
    zi_msg_set_capacity (ready, 1.0);
    zi_msg_set_credit (ready, credit);
    zi_msg_set_name (ready, "w0");
    zi_msg_send (&ready, sock);
}

//  The exec worker of segment 0: RESULT {id, seg, t: y} for every TASK.
static void
s_worker_actor (zsock_t *pipe, void *args)
{
    const s_peer_args_t *a = (const s_peer_args_t *) args;
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    zsock_set_identity (sock, "w0");
    zsock_set_rcvtimeo (sock, 0);
    zsock_set_sndhwm (sock, 0);
    zsock_set_rcvhwm (sock, 0);
    zsock_connect (sock, "%s", a->endpoint);
    s_send_ready (sock, a->credit);
    zsock_signal (pipe, 0);
    zmq_pollitem_t items[2] = {{zsock_resolve (pipe), 0, ZMQ_POLLIN, 0},
                               {zsock_resolve (sock), 0, ZMQ_POLLIN, 0}};
    int64_t next_beat = zclock_mono () + 500;
    bool stop = false;
    while (!stop) {
        if (zmq_poll (items, 2, 100) < 0 && errno != EINTR) {
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            char *cmd = zstr_recv (pipe);
            stop = !cmd || streq (cmd, "$TERM");
            free (cmd);
        }
        //  Drain what is there: one poll per burst, not per message.
        for (int n = 0; n < 1024 && (items[1].revents & ZMQ_POLLIN); n++) {
            zi_msg_t *msg = NULL;
            int rc = zi_msg_recv (sock, &msg, NULL, 0);
            if (rc == ZI_ERR_IO) {
                break;
            }
            if (rc) {
                continue;
            }
            if (zi_msg_cmd (msg) == ZI_CMD_TASK) {
                zi_msg_t *result = s_answer (ZI_CMD_RESULT, msg);
                if (result) {
                    zi_msg_set_seg (result, zi_msg_seg (msg));
                    zi_msg_send (&result, sock);
                }
            }
            else if (zi_msg_cmd (msg) == ZI_CMD_DISCONNECT) {
                s_send_ready (sock, a->credit);
            }
            zi_msg_destroy (&msg);
        }
        if (zclock_mono () >= next_beat) {
            next_beat = zclock_mono () + 500;
            zi_msg_t *beat = zi_msg_new (ZI_CMD_HEARTBEAT);
            zi_msg_send (&beat, sock);
        }
    }
    zsock_destroy (&sock);
}

//  The direct link: a ROUTER answering REPLY {id, t: y} to each REQUEST,
//  the same decode / encode work as the fake worker.
static void
s_echo_actor (zsock_t *pipe, void *args)
{
    const s_peer_args_t *a = (const s_peer_args_t *) args;
    zsock_t *sock = zsock_new (ZMQ_ROUTER);
    zsock_set_rcvtimeo (sock, 0);
    int rc = zsock_bind (sock, "%s", a->endpoint);
    zsock_signal (pipe, rc < 0 ? 1 : 0);
    zmq_pollitem_t items[2] = {{zsock_resolve (pipe), 0, ZMQ_POLLIN, 0},
                               {zsock_resolve (sock), 0, ZMQ_POLLIN, 0}};
    bool stop = false;
    while (!stop) {
        if (zmq_poll (items, 2, 100) < 0 && errno != EINTR) {
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            char *cmd = zstr_recv (pipe);
            stop = !cmd || streq (cmd, "$TERM");
            free (cmd);
        }
        for (int n = 0; n < 1024 && (items[1].revents & ZMQ_POLLIN); n++) {
            zmsg_t *envelope = NULL;
            zi_msg_t *msg = NULL;
            int got = zi_msg_recv_from (sock, &envelope, &msg, NULL, 0);
            if (got == ZI_ERR_IO) {
                zmsg_destroy (&envelope);
                break;
            }
            if (got == 0) {
                zi_msg_t *reply = s_answer (ZI_CMD_REPLY, msg);
                if (reply) {
                    zi_msg_send_to (&reply, sock, envelope);
                }
            }
            zi_msg_destroy (&msg);
            zmsg_destroy (&envelope);
        }
    }
    zsock_destroy (&sock);
}

//  ---------------------------------------------------------------------
//  The client

static zi_msg_t *
s_request (uint64_t id)
{
    zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
    zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){1, S_COLS});
    if (!req || !x) {
        zi_tensor_destroy (&x);
        zi_msg_destroy (&req);
        return NULL;
    }
    //  x (1, S_COLS): any values
    for (int c = 0; c < S_COLS; c++) {
        ((float *) x->data)[c] = (float) (id % 1000) + (float) c;
    }
    zi_msg_set_id (req, id);
    if (zi_msg_add_tensor (req, "x", &x)) {
        zi_tensor_destroy (&x);
        zi_msg_destroy (&req);
    }
    return req;
}

//  One round trip on sock; its time in us, or -1 after a second without
//  the reply (or a wrong answer).
static int64_t
s_round_trip (zsock_t *sock, uint64_t id)
{
    zi_msg_t *req = s_request (id);
    int64_t t0 = s_now_us ();
    if (!req || zi_msg_send (&req, sock)) {
        return -1;
    }
    while (true) {
        zmq_pollitem_t item = {zsock_resolve (sock), 0, ZMQ_POLLIN, 0};
        if (zmq_poll (&item, 1, 1000) <= 0) {
            return -1;
        }
        zi_msg_t *reply = NULL;
        if (zi_msg_recv (sock, &reply, NULL, 0)) {
            continue;
        }
        int64_t t1 = s_now_us ();
        bool ok = zi_msg_cmd (reply) == ZI_CMD_REPLY && zi_msg_id (reply) == id;
        zi_msg_destroy (&reply);
        if (ok) {
            return t1 - t0;
        }
    }
}

//  CPU time a process has used so far, all its threads (the broker's loop
//  and its ZeroMQ I/O thread), in us; -1 when unknown. From
//  /proc/PID/task/*/schedstat (ns), finer than the tick-based /proc/PID/stat.
static int64_t
s_proc_cpu_us (pid_t pid)
{
    char path[32];
    snprintf (path, sizeof path, "/proc/%d/task", (int) pid);
    int64_t total_ns = 0;
    bool any = false;
    DIR *dir = opendir (path);
    if (!dir) {
        return -1;
    }
    struct dirent *e;
    while ((e = readdir (dir))) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char file[512];
        snprintf (file, sizeof file, "%s/%s/schedstat", path, e->d_name);
        FILE *f = fopen (file, "r");
        long long ns = 0;
        if (f && fscanf (f, "%lld", &ns) == 1) {
            total_ns += ns;
            any = true;
        }
        if (f) {
            fclose (f);
        }
    }
    closedir (dir);
    return any ? total_ns / 1000 : -1;
}

static int
s_cmp_i64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

static double
s_pct (const int64_t *sorted, size_t n, double q)
{
    if (n == 0) {
        return 0;
    }
    size_t i = (size_t) (q * (double) (n - 1) + 0.5);
    return (double) sorted[i < n ? i : n - 1];
}

//  ---------------------------------------------------------------------

static void
s_usage (FILE *out)
{
    fprintf (out, "usage: zi_bench_broker [--seconds S] [--inflight N] [--in-process] "
                  "[--csv]\n"
                  "\n"
                  "Runs the zinfer broker in this process with a fake client and worker on\n"
                  "ipc endpoints, and measures (a) the latency the broker adds per hop for a\n"
                  "small task (p50, p99: round trip through the broker minus a direct one),\n"
                  "(b) tasks forwarded per second with N in flight (default 256).\n"
                  "S seconds in all (default 4), half each. The broker runs in a child\n"
                  "process (own ZeroMQ context), or with --in-process on a thread here.\n");
}

int
main (int argc, char **argv)
{
    double seconds = 4;
    long inflight = 256;
    bool csv = false;
    bool in_process = false;
    for (int i = 1; i < argc; i++) {
        if (streq (argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof (argv[++i]);
        }
        else if (streq (argv[i], "--inflight") && i + 1 < argc) {
            inflight = atol (argv[++i]);
        }
        else if (streq (argv[i], "--in-process")) {
            in_process = true;
        }
        else if (streq (argv[i], "--csv")) {
            csv = true;
        }
        else if (streq (argv[i], "-h") || streq (argv[i], "--help")) {
            s_usage (stdout);
            return 0;
        }
        else {
            fprintf (stderr, "zi_bench_broker: unknown argument '%s'\n", argv[i]);
            s_usage (stderr);
            return 2;
        }
    }
    if (!(seconds > 0.2) || seconds > 3600 || inflight < 1 || inflight > 100000) {
        fprintf (stderr, "zi_bench_broker: --seconds must be in 0.2..3600, --inflight "
                         "in 1..100000\n");
        return 2;
    }
    zi_log_set_level (ZI_LOG_WARN);     //  the broker's start and stop lines
    char dir[] = "/tmp/zi-bench-broker-XXXXXX";
    if (!mkdtemp (dir)) {
        perror ("zi_bench_broker: mkdtemp");
        return 1;
    }
    int status = 1;
    zi_plan_t *plan = s_plan_new (dir, inflight + 16);
    char direct[sizeof dir + 32];
    snprintf (direct, sizeof direct, "ipc://%s/direct.sock", dir);
    //  The child forks before this process starts ZeroMQ: it gets a
    //  context and I/O thread of its own.
    pid_t child = -1;
    if (plan && !in_process) {
        child = fork ();
        if (child == 0) {
            prctl (PR_SET_PDEATHSIG, SIGTERM);  //  never outlive the bench
            zsys_init ();                       //  SIGTERM -> zsys_interrupted
            char err[512];
            zi_broker_t *b = zi_broker_new (plan, err, sizeof err);
            if (!b) {
                fprintf (stderr, "zi_bench_broker: broker: %s\n", err);
                _exit (1);
            }
            zi_broker_run (b);
            zi_broker_destroy (&b);
            zi_plan_destroy (&plan);
            zsys_shutdown ();
            _exit (0);
        }
        if (child < 0) {
            perror ("zi_bench_broker: fork");
        }
    }
    zsys_init ();
    zactor_t *broker = plan && in_process ? zactor_new (zi_broker_actor, plan) : NULL;
    bool broker_up = broker || child > 0;
    s_peer_args_t wargs = {plan ? plan->broker.endpoints[ZI_PLAN_EP_WORK].connect : "",
                           (uint32_t) (inflight < 1024 ? inflight : 1024)};
    s_peer_args_t eargs = {direct, 0};
    zactor_t *worker = broker_up ? zactor_new (s_worker_actor, &wargs) : NULL;
    zactor_t *echo = worker ? zactor_new (s_echo_actor, &eargs) : NULL;
    zsock_t *front = zsock_new (ZMQ_DEALER);
    zsock_t *link = zsock_new (ZMQ_DEALER);
    size_t cap = S_MAX_SAMPLES;
    int64_t *via = (int64_t *) malloc (cap * sizeof *via);
    int64_t *dir_rt = (int64_t *) malloc (cap * sizeof *dir_rt);
    if (!echo || !front || !link || !via || !dir_rt) {
        fprintf (stderr, "zi_bench_broker: cannot start the broker and its peers\n");
        goto done;
    }
    zsock_set_sndhwm (front, 0);
    zsock_set_rcvhwm (front, 0);
    zsock_set_rcvtimeo (front, 0);
    zsock_set_rcvtimeo (link, 0);
    zsock_connect (front, "%s", plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect);
    zsock_connect (link, "%s", direct);

    //  Wait until the worker is in the rotation: a request answered.
    uint64_t id = 1;
    int64_t give_up = zclock_mono () + 5000;
    while (s_round_trip (front, id++) < 0) {
        if (zclock_mono () > give_up) {
            fprintf (stderr, "zi_bench_broker: the broker never answered\n");
            goto done;
        }
    }
    //  (a) latency: alternate broker and direct round trips.
    size_t n = 0;
    int64_t end = s_now_us () + (int64_t) (seconds / 2 * 1e6);
    for (int w = 0; w < 200; w++) { //  warm both paths
        s_round_trip (front, id++);
        s_round_trip (link, id++);
    }
    while (s_now_us () < end && n < cap) {
        int64_t a = s_round_trip (front, id++);
        int64_t b = s_round_trip (link, id++);
        if (a < 0 || b < 0) {
            fprintf (stderr, "zi_bench_broker: a round trip got no answer\n");
            goto done;
        }
        via[n] = a;
        dir_rt[n] = b;
        n++;
    }
    qsort (via, n, sizeof *via, s_cmp_i64);
    qsort (dir_rt, n, sizeof *dir_rt, s_cmp_i64);
    double via50 = s_pct (via, n, 0.5), via99 = s_pct (via, n, 0.99);
    double dir50 = s_pct (dir_rt, n, 0.5), dir99 = s_pct (dir_rt, n, 0.99);
    double hop50 = (via50 - dir50) / 2, hop99 = (via99 - dir99) / 2;

    //  (b) forwarding rate with `inflight` requests outstanding.
    long outstanding = 0;
    uint64_t done_n = 0, errors = 0;
    int64_t start = s_now_us ();
    int64_t cpu_from = -1, cpu_to = -1; //  the broker's CPU over the counted window
    int64_t count_from = start + S_WARMUP_US;
    int64_t stop_at = start + (int64_t) (seconds / 2 * 1e6) + S_WARMUP_US;
    uint64_t counted = 0;
    int64_t counted_from = 0;
    while (true) {
        int64_t now = s_now_us ();
        if (now >= stop_at) {
            break;
        }
        while (outstanding < inflight) {
            zi_msg_t *req = s_request (id++);
            if (!req || zi_msg_send (&req, front)) {
                fprintf (stderr, "zi_bench_broker: cannot send a request\n");
                goto done;
            }
            outstanding++;
        }
        zmq_pollitem_t item = {zsock_resolve (front), 0, ZMQ_POLLIN, 0};
        if (zmq_poll (&item, 1, 1000) <= 0) {
            fprintf (stderr, "zi_bench_broker: no answer for a second with %ld in "
                             "flight\n", outstanding);
            goto done;
        }
        //  Drain every reply that is there before sending more.
        for (int k = 0; k < 4096; k++) {
            zi_msg_t *reply = NULL;
            int rc = zi_msg_recv (front, &reply, NULL, 0);
            if (rc == ZI_ERR_IO) {
                break;
            }
            outstanding--;
            done_n++;
            if (rc || zi_msg_cmd (reply) != ZI_CMD_REPLY) {
                errors++;
            }
            zi_msg_destroy (&reply);
        }
        now = s_now_us ();
        if (!counted_from && now >= count_from) {
            counted_from = now;
            counted = done_n;
            cpu_from = child > 0 ? s_proc_cpu_us (child) : -1;
        }
    }
    int64_t finished = s_now_us ();
    cpu_to = child > 0 && cpu_from >= 0 ? s_proc_cpu_us (child) : -1;
    double cpu_per_task = cpu_to >= 0 && done_n > counted
                              ? (double) (cpu_to - cpu_from) / (double) (done_n - counted)
                              : 0;
    double cpu_share = cpu_to >= 0 && finished > counted_from
                           ? (double) (cpu_to - cpu_from) / (double) (finished - counted_from)
                           : 0;
    double rate = counted_from && finished > counted_from
                      ? (double) (done_n - counted) * 1e6 / (double) (finished - counted_from)
                      : 0;
    if (csv) {
        printf ("name,value,unit\n");
        printf ("broker_rtt_p50,%.1f,us\n", via50);
        printf ("broker_rtt_p99,%.1f,us\n", via99);
        printf ("direct_rtt_p50,%.1f,us\n", dir50);
        printf ("direct_rtt_p99,%.1f,us\n", dir99);
        printf ("broker_hop_p50,%.1f,us\n", hop50);
        printf ("broker_hop_p99,%.1f,us\n", hop99);
        printf ("broker_tasks_per_s,%.0f,1/s\n", rate);
        if (cpu_per_task > 0) {
            printf ("broker_cpu_per_task,%.3f,us\n", cpu_per_task);
            printf ("broker_cpu_share,%.2f,cores\n", cpu_share);
        }
        printf ("broker_errors,%" PRIu64 ",count\n", errors);
    }
    else {
        printf ("zinfer broker micro-benchmark: REQUEST float32[1,%d] (%d bytes), ipc, "
                "broker %s\n", S_COLS, S_COLS * 4,
                in_process ? "in-process (shared I/O thread)" : "in its own process");
        printf ("latency, 1 in flight, %zu round trips each     p50 us    p99 us\n", n);
        printf ("  client->broker->worker->broker->client %9.1f %9.1f\n", via50, via99);
        printf ("  client->echo->client (direct)          %9.1f %9.1f\n", dir50, dir99);
        printf ("  added by the broker, per hop (half)    %9.1f %9.1f\n", hop50, hop99);
        printf ("forwarding, %ld in flight: %.0f tasks/s (%" PRIu64 " errors)\n", inflight,
                rate, errors);
        if (cpu_per_task > 0) {
            //  What the broker itself spends (its loop and its ZeroMQ I/O
            //  thread): steadier than tasks/s on a shared machine.
            printf ("broker CPU: %.2f us per task (%.2f cores busy)\n", cpu_per_task,
                    cpu_share);
        }
    }
    status = errors ? 1 : 0;
done:
    free (via);
    free (dir_rt);
    zsock_destroy (&front);
    zsock_destroy (&link);
    zactor_destroy (&echo);
    zactor_destroy (&worker);
    zactor_destroy (&broker);
    if (child > 0) {
        kill (child, SIGTERM);
        waitpid (child, NULL, 0);
    }
    zi_plan_destroy (&plan);
    //  The ipc socket files, then the directory.
    zdir_t *d = zdir_new (dir, NULL);
    if (d) {
        zdir_remove (d, true);
        zdir_destroy (&d);
    }
    rmdir (dir);
    return status;
}
