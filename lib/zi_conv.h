/*  zi_conv.h - Conv's AVX-512 engine: a register-blocked microkernel (up
    to 8 output channels x 3 panels of 16 output pixels, 24 zmm
    accumulators) with bias and activation applied to the registers before
    the one store, fed in one of two ways:

      * shifted copies (stride 1 in H, 1-D / 2-D): for each kernel
        column kw the input rows a chunk of output rows needs are copied,
        per thread while hot in cache, with that column's shift (and the
        W stride) applied, rows of exactly oW floats; output pixel
        p = oh * oW + ow then reads xs[kw, c, p + kh dH oW] for kernel
        position (c, kh, kw), so 16 consecutive pixels are ONE unaligned
        load per k, no im2col is built and no lane is wasted on padding
        columns (an earlier padded-row layout computed Wp - oW junk
        columns per row: 12% of the work for 14x14 with pad 1);
      * packed (any stride, 3-D): im2col for a chunk of output pixels is
        written straight into the layout the kernel reads, panels of 16
        pixels; strided columns come from masked loads plus a permute
        (stride 2) or a gather.

    Internal to the nn family (lib/zi_ops_nn_conv.c splits a Conv into
    tasks over its pool and calls these on each task); not a stable API.

    Why not im2col + sgemm: at the sizes a CNN has per image (M 16..512
    output channels, K = Cg*kH*kW 9..4608, N = output pixels 49..12544) a
    single-threaded OpenBLAS sgemm spends a large share of its time packing
    its own copy of the column matrix and of W, and the im2col buffer is a
    third copy. Here the kernel reads the input (or one pack of it) in
    place, W rows are broadcast straight from the weight tensor, and the
    output is written once, with bias and activation, instead of a second
    pass over it.

    Layout of a pack for output pixels [p0, p1) of one image and group:
        pack (np, Kc, 16), np = ceil ((p1 - p0) / 16)
    pack[(j * Kc + k) * 16 + l] is the input value that kernel position
    k = (c, kd, kh, kw) multiplies for output pixel p0 + 16 j + l (zero for
    padding and for lanes past p1). It must be 64-byte aligned.

    Each output element is ONE fma chain over k = 0..Kc-1 starting from 0,
    then + bias, then the activation, whatever tile or thread computes it,
    so results are bit-identical for any split of the work.

        zi_conv_shape_t s = {.g = geom, .Cg = cg, .Kc = kc,
                             .isz = isz, .osz = osz};
        if (zi_conv_direct_init (&s)
            && zi_conv_direct_plan (&s, s.nvirt)) {     //  stride 1
            zi_conv_direct_offsets (koff, &s);           //  koff (Kc,)
            zi_conv_pad (xp, x_group, &s, 0, s.nvirt);   //  xp zeroed
            zi_conv_direct (y_group, s.osz, xp, koff, w_group, bias_group,
                            0, Mg, &s, 0, s.nvirt, act);
        }
        else {
            zi_conv_pack (pack, x_group, &s, p0, p1);
            zi_conv_gemm (y_group, pack, w_group, bias_group, 0, Mg, &s,
                          p0, p1, act);
        }
*/
#ifndef ZI_CONV_H_INCLUDED
#define ZI_CONV_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "zi_ops_nn.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Output pixels per panel (one zmm register of float32).
#define ZI_CONV_PANEL 16

//  Shape of one group of one image, as Conv's geometry gives it.
typedef struct {
    zi_nn_geom_t g;     //  spatial geometry (3-D, leading dims 1)
    int64_t Cg;         //  input channels of a group
    int64_t Kc;         //  Cg * kD * kH * kW: the reduction length
    int64_t isz, osz;   //  elements of one input / output plane
    //  Set by zi_conv_direct_init for the shifted-copy path:
    int64_t Wp;         //  row stride of the copy: oW
    int64_t nvirt;      //  output pixels: oH * oW
    //  Set by zi_conv_direct_plan:
    int64_t rows;       //  padded rows held per channel for one chunk
    int64_t plane;      //  rows * Wp
    int64_t kws;        //  floats of one kw's copy: Cg * plane
    int64_t xpsz;       //  floats of one chunk's copy: kW * kws + slack
} zi_conv_shape_t;

//  True when the AVX-512 path is in use: the CPU has AVX-512F and the
//  environment variable ZI_NN_NO_AVX512 was unset, empty or "0" when first
//  asked. Decided once per process (results never depend on timing).
bool zi_conv_avx512 (void);

