/*  zi_broker.c - the broker loop; see zi_broker.h.

    LINKS. The broker binds all eight endpoints of the plan and polls them
    in one loop (zmq_poll, 10 ms timeout, so a signal or a deadline is seen
    within ~10 ms). Every socket reads non-blocking, at most S_BATCH messages
    per turn, so one busy link cannot starve the others.

      front (ROUTER)      REQUEST: validated (has tensors; prio is a class of
                          the plan; tensor names are the preprocess stage's
                          inputs, or the model's when there is no preprocess
                          stage, each present once; one batch dimension;
                          without a preprocess stage also each dtype and
                          every dimension against model.inputs, as
                          preprocess would), then BUSY when
                          queue_limit requests are in flight, UNAVAILABLE
                          while draining, else admitted: rid assigned,
                          deadline = now + (its "deadline" or the plan's
                          default_deadline_ms), its tensors kept for
                          re-injection, TASK {reqs:[[rid,0,rows]], seg:0,
                          prio, deadline, attempt, t} sent to to_preprocess
                          (or to_partition without a preprocess stage, or
                          queued straight for segment 0 without either). A
                          REQUEST repeating (client routing id, id) of one in
                          flight is ignored: the one answer will come. One
                          repeating a request answered in the last
                          S_ANSWER_TTL_MS gets the kept answer again and is
                          not run again (ANSWERS below).
                          STATS -> STATS_REPLY, HEALTH -> HEALTH_REPLY.
                          Undecodable -> ERROR BAD_REQUEST / TOO_LARGE /
                          VERSION with the decoder's reason (no id).
      preprocessed (PULL) relayed to to_partition: decoded first (tensors
                          stay views into their frames), so partition only
                          gets well-formed messages; the original header
                          bytes, plus "credit" = segment 0's free credit and
                          "grant" = TASKs received on intake + that credit
                          (partition's batching hint, zi_batcher.h), and the
                          same frames go on. When segment 0 gets room after
                          having none, HEARTBEAT {credit, grant} to
                          partition, so a batch it holds leaves now. HEARTBEAT /
                          DISCONNECT {name} of a preprocess replica stop
                          here (its liveness). (Decoded as intake when the
                          plan has no partition stage.)
      intake (PULL)       TASK: becomes a broker task (task id, reqs, mb, nmb,
                          prio = the most favoured class of its requests)
                          queued for segment 0. Rows already received for a
                          request (a re-injected duplicate) are not queued
                          twice. ERROR {id: rid}: the client gets the ERROR,
                          code and reason kept, with its own id. HEARTBEAT /
                          DISCONNECT {name}: a partition replica is live /
                          leaving (names not in the plan are dropped).
      work (ROUTER)       READY registers or updates a worker (segment,
                          capacity, credit, name; routing id = its identity).
                          RESULT of an outstanding task: the credit returns,
                          the latency is recorded; every tensor of it that a
                          later segment or the client reads must hold the
                          task's rows along dimension 0, else the task's
                          requests fail INTERNAL naming the tensor and its
                          shape (BROKER-RESULT-BAD: a worker bug, or a plan
                          that cut a weight into a segment input); its
                          tensors join the task's bag, and the task is
                          queued for the next
                          segment, whose TASK carries exactly the tensors
                          plan->segments[s].inputs names; after the last
                          segment it goes to an aggregator. A RESULT for a
                          task not outstanding at that worker is dropped and
                          counted (work at-least-once, results exactly-once).
                          ERROR {id: task}: the task's requests fail with its
                          code and reason. DISCONNECT: the worker is removed
                          and its tasks re-queued. Anything but READY from an
                          unknown routing id gets DISCONNECT.
      to_aggregate        (ROUTER) READY or HEARTBEAT registers an aggregator
                          (name = "name" or its routing id; capacity = "cap",
                          else the plan's replica capacity, else 1). A task
                          past the last segment goes as TASK {id: task, reqs,
                          mb, nmb, seg: n_segments, t: the model outputs} to
                          the aggregator chosen by weighted rendezvous
                          hashing of its first rid (and then every task of
                          that request to the same one while it lives). With
                          no live aggregator tasks wait.
      results (PULL)      REPLY {id: rid} -> REPLY {id: client id, t} to the
                          client; ERROR {id: rid} -> ERROR to the client;
                          late or duplicate answers are dropped and counted.
                          HEARTBEAT {name} keeps that aggregator alive.

    TIMERS (every S_TICK_MS, over what is due only: requests wait in a
    min-heap on their next deadline or stage timeout). A request past its
    deadline gets ERROR TIMEOUT
    and is forgotten, or UNAVAILABLE when what it waited for was never there
    since it was admitted (no live replica of its segment, no aggregator,
    no first stage that took it); a task is dropped when none of its
    requests is left.
    A worker or aggregator silent for liveness x interval is dead
    (BROKER-WORKER-EXPIRED / BROKER-AGG-EXPIRED): a worker's outstanding
    tasks go back to the front of their segment queue with attempt + 1 (a
    task dispatched max_attempts times fails its requests with INTERNAL);
    an aggregator's tasks go to another aggregator. Peers the broker sent
    nothing to for one interval get HEARTBEAT. A request whose rows have not
    all come back on intake stage_timeout_ms after it was sent to the stages
    is sent again (attempt + 1, up to max_attempts, then INTERNAL).

    ANSWERS (exactly-once delivery). A REPLY, and an ERROR a client must not
    retry, are kept as the frames that went out, keyed like requests by
    (client routing id, client id): at most S_ANSWER_MAX, S_ANSWER_TTL_MS,
    S_ANSWER_MAX_BYTES of tensors, answers over S_ANSWER_KEEP_BYTES not at
    all (a retry of those runs again). BUSY, TIMEOUT and UNAVAILABLE are not
    kept: a retry is a new attempt. Request and task ids start at the wall
    clock (s_id_base), so what a restarted broker's peers still hold of the
    previous life (late RESULTs, partial requests) never matches a new id.

    HOSTILE INPUT. Every message that is not decodable, or not expected on
    its link, is dropped and counted (STATS "dropped"); on a ROUTER link the
    sender also gets ERROR. Log lines about drops are limited to
    S_DROP_LOGS_PER_S per socket and second. The security of the sockets
    (CURVE, the allow-list, MAXMSGSIZE, ZMTP heartbeats) is zi_security.h.

    SCHEDULING (zi_sched.h). Per segment: the replica selector names the
    worker that must get the next task (strict shares: when it has no credit
    left the segment waits); only then the priority picker names the class
    whose oldest task goes.

    STATS_REPLY "stats" (every count since the broker started):
      uptime_ms, draining (bool)
      requests: {admitted, completed, failed, inflight, busy, timeout,
                 duplicates (repeated REQUESTs ignored), reinjected,
                 replayed (kept answers sent again), answers_kept,
                 answers_bytes, errors: {<code name>: count of ERRORs sent
                 to clients}}
      tasks:    {created, queued, inflight, waiting_aggregator,
                 at_aggregator, redispatched, results_dropped,
                 replies_dropped, stale (stage TASKs holding nothing new),
                 skipped_partition, skipped_aggregate (tasks that went
                 past a stage with nothing to do for them)}
      segments: [{index, queued: [per class], inflight, tasks (done),
                  replicas: [{name, capacity, credit, inflight, tasks
                  (results accepted), assigned (dispatches), errors,
                  busy_ms (sum of task round trips), p50_us, p99_us (over
                  the last S_LAT_N round trips), live}]}]
                 (plan replicas never seen appear with live false)
      stages:   {preprocess: {sent, received, inflight, live, replicas},
                 partition: {sent, received, inflight (requests whose rows
                 are not all back), live, replicas}, aggregate: {sent,
                 received, inflight, live, replicas}}; replicas: [{name,
                 live, beats (HEARTBEATs), last_ms (since last heard, -1 =
                 never)}], the plan's preprocess / partition replicas and
                 the aggregators heard from
      aggregators: [{name, capacity, tasks (sent), inflight, live}]
      dropped:  {front, preprocessed, intake, work, to_aggregate, results}
                (messages that could not be decoded or were not expected)
      copied_bytes: tensor bytes copied (COPIES below)
      memory:   {rss_kb, heap_bytes (handed out by malloc, not returned)}

    COPIES. None on the way through. Received tensors stay views into
    their ZeroMQ messages, whose content libzmq reference-counts. What the
    broker may have to send again (a request's inputs, kept for
    re-injection; a task's bag, kept for re-dispatch after a worker dies;
    a kept answer, for a client's retry) is sent as another reference to
    the same bytes (zi_msg_add_tensor_ref), so sending never frees or
    copies what is kept, and what is kept lives until its last holder
    (the broker or libzmq's send queue) lets go. The preprocessed ->
    to_partition relay and REPLYs to clients move the received messages.
    copied_bytes in STATS counts the one copy left: the rows of a
    coalesced task that the broker answers itself (no aggregate stage);
    a task of one request is answered with its own bytes.
*/
#include "zi_broker.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <msgpack.h>

#include "zi_log.h"
#include "zi_msg.h"
#include "zi_sched.h"
#include "zi_security.h"
#include "zi_shm.h"

#define S_BATCH 256        //  messages read per socket per loop turn
#define S_POLL_MS 10       //  longest wait in zmq_poll
#define S_TICK_MS 5        //  timers run at most this often
#define S_HWM 10000        //  bounded queues on every socket
#define S_FRONT_HWM 1000   //  ... per client connection on front
#define S_LINGER_MS 200    //  best effort for the last DISCONNECTs
#define S_LAT_N 1024       //  round trips kept per replica
#define S_MAX_WORKERS 4096 //  peers an attacker could otherwise grow
#define S_MAX_AGGS 256
#define S_MAX_RSTATS 4096
#define S_MAX_RANGES 4096     //  row ranges tracked per request
#define S_MAX_STAGE_PEERS 512 //  stage replicas tracked by name

//  Answers kept for clients that retry with the same id (exactly-once
//  delivery): at most this many, this long, this many tensor bytes in
//  all, and only answers of at most S_ANSWER_KEEP_BYTES each.
#define S_ANSWER_MAX 10000
#define S_ANSWER_TTL_MS 60000
#define S_ANSWER_MAX_BYTES (64u << 20)
#define S_ANSWER_KEEP_BYTES (64u << 10)

//  Log lines about dropped messages, per socket and second, before they
//  are only counted (an attacker must not fill the disk with our logs).
#define S_DROP_LOGS_PER_S 20

typedef struct s_worker s_worker_t;
typedef struct s_agg s_agg_t;
typedef struct s_task s_task_t;

//  A list of tasks linked through the tasks themselves: a task is in at
//  most one list at a time (a segment queue, a worker's outstanding tasks,
//  agg_wait, an aggregator's), so queueing and dispatching a task
//  allocate nothing (a zlistx node each cost a malloc and a free).
typedef struct {
    s_task_t *head, *tail;
    size_t size;
} s_tlist_t;

//  Requests by rid, tasks by tid, requests and kept answers by the hash of
//  their client key: open addressing with linear probing over (key, item)
//  pairs, items NULL in free slots. Inserting allocates nothing until the
//  table doubles (a zhashx item cost a malloc, a free, and hashing a
//  string through indirect calls on every lookup).
typedef struct {
    uint64_t key;
    void *item;
} s_slot64_t;

typedef struct {
    s_slot64_t *slots;
    size_t cap, size; //  cap a power of two, size <= cap / 2
} s_map64_t;

//  Statistics of one replica, by name: they outlive reconnections.
typedef struct {
    char *name;
    int64_t seg;           //  segment it served last, -1 = none yet
    double capacity;       //  last announced (or the plan's)
    uint64_t assigned;     //  dispatches
    uint64_t tasks;        //  RESULTs accepted
    uint64_t errors;       //  ERRORs for its tasks
    uint64_t busy_us;      //  sum of task round trips
    uint32_t lat[S_LAT_N]; //  ring of the last round trips, us
    size_t nlat, lat_next;
} s_rstats_t;

struct s_worker {
    char *key;        //  routing id in hex: key in workers
    zmsg_t *envelope; //  [routing id]
    char *name;
    uint32_t seg;
    double capacity;
    uint32_t credit;
    uint32_t inflight;
    int slot;        //  in its segment's selector
    s_tlist_t tasks; //  outstanding, oldest first
    int64_t last_recv, last_send;
    s_rstats_t *stats; //  NULL when the table is full
};

struct s_agg {
    uint64_t serial; //  requests remember their aggregator by it
    char *key;
    zmsg_t *envelope;
    char *name;
    double capacity;
    int64_t last_recv, last_send;
    s_tlist_t tasks; //  sent, kept until their requests finish
    uint64_t sent;
    uint64_t beats; //  HEARTBEATs received
};

typedef enum {
    S_HELD = 0, //  in the caller's hands
    S_QUEUED,   //  in a segment queue
    S_INFLIGHT, //  at a worker
    S_AGG_WAIT, //  past the last segment, no aggregator yet
    S_AGG_SENT, //  at an aggregator
} s_state_t;

//  Inline room in a task: most tasks carry one request (or a few) and
//  a bag of one or two messages.
#define S_TASK_REQS 4
#define S_TASK_BAG 4

struct s_task {
    uint64_t tid;
    zi_msg_req_t *reqs; //  reqs_inline, or heap when more
    size_t nreqs;
    uint32_t mb, nmb;
    int prio;
    uint32_t seg; //  next segment to run; nsegs = done
    uint32_t attempt;
    size_t live;    //  entries whose request is still pending
    zi_msg_t **bag; //  received messages holding its tensors (bag_inline,
                    //  or heap when more)
    size_t nbag, capbag;
    s_state_t state;
    s_task_t *prev, *next; //  in its list (state QUEUED, INFLIGHT, AGG_*)
    s_worker_t *worker;
    s_agg_t *agg;
    int64_t sent_us;
    zi_msg_req_t reqs_inline[S_TASK_REQS];
    zi_msg_t *bag_inline[S_TASK_BAG];
};

typedef struct {
    uint32_t first, end;
} s_range_t;

typedef struct {
    uint64_t rid;
    uint64_t client_id;
    zmsg_t *envelope; //  the client's
    char *key;        //  "<routing id hex>/<client id>"
    int prio;
    int64_t admitted;    //  ms
    int64_t deadline_at; //  ms, 0 = none
    uint32_t budget_ms;
    uint32_t rows;
    zi_msg_t *inputs; //  the REQUEST, until all rows are back
    uint32_t entry_attempt;
    int64_t entry_sent; //  ms; 0 = waiting in the inject list
    bool entry_done;    //  every row came back from the stages
    bool at_part;       //  sent (or queued) to partition, rows not all back
    void *inject_handle;
    s_range_t *ranges; //  rows received on intake
    size_t nranges;
    uint64_t rows_in;
    uint64_t *tids; //  tasks holding its rows: tids_inline, or heap when more
    size_t ntids, captids;
    uint64_t tids_inline[2];
    uint64_t agg_serial; //  its aggregator, 0 = not chosen yet
    int64_t due;         //  ms when the timers must look at it (s_timer_set)
    size_t heap_pos;     //  in the timer heap + 1; 0 = not in it
} s_request_t;

//  A stage replica that speaks on a PUSH link (preprocess on
//  preprocessed, partition on intake): known by the "name" of its
//  HEARTBEATs. The plan's replicas are listed from the start.
typedef struct {
    char *name;
    int role;          //  S_STAGE_PRE or S_STAGE_PART
    int64_t last_recv; //  ms; 0 = never heard
    uint64_t beats;
    bool gone; //  said DISCONNECT since it was last heard
} s_stage_peer_t;

//  A client's answer, kept so a retry with the same id gets it again: a
//  REPLY whose tensors share their bytes with the one that went out (no
//  copy), or a final ERROR (a few hundred bytes of bookkeeping each).
typedef struct s_answer s_answer_t;
struct s_answer {
    int64_t at;        //  ms
    zi_msg_t *answer;  //  REPLY or a final ERROR, id = the client's
    size_t bytes;
    s_answer_t *prev, *next; //  in answer_order
    char key[];        //  "<routing id hex>/<client id>", as s_request_t's
};

typedef struct {
    zi_sched_sel_t *sel;
    zi_sched_prio_t *prio;
    s_tlist_t queue[ZI_SCHED_MAX_CLASSES];
    size_t queued;
    s_worker_t **slots; //  selector slot -> worker
    size_t nslots;
    uint64_t inflight, done;
    int64_t empty_since; //  ms since no replica is live; 0 = one is
} s_segment_t;

enum { S_STAGE_PRE, S_STAGE_PART, S_STAGE_AGG, S_STAGES };

struct zi_broker {
    const zi_plan_t *plan;
    zsock_t *sock[ZI_PLAN_EP_COUNT];
    zsock_t *pipe;
    zi_security_server_t *security; //  CURVE + the allow-list, or NULL
    bool has_pre, has_part, has_agg;
    //  Stages with nothing to do for a request are skipped: a request of
    //  skip_part_min..skip_part_max rows goes straight to segment 0 (0: never),
    //  a task of one micro-batch straight to its client when skip_agg.
    int64_t skip_part_min, skip_part_max;
    bool skip_agg;
    //  Cut tensors travel as shared-memory references on `work` (zi_shm.h);
    //  the broker's own arena holds requests' inputs for segment 0.
    bool shm;
    bool client_shm;    //  a client's REQUEST may name blocks of its arena (read-only)
    int64_t shm_swept;
    zi_shm_arena_t *arena;
    const zi_plan_tensor_t **expect; //  REQUEST tensors, NULL = any
    size_t nexpect;
    bool check_shapes;      //  nobody else will check them
    const char **out_names; //  the model outputs
    size_t nout;
    size_t nclasses;
    int default_prio;
    zi_sched_prio_t *favour;
    s_segment_t *segs;
    size_t nsegs;
    int64_t interval, liveness, queue_limit, default_deadline;
    int64_t stage_timeout, max_attempts;

    s_map64_t requests;       //  rid -> s_request_t
    struct {
        s_request_t **items;  //  min-heap on due: the next to look at first
        size_t size, cap;
    } timers;
    s_map64_t clients;        //  hash of key -> s_request_t (s_client_*)
    s_map64_t tasks;          //  tid -> s_task_t
    zhashx_t *workers;        //  routing hex -> s_worker_t
    zhashx_t *rstats;         //  name -> s_rstats_t (owned)
    zlistx_t *aggs;           //  s_agg_t
    zlistx_t *inject;         //  s_request_t waiting for the stages
    s_tlist_t agg_wait;       //  tasks waiting for an aggregator
    s_task_t *task_pool;      //  freed tasks for reuse, through next
    size_t task_pooled;
    int64_t aggs_empty_since; //  ms since no aggregator is live; 0 = one is
    s_stage_peer_t *speers;   //  stage replicas heard on PUSH links
    size_t nspeers;
    s_map64_t answers;      //  hash of key -> s_answer_t (s_kept_*)
    struct {
        s_answer_t *head, *tail; //  oldest first
        size_t size;
    } answer_order;
    size_t answer_bytes;
    uint64_t next_rid, next_tid, next_agg;
    int64_t started, last_tick;
    bool draining, stop, terminated;
    int64_t drain_until;

    struct {
        uint64_t admitted, completed, failed, busy, timeout, duplicates, reinjected,
            replayed;
    } req;
    struct {
        uint64_t created, redispatched, results_dropped, replies_dropped, stale;
        uint64_t skipped_partition, skipped_aggregate;      //  see s_skips_partition
    } task;
    struct {
        uint64_t sent, received;
    } stage[S_STAGES];
    uint64_t dropped[ZI_PLAN_EP_COUNT];
    struct {
        int64_t second;      //  the second being counted
        uint64_t logged;     //  lines logged in it
        uint64_t suppressed; //  drops not logged in it
    } droplog[ZI_PLAN_EP_COUNT];
    uint64_t errors[1000]; //  ERRORs sent to clients, by code
    uint64_t copied_bytes;
    bool seg0_full;        //  segment 0 had no free credit at the last look
    uint64_t part_tasks;   //  TASKs received on intake, from s_id_base ()
    uint64_t at_part;      //  requests with at_part set
};

//  ---------------------------------------------------------------------
//  Small helpers

static int64_t
s_now_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t
s_now_ms (void)
{
    return s_now_us () / 1000;
}

static size_t
s_u64_hash (const void *key)
{
    uint64_t x = *(const uint64_t *)key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x;
}


