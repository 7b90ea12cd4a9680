/* hwnas C runtime: integer kernels of an exported network (nas.deploy.c). C99, no malloc, no libc in the
 * kernels: the caller owns every buffer.
 *
 * Arithmetic, exactly as nas/deploy/integer.py:
 *   acc = sum(q_in * w)                       int32 (the exporter proves it fits)
 *   acc = (acc << bias_shift) + bias          int32
 *   q   = clip((acc * m + 2^(k-1)) >> k, lo, hi)   int64 product, round half up (optionally half to even)
 * Activations of 2..8 bits are stored one per byte (uint8; the first layer's input int8 when signed).
 * Weights are stored packed: one LSB-first bitstream per layer, output channel by output channel (OHWI), each
 * value in its channel's bit-width (2..8, two's complement), as nas/deploy/pack.py packs them. */
#ifndef HWNAS_H
#define HWNAS_H

#include <stdint.h>

enum { HW_OUT_U8 = 0, HW_OUT_I32 = 1, HW_OUT_RAW = 2 };

typedef struct {
  const uint8_t *w;      /* packed weights (one padding byte at the end) */
  const uint8_t *w_bits; /* per output channel */
  const int32_t *bias;   /* per output channel, in steps of the shifted accumulator */
  const int32_t *mult;   /* per output channel requantisation multiplier (unused for HW_OUT_RAW) */
  const uint8_t *shift;  /* per output channel shift k */
  int32_t lo, hi;        /* clip range */
  uint16_t in_h, in_w, cin, cout, kernel;
  uint16_t step;         /* distance between output pixels' windows in input pixels: stride x dilation */
  uint16_t dilation;     /* distance between taps */
  uint16_t pad_top, pad_left, out_h, out_w;
  uint8_t bias_shift, in_signed, out_mode, half_even;
} hw_layer_t;

/* A convolution ("SAME" zero padding as given by pad_top/pad_left) or a dense layer (a 1x1 convolution of a
 * 1x1 map). in: in_h x in_w x cin (HWC) bytes (int8 if in_signed, else uint8); out: out_h x out_w x cout, uint8
 * (HW_OUT_U8) or int32 (HW_OUT_I32: requantised; HW_OUT_RAW: acc + bias). wbuf: kernel^2 x cin bytes of
 * scratch for one output channel's unpacked weights. */
void hw_conv(const hw_layer_t *L, const void *in, void *out, int8_t *wbuf);

/* Global average pooling of a map (hw x c; int32, or uint8 if in_u8): per channel sum (int32; the exporter
 * saturates the map so that it fits), then requantised to uint8 by (m, k, lo, hi). */
void hw_pool(const void *in, int in_u8, uint32_t hw, uint32_t c, int32_t m, uint32_t k, int32_t lo, int32_t hi,
             int half_even, uint8_t *out);

int32_t hw_requant(int32_t acc, int32_t m, uint32_t k, int32_t lo, int32_t hi, int half_even);

/* Cycle counter: mcycle (low 32 bits) on RISC-V, 0 elsewhere. Read through .insn so that -march=rv32imc
 * (without the zicsr extension name GCC 12 asks for) assembles it. */
static inline uint32_t hw_cycle(void) {
#if defined(__riscv)
  uint32_t c;
  __asm__ volatile(".insn i 0x73, 2, %0, x0, -1280" : "=r"(c)); /* csrrs c, mcycle (0xB00), x0 */
  return c;
#else
  return 0;
#endif
}

#endif
