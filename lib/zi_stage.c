/*  zi_stage.c - shared plumbing of the stage programs; see zi_stage.h. */
#include "zi_stage.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "zi_log.h"
#include "zi_security.h"
#include "zi_transform.h"
#include "zi_version.h"

struct zi_stage {
    zi_plan_t *plan;                        //  owned
    const zi_plan_stage_t *config;          //  inside plan
    const zi_plan_replica_t *replica;       //  inside plan
    int64_t give_up_at;                     //  zclock_mono ms; 0 until a signal
    int64_t interval;                       //  heartbeat interval, ms
    int64_t next_beat;                      //  zclock_mono ms of the next HEARTBEAT
};

//  =====================================================================
//  Arguments

static void
s_usage (FILE *out, const char *program, const char *what)
{
    fprintf (
        out,
        "usage: %s --plan PLAN --name REPLICA [--log-level LEVEL]\n"
        "\n"
        "The zinfer %s\n"
        "\n"
        "  --plan PLAN        the plan file every process of the pipeline starts from\n"
        "  --name REPLICA     this process's replica name in the plan\n"
        "  --log-level LEVEL  debug, info, warn, error or off (default: $ZI_LOG_LEVEL or "
        "info)\n"
        "  -h, --help         show this help\n"
        "  -V, --version      show the version\n",
        program, what);
}

//  Match "--flag VALUE" and "--flag=VALUE". Returns 1 when argv[*i] is the
//  flag (value stored, *i advanced), 0 when it is not, -1 when its value
//  is missing.
static int
s_flag (int argc, char **argv, int *i, const char *flag, const char **value)
{
    const char *arg = argv[*i];
    size_t len = strlen (flag);
    if (strncmp (arg, flag, len) != 0) {
        return 0;
    }
    if (arg[len] == '=') {
        *value = arg + len + 1;
        return 1;
    }
    if (arg[len] != 0) {
        return 0;
    }
    if (*i + 1 >= argc) {
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

static int
s_log_level (const char *name, zi_log_level_t *level)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++) {
        if (strcasecmp (name, names[i]) == 0) {
            *level = (zi_log_level_t) i;
            return 0;
        }
    }
    return ZI_ERR_INVALID;
}

//  Explain why `name` cannot be run by this program; 0 when it can.
static int
s_check_replica (const zi_plan_t *plan, const char *program, zi_plan_stage_kind_t kind,
                 const char *plan_path, const char *name, const zi_plan_stage_t **stage_p,
                 const zi_plan_replica_t **replica_p)
{
    const zi_plan_segment_t *segment = NULL;
    const zi_plan_stage_t *stage = NULL;
    const zi_plan_replica_t *replica
        = zi_plan_find_replica (plan, name, &segment, &stage);
    const char *kind_name = zi_plan_stage_kind_name (kind);
    if (!replica) {
        char names[512] = "";
        size_t pos = 0;
        const zi_plan_stage_t *mine = zi_plan_find_stage (plan, kind);
        for (size_t i = 0; mine && mine->kind == kind && i < mine->n_replicas; i++) {
            int n = snprintf (names + pos, sizeof names - pos, "%s%s", i ? ", " : "",
                              mine->replicas[i].name);
            if (n < 0 || (size_t) n >= sizeof names - pos) {
                break;
            }
            pos += (size_t) n;
        }
        fprintf (stderr, "%s: the plan %s has no replica '%s' (%s replicas: %s)\n",
                 program, plan_path, name, kind_name, *names ? names : "none");
        return ZI_ERR_NOTFOUND;
    }
    if (segment) {
        fprintf (stderr, "%s: replica '%s' is an exec worker of segment %" PRId64
                 ", not a %s stage replica (run it with zinfer-exec)\n",
                 program, name, segment->index, kind_name);
        return ZI_ERR_INVALID;
    }
    if (stage->kind == ZI_PLAN_STAGE_CUSTOM) {
        fprintf (stderr, "%s: replica '%s' belongs to a custom stage that replaces %s: "
                 "the plan runs its own command for it, not %s\n", program, name,
                 zi_plan_stage_kind_name (stage->replaces), program);
        return ZI_ERR_INVALID;
    }
    if (stage->kind != kind) {
        fprintf (stderr, "%s: replica '%s' belongs to the %s stage, not %s (run it with "
                 "zinfer-%s)\n", program, name, zi_plan_stage_kind_name (stage->kind),
                 kind_name, zi_plan_stage_kind_name (stage->kind));
        return ZI_ERR_INVALID;
    }
    *stage_p = stage;
    *replica_p = replica;
    return 0;
}

