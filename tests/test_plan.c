/*  test_plan.c - zi_plan: the examples load, every bad plan fails with its
    own message, plans survive write -> load, the planner's building API
    works, and the schema compiled into the library is the one in schemas/.
*/
#include <criterion/criterion.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zi_plan.h"

#define PLANS_DIR ZI_SOURCE_DIR "/tests/data/plans"
#define EXAMPLES_DIR ZI_SOURCE_DIR "/schemas/examples"

//  ---------------------------------------------------------------------
//  Helpers

static char *
s_read_file (const char *path, size_t *len_p)
{
    FILE *file = fopen (path, "rb");
    cr_assert_not_null (file, "cannot open %s", path);
    fseek (file, 0, SEEK_END);
    long size = ftell (file);
    cr_assert_geq (size, 0);
    fseek (file, 0, SEEK_SET);
    char *buf = (char *) malloc ((size_t) size + 1);
    cr_assert_not_null (buf);
    cr_assert_eq (fread (buf, 1, (size_t) size, file), (size_t) size);
    buf[size] = 0;
    fclose (file);
    if (len_p) {
        *len_p = (size_t) size;
    }
    return buf;
}

//  The *.json files of dir whose names start with prefix, sorted.
static size_t
s_list (const char *dir, const char *prefix, char names[][128], size_t max)
{
    DIR *d = opendir (dir);
    cr_assert_not_null (d, "cannot open %s", dir);
    size_t n = 0;
    struct dirent *entry;
    while ((entry = readdir (d))) {
        size_t len = strlen (entry->d_name);
        if (strncmp (entry->d_name, prefix, strlen (prefix)) == 0 && len > 5 && len < 128
            && strcmp (entry->d_name + len - 5, ".json") == 0) {
            cr_assert_lt (n, max);
            strcpy (names[n++], entry->d_name);
        }
    }
    closedir (d);
    qsort (names, n, 128, (int (*) (const void *, const void *)) strcmp);
    return n;
}

static zi_plan_t *
s_load_ok (const char *path)
{
    char err[512] = "";
    zi_plan_t *plan = zi_plan_load (path, err, sizeof err);
    cr_assert_not_null (plan, "%s", err);
    return plan;
}

static char *
s_plan_text (const zi_plan_t *plan)
{
    zi_json_t *doc = NULL;
    cr_assert_eq (zi_plan_to_json (plan, &doc), 0);
    char *text = zi_json_dump (doc, ZI_JSON_PRETTY, NULL);
    cr_assert_not_null (text);
    zi_json_destroy (&doc);
    return text;
}

static char s_tmpdir[64];

static void
s_make_tmpdir (void)
{
    strcpy (s_tmpdir, "/tmp/zi_plan_test_XXXXXX");
    cr_assert_not_null (mkdtemp (s_tmpdir));
}

static void
s_remove_tmpdir (void)
{
    char names[16][128];
    size_t n = s_list (s_tmpdir, "", names, 16);
    for (size_t i = 0; i < n; i++) {
        char path[256];
        snprintf (path, sizeof path, "%s/%s", s_tmpdir, names[i]);
        unlink (path);
    }
    cr_assert_eq (rmdir (s_tmpdir), 0, "unexpected files left in %s", s_tmpdir);
}

//  ---------------------------------------------------------------------
//  The schema

Test (plan, embedded_schema_matches_schemas_dir)
{
    size_t file_len = 0, embedded_len = 0;
    char *file = s_read_file (ZI_SOURCE_DIR "/schemas/plan.schema.json", &file_len);
    const char *embedded = zi_plan_schema_text (&embedded_len);
    cr_assert (embedded_len == file_len && memcmp (file, embedded, file_len) == 0,
               "lib/zi_plan_schema.c is out of date with schemas/plan.schema.json: "
               "run tools/embed-schema.sh");
    cr_assert_eq (strlen (embedded), embedded_len);
    free (file);
}

Test (plan, embedded_schema_is_usable)
{
    size_t len = 0;
    const char *text = zi_plan_schema_text (&len);
    zi_json_t *schema = NULL;
    char err[256];
    cr_assert_eq (zi_json_parse (text, len, NULL, &schema, err, sizeof err), 0, "%s", err);
    cr_assert_eq (zi_json_schema_check (schema, err, sizeof err), 0, "%s", err);
    //  The enums of the schema and the names the loader knows agree, so
    //  the two cannot drift apart silently.
    const zi_json_t *defs = zi_json_get (schema, "$defs");
    const zi_json_t *dtypes = zi_json_get (zi_json_get (defs, "dtype"), "enum");
    cr_assert_gt (zi_json_size (dtypes), 10);
    for (size_t i = 0; i < zi_json_size (dtypes); i++) {
        const char *name = zi_json_str (zi_json_at (dtypes, i));
        zi_dtype_t dtype = zi_dtype_from_name (name);
        cr_assert (zi_dtype_valid (dtype), "schema dtype %s unknown to zi_tensor", name);
        cr_assert_str_eq (zi_dtype_name (dtype), name);
    }
    const zi_json_t *kinds = zi_json_get (
        zi_json_get (zi_json_get (zi_json_get (defs, "stage"), "properties"), "kind"), "enum");
    cr_assert_eq (zi_json_size (kinds), 4);
    for (size_t i = 0; i < zi_json_size (kinds); i++) {
        cr_assert_str_eq (zi_json_str (zi_json_at (kinds, i)),
                          zi_plan_stage_kind_name ((zi_plan_stage_kind_t) (i + 1)));
    }
    const char *op_defs[] = {"pre_op", "post_op"};
    int op = ZI_PLAN_OP_CAST;
    for (size_t d = 0; d < 2; d++) {
        const zi_json_t *ops = zi_json_get (
            zi_json_get (zi_json_get (zi_json_get (defs, op_defs[d]), "properties"), "op"),
            "enum");
        for (size_t i = 0; i < zi_json_size (ops); i++, op++) {
            cr_assert_str_eq (zi_json_str (zi_json_at (ops, i)),
                              zi_plan_op_name ((zi_plan_op_kind_t) op));
        }
    }
    cr_assert_eq (op, ZI_PLAN_OP_TOPK + 1);
    const zi_json_t *endpoints = zi_json_get (
        zi_json_get (zi_json_get (defs, "broker"), "properties"), "endpoints");
    const zi_json_t *required = zi_json_get (endpoints, "required");
    cr_assert_eq (zi_json_size (required), ZI_PLAN_EP_COUNT);
    for (size_t i = 0; i < ZI_PLAN_EP_COUNT; i++) {
        cr_assert_str_eq (zi_json_str (zi_json_at (required, i)),
                          zi_plan_endpoint_name ((zi_plan_ep_t) i));
    }
    zi_json_destroy (&schema);
}

