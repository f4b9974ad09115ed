/*  zi_conv.c - Conv's AVX-512 engine (see zi_conv.h for the layout).

    Built without -mavx512f: every function that uses AVX-512 carries
    target("avx512f") and runs only after zi_conv_avx512 () said yes, so
    the library still loads and runs on any x86-64 (or other) CPU.

    Both microkernels (s_tile over a pack, s_dtile over shifted copies)
    keep MR x V accumulators (MR <= 8 output channels, V <= 3 panels of 16
    pixels: 24 zmm) over k, loading V input vectors and broadcasting MR
    weights per k: 24 fmas per 11 loads, so they are bound by the FMA ports
    rather than by loads. They are instantiated for every (MR, V) so the
    loops unroll into registers.

    Over a pack, reductions longer than S_KB are split into blocks so the V
    panels being read stay in L2; the partial sums go through y between
    blocks, which does not change them (they are float either way), so the
    fma chain is still one chain. The shifted copies need no such
    blocking: their rows are read in place, V vectors per k, from kW
    planes each as small as the chunk's input.
*/
#include "zi_conv.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define S_HAVE_X86 1
#include <immintrin.h>
#else
#define S_HAVE_X86 0
#endif

//  Reduction block: 3 panels x 512 k x 64 B = 96 KB of pack per block.
#define S_KB 512
#define S_MR 8
#define S_V 3

static int s_mode = -1;     //  -1 undecided, 0 portable, 1 AVX-512
#define S_MIN_FLOPS 1e6
static double s_min_flops = S_MIN_FLOPS;

static int
s_decide (void)
{
#if S_HAVE_X86
    const char *env = getenv ("ZI_NN_NO_AVX512");
    bool off = env && *env && strcmp (env, "0") != 0;
    __builtin_cpu_init ();
    return !off && __builtin_cpu_supports ("avx512f") ? 1 : 0;
#else
    return 0;
#endif
}

bool
zi_conv_avx512 (void)
{
    int m = __atomic_load_n (&s_mode, __ATOMIC_RELAXED);
    if (m < 0) {
        m = s_decide ();
        __atomic_store_n (&s_mode, m, __ATOMIC_RELAXED);
    }
    return m == 1;
}

void
zi_conv_set_avx512 (int mode)
{
    int m = mode < 0 ? s_decide () : mode == 0 ? 0 : s_decide ();
    __atomic_store_n (&s_mode, m, __ATOMIC_RELAXED);
}

//  Shifted-copy path: setup (portable C) --------------------------------------

//  Floats of zeros after the last copy: a tile loads up to 3 panels past
//  its chunk's last pixel (those lanes are never stored).
#define S_SLACK (4 * ZI_CONV_PANEL)

bool
zi_conv_direct_init (zi_conv_shape_t *s)
{
    const zi_nn_geom_t *g = &s->g;
    if (g->in[0] != 1 || g->k[0] != 1 || g->out[0] != 1 || g->s[1] != 1) {
        return false;
    }
    s->Wp = g->out[2];
    s->nvirt = g->out[1] * g->out[2];
    return s->Wp > 0 && s->Wp < INT32_MAX / 4;
}

bool
zi_conv_direct_plan (zi_conv_shape_t *s, int64_t chunk)
{
    const zi_nn_geom_t *g = &s->g;
    //  A chunk spans at most chunk / Wp + 2 output rows (it need not start
    //  on a row), each reading kH dilated rows. Attributes are
    //  <= INT32_MAX and tensor dims are checked, so these int64 products
    //  cannot overflow.
    int64_t rows = chunk / s->Wp + 2 + (g->k[1] - 1) * g->d[1];
    if (rows > INT32_MAX / s->Wp) {
        return false;
    }
    //  Planes start on a 64-byte line, so the loads of kernel row kh = 0
    //  are aligned whenever the tile is.
    int64_t plane = (rows * s->Wp + ZI_CONV_PANEL - 1) / ZI_CONV_PANEL
                    * ZI_CONV_PANEL;
    if (s->Cg > (INT32_MAX - S_SLACK - ZI_CONV_PANEL) / plane
        || g->k[2] > (INT32_MAX - S_SLACK - ZI_CONV_PANEL) / (s->Cg * plane)) {
        return false;
    }
    s->rows = rows;
    s->plane = plane;
    s->kws = s->Cg * plane;
    s->xpsz = g->k[2] * s->kws + S_SLACK;
    s->xpsz = (s->xpsz + ZI_CONV_PANEL - 1) / ZI_CONV_PANEL * ZI_CONV_PANEL;
    return true;
}

