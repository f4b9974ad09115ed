/*  test_security.c - issue #5, security: no unknown peer admitted, no
    hostile input crashes the broker or grows its memory.

      * `zinfer keys` makes zcert key pairs (secret files mode 0600) and
        writes the plan's security section;
      * with security.curve, on EVERY one of the broker's eight endpoints,
        over real sockets: the allowed key completes the handshake; an
        unknown client key, a wrong server key and the NULL mechanism are
        refused (libzmq's socket monitor reports the handshake's outcome);
        a secret key file readable by others is refused at start;
      * a whole pipeline with one certificate per process ({name} in the
        plan's client_secret_file) answers correctly, also the Python
        client with its certificate;
      * the frame-count limit over the wire (70 frames: TOO_LARGE on a
        ROUTER, dropped and counted on a PULL, the stream intact after);
      * (c) >= 10,000 hostile messages to each exposed socket (front,
        work, to_aggregate as DEALER; intake, preprocessed, results as
        PUSH): every one answered or dropped and counted in STATS, no
        crash, broker RSS growth under 10%, correct answers afterwards;
      * (d) an unauthenticated flood of the front (NULL mechanism, unknown
        keys, garbage bytes, 10^6 frames of a never-ending multipart
        message): the broker's RSS does not grow, allowed clients are
        served throughout.
    // ctest-timeout: 300
*/
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include "zi_security.h"
#include "zt_procs.h"

TestSuite (security, .init = zt_setup, .fini = zt_teardown, .timeout = 90);

static char s_plan_path[256];
static zi_plan_t *s_plan;

//  Fashion-MNIST in 2 segments x 1 replica, 4-row tasks, frames of at
//  most 256 KiB (a 4-image task's activations are 98 KiB).
static void
s_plan_new (void)
{
    s_plan = zt_plan_make (s_plan_path, sizeof s_plan_path, ZT_FASHION,
                           "--replica 0@local:1:2 --replica 1@local:1:2 " ZT_FASHION_PRE
                           " --micro-batch 4 --max-batch 4 --max-delay-us 0");
    s_plan->broker.heartbeat_interval_ms = 200;
    s_plan->broker.max_message_bytes = 256 * 1024;
    zt_plan_save (s_plan, s_plan_path);
}

//  `zinfer keys DIR ARGS`; its stdout in out.
static void
s_keys (const char *args, char *out, size_t len)
{
    char cmd[1024], log[256];
    snprintf (log, sizeof log, "%s/keys.out", zt_dir);
    snprintf (cmd, sizeof cmd, "%s/zinfer keys %s > %s 2>&1", ZI_BINARY_DIR, args, log);
    int rc = system (cmd);
    FILE *f = fopen (log, "r");
    size_t n = f ? fread (out, 1, len - 1, f) : 0;
    if (f) {
        fclose (f);
    }
    out[n] = 0;
    cr_assert_eq (rc, 0, "%s:\n%s", cmd, out);
}

//  Reload the plan after `zinfer keys --plan` rewrote it.
static void
s_plan_reload (void)
{
    zi_plan_destroy (&s_plan);
    char err[1024];
    s_plan = zi_plan_load (s_plan_path, err, sizeof err);
    cr_assert_not_null (s_plan, "%s", err);
}

static pid_t
s_start_broker (char *log, size_t len)
{
    static int n;
    snprintf (log, len, "%s/broker-%d.log", zt_dir, n++);
    pid_t pid
        = zt_spawn_prog (log, "zinfer-broker", "--plan", s_plan_path, NULL, NULL, NULL);
    int64_t end = zt_now_ms () + 10000;
    while (!zt_file_has (log, "BROKER-START")) {
        cr_assert (zt_now_ms () < end && zt_alive (pid), "the broker did not start:\n%s",
                   zt_tail (log, 2000));
        usleep (5000);
    }
    return pid;
}

static pid_t
s_start_up (char *log, size_t len, zi_client_t **client)
{
    snprintf (log, len, "%s/up.log", zt_dir);
    char exe[512];
    snprintf (exe, sizeof exe, "%s/zinfer", ZI_BINARY_DIR);
    char *argv[] = { exe, "up", s_plan_path, NULL };
    pid_t up = zt_spawn (log, argv);
    char err[512];
    *client = zi_client_new_plan (s_plan, err, sizeof err);
    cr_assert_not_null (*client, "%s", err);
    int64_t end = zt_now_ms () + 30000;
    while (zi_client_wait_ready (*client, 500) != 0) {
        cr_assert (zt_now_ms () < end && zt_alive (up), "not ready:\n%s",
                   zt_tail (log, 3000));
    }
    zt_wait_all_live (*client, 2, 3, 30000, log);
    return up;
}

//  Send n 4-image requests and check each answer bit for bit against the
//  single-process engine.
static void
s_check_answers (zi_client_t *client, int n, int seed)
{
    zt_engine_t e;
    zt_engine_open (&e, ZT_FASHION, s_plan);
    const char *names[] = { "input" };
    for (int k = 0; k < n; k++) {
        zi_tensor_t *x = zt_input (seed + k);
        zi_tensor_t *want = zt_engine_run (&e, s_plan, x);
        const zi_tensor_t *ins[] = { x };
        zi_client_retry_t retry = ZI_CLIENT_RETRY_DEFAULTS;
        zi_msg_t *reply = NULL;
        char err[512];
        int rc = zi_client_infer_retry (client, 1, names, ins, &retry, &reply, err,
                                        sizeof err);
        cr_assert_eq (rc, 0, "request %d: %s", k, err);
        cr_assert (zt_same_bits (zi_msg_tensor (reply, 0), want),
                   "request %d: not the engine's answer", k);
        zi_msg_destroy (&reply);
        zi_tensor_destroy (&want);
        zi_tensor_destroy (&x);
    }
    zt_engine_close (&e);
}

//  ---------------------------------------------------------------------
//  zinfer keys