zi_stage_t *
zi_stage_new (const char *program, zi_plan_stage_kind_t kind, const char *what, int argc,
              char **argv, int *status)
{
    *status = 2;
    zi_log_set_ident (program, NULL);
    const char *plan_path = NULL, *name = NULL, *level_name = NULL;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp (arg, "-h") == 0 || strcmp (arg, "--help") == 0) {
            s_usage (stdout, program, what);
            *status = 0;
            return NULL;
        }
        if (strcmp (arg, "-V") == 0 || strcmp (arg, "--version") == 0) {
            printf ("%s %s\n", program, ZINFER_VERSION);
            *status = 0;
            return NULL;
        }
        int m = s_flag (argc, argv, &i, "--plan", &plan_path);
        if (m == 0) {
            m = s_flag (argc, argv, &i, "--name", &name);
        }
        if (m == 0) {
            m = s_flag (argc, argv, &i, "--log-level", &level_name);
        }
        if (m < 0) {
            fprintf (stderr, "%s: option '%s' needs a value (try --help)\n", program,
                     arg);
            return NULL;
        }
        if (m == 0) {
            fprintf (stderr, "%s: unknown %s '%s' (try --help)\n", program,
                     arg[0] == '-' ? "option" : "argument", arg);
            return NULL;
        }
    }
    if (level_name) {
        zi_log_level_t level;
        if (s_log_level (level_name, &level)) {
            fprintf (stderr, "%s: --log-level '%s': expected debug, info, warn, error or "
                     "off\n", program, level_name);
            return NULL;
        }
        zi_log_set_level (level);
    }
    if (!plan_path || !*plan_path || !name || !*name) {
        fprintf (stderr, "%s: --plan PLAN and --name REPLICA are required (try --help)\n",
                 program);
        return NULL;
    }
    //  Install CZMQ's signal handler now, so a SIGTERM that arrives while
    //  the plan loads is noticed by the loop rather than killing us.
    zsys_init ();
    char err[1024];
    zi_plan_t *plan = zi_plan_load (plan_path, err, sizeof err);
    if (!plan) {
        fprintf (stderr, "%s: cannot load the plan: %s\n", program, err);
        return NULL;
    }
    const zi_plan_stage_t *config = NULL;
    const zi_plan_replica_t *replica = NULL;
    if (s_check_replica (plan, program, kind, plan_path, name, &config, &replica)) {
        zi_plan_destroy (&plan);
        return NULL;
    }
    zi_stage_t *self = (zi_stage_t *) calloc (1, sizeof *self);
    if (!self) {
        fprintf (stderr, "%s: out of memory\n", program);
        zi_plan_destroy (&plan);
        return NULL;
    }
    self->plan = plan;
    self->config = config;
    self->replica = replica;
    self->interval = plan->broker.heartbeat_interval_ms > 0
                         ? plan->broker.heartbeat_interval_ms
                         : ZI_PLAN_DEFAULT_HEARTBEAT_MS;
    zi_log_set_ident (program, replica->name);
    *status = 0;
    return self;
}

void
zi_stage_destroy (zi_stage_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zi_stage_t *self = *self_p;
    zi_plan_destroy (&self->plan);
    free (self);
    *self_p = NULL;
}

const zi_plan_t *
zi_stage_plan (const zi_stage_t *self)
{
    return self->plan;
}

const zi_plan_stage_t *
zi_stage_config (const zi_stage_t *self)
{
    return self->config;
}

