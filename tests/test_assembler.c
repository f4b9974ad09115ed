/*  test_assembler.c - the aggregate stage's logic (zi_assembler): one
    REPLY per request out of coalesced batches, micro-batches reassembled in
    order whatever their arrival order, duplicates dropped, post-process
    ops applied, memory bounded (expiry, queue limit), inconsistent tasks
    answered INTERNAL; and the batcher and assembler together give every
    request back exactly its own rows.
*/
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "zi_assembler.h"
#include "zi_batcher.h"

//  ---------------------------------------------------------------------
//  Helpers

static float
s_value (uint64_t rid, int64_t r, int64_t c)
{
    return (float) (rid * 10000 + (uint64_t) r * 100 + (uint64_t) c);
}

//  A TASK as the broker sends it after the last segment: the entries'
//  rows stacked in "y" float32 (rows, cols), row r of request rid holding
//  s_value (rid, r, c).
static zi_msg_t *
s_task (const zi_msg_req_t *reqs, size_t nreqs, uint32_t mb, uint32_t nmb, int64_t cols)
{
    zi_msg_t *task = zi_msg_new (ZI_CMD_TASK);
    cr_assert_not_null (task);
    int64_t rows = 0;
    for (size_t k = 0; k < nreqs; k++) {
        rows += reqs[k].count;
    }
    cr_assert_eq (zi_msg_set_reqs (task, reqs, nreqs), 0);
    cr_assert_eq (zi_msg_set_mb (task, mb, nmb), 0);
    zi_msg_set_seg (task, 2);
    zi_tensor_t *y = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){rows, cols});
    int64_t row = 0;
    for (size_t k = 0; k < nreqs; k++) {
        for (uint32_t r = 0; r < reqs[k].count; r++, row++) {
            for (int64_t c = 0; c < cols; c++) {
                ((float *) y->data)[row * cols + c] =
                    s_value (reqs[k].id, reqs[k].first + r, c);
            }
        }
    }
    cr_assert_eq (zi_msg_add_tensor (task, "y", &y), 0);
    return task;
}

//  Micro-batch mb of request rid, rows [first, first+count).
static zi_msg_t *
s_micro (uint64_t rid, uint32_t first, uint32_t count, uint32_t mb, uint32_t nmb,
         int64_t cols)
{
    zi_msg_req_t req = {rid, first, count};
    return s_task (&req, 1, mb, nmb, cols);
}

static size_t
s_collect (zi_assembler_t *a, zi_msg_t **out, size_t max)
{
    size_t n = 0;
    zi_msg_t *msg;
    while ((msg = zi_assembler_next (a))) {
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

static void
s_add (zi_assembler_t *a, zi_msg_t *task, int64_t now)
{
    zi_msg_t *t = task;
    cr_assert_eq (zi_assembler_add (a, &t, now), 0);
    cr_assert_null (t);
}

//  The reply for rid holds exactly rows [0, rows) of request rid in "y".
static void
s_check_reply (const zi_msg_t *reply, uint64_t rid, int64_t rows, int64_t cols)
{
    cr_assert_eq (zi_msg_cmd (reply), ZI_CMD_REPLY, "got %s",
                  zi_cmd_name (zi_msg_cmd (reply)));
    cr_assert_eq (zi_msg_id (reply), rid);
    const zi_tensor_t *y = zi_msg_tensor_find (reply, "y");
    cr_assert_not_null (y);
    cr_assert_eq (y->rank, 2);
    cr_assert_eq (y->ne[0], rows);
    cr_assert_eq (y->ne[1], cols);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            cr_assert_eq (((const float *) y->data)[r * cols + c], s_value (rid, r, c),
                          "request %llu row %lld col %lld", (unsigned long long) rid,
                          (long long) r, (long long) c);
        }
    }
}

//  ---------------------------------------------------------------------
//  Coalesced tasks