void
zi_conv_direct_offsets (int32_t *koff, const zi_conv_shape_t *s)
{
    const zi_nn_geom_t *g = &s->g;
    for (int64_t c = 0, k = 0; c < s->Cg; c++) {
        for (int64_t kh = 0; kh < g->k[1]; kh++) {
            for (int64_t kw = 0; kw < g->k[2]; kw++, k++) {
                koff[k] = (int32_t) (kw * s->kws + c * s->plane
                                     + kh * g->d[1] * s->Wp);
            }
        }
    }
}

void
zi_conv_set_min_flops (double flops)
{
    s_min_flops = flops < 0 ? S_MIN_FLOPS : flops;
}

double
zi_conv_min_flops (void)
{
    return s_min_flops;
}

#if S_HAVE_X86

#define S_AVX512 __attribute__ ((target ("avx512f")))
#define S_INLINE static inline __attribute__ ((always_inline)) S_AVX512

//  Packing --------------------------------------------------------------------

//  A run of a panel's lanes [l0, l1) that lie on one output row.
typedef struct {
    int l0, l1;
    int64_t od, oh, ow0;
} s_seg_t;

S_AVX512 void
zi_conv_pack (float *pack, const float *x, const zi_conv_shape_t *s,
              int64_t p0, int64_t p1)
{
    const zi_nn_geom_t *g = &s->g;
    const int64_t iD = g->in[0], iH = g->in[1], iW = g->in[2];
    const int64_t oH = g->out[1], oW = g->out[2];
    const int64_t kD = g->k[0], kH = g->k[1], kW = g->k[2];
    const int64_t sw = g->s[2];
    const int64_t Kc = s->Kc;
    const __m512i iota = _mm512_set_epi32 (15, 14, 13, 12, 11, 10, 9, 8, 7,
                                           6, 5, 4, 3, 2, 1, 0);
    //  iota * sw: lane l of a segment reads column iw0 + (l - l0) * sw.
    const __m512i step = _mm512_mullo_epi32 (iota,
                                             _mm512_set1_epi32 ((int) sw));
    const __m512i vW = _mm512_set1_epi32 ((int) iW);
    const __m512i even = _mm512_set_epi32 (30, 28, 26, 24, 22, 20, 18, 16, 14,
                                           12, 10, 8, 6, 4, 2, 0);
    for (int64_t pp = p0, j = 0; pp < p1; pp += ZI_CONV_PANEL, j++) {
        int cnt = p1 - pp < ZI_CONV_PANEL ? (int) (p1 - pp) : ZI_CONV_PANEL;
        s_seg_t seg[ZI_CONV_PANEL];
        int nseg = 0;
        for (int l = 0; l < cnt;) {
            int64_t p = pp + l;
            int64_t ow = p % oW, q = p / oW;
            int64_t run = oW - ow < cnt - l ? oW - ow : cnt - l;
            seg[nseg++] = (s_seg_t){l, l + (int) run, q / oH, q % oH, ow};
            l += (int) run;
        }
        float *dst = pack + j * Kc * ZI_CONV_PANEL;
        for (int64_t c = 0; c < s->Cg; c++) {
            const float *xc = x + c * s->isz;
            for (int64_t kd = 0; kd < kD; kd++) {
                for (int64_t kh = 0; kh < kH; kh++) {
                    for (int64_t kw = 0; kw < kW; kw++, dst += ZI_CONV_PANEL) {
                        __m512 v = _mm512_setzero_ps ();
                        const int64_t offw = kw * g->d[2] - g->pb[2];
                        for (int t = 0; t < nseg; t++) {
                            const s_seg_t *sg = &seg[t];
                            int64_t id = sg->od * g->s[0] + kd * g->d[0]
                                         - g->pb[0];
                            int64_t ih = sg->oh * g->s[1] + kh * g->d[1]
                                         - g->pb[1];
                            if (id < 0 || id >= iD || ih < 0 || ih >= iH) {
                                continue;
                            }
                            //  Column read by the segment's lane 0 of the
                            //  panel (lane l reads iw0 + l * sw).
                            int64_t iw0 = sg->ow0 * sw + offw - sg->l0 * sw;
                            __m512i iw = _mm512_add_epi32 (
                                step, _mm512_set1_epi32 ((int) iw0));
                            __mmask16 lanes = (__mmask16) (
                                ((1u << sg->l1) - 1u)
                                & ~((1u << sg->l0) - 1u));
                            __mmask16 m = _mm512_mask_cmpge_epi32_mask (
                                lanes, iw, _mm512_setzero_si512 ());
                            m = _mm512_mask_cmplt_epi32_mask (m, iw, vW);
                            if (!m) {
                                continue;
                            }
                            //  Row base as an integer: lane 0 may address
                            //  before the row (masked lanes never load).
                            const float *row = xc + (id * iH + ih) * iW;
                            if (sw == 1) {
                                uintptr_t a = (uintptr_t) row
                                              + (uintptr_t) (iw0 * 4);
                                v = _mm512_mask_loadu_ps (v, m,
                                                          (const void *) a);
                            }
                            else if (sw == 2) {
                                //  Lanes lo..hi read columns iw0 + 2 lo ..
                                //  iw0 + 2 hi: load that span (32 floats
                                //  at most) and keep the even ones, which
                                //  is much cheaper than a gather.
                                int lo = __builtin_ctz (m);
                                int hi = 31 - __builtin_clz ((unsigned) m);
                                uint64_t span = ((2ull << (2 * hi)) - 1u)
                                                & ~((1ull << (2 * lo)) - 1u);
                                uintptr_t a = (uintptr_t) row
                                              + (uintptr_t) (iw0 * 4);
                                __m512 ea = _mm512_maskz_loadu_ps (
                                    (__mmask16) span, (const void *) a);
                                __m512 eb = _mm512_maskz_loadu_ps (
                                    (__mmask16) (span >> 16),
                                    (const void *) (a + 64));
                                v = _mm512_mask_mov_ps (
                                    v, m, _mm512_permutex2var_ps (ea, even,
                                                                  eb));
                            }
                            else {
                                v = _mm512_mask_i32gather_ps (v, m, iw, row,
                                                              4);
                            }
                        }
                        _mm512_store_ps (dst, v);
                    }
                }
            }
        }
    }
}

