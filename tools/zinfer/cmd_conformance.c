/*  cmd_conformance.c - `zinfer conformance`: run ONNX backend test folders.

    An ONNX backend test is a folder:

        test_relu/model.onnx
        test_relu/test_data_set_0/input_0.pb ... output_0.pb   (TensorProto)
        test_relu/test_data_set_1/...

    For each test we load the model (refused -> UNSUPPORTED, with the missing
    op / dtype names), build an executor for the whole graph, feed every data
    set's inputs (by name when the file names one, else by position) and
    compare each output with the expected one: same dtype and shape, floats
    within |got - want| <= atol + rtol * |want| (rtol 1e-3, atol 1e-7, as
    the ONNX backend runner; NaN equals NaN), integers and bools exactly.

    Statuses: PASS, FAIL (first mismatch), UNSUPPORTED (the loader refused the
    model, or a kernel answered ZI_ERR_UNSUPPORTED for these inputs), ERROR
    (load or run failed otherwise), and with --fork CRASH / TIMEOUT (each
    test runs in a child process with an alarm, so a crashing kernel costs
    one test, not the report). A test named in the exceptions file is
    EXCEPTED instead of FAIL/ERROR/CRASH/TIMEOUT and does not fail the run.

    Exit status: 0 when no supported, non-excepted test failed; 1 otherwise;
    2 on bad usage.
*/
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zi_exec.h"
#include "zi_onnx.h"
#include "zi_tensor.h"
#include "zinfer.h"

#define S_RTOL 1e-3
#define S_ATOL 1e-7
#define S_MSG 2048
#define S_MAX_IO 64             //  inputs / outputs per data set we read

typedef enum {
    S_PASS,
    S_FAIL,
    S_UNSUPPORTED,
    S_ERROR,
    S_CRASH,
    S_TIMEOUT,
    S_NSTATUS
} s_status_t;

static const char *s_status_names[S_NSTATUS] = {"PASS",  "FAIL",  "UNSUPPORTED",
                                                "ERROR", "CRASH", "TIMEOUT"};

//  -------------------------------------------------------------------------
//  Small helpers

static bool
s_is_file (const char *path)
{
    struct stat st;
    return stat (path, &st) == 0 && S_ISREG (st.st_mode);
}

static bool
s_is_dir (const char *path)
{
    struct stat st;
    return stat (path, &st) == 0 && S_ISDIR (st.st_mode);
}

static const char *
s_basename (const char *path)
{
    size_t len = strlen (path);
    while (len > 1 && path[len - 1] == '/') {
        len--;
    }
    const char *p = path + len;
    while (p > path && p[-1] != '/') {
        p--;
    }
    return p;
}

//  Basename without trailing slashes, into buf.
static void
s_name_of (const char *path, char *buf, size_t len)
{
    const char *b = s_basename (path);
    size_t n = strcspn (b, "/");
    if (n >= len) {
        n = len - 1;
    }
    memcpy (buf, b, n);
    buf[n] = 0;
}

//  Sorted names of the entries of dir accepted by `keep` (may be NULL).
static int
s_list_dir (const char *dir, bool (*keep) (const char *dir, const char *name),
            char ***names_p)
{
    struct dirent **ents = NULL;
    int n = scandir (dir, &ents, NULL, alphasort);
    if (n < 0) {
        *names_p = NULL;
        return -1;
    }
    char **names = (char **) calloc ((size_t) n + 1, sizeof (char *));
    int count = 0;
    for (int i = 0; i < n; i++) {
        if (names && ents[i]->d_name[0] != '.'
            && (!keep || keep (dir, ents[i]->d_name))) {
            names[count] = strdup (ents[i]->d_name);
            if (names[count]) {
                count++;
            }
        }
        free (ents[i]);
    }
    free (ents);
    *names_p = names;
    return names ? count : -1;
}

static void
s_free_names (char **names, int n)
{
    for (int i = 0; i < n; i++) {
        free (names[i]);
    }
    free (names);
}

static bool
s_keep_test_dir (const char *dir, const char *name)
{
    char path[4096];
    snprintf (path, sizeof path, "%s/%s/model.onnx", dir, name);
    return s_is_file (path);
}

