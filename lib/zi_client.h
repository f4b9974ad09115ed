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

    Retries with the same request id (exactly-once delivery): the broker
    keys a request on (the client's routing id, its id), runs it once while
    it is in flight, and keeps small answers for a while after (PROTOCOL.md
    9). zi_client_infer_retry sends again, with the SAME id, after BUSY,
    UNAVAILABLE, TIMEOUT or when no answer came within an attempt's time
    (a lost answer, a broker that restarted): exponential backoff with
    jitter, bounded in total time. A client has a stable routing id (a
    random one, or opts.identity), so a retry after a reconnect is still
    recognised:

        zi_client_retry_t retry = ZI_CLIENT_RETRY_DEFAULTS;
        retry.total_ms = 10000;
        rc = zi_client_infer_retry (c, 1, names, in, &retry, &reply, err, sizeof err);

    CURVE (a plan with security.curve): zi_client_new_plan connects to the
    plan's front with the plan's keys ("{name}" in client_secret_file is
    "client"); zi_client_new_opts takes the key file and the broker's
    public key explicitly.
*/
#ifndef ZI_CLIENT_H_INCLUDED
#define ZI_CLIENT_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "zi_msg.h"
#include "zi_plan.h"
#include "zi_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zi_client zi_client_t;

//  Connect to a broker's front endpoint ("tcp://host:port", "ipc://path").
//  Returns NULL with a message in err when the endpoint is malformed.
zi_client_t *zi_client_new (const char *endpoint, char *err, size_t errlen);

//  Connection options; zero / NULL fields take the defaults.
typedef struct {
    const char *identity;          //  routing id, 1..255 bytes not starting
                                   //  with a zero byte; NULL: a random one
    int64_t max_message_bytes;     //  ZMQ_MAXMSGSIZE; 0: 256 MiB
    const char *curve_server_key;  //  the broker's Z85 public key, and ...
    const char *curve_secret_file; //  ... our key pair (a zcert secret file):
                                   //  both set = connect with CURVE
    int64_t shm_bytes;             //  > 0: a shared-memory arena of this size
                                   //  for request inputs (ipc:// endpoints,
                                   //  a broker with broker.client_shm)
} zi_client_opts_t;

//  As zi_client_new, with options. Returns NULL with a message in err
//  (a malformed endpoint, a key file that cannot be loaded).
zi_client_t *zi_client_new_opts (const char *endpoint, const zi_client_opts_t *opts,
                                 char *err, size_t errlen);

//  Connect to a plan's front endpoint with the plan's settings: its
//  max_message_bytes, its heartbeat, with security.curve its keys, and with
//  broker.client_shm a 64 MiB shared-memory arena for request inputs.
//  The plan is only read.
zi_client_t *zi_client_new_plan (const zi_plan_t *plan, char *err, size_t errlen);

//  Close the connection (unanswered requests are abandoned); NULLs *self_p.
void zi_client_destroy (zi_client_t **self_p);

//  Send a REQUEST built by the caller (zi_msg_new (ZI_CMD_REQUEST) plus
//  tensors, optional prio / deadline). Takes *request_p on success and NULLs
//  it; assigns the next id unless the request already has one; stores the
//  id in *id (if not NULL). Returns 0 or ZI_ERR_IO / ZI_ERR_INVALID.
int zi_client_send (zi_client_t *self, zi_msg_t **request_p, uint64_t *id);

//  Add an input tensor to a request built for zi_client_send. With a
//  shared-memory arena (opts.shm_bytes, or a plan with broker.client_shm)
//  a tensor of 16 KiB or more is written once into a block of it and the
//  request carries only a reference: its bytes never cross the socket and
//  segment 0 reads them in place. The block is freed when the answer to
//  the request arrives (zi_client_recv and the calls that wait); blocks of
//  a request that is never sent stay taken until the client is destroyed.
//  Without an arena (or when it is full) the tensor is copied into the
//  request as zi_msg_add_tensor_copy does. Returns 0 or an error.
int zi_client_add_input (zi_client_t *self, zi_msg_t *request, const char *name,
                         const zi_tensor_t *t);

//  Shared-memory blocks the client holds for requests not yet answered.
size_t zi_client_shm_blocks (const zi_client_t *self);

//  Receive the next REPLY / ERROR (or STATS_REPLY / HEALTH_REPLY), waiting
//  up to timeout_ms (-1: forever). Returns 0 and the message in *reply_p,
//  ZI_ERR_TIMEOUT, ZI_ERR_IO (interrupted), or the decoder's error for a
//  malformed answer.
int zi_client_recv (zi_client_t *self, int timeout_ms, zi_msg_t **reply_p, char *err,
                    size_t errlen);

//  Send n named tensors (zi_client_add_input) and wait for the answer to
//  that request, up to timeout_ms. Replies to other requests that arrive
//  meanwhile are kept for zi_client_recv. Returns 0 with the REPLY in
//  *reply_p; or ZI_ERR_TIMEOUT; or, for an ERROR answer, ZI_ERR_INVALID with
//  "CODE_NAME: reason" in err and the ERROR message in *reply_p.
int zi_client_infer (zi_client_t *self, int n, const char *const *names,
                     const zi_tensor_t *const *inputs, int timeout_ms, zi_msg_t **reply_p,
                     char *err, size_t errlen);

//  How zi_client_infer_retry retries. ZI_CLIENT_RETRY_DEFAULTS: attempts
//  of 2 s, 30 s in all, backoff from 50 ms doubling to 2 s.
typedef struct {
    int attempt_ms;     //  wait this long for an answer before sending again
    int total_ms;       //  give up after this long in all
    int backoff_ms;     //  first wait after BUSY / UNAVAILABLE / TIMEOUT ...
    int backoff_max_ms; //  ... doubling up to this; each wait is drawn from
                        //  [b/2, b] (jitter)
    uint8_t prio;       //  priority class of the request
    uint32_t deadline_ms; //  per attempt; 0: the broker's default
} zi_client_retry_t;

#define ZI_CLIENT_RETRY_DEFAULTS { 2000, 30000, 50, 2000, 0, 0 }

//  As zi_client_infer, but retrying with the SAME request id: after BUSY,
//  UNAVAILABLE or TIMEOUT (after a backoff), and when no answer came within
//  attempt_ms (at once). opts NULL: the defaults. Returns 0 with the REPLY;
//  ZI_ERR_INVALID with "CODE_NAME: reason" in err and the ERROR in *reply_p
//  for an answer that must not be retried; ZI_ERR_TIMEOUT when total_ms
//  passed, or when what is left of it could not serve one more attempt
//  (its deadline_ms, else attempt_ms: a request sent at the last moment
//  would only be left behind in the pipeline) - err says how many
//  attempts and the last answer; ZI_ERR_IO when interrupted
//  (zsys_interrupted).
int zi_client_infer_retry (zi_client_t *self, int n, const char *const *names,
                           const zi_tensor_t *const *inputs, const zi_client_retry_t *opts,
                           zi_msg_t **reply_p, char *err, size_t errlen);

//  What a client counted: REQUESTs sent (first attempts), sent again by
//  zi_client_infer_retry, and answers dropped because their request had
//  been answered already (an answer that crossed a retry).
typedef struct {
    uint64_t sent, resent, stale;
} zi_client_counts_t;

void zi_client_counts (const zi_client_t *self, zi_client_counts_t *counts);

//  The routing id the broker knows this client by.
const char *zi_client_identity (const zi_client_t *self);

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
