/*  fuzz_msg.c - libFuzzer harness for the ZIP/1 decoder (lib/zi_msg.c).

    The input is split into a multipart message:

        byte 0          k = number of tensor frames (its low 2 bits: 0..3)
        bytes 1..2k     k little-endian uint16 frame lengths
        next            the k tensor frames' bytes, in order (a length past
                        the end of the input is cut short)
        rest            the header frame

    Each input is decoded three ways: zi_msg_decode on that message, and
    the pure header decoder on the header part and on the raw input. A
    message that decodes must encode again and decode again: the encoder
    and decoder must agree on what is valid.

    Seeds: tests/corpus/msg (written by test_msg with ZI_WRITE_CORPUS=dir).
    Run: tests/fuzz/run-fuzzers.sh <build-dir> [seconds]
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zi_msg.h"

static void
s_check (int rc)
{
    //  Anything else means the decoder invented a new way to fail.
    if (rc != 0 && rc != ZI_ERR_MALFORMED && rc != ZI_ERR_VERSION
        && rc != ZI_ERR_LIMIT) {
        fprintf (stderr, "unexpected return %d (%s)\n", rc, zi_strerror (rc));
        abort ();
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char err[256];
    s_check (zi_msg_decode_header (data, size, NULL, err, sizeof err));
    if (size == 0) {
        return 0;
    }
    size_t k = data[0] & 3;
    size_t pos = 1;
    size_t lens[3] = {0};
    for (size_t i = 0; i < k; i++) {
        if (pos + 2 <= size) {
            lens[i] = (size_t) data[pos] | (size_t) data[pos + 1] << 8;
            pos += 2;
        }
    }
    zmsg_t *tensors = zmsg_new ();
    for (size_t i = 0; i < k; i++) {
        size_t n = lens[i] < size - pos ? lens[i] : size - pos;
        zmsg_addmem (tensors, data + pos, n);
        pos += n;
    }
    //  Copy the header to an exact-size buffer so ASan catches overreads.
    size_t hlen = size - pos;
    uint8_t *header = (uint8_t *) malloc (hlen ? hlen : 1);
    memcpy (header, data + pos, hlen);
    s_check (zi_msg_decode_header (header, hlen, NULL, err, sizeof err));

    zmsg_t *zmsg = zmsg_new ();
    zmsg_addmem (zmsg, header, hlen);
    free (header);
    zframe_t *frame;
    while ((frame = zmsg_pop (tensors))) {
        zmsg_append (zmsg, &frame);
    }
    zmsg_destroy (&tensors);

    zi_msg_t *msg = NULL;
    int rc = zi_msg_decode (&zmsg, &msg, err, sizeof err);
    s_check (rc);
    if ((rc == 0) != (msg != NULL) || zmsg != NULL) {
        abort ();
    }
    if (msg) {
        char line[512];
        zi_msg_summary (msg, line, sizeof line);
        zi_cmd_t cmd = zi_msg_cmd (msg);
        rc = zi_msg_encode (&msg, &zmsg);
        //  Re-encoding may grow a header near the limit (dtype aliases
        //  become full names, integers become floats): LIMIT is fair.
        if (rc != 0 && rc != ZI_ERR_LIMIT) {
            fprintf (stderr, "re-encode failed: %d\n", rc);
            abort ();
        }
        if (rc == 0) {
            rc = zi_msg_decode (&zmsg, &msg, err, sizeof err);
            if (rc != 0 || zi_msg_cmd (msg) != cmd) {
                fprintf (stderr, "re-decode failed: %d %s\n", rc, err);
                abort ();
            }
        }
        zi_msg_destroy (&msg);
    }
    return 0;
}
