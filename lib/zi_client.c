/*  zi_client.c - see zi_client.h. */
#include "zi_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <unistd.h>

#include "zi_security.h"
#include "zi_shm.h"

//  The arena zi_client_new_plan makes for a plan with broker.client_shm.
#define S_SHM_BYTES (64 << 20)

//  Answers to requests already answered are dropped (not stashed) when
//  their id is among the last S_DONE completed ones.
#define S_DONE 1024

struct zi_client {
    zsock_t *sock;
    uint64_t next_id;
    zlist_t *stash;         //  replies received while waiting for another
    char identity[64];
    uint64_t done[S_DONE];  //  ring of ids answered by infer / infer_retry
    size_t ndone, done_next;
    zi_client_counts_t counts;
    //  Request inputs in shared memory (opts.shm_bytes, broker.client_shm):
    //  each block belongs to the request message it was added to until
    //  that is sent, then to its id until the id is answered.
    zi_shm_arena_t *arena;
    struct s_block {
        const zi_msg_t *msg;    //  not sent yet, or NULL
        uint64_t id;            //  sent under this id
        zi_shm_ref_t ref;
    } *blocks;
    size_t nblocks, capblocks;
};

//  Random bytes from the kernel, or (never expected) from the clock.
static void
s_random (void *buf, size_t n)
{
    int fd = open ("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read (fd, buf, n) : -1;
    if (fd >= 0) {
        close (fd);
    }
    if (got != (ssize_t) n) {
        uint64_t x = (uint64_t) zclock_usecs () ^ ((uint64_t) getpid () << 32);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((uint8_t *) buf)[i] = (uint8_t) x;
        }
    }
}

static zi_client_t *
s_client_new (const char *endpoint, const zi_client_opts_t *opts, const zi_plan_t *plan,
              char *err, size_t errlen)
{
    if (!endpoint || (strncmp (endpoint, "tcp://", 6) && strncmp (endpoint, "ipc://", 6)
                      && strncmp (endpoint, "inproc://", 9))) {
        zi_fail (err, errlen, ZI_ERR_INVALID, "endpoint '%s' is not tcp://, ipc:// or "
                 "inproc://", endpoint ? endpoint : "(null)");
        return NULL;
    }
    zi_client_t *self = (zi_client_t *) calloc (1, sizeof *self);
    if (!self) {
        zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        return NULL;
    }
    self->sock = zsock_new (ZMQ_DEALER);
    self->stash = zlist_new ();
    if (!self->sock || !self->stash) {
        zi_client_destroy (&self);
        zi_fail (err, errlen, ZI_ERR_NOMEM, "cannot create a socket");
        return NULL;
    }
    //  Heartbeats, handshake bound, reconnect backoff; MAXMSGSIZE.
    zi_security_socket (self->sock, plan, false);
    if (opts && opts->max_message_bytes > 0) {
        int64_t max = opts->max_message_bytes;
        zmq_setsockopt (zsock_resolve (self->sock), ZMQ_MAXMSGSIZE, &max, sizeof max);
    }
    //  A stable routing id: the broker keys requests on (routing id, id),
    //  so a retry that goes out on a new connection (after a reconnect)
    //  is still known as the same request.
    if (opts && opts->identity) {
        size_t n = strlen (opts->identity);
        if (n == 0 || n >= sizeof self->identity) {
            zi_client_destroy (&self);
            zi_fail (err, errlen, ZI_ERR_INVALID, "identity: 1..%zu bytes",
                     sizeof self->identity - 1);
            return NULL;
        }
        memcpy (self->identity, opts->identity, n + 1);
    }
    else {
        uint8_t raw[12];
        s_random (raw, sizeof raw);
        int at = snprintf (self->identity, sizeof self->identity, "zc-");
        for (size_t i = 0; i < sizeof raw; i++) {
            at += snprintf (self->identity + at, sizeof self->identity - (size_t) at, "%02x",
                            raw[i]);
        }
    }
    zsock_set_identity (self->sock, self->identity);
    //  Unanswered requests are abandoned on close: nothing to flush.
    zsock_set_linger (self->sock, 0);
    int rc = 0;
    if (plan) {
        rc = zi_security_client (self->sock, plan, ZI_SECURITY_CLIENT_NAME, err, errlen);
    }
    else if (opts && (opts->curve_server_key || opts->curve_secret_file)) {
        rc = zi_security_client_keys (self->sock, opts->curve_secret_file,
                                      opts->curve_server_key, err, errlen);
    }
    if (rc) {
        zi_client_destroy (&self);
        return NULL;
    }
    if (zsock_connect (self->sock, "%s", endpoint)) {
        zi_client_destroy (&self);
        zi_fail (err, errlen, ZI_ERR_INVALID, "cannot connect to '%s'", endpoint);
        return NULL;
    }
    int64_t shm = opts ? opts->shm_bytes
                       : plan && plan->broker.client_shm ? S_SHM_BYTES : 0;
    if (shm > 0) {
        if (strncmp (endpoint, "ipc://", 6) != 0) {
            zi_client_destroy (&self);
            zi_fail (err, errlen, ZI_ERR_INVALID, "shm_bytes: shared memory needs an ipc:// "
                     "endpoint (the broker's host), not '%s'", endpoint);
            return NULL;
        }
        self->arena = zi_shm_arena_new ((size_t) shm, err, errlen);
        if (!self->arena) {
            zi_client_destroy (&self);
            return NULL;
        }
    }
    //  Ids start at a random point so that a restarted client does not reuse
    //  the ids of its previous life within the broker's memory of them.
    uint64_t r = 0;
    s_random (&r, sizeof r);
    self->next_id = ((r & ((1ull << 30) - 1)) << 20) + 1;
    return self;
}

