/*  test_json.c - zi_json: parsing, limits, errors, building, writing, the
    schema subset, and a deterministic mutation run that must never crash.

    Every parse of untrusted text goes through s_parse_exact, which copies
    the text into a buffer of exactly its length, so AddressSanitizer sees
    any read past the end.
*/
#include <criterion/criterion.h>

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zi_json.h"

//  ---------------------------------------------------------------------
//  Helpers

static int
s_parse_exact (const char *text, size_t len, const zi_json_opts_t *opts,
               zi_json_t **out, char *err, size_t errlen)
{
    char *copy = (char *) malloc (len ? len : 1);
    cr_assert_not_null (copy);
    memcpy (copy, text, len);
    int rc = zi_json_parse (copy, len, opts, out, err, errlen);
    free (copy);
    return rc;
}

static zi_json_t *
s_parse_ok (const char *text)
{
    zi_json_t *doc = NULL;
    char err[256] = "";
    int rc = s_parse_exact (text, strlen (text), NULL, &doc, err, sizeof err);
    cr_assert_eq (rc, 0, "parse of <%s> failed: %s", text, err);
    cr_assert_not_null (doc);
    return doc;
}

//  Parse must fail with code and an error containing fragment.
static void
s_parse_fails (const char *text, size_t len, int code, const char *fragment)
{
    zi_json_t *doc = (zi_json_t *) 0x1;
    char err[256] = "";
    int rc = s_parse_exact (text, len, NULL, &doc, err, sizeof err);
    cr_assert_eq (rc, code, "parse of <%.*s>: want %d, got %d (%s)", (int) len, text,
                  code, rc, err);
    cr_assert_null (doc, "failed parse must leave *out NULL");
    cr_assert (strstr (err, fragment), "parse of <%.*s>: error <%s> lacks <%s>", (int) len,
               text, err, fragment);
}

static void
s_fails (const char *text, int code, const char *fragment)
{
    s_parse_fails (text, strlen (text), code, fragment);
}

static char *
s_dump (const zi_json_t *doc, int flags)
{
    char *text = zi_json_dump (doc, flags, NULL);
    cr_assert_not_null (text);
    return text;
}

//  Dump both ways, parse back, and require the same value both times.
static void
s_assert_round_trip (const zi_json_t *doc)
{
    for (int flags = ZI_JSON_COMPACT; flags <= ZI_JSON_PRETTY; flags++) {
        size_t len = 0;
        char *text = zi_json_dump (doc, flags, &len);
        cr_assert_not_null (text);
        cr_assert_eq (strlen (text), len);
        zi_json_t *back = NULL;
        char err[256] = "";
        int rc = s_parse_exact (text, len, NULL, &back, err, sizeof err);
        cr_assert_eq (rc, 0, "re-parse failed: %s\n%s", err, text);
        cr_assert (zi_json_equal (doc, back), "round trip changed the value:\n%s", text);
        char *again = zi_json_dump (back, flags, NULL);
        cr_assert_str_eq (again, text, "second dump differs");
        free (again);
        free (text);
        zi_json_destroy (&back);
    }
}

static const char s_rich[] =
    "{\n"
    "  \"name\": \"zinfer \\u00e9\\ud83d\\ude00 \\\"quoted\\\" \\\\ \\/ \\b\\f\\n\\r\\t\",\n"
    "  \"ints\": [0, -0, 1, -1, 9007199254740993, 9223372036854775807, "
    "-9223372036854775808],\n"
    "  \"reals\": [0.5, -2.25e-3, 1E+10, 6.02214076e23, 5e-324, 1.7976931348623157e308],\n"
    "  \"flags\": {\"yes\": true, \"no\": false, \"nothing\": null},\n"
    "  \"empty\": {\"a\": [], \"o\": {}, \"s\": \"\"},\n"
    "  \"nested\": [[1, [2, [3, {\"deep\": [\"x\"]}]]], {\"k\": {\"k\": {\"k\": 1}}}],\n"
    "  \"utf8\": \"\xc3\xa9\xe6\xbc\xa2\xf0\x9f\x98\x80\"\n"
    "}";

//  ---------------------------------------------------------------------
//  Parsing

Test (json, scalars_and_accessors)
{
    zi_json_t *doc = s_parse_ok (" {\"s\": \"hi\", \"n\": 2.5, \"i\": -7, \"t\": true, "
                                 "\"f\": false, \"z\": null} ");
    cr_assert_eq (zi_json_type (doc), ZI_JSON_OBJECT);
    cr_assert_eq (zi_json_size (doc), 6);
    cr_assert_str_eq (zi_json_str (zi_json_get (doc, "s")), "hi");
    cr_assert_eq (zi_json_str_len (zi_json_get (doc, "s")), 2);
    cr_assert_eq (zi_json_num (zi_json_get (doc, "n")), 2.5);
    cr_assert_not (zi_json_is_int (zi_json_get (doc, "n")));
    int64_t i = 0;
    cr_assert_eq (zi_json_int (zi_json_get (doc, "i"), INT64_MIN, INT64_MAX, &i), 0);
    cr_assert_eq (i, -7);
    cr_assert (zi_json_bool (zi_json_get (doc, "t")));
    cr_assert_not (zi_json_bool (zi_json_get (doc, "f")));
    cr_assert_eq (zi_json_type (zi_json_get (doc, "f")), ZI_JSON_BOOL);
    cr_assert_eq (zi_json_type (zi_json_get (doc, "z")), ZI_JSON_NULL);
    //  Absent and mistyped values chain to NULL / NONE / NaN / errors.
    cr_assert_null (zi_json_get (doc, "missing"));
    cr_assert_eq (zi_json_type (zi_json_get (doc, "missing")), ZI_JSON_NONE);
    cr_assert_null (zi_json_get (zi_json_get (doc, "missing"), "deeper"));
    cr_assert_null (zi_json_str (zi_json_get (doc, "n")));
    cr_assert (isnan (zi_json_num (zi_json_get (doc, "s"))));
    cr_assert_eq (zi_json_int (zi_json_get (doc, "s"), 0, 10, &i), ZI_ERR_INVALID);
    cr_assert_null (zi_json_at (doc, 6));
    cr_assert_null (zi_json_key_at (zi_json_get (doc, "s"), 0));
    cr_assert_eq (zi_json_size (zi_json_get (doc, "s")), 0);
    cr_assert_str_eq (zi_json_type_name (ZI_JSON_ARRAY), "array");
    cr_assert_str_eq (zi_json_type_name (ZI_JSON_NONE), "none");
    zi_json_destroy (&doc);
    cr_assert_null (doc);
    zi_json_destroy (&doc);     //  safe on NULL
    zi_json_destroy (NULL);
}