static int
s_map64_init (s_map64_t *map, size_t cap)
{
    map->slots = (s_slot64_t *)calloc (cap, sizeof *map->slots);
    map->cap = map->slots ? cap : 0;
    map->size = 0;
    return map->slots ? 0 : ZI_ERR_NOMEM;
}

static void
s_map64_free (s_map64_t *map)
{
    free (map->slots);
    map->slots = NULL;
    map->cap = map->size = 0;
}

static void *
s_map64_get (const s_map64_t *map, uint64_t key)
{
    size_t mask = map->cap - 1;
    for (size_t i = s_u64_hash (&key) & mask; map->slots[i].item; i = (i + 1) & mask) {
        if (map->slots[i].key == key) {
            return map->slots[i].item;
        }
    }
    return NULL;
}

//  Add an item under a key not in the map. 0 or ZI_ERR_NOMEM.
static int
s_map64_put (s_map64_t *map, uint64_t key, void *item)
{
    if ((map->size + 1) * 2 > map->cap) {
        s_map64_t grown;
        if (s_map64_init (&grown, map->cap * 2)) {
            return ZI_ERR_NOMEM;
        }
        for (size_t i = 0; i < map->cap; i++) {
            if (map->slots[i].item) {
                s_map64_put (&grown, map->slots[i].key, map->slots[i].item);
            }
        }
        free (map->slots);
        *map = grown;
    }
    size_t mask = map->cap - 1;
    size_t i = s_u64_hash (&key) & mask;
    while (map->slots[i].item) {
        i = (i + 1) & mask;
    }
    map->slots[i].key = key;
    map->slots[i].item = item;
    map->size++;
    return 0;
}

//  Remove a key (no-op when absent), shifting the entries after it back
//  so that probing never needs tombstones.
static void
s_map64_delete (s_map64_t *map, uint64_t key)
{
    size_t mask = map->cap - 1;
    size_t i = s_u64_hash (&key) & mask;
    while (map->slots[i].item && map->slots[i].key != key) {
        i = (i + 1) & mask;
    }
    if (!map->slots[i].item) {
        return;
    }
    for (size_t j = (i + 1) & mask; map->slots[j].item; j = (j + 1) & mask) {
        size_t home = s_u64_hash (&map->slots[j].key) & mask;
        //  The entry at j may move to the hole at i unless its home lies
        //  cyclically in (i, j].
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            map->slots[i] = map->slots[j];
            i = j;
        }
    }
    map->slots[i].item = NULL;
    map->size--;
}

//  Requests and kept answers by their key "<routing id hex>/<client id>":
//  a map64 under the key's 64-bit hash, the string compared on a hit. Two
//  keys of one hash (odds ~2^-64 per pair) cannot both be indexed: the
//  second request then has no duplicate detection and its answer is not
//  kept (a retry runs again): degraded, never wrong.
static uint64_t
s_key_hash (const char *key)
{
    uint64_t h = 0xcbf29ce484222325ull; //  FNV-1a
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h = (h ^ *p) * 0x100000001b3ull;
    }
    return h;
}

static char *
s_routing_hex (zmsg_t *envelope)
{
    zframe_t *id = envelope ? zmsg_first (envelope) : NULL;
    return id ? zframe_strhex (id) : strdup ("");
}

//  Room for a routing id in hex (ZeroMQ routing ids are 1..255 bytes), a
//  '/', a 64-bit id and the NUL.
#define S_KEY_MAX (2 * 255 + 1 + 20 + 1)

//  The routing id of envelope in upper-case hex, as zframe_strhex spells
//  it, into buf (S_KEY_MAX bytes): the hot paths look peers up without an
//  allocation. Returns the length written.
static size_t
s_hex_into (const uint8_t *data, size_t size, char *buf)
{
    static const char digits[] = "0123456789ABCDEF";
    size = size > 255 ? 255 : size;
    for (size_t i = 0; i < size; i++) {
        buf[2 * i] = digits[data[i] >> 4];
        buf[2 * i + 1] = digits[data[i] & 15];
    }
    buf[2 * size] = 0;
    return 2 * size;
}

static size_t
s_routing_hex_into (zmsg_t *envelope, char *buf)
{
    zframe_t *id = envelope ? zmsg_first (envelope) : NULL;
    return s_hex_into (id ? zframe_data (id) : NULL, id ? zframe_size (id) : 0, buf);
}

//  An envelope (routing id, and the delimiter a REQ peer sent) to answer
//  or keep, made only when needed: the work link's hot path (RESULT,
//  HEARTBEAT of a known worker) looks its worker up by the bytes alone.
static zmsg_t *
s_envelope_new (const uint8_t *id, size_t size, bool delimited)
{
    zmsg_t *envelope = zmsg_new ();
    if (envelope && (zmsg_addmem (envelope, id, size)
                     || (delimited && zmsg_addmem (envelope, NULL, 0)))) {
        zmsg_destroy (&envelope);
    }
    return envelope;
}

//  "/<id>" in decimal after a routing id in hex (at most 22 bytes with the
//  NUL): a request's key, spelled as "%s/%" PRIu64 would, without printf.
static void
s_key_append_id (char *buf, uint64_t id)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + id % 10);
        id /= 10;
    } while (id);
    *buf++ = '/';
    while (n) {
        *buf++ = digits[--n];
    }
    *buf = 0;
}

//  True when a message can go out now: a PUSH with no peer, or whose
//  queue is full, is not. Checked before building a message, so the
//  broker neither copies tensors for nothing nor relies on a failed send.
static bool
s_writable (zsock_t *sock)
{
    return (zsock_events (sock) & ZMQ_POLLOUT) != 0;
}

//  zi_msg_send_to for the broker's loop (zi_msg_send_small: no 8 KiB
//  encoder buffer per message). The envelope is borrowed; consumes *msg_p.
static int
s_send_to (zi_msg_t **msg_p, zsock_t *sock, zmsg_t *envelope)
{
    if (!envelope || zmsg_size (envelope) == 0) {
        zi_msg_destroy (msg_p);
        return ZI_ERR_INVALID;
    }
    return zi_msg_send_small (msg_p, sock, envelope);
}

static const char *
s_ep_name (zi_plan_ep_t ep)
{
    return zi_plan_endpoint_name (ep);
}

static void
s_send_command (zi_broker_t *self, zi_plan_ep_t ep, zmsg_t *envelope, zi_cmd_t cmd,
                const char *reason)
{
    zi_msg_t *msg = zi_msg_new (cmd);
    if (!msg) {
        return;
    }
    if (reason) {
        zi_msg_set_reason (msg, reason);
    }
    s_send_to (&msg, self->sock[ep], envelope);
}

//  An ERROR to a peer on a ROUTER link (front or work).
static void s_send_error (zi_broker_t *self, zi_plan_ep_t ep, zmsg_t *envelope,
                          bool has_id, uint64_t id, int code, const char *fmt, ...)
    __attribute__ ((format (printf, 7, 8)));

static void
s_send_error (zi_broker_t *self, zi_plan_ep_t ep, zmsg_t *envelope, bool has_id,
              uint64_t id, int code, const char *fmt, ...)
{
    char reason[ZI_MSG_MAX_REASON + 1];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (reason, sizeof reason, fmt, ap);
    va_end (ap);
    if (code < 100 || code > 999) {
        code = ZI_CODE_INTERNAL;
    }
    zi_msg_t *msg = zi_msg_new_error ((zi_code_t)code, reason);
    if (!msg) {
        return;
    }
    if (has_id) {
        zi_msg_set_id (msg, id);
    }
    if (ep == ZI_PLAN_EP_FRONT) {
        self->errors[code]++;
    }
    s_send_to (&msg, self->sock[ep], envelope);
}

//  Count a message dropped on a socket and log why, at most
//  S_DROP_LOGS_PER_S lines per socket and second: hostile input is
//  counted (STATS "dropped"), but cannot fill the disk with log lines.
static void s_drop (zi_broker_t *self, zi_plan_ep_t ep, const char *msgid,
                    const char *fmt, ...) __attribute__ ((format (printf, 4, 5)));

static void
s_drop (zi_broker_t *self, zi_plan_ep_t ep, const char *msgid, const char *fmt, ...)
{
    self->dropped[ep]++;
    int64_t second = s_now_ms () / 1000;
    if (self->droplog[ep].second != second) {
        if (self->droplog[ep].suppressed) {
            zi_log_warn ("BROKER-DROPS-SUPPRESSED",
                         "%s: %" PRIu64 " more dropped messages were not logged",
                         s_ep_name (ep), self->droplog[ep].suppressed);
        }
        self->droplog[ep].second = second;
        self->droplog[ep].logged = 0;
        self->droplog[ep].suppressed = 0;
    }
    if (self->droplog[ep].logged >= S_DROP_LOGS_PER_S) {
        self->droplog[ep].suppressed++;
        return;
    }
    self->droplog[ep].logged++;
    char text[ZI_MSG_MAX_REASON + 64];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (text, sizeof text, fmt, ap);
    va_end (ap);
    zi_log_warn (msgid, "%s: %s", s_ep_name (ep), text);
}

//  Where a broker's request and task ids start: the wall clock in ms
//  times 2^20, so the ids of a restarted broker never meet those of its
//  previous life (which stages, workers and aggregators may still hold:
//  a late RESULT for an old task id must not be taken for a new task).
//  One life would need a million ids per ms of its run to catch up.
static uint64_t
s_id_base (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    return ms << 20;
}

//  ---------------------------------------------------------------------
//  Replica statistics

static void
s_rstats_destroy (void **item)
{
    s_rstats_t *rs = (s_rstats_t *)*item;
    if (rs) {
        free (rs->name);
        free (rs);
        *item = NULL;
    }
}

static s_rstats_t *
s_rstats_get (zi_broker_t *self, const char *name)
{
    s_rstats_t *rs = (s_rstats_t *)zhashx_lookup (self->rstats, name);
    if (rs || zhashx_size (self->rstats) >= S_MAX_RSTATS) {
        return rs;
    }
    rs = (s_rstats_t *)calloc (1, sizeof *rs);
    if (!rs || !(rs->name = strdup (name))) {
        free (rs);
        return NULL;
    }
    rs->seg = -1;
    zhashx_insert (self->rstats, name, rs);
    return rs;
}

static void
s_rstats_latency (s_rstats_t *rs, int64_t us)
{
    if (!rs) {
        return;
    }
    us = us < 0 ? 0 : us;
    rs->tasks++;
    rs->busy_us += (uint64_t)us;
    rs->lat[rs->lat_next] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    rs->lat_next = (rs->lat_next + 1) % S_LAT_N;
    if (rs->nlat < S_LAT_N) {
        rs->nlat++;
    }
}

static int
s_u32_cmp (const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

//  Percentiles q1, q2 (0..1) of the kept round trips, nearest rank.
static void
s_rstats_percentiles (const s_rstats_t *rs, double q1, double q2, uint32_t *p1,
                      uint32_t *p2)
{
    *p1 = *p2 = 0;
    if (!rs || rs->nlat == 0) {
        return;
    }
    uint32_t sorted[S_LAT_N];
    memcpy (sorted, rs->lat, rs->nlat * sizeof *sorted);
    qsort (sorted, rs->nlat, sizeof *sorted, s_u32_cmp);
    size_t i1 = (size_t)ceil (q1 * (double)rs->nlat);
    size_t i2 = (size_t)ceil (q2 * (double)rs->nlat);
    *p1 = sorted[i1 ? i1 - 1 : 0];
    *p2 = sorted[i2 ? i2 - 1 : 0];
}

//  ---------------------------------------------------------------------
//  Tasks

static s_request_t *
s_request_find (zi_broker_t *self, uint64_t rid)
{
    return (s_request_t *)s_map64_get (&self->requests, rid);
}

//  The request in flight under a client key, or NULL.
static s_request_t *
s_client_find (zi_broker_t *self, const char *key)
{
    s_request_t *req = (s_request_t *)s_map64_get (&self->clients, s_key_hash (key));
    return req && strcmp (req->key, key) == 0 ? req : NULL;
}

//  Tasks kept for reuse at most (a few hundred KiB): one is made and freed
//  per task the broker forwards, its struct reused instead.
#define S_TASK_POOL 4096

static void s_task_clear (s_task_t *task);

static s_task_t *
s_task_new (zi_broker_t *self, const zi_msg_req_t *reqs, size_t nreqs, uint32_t mb,
            uint32_t nmb)
{
    s_task_t *task = self->task_pool;
    if (task) {
        self->task_pool = task->next;
        self->task_pooled--;
        memset (task, 0, sizeof *task);
    }
    else if (!(task = (s_task_t *)calloc (1, sizeof *task))) {
        return NULL;
    }
    task->reqs = task->reqs_inline;
    if (nreqs > S_TASK_REQS
        && !(task->reqs = (zi_msg_req_t *)malloc (nreqs * sizeof *reqs))) {
        free (task);
        return NULL;
    }
    memcpy (task->reqs, reqs, nreqs * sizeof *reqs);
    task->bag = task->bag_inline;
    task->capbag = S_TASK_BAG;
    task->nreqs = nreqs;
    task->mb = mb;
    task->nmb = nmb;
    task->tid = ++self->next_tid;
    task->prio = -1;
    if (s_map64_put (&self->tasks, task->tid, task)) {
        s_task_clear (task);
        free (task);
        return NULL;
    }
    self->task.created++;
    return task;
}

//  Free what a task holds, not the task itself.
static void
s_task_clear (s_task_t *task)
{
    for (size_t i = 0; i < task->nbag; i++) {
        zi_msg_destroy (&task->bag[i]);
    }
    if (task->bag != task->bag_inline) {
        free (task->bag);
    }
    if (task->reqs != task->reqs_inline) {
        free (task->reqs);
    }
}

static void
s_task_destroy (zi_broker_t *self, s_task_t **task_p)
{
    s_task_t *task = *task_p;
    if (!task) {
        return;
    }
    s_map64_delete (&self->tasks, task->tid);
    s_task_clear (task);
    if (self->task_pooled < S_TASK_POOL) {
        task->next = self->task_pool;
        self->task_pool = task;
        self->task_pooled++;
    }
    else {
        free (task);
    }
    *task_p = NULL;
}

static void
s_tlist_push (s_tlist_t *list, s_task_t *task, bool front)
{
    task->prev = front ? NULL : list->tail;
    task->next = front ? list->head : NULL;
    if (front) {
        if (list->head) {
            list->head->prev = task;
        }
        else {
            list->tail = task;
        }
        list->head = task;
    }
    else {
        if (list->tail) {
            list->tail->next = task;
        }
        else {
            list->head = task;
        }
        list->tail = task;
    }
    list->size++;
}

//  Unlink a task from the list it is in (the caller knows which).
static void
s_tlist_remove (s_tlist_t *list, s_task_t *task)
{
    if (task->prev) {
        task->prev->next = task->next;
    }
    else {
        list->head = task->next;
    }
    if (task->next) {
        task->next->prev = task->prev;
    }
    else {
        list->tail = task->prev;
    }
    task->prev = task->next = NULL;
    list->size--;
}

//  Add a received message to the task's bag; takes it on success only.
static int
s_task_bag_add (s_task_t *task, zi_msg_t **msg_p)
{
    if (task->nbag == task->capbag) {
        size_t cap = task->capbag * 2;
        zi_msg_t **bag = (zi_msg_t **)malloc (cap * sizeof *bag);
        if (!bag) {
            return ZI_ERR_NOMEM;
        }
        memcpy (bag, task->bag, task->nbag * sizeof *bag);
        if (task->bag != task->bag_inline) {
            free (task->bag);
        }
        task->bag = bag;
        task->capbag = cap;
    }
    task->bag[task->nbag++] = *msg_p;
    *msg_p = NULL;
    return ZI_OK;
}

//  The newest tensor of that name in the task's bag, or NULL; *msg_p and
//  *index_p (if not NULL) say where it is.
static const zi_tensor_t *
s_task_tensor_at (const s_task_t *task, const char *name, zi_msg_t **msg_p,
                  size_t *index_p)
{
    for (size_t i = task->nbag; i-- > 0;) {
        zi_msg_t *msg = task->bag[i];
        for (size_t k = 0; k < zi_msg_tensor_count (msg); k++) {
            if (strcmp (zi_msg_tensor_name (msg, k), name) == 0) {
                if (msg_p) {
                    *msg_p = msg;
                    *index_p = k;
                }
                return zi_msg_tensor (msg, k);
            }
        }
    }
    return NULL;
}

//  True when a tensor of this name is still needed once the task is at
//  segment `from`: as an input of a later segment, or as a model output.
static bool
s_needed_from (const zi_broker_t *self, uint32_t from, const char *name)
{
    for (size_t s = from; s < self->nsegs; s++) {
        const zi_plan_segment_t *ps = &self->plan->segments[s];
        for (size_t i = 0; i < ps->n_inputs; i++) {
            if (ps->inputs[i] && strcmp (ps->inputs[i], name) == 0) {
                return true;
            }
        }
    }
    for (size_t i = 0; i < self->nout; i++) {
        if (strcmp (self->out_names[i], name) == 0) {
            return true;
        }
    }
    return false;
}

//  Free the received messages none of whose tensors is needed any more, so
//  a task holds at most what its remaining segments read.
static void
s_task_prune (const zi_broker_t *self, s_task_t *task)
{
    size_t kept = 0;
    for (size_t i = 0; i < task->nbag; i++) {
        zi_msg_t *msg = task->bag[i];
        bool needed = false;
        for (size_t k = 0; !needed && k < zi_msg_tensor_count (msg); k++) {
            needed = s_needed_from (self, task->seg, zi_msg_tensor_name (msg, k));
        }
        if (needed) {
            task->bag[kept++] = msg;
        }
        else {
            zi_msg_destroy (&msg);
        }
    }
    task->nbag = kept;
}

//  The smallest budget left among the task's requests, in ms (>= 1), or 0
//  when none has a deadline.
static uint32_t
s_task_budget (zi_broker_t *self, const s_task_t *task, int64_t now)
{
    int64_t best = 0;
    for (size_t i = 0; i < task->nreqs; i++) {
        s_request_t *req = s_request_find (self, task->reqs[i].id);
        if (req && req->deadline_at) {
            int64_t left = req->deadline_at - now;
            left = left < 1 ? 1 : left;
            best = best == 0 || left < best ? left : best;
        }
    }
    return best > UINT32_MAX ? UINT32_MAX : (uint32_t)best;
}

static void
s_task_queue (zi_broker_t *self, s_task_t *task, bool front)
{
    s_segment_t *seg = &self->segs[task->seg];
    s_tlist_push (&seg->queue[task->prio], task, front);
    task->state = S_QUEUED;
    seg->queued++;
}

//  None of the task's requests is pending any more: drop it, unless a
//  worker holds it (its RESULT or its death ends it) or the caller does.
static void
s_task_release (zi_broker_t *self, s_task_t *task)
{
    switch (task->state) {
    case S_QUEUED:
        s_tlist_remove (&self->segs[task->seg].queue[task->prio], task);
        self->segs[task->seg].queued--;
        break;
    case S_AGG_WAIT:
        s_tlist_remove (&self->agg_wait, task);
        break;
    case S_AGG_SENT:
        s_tlist_remove (&task->agg->tasks, task);
        break;
    default:
        return;
    }
    s_task_destroy (self, &task);
}

static void s_request_fail (zi_broker_t *self, s_request_t *req, int code,
                            const char *fmt, ...) __attribute__ ((format (printf, 4, 5)));

//  Fail every pending request of a task the caller holds (S_HELD); the
//  caller then destroys the task.
static void
s_task_fail (zi_broker_t *self, s_task_t *task, int code, const char *reason)
{
    assert (task->state == S_HELD);
    for (size_t i = 0; i < task->nreqs; i++) {
        s_request_t *req = s_request_find (self, task->reqs[i].id);
        if (req) {
            s_request_fail (self, req, code, "%s", reason);
        }
    }
}

//  A held task goes back to the front of its queue with attempt + 1, or
//  fails when it has had its max_attempts dispatches.
static void
s_task_retry (zi_broker_t *self, s_task_t *task, const char *why)
{
    if (task->live == 0) {
        s_task_destroy (self, &task);
        return;
    }
    task->attempt++;
    self->task.redispatched++;
    if (task->attempt >= (uint32_t)self->max_attempts) {
        char reason[ZI_MSG_MAX_REASON];
        snprintf (reason, sizeof reason,
                  "task %" PRIu64 " of segment %" PRIu32 " failed %" PRIu32
                  " dispatches (last: %s)",
                  task->tid, task->seg, task->attempt, why);
        zi_log_warn ("BROKER-TASK-FAILED", "%s", reason);
        s_task_fail (self, task, ZI_CODE_INTERNAL, reason);
        s_task_destroy (self, &task);
        return;
    }
    s_task_queue (self, task, true);
}

//  Build the TASK that carries the task's tensors `names`, sharing their
//  bytes with the bag (zi_msg_add_tensor_ref: no copy), which keeps its
//  references for a re-dispatch. NULL with err when one is missing.
//  Segment 0's inputs into the broker's arena, once per task (a copy the
//  bag keeps, newest first, so a re-dispatch finds it): the first worker
//  reads them in place instead of receiving them through a socket. A
//  tensor that does not fit stays inline.
static void
s_task_inputs_to_shm (zi_broker_t *self, s_task_t *task, const char *const *names,
                      size_t nnames)
{
    zi_msg_t *copy = NULL;
    for (size_t i = 0; i < nnames; i++) {
        zi_msg_t *holder = NULL;
        size_t at = 0;
        const zi_tensor_t *t = s_task_tensor_at (task, names[i], &holder, &at);
        if (!t || zi_msg_tensor_shm (holder, at) || !zi_tensor_is_contiguous (t)) {
            continue;
        }
        zi_shm_ref_t ref;
        void *block = zi_shm_alloc (self->arena, t->nbytes, &ref);
        if (!block) {
            continue;
        }
        memcpy (block, t->data, t->nbytes);
        if (!copy) {
            copy = zi_msg_new (ZI_CMD_TASK);
        }
        if (!copy || zi_msg_add_tensor_shm (copy, names[i], t->dtype, t->rank, t->ne, block,
                                            &ref, true)) {
            zi_shm_release (&ref);
        }
    }
    if (copy && (zi_msg_tensor_count (copy) == 0 || s_task_bag_add (task, &copy))) {
        zi_msg_destroy (&copy);
    }
}

static zi_msg_t *
s_task_msg (zi_broker_t *self, s_task_t *task, uint32_t seg,
            const char *const *names, size_t nnames, char *err, size_t errlen)
{
    if (seg == 0 && self->arena) {
        s_task_inputs_to_shm (self, task, names, nnames);
    }
    zi_msg_t *msg = zi_msg_new (ZI_CMD_TASK);
    if (!msg) {
        snprintf (err, errlen, "out of memory");
        return NULL;
    }
    zi_msg_set_id (msg, task->tid);
    zi_msg_set_seg (msg, seg);
    zi_msg_set_attempt (msg, task->attempt);
    zi_msg_set_prio (
        msg, (uint8_t)(task->prio <= ZI_MSG_MAX_PRIO ? task->prio : ZI_MSG_MAX_PRIO));
    uint32_t budget = s_task_budget (self, task, s_now_ms ());
    if (budget) {
        zi_msg_set_deadline_ms (msg, budget);
    }
    int rc = zi_msg_set_reqs (msg, task->reqs, task->nreqs);
    if (!rc) {
        rc = zi_msg_set_mb (msg, task->mb, task->nmb);
    }
    zi_msg_set_shm_out (msg, self->shm);
    for (size_t i = 0; !rc && i < nnames; i++) {
        zi_msg_t *holder = NULL;
        size_t at = 0;
        const zi_tensor_t *t = s_task_tensor_at (task, names[i], &holder, &at);
        if (!t) {
            snprintf (err, errlen,
                      "task %" PRIu64 ": tensor '%s' for segment %" PRIu32
                      " is missing (no earlier stage produced it)",
                      task->tid, names[i], seg);
            zi_msg_destroy (&msg);
            return NULL;
        }
        rc = zi_msg_add_tensor_ref (msg, names[i], holder, at);
    }
    if (rc) {
        snprintf (err, errlen, "task %" PRIu64 ": cannot build its TASK: %s", task->tid,
                  zi_strerror (rc));
        zi_msg_destroy (&msg);
    }
    return msg;
}

//  ---------------------------------------------------------------------
//  Requests

//  Timers. A request needs the tick at its deadline, and (while its rows
//  are not all back from the stages) stage_timeout_ms after it was sent
//  in. It waits in a min-heap on the earlier of the two, so a tick looks
//  only at what is due: O(due) per tick and O(log n) per change, instead
//  of a walk over every request in flight every S_TICK_MS.

static int64_t
s_request_due (const zi_broker_t *self, const s_request_t *req)
{
    int64_t due = req->deadline_at ? req->deadline_at : INT64_MAX;
    if (!req->entry_done && req->entry_sent && self->stage_timeout > 0) {
        //  lost once now - entry_sent > stage_timeout
        int64_t lost = req->entry_sent + self->stage_timeout + 1;
        due = lost < due ? lost : due;
    }
    return due;
}

static void
s_heap_place (zi_broker_t *self, size_t i, s_request_t *req)
{
    self->timers.items[i] = req;
    req->heap_pos = i + 1;
}

static void
s_heap_up (zi_broker_t *self, size_t i)
{
    s_request_t *req = self->timers.items[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (self->timers.items[parent]->due <= req->due) {
            break;
        }
        s_heap_place (self, i, self->timers.items[parent]);
        i = parent;
    }
    s_heap_place (self, i, req);
}

static void
s_heap_down (zi_broker_t *self, size_t i)
{
    s_request_t *req = self->timers.items[i];
    size_t n = self->timers.size;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) {
            break;
        }
        if (child + 1 < n
            && self->timers.items[child + 1]->due < self->timers.items[child]->due) {
            child++;
        }
        if (req->due <= self->timers.items[child]->due) {
            break;
        }
        s_heap_place (self, i, self->timers.items[child]);
        i = child;
    }
    s_heap_place (self, i, req);
}