Test (plan, embed_script_agrees)
{
    //  The script's own check: catches a script edit that the byte compare
    //  above would only see after the next regeneration.
    int rc = system ("sh " ZI_SOURCE_DIR "/tools/embed-schema.sh --check");
    cr_assert_eq (rc, 0, "tools/embed-schema.sh --check failed: regenerate the schema");
}

//  ---------------------------------------------------------------------
//  Good plans

Test (plan, examples_and_good_plans_load)
{
    char names[32][128];
    const struct {
        const char *dir;
        const char *prefix;
        size_t min;
    } sets[] = {{EXAMPLES_DIR, "", 4}, {PLANS_DIR, "good-", 3}};
    for (size_t s = 0; s < 2; s++) {
        size_t n = s_list (sets[s].dir, sets[s].prefix, names, 32);
        cr_assert_geq (n, sets[s].min, "too few plans in %s", sets[s].dir);
        for (size_t i = 0; i < n; i++) {
            char path[512];
            snprintf (path, sizeof path, "%s/%s", sets[s].dir, names[i]);
            zi_plan_t *plan = s_load_ok (path);
            char err[512];
            cr_assert_eq (zi_plan_validate (plan, path, err, sizeof err), 0, "%s", err);
            zi_plan_destroy (&plan);
            cr_assert_null (plan);
        }
    }
}

Test (plan, fields_of_the_local_example)
{
    zi_plan_t *plan = s_load_ok (EXAMPLES_DIR "/fashion-mnist-local.json");
    cr_assert_eq (plan->version, 1);
    cr_assert_str_eq (plan->name, "fashion-mnist on one host");
    cr_assert_str_eq (plan->dir, EXAMPLES_DIR);
    char path[512];
    cr_assert_eq (zi_plan_path (plan, plan->model.path, path, sizeof path), 0);
    cr_assert_str_eq (path, EXAMPLES_DIR "/../../examples/fashion-mnist/model.onnx");
    cr_assert_eq (zi_plan_path (plan, "/abs/model.onnx", path, sizeof path), 0);
    cr_assert_str_eq (path, "/abs/model.onnx");
    cr_assert_eq (zi_plan_path (plan, "model.onnx", path, 8), ZI_ERR_LIMIT);

    cr_assert_eq (plan->model.node_count, 10);
    cr_assert_eq (plan->model.n_inputs, 1);
    cr_assert_str_eq (plan->model.inputs[0].name, "input");
    cr_assert_eq (plan->model.inputs[0].dtype, ZI_DT_F32);
    cr_assert_eq (plan->model.inputs[0].rank, 4);
    cr_assert_eq (plan->model.inputs[0].shape[0], -1);
    cr_assert_eq (plan->model.inputs[0].shape[3], 28);
    cr_assert_eq (strlen (plan->model.sha256), 64);

    cr_assert_eq (plan->n_hosts, 1);
    cr_assert_str_eq (zi_plan_find_host (plan, "local")->address, "127.0.0.1");
    cr_assert_null (zi_plan_find_host (plan, "elsewhere"));
    cr_assert_str_eq (plan->broker.host, "local");
    cr_assert_str_eq (plan->broker.endpoints[ZI_PLAN_EP_FRONT].bind, "tcp://127.0.0.1:5555");
    cr_assert_str_eq (plan->broker.endpoints[ZI_PLAN_EP_RESULTS].connect,
                      "tcp://127.0.0.1:5562");
    cr_assert_eq (plan->broker.heartbeat_interval_ms, 1000);
    cr_assert_eq (plan->broker.max_message_bytes, 268435456);

    cr_assert_eq (plan->n_segments, 2);
    const zi_plan_segment_t *s0 = &plan->segments[0];
    cr_assert_eq (s0->first_node, 0);
    cr_assert_eq (s0->last_node, 4);
    cr_assert_str_eq (s0->outputs[0], "/Relu_1_output_0");
    cr_assert_eq (s0->n_replicas, 2);
    cr_assert_eq (s0->replicas[1].capacity, 2.5);
    cr_assert_eq (s0->replicas[1].credit, 2);
    cr_assert_eq (s0->cost_share, 0.834);

    const zi_plan_segment_t *segment = NULL;
    const zi_plan_stage_t *stage = NULL;
    const zi_plan_replica_t *r = zi_plan_find_replica (plan, "s1r0", &segment, &stage);
    cr_assert_not_null (r);
    cr_assert_eq (segment, &plan->segments[1]);
    cr_assert_null (stage);
    r = zi_plan_find_replica (plan, "agg0", &segment, &stage);
    cr_assert_not_null (r);
    cr_assert_null (segment);
    cr_assert_eq (zi_plan_stage_role (stage), ZI_PLAN_STAGE_AGGREGATE);
    cr_assert_null (zi_plan_find_replica (plan, "nobody", NULL, NULL));

    const zi_plan_stage_t *pre = zi_plan_find_stage (plan, ZI_PLAN_STAGE_PREPROCESS);
    cr_assert_eq (pre->kind, ZI_PLAN_STAGE_PREPROCESS);
    cr_assert_eq (pre->n_tensors, 1);
    cr_assert_eq (pre->tensors[0].tensor.dtype, ZI_DT_U8);
    cr_assert_eq (pre->tensors[0].n_ops, 3);
    cr_assert_eq (pre->tensors[0].ops[0].kind, ZI_PLAN_OP_CAST);
    cr_assert_eq (pre->tensors[0].ops[0].to, ZI_DT_F32);
    cr_assert_eq (pre->tensors[0].ops[1].factor, 0.00392156862745098);
    cr_assert_eq (pre->tensors[0].ops[2].kind, ZI_PLAN_OP_HWC_TO_CHW);
    const zi_plan_stage_t *part = zi_plan_find_stage (plan, ZI_PLAN_STAGE_PARTITION);
    cr_assert_eq (part->micro_batch, 16);
    cr_assert_eq (part->max_batch, 64);
    cr_assert_eq (part->max_delay_us, 2000);
    const zi_plan_stage_t *agg = zi_plan_find_stage (plan, ZI_PLAN_STAGE_AGGREGATE);
    cr_assert_eq (agg->tensors[0].ops[1].kind, ZI_PLAN_OP_TOPK);
    cr_assert_eq (agg->tensors[0].ops[1].k, 3);
    cr_assert_eq (agg->tensors[0].ops[1].axis, -1);

    cr_assert_eq (plan->priorities.mode, ZI_PLAN_PRIORITY_WEIGHTED);
    cr_assert_eq (plan->priorities.n_classes, 2);
    cr_assert_eq (plan->priorities.classes[0].weight, 4.0);
    cr_assert_str_eq (plan->priorities.default_class, "low");
    cr_assert_not (plan->security.curve);
    zi_plan_destroy (&plan);
}

