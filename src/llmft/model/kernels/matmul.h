// Matrix products through OpenBLAS sgemm. GPT-2's Conv1D weights are (IC, OC) ("kInOut");
// the output head (lm_head / wte) is a Linear weight (OC, IC) ("kOutIn").
#pragma once

#include <cstdint>
#include <span>

namespace llmft::kernels {

enum class WeightLayout { kInOut, kOutIn };

// out: (N, OC) = inp (N, IC) @ W + bias;  W: (IC, OC) for kInOut, (OC, IC) for kOutIn;
// bias: (OC) or empty.
void matmul_forward(std::span<float> out, std::span<const float> inp, std::span<const float> w,
                    std::span<const float> bias, int64_t N, int64_t IC, int64_t OC,
                    WeightLayout layout = WeightLayout::kInOut);
// Accumulates dinp (N, IC), dw (shape of W), dbias (OC). Any of them may be empty (skipped).
void matmul_backward(std::span<float> dinp, std::span<float> dw, std::span<float> dbias,
                     std::span<const float> dout, std::span<const float> inp,
                     std::span<const float> w, int64_t N, int64_t IC, int64_t OC,
                     WeightLayout layout = WeightLayout::kInOut);

// Threads used by OpenBLAS (our OpenMP regions use omp_set_num_threads).
void set_blas_threads(int n);

}  // namespace llmft::kernels
