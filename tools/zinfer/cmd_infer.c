/*  zinfer infer - send inputs to a running pipeline and print the answers.

        zinfer infer (--plan PLAN | --endpoint EP) INPUT... [options]

    INPUT is NAME=FILE.npy, or NAME=FILE.raw:DTYPE:D,D,... (raw little-endian
    bytes of that dtype and shape). Or a data set: --idx IMAGES.idx
    [--idx-name NAME] [--limit N] [--batch B] [--concurrency C] streams an
    IDX file's images (uint8 [B,H,W,1], or the layout the plan's preprocess
    input declares) through the pipeline, C requests in flight, with a
    progress bar; --labels IDX then prints the accuracy of the answers
    (argmax of the first output) and --predictions FILE writes one predicted
    class per line, as `zinfer eval --predictions` does.

    This file also holds what infer and bench share (zinfer.h, zi_cli_*):
    finding the broker, parsing inputs, and the asynchronous load driver.
*/
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zi_client.h"
#include "zi_idx.h"
#include "zi_npy.h"
#include "zi_plan.h"
#include "zinfer.h"

//  ---------------------------------------------------------------------
//  Shared helpers (zinfer.h)

double
zi_cli_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int
zi_cli_parse_long (const char *text, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol (text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

static int
s_cmp_double (const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void
zi_cli_sort (double *values, size_t n)
{
    qsort (values, n, sizeof *values, s_cmp_double);
}

double
zi_cli_pct (const double *sorted, size_t n, double p)
{
    if (n == 0) {
        return 0;
    }
    long idx = (long)ceil (p / 100.0 * (double)n) - 1;
    return sorted[idx < 0 ? 0 : (idx >= (long)n ? (long)n - 1 : idx)];
}

int
zi_cli_target (const char *cmd, const char *plan_path, const char *endpoint,
               zi_plan_t **plan_p, const char **endpoint_p)
{
    *plan_p = NULL;
    if (!!plan_path == !!endpoint) {
        fprintf (stderr, "zinfer %s: give one of --plan PLAN or --endpoint EP\n", cmd);
        return 2;
    }
    if (plan_path) {
        char err[1024];
        *plan_p = zi_plan_load (plan_path, err, sizeof err);
        if (!*plan_p) {
            fprintf (stderr, "zinfer %s: %s\n", cmd, err);
            return 2;
        }
        *endpoint_p = (*plan_p)->broker.endpoints[ZI_PLAN_EP_FRONT].connect;
    }
    else {
        *endpoint_p = endpoint;
    }
    return 0;
}

const zi_plan_tensor_t *
zi_cli_client_input (const zi_plan_t *plan, size_t i)
{
    if (!plan || i >= plan->model.n_inputs) {
        return NULL;
    }
    const char *name = plan->model.inputs[i].name;
    const zi_plan_stage_t *pre = zi_plan_find_stage (plan, ZI_PLAN_STAGE_PREPROCESS);
    for (size_t k = 0; pre && pre->kind == ZI_PLAN_STAGE_PREPROCESS && k < pre->n_tensors;
         k++) {
        if (strcmp (pre->tensors[k].tensor.name, name) == 0) {
            return &pre->tensors[k].tensor;
        }
    }
    return &plan->model.inputs[i];
}

//  "FILE.raw:DTYPE:D,D,..." -> a tensor read from FILE.
static int
s_read_raw (const char *spec, zi_tensor_t **out, char *err, size_t errlen)
{
    char buf[4096];
    snprintf (buf, sizeof buf, "%s", spec);
    char *shape_s = strrchr (buf, ':');
    if (!shape_s) {
        return zi_fail (err, errlen, ZI_ERR_INVALID,
                        "'%s': expected FILE.raw:DTYPE:D,D,...", spec);
    }
    *shape_s++ = 0;
    char *dtype_s = strrchr (buf, ':');
    if (!dtype_s) {
        return zi_fail (err, errlen, ZI_ERR_INVALID,
                        "'%s': expected FILE.raw:DTYPE:D,D,...", spec);
    }
    *dtype_s++ = 0;
    zi_dtype_t dt = zi_dtype_from_name (dtype_s);
    if (!zi_dtype_valid (dt)) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "'%s': unknown dtype '%s'", spec,
                        dtype_s);
    }
    int64_t shape[ZI_MAX_RANK];
    int rank = 0;
    for (char *tok = strtok (shape_s, ","); tok; tok = strtok (NULL, ",")) {
        long d;
        if (rank == ZI_MAX_RANK || zi_cli_parse_long (tok, 0, 1L << 40, &d)) {
            return zi_fail (err, errlen, ZI_ERR_INVALID,
                            "'%s': the shape must be up to %d "
                            "non-negative integers",
                            spec, ZI_MAX_RANK);
        }
        shape[rank++] = d;
    }
    size_t need;
    if (zi_shape_nbytes (dt, rank, shape, &need)) {
        return zi_fail (err, errlen, ZI_ERR_OVERFLOW, "'%s': the shape is too large",
                        spec);
    }
    FILE *f = fopen (buf, "rb");
    if (!f) {
        return zi_fail (err, errlen, ZI_ERR_NOTFOUND, "%s: %s", buf, strerror (errno));
    }
    struct stat st;
    if (fstat (fileno (f), &st) != 0 || (uint64_t)st.st_size != (uint64_t)need) {
        fclose (f);
        return zi_fail (err, errlen, ZI_ERR_SHAPE, "%s: has %lld bytes, %s%s needs %zu",
                        buf, (long long)st.st_size, dtype_s, shape_s, need);
    }
    zi_tensor_t *t = zi_tensor_new (dt, rank, shape);
    if (!t) {
        fclose (f);
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", buf);
    }
    if (need && fread (t->data, 1, need, f) != need) {
        fclose (f);
        zi_tensor_destroy (&t);
        return zi_fail (err, errlen, ZI_ERR_IO, "%s: short read", buf);
    }
    fclose (f);
    *out = t;
    return 0;
}

int
zi_cli_parse_input (const char *spec, char *name, size_t namelen, zi_tensor_t **out,
                    char *err, size_t errlen)
{
    const char *eq = strchr (spec, '=');
    if (!eq || eq == spec || (size_t)(eq - spec) >= namelen || !eq[1]) {
        return zi_fail (err, errlen, ZI_ERR_INVALID,
                        "input '%s': expected NAME=FILE.npy or "
                        "NAME=FILE.raw:DTYPE:D,D,...",
                        spec);
    }
    memcpy (name, spec, (size_t)(eq - spec));
    name[eq - spec] = 0;
    const char *file = eq + 1;
    size_t len = strlen (file);
    if (len > 4 && strcmp (file + len - 4, ".npy") == 0) {
        return zi_npy_read (file, out, err, errlen);
    }
    if (strstr (file, ".raw:") || strchr (file, ':')) {
        return s_read_raw (file, out, err, errlen);
    }
    return zi_npy_read (file, out, err, errlen);
}

//  Rows [first, first+b) of IDX images u8 [N,H,W] as the layout decl
//  declares: [B,H,W] for rank 3, [B,1,H,W] when dim 1 is 1, else
//  [B,H,W,1] (the default, also without a declaration).
zi_tensor_t *
zi_cli_idx_batch (const zi_tensor_t *images, int64_t first, int64_t b,
                  const zi_plan_tensor_t *decl)
{
    int64_t h = images->ne[1], w = images->ne[2];
    int64_t shape[4] = { b, h, w, 1 };
    int rank = 4;
    if (decl && decl->rank == 3) {
        rank = 3;
    }
    else if (decl && decl->rank == 4 && decl->shape[1] == 1 && decl->shape[3] != 1) {
        shape[1] = 1;
        shape[2] = h;
        shape[3] = w;
    }
    zi_tensor_t *t = zi_tensor_new (ZI_DT_U8, rank, shape);
    if (t) {
        //  t (b,h,w[,1]) = images[first:first+b]: the same bytes either way
        memcpy (t->data, (const uint8_t *)images->data + first * h * w,
                (size_t)(b * h * w));
    }
    return t;
}

int64_t
zi_cli_argmax_row (const zi_tensor_t *y, int64_t r)
{
    if (!y || y->rank < 1 || r >= y->ne[0]) {
        return -1;
    }
    int64_t row_len = zi_tensor_count (y) / (y->ne[0] ? y->ne[0] : 1);
    if (y->dtype == ZI_DT_I64 && y->rank <= 2) {
        //  argmax or topk post-processing: the class (first) index is there
        return ((const int64_t *)y->data)[r * row_len];
    }
    if (y->dtype != ZI_DT_F32 || row_len < 1) {
        return -1;
    }
    const float *row = (const float *)y->data + r * row_len;
    int64_t arg = 0;
    for (int64_t c = 1; c < row_len; c++) {
        if (row[c] > row[arg]) {
            arg = c;
        }
    }
    return arg;
}

//  ---------------------------------------------------------------------
//  The load driver

void
zi_cli_result_free (zi_cli_result_t *res)
{
    free (res->latency);
    memset (res, 0, sizeof *res);
}

static void
s_count_error (zi_cli_result_t *res, int code)
{
    for (size_t i = 0; i < ZI_CLI_MAX_CODES; i++) {
        if (res->codes[i] == code || res->codes[i] == 0) {
            res->codes[i] = code;
            res->code_counts[i]++;
            return;
        }
    }
}

static void
s_progress (const zi_cli_load_t *cfg, const zi_cli_result_t *res, double elapsed,
            bool final)
{
    bool tty = isatty (2);
    double rate = elapsed > 0 ? (double)res->samples / elapsed : 0;
    long errors = (long)res->failed;
    if (cfg->total > 0) {
        int width = 30;
        int64_t answered = res->ok + res->failed;
        int filled = (int)(width * answered / cfg->total);
        char bar[64];
        for (int i = 0; i < width; i++) {
            bar[i] = i < filled ? '#' : '.';
        }
        bar[width] = 0;
        fprintf (stderr, "%s[%s] %lld/%lld requests, %lld %s, %.0f %s/s, %ld errors%s",
                 tty ? "\r" : "", bar, (long long)answered, (long long)cfg->total,
                 (long long)res->samples, cfg->unit, rate, cfg->unit, errors,
                 tty && !final ? "  " : "\n");
    }
    else {
        fprintf (stderr, "%s%.0f s: %lld requests, %lld %s, %.0f %s/s, %ld errors%s",
                 tty ? "\r" : "", elapsed, (long long)(res->ok + res->failed),
                 (long long)res->samples, cfg->unit, rate, cfg->unit, errors,
                 tty && !final ? "  " : "\n");
    }
}

typedef struct {
    uint64_t id;
    int64_t k;
    int64_t rows;
    double sent;
} s_slot_t;

int
zi_cli_drive (zi_client_t *client, const zi_cli_load_t *cfg, zi_cli_result_t *res)
{
    memset (res, 0, sizeof *res);
    int conc = cfg->concurrency > 0 ? cfg->concurrency : 1;
    s_slot_t *slots = (s_slot_t *)calloc ((size_t)conc, sizeof *slots);
    size_t lat_cap = 1024;
    res->latency = (double *)malloc (lat_cap * sizeof *res->latency);
    if (!slots || !res->latency) {
        free (slots);
        fprintf (stderr, "zinfer %s: out of memory\n", cfg->cmd);
        return ZI_ERR_NOMEM;
    }
    int inflight = 0, rc = 0;
    int64_t next = 0;
    double t0 = zi_cli_now (), last_progress = t0, last_answer = t0;
    bool progress = cfg->progress;
    while (true) {
        double now = zi_cli_now ();
        bool more = cfg->total > 0 ? next < cfg->total
                                   : now - t0 < cfg->duration && !zsys_interrupted;
        //  Keep `conc` requests in flight.
        while (more && inflight < conc) {
            int64_t rows = 0;
            zi_msg_t *req = cfg->make (cfg->arg, next, &rows);
            if (!req) {
                rc = ZI_ERR_INVALID;
                goto done;
            }
            if (cfg->prio) {
                zi_msg_set_prio (req, (uint8_t)cfg->prio);
            }
            if (cfg->deadline_ms) {
                zi_msg_set_deadline_ms (req, cfg->deadline_ms);
            }
            uint64_t id;
            if (zi_client_send (client, &req, &id)) {
                zi_msg_destroy (&req);
                fprintf (stderr, "\nzinfer %s: cannot send request %lld\n", cfg->cmd,
                         (long long)next);
                rc = ZI_ERR_IO;
                goto done;
            }
            s_slot_t *slot = NULL;
            for (int i = 0; i < conc && !slot; i++) {
                slot = slots[i].id == 0 ? &slots[i] : NULL;
            }
            slot->id = id;
            slot->k = next;
            slot->rows = rows;
            slot->sent = zi_cli_now ();
            inflight++;
            res->sent++;
            next++;
            if (inflight == 1) {
                last_answer = slot->sent;
            }
            more = cfg->total > 0 ? next < cfg->total : true;
        }
        if (inflight == 0) {
            break;
        }
        zi_msg_t *reply = NULL;
        char err[512];
        int r = zi_client_recv (client, 100, &reply, err, sizeof err);
        now = zi_cli_now ();
        if (r == ZI_ERR_TIMEOUT || r == ZI_ERR_IO) {
            if (zsys_interrupted) {
                fprintf (stderr, "\nzinfer %s: interrupted\n", cfg->cmd);
                rc = ZI_ERR_IO;
                goto done;
            }
            if ((now - last_answer) * 1000.0 > cfg->timeout_ms) {
                fprintf (stderr,
                         "\nzinfer %s: no answer within %d ms (%d requests "
                         "outstanding): is the pipeline up?\n",
                         cfg->cmd, cfg->timeout_ms, inflight);
                rc = ZI_ERR_TIMEOUT;
                goto done;
            }
        }
        else if (r) {
            fprintf (stderr, "\nzinfer %s: malformed answer: %s\n", cfg->cmd, err);
            res->failed++;
            s_count_error (res, 0);
        }
        else {
            uint64_t id = zi_msg_id (reply);
            s_slot_t *slot = NULL;
            for (int i = 0; i < conc && !slot; i++) {
                slot = slots[i].id == id && slots[i].id ? &slots[i] : NULL;
            }
            if (!slot) {
                //  Not ours any more (or an ERROR without id): count it
                //  only if it is an error, and go on.
                if (zi_msg_cmd (reply) == ZI_CMD_ERROR) {
                    res->failed++;
                    s_count_error (res, zi_msg_code (reply));
                }
                zi_msg_destroy (&reply);
                continue;
            }
            last_answer = now;
            if (res->n_latency == lat_cap) {
                double *grown
                    = (double *)realloc (res->latency, 2 * lat_cap * sizeof *grown);
                if (!grown) {
                    rc = ZI_ERR_NOMEM;
                    zi_msg_destroy (&reply);
                    goto done;
                }
                res->latency = grown;
                lat_cap *= 2;
            }
            if (zi_msg_cmd (reply) == ZI_CMD_REPLY) {
                res->ok++;
                res->samples += slot->rows;
                res->latency[res->n_latency++] = now - slot->sent;
            }
            else {
                res->failed++;
                s_count_error (res, zi_msg_code (reply));
                if (res->failed <= 3 && zi_msg_cmd (reply) == ZI_CMD_ERROR) {
                    fprintf (stderr, "%szinfer %s: request %lld: %d %s: %s\n",
                             progress && isatty (2) ? "\n" : "", cfg->cmd,
                             (long long)slot->k, zi_msg_code (reply),
                             zi_code_name (zi_msg_code (reply)),
                             zi_msg_reason (reply) ? zi_msg_reason (reply) : "");
                }
            }
            if (cfg->done) {
                cfg->done (cfg->arg, slot->k, reply);
            }
            zi_msg_destroy (&reply);
            slot->id = 0;
            inflight--;
        }
        if (progress && now - last_progress >= (isatty (2) ? 0.1 : 1.0)) {
            last_progress = now;
            s_progress (cfg, res, now - t0, false);
        }
    }
done:
    res->seconds = zi_cli_now () - t0;
    if (progress) {
        s_progress (cfg, res, res->seconds, true);
    }
    zi_cli_sort (res->latency, res->n_latency);
    free (slots);
    return rc;
}

void
zi_cli_print_result (const zi_cli_load_t *cfg, const zi_cli_result_t *res)
{
    double s = res->seconds > 0 ? res->seconds : 1e-9;
    printf ("requests: %lld answered in %.2f s (%lld ok, %lld errors), concurrency %d\n",
            (long long)(res->ok + res->failed), res->seconds, (long long)res->ok,
            (long long)res->failed, cfg->concurrency);
    printf ("throughput: %.1f requests/s, %.1f %s/s\n", (double)res->ok / s,
            (double)res->samples / s, cfg->unit);
    printf ("latency: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
            1e3 * zi_cli_pct (res->latency, res->n_latency, 50),
            1e3 * zi_cli_pct (res->latency, res->n_latency, 90),
            1e3 * zi_cli_pct (res->latency, res->n_latency, 99),
            res->n_latency ? 1e3 * res->latency[res->n_latency - 1] : 0.0);
    if (res->failed) {
        printf ("errors:");
        for (size_t i = 0; i < ZI_CLI_MAX_CODES && res->codes[i]; i++) {
            printf (" %s%d %s: %lld", i ? ", " : "", res->codes[i],
                    res->codes[i] ? zi_code_name (res->codes[i]) : "malformed",
                    (long long)res->code_counts[i]);
        }
        printf ("\n");
    }
}

//  ---------------------------------------------------------------------
//  zinfer infer

static void
s_infer_usage (FILE *out)
{
    fprintf (
        out,
        "usage: zinfer infer (--plan PLAN | --endpoint EP) INPUT... [options]\n"
        "       zinfer infer (--plan PLAN | --endpoint EP) --idx IMAGES [--labels "
        "LABELS] ...\n"
        "\n"
        "Sends one request to a running pipeline and prints its outputs, or streams\n"
        "an IDX data set through it.\n"
        "\n"
        "  INPUT                NAME=FILE.npy, or NAME=FILE.raw:DTYPE:D,D,... (raw\n"
        "                       little-endian bytes)\n"
        "  --idx IMAGES         an uncompressed IDX image file (u8 [N,H,W]); images go\n"
        "                       as uint8 [B,H,W,1] under the plan's preprocess input\n"
        "  --idx-name NAME      the input they go to (needed with --endpoint)\n"
        "  --labels LABELS      IDX labels: print the accuracy of the answers (argmax\n"
        "                       of the first output)\n"
        "  --predictions FILE   write the predicted class of each image, one a line\n"
        "  --limit N            only the first N images\n"
        "  --batch B            images per request (default 64)\n"
        "  --concurrency C      requests in flight with --idx (default 8)\n"
        "  --prio N             priority class 0..7\n"
        "  --deadline MS        the request's time budget at the broker (0: the plan's)\n"
        "  --timeout MS         how long to wait for an answer (default 30000)\n"
        "  --out DIR            write each output as DIR/NAME.npy (with --idx: all\n"
        "                       batches concatenated)\n");
}

//  Outputs kept for --out in --idx mode: one growing buffer per output.
typedef struct {
    char name[ZI_MSG_MAX_NAME + 1];
    zi_tensor_t *first; //  the first batch's tensor (dtype, row shape)
    uint8_t *data;
    size_t bytes, cap;
    int64_t rows;
    bool bad;
} s_stream_out_t;

typedef struct {
    const zi_tensor_t *images;
    const zi_tensor_t *labels;
    const zi_plan_tensor_t *decl;
    const char *input_name;
    int64_t n, batch;
    int64_t *pred; //  [n], -1 until answered
    s_stream_out_t outs[ZI_MSG_MAX_TENSORS];
    size_t n_outs;
    bool keep_outputs;
    bool bad_output;
} s_stream_t;

static zi_msg_t *
s_stream_make (void *arg, int64_t k, int64_t *rows)
{
    s_stream_t *st = (s_stream_t *)arg;
    int64_t first = k * st->batch;
    int64_t b = st->n - first < st->batch ? st->n - first : st->batch;
    zi_tensor_t *x = zi_cli_idx_batch (st->images, first, b, st->decl);
    zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
    if (!x || !req || zi_msg_add_tensor (req, st->input_name, &x)) {
        zi_tensor_destroy (&x);
        zi_msg_destroy (&req);
        fprintf (stderr, "zinfer infer: cannot build request %lld\n", (long long)k);
        return NULL;
    }
    *rows = b;
    return req;
}

static void
s_stream_keep (s_stream_t *st, int64_t first, const zi_msg_t *reply)
{
    for (size_t i = 0; i < zi_msg_tensor_count (reply) && i < ZI_MSG_MAX_TENSORS; i++) {
        const zi_tensor_t *t = zi_msg_tensor (reply, i);
        s_stream_out_t *o = &st->outs[i];
        if (i >= st->n_outs) {
            st->n_outs = i + 1;
            snprintf (o->name, sizeof o->name, "%s", zi_msg_tensor_name (reply, i));
        }
        if (o->bad || t->rank < 1 || !zi_tensor_is_contiguous (t)) {
            o->bad = true;
            continue;
        }
        if (!o->first) {
            o->first = zi_tensor_dup (t);
        }
        size_t row_bytes = t->ne[0] ? t->nbytes / (size_t)t->ne[0] : 0;
        size_t at = (size_t)first * row_bytes, need = at + t->nbytes;
        bool same = o->first && o->first->dtype == t->dtype && o->first->rank == t->rank;
        for (int d = 1; same && d < t->rank; d++) {
            same = o->first->ne[d] == t->ne[d];
        }
        if (!same || strcmp (o->name, zi_msg_tensor_name (reply, i)) != 0) {
            o->bad = true;
            continue;
        }
        if (need > o->cap) {
            size_t cap = o->cap ? o->cap : 4096;
            while (cap < need) {
                cap *= 2;
            }
            uint8_t *grown = (uint8_t *)realloc (o->data, cap);
            if (!grown) {
                o->bad = true;
                continue;
            }
            memset (grown + o->cap, 0, cap - o->cap);
            o->data = grown;
            o->cap = cap;
        }
        memcpy (o->data + at, t->data, t->nbytes);
        o->bytes = need > o->bytes ? need : o->bytes;
        o->rows += t->ne[0];
    }
}

static void
s_stream_done (void *arg, int64_t k, const zi_msg_t *reply)
{
    s_stream_t *st = (s_stream_t *)arg;
    if (zi_msg_cmd (reply) != ZI_CMD_REPLY) {
        return;
    }
    int64_t first = k * st->batch;
    int64_t b = st->n - first < st->batch ? st->n - first : st->batch;
    const zi_tensor_t *y = zi_msg_tensor (reply, 0);
    if (!y || y->rank < 1 || y->ne[0] != b) {
        st->bad_output = true;
        return;
    }
    for (int64_t r = 0; r < b; r++) {
        st->pred[first + r] = zi_cli_argmax_row (y, r);
    }
    if (st->keep_outputs) {
        s_stream_keep (st, first, reply);
    }
}

static void
s_print_tensor (const char *name, const zi_tensor_t *t)
{
    char shape[128];
    printf ("%s: %s %s", name, zi_dtype_name (t->dtype),
            zi_tensor_shape_str (t, shape, sizeof shape));
    int64_t n = zi_tensor_count (t);
    int64_t show = n < 10 ? n : 10;
    if (show > 0 && zi_tensor_is_contiguous (t)) {
        printf (" = [");
        for (int64_t i = 0; i < show; i++) {
            const uint8_t *p
                = (const uint8_t *)t->data + i * (int64_t)zi_dtype_size (t->dtype);
            if (i) {
                printf (", ");
            }
            switch (t->dtype) {
            case ZI_DT_F32:
                printf ("%.6g", (double)*(const float *)p);
                break;
            case ZI_DT_F64:
                printf ("%.6g", *(const double *)p);
                break;
            case ZI_DT_F16:
                printf ("%.4g", (double)zi_f16_to_f32 (*(const uint16_t *)p));
                break;
            case ZI_DT_BF16:
                printf ("%.4g", (double)zi_bf16_to_f32 (*(const uint16_t *)p));
                break;
            case ZI_DT_I8:
                printf ("%d", *(const int8_t *)p);
                break;
            case ZI_DT_U8:
                printf ("%u", *p);
                break;
            case ZI_DT_BOOL:
                printf ("%s", *p ? "true" : "false");
                break;
            case ZI_DT_I16:
                printf ("%d", *(const int16_t *)p);
                break;
            case ZI_DT_U16:
                printf ("%u", *(const uint16_t *)p);
                break;
            case ZI_DT_I32:
                printf ("%d", *(const int32_t *)p);
                break;
            case ZI_DT_U32:
                printf ("%u", *(const uint32_t *)p);
                break;
            case ZI_DT_I64:
                printf ("%lld", (long long)*(const int64_t *)p);
                break;
            case ZI_DT_U64:
                printf ("%llu", (unsigned long long)*(const uint64_t *)p);
                break;
            default:
                printf ("?");
                break;
            }
        }
        printf ("%s]", n > show ? ", ..." : "");
    }
    printf ("\n");
}

static int
s_mkdir (const char *dir)
{
    if (mkdir (dir, 0777) != 0 && errno != EEXIST) {
        fprintf (stderr, "zinfer infer: %s: %s\n", dir, strerror (errno));
        return -1;
    }
    return 0;
}

//  One request of the given inputs; print the answer.
static int
s_infer_once (zi_client_t *client, int n, char names[][ZI_MSG_MAX_NAME + 1],
              zi_tensor_t **inputs, int prio, long deadline, int timeout_ms,
              const char *out_dir, const zi_tensor_t *labels)
{
    zi_msg_t *req = zi_msg_new (ZI_CMD_REQUEST);
    if (!req) {
        return 1;
    }
    for (int i = 0; i < n; i++) {
        if (zi_msg_add_tensor (req, names[i], &inputs[i])) {
            fprintf (stderr, "zinfer infer: cannot add input '%s' (duplicate name?)\n",
                     names[i]);
            zi_msg_destroy (&req);
            return 2;
        }
    }
    zi_msg_set_prio (req, (uint8_t)prio);
    zi_msg_set_deadline_ms (req, (uint32_t)deadline);
    uint64_t id;
    if (zi_client_send (client, &req, &id)) {
        zi_msg_destroy (&req);
        fprintf (stderr, "zinfer infer: cannot send the request\n");
        return 1;
    }
    double t0 = zi_cli_now ();
    zi_msg_t *reply = NULL;
    char err[512];
    while (true) {
        int left = timeout_ms - (int)((zi_cli_now () - t0) * 1000);
        int rc = zi_client_recv (client, left > 0 ? left : 0, &reply, err, sizeof err);
        if (rc) {
            fprintf (stderr, "zinfer infer: %s\n",
                     rc == ZI_ERR_TIMEOUT ? "no answer in time (is the pipeline up?)"
                                          : err);
            return 1;
        }
        if (zi_msg_id (reply) == id || zi_msg_cmd (reply) == ZI_CMD_ERROR) {
            break;
        }
        zi_msg_destroy (&reply);
    }
    double ms = (zi_cli_now () - t0) * 1000;
    int status = 0;
    if (zi_msg_cmd (reply) == ZI_CMD_ERROR) {
        printf ("error %d %s: %s\n", zi_msg_code (reply),
                zi_code_name (zi_msg_code (reply)),
                zi_msg_reason (reply) ? zi_msg_reason (reply) : "");
        status = 1;
    }
    else {
        printf ("reply in %.2f ms\n", ms);
        for (size_t i = 0; i < zi_msg_tensor_count (reply); i++) {
            s_print_tensor (zi_msg_tensor_name (reply, i), zi_msg_tensor (reply, i));
            if (out_dir) {
                char path[4096];
                snprintf (path, sizeof path, "%s/%s.npy", out_dir,
                          zi_msg_tensor_name (reply, i));
                if (zi_npy_write (path, zi_msg_tensor (reply, i), err, sizeof err)) {
                    fprintf (stderr, "zinfer infer: %s\n", err);
                    status = 1;
                }
            }
        }
        const zi_tensor_t *y = zi_msg_tensor (reply, 0);
        if (labels && y && y->rank >= 1) {
            int64_t correct = 0, rows = y->ne[0];
            for (int64_t r = 0; r < rows && r < labels->ne[0]; r++) {
                correct += zi_cli_argmax_row (y, r) == ((const uint8_t *)labels->data)[r];
            }
            printf ("accuracy: %.2f%% (%lld / %lld)\n",
                    rows ? 100.0 * (double)correct / (double)rows : 0.0,
                    (long long)correct, (long long)rows);
        }
    }
    zi_msg_destroy (&reply);
    return status;
}

int
zi_cmd_infer (int argc, char **argv)
{
    const char *plan_path = NULL, *endpoint = NULL, *idx = NULL, *idx_name = NULL;
    const char *labels_path = NULL, *out_dir = NULL, *pred_path = NULL;
    long limit = -1, batch = 64, prio = 0, deadline = 0, timeout = 30000, conc = 8;
    const char *specs[ZI_MSG_MAX_TENSORS];
    int n_specs = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp (a, "-h") == 0 || strcmp (a, "--help") == 0) {
            s_infer_usage (stdout);
            return 0;
        }
        if (a[0] != '-') {
            if (n_specs == ZI_MSG_MAX_TENSORS) {
                fprintf (stderr, "zinfer infer: at most %d inputs\n", ZI_MSG_MAX_TENSORS);
                return 2;
            }
            specs[n_specs++] = a;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf (stderr, "zinfer infer: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        struct {
            const char *opt;
            long *dst;
            long lo, hi;
        } nums[] = { { "--limit", &limit, 1, 1L << 40 },
                     { "--batch", &batch, 1, 1 << 20 },
                     { "--prio", &prio, 0, ZI_MSG_MAX_PRIO },
                     { "--deadline", &deadline, 0, UINT32_MAX },
                     { "--timeout", &timeout, 1, 86400000 },
                     { "--concurrency", &conc, 1, 4096 } };
        bool matched = false;
        for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
            if (strcmp (a, nums[k].opt) == 0) {
                matched = true;
                if (zi_cli_parse_long (v, nums[k].lo, nums[k].hi, nums[k].dst)) {
                    fprintf (stderr, "zinfer infer: %s needs an integer in %ld..%ld\n", a,
                             nums[k].lo, nums[k].hi);
                    return 2;
                }
            }
        }
        if (matched) {
            continue;
        }
        if (strcmp (a, "--plan") == 0) {
            plan_path = v;
        }
        else if (strcmp (a, "--endpoint") == 0) {
            endpoint = v;
        }
        else if (strcmp (a, "--idx") == 0) {
            idx = v;
        }
        else if (strcmp (a, "--idx-name") == 0) {
            idx_name = v;
        }
        else if (strcmp (a, "--labels") == 0) {
            labels_path = v;
        }
        else if (strcmp (a, "--predictions") == 0) {
            pred_path = v;
        }
        else if (strcmp (a, "--out") == 0) {
            out_dir = v;
        }
        else {
            fprintf (stderr, "zinfer infer: unknown option '%s'\n\n", a);
            s_infer_usage (stderr);
            return 2;
        }
    }
    if (!idx == !n_specs) {
        fprintf (stderr,
                 "zinfer infer: give inputs (NAME=FILE...) or --idx IMAGES, "
                 "not %s\n\n",
                 idx ? "both" : "neither");
        s_infer_usage (stderr);
        return 2;
    }
    zi_plan_t *plan = NULL;
    const char *ep = NULL;
    int status = zi_cli_target ("infer", plan_path, endpoint, &plan, &ep);
    if (status) {
        return status;
    }
    status = 1;
    char err[1024];
    char names[ZI_MSG_MAX_TENSORS][ZI_MSG_MAX_NAME + 1];
    zi_tensor_t *inputs[ZI_MSG_MAX_TENSORS] = { NULL };
    zi_tensor_t *images = NULL, *labels = NULL;
    zi_client_t *client = NULL;
    s_stream_t st;
    memset (&st, 0, sizeof st);
    FILE *pred = NULL;
    for (int i = 0; i < n_specs; i++) {
        if (zi_cli_parse_input (specs[i], names[i], sizeof names[i], &inputs[i], err,
                                sizeof err)) {
            fprintf (stderr, "zinfer infer: %s\n", err);
            status = 2;
            goto done;
        }
    }
    if ((idx && zi_idx_read (idx, &images, err, sizeof err))
        || (labels_path && zi_idx_read (labels_path, &labels, err, sizeof err))) {
        fprintf (stderr, "zinfer infer: %s\n", err);
        goto done;
    }
    if (images && (images->dtype != ZI_DT_U8 || images->rank != 3)) {
        fprintf (stderr, "zinfer infer: %s: expected u8 images [N,H,W]\n", idx);
        goto done;
    }
    if (labels
        && (labels->dtype != ZI_DT_U8 || labels->rank != 1
            || (images && labels->ne[0] < images->ne[0]))) {
        fprintf (stderr, "zinfer infer: %s: expected u8 labels [N], one per image\n",
                 labels_path);
        goto done;
    }
    if (out_dir && s_mkdir (out_dir)) {
        goto done;
    }
    if (pred_path && !(pred = fopen (pred_path, "w"))) {
        fprintf (stderr, "zinfer infer: %s: %s\n", pred_path, strerror (errno));
        goto done;
    }
    client = plan ? zi_client_new_plan (plan, err, sizeof err)
                  : zi_client_new (ep, err, sizeof err);
    if (!client) {
        fprintf (stderr, "zinfer infer: %s\n", err);
        goto done;
    }
    if (!idx) {
        status = s_infer_once (client, n_specs, names, inputs, (int)prio, deadline,
                               (int)timeout, out_dir, labels);
        goto done;
    }
    //  Stream the data set.
    st.images = images;
    st.labels = labels;
    st.n = limit > 0 && limit < images->ne[0] ? limit : images->ne[0];
    st.batch = batch;
    st.keep_outputs = out_dir != NULL;
    const zi_plan_tensor_t *decl = NULL;
    if (idx_name) {
        for (size_t i = 0; plan && i < plan->model.n_inputs; i++) {
            const zi_plan_tensor_t *d = zi_cli_client_input (plan, i);
            decl = strcmp (d->name, idx_name) == 0 ? d : decl;
        }
        st.input_name = idx_name;
    }
    else if (plan) {
        decl = zi_cli_client_input (plan, 0);
        st.input_name = decl->name;
    }
    else {
        fprintf (stderr,
                 "zinfer infer: with --endpoint, --idx needs --idx-name NAME (the "
                 "model input the images go to)\n");
        status = 2;
        goto done;
    }
    st.decl = decl;
    st.pred = (int64_t *)malloc ((size_t)st.n * sizeof *st.pred);
    if (!st.pred) {
        fprintf (stderr, "zinfer infer: out of memory\n");
        goto done;
    }
    for (int64_t i = 0; i < st.n; i++) {
        st.pred[i] = -1;
    }
    zi_cli_load_t cfg = {
        .cmd = "infer",
        .unit = "images",
        .concurrency = (int)conc,
        .timeout_ms = (int)timeout,
        .prio = (int)prio,
        .deadline_ms = (uint32_t)deadline,
        .total = (st.n + batch - 1) / batch,
        .make = s_stream_make,
        .done = s_stream_done,
        .arg = &st,
        .progress = true,
    };
    zi_cli_result_t res;
    int rc = zi_cli_drive (client, &cfg, &res);
    printf ("images: %lld in batches of %ld, %s\n", (long long)st.n, batch, idx);
    zi_cli_print_result (&cfg, &res);
    if (st.bad_output) {
        printf ("warning: some answers' first output is not one row per image\n");
    }
    int64_t answered = 0, correct = 0;
    for (int64_t i = 0; i < st.n; i++) {
        if (st.pred[i] >= 0) {
            answered++;
            correct += labels && st.pred[i] == ((const uint8_t *)labels->data)[i];
        }
        if (pred) {
            fprintf (pred, "%lld\n", (long long)st.pred[i]);
        }
    }
    if (labels) {
        //  Over the images answered: an interrupted run still says
        //  something true.
        printf ("accuracy: %.2f%% (%lld / %lld)%s\n",
                answered ? 100.0 * (double)correct / (double)answered : 0.0,
                (long long)correct, (long long)answered,
                answered < st.n ? " of the images answered" : "");
    }
    for (size_t i = 0; out_dir && i < st.n_outs; i++) {
        s_stream_out_t *o = &st.outs[i];
        if (o->bad || !o->first || o->rows != st.n) {
            fprintf (stderr, "zinfer infer: output '%s' cannot be written as one array\n",
                     o->name);
            continue;
        }
        int64_t shape[ZI_MAX_RANK];
        memcpy (shape, o->first->ne, sizeof shape);
        shape[0] = st.n;
        zi_tensor_t all;
        char path[4096];
        snprintf (path, sizeof path, "%s/%s.npy", out_dir, o->name);
        if (zi_tensor_init_view (&all, o->first->dtype, o->first->rank, shape, o->data,
                                 o->bytes)
            || zi_npy_write (path, &all, err, sizeof err)) {
            fprintf (stderr, "zinfer infer: %s: cannot write\n", path);
        }
    }
    status = rc == 0 && res.failed == 0 && answered == st.n ? 0 : 1;
    zi_cli_result_free (&res);
done:
    for (size_t i = 0; i < st.n_outs; i++) {
        zi_tensor_destroy (&st.outs[i].first);
        free (st.outs[i].data);
    }
    free (st.pred);
    if (pred) {
        fclose (pred);
    }
    for (int i = 0; i < n_specs; i++) {
        zi_tensor_destroy (&inputs[i]);
    }
    zi_tensor_destroy (&images);
    zi_tensor_destroy (&labels);
    zi_client_destroy (&client);
    zi_plan_destroy (&plan);
    return status;
}
