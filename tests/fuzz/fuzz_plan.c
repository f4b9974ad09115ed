/*  fuzz_plan.c - libFuzzer harness for the JSON parser and the plan loader.

    Every process of a pipeline starts from a plan file an operator (or a
    tool) wrote: zi_plan_parse runs the JSON parser, the schema validator and
    the cross-field checks on it. Arbitrary bytes must give a plan or an
    error, never a crash, a leak or an unbounded allocation. When the bytes
    do parse as a plan, writing it back and reading that must succeed too.
    Seeds: tests/corpus/plan/ (the example plans).
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zi_json.h"
#include "zi_plan.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char err[512];
    zi_json_t *doc = NULL;
    zi_json_opts_t opts = {.source = "fuzz.json"};
    if (zi_json_parse ((const char *) data, size, &opts, &doc, err, sizeof err) == 0) {
        size_t len = 0;
        char *text = zi_json_dump (doc, ZI_JSON_COMPACT, &len);
        if (text) {
            zi_json_t *again = NULL;
            //  what we write, we must read back
            if (zi_json_parse (text, len, &opts, &again, err, sizeof err) != 0) {
                abort ();
            }
            zi_json_destroy (&again);
            free (text);
        }
        zi_json_destroy (&doc);
    }
    zi_plan_t *plan = zi_plan_parse ((const char *) data, size, "fuzz.json", err, sizeof err);
    if (plan) {
        zi_json_t *out = NULL;
        if (zi_plan_to_json (plan, &out) == 0) {
            size_t len = 0;
            char *text = zi_json_dump (out, ZI_JSON_PRETTY, &len);
            zi_plan_t *back = text ? zi_plan_parse (text, len, "rewritten", err, sizeof err)
                                   : NULL;
            if (text && !back) {
                abort ();   //  a loaded plan must survive a write + load
            }
            zi_plan_destroy (&back);
            free (text);
            zi_json_destroy (&out);
        }
        zi_plan_destroy (&plan);
    }
    return 0;
}