static bool
s_keep_data_set (const char *dir, const char *name)
{
    char path[4096];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    return strncmp (name, "test_data_set_", 14) == 0 && s_is_dir (path);
}

//  -------------------------------------------------------------------------
//  Comparing tensors

static double
s_elem_double (const zi_tensor_t *t, int64_t i)
{
    const void *d = t->data;
    switch (t->dtype) {
        case ZI_DT_F32: return ((const float *) d)[i];
        case ZI_DT_F64: return ((const double *) d)[i];
        case ZI_DT_F16: return zi_f16_to_f32 (((const uint16_t *) d)[i]);
        case ZI_DT_BF16: return zi_bf16_to_f32 (((const uint16_t *) d)[i]);
        default: return 0;
    }
}

static bool
s_is_float (zi_dtype_t dt)
{
    return dt == ZI_DT_F32 || dt == ZI_DT_F64 || dt == ZI_DT_F16 || dt == ZI_DT_BF16;
}

//  Element i of an integer or bool tensor, as text (exact).
static void
s_elem_int_str (const zi_tensor_t *t, int64_t i, char *buf, size_t len)
{
    const void *d = t->data;
    switch (t->dtype) {
        case ZI_DT_U8: case ZI_DT_BOOL:
            snprintf (buf, len, "%u", ((const uint8_t *) d)[i]);
            break;
        case ZI_DT_I8: snprintf (buf, len, "%d", ((const int8_t *) d)[i]); break;
        case ZI_DT_U16: snprintf (buf, len, "%u", ((const uint16_t *) d)[i]); break;
        case ZI_DT_I16: snprintf (buf, len, "%d", ((const int16_t *) d)[i]); break;
        case ZI_DT_I32: snprintf (buf, len, "%d", ((const int32_t *) d)[i]); break;
        case ZI_DT_U32: snprintf (buf, len, "%u", ((const uint32_t *) d)[i]); break;
        case ZI_DT_I64:
            snprintf (buf, len, "%lld", (long long) ((const int64_t *) d)[i]);
            break;
        case ZI_DT_U64:
            snprintf (buf, len, "%llu", (unsigned long long) ((const uint64_t *) d)[i]);
            break;
        default: snprintf (buf, len, "?"); break;
    }
}

//  The coordinates of flat index i as "(0,2,1)".
static void
s_coords (const zi_tensor_t *t, int64_t i, char *buf, size_t len)
{
    int64_t idx[ZI_MAX_RANK];
    for (int k = t->rank - 1; k >= 0; k--) {
        idx[k] = t->ne[k] ? i % t->ne[k] : 0;
        i = t->ne[k] ? i / t->ne[k] : 0;
    }
    size_t pos = (size_t) snprintf (buf, len, "(");
    for (int k = 0; k < t->rank && pos < len; k++) {
        pos += (size_t) snprintf (buf + pos, len - pos, k ? ",%lld" : "%lld",
                                  (long long) idx[k]);
    }
    if (pos < len) {
        snprintf (buf + pos, len - pos, ")");
    }
}

