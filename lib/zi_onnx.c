/*  zi_onnx.c - ONNX model loader; see zi_onnx.h.

    File format: a model.onnx file is one protobuf (proto2) ModelProto, as
    defined by the system's onnx.proto; protoc-c generates the decoder, which
    checks every wire length against the buffer. These are the fields we read
    (field number in brackets); every other field is ignored.

    ModelProto
      ir_version          [1]  int64   < 3: no opset_import needed (opset 1)
      opset_import        [8]  repeated OperatorSetIdProto
        domain            [1]  string  "" or "ai.onnx": the default domain
        version           [2]  int64   -> graph->opset and every node's "__opset"
      graph               [7]  GraphProto (required)
    GraphProto
      node                [1]  repeated NodeProto (any order: we sort them)
      name                [2]  string
      initializer         [5]  repeated TensorProto (name required)
      sparse_initializer  [15] -> unsupported
      input               [11] repeated ValueInfoProto; an input that also has
                                an initializer is a constant (IR >= 4)
      output              [12] repeated ValueInfoProto
      value_info          [13] repeated ValueInfoProto: declared types of
                                intermediate values (best effort)
    NodeProto
      input [1], output [2]     repeated string; "" = omitted optional
      name [3], op_type [4], domain [7] (must be one the model imports)
      attribute           [5]  repeated AttributeProto
    AttributeProto
      name [1], type [20] (absent in old files: inferred from the field set)
      f [2] i [3] s [4] t [5] floats [7] ints [8] strings [9]
      g [6] graphs [11] tensors [10] sparse_tensor(s) [22,23] tp [14,15]:
                                unsupported
    ValueInfoProto
      name [1], type [2]: TypeProto.tensor_type [1] { elem_type [1],
        shape [2] { dim [1] { dim_value [1] | dim_param [2] } } }
        dim_param or no value -> -1; no shape -> rank -1; other kinds
        (sequence, map, optional, sparse) -> unsupported
    TensorProto
      dims [1]        int64, each >= 0, rank <= ZI_MAX_RANK
      data_type [2]   = zi_dtype_t; STRING, COMPLEX*, FLOAT8*, INT4 -> unsupported
      segment [3]     -> unsupported
      name [8]
      and exactly one place holding the elements (none if there are 0):
      raw_data [9]    little-endian bytes, length exactly count * size
      float_data [4]  FLOAT
      int32_data [5]  INT32, INT16, INT8, UINT8, UINT16, BOOL, FLOAT16 and
                      BFLOAT16 (as their bits): one element per entry
      int64_data [7]  INT64
      double_data [10] DOUBLE
      uint64_data [11] UINT32, UINT64
      data_location [14] = EXTERNAL, with external_data [13] key/value pairs:
        location      path relative to the model's directory (no "..", not
                      absolute)
        offset        decimal, default 0
        length        decimal, default: to the end of the file; must be
                      count * size
        (checksum, basepath: ignored)

    Constant nodes (value, value_float(s), value_int(s)) are folded into
    initializers; sparse_value and value_string(s) are unsupported.
    After sorting, every other node whose inputs are all constants
    (Identity of a weight, Reshape / Cast of one, ...) is folded into
    initializers too (zi_graph_fold_constants), so the node indices plans
    use count only nodes that compute on the graph's inputs, and no
    weight-derived tensor can cross a segment cut.
*/
#include "zi_onnx.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "onnx.pb-c.h"
#include "zi_ops.h"

//  ONNX stores raw_data little-endian and we hand the bytes to kernels as
//  they are (or map them straight from the weight file).
_Static_assert (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
                "zinfer assumes a little-endian host");

//  -------------------------------------------------------------------------
//  Memory-mapped external data files, kept alive by the graph

typedef struct {
    char *path;                 //  as opened (base_dir/location)
    void *addr;                 //  NULL for an empty file
    size_t size;
} s_map_t;

typedef struct {
    int n;
    int cap;
    s_map_t *maps;
} s_maplist_t;

static void
s_maplist_free (void *arg)
{
    s_maplist_t *self = (s_maplist_t *) arg;
    if (!self) {
        return;
    }
    for (int i = 0; i < self->n; i++) {
        if (self->maps[i].addr) {
            munmap (self->maps[i].addr, self->maps[i].size);
        }
        free (self->maps[i].path);
    }
    free (self->maps);
    free (self);
}

//  Map a whole file read-only. Refuses anything but a regular file (a FIFO
//  or device would block or never end) and files above `cap` bytes.
static int
s_map_file (const char *path, size_t cap, void **addr_p, size_t *size_p,
            char *err, size_t errlen)
{
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return zi_fail (err, errlen, errno == ENOENT ? ZI_ERR_NOTFOUND : ZI_ERR_IO,
                        "%s: %s", path, strerror (errno));
    }
    struct stat st;
    if (fstat (fd, &st) != 0) {
        int rc = zi_fail (err, errlen, ZI_ERR_IO, "%s: %s", path, strerror (errno));
        close (fd);
        return rc;
    }
    if (!S_ISREG (st.st_mode)) {
        close (fd);
        return zi_fail (err, errlen, ZI_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size < 0 || (uint64_t) st.st_size > (uint64_t) cap) {
        close (fd);
        return zi_fail (err, errlen, ZI_ERR_LIMIT, "%s: %lld bytes, larger than %zu",
                        path, (long long) st.st_size, cap);
    }
    size_t size = (size_t) st.st_size;
    void *addr = NULL;
    //  mmap of 0 bytes fails; an empty file is a valid (empty) input.
    if (size > 0) {
        addr = mmap (NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (addr == MAP_FAILED) {
            int rc = zi_fail (err, errlen, ZI_ERR_IO, "%s: mmap: %s", path,
                              strerror (errno));
            close (fd);
            return rc;
        }
    }
    close (fd);
    *addr_p = addr;
    *size_p = size;
    return ZI_OK;
}

//  -------------------------------------------------------------------------
//  Loader state

//  One problem found while loading; problems with the same key (an
//  unsupported op type) are merged so a model with 200 LSTM nodes yields one
//  entry and the message still shows every other problem.
typedef struct {
    char *text;
    char *key;                  //  NULL: never merged
    int more;                   //  merged occurrences after the first
} s_problem_t;

typedef struct {
    const char *label;          //  file name for messages
    const char *base_dir;       //  external data root; NULL refuses it
    bool copy_external;         //  copy external data (no mapping kept)
    s_maplist_t *maps;          //  created on first external tensor
    s_problem_t *problems;
    int n_problems;
    int cap_problems;
    int n_affected;             //  problems counted with merges
    int worst;                  //  ZI_ERR_UNSUPPORTED unless a check said worse
    bool nomem;
    //  non-default domains the model imports
    const char **domains;
    int n_domains;
} s_loader_t;

static void
s_loader_clear (s_loader_t *ld)
{
    for (int i = 0; i < ld->n_problems; i++) {
        free (ld->problems[i].text);
        free (ld->problems[i].key);
    }
    free (ld->problems);
    free (ld->domains);
    s_maplist_free (ld->maps);
    memset (ld, 0, sizeof *ld);
}

//  Record a problem (an unsupported op, dtype, attribute, ...) and go on
//  loading, so the final message lists all of them. `key` merges repeats.
static void
s_problem (s_loader_t *ld, int code, const char *key, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));