Test (json, members_iterate_in_file_order)
{
    zi_json_t *doc = s_parse_ok ("{\"zeta\": 1, \"alpha\": 2, \"mid\": 3}");
    const char *want[] = {"zeta", "alpha", "mid"};
    for (size_t i = 0; i < zi_json_size (doc); i++) {
        cr_assert_str_eq (zi_json_key_at (doc, i), want[i]);
        cr_assert_eq (zi_json_num (zi_json_at (doc, i)), (double) (i + 1));
    }
    zi_json_destroy (&doc);
}

Test (json, integers_are_exact)
{
    zi_json_t *doc = s_parse_ok (
        "[9007199254740993, 9223372036854775807, -9223372036854775808, "
        "9223372036854775808, -0, 2.0, 1e3, 1.5, 1e19, -1e-400, 12345678901234567890123]");
    int64_t v = 0;
    cr_assert_eq (zi_json_int (zi_json_at (doc, 0), INT64_MIN, INT64_MAX, &v), 0);
    cr_assert_eq (v, 9007199254740993LL, "no rounding through a double");
    cr_assert_eq (zi_json_int (zi_json_at (doc, 1), INT64_MIN, INT64_MAX, &v), 0);
    cr_assert_eq (v, INT64_MAX);
    cr_assert_eq (zi_json_int (zi_json_at (doc, 2), INT64_MIN, INT64_MAX, &v), 0);
    cr_assert_eq (v, INT64_MIN);
    //  2^63 does not fit: a number, but not an integer.
    cr_assert_not (zi_json_is_int (zi_json_at (doc, 3)));
    cr_assert_eq (zi_json_num (zi_json_at (doc, 3)), 9223372036854775808.0);
    cr_assert (zi_json_is_int (zi_json_at (doc, 4)));
    cr_assert (signbit (zi_json_num (zi_json_at (doc, 4))));
    cr_assert (zi_json_is_int (zi_json_at (doc, 5)), "2.0 has an integral value");
    cr_assert_eq (zi_json_int (zi_json_at (doc, 6), 0, 1000, &v), 0);
    cr_assert_eq (v, 1000);
    cr_assert_not (zi_json_is_int (zi_json_at (doc, 7)));
    cr_assert_not (zi_json_is_int (zi_json_at (doc, 8)));
    cr_assert_eq (zi_json_num (zi_json_at (doc, 9)), 0.0, "underflow reads as zero");
    cr_assert_not (zi_json_is_int (zi_json_at (doc, 10)));
    //  Range checks.
    cr_assert_eq (zi_json_int (zi_json_at (doc, 6), 0, 999, &v), ZI_ERR_LIMIT);
    cr_assert_eq (zi_json_int (zi_json_at (doc, 2), INT64_MIN + 1, 0, &v), ZI_ERR_LIMIT);
    cr_assert_eq (zi_json_int (zi_json_at (doc, 7), 0, 10, &v), ZI_ERR_INVALID);
    cr_assert_eq (zi_json_int (NULL, 0, 10, &v), ZI_ERR_INVALID);
    cr_assert_eq (v, 1000, "*value untouched on error");
    zi_json_destroy (&doc);
}

Test (json, strings_and_unicode_escapes)
{
    zi_json_t *doc = s_parse_ok (s_rich);
    cr_assert_str_eq (zi_json_str (zi_json_get (doc, "name")),
                      "zinfer \xc3\xa9\xf0\x9f\x98\x80 \"quoted\" \\ / \b\f\n\r\t");
    cr_assert_str_eq (zi_json_str (zi_json_get (doc, "utf8")),
                      "\xc3\xa9\xe6\xbc\xa2\xf0\x9f\x98\x80");
    zi_json_destroy (&doc);

    //  Every escape width: 1, 2, 3 and 4-byte UTF-8, upper and lower hex.
    doc = s_parse_ok ("[\"\\u0041\\u00E9\\u20ac\\uD834\\uDD1E\\uffff\"]");
    cr_assert_str_eq (zi_json_str (zi_json_at (doc, 0)),
                      "A\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\xef\xbf\xbf");
    zi_json_destroy (&doc);

    //  \u0000 is kept, and the length tells it apart from the end.
    doc = s_parse_ok ("\"a\\u0000b\"");
    cr_assert_eq (zi_json_str_len (doc), 3);
    cr_assert_eq (memcmp (zi_json_str (doc), "a\0b", 4), 0);
    zi_json_destroy (&doc);

    //  A UTF-8 byte order mark is skipped.
    doc = s_parse_ok ("\xEF\xBB\xBF{\"bom\": 1}");
    cr_assert_eq (zi_json_num (zi_json_get (doc, "bom")), 1.0);
    zi_json_destroy (&doc);
}

Test (json, bad_strings_are_rejected)
{
    s_fails ("\"abc", ZI_ERR_MALFORMED, "<json>:1:1: unterminated string");
    s_fails ("\"abc\\\"", ZI_ERR_MALFORMED, "unterminated string");
    s_fails ("\"a\\qb\"", ZI_ERR_MALFORMED, "<json>:1:3: invalid escape '\\q' in string");
    s_fails ("\"a\\\x01\"", ZI_ERR_MALFORMED, "followed by byte 0x01");
    s_fails ("\"\\u12\"", ZI_ERR_MALFORMED, "invalid \\u escape: expected 4 hex digits");
    s_fails ("\"\\u12G4\"", ZI_ERR_MALFORMED, "expected 4 hex digits");
    s_fails ("\"\\ud800\"", ZI_ERR_MALFORMED, "unpaired surrogate \\uD800");
    s_fails ("\"\\ud800\\u0041\"", ZI_ERR_MALFORMED, "unpaired surrogate \\uD800");
    s_fails ("\"\\ud800\\ud800\"", ZI_ERR_MALFORMED, "unpaired surrogate");
    s_fails ("\"\\udc00\"", ZI_ERR_MALFORMED, "unpaired surrogate \\uDC00");
    s_fails ("\"a\nb\"", ZI_ERR_MALFORMED, "<json>:1:3: control character 0x0A");
    s_fails ("\"tab\there\"", ZI_ERR_MALFORMED, "control character 0x09");
    s_parse_fails ("\"a\0b\"", 5, ZI_ERR_MALFORMED, "control character 0x00");
    //  UTF-8 that RFC 3629 forbids: overlong, surrogate, too large, stray
    //  continuation, truncated sequence, bytes that never occur.
    s_fails ("\"\xc0\x80\"", ZI_ERR_MALFORMED, "invalid UTF-8 byte 0xC0");
    s_fails ("\"\xe0\x80\xaf\"", ZI_ERR_MALFORMED, "invalid UTF-8 byte 0xE0");
    s_fails ("\"\xed\xa0\x80\"", ZI_ERR_MALFORMED, "invalid UTF-8 byte 0xED");
    s_fails ("\"\xf4\x90\x80\x80\"", ZI_ERR_MALFORMED, "invalid UTF-8 byte 0xF4");
    s_fails ("\"\x80\"", ZI_ERR_MALFORMED, "invalid UTF-8 byte 0x80");
    s_fails ("\"\xe2\x82\"", ZI_ERR_MALFORMED, "invalid UTF-8 byte 0xE2");
    s_fails ("\"\xff\"", ZI_ERR_MALFORMED, "invalid UTF-8 byte 0xFF");
    //  Outside strings a stray byte is simply unexpected.
    s_fails ("[\xc3\xa9]", ZI_ERR_MALFORMED, "found byte 0xC3");
}

