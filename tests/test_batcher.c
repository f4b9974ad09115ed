/*  test_batcher.c - the partition stage's logic (zi_batcher): splitting
    into micro-batches, coalescing within max_batch and max_delay_us, per
    class and per stackable shape; every output checked row by row against
    the requests it came from.
*/
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "zi_batcher.h"

//  ---------------------------------------------------------------------
//  Helpers

//  Element (r, c) of request rid: distinct everywhere, exact in float32.
static float
s_value (uint64_t rid, int64_t r, int64_t c)
{
    return (float) (rid * 10000 + (uint64_t) r * 100 + (uint64_t) c);
}

//  A request TASK as preprocess sends it: reqs [[rid, 0, rows]], one
//  input "x" float32 (rows, cols) (or uint8 when u8) and, if `second`, an
//  input "m" int32 (rows,).
static zi_msg_t *
s_request_ex (uint64_t rid, int64_t rows, int64_t cols, uint8_t prio, uint32_t deadline,
              bool u8, bool second)
{
    zi_msg_t *task = zi_msg_new (ZI_CMD_TASK);
    cr_assert_not_null (task);
    cr_assert_eq (zi_msg_add_req (task, rid, 0, (uint32_t) rows), 0);
    cr_assert_eq (zi_msg_set_mb (task, 0, 1), 0);
    cr_assert_eq (zi_msg_set_prio (task, prio), 0);
    zi_msg_set_seg (task, 0);
    if (deadline) {
        zi_msg_set_deadline_ms (task, deadline);
    }
    zi_tensor_t *x
        = zi_tensor_new (u8 ? ZI_DT_U8 : ZI_DT_F32, 2, (int64_t[]){rows, cols});
    cr_assert_not_null (x);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            if (u8) {
                ((uint8_t *) x->data)[r * cols + c] = (uint8_t) (rid + r + c);
            }
            else {
                ((float *) x->data)[r * cols + c] = s_value (rid, r, c);
            }
        }
    }
    cr_assert_eq (zi_msg_add_tensor (task, "x", &x), 0);
    if (second) {
        zi_tensor_t *m = zi_tensor_new (ZI_DT_I32, 1, (int64_t[]){rows});
        for (int64_t r = 0; r < rows; r++) {
            ((int32_t *) m->data)[r] = (int32_t) (rid * 100 + (uint64_t) r);
        }
        cr_assert_eq (zi_msg_add_tensor (task, "m", &m), 0);
    }
    return task;
}

static zi_msg_t *
s_request (uint64_t rid, int64_t rows, int64_t cols, uint8_t prio)
{
    return s_request_ex (rid, rows, cols, prio, 0, false, false);
}

static void
s_add_ok (zi_batcher_t *b, zi_msg_t *task, int64_t now_us)
{
    char err[256] = "";
    zi_msg_t *t = task;
    cr_assert_eq (zi_batcher_add (b, &t, now_us, err, sizeof err), 0, "%s", err);
    cr_assert_null (t, "the batcher owns the task");
}

//  Collect every output ready now.
static size_t
s_collect (zi_batcher_t *b, zi_msg_t **out, size_t max)
{
    size_t n = 0;
    zi_msg_t *msg;
    while ((msg = zi_batcher_next (b))) {
        cr_assert_lt (n, max);
        out[n++] = msg;
    }
    return n;
}

static void
s_destroy_all (zi_msg_t **out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        zi_msg_destroy (&out[i]);
    }
}

//  Check that rows [row0, row0+count) of the TASK's "x" are rows
//  [first, first+count) of request rid (float32 inputs).
static void
s_check_rows (const zi_msg_t *task, int64_t row0, uint64_t rid, int64_t first,
              int64_t count, int64_t cols)
{
    const zi_tensor_t *x = zi_msg_tensor_find (task, "x");
    cr_assert_not_null (x);
    cr_assert_eq (x->dtype, ZI_DT_F32);
    cr_assert_eq (x->ne[1], cols);
    const float *px = (const float *) x->data;
    for (int64_t r = 0; r < count; r++) {
        for (int64_t c = 0; c < cols; c++) {
            cr_assert_eq (px[(row0 + r) * cols + c], s_value (rid, first + r, c),
                          "request %llu row %lld col %lld", (unsigned long long) rid,
                          (long long) (first + r), (long long) c);
        }
    }
}

//  ---------------------------------------------------------------------
//  Splitting

