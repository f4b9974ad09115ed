/*  zi_json.c - JSON DOM, parser, writer and schema validator; see zi_json.h.

    Layout of this file: the node and its containers, the parser, access,
    building, writing, and the JSON Schema subset at the end.
*/
#include "zi_json.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

//  =====================================================================
//  Nodes

typedef struct {
    char *key;          //  NUL-terminated; may hold NULs, see key_len
    size_t key_len;
    zi_json_t *value;
} s_member_t;

struct zi_json {
    zi_json_type_t type;
    bool boolean;
    bool is_int;        //  NUMBER: the value is an integer in int64 range
    bool int_form;      //  NUMBER: written as an integer literal
    int64_t ival;       //  NUMBER: valid when is_int
    double num;         //  NUMBER
    char *str;          //  STRING: len bytes plus a NUL
    size_t len;         //  STRING: bytes; ARRAY, OBJECT: elements
    size_t cap;         //  ARRAY, OBJECT: allocated slots
    zi_json_t **items;  //  ARRAY
    s_member_t *members;    //  OBJECT, in insertion order
    uint32_t *index;    //  OBJECT: open-addressing hash of member+1
    size_t index_cap;   //  slots in index (a power of two), or 0
};

//  Objects up to this many members are searched linearly; larger ones get
//  a hash index so that neither duplicate detection while parsing nor
//  lookups turn quadratic on a hostile document with a million keys.
#define S_INDEX_MIN 8
#define S_NOT_FOUND SIZE_MAX

static zi_json_t *
s_node_new (zi_json_type_t type)
{
    zi_json_t *self = (zi_json_t *) calloc (1, sizeof *self);
    if (self) {
        self->type = type;
    }
    return self;
}

static void
s_node_free (zi_json_t *self)
{
    if (!self) {
        return;
    }
    if (self->type == ZI_JSON_ARRAY) {
        for (size_t i = 0; i < self->len; i++) {
            s_node_free (self->items[i]);
        }
        free (self->items);
    }
    else if (self->type == ZI_JSON_OBJECT) {
        for (size_t i = 0; i < self->len; i++) {
            free (self->members[i].key);
            s_node_free (self->members[i].value);
        }
        free (self->members);
        free (self->index);
    }
    else if (self->type == ZI_JSON_STRING) {
        free (self->str);
    }
    free (self);
}

void
zi_json_destroy (zi_json_t **self_p)
{
    if (self_p && *self_p) {
        s_node_free (*self_p);
        *self_p = NULL;
    }
}

//  Make room for one more element in an array or object.
static int
s_grow (zi_json_t *self)
{
    if (self->len < self->cap) {
        return 0;
    }
    size_t elem = self->type == ZI_JSON_ARRAY ? sizeof (zi_json_t *)
                                              : sizeof (s_member_t);
    size_t cap = self->cap ? self->cap : 2;
    if (cap > SIZE_MAX / 2 / elem) {
        return ZI_ERR_NOMEM;
    }
    cap *= 2;
    void *old = self->type == ZI_JSON_ARRAY ? (void *) self->items
                                            : (void *) self->members;
    void *grown = realloc (old, cap * elem);
    if (!grown) {
        return ZI_ERR_NOMEM;
    }
    if (self->type == ZI_JSON_ARRAY) {
        self->items = (zi_json_t **) grown;
    }
    else {
        self->members = (s_member_t *) grown;
    }
    self->cap = cap;
    return 0;
}

static int
s_array_push (zi_json_t *self, zi_json_t *value)
{
    int rc = s_grow (self);
    if (rc) {
        return rc;
    }
    self->items[self->len++] = value;
    return 0;
}

//  FNV-1a: simple, and good enough for keys of a configuration file.
static size_t
s_hash (const char *key, size_t len)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char) key[i];
        h *= 1099511628211ull;
    }
    return (size_t) h;
}

static void
s_index_put (uint32_t *index, size_t cap, const s_member_t *members,
             size_t member)
{
    size_t mask = cap - 1;
    size_t slot = s_hash (members[member].key, members[member].key_len) & mask;
    while (index[slot]) {
        slot = (slot + 1) & mask;
    }
    index[slot] = (uint32_t) (member + 1);
}

static size_t
s_object_find (const zi_json_t *self, const char *key, size_t len)
{
    if (self->index) {
        size_t mask = self->index_cap - 1;
        //  The table is at most half full, so an empty slot ends the probe.
        for (size_t slot = s_hash (key, len) & mask;; slot = (slot + 1) & mask) {
            uint32_t m = self->index[slot];
            if (m == 0) {
                return S_NOT_FOUND;
            }
            const s_member_t *member = &self->members[m - 1];
            if (member->key_len == len && memcmp (member->key, key, len) == 0) {
                return m - 1;
            }
        }
    }
    for (size_t i = 0; i < self->len; i++) {
        if (self->members[i].key_len == len
            && memcmp (self->members[i].key, key, len) == 0) {
            return i;
        }
    }
    return S_NOT_FOUND;
}

//  Append a member; takes key (malloc'ed) and value on success only.
static int
s_object_push (zi_json_t *self, char *key, size_t key_len, zi_json_t *value)
{
    size_t need = self->len + 1;
    if (need >= UINT32_MAX / 4) {
        return ZI_ERR_NOMEM;
    }
    int rc = s_grow (self);
    if (rc) {
        return rc;
    }
    if (need > S_INDEX_MIN && need * 2 > self->index_cap) {
        size_t cap = self->index_cap ? self->index_cap * 2 : 32;
        while (cap < need * 2) {
            cap *= 2;
        }
        uint32_t *index = (uint32_t *) calloc (cap, sizeof *index);
        if (!index) {
            return ZI_ERR_NOMEM;
        }
        for (size_t i = 0; i < self->len; i++) {
            s_index_put (index, cap, self->members, i);
        }
        free (self->index);
        self->index = index;
        self->index_cap = cap;
    }
    self->members[self->len].key = key;
    self->members[self->len].key_len = key_len;
    self->members[self->len].value = value;
    if (self->index) {
        s_index_put (self->index, self->index_cap, self->members, self->len);
    }
    self->len++;
    return 0;
}

//  Length of the valid UTF-8 sequence (RFC 3629: no overlongs, no
//  surrogates, nothing above U+10FFFF) at s, or 0 if it is not one.
static size_t
s_utf8_seq (const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        return 1;
    }
    size_t more;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        more = 1;
    }
    else if (c == 0xE0) {
        more = 2;
        lo = 0xA0;
    }
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
        more = 2;
    }
    else if (c == 0xED) {
        more = 2;
        hi = 0x9F;
    }
    else if (c == 0xF0) {
        more = 3;
        lo = 0x90;
    }
    else if (c >= 0xF1 && c <= 0xF3) {
        more = 3;
    }
    else if (c == 0xF4) {
        more = 3;
        hi = 0x8F;
    }
    else {
        return 0;
    }
    if (n < more + 1 || s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (size_t k = 2; k <= more; k++) {
        if ((s[k] & 0xC0) != 0x80) {
            return 0;
        }
    }
    return more + 1;
}

static size_t
s_utf8_put (char *out, uint32_t cp)
{
    unsigned char *o = (unsigned char *) out;
    if (cp < 0x80) {
        o[0] = (unsigned char) cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char) (0xC0 | (cp >> 6));
        o[1] = (unsigned char) (0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char) (0xE0 | (cp >> 12));
        o[1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char) (0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char) (0xF0 | (cp >> 18));
    o[1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char) (0x80 | (cp & 0x3F));
    return 4;
}

//  True (and the integer in *out) when d is integral and in int64 range.
static bool
s_double_int (double d, int64_t *out)
{
    //  2^63 is exact as a double; the cast is only defined inside the range.
    if (!isfinite (d) || d != trunc (d) || d < -9223372036854775808.0
        || d >= 9223372036854775808.0) {
        return false;
    }
    *out = (int64_t) d;
    return true;
}

//  strtod reads the C locale's '.' only while LC_NUMERIC is "C"; a program
//  that called setlocale would otherwise have "0.5" read as 0. Swap '.' for
//  the locale's radix in a private copy instead of touching global state.
static int
s_strtod (const char *s, size_t n, double *out)
{
    const char *radix = localeconv ()->decimal_point;
    size_t rlen = radix ? strlen (radix) : 0;
    if (rlen == 0) {
        radix = ".";
        rlen = 1;
    }
    if (n > SIZE_MAX / 2 - rlen * 2) {
        return ZI_ERR_NOMEM;
    }
    char local[64];
    size_t need = n + rlen + 1;
    char *copy = need <= sizeof local ? local : (char *) malloc (need);
    if (!copy) {
        return ZI_ERR_NOMEM;
    }
    size_t o = 0;
    bool dot_done = false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.' && !dot_done) {
            memcpy (copy + o, radix, rlen);
            o += rlen;
            dot_done = true;
        }
        else {
            copy[o++] = s[i];
        }
    }
    copy[o] = 0;
    char *end = NULL;
    errno = 0;
    double d = strtod (copy, &end);
    bool whole = end == copy + o;
    if (copy != local) {
        free (copy);
    }
    if (!whole) {
        return ZI_ERR_MALFORMED;
    }
    *out = d;
    return 0;
}

//  =====================================================================
//  Parser

typedef struct {
    const unsigned char *buf;
    size_t len;
    size_t pos;
    size_t line;            //  1-based line of pos
    size_t line_start;      //  offset of the first byte of that line
    const char *source;
    int max_depth;
    size_t max_string;
    size_t max_nodes;
    size_t nodes;
    char *err;
    size_t errlen;
} s_parser_t;