Test (assembler, splits_a_coalesced_batch_into_one_reply_per_request)
{
    zi_assembler_t *a = zi_assembler_new (NULL, 0, 16, 1000000);
    cr_assert_not_null (a);
    zi_msg_req_t reqs[] = {{101, 0, 2}, {102, 0, 1}, {103, 0, 5}};
    s_add (a, s_task (reqs, 3, 0, 1, 4), 0);
    zi_msg_t *out[4];
    size_t n = s_collect (a, out, 4);
    cr_assert_eq (n, 3);
    s_check_reply (out[0], 101, 2, 4);
    s_check_reply (out[1], 102, 1, 4);
    s_check_reply (out[2], 103, 5, 4);
    s_destroy_all (out, n);
    cr_assert_eq (zi_assembler_pending (a), 0, "nothing is held for coalesced tasks");
    //  The same batch again (at-least-once upstream): nothing new.
    s_add (a, s_task (reqs, 3, 0, 1, 4), 10);
    cr_assert_eq (s_collect (a, out, 4), 0);
    zi_assembler_stats_t stats;
    zi_assembler_stats (a, &stats);
    cr_assert_eq (stats.tasks, 2);
    cr_assert_eq (stats.replies, 3);
    cr_assert_eq (stats.duplicates, 3);
    zi_assembler_destroy (&a);
    cr_assert_null (a);
}

Test (assembler, rows_that_do_not_match_reqs_are_an_internal_error)
{
    zi_assembler_t *a = zi_assembler_new (NULL, 0, 16, 1000000);
    zi_msg_req_t reqs[] = {{1, 0, 2}, {2, 0, 2}};
    zi_msg_t *task = s_task (reqs, 2, 0, 1, 3);
    zi_msg_req_t wrong[] = {{1, 0, 2}, {2, 0, 3}};
    zi_msg_set_reqs (task, wrong, 2);
    s_add (a, task, 0);
    zi_msg_t *out[4];
    size_t n = s_collect (a, out, 4);
    cr_assert_eq (n, 2);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq (zi_msg_cmd (out[i]), ZI_CMD_ERROR);
        cr_assert_eq (zi_msg_id (out[i]), i + 1);
        cr_assert_eq (zi_msg_code (out[i]), ZI_CODE_INTERNAL);
        cr_assert (strstr (zi_msg_reason (out[i]), "output 'y' is float32[4,3], but the "
                                                   "task's reqs hold 5 rows"),
                   "%s", zi_msg_reason (out[i]));
    }
    s_destroy_all (out, n);
    zi_assembler_destroy (&a);
}

//  ---------------------------------------------------------------------
//  Micro-batches

Test (assembler, reassembles_micro_batches_in_order_whatever_the_arrival_order)
{
    //  10 rows in micro-batches of 3: [0,3) [3,6) [6,9) [9,10); every one
    //  of the 24 arrival orders gives the same reply.
    const uint32_t first[] = {0, 3, 6, 9}, count[] = {3, 3, 3, 1};
    int perm[4] = {0, 1, 2, 3};
    int orders = 0;
    zi_assembler_t *a = zi_assembler_new (NULL, 0, 16, 1000000);
    for (int p0 = 0; p0 < 4; p0++) {
        for (int p1 = 0; p1 < 4; p1++) {
            for (int p2 = 0; p2 < 4; p2++) {
                int p3 = 6 - p0 - p1 - p2;
                if (p0 == p1 || p0 == p2 || p1 == p2 || p3 < 0 || p3 > 3 || p3 == p0
                    || p3 == p1 || p3 == p2) {
                    continue;
                }
                perm[0] = p0, perm[1] = p1, perm[2] = p2, perm[3] = p3;
                uint64_t rid = 1000 + (uint64_t) orders++;
                zi_msg_t *out[2];
                for (int k = 0; k < 4; k++) {
                    int mb = perm[k];
                    s_add (a, s_micro (rid, first[mb], count[mb], (uint32_t) mb, 4, 5),
                           k);
                    size_t n = s_collect (a, out, 2);
                    if (k < 3) {
                        cr_assert_eq (n, 0, "no reply before the last micro-batch");
                        cr_assert_eq (zi_assembler_pending (a), 1);
                    }
                    else {
                        cr_assert_eq (n, 1);
                        s_check_reply (out[0], rid, 10, 5);
                        s_destroy_all (out, n);
                    }
                }
                cr_assert_eq (zi_assembler_pending (a), 0);
            }
        }
    }
    cr_assert_eq (orders, 24);
    zi_assembler_destroy (&a);
}

