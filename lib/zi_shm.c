/*  zi_shm.c - shared-memory arenas for cut tensors; see zi_shm.h. */
#include "zi_shm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zi_error.h"

#define S_ARENA_MAGIC 0x314152414d48535aull    //  "ZSHMARA1"
#define S_BLOCK_MAGIC 0x4b4c425au              //  "ZBLK"
#define S_START 4096                            //  blocks start after the header page
#define S_BLOCK_HEAD 64
#define S_ALIGN 64
#define S_MIN_BYTES ((size_t) 1 << 20)
#define S_MAX_BYTES ((size_t) 1 << 36)
#define S_MAX_MAPPED 256

enum { S_FREE = 0, S_BUSY = 1 };

typedef struct {
    uint64_t magic;
    uint64_t size;
    uint32_t owner;
} s_arena_head_t;

typedef struct {
    uint32_t magic;
    _Atomic uint32_t state;
    uint32_t gen;
    uint32_t pad;
    uint64_t nbytes;
    uint64_t total;
} s_block_t;

_Static_assert (sizeof (s_block_t) <= S_BLOCK_HEAD, "block header fits");

typedef struct {
    uint64_t offset, total;
} s_item_t;

struct zi_shm_arena {
    char name[ZI_SHM_NAME_MAX];
    uint8_t *base;
    size_t size;
    uint32_t gen;
    s_item_t *blocks;      //  every block made so far, by offset: a
    size_t cap, count;          //  block is free when its header says so
};

//  ---------------------------------------------------------------------
//  Names

static bool
s_name_ok (const char *name, long *pid)
{
    //  zinfer-<pid>-<n>: digits only after the prefix, nothing that could
    //  name another file.
    if (strncmp (name, "zinfer-", 7) != 0) {
        return false;
    }
    const char *p = name + 7;
    char *end;
    errno = 0;
    long v = strtol (p, &end, 10);
    if (end == p || *end != '-' || errno || v <= 0) {
        return false;
    }
    const char *q = end + 1;
    if (!*q) {
        return false;
    }
    for (const char *c = q; *c; c++) {
        if (*c < '0' || *c > '9') {
            return false;
        }
    }
    if (strlen (name) >= ZI_SHM_NAME_MAX) {
        return false;
    }
    if (pid) {
        *pid = v;
    }
    return true;
}

//  ---------------------------------------------------------------------
//  The producer's arena

