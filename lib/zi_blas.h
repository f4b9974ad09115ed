/*  zi_blas.h - make sure OpenBLAS runs the right kernels for this CPU.

    Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) picks its kernels once, in its
    library constructor, from CPUID. On some CPUs it does not recognise the
    model and falls back to slow SSE3 kernels ("Prescott"), 3-5x slower for
    sgemm. The variable OPENBLAS_CORETYPE overrides the choice, but only if
    it is in the environment BEFORE the library is loaded, so a running
    process cannot fix itself without starting again.

    zi_blas_init() is the first call of every zinfer program's main(): if
    OpenBLAS chose a weaker core than the CPU supports and the user has not
    set OPENBLAS_CORETYPE, it sets it (SKYLAKEX for AVX-512 F/BW/VL/DQ,
    HASWELL for AVX2 + FMA) and re-executes the program once with the same
    arguments. A CPU without those features keeps OpenBLAS's own choice, so
    correctness never depends on this. ZI_BLAS_NO_REEXEC=1 disables it.
    The re-executed program also gets OPENBLAS_NUM_THREADS=1 unless
    OPENBLAS_NUM_THREADS or OMP_NUM_THREADS is set: zinfer's kernels have
    their own thread pool, and OpenBLAS's idle threads spin at start-up on
    cores the workers need (a client measured it at 17 % of its CPU).
*/
#ifndef ZI_BLAS_H_INCLUDED
#define ZI_BLAS_H_INCLUDED

#ifdef __cplusplus
extern "C" {
#endif

//  Check the kernel choice and re-exec with OPENBLAS_CORETYPE when it is
//  worse than the CPU allows. Returns only when no re-exec was needed (or
//  the exec failed, which is logged): returns 0.
int zi_blas_init (int argc, char **argv);

//  The core type OpenBLAS is using ("SkylakeX", "Haswell", "Prescott", ...).
const char *zi_blas_corename (void);

//  The core type this CPU supports best, as OPENBLAS_CORETYPE spells it, or
//  NULL when OpenBLAS's own choice should stand.
const char *zi_blas_wanted_coretype (void);

//  True when OpenBLAS's current choice is weaker than the CPU allows.
int zi_blas_is_degraded (void);

//  Set the number of threads OpenBLAS uses (n >= 1).
void zi_blas_set_threads (int n);

#ifdef __cplusplus
}
#endif

#endif
