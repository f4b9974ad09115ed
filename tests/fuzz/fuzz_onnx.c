/*  fuzz_onnx.c - libFuzzer harness for the model and tensor file readers.

    Feeds arbitrary bytes to zi_onnx_load_buffer (a model.onnx), to
    zi_onnx_load_tensor_buffer (an input_N.pb) and to zi_npy_read_buffer (a
    .npy file): the three decoders of untrusted files an operator hands us.
    External data is resolved against an empty temporary directory, so a
    model naming "w.bin" exercises the path checks and the not-found path
    but can never read a real file. Seeds: tests/corpus/onnx/.

        CC=clang-14 cmake -S . -B build-fuzz -DZINFER_FUZZ=ON -DZINFER_TESTS=OFF
        cmake --build build-fuzz --target fuzz_onnx
        build-fuzz/fuzz_onnx -max_total_time=60 corpus-copy/
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zi_npy.h"
#include "zi_onnx.h"

static char s_dir[] = "/tmp/fuzz_onnx_XXXXXX";

static void
s_cleanup (void)
{
    rmdir (s_dir);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    if (!mkdtemp (s_dir)) {
        abort ();
    }
    atexit (s_cleanup);
    return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char err[512];
    zi_graph_t *g = zi_onnx_load_buffer (data, size, s_dir, err, sizeof err);
    zi_graph_destroy (&g);

    char *name = NULL;
    zi_tensor_t *t = zi_onnx_load_tensor_buffer (data, size, &name, err, sizeof err);
    //  The name is only returned with a tensor.
    if (!t && name) {
        abort ();
    }
    free (name);
    zi_tensor_destroy (&t);

    if (zi_npy_read_buffer (data, size, "fuzz.npy", &t, err, sizeof err) == 0) {
        //  A decoded tensor must be exactly as large as its shape says.
        size_t nbytes;
        if (zi_shape_nbytes (t->dtype, t->rank, t->ne, &nbytes) || nbytes != t->nbytes) {
            abort ();
        }
    }
    zi_tensor_destroy (&t);
    return 0;
}
