// bf16 matrix products with fp32 accumulation (Precision::kBf16), and fp32 <-> bf16 conversion.
// bf16 values are stored as uint16_t: the upper half of the fp32 bit pattern.
#pragma once

#include <bit>
#include <cstdint>
#include <span>

namespace llmft::kernels {

using bf16 = uint16_t;

// out[i] = in[i] rounded to the nearest bf16 (ties to even; NaN stays NaN, made quiet; denormals
// are kept, as torch's .to(torch.bfloat16)). Multithreaded.
void to_bf16(std::span<bf16> out, std::span<const float> in);
// out[i] = in[i] exactly.
void from_bf16(std::span<float> out, std::span<const bf16> in);
// One value each way (the definitions every kernel uses). Rounding: ties to even; a NaN keeps
// its sign and top payload bits and gets the quiet bit, so truncation cannot make it inf; a
// carry into the exponent rounds up correctly, including max finite -> inf. Branch-free, so it
// vectorises inside `omp simd` loops.
inline bf16 float_to_bf16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  return static_cast<bf16>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}
inline float bf16_to_float(bf16 x) { return std::bit_cast<float>(static_cast<uint32_t>(x) << 16); }

// Row-major, like cblas_sgemm with alpha = 1:
//   C (M, N) = beta * C + op(A) @ op(B),  op(A): (M, K), op(B): (K, N)
// A is (M, K) with row stride lda, or (K, M) when trans_a; B is (K, N) with row stride ldb, or
// (N, K) when trans_b. Products are exact in fp32 and accumulate in fp32. beta is 0 or 1.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const bf16* A,
               int64_t lda, const bf16* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The one run-time choice of a CPU code path for bf16: true when the bf16 products (gemm_bf16 and
// packed_bf16.h's) run on native instructions (AVX512-BF16); false when they widen the operands
// to fp32 (same products, slower). Decided once from the CPU; the environment variable
// LLMFT_BF16_NATIVE=0 forces the portable path.
bool bf16_native();
// Forces the portable path (false) or restores the CPU's choice (true); for tests and benchmarks.
// Not thread-safe against concurrent bf16 products.
void set_bf16_native(bool enabled);

}  // namespace llmft::kernels
