/*  zi_gemm.c - packed-B GEMM with a fused epilogue; see zi_gemm.h.

    Why our own kernel: with the executor's pool, OpenBLAS runs on one
    thread inside the pool's tasks, and every sgemm call then re-packs B,
    which for a weight matrix is the same work every inference. Packing a
    constant B once and keeping 8x32 accumulators in registers over the
    whole K, with bias and ReLU applied before the only store, is what ONNX
    Runtime's MLAS does too.

    The product is FMA-bound: per k, 2 loads of B, 8 broadcasts of A and 16
    FMAs. A is read in place (row stride lda, or column stride for transA);
    a B panel of K x 32 floats (128 KiB at K = 1024) stays in L2 while all
    row blocks pass over it, so no K blocking is needed for the shapes we
    meet (K up to a few thousand).

    Floating-point contraction is off in this file: the epilogue's
    alpha * acc + beta * c must be the same two roundings in every
    specialisation the compiler might make, or results would depend on
    which code path (fused or not) computed them.
*/
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "zi_gemm.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define S_HAVE_X86 1
#else
#define S_HAVE_X86 0
#endif

#define S_NR 32                 //  columns per panel: two zmm
#define S_MR 8                  //  rows per tile: 16 accumulators
#define S_MC 128                //  rows of A kept in L2 across panels
#define S_ALIGN 64
//  Below this cost (s_cost: about 10 us on one core) a product runs on the
//  calling thread alone. A pool round trip costs ~1 us while the helpers
//  spin, but tens of us when another process holds a helper's core, and
//  the static split then waits for it: for a transformer's 32x32
//  projections that cost more than the second core ever gave back.
#define S_MIN_PARALLEL (1024.0 * 1024)
//  Portable path: products of at least this many multiply-adds are cut into
//  fixed chunks of columns (or rows) for the pool.
#define S_CHUNK_MIN_WORK (256 * 1024)
#define S_CHUNK_COLS 128
#define S_CHUNK_ROWS 64

struct zi_gemm_pack {
    const float *src;           //  what it was packed from
    int64_t ldb;
    bool tb;
    int64_t K, N;
    float *data;                //  (npanels, K, nr), zero-padded columns
    size_t bytes;
};

//  Multiply-adds of a product, in double: M N K can exceed int64.
static double
s_work (const zi_gemm_t *g)
{
    return (double) g->M * (double) g->N * (double) (g->K ? g->K : 1);
}

//  What a product costs, in multiply-adds, for the choice of threads: a
//  thin one (M = 1 for a batch of one) is bound by streaming B from L3 or
//  memory, not by FMAs, so each element of B counts as 4 more.
static double
s_cost (const zi_gemm_t *g)
{
    return s_work (g) + 4.0 * (double) g->K * (double) g->N;
}

//  Path selection ----------------------------------------------------------

static atomic_int s_mode = -1;      //  -1 undecided, 0 portable, 1 AVX-512

static bool
s_cpu_avx512 (void)
{
#if S_HAVE_X86
    __builtin_cpu_init ();
    return __builtin_cpu_supports ("avx512f");
#else
    return false;
#endif
}

bool
zi_gemm_avx512 (void)
{
    int mode = atomic_load_explicit (&s_mode, memory_order_relaxed);
    if (mode < 0) {
        const char *off = getenv ("ZI_NN_NO_AVX512");
        bool disabled = off && *off && strcmp (off, "0") != 0;
        mode = !disabled && s_cpu_avx512 ();
        atomic_store (&s_mode, mode);
    }
    return mode == 1;
}

void
zi_gemm_set_avx512 (int mode)
{
    atomic_store (&s_mode, mode < 0 ? -1 : (mode > 0 && s_cpu_avx512 ()));
}

//  Packing -----------------------------------------------------------------

//  Panel width: two zmm, or one when the whole of N fits in 16 (a narrow
//  output would waste half of every FMA on padding).
static int64_t
s_nr (int64_t N)
{
    return N <= 16 ? 16 : S_NR;
}

static size_t
s_pack_floats (int64_t K, int64_t N)
{
    int64_t nr = s_nr (N);
    return (size_t) ((N + nr - 1) / nr) * (size_t) K * (size_t) nr;
}

static float *
s_aligned_floats (size_t n)
{
    size_t bytes = (n * sizeof (float) + S_ALIGN - 1) / S_ALIGN * S_ALIGN;
    return (float *) aligned_alloc (S_ALIGN, bytes ? bytes : S_ALIGN);
}

