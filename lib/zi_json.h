/*  zi_json.h - a small, strict JSON DOM: parse, build, write, validate.

    zinfer reads and writes plan files as JSON and carries no JSON library,
    so this module is the whole of it. Input is untrusted: the parser accepts
    RFC 8259 JSON only (UTF-8, no comments, no trailing commas, no NaN),
    bounds nesting, input, string and node counts, and allocates only in
    proportion to the bytes it has consumed. Errors name the place and what
    was expected:

        plan.json:12:5: expected ',' or '}' after object member, found '"'

    Reading:

        zi_json_t *doc = NULL;
        char err[256];
        if (zi_json_parse_file ("plan.json", NULL, &doc, err, sizeof err)) {
            fprintf (stderr, "%s\n", err);
            return -1;
        }
        const char *name = zi_json_str (zi_json_get (doc, "name"));
        zi_json_t *hosts = zi_json_get (doc, "hosts");
        for (size_t i = 0; i < zi_json_size (hosts); i++) {
            int64_t port;
            if (zi_json_int (zi_json_get (zi_json_at (hosts, i), "port"),
                             1, 65535, &port) == 0) { ... }
        }
        zi_json_destroy (&doc);

    Accessors take and return borrowed pointers and accept NULL, so lookups
    chain without checks in between; a missing or mistyped value comes out as
    NULL / ZI_JSON_NONE / an error code at the end of the chain.

    Writing: build a DOM and dump it. Object members keep insertion order;
    pretty output indents by 2 spaces and puts an array or object that holds
    only scalars on one line when that fits in 100 columns:

        zi_json_t *root = zi_json_new_object ();
        zi_json_set_str (root, "name", "h1");
        zi_json_t *shape = zi_json_set_array (root, "shape");   //  borrowed
        zi_json_append_int (shape, -1);
        zi_json_append_int (shape, 10);
        char *text = zi_json_dump (root, ZI_JSON_PRETTY, NULL);
        //  {
        //    "name": "h1",
        //    "shape": [-1, 10]
        //  }
        free (text);
        zi_json_destroy (&root);

    Numbers are doubles; a number whose value is an exact integer in int64
    range also carries that integer (integer literals such as
    9007199254740993 are converted exactly, not through a double). Integers
    are written exactly; other doubles as the first of %.15g, %.16g, %.17g
    that reads back as the same double, with ".0" added to integral values
    so they stay doubles. Neither direction depends on the C locale.
    Strings are NUL-terminated UTF-8 and may hold NUL bytes (from \u0000):
    zi_json_str_len gives the true length.

    Validation: zi_json_schema_validate checks a document against a JSON
    Schema (draft 2020-12 subset) and reports the first problem with its
    path, e.g. "segments[1].replicas[0].capacity: must be > 0 (got -1)". The
    keywords it knows are listed above zi_json_schema_check; a schema using
    any other keyword is rejected rather than half-applied.
*/
#ifndef ZI_JSON_H_INCLUDED
#define ZI_JSON_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zi_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    ZI_JSON_NONE = 0,   //  no value: what zi_json_type (NULL) returns
    ZI_JSON_NULL,
    ZI_JSON_BOOL,
    ZI_JSON_NUMBER,
    ZI_JSON_STRING,
    ZI_JSON_ARRAY,
    ZI_JSON_OBJECT,
} zi_json_type_t;

typedef struct zi_json zi_json_t;

//  Parser limits and the name used in error messages. A zero field means
//  its default, so `(zi_json_opts_t) {.source = "plan.json"}` is complete.
typedef struct {
    const char *source;     //  name in messages; default "<json>"
    int max_depth;          //  nested arrays/objects; default 64, at most 1000
    size_t max_input;       //  input bytes; default 16 MiB
    size_t max_string;      //  bytes of one string as written; default 1 MiB
    size_t max_nodes;       //  values in the document; default 1 Mi
} zi_json_opts_t;