static int
s_perror (s_parser_t *p, size_t at, int code, const char *fmt, ...)
    __attribute__ ((format (printf, 4, 5)));

static int
s_perror (s_parser_t *p, size_t at, int code, const char *fmt, ...)
{
    if (p->err && p->errlen > 0) {
        //  Errors are raised on the line being scanned: strings and numbers
        //  cannot span lines, so at >= line_start.
        size_t column = at >= p->line_start ? at - p->line_start + 1 : 1;
        int n = snprintf (p->err, p->errlen, "%s:%zu:%zu: ", p->source,
                          p->line, column);
        if (n >= 0 && (size_t) n < p->errlen) {
            va_list ap;
            va_start (ap, fmt);
            vsnprintf (p->err + n, p->errlen - (size_t) n, fmt, ap);
            va_end (ap);
        }
    }
    return code;
}

//  Describe the byte at `at` for "found ..." in messages.
static const char *
s_found (const s_parser_t *p, size_t at, char *buf, size_t len)
{
    if (at >= p->len) {
        return "end of input";
    }
    unsigned char c = p->buf[at];
    if (c > 0x20 && c < 0x7F) {
        snprintf (buf, len, "'%c'", c);
    }
    else {
        snprintf (buf, len, "byte 0x%02X", c);
    }
    return buf;
}

static void
s_skip_ws (s_parser_t *p)
{
    while (p->pos < p->len) {
        unsigned char c = p->buf[p->pos];
        if (c == '\n') {
            p->pos++;
            p->line++;
            p->line_start = p->pos;
        }
        else if (c == ' ' || c == '\t' || c == '\r') {
            p->pos++;
        }
        else {
            break;
        }
    }
}

//  Every value costs a node; count them so a document of "[0,0,0,..."
//  cannot turn 16 MiB of input into gigabytes of nodes.
static int
s_pnode (s_parser_t *p, zi_json_type_t type, zi_json_t **out)
{
    if (p->nodes >= p->max_nodes) {
        return s_perror (p, p->pos, ZI_ERR_LIMIT,
                         "more than %zu values in the document", p->max_nodes);
    }
    *out = s_node_new (type);
    if (!*out) {
        return s_perror (p, p->pos, ZI_ERR_NOMEM, "out of memory");
    }
    p->nodes++;
    return 0;
}

static int
s_hex4 (const unsigned char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= (uint32_t) (c - '0');
        }
        else if (c >= 'a' && c <= 'f') {
            v |= (uint32_t) (c - 'a' + 10);
        }
        else if (c >= 'A' && c <= 'F') {
            v |= (uint32_t) (c - 'A' + 10);
        }
        else {
            return -1;
        }
    }
    *out = v;
    return 0;
}

//  Parse the string starting at the '"' under pos into a new buffer.
static int
s_parse_string (s_parser_t *p, char **out, size_t *out_len)
{
    size_t start = p->pos;
    //  Find the closing quote first: the decoded string is never longer
    //  than the raw bytes between the quotes, so that bounds the buffer by
    //  what the input really holds.
    size_t end = start + 1;
    while (end < p->len && p->buf[end] != '"') {
        end += p->buf[end] == '\\' ? 2 : 1;
    }
    if (end >= p->len) {
        return s_perror (p, start, ZI_ERR_MALFORMED, "unterminated string");
    }
    size_t raw = end - start - 1;
    if (raw > p->max_string) {
        return s_perror (p, start, ZI_ERR_LIMIT,
                         "string longer than %zu bytes", p->max_string);
    }
    char *s = (char *) malloc (raw + 1);
    if (!s) {
        return s_perror (p, start, ZI_ERR_NOMEM, "out of memory");
    }
    const unsigned char *b = p->buf;
    size_t o = 0;
    size_t j = start + 1;
    while (j < end) {
        unsigned char c = b[j];
        if (c == '\\') {
            //  The scan above stepped over escapes in pairs, so j+1 < end.
            unsigned char e = b[j + 1];
            const char *simple = NULL;
            switch (e) {
                case '"': simple = "\""; break;
                case '\\': simple = "\\"; break;
                case '/': simple = "/"; break;
                case 'b': simple = "\b"; break;
                case 'f': simple = "\f"; break;
                case 'n': simple = "\n"; break;
                case 'r': simple = "\r"; break;
                case 't': simple = "\t"; break;
                default: break;
            }
            if (simple) {
                s[o++] = simple[0];
                j += 2;
                continue;
            }
            if (e != 'u') {
                free (s);
                if (e > 0x20 && e < 0x7F) {
                    return s_perror (p, j, ZI_ERR_MALFORMED,
                                     "invalid escape '\\%c' in string", e);
                }
                return s_perror (p, j, ZI_ERR_MALFORMED,
                                 "invalid escape: '\\' followed by byte 0x%02X", e);
            }
            uint32_t cp;
            if (end - j < 6 || s_hex4 (b + j + 2, &cp)) {
                free (s);
                return s_perror (p, j, ZI_ERR_MALFORMED,
                                 "invalid \\u escape: expected 4 hex digits");
            }
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                free (s);
                return s_perror (p, j, ZI_ERR_MALFORMED,
                                 "unpaired surrogate \\u%04X in string", cp);
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t low;
                if (end - j < 12 || b[j + 6] != '\\' || b[j + 7] != 'u'
                    || s_hex4 (b + j + 8, &low) || low < 0xDC00 || low > 0xDFFF) {
                    free (s);
                    return s_perror (p, j, ZI_ERR_MALFORMED,
                                     "unpaired surrogate \\u%04X in string", cp);
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                j += 6;
            }
            j += 6;
            o += s_utf8_put (s + o, cp);
        }
        else if (c < 0x20) {
            free (s);
            return s_perror (p, j, ZI_ERR_MALFORMED,
                             "control character 0x%02X in string (write it as "
                             "an escape)", c);
        }
        else if (c < 0x80) {
            s[o++] = (char) c;
            j++;
        }
        else {
            size_t n = s_utf8_seq (b + j, end - j);
            if (n == 0) {
                free (s);
                return s_perror (p, j, ZI_ERR_MALFORMED,
                                 "invalid UTF-8 byte 0x%02X in string", c);
            }
            memcpy (s + o, b + j, n);
            o += n;
            j += n;
        }
    }
    s[o] = 0;
    p->pos = end + 1;
    *out = s;
    *out_len = o;
    return 0;
}

static bool
s_is_digit (const s_parser_t *p, size_t at)
{
    return at < p->len && p->buf[at] >= '0' && p->buf[at] <= '9';
}

static int
s_parse_number (s_parser_t *p, zi_json_t **out)
{
    size_t start = p->pos;
    size_t j = start;
    bool negative = false;
    bool integer = true;
    if (p->buf[j] == '-') {
        negative = true;
        j++;
    }
    if (!s_is_digit (p, j)) {
        char f[16];
        return s_perror (p, j, ZI_ERR_MALFORMED,
                         "expected a digit after '-', found %s",
                         s_found (p, j, f, sizeof f));
    }
    if (p->buf[j] == '0') {
        j++;
        if (s_is_digit (p, j)) {
            return s_perror (p, start, ZI_ERR_MALFORMED,
                             "numbers may not have leading zeros");
        }
    }
    else {
        while (s_is_digit (p, j)) {
            j++;
        }
    }
    if (j < p->len && p->buf[j] == '.') {
        integer = false;
        j++;
        if (!s_is_digit (p, j)) {
            char f[16];
            return s_perror (p, j, ZI_ERR_MALFORMED,
                             "expected a digit after '.', found %s",
                             s_found (p, j, f, sizeof f));
        }
        while (s_is_digit (p, j)) {
            j++;
        }
    }
    if (j < p->len && (p->buf[j] == 'e' || p->buf[j] == 'E')) {
        integer = false;
        j++;
        if (j < p->len && (p->buf[j] == '+' || p->buf[j] == '-')) {
            j++;
        }
        if (!s_is_digit (p, j)) {
            char f[16];
            return s_perror (p, j, ZI_ERR_MALFORMED,
                             "expected a digit in the exponent, found %s",
                             s_found (p, j, f, sizeof f));
        }
        while (s_is_digit (p, j)) {
            j++;
        }
    }
    const char *token = (const char *) p->buf + start;
    size_t token_len = j - start;
    double d = 0;
    int rc = s_strtod (token, token_len, &d);
    if (rc == ZI_ERR_NOMEM) {
        return s_perror (p, start, rc, "out of memory");
    }
    if (rc || !isfinite (d)) {
        int shown = token_len > 24 ? 24 : (int) token_len;
        return s_perror (p, start, ZI_ERR_LIMIT, "number %.*s%s is out of range", shown,
                         token, token_len > 24 ? "..." : "");
    }
    zi_json_t *node;
    rc = s_pnode (p, ZI_JSON_NUMBER, &node);
    if (rc) {
        return rc;
    }
    node->num = d;
    if (integer) {
        //  Convert integer literals digit by digit: going through a double
        //  would round anything beyond 2^53.
        uint64_t limit = negative ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
        uint64_t v = 0;
        bool fits = true;
        for (size_t k = negative ? 1 : 0; k < token_len; k++) {
            uint64_t digit = (uint64_t) (token[k] - '0');
            if (v > (limit - digit) / 10) {
                fits = false;
                break;
            }
            v = v * 10 + digit;
        }
        if (fits) {
            node->is_int = true;
            node->int_form = true;
            node->ival = negative ? (v == (uint64_t) INT64_MAX + 1 ? INT64_MIN
                                                                  : -(int64_t) v)
                                  : (int64_t) v;
        }
    }
    if (!node->is_int) {
        node->is_int = s_double_int (d, &node->ival);
    }
    p->pos = j;
    *out = node;
    return 0;
}