//  Compare got with want; on a mismatch write the first one into msg.
static bool
s_compare (const char *name, const zi_tensor_t *got, const zi_tensor_t *want, char *msg,
           size_t len)
{
    char a[128], b[128];
    if (got->dtype != want->dtype) {
        snprintf (msg, len, "output '%s': dtype %s, expected %s", name,
                  zi_dtype_name (got->dtype), zi_dtype_name (want->dtype));
        return false;
    }
    if (!zi_tensor_same_shape (got, want)) {
        snprintf (msg, len, "output '%s': shape %s, expected %s", name,
                  zi_tensor_shape_str (got, a, sizeof a),
                  zi_tensor_shape_str (want, b, sizeof b));
        return false;
    }
    //  Executor outputs and loaded files are both contiguous; make sure.
    zi_tensor_t *gc = NULL;
    if (!zi_tensor_is_contiguous (got)) {
        gc = zi_tensor_dup (got);
        if (!gc) {
            snprintf (msg, len, "output '%s': out of memory", name);
            return false;
        }
        got = gc;
    }
    int64_t n = zi_tensor_count (want);
    bool ok = true;
    for (int64_t i = 0; i < n && ok; i++) {
        if (s_is_float (want->dtype)) {
            double g = s_elem_double (got, i), w = s_elem_double (want, i);
            if ((isnan (g) && isnan (w)) || g == w) {
                continue;
            }
            if (!(fabs (g - w) <= S_ATOL + S_RTOL * fabs (w))) {
                char at[128];
                s_coords (want, i, at, sizeof at);
                snprintf (msg, len, "output '%s' [%lld] %s: got %.9g, expected %.9g",
                          name, (long long) i, at, g, w);
                ok = false;
            }
        }
        else {
            size_t es = zi_dtype_size (want->dtype);
            if (memcmp ((const uint8_t *) got->data + (size_t) i * es,
                        (const uint8_t *) want->data + (size_t) i * es, es) != 0) {
                char at[128];
                s_coords (want, i, at, sizeof at);
                s_elem_int_str (got, i, a, sizeof a);
                s_elem_int_str (want, i, b, sizeof b);
                snprintf (msg, len, "output '%s' [%lld] %s: got %s, expected %s", name,
                          (long long) i, at, a, b);
                ok = false;
            }
        }
    }
    zi_tensor_destroy (&gc);
    return ok;
}

//  -------------------------------------------------------------------------
//  Running one test

typedef struct {
    int n;
    zi_tensor_t *t[S_MAX_IO];
    char *name[S_MAX_IO];
} s_files_t;

static void
s_files_clear (s_files_t *f)
{
    for (int i = 0; i < f->n; i++) {
        zi_tensor_destroy (&f->t[i]);
        free (f->name[i]);
    }
    f->n = 0;
}

//  Load prefix_0.pb, prefix_1.pb, ... until one is missing.
static int
s_files_load (const char *set_dir, const char *prefix, s_files_t *f, char *msg,
              size_t len)
{
    f->n = 0;
    for (int k = 0; k < S_MAX_IO; k++) {
        char path[4096];
        snprintf (path, sizeof path, "%s/%s_%d.pb", set_dir, prefix, k);
        if (!s_is_file (path)) {
            break;
        }
        char err[1024];
        f->t[k] = zi_onnx_load_tensor (path, &f->name[k], err, sizeof err);
        if (!f->t[k]) {
            snprintf (msg, len, "%s", err);
            return -1;
        }
        f->n = k + 1;
    }
    return 0;
}

