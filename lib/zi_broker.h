/*  zi_broker.h - the zinfer broker: the one process every other connects to.

    The broker binds the plan's eight endpoints, admits client requests,
    carries them through the stages (preprocess -> partition -> the exec
    segments -> aggregate) and answers each client exactly once: the reply,
    or an ERROR with a code and a reason. It balances tasks across the
    replicas of each segment by capacity (zi_sched.h), shares dispatch slots
    between priority classes by weight, detects dead workers by heartbeats
    and re-dispatches their work, and answers STATS and HEALTH.

        zi_plan_t *plan = zi_plan_load ("plan.json", err, sizeof err);
        zi_broker_t *broker = zi_broker_new (plan, err, sizeof err);
        if (!broker) {
            fprintf (stderr, "%s\n", err);          //  e.g. a bind failed
            return 1;
        }
        zi_broker_run (broker);     //  until SIGINT / SIGTERM, then drains
        zi_broker_destroy (&broker);
        zi_plan_destroy (&plan);

    In a test, run it as an actor in the same process:

        zactor_t *broker = zactor_new (zi_broker_actor, plan);
        ...                         //  talk to the plan's endpoints
        zactor_destroy (&broker);   //  sends "$TERM": stops at once

    The actor also takes "STOP": stop admitting, drain what is in flight
    (up to ZI_BROKER_DRAIN_MS), send DISCONNECT to every peer, then wait
    for "$TERM".

    The behaviour on every link, the STATS keys and the copies the broker
    makes are described at the top of zi_broker.c.
*/
#ifndef ZI_BROKER_H_INCLUDED
#define ZI_BROKER_H_INCLUDED

#include <stddef.h>

#include <czmq.h>

#include "zi_plan.h"

#ifdef __cplusplus
extern "C" {
#endif

//  How long a stopping broker waits for the requests in flight (then it
//  answers the rest UNAVAILABLE and exits: within 2 s of SIGTERM).
#define ZI_BROKER_DRAIN_MS 1500

typedef struct zi_broker zi_broker_t;

//  Create a broker for a plan and bind its endpoints. The plan is borrowed
//  and must outlive the broker. Returns NULL with a message in err when the
//  plan cannot be served (no segments, a bind fails, ...).
zi_broker_t *zi_broker_new (const zi_plan_t *plan, char *err, size_t errlen);

//  Destroy a broker and close its sockets; sets *self_p to NULL. Safe on
//  NULL. Requests still held get no answer: call zi_broker_run to drain.
void zi_broker_destroy (zi_broker_t **self_p);

//  Serve until zsys_interrupted is set (SIGINT / SIGTERM with CZMQ's
//  handler) or, with a pipe attached, until "STOP" or "$TERM" arrives.
//  On SIGINT/SIGTERM and "STOP" the broker drains first: new requests get
//  UNAVAILABLE, those in flight get up to ZI_BROKER_DRAIN_MS to finish
//  (the rest get UNAVAILABLE), then every worker and aggregator gets
//  DISCONNECT. Returns 0, or ZI_ERR_IO when polling fails.
int zi_broker_run (zi_broker_t *self);

//  Attach an actor pipe (borrowed) whose commands zi_broker_run obeys.
void zi_broker_set_pipe (zi_broker_t *self, zsock_t *pipe);

//  zactor body: args is the plan (const zi_plan_t *, borrowed; it must
//  outlive the actor). Signals the pipe once the endpoints are bound (or
//  binding failed, which is logged: the actor then only waits for "$TERM").
void zi_broker_actor (zsock_t *pipe, void *args);

#ifdef __cplusplus
}
#endif

#endif