zi_client_t *
zi_client_new (const char *endpoint, char *err, size_t errlen)
{
    return s_client_new (endpoint, NULL, NULL, err, errlen);
}

zi_client_t *
zi_client_new_opts (const char *endpoint, const zi_client_opts_t *opts, char *err,
                    size_t errlen)
{
    return s_client_new (endpoint, opts, NULL, err, errlen);
}

zi_client_t *
zi_client_new_plan (const zi_plan_t *plan, char *err, size_t errlen)
{
    if (!plan) {
        zi_fail (err, errlen, ZI_ERR_INVALID, "no plan");
        return NULL;
    }
    return s_client_new (plan->broker.endpoints[ZI_PLAN_EP_FRONT].connect, NULL, plan, err,
                         errlen);
}

void
zi_client_destroy (zi_client_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zi_client_t *self = *self_p;
    if (self->stash) {
        zi_msg_t *msg;
        while ((msg = (zi_msg_t *) zlist_pop (self->stash))) {
            zi_msg_destroy (&msg);
        }
        zlist_destroy (&self->stash);
    }
    zsock_destroy (&self->sock);
    zi_shm_arena_destroy (&self->arena);
    free (self->blocks);
    free (self);
    *self_p = NULL;
}

zsock_t *
zi_client_sock (zi_client_t *self)
{
    return self->sock;
}

//  Free the blocks of a request that was never sent (msg), or of the
//  requests sent under `id` (msg NULL) once that id is answered.
static void
s_blocks_free (zi_client_t *self, const zi_msg_t *msg, uint64_t id)
{
    size_t kept = 0;
    for (size_t i = 0; i < self->nblocks; i++) {
        struct s_block *b = &self->blocks[i];
        if (msg ? b->msg == msg : !b->msg && b->id == id) {
            zi_shm_free (self->arena, &b->ref);
        }
        else {
            self->blocks[kept++] = *b;
        }
    }
    self->nblocks = kept;
}

int
zi_client_add_input (zi_client_t *self, zi_msg_t *request, const char *name,
                     const zi_tensor_t *t)
{
    if (!self || !request || !name || !t) {
        return ZI_ERR_INVALID;
    }
    zi_shm_ref_t ref;
    void *block = NULL;
    if (self->arena && zi_tensor_is_contiguous (t)) {
        if (self->nblocks == self->capblocks) {
            size_t cap = self->capblocks ? self->capblocks * 2 : 16;
            struct s_block *grown
                = (struct s_block *) realloc (self->blocks, cap * sizeof *grown);
            if (!grown) {
                return ZI_ERR_NOMEM;
            }
            self->blocks = grown;
            self->capblocks = cap;
        }
        block = zi_shm_alloc (self->arena, t->nbytes, &ref);
    }
    if (!block) {
        //  Small (under 16 KiB), not contiguous, or the arena is full.
        return zi_msg_add_tensor_copy (request, name, t);
    }
    memcpy (block, t->data, t->nbytes);
    int rc = zi_msg_add_tensor_shm (request, name, t->dtype, t->rank, t->ne, block, &ref, false);
    if (rc) {
        zi_shm_free (self->arena, &ref);
        return rc;
    }
    self->blocks[self->nblocks++] = (struct s_block){request, 0, ref};
    return ZI_OK;
}