Test (plan, optional_fields_take_their_defaults)
{
    zi_plan_t *plan = s_load_ok (EXAMPLES_DIR "/minimal-ipc.json");
    cr_assert_null (plan->name);
    cr_assert_null (plan->model.sha256);
    cr_assert_eq (plan->broker.heartbeat_interval_ms, ZI_PLAN_DEFAULT_HEARTBEAT_MS);
    cr_assert_eq (plan->broker.heartbeat_liveness, ZI_PLAN_DEFAULT_LIVENESS);
    cr_assert_eq (plan->broker.queue_limit, ZI_PLAN_DEFAULT_QUEUE_LIMIT);
    cr_assert_eq (plan->broker.default_deadline_ms, ZI_PLAN_DEFAULT_DEADLINE_MS);
    cr_assert_eq (plan->broker.stage_timeout_ms, ZI_PLAN_DEFAULT_STAGE_TIMEOUT_MS);
    cr_assert_eq (plan->broker.max_attempts, ZI_PLAN_DEFAULT_MAX_ATTEMPTS);
    cr_assert_eq (plan->broker.max_message_bytes, ZI_PLAN_DEFAULT_MAX_MESSAGE_BYTES);
    const zi_plan_replica_t *r = &plan->segments[0].replicas[0];
    cr_assert_eq (r->capacity, 1.0);
    cr_assert_eq (r->credit, 1);
    cr_assert_eq (r->threads, 1);
    cr_assert_eq (plan->segments[0].cost_flops, 0.0);
    cr_assert_eq (plan->stages[0].n_tensors, 0);
    cr_assert_eq (plan->priorities.mode, ZI_PLAN_PRIORITY_WEIGHTED);
    cr_assert_eq (plan->priorities.n_classes, 1);
    cr_assert_str_eq (plan->priorities.classes[0].name, "normal");
    cr_assert_eq (plan->priorities.classes[0].weight, 1.0);
    cr_assert_str_eq (plan->priorities.default_class, "normal");
    cr_assert_not (plan->security.curve);
    zi_plan_destroy (&plan);

    //  A class list without default_class defaults to its first class.
    plan = s_load_ok (PLANS_DIR "/good-ipv6-unicode-curve.json");
    cr_assert_str_eq (plan->priorities.default_class, "only");
    cr_assert_eq (plan->priorities.mode, ZI_PLAN_PRIORITY_STRICT);
    cr_assert (plan->security.curve);
    cr_assert_eq (plan->security.n_allowed_keys, 1);
    cr_assert_str_eq (plan->model.inputs[1].name, "mask \xc3\xa9\xe6\xbc\xa2 \"q\"");
    cr_assert_eq (plan->model.inputs[1].rank, 0);
    zi_plan_destroy (&plan);

    plan = s_load_ok (PLANS_DIR "/good-inproc-custom.json");
    const zi_plan_stage_t *pre = zi_plan_find_stage (plan, ZI_PLAN_STAGE_PREPROCESS);
    cr_assert_eq (pre->kind, ZI_PLAN_STAGE_CUSTOM);
    cr_assert_eq (pre->replaces, ZI_PLAN_STAGE_PREPROCESS);
    cr_assert_eq (pre->n_command, 2);
    cr_assert_str_eq (pre->command[1], "--fast");
    cr_assert_eq (zi_plan_find_stage (plan, ZI_PLAN_STAGE_AGGREGATE)->replicas[1].capacity, 3.5);
    zi_plan_destroy (&plan);
}

//  ---------------------------------------------------------------------
//  Bad plans: one per schema rule and per cross-field rule