Test (json, bad_numbers_are_rejected)
{
    s_fails ("01", ZI_ERR_MALFORMED, "<json>:1:1: numbers may not have leading zeros");
    s_fails ("-01", ZI_ERR_MALFORMED, "leading zeros");
    s_fails ("1.", ZI_ERR_MALFORMED, "expected a digit after '.', found end of input");
    s_fails ("1.e5", ZI_ERR_MALFORMED, "expected a digit after '.', found 'e'");
    s_fails ("-", ZI_ERR_MALFORMED, "expected a digit after '-', found end of input");
    s_fails ("-a", ZI_ERR_MALFORMED, "expected a digit after '-', found 'a'");
    s_fails ("1e", ZI_ERR_MALFORMED, "expected a digit in the exponent");
    s_fails ("1e+", ZI_ERR_MALFORMED, "expected a digit in the exponent");
    s_fails ("+1", ZI_ERR_MALFORMED, "expected a value, found '+'");
    s_fails (".5", ZI_ERR_MALFORMED, "expected a value, found '.'");
    s_fails ("0x10", ZI_ERR_MALFORMED, "expected end of input after the value, found 'x'");
    s_fails ("NaN", ZI_ERR_MALFORMED, "expected a value, found 'N'");
    s_fails ("Infinity", ZI_ERR_MALFORMED, "found 'I'");
    s_fails ("-Infinity", ZI_ERR_MALFORMED, "expected a digit after '-'");
    //  Grammatical but beyond a double: refused rather than made infinite.
    s_fails ("1e400", ZI_ERR_LIMIT, "number 1e400 is out of range");
    s_fails ("[-1e99999]", ZI_ERR_LIMIT, "out of range");
    char big[400];
    memset (big, '9', sizeof big - 1);
    big[sizeof big - 1] = 0;
    s_fails (big, ZI_ERR_LIMIT, "...");
}

Test (json, syntax_errors_name_place_and_expectation)
{
    s_fails ("", ZI_ERR_MALFORMED, "<json>:1:1: expected a value, found end of input");
    s_fails ("   \n  ", ZI_ERR_MALFORMED, "<json>:2:3: expected a value, found end of input");
    s_fails ("{\"a\":1 \"b\":2}", ZI_ERR_MALFORMED,
             "<json>:1:8: expected ',' or '}' after object member, found '\"'");
    s_fails ("{\n  \"a\": 1,\n  \"b\" 2\n}", ZI_ERR_MALFORMED,
             "<json>:3:7: expected ':' after object key, found '2'");
    s_fails ("{\"a\":1,}", ZI_ERR_MALFORMED,
             "<json>:1:8: expected a string key after ',', found '}'");
    s_fails ("{a:1}", ZI_ERR_MALFORMED, "expected a string key or '}', found 'a'");
    s_fails ("{'a':1}", ZI_ERR_MALFORMED, "expected a string key or '}', found '''");
    s_fails ("{\"a\":}", ZI_ERR_MALFORMED, "expected a value after ':', found '}'");
    s_fails ("[1,]", ZI_ERR_MALFORMED, "<json>:1:4: expected a value after ',', found ']'");
    s_fails ("[,1]", ZI_ERR_MALFORMED, "expected a value or ']', found ','");
    s_fails ("[1 2]", ZI_ERR_MALFORMED, "expected ',' or ']' after array element, found '2'");
    s_fails ("[1", ZI_ERR_MALFORMED, "expected ',' or ']' after array element, found end");
    s_fails ("{\"a\":1", ZI_ERR_MALFORMED, "after object member, found end of input");
    s_fails ("tru", ZI_ERR_MALFORMED, "invalid literal (expected 'true')");
    s_fails ("nul", ZI_ERR_MALFORMED, "invalid literal (expected 'null')");
    s_fails ("False", ZI_ERR_MALFORMED, "expected a value, found 'F'");
    s_fails ("// comment\n1", ZI_ERR_MALFORMED, "expected a value, found '/'");
    //  Trailing garbage after a complete value.
    s_fails ("{} x", ZI_ERR_MALFORMED, "<json>:1:4: expected end of input after the value");
    s_fails ("[]]", ZI_ERR_MALFORMED, "expected end of input after the value, found ']'");
    s_fails ("1 2", ZI_ERR_MALFORMED, "found '2'");
    s_fails ("truex", ZI_ERR_MALFORMED, "found 'x'");
    s_parse_fails ("{}\0", 3, ZI_ERR_MALFORMED, "found byte 0x00");
    //  The source name comes from the options.
    zi_json_t *doc = NULL;
    char err[128];
    zi_json_opts_t opts = {.source = "plan.json"};
    cr_assert_eq (zi_json_parse ("{\n\n    ]", 8, &opts, &doc, err, sizeof err),
                  ZI_ERR_MALFORMED);
    cr_assert_str_eq (err, "plan.json:3:5: expected a string key or '}', found ']'");
}

Test (json, duplicate_keys_are_named)
{
    s_fails ("{\"a\":1,\"a\":2}", ZI_ERR_MALFORMED, "<json>:1:8: duplicate key \"a\" in object");
    s_fails ("{\"x\":{\"q\\\"\":1,\"q\\u0022\":2}}", ZI_ERR_MALFORMED,
             "duplicate key \"q\\x22\"");
    //  Past the size where objects switch to a hash index.
    char text[8192];
    size_t n = 0;
    n += (size_t) snprintf (text + n, sizeof text - n, "{");
    for (int i = 0; i < 300; i++) {
        n += (size_t) snprintf (text + n, sizeof text - n, "\"key%d\": %d,", i, i);
    }
    n += (size_t) snprintf (text + n, sizeof text - n, "\"key123\": 0}");
    s_fails (text, ZI_ERR_MALFORMED, "duplicate key \"key123\" in object");
    //  Keys differing only after an embedded NUL are different keys.
    zi_json_t *doc = s_parse_ok ("{\"a\\u0000b\": 1, \"a\\u0000c\": 2, \"a\": 3}");
    cr_assert_eq (zi_json_size (doc), 3);
    cr_assert_eq (zi_json_num (zi_json_get (doc, "a")), 3.0);
    zi_json_destroy (&doc);
}