//  Run one data set through ex; returns a status with msg filled.
static s_status_t
s_run_set (const zi_graph_t *g, zi_exec_t *ex, const char *set_dir, char *msg, size_t len)
{
    s_files_t in = {0}, want = {0};
    zi_tensor_t *out[S_MAX_IO] = {0};
    s_status_t st = S_ERROR;
    int n_in = zi_exec_n_inputs (ex), n_out = zi_exec_n_outputs (ex);
    if (n_in > S_MAX_IO || n_out > S_MAX_IO) {
        snprintf (msg, len, "more than %d inputs or outputs", S_MAX_IO);
        return S_ERROR;
    }
    if (s_files_load (set_dir, "input", &in, msg, len)
        || s_files_load (set_dir, "output", &want, msg, len)) {
        //  A test file we cannot decode (a string tensor, a sequence) makes
        //  the test unsupported, not failed.
        st = strstr (msg, "unsupported") ? S_UNSUPPORTED : S_ERROR;
        goto done;
    }
    //  Inputs: by name when the file names an executor input, else by position.
    const zi_tensor_t *feed[S_MAX_IO] = {0};
    for (int k = 0; k < in.n; k++) {
        int slot = -1;
        if (in.name[k][0]) {
            for (int i = 0; i < n_in; i++) {
                if (strcmp (zi_exec_input (ex, i)->name, in.name[k]) == 0) {
                    slot = i;
                }
            }
            if (slot < 0) {
                //  IR 3 tests may feed an input that the model holds as an
                //  initializer: the model's constant wins.
                int v = zi_graph_find_value (g, in.name[k]);
                if (v >= 0 && g->values[v].init) {
                    continue;
                }
            }
        }
        if (slot < 0) {
            slot = k;
        }
        if (slot >= n_in || feed[slot]) {
            snprintf (msg, len, "input_%d.pb ('%s') matches no free model input (%d inputs)",
                      k, in.name[k], n_in);
            goto done;
        }
        //  numpy has no bfloat16: the backend tests store bfloat16 data as
        //  uint16 with the same bits. Relabel it when the model wants bf16.
        const zi_value_t *want_in = zi_exec_input (ex, slot);
        if (in.t[k]->dtype == ZI_DT_U16 && want_in->dtype == ZI_DT_BF16) {
            in.t[k]->dtype = ZI_DT_BF16;
        }
        feed[slot] = in.t[k];
    }
    for (int i = 0; i < n_in; i++) {
        if (!feed[i]) {
            snprintf (msg, len, "no input file for model input '%s'",
                      zi_exec_input (ex, i)->name);
            goto done;
        }
    }
    char err[S_MSG];
    int rc = zi_exec_run (ex, feed, out, err, sizeof err);
    if (rc) {
        snprintf (msg, len, "%s", err);
        st = rc == ZI_ERR_UNSUPPORTED ? S_UNSUPPORTED : S_ERROR;
        goto done;
    }
    //  Outputs: by name when the file names one, else by position.
    st = S_PASS;
    for (int k = 0; k < want.n && st == S_PASS; k++) {
        int slot = -1;
        if (want.name[k][0]) {
            for (int j = 0; j < n_out; j++) {
                if (strcmp (zi_exec_output (ex, j)->name, want.name[k]) == 0) {
                    slot = j;
                }
            }
        }
        if (slot < 0) {
            slot = k;
        }
        if (slot >= n_out || !out[slot]) {
            snprintf (msg, len, "output_%d.pb ('%s') has no model output", k,
                      want.name[k]);
            st = S_ERROR;
            break;
        }
        if (want.t[k]->dtype == ZI_DT_U16 && out[slot]->dtype == ZI_DT_BF16) {
            want.t[k]->dtype = ZI_DT_BF16;      //  as for the inputs above
        }
        if (!s_compare (zi_exec_output (ex, slot)->name, out[slot], want.t[k], msg, len)) {
            st = S_FAIL;
        }
    }
done:
    for (int j = 0; j < n_out; j++) {
        zi_tensor_destroy (&out[j]);
    }
    s_files_clear (&in);
    s_files_clear (&want);
    return st;
}

//  Load, plan and run every data set of the test in `dir`.
static s_status_t
s_run_test (const char *dir, char *msg, size_t len)
{
    char path[4096];
    snprintf (path, sizeof path, "%s/model.onnx", dir);
    char err[S_MSG - 64];
    zi_graph_t *g = NULL;
    int rc = zi_onnx_read (path, &g, err, sizeof err);
    if (rc) {
        //  Drop the path prefix: the test's name is printed beside it.
        const char *reason = err;
        if (strncmp (err, path, strlen (path)) == 0 && err[strlen (path)] == ':') {
            reason = err + strlen (path) + 2;
        }
        snprintf (msg, len, "%s", reason);
        return rc == ZI_ERR_UNSUPPORTED ? S_UNSUPPORTED : S_ERROR;
    }
    zi_exec_t *ex = zi_exec_new (g, 0, -1, NULL, err, sizeof err);
    if (!ex) {
        snprintf (msg, len, "executor: %s", err);
        zi_graph_destroy (&g);
        return S_ERROR;
    }
    char **sets = NULL;
    int n = s_list_dir (dir, s_keep_data_set, &sets);
    s_status_t st = S_PASS;
    if (n <= 0) {
        snprintf (msg, len, "no test_data_set_* folder");
        st = S_ERROR;
    }
    for (int i = 0; i < n && st == S_PASS; i++) {
        char set_dir[4096];
        snprintf (set_dir, sizeof set_dir, "%s/%s", dir, sets[i]);
        char why[S_MSG] = "";
        st = s_run_set (g, ex, set_dir, why, sizeof why);
        if (st != S_PASS) {
            snprintf (msg, len, "%s: %s", sets[i], why);
        }
    }
    s_free_names (sets, n > 0 ? n : 0);
    zi_exec_destroy (&ex);
    zi_graph_destroy (&g);
    return st;
}

