/*  zi_client.h - the C client: send requests to a zinfer broker, get replies.

    A client is one DEALER socket connected to the broker's front endpoint.
    Requests carry an id the client chooses (zi_client assigns increasing
    ids); the broker answers each with exactly one REPLY or ERROR carrying
    that id.

    Synchronous:

        zi_client_t *c = zi_client_new ("tcp://127.0.0.1:5555", err, sizeof err);
        const char *names[] = {"input"};
        const zi_tensor_t *in[] = {x};                  //  x (N,1,28,28)
        zi_msg_t *reply = NULL;
        if (zi_client_infer (c, 1, names, in, 5000, &reply, err, sizeof err) == 0) {
            const zi_tensor_t *y = zi_msg_tensor_find (reply, "logits");
            ...
            zi_msg_destroy (&reply);
        }
        zi_client_destroy (&c);

    Asynchronous: zi_client_send as many requests as you like (each gets an
    id), then zi_client_recv replies in whatever order they come; match them
    with zi_msg_id. An ERROR reply is a message with zi_msg_cmd() ==
    ZI_CMD_ERROR, zi_msg_code() and zi_msg_reason().
*/
#ifndef ZI_CLIENT_H_INCLUDED
#define ZI_CLIENT_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "zi_msg.h"
#include "zi_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zi_client zi_client_t;

//  Connect to a broker's front endpoint ("tcp://host:port", "ipc://path").
//  Returns NULL with a message in err when the endpoint is malformed.
zi_client_t *zi_client_new (const char *endpoint, char *err, size_t errlen);

//  Close the connection (unanswered requests are abandoned); NULLs *self_p.
void zi_client_destroy (zi_client_t **self_p);

//  Send a REQUEST built by the caller (zi_msg_new (ZI_CMD_REQUEST) plus
//  tensors, optional prio / deadline). Takes *request_p on success and NULLs
//  it; assigns the next id unless the request already has one; stores the
//  id in *id (if not NULL). Returns 0 or ZI_ERR_IO / ZI_ERR_INVALID.
int zi_client_send (zi_client_t *self, zi_msg_t **request_p, uint64_t *id);

//  Receive the next REPLY / ERROR (or STATS_REPLY / HEALTH_REPLY), waiting
//  up to timeout_ms (-1: forever). Returns 0 and the message in *reply_p,
//  ZI_ERR_TIMEOUT, ZI_ERR_IO (interrupted), or the decoder's error for a
//  malformed answer.
int zi_client_recv (zi_client_t *self, int timeout_ms, zi_msg_t **reply_p, char *err,
                    size_t errlen);

//  Send n named tensors (copied into the request) and wait for the answer to
//  that request, up to timeout_ms. Replies to other requests that arrive
//  meanwhile are kept for zi_client_recv. Returns 0 with the REPLY in
//  *reply_p; or ZI_ERR_TIMEOUT; or, for an ERROR answer, ZI_ERR_INVALID with
//  "CODE_NAME: reason" in err and the ERROR message in *reply_p.
int zi_client_infer (zi_client_t *self, int n, const char *const *names,
                     const zi_tensor_t *const *inputs, int timeout_ms, zi_msg_t **reply_p,
                     char *err, size_t errlen);

//  Ask for the broker's statistics; *reply_p is the STATS_REPLY (see
//  zi_msg_stats for its msgpack map).
int zi_client_stats (zi_client_t *self, int timeout_ms, zi_msg_t **reply_p, char *err,
                     size_t errlen);

//  Ask the broker whether it is live and ready (every segment served).
int zi_client_health (zi_client_t *self, int timeout_ms, bool *live, bool *ready, char *err,
                      size_t errlen);

//  Wait until the broker reports ready, polling HEALTH, up to timeout_ms.
//  Returns 0 when ready, ZI_ERR_TIMEOUT otherwise.
int zi_client_wait_ready (zi_client_t *self, int timeout_ms);

//  The socket, for callers that poll several things.
zsock_t *zi_client_sock (zi_client_t *self);

#ifdef __cplusplus
}
#endif

#endif