zi_shm_arena_t *
zi_shm_arena_new (size_t bytes, char *err, size_t errlen)
{
    static _Atomic unsigned counter;
    size_t page = (size_t) sysconf (_SC_PAGESIZE);
    if (bytes < S_MIN_BYTES) {
        bytes = S_MIN_BYTES;
    }
    if (bytes > S_MAX_BYTES) {
        zi_fail (err, errlen, ZI_ERR_LIMIT, "shared-memory arena of %zu bytes: at most %zu",
                 bytes, S_MAX_BYTES);
        return NULL;
    }
    bytes = (bytes + page - 1) / page * page;
    zi_shm_arena_t *self = (zi_shm_arena_t *) calloc (1, sizeof *self);
    if (!self) {
        zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        return NULL;
    }
    snprintf (self->name, sizeof self->name, "zinfer-%ld-%u", (long) getpid (),
              atomic_fetch_add (&counter, 1));
    char path[ZI_SHM_NAME_MAX + 2];
    snprintf (path, sizeof path, "/%s", self->name);
    int fd = shm_open (path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        zi_fail (err, errlen, ZI_ERR_IO, "shared memory %s: %s", path, strerror (errno));
        free (self);
        return NULL;
    }
    if (ftruncate (fd, (off_t) bytes)) {
        zi_fail (err, errlen, ZI_ERR_IO, "shared memory %s: %zu bytes: %s", path, bytes,
                 strerror (errno));
        close (fd);
        shm_unlink (path);
        free (self);
        return NULL;
    }
    void *base = mmap (NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close (fd);
    if (base == MAP_FAILED) {
        zi_fail (err, errlen, ZI_ERR_IO, "shared memory %s: mmap: %s", path, strerror (errno));
        shm_unlink (path);
        free (self);
        return NULL;
    }
    self->base = (uint8_t *) base;
    self->size = bytes;
    //  Tensors under 16 KB go inline: never more blocks than this.
    self->cap = bytes / (16 << 10) + 16;
    self->blocks = (s_item_t *) calloc (self->cap, sizeof *self->blocks);
    if (!self->blocks) {
        zi_fail (err, errlen, ZI_ERR_NOMEM, "out of memory");
        zi_shm_arena_destroy (&self);
        return NULL;
    }
    s_arena_head_t *h = (s_arena_head_t *) self->base;
    h->size = bytes;
    h->owner = (uint32_t) getpid ();
    __atomic_store_n (&h->magic, S_ARENA_MAGIC, __ATOMIC_RELEASE);
    return self;
}

void
zi_shm_arena_destroy (zi_shm_arena_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zi_shm_arena_t *self = *self_p;
    if (self->base) {
        munmap (self->base, self->size);
        char path[ZI_SHM_NAME_MAX + 2];
        snprintf (path, sizeof path, "/%s", self->name);
        shm_unlink (path);
    }
    free (self->blocks);
    free (self);
    *self_p = NULL;
}

const char *
zi_shm_arena_name (const zi_shm_arena_t *self)
{
    return self->name;
}

static s_block_t *
s_block (uint8_t *base, uint64_t offset)
{
    return (s_block_t *) (base + offset);
}

static bool
s_is_free (zi_shm_arena_t *self, size_t i)
{
    s_block_t *b = s_block (self->base, self->blocks[i].offset);
    return atomic_load_explicit (&b->state, memory_order_acquire) == S_FREE;
}

//  Merge free block i with the free blocks right after it.
static void
s_coalesce (zi_shm_arena_t *self, size_t i)
{
    size_t j = i + 1;
    while (j < self->count && s_is_free (self, j)) {
        self->blocks[i].total += self->blocks[j].total;
        j++;
    }
    if (j > i + 1) {
        memmove (&self->blocks[i + 1], &self->blocks[j],
                 (self->count - j) * sizeof *self->blocks);
        self->count -= j - i - 1;
        s_block (self->base, self->blocks[i].offset)->total = self->blocks[i].total;
    }
}

//  First fit from the lowest address, so the blocks in use stay packed at
//  the start of the arena and the pages touched (resident in every process
//  that maps it) are about the bytes in flight, not the whole file. A
//  block the broker never releases (it was killed holding it) costs only
//  its own space: the others are reused around it.
void *
zi_shm_alloc (zi_shm_arena_t *self, size_t nbytes, zi_shm_ref_t *ref)
{
    if (!self || nbytes < (16 << 10) || nbytes > self->size) {
        return NULL;
    }
    uint64_t total = S_BLOCK_HEAD + (nbytes + S_ALIGN - 1) / S_ALIGN * S_ALIGN;
    size_t at = SIZE_MAX;
    for (size_t i = 0; i < self->count; i++) {
        if (!s_is_free (self, i)) {
            continue;
        }
        s_coalesce (self, i);
        if (self->blocks[i].total >= total) {
            at = i;
            break;
        }
    }
    if (at == SIZE_MAX) {
        //  A new block after the last one, if the file has room.
        uint64_t end = self->count ? self->blocks[self->count - 1].offset
                                         + self->blocks[self->count - 1].total
                                   : S_START;
        if (end + total > self->size || self->count == self->cap) {
            return NULL;
        }
        at = self->count++;
        self->blocks[at].offset = end;
        self->blocks[at].total = total;
    }
    else if (self->blocks[at].total - total >= S_BLOCK_HEAD + S_ALIGN
             && self->count < self->cap) {
        //  Split: the rest stays a free block of its own.
        memmove (&self->blocks[at + 2], &self->blocks[at + 1],
                 (self->count - at - 1) * sizeof *self->blocks);
        self->count++;
        self->blocks[at + 1].offset = self->blocks[at].offset + total;
        self->blocks[at + 1].total = self->blocks[at].total - total;
        self->blocks[at].total = total;
        s_block_t *rest = s_block (self->base, self->blocks[at + 1].offset);
        rest->magic = S_BLOCK_MAGIC;
        rest->gen = 0;
        rest->nbytes = 0;
        rest->total = self->blocks[at + 1].total;
        atomic_store_explicit (&rest->state, S_FREE, memory_order_release);
    }
    s_block_t *b = s_block (self->base, self->blocks[at].offset);
    b->magic = S_BLOCK_MAGIC;
    b->gen = ++self->gen;
    b->nbytes = nbytes;
    b->total = self->blocks[at].total;
    atomic_store_explicit (&b->state, S_BUSY, memory_order_release);
    snprintf (ref->name, sizeof ref->name, "%s", self->name);
    ref->offset = self->blocks[at].offset;
    ref->gen = b->gen;
    return self->base + self->blocks[at].offset + S_BLOCK_HEAD;
}

void
zi_shm_free (zi_shm_arena_t *self, const zi_shm_ref_t *ref)
{
    if (!self || strcmp (ref->name, self->name) != 0 || ref->offset < S_START
        || ref->offset % S_ALIGN || ref->offset > self->size - S_BLOCK_HEAD) {
        return;
    }
    s_block_t *b = s_block (self->base, ref->offset);
    uint32_t busy = S_BUSY;
    if (b->magic == S_BLOCK_MAGIC && b->gen == ref->gen) {
        atomic_compare_exchange_strong (&b->state, &busy, S_FREE);
    }
}

size_t
zi_shm_arena_used (zi_shm_arena_t *self, size_t *bytes)
{
    size_t n = 0, sum = 0;
    for (size_t i = 0; i < self->count; i++) {
        if (!s_is_free (self, i)) {
            n++;
            sum += self->blocks[i].total;
        }
    }
    if (bytes) {
        *bytes = sum;
    }
    return n;
}

//  ---------------------------------------------------------------------
//  Arenas mapped by a reader (the broker, a consumer worker)

typedef struct {
    char name[ZI_SHM_NAME_MAX];
    uint8_t *base;
    size_t size;
    long owner;
    _Atomic long holds;         //  live handles into it
} s_mapped_t;

static s_mapped_t s_maps[S_MAX_MAPPED];
static size_t s_nmaps;
static pthread_mutex_t s_maps_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t s_resolved, s_released;
static __thread int s_accept;       //  0: refuse, 1: read, 2: read and own

static s_mapped_t *
s_map (const char *name, char *err, size_t errlen)
{
    long owner;
    if (!s_name_ok (name, &owner)) {
        zi_fail (err, errlen, ZI_ERR_MALFORMED, "'%.48s' is not an arena name", name);
        return NULL;
    }
    pthread_mutex_lock (&s_maps_lock);
    for (size_t i = 0; i < s_nmaps; i++) {
        if (s_maps[i].base && strcmp (s_maps[i].name, name) == 0) {
            pthread_mutex_unlock (&s_maps_lock);
            return &s_maps[i];
        }
    }
    s_mapped_t *m = NULL;
    for (size_t i = 0; i < s_nmaps && !m; i++) {
        m = s_maps[i].base ? NULL : &s_maps[i];
    }
    if (!m && s_nmaps < S_MAX_MAPPED) {
        m = &s_maps[s_nmaps++];
    }
    //  A full table: unmap one nothing holds now (mapped again if named
    //  again), an arena whose owner is gone first. Clients come and go,
    //  each with its own arena (broker.client_shm).
    for (int pass = 0; pass < 2 && !m; pass++) {
        for (size_t i = 0; i < s_nmaps && !m; i++) {
            s_mapped_t *x = &s_maps[i];
            if (atomic_load (&x->holds) == 0
                && (pass == 1 || (kill ((pid_t) x->owner, 0) != 0 && errno == ESRCH))) {
                munmap (x->base, x->size);
                x->base = NULL;
                m = x;
            }
        }
    }
    if (!m) {
        pthread_mutex_unlock (&s_maps_lock);
        zi_fail (err, errlen, ZI_ERR_LIMIT, "arena %s: %d arenas mapped already", name,
                 S_MAX_MAPPED);
        return NULL;
    }
    char path[ZI_SHM_NAME_MAX + 2];
    snprintf (path, sizeof path, "/%s", name);
    int fd = shm_open (path, O_RDWR, 0);
    struct stat st;
    if (fd < 0 || fstat (fd, &st) || st.st_size < S_START
        || (uint64_t) st.st_size > S_MAX_BYTES) {
        int e = errno;
        if (fd >= 0) {
            close (fd);
        }
        pthread_mutex_unlock (&s_maps_lock);
        zi_fail (err, errlen, ZI_ERR_NOTFOUND, "arena %s: %s", name,
                 fd < 0 ? strerror (e) : "not an arena (size)");
        return NULL;
    }
    void *base = mmap (NULL, (size_t) st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close (fd);
    const s_arena_head_t *h = (const s_arena_head_t *) base;
    if (base == MAP_FAILED || __atomic_load_n (&h->magic, __ATOMIC_ACQUIRE) != S_ARENA_MAGIC
        || h->size != (uint64_t) st.st_size) {
        if (base != MAP_FAILED) {
            munmap (base, (size_t) st.st_size);
        }
        pthread_mutex_unlock (&s_maps_lock);
        zi_fail (err, errlen, ZI_ERR_MALFORMED, "arena %s: not an arena", name);
        return NULL;
    }
    snprintf (m->name, sizeof m->name, "%s", name);
    m->size = (size_t) st.st_size;
    m->owner = owner;
    atomic_store (&m->holds, 0);
    m->base = (uint8_t *) base;
    pthread_mutex_unlock (&s_maps_lock);
    return m;
}

//  The block a reference names, checked; NULL with err.
static s_block_t *
s_check (s_mapped_t *m, const zi_shm_ref_t *ref, size_t nbytes, char *err, size_t errlen)
{
    if (ref->offset < S_START || ref->offset % S_ALIGN || ref->offset > m->size
        || m->size - ref->offset < S_BLOCK_HEAD
        || m->size - ref->offset - S_BLOCK_HEAD < nbytes) {
        zi_fail (err, errlen, ZI_ERR_MALFORMED, "arena %s: block at %" PRIu64 " of %zu bytes "
                 "is outside the arena", ref->name, ref->offset, nbytes);
        return NULL;
    }
    s_block_t *b = s_block (m->base, ref->offset);
    if (b->magic != S_BLOCK_MAGIC
        || atomic_load_explicit (&b->state, memory_order_acquire) != S_BUSY
        || b->gen != ref->gen || b->nbytes != nbytes) {
        zi_fail (err, errlen, ZI_ERR_MALFORMED, "arena %s: block at %" PRIu64 " generation "
                 "%" PRIu32 " is not in use with %zu bytes (stale reference)", ref->name,
                 ref->offset, ref->gen, nbytes);
        return NULL;
    }
    return b;
}

const void *
zi_shm_resolve (const zi_shm_ref_t *ref, size_t nbytes, char *err, size_t errlen)
{
    s_mapped_t *m = s_map (ref->name, err, errlen);
    if (!m) {
        return NULL;
    }
    if (!s_check (m, ref, nbytes, err, errlen)) {
        return NULL;
    }
    atomic_fetch_add (&s_resolved, 1);
    return m->base + ref->offset + S_BLOCK_HEAD;
}

//  Free a block of mapping m (any thread: atomics only, no lookup).
static void
s_release_in (s_mapped_t *m, const zi_shm_ref_t *ref)
{
    if (ref->offset < S_START || ref->offset % S_ALIGN || ref->offset > m->size - S_BLOCK_HEAD) {
        return;
    }
    s_block_t *b = s_block (m->base, ref->offset);
    if (b->magic != S_BLOCK_MAGIC || b->gen != ref->gen) {
        return;     //  reused already: not ours to free
    }
    uint32_t busy = S_BUSY;
    if (atomic_compare_exchange_strong (&b->state, &busy, S_FREE)) {
        atomic_fetch_add (&s_released, 1);
    }
}

void
zi_shm_release (const zi_shm_ref_t *ref)
{
    char err[8];
    s_mapped_t *m = s_map (ref->name, err, sizeof err);
    if (m) {
        s_release_in (m, ref);
    }
}

//  ---------------------------------------------------------------------
//  Handles: the free callback of a zmq_msg_t whose bytes are a block

typedef struct {
    zi_shm_ref_t ref;
    bool own;
    s_mapped_t *map;
} s_handle_t;

void *
zi_shm_handle_new (const zi_shm_ref_t *ref, bool own)
{
    char err[8];
    s_mapped_t *m = s_map (ref->name, err, sizeof err);
    s_handle_t *h = m ? (s_handle_t *) malloc (sizeof *h) : NULL;
    if (!h) {
        return NULL;
    }
    h->ref = *ref;
    h->own = own;
    h->map = m;
    atomic_fetch_add (&m->holds, 1);
    return h;
}

void
zi_shm_handle_free (void *data, void *hint)
{
    (void) data;
    s_handle_t *h = (s_handle_t *) hint;
    if (!h) {
        return;
    }
    if (h->own) {
        //  Often on libzmq's I/O thread: the mapping the handle holds, not
        //  a lookup (which could open a file there).
        s_release_in (h->map, &h->ref);
    }
    atomic_fetch_sub (&h->map->holds, 1);
    free (h);
}

void
zi_shm_accept_begin (bool own)
{
    s_accept = own ? 2 : 1;
}

void
zi_shm_accept_end (void)
{
    s_accept = 0;
}

bool
zi_shm_accepting (bool *own)
{
    if (own) {
        *own = s_accept == 2;
    }
    return s_accept != 0;
}

int
zi_shm_sweep (void)
{
    DIR *d = opendir ("/dev/shm");
    if (!d) {
        return 0;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir (d))) {
        long pid;
        if (!s_name_ok (e->d_name, &pid) || pid == (long) getpid ()) {
            continue;
        }
        if (kill ((pid_t) pid, 0) == 0 || errno == EPERM) {
            continue;       //  its owner lives
        }
        bool held = false;
        pthread_mutex_lock (&s_maps_lock);
        for (size_t i = 0; i < s_nmaps; i++) {
            s_mapped_t *m = &s_maps[i];
            if (m->base && strcmp (m->name, e->d_name) == 0) {
                if (atomic_load (&m->holds) > 0) {
                    held = true;
                }
                else {
                    munmap (m->base, m->size);
                    m->base = NULL;
                }
            }
        }
        pthread_mutex_unlock (&s_maps_lock);
        if (!held) {
            char path[300];
            snprintf (path, sizeof path, "/%s", e->d_name);
            n += shm_unlink (path) == 0 ? 1 : 0;
        }
    }
    closedir (d);
    return n;
}

void
zi_shm_counters (uint64_t *resolved, uint64_t *released)
{
    if (resolved) {
        *resolved = atomic_load (&s_resolved);
    }
    if (released) {
        *released = atomic_load (&s_released);
    }
}