#define ZI_JSON_DEFAULT_DEPTH 64
#define ZI_JSON_MAX_DEPTH 1000
#define ZI_JSON_DEFAULT_INPUT (16u << 20)
#define ZI_JSON_DEFAULT_STRING (1u << 20)
#define ZI_JSON_DEFAULT_NODES (1u << 20)

//  ---------------------------------------------------------------------
//  Parsing

//  Parse len bytes of JSON text (need not be NUL-terminated; a UTF-8 BOM
//  is skipped). On success stores a new document in *out (the caller
//  destroys it) and returns 0. On failure *out is NULL, err holds
//  "source:line:column: problem" (column counts bytes, from 1), and the
//  return is ZI_ERR_MALFORMED, ZI_ERR_LIMIT, ZI_ERR_NOMEM or ZI_ERR_INVALID.
//  opts may be NULL for the defaults.
int zi_json_parse (const char *buf, size_t len, const zi_json_opts_t *opts,
                   zi_json_t **out, char *err, size_t errlen);

//  Read and parse a file; source defaults to path. Also ZI_ERR_IO.
int zi_json_parse_file (const char *path, const zi_json_opts_t *opts,
                        zi_json_t **out, char *err, size_t errlen);

//  Destroy a value and everything under it; sets *self_p to NULL. Safe on
//  NULL. Only destroy roots: values inside a container belong to it.
void zi_json_destroy (zi_json_t **self_p);

//  ---------------------------------------------------------------------
//  Access (all accept NULL)

zi_json_type_t zi_json_type (const zi_json_t *self);

//  "null", "boolean", "number", "string", "array", "object" or "none".
const char *zi_json_type_name (zi_json_type_t type);

//  Member `key` of an object, or NULL (not an object, or no such key).
zi_json_t *zi_json_get (const zi_json_t *self, const char *key);

//  Element i of an array, or value of member i of an object (file order);
//  NULL when out of range or not a container.
zi_json_t *zi_json_at (const zi_json_t *self, size_t i);

//  Key of member i of an object, or NULL.
const char *zi_json_key_at (const zi_json_t *self, size_t i);

//  Elements of an array or members of an object; 0 for anything else.
size_t zi_json_size (const zi_json_t *self);

//  The string of a string value, or NULL. zi_json_str_len gives its length
//  in bytes (0 when not a string).
const char *zi_json_str (const zi_json_t *self);
size_t zi_json_str_len (const zi_json_t *self);

//  The value of a number, or NaN when self is not a number.
double zi_json_num (const zi_json_t *self);

//  True when self is a number whose value is an integer in int64 range
//  (1, -0, 2.0, 1e3 are; 1.5 and 1e19 are not).
bool zi_json_is_int (const zi_json_t *self);

//  Store the integer value of self in *value if it is in [min, max].
//  Returns 0, ZI_ERR_INVALID when self is not an integer (see above), or
//  ZI_ERR_LIMIT when it is out of range; *value is untouched on error.
int zi_json_int (const zi_json_t *self, int64_t min, int64_t max,
                 int64_t *value);

//  True only for the value true.
bool zi_json_bool (const zi_json_t *self);

//  Deep equality as JSON Schema defines it: numbers by value (1 == 1.0),
//  objects regardless of member order. Two NULLs are equal.
bool zi_json_equal (const zi_json_t *a, const zi_json_t *b);

//  ---------------------------------------------------------------------
//  Building. Constructors return NULL when out of memory.

zi_json_t *zi_json_new_null (void);
zi_json_t *zi_json_new_bool (bool value);
zi_json_t *zi_json_new_int (int64_t value);
//  NULL also for NaN and infinities, which JSON cannot hold.
zi_json_t *zi_json_new_double (double value);
//  Copies value (NULL is refused). zi_json_new_stringn copies len bytes,
//  which may include NULs.
zi_json_t *zi_json_new_string (const char *value);
zi_json_t *zi_json_new_stringn (const char *value, size_t len);
zi_json_t *zi_json_new_array (void);
zi_json_t *zi_json_new_object (void);