Test (assembler, drops_duplicate_micro_batches)
{
    zi_assembler_t *a = zi_assembler_new (NULL, 0, 16, 1000000);
    zi_msg_t *out[2];
    s_add (a, s_micro (5, 0, 2, 0, 3, 2), 0);
    s_add (a, s_micro (5, 0, 2, 0, 3, 2), 1);          //  again
    s_add (a, s_micro (5, 4, 1, 2, 3, 2), 2);
    s_add (a, s_micro (5, 4, 1, 2, 3, 2), 3);          //  again
    cr_assert_eq (s_collect (a, out, 2), 0);
    s_add (a, s_micro (5, 2, 2, 1, 3, 2), 4);
    size_t n = s_collect (a, out, 2);
    cr_assert_eq (n, 1);
    s_check_reply (out[0], 5, 5, 2);
    s_destroy_all (out, n);
    //  A copy after the reply left: dropped, and no new request is opened.
    s_add (a, s_micro (5, 2, 2, 1, 3, 2), 5);
    cr_assert_eq (s_collect (a, out, 2), 0);
    cr_assert_eq (zi_assembler_pending (a), 0);
    zi_assembler_stats_t stats;
    zi_assembler_stats (a, &stats);
    cr_assert_eq (stats.duplicates, 3);
    cr_assert_eq (stats.replies, 1);
    zi_assembler_destroy (&a);
}

Test (assembler, inconsistent_micro_batches_are_an_internal_error)
{
    zi_assembler_t *a = zi_assembler_new (NULL, 0, 16, 1000000);
    zi_msg_t *out[2];
    //  Different widths.
    s_add (a, s_micro (1, 0, 2, 0, 2, 3), 0);
    s_add (a, s_micro (1, 2, 2, 1, 2, 4), 0);
    size_t n = s_collect (a, out, 2);
    cr_assert_eq (n, 1);
    cr_assert_eq (zi_msg_cmd (out[0]), ZI_CMD_ERROR);
    cr_assert_eq (zi_msg_code (out[0]), ZI_CODE_INTERNAL);
    cr_assert (
        strstr (zi_msg_reason (out[0]), "micro-batch 1: output 'y' is float32[2,4]"),
        "%s", zi_msg_reason (out[0]));
    s_destroy_all (out, n);
    //  Rows out of place.
    s_add (a, s_micro (2, 0, 2, 0, 2, 3), 0);
    s_add (a, s_micro (2, 3, 2, 1, 2, 3), 0);
    n = s_collect (a, out, 2);
    cr_assert_eq (n, 1);
    cr_assert (strstr (zi_msg_reason (out[0]), "holds rows from 3, but the micro-batches "
                                               "before it end at row 2"),
               "%s", zi_msg_reason (out[0]));
    s_destroy_all (out, n);
    //  Disagreeing counts.
    s_add (a, s_micro (3, 0, 2, 0, 2, 3), 0);
    s_add (a, s_micro (3, 2, 2, 1, 3, 3), 0);
    n = s_collect (a, out, 2);
    cr_assert_eq (n, 1);
    cr_assert (strstr (zi_msg_reason (out[0]), "says 3 micro-batches, an earlier one 2"),
               "%s", zi_msg_reason (out[0]));
    cr_assert_eq (zi_assembler_pending (a), 0);
    s_destroy_all (out, n);
    //  Not a TASK.
    zi_msg_t *reply = zi_msg_new (ZI_CMD_REPLY);
    cr_assert_eq (zi_assembler_add (a, &reply, 0), ZI_ERR_INVALID);
    cr_assert_null (reply, "consumed even when refused");
    zi_assembler_destroy (&a);
}

