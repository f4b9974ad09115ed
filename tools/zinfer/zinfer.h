/*  zinfer.h - subcommands of the `zinfer` operator command.

    Each subcommand is `int zi_cmd_NAME (int argc, char **argv)` with
    argv[0] == "NAME"; it returns the process exit code (0 ok, 1 failure,
    2 bad usage).

    The zi_cli_* helpers below are shared by the commands that talk to a
    running pipeline (infer, bench, stats); they live in cmd_infer.c.
*/
#ifndef ZINFER_CMD_H_INCLUDED
#define ZINFER_CMD_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zi_client.h"
#include "zi_json.h"
#include "zi_plan.h"
#include "zi_tensor.h"

int zi_cmd_conformance (int argc, char **argv);
int zi_cmd_run (int argc, char **argv);
int zi_cmd_info (int argc, char **argv);
int zi_cmd_eval (int argc, char **argv);
int zi_cmd_bench (int argc, char **argv);
int zi_cmd_plan (int argc, char **argv);
int zi_cmd_up (int argc, char **argv);
int zi_cmd_infer (int argc, char **argv);
int zi_cmd_stats (int argc, char **argv);
int zi_cmd_keys (int argc, char **argv);

//  ---------------------------------------------------------------------
//  Shared by infer, bench and stats (cmd_infer.c)

//  Monotonic seconds.
double zi_cli_now (void);

//  The cores this process may run on (its CPU affinity, which a container
//  or taskset narrows; else the online CPUs). In cmd_up.c.
int zi_cli_cores (void);

//  Parse a decimal integer in [lo, hi]; 0 or -1.
int zi_cli_parse_long (const char *text, long lo, long hi, long *out);

//  Sort ascending, and the nearest-rank percentile p (0..100) of sorted.
void zi_cli_sort (double *values, size_t n);
double zi_cli_pct (const double *sorted, size_t n, double p);

//  Exactly one of --plan / --endpoint: load the plan (into *plan_p, the
//  caller destroys it) and set *endpoint_p to the broker's front. Returns
//  0, or 2 (usage) after printing why.
int zi_cli_target (const char *cmd, const char *plan_path, const char *endpoint,
                   zi_plan_t **plan_p, const char **endpoint_p);

//  What clients send for model input i: the preprocess stage's declaration
//  of it if the plan's built-in preprocess lists it, else the model's.
const zi_plan_tensor_t *zi_cli_client_input (const zi_plan_t *plan, size_t i);

//  "NAME=FILE.npy" or "NAME=FILE.raw:DTYPE:D,D,...": name into name[],
//  a new owning tensor into *out. 0 or an error with a message.
int zi_cli_parse_input (const char *spec, char *name, size_t namelen, zi_tensor_t **out,
                        char *err, size_t errlen);

//  IDX images u8 [N,H,W], rows [first, first+b), as a new uint8 tensor in
//  the layout decl declares ([B,H,W], [B,1,H,W]; default [B,H,W,1]).
zi_tensor_t *zi_cli_idx_batch (const zi_tensor_t *images, int64_t first, int64_t b,
                               const zi_plan_tensor_t *decl);

//  The predicted class of row r of a classifier's output: argmax of a
//  float32 row, or the first index of an int64 (argmax / topk) one; -1.
int64_t zi_cli_argmax_row (const zi_tensor_t *y, int64_t r);

//  The load driver: keep `concurrency` requests in flight on one client
//  (asynchronous zi_client_send / zi_client_recv) until `total` requests
//  were answered (total > 0) or for `duration` seconds.
typedef struct {
    const char *cmd;  //  "infer", "bench": for messages
    const char *unit; //  "images", "samples": for rates
    int concurrency;
    int timeout_ms; //  give up when nothing answers this long
    int prio;
    uint32_t deadline_ms; //  0: the broker's default
    int64_t total;        //  requests; 0: run for `duration`
    double duration;      //  seconds
    //  Build request k (tensors only; id, prio, deadline are set here);
    //  *rows = the samples it carries. NULL aborts the run.
    zi_msg_t *(*make) (void *arg, int64_t k, int64_t *rows);
    //  Called with each answer (REPLY or ERROR) to request k; may be NULL.
    void (*done) (void *arg, int64_t k, const zi_msg_t *reply);
    void *arg;
    bool progress; //  a progress line on stderr
} zi_cli_load_t;

#define ZI_CLI_MAX_CODES 16

typedef struct {
    int64_t sent, ok, failed, samples;
    double seconds;
    double *latency; //  seconds per answered request, sorted
    size_t n_latency;
    int codes[ZI_CLI_MAX_CODES]; //  error codes seen (0: malformed)
    int64_t code_counts[ZI_CLI_MAX_CODES];
} zi_cli_result_t;

//  Run the load; res is filled even on failure (free it with
//  zi_cli_result_free). Returns 0, or an error when the run was cut short
//  (no answer within timeout_ms, interrupted, a request not built).
int zi_cli_drive (zi_client_t *client, const zi_cli_load_t *cfg, zi_cli_result_t *res);
void zi_cli_result_free (zi_cli_result_t *res);

//  Print throughput, latency percentiles and errors by code.
void zi_cli_print_result (const zi_cli_load_t *cfg, const zi_cli_result_t *res);

//  The msgpack map of a STATS_REPLY (already validated by zi_msg) as a
//  JSON document in *out; and that document printed as tables
//  (cmd_stats.c). 0, ZI_ERR_MALFORMED or ZI_ERR_NOMEM.
int zi_cli_stats_to_json (const uint8_t *data, size_t size, zi_json_t **out);
void zi_cli_stats_print (const zi_json_t *stats);

#endif
