// sgemm-based matmul forward/backward; see matmul.h.
#include "llmft/model/kernels/matmul.h"

#include <cblas.h>

#include <algorithm>

#include "llmft/model/kernels/common.h"

namespace llmft::kernels {

namespace {

// dbias (OC) += sum over rows of dout (N, OC); threads split the columns (blocks of 256: 16 vector
// accumulators, see layernorm_backward).
void bias_backward(std::span<float> dbias, std::span<const float> dout, int64_t N, int64_t OC) {
  check_size(dbias, OC, "matmul dbias");
  check_size(dout, N * OC, "matmul dout");
  const int64_t kBlock = 256;
  const int64_t nblocks = (OC + kBlock - 1) / kBlock;
#pragma omp parallel for if (N * OC >= kParallelMin)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t o0 = blk * kBlock, o1 = std::min(OC, o0 + kBlock);
    float acc[kBlock] = {};
    for (int64_t i = 0; i < N; ++i) {
      const float* g = dout.data() + i * OC;
#pragma omp simd
      for (int64_t o = o0; o < o1; ++o) acc[o - o0] += g[o];
    }
    for (int64_t o = o0; o < o1; ++o) dbias[o] += acc[o - o0];
  }
}

// out (N, OC) = bias broadcast over rows; returns the beta for the product that follows.
float init_with_bias(std::span<float> out, std::span<const float> bias, int64_t N, int64_t OC) {
  if (bias.empty()) return 0.0f;
  check_size(bias, OC, "matmul bias");
#pragma omp parallel for if (N * OC >= kParallelMin)
  for (int64_t i = 0; i < N; ++i) std::copy_n(bias.data(), OC, out.data() + i * OC);
  return 1.0f;
}

}  // namespace

void set_blas_threads(int n) { openblas_set_num_threads(n); }

void matmul_forward(std::span<float> out, std::span<const float> inp, std::span<const float> w,
                    std::span<const float> bias, int64_t N, int64_t IC, int64_t OC,
                    WeightLayout layout) {
  check_size(out, N * OC, "matmul out");
  check_size(inp, N * IC, "matmul inp");
  check_size(w, IC * OC, "matmul w");
  if (!bias.empty()) check_size(bias, OC, "matmul bias");
  if (N == 0) return;
  const float beta = init_with_bias(out, bias, N, OC);
  if (layout == WeightLayout::kInOut) {
    // out (N, OC) += inp (N, IC) @ W (IC, OC)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, OC, IC, 1.0f, inp.data(), IC,
                w.data(), OC, beta, out.data(), OC);
  } else {
    // out (N, OC) += inp (N, IC) @ W^T, W (OC, IC)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp.data(), IC,
                w.data(), IC, beta, out.data(), OC);
  }
}

void matmul_backward(std::span<float> dinp, std::span<float> dw, std::span<float> dbias,
                     std::span<const float> dout, std::span<const float> inp,
                     std::span<const float> w, int64_t N, int64_t IC, int64_t OC,
                     WeightLayout layout) {
  check_size(dout, N * OC, "matmul dout");
  if (N == 0) return;
  const bool in_out = layout == WeightLayout::kInOut;
  if (!dinp.empty()) {
    check_size(dinp, N * IC, "matmul dinp");
    check_size(w, IC * OC, "matmul w");
    // dinp (N, IC) += dout (N, OC) @ W^T  (kInOut: W (IC, OC); kOutIn: W (OC, IC))
    cblas_sgemm(CblasRowMajor, CblasNoTrans, in_out ? CblasTrans : CblasNoTrans, N, IC, OC, 1.0f,
                dout.data(), OC, w.data(), in_out ? OC : IC, 1.0f, dinp.data(), IC);
  }
  if (!dw.empty()) {
    check_size(dw, IC * OC, "matmul dw");
    check_size(inp, N * IC, "matmul inp");
    if (in_out) {
      // dW (IC, OC) += inp^T (IC, N) @ dout (N, OC)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, IC, OC, N, 1.0f, inp.data(), IC,
                  dout.data(), OC, 1.0f, dw.data(), OC);
    } else {
      // dW (OC, IC) += dout^T (OC, N) @ inp (N, IC)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, dout.data(), OC,
                  inp.data(), IC, 1.0f, dw.data(), IC);
    }
  }
  if (!dbias.empty()) bias_backward(dbias, dout, N, OC);
}

// bf16 versions: the same products through gemm_bf16.
void matmul_forward(std::span<float> out, std::span<const bf16> inp, std::span<const bf16> w,
                    std::span<const float> bias, int64_t N, int64_t IC, int64_t OC,
                    WeightLayout layout) {
  check_size(out, N * OC, "matmul out");
  check_size(inp, N * IC, "matmul inp");
  check_size(w, IC * OC, "matmul w");
  if (!bias.empty()) check_size(bias, OC, "matmul bias");
  if (N == 0) return;
  const float beta = init_with_bias(out, bias, N, OC);
  const bool in_out = layout == WeightLayout::kInOut;
  // out (N, OC) (+)= inp (N, IC) @ W (IC, OC), or @ W^T for W (OC, IC)
  gemm_bf16(/*trans_a=*/false, /*trans_b=*/!in_out, N, OC, IC, inp.data(), IC, w.data(),
            in_out ? OC : IC, beta, out.data(), OC);
}

void matmul_backward(std::span<float> dinp, std::span<float> dw, std::span<float> dbias,
                     std::span<const float> dout_f32, std::span<const bf16> dout,
                     std::span<const bf16> inp, std::span<const bf16> w, int64_t N, int64_t IC,
                     int64_t OC, WeightLayout layout) {
  if (N == 0) return;
  const bool in_out = layout == WeightLayout::kInOut;
  if (!dinp.empty()) {
    check_size(dinp, N * IC, "matmul dinp");
    check_size(dout, N * OC, "matmul dout");
    check_size(w, IC * OC, "matmul w");
    // dinp (N, IC) += dout (N, OC) @ W^T  (kInOut: W (IC, OC); kOutIn: W (OC, IC))
    gemm_bf16(/*trans_a=*/false, /*trans_b=*/in_out, N, IC, OC, dout.data(), OC, w.data(),
              in_out ? OC : IC, 1.0f, dinp.data(), IC);
  }
  if (!dw.empty()) {
    check_size(dw, IC * OC, "matmul dw");
    check_size(dout, N * OC, "matmul dout");
    check_size(inp, N * IC, "matmul inp");
    if (in_out) {
      // dW (IC, OC) += inp^T (IC, N) @ dout (N, OC)
      gemm_bf16(/*trans_a=*/true, /*trans_b=*/false, IC, OC, N, inp.data(), IC, dout.data(), OC,
                1.0f, dw.data(), OC);
    } else {
      // dW (OC, IC) += dout^T (OC, N) @ inp (N, IC)
      gemm_bf16(/*trans_a=*/true, /*trans_b=*/false, OC, IC, N, dout.data(), OC, inp.data(), IC,
                1.0f, dw.data(), IC);
    }
  }
  if (!dbias.empty()) bias_backward(dbias, dout_f32, N, OC);
}

}  // namespace llmft::kernels
