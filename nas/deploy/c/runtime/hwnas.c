/* hwnas C runtime kernels (see hwnas.h). */
#include "hwnas.h"

/* HW_PULP_SIMD (make riscv PULP=1): the inner product over input channels, 4 at a time, with CV32E40P's PULP
 * SIMD dot products (COREV_PULP=1 cores only): cv.sdotusp.b (unsigned activations x signed weights) and
 * cv.sdotsp.b (signed x signed), rd += sum of the 4 byte products, emitted with .insn (custom-3 opcode 0x7b,
 * funct3 001: vector of bytes, funct7 1010000 / 1010100), so that -march=rv32imc assembles them. Used where
 * cin is a multiple of 4 and the input map is word aligned; the result is the same integer sum. */
#if defined(HW_PULP_SIMD) && defined(__riscv)
#define HW_SIMD 1
static inline int32_t sdotusp(int32_t acc, uint32_t x, uint32_t w) {
  __asm__(".insn r 0x7b, 1, 0x50, %0, %1, %2" : "+r"(acc) : "r"(x), "r"(w));
  return acc;
}
static inline int32_t sdotsp(int32_t acc, uint32_t x, uint32_t w) {
  __asm__(".insn r 0x7b, 1, 0x54, %0, %1, %2" : "+r"(acc) : "r"(x), "r"(w));
  return acc;
}
#else
#define HW_SIMD 0
#endif

int32_t hw_requant(int32_t acc, int32_t m, uint32_t k, int32_t lo, int32_t hi, int half_even) {
  int64_t t = (int64_t)acc * (int64_t)m;
  int64_t q = t;
  if (k > 0) {
    int64_t half = (int64_t)1 << (k - 1);
    q = (t + half) >> k; /* arithmetic shift: round half up */
    if (half_even && (q & 1) && (int64_t)((uint64_t)q << k) - t == half) q -= 1;
  }
  if (q < lo) return lo;
  if (q > hi) return hi;
  return (int32_t)q;
}

/* n signed values of b bits from the LSB-first bitstream p, starting at bit pos. */
static void unpack(const uint8_t *p, uint32_t pos, uint32_t b, uint32_t n, int8_t *dst) {
  uint32_t i;
  if (b == 8 && (pos & 7) == 0) {
    p += pos >> 3;
    for (i = 0; i < n; i++) dst[i] = (int8_t)p[i];
    return;
  }
  {
    const uint32_t mask = (1u << b) - 1u, up = 32u - b;
    for (i = 0; i < n; i++, pos += b) {
      uint32_t byte = pos >> 3;
      uint32_t v = (((uint32_t)p[byte] | ((uint32_t)p[byte + 1] << 8)) >> (pos & 7)) & mask;
      dst[i] = (int8_t)((int32_t)(v << up) >> up); /* sign extension */
    }
  }
}

/* acc + sum(x[i] w[i]) over n values (vec: n a multiple of 4, x and w word aligned: SIMD when built in). */
#define HW_DOT(NAME, T, DOT4)                                                                                \
  static inline int32_t NAME(int32_t acc, const T *x, const int8_t *w, uint32_t n, int vec) {             \
    uint32_t i;                                                                                           \
    if (HW_SIMD && vec) {                                                                                 \
      const uint32_t *xv = (const uint32_t *)(const void *)x, *wv = (const uint32_t *)(const void *)w;    \
      for (i = 0; i < (n >> 2); i++) acc = DOT4(acc, xv[i], wv[i]);                                       \
      return acc;                                                                                         \
    }                                                                                                     \
    for (i = 0; i < n; i++) acc += (int32_t)x[i] * (int32_t)w[i];                                         \
    return acc;                                                                                           \
  }
#if !HW_SIMD
#define sdotsp(a, x, w) (a)
#define sdotusp(a, x, w) (a)
#endif
HW_DOT(dot_u8, uint8_t, sdotusp)
HW_DOT(dot_s8, int8_t, sdotsp)

/* The convolution for one input element type T. A window row whose taps are adjacent (dilation 1) and all
 * inside the map is one contiguous run of kernel x cin values in both the input and the unpacked weights. */
