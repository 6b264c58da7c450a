// bf16 matrix products with fp32 accumulation (Precision::kBf16), and fp32 <-> bf16 conversion.
// bf16 values are stored as uint16_t: the upper half of the fp32 bit pattern.
#pragma once

#include <cstdint>
#include <span>

namespace llmft::kernels {

using bf16 = uint16_t;

// out[i] = in[i] rounded to the nearest bf16 (ties to even; NaN stays NaN, made quiet; denormals
// are kept, as torch's .to(torch.bfloat16)). Multithreaded.
void to_bf16(std::span<bf16> out, std::span<const float> in);
// out[i] = in[i] exactly.
void from_bf16(std::span<float> out, std::span<const bf16> in);
float bf16_to_float(bf16 x);
bf16 float_to_bf16(float x);

// Row-major, like cblas_sgemm with alpha = 1:
//   C (M, N) = beta * C + op(A) @ op(B),  op(A): (M, K), op(B): (K, N)
// A is (M, K) with row stride lda, or (K, M) when trans_a; B is (K, N) with row stride ldb, or
// (N, K) when trans_b. Products are exact in fp32 and accumulate in fp32. beta is 0 or 1.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const bf16* A,
               int64_t lda, const bf16* B, int64_t ldb, float beta, float* C, int64_t ldc);

// True when gemm_bf16 runs on native bf16 instructions (AVX512-BF16); false when it widens the
// operands to fp32 block by block and calls sgemm (same products, slower). Decided once from the
// CPU; the environment variable LLMFT_BF16_NATIVE=0 forces the portable path.
bool bf16_native();
// Forces the portable path (false) or restores the CPU's choice (true); for tests and benchmarks.
// Not thread-safe against concurrent gemm_bf16 calls.
void set_bf16_native(bool enabled);

}  // namespace llmft::kernels