static void
s_problem (s_loader_t *ld, int code, const char *key, const char *fmt, ...)
{
    ld->n_affected++;
    if (code != ZI_ERR_UNSUPPORTED && ld->worst == ZI_ERR_UNSUPPORTED) {
        ld->worst = code;
    }
    if (key) {
        for (int i = 0; i < ld->n_problems; i++) {
            if (ld->problems[i].key && strcmp (ld->problems[i].key, key) == 0) {
                ld->problems[i].more++;
                return;
            }
        }
    }
    if (ld->n_problems == ld->cap_problems) {
        int cap = ld->cap_problems ? ld->cap_problems * 2 : 16;
        s_problem_t *p = (s_problem_t *) realloc (ld->problems,
                                                  (size_t) cap * sizeof *p);
        if (!p) {
            ld->nomem = true;
            return;
        }
        ld->problems = p;
        ld->cap_problems = cap;
    }
    char buf[512];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (buf, sizeof buf, fmt, ap);
    va_end (ap);
    s_problem_t *p = &ld->problems[ld->n_problems];
    p->text = strdup (buf);
    p->key = key ? strdup (key) : NULL;
    p->more = 0;
    if (!p->text || (key && !p->key)) {
        free (p->text);
        free (p->key);
        ld->nomem = true;
        return;
    }
    ld->n_problems++;
}

//  Write "<label>: N unsupported: p1; p2 (and 3 more nodes); ..." into err,
//  truncated with "..." when it does not fit.
static int
s_problems_report (s_loader_t *ld, char *err, size_t errlen)
{
    if (ld->nomem) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", ld->label);
    }
    if (!err || errlen == 0) {
        return ld->worst;
    }
    size_t pos = 0;
    int n = snprintf (err, errlen, "%s: %d %s: ", ld->label, ld->n_affected,
                      ld->worst == ZI_ERR_UNSUPPORTED ? "unsupported" : "problems");
    pos = n > 0 ? (size_t) n : 0;
    for (int i = 0; i < ld->n_problems && pos < errlen; i++) {
        if (ld->problems[i].more > 0) {
            n = snprintf (err + pos, errlen - pos, "%s%s (and %d more node%s)",
                          i ? "; " : "", ld->problems[i].text, ld->problems[i].more,
                          ld->problems[i].more > 1 ? "s" : "");
        }
        else {
            n = snprintf (err + pos, errlen - pos, "%s%s", i ? "; " : "",
                          ld->problems[i].text);
        }
        pos += n > 0 ? (size_t) n : 0;
    }
    if (pos >= errlen && errlen > 4) {
        memcpy (err + errlen - 4, "...", 4);
    }
    return ld->worst;
}

//  -------------------------------------------------------------------------
//  dtypes

static const char *
s_onnx_dtype_name (int data_type)
{
    switch (data_type) {
        case 0: return "undefined";
        case 8: return "string";
        case 14: return "complex64";
        case 15: return "complex128";
        case 17: return "float8e4m3fn";
        case 18: return "float8e4m3fnuz";
        case 19: return "float8e5m2";
        case 20: return "float8e5m2fnuz";
        case 21: return "uint4";
        case 22: return "int4";
        case 23: return "float4e2m1";
        default: break;
    }
    if (zi_dtype_valid (data_type)) {
        return zi_dtype_name ((zi_dtype_t) data_type);
    }
    return NULL;
}

//  Format "unsupported dtype NAME" (or the number when unknown).
static void
s_dtype_problem (s_loader_t *ld, const char *what, int data_type)
{
    const char *name = s_onnx_dtype_name (data_type);
    if (name) {
        s_problem (ld, ZI_ERR_UNSUPPORTED, NULL, "%s: unsupported dtype %s", what, name);
    }
    else {
        s_problem (ld, ZI_ERR_UNSUPPORTED, NULL, "%s: unsupported dtype %d", what,
                   data_type);
    }
}

//  -------------------------------------------------------------------------
//  TensorProto -> zi_tensor_t

//  Parse a non-negative decimal integer that must fill the whole string.
static bool
s_parse_u64 (const char *s, uint64_t *out)
{
    if (!s || !*s) {
        return false;
    }
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
        unsigned d = (unsigned) (*p - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

//  A location may only name a file at or below the model's directory.
static bool
s_location_safe (const char *loc)
{
    if (!loc || !*loc || loc[0] == '/' || loc[0] == '\\') {
        return false;
    }
    //  Check every component, splitting on '/' and (to be safe with files
    //  written on Windows) '\\'.
    const char *p = loc;
    while (*p) {
        size_t len = strcspn (p, "/\\");
        if (len == 2 && p[0] == '.' && p[1] == '.') {
            return false;
        }
        p += len;
        if (*p) {
            p++;
        }
    }
    return true;
}

static int
s_maplist_get (s_loader_t *ld, const char *path, s_map_t **map_p, char *err,
               size_t errlen)
{
    if (!ld->maps) {
        ld->maps = (s_maplist_t *) calloc (1, sizeof *ld->maps);
        if (!ld->maps) {
            return ZI_ERR_NOMEM;
        }
    }
    s_maplist_t *ml = ld->maps;
    for (int i = 0; i < ml->n; i++) {
        if (strcmp (ml->maps[i].path, path) == 0) {
            *map_p = &ml->maps[i];
            return ZI_OK;
        }
    }
    if (ml->n == ml->cap) {
        int cap = ml->cap ? ml->cap * 2 : 4;
        s_map_t *maps = (s_map_t *) realloc (ml->maps, (size_t) cap * sizeof *maps);
        if (!maps) {
            return ZI_ERR_NOMEM;
        }
        ml->maps = maps;
        ml->cap = cap;
    }
    s_map_t *m = &ml->maps[ml->n];
    memset (m, 0, sizeof *m);
    //  Weight files may exceed the 2 GiB protobuf limit: cap at what a
    //  size_t offset can hold, the file system limits the rest.
    int rc = s_map_file (path, (size_t) INT64_MAX < SIZE_MAX ? (size_t) INT64_MAX
                                                              : SIZE_MAX,
                         &m->addr, &m->size, err, errlen);
    if (rc) {
        return rc;
    }
    m->path = strdup (path);
    if (!m->path) {
        if (m->addr) {
            munmap (m->addr, m->size);
        }
        return ZI_ERR_NOMEM;
    }
    ml->n++;
    *map_p = m;
    return ZI_OK;
}

//  An empty tensor (a 0 dim) has 0 bytes whatever its other dims, but its
//  byte strides still multiply the non-zero dims: refuse shapes such as
//  (0, 2^40, 2^40) whose strides would overflow int64.
static bool
s_strides_fit (zi_dtype_t dtype, int rank, const int64_t *dims)
{
    int64_t stride = (int64_t) zi_dtype_size (dtype);
    for (int i = rank - 1; i >= 0; i--) {
        if (dims[i] > 1 && stride > INT64_MAX / dims[i]) {
            return false;
        }
        stride *= dims[i] > 1 ? dims[i] : 1;
    }
    return true;
}

//  Bool tensors hold 0 or 1 per byte (zi_tensor.h): normalise owned data.
static void
s_bool_normalize (zi_tensor_t *t)
{
    uint8_t *p = (uint8_t *) t->data;
    for (size_t i = 0; i < t->nbytes; i++) {
        p[i] = p[i] != 0;
    }
}

static int
s_tensor_external (s_loader_t *ld, const Onnx__TensorProto *tp, const char *what,
                   zi_dtype_t dtype, int rank, const int64_t *dims, size_t nbytes,
                   zi_tensor_t **out, char *err, size_t errlen)
{
    const char *location = NULL;
    uint64_t offset = 0, length = 0;
    bool has_length = false;
    for (size_t i = 0; i < tp->n_external_data; i++) {
        const Onnx__StringStringEntryProto *e = tp->external_data[i];
        if (!e->key) {
            continue;
        }
        if (strcmp (e->key, "location") == 0) {
            location = e->value;
        }
        else if (strcmp (e->key, "offset") == 0) {
            if (!s_parse_u64 (e->value, &offset)) {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "%s: %s: external data offset '%s' is not a "
                                "non-negative integer",
                                ld->label, what, e->value ? e->value : "");
            }
        }
        else if (strcmp (e->key, "length") == 0) {
            if (!s_parse_u64 (e->value, &length)) {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "%s: %s: external data length '%s' is not a "
                                "non-negative integer",
                                ld->label, what, e->value ? e->value : "");
            }
            has_length = true;
        }
    }
    if (!location || !*location) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: %s: external data without a location", ld->label, what);
    }
    if (!s_location_safe (location)) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: %s: external data location '%s' is absolute or "
                        "leaves the model directory",
                        ld->label, what, location);
    }
    if (!ld->base_dir) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                        "%s: external data '%s' needs a model directory (the "
                        "model was loaded from memory)",
                        what, location);
    }
    size_t plen = strlen (ld->base_dir) + 1 + strlen (location) + 1;
    char *path = (char *) malloc (plen);
    if (!path) {
        return ZI_ERR_NOMEM;
    }
    snprintf (path, plen, "%s/%s", ld->base_dir, location);
    s_map_t *map = NULL;
    char why[256];
    int rc = s_maplist_get (ld, path, &map, why, sizeof why);
    free (path);
    if (rc) {
        return zi_fail (err, errlen, rc, "%s: %s: external data: %s", ld->label,
                        what, rc == ZI_ERR_NOMEM ? "out of memory" : why);
    }
    if (offset > map->size) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: %s: external data offset %llu is past the end of "
                        "'%s' (%zu bytes)",
                        ld->label, what, (unsigned long long) offset, location,
                        map->size);
    }
    if (!has_length) {
        length = map->size - offset;
    }
    if (length > map->size - offset) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: %s: external data offset %llu + length %llu is past "
                        "the end of '%s' (%zu bytes)",
                        ld->label, what, (unsigned long long) offset,
                        (unsigned long long) length, location, map->size);
    }
    if (length != nbytes) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: %s: external data has %llu bytes, dtype %s shape "
                        "needs %zu",
                        ld->label, what, (unsigned long long) length,
                        zi_dtype_name (dtype), nbytes);
    }
    const uint8_t *src = (const uint8_t *) map->addr + offset;
    size_t esize = zi_dtype_size (dtype);
    //  A view needs the elements aligned for the kernels' typed loads (ONNX
    //  does not align by default), bools must be checked to be 0/1, and
    //  stand-alone tensors cannot keep the mapping: copy in those cases.
    bool copy = ld->copy_external || nbytes == 0 || dtype == ZI_DT_BOOL
                || ((uintptr_t) src % esize) != 0;
    zi_tensor_t *t;
    if (copy) {
        t = zi_tensor_new (dtype, rank, dims);
        if (!t) {
            return ZI_ERR_NOMEM;
        }
        if (nbytes) {
            memcpy (t->data, src, nbytes);
        }
        if (dtype == ZI_DT_BOOL) {
            s_bool_normalize (t);
        }
    }
    else {
        t = zi_tensor_new_view (dtype, rank, dims, (void *) src, nbytes);
        if (!t) {
            return ZI_ERR_NOMEM;
        }
    }
    *out = t;
    return ZI_OK;
}