Test (json, large_object_lookup_uses_every_key)
{
    char *text = (char *) malloc (200000);
    cr_assert_not_null (text);
    size_t n = 0;
    n += (size_t) snprintf (text + n, 200000 - n, "{");
    for (int i = 0; i < 5000; i++) {
        n += (size_t) snprintf (text + n, 200000 - n, "%s\"k%d\": %d", i ? "," : "", i, i);
    }
    snprintf (text + n, 200000 - n, "}");
    zi_json_t *doc = s_parse_ok (text);
    cr_assert_eq (zi_json_size (doc), 5000);
    for (int i = 0; i < 5000; i++) {
        char key[16];
        snprintf (key, sizeof key, "k%d", i);
        cr_assert_eq (zi_json_num (zi_json_get (doc, key)), (double) i);
        cr_assert_str_eq (zi_json_key_at (doc, (size_t) i), key);
    }
    cr_assert_null (zi_json_get (doc, "k5000"));
    zi_json_destroy (&doc);
    free (text);
}

static char *
s_nested (int depth, size_t *len)
{
    char *text = (char *) malloc ((size_t) depth * 2 + 1);
    cr_assert_not_null (text);
    memset (text, '[', (size_t) depth);
    memset (text + depth, ']', (size_t) depth);
    text[depth * 2] = 0;
    *len = (size_t) depth * 2;
    return text;
}

Test (json, nesting_is_bounded)
{
    size_t len;
    char *ok = s_nested (64, &len);
    zi_json_t *doc = NULL;
    char err[256];
    cr_assert_eq (s_parse_exact (ok, len, NULL, &doc, err, sizeof err), 0, "%s", err);
    zi_json_destroy (&doc);
    free (ok);

    char *deep = s_nested (65, &len);
    s_parse_fails (deep, len, ZI_ERR_LIMIT, "<json>:1:65: nesting deeper than 64 levels");
    free (deep);

    //  Far deeper than any stack would take recursively: refused early.
    char *hostile = s_nested (1000000, &len);
    s_parse_fails (hostile, len / 2, ZI_ERR_LIMIT, "nesting deeper than 64 levels");
    s_fails ("[{\"a\":[{\"b\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
             "[[[[[[[[[[[[", ZI_ERR_LIMIT, "nesting deeper than 64");
    //  A caller may allow more, up to ZI_JSON_MAX_DEPTH.
    zi_json_opts_t opts = {.max_depth = 5000};
    cr_assert_eq (s_parse_exact (hostile, 2000, &opts, &doc, err, sizeof err), ZI_ERR_LIMIT);
    cr_assert (strstr (err, "deeper than 1000 levels"), "%s", err);
    char *thousand = s_nested (1000, &len);
    cr_assert_eq (s_parse_exact (thousand, len, &opts, &doc, err, sizeof err), 0, "%s", err);
    zi_json_destroy (&doc);
    free (thousand);
    free (hostile);
}

Test (json, limits_are_enforced)
{
    zi_json_t *doc = NULL;
    char err[256];
    zi_json_opts_t opts = {.source = "lim", .max_input = 8};
    cr_assert_eq (zi_json_parse ("[1,2,3,4]", 9, &opts, &doc, err, sizeof err), ZI_ERR_LIMIT);
    cr_assert_str_eq (err, "lim: input is 9 bytes, more than the limit of 8");
    cr_assert_eq (zi_json_parse ("[1,2,3,4", 8, &opts, &doc, err, sizeof err),
                  ZI_ERR_MALFORMED);

    opts = (zi_json_opts_t) {.max_string = 4};
    cr_assert_eq (zi_json_parse ("[\"abcd\"]", 8, &opts, &doc, err, sizeof err), 0);
    zi_json_destroy (&doc);
    cr_assert_eq (zi_json_parse ("[\"abcde\"]", 9, &opts, &doc, err, sizeof err), ZI_ERR_LIMIT);
    cr_assert (strstr (err, "<json>:1:2: string longer than 4 bytes"), "%s", err);
    cr_assert_eq (zi_json_parse ("{\"abcde\":1}", 11, &opts, &doc, err, sizeof err),
                  ZI_ERR_LIMIT, "keys count too");

    opts = (zi_json_opts_t) {.max_nodes = 4};
    cr_assert_eq (zi_json_parse ("[1,2,3]", 7, &opts, &doc, err, sizeof err), 0);
    zi_json_destroy (&doc);
    cr_assert_eq (zi_json_parse ("[1,2,3,4]", 9, &opts, &doc, err, sizeof err), ZI_ERR_LIMIT);
    cr_assert (strstr (err, "more than 4 values"), "%s", err);
    cr_assert_eq (zi_json_parse ("[\"a\",\"b\",\"c\",\"d\"]", 17, &opts, &doc, err, sizeof err),
                  ZI_ERR_LIMIT);

    //  Bad arguments are refused, not dereferenced.
    cr_assert_eq (zi_json_parse ("1", 1, NULL, NULL, err, sizeof err), ZI_ERR_INVALID);
    cr_assert_eq (zi_json_parse (NULL, 3, NULL, &doc, err, sizeof err), ZI_ERR_INVALID);
    cr_assert_eq (zi_json_parse (NULL, 0, NULL, &doc, NULL, 0), ZI_ERR_MALFORMED);
}

//  Every proper prefix of a document is an incomplete document.
Test (json, every_truncation_fails_cleanly)
{
    size_t len = strlen (s_rich);
    for (size_t cut = 0; cut < len; cut++) {
        zi_json_t *doc = NULL;
        char err[256] = "";
        int rc = s_parse_exact (s_rich, cut, NULL, &doc, err, sizeof err);
        cr_assert_neq (rc, 0, "prefix of %zu bytes parsed", cut);
        cr_assert_null (doc);
        cr_assert (strncmp (err, "<json>:", 7) == 0, "cut %zu: %s", cut, err);
    }
    zi_json_t *doc = NULL;
    cr_assert_eq (s_parse_exact (s_rich, len, NULL, &doc, NULL, 0), 0);
    s_assert_round_trip (doc);
    zi_json_destroy (&doc);
}

//  ---------------------------------------------------------------------
//  Writing