//  As s_run_test in a child process with an alarm: a crash or a hang
//  becomes CRASH / TIMEOUT.
static s_status_t
s_run_test_forked (const char *dir, int timeout, char *msg, size_t len)
{
    int fds[2];
    if (pipe (fds) != 0) {
        snprintf (msg, len, "pipe: %s", strerror (errno));
        return S_ERROR;
    }
    fflush (stdout);
    fflush (stderr);
    pid_t pid = fork ();
    if (pid < 0) {
        close (fds[0]);
        close (fds[1]);
        snprintf (msg, len, "fork: %s", strerror (errno));
        return S_ERROR;
    }
    if (pid == 0) {
        close (fds[0]);
        signal (SIGALRM, SIG_DFL);
        alarm ((unsigned) timeout);
        char buf[S_MSG + 1];
        buf[0] = (char) s_run_test (dir, buf + 1, sizeof buf - 1);
        size_t n = 1 + strlen (buf + 1);
        const char *p = buf;
        while (n > 0) {
            ssize_t w = write (fds[1], p, n);
            if (w <= 0) {
                break;
            }
            p += w;
            n -= (size_t) w;
        }
        _exit (0);
    }
    close (fds[1]);
    char buf[S_MSG + 1];
    size_t got = 0;
    while (got < sizeof buf - 1) {
        ssize_t r = read (fds[0], buf + got, sizeof buf - 1 - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        got += (size_t) r;
    }
    close (fds[0]);
    buf[got] = 0;
    int wst = 0;
    while (waitpid (pid, &wst, 0) < 0 && errno == EINTR) {
    }
    if (WIFSIGNALED (wst)) {
        int sig = WTERMSIG (wst);
        if (sig == SIGALRM) {
            snprintf (msg, len, "no result within %d s", timeout);
            return S_TIMEOUT;
        }
        snprintf (msg, len, "killed by signal %d (%s)", sig, strsignal (sig));
        return S_CRASH;
    }
    if (got == 0 || (unsigned char) buf[0] >= S_NSTATUS) {
        snprintf (msg, len, "child exited with status %d and no result",
                  WIFEXITED (wst) ? WEXITSTATUS (wst) : -1);
        return S_CRASH;
    }
    snprintf (msg, len, "%s", buf + 1);
    return (s_status_t) buf[0];
}

//  -------------------------------------------------------------------------
//  Exceptions file: "<test name> <reason>" per line, '#' comments

typedef struct {
    char *name;
    char *reason;
    bool used;
} s_exception_t;

typedef struct {
    int n;
    s_exception_t *items;
} s_exceptions_t;

static int
s_exceptions_load (const char *path, s_exceptions_t *ex)
{
    FILE *f = fopen (path, "r");
    if (!f) {
        fprintf (stderr, "zinfer conformance: %s: %s\n", path, strerror (errno));
        return -1;
    }
    char line[1024];
    int cap = 0;
    while (fgets (line, sizeof line, f)) {
        char *p = line + strspn (line, " \t");
        p[strcspn (p, "\r\n")] = 0;
        if (!*p || *p == '#') {
            continue;
        }
        char *end = p + strcspn (p, " \t");
        char *reason = *end ? end + 1 : end;
        *end = 0;
        reason += strspn (reason, " \t");
        if (ex->n == cap) {
            cap = cap ? cap * 2 : 32;
            s_exception_t *items =
                (s_exception_t *) realloc (ex->items, (size_t) cap * sizeof *items);
            if (!items) {
                fclose (f);
                return -1;
            }
            ex->items = items;
        }
        s_exception_t *e = &ex->items[ex->n];
        e->name = strdup (p);
        e->reason = strdup (*reason ? reason : "(no reason given)");
        e->used = false;
        if (!e->name || !e->reason) {
            free (e->name);
            free (e->reason);
            fclose (f);
            return -1;
        }
        ex->n++;
    }
    fclose (f);
    return 0;
}

//  An entry matches "test_x" or "suite/test_x" (suite = the folder's parent).
static s_exception_t *
s_exceptions_find (s_exceptions_t *ex, const char *suite, const char *test)
{
    for (int i = 0; i < ex->n; i++) {
        const char *name = ex->items[i].name;
        size_t sl = strlen (suite);
        if (strcmp (name, test) == 0
            || (strncmp (name, suite, sl) == 0 && name[sl] == '/'
                && strcmp (name + sl + 1, test) == 0)) {
            return &ex->items[i];
        }
    }
    return NULL;
}

static void
s_exceptions_clear (s_exceptions_t *ex)
{
    for (int i = 0; i < ex->n; i++) {
        free (ex->items[i].name);
        free (ex->items[i].reason);
    }
    free (ex->items);
    ex->n = 0;
    ex->items = NULL;
}

//  -------------------------------------------------------------------------
//  Tally of unsupported reasons

typedef struct {
    char key[96];
    int count;
} s_reason_t;

typedef struct {
    int n;
    int cap;
    s_reason_t *items;
} s_tally_t;

static void
s_tally_add (s_tally_t *t, const char *key)
{
    for (int i = 0; i < t->n; i++) {
        if (strcmp (t->items[i].key, key) == 0) {
            t->items[i].count++;
            return;
        }
    }
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 64;
        s_reason_t *items = (s_reason_t *) realloc (t->items, (size_t) cap * sizeof *items);
        if (!items) {
            return;
        }
        t->items = items;
        t->cap = cap;
    }
    snprintf (t->items[t->n].key, sizeof t->items[t->n].key, "%s", key);
    t->items[t->n].count = 1;
    t->n++;
}