static int s_parse_value (s_parser_t *p, int depth, const char *context,
                          zi_json_t **out);

static int
s_parse_array (s_parser_t *p, int depth, zi_json_t **out)
{
    size_t at = p->pos;
    if (depth >= p->max_depth) {
        return s_perror (p, at, ZI_ERR_LIMIT, "nesting deeper than %d levels",
                         p->max_depth);
    }
    zi_json_t *node;
    int rc = s_pnode (p, ZI_JSON_ARRAY, &node);
    if (rc) {
        return rc;
    }
    p->pos++;
    s_skip_ws (p);
    if (p->pos < p->len && p->buf[p->pos] == ']') {
        p->pos++;
        *out = node;
        return 0;
    }
    for (bool first = true;; first = false) {
        zi_json_t *value = NULL;
        rc = s_parse_value (p, depth + 1, first ? " or ']'" : " after ','", &value);
        if (rc) {
            s_node_free (node);
            return rc;
        }
        if (s_array_push (node, value)) {
            s_node_free (value);
            s_node_free (node);
            return s_perror (p, p->pos, ZI_ERR_NOMEM, "out of memory");
        }
        s_skip_ws (p);
        if (p->pos < p->len && p->buf[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->buf[p->pos] == ']') {
            p->pos++;
            break;
        }
        char f[16];
        s_node_free (node);
        return s_perror (p, p->pos, ZI_ERR_MALFORMED,
                         "expected ',' or ']' after array element, found %s",
                         s_found (p, p->pos, f, sizeof f));
    }
    *out = node;
    return 0;
}

//  Quote a key for a message: printable ASCII kept, the rest escaped, long
//  keys cut short.
static const char *
s_quote_key (const char *key, size_t len, char *buf, size_t size)
{
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; i < len && o + 8 < size; i++) {
        unsigned char c = (unsigned char) key[i];
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
            buf[o++] = (char) c;
        }
        else {
            o += (size_t) snprintf (buf + o, size - o, "\\x%02X", c);
        }
        if (i + 1 < len && o + 8 >= size) {
            memcpy (buf + o, "...", 3);
            o += 3;
            break;
        }
    }
    buf[o++] = '"';
    buf[o] = 0;
    return buf;
}

static int
s_parse_object (s_parser_t *p, int depth, zi_json_t **out)
{
    size_t at = p->pos;
    if (depth >= p->max_depth) {
        return s_perror (p, at, ZI_ERR_LIMIT, "nesting deeper than %d levels",
                         p->max_depth);
    }
    zi_json_t *node;
    int rc = s_pnode (p, ZI_JSON_OBJECT, &node);
    if (rc) {
        return rc;
    }
    p->pos++;
    s_skip_ws (p);
    if (p->pos < p->len && p->buf[p->pos] == '}') {
        p->pos++;
        *out = node;
        return 0;
    }
    for (bool first = true;; first = false) {
        char f[16];
        s_skip_ws (p);
        if (p->pos >= p->len || p->buf[p->pos] != '"') {
            s_node_free (node);
            return s_perror (p, p->pos, ZI_ERR_MALFORMED, "expected %s, found %s",
                             first ? "a string key or '}'" : "a string key after ','",
                             s_found (p, p->pos, f, sizeof f));
        }
        size_t key_at = p->pos;
        char *key = NULL;
        size_t key_len = 0;
        rc = s_parse_string (p, &key, &key_len);
        if (rc) {
            s_node_free (node);
            return rc;
        }
        if (s_object_find (node, key, key_len) != S_NOT_FOUND) {
            char q[80];
            s_quote_key (key, key_len, q, sizeof q);
            free (key);
            s_node_free (node);
            return s_perror (p, key_at, ZI_ERR_MALFORMED,
                             "duplicate key %s in object", q);
        }
        s_skip_ws (p);
        if (p->pos >= p->len || p->buf[p->pos] != ':') {
            free (key);
            s_node_free (node);
            return s_perror (p, p->pos, ZI_ERR_MALFORMED,
                             "expected ':' after object key, found %s",
                             s_found (p, p->pos, f, sizeof f));
        }
        p->pos++;
        zi_json_t *value = NULL;
        rc = s_parse_value (p, depth + 1, " after ':'", &value);
        if (rc) {
            free (key);
            s_node_free (node);
            return rc;
        }
        if (s_object_push (node, key, key_len, value)) {
            free (key);
            s_node_free (value);
            s_node_free (node);
            return s_perror (p, p->pos, ZI_ERR_NOMEM, "out of memory");
        }
        s_skip_ws (p);
        if (p->pos < p->len && p->buf[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->buf[p->pos] == '}') {
            p->pos++;
            break;
        }
        s_node_free (node);
        return s_perror (p, p->pos, ZI_ERR_MALFORMED,
                         "expected ',' or '}' after object member, found %s",
                         s_found (p, p->pos, f, sizeof f));
    }
    *out = node;
    return 0;
}

static int
s_parse_literal (s_parser_t *p, const char *word, zi_json_type_t type,
                 bool value, zi_json_t **out)
{
    size_t n = strlen (word);
    if (p->len - p->pos < n || memcmp (p->buf + p->pos, word, n) != 0) {
        return s_perror (p, p->pos, ZI_ERR_MALFORMED,
                         "invalid literal (expected '%s')", word);
    }
    int rc = s_pnode (p, type, out);
    if (rc) {
        return rc;
    }
    (*out)->boolean = value;
    p->pos += n;
    return 0;
}

//  depth: containers around this value. context completes "expected a
//  value..." when no value starts here.
static int
s_parse_value (s_parser_t *p, int depth, const char *context, zi_json_t **out)
{
    s_skip_ws (p);
    if (p->pos < p->len) {
        unsigned char c = p->buf[p->pos];
        if (c == '{') {
            return s_parse_object (p, depth, out);
        }
        if (c == '[') {
            return s_parse_array (p, depth, out);
        }
        if (c == '"') {
            char *s = NULL;
            size_t len = 0;
            if (p->nodes >= p->max_nodes) {
                return s_pnode (p, ZI_JSON_STRING, out);
            }
            int rc = s_parse_string (p, &s, &len);
            if (rc) {
                return rc;
            }
            rc = s_pnode (p, ZI_JSON_STRING, out);
            if (rc) {
                free (s);
                return rc;
            }
            (*out)->str = s;
            (*out)->len = len;
            return 0;
        }
        if (c == '-' || (c >= '0' && c <= '9')) {
            return s_parse_number (p, out);
        }
        if (c == 't') {
            return s_parse_literal (p, "true", ZI_JSON_BOOL, true, out);
        }
        if (c == 'f') {
            return s_parse_literal (p, "false", ZI_JSON_BOOL, false, out);
        }
        if (c == 'n') {
            return s_parse_literal (p, "null", ZI_JSON_NULL, false, out);
        }
    }
    char f[16];
    return s_perror (p, p->pos, ZI_ERR_MALFORMED, "expected a value%s, found %s",
                     context, s_found (p, p->pos, f, sizeof f));
}

int
zi_json_parse (const char *buf, size_t len, const zi_json_opts_t *opts,
               zi_json_t **out, char *err, size_t errlen)
{
    if (err && errlen) {
        err[0] = 0;
    }
    if (!out) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "zi_json_parse: out is NULL");
    }
    *out = NULL;
    if (!buf && len) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "zi_json_parse: buf is NULL");
    }
    zi_json_opts_t o = opts ? *opts : (zi_json_opts_t) {0};
    s_parser_t p = {
        .buf = (const unsigned char *) buf,
        .len = len,
        .line = 1,
        .source = o.source ? o.source : "<json>",
        .max_depth = o.max_depth > 0 ? o.max_depth : ZI_JSON_DEFAULT_DEPTH,
        .max_string = o.max_string ? o.max_string : ZI_JSON_DEFAULT_STRING,
        .max_nodes = o.max_nodes ? o.max_nodes : ZI_JSON_DEFAULT_NODES,
        .err = err,
        .errlen = errlen,
    };
    //  The parser recurses once per level; this cap keeps the stack small
    //  whatever a caller asks for.
    if (p.max_depth > ZI_JSON_MAX_DEPTH) {
        p.max_depth = ZI_JSON_MAX_DEPTH;
    }
    size_t max_input = o.max_input ? o.max_input : ZI_JSON_DEFAULT_INPUT;
    if (len > max_input) {
        return zi_fail (err, errlen, ZI_ERR_LIMIT,
                        "%s: input is %zu bytes, more than the limit of %zu",
                        p.source, len, max_input);
    }
    if (len >= 3 && memcmp (buf, "\xEF\xBB\xBF", 3) == 0) {
        p.pos = p.line_start = 3;
    }
    zi_json_t *root = NULL;
    int rc = s_parse_value (&p, 0, "", &root);
    if (rc) {
        return rc;
    }
    s_skip_ws (&p);
    if (p.pos < p.len) {
        char f[16];
        s_node_free (root);
        return s_perror (&p, p.pos, ZI_ERR_MALFORMED,
                         "expected end of input after the value, found %s",
                         s_found (&p, p.pos, f, sizeof f));
    }
    *out = root;
    return 0;
}

