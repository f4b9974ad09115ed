/*  zinfer stats - ask a running broker for its statistics and print them.

        zinfer stats (--plan PLAN | --endpoint EP) [--json] [--timeout MS]

    The broker answers STATS with one msgpack map whose keys it documents
    (lib/zi_broker.c). This command does not hard-code them: it prints the
    scalars of each map as "key  value" lines and every array of maps as a
    table (one row per element, one column per scalar key), recursively, so
    a key the broker adds later shows up without a change here. Where a
    table has a capacity column ("capacity" or "cap") and a task count
    ("tasks", "done", "assigned" or "dispatched"), two columns are added:
    each row's share of the tasks and the share T*R_i/sum(R) predicts.

    Decoding: the STATS_REPLY was validated by zi_msg (one well-formed map,
    every count checked against the bytes, depth <= 6) before
    zi_msg_stats hands it out, so msgpack-c's unpacker, which allocates
    for a container's claimed size, only sees sizes that are real. Every
    type is still checked while walking it.
*/
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "zi_client.h"
#include "zi_json.h"
#include "zinfer.h"

//  msgpack object -> zi_json value (NULL when out of memory).
static zi_json_t *
s_to_json (const msgpack_object *o, int depth)
{
    if (depth > 16) {
        return zi_json_new_null ();
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return zi_json_new_null ();
    case MSGPACK_OBJECT_BOOLEAN:
        return zi_json_new_bool (o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return o->via.u64 <= INT64_MAX ? zi_json_new_int ((int64_t)o->via.u64)
                                       : zi_json_new_double ((double)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return zi_json_new_int (o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return isfinite (o->via.f64) ? zi_json_new_double (o->via.f64)
                                     : zi_json_new_null ();
    case MSGPACK_OBJECT_STR:
        return zi_json_new_stringn (o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: {
        char text[64];
        snprintf (text, sizeof text, "<%" PRIu32 " bytes>", o->via.bin.size);
        return zi_json_new_string (text);
    }
    case MSGPACK_OBJECT_ARRAY: {
        zi_json_t *a = zi_json_new_array ();
        for (uint32_t i = 0; a && i < o->via.array.size; i++) {
            zi_json_t *v = s_to_json (&o->via.array.ptr[i], depth + 1);
            if (!v || zi_json_append (a, &v)) {
                zi_json_destroy (&v);
                zi_json_destroy (&a);
            }
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        zi_json_t *m = zi_json_new_object ();
        for (uint32_t i = 0; m && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            char key[256];
            if (kv->key.type == MSGPACK_OBJECT_STR) {
                size_t n = kv->key.via.str.size < sizeof key - 1 ? kv->key.via.str.size
                                                                 : sizeof key - 1;
                memcpy (key, kv->key.via.str.ptr, n);
                key[n] = 0;
            }
            else if (kv->key.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                snprintf (key, sizeof key, "%" PRIu64, kv->key.via.u64);
            }
            else if (kv->key.type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
                snprintf (key, sizeof key, "%" PRId64, kv->key.via.i64);
            }
            else {
                snprintf (key, sizeof key, "?%u", i);
            }
            zi_json_t *v = s_to_json (&kv->val, depth + 1);
            if (!v || zi_json_set (m, key, &v)) {
                zi_json_destroy (&v);
                zi_json_destroy (&m);
            }
        }
        return m;
    }
    default:
        //  ext: not valid in a header; zi_msg would have refused it
        return zi_json_new_null ();
    }
}

int
zi_cli_stats_to_json (const uint8_t *data, size_t size, zi_json_t **out)
{
    *out = NULL;
    msgpack_unpacked result;
    msgpack_unpacked_init (&result);
    size_t off = 0;
    int rc = ZI_ERR_MALFORMED;
    if (msgpack_unpack_next (&result, (const char *)data, size, &off)
            == MSGPACK_UNPACK_SUCCESS
        && result.data.type == MSGPACK_OBJECT_MAP) {
        *out = s_to_json (&result.data, 0);
        rc = *out ? 0 : ZI_ERR_NOMEM;
    }
    msgpack_unpacked_destroy (&result);
    return rc;
}

//  ---------------------------------------------------------------------
//  Rendering

static bool
s_is_scalar (const zi_json_t *v)
{
    zi_json_type_t t = zi_json_type (v);
    return t == ZI_JSON_NULL || t == ZI_JSON_BOOL || t == ZI_JSON_NUMBER
           || t == ZI_JSON_STRING;
}

static bool
s_is_scalar_array (const zi_json_t *v)
{
    if (zi_json_type (v) != ZI_JSON_ARRAY) {
        return false;
    }
    for (size_t i = 0; i < zi_json_size (v); i++) {
        if (!s_is_scalar (zi_json_at (v, i))) {
            return false;
        }
    }
    return true;
}

static bool
s_is_table (const zi_json_t *v)
{
    if (zi_json_type (v) != ZI_JSON_ARRAY || zi_json_size (v) == 0) {
        return false;
    }
    for (size_t i = 0; i < zi_json_size (v); i++) {
        if (zi_json_type (zi_json_at (v, i)) != ZI_JSON_OBJECT) {
            return false;
        }
    }
    return true;
}

//  A scalar (or a short array of scalars) as text.
static void
s_format (const zi_json_t *v, char *buf, size_t len)
{
    switch (zi_json_type (v)) {
    case ZI_JSON_NULL:
        snprintf (buf, len, "-");
        break;
    case ZI_JSON_BOOL:
        snprintf (buf, len, "%s", zi_json_bool (v) ? "yes" : "no");
        break;
    case ZI_JSON_NUMBER: {
        double x = zi_json_num (v);
        if (zi_json_is_int (v) || (x == floor (x) && fabs (x) < 1e15)) {
            snprintf (buf, len, "%.0f", x);
        }
        else if (fabs (x) >= 100) {
            snprintf (buf, len, "%.1f", x);
        }
        else {
            snprintf (buf, len, "%.3g", x);
        }
        break;
    }
    case ZI_JSON_STRING:
        snprintf (buf, len, "%s", zi_json_str (v));
        break;
    case ZI_JSON_ARRAY: {
        size_t used = 0;
        used += (size_t)snprintf (buf, len, "[");
        for (size_t i = 0; i < zi_json_size (v) && used < len; i++) {
            char item[64];
            s_format (zi_json_at (v, i), item, sizeof item);
            used
                += (size_t)snprintf (buf + used, len - used, "%s%s", i ? ", " : "", item);
        }
        if (used < len) {
            snprintf (buf + used, len - used, "]");
        }
        break;
    }
    default:
        snprintf (buf, len, "{...}");
        break;
    }
}

static const char *s_cap_keys[] = { "capacity", "cap", NULL };
static const char *s_task_keys[] = { "tasks", "done", "assigned", "dispatched", NULL };

static const char *
s_first_key (const zi_json_t *table, const char **keys)
{
    for (const char **k = keys; *k; k++) {
        bool all = true;
        for (size_t i = 0; i < zi_json_size (table) && all; i++) {
            all = zi_json_type (zi_json_get (zi_json_at (table, i), *k))
                  == ZI_JSON_NUMBER;
        }
        if (all) {
            return *k;
        }
    }
    return NULL;
}

#define S_MAX_COLS 48

static void s_render_object (const zi_json_t *obj, const char *path, int indent);

//  An array of objects as a table; nested tables of its rows follow it.
static void
s_render_table (const zi_json_t *table, const char *path, int indent)
{
    const char *cols[S_MAX_COLS];
    size_t n_cols = 0;
    size_t rows = zi_json_size (table);
    for (size_t r = 0; r < rows; r++) {
        const zi_json_t *row = zi_json_at (table, r);
        for (size_t k = 0; k < zi_json_size (row) && n_cols < S_MAX_COLS - 2; k++) {
            const zi_json_t *v = zi_json_at (row, k);
            if (!s_is_scalar (v) && !s_is_scalar_array (v)) {
                continue;
            }
            const char *key = zi_json_key_at (row, k);
            bool seen = false;
            for (size_t c = 0; c < n_cols && !seen; c++) {
                seen = strcmp (cols[c], key) == 0;
            }
            if (!seen) {
                cols[n_cols++] = key;
            }
        }
    }
    //  The load-balancing check: observed share of tasks vs R_i / sum R.
    const char *cap_key = s_first_key (table, s_cap_keys);
    const char *task_key = s_first_key (table, s_task_keys);
    double sum_cap = 0, sum_tasks = 0;
    bool shares = cap_key && task_key && rows > 1;
    for (size_t r = 0; shares && r < rows; r++) {
        sum_cap += zi_json_num (zi_json_get (zi_json_at (table, r), cap_key));
        sum_tasks += zi_json_num (zi_json_get (zi_json_at (table, r), task_key));
    }
    shares = shares && sum_cap > 0;
    size_t n_all = n_cols + (shares ? 2 : 0);
    //  cells[r][c], r = 0 is the header
    char (*cells)[S_MAX_COLS][48] = calloc (rows + 1, sizeof *cells);
    if (!cells) {
        return;
    }
    for (size_t c = 0; c < n_cols; c++) {
        snprintf (cells[0][c], 48, "%s", cols[c]);
    }
    if (shares) {
        snprintf (cells[0][n_cols], 48, "share");
        snprintf (cells[0][n_cols + 1], 48, "R/sum(R)");
    }
    for (size_t r = 0; r < rows; r++) {
        const zi_json_t *row = zi_json_at (table, r);
        for (size_t c = 0; c < n_cols; c++) {
            const zi_json_t *v = zi_json_get (row, cols[c]);
            if (v) {
                s_format (v, cells[r + 1][c], 48);
            }
            else {
                snprintf (cells[r + 1][c], 48, "-");
            }
        }
        if (shares) {
            double t = zi_json_num (zi_json_get (row, task_key));
            double cap = zi_json_num (zi_json_get (row, cap_key));
            snprintf (cells[r + 1][n_cols], 48, "%.1f%%",
                      sum_tasks > 0 ? 100.0 * t / sum_tasks : 0.0);
            snprintf (cells[r + 1][n_cols + 1], 48, "%.1f%%", 100.0 * cap / sum_cap);
        }
    }
    int width[S_MAX_COLS];
    for (size_t c = 0; c < n_all; c++) {
        width[c] = 0;
        for (size_t r = 0; r <= rows; r++) {
            int w = (int)strlen (cells[r][c]);
            width[c] = w > width[c] ? w : width[c];
        }
    }
    printf ("%*s%s:\n", indent, "", path);
    for (size_t r = 0; r <= rows; r++) {
        printf ("%*s", indent + 2, "");
        for (size_t c = 0; c < n_all; c++) {
            //  Names left, numbers right: text columns read better that way.
            bool left = c == 0
                        || (r > 0
                            && zi_json_type (zi_json_get (zi_json_at (table, r - 1),
                                                          cols[c < n_cols ? c : 0]))
                                   == ZI_JSON_STRING
                            && c < n_cols);
            printf ("%s%*s%s", c ? "  " : "",
                    left ? 0 : width[c] - (int)strlen (cells[r][c]), "", cells[r][c]);
            if (left && c + 1 < n_all) {
                printf ("%*s", width[c] - (int)strlen (cells[r][c]), "");
            }
        }
        printf ("\n");
    }
    if (shares) {
        printf (
            "%*s(share: each row's part of the %.0f %s; R/sum(R): the part its capacity "
            "predicts)\n",
            indent + 2, "", sum_tasks, task_key);
    }
    free (cells);
    //  Tables and maps inside the rows (a segment's replicas).
    for (size_t r = 0; r < rows; r++) {
        const zi_json_t *row = zi_json_at (table, r);
        for (size_t k = 0; k < zi_json_size (row); k++) {
            const zi_json_t *v = zi_json_at (row, k);
            if (s_is_scalar (v) || s_is_scalar_array (v)) {
                continue;
            }
            char sub[512];
            snprintf (sub, sizeof sub, "%s[%zu].%s", path, r, zi_json_key_at (row, k));
            if (s_is_table (v)) {
                s_render_table (v, sub, indent + 2);
            }
            else if (zi_json_type (v) == ZI_JSON_OBJECT) {
                printf ("%*s%s:\n", indent + 2, "", sub);
                s_render_object (v, sub, indent + 4);
            }
        }
    }
}

static void
s_render_object (const zi_json_t *obj, const char *path, int indent)
{
    int width = 0;
    for (size_t k = 0; k < zi_json_size (obj); k++) {
        const zi_json_t *v = zi_json_at (obj, k);
        int w = (int)strlen (zi_json_key_at (obj, k));
        if ((s_is_scalar (v) || s_is_scalar_array (v)) && w > width) {
            width = w;
        }
    }
    //  Scalars first, as aligned "key  value" lines.
    for (size_t k = 0; k < zi_json_size (obj); k++) {
        const zi_json_t *v = zi_json_at (obj, k);
        if (s_is_scalar (v) || (s_is_scalar_array (v) && zi_json_size (v) > 0)) {
            char text[512];
            s_format (v, text, sizeof text);
            printf ("%*s%-*s  %s\n", indent, "", width, zi_json_key_at (obj, k), text);
        }
    }
    for (size_t k = 0; k < zi_json_size (obj); k++) {
        const zi_json_t *v = zi_json_at (obj, k);
        const char *key = zi_json_key_at (obj, k);
        char sub[512];
        snprintf (sub, sizeof sub, "%s%s%s", path, *path ? "." : "", key);
        if (s_is_table (v)) {
            printf ("\n");
            s_render_table (v, sub, indent);
        }
        else if (zi_json_type (v) == ZI_JSON_OBJECT && zi_json_size (v) == 0) {
            printf ("\n%*s%s: none\n", indent, "", sub);
        }
        else if (zi_json_type (v) == ZI_JSON_OBJECT) {
            printf ("\n%*s%s:\n", indent, "", sub);
            s_render_object (v, sub, indent + 2);
        }
    }
}

void
zi_cli_stats_print (const zi_json_t *stats)
{
    s_render_object (stats, "", 0);
}

//  ---------------------------------------------------------------------
//  zinfer stats

static void
s_stats_usage (FILE *out)
{
    fprintf (
        out,
        "usage: zinfer stats (--plan PLAN | --endpoint EP) [--json] [--timeout MS]\n"
        "\n"
        "Asks a running broker for its statistics (STATS) and prints them as tables:\n"
        "requests, per segment and per replica (capacity, share of tasks beside the\n"
        "share R_i/sum(R) predicts, in flight, done, busy time, latency), stages.\n"
        "\n"
        "  --json        print the statistics as JSON instead\n"
        "  --timeout MS  how long to wait for the broker (default 5000)\n");
}

int
zi_cmd_stats (int argc, char **argv)
{
    const char *plan_path = NULL, *endpoint = NULL;
    bool json = false;
    long timeout = 5000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp (a, "-h") == 0 || strcmp (a, "--help") == 0) {
            s_stats_usage (stdout);
            return 0;
        }
        if (strcmp (a, "--json") == 0) {
            json = true;
            continue;
        }
        if (i + 1 >= argc || a[0] != '-') {
            fprintf (stderr, "zinfer stats: %s '%s'\n\n",
                     a[0] == '-' ? "missing value for" : "unexpected argument", a);
            s_stats_usage (stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp (a, "--plan") == 0) {
            plan_path = v;
        }
        else if (strcmp (a, "--endpoint") == 0) {
            endpoint = v;
        }
        else if (strcmp (a, "--timeout") == 0) {
            if (zi_cli_parse_long (v, 1, 86400000, &timeout)) {
                fprintf (stderr,
                         "zinfer stats: --timeout needs a positive integer (ms)\n");
                return 2;
            }
        }
        else {
            fprintf (stderr, "zinfer stats: unknown option '%s'\n\n", a);
            s_stats_usage (stderr);
            return 2;
        }
    }
    zi_plan_t *plan = NULL;
    const char *ep = NULL;
    int status = zi_cli_target ("stats", plan_path, endpoint, &plan, &ep);
    if (status) {
        return status;
    }
    status = 1;
    char err[1024];
    zi_msg_t *reply = NULL;
    zi_json_t *doc = NULL;
    zi_client_t *client = plan ? zi_client_new_plan (plan, err, sizeof err)
                               : zi_client_new (ep, err, sizeof err);
    if (!client) {
        fprintf (stderr, "zinfer stats: %s\n", err);
        goto done;
    }
    int rc = zi_client_stats (client, (int)timeout, &reply, err, sizeof err);
    if (rc) {
        fprintf (stderr, "zinfer stats: %s: %s\n", ep,
                 rc == ZI_ERR_TIMEOUT ? "no answer (is the broker up?)" : err);
        goto done;
    }
    size_t size = 0;
    const uint8_t *data = zi_msg_stats (reply, &size);
    if (!data) {
        fprintf (stderr, "zinfer stats: the broker's STATS_REPLY has no statistics\n");
        goto done;
    }
    rc = zi_cli_stats_to_json (data, size, &doc);
    if (rc) {
        fprintf (stderr, "zinfer stats: cannot decode the statistics (%s)\n",
                 zi_strerror (rc));
        goto done;
    }
    if (json) {
        char *text = zi_json_dump (doc, ZI_JSON_PRETTY, NULL);
        if (!text) {
            fprintf (stderr, "zinfer stats: out of memory\n");
            goto done;
        }
        printf ("%s\n", text);
        free (text);
    }
    else {
        printf ("broker %s\n\n", ep);
        zi_cli_stats_print (doc);
    }
    status = 0;
done:
    zi_json_destroy (&doc);
    zi_msg_destroy (&reply);
    zi_client_destroy (&client);
    zi_plan_destroy (&plan);
    return status;
}