Test (security, keys_makes_certificates_and_the_plan_section)
{
    char out[8192], dir[256], args[512];
    snprintf (dir, sizeof dir, "%s/keys", zt_dir);
    snprintf (args, sizeof args, "%s --name alpha --name beta", dir);
    s_keys (args, out, sizeof out);
    const char *names[] = { "broker", "alpha", "beta" };
    for (int i = 0; i < 3; i++) {
        char pub[512], sec[512];
        snprintf (pub, sizeof pub, "%s/%s.key", dir, names[i]);
        snprintf (sec, sizeof sec, "%s/%s.key_secret", dir, names[i]);
        struct stat st;
        cr_assert_eq (stat (sec, &st), 0, "no %s", sec);
        cr_assert_eq (st.st_mode & 0077, 0, "%s is readable by others: %o", sec,
                      st.st_mode & 0777);
        //  The public file holds no secret key; the secret one both.
        zconfig_t *p = zconfig_load (pub);
        cr_assert_not_null (p, "no %s", pub);
        cr_assert_null (zconfig_locate (p, "curve/secret-key"), "%s holds a secret", pub);
        const char *public_txt = zconfig_get (p, "curve/public-key", "");
        char err[256];
        zcert_t *s = zi_security_load_secret (sec, err, sizeof err);
        cr_assert_not_null (s, "%s", err);
        cr_assert_str_eq (public_txt, zcert_public_txt (s));
        cr_assert (strstr (out, zcert_public_txt (s)),
                   "public key of %s not printed:\n%s", names[i], out);
        zconfig_destroy (&p);
        zcert_destroy (&s);
    }
    cr_assert (strstr (out, "\"client_secret_file\"")
                   && strstr (out, "{name}.key_secret"),
               "%s", out);
    //  Kept unless --force: the same keys again.
    char again[8192];
    s_keys (args, again, sizeof again);
    cr_assert_str_eq (out, again);
    //  --plan: one pair per process of the plan plus "client", written
    //  into a plan that loads.
    s_plan_new ();
    snprintf (args, sizeof args, "%s/pp --plan %s", zt_dir, s_plan_path);
    s_keys (args, out, sizeof out);
    s_plan_reload ();
    const zi_plan_security_t *sec = &s_plan->security;
    cr_assert (sec->curve);
    cr_assert_eq (sec->n_allowed_keys, 2 + 3 + 1, "s0r0 s1r0 pre0 part0 agg0 client");
    cr_assert (strstr (sec->client_secret_file, "/pp/{name}.key_secret"), "%s",
               sec->client_secret_file);
    char path[512], err[256];
    cr_assert_eq (zi_security_key_path (s_plan, sec->client_secret_file, "s1r0", path,
                                        sizeof path, err, sizeof err),
                  0, "%s", err);
    cr_assert (strstr (path, "/pp/s1r0.key_secret"), "%s", path);
    //  A bad name is refused.
    snprintf (args, sizeof args, "%s --name 'a b' >/dev/null 2>&1", dir);
    char cmd[1024];
    snprintf (cmd, sizeof cmd, "%s/zinfer keys %s", ZI_BINARY_DIR, args);
    int rc = system (cmd);
    cr_assert (WIFEXITED (rc) && WEXITSTATUS (rc) == 1, "status %d", rc);
}

//  ---------------------------------------------------------------------
//  CURVE on every endpoint

typedef enum { S_ALLOWED, S_UNKNOWN_KEY, S_WRONG_SERVER, S_NULL } s_who_t;

static const char *s_who_name[]
    = { "allowed key", "unknown key", "wrong server key", "NULL mechanism" };

//  The socket type a peer of each endpoint uses.
static int
s_peer_type (zi_plan_ep_t ep)
{
    switch (ep) {
    case ZI_PLAN_EP_FRONT:
    case ZI_PLAN_EP_WORK:
    case ZI_PLAN_EP_TO_AGGREGATE:
        return ZMQ_DEALER;
    case ZI_PLAN_EP_TO_PREPROCESS:
    case ZI_PLAN_EP_TO_PARTITION:
        return ZMQ_PULL;
    default:
        return ZMQ_PUSH;
    }
}

//  Connect to ep as `who`, and report what the handshake did, as the
//  socket monitor tells it: ZMQ_EVENT_HANDSHAKE_SUCCEEDED, or one of the
//  failures; 0 when nothing happened within ms.
static int
s_handshake (zi_plan_ep_t ep, s_who_t who, zcert_t *client, zcert_t *stranger, int ms)
{
    zsock_t *sock = zsock_new (s_peer_type (ep));
    zsock_set_linger (sock, 0);
    if (who != S_NULL) {
        zcert_apply (who == S_UNKNOWN_KEY ? stranger : client, sock);
        if (who == S_WRONG_SERVER) {
            zcert_t *other = zcert_new ();
            zsock_set_curve_serverkey (sock, zcert_public_txt (other));
            zcert_destroy (&other);
        }
        else {
            zsock_set_curve_serverkey (sock, s_plan->security.server_public_key);
        }
    }
    char mon[128];
    static int n;
    snprintf (mon, sizeof mon, "inproc://monitor-%d", n++);
    cr_assert_eq (zmq_socket_monitor (zsock_resolve (sock), mon,
                                      ZMQ_EVENT_HANDSHAKE_SUCCEEDED
                                          | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
                                          | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                                          | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                          | ZMQ_EVENT_DISCONNECTED),
                  0);
    zsock_t *events = zsock_new (ZMQ_PAIR);
    zsock_connect (events, "%s", mon);
    zsock_connect (sock, "%s", s_plan->broker.endpoints[ep].connect);
    int event = 0;
    zpoller_t *poller = zpoller_new (events, NULL);
    int64_t end = zt_now_ms () + ms;
    while (!event && zt_now_ms () < end) {
        if (!zpoller_wait (poller, (int)(end - zt_now_ms ()))) {
            continue;
        }
        zmsg_t *m = zmsg_recv (events);
        zframe_t *f = zmsg_first (m);
        if (f && zframe_size (f) >= 2) {
            uint16_t e;
            memcpy (&e, zframe_data (f), 2);
            event = e;
        }
        zmsg_destroy (&m);
    }
    zpoller_destroy (&poller);
    zmq_socket_monitor (zsock_resolve (sock), NULL, 0);
    zsock_destroy (&events);
    zsock_destroy (&sock);
    return event;
}

static const char *
s_event_name (int e)
{
    switch (e) {
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
        return "handshake succeeded";
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        return "refused by ZAP";
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return "handshake failed (protocol)";
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return "handshake failed";
    case ZMQ_EVENT_DISCONNECTED:
        return "disconnected";
    case 0:
        return "no handshake";
    default:
        return "?";
    }
}

