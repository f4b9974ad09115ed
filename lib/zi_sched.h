/*  zi_sched.h - the broker's scheduling rules, as pure logic.

    Three decisions the broker takes for every task, kept here so that they
    can be tested without sockets (tests/test_sched.c):

    1. Which replica of a segment runs the next task (zi_sched_sel_*).
       Replica i of capacity R_i must receive T_i = T * R_i / sum(R) of the
       T tasks of its segment, within one task at every prefix of the
       sequence. The selector works on "assigned so far" counts a_i within
       a window (the time since the set of replicas or their capacities
       last changed) and gives the next task to the replica with the
       earliest deadline (a_i + 1 - d) / p_i, p_i = R_i / sum(R), among the
       replicas that are not ahead of their quota by more than d =
       1/(2n-2). This is Tijdeman's rule for the "chairman assignment
       problem"; it keeps |a_i - t * p_i| <= 1 - 1/(2n-2) < 1 for every
       replica at every t. (The plain rule "smallest (a_i + 1) / R_i" is
       that rule without the eligibility test; it drifts up to 3 tasks off
       with R = 1:1:1:1:1:10.)

           zi_sched_sel_t *sel = zi_sched_sel_new ();
           int a = zi_sched_sel_add (sel, 3.0);     //  slots 0 and 1
           int b = zi_sched_sel_add (sel, 1.0);
           int next = zi_sched_sel_next (sel);      //  who must get it
           if (has_credit (next)) {                 //  else: wait for it
               send_task (next);
               zi_sched_sel_commit (sel, next);
           }

       The selector never skips a replica that has no credit: the caller
       waits for it (strict shares), so shares hold exactly.

    2. Which priority class gets the next dispatch slot (zi_sched_prio_*).
       Weighted mode: among the classes with queued work, class i gets the
       share P_i = W_i^2 / sum_j W_j^2 (the architecture's (W_i / sum W) *
       W_i, normalised), spread evenly by smooth weighted round robin over
       the weights W_i^2. Strict mode: the lowest class index with work.

    3. Which aggregator receives a request's outputs (zi_sched_hrw_*):
       weighted rendezvous hashing. Node j scores -C_j / ln(u_j) with u_j a
       hash of (key, name_j) mapped into (0,1); the highest score wins. A key
       lands on node j with probability C_j / sum(C), the same key always
       lands on the same node, and removing a node moves only its keys.
*/
#ifndef ZI_SCHED_H_INCLUDED
#define ZI_SCHED_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zi_error.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Priority classes the picker handles (the plan allows 16).
#define ZI_SCHED_MAX_CLASSES 32

//  ---------------------------------------------------------------------
//  Weighted replica selector

typedef struct zi_sched_sel zi_sched_sel_t;

//  Create an empty selector. NULL when out of memory.
zi_sched_sel_t *zi_sched_sel_new (void);

//  Destroy; sets *self_p to NULL. Safe on NULL.
void zi_sched_sel_destroy (zi_sched_sel_t **self_p);

//  Add a replica of capacity R (finite, >= 0; 0 keeps it out of the
//  rotation). Returns its slot (>= 0, reused after zi_sched_sel_remove), or
//  ZI_ERR_INVALID / ZI_ERR_NOMEM. Starts a new window.
int zi_sched_sel_add (zi_sched_sel_t *self, double capacity);

//  Change a replica's capacity. Returns 0 or ZI_ERR_INVALID. Starts a new
//  window when the value changes.
int zi_sched_sel_set_capacity (zi_sched_sel_t *self, int slot, double capacity);

//  Take a replica out of the rotation (it died or left); its share goes to
//  the others from the new window on. Safe on a free slot.
void zi_sched_sel_remove (zi_sched_sel_t *self, int slot);

//  The slot that must receive the next task, or -1 when no replica has a
//  capacity above 0. Does not change the selector.
int zi_sched_sel_next (const zi_sched_sel_t *self);

//  Record that the next task went to slot (normally zi_sched_sel_next's).
void zi_sched_sel_commit (zi_sched_sel_t *self, int slot);

//  Tasks given to slot in the current window, and in the window in all.
uint64_t zi_sched_sel_assigned (const zi_sched_sel_t *self, int slot);
uint64_t zi_sched_sel_window (const zi_sched_sel_t *self);

//  Replicas in the rotation (capacity > 0).
size_t zi_sched_sel_size (const zi_sched_sel_t *self);

//  ---------------------------------------------------------------------
//  Priority class picker

typedef struct zi_sched_prio zi_sched_prio_t;

//  Create a picker for n classes (1..ZI_SCHED_MAX_CLASSES) of weights W_i
//  (finite, > 0). strict: lowest index first. NULL on bad arguments or
//  when out of memory.
zi_sched_prio_t *zi_sched_prio_new (const double *weights, size_t n, bool strict);

//  Destroy; sets *self_p to NULL. Safe on NULL.
void zi_sched_prio_destroy (zi_sched_prio_t **self_p);

//  Pick the class of the next dispatch among those whose bit (1u << i) is
//  set in ready, and record the pick. Returns the class, or -1 when no
//  known class is ready.
int zi_sched_prio_pick (zi_sched_prio_t *self, uint32_t ready);

//  The share P_i class i gets while the classes in `among` compete:
//  W_i^2 / sum W_j^2 (weighted), 1 or 0 (strict). 0 when i is not in among.
double zi_sched_prio_share (const zi_sched_prio_t *self, size_t i, uint32_t among);

//  Of two classes, the one the picker favours (the larger weight, the
//  lower index on a tie; strict: the lower index). A task holding requests
//  of several classes is queued in the most favoured one.
int zi_sched_prio_favoured (const zi_sched_prio_t *self, int a, int b);

//  ---------------------------------------------------------------------
//  Weighted rendezvous hashing

//  The score of node `name` of capacity C for key: -C / ln(u), u =
//  hash(key, name) in (0,1). 0 when capacity <= 0 or name is NULL.
double zi_sched_hrw_score (uint64_t key, const char *name, double capacity);

//  The index of the node with the highest score for key among n nodes
//  (names[i], capacities[i]), or -1 when none has a capacity above 0. Ties
//  go to the lower index.
int zi_sched_hrw_pick (uint64_t key, const char *const *names, const double *capacities,
                       size_t n);

#ifdef __cplusplus
}
#endif

#endif