//  Convert a TensorProto. May take tp's raw_data buffer (it is set to empty)
//  to avoid copying large weights twice. `what` names the tensor in
//  messages ("initializer 'w'"). Unsupported dtypes and layouts return
//  ZI_ERR_UNSUPPORTED with a message that does not start with the label (the
//  caller collects it as a problem); other errors carry the full message.
static int
s_tensor_from_proto (s_loader_t *ld, Onnx__TensorProto *tp, const char *what,
                     zi_tensor_t **out, char *err, size_t errlen)
{
    *out = NULL;
    int data_type = tp->has_data_type ? tp->data_type : 0;
    if (data_type == 0) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: %s: data_type is undefined",
                        ld->label, what);
    }
    if (!zi_dtype_valid (data_type)) {
        const char *name = s_onnx_dtype_name (data_type);
        if (name) {
            return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "%s: unsupported dtype %s",
                            what, name);
        }
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "%s: unsupported dtype %d",
                        what, data_type);
    }
    zi_dtype_t dtype = (zi_dtype_t) data_type;
    if (tp->n_dims > ZI_MAX_RANK) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "%s: rank %zu > %d", what,
                        tp->n_dims, ZI_MAX_RANK);
    }
    int rank = (int) tp->n_dims;
    int64_t dims[ZI_MAX_RANK];
    for (int i = 0; i < rank; i++) {
        if (tp->dims[i] < 0) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "%s: %s: dimension %d is negative (%lld)", ld->label, what,
                            i, (long long) tp->dims[i]);
        }
        dims[i] = tp->dims[i];
    }
    size_t nbytes;
    int64_t count;
    if (zi_shape_nbytes (dtype, rank, dims, &nbytes)
        || zi_shape_count (rank, dims, &count) || !s_strides_fit (dtype, rank, dims)) {
        return zi_fail (err, errlen, ZI_ERR_OVERFLOW,
                        "%s: %s: shape is too large", ld->label, what);
    }
    if (tp->segment) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                        "%s: segmented tensors are unsupported", what);
    }
    size_t n_typed = tp->n_float_data + tp->n_int32_data + tp->n_string_data
                     + tp->n_int64_data + tp->n_double_data + tp->n_uint64_data;
    bool external = tp->has_data_location
                    && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    if (tp->has_data_location && !external
        && tp->data_location != ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: %s: data_location %d is unknown",
                        ld->label, what, (int) tp->data_location);
    }
    if (external) {
        if (tp->has_raw_data || n_typed) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "%s: %s: has both external and inline data", ld->label,
                            what);
        }
        return s_tensor_external (ld, tp, what, dtype, rank, dims, nbytes, out, err,
                                  errlen);
    }
    if (tp->has_raw_data && n_typed) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: %s: has both raw_data and typed data fields", ld->label,
                        what);
    }
    char shape[96];
    if (tp->has_raw_data) {
        if (tp->raw_data.len != nbytes) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "%s: %s: raw_data has %zu bytes, dtype %s shape %s "
                            "needs %zu",
                            ld->label, what, tp->raw_data.len, zi_dtype_name (dtype),
                            zi_shape_str (rank, dims, shape, sizeof shape), nbytes);
        }
        zi_tensor_t *t = (zi_tensor_t *) calloc (1, sizeof *t);
        if (!t) {
            return ZI_ERR_NOMEM;
        }
        zi_tensor_set_shape (t, dtype, rank, dims);
        if (nbytes > 0) {
            //  Take protobuf-c's copy instead of copying it again: our
            //  decoding allocator (s_budget_alloc) is plain malloc, so the
            //  buffer is malloc-aligned and ours to free().
            t->data = tp->raw_data.data;
            tp->raw_data.data = NULL;
            tp->raw_data.len = 0;
            tp->has_raw_data = 0;
        }
        else {
            //  data != NULL means "has a value" for the kernels
            t->data = calloc (1, 1);
            if (!t->data) {
                free (t);
                return ZI_ERR_NOMEM;
            }
        }
        t->owns_data = true;
        if (dtype == ZI_DT_BOOL) {
            s_bool_normalize (t);
        }
        *out = t;
        return ZI_OK;
    }
    //  Typed fields: find the one this dtype uses, refuse data elsewhere.
    size_t have = 0;
    const char *field = NULL;
    switch (dtype) {
        case ZI_DT_F32: have = tp->n_float_data; field = "float_data"; break;
        case ZI_DT_I32: case ZI_DT_I16: case ZI_DT_I8: case ZI_DT_U8:
        case ZI_DT_U16: case ZI_DT_BOOL: case ZI_DT_F16: case ZI_DT_BF16:
            have = tp->n_int32_data; field = "int32_data"; break;
        case ZI_DT_I64: have = tp->n_int64_data; field = "int64_data"; break;
        case ZI_DT_F64: have = tp->n_double_data; field = "double_data"; break;
        case ZI_DT_U32: case ZI_DT_U64:
            have = tp->n_uint64_data; field = "uint64_data"; break;
        default: break;
    }
    if (!field) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED, "%s: unsupported dtype %s",
                        what, zi_dtype_name (dtype));
    }
    if (n_typed != have) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: %s: dtype %s keeps its data in %s, but other typed "
                        "fields are set",
                        ld->label, what, zi_dtype_name (dtype), field);
    }
    if ((uint64_t) have != (uint64_t) count) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: %s: %s has %zu elements, dtype %s shape %s needs %lld",
                        ld->label, what, field, have, zi_dtype_name (dtype),
                        zi_shape_str (rank, dims, shape, sizeof shape),
                        (long long) count);
    }
    //  Allocation is bounded: count equals entries already in memory.
    zi_tensor_t *t = zi_tensor_new (dtype, rank, dims);
    if (!t) {
        return ZI_ERR_NOMEM;
    }
    void *d = t->data;
    for (size_t i = 0; i < have; i++) {
        switch (dtype) {
            case ZI_DT_F32: ((float *) d)[i] = tp->float_data[i]; break;
            case ZI_DT_I32: ((int32_t *) d)[i] = tp->int32_data[i]; break;
            //  narrower types: ONNX stores one per int32; keep the low bits
            case ZI_DT_I16: ((int16_t *) d)[i] = (int16_t) tp->int32_data[i]; break;
            case ZI_DT_I8: ((int8_t *) d)[i] = (int8_t) tp->int32_data[i]; break;
            case ZI_DT_U8: ((uint8_t *) d)[i] = (uint8_t) tp->int32_data[i]; break;
            case ZI_DT_BOOL: ((uint8_t *) d)[i] = tp->int32_data[i] != 0; break;
            case ZI_DT_U16: case ZI_DT_F16: case ZI_DT_BF16:
                ((uint16_t *) d)[i] = (uint16_t) tp->int32_data[i];
                break;
            case ZI_DT_I64: ((int64_t *) d)[i] = tp->int64_data[i]; break;
            case ZI_DT_F64: ((double *) d)[i] = tp->double_data[i]; break;
            case ZI_DT_U32: ((uint32_t *) d)[i] = (uint32_t) tp->uint64_data[i]; break;
            case ZI_DT_U64: ((uint64_t *) d)[i] = tp->uint64_data[i]; break;
            default: break;
        }
    }
    *out = t;
    return ZI_OK;
}

