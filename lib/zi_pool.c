/*  zi_pool - see zi_pool.h.

    Helpers wait for a job by spinning on a generation counter for a short
    while (a pipeline stage calls kernels back to back, and waking a thread
    from a futex costs tens of microseconds), then sleep on a condition
    variable. Every participant, the caller first, takes the job's chunks
    from one atomic counter until none is left.

    The caller then closes the job and waits only for helpers that are
    inside it: a helper announces itself (active++) and then checks that
    the job it saw is not closed yet; the caller closes it and then reads
    active. With sequentially consistent atomics one of the two sees the
    other's write, so either the caller waits for that helper or the
    helper skips the job (and never touches its arguments, which live on
    the caller's stack). A helper that was descheduled, or asleep, costs
    the caller nothing.
*/
#include "zi_pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#define S_SPINS 20000           //  ~tens of microseconds before sleeping

//  Busy-wait politely: pause, and every so often give the core away in case
//  the thread we wait for shares it (tests run several pools at once).
static inline void
s_relax (int spins)
{
    if ((spins & 255) == 255) {
        sched_yield ();
    }
#if defined(__x86_64__) || defined(__i386__)
    else {
        __builtin_ia32_pause ();
    }
#endif
}

typedef struct {
    zi_pool_t *pool;
    int index;                  //  1..size-1
    pthread_t thread;
} s_helper_t;

struct zi_pool {
    int size;
    s_helper_t *helpers;
    int started;
    pthread_mutex_t mutex;
    pthread_cond_t wake;        //  new job or stop
    pthread_cond_t done_cond;   //  last helper finished
    atomic_uint_fast64_t gen;   //  bumped once per job
    atomic_uint_fast64_t closed;  //  generation of the last closed job
    atomic_int active;          //  helpers inside the current job
    atomic_bool stop;
    //  The current job (written before gen is bumped)
    zi_pool_fn *fn;
    void *arg;
    int64_t n;
    int64_t step;               //  chunk length
    int parts;                  //  threads that take part (<= size)
    atomic_int_fast64_t next;   //  first index not yet taken
};

//  Take chunks until the job is done.
static void
s_take_chunks (zi_pool_t *self, int t)
{
    while (true) {
        int64_t lo = atomic_fetch_add_explicit (&self->next, self->step,
                                                memory_order_relaxed);
        if (lo >= self->n) {
            return;
        }
        int64_t hi = self->n - lo < self->step ? self->n : lo + self->step;
        self->fn (self->arg, lo, hi, t);
    }
}

static void *
s_helper_main (void *varg)
{
    s_helper_t *h = varg;
    zi_pool_t *self = h->pool;
    uint64_t seen = 0;
    while (true) {
        uint64_t gen = atomic_load_explicit (&self->gen, memory_order_acquire);
        int spins = 0;
        while (gen == seen && !atomic_load (&self->stop)) {
            if (++spins < S_SPINS) {
                s_relax (spins);
            }
            else {
                pthread_mutex_lock (&self->mutex);
                while ((gen = atomic_load (&self->gen)) == seen && !atomic_load (&self->stop)) {
                    pthread_cond_wait (&self->wake, &self->mutex);
                }
                pthread_mutex_unlock (&self->mutex);
                spins = 0;
            }
            gen = atomic_load_explicit (&self->gen, memory_order_acquire);
        }
        if (atomic_load (&self->stop)) {
            break;
        }
        seen = gen;
        atomic_fetch_add (&self->active, 1);
        if (atomic_load (&self->closed) < gen && h->index < self->parts) {
            s_take_chunks (self, h->index);
        }
        if (atomic_fetch_sub (&self->active, 1) == 1) {
            pthread_mutex_lock (&self->mutex);
            pthread_cond_signal (&self->done_cond);
            pthread_mutex_unlock (&self->mutex);
        }
    }
    return NULL;
}

zi_pool_t *
zi_pool_new (int nthreads)
{
    if (nthreads < 2) {
        return NULL;
    }
    zi_pool_t *self = calloc (1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->size = nthreads;
    self->helpers = calloc ((size_t) nthreads, sizeof *self->helpers);
    if (!self->helpers) {
        free (self);
        return NULL;
    }
    pthread_mutex_init (&self->mutex, NULL);
    pthread_cond_init (&self->wake, NULL);
    pthread_cond_init (&self->done_cond, NULL);
    atomic_init (&self->gen, 0);
    atomic_init (&self->closed, 0);
    atomic_init (&self->active, 0);
    atomic_init (&self->next, 0);
    atomic_init (&self->stop, false);
    for (int i = 1; i < nthreads; i++) {
        s_helper_t *h = &self->helpers[i];
        h->pool = self;
        h->index = i;
        if (pthread_create (&h->thread, NULL, s_helper_main, h) != 0) {
            zi_pool_destroy (&self);
            return NULL;
        }
        self->started = i;
    }
    return self;
}

void
zi_pool_destroy (zi_pool_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zi_pool_t *self = *self_p;
    pthread_mutex_lock (&self->mutex);
    atomic_store (&self->stop, true);
    pthread_cond_broadcast (&self->wake);
    pthread_mutex_unlock (&self->mutex);
    for (int i = 1; i <= self->started; i++) {
        pthread_join (self->helpers[i].thread, NULL);
    }
    pthread_cond_destroy (&self->wake);
    pthread_cond_destroy (&self->done_cond);
    pthread_mutex_destroy (&self->mutex);
    free (self->helpers);
    free (self);
    *self_p = NULL;
}

int
zi_pool_size (const zi_pool_t *self)
{
    return self ? self->size : 1;
}

void
zi_pool_for (zi_pool_t *self, int64_t n, int64_t grain, zi_pool_fn *fn, void *arg)
{
    if (n <= 0) {
        return;
    }
    if (grain < 1) {
        grain = 1;
    }
    int parts = self ? self->size : 1;
    if (n / grain < parts) {
        parts = (int) (n / grain);
    }
    if (parts <= 1) {
        fn (arg, 0, n, 0);
        return;
    }
    //  About 4 chunks per thread, so a thread that starts late (or is
    //  preempted) leaves its share to the others; never shorter than the
    //  grain, nor than an even split when n is small.
    int64_t step = (n + 4 * parts - 1) / (4 * parts);
    if (n < 4 * (int64_t) parts) {
        step = (n + parts - 1) / parts;
    }
    self->fn = fn;
    self->arg = arg;
    self->n = n;
    self->step = step > grain ? step : grain;
    self->parts = parts;
    atomic_store (&self->next, 0);
    pthread_mutex_lock (&self->mutex);
    uint64_t gen = atomic_fetch_add (&self->gen, 1) + 1;
    pthread_cond_broadcast (&self->wake);
    pthread_mutex_unlock (&self->mutex);
    s_take_chunks (self, 0);
    //  Every chunk is taken: close the job, then wait for the helpers
    //  still inside it (see the top of this file).
    atomic_store (&self->closed, gen);
    int spins = 0;
    while (atomic_load (&self->active) > 0) {
        if (++spins < S_SPINS) {
            s_relax (spins);
            continue;
        }
        pthread_mutex_lock (&self->mutex);
        while (atomic_load (&self->active) > 0) {
            pthread_cond_wait (&self->done_cond, &self->mutex);
        }
        pthread_mutex_unlock (&self->mutex);
    }
}