//  ---------------------------------------------------------------------
//  Bounds

Test (assembler, drops_a_request_whose_micro_batches_do_not_all_arrive_in_time)
{
    zi_assembler_t *a = zi_assembler_new (NULL, 0, 16, 1000);
    zi_msg_t *out[2];
    cr_assert_eq (zi_assembler_timeout_us (a, 0), -1);
    s_add (a, s_micro (9, 0, 1, 0, 2, 2), 100);
    s_add (a, s_micro (10, 0, 1, 0, 2, 2), 600);
    cr_assert_eq (zi_assembler_timeout_us (a, 500), 600);
    cr_assert_eq (zi_assembler_expire (a, 1099), 0);
    cr_assert_eq (zi_assembler_expire (a, 1100), 1);
    cr_assert_eq (zi_assembler_pending (a), 1);
    cr_assert_eq (zi_assembler_timeout_us (a, 1100), 500);
    //  The late micro-batch of the expired request: dropped, no reply,
    //  nothing held; the other request completes normally.
    s_add (a, s_micro (9, 1, 1, 1, 2, 2), 1200);
    cr_assert_eq (s_collect (a, out, 2), 0);
    s_add (a, s_micro (10, 1, 1, 1, 2, 2), 1300);
    size_t n = s_collect (a, out, 2);
    cr_assert_eq (n, 1);
    s_check_reply (out[0], 10, 2, 2);
    s_destroy_all (out, n);
    cr_assert_eq (zi_assembler_pending (a), 0);
    zi_assembler_stats_t stats;
    zi_assembler_stats (a, &stats);
    cr_assert_eq (stats.expired, 1);
    cr_assert_eq (stats.duplicates, 1);
    //  Finished requests are forgotten after the expiry time too.
    zi_assembler_expire (a, 100000);
    s_add (a, s_micro (9, 0, 1, 0, 2, 2), 100000);
    cr_assert_eq (zi_assembler_pending (a), 1, "an old rid is a new request again");
    zi_assembler_destroy (&a);
}

Test (assembler, holds_at_most_queue_limit_requests_and_answers_busy_beyond)
{
    zi_assembler_t *a = zi_assembler_new (NULL, 0, 2, 1000000);
    zi_msg_t *out[4];
    s_add (a, s_micro (1, 0, 1, 0, 2, 2), 0);
    s_add (a, s_micro (2, 0, 1, 0, 2, 2), 0);
    s_add (a, s_micro (3, 0, 1, 0, 2, 2), 0);
    size_t n = s_collect (a, out, 4);
    cr_assert_eq (n, 1);
    cr_assert_eq (zi_msg_cmd (out[0]), ZI_CMD_ERROR);
    cr_assert_eq (zi_msg_id (out[0]), 3);
    cr_assert_eq (zi_msg_code (out[0]), ZI_CODE_BUSY);
    s_destroy_all (out, n);
    cr_assert_eq (zi_assembler_pending (a), 2);
    //  The refused request's other micro-batch: no second answer.
    s_add (a, s_micro (3, 1, 1, 1, 2, 2), 0);
    cr_assert_eq (s_collect (a, out, 4), 0);
    //  Coalesced tasks are never held, so never refused.
    zi_msg_req_t reqs[] = {{4, 0, 1}};
    s_add (a, s_task (reqs, 1, 0, 1, 2), 0);
    n = s_collect (a, out, 4);
    cr_assert_eq (n, 1);
    s_check_reply (out[0], 4, 1, 2);
    s_destroy_all (out, n);
    zi_assembler_stats_t stats;
    zi_assembler_stats (a, &stats);
    cr_assert_eq (stats.busy, 1);
    zi_assembler_destroy (&a);      //  frees the two held requests
    cr_assert_null (zi_assembler_new (NULL, 0, 0, 1000));
    cr_assert_null (zi_assembler_new (NULL, 0, 1, 0));
}

//  ---------------------------------------------------------------------
//  Post-processing