Test (security, curve_admits_only_the_allowed_key_on_every_endpoint)
{
    s_plan_new ();
    char out[8192], args[512], log[256];
    snprintf (args, sizeof args, "%s/keys --name peer --plan %s", zt_dir, s_plan_path);
    s_keys (args, out, sizeof out);
    s_plan_reload ();
    s_start_broker (log, sizeof log);
    char path[512], err[256];
    snprintf (path, sizeof path, "%s/keys/peer.key_secret", zt_dir);
    zcert_t *client = zi_security_load_secret (path, err, sizeof err);
    cr_assert_not_null (client, "%s", err);
    zcert_t *stranger = zcert_new ();
    int refused = 0;
    for (int ep = 0; ep < ZI_PLAN_EP_COUNT; ep++) {
        for (int who = S_ALLOWED; who <= S_NULL; who++) {
            //  A refused peer sees its failure at once; the time bound only
            //  matters when something is wrong.
            int e = s_handshake ((zi_plan_ep_t)ep, (s_who_t)who, client, stranger, 3000);
            printf ("%-13s %-17s %s\n", zi_plan_endpoint_name ((zi_plan_ep_t)ep),
                    s_who_name[who], s_event_name (e));
            if (who == S_ALLOWED) {
                cr_assert_eq (e, ZMQ_EVENT_HANDSHAKE_SUCCEEDED, "%s: the allowed key: %s",
                              zi_plan_endpoint_name ((zi_plan_ep_t)ep), s_event_name (e));
            }
            else {
                cr_assert (e != ZMQ_EVENT_HANDSHAKE_SUCCEEDED && e != 0, "%s: %s: %s",
                           zi_plan_endpoint_name ((zi_plan_ep_t)ep), s_who_name[who],
                           s_event_name (e));
                if (who == S_UNKNOWN_KEY) {
                    cr_assert_eq (e, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH,
                                  "%s: an unknown key must be refused by the allow-list",
                                  zi_plan_endpoint_name ((zi_plan_ep_t)ep));
                }
                refused++;
            }
        }
    }
    cr_assert_eq (refused, 3 * ZI_PLAN_EP_COUNT);
    //  And at the protocol level: only the allowed client is answered.
    zi_client_t *good = zi_client_new_plan (s_plan, err, sizeof err);
    cr_assert_not_null (good, "%s", err);
    bool live = false, ready = false;
    cr_assert_eq (zi_client_health (good, 5000, &live, &ready, err, sizeof err), 0, "%s",
                  err);
    cr_assert (live);
    zi_client_t *plain = zi_client_new (
        s_plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect, err, sizeof err);
    cr_assert_neq (zi_client_health (plain, 500, &live, &ready, err, sizeof err), 0,
                   "a client without keys was answered");
    zi_client_destroy (&plain);
    zi_client_destroy (&good);
    zcert_destroy (&client);
    zcert_destroy (&stranger);
    zt_stop_and_check_logs ();
}

Test (security, a_secret_key_readable_by_others_is_refused)
{
    s_plan_new ();
    char out[8192], args[512], path[512];
    snprintf (args, sizeof args, "%s/keys --plan %s", zt_dir, s_plan_path);
    s_keys (args, out, sizeof out);
    s_plan_reload ();
    snprintf (path, sizeof path, "%s/keys/broker.key_secret", zt_dir);
    cr_assert_eq (chmod (path, 0644), 0);
    char log[256];
    snprintf (log, sizeof log, "%s/broker.log", zt_dir);
    pid_t pid
        = zt_spawn_prog (log, "zinfer-broker", "--plan", s_plan_path, NULL, NULL, NULL);
    int st = 0;
    cr_assert (zt_wait_exit (pid, 10000, &st), "the broker started anyway");
    cr_assert (WIFEXITED (st) && WEXITSTATUS (st) == 1, "status %d", st);
    cr_assert (zt_file_has (log, "readable by group or others"), "%s",
               zt_tail (log, 2000));
}

Test (security, a_curve_pipeline_with_a_certificate_per_process_answers, .timeout = 120)
{
    s_plan_new ();
    char out[8192], args[512], log[256];
    snprintf (args, sizeof args, "%s/keys --plan %s", zt_dir, s_plan_path);
    s_keys (args, out, sizeof out);
    s_plan_reload ();
    zi_client_t *client = NULL;
    s_start_up (log, sizeof log, &client);
    s_check_answers (client, 20, 100);
    //  Each process used its own key: the allow-list has one per process.
    cr_assert_eq (s_plan->security.n_allowed_keys, 6);
    cr_assert (zt_file_has (log, "CURVE with an allow-list"), "%s", zt_tail (log, 2000));
    //  The Python client with its certificate (when Debian's python3-zmq,
    //  -msgpack and -numpy are there). The key goes as --opt=value: a Z85
    //  key may start with '-', which argparse takes for an option.
    if (system ("/usr/bin/python3 -c 'import zmq, msgpack, numpy' >/dev/null 2>&1")
        == 0) {
        char cmd[2048], pylog[256];
        snprintf (pylog, sizeof pylog, "%s/py.log", zt_dir);
        snprintf (
            cmd, sizeof cmd,
            "timeout 30 /usr/bin/python3 %s/examples/clients/python/infer.py --endpoint '%s' "
            "--curve-server-key='%s' --curve-secret-file '%s/keys/client.key_secret' "
            "--health > %s 2>&1",
            ZI_SOURCE_DIR, s_plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect,
            s_plan->security.server_public_key, zt_dir, pylog);
        cr_assert_eq (system (cmd), 0, "%s", zt_tail (pylog, 2000));
        cr_assert (zt_file_has (pylog, "live: True, ready: True"), "%s",
                   zt_tail (pylog, 2000));
        //  Without its certificate it gets nothing.
        snprintf (cmd, sizeof cmd,
                  "timeout 30 /usr/bin/python3 %s/examples/clients/python/infer.py "
                  "--endpoint '%s' --health --timeout-ms 500 --wait-ready 0 > %s 2>&1",
                  ZI_SOURCE_DIR, s_plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect,
                  pylog);
        //  Refused quickly: no answer within 500 ms, or no connection to send on
        //  (timeout(1) says 124 when the client hung instead).
        int st = system (cmd);
        cr_assert (WIFEXITED (st) && WEXITSTATUS (st) != 0 && WEXITSTATUS (st) != 124,
                   "the Python client without keys: status %d\n%s", st, zt_tail (pylog, 2000));
        printf ("Python client: answered with its certificate, refused without\n");
    }
    else {
        printf ("Python client: skipped (no python3-zmq/msgpack/numpy)\n");
    }
    zi_client_destroy (&client);
    zt_stop_and_check_logs ();
}

//  ---------------------------------------------------------------------
//  Frame-count limit over the wire

static zmsg_t *
s_frames (const zi_msg_t *proto, int extra)
{
    zi_msg_t *copy = zi_msg_new (zi_msg_cmd (proto));
    zi_msg_set_id (copy, zi_msg_id (proto));
    if (zi_msg_name (proto)) {
        zi_msg_set_name (copy, zi_msg_name (proto));
    }
    zmsg_t *z = NULL;
    cr_assert_eq (zi_msg_encode (&copy, &z), 0);
    for (int i = 0; i < extra; i++) {
        zmsg_addmem (z, "", 0);
    }
    return z;
}