static void
s_timer_remove (zi_broker_t *self, s_request_t *req)
{
    if (!req->heap_pos) {
        return;
    }
    size_t i = req->heap_pos - 1;
    req->heap_pos = 0;
    s_request_t *last = self->timers.items[--self->timers.size];
    if (last != req) {
        s_heap_place (self, i, last);
        s_heap_up (self, i);
        s_heap_down (self, last->heap_pos - 1);
    }
}

//  The request's deadline or send time changed: (re)place it in the heap.
//  Out of memory it stays out (its deadline is then not enforced, which
//  the next change of its state retries); nothing else is lost.
static void
s_timer_set (zi_broker_t *self, s_request_t *req)
{
    int64_t due = s_request_due (self, req);
    if (due == INT64_MAX) {
        s_timer_remove (self, req);
        return;
    }
    if (req->heap_pos) {
        req->due = due;
        s_heap_up (self, req->heap_pos - 1);
        s_heap_down (self, req->heap_pos - 1);
        return;
    }
    if (self->timers.size == self->timers.cap) {
        size_t cap = self->timers.cap ? self->timers.cap * 2 : 1024;
        s_request_t **grown
            = (s_request_t **)realloc (self->timers.items, cap * sizeof *grown);
        if (!grown) {
            zi_log_error ("BROKER-NOMEM", "out of memory arming a request's timer");
            return;
        }
        self->timers.items = grown;
        self->timers.cap = cap;
    }
    req->due = due;
    s_heap_place (self, self->timers.size++, req);
    s_heap_up (self, req->heap_pos - 1);
}

//  Rows [first, first+count) of a request came back from the stages.
//  Returns 1 when they are new, 0 when all were seen before (a duplicate
//  after a re-injection), -1 when they straddle seen rows or the request.
static int
s_request_rows (s_request_t *req, uint32_t first, uint32_t count)
{
    uint64_t end = (uint64_t)first + count;
    if (count == 0 || end > req->rows) {
        return -1;
    }
    for (size_t i = 0; i < req->nranges; i++) {
        s_range_t *r = &req->ranges[i];
        if (r->first < end && first < r->end) {
            return first >= r->first && end <= r->end ? 0 : -1;
        }
    }
    req->rows_in += count;
    //  Micro-batches usually come in order: merge neighbours so the list
    //  stays one range long.
    for (size_t i = 0; i < req->nranges; i++) {
        s_range_t *r = &req->ranges[i];
        if (r->end == first) {
            r->end = (uint32_t)end;
            for (size_t j = 0; j < req->nranges; j++) {
                if (req->ranges[j].first == r->end) {
                    r->end = req->ranges[j].end;
                    req->ranges[j] = req->ranges[--req->nranges];
                    break;
                }
            }
            return 1;
        }
        if (r->first == end) {
            r->first = first;
            return 1;
        }
    }
    if (req->nranges >= S_MAX_RANGES) {
        req->rows_in -= count;
        return -1;
    }
    s_range_t *grown
        = (s_range_t *)realloc (req->ranges, (req->nranges + 1) * sizeof *grown);
    if (!grown) {
        req->rows_in -= count;
        return -1;
    }
    req->ranges = grown;
    req->ranges[req->nranges++] = (s_range_t){ first, (uint32_t)end };
    return 1;
}

static void
s_request_add_tid (s_request_t *req, uint64_t tid)
{
    if (req->ntids && req->tids[req->ntids - 1] == tid) {
        return;
    }
    if (!req->tids) {
        req->tids = req->tids_inline;
        req->captids = sizeof req->tids_inline / sizeof req->tids_inline[0];
    }
    if (req->ntids == req->captids) {
        size_t cap = req->captids * 2;
        uint64_t *grown = (uint64_t *)malloc (cap * sizeof *grown);
        if (!grown) {
            return; //  the task then outlives the request a little
        }
        memcpy (grown, req->tids, req->ntids * sizeof *grown);
        if (req->tids != req->tids_inline) {
            free (req->tids);
        }
        req->tids = grown;
        req->captids = cap;
    }
    req->tids[req->ntids++] = tid;
}

//  Whether partition holds (or will be sent) some of the request's rows:
//  while any request does, a new one does not skip partition (it would
//  overtake them).
static void
s_request_at_part (zi_broker_t *self, s_request_t *req, bool on)
{
    if (req->at_part != on) {
        req->at_part = on;
        if (on) {
            self->at_part++;
        }
        else if (self->at_part > 0) {
            self->at_part--;
        }
    }
}

//  Every row of the request came back from the stages: it no longer needs
//  its inputs for a re-injection.
static void
s_request_entry_done (zi_broker_t *self, s_request_t *req)
{
    s_request_at_part (self, req, false);
    req->entry_done = true;
    s_timer_set (self, req);
    zi_msg_destroy (&req->inputs);
    if (req->inject_handle) {
        zlistx_detach (self->inject, req->inject_handle);
        req->inject_handle = NULL;
    }
}

static void
s_request_free (s_request_t **req_p)
{
    s_request_t *req = *req_p;
    if (req) {
        zmsg_destroy (&req->envelope);
        zi_msg_destroy (&req->inputs);
        free (req->key);
        free (req->ranges);
        if (req->tids != req->tids_inline) {
            free (req->tids);
        }
        free (req);
        *req_p = NULL;
    }
}

//  The request has its answer (or never will): forget it, and drop the
//  tasks that hold nothing else.
static void
s_request_forget (zi_broker_t *self, s_request_t *req)
{
    s_request_at_part (self, req, false);
    s_map64_delete (&self->requests, req->rid);
    s_timer_remove (self, req);
    if (s_map64_get (&self->clients, s_key_hash (req->key)) == req) {
        s_map64_delete (&self->clients, s_key_hash (req->key));
    }
    if (req->inject_handle) {
        zlistx_detach (self->inject, req->inject_handle);
        req->inject_handle = NULL;
    }
    for (size_t i = 0; i < req->ntids; i++) {
        s_task_t *task = (s_task_t *)s_map64_get (&self->tasks, req->tids[i]);
        if (!task) {
            continue;
        }
        for (size_t k = 0; k < task->nreqs && task->live > 0; k++) {
            if (task->reqs[k].id == req->rid) {
                task->live--;
            }
        }
        if (task->live == 0) {
            s_task_release (self, task);
        }
    }
    s_request_free (&req);
}

//  ---------------------------------------------------------------------
//  Answers kept for retries (exactly-once delivery)

//  The answer kept under a client key, or NULL.
static s_answer_t *
s_kept_find (zi_broker_t *self, const char *key)
{
    s_answer_t *kept = (s_answer_t *)s_map64_get (&self->answers, s_key_hash (key));
    return kept && strcmp (kept->key, key) == 0 ? kept : NULL;
}

static void
s_answer_forget (zi_broker_t *self, s_answer_t *kept)
{
    if (s_map64_get (&self->answers, s_key_hash (kept->key)) == kept) {
        s_map64_delete (&self->answers, s_key_hash (kept->key));
    }
    if (kept->prev) {
        kept->prev->next = kept->next;
    }
    else {
        self->answer_order.head = kept->next;
    }
    if (kept->next) {
        kept->next->prev = kept->prev;
    }
    else {
        self->answer_order.tail = kept->prev;
    }
    self->answer_order.size--;
    self->answer_bytes -= kept->bytes;
    zi_msg_destroy (&kept->answer);
    free (kept);
}

//  Forget answers older than S_ANSWER_TTL_MS.
static void
s_answers_expire (zi_broker_t *self, int64_t now)
{
    s_answer_t *kept;
    while ((kept = self->answer_order.head) && now - kept->at > S_ANSWER_TTL_MS) {
        s_answer_forget (self, kept);
    }
}

//  Another message with the answer's command, id, code, reason and
//  tensors, the tensors sharing its bytes (sending consumes a message).
static zi_msg_t *
s_answer_share (zi_msg_t *answer, uint64_t id)
{
    zi_msg_t *copy;
    if (zi_msg_cmd (answer) == ZI_CMD_ERROR) {
        copy = zi_msg_new_error ((zi_code_t)zi_msg_code (answer), zi_msg_reason (answer));
    }
    else {
        copy = zi_msg_new (zi_msg_cmd (answer));
    }
    for (size_t i = 0; copy && i < zi_msg_tensor_count (answer); i++) {
        if (zi_msg_add_tensor_ref (copy, zi_msg_tensor_name (answer, i), answer, i)) {
            zi_msg_destroy (&copy);
        }
    }
    if (copy) {
        zi_msg_set_id (copy, id);
    }
    return copy;
}

//  Send a kept answer again to envelope (borrowed).
static int
s_answer_send (zi_broker_t *self, const s_answer_t *kept, zmsg_t *envelope)
{
    zi_msg_t *again = s_answer_share (kept->answer, zi_msg_id (kept->answer));
    if (!again || s_send_to (&again, self->sock[ZI_PLAN_EP_FRONT], envelope)) {
        zi_msg_destroy (&again);
        return ZI_ERR_IO;
    }
    return ZI_OK;
}

//  Keep the answer to the request `key` (client id `id`), sharing its
//  tensors' bytes (no copy; the caller may send and free its message), if
//  it is small enough, evicting the oldest answers to stay within the
//  limits.
static void
s_answer_keep (zi_broker_t *self, const char *key, uint64_t id, zi_msg_t *answer)
{
    size_t bytes = 0;
    for (size_t i = 0; i < zi_msg_tensor_count (answer); i++) {
        bytes += zi_msg_tensor (answer, i)->nbytes;
    }
    if (bytes > S_ANSWER_KEEP_BYTES) {
        return; //  a retry runs the request again
    }
    s_answer_t *old = s_kept_find (self, key);
    if (old) {
        s_answer_forget (self, old);
    }
    s_answer_t *first;
    while ((first = self->answer_order.head)
           && (self->answer_order.size >= S_ANSWER_MAX
               || self->answer_bytes + bytes > S_ANSWER_MAX_BYTES)) {
        s_answer_forget (self, first);
    }
    size_t keylen = strlen (key);
    s_answer_t *kept = (s_answer_t *)malloc (sizeof *kept + keylen + 1);
    if (!kept) {
        return;
    }
    kept->answer = s_answer_share (answer, id);
    if (!kept->answer) {
        free (kept);
        return;
    }
    memcpy (kept->key, key, keylen + 1);
    kept->at = s_now_ms ();
    kept->bytes = bytes;
    kept->next = NULL;
    kept->prev = self->answer_order.tail;
    if (kept->prev) {
        kept->prev->next = kept;
    }
    else {
        self->answer_order.head = kept;
    }
    self->answer_order.tail = kept;
    self->answer_order.size++;
    self->answer_bytes += bytes;
    uint64_t hash = s_key_hash (kept->key);
    if (s_map64_get (&self->answers, hash) || s_map64_put (&self->answers, hash, kept)) {
        //  Another key of the same hash, or out of memory: not kept.
        s_answer_forget (self, kept);
    }
}

static void
s_request_fail (zi_broker_t *self, s_request_t *req, int code, const char *fmt, ...)
{
    char reason[ZI_MSG_MAX_REASON + 1];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (reason, sizeof reason, fmt, ap);
    va_end (ap);
    s_send_error (self, ZI_PLAN_EP_FRONT, req->envelope, true, req->client_id, code, "%s",
                  reason);
    self->req.failed++;
    if (code == ZI_CODE_TIMEOUT) {
        self->req.timeout++;
    }
    //  A final answer is kept for a retry; BUSY, TIMEOUT and UNAVAILABLE
    //  are not: a retry of those is a new attempt.
    if (!zi_code_retryable (code)) {
        zi_msg_t *error = zi_msg_new_error ((zi_code_t)code, reason);
        if (error) {
            s_answer_keep (self, req->key, req->client_id, error);
            zi_msg_destroy (&error);
        }
    }
    s_request_forget (self, req);
}

//  Send a REPLY (taken) to the request's client and forget the request.
static void
s_request_answer (zi_broker_t *self, s_request_t *req, zi_msg_t **reply_p)
{
    s_answer_keep (self, req->key, req->client_id, *reply_p);
    zi_msg_set_id (*reply_p, req->client_id);
    s_send_to (reply_p, self->sock[ZI_PLAN_EP_FRONT], req->envelope);
    self->req.completed++;
    s_request_forget (self, req);
}

//  Count the task's pending requests, pick its class, and let each request
//  know the task holds its rows.
static void
s_task_bind (zi_broker_t *self, s_task_t *task)
{
    for (size_t i = 0; i < task->nreqs; i++) {
        s_request_t *req = s_request_find (self, task->reqs[i].id);
        if (req) {
            task->live++;
            task->prio = zi_sched_prio_favoured (self->favour, task->prio, req->prio);
            s_request_add_tid (req, task->tid);
        }
    }
    if (task->prio < 0) {
        task->prio = self->default_prio;
    }
}

//  A TASK from the stages (intake): queue it for segment 0 unless every
//  row it holds arrived before. Takes *msg_p.
static void
s_stage_task (zi_broker_t *self, zi_msg_t **msg_p)
{
    zi_msg_t *msg = *msg_p;
    size_t n = 0;
    const zi_msg_req_t *reqs = zi_msg_reqs (msg, &n);
    bool fresh = false;
    for (size_t i = 0; i < n; i++) {
        s_request_t *req = s_request_find (self, reqs[i].id);
        if (!req) {
            continue;
        }
        int rc = s_request_rows (req, reqs[i].first, reqs[i].count);
        if (rc > 0) {
            fresh = true;
        }
        else if (rc < 0) {
            zi_log_warn ("BROKER-TASK-ROWS",
                         "intake TASK: rows [%" PRIu32 ", +%" PRIu32
                         ") of request %" PRIu64 " (%" PRIu32
                         " rows) overlap rows seen before or lie outside it",
                         reqs[i].first, reqs[i].count, reqs[i].id, req->rows);
        }
    }
    if (!fresh) {
        self->task.stale++;
        zi_msg_destroy (msg_p);
        return;
    }
    s_task_t *task = s_task_new (self, reqs, n, zi_msg_mb (msg), zi_msg_nmb (msg));
    if (!task || s_task_bag_add (task, msg_p)) {
        zi_log_error ("BROKER-NOMEM", "out of memory queueing a task");
        s_task_destroy (self, &task);
        zi_msg_destroy (msg_p);
        return;
    }
    s_task_bind (self, task);
    for (size_t i = 0; i < n; i++) {
        s_request_t *req = s_request_find (self, reqs[i].id);
        if (req && !req->entry_done && req->rows_in == req->rows) {
            s_request_entry_done (self, req);
        }
    }
    s_task_queue (self, task, false);
}

//  ---------------------------------------------------------------------
//  The stages: sending a request in, and what comes back on intake