static void
s_naive_softmax (const float *x, float *y, int64_t n)
{
    double m = x[0], sum = 0;
    for (int64_t i = 1; i < n; i++) {
        m = x[i] > m ? x[i] : m;
    }
    for (int64_t i = 0; i < n; i++) {
        sum += exp (x[i] - m);
    }
    for (int64_t i = 0; i < n; i++) {
        y[i] = (float) (exp (x[i] - m) / sum);
    }
}

//  A TASK with three outputs of request rows: "y", "z", "w" float32
//  (rows, 5) with scrambled values, and "u" untouched.
static zi_msg_t *
s_post_task (const zi_msg_req_t *reqs, size_t nreqs, uint32_t mb, uint32_t nmb)
{
    zi_msg_t *task = zi_msg_new (ZI_CMD_TASK);
    zi_msg_set_reqs (task, reqs, nreqs);
    zi_msg_set_mb (task, mb, nmb);
    int64_t rows = 0;
    for (size_t k = 0; k < nreqs; k++) {
        rows += reqs[k].count;
    }
    const char *names[] = {"y", "z", "w", "u"};
    for (int t = 0; t < 4; t++) {
        zi_tensor_t *x = zi_tensor_new (ZI_DT_F32, 2, (int64_t[]){rows, 5});
        int64_t row = 0;
        for (size_t k = 0; k < nreqs; k++) {
            for (uint32_t r = 0; r < reqs[k].count; r++, row++) {
                for (int c = 0; c < 5; c++) {
                    uint64_t g = reqs[k].id * 31 + (reqs[k].first + r) * 7
                                 + (uint64_t) c * 3 + (uint64_t) t;
                    ((float *) x->data)[row * 5 + c] = (float) (g % 11) * 0.5f - 2.0f;
                }
            }
        }
        cr_assert_eq (zi_msg_add_tensor (task, names[t], &x), 0);
    }
    return task;
}

//  Check a reply against naive post-processing of s_post_task's values.
static void
s_check_post (const zi_msg_t *reply, uint64_t rid, int64_t rows)
{
    cr_assert_eq (zi_msg_cmd (reply), ZI_CMD_REPLY, "%s: %s",
                  zi_cmd_name (zi_msg_cmd (reply)),
                  zi_msg_reason (reply) ? zi_msg_reason (reply) : "");
    cr_assert_eq (zi_msg_tensor_count (reply), 5);
    cr_assert_str_eq (zi_msg_tensor_name (reply, 0), "y");
    cr_assert_str_eq (zi_msg_tensor_name (reply, 1), "z");
    cr_assert_str_eq (zi_msg_tensor_name (reply, 2), "w");
    cr_assert_str_eq (zi_msg_tensor_name (reply, 3), "w.values");
    cr_assert_str_eq (zi_msg_tensor_name (reply, 4), "u");
    const zi_tensor_t *y = zi_msg_tensor (reply, 0), *z = zi_msg_tensor (reply, 1);
    const zi_tensor_t *wi = zi_msg_tensor (reply, 2), *wv = zi_msg_tensor (reply, 3);
    const zi_tensor_t *u = zi_msg_tensor (reply, 4);
    cr_assert_eq (y->ne[0], rows);
    cr_assert_eq (z->dtype, ZI_DT_I64);
    cr_assert_eq (z->rank, 1);
    cr_assert_eq (z->ne[0], rows);
    cr_assert_eq (wi->dtype, ZI_DT_I64);
    cr_assert_eq (wi->ne[1], 2);
    cr_assert_eq (wv->dtype, ZI_DT_F32);
    for (int64_t r = 0; r < rows; r++) {
        float in[4][5];
        for (int t = 0; t < 4; t++) {
            for (int c = 0; c < 5; c++) {
                uint64_t g
                    = rid * 31 + (uint64_t) r * 7 + (uint64_t) c * 3 + (uint64_t) t;
                in[t][c] = (float) (g % 11) * 0.5f - 2.0f;
            }
        }
        float soft[5];
        s_naive_softmax (in[0], soft, 5);
        for (int c = 0; c < 5; c++) {
            cr_assert_float_eq (((const float *) y->data)[r * 5 + c], soft[c], 1e-6);
            cr_assert_eq (((const float *) u->data)[r * 5 + c], in[3][c], "u untouched");
        }
        int64_t arg = 0;
        for (int c = 1; c < 5; c++) {
            arg = in[1][c] > in[1][arg] ? c : arg;
        }
        cr_assert_eq (((const int64_t *) z->data)[r], arg);
        //  top-2 of w: the largest, then the largest of the rest
        int64_t i0 = 0;
        for (int c = 1; c < 5; c++) {
            i0 = in[2][c] > in[2][i0] ? c : i0;
        }
        int64_t i1 = i0 == 0 ? 1 : 0;
        for (int c = 0; c < 5; c++) {
            i1 = c != i0 && in[2][c] > in[2][i1] ? c : i1;
        }
        cr_assert_eq (((const int64_t *) wi->data)[r * 2], i0);
        cr_assert_eq (((const int64_t *) wi->data)[r * 2 + 1], i1);
        cr_assert_eq (((const float *) wv->data)[r * 2], in[2][i0]);
        cr_assert_eq (((const float *) wv->data)[r * 2 + 1], in[2][i1]);
    }
}