size_t
zi_client_shm_blocks (const zi_client_t *self)
{
    return self->nblocks;
}

int
zi_client_send (zi_client_t *self, zi_msg_t **request_p, uint64_t *id)
{
    if (!request_p || !*request_p) {
        return ZI_ERR_INVALID;
    }
    if (!zi_msg_has (*request_p, "id")) {
        zi_msg_set_id (*request_p, self->next_id++);
    }
    uint64_t sent = zi_msg_id (*request_p);
    if (self->arena) {
        zi_msg_set_shm_out (*request_p, true);
    }
    zi_msg_t *msg = *request_p;
    int rc = zi_msg_send (request_p, self->sock);
    if (rc == 0 && self->arena) {
        //  Blocks of this message (zi_client_add_input) now wait for the
        //  answer to its id; tensors it shares with another message
        //  (zi_msg_add_tensor_ref) stay that message's.
        for (size_t i = 0; i < self->nblocks; i++) {
            if (self->blocks[i].msg == msg) {
                self->blocks[i].msg = NULL;
                self->blocks[i].id = sent;
            }
        }
    }
    if (rc == 0 && id) {
        *id = sent;
    }
    if (rc == 0) {
        self->counts.sent++;
    }
    return rc;
}

static void
s_done_add (zi_client_t *self, uint64_t id)
{
    self->done[self->done_next] = id;
    self->done_next = (self->done_next + 1) % S_DONE;
    if (self->ndone < S_DONE) {
        self->ndone++;
    }
}

static bool
s_done_has (const zi_client_t *self, uint64_t id)
{
    for (size_t i = 0; i < self->ndone; i++) {
        if (self->done[i] == id) {
            return true;
        }
    }
    return false;
}

//  Wait for one message from the socket (not the stash).
static int
s_recv_socket (zi_client_t *self, int timeout_ms, zi_msg_t **reply_p, char *err,
               size_t errlen)
{
    zmq_pollitem_t item = {zsock_resolve (self->sock), 0, ZMQ_POLLIN, 0};
    int rc = zmq_poll (&item, 1, timeout_ms);
    if (rc < 0) {
        return zi_fail (err, errlen, ZI_ERR_IO, "interrupted");
    }
    if (rc == 0) {
        return zi_fail (err, errlen, ZI_ERR_TIMEOUT, "no answer within %d ms", timeout_ms);
    }
    rc = zi_msg_recv (self->sock, reply_p, err, errlen);
    if (rc == 0 && self->nblocks && zi_msg_has (*reply_p, "id")
        && (zi_msg_cmd (*reply_p) == ZI_CMD_REPLY || zi_msg_cmd (*reply_p) == ZI_CMD_ERROR)) {
        //  Answered: nothing reads the request's inputs any more.
        s_blocks_free (self, NULL, zi_msg_id (*reply_p));
    }
    return rc;
}

int
zi_client_recv (zi_client_t *self, int timeout_ms, zi_msg_t **reply_p, char *err,
                size_t errlen)
{
    zi_msg_t *stashed = (zi_msg_t *) zlist_pop (self->stash);
    if (stashed) {
        *reply_p = stashed;
        return ZI_OK;
    }
    return s_recv_socket (self, timeout_ms, reply_p, err, errlen);
}

