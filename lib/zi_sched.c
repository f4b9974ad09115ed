/*  zi_sched.c - replica selection, priority classes, rendezvous hashing;
    see zi_sched.h.
*/
#include "zi_sched.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

//  ---------------------------------------------------------------------
//  Weighted replica selector

typedef struct {
    bool used;         //  slot holds a replica
    double capacity;   //  R_i; 0 = out of the rotation
    uint64_t assigned; //  a_i in the current window
} s_slot_t;

struct zi_sched_sel {
    s_slot_t *slots;
    size_t nslots;
    uint64_t window; //  tasks given in the current window
};

//  A window must stay small enough that t * p_i is exact in a double;
//  past this many tasks a new window starts (a ~1-task hiccup per 2^40).
#define S_WINDOW_MAX (1ull << 40)

zi_sched_sel_t *
zi_sched_sel_new (void)
{
    return (zi_sched_sel_t *)calloc (1, sizeof (zi_sched_sel_t));
}

void
zi_sched_sel_destroy (zi_sched_sel_t **self_p)
{
    if (self_p && *self_p) {
        free ((*self_p)->slots);
        free (*self_p);
        *self_p = NULL;
    }
}

//  Shares are promised per window: a replica that joins late must not be
//  handed every task until it has "caught up" with the others' counts, and
//  a replica that leaves must not leave a debt behind. So every change of
//  membership or capacity starts counting afresh.
static void
s_new_window (zi_sched_sel_t *self)
{
    for (size_t i = 0; i < self->nslots; i++) {
        self->slots[i].assigned = 0;
    }
    self->window = 0;
}

static bool
s_capacity_ok (double capacity)
{
    return isfinite (capacity) && capacity >= 0;
}

int
zi_sched_sel_add (zi_sched_sel_t *self, double capacity)
{
    assert (self);
    if (!s_capacity_ok (capacity)) {
        return ZI_ERR_INVALID;
    }
    size_t slot = 0;
    while (slot < self->nslots && self->slots[slot].used) {
        slot++;
    }
    if (slot == self->nslots) {
        if (self->nslots >= 1u << 20) {
            return ZI_ERR_INVALID;
        }
        s_slot_t *grown
            = (s_slot_t *)realloc (self->slots, (self->nslots + 1) * sizeof *grown);
        if (!grown) {
            return ZI_ERR_NOMEM;
        }
        self->slots = grown;
        self->nslots++;
    }
    self->slots[slot] = (s_slot_t){ true, capacity, 0 };
    s_new_window (self);
    return (int)slot;
}

static bool
s_valid_slot (const zi_sched_sel_t *self, int slot)
{
    return slot >= 0 && (size_t)slot < self->nslots && self->slots[slot].used;
}

int
zi_sched_sel_set_capacity (zi_sched_sel_t *self, int slot, double capacity)
{
    assert (self);
    if (!s_valid_slot (self, slot) || !s_capacity_ok (capacity)) {
        return ZI_ERR_INVALID;
    }
    if (self->slots[slot].capacity != capacity) {
        self->slots[slot].capacity = capacity;
        s_new_window (self);
    }
    return ZI_OK;
}

void
zi_sched_sel_remove (zi_sched_sel_t *self, int slot)
{
    assert (self);
    if (s_valid_slot (self, slot)) {
        self->slots[slot] = (s_slot_t){ false, 0, 0 };
        s_new_window (self);
    }
}

int
zi_sched_sel_next (const zi_sched_sel_t *self)
{
    assert (self);
    double total = 0;
    size_t n = 0;
    for (size_t i = 0; i < self->nslots; i++) {
        if (self->slots[i].used && self->slots[i].capacity > 0) {
            total += self->slots[i].capacity;
            n++;
        }
    }
    if (n == 0) {
        return -1;
    }
    //  Tijdeman: at step t, a replica is eligible while it is not ahead of
    //  its quota t * p_i by more than 1 - d; among the eligible ones the
    //  earliest deadline (a_i + 1 - d) / p_i goes first.
    double t = (double)self->window + 1;
    double d = n > 1 ? 1.0 / (double)(2 * n - 2) : 0;
    int best = -1;
    double best_deadline = 0;
    int behind = -1; //  fallback: the replica furthest behind
    double behind_by = 0;
    for (size_t i = 0; i < self->nslots; i++) {
        const s_slot_t *s = &self->slots[i];
        if (!s->used || !(s->capacity > 0)) {
            continue;
        }
        double p = s->capacity / total;
        double lag = t * p - (double)s->assigned;
        if (behind < 0 || lag > behind_by) {
            behind = (int)i;
            behind_by = lag;
        }
        if (lag < d - 1e-9) {
            continue;
        }
        double deadline = ((double)s->assigned + 1 - d) / p;
        if (best < 0 || deadline < best_deadline - 1e-12) {
            best = (int)i;
            best_deadline = deadline;
        }
    }
    //  The theorem guarantees an eligible replica; rounding must not turn
    //  that into "nobody".
    return best >= 0 ? best : behind;
}