//  Copy a name (letters, digits, '_', '.') starting at p into buf.
static void
s_word (const char *p, char *buf, size_t len)
{
    size_t n = 0;
    while (*p && n + 1 < len
           && (((*p | 32) >= 'a' && (*p | 32) <= 'z') || (*p >= '0' && *p <= '9')
               || *p == '_' || *p == '.')) {
        buf[n++] = *p++;
    }
    buf[n] = 0;
}

//  Turn an UNSUPPORTED message into reason keys, each counted once per
//  test: "op LSTM", "dtype string", "type sequence", or "Resize*" for an
//  op we have whose attributes / dtypes in this test we do not support.
static void
s_tally_message (s_tally_t *t, const char *msg)
{
    char keys[16][96];
    int nkeys = 0;
    const char *p = msg;
    while (p && *p && nkeys < 16) {
        const char *end = strstr (p, "; ");
        size_t seg = end ? (size_t) (end - p) : strlen (p);
        char part[512];
        snprintf (part, sizeof part, "%.*s", (int) (seg < 511 ? seg : 511), p);
        char word[80], key[96] = "";
        const char *q;
        if ((q = strstr (part, "unsupported op "))) {
            s_word (q + 15, word, sizeof word);
            snprintf (key, sizeof key, "op %s", word);
        }
        else if ((q = strstr (part, "unsupported dtype "))) {
            s_word (q + 18, word, sizeof word);
            snprintf (key, sizeof key, "dtype %s", word);
        }
        else if ((q = strstr (part, "unsupported type "))) {
            s_word (q + 17, word, sizeof word);
            snprintf (key, sizeof key, "type %s", word);
        }
        else if ((q = strstr (part, "node ")) && (q = strstr (q, " (")) != NULL) {
            s_word (q + 2, word, sizeof word);
            snprintf (key, sizeof key, "%s*", word);
        }
        if (key[0]) {
            bool dup = false;
            for (int i = 0; i < nkeys; i++) {
                dup = dup || strcmp (keys[i], key) == 0;
            }
            if (!dup) {
                snprintf (keys[nkeys++], sizeof keys[0], "%s", key);
            }
        }
        p = end ? end + 2 : NULL;
    }
    if (nkeys == 0) {
        s_tally_add (t, "other");
    }
    for (int i = 0; i < nkeys; i++) {
        s_tally_add (t, keys[i]);
    }
}