Test (batcher, splits_large_requests_into_micro_batches_of_the_planned_size)
{
    const int64_t micros[] = {1, 3, 4, 8};
    for (size_t m = 0; m < sizeof micros / sizeof micros[0]; m++) {
        int64_t micro = micros[m];
        zi_batcher_t *b = zi_batcher_new (micro, 64, 1000);
        cr_assert_not_null (b);
        for (int64_t rows = micro + 1; rows <= 40; rows++) {
            uint64_t rid = (uint64_t) rows;
            s_add_ok (b, s_request_ex (rid, rows, 3, 2, 250, false, false), 0);
            zi_msg_t *out[64];
            size_t n = s_collect (b, out, 64);
            int64_t nmb = (rows + micro - 1) / micro;      //  naive ceil
            cr_assert_eq ((int64_t) n, nmb, "rows %lld micro %lld", (long long) rows,
                          (long long) micro);
            for (size_t k = 0; k < n; k++) {
                size_t nreqs = 0;
                const zi_msg_req_t *req = zi_msg_reqs (out[k], &nreqs);
                int64_t first = (int64_t) k * micro;
                int64_t count = rows - first < micro ? rows - first : micro;
                cr_assert_eq (nreqs, 1);
                cr_assert_eq (req->id, rid);
                cr_assert_eq (req->first, (uint32_t) first);
                cr_assert_eq (req->count, (uint32_t) count);
                cr_assert_eq (zi_msg_mb (out[k]), k);
                cr_assert_eq (zi_msg_nmb (out[k]), (uint32_t) nmb);
                cr_assert_eq (zi_msg_seg (out[k]), 0);
                cr_assert_eq (zi_msg_prio (out[k]), 2);
                cr_assert_eq (zi_msg_deadline_ms (out[k]), 250);
                cr_assert_eq (zi_msg_tensor_find (out[k], "x")->ne[0], count);
                s_check_rows (out[k], 0, rid, first, count, 3);
            }
            s_destroy_all (out, n);
            cr_assert_eq (zi_batcher_queued (b), 0, "split requests are never queued");
        }
        zi_batcher_destroy (&b);
        cr_assert_null (b);
    }
}

Test (batcher, splits_every_input_tensor_alike)
{
    zi_batcher_t *b = zi_batcher_new (4, 8, 0);
    s_add_ok (b, s_request_ex (9, 10, 2, 0, 0, false, true), 0);
    zi_msg_t *out[8];
    size_t n = s_collect (b, out, 8);
    cr_assert_eq (n, 3);
    for (size_t k = 0; k < n; k++) {
        const zi_tensor_t *m = zi_msg_tensor_find (out[k], "m");
        cr_assert_not_null (m);
        for (int64_t r = 0; r < m->ne[0]; r++) {
            cr_assert_eq (((const int32_t *) m->data)[r], 900 + (int32_t) k * 4 + r);
        }
    }
    s_destroy_all (out, n);
    zi_batcher_destroy (&b);
}

//  ---------------------------------------------------------------------
//  Coalescing