//  Shifted copies -------------------------------------------------------------

S_AVX512 void
zi_conv_pad (float *xp, const float *x, const zi_conv_shape_t *s, int64_t v0,
             int64_t v1)
{
    const zi_nn_geom_t *g = &s->g;
    const int64_t iH = g->in[1], iW = g->in[2], oW = s->Wp;
    const int64_t sw = g->s[2], pbh = g->pb[1];
    const int64_t r0 = v0 / oW;
    //  Rows the chunk's real pixels read; loads of a tile's lanes past v1
    //  read further rows of the plane, which hold whatever an earlier
    //  chunk (or the caller's zeroing) left there, and are never stored.
    const int64_t rows = (v1 - 1) / oW - r0 + 1 + (g->k[1] - 1) * g->d[1];
    const __m512 zero = _mm512_setzero_ps ();
    for (int64_t kw = 0; kw < g->k[2]; kw++) {
        //  Output columns [lo, hi) read inside the input row, at column
        //  ow * sw + off; the lanes of each 16-column block that do.
        int64_t lo, hi;
        const int64_t off = kw * g->d[2] - g->pb[2];
        zi_nn_valid_range (oW, iW, sw, off, &lo, &hi);
        float *xk = xp + kw * s->kws;
        for (int64_t ow = 0; ow < oW; ow += ZI_CONV_PANEL) {
            int64_t n = oW - ow < ZI_CONV_PANEL ? oW - ow : ZI_CONV_PANEL;
            const __mmask16 st = (__mmask16) ((1u << n) - 1u);
            int64_t a = lo > ow ? lo - ow : 0;
            int64_t b = hi - ow < n ? hi - ow : n;
            const __mmask16 ld = a < b ? (__mmask16) (((1u << b) - 1u)
                                                      & ~((1u << a) - 1u))
                                       : 0;
            for (int64_t c = 0; c < s->Cg; c++) {
                float *dst = xk + c * s->plane + ow;
                const float *xc = x + c * s->isz;
                for (int64_t r = 0; r < rows; r++, dst += oW) {
                    int64_t ih = r0 + r - pbh;
                    __m512 v = zero;
                    if (ld && ih >= 0 && ih < iH) {
                        //  The address of lane 0 as an integer: masked-off
                        //  lanes may lie outside the row.
                        const float *row = xc + ih * iW;
                        if (sw == 1) {
                            uintptr_t at = (uintptr_t) row
                                           + (uintptr_t) ((ow + off) * 4);
                            v = _mm512_maskz_loadu_ps (ld,
                                                       (const void *) at);
                        }
                        else {
                            float tmp[ZI_CONV_PANEL] = {0};
                            for (int l = 0; l < n; l++) {
                                if (ld >> l & 1) {
                                    tmp[l] = row[(ow + l) * sw + off];
                                }
                            }
                            v = _mm512_loadu_ps (tmp);
                        }
                    }
                    _mm512_mask_storeu_ps (dst, st, v);
                }
            }
        }
    }
}