int
zi_json_parse_file (const char *path, const zi_json_opts_t *opts,
                    zi_json_t **out, char *err, size_t errlen)
{
    if (!out || !path) {
        return zi_fail (err, errlen, ZI_ERR_INVALID,
                        "zi_json_parse_file: NULL argument");
    }
    *out = NULL;
    zi_json_opts_t o = opts ? *opts : (zi_json_opts_t) {0};
    if (!o.source) {
        o.source = path;
    }
    size_t max_input = o.max_input ? o.max_input : ZI_JSON_DEFAULT_INPUT;
    FILE *file = fopen (path, "rb");
    if (!file) {
        return zi_fail (err, errlen, ZI_ERR_IO, "%s: cannot open: %s", path,
                        strerror (errno));
    }
    //  Grow with what is actually read rather than trusting st_size: the
    //  file may be a pipe, or change while we read it.
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len == cap) {
            if (cap > max_input) {
                rc = zi_fail (err, errlen, ZI_ERR_LIMIT,
                              "%s: file is more than the limit of %zu bytes",
                              path, max_input);
                break;
            }
            size_t grown = cap ? cap * 2 : 4096;
            if (grown > max_input + 1) {
                grown = max_input + 1;
            }
            char *bigger = (char *) realloc (buf, grown);
            if (!bigger) {
                rc = zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            buf = bigger;
            cap = grown;
        }
        size_t n = fread (buf + len, 1, cap - len, file);
        len += n;
        if (n == 0) {
            if (ferror (file)) {
                rc = zi_fail (err, errlen, ZI_ERR_IO, "%s: read failed: %s",
                              path, strerror (errno));
            }
            break;
        }
    }
    fclose (file);
    if (rc == 0 && len > max_input) {
        rc = zi_fail (err, errlen, ZI_ERR_LIMIT,
                      "%s: file is more than the limit of %zu bytes", path,
                      max_input);
    }
    if (rc == 0) {
        rc = zi_json_parse (buf, len, &o, out, err, errlen);
    }
    free (buf);
    return rc;
}

//  =====================================================================
//  Access

zi_json_type_t
zi_json_type (const zi_json_t *self)
{
    return self ? self->type : ZI_JSON_NONE;
}

const char *
zi_json_type_name (zi_json_type_t type)
{
    switch (type) {
        case ZI_JSON_NULL: return "null";
        case ZI_JSON_BOOL: return "boolean";
        case ZI_JSON_NUMBER: return "number";
        case ZI_JSON_STRING: return "string";
        case ZI_JSON_ARRAY: return "array";
        case ZI_JSON_OBJECT: return "object";
        default: return "none";
    }
}

zi_json_t *
zi_json_get (const zi_json_t *self, const char *key)
{
    if (!self || !key || self->type != ZI_JSON_OBJECT) {
        return NULL;
    }
    size_t i = s_object_find (self, key, strlen (key));
    return i == S_NOT_FOUND ? NULL : self->members[i].value;
}

zi_json_t *
zi_json_at (const zi_json_t *self, size_t i)
{
    if (!self || i >= self->len) {
        return NULL;
    }
    if (self->type == ZI_JSON_ARRAY) {
        return self->items[i];
    }
    if (self->type == ZI_JSON_OBJECT) {
        return self->members[i].value;
    }
    return NULL;
}

const char *
zi_json_key_at (const zi_json_t *self, size_t i)
{
    if (!self || self->type != ZI_JSON_OBJECT || i >= self->len) {
        return NULL;
    }
    return self->members[i].key;
}

size_t
zi_json_size (const zi_json_t *self)
{
    if (self && (self->type == ZI_JSON_ARRAY || self->type == ZI_JSON_OBJECT)) {
        return self->len;
    }
    return 0;
}

const char *
zi_json_str (const zi_json_t *self)
{
    return self && self->type == ZI_JSON_STRING ? self->str : NULL;
}

size_t
zi_json_str_len (const zi_json_t *self)
{
    return self && self->type == ZI_JSON_STRING ? self->len : 0;
}

double
zi_json_num (const zi_json_t *self)
{
    return self && self->type == ZI_JSON_NUMBER ? self->num : NAN;
}

bool
zi_json_is_int (const zi_json_t *self)
{
    return self && self->type == ZI_JSON_NUMBER && self->is_int;
}

int
zi_json_int (const zi_json_t *self, int64_t min, int64_t max, int64_t *value)
{
    if (!zi_json_is_int (self)) {
        return ZI_ERR_INVALID;
    }
    if (self->ival < min || self->ival > max) {
        return ZI_ERR_LIMIT;
    }
    if (value) {
        *value = self->ival;
    }
    return 0;
}

bool
zi_json_bool (const zi_json_t *self)
{
    return self && self->type == ZI_JSON_BOOL && self->boolean;
}

static int
s_num_cmp (const zi_json_t *a, const zi_json_t *b)
{
    if (a->is_int && b->is_int) {
        return a->ival < b->ival ? -1 : a->ival > b->ival;
    }
    return a->num < b->num ? -1 : a->num > b->num;
}

bool
zi_json_equal (const zi_json_t *a, const zi_json_t *b)
{
    if (!a || !b) {
        return a == b;
    }
    if (a->type != b->type) {
        return false;
    }
    switch (a->type) {
        case ZI_JSON_NULL: return true;
        case ZI_JSON_BOOL: return a->boolean == b->boolean;
        case ZI_JSON_NUMBER: return s_num_cmp (a, b) == 0;
        case ZI_JSON_STRING:
            return a->len == b->len && memcmp (a->str, b->str, a->len) == 0;
        case ZI_JSON_ARRAY:
            if (a->len != b->len) {
                return false;
            }
            for (size_t i = 0; i < a->len; i++) {
                if (!zi_json_equal (a->items[i], b->items[i])) {
                    return false;
                }
            }
            return true;
        case ZI_JSON_OBJECT:
            if (a->len != b->len) {
                return false;
            }
            //  Keys are unique, so equal counts plus "every key of a is in b
            //  with an equal value" is equality.
            for (size_t i = 0; i < a->len; i++) {
                size_t j = s_object_find (b, a->members[i].key, a->members[i].key_len);
                if (j == S_NOT_FOUND
                    || !zi_json_equal (a->members[i].value, b->members[j].value)) {
                    return false;
                }
            }
            return true;
        default: return false;
    }
}

//  =====================================================================
//  Building

zi_json_t *
zi_json_new_null (void)
{
    return s_node_new (ZI_JSON_NULL);
}

zi_json_t *
zi_json_new_bool (bool value)
{
    zi_json_t *self = s_node_new (ZI_JSON_BOOL);
    if (self) {
        self->boolean = value;
    }
    return self;
}

zi_json_t *
zi_json_new_int (int64_t value)
{
    zi_json_t *self = s_node_new (ZI_JSON_NUMBER);
    if (self) {
        self->is_int = true;
        self->int_form = true;
        self->ival = value;
        self->num = (double) value;
    }
    return self;
}

zi_json_t *
zi_json_new_double (double value)
{
    if (!isfinite (value)) {
        return NULL;
    }
    zi_json_t *self = s_node_new (ZI_JSON_NUMBER);
    if (self) {
        self->num = value;
        self->is_int = s_double_int (value, &self->ival);
    }
    return self;
}

zi_json_t *
zi_json_new_stringn (const char *value, size_t len)
{
    if (!value || len == SIZE_MAX) {
        return NULL;
    }
    zi_json_t *self = s_node_new (ZI_JSON_STRING);
    if (!self) {
        return NULL;
    }
    self->str = (char *) malloc (len + 1);
    if (!self->str) {
        free (self);
        return NULL;
    }
    memcpy (self->str, value, len);
    self->str[len] = 0;
    self->len = len;
    return self;
}

zi_json_t *
zi_json_new_string (const char *value)
{
    return value ? zi_json_new_stringn (value, strlen (value)) : NULL;
}

zi_json_t *
zi_json_new_array (void)
{
    return s_node_new (ZI_JSON_ARRAY);
}

zi_json_t *
zi_json_new_object (void)
{
    return s_node_new (ZI_JSON_OBJECT);
}

zi_json_t *
zi_json_dup (const zi_json_t *self)
{
    if (!self) {
        return NULL;
    }
    if (self->type == ZI_JSON_STRING) {
        return zi_json_new_stringn (self->str, self->len);
    }
    zi_json_t *copy = s_node_new (self->type);
    if (!copy) {
        return NULL;
    }
    copy->boolean = self->boolean;
    copy->is_int = self->is_int;
    copy->int_form = self->int_form;
    copy->ival = self->ival;
    copy->num = self->num;
    for (size_t i = 0; i < zi_json_size (self); i++) {
        zi_json_t *value = zi_json_dup (zi_json_at (self, i));
        int rc = value ? 0 : ZI_ERR_NOMEM;
        if (rc == 0 && self->type == ZI_JSON_ARRAY) {
            rc = s_array_push (copy, value);
        }
        else if (rc == 0) {
            const s_member_t *m = &self->members[i];
            char *key = (char *) malloc (m->key_len + 1);
            rc = key ? 0 : ZI_ERR_NOMEM;
            if (key) {
                memcpy (key, m->key, m->key_len + 1);
                rc = s_object_push (copy, key, m->key_len, value);
                if (rc) {
                    free (key);
                }
            }
        }
        if (rc) {
            s_node_free (value);
            s_node_free (copy);
            return NULL;
        }
    }
    return copy;
}