const zi_plan_replica_t *
zi_stage_replica (const zi_stage_t *self)
{
    return self->replica;
}

const char *
zi_stage_name (const zi_stage_t *self)
{
    return self->replica->name;
}

//  =====================================================================
//  Sockets

zsock_t *
zi_stage_connect (zi_stage_t *self, int type, zi_plan_ep_t ep, const char *identity)
{
    const char *endpoint = self->plan->broker.endpoints[ep].connect;
    const char *ep_name = zi_plan_endpoint_name (ep);
    if (!endpoint) {
        zi_log_error ("STAGE-CONNECT-FAILED", "the plan has no '%s' endpoint", ep_name);
        return NULL;
    }
    zsock_t *sock = zsock_new (type);
    if (!sock) {
        zi_log_error ("STAGE-CONNECT-FAILED", "cannot create a socket for '%s'", ep_name);
        return NULL;
    }
    //  MAXMSGSIZE, ZMTP heartbeats (a PUSH/PULL link has no other way to
    //  notice a peer that vanished without a FIN), handshake bound,
    //  reconnect backoff.
    zi_security_socket (sock, self->plan, false);
    zsock_set_sndhwm (sock, ZI_STAGE_HWM);
    zsock_set_rcvhwm (sock, ZI_STAGE_HWM);
    zsock_set_linger (sock, 0);
    //  With CURVE: this replica's key pair and the broker's public key.
    char err[1024];
    if (zi_security_client (sock, self->plan, self->replica->name, err, sizeof err)) {
        zi_log_error ("STAGE-CONNECT-FAILED", "'%s': %s", ep_name, err);
        zsock_destroy (&sock);
        return NULL;
    }
    if (identity) {
        zsock_set_identity (sock, identity);
    }
    if (zsock_connect (sock, "%s", endpoint)) {
        zi_log_error ("STAGE-CONNECT-FAILED", "cannot connect to '%s' at %s: %s", ep_name,
                      endpoint, zmq_strerror (zmq_errno ()));
        zsock_destroy (&sock);
        return NULL;
    }
    zi_log_debug ("STAGE-CONNECTED", "%s socket connected to '%s' at %s",
                  zsock_type_str (sock), ep_name, endpoint);
    return sock;
}

void
zi_stage_close (zsock_t **sock_p, bool flush)
{
    if (!sock_p || !*sock_p) {
        return;
    }
    zsock_set_linger (*sock_p, flush ? ZI_STAGE_LINGER_MS : 0);
    zsock_destroy (sock_p);
}

bool
zi_stage_interrupted (void)
{
    return zsys_interrupted != 0;
}

int
zi_stage_wait (zsock_t *sock, int64_t timeout_ms)
{
    if (timeout_ms < 0 || timeout_ms > ZI_STAGE_POLL_MS) {
        timeout_ms = ZI_STAGE_POLL_MS;
    }
    zmq_pollitem_t item = {zsock_resolve (sock), 0, ZMQ_POLLIN, 0};
    int n = zmq_poll (&item, 1, (long) timeout_ms);
    return n > 0 && (item.revents & ZMQ_POLLIN) ? 1 : 0;
}

int
zi_stage_send (zi_stage_t *self, zsock_t *sock, zi_msg_t **msg_p)
{
    while (true) {
        long wait = ZI_STAGE_POLL_MS;
        if (zi_stage_interrupted ()) {
            int64_t now = zclock_mono ();
            if (!self->give_up_at) {
                self->give_up_at = now + ZI_STAGE_GRACE_MS;
            }
            if (now >= self->give_up_at) {
                zi_msg_destroy (msg_p);
                return ZI_ERR_TIMEOUT;
            }
            wait = (long) (self->give_up_at - now) < wait
                       ? (long) (self->give_up_at - now)
                       : wait;
        }
        //  POLLOUT: the socket takes a message now without blocking, so
        //  the send cannot hang past a signal; a multipart message is then
        //  queued whole.
        zmq_pollitem_t item = {zsock_resolve (sock), 0, ZMQ_POLLOUT, 0};
        int n = zmq_poll (&item, 1, wait);
        if (n > 0 && (item.revents & ZMQ_POLLOUT)) {
            return zi_msg_send (msg_p, sock);
        }
    }
}