//  Wait for the answer to `id`, stashing others, within timeout_ms.
static int
s_wait_for (zi_client_t *self, uint64_t id, int timeout_ms, zi_msg_t **reply_p, char *err,
            size_t errlen)
{
    //  It may have arrived while we waited for something else.
    for (zi_msg_t *m = (zi_msg_t *) zlist_first (self->stash); m;
         m = (zi_msg_t *) zlist_next (self->stash)) {
        if (zi_msg_id (m) == id) {
            zlist_remove (self->stash, m);
            *reply_p = m;
            return ZI_OK;
        }
    }
    int64_t end = zclock_mono () + (timeout_ms < 0 ? INT32_MAX : timeout_ms);
    while (true) {
        int64_t left = end - zclock_mono ();
        if (left < 0) {
            left = 0;
        }
        zi_msg_t *m = NULL;
        int rc = s_recv_socket (self, (int) left, &m, err, errlen);
        if (rc == ZI_ERR_TIMEOUT) {
            return zi_fail (err, errlen, ZI_ERR_TIMEOUT, "no answer to request %llu within "
                            "%d ms", (unsigned long long) id, timeout_ms);
        }
        if (rc) {
            return rc;
        }
        if (zi_msg_id (m) == id) {
            *reply_p = m;
            return ZI_OK;
        }
        //  An ERROR without an id answers something unreadable we sent:
        //  it concerns this request as much as any.
        if (zi_msg_cmd (m) == ZI_CMD_ERROR && !zi_msg_has (m, "id")) {
            *reply_p = m;
            return ZI_OK;
        }
        //  STATS / HEALTH are only asked synchronously: an answer that is
        //  not the one awaited belongs to a call that already timed out.
        if (zi_msg_cmd (m) == ZI_CMD_STATS_REPLY || zi_msg_cmd (m) == ZI_CMD_HEALTH_REPLY) {
            zi_msg_destroy (&m);
            continue;
        }
        //  A second answer to a request answered already (it crossed a
        //  retry): the caller had its one answer.
        if (s_done_has (self, zi_msg_id (m))) {
            self->counts.stale++;
            zi_msg_destroy (&m);
            continue;
        }
        zlist_append (self->stash, m);
    }
}

static int
s_error_reply (zi_msg_t *reply, char *err, size_t errlen)
{
    if (zi_msg_cmd (reply) == ZI_CMD_ERROR) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "%s: %s", zi_code_name (zi_msg_code (reply)),
                        zi_msg_reason (reply) ? zi_msg_reason (reply) : "");
    }
    return ZI_OK;
}

int
zi_client_infer (zi_client_t *self, int n, const char *const *names,
                 const zi_tensor_t *const *inputs, int timeout_ms, zi_msg_t **reply_p,
                 char *err, size_t errlen)
{
    zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
    if (!req) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        int rc = zi_client_add_input (self, req, names[i], inputs[i]);
        if (rc) {
            s_blocks_free (self, req, 0);
            zi_msg_destroy (&req);
            return zi_fail (err, errlen, rc, "input '%s': cannot add to the request (%s)",
                            names[i], zi_strerror (rc));
        }
    }
    uint64_t id;
    int rc = zi_client_send (self, &req, &id);
    if (rc) {
        s_blocks_free (self, req, 0);
        zi_msg_destroy (&req);
        return zi_fail (err, errlen, rc, "cannot send the request (%s)", zi_strerror (rc));
    }
    rc = s_wait_for (self, id, timeout_ms, reply_p, err, errlen);
    if (rc == 0) {
        s_done_add (self, id);
    }
    s_blocks_free (self, NULL, id);   //  answered, or given up on (as in zi_client_infer_retry)
    return rc ? rc : s_error_reply (*reply_p, err, errlen);
}

//  A REQUEST with copies of the inputs and the given id, prio, deadline,
//  in *req_p. Returns 0 or an error (with a message in err).
static int
s_request (zi_client_t *self, int n, const char *const *names,
           const zi_tensor_t *const *inputs, uint64_t id, const zi_client_retry_t *o,
           uint32_t attempt, zi_msg_t **req_p, char *err, size_t errlen)
{
    *req_p = NULL;
    zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
    if (!req) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    zi_msg_set_id (req, id);
    zi_msg_set_attempt (req, attempt);
    int rc = o->prio ? zi_msg_set_prio (req, o->prio) : 0;
    if (rc) {
        zi_msg_destroy (&req);
        return zi_fail (err, errlen, ZI_ERR_INVALID, "prio %d: classes are 0..%d", o->prio,
                        ZI_MSG_MAX_PRIO);
    }
    if (o->deadline_ms) {
        zi_msg_set_deadline_ms (req, o->deadline_ms);
    }
    for (int i = 0; i < n; i++) {
        rc = zi_client_add_input (self, req, names[i], inputs[i]);
        if (rc) {
            s_blocks_free (self, req, 0);
            zi_msg_destroy (&req);
            return zi_fail (err, errlen, rc, "input '%s': cannot add to the request (%s)",
                            names[i], zi_strerror (rc));
        }
    }
    *req_p = req;
    return ZI_OK;
}

