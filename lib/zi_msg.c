/*  zi_msg.c - ZIP/1 codec; see zi_msg.h and schemas/PROTOCOL.md.

    Encoding uses msgpack-c's packer. Decoding does NOT use msgpack-c's
    unpacker: msgpack-c 4.0 reserves memory for every element a container
    header claims before reading any, so five hostile bytes (0xdd ff ff ff
    ff) can make it allocate gigabytes. Instead a small cursor walks the
    header bytes and checks every read against what remains.

    Validation rules, in the order they are applied. Each failure returns
    ZI_ERR_MALFORMED unless marked [LIMIT] (ZI_ERR_LIMIT) or [VERSION]
    (ZI_ERR_VERSION), with a message naming the problem:

     1. The message has a header frame [MALFORMED if none] and at most
        ZI_MSG_MAX_FRAMES frames in all [LIMIT].
     2. The header frame is not empty, and at most ZI_MSG_MAX_HEADER bytes
        [LIMIT].
     3. The header is exactly one msgpack map: another top-level type, or
        any byte after the map, is malformed.
     4. Every read checks the bytes that remain first. A container that
        claims n elements needs at least n bytes left (a map: 2n), a str or
        bin of n bytes needs n bytes left; nothing is allocated from a
        claimed count before that check.
     5. Containers nest at most ZI_MSG_MAX_DEPTH deep, the header map being
        depth 1 [LIMIT]. ext types and the unused byte 0xc1 are rejected.
     6. Keys are strings of at most ZI_MSG_MAX_NAME bytes. A known key may
        appear once; unknown keys are skipped (forward compatibility), but
        their values are still walked under rules 4-5.
     7. "v" is present and an unsigned integer; a value other than
        ZI_MSG_VERSION is [VERSION]. This is checked before every other
        field so a newer peer learns about the version, not a field.
     8. "cmd" is present and names a known command.
     9. Every field the command requires is present, and every known field
        present has its type and range: unsigned integers within their
        C type, "prio" <= 7, "code" in 100..999, "cap" finite and >= 0,
        booleans, strings without NUL bytes ("reason" at most
        ZI_MSG_MAX_REASON bytes [LIMIT], other strings ZI_MSG_MAX_NAME
        [LIMIT]), "stats" a map.
    10. "reqs" is an array of at most ZI_MSG_MAX_REQS [LIMIT] entries, each
        a 3-array [uint64 id, uint32 first, uint32 count] with first + count
        not above 2^32-1.
    11. "t" is an array of at most ZI_MSG_MAX_TENSORS descriptors [LIMIT],
        each a map with "name" (1..ZI_MSG_MAX_NAME bytes [LIMIT], unique
        in the message), "dtype" (a known numeric dtype) and "shape" (an
        array of at most ZI_MAX_RANK dims [LIMIT], each a non-negative
        integer, whose byte size does not overflow).
    12. Command semantics: only REQUEST, REPLY, TASK and RESULT carry
        tensors; nmb >= 1 and mb < nmb; a TASK has at least one "reqs"
        entry, and exactly one when it is a micro-batch (nmb > 1).
    13. The number of tensor frames equals the number of descriptors, and
        each frame holds exactly prod(shape) * sizeof(dtype) bytes.
    14. (Not an error) A tensor frame whose data is not aligned to the
        element size is copied into an aligned buffer.
*/
#include "zi_msg.h"

#include "zi_shm.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

//  ---------------------------------------------------------------------
//  Header fields: one table gives each wire key a bit.

typedef enum {
    F_V, F_CMD, F_ID, F_MB, F_NMB, F_SEG, F_PRIO, F_DEADLINE, F_ATTEMPT,
    F_T, F_CODE, F_REASON, F_MODEL, F_PLAN, F_REQS, F_CAP, F_CREDIT,
    F_NAME, F_STATS, F_LIVE, F_READY, F_GRANT, F_COUNT
} s_field_t;

static const char *s_field_keys[F_COUNT] = {
    "v", "cmd", "id", "mb", "nmb", "seg", "prio", "deadline", "attempt",
    "t", "code", "reason", "model", "plan", "reqs", "cap", "credit",
    "name", "stats", "live", "ready", "grant",
};

#define BIT(f) (1u << (f))

static const char *s_cmd_names[] = {
    NULL, "REQUEST", "REPLY", "ERROR", "TASK", "READY", "RESULT",
    "HEARTBEAT", "DISCONNECT", "STATS", "STATS_REPLY", "HEALTH",
    "HEALTH_REPLY",
};
#define S_CMD_MAX ZI_CMD_HEALTH_REPLY

//  Fields each command must carry besides "v" and "cmd" (PROTOCOL.md).
static const uint32_t s_required[S_CMD_MAX + 1] = {
    [ZI_CMD_REQUEST] = BIT (F_ID) | BIT (F_T),
    [ZI_CMD_REPLY] = BIT (F_ID) | BIT (F_T),
    [ZI_CMD_ERROR] = BIT (F_CODE) | BIT (F_REASON),
    [ZI_CMD_TASK] = BIT (F_REQS) | BIT (F_MB) | BIT (F_NMB) | BIT (F_SEG)
                    | BIT (F_T),
    [ZI_CMD_READY] = BIT (F_SEG) | BIT (F_CAP) | BIT (F_CREDIT) | BIT (F_NAME),
    [ZI_CMD_RESULT] = BIT (F_ID) | BIT (F_SEG) | BIT (F_T),
    [ZI_CMD_HEARTBEAT] = 0,
    [ZI_CMD_DISCONNECT] = 0,
    [ZI_CMD_STATS] = BIT (F_ID),
    [ZI_CMD_STATS_REPLY] = BIT (F_ID) | BIT (F_STATS),
    [ZI_CMD_HEALTH] = BIT (F_ID),
    [ZI_CMD_HEALTH_REPLY] = BIT (F_ID) | BIT (F_LIVE) | BIT (F_READY),
};

static bool
s_cmd_carries_tensors (zi_cmd_t cmd)
{
    return cmd == ZI_CMD_REQUEST || cmd == ZI_CMD_REPLY || cmd == ZI_CMD_TASK
           || cmd == ZI_CMD_RESULT;
}

//  ---------------------------------------------------------------------
//  The message

//  A tensor slot. Received bytes (and bytes shared with another message)
//  live in a zmq_msg_t, whose content libzmq reference-counts: handing the
//  same bytes to several outgoing messages (zmq_msg_copy) costs a counter
//  increment, never a copy. The tensor struct and short names live inside
//  the slot, so decoding a one-tensor message allocates only the message.
#define S_NAME_INLINE 24

typedef struct {
    char *name;             //  name_inline, or heap when longer
    zi_tensor_t *tensor;    //  &view when has_part; else an owned struct
                            //  (its data owned, or borrowed from the caller)
    bool has_part;
    bool has_shm;           //  part's bytes are a block of a shared-memory
    zi_shm_ref_t shm;       //  arena (zi_shm.h), named by this reference
    zmq_msg_t part;         //  the bytes when has_part
    zi_tensor_t view;       //  a view of part's data when has_part
    char name_inline[S_NAME_INLINE];
} s_slot_t;

//  Most messages carry one or two tensors: their slots live inside the
//  message, which keeps it small enough for malloc's fast per-thread caches
//  (a 1.7 KB message cost ~20% of the broker's time in free).
#define S_INLINE_SLOTS 2

struct zi_msg {
    zi_cmd_t cmd;
    uint32_t present;       //  BIT(F_x) for every field present / set
    uint64_t id, grant;
    uint32_t mb, nmb, seg, deadline_ms, attempt, credit;
    uint8_t prio;
    int code;
    double capacity;
    bool live, ready;
    char *reason, *name, *model, *plan;
    const uint8_t *stats;   //  into stats_owned or into header
    size_t stats_size;
    uint8_t *stats_owned;
    zi_msg_req_t *reqs;
    size_t nreqs;
    bool has_header;
    zmq_msg_t header;       //  received header frame, kept for stats and
                            //  for relays (zi_msg_header)
    s_slot_t *slots;        //  inline_slots, or heap for more tensors
    size_t cap_slots;
    s_slot_t inline_slots[S_INLINE_SLOTS];
    size_t ntensors;
    size_t copies;
    bool shm_out;           //  send shared-memory tensors as references
};

//  Point a slot's inner pointers at itself again after it was moved by
//  memcpy (a zmq_msg_t may hold small data inline, so even the data
//  address can move).
static void
s_slot_fix (s_slot_t *slot, bool name_inline)
{
    if (name_inline) {
        slot->name = slot->name_inline;
    }
    if (slot->has_part) {
        slot->tensor = &slot->view;
        slot->view.data = slot->view.nbytes ? zmq_msg_data (&slot->part) : NULL;
    }
}

//  Move slot src to dst (dst is uninitialised memory).
static void
s_slot_move (s_slot_t *dst, s_slot_t *src)
{
    bool name_inline = src->name == src->name_inline;
    memcpy (dst, src, sizeof *dst);
    s_slot_fix (dst, name_inline);
}

//  Set a slot's name (copied). 0 or ZI_ERR_NOMEM.
static int
s_slot_name (s_slot_t *slot, const char *name, size_t len)
{
    if (len < S_NAME_INLINE) {
        slot->name = slot->name_inline;
    }
    else if (!(slot->name = (char *) malloc (len + 1))) {
        return ZI_ERR_NOMEM;
    }
    memcpy (slot->name, name, len);
    slot->name[len] = 0;
    return ZI_OK;
}

static void
s_slot_clear (s_slot_t *slot)
{
    if (slot->name != slot->name_inline) {
        free (slot->name);
    }
    slot->name = NULL;
    if (slot->has_part) {
        zmq_msg_close (&slot->part);
        slot->has_part = false;
    }
    else {
        zi_tensor_destroy (&slot->tensor);
    }
    slot->tensor = NULL;
    slot->has_shm = false;
}

static zi_msg_t *
s_msg_alloc (void)
{
    zi_msg_t *self = (zi_msg_t *) calloc (1, sizeof *self);
    if (self) {
        self->nmb = 1;
        self->slots = self->inline_slots;
        self->cap_slots = S_INLINE_SLOTS;
    }
    return self;
}

//  Room for n tensors (n <= ZI_MSG_MAX_TENSORS). 0 or ZI_ERR_NOMEM.
static int
s_reserve (zi_msg_t *self, size_t n)
{
    if (n <= self->cap_slots) {
        return ZI_OK;
    }
    assert (n <= ZI_MSG_MAX_TENSORS);
    size_t cap = self->cap_slots * 2 > n ? self->cap_slots * 2 : n;
    cap = cap > ZI_MSG_MAX_TENSORS ? ZI_MSG_MAX_TENSORS : cap;
    s_slot_t *slots = (s_slot_t *) malloc (cap * sizeof *slots);
    if (!slots) {
        return ZI_ERR_NOMEM;
    }
    for (size_t i = 0; i < self->ntensors; i++) {
        s_slot_move (&slots[i], &self->slots[i]);
    }
    if (self->slots != self->inline_slots) {
        free (self->slots);
    }
    self->slots = slots;
    self->cap_slots = cap;
    return ZI_OK;
}

zi_msg_t *
zi_msg_new (zi_cmd_t cmd)
{
    if ((int) cmd < ZI_CMD_REQUEST || cmd > S_CMD_MAX) {
        return NULL;
    }
    zi_msg_t *self = s_msg_alloc ();
    if (!self) {
        return NULL;
    }
    self->cmd = cmd;
    //  Defaults that make a freshly built message valid on the wire.
    if (cmd == ZI_CMD_ERROR) {
        self->code = ZI_CODE_INTERNAL;
    }
    return self;
}

void
zi_msg_destroy (zi_msg_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zi_msg_t *self = *self_p;
    for (size_t i = 0; i < self->ntensors; i++) {
        s_slot_clear (&self->slots[i]);
    }
    if (self->slots != self->inline_slots) {
        free (self->slots);
    }
    free (self->reason);
    free (self->name);
    free (self->model);
    free (self->plan);
    free (self->stats_owned);
    free (self->reqs);
    if (self->has_header) {
        zmq_msg_close (&self->header);
    }
    free (self);
    *self_p = NULL;
}

//  ---------------------------------------------------------------------
//  Commands and codes

const char *
zi_cmd_name (zi_cmd_t cmd)
{
    if ((int) cmd < ZI_CMD_REQUEST || cmd > S_CMD_MAX) {
        return "?";
    }
    return s_cmd_names[cmd];
}