//  For tests: force the path (1 = AVX-512 if the CPU has it, 0 = portable,
//  -1 = decide again from the CPU and the environment).
void zi_conv_set_avx512 (int mode);

//  Least work (flops) Conv gives one thread: smaller convs run on fewer
//  threads, since waking a helper costs more than they take. For tests
//  (0 splits every conv as far as it goes); < 0 restores the default.
void zi_conv_set_min_flops (double flops);

//  The value in use (default 1e6, about 10 us of one core).
double zi_conv_min_flops (void);

//  x (Cg, iD, iH, iW), one group of one image -> pack (np, Kc, 16) for
//  output pixels [p0, p1) (layout above). Only when zi_conv_avx512 ().
void zi_conv_pack (float *pack, const float *x, const zi_conv_shape_t *s,
                   int64_t p0, int64_t p1);

//  y[m, p0..p1) = act (w[m, :] (Kc,) . pack[:, p] + bias[m]) for m in
//  [m0, m1); y (Mg, osz) and w (Mg, Kc) are the group's output and
//  weights, bias its (Mg,) slice or NULL. Only when zi_conv_avx512 ().
void zi_conv_gemm (float *y, const float *pack, const float *w,
                   const float *bias, int64_t m0, int64_t m1,
                   const zi_conv_shape_t *s, int64_t p0, int64_t p1,
                   zi_nn_act_t act);

//  The shifted-copy path, for 1-D / 2-D convs with stride 1 along H (the
//  bulk of a CNN): for each kernel column kw, the input rows a chunk of
//  output rows needs are copied with that column's shift already applied,
//  xs[kw, c, r, ow] = x[c, r0 + r - padH, ow sW + kw dW - padW] (zero
//  outside the input), rows of exactly oW floats. Output pixel
//  p = oh * oW + ow then reads xs[kw, c, oh - r0 + kh dH, ow] = one fixed
//  offset per kernel position (c, kh, kw) plus p, so 16 consecutive
//  pixels, across row ends too, are one unaligned load per k: no im2col,
//  no junk columns, one plain store per panel. The copy is kW times the
//  chunk's input rows (48 KB for a 16-channel 14x14 image).
//
//  Fill Wp (= oW, the row stride of the copy) and nvirt (= oH * oW, the
//  output pixels) and return true when s qualifies (stride 1 in H, no
//  depth), else false (use the pack path).
bool zi_conv_direct_init (zi_conv_shape_t *s);

//  Size the per-chunk copy for chunks of at most `chunk` output pixels
//  (rows, plane, xpsz). Returns false when offsets into it would not fit in
//  int32 (use the pack path).
bool zi_conv_direct_plan (zi_conv_shape_t *s, int64_t chunk);

//  koff (Kc,): offset into a chunk's copy of kernel position (c, kh, kw).
void zi_conv_direct_offsets (int32_t *koff, const zi_conv_shape_t *s);

//  x (Cg, iH, iW) -> xp (xpsz,): the kW shifted copies of the rows that
//  output pixels [v0, v1) read (from r0 = v0 / Wp on). xp must be 64-byte
//  aligned and zeroed (all xpsz floats) before its first use: tiles load
//  lanes past v1 from the rest of the planes and the slack, which are then
//  finite whatever earlier chunks left there (those lanes are never
//  stored).
void zi_conv_pad (float *xp, const float *x, const zi_conv_shape_t *s,
                  int64_t v0, int64_t v1);

//  y[(m - m0) ldy + (v - v0)] = act (w[m, :] . xs[:, v] + bias[m]) for
//  output channels m in [m0, m1) and pixels v in [v0, v1) of one group, as
//  zi_conv_gemm computes them (for the group's own output, y = y_group +
//  m0 osz + v0 and ldy = osz); xp as zi_conv_pad (v0, v1) left it, and
//  v1 - v0 at most the planned chunk. Only when zi_conv_avx512 ().
void zi_conv_direct (float *y, int64_t ldy, const float *xp,
                     const int32_t *koff, const float *w, const float *bias,
                     int64_t m0, int64_t m1, const zi_conv_shape_t *s,
                     int64_t v0, int64_t v1, zi_nn_act_t act);

#ifdef __cplusplus
}
#endif

#endif