static int
s_infer_retry (zi_client_t *self, uint64_t id, int n, const char *const *names,
               const zi_tensor_t *const *inputs, const zi_client_retry_t *opts,
               zi_msg_t **reply_p, char *err, size_t errlen)
{
    static const zi_client_retry_t defaults = ZI_CLIENT_RETRY_DEFAULTS;
    zi_client_retry_t o = opts ? *opts : defaults;
    o.attempt_ms = o.attempt_ms > 0 ? o.attempt_ms : defaults.attempt_ms;
    o.total_ms = o.total_ms > 0 ? o.total_ms : defaults.total_ms;
    o.backoff_ms = o.backoff_ms > 0 ? o.backoff_ms : defaults.backoff_ms;
    o.backoff_max_ms = o.backoff_max_ms >= o.backoff_ms ? o.backoff_max_ms : o.backoff_ms;
    *reply_p = NULL;
    int64_t end = zclock_mono () + o.total_ms;
    int64_t backoff = o.backoff_ms;
    char last[ZI_MSG_MAX_REASON + 64] = "no answer";
    bool answered = false;      //  an attempt got a retryable error
    //  What an attempt needs to be answered: its deadline, or attempt_ms.
    const int64_t need = o.deadline_ms > 0 && (int64_t) o.deadline_ms < o.attempt_ms
                             ? (int64_t) o.deadline_ms
                             : o.attempt_ms;
    uint32_t attempt = 0;
    for (;; attempt++) {
        if (zsys_interrupted) {
            return zi_fail (err, errlen, ZI_ERR_IO, "interrupted");
        }
        int64_t now = zclock_mono ();
        if (now >= end) {
            break;
        }
        //  An attempt that could not be answered within the budget would
        //  only leave an orphan request in the pipeline: near the end,
        //  wait for the earlier attempts' answer without sending again.
        bool last_wait = attempt > 0 && end - now < need;
        //  Never block on a full queue (a broker gone for long): that is
        //  an attempt without an answer.
        bool sent = false;
        if (!last_wait && (zsock_events (self->sock) & ZMQ_POLLOUT)) {
            zi_msg_t *req = NULL;
            int rc = s_request (self, n, names, inputs, id, &o, attempt, &req, err, errlen);
            if (rc) {
                return rc;
            }
            if (zi_client_send (self, &req, NULL) == 0) {
                sent = true;
                if (attempt > 0) {
                    self->counts.sent--;    //  zi_client_send counted it
                    self->counts.resent++;
                }
            }
            else {
                s_blocks_free (self, req, 0);
            }
            zi_msg_destroy (&req);
        }
        int64_t wait = end - zclock_mono ();
        if (!last_wait) {
            wait = wait < o.attempt_ms ? wait : o.attempt_ms;
            if (!sent) {
                wait = wait < backoff ? wait : backoff;
            }
        }
        zi_msg_t *m = NULL;
        int rc = s_wait_for (self, id, (int) (wait > 0 ? wait : 0), &m, err, errlen);
        if (rc == ZI_ERR_TIMEOUT && last_wait) {
            break;
        }
        if (rc == ZI_ERR_TIMEOUT) {
            //  A wait the total budget cut short says less than an answer
            //  an earlier attempt got (UNAVAILABLE, BUSY...): keep that.
            if (wait >= o.attempt_ms || !answered) {
                snprintf (last, sizeof last, "no answer within %lld ms",
                          (long long) (wait > 0 ? wait : 0));
            }
            continue; //  a lost request or answer: the same id again, now
        }
        if (rc) {
            return rc;
        }
        if (zi_msg_cmd (m) != ZI_CMD_ERROR) {
            s_done_add (self, id);
            *reply_p = m;
            return ZI_OK;
        }
        int code = zi_msg_code (m);
        if (!zi_msg_has (m, "id") || !zi_code_retryable (code)) {
            s_done_add (self, id);
            *reply_p = m;
            return s_error_reply (m, err, errlen);
        }
        answered = true;
        snprintf (last, sizeof last, "%s: %s", zi_code_name (code),
                  zi_msg_reason (m) ? zi_msg_reason (m) : "");
        zi_msg_destroy (&m);
        //  BUSY, UNAVAILABLE, TIMEOUT: wait, then the same id again. The
        //  wait is drawn from [b/2, b] so clients that were refused
        //  together do not all come back together.
        uint32_t r = 0;
        s_random (&r, sizeof r);
        int64_t pause = backoff / 2 + (int64_t) (r % (uint32_t) (backoff / 2 + 1));
        if (end - zclock_mono () - pause < need) {
            attempt += !last_wait;  //  attempts sent
            break;  //  the next attempt could not be answered in time
        }
        zclock_sleep ((int) pause);
        backoff = backoff * 2 < o.backoff_max_ms ? backoff * 2 : o.backoff_max_ms;
    }
    return zi_fail (err, errlen, ZI_ERR_TIMEOUT,
                    "request %llu: no answer after %u attempt%s within its %d ms "
                    "budget (last: %s)",
                    (unsigned long long) id, attempt, attempt == 1 ? "" : "s", o.total_ms,
                    last);
}

