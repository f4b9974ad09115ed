/*  zi_msg.h - ZIP/1 messages: build, encode, send, receive, decode.

    One message of the zinfer pipeline protocol (schemas/PROTOCOL.md) is a
    command, a few header fields and zero or more tensors. On the wire:

        +-----------------------------+
        | routing id  (ROUTER only)   |  added/removed by ZeroMQ; the
        | empty delimiter (REQ peers) |  "envelope": see zi_msg_recv_from
        +-----------------------------+
        | header: ONE msgpack map     |  {"v":1, "cmd":"REQUEST", "id":7,
        |   <= 64 KiB                 |   "t":[{"name":"x","dtype":"float32",
        |                             |         "shape":[2,3]}], ...}
        +-----------------------------+
        | tensor 0 raw bytes          |  one frame per entry of "t", in
        | tensor 1 raw bytes          |  order: little-endian, C-contiguous,
        | ...                         |  exactly prod(shape)*sizeof(dtype)
        +-----------------------------+

    Building and sending a request:

        zi_msg_t *msg = zi_msg_new (ZI_CMD_REQUEST);
        zi_msg_set_id (msg, 7);
        zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){2, 3});
        if (zi_msg_add_tensor (msg, "x", &x)) { ... x is still yours ... }
        zi_msg_send (&msg, dealer);             //  msg is NULL afterwards

    Receiving (a ROUTER keeps the envelope so it can answer):

        zmsg_t *envelope = NULL;
        zi_msg_t *req = NULL;
        char err[256];
        int rc = zi_msg_recv_from (front, &envelope, &req, err, sizeof err);
        if (rc && envelope) {                   //  tell the sender why
            zi_msg_t *e = zi_msg_new_error (zi_code_from_err (rc), err);
            zi_msg_send_to (&e, front, envelope);
        }
        const zi_tensor_t *in = zi_msg_tensor_find (req, "x");

    Decoding trusts nothing: every count and length in the header is checked
    against the bytes that remain before anything is read or allocated, and
    a bad message is an error return naming the problem, never a crash.

    Zero copy: a received tensor is a view into its ZeroMQ frame, which the
    message keeps alive. Decoding guarantees every tensor's data is aligned
    to its element size: a frame that is not (libzmq's TCP receive path may
    hand out frames at any offset inside its receive buffer) is copied into
    an aligned buffer, and zi_msg_copies() counts those copies.
    Sending hands owning tensors' buffers to libzmq without copying them
    (zmq_msg_init_data); the buffer is freed when libzmq is done with it.

    Shared bytes: a received tensor's bytes are a reference-counted libzmq
    message. zi_msg_add_tensor_ref puts the same bytes in another message
    (zmq_msg_copy: a counter, no copy), so a relay can send a tensor and
    keep it to send again (the broker re-dispatches a dead worker's task
    and answers a retry this way). Bytes may then be read by several
    holders at once: treat received tensor data as read-only.
*/
#ifndef ZI_MSG_H_INCLUDED
#define ZI_MSG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <czmq.h>

#include "zi_error.h"
#include "zi_shm.h"
#include "zi_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Protocol version carried in "v".
#define ZI_MSG_VERSION 1

//  Limits (PROTOCOL.md "Limits"): a decoder rejects anything above them
//  with ZI_ERR_LIMIT, and the encoder refuses to produce it.
#define ZI_MSG_MAX_HEADER  65536   //  bytes in the header frame
#define ZI_MSG_MAX_TENSORS 64      //  tensors (= tensor frames) per message
#define ZI_MSG_MAX_FRAMES  (1 + ZI_MSG_MAX_TENSORS)  //  after the envelope
#define ZI_MSG_MAX_NAME    128     //  bytes in a name, dtype, key or cmd
#define ZI_MSG_MAX_REASON  1024    //  bytes in an ERROR reason
#define ZI_MSG_MAX_DEPTH   6       //  msgpack nesting, the header map is 1
#define ZI_MSG_MAX_REQS    1024    //  "reqs" entries in one TASK
#define ZI_MSG_MAX_PRIO    7       //  priority classes are 0..7