static const struct {
    const char *file;
    const char *fragment;
} s_bad[] = {
    //  JSON syntax
    {"bad-syntax.json", "bad-syntax.json:7:5: expected ',' or '}' after object member"},
    {"bad-duplicate-key.json", "bad-duplicate-key.json:63:7: duplicate key \"index\" in object"},
    {"bad-control-char.json", "bad-control-char.json:3:26: control character 0x01 in string"},
    //  schema: required, type, unknown field, enum, const, ranges, sizes
    {"bad-not-object.json", "bad-not-object.json: expected object (got an array)"},
    {"bad-version.json", "zinfer_plan: format version 2 is not supported"},
    {"bad-missing-hosts.json", "bad-missing-hosts.json: missing required field \"hosts\""},
    {"bad-missing-replica-host.json",
     "segments[0].replicas[0]: missing required field \"host\""},
    {"bad-custom-missing-command.json", "stages[0]: missing required field \"command\""},
    {"bad-resize-missing-width.json",
     "stages[0].inputs[0].ops[0]: missing required field \"width\""},
    {"bad-curve-missing-key.json", "security: missing required field \"server_public_key\""},
    {"bad-type-node-count.json", "model.node_count: expected integer (got string \"10\")"},
    {"bad-split-at-zero.json", "model.splits[0].at: must be >= 1 (got 0)"},
    {"bad-split-missing-at.json", "model.splits[0]: missing required field \"at\""},
    {"bad-split-axis.json",
     "model.splits[0].axis: must be one of \"channels\", \"rows\" (got \"columns\")"},
    {"bad-type-credit-fraction.json",
     "segments[0].replicas[0].credit: expected integer (got number 1.5)"},
    {"bad-unknown-field.json", "segments[0].replicas[0]: unknown field \"capacty\""},
    {"bad-unknown-top-field.json", "bad-unknown-top-field.json: unknown field \"extra\""},
    {"bad-enum-dtype.json", "model.inputs[0].dtype: must be one of \"float32\", \"float16\""},
    {"bad-enum-stage-kind.json",
     "stages[2].kind: must be one of \"preprocess\", \"partition\", \"aggregate\", "
     "\"custom\" (got \"postprocess\")"},
    {"bad-pre-op-unknown.json", "stages[0].inputs[0].ops[0].op: must be one of \"cast\""},
    {"bad-negative-capacity.json",
     "bad-negative-capacity.json: segments[1].replicas[0].capacity: must be > 0 (got -1)"},
    {"bad-zero-weight.json", "priorities.classes[1].weight: must be > 0 (got 0)"},
    {"bad-std-zero.json", "stages[0].inputs[0].ops[1].std[0]: must be > 0 (got 0)"},
    {"bad-micro-batch-zero.json", "stages[1].micro_batch: must be >= 1 (got 0)"},
    {"bad-shape-dim.json", "model.outputs[0].shape[0]: must be >= -1 (got -2)"},
    {"bad-empty-replicas.json", "segments[0].replicas: must not be empty"},
    {"bad-name-too-long.json", "hosts[0].name: must have at most 64 characters (got 65)"},
    //  cross-field rules: names, hosts
    {"bad-host-name-chars.json",
     "hosts[0].name: \"h 1\" may only hold letters, digits, '.', '_' and '-'"},
    {"bad-duplicate-host.json", "hosts[1]: \"h1\" is already the name of hosts[0]"},
    {"bad-broker-host.json", "broker.host: unknown host \"nowhere\" (not in hosts)"},
    {"bad-unknown-host.json", "segments[1].replicas[0].host: unknown host \"h9\""},
    {"bad-stage-replica-host.json", "stages[1].replicas[0].host: unknown host \"h3\""},
    {"bad-duplicate-replica.json",
     "segments[1].replicas[0]: \"s0r0\" is already the name of segments[0].replicas[0]"},
    {"bad-duplicate-stage-replica.json",
     "stages[2].replicas[0]: \"s1r0\" is already the name of segments[1].replicas[0]"},
    {"bad-duplicate-model-input.json",
     "model.inputs[1]: \"input\" is already the name of model.inputs[0]"},
    {"bad-sha256.json", "model.sha256: must be 64 lower-case hex digits"},
    //  endpoints
    {"bad-endpoint-scheme.json",
     "broker.endpoints.front.bind: \"http://0.0.0.0:5555\" is not a ZeroMQ endpoint: "
     "expected tcp://host:port, ipc://path or inproc://name"},
    {"bad-endpoint-port.json",
     "broker.endpoints.intake.bind: \"tcp://127.0.0.1:99999\" needs a port number from 1 "
     "to 65535"},
    {"bad-endpoint-connect-star.json",
     "broker.endpoints.front.connect: \"tcp://*:5555\" needs a host name or address"},
    {"bad-endpoint-port-mismatch.json",
     "broker.endpoints.work.connect: port 6000 differs from the port bound, 5560"},
    {"bad-endpoint-clash.json",
     "broker.endpoints.work.bind: \"tcp://*:5555\" collides with broker.endpoints.front.bind"},
    {"bad-client-shm-tcp.json",
     "broker.client_shm: needs an ipc:// front endpoint (clients' shared memory is on the "
     "broker's host), front binds \"tcp://127.0.0.1:5555\""},
    {"bad-endpoint-ipc-mismatch.json",
     "broker.endpoints.results.connect: must equal bind for ipc:// and inproc://"},
    {"bad-endpoint-transport-mismatch.json",
     "broker.endpoints.results.connect: \"tcp://127.0.0.1:5562\" uses another transport than "
     "bind"},
    //  segments
    {"bad-segment-index.json", "segments[1].index: must be 1: segments are listed in "
                               "pipeline order from 0 (got 2)"},
    {"bad-segment-first.json", "segments[0].first_node: must be 0, the model's first node "
                               "(got 1)"},
    {"bad-segment-gap.json", "segments[1].first_node: must be 5, right after "
                             "segments[0].last_node (got 6: nodes left out)"},
    {"bad-segment-overlap.json", "segments[1].first_node: must be 5, right after "
                                 "segments[0].last_node (got 4: an overlap)"},
    {"bad-segment-reversed.json", "segments[1]: first_node 5 is after last_node 3"},
    {"bad-segment-past-end.json", "segments[1].last_node: 12 is past the model's last node 9"},
    {"bad-segment-short.json", "segments[1].last_node: must be 9, the model's last node: "
                               "node 9 is in no segment (got 8)"},
    {"bad-segment-input.json", "segments[1].inputs[0]: tensor \"t99\" is neither a model "
                               "input nor an output of an earlier segment"},
    {"bad-model-output-missing.json",
     "model.outputs[0]: tensor \"logits\" is not an output of any segment"},
    //  stages
    {"bad-two-preprocess.json",
     "stages[3].kind: a second preprocess stage (stages[0] is one already)"},
    {"bad-two-custom.json",
     "stages[3].replaces: a second custom stage replaces preprocess (stages[0] does already)"},
    {"bad-custom-and-builtin.json",
     "stages[3].replaces: preprocess is done by the built-in stages[0] already"},
    {"bad-missing-aggregate.json", "stages: no stage does aggregate"},
    {"bad-missing-partition.json",
     "stages: no stage does partition: add a stage of kind \"partition\", or a \"custom\" "
     "one that replaces it"},
    {"bad-micro-gt-max.json", "stages[1].micro_batch: must be <= max_batch 8 (got 16)"},
    {"bad-preprocess-input-name.json",
     "stages[0].inputs[0].name: \"image\" is not one of the model's inputs"},
    {"bad-aggregate-output-name.json",
     "stages[2].outputs[0].name: \"probs\" is not one of the model's outputs"},
    {"bad-normalize-lengths.json",
     "stages[0].inputs[0].ops[1]: mean has 3 values but std has 1"},
    {"bad-pad-odd.json", "stages[0].inputs[0].ops[0].pads: needs an even count"},
    {"bad-argmax-not-last.json", "stages[2].outputs[0].ops[0]: argmax must be the last op"},
    //  priorities, security
    {"bad-default-class.json", "priorities.default_class: unknown class \"urgent\""},
    {"bad-duplicate-class.json",
     "priorities.classes[1]: \"high\" is already the name of priorities.classes[0]"},
    {"bad-z85-key.json", "security.server_public_key: not a Z85 key"},
};