//  Deep copy, or NULL when out of memory.
zi_json_t *zi_json_dup (const zi_json_t *self);

//  Append *value_p to an array. Takes ownership and NULLs *value_p on
//  success; on failure the caller still owns it. Returns 0, ZI_ERR_INVALID
//  (not an array, or *value_p NULL) or ZI_ERR_NOMEM.
int zi_json_append (zi_json_t *self, zi_json_t **value_p);

//  Set member key of an object to *value_p, replacing the value of an
//  existing member in place (its position is kept). Ownership as above.
int zi_json_set (zi_json_t *self, const char *key, zi_json_t **value_p);

//  Shorthands: build a scalar and set / append it. Return 0 or an error
//  (ZI_ERR_INVALID also for a NULL string or a non-finite double).
int zi_json_set_str (zi_json_t *self, const char *key, const char *value);
int zi_json_set_int (zi_json_t *self, const char *key, int64_t value);
int zi_json_set_double (zi_json_t *self, const char *key, double value);
int zi_json_set_bool (zi_json_t *self, const char *key, bool value);
int zi_json_append_str (zi_json_t *self, const char *value);
int zi_json_append_int (zi_json_t *self, int64_t value);
int zi_json_append_double (zi_json_t *self, double value);

//  Create an empty object / array as member key (or as the next element)
//  and return it, borrowed; NULL on error.
zi_json_t *zi_json_set_object (zi_json_t *self, const char *key);
zi_json_t *zi_json_set_array (zi_json_t *self, const char *key);
zi_json_t *zi_json_append_object (zi_json_t *self);
zi_json_t *zi_json_append_array (zi_json_t *self);

//  ---------------------------------------------------------------------
//  Writing

#define ZI_JSON_COMPACT 0
#define ZI_JSON_PRETTY 1

//  Serialise to a new NUL-terminated string (the caller frees it) and store
//  its length in *len_p if not NULL. Returns NULL when out of memory.
//  Invalid UTF-8 in strings is written as U+FFFD so the output is always
//  valid JSON.
char *zi_json_dump (const zi_json_t *self, int flags, size_t *len_p);

//  Write the pretty form plus a newline to path, atomically (a temporary
//  file in the same directory, then rename). Returns 0, ZI_ERR_IO or
//  ZI_ERR_NOMEM.
int zi_json_write_file (const zi_json_t *self, const char *path, char *err,
                        size_t errlen);

//  ---------------------------------------------------------------------
//  JSON Schema (subset of draft 2020-12)
//
//  Keywords applied: type (name or list; "integer" accepts any number with
//  an integral value), enum, const, minimum, maximum, exclusiveMinimum,
//  exclusiveMaximum, minLength, maxLength (in code points), minItems,
//  maxItems, items (one schema for every element), properties, required,
//  additionalProperties (false or a schema), $ref ("#" plus a JSON pointer,
//  e.g. "#/$defs/host"), allOf, anyOf, oneOf, if/then/else, and boolean
//  schemas. Ignored annotations: $schema, $id, $comment, $defs,
//  definitions, title, description, default, examples, deprecated,
//  readOnly, writeOnly.

//  Check that schema is well formed for this validator: only the keywords
//  above, each with a value of the right type, every $ref resolvable.
//  Returns 0 or ZI_ERR_UNSUPPORTED / ZI_ERR_INVALID with
//  "schema: #/pointer: problem" in err.
int zi_json_schema_check (const zi_json_t *schema, char *err, size_t errlen);

//  Validate doc against schema (checked first as above). Returns 0, or
//  ZI_ERR_MALFORMED with "path: problem" in err for the first violation
//  found ("problem" alone at the root). Paths read like C: a.b[2].c, with
//  ["odd key"] for keys that are not identifiers.
int zi_json_schema_validate (const zi_json_t *schema, const zi_json_t *doc,
                             char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