zi_cmd_t
zi_cmd_from_name (const char *name)
{
    for (int c = ZI_CMD_REQUEST; name && c <= S_CMD_MAX; c++) {
        if (strcmp (name, s_cmd_names[c]) == 0) {
            return (zi_cmd_t) c;
        }
    }
    return (zi_cmd_t) 0;
}

static const struct {
    zi_code_t code;
    const char *name;
    bool retry;
} s_codes[] = {
    {ZI_CODE_BAD_REQUEST, "BAD_REQUEST", false},
    {ZI_CODE_TIMEOUT, "TIMEOUT", true},
    {ZI_CODE_TOO_LARGE, "TOO_LARGE", false},
    {ZI_CODE_BUSY, "BUSY", true},
    {ZI_CODE_INTERNAL, "INTERNAL", false},
    {ZI_CODE_UNAVAILABLE, "UNAVAILABLE", true},
    {ZI_CODE_VERSION, "VERSION", false},
};
#define S_NCODES (sizeof s_codes / sizeof s_codes[0])

const char *
zi_code_name (int code)
{
    for (size_t i = 0; i < S_NCODES; i++) {
        if ((int) s_codes[i].code == code) {
            return s_codes[i].name;
        }
    }
    return "?";
}

zi_code_t
zi_code_from_name (const char *name)
{
    for (size_t i = 0; name && i < S_NCODES; i++) {
        if (strcmp (name, s_codes[i].name) == 0) {
            return s_codes[i].code;
        }
    }
    return (zi_code_t) 0;
}

bool
zi_code_retryable (int code)
{
    for (size_t i = 0; i < S_NCODES; i++) {
        if ((int) s_codes[i].code == code) {
            return s_codes[i].retry;
        }
    }
    return false;
}

zi_code_t
zi_code_from_err (int err)
{
    switch (err) {
        case ZI_ERR_MALFORMED:
        case ZI_ERR_UNSUPPORTED:
        case ZI_ERR_SHAPE:
        case ZI_ERR_OVERFLOW:
        case ZI_ERR_NOTFOUND:
            return ZI_CODE_BAD_REQUEST;
        case ZI_ERR_LIMIT:
            return ZI_CODE_TOO_LARGE;
        case ZI_ERR_VERSION:
            return ZI_CODE_VERSION;
        case ZI_ERR_NOMEM:
            //  Memory pressure passes; the client should back off.
            return ZI_CODE_BUSY;
        case ZI_ERR_IO:
            return ZI_CODE_UNAVAILABLE;
        case ZI_ERR_TIMEOUT:
            return ZI_CODE_TIMEOUT;
        default:
            return ZI_CODE_INTERNAL;
    }
}

//  ---------------------------------------------------------------------
//  Header fields

zi_cmd_t
zi_msg_cmd (const zi_msg_t *self)
{
    return self->cmd;
}

static int
s_field_lookup (const char *key, size_t len)
{
    for (int f = 0; f < F_COUNT; f++) {
        if (strlen (s_field_keys[f]) == len
            && memcmp (s_field_keys[f], key, len) == 0) {
            return f;
        }
    }
    return -1;
}

bool
zi_msg_has (const zi_msg_t *self, const char *key)
{
    if (!key) {
        return false;
    }
    int f = s_field_lookup (key, strlen (key));
    if (f < 0) {
        return false;
    }
    if (f == F_V || f == F_CMD) {
        return true;
    }
    if (f == F_T) {
        return s_cmd_carries_tensors (self->cmd) || self->ntensors > 0;
    }
    return (self->present & BIT (f)) != 0;
}

uint64_t zi_msg_id (const zi_msg_t *self) { return self->id; }
uint32_t zi_msg_mb (const zi_msg_t *self) { return self->mb; }
uint32_t zi_msg_nmb (const zi_msg_t *self) { return self->nmb; }
uint32_t zi_msg_seg (const zi_msg_t *self) { return self->seg; }
uint8_t zi_msg_prio (const zi_msg_t *self) { return self->prio; }
uint32_t zi_msg_deadline_ms (const zi_msg_t *self) { return self->deadline_ms; }
uint32_t zi_msg_attempt (const zi_msg_t *self) { return self->attempt; }
int zi_msg_code (const zi_msg_t *self) { return self->code; }
uint32_t zi_msg_credit (const zi_msg_t *self) { return self->credit; }
uint64_t zi_msg_grant (const zi_msg_t *self) { return self->grant; }

void
zi_msg_set_grant (zi_msg_t *self, uint64_t grant)
{
    self->grant = grant;
    self->present |= BIT (F_GRANT);
}
double zi_msg_capacity (const zi_msg_t *self) { return self->capacity; }
bool zi_msg_live (const zi_msg_t *self) { return self->live; }
bool zi_msg_ready (const zi_msg_t *self) { return self->ready; }
const char *zi_msg_reason (const zi_msg_t *self) { return self->reason; }
const char *zi_msg_name (const zi_msg_t *self) { return self->name; }
const char *zi_msg_model (const zi_msg_t *self) { return self->model; }
const char *zi_msg_plan (const zi_msg_t *self) { return self->plan; }

void
zi_msg_set_id (zi_msg_t *self, uint64_t id)
{
    self->id = id;
    self->present |= BIT (F_ID);
}

int
zi_msg_set_mb (zi_msg_t *self, uint32_t mb, uint32_t nmb)
{
    if (nmb < 1 || mb >= nmb) {
        return ZI_ERR_INVALID;
    }
    self->mb = mb;
    self->nmb = nmb;
    self->present |= BIT (F_MB) | BIT (F_NMB);
    return ZI_OK;
}

void
zi_msg_set_seg (zi_msg_t *self, uint32_t seg)
{
    self->seg = seg;
    self->present |= BIT (F_SEG);
}

int
zi_msg_set_prio (zi_msg_t *self, uint8_t prio)
{
    if (prio > ZI_MSG_MAX_PRIO) {
        return ZI_ERR_INVALID;
    }
    self->prio = prio;
    self->present |= BIT (F_PRIO);
    return ZI_OK;
}

void
zi_msg_set_deadline_ms (zi_msg_t *self, uint32_t ms)
{
    self->deadline_ms = ms;
    self->present |= BIT (F_DEADLINE);
}

void
zi_msg_set_attempt (zi_msg_t *self, uint32_t attempt)
{
    self->attempt = attempt;
    self->present |= BIT (F_ATTEMPT);
}

int
zi_msg_set_code (zi_msg_t *self, int code)
{
    if (code < 100 || code > 999) {
        return ZI_ERR_INVALID;
    }
    self->code = code;
    self->present |= BIT (F_CODE);
    return ZI_OK;
}

void
zi_msg_set_credit (zi_msg_t *self, uint32_t credit)
{
    self->credit = credit;
    self->present |= BIT (F_CREDIT);
}

int
zi_msg_set_capacity (zi_msg_t *self, double capacity)
{
    if (!isfinite (capacity) || capacity < 0) {
        return ZI_ERR_INVALID;
    }
    self->capacity = capacity;
    self->present |= BIT (F_CAP);
    return ZI_OK;
}

void
zi_msg_set_health (zi_msg_t *self, bool live, bool ready)
{
    self->live = live;
    self->ready = ready;
    self->present |= BIT (F_LIVE) | BIT (F_READY);
}

//  Replace *dst with a copy of src (NULL clears the field). The string
//  must fit in maxlen bytes.
static int
s_set_string (zi_msg_t *self, char **dst, s_field_t f, const char *src,
              size_t maxlen)
{
    if (!src) {
        free (*dst);
        *dst = NULL;
        self->present &= ~BIT (f);
        return ZI_OK;
    }
    size_t len = strlen (src);
    if (len > maxlen) {
        return ZI_ERR_INVALID;
    }
    char *copy = (char *) malloc (len + 1);
    if (!copy) {
        return ZI_ERR_NOMEM;
    }
    memcpy (copy, src, len + 1);
    free (*dst);
    *dst = copy;
    self->present |= BIT (f);
    return ZI_OK;
}

int
zi_msg_set_reason (zi_msg_t *self, const char *reason)
{
    return s_set_string (self, &self->reason, F_REASON, reason,
                         ZI_MSG_MAX_REASON);
}

int
zi_msg_set_name (zi_msg_t *self, const char *name)
{
    return s_set_string (self, &self->name, F_NAME, name, ZI_MSG_MAX_NAME);
}

int
zi_msg_set_model (zi_msg_t *self, const char *model)
{
    return s_set_string (self, &self->model, F_MODEL, model, ZI_MSG_MAX_NAME);
}

int
zi_msg_set_plan (zi_msg_t *self, const char *plan)
{
    return s_set_string (self, &self->plan, F_PLAN, plan, ZI_MSG_MAX_NAME);
}

zi_msg_t *
zi_msg_new_error (zi_code_t code, const char *reason)
{
    zi_msg_t *self = zi_msg_new (ZI_CMD_ERROR);
    if (!self) {
        return NULL;
    }
    if (zi_msg_set_code (self, (int) code)) {
        self->code = ZI_CODE_INTERNAL;
    }
    //  Reasons are often built from other messages' text: truncate rather
    //  than fail, an error must always be sendable.
    char buf[ZI_MSG_MAX_REASON + 1];
    snprintf (buf, sizeof buf, "%s", reason ? reason : "");
    if (zi_msg_set_reason (self, buf)) {
        zi_msg_destroy (&self);
    }
    return self;
}

int
zi_msg_set_reqs (zi_msg_t *self, const zi_msg_req_t *reqs, size_t count)
{
    if (count > ZI_MSG_MAX_REQS || (count > 0 && !reqs)) {
        return ZI_ERR_INVALID;
    }
    for (size_t i = 0; i < count; i++) {
        if ((uint64_t) reqs[i].first + reqs[i].count > UINT32_MAX) {
            return ZI_ERR_INVALID;
        }
    }
    zi_msg_req_t *copy = NULL;
    if (count > 0) {
        copy = (zi_msg_req_t *) malloc (count * sizeof *copy);
        if (!copy) {
            return ZI_ERR_NOMEM;
        }
        memcpy (copy, reqs, count * sizeof *copy);
    }
    free (self->reqs);
    self->reqs = copy;
    self->nreqs = count;
    self->present |= BIT (F_REQS);
    return ZI_OK;
}

int
zi_msg_add_req (zi_msg_t *self, uint64_t id, uint32_t first, uint32_t count)
{
    if (self->nreqs >= ZI_MSG_MAX_REQS
        || (uint64_t) first + count > UINT32_MAX) {
        return ZI_ERR_INVALID;
    }
    zi_msg_req_t *grown = (zi_msg_req_t *) realloc (
        self->reqs, (self->nreqs + 1) * sizeof *grown);
    if (!grown) {
        return ZI_ERR_NOMEM;
    }
    self->reqs = grown;
    self->reqs[self->nreqs++] = (zi_msg_req_t){id, first, count};
    self->present |= BIT (F_REQS);
    return ZI_OK;
}

const zi_msg_req_t *
zi_msg_reqs (const zi_msg_t *self, size_t *count)
{
    if (count) {
        *count = self->nreqs;
    }
    return self->reqs;
}

const uint8_t *
zi_msg_stats (const zi_msg_t *self, size_t *size)
{
    if (size) {
        *size = self->stats ? self->stats_size : 0;
    }
    return self->stats;
}

//  ---------------------------------------------------------------------
//  The bounded msgpack walker. A cursor over [buf, buf+len); every read
//  checks what remains first (rule 4).

typedef struct {
    const uint8_t *buf;
    size_t len;
    size_t pos;
} s_cur_t;

typedef enum {
    K_NIL, K_BOOL, K_UINT, K_NINT, K_FLOAT, K_STR, K_BIN, K_ARRAY, K_MAP
} s_kind_t;

static const char *s_kind_names[] = {
    "nil", "bool", "unsigned integer", "negative integer", "float", "string",
    "bin", "array", "map",
};

typedef struct {
    s_kind_t kind;
    uint64_t u;             //  K_UINT/K_BOOL value; K_ARRAY/K_MAP count;
                            //  K_STR/K_BIN length
    int64_t i;              //  K_NINT value
    double f;               //  K_FLOAT value
    const uint8_t *ptr;     //  K_STR/K_BIN bytes (not NUL-terminated)
    size_t at;              //  offset of the type byte, for messages
} s_item_t;

static size_t
s_left (const s_cur_t *cur)
{
    return cur->len - cur->pos;
}