#define S_BAD_COUNT (sizeof s_bad / sizeof s_bad[0])

Test (plan, every_bad_plan_fails_with_its_message)
{
    for (size_t i = 0; i < S_BAD_COUNT; i++) {
        char path[512];
        snprintf (path, sizeof path, "%s/%s", PLANS_DIR, s_bad[i].file);
        char err[512] = "";
        zi_plan_t *plan = zi_plan_load (path, err, sizeof err);
        cr_assert_null (plan, "%s loaded", s_bad[i].file);
        cr_assert (strncmp (err, path, strlen (path)) == 0, "%s: message must start with the "
                   "file name: %s", s_bad[i].file, err);
        cr_assert (strstr (err, s_bad[i].fragment), "%s:\n  got  %s\n  want %s",
                   s_bad[i].file, err, s_bad[i].fragment);
        //  The same text from a buffer says the same thing.
        size_t len = 0;
        char *text = s_read_file (path, &len);
        char err2[512] = "";
        cr_assert_null (zi_plan_parse (text, len, path, err2, sizeof err2));
        cr_assert_str_eq (err2, err);
        free (text);
    }
}

Test (plan, every_bad_plan_file_is_in_the_table)
{
    char names[128][128];
    size_t n = s_list (PLANS_DIR, "bad-", names, 128);
    cr_assert_eq (n, S_BAD_COUNT, "tests/data/plans has %zu bad plans, the table %zu", n,
                  S_BAD_COUNT);
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t k = 0; k < S_BAD_COUNT && !found; k++) {
            found = strcmp (names[i], s_bad[k].file) == 0;
        }
        cr_assert (found, "%s has no expected message in s_bad[]", names[i]);
    }
}

Test (plan, version_mismatch_has_its_own_code)
{
    zi_json_t *doc = NULL;
    char err[512];
    cr_assert_eq (zi_json_parse_file (PLANS_DIR "/bad-version.json", NULL, &doc, err,
                                      sizeof err), 0);
    zi_plan_t *plan = NULL;
    cr_assert_eq (zi_plan_from_json (doc, "v2.json", &plan, err, sizeof err), ZI_ERR_VERSION);
    cr_assert_null (plan);
    cr_assert_str_eq (err, "v2.json: zinfer_plan: format version 2 is not supported (this "
                           "build reads version 1)");
    zi_json_destroy (&doc);
    cr_assert_eq (zi_json_parse_file (PLANS_DIR "/bad-unknown-host.json", NULL, &doc, err,
                                      sizeof err), 0);
    cr_assert_eq (zi_plan_from_json (doc, NULL, &plan, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strncmp (err, "plan: segments[1]", 17) == 0, "%s", err);
    zi_json_destroy (&doc);
}

Test (plan, unreadable_plans_are_reported)
{
    char err[512];
    cr_assert_null (zi_plan_load (PLANS_DIR "/no-such-plan.json", err, sizeof err));
    cr_assert (strstr (err, "no-such-plan.json: cannot open"), "%s", err);
    cr_assert_null (zi_plan_load (NULL, err, sizeof err));
    cr_assert_null (zi_plan_parse ("", 0, NULL, err, sizeof err));
    cr_assert_str_eq (err, "plan:1:1: expected a value, found end of input");
    //  Plans are small; a huge file is refused before it is parsed.
    size_t len = ZI_PLAN_MAX_BYTES + 1;
    char *huge = (char *) malloc (len);
    cr_assert_not_null (huge);
    memset (huge, ' ', len);
    cr_assert_null (zi_plan_parse (huge, len, "huge.json", err, sizeof err));
    cr_assert (strstr (err, "huge.json: input is 4194305 bytes, more than the limit"), "%s",
               err);
    free (huge);
}

//  Random damage to a good plan: every outcome is a plan or a message.
Test (plan, mutated_plans_never_crash)
{
    size_t len = 0;
    char *good = s_read_file (PLANS_DIR "/good-base.json", &len);
    char *buf = (char *) malloc (len + 64);
    cr_assert_not_null (buf);
    uint64_t state = 88172645463325252ull;
    size_t loaded = 0;
    for (int round = 0; round < 3000; round++) {
        memcpy (buf, good, len);
        size_t n = len;
        for (int e = 0; e < 2; e++) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            size_t at = (size_t) (state % n);
            //  Favour digits, signs and quotes: they reach the rules
            //  rather than the JSON syntax.
            buf[at] = "0123456789-\"abc.,:[]{} "[(state >> 32) % 23];
        }
        char err[512] = "";
        zi_plan_t *plan = zi_plan_parse (buf, n, "m.json", err, sizeof err);
        if (plan) {
            loaded++;
            char err2[512];
            cr_assert_eq (zi_plan_validate (plan, "m.json", err2, sizeof err2), 0,
                          "a loaded plan must validate: %s", err2);
            zi_plan_destroy (&plan);
        }
        else {
            cr_assert (strncmp (err, "m.json", 6) == 0, "unexplained failure: <%s>", err);
        }
    }
    cr_assert_gt (loaded, 0);
    cr_assert_lt (loaded, 3000);
    free (buf);
    free (good);
}

//  ---------------------------------------------------------------------
//  Writing