//  Tasks segment 0 could start right now: the free credit of its live
//  replicas minus what already waits in its queue. Partition batches only
//  while this is 0 (zi_batcher.h): the "credit" of every TASK and
//  HEARTBEAT the broker sends it.
static uint32_t
s_seg0_free (const zi_broker_t *self)
{
    const s_segment_t *seg = &self->segs[0];
    uint64_t free_credit = 0;
    for (size_t i = 0; i < seg->nslots; i++) {
        const s_worker_t *w = seg->slots[i];
        if (w && w->inflight < w->credit) {
            free_credit += w->credit - w->inflight;
        }
    }
    free_credit = free_credit > seg->queued ? free_credit - seg->queued : 0;
    return free_credit > UINT32_MAX ? UINT32_MAX : (uint32_t)free_credit;
}

//  Segment 0 just got room after having none: tell partition, so a batch
//  it holds goes now rather than after max_delay_us (never waiting while
//  the pipeline is idle). Best effort, never blocks: a lost hint costs at
//  most max_delay_us.
static void
s_nudge_partition (zi_broker_t *self)
{
    if (!self->has_part) {
        return;
    }
    uint32_t free_credit = s_seg0_free (self);
    if (free_credit == 0) {
        self->seg0_full = true;
        return;
    }
    if (!self->seg0_full) {
        return;
    }
    self->seg0_full = false;
    if (!s_writable (self->sock[ZI_PLAN_EP_TO_PARTITION])) {
        return;
    }
    zi_msg_t *beat = zi_msg_new (ZI_CMD_HEARTBEAT);
    if (beat) {
        zi_msg_set_credit (beat, free_credit);
        zi_msg_set_grant (beat, self->part_tasks + free_credit);
        zi_msg_send_small (&beat, self->sock[ZI_PLAN_EP_TO_PARTITION], NULL);
    }
}

//  Would partition send a request of `rows` rows on as one task, unchanged?
//  Always when it cannot coalesce it (max_delay_us 0, or the request fills
//  max_batch by itself); and when it would not hold it: the batcher never
//  waits while segment 0 could start a task now (zi_batcher.h), so with
//  free credit at segment 0 and nothing of other requests at partition
//  (or queued for it: `queued`), a request of at most micro_batch rows goes
//  straight through as a batch of one.
static bool
s_skips_partition (const zi_broker_t *self, uint64_t rows, size_t queued)
{
    if (!self->has_part || self->skip_part_max <= 0 || rows > (uint64_t)self->skip_part_max) {
        return false;
    }
    if (rows >= (uint64_t)self->skip_part_min) {
        return true;
    }
    return self->at_part == 0 && queued == 0 && s_seg0_free (self) > 0;
}

//  A TASK from preprocess that partition would pass on unchanged: one
//  request, all its rows, one micro-batch.
static bool
s_task_skips_partition (const zi_broker_t *self, const zi_msg_t *msg)
{
    size_t n = 0;
    const zi_msg_req_t *reqs = zi_msg_reqs (msg, &n);
    return n == 1 && reqs[0].first == 0 && zi_msg_nmb (msg) == 1 && zi_msg_mb (msg) == 0
           && s_skips_partition (self, reqs[0].count, 0);
}

//  Send a request's inputs to the first stage. Returns 0, or -1 when the
//  stage cannot take it now (no peer, or its queue is full).
static int
s_request_inject (zi_broker_t *self, s_request_t *req)
{
    int stage = self->has_pre ? S_STAGE_PRE : S_STAGE_PART;
    zi_plan_ep_t ep = self->has_pre ? ZI_PLAN_EP_TO_PREPROCESS : ZI_PLAN_EP_TO_PARTITION;
    if (!s_writable (self->sock[ep])) {
        return -1;
    }
    zi_msg_t *msg = zi_msg_new (ZI_CMD_TASK);
    if (!msg) {
        return -1;
    }
    zi_msg_add_req (msg, req->rid, 0, req->rows);
    zi_msg_set_mb (msg, 0, 1);
    zi_msg_set_seg (msg, 0);
    zi_msg_set_prio (
        msg, (uint8_t)(req->prio <= ZI_MSG_MAX_PRIO ? req->prio : ZI_MSG_MAX_PRIO));
    zi_msg_set_attempt (msg, req->entry_attempt);
    int64_t now = s_now_ms ();
    if (req->deadline_at) {
        int64_t left = req->deadline_at - now;
        zi_msg_set_deadline_ms (msg, left < 1 ? 1 : (uint32_t)left);
    }
    if (ep == ZI_PLAN_EP_TO_PARTITION) {
        uint32_t free_credit = s_seg0_free (self);
        zi_msg_set_credit (msg, free_credit);
        zi_msg_set_grant (msg, self->part_tasks + free_credit);
    }
    int rc = 0;
    //  Shared with the kept inputs (no copy), for a re-injection.
    for (size_t i = 0; !rc && i < zi_msg_tensor_count (req->inputs); i++) {
        rc = zi_msg_add_tensor_ref (msg, zi_msg_tensor_name (req->inputs, i),
                                    req->inputs, i);
    }
    if (rc) {
        zi_msg_destroy (&msg);
        return -1;
    }
    if (zi_msg_send_small (&msg, self->sock[ep], NULL)) {
        return -1;
    }
    self->stage[stage].sent++;
    req->entry_sent = now;
    s_timer_set (self, req);
    return 0;
}

//  Send what waits for the first stage, oldest first, until it pushes back.
static void
s_inject_pending (zi_broker_t *self)
{
    s_request_t *req;
    while ((req = (s_request_t *)zlistx_first (self->inject))) {
        if (s_request_inject (self, req)) {
            break;
        }
        zlistx_detach (self->inject, req->inject_handle);
        req->inject_handle = NULL;
    }
}

//  The stage replica of a role called name, or NULL.
static s_stage_peer_t *
s_stage_peer (zi_broker_t *self, int role, const char *name)
{
    for (size_t i = 0; name && i < self->nspeers; i++) {
        if (self->speers[i].role == role && strcmp (self->speers[i].name, name) == 0) {
            return &self->speers[i];
        }
    }
    return NULL;
}

//  A HEARTBEAT or DISCONNECT from a stage replica on its PUSH link: it is
//  alive (or leaving). Only the plan's replicas of that role are tracked;
//  anything else is dropped and counted. Takes *msg_p.
static void
s_stage_hello (zi_broker_t *self, zi_plan_ep_t ep, int role, zi_msg_t **msg_p)
{
    zi_msg_t *msg = *msg_p;
    s_stage_peer_t *peer = s_stage_peer (self, role, zi_msg_name (msg));
    if (!peer) {
        s_drop (self, ep, "BROKER-STAGE-UNKNOWN",
                "%s from %s, not a %s replica of the plan",
                zi_cmd_name (zi_msg_cmd (msg)),
                zi_msg_name (msg) ? zi_msg_name (msg) : "a peer without a name",
                role == S_STAGE_PRE ? "preprocess" : "partition");
        zi_msg_destroy (msg_p);
        return;
    }
    bool was_live = peer->last_recv && !peer->gone
                    && s_now_ms () - peer->last_recv <= self->interval * self->liveness;
    peer->last_recv = s_now_ms ();
    if (zi_msg_cmd (msg) == ZI_CMD_DISCONNECT) {
        peer->gone = true;
        zi_log_info ("BROKER-STAGE-GONE", "%s %s disconnected: %s",
                     role == S_STAGE_PRE ? "preprocess" : "partition", peer->name,
                     zi_msg_reason (msg) ? zi_msg_reason (msg) : "-");
    }
    else {
        peer->beats++;
        peer->gone = false;
        if (!was_live) {
            zi_log_info ("BROKER-STAGE-LIVE", "%s %s is live",
                         role == S_STAGE_PRE ? "preprocess" : "partition", peer->name);
        }
    }
    zi_msg_destroy (msg_p);
}

static void
s_handle_intake_msg (zi_broker_t *self, zi_plan_ep_t ep, zi_msg_t **msg_p)
{
    zi_msg_t *msg = *msg_p;
    int role = ep == ZI_PLAN_EP_PREPROCESSED ? S_STAGE_PRE : S_STAGE_PART;
    switch (zi_msg_cmd (msg)) {
    case ZI_CMD_TASK:
        self->stage[role].received++;
        self->part_tasks++;
        s_stage_task (self, msg_p);
        return;
    case ZI_CMD_HEARTBEAT:
    case ZI_CMD_DISCONNECT:
        s_stage_hello (self, ep, role, msg_p);
        return;
    case ZI_CMD_ERROR:
        if (zi_msg_has (msg, "id")) {
            self->stage[role].received++;
            s_request_t *req = s_request_find (self, zi_msg_id (msg));
            if (req) {
                s_request_fail (self, req, zi_msg_code (msg), "%s", zi_msg_reason (msg));
            }
            else {
                self->task.replies_dropped++;
            }
            zi_msg_destroy (msg_p);
            return;
        }
        break; //  an ERROR about nothing we can name
    default:
        break;
    }
    char summary[256];
    s_drop (self, ep, "BROKER-UNEXPECTED", "dropped %s",
            zi_msg_summary (msg, summary, sizeof summary));
    zi_msg_destroy (msg_p);
}

static void
s_handle_intake (zi_broker_t *self, zi_plan_ep_t ep)
{
    for (int n = 0; n < S_BATCH; n++) {
        zi_msg_t *msg = NULL;
        char err[256];
        int rc = zi_msg_recv (self->sock[ep], &msg, err, sizeof err);
        if (rc == ZI_ERR_IO) {
            break;
        }
        if (rc) {
            s_drop (self, ep, "BROKER-DECODE-DROPPED", "%s", err);
            continue;
        }
        s_handle_intake_msg (self, ep, &msg);
    }
}

//  preprocess -> partition: relay whole messages. Each is decoded first
//  (zi_msg_recv: tensors stay views into their frames, so nothing is
//  copied but a misaligned frame), so partition only ever receives what
//  is well-formed, and a stage's HEARTBEAT or DISCONNECT stops here. What
//  goes on is the original header bytes (unknown keys included) and the
//  same tensor frames, moved.
static void
s_handle_preprocessed (zi_broker_t *self)
{
    zi_plan_ep_t ep = ZI_PLAN_EP_PREPROCESSED;
    if (!self->has_part) {
        s_handle_intake (self, ep);
        return;
    }
    //  While partition cannot take more, what preprocess sends waits in
    //  the preprocessed queue (and then in preprocess): backpressure, not
    //  loss.
    for (int n = 0; n < S_BATCH && s_writable (self->sock[ZI_PLAN_EP_TO_PARTITION]);
         n++) {
        zi_msg_t *msg = NULL;
        char err[256];
        int rc = zi_msg_recv (self->sock[ep], &msg, err, sizeof err);
        if (rc == ZI_ERR_IO) {
            break;
        }
        if (rc) {
            s_drop (self, ep, "BROKER-DECODE-DROPPED", "%s", err);
            continue;
        }
        zi_cmd_t cmd = zi_msg_cmd (msg);
        if (cmd == ZI_CMD_HEARTBEAT || cmd == ZI_CMD_DISCONNECT) {
            s_stage_hello (self, ep, S_STAGE_PRE, &msg);
            continue;
        }
        if (cmd == ZI_CMD_TASK && s_task_skips_partition (self, msg)) {
            //  What partition would pass on unchanged goes to segment 0
            //  now (not counted in part_tasks: partition never made it).
            self->stage[S_STAGE_PRE].received++;
            self->task.skipped_partition++;
            s_stage_task (self, &msg);
            continue;
        }
        bool has_credit = zi_msg_has (msg, "credit") || zi_msg_has (msg, "grant");
        size_t hsize = 0;
        const uint8_t *hdata = zi_msg_header (msg, &hsize);
        //  Partition's batching hint: segment 0's free credit now. Added
        //  to the original bytes; a header that has "credit" already goes
        //  on as it came.
        zframe_t *granted = NULL;
        if (cmd == ZI_CMD_TASK && !has_credit) {
            uint32_t free_credit = s_seg0_free (self);
            zframe_t *stamped = zi_msg_header_add_uint (hdata, hsize, "credit", free_credit);
            granted = stamped ? zi_msg_header_add_uint (zframe_data (stamped),
                                                        zframe_size (stamped), "grant",
                                                        self->part_tasks + free_credit)
                              : NULL;
            zframe_destroy (&stamped);
            if (granted) {
                hdata = zframe_data (granted);
                hsize = zframe_size (granted);
            }
        }
        //  The requests it carries are at partition from now on.
        uint64_t relayed[16];
        size_t nrelayed = 0, nreqs = 0;
        const zi_msg_req_t *reqs = cmd == ZI_CMD_TASK ? zi_msg_reqs (msg, &nreqs) : NULL;
        for (size_t i = 0; reqs && i < nreqs && nrelayed < 16; i++) {
            relayed[nrelayed++] = reqs[i].id;
        }
        self->stage[S_STAGE_PRE].received++;
        rc = zi_msg_send_header (&msg, self->sock[ZI_PLAN_EP_TO_PARTITION], hdata, hsize);
        zframe_destroy (&granted);
        if (rc) {
            //  Lost a race with a partition process leaving: the stage
            //  timeout sends the request in again.
            s_drop (self, ep, "BROKER-RELAY-FAILED", "cannot relay a message (%s)",
                    zmq_strerror (errno));
            continue;
        }
        self->stage[S_STAGE_PART].sent++;
        for (size_t i = 0; i < nrelayed; i++) {
            s_request_t *req = (s_request_t *)s_map64_get (&self->requests, relayed[i]);
            if (req && !req->entry_done) {
                s_request_at_part (self, req, true);
            }
        }
    }
}

//  ---------------------------------------------------------------------
//  Front

static const zi_plan_tensor_t *
s_expected (const zi_broker_t *self, const char *name)
{
    for (size_t i = 0; i < self->nexpect; i++) {
        if (strcmp (self->expect[i]->name, name) == 0) {
            return self->expect[i];
        }
    }
    return NULL;
}

static void
s_expected_list (const zi_broker_t *self, char *buf, size_t len)
{
    size_t pos = 0;
    buf[0] = 0;
    for (size_t i = 0; i < self->nexpect && pos < len; i++) {
        int n = snprintf (buf + pos, len - pos, "%s'%s'", i ? ", " : "",
                          self->expect[i]->name);
        pos += n > 0 ? (size_t)n : 0;
    }
}

//  Check a REQUEST's tensors and find its batch size. 0 or BAD_REQUEST
//  with the reason in err.
static int
s_check_request (const zi_broker_t *self, const zi_msg_t *msg, uint32_t *rows, char *err,
                 size_t errlen)
{
    size_t n = zi_msg_tensor_count (msg);
    //  What the model takes, for the error messages only: built on the
    //  first error, never for a good REQUEST (snprintf was a few % of the
    //  broker's time per request).
    char names[512];
#define S_NAMES() (s_expected_list (self, names, sizeof names), names)
    if (n == 0) {
        snprintf (err, errlen, "REQUEST carries no tensors (the model takes %s)", S_NAMES ());
        return ZI_CODE_BAD_REQUEST;
    }
    int64_t batch = -1;
    const char *first = NULL;
    for (size_t i = 0; i < n; i++) {
        const zi_tensor_t *t = zi_msg_tensor (msg, i);
        const char *name = zi_msg_tensor_name (msg, i);
        if (t->rank < 1) {
            snprintf (err, errlen,
                      "tensor '%s' is a scalar: inputs need a "
                      "batch dimension first",
                      name);
            return ZI_CODE_BAD_REQUEST;
        }
        if (batch < 0) {
            batch = t->ne[0];
            first = name;
        }
        else if (t->ne[0] != batch) {
            snprintf (err, errlen,
                      "tensor '%s' has %" PRId64 " rows but '%s' "
                      "has %" PRId64 ": every input needs the same batch size",
                      name, t->ne[0], first, batch);
            return ZI_CODE_BAD_REQUEST;
        }
        if (!self->expect) {
            continue;
        }
        const zi_plan_tensor_t *want = s_expected (self, name);
        if (!want) {
            snprintf (err, errlen, "unknown input '%s' (the model takes %s)", name,
                      S_NAMES ());
            return ZI_CODE_BAD_REQUEST;
        }
        if (!self->check_shapes) {
            continue;
        }
        if (want->dtype != ZI_DT_UNDEFINED && t->dtype != want->dtype) {
            snprintf (err, errlen, "input '%s': dtype %s, the model takes %s", name,
                      zi_dtype_name (t->dtype), zi_dtype_name (want->dtype));
            return ZI_CODE_BAD_REQUEST;
        }
        //  Every dimension, the batch too when the model fixes it (an export
        //  at batch 1 takes [1,784] only): the same test as preprocess's
        //  zi_transform_check, which this replaces when there is none.
        bool same = want->rank == t->rank;
        for (int k = 0; same && k < t->rank; k++) {
            same = want->shape[k] < 0 || want->shape[k] == t->ne[k];
        }
        if (!same) {
            char got[128], need[128];
            zi_tensor_shape_str (t, got, sizeof got);
            zi_shape_str (want->rank, want->shape, need, sizeof need);
            snprintf (err, errlen, "input '%s': shape %s, the model takes %s", name, got,
                      need);
            return ZI_CODE_BAD_REQUEST;
        }
    }
    for (size_t i = 0; self->expect && i < self->nexpect; i++) {
        if (!zi_msg_tensor_find (msg, self->expect[i]->name)) {
            snprintf (err, errlen, "missing input '%s' (the model takes %s)",
                      self->expect[i]->name, S_NAMES ());
            return ZI_CODE_BAD_REQUEST;
        }
    }
    if (batch < 1 || batch > UINT32_MAX) {
        snprintf (err, errlen, "batch of %" PRId64 " rows: needs 1 to %" PRIu32, batch,
                  UINT32_MAX);
        return ZI_CODE_BAD_REQUEST;
    }
    *rows = (uint32_t)batch;
    return 0;
#undef S_NAMES
}

//  Takes *envelope_p and *msg_p.
static void
s_front_request (zi_broker_t *self, zmsg_t **envelope_p, zi_msg_t **msg_p)
{
    zi_msg_t *msg = *msg_p;
    uint64_t id = zi_msg_id (msg);
    //  The key lives on the stack until the request is admitted.
    char keybuf[S_KEY_MAX];
    size_t hexlen = s_routing_hex_into (*envelope_p, keybuf);
    s_key_append_id (keybuf + hexlen, id);
    char *key = NULL;
    if (s_client_find (self, keybuf)) {
        self->req.duplicates++; //  its one answer is on its way
        goto done;
    }
    s_answer_t *kept = s_kept_find (self, keybuf);
    if (kept) {
        //  Answered before, and the client did not get it (or retried
        //  too early): the same answer again, and the request is not run
        //  a second time.
        if (s_answer_send (self, kept, *envelope_p) == 0) {
            self->req.replayed++;
            goto done;
        }
    }
    if (self->draining) {
        s_send_error (self, ZI_PLAN_EP_FRONT, *envelope_p, true, id, ZI_CODE_UNAVAILABLE,
                      "broker is shutting down");
        goto done;
    }
    int prio = self->default_prio;
    if (zi_msg_has (msg, "prio")) {
        prio = zi_msg_prio (msg);
        if ((size_t)prio >= self->nclasses) {
            s_send_error (self, ZI_PLAN_EP_FRONT, *envelope_p, true, id,
                          ZI_CODE_BAD_REQUEST,
                          "priority class %d is not in the plan (classes 0..%zu)", prio,
                          self->nclasses - 1);
            goto done;
        }
    }
    char err[ZI_MSG_MAX_REASON];
    uint32_t rows = 0;
    int code = s_check_request (self, msg, &rows, err, sizeof err);
    if (code) {
        s_send_error (self, ZI_PLAN_EP_FRONT, *envelope_p, true, id, code, "%s", err);
        goto done;
    }
    size_t inflight = self->requests.size;
    if ((int64_t)inflight >= self->queue_limit) {
        self->req.busy++;
        s_send_error (self, ZI_PLAN_EP_FRONT, *envelope_p, true, id, ZI_CODE_BUSY,
                      "pipeline full: %zu requests in flight (queue_limit %" PRId64 ")",
                      inflight, self->queue_limit);
        goto done;
    }
    s_request_t *req = (s_request_t *)calloc (1, sizeof *req);
    key = req ? strdup (keybuf) : NULL;
    if (!key) {
        free (req);
        s_send_error (self, ZI_PLAN_EP_FRONT, *envelope_p, true, id, ZI_CODE_INTERNAL,
                      "broker out of memory");
        goto done;
    }
    int64_t now = s_now_ms ();
    req->rid = ++self->next_rid;
    req->client_id = id;
    req->envelope = *envelope_p;
    *envelope_p = NULL;
    req->key = key;
    key = NULL;
    req->prio = prio;
    req->admitted = now;
    req->budget_ms = zi_msg_deadline_ms (msg);
    if (req->budget_ms == 0 && self->default_deadline > 0) {
        req->budget_ms = self->default_deadline > UINT32_MAX
                             ? UINT32_MAX
                             : (uint32_t)self->default_deadline;
    }
    req->deadline_at = req->budget_ms ? now + req->budget_ms : 0;
    req->rows = rows;
    if (s_map64_put (&self->requests, req->rid, req)) {
        s_send_error (self, ZI_PLAN_EP_FRONT, req->envelope, true, id, ZI_CODE_BUSY,
                      "broker out of memory");
        s_request_free (&req);
        goto done;
    }
    uint64_t hash = s_key_hash (req->key);
    if (!s_map64_get (&self->clients, hash)) {
        s_map64_put (&self->clients, hash, req); //  else no duplicate detection
    }
    self->req.admitted++;
    s_timer_set (self, req);
    bool skip = !self->has_pre && s_skips_partition (self, rows, zlistx_size (self->inject));
    if ((self->has_pre || self->has_part) && !skip) {
        req->inputs = msg;
        *msg_p = NULL;
        if (!self->has_pre) {
            s_request_at_part (self, req, true);
        }
        req->inject_handle = zlistx_add_end (self->inject, req);
        s_inject_pending (self);
    }
    else {
        //  No stage in front of the segments, or a partition that would
        //  pass it on unchanged: the request is one task.
        if (skip) {
            self->task.skipped_partition++;
        }
        zi_msg_req_t entry = { req->rid, 0, rows };
        s_task_t *task = s_task_new (self, &entry, 1, 0, 1);
        if (!task || s_task_bag_add (task, msg_p)) {
            s_task_destroy (self, &task);
            s_request_fail (self, req, ZI_CODE_INTERNAL, "broker out of memory");
            goto done;
        }
        s_request_rows (req, 0, rows);
        req->entry_done = true;
        s_timer_set (self, req);
        s_task_bind (self, task);
        s_task_queue (self, task, false);
    }
done:
    free (key);
    zmsg_destroy (envelope_p);
    zi_msg_destroy (msg_p);
}