//  Microkernel ----------------------------------------------------------------

//  Mask of the valid lanes of panel j when the tile has ncols pixels.
S_INLINE __mmask16
s_mask (int64_t ncols, int j)
{
    int64_t c = ncols - (int64_t) j * ZI_CONV_PANEL;
    return c >= ZI_CONV_PANEL ? (__mmask16) 0xFFFF
                              : (__mmask16) ((1u << c) - 1u);
}

//  y (MR rows, stride ldy, ncols <= 16 V valid) over k in [k0, k1):
//  first: start from 0, else from the partial sums in y;
//  last: + bias, activation; else store the partial sums.
S_INLINE void
s_tile (const int MR, const int V, float *y, int64_t ldy, const float *pack,
        int64_t Kc, int64_t k0, int64_t k1, const float *w,
        const float *bias, int64_t ncols, bool first, bool last,
        zi_nn_act_t act)
{
    __m512 acc[S_MR][S_V];
    __mmask16 mk[S_V];
    for (int j = 0; j < V; j++) {
        mk[j] = s_mask (ncols, j);
    }
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < V; j++) {
            acc[i][j] = first ? _mm512_setzero_ps ()
                              : _mm512_maskz_loadu_ps (mk[j], y + i * ldy
                                                                  + j * 16);
        }
    }
    const float *pk = pack + k0 * ZI_CONV_PANEL;
    const float *wk = w + k0;
    for (int64_t k = k0; k < k1; k++, pk += ZI_CONV_PANEL, wk++) {
        __m512 xv[S_V];
        for (int j = 0; j < V; j++) {
            xv[j] = _mm512_load_ps (pk + j * Kc * ZI_CONV_PANEL);
        }
        for (int i = 0; i < MR; i++) {
            __m512 wv = _mm512_set1_ps (wk[i * Kc]);
            for (int j = 0; j < V; j++) {
                acc[i][j] = _mm512_fmadd_ps (wv, xv[j], acc[i][j]);
            }
        }
    }
    const bool relu = last && act.kind == ZI_NN_ACT_RELU;
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < V; j++) {
            __m512 v = acc[i][j];
            if (last && bias) {
                v = _mm512_add_ps (v, _mm512_set1_ps (bias[i]));
            }
            if (relu) {
                //  max (v, 0) returns 0 for NaN, as v > 0 ? v : 0 does.
                v = _mm512_max_ps (v, _mm512_setzero_ps ());
            }
            _mm512_mask_storeu_ps (y + i * ldy + j * 16, mk[j], v);
        }
        if (last && act.kind != ZI_NN_ACT_NONE && !relu) {
            zi_nn_act_apply (y + i * ldy, ncols, act);
        }
    }
}

typedef void (s_tile_fn) (float *y, int64_t ldy, const float *pack,
                          int64_t Kc, int64_t k0, int64_t k1, const float *w,
                          const float *bias, int64_t ncols, bool first,
                          bool last, zi_nn_act_t act);