void
zi_sched_sel_commit (zi_sched_sel_t *self, int slot)
{
    assert (self);
    if (!s_valid_slot (self, slot)) {
        return;
    }
    if (self->window >= S_WINDOW_MAX) {
        s_new_window (self);
    }
    self->slots[slot].assigned++;
    self->window++;
}

uint64_t
zi_sched_sel_assigned (const zi_sched_sel_t *self, int slot)
{
    assert (self);
    return s_valid_slot (self, slot) ? self->slots[slot].assigned : 0;
}

uint64_t
zi_sched_sel_window (const zi_sched_sel_t *self)
{
    assert (self);
    return self->window;
}

size_t
zi_sched_sel_size (const zi_sched_sel_t *self)
{
    assert (self);
    size_t n = 0;
    for (size_t i = 0; i < self->nslots; i++) {
        n += self->slots[i].used && self->slots[i].capacity > 0;
    }
    return n;
}

//  ---------------------------------------------------------------------
//  Priority class picker

struct zi_sched_prio {
    size_t n;
    bool strict;
    double weight[ZI_SCHED_MAX_CLASSES];  //  W_i
    double current[ZI_SCHED_MAX_CLASSES]; //  smooth WRR state
};

zi_sched_prio_t *
zi_sched_prio_new (const double *weights, size_t n, bool strict)
{
    if (!weights || n == 0 || n > ZI_SCHED_MAX_CLASSES) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        //  Squared weights must stay finite.
        if (!isfinite (weights[i]) || !(weights[i] > 0) || weights[i] > 1e150) {
            return NULL;
        }
    }
    zi_sched_prio_t *self = (zi_sched_prio_t *)calloc (1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->n = n;
    self->strict = strict;
    memcpy (self->weight, weights, n * sizeof *weights);
    return self;
}

void
zi_sched_prio_destroy (zi_sched_prio_t **self_p)
{
    if (self_p && *self_p) {
        free (*self_p);
        *self_p = NULL;
    }
}

int
zi_sched_prio_pick (zi_sched_prio_t *self, uint32_t ready)
{
    assert (self);
    if (self->n < 32) {
        ready &= (1u << self->n) - 1;
    }
    if (!ready) {
        //  Nobody waits: forget old debts, so a class that comes back after
        //  an idle spell does not burst ahead on credit it built up then.
        memset (self->current, 0, sizeof self->current);
        return -1;
    }
    if (self->strict) {
        return __builtin_ctz (ready);
    }
    //  Smooth weighted round robin (nginx) over the ready classes with
    //  weights W_i^2: each ready class earns its weight, the richest one
    //  is picked and pays the sum. Classes not ready keep their balance.
    double total = 0;
    int best = -1;
    for (size_t i = 0; i < self->n; i++) {
        if (!(ready & (1u << i))) {
            continue;
        }
        double w = self->weight[i] * self->weight[i];
        self->current[i] += w;
        total += w;
        if (best < 0 || self->current[i] > self->current[best]) {
            best = (int)i;
        }
    }
    self->current[best] -= total;
    return best;
}

double
zi_sched_prio_share (const zi_sched_prio_t *self, size_t i, uint32_t among)
{
    assert (self);
    if (i >= self->n || !(among & (1u << i))) {
        return 0;
    }
    if (self->strict) {
        return (size_t)__builtin_ctz (among) == i ? 1 : 0;
    }
    double total = 0;
    for (size_t j = 0; j < self->n; j++) {
        if (among & (1u << j)) {
            total += self->weight[j] * self->weight[j];
        }
    }
    return self->weight[i] * self->weight[i] / total;
}

int
zi_sched_prio_favoured (const zi_sched_prio_t *self, int a, int b)
{
    assert (self);
    if (a < 0 || (size_t)a >= self->n) {
        return b;
    }
    if (b < 0 || (size_t)b >= self->n) {
        return a;
    }
    if (self->strict || self->weight[a] == self->weight[b]) {
        return a < b ? a : b;
    }
    return self->weight[a] > self->weight[b] ? a : b;
}

//  ---------------------------------------------------------------------
//  Weighted rendezvous hashing

static uint64_t
s_mix64 (uint64_t x)
{
    //  splitmix64's finaliser: every input bit affects every output bit.
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t
s_fnv1a (const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

double
zi_sched_hrw_score (uint64_t key, const char *name, double capacity)
{
    if (!name || !isfinite (capacity) || !(capacity > 0)) {
        return 0;
    }
    uint64_t h = s_mix64 (s_fnv1a (name) ^ s_mix64 (key));
    //  53 random bits, centred in their interval: u is never 0 nor 1, so
    //  ln(u) is finite and negative.
    double u = ((double)(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    return -capacity / log (u);
}

int
zi_sched_hrw_pick (uint64_t key, const char *const *names, const double *capacities,
                   size_t n)
{
    int best = -1;
    double best_score = 0;
    for (size_t i = 0; names && capacities && i < n; i++) {
        double score = zi_sched_hrw_score (key, names[i], capacities[i]);
        if (score > 0 && (best < 0 || score > best_score)) {
            best = (int)i;
            best_score = score;
        }
    }
    return best;
}