typedef enum {
    ZI_CMD_REQUEST = 1,     //  client -> broker: model inputs
    ZI_CMD_REPLY,           //  broker -> client: model outputs
    ZI_CMD_ERROR,           //  anyone -> sender: code + reason
    ZI_CMD_TASK,            //  between stages, broker -> worker
    ZI_CMD_READY,           //  worker -> broker: segment, capacity, credit
    ZI_CMD_RESULT,          //  worker -> broker
    ZI_CMD_HEARTBEAT,       //  both ways
    ZI_CMD_DISCONNECT,      //  both ways
    ZI_CMD_STATS,           //  client -> broker
    ZI_CMD_STATS_REPLY,     //  broker -> client
    ZI_CMD_HEALTH,          //  client -> broker
    ZI_CMD_HEALTH_REPLY,    //  broker -> client
} zi_cmd_t;

//  Error codes carried by an ERROR message (HTTP-like numbers).
typedef enum {
    ZI_CODE_BAD_REQUEST = 400,  //  malformed or invalid; do not retry
    ZI_CODE_TIMEOUT = 408,      //  deadline passed; retry with a new one
    ZI_CODE_TOO_LARGE = 413,    //  over a size limit; do not retry
    ZI_CODE_BUSY = 429,         //  pipeline full; retry after backoff
    ZI_CODE_INTERNAL = 500,     //  a bug; do not retry blindly
    ZI_CODE_UNAVAILABLE = 503,  //  no live replica; retry later
    ZI_CODE_VERSION = 505,      //  protocol version mismatch; do not retry
} zi_code_t;

//  The rows of one request inside a TASK: rows [first, first+count) of
//  request `id` (a broker-assigned request id). A task's tensors stack the
//  rows of its entries along dimension 0, in entry order.
typedef struct {
    uint64_t id;
    uint32_t first;
    uint32_t count;
} zi_msg_req_t;

typedef struct zi_msg zi_msg_t;

//  ---------------------------------------------------------------------
//  Commands and codes

//  Wire name of a command ("REQUEST"), or "?" when unknown.
const char *zi_cmd_name (zi_cmd_t cmd);

//  Parse a wire name; returns 0 when not a known command.
zi_cmd_t zi_cmd_from_name (const char *name);

//  Name of an error code ("BUSY"), or "?" when unknown.
const char *zi_code_name (int code);

//  Parse a code name; returns 0 when not a known code.
zi_code_t zi_code_from_name (const char *name);

//  True when a client may retry after this code (after a backoff, or with
//  a new deadline): BUSY, TIMEOUT, UNAVAILABLE. Unknown codes: false.
bool zi_code_retryable (int code);

//  The ERROR code to answer with when a libzinfer call failed with `err`
//  (a zi_err_t): MALFORMED, UNSUPPORTED, SHAPE, OVERFLOW, NOTFOUND ->
//  BAD_REQUEST; LIMIT -> TOO_LARGE; VERSION -> VERSION; TIMEOUT -> TIMEOUT;
//  NOMEM -> BUSY; IO -> UNAVAILABLE; anything else -> INTERNAL.
zi_code_t zi_code_from_err (int err);

//  ---------------------------------------------------------------------
//  Construction

//  Create an empty message for a command. Returns NULL on a bad command or
//  when memory is exhausted.
zi_msg_t *zi_msg_new (zi_cmd_t cmd);

//  Create an ERROR message with a code and a reason (copied, truncated to
//  ZI_MSG_MAX_REASON bytes). Set its id with zi_msg_set_id if known.
zi_msg_t *zi_msg_new_error (zi_code_t code, const char *reason);

//  Destroy a message, its tensors and the frames they view; sets *self_p
//  to NULL. Safe on NULL.
void zi_msg_destroy (zi_msg_t **self_p);

zi_cmd_t zi_msg_cmd (const zi_msg_t *self);

//  True when the header field with this wire key ("id", "deadline", ...)
//  was present in the decoded message or has been set.
bool zi_msg_has (const zi_msg_t *self, const char *key);

//  ---------------------------------------------------------------------
//  Header fields. Getters return 0 / NULL / false when a field is absent.
//  Setters of bounded fields return 0, or ZI_ERR_INVALID when the value is
//  outside what the protocol allows (and leave the field unchanged).