Test (plan, write_then_load_gives_the_same_plan)
{
    s_make_tmpdir ();
    char names[32][128];
    size_t n = s_list (EXAMPLES_DIR, "", names, 32);
    for (size_t i = 0; i < n; i++) {
        char src[512], out[512], again[512], err[512];
        snprintf (src, sizeof src, "%s/%s", EXAMPLES_DIR, names[i]);
        snprintf (out, sizeof out, "%s/plan.json", s_tmpdir);
        snprintf (again, sizeof again, "%s/again.json", s_tmpdir);
        zi_plan_t *first = s_load_ok (src);
        cr_assert_eq (zi_plan_write (first, out, err, sizeof err), 0, "%s", err);
        zi_plan_t *second = s_load_ok (out);
        char *a = s_plan_text (first);
        char *b = s_plan_text (second);
        cr_assert_str_eq (a, b, "%s changed on the way through a file", names[i]);
        //  Writing is deterministic: the second file is the first, byte for byte.
        cr_assert_eq (zi_plan_write (second, again, err, sizeof err), 0, "%s", err);
        char *f1 = s_read_file (out, NULL);
        char *f2 = s_read_file (again, NULL);
        cr_assert_str_eq (f1, f2);
        free (f1);
        free (f2);
        free (a);
        free (b);
        zi_plan_destroy (&first);
        zi_plan_destroy (&second);
    }
    s_remove_tmpdir ();
}

Test (plan, full_examples_are_in_written_form)
{
    //  The complete examples are exactly what the writer produces, so they
    //  double as a specimen of `zinfer plan` output.
    const char *full[] = {"fashion-mnist-local.json", "fashion-mnist-two-hosts.json",
                          "image-classifier.json"};
    s_make_tmpdir ();
    for (size_t i = 0; i < 3; i++) {
        char src[512], out[512], err[512];
        snprintf (src, sizeof src, "%s/%s", EXAMPLES_DIR, full[i]);
        snprintf (out, sizeof out, "%s/plan.json", s_tmpdir);
        zi_plan_t *plan = s_load_ok (src);
        cr_assert_eq (zi_plan_write (plan, out, err, sizeof err), 0, "%s", err);
        char *original = s_read_file (src, NULL);
        char *written = s_read_file (out, NULL);
        cr_assert_str_eq (written, original, "%s is not in the writer's form", full[i]);
        free (original);
        free (written);
        zi_plan_destroy (&plan);
    }
    s_remove_tmpdir ();
}

//  What a planner does: build the struct, write it, and every process
//  loads it back.
static zi_plan_t *
s_build_plan (void)
{
    zi_plan_t *plan = zi_plan_new ();
    cr_assert_not_null (plan);
    plan->name = strdup ("built in memory");
    plan->model.path = strdup ("model.onnx");
    plan->model.node_count = 6;
    plan->model.splits = (zi_split_t *) calloc (2, sizeof (zi_split_t));
    cr_assert_not_null (plan->model.splits);
    plan->model.splits[0] = (zi_split_t) {.node = 3, .at = 4, .axis = ZI_SPLIT_ROWS};
    plan->model.splits[1] = (zi_split_t) {.node = 1, .at = 16, .axis = ZI_SPLIT_CHANNELS};
    plan->model.n_splits = 2;
    zi_plan_tensor_t *in = ZI_PLAN_PUSH (plan->model.inputs, plan->model.n_inputs);
    *in = (zi_plan_tensor_t) {strdup ("x"), ZI_DT_F32, 2, {-1, 4}};
    zi_plan_tensor_t *out = ZI_PLAN_PUSH (plan->model.outputs, plan->model.n_outputs);
    *out = (zi_plan_tensor_t) {strdup ("y"), ZI_DT_F32, 2, {-1, 3}};
    cr_assert_not_null (zi_plan_add_host (plan, "a", "10.0.0.1"));
    cr_assert_not_null (zi_plan_add_host (plan, "b", "10.0.0.2"));
    plan->broker.host = strdup ("a");
    cr_assert_eq (zi_plan_set_endpoints_tcp (plan, "*", "10.0.0.1", 6000), 0);
    for (int i = 0; i < 2; i++) {
        zi_plan_segment_t *seg = ZI_PLAN_PUSH (plan->segments, plan->n_segments);
        cr_assert_not_null (seg);
        seg->index = i;
        seg->first_node = i * 3;
        seg->last_node = i * 3 + 2;
        *(char **) ZI_PLAN_PUSH (seg->inputs, seg->n_inputs) = strdup (i ? "h" : "x");
        *(char **) ZI_PLAN_PUSH (seg->outputs, seg->n_outputs) = strdup (i ? "y" : "h");
        seg->cost_flops = 1e6 * (i + 1);
        seg->cost_share = i ? 2.0 / 3 : 1.0 / 3;
        char name[16];
        snprintf (name, sizeof name, "s%da", i);
        cr_assert_not_null (zi_plan_add_replica (&seg->replicas, &seg->n_replicas, name,
                                                 "a", 1.0));
        snprintf (name, sizeof name, "s%db", i);
        zi_plan_replica_t *r = zi_plan_add_replica (&seg->replicas, &seg->n_replicas, name,
                                                    "b", 0.5);
        r->credit = 3;
    }
    const zi_plan_stage_kind_t kinds[] = {ZI_PLAN_STAGE_PREPROCESS, ZI_PLAN_STAGE_PARTITION,
                                          ZI_PLAN_STAGE_AGGREGATE};
    for (int i = 0; i < 3; i++) {
        zi_plan_stage_t *stage = ZI_PLAN_PUSH (plan->stages, plan->n_stages);
        stage->kind = kinds[i];
        char name[16];
        snprintf (name, sizeof name, "%s0", zi_plan_stage_kind_name (kinds[i]));
        zi_plan_add_replica (&stage->replicas, &stage->n_replicas, name, "a", 1.0);
    }
    zi_plan_stage_t *pre = &plan->stages[0];
    zi_plan_io_t *io = ZI_PLAN_PUSH (pre->tensors, pre->n_tensors);
    io->tensor = (zi_plan_tensor_t) {strdup ("x"), ZI_DT_U8, 2, {-1, 4}};
    zi_plan_op_t *op = ZI_PLAN_PUSH (io->ops, io->n_ops);
    op->kind = ZI_PLAN_OP_CAST;
    op->to = ZI_DT_F32;
    op = ZI_PLAN_PUSH (io->ops, io->n_ops);
    op->kind = ZI_PLAN_OP_NORMALIZE;
    *(double *) ZI_PLAN_PUSH (op->mean, op->n_mean) = 0.5;
    *(double *) ZI_PLAN_PUSH (op->std, op->n_std) = 0.25;
    plan->stages[1].micro_batch = 4;
    plan->stages[1].max_batch = 16;
    plan->stages[1].max_delay_us = 500;
    zi_plan_stage_t *agg = &plan->stages[2];
    io = ZI_PLAN_PUSH (agg->tensors, agg->n_tensors);
    io->tensor.name = strdup ("y");
    op = ZI_PLAN_PUSH (io->ops, io->n_ops);
    op->kind = ZI_PLAN_OP_ARGMAX;
    op->axis = -1;
    return plan;
}