static uint64_t
s_be (const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

//  Read n big-endian bytes after the type byte.
static int
s_take (s_cur_t *cur, size_t n, uint64_t *v, const char *what, char *err,
        size_t errlen)
{
    if (s_left (cur) < n) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "truncated header at byte %zu: %s needs %zu bytes, "
                        "%zu remain", cur->pos, what, n, s_left (cur));
    }
    *v = s_be (cur->buf + cur->pos, n);
    cur->pos += n;
    return ZI_OK;
}

//  Read one item: a scalar whole, a str/bin with its body (skipped over),
//  or a container's header with its element count checked against the
//  bytes that remain.
static int
s_read (s_cur_t *cur, s_item_t *it, char *err, size_t errlen)
{
    memset (it, 0, sizeof *it);
    it->at = cur->pos;
    if (s_left (cur) < 1) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "truncated header at byte %zu: expected a value",
                        cur->pos);
    }
    uint8_t b = cur->buf[cur->pos++];
    uint64_t v = 0;
    int rc = ZI_OK;
    size_t width = 0;   //  bytes of a length / count field

    if (b <= 0x7f) {
        it->kind = K_UINT;
        it->u = b;
        return ZI_OK;
    }
    if (b >= 0xe0) {
        it->kind = K_NINT;
        it->i = (int8_t) b;
        return ZI_OK;
    }
    if ((b & 0xf0) == 0x80 || (b & 0xf0) == 0x90) {
        it->kind = (b & 0xf0) == 0x80 ? K_MAP : K_ARRAY;
        it->u = b & 0x0f;
        goto container;
    }
    if ((b & 0xe0) == 0xa0) {
        it->kind = K_STR;
        it->u = b & 0x1f;
        goto body;
    }
    switch (b) {
        case 0xc0:
            it->kind = K_NIL;
            return ZI_OK;
        case 0xc2:
        case 0xc3:
            it->kind = K_BOOL;
            it->u = b == 0xc3;
            return ZI_OK;
        case 0xc4: case 0xc5: case 0xc6:
            it->kind = K_BIN;
            width = (size_t) 1 << (b - 0xc4);
            rc = s_take (cur, width, &it->u, "bin length", err, errlen);
            if (rc) {
                return rc;
            }
            goto body;
        case 0xca: {
            rc = s_take (cur, 4, &v, "float32", err, errlen);
            if (rc) {
                return rc;
            }
            uint32_t bits = (uint32_t) v;
            float f;
            memcpy (&f, &bits, sizeof f);
            it->kind = K_FLOAT;
            it->f = f;
            return ZI_OK;
        }
        case 0xcb: {
            rc = s_take (cur, 8, &v, "float64", err, errlen);
            if (rc) {
                return rc;
            }
            double d;
            memcpy (&d, &v, sizeof d);
            it->kind = K_FLOAT;
            it->f = d;
            return ZI_OK;
        }
        case 0xcc: case 0xcd: case 0xce: case 0xcf:
            rc = s_take (cur, (size_t) 1 << (b - 0xcc), &it->u, "uint", err,
                         errlen);
            it->kind = K_UINT;
            return rc;
        case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
            size_t n = (size_t) 1 << (b - 0xd0);
            rc = s_take (cur, n, &v, "int", err, errlen);
            if (rc) {
                return rc;
            }
            //  Sign-extend from n bytes without shifting into the sign bit.
            int64_t s;
            if (n == 8) {
                memcpy (&s, &v, sizeof s);
            }
            else if (v & ((uint64_t) 1 << (n * 8 - 1))) {
                s = (int64_t) v - ((int64_t) 1 << (n * 8));
            }
            else {
                s = (int64_t) v;
            }
            //  Some encoders write small non-negative values as signed:
            //  they are unsigned integers to every reader of the header.
            if (s >= 0) {
                it->kind = K_UINT;
                it->u = (uint64_t) s;
            }
            else {
                it->kind = K_NINT;
                it->i = s;
            }
            return ZI_OK;
        }
        case 0xd9: case 0xda: case 0xdb:
            it->kind = K_STR;
            rc = s_take (cur, (size_t) 1 << (b - 0xd9), &it->u, "str length",
                         err, errlen);
            if (rc) {
                return rc;
            }
            goto body;
        case 0xdc: case 0xdd:
            it->kind = K_ARRAY;
            rc = s_take (cur, b == 0xdc ? 2 : 4, &it->u, "array count", err,
                         errlen);
            if (rc) {
                return rc;
            }
            goto container;
        case 0xde: case 0xdf:
            it->kind = K_MAP;
            rc = s_take (cur, b == 0xde ? 2 : 4, &it->u, "map count", err,
                         errlen);
            if (rc) {
                return rc;
            }
            goto container;
        case 0xc1:
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "byte %zu: 0xc1 is not a msgpack type", it->at);
        default:
            //  0xc7-0xc9, 0xd4-0xd8: ext types have no meaning in a header.
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "byte %zu: msgpack ext type 0x%02x not allowed "
                            "in a header", it->at, b);
    }

body:
    if (it->u > s_left (cur)) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "truncated header at byte %zu: %s claims %" PRIu64
                        " bytes, %zu remain", it->at, s_kind_names[it->kind],
                        it->u, s_left (cur));
    }
    it->ptr = cur->buf + cur->pos;
    cur->pos += (size_t) it->u;
    return ZI_OK;

container: {
        //  Each element takes at least one byte: a claim beyond what is
        //  left is a lie, whatever it would cost to believe it.
        uint64_t need = it->kind == K_MAP ? it->u * 2 : it->u;
        if (need > s_left (cur)) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "truncated header at byte %zu: %s claims %" PRIu64
                            " entries, %zu bytes remain", it->at,
                            s_kind_names[it->kind], it->u, s_left (cur));
        }
        return ZI_OK;
    }
}

//  Skip one value, which sits at nesting `depth` (the header map is 1).
static int
s_skip (s_cur_t *cur, int depth, char *err, size_t errlen)
{
    s_item_t it;
    int rc = s_read (cur, &it, err, errlen);
    if (rc) {
        return rc;
    }
    if (it.kind != K_ARRAY && it.kind != K_MAP) {
        return ZI_OK;
    }
    if (depth > ZI_MSG_MAX_DEPTH) {
        return zi_fail (err, errlen, ZI_ERR_LIMIT,
                        "byte %zu: msgpack nesting deeper than %d levels",
                        it.at, ZI_MSG_MAX_DEPTH);
    }
    uint64_t n = it.kind == K_MAP ? it.u * 2 : it.u;
    for (uint64_t i = 0; i < n; i++) {
        rc = s_skip (cur, depth + 1, err, errlen);
        if (rc) {
            return rc;
        }
    }
    return ZI_OK;
}

//  ---------------------------------------------------------------------
//  Header decoding

typedef struct {
    const uint8_t *name;
    size_t name_len;
    zi_dtype_t dtype;
    int rank;
    int64_t shape[ZI_MAX_RANK];
    size_t nbytes;
    bool has_shm;           //  "shm": [arena, offset, gen]: bytes in shared memory
    zi_shm_ref_t shm;
} s_desc_t;

typedef struct {
    const uint8_t *buf;
    size_t len;
    size_t at[F_COUNT];     //  offset of each known key's value
    uint32_t seen;          //  BIT(F_x) for each key present
} s_header_t;

//  A cursor positioned on field f's value.
static s_cur_t
s_cur_at (const s_header_t *h, s_field_t f)
{
    return (s_cur_t){h->buf, h->len, h->at[f]};
}

static int
s_wrong_type (const char *what, const s_item_t *it, const char *want,
              char *err, size_t errlen)
{
    return zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s must be %s, got %s",
                    what, want, s_kind_names[it->kind]);
}

static int
s_get_uint (const s_header_t *h, s_field_t f, uint64_t max, uint64_t *out,
            char *err, size_t errlen)
{
    s_cur_t cur = s_cur_at (h, f);
    s_item_t it;
    int rc = s_read (&cur, &it, err, errlen);
    if (rc) {
        return rc;
    }
    if (it.kind != K_UINT) {
        //  The name is formatted only here: snprintf per field was a few
        //  percent of the broker's time.
        char what[32];
        snprintf (what, sizeof what, "'%s'", s_field_keys[f]);
        return s_wrong_type (what, &it, "an unsigned integer", err, errlen);
    }
    if (it.u > max) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "'%s' %" PRIu64 " out of range (max %" PRIu64 ")",
                        s_field_keys[f], it.u, max);
    }
    *out = it.u;
    return ZI_OK;
}

//  Check a string's bytes: length bound and no NUL inside (we hand them
//  out as C strings). Copies into *out when out is not NULL.
//  True when s_check_str would accept the item (no message needed): the
//  callers format the name of what they check only when it is not.
static bool
s_str_ok (const s_item_t *it, size_t maxlen)
{
    return it->kind == K_STR && it->u <= maxlen
           && !memchr (it->ptr, 0, (size_t) it->u);
}

static int
s_check_str (const char *what, const s_item_t *it, size_t maxlen, char **out,
             char *err, size_t errlen)
{
    if (it->kind != K_STR) {
        return s_wrong_type (what, it, "a string", err, errlen);
    }
    if (it->u > maxlen) {
        return zi_fail (err, errlen, ZI_ERR_LIMIT,
                        "%s is %" PRIu64 " bytes long, limit %zu", what, it->u,
                        maxlen);
    }
    if (memchr (it->ptr, 0, (size_t) it->u)) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s contains a NUL byte", what);
    }
    if (out) {
        char *s = (char *) malloc ((size_t) it->u + 1);
        if (!s) {
            return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        }
        memcpy (s, it->ptr, (size_t) it->u);
        s[it->u] = 0;
        *out = s;
    }
    return ZI_OK;
}

static int
s_get_str (const s_header_t *h, s_field_t f, size_t maxlen, char **out,
           char *err, size_t errlen)
{
    s_cur_t cur = s_cur_at (h, f);
    s_item_t it;
    int rc = s_read (&cur, &it, err, errlen);
    if (rc) {
        return rc;
    }
    char what[32] = "";
    if (!s_str_ok (&it, maxlen)) {
        snprintf (what, sizeof what, "'%s'", s_field_keys[f]);
    }
    return s_check_str (what, &it, maxlen, out, err, errlen);
}

static int
s_get_bool (const s_header_t *h, s_field_t f, bool *out, char *err,
            size_t errlen)
{
    s_cur_t cur = s_cur_at (h, f);
    s_item_t it;
    int rc = s_read (&cur, &it, err, errlen);
    if (rc) {
        return rc;
    }
    if (it.kind != K_BOOL) {
        char what[32];
        snprintf (what, sizeof what, "'%s'", s_field_keys[f]);
        return s_wrong_type (what, &it, "a boolean", err, errlen);
    }
    *out = it.u != 0;
    return ZI_OK;
}

//  "reqs": [[id, first, count], ...]
static int
s_get_reqs (const s_header_t *h, zi_msg_t *msg, char *err, size_t errlen)
{
    s_cur_t cur = s_cur_at (h, F_REQS);
    s_item_t it;
    int rc = s_read (&cur, &it, err, errlen);
    if (rc) {
        return rc;
    }
    if (it.kind != K_ARRAY) {
        return s_wrong_type ("'reqs'", &it, "an array", err, errlen);
    }
    if (it.u > ZI_MSG_MAX_REQS) {
        return zi_fail (err, errlen, ZI_ERR_LIMIT,
                        "'reqs' has %" PRIu64 " entries, limit %d", it.u,
                        ZI_MSG_MAX_REQS);
    }
    size_t n = (size_t) it.u;
    //  n was checked against the header's bytes and the limit: safe.
    zi_msg_req_t *reqs = n ? (zi_msg_req_t *) calloc (n, sizeof *reqs) : NULL;
    if (n && !reqs) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        s_item_t e, v[3];
        rc = s_read (&cur, &e, err, errlen);
        if (rc) {
            goto fail;
        }
        if (e.kind != K_ARRAY || e.u != 3) {
            rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                          "'reqs'[%zu] must be an array [id, first, count]",
                          i);
            goto fail;
        }
        for (int k = 0; k < 3; k++) {
            rc = s_read (&cur, &v[k], err, errlen);
            if (rc) {
                goto fail;
            }
            if (v[k].kind != K_UINT || (k > 0 && v[k].u > UINT32_MAX)) {
                static const char *names[] = {"id", "first", "count"};
                rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                              "'reqs'[%zu] %s must be an unsigned integer%s",
                              i, names[k], k ? " below 2^32" : "");
                goto fail;
            }
        }
        if (v[1].u + v[2].u > UINT32_MAX) {
            rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                          "'reqs'[%zu] rows %" PRIu64 "+%" PRIu64
                          " overflow 32 bits", i, v[1].u, v[2].u);
            goto fail;
        }
        reqs[i] = (zi_msg_req_t){v[0].u, (uint32_t) v[1].u, (uint32_t) v[2].u};
    }
    msg->reqs = reqs;
    msg->nreqs = n;
    return ZI_OK;