static void s_front_stats (zi_broker_t *self, zmsg_t *envelope, uint64_t id);

static bool
s_ready (const zi_broker_t *self)
{
    for (size_t s = 0; s < self->nsegs; s++) {
        if (zi_sched_sel_size (self->segs[s].sel) == 0) {
            return false;
        }
    }
    return !self->draining;
}

static void
s_handle_front (zi_broker_t *self)
{
    zsock_t *sock = self->sock[ZI_PLAN_EP_FRONT];
    for (int n = 0; n < S_BATCH; n++) {
        zmsg_t *envelope = NULL;
        zi_msg_t *msg = NULL;
        char err[ZI_MSG_MAX_REASON];
        if (self->client_shm) {
            zi_shm_accept_begin (false);    //  the client's blocks: read, never released
        }
        int rc = zi_msg_recv_from (sock, &envelope, &msg, err, sizeof err);
        zi_shm_accept_end ();
        if (rc == ZI_ERR_IO && !envelope) {
            break;
        }
        if (rc) {
            s_drop (self, ZI_PLAN_EP_FRONT, "BROKER-BAD-MESSAGE", "%s", err);
            if (envelope) {
                s_send_error (self, ZI_PLAN_EP_FRONT, envelope, false, 0,
                              zi_code_from_err (rc), "%s", err);
            }
            zmsg_destroy (&envelope);
            continue;
        }
        switch (zi_msg_cmd (msg)) {
        case ZI_CMD_REQUEST:
            s_front_request (self, &envelope, &msg);
            break;
        case ZI_CMD_STATS:
            s_front_stats (self, envelope, zi_msg_id (msg));
            break;
        case ZI_CMD_HEALTH: {
            zi_msg_t *reply = zi_msg_new (ZI_CMD_HEALTH_REPLY);
            if (reply) {
                zi_msg_set_id (reply, zi_msg_id (msg));
                zi_msg_set_health (reply, true, s_ready (self));
                s_send_to (&reply, sock, envelope);
            }
            break;
        }
        case ZI_CMD_ERROR:
            //  Never answer an ERROR with an ERROR.
            s_drop (self, ZI_PLAN_EP_FRONT, "BROKER-UNEXPECTED", "dropped an ERROR");
            break;
        default:
            s_drop (self, ZI_PLAN_EP_FRONT, "BROKER-UNEXPECTED", "dropped a %s",
                    zi_cmd_name (zi_msg_cmd (msg)));
            s_send_error (self, ZI_PLAN_EP_FRONT, envelope, zi_msg_has (msg, "id"),
                          zi_msg_id (msg), ZI_CODE_BAD_REQUEST,
                          "%s is not accepted on front (REQUEST, STATS, "
                          "HEALTH are)",
                          zi_cmd_name (zi_msg_cmd (msg)));
        }
        zmsg_destroy (&envelope);
        zi_msg_destroy (&msg);
    }
}

//  ---------------------------------------------------------------------
//  Workers

static double
s_effective_capacity (const s_worker_t *w)
{
    //  A worker that takes no task in flight cannot be in the rotation: the
    //  segment would wait for it forever.
    return w->credit > 0 ? w->capacity : 0;
}

//  The worker's outstanding tasks go back to the front of their queue, in
//  their order, with attempt + 1.
static void
s_worker_requeue (zi_broker_t *self, s_worker_t *w, const char *why)
{
    s_segment_t *seg = &self->segs[w->seg];
    char reason[256];
    snprintf (reason, sizeof reason, "replica %s %s", w->name, why);
    s_task_t *task;
    while ((task = w->tasks.tail)) {
        s_tlist_remove (&w->tasks, task);
        w->inflight--;
        seg->inflight--;
        task->state = S_HELD;
        task->worker = NULL;
        s_task_retry (self, task, reason);
    }
}

//  Remove a worker and re-queue what it held.
static void
s_worker_remove (zi_broker_t *self, s_worker_t *w, const char *why)
{
    s_segment_t *seg = &self->segs[w->seg];
    s_worker_requeue (self, w, why);
    zi_sched_sel_remove (seg->sel, w->slot);
    if ((size_t)w->slot < seg->nslots) {
        seg->slots[w->slot] = NULL;
    }
    if (zi_sched_sel_size (seg->sel) == 0) {
        seg->empty_since = s_now_ms ();
    }
    zhashx_delete (self->workers, w->key);
    zmsg_destroy (&w->envelope);
    free (w->name);
    free (w->key);
    free (w);
}

static void
s_worker_ready (zi_broker_t *self, s_worker_t *w, const char *key, zmsg_t **envelope_p,
                zi_msg_t *msg)
{
    uint32_t s = zi_msg_seg (msg);
    const char *name = zi_msg_name (msg) ? zi_msg_name (msg) : key;
    if (s >= self->nsegs) {
        s_send_error (self, ZI_PLAN_EP_WORK, *envelope_p, false, 0, ZI_CODE_BAD_REQUEST,
                      "READY for segment %" PRIu32 ": the plan has segments "
                      "0..%zu",
                      s, self->nsegs - 1);
        if (w) {
            s_worker_remove (self, w, "sent a bad READY");
        }
        return;
    }
    if (self->draining) {
        s_send_command (self, ZI_PLAN_EP_WORK, *envelope_p, ZI_CMD_DISCONNECT,
                        "broker is shutting down");
        return;
    }
    const zi_plan_segment_t *planned = NULL;
    if (zi_plan_find_replica (self->plan, name, &planned, NULL) && planned
        && planned != &self->plan->segments[s]) {
        zi_log_warn ("BROKER-WORKER-SEGMENT",
                     "worker %s serves segment %" PRIu32 ", the plan puts it "
                     "in segment %" PRId64,
                     name, s, planned->index);
    }
    if (w && w->seg != s) {
        s_worker_remove (self, w, "moved to another segment");
        w = NULL;
    }
    s_segment_t *seg = &self->segs[s];
    if (!w) {
        if (zhashx_size (self->workers) >= S_MAX_WORKERS) {
            s_send_error (self, ZI_PLAN_EP_WORK, *envelope_p, false, 0,
                          ZI_CODE_UNAVAILABLE, "too many workers (%d)", S_MAX_WORKERS);
            return;
        }
        w = (s_worker_t *)calloc (1, sizeof *w);
        if (!w || !(w->key = strdup (key))) {
            if (w) {
                free (w->key);
                free (w);
            }
            return;
        }
        w->envelope = *envelope_p;
        *envelope_p = NULL;
        w->seg = s;
        w->capacity = zi_msg_capacity (msg);
        w->credit = zi_msg_credit (msg);
        w->slot = zi_sched_sel_add (seg->sel, s_effective_capacity (w));
        if (w->slot >= 0 && (size_t)w->slot >= seg->nslots) {
            size_t n = (size_t)w->slot + 1;
            s_worker_t **grown = (s_worker_t **)realloc (seg->slots, n * sizeof *grown);
            if (grown) {
                for (size_t i = seg->nslots; i < n; i++) {
                    grown[i] = NULL;
                }
                seg->slots = grown;
                seg->nslots = n;
            }
        }
        if (w->slot < 0 || (size_t)w->slot >= seg->nslots) {
            if (w->slot >= 0) {
                zi_sched_sel_remove (seg->sel, w->slot);
            }
                    zmsg_destroy (&w->envelope);
            free (w->key);
            free (w);
            return;
        }
        seg->slots[w->slot] = w;
        zhashx_insert (self->workers, w->key, w);
        seg->empty_since = 0;
    }
    else {
        //  A worker says READY when it starts (or restarts under the same
        //  name) and when the broker forgot it: what it held is lost.
        if (w->tasks.size) {
            zi_log_info ("BROKER-WORKER-RESTARTED",
                         "worker %s said READY again: %zu tasks re-queued", w->name,
                         w->tasks.size);
            s_worker_requeue (self, w, "restarted");
        }
        w->capacity = zi_msg_capacity (msg);
        w->credit = zi_msg_credit (msg);
        zi_sched_sel_set_capacity (seg->sel, w->slot, s_effective_capacity (w));
    }
    if (!w->name || strcmp (w->name, name) != 0) {
        free (w->name);
        w->name = strdup (name);
        w->stats = s_rstats_get (self, name);
    }
    if (w->stats) {
        w->stats->seg = s;
        w->stats->capacity = w->capacity;
    }
    int64_t now = s_now_ms ();
    w->last_recv = now;
    zi_log_info ("BROKER-WORKER-READY",
                 "worker %s: segment %" PRIu32 ", capacity %g, credit %" PRIu32
                 " (%zu replicas in the rotation)",
                 w->name ? w->name : key, s, w->capacity, w->credit,
                 zi_sched_sel_size (seg->sel));
}

static void s_task_advance (zi_broker_t *self, s_task_t *task);

//  The worker's outstanding task for this id, detached from it (credit
//  returned), or NULL when it holds none such.
static s_task_t *
s_worker_take (zi_broker_t *self, s_worker_t *w, uint64_t tid)
{
    s_task_t *task = (s_task_t *)s_map64_get (&self->tasks, tid);
    if (!task || task->state != S_INFLIGHT || task->worker != w) {
        return NULL;
    }
    s_tlist_remove (&w->tasks, task);
    w->inflight--;
    self->segs[w->seg].inflight--;
    task->state = S_HELD;
    task->worker = NULL;
    return task;
}

//  Check a RESULT's tensors before the task keeps them: every tensor a
//  later segment or the client will read must hold the task's rows along
//  dimension 0 (PROTOCOL.md 7.2: a task's tensors stack the rows of its
//  entries), since the next TASK, the aggregator and the direct reply all
//  cut and stack rows there. A tensor without that axis (a weight a plan
//  cut turned into a segment output, say) is named in why. 0 or -1.
static int
s_result_check (const zi_broker_t *self, const s_task_t *task, const s_worker_t *w,
                const zi_msg_t *msg, char *why, size_t len)
{
    uint64_t rows = 0;
    for (size_t i = 0; i < task->nreqs; i++) {
        rows += task->reqs[i].count;
    }
    for (size_t k = 0; k < zi_msg_tensor_count (msg); k++) {
        const char *name = zi_msg_tensor_name (msg, k);
        const zi_tensor_t *t = zi_msg_tensor (msg, k);
        if (!s_needed_from (self, task->seg + 1, name)) {
            continue; //  nobody reads it: pruned right away
        }
        if (t->rank >= 1 && t->ne[0] >= 0 && (uint64_t)t->ne[0] == rows) {
            continue;
        }
        char shape[160];
        zi_tensor_shape_str (t, shape, sizeof shape);
        snprintf (why, len,
                  "segment %" PRIu32 " (replica %s) returned tensor '%s' as %s%s for task %" PRIu64
                  ", which holds %" PRIu64 " rows: a tensor passed on needs those rows "
                  "along dimension 0 (%s)",
                  task->seg, w->name ? w->name : "?", name, zi_dtype_name (t->dtype), shape,
                  task->tid, rows,
                  t->rank < 1 ? "it has no batch axis"
                              : "its dimension 0 is not the batch; a weight cut into a "
                                "segment input?");
        return -1;
    }
    return 0;
}

static void
s_worker_result (zi_broker_t *self, s_worker_t *w, zi_msg_t **msg_p)
{
    zi_msg_t *msg = *msg_p;
    s_task_t *task = s_worker_take (self, w, zi_msg_id (msg));
    if (!task) {
        self->task.results_dropped++;
        zi_log_debug ("BROKER-RESULT-DROPPED",
                      "RESULT for task %" PRIu64 " from %s: not outstanding "
                      "there (duplicate or late)",
                      zi_msg_id (msg), w->name);
        zi_msg_destroy (msg_p);
        return;
    }
    if (zi_msg_seg (msg) != task->seg) {
        zi_log_warn ("BROKER-RESULT-SEGMENT",
                     "RESULT for task %" PRIu64 " from %s says segment %" PRIu32
                     ", it ran segment %" PRIu32,
                     task->tid, w->name, zi_msg_seg (msg), task->seg);
    }
    s_rstats_latency (w->stats, s_now_us () - task->sent_us);
    self->segs[w->seg].done++;
    char why[ZI_MSG_MAX_REASON];
    if (task->live > 0 && s_result_check (self, task, w, msg, why, sizeof why)) {
        //  A worker bug (or a plan cut where it should not be): the
        //  requests fail with the reason, the bad bytes go nowhere.
        if (w->stats) {
            w->stats->errors++;
        }
        zi_log_warn ("BROKER-RESULT-BAD", "%s", why);
        s_task_fail (self, task, ZI_CODE_INTERNAL, why);
        s_task_destroy (self, &task);
        zi_msg_destroy (msg_p);
        return;
    }
    if (task->live == 0 || s_task_bag_add (task, msg_p)) {
        s_task_destroy (self, &task);
        zi_msg_destroy (msg_p);
        return;
    }
    task->seg++;
    task->attempt = 0;
    s_task_prune (self, task);
    s_task_advance (self, task);
}

static void
s_worker_error (zi_broker_t *self, s_worker_t *w, zi_msg_t *msg)
{
    s_task_t *task
        = zi_msg_has (msg, "id") ? s_worker_take (self, w, zi_msg_id (msg)) : NULL;
    if (!task) {
        self->task.results_dropped++;
        char summary[256];
        zi_log_warn ("BROKER-WORKER-ERROR", "from %s, for no task of its: %s", w->name,
                     zi_msg_summary (msg, summary, sizeof summary));
        return;
    }
    if (w->stats) {
        w->stats->errors++;
    }
    zi_log_info ("BROKER-WORKER-ERROR",
                 "task %" PRIu64 " failed at %s (segment %" PRIu32 "): %d %s", task->tid,
                 w->name, task->seg, zi_msg_code (msg), zi_msg_reason (msg));
    s_task_fail (self, task, zi_msg_code (msg), zi_msg_reason (msg));
    s_task_destroy (self, &task);
}

static void
s_handle_work (zi_broker_t *self)
{
    zsock_t *sock = self->sock[ZI_PLAN_EP_WORK];
    for (int n = 0; n < S_BATCH; n++) {
        zmsg_t *envelope = NULL;
        zi_msg_t *msg = NULL;
        char err[ZI_MSG_MAX_REASON];
        uint8_t id[ZI_MSG_MAX_ROUTING_ID];
        size_t idlen = 0;
        bool delimited = false;
        if (self->shm) {
            zi_shm_accept_begin (true);     //  references held by this broker
        }
        int rc = zi_msg_recv_routed (sock, id, &idlen, &delimited, &msg, err, sizeof err);
        zi_shm_accept_end ();
        if (rc == ZI_ERR_IO && idlen == 0) {
            break;
        }
        char keybuf[S_KEY_MAX];
        s_hex_into (id, idlen, keybuf);
        char *key = idlen ? keybuf : NULL;
        s_worker_t *w = key ? (s_worker_t *)zhashx_lookup (self->workers, key) : NULL;
        zi_cmd_t cmd = rc ? (zi_cmd_t)0 : zi_msg_cmd (msg);
        bool hot = w
                   && (cmd == ZI_CMD_RESULT || cmd == ZI_CMD_HEARTBEAT || cmd == ZI_CMD_ERROR);
        if (!hot && idlen) {
            envelope = s_envelope_new (id, idlen, delimited);
        }
        if (rc || !key) {
            s_drop (self, ZI_PLAN_EP_WORK, "BROKER-BAD-MESSAGE", "from %s: %s",
                    w ? w->name : "an unknown peer", err);
            if (envelope && rc) {
                s_send_error (self, ZI_PLAN_EP_WORK, envelope, false, 0,
                              zi_code_from_err (rc), "%s", err);
            }
            goto next;
        }
        if (cmd == ZI_CMD_READY) {
            if (envelope) { //  else out of memory: it says READY again
                s_worker_ready (self, w, key, &envelope, msg);
            }
            goto next;
        }
        if (!w) {
            //  Declared dead, or never said READY: it must start over.
            if (cmd != ZI_CMD_DISCONNECT) {
                if (cmd == ZI_CMD_RESULT) {
                    self->task.results_dropped++;
                }
                s_send_command (self, ZI_PLAN_EP_WORK, envelope, ZI_CMD_DISCONNECT,
                                "unknown worker: send READY first");
            }
            else {
                s_drop (self, ZI_PLAN_EP_WORK, "BROKER-UNEXPECTED",
                        "DISCONNECT from a worker it does not know");
            }
            goto next;
        }
        w->last_recv = s_now_ms ();
        switch (cmd) {
        case ZI_CMD_RESULT:
            s_worker_result (self, w, &msg);
            break;
        case ZI_CMD_ERROR:
            s_worker_error (self, w, msg);
            break;
        case ZI_CMD_HEARTBEAT:
            break;
        case ZI_CMD_DISCONNECT:
            zi_log_info ("BROKER-WORKER-GONE",
                         "worker %s (segment %" PRIu32 ") disconnected: %s;"
                         " %zu tasks re-queued",
                         w->name, w->seg, zi_msg_reason (msg) ? zi_msg_reason (msg) : "-",
                         w->tasks.size);
            s_worker_remove (self, w, "disconnected");
            break;
        default:
            s_drop (self, ZI_PLAN_EP_WORK, "BROKER-UNEXPECTED", "dropped a %s from %s",
                    zi_cmd_name (cmd), w->name);
            s_send_error (self, ZI_PLAN_EP_WORK, envelope, false, 0, ZI_CODE_BAD_REQUEST,
                          "%s is not accepted on work", zi_cmd_name (cmd));
        }
    next:
        zmsg_destroy (&envelope);
        zi_msg_destroy (&msg);
    }
}

//  ---------------------------------------------------------------------
//  Aggregators

static s_agg_t *
s_agg_find (zi_broker_t *self, const char *key, uint64_t serial)
{
    for (s_agg_t *agg = (s_agg_t *)zlistx_first (self->aggs); agg;
         agg = (s_agg_t *)zlistx_next (self->aggs)) {
        if ((key && strcmp (agg->key, key) == 0) || (serial && agg->serial == serial)) {
            return agg;
        }
    }
    return NULL;
}

static s_agg_t *
s_agg_find_name (zi_broker_t *self, const char *name)
{
    for (s_agg_t *agg = (s_agg_t *)zlistx_first (self->aggs); agg;
         agg = (s_agg_t *)zlistx_next (self->aggs)) {
        if (strcmp (agg->name, name) == 0) {
            return agg;
        }
    }
    return NULL;
}