Test (assembler, applies_the_post_process_ops_of_the_plan)
{
    zi_plan_op_t softmax = {.kind = ZI_PLAN_OP_SOFTMAX, .axis = -1};
    zi_plan_op_t argmax = {.kind = ZI_PLAN_OP_ARGMAX, .axis = -1};
    zi_plan_op_t topk = {.kind = ZI_PLAN_OP_TOPK, .axis = -1, .k = 2};
    zi_plan_io_t post[3];
    memset (post, 0, sizeof post);
    post[0].tensor.name = (char *) "y";
    post[0].ops = &softmax;
    post[0].n_ops = 1;
    post[1].tensor.name = (char *) "z";
    post[1].ops = &argmax;
    post[1].n_ops = 1;
    post[2].tensor.name = (char *) "w";
    post[2].ops = &topk;
    post[2].n_ops = 1;
    zi_assembler_t *a = zi_assembler_new (post, 3, 16, 1000000);
    zi_msg_t *out[4];
    //  Coalesced: per request, after cutting.
    zi_msg_req_t reqs[] = {{21, 0, 3}, {22, 0, 2}};
    s_add (a, s_post_task (reqs, 2, 0, 1), 0);
    size_t n = s_collect (a, out, 4);
    cr_assert_eq (n, 2);
    s_check_post (out[0], 21, 3);
    s_check_post (out[1], 22, 2);
    s_destroy_all (out, n);
    //  Micro-batches: after concatenating.
    zi_msg_req_t m1 = {23, 2, 2}, m0 = {23, 0, 2};
    s_add (a, s_post_task (&m1, 1, 1, 2), 0);
    s_add (a, s_post_task (&m0, 1, 0, 2), 0);
    n = s_collect (a, out, 4);
    cr_assert_eq (n, 1);
    s_check_post (out[0], 23, 4);
    s_destroy_all (out, n);
    zi_assembler_destroy (&a);
}

Test (assembler, a_declared_output_the_task_lacks_is_an_internal_error)
{
    zi_plan_op_t argmax = {.kind = ZI_PLAN_OP_ARGMAX, .axis = -1};
    zi_plan_io_t post;
    memset (&post, 0, sizeof post);
    post.tensor.name = (char *) "logits";
    post.ops = &argmax;
    post.n_ops = 1;
    zi_assembler_t *a = zi_assembler_new (&post, 1, 16, 1000000);
    zi_msg_req_t reqs[] = {{1, 0, 1}};
    s_add (a, s_task (reqs, 1, 0, 1, 3), 0);
    zi_msg_t *out[2];
    size_t n = s_collect (a, out, 2);
    cr_assert_eq (n, 1);
    cr_assert_eq (zi_msg_code (out[0]), ZI_CODE_INTERNAL);
    cr_assert (strstr (zi_msg_reason (out[0]), "output 'logits'"), "%s",
               zi_msg_reason (out[0]));
    s_destroy_all (out, n);
    zi_assembler_destroy (&a);
}

