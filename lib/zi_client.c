/*  zi_client.c - see zi_client.h. */
#include "zi_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct zi_client {
    zsock_t *sock;
    uint64_t next_id;
    zlist_t *stash;         //  replies received while waiting for another
};

zi_client_t *
zi_client_new (const char *endpoint, char *err, size_t errlen)
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
    //  Unanswered requests are abandoned on close: nothing to flush.
    zsock_set_linger (self->sock, 0);
    if (zsock_connect (self->sock, "%s", endpoint)) {
        zi_client_destroy (&self);
        zi_fail (err, errlen, ZI_ERR_INVALID, "cannot connect to '%s'", endpoint);
        return NULL;
    }
    //  Ids start at a random point so that a restarted client does not reuse
    //  the ids of its previous life within the broker's memory of them.
    self->next_id = ((uint64_t) randof (1 << 30) << 20) + 1;
    return self;
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
    free (self);
    *self_p = NULL;
}

zsock_t *
zi_client_sock (zi_client_t *self)
{
    return self->sock;
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
    int rc = zi_msg_send (request_p, self->sock);
    if (rc == 0 && id) {
        *id = sent;
    }
    return rc;
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
    return zi_msg_recv (self->sock, reply_p, err, errlen);
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
        int rc = zi_msg_add_tensor_copy (req, names[i], inputs[i]);
        if (rc) {
            zi_msg_destroy (&req);
            return zi_fail (err, errlen, rc, "input '%s': cannot add to the request (%s)",
                            names[i], zi_strerror (rc));
        }
    }
    uint64_t id;
    int rc = zi_client_send (self, &req, &id);
    if (rc) {
        zi_msg_destroy (&req);
        return zi_fail (err, errlen, rc, "cannot send the request (%s)", zi_strerror (rc));
    }
    rc = s_wait_for (self, id, timeout_ms, reply_p, err, errlen);
    return rc ? rc : s_error_reply (*reply_p, err, errlen);
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