Test (batcher, coalesces_small_requests_up_to_max_batch)
{
    zi_batcher_t *b = zi_batcher_new (8, 8, 1000000);
    zi_msg_t *out[8];
    s_add_ok (b, s_request (1, 3, 4, 0), 0);
    s_add_ok (b, s_request (2, 3, 4, 0), 10);
    cr_assert_eq (s_collect (b, out, 8), 0, "6 rows wait for more");
    cr_assert_eq (zi_batcher_queued (b), 2);
    //  3 more rows would make 9 > 8: the 6 go now, the 3 start a batch.
    s_add_ok (b, s_request (3, 3, 4, 0), 20);
    size_t n = s_collect (b, out, 8);
    cr_assert_eq (n, 1);
    size_t nreqs = 0;
    const zi_msg_req_t *reqs = zi_msg_reqs (out[0], &nreqs);
    cr_assert_eq (nreqs, 2);
    cr_assert_eq (reqs[0].id, 1);
    cr_assert_eq (reqs[0].first, 0);
    cr_assert_eq (reqs[0].count, 3);
    cr_assert_eq (reqs[1].id, 2);
    cr_assert_eq (reqs[1].count, 3);
    cr_assert_eq (zi_msg_mb (out[0]), 0);
    cr_assert_eq (zi_msg_nmb (out[0]), 1);
    cr_assert_eq (zi_msg_tensor_find (out[0], "x")->ne[0], 6);
    s_check_rows (out[0], 0, 1, 0, 3, 4);
    s_check_rows (out[0], 3, 2, 0, 3, 4);
    s_destroy_all (out, n);
    cr_assert_eq (zi_batcher_queued (b), 1);
    //  Exactly max_batch: out at once, without waiting for the delay.
    s_add_ok (b, s_request (4, 2, 4, 0), 30);
    s_add_ok (b, s_request (5, 3, 4, 0), 40);
    n = s_collect (b, out, 8);
    cr_assert_eq (n, 1);
    reqs = zi_msg_reqs (out[0], &nreqs);
    cr_assert_eq (nreqs, 3);
    cr_assert_eq (reqs[0].id, 3);
    cr_assert_eq (reqs[1].id, 4);
    cr_assert_eq (reqs[2].id, 5);
    s_check_rows (out[0], 0, 3, 0, 3, 4);
    s_check_rows (out[0], 3, 4, 0, 2, 4);
    s_check_rows (out[0], 5, 5, 0, 3, 4);
    s_destroy_all (out, n);
    cr_assert_eq (zi_batcher_queued (b), 0);
    cr_assert_eq (zi_batcher_timeout_us (b, 50), -1, "nothing queued: no timeout");

    zi_batcher_stats_t stats;
    zi_batcher_stats (b, &stats);
    cr_assert_eq (stats.requests, 5);
    cr_assert_eq (stats.batches, 2);
    cr_assert_eq (stats.coalesced, 5);
    cr_assert_eq (stats.flush_full, 2);
    zi_batcher_destroy (&b);
}

Test (batcher, a_request_of_max_batch_rows_or_more_goes_alone_at_once)
{
    //  micro_batch above max_batch: 6 rows are not split, and no batch can
    //  hold them with another request.
    zi_batcher_t *b = zi_batcher_new (8, 4, 1000000);
    zi_msg_t *out[4];
    s_add_ok (b, s_request (1, 1, 2, 0), 0);
    s_add_ok (b, s_request (2, 6, 2, 0), 1);
    size_t n = s_collect (b, out, 4);
    cr_assert_eq (n, 2, "the queued request goes first, then the big one alone");
    size_t nreqs;
    cr_assert_eq (zi_msg_reqs (out[0], &nreqs)->id, 1);
    cr_assert_eq (zi_msg_reqs (out[1], &nreqs)->id, 2);
    cr_assert_eq (nreqs, 1);
    s_check_rows (out[1], 0, 2, 0, 6, 2);
    s_destroy_all (out, n);
    zi_batcher_destroy (&b);
}

Test (batcher, flushes_a_small_batch_when_its_delay_has_passed)
{
    zi_batcher_t *b = zi_batcher_new (8, 8, 500);
    zi_msg_t *out[4];
    cr_assert_eq (zi_batcher_timeout_us (b, 0), -1);
    s_add_ok (b, s_request (1, 1, 2, 0), 1000);
    cr_assert_eq (zi_batcher_timeout_us (b, 1100), 400);
    s_add_ok (b, s_request (2, 1, 2, 0), 1300);
    cr_assert_eq (zi_batcher_timeout_us (b, 1300), 200,
                  "the first request sets the time");
    cr_assert_eq (zi_batcher_expire (b, 1499), 0);
    cr_assert_eq (s_collect (b, out, 4), 0);
    cr_assert_eq (zi_batcher_expire (b, 1500), 1);
    size_t n = s_collect (b, out, 4);
    cr_assert_eq (n, 1);
    size_t nreqs;
    zi_msg_reqs (out[0], &nreqs);
    cr_assert_eq (nreqs, 2,
                  "the later request went with the first, before its own delay");
    s_destroy_all (out, n);
    cr_assert_eq (zi_batcher_timeout_us (b, 1600), -1);
    //  Late: a due batch reports 0, never a negative wait.
    s_add_ok (b, s_request (3, 1, 2, 0), 2000);
    cr_assert_eq (zi_batcher_timeout_us (b, 9000), 0);
    zi_batcher_stats_t stats;
    zi_batcher_stats (b, &stats);
    cr_assert_eq (stats.flush_delay, 1);
    zi_batcher_destroy (&b);
}