Test (security, frame_count_limit_over_the_wire)
{
    s_plan_new ();
    char log[256];
    s_start_broker (log, sizeof log);
    char err[512];
    zi_client_t *c = zi_client_new_plan (s_plan, err, sizeof err);
    cr_assert_not_null (c, "%s", err);
    zi_msg_t *health = zi_msg_new (ZI_CMD_HEALTH);
    zi_msg_set_id (health, 9);
    //  front: a HEALTH with 69 extra frames (70 in all, the limit is 65).
    zsock_t *front = zsock_new (ZMQ_DEALER);
    zsock_set_rcvtimeo (front, 5000);
    zsock_connect (front, "%s", s_plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect);
    zmsg_t *z = s_frames (health, 69);
    cr_assert_eq (zmsg_size (z), 70);
    cr_assert_eq (zmsg_send (&z, front), 0);
    zi_msg_t *answer = NULL;
    cr_assert_eq (zi_msg_recv (front, &answer, err, sizeof err), 0, "%s", err);
    cr_assert_eq (zi_msg_cmd (answer), ZI_CMD_ERROR);
    cr_assert_eq (zi_msg_code (answer), ZI_CODE_TOO_LARGE, "%s", zi_msg_reason (answer));
    printf ("front, 70 frames: %s %d '%s'\n", zi_cmd_name (zi_msg_cmd (answer)),
            zi_msg_code (answer), zi_msg_reason (answer));
    zi_msg_destroy (&answer);
    //  The next message on the same connection is read whole: the bad one
    //  was drained to its end.
    z = s_frames (health, 0);
    cr_assert_eq (zmsg_send (&z, front), 0);
    cr_assert_eq (zi_msg_recv (front, &answer, err, sizeof err), 0, "%s", err);
    cr_assert_eq (zi_msg_cmd (answer), ZI_CMD_HEALTH_REPLY);
    cr_assert_eq (zi_msg_id (answer), 9);
    zi_msg_destroy (&answer);
    //  The PULL sockets: dropped and counted (intake decodes, preprocessed
    //  relays, results decodes). 65 frames pass the count (and fail the
    //  header's own count); 66 and 1,000 do not.
    zi_plan_ep_t pulls[]
        = { ZI_PLAN_EP_INTAKE, ZI_PLAN_EP_PREPROCESSED, ZI_PLAN_EP_RESULTS };
    //  The relay reads preprocessed only while a partition stage can take
    //  what it relays: play one.
    zsock_t *partition = zsock_new (ZMQ_PULL);
    zsock_connect (partition, "%s",
                   s_plan->broker.endpoints[ZI_PLAN_EP_TO_PARTITION].connect);
    zi_msg_t *beat = zi_msg_new (ZI_CMD_HEARTBEAT);
    zi_msg_set_name (beat, "intruder");
    for (size_t i = 0; i < 3; i++) {
        zsock_t *push = zsock_new (ZMQ_PUSH);
        zsock_connect (push, "%s", s_plan->broker.endpoints[pulls[i]].connect);
        int sizes[] = { 66, 1000, 65 };
        for (int k = 0; k < 3; k++) {
            z = s_frames (beat, sizes[k] - 1);
            cr_assert_eq (zmsg_send (&z, push), 0);
        }
        char path[64];
        snprintf (path, sizeof path, "dropped.%s", zi_plan_endpoint_name (pulls[i]));
        int64_t end = zt_now_ms () + 5000;
        while (zt_stat1 (c, path) < 3) {
            cr_assert (zt_now_ms () < end, "%s: %lld", path,
                       (long long)zt_stat1 (c, path));
            usleep (5000);
        }
        printf ("%s: 66, 1000 and 65 frames: %lld dropped\n",
                zi_plan_endpoint_name (pulls[i]), (long long)zt_stat1 (c, path));
        cr_assert_eq (zt_stat1 (c, path), 3);
        zsock_destroy (&push);
    }
    zi_msg_destroy (&beat);
    zi_msg_destroy (&health);
    zsock_destroy (&partition);
    zsock_destroy (&front);
    zi_client_destroy (&c);
    zt_stop_and_check_logs ();
}

//  ---------------------------------------------------------------------
//  (c) Hostile messages to every exposed socket

typedef enum { R_FRONT, R_WORK, R_AGG, R_INTAKE, R_PRE, R_RESULTS, R_COUNT } s_role_t;

static const zi_plan_ep_t s_role_ep[R_COUNT] = {
    ZI_PLAN_EP_FRONT,  ZI_PLAN_EP_WORK,         ZI_PLAN_EP_TO_AGGREGATE,
    ZI_PLAN_EP_INTAKE, ZI_PLAN_EP_PREPROCESSED, ZI_PLAN_EP_RESULTS,
};

static uint64_t s_rng = 0x9e3779b97f4a7c15ull;

static uint32_t
s_rand (void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (uint32_t)(s_rng >> 11);
}

//  A valid message of one of 13 kinds (ids and names unknown to the
//  broker), encoded.
static zmsg_t *
s_valid (int kind)
{
    static const zi_cmd_t cmds[] = {
        ZI_CMD_REQUEST,      ZI_CMD_REPLY,     ZI_CMD_TASK,       ZI_CMD_RESULT,
        ZI_CMD_READY,        ZI_CMD_HEARTBEAT, ZI_CMD_DISCONNECT, ZI_CMD_STATS,
        ZI_CMD_HEALTH,       ZI_CMD_ERROR,     ZI_CMD_ERROR,      ZI_CMD_STATS_REPLY,
        ZI_CMD_HEALTH_REPLY,
    };
    zi_cmd_t cmd = cmds[kind % 13];
    zi_msg_t *m = cmd == ZI_CMD_ERROR ? zi_msg_new_error (ZI_CODE_INTERNAL, "hostile")
                                      : zi_msg_new (cmd);
    uint64_t id = 7000000 + s_rand ();
    if (cmd != ZI_CMD_ERROR || kind % 13 == 9) {
        zi_msg_set_id (m, id);
    }
    if (cmd == ZI_CMD_REQUEST || cmd == ZI_CMD_REPLY || cmd == ZI_CMD_TASK
        || cmd == ZI_CMD_RESULT) {
        zi_tensor_t *t = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){ 1, 3 });
        memset (t->data, 0, t->nbytes);
        zi_msg_add_tensor (m, "x", &t);
    }
    if (cmd == ZI_CMD_TASK) {
        zi_msg_add_req (m, id, 0, 1);
        zi_msg_set_mb (m, 0, 1);
    }
    if (cmd == ZI_CMD_READY) {
        zi_msg_set_seg (m, 0);
        zi_msg_set_capacity (m, 1);
        zi_msg_set_credit (m, 1);
    }
    if (cmd == ZI_CMD_READY || cmd == ZI_CMD_HEARTBEAT) {
        zi_msg_set_name (m, "intruder");
    }
    if (cmd == ZI_CMD_STATS_REPLY) {
        zi_msg_set_stats (m, "\x80", 1);
    }
    if (cmd == ZI_CMD_HEALTH_REPLY) {
        zi_msg_set_health (m, true, true);
    }
    zmsg_t *z = NULL;
    cr_assert_eq (zi_msg_encode (&m, &z), 0);
    return z;
}