int
zi_client_infer_retry (zi_client_t *self, int n, const char *const *names,
                       const zi_tensor_t *const *inputs, const zi_client_retry_t *opts,
                       zi_msg_t **reply_p, char *err, size_t errlen)
{
    uint64_t id = self->next_id++;
    int rc = s_infer_retry (self, id, n, names, inputs, opts, reply_p, err, errlen);
    //  Answered, or given up on (an attempt still in the pipeline may then
    //  read a reused block: its answer goes nowhere).
    s_blocks_free (self, NULL, id);
    return rc;
}

void
zi_client_counts (const zi_client_t *self, zi_client_counts_t *counts)
{
    *counts = self->counts;
}

const char *
zi_client_identity (const zi_client_t *self)
{
    return self->identity;
}

static int
s_ask (zi_client_t *self, zi_cmd_t cmd, int timeout_ms, zi_msg_t **reply_p, char *err,
       size_t errlen)
{
    zi_msg_t *req = zi_msg_new (cmd);
    if (!req) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    uint64_t id;
    int rc = zi_client_send (self, &req, &id);
    if (rc) {
        zi_msg_destroy (&req);
        return zi_fail (err, errlen, rc, "cannot send %s", zi_cmd_name (cmd));
    }
    rc = s_wait_for (self, id, timeout_ms, reply_p, err, errlen);
    return rc ? rc : s_error_reply (*reply_p, err, errlen);
}

int
zi_client_stats (zi_client_t *self, int timeout_ms, zi_msg_t **reply_p, char *err,
                 size_t errlen)
{
    return s_ask (self, ZI_CMD_STATS, timeout_ms, reply_p, err, errlen);
}

int
zi_client_health (zi_client_t *self, int timeout_ms, bool *live, bool *ready, char *err,
                  size_t errlen)
{
    zi_msg_t *reply = NULL;
    int rc = s_ask (self, ZI_CMD_HEALTH, timeout_ms, &reply, err, errlen);
    if (rc == 0) {
        *live = zi_msg_live (reply);
        *ready = zi_msg_ready (reply);
    }
    zi_msg_destroy (&reply);
    return rc;
}

int
zi_client_wait_ready (zi_client_t *self, int timeout_ms)
{
    int64_t end = zclock_mono () + timeout_ms;
    while (zclock_mono () < end) {
        bool live = false, ready = false;
        int64_t left = end - zclock_mono ();
        int rc = zi_client_health (self, (int) (left < 250 ? (left > 0 ? left : 1) : 250),
                                   &live, &ready, NULL, 0);
        if (rc == 0 && ready) {
            return ZI_OK;
        }
        if (rc == 0) {
            //  Live but not ready: ask again shortly. A HEALTH round trip
            //  is the event we wait on; this pause only spaces the polls.
            zclock_sleep (20);
        }
    }
    return ZI_ERR_TIMEOUT;
}
