// Every matrix product of the model: fp32 through OpenBLAS sgemm (a few rows: register tiles that
// stream the weights), bf16 through gemm_bf16 (bf16.h) and, for generation, packed_bf16.h.
// GPT-2's Conv1D weights are (IC, OC) ("kInOut"); the output head is a Linear weight (OC, IC)
// ("kOutIn").
#pragma once

#include <cstdint>
#include <span>

#include "llmft/model/kernels/bf16.h"

namespace llmft::kernels {

enum class WeightLayout { kInOut, kOutIn };

// out: (N, OC) = inp (N, IC) @ W + bias;  W: (IC, OC) for kInOut, (OC, IC) for kOutIn;
// bias: (OC) or empty. Up to 16 rows without a bias run register tiles (a decode step).
void matmul_forward(std::span<float> out, std::span<const float> inp, std::span<const float> w,
                    std::span<const float> bias, int64_t N, int64_t IC, int64_t OC,
                    WeightLayout layout = WeightLayout::kInOut);
// Accumulates dinp (N, IC), dw (shape of W), dbias (OC). Any of them may be empty (skipped).
void matmul_backward(std::span<float> dinp, std::span<float> dw, std::span<float> dbias,
                     std::span<const float> dout, std::span<const float> inp,
                     std::span<const float> w, int64_t N, int64_t IC, int64_t OC,
                     WeightLayout layout = WeightLayout::kInOut);

// bf16 products with fp32 accumulation (gemm_bf16), same shapes and layouts as above; out, dinp,
// dw and dbias stay fp32. Forward: out = inp @ W + bias.
void matmul_forward(std::span<float> out, std::span<const bf16> inp, std::span<const bf16> w,
                    std::span<const float> bias, int64_t N, int64_t IC, int64_t OC,
                    WeightLayout layout = WeightLayout::kInOut);
// Accumulates dinp (N, IC) += dout @ W^T and dw += inp^T @ dout from the bf16 dout (N, OC);
// dbias (OC) += column sums of dout_f32 (N, OC), the fp32 gradient dout was rounded from (the
// bias gradient is a plain sum, so it keeps full precision). Any output may be empty (skipped);
// dout_f32 is needed only with dbias.
void matmul_backward(std::span<float> dinp, std::span<float> dw, std::span<float> dbias,
                     std::span<const float> dout_f32, std::span<const bf16> dout,
                     std::span<const bf16> inp, std::span<const bf16> w, int64_t N, int64_t IC,
                     int64_t OC, WeightLayout layout = WeightLayout::kInOut);

// C (M, N) = op(A) @ op(B) + beta * C, row-major, op = transpose where asked: every fp32 product
// goes through here (OpenBLAS; oneDNN's dnnl_sgemm measured no better, docs/performance.md).
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// OpenBLAS is loaded at the first fp32 product (or ScopedThreads, blas_kernels), not with the
// program: commands without one (tokenize, --help) start without it. It picks its kernels from
// the CPU's model name when it is loaded, and on a CPU it does not recognise (cloud VMs report a
// generic "Intel Xeon Processor") it falls back to SSE3 ("Prescott") kernels, 4-5x slower than the
// AVX-512 ones the CPU runs. So before loading it, unless OPENBLAS_CORETYPE already names a core
// with AVX2 or better, llmft sets it from cpuid: SkylakeX with AVX-512, Haswell with AVX2 + FMA
// (the fp32 kernels OpenBLAS runs on every CPU of those families); without AVX2 OpenBLAS's own
// choice stands. A failed load is an Error naming the library.
// The kernels OpenBLAS runs ("SkylakeX", "Haswell", "Prescott", ...).
const char* blas_kernels();

// The OpenMP and OpenBLAS thread counts for a scope, restored at its end: library calls take a
// thread count and leave the process's settings as they found them. n = 0 keeps them.
class ScopedThreads {
 public:
  explicit ScopedThreads(int n);
  ~ScopedThreads();
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int omp_, blas_;
};

}  // namespace llmft::kernels
