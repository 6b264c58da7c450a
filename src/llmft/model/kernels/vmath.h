// Branch-free float exp that GCC vectorises inside `#pragma omp simd` loops (glibc's expf only
// vectorises under -ffast-math, which we do not use). Max error ~1 ulp over [-87, 88]; inputs
// are clamped there, so exp_approx(-inf) is ~1e-38 rather than 0 (callers rely only on it
// being negligible next to 1). Also a 16-float vector type for register-blocked tile loops.
#pragma once

#include <cstdint>
#include <bit>
#include <cstring>

namespace llmft::kernels {

inline float vexp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
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
  return p * std::bit_cast<float>(bits);
}

// x rounded to bf16 (the upper half of its bits), as bf16.h's float_to_bf16: ties to even, NaN
// kept and made quiet, denormals kept. Branch-free, so it vectorises inside `omp simd` loops:
// fused kernels write bf16 copies of their outputs in the same pass (Precision::kBf16).
inline uint16_t round_bf16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

// 16 floats in one vector register (one AVX-512 register under -march=native; GCC splits it
// into narrower registers elsewhere, so the code stays portable). `a * v` broadcasts a float.
typedef float f32x16 __attribute__((vector_size(64)));

// By reference, not by value: passing a 64-byte vector by value changes the ABI when AVX-512
// is off (GCC warns, -Wpsabi); inlined, both compile to one unaligned load or store.
inline void load16(f32x16& v, const float* p) { std::memcpy(&v, p, sizeof v); }
inline void store16(float* p, const f32x16& v) { std::memcpy(p, &v, sizeof v); }

}  // namespace llmft::kernels
