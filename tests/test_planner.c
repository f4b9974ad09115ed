/*  test_planner.c - cut selection against brute force; bad splits. */
#include <criterion/criterion.h>
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "zi_planner.h"

//  Brute force: every way to cut n nodes into k non-empty segments.
static double
s_brute (int n, const double *cost, int k, const double *cap, int s, int start)
{
    if (s == k - 1) {
        double c = 0;
        for (int i = start; i < n; i++) {
            c += cost[i];
        }
        return c / cap[s];
    }
    double best = DBL_MAX;
    //  segment s = start..end, leaving at least one node per later segment
    for (int end = start; end <= n - (k - s); end++) {
        double c = 0;
        for (int i = start; i <= end; i++) {
            c += cost[i];
        }
        double here = c / cap[s];
        double rest = s_brute (n, cost, k, cap, s + 1, end + 1);
        double m = here > rest ? here : rest;
        if (m < best) {
            best = m;
        }
    }
    return best;
}

Test (planner, matches_brute_force_on_random_costs)
{
    srand (7);
    char err[256];
    for (int trial = 0; trial < 300; trial++) {
        int n = 1 + rand () % 12;
        int k = 1 + rand () % (n < 4 ? n : 4);
        double cost[12], cap[4];
        for (int i = 0; i < n; i++) {
            cost[i] = (double) (rand () % 100);
        }
        for (int s = 0; s < k; s++) {
            cap[s] = 0.5 + (double) (rand () % 4);
        }
        int last[4];
        double bottleneck;
        cr_assert_eq (zi_planner_cut (n, cost, NULL, k, cap, 0.0, last, &bottleneck,
                                      err, sizeof err), 0, "%s", err);
        double want = s_brute (n, cost, k, cap, 0, 0);
        cr_assert_float_eq (bottleneck, want, 1e-9, "trial %d n=%d k=%d", trial, n, k);
        //  segments are contiguous, non-empty, and cover every node
        cr_assert_eq (last[k - 1], n - 1);
        for (int s = 1; s < k; s++) {
            cr_assert_gt (last[s], last[s - 1]);
        }
        cr_assert_geq (last[0], 0);
    }
}

Test (planner, capacity_3_to_1_gives_three_quarters_of_the_work)
{
    //  8 equal nodes, segment 0 served by capacity 3 and segment 1 by 1:
    //  cost/capacity is balanced at 6 nodes vs 2.
    double cost[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    double cap[2] = {3, 1};
    int last[2];
    double b;
    char err[256];
    cr_assert_eq (zi_planner_cut (8, cost, NULL, 2, cap, 0.0, last, &b, err, sizeof err), 0);
    cr_assert_eq (last[0], 5);
    cr_assert_float_eq (b, 2.0, 1e-12);
}

Test (planner, prefers_small_crossing_tensors_within_tolerance)
{
    //  Two cuts are equally balanced within 10%: after node 1 (big tensor)
    //  or after node 2 (small tensor). The planner must take the small one.
    double cost[4] = {10, 10, 1, 10};
    double cross[4] = {100, 1000000, 10, 0};
    double cap[2] = {1, 1};
    int last[2];
    double b;
    char err[256];
    cr_assert_eq (zi_planner_cut (4, cost, cross, 2, cap, 0.10, last, &b, err, sizeof err), 0);
    cr_assert_eq (last[0], 2, "cut after node %d", last[0]);
    //  with no tolerance the balanced cut wins regardless of bytes
    cr_assert_eq (zi_planner_cut (4, cost, cross, 2, cap, 0.0, last, &b, err, sizeof err), 0);
    cr_assert_float_eq (b, 20.0, 1e-12);
}

Test (planner, impossible_splits_are_clear_errors)
{
    double cost[3] = {1, 2, 3};
    double cap[4] = {1, 1, 1, 1};
    int last[4];
    char err[256];
    cr_assert_eq (zi_planner_cut (3, cost, NULL, 4, cap, 0, last, NULL, err, sizeof err),
                  ZI_ERR_INVALID);
    cr_assert (strstr (err, "cannot cut 3 nodes into 4 segments"), "%s", err);
    cr_assert_eq (zi_planner_cut (3, cost, NULL, 0, cap, 0, last, NULL, err, sizeof err),
                  ZI_ERR_INVALID);
    double bad[2] = {1, -2};
    cr_assert_eq (zi_planner_cut (3, cost, NULL, 2, bad, 0, last, NULL, err, sizeof err),
                  ZI_ERR_INVALID);
    cr_assert (strstr (err, "capacity"), "%s", err);
}

Test (planner, cuts_only_where_allowed)
{
    //  The balanced cut (after node 1) is forbidden, as when a tensor
    //  without the batch axis crosses it: the best allowed one is taken.
    double cost[4] = {10, 10, 10, 10};
    double cap[2] = {1, 1};
    bool allowed[4] = {true, false, true, true};
    int last[2];
    double b;
    char err[256];
    cr_assert_eq (zi_planner_cut_allowed (4, cost, NULL, 2, cap, allowed, 0.0, last, &b, err,
                                          sizeof err), 0, "%s", err);
    cr_assert (last[0] == 0 || last[0] == 2, "cut after node %d", last[0]);
    cr_assert_float_eq (b, 30.0, 1e-12);
    //  Every segment boundary lands on an allowed place.
    double cost6[6] = {5, 1, 1, 1, 1, 5};
    double cap3[3] = {1, 1, 1};
    bool allow6[6] = {false, true, false, false, true, true};
    int last3[3];
    cr_assert_eq (zi_planner_cut_allowed (6, cost6, NULL, 3, cap3, allow6, 0.0, last3, &b, err,
                                          sizeof err), 0, "%s", err);
    cr_assert (allow6[last3[0]] && allow6[last3[1]] && last3[2] == 5);
    //  Fewer allowed places than cuts: a clear error.
    bool none[4] = {false, false, true, true};
    double cap3b[3] = {1, 1, 1};
    int l3[3];
    cr_assert_eq (zi_planner_cut_allowed (4, cost, NULL, 3, cap3b, none, 0.0, l3, &b, err,
                                          sizeof err), ZI_ERR_INVALID);
    cr_assert (strstr (err, "only 1 of the 3 places"), "%s", err);
}