//  Remove an aggregator; the tasks it holds wait for another one, and
//  their requests will meet wherever the hash now sends them.
static void
s_agg_remove (zi_broker_t *self, s_agg_t *agg)
{
    s_task_t *task;
    while ((task = agg->tasks.tail)) {
        s_tlist_remove (&agg->tasks, task);
        for (size_t i = 0; i < task->nreqs; i++) {
            s_request_t *req = s_request_find (self, task->reqs[i].id);
            if (req && req->agg_serial == agg->serial) {
                req->agg_serial = 0;
            }
        }
        task->agg = NULL;
        task->state = S_AGG_WAIT;
        s_tlist_push (&self->agg_wait, task, true);
    }
    for (s_agg_t *it = (s_agg_t *)zlistx_first (self->aggs); it;
         it = (s_agg_t *)zlistx_next (self->aggs)) {
        if (it == agg) {
            zlistx_detach_cur (self->aggs);
            break;
        }
    }
    zmsg_destroy (&agg->envelope);
    free (agg->name);
    free (agg->key);
    free (agg);
    if (zlistx_size (self->aggs) == 0) {
        self->aggs_empty_since = s_now_ms ();
    }
}

static void
s_agg_hello (zi_broker_t *self, s_agg_t *agg, const char *key, zmsg_t **envelope_p,
             zi_msg_t *msg)
{
    const char *name = zi_msg_name (msg) ? zi_msg_name (msg) : key;
    double capacity = 0;
    if (zi_msg_has (msg, "cap") && zi_msg_capacity (msg) > 0) {
        capacity = zi_msg_capacity (msg);
    }
    const zi_plan_stage_t *stage = NULL;
    const zi_plan_replica_t *planned
        = zi_plan_find_replica (self->plan, name, NULL, &stage);
    if (capacity <= 0) {
        capacity = planned && planned->capacity > 0 ? planned->capacity : 1;
    }
    bool fresh = !agg;
    if (!agg) {
        if (zlistx_size (self->aggs) >= S_MAX_AGGS) {
            s_send_error (self, ZI_PLAN_EP_TO_AGGREGATE, *envelope_p, false, 0,
                          ZI_CODE_UNAVAILABLE, "too many aggregators (%d)", S_MAX_AGGS);
            return;
        }
        agg = (s_agg_t *)calloc (1, sizeof *agg);
        if (!agg || !(agg->key = strdup (key)) || !(agg->name = strdup (name))) {
            if (agg) {
                            free (agg->key);
                free (agg);
            }
            return;
        }
        agg->serial = ++self->next_agg;
        agg->envelope = *envelope_p;
        *envelope_p = NULL;
        zlistx_add_end (self->aggs, agg);
        self->aggs_empty_since = 0;
    }
    else if (strcmp (agg->name, name) != 0) {
        char *copy = strdup (name);
        if (copy) {
            free (agg->name);
            agg->name = copy;
        }
    }
    if (!fresh && zi_msg_cmd (msg) == ZI_CMD_READY && agg->tasks.size) {
        //  It (re)started: the tasks it held are gone with the old process.
        //  They go to it again (their requests stay with it).
        zi_log_info ("BROKER-AGG-RESTARTED",
                     "aggregator %s said READY again: %zu tasks sent again", agg->name,
                     agg->tasks.size);
        s_task_t *task;
        while ((task = agg->tasks.tail)) {
            s_tlist_remove (&agg->tasks, task);
            task->agg = NULL;
            task->state = S_AGG_WAIT;
            s_tlist_push (&self->agg_wait, task, true);
        }
    }
    bool changed = agg->capacity != capacity;
    agg->capacity = capacity;
    agg->last_recv = s_now_ms ();
    if (fresh || changed || zi_msg_cmd (msg) == ZI_CMD_READY) {
        zi_log_info ("BROKER-AGG-READY", "aggregator %s: capacity %g (%zu aggregators)",
                     agg->name, agg->capacity, zlistx_size (self->aggs));
    }
}

static void
s_handle_aggregate (zi_broker_t *self)
{
    zi_plan_ep_t ep = ZI_PLAN_EP_TO_AGGREGATE;
    for (int n = 0; n < S_BATCH; n++) {
        zmsg_t *envelope = NULL;
        zi_msg_t *msg = NULL;
        char err[ZI_MSG_MAX_REASON];
        int rc = zi_msg_recv_from (self->sock[ep], &envelope, &msg, err, sizeof err);
        if (rc == ZI_ERR_IO && !envelope) {
            break;
        }
        char *key = s_routing_hex (envelope);
        s_agg_t *agg = key ? s_agg_find (self, key, 0) : NULL;
        if (rc || !key) {
            s_drop (self, ep, "BROKER-BAD-MESSAGE", "%s", err);
            if (envelope && rc) {
                s_send_error (self, ep, envelope, false, 0, zi_code_from_err (rc), "%s",
                              err);
            }
            goto next;
        }
        if (agg) {
            agg->last_recv = s_now_ms ();
            agg->beats += zi_msg_cmd (msg) == ZI_CMD_HEARTBEAT;
        }
        switch (zi_msg_cmd (msg)) {
        case ZI_CMD_READY:
        case ZI_CMD_HEARTBEAT:
            if (self->draining) {
                s_send_command (self, ep, envelope, ZI_CMD_DISCONNECT,
                                "broker is shutting down");
            }
            else {
                s_agg_hello (self, agg, key, &envelope, msg);
            }
            break;
        case ZI_CMD_DISCONNECT:
            if (agg) {
                zi_log_info ("BROKER-AGG-GONE",
                             "aggregator %s disconnected; %zu tasks move", agg->name,
                             agg->tasks.size);
                s_agg_remove (self, agg);
            }
            else {
                s_drop (self, ep, "BROKER-UNEXPECTED",
                        "DISCONNECT from an aggregator it does not know");
            }
            break;
        case ZI_CMD_ERROR: {
            char summary[256];
            s_drop (self, ep, "BROKER-AGG-ERROR", "from %s: %s",
                    agg ? agg->name : "an unknown aggregator",
                    zi_msg_summary (msg, summary, sizeof summary));
            break;
        }
        default:
            s_drop (self, ep, "BROKER-UNEXPECTED", "dropped a %s",
                    zi_cmd_name (zi_msg_cmd (msg)));
            s_send_error (self, ep, envelope, false, 0, ZI_CODE_BAD_REQUEST,
                          "%s is not accepted on to_aggregate",
                          zi_cmd_name (zi_msg_cmd (msg)));
        }
    next:
        free (key);
        zmsg_destroy (&envelope);
        zi_msg_destroy (&msg);
    }
}

//  The aggregator for a task: the one its first request already uses while
//  that one lives, else the rendezvous choice among the live ones.
static s_agg_t *
s_agg_for (zi_broker_t *self, const s_task_t *task)
{
    size_t n = zlistx_size (self->aggs);
    if (n == 0) {
        return NULL;
    }
    uint64_t rid = task->reqs[0].id;
    s_request_t *req = s_request_find (self, rid);
    if (req && req->agg_serial) {
        s_agg_t *agg = s_agg_find (self, NULL, req->agg_serial);
        if (agg) {
            return agg;
        }
    }
    s_agg_t *best = NULL;
    double best_score = 0;
    for (s_agg_t *agg = (s_agg_t *)zlistx_first (self->aggs); agg;
         agg = (s_agg_t *)zlistx_next (self->aggs)) {
        double score = zi_sched_hrw_score (rid, agg->name, agg->capacity);
        if (!best || score > best_score) {
            best = agg;
            best_score = score;
        }
    }
    if (req && best) {
        req->agg_serial = best->serial;
    }
    return best;
}

static void
s_dispatch_aggs (zi_broker_t *self)
{
    s_task_t *task;
    while ((task = self->agg_wait.head)) {
        s_agg_t *agg = s_agg_for (self, task);
        if (!agg) {
            break; //  tasks wait; their deadlines still run
        }
        s_tlist_remove (&self->agg_wait, task);
        task->state = S_HELD;
        char err[ZI_MSG_MAX_REASON];
        zi_msg_t *msg = s_task_msg (self, task, (uint32_t)self->nsegs, self->out_names,
                                    self->nout, err, sizeof err);
        if (!msg) {
            zi_log_error ("BROKER-TASK-FAILED", "%s", err);
            s_task_fail (self, task, ZI_CODE_INTERNAL, err);
            s_task_destroy (self, &task);
            continue;
        }
        s_send_to (&msg, self->sock[ZI_PLAN_EP_TO_AGGREGATE], agg->envelope);
        self->stage[S_STAGE_AGG].sent++;
        agg->sent++;
        agg->last_send = s_now_ms ();
        task->state = S_AGG_SENT;
        task->agg = agg;
        s_tlist_push (&agg->tasks, task, false);
    }
}

//  ---------------------------------------------------------------------
//  Results

static void
s_handle_results (zi_broker_t *self)
{
    zi_plan_ep_t ep = ZI_PLAN_EP_RESULTS;
    for (int n = 0; n < S_BATCH; n++) {
        zi_msg_t *msg = NULL;
        char err[256];
        int rc = zi_msg_recv (self->sock[ep], &msg, err, sizeof err);
        if (rc == ZI_ERR_IO) {
            break;
        }
        if (rc) {
            s_drop (self, ep, "BROKER-DECODE-DROPPED", "%s", err);
            continue;
        }
        if (zi_msg_cmd (msg) == ZI_CMD_REPLY || zi_msg_cmd (msg) == ZI_CMD_ERROR) {
            self->stage[S_STAGE_AGG].received++;
        }
        s_request_t *req
            = zi_msg_has (msg, "id") ? s_request_find (self, zi_msg_id (msg)) : NULL;
        switch (zi_msg_cmd (msg)) {
        case ZI_CMD_REPLY: {
            if (!req) {
                self->task.replies_dropped++;
                break;
            }
            //  The frames move to the client as they came: no copy.
            zi_msg_t *reply = zi_msg_new (ZI_CMD_REPLY);
            if (!reply || zi_msg_move_tensors (reply, msg)) {
                zi_msg_destroy (&reply);
                s_request_fail (self, req, ZI_CODE_INTERNAL,
                                "broker cannot forward the reply");
                break;
            }
            s_request_answer (self, req, &reply);
            break;
        }
        case ZI_CMD_ERROR:
            if (!req) {
                self->task.replies_dropped++;
                break;
            }
            s_request_fail (self, req, zi_msg_code (msg), "%s", zi_msg_reason (msg));
            break;
        case ZI_CMD_HEARTBEAT: {
            s_agg_t *agg
                = zi_msg_name (msg) ? s_agg_find_name (self, zi_msg_name (msg)) : NULL;
            if (agg) {
                agg->last_recv = s_now_ms ();
                agg->beats++;
            }
            else {
                s_drop (self, ep, "BROKER-UNEXPECTED",
                        "HEARTBEAT from %s, not a live aggregator",
                        zi_msg_name (msg) ? zi_msg_name (msg) : "a peer without a name");
            }
            break;
        }
        default: {
            char summary[256];
            s_drop (self, ep, "BROKER-UNEXPECTED", "dropped %s",
                    zi_msg_summary (msg, summary, sizeof summary));
        }
        }
        zi_msg_destroy (&msg);
    }
}

//  No aggregate stage: answer each request of a coalesced task with its
//  rows of the model outputs.
static void
s_reply_direct (zi_broker_t *self, s_task_t *task)
{
    uint64_t offset = 0;
    for (size_t i = 0; i < task->nreqs; i++) {
        const zi_msg_req_t *e = &task->reqs[i];
        s_request_t *req = s_request_find (self, e->id);
        if (req && task->nmb != 1) {
            s_request_fail (self, req, ZI_CODE_INTERNAL,
                            "micro-batches need an aggregate stage to meet, "
                            "and the plan has none");
        }
        else if (req) {
            zi_msg_t *reply = zi_msg_new (ZI_CMD_REPLY);
            int rc = reply ? 0 : ZI_ERR_NOMEM;
            for (size_t k = 0; !rc && k < self->nout; k++) {
                zi_msg_t *holder = NULL;
                size_t at = 0;
                const zi_tensor_t *t
                    = s_task_tensor_at (task, self->out_names[k], &holder, &at);
                zi_tensor_t rows;
                rc = !t || t->rank < 1
                         ? ZI_ERR_NOTFOUND
                         : zi_tensor_slice_rows (t, (int64_t)offset, e->count, &rows);
                if (!rc && offset == 0 && (int64_t)e->count == t->ne[0]) {
                    //  All the rows are this request's: the reply shares
                    //  the RESULT's bytes (no copy).
                    rc = zi_msg_add_tensor_ref (reply, self->out_names[k], holder, at);
                }
                else if (!rc) {
                    rc = zi_msg_add_tensor_copy (reply, self->out_names[k], &rows);
                    self->copied_bytes += rows.nbytes;
                }
            }
            if (rc) {
                zi_msg_destroy (&reply);
                s_request_fail (self, req, ZI_CODE_INTERNAL,
                                "the last segment's outputs do not hold rows "
                                "[%" PRIu64 ", +%" PRIu32 ") of this request: %s",
                                offset, e->count, zi_strerror (rc));
            }
            else {
                s_request_answer (self, req, &reply);
            }
        }
        offset += e->count;
    }
    s_task_destroy (self, &task);
}

//  A held task finished a segment: queue it for the next one, or hand it
//  on once past the last.
static void
s_task_advance (zi_broker_t *self, s_task_t *task)
{
    if (task->seg < self->nsegs) {
        s_task_queue (self, task, false);
    }
    else if (self->has_agg && !(self->skip_agg && task->nmb == 1)) {
        task->state = S_AGG_WAIT;
        s_tlist_push (&self->agg_wait, task, false);
    }
    else {
        if (self->has_agg) {
            self->task.skipped_aggregate++;
        }
        s_reply_direct (self, task);
    }
}

//  ---------------------------------------------------------------------
//  Dispatch

static void
s_dispatch_segment (zi_broker_t *self, uint32_t s)
{
    s_segment_t *seg = &self->segs[s];
    const zi_plan_segment_t *ps = &self->plan->segments[s];
    while (seg->queued > 0) {
        int slot = zi_sched_sel_next (seg->sel);
        if (slot < 0 || (size_t)slot >= seg->nslots || !seg->slots[slot]) {
            break;
        }
        s_worker_t *w = seg->slots[slot];
        if (w->inflight >= w->credit) {
            break; //  strict shares: wait for this one
        }
        uint32_t ready = 0;
        for (size_t c = 0; c < self->nclasses; c++) {
            if (seg->queue[c].size) {
                ready |= 1u << c;
            }
        }
        int c = zi_sched_prio_pick (seg->prio, ready);
        if (c < 0) {
            break;
        }
        s_task_t *task = seg->queue[c].head;
        s_tlist_remove (&seg->queue[c], task);
        seg->queued--;
        task->state = S_HELD;
        if (task->live == 0) {
            s_task_destroy (self, &task);
            continue;
        }
        char err[ZI_MSG_MAX_REASON];
        zi_msg_t *msg = s_task_msg (self, task, s, (const char *const *)ps->inputs,
                                    ps->n_inputs, err, sizeof err);
        if (!msg) {
            zi_log_error ("BROKER-TASK-FAILED", "%s", err);
            s_task_fail (self, task, ZI_CODE_INTERNAL, err);
            s_task_destroy (self, &task);
            continue;
        }
        if (s_send_to (&msg, self->sock[ZI_PLAN_EP_WORK], w->envelope)) {
            //  A ROUTER only refuses what it can never send.
            snprintf (err, sizeof err, "cannot send task %" PRIu64 " to %s: %s",
                      task->tid, w->name, zmq_strerror (errno));
            zi_log_error ("BROKER-TASK-FAILED", "%s", err);
            s_task_fail (self, task, ZI_CODE_INTERNAL, err);
            s_task_destroy (self, &task);
            continue;
        }
        zi_sched_sel_commit (seg->sel, slot);
        task->state = S_INFLIGHT;
        task->worker = w;
        s_tlist_push (&w->tasks, task, false);
        task->sent_us = s_now_us ();
        w->inflight++;
        w->last_send = task->sent_us / 1000;
        seg->inflight++;
        if (w->stats) {
            w->stats->assigned++;
        }
    }
}

static void
s_dispatch (zi_broker_t *self)
{
    if (zlistx_size (self->inject)) {
        s_inject_pending (self);
    }
    for (size_t s = 0; s < self->nsegs; s++) {
        if (self->segs[s].queued) {
            s_dispatch_segment (self, (uint32_t)s);
        }
    }
    if (self->agg_wait.size) {
        s_dispatch_aggs (self);
    }
    s_nudge_partition (self);
}

//  ---------------------------------------------------------------------
//  Timers

static void
s_tick_peers (zi_broker_t *self, int64_t now)
{
    int64_t limit = self->interval * self->liveness;
    //  Collect first: removing entries while walking a zhashx is unsafe.
    size_t n = zhashx_size (self->workers);
    s_worker_t **dead = n ? (s_worker_t **)calloc (n, sizeof *dead) : NULL;
    size_t ndead = 0;
    for (s_worker_t *w = (s_worker_t *)zhashx_first (self->workers); w;
         w = (s_worker_t *)zhashx_next (self->workers)) {
        if (now - w->last_recv > limit) {
            if (dead) {
                dead[ndead++] = w;
            }
        }
        else if (now - w->last_send >= self->interval) {
            s_send_command (self, ZI_PLAN_EP_WORK, w->envelope, ZI_CMD_HEARTBEAT, NULL);
            w->last_send = now;
        }
    }
    for (size_t i = 0; i < ndead; i++) {
        s_worker_t *w = dead[i];
        zi_log_warn ("BROKER-WORKER-EXPIRED",
                     "worker %s (segment %" PRIu32 ") silent for %" PRId64
                     " ms: %zu tasks re-queued",
                     w->name, w->seg, now - w->last_recv, w->tasks.size);
        s_worker_remove (self, w, "expired");
    }
    free (dead);
    s_agg_t *agg = (s_agg_t *)zlistx_first (self->aggs);
    while (agg) {
        if (now - agg->last_recv > limit) {
            zi_log_warn ("BROKER-AGG-EXPIRED",
                         "aggregator %s silent for %" PRId64 " ms: %zu tasks "
                         "move",
                         agg->name, now - agg->last_recv, agg->tasks.size);
            s_agg_remove (self, agg);
            agg = (s_agg_t *)zlistx_first (self->aggs); //  list changed
            continue;
        }
        if (now - agg->last_send >= self->interval) {
            s_send_command (self, ZI_PLAN_EP_TO_AGGREGATE, agg->envelope,
                            ZI_CMD_HEARTBEAT, NULL);
            agg->last_send = now;
        }
        agg = (s_agg_t *)zlistx_next (self->aggs);
    }
}

//  True (with the reason in why) when a request could not move since it
//  was admitted because what it waits for was never there: no live
//  replica of the segment its rows are queued for, no live aggregator,
//  or no first stage that would take it. Its deadline then ends it with
//  UNAVAILABLE rather than TIMEOUT.
static bool
s_request_blocked (zi_broker_t *self, const s_request_t *req, char *why, size_t len)
{
    if (!req->entry_done && req->entry_sent == 0 && req->entry_attempt == 0
        && req->inject_handle) {
        snprintf (why, len,
                  "the %s stage did not take the request (none connected, or all full)",
                  self->has_pre ? "preprocess" : "partition");
        return true;
    }
    for (size_t i = 0; i < req->ntids; i++) {
        const s_task_t *task
            = (const s_task_t *)s_map64_get (&self->tasks, req->tids[i]);
        if (!task) {
            continue;
        }
        if (task->state == S_QUEUED) {
            const s_segment_t *seg = &self->segs[task->seg];
            if (seg->empty_since && seg->empty_since <= req->admitted) {
                snprintf (why, len,
                          "no live replica of segment %" PRIu32
                          " since the request was admitted",
                          task->seg);
                return true;
            }
        }
        else if (task->state == S_AGG_WAIT && self->aggs_empty_since
                 && self->aggs_empty_since <= req->admitted) {
            snprintf (why, len, "no live aggregator since the request was admitted");
            return true;
        }
    }
    return false;
}

