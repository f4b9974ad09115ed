/*  test_pool.c - the kernels' thread pool: every index once, static ranges,
    one thread without a pool, many jobs back to back. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "zi_pool.h"

typedef struct {
    atomic_int *hits;           //  per index
    int64_t lo[8], hi[8];       //  range each thread got
    atomic_int calls;
} s_job_t;

static void
s_mark (void *varg, int64_t lo, int64_t hi, int t)
{
    s_job_t *job = varg;
    job->lo[t] = lo;
    job->hi[t] = hi;
    atomic_fetch_add (&job->calls, 1);
    for (int64_t i = lo; i < hi; i++) {
        atomic_fetch_add (&job->hits[i], 1);
    }
}

Test (pool, every_index_exactly_once_in_static_ranges)
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
    cr_assert_eq (job.calls, 3);
    //  thread t gets [n*t/T, n*(t+1)/T): independent of timing
    cr_assert_eq (job.lo[0], 0);
    cr_assert_eq (job.hi[0], 33);
    cr_assert_eq (job.lo[1], 33);
    cr_assert_eq (job.hi[1], 66);
    cr_assert_eq (job.lo[2], 66);
    cr_assert_eq (job.hi[2], 100);
    zi_pool_destroy (&pool);
    cr_assert_null (pool);
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
    cr_assert_eq (job.lo[0], 0);
    cr_assert_eq (job.hi[0], 10);
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
        cr_assert_eq (job.calls, 4);
    }
    for (int i = 0; i < 64; i++) {
        cr_assert_eq (hits[i], 5000);
    }
    zi_pool_destroy (&pool);
}