Test (batcher, max_delay_zero_sends_each_request_at_once)
{
    zi_batcher_t *b = zi_batcher_new (8, 8, 0);
    zi_msg_t *out[4];
    for (uint64_t rid = 1; rid <= 3; rid++) {
        s_add_ok (b, s_request_ex (rid, 2, 3, 1, 100, false, false), 0);
        size_t n = s_collect (b, out, 4);
        cr_assert_eq (n, 1);
        size_t nreqs;
        const zi_msg_req_t *req = zi_msg_reqs (out[0], &nreqs);
        cr_assert_eq (nreqs, 1);
        cr_assert_eq (req->id, rid);
        cr_assert_eq (req->count, 2);
        cr_assert_eq (zi_msg_prio (out[0]), 1);
        cr_assert_eq (zi_msg_deadline_ms (out[0]), 100);
        s_check_rows (out[0], 0, rid, 0, 2, 3);
        s_destroy_all (out, n);
    }
    cr_assert_eq (zi_batcher_queued (b), 0);
    zi_batcher_destroy (&b);
}

Test (batcher, keeps_priority_classes_in_separate_batches)
{
    zi_batcher_t *b = zi_batcher_new (8, 8, 1000);
    for (uint64_t rid = 1; rid <= 6; rid++) {
        s_add_ok (b, s_request (rid, 1, 2, (uint8_t) (rid % 3)), (int64_t) rid);
    }
    cr_assert_eq (zi_batcher_open (b), 3);
    zi_batcher_expire (b, 2000);
    zi_msg_t *out[8];
    size_t n = s_collect (b, out, 8);
    cr_assert_eq (n, 3);
    for (size_t i = 0; i < n; i++) {
        size_t nreqs;
        const zi_msg_req_t *reqs = zi_msg_reqs (out[i], &nreqs);
        cr_assert_eq (nreqs, 2);
        for (size_t k = 0; k < nreqs; k++) {
            cr_assert_eq (reqs[k].id % 3, zi_msg_prio (out[i]), "one class per batch");
            s_check_rows (out[i], (int64_t) k, reqs[k].id, 0, 1, 2);
        }
    }
    s_destroy_all (out, n);
    zi_batcher_destroy (&b);
}

Test (batcher, inputs_that_do_not_stack_go_in_separate_batches)
{
    zi_batcher_t *b = zi_batcher_new (8, 8, 1000);
    s_add_ok (b, s_request_ex (1, 1, 4, 0, 0, false, false), 0);   //  f32 (1,4)
    s_add_ok (b, s_request_ex (2, 1, 5, 0, 0, false, false), 0);   //  f32 (1,5)
    s_add_ok (b, s_request_ex (3, 1, 4, 0, 0, true, false), 0);    //  u8 (1,4)
    s_add_ok (b, s_request_ex (4, 1, 4, 0, 0, false, true), 0);    //  + "m"
    s_add_ok (b, s_request_ex (5, 2, 4, 0, 0, false, false), 0);   //  joins 1
    s_add_ok (b, s_request_ex (6, 1, 5, 0, 0, false, false), 0);   //  joins 2
    cr_assert_eq (zi_batcher_open (b), 4);
    cr_assert_eq (zi_batcher_queued (b), 6);
    cr_assert_eq (zi_batcher_flush (b, 10), 4);
    zi_msg_t *out[8];
    size_t n = s_collect (b, out, 8);
    cr_assert_eq (n, 4);
    size_t nreqs;
    const zi_msg_req_t *reqs = zi_msg_reqs (out[0], &nreqs);
    cr_assert_eq (nreqs, 2);
    cr_assert_eq (reqs[0].id, 1);
    cr_assert_eq (reqs[1].id, 5);
    s_check_rows (out[0], 0, 1, 0, 1, 4);
    s_check_rows (out[0], 1, 5, 0, 2, 4);
    reqs = zi_msg_reqs (out[1], &nreqs);
    cr_assert_eq (nreqs, 2);
    cr_assert_eq (reqs[1].id, 6);
    s_check_rows (out[1], 1, 6, 0, 1, 5);
    cr_assert_eq (zi_msg_tensor_find (out[2], "x")->dtype, ZI_DT_U8);
    cr_assert_eq (zi_msg_tensor_count (out[3]), 2);
    s_destroy_all (out, n);
    zi_batcher_destroy (&b);
}