static zmsg_t *
s_bytes (const void *data, size_t n)
{
    zmsg_t *z = zmsg_new ();
    zmsg_addmem (z, data, n);
    return z;
}

//  Headers that claim more than they hold.
static zmsg_t *
s_huge_claim (int which)
{
    static const char v1cmd[] = "\x82\xa1v\x01\xa3"
                                "cmd";
    char buf[512];
    size_t n = 0;
    switch (which % 7) {
    case 0: //  a map32 of 4 billion entries
        return s_bytes ("\xdf\xff\xff\xff\xff\xa1v\x01", 8);
    case 1: { //  "reqs": an array32 of 4 billion entries
        static const char h[] = "\x84\xa1v\x01\xa3"
                                "cmd\xa4TASK\xa2mb\x00\xa4reqs"
                                "\xdd\xff\xff\xff\xff\x93\x01\x00\x01";
        return s_bytes (h, sizeof h - 1);
    }
    case 2: //  "reason": a str32 of 4 GiB
        n = sizeof v1cmd - 1;
        memcpy (buf, v1cmd, n);
        buf[0] = (char)0x84;
        memcpy (buf + n,
                "\xa5"
                "ERROR\xa4"
                "code\xcd\x01\xf4\xa6reason\xdb\xff\xff\xff\xff"
                "abc",
                27);
        return s_bytes (buf, n + 27);
    case 3: { //  a tensor of shape [2^62, 2^62]: the size overflows
        n = (size_t)snprintf (buf, sizeof buf,
                              "\x84\xa1v\x01\xa3"
                              "cmd\xa7REQUEST\xa2id\x01\xa1t\x91\x83"
                              "\xa4name\xa1x\xa5"
                              "dtype\xa7"
                              "float32\xa5shape\x92");
        memcpy (buf + n,
                "\xcf\x40\x00\x00\x00\x00\x00\x00\x00"
                "\xcf\x40\x00\x00\x00\x00\x00\x00\x00",
                18);
        zmsg_t *z = s_bytes (buf, n + 18);
        zmsg_addmem (z, "abcd", 4);
        return z;
    }
    case 4: //  nesting 200 deep
        memset (buf, 0x91, 200);
        buf[200] = 0x01;
        return s_bytes (buf, 201);
    case 5: //  a bin32 of 4 GiB
        memcpy (buf, "\x82\xa1v\x01\xa1x\xc6\xff\xff\xff\xff", 11);
        return s_bytes (buf, 11);
    default: //  "t": 4 billion tensors
        n = (size_t)snprintf (buf, sizeof buf,
                              "\x84\xa1v\x01\xa3"
                              "cmd\xa7REQUEST\xa2id\x01\xa1t");
        memcpy (buf + n, "\xdd\xff\xff\xff\xff", 5);
        return s_bytes (buf, n + 5);
    }
}

//  One hostile message of a random kind.
static zmsg_t *
s_hostile (void)
{
    uint32_t kind = s_rand () % 11;
    zmsg_t *z = NULL;
    switch (kind) {
    case 0: { //  random bytes, maybe with random frames after
        uint8_t buf[300];
        size_t n = s_rand () % sizeof buf;
        for (size_t i = 0; i < n; i++) {
            buf[i] = (uint8_t)s_rand ();
        }
        z = s_bytes (buf, n);
        for (uint32_t k = s_rand () % 3; k > 0; k--) {
            zmsg_addmem (z, buf, s_rand () % 64);
        }
        return z;
    }
    case 1:
    case 2: { //  a valid header with 1..4 bytes changed
        z = s_valid ((int)(s_rand () % 13));
        zframe_t *h = zmsg_first (z);
        for (uint32_t k = 1 + s_rand () % 4; k > 0; k--) {
            zframe_data (h)[s_rand () % zframe_size (h)] = (uint8_t)s_rand ();
        }
        return z;
    }
    case 3: { //  a truncated header
        z = s_valid ((int)(s_rand () % 13));
        zframe_t *h = zmsg_pop (z);
        zframe_t *cut = zframe_new (zframe_data (h), s_rand () % zframe_size (h));
        zframe_destroy (&h);
        zmsg_prepend (z, &cut);
        return z;
    }
    case 4: { //  bytes after the map
        z = s_valid ((int)(s_rand () % 13));
        zframe_t *h = zmsg_pop (z);
        size_t n = zframe_size (h);
        uint8_t *buf = (uint8_t *)malloc (n + 3);
        memcpy (buf, zframe_data (h), n);
        memcpy (buf + n, "\x01\x02\x03", 3);
        zframe_t *longer = zframe_new (buf, n + 1 + s_rand () % 3);
        free (buf);
        zframe_destroy (&h);
        zmsg_prepend (z, &longer);
        return z;
    }
    case 5: {                               //  the wrong number of tensor frames
        z = s_valid ((int)(s_rand () % 4)); //  REQUEST, REPLY, TASK, RESULT
        if (s_rand () % 2) {
            zframe_t *last = zmsg_last (z);
            zmsg_remove (z, last);
            zframe_destroy (&last);
        }
        else {
            zmsg_addmem (z, "\0\0\0\0\0\0\0\0\0\0\0\0", 12);
        }
        return z;
    }
    case 6: { //  too many frames
        z = s_valid ((int)(s_rand () % 13));
        for (uint32_t k = 66 + s_rand () % 40; zmsg_size (z) < k;) {
            zmsg_addmem (z, "", 0);
        }
        return z;
    }
    case 7: { //  an unknown command, another version
        const char *h = s_rand () % 2 ? "\x83\xa1v\x01\xa3"
                                        "cmd\xa7"
                                        "EXPLODE\xa2id\x05"
                                      : "\x83\xa1v\x02\xa3"
                                        "cmd\xa7REQUEST\xa2id\x05";
        return s_bytes (h, strlen (h) + (h[2] == 'v' ? 0 : 0));
    }
    case 8: //  huge claimed counts
        return s_huge_claim ((int)s_rand ());
    case 9: { //  empty frames
        z = zmsg_new ();
        for (uint32_t k = 1 + s_rand () % 3; k > 0; k--) {
            zmsg_addmem (z, "", 0);
        }
        return z;
    }
    default: //  a valid message the socket does not take
        return s_valid ((int)(s_rand () % 13));
    }
}