#define HW_CONV_BODY(T, DOT)                                                                              \
  do {                                                                                                    \
    const T *x = (const T *)in;                                                                           \
    const int32_t H = (int32_t)L->in_h, W = (int32_t)L->in_w;                                             \
    for (co = 0; co < L->cout; co++) {                                                                    \
      uint32_t b = L->w_bits[co];                                                                         \
      int32_t bias = L->bias[co], m = L->mult ? L->mult[co] : 0;                                          \
      uint32_t k = L->shift ? L->shift[co] : 0;                                                           \
      unpack(L->w, pos, b, fan_in, wbuf);                                                                 \
      pos += b * fan_in;                                                                                  \
      for (oh = 0; oh < L->out_h; oh++) {                                                                 \
        int32_t ih0 = (int32_t)oh * L->step - L->pad_top;                                                 \
        for (ow = 0; ow < L->out_w; ow++) {                                                               \
          int32_t iw0 = (int32_t)ow * L->step - L->pad_left;                                              \
          int32_t acc = 0;                                                                                \
          uint32_t kh, kw, o;                                                                             \
          int row = D == 1 && iw0 >= 0 && iw0 + (int32_t)K <= W;                                          \
          for (kh = 0; kh < K; kh++) {                                                                    \
            int32_t ih = ih0 + (int32_t)(kh * D);                                                         \
            if (ih < 0 || ih >= H) continue;                                                              \
            if (row) {                                                                                    \
              acc = DOT(acc, x + ((uint32_t)ih * L->in_w + (uint32_t)iw0) * cin, wbuf + kh * K * cin,     \
                        K * cin, vec);                                                                    \
              continue;                                                                                   \
            }                                                                                             \
            for (kw = 0; kw < K; kw++) {                                                                  \
              int32_t iw = iw0 + (int32_t)(kw * D);                                                       \
              if (iw < 0 || iw >= W) continue;                                                            \
              acc = DOT(acc, x + ((uint32_t)ih * L->in_w + (uint32_t)iw) * cin, wbuf + (kh * K + kw) * cin, \
                        cin, vec);                                                                        \
            }                                                                                             \
          }                                                                                               \
          acc = (int32_t)((uint32_t)acc << L->bias_shift) + bias;                                         \
          o = ((uint32_t)oh * L->out_w + ow) * L->cout + co;                                              \
          if (L->out_mode == HW_OUT_U8)                                                                   \
            ((uint8_t *)out)[o] = (uint8_t)hw_requant(acc, m, k, L->lo, L->hi, L->half_even);             \
          else if (L->out_mode == HW_OUT_I32)                                                             \
            ((int32_t *)out)[o] = hw_requant(acc, m, k, L->lo, L->hi, L->half_even);                      \
          else                                                                                            \
            ((int32_t *)out)[o] = acc;                                                                    \
        }                                                                                                 \
      }                                                                                                   \
    }                                                                                                     \
  } while (0)

void hw_conv(const hw_layer_t *L, const void *in, void *out, int8_t *wbuf) {
  const uint32_t K = L->kernel, D = L->dilation, cin = L->cin;
  const uint32_t fan_in = K * K * cin;
  const int vec = HW_SIMD && (cin & 3) == 0 && (((uintptr_t)in | (uintptr_t)wbuf) & 3) == 0;
  uint32_t pos = 0, co, oh, ow;
  if (L->in_signed)
    HW_CONV_BODY(int8_t, dot_s8);
  else
    HW_CONV_BODY(uint8_t, dot_u8);
}

void hw_pool(const void *in, int in_u8, uint32_t hw, uint32_t c, int32_t m, uint32_t k, int32_t lo, int32_t hi,
             int half_even, uint8_t *out) {
  uint32_t ch, i;
  for (ch = 0; ch < c; ch++) {
    int32_t s = 0;
    if (in_u8)
      for (i = 0; i < hw; i++) s += ((const uint8_t *)in)[i * c + ch];
    else
      for (i = 0; i < hw; i++) s += ((const int32_t *)in)[i * c + ch];
    out[ch] = (uint8_t)hw_requant(s, m, k, lo, hi, half_even);
  }
}