//  ---------------------------------------------------------------------
//  Partition and aggregate together: whatever the batching, the arrival
//  order and the duplicates, each request gets back its own rows, once.

Test (assembler, batcher_then_assembler_give_each_request_its_rows_once)
{
    enum { N = 300, MAXT = 4096 };
    srand (777);
    zi_batcher_t *b = zi_batcher_new (4, 9, 500);
    zi_assembler_t *a = zi_assembler_new (NULL, 0, 1024, 1000000000);
    int64_t rows[N + 1];
    zi_msg_t **tasks = (zi_msg_t **) calloc (MAXT, sizeof *tasks);
    size_t ntasks = 0;
    for (uint64_t rid = 1; rid <= N; rid++) {
        rows[rid] = 1 + rand () % 11;
        //  The request's input "y" (rows, 3) is s_value (rid, r, c).
        zi_msg_req_t req = {rid, 0, (uint32_t) rows[rid]};
        zi_msg_t *task = s_task (&req, 1, 0, 1, 3);
        char err[256];
        cr_assert_eq (zi_batcher_add (b, &task, (int64_t) rid * 50, err, sizeof err), 0,
                      "%s", err);
        zi_batcher_expire (b, (int64_t) rid * 50);
        zi_msg_t *msg;
        while ((msg = zi_batcher_next (b))) {
            cr_assert_lt (ntasks, MAXT);
            tasks[ntasks++] = msg;
        }
    }
    zi_batcher_flush (b, N * 50 + 1);
    zi_msg_t *msg;
    while ((msg = zi_batcher_next (b))) {
        tasks[ntasks++] = msg;
    }
    //  The "model" is the identity: the tasks come back as they went, in a
    //  shuffled order, one in five of them twice.
    size_t total = ntasks;
    for (size_t i = 0; i < ntasks; i++) {
        if (rand () % 5 == 0) {
            zi_msg_t *copy = zi_msg_new (ZI_CMD_TASK);
            size_t nreqs;
            const zi_msg_req_t *reqs = zi_msg_reqs (tasks[i], &nreqs);
            zi_msg_set_reqs (copy, reqs, nreqs);
            zi_msg_set_mb (copy, zi_msg_mb (tasks[i]), zi_msg_nmb (tasks[i]));
            zi_msg_add_tensor_copy (copy, "y", zi_msg_tensor_find (tasks[i], "y"));
            tasks[total++] = copy;
        }
    }
    for (size_t i = total - 1; i > 0; i--) {
        size_t j = (size_t) rand () % (i + 1);
        zi_msg_t *t = tasks[i];
        tasks[i] = tasks[j];
        tasks[j] = t;
    }
    int replies[N + 1];
    memset (replies, 0, sizeof replies);
    for (size_t i = 0; i < total; i++) {
        s_add (a, tasks[i], (int64_t) i);
        while ((msg = zi_assembler_next (a))) {
            uint64_t rid = zi_msg_id (msg);
            cr_assert (rid >= 1 && rid <= N);
            s_check_reply (msg, rid, rows[rid], 3);
            replies[rid]++;
            zi_msg_destroy (&msg);
        }
    }
    for (uint64_t rid = 1; rid <= N; rid++) {
        cr_assert_eq (replies[rid], 1, "request %llu: exactly one reply",
                      (unsigned long long) rid);
    }
    cr_assert_eq (zi_assembler_pending (a), 0);
    zi_assembler_stats_t stats;
    zi_assembler_stats (a, &stats);
    cr_assert_eq (stats.replies, N);
    cr_assert_gt (stats.duplicates, 0);
    free (tasks);
    zi_batcher_destroy (&b);
    zi_assembler_destroy (&a);
}