//  -------------------------------------------------------------------------
//  Declared types (ValueInfoProto)

//  Set a value's declared dtype and shape. With `report` false (value_info)
//  anything odd is silently ignored: it is only a hint.
static int
s_value_type (s_loader_t *ld, zi_value_t *v, const Onnx__TypeProto *type,
              const char *what, bool report, char *err, size_t errlen)
{
    if (!type || type->value_case == ONNX__TYPE_PROTO__VALUE__NOT_SET) {
        return ZI_OK;
    }
    if (type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !type->tensor_type) {
        if (report) {
            const char *kind = "?";
            switch (type->value_case) {
                case ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE: kind = "sequence"; break;
                case ONNX__TYPE_PROTO__VALUE_MAP_TYPE: kind = "map"; break;
                case ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE: kind = "optional"; break;
                case ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE:
                    kind = "sparse tensor";
                    break;
                default: break;
            }
            s_problem (ld, ZI_ERR_UNSUPPORTED, NULL, "%s: unsupported type %s", what,
                       kind);
        }
        return ZI_OK;
    }
    const Onnx__TypeProto__Tensor *tt = type->tensor_type;
    int elem = tt->has_elem_type ? tt->elem_type : 0;
    if (elem != 0 && !zi_dtype_valid (elem)) {
        if (report) {
            s_dtype_problem (ld, what, elem);
        }
        return ZI_OK;
    }
    if (!tt->shape) {
        v->dtype = (zi_dtype_t) elem;
        v->rank = -1;
        return ZI_OK;
    }
    if (tt->shape->n_dim > ZI_MAX_RANK) {
        if (report) {
            s_problem (ld, ZI_ERR_UNSUPPORTED, NULL, "%s: rank %zu > %d", what,
                       tt->shape->n_dim, ZI_MAX_RANK);
        }
        return ZI_OK;
    }
    int64_t shape[ZI_MAX_RANK];
    for (size_t i = 0; i < tt->shape->n_dim; i++) {
        const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
        if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
            if (d->dim_value < 0) {
                if (!report) {
                    return ZI_OK;
                }
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "%s: %s: dimension %zu is negative (%lld)", ld->label,
                                what, i, (long long) d->dim_value);
            }
            shape[i] = d->dim_value;
        }
        else {
            shape[i] = -1;      //  dim_param (symbolic) or unknown
        }
    }
    v->dtype = (zi_dtype_t) elem;
    v->rank = (int) tt->shape->n_dim;
    memcpy (v->shape, shape, (size_t) v->rank * sizeof shape[0]);
    return ZI_OK;
}

//  -------------------------------------------------------------------------
//  Attributes

static const char *
s_attr_type_name (int type)
{
    switch (type) {
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH: return "GRAPH";
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS: return "GRAPHS";
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSORS: return "TENSORS";
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR: return "SPARSE_TENSOR";
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSORS:
            return "SPARSE_TENSORS";
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTO: return "TYPE_PROTO";
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTOS: return "TYPE_PROTOS";
        default: return NULL;
    }
}

//  Files written before AttributeProto.type existed set just one field.
static int
s_attr_infer_type (const Onnx__AttributeProto *ap)
{
    if (ap->has_type) {
        return (int) ap->type;
    }
    if (ap->has_f) {
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    }
    if (ap->has_i) {
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    }
    if (ap->has_s) {
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
    }
    if (ap->t) {
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
    }
    if (ap->g) {
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
    }
    if (ap->n_floats) {
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
    }
    if (ap->n_ints) {
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    }
    if (ap->n_strings) {
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS;
    }
    if (ap->n_graphs) {
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS;
    }
    if (ap->n_tensors) {
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSORS;
    }
    if (ap->sparse_tensor) {
        return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR;
    }
    return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED;
}

static char *
s_strndup_bytes (const uint8_t *data, size_t len)
{
    char *s = (char *) malloc (len + 1);
    if (s) {
        if (len) {
            memcpy (s, data, len);
        }
        s[len] = 0;
    }
    return s;
}