int
zi_json_append (zi_json_t *self, zi_json_t **value_p)
{
    if (!self || self->type != ZI_JSON_ARRAY || !value_p || !*value_p) {
        return ZI_ERR_INVALID;
    }
    int rc = s_array_push (self, *value_p);
    if (rc == 0) {
        *value_p = NULL;
    }
    return rc;
}

int
zi_json_set (zi_json_t *self, const char *key, zi_json_t **value_p)
{
    if (!self || self->type != ZI_JSON_OBJECT || !key || !value_p || !*value_p) {
        return ZI_ERR_INVALID;
    }
    size_t len = strlen (key);
    size_t i = s_object_find (self, key, len);
    if (i != S_NOT_FOUND) {
        s_node_free (self->members[i].value);
        self->members[i].value = *value_p;
        *value_p = NULL;
        return 0;
    }
    char *copy = (char *) malloc (len + 1);
    if (!copy) {
        return ZI_ERR_NOMEM;
    }
    memcpy (copy, key, len + 1);
    int rc = s_object_push (self, copy, len, *value_p);
    if (rc) {
        free (copy);
        return rc;
    }
    *value_p = NULL;
    return 0;
}

//  Insert a freshly built value (NULL: the constructor failed) as member
//  key, or append it when key is NULL; free it if that fails, so the
//  shorthands never leak.
static int
s_insert_new (zi_json_t *self, const char *key, zi_json_t *value)
{
    if (!value) {
        return ZI_ERR_NOMEM;
    }
    int rc = key ? zi_json_set (self, key, &value) : zi_json_append (self, &value);
    zi_json_destroy (&value);
    return rc;
}

int
zi_json_set_str (zi_json_t *self, const char *key, const char *value)
{
    if (!key || !value) {
        return ZI_ERR_INVALID;
    }
    return s_insert_new (self, key, zi_json_new_string (value));
}

int
zi_json_set_int (zi_json_t *self, const char *key, int64_t value)
{
    if (!key) {
        return ZI_ERR_INVALID;
    }
    return s_insert_new (self, key, zi_json_new_int (value));
}

int
zi_json_set_double (zi_json_t *self, const char *key, double value)
{
    if (!key || !isfinite (value)) {
        return ZI_ERR_INVALID;
    }
    return s_insert_new (self, key, zi_json_new_double (value));
}

int
zi_json_set_bool (zi_json_t *self, const char *key, bool value)
{
    if (!key) {
        return ZI_ERR_INVALID;
    }
    return s_insert_new (self, key, zi_json_new_bool (value));
}

int
zi_json_append_str (zi_json_t *self, const char *value)
{
    if (!value) {
        return ZI_ERR_INVALID;
    }
    return s_insert_new (self, NULL, zi_json_new_string (value));
}

int
zi_json_append_int (zi_json_t *self, int64_t value)
{
    return s_insert_new (self, NULL, zi_json_new_int (value));
}

int
zi_json_append_double (zi_json_t *self, double value)
{
    if (!isfinite (value)) {
        return ZI_ERR_INVALID;
    }
    return s_insert_new (self, NULL, zi_json_new_double (value));
}

static zi_json_t *
s_add_container (zi_json_t *self, const char *key, zi_json_type_t type)
{
    zi_json_t *child = s_node_new (type);
    zi_json_t *borrowed = child;
    if (!child) {
        return NULL;
    }
    int rc = key ? zi_json_set (self, key, &child) : zi_json_append (self, &child);
    if (rc) {
        zi_json_destroy (&child);
        return NULL;
    }
    return borrowed;
}

zi_json_t *
zi_json_set_object (zi_json_t *self, const char *key)
{
    return key ? s_add_container (self, key, ZI_JSON_OBJECT) : NULL;
}

zi_json_t *
zi_json_set_array (zi_json_t *self, const char *key)
{
    return key ? s_add_container (self, key, ZI_JSON_ARRAY) : NULL;
}

zi_json_t *
zi_json_append_object (zi_json_t *self)
{
    return s_add_container (self, NULL, ZI_JSON_OBJECT);
}

zi_json_t *
zi_json_append_array (zi_json_t *self)
{
    return s_add_container (self, NULL, ZI_JSON_ARRAY);
}

//  =====================================================================
//  Writing

typedef struct {
    char *data;
    size_t len;
    size_t cap;
    bool failed;        //  sticky: one allocation failure spoils the output
} s_buf_t;