#define S_TILE(MR, V)                                                         \
    static S_AVX512 void s_tile_##MR##_##V (                                  \
        float *y, int64_t ldy, const float *pack, int64_t Kc, int64_t k0,     \
        int64_t k1, const float *w, const float *bias, int64_t ncols,         \
        bool first, bool last, zi_nn_act_t act)                               \
    {                                                                         \
        s_tile (MR, V, y, ldy, pack, Kc, k0, k1, w, bias, ncols, first, last, \
                act);                                                         \
    }
#define S_TILES(MR) S_TILE (MR, 1) S_TILE (MR, 2) S_TILE (MR, 3)
S_TILES (1)
S_TILES (2)
S_TILES (3)
S_TILES (4)
S_TILES (5)
S_TILES (6)
S_TILES (7)
S_TILES (8)

static s_tile_fn *const s_tiles[S_MR][S_V] = {
#define S_ROW(MR) {s_tile_##MR##_1, s_tile_##MR##_2, s_tile_##MR##_3}
    S_ROW (1), S_ROW (2), S_ROW (3), S_ROW (4),
    S_ROW (5), S_ROW (6), S_ROW (7), S_ROW (8),
#undef S_ROW
};

void
zi_conv_gemm (float *y, const float *pack, const float *w, const float *bias,
              int64_t m0, int64_t m1, const zi_conv_shape_t *s, int64_t p0,
              int64_t p1, zi_nn_act_t act)
{
    const int64_t Kc = s->Kc, ldy = s->osz;
    const int64_t np = (p1 - p0 + ZI_CONV_PANEL - 1) / ZI_CONV_PANEL;
    for (int64_t k0 = 0, k1; k0 < Kc; k0 = k1) {
        //  Blocks of S_KB; a short tail joins the block before it.
        k1 = Kc - k0 < S_KB + S_KB / 2 ? Kc : k0 + S_KB;
        bool first = k0 == 0, last = k1 == Kc;
        for (int64_t m = m0; m < m1; m += S_MR) {
            int mr = m1 - m < S_MR ? (int) (m1 - m) : S_MR;
            for (int64_t j = 0; j < np; j += S_V) {
                int v = np - j < S_V ? (int) (np - j) : S_V;
                int64_t c0 = p0 + j * ZI_CONV_PANEL;
                int64_t ncols = p1 - c0 < v * ZI_CONV_PANEL
                                    ? p1 - c0
                                    : v * ZI_CONV_PANEL;
                s_tiles[mr - 1][v - 1](y + m * ldy + c0, ldy,
                                       pack + j * Kc * ZI_CONV_PANEL, Kc, k0,
                                       k1, w + m * Kc, bias ? bias + m : NULL,
                                       ncols, first, last, act);
            }
        }
    }
}

//  Shifted-copy microkernel ---------------------------------------------------

//  y (MR rows, stride ldy, ncols <= 16 V pixels from y) = act (w . xs +
//  bias): the same single fma chain per element as s_tile.
S_INLINE void
s_dtile (const int MR, const int V, float *y, int64_t ldy, const float *xv0,
         const int32_t *koff, int64_t Kc, const float *w, const float *bias,
         int64_t ncols, zi_nn_act_t act)
{
    __m512 acc[S_MR][S_V];
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < V; j++) {
            acc[i][j] = _mm512_setzero_ps ();
        }
    }
    const float *wk = w;
    for (int64_t k = 0; k < Kc; k++, wk++) {
        const float *src = xv0 + koff[k];
        __m512 xv[S_V];
        for (int j = 0; j < V; j++) {
            xv[j] = _mm512_loadu_ps (src + j * ZI_CONV_PANEL);
        }
        for (int i = 0; i < MR; i++) {
            __m512 wv = _mm512_set1_ps (wk[i * Kc]);
            for (int j = 0; j < V; j++) {
                acc[i][j] = _mm512_fmadd_ps (wv, xv[j], acc[i][j]);
            }
        }
    }
    __mmask16 mk[S_V];
    for (int j = 0; j < V; j++) {
        mk[j] = s_mask (ncols, j);
    }
    const bool relu = act.kind == ZI_NN_ACT_RELU;
    for (int i = 0; i < MR; i++) {
        for (int j = 0; j < V; j++) {
            __m512 v = acc[i][j];
            if (bias) {
                v = _mm512_add_ps (v, _mm512_set1_ps (bias[i]));
            }
            if (relu) {
                //  max (v, 0) returns 0 for NaN, as v > 0 ? v : 0 does.
                v = _mm512_max_ps (v, _mm512_setzero_ps ());
            }
            _mm512_mask_storeu_ps (y + i * ldy + j * 16, mk[j], v);
        }
        if (act.kind != ZI_NN_ACT_NONE && !relu) {
            zi_nn_act_apply (y + i * ldy, ncols, act);
        }
    }
}