//  Convert one attribute. Returns 0; ZI_ERR_UNSUPPORTED with a short
//  reason in err (no label: collected as a problem); or another error with
//  the full message.
static int
s_attr_from_proto (s_loader_t *ld, Onnx__AttributeProto *ap, const char *node_what,
                   zi_attr_t *a, char *err, size_t errlen)
{
    memset (a, 0, sizeof *a);
    if (!ap->name || !*ap->name) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: %s: attribute without a name",
                        ld->label, node_what);
    }
    int type = s_attr_infer_type (ap);
    const char *unsupported = s_attr_type_name (type);
    if (unsupported) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                        "%s: attribute '%s' of type %s is unsupported", node_what,
                        ap->name, unsupported);
    }
    a->name = strdup (ap->name);
    if (!a->name) {
        return ZI_ERR_NOMEM;
    }
    int rc = ZI_OK;
    switch (type) {
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT:
            a->type = ZI_ATTR_FLOAT;
            a->f = ap->f;
            break;
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT:
            a->type = ZI_ATTR_INT;
            a->i = ap->i;
            break;
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING:
            a->type = ZI_ATTR_STRING;
            a->s = s_strndup_bytes (ap->s.data, ap->s.len);
            a->s_len = ap->s.len;
            if (!a->s) {
                rc = ZI_ERR_NOMEM;
            }
            break;
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: {
            a->type = ZI_ATTR_TENSOR;
            if (!ap->t) {
                rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                              "%s: %s: attribute '%s' of type TENSOR has no tensor",
                              ld->label, node_what, ap->name);
                break;
            }
            char what[400];
            snprintf (what, sizeof what, "%s: attribute '%s'", node_what, ap->name);
            rc = s_tensor_from_proto (ld, ap->t, what, &a->t, err, errlen);
            break;
        }
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
            a->type = ZI_ATTR_FLOATS;
            if (ap->n_floats > INT_MAX) {
                rc = ZI_ERR_LIMIT;
                break;
            }
            a->n = (int) ap->n_floats;
            a->floats = (float *) malloc ((ap->n_floats ? ap->n_floats : 1) * sizeof (float));
            if (!a->floats) {
                rc = ZI_ERR_NOMEM;
                break;
            }
            if (ap->n_floats) {
                memcpy (a->floats, ap->floats, ap->n_floats * sizeof (float));
            }
            break;
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
            a->type = ZI_ATTR_INTS;
            if (ap->n_ints > INT_MAX) {
                rc = ZI_ERR_LIMIT;
                break;
            }
            a->n = (int) ap->n_ints;
            a->ints = (int64_t *) malloc ((ap->n_ints ? ap->n_ints : 1) * sizeof (int64_t));
            if (!a->ints) {
                rc = ZI_ERR_NOMEM;
                break;
            }
            if (ap->n_ints) {
                memcpy (a->ints, ap->ints, ap->n_ints * sizeof (int64_t));
            }
            break;
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS:
            a->type = ZI_ATTR_STRINGS;
            if (ap->n_strings > INT_MAX) {
                rc = ZI_ERR_LIMIT;
                break;
            }
            a->strings = (char **) calloc (ap->n_strings ? ap->n_strings : 1,
                                           sizeof (char *));
            if (!a->strings) {
                rc = ZI_ERR_NOMEM;
                break;
            }
            for (size_t i = 0; i < ap->n_strings; i++) {
                a->strings[i] = s_strndup_bytes (ap->strings[i].data, ap->strings[i].len);
                if (!a->strings[i]) {
                    rc = ZI_ERR_NOMEM;
                    break;
                }
                a->n = (int) i + 1;     //  zi_attr_clear frees the first n
            }
            break;
        default:
            rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                          "%s: %s: attribute '%s' has no or an unknown type (%d)",
                          ld->label, node_what, ap->name, type);
            break;
    }
    if (rc == ZI_ERR_NOMEM || rc == ZI_ERR_LIMIT) {
        zi_fail (err, errlen, rc, "%s: %s: attribute '%s': %s", ld->label, node_what,
                 ap->name, zi_strerror (rc));
    }
    if (rc) {
        zi_attr_clear (a);
    }
    return rc;
}

//  -------------------------------------------------------------------------
//  Constant nodes

//  Build the tensor a Constant node stands for. Returns 0, or an error /
//  ZI_ERR_UNSUPPORTED as s_tensor_from_proto.
static int
s_constant_value (s_loader_t *ld, Onnx__NodeProto *np, const char *node_what,
                  zi_tensor_t **out, char *err, size_t errlen)
{
    *out = NULL;
    Onnx__AttributeProto *ap = NULL;
    for (size_t i = 0; i < np->n_attribute; i++) {
        const char *name = np->attribute[i]->name;
        //  Constant has exactly one of its value attributes; others are
        //  errors in the file, and so is having two.
        if (!name) {
            continue;
        }
        if (strncmp (name, "value", 5) == 0 || strcmp (name, "sparse_value") == 0) {
            if (ap) {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "%s: %s: has more than one value attribute", ld->label,
                                node_what);
            }
            ap = np->attribute[i];
        }
    }
    if (!ap) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: %s: has no value attribute",
                        ld->label, node_what);
    }
    const char *name = ap->name;
    int type = s_attr_infer_type (ap);
    if (strcmp (name, "value") == 0) {
        if (type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR || !ap->t) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "%s: %s: attribute 'value' is not a tensor", ld->label,
                            node_what);
        }
        char what[400];
        snprintf (what, sizeof what, "%s: attribute 'value'", node_what);
        return s_tensor_from_proto (ld, ap->t, what, out, err, errlen);
    }
    zi_tensor_t *t = NULL;
    if (strcmp (name, "value_float") == 0
        && type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT) {
        t = zi_tensor_new (ZI_DT_F32, 0, NULL);
        if (t) {
            *(float *) t->data = ap->f;
        }
    }
    else if (strcmp (name, "value_int") == 0
             && type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT) {
        t = zi_tensor_new (ZI_DT_I64, 0, NULL);
        if (t) {
            *(int64_t *) t->data = ap->i;
        }
    }
    else if (strcmp (name, "value_floats") == 0
             && (type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS
                 || type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)) {
        int64_t n = (int64_t) ap->n_floats;
        t = zi_tensor_new (ZI_DT_F32, 1, &n);
        if (t && n) {
            memcpy (t->data, ap->floats, (size_t) n * sizeof (float));
        }
    }
    else if (strcmp (name, "value_ints") == 0
             && (type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS
                 || type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)) {
        int64_t n = (int64_t) ap->n_ints;
        t = zi_tensor_new (ZI_DT_I64, 1, &n);
        if (t && n) {
            memcpy (t->data, ap->ints, (size_t) n * sizeof (int64_t));
        }
    }
    else if (strcmp (name, "sparse_value") == 0 || strcmp (name, "value_string") == 0
             || strcmp (name, "value_strings") == 0) {
        return zi_fail (err, errlen, ZI_ERR_UNSUPPORTED,
                        "%s: attribute '%s' is unsupported", node_what, name);
    }
    else {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                        "%s: %s: attribute '%s' is unknown or has the wrong type",
                        ld->label, node_what, name);
    }
    if (!t) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", ld->label);
    }
    *out = t;
    return ZI_OK;
}

//  -------------------------------------------------------------------------
//  Graph

static bool
s_domain_default (const char *domain)
{
    return !domain || !*domain || strcmp (domain, "ai.onnx") == 0;
}

//  "node 'name' (Op)", or "node #3 (Op)" when the file gave no name.
static void
s_node_what (char *buf, size_t len, const Onnx__NodeProto *np, size_t index)
{
    const char *op = np->op_type ? np->op_type : "?";
    if (np->name && *np->name) {
        snprintf (buf, len, "node '%s' (%s)", np->name, op);
    }
    else {
        snprintf (buf, len, "node #%zu (%s)", index, op);
    }
}

//  Intern the value names of a node's inputs or outputs ("" -> -1).
static int
s_node_values (s_loader_t *ld, zi_graph_t *g, size_t n, char **names, int **out,
               char *err, size_t errlen)
{
    int *idx = (int *) malloc ((n ? n : 1) * sizeof *idx);
    if (!idx) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", ld->label);
    }
    for (size_t i = 0; i < n; i++) {
        if (!names[i] || !*names[i]) {
            idx[i] = -1;
            continue;
        }
        int v = zi_graph_intern_value (g, names[i]);
        if (v < 0) {
            free (idx);
            return zi_fail (err, errlen, v, "%s: value '%s': %s", ld->label, names[i],
                            zi_strerror (v));
        }
        idx[i] = v;
    }
    *out = idx;
    return ZI_OK;
}