//  How the broker must treat msg on that socket: *answer (a ROUTER answers
//  it) and *count (it shows in STATS: dropped, or stale / late for a
//  well-formed TASK / REPLY / ERROR about nothing it knows). False when
//  the message is one this test must not send (it would be taken as a
//  real peer's: a READY on work, a READY or HEARTBEAT on to_aggregate, a
//  REQUEST or STATS on front, a valid relayed message on preprocessed).
static bool
s_expect (s_role_t role, zmsg_t *msg, bool *answer, bool *count)
{
    zmsg_t *copy = zmsg_dup (msg);
    if (zmsg_size (copy) > 1 && zframe_size (zmsg_first (copy)) == 0) {
        zframe_t *delim = zmsg_pop (copy); //  a receiver skips one delimiter
        zframe_destroy (&delim);
    }
    zi_msg_t *m = NULL;
    int rc = zi_msg_decode (&copy, &m, NULL, 0);
    zmsg_destroy (&copy);
    bool router = role == R_FRONT || role == R_WORK || role == R_AGG;
    if (rc) {
        *answer = router;
        *count = true;
        return true;
    }
    zi_cmd_t cmd = zi_msg_cmd (m);
    zi_msg_destroy (&m);
    *answer = false;
    *count = true;
    switch (role) {
    case R_FRONT:
        if (cmd == ZI_CMD_REQUEST || cmd == ZI_CMD_STATS || cmd == ZI_CMD_HEALTH) {
            return false;
        }
        *answer = cmd != ZI_CMD_ERROR;
        return true;
    case R_WORK:
        if (cmd == ZI_CMD_READY) {
            return false;
        }
        //  From a worker it does not know: DISCONNECT ("say READY"), but
        //  to a DISCONNECT.
        *answer = cmd != ZI_CMD_DISCONNECT;
        *count = cmd == ZI_CMD_DISCONNECT;
        return true;
    case R_AGG:
        if (cmd == ZI_CMD_READY || cmd == ZI_CMD_HEARTBEAT) {
            return false;
        }
        *answer = cmd != ZI_CMD_ERROR && cmd != ZI_CMD_DISCONNECT;
        return true;
    case R_PRE:
        return cmd == ZI_CMD_HEARTBEAT || cmd == ZI_CMD_DISCONNECT;
    default:
        return true;
    }
}

//  What STATS counts for a socket: dropped messages, plus well-formed
//  stage messages about requests it does not have.
static int64_t
s_counted (zi_client_t *c, s_role_t role)
{
    zt_stats_t s;
    cr_assert (zt_stats (c, &s, 5000), "the broker does not answer STATS");
    char path[64];
    snprintf (path, sizeof path, "dropped.%s", zi_plan_endpoint_name (s_role_ep[role]));
    int64_t n = zt_stat (&s, path);
    if (role == R_INTAKE || role == R_RESULTS) {
        n += zt_stat (&s, "tasks.stale") + zt_stat (&s, "tasks.replies_dropped");
    }
    zt_stats_done (&s);
    return n;
}

static int
s_drain_answers (zsock_t *sock)
{
    int n = 0;
    zmsg_t *m;
    while ((m = zmsg_recv_nowait (sock))) {
        n++;
        zmsg_destroy (&m);
    }
    return n;
}

//  Send n hostile messages to one socket in windows of 50, each window
//  waited for (every answer in, every message counted); checks the totals.
//  The broker's peak RSS is kept in *peak.
static void
s_attack (zi_client_t *c, s_role_t role, int n, pid_t broker, long *peak, const char *log)
{
    enum { WINDOW = 50 };
    zi_plan_ep_t ep = s_role_ep[role];
    bool router = role == R_FRONT || role == R_WORK || role == R_AGG;
    zsock_t *sock = zsock_new (router ? ZMQ_DEALER : ZMQ_PUSH);
    if (router) {
        zsock_set_identity (sock, role == R_WORK ? "intruder-w" : "intruder");
    }
    zsock_set_rcvhwm (sock, 0);
    zsock_set_sndhwm (sock, 0);
    zsock_set_linger (sock, 0);
    zsock_connect (sock, "%s", s_plan->broker.endpoints[ep].connect);
    int64_t counted0 = s_counted (c, role);
    int sent = 0, want_answers = 0, want_counted = 0, answers = 0;
    while (sent < n) {
        for (int i = 0; i < WINDOW && sent < n; i++) {
            zmsg_t *m = s_hostile ();
            bool answer, count;
            if (!s_expect (role, m, &answer, &count)) {
                zmsg_destroy (&m);
                i--;
                continue;
            }
            want_answers += answer;
            want_counted += count;
            cr_assert_eq (zmsg_send (&m, sock), 0);
            sent++;
        }
        //  The window is done when every answer is in and STATS counts
        //  every message (then the next one: the queues stay short).
        int64_t end = zt_now_ms () + 20000;
        int64_t counted = 0;
        while (true) {
            answers += router ? s_drain_answers (sock) : 0;
            counted = s_counted (c, role) - counted0;
            if (answers >= want_answers && counted >= want_counted) {
                break;
            }
            cr_assert (zt_alive (broker), "the broker died:\n%s", zt_tail (log, 3000));
            cr_assert (zt_now_ms () < end,
                       "%s: after %d messages: %d of %d answers, %lld of %d counted:\n%s",
                       zi_plan_endpoint_name (ep), sent, answers, want_answers,
                       (long long)counted, want_counted, zt_tail (log, 3000));
            usleep (2000);
        }
        long kb = zt_rss_kb (broker);
        *peak = kb > *peak ? kb : *peak;
    }
    answers += router ? s_drain_answers (sock) : 0; //  nothing more comes late
    int64_t counted = s_counted (c, role) - counted0;
    if (n >= 10000) {
        printf (
            "(c) %-13s %d hostile messages: %d answered (expected %d), %lld counted in "
            "STATS (expected %d)\n",
            zi_plan_endpoint_name (ep), sent, answers, want_answers, (long long)counted,
            want_counted);
    }
    cr_assert_eq (answers, want_answers, "%s", zi_plan_endpoint_name (ep));
    cr_assert_eq (counted, want_counted, "%s", zi_plan_endpoint_name (ep));
    zsock_destroy (&sock);
}

//  A frame over ZMQ_MAXMSGSIZE: libzmq drops the connection before the
//  frame is stored, and the broker never sees it.
static void
s_oversize (zi_plan_ep_t ep, int type)
{
    zsock_t *sock = zsock_new (type);
    zsock_set_linger (sock, 100);
    zsock_connect (sock, "%s", s_plan->broker.endpoints[ep].connect);
    zmsg_t *big = zmsg_new ();
    size_t over = (size_t)s_plan->broker.max_message_bytes + 1;
    char *junk = (char *)calloc (1, over);
    zmsg_addmem (big, junk, over);
    free (junk);
    cr_assert_eq (zmsg_send (&big, sock), 0);
    zsock_destroy (&sock);
}