uint64_t zi_msg_id (const zi_msg_t *self);          //  "id"
void zi_msg_set_id (zi_msg_t *self, uint64_t id);
uint32_t zi_msg_mb (const zi_msg_t *self);          //  "mb"
uint32_t zi_msg_nmb (const zi_msg_t *self);         //  "nmb"
//  Micro-batch index and count: mb < nmb, nmb >= 1.
int zi_msg_set_mb (zi_msg_t *self, uint32_t mb, uint32_t nmb);
uint32_t zi_msg_seg (const zi_msg_t *self);         //  "seg"
void zi_msg_set_seg (zi_msg_t *self, uint32_t seg);
uint8_t zi_msg_prio (const zi_msg_t *self);         //  "prio", 0..7
int zi_msg_set_prio (zi_msg_t *self, uint8_t prio);
uint32_t zi_msg_deadline_ms (const zi_msg_t *self); //  "deadline", 0 = none
void zi_msg_set_deadline_ms (zi_msg_t *self, uint32_t ms);
uint32_t zi_msg_attempt (const zi_msg_t *self);     //  "attempt"
void zi_msg_set_attempt (zi_msg_t *self, uint32_t attempt);
int zi_msg_code (const zi_msg_t *self);             //  "code", 100..999
int zi_msg_set_code (zi_msg_t *self, int code);
uint32_t zi_msg_credit (const zi_msg_t *self);      //  "credit"
void zi_msg_set_credit (zi_msg_t *self, uint32_t credit);
//  "grant": the broker's running count of segment-0 task starts it allows
//  partition (tasks received on intake + free credit; PROTOCOL.md 7.2).
uint64_t zi_msg_grant (const zi_msg_t *self);
void zi_msg_set_grant (zi_msg_t *self, uint64_t grant);
double zi_msg_capacity (const zi_msg_t *self);      //  "cap", finite >= 0
int zi_msg_set_capacity (zi_msg_t *self, double capacity);
bool zi_msg_live (const zi_msg_t *self);            //  "live"
bool zi_msg_ready (const zi_msg_t *self);           //  "ready"
void zi_msg_set_health (zi_msg_t *self, bool live, bool ready);

//  String fields: the getter's pointer lives as long as the message; the
//  setter copies (NULL clears). Strings hold no NUL byte; "reason" is at
//  most ZI_MSG_MAX_REASON bytes, the others ZI_MSG_MAX_NAME.
const char *zi_msg_reason (const zi_msg_t *self);   //  "reason"
int zi_msg_set_reason (zi_msg_t *self, const char *reason);
const char *zi_msg_name (const zi_msg_t *self);     //  "name" (worker)
int zi_msg_set_name (zi_msg_t *self, const char *name);
const char *zi_msg_model (const zi_msg_t *self);    //  "model"
int zi_msg_set_model (zi_msg_t *self, const char *model);
const char *zi_msg_plan (const zi_msg_t *self);     //  "plan"
int zi_msg_set_plan (zi_msg_t *self, const char *plan);

//  "stats": one msgpack map, kept as its encoded bytes. The setter copies
//  `size` bytes after checking they are exactly one well-formed map within
//  the header limits (ZI_ERR_MALFORMED / ZI_ERR_LIMIT otherwise). The
//  getter returns NULL and *size 0 when absent.
int zi_msg_set_stats (zi_msg_t *self, const void *data, size_t size);
const uint8_t *zi_msg_stats (const zi_msg_t *self, size_t *size);

//  "reqs": the requests a TASK carries. The setter copies the array (at
//  most ZI_MSG_MAX_REQS entries, first + count must not overflow).
int zi_msg_set_reqs (zi_msg_t *self, const zi_msg_req_t *reqs, size_t count);
int zi_msg_add_req (zi_msg_t *self, uint64_t id, uint32_t first,
                    uint32_t count);
const zi_msg_req_t *zi_msg_reqs (const zi_msg_t *self, size_t *count);

//  ---------------------------------------------------------------------
//  Tensors. Only REQUEST, REPLY, TASK and RESULT carry tensors.

//  Append a contiguous tensor under a name (1..ZI_MSG_MAX_NAME bytes,
//  unique in the message). Takes ownership of *tensor_p and NULLs it on
//  success only; on failure the caller still owns it. An owning tensor is
//  sent without copying; a view is copied when sent, and its memory must
//  stay valid until then. Returns 0, ZI_ERR_INVALID or ZI_ERR_LIMIT.
int zi_msg_add_tensor (zi_msg_t *self, const char *name,
                       zi_tensor_t **tensor_p);