Test (json, pretty_output_is_stable)
{
    zi_json_t *root = zi_json_new_object ();
    cr_assert_eq (zi_json_set_str (root, "name", "h1"), 0);
    zi_json_t *shape = zi_json_set_array (root, "shape");
    cr_assert_eq (zi_json_append_int (shape, -1), 0);
    cr_assert_eq (zi_json_append_int (shape, 10), 0);
    cr_assert_eq (zi_json_set_double (root, "capacity", 3.0), 0);
    cr_assert_eq (zi_json_set_double (root, "share", 0.1), 0);
    zi_json_t *list = zi_json_set_array (root, "replicas");
    zi_json_t *r = zi_json_append_object (list);
    zi_json_set_str (r, "name", "s0r0");
    zi_json_set_bool (r, "up", true);
    zi_json_t *nested = zi_json_append_object (list);
    zi_json_t *inner = zi_json_set_object (nested, "inner");
    zi_json_set_int (inner, "x", 1);
    zi_json_set_array (root, "none");
    zi_json_set_object (root, "nothing");
    zi_json_t *null = zi_json_new_null ();
    cr_assert_eq (zi_json_set (root, "null", &null), 0);
    cr_assert_null (null, "ownership moved");
    char *text = s_dump (root, ZI_JSON_PRETTY);
    cr_assert_str_eq (text,
                      "{\n"
                      "  \"name\": \"h1\",\n"
                      "  \"shape\": [-1, 10],\n"
                      "  \"capacity\": 3.0,\n"
                      "  \"share\": 0.1,\n"
                      "  \"replicas\": [\n"
                      "    {\"name\": \"s0r0\", \"up\": true},\n"
                      "    {\n"
                      "      \"inner\": {\"x\": 1}\n"
                      "    }\n"
                      "  ],\n"
                      "  \"none\": [],\n"
                      "  \"nothing\": {},\n"
                      "  \"null\": null\n"
                      "}");
    free (text);
    text = s_dump (root, ZI_JSON_COMPACT);
    cr_assert_str_eq (text, "{\"name\":\"h1\",\"shape\":[-1,10],\"capacity\":3.0,\"share\":0.1,"
                            "\"replicas\":[{\"name\":\"s0r0\",\"up\":true},{\"inner\":{\"x\":1}}],"
                            "\"none\":[],\"nothing\":{},\"null\":null}");
    free (text);
    s_assert_round_trip (root);
    zi_json_destroy (&root);
}

Test (json, long_flat_arrays_break_lines)
{
    zi_json_t *root = zi_json_new_object ();
    zi_json_t *list = zi_json_set_array (root, "values");
    for (int i = 0; i < 40; i++) {
        zi_json_append_int (list, 1000 + i);
    }
    char *text = s_dump (root, ZI_JSON_PRETTY);
    cr_assert (strstr (text, "\"values\": [\n    1000,\n    1001,\n"), "%s", text);
    free (text);
    zi_json_destroy (&root);
}

Test (json, strings_are_escaped_on_output)
{
    zi_json_t *s = zi_json_new_stringn ("q\"b\\s/\b\f\n\r\t\x01\x1f\x7f\xc3\xa9\0z", 18);
    char *text = s_dump (s, ZI_JSON_COMPACT);
    cr_assert_str_eq (text, "\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001F\x7f\xc3\xa9\\u0000z\"");
    free (text);
    zi_json_destroy (&s);
    //  Bytes that are not UTF-8 become U+FFFD so the output stays JSON.
    s = zi_json_new_string ("a\xff" "b\xc3");
    text = s_dump (s, ZI_JSON_COMPACT);
    cr_assert_str_eq (text, "\"a\xef\xbf\xbd" "b\xef\xbf\xbd\"");
    zi_json_t *back = s_parse_ok (text);
    cr_assert_str_eq (zi_json_str (back), "a\xef\xbf\xbd" "b\xef\xbf\xbd");
    zi_json_destroy (&back);
    free (text);
    zi_json_destroy (&s);
}

//  xorshift64*: deterministic, so a failure reproduces.
static uint64_t
s_rand (uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 2685821657736338717ull;
}

Test (json, doubles_round_trip_bit_for_bit)
{
    uint64_t state = 0x9E3779B97F4A7C15ull;
    const double fixed[] = {0.1, 1.0 / 3, 1e-300, 5e-324, 1.7976931348623157e308, -0.0,
                            123456789012345678.0, 0.30000000000000004, 1e21, 1e-7};
    for (int i = 0; i < 20000 + 10; i++) {
        double d;
        if (i < 10) {
            d = fixed[i];
        }
        else {
            uint64_t bits = s_rand (&state);
            memcpy (&d, &bits, sizeof d);
            if (!isfinite (d)) {
                continue;
            }
        }
        zi_json_t *node = zi_json_new_double (d);
        cr_assert_not_null (node);
        char *text = s_dump (node, ZI_JSON_COMPACT);
        zi_json_t *back = s_parse_ok (text);
        double e = zi_json_num (back);
        cr_assert_eq (memcmp (&d, &e, sizeof d), 0, "%.17g wrote %s read %.17g", d, text, e);
        cr_assert (strpbrk (text, ".eE"), "a double stays a double: %s", text);
        zi_json_destroy (&back);
        zi_json_destroy (&node);
        free (text);
    }
    cr_assert_null (zi_json_new_double (NAN));
    cr_assert_null (zi_json_new_double (INFINITY));
    zi_json_t *obj = zi_json_new_object ();
    cr_assert_eq (zi_json_set_double (obj, "x", -INFINITY), ZI_ERR_INVALID);
    cr_assert_eq (zi_json_size (obj), 0);
    zi_json_destroy (&obj);
}

Test (json, numbers_survive_a_foreign_locale)
{
    if (!setlocale (LC_NUMERIC, "de_DE.UTF-8") && !setlocale (LC_NUMERIC, "fr_FR.UTF-8")
        && !setlocale (LC_NUMERIC, "de_DE") && !setlocale (LC_NUMERIC, "fr_FR")) {
        cr_skip_test ("no locale with a decimal comma is installed");
    }
    zi_json_t *doc = s_parse_ok ("[1.5, 2.5e-3]");
    cr_assert_eq (zi_json_num (zi_json_at (doc, 0)), 1.5);
    cr_assert_eq (zi_json_num (zi_json_at (doc, 1)), 2.5e-3);
    char *text = s_dump (doc, ZI_JSON_COMPACT);
    cr_assert_str_eq (text, "[1.5,0.0025]");
    free (text);
    zi_json_destroy (&doc);
    setlocale (LC_NUMERIC, "C");
}

Test (json, builder_ownership_and_replacement)
{
    zi_json_t *obj = zi_json_new_object ();
    zi_json_set_int (obj, "a", 1);
    zi_json_set_int (obj, "b", 2);
    zi_json_set_int (obj, "c", 3);
    //  Setting an existing key replaces the value where it stands.
    zi_json_set_str (obj, "b", "two");
    cr_assert_eq (zi_json_size (obj), 3);
    cr_assert_str_eq (zi_json_key_at (obj, 1), "b");
    cr_assert_str_eq (zi_json_str (zi_json_at (obj, 1)), "two");

    //  On failure the caller keeps the value.
    zi_json_t *value = zi_json_new_int (5);
    zi_json_t *number = zi_json_new_int (7);
    cr_assert_eq (zi_json_append (obj, &value), ZI_ERR_INVALID, "not an array");
    cr_assert_not_null (value);
    cr_assert_eq (zi_json_set (number, "k", &value), ZI_ERR_INVALID, "not an object");
    cr_assert_not_null (value);
    cr_assert_eq (zi_json_set (obj, NULL, &value), ZI_ERR_INVALID);
    zi_json_t *none = NULL;
    cr_assert_eq (zi_json_set (obj, "k", &none), ZI_ERR_INVALID);
    cr_assert_eq (zi_json_set (obj, "k", NULL), ZI_ERR_INVALID);
    cr_assert_eq (zi_json_set (obj, "five", &value), 0);
    cr_assert_null (value);
    cr_assert_eq (zi_json_set_str (obj, "s", NULL), ZI_ERR_INVALID);
    cr_assert_eq (zi_json_set_int (obj, NULL, 1), ZI_ERR_INVALID);
    cr_assert_eq (zi_json_append_int (NULL, 1), ZI_ERR_INVALID);
    cr_assert_null (zi_json_set_object (number, "x"));
    cr_assert_null (zi_json_append_array (obj));
    cr_assert_null (zi_json_new_string (NULL));
    zi_json_destroy (&number);

    //  Grow past the hash threshold, then replace and look up.
    for (int i = 0; i < 100; i++) {
        char key[16];
        snprintf (key, sizeof key, "key%d", i);
        cr_assert_eq (zi_json_set_int (obj, key, i), 0);
    }
    cr_assert_eq (zi_json_set_int (obj, "key50", -50), 0);
    cr_assert_eq (zi_json_size (obj), 104);
    cr_assert_eq (zi_json_num (zi_json_get (obj, "key50")), -50.0);
    cr_assert_eq (zi_json_num (zi_json_get (obj, "key99")), 99.0);

    zi_json_t *copy = zi_json_dup (obj);
    cr_assert (zi_json_equal (obj, copy));
    zi_json_set_int (copy, "key0", 1000);
    cr_assert_not (zi_json_equal (obj, copy));
    zi_json_destroy (&copy);
    s_assert_round_trip (obj);
    zi_json_destroy (&obj);
}