static void
s_tick_requests (zi_broker_t *self, int64_t now)
{
    //  What is due comes off the heap first (failing a request may forget
    //  others), at most S_TICK_BATCH per tick: the rest are found on the
    //  next one, 5 ms later.
    enum { S_TICK_BATCH = 512 };
    uint64_t rids[S_TICK_BATCH];
    size_t k = 0;
    while (self->timers.size && k < S_TICK_BATCH && self->timers.items[0]->due <= now) {
        s_request_t *req = self->timers.items[0];
        s_timer_remove (self, req);
        rids[k++] = req->rid;
    }
    for (size_t i = 0; i < k; i++) {
        s_request_t *req = s_request_find (self, rids[i]);
        if (!req) {
            continue;
        }
        bool lost = !req->entry_done && req->entry_sent && self->stage_timeout > 0
                    && now - req->entry_sent > self->stage_timeout;
        if (!(req->deadline_at && now >= req->deadline_at) && !lost) {
            s_timer_set (self, req); //  not due after all: wait again
            continue;
        }
        if (req->deadline_at && now >= req->deadline_at) {
            char why[256];
            if (s_request_blocked (self, req, why, sizeof why)) {
                s_request_fail (self, req, ZI_CODE_UNAVAILABLE,
                                "%s; deadline of %" PRIu32 " ms passed", why,
                                req->budget_ms);
            }
            else {
                s_request_fail (self, req, ZI_CODE_TIMEOUT,
                                "deadline of %" PRIu32 " ms passed (admitted %" PRId64
                                " ms ago)",
                                req->budget_ms, now - req->admitted);
            }
            continue;
        }
        //  Lost in the stages (a PUSH/PULL hop dropped it, or a stage
        //  process died): send it in again.
        if (req->entry_attempt + 1 >= (uint32_t)self->max_attempts) {
            s_request_fail (self, req, ZI_CODE_INTERNAL,
                            "the stages did not return the request after %" PRIu32
                            " attempts of %" PRId64 " ms",
                            req->entry_attempt + 1, self->stage_timeout);
            continue;
        }
        req->entry_attempt++;
        req->entry_sent = 0;
        s_timer_set (self, req);
        self->req.reinjected++;
        zi_log_info ("BROKER-REINJECT",
                     "request %" PRIu64 ": no rows back from the stages in %" PRId64
                     " ms, sending it again (attempt %" PRIu32 ")",
                     req->rid, self->stage_timeout, req->entry_attempt);
        if (!req->inject_handle) {
            req->inject_handle = zlistx_add_end (self->inject, req);
        }
    }
}

static void
s_tick (zi_broker_t *self, int64_t now)
{
    s_tick_peers (self, now);
    s_tick_requests (self, now);
    s_answers_expire (self, now);
    if (self->shm && now - self->shm_swept >= 10000) {
        //  Arenas of workers that died, once nothing here holds their blocks.
        self->shm_swept = now;
        int n = zi_shm_sweep ();
        if (n > 0) {
            zi_log_info ("BROKER-SHM-SWEPT", "%d shared-memory arena%s of exited workers "
                         "removed", n, n == 1 ? "" : "s");
        }
    }
}

//  ---------------------------------------------------------------------
//  STATS

static void
s_pk_str (msgpack_packer *pk, const char *s)
{
    s = s ? s : "";
    msgpack_pack_str_with_body (pk, s, strlen (s));
}

static void
s_pk_u64 (msgpack_packer *pk, const char *key, uint64_t value)
{
    s_pk_str (pk, key);
    msgpack_pack_uint64 (pk, value);
}

static void
s_pk_bool (msgpack_packer *pk, const char *key, bool value)
{
    s_pk_str (pk, key);
    if (value) {
        msgpack_pack_true (pk);
    }
    else {
        msgpack_pack_false (pk);
    }
}

static void
s_pk_f64 (msgpack_packer *pk, const char *key, double value)
{
    s_pk_str (pk, key);
    msgpack_pack_double (pk, value);
}

static void
s_pk_replica (msgpack_packer *pk, const char *name, double capacity, uint32_t credit,
              uint32_t inflight, bool live, const s_rstats_t *rs)
{
    uint32_t p50, p99;
    s_rstats_percentiles (rs, 0.50, 0.99, &p50, &p99);
    msgpack_pack_map (pk, 11);
    s_pk_str (pk, "name");
    s_pk_str (pk, name);
    s_pk_f64 (pk, "capacity", capacity);
    s_pk_u64 (pk, "credit", credit);
    s_pk_u64 (pk, "inflight", inflight);
    s_pk_u64 (pk, "tasks", rs ? rs->tasks : 0);
    s_pk_u64 (pk, "assigned", rs ? rs->assigned : 0);
    s_pk_u64 (pk, "errors", rs ? rs->errors : 0);
    s_pk_u64 (pk, "busy_ms", rs ? rs->busy_us / 1000 : 0);
    s_pk_u64 (pk, "p50_us", p50);
    s_pk_u64 (pk, "p99_us", p99);
    s_pk_bool (pk, "live", live);
}

static bool
s_worker_named (zi_broker_t *self, const char *name)
{
    for (s_worker_t *w = (s_worker_t *)zhashx_first (self->workers); w;
         w = (s_worker_t *)zhashx_next (self->workers)) {
        if (w->name && strcmp (w->name, name) == 0) {
            return true;
        }
    }
    return false;
}

static void
s_pk_segment (zi_broker_t *self, msgpack_packer *pk, size_t s)
{
    s_segment_t *seg = &self->segs[s];
    const zi_plan_segment_t *ps = &self->plan->segments[s];
    msgpack_pack_map (pk, 5);
    s_pk_u64 (pk, "index", s);
    s_pk_str (pk, "queued");
    msgpack_pack_array (pk, self->nclasses);
    for (size_t c = 0; c < self->nclasses; c++) {
        msgpack_pack_uint64 (pk, seg->queue[c].size);
    }
    s_pk_u64 (pk, "inflight", seg->inflight);
    s_pk_u64 (pk, "tasks", seg->done);
    //  Connected workers first, then the plan's replicas not connected.
    size_t n = 0;
    for (size_t i = 0; i < seg->nslots; i++) {
        n += seg->slots[i] != NULL;
    }
    bool *absent
        = ps->n_replicas ? (bool *)calloc (ps->n_replicas, sizeof *absent) : NULL;
    for (size_t i = 0; absent && i < ps->n_replicas; i++) {
        absent[i] = ps->replicas[i].name && !s_worker_named (self, ps->replicas[i].name);
        n += absent[i];
    }
    s_pk_str (pk, "replicas");
    msgpack_pack_array (pk, n);
    for (size_t i = 0; i < seg->nslots; i++) {
        s_worker_t *w = seg->slots[i];
        if (w) {
            s_pk_replica (pk, w->name ? w->name : w->key, w->capacity, w->credit,
                          w->inflight, true, w->stats);
        }
    }
    for (size_t i = 0; absent && i < ps->n_replicas; i++) {
        if (absent[i]) {
            const zi_plan_replica_t *r = &ps->replicas[i];
            s_pk_replica (pk, r->name, r->capacity, 0, 0, false,
                          (s_rstats_t *)zhashx_lookup (self->rstats, r->name));
        }
    }
    free (absent);
}

//  A stage's counters and its replicas: preprocess and partition from
//  their HEARTBEATs on the PUSH links (role >= 0), the aggregators from
//  the to_aggregate link (role < 0).
static void
s_pk_stage (zi_broker_t *self, msgpack_packer *pk, const char *name, int role,
            uint64_t sent, uint64_t received, uint64_t inflight)
{
    int64_t now = s_now_ms ();
    int64_t window = self->interval * self->liveness;
    size_t n = 0, live = 0;
    if (role >= 0) {
        for (size_t i = 0; i < self->nspeers; i++) {
            const s_stage_peer_t *p = &self->speers[i];
            if (p->role == role) {
                n++;
                live += p->last_recv && !p->gone && now - p->last_recv <= window;
            }
        }
    }
    else {
        n = live = zlistx_size (self->aggs);
    }
    s_pk_str (pk, name);
    msgpack_pack_map (pk, 5);
    s_pk_u64 (pk, "sent", sent);
    s_pk_u64 (pk, "received", received);
    s_pk_u64 (pk, "inflight", inflight);
    s_pk_u64 (pk, "live", live);
    s_pk_str (pk, "replicas");
    msgpack_pack_array (pk, n);
    if (role >= 0) {
        for (size_t i = 0; i < self->nspeers; i++) {
            const s_stage_peer_t *p = &self->speers[i];
            if (p->role != role) {
                continue;
            }
            msgpack_pack_map (pk, 4);
            s_pk_str (pk, "name");
            s_pk_str (pk, p->name);
            s_pk_bool (pk, "live",
                       p->last_recv && !p->gone && now - p->last_recv <= window);
            s_pk_u64 (pk, "beats", p->beats);
            //  ms since last heard; -1: never
            s_pk_str (pk, "last_ms");
            msgpack_pack_int64 (pk, p->last_recv ? now - p->last_recv : -1);
        }
        return;
    }
    for (s_agg_t *agg = (s_agg_t *)zlistx_first (self->aggs); agg;
         agg = (s_agg_t *)zlistx_next (self->aggs)) {
        msgpack_pack_map (pk, 4);
        s_pk_str (pk, "name");
        s_pk_str (pk, agg->name);
        s_pk_bool (pk, "live", true);
        s_pk_u64 (pk, "beats", agg->beats);
        s_pk_str (pk, "last_ms");
        msgpack_pack_int64 (pk, now - agg->last_recv);
    }
}

//  The broker's memory: resident set (KiB) and the bytes its allocator
//  has handed out and not got back (glibc; 0 elsewhere). The second
//  tells a leak from memory the allocator keeps for reuse.
static void
s_memory (uint64_t *rss_kb, uint64_t *heap_bytes)
{
    *rss_kb = 0;
    *heap_bytes = 0;
    FILE *f = fopen ("/proc/self/statm", "r");
    if (f) {
        unsigned long size = 0, resident = 0;
        if (fscanf (f, "%lu %lu", &size, &resident) == 2) {
            *rss_kb = (uint64_t)resident * (uint64_t)sysconf (_SC_PAGESIZE) / 1024;
        }
        fclose (f);
    }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
    struct mallinfo2 mi = mallinfo2 ();
    *heap_bytes = (uint64_t)mi.uordblks + (uint64_t)mi.hblkhd;
#endif
}

static void
s_pack_stats (zi_broker_t *self, msgpack_packer *pk)
{
    int64_t now = s_now_ms ();
    size_t nerrors = 0;
    for (int c = 0; c < 1000; c++) {
        nerrors += self->errors[c] > 0;
    }
    size_t queued = 0, inflight = 0, at_agg = 0, waiting_rows = 0;
    for (size_t s = 0; s < self->nsegs; s++) {
        queued += self->segs[s].queued;
        inflight += self->segs[s].inflight;
    }
    for (s_agg_t *agg = (s_agg_t *)zlistx_first (self->aggs); agg;
         agg = (s_agg_t *)zlistx_next (self->aggs)) {
        at_agg += agg->tasks.size;
    }
    for (size_t i = 0; i < self->requests.cap; i++) {
        const s_request_t *req = (const s_request_t *)self->requests.slots[i].item;
        waiting_rows += req && !req->entry_done;
    }
    msgpack_pack_map (pk, 10);
    s_pk_u64 (pk, "uptime_ms", (uint64_t)(now - self->started));
    s_pk_bool (pk, "draining", self->draining);

    s_pk_str (pk, "requests");
    msgpack_pack_map (pk, 12);
    s_pk_u64 (pk, "admitted", self->req.admitted);
    s_pk_u64 (pk, "completed", self->req.completed);
    s_pk_u64 (pk, "failed", self->req.failed);
    s_pk_u64 (pk, "inflight", self->requests.size);
    s_pk_u64 (pk, "busy", self->req.busy);
    s_pk_u64 (pk, "timeout", self->req.timeout);
    s_pk_u64 (pk, "duplicates", self->req.duplicates);
    s_pk_u64 (pk, "reinjected", self->req.reinjected);
    s_pk_u64 (pk, "replayed", self->req.replayed);
    s_pk_u64 (pk, "answers_kept", self->answer_order.size);
    s_pk_u64 (pk, "answers_bytes", self->answer_bytes);
    s_pk_str (pk, "errors");
    msgpack_pack_map (pk, nerrors);
    for (int c = 0; c < 1000; c++) {
        if (self->errors[c]) {
            const char *name = zi_code_name (c);
            char buf[16];
            if (strcmp (name, "?") == 0) {
                snprintf (buf, sizeof buf, "%d", c);
                name = buf;
            }
            s_pk_u64 (pk, name, self->errors[c]);
        }
    }

    s_pk_str (pk, "tasks");
    msgpack_pack_map (pk, 13);
    s_pk_u64 (pk, "created", self->task.created);
    s_pk_u64 (pk, "queued", queued);
    s_pk_u64 (pk, "inflight", inflight);
    s_pk_u64 (pk, "waiting_aggregator", self->agg_wait.size);
    s_pk_u64 (pk, "at_aggregator", at_agg);
    s_pk_u64 (pk, "redispatched", self->task.redispatched);
    s_pk_u64 (pk, "results_dropped", self->task.results_dropped);
    s_pk_u64 (pk, "replies_dropped", self->task.replies_dropped);
    s_pk_u64 (pk, "stale", self->task.stale);
    s_pk_u64 (pk, "skipped_partition", self->task.skipped_partition);
    s_pk_u64 (pk, "skipped_aggregate", self->task.skipped_aggregate);
    uint64_t shm_refs = 0, shm_released = 0;
    zi_shm_counters (&shm_refs, &shm_released);
    s_pk_u64 (pk, "shm_refs", shm_refs);
    s_pk_u64 (pk, "shm_released", shm_released);

    s_pk_str (pk, "segments");
    msgpack_pack_array (pk, self->nsegs);
    for (size_t s = 0; s < self->nsegs; s++) {
        s_pk_segment (self, pk, s);
    }

    s_pk_str (pk, "stages");
    msgpack_pack_map (pk, 3);
    uint64_t pre_sent = self->stage[S_STAGE_PRE].sent;
    uint64_t pre_recv = self->stage[S_STAGE_PRE].received;
    s_pk_stage (self, pk, "preprocess", S_STAGE_PRE, pre_sent, pre_recv,
                pre_sent > pre_recv ? pre_sent - pre_recv : 0);
    s_pk_stage (self, pk, "partition", S_STAGE_PART, self->stage[S_STAGE_PART].sent,
                self->stage[S_STAGE_PART].received, waiting_rows);
    s_pk_stage (self, pk, "aggregate", -1, self->stage[S_STAGE_AGG].sent,
                self->stage[S_STAGE_AGG].received, at_agg);

    s_pk_str (pk, "aggregators");
    msgpack_pack_array (pk, zlistx_size (self->aggs));
    for (s_agg_t *agg = (s_agg_t *)zlistx_first (self->aggs); agg;
         agg = (s_agg_t *)zlistx_next (self->aggs)) {
        msgpack_pack_map (pk, 5);
        s_pk_str (pk, "name");
        s_pk_str (pk, agg->name);
        s_pk_f64 (pk, "capacity", agg->capacity);
        s_pk_u64 (pk, "tasks", agg->sent);
        s_pk_u64 (pk, "inflight", agg->tasks.size);
        s_pk_bool (pk, "live", true);
    }

    static const zi_plan_ep_t pulled[] = {
        ZI_PLAN_EP_FRONT, ZI_PLAN_EP_PREPROCESSED, ZI_PLAN_EP_INTAKE,
        ZI_PLAN_EP_WORK,  ZI_PLAN_EP_TO_AGGREGATE, ZI_PLAN_EP_RESULTS,
    };
    s_pk_str (pk, "dropped");
    msgpack_pack_map (pk, sizeof pulled / sizeof pulled[0]);
    for (size_t i = 0; i < sizeof pulled / sizeof pulled[0]; i++) {
        s_pk_u64 (pk, s_ep_name (pulled[i]), self->dropped[pulled[i]]);
    }
    s_pk_u64 (pk, "copied_bytes", self->copied_bytes);
    uint64_t rss_kb, heap_bytes;
    s_memory (&rss_kb, &heap_bytes);
    s_pk_str (pk, "memory");
    msgpack_pack_map (pk, 2);
    s_pk_u64 (pk, "rss_kb", rss_kb);
    s_pk_u64 (pk, "heap_bytes", heap_bytes);
}

static void
s_front_stats (zi_broker_t *self, zmsg_t *envelope, uint64_t id)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    s_pack_stats (self, &pk);
    zi_msg_t *reply = zi_msg_new (ZI_CMD_STATS_REPLY);
    int rc = reply ? zi_msg_set_stats (reply, sbuf.data, sbuf.size) : ZI_ERR_NOMEM;
    msgpack_sbuffer_destroy (&sbuf);
    if (rc) {
        zi_msg_destroy (&reply);
        s_send_error (self, ZI_PLAN_EP_FRONT, envelope, true, id, ZI_CODE_INTERNAL,
                      "cannot encode the statistics: %s", zi_strerror (rc));
        return;
    }
    zi_msg_set_id (reply, id);
    s_send_to (&reply, self->sock[ZI_PLAN_EP_FRONT], envelope);
}

//  ---------------------------------------------------------------------
//  Construction

static const zi_plan_tensor_t *
s_plan_input (const zi_plan_t *plan, const char *name)
{
    for (size_t i = 0; i < plan->model.n_inputs; i++) {
        if (plan->model.inputs[i].name
            && strcmp (plan->model.inputs[i].name, name) == 0) {
            return &plan->model.inputs[i];
        }
    }
    return NULL;
}

static int
s_setup_inputs (zi_broker_t *self, char *err, size_t errlen)
{
    const zi_plan_t *plan = self->plan;
    const zi_plan_stage_t *pre = zi_plan_find_stage (plan, ZI_PLAN_STAGE_PREPROCESS);
    //  A custom preprocess stage decides what clients send: let it judge.
    if (pre && pre->kind == ZI_PLAN_STAGE_CUSTOM) {
        return 0;
    }
    size_t n = pre && pre->n_tensors ? pre->n_tensors : plan->model.n_inputs;
    if (n == 0) {
        return 0;
    }
    self->expect = (const zi_plan_tensor_t **)calloc (n, sizeof *self->expect);
    if (!self->expect) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const zi_plan_tensor_t *t
            = pre && pre->n_tensors ? &pre->tensors[i].tensor : &plan->model.inputs[i];
        if (!t->name) {
            return zi_fail (err, errlen, ZI_ERR_INVALID,
                            "plan: an input tensor has no name");
        }
        //  The preprocess stage lists the tensors it transforms; the model
        //  inputs it passes through untouched are sent as they are.
        self->expect[self->nexpect++] = t;
    }
    if (pre && pre->n_tensors) {
        for (size_t i = 0; i < plan->model.n_inputs; i++) {
            const char *name = plan->model.inputs[i].name;
            bool listed = false;
            for (size_t k = 0; name && k < pre->n_tensors; k++) {
                listed |= strcmp (pre->tensors[k].tensor.name, name) == 0;
            }
            if (name && !listed) {
                const zi_plan_tensor_t **grown = (const zi_plan_tensor_t **)realloc (
                    self->expect, (self->nexpect + 1) * sizeof *grown);
                if (!grown) {
                    return zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
                }
                self->expect = grown;
                self->expect[self->nexpect++] = s_plan_input (plan, name);
            }
        }
    }
    self->check_shapes = !pre;
    return 0;
}