//  Append a deep copy of a tensor (strided sources allowed).
int zi_msg_add_tensor_copy (zi_msg_t *self, const char *name,
                            const zi_tensor_t *tensor);

//  Shared memory (zi_shm.h). zi_msg_add_tensor_shm adds a tensor whose
//  bytes the caller wrote into a block of its own arena (zi_shm_alloc):
//  data and ref as zi_shm_alloc gave them; owned: the block is released
//  when the last message sharing the bytes is gone (else someone else, the
//  broker, releases it). A message with shm_out set sends
//  such tensors (and received ones that came as references) as a reference
//  with an empty frame; without it, their bytes go inline as usual.
//  zi_msg_tensor_shm says whether tensor i lives in shared memory.
int zi_msg_add_tensor_shm (zi_msg_t *self, const char *name, zi_dtype_t dtype, int rank,
                           const int64_t *shape, void *data, const zi_shm_ref_t *ref,
                           bool owned);
void zi_msg_set_shm_out (zi_msg_t *self, bool shm_out);
bool zi_msg_tensor_shm (const zi_msg_t *self, size_t i);

size_t zi_msg_tensor_count (const zi_msg_t *self);

//  The i-th tensor and its name, or NULL when i is out of range.
const zi_tensor_t *zi_msg_tensor (const zi_msg_t *self, size_t i);
const char *zi_msg_tensor_name (const zi_msg_t *self, size_t i);

//  The tensor with this name, or NULL.
const zi_tensor_t *zi_msg_tensor_find (const zi_msg_t *self,
                                       const char *name);

//  Remove the i-th tensor and hand it to the caller as an owning tensor
//  (copied if it was a view into a received frame, moved otherwise); the
//  later tensors move down one index. NULL when i is out of range or
//  memory is exhausted (then the message is unchanged).
zi_tensor_t *zi_msg_take_tensor (zi_msg_t *self, size_t i);

//  Append tensor i of src under `name`, sharing its bytes with src by
//  reference (no copy): each message keeps them alive, and they are freed
//  with the last holder (sent messages included). A tensor src owns is
//  turned into shared bytes first (no copy); a view of the caller's memory
//  is copied once. src's tensor stays readable. Returns 0, ZI_ERR_INVALID
//  (bad index or name, name taken, no tensors in this command),
//  ZI_ERR_LIMIT or ZI_ERR_NOMEM.
int zi_msg_add_tensor_ref (zi_msg_t *self, const char *name, zi_msg_t *src,
                           size_t i);

//  Move every tensor of src to the end of self, with the frames they view
//  (no copy): a relay forwards received tensors this way. Returns 0, or
//  ZI_ERR_INVALID / ZI_ERR_LIMIT / ZI_ERR_NOMEM with both messages unchanged.
int zi_msg_move_tensors (zi_msg_t *self, zi_msg_t *src);

//  Number of tensors that decoding copied because their frame was not
//  aligned to the element size (0 = all zero-copy).
size_t zi_msg_copies (const zi_msg_t *self);

//  ---------------------------------------------------------------------
//  Codec

//  Encode into a new zmsg (header frame + one frame per tensor), consuming
//  the message: on success *self_p is NULL and *zmsg_p holds the result;
//  on failure the caller still owns *self_p. Tensor bytes are copied
//  (stable CZMQ has no zframe_frommem): for tests and tools; zi_msg_send
//  never copies.
//  Returns 0, ZI_ERR_LIMIT (header over ZI_MSG_MAX_HEADER) or ZI_ERR_NOMEM.
int zi_msg_encode (zi_msg_t **self_p, zmsg_t **zmsg_p);

//  Decode a header frame followed by the tensor frames (envelope already
//  removed). Always consumes *zmsg_p. On success *msg_p owns a message
//  whose tensors view the received frames; on failure *msg_p is NULL, the
//  return is ZI_ERR_MALFORMED, ZI_ERR_VERSION, ZI_ERR_LIMIT or
//  ZI_ERR_NOMEM, and err (if not NULL) names the problem.
int zi_msg_decode (zmsg_t **zmsg_p, zi_msg_t **msg_p, char *err,
                   size_t errlen);

