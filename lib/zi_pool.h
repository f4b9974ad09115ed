/*  =========================================================================
    zi_pool - a fixed set of threads that kernels split their loops over

    One pool belongs to one executor (zi_exec) and is used by one thread at a
    time: the caller of zi_pool_for takes part in the work, so a pool of N
    threads starts N-1 helpers. [0, n) is cut into fixed chunks (about 4
    per thread; the cut depends only on n, the grain and the pool size),
    which the threads take from a shared counter: a thread that is late or
    preempted (other processes on the same cores) leaves its chunks to the
    others instead of holding them up, and the caller never waits for a
    helper that has not started. Timing decides only which thread runs a
    chunk, so a kernel that computes each output element the same way
    whatever its range is bit-identical for any thread count.

    Example:
        zi_pool_t *pool = zi_pool_new (2);
        zi_pool_for (pool, rows, s_rows, &args);   //  s_rows (&args, lo, hi, t)
        zi_pool_destroy (&pool);

    zi_pool_for with a NULL pool runs fn(arg, 0, n, 0) in the caller, so a
    kernel needs no special case for one thread.
    =========================================================================
*/
#ifndef ZI_POOL_H_INCLUDED
#define ZI_POOL_H_INCLUDED

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zi_pool zi_pool_t;

//  Work on the half-open range [begin, end); thread is 0..size-1 (0 is the
//  caller), for per-thread scratch.
typedef void (zi_pool_fn) (void *arg, int64_t begin, int64_t end, int thread);

//  A pool of nthreads threads in all (the caller counts as one). Returns
//  NULL when nthreads < 2 (nothing to share) or when threads cannot start.
zi_pool_t *zi_pool_new (int nthreads);

//  Stop and join the helper threads; safe on NULL; sets *self_p to NULL.
void zi_pool_destroy (zi_pool_t **self_p);

//  Threads in the pool, caller included; 1 for NULL.
int zi_pool_size (const zi_pool_t *self);

//  Run fn over [0, n) in chunks spread over the pool's threads and return
//  when all are done. Chunks are at least `grain` long and at most
//  n / `grain` threads take part, so tiny loops stay on one thread (grain
//  0 counts as 1).
void zi_pool_for (zi_pool_t *self, int64_t n, int64_t grain, zi_pool_fn *fn, void *arg);

#ifdef __cplusplus
}
#endif

#endif