Test (security, hostile_messages_to_every_socket_are_answered_or_counted, .timeout = 240)
{
    s_plan_new ();
    char log[256];
    zi_client_t *c = NULL;
    pid_t up = s_start_up (log, sizeof log, &c);
    s_check_answers (c, 20, 0); //  warm up, and the answers are right
    pid_t broker = zt_child (up, "zinfer-broker", NULL);
    cr_assert_gt (broker, 0);
    //  A first round of 2,000 messages a socket settles the allocator's
    //  and libzmq's buffers (a one-time cost, whose peak depends on how
    //  many messages libzmq happens to hold at once); growth is the peak
    //  of the next 60,000 over the peak of those 12,000: memory that grew
    //  with the number of messages (a leak) would show there.
    long start = zt_rss_kb (broker), warm = start;
    for (int role = 0; role < R_COUNT; role++) {
        s_attack (c, (s_role_t)role, 2000, broker, &warm, log);
    }
    long base = warm, peak = zt_rss_kb (broker);
    int64_t heap0 = zt_stat1 (c, "memory.heap_bytes");
    enum { PER_SOCKET = 10000 };
    int64_t t0 = zt_now_ms ();
    for (int role = 0; role < R_COUNT; role++) {
        s_attack (c, (s_role_t)role, PER_SOCKET, broker, &peak, log);
        bool router = role == R_FRONT || role == R_WORK || role == R_AGG;
        s_oversize (s_role_ep[role], router ? ZMQ_DEALER : ZMQ_PUSH);
        cr_assert (zt_alive (broker), "the broker died:\n%s", zt_tail (log, 3000));
    }
    int64_t took = zt_now_ms () - t0;
    int64_t heap1 = zt_stat1 (c, "memory.heap_bytes");
    printf ("(c) broker heap in use: %lld bytes after the warm-up, %lld bytes after\n",
            (long long)heap0, (long long)heap1);
    long end_kb = zt_rss_kb (broker);
    peak = end_kb > peak ? end_kb : peak;
    printf (
        "(c) %d hostile messages (+ a frame over ZMQ_MAXMSGSIZE on each socket) in %lld "
        "ms; broker RSS %ld KiB at start, peak %ld KiB during 12,000 warm-up messages, "
        "then peak %ld KiB (+%.1f%%), %ld KiB at the end\n",
        R_COUNT * PER_SOCKET, (long long)took, start, base, peak,
        100.0 * (double)(peak - base) / (double)base, end_kb);
    cr_assert_eq (zt_child (up, "zinfer-broker", NULL), broker,
                  "the broker was restarted");
    cr_assert (!ZT_MEMORY_CHECKED || (double)(peak - base) < 0.10 * (double)base,
               "RSS %ld -> %ld KiB", base, peak);
    //  What the broker's allocator has handed out (not what it keeps for
    //  reuse) does not grow either: nothing leaks. (It moves by some 100
    //  KiB with what libzmq holds at the moment; a leak of 5 bytes a
    //  message would be 300 KiB.)
    cr_assert (!ZT_MEMORY_CHECKED || heap1 - heap0 < 256 * 1024,
               "heap %lld -> %lld bytes", (long long)heap0, (long long)heap1);
    //  The pipeline is as good as before.
    s_check_answers (c, 20, 1000);
    zi_client_destroy (&c);
    zt_stop_and_check_logs ();
}

//  ---------------------------------------------------------------------
//  (d) Unauthenticated floods