//  Validate a header frame on its own (the pure part of zi_msg_decode)
//  and store in *ntensors (if not NULL) how many tensor frames must follow
//  it. Returns 0 or an error as zi_msg_decode does.
int zi_msg_decode_header (const void *data, size_t size, size_t *ntensors,
                          char *err, size_t errlen);

//  The header frame a message was decoded from (its exact bytes, unknown
//  keys included), or NULL with *size 0 for a message built locally. Lives
//  as long as the message.
const uint8_t *zi_msg_header (const zi_msg_t *self, size_t *size);

//  A new header frame: the encoded header `data` (one msgpack map, as
//  zi_msg_decode_header accepts) with one more entry, `key` = the unsigned
//  `value`, after the others. Every other byte is kept, unknown keys
//  included: a relay uses it to add a hint without re-encoding. The
//  caller makes sure `key` is not there yet (a key must not appear twice).
//  NULL when data is not a map, the result would be over
//  ZI_MSG_MAX_HEADER, or memory is exhausted.
zframe_t *zi_msg_header_add_uint (const void *data, size_t size, const char *key,
                                  uint64_t value);

//  ---------------------------------------------------------------------
//  Sockets

//  Encode and send on any socket but a ROUTER. Always consumes *self_p
//  (once the first frame is queued the message cannot be taken back; a
//  multipart message is delivered whole or not at all). Returns 0,
//  ZI_ERR_IO (errno says why), ZI_ERR_LIMIT or ZI_ERR_NOMEM.
int zi_msg_send (zi_msg_t **self_p, zsock_t *sock);

//  As zi_msg_send, on a ROUTER: prefixes copies of the envelope's frames
//  (routing id, and the empty delimiter of a REQ peer). The envelope is
//  borrowed.
int zi_msg_send_to (zi_msg_t **self_p, zsock_t *sock, zmsg_t *envelope);

//  As zi_msg_send, but the header frame is `header` (size bytes, copied)
//  instead of the encoded fields: a relay forwards the header it received
//  (zi_msg_header, perhaps with zi_msg_header_add_uint) with the message's
//  tensors. The caller vouches that header describes those tensors (it was
//  decoded, or built from a decoded one). Always consumes *self_p.
int zi_msg_send_header (zi_msg_t **self_p, zsock_t *sock, const void *header,
                        size_t size);

//  As zi_msg_send (envelope NULL) or zi_msg_send_to (envelope borrowed),
//  for a hot loop: the header is encoded in a small buffer rather than
//  msgpack's default 8 KiB one. The same bytes go out. Always consumes
//  *self_p. Returns as zi_msg_send.
int zi_msg_send_small (zi_msg_t **self_p, zsock_t *sock, zmsg_t *envelope);

//  Receive and decode one message on any socket but a ROUTER; a leading
//  empty delimiter frame is skipped. Blocks up to the socket's receive
//  timeout. Returns as zi_msg_decode, or ZI_ERR_IO on a timeout or an
//  interrupt; a message of more frames than the limits allow is read to
//  its end (so the next message is intact) and rejected with ZI_ERR_LIMIT.
int zi_msg_recv (zsock_t *sock, zi_msg_t **msg_p, char *err, size_t errlen);

//  As zi_msg_recv, on a ROUTER: *envelope_p receives the routing id frame
//  plus the empty delimiter if the peer sent one (a REQ socket does). It is
//  set whenever a routing id was read, even if decoding then fails, so the
//  caller can answer with an ERROR; the caller destroys it.
int zi_msg_recv_from (zsock_t *sock, zmsg_t **envelope_p, zi_msg_t **msg_p,
                      char *err, size_t errlen);

//  ZeroMQ routing ids are 1..255 bytes.
#define ZI_MSG_MAX_ROUTING_ID 255

//  As zi_msg_recv_from, for a hot loop that only needs to know its peer:
//  the routing id is copied into id (ZI_MSG_MAX_ROUTING_ID bytes of room)
//  with its length in *id_size (0 when none was read), and *delimited says
//  whether an empty delimiter followed it; no envelope is allocated.
//  Returns as zi_msg_recv_from.
int zi_msg_recv_routed (zsock_t *sock, uint8_t *id, size_t *id_size,
                        bool *delimited, zi_msg_t **msg_p, char *err,
                        size_t errlen);

//  One-line summary for logs: 'REQUEST id=7 t=[x:float32[2,3]]'.
char *zi_msg_summary (const zi_msg_t *self, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