static int
s_reason_cmp (const void *a, const void *b)
{
    const s_reason_t *x = (const s_reason_t *) a, *y = (const s_reason_t *) b;
    if (x->count != y->count) {
        return y->count - x->count;
    }
    return strcmp (x->key, y->key);
}

//  -------------------------------------------------------------------------
//  The command

typedef struct {
    int total, passed, unsupported, failed, excepted;
} s_counts_t;

static void
s_counts_print (const char *label, const s_counts_t *c)
{
    printf ("%s: %d passed / %d supported / %d total (%d unsupported, %d failed, "
            "%d excepted)\n",
            label, c->passed, c->total - c->unsupported, c->total, c->unsupported,
            c->failed, c->excepted);
}

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: zinfer conformance [--verbose] [--fork] [--timeout S]\n"
             "                          [--exceptions FILE] [--top N] DIR...\n\n"
             "Run ONNX backend tests. Each DIR is a test folder (model.onnx +\n"
             "test_data_set_*/) or a folder of test folders, e.g.\n"
             "/usr/share/libonnx-testdata/data/node.\n\n"
             "  --verbose          print a line for passing tests too\n"
             "  --fork             run each test in a child process; report a crash\n"
             "                     or a hang as CRASH / TIMEOUT\n"
             "  --timeout S        seconds per test with --fork (default 10)\n"
             "  --exceptions FILE  lines '<test name> <reason>': known failures that\n"
             "                     are reported as EXCEPTED and do not fail the run\n"
             "  --top N            unsupported reasons to list (default 20)\n\n"
             "Exit status: 0 when no supported test failed, 1 otherwise, 2 bad usage.\n");
}