Test (batcher, too_many_shapes_flush_the_oldest_batch)
{
    zi_batcher_t *b = zi_batcher_new (8, 8, 1000000);
    for (int64_t i = 0; i < ZI_BATCHER_MAX_OPEN; i++) {
        s_add_ok (b, s_request ((uint64_t) i + 1, 1, i + 1, 0), i);
    }
    zi_msg_t *out[4];
    cr_assert_eq (s_collect (b, out, 4), 0);
    s_add_ok (b, s_request (1000, 1, 1000, 0), 100);
    size_t n = s_collect (b, out, 4);
    cr_assert_eq (n, 1);
    size_t nreqs;
    cr_assert_eq (zi_msg_reqs (out[0], &nreqs)->id, 1, "the oldest batch went");
    cr_assert_eq (zi_batcher_open (b), ZI_BATCHER_MAX_OPEN);
    s_destroy_all (out, n);
    zi_batcher_destroy (&b);   //  frees what is still queued
}

Test (batcher, a_batch_carries_the_smallest_budget_left)
{
    zi_batcher_t *b = zi_batcher_new (8, 8, 10000);
    s_add_ok (b, s_request_ex (1, 1, 2, 0, 100, false, false), 0);
    s_add_ok (b, s_request_ex (2, 1, 2, 0, 0, false, false), 0);        //  none
    s_add_ok (b, s_request_ex (3, 1, 2, 0, 50, false, false), 2000);
    zi_batcher_flush (b, 3000);
    zi_msg_t *out[2];
    cr_assert_eq (s_collect (b, out, 2), 1);
    //  request 1: 100 - 3 ms waited = 97; request 3: 50 - 1 = 49
    cr_assert_eq (zi_msg_deadline_ms (out[0]), 49);
    s_destroy_all (out, 1);
    //  No deadline anywhere: none on the batch; a spent budget stays >= 1.
    s_add_ok (b, s_request (4, 1, 2, 0), 0);
    s_add_ok (b, s_request (5, 1, 2, 0), 0);
    zi_batcher_flush (b, 1);
    cr_assert_eq (s_collect (b, out, 2), 1);
    cr_assert_not (zi_msg_has (out[0], "deadline"));
    s_destroy_all (out, 1);
    s_add_ok (b, s_request_ex (6, 1, 2, 0, 2, false, false), 0);
    zi_batcher_flush (b, 9000);
    cr_assert_eq (s_collect (b, out, 2), 1);
    cr_assert_eq (zi_msg_deadline_ms (out[0]), 1);
    s_destroy_all (out, 1);
    zi_batcher_destroy (&b);
}

Test (batcher, refuses_what_is_not_one_whole_request)
{
    zi_batcher_t *b = zi_batcher_new (4, 8, 1000);
    char err[256];
    //  Inputs that disagree on rows.
    zi_msg_t *task = s_request_ex (1, 3, 2, 0, 0, false, false);
    zi_tensor_t *m = zi_tensor_new (ZI_DT_I32, 1, (int64_t[]){2});
    cr_assert_eq (zi_msg_add_tensor (task, "m", &m), 0);
    cr_assert_eq (zi_batcher_add (b, &task, 0, err, sizeof err), ZI_ERR_SHAPE);
    cr_assert_not_null (task, "still ours on failure");
    cr_assert (strstr (err, "input 'm': 2 rows, but input 'x' has 3"), "%s", err);
    zi_msg_destroy (&task);
    //  reqs that disagree with the rows.
    task = zi_msg_new (ZI_CMD_TASK);
    zi_msg_add_req (task, 2, 0, 5);
    zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){3, 2});
    zi_msg_add_tensor (task, "x", &x);
    cr_assert_eq (zi_batcher_add (b, &task, 0, err, sizeof err), ZI_ERR_SHAPE);
    cr_assert (strstr (err, "reqs says 5 rows, the inputs have 3"), "%s", err);
    zi_msg_destroy (&task);
    //  A scalar input, no inputs, zero rows, two requests, a micro-batch.
    task = zi_msg_new (ZI_CMD_TASK);
    zi_msg_add_req (task, 3, 0, 1);
    x = zi_tensor_new (ZI_DT_F32, 0, NULL);
    zi_msg_add_tensor (task, "s", &x);
    cr_assert_eq (zi_batcher_add (b, &task, 0, err, sizeof err), ZI_ERR_SHAPE);
    cr_assert (strstr (err, "input 's': a scalar has no batch dimension"), "%s", err);
    zi_msg_destroy (&task);
    task = zi_msg_new (ZI_CMD_TASK);
    zi_msg_add_req (task, 4, 0, 1);
    cr_assert_eq (zi_batcher_add (b, &task, 0, err, sizeof err), ZI_ERR_SHAPE);
    cr_assert (strstr (err, "no input tensors"), "%s", err);
    zi_msg_destroy (&task);
    task = s_request (5, 0, 2, 0);
    cr_assert_eq (zi_batcher_add (b, &task, 0, err, sizeof err), ZI_ERR_SHAPE);
    cr_assert (strstr (err, "0 rows"), "%s", err);
    zi_msg_destroy (&task);
    task = s_request (6, 1, 2, 0);
    zi_msg_add_req (task, 7, 0, 1);
    cr_assert_eq (zi_batcher_add (b, &task, 0, err, sizeof err), ZI_ERR_MALFORMED);
    zi_msg_destroy (&task);
    task = s_request (8, 2, 2, 0);
    zi_msg_set_mb (task, 1, 2);
    cr_assert_eq (zi_batcher_add (b, &task, 0, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "already a micro-batch"), "%s", err);
    zi_msg_destroy (&task);
    task = zi_msg_new (ZI_CMD_REPLY);
    cr_assert_eq (zi_batcher_add (b, &task, 0, err, sizeof err), ZI_ERR_MALFORMED);
    zi_msg_destroy (&task);
    cr_assert_eq (zi_batcher_queued (b), 0);
    cr_assert_null (zi_batcher_next (b), "nothing came out of refused tasks");
    zi_batcher_destroy (&b);
    cr_assert_null (zi_batcher_new (0, 8, 0));
    cr_assert_null (zi_batcher_new (4, 0, 0));
    cr_assert_null (zi_batcher_new (4, 8, -1));
}