fail:
    free (reqs);
    return rc;
}

//  One tensor descriptor {"name": str, "dtype": str, "shape": [uint...]}.
static int
s_get_desc (s_cur_t *cur, size_t index, s_desc_t *d, char *err, size_t errlen)
{
    s_item_t it;
    int rc = s_read (cur, &it, err, errlen);
    if (rc) {
        return rc;
    }
    //  Names of what is checked are formatted only for an error message.
    char what[64];
    if (it.kind != K_MAP) {
        snprintf (what, sizeof what, "tensor %zu descriptor", index);
        return s_wrong_type (what, &it, "a map", err, errlen);
    }
    bool have_name = false, have_dtype = false, have_shape = false;
    uint64_t npairs = it.u;
    for (uint64_t p = 0; p < npairs; p++) {
        s_item_t key, val;
        rc = s_read (cur, &key, err, errlen);
        if (rc) {
            return rc;
        }
        if (key.kind != K_STR) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "tensor %zu: key is a %s, not a string", index,
                            s_kind_names[key.kind]);
        }
        bool is_name = key.u == 4 && memcmp (key.ptr, "name", 4) == 0;
        bool is_dtype = key.u == 5 && memcmp (key.ptr, "dtype", 5) == 0;
        bool is_shape = key.u == 5 && memcmp (key.ptr, "shape", 5) == 0;
        bool is_shm = key.u == 3 && memcmp (key.ptr, "shm", 3) == 0;
        if (is_shm) {
            //  [arena name, block offset, generation] (zi_shm.h)
            if (d->has_shm) {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "tensor %zu: duplicate key 'shm'", index);
            }
            s_item_t arr, nm, off, gen;
            rc = s_read (cur, &arr, err, errlen);
            if (!rc && (arr.kind != K_ARRAY || arr.u != 3)) {
                rc = zi_fail (err, errlen, ZI_ERR_MALFORMED, "tensor %zu: 'shm' is not "
                              "[arena, offset, generation]", index);
            }
            rc = rc ? rc : s_read (cur, &nm, err, errlen);
            rc = rc ? rc : s_read (cur, &off, err, errlen);
            rc = rc ? rc : s_read (cur, &gen, err, errlen);
            if (rc) {
                return rc;
            }
            if (nm.kind != K_STR || nm.u == 0 || nm.u >= ZI_SHM_NAME_MAX
                || off.kind != K_UINT || gen.kind != K_UINT || gen.u > UINT32_MAX) {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED, "tensor %zu: 'shm' is not "
                                "[arena, offset, generation]", index);
            }
            memcpy (d->shm.name, nm.ptr, (size_t) nm.u);
            d->shm.name[nm.u] = 0;
            d->shm.offset = off.u;
            d->shm.gen = (uint32_t) gen.u;
            d->has_shm = true;
            continue;
        }
        if ((is_name && have_name) || (is_dtype && have_dtype)
            || (is_shape && have_shape)) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "tensor %zu: duplicate key '%.*s'", index,
                            (int) key.u, (const char *) key.ptr);
        }
        if (!is_name && !is_dtype && !is_shape) {
            //  Unknown descriptor key: skip its value (depth 4).
            rc = s_skip (cur, 4, err, errlen);
            if (rc) {
                return rc;
            }
            continue;
        }
        rc = s_read (cur, &val, err, errlen);
        if (rc) {
            return rc;
        }
        if (is_name) {
            if (!s_str_ok (&val, ZI_MSG_MAX_NAME)) {
                snprintf (what, sizeof what, "tensor %zu name", index);
                return s_check_str (what, &val, ZI_MSG_MAX_NAME, NULL, err, errlen);
            }
            if (val.u == 0) {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "tensor %zu name is empty", index);
            }
            d->name = val.ptr;
            d->name_len = (size_t) val.u;
            have_name = true;
        }
        else if (is_dtype) {
            if (!s_str_ok (&val, 31)) {
                snprintf (what, sizeof what, "tensor %zu dtype", index);
                rc = s_check_str (what, &val, 31, NULL, err, errlen);
                return rc == ZI_ERR_LIMIT ? ZI_ERR_MALFORMED : rc;
            }
            char name[32];
            memcpy (name, val.ptr, (size_t) val.u);
            name[val.u] = 0;
            d->dtype = zi_dtype_from_name (name);
            if (!zi_dtype_valid (d->dtype)) {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "tensor %zu: dtype '%s' is unknown or not "
                                "numeric", index, name);
            }
            have_dtype = true;
        }
        else {
            if (val.kind != K_ARRAY) {
                snprintf (what, sizeof what, "tensor %zu shape", index);
                return s_wrong_type (what, &val, "an array", err, errlen);
            }
            if (val.u > ZI_MAX_RANK) {
                return zi_fail (err, errlen, ZI_ERR_LIMIT,
                                "tensor %zu: rank %" PRIu64 " exceeds %d",
                                index, val.u, ZI_MAX_RANK);
            }
            d->rank = (int) val.u;
            for (int k = 0; k < d->rank; k++) {
                s_item_t dim;
                rc = s_read (cur, &dim, err, errlen);
                if (rc) {
                    return rc;
                }
                if (dim.kind == K_NINT) {
                    return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                    "tensor %zu: negative dim %" PRId64
                                    " at axis %d", index, dim.i, k);
                }
                if (dim.kind != K_UINT) {
                    return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                    "tensor %zu: dim %d is a %s, not an "
                                    "integer", index, k,
                                    s_kind_names[dim.kind]);
                }
                if (dim.u > INT64_MAX) {
                    return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                    "tensor %zu: dim %" PRIu64 " at axis %d "
                                    "overflows int64", index, dim.u, k);
                }
                d->shape[k] = (int64_t) dim.u;
            }
            have_shape = true;
        }
    }
    if (!have_name || !have_dtype || !have_shape) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "tensor %zu: descriptor lacks '%s'", index,
                        !have_name ? "name" : !have_dtype ? "dtype" : "shape");
    }
    if (zi_shape_nbytes (d->dtype, d->rank, d->shape, &d->nbytes)) {
        char shape[160];
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "tensor %zu '%.*s': %s%s byte size overflows", index,
                        (int) d->name_len, (const char *) d->name,
                        zi_dtype_name (d->dtype),
                        zi_shape_str (d->rank, d->shape, shape, sizeof shape));
    }
    return ZI_OK;
}

static int
s_get_descs (const s_header_t *h, s_desc_t *descs, size_t *ndesc, char *err,
             size_t errlen)
{
    s_cur_t cur = s_cur_at (h, F_T);
    s_item_t it;
    int rc = s_read (&cur, &it, err, errlen);
    if (rc) {
        return rc;
    }
    if (it.kind != K_ARRAY) {
        return s_wrong_type ("'t'", &it, "an array", err, errlen);
    }
    if (it.u > ZI_MSG_MAX_TENSORS) {
        return zi_fail (err, errlen, ZI_ERR_LIMIT,
                        "'t' describes %" PRIu64 " tensors, limit %d", it.u,
                        ZI_MSG_MAX_TENSORS);
    }
    size_t n = (size_t) it.u;
    for (size_t i = 0; i < n; i++) {
        memset (&descs[i], 0, sizeof descs[i]);
        rc = s_get_desc (&cur, i, &descs[i], err, errlen);
        if (rc) {
            return rc;
        }
        for (size_t j = 0; j < i; j++) {
            if (descs[j].name_len == descs[i].name_len
                && memcmp (descs[j].name, descs[i].name, descs[i].name_len)
                       == 0) {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "tensor %zu: duplicate name '%.*s'", i,
                                (int) descs[i].name_len,
                                (const char *) descs[i].name);
            }
        }
    }
    *ndesc = n;
    return ZI_OK;
}

//  Rule 12: what must hold between fields, for decoded and built messages.
static int
s_check_semantics (const zi_msg_t *msg, size_t ntensors, int code, char *err,
                   size_t errlen)
{
    const char *cmd = zi_cmd_name (msg->cmd);
    if (ntensors > 0 && !s_cmd_carries_tensors (msg->cmd)) {
        return zi_fail (err, errlen, code, "%s carries no tensors, got %zu",
                        cmd, ntensors);
    }
    if (msg->nmb < 1 || msg->mb >= msg->nmb) {
        return zi_fail (err, errlen, code,
                        "micro-batch %" PRIu32 " of %" PRIu32 " is out of "
                        "range (need mb < nmb, nmb >= 1)", msg->mb, msg->nmb);
    }
    if (msg->cmd == ZI_CMD_TASK) {
        if (msg->nreqs == 0) {
            return zi_fail (err, errlen, code,
                            "TASK needs at least one 'reqs' entry");
        }
        if (msg->nmb > 1 && msg->nreqs != 1) {
            return zi_fail (err, errlen, code,
                            "TASK micro-batch (nmb %" PRIu32 ") must carry "
                            "exactly one 'reqs' entry, has %zu", msg->nmb,
                            msg->nreqs);
        }
    }
    return ZI_OK;
}

//  Check that data is exactly one msgpack map within the limits, nested
//  as the value of a header key (depth 2).
static int
s_check_stats (const uint8_t *data, size_t size, char *err, size_t errlen)
{
    if (size > ZI_MSG_MAX_HEADER) {
        return zi_fail (err, errlen, ZI_ERR_LIMIT,
                        "'stats' is %zu bytes, limit %d", size,
                        ZI_MSG_MAX_HEADER);
    }
    s_cur_t cur = {data, size, 0};
    if (size < 1 || !((data[0] & 0xf0) == 0x80 || data[0] == 0xde
                      || data[0] == 0xdf)) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "'stats' must be a map");
    }
    int rc = s_skip (&cur, 2, err, errlen);
    if (rc) {
        return rc;
    }
    if (cur.pos != size) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "'stats' has %zu trailing bytes", size - cur.pos);
    }
    return ZI_OK;
}

int
zi_msg_set_stats (zi_msg_t *self, const void *data, size_t size)
{
    if (!data) {
        return ZI_ERR_INVALID;
    }
    int rc = s_check_stats ((const uint8_t *) data, size, NULL, 0);
    if (rc) {
        return rc;
    }
    uint8_t *copy = (uint8_t *) malloc (size);
    if (!copy) {
        return ZI_ERR_NOMEM;
    }
    memcpy (copy, data, size);
    free (self->stats_owned);
    self->stats_owned = copy;
    self->stats = copy;
    self->stats_size = size;
    self->present |= BIT (F_STATS);
    return ZI_OK;
}