static int
s_add_node (s_loader_t *ld, zi_graph_t *g, Onnx__NodeProto *np, size_t index,
            char *err, size_t errlen)
{
    char what[300];
    s_node_what (what, sizeof what, np, index);
    if (!np->op_type || !*np->op_type) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: %s: has no op_type",
                        ld->label, what);
    }
    if (np->n_input > INT_MAX || np->n_output > INT_MAX || np->n_attribute > INT_MAX) {
        return zi_fail (err, errlen, ZI_ERR_LIMIT, "%s: %s: too many inputs, outputs "
                        "or attributes", ld->label, what);
    }
    bool dflt = s_domain_default (np->domain);
    if (!dflt) {
        bool known = false;
        for (int i = 0; i < ld->n_domains; i++) {
            if (strcmp (ld->domains[i], np->domain) == 0) {
                known = true;
                break;
            }
        }
        if (!known) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "%s: %s: domain '%s' is not imported by the model",
                            ld->label, what, np->domain);
        }
    }
    char why[512];
    if (dflt && strcmp (np->op_type, "Constant") == 0) {
        if (np->n_output != 1 || !np->output[0] || !*np->output[0]) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: %s: must have one output",
                            ld->label, what);
        }
        int v = zi_graph_intern_value (g, np->output[0]);
        if (v < 0) {
            return zi_fail (err, errlen, v, "%s: %s: %s", ld->label, what,
                            zi_strerror (v));
        }
        if (g->values[v].init || g->values[v].is_input) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "%s: %s: output '%s' is already defined", ld->label, what,
                            np->output[0]);
        }
        zi_tensor_t *t = NULL;
        int rc = s_constant_value (ld, np, what, &t, why, sizeof why);
        if (rc == ZI_ERR_UNSUPPORTED) {
            s_problem (ld, rc, NULL, "%s", why);
            return ZI_OK;
        }
        if (rc) {
            return zi_fail (err, errlen, rc, "%s", why);
        }
        zi_value_t *val = &g->values[v];
        val->init = t;
        val->dtype = t->dtype;
        val->rank = t->rank;
        memcpy (val->shape, t->ne, sizeof val->shape);
        return ZI_OK;
    }
    int *in = NULL, *out = NULL;
    int rc = s_node_values (ld, g, np->n_input, np->input, &in, err, errlen);
    if (rc == ZI_OK) {
        rc = s_node_values (ld, g, np->n_output, np->output, &out, err, errlen);
    }
    int ni = ZI_ERR_NOMEM;
    if (rc == ZI_OK) {
        ni = zi_graph_add_node (g, np->op_type, dflt ? "" : np->domain, np->name,
                                (int) np->n_input, in, (int) np->n_output, out);
        if (ni < 0) {
            rc = zi_fail (err, errlen, ni, "%s: %s: %s", ld->label, what,
                          zi_strerror (ni));
        }
    }
    free (in);
    free (out);
    if (rc) {
        return rc;
    }
    //  Attributes. An unsupported one is remembered and reported below
    //  unless the op itself is unsupported (then that is the news).
    char attr_why[512] = "";
    for (size_t i = 0; i < np->n_attribute; i++) {
        Onnx__AttributeProto *ap = np->attribute[i];
        if (ap->name && zi_node_attr (&g->nodes[ni], ap->name)) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "%s: %s: attribute '%s' is given twice", ld->label, what,
                            ap->name);
        }
        if (ap->name && strcmp (ap->name, "__opset") == 0) {
            return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                            "%s: %s: attribute name '__opset' is reserved", ld->label,
                            what);
        }
        zi_attr_t a;
        rc = s_attr_from_proto (ld, ap, what, &a, why, sizeof why);
        if (rc == ZI_ERR_UNSUPPORTED) {
            if (!attr_why[0]) {
                snprintf (attr_why, sizeof attr_why, "%s", why);
            }
            continue;
        }
        if (rc) {
            return zi_fail (err, errlen, rc, "%s", why);
        }
        rc = zi_graph_node_add_attr (g, ni, &a);
        if (rc) {
            zi_attr_clear (&a);
            return zi_fail (err, errlen, rc, "%s: out of memory", ld->label);
        }
    }
    zi_attr_t opset = {0};
    opset.name = strdup ("__opset");
    opset.type = ZI_ATTR_INT;
    opset.i = g->opset;
    if (!opset.name || zi_graph_node_add_attr (g, ni, &opset)) {
        zi_attr_clear (&opset);
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", ld->label);
    }
    //  Resolve the kernel now, while we know this node's file identity.
    zi_node_t *node = &g->nodes[ni];
    const zi_op_def_t *op = zi_op_find (node->op_type, node->domain);
    if (!op) {
        char key[300];
        snprintf (key, sizeof key, "%s.%s", node->domain, node->op_type);
        s_problem (ld, ZI_ERR_UNSUPPORTED, key, "%s: unsupported op %s%s%s", what,
                   node->domain, *node->domain ? "." : "", node->op_type);
        return ZI_OK;
    }
    if (attr_why[0]) {
        s_problem (ld, ZI_ERR_UNSUPPORTED, NULL, "%s", attr_why);
        return ZI_OK;
    }
    node->op = op;
    rc = zi_op_check_node (node, why, sizeof why);
    if (rc) {
        node->op = NULL;
        s_problem (ld, rc == ZI_ERR_NOMEM ? ZI_ERR_NOMEM
                       : rc == ZI_ERR_UNSUPPORTED ? ZI_ERR_UNSUPPORTED
                                                  : ZI_ERR_MALFORMED,
                   NULL, "%s", why);
    }
    return ZI_OK;
}

static int
s_opsets (s_loader_t *ld, zi_graph_t *g, const Onnx__ModelProto *m, char *err,
          size_t errlen)
{
    bool have_default = false;
    ld->domains = (const char **) calloc (m->n_opset_import ? m->n_opset_import : 1,
                                          sizeof (char *));
    if (!ld->domains) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", ld->label);
    }
    for (size_t i = 0; i < m->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *os = m->opset_import[i];
        if (s_domain_default (os->domain)) {
            if (have_default) {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "%s: opset_import lists the default domain twice",
                                ld->label);
            }
            if (!os->has_version || os->version < 1) {
                return zi_fail (err, errlen, ZI_ERR_MALFORMED,
                                "%s: opset_import: bad version %lld for the default "
                                "domain",
                                ld->label, (long long) os->version);
            }
            g->opset = os->version;
            have_default = true;
        }
        else {
            ld->domains[ld->n_domains++] = os->domain;
        }
    }
    if (!have_default) {
        //  IR versions 1 and 2 predate opset_import: they mean opset 1.
        g->opset = (m->has_ir_version && m->ir_version < 3) ? 1 : 0;
    }
    return ZI_OK;
}