//  ---------------------------------------------------------------------
//  A random workload, run as the partition loop runs it (time advances to
//  the next arrival or the next due batch, whichever is first), against
//  what must hold for every request.

typedef struct {
    int64_t rows, cols, arrived, seen;
    uint8_t prio;
    bool split;
} s_expect_t;

//  Take what the batcher has made at time now and check it.
static size_t
s_drain_checked (zi_batcher_t *b, s_expect_t *expect, int64_t now, int64_t delay,
                 int64_t max_batch)
{
    size_t tasks = 0;
    zi_msg_t *msg;
    while ((msg = zi_batcher_next (b))) {
        tasks++;
        size_t nreqs;
        const zi_msg_req_t *reqs = zi_msg_reqs (msg, &nreqs);
        const zi_tensor_t *x = zi_msg_tensor_find (msg, "x");
        int64_t row0 = 0;
        for (size_t k = 0; k < nreqs; k++) {
            s_expect_t *e = &expect[reqs[k].id];
            cr_assert_eq (zi_msg_prio (msg), e->prio);
            cr_assert_eq (x->ne[1], e->cols);
            s_check_rows (msg, row0, reqs[k].id, reqs[k].first, reqs[k].count, e->cols);
            if (!e->split) {
                cr_assert_leq (now - e->arrived, delay, "request %llu waited %lld us",
                               (unsigned long long) reqs[k].id,
                               (long long) (now - e->arrived));
            }
            e->seen += reqs[k].count;
            row0 += reqs[k].count;
        }
        cr_assert_eq (row0, x->ne[0]);
        if (nreqs > 1) {
            cr_assert_leq (x->ne[0], max_batch);
        }
        zi_msg_destroy (&msg);
    }
    return tasks;
}