//  Walk and validate a header (rules 2-12) into msg and descs. Strings
//  are copied into msg; stats and descriptor names point into buf.
static int
s_decode_header (const uint8_t *buf, size_t len, zi_msg_t *msg,
                 s_desc_t *descs, size_t *ndesc, char *err, size_t errlen)
{
    *ndesc = 0;
    if (len == 0) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "empty header frame");
    }
    if (len > ZI_MSG_MAX_HEADER) {
        return zi_fail (err, errlen, ZI_ERR_LIMIT,
                        "header frame has %zu bytes, limit %d", len,
                        ZI_MSG_MAX_HEADER);
    }
    //  Pass 1: structure, and where each known key's value sits.
    s_header_t h = {buf, len, {0}, 0};
    s_cur_t cur = {buf, len, 0};
    s_item_t top;
    int rc = s_read (&cur, &top, err, errlen);
    if (rc) {
        return rc;
    }
    if (top.kind != K_MAP) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "header is a msgpack %s, not a map",
                        s_kind_names[top.kind]);
    }
    for (uint64_t p = 0; p < top.u; p++) {
        s_item_t key;
        rc = s_read (&cur, &key, err, errlen);
        if (rc) {
            return rc;
        }
        if (key.kind != K_STR) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "header key %" PRIu64 " is a %s, not a string", p,
                            s_kind_names[key.kind]);
        }
        if (key.u > ZI_MSG_MAX_NAME) {
            return zi_fail (err, errlen, ZI_ERR_LIMIT,
                            "header key %" PRIu64 " is %" PRIu64 " bytes long,"
                            " limit %d", p, key.u, ZI_MSG_MAX_NAME);
        }
        int f = s_field_lookup ((const char *) key.ptr, (size_t) key.u);
        if (f >= 0) {
            if (h.seen & BIT (f)) {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "duplicate key '%s'", s_field_keys[f]);
            }
            h.seen |= BIT (f);
            h.at[f] = cur.pos;
        }
        rc = s_skip (&cur, 2, err, errlen);
        if (rc) {
            return rc;
        }
    }
    if (cur.pos != len) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%zu trailing bytes after the header map",
                        len - cur.pos);
    }

    //  Pass 2: the version first (rule 7), then the command.
    uint64_t u;
    if (!(h.seen & BIT (F_V))) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "missing protocol version 'v'");
    }
    rc = s_get_uint (&h, F_V, UINT64_MAX, &u, err, errlen);
    if (rc) {
        return rc;
    }
    if (u != ZI_MSG_VERSION) {
        return zi_fail (err, errlen, ZI_ERR_VERSION,
                        "protocol version %" PRIu64 ", this peer speaks "
                        "version %d", u, ZI_MSG_VERSION);
    }
    if (!(h.seen & BIT (F_CMD))) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "missing command 'cmd'");
    }
    {
        s_cur_t c = s_cur_at (&h, F_CMD);
        s_item_t it;
        rc = s_read (&c, &it, err, errlen);
        if (rc) {
            return rc;
        }
        rc = s_check_str ("'cmd'", &it, ZI_MSG_MAX_NAME, NULL, err, errlen);
        if (rc) {
            return rc;
        }
        char name[ZI_MSG_MAX_NAME + 1];
        memcpy (name, it.ptr, (size_t) it.u);
        name[it.u] = 0;
        msg->cmd = zi_cmd_from_name (name);
        if (!msg->cmd) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "unknown command '%s'", name);
        }
    }
    uint32_t missing = s_required[msg->cmd] & ~h.seen;
    if (missing) {
        int f = __builtin_ctz (missing);
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: missing required field '%s'",
                        zi_cmd_name (msg->cmd), s_field_keys[f]);
    }

    //  Pass 3: each field present, by type and range (rules 9-11).
    if (h.seen & BIT (F_ID)) {
        rc = s_get_uint (&h, F_ID, UINT64_MAX, &msg->id, err, errlen);
        if (rc) {
            return rc;
        }
    }
    if (h.seen & BIT (F_GRANT)) {
        rc = s_get_uint (&h, F_GRANT, UINT64_MAX, &msg->grant, err, errlen);
        if (rc) {
            return rc;
        }
    }
    const struct {
        s_field_t f;
        uint32_t *dst;
    } u32s[] = {
        {F_MB, &msg->mb}, {F_NMB, &msg->nmb}, {F_SEG, &msg->seg},
        {F_DEADLINE, &msg->deadline_ms}, {F_ATTEMPT, &msg->attempt},
        {F_CREDIT, &msg->credit},
    };
    for (size_t i = 0; i < sizeof u32s / sizeof u32s[0]; i++) {
        if (h.seen & BIT (u32s[i].f)) {
            rc = s_get_uint (&h, u32s[i].f, UINT32_MAX, &u, err, errlen);
            if (rc) {
                return rc;
            }
            *u32s[i].dst = (uint32_t) u;
        }
    }
    if (h.seen & BIT (F_PRIO)) {
        rc = s_get_uint (&h, F_PRIO, ZI_MSG_MAX_PRIO, &u, err, errlen);
        if (rc) {
            return rc;
        }
        msg->prio = (uint8_t) u;
    }
    if (h.seen & BIT (F_CODE)) {
        rc = s_get_uint (&h, F_CODE, 999, &u, err, errlen);
        if (rc) {
            return rc;
        }
        if (u < 100) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "'code' %" PRIu64 " out of range 100..999", u);
        }
        msg->code = (int) u;
    }
    if (h.seen & BIT (F_CAP)) {
        s_cur_t c = s_cur_at (&h, F_CAP);
        s_item_t it;
        rc = s_read (&c, &it, err, errlen);
        if (rc) {
            return rc;
        }
        //  Integers are accepted: a hand-written client may send 2 for 2.0.
        double cap = it.kind == K_FLOAT  ? it.f
                     : it.kind == K_UINT ? (double) it.u
                     : it.kind == K_NINT ? (double) it.i
                                         : NAN;
        if (it.kind != K_FLOAT && it.kind != K_UINT && it.kind != K_NINT) {
            return s_wrong_type ("'cap'", &it, "a number", err, errlen);
        }
        if (!isfinite (cap) || cap < 0) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "'cap' %g must be finite and >= 0", cap);
        }
        msg->capacity = cap;
    }
    if (h.seen & BIT (F_LIVE)) {
        rc = s_get_bool (&h, F_LIVE, &msg->live, err, errlen);
        if (rc) {
            return rc;
        }
    }
    if (h.seen & BIT (F_READY)) {
        rc = s_get_bool (&h, F_READY, &msg->ready, err, errlen);
        if (rc) {
            return rc;
        }
    }
    const struct {
        s_field_t f;
        char **dst;
        size_t max;
    } strs[] = {
        {F_REASON, &msg->reason, ZI_MSG_MAX_REASON},
        {F_NAME, &msg->name, ZI_MSG_MAX_NAME},
        {F_MODEL, &msg->model, ZI_MSG_MAX_NAME},
        {F_PLAN, &msg->plan, ZI_MSG_MAX_NAME},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        if (h.seen & BIT (strs[i].f)) {
            rc = s_get_str (&h, strs[i].f, strs[i].max, strs[i].dst, err,
                            errlen);
            if (rc) {
                return rc;
            }
        }
    }
    if (h.seen & BIT (F_STATS)) {
        //  Pass 1 walked it already; find its end to keep its bytes.
        s_cur_t c = s_cur_at (&h, F_STATS);
        s_item_t it;
        rc = s_read (&c, &it, err, errlen);
        if (rc) {
            return rc;
        }
        if (it.kind != K_MAP) {
            return s_wrong_type ("'stats'", &it, "a map", err, errlen);
        }
        c.pos = h.at[F_STATS];
        rc = s_skip (&c, 2, err, errlen);
        if (rc) {
            return rc;
        }
        msg->stats = buf + h.at[F_STATS];
        msg->stats_size = c.pos - h.at[F_STATS];
    }
    if (h.seen & BIT (F_REQS)) {
        rc = s_get_reqs (&h, msg, err, errlen);
        if (rc) {
            return rc;
        }
    }
    if (h.seen & BIT (F_T)) {
        rc = s_get_descs (&h, descs, ndesc, err, errlen);
        if (rc) {
            return rc;
        }
    }
    msg->present = h.seen & ~(BIT (F_V) | BIT (F_CMD) | BIT (F_T));
    return s_check_semantics (msg, *ndesc, ZI_ERR_MALFORMED, err, errlen);
}

int
zi_msg_decode_header (const void *data, size_t size, size_t *ntensors,
                      char *err, size_t errlen)
{
    if (!data && size > 0) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "no header bytes");
    }
    zi_msg_t *msg = s_msg_alloc ();
    if (!msg) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    s_desc_t descs[ZI_MSG_MAX_TENSORS];
    size_t n = 0;
    int rc = s_decode_header ((const uint8_t *) data, size, msg, descs, &n,
                              err, errlen);
    zi_msg_destroy (&msg);
    if (rc == ZI_OK && ntensors) {
        *ntensors = n;
    }
    return rc;
}

//  Decode a header part and tensor parts (the envelope already removed).
//  Takes all nparts parts, whatever the outcome: the message keeps those it
//  views, the rest are closed.
static int
s_decode_parts (zmq_msg_t *parts, size_t nparts, zi_msg_t **msg_p, char *err,
                size_t errlen)
{
    *msg_p = NULL;
    int rc;
    zi_msg_t *msg = NULL;
    if (nparts == 0) {
        rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                      "empty message: no header frame");
        goto done;
    }
    if (nparts > ZI_MSG_MAX_FRAMES) {
        rc = zi_fail (err, errlen, ZI_ERR_LIMIT,
                      "message has %zu frames, limit %d", nparts,
                      ZI_MSG_MAX_FRAMES);
        goto done;
    }
    msg = s_msg_alloc ();
    if (!msg) {
        rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        goto done;
    }
    //  Moved first: a small header's bytes live inside its zmq_msg_t, and
    //  "stats" points into them.
    zmq_msg_init (&msg->header);
    zmq_msg_move (&msg->header, &parts[0]);
    msg->has_header = true;
    s_desc_t descs[ZI_MSG_MAX_TENSORS];
    size_t ndesc = 0;
    rc = s_decode_header ((const uint8_t *) zmq_msg_data (&msg->header),
                          zmq_msg_size (&msg->header), msg, descs, &ndesc, err,
                          errlen);
    if (rc) {
        goto done;
    }
    //  Rule 13: frames against descriptors, before building anything.
    if (nparts - 1 != ndesc) {
        rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                      "header describes %zu tensors, message has %zu tensor "
                      "frames", ndesc, nparts - 1);
        goto done;
    }
    for (size_t i = 0; i < ndesc; i++) {
        size_t size = zmq_msg_size (&parts[1 + i]);
        if (descs[i].has_shm) {
            //  The bytes are in shared memory; the frame is empty.
            bool own;
            if (!zi_shm_accepting (&own)) {
                rc = zi_fail (err, errlen, ZI_ERR_MALFORMED, "tensor %zu '%.*s': a "
                              "shared-memory reference is not accepted here", i,
                              (int) descs[i].name_len, (const char *) descs[i].name);
                goto done;
            }
            if (size != 0 || descs[i].nbytes == 0) {
                rc = zi_fail (err, errlen, ZI_ERR_MALFORMED, "tensor %zu '%.*s': a "
                              "shared-memory tensor needs an empty frame and bytes", i,
                              (int) descs[i].name_len, (const char *) descs[i].name);
                goto done;
            }
            continue;
        }
        if (size != descs[i].nbytes) {
            char shape[160];
            rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                          "tensor %zu '%.*s': frame has %zu bytes, %s%s needs "
                          "%zu", i, (int) descs[i].name_len,
                          (const char *) descs[i].name, size,
                          zi_dtype_name (descs[i].dtype),
                          zi_shape_str (descs[i].rank, descs[i].shape, shape,
                                        sizeof shape),
                          descs[i].nbytes);
            goto done;
        }
    }
    if (s_reserve (msg, ndesc)) {
        rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < ndesc; i++) {
        s_desc_t *d = &descs[i];
        s_slot_t *slot = &msg->slots[i];
        memset (slot, 0, sizeof *slot);
        if (s_slot_name (slot, (const char *) d->name, d->name_len)) {
            rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
            goto done;
        }
        msg->ntensors = i + 1;      //  so destroy frees this slot
        if (d->has_shm) {
            bool own = false;
            zi_shm_accepting (&own);
            char why[256];
            const void *at = zi_shm_resolve (&d->shm, d->nbytes, why, sizeof why);
            void *hold = at ? zi_shm_handle_new (&d->shm, own) : NULL;
            if (!hold) {
                slot->tensor = NULL;
                rc = zi_fail (err, errlen, at ? ZI_ERR_NOMEM : ZI_ERR_MALFORMED,
                              "tensor %zu '%.*s': %s", i, (int) d->name_len,
                              (const char *) d->name, at ? "out of memory" : why);
                goto done;
            }
            if (zmq_msg_init_data (&slot->part, (void *) at, d->nbytes, zi_shm_handle_free,
                                   hold)) {
                zi_shm_handle_free (NULL, hold);
                rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
                goto done;
            }
            slot->has_part = true;
            slot->has_shm = true;
            slot->shm = d->shm;
            zi_tensor_init_view (&slot->view, d->dtype, d->rank, d->shape, (void *) at,
                                 d->nbytes);
            slot->tensor = &slot->view;
            continue;
        }
        zmq_msg_init (&slot->part);
        zmq_msg_move (&slot->part, &parts[1 + i]);
        slot->has_part = true;
        void *data = zmq_msg_data (&slot->part);
        size_t esize = zi_dtype_size (d->dtype);
        if (d->nbytes > 0 && (uintptr_t) data % esize != 0) {
            //  Rule 14: kernels read elements in place; a misaligned frame
            //  would be undefined behaviour, so pay one copy instead.
            slot->tensor = zi_tensor_new (d->dtype, d->rank, d->shape);
            if (slot->tensor) {
                memcpy (slot->tensor->data, data, d->nbytes);
                msg->copies++;
            }
            zmq_msg_close (&slot->part);
            slot->has_part = false;
            if (!slot->tensor) {
                rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
                goto done;
            }
        }
        else {
            //  The descriptor's shape needs exactly the frame's bytes.
            zi_tensor_init_view (&slot->view, d->dtype, d->rank, d->shape,
                                 d->nbytes ? data : NULL, d->nbytes);
            slot->tensor = &slot->view;
        }
    }
    //  Descriptor names pointed into the header; slots have copies now.
    *msg_p = msg;
    msg = NULL;
    rc = ZI_OK;