typedef void (s_dtile_fn) (float *y, int64_t ldy, const float *xv0,
                           const int32_t *koff, int64_t Kc, const float *w,
                           const float *bias, int64_t ncols,
                           zi_nn_act_t act);

#define S_DTILE(MR, V)                                                        \
    static S_AVX512 void s_dtile_##MR##_##V (                                 \
        float *y, int64_t ldy, const float *xv0, const int32_t *koff,         \
        int64_t Kc, const float *w, const float *bias, int64_t ncols,         \
        zi_nn_act_t act)                                                      \
    {                                                                         \
        s_dtile (MR, V, y, ldy, xv0, koff, Kc, w, bias, ncols, act);          \
    }
#define S_DTILES(MR) S_DTILE (MR, 1) S_DTILE (MR, 2) S_DTILE (MR, 3)
S_DTILES (1)
S_DTILES (2)
S_DTILES (3)
S_DTILES (4)
S_DTILES (5)
S_DTILES (6)
S_DTILES (7)
S_DTILES (8)

static s_dtile_fn *const s_dtiles[S_MR][S_V] = {
#define S_ROW(MR) {s_dtile_##MR##_1, s_dtile_##MR##_2, s_dtile_##MR##_3}
    S_ROW (1), S_ROW (2), S_ROW (3), S_ROW (4),
    S_ROW (5), S_ROW (6), S_ROW (7), S_ROW (8),
#undef S_ROW
};

void
zi_conv_direct (float *y, int64_t ldy, const float *xp, const int32_t *koff,
                const float *w, const float *bias, int64_t m0, int64_t m1,
                const zi_conv_shape_t *s, int64_t v0, int64_t v1,
                zi_nn_act_t act)
{
    const int64_t unit = S_V * ZI_CONV_PANEL;
    const int64_t vb = v0 / s->Wp * s->Wp;     //  pixel of xp[0]
    for (int64_t m = m0; m < m1; m += S_MR) {
        int mr = m1 - m < S_MR ? (int) (m1 - m) : S_MR;
        for (int64_t v = v0; v < v1; v += unit) {
            int64_t ncols = v1 - v < unit ? v1 - v : unit;
            int V = (int) ((ncols + ZI_CONV_PANEL - 1) / ZI_CONV_PANEL);
            s_dtiles[mr - 1][V - 1](y + (m - m0) * ldy + (v - v0), ldy,
                                    xp + (v - vb),
                                    koff, s->Kc, w + m * s->Kc,
                                    bias ? bias + m : NULL, ncols, act);
        }
    }
}

#else   //  !S_HAVE_X86: never called, zi_conv_avx512 () is false

void
zi_conv_pack (float *pack, const float *x, const zi_conv_shape_t *s,
              int64_t p0, int64_t p1)
{
    (void) pack, (void) x, (void) s, (void) p0, (void) p1;
}

void
zi_conv_pad (float *xp, const float *x, const zi_conv_shape_t *s, int64_t v0,
             int64_t v1)
{
    (void) xp, (void) x, (void) s, (void) v0, (void) v1;
}

void
zi_conv_gemm (float *y, const float *pack, const float *w, const float *bias,
              int64_t m0, int64_t m1, const zi_conv_shape_t *s, int64_t p0,
              int64_t p1, zi_nn_act_t act)
{
    (void) y, (void) pack, (void) w, (void) bias, (void) m0, (void) m1;
    (void) s, (void) p0, (void) p1, (void) act;
}

void
zi_conv_direct (float *y, int64_t ldy, const float *xp, const int32_t *koff,
                const float *w, const float *bias, int64_t m0, int64_t m1,
                const zi_conv_shape_t *s, int64_t v0, int64_t v1,
                zi_nn_act_t act)
{
    (void) y, (void) ldy, (void) xp, (void) koff, (void) w, (void) bias, (void) m0;
    (void) m1, (void) s, (void) v0, (void) v1, (void) act;
}

#endif