Test (json, equality_follows_json_schema)
{
    zi_json_t *a = s_parse_ok ("{\"x\": [1, 2.0, \"s\", null, true], \"y\": {\"p\": 1, \"q\": 2}}");
    zi_json_t *b =
        s_parse_ok ("{\"y\": {\"q\": 2.0, \"p\": 1e0}, \"x\": [1.0, 2, \"s\", null, true]}");
    zi_json_t *c = s_parse_ok ("{\"y\": {\"q\": 2, \"p\": 1}, \"x\": [1, 2, \"s\", null, false]}");
    zi_json_t *d = s_parse_ok ("{\"y\": {\"q\": 2, \"r\": 1}, \"x\": [1, 2, \"s\", null, true]}");
    cr_assert (zi_json_equal (a, b));
    cr_assert_not (zi_json_equal (a, c));
    cr_assert_not (zi_json_equal (a, d));
    cr_assert_not (zi_json_equal (a, NULL));
    cr_assert (zi_json_equal (NULL, NULL));
    zi_json_destroy (&a);
    zi_json_destroy (&b);
    zi_json_destroy (&c);
    zi_json_destroy (&d);
}

Test (json, files_are_read_and_written)
{
    char dir[] = "/tmp/zi_json_test_XXXXXX";
    cr_assert_not_null (mkdtemp (dir));
    char path[256];
    snprintf (path, sizeof path, "%s/doc.json", dir);
    zi_json_t *doc = s_parse_ok (s_rich);
    char err[256];
    cr_assert_eq (zi_json_write_file (doc, path, err, sizeof err), 0, "%s", err);
    zi_json_t *back = NULL;
    cr_assert_eq (zi_json_parse_file (path, NULL, &back, err, sizeof err), 0, "%s", err);
    cr_assert (zi_json_equal (doc, back));
    zi_json_destroy (&back);

    //  The file ends with a newline and nothing is left beside it.
    FILE *file = fopen (path, "rb");
    cr_assert_not_null (file);
    fseek (file, -1, SEEK_END);
    cr_assert_eq (fgetc (file), '\n');
    fclose (file);

    //  Errors name the file.
    zi_json_opts_t small = {.max_input = 16};
    cr_assert_eq (zi_json_parse_file (path, &small, &back, err, sizeof err), ZI_ERR_LIMIT);
    cr_assert (strstr (err, "more than the limit of 16 bytes"), "%s", err);
    file = fopen (path, "w");
    fputs ("{\n  \"a\": tru\n}\n", file);
    fclose (file);
    cr_assert_eq (zi_json_parse_file (path, NULL, &back, err, sizeof err), ZI_ERR_MALFORMED);
    char want[300];
    snprintf (want, sizeof want, "%s:2:8: invalid literal (expected 'true')", path);
    cr_assert_str_eq (err, want);
    unlink (path);
    cr_assert_eq (zi_json_parse_file (path, NULL, &back, err, sizeof err), ZI_ERR_IO);
    cr_assert (strstr (err, "cannot open"), "%s", err);
    snprintf (path, sizeof path, "%s/no/such/dir/x.json", dir);
    cr_assert_eq (zi_json_write_file (doc, path, err, sizeof err), ZI_ERR_IO);
    zi_json_destroy (&doc);
    cr_assert_eq (rmdir (dir), 0, "a temporary file was left behind");
}

//  ---------------------------------------------------------------------
//  Mutations: 20,000 deterministic corruptions of valid documents. Each
//  must parse or fail cleanly; what parses must survive a round trip.

static const char *s_seeds[] = {
    s_rich,
    "{\"zinfer_plan\": 1, \"hosts\": [{\"name\": \"h1\", \"address\": \"127.0.0.1\"}], "
    "\"segments\": [{\"index\": 0, \"replicas\": [{\"capacity\": 2.5e0}]}]}",
    "[true, false, null, -0.0, \"\\ud83d\\ude00\", {\"\": []}, [[[]]], 1e-5]",
    "\"just a string with \\\"escapes\\\" and \\u00e9\"",
};

Test (json, random_mutations_never_crash)
{
    uint64_t state = 0x2545F4914F6CDD1Dull;
    size_t parsed = 0, rejected = 0;
    char mutated[4096];
    for (int round = 0; round < 20000; round++) {
        const char *seed = s_seeds[round % (sizeof s_seeds / sizeof s_seeds[0])];
        size_t len = strlen (seed);
        memcpy (mutated, seed, len);
        int edits = 1 + (int) (s_rand (&state) % 4);
        for (int e = 0; e < edits && len > 0; e++) {
            size_t at = (size_t) (s_rand (&state) % len);
            uint64_t r = s_rand (&state);
            switch (r % 6) {
                case 0:     //  overwrite a byte with anything
                    mutated[at] = (char) (r >> 8);
                    break;
                case 1:     //  overwrite with a JSON-significant byte
                    mutated[at] = "{}[]\",:\\u0e-+.tfn \n"[(r >> 8) % 20];
                    break;
                case 2:     //  delete a byte
                    memmove (mutated + at, mutated + at + 1, len - at - 1);
                    len--;
                    break;
                case 3:     //  insert a byte
                    if (len + 1 < sizeof mutated) {
                        memmove (mutated + at + 1, mutated + at, len - at);
                        mutated[at] = (char) (r >> 16);
                        len++;
                    }
                    break;
                case 4: {   //  duplicate a slice
                    size_t n = (size_t) ((r >> 8) % 32);
                    if (at + n <= len && len + n < sizeof mutated) {
                        memmove (mutated + at + n, mutated + at, len - at);
                        len += n;
                    }
                    break;
                }
                default:    //  truncate
                    len = at;
                    break;
            }
        }
        zi_json_t *doc = NULL;
        char err[256] = "";
        int rc = s_parse_exact (mutated, len, NULL, &doc, err, sizeof err);
        if (rc == 0) {
            parsed++;
            cr_assert_not_null (doc);
            s_assert_round_trip (doc);
            zi_json_destroy (&doc);
        }
        else {
            rejected++;
            cr_assert_null (doc);
            cr_assert (rc == ZI_ERR_MALFORMED || rc == ZI_ERR_LIMIT, "code %d", rc);
            cr_assert (strncmp (err, "<json>:", 7) == 0, "message without place: %s", err);
        }
    }
    //  The run must exercise both outcomes to mean anything.
    cr_assert_gt (parsed, 500);
    cr_assert_gt (rejected, 10000);
}