done:
    zi_msg_destroy (&msg);
    for (size_t i = 0; i < nparts; i++) {
        zmq_msg_close (&parts[i]);  //  moved-out parts are empty: no-op
    }
    return rc;
}

//  libzmq calls this when it no longer needs a CZMQ frame it was lent.
static void
s_free_frame (void *data, void *hint)
{
    zframe_t *frame = (zframe_t *) hint;
    zframe_destroy (&frame);
}

int
zi_msg_decode (zmsg_t **zmsg_p, zi_msg_t **msg_p, char *err, size_t errlen)
{
    assert (zmsg_p);
    assert (msg_p);
    *msg_p = NULL;
    zmsg_t *zmsg = *zmsg_p;
    *zmsg_p = NULL;
    if (!zmsg) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "no message");
    }
    size_t nframes = zmsg_size (zmsg);
    if (nframes > ZI_MSG_MAX_FRAMES) {
        zmsg_destroy (&zmsg);
        return zi_fail (err, errlen, ZI_ERR_LIMIT,
                        "message has %zu frames, limit %d", nframes,
                        ZI_MSG_MAX_FRAMES);
    }
    //  Each CZMQ frame is lent to a zmq_msg_t (no copy) that destroys it
    //  when the last reference goes.
    zmq_msg_t parts[ZI_MSG_MAX_FRAMES];
    size_t n = 0;
    int rc = ZI_OK;
    zframe_t *frame;
    while ((frame = zmsg_pop (zmsg))) {
        void *data = zframe_data (frame);
        size_t size = zframe_size (frame);
        if (rc == ZI_OK
            && zmq_msg_init_data (&parts[n], data, size, s_free_frame,
                                  frame) == 0) {
            n++;
        }
        else {
            rc = ZI_ERR_NOMEM;
            zframe_destroy (&frame);
        }
    }
    zmsg_destroy (&zmsg);
    if (rc) {
        for (size_t i = 0; i < n; i++) {
            zmq_msg_close (&parts[i]);
        }
        return zi_fail (err, errlen, rc, "out of memory");
    }
    return s_decode_parts (parts, n, msg_p, err, errlen);
}

const uint8_t *
zi_msg_header (const zi_msg_t *self, size_t *size)
{
    assert (size);
    if (!self->has_header) {
        *size = 0;
        return NULL;
    }
    *size = zmq_msg_size ((zmq_msg_t *) &self->header);
    return (const uint8_t *) zmq_msg_data ((zmq_msg_t *) &self->header);
}

//  ---------------------------------------------------------------------
//  Tensors

static bool
s_name_ok (const char *name)
{
    return name && name[0] && strlen (name) <= ZI_MSG_MAX_NAME;
}

static ssize_t
s_find (const zi_msg_t *self, const char *name)
{
    for (size_t i = 0; name && i < self->ntensors; i++) {
        if (strcmp (self->slots[i].name, name) == 0) {
            return (ssize_t) i;
        }
    }
    return -1;
}

//  The next slot of self, zeroed and named; NULL when out of memory (the
//  message is unchanged: ntensors counts it only once the caller fills it).
static s_slot_t *
s_new_slot (zi_msg_t *self, const char *name)
{
    if (s_reserve (self, self->ntensors + 1)) {
        return NULL;
    }
    s_slot_t *slot = &self->slots[self->ntensors];
    memset (slot, 0, sizeof *slot);
    if (s_slot_name (slot, name, strlen (name))) {
        return NULL;
    }
    return slot;
}

int
zi_msg_add_tensor (zi_msg_t *self, const char *name, zi_tensor_t **tensor_p)
{
    if (!tensor_p || !*tensor_p || !s_name_ok (name)
        || !s_cmd_carries_tensors (self->cmd) || s_find (self, name) >= 0) {
        return ZI_ERR_INVALID;
    }
    zi_tensor_t *t = *tensor_p;
    if (!zi_dtype_valid (t->dtype) || t->rank < 0 || t->rank > ZI_MAX_RANK
        || !zi_tensor_is_contiguous (t) || (t->nbytes > 0 && !t->data)) {
        return ZI_ERR_INVALID;
    }
    if (self->ntensors >= ZI_MSG_MAX_TENSORS) {
        return ZI_ERR_LIMIT;
    }
    s_slot_t *slot = s_new_slot (self, name);
    if (!slot) {
        return ZI_ERR_NOMEM;
    }
    slot->tensor = t;
    self->ntensors++;
    *tensor_p = NULL;
    return ZI_OK;
}

//  libzmq calls these when it no longer needs a zero-copy buffer, possibly
//  from its I/O thread: each frees only what belongs to that one buffer.
static void
s_free_tensor (void *data, void *hint)
{
    zi_tensor_t *tensor = (zi_tensor_t *) hint;
    zi_tensor_destroy (&tensor);
}

//  Make slot's bytes a reference-counted zmq_msg_t (has_part), so they can
//  be shared: an owning tensor hands its buffer over without a copy; a view
//  of the caller's memory is copied once (it may not outlive the call).
static int
s_slot_to_shared (s_slot_t *slot)
{
    if (slot->has_part) {
        return ZI_OK;
    }
    zi_tensor_t *t = slot->tensor;
    zmq_msg_t part;
    if (t->owns_data && t->nbytes > 0) {
        if (zmq_msg_init_data (&part, t->data, t->nbytes, s_free_tensor, t)) {
            return ZI_ERR_NOMEM;
        }
    }
    else {
        if (zmq_msg_init_size (&part, t->nbytes)) {
            return ZI_ERR_NOMEM;
        }
        if (t->nbytes) {
            memcpy (zmq_msg_data (&part), t->data, t->nbytes);
        }
    }
    int rc = zi_tensor_init_view (&slot->view, t->dtype, t->rank, t->ne,
                                  NULL, t->nbytes);
    assert (rc == 0);   //  the shape was valid in t
    (void) rc;
    if (!(t->owns_data && t->nbytes > 0)) {
        zi_tensor_destroy (&t);     //  the part has its own bytes
    }
    slot->part = part;
    slot->has_part = true;
    s_slot_fix (slot, false);
    return ZI_OK;
}

int
zi_msg_add_tensor_ref (zi_msg_t *self, const char *name, zi_msg_t *src,
                       size_t i)
{
    if (!src || src == self || i >= src->ntensors || !s_name_ok (name)
        || !s_cmd_carries_tensors (self->cmd) || s_find (self, name) >= 0) {
        return ZI_ERR_INVALID;
    }
    if (self->ntensors >= ZI_MSG_MAX_TENSORS) {
        return ZI_ERR_LIMIT;
    }
    if (s_reserve (self, self->ntensors + 1)
        || s_slot_to_shared (&src->slots[i])) {
        return ZI_ERR_NOMEM;
    }
    const s_slot_t *from = &src->slots[i];
    s_slot_t *slot = &self->slots[self->ntensors];
    memset (slot, 0, sizeof *slot);
    if (s_slot_name (slot, name, strlen (name))) {
        return ZI_ERR_NOMEM;
    }
    zmq_msg_init (&slot->part);
    //  libzmq shares the content and counts references (a small one held
    //  inline is copied, a few dozen bytes).
    if (zmq_msg_copy (&slot->part, (zmq_msg_t *) &from->part)) {
        zmq_msg_close (&slot->part);
        s_slot_clear (slot);
        return ZI_ERR_NOMEM;
    }
    slot->view = from->view;
    slot->has_part = true;
    slot->has_shm = from->has_shm;
    slot->shm = from->shm;
    s_slot_fix (slot, false);
    self->ntensors++;
    return ZI_OK;
}

int
zi_msg_add_tensor_copy (zi_msg_t *self, const char *name,
                        const zi_tensor_t *tensor)
{
    if (!tensor) {
        return ZI_ERR_INVALID;
    }
    zi_tensor_t *copy = zi_tensor_dup (tensor);
    if (!copy) {
        return ZI_ERR_NOMEM;
    }
    int rc = zi_msg_add_tensor (self, name, &copy);
    zi_tensor_destroy (&copy);
    return rc;
}

int
zi_msg_add_tensor_shm (zi_msg_t *self, const char *name, zi_dtype_t dtype, int rank,
                       const int64_t *shape, void *data, const zi_shm_ref_t *ref, bool owned)
{
    if (!data || !ref || !s_name_ok (name) || !s_cmd_carries_tensors (self->cmd)
        || s_find (self, name) >= 0) {
        return ZI_ERR_INVALID;
    }
    if (self->ntensors >= ZI_MSG_MAX_TENSORS) {
        return ZI_ERR_LIMIT;
    }
    size_t nbytes;
    if (zi_shape_nbytes (dtype, rank, shape, &nbytes) || nbytes == 0) {
        return ZI_ERR_INVALID;
    }
    s_slot_t *slot = s_new_slot (self, name);
    if (!slot) {
        return ZI_ERR_NOMEM;
    }
    //  Not owned: nothing to free here (the broker releases it).
    void *hold = owned ? zi_shm_handle_new (ref, true) : NULL;
    if ((owned && !hold)
        || zmq_msg_init_data (&slot->part, data, nbytes, owned ? zi_shm_handle_free : NULL,
                              hold)) {
        if (hold) {
            zi_shm_handle_free (NULL, hold);
        }
        s_slot_clear (slot);
        return ZI_ERR_NOMEM;
    }
    slot->has_part = true;
    slot->has_shm = true;
    slot->shm = *ref;
    zi_tensor_init_view (&slot->view, dtype, rank, shape, data, nbytes);
    slot->tensor = &slot->view;
    self->ntensors++;
    return ZI_OK;
}

void
zi_msg_set_shm_out (zi_msg_t *self, bool shm_out)
{
    self->shm_out = shm_out;
}

bool
zi_msg_tensor_shm (const zi_msg_t *self, size_t i)
{
    return i < self->ntensors && self->slots[i].has_shm;
}

size_t
zi_msg_tensor_count (const zi_msg_t *self)
{
    return self->ntensors;
}

const zi_tensor_t *
zi_msg_tensor (const zi_msg_t *self, size_t i)
{
    return i < self->ntensors ? self->slots[i].tensor : NULL;
}

const char *
zi_msg_tensor_name (const zi_msg_t *self, size_t i)
{
    return i < self->ntensors ? self->slots[i].name : NULL;
}

const zi_tensor_t *
zi_msg_tensor_find (const zi_msg_t *self, const char *name)
{
    ssize_t i = s_find (self, name);
    return i < 0 ? NULL : self->slots[i].tensor;
}

zi_tensor_t *
zi_msg_take_tensor (zi_msg_t *self, size_t i)
{
    if (i >= self->ntensors) {
        return NULL;
    }
    s_slot_t *slot = &self->slots[i];
    zi_tensor_t *out;
    if (!slot->has_part && slot->tensor->owns_data) {
        out = slot->tensor;
        slot->tensor = NULL;
    }
    else {
        //  A view dies with its frame (or its caller's memory): copy it.
        out = zi_tensor_dup (slot->tensor);
        if (!out) {
            return NULL;
        }
    }
    s_slot_clear (slot);
    for (size_t k = i; k + 1 < self->ntensors; k++) {
        s_slot_move (&self->slots[k], &self->slots[k + 1]);
    }
    self->ntensors--;
    return out;
}