typedef struct {
    float *dst;                 //  (npanels, K, nr)
    const float *B;
    int64_t ldb, K, N, nr;
    bool tb;
} s_packjob_t;

//  Panels [lo, hi) of op(B) (K,N) -> dst.
static void
s_pack_panels (void *varg, int64_t lo, int64_t hi, int thread)
{
    (void) thread;
    const s_packjob_t *pj = (const s_packjob_t *) varg;
    int64_t K = pj->K, nr = pj->nr;
    for (int64_t p = lo; p < hi; p++) {
        float *d = pj->dst + p * K * nr;
        int64_t j0 = p * nr;
        int64_t nc = pj->N - j0 < nr ? pj->N - j0 : nr;
        if (!pj->tb) {
            //  op(B) row k = B row k: nr contiguous floats per k
            for (int64_t k = 0; k < K; k++) {
                memcpy (d + k * nr, pj->B + k * pj->ldb + j0, (size_t) nc * sizeof (float));
                memset (d + k * nr + nc, 0, (size_t) (nr - nc) * sizeof (float));
            }
        }
        else {
            //  op(B) column j = B row j: read 8 rows of B at once, so each
            //  write fills 8 adjacent floats of a packed row
            if (nc < nr) {
                memset (d, 0, (size_t) (K * nr) * sizeof (float));
            }
            int64_t jj = 0;
            for (; jj + 8 <= nc; jj += 8) {
                const float *src = pj->B + (j0 + jj) * pj->ldb;
                for (int64_t k = 0; k < K; k++) {
                    float *o = d + k * nr + jj;
                    for (int q = 0; q < 8; q++) {
                        o[q] = src[q * pj->ldb + k];
                    }
                }
            }
            for (; jj < nc; jj++) {
                const float *src = pj->B + (j0 + jj) * pj->ldb;
                for (int64_t k = 0; k < K; k++) {
                    d[k * nr + jj] = src[k];
                }
            }
        }
    }
}

static void
s_pack_into (float *dst, const float *B, int64_t ldb, bool tb, int64_t K, int64_t N,
             zi_pool_t *pool)
{
    s_packjob_t pj = {dst, B, ldb, K, N, s_nr (N), tb};
    int64_t np = (N + pj.nr - 1) / pj.nr;
    zi_pool_for ((double) K * (double) N >= S_MIN_PARALLEL ? pool : NULL, np, 1, s_pack_panels,
                 &pj);
}

void
zi_gemm_pack_destroy (zi_gemm_pack_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    free ((*self_p)->data);
    free (*self_p);
    *self_p = NULL;
}

size_t
zi_gemm_pack_bytes (const zi_gemm_pack_t *self)
{
    return self ? self->bytes + sizeof *self : 0;
}

static bool
s_pack_matches (const zi_gemm_pack_t *pk, const zi_gemm_t *g)
{
    return pk && pk->src == g->B && pk->ldb == g->ldb && pk->tb == g->tb && pk->K == g->K
           && pk->N == g->N;
}

static zi_gemm_pack_t *
s_pack_new (const zi_gemm_t *g, zi_pool_t *pool)
{
    zi_gemm_pack_t *self = (zi_gemm_pack_t *) calloc (1, sizeof *self);
    if (!self) {
        return NULL;
    }
    size_t n = s_pack_floats (g->K, g->N);
    self->data = s_aligned_floats (n);
    if (!self->data) {
        free (self);
        return NULL;
    }
    self->src = g->B;
    self->ldb = g->ldb;
    self->tb = g->tb;
    self->K = g->K;
    self->N = g->N;
    self->bytes = n * sizeof (float);
    s_pack_into (self->data, g->B, g->ldb, g->tb, g->K, g->N, pool);
    return self;
}

//  Epilogue shared by both paths' scalar parts ------------------------------

//  y (n,) = act (y + beta * c), c (n,) with stride c_cs (0 or 1).
static void
s_row_epilogue (float *y, int64_t n, const float *c, int64_t c_cs, float beta,
                zi_nn_act_t act)
{
    if (c) {
        for (int64_t j = 0; j < n; j++) {
            float u = c[j * c_cs];
            if (beta != 1.0f) {
                u = beta * u;
            }
            y[j] = y[j] + u;
        }
    }
    zi_nn_act_apply (y, n, act);
}

//  AVX-512 path ------------------------------------------------------------

