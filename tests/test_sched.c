/*  test_sched.c - the broker's scheduling rules: replica shares, priority
    shares, rendezvous hashing.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "zi_sched.h"

//  Give T tasks to the replicas of capacities R[0..n) and check that at
//  every prefix t each replica holds t * R_i / sum(R) +- 1 tasks.
static void
s_check_shares (const double *R, size_t n, int T)
{
    zi_sched_sel_t *sel = zi_sched_sel_new ();
    cr_assert_not_null (sel);
    int slot[8];
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        slot[i] = zi_sched_sel_add (sel, R[i]);
        cr_assert_geq (slot[i], 0);
        total += R[i];
    }
    long got[8] = { 0 };
    for (int t = 1; t <= T; t++) {
        int next = zi_sched_sel_next (sel);
        cr_assert_geq (next, 0);
        zi_sched_sel_commit (sel, next);
        for (size_t i = 0; i < n; i++) {
            if (slot[i] == next) {
                got[i]++;
            }
        }
        for (size_t i = 0; i < n; i++) {
            double want = t * R[i] / total;
            cr_assert_leq (fabs ((double)got[i] - want), 1.0,
                           "t=%d replica %zu: %ld tasks, want %.2f +- 1", t, i, got[i],
                           want);
            cr_assert_eq (zi_sched_sel_assigned (sel, slot[i]), (uint64_t)got[i]);
        }
    }
    cr_assert_eq (zi_sched_sel_window (sel), (uint64_t)T);
    zi_sched_sel_destroy (&sel);
    cr_assert_null (sel);
}

Test (sched, shares_3_to_1)
{
    s_check_shares ((double[]){ 3, 1 }, 2, 2000);
}

Test (sched, shares_1_2_5)
{
    s_check_shares ((double[]){ 1, 2, 5 }, 3, 2000);
}

Test (sched, shares_many_unequal)
{
    //  The plain "smallest (a+1)/R" rule drifts 3 tasks off here.
    s_check_shares ((double[]){ 1, 1, 1, 1, 1, 10 }, 6, 2000);
    s_check_shares ((double[]){ 0.3, 0.7, 1.9 }, 3, 2000);
    s_check_shares ((double[]){ 1, 2, 3, 4, 5, 6, 7, 8 }, 8, 2000);
}

Test (sched, dead_replica_share_moves)
{
    zi_sched_sel_t *sel = zi_sched_sel_new ();
    int a = zi_sched_sel_add (sel, 1);
    int b = zi_sched_sel_add (sel, 1);
    int c = zi_sched_sel_add (sel, 2);
    for (int t = 0; t < 1000; t++) {
        zi_sched_sel_commit (sel, zi_sched_sel_next (sel));
    }
    cr_assert_eq (zi_sched_sel_assigned (sel, c), 500);
    //  c dies: from now on a and b share everything 1:1.
    zi_sched_sel_remove (sel, c);
    cr_assert_eq (zi_sched_sel_size (sel), 2);
    long got[2] = { 0 };
    for (int t = 1; t <= 1000; t++) {
        int next = zi_sched_sel_next (sel);
        cr_assert (next == a || next == b, "task %d went to slot %d", t, next);
        zi_sched_sel_commit (sel, next);
        got[next == b]++;
        cr_assert_leq (labs (got[0] - got[1]), 1);
    }
    //  A newcomer of capacity 2 takes half of what follows, not everything
    //  until it has caught up with the others.
    int d = zi_sched_sel_add (sel, 2);
    cr_assert_eq (d, c, "a freed slot is reused");
    long dn = 0;
    for (int t = 1; t <= 400; t++) {
        int next = zi_sched_sel_next (sel);
        zi_sched_sel_commit (sel, next);
        dn += next == d;
        cr_assert_leq (fabs ((double)dn - t / 2.0), 1.0);
    }
    //  Capacity 0 keeps a replica out; no replica at all means -1.
    cr_assert_eq (zi_sched_sel_set_capacity (sel, d, 0), 0);
    for (int t = 0; t < 10; t++) {
        int next = zi_sched_sel_next (sel);
        cr_assert_neq (next, d);
        zi_sched_sel_commit (sel, next);
    }
    zi_sched_sel_remove (sel, a);
    zi_sched_sel_remove (sel, b);
    zi_sched_sel_remove (sel, d);
    cr_assert_eq (zi_sched_sel_next (sel), -1);
    cr_assert_eq (zi_sched_sel_add (sel, -1), ZI_ERR_INVALID);
    cr_assert_eq (zi_sched_sel_add (sel, NAN), ZI_ERR_INVALID);
    cr_assert_eq (zi_sched_sel_set_capacity (sel, 99, 1), ZI_ERR_INVALID);
    zi_sched_sel_destroy (&sel);
}

Test (sched, waiting_keeps_strict_shares)
{
    //  The caller waits for the chosen replica instead of skipping it: the
    //  choice stays the same until it is committed.
    zi_sched_sel_t *sel = zi_sched_sel_new ();
    zi_sched_sel_add (sel, 3);
    zi_sched_sel_add (sel, 1);
    int first = zi_sched_sel_next (sel);
    cr_assert_eq (zi_sched_sel_next (sel), first);
    cr_assert_eq (zi_sched_sel_window (sel), 0);
    zi_sched_sel_destroy (&sel);
}

//  Pick n times with every class ready and compare the counts with P_i.
static void
s_check_prio (const double *W, size_t k, int n)
{
    zi_sched_prio_t *prio = zi_sched_prio_new (W, k, false);
    cr_assert_not_null (prio);
    uint32_t all = (1u << k) - 1;
    long got[8] = { 0 };
    for (int i = 0; i < n; i++) {
        int c = zi_sched_prio_pick (prio, all);
        cr_assert (c >= 0 && (size_t)c < k);
        got[c]++;
    }
    double sum2 = 0;
    for (size_t i = 0; i < k; i++) {
        sum2 += W[i] * W[i];
    }
    for (size_t i = 0; i < k; i++) {
        double want = W[i] * W[i] / sum2;
        cr_assert_float_eq (zi_sched_prio_share (prio, i, all), want, 1e-12);
        double share = (double)got[i] / n;
        cr_assert_leq (fabs (share - want), 0.01, "class %zu: %.4f, want %.4f", i, share,
                       want);
    }
    zi_sched_prio_destroy (&prio);
    cr_assert_null (prio);
}

Test (sched, priority_shares_4_to_1)
{
    //  P = 16/17 : 1/17.
    s_check_prio ((double[]){ 4, 1 }, 2, 10000);
}

Test (sched, priority_shares_1_2_3)
{
    //  P = 1/14 : 4/14 : 9/14.
    s_check_prio ((double[]){ 1, 2, 3 }, 3, 10000);
}

Test (sched, priority_only_ready_classes_compete)
{
    zi_sched_prio_t *prio = zi_sched_prio_new ((double[]){ 1, 2, 3 }, 3, false);
    //  Only classes 0 and 1 have work: they split 1:4.
    long got[3] = { 0 };
    for (int i = 0; i < 5000; i++) {
        got[zi_sched_prio_pick (prio, 0x3)]++;
    }
    cr_assert_eq (got[2], 0);
    cr_assert_eq (got[0], 1000);
    cr_assert_eq (got[1], 4000);
    cr_assert_eq (zi_sched_prio_pick (prio, 0), -1);
    cr_assert_eq (zi_sched_prio_pick (prio, 0x8), -1, "class 3 is unknown");
    cr_assert_eq (zi_sched_prio_pick (prio, 0x4), 2);
    cr_assert_eq (zi_sched_prio_favoured (prio, 0, 2), 2);
    cr_assert_eq (zi_sched_prio_favoured (prio, 1, 0), 1);
    zi_sched_prio_destroy (&prio);
}

Test (sched, priority_strict)
{
    zi_sched_prio_t *prio = zi_sched_prio_new ((double[]){ 1, 5, 3 }, 3, true);
    cr_assert_eq (zi_sched_prio_pick (prio, 0x7), 0);
    cr_assert_eq (zi_sched_prio_pick (prio, 0x6), 1);
    cr_assert_eq (zi_sched_prio_pick (prio, 0x4), 2);
    cr_assert_eq (zi_sched_prio_pick (prio, 0x6), 1);
    cr_assert_float_eq (zi_sched_prio_share (prio, 1, 0x6), 1.0, 1e-12);
    cr_assert_float_eq (zi_sched_prio_share (prio, 2, 0x6), 0.0, 1e-12);
    cr_assert_eq (zi_sched_prio_favoured (prio, 2, 1), 1);
    zi_sched_prio_destroy (&prio);
    cr_assert_null (zi_sched_prio_new ((double[]){ 1, 0 }, 2, false));
    cr_assert_null (zi_sched_prio_new ((double[]){ 1 }, 0, false));
}

Test (sched, rendezvous_stable_and_minimal_moves)
{
    const char *names[] = { "agg0", "agg1", "agg2", "agg3" };
    double caps[] = { 1, 1, 1, 1 };
    int owner[5000];
    for (uint64_t key = 0; key < 5000; key++) {
        owner[key] = zi_sched_hrw_pick (key, names, caps, 4);
        cr_assert (owner[key] >= 0 && owner[key] < 4);
        cr_assert_eq (zi_sched_hrw_pick (key, names, caps, 4), owner[key]);
    }
    //  Remove agg2 (capacity 0 = gone): only its keys move.
    caps[2] = 0;
    int moved = 0;
    for (uint64_t key = 0; key < 5000; key++) {
        int now = zi_sched_hrw_pick (key, names, caps, 4);
        cr_assert_neq (now, 2);
        if (owner[key] != 2) {
            cr_assert_eq (now, owner[key], "key %lu moved from a live node",
                          (unsigned long)key);
        }
        else {
            moved++;
        }
    }
    cr_assert_gt (moved, 1000);
    cr_assert_lt (moved, 1500);
    //  The same holds when the node list itself shrinks.
    const char *three[] = { "agg0", "agg1", "agg3" };
    for (uint64_t key = 0; key < 5000; key++) {
        if (owner[key] != 2) {
            int now = zi_sched_hrw_pick (key, three, (double[]){ 1, 1, 1 }, 3);
            cr_assert_str_eq (three[now], names[owner[key]]);
        }
    }
    cr_assert_eq (zi_sched_hrw_pick (1, names, (double[]){ 0, 0, 0, 0 }, 4), -1);
    cr_assert_eq (zi_sched_hrw_pick (1, NULL, NULL, 0), -1);
}

Test (sched, rendezvous_follows_capacity)
{
    const char *names[] = { "a", "b", "c" };
    double caps[] = { 1, 2, 5 };
    long got[3] = { 0 };
    const int N = 100000;
    for (uint64_t key = 1; key <= (uint64_t)N; key++) {
        got[zi_sched_hrw_pick (key, names, caps, 3)]++;
    }
    for (int i = 0; i < 3; i++) {
        double share = (double)got[i] / N;
        double want = caps[i] / 8.0;
        cr_assert_leq (fabs (share - want), 0.02 * want + 1e-9,
                       "node %d: %.4f, want %.4f", i, share, want);
    }
}