static void
s_buf_add (s_buf_t *b, const char *s, size_t n)
{
    if (b->failed) {
        return;
    }
    if (n >= SIZE_MAX - b->len) {
        b->failed = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->failed = true;
                return;
            }
            cap *= 2;
        }
        char *grown = (char *) realloc (b->data, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy (b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

static void
s_buf_str (s_buf_t *b, const char *s)
{
    s_buf_add (b, s, strlen (s));
}

static void
s_buf_indent (s_buf_t *b, size_t spaces)
{
    static const char blanks[] = "                                ";
    while (spaces > 0) {
        size_t n = spaces < sizeof blanks - 1 ? spaces : sizeof blanks - 1;
        s_buf_add (b, blanks, n);
        spaces -= n;
    }
}

//  Shortest of %.15g..%.17g that reads back as the same double, with the
//  locale's radix turned back into '.' and ".0" added so a double stays
//  recognisable as one.
static void
s_format_double (double d, char *out, size_t size)
{
    const char *radix = localeconv ()->decimal_point;
    for (int precision = 15; precision <= 17; precision++) {
        snprintf (out, size, "%.*g", precision, d);
        if (radix && radix[0] && strcmp (radix, ".") != 0) {
            char *at = strstr (out, radix);
            if (at) {
                size_t rlen = strlen (radix);
                *at = '.';
                memmove (at + 1, at + rlen, strlen (at + rlen) + 1);
            }
        }
        double back;
        if (s_strtod (out, strlen (out), &back) == 0 && back == d) {
            break;
        }
    }
    if (!strpbrk (out, ".eE")) {
        size_t n = strlen (out);
        if (n + 3 <= size) {
            memcpy (out + n, ".0", 3);
        }
    }
}

static void
s_write_string (s_buf_t *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *) s;
    s_buf_add (b, "\"", 1);
    size_t run = 0;     //  start of bytes copied verbatim
    for (size_t j = 0; j < n;) {
        unsigned char c = u[j];
        const char *esc = NULL;
        char hex[8];
        size_t step = 1;
        if (c == '"') {
            esc = "\\\"";
        }
        else if (c == '\\') {
            esc = "\\\\";
        }
        else if (c < 0x20) {
            switch (c) {
                case '\b': esc = "\\b"; break;
                case '\f': esc = "\\f"; break;
                case '\n': esc = "\\n"; break;
                case '\r': esc = "\\r"; break;
                case '\t': esc = "\\t"; break;
                default:
                    snprintf (hex, sizeof hex, "\\u%04X", c);
                    esc = hex;
            }
        }
        else if (c >= 0x80) {
            step = s_utf8_seq (u + j, n - j);
            if (step == 0) {
                esc = "\xEF\xBF\xBD";   //  U+FFFD for a byte that is not UTF-8
                step = 1;
            }
        }
        if (esc) {
            s_buf_add (b, s + run, j - run);
            s_buf_str (b, esc);
            run = j + step;
        }
        j += step;
    }
    s_buf_add (b, s + run, n - run);
    s_buf_add (b, "\"", 1);
}

static void
s_write_scalar (s_buf_t *b, const zi_json_t *v)
{
    char tmp[40];
    switch (v->type) {
        case ZI_JSON_NULL: s_buf_str (b, "null"); break;
        case ZI_JSON_BOOL: s_buf_str (b, v->boolean ? "true" : "false"); break;
        case ZI_JSON_NUMBER:
            if (v->int_form) {
                snprintf (tmp, sizeof tmp, "%" PRId64, v->ival);
            }
            else {
                s_format_double (v->num, tmp, sizeof tmp);
            }
            s_buf_str (b, tmp);
            break;
        case ZI_JSON_STRING: s_write_string (b, v->str, v->len); break;
        default: break;
    }
}

static bool
s_is_container (const zi_json_t *v)
{
    return v->type == ZI_JSON_ARRAY || v->type == ZI_JSON_OBJECT;
}

#define S_WIDTH 100

//  col: column where this value starts, for the one-line array rule.
static void
s_write (s_buf_t *b, const zi_json_t *v, bool pretty, size_t depth, size_t col)
{
    if (!s_is_container (v)) {
        s_write_scalar (b, v);
        return;
    }
    bool array = v->type == ZI_JSON_ARRAY;
    if (v->len == 0) {
        s_buf_str (b, array ? "[]" : "{}");
        return;
    }
    if (pretty) {
        //  A container of scalars (a shape, a list of names, a replica)
        //  reads best on one line: write it so, and take it back if it ends
        //  past the margin.
        bool flat = true;
        for (size_t i = 0; i < v->len && flat; i++) {
            const zi_json_t *child = array ? v->items[i] : v->members[i].value;
            flat = !s_is_container (child) || child->len == 0;
        }
        if (flat) {
            size_t mark = b->len;
            s_buf_add (b, array ? "[" : "{", 1);
            for (size_t i = 0; i < v->len; i++) {
                if (i) {
                    s_buf_add (b, ", ", 2);
                }
                if (array) {
                    s_write (b, v->items[i], pretty, depth + 1, 0);
                }
                else {
                    s_write_string (b, v->members[i].key, v->members[i].key_len);
                    s_buf_add (b, ": ", 2);
                    s_write (b, v->members[i].value, pretty, depth + 1, 0);
                }
            }
            s_buf_add (b, array ? "]" : "}", 1);
            //  +1 leaves room for the comma that may follow.
            if (b->failed || col + (b->len - mark) + 1 <= S_WIDTH) {
                return;
            }
            b->len = mark;
            b->data[mark] = 0;
        }
    }
    s_buf_add (b, array ? "[" : "{", 1);
    for (size_t i = 0; i < v->len; i++) {
        if (i) {
            s_buf_add (b, ",", 1);
        }
        size_t child_col = 0;
        if (pretty) {
            s_buf_add (b, "\n", 1);
            s_buf_indent (b, (depth + 1) * 2);
            child_col = (depth + 1) * 2;
        }
        const zi_json_t *value;
        if (array) {
            value = v->items[i];
        }
        else {
            size_t mark = b->len;
            s_write_string (b, v->members[i].key, v->members[i].key_len);
            s_buf_add (b, pretty ? ": " : ":", pretty ? 2 : 1);
            child_col += b->len - mark;
            value = v->members[i].value;
        }
        s_write (b, value, pretty, depth + 1, child_col);
    }
    if (pretty) {
        s_buf_add (b, "\n", 1);
        s_buf_indent (b, depth * 2);
    }
    s_buf_add (b, array ? "]" : "}", 1);
}

char *
zi_json_dump (const zi_json_t *self, int flags, size_t *len_p)
{
    if (!self) {
        return NULL;
    }
    s_buf_t b = {0};
    s_write (&b, self, (flags & ZI_JSON_PRETTY) != 0, 0, 0);
    if (b.failed || !b.data) {
        free (b.data);
        return NULL;
    }
    if (len_p) {
        *len_p = b.len;
    }
    return b.data;
}

int
zi_json_write_file (const zi_json_t *self, const char *path, char *err,
                    size_t errlen)
{
    if (!self || !path) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "zi_json_write_file: NULL argument");
    }
    size_t len = 0;
    char *text = zi_json_dump (self, ZI_JSON_PRETTY, &len);
    if (!text) {
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", path);
    }
    //  Write beside the target and rename, so a reader (another process
    //  starting from this plan) never sees half a file.
    size_t plen = strlen (path);
    char *tmp = (char *) malloc (plen + 16);
    if (!tmp) {
        free (text);
        return zi_fail (err, errlen, ZI_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf (tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int rc = 0;
    int fd = mkstemp (tmp);
    if (fd < 0) {
        rc = zi_fail (err, errlen, ZI_ERR_IO, "%s: cannot create: %s", tmp,
                      strerror (errno));
    }
    else {
        //  mkstemp makes the file private; a plan is meant to be shared.
        fchmod (fd, 0644);
        text[len] = '\n';   //  replaces the NUL: written with its length
        size_t done = 0;
        while (done < len + 1) {
            ssize_t n = write (fd, text + done, len + 1 - done);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                rc = zi_fail (err, errlen, ZI_ERR_IO, "%s: write failed: %s",
                              tmp, strerror (errno));
                break;
            }
            done += (size_t) n;
        }
        if (close (fd) != 0 && rc == 0) {
            rc = zi_fail (err, errlen, ZI_ERR_IO, "%s: close failed: %s", tmp,
                          strerror (errno));
        }
        if (rc == 0 && rename (tmp, path) != 0) {
            rc = zi_fail (err, errlen, ZI_ERR_IO, "%s: cannot rename into place: %s",
                          path, strerror (errno));
        }
        if (rc) {
            unlink (tmp);
        }
    }
    free (tmp);
    free (text);
    return rc;
}

//  =====================================================================
//  JSON Schema subset

static const char *s_annotations[] = {
    "$schema", "$id", "$comment", "title", "description", "default",
    "examples", "deprecated", "readOnly", "writeOnly", NULL,
};

static const char *s_type_names[] = {
    "null", "boolean", "object", "array", "number", "integer", "string", NULL,
};

static bool
s_in_list (const char *word, const char **list)
{
    for (size_t i = 0; list[i]; i++) {
        if (strcmp (word, list[i]) == 0) {
            return true;
        }
    }
    return false;
}

//  Resolve a local reference: "#" or "#" + JSON pointer (RFC 6901).
static const zi_json_t *
s_resolve (const zi_json_t *root, const char *ref)
{
    if (!ref || ref[0] != '#') {
        return NULL;
    }
    const zi_json_t *at = root;
    const char *p = ref + 1;
    if (*p == 0) {
        return root;
    }
    if (*p != '/') {
        return NULL;
    }
    while (*p == '/' && at) {
        p++;
        char token[128];
        size_t n = 0;
        while (*p && *p != '/') {
            char c = *p++;
            if (c == '~') {
                if (*p == '0') {
                    c = '~';
                }
                else if (*p == '1') {
                    c = '/';
                }
                else {
                    return NULL;
                }
                p++;
            }
            if (n + 1 >= sizeof token) {
                return NULL;
            }
            token[n++] = c;
        }
        token[n] = 0;
        if (at->type == ZI_JSON_OBJECT) {
            size_t i = s_object_find (at, token, n);
            at = i == S_NOT_FOUND ? NULL : at->members[i].value;
        }
        else if (at->type == ZI_JSON_ARRAY) {
            char *end = NULL;
            errno = 0;
            unsigned long long i = strtoull (token, &end, 10);
            if (n == 0 || *end || errno || token[0] == '-' || i >= at->len) {
                return NULL;
            }
            at = at->items[i];
        }
        else {
            return NULL;
        }
    }
    return *p == 0 ? at : NULL;
}

typedef struct {
    const zi_json_t *root;
    char ptr[256];      //  JSON pointer of the schema being checked
    size_t ptr_len;
    char *err;
    size_t errlen;
} s_checker_t;

static int
s_cfail (s_checker_t *c, int code, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static int
s_cfail (s_checker_t *c, int code, const char *fmt, ...)
{
    if (c->err && c->errlen) {
        int n = snprintf (c->err, c->errlen, "schema: #%s: ", c->ptr);
        if (n >= 0 && (size_t) n < c->errlen) {
            va_list ap;
            va_start (ap, fmt);
            vsnprintf (c->err + n, c->errlen - (size_t) n, fmt, ap);
            va_end (ap);
        }
    }
    return code;
}

static size_t
s_ptr_push (s_checker_t *c, const char *token)
{
    size_t mark = c->ptr_len;
    if (c->ptr_len + 1 < sizeof c->ptr) {
        c->ptr[c->ptr_len++] = '/';
    }
    for (const char *t = token; *t; t++) {
        const char *piece = *t == '~' ? "~0" : *t == '/' ? "~1" : NULL;
        size_t n = piece ? 2 : 1;
        if (c->ptr_len + n >= sizeof c->ptr) {
            break;
        }
        memcpy (c->ptr + c->ptr_len, piece ? piece : t, n);
        c->ptr_len += n;
    }
    c->ptr[c->ptr_len] = 0;
    return mark;
}

static void
s_ptr_pop (s_checker_t *c, size_t mark)
{
    c->ptr_len = mark;
    c->ptr[mark] = 0;
}

static int s_check (s_checker_t *c, const zi_json_t *schema, int depth);

static int
s_check_child (s_checker_t *c, const char *token, const zi_json_t *schema, int depth)
{
    size_t mark = s_ptr_push (c, token);
    int rc = s_check (c, schema, depth + 1);
    if (rc == 0) {
        s_ptr_pop (c, mark);
    }
    return rc;
}

static bool
s_is_count (const zi_json_t *v)
{
    return zi_json_is_int (v) && v->ival >= 0;
}

static int
s_check (s_checker_t *c, const zi_json_t *schema, int depth)
{
    if (depth > 256) {
        return s_cfail (c, ZI_ERR_LIMIT, "schema nested too deeply");
    }
    if (schema->type == ZI_JSON_BOOL) {
        return 0;
    }
    if (schema->type != ZI_JSON_OBJECT) {
        return s_cfail (c, ZI_ERR_INVALID, "a schema must be an object or a boolean");
    }
    for (size_t i = 0; i < schema->len; i++) {
        const char *key = schema->members[i].key;
        const zi_json_t *v = schema->members[i].value;
        int rc = 0;
        if (s_in_list (key, s_annotations)) {
            continue;
        }
        if (strcmp (key, "$defs") == 0 || strcmp (key, "definitions") == 0
            || strcmp (key, "properties") == 0) {
            if (v->type != ZI_JSON_OBJECT) {
                return s_cfail (c, ZI_ERR_INVALID, "\"%s\" must be an object", key);
            }
            size_t mark = s_ptr_push (c, key);
            for (size_t k = 0; k < v->len && rc == 0; k++) {
                rc = s_check_child (c, v->members[k].key, v->members[k].value, depth);
            }
            if (rc) {
                return rc;
            }
            s_ptr_pop (c, mark);
        }
        else if (strcmp (key, "type") == 0) {
            bool ok = v->type == ZI_JSON_STRING && s_in_list (v->str, s_type_names);
            if (v->type == ZI_JSON_ARRAY && v->len > 0) {
                ok = true;
                for (size_t k = 0; k < v->len; k++) {
                    const zi_json_t *t = v->items[k];
                    ok = ok && t->type == ZI_JSON_STRING && s_in_list (t->str, s_type_names);
                }
            }
            if (!ok) {
                return s_cfail (c, ZI_ERR_INVALID,
                                "\"type\" must name JSON Schema types");
            }
        }
        else if (strcmp (key, "enum") == 0) {
            if (v->type != ZI_JSON_ARRAY || v->len == 0) {
                return s_cfail (c, ZI_ERR_INVALID, "\"enum\" must be a non-empty array");
            }
        }
        else if (strcmp (key, "const") == 0) {
            continue;
        }
        else if (strcmp (key, "minimum") == 0 || strcmp (key, "maximum") == 0
                 || strcmp (key, "exclusiveMinimum") == 0
                 || strcmp (key, "exclusiveMaximum") == 0) {
            if (v->type != ZI_JSON_NUMBER) {
                return s_cfail (c, ZI_ERR_INVALID, "\"%s\" must be a number", key);
            }
        }
        else if (strcmp (key, "minLength") == 0 || strcmp (key, "maxLength") == 0
                 || strcmp (key, "minItems") == 0 || strcmp (key, "maxItems") == 0) {
            if (!s_is_count (v)) {
                return s_cfail (c, ZI_ERR_INVALID,
                                "\"%s\" must be a non-negative integer", key);
            }
        }
        else if (strcmp (key, "required") == 0) {
            bool ok = v->type == ZI_JSON_ARRAY;
            for (size_t k = 0; ok && k < v->len; k++) {
                ok = v->items[k]->type == ZI_JSON_STRING;
            }
            if (!ok) {
                return s_cfail (c, ZI_ERR_INVALID,
                                "\"required\" must be an array of strings");
            }
        }
        else if (strcmp (key, "items") == 0 || strcmp (key, "additionalProperties") == 0
                 || strcmp (key, "if") == 0 || strcmp (key, "then") == 0
                 || strcmp (key, "else") == 0) {
            rc = s_check_child (c, key, v, depth);
        }
        else if (strcmp (key, "allOf") == 0 || strcmp (key, "anyOf") == 0
                 || strcmp (key, "oneOf") == 0) {
            if (v->type != ZI_JSON_ARRAY || v->len == 0) {
                return s_cfail (c, ZI_ERR_INVALID,
                                "\"%s\" must be a non-empty array of schemas", key);
            }
            size_t mark = s_ptr_push (c, key);
            for (size_t k = 0; k < v->len && rc == 0; k++) {
                char index[24];
                snprintf (index, sizeof index, "%zu", k);
                rc = s_check_child (c, index, v->items[k], depth);
            }
            if (rc) {
                return rc;
            }
            s_ptr_pop (c, mark);
        }
        else if (strcmp (key, "$ref") == 0) {
            if (v->type != ZI_JSON_STRING || !s_resolve (c->root, v->str)) {
                return s_cfail (c, ZI_ERR_INVALID,
                                "\"$ref\" must be a local reference that resolves "
                                "(\"#/$defs/name\")");
            }
        }
        else {
            return s_cfail (c, ZI_ERR_UNSUPPORTED, "unsupported keyword \"%s\"", key);
        }
        if (rc) {
            return rc;
        }
    }
    return 0;
}

int
zi_json_schema_check (const zi_json_t *schema, char *err, size_t errlen)
{
    if (!schema) {
        return zi_fail (err, errlen, ZI_ERR_INVALID, "schema: no schema");
    }
    s_checker_t c = {.root = schema, .err = err, .errlen = errlen};
    return s_check (&c, schema, 0);
}

//  ---------------------------------------------------------------------
//  Validation

typedef struct {
    const zi_json_t *root;
    char path[256];     //  instance path, "a.b[2]"
    size_t path_len;
    char *err;
    size_t errlen;
    size_t fail_depth;  //  path length where the last failure was found
    int depth;
} s_validator_t;

static int
s_vfail (s_validator_t *v, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

static int
s_vfail (s_validator_t *v, const char *fmt, ...)
{
    v->fail_depth = v->path_len;
    if (v->err && v->errlen) {
        int n = 0;
        if (v->path_len) {
            n = snprintf (v->err, v->errlen, "%s: ", v->path);
        }
        if (n >= 0 && (size_t) n < v->errlen) {
            va_list ap;
            va_start (ap, fmt);
            vsnprintf (v->err + n, v->errlen - (size_t) n, fmt, ap);
            va_end (ap);
        }
    }
    return ZI_ERR_MALFORMED;
}

static void
s_path_append (s_validator_t *v, const char *s, size_t n)
{
    if (v->path_len + n + 4 >= sizeof v->path) {
        //  Over-long paths keep their start and end with "...".
        if (v->path_len + 4 < sizeof v->path && !strstr (v->path, "...")) {
            memcpy (v->path + v->path_len, "...", 4);
            v->path_len += 3;
        }
        return;
    }
    memcpy (v->path + v->path_len, s, n);
    v->path_len += n;
    v->path[v->path_len] = 0;
}

static size_t
s_path_key (s_validator_t *v, const char *key, size_t len)
{
    size_t mark = v->path_len;
    bool ident = len > 0 && !(key[0] >= '0' && key[0] <= '9');
    for (size_t i = 0; i < len && ident; i++) {
        char c = key[i];
        ident = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                || (c >= '0' && c <= '9') || c == '_' || c == '$';
    }
    if (ident) {
        if (v->path_len) {
            s_path_append (v, ".", 1);
        }
        s_path_append (v, key, len);
    }
    else {
        char q[80];
        char wrapped[96];
        s_quote_key (key, len, q, sizeof q);
        int n = snprintf (wrapped, sizeof wrapped, "[%s]", q);
        s_path_append (v, wrapped, (size_t) n < sizeof wrapped ? (size_t) n
                                                               : sizeof wrapped - 1);
    }
    return mark;
}

static size_t
s_path_index (s_validator_t *v, size_t i)
{
    size_t mark = v->path_len;
    char tmp[32];
    int n = snprintf (tmp, sizeof tmp, "[%zu]", i);
    s_path_append (v, tmp, (size_t) n);
    return mark;
}

static void
s_path_pop (s_validator_t *v, size_t mark)
{
    v->path_len = mark;
    v->path[mark] = 0;
}

//  A short rendering of a value for "(got ...)": scalars in JSON, long
//  strings cut, containers by kind.
static const char *
s_show (const zi_json_t *x, char *buf, size_t size)
{
    if (!x) {
        snprintf (buf, size, "nothing");
    }
    else if (x->type == ZI_JSON_ARRAY || x->type == ZI_JSON_OBJECT) {
        snprintf (buf, size, "an %s", zi_json_type_name (x->type));
    }
    else if (x->type == ZI_JSON_STRING) {
        s_buf_t b = {0};
        size_t n = x->len > 48 ? 48 : x->len;
        s_write_string (&b, x->str, n);
        snprintf (buf, size, "%s%s", b.data ? b.data : "\"\"",
                  n < x->len ? "..." : "");
        free (b.data);
    }
    else {
        s_buf_t b = {0};
        s_write_scalar (&b, x);
        snprintf (buf, size, "%s", b.data ? b.data : "?");
        free (b.data);
    }
    return buf;
}

//  "string 3" style: type name, then the value for scalars.
static const char *
s_show_typed (const zi_json_t *x, char *buf, size_t size)
{
    if (!x || x->type == ZI_JSON_ARRAY || x->type == ZI_JSON_OBJECT
        || x->type == ZI_JSON_NULL) {
        return s_show (x, buf, size);
    }
    char value[80];
    snprintf (buf, size, "%s %s", zi_json_type_name (x->type),
              s_show (x, value, sizeof value));
    return buf;
}

static bool
s_type_is (const char *name, const zi_json_t *x)
{
    zi_json_type_t t = zi_json_type (x);
    if (strcmp (name, "integer") == 0) {
        return t == ZI_JSON_NUMBER && x->is_int;
    }
    if (strcmp (name, "boolean") == 0) {
        return t == ZI_JSON_BOOL;
    }
    return strcmp (name, zi_json_type_name (t)) == 0;
}

static size_t
s_codepoints (const zi_json_t *x)
{
    size_t count = 0;
    for (size_t j = 0; j < x->len; count++) {
        size_t n = s_utf8_seq ((const unsigned char *) x->str + j, x->len - j);
        j += n ? n : 1;
    }
    return count;
}

static int s_validate (s_validator_t *v, const zi_json_t *schema, const zi_json_t *x);

//  Run a subschema without reporting; for if/anyOf/oneOf. Returns 0 if x
//  matches; its message lands in err (size errlen) when err is not NULL.
static int
s_probe (s_validator_t *v, const zi_json_t *schema, const zi_json_t *x,
         char *err, size_t errlen, size_t *fail_depth)
{
    char *saved_err = v->err;
    size_t saved_len = v->errlen;
    size_t mark = v->path_len;
    v->err = err;
    v->errlen = errlen;
    v->fail_depth = 0;
    int rc = s_validate (v, schema, x);
    if (fail_depth) {
        *fail_depth = v->fail_depth;
    }
    //  A failed subschema leaves its path behind (it is the error's
    //  address); a probe goes on, so take it back.
    s_path_pop (v, mark);
    v->err = saved_err;
    v->errlen = saved_len;
    return rc;
}

static int
s_validate_type (s_validator_t *v, const zi_json_t *type, const zi_json_t *x)
{
    char want[128] = "";
    if (type->type == ZI_JSON_STRING) {
        if (s_type_is (type->str, x)) {
            return 0;
        }
        snprintf (want, sizeof want, "%s", type->str);
    }
    else {
        for (size_t k = 0; k < type->len; k++) {
            if (s_type_is (type->items[k]->str, x)) {
                return 0;
            }
            size_t n = strlen (want);
            snprintf (want + n, sizeof want - n, "%s%s",
                      k == 0 ? "" : k + 1 == type->len ? " or " : ", ",
                      type->items[k]->str);
        }
    }
    char got[128];
    return s_vfail (v, "expected %s (got %s)", want, s_show_typed (x, got, sizeof got));
}

static int
s_validate_enum (s_validator_t *v, const zi_json_t *list, const zi_json_t *x)
{
    for (size_t k = 0; k < list->len; k++) {
        if (zi_json_equal (list->items[k], x)) {
            return 0;
        }
    }
    char choices[200] = "";
    size_t n = 0;
    for (size_t k = 0; k < list->len && n + 1 < sizeof choices; k++) {
        char one[80];
        n += (size_t) snprintf (choices + n, sizeof choices - n, "%s%s",
                                k ? ", " : "", s_show (list->items[k], one, sizeof one));
    }
    if (n >= sizeof choices - 1) {
        memcpy (choices + sizeof choices - 4, "...", 4);
    }
    char got[128];
    return s_vfail (v, "must be one of %s (got %s)", choices, s_show (x, got, sizeof got));
}

static int
s_validate_number (s_validator_t *v, const zi_json_t *schema, const zi_json_t *x)
{
    static const struct {
        const char *keyword;
        const char *op;
        int fails_when;     //  cmp(x, bound) result that is a violation
        int also;           //  second violating result, or 2 for none
    } bounds[] = {
        {"minimum", ">=", -1, 2},
        {"maximum", "<=", 1, 2},
        {"exclusiveMinimum", ">", -1, 0},
        {"exclusiveMaximum", "<", 1, 0},
    };
    for (size_t k = 0; k < sizeof bounds / sizeof bounds[0]; k++) {
        const zi_json_t *bound = zi_json_get (schema, bounds[k].keyword);
        if (!bound) {
            continue;
        }
        int cmp = s_num_cmp (x, bound);
        if (cmp == bounds[k].fails_when || cmp == bounds[k].also) {
            char b[64], got[64];
            return s_vfail (v, "must be %s %s (got %s)", bounds[k].op,
                            s_show (bound, b, sizeof b), s_show (x, got, sizeof got));
        }
    }
    return 0;
}

static int
s_validate_size (s_validator_t *v, const zi_json_t *schema, size_t size,
                 const char *min_kw, const char *max_kw, const char *unit)
{
    const zi_json_t *min = zi_json_get (schema, min_kw);
    const zi_json_t *max = zi_json_get (schema, max_kw);
    if (min && (uint64_t) min->ival > size) {
        if (min->ival == 1 && size == 0) {
            return s_vfail (v, "must not be empty");
        }
        return s_vfail (v, "must have at least %" PRId64 " %s%s (got %zu)", min->ival,
                        unit, min->ival == 1 ? "" : "s", size);
    }
    if (max && (uint64_t) max->ival < size) {
        return s_vfail (v, "must have at most %" PRId64 " %s%s (got %zu)", max->ival,
                        unit, max->ival == 1 ? "" : "s", size);
    }
    return 0;
}

static int
s_validate_object (s_validator_t *v, const zi_json_t *schema, const zi_json_t *x)
{
    const zi_json_t *props = zi_json_get (schema, "properties");
    const zi_json_t *extra = zi_json_get (schema, "additionalProperties");
    const zi_json_t *required = zi_json_get (schema, "required");
    //  Unknown fields first: a misspelt field is the likeliest reason why a
    //  required one seems missing.
    if (extra) {
        for (size_t i = 0; i < x->len; i++) {
            const s_member_t *m = &x->members[i];
            if (props && s_object_find (props, m->key, m->key_len) != S_NOT_FOUND) {
                continue;
            }
            if (extra->type == ZI_JSON_BOOL && !extra->boolean) {
                char q[80];
                return s_vfail (v, "unknown field %s",
                                s_quote_key (m->key, m->key_len, q, sizeof q));
            }
            size_t mark = s_path_key (v, m->key, m->key_len);
            int rc = s_validate (v, extra, m->value);
            if (rc) {
                return rc;
            }
            s_path_pop (v, mark);
        }
    }
    for (size_t k = 0; required && k < required->len; k++) {
        const zi_json_t *name = required->items[k];
        if (s_object_find (x, name->str, name->len) == S_NOT_FOUND) {
            char q[80];
            return s_vfail (v, "missing required field %s",
                            s_quote_key (name->str, name->len, q, sizeof q));
        }
    }
    //  Members in document order, so the first error is the first in the file.
    for (size_t i = 0; props && i < x->len; i++) {
        const s_member_t *m = &x->members[i];
        size_t p = s_object_find (props, m->key, m->key_len);
        if (p == S_NOT_FOUND) {
            continue;
        }
        size_t mark = s_path_key (v, m->key, m->key_len);
        int rc = s_validate (v, props->members[p].value, m->value);
        if (rc) {
            return rc;
        }
        s_path_pop (v, mark);
    }
    return 0;
}

//  anyOf (one == false) or oneOf (one == true) over the schemas in list.
static int
s_validate_alternatives (s_validator_t *v, const zi_json_t *list, const zi_json_t *x,
                         bool one)
{
    //  When nothing matches, report the alternative that got furthest into
    //  the value: its complaint is usually the one the author needs.
    char best[512] = "", attempt[512];
    size_t best_depth = 0, depth = 0;
    bool have_best = false;
    int first_match = -1;
    for (size_t k = 0; k < list->len; k++) {
        if (s_probe (v, list->items[k], x, attempt, sizeof attempt, &depth) == 0) {
            if (!one) {
                return 0;
            }
            if (first_match >= 0) {
                return s_vfail (v, "matches more than one allowed form (#%d and #%zu)",
                                first_match + 1, k + 1);
            }
            first_match = (int) k;
        }
        else if (!have_best || depth > best_depth) {
            snprintf (best, sizeof best, "%s", attempt);
            best_depth = depth;
            have_best = true;
        }
    }
    if (first_match >= 0) {
        return 0;
    }
    v->fail_depth = best_depth;
    if (v->err && v->errlen) {
        snprintf (v->err, v->errlen, "%s", best);
    }
    return ZI_ERR_MALFORMED;
}

static int
s_validate (s_validator_t *v, const zi_json_t *schema, const zi_json_t *x)
{
    if (schema->type == ZI_JSON_BOOL) {
        return schema->boolean ? 0 : s_vfail (v, "not allowed here");
    }
    if (++v->depth > 256) {
        v->depth--;
        return s_vfail (v, "schema applied more than 256 levels deep (a $ref loop?)");
    }
    int rc = 0;
    const zi_json_t *kw;
    zi_json_type_t t = zi_json_type (x);
    if ((kw = zi_json_get (schema, "type"))) {
        rc = s_validate_type (v, kw, x);
    }
    if (rc == 0 && (kw = zi_json_get (schema, "const")) && !zi_json_equal (kw, x)) {
        char want[80], got[80];
        rc = s_vfail (v, "must be %s (got %s)", s_show (kw, want, sizeof want),
                      s_show (x, got, sizeof got));
    }
    if (rc == 0 && (kw = zi_json_get (schema, "enum"))) {
        rc = s_validate_enum (v, kw, x);
    }
    if (rc == 0 && t == ZI_JSON_NUMBER) {
        rc = s_validate_number (v, schema, x);
    }
    if (rc == 0 && t == ZI_JSON_STRING) {
        rc = s_validate_size (v, schema, s_codepoints (x), "minLength", "maxLength",
                              "character");
    }
    if (rc == 0 && t == ZI_JSON_ARRAY) {
        rc = s_validate_size (v, schema, x->len, "minItems", "maxItems", "item");
        const zi_json_t *items = zi_json_get (schema, "items");
        for (size_t i = 0; rc == 0 && items && i < x->len; i++) {
            size_t mark = s_path_index (v, i);
            rc = s_validate (v, items, x->items[i]);
            if (rc == 0) {
                s_path_pop (v, mark);
            }
        }
    }
    if (rc == 0 && t == ZI_JSON_OBJECT) {
        rc = s_validate_object (v, schema, x);
    }
    if (rc == 0 && (kw = zi_json_get (schema, "$ref"))) {
        rc = s_validate (v, s_resolve (v->root, kw->str), x);
    }
    if (rc == 0 && (kw = zi_json_get (schema, "allOf"))) {
        for (size_t k = 0; rc == 0 && k < kw->len; k++) {
            rc = s_validate (v, kw->items[k], x);
        }
    }
    if (rc == 0 && (kw = zi_json_get (schema, "anyOf"))) {
        rc = s_validate_alternatives (v, kw, x, false);
    }
    if (rc == 0 && (kw = zi_json_get (schema, "oneOf"))) {
        rc = s_validate_alternatives (v, kw, x, true);
    }
    if (rc == 0 && (kw = zi_json_get (schema, "if"))) {
        bool holds = s_probe (v, kw, x, NULL, 0, NULL) == 0;
        const zi_json_t *branch = zi_json_get (schema, holds ? "then" : "else");
        if (branch) {
            rc = s_validate (v, branch, x);
        }
    }
    v->depth--;
    return rc;
}

int
zi_json_schema_validate (const zi_json_t *schema, const zi_json_t *doc,
                         char *err, size_t errlen)
{
    int rc = zi_json_schema_check (schema, err, errlen);
    if (rc) {
        return rc;
    }
    s_validator_t v = {.root = schema, .err = err, .errlen = errlen};
    return s_validate (&v, schema, doc);
}