//  op(B) row k of panel p is at b0 + p * b_panel + k * b_rs: a pack has
//  b_panel = K nr, b_rs = nr; B read in place (not transposed) has
//  b_panel = nr, b_rs = ldb. Loads are masked at the right edge either
//  way, so both give the same bits.
typedef struct {
    const zi_gemm_t *g;
    const float *b0;
    int64_t b_panel, b_rs, nr;
    bool inplace;               //  b0 is B itself, not a pack
    int64_t a_rs, a_cs;         //  op(A) (i,k) = A[i * a_rs + k * a_cs]
    int64_t npanels, nrb;       //  column panels, row blocks of S_MR
} s_job_t;

#if S_HAVE_X86

#define S_AVX512 __attribute__ ((target ("avx512f")))

static inline __attribute__ ((always_inline)) S_AVX512 __mmask16
s_mask (int64_t n)
{
    return n >= 16 ? (__mmask16) 0xFFFF : n <= 0 ? (__mmask16) 0 : (__mmask16) ((1u << n) - 1);
}

//  Rows [i0, i0 + MR) x panel p (NV zmm wide): accumulate over K in
//  registers, then Y = act (alpha acc + beta C), masked at the right edge.
//  INPLACE: B is read where it lies, with masked loads; else from a pack
//  (aligned, zero padded: plain loads, no mask registers in the loop).
static inline __attribute__ ((always_inline)) S_AVX512 void
s_tile (const s_job_t *j, int64_t i0, int64_t p, const int MR, const int NV, const int INPLACE)
{
    const zi_gemm_t *g = j->g;
    const int64_t K = g->K, b_rs = j->b_rs;
    const float *bp = j->b0 + p * j->b_panel;
    const float *a = g->A + i0 * j->a_rs;
    const int64_t a_rs = j->a_rs, a_cs = j->a_cs;
    const int64_t j0 = p * j->nr;
    const int64_t nc = g->N - j0 < j->nr ? g->N - j0 : j->nr;
    const __mmask16 m0 = s_mask (nc), m1 = s_mask (nc - 16);
    __m512 c0[S_MR], c1[S_MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        c0[r] = _mm512_setzero_ps ();
        c1[r] = _mm512_setzero_ps ();
    }
    for (int64_t k = 0; k < K; k++) {
        __m512 b0 = INPLACE ? _mm512_maskz_loadu_ps (m0, bp) : _mm512_load_ps (bp);
        __m512 b1 = NV == 1   ? b0
                    : INPLACE ? _mm512_maskz_loadu_ps (m1, bp + 16)
                              : _mm512_load_ps (bp + 16);
        bp += b_rs;
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            __m512 av = _mm512_set1_ps (a[r * a_rs]);
            c0[r] = _mm512_fmadd_ps (av, b0, c0[r]);
            if (NV > 1) {
                c1[r] = _mm512_fmadd_ps (av, b1, c1[r]);
            }
        }
        a += a_cs;
    }
    //  Epilogue
    const __m512 alpha = _mm512_set1_ps (g->alpha), beta = _mm512_set1_ps (g->beta);
    const __m512 zero = _mm512_setzero_ps ();
    const zi_nn_act_kind_t kind = g->act.kind;
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        __m512 v0 = c0[r], v1 = c1[r];
        if (g->alpha != 1.0f) {
            v0 = _mm512_mul_ps (v0, alpha);
            v1 = _mm512_mul_ps (v1, alpha);
        }
        if (g->C) {
            const float *c = g->C + (i0 + r) * g->c_rs;
            __m512 u0, u1;
            if (g->c_cs) {
                u0 = _mm512_maskz_loadu_ps (m0, c + j0);
                u1 = NV > 1 ? _mm512_maskz_loadu_ps (m1, c + j0 + 16) : u0;
            }
            else {
                u0 = u1 = _mm512_set1_ps (c[0]);
            }
            if (g->beta != 1.0f) {
                u0 = _mm512_mul_ps (u0, beta);
                u1 = _mm512_mul_ps (u1, beta);
            }
            v0 = _mm512_add_ps (v0, u0);
            v1 = _mm512_add_ps (v1, u1);
        }
        //  The same selects as zi_nn_act_apply: max (v, 0) is v > 0 ? v : 0,
        //  max (lo, v) is lo > v ? lo : v, so NaN and -0 come out alike.
        if (kind == ZI_NN_ACT_RELU) {
            v0 = _mm512_max_ps (v0, zero);
            v1 = _mm512_max_ps (v1, zero);
        }
        else if (kind == ZI_NN_ACT_LEAKY_RELU) {
            const __m512 s = _mm512_set1_ps (g->act.alpha);
            v0 = _mm512_add_ps (_mm512_max_ps (v0, zero),
                                _mm512_mul_ps (s, _mm512_min_ps (v0, zero)));
            v1 = _mm512_add_ps (_mm512_max_ps (v1, zero),
                                _mm512_mul_ps (s, _mm512_min_ps (v1, zero)));
        }
        else if (kind == ZI_NN_ACT_CLIP) {
            const __m512 lo = _mm512_set1_ps (g->act.alpha), hi = _mm512_set1_ps (g->act.beta);
            v0 = _mm512_min_ps (hi, _mm512_max_ps (lo, v0));
            v1 = _mm512_min_ps (hi, _mm512_max_ps (lo, v1));
        }
        float *y = g->Y + (i0 + r) * g->ldy + j0;
        _mm512_mask_storeu_ps (y, m0, v0);
        if (NV > 1) {
            _mm512_mask_storeu_ps (y + 16, m1, v1);
        }
        if (kind != ZI_NN_ACT_NONE && kind != ZI_NN_ACT_RELU && kind != ZI_NN_ACT_LEAKY_RELU
            && kind != ZI_NN_ACT_CLIP) {
            zi_nn_act_apply (y, nc, g->act);
        }
    }
}

