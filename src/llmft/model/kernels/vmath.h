// Branch-free float exp that GCC vectorises inside `#pragma omp simd` loops (glibc's expf only
// vectorises under -ffast-math, which we do not use). Max error ~1 ulp over [-87, 88]; inputs
// are clamped there, so exp_approx(-inf) is ~1e-38 rather than 0 (callers rely only on it
// being negligible next to 1). Also a 16-float vector type for register-blocked tile loops, with
// loads (fp32, and bf16 widened), stores and a horizontal sum.
#pragma once

#include <immintrin.h>

#include <bit>
#include <cstdint>
#include <cstring>

#include "llmft/model/kernels/bf16.h"

namespace llmft::kernels {

inline float vexp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  // NaN fails both comparisons: it is computed as 0 (converting it to an integer below would be
  // undefined) and given back at the end.
  const float in = x;
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : (x == x ? x : 0.0f));
  // x = n ln2 + r, |r| <= ln2/2; exp(r) by its Taylor series to degree 7 (error < 5e-9).
  // Round to nearest by the 1.5 * 2^23 trick (__builtin_roundevenf blocks GCC 12's vectoriser).
  constexpr float kRound = 12582912.0f;
  const float n = (x * kLog2e + kRound) - kRound;
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n built in the exponent bits; n in [-126, 127] after the clamp.
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return in == in ? p * std::bit_cast<float>(bits) : in;
}

// x[i] = exp(x[i] - shift) in place over n values (a softmax's numerators); returns their sum.
inline float exp_shifted(float* x, int64_t n, float shift) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    const float e = vexp(x[i] - shift);
    x[i] = e;
    sum += e;
  }
  return sum;
}

// 16 floats in one vector register (one AVX-512 register under -march=native; GCC splits it
// into narrower registers elsewhere, so the code stays portable). `a * v` broadcasts a float.
typedef float f32x16 __attribute__((vector_size(64)));

// By reference, not by value: passing a 64-byte vector by value changes the ABI when AVX-512
// is off (GCC warns, -Wpsabi); inlined, both compile to one unaligned load or store.
inline void load16(f32x16& v, const float* p) { std::memcpy(&v, p, sizeof v); }
inline void store16(float* p, const f32x16& v) { std::memcpy(p, &v, sizeof v); }
// 16 bf16 values widened to floats (exact: a bf16 is the upper half of its float's bits).
inline void load16(f32x16& v, const uint16_t* p) {
#if defined(__AVX512F__)
  // One VPMOVZXWD from memory (GCC splits the generic conversion below into halves). The maskz
  // forms: GCC 12 warns about the plain ones' undefined pass-through operand.
  const __m512i w = _mm512_maskz_slli_epi32(
      0xffff,
      _mm512_maskz_cvtepu16_epi32(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))),
      16);
  v = reinterpret_cast<f32x16>(_mm512_castsi512_ps(w));
#else
  typedef uint16_t u16x16 __attribute__((vector_size(32)));
  typedef uint32_t u32x16 __attribute__((vector_size(64)));
  u16x16 h;
  std::memcpy(&h, p, sizeof h);
  const u32x16 w = __builtin_convertvector(h, u32x16) << 16;
  std::memcpy(&v, &w, sizeof v);
#endif
}
// The sum of a vector's 16 lanes, in a fixed order (pairwise halves).
inline float hsum(const f32x16& v) {
  typedef float f32x8 __attribute__((vector_size(32)));
  typedef float f32x4 __attribute__((vector_size(16)));
  const f32x8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                  __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const f32x4 b =
      __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

}  // namespace llmft::kernels