//  HEARTBEAT or DISCONNECT {name} on a PUSH link, never waiting: with no
//  peer or a full queue there is nobody to tell right now.
static void
s_signal (zi_stage_t *self, zsock_t *sock, zi_cmd_t cmd, const char *reason)
{
    if (!(zsock_events (sock) & ZMQ_POLLOUT)) {
        return;
    }
    zi_msg_t *msg = zi_msg_new (cmd);
    if (!msg) {
        return;
    }
    zi_msg_set_name (msg, self->replica->name);
    if (reason) {
        zi_msg_set_reason (msg, reason);
    }
    zi_msg_send (&msg, sock);
}

void
zi_stage_beat (zi_stage_t *self, zsock_t *sock)
{
    int64_t now = zclock_mono ();
    if (now < self->next_beat) {
        return;
    }
    self->next_beat = now + self->interval;
    s_signal (self, sock, ZI_CMD_HEARTBEAT, NULL);
}

int64_t
zi_stage_beat_due_ms (const zi_stage_t *self)
{
    int64_t left = self->next_beat - zclock_mono ();
    return left < 0 ? 0 : left;
}

void
zi_stage_leave (zi_stage_t *self, zsock_t *sock, const char *reason)
{
    s_signal (self, sock, ZI_CMD_DISCONNECT, reason);
}

zi_msg_t *
zi_stage_error (uint64_t id, zi_code_t code, const char *reason)
{
    zi_msg_t *msg
        = zi_msg_new_error (code, reason && *reason ? reason : zi_code_name (code));
    if (msg) {
        zi_msg_set_id (msg, id);
    }
    return msg;
}

//  =====================================================================
//  Preprocess

//  "float32[?,28,28]" for a declaration.
static char *
s_decl_str (const zi_plan_tensor_t *decl, char *buf, size_t len)
{
    size_t pos = 0;
    int n = snprintf (buf, len, "%s[", decl->dtype == ZI_DT_UNDEFINED
                                           ? "any"
                                           : zi_dtype_name (decl->dtype));
    pos = n > 0 ? (size_t) n : 0;
    for (int i = 0; i < decl->rank && pos < len; i++) {
        n = decl->shape[i] < 0
                ? snprintf (buf + pos, len - pos, "%s?", i ? "," : "")
                : snprintf (buf + pos, len - pos, "%s%lld", i ? "," : "",
                            (long long) decl->shape[i]);
        pos += n > 0 ? (size_t) n : 0;
    }
    if (pos < len) {
        snprintf (buf + pos, len - pos, "]");
    }
    return buf;
}

//  A TASK with the header fields of `task` and no tensors.
static zi_msg_t *
s_task_like (const zi_msg_t *task)
{
    zi_msg_t *out = zi_msg_new (ZI_CMD_TASK);
    if (!out) {
        return NULL;
    }
    size_t nreqs = 0;
    const zi_msg_req_t *reqs = zi_msg_reqs (task, &nreqs);
    if ((nreqs && zi_msg_set_reqs (out, reqs, nreqs))
        || zi_msg_set_mb (out, zi_msg_mb (task),
                          zi_msg_nmb (task) ? zi_msg_nmb (task) : 1)
        || zi_msg_set_prio (out, zi_msg_prio (task))) {
        zi_msg_destroy (&out);
        return NULL;
    }
    if (zi_msg_has (task, "id")) {
        zi_msg_set_id (out, zi_msg_id (task));
    }
    zi_msg_set_seg (out, zi_msg_seg (task));
    if (zi_msg_has (task, "deadline")) {
        zi_msg_set_deadline_ms (out, zi_msg_deadline_ms (task));
    }
    if (zi_msg_has (task, "attempt")) {
        zi_msg_set_attempt (out, zi_msg_attempt (task));
    }
    return out;
}