static int
s_build (s_loader_t *ld, Onnx__ModelProto *m, zi_graph_t **graph_p, char *err,
         size_t errlen)
{
    *graph_p = NULL;
    Onnx__GraphProto *gp = m->graph;
    if (!gp) {
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: model has no graph",
                        ld->label);
    }
    zi_graph_t *g = zi_graph_new ();
    if (!g) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", ld->label);
    }
    int rc = s_opsets (ld, g, m, err, errlen);
    if (rc) {
        goto fail;
    }
    if (gp->name) {
        char *name = strdup (gp->name);
        if (!name) {
            rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", ld->label);
            goto fail;
        }
        free (g->name);
        g->name = name;
    }
    if (gp->n_input > INT_MAX || gp->n_output > INT_MAX || gp->n_node > INT_MAX
        || gp->n_initializer > INT_MAX) {
        rc = zi_fail (err, errlen, ZI_ERR_LIMIT, "%s: graph is too large", ld->label);
        goto fail;
    }
    char what[300];
    //  1. Graph inputs, with their declared types.
    int *in_idx = (int *) malloc ((gp->n_input ? gp->n_input : 1) * sizeof (int));
    if (!in_idx) {
        rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", ld->label);
        goto fail;
    }
    for (size_t i = 0; i < gp->n_input; i++) {
        const Onnx__ValueInfoProto *vi = gp->input[i];
        if (!vi->name || !*vi->name) {
            rc = zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: graph input %zu has no name",
                          ld->label, i);
            goto fail_in;
        }
        int v = zi_graph_add_value (g, vi->name);
        if (v < 0) {
            rc = zi_fail (err, errlen, v, "%s: graph input '%s': %s", ld->label, vi->name,
                          v == ZI_ERR_MALFORMED ? "listed twice" : zi_strerror (v));
            goto fail_in;
        }
        in_idx[i] = v;
        snprintf (what, sizeof what, "graph input '%s'", vi->name);
        rc = s_value_type (ld, &g->values[v], vi->type, what, true, err, errlen);
        if (rc) {
            goto fail_in;
        }
    }
    //  2. Initializers (constants; an input with one is no longer an input).
    for (size_t i = 0; i < gp->n_initializer; i++) {
        Onnx__TensorProto *tp = gp->initializer[i];
        if (!tp->name || !*tp->name) {
            rc = zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: initializer %zu has no name",
                          ld->label, i);
            goto fail_in;
        }
        int v = zi_graph_intern_value (g, tp->name);
        if (v < 0) {
            rc = zi_fail (err, errlen, v, "%s: initializer '%s': %s", ld->label,
                          tp->name, zi_strerror (v));
            goto fail_in;
        }
        if (g->values[v].init) {
            rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                          "%s: initializer '%s' is given twice", ld->label, tp->name);
            goto fail_in;
        }
        snprintf (what, sizeof what, "initializer '%s'", tp->name);
        zi_tensor_t *t = NULL;
        char why[512];
        rc = s_tensor_from_proto (ld, tp, what, &t, why, sizeof why);
        if (rc == ZI_ERR_UNSUPPORTED) {
            s_problem (ld, rc, NULL, "%s", why);
            rc = ZI_OK;
            continue;
        }
        if (rc) {
            rc = zi_fail (err, errlen, rc, "%s",
                          rc == ZI_ERR_NOMEM ? "out of memory" : why);
            goto fail_in;
        }
        zi_value_t *val = &g->values[v];
        val->init = t;
        val->dtype = t->dtype;
        val->rank = t->rank;
        memcpy (val->shape, t->ne, sizeof val->shape);
    }
    for (size_t i = 0; i < gp->n_sparse_initializer; i++) {
        const Onnx__SparseTensorProto *sp = gp->sparse_initializer[i];
        const char *name = sp->values && sp->values->name ? sp->values->name : "?";
        s_problem (ld, ZI_ERR_UNSUPPORTED, NULL,
                   "sparse initializer '%s': sparse tensors are unsupported", name);
    }
    //  The inputs the caller feeds, in file order.
    g->inputs = (int *) malloc ((gp->n_input ? gp->n_input : 1) * sizeof (int));
    if (!g->inputs) {
        rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", ld->label);
        goto fail_in;
    }
    for (size_t i = 0; i < gp->n_input; i++) {
        zi_value_t *val = &g->values[in_idx[i]];
        if (!val->init) {
            val->is_input = true;
            g->inputs[g->n_inputs++] = in_idx[i];
        }
    }
    free (in_idx);
    in_idx = NULL;
    //  3. Nodes: Constant folded, kernels resolved and checked.
    if (g->opset == 0) {
        for (size_t i = 0; i < gp->n_node; i++) {
            if (s_domain_default (gp->node[i]->domain)) {
                rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                              "%s: no opset_import for the default ONNX domain",
                              ld->label);
                goto fail;
            }
        }
    }
    for (size_t i = 0; i < gp->n_node; i++) {
        rc = s_add_node (ld, g, gp->node[i], i, err, errlen);
        if (rc) {
            goto fail;
        }
    }
    //  4. Graph outputs.
    g->outputs = (int *) malloc ((gp->n_output ? gp->n_output : 1) * sizeof (int));
    if (!g->outputs) {
        rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", ld->label);
        goto fail;
    }
    for (size_t i = 0; i < gp->n_output; i++) {
        const Onnx__ValueInfoProto *vi = gp->output[i];
        if (!vi->name || !*vi->name) {
            rc = zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: graph output %zu has no name",
                          ld->label, i);
            goto fail;
        }
        int v = zi_graph_find_value (g, vi->name);
        if (v < 0) {
            rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                          "%s: graph output '%s' is not a node output, initializer "
                          "or input",
                          ld->label, vi->name);
            goto fail;
        }
        zi_value_t *val = &g->values[v];
        if (val->is_output) {
            rc = zi_fail (err, errlen, ZI_ERR_MALFORMED,
                          "%s: graph output '%s' is listed twice", ld->label, vi->name);
            goto fail;
        }
        val->is_output = true;
        g->outputs[g->n_outputs++] = v;
        if (!val->init && !val->is_input) {
            snprintf (what, sizeof what, "graph output '%s'", vi->name);
            rc = s_value_type (ld, val, vi->type, what, true, err, errlen);
            if (rc) {
                goto fail;
            }
        }
    }
    //  5. value_info: declared types of intermediates, a hint only.
    for (size_t i = 0; i < gp->n_value_info; i++) {
        const Onnx__ValueInfoProto *vi = gp->value_info[i];
        int v = vi->name ? zi_graph_find_value (g, vi->name) : -1;
        if (v < 0) {
            continue;
        }
        zi_value_t *val = &g->values[v];
        if (!val->init && !val->is_input && val->dtype == ZI_DT_UNDEFINED
            && val->rank < 0) {
            s_value_type (ld, val, vi->type, "value_info", false, NULL, 0);
        }
    }
    //  6. Everything we could not take, in one message.
    if (ld->n_problems || ld->nomem) {
        rc = s_problems_report (ld, err, errlen);
        goto fail;
    }
    char why[512];
    //  A graph of constants only (a folded Constant as the output) has no
    //  nodes to sort; producers are already -1.
    rc = g->n_nodes > 0 ? zi_graph_sort (g, why, sizeof why) : ZI_OK;
    if (rc) {
        rc = zi_fail (err, errlen, rc, "%s: %s", ld->label,
                      rc == ZI_ERR_NOMEM ? "out of memory" : why);
        goto fail;
    }
    //  Nodes of constants only (Identity of a weight, as torch exports
    //  shared biases) become initializers before anyone plans or cuts the
    //  graph: a weight then belongs to the segments that read it, never
    //  crosses a cut (zi_graph_fold_constants).
    rc = zi_graph_fold_constants (g, NULL, why, sizeof why);
    if (rc) {
        rc = zi_fail (err, errlen, rc, "%s: %s", ld->label, why);
        goto fail;
    }
    if (ld->maps) {
        g->mapping = ld->maps;
        g->mapping_free = s_maplist_free;
        ld->maps = NULL;
    }
    *graph_p = g;
    return ZI_OK;

fail_in:
    free (in_idx);
fail:
    zi_graph_destroy (&g);
    return rc;
}

//  -------------------------------------------------------------------------
//  Decoding budget

//  protobuf-c allocates a struct for every message it decodes: an empty
//  AttributeProto costs 2 bytes in the file and ~240 in memory, so a crafted
//  2 MB file made it allocate 290 MB (145x). Real models decode to 1-2x
//  their size (weights dominate) and weight-free ones to ~15x, so we give
//  the decoder a budget of S_DECODE_FLOOR + S_DECODE_RATIO x the input and
//  fail cleanly past it, instead of letting a small file exhaust memory.
#define S_DECODE_RATIO 32
#define S_DECODE_FLOOR ((size_t) 64 << 20)

typedef struct {
    size_t used;                //  cumulative: decoding only allocates
    size_t limit;
    bool exceeded;
} s_budget_t;

static void *
s_budget_alloc (void *arg, size_t size)
{
    s_budget_t *b = (s_budget_t *) arg;
    if (size > b->limit - b->used) {
        b->exceeded = true;
        return NULL;
    }
    b->used += size;
    //  Plain malloc, no header: s_tensor_from_proto takes raw_data buffers
    //  and releases them with free().
    return malloc (size);
}