Test (batcher, random_workload_keeps_every_row_once_within_the_bounds)
{
    enum { N = 400 };
    const int64_t micro = 6, max_batch = 10, delay = 700;
    srand (12345);
    zi_batcher_t *b = zi_batcher_new (micro, max_batch, delay);
    s_expect_t *expect = (s_expect_t *) calloc (N + 1, sizeof *expect);
    int64_t now = 0;
    size_t tasks = 0;
    for (uint64_t rid = 1; rid <= N; rid++) {
        int64_t arrival = now + rand () % 300;
        //  Advance the clock as the loop does: to a due batch first.
        while (now < arrival) {
            int64_t due = zi_batcher_timeout_us (b, now);
            now = due >= 0 && now + due < arrival ? now + due : arrival;
            zi_batcher_expire (b, now);
            tasks += s_drain_checked (b, expect, now, delay, max_batch);
        }
        s_expect_t *e = &expect[rid];
        e->rows = 1 + rand () % 14;
        e->cols = 2 + rand () % 2;
        e->prio = (uint8_t) (rand () % 2);
        e->arrived = now;
        e->split = e->rows > micro;
        s_add_ok (b, s_request (rid, e->rows, e->cols, e->prio), now);
        tasks += s_drain_checked (b, expect, now, delay, max_batch);
    }
    while (zi_batcher_timeout_us (b, now) >= 0) {
        now += zi_batcher_timeout_us (b, now);
        zi_batcher_expire (b, now);
        tasks += s_drain_checked (b, expect, now, delay, max_batch);
    }
    for (uint64_t rid = 1; rid <= N; rid++) {
        cr_assert_eq (expect[rid].seen, expect[rid].rows, "request %llu: every row once",
                      (unsigned long long) rid);
    }
    cr_assert_eq (zi_batcher_queued (b), 0);
    zi_batcher_stats_t stats;
    zi_batcher_stats (b, &stats);
    cr_assert_eq (stats.requests, N);
    cr_assert_gt (stats.coalesced, stats.batches, "some requests did share a batch");
    cr_assert_gt (stats.flush_delay, 0);
    cr_assert_gt (stats.flush_full, 0);
    cr_assert_eq (tasks, stats.batches + stats.micro_batches);
    free (expect);
    zi_batcher_destroy (&b);
}

//  ---------------------------------------------------------------------
//  Never hold a request while the downstream is idle

Test (batcher, dispatches_at_once_when_the_downstream_is_idle)
{
    zi_batcher_t *b = zi_batcher_new (16, 64, 2000);
    cr_assert_not_null (b);
    //  Segment 0 has a free slot: the request leaves without waiting for
    //  company, long before max_delay_us.
    zi_batcher_set_credit (b, 1, 0);
    s_add_ok (b, s_request (1, 1, 3, 0), 100);
    cr_assert_eq (zi_batcher_dispatch (b, 100), 1);
    zi_msg_t *out[8];
    cr_assert_eq (s_collect (b, out, 8), 1);
    s_check_rows (out[0], 0, 1, 0, 1, 3);
    cr_assert_eq (zi_batcher_queued (b), 0);
    zi_batcher_stats_t st;
    zi_batcher_stats (b, &st);
    cr_assert_eq (st.flush_idle, 1);
    cr_assert_eq (st.flush_delay, 0);
    s_destroy_all (out, 1);
    zi_batcher_destroy (&b);
}

Test (batcher, what_arrives_together_goes_together_when_idle)
{
    zi_batcher_t *b = zi_batcher_new (16, 64, 2000);
    zi_batcher_set_credit (b, 1, 0);
    //  Three requests read in one burst, then dispatch: one TASK of all.
    for (uint64_t rid = 1; rid <= 3; rid++) {
        s_add_ok (b, s_request (rid, 2, 3, 0), 10);
    }
    cr_assert_eq (zi_batcher_dispatch (b, 10), 1);
    zi_msg_t *out[8];
    cr_assert_eq (s_collect (b, out, 8), 1);
    size_t nreqs = 0;
    zi_msg_reqs (out[0], &nreqs);
    cr_assert_eq (nreqs, 3);
    for (uint64_t rid = 1; rid <= 3; rid++) {
        s_check_rows (out[0], (int64_t) (rid - 1) * 2, rid, 0, 2, 3);
    }
    s_destroy_all (out, 1);
    zi_batcher_destroy (&b);
}