//  One function per (rows, zmm per row, B in place), so each keeps its
//  accumulators in registers.
#define S_TILE_FN(MR, NV, IP)                                                  \
    static S_AVX512 void s_tile_##MR##_##NV##_##IP (const s_job_t *j, int64_t i0, \
                                                    int64_t p)                \
    {                                                                          \
        s_tile (j, i0, p, MR, NV, IP);                                         \
    }
#define S_TILE_FNS(MR)                                                         \
    S_TILE_FN (MR, 1, 0) S_TILE_FN (MR, 2, 0) S_TILE_FN (MR, 1, 1) S_TILE_FN (MR, 2, 1)
S_TILE_FNS (1)
S_TILE_FNS (2)
S_TILE_FNS (3)
S_TILE_FNS (4)
S_TILE_FNS (5)
S_TILE_FNS (6)
S_TILE_FNS (7)
S_TILE_FNS (8)

typedef void (s_tile_fn) (const s_job_t *j, int64_t i0, int64_t p);
#define S_TILE_ROW(NV, IP)                                                     \
    {NULL,                 s_tile_1_##NV##_##IP, s_tile_2_##NV##_##IP,           \
     s_tile_3_##NV##_##IP, s_tile_4_##NV##_##IP, s_tile_5_##NV##_##IP,           \
     s_tile_6_##NV##_##IP, s_tile_7_##NV##_##IP, s_tile_8_##NV##_##IP}
//  [in place][two zmm][rows]
static s_tile_fn *const s_tiles[2][2][S_MR + 1] = {
    {S_TILE_ROW (1, 0), S_TILE_ROW (2, 0)},
    {S_TILE_ROW (1, 1), S_TILE_ROW (2, 1)},
};

static void
s_block (const s_job_t *j, int64_t rb, int64_t p)
{
    int64_t i0 = rb * S_MR;
    int64_t mr = j->g->M - i0 < S_MR ? j->g->M - i0 : S_MR;
    s_tiles[j->inplace][j->nr > 16][mr](j, i0, p);
}

#else

static void
s_block (const s_job_t *j, int64_t rb, int64_t p)
{
    (void) j;
    (void) rb;
    (void) p;
}

#endif

//  Panels [lo, hi), all row blocks each: a panel stays in L2 while the row
//  blocks pass over it. Rows go S_MC at a time so that a tall A is not
//  streamed from memory once per panel: its S_MC rows stay in L2 too.
static void
s_task_panels (void *varg, int64_t lo, int64_t hi, int thread)
{
    (void) thread;
    const s_job_t *j = (const s_job_t *) varg;
    for (int64_t rb0 = 0; rb0 < j->nrb; rb0 += S_MC / S_MR) {
        int64_t rb1 = rb0 + S_MC / S_MR < j->nrb ? rb0 + S_MC / S_MR : j->nrb;
        for (int64_t p = lo; p < hi; p++) {
            for (int64_t rb = rb0; rb < rb1; rb++) {
                s_block (j, rb, p);
            }
        }
    }
}

//  Row blocks [lo, hi), all panels each (few panels: each thread reads all).
static void
s_task_rows (void *varg, int64_t lo, int64_t hi, int thread)
{
    (void) thread;
    const s_job_t *j = (const s_job_t *) varg;
    for (int64_t rb = lo; rb < hi; rb++) {
        for (int64_t p = 0; p < j->npanels; p++) {
            s_block (j, rb, p);
        }
    }
}

//  packed: a pack of g's B, or NULL to read B in place (g->tb false only).
static void
s_avx_run (const zi_gemm_t *g, const float *packed, zi_pool_t *pool)
{
    int64_t nr = s_nr (g->N);
    s_job_t j = {g,
                 packed ? packed : g->B,
                 packed ? g->K * nr : nr,
                 packed ? nr : g->ldb,
                 nr,
                 !packed,
                 g->ta ? 1 : g->lda,
                 g->ta ? g->lda : 1,
                 (g->N + nr - 1) / nr,
                 (g->M + S_MR - 1) / S_MR};
    if (s_cost (g) < S_MIN_PARALLEL) {
        pool = NULL;
    }
    int T = zi_pool_size (pool);
    if (j.npanels >= 2 * T || j.npanels >= j.nrb) {
        zi_pool_for (pool, j.npanels, 1, s_task_panels, &j);
    }
    else {
        zi_pool_for (pool, j.nrb, 1, s_task_rows, &j);
    }
}

//  Whether to copy an uncached B into panels first: it must be for B^T;
//  otherwise only when enough row blocks reuse each panel to repay it.
static bool
s_pack_first (const zi_gemm_t *g)
{
    return g->tb || g->M > 4 * S_MR;
}

//  Portable path -----------------------------------------------------------

typedef struct {
    const zi_gemm_t *g;
    bool by_rows;
    int64_t chunk;              //  rows or columns per chunk
} s_pjob_t;

static void
s_chunk (const s_pjob_t *pj, int64_t chunk)
{
    const zi_gemm_t *g = pj->g;
    int64_t i0 = 0, i1 = g->M, j0 = 0, j1 = g->N;
    if (pj->by_rows) {
        i0 = chunk * pj->chunk;
        i1 = i0 + pj->chunk < g->M ? i0 + pj->chunk : g->M;
    }
    else {
        j0 = chunk * pj->chunk;
        j1 = j0 + pj->chunk < g->N ? j0 + pj->chunk : g->N;
    }
    //  op(A) rows i0.. and op(B) columns j0..
    const float *A = g->A + (g->ta ? i0 : i0 * g->lda);
    const float *B = g->B + (g->tb ? j0 * g->ldb : j0);
    float *Y = g->Y + i0 * g->ldy + j0;
    zi_nn_sgemm (Y, g->ldy, g->ta, g->tb, i1 - i0, j1 - j0, g->K, g->alpha, A, g->lda, B,
                 g->ldb, 0.0f);
    if (g->C || g->act.kind != ZI_NN_ACT_NONE) {
        for (int64_t i = i0; i < i1; i++) {
            const float *c = g->C ? g->C + i * g->c_rs + j0 * g->c_cs : NULL;
            s_row_epilogue (g->Y + i * g->ldy + j0, j1 - j0, c, g->c_cs, g->beta, g->act);
        }
    }
}

static void
s_task_chunks (void *varg, int64_t lo, int64_t hi, int thread)
{
    (void) thread;
    for (int64_t c = lo; c < hi; c++) {
        s_chunk ((const s_pjob_t *) varg, c);
    }
}

//  The chunks depend on the shape alone, so which thread runs a chunk never
//  changes how OpenBLAS computes it.
static void
s_portable_run (const zi_gemm_t *g, zi_pool_t *pool)
{
    s_pjob_t pj = {g, false, g->N};
    int64_t nchunks = 1;
    if (s_work (g) >= S_CHUNK_MIN_WORK) {
        if (g->N >= 2 * S_CHUNK_COLS || g->M < 2 * S_CHUNK_ROWS) {
            pj.chunk = S_CHUNK_COLS;
            nchunks = (g->N + S_CHUNK_COLS - 1) / S_CHUNK_COLS;
        }
        else {
            pj.by_rows = true;
            pj.chunk = S_CHUNK_ROWS;
            nchunks = (g->M + S_CHUNK_ROWS - 1) / S_CHUNK_ROWS;
        }
    }
    zi_pool_for (nchunks > 1 && s_cost (g) >= S_MIN_PARALLEL ? pool : NULL, nchunks, 1,
                 s_task_chunks, &pj);
}

//  Entry points ------------------------------------------------------------

static int
s_check (const zi_gemm_t *g)
{
    if (g->M < 0 || g->N < 0 || g->K < 0 || (g->C && g->c_cs != 0 && g->c_cs != 1)) {
        return ZI_ERR_INVALID;
    }
    if (g->M > INT_MAX || g->N > INT_MAX || g->K > INT_MAX) {
        return ZI_ERR_LIMIT;
    }
    return ZI_OK;
}

//  The AVX-512 kernel pads N to 32 columns: a single column (a matrix-vector
//  product) would waste 31/32 of it, so that shape stays with sgemv.
static bool
s_use_avx (const zi_gemm_t *g)
{
    return zi_gemm_avx512 () && g->N > 1;
}

int
zi_gemm_run (const zi_gemm_t *g, zi_gemm_pack_t **cache, zi_pool_t *pool)
{
    int rc = s_check (g);
    if (rc || g->M == 0 || g->N == 0) {
        return rc;
    }
    if (!s_use_avx (g)) {
        s_portable_run (g, pool);
        return ZI_OK;
    }
    if (cache) {
        if (!s_pack_matches (*cache, g)) {
            zi_gemm_pack_destroy (cache);
            *cache = s_pack_new (g, pool);
            if (!*cache) {
                return ZI_ERR_NOMEM;
            }
        }
        s_avx_run (g, (*cache)->data, pool);
        return ZI_OK;
    }
    if (!s_pack_first (g)) {
        s_avx_run (g, NULL, pool);
        return ZI_OK;
    }
    float *packed = s_aligned_floats (s_pack_floats (g->K, g->N));
    if (!packed) {
        return ZI_ERR_NOMEM;
    }
    s_pack_into (packed, g->B, g->ldb, g->tb, g->K, g->N, pool);
    s_avx_run (g, packed, pool);
    free (packed);
    return ZI_OK;
}

typedef struct {
    const zi_gemm_t *g;
    const int64_t *a_off, *b_off;
    int64_t y_step;
    bool avx;
    atomic_int failed;
} s_bjob_t;

static void
s_task_batches (void *varg, int64_t lo, int64_t hi, int thread)
{
    (void) thread;
    s_bjob_t *bj = (s_bjob_t *) varg;
    zi_gemm_t g = *bj->g;
    float *packed = NULL;
    if (bj->avx && s_pack_first (&g)) {
        packed = s_aligned_floats (s_pack_floats (g.K, g.N));
        if (!packed) {
            atomic_store (&bj->failed, 1);
            return;
        }
    }
    for (int64_t t = lo; t < hi; t++) {
        g.A = bj->g->A + bj->a_off[t];
        g.B = bj->g->B + bj->b_off[t];
        g.Y = bj->g->Y + t * bj->y_step;
        if (bj->avx) {
            if (packed) {
                s_pack_into (packed, g.B, g.ldb, g.tb, g.K, g.N, NULL);
            }
            s_avx_run (&g, packed, NULL);
        }
        else {
            s_portable_run (&g, NULL);
        }
    }
    free (packed);
}

int
zi_gemm_run_batch (const zi_gemm_t *g, int64_t nbatch, const int64_t *a_off,
                   const int64_t *b_off, int64_t y_step, zi_pool_t *pool)
{
    int rc = s_check (g);
    if (rc || g->M == 0 || g->N == 0 || nbatch <= 0) {
        return rc;
    }
    if (nbatch < zi_pool_size (pool)) {
        //  Too few matrices to go round: split each one instead.
        zi_gemm_t one = *g;
        for (int64_t t = 0; t < nbatch && rc == ZI_OK; t++) {
            one.A = g->A + a_off[t];
            one.B = g->B + b_off[t];
            one.Y = g->Y + t * y_step;
            rc = zi_gemm_run (&one, NULL, pool);
        }
        return rc;
    }
    s_bjob_t bj = {g, a_off, b_off, y_step, s_use_avx (g), 0};
    if ((double) nbatch * s_cost (g) < S_MIN_PARALLEL) {
        pool = NULL;
    }
    zi_pool_for (pool, nbatch, 1, s_task_batches, &bj);
    return atomic_load (&bj.failed) ? ZI_ERR_NOMEM : ZI_OK;
}