static void
s_budget_free (void *arg, void *ptr)
{
    (void) arg;
    free (ptr);
}

static void
s_budget_init (s_budget_t *b, ProtobufCAllocator *a, size_t len)
{
    b->used = 0;
    b->exceeded = false;
    b->limit = len > (SIZE_MAX - S_DECODE_FLOOR) / S_DECODE_RATIO
                   ? SIZE_MAX
                   : S_DECODE_FLOOR + len * S_DECODE_RATIO;
    a->alloc = s_budget_alloc;
    a->free = s_budget_free;
    a->allocator_data = b;
}

//  -------------------------------------------------------------------------
//  Public entry points

static int
s_read_model (s_loader_t *ld, const void *buf, size_t len, zi_graph_t **graph_p,
              char *err, size_t errlen)
{
    if (len > ZI_ONNX_MAX_FILE) {
        return zi_fail (err, errlen, ZI_ERR_LIMIT, "%s: %zu bytes, larger than %zu",
                        ld->label, len, ZI_ONNX_MAX_FILE);
    }
    ld->worst = ZI_ERR_UNSUPPORTED;
    s_budget_t budget;
    ProtobufCAllocator alloc;
    s_budget_init (&budget, &alloc, len);
    Onnx__ModelProto *m = onnx__model_proto__unpack (&alloc, len, (const uint8_t *) buf);
    if (!m) {
        if (budget.exceeded) {
            return zi_fail (err, errlen, ZI_ERR_LIMIT,
                            "%s: decoding needs more than %zu bytes of memory for a "
                            "%zu-byte file (too many small messages)",
                            ld->label, budget.limit, len);
        }
        return zi_fail (err, errlen, ZI_ERR_MALFORMED, "%s: not a valid ONNX protobuf",
                        ld->label);
    }
    int rc = s_build (ld, m, graph_p, err, errlen);
    onnx__model_proto__free_unpacked (m, &alloc);
    return rc;
}

int
zi_onnx_read_buffer (const void *buf, size_t len, const char *base_dir,
                     zi_graph_t **graph_p, char *err, size_t errlen)
{
    if (!graph_p || (!buf && len)) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "zi_onnx_read_buffer: bad arguments");
    }
    *graph_p = NULL;
    s_loader_t ld = {0};
    ld.label = "<memory>";
    ld.base_dir = base_dir;
    int rc = s_read_model (&ld, buf, len, graph_p, err, errlen);
    s_loader_clear (&ld);
    return rc;
}

zi_graph_t *
zi_onnx_load_buffer (const void *buf, size_t len, const char *base_dir, char *err,
                     size_t errlen)
{
    zi_graph_t *g = NULL;
    zi_onnx_read_buffer (buf, len, base_dir, &g, err, errlen);
    return g;
}

//  The directory part of a path ("." when there is none); malloc'ed.
static char *
s_dirname (const char *path)
{
    const char *slash = strrchr (path, '/');
    if (!slash) {
        return strdup (".");
    }
    if (slash == path) {
        return strdup ("/");
    }
    size_t len = (size_t) (slash - path);
    char *dir = (char *) malloc (len + 1);
    if (dir) {
        memcpy (dir, path, len);
        dir[len] = 0;
    }
    return dir;
}

int
zi_onnx_read (const char *path, zi_graph_t **graph_p, char *err, size_t errlen)
{
    if (!graph_p || !path) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "zi_onnx_read: bad arguments");
    }
    *graph_p = NULL;
    void *addr = NULL;
    size_t size = 0;
    int rc = s_map_file (path, ZI_ONNX_MAX_FILE, &addr, &size, err, errlen);
    if (rc) {
        return rc;
    }
    char *dir = s_dirname (path);
    if (!dir) {
        if (addr) {
            munmap (addr, size);
        }
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", path);
    }
    s_loader_t ld = {0};
    ld.label = path;
    ld.base_dir = dir;
    rc = s_read_model (&ld, addr, size, graph_p, err, errlen);
    s_loader_clear (&ld);
    free (dir);
    if (addr) {
        munmap (addr, size);
    }
    return rc;
}

zi_graph_t *
zi_onnx_load (const char *path, char *err, size_t errlen)
{
    zi_graph_t *g = NULL;
    zi_onnx_read (path, &g, err, errlen);
    return g;
}

static zi_tensor_t *
s_read_tensor (s_loader_t *ld, const void *buf, size_t len, char **name_out,
               char *err, size_t errlen)
{
    if (len > ZI_ONNX_MAX_FILE) {
        zi_fail (err, errlen, ZI_ERR_LIMIT, "%s: %zu bytes, larger than %zu", ld->label,
                 len, ZI_ONNX_MAX_FILE);
        return NULL;
    }
    s_budget_t budget;
    ProtobufCAllocator alloc;
    s_budget_init (&budget, &alloc, len);
    Onnx__TensorProto *tp = onnx__tensor_proto__unpack (&alloc, len, (const uint8_t *) buf);
    if (!tp) {
        zi_fail (err, errlen, budget.exceeded ? ZI_ERR_LIMIT : ZI_ERR_MALFORMED,
                 "%s: %s", ld->label,
                 budget.exceeded ? "decoding needs too much memory for the file size"
                                 : "not a valid ONNX TensorProto");
        return NULL;
    }
    char what[300];
    snprintf (what, sizeof what, "tensor '%s'", tp->name ? tp->name : "");
    zi_tensor_t *t = NULL;
    char why[512];
    int rc = s_tensor_from_proto (ld, tp, what, &t, why, sizeof why);
    if (rc == ZI_ERR_UNSUPPORTED) {
        zi_fail (err, errlen, rc, "%s: %s", ld->label, why);
    }
    else if (rc) {
        zi_fail (err, errlen, rc, "%s", rc == ZI_ERR_NOMEM ? "out of memory" : why);
    }
    if (t && name_out) {
        *name_out = strdup (tp->name ? tp->name : "");
        if (!*name_out) {
            zi_tensor_destroy (&t);
            zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", ld->label);
        }
    }
    onnx__tensor_proto__free_unpacked (tp, &alloc);
    return t;
}

zi_tensor_t *
zi_onnx_load_tensor_buffer (const void *buf, size_t len, char **name_out, char *err,
                            size_t errlen)
{
    if (name_out) {
        *name_out = NULL;
    }
    if (!buf && len) {
        zi_fail (err, errlen, ZI_ERR_INVALID, "zi_onnx_load_tensor_buffer: bad arguments");
        return NULL;
    }
    s_loader_t ld = {0};
    ld.label = "<memory>";
    ld.copy_external = true;
    zi_tensor_t *t = s_read_tensor (&ld, buf, len, name_out, err, errlen);
    s_loader_clear (&ld);
    return t;
}

zi_tensor_t *
zi_onnx_load_tensor (const char *path, char **name_out, char *err, size_t errlen)
{
    if (name_out) {
        *name_out = NULL;
    }
    if (!path) {
        zi_fail (err, errlen, ZI_ERR_INVALID, "zi_onnx_load_tensor: bad arguments");
        return NULL;
    }
    void *addr = NULL;
    size_t size = 0;
    if (s_map_file (path, ZI_ONNX_MAX_FILE, &addr, &size, err, errlen)) {
        return NULL;
    }
    char *dir = s_dirname (path);
    zi_tensor_t *t = NULL;
    if (!dir) {
        zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", path);
    }
    else {
        s_loader_t ld = {0};
        ld.label = path;
        ld.base_dir = dir;
        ld.copy_external = true;
        t = s_read_tensor (&ld, addr, size, name_out, err, errlen);
        s_loader_clear (&ld);
        free (dir);
    }
    if (addr) {
        munmap (addr, size);
    }
    return t;
}