//  ---------------------------------------------------------------------
//  JSON Schema subset

//  Validate doc against schema (both JSON text); expect error fragment, or
//  success when fragment is NULL.
static void
s_check_schema (const char *schema_text, const char *doc_text, const char *fragment)
{
    zi_json_t *schema = s_parse_ok (schema_text);
    zi_json_t *doc = s_parse_ok (doc_text);
    char err[512] = "";
    int rc = zi_json_schema_validate (schema, doc, err, sizeof err);
    if (fragment) {
        cr_assert_eq (rc, ZI_ERR_MALFORMED, "%s should fail against %s", doc_text, schema_text);
        cr_assert (strstr (err, fragment), "error <%s> lacks <%s>", err, fragment);
    }
    else {
        cr_assert_eq (rc, 0, "%s should pass: %s", doc_text, err);
    }
    zi_json_destroy (&schema);
    zi_json_destroy (&doc);
}

Test (schema, types)
{
    s_check_schema ("{\"type\": \"integer\"}", "3", NULL);
    s_check_schema ("{\"type\": \"integer\"}", "3.0", NULL);
    s_check_schema ("{\"type\": \"integer\"}", "3.5", "expected integer (got number 3.5)");
    s_check_schema ("{\"type\": \"number\"}", "\"3\"", "expected number (got string \"3\")");
    s_check_schema ("{\"type\": \"string\"}", "[1]", "expected string (got an array)");
    s_check_schema ("{\"type\": \"object\"}", "null", "expected object (got null)");
    s_check_schema ("{\"type\": \"boolean\"}", "false", NULL);
    s_check_schema ("{\"type\": \"null\"}", "0", "expected null (got number 0)");
    s_check_schema ("{\"type\": [\"string\", \"null\", \"array\"]}", "null", NULL);
    s_check_schema ("{\"type\": [\"string\", \"null\", \"array\"]}", "true",
                    "expected string, null or array (got boolean true)");
}

Test (schema, values_and_ranges)
{
    s_check_schema ("{\"enum\": [\"a\", 1, null]}", "1.0", NULL);
    s_check_schema ("{\"enum\": [\"a\", 1, null]}", "\"b\"",
                    "must be one of \"a\", 1, null (got \"b\")");
    s_check_schema ("{\"const\": {\"v\": [1]}}", "{\"v\": [1.0]}", NULL);
    s_check_schema ("{\"const\": 1}", "2", "must be 1 (got 2)");
    s_check_schema ("{\"minimum\": 0}", "0", NULL);
    s_check_schema ("{\"minimum\": 0}", "-0.5", "must be >= 0 (got -0.5)");
    s_check_schema ("{\"maximum\": 10}", "11", "must be <= 10 (got 11)");
    s_check_schema ("{\"exclusiveMinimum\": 0}", "0", "must be > 0 (got 0)");
    s_check_schema ("{\"exclusiveMinimum\": 0}", "1e-300", NULL);
    s_check_schema ("{\"exclusiveMaximum\": 1.5}", "1.5", "must be < 1.5 (got 1.5)");
    s_check_schema ("{\"maximum\": 9223372036854775807}", "9223372036854775807", NULL);
    s_check_schema ("{\"maximum\": 9223372036854775806}", "9223372036854775807",
                    "must be <= 9223372036854775806");
    //  Bounds apply to numbers only; other types pass them by.
    s_check_schema ("{\"minimum\": 5}", "\"x\"", NULL);
    //  Lengths count code points, not bytes.
    s_check_schema ("{\"maxLength\": 2}", "\"\xc3\xa9\xc3\xa9\"", NULL);
    s_check_schema ("{\"maxLength\": 2}", "\"abc\"", "must have at most 2 characters (got 3)");
    s_check_schema ("{\"minLength\": 1}", "\"\"", "must not be empty");
    s_check_schema ("{\"minLength\": 3}", "\"ab\"", "must have at least 3 characters (got 2)");
    s_check_schema ("{\"minItems\": 2}", "[1]", "must have at least 2 items (got 1)");
    s_check_schema ("{\"maxItems\": 1}", "[1, 2]", "must have at most 1 item (got 2)");
}