int
zi_cmd_conformance (int argc, char **argv)
{
    bool verbose = false, use_fork = false;
    int timeout = 10, top = 20;
    const char *exc_path = NULL;
    int first_dir = argc;
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv[i], "--verbose") == 0 || strcmp (argv[i], "-v") == 0) {
            verbose = true;
        }
        else if (strcmp (argv[i], "--fork") == 0) {
            use_fork = true;
        }
        else if (strcmp (argv[i], "--timeout") == 0 && i + 1 < argc) {
            timeout = atoi (argv[++i]);
            if (timeout <= 0) {
                fprintf (stderr, "zinfer conformance: bad --timeout '%s'\n", argv[i]);
                return 2;
            }
        }
        else if (strcmp (argv[i], "--top") == 0 && i + 1 < argc) {
            top = atoi (argv[++i]);
        }
        else if (strcmp (argv[i], "--exceptions") == 0 && i + 1 < argc) {
            exc_path = argv[++i];
        }
        else if (strcmp (argv[i], "--help") == 0 || strcmp (argv[i], "-h") == 0) {
            s_usage (stdout);
            return 0;
        }
        else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf (stderr, "zinfer conformance: unknown option '%s'\n", argv[i]);
            s_usage (stderr);
            return 2;
        }
        else {
            first_dir = i;
            break;
        }
    }
    if (first_dir >= argc) {
        s_usage (stderr);
        return 2;
    }
    for (int i = first_dir; i < argc; i++) {
        if (!s_is_dir (argv[i])) {
            fprintf (stderr, "zinfer conformance: %s: not a directory\n", argv[i]);
            return 2;
        }
    }
    s_exceptions_t exc = {0};
    if (exc_path && s_exceptions_load (exc_path, &exc) != 0) {
        s_exceptions_clear (&exc);
        return 2;
    }
    //  Result lines go to stdout as they come; keep them in order when
    //  piped (ctest) by flushing per line.
    setvbuf (stdout, NULL, _IOLBF, 0);
    s_counts_t all = {0};
    s_tally_t tally = {0};
    int n_status[S_NSTATUS] = {0};
    for (int d = first_dir; d < argc; d++) {
        const char *arg = argv[d];
        char path[4096];
        snprintf (path, sizeof path, "%s/model.onnx", arg);
        //  One test folder, or a folder of them (one level).
        char **tests = NULL;
        int n = 0;
        char *parent = NULL;
        char suite[256];
        if (s_is_file (path)) {
            tests = (char **) calloc (1, sizeof (char *));
            if (tests) {
                tests[0] = strdup (arg);
                n = tests[0] ? 1 : 0;
            }
            //  the suite of a single test is its parent folder's name
            size_t len = strlen (arg);
            while (len > 1 && arg[len - 1] == '/') {
                len--;
            }
            parent = strndup (arg, len);
            char *slash = parent ? strrchr (parent, '/') : NULL;
            if (slash) {
                *slash = 0;
                s_name_of (parent, suite, sizeof suite);
            }
            else {
                snprintf (suite, sizeof suite, ".");
            }
            free (parent);
            parent = NULL;
        }
        else {
            n = s_list_dir (arg, s_keep_test_dir, &tests);
            s_name_of (arg, suite, sizeof suite);
            parent = strdup (arg);
        }
        if (n <= 0) {
            printf ("%s: no tests\n", arg);
            s_free_names (tests, n > 0 ? n : 0);
            free (parent);
            continue;
        }
        s_counts_t cnt = {0};
        for (int t = 0; t < n; t++) {
            char dir[4096];
            if (parent) {
                snprintf (dir, sizeof dir, "%s/%s", parent, tests[t]);
            }
            else {
                snprintf (dir, sizeof dir, "%s", tests[t]);
            }
            char name[256];
            s_name_of (dir, name, sizeof name);
            char msg[S_MSG] = "";
            s_status_t st = use_fork ? s_run_test_forked (dir, timeout, msg, sizeof msg)
                                     : s_run_test (dir, msg, sizeof msg);
            n_status[st]++;
            cnt.total++;
            s_exception_t *e = s_exceptions_find (&exc, suite, name);
            if (e) {
                e->used = true;
            }
            if (st == S_PASS) {
                cnt.passed++;
                if (e) {
                    printf ("%-11s %s/%s: passes but is in the exceptions file (%s)\n",
                            "NOTE", suite, name, e->reason);
                }
                else if (verbose) {
                    printf ("%-11s %s/%s\n", "PASS", suite, name);
                }
            }
            else if (st == S_UNSUPPORTED) {
                cnt.unsupported++;
                s_tally_message (&tally, msg);
                printf ("%-11s %s/%s: %s\n", "UNSUPPORTED", suite, name, msg);
            }
            else if (e) {
                cnt.excepted++;
                printf ("%-11s %s/%s: %s: %s (excepted: %s)\n", "EXCEPTED", suite, name,
                        s_status_names[st], msg, e->reason);
            }
            else {
                cnt.failed++;
                printf ("%-11s %s/%s: %s\n", s_status_names[st], suite, name, msg);
            }
        }
        s_counts_print (suite, &cnt);
        all.total += cnt.total;
        all.passed += cnt.passed;
        all.unsupported += cnt.unsupported;
        all.failed += cnt.failed;
        all.excepted += cnt.excepted;
        s_free_names (tests, n);
        free (parent);
    }
    if (tally.n > 0 && top > 0) {
        qsort (tally.items, (size_t) tally.n, sizeof tally.items[0], s_reason_cmp);
        printf ("top unsupported (tests per reason; Op* = op present, but not this "
                "use):\n");
        for (int i = 0; i < tally.n && i < top; i++) {
            printf ("  %5d  %s\n", tally.items[i].count, tally.items[i].key);
        }
    }
    if (n_status[S_ERROR] || n_status[S_CRASH] || n_status[S_TIMEOUT]) {
        printf ("of the failed and excepted: %d FAIL, %d ERROR, %d CRASH, %d TIMEOUT\n",
                n_status[S_FAIL], n_status[S_ERROR], n_status[S_CRASH],
                n_status[S_TIMEOUT]);
    }
    s_counts_print ("conformance", &all);
    free (tally.items);
    s_exceptions_clear (&exc);
    return all.failed > 0 ? 1 : 0;
}
