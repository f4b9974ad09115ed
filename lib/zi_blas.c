/*  zi_blas.c - OpenBLAS core selection; see zi_blas.h for why. */
#include "zi_blas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "zi_log.h"

//  From OpenBLAS's cblas.h; declared here to keep cblas.h out of this file.
extern char *openblas_get_corename (void);
extern void openblas_set_num_threads (int num_threads);

const char *
zi_blas_corename (void)
{
    const char *name = openblas_get_corename ();
    return name ? name : "?";
}

const char *
zi_blas_wanted_coretype (void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init ();
    if (__builtin_cpu_supports ("avx512f") && __builtin_cpu_supports ("avx512bw")
        && __builtin_cpu_supports ("avx512vl") && __builtin_cpu_supports ("avx512dq")) {
        return "SKYLAKEX";
    }
    if (__builtin_cpu_supports ("avx2") && __builtin_cpu_supports ("fma")) {
        return "HASWELL";
    }
#endif
    return NULL;
}

//  Cores whose sgemm kernels use AVX-512 or AVX2: anything else on a CPU that
//  has those is a fallback.
static int
s_core_rank (const char *name)
{
    static const char *avx512[] = {"skylakex", "cooperlake", "sapphirerapids", NULL};
    static const char *avx2[] = {"haswell", "zen", "skylake", NULL};
    for (int i = 0; avx512[i]; i++) {
        if (strcasecmp (name, avx512[i]) == 0) {
            return 2;
        }
    }
    for (int i = 0; avx2[i]; i++) {
        if (strcasecmp (name, avx2[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

int
zi_blas_is_degraded (void)
{
    const char *want = zi_blas_wanted_coretype ();
    if (!want) {
        return 0;
    }
    int want_rank = strcmp (want, "SKYLAKEX") == 0 ? 2 : 1;
    return s_core_rank (zi_blas_corename ()) < want_rank;
}

int
zi_blas_init (int argc, char **argv)
{
    (void) argc;
    const char *want = zi_blas_wanted_coretype ();
    const char *set = getenv ("OPENBLAS_CORETYPE");
    if (!zi_blas_is_degraded () || set || getenv ("ZI_BLAS_NO_REEXEC")) {
        if (zi_blas_is_degraded ()) {
            zi_log_warn ("BLAS-DEGRADED",
                         "OpenBLAS uses %s kernels; this CPU supports %s "
                         "(OPENBLAS_CORETYPE=%s is set, not overriding)",
                         zi_blas_corename (), want, set ? set : "(unset)");
        }
        return 0;
    }
    //  Guard against an exec loop if the variable does not take effect.
    if (getenv ("ZI_BLAS_REEXEC")) {
        zi_log_warn ("BLAS-DEGRADED", "OpenBLAS still uses %s after re-exec",
                     zi_blas_corename ());
        return 0;
    }
    setenv ("OPENBLAS_CORETYPE", want, 1);
    setenv ("ZI_BLAS_REEXEC", "1", 1);
    //  OpenBLAS starts a thread per core at load, which spins (sched_yield)
    //  for a while before it sleeps: in a broker, a stage or a client that
    //  never multiplies a matrix that is CPU taken from the workers. Our
    //  kernels run on their own pool and set OpenBLAS to one thread
    //  whenever they use it (zi_exec.c), and openblas_set_num_threads can
    //  still raise it, so start with one unless the user chose.
    if (!getenv ("OPENBLAS_NUM_THREADS") && !getenv ("OMP_NUM_THREADS")) {
        setenv ("OPENBLAS_NUM_THREADS", "1", 1);
    }
    zi_log_debug ("BLAS-REEXEC", "OpenBLAS chose %s; restarting with "
                  "OPENBLAS_CORETYPE=%s", zi_blas_corename (), want);
    execv ("/proc/self/exe", argv);
    zi_log_warn ("BLAS-REEXEC-FAILED", "could not re-exec to set "
                 "OPENBLAS_CORETYPE=%s; continuing with %s", want,
                 zi_blas_corename ());
    return 0;
}

void
zi_blas_set_threads (int n)
{
    if (n >= 1) {
        openblas_set_num_threads (n);
    }
}