Test (plan, a_built_plan_writes_and_loads)
{
    s_make_tmpdir ();
    zi_plan_t *plan = s_build_plan ();
    char path[256], err[512];
    snprintf (path, sizeof path, "%s/built.json", s_tmpdir);
    cr_assert_eq (zi_plan_write (plan, path, err, sizeof err), 0, "%s", err);
    zi_plan_t *back = s_load_ok (path);
    cr_assert_str_eq (back->broker.endpoints[ZI_PLAN_EP_WORK].bind, "tcp://*:6005");
    cr_assert_str_eq (back->broker.endpoints[ZI_PLAN_EP_WORK].connect, "tcp://10.0.0.1:6005");
    cr_assert_eq (back->segments[1].replicas[1].capacity, 0.5);
    cr_assert_eq (back->segments[1].replicas[1].credit, 3);
    cr_assert_eq (back->segments[1].cost_share, 2.0 / 3, "doubles come back exactly");
    cr_assert_eq (back->model.n_splits, 2);
    cr_assert_eq (back->model.splits[0].axis, ZI_SPLIT_ROWS, "a row split came back as %d",
                  back->model.splits[0].axis);
    cr_assert_eq (back->model.splits[0].at, 4);
    cr_assert_eq (back->model.splits[1].axis, ZI_SPLIT_CHANNELS);
    cr_assert_eq (back->model.splits[1].node, 1);
    cr_assert_eq (back->stages[0].tensors[0].ops[1].std[0], 0.25);
    //  A plan built without priorities gets the default class on load.
    cr_assert_eq (back->priorities.n_classes, 1);
    cr_assert_str_eq (back->priorities.default_class, "normal");
    zi_plan_destroy (&back);

    //  ipc endpoints for a single host.
    cr_assert_eq (zi_plan_set_endpoints_ipc (plan, s_tmpdir), 0);
    cr_assert_eq (zi_plan_validate (plan, "ipc", err, sizeof err), 0, "%s", err);
    cr_assert (strstr (plan->broker.endpoints[ZI_PLAN_EP_FRONT].bind, "/zinfer-front.sock"));
    cr_assert_eq (zi_plan_set_endpoints_tcp (plan, "*", "h", 65530), ZI_ERR_INVALID);
    cr_assert_eq (zi_plan_set_endpoint (plan, ZI_PLAN_EP_COUNT, "a", "b"), ZI_ERR_INVALID);
    zi_plan_destroy (&plan);
    s_remove_tmpdir ();
}