static int
s_setup_sockets (zi_broker_t *self, char *err, size_t errlen)
{
    static const int types[ZI_PLAN_EP_COUNT] = {
        [ZI_PLAN_EP_FRONT] = ZMQ_ROUTER,        [ZI_PLAN_EP_TO_PREPROCESS] = ZMQ_PUSH,
        [ZI_PLAN_EP_PREPROCESSED] = ZMQ_PULL,   [ZI_PLAN_EP_TO_PARTITION] = ZMQ_PUSH,
        [ZI_PLAN_EP_INTAKE] = ZMQ_PULL,         [ZI_PLAN_EP_WORK] = ZMQ_ROUTER,
        [ZI_PLAN_EP_TO_AGGREGATE] = ZMQ_ROUTER, [ZI_PLAN_EP_RESULTS] = ZMQ_PULL,
    };
    for (int ep = 0; ep < ZI_PLAN_EP_COUNT; ep++) {
        const char *bind = self->plan->broker.endpoints[ep].bind;
        if (!bind || !*bind) {
            return zi_fail (err, errlen, ZI_ERR_INVALID,
                            "plan: broker endpoint %s has no bind address",
                            s_ep_name ((zi_plan_ep_t)ep));
        }
        zsock_t *sock = zsock_new (types[ep]);
        if (!sock) {
            return zi_fail (err, errlen, ZI_ERR_NOMEM, "cannot create the %s socket",
                            s_ep_name ((zi_plan_ep_t)ep));
        }
        self->sock[ep] = sock;
        //  MAXMSGSIZE, ZMTP heartbeats, the handshake bound (zi_security.h).
        zi_security_socket (sock, self->plan, true);
        int hwm = ep == ZI_PLAN_EP_FRONT ? S_FRONT_HWM : S_HWM;
        zsock_set_sndhwm (sock, hwm);
        zsock_set_rcvhwm (sock, hwm);
        zsock_set_linger (sock, S_LINGER_MS);
        //  The loop never blocks on a socket: a full or unconnected PUSH
        //  says EAGAIN and the work waits in the broker's own queues.
        zsock_set_rcvtimeo (sock, 0);
        zsock_set_sndtimeo (sock, 0);
        if (types[ep] == ZMQ_ROUTER) {
            //  A restarted worker reconnects under its name at once, and a
            //  client (zi_client sets a stable routing id) that reconnects
            //  gets the answers of its requests on the new connection.
            zsock_set_router_handover (sock, 1);
        }
        if (self->security) {
            //  Every socket, the PUSH and PULL ones too: one that admitted
            //  the NULL mechanism would let anybody feed the stages.
            zi_security_server_apply (self->security, sock);
        }
        if (zsock_bind (sock, "%s", bind) < 0) {
            return zi_fail (err, errlen, ZI_ERR_IO, "cannot bind %s to %s: %s",
                            s_ep_name ((zi_plan_ep_t)ep), bind, zmq_strerror (errno));
        }
    }
    return 0;
}

zi_broker_t *
zi_broker_new (const zi_plan_t *plan, char *err, size_t errlen)
{
    if (!plan) {
        zi_fail (err, errlen, ZI_ERR_INVALID, "no plan");
        return NULL;
    }
    if (plan->n_segments == 0) {
        zi_fail (err, errlen, ZI_ERR_INVALID, "plan: no segments to serve");
        return NULL;
    }
    zi_broker_t *self = (zi_broker_t *)calloc (1, sizeof *self);
    if (!self) {
        zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        return NULL;
    }
    self->plan = plan;
    const zi_plan_broker_t *b = &plan->broker;
    self->interval = b->heartbeat_interval_ms > 0 ? b->heartbeat_interval_ms
                                                  : ZI_PLAN_DEFAULT_HEARTBEAT_MS;
    self->liveness
        = b->heartbeat_liveness > 0 ? b->heartbeat_liveness : ZI_PLAN_DEFAULT_LIVENESS;
    self->queue_limit = b->queue_limit > 0 ? b->queue_limit : ZI_PLAN_DEFAULT_QUEUE_LIMIT;
    self->default_deadline = b->default_deadline_ms > 0 ? b->default_deadline_ms : 0;
    self->stage_timeout = b->stage_timeout_ms;
    self->max_attempts = b->max_attempts > 0 ? b->max_attempts : 1;
    self->has_pre = zi_plan_find_stage (plan, ZI_PLAN_STAGE_PREPROCESS) != NULL;
    self->has_part = zi_plan_find_stage (plan, ZI_PLAN_STAGE_PARTITION) != NULL;
    self->has_agg = zi_plan_find_stage (plan, ZI_PLAN_STAGE_AGGREGATE) != NULL;
    //  The built-in partition passes a request of at most micro_batch rows
    //  on unchanged, as one task of its own tensors, whenever it cannot
    //  coalesce it: when max_delay_us is 0, or when the request fills
    //  max_batch by itself. Such a request skips the stage (two socket
    //  crossings and a process wake-up fewer): the task is the one
    //  partition would have made. A custom partition always sees everything.
    const zi_plan_stage_t *part = zi_plan_find_stage (plan, ZI_PLAN_STAGE_PARTITION);
    if (b->skip_stages && part && part->kind == ZI_PLAN_STAGE_PARTITION
        && part->micro_batch > 0) {
        self->skip_part_max = part->micro_batch;
        self->skip_part_min = part->max_delay_us == 0 ? 1 : part->max_batch;
    }
    //  The built-in aggregate, with no post-processing op, turns a task of
    //  one micro-batch into its requests' REPLYs unchanged: the broker does
    //  that itself (s_reply_direct). Micro-batches still meet there.
    const zi_plan_stage_t *agg = zi_plan_find_stage (plan, ZI_PLAN_STAGE_AGGREGATE);
    self->skip_agg = b->skip_stages && agg && agg->kind == ZI_PLAN_STAGE_AGGREGATE;
    const char *work = b->endpoints[ZI_PLAN_EP_WORK].bind;
    self->shm = b->shm_bytes > 0 && work && strncmp (work, "ipc://", 6) == 0;
    //  zi_plan_check refuses client_shm without an ipc front.
    self->client_shm = b->client_shm;
    if (self->shm) {
        zi_shm_sweep ();
        self->shm_swept = s_now_ms ();
        char why[256];
        self->arena = zi_shm_arena_new ((size_t)b->shm_bytes, why, sizeof why);
        if (!self->arena) {
            zi_log_warn ("BROKER-SHM", "no shared-memory arena for inputs, they go inline: %s",
                         why);
        }
    }
    for (size_t i = 0; self->skip_agg && i < agg->n_tensors; i++) {
        self->skip_agg = agg->tensors[i].n_ops == 0;
    }

    //  Priority classes: a plan built in memory may have none (one class).
    const zi_plan_priorities_t *p = &plan->priorities;
    double weights[ZI_SCHED_MAX_CLASSES];
    self->nclasses = p->n_classes ? p->n_classes : 1;
    if (self->nclasses > ZI_SCHED_MAX_CLASSES) {
        zi_fail (err, errlen, ZI_ERR_INVALID,
                 "plan: %zu priority classes, at "
                 "most %d",
                 self->nclasses, ZI_SCHED_MAX_CLASSES);
        goto fail;
    }
    for (size_t c = 0; c < self->nclasses; c++) {
        weights[c] = p->n_classes ? p->classes[c].weight : 1;
        if (p->n_classes && p->default_class && p->classes[c].name
            && strcmp (p->classes[c].name, p->default_class) == 0) {
            self->default_prio = (int)c;
        }
    }
    bool strict = p->mode == ZI_PLAN_PRIORITY_STRICT;
    self->favour = zi_sched_prio_new (weights, self->nclasses, strict);
    if (!self->favour) {
        zi_fail (err, errlen, ZI_ERR_INVALID,
                 "plan: priority weights must be finite and > 0");
        goto fail;
    }
    self->nsegs = plan->n_segments;
    self->segs = (s_segment_t *)calloc (self->nsegs, sizeof *self->segs);
    if (!self->segs) {
        goto nomem;
    }
    for (size_t s = 0; s < self->nsegs; s++) {
        s_segment_t *seg = &self->segs[s];
        seg->sel = zi_sched_sel_new ();
        seg->prio = zi_sched_prio_new (weights, self->nclasses, strict);
        if (!seg->sel || !seg->prio) {
            goto nomem;
        }
    }
    self->nout = plan->model.n_outputs;
    self->out_names = (const char **)calloc (self->nout + 1, sizeof *self->out_names);
    if (!self->out_names) {
        goto nomem;
    }
    for (size_t i = 0; i < self->nout; i++) {
        self->out_names[i]
            = plan->model.outputs[i].name ? plan->model.outputs[i].name : "";
    }
    if (s_setup_inputs (self, err, errlen)) {
        goto fail;
    }
    if (s_map64_init (&self->requests, 1024) || s_map64_init (&self->tasks, 1024)) {
        goto nomem;
    }
    if (s_map64_init (&self->clients, 1024) || s_map64_init (&self->answers, 1024)) {
        goto nomem;
    }
    self->workers = zhashx_new ();
    self->rstats = zhashx_new ();
    self->aggs = zlistx_new ();
    self->inject = zlistx_new ();
    if (!self->workers
        || !self->rstats || !self->aggs || !self->inject) {
        goto nomem;
    }
    zhashx_set_destructor (self->rstats, s_rstats_destroy);
    //  The plan's preprocess and partition replicas, heard on PUSH links.
    for (size_t i = 0; i < plan->n_stages; i++) {
        const zi_plan_stage_t *st = &plan->stages[i];
        zi_plan_stage_kind_t role = zi_plan_stage_role (st);
        if (role != ZI_PLAN_STAGE_PREPROCESS && role != ZI_PLAN_STAGE_PARTITION) {
            continue;
        }
        for (size_t r = 0; r < st->n_replicas && self->nspeers < S_MAX_STAGE_PEERS; r++) {
            if (!st->replicas[r].name) {
                continue;
            }
            s_stage_peer_t *grown = (s_stage_peer_t *)realloc (
                self->speers, (self->nspeers + 1) * sizeof *grown);
            if (!grown) {
                goto nomem;
            }
            self->speers = grown;
            s_stage_peer_t *peer = &self->speers[self->nspeers];
            memset (peer, 0, sizeof *peer);
            peer->role = role == ZI_PLAN_STAGE_PREPROCESS ? S_STAGE_PRE : S_STAGE_PART;
            if (!(peer->name = strdup (st->replicas[r].name))) {
                goto nomem;
            }
            self->nspeers++;
        }
    }
    //  Every planned replica has a statistics record from the start.
    for (size_t s = 0; s < self->nsegs; s++) {
        const zi_plan_segment_t *ps = &plan->segments[s];
        for (size_t i = 0; i < ps->n_replicas; i++) {
            s_rstats_t *rs
                = ps->replicas[i].name ? s_rstats_get (self, ps->replicas[i].name) : NULL;
            if (rs) {
                rs->seg = (int64_t)s;
                rs->capacity = ps->replicas[i].capacity;
            }
        }
    }
    if (plan->security.curve
        && !(self->security = zi_security_server_new (plan, err, errlen))) {
        goto fail;
    }
    if (s_setup_sockets (self, err, errlen)) {
        goto fail;
    }
    self->started = self->last_tick = s_now_ms ();
    //  Nothing is live yet: a request that finds no replica (aggregator)
    //  before its deadline is UNAVAILABLE.
    for (size_t s = 0; s < self->nsegs; s++) {
        if (zi_sched_sel_size (self->segs[s].sel) == 0) {
            self->segs[s].empty_since = self->started;
        }
    }
    self->aggs_empty_since = self->started;
    self->next_rid = s_id_base ();
    self->next_tid = s_id_base ();
    //  Counted from the clock, so a restarted broker's "grant" is never
    //  below what partition saw from the previous one.
    self->part_tasks = s_id_base ();
    zi_log_info ("BROKER-START",
                 "serving %zu segments, %zu priority classes (%s), front %s, "
                 "queue limit %" PRId64 ", heartbeat %" PRId64 " ms x %" PRId64 "%s",
                 self->nsegs, self->nclasses, strict ? "strict" : "weighted",
                 plan->broker.endpoints[ZI_PLAN_EP_FRONT].bind, self->queue_limit,
                 self->interval, self->liveness,
                 self->security ? ", CURVE with an allow-list on every socket" : "");
    return self;
nomem:
    zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
fail:
    zi_broker_destroy (&self);
    return NULL;
}

void
zi_broker_destroy (zi_broker_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zi_broker_t *self = *self_p;
    //  Requests first (no answers: zi_broker_run drains), then every task
    //  wherever it is, then the peers and queues that pointed at them.
    for (size_t i = 0; i < self->requests.cap; i++) {
        s_request_t *req = (s_request_t *)self->requests.slots[i].item;
        s_request_free (&req);
    }
    s_map64_free (&self->requests);
    free (self->timers.items);
    for (size_t i = 0; i < self->tasks.cap; i++) {
        s_task_t *task = (s_task_t *)self->tasks.slots[i].item;
        if (task) {
            s_task_clear (task);
            free (task);
        }
    }
    s_map64_free (&self->tasks);
    if (self->workers) {
        for (s_worker_t *w = (s_worker_t *)zhashx_first (self->workers); w;
             w = (s_worker_t *)zhashx_next (self->workers)) {
                    zmsg_destroy (&w->envelope);
            free (w->name);
            free (w->key);
            free (w);
        }
        zhashx_destroy (&self->workers);
    }
    if (self->aggs) {
        for (s_agg_t *agg = (s_agg_t *)zlistx_first (self->aggs); agg;
             agg = (s_agg_t *)zlistx_next (self->aggs)) {
                    zmsg_destroy (&agg->envelope);
            free (agg->name);
            free (agg->key);
            free (agg);
        }
        zlistx_destroy (&self->aggs);
    }
    while (self->task_pool) {
        s_task_t *task = self->task_pool;
        self->task_pool = task->next;
        free (task);
    }
    s_map64_free (&self->clients);
    zhashx_destroy (&self->rstats);
    if (self->answers.slots) {
        while (self->answer_order.head) {
            s_answer_forget (self, self->answer_order.head);
        }
    }
    s_map64_free (&self->answers);
    for (size_t i = 0; i < self->nspeers; i++) {
        free (self->speers[i].name);
    }
    free (self->speers);
    zlistx_destroy (&self->inject);
    for (size_t s = 0; self->segs && s < self->nsegs; s++) {
        s_segment_t *seg = &self->segs[s];
        zi_sched_sel_destroy (&seg->sel);
        zi_sched_prio_destroy (&seg->prio);
        free (seg->slots);
    }
    free (self->segs);
    zi_sched_prio_destroy (&self->favour);
    free (self->expect);
    free (self->out_names);
    for (int ep = 0; ep < ZI_PLAN_EP_COUNT; ep++) {
        zsock_destroy (&self->sock[ep]);
    }
    zi_security_server_destroy (&self->security);
    zi_shm_arena_destroy (&self->arena);
    free (self);
    *self_p = NULL;
}

//  ---------------------------------------------------------------------
//  The loop

void
zi_broker_set_pipe (zi_broker_t *self, zsock_t *pipe)
{
    assert (self);
    self->pipe = pipe;
}

static void
s_begin_drain (zi_broker_t *self, const char *why)
{
    if (self->draining) {
        return;
    }
    self->draining = true;
    self->drain_until = s_now_ms () + ZI_BROKER_DRAIN_MS;
    zi_log_info ("BROKER-DRAIN",
                 "%s: no new requests; waiting up to %d ms for the %zu in "
                 "flight",
                 why, ZI_BROKER_DRAIN_MS, self->requests.size);
}

//  Answer what is left, and tell every peer the broker is gone.
static void
s_shutdown (zi_broker_t *self)
{
    size_t left = self->requests.size;
    if (left) {
        uint64_t *rids = (uint64_t *)malloc (left * sizeof *rids);
        size_t k = 0;
        for (size_t i = 0; rids && i < self->requests.cap; i++) {
            s_request_t *req = (s_request_t *)self->requests.slots[i].item;
            if (req) {
                rids[k++] = req->rid;
            }
        }
        for (size_t i = 0; i < k; i++) {
            s_request_t *req = s_request_find (self, rids[i]);
            if (req) {
                s_request_fail (self, req, ZI_CODE_UNAVAILABLE,
                                "broker stopped before the request finished");
            }
        }
        free (rids);
    }
    for (s_worker_t *w = (s_worker_t *)zhashx_first (self->workers); w;
         w = (s_worker_t *)zhashx_next (self->workers)) {
        s_send_command (self, ZI_PLAN_EP_WORK, w->envelope, ZI_CMD_DISCONNECT,
                        "broker shutting down");
    }
    for (s_agg_t *agg = (s_agg_t *)zlistx_first (self->aggs); agg;
         agg = (s_agg_t *)zlistx_next (self->aggs)) {
        s_send_command (self, ZI_PLAN_EP_TO_AGGREGATE, agg->envelope, ZI_CMD_DISCONNECT,
                        "broker shutting down");
    }
    zi_log_info ("BROKER-STOP",
                 "%" PRIu64 " requests admitted, %" PRIu64 " completed, %" PRIu64
                 " failed, %zu cut short",
                 self->req.admitted, self->req.completed, self->req.failed, left);
}

static void
s_handle_pipe (zi_broker_t *self)
{
    char *cmd = zstr_recv (self->pipe);
    if (!cmd) {
        return;
    }
    if (streq (cmd, "$TERM")) {
        self->stop = true;
        self->terminated = true;
    }
    else if (streq (cmd, "STOP")) {
        s_begin_drain (self, "asked to stop");
    }
    else {
        zi_log_warn ("BROKER-PIPE", "unknown actor command '%s'", cmd);
    }
    free (cmd);
}

int
zi_broker_run (zi_broker_t *self)
{
    assert (self);
    static const zi_plan_ep_t polled[] = {
        ZI_PLAN_EP_WORK,         ZI_PLAN_EP_RESULTS,      ZI_PLAN_EP_INTAKE,
        ZI_PLAN_EP_PREPROCESSED, ZI_PLAN_EP_TO_AGGREGATE, ZI_PLAN_EP_FRONT,
    };
    enum { NPOLLED = sizeof polled / sizeof polled[0] };
    zmq_pollitem_t items[NPOLLED + 2];
    size_t n = 0, relay = 0;
    for (; n < NPOLLED; n++) {
        items[n]
            = (zmq_pollitem_t){ zsock_resolve (self->sock[polled[n]]), 0, ZMQ_POLLIN, 0 };
        if (polled[n] == ZI_PLAN_EP_PREPROCESSED) {
            relay = n;
        }
    }
    //  Wakes the loop when to_partition has room again (see below).
    items[n++] = (zmq_pollitem_t){ zsock_resolve (self->sock[ZI_PLAN_EP_TO_PARTITION]), 0,
                                   0, 0 };
    size_t room = n - 1;
    if (self->pipe) {
        items[n++] = (zmq_pollitem_t){ zsock_resolve (self->pipe), 0, ZMQ_POLLIN, 0 };
    }
    int rc = 0;
    while (!self->stop) {
        if (zsys_interrupted) {
            s_begin_drain (self, "interrupted");
        }
        //  A relay that cannot forward must not be woken by what it cannot
        //  take: listen for room on to_partition instead.
        bool relay_blocked
            = self->has_part && !s_writable (self->sock[ZI_PLAN_EP_TO_PARTITION]);
        items[relay].events = relay_blocked ? 0 : ZMQ_POLLIN;
        items[room].events = relay_blocked ? ZMQ_POLLOUT : 0;
        if (zmq_poll (items, (int)n, S_POLL_MS) < 0 && errno != EINTR) {
            zi_log_error ("BROKER-POLL", "zmq_poll: %s", zmq_strerror (errno));
            rc = ZI_ERR_IO;
            break;
        }
        //  Replies and results first: they free credit and queue space
        //  for what the front brings in.
        for (size_t i = 0; i < NPOLLED; i++) {
            if (!(items[i].revents & ZMQ_POLLIN)) {
                continue;
            }
            switch (polled[i]) {
            case ZI_PLAN_EP_WORK:
                s_handle_work (self);
                break;
            case ZI_PLAN_EP_RESULTS:
                s_handle_results (self);
                break;
            case ZI_PLAN_EP_INTAKE:
                s_handle_intake (self, ZI_PLAN_EP_INTAKE);
                break;
            case ZI_PLAN_EP_PREPROCESSED:
                s_handle_preprocessed (self);
                break;
            case ZI_PLAN_EP_TO_AGGREGATE:
                s_handle_aggregate (self);
                break;
            case ZI_PLAN_EP_FRONT:
                s_handle_front (self);
                break;
            default:
                break;
            }
        }
        if (self->pipe && (items[n - 1].revents & ZMQ_POLLIN)) {
            s_handle_pipe (self);
        }
        int64_t now = s_now_ms ();
        if (now - self->last_tick >= S_TICK_MS) {
            self->last_tick = now;
            s_tick (self, now);
        }
        s_dispatch (self);
        if (self->draining
            && (self->requests.size == 0 || now >= self->drain_until)) {
            break;
        }
    }
    s_shutdown (self);
    return rc;
}

void
zi_broker_actor (zsock_t *pipe, void *args)
{
    char err[512];
    zi_broker_t *self = zi_broker_new ((const zi_plan_t *)args, err, sizeof err);
    zsock_signal (pipe, 0);
    if (self) {
        zi_broker_set_pipe (self, pipe);
        zi_broker_run (self);
    }
    else {
        zi_log_error ("BROKER-START-FAILED", "%s", err);
    }
    //  An actor ends only on "$TERM" (zactor_destroy waits for that).
    bool terminated = self && self->terminated;
    zi_broker_destroy (&self);
    while (!terminated) {
        char *cmd = zstr_recv (pipe);
        terminated = !cmd || streq (cmd, "$TERM");
        free (cmd);
    }
}