Test (batcher, batches_while_the_downstream_is_busy_within_max_delay)
{
    zi_batcher_t *b = zi_batcher_new (16, 8, 2000);
    //  No free slot: requests accumulate; dispatch sends nothing.
    zi_batcher_set_credit (b, 0, 0);
    s_add_ok (b, s_request (1, 1, 3, 0), 0);
    s_add_ok (b, s_request (2, 1, 3, 0), 500);
    cr_assert_eq (zi_batcher_dispatch (b, 600), 0);
    cr_assert_eq (zi_batcher_queued (b), 2);
    //  ... still bounded by max_delay_us, counted from the first request.
    cr_assert_eq (zi_batcher_timeout_us (b, 600), 1400);
    cr_assert_eq (zi_batcher_expire (b, 1999), 0);
    cr_assert_eq (zi_batcher_expire (b, 2000), 1);
    zi_msg_t *out[8];
    cr_assert_eq (s_collect (b, out, 8), 1);
    size_t nreqs = 0;
    zi_msg_reqs (out[0], &nreqs);
    cr_assert_eq (nreqs, 2);
    s_destroy_all (out, 1);
    //  ... and by max_batch: 8 rows go at once even while busy.
    for (uint64_t rid = 10; rid < 14; rid++) {
        s_add_ok (b, s_request (rid, 2, 3, 0), 3000);
    }
    cr_assert_eq (s_collect (b, out, 8), 1);
    s_destroy_all (out, 1);
    //  Room again (the broker's HEARTBEAT {credit}): the held batch goes.
    s_add_ok (b, s_request (20, 1, 3, 0), 4000);
    cr_assert_eq (zi_batcher_dispatch (b, 4100), 0);
    zi_batcher_set_credit (b, 2, 0);
    cr_assert_eq (zi_batcher_dispatch (b, 4200), 1);
    cr_assert_eq (s_collect (b, out, 8), 1);
    s_destroy_all (out, 1);
    zi_batcher_destroy (&b);
}

Test (batcher, each_task_sent_uses_up_a_free_slot)
{
    zi_batcher_t *b = zi_batcher_new (2, 64, 2000);
    //  One free slot: a request split into 3 micro-batches uses it up, so
    //  a small request after it waits to be coalesced.
    zi_batcher_set_credit (b, 1, 0);
    s_add_ok (b, s_request (1, 6, 3, 0), 0);
    s_add_ok (b, s_request (2, 1, 3, 0), 0);
    cr_assert_eq (zi_batcher_dispatch (b, 0), 0);
    cr_assert_eq (zi_batcher_queued (b), 1);
    //  Unknown downstream state (no report): batches wait as before.
    zi_batcher_set_credit (b, -1, 0);
    cr_assert_eq (zi_batcher_dispatch (b, 10), 0);
    cr_assert_eq (zi_batcher_expire (b, 2000), 1);
    zi_msg_t *out[8];
    cr_assert_eq (s_collect (b, out, 8), 4);
    s_destroy_all (out, 4);
    zi_batcher_destroy (&b);
}

Test (batcher, a_stale_report_does_not_hand_out_credit_twice)
{
    zi_batcher_t *b = zi_batcher_new (16, 64, 2000);
    //  The broker has received 100 TASKs from us so far; segment 0 has 2
    //  free slots: grant 102.
    zi_batcher_set_credit (b, 2, 102);
    s_add_ok (b, s_request (1, 1, 3, 0), 0);
    cr_assert_eq (zi_batcher_dispatch (b, 0), 1);
    s_add_ok (b, s_request (2, 1, 3, 0), 0);
    cr_assert_eq (zi_batcher_dispatch (b, 0), 1);
    //  Both TASKs are on their way; reports made before they arrived still
    //  say grant 102 (credit 2): no slot is left for us.
    for (uint64_t rid = 3; rid <= 5; rid++) {
        zi_batcher_set_credit (b, 2, 102);
        s_add_ok (b, s_request (rid, 1, 3, 0), 10);
        cr_assert_eq (zi_batcher_dispatch (b, 10), 0);
    }
    //  Both arrived (102 received) and one finished: credit 1, grant 103.
    //  One slot: the held batch of three goes as one TASK.
    zi_batcher_set_credit (b, 1, 103);
    cr_assert_eq (zi_batcher_dispatch (b, 20), 1);
    zi_msg_t *out[8];
    cr_assert_eq (s_collect (b, out, 8), 3);
    size_t nreqs = 0;
    zi_msg_reqs (out[2], &nreqs);
    cr_assert_eq (nreqs, 3);
    s_destroy_all (out, 3);
    //  A restarted broker counts from a larger base: re-anchored at credit.
    zi_batcher_set_credit (b, 1, 1u << 30);
    s_add_ok (b, s_request (6, 1, 3, 0), 30);
    cr_assert_eq (zi_batcher_dispatch (b, 30), 1);
    s_add_ok (b, s_request (7, 1, 3, 0), 30);
    cr_assert_eq (zi_batcher_dispatch (b, 30), 0);
    zi_batcher_flush (b, 40);
    cr_assert_eq (s_collect (b, out, 8), 2);
    s_destroy_all (out, 2);
    zi_batcher_destroy (&b);
}