Test (plan, the_writer_refuses_invalid_plans)
{
    s_make_tmpdir ();
    char path[256], err[512];
    snprintf (path, sizeof path, "%s/never.json", s_tmpdir);
    zi_plan_t *plan = s_build_plan ();
    //  Spoil one field at a time: each is caught with its path, then fixed.

    plan->segments[1].replicas[0].capacity = 0;
    cr_assert_eq (zi_plan_write (plan, path, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "never.json: segments[1].replicas[0].capacity: must be > 0 "
                            "(got 0.0)"), "%s", err);
    plan->segments[1].replicas[0].capacity = 0.0 / 0.0;
    cr_assert_eq (zi_plan_write (plan, path, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "segments[1].replicas[0].capacity: expected number (got null)"),
               "%s", err);
    plan->segments[1].replicas[0].capacity = 1;

    free (plan->segments[0].replicas[0].host);
    plan->segments[0].replicas[0].host = NULL;
    cr_assert_eq (zi_plan_write (plan, path, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "segments[0].replicas[0]: missing required field \"host\""), "%s",
               err);
    plan->segments[0].replicas[0].host = strdup ("c");
    cr_assert_eq (zi_plan_write (plan, path, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "segments[0].replicas[0].host: unknown host \"c\""), "%s", err);
    free (plan->segments[0].replicas[0].host);
    plan->segments[0].replicas[0].host = strdup ("a");

    plan->stages[2].kind = (zi_plan_stage_kind_t) 42;
    cr_assert_eq (zi_plan_write (plan, path, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "stages[2].kind: must be one of"), "%s", err);
    plan->stages[2].kind = ZI_PLAN_STAGE_AGGREGATE;

    plan->model.inputs[0].rank = 9;
    cr_assert_eq (zi_plan_write (plan, path, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "model.inputs[0].shape: rank 9 is outside 0..8"), "%s", err);
    plan->model.inputs[0].rank = 2;

    plan->priorities.classes = (zi_plan_class_t *) calloc (1, sizeof (zi_plan_class_t));
    plan->priorities.n_classes = 1;
    plan->priorities.classes[0].name = strdup ("c1");
    plan->priorities.classes[0].weight = -2;
    cr_assert_eq (zi_plan_write (plan, path, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "priorities.classes[0].weight: must be > 0 (got -2.0)"), "%s",
               err);
    plan->priorities.classes[0].weight = 2;

    //  Nothing was written by the failed attempts; now it is.
    cr_assert_eq (access (path, F_OK), -1);
    cr_assert_eq (zi_plan_write (plan, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq (access (path, F_OK), 0);
    zi_plan_destroy (&plan);
    s_remove_tmpdir ();
}

//  Stages [0, n) of plan are now order[0..n-1] of what they were; the rest
//  stay in the array (past n_stages), so zi_plan_destroy still frees them
//  once n_stages is set back.
static void
s_keep_stages (zi_plan_t *plan, const int *order, size_t n)
{
    zi_plan_stage_t was[3];
    cr_assert_eq (plan->n_stages, 3);
    memcpy (was, plan->stages, sizeof was);
    bool used[3] = {false, false, false};
    for (size_t i = 0; i < n; i++) {
        plan->stages[i] = was[order[i]];
        used[order[i]] = true;
    }
    for (size_t i = 0, k = n; i < 3; i++) {
        if (!used[i]) {
            plan->stages[k++] = was[i];
        }
    }
    plan->n_stages = n;
}

Test (plan, preprocess_is_optional_partition_and_aggregate_are_not)
{
    s_make_tmpdir ();
    char path[256], err[512];
    snprintf (path, sizeof path, "%s/no-pre.json", s_tmpdir);
    //  Built in memory: partition and aggregate only (the broker then checks
    //  requests against model.inputs itself). It validates, writes, and
    //  comes back the same, still without a preprocess stage.
    zi_plan_t *plan = s_build_plan ();
    s_keep_stages (plan, (const int[]) {1, 2}, 2);
    cr_assert_eq (zi_plan_validate (plan, "no-pre", err, sizeof err), 0, "%s", err);
    cr_assert_null (zi_plan_find_stage (plan, ZI_PLAN_STAGE_PREPROCESS));
    cr_assert_eq (zi_plan_write (plan, path, err, sizeof err), 0, "%s", err);
    zi_plan_t *back = s_load_ok (path);
    cr_assert_eq (back->n_stages, 2);
    cr_assert_null (zi_plan_find_stage (back, ZI_PLAN_STAGE_PREPROCESS));
    cr_assert_eq (zi_plan_find_stage (back, ZI_PLAN_STAGE_PARTITION)->micro_batch, 4);
    //  Its endpoints are the usual eight (the broker binds the two
    //  preprocess ones all the same; nobody connects to them).
    cr_assert_str_eq (back->broker.endpoints[ZI_PLAN_EP_TO_PREPROCESS].bind,
                      "tcp://*:6001");
    //  (Loading adds the defaults a plan built in memory leaves out, so
    //  the loaded plan is what must survive another write and load.)
    cr_assert_eq (zi_plan_write (back, path, err, sizeof err), 0, "%s", err);
    zi_plan_t *again = s_load_ok (path);
    char *a = s_plan_text (back);
    char *b = s_plan_text (again);
    cr_assert_str_eq (a, b, "a plan without preprocess changed on the way through a file");
    cr_assert_null (strstr (b, "\"preprocess\""), "%s", b);
    free (a);
    free (b);
    zi_plan_destroy (&again);
    zi_plan_destroy (&back);
    unlink (path);

    //  The same from a file: tests/data/plans/good-no-preprocess.json.
    zi_plan_t *loaded = s_load_ok (PLANS_DIR "/good-no-preprocess.json");
    cr_assert_null (zi_plan_find_stage (loaded, ZI_PLAN_STAGE_PREPROCESS));
    cr_assert_eq (zi_plan_write (loaded, path, err, sizeof err), 0, "%s", err);
    back = s_load_ok (path);
    a = s_plan_text (loaded);
    b = s_plan_text (back);
    cr_assert_str_eq (a, b);
    free (a);
    free (b);
    zi_plan_destroy (&back);
    zi_plan_destroy (&loaded);
    unlink (path);

    //  Partition and aggregate stay required: refused with the role named,
    //  and the writer writes nothing.
    plan->n_stages = 3;
    s_keep_stages (plan, (const int[]) {1}, 1);       //  [agg], of [part, agg, pre]
    cr_assert_eq (zi_plan_validate (plan, "p", err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "p: stages: no stage does partition: add a stage of kind "
                            "\"partition\", or a \"custom\" one that replaces it"),
               "%s", err);
    cr_assert_neq (zi_plan_write (plan, path, err, sizeof err), 0);
    cr_assert_eq (access (path, F_OK), -1);
    plan->n_stages = 3;
    s_keep_stages (plan, (const int[]) {2, 1}, 2);    //  [pre, part], of [agg, part, pre]
    cr_assert_eq (zi_plan_validate (plan, "p", err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "p: stages: no stage does aggregate"), "%s", err);
    plan->n_stages = 3;
    zi_plan_destroy (&plan);
    s_remove_tmpdir ();
}

Test (plan, names_and_argument_checks)
{
    cr_assert_str_eq (zi_plan_endpoint_name (ZI_PLAN_EP_TO_PREPROCESS), "to_preprocess");
    cr_assert_str_eq (zi_plan_endpoint_name (ZI_PLAN_EP_COUNT), "?");
    cr_assert_str_eq (zi_plan_stage_kind_name (ZI_PLAN_STAGE_CUSTOM), "custom");
    cr_assert_str_eq (zi_plan_stage_kind_name ((zi_plan_stage_kind_t) 0), "?");
    cr_assert_str_eq (zi_plan_op_name (ZI_PLAN_OP_HWC_TO_CHW), "hwc_to_chw");
    cr_assert_str_eq (zi_plan_resize_name (ZI_PLAN_RESIZE_NEAREST), "nearest");
    cr_assert_str_eq (zi_plan_priority_mode_name (ZI_PLAN_PRIORITY_STRICT), "strict");
    zi_plan_destroy (NULL);
    zi_plan_t *plan = NULL;
    zi_plan_destroy (&plan);
    cr_assert_eq (zi_plan_to_json (NULL, NULL), ZI_ERR_INVALID);
    cr_assert_eq (zi_plan_validate (NULL, NULL, NULL, 0), ZI_ERR_INVALID);
    cr_assert_eq (zi_plan_write (NULL, "x", NULL, 0), ZI_ERR_INVALID);
    cr_assert_null (zi_plan_find_stage (NULL, ZI_PLAN_STAGE_PREPROCESS));
    cr_assert_null (zi_plan_add_host (NULL, "a", "b"));
    //  An empty plan explains what is missing.
    plan = zi_plan_new ();
    char err[512];
    cr_assert_eq (zi_plan_validate (plan, "empty", err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert_str_eq (err, "empty: model: missing required field \"path\"");
    zi_plan_destroy (&plan);
}