int
zi_msg_move_tensors (zi_msg_t *self, zi_msg_t *src)
{
    if (!src || src == self) {
        return ZI_ERR_INVALID;
    }
    if (src->ntensors == 0) {
        return ZI_OK;
    }
    if (!s_cmd_carries_tensors (self->cmd)) {
        return ZI_ERR_INVALID;
    }
    if (self->ntensors + src->ntensors > ZI_MSG_MAX_TENSORS) {
        return ZI_ERR_LIMIT;
    }
    for (size_t i = 0; i < src->ntensors; i++) {
        if (s_find (self, src->slots[i].name) >= 0) {
            return ZI_ERR_INVALID;
        }
    }
    if (s_reserve (self, self->ntensors + src->ntensors)) {
        return ZI_ERR_NOMEM;
    }
    for (size_t i = 0; i < src->ntensors; i++) {
        s_slot_move (&self->slots[self->ntensors + i], &src->slots[i]);
    }
    self->ntensors += src->ntensors;
    src->ntensors = 0;
    return ZI_OK;
}

size_t
zi_msg_copies (const zi_msg_t *self)
{
    return self->copies;
}

//  ---------------------------------------------------------------------
//  Encoding

static int
s_pack_key (msgpack_packer *pk, s_field_t f)
{
    return msgpack_pack_str_with_body (pk, s_field_keys[f],
                                       strlen (s_field_keys[f]));
}

static int
s_pack_cstr (msgpack_packer *pk, const char *s)
{
    s = s ? s : "";
    return msgpack_pack_str_with_body (pk, s, strlen (s));
}

//  Write the header map into sbuf. Returns 0, ZI_ERR_INVALID (the message
//  breaks rule 12), ZI_ERR_LIMIT or ZI_ERR_NOMEM.
static int
s_encode_header (const zi_msg_t *self, msgpack_sbuffer *sbuf)
{
    int rc = s_check_semantics (self, self->ntensors, ZI_ERR_INVALID, NULL, 0);
    if (rc) {
        return rc;
    }
    //  Required fields always go out (with their defaults if never set),
    //  optional ones only when set. A required "stats" never set goes out
    //  as an empty map.
    uint32_t emit = (s_required[self->cmd] | self->present)
                    & ~(BIT (F_V) | BIT (F_CMD) | BIT (F_T));
    if (s_cmd_carries_tensors (self->cmd)) {
        emit |= BIT (F_T);
    }
    size_t nfields = 2 + (size_t) __builtin_popcount (emit);
    msgpack_packer pk;
    msgpack_packer_init (&pk, sbuf, msgpack_sbuffer_write);
    int bad = msgpack_pack_map (&pk, nfields);
    bad |= s_pack_key (&pk, F_V);
    bad |= msgpack_pack_uint32 (&pk, ZI_MSG_VERSION);
    bad |= s_pack_key (&pk, F_CMD);
    bad |= s_pack_cstr (&pk, zi_cmd_name (self->cmd));
    for (int f = F_ID; f < F_COUNT; f++) {
        if (!(emit & BIT (f))) {
            continue;
        }
        bad |= s_pack_key (&pk, (s_field_t) f);
        switch ((s_field_t) f) {
            case F_ID: bad |= msgpack_pack_uint64 (&pk, self->id); break;
            case F_MB: bad |= msgpack_pack_uint32 (&pk, self->mb); break;
            case F_NMB: bad |= msgpack_pack_uint32 (&pk, self->nmb); break;
            case F_SEG: bad |= msgpack_pack_uint32 (&pk, self->seg); break;
            case F_PRIO: bad |= msgpack_pack_uint8 (&pk, self->prio); break;
            case F_DEADLINE:
                bad |= msgpack_pack_uint32 (&pk, self->deadline_ms);
                break;
            case F_ATTEMPT:
                bad |= msgpack_pack_uint32 (&pk, self->attempt);
                break;
            case F_CREDIT: bad |= msgpack_pack_uint32 (&pk, self->credit); break;
            case F_GRANT: bad |= msgpack_pack_uint64 (&pk, self->grant); break;
            case F_CODE:
                bad |= msgpack_pack_uint32 (&pk, (uint32_t) self->code);
                break;
            case F_CAP: bad |= msgpack_pack_double (&pk, self->capacity); break;
            case F_LIVE:
                bad |= self->live ? msgpack_pack_true (&pk)
                                  : msgpack_pack_false (&pk);
                break;
            case F_READY:
                bad |= self->ready ? msgpack_pack_true (&pk)
                                   : msgpack_pack_false (&pk);
                break;
            case F_REASON: bad |= s_pack_cstr (&pk, self->reason); break;
            case F_NAME: bad |= s_pack_cstr (&pk, self->name); break;
            case F_MODEL: bad |= s_pack_cstr (&pk, self->model); break;
            case F_PLAN: bad |= s_pack_cstr (&pk, self->plan); break;
            case F_STATS:
                if (self->stats) {
                    //  Already-encoded msgpack: copy its bytes verbatim.
                    bad |= msgpack_sbuffer_write (sbuf,
                                                  (const char *) self->stats,
                                                  self->stats_size);
                }
                else {
                    bad |= msgpack_pack_map (&pk, 0);
                }
                break;
            case F_REQS:
                bad |= msgpack_pack_array (&pk, self->nreqs);
                for (size_t i = 0; i < self->nreqs; i++) {
                    bad |= msgpack_pack_array (&pk, 3);
                    bad |= msgpack_pack_uint64 (&pk, self->reqs[i].id);
                    bad |= msgpack_pack_uint32 (&pk, self->reqs[i].first);
                    bad |= msgpack_pack_uint32 (&pk, self->reqs[i].count);
                }
                break;
            case F_T:
                bad |= msgpack_pack_array (&pk, self->ntensors);
                for (size_t i = 0; i < self->ntensors; i++) {
                    const zi_tensor_t *t = self->slots[i].tensor;
                    bool ref = self->shm_out && self->slots[i].has_shm;
                    bad |= msgpack_pack_map (&pk, ref ? 4 : 3);
                    if (ref) {
                        const zi_shm_ref_t *r = &self->slots[i].shm;
                        bad |= s_pack_cstr (&pk, "shm");
                        bad |= msgpack_pack_array (&pk, 3);
                        bad |= s_pack_cstr (&pk, r->name);
                        bad |= msgpack_pack_uint64 (&pk, r->offset);
                        bad |= msgpack_pack_uint32 (&pk, r->gen);
                    }
                    bad |= s_pack_cstr (&pk, "name");
                    bad |= s_pack_cstr (&pk, self->slots[i].name);
                    bad |= s_pack_cstr (&pk, "dtype");
                    bad |= s_pack_cstr (&pk, zi_dtype_name (t->dtype));
                    bad |= s_pack_cstr (&pk, "shape");
                    bad |= msgpack_pack_array (&pk, (size_t) t->rank);
                    for (int k = 0; k < t->rank; k++) {
                        bad |= msgpack_pack_uint64 (&pk, (uint64_t) t->ne[k]);
                    }
                }
                break;
            default:
                break;
        }
    }
    if (bad) {
        return ZI_ERR_NOMEM;
    }
    if (sbuf->size > ZI_MSG_MAX_HEADER) {
        return ZI_ERR_LIMIT;
    }
    return ZI_OK;
}

//  True when the slot's tensor is exactly its frame's bytes, so the frame
//  itself can go back on the wire.
zframe_t *
zi_msg_header_add_uint (const void *data, size_t size, const char *key, uint64_t value)
{
    const uint8_t *p = (const uint8_t *) data;
    if (!p || size == 0 || !key) {
        return NULL;
    }
    //  The map's entry count is all that changes at the front.
    uint64_t count;
    size_t head;
    if ((p[0] & 0xf0) == 0x80) {
        count = p[0] & 0x0f;
        head = 1;
    }
    else if (p[0] == 0xde && size >= 3) {
        count = s_be (p + 1, 2);
        head = 3;
    }
    else if (p[0] == 0xdf && size >= 5) {
        count = s_be (p + 1, 4);
        head = 5;
    }
    else {
        return NULL;
    }
    if (count >= UINT32_MAX) {
        return NULL;
    }
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    size_t klen = strlen (key);
    int bad = msgpack_pack_map (&pk, (size_t) count + 1);
    bad |= msgpack_sbuffer_write (&sbuf, (const char *) p + head, size - head);
    bad |= msgpack_pack_str (&pk, klen);
    bad |= msgpack_pack_str_body (&pk, key, klen);
    bad |= msgpack_pack_uint64 (&pk, value);
    zframe_t *frame = NULL;
    if (!bad && sbuf.size <= ZI_MSG_MAX_HEADER) {
        frame = zframe_new (sbuf.data, sbuf.size);
    }
    msgpack_sbuffer_destroy (&sbuf);
    return frame;
}

int
zi_msg_encode (zi_msg_t **self_p, zmsg_t **zmsg_p)
{
    assert (self_p && *self_p);
    assert (zmsg_p);
    zi_msg_t *self = *self_p;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    int rc = s_encode_header (self, &sbuf);
    if (rc) {
        msgpack_sbuffer_destroy (&sbuf);
        return rc;
    }
    //  Make every frame first so that a failure leaves the message whole.
    zframe_t *frames[1 + ZI_MSG_MAX_TENSORS] = {NULL};
    frames[0] = zframe_new (sbuf.data, sbuf.size);
    msgpack_sbuffer_destroy (&sbuf);
    bool ok = frames[0] != NULL;
    for (size_t i = 0; ok && i < self->ntensors; i++) {
        const zi_tensor_t *t = self->slots[i].tensor;
        bool ref = self->shm_out && self->slots[i].has_shm;
        frames[1 + i] = zframe_new (ref ? NULL : t->data, ref ? 0 : t->nbytes);
        ok = frames[1 + i] != NULL;
    }
    zmsg_t *zmsg = ok ? zmsg_new () : NULL;
    if (!zmsg) {
        for (size_t i = 0; i <= self->ntensors; i++) {
            zframe_destroy (&frames[i]);
        }
        return ZI_ERR_NOMEM;
    }
    for (size_t i = 0; i <= self->ntensors; i++) {
        zmsg_append (zmsg, &frames[i]);
    }
    zi_msg_destroy (self_p);
    *zmsg_p = zmsg;
    return ZI_OK;
}

//  ---------------------------------------------------------------------
//  Sockets

//  Send one part. Once a message has started, EINTR is retried: a message
//  left half-sent would prefix its rest to the next one.
static int
s_send_part (void *handle, zmq_msg_t *part, bool more, bool started)
{
    int flags = more ? ZMQ_SNDMORE : 0;
    while (zmq_msg_send (part, handle, flags) < 0) {
        if (!(started && errno == EINTR)) {
            return ZI_ERR_IO;   //  the part is unsent: the caller closes it
        }
    }
    return ZI_OK;
}

//  Hand slot i to a zmq_msg_t without copying where possible. The slot
//  gives up what the zmq_msg_t now owns.
static int
s_slot_to_part (s_slot_t *slot, zmq_msg_t *part)
{
    if (slot->has_part) {
        //  Received or shared bytes: the reference moves (the message is
        //  being consumed); other holders keep theirs.
        zmq_msg_init (part);
        zmq_msg_move (part, &slot->part);
        return ZI_OK;
    }
    zi_tensor_t *t = slot->tensor;
    if (t->nbytes == 0) {
        zmq_msg_init (part);
        return ZI_OK;
    }
    if (t->owns_data) {
        if (zmq_msg_init_data (part, t->data, t->nbytes, s_free_tensor, t)) {
            return ZI_ERR_NOMEM;
        }
        slot->tensor = NULL;
        return ZI_OK;
    }
    //  A view of someone else's memory: libzmq may read it after we return,
    //  when that memory may be gone, so it travels as a copy.
    if (zmq_msg_init_size (part, t->nbytes)) {
        return ZI_ERR_NOMEM;
    }
    memcpy (zmq_msg_data (part), t->data, t->nbytes);
    return ZI_OK;
}

#define S_MAX_PARTS (2 + ZI_MSG_MAX_FRAMES)

//  Headers up to this size are built on the stack and copied into the
//  part (libzmq keeps up to 33 bytes inline; larger ones cost one
//  allocation, instead of the sbuffer's plus libzmq's).
#define S_HEADER_STACK 512

typedef struct {
    char *data;
    size_t size, alloc;
    char stack[S_HEADER_STACK];
} s_hbuf_t;

static int
s_hbuf_write (void *data, const char *buf, size_t len)
{
    s_hbuf_t *h = (s_hbuf_t *) data;
    if (h->size + len > h->alloc) {
        size_t alloc = h->alloc * 2;
        while (alloc < h->size + len) {
            alloc *= 2;
        }
        char *grown = (char *) malloc (alloc);
        if (!grown) {
            return -1;
        }
        memcpy (grown, h->data, h->size);
        if (h->data != h->stack) {
            free (h->data);
        }
        h->data = grown;
        h->alloc = alloc;
    }
    memcpy (h->data + h->size, buf, len);
    h->size += len;
    return 0;
}