Test (schema, objects_and_paths)
{
    const char *schema =
        "{\"type\": \"object\", \"additionalProperties\": false, \"required\": [\"hosts\"],"
        " \"properties\": {\"hosts\": {\"type\": \"array\", \"items\": {\"$ref\": "
        "\"#/$defs/host\"}}, \"odd key\": {\"type\": \"integer\"}, \"a/b~c\": true},"
        " \"$defs\": {\"host\": {\"type\": \"object\", \"required\": [\"name\"],"
        " \"properties\": {\"name\": {\"type\": \"string\"}, \"port\": {\"type\": "
        "\"integer\", \"minimum\": 1}}, \"additionalProperties\": {\"type\": \"string\"}}}}";
    s_check_schema (schema, "{\"hosts\": [{\"name\": \"h1\", \"port\": 1, \"x\": \"y\"}]}", NULL);
    s_check_schema (schema, "{}", "missing required field \"hosts\"");
    s_check_schema (schema, "{\"hosts\": [], \"extra\": 1}", "unknown field \"extra\"");
    s_check_schema (schema, "{\"hosts\": [{\"name\": \"a\"}, {\"port\": 2}]}",
                    "hosts[1]: missing required field \"name\"");
    s_check_schema (schema, "{\"hosts\": [{\"name\": \"a\", \"port\": 0}]}",
                    "hosts[0].port: must be >= 1 (got 0)");
    s_check_schema (schema, "{\"hosts\": [{\"name\": \"a\", \"x\": 1}]}",
                    "hosts[0].x: expected string (got number 1)");
    s_check_schema (schema, "{\"hosts\": [], \"odd key\": 1.5}",
                    "[\"odd key\"]: expected integer");
    s_check_schema (schema, "{\"hosts\": [], \"a/b~c\": 1}", NULL);
    //  At the root the message stands alone.
    char err[256];
    zi_json_t *s = s_parse_ok (schema);
    zi_json_t *d = s_parse_ok ("[]");
    cr_assert_eq (zi_json_schema_validate (s, d, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert_str_eq (err, "expected object (got an array)");
    zi_json_destroy (&s);
    zi_json_destroy (&d);
    //  JSON pointers with escapes resolve.
    s_check_schema ("{\"$ref\": \"#/$defs/a~1b/items\", \"$defs\": {\"a/b\": {\"items\": "
                    "{\"const\": 1}}}}", "1", NULL);
    s_check_schema ("{\"$ref\": \"#/definitions/x/allOf/0\", \"definitions\": {\"x\": "
                    "{\"allOf\": [{\"const\": 2}]}}}", "3", "must be 2 (got 3)");
}

Test (schema, combinators)
{
    //  allOf: all must hold.
    s_check_schema ("{\"allOf\": [{\"minimum\": 1}, {\"maximum\": 2}]}", "3", "must be <= 2");
    //  anyOf: the complaint from the branch that got furthest.
    const char *any =
        "{\"anyOf\": [{\"type\": \"string\"}, {\"type\": \"object\", \"properties\": "
        "{\"deep\": {\"properties\": {\"x\": {\"type\": \"integer\"}}}}}]}";
    s_check_schema (any, "\"s\"", NULL);
    s_check_schema (any, "{\"deep\": {\"x\": \"no\"}}", "deep.x: expected integer");
    s_check_schema (any, "5", "expected string (got number 5)");
    //  oneOf: exactly one.
    const char *one = "{\"oneOf\": [{\"type\": \"integer\"}, {\"minimum\": 10}]}";
    s_check_schema (one, "3", NULL);
    s_check_schema (one, "10.5", NULL);
    s_check_schema (one, "12", "matches more than one allowed form (#1 and #2)");
    //  if / then / else.
    const char *cond =
        "{\"if\": {\"properties\": {\"kind\": {\"const\": \"a\"}}, \"required\": [\"kind\"]},"
        " \"then\": {\"required\": [\"alpha\"]}, \"else\": {\"required\": [\"beta\"]}}";
    s_check_schema (cond, "{\"kind\": \"a\", \"alpha\": 1}", NULL);
    s_check_schema (cond, "{\"kind\": \"a\"}", "missing required field \"alpha\"");
    s_check_schema (cond, "{\"kind\": \"b\"}", "missing required field \"beta\"");
    //  A failed "if" leaves no trace in the path of the error that follows.
    zi_json_t *schema = s_parse_ok ("{\"if\": {\"properties\": {\"b\": {\"const\": 1}}},"
                                    " \"then\": true, \"else\": {\"required\": [\"q\"]}}");
    zi_json_t *doc = s_parse_ok ("{\"b\": 2}");
    char err[256];
    cr_assert_eq (zi_json_schema_validate (schema, doc, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert_str_eq (err, "missing required field \"q\"");
    zi_json_destroy (&schema);
    zi_json_destroy (&doc);
    //  Boolean schemas.
    s_check_schema ("true", "{\"anything\": 1}", NULL);
    s_check_schema ("{\"properties\": {\"x\": false}}", "{\"x\": 1}", "x: not allowed here");
}

Test (schema, malformed_schemas_are_refused)
{
    struct {
        const char *schema;
        int code;
        const char *fragment;
    } cases[] = {
        {"{\"pattern\": \"^a\"}", ZI_ERR_UNSUPPORTED, "schema: #: unsupported keyword \"pattern\""},
        {"{\"properties\": {\"x\": {\"format\": \"uri\"}}}", ZI_ERR_UNSUPPORTED,
         "schema: #/properties/x: unsupported keyword \"format\""},
        {"{\"$ref\": \"#/$defs/missing\"}", ZI_ERR_INVALID, "must be a local reference"},
        {"{\"$ref\": \"http://example.com/s.json\"}", ZI_ERR_INVALID, "local reference"},
        {"{\"type\": \"float\"}", ZI_ERR_INVALID, "\"type\" must name"},
        {"{\"type\": []}", ZI_ERR_INVALID, "\"type\" must name"},
        {"{\"enum\": []}", ZI_ERR_INVALID, "non-empty array"},
        {"{\"minItems\": -1}", ZI_ERR_INVALID, "non-negative integer"},
        {"{\"minimum\": \"0\"}", ZI_ERR_INVALID, "must be a number"},
        {"{\"required\": [1]}", ZI_ERR_INVALID, "array of strings"},
        {"{\"allOf\": {}}", ZI_ERR_INVALID, "non-empty array of schemas"},
        {"{\"items\": 3}", ZI_ERR_INVALID, "schema: #/items: a schema must be"},
        {"{\"$defs\": {\"a~b\": {\"oneOf\": [true, {\"x-custom\": 1}]}}}", ZI_ERR_UNSUPPORTED,
         "#/$defs/a~0b/oneOf/1: unsupported keyword \"x-custom\""},
        {"[]", ZI_ERR_INVALID, "a schema must be an object or a boolean"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        zi_json_t *schema = s_parse_ok (cases[i].schema);
        zi_json_t *doc = s_parse_ok ("1");
        char err[256] = "";
        cr_assert_eq (zi_json_schema_check (schema, err, sizeof err), cases[i].code,
                      "%s: %s", cases[i].schema, err);
        cr_assert (strstr (err, cases[i].fragment), "%s: <%s>", cases[i].schema, err);
        cr_assert_eq (zi_json_schema_validate (schema, doc, err, sizeof err), cases[i].code);
        zi_json_destroy (&schema);
        zi_json_destroy (&doc);
    }
    cr_assert_eq (zi_json_schema_check (NULL, NULL, 0), ZI_ERR_INVALID);
}

Test (schema, reference_loops_end)
{
    //  A schema that refers to itself forever is cut off, not followed
    //  until the stack runs out.
    zi_json_t *schema = s_parse_ok ("{\"$ref\": \"#\"}");
    zi_json_t *doc = s_parse_ok ("{}");
    char err[256];
    cr_assert_eq (zi_json_schema_validate (schema, doc, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert (strstr (err, "a $ref loop?"), "%s", err);
    zi_json_destroy (&schema);
    //  Recursive schemas over finite data are fine.
    schema = s_parse_ok ("{\"type\": \"array\", \"items\": {\"$ref\": \"#\"}}");
    zi_json_destroy (&doc);
    doc = s_parse_ok ("[[[], [[]]], []]");
    cr_assert_eq (zi_json_schema_validate (schema, doc, err, sizeof err), 0, "%s", err);
    zi_json_destroy (&doc);
    doc = s_parse_ok ("[[[], [[1]]], []]");
    cr_assert_eq (zi_json_schema_validate (schema, doc, err, sizeof err), ZI_ERR_MALFORMED);
    cr_assert_str_eq (err, "[0][1][0][0]: expected array (got number 1)");
    zi_json_destroy (&doc);
    zi_json_destroy (&schema);
}