//  A peer that speaks ZMTP 3.0 by hand on a raw socket (libzmq itself
//  never puts an unfinished message on the wire): the NULL greeting, READY
//  as a DEALER, then n empty frames each flagged MORE, and never the
//  last one. Returns the bytes written (the socket stays open in *fd).
static uint64_t
s_raw_endless (const char *ipc_path, int n, int *fd)
{
    *fd = socket (AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    snprintf (addr.sun_path, sizeof addr.sun_path, "%s", ipc_path);
    cr_assert_eq (connect (*fd, (struct sockaddr *)&addr, sizeof addr), 0, "%s",
                  strerror (errno));
    uint8_t greeting[64]
        = { 0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 1, 'N', 'U', 'L', 'L' };
    static const uint8_t ready[]
        = { 0x04, 41,  5,   'R', 'E', 'A', 'D', 'Y', 11,  'S', 'o', 'c', 'k', 'e', 't',
            '-',  'T', 'y', 'p', 'e', 0,   0,   0,   6,   'D', 'E', 'A', 'L', 'E', 'R',
            8,    'I', 'd', 'e', 'n', 't', 'i', 't', 'y', 0,   0,   0,   0 };
    uint64_t total = 0;
    //  libzmq wants our READY after it has sent its greeting: read that
    //  (a refusing peer may send nothing, or close: then we stop).
    struct timeval tv = { .tv_sec = 2 };
    setsockopt (*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t theirs[256];
    if (write (*fd, greeting, sizeof greeting) == (ssize_t)sizeof greeting
        && read (*fd, theirs, sizeof theirs) > 0
        && write (*fd, ready, sizeof ready) == (ssize_t)sizeof ready) {
        total = sizeof greeting + sizeof ready;
    }
    //  10^6 frames of [MORE, size 0], in blocks; a peer that refused us
    //  closes the connection and the writes stop (EPIPE is ignored: the
    //  test runner ignores SIGPIPE only if told, so block it here).
    signal (SIGPIPE, SIG_IGN);
    static uint8_t block[2 * 4096];
    for (size_t i = 0; i < sizeof block; i += 2) {
        block[i] = 0x01;
        block[i + 1] = 0x00;
    }
    for (int sent = 0; sent < n;) {
        int frames = n - sent < 4096 ? n - sent : 4096;
        ssize_t w = write (*fd, block, (size_t)frames * 2);
        if (w <= 0) {
            break;
        }
        total += (uint64_t)w;
        sent += (int)(w / 2);
    }
    return total;
}

static zsock_t *
s_front_socket (zcert_t *cert, const char *server_key)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    zsock_set_linger (sock, 0);
    zsock_set_sndtimeo (sock, 0);
    zsock_set_sndhwm (sock, 0);
    if (cert) {
        zcert_apply (cert, sock);
        zsock_set_curve_serverkey (sock, server_key);
    }
    zsock_connect (sock, "%s", s_plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect);
    return sock;
}

//  The broker's RSS and the time of one HEALTH round trip of an allowed
//  client, every 50 ms for ms.
static void
s_watch (pid_t broker, zi_client_t *good, int ms, long *peak, int64_t *worst_rtt)
{
    int64_t end = zt_now_ms () + ms;
    while (zt_now_ms () < end) {
        long kb = zt_rss_kb (broker);
        *peak = kb > *peak ? kb : *peak;
        bool live = false, ready = false;
        int64_t t0 = zt_now_ms ();
        char err[256];
        cr_assert_eq (zi_client_health (good, 5000, &live, &ready, err, sizeof err), 0,
                      "the allowed client is not served during the flood: %s", err);
        int64_t rtt = zt_now_ms () - t0;
        *worst_rtt = rtt > *worst_rtt ? rtt : *worst_rtt;
        usleep (50000);
    }
}

Test (security, unauthenticated_floods_do_not_grow_the_broker, .timeout = 120)
{
    s_plan_new ();
    char out[8192], args[512], log[256], err[512];
    snprintf (args, sizeof args, "%s/keys --name peer --plan %s", zt_dir, s_plan_path);
    s_keys (args, out, sizeof out);
    s_plan_reload ();
    pid_t broker = s_start_broker (log, sizeof log);
    zi_client_t *good = zi_client_new_plan (s_plan, err, sizeof err);
    cr_assert_not_null (good, "%s", err);
    long peak = 0;
    int64_t rtt = 0;
    s_watch (broker, good, 300, &peak, &rtt); //  warm up
    long base = zt_rss_kb (broker);
    peak = base;
    rtt = 0;
    const char *server = s_plan->security.server_public_key;
    enum { N = 20 };
    zsock_t *socks[4 * N] = { NULL };
    zcert_t *strangers[N];
    int ns = 0;
    uint64_t sent = 0;
    //  1. Clients without CURVE (NULL mechanism) and with unknown keys,
    //  each sending 5,000 REQUESTs.
    zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
    zi_tensor_t *x = zt_input (1);
    zi_msg_add_tensor_copy (req, "input", x);
    zmsg_t *proto = NULL;
    cr_assert_eq (zi_msg_encode (&req, &proto), 0);
    for (int i = 0; i < N; i++) {
        strangers[i] = zcert_new ();
        socks[ns++] = s_front_socket (NULL, NULL);
        socks[ns++] = s_front_socket (strangers[i], server);
    }
    for (int k = 0; k < 5000; k++) {
        for (int i = 0; i < ns; i++) {
            zmsg_t *m = zmsg_dup (proto);
            if (zmsg_send (&m, socks[i]) == 0) {
                sent++;
            }
            zmsg_destroy (&m);
        }
    }
    s_watch (broker, good, 500, &peak, &rtt);
    //  2. A never-ending multipart message: 10^6 frames with MORE, from a
    //  raw socket speaking ZMTP by hand (NULL mechanism).
    const char *ipc
        = s_plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect + strlen ("ipc://");
    int endless_fd = -1;
    uint64_t endless_bytes = s_raw_endless (ipc, 1000000, &endless_fd);
    s_watch (broker, good, 500, &peak, &rtt);
    //  3. Raw connections: 20 that write 1 MB of garbage, 100 that write
    //  nothing (the handshake never completes).
    int raw[120];
    char *garbage = (char *)malloc (1 << 20);
    for (int i = 0; i < (1 << 20); i++) {
        garbage[i] = (char)s_rand ();
    }
    uint64_t garbage_bytes = 0;
    for (int i = 0; i < 120; i++) {
        raw[i] = socket (AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        snprintf (addr.sun_path, sizeof addr.sun_path, "%s", ipc);
        cr_assert_eq (connect (raw[i], (struct sockaddr *)&addr, sizeof addr), 0, "%s",
                      strerror (errno));
        if (i < 20) {
            fcntl (raw[i], F_SETFL, O_NONBLOCK);
            ssize_t w = write (raw[i], garbage, 1 << 20);
            garbage_bytes += w > 0 ? (uint64_t)w : 0;
        }
    }
    free (garbage);
    s_watch (broker, good, 1000, &peak, &rtt);
    long end_kb = zt_rss_kb (broker);
    zt_stats_t s;
    cr_assert (zt_stats (good, &s, 5000));
    int64_t admitted = zt_stat (&s, "requests.admitted");
    int64_t dropped = zt_stat (&s, "dropped.front");
    zt_stats_done (&s);
    printf (
        "(d) CURVE on: %d clients without keys and %d with unknown keys sent %llu "
        "REQUESTs; a raw ZMTP peer streamed a never-ending message (%llu bytes written "
        "before the broker hung up); 120 raw connections (%llu bytes of garbage): broker "
        "RSS %ld KiB before, peak %ld KiB (+%.1f%%), %ld KiB after; %lld admitted, %lld "
        "dropped (none got in); allowed client served throughout (worst HEALTH round "
        "trip %lld ms)\n",
        N, N, (unsigned long long)sent, (unsigned long long)endless_bytes,
        (unsigned long long)garbage_bytes, base, peak,
        100.0 * (double)(peak - base) / (double)base, end_kb, (long long)admitted,
        (long long)dropped, (long long)rtt);
    cr_assert_eq (admitted, 0, "an unauthenticated request was admitted");
    cr_assert (!ZT_MEMORY_CHECKED || (double)(peak - base) < 0.10 * (double)base,
               "RSS %ld -> %ld KiB", base, peak);
    cr_assert_lt (rtt, 1000);
    for (int i = 0; i < 120; i++) {
        close (raw[i]);
    }
    close (endless_fd);
    for (int i = 0; i < ns; i++) {
        zsock_destroy (&socks[i]);
    }
    for (int i = 0; i < N; i++) {
        zcert_destroy (&strangers[i]);
    }
    zmsg_destroy (&proto);
    zi_tensor_destroy (&x);
    zi_client_destroy (&good);
    //  For the record (README, "Threat model"): WITHOUT CURVE the same
    //  endless message is let in, and libzmq holds its frames in memory
    //  (HWM counts messages, MAXMSGSIZE frames): the broker grows. Measured
    //  and printed, not asserted: it is the documented limit.
    int st;
    zt_stop (broker, SIGTERM, 5000, &st);
    s_plan->security.curve = false;
    zt_plan_save (s_plan, s_plan_path);
    broker = s_start_broker (log, sizeof log);
    long before = zt_rss_kb (broker);
    int open_fd = -1;
    uint64_t open_bytes = s_raw_endless (ipc, 1000000, &open_fd);
    long grown = before;
    int64_t until = zt_now_ms () + 3000;
    while (zt_now_ms () < until) {
        long kb = zt_rss_kb (broker);
        grown = kb > grown ? kb : grown;
        if (grown - before > 50000) {
            break; //  it has taken them all in
        }
        usleep (20000);
    }
    printf (
        "(d) for comparison, CURVE off: one endless message of 10^6 frames (%llu bytes "
        "on the wire) grows the broker from %ld KiB to %ld KiB (+%ld KiB): without CURVE "
        "a peer that reaches the port is trusted\n",
        (unsigned long long)open_bytes, before, grown, grown - before);
    close (open_fd);
    zt_stop_and_check_logs ();
}
