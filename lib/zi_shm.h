/*  zi_shm.h - shared-memory arenas: tensors that cross the broker between
    two exec workers of one host without being copied through sockets.

    A tensor that segment s hands to segment s+1 (a cut tensor, often
    hundreds of KB per task) would cross two unix sockets: worker -> broker
    and broker -> next worker, each a copy into and out of the kernel. With
    an arena, the producing worker writes it once into a block of its own
    shared-memory file and the message carries only a reference; the broker
    keeps the reference (for a re-dispatch) and forwards it; the consuming
    worker reads the bytes in place.

        producer worker        broker                 consumer worker
        zi_shm_alloc ->        RESULT {"shm": ref}    TASK {"shm": ref}
        write, send ref  --->  holds the block  --->  reads in place
                               zi_shm_release when the task no longer
                               needs it (next segment's result in, or the
                               task gone)

    The arena: a file /dev/shm/zinfer-<pid>-<n> (mode 0600) made by the
    producer, mapped by the broker and the consumers. Blocks of 64-byte
    aligned data, each after a 64-byte header {magic, state, gen, size}.
    The producer takes blocks in ring order and reuses them, oldest first,
    once the broker has released them (state FREE); when the ring is full
    the producer sends the tensor inline as before. A reference names the
    arena, the block's offset and its generation, which changes each time
    the block is reused: a stale reference is refused, never read.

    Lifetime: the broker releases a block exactly when the last message it
    holds with the reference is destroyed (the bytes live in a zmq_msg_t
    whose free callback releases the block, so libzmq's reference counting
    covers copies of the message queued on sockets). A producer unlinks its
    arena when it exits; a crashed producer's arena stays readable for the
    blocks the broker still holds and is unlinked by the broker's sweep
    once its owner is dead and nothing references it.

    Who may send references: the exec workers, only for cut tensors (never
    a model output), only to the broker, and the broker to the workers; a
    process decodes references only inside zi_shm_accept_begin / _end (the
    broker around its `work` socket, a worker around its broker socket).
    With broker.client_shm (an opt-in plan field, ipc only) the broker also
    accepts references in a client's REQUEST on `front`, read-only: the
    client made the block in its own arena, the broker passes the
    reference to segment 0 and never releases it; the client frees it
    (zi_shm_free) once the request is answered. Everything else - stages,
    a reference arriving on another socket - gets plain bytes or an error.
*/
#ifndef ZI_SHM_H_INCLUDED
#define ZI_SHM_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//  Largest arena name: "zinfer-" + pid + "-" + counter.
#define ZI_SHM_NAME_MAX 48

typedef struct zi_shm_arena zi_shm_arena_t;

//  A reference as carried in a tensor descriptor: {"shm": [name, offset, gen]}.
typedef struct {
    char name[ZI_SHM_NAME_MAX];
    uint64_t offset;
    uint32_t gen;
} zi_shm_ref_t;

//  Create this process's arena of `bytes` (rounded up to pages, at least
//  1 MiB). NULL with err on failure. Destroying it unmaps and unlinks it.
zi_shm_arena_t *zi_shm_arena_new (size_t bytes, char *err, size_t errlen);
void zi_shm_arena_destroy (zi_shm_arena_t **self_p);
const char *zi_shm_arena_name (const zi_shm_arena_t *self);

//  A block of nbytes in the producer's arena: returns the data pointer and
//  fills *ref, or NULL when the arena has no room now (send inline).
void *zi_shm_alloc (zi_shm_arena_t *self, size_t nbytes, zi_shm_ref_t *ref);

//  The producer frees a block of its own arena that no one else releases
//  (a client's request inputs, once the request is answered). A reference
//  to another arena, or a stale one, is ignored.
void zi_shm_free (zi_shm_arena_t *self, const zi_shm_ref_t *ref);

//  Blocks in use and bytes they hold (reclaimed lazily by zi_shm_alloc).
size_t zi_shm_arena_used (zi_shm_arena_t *self, size_t *bytes);

//  Resolve a reference to nbytes: the data pointer, or NULL with err (bad
//  name, arena missing, out of bounds, stale generation, block not in use).
//  Maps the arena on first use (cached per process).
const void *zi_shm_resolve (const zi_shm_ref_t *ref, size_t nbytes, char *err,
                            size_t errlen);

//  Release a block (the broker, when its last holder is gone). A stale
//  reference (the block already reused) is ignored.
void zi_shm_release (const zi_shm_ref_t *ref);

//  A holder of a resolved block, for zmq_msg_init_data (data, n,
//  zi_shm_handle_free, handle): libzmq calls zi_shm_handle_free when the
//  last message sharing the bytes is gone, which releases the block when
//  own. NULL when the arena is not mapped (resolve first) or out of memory.
void *zi_shm_handle_new (const zi_shm_ref_t *ref, bool own);
void zi_shm_handle_free (void *data, void *hint);

//  Reference decoding is refused unless inside begin/end on this thread;
//  own = true: decoded references are released when their message goes
//  (the broker), false: only read (a consumer worker).
void zi_shm_accept_begin (bool own);
void zi_shm_accept_end (void);
bool zi_shm_accepting (bool *own);

//  Unlink arenas of processes that are gone and that this process does not
//  hold blocks of (the broker: at start and now and then). Returns how many.
int zi_shm_sweep (void);

//  Counters of this process: references decoded, blocks released.
void zi_shm_counters (uint64_t *resolved, uint64_t *released);

#ifdef __cplusplus
}
#endif

#endif
