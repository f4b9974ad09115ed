/*  test_pool.c - the kernels' thread pool: every index once, in fixed
    chunks whoever runs them, helpers take part, one thread without a pool,
    many jobs back to back. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "zi_pool.h"

typedef struct {
    atomic_int *hits;           //  per index
    atomic_int_fast64_t chunk_lo[128], chunk_hi[128];   //  by call order
    atomic_int calls;
    atomic_int by_thread[8];    //  calls per thread index
} s_job_t;

static void
s_mark (void *varg, int64_t lo, int64_t hi, int t)
{
    s_job_t *job = varg;
    int c = atomic_fetch_add (&job->calls, 1);
    if (c < 128) {
        job->chunk_lo[c] = lo;
        job->chunk_hi[c] = hi;
    }
    atomic_fetch_add (&job->by_thread[t], 1);
    for (int64_t i = lo; i < hi; i++) {
        atomic_fetch_add (&job->hits[i], 1);
    }
}

Test (pool, every_index_exactly_once_in_fixed_chunks)
{
    zi_pool_t *pool = zi_pool_new (3);
    cr_assert_not_null (pool);
    cr_assert_eq (zi_pool_size (pool), 3);
    atomic_int hits[100];
    s_job_t job = {.hits = hits};
    memset (hits, 0, sizeof hits);
    zi_pool_for (pool, 100, 1, s_mark, &job);
    for (int i = 0; i < 100; i++) {
        cr_assert_eq (hits[i], 1, "index %d visited %d times", i, hits[i]);
    }
    //  chunks of ceil (100 / (4 * 3)) = 9: [0, 9), [9, 18) ... [99, 100),
    //  whichever thread takes each (timing decides only that)
    cr_assert_eq (job.calls, 12);
    for (int c = 0; c < 12; c++) {
        cr_assert_eq (job.chunk_lo[c] % 9, 0);
        int64_t want = job.chunk_lo[c] + 9 < 100 ? job.chunk_lo[c] + 9 : 100;
        cr_assert_eq (job.chunk_hi[c], want);
    }
    zi_pool_destroy (&pool);
    cr_assert_null (pool);
    zi_pool_destroy (&pool);
}

//  Index 0's chunk blocks until index 1's chunk has run: the caller (which
//  takes chunk 0 first) can only finish if a helper takes chunk 1.
typedef struct {
    atomic_int second_done;
} s_order_t;

static void
s_wait_second (void *varg, int64_t lo, int64_t hi, int t)
{
    (void) t;
    s_order_t *o = varg;
    for (int64_t i = lo; i < hi; i++) {
        if (i == 1) {
            atomic_store (&o->second_done, 1);
        }
    }
    if (lo == 0 && hi == 1) {
        struct timespec t0, now;
        clock_gettime (CLOCK_MONOTONIC, &t0);
        do {
            clock_gettime (CLOCK_MONOTONIC, &now);
        } while (!atomic_load (&o->second_done)
                 && now.tv_sec - t0.tv_sec < 10);
    }
}

Test (pool, helpers_take_part_and_small_loops_split_evenly)
{
    zi_pool_t *pool = zi_pool_new (2);
    s_order_t o = {0};
    //  n 2 < 4 x 2: chunks of 1, one per thread
    zi_pool_for (pool, 2, 1, s_wait_second, &o);
    cr_assert_eq (atomic_load (&o.second_done), 1, "no helper took chunk 1");
    zi_pool_destroy (&pool);
}

//  Over many jobs, however the chunks fall to threads, each index is done
//  once and the caller always takes part.
Test (pool, every_chunk_once_and_the_caller_takes_part)
{
    zi_pool_t *pool = zi_pool_new (3);
    atomic_int hits[1000];
    for (int round = 0; round < 200; round++) {
        s_job_t job = {.hits = hits};
        memset (hits, 0, sizeof hits);
        zi_pool_for (pool, 1000, 1, s_mark, &job);
        int total = 0;
        for (int t = 0; t < 3; t++) {
            total += job.by_thread[t];
        }
        cr_assert_eq (total, job.calls);
        cr_assert_gt (job.by_thread[0], 0, "the caller took no chunk");
        for (int i = 0; i < 1000; i++) {
            cr_assert_eq (hits[i], 1);
        }
    }
    zi_pool_destroy (&pool);
}

Test (pool, grain_keeps_small_loops_on_the_caller)
{
    zi_pool_t *pool = zi_pool_new (2);
    atomic_int hits[10];
    s_job_t job = {.hits = hits};
    memset (hits, 0, sizeof hits);
    zi_pool_for (pool, 10, 8, s_mark, &job);    //  10 / 8 = 1 range
    cr_assert_eq (job.calls, 1);
    cr_assert_eq (job.chunk_lo[0], 0);
    cr_assert_eq (job.chunk_hi[0], 10);
    cr_assert_eq (job.by_thread[0], 1);
    zi_pool_for (pool, 0, 1, s_mark, &job);     //  nothing to do
    cr_assert_eq (job.calls, 1);
    zi_pool_destroy (&pool);
}

Test (pool, null_pool_runs_in_the_caller)
{
    cr_assert_null (zi_pool_new (1));
    cr_assert_null (zi_pool_new (0));
    cr_assert_eq (zi_pool_size (NULL), 1);
    atomic_int hits[7];
    s_job_t job = {.hits = hits};
    memset (hits, 0, sizeof hits);
    zi_pool_for (NULL, 7, 1, s_mark, &job);
    cr_assert_eq (job.calls, 1);
    for (int i = 0; i < 7; i++) {
        cr_assert_eq (hits[i], 1);
    }
}

Test (pool, many_jobs_back_to_back)
{
    zi_pool_t *pool = zi_pool_new (4);
    atomic_int hits[64];
    memset (hits, 0, sizeof hits);
    for (int round = 0; round < 5000; round++) {
        s_job_t job = {.hits = hits};
        zi_pool_for (pool, 64, 1, s_mark, &job);
        cr_assert_eq (job.calls, 16);   //  chunks of 64 / (4 x 4)
    }
    for (int i = 0; i < 64; i++) {
        cr_assert_eq (hits[i], 5000);
    }
    zi_pool_destroy (&pool);
}