//  Encode and send; header/hsize, when not NULL, are header bytes the
//  caller vouches for, sent instead of encoding the fields.
static int
s_send (zi_msg_t **self_p, zsock_t *sock, zmsg_t *envelope,
        const void *header, size_t hsize)
{
    assert (self_p);
    assert (sock);
    zi_msg_t *self = *self_p;
    if (!self) {
        return ZI_ERR_INVALID;
    }
    if (envelope && zmsg_size (envelope) > 2) {
        zi_msg_destroy (self_p);
        return ZI_ERR_INVALID;
    }
    //  Build every part before sending any, so that running out of memory
    //  can never leave half a message queued in the socket.
    zmq_msg_t parts[S_MAX_PARTS];
    size_t nparts = 0;
    s_hbuf_t hbuf;
    hbuf.data = hbuf.stack;
    hbuf.size = 0;
    hbuf.alloc = sizeof hbuf.stack;
    int rc = ZI_OK;
    if (!header) {
        //  msgpack's sbuffer would start at 8 KiB: a malloc outside the
        //  allocator's small-size caches for every message; headers are
        //  60-200 bytes (the buffer grows when one is longer).
        msgpack_sbuffer sbuf = {0, (char *) malloc (S_HEADER_STACK),
                                S_HEADER_STACK};
        if (!sbuf.data) {
            sbuf.alloc = 0;
        }
        rc = s_encode_header (self, &sbuf);
        if (!rc && s_hbuf_write (&hbuf, sbuf.data, sbuf.size)) {
            rc = ZI_ERR_NOMEM;
        }
        msgpack_sbuffer_destroy (&sbuf);
        header = hbuf.data;
        hsize = hbuf.size;
    }
    else if (hsize == 0 || hsize > ZI_MSG_MAX_HEADER) {
        rc = ZI_ERR_INVALID;
    }
    for (zframe_t *f = envelope ? zmsg_first (envelope) : NULL; f && !rc;
         f = zmsg_next (envelope)) {
        if (zmq_msg_init_size (&parts[nparts], zframe_size (f))) {
            rc = ZI_ERR_NOMEM;
            break;
        }
        memcpy (zmq_msg_data (&parts[nparts++]), zframe_data (f),
                zframe_size (f));
    }
    if (!rc) {
        if (zmq_msg_init_size (&parts[nparts], hsize)) {
            rc = ZI_ERR_NOMEM;
        }
        else {
            memcpy (zmq_msg_data (&parts[nparts++]), header, hsize);
        }
    }
    if (hbuf.data != hbuf.stack) {
        free (hbuf.data);
    }
    for (size_t i = 0; !rc && i < self->ntensors; i++) {
        if (self->shm_out && self->slots[i].has_shm) {
            //  The header names the block; this message's hold on the
            //  bytes goes (others, such as the broker's kept task, stay).
            zmq_msg_init (&parts[nparts++]);
            continue;
        }
        rc = s_slot_to_part (&self->slots[i], &parts[nparts]);
        if (!rc) {
            nparts++;
        }
    }
    size_t sent = 0;
    for (; !rc && sent < nparts; sent++) {
        rc = s_send_part (zsock_resolve (sock), &parts[sent],
                          sent + 1 < nparts, sent > 0);
        if (rc) {
            break;      //  parts[sent] was not taken by libzmq: close it below
        }
    }
    //  Parts not sent (after a failure) still hold their buffers.
    for (size_t i = sent; i < nparts; i++) {
        zmq_msg_close (&parts[i]);
    }
    zi_msg_destroy (self_p);
    return rc;
}

int
zi_msg_send (zi_msg_t **self_p, zsock_t *sock)
{
    return s_send (self_p, sock, NULL, NULL, 0);
}

int
zi_msg_send_to (zi_msg_t **self_p, zsock_t *sock, zmsg_t *envelope)
{
    if (!envelope || zmsg_size (envelope) == 0) {
        zi_msg_destroy (self_p);
        return ZI_ERR_INVALID;
    }
    return s_send (self_p, sock, envelope, NULL, 0);
}

int
zi_msg_send_small (zi_msg_t **self_p, zsock_t *sock, zmsg_t *envelope)
{
    if (!self_p || !*self_p || (envelope && zmsg_size (envelope) == 0)) {
        zi_msg_destroy (self_p);
        return ZI_ERR_INVALID;
    }
    //  msgpack's sbuffer starts at 8 KiB: a malloc outside the allocator's
    //  small-size caches (and a consolidation of them) for every message.
    //  Headers of the broker's hot path are 60-200 bytes.
    msgpack_sbuffer sbuf;
    sbuf.size = 0;
    sbuf.alloc = S_HEADER_STACK;
    sbuf.data = (char *) malloc (sbuf.alloc);
    if (!sbuf.data) {
        zi_msg_destroy (self_p);
        return ZI_ERR_NOMEM;
    }
    int rc = s_encode_header (*self_p, &sbuf);
    if (rc) {
        zi_msg_destroy (self_p);
    }
    else {
        rc = s_send (self_p, sock, envelope, sbuf.data, sbuf.size);
    }
    free (sbuf.data);
    return rc;
}

int
zi_msg_send_header (zi_msg_t **self_p, zsock_t *sock, const void *header,
                    size_t size)
{
    if (!header) {
        zi_msg_destroy (self_p);
        return ZI_ERR_INVALID;
    }
    return s_send (self_p, sock, NULL, header, size);
}

//  Receive one part into `part` (initialised here). Inside a message,
//  retry EINTR so we never leave the rest of a message to be read as the
//  next one. 0, or -1 with errno.
static int
s_recv_part (void *handle, zmq_msg_t *part, bool started)
{
    zmq_msg_init (part);
    for (int tries = 0; tries < 100; tries++) {
        if (zmq_msg_recv (part, handle, 0) >= 0) {
            return 0;
        }
        if (!started || errno != EINTR) {
            break;
        }
    }
    zmq_msg_close (part);
    return -1;
}

//  Parts go straight into zmq_msg_t structs on the stack and from there
//  into the message's slots: no CZMQ frame or list per part.
//  With `routed` (a ROUTER's hot loop), the routing id is copied into it
//  instead of into a new CZMQ envelope (four allocations a message).
typedef struct {
    uint8_t *id;
    size_t *id_size;
    bool *delimited;
} s_routed_t;

static int
s_recv (zsock_t *sock, bool router, zmsg_t **envelope_p, s_routed_t *routed,
        zi_msg_t **msg_p, char *err, size_t errlen)
{
    assert (sock);
    assert (msg_p);
    *msg_p = NULL;
    void *handle = zsock_resolve (sock);
    zmq_msg_t parts[ZI_MSG_MAX_FRAMES];
    size_t nkept = 0;
    zmsg_t *envelope = NULL;
    bool have_routing = false;
    size_t nframes = 0;         //  frames after the envelope
    bool delimiter_ok = true;   //  one empty frame may precede the header
    bool more = true;
    bool started = false;
    int rc = ZI_OK;
    while (more) {
        zmq_msg_t part;
        if (s_recv_part (handle, &part, started)) {
            rc = zi_fail (err, errlen, ZI_ERR_IO, "receive failed: %s",
                          zmq_strerror (errno));
            break;
        }
        started = true;
        more = zmq_msg_more (&part);
        if (router && !have_routing) {
            have_routing = true;
            if (routed) {
                size_t n = zmq_msg_size (&part);
                *routed->id_size = n > ZI_MSG_MAX_ROUTING_ID
                                       ? ZI_MSG_MAX_ROUTING_ID
                                       : n;
                memcpy (routed->id, zmq_msg_data (&part), *routed->id_size);
            }
            else if ((envelope = zmsg_new ())) {
                zmsg_addmem (envelope, zmq_msg_data (&part),
                             zmq_msg_size (&part));
            }
            zmq_msg_close (&part);
            continue;
        }
        if (delimiter_ok && zmq_msg_size (&part) == 0 && more) {
            //  The empty delimiter a REQ peer puts before the header. A
            //  header is never empty, so it cannot be mistaken for one.
            delimiter_ok = false;
            if (routed) {
                *routed->delimited = true;
            }
            else if (envelope) {
                zmsg_addmem (envelope, NULL, 0);
            }
            zmq_msg_close (&part);
            continue;
        }
        delimiter_ok = false;
        if (nkept < ZI_MSG_MAX_FRAMES) {
            zmq_msg_init (&parts[nkept]);
            zmq_msg_move (&parts[nkept++], &part);
        }
        else {
            zmq_msg_close (&part);  //  drain the rest, keep nothing
        }
        nframes++;
    }
    if (envelope_p) {
        *envelope_p = envelope;
    }
    else {
        zmsg_destroy (&envelope);
    }
    if (rc == ZI_OK && have_routing && !envelope && !routed) {
        rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    if (rc == ZI_OK && nframes > ZI_MSG_MAX_FRAMES) {
        rc = zi_fail (err, errlen, ZI_ERR_LIMIT,
                      "message has %zu frames, limit %d", nframes,
                      ZI_MSG_MAX_FRAMES);
    }
    if (rc) {
        for (size_t i = 0; i < nkept; i++) {
            zmq_msg_close (&parts[i]);
        }
        return rc;
    }
    return s_decode_parts (parts, nkept, msg_p, err, errlen);
}

int
zi_msg_recv_routed (zsock_t *sock, uint8_t *id, size_t *id_size, bool *delimited,
                    zi_msg_t **msg_p, char *err, size_t errlen)
{
    assert (id && id_size && delimited);
    *id_size = 0;
    *delimited = false;
    s_routed_t routed = {id, id_size, delimited};
    return s_recv (sock, true, NULL, &routed, msg_p, err, errlen);
}

int
zi_msg_recv (zsock_t *sock, zi_msg_t **msg_p, char *err, size_t errlen)
{
    return s_recv (sock, false, NULL, NULL, msg_p, err, errlen);
}

int
zi_msg_recv_from (zsock_t *sock, zmsg_t **envelope_p, zi_msg_t **msg_p,
                  char *err, size_t errlen)
{
    assert (envelope_p);
    *envelope_p = NULL;
    return s_recv (sock, true, envelope_p, NULL, msg_p, err, errlen);
}

//  ---------------------------------------------------------------------
//  Logging

char *
zi_msg_summary (const zi_msg_t *self, char *buf, size_t len)
{
    if (!buf || len == 0) {
        return buf;
    }
    size_t pos = 0;
#define S_ADD(...)                                                       \
    do {                                                                 \
        if (pos < len) {                                                 \
            int n_ = snprintf (buf + pos, len - pos, __VA_ARGS__);       \
            pos += n_ > 0 ? (size_t) n_ : 0;                             \
        }                                                                \
    } while (0)
    S_ADD ("%s", zi_cmd_name (self->cmd));
    if (self->present & BIT (F_ID)) {
        S_ADD (" id=%" PRIu64, self->id);
    }
    if (self->present & BIT (F_NMB)) {
        S_ADD (" mb=%" PRIu32 "/%" PRIu32, self->mb, self->nmb);
    }
    if (self->present & BIT (F_SEG)) {
        S_ADD (" seg=%" PRIu32, self->seg);
    }
    if (self->present & BIT (F_REQS)) {
        S_ADD (" reqs=%zu", self->nreqs);
    }
    if (self->present & BIT (F_CAP)) {
        S_ADD (" cap=%g", self->capacity);
    }
    if (self->present & BIT (F_GRANT)) {
        S_ADD (" grant=%" PRIu64, self->grant);
    }
    if (self->present & BIT (F_CREDIT)) {
        S_ADD (" credit=%" PRIu32, self->credit);
    }
    if (self->present & BIT (F_CODE)) {
        S_ADD (" code=%d(%s)", self->code, zi_code_name (self->code));
    }
    if (self->reason) {
        S_ADD (" reason='%s'", self->reason);
    }
    if (self->name) {
        S_ADD (" name='%s'", self->name);
    }
    if (self->ntensors) {
        S_ADD (" t=[");
        for (size_t i = 0; i < self->ntensors; i++) {
            char shape[160];
            const zi_tensor_t *t = self->slots[i].tensor;
            S_ADD ("%s%s:%s%s", i ? " " : "", self->slots[i].name,
                   zi_dtype_name (t->dtype),
                   zi_tensor_shape_str (t, shape, sizeof shape));
        }
        S_ADD ("]");
    }
#undef S_ADD
    return buf;
}