int
zi_stage_preprocess (const zi_plan_t *plan, const zi_plan_stage_t *stage,
                     const zi_msg_t *task, zi_msg_t **out, char *err, size_t errlen)
{
    *out = NULL;
    //  What clients send: the stage's declarations (with their ops), plus
    //  every model input the stage does not declare, taken as it is.
    size_t nstage = stage ? stage->n_tensors : 0;
    size_t nmodel = plan ? plan->model.n_inputs : 0;
    zi_plan_io_t *decls = (zi_plan_io_t *) calloc (nstage + nmodel + 1, sizeof *decls);
    if (!decls) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    size_t ndecls = 0;
    for (size_t i = 0; i < nstage; i++) {
        decls[ndecls++] = stage->tensors[i];
    }
    for (size_t i = 0; i < nmodel; i++) {
        bool declared = false;
        for (size_t d = 0; !declared && d < nstage; d++) {
            declared
                = strcmp (stage->tensors[d].tensor.name, plan->model.inputs[i].name) == 0;
        }
        if (!declared) {
            decls[ndecls++].tensor = plan->model.inputs[i];
        }
    }
    zi_msg_t *result = s_task_like (task);
    int rc = result ? ZI_OK : zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    size_t ntensors = zi_msg_tensor_count (task);

    //  Names first: an unexpected or missing tensor says more than the
    //  shape of another one.
    for (size_t i = 0; rc == ZI_OK && ndecls > 0 && i < ntensors; i++) {
        const char *name = zi_msg_tensor_name (task, i);
        bool known = false;
        for (size_t d = 0; !known && d < ndecls; d++) {
            known = strcmp (decls[d].tensor.name, name) == 0;
        }
        if (!known) {
            char expected[256] = "";
            size_t pos = 0;
            for (size_t d = 0; d < ndecls && pos < sizeof expected; d++) {
                int n = snprintf (expected + pos, sizeof expected - pos, "%s'%s'",
                                  d ? ", " : "", decls[d].tensor.name);
                pos += n > 0 ? (size_t) n : 0;
            }
            rc = zi_fail (err, errlen, ZI_ERR_NOTFOUND,
                          "input '%s': not an input of the model (expected %s)", name,
                          expected);
        }
    }
    for (size_t d = 0; rc == ZI_OK && d < ndecls; d++) {
        const zi_plan_tensor_t *decl = &decls[d].tensor;
        const zi_tensor_t *t = zi_msg_tensor_find (task, decl->name);
        if (!t) {
            char want[160];
            rc = zi_fail (err, errlen, ZI_ERR_NOTFOUND,
                          "input '%s': missing (expected %s)", decl->name,
                          s_decl_str (decl, want, sizeof want));
        }
        else {
            rc = zi_transform_check (decl, t, err, errlen);
        }
    }
    for (size_t d = 0; rc == ZI_OK && d < ndecls; d++) {
        const zi_plan_io_t *io = &decls[d];
        zi_tensor_t *t = NULL;
        rc = zi_transform_pre (io, zi_msg_tensor_find (task, io->tensor.name), &t, err,
                               errlen);
        if (rc == ZI_OK && zi_msg_add_tensor (result, io->tensor.name, &t)) {
            zi_tensor_destroy (&t);
            rc = zi_fail (err, errlen, ZI_ERR_LIMIT,
                          "input '%s': cannot add it to the task", io->tensor.name);
        }
    }
    //  Nothing declared anywhere: the tensors go on as they came.
    for (size_t i = 0; rc == ZI_OK && ndecls == 0 && i < ntensors; i++) {
        if (zi_msg_add_tensor_copy (result, zi_msg_tensor_name (task, i),
                                    zi_msg_tensor (task, i))) {
            rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        }
    }
    free (decls);
    if (rc) {
        zi_msg_destroy (&result);
        return rc;
    }
    *out = result;
    return ZI_OK;
}
